/*
 * test_dnsbl.c — unit tests for src/dnsbl: the rbldnsd address forms
 * (ip4_parse_range and friends), how a query name is seen by datasets
 * (ds_query_classify), zone specs, and then whole snapshots loaded from
 * small data files (ip4set, ip6trie, dnset, generic, combined) and queried
 * through dnsbl_answer with hand-built packets. Each reply is parsed back
 * and its rcode, flags, sections and record data are checked; the master
 * file dump (dnsbl_dump_text) is checked line by line.
 *
 * The data files are written into one mkdtemp directory by the group
 * setup, which also loads the shared snapshot `snap` used by most tests;
 * tests that need their own data write it and load their own snapshot.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dnsbl/dnsbl.h"
#include "dnsbl/int.h"
#include "dns/dns.h"

/* ---- data files --------------------------------------------------------- */

static const char BL_TXT[] =
    "# an ip4set with every address form\n"                           /* 1 */
    "$SOA 1h ns1.bl.example hostmaster.bl.example 42 1h 15m 1w 10m\n" /* 2 */
    "$NS 1d ns1.bl.example ns2.bl.example\n"                          /* 3 */
    ":127.0.0.2:Listed $\n"                                           /* 4 */
    "127.0.0.2\n"                                                     /* 5 */
    "192.0.2.0/24 :127.0.0.3:Block $\n"                               /* 6 */
    "!192.0.2.99\n"                                                   /* 7 */
    "198.51.100.10-198.51.100.20 :4:Range\n"                          /* 8 */
    "203.0.113 :5:Class C\n"                                          /* 9 */
    "10/8\n"                                                          /* 10 */
    "!10.1.2.3\n"                                                     /* 11 */
    "172.16-31 :6:Private $\n"                                        /* 12 */
    "this is not an address\n"                                        /* 13 */
    "127.0.0.10\n"                                                    /* 14 */
    "1.2.3.4/33\n"                                                    /* 15 */
    "127.0.0.11 :0:bad A\n"                                           /* 16 */
    "127.0.0.12 ; a comment after the address\n";                     /* 17 */

static const char V6_TXT[] = "$SOA 1h ns1.bl.example hostmaster.bl.example 7 1h 15m 1w 10m\n"
                             ":127.0.0.2:v6 listed $\n"
                             "2001:db8::/32\n"
                             "!2001:db8::1\n"
                             "2001:db8:1:2::/64 :3:net $\n";

static const char DN_TXT[] = "$SOA 1h ns1.bl.example hostmaster.bl.example 9 1h 15m 1w 10m\n"
                             ":127.0.0.2:Domain $ listed\n"
                             "spam.test\n"
                             "*.wild.test :3:Wild $\n"
                             ".both.test :4:Both\n"
                             "!ok.wild.test\n";

static const char COMB_TXT[] = "$SOA 1h ns1.comb.example hostmaster.comb.example 11 1h 15m 1w 10m\n"
                               "$NS 1h ns1.comb.example\n"
                               "$DATASET ip4set:x sub @\n"
                               ":127.0.0.2:Combined $\n"
                               "127.0.0.2\n"
                               "$DATASET dnset:d dom\n"
                               "spam.test :4:dom $\n"
                               "$DATASET generic:g @\n"
                               "www A 192.0.2.80\n"
                               "www TXT \"hello world\"\n";

static const char GEN_TXT[] = "$SOA 1h ns1.gen.example hostmaster.gen.example 12 1h 15m 1w 10m\n"
                              "$NS 1h ns1.gen.example\n"
                              "ns1 A 192.0.2.53\n"
                              "www 300 A 192.0.2.80\n"
                              "www TXT \"web server\"\n"
                              "@ MX 10 mx.gen.example\n";

static char tmpdir[64];
static char warnings[8192];         /* what the shared load wrote to stderr */
static struct dnsbl_options opts;   /* outlives every snapshot that points to it */
static struct dnsbl_snapshot *snap; /* bl, bl6, rhs, comb, gen, big */
static const struct dnsbl_peer localhost = {AF_INET, {127, 0, 0, 1}};

static void tmp_path(char *out, size_t sz, const char *name)
{
	snprintf(out, sz, "%s/%s", tmpdir, name);
}

static void write_file(const char *name, const void *data, size_t len)
{
	char path[256];
	tmp_path(path, sizeof path, name);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	if (len) assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

#define WRITE_LIT(name, lit) write_file((name), (lit), sizeof(lit) - 1)

/* Parses "zone:type:file" specs (file names relative to tmpdir) and loads
 * them; returns dnsbl_snapshot_load's result. */
static int load_specs(const char *const *spec_text, unsigned n, const struct dnsbl_options *o,
                      const struct dnsbl_snapshot *prev, struct dnsbl_snapshot **out,
                      struct base_err *err)
{
	struct dnsbl_zonespec *specs = calloc(n, sizeof *specs);
	assert_non_null(specs);
	for (unsigned i = 0; i < n; i++) {
		char full[512];
		const char *c2 = strchr(strchr(spec_text[i], ':') + 1, ':');
		snprintf(full, sizeof full, "%.*s:%s/%s", (int)(c2 - spec_text[i]), spec_text[i],
		         tmpdir, c2 + 1);
		struct base_err e;
		if (dnsbl_zonespec_parse(full, &specs[i], &e) < 0)
			fail_msg("spec %s: %s", full, e.msg);
	}
	int r = dnsbl_snapshot_load(o, specs, n, prev, out, err);
	for (unsigned i = 0; i < n; i++) dnsbl_zonespec_free(&specs[i]);
	free(specs);
	return r;
}

/* Runs fn with file descriptor 2 sent to a file; returns what was written. */
static void capture_stderr_begin(int *saved, const char *path)
{
	fflush(stderr);
	*saved = dup(2);
	assert_true(*saved >= 0);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_true(dup2(fd, 2) >= 0);
	close(fd);
}

static void capture_stderr_end(int saved, const char *path, char *out, size_t sz)
{
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	size_t n = fread(out, 1, sz - 1, f);
	out[n] = '\0';
	fclose(f);
}

static int group_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof tmpdir, "/tmp/mailrep-test-dnsbl-XXXXXX");
	if (!mkdtemp(tmpdir)) return -1;
	base_log_set_level(BASE_LOG_WARN);
	WRITE_LIT("bl.txt", BL_TXT);
	WRITE_LIT("v6.txt", V6_TXT);
	WRITE_LIT("dn.txt", DN_TXT);
	WRITE_LIT("comb.txt", COMB_TXT);
	WRITE_LIT("gen.txt", GEN_TXT);
	/* eight long TXT values on one address: about 900 bytes of answer */
	char big[4096];
	size_t o = 0;
	for (int i = 0; i < 8; i++) {
		o += (size_t)snprintf(big + o, sizeof big - o, "127.0.0.50 :2:value %d ", i);
		for (int k = 0; k < 100; k++) big[o++] = 'x';
		big[o++] = '\n';
	}
	write_file("big.txt", big, o);

	dnsbl_options_default(&opts);
	static const char *const specs[] = {
	    "bl.example:ip4set:bl.txt",    "bl6.example:ip6trie:v6.txt",
	    "rhs.example:dnset:dn.txt",    "comb.example:combined:comb.txt",
	    "gen.example:generic:gen.txt", "big.example:ip4set:big.txt",
	};
	char cap[256];
	tmp_path(cap, sizeof cap, "stderr.txt");
	int saved;
	struct base_err err;
	capture_stderr_begin(&saved, cap);
	int r = load_specs(specs, sizeof specs / sizeof specs[0], &opts, NULL, &snap, &err);
	capture_stderr_end(saved, cap, warnings, sizeof warnings);
	base_log_set_level(BASE_LOG_ERROR);
	if (r != 0) {
		fprintf(stderr, "load failed: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static void remove_tree(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d) return;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
		char p[512];
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
}

static int group_teardown(void **state)
{
	(void)state;
	dnsbl_snapshot_free(snap);
	snap = NULL;
	remove_tree(tmpdir);
	rmdir(tmpdir);
	return 0;
}

/* ---- queries and replies ----------------------------------------------- */

struct qopt {
	uint16_t id;
	uint16_t qclass; /* 0: IN */
	int edns;        /* -1: none, else the EDNS version */
	uint16_t udp;    /* EDNS buffer size */
	int do_bit;
	uint16_t flags; /* header flags; 0: RD */
	int tcp;
};

static size_t make_query(uint8_t *b, const char *name, uint16_t qtype, const struct qopt *o)
{
	struct dns_name n;
	struct base_err e;
	if (dns_name_from_text(&n, name, 0, &e) < 0) fail_msg("bad name %s: %s", name, e.msg);
	dns_put16(b, o->id);
	dns_put16(b + 2, o->flags ? o->flags : DNS_F_RD);
	dns_put16(b + 4, 1);
	dns_put16(b + 6, 0);
	dns_put16(b + 8, 0);
	dns_put16(b + 10, o->edns >= 0 ? 1 : 0);
	size_t len = DNS_HDR_SIZE;
	memcpy(b + len, n.wire, n.len);
	len += n.len;
	dns_put16(b + len, qtype);
	dns_put16(b + len + 2, o->qclass ? o->qclass : DNS_C_IN);
	len += 4;
	if (o->edns >= 0) {
		b[len] = 0;
		dns_put16(b + len + 1, DNS_T_OPT);
		dns_put16(b + len + 3, o->udp ? o->udp : 4096);
		dns_put32(b + len + 5, ((uint32_t)o->edns << 16) | (o->do_bit ? 0x8000u : 0));
		dns_put16(b + len + 9, 0);
		len += 11;
	}
	return len;
}

struct rrv {
	int section; /* 0 answer, 1 authority, 2 additional */
	char owner[300];
	uint16_t type, cls;
	uint32_t ttl;
	uint16_t rdlen;
	const uint8_t *rdata;
	size_t rdata_off;
};

struct reply {
	uint8_t msg[65536];
	size_t len;
	int zone_index, xfr_zone;
	uint16_t id, flags;
	unsigned rcode; /* with the OPT's extended bits */
	uint16_t qd, an, ns, ar;
	char qname[300];
	uint16_t qtype, qclass;
	int has_opt;
	uint16_t opt_udp;
	uint32_t opt_ttl;
	int n;
	struct rrv rr[160];
};

static void parse_reply(struct reply *r)
{
	const uint8_t *m = r->msg;
	assert_true(r->len >= DNS_HDR_SIZE);
	r->id = dns_get16(m);
	r->flags = dns_get16(m + 2);
	r->rcode = r->flags & 0xf;
	r->qd = dns_get16(m + 4);
	r->an = dns_get16(m + 6);
	r->ns = dns_get16(m + 8);
	r->ar = dns_get16(m + 10);
	size_t off = DNS_HDR_SIZE;
	uint8_t w[DNS_NAME_MAX + 1];
	r->qname[0] = '\0';
	for (unsigned i = 0; i < r->qd; i++) {
		assert_true(dns_read_name(m, r->len, &off, w) > 0);
		assert_true(dns_name_to_text(w, r->qname, sizeof r->qname) >= 0);
		assert_true(off + 4 <= r->len);
		r->qtype = dns_get16(m + off);
		r->qclass = dns_get16(m + off + 2);
		off += 4;
	}
	r->n = 0;
	r->has_opt = 0;
	unsigned counts[3] = {r->an, r->ns, r->ar};
	for (int s = 0; s < 3; s++) {
		for (unsigned i = 0; i < counts[s]; i++) {
			struct dns_rr rr;
			assert_true(r->n < 160);
			if (dns_read_rr(m, r->len, &off, &rr) < 0)
				fail_msg("record %d does not parse", r->n);
			struct rrv *v = &r->rr[r->n++];
			v->section = s;
			assert_true(dns_name_to_text(rr.owner, v->owner, sizeof v->owner) >= 0);
			v->type = rr.type;
			v->cls = rr.cls;
			v->ttl = rr.ttl;
			v->rdlen = rr.rdlen;
			v->rdata = rr.rdata;
			v->rdata_off = rr.rdata_off;
			if (rr.type == DNS_T_OPT) {
				assert_int_equal(s, 2);
				r->has_opt = 1;
				r->opt_udp = rr.cls;
				r->opt_ttl = rr.ttl;
				r->rcode |= (rr.ttl >> 24) << 4;
			}
		}
	}
	assert_int_equal(off, r->len); /* every byte accounted for */
}

static struct reply *ask_raw(const struct dnsbl_snapshot *s, const uint8_t *q, size_t qlen, int tcp)
{
	static struct reply r;
	memset(&r, 0, sizeof r);
	r.len = dnsbl_answer(s, q, qlen, &localhost, tcp ? DNSBL_TCP : DNSBL_UDP, r.msg,
	                     tcp ? sizeof r.msg : 4096, &r.zone_index, &r.xfr_zone);
	if (r.len) parse_reply(&r);
	return &r;
}

static struct reply *ask_opt(const struct dnsbl_snapshot *s, const char *name, uint16_t qtype,
                             const struct qopt *o)
{
	uint8_t q[600];
	size_t ql = make_query(q, name, qtype, o);
	return ask_raw(s, q, ql, o->tcp);
}

static struct reply *ask(const char *name, uint16_t qtype)
{
	struct qopt o = {.id = 0x5151, .edns = -1};
	return ask_opt(snap, name, qtype, &o);
}

/* The records of one type in one section. */
static int count_rr(const struct reply *r, int section, uint16_t type)
{
	int n = 0;
	for (int i = 0; i < r->n; i++)
		if (r->rr[i].section == section && r->rr[i].type == type) n++;
	return n;
}

static const struct rrv *find_rr(const struct reply *r, int section, uint16_t type, int nth)
{
	for (int i = 0; i < r->n; i++)
		if (r->rr[i].section == section && r->rr[i].type == type && nth-- == 0)
			return &r->rr[i];
	fail_msg("no record %d of type %u in section %d", nth, type, section);
	return NULL;
}

static void a_text(const struct rrv *v, char *out)
{
	assert_int_equal(v->rdlen, 4);
	snprintf(out, 16, "%u.%u.%u.%u", v->rdata[0], v->rdata[1], v->rdata[2], v->rdata[3]);
}

static void txt_text(const struct rrv *v, char *out, size_t sz)
{
	assert_true(v->rdlen >= 1);
	assert_int_equal(v->rdata[0] + 1, v->rdlen); /* one string */
	assert_true((size_t)v->rdata[0] < sz);
	memcpy(out, v->rdata + 1, v->rdata[0]);
	out[v->rdata[0]] = '\0';
}

/* A positive answer with exactly one A (and, for TXT queries, one TXT). */
static void expect_listed(const char *name, const char *a, const char *txt)
{
	struct reply *r = ask(name, DNS_T_A);
	if (r->rcode != DNS_R_NOERROR) fail_msg("%s: rcode %u", name, r->rcode);
	assert_true(r->flags & DNS_F_AA);
	if (count_rr(r, 0, DNS_T_A) != 1)
		fail_msg("%s: %d A records", name, count_rr(r, 0, DNS_T_A));
	assert_int_equal(r->an, 1);
	char t[300];
	a_text(find_rr(r, 0, DNS_T_A, 0), t);
	if (strcmp(t, a)) fail_msg("%s: A %s, want %s", name, t, a);
	assert_string_equal(find_rr(r, 0, DNS_T_A, 0)->owner, name);
	if (!txt) return;
	r = ask(name, DNS_T_TXT);
	assert_int_equal(r->rcode, DNS_R_NOERROR);
	assert_int_equal(r->an, 1);
	txt_text(find_rr(r, 0, DNS_T_TXT, 0), t, sizeof t);
	if (strcmp(t, txt)) fail_msg("%s: TXT '%s', want '%s'", name, t, txt);
}

/* SOA fields from a record. */
struct soa_v {
	char mname[300], rname[300];
	uint32_t serial, refresh, retry, expire, minimum;
};

static void soa_of(const struct reply *r, const struct rrv *v, struct soa_v *s)
{
	size_t off = v->rdata_off;
	uint8_t w[DNS_NAME_MAX + 1];
	assert_true(dns_read_name(r->msg, r->len, &off, w) > 0);
	dns_name_to_text(w, s->mname, sizeof s->mname);
	assert_true(dns_read_name(r->msg, r->len, &off, w) > 0);
	dns_name_to_text(w, s->rname, sizeof s->rname);
	assert_int_equal(off + 20, v->rdata_off + v->rdlen);
	s->serial = dns_get32(r->msg + off);
	s->refresh = dns_get32(r->msg + off + 4);
	s->retry = dns_get32(r->msg + off + 8);
	s->expire = dns_get32(r->msg + off + 12);
	s->minimum = dns_get32(r->msg + off + 16);
}

/* NXDOMAIN (or NODATA when nodata is set) with the zone's SOA in authority. */
static void expect_negative(const char *name, int nodata, const char *zone, uint32_t serial)
{
	struct reply *r = ask(name, DNS_T_A);
	unsigned want = nodata ? DNS_R_NOERROR : DNS_R_NXDOMAIN;
	if (r->rcode != want) fail_msg("%s: rcode %u, want %u", name, r->rcode, want);
	assert_true(r->flags & DNS_F_AA);
	if (r->an != 0) fail_msg("%s: %u answers", name, r->an);
	assert_int_equal(r->ns, 1);
	const struct rrv *v = find_rr(r, 1, DNS_T_SOA, 0);
	assert_string_equal(v->owner, zone);
	assert_int_equal(v->ttl, 600); /* the SOA's minimum */
	struct soa_v s;
	soa_of(r, v, &s);
	assert_int_equal(s.serial, serial);
	assert_int_equal(s.minimum, 600);
}

/* Reversed-nibble name of an IPv6 address (nib nibbles, most significant first). */
static void nibbles(const char *addr, unsigned nib, const char *zone, char *out, size_t sz)
{
	uint8_t a[16];
	assert_int_equal(inet_pton(AF_INET6, addr, a), 1);
	size_t o = 0;
	for (int i = (int)nib - 1; i >= 0; i--) {
		unsigned v = (i & 1) ? a[i / 2] & 15 : a[i / 2] >> 4;
		o += (size_t)snprintf(out + o, sz - o, "%x.", v);
	}
	snprintf(out + o, sz - o, "%s", zone);
}

/* ---- address forms ------------------------------------------------------ */

static void test_ip4_parse_range_forms(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		int bits;
		uint32_t a, b;
		const char *rest;
	} ok[] = {
	    {"127.0.0.2", 32, 0x7f000002, 0x7f000002, ""},
	    {"127.0.0", 24, 0x7f000000, 0x7f0000ff, ""},
	    {"127.0", 16, 0x7f000000, 0x7f00ffff, ""},
	    {"127/8", 8, 0x7f000000, 0x7fffffff, ""},
	    {"127.16-31", 32, 0x7f100000, 0x7f1fffff, ""},
	    {"127.16-127.31", 32, 0x7f100000, 0x7f1fffff, ""},
	    {"1.2.3.4-1.2.4.5", 32, 0x01020304, 0x01020405, ""},
	    {"1.2.3.4-5", 32, 0x01020304, 0x01020305, ""},
	    {"1.2.3.4-4", 32, 0x01020304, 0x01020304, ""},
	    {"1.2.3-5", 32, 0x01020300, 0x010205ff, ""},
	    {"1.2.3-1.2.5", 32, 0x01020300, 0x010205ff, ""},
	    {"10-11", 32, 0x0a000000, 0x0bffffff, ""},
	    {"0.0.0.0/0", 0, 0, 0xffffffff, ""},
	    {"1.2.3.4/32", 32, 0x01020304, 0x01020304, ""},
	    {"10.0.0.0/8", 8, 0x0a000000, 0x0affffff, ""},
	    {"10.1.2.3/24", 24, 0x0a010203, 0x0a0102ff, ""}, /* host bits: the caller decides */
	    {"192.168/16", 16, 0xc0a80000, 0xc0a8ffff, ""},
	    {"255.255.255.255", 32, 0xffffffff, 0xffffffff, ""},
	    {"127.0.0.2 :2:text", 32, 0x7f000002, 0x7f000002, " :2:text"},
	    {"127.0.0.2:3", 32, 0x7f000002, 0x7f000002, ":3"},
	    {"1.2.3.4-5 # c", 32, 0x01020304, 0x01020305, " # c"},
	    {"10/8\tx", 8, 0x0a000000, 0x0affffff, "\tx"},
	};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		uint32_t a = 1, b = 2;
		const char *end = NULL;
		int bits = ip4_parse_range(ok[i].s, &a, &b, &end);
		if (bits != ok[i].bits)
			fail_msg("'%s': bits %d, want %d", ok[i].s, bits, ok[i].bits);
		if (a != ok[i].a || b != ok[i].b)
			fail_msg("'%s': %08x-%08x, want %08x-%08x", ok[i].s, a, b, ok[i].a,
			         ok[i].b);
		assert_non_null(end);
		assert_string_equal(end, ok[i].rest);
	}
}

static void test_ip4_parse_range_invalid(void **state)
{
	(void)state;
	static const char *bad[] = {
	    "127/33",          "1.2.3.0/99",    "1.2.3.5-1.2.3.4",
	    "127.16-15",       "127",           "256.0.0.1",
	    "1.2.3.4-256",     "1.2.3.4-1.2.3", "1.2.3-1.2",
	    "1.2.3.4-",        "abc",           "",
	    "-1.2.3.4",        "1.2.3.4/",      "1.2.3.4/x",
	    "1.2.3.4-1.2.3.3", "20-10",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		uint32_t a = 1, b = 2;
		const char *end = NULL;
		int bits = ip4_parse_range(bad[i], &a, &b, &end);
		if (bits != -1) fail_msg("'%s' accepted: bits %d %08x-%08x", bad[i], bits, a, b);
	}
}

static void test_ip4_prefix_and_addr(void **state)
{
	(void)state;
	uint32_t a;
	const char *end;
	assert_int_equal(ip4_parse_prefix("10.1", &a, &end), 2);
	assert_int_equal(a, 0x0a010000);
	assert_int_equal(ip4_parse_prefix("1.2.3.4.5", &a, &end), 4);
	assert_int_equal(a, 0x01020304);
	assert_string_equal(end, ".5");
	assert_int_equal(ip4_parse_prefix("1..2", &a, &end), -1);
	assert_int_equal(ip4_parse_prefix("1.2.", &a, &end), -1);

	/* inet_aton's short forms, as used for A values (":2" is 127.0.0.2 higher up) */
	assert_int_equal(ip4_parse_addr("2", &a, &end), 1);
	assert_int_equal(a, 2);
	assert_int_equal(ip4_parse_addr("127.2", &a, &end), 2);
	assert_int_equal(a, 0x7f000002);
	assert_int_equal(ip4_parse_addr("127.1.2", &a, &end), 3);
	assert_int_equal(a, 0x7f010002);
	assert_int_equal(ip4_parse_addr("127.0.0.3:txt", &a, &end), 4);
	assert_int_equal(a, 0x7f000003);
	assert_string_equal(end, ":txt");
	assert_int_equal(ip4_parse_addr("x", &a, &end), -1);
	assert_int_equal(ip4_parse_addr("1.256", &a, &end), -1);
}

static void test_ip6_parse_and_text(void **state)
{
	(void)state;
	uint8_t a[16], want[16];
	unsigned bits;
	const char *end;
	char t[64];

	assert_int_equal(ip6_parse("2001:db8::1", a, &bits, &end), 0);
	inet_pton(AF_INET6, "2001:db8::1", want);
	assert_memory_equal(a, want, 16);
	assert_int_equal(bits, 128);
	assert_int_equal(ip6_parse("2001:db8:1", a, &bits, &end), 0); /* trailing groups left out */
	inet_pton(AF_INET6, "2001:db8:1::", want);
	assert_memory_equal(a, want, 16);
	assert_int_equal(bits, 48);
	assert_int_equal(ip6_parse("::", a, &bits, &end), 0);
	assert_int_equal(bits, 128);
	assert_int_equal(ip6_parse("1:2:3:4:5:6:7:8 rest", a, &bits, &end), 0);
	assert_int_equal(bits, 128);
	assert_string_equal(end, " rest");
	inet_pton(AF_INET6, "1:2:3:4:5:6:7:8", want);
	assert_memory_equal(a, want, 16);
	/* ":::" stops after "::"; the caller sees the ':' left over and refuses it */
	assert_true(ip6_parse("1:::2", a, &bits, &end) < 0 || *end == ':');
	assert_int_equal(ip6_parse("1::2::3", a, &bits, &end), -1);
	assert_int_equal(ip6_parse("12345::", a, &bits, &end), -1);
	assert_int_equal(ip6_parse("1:2:3:4:5:6:7:8:9", a, &bits, &end), -1);
	assert_int_equal(ip6_parse("1:2:3:4::5:6:7:8", a, &bits, &end), -1);
	assert_int_equal(ip6_parse("g::", a, &bits, &end), -1);

	static const char *texts[] = {"2001:db8::1",
	                              "::",
	                              "::1",
	                              "1::",
	                              "1:0:2:3:4:5:6:7",
	                              "2001:db8:0:0:1::1",
	                              "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"};
	static const char *want_text[] = {"2001:db8::1",
	                                  "::",
	                                  "::1",
	                                  "1::",
	                                  "1:0:2:3:4:5:6:7",
	                                  "2001:db8::1:0:0:1",
	                                  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"};
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
		inet_pton(AF_INET6, texts[i], a);
		ip6_text(a, t);
		assert_string_equal(t, want_text[i]);
	}
}

/* ---- how datasets see a query name ------------------------------------- */

static void classify(const char *rel, unsigned dflags, struct ds_query *q, struct dns_name *n)
{
	struct base_err e;
	if (dns_name_from_text(n, rel, 1, &e) < 0) fail_msg("%s: %s", rel, e.msg);
	memset(q, 0x55, sizeof *q); /* every flag must be set explicitly */
	q->dn = n->wire;
	q->dnlen = n->len;
	q->nlabels = n->nlabels;
	ds_query_classify(q, dflags);
}

static void test_query_classify(void **state)
{
	(void)state;
	struct ds_query q;
	struct dns_name n;
	char name[200];

	classify("2.0.0.127", DST_IP4, &q, &n);
	assert_true(q.ip4valid);
	assert_false(q.ip4partial);
	assert_int_equal(q.ip4, 0x7f000002);
	assert_false(q.ip6valid);
	assert_false(q.ip6partial);

	classify("0.0.127", DST_IP4, &q, &n);
	assert_false(q.ip4valid);
	assert_true(q.ip4partial);
	assert_int_equal(q.ip4oct, 3);
	assert_int_equal(q.ip4, 0x7f000000);
	classify("10", DST_IP4, &q, &n);
	assert_true(q.ip4partial);
	assert_int_equal(q.ip4oct, 1);
	assert_int_equal(q.ip4, 0x0a000000);

	classify("256.0.0.1", DST_IP4, &q, &n);
	assert_false(q.ip4valid);
	assert_false(q.ip4partial);
	classify("a.0.0.1", DST_IP4, &q, &n);
	assert_false(q.ip4valid);
	classify("1.2.3.4.5", DST_IP4, &q, &n);
	assert_false(q.ip4valid);
	assert_false(q.ip4partial);
	classify("1.2.3.4", DST_DN, &q, &n); /* a domain zone: no address views */
	assert_false(q.ip4valid);
	classify(".", DST_IP4 | DST_IP6, &q, &n);
	assert_false(q.ip4valid || q.ip4partial || q.ip6valid || q.ip6partial);

	/* 32 nibbles */
	nibbles("2001:db8::5", 32, "", name, sizeof name);
	name[strlen(name) - 1] = '\0';
	classify(name, DST_IP6, &q, &n);
	assert_true(q.ip6valid);
	assert_false(q.ip6partial);
	uint8_t want[16];
	inet_pton(AF_INET6, "2001:db8::5", want);
	assert_memory_equal(q.ip6, want, 16);
	classify(name, DST_IP4, &q, &n);
	assert_false(q.ip6valid);
	assert_false(q.ip4valid);

	/* an IPv4-mapped address is an IPv4 query for IPv4 zones */
	nibbles("::ffff:1.2.3.4", 32, "", name, sizeof name);
	name[strlen(name) - 1] = '\0';
	classify(name, DST_IP4, &q, &n);
	assert_true(q.ip4valid);
	assert_int_equal(q.ip4, 0x01020304);
	classify(name, DST_IP4 | DST_IP6, &q, &n);
	assert_true(q.ip4valid);
	assert_false(q.ip6valid);
	classify(name, DST_IP6, &q, &n);
	assert_true(q.ip6valid);
	assert_false(q.ip4valid);

	/* 6to4 carries an IPv4 address too */
	nibbles("2002:102:304::1", 32, "", name, sizeof name);
	name[strlen(name) - 1] = '\0';
	classify(name, DST_IP4 | DST_IP6, &q, &n);
	assert_true(q.ip4valid);
	assert_int_equal(q.ip4, 0x01020304);
	assert_true(q.ip6valid);

	/* partial nibble names are prefixes, for IPv6 zones */
	classify("8.b.d.0.1.0.0.2", DST_IP6, &q, &n);
	assert_true(q.ip6partial);
	assert_false(q.ip6valid);
	assert_int_equal(q.ip6nib, 8);
	inet_pton(AF_INET6, "2001:db8::", want);
	assert_memory_equal(q.ip6, want, 16);
	classify("0.0.2", DST_IP6, &q, &n);
	assert_true(q.ip6partial);
	assert_int_equal(q.ip6nib, 3);
	classify("8.b.d.0.1.0.0.2", DST_IP4, &q, &n);
	assert_false(q.ip6partial);
	classify("x.b.d.0.1.0.0.2", DST_IP6, &q, &n);
	assert_false(q.ip6partial);
	classify("10.b.d.0.1.0.0.2", DST_IP6, &q, &n);
	assert_false(q.ip6partial);
	/* 33 labels is not an address */
	nibbles("2001:db8::5", 32, "0", name, sizeof name);
	classify(name, DST_IP6, &q, &n);
	assert_false(q.ip6valid || q.ip6partial);
}

/* ---- zone specs --------------------------------------------------------- */

static void test_zonespec(void **state)
{
	(void)state;
	struct dnsbl_zonespec z;
	struct base_err e;

	assert_int_equal(dnsbl_zonespec_parse("bl.example:ip4set:/srv/a.txt", &z, &e), 0);
	assert_string_equal(z.zone, "bl.example");
	assert_string_equal(z.type, "ip4set");
	assert_int_equal(z.nfiles, 1);
	assert_string_equal(z.files[0], "/srv/a.txt");
	dnsbl_zonespec_free(&z);
	assert_null(z.zone);
	assert_null(z.files);

	assert_int_equal(dnsbl_zonespec_parse("bl.example:dnset:/a,/b.gz,,/c", &z, &e), 0);
	assert_int_equal(z.nfiles, 3);
	assert_string_equal(z.files[0], "/a");
	assert_string_equal(z.files[1], "/b.gz");
	assert_string_equal(z.files[2], "/c");
	dnsbl_zonespec_free(&z);

	/* ':' separates files too, as in rbldnsd */
	assert_int_equal(dnsbl_zonespec_parse("x.example:IP4SET:a:b", &z, &e), 0);
	assert_int_equal(z.nfiles, 2);
	assert_string_equal(z.type, "IP4SET");
	dnsbl_zonespec_free(&z);

	/* a global access list has no zone name */
	assert_int_equal(dnsbl_zonespec_parse(":acl:/etc/acl", &z, &e), 0);
	assert_string_equal(z.zone, "");
	assert_string_equal(z.type, "acl");
	dnsbl_zonespec_free(&z);

	static const struct {
		const char *s, *msg;
	} bad[] = {
	    {"bl.example", "expected"},
	    {"bl.example:ip4set", "expected"},
	    {"bl.example:ip4set:", "no data file"},
	    {"bl.example:ip4set:,,", "no data file"},
	    {"bl.example:nosuch:f", "unknown dataset type"},
	    {":ip4set:f", "empty zone name"},
	    {"bl..example:ip4set:f", "empty label"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		e.msg[0] = '\0';
		memset(&z, 0x5a, sizeof z);
		if (dnsbl_zonespec_parse(bad[i].s, &z, &e) != -1)
			fail_msg("'%s' accepted", bad[i].s);
		if (!strstr(e.msg, bad[i].msg)) fail_msg("'%s': message '%s'", bad[i].s, e.msg);
		assert_null(z.files); /* nothing left to free */
		assert_null(z.zone);
	}
}

/* ---- loading ------------------------------------------------------------ */

static void test_snapshot_zones(void **state)
{
	(void)state;
	assert_int_equal(dnsbl_snapshot_zones(snap), 6);
	/* zone indexes follow the command line */
	assert_string_equal(dnsbl_snapshot_zone_name(snap, 0), "bl.example");
	assert_string_equal(dnsbl_snapshot_zone_name(snap, 3), "comb.example");
	assert_string_equal(dnsbl_snapshot_zone_name(snap, 99), "?");
}

static void test_load_warnings(void **state)
{
	(void)state;
	/* every bad line is named with file:line and the rest of the file loads */
	char want[300];
	snprintf(want, sizeof want, "%s/bl.txt:13: invalid address", tmpdir);
	if (!strstr(warnings, want)) fail_msg("no '%s' in:\n%s", want, warnings);
	snprintf(want, sizeof want, "%s/bl.txt:15: invalid address", tmpdir);
	if (!strstr(warnings, want)) fail_msg("no '%s' in:\n%s", want, warnings);
	snprintf(want, sizeof want, "%s/bl.txt:16: invalid A RR", tmpdir);
	if (!strstr(warnings, want)) fail_msg("no '%s' in:\n%s", want, warnings);
	snprintf(want, sizeof want, "%s/bl.txt:14", tmpdir);
	assert_null(strstr(warnings, want));
	expect_listed("10.0.0.127.bl.example", "127.0.0.2", "Listed 127.0.0.10");
	expect_listed("12.0.0.127.bl.example", "127.0.0.2", NULL);
	expect_negative("11.0.0.127.bl.example", 0, "bl.example", 42);
}

static void test_load_errors(void **state)
{
	(void)state;
	static struct dnsbl_options o;
	dnsbl_options_default(&o);
	struct dnsbl_snapshot *s = (struct dnsbl_snapshot *)1;
	struct base_err e;
	char path[256];

	/* a missing file fails the load and names the file */
	static const char *const missing[] = {"bl.example:ip4set:bl.txt",
	                                      "x.example:ip4set:missing.txt"};
	e.msg[0] = '\0';
	assert_int_equal(load_specs(missing, 2, &o, NULL, &s, &e), -1);
	assert_null(s);
	tmp_path(path, sizeof path, "missing.txt");
	assert_non_null(strstr(e.msg, path));

	/* a NUL byte fails the dataset as a whole */
	write_file("nul.txt", "127.0.0.2\n127.0.0.3\0\n", 21);
	static const char *const nul[] = {"x.example:ip4set:nul.txt"};
	assert_int_equal(load_specs(nul, 1, &o, NULL, &s, &e), -1);
	assert_non_null(strstr(e.msg, "nul.txt:2"));
	assert_non_null(strstr(e.msg, "NUL"));

	/* $DATASET missing in a combined file: data before it is an error */
	WRITE_LIT("nods.txt", "127.0.0.2\n");
	static const char *const nods[] = {"x.example:combined:nods.txt"};
	assert_int_equal(load_specs(nods, 1, &o, NULL, &s, &e), -1);
	assert_non_null(strstr(e.msg, "$DATASET"));

	/* a $TIMESTAMP in the future */
	setenv("MAILREP_NOW", "2024-01-01T00:00:00Z", 1);
	WRITE_LIT("future.txt", "$TIMESTAMP 2024:06:01\n127.0.0.2\n");
	static const char *const fut[] = {"x.example:ip4set:future.txt"};
	assert_int_equal(load_specs(fut, 1, &o, NULL, &s, &e), -1);
	assert_non_null(strstr(e.msg, "future"));
	WRITE_LIT("past.txt", "$TIMESTAMP 2023:06:01\n127.0.0.2\n");
	static const char *const past[] = {"x.example:ip4set:past.txt"};
	assert_int_equal(load_specs(past, 1, &o, NULL, &s, &e), 0);
	dnsbl_snapshot_free(s);
	unsetenv("MAILREP_NOW");

	/* with -q a zone that cannot load is served as SERVFAIL */
	o.quiet = 1;
	int saved;
	char cap[256], out[2048];
	tmp_path(cap, sizeof cap, "quiet-stderr.txt");
	capture_stderr_begin(&saved, cap);
	int r = load_specs(missing, 2, &o, NULL, &s, &e);
	capture_stderr_end(saved, cap, out, sizeof out);
	assert_int_equal(r, 0);
	assert_non_null(strstr(out, "missing.txt"));
	struct qopt qo = {.id = 1, .edns = -1};
	struct reply *rep = ask_opt(s, "2.0.0.127.x.example", DNS_T_A, &qo);
	assert_int_equal(rep->rcode, DNS_R_SERVFAIL);
	rep = ask_opt(s, "2.0.0.127.bl.example", DNS_T_A, &qo);
	assert_int_equal(rep->rcode, DNS_R_NOERROR);
	assert_int_equal(rep->an, 1);
	/* and it cannot be dumped */
	char *buf = NULL;
	size_t bl = 0;
	FILE *f = open_memstream(&buf, &bl);
	assert_int_equal(dnsbl_dump_text(s, f, &e), -1);
	assert_non_null(strstr(e.msg, "not loaded"));
	fclose(f);
	free(buf);
	dnsbl_snapshot_free(s);
}

static void test_reload(void **state)
{
	(void)state;
	static struct dnsbl_options o;
	dnsbl_options_default(&o);
	WRITE_LIT("reload.txt", "127.0.0.2\n");
	WRITE_LIT("stay.txt", "127.0.0.9\n");
	static const char *const specs[] = {"r.example:ip4set:reload.txt",
	                                    "s.example:ip4set:stay.txt"};
	struct dnsbl_snapshot *s1, *s2, *s3;
	struct base_err e;
	assert_int_equal(load_specs(specs, 2, &o, NULL, &s1, &e), 0);

	/* nothing changed: nothing to publish */
	s2 = (struct dnsbl_snapshot *)1;
	assert_int_equal(load_specs(specs, 2, &o, s1, &s2, &e), 1);
	assert_null(s2);

	/* one file changed: only it is read again, the other dataset is shared */
	WRITE_LIT("reload.txt", "127.0.0.2\n127.0.0.3\n");
	assert_int_equal(load_specs(specs, 2, &o, s1, &s2, &e), 0);
	assert_non_null(s2);
	assert_int_equal(s2->generation, s1->generation + 1);
	struct qopt qo = {.id = 1, .edns = -1};
	assert_int_equal(ask_opt(s1, "3.0.0.127.r.example", DNS_T_A, &qo)->rcode, DNS_R_NXDOMAIN);
	assert_int_equal(ask_opt(s2, "3.0.0.127.r.example", DNS_T_A, &qo)->rcode, DNS_R_NOERROR);
	int shared = 0;
	for (unsigned i = 0; i < s1->nall; i++)
		for (unsigned k = 0; k < s2->nall; k++)
			if (s1->all[i] == s2->all[k]) shared++;
	assert_int_equal(shared, 1);

	/* a broken file on reload keeps the old data */
	write_file("reload.txt", "127.0.0.2\n\0\n", 12);
	int saved;
	char cap[256], out[2048];
	tmp_path(cap, sizeof cap, "reload-stderr.txt");
	capture_stderr_begin(&saved, cap);
	int r = load_specs(specs, 2, &o, s2, &s3, &e);
	capture_stderr_end(saved, cap, out, sizeof out);
	assert_int_equal(r, 0);
	assert_non_null(strstr(out, "keeping the data loaded before"));
	assert_int_equal(ask_opt(s3, "3.0.0.127.r.example", DNS_T_A, &qo)->rcode, DNS_R_NOERROR);

	/* the old snapshots stay usable until freed, in any order */
	dnsbl_snapshot_free(s2);
	assert_int_equal(ask_opt(s1, "9.0.0.127.s.example", DNS_T_A, &qo)->rcode, DNS_R_NOERROR);
	dnsbl_snapshot_free(s1);
	assert_int_equal(ask_opt(s3, "9.0.0.127.s.example", DNS_T_A, &qo)->rcode, DNS_R_NOERROR);
	dnsbl_snapshot_free(s3);
}

/* ---- answers: ip4set ---------------------------------------------------- */

static void test_ip4set_listed(void **state)
{
	(void)state;
	expect_listed("2.0.0.127.bl.example", "127.0.0.2", "Listed 127.0.0.2");
	expect_listed("5.2.0.192.bl.example", "127.0.0.3", "Block 192.0.2.5");
	expect_listed("0.2.0.192.bl.example", "127.0.0.3", "Block 192.0.2.0");
	expect_listed("255.2.0.192.bl.example", "127.0.0.3", "Block 192.0.2.255");
	expect_listed("10.100.51.198.bl.example", "127.0.0.4", "Range");
	expect_listed("15.100.51.198.bl.example", "127.0.0.4", "Range");
	expect_listed("20.100.51.198.bl.example", "127.0.0.4", "Range");
	expect_listed("7.113.0.203.bl.example", "127.0.0.5", "Class C");
	expect_listed("4.2.1.10.bl.example", "127.0.0.2", "Listed 10.1.2.4");
	expect_listed("1.1.255.10.bl.example", "127.0.0.2", "Listed 10.255.1.1");
	expect_listed("1.0.20.172.bl.example", "127.0.0.6", "Private 172.20.0.1");
	expect_listed("9.9.16.172.bl.example", "127.0.0.6", "Private 172.16.9.9");
	expect_listed("9.9.31.172.bl.example", "127.0.0.6", "Private 172.31.9.9");
}

static void test_ip4set_unlisted(void **state)
{
	(void)state;
	expect_negative("3.0.0.127.bl.example", 0, "bl.example", 42);
	expect_negative("99.2.0.192.bl.example", 0, "bl.example", 42); /* excluded */
	expect_negative("3.2.1.10.bl.example", 0, "bl.example", 42);   /* excluded */
	expect_negative("9.100.51.198.bl.example", 0, "bl.example", 42);
	expect_negative("21.100.51.198.bl.example", 0, "bl.example", 42);
	expect_negative("1.0.32.172.bl.example", 0, "bl.example", 42);
	expect_negative("1.0.15.172.bl.example", 0, "bl.example", 42);
	expect_negative("1.2.0.192.1.bl.example", 0, "bl.example", 42); /* five labels */
	expect_negative("x.2.0.192.bl.example", 0, "bl.example", 42);
	expect_negative("www.bl.example", 0, "bl.example", 42);
}

static void test_ip4set_empty_non_terminal(void **state)
{
	(void)state;
	/* parents of listed addresses exist: NODATA, not NXDOMAIN */
	expect_negative("0.0.127.bl.example", 1, "bl.example", 42);
	expect_negative("0.127.bl.example", 1, "bl.example", 42);
	expect_negative("127.bl.example", 1, "bl.example", 42);
	expect_negative("2.0.192.bl.example", 1, "bl.example", 42);
	expect_negative("100.51.198.bl.example", 1, "bl.example", 42);
	expect_negative("1.10.bl.example", 1, "bl.example", 42);
	/* ... and names with nothing below them do not */
	expect_negative("1.0.127.bl.example", 0, "bl.example", 42);
	expect_negative("3.0.192.bl.example", 0, "bl.example", 42);
	expect_negative("11.bl.example", 0, "bl.example", 42);
	/* an excluded address alone below a name does not make it exist */
	expect_negative("99.2.0.192.bl.example", 0, "bl.example", 42);
}

static void test_ip4set_sections(void **state)
{
	(void)state;
	struct qopt o = {.id = 0xabcd, .edns = -1};
	struct reply *r = ask_opt(snap, "2.0.0.127.BL.Example", DNS_T_A, &o);
	assert_int_equal(r->id, 0xabcd);
	assert_true(r->flags & DNS_F_QR);
	assert_true(r->flags & DNS_F_AA);
	assert_true(r->flags & DNS_F_RD);
	assert_false(r->flags & DNS_F_TC);
	assert_false(r->flags & DNS_F_RA);
	assert_int_equal(r->zone_index, 0);
	assert_int_equal(r->xfr_zone, -1);
	/* the question comes back exactly as asked */
	assert_int_equal(r->qd, 1);
	assert_string_equal(r->qname, "2.0.0.127.BL.Example");
	assert_int_equal(r->qtype, DNS_T_A);
	assert_int_equal(r->qclass, DNS_C_IN);
	/* one A; the NS set in authority; no OPT without EDNS */
	assert_int_equal(r->an, 1);
	const struct rrv *a = find_rr(r, 0, DNS_T_A, 0);
	assert_string_equal(a->owner, "2.0.0.127.BL.Example");
	assert_int_equal(a->ttl, 2100); /* the default -t */
	assert_int_equal(a->cls, DNS_C_IN);
	assert_int_equal(r->ns, 2);
	char nsn[2][300];
	for (int i = 0; i < 2; i++) {
		const struct rrv *v = find_rr(r, 1, DNS_T_NS, i);
		assert_string_equal(v->owner, "BL.Example");
		assert_int_equal(v->ttl, 86400);
		size_t off = v->rdata_off;
		uint8_t w[DNS_NAME_MAX + 1];
		assert_true(dns_read_name(r->msg, r->len, &off, w) > 0);
		dns_name_to_text(w, nsn[i], sizeof nsn[i]);
	}
	assert_string_equal(nsn[0], "ns1.bl.example");
	assert_string_equal(nsn[1], "ns2.bl.example");
	assert_int_equal(r->ar, 0);
	assert_false(r->has_opt);

	/* ANY: A and TXT */
	r = ask("5.2.0.192.bl.example", DNS_T_ANY);
	assert_int_equal(r->rcode, DNS_R_NOERROR);
	assert_int_equal(r->an, 2);
	assert_int_equal(count_rr(r, 0, DNS_T_A), 1);
	assert_int_equal(count_rr(r, 0, DNS_T_TXT), 1);

	/* a type without data at a listed name: NODATA */
	r = ask("2.0.0.127.bl.example", DNS_T_MX);
	assert_int_equal(r->rcode, DNS_R_NOERROR);
	assert_int_equal(r->an, 0);
	assert_int_equal(count_rr(r, 1, DNS_T_SOA), 1);
	r = ask("2.0.0.127.bl.example", DNS_T_AAAA);
	assert_int_equal(r->rcode, DNS_R_NOERROR);
	assert_int_equal(r->an, 0);

	/* a value without TXT gives no TXT record */
	r = ask("7.113.0.203.bl.example", DNS_T_TXT);
	assert_int_equal(r->an, 1);
	r = ask("10.100.51.198.bl.example", DNS_T_TXT);
	assert_int_equal(r->an, 1);
}

static void test_apex(void **state)
{
	(void)state;
	struct reply *r = ask("bl.example", DNS_T_SOA);
	assert_int_equal(r->rcode, DNS_R_NOERROR);
	assert_true(r->flags & DNS_F_AA);
	assert_int_equal(r->an, 1);
	const struct rrv *v = find_rr(r, 0, DNS_T_SOA, 0);
	assert_string_equal(v->owner, "bl.example");
	assert_int_equal(v->ttl, 3600);
	struct soa_v s;
	soa_of(r, v, &s);
	assert_string_equal(s.mname, "ns1.bl.example");
	assert_string_equal(s.rname, "hostmaster.bl.example");
	assert_int_equal(s.serial, 42);
	assert_int_equal(s.refresh, 3600);
	assert_int_equal(s.retry, 900);
	assert_int_equal(s.expire, 604800);
	assert_int_equal(s.minimum, 600);

	r = ask("bl.example", DNS_T_NS);
	assert_int_equal(r->rcode, DNS_R_NOERROR);
	assert_int_equal(count_rr(r, 0, DNS_T_NS), 2);

	r = ask("bl.example", DNS_T_A);
	assert_int_equal(r->rcode, DNS_R_NOERROR);
	assert_int_equal(r->an, 0);
	assert_int_equal(count_rr(r, 1, DNS_T_SOA), 1);

	/* the apex of a zone without $NS: NS is refused, as rbldnsd does */
	r = ask("rhs.example", DNS_T_NS);
	assert_int_equal(r->rcode, DNS_R_REFUSED);
}

static void test_refused_and_classes(void **state)
{
	(void)state;
	struct reply *r = ask("2.0.0.127.example.org", DNS_T_A);
	assert_int_equal(r->rcode, DNS_R_REFUSED);
	assert_false(r->flags & DNS_F_AA);
	assert_int_equal(r->an, 0);
	assert_int_equal(r->ns, 0);
	assert_int_equal(r->zone_index, -1);
	r = ask("example", DNS_T_A); /* a parent of the zones */
	assert_int_equal(r->rcode, DNS_R_REFUSED);
	r = ask(".", DNS_T_NS);
	assert_int_equal(r->rcode, DNS_R_REFUSED);
	r = ask("xbl.example", DNS_T_A);
	assert_int_equal(r->rcode, DNS_R_REFUSED);

	/* class ANY: answered, but not authoritatively */
	struct qopt o = {.id = 9, .edns = -1, .qclass = DNS_C_ANY};
	r = ask_opt(snap, "2.0.0.127.bl.example", DNS_T_A, &o);
	assert_int_equal(r->rcode, DNS_R_NOERROR);
	assert_false(r->flags & DNS_F_AA);
	assert_int_equal(r->an, 1);
	/* another class: refused */
	o.qclass = 4; /* HS */
	r = ask_opt(snap, "2.0.0.127.bl.example", DNS_T_A, &o);
	assert_int_equal(r->rcode, DNS_R_REFUSED);

	/* CHAOS version.bind */
	o.qclass = DNS_C_CH;
	r = ask_opt(snap, "version.bind", DNS_T_TXT, &o);
	assert_int_equal(r->rcode, DNS_R_NOERROR);
	assert_int_equal(r->an, 1);
	char t[300];
	const struct rrv *v = find_rr(r, 0, DNS_T_TXT, 0);
	assert_int_equal(v->cls, DNS_C_CH);
	txt_text(v, t, sizeof t);
	assert_string_equal(t, "mailrep " MAILREP_VERSION);
	r = ask_opt(snap, "version.server", DNS_T_TXT, &o);
	assert_int_equal(r->rcode, DNS_R_NOERROR);
	r = ask_opt(snap, "hostname.bind", DNS_T_TXT, &o);
	assert_int_equal(r->rcode, DNS_R_REFUSED);
}

static void test_malformed_and_opcodes(void **state)
{
	(void)state;
	uint8_t q[600];
	struct qopt o = {.id = 0x7777, .edns = -1};
	size_t ql = make_query(q, "2.0.0.127.bl.example", DNS_T_A, &o);

	/* question count 2: FORMERR with the id */
	dns_put16(q + 4, 2);
	struct reply *r = ask_raw(snap, q, ql, 0);
	assert_int_equal(r->len, DNS_HDR_SIZE);
	assert_int_equal(r->id, 0x7777);
	assert_int_equal(r->rcode, DNS_R_FORMERR);
	assert_true(r->flags & DNS_F_QR);
	/* a truncated question */
	dns_put16(q + 4, 1);
	r = ask_raw(snap, q, ql - 3, 0);
	assert_int_equal(r->rcode, DNS_R_FORMERR);
	assert_int_equal(r->id, 0x7777);
	/* shorter than a header: no reply at all */
	r = ask_raw(snap, q, 11, 0);
	assert_int_equal(r->len, 0);
	/* a response: no reply */
	q[2] |= 0x80;
	r = ask_raw(snap, q, ql, 0);
	assert_int_equal(r->len, 0);
	q[2] &= 0x7f;
	/* opcode STATUS: NOTIMP */
	dns_put16(q + 2, 2 << 11);
	r = ask_raw(snap, q, ql, 0);
	assert_int_equal(r->rcode, DNS_R_NOTIMP);
	/* NOTIFY to a DNSBL server: NOTIMP, with the question */
	dns_put16(q + 2, DNS_OP_NOTIFY << 11);
	r = ask_raw(snap, q, ql, 0);
	assert_int_equal(r->rcode, DNS_R_NOTIMP);
	assert_int_equal(r->qd, 1);
	/* AA and TC set in a query are ignored */
	dns_put16(q + 2, DNS_F_AA | DNS_F_TC);
	r = ask_raw(snap, q, ql, 0);
	assert_int_equal(r->rcode, DNS_R_NOERROR);
	assert_false(r->flags & DNS_F_TC);
	assert_int_equal(r->an, 1);
	/* a meta type other than ANY: NOTIMP */
	r = ask("2.0.0.127.bl.example", DNS_T_TSIG);
	assert_int_equal(r->rcode, DNS_R_NOTIMP);
}

static void test_edns(void **state)
{
	(void)state;
	/* version 0: the OPT comes back with our size and the DO bit copied */
	struct qopt o = {.id = 1, .edns = 0, .udp = 4096, .do_bit = 1};
	struct reply *r = ask_opt(snap, "2.0.0.127.bl.example", DNS_T_A, &o);
	assert_int_equal(r->rcode, DNS_R_NOERROR);
	assert_int_equal(r->an, 1);
	assert_true(r->has_opt);
	assert_int_equal(r->opt_udp, 1232);
	assert_int_equal(r->opt_ttl, 0x8000);
	assert_int_equal(count_rr(r, 2, DNS_T_OPT), 1);
	o.do_bit = 0;
	r = ask_opt(snap, "3.0.0.127.bl.example", DNS_T_A, &o);
	assert_int_equal(r->rcode, DNS_R_NXDOMAIN);
	assert_true(r->has_opt);
	assert_int_equal(r->opt_ttl, 0);

	/* version 1: BADVERS (16: 0 in the header, 1 in the OPT) */
	o.edns = 1;
	o.do_bit = 1;
	r = ask_opt(snap, "2.0.0.127.bl.example", DNS_T_A, &o);
	assert_int_equal(r->flags & 0xf, 0);
	assert_int_equal(r->rcode, DNS_R_BADVERS);
	assert_true(r->has_opt);
	assert_int_equal(r->opt_ttl >> 24, 1);
	assert_int_equal((r->opt_ttl >> 16) & 0xff, 0); /* we speak version 0 */
	assert_int_equal(r->an, 0);
	assert_int_equal(r->qd, 1);
	assert_string_equal(r->qname, "2.0.0.127.bl.example");
	/* even outside our zones */
	r = ask_opt(snap, "example.org", DNS_T_A, &o);
	assert_int_equal(r->rcode, DNS_R_BADVERS);
}

static void test_truncation(void **state)
{
	(void)state;
	/* eight TXT records of ~115 bytes: more than 512 */
	struct reply *r = ask("50.0.0.127.big.example", DNS_T_TXT);
	assert_int_equal(r->rcode, DNS_R_NOERROR);
	assert_true(r->flags & DNS_F_TC);
	assert_true(r->len <= 512);
	assert_true(r->an < 8);
	assert_true(r->an >= 1);
	assert_int_equal(r->an, count_rr(r, 0, DNS_T_TXT)); /* whole records only */

	/* with EDNS they fit */
	struct qopt o = {.id = 2, .edns = 0, .udp = 4096};
	r = ask_opt(snap, "50.0.0.127.big.example", DNS_T_TXT, &o);
	assert_false(r->flags & DNS_F_TC);
	assert_int_equal(r->an, 8);
	assert_true(r->len <= 1232);
	char t[300];
	txt_text(find_rr(r, 0, DNS_T_TXT, 0), t, sizeof t);
	assert_memory_equal(t, "value 0 xxx", 11);
	txt_text(find_rr(r, 0, DNS_T_TXT, 7), t, sizeof t);
	assert_memory_equal(t, "value 7 xxx", 11);
	assert_int_equal(strlen(t), 108);

	/* EDNS with a buffer of 512 is the same as no EDNS */
	o.udp = 512;
	r = ask_opt(snap, "50.0.0.127.big.example", DNS_T_TXT, &o);
	assert_true(r->flags & DNS_F_TC);
	assert_true(r->len <= 512);
	assert_true(r->has_opt);

	/* over TCP everything fits */
	struct qopt t2 = {.id = 3, .edns = -1, .tcp = 1};
	r = ask_opt(snap, "50.0.0.127.big.example", DNS_T_TXT, &t2);
	assert_false(r->flags & DNS_F_TC);
	assert_int_equal(r->an, 8);

	/* the A records alone are small: one A (all values share 127.0.0.2) */
	r = ask("50.0.0.127.big.example", DNS_T_A);
	assert_false(r->flags & DNS_F_TC);
	assert_int_equal(r->an, 1);
}

static void test_axfr_over_udp_and_tcp(void **state)
{
	(void)state;
	struct reply *r = ask("bl.example", DNS_T_AXFR);
	assert_int_equal(r->rcode, DNS_R_NOERROR);
	assert_true(r->flags & DNS_F_TC);
	assert_int_equal(r->an, 0);
	struct qopt o = {.id = 4, .edns = -1, .tcp = 1};
	r = ask_opt(snap, "bl.example", DNS_T_AXFR, &o);
	assert_int_equal(r->len, 0);
	assert_int_equal(r->xfr_zone, 0);
	/* below the apex: refused */
	r = ask_opt(snap, "2.0.0.127.bl.example", DNS_T_AXFR, &o);
	assert_int_equal(r->rcode, DNS_R_REFUSED);

	/* the transfer itself: SOA first and last, every record parseable */
	uint8_t q[600];
	size_t ql = make_query(q, "bl.example", DNS_T_AXFR, &o);
	struct dnsbl_xfr *x = dnsbl_xfr_start(snap, 0, q, ql);
	assert_non_null(x);
	static uint8_t msg[65536];
	size_t n;
	int soas = 0, total = 0, first_type = -1, last_type = -1;
	while ((n = dnsbl_xfr_next(x, msg, sizeof msg)) > 0) {
		static struct reply xr;
		memcpy(xr.msg, msg, n);
		xr.len = n;
		parse_reply(&xr);
		assert_int_equal(xr.rcode, DNS_R_NOERROR);
		assert_true(xr.flags & DNS_F_AA);
		for (int i = 0; i < xr.n; i++) {
			if (first_type < 0) first_type = xr.rr[i].type;
			last_type = xr.rr[i].type;
			if (xr.rr[i].type == DNS_T_SOA) soas++;
			total++;
		}
	}
	dnsbl_xfr_free(x);
	assert_int_equal(first_type, DNS_T_SOA);
	assert_int_equal(last_type, DNS_T_SOA);
	assert_int_equal(soas, 2);
	assert_true(total > 20);
}

/* ---- answers: ip6trie --------------------------------------------------- */

static void test_ip6trie(void **state)
{
	(void)state;
	char name[300];
	nibbles("2001:db8::5", 32, "bl6.example", name, sizeof name);
	expect_listed(name, "127.0.0.2", "v6 listed 2001:db8::5");
	nibbles("2001:db8:ffff:ffff::1", 32, "bl6.example", name, sizeof name);
	expect_listed(name, "127.0.0.2", "v6 listed 2001:db8:ffff:ffff::1");
	nibbles("2001:db8:1:2::9", 32, "bl6.example", name, sizeof name);
	expect_listed(name, "127.0.0.3", "net 2001:db8:1:2::9");
	nibbles("2001:db8:1:3::9", 32, "bl6.example", name, sizeof name);
	expect_listed(name, "127.0.0.2", "v6 listed 2001:db8:1:3::9");

	nibbles("2001:db8::1", 32, "bl6.example", name, sizeof name); /* excluded */
	expect_negative(name, 0, "bl6.example", 7);
	nibbles("2001:db9::1", 32, "bl6.example", name, sizeof name);
	expect_negative(name, 0, "bl6.example", 7);
	nibbles("::1", 32, "bl6.example", name, sizeof name);
	expect_negative(name, 0, "bl6.example", 7);

	/* prefixes of listed networks are empty non-terminals */
	nibbles("2001:db8::", 8, "bl6.example", name, sizeof name);
	expect_negative(name, 1, "bl6.example", 7);
	nibbles("2001:db8::", 3, "bl6.example", name, sizeof name);
	expect_negative(name, 1, "bl6.example", 7);
	nibbles("2001:db8::", 5, "bl6.example", name, sizeof name);
	expect_negative(name, 1, "bl6.example", 7);
	nibbles("2001:db8:1:2::", 16, "bl6.example", name, sizeof name);
	expect_negative(name, 1, "bl6.example", 7);
	/* ... prefixes of nothing are not */
	nibbles("2001:db9::", 8, "bl6.example", name, sizeof name);
	expect_negative(name, 0, "bl6.example", 7);
	nibbles("3000::", 3, "bl6.example", name, sizeof name);
	expect_negative(name, 0, "bl6.example", 7);
}

/* Regression test for a fixed bug, as it was: in a zone of IPv6 datasets only, a nibble name
 * of exactly 4 labels (a /16 prefix such as 1.0.0.2.bl6.example for the
 * listed 2001:db8::/32) gets NXDOMAIN, while 3 or 5 nibbles get NODATA.
 * ds_query_classify() skips the nibble view whenever n == 4 (to leave
 * four-label names to IPv4), even when the zone has no IPv4 dataset, so
 * ip6partial is never set and the empty non-terminal is not found. */
static void test_ip6_four_nibble_ent_is_nodata(void **state)
{
	(void)state;
	char name[300];
	nibbles("2001:db8::", 4, "bl6.example", name, sizeof name);
	assert_string_equal(name, "1.0.0.2.bl6.example");
	expect_negative(name, 1, "bl6.example", 7);

	struct ds_query q;
	struct dns_name n;
	classify("1.0.0.2", DST_IP6, &q, &n);
	assert_true(q.ip6partial);
}

/* ---- answers: dnset ----------------------------------------------------- */

static void test_dnset(void **state)
{
	(void)state;
	expect_listed("spam.test.rhs.example", "127.0.0.2", "Domain spam.test listed");
	expect_listed("SPAM.Test.rhs.example", "127.0.0.2", "Domain spam.test listed");
	/* $ is the listed entry's name, as in rbldnsd (not the name asked) */
	expect_listed("a.wild.test.rhs.example", "127.0.0.3", "Wild wild.test");
	expect_listed("deep.a.wild.test.rhs.example", "127.0.0.3", "Wild wild.test");
	expect_listed("both.test.rhs.example", "127.0.0.4", "Both");
	expect_listed("x.both.test.rhs.example", "127.0.0.4", "Both");

	expect_negative("www.spam.test.rhs.example", 0, "rhs.example", 9); /* exact only */
	expect_negative("ok.wild.test.rhs.example", 0, "rhs.example", 9);  /* excluded */
	expect_negative("other.test.rhs.example", 0, "rhs.example", 9);
	expect_negative("spam.test2.rhs.example", 0, "rhs.example", 9);
	/* wild.test itself is not matched by *.wild.test, but names exist below it */
	expect_negative("wild.test.rhs.example", 1, "rhs.example", 9);
	expect_negative("test.rhs.example", 1, "rhs.example", 9);
}

/* ---- answers: generic and combined -------------------------------------- */

static void test_generic_with_glue(void **state)
{
	(void)state;
	struct reply *r = ask("www.gen.example", DNS_T_A);
	assert_int_equal(r->rcode, DNS_R_NOERROR);
	assert_int_equal(r->an, 1);
	char t[300];
	const struct rrv *v = find_rr(r, 0, DNS_T_A, 0);
	a_text(v, t);
	assert_string_equal(t, "192.0.2.80");
	assert_int_equal(v->ttl, 300);
	/* NS in authority and the glue for the in-zone name server */
	assert_int_equal(count_rr(r, 1, DNS_T_NS), 1);
	assert_int_equal(r->ar, 1);
	v = find_rr(r, 2, DNS_T_A, 0);
	assert_string_equal(v->owner, "ns1.gen.example");
	a_text(v, t);
	assert_string_equal(t, "192.0.2.53");

	r = ask("www.gen.example", DNS_T_TXT);
	assert_int_equal(r->an, 1);
	txt_text(find_rr(r, 0, DNS_T_TXT, 0), t, sizeof t);
	assert_string_equal(t, "web server");

	r = ask("gen.example", DNS_T_MX);
	assert_int_equal(r->rcode, DNS_R_NOERROR);
	assert_int_equal(r->an, 1);
	v = find_rr(r, 0, DNS_T_MX, 0);
	assert_int_equal(dns_get16(v->rdata), 10);
	size_t off = v->rdata_off + 2;
	uint8_t w[DNS_NAME_MAX + 1];
	assert_true(dns_read_name(r->msg, r->len, &off, w) > 0);
	dns_name_to_text(w, t, sizeof t);
	assert_string_equal(t, "mx.gen.example");

	/* lazy mode (-a): no NS and no glue with positive answers */
	static struct dnsbl_options lazy;
	dnsbl_options_default(&lazy);
	lazy.lazy = 1;
	static const char *const specs[] = {"gen.example:generic:gen.txt"};
	struct dnsbl_snapshot *s;
	struct base_err e;
	assert_int_equal(load_specs(specs, 1, &lazy, NULL, &s, &e), 0);
	struct qopt o = {.id = 1, .edns = -1};
	r = ask_opt(s, "www.gen.example", DNS_T_A, &o);
	assert_int_equal(r->an, 1);
	assert_int_equal(r->ns, 0);
	assert_int_equal(r->ar, 0);
	dnsbl_snapshot_free(s);
}

static void test_combined(void **state)
{
	(void)state;
	expect_listed("2.0.0.127.comb.example", "127.0.0.2", "Combined 127.0.0.2");
	expect_listed("2.0.0.127.sub.comb.example", "127.0.0.2", "Combined 127.0.0.2");
	expect_listed("spam.test.dom.comb.example", "127.0.0.4", "dom spam.test");
	expect_listed("www.comb.example", "192.0.2.80", "hello world");

	expect_negative("3.0.0.127.comb.example", 0, "comb.example", 11);
	expect_negative("3.0.0.127.sub.comb.example", 0, "comb.example", 11);
	expect_negative("other.test.dom.comb.example", 0, "comb.example", 11);
	/* a dnset name under the ip4set subzone is no address */
	expect_negative("spam.test.sub.comb.example", 0, "comb.example", 11);
	/* subzone apexes exist */
	expect_negative("sub.comb.example", 1, "comb.example", 11);
	expect_negative("dom.comb.example", 1, "comb.example", 11);
	expect_negative("0.0.127.comb.example", 1, "comb.example", 11);

	struct reply *r = ask("comb.example", DNS_T_SOA);
	assert_int_equal(r->an, 1);
	struct soa_v s;
	soa_of(r, find_rr(r, 0, DNS_T_SOA, 0), &s);
	assert_string_equal(s.mname, "ns1.comb.example");
	assert_int_equal(s.serial, 11);
	r = ask("2.0.0.127.comb.example", DNS_T_A);
	assert_int_equal(count_rr(r, 1, DNS_T_NS), 1);
}

/* ---- answers: ip4trie, ip6tset, access lists, specials ------------------ */

/* Loads one zone from literal data into its own snapshot. */
static struct dnsbl_snapshot *load_one(const char *spec, const char *file, const char *data,
                                       const struct dnsbl_options *o)
{
	write_file(file, data, strlen(data));
	struct dnsbl_snapshot *s;
	struct base_err e;
	const char *const specs[] = {spec};
	if (load_specs(specs, 1, o, NULL, &s, &e) != 0) fail_msg("%s: %s", spec, e.msg);
	return s;
}

static struct reply *ask_in(const struct dnsbl_snapshot *s, const char *name, uint16_t qtype)
{
	struct qopt o = {.id = 0x6161, .edns = -1};
	return ask_opt(s, name, qtype, &o);
}

static void expect_a(const struct dnsbl_snapshot *s, const char *name, const char *a)
{
	struct reply *r = ask_in(s, name, DNS_T_A);
	if (!a) {
		if (r->rcode != DNS_R_NXDOMAIN)
			fail_msg("%s: rcode %u, want NXDOMAIN", name, r->rcode);
		assert_int_equal(r->an, 0);
		return;
	}
	if (r->rcode != DNS_R_NOERROR || r->an != 1)
		fail_msg("%s: rcode %u, %u answers", name, r->rcode, r->an);
	char t[16];
	a_text(find_rr(r, 0, DNS_T_A, 0), t);
	if (strcmp(t, a)) fail_msg("%s: A %s, want %s", name, t, a);
}

static void test_ip4trie(void **state)
{
	(void)state;
	static struct dnsbl_options o;
	dnsbl_options_default(&o);
	struct dnsbl_snapshot *s = load_one("t.example:ip4trie:trie.txt", "trie.txt",
	                                    ":127.0.0.2:trie $\n"
	                                    "10.0.0.0/9\n"
	                                    "!10.1.0.0/16\n"
	                                    "10.1.2.0/24 :4:inner $\n"
	                                    "192.0.2.7\n"
	                                    "198.51.100 :5:\n",
	                                    &o);
	expect_a(s, "4.3.2.10.t.example", "127.0.0.2");
	expect_a(s, "255.255.127.10.t.example", "127.0.0.2");
	expect_a(s, "1.0.128.10.t.example", NULL);      /* outside the /9 */
	expect_a(s, "5.5.1.10.t.example", NULL);        /* excluded /16 */
	expect_a(s, "7.2.1.10.t.example", "127.0.0.4"); /* longest prefix wins */
	expect_a(s, "7.2.0.192.t.example", "127.0.0.2");
	expect_a(s, "8.2.0.192.t.example", NULL);
	expect_a(s, "9.100.51.198.t.example", "127.0.0.5");
	struct reply *r = ask_in(s, "7.2.1.10.t.example", DNS_T_TXT);
	char t[300];
	txt_text(find_rr(r, 0, DNS_T_TXT, 0), t, sizeof t);
	assert_string_equal(t, "inner 10.1.2.7");
	/* empty non-terminals */
	assert_int_equal(ask_in(s, "2.1.10.t.example", DNS_T_A)->rcode, DNS_R_NOERROR);
	assert_int_equal(ask_in(s, "10.t.example", DNS_T_A)->rcode, DNS_R_NOERROR);
	assert_int_equal(ask_in(s, "11.t.example", DNS_T_A)->rcode, DNS_R_NXDOMAIN);
	assert_int_equal(ask_in(s, "5.1.10.t.example", DNS_T_A)->rcode, DNS_R_NXDOMAIN);
	dnsbl_snapshot_free(s);
}

static void test_ip6tset(void **state)
{
	(void)state;
	static struct dnsbl_options o;
	dnsbl_options_default(&o);
	struct dnsbl_snapshot *s =
	    load_one("t6.example:ip6tset:t6.txt", "t6.txt",
	             ":127.0.0.3:t6 $\n"
	             "2001:db8:1:2\n"
	             "!2001:db8:1:2::5\n"
	             "2001:db8:1:3::/64\n" /* not the /64 form this type wants */
	             "2001:db8:9:9\n",
	             &o);
	char name[300];
	nibbles("2001:db8:1:2::1", 32, "t6.example", name, sizeof name);
	expect_a(s, name, "127.0.0.3");
	struct reply *r = ask_in(s, name, DNS_T_TXT);
	char t[300];
	txt_text(find_rr(r, 0, DNS_T_TXT, 0), t, sizeof t);
	assert_string_equal(t, "t6 2001:db8:1:2::1");
	nibbles("2001:db8:1:2::5", 32, "t6.example", name, sizeof name);
	expect_a(s, name, NULL);
	nibbles("2001:db8:1:3::1", 32, "t6.example", name, sizeof name);
	expect_a(s, name, NULL);
	nibbles("2001:db8:9:9:ffff::", 32, "t6.example", name, sizeof name);
	expect_a(s, name, "127.0.0.3");
	dnsbl_snapshot_free(s);
}

static void test_acl(void **state)
{
	(void)state;
	static struct dnsbl_options o;
	dnsbl_options_default(&o);
	WRITE_LIT("acl-data.txt", "127.0.0.2\n");
	WRITE_LIT("acl.txt", "127.0.0.1 :refuse\n"
	                     "192.0.2.0/24 :ignore\n"
	                     "198.51.100.0/24 :empty\n"
	                     "203.0.113.0/24 :127.0.0.9:acl says $\n"
	                     "2001:db8::/32 :refuse\n");
	static const char *const specs[] = {"a.example:ip4set:acl-data.txt",
	                                    "a.example:acl:acl.txt"};
	struct dnsbl_snapshot *s;
	struct base_err e;
	assert_int_equal(load_specs(specs, 2, &o, NULL, &s, &e), 0);
	uint8_t q[600];
	struct qopt qo = {.id = 1, .edns = -1};
	size_t ql = make_query(q, "2.0.0.127.a.example", DNS_T_TXT, &qo);
	static struct reply r;
	struct dnsbl_peer p = {AF_INET, {127, 0, 0, 1}};
	r.len = dnsbl_answer(s, q, ql, &p, DNSBL_UDP, r.msg, 4096, &r.zone_index, &r.xfr_zone);
	parse_reply(&r);
	assert_int_equal(r.rcode, DNS_R_REFUSED);
	/* ignore: no reply at all */
	struct dnsbl_peer p2 = {AF_INET, {192, 0, 2, 44}};
	assert_int_equal(
	    dnsbl_answer(s, q, ql, &p2, DNSBL_UDP, r.msg, 4096, &r.zone_index, &r.xfr_zone), 0);
	/* empty: the name exists, but nothing is listed for this client */
	struct dnsbl_peer p3 = {AF_INET, {198, 51, 100, 1}};
	r.len = dnsbl_answer(s, q, ql, &p3, DNSBL_UDP, r.msg, 4096, &r.zone_index, &r.xfr_zone);
	parse_reply(&r);
	assert_int_equal(r.an, 0);
	/* a value: every well-formed query is answered with it, $ = the client */
	struct dnsbl_peer p4 = {AF_INET, {203, 0, 113, 5}};
	size_t ql2 = make_query(q, "9.9.9.9.a.example", DNS_T_TXT, &qo);
	r.len = dnsbl_answer(s, q, ql2, &p4, DNSBL_UDP, r.msg, 4096, &r.zone_index, &r.xfr_zone);
	parse_reply(&r);
	assert_int_equal(r.rcode, DNS_R_NOERROR);
	assert_int_equal(r.an, 1);
	char t[300];
	txt_text(find_rr(&r, 0, DNS_T_TXT, 0), t, sizeof t);
	assert_string_equal(t, "acl says 203.0.113.5");
	/* IPv6 clients */
	struct dnsbl_peer p5 = {AF_INET6, {0x20, 0x01, 0x0d, 0xb8, [15] = 1}};
	r.len = dnsbl_answer(s, q, ql, &p5, DNSBL_UDP, r.msg, 4096, &r.zone_index, &r.xfr_zone);
	parse_reply(&r);
	assert_int_equal(r.rcode, DNS_R_REFUSED);
	/* anyone else: normal answers */
	struct dnsbl_peer p6 = {AF_INET, {10, 0, 0, 1}};
	ql = make_query(q, "2.0.0.127.a.example", DNS_T_A, &qo);
	r.len = dnsbl_answer(s, q, ql, &p6, DNSBL_UDP, r.msg, 4096, &r.zone_index, &r.xfr_zone);
	parse_reply(&r);
	assert_int_equal(r.rcode, DNS_R_NOERROR);
	assert_int_equal(r.an, 1);
	dnsbl_snapshot_free(s);
}

static void test_specials_ttl_maxrange_any(void **state)
{
	(void)state;
	static struct dnsbl_options o;
	dnsbl_options_default(&o);
	o.maxttl = 3600;
	base_log_set_level(BASE_LOG_ERROR);
	struct dnsbl_snapshot *s = load_one("sp.example:ip4set:sp.txt", "sp.txt",
	                                    "$SOA 2h ns.sp.example hm.sp.example 5 1h 15m 1w 10m\n"
	                                    "$TTL 5m\n"
	                                    "$MAXRANGE4 /24\n"
	                                    "$1 http://sp.example/lookup?\n"
	                                    ":127.0.0.2:see $1$ for $$5\n"
	                                    "127.0.0.2\n"
	                                    "10.0.0.0/16\n"
	                                    "10.1.1.0/24\n",
	                                    &o);
	struct reply *r = ask_in(s, "2.0.0.127.sp.example", DNS_T_ANY);
	assert_int_equal(r->an, 2);
	assert_int_equal(find_rr(r, 0, DNS_T_A, 0)->ttl, 300);
	char t[300];
	txt_text(find_rr(r, 0, DNS_T_TXT, 0), t, sizeof t);
	assert_string_equal(t, "see http://sp.example/lookup?127.0.0.2 for $5");
	/* the SOA's own TTL is capped by -t's maximum */
	r = ask_in(s, "sp.example", DNS_T_SOA);
	assert_int_equal(find_rr(r, 0, DNS_T_SOA, 0)->ttl, 3600);
	/* a range wider than $MAXRANGE4 is skipped */
	expect_a(s, "1.0.0.10.sp.example", NULL);
	expect_a(s, "1.1.1.10.sp.example", "127.0.0.2");
	dnsbl_snapshot_free(s);

	/* --any minimal: one RRset */
	static struct dnsbl_options m;
	dnsbl_options_default(&m);
	m.any_mode = DNSBL_ANY_MINIMAL;
	s = load_one("sp.example:ip4set:sp.txt", "sp.txt", ":127.0.0.2:x $\n127.0.0.2\n", &m);
	r = ask_in(s, "2.0.0.127.sp.example", DNS_T_ANY);
	assert_int_equal(r->rcode, DNS_R_NOERROR);
	assert_int_equal(r->an, 1);
	assert_int_equal(count_rr(r, 0, DNS_T_A), 1);
	dnsbl_snapshot_free(s);
}

/* ---- the master-file dump ----------------------------------------------- */

static void test_dump_text(void **state)
{
	(void)state;
	static struct dnsbl_options o;
	dnsbl_options_default(&o);
	static const char *const specs[] = {"bl.example:ip4set:bl.txt", "rhs.example:dnset:dn.txt"};
	struct dnsbl_snapshot *s;
	struct base_err e;
	assert_int_equal(load_specs(specs, 2, &o, NULL, &s, &e), 0);
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	assert_int_equal(dnsbl_dump_text(s, f, &e), 0);
	assert_int_equal(fclose(f), 0);
	static const char *lines[] = {
	    "\n$ORIGIN bl.example.\n",
	    "\n@\t3600\tSOA\tns1.bl.example.\thostmaster.bl.example.\t(42 3600 900 604800 600)\n",
	    "\n@\t86400\tNS\tns1.bl.example.\n",
	    "\n@\t86400\tNS\tns2.bl.example.\n",
	    "\n2.0.0.127\t2100\tA\t127.0.0.2\n",
	    "\n2.0.0.127\t2100\tTXT\t\"Listed 127.0.0.2\"\n",
	    "\n*.2.0.192\t2100\tA\t127.0.0.3\n",
	    "\n*.2.0.192\t2100\tTXT\t\"Block ",
	    "\n99.2.0.192\t2100\tCNAME\texcluded\n",
	    "\n*.113.0.203\t2100\tA\t127.0.0.5\n",
	    "\n*.113.0.203\t2100\tTXT\t\"Class C\"\n",
	    "\n10.100.51.198\t2100\tA\t127.0.0.4\n",
	    "\n20.100.51.198\t2100\tA\t127.0.0.4\n",
	    "\n*.10\t2100\tA\t127.0.0.2\n",
	    "\n3.2.1.10\t2100\tCNAME\texcluded\n",
	    "\n*.2.1.10\t2100\tA\t127.0.0.2\n", /* the /8 repeated where 10.1.2.3 splits it */
	    "\n*.1.10\t2100\tA\t127.0.0.2\n",
	    "\n*.16.172\t2100\tA\t127.0.0.6\n",
	    "\n*.31.172\t2100\tA\t127.0.0.6\n",
	    "\n10.0.0.127\t2100\tA\t127.0.0.2\n",
	    "\n$ORIGIN rhs.example.\n",
	    "\nspam.test\t2100\tA\t127.0.0.2\n",
	    "\nspam.test\t2100\tTXT\t\"Domain spam.test listed\"\n",
	    "\n*.wild.test\t2100\tA\t127.0.0.3\n",
	    "\n*.wild.test\t2100\tTXT\t\"Wild wild.test\"\n",
	    "\nok.wild.test\t2100\tCNAME\texcluded\n",
	    "\nboth.test\t2100\tA\t127.0.0.4\n",
	    "\n*.both.test\t2100\tA\t127.0.0.4\n",
	};
	for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
		if (!strstr(buf, lines[i]))
			fail_msg("line %zu '%s' missing from:\n%s", i, lines[i] + 1, buf);
	assert_memory_equal(buf, "; zone dump made ", 17);
	/* not listed, so not dumped */
	assert_null(strstr(buf, "\n11.0.0.127\t"));
	assert_null(strstr(buf, "\n*.15.172\t"));
	assert_null(strstr(buf, "\n*.32.172\t"));
	/* the bl.example zone comes before rhs.example */
	assert_true(strstr(buf, "$ORIGIN bl.example.") < strstr(buf, "$ORIGIN rhs.example."));
	free(buf);
	dnsbl_snapshot_free(s);
}

/* Regression test for a fixed bug, as it was: a $SOA whose MNAME is exactly 256 bytes in
 * wire form is accepted (dns_name_from_text's off-by-one, see test_dns.c),
 * and the server then writes that name into replies: the SOA record in a
 * reply carries a 256-byte name, which no resolver (nor dns_read_name)
 * accepts, so every negative answer from the zone is malformed. */
static void test_soa_name_256_bytes_rejected(void **state)
{
	(void)state;
	static struct dnsbl_options o;
	dnsbl_options_default(&o);
	char data[600];
	size_t n = 0;
	n += (size_t)snprintf(data + n, sizeof data - n, "$SOA 1h ");
	for (int l = 0; l < 4; l++) {
		int ll = l < 3 ? 63 : 62;
		memset(data + n, 'a' + l, (size_t)ll);
		n += (size_t)ll;
		data[n++] = l < 3 ? '.' : ' ';
	}
	n += (size_t)snprintf(data + n, sizeof data - n, "hm.x.example 1 1h 1h 1w 1m\n127.0.0.2\n");
	write_file("soa256.txt", data, n);
	static const char *const specs[] = {"x.example:ip4set:soa256.txt"};
	struct dnsbl_snapshot *s;
	struct base_err e;
	int saved;
	char cap[256], out[4096];
	tmp_path(cap, sizeof cap, "soa256-stderr.txt");
	base_log_set_level(BASE_LOG_WARN);
	capture_stderr_begin(&saved, cap);
	int r = load_specs(specs, 1, &o, NULL, &s, &e);
	capture_stderr_end(saved, cap, out, sizeof out);
	base_log_set_level(BASE_LOG_ERROR);
	assert_int_equal(r, 0);
	/* the $SOA line must be refused with a warning ... */
	int warned = strstr(out, "soa256.txt:1") != NULL;
	/* ... and the replies must stay well-formed */
	uint8_t q[600];
	struct qopt qo = {.id = 1, .edns = -1};
	size_t ql = make_query(q, "3.0.0.127.x.example", DNS_T_A, &qo);
	static uint8_t msg[4096];
	int zi, xz;
	size_t len = dnsbl_answer(s, q, ql, &localhost, DNSBL_UDP, msg, sizeof msg, &zi, &xz);
	int wellformed = 1;
	size_t off = DNS_HDR_SIZE;
	uint8_t w[DNS_NAME_MAX + 1];
	if (dns_read_name(msg, len, &off, w) < 0) wellformed = 0;
	off += 4;
	for (unsigned i = 0; wellformed && i < dns_get16(msg + 8); i++) {
		struct dns_rr rr;
		if (dns_read_rr(msg, len, &off, &rr) < 0) {
			wellformed = 0;
			break;
		}
		size_t ro = rr.rdata_off;
		if (rr.type == DNS_T_SOA && dns_read_name(msg, len, &ro, w) < 0) wellformed = 0;
	}
	dnsbl_snapshot_free(s);
	if (!warned || !wellformed)
		fail_msg("256-byte SOA MNAME: warned=%d, reply well-formed=%d", warned, wellformed);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ip4_parse_range_forms),
	    cmocka_unit_test(test_ip4_parse_range_invalid),
	    cmocka_unit_test(test_ip4_prefix_and_addr), cmocka_unit_test(test_ip6_parse_and_text),
	    cmocka_unit_test(test_query_classify), cmocka_unit_test(test_zonespec),
	    cmocka_unit_test(test_snapshot_zones), cmocka_unit_test(test_load_warnings),
	    cmocka_unit_test(test_load_errors), cmocka_unit_test(test_reload),
	    cmocka_unit_test(test_ip4set_listed), cmocka_unit_test(test_ip4set_unlisted),
	    cmocka_unit_test(test_ip4set_empty_non_terminal),
	    cmocka_unit_test(test_ip4set_sections), cmocka_unit_test(test_apex),
	    cmocka_unit_test(test_refused_and_classes),
	    cmocka_unit_test(test_malformed_and_opcodes), cmocka_unit_test(test_edns),
	    cmocka_unit_test(test_truncation), cmocka_unit_test(test_axfr_over_udp_and_tcp),
	    cmocka_unit_test(test_ip6trie),
	    cmocka_unit_test(test_ip6_four_nibble_ent_is_nodata),
	    cmocka_unit_test(test_dnset), cmocka_unit_test(test_generic_with_glue),
	    cmocka_unit_test(test_combined), cmocka_unit_test(test_ip4trie),
	    cmocka_unit_test(test_ip6tset), cmocka_unit_test(test_acl),
	    cmocka_unit_test(test_specials_ttl_maxrange_any), cmocka_unit_test(test_dump_text),
	    cmocka_unit_test(test_soa_name_256_bytes_rejected),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
