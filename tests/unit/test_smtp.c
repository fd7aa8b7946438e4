/*
 * test_smtp.c — unit tests of the SMTP protocol pieces: command parsing
 * (verbs, paths with and without brackets, bounds, parameters), reply
 * lines, dot unstuffing, and PROXY v1/v2 headers, complete and partial.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

#include "smtp/smtp.h"

static int parse(const char *line, struct smtp_command *c)
{
	struct base_err err;
	return smtp_parse_command(line, strlen(line), c, &err);
}

static void test_commands(void **state)
{
	(void)state;
	struct smtp_command c;
	assert_int_equal(parse("EHLO client.example", &c), 0);
	assert_int_equal(c.verb, SMTP_EHLO);
	assert_int_equal(c.arg_len, strlen("client.example"));
	assert_int_equal(parse("helo   x  ", &c), 0);
	assert_int_equal(c.verb, SMTP_HELO);
	assert_int_equal(c.arg_len, 1);
	assert_int_equal(parse("EHLO", &c), -1);
	assert_int_equal(parse("MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME", &c), 0);
	assert_int_equal(c.verb, SMTP_MAIL);
	assert_string_equal(c.path, "a@b.example");
	uint64_t size;
	assert_int_equal(smtp_param_size(c.params, c.params_len, &size), 1);
	assert_int_equal(size, 1000);
	assert_int_equal(parse("mail from:<>", &c), 0);
	assert_string_equal(c.path, "");
	assert_int_equal(parse("MAIL FROM: sloppy@x.example", &c), 0);
	assert_string_equal(c.path, "sloppy@x.example");
	assert_int_equal(parse("MAIL FROM:<a@b", &c), -1);
	assert_int_equal(parse("MAIL FROM:<a b@c>", &c), -1);
	assert_int_equal(parse("MAIL TO:<a@b>", &c), -1);
	assert_int_equal(parse("MAIL FROM:<a@b>junk", &c), -1);
	assert_int_equal(parse("RCPT TO:<>", &c), -1);
	assert_int_equal(parse("RCPT TO:<Trap@Trap.Example>", &c), 0);
	assert_string_equal(smtp_path_domain(c.path), "Trap.Example");
	char big[400] = "RCPT TO:<";
	memset(big + 9, 'a', 300);
	strcpy(big + 309, "@x>");
	assert_int_equal(parse(big, &c), -1);
	assert_int_equal(parse("DATA", &c), 0);
	assert_int_equal(c.verb, SMTP_DATA);
	assert_int_equal(parse("DATA now", &c), -1);
	assert_int_equal(parse("QUIT", &c), 0);
	assert_int_equal(parse("XYZZY plugh", &c), 0);
	assert_int_equal(c.verb, SMTP_UNKNOWN);
	assert_int_equal(parse("DATAX", &c), 0);
	assert_int_equal(c.verb, SMTP_UNKNOWN);
	assert_int_equal(smtp_param_size("SIZE=", 5, &size), -1);
	assert_int_equal(smtp_param_size("SIZE=12x", 8, &size), -1);
	assert_int_equal(smtp_param_size("BODY=7BIT", 9, &size), 0);
}

static void test_replies_and_data(void **state)
{
	(void)state;
	int code, more;
	const char *text;
	assert_int_equal(smtp_parse_reply_line("250-PIPELINING", 14, &code, &more, &text), 0);
	assert_int_equal(code, 250);
	assert_true(more);
	assert_string_equal(text, "PIPELINING");
	assert_int_equal(smtp_parse_reply_line("221", 3, &code, &more, &text), 0);
	assert_false(more);
	assert_int_equal(smtp_parse_reply_line("2x0 ok", 6, &code, &more, &text), -1);
	assert_int_equal(smtp_parse_reply_line("150 ok", 6, &code, &more, &text), -1);
	assert_int_equal(smtp_parse_reply_line("250_ok", 6, &code, &more, &text), -1);
	const char *s;
	size_t n;
	assert_int_equal(smtp_data_line(".", 1, &s, &n), 1);
	assert_int_equal(smtp_data_line("..x", 3, &s, &n), 0);
	assert_int_equal(n, 2);
	assert_memory_equal(s, ".x", 2);
	assert_int_equal(smtp_data_line("a.", 2, &s, &n), 0);
	assert_int_equal(n, 2);
}

static void test_proxy(void **state)
{
	(void)state;
	struct smtp_proxy p;
	struct base_err err;
	const char *v1 = "PROXY TCP4 198.51.100.7 192.0.2.1 40000 25\r\nEHLO x\r\n";
	assert_int_equal(smtp_proxy_parse((const uint8_t *)v1, strlen(v1), &p, &err),
	                 (int)strlen("PROXY TCP4 198.51.100.7 192.0.2.1 40000 25\r\n"));
	assert_int_equal(p.family, AF_INET);
	assert_int_equal(p.src[0], 198);
	assert_int_equal(p.src_port, 40000);
	/* partial headers ask for more */
	for (size_t k = 0; k < 20; k++)
		assert_int_equal(smtp_proxy_parse((const uint8_t *)v1, k, &p, &err), 0);
	const char *v6 = "PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
	assert_true(smtp_proxy_parse((const uint8_t *)v6, strlen(v6), &p, &err) > 0);
	assert_int_equal(p.family, AF_INET6);
	const char *unk = "PROXY UNKNOWN\r\n";
	assert_true(smtp_proxy_parse((const uint8_t *)unk, strlen(unk), &p, &err) > 0);
	assert_int_equal(p.family, 0);
	const char *bad[] = {
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
	    "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "EHLO x\r\n", "PROXY TCP4 1.2.3.4\r\n"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(
		    smtp_proxy_parse((const uint8_t *)bad[i], strlen(bad[i]), &p, &err), -1);
	char longv1[200] = "PROXY ";
	memset(longv1 + 6, 'x', 150);
	assert_int_equal(smtp_proxy_parse((const uint8_t *)longv1, 156, &p, &err), -1);
	/* v2 */
	uint8_t v2[28] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49,
	                  0x54, 0x0a, 0x21, 0x11, 0,    12,   203,  0,    113,  9,
	                  192,  0,    2,    1,    0x1f, 0x90, 0,    25};
	assert_int_equal(smtp_proxy_parse(v2, sizeof v2, &p, &err), 28);
	assert_int_equal(p.family, AF_INET);
	assert_int_equal(p.src[0], 203);
	assert_int_equal(p.src_port, 8080);
	assert_int_equal(smtp_proxy_parse(v2, 20, &p, &err), 0);
	v2[12] = 0x20; /* LOCAL */
	assert_int_equal(smtp_proxy_parse(v2, sizeof v2, &p, &err), 28);
	assert_int_equal(p.family, 0);
	v2[12] = 0x31; /* version 3 */
	assert_int_equal(smtp_proxy_parse(v2, sizeof v2, &p, &err), -1);
	v2[12] = 0x21;
	v2[15] = 4; /* too short for IPv4 */
	assert_int_equal(smtp_proxy_parse(v2, 20, &p, &err), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_commands),
	    cmocka_unit_test(test_replies_and_data),
	    cmocka_unit_test(test_proxy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
