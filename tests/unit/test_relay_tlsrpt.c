/*
 * test_relay_tlsrpt.c — unit tests of the pure half of TLS reporting
 * (RFC 8460): the _smtp._tls TXT record (valid, discarded, invalid, several
 * rua URIs), the counters and their bounds (rows and domains beyond the
 * caps are counted as dropped), the JSON report (fields, counts, string
 * escaping), the state file (a round trip, and errors naming their line),
 * and the settings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/relay.h"
#include "relay/tlsrpt.h"

static int txt(const char *s, struct tlsrpt_rua *r, struct base_err *err)
{
	return tlsrpt_txt_parse(s, strlen(s), r, err);
}

static void test_txt(void **state)
{
	(void)state;
	struct tlsrpt_rua r;
	struct base_err err;
	assert_int_equal(txt("v=TLSRPTv1; rua=mailto:tlsrpt@reports.example", &r, &err), 1);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.uri[0], "mailto:tlsrpt@reports.example");
	assert_int_equal(
	    txt("v=TLSRPTv1;rua=mailto:a@x.example , https://r.example/v1/tlsrpt;", &r, &err), 1);
	assert_int_equal(r.n, 2);
	assert_string_equal(r.uri[1], "https://r.example/v1/tlsrpt");
	/* an extension is allowed, an unknown scheme skipped */
	assert_int_equal(
	    txt("v=TLSRPTv1 ; ext_1=v ; rua=ftp://x.example,mailto:b@y.example", &r, &err), 1);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.uri[0], "mailto:b@y.example");
	assert_int_equal(txt("v=TLSRPTv1; rua=https://r.example:8443", &r, &err), 1);
	/* not candidates: discarded */
	assert_int_equal(txt("v=spf1 -all", &r, &err), 0);
	assert_int_equal(txt("v=TLSRPTv10; rua=mailto:a@b.example", &r, &err), 0);
	assert_int_equal(txt("", &r, &err), 0);
	/* candidates, but invalid */
	assert_int_equal(txt("v=TLSRPTv1", &r, &err), -1);
	assert_non_null(strstr(err.msg, "no rua"));
	assert_int_equal(txt("v=TLSRPTv1; rua=", &r, &err), -1);
	assert_int_equal(txt("v=TLSRPTv1; rua=mailto:nobody", &r, &err), -1);
	assert_non_null(strstr(err.msg, "mailto"));
	assert_int_equal(txt("v=TLSRPTv1; rua=ftp://x.example", &r, &err), -1);
	assert_int_equal(
	    txt("v=TLSRPTv1; rua=mailto:a@b.example; rua=mailto:c@d.example", &r, &err), -1);
	assert_int_equal(txt("v=TLSRPTv1 rua=mailto:a@b.example", &r, &err), -1);
	assert_int_equal(txt("v=TLSRPTv1; rua=mailto:a@b.example x", &r, &err), -1);
	assert_int_equal(txt("v=TLSRPTv1; rua=https://", &r, &err), -1);
	assert_int_equal(txt("v=TLSRPTv1; rua=https://h.example:0/", &r, &err), -1);
	assert_int_equal(txt("v=TLSRPTv1; =x; rua=mailto:a@b.example", &r, &err), -1);
	/* the exact errors, each naming its byte offset */
	static const struct {
		const char *text, *msg;
	} bad[] = {
	    {"v=TLSRPTv1 rua=mailto:a@b.example", "expected ';' at offset 11"},
	    {"v=TLSRPTv1; =x; rua=mailto:a@b.example", "bad field name at offset 12"},
	    {"v=TLSRPTv1; rua =mailto:a@b.example", "expected '=' after 'rua' at offset 15"},
	    {"v=TLSRPTv1; rua=", "empty value for 'rua' at offset 16"},
	    {"v=TLSRPTv1; abcdefghijabcdefghijabcdefghijabc=1; rua=mailto:a@b.example",
	     "field name longer than 32 at offset 12"},
	    {"v=TLSRPTv1; x=a=b; rua=mailto:a@b.example",
	     "bad character in the value of 'x' at offset 15"},
	    {"v=TLSRPTv1; rua=mailto:a@b.example x", "expected ',' or ';' at offset 35"},
	    {"v=TLSRPTv1; rua=mailto:a@b.example,", "empty URI at offset 35"},
	    {"v=TLSRPTv1; rua=mailto:nobody", "bad mailto URI 'mailto:nobody' at offset 16"},
	    {"v=TLSRPTv1; rua=mailto:a@b.example; rua=mailto:c@d.example",
	     "rua given twice at offset 36"},
	    {"v=TLSRPTv1; x=1", "no rua field"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err.msg[0] = 0;
		int k = txt(bad[i].text, &r, &err);
		if (k != -1 || strcmp(err.msg, bad[i].msg))
			fail_msg("txt case %zu: %d '%s'", i, k, err.msg);
	}
}

static void add(struct tlsrpt_day *d, const char *dom, int type, int result, const char *mx)
{
	static const char *const strs[] = {"version: STSv1", "mode: enforce", "mx: mx.example.net",
	                                   "max_age: 86400"};
	static const char *const mxs[] = {"mx.example.net"};
	struct tlsrpt_session s = {.domain = dom,
	                           .type = type,
	                           .strings = strs,
	                           .nstrings = type == TLSRPT_STS ? 4 : 0,
	                           .mx = mxs,
	                           .nmx = type == TLSRPT_STS ? 1 : 0,
	                           .result = result,
	                           .sending_ip = "127.0.0.1",
	                           .receiving_ip = "127.0.0.2",
	                           .mx_host = mx};
	tlsrpt_day_add(d, &s);
}

static void test_counters_and_json(void **state)
{
	(void)state;
	struct tlsrpt_day d;
	tlsrpt_day_init(&d, "2026-11-22");
	add(&d, "Example.NET", TLSRPT_STS, 0, "mx.example.net");
	add(&d, "example.net", TLSRPT_STS, 0, "mx.example.net");
	add(&d, "example.net", TLSRPT_STS, TLSRPT_CERT_HOST_MISMATCH, "MX.example.net");
	add(&d, "example.net", TLSRPT_STS, TLSRPT_CERT_HOST_MISMATCH, "mx.example.net");
	add(&d, "example.net", TLSRPT_NO_POLICY, TLSRPT_STARTTLS_NOT_SUPPORTED, "mx2.example.net");
	assert_int_equal(d.n, 1);
	struct tlsrpt_domain *x = tlsrpt_day_find(&d, "example.net");
	assert_non_null(x);
	assert_int_equal(x->npol, 2);
	assert_int_equal(x->pol[0].ok, 2);
	assert_int_equal(x->pol[0].failed, 2);
	assert_int_equal(x->pol[0].nrows, 1);
	assert_int_equal(x->pol[0].rows[0].count, 2);
	struct tlsrpt_meta meta = {"Org \"Q\" \\ ok\n", "postmaster@sender.example", "r-1"};
	struct base_buf b;
	base_buf_init(&b);
	tlsrpt_json(&d, x, &meta, &b);
	base_buf_append(&b, "", 1);
	const char *want =
	    "{\"organization-name\":\"Org \\\"Q\\\" \\\\ ok\\u000a\","
	    "\"date-range\":{\"start-datetime\":\"2026-11-22T00:00:00Z\","
	    "\"end-datetime\":\"2026-11-22T23:59:59Z\"},"
	    "\"contact-info\":\"postmaster@sender.example\",\"report-id\":\"r-1\","
	    "\"policies\":[{\"policy\":{\"policy-type\":\"sts\",\"policy-string\":"
	    "[\"version: STSv1\",\"mode: enforce\",\"mx: mx.example.net\",\"max_age: 86400\"],"
	    "\"policy-domain\":\"example.net\",\"mx-host\":[\"mx.example.net\"]},"
	    "\"summary\":{\"total-successful-session-count\":2,"
	    "\"total-failure-session-count\":2},"
	    "\"failure-details\":[{\"result-type\":\"certificate-host-mismatch\","
	    "\"sending-mta-ip\":\"127.0.0.1\",\"receiving-mx-hostname\":\"mx.example.net\","
	    "\"receiving-ip\":\"127.0.0.2\",\"failed-session-count\":2}]},"
	    "{\"policy\":{\"policy-type\":\"no-policy-found\",\"policy-domain\":\"example.net\"},"
	    "\"summary\":{\"total-successful-session-count\":0,"
	    "\"total-failure-session-count\":1},"
	    "\"failure-details\":[{\"result-type\":\"starttls-not-supported\","
	    "\"sending-mta-ip\":\"127.0.0.1\",\"receiving-mx-hostname\":\"mx2.example.net\","
	    "\"receiving-ip\":\"127.0.0.2\",\"failed-session-count\":1}]}]}\n";
	assert_string_equal(b.data, want);
	base_buf_free(&b);
	/* every control character and byte 0x7f escaped */
	base_buf_init(&b);
	tlsrpt_json_str(&b, "a\x01\x1f\x7f\tb");
	base_buf_append(&b, "", 1);
	assert_string_equal(b.data, "\"a\\u0001\\u001f\\u007f\\u0009b\"");
	base_buf_free(&b);
	tlsrpt_day_free(&d);
}

static void test_bounds(void **state)
{
	(void)state;
	struct tlsrpt_day d;
	tlsrpt_day_init(&d, "2026-11-22");
	char mx[64], dom[64];
	for (int i = 0; i < TLSRPT_ROWS_MAX + 5; i++) {
		snprintf(mx, sizeof mx, "mx%d.example.net", i);
		add(&d, "example.net", TLSRPT_NO_POLICY, TLSRPT_VALIDATION_FAILURE, mx);
	}
	struct tlsrpt_domain *x = tlsrpt_day_find(&d, "example.net");
	assert_int_equal(x->pol[0].nrows, TLSRPT_ROWS_MAX);
	assert_int_equal(x->pol[0].dropped, 5);
	assert_int_equal(x->pol[0].failed, TLSRPT_ROWS_MAX + 5);
	for (int i = 0; i < TLSRPT_DOMAINS_MAX + 3; i++) {
		snprintf(dom, sizeof dom, "d%d.example", i);
		add(&d, dom, TLSRPT_NO_POLICY, 0, "mx.example");
	}
	assert_int_equal(d.n, TLSRPT_DOMAINS_MAX);
	assert_int_equal(d.dropped, 4); /* example.net took one place */
	tlsrpt_day_free(&d);
}

static void test_state_file(void **state)
{
	(void)state;
	struct tlsrpt_day d, e;
	tlsrpt_day_init(&d, "2026-11-22");
	add(&d, "example.net", TLSRPT_STS, 0, "mx.example.net");
	add(&d, "example.net", TLSRPT_STS, TLSRPT_CERT_EXPIRED, "mx.example.net");
	add(&d, "b.example", TLSRPT_NO_POLICY, TLSRPT_STARTTLS_NOT_SUPPORTED, NULL);
	struct base_buf a, b;
	base_buf_init(&a);
	base_buf_init(&b);
	tlsrpt_state_format(&d, &a);
	struct base_err err;
	assert_int_equal(tlsrpt_state_parse(a.data, a.len, &e, &err), 0);
	assert_string_equal(e.day, "2026-11-22");
	assert_int_equal(e.n, 2);
	tlsrpt_state_format(&e, &b);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.data, b.data, a.len);
	tlsrpt_day_free(&e);
	/* cut short: no 'end' */
	assert_int_equal(tlsrpt_state_parse(a.data, a.len - 4, &e, &err), -1);
	assert_non_null(strstr(err.msg, "cut short"));
	assert_int_equal(e.n, 0);
	base_buf_free(&a);
	base_buf_free(&b);
	tlsrpt_day_free(&d);
	static const struct {
		const char *text, *msg;
	} bad[] = {
	    {"mailrep-tlsrpt v2 2026-11-22\nend\n", "line 1"},
	    {"mailrep-tlsrpt v1 2026-02-30\nend\n", "line 1"},
	    {"mailrep-tlsrpt v1 2026-11-22\npolicy sts 1 0 0\nend\n", "line 2: unexpected"},
	    {"mailrep-tlsrpt v1 2026-11-22\ndomain a.example 0\npolicy smtp 1 0 0\nend\n",
	     "line 3"},
	    {"mailrep-tlsrpt v1 2026-11-22\ndomain a.example 0\npolicy sts 1 x 0\nend\n", "line 3"},
	    {"mailrep-tlsrpt v1 2026-11-22\ndomain a b\nend\n", "line 2"},
	    {"mailrep-tlsrpt v1 2026-11-22\ndomain a.example 0\ndomain a.example 0\nend\n",
	     "line 3: domain a.example repeated"},
	    {"mailrep-tlsrpt v1 2026-11-22\ndomain a.example 0\npolicy sts 0 1 0\n"
	     "row bogus 1 - - -\nend\n",
	     "line 4"},
	    {"mailrep-tlsrpt v1 2026-11-22\ndomain a.example 0\npolicy sts 0 1 0\n"
	     "row validation-failure 1 1.2.3.x - -\nend\n",
	     "line 4"},
	    {"mailrep-tlsrpt v1 2026-11-22\ndomain a.example 0\npolicy no-policy-found 0 0 0\n"
	     "string x\nend\n",
	     "line 4"},
	    {"mailrep-tlsrpt v1 2026-11-22\n\nend\n", "line 2: empty"},
	    {"mailrep-tlsrpt v1 2026-11-22\ndomain a.example 0\npolicy sts 0 3 1\n"
	     "row validation-failure 1 - - -\nend\n",
	     "line 5: the rows and dropped sessions of the policy above do not add up to its 3"},
	    {"mailrep-tlsrpt v1 2026-11-22\ndomain a.example 0\npolicy sts 0 1 0\n"
	     "domain b.example 0\nend\n",
	     "line 4: the rows"},
	    {"mailrep-tlsrpt v1 2026-11-22\ndropped 281474976710657\nend\n", "line 2: bad count"},
	    {"mailrep-tlsrpt v1 2026-11-22\nend\nend\n", "line 3: text after"},
	    {"mailrep-tlsrpt v1 2026-11-22\ndomain a\x01 0\nend\n", "line 2"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int r = tlsrpt_state_parse(bad[i].text, strlen(bad[i].text), &e, &err);
		if (r != -1 || !strstr(err.msg, bad[i].msg))
			fail_msg("case %zu: %d '%s'", i, r, err.msg);
		tlsrpt_day_free(&e);
	}
}

static void test_settings(void **state)
{
	(void)state;
	struct relay_config c;
	relay_config_init(&c);
	struct base_err err;
	assert_int_equal(c.tlsrpt, 0);
	assert_int_equal(relay_tlsrpt_set(&c, "tlsrpt", "on", &err), 0);
	assert_int_equal(c.tlsrpt, 1);
	assert_int_equal(relay_tlsrpt_set(&c, "tlsrpt", "sometimes", &err), -1);
	assert_int_equal(relay_tlsrpt_set(&c, "tlsrpt-from", "tlsrpt@sender.example", &err), 0);
	assert_int_equal(relay_tlsrpt_set(&c, "tlsrpt-from", "not an address", &err), -1);
	assert_int_equal(relay_tlsrpt_set(&c, "tlsrpt-delay", "0", &err), 0);
	assert_int_equal(c.tlsrpt_delay, 0);
	assert_int_equal(relay_tlsrpt_set(&c, "tlsrpt-delay", "2d", &err), -1);
	assert_int_equal(c.tlsrpt_retry, 300);
	assert_int_equal(relay_tlsrpt_set(&c, "tlsrpt-retry", "1s", &err), 0);
	assert_int_equal(c.tlsrpt_retry, 1);
	assert_int_equal(relay_tlsrpt_set(&c, "tlsrpt-retry", "0", &err), -1);
	assert_string_equal(err.msg, "tlsrpt-retry: from 1s to 1h, not '0'");
	assert_int_equal(relay_tlsrpt_set(&c, "tlsrpt-retry", "2h", &err), -1);
	assert_int_equal(relay_tlsrpt_set(&c, "tlsrpt-other", "1", &err), 1);
	assert_int_equal(tlsrpt_day_ok("2024-02-29"), 1);
	assert_int_equal(tlsrpt_day_ok("2026-02-29"), 0);
	assert_int_equal(tlsrpt_day_ok("2026-1-01"), 0);
}

static const char retry_text[] = "mailrep-tlsrpt-retry v1\n"
                                 "domain web.example\n"
                                 "day 2026-11-22\n"
                                 "uri https://rpt.reports.example/v1/tlsrpt\n"
                                 "first 1795000000\n"
                                 "next 1795000300\n"
                                 "attempts 1\n"
                                 "report 4\n"
                                 "\x1f\x8b\n\x00";

static void test_retry_file(void **state)
{
	(void)state;
	struct tlsrpt_retry r;
	struct base_err err;
	size_t len = sizeof retry_text - 1;
	assert_int_equal(tlsrpt_retry_parse(retry_text, len, &r, &err), 0);
	assert_string_equal(r.domain, "web.example");
	assert_string_equal(r.day, "2026-11-22");
	assert_string_equal(r.uri, "https://rpt.reports.example/v1/tlsrpt");
	assert_int_equal(r.first, 1795000000);
	assert_int_equal(r.next, 1795000300);
	assert_int_equal(r.attempts, 1);
	assert_int_equal(r.len, 4);
	assert_memory_equal(r.report, "\x1f\x8b\n\x00", 4);
	struct base_buf b;
	base_buf_init(&b);
	tlsrpt_retry_format(&r, &b);
	assert_int_equal(b.len, len);
	assert_memory_equal(b.data, retry_text, len);
	base_buf_free(&b);
	/* a mailto: URI */
	const char *m = "mailrep-tlsrpt-retry v1\ndomain a.example\nday 2026-11-22\n"
	                "uri mailto:t@r.example\nfirst 1\nnext 2\nattempts 0\nreport 1\nx";
	assert_int_equal(tlsrpt_retry_parse(m, strlen(m), &r, &err), 0);
	assert_string_equal(r.uri, "mailto:t@r.example");
	/* the errors name the line and its byte offset */
	static const struct {
		const char *from, *to, *msg;
	} bad[] = {
	    {"retry v1", "retry v2", "line 1 (offset 0): bad version 'v2'"},
	    {"domain web", "domian web", "line 2 (offset 24): expected 'domain ...'"},
	    {"day 2026-11-22", "day 2026-11-31", "line 3 (offset 43): bad day '2026-11-31'"},
	    {"uri https://rpt", "uri ftp://xrpt",
	     "line 4 (offset 58): bad uri 'ftp://xrpt.reports.example/v1/tlsrpt'"},
	    {"first 1795000000", "first 17950000x0", "line 5 (offset 100): bad first '17950000x0'"},
	    {"attempts 1", "attempts 1001", "line 7 (offset 133): bad attempts '1001'"},
	    {"next 1795000300", "next 01795000300", "line 6 (offset 117): bad next '01795000300'"},
	    {"report 4", "report 5", "offset 153: 4 bytes of report, not 5"},
	    {"report 4", "report 3", "offset 153: 4 bytes of report, not 3"},
	    {"report 4", "report 0", "line 8 (offset 144): bad report '0'"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char t[sizeof retry_text + 8];
		const char *at = strstr(retry_text, bad[i].from);
		size_t pre = (size_t)(at - retry_text), fl = strlen(bad[i].from),
		       tl = strlen(bad[i].to);
		memcpy(t, retry_text, pre);
		memcpy(t + pre, bad[i].to, tl);
		memcpy(t + pre + tl, at + fl, len - pre - fl);
		size_t n = len - fl + tl;
		err.msg[0] = 0;
		int k = tlsrpt_retry_parse(t, n, &r, &err);
		if (k != -1 || strcmp(err.msg, bad[i].msg))
			fail_msg("retry case %zu: %d '%s'", i, k, err.msg);
	}
	assert_int_equal(tlsrpt_retry_parse(retry_text, 60, &r, &err), -1);
	assert_string_equal(err.msg, "line 4 (offset 58): no line end (the file is cut short)");
	/* the waits: 5 min, then three times longer, at most 4 h */
	assert_int_equal(tlsrpt_retry_wait(300, 1), 300);
	assert_int_equal(tlsrpt_retry_wait(300, 2), 900);
	assert_int_equal(tlsrpt_retry_wait(300, 3), 2700);
	assert_int_equal(tlsrpt_retry_wait(300, 4), 8100);
	assert_int_equal(tlsrpt_retry_wait(300, 5), 14400);
	assert_int_equal(tlsrpt_retry_wait(300, 1000), 14400);
	assert_int_equal(tlsrpt_retry_wait(1, 3), 9);
	assert_int_equal(tlsrpt_retry_wait(3600, 2), 10800);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_txt),      cmocka_unit_test(test_counters_and_json),
	    cmocka_unit_test(test_bounds),   cmocka_unit_test(test_state_file),
	    cmocka_unit_test(test_settings), cmocka_unit_test(test_retry_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
