/*
 * xfr.c — whole-zone output: AXFR (RFC 5936) messages and the BIND
 * master-file dump of `-d`.
 *
 * Both walk the same record stream: the SOA, the apex NS set, then every
 * dataset's records as `rbldnsd -d` writes them (blocks as wildcards,
 * exclusions as CNAMEs to "excluded" inside the zone, coarser entries
 * repeated as wildcards where finer ones would hide them), and for AXFR the
 * SOA again at the end. An AXFR is rendered once into a buffer of framed
 * messages (2-byte length, message), and the server sends that buffer,
 * patching each message's id.
 */
#include "dnsbl/int.h"

#include <stdlib.h>
#include <string.h>

/* ---- record stream ----------------------------------------------------- */

static const struct zone *zone_by_index(const struct dnsbl_snapshot *s, int index)
{
	for (unsigned k = 0; k < s->nzones; k++)
		if ((int)s->zones[k].index == index) return &s->zones[k];
	return NULL;
}

static void soa_rdata(const struct zone *z, struct base_buf *b)
{
	const struct ds_soa *soa = z->soa;
	uint8_t n[20];
	base_buf_append(b, soa->mname.wire, soa->mname.len);
	base_buf_append(b, soa->rname.wire, soa->rname.len);
	dns_put32(n, z->serial);
	dns_put32(n + 4, soa->refresh);
	dns_put32(n + 8, soa->retry);
	dns_put32(n + 12, soa->expire);
	dns_put32(n + 16, soa->minimum);
	base_buf_append(b, n, 20);
}

static void walk_zone(const struct zone *z, struct dnsbl_dump *sink, int soa_twice)
{
	static const uint8_t apex[1] = {0};
	struct base_buf b;
	base_buf_init(&b);
	if (z->soa) {
		soa_rdata(z, &b);
		sink->rr(sink, apex, DNS_T_SOA, z->soa->ttl, (uint8_t *)b.data, b.len);
	}
	for (unsigned i = 0; i < z->nns; i++) sink->rr(sink, apex, DNS_T_NS, z->ns_ttl, z->ns[i].wire, z->ns[i].len);
	for (unsigned i = 0; i < z->nds; i++)
		if (z->ds[i] && z->ds[i]->type->dump) z->ds[i]->type->dump(z->ds[i], sink);
	if (z->soa && soa_twice) sink->rr(sink, apex, DNS_T_SOA, z->soa->ttl, (uint8_t *)b.data, b.len);
	base_buf_free(&b);
}

/* ---- AXFR -------------------------------------------------------------- */

#define XFR_MSG 16384

struct dnsbl_xfr {
	struct base_buf out;       /* framed messages */
	size_t pos;
	const struct zone *z;
	uint8_t msg[XFR_MSG];
	struct dns_builder b;
	int open;
	uint16_t id;
	const struct dns_query *q;
	int first;
	struct dnsbl_dump sink;
	const char *kind;          /* "AXFR" or "IXFR": what was sent */
};

static void xfr_flush(struct dnsbl_xfr *x)
{
	if (!x->open) return;
	size_t n = dns_b_finish(&x->b);
	uint8_t len[2];
	dns_put16(len, (uint16_t)n);
	base_buf_append(&x->out, len, 2);
	base_buf_append(&x->out, x->msg, n);
	x->open = 0;
}

static void xfr_open(struct dnsbl_xfr *x)
{
	if (x->first) {
		dns_b_start(&x->b, x->msg, sizeof x->msg, sizeof x->msg, x->q, DNS_F_AA, DNS_R_NOERROR);
		x->first = 0;
	} else {
		dns_b_init(&x->b, x->msg, sizeof x->msg, sizeof x->msg);
		dns_put16(x->msg, x->q->id);
		dns_put16(x->msg + 2, DNS_F_QR | DNS_F_AA);
	}
	x->open = 1;
}

static int xfr_put(struct dnsbl_xfr *x, const uint8_t *owner, uint16_t type, uint32_t ttl, const uint8_t *rd,
		   size_t rdlen)
{
	if (dns_b_rr_begin(&x->b, owner, 0, type, DNS_C_IN, ttl) < 0) return -1;
	int r = 0;
	switch (type) {
	case DNS_T_NS: r = dns_b_rd_name(&x->b, rd, 1); break;
	case DNS_T_CNAME: {
		uint8_t w[DNS_NAME_MAX + 1];
		size_t o = 0;
		while (rd[o]) o += 1u + rd[o];
		if (o + x->z->name.len > DNS_NAME_MAX + 1) {
			dns_b_rr_abort(&x->b);
			x->b.overflow = 0;
			return 0;
		}
		memcpy(w, rd, o);
		memcpy(w + o, x->z->name.wire, x->z->name.len);
		r = dns_b_rd_name(&x->b, w, 1);
		break;
	}
	case DNS_T_SOA: {
		size_t o = 0;
		/* mname and rname, then the five numbers */
		const uint8_t *m = rd;
		while (m[o]) o += 1u + m[o];
		const uint8_t *rn = rd + o + 1;
		size_t o2 = 0;
		while (rn[o2]) o2 += 1u + rn[o2];
		r = dns_b_rd_name(&x->b, m, 1);
		if (!r) r = dns_b_rd_name(&x->b, rn, 1);
		if (!r) r = dns_b_rd_bytes(&x->b, rn + o2 + 1, 20);
		break;
	}
	case DNS_T_MX:
		r = dns_b_rd_bytes(&x->b, rd, 2);
		if (!r) r = dns_b_rd_name(&x->b, rd + 2, 1);
		break;
	default: r = dns_b_rd_bytes(&x->b, rd, rdlen); break;
	}
	if (r < 0) {
		dns_b_rr_abort(&x->b);
		return -1;
	}
	dns_b_rr_end(&x->b);
	return 0;
}

static void xfr_rr(struct dnsbl_dump *d, const uint8_t *owner, uint16_t type, uint32_t ttl, const uint8_t *rd,
		   size_t rdlen)
{
	struct dnsbl_xfr *x = d->ctx;
	uint8_t w[DNS_NAME_MAX + 1];
	size_t o = 0;
	while (owner[o]) o += 1u + owner[o];
	if (o + x->z->name.len > DNS_NAME_MAX + 1) return; /* cannot be named in this zone */
	memcpy(w, owner, o);
	memcpy(w + o, x->z->name.wire, x->z->name.len);
	if (!x->open) xfr_open(x);
	if (xfr_put(x, w, type, ttl, rd, rdlen) == 0) return;
	if (x->b.count[0] == 0) return; /* a record larger than a message: skip it */
	xfr_flush(x);
	xfr_open(x);
	x->b.overflow = 0;
	xfr_put(x, w, type, ttl, rd, rdlen);
}

/* Sends the stored records of one side of a delta. */
static void put_stored(struct dnsbl_xfr *x, const struct base_buf *b)
{
	const uint8_t *r = (const uint8_t *)b->data, *end = r + b->len;
	while (r < end) {
		size_t ol = r[0];
		const uint8_t *owner = r + 1, *h = r + 1 + ol;
		xfr_rr(&x->sink, owner, dns_get16(h), dns_get32(h + 2), h + 8, dns_get16(h + 6));
		r += journal_rr_size(r);
	}
}

/* The chain of deltas from serial to the zone's current version: the index
 * of its first delta, or -1 when the journal does not reach back that far. */
static int chain_from(const struct zone *z, uint32_t serial)
{
	for (unsigned i = 0; i < z->ndeltas; i++)
		if (z->deltas[i]->from == serial) return (int)i;
	return -1;
}

/* The zone's SOA record with the given serial. */
static void put_soa_serial(struct dnsbl_xfr *x, const struct zone *z, uint32_t serial)
{
	static const uint8_t apex[1] = {0};
	struct base_buf b;
	base_buf_init(&b);
	soa_rdata(z, &b);
	dns_put32((uint8_t *)b.data + b.len - 20, serial);
	xfr_rr(&x->sink, apex, DNS_T_SOA, z->soa->ttl, (uint8_t *)b.data, b.len);
	base_buf_free(&b);
}

/* RFC 1995: the current SOA, then per version the old SOA, the deleted
 * records, the new SOA and the added records, and the current SOA again;
 * a client that is up to date (first == ndeltas) gets the current SOA alone. */
static void walk_ixfr(struct dnsbl_xfr *x, const struct zone *z, unsigned first)
{
	put_soa_serial(x, z, z->serial);
	if (first == z->ndeltas) return;
	for (unsigned i = first; i < z->ndeltas; i++) {
		const struct ixfr_delta *d = z->deltas[i];
		put_soa_serial(x, z, d->from);
		put_stored(x, &d->del);
		put_soa_serial(x, z, d->to);
		put_stored(x, &d->add);
	}
	put_soa_serial(x, z, z->serial);
}

struct dnsbl_xfr *dnsbl_xfr_start(const struct dnsbl_snapshot *s, int zone, const uint8_t *query, size_t qlen)
{
	const struct zone *z = zone_by_index(s, zone);
	struct dns_query q;
	if (!z || dns_parse_query(query, qlen, &q, NULL) != DNS_PARSE_OK) return NULL;
	struct dnsbl_xfr *x = base_xcalloc(1, sizeof *x);
	base_buf_init(&x->out);
	x->z = z;
	x->q = &q;
	x->first = 1;
	x->sink.rr = xfr_rr;
	x->sink.ctx = x;
	x->kind = "AXFR";
	int first = -1;
	if (q.qtype == DNS_T_IXFR && q.has_ixfr_serial && z->soa) {
		if (q.ixfr_serial == z->serial) first = (int)z->ndeltas; /* up to date: the SOA alone */
		else first = chain_from(z, q.ixfr_serial);
	}
	if (first >= 0) {
		x->kind = "IXFR";
		walk_ixfr(x, z, (unsigned)first);
	} else {
		walk_zone(z, &x->sink, 1); /* AXFR, or an IXFR the journal cannot serve */
	}
	if (!x->open && !x->out.len) xfr_open(x); /* an empty zone still gets an answer */
	xfr_flush(x);
	x->q = NULL;
	return x;
}

const char *dnsbl_xfr_kind(const struct dnsbl_xfr *x)
{
	return x->kind;
}

size_t dnsbl_xfr_next(struct dnsbl_xfr *x, uint8_t *out, size_t cap)
{
	if (x->pos + 2 > x->out.len) return 0;
	size_t n = dns_get16((uint8_t *)x->out.data + x->pos);
	if (n > cap) return 0;
	memcpy(out, x->out.data + x->pos + 2, n);
	x->pos += 2 + n;
	return n;
}

void dnsbl_xfr_free(struct dnsbl_xfr *x)
{
	if (!x) return;
	base_buf_free(&x->out);
	free(x);
}

/* ---- master file ------------------------------------------------------- */

struct textsink {
	struct dnsbl_dump d;
	FILE *f;
};

static void name_text(const uint8_t *w, char *out, size_t sz)
{
	if (!w[0]) {
		snprintf(out, sz, "@");
		return;
	}
	if (dns_name_to_text(w, out, sz) < 0) snprintf(out, sz, "?");
	/* keep the wildcard star unescaped */
}

static void text_rr(struct dnsbl_dump *d, const uint8_t *owner, uint16_t type, uint32_t ttl, const uint8_t *rd,
		    size_t rdlen)
{
	FILE *f = ((struct textsink *)d)->f;
	char on[DNS_NAME_MAX * 4 + 2], tb[16];
	name_text(owner, on, sizeof on);
	fprintf(f, "%s\t%u\t%s\t", on, ttl, dns_type_name(type, tb));
	char a[DNS_NAME_MAX * 4 + 2], b[DNS_NAME_MAX * 4 + 2];
	switch (type) {
	case DNS_T_A: fprintf(f, "%u.%u.%u.%u\n", rd[0], rd[1], rd[2], rd[3]); break;
	case DNS_T_TXT:
		fputc('"', f);
		for (size_t i = 1; i < rdlen; i++) {
			if (rd[i] == '"' || rd[i] == '\\') fputc('\\', f);
			fputc(rd[i], f);
		}
		fputs("\"\n", f);
		break;
	case DNS_T_CNAME: dns_name_to_text(rd, a, sizeof a); fprintf(f, "%s\n", a); break;
	case DNS_T_NS: dns_name_to_text(rd, a, sizeof a); fprintf(f, "%s.\n", a); break;
	case DNS_T_MX: dns_name_to_text(rd + 2, a, sizeof a); fprintf(f, "%u\t%s.\n", dns_get16(rd), a); break;
	case DNS_T_SOA: {
		size_t o = 0;
		while (rd[o]) o += 1u + rd[o];
		const uint8_t *rn = rd + o + 1;
		size_t o2 = 0;
		while (rn[o2]) o2 += 1u + rn[o2];
		const uint8_t *nums = rn + o2 + 1;
		dns_name_to_text(rd, a, sizeof a);
		dns_name_to_text(rn, b, sizeof b);
		fprintf(f, "%s.\t%s.\t(%u %u %u %u %u)\n", a, b, dns_get32(nums), dns_get32(nums + 4),
			dns_get32(nums + 8), dns_get32(nums + 12), dns_get32(nums + 16));
		break;
	}
	default: fprintf(f, "\\# %zu\n", rdlen); break;
	}
}

int dnsbl_dump_text(const struct dnsbl_snapshot *s, FILE *out, struct base_err *err)
{
	time_t now = base_now();
	fprintf(out, "; zone dump made %s", ctime(&now));
	fprintf(out, "; mailrep version %s\n", MAILREP_VERSION);
	for (unsigned k = 0; k < s->nzones; k++) {
		const struct zone *z = &s->zones[k];
		if (!z->loaded) return base_errf(err, "zone %s is not loaded", z->text);
		fprintf(out, "$ORIGIN %s.\n", z->text);
		struct textsink ts = {{text_rr, NULL}, out};
		walk_zone(z, &ts.d, 0);
	}
	return 0;
}
