/*
 * test_check.c — the checker's pure parts: the generic-PTR heuristic, the
 * DNSBL list-file parser (fields, bounds, errors naming file:line) and the
 * classification of DNSBL answers (listed, not listed, list errors such as
 * 127.255.255.x, DNS failures).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "check/check.h"

static int generic4(const char *name, const char *ip)
{
	uint8_t a[4];
	assert_int_equal(inet_pton(AF_INET, ip, a), 1);
	char why[128];
	return check_ptr_generic(name, AF_INET, a, why, sizeof why);
}

static void test_ptr_generic(void **state)
{
	(void)state;
	/* specific names */
	assert_false(generic4("mail.example.com", "192.0.2.10"));
	assert_false(generic4("mx1.example.com", "192.0.2.10"));
	assert_false(generic4("smtp-out2.mailer.example.net", "203.0.113.2"));
	assert_false(generic4("mailhost.example.com", "198.51.100.7"));
	assert_false(generic4("mail.host.example.com", "198.51.100.7"));
	assert_false(generic4("ip.example.com", "198.51.100.7"));
	/* the operator's domain does not count, even with digits or words in it */
	assert_false(generic4("mail.dynamic.com", "192.0.2.10"));
	assert_false(generic4("mail.192-0.com", "192.0.2.10"));
	/* digits of the address */
	assert_true(generic4("192-0-2-10.isp.example.com", "192.0.2.10"));
	assert_true(generic4("10.2.0.192.rev.isp.example", "192.0.2.10"));
	assert_true(generic4("host-203-0-113-7.example.net", "203.0.113.7"));
	assert_true(generic4("c0000210.isp.example", "192.0.2.16"));
	assert_false(generic4("c0000210.isp.example", "192.0.2.10"));
	assert_true(generic4("c000020a.isp.example", "192.0.2.10"));
	assert_true(generic4("x192000002010.isp.example", "192.0.2.10"));
	assert_true(generic4("a51-100-7.isp.example", "198.51.100.7"));
	/* words */
	assert_true(generic4("dynamic-44.isp.example", "192.0.2.10"));
	assert_true(generic4("adsl44.isp.example", "192.0.2.10"));
	assert_true(generic4("pool-a.isp.example", "192.0.2.10"));
	assert_true(generic4("cust44.cable.isp.example", "192.0.2.10"));
	assert_true(generic4("ppp12.isp.example", "192.0.2.10"));
	assert_true(generic4("STATIC.isp.example", "192.0.2.10"));
	assert_true(generic4("x-dhcp.isp.example", "192.0.2.10"));
	/* IPv6 */
	uint8_t a6[16];
	inet_pton(AF_INET6, "2001:db8::c000:20a", a6);
	assert_true(check_ptr_generic("2001-db8--c000-20a.isp.example", AF_INET6, a6, NULL, 0));
	assert_false(check_ptr_generic("mail.example.com", AF_INET6, a6, NULL, 0));
	/* hostile: very long names */
	char big[2000];
	memset(big, '1', sizeof big - 1);
	big[sizeof big - 1] = 0;
	assert_false(generic4(big, "192.0.2.10"));
}

static int parse(const char *text, struct check_dnsbl_set *set, struct base_err *err)
{
	return check_dnsbl_parse(text, strlen(text), "lists.txt", set, err);
}

static void test_list_parse(void **state)
{
	(void)state;
	struct check_dnsbl_set set;
	struct base_err err;
	assert_int_equal(
	    parse("# comment\n\n"
	          "zen.example | ip4 | Zen | 127.0.0.2=SBL, 127.0.0.4 = XBL | https://z/\n"
	          "  six.example|both|Six List|-|https://s/ # trailing comment\n",
	          &set, &err),
	    0);
	assert_int_equal(set.n, 2);
	assert_string_equal(set.lists[0].zone, "zen.example");
	assert_int_equal(set.lists[0].kind, CHECK_DNSBL_IP4);
	assert_int_equal(set.lists[0].ncodes, 2);
	assert_int_equal(set.lists[0].codes[1].addr[3], 4);
	assert_string_equal(set.lists[0].codes[1].meaning, "XBL");
	assert_string_equal(set.lists[1].name, "Six List");
	assert_int_equal(set.lists[1].kind, CHECK_DNSBL_BOTH);
	assert_int_equal(set.lists[1].ncodes, 0);
	assert_string_equal(set.lists[1].url, "https://s/");
	check_dnsbl_set_free(&set);

	static const struct {
		const char *text, *want;
	} bad[] = {
	    {"a.example | ip4 | A | - \n", "lists.txt:1: want 5 fields"},
	    {"a.example | ip4 | A | - | u | extra\n", "lists.txt:1: want 5 fields"},
	    {"a.example | ip4 | A | - | u\nb.example | ip5 | B | - | u\n", "lists.txt:2: kind"},
	    {"a..example | ip4 | A | - | u\n", "lists.txt:1: bad zone"},
	    {" | ip4 | A | - | u\n", "lists.txt:1: bad zone"},
	    {"a.example | ip4 |  | - | u\n", "lists.txt:1: empty name"},
	    {"a.example | ip4 | A | 10.0.0.2=x | u\n", "not in 127.0.0.0/8"},
	    {"a.example | ip4 | A | 127.0.0.2 | u\n", "127.0.0.x=meaning"},
	    {"a.example | ip4 | A | - | u\nA.EXAMPLE | ip4 | A | - | u\n", "lists.txt:2: zone"},
	    {"a.example | ip4 | A\x01 | - | u\n", "control"},
	    {"# nothing\n", "no lists"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int rc = parse(bad[i].text, &set, &err);
		if (rc == 0 || !strstr(err.msg, bad[i].want))
			fail_msg("case %zu: rc %d, '%s' (want '%s')", i, rc, rc ? err.msg : "",
			         bad[i].want);
		assert_null(set.lists);
	}
	/* bounds: a long line, too many lists, too many codes */
	char *big = malloc(10000);
	memset(big, 'a', 9999);
	big[9999] = 0;
	assert_int_equal(parse(big, &set, &err), -1);
	assert_non_null(strstr(err.msg, "lists.txt:1: line longer"));
	free(big);
	struct base_buf b;
	base_buf_init(&b);
	for (int i = 0; i <= CHECK_DNSBL_MAX_LISTS; i++)
		base_buf_printf(&b, "l%d.example | ip4 | L | - | u\n", i);
	assert_int_equal(check_dnsbl_parse(b.data, b.len, "lists.txt", &set, &err), -1);
	assert_non_null(strstr(err.msg, "more than"));
	base_buf_free(&b);
	base_buf_init(&b);
	base_buf_puts(&b, "c.example | ip4 | C | ");
	for (int i = 0; i <= CHECK_DNSBL_MAX_CODES; i++)
		base_buf_printf(&b, "%s127.0.0.%d=x", i ? "," : "", i + 2);
	base_buf_puts(&b, " | u\n");
	assert_int_equal(check_dnsbl_parse(b.data, b.len, "lists.txt", &set, &err), -1);
	assert_non_null(strstr(err.msg, "return codes"));
	base_buf_free(&b);
}

static void answer_a(struct dns_answer *a, const char *ip)
{
	uint8_t x[4];
	inet_pton(AF_INET, ip, x);
	dns_answer_add(a, DNS_T_A, 0, 300, x, 4);
	a->status = DNS_LOOKUP_OK;
}

static void test_classify(void **state)
{
	(void)state;
	struct dns_answer a;
	dns_answer_init(&a);
	a.status = DNS_LOOKUP_NXDOMAIN;
	assert_int_equal(check_dnsbl_classify(&a), CHECK_V_NOT_LISTED);
	a.status = DNS_LOOKUP_NODATA;
	assert_int_equal(check_dnsbl_classify(&a), CHECK_V_NOT_LISTED);
	a.status = DNS_LOOKUP_TIMEOUT;
	assert_int_equal(check_dnsbl_classify(&a), CHECK_V_DNS_FAILED);
	a.status = DNS_LOOKUP_SERVFAIL;
	assert_int_equal(check_dnsbl_classify(&a), CHECK_V_DNS_FAILED);
	answer_a(&a, "127.0.0.2");
	assert_int_equal(check_dnsbl_classify(&a), CHECK_V_LISTED);
	answer_a(&a, "127.0.0.11");
	assert_int_equal(check_dnsbl_classify(&a), CHECK_V_LISTED);
	answer_a(&a, "127.255.255.254"); /* Spamhaus: query via a public resolver */
	assert_int_equal(check_dnsbl_classify(&a), CHECK_V_LIST_ERROR);
	dns_answer_free(&a);
	dns_answer_init(&a);
	answer_a(&a, "127.255.255.252");
	assert_int_equal(check_dnsbl_classify(&a), CHECK_V_LIST_ERROR);
	dns_answer_free(&a);
	dns_answer_init(&a);
	answer_a(&a, "192.0.2.1"); /* a dead list's parked domain answering everything */
	assert_int_equal(check_dnsbl_classify(&a), CHECK_V_LIST_ERROR);
	dns_answer_free(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ptr_generic),
	    cmocka_unit_test(test_list_parse),
	    cmocka_unit_test(test_classify),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
