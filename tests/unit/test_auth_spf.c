/*
 * test_auth_spf.c — SPF: the whole openspf RFC 7208 suite, served through
 * the in-memory zone backend (tests/data/spf/rfc7208-tests.txt, converted
 * from the suite's YAML by tests/data/spf/yaml2txt.py), then record parsing
 * and the processing limits on their own.
 *
 * With an argument, the suite file is read from that path instead (the
 * system test feeds a freshly converted copy).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "auth/auth.h"

static const char *suite_path = "tests/data/spf/rfc7208-tests.txt";

static int unhex(const char *h, char *out, size_t sz)
{
	if (!strcmp(h, "-")) {
		out[0] = 0;
		return 0;
	}
	size_t n = strlen(h) / 2;
	if (n >= sz) return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		if (sscanf(h + 2 * i, "%2x", &v) != 1) return -1;
		out[i] = (char)v;
	}
	out[n] = 0;
	return (int)n;
}

static uint16_t type_code(const char *t)
{
	if (!strcmp(t, "A")) return DNS_T_A;
	if (!strcmp(t, "AAAA")) return DNS_T_AAAA;
	if (!strcmp(t, "MX")) return DNS_T_MX;
	if (!strcmp(t, "PTR")) return DNS_T_PTR;
	if (!strcmp(t, "CNAME")) return DNS_T_CNAME;
	if (!strcmp(t, "TXT")) return DNS_T_TXT;
	return 0;
}

static int parse_ip(const char *s, struct auth_spf_request *r)
{
	if (inet_pton(AF_INET, s, r->ip) == 1) {
		r->family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, s, r->ip) == 1) {
		r->family = AF_INET6;
		return 0;
	}
	return -1;
}

static void test_rfc7208_suite(void **state)
{
	FILE *f = fopen(suite_path, "r");
	assert_non_null(f);
	struct dns_memzone *z = dns_memzone_new();
	struct dns_lookup_ops ops;
	dns_memzone_ops(z, &ops);
	char line[8192], data[4096];
	unsigned total = 0, passed = 0;
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\n")] = 0;
		char f1[512], f2[512], f3[4096], f4[1024], f5[256], f6[2048];
		unsigned pref;
		if (line[0] == 'S') {
			dns_memzone_clear(z);
		} else if (line[0] == 'T') {
			assert_int_equal(sscanf(line, "T %511s", f2), 1);
			assert_true(unhex(f2, f1, sizeof f1) > 0);
			assert_int_equal(dns_memzone_add_timeout(z, f1, NULL), 0);
		} else if (line[0] == 'Z') {
			assert_int_equal(sscanf(line, "Z %511s %511s %u %4095s", f4, f2, &pref, f3),
			                 4);
			assert_true(unhex(f4, f1, sizeof f1) > 0);
			int n = unhex(f3, data, sizeof data);
			assert_true(n >= 0);
			uint16_t t = type_code(f2);
			assert_true(t != 0);
			if (t == DNS_T_A || t == DNS_T_AAAA) {
				uint8_t ip[16];
				int fam = t == DNS_T_A ? AF_INET : AF_INET6;
				assert_int_equal(inet_pton(fam, data, ip), 1);
				assert_int_equal(
				    dns_memzone_add(z, f1, t, 0, ip, fam == AF_INET ? 4 : 16, NULL),
				    0);
			} else {
				assert_int_equal(dns_memzone_add(z, f1, t, (uint16_t)pref, data,
				                                 (size_t)n, NULL),
				                 0);
			}
		} else if (line[0] == 'C') {
			char name[256], ip[128];
			assert_int_equal(sscanf(line, "C %255s %127s %511s %1023s %255s %2047s",
			                        name, ip, f2, f4, f5, f6),
			                 6);
			char mailfrom[512], helo[512], expl[1024];
			assert_true(unhex(f2, mailfrom, sizeof mailfrom) >= 0);
			assert_true(unhex(f4, helo, sizeof helo) >= 0);
			assert_true(unhex(f6, expl, sizeof expl) >= 0);
			struct auth_spf_request req = {0};
			assert_int_equal(parse_ip(ip, &req), 0);
			req.sender = mailfrom;
			req.helo = helo;
			req.now = 1000000000;
			struct auth_spf_outcome out;
			auth_spf_check(&ops, &req, &out);
			const char *got = auth_spf_result_name(out.result);
			int ok = 0;
			char *save, *tok;
			char results[256];
			snprintf(results, sizeof results, "%s", f5);
			for (tok = strtok_r(results, ",", &save); tok;
			     tok = strtok_r(NULL, ",", &save))
				if (!strcmp(tok, got)) ok = 1;
			if (ok && expl[0]) {
				const char *want = !strcmp(expl, "DEFAULT") ? "" : expl;
				if (strcmp(out.explanation, want)) ok = 0;
			}
			total++;
			if (ok)
				passed++;
			else
				fprintf(stderr,
				        "FAIL %s: got %s (%s), want %s, expl '%s' want '%s'\n",
				        name, got, out.reason, f5, out.explanation, expl);
		}
	}
	fclose(f);
	dns_memzone_free(z);
	fprintf(stderr, "rfc7208 suite: %u/%u passed\n", passed, total);
	assert_true(total >= 200);
	assert_int_equal(passed, total);
}

static int parse_ok(const char *s)
{
	struct auth_spf_record rec;
	struct base_err err;
	int rc = auth_spf_parse(s, strlen(s), &rec, &err);
	if (rc == 0) auth_spf_record_free(&rec);
	return rc == 0;
}

static void test_parse(void **state)
{
	assert_true(parse_ok("v=spf1"));
	assert_true(parse_ok("v=spf1 -all"));
	assert_true(
	    parse_ok("V=SPF1 a mx/24//64 ptr:%{d} ip4:192.0.2.0/24 ip6:2001:db8::/32 ~all"));
	assert_true(parse_ok("v=spf1 include:_spf.example.com exists:%{ir}.%{v}._spf.%{d2} -all"));
	assert_true(parse_ok("v=spf1 redirect=_spf.example.com foo=bar"));
	assert_false(parse_ok("v=spf10"));
	assert_false(parse_ok("v=spf1 -all:foo"));
	assert_false(parse_ok("v=spf1 ip4:192.0.2.0/33"));
	assert_false(parse_ok("v=spf1 ip4:192.0.02.1"));
	assert_false(parse_ok("v=spf1 ip6:2001:db8::/129"));
	assert_false(parse_ok("v=spf1 a:example.123"));
	assert_false(parse_ok("v=spf1 include:"));
	assert_false(parse_ok("v=spf1 exists:%{q}.example.com"));
	assert_false(parse_ok("v=spf1 exists:%{d0}.example.com"));
	assert_false(parse_ok("v=spf1 redirect=a.example.com redirect=b.example.com"));
	assert_false(parse_ok("v=spf1 frob"));
	assert_false(parse_ok("v=spf1 a:ex\xc3\xa4mple.com"));

	struct auth_spf_record rec;
	struct base_err err;
	const char *s = "v=spf1 -mx:mail.example.com/24//64 ?exp=x.example.com";
	assert_int_equal(auth_spf_parse(s, strlen(s), &rec, NULL), -1);
	s = "v=spf1 -mx:mail.example.com/24//64 exp=x.example.com";
	assert_int_equal(auth_spf_parse(s, strlen(s), &rec, &err), 0);
	assert_int_equal(rec.n, 2);
	assert_int_equal(rec.terms[0].kind, AUTH_SPF_MX);
	assert_int_equal(rec.terms[0].qualifier, '-');
	assert_int_equal(rec.terms[0].cidr4, 24);
	assert_int_equal(rec.terms[0].cidr6, 64);
	assert_int_equal(rec.terms[0].spec_len, strlen("mail.example.com"));
	assert_int_equal(rec.exp, 1);
	auth_spf_record_free(&rec);
	s = "v=spf1 frob:x";
	assert_int_equal(auth_spf_parse(s, strlen(s), &rec, &err), -1);
	assert_non_null(strstr(err.msg, "frob"));
}

/* The limits on their own, with counts the suite does not pin down. */
static void test_limits(void **state)
{
	struct dns_memzone *z = dns_memzone_new();
	struct dns_lookup_ops ops;
	dns_memzone_ops(z, &ops);
	char rec[2048] = "v=spf1";
	/* ten include terms are fine, the eleventh is a permerror */
	for (int i = 0; i < 10; i++) {
		char name[64], r[64] = "v=spf1 ?all";
		snprintf(name, sizeof name, "i%d.example.com", i);
		dns_memzone_add(z, name, DNS_T_TXT, 0, r, strlen(r), NULL);
		snprintf(rec + strlen(rec), sizeof rec - strlen(rec), " include:%s", name);
	}
	char ten[4096];
	snprintf(ten, sizeof ten, "%s -all", rec);
	dns_memzone_add(z, "ten.example.com", DNS_T_TXT, 0, ten, strlen(ten), NULL);
	char eleven[4096];
	snprintf(eleven, sizeof eleven, "%s a -all", rec);
	dns_memzone_add(z, "eleven.example.com", DNS_T_TXT, 0, eleven, strlen(eleven), NULL);
	const char *voids = "v=spf1 a:n1.example.com a:n2.example.com a:n3.example.com -all";
	dns_memzone_add(z, "voids.example.com", DNS_T_TXT, 0, voids, strlen(voids), NULL);
	const char *two = "v=spf1 a:n1.example.com a:n2.example.com ~all";
	dns_memzone_add(z, "two.example.com", DNS_T_TXT, 0, two, strlen(two), NULL);

	struct auth_spf_request req = {0};
	req.family = AF_INET;
	inet_pton(AF_INET, "192.0.2.1", req.ip);
	req.helo = "mx.example.org";
	struct auth_spf_outcome out;
	req.sender = "a@ten.example.com";
	assert_int_equal(auth_spf_check(&ops, &req, &out), AUTH_SPF_FAIL);
	assert_int_equal(out.dns_terms, 10);
	req.sender = "a@eleven.example.com";
	assert_int_equal(auth_spf_check(&ops, &req, &out), AUTH_SPF_PERMERROR);
	assert_non_null(strstr(out.reason, "DNS-querying"));
	req.sender = "a@voids.example.com";
	assert_int_equal(auth_spf_check(&ops, &req, &out), AUTH_SPF_PERMERROR);
	assert_non_null(strstr(out.reason, "void"));
	req.sender = "a@two.example.com";
	assert_int_equal(auth_spf_check(&ops, &req, &out), AUTH_SPF_SOFTFAIL);
	assert_int_equal(out.void_lookups, 2);
	dns_memzone_free(z);
}

int main(int argc, char **argv)
{
	if (argc > 1) suite_path = argv[1];
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc7208_suite),
	    cmocka_unit_test(test_parse),
	    cmocka_unit_test(test_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
