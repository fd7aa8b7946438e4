/*
 * test_dns.c — unit tests for src/dns: names in text and wire form
 * (escapes, case folding, length limits, subdomain tests), query parsing
 * on hand-built packets (counts, truncation, EDNS, compression in the
 * question, pointer loops), the generic message reader, and the response
 * builder (compression, rollback when the limit is hit, OPT, error
 * replies) checked by reading its output back with dns_read_rr.
 *
 * Packets are assembled byte by byte with the small `pk_*` writers below,
 * so that every test states exactly what is on the wire.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns/dns.h"

/* ---- packet writers ---------------------------------------------------- */

struct pk {
	uint8_t b[70000];
	size_t len;
};

static void pk_bytes(struct pk *p, const void *d, size_t n)
{
	assert_true(p->len + n <= sizeof p->b);
	memcpy(p->b + p->len, d, n);
	p->len += n;
}

static void pk_u8(struct pk *p, uint8_t v)
{
	pk_bytes(p, &v, 1);
}

static void pk_u16(struct pk *p, uint16_t v)
{
	uint8_t x[2];
	dns_put16(x, v);
	pk_bytes(p, x, 2);
}

static void pk_u32(struct pk *p, uint32_t v)
{
	uint8_t x[4];
	dns_put32(x, v);
	pk_bytes(p, x, 4);
}

/* A name in wire form, case kept. */
static void pk_name(struct pk *p, const char *text)
{
	struct dns_name n;
	struct base_err e;
	if (dns_name_from_text(&n, text, 0, &e) < 0) fail_msg("bad test name %s: %s", text, e.msg);
	pk_bytes(p, n.wire, n.len);
}

static void pk_header(struct pk *p, uint16_t id, uint16_t flags, uint16_t qd, uint16_t an,
                      uint16_t ns, uint16_t ar)
{
	p->len = 0;
	pk_u16(p, id);
	pk_u16(p, flags);
	pk_u16(p, qd);
	pk_u16(p, an);
	pk_u16(p, ns);
	pk_u16(p, ar);
}

/* An OPT RR: root owner, class = udp size, TTL = ext rcode/version/DO. */
static void pk_opt(struct pk *p, uint16_t udp, uint8_t version, int do_bit, const void *rdata,
                   uint16_t rdlen)
{
	pk_u8(p, 0);
	pk_u16(p, DNS_T_OPT);
	pk_u16(p, udp);
	pk_u32(p, ((uint32_t)version << 16) | (do_bit ? 0x8000u : 0));
	pk_u16(p, rdlen);
	if (rdlen) pk_bytes(p, rdata, rdlen);
}

/* A simple query: one question, optionally an OPT. */
static void pk_query(struct pk *p, uint16_t id, const char *name, uint16_t qtype, int edns_version)
{
	pk_header(p, id, DNS_F_RD, 1, 0, 0, edns_version >= 0 ? 1 : 0);
	pk_name(p, name);
	pk_u16(p, qtype);
	pk_u16(p, DNS_C_IN);
	if (edns_version >= 0) pk_opt(p, 4096, (uint8_t)edns_version, 1, NULL, 0);
}

static void name_of(struct dns_name *n, const char *text)
{
	struct base_err e;
	if (dns_name_from_text(n, text, 1, &e) < 0) fail_msg("bad test name %s: %s", text, e.msg);
}

static void wire_text(const uint8_t *wire, char *out, size_t sz)
{
	assert_true(dns_name_to_text(wire, out, sz) >= 0);
}

/* ---- names: text to wire and back -------------------------------------- */

static void test_name_basic(void **state)
{
	(void)state;
	struct dns_name n;
	struct base_err e;
	assert_int_equal(dns_name_from_text(&n, "www.Example.COM", 1, &e), 0);
	assert_int_equal(n.len, 17);
	assert_int_equal(n.nlabels, 3);
	assert_memory_equal(n.wire, "\3www\7example\3com\0", 17);
	assert_int_equal(n.label[0], 0);
	assert_int_equal(n.label[1], 4);
	assert_int_equal(n.label[2], 12);

	/* without folding the case is kept */
	assert_int_equal(dns_name_from_text(&n, "www.Example.COM", 0, &e), 0);
	assert_memory_equal(n.wire, "\3www\7Example\3COM\0", 17);

	/* a trailing dot changes nothing */
	struct dns_name m;
	assert_int_equal(dns_name_from_text(&m, "www.Example.COM.", 0, &e), 0);
	assert_int_equal(m.len, n.len);
	assert_memory_equal(m.wire, n.wire, n.len);

	/* the root, written either way */
	assert_int_equal(dns_name_from_text(&n, ".", 1, &e), 0);
	assert_int_equal(n.len, 1);
	assert_int_equal(n.nlabels, 0);
	assert_int_equal(n.wire[0], 0);
	assert_int_equal(dns_name_from_text(&n, "", 1, &e), 0);
	assert_int_equal(n.len, 1);
	assert_int_equal(n.nlabels, 0);

	char t[300];
	assert_int_equal(dns_name_to_text(n.wire, t, sizeof t), 1);
	assert_string_equal(t, ".");
}

static void test_name_roundtrip(void **state)
{
	(void)state;
	static const char *names[] = {
	    "a",
	    "example.com",
	    "2.0.0.127.bl.example",
	    "x-y_z.example",
	    "a\\.b.example",
	    "back\\\\slash.test",
	    "sp\\032ace.test",
	    "nul\\000byte.test",
	    "hi\\255gh.test",
	    "q\\\"uote.test",
	    "semi\\;colon.test",
	    "dollar\\$.test",
	    "at\\@.test",
	    "paren\\(\\).test",
	    "*.wild.test",
	};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		struct dns_name n, m;
		struct base_err e;
		char t[1100];
		if (dns_name_from_text(&n, names[i], 0, &e) < 0)
			fail_msg("'%s': %s", names[i], e.msg);
		int len = dns_name_to_text(n.wire, t, sizeof t);
		assert_int_equal(len, (int)strlen(t));
		if (strcmp(t, names[i])) fail_msg("'%s' came back as '%s'", names[i], t);
		assert_int_equal(dns_name_from_text(&m, t, 0, &e), 0);
		assert_int_equal(m.len, n.len);
		assert_memory_equal(m.wire, n.wire, n.len);
	}
}

static void test_name_escapes(void **state)
{
	(void)state;
	struct dns_name n;
	struct base_err e;

	/* \. is a dot inside a label */
	assert_int_equal(dns_name_from_text(&n, "a\\.b.c", 0, &e), 0);
	assert_int_equal(n.nlabels, 2);
	assert_memory_equal(n.wire, "\3a.b\1c\0", 7);

	/* \DDD is a decimal byte; folding applies to the decoded byte */
	assert_int_equal(dns_name_from_text(&n, "\\065bc", 0, &e), 0);
	assert_memory_equal(n.wire, "\3Abc\0", 5);
	assert_int_equal(dns_name_from_text(&n, "\\065bc", 1, &e), 0);
	assert_memory_equal(n.wire, "\3abc\0", 5);
	assert_int_equal(dns_name_from_text(&n, "x\\000y", 0, &e), 0);
	assert_int_equal(n.len, 5);
	assert_memory_equal(n.wire, "\3x\0y\0", 5);
	assert_int_equal(dns_name_from_text(&n, "\\255", 0, &e), 0);
	assert_int_equal(n.wire[1], 255);
	/* fewer than three digits: an ordinary escaped character */
	assert_int_equal(dns_name_from_text(&n, "\\12", 0, &e), 0);
	assert_memory_equal(n.wire,
	                    "\2"
	                    "12\0",
	                    4);

	e.msg[0] = '\0';
	assert_int_equal(dns_name_from_text(&n, "\\256", 0, &e), -1);
	assert_non_null(strstr(e.msg, "escape"));
	assert_int_equal(dns_name_from_text(&n, "\\999.x", 0, &e), -1);
	assert_int_equal(dns_name_from_text(&n, "abc\\", 0, &e), -1);
	assert_non_null(strstr(e.msg, "backslash"));

	/* unprintable bytes come out as \DDD, upper case stays */
	char t[64];
	assert_int_equal(dns_name_to_text((const uint8_t *)"\3a\tB\1\x7f\0", t, sizeof t), 11);
	assert_string_equal(t, "a\\009B.\\127");
}

static void test_name_to_text_small_buffer(void **state)
{
	(void)state;
	struct dns_name n;
	name_of(&n, "example.com");
	char t[64];
	assert_int_equal(dns_name_to_text(n.wire, t, sizeof t), 11);
	assert_string_equal(t, "example.com");
	/* the check is conservative (room for one \DDD escape is kept), but
	 * a buffer one byte short of the text is always refused */
	assert_int_equal(dns_name_to_text(n.wire, t, 11), -1);
	assert_int_equal(dns_name_to_text(n.wire, t, 5), -1);
	assert_int_equal(dns_name_to_text(n.wire, t, 1), -1);
	assert_int_equal(dns_name_to_text((const uint8_t *)"", t, 1), -1); /* "." needs 2 */
	/* the worst case: every byte escaped as \DDD */
	uint8_t w[DNS_NAME_MAX + 1];
	size_t o = 0;
	for (int l = 0; l < 4; l++) {
		w[o++] = l < 3 ? 63 : 61;
		memset(w + o, 0x01, w[o - 1]);
		o += w[o - 1];
	}
	w[o++] = 0;
	assert_int_equal(o, 255);
	char big[DNS_NAME_MAX * 4 + 1];
	assert_int_equal(dns_name_to_text(w, big, sizeof big), 250 * 4 + 3);
	assert_memory_equal(big, "\\001\\001", 8);
}

static void test_name_limits(void **state)
{
	(void)state;
	struct dns_name n;
	struct base_err e;
	char text[400];

	/* a 63-byte label is fine, 64 is not */
	memset(text, 'a', 63);
	strcpy(text + 63, ".test");
	assert_int_equal(dns_name_from_text(&n, text, 1, &e), 0);
	assert_int_equal(n.wire[0], 63);
	memset(text, 'a', 64);
	strcpy(text + 64, ".test");
	e.msg[0] = '\0';
	assert_int_equal(dns_name_from_text(&n, text, 1, &e), -1);
	assert_non_null(strstr(e.msg, "63"));
	/* an escaped byte counts once */
	size_t o = 0;
	for (int i = 0; i < 63; i++) o += (size_t)sprintf(text + o, "\\046");
	strcpy(text + o, ".x");
	assert_int_equal(dns_name_from_text(&n, text, 1, &e), 0);
	assert_int_equal(n.wire[0], 63);
	assert_int_equal(n.wire[1], '.');

	/* 255 bytes in wire form (63+63+63+61 byte labels) is the most */
	o = 0;
	for (int l = 0; l < 4; l++) {
		int ll = l < 3 ? 63 : 61;
		memset(text + o, 'a' + l, (size_t)ll);
		o += (size_t)ll;
		text[o++] = '.';
	}
	text[o - 1] = '\0';
	assert_int_equal(dns_name_from_text(&n, text, 1, &e), 0);
	assert_int_equal(n.len, 255);
	assert_int_equal(n.nlabels, 4);
	/* with a trailing dot too */
	text[o - 1] = '.';
	text[o] = '\0';
	assert_int_equal(dns_name_from_text(&n, text, 1, &e), 0);
	assert_int_equal(n.len, 255);

	/* 257 bytes: rejected */
	o = 0;
	for (int l = 0; l < 4; l++) {
		memset(text + o, 'a' + l, 63);
		o += 63;
		text[o++] = '.';
	}
	text[o - 1] = '\0';
	e.msg[0] = '\0';
	assert_int_equal(dns_name_from_text(&n, text, 1, &e), -1);
	assert_non_null(strstr(e.msg, "255"));

	/* many short labels: 127 one-byte labels is 255 bytes, 128 is too many */
	o = 0;
	for (int l = 0; l < 127; l++) {
		text[o++] = 'x';
		text[o++] = '.';
	}
	text[o - 1] = '\0';
	assert_int_equal(dns_name_from_text(&n, text, 1, &e), 0);
	assert_int_equal(n.nlabels, 127);
	assert_int_equal(n.len, 255);
	assert_int_equal(n.label[126], 252);
	text[o - 1] = '.';
	text[o++] = 'x';
	text[o] = '\0';
	assert_int_equal(dns_name_from_text(&n, text, 1, &e), -1);
}

/* Regression test for a fixed bug, as it was: a name whose wire form is exactly 256 bytes
 * (labels of 63, 63, 63 and 62 bytes) is accepted. The check before the
 * final root byte tests `out >= DNS_NAME_MAX + 1` where `out > DNS_NAME_MAX - 1`
 * is needed; dns_name_index then stores len = (uint8_t)256 = 0, so the name
 * claims to be zero bytes long. */
static void test_name_256_bytes_rejected(void **state)
{
	(void)state;
	struct dns_name n;
	struct base_err e;
	char text[300];
	size_t o = 0;
	for (int l = 0; l < 4; l++) {
		int ll = l < 3 ? 63 : 62;
		memset(text + o, 'a' + l, (size_t)ll);
		o += (size_t)ll;
		text[o++] = '.';
	}
	text[o - 1] = '\0';
	int r = dns_name_from_text(&n, text, 1, &e);
	if (r == 0) fail_msg("a 256-byte name was accepted (len field = %u)", n.len);
}

static void test_name_empty_label(void **state)
{
	(void)state;
	static const char *bad[] = {"a..b", ".a", "..", "a.b..", "..a"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct dns_name n;
		struct base_err e;
		e.msg[0] = '\0';
		if (dns_name_from_text(&n, bad[i], 1, &e) != -1) fail_msg("'%s' accepted", bad[i]);
		assert_non_null(strstr(e.msg, "empty label"));
	}
}

static void test_name_index(void **state)
{
	(void)state;
	struct dns_name n;
	memcpy(n.wire, "\1a\2bb\3ccc\0", 10);
	n.len = 0;
	n.nlabels = 99;
	dns_name_index(&n);
	assert_int_equal(n.len, 10);
	assert_int_equal(n.nlabels, 3);
	assert_int_equal(n.label[0], 0);
	assert_int_equal(n.label[1], 2);
	assert_int_equal(n.label[2], 5);
}

static void test_subdomain(void **state)
{
	(void)state;
	struct dns_name a, b, root;
	name_of(&root, ".");

	name_of(&a, "example.com");
	name_of(&b, "example.com");
	assert_true(dns_name_is_subdomain(&a, &b)); /* equal names */

	name_of(&a, "a.b.example.com");
	assert_true(dns_name_is_subdomain(&a, &b));
	assert_false(dns_name_is_subdomain(&b, &a));

	name_of(&a, "badexample.com"); /* suffix as text, not as labels */
	assert_false(dns_name_is_subdomain(&a, &b));
	name_of(&a, "www.badexample.com");
	assert_false(dns_name_is_subdomain(&a, &b));
	name_of(&a, "example.org");
	assert_false(dns_name_is_subdomain(&a, &b));
	name_of(&a, "com");
	assert_false(dns_name_is_subdomain(&a, &b));
	name_of(&a, "www.example.com.au");
	assert_false(dns_name_is_subdomain(&a, &b));

	/* everything is below the root, the root included */
	assert_true(dns_name_is_subdomain(&b, &root));
	name_of(&a, "com");
	assert_true(dns_name_is_subdomain(&a, &root));
	name_of(&a, "a.b.c.d.e.f");
	assert_true(dns_name_is_subdomain(&a, &root));
	assert_true(dns_name_is_subdomain(&root, &root));
	assert_false(dns_name_is_subdomain(&root, &b));

	/* labels that contain dots are compared as labels */
	name_of(&a, "x.a\\.b");
	name_of(&b, "b");
	assert_false(dns_name_is_subdomain(&a, &b));
	name_of(&b, "a\\.b");
	assert_true(dns_name_is_subdomain(&a, &b));
}

/* ---- query parsing ----------------------------------------------------- */

static void test_parse_valid_a(void **state)
{
	(void)state;
	struct pk p;
	pk_query(&p, 0xbeef, "2.0.0.127.BL.Example", DNS_T_A, -1);
	struct dns_query q;
	const char *why = "unset";
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_OK);
	assert_null(why);
	assert_int_equal(q.id, 0xbeef);
	assert_int_equal(q.flags, DNS_F_RD);
	assert_int_equal(q.opcode, DNS_OP_QUERY);
	assert_int_equal(q.qtype, DNS_T_A);
	assert_int_equal(q.qclass, DNS_C_IN);
	assert_int_equal(q.qname.nlabels, 6);
	assert_int_equal(q.qname.len, 22);
	assert_memory_equal(q.qname.wire, "\0012\0010\0010\003127\002bl\007example\0", 22);
	assert_memory_equal(q.qname_case, "\0012\0010\0010\003127\002BL\007Example\0", 22);
	assert_int_equal(q.question_end, 12 + 22 + 4);
	assert_int_equal(q.question_end, p.len);
	assert_int_equal(q.edns, 0);
	assert_int_equal(q.has_ixfr_serial, 0);

	/* the root as the question name */
	pk_query(&p, 1, ".", DNS_T_NS, -1);
	assert_int_equal(dns_parse_query(p.b, p.len, &q, NULL), DNS_PARSE_OK);
	assert_int_equal(q.qname.len, 1);
	assert_int_equal(q.qname.nlabels, 0);

	/* trailing bytes after the counted records are tolerated */
	pk_query(&p, 2, "x.test", DNS_T_TXT, -1);
	pk_bytes(&p, "garbage", 7);
	assert_int_equal(dns_parse_query(p.b, p.len, &q, NULL), DNS_PARSE_OK);
	assert_int_equal(q.qtype, DNS_T_TXT);
	assert_int_equal(q.question_end, p.len - 7);
}

static void test_parse_drop(void **state)
{
	(void)state;
	struct pk p;
	struct dns_query q;
	const char *why;
	pk_query(&p, 7, "x.test", DNS_T_A, -1);
	for (size_t n = 0; n < DNS_HDR_SIZE; n++) {
		why = NULL;
		assert_int_equal(dns_parse_query(p.b, n, &q, &why), DNS_PARSE_DROP);
		assert_non_null(why);
	}
	/* a response is never answered */
	p.b[2] |= 0x80;
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_DROP);
	assert_non_null(strstr(why, "response"));
}

static void test_parse_opcodes(void **state)
{
	(void)state;
	struct pk p;
	struct dns_query q;
	const char *why;
	pk_query(&p, 7, "x.test", DNS_T_SOA, -1);
	dns_put16(p.b + 2, (uint16_t)(DNS_OP_NOTIFY << 11) | DNS_F_AA);
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_OK);
	assert_int_equal(q.opcode, DNS_OP_NOTIFY);
	static const unsigned notimp[] = {1, 2, 3, DNS_OP_UPDATE, 6, 15};
	for (size_t i = 0; i < sizeof notimp / sizeof notimp[0]; i++) {
		dns_put16(p.b + 2, (uint16_t)(notimp[i] << 11));
		assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_NOTIMP);
		assert_int_equal(q.opcode, notimp[i]);
		assert_int_equal(q.id, 7);
	}
}

static void test_parse_qdcount(void **state)
{
	(void)state;
	struct pk p;
	struct dns_query q;
	const char *why;
	/* two questions */
	pk_header(&p, 0x4242, 0, 2, 0, 0, 0);
	pk_name(&p, "a.test");
	pk_u16(&p, DNS_T_A);
	pk_u16(&p, DNS_C_IN);
	pk_name(&p, "b.test");
	pk_u16(&p, DNS_T_A);
	pk_u16(&p, DNS_C_IN);
	why = NULL;
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_FORMERR);
	assert_int_equal(q.id, 0x4242); /* the header was readable: id kept for the reply */
	assert_non_null(why);
	/* no question */
	pk_header(&p, 0x4243, 0, 0, 0, 0, 0);
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_FORMERR);
	assert_int_equal(q.id, 0x4243);
}

static void test_parse_truncated(void **state)
{
	(void)state;
	struct pk p;
	struct dns_query q;
	const char *why;
	pk_query(&p, 9, "abc.example", DNS_T_A, -1);
	/* every cut between the header and the end of the question */
	for (size_t n = DNS_HDR_SIZE; n < p.len; n++) {
		why = NULL;
		int r = dns_parse_query(p.b, n, &q, &why);
		if (r != DNS_PARSE_FORMERR) fail_msg("cut at %zu gave %d", n, r);
		assert_non_null(why);
		assert_int_equal(q.id, 9);
	}
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_OK);

	/* an additional record announced but missing */
	pk_query(&p, 9, "abc.example", DNS_T_A, -1);
	p.b[11] = 1;
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_FORMERR);
	assert_non_null(strstr(why, "additional"));
	/* an OPT whose RDATA runs past the end */
	pk_query(&p, 9, "abc.example", DNS_T_A, 0);
	p.b[p.len - 1] = 4;
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_FORMERR);
	/* answer and authority records announced but missing */
	pk_query(&p, 9, "abc.example", DNS_T_A, -1);
	p.b[7] = 1;
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_FORMERR);
	assert_non_null(strstr(why, "answer"));
	pk_query(&p, 9, "abc.example", DNS_T_A, -1);
	p.b[9] = 1;
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_FORMERR);
	assert_non_null(strstr(why, "authority"));
}

static void test_parse_bad_question_name(void **state)
{
	(void)state;
	struct pk p;
	struct dns_query q;
	const char *why;

	/* compression is not allowed in the question, even a pointer to itself */
	pk_header(&p, 1, 0, 1, 0, 0, 0);
	pk_u8(&p, 0xc0);
	pk_u8(&p, 12);
	pk_u16(&p, DNS_T_A);
	pk_u16(&p, DNS_C_IN);
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_FORMERR);
	assert_non_null(strstr(why, "compressed"));

	/* a pointer after a label, to earlier in the name */
	pk_header(&p, 1, 0, 1, 0, 0, 0);
	pk_bytes(&p, "\3abc\xc0\x0c", 6);
	pk_u16(&p, DNS_T_A);
	pk_u16(&p, DNS_C_IN);
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_FORMERR);

	/* extended label types 0x40 and 0x80 */
	pk_header(&p, 1, 0, 1, 0, 0, 0);
	pk_bytes(&p,
	         "\x41"
	         "a\0",
	         3);
	pk_u16(&p, DNS_T_A);
	pk_u16(&p, DNS_C_IN);
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_FORMERR);
	p.b[12] = 0x81;
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_FORMERR);

	/* a name longer than 255 bytes */
	pk_header(&p, 1, 0, 1, 0, 0, 0);
	for (int l = 0; l < 5; l++) {
		pk_u8(&p, 63);
		for (int i = 0; i < 63; i++) pk_u8(&p, 'a');
	}
	pk_u8(&p, 0);
	pk_u16(&p, DNS_T_A);
	pk_u16(&p, DNS_C_IN);
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_FORMERR);
	assert_non_null(strstr(why, "too long"));

	/* exactly 255 bytes is fine */
	pk_header(&p, 1, 0, 1, 0, 0, 0);
	for (int l = 0; l < 4; l++) {
		int ll = l < 3 ? 63 : 61;
		pk_u8(&p, (uint8_t)ll);
		for (int i = 0; i < ll; i++) pk_u8(&p, 'a');
	}
	pk_u8(&p, 0);
	pk_u16(&p, DNS_T_A);
	pk_u16(&p, DNS_C_IN);
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_OK);
	assert_int_equal(q.qname.len, 255);
	assert_int_equal(q.qname.nlabels, 4);
}

static void test_parse_edns(void **state)
{
	(void)state;
	struct pk p;
	struct dns_query q;
	const char *why;

	pk_query(&p, 5, "x.test", DNS_T_A, 0);
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_OK);
	assert_int_equal(q.edns, 1);
	assert_int_equal(q.edns_version, 0);
	assert_int_equal(q.edns_udp, 4096);
	assert_int_equal(q.edns_do, 1);

	/* version 1, no DO, a small buffer (raised to 512), an extended rcode byte */
	pk_header(&p, 5, 0, 1, 0, 0, 1);
	pk_name(&p, "x.test");
	pk_u16(&p, DNS_T_A);
	pk_u16(&p, DNS_C_IN);
	pk_u8(&p, 0);
	pk_u16(&p, DNS_T_OPT);
	pk_u16(&p, 100);
	pk_u32(&p, 0x7f010000u); /* ext rcode 0x7f, version 1 */
	pk_u16(&p, 0);
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_OK);
	assert_int_equal(q.edns, 1);
	assert_int_equal(q.edns_version, 1);
	assert_int_equal(q.edns_udp, 512);
	assert_int_equal(q.edns_do, 0);

	/* well-formed options (a cookie and an empty one) */
	static const uint8_t opts[] = {0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 12, 0, 0};
	pk_header(&p, 5, 0, 1, 0, 0, 1);
	pk_name(&p, "x.test");
	pk_u16(&p, DNS_T_A);
	pk_u16(&p, DNS_C_IN);
	pk_opt(&p, 1232, 0, 0, opts, sizeof opts);
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_OK);
	assert_int_equal(q.edns_udp, 1232);

	/* an option whose length runs past the RDATA */
	static const uint8_t badopt[] = {0, 10, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8};
	pk_header(&p, 5, 0, 1, 0, 0, 1);
	pk_name(&p, "x.test");
	pk_u16(&p, DNS_T_A);
	pk_u16(&p, DNS_C_IN);
	pk_opt(&p, 1232, 0, 0, badopt, sizeof badopt);
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_FORMERR);
	assert_non_null(strstr(why, "EDNS option"));
	/* a cut option header */
	static const uint8_t cutopt[] = {0, 10, 0};
	pk_header(&p, 5, 0, 1, 0, 0, 1);
	pk_name(&p, "x.test");
	pk_u16(&p, DNS_T_A);
	pk_u16(&p, DNS_C_IN);
	pk_opt(&p, 1232, 0, 0, cutopt, sizeof cutopt);
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_FORMERR);

	/* two OPT records */
	pk_header(&p, 5, 0, 1, 0, 0, 2);
	pk_name(&p, "x.test");
	pk_u16(&p, DNS_T_A);
	pk_u16(&p, DNS_C_IN);
	pk_opt(&p, 1232, 0, 0, NULL, 0);
	pk_opt(&p, 1232, 0, 0, NULL, 0);
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_FORMERR);
	assert_non_null(strstr(why, "more than one OPT"));

	/* an OPT not owned by the root */
	pk_header(&p, 5, 0, 1, 0, 0, 1);
	pk_name(&p, "x.test");
	pk_u16(&p, DNS_T_A);
	pk_u16(&p, DNS_C_IN);
	pk_name(&p, "x.test");
	pk_u16(&p, DNS_T_OPT);
	pk_u16(&p, 1232);
	pk_u32(&p, 0);
	pk_u16(&p, 0);
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_FORMERR);
	assert_non_null(strstr(why, "root"));

	/* another additional record before the OPT is skipped */
	pk_header(&p, 5, 0, 1, 0, 0, 2);
	pk_name(&p, "x.test");
	pk_u16(&p, DNS_T_A);
	pk_u16(&p, DNS_C_IN);
	pk_bytes(&p, "\xc0\x0c", 2); /* owner: pointer to the question name */
	pk_u16(&p, DNS_T_A);
	pk_u16(&p, DNS_C_IN);
	pk_u32(&p, 60);
	pk_u16(&p, 4);
	pk_bytes(&p, "\1\2\3\4", 4);
	pk_opt(&p, 2048, 0, 1, NULL, 0);
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_OK);
	assert_int_equal(q.edns, 1);
	assert_int_equal(q.edns_udp, 2048);
}

static void test_parse_pointer_loop_in_records(void **state)
{
	(void)state;
	struct pk p;
	struct dns_query q;
	const char *why;
	/* the OPT owner is a pointer to itself */
	pk_header(&p, 5, 0, 1, 0, 0, 1);
	pk_name(&p, "x.test");
	pk_u16(&p, DNS_T_A);
	pk_u16(&p, DNS_C_IN);
	size_t at = p.len;
	pk_u8(&p, (uint8_t)(0xc0 | (at >> 8)));
	pk_u8(&p, (uint8_t)at);
	pk_u16(&p, DNS_T_OPT);
	pk_u16(&p, 1232);
	pk_u32(&p, 0);
	pk_u16(&p, 0);
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_FORMERR);

	/* two pointers in an authority record pointing at each other */
	pk_header(&p, 5, 0, 1, 0, 1, 0);
	pk_name(&p, "x.test");
	pk_u16(&p, DNS_T_A);
	pk_u16(&p, DNS_C_IN);
	at = p.len;
	pk_u8(&p, 0xc0);
	pk_u8(&p, (uint8_t)(at + 2));
	pk_u8(&p, 0xc0);
	pk_u8(&p, (uint8_t)at);
	pk_u16(&p, DNS_T_SOA);
	pk_u16(&p, DNS_C_IN);
	pk_u32(&p, 0);
	pk_u16(&p, 0);
	assert_int_equal(dns_parse_query(p.b, p.len, &q, &why), DNS_PARSE_FORMERR);
	assert_non_null(strstr(why, "authority"));
}

static void test_parse_ixfr_serial(void **state)
{
	(void)state;
	struct pk p;
	struct dns_query q;
	pk_header(&p, 77, 0, 1, 0, 1, 0);
	pk_name(&p, "bl.example");
	pk_u16(&p, DNS_T_IXFR);
	pk_u16(&p, DNS_C_IN);
	pk_bytes(&p, "\xc0\x0c", 2);
	pk_u16(&p, DNS_T_SOA);
	pk_u16(&p, DNS_C_IN);
	pk_u32(&p, 3600);
	size_t rdlen_at = p.len;
	pk_u16(&p, 0);
	size_t rd = p.len;
	pk_name(&p, "ns.bl.example");
	pk_name(&p, "hm.bl.example");
	pk_u32(&p, 2024010101u);
	pk_u32(&p, 3600);
	pk_u32(&p, 600);
	pk_u32(&p, 86400);
	pk_u32(&p, 300);
	dns_put16(p.b + rdlen_at, (uint16_t)(p.len - rd));
	assert_int_equal(dns_parse_query(p.b, p.len, &q, NULL), DNS_PARSE_OK);
	assert_int_equal(q.qtype, DNS_T_IXFR);
	assert_int_equal(q.has_ixfr_serial, 1);
	assert_int_equal(q.ixfr_serial, 2024010101u);

	/* the same SOA with an AXFR question carries no serial */
	p.b[12 + 12 + 1] = DNS_T_AXFR;
	assert_int_equal(dns_parse_query(p.b, p.len, &q, NULL), DNS_PARSE_OK);
	assert_int_equal(q.qtype, DNS_T_AXFR);
	assert_int_equal(q.has_ixfr_serial, 0);
}

/* ---- reading names and records ----------------------------------------- */

static void test_read_name(void **state)
{
	(void)state;
	struct pk p;
	uint8_t out[DNS_NAME_MAX + 1];
	char t[300];
	pk_header(&p, 0, 0, 0, 0, 0, 0);
	pk_name(&p, "Example.com"); /* at 12 */
	size_t www = p.len;         /* at 25 */
	pk_bytes(&p, "\3www\xc0\x0c", 6);
	size_t ptr = p.len; /* at 31: a bare pointer to www */
	pk_u8(&p, 0xc0);
	pk_u8(&p, (uint8_t)www);

	size_t off = 12;
	assert_int_equal(dns_read_name(p.b, p.len, &off, out), 13);
	assert_int_equal(off, 25);
	wire_text(out, t, sizeof t);
	assert_string_equal(t, "Example.com"); /* case as in the packet */

	off = www;
	assert_int_equal(dns_read_name(p.b, p.len, &off, out), 17);
	assert_int_equal(off, www + 6); /* just past the pointer */
	wire_text(out, t, sizeof t);
	assert_string_equal(t, "www.Example.com");

	off = ptr;
	assert_int_equal(dns_read_name(p.b, p.len, &off, out), 17);
	assert_int_equal(off, ptr + 2);
	wire_text(out, t, sizeof t);
	assert_string_equal(t, "www.Example.com");

	/* the root */
	uint8_t root[1] = {0};
	off = 0;
	assert_int_equal(dns_read_name(root, 1, &off, out), 1);
	assert_int_equal(off, 1);
}

static void test_read_name_hostile(void **state)
{
	(void)state;
	struct pk p;
	uint8_t out[DNS_NAME_MAX + 1];
	size_t off;

	/* a pointer to itself */
	pk_header(&p, 0, 0, 0, 0, 0, 0);
	pk_bytes(&p, "\xc0\x0c", 2);
	off = 12;
	assert_int_equal(dns_read_name(p.b, p.len, &off, out), -1);

	/* two pointers at each other */
	pk_header(&p, 0, 0, 0, 0, 0, 0);
	pk_bytes(&p, "\xc0\x0e\xc0\x0c", 4);
	off = 12;
	assert_int_equal(dns_read_name(p.b, p.len, &off, out), -1);

	/* a loop that grows the name on each turn: label then pointer back */
	pk_header(&p, 0, 0, 0, 0, 0, 0);
	pk_bytes(&p, "\1a\xc0\x0c", 4);
	off = 12;
	assert_int_equal(dns_read_name(p.b, p.len, &off, out), -1);

	/* a pointer beyond the end of the message */
	pk_header(&p, 0, 0, 0, 0, 0, 0);
	pk_bytes(&p, "\3abc\xc1\x00", 6);
	off = 12;
	assert_int_equal(dns_read_name(p.b, p.len, &off, out), -1);
	pk_header(&p, 0, 0, 0, 0, 0, 0);
	pk_bytes(&p, "\xff\xff", 2);
	off = 12;
	assert_int_equal(dns_read_name(p.b, p.len, &off, out), -1);

	/* a pointer cut in half */
	pk_header(&p, 0, 0, 0, 0, 0, 0);
	pk_bytes(&p, "\3abc\xc0", 5);
	off = 12;
	assert_int_equal(dns_read_name(p.b, p.len, &off, out), -1);

	/* a label running past the end, and no final zero */
	pk_header(&p, 0, 0, 0, 0, 0, 0);
	pk_bytes(&p, "\5ab", 3);
	off = 12;
	assert_int_equal(dns_read_name(p.b, p.len, &off, out), -1);
	pk_header(&p, 0, 0, 0, 0, 0, 0);
	pk_bytes(&p, "\3abc", 4);
	off = 12;
	assert_int_equal(dns_read_name(p.b, p.len, &off, out), -1);
	off = p.len; /* starting at the end */
	assert_int_equal(dns_read_name(p.b, p.len, &off, out), -1);

	/* reserved label types */
	pk_header(&p, 0, 0, 0, 0, 0, 0);
	pk_bytes(&p, "\x40\0", 2);
	off = 12;
	assert_int_equal(dns_read_name(p.b, p.len, &off, out), -1);
	p.b[12] = 0x80;
	off = 12;
	assert_int_equal(dns_read_name(p.b, p.len, &off, out), -1);

	/* a name assembled through pointers to more than 255 bytes */
	pk_header(&p, 0, 0, 0, 0, 0, 0);
	size_t prev = 0;
	for (int i = 0; i < 5; i++) {
		size_t here = p.len;
		pk_u8(&p, 63);
		for (int k = 0; k < 63; k++) pk_u8(&p, 'a');
		if (i == 0) {
			pk_u8(&p, 0);
		} else {
			pk_u8(&p, (uint8_t)(0xc0 | (prev >> 8)));
			pk_u8(&p, (uint8_t)prev);
		}
		prev = here;
	}
	off = prev;
	assert_int_equal(dns_read_name(p.b, p.len, &off, out), -1);

	/* forward pointer chains are fine up to the hop limit */
	pk_header(&p, 0, 0, 0, 0, 0, 0);
	for (int i = 0; i < 40; i++) {
		size_t next = p.len + 2;
		pk_u8(&p, (uint8_t)(0xc0 | (next >> 8)));
		pk_u8(&p, (uint8_t)next);
	}
	pk_name(&p, "end.test");
	off = 12;
	assert_int_equal(dns_read_name(p.b, p.len, &off, out), 10);
	assert_int_equal(off, 14);
	pk_header(&p, 0, 0, 0, 0, 0, 0);
	for (int i = 0; i < 100; i++) {
		size_t next = p.len + 2;
		pk_u8(&p, (uint8_t)(0xc0 | (next >> 8)));
		pk_u8(&p, (uint8_t)next);
	}
	pk_name(&p, "end.test");
	off = 12;
	assert_int_equal(dns_read_name(p.b, p.len, &off, out), -1);
}

static void test_read_rr(void **state)
{
	(void)state;
	struct pk p;
	struct dns_rr rr;
	pk_header(&p, 0, 0, 0, 1, 0, 0);
	pk_name(&p, "a.test");
	pk_u16(&p, DNS_T_TXT);
	pk_u16(&p, DNS_C_IN);
	pk_u32(&p, 0x01020304);
	pk_u16(&p, 4);
	pk_bytes(&p, "\3abc", 4);
	size_t off = 12;
	assert_int_equal(dns_read_rr(p.b, p.len, &off, &rr), 0);
	assert_int_equal(off, p.len);
	assert_int_equal(rr.type, DNS_T_TXT);
	assert_int_equal(rr.cls, DNS_C_IN);
	assert_int_equal(rr.ttl, 0x01020304);
	assert_int_equal(rr.rdlen, 4);
	assert_ptr_equal(rr.rdata, p.b + p.len - 4);
	assert_int_equal(rr.rdata_off, p.len - 4);
	assert_memory_equal(rr.owner, "\1a\4test\0", 8);

	/* RDATA past the end, and a cut fixed part */
	off = 12;
	assert_int_equal(dns_read_rr(p.b, p.len - 1, &off, &rr), -1);
	off = 12;
	assert_int_equal(dns_read_rr(p.b, 12 + 8 + 9, &off, &rr), -1);
}

/* ---- the builder -------------------------------------------------------- */

struct reply_rr {
	int section;
	char owner[300];
	uint16_t type, cls;
	uint32_t ttl;
	uint16_t rdlen;
	const uint8_t *rdata;
	size_t rdata_off;
};

/* Reads back a whole message: header counts, the question, then every RR. */
static int read_message(const uint8_t *m, size_t len, struct reply_rr *rrs, int max,
                        uint16_t counts[4])
{
	assert_true(len >= DNS_HDR_SIZE);
	for (int i = 0; i < 4; i++) counts[i] = dns_get16(m + 4 + 2 * i);
	size_t off = DNS_HDR_SIZE;
	uint8_t name[DNS_NAME_MAX + 1];
	for (unsigned i = 0; i < counts[0]; i++) {
		assert_true(dns_read_name(m, len, &off, name) > 0);
		off += 4;
		assert_true(off <= len);
	}
	int n = 0;
	for (int s = 0; s < 3; s++) {
		for (unsigned i = 0; i < counts[1 + s]; i++) {
			struct dns_rr rr;
			assert_true(n < max);
			assert_int_equal(dns_read_rr(m, len, &off, &rr), 0);
			rrs[n].section = s;
			wire_text(rr.owner, rrs[n].owner, sizeof rrs[n].owner);
			rrs[n].type = rr.type;
			rrs[n].cls = rr.cls;
			rrs[n].ttl = rr.ttl;
			rrs[n].rdlen = rr.rdlen;
			rrs[n].rdata = rr.rdata;
			rrs[n].rdata_off = rr.rdata_off;
			n++;
		}
	}
	assert_int_equal(off, len); /* nothing unaccounted for */
	return n;
}

static void parse_ok(struct dns_query *q, const char *name, uint16_t qtype, int edns)
{
	static struct pk p;
	pk_query(&p, 0x1234, name, qtype, edns);
	assert_int_equal(dns_parse_query(p.b, p.len, q, NULL), DNS_PARSE_OK);
}

static void test_builder_roundtrip(void **state)
{
	(void)state;
	struct dns_query q;
	parse_ok(&q, "2.0.0.127.Bl.Example", DNS_T_ANY, -1);
	uint8_t buf[512];
	struct dns_builder b;
	assert_int_equal(dns_b_start(&b, buf, sizeof buf, sizeof buf, &q, DNS_F_AA, DNS_R_NOERROR),
	                 0);
	size_t qend = b.len;
	assert_int_equal(qend, q.question_end);

	/* answer: A and TXT owned by the question name (pointer 12) */
	assert_int_equal(dns_b_rr_begin(&b, NULL, DNS_HDR_SIZE, DNS_T_A, DNS_C_IN, 2100), 0);
	assert_int_equal(dns_b_rd_bytes(&b, "\x7f\0\0\2", 4), 0);
	assert_int_equal(dns_b_rr_end(&b), 0);
	assert_int_equal(dns_b_rr_begin(&b, NULL, DNS_HDR_SIZE, DNS_T_TXT, DNS_C_IN, 2100), 0);
	assert_int_equal(dns_b_rd_bytes(&b, "\5hello", 6), 0);
	assert_int_equal(dns_b_rr_end(&b), 0);
	/* authority: two NS at the apex (owner: a pointer into the question) */
	dns_b_section(&b, DNS_SEC_AUTHORITY);
	struct dns_name ns, ns2;
	name_of(&ns, "ns1.bl.example");
	name_of(&ns2, "ns2.bl.example");
	uint16_t apex = (uint16_t)(DNS_HDR_SIZE + q.qname.label[4]);
	size_t before = b.len;
	assert_int_equal(dns_b_rr_begin(&b, NULL, apex, DNS_T_NS, DNS_C_IN, 86400), 0);
	assert_int_equal(b.len - before, 2 + 10);
	size_t rd = b.len;
	assert_int_equal(dns_b_rd_name(&b, ns.wire, 1), 0);
	assert_int_equal(b.len - rd, ns.len); /* nothing written before ends like it */
	assert_int_equal(dns_b_rr_end(&b), 0);
	assert_int_equal(dns_b_rr_begin(&b, NULL, apex, DNS_T_NS, DNS_C_IN, 86400), 0);
	rd = b.len;
	assert_int_equal(dns_b_rd_name(&b, ns2.wire, 1), 0);
	assert_int_equal(b.len - rd, 4 + 2); /* "ns2" + pointer to bl.example */
	assert_int_equal(dns_b_rr_end(&b), 0);
	/* additional: an A for ns1 (owner compressed against the NS RDATA) and a u16/u32 record */
	dns_b_section(&b, DNS_SEC_ADDITIONAL);
	before = b.len;
	assert_int_equal(dns_b_rr_begin(&b, ns.wire, 0, DNS_T_A, DNS_C_IN, 60), 0);
	assert_int_equal(b.len - before, 2 + 10);
	assert_int_equal(dns_b_rd_bytes(&b, "\xc0\0\2\1", 4), 0);
	assert_int_equal(dns_b_rr_end(&b), 0);
	assert_int_equal(dns_b_rr_begin(&b, NULL, DNS_HDR_SIZE, 99, DNS_C_IN, 1), 0);
	assert_int_equal(dns_b_rd_u16(&b, 0xabcd), 0);
	assert_int_equal(dns_b_rd_u32(&b, 0x01020304), 0);
	assert_int_equal(dns_b_rr_end(&b), 0);
	/* going back to an earlier section is not possible */
	dns_b_section(&b, DNS_SEC_ANSWER);
	assert_int_equal(b.section, DNS_SEC_ADDITIONAL);
	size_t len = dns_b_finish(&b);
	assert_int_equal(len, b.len);
	assert_int_equal(b.overflow, 0);

	/* the header */
	assert_int_equal(dns_get16(buf), 0x1234);
	uint16_t f = dns_get16(buf + 2);
	assert_true(f & DNS_F_QR);
	assert_true(f & DNS_F_AA);
	assert_true(f & DNS_F_RD); /* copied from the query */
	assert_false(f & DNS_F_TC);
	assert_int_equal(f & 0xf, DNS_R_NOERROR);
	/* the question is echoed with its case */
	assert_memory_equal(buf + 12, q.qname_case, q.qname.len);

	struct reply_rr rrs[8];
	uint16_t counts[4];
	int n = read_message(buf, len, rrs, 8, counts);
	assert_int_equal(counts[0], 1);
	assert_int_equal(counts[1], 2);
	assert_int_equal(counts[2], 2);
	assert_int_equal(counts[3], 2);
	assert_int_equal(n, 6);
	assert_string_equal(rrs[0].owner, "2.0.0.127.Bl.Example");
	assert_int_equal(rrs[0].type, DNS_T_A);
	assert_int_equal(rrs[0].ttl, 2100);
	assert_memory_equal(rrs[0].rdata, "\x7f\0\0\2", 4);
	assert_int_equal(rrs[1].type, DNS_T_TXT);
	assert_int_equal(rrs[1].rdlen, 6);
	assert_memory_equal(rrs[1].rdata, "\5hello", 6);
	assert_int_equal(rrs[2].section, 1);
	assert_string_equal(rrs[2].owner, "Bl.Example");
	assert_int_equal(rrs[2].type, DNS_T_NS);
	assert_int_equal(rrs[2].ttl, 86400);
	size_t o = rrs[2].rdata_off;
	uint8_t w[DNS_NAME_MAX + 1];
	char t[300];
	assert_true(dns_read_name(buf, len, &o, w) > 0);
	wire_text(w, t, sizeof t);
	assert_string_equal(t, "ns1.bl.example");
	o = rrs[3].rdata_off;
	assert_true(dns_read_name(buf, len, &o, w) > 0);
	wire_text(w, t, sizeof t);
	assert_string_equal(t, "ns2.bl.example");
	assert_string_equal(rrs[3].owner, "Bl.Example");
	assert_int_equal(rrs[4].section, 2);
	assert_string_equal(rrs[4].owner, "ns1.bl.example");
	assert_memory_equal(rrs[4].rdata, "\xc0\0\2\1", 4);
	assert_int_equal(rrs[5].type, 99);
	assert_int_equal(rrs[5].rdlen, 6);
	assert_memory_equal(rrs[5].rdata, "\xab\xcd\1\2\3\4", 6);
}

static void test_builder_compression_case(void **state)
{
	(void)state;
	uint8_t buf[512];
	struct dns_builder b;
	dns_b_init(&b, buf, sizeof buf, sizeof buf);
	assert_int_equal(b.len, DNS_HDR_SIZE);
	struct dns_name n1, n2, n3;
	struct base_err e;
	dns_name_from_text(&n1, "mail.example.com", 0, &e);
	dns_name_from_text(&n2, "EXAMPLE.com", 0, &e);
	dns_name_from_text(&n3, "other.Example.COM", 0, &e);
	assert_int_equal(dns_b_name(&b, n1.wire), 0);
	assert_int_equal(b.len, 12 + 18);
	assert_int_equal(dns_b_name(&b, n2.wire), 0); /* a pointer, case ignored */
	assert_int_equal(b.len, 12 + 18 + 2);
	assert_int_equal(dns_get16(buf + 30), 0xc000 | 17);
	assert_int_equal(dns_b_name(&b, n3.wire), 0); /* "other" + pointer */
	assert_int_equal(b.len, 12 + 18 + 2 + 6 + 2);
	assert_int_equal(dns_b_name(&b, n3.wire), 0); /* the whole name is known now */
	assert_int_equal(b.len, 12 + 18 + 2 + 8 + 2);
	size_t off = 12 + 18 + 2 + 8;
	uint8_t w[DNS_NAME_MAX + 1];
	char t[300];
	assert_true(dns_read_name(buf, b.len, &off, w) > 0);
	wire_text(w, t, sizeof t);
	assert_string_equal(t, "other.example.com"); /* the first spelling wins */

	/* the root is one zero byte */
	assert_int_equal(dns_b_name(&b, (const uint8_t *)""), 0);
	assert_int_equal(buf[b.len - 1], 0);

	/* uncompressed RDATA names are written out whole */
	size_t before = b.len;
	assert_int_equal(dns_b_rd_name(&b, n1.wire, 0), 0);
	assert_int_equal(b.len - before, n1.len);
}

static void test_builder_limit(void **state)
{
	(void)state;
	struct dns_query q;
	parse_ok(&q, "x.test", DNS_T_TXT, -1);
	uint8_t buf[512];
	struct dns_builder b;
	/* header 12 + question 12 = 24; room for 3 TXT RRs of 12+16 = 28 bytes within 100 */
	assert_int_equal(dns_b_start(&b, buf, sizeof buf, 100, &q, DNS_F_AA, DNS_R_NOERROR), 0);
	assert_int_equal(b.len, 24);
	uint8_t txt[16];
	txt[0] = 15;
	memset(txt + 1, 't', 15);
	int added = 0;
	for (int i = 0; i < 10; i++) {
		size_t before = b.len;
		if (dns_b_rr_begin(&b, NULL, DNS_HDR_SIZE, DNS_T_TXT, DNS_C_IN, 60) < 0) {
			assert_int_equal(b.len, before);
			assert_int_equal(b.overflow, 1);
			break;
		}
		if (dns_b_rd_bytes(&b, txt, sizeof txt) < 0) {
			dns_b_rr_abort(&b);
			assert_int_equal(b.len, before); /* rolled back */
			assert_int_equal(b.overflow, 1);
			break;
		}
		assert_int_equal(dns_b_rr_end(&b), 0);
		added++;
	}
	assert_int_equal(added, 2); /* 24 + 2*28 = 80; a third would need 108 */
	assert_int_equal(b.count[0], 2);
	assert_true(b.len <= 100);
	size_t len = dns_b_finish(&b);
	struct reply_rr rrs[8];
	uint16_t counts[4];
	assert_int_equal(read_message(buf, len, rrs, 8, counts), 2);

	/* a name in RDATA that does not fit: rolled back, compression table too */
	parse_ok(&q, "x.test", DNS_T_NS, -1);
	assert_int_equal(dns_b_start(&b, buf, sizeof buf, 45, &q, DNS_F_AA, DNS_R_NOERROR), 0);
	unsigned ncomp = b.ncomp;
	assert_int_equal(dns_b_rr_begin(&b, NULL, DNS_HDR_SIZE, DNS_T_NS, DNS_C_IN, 60), 0);
	struct dns_name ns;
	name_of(&ns, "a-long-name-server.elsewhere.example");
	assert_int_equal(dns_b_rd_name(&b, ns.wire, 1), -1);
	dns_b_rr_abort(&b);
	assert_int_equal(b.len, 24);
	assert_int_equal(b.ncomp, ncomp);
	assert_int_equal(b.count[0], 0);
	len = dns_b_finish(&b);
	assert_int_equal(read_message(buf, len, rrs, 8, counts), 0);

	/* an owner that does not fit */
	assert_int_equal(dns_b_start(&b, buf, sizeof buf, 30, &q, 0, 0), 0);
	b.overflow = 0;
	assert_int_equal(dns_b_rr_begin(&b, ns.wire, 0, DNS_T_A, DNS_C_IN, 1), -1);
	assert_int_equal(b.len, 24);
	assert_int_equal(b.ncomp, ncomp);
	assert_int_equal(b.overflow, 1);
	/* dns_b_name leaves the builder unchanged too */
	assert_int_equal(dns_b_name(&b, ns.wire), -1);
	assert_int_equal(b.len, 24);

	/* the question alone does not fit */
	assert_int_equal(dns_b_start(&b, buf, sizeof buf, 23, &q, 0, 0), -1);
	/* the limit never exceeds the buffer */
	dns_b_init(&b, buf, 64, 4096);
	assert_int_equal(b.limit, 64);
}

static void test_builder_rdata_too_long(void **state)
{
	(void)state;
	static uint8_t buf[70000];
	static uint8_t big[65536];
	struct dns_builder b;
	dns_b_init(&b, buf, sizeof buf, sizeof buf);
	assert_int_equal(dns_b_rr_begin(&b, (const uint8_t *)"", 0, 99, DNS_C_IN, 0), 0);
	assert_int_equal(dns_b_rd_bytes(&b, big, sizeof big), 0);
	assert_int_equal(dns_b_rr_end(&b), -1); /* RDLENGTH is 16 bits */
	assert_int_equal(b.len, DNS_HDR_SIZE);
	assert_int_equal(b.count[0], 0);
	assert_int_equal(b.overflow, 1);
	assert_int_equal(dns_b_rr_begin(&b, (const uint8_t *)"", 0, 99, DNS_C_IN, 0), 0);
	assert_int_equal(dns_b_rd_bytes(&b, big, 65535), 0);
	assert_int_equal(dns_b_rr_end(&b), 0);
	assert_int_equal(dns_get16(buf + DNS_HDR_SIZE + 9), 65535);
}

static void test_builder_flags_opt(void **state)
{
	(void)state;
	struct dns_query q;
	parse_ok(&q, "x.test", DNS_T_A, 0);
	uint8_t buf[512];
	struct dns_builder b;
	assert_int_equal(dns_b_start(&b, buf, sizeof buf, 512 - 11, &q, 0, DNS_R_NXDOMAIN), 0);
	assert_int_equal(buf[3] & 0xf, DNS_R_NXDOMAIN);
	dns_b_set_rcode(&b, DNS_R_REFUSED);
	assert_int_equal(buf[3] & 0xf, DNS_R_REFUSED);
	dns_b_set_flags(&b, DNS_F_TC | DNS_F_AA, DNS_F_RD);
	uint16_t f = dns_get16(buf + 2);
	assert_true(f & DNS_F_TC);
	assert_true(f & DNS_F_AA);
	assert_false(f & DNS_F_RD);
	assert_true(f & DNS_F_QR);
	assert_int_equal(f & 0xf, DNS_R_REFUSED);

	/* OPT uses the room reserved below the limit */
	b.limit = b.cap;
	assert_int_equal(dns_b_opt(&b, 1232, 1, 1), 0);
	size_t len = dns_b_finish(&b);
	struct reply_rr rrs[4];
	uint16_t counts[4];
	assert_int_equal(read_message(buf, len, rrs, 4, counts), 1);
	assert_int_equal(counts[3], 1);
	assert_int_equal(rrs[0].type, DNS_T_OPT);
	assert_string_equal(rrs[0].owner, ".");
	assert_int_equal(rrs[0].cls, 1232);
	assert_int_equal(rrs[0].ttl, 0x01008000u); /* ext rcode 1, version 0, DO */
	assert_int_equal(rrs[0].rdlen, 0);

	/* no room at all for the OPT */
	uint8_t small[30];
	dns_b_init(&b, small, sizeof small, sizeof small);
	b.len = 25;
	assert_int_equal(dns_b_opt(&b, 512, 0, 0), -1);
	assert_int_equal(b.len, 25);
}

static void test_error_reply(void **state)
{
	(void)state;
	struct pk p;
	pk_query(&p, 0xcafe, "x.test", DNS_T_A, -1);
	dns_put16(p.b + 2,
	          (uint16_t)(DNS_OP_UPDATE << 11) | DNS_F_RD | DNS_F_CD | DNS_F_AA | DNS_F_TC);
	uint8_t out[64];
	assert_int_equal(dns_error_reply(p.b, p.len, out, sizeof out, DNS_R_NOTIMP), 12);
	assert_int_equal(dns_get16(out), 0xcafe);
	uint16_t f = dns_get16(out + 2);
	assert_true(f & DNS_F_QR);
	assert_int_equal((f >> 11) & 0xf, DNS_OP_UPDATE);
	assert_true(f & DNS_F_RD);
	assert_true(f & DNS_F_CD);
	assert_false(f & DNS_F_AA);
	assert_false(f & DNS_F_TC);
	assert_int_equal(f & 0xf, DNS_R_NOTIMP);
	for (int i = 4; i < 12; i++) assert_int_equal(out[i], 0);
	assert_int_equal(dns_error_reply(p.b, 11, out, sizeof out, DNS_R_FORMERR), 0);
	assert_int_equal(dns_error_reply(p.b, p.len, out, 11, DNS_R_FORMERR), 0);
}

static void test_names_of_codes(void **state)
{
	(void)state;
	char buf[16];
	assert_string_equal(dns_type_name(DNS_T_A, buf), "A");
	assert_string_equal(dns_type_name(DNS_T_TXT, buf), "TXT");
	assert_string_equal(dns_type_name(DNS_T_AXFR, buf), "AXFR");
	assert_string_equal(dns_type_name(99, buf), "TYPE99");
	assert_string_equal(dns_type_name(65535, buf), "TYPE65535");
	assert_string_equal(dns_rcode_name(DNS_R_NOERROR), "NOERROR");
	assert_string_equal(dns_rcode_name(DNS_R_NXDOMAIN), "NXDOMAIN");
	assert_string_equal(dns_rcode_name(DNS_R_NOTAUTH), "NOTAUTH");
	assert_string_equal(dns_rcode_name(DNS_R_BADVERS), "BADVERS");
	assert_string_equal(dns_rcode_name(12), "RCODE?");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_name_basic),
	    cmocka_unit_test(test_name_roundtrip),
	    cmocka_unit_test(test_name_escapes),
	    cmocka_unit_test(test_name_to_text_small_buffer),
	    cmocka_unit_test(test_name_limits),
	    cmocka_unit_test(test_name_256_bytes_rejected),
	    cmocka_unit_test(test_name_empty_label),
	    cmocka_unit_test(test_name_index),
	    cmocka_unit_test(test_subdomain),
	    cmocka_unit_test(test_parse_valid_a),
	    cmocka_unit_test(test_parse_drop),
	    cmocka_unit_test(test_parse_opcodes),
	    cmocka_unit_test(test_parse_qdcount),
	    cmocka_unit_test(test_parse_truncated),
	    cmocka_unit_test(test_parse_bad_question_name),
	    cmocka_unit_test(test_parse_edns),
	    cmocka_unit_test(test_parse_pointer_loop_in_records),
	    cmocka_unit_test(test_parse_ixfr_serial),
	    cmocka_unit_test(test_read_name),
	    cmocka_unit_test(test_read_name_hostile),
	    cmocka_unit_test(test_read_rr),
	    cmocka_unit_test(test_builder_roundtrip),
	    cmocka_unit_test(test_builder_compression_case),
	    cmocka_unit_test(test_builder_limit),
	    cmocka_unit_test(test_builder_rdata_too_long),
	    cmocka_unit_test(test_builder_flags_opt),
	    cmocka_unit_test(test_error_reply),
	    cmocka_unit_test(test_names_of_codes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
