/*
 * test_relay_mtasts.c — unit tests of the MTA-STS parsers (RFC 8461):
 * the _mta-sts TXT record (valid, discarded, invalid), the policy file
 * (fields, modes, max_age bounds, repeated keys, errors naming their
 * line), mx patterns and their matching (a wildcard covers exactly one
 * label), the HTTP response (status, redirects, media type, length) and
 * the cache file, and the settings, global and per [domain NAME].
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "relay/mtasts.h"
#include "relay/relay.h"

static int txt(const char *s, char *id)
{
	struct base_err err;
	return mtasts_txt_parse(s, strlen(s), id, &err);
}

static void test_txt(void **state)
{
	(void)state;
	char id[MTASTS_ID_MAX + 1];
	assert_int_equal(txt("v=STSv1; id=20160831085700Z;", id), 1);
	assert_string_equal(id, "20160831085700Z");
	assert_int_equal(txt("v=STSv1;id=abc", id), 1);
	assert_string_equal(id, "abc");
	assert_int_equal(txt("v=STSv1 ; ext=x.y ; id=1 ;", id), 1);
	assert_string_equal(id, "1");
	/* not candidates: discarded */
	assert_int_equal(txt("v=spf1 -all", id), 0);
	assert_int_equal(txt("v=STSv10; id=1", id), 0);
	assert_int_equal(txt("", id), 0);
	/* candidates, but invalid */
	assert_int_equal(txt("v=STSv1", id), -1);
	assert_int_equal(txt("v=STSv1; id=", id), -1);
	assert_int_equal(txt("v=STSv1; id=a-b", id), -1);
	assert_int_equal(txt("v=STSv1; id=123456789012345678901234567890123", id), -1);
	assert_int_equal(txt("v=STSv1; id=1 2", id), -1);
	assert_int_equal(txt("v=STSv1; =x; id=1", id), -1);
	struct base_err err;
	assert_int_equal(mtasts_txt_parse("v=STSv1; x=1", 12, id, &err), -1);
	assert_non_null(strstr(err.msg, "no id"));
	/* the exact errors, each naming its byte offset */
	static const struct {
		const char *text, *msg;
	} bad[] = {
	    {"v=STSv1 id=1", "expected ';' at offset 8"},
	    {"v=STSv1; =x; id=1", "bad field name at offset 9"},
	    {"v=STSv1; id 1", "expected '=' after 'id' at offset 12"},
	    {"v=STSv1; id = ;", "empty value for 'id' at offset 14"},
	    {"v=STSv1; abcdefghijabcdefghijabcdefghijabc=1; id=1",
	     "field name longer than 32 at offset 9"},
	    {"v=STSv1; id=1 2", "bad character in the value of 'id' at offset 13"},
	    {"v=STSv1; id=a-b", "id 'a-b': letters and digits only (offset 13)"},
	    {"v=STSv1; id=123456789012345678901234567890123",
	     "id longer than 32 characters at offset 12"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err.msg[0] = 0;
		int k = mtasts_txt_parse(bad[i].text, strlen(bad[i].text), id, &err);
		if (k != -1 || strcmp(err.msg, bad[i].msg))
			fail_msg("txt case %zu: %d '%s'", i, k, err.msg);
	}
	/* white space around '=', a repeated id (the first counts) */
	assert_int_equal(txt("v=STSv1; id = abc ; id=def", id), 1);
	assert_string_equal(id, "abc");
}

static const char good[] = "version: STSv1\r\n"
                           "mode: enforce\r\n"
                           "mx: mail.example.com\r\n"
                           "mx: *.Example.NET.\r\n"
                           "mx: backupmx.example.com\r\n"
                           "max_age: 604800\r\n";

static void test_policy_good(void **state)
{
	(void)state;
	struct mtasts_policy p;
	struct base_err err;
	assert_int_equal(mtasts_policy_parse(good, strlen(good), &p, &err), 0);
	assert_int_equal(p.mode, MTASTS_ENFORCE);
	assert_int_equal(p.max_age, 604800);
	assert_int_equal(p.nmx, 3);
	assert_string_equal(p.mx[1], "*.example.net");
	/* LF lines, a blank line, unknown keys and repeats (the first wins) */
	const char *t = "version: STSv1\nmode: testing\nmode: enforce\nfoo_bar: baz\n\n"
	                "max_age:86400\nmx: a.example\n";
	assert_int_equal(mtasts_policy_parse(t, strlen(t), &p, &err), 0);
	assert_int_equal(p.mode, MTASTS_TESTING);
	assert_int_equal(p.max_age, 86400);
	/* mode none needs no mx */
	t = "version: STSv1\nmode: none\nmax_age: 31557600\n";
	assert_int_equal(mtasts_policy_parse(t, strlen(t), &p, &err), 0);
	assert_int_equal(p.mode, MTASTS_NONE);
	assert_int_equal(p.nmx, 0);
}

static void bad(const char *t, const char *want)
{
	struct mtasts_policy p;
	struct base_err err;
	assert_int_equal(mtasts_policy_parse(t, strlen(t), &p, &err), -1);
	if (!strstr(err.msg, want)) fail_msg("'%s' not in '%s'", want, err.msg);
}

static void test_policy_bad(void **state)
{
	(void)state;
	bad("version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n",
	    "line 1: version must be STSv1");
	bad("version: STSv1\nmode: sometimes\nmx: a.b\nmax_age: 1\n", "line 2: mode must be");
	bad("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 31557601\n", "line 4: max_age");
	bad("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n", "line 4: max_age");
	bad("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 12345678901\n", "line 4: max_age");
	bad("version: STSv1\nmode: enforce\nmx: a..b\nmax_age: 1\n", "line 3: bad mx pattern");
	bad("version: STSv1\nmode: enforce\nmx: *\nmax_age: 1\n", "line 3: bad mx pattern");
	bad("version: STSv1\nmode: enforce\nmx: a.*.b\nmax_age: 1\n", "line 3: bad mx pattern");
	bad("version: STSv1\nmode enforce\n", "line 2: expected 'key: value'");
	bad("version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx field");
	bad("mode: enforce\nmx: a.b\nmax_age: 1\n", "no version");
	bad("version: STSv1\nmx: a.b\nmax_age: 1\n", "no mode");
	bad("version: STSv1\nmode: enforce\nmx: a.b\n", "no max_age");
	bad("version: STSv1\nmode: enforce\x01\n", "line 2: control character");
	bad("<html><body>Not here</body></html>\n", "line 1: expected 'key: value'");
	char many[8192] = "version: STSv1\nmode: enforce\nmax_age: 1\n";
	for (int i = 0; i <= MTASTS_MX_MAX; i++) strcat(many, "mx: a.example\n");
	bad(many, "more than 64 mx patterns");
}

static void test_mx_match(void **state)
{
	(void)state;
	struct mtasts_policy p;
	struct base_err err;
	assert_int_equal(mtasts_policy_parse(good, strlen(good), &p, &err), 0);
	assert_true(mtasts_mx_match(&p, "mail.example.com"));
	assert_true(mtasts_mx_match(&p, "MAIL.example.com."));
	assert_true(mtasts_mx_match(&p, "mx1.example.net"));
	assert_false(mtasts_mx_match(&p, "a.b.example.net")); /* one label only */
	assert_false(mtasts_mx_match(&p, "example.net"));
	assert_false(mtasts_mx_match(&p, "xexample.net"));
	assert_false(mtasts_mx_match(&p, "mail.example.com.evil"));
	assert_false(mtasts_mx_match(&p, "other.example.com"));
	assert_false(mtasts_mx_match(&p, ""));
}

static int http(const char *r, const char **body, size_t *blen, struct base_err *err)
{
	return mtasts_http_parse(r, strlen(r), body, blen, err);
}

static void test_http(void **state)
{
	(void)state;
	const char *body;
	size_t blen;
	struct base_err err;
	assert_int_equal(http("HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
	                      "Content-Length: 5\r\n\r\nhello and more",
	                      &body, &blen, &err),
	                 0);
	assert_int_equal(blen, 5);
	assert_memory_equal(body, "hello", 5);
	assert_int_equal(
	    http("HTTP/1.1 200 OK\nContent-Type: text/plain\n\nabc", &body, &blen, &err), 0);
	assert_int_equal(blen, 3);
	assert_int_equal(
	    http("HTTP/1.1 301 Moved\r\nLocation: https://x/\r\n\r\n", &body, &blen, &err), -1);
	assert_non_null(strstr(err.msg, "redirects are not followed"));
	assert_int_equal(
	    http("HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\n", &body, &blen, &err),
	    -1);
	assert_non_null(strstr(err.msg, "HTTP 404"));
	assert_int_equal(
	    http("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\nx", &body, &blen, &err), -1);
	assert_non_null(strstr(err.msg, "not text/plain"));
	assert_int_equal(http("HTTP/1.1 200 OK\r\n\r\nx", &body, &blen, &err), -1);
	assert_int_equal(http("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10"
	                      "\r\n\r\nshort",
	                      &body, &blen, &err),
	                 -1);
	assert_non_null(strstr(err.msg, "cut short"));
	assert_int_equal(http("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
	                      "70000\r\n\r\nx",
	                      &body, &blen, &err),
	                 -1);
	assert_int_equal(http("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: "
	                      "chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	                      &body, &blen, &err),
	                 -1);
	assert_int_equal(http("SMTP 220 hello\r\n\r\n", &body, &blen, &err), -1);
	assert_int_equal(http("HTTP/1.1 200 OK\r\nContent-Type: text/plain", &body, &blen, &err),
	                 -1);
}

static void test_cache_file(void **state)
{
	(void)state;
	struct base_buf b;
	base_buf_init(&b);
	mtasts_cache_format(&b, "id42", 1795406431, good, strlen(good));
	char id[MTASTS_ID_MAX + 1];
	int64_t fetched;
	struct mtasts_policy p;
	struct base_err err;
	assert_int_equal(mtasts_cache_parse(b.data, b.len, id, &fetched, &p, &err), 0);
	assert_string_equal(id, "id42");
	assert_int_equal(fetched, 1795406431);
	assert_int_equal(p.mode, MTASTS_ENFORCE);
	assert_int_equal(p.nmx, 3);
	base_buf_free(&b);
	const char *t = "id 1\nfetched 5\n\nversion: STSv1\nmode: maybe\n";
	assert_int_equal(mtasts_cache_parse(t, strlen(t), id, &fetched, &p, &err), -1);
	assert_non_null(strstr(err.msg, "line 5: mode must be"));
	t = "id 1\nfetched x\n\n";
	assert_int_equal(mtasts_cache_parse(t, strlen(t), id, &fetched, &p, &err), -1);
	assert_non_null(strstr(err.msg, "line 2"));
	assert_int_equal(mtasts_cache_parse("", 0, id, &fetched, &p, &err), -1);
}

static void test_domain_and_settings(void **state)
{
	(void)state;
	assert_true(mtasts_domain_ok("example.com"));
	assert_false(mtasts_domain_ok("Example.com"));
	assert_false(mtasts_domain_ok("../etc"));
	assert_false(mtasts_domain_ok(".."));
	assert_false(mtasts_domain_ok("a/b"));
	assert_false(mtasts_domain_ok(""));
	struct relay_config c;
	memset(&c, 0, sizeof c);
	struct base_err err;
	assert_int_equal(relay_mtasts_set(&c, "mta-sts", "off", &err), 0);
	assert_int_equal(c.mta_sts_off, 1);
	assert_int_equal(relay_mtasts_set(&c, "mta-sts", "on", &err), 0);
	assert_int_equal(c.mta_sts_off, 0);
	assert_int_equal(relay_mtasts_set(&c, "mta-sts", "maybe", &err), -1);
	assert_int_equal(relay_mtasts_set(&c, "mta-sts-port", "8443", &err), 0);
	assert_int_equal(c.mta_sts_port, 8443);
	assert_int_equal(relay_mtasts_set(&c, "mta-sts-port", "70000", &err), -1);
	assert_int_equal(relay_mtasts_set(&c, "mta-sts-timeout", "10s", &err), 0);
	assert_int_equal(c.mta_sts_timeout, 10);
	assert_int_equal(relay_mtasts_set(&c, "mta-sts-timeout", "0", &err), -1);
	assert_int_equal(relay_mtasts_set(&c, "mta-sts-other", "1", &err), 1);
}

/* A config file's [domain NAME] sections as relay_config_sections reads
 * them; -1 with err when they do not parse. */
static int read_sections(struct relay_config *c, const char *text, struct base_err *err)
{
	char path[] = "/tmp/mailrep-mtasts-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	FILE *f = fdopen(fd, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	int r = relay_config_sections(c, path, err);
	unlink(path);
	if (r < 0) {
		/* the file's name varies: keep what follows it */
		const char *colon = strchr(err->msg, ':');
		if (colon) memmove(err->msg, colon + 1, strlen(colon + 1) + 1);
	}
	return r;
}

static void test_domain_key(void **state)
{
	(void)state;
	struct relay_config c;
	memset(&c, 0, sizeof c);
	struct base_err err;
	assert_int_equal(read_sections(&c,
	                               "[domain Off.Example]\nmta-sts = off\n\n"
	                               "[domain on.example]\nconn-limit = 2\nmta-sts = yes\n"
	                               "[domain plain.example]\nconn-limit = 3\n",
	                               &err),
	                 0);
	/* on by default: a domain opts out */
	assert_false(relay_mtasts_applies(&c, "off.example"));
	assert_false(relay_mtasts_applies(&c, "OFF.example"));
	assert_true(relay_mtasts_applies(&c, "on.example"));
	assert_true(relay_mtasts_applies(&c, "plain.example"));
	assert_true(relay_mtasts_applies(&c, "other.example"));
	assert_true(relay_mtasts_any(&c));
	assert_int_equal(relay_domain_find(&c, "on.example")->lim.conn_limit, 2);
	/* off by default: a domain opts in, and MTA-STS starts for it */
	assert_int_equal(relay_mtasts_set(&c, "mta-sts", "off", &err), 0);
	assert_false(relay_mtasts_applies(&c, "off.example"));
	assert_true(relay_mtasts_applies(&c, "On.Example"));
	assert_false(relay_mtasts_applies(&c, "plain.example"));
	assert_false(relay_mtasts_applies(&c, "other.example"));
	assert_true(relay_mtasts_any(&c));
	/* an explicit --tls-policy for the domain comes first; '*' does not */
	struct relay_tls_policy tp[2] = {{"*", RELAY_TLS_OPPORTUNISTIC},
	                                 {"on.example", RELAY_TLS_OPPORTUNISTIC}};
	c.tls_policy = tp;
	c.ntls_policy = 1;
	assert_true(relay_mtasts_applies(&c, "on.example"));
	c.ntls_policy = 2;
	assert_false(relay_mtasts_applies(&c, "on.example"));
	c.tls_policy = NULL;
	c.ntls_policy = 0;
	relay_shaping_free(&c);
	memset(&c, 0, sizeof c);
	c.mta_sts_off = 1;
	assert_int_equal(read_sections(&c, "[domain off.example]\nmta-sts = no\n", &err), 0);
	assert_false(relay_mtasts_any(&c));
	relay_shaping_free(&c);

	static const char *const bad[][2] = {
	    {"[domain x.example]\nconn-limit = 1\nmta-sts = sometimes\n",
	     "3: domain x.example: mta-sts: expected on or off, not 'sometimes'"},
	    {"[domain x.example]\nmta-sts =\n", "2: domain x.example: mta-sts: expected on or off"},
	    {"[domain x.example]\nmta-sts = ON\n",
	     "2: domain x.example: mta-sts: expected on or off"},
	    {"[domain x.example]\nmta_sts = on\n",
	     "2: domain x.example: unknown setting 'mta_sts'"},
	    {"\n[domain x.example]\nconn-limit = 0\n",
	     "3: domain x.example: conn-limit: bad number"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		memset(&c, 0, sizeof c);
		assert_int_equal(read_sections(&c, bad[i][0], &err), -1);
		if (strncmp(err.msg, bad[i][1], strlen(bad[i][1])))
			fail_msg("want '%s...', got '%s'", bad[i][1], err.msg);
		relay_shaping_free(&c);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_txt),
	    cmocka_unit_test(test_policy_good),
	    cmocka_unit_test(test_policy_bad),
	    cmocka_unit_test(test_mx_match),
	    cmocka_unit_test(test_http),
	    cmocka_unit_test(test_cache_file),
	    cmocka_unit_test(test_domain_and_settings),
	    cmocka_unit_test(test_domain_key),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
