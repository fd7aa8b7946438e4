/*
 * test_relay_dane.c — DANE's parsing: TLSA RDATA (usable, unusable and
 * malformed records), the AD flag of a response as dns_answer_parse reads
 * it (with RRSIGs beside the TLSA records, as a validating resolver asked
 * with DO sends them), what a TLSA answer means for an MX host
 * (relay_dane_from_answer), and OpenSSL taking the usable records.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dns/dns.h"
#include "relay/dane.h"

/* A response to "_25._tcp.mx.example. TLSA" with the given flags and
 * answer records (type, rdata, length), owner a pointer to the question. */
struct rec {
	uint16_t type;
	const uint8_t *rd;
	size_t len;
};

static size_t build(uint8_t *m, size_t cap, uint16_t flags, const struct rec *r, size_t n)
{
	static const uint8_t q[] = "\x03_25\x04_tcp\x02mx\x07"
	                           "example";
	size_t o = DNS_HDR_SIZE;
	memset(m, 0, DNS_HDR_SIZE);
	dns_put16(m + 2, flags);
	dns_put16(m + 4, 1);
	dns_put16(m + 6, (uint16_t)n);
	memcpy(m + o, q, sizeof q); /* with its final 0: the root label */
	o += sizeof q;
	dns_put16(m + o, DNS_T_TLSA);
	dns_put16(m + o + 2, DNS_C_IN);
	o += 4;
	for (size_t i = 0; i < n; i++) {
		assert_true(o + 12 + r[i].len <= cap);
		dns_put16(m + o, 0xC000 | DNS_HDR_SIZE);
		dns_put16(m + o + 2, r[i].type);
		dns_put16(m + o + 4, DNS_C_IN);
		dns_put32(m + o + 6, 300);
		dns_put16(m + o + 10, (uint16_t)r[i].len);
		memcpy(m + o + 12, r[i].rd, r[i].len);
		o += 12 + r[i].len;
	}
	return o;
}

static uint8_t ee[35] = {3, 1, 1}; /* 3 1 1 and a 32-byte digest */
static uint8_t ta[35] = {2, 0, 1};
static uint8_t pkix[35] = {1, 1, 1};
static const uint8_t rrsig[] = {0, 52, 13, 4, 0, 0, 1, 44, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0};

static void test_tlsa_parse(void **state)
{
	struct relay_tlsa t;
	const char *why = NULL;
	memset(ee + 3, 0xab, 32);
	assert_int_equal(relay_tlsa_parse(ee, sizeof ee, &t, &why), 1);
	assert_int_equal(t.usage, 3);
	assert_int_equal(t.selector, 1);
	assert_int_equal(t.mtype, 1);
	assert_int_equal(t.len, 32);
	assert_ptr_equal(t.data, ee + 3);
	assert_int_equal(relay_tlsa_parse(ta, sizeof ta, &t, &why), 1);
	/* a full certificate (matching type 0) of any length up to the bound */
	uint8_t full[3 + 600] = {2, 0, 0};
	assert_int_equal(relay_tlsa_parse(full, sizeof full, &t, &why), 1);
	assert_int_equal(t.len, 600);
	/* SHA-512: 64 bytes exactly */
	uint8_t sha512[3 + 64] = {3, 0, 2};
	assert_int_equal(relay_tlsa_parse(sha512, sizeof sha512, &t, &why), 1);
	assert_int_equal(relay_tlsa_parse(sha512, sizeof sha512 - 1, &t, &why), 0);
	assert_string_equal(why, "TLSA digest of the wrong length for its matching type");
	/* unusable for SMTP, well formed */
	assert_int_equal(relay_tlsa_parse(pkix, sizeof pkix, &t, &why), 0);
	assert_string_equal(why, "TLSA usage 0 or 1 (PKIX) is unusable for SMTP");
	uint8_t u[35] = {4, 1, 1};
	assert_int_equal(relay_tlsa_parse(u, sizeof u, &t, &why), 0);
	assert_string_equal(why, "TLSA usage unknown");
	u[0] = 3, u[1] = 2;
	assert_int_equal(relay_tlsa_parse(u, sizeof u, &t, &why), 0);
	assert_string_equal(why, "TLSA selector unknown");
	u[1] = 1, u[2] = 3;
	assert_int_equal(relay_tlsa_parse(u, sizeof u, &t, &why), 0);
	assert_string_equal(why, "TLSA matching type unknown");
	u[2] = 1;
	assert_int_equal(relay_tlsa_parse(u, 34, &t, &why), 0);
	uint8_t *big = calloc(1, 3 + RELAY_TLSA_DATA_MAX + 1);
	big[0] = 3;
	assert_int_equal(relay_tlsa_parse(big, 3 + RELAY_TLSA_DATA_MAX, &t, &why), 1);
	assert_int_equal(relay_tlsa_parse(big, 3 + RELAY_TLSA_DATA_MAX + 1, &t, &why), 0);
	assert_string_equal(why, "TLSA association data too long");
	free(big);
	/* malformed */
	assert_int_equal(relay_tlsa_parse(u, 0, &t, &why), -1);
	assert_int_equal(relay_tlsa_parse(u, 2, &t, &why), -1);
	assert_string_equal(why, "TLSA record shorter than its 3 fixed bytes");
	assert_int_equal(relay_tlsa_parse(u, 3, &t, &why), -1);
	assert_string_equal(why, "TLSA record without association data");
}

static void test_answer_ad(void **state)
{
	uint8_t m[2048];
	struct dns_answer a;
	dns_answer_init(&a);
	const struct rec rs[] = {{DNS_T_TLSA, ee, sizeof ee}, {46, rrsig, sizeof rrsig}};
	size_t n = build(m, sizeof m, DNS_F_QR | DNS_F_RD | DNS_F_RA | DNS_F_AD, rs, 2);
	dns_answer_parse(m, n, DNS_T_TLSA, &a);
	assert_int_equal(a.status, DNS_LOOKUP_OK);
	assert_int_equal(a.secure, 1);
	assert_int_equal(a.n, 1); /* the RRSIG left out */
	assert_int_equal(a.rr[0].type, DNS_T_TLSA);
	assert_int_equal(a.rr[0].len, sizeof ee);
	assert_memory_equal(a.rr[0].data, ee, sizeof ee);
	/* the same without AD */
	n = build(m, sizeof m, DNS_F_QR | DNS_F_RD | DNS_F_RA, rs, 2);
	dns_answer_parse(m, n, DNS_T_TLSA, &a);
	assert_int_equal(a.status, DNS_LOOKUP_OK);
	assert_int_equal(a.secure, 0);
	/* a secure denial: NODATA with AD */
	n = build(m, sizeof m, DNS_F_QR | DNS_F_AD, NULL, 0);
	dns_answer_parse(m, n, DNS_T_TLSA, &a);
	assert_int_equal(a.status, DNS_LOOKUP_NODATA);
	assert_int_equal(a.secure, 1);
	/* SERVFAIL (bogus at a validating resolver) */
	n = build(m, sizeof m, DNS_F_QR | DNS_R_SERVFAIL, NULL, 0);
	dns_answer_parse(m, n, DNS_T_TLSA, &a);
	assert_int_equal(a.status, DNS_LOOKUP_SERVFAIL);
	assert_int_equal(a.secure, 0);
	dns_answer_free(&a);
}

static struct relay_dane *from(uint16_t flags, const struct rec *rs, size_t n)
{
	uint8_t m[8192];
	struct dns_answer a;
	dns_answer_init(&a);
	size_t len = build(m, sizeof m, flags, rs, n);
	dns_answer_parse(m, len, DNS_T_TLSA, &a);
	struct relay_dane *d = relay_dane_from_answer("mx.example", &a);
	dns_answer_free(&a);
	return d;
}

static void test_dane_from_answer(void **state)
{
	const uint16_t sec = DNS_F_QR | DNS_F_AD;
	const uint8_t shortrec[] = {3, 1};
	const struct rec mixed[] = {{DNS_T_TLSA, pkix, sizeof pkix},
	                            {DNS_T_TLSA, shortrec, sizeof shortrec},
	                            {DNS_T_TLSA, ee, sizeof ee},
	                            {DNS_T_TLSA, ta, sizeof ta}};
	/* secure: the usable records kept, copied */
	struct relay_dane *d = from(sec, mixed, 4);
	assert_non_null(d);
	assert_int_equal(d->state, RELAY_DANE_USABLE);
	assert_string_equal(d->host, "mx.example");
	assert_int_equal(d->n, 2);
	assert_int_equal(d->rr[0].usage, 3);
	assert_int_equal(d->rr[1].usage, 2);
	assert_memory_equal(d->rr[0].data, ee + 3, 32);
	assert_ptr_equal(relay_dane_ref(d), d);
	assert_int_equal(d->refs, 2);
	relay_dane_unref(d);
	relay_dane_unref(d);
	/* insecure: DANE does not apply */
	assert_null(from(DNS_F_QR, mixed, 4));
	/* secure but none usable: TLS without authentication */
	d = from(sec, mixed, 2);
	assert_non_null(d);
	assert_int_equal(d->state, RELAY_DANE_UNUSABLE);
	assert_int_equal(d->n, 0);
	relay_dane_unref(d);
	/* no records, secure or not, and NXDOMAIN: DANE does not apply */
	assert_null(from(sec, NULL, 0));
	assert_null(from(sec | DNS_R_NXDOMAIN, NULL, 0));
	/* SERVFAIL: the host cannot be used, and the reply says why */
	d = from(DNS_F_QR | DNS_R_SERVFAIL, NULL, 0);
	assert_non_null(d);
	assert_int_equal(d->state, RELAY_DANE_FAIL);
	assert_string_equal(d->why, "451 4.7.5 DANE: TLSA lookup for mx.example failed (servfail: "
	                            "server answered SERVFAIL)");
	relay_dane_unref(d);
	/* at most RELAY_TLSA_MAX usable records are kept */
	struct rec many[RELAY_TLSA_MAX + 4];
	for (size_t i = 0; i < RELAY_TLSA_MAX + 4; i++)
		many[i] = (struct rec){DNS_T_TLSA, ee, sizeof ee};
	d = from(sec, many, RELAY_TLSA_MAX + 4);
	assert_int_equal(d->n, RELAY_TLSA_MAX);
	relay_dane_unref(d);
	relay_dane_unref(NULL);
}

static void test_dane_ssl(void **state)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(ctx);
	assert_true(SSL_CTX_dane_enable(ctx) > 0);
	const struct rec one[] = {{DNS_T_TLSA, ee, sizeof ee}};
	struct relay_dane *d = from(DNS_F_QR | DNS_F_AD, one, 1);
	SSL *ssl = SSL_new(ctx);
	assert_int_equal(relay_dane_ssl(ssl, d), 0);
	assert_int_equal(relay_dane_matched(ssl), -1); /* no handshake yet */
	SSL_free(ssl);
	relay_dane_unref(d);
	SSL_CTX_free(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tlsa_parse),
	    cmocka_unit_test(test_answer_ad),
	    cmocka_unit_test(test_dane_from_answer),
	    cmocka_unit_test(test_dane_ssl),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
