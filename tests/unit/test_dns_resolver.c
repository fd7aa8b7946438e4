/*
 * test_dns_resolver.c — the c-ares DNS client against a real knotd on
 * loopback: every record type the authentication code reads, rcodes told
 * apart (NXDOMAIN, NODATA, REFUSED, timeout), many queries in flight, and
 * the answer parser on malformed messages. Also the in-memory zone backend.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "knot_fixture.h"

#define BIG10  "0123456789"
#define BIG50  BIG10 BIG10 BIG10 BIG10 BIG10
#define BIG250 BIG50 BIG50 BIG50 BIG50 BIG50

static const char zone[] = "$ORIGIN example.test.\n"
                           "$TTL 300\n"
                           "@ SOA ns hostmaster 1 3600 600 86400 300\n"
                           "@ NS ns\n"
                           "ns A 127.0.0.1\n"
                           "@ TXT \"v=spf1 \" \"-all\"\n"
                           "@ MX 10 mail\n"
                           "@ MX 20 backup.example.org.\n"
                           "mail A 192.0.2.1\n"
                           "mail A 192.0.2.2\n"
                           "mail AAAA 2001:db8::1\n"
                           "alias CNAME mail\n"
                           "1.2.0.192.in-addr PTR mail\n"
                           "*.many A 192.0.2.7\n"
                           "big TXT (\"" BIG250 "\" \"" BIG250 "\" \"" BIG250 "\" \"" BIG250
                           "\" \"" BIG250 "\" \"" BIG250 "\")\n";

static struct knot_fixture knot;
static struct dns_resolver *res;
static struct dns_lookup_ops ops;

static int setup(void **state)
{
	const struct knot_zone zones[] = {{"example.test", zone}, {NULL, NULL}};
	if (knot_start(&knot, zones) < 0) {
		fprintf(stderr, "knotd did not start\n");
		knot_stop(&knot);
		return -1;
	}
	struct dns_resolver_config cfg = {knot.server, 1000, 2};
	if (dns_resolver_new(&res, &cfg, NULL) < 0) return -1;
	dns_resolver_ops(res, &ops);
	return 0;
}

static int teardown(void **state)
{
	dns_resolver_free(res);
	knot_stop(&knot);
	return 0;
}

static void test_txt_strings_joined(void **state)
{
	struct dns_answer a;
	dns_lookup(&ops, "example.test", DNS_T_TXT, &a);
	assert_int_equal(a.status, DNS_LOOKUP_OK);
	assert_int_equal(a.n, 1);
	assert_string_equal(a.rr[0].data, "v=spf1 -all");
	assert_int_equal(a.rr[0].len, 11);
	dns_answer_free(&a);
}

static void test_mx_a_aaaa_ptr(void **state)
{
	struct dns_answer a;
	dns_lookup(&ops, "EXAMPLE.test.", DNS_T_MX, &a);
	assert_int_equal(a.status, DNS_LOOKUP_OK);
	assert_int_equal(a.n, 2);
	int saw10 = 0, saw20 = 0;
	for (size_t i = 0; i < a.n; i++) {
		if (a.rr[i].pref == 10) saw10 = !strcmp(a.rr[i].data, "mail.example.test");
		if (a.rr[i].pref == 20) saw20 = !strcmp(a.rr[i].data, "backup.example.org");
	}
	assert_true(saw10 && saw20);
	dns_answer_free(&a);

	dns_lookup(&ops, "mail.example.test", DNS_T_A, &a);
	assert_int_equal(a.status, DNS_LOOKUP_OK);
	assert_int_equal(a.n, 2);
	assert_int_equal(a.rr[0].len, 4);
	assert_int_equal((uint8_t)a.rr[0].data[0], 192);
	dns_answer_free(&a);

	dns_lookup(&ops, "mail.example.test", DNS_T_AAAA, &a);
	assert_int_equal(a.status, DNS_LOOKUP_OK);
	assert_int_equal(a.n, 1);
	assert_int_equal(a.rr[0].len, 16);
	assert_int_equal((uint8_t)a.rr[0].data[0], 0x20);
	assert_int_equal((uint8_t)a.rr[0].data[15], 1);
	dns_answer_free(&a);

	dns_lookup(&ops, "1.2.0.192.in-addr.example.test", DNS_T_PTR, &a);
	assert_int_equal(a.status, DNS_LOOKUP_OK);
	assert_string_equal(a.rr[0].data, "mail.example.test");
	dns_answer_free(&a);
}

/* 1500 bytes of TXT do not fit the 1232 bytes we advertise: the server
 * truncates, and the client must retry over TCP. */
static void test_truncated_retried_over_tcp(void **state)
{
	struct dns_answer a;
	dns_lookup(&ops, "big.example.test", DNS_T_TXT, &a);
	assert_int_equal(a.status, DNS_LOOKUP_OK);
	assert_int_equal(a.n, 1);
	assert_int_equal(a.rr[0].len, 1500);
	assert_memory_equal(a.rr[0].data + 1250, BIG250, 250);
	dns_answer_free(&a);
}

static void test_cname_followed(void **state)
{
	struct dns_answer a;
	dns_lookup(&ops, "alias.example.test", DNS_T_A, &a);
	assert_int_equal(a.status, DNS_LOOKUP_OK);
	assert_int_equal(a.n, 2);
	for (size_t i = 0; i < a.n; i++) assert_int_equal(a.rr[i].type, DNS_T_A);
	dns_answer_free(&a);
	dns_lookup(&ops, "alias.example.test", DNS_T_CNAME, &a);
	assert_int_equal(a.status, DNS_LOOKUP_OK);
	assert_string_equal(a.rr[0].data, "mail.example.test");
	dns_answer_free(&a);
}

static void test_rcodes(void **state)
{
	struct dns_answer a;
	dns_lookup(&ops, "nowhere.example.test", DNS_T_A, &a);
	assert_int_equal(a.status, DNS_LOOKUP_NXDOMAIN);
	assert_int_equal(a.rcode, DNS_R_NXDOMAIN);
	assert_int_equal(a.n, 0);
	dns_answer_free(&a);

	dns_lookup(&ops, "mail.example.test", DNS_T_TXT, &a);
	assert_int_equal(a.status, DNS_LOOKUP_NODATA);
	dns_answer_free(&a);

	/* Not a zone knotd serves: REFUSED, which SPF must see as an error. */
	dns_lookup(&ops, "example.org", DNS_T_TXT, &a);
	assert_int_equal(a.status, DNS_LOOKUP_SERVFAIL);
	assert_int_equal(a.rcode, DNS_R_REFUSED);
	dns_answer_free(&a);

	/* A name that cannot be sent at all. */
	char longlabel[80];
	memset(longlabel, 'a', 70);
	strcpy(longlabel + 70, ".test");
	dns_lookup(&ops, longlabel, DNS_T_A, &a);
	assert_int_equal(a.status, DNS_LOOKUP_ERROR);
	dns_answer_free(&a);
}

static void test_timeout(void **state)
{
	/* A socket that receives and never answers. */
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t sl = sizeof sa;
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &sl), 0);
	char server[32];
	snprintf(server, sizeof server, "127.0.0.1:%u", ntohs(sa.sin_port));
	struct dns_resolver *r;
	struct dns_resolver_config cfg = {server, 150, 1};
	assert_int_equal(dns_resolver_new(&r, &cfg, NULL), 0);
	struct dns_lookup_ops o;
	dns_resolver_ops(r, &o);
	struct dns_answer a;
	uint64_t t0 = base_mono_ns();
	dns_lookup(&o, "example.test", DNS_T_TXT, &a);
	assert_int_equal(a.status, DNS_LOOKUP_TIMEOUT);
	assert_true(base_mono_ns() - t0 < 2000000000ull);
	dns_answer_free(&a);
	dns_resolver_free(r);
	close(s);
}

struct many {
	unsigned ok, other;
};

static void on_many(void *arg, const char *name, uint16_t type, struct dns_answer *ans)
{
	struct many *m = arg;
	if (ans->status == DNS_LOOKUP_OK && ans->n == 1 && (uint8_t)ans->rr[0].data[3] == 7)
		m->ok++;
	else
		m->other++;
}

static void test_many_in_flight(void **state)
{
	struct many m = {0, 0};
	char name[64];
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof name, "h%d.many.example.test", i);
		assert_int_equal(dns_resolver_submit(res, name, DNS_T_A, on_many, &m, NULL), 0);
	}
	assert_int_equal(dns_resolver_pending(res), 300);
	dns_resolver_run(res);
	assert_int_equal(dns_resolver_pending(res), 0);
	assert_int_equal(m.ok, 300);
	assert_int_equal(m.other, 0);
}

static void test_bad_server(void **state)
{
	struct dns_resolver *r;
	struct base_err err;
	struct dns_resolver_config cfg = {"not-an-address:53", 0, 0};
	assert_int_equal(dns_resolver_new(&r, &cfg, &err), -1);
	assert_non_null(strstr(err.msg, "not-an-address"));
}

static void test_parse_malformed(void **state)
{
	struct dns_answer a;
	dns_answer_init(&a);
	/* A response header claiming one answer that is not there. */
	uint8_t m[] = {0, 1, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0};
	dns_answer_parse(m, sizeof m, DNS_T_A, &a);
	assert_int_equal(a.status, DNS_LOOKUP_ERROR);
	dns_answer_parse(m, 5, DNS_T_A, &a);
	assert_int_equal(a.status, DNS_LOOKUP_ERROR);
	/* A TXT whose string length runs past its RDATA. */
	uint8_t t[] = {0, 1,  0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0,   0,
	               0, 16, 0,    1,    0, 0, 0, 0, 0, 3, 5, 'a', 'b'};
	dns_answer_parse(t, sizeof t, DNS_T_TXT, &a);
	assert_int_equal(a.status, DNS_LOOKUP_ERROR);
	/* A query, not a response. */
	m[2] = 0x01;
	dns_answer_parse(m, sizeof m, DNS_T_A, &a);
	assert_int_equal(a.status, DNS_LOOKUP_ERROR);
	dns_answer_free(&a);
}

/* A response to "mx.t A": a CNAME to "R.t" (its owner a pointer to the
 * question), then the A record owned by R.t; and the same A record owned
 * by the question's name in another case. */
static void test_parse_cname_owner(void **state)
{
	uint8_t m[] = {0, 1, 0x81, 0xa0, 0, 1, 0, 2, 0, 0, 0, 0,
	               /* question at 12: mx.t A IN */
	               2, 'm', 'x', 1, 't', 0, 0, 1, 0, 1,
	               /* mx.t CNAME R.t (the owner a pointer to 12) */
	               0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 4, 1, 'R', 0xc0, 15,
	               /* R.t A 192.0.2.1 (the owner a pointer to the CNAME's data, at 34) */
	               0xc0, 34, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1};
	struct dns_answer a;
	dns_answer_init(&a);
	dns_answer_parse(m, sizeof m, DNS_T_A, &a);
	assert_int_equal(a.status, DNS_LOOKUP_OK);
	assert_int_equal(a.n, 1);
	assert_true(a.secure); /* the AD bit (0x20) */
	assert_non_null(a.canon);
	assert_string_equal(a.canon, "r.t");
	/* taken: the destination owns it, the source no longer does */
	struct dns_answer b;
	dns_answer_take(&b, &a);
	assert_null(a.canon);
	assert_string_equal(b.canon, "r.t");
	dns_answer_free(&b);
	assert_null(b.canon);
	/* the A record at the name asked for, in other case: no canon */
	uint8_t d[] = {0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0,
	               2, 'm', 'x', 1, 't', 0, 0, 1, 0, 1,
	               2, 'M', 'X', 1, 'T', 0, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 2};
	dns_answer_parse(d, sizeof d, DNS_T_A, &a);
	assert_int_equal(a.status, DNS_LOOKUP_OK);
	assert_null(a.canon);
	dns_answer_free(&a);
}

static void test_memzone(void **state)
{
	struct dns_memzone *z = dns_memzone_new();
	struct dns_lookup_ops o;
	dns_memzone_ops(z, &o);
	assert_int_equal(dns_memzone_add(z, "A.example.", DNS_T_TXT, 0, "hi", 2, NULL), 0);
	assert_int_equal(dns_memzone_add(z, "c.example", DNS_T_CNAME, 0, "a.example.", 10, NULL),
	                 0);
	assert_int_equal(
	    dns_memzone_add(z, "loop.example", DNS_T_CNAME, 0, "loop.example", 12, NULL), 0);
	assert_int_equal(dns_memzone_add_timeout(z, "t.example", NULL), 0);
	struct dns_answer a;
	dns_lookup(&o, "a.EXAMPLE", DNS_T_TXT, &a);
	assert_int_equal(a.status, DNS_LOOKUP_OK);
	assert_string_equal(a.rr[0].data, "hi");
	dns_answer_free(&a);
	dns_lookup(&o, "c.example", DNS_T_TXT, &a);
	assert_int_equal(a.status, DNS_LOOKUP_OK);
	dns_answer_free(&a);
	dns_lookup(&o, "a.example", DNS_T_A, &a);
	assert_int_equal(a.status, DNS_LOOKUP_NODATA);
	dns_lookup(&o, "b.example", DNS_T_A, &a);
	assert_int_equal(a.status, DNS_LOOKUP_NXDOMAIN);
	dns_lookup(&o, "t.example", DNS_T_A, &a);
	assert_int_equal(a.status, DNS_LOOKUP_TIMEOUT);
	dns_lookup(&o, "loop.example", DNS_T_A, &a);
	assert_int_equal(a.status, DNS_LOOKUP_SERVFAIL);
	assert_int_equal(dns_memzone_queries(z), 6);
	dns_memzone_free(z);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_txt_strings_joined),
	    cmocka_unit_test(test_mx_a_aaaa_ptr),
	    cmocka_unit_test(test_cname_followed),
	    cmocka_unit_test(test_rcodes),
	    cmocka_unit_test(test_timeout),
	    cmocka_unit_test(test_many_in_flight),
	    cmocka_unit_test(test_bad_server),
	    cmocka_unit_test(test_parse_malformed),
	    cmocka_unit_test(test_parse_cname_owner),
	    cmocka_unit_test(test_memzone),
	    cmocka_unit_test(test_truncated_retried_over_tcp),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
