/*
 * journal.c — zone serials that advance on every change, and the deltas
 * between versions that IXFR (RFC 1995) sends.
 *
 * When the server publishes a new snapshot, dnsbl_journal_update compares
 * each zone with the same zone in the snapshot it replaces. A zone whose
 * datasets are the very same objects has not changed. Otherwise both
 * versions are rendered into their record streams (the records an AXFR
 * would send, less the SOA), each stream is sorted, and one merge pass
 * yields the records deleted and added. A non-empty difference is a new
 * version: its serial must be greater (RFC 1982) than the old one, so when
 * the data's own serial ($SOA, or the file time) did not advance, the old
 * serial plus one is used.
 *
 * Invariants:
 * - A zone's deltas are ordered oldest first and form a chain:
 *   deltas[i]->to == deltas[i+1]->from, and the last one ends at the zone's
 *   serial.
 * - A delta is immutable once made and shared by every snapshot that holds
 *   it (refcounted), so readers (the TCP thread) never lock.
 * - A zone keeps at most `keep` deltas and at most JOURNAL_MAX_BYTES of
 *   them; older ones are dropped and a secondary that old gets an AXFR.
 * - With keep = 0 (the server passes that until a secondary has asked for
 *   an IXFR or --notify is given) no difference is computed: changed
 *   datasets simply make a new serial, and the chain starts afresh.
 *
 * A record is stored as: owner length (1 byte), owner (relative wire name,
 * with its final zero), type (2), TTL (4), rdata length (2), rdata.
 */
#include "dnsbl/int.h"

#include <stdlib.h>
#include <string.h>

#define JOURNAL_MAX_BYTES (256u << 20)

struct rrlist {
	struct base_buf b;
	size_t *off;
	size_t n, cap;
};

struct rrsink {
	struct dnsbl_dump d;
	struct rrlist *l;
};

static void rr_collect(struct dnsbl_dump *d, const uint8_t *owner, uint16_t type, uint32_t ttl,
                       const uint8_t *rd, size_t rdlen)
{
	struct rrlist *l = ((struct rrsink *)d)->l;
	if (type == DNS_T_SOA || rdlen > 65535) return;
	size_t ol = 0;
	while (owner[ol]) ol += 1u + owner[ol];
	ol++;
	if (ol > DNS_NAME_MAX + 1) return;
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 1024;
		l->off = base_xrealloc(l->off, l->cap * sizeof *l->off);
	}
	l->off[l->n++] = l->b.len;
	uint8_t h[9];
	h[0] = (uint8_t)ol;
	base_buf_append(&l->b, h, 1);
	base_buf_append(&l->b, owner, ol);
	dns_put16(h, type);
	dns_put32(h + 2, ttl);
	dns_put16(h + 6, (uint16_t)rdlen);
	base_buf_append(&l->b, h, 8);
	base_buf_append(&l->b, rd, rdlen);
}

size_t journal_rr_size(const uint8_t *r)
{
	size_t ol = r[0];
	return 1 + ol + 8 + dns_get16(r + 1 + ol + 6);
}

static int rr_cmp(const void *a, const void *b, void *base)
{
	const uint8_t *x = (const uint8_t *)base + *(const size_t *)a;
	const uint8_t *y = (const uint8_t *)base + *(const size_t *)b;
	size_t lx = journal_rr_size(x), ly = journal_rr_size(y);
	int c = memcmp(x, y, lx < ly ? lx : ly);
	if (c) return c;
	return lx < ly ? -1 : lx > ly;
}

static void rrlist_of(const struct zone *z, struct rrlist *l)
{
	memset(l, 0, sizeof *l);
	base_buf_init(&l->b);
	struct rrsink s = {{rr_collect, NULL}, l};
	for (unsigned i = 0; i < z->nds; i++)
		if (z->ds[i] && z->ds[i]->type->dump) z->ds[i]->type->dump(z->ds[i], &s.d);
	for (unsigned i = 0; i < z->nns; i++) {
		static const uint8_t apex[1] = {0};
		rr_collect(&s.d, apex, DNS_T_NS, z->ns_ttl, z->ns[i].wire, z->ns[i].len);
	}
	if (l->n) qsort_r(l->off, l->n, sizeof *l->off, rr_cmp, l->b.data);
}

static void rrlist_free(struct rrlist *l)
{
	base_buf_free(&l->b);
	free(l->off);
}

static void delta_put(struct base_buf *b, size_t *n, const uint8_t *r)
{
	base_buf_append(b, r, journal_rr_size(r));
	(*n)++;
}

/* Merges two sorted lists; returns a delta, or NULL when they are equal. */
static struct ixfr_delta *diff(const struct rrlist *o, const struct rrlist *n)
{
	struct ixfr_delta *d = base_xcalloc(1, sizeof *d);
	base_buf_init(&d->del);
	base_buf_init(&d->add);
	size_t i = 0, j = 0;
	while (i < o->n || j < n->n) {
		const uint8_t *x = i < o->n ? (const uint8_t *)o->b.data + o->off[i] : NULL;
		const uint8_t *y = j < n->n ? (const uint8_t *)n->b.data + n->off[j] : NULL;
		int c;
		if (!x)
			c = 1;
		else if (!y)
			c = -1;
		else {
			size_t lx = journal_rr_size(x), ly = journal_rr_size(y);
			c = memcmp(x, y, lx < ly ? lx : ly);
			if (!c) c = lx < ly ? -1 : lx > ly;
		}
		if (c < 0) {
			delta_put(&d->del, &d->ndel, x);
			i++;
		} else if (c > 0) {
			delta_put(&d->add, &d->nadd, y);
			j++;
		} else {
			/* the same record may appear twice in a stream: skip all copies */
			const uint8_t *same = x;
			size_t ls = journal_rr_size(same);
			while (i < o->n &&
			       !memcmp((const uint8_t *)o->b.data + o->off[i], same, ls))
				i++;
			while (j < n->n &&
			       !memcmp((const uint8_t *)n->b.data + n->off[j], same, ls))
				j++;
		}
	}
	if (!d->ndel && !d->nadd) {
		delta_release(d);
		return NULL;
	}
	atomic_store(&d->refs, 1);
	return d;
}

void delta_release(struct ixfr_delta *d)
{
	if (!d) return;
	if (atomic_load(&d->refs) > 0 && atomic_fetch_sub(&d->refs, 1) > 1) return;
	base_buf_free(&d->del);
	base_buf_free(&d->add);
	free(d);
}

void journal_zone_free(struct zone *z)
{
	for (unsigned i = 0; i < z->ndeltas; i++) delta_release(z->deltas[i]);
	free(z->deltas);
	z->deltas = NULL;
	z->ndeltas = 0;
}

/* RFC 1982 serial number arithmetic: a > b. */
static int serial_gt(uint32_t a, uint32_t b)
{
	return a != b && (uint32_t)(a - b) < 0x80000000u;
}

/* A new version's serial must be greater than the old one: when the data's
 * own serial did not move forward, the old one plus one (0 skipped). */
static void advance_serial(struct zone *z, const struct zone *o)
{
	if (!serial_gt(z->serial, o->serial)) z->serial = o->serial + 1 ? o->serial + 1 : 1;
}

static const struct zone *same_zone(const struct dnsbl_snapshot *s, const struct zone *z)
{
	for (unsigned k = 0; k < s->nzones; k++)
		if (s->zones[k].index == z->index) return &s->zones[k];
	return NULL;
}

static int same_data(const struct zone *a, const struct zone *b)
{
	if (a->nds != b->nds || a->soa != b->soa || a->ns != b->ns) return 0;
	for (unsigned i = 0; i < a->nds; i++)
		if (a->ds[i] != b->ds[i]) return 0;
	return 1;
}

static void inherit(struct zone *z, const struct zone *o, struct ixfr_delta *extra, unsigned keep)
{
	unsigned n = o->ndeltas + (extra ? 1u : 0u);
	unsigned first = n > keep ? n - keep : 0;
	size_t bytes = extra ? extra->del.len + extra->add.len : 0;
	/* newest first when counting the byte budget */
	for (unsigned i = o->ndeltas; i-- > first;) {
		bytes += o->deltas[i]->del.len + o->deltas[i]->add.len;
		if (bytes > JOURNAL_MAX_BYTES) {
			first = i + 1;
			break;
		}
	}
	if (first > o->ndeltas) first = o->ndeltas;
	z->ndeltas = 0;
	z->deltas = n - first ? base_xcalloc(n - first, sizeof *z->deltas) : NULL;
	for (unsigned i = first; i < o->ndeltas; i++) {
		atomic_fetch_add(&o->deltas[i]->refs, 1);
		z->deltas[z->ndeltas++] = o->deltas[i];
	}
	if (extra) z->deltas[z->ndeltas++] = extra;
}

unsigned dnsbl_journal_update(const struct dnsbl_snapshot *prev, struct dnsbl_snapshot *next,
                              unsigned keep, int *changed)
{
	unsigned nchanged = 0;
	for (unsigned k = 0; k < next->nzones; k++) {
		struct zone *z = &next->zones[k];
		if (changed) changed[k] = 0;
		const struct zone *o = prev ? same_zone(prev, z) : NULL;
		if (!o || !o->loaded || !z->loaded) continue;
		if (same_data(o, z)) {
			z->serial = o->serial;
			inherit(z, o, NULL, keep);
			continue;
		}
		if (!keep) {
			/* no journal: new datasets are a new version, without the
			 * (costly) record-by-record comparison */
			advance_serial(z, o);
			base_info("zone %s: serial %u -> %u", z->text, o->serial, z->serial);
			if (changed) changed[k] = 1;
			nchanged++;
			continue;
		}
		struct rrlist lo, ln;
		rrlist_of(o, &lo);
		rrlist_of(z, &ln);
		struct ixfr_delta *d = diff(&lo, &ln);
		rrlist_free(&lo);
		rrlist_free(&ln);
		if (!d) {
			z->serial = o->serial;
			inherit(z, o, NULL, keep);
			continue;
		}
		advance_serial(z, o);
		d->from = o->serial;
		d->to = z->serial;
		base_info("zone %s: serial %u -> %u (%zu deleted, %zu added)", z->text, o->serial,
		          z->serial, d->ndel, d->nadd);
		inherit(z, o, d, keep);
		if (changed) changed[k] = 1;
		nchanged++;
	}
	return nchanged;
}
