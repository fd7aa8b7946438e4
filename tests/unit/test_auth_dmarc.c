/*
 * test_auth_dmarc.c — DMARC: record parsing, discovery by the RFC 7489
 * organisational-domain rule (libpsl) and by the DMARCbis DNS tree walk
 * (label shortening, the query limit, psd=), alignment strict and relaxed,
 * and the choice of p=, sp= or np=. Records are served by knotd on loopback.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "auth/auth.h"
#include "knot_fixture.h"

static const char zone[] =
    "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 300\n@ NS ns\n"
    "ns A 127.0.0.1\n"
    "@ A 192.0.2.1\n"
    "_dmarc TXT \"v=DMARC1; p=reject; sp=quarantine; np=reject; adkim=s; aspf=r; "
    "rua=mailto:d@example.com\"\n"
    "_dmarc TXT \"some other text\"\n"
    "mail A 192.0.2.2\n"
    "other A 192.0.2.3\n"
    "_dmarc.other TXT \"v=DMARC1; p=none\"\n"
    "a.b.c.d.e.f.g.h A 192.0.2.4\n"
    "_dmarc.b.c.d.e.f.g.h TXT \"v=DMARC1; p=quarantine\"\n"
    "_dmarc.twice TXT \"v=DMARC1; p=reject\"\n"
    "_dmarc.twice TXT \"v=DMARC1; p=none\"\n"
    "twice A 192.0.2.5\n"
    "_dmarc.psd TXT \"v=DMARC1; p=reject; psd=y\"\n"
    "a.y.psd A 192.0.2.6\n";

static struct knot_fixture knot;
static struct dns_resolver *res;
static struct dns_lookup_ops dns;

static int setup(void **state)
{
	/* The walk goes up to the top-level domain: serve "com" too, so that
	 * _dmarc.com is a plain NXDOMAIN as it is on the internet. */
	const struct knot_zone zones[] = {
	    {"example.com", zone},
	    {"com",
	     "$ORIGIN com.\n$TTL 300\n@ SOA ns.example.com. hostmaster 1 3600 600 86400 300\n"
	     "@ NS ns.example.com.\n"},
	    {NULL, NULL}};
	if (knot_start(&knot, zones) < 0) {
		knot_stop(&knot);
		return -1;
	}
	struct dns_resolver_config cfg = {knot.server, 1000, 2};
	if (dns_resolver_new(&res, &cfg, NULL) < 0) return -1;
	dns_resolver_ops(res, &dns);
	return 0;
}

static int teardown(void **state)
{
	dns_resolver_free(res);
	knot_stop(&knot);
	return 0;
}

static void test_parse(void **state)
{
	struct auth_dmarc_record r;
	struct base_err err;
	const char *s = "v=DMARC1; p=quarantine; sp=none; np=reject; adkim=s; pct=50; psd=n; t=y; "
	                "rua=mailto:a@example.com,mailto:b@example.net";
	assert_int_equal(auth_dmarc_parse(s, strlen(s), &r, &err), 0);
	assert_int_equal(r.p, AUTH_DMARC_QUARANTINE);
	assert_int_equal(r.sp, AUTH_DMARC_NONE);
	assert_int_equal(r.np, AUTH_DMARC_REJECT);
	assert_int_equal(r.adkim, 's');
	assert_int_equal(r.aspf, 'r');
	assert_int_equal(r.pct, 50);
	assert_int_equal(r.psd, 'n');
	assert_true(r.testing);
	assert_string_equal(r.rua, "mailto:a@example.com,mailto:b@example.net");
	s = "v=DMARC1";
	assert_int_equal(auth_dmarc_parse(s, strlen(s), &r, &err), 0);
	assert_false(r.has_p);
	assert_int_equal(r.sp, -1);
	const char *bad[] = {"p=reject; v=DMARC1", "v=DMARC1; p=drop", "v=DMARC1; pct=101",
	                     "v=DMARC1; adkim=x",  "v=DMARC2; p=none", "v=DMARC1; p=none; p=reject",
	                     "v=DMARC1; psd=maybe"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(auth_dmarc_parse(bad[i], strlen(bad[i]), &r, &err), -1);
	assert_true(auth_dmarc_is_record("v=DMARC1 ; p=none", 17));
	assert_false(auth_dmarc_is_record("v=DMARC10; p=none", 17));
}

static void test_discovery_psl(void **state)
{
	struct auth_dmarc_found f;
	auth_dmarc_discover(&dns, AUTH_DMARC_PSL, "Mail.Example.com", &f);
	assert_int_equal(f.status, 0);
	assert_string_equal(f.domain, "example.com");
	assert_int_equal(f.queries, 2);
	/* RFC 7489 never looks at intermediate names */
	auth_dmarc_discover(&dns, AUTH_DMARC_PSL, "a.b.c.d.e.f.g.h.example.com", &f);
	assert_int_equal(f.status, 0);
	assert_string_equal(f.domain, "example.com");
	assert_int_equal(f.queries, 2);
	auth_dmarc_discover(&dns, AUTH_DMARC_PSL, "twice.example.com", &f);
	assert_string_equal(f.domain, "example.com"); /* two records at twice: ignored */
	char org[256];
	assert_int_equal(
	    auth_dmarc_org_domain(&dns, AUTH_DMARC_PSL, "a.y.psd.example.com", org, sizeof org), 0);
	assert_string_equal(org, "example.com");
	assert_int_equal(
	    auth_dmarc_org_domain(&dns, AUTH_DMARC_PSL, "www.example.co.uk", org, sizeof org), 0);
	assert_string_equal(org, "example.co.uk");
}

static void test_discovery_treewalk(void **state)
{
	struct auth_dmarc_found f;
	/* 10 labels: the name itself, then cut to 7 labels (skipping the
	 * record at the 9-label b.c.d...), then one label at a time. */
	auth_dmarc_discover(&dns, AUTH_DMARC_TREEWALK, "a.b.c.d.e.f.g.h.example.com", &f);
	assert_int_equal(f.status, 0);
	assert_string_equal(f.domain, "example.com");
	assert_int_equal(f.queries, 7);
	assert_true(f.queries <= AUTH_DMARC_WALK_MAX);
	/* from the 9-label name itself the record there is found */
	auth_dmarc_discover(&dns, AUTH_DMARC_TREEWALK, "b.c.d.e.f.g.h.example.com", &f);
	assert_string_equal(f.domain, "b.c.d.e.f.g.h.example.com");
	assert_int_equal(f.rec.p, AUTH_DMARC_QUARANTINE);
	/* the intermediate name other.example.com is visited by the walk */
	auth_dmarc_discover(&dns, AUTH_DMARC_TREEWALK, "x.other.example.com", &f);
	assert_string_equal(f.domain, "other.example.com");
	/* nothing at all: the walk ends at the top */
	auth_dmarc_discover(&dns, AUTH_DMARC_TREEWALK, "x.y.nothing.com", &f);
	assert_int_equal(f.status, 1);
	assert_int_equal(f.queries, 4);

	char org[256];
	assert_int_equal(auth_dmarc_org_domain(&dns, AUTH_DMARC_TREEWALK, "a.y.psd.example.com",
	                                       org, sizeof org),
	                 0);
	assert_string_equal(org, "y.psd.example.com"); /* one label below the psd=y record */
	assert_int_equal(auth_dmarc_org_domain(&dns, AUTH_DMARC_TREEWALK, "x.other.example.com",
	                                       org, sizeof org),
	                 0);
	assert_string_equal(org, "example.com"); /* the last record found without psd= */
	/* a zone the server refuses: a DNS failure, not "no record" */
	auth_dmarc_discover(&dns, AUTH_DMARC_TREEWALK, "example.org", &f);
	assert_int_equal(f.status, -1);
}

static struct auth_dmarc_outcome eval(int mode, const char *from, int spf, const char *spf_domain,
                                      int dkim, const char *dkim_domain)
{
	struct auth_dmarc_input in = {0};
	in.from_domain = from;
	in.spf_result = spf;
	in.spf_domain = spf_domain;
	if (dkim_domain) {
		in.ndkim = 1;
		in.dkim[0].result = dkim;
		in.dkim[0].domain = dkim_domain;
	}
	in.mode = mode;
	struct auth_dmarc_outcome out;
	auth_dmarc_evaluate(&dns, &in, &out);
	return out;
}

static void test_evaluate(void **state)
{
	for (int mode = 0; mode < 2; mode++) {
		struct auth_dmarc_outcome o;
		o = eval(mode, "example.com", AUTH_SPF_FAIL, "example.com", AUTH_DKIM_PASS,
		         "example.com");
		assert_int_equal(o.result, AUTH_DMARC_R_PASS);
		assert_true(o.dkim_aligned);
		/* adkim=s: a subdomain's signature does not align... */
		o = eval(mode, "example.com", AUTH_SPF_FAIL, "example.com", AUTH_DKIM_PASS,
		         "mail.example.com");
		assert_int_equal(o.result, AUTH_DMARC_R_FAIL);
		assert_int_equal(o.disposition, AUTH_DMARC_REJECT);
		/* ...but aspf=r lets SPF for a subdomain align */
		o = eval(mode, "example.com", AUTH_SPF_PASS, "bounce.example.com", AUTH_DKIM_PASS,
		         "mail.example.com");
		assert_int_equal(o.result, AUTH_DMARC_R_PASS);
		assert_true(o.spf_aligned);
		assert_false(o.dkim_aligned);
		/* unrelated domains never align; a failed signature never counts */
		o = eval(mode, "example.com", AUTH_SPF_PASS, "unrelated.com", AUTH_DKIM_FAIL,
		         "example.com");
		assert_int_equal(o.result, AUTH_DMARC_R_FAIL);
		/* sp= below the record's domain, np= for a name that does not exist */
		o = eval(mode, "mail.example.com", AUTH_SPF_FAIL, NULL, 0, NULL);
		assert_int_equal(o.result, AUTH_DMARC_R_FAIL);
		assert_int_equal(o.disposition, AUTH_DMARC_QUARANTINE);
		o = eval(mode, "ghost.example.com", AUTH_SPF_FAIL, NULL, 0, NULL);
		assert_int_equal(o.disposition, AUTH_DMARC_REJECT);
		o = eval(mode, "other.example.com", AUTH_SPF_FAIL, NULL, 0, NULL);
		assert_int_equal(o.disposition, AUTH_DMARC_NONE);
		o = eval(mode, "example.org", AUTH_SPF_PASS, "example.org", 0, NULL);
		assert_int_equal(o.result, AUTH_DMARC_R_TEMPERROR);
	}
	/* relaxed alignment follows the organisational domain of each mode */
	struct auth_dmarc_outcome o;
	o = eval(AUTH_DMARC_PSL, "a.y.psd.example.com", AUTH_SPF_PASS, "z.psd.example.com", 0,
	         NULL);
	assert_int_equal(o.result, AUTH_DMARC_R_PASS);
	o = eval(AUTH_DMARC_TREEWALK, "a.y.psd.example.com", AUTH_SPF_PASS, "z.psd.example.com", 0,
	         NULL);
	assert_int_equal(o.result, AUTH_DMARC_R_FAIL);
	o = eval(AUTH_DMARC_TREEWALK, "a.y.psd.example.com", AUTH_SPF_PASS, "b.y.psd.example.com",
	         0, NULL);
	assert_int_equal(o.result, AUTH_DMARC_R_PASS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse),
	    cmocka_unit_test(test_discovery_psl),
	    cmocka_unit_test(test_discovery_treewalk),
	    cmocka_unit_test(test_evaluate),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
