/*
 * ip4set.c — the ip4set and ip4tset dataset types.
 *
 * An ip4set keeps rbldnsd's four classes of entries: exact addresses
 * (E32) and whole /24, /16 and /8 blocks. A range is cut into the fewest
 * class entries that cover it exactly. A query looks in E32 first, then
 * E24, E16 and E08, and the first class with any entry at the (masked)
 * address decides; an exclusion there means "not listed". This is what
 * rbldnsd does, so answers are identical.
 *
 * Layout after loading, per class (the invariants):
 *  - keys[0..n) sorted ascending, duplicates allowed (several values);
 *  - the vid of entry i is run_vid[r] for the last run r with
 *    run_start[r] <= i; at one key an exclusion (vid 0) is alone;
 *  - for E32 with many keys, idx16[h] is the first i with keys[i] >> 16 >= h.
 * That is 4 bytes per entry plus one run per change of value, instead of
 * rbldnsd's 16 bytes per entry.
 *
 * ip4tset is the same structure with only E32 and one value.
 */
#include "dnsbl/int.h"

#include <stdlib.h>
#include <string.h>

enum { E32, E24, E16, E08, NCLASS };
static const uint32_t class_mask[NCLASS] = {0xffffffffu, 0xffffff00u, 0xffff0000u, 0xff000000u};

struct ent {
	uint32_t key, vid;
};

struct ip4class {
	uint32_t n, nruns;
	uint32_t *keys;
	uint32_t *run_start, *run_vid;
	uint32_t *idx16; /* 65537 entries, or NULL */
	/* load time */
	struct ent *tmp;
	size_t tmpn, tmpcap;
};

struct ip4set {
	struct ip4class c[NCLASS];
	int trivial;          /* ip4tset */
	int have_default;     /* ip4tset: the first ':' line was seen */
	uint32_t tvid;        /* ip4tset's single value */
};

static struct ip4set *set_of(const struct ds *ds)
{
	return ds->data;
}

static void add_ent(struct ip4class *c, uint32_t key, uint32_t vid)
{
	if (c->tmpn == c->tmpcap) {
		c->tmpcap = c->tmpcap ? c->tmpcap * 2 : 1024;
		c->tmp = base_xrealloc(c->tmp, c->tmpcap * sizeof *c->tmp);
	}
	c->tmp[c->tmpn].key = key;
	c->tmp[c->tmpn].vid = vid;
	c->tmpn++;
}

/* Cuts [a,b] into class entries, as rbldnsd does. */
static void add_range(struct ip4set *s, uint32_t a, uint32_t b, uint32_t vid)
{
	uint64_t lo = a, hi = b;
	for (int cls = E32; cls < E08; cls++) {
		unsigned shift = 8u * (unsigned)cls;
		if ((lo | 255) >= hi) {
			if (hi - lo == 255) {
				lo >>= 8;
				hi >>= 8;
				add_ent(&s->c[cls + 1], (uint32_t)(lo << (shift + 8)), vid);
				return;
			}
			for (uint64_t x = lo; x <= hi; x++) add_ent(&s->c[cls], (uint32_t)(x << shift), vid);
			return;
		}
		if (lo & 255) {
			for (uint64_t x = lo; x <= (lo | 255); x++) add_ent(&s->c[cls], (uint32_t)(x << shift), vid);
			lo = (lo >> 8) + 1;
		} else {
			lo >>= 8;
		}
		if ((hi & 255) != 255) {
			for (uint64_t x = hi & ~(uint64_t)255; x <= hi; x++)
				add_ent(&s->c[cls], (uint32_t)(x << shift), vid);
			hi = (hi >> 8) - 1;
		} else {
			hi >>= 8;
		}
		if (lo > hi) return;
	}
	for (uint64_t x = lo; x <= hi; x++) add_ent(&s->c[E08], (uint32_t)(x << 24), vid);
}

static int ip4set_start(struct ds *ds)
{
	if (!ds->data) ds->data = base_xcalloc(1, sizeof(struct ip4set));
	ds->defvid = DS_VID_DEF; /* a ':' default line lasts until the end of its file */
	return 0;
}

static int ip4tset_start(struct ds *ds)
{
	if (!ds->data) {
		struct ip4set *s = base_xcalloc(1, sizeof(struct ip4set));
		s->trivial = 1;
		s->tvid = DS_VID_DEF;
		ds->data = s;
	}
	return 0;
}

/* The value part of an entry line (after the address). */
static uint32_t entry_value(struct ds *ds, const char *rest)
{
	rest = base_skip_ws(rest);
	if (!*rest || *rest == '#' || *rest == ';') return ds->defvid;
	return ds_parse_value(ds, rest, ds->defvid);
}

static int ends_addr(char c)
{
	return !c || c == ' ' || c == '\t' || c == '#' || c == ';' || c == ':';
}

static int ip4set_line(struct ds *ds, char *line, struct base_err *err)
{
	struct ip4set *s = set_of(ds);
	if (*line == ':') {
		uint32_t v = ds_parse_value(ds, line, DS_VID_DEF);
		if (v) ds->defvid = v;
		return v ? 1 : 0;
	}
	int excl = 0;
	if (*line == '!') {
		excl = 1;
		line = (char *)base_skip_ws(line + 1);
	}
	uint32_t a, b;
	const char *end;
	int bits = ip4_parse_range(line, &a, &b, &end);
	if (bits <= 0 || !ends_addr(*end) || (a == 0 && b == 0xffffffffu)) {
		ds_warn(ds, "invalid address");
		return 0;
	}
	uint32_t hostmask = bits >= 32 ? 0 : 0xffffffffu >> bits;
	if (a & hostmask) {
		if (!ds->opts->accept_in_cidr) {
			ds_warn(ds, "invalid range (non-zero host part)");
			return 0;
		}
		a &= ~hostmask;
	}
	if (ds->maxrange4 && (uint64_t)b - a >= ds->maxrange4) {
		ds_warn(ds, "too large range (%llu) ignored (%u max)", (unsigned long long)b - a + 1,
			ds->maxrange4);
		return 0;
	}
	uint32_t vid = DS_VID_EXCL;
	if (!excl) {
		vid = entry_value(ds, end);
		if (!vid) return 0;
	}
	add_range(s, a, b, vid);
	(void)err;
	return 1;
}

static int ip4tset_line(struct ds *ds, char *line, struct base_err *err)
{
	struct ip4set *s = set_of(ds);
	if (*line == ':') {
		if (s->have_default) return 1;
		uint32_t v = ds_parse_value(ds, line, DS_VID_DEF);
		if (!v) return 0;
		s->have_default = 1;
		s->tvid = v;
		return 1;
	}
	uint32_t a;
	const char *end;
	if (ip4_parse_prefix(line, &a, &end) != 4 || !ends_addr(*end)) {
		ds_warn(ds, "invalid address");
		return 0;
	}
	add_ent(&s->c[E32], a, DS_VID_DEF);
	(void)err;
	return 1;
}

static int ent_cmp(const void *x, const void *y)
{
	const struct ent *a = x, *b = y;
	if (a->key != b->key) return a->key < b->key ? -1 : 1;
	return a->vid < b->vid ? -1 : a->vid > b->vid;
}

/* Radix sort on (key, vid): much faster than qsort for millions of entries. */
static void sort_ents(struct ent *e, size_t n)
{
	if (n < 4096) {
		base_sort(e, n, sizeof *e, ent_cmp);
		return;
	}
	struct ent *tmp = base_xmalloc(n * sizeof *tmp);
	size_t *count = base_xmalloc(65537 * sizeof *count);
	struct ent *src = e, *dst = tmp;
	/* vid first (least significant), then key, 16 bits per pass; four
	 * passes leave the result back in e */
	for (int pass = 0; pass < 4; pass++) {
		int use_key = pass >= 2;
		unsigned shift = (pass & 1) ? 16 : 0;
		memset(count, 0, 65537 * sizeof *count);
		for (size_t i = 0; i < n; i++) {
			uint32_t v = use_key ? src[i].key : src[i].vid;
			count[((v >> shift) & 0xffff) + 1]++;
		}
		for (size_t i = 1; i <= 65536; i++) count[i] += count[i - 1];
		for (size_t i = 0; i < n; i++) {
			uint32_t v = use_key ? src[i].key : src[i].vid;
			dst[count[(v >> shift) & 0xffff]++] = src[i];
		}
		struct ent *t = src;
		src = dst;
		dst = t;
	}
	free(count);
	free(tmp);
}

static void build_class(struct ip4class *c)
{
	sort_ents(c->tmp, c->tmpn);
	/* dedup: an exclusion swallows every value at its key; equal vids collapse */
	size_t out = 0;
	for (size_t i = 0; i < c->tmpn; i++) {
		if (out && c->tmp[out - 1].key == c->tmp[i].key &&
		    (c->tmp[out - 1].vid == DS_VID_EXCL || c->tmp[out - 1].vid == c->tmp[i].vid))
			continue;
		c->tmp[out++] = c->tmp[i];
	}
	c->n = (uint32_t)out;
	c->keys = base_xmalloc(out * sizeof *c->keys);
	size_t nruns = 0, capruns = 4;
	c->run_start = base_xmalloc(capruns * sizeof *c->run_start);
	c->run_vid = base_xmalloc(capruns * sizeof *c->run_vid);
	for (size_t i = 0; i < out; i++) {
		c->keys[i] = c->tmp[i].key;
		if (!nruns || c->run_vid[nruns - 1] != c->tmp[i].vid) {
			if (nruns == capruns) {
				capruns *= 2;
				c->run_start = base_xrealloc(c->run_start, capruns * sizeof *c->run_start);
				c->run_vid = base_xrealloc(c->run_vid, capruns * sizeof *c->run_vid);
			}
			c->run_start[nruns] = (uint32_t)i;
			c->run_vid[nruns] = c->tmp[i].vid;
			nruns++;
		}
	}
	c->nruns = (uint32_t)nruns;
	c->run_start = base_xrealloc(c->run_start, (nruns ? nruns : 1) * sizeof *c->run_start);
	c->run_vid = base_xrealloc(c->run_vid, (nruns ? nruns : 1) * sizeof *c->run_vid);
	free(c->tmp);
	c->tmp = NULL;
	c->tmpn = c->tmpcap = 0;
	if (out > 65536) {
		c->idx16 = base_xmalloc(65537 * sizeof *c->idx16);
		size_t i = 0;
		for (uint32_t h = 0; h <= 65536; h++) {
			while (i < out && (c->keys[i] >> 16) < h) i++;
			c->idx16[h] = (uint32_t)i;
		}
	}
}

static int ip4set_finish(struct ds *ds, struct base_err *err)
{
	struct ip4set *s = set_of(ds);
	if (!s) s = ds->data = base_xcalloc(1, sizeof(struct ip4set));
	for (int i = 0; i < NCLASS; i++) build_class(&s->c[i]);
	if (s->trivial)
		base_info("%s: cnt=%u", ds->label, s->c[E32].n);
	else
		base_info("%s: e32/24/16/8=%u/%u/%u/%u", ds->label, s->c[E32].n, s->c[E24].n, s->c[E16].n,
			  s->c[E08].n);
	(void)err;
	return 0;
}

/* First index with keys[i] >= key. */
static uint32_t lower_bound(const struct ip4class *c, uint32_t key)
{
	uint32_t lo = 0, hi = c->n;
	if (c->idx16) {
		lo = c->idx16[key >> 16];
		hi = c->idx16[(key >> 16) + 1];
	}
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (c->keys[mid] < key) lo = mid + 1;
		else hi = mid;
	}
	return lo;
}

static uint32_t vid_at(const struct ip4class *c, uint32_t i)
{
	uint32_t lo = 0, hi = c->nruns;
	if (hi == 1) return c->run_vid[0];
	while (hi - lo > 1) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (c->run_start[mid] <= i) lo = mid;
		else hi = mid;
	}
	return c->run_vid[lo];
}

static void ip4_text(uint32_t a, char *buf)
{
	snprintf(buf, 16, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
}

static int ip4set_query(const struct ds *ds, const struct ds_query *q, struct answer *ans)
{
	const struct ip4set *s = set_of(ds);
	if (!q->ip4valid) return 0;
	if (ans_acl_always(ans)) return 1;
	for (int cls = E32; cls < NCLASS; cls++) {
		const struct ip4class *c = &s->c[cls];
		if (!c->n) continue;
		uint32_t key = q->ip4 & class_mask[cls];
		uint32_t i = lower_bound(c, key);
		if (i >= c->n || c->keys[i] != key) continue;
		uint32_t vid = vid_at(c, i);
		if (vid == DS_VID_EXCL) return 0;
		if (!(q->qflags & (QF_A | QF_TXT))) return 1;
		char ip[16];
		ip4_text(q->ip4, ip);
		do {
			vid = vid_at(c, i);
			if (s->trivial) vid = s->tvid;
			ans_add_value(ans, ds, &ds->vals[vid], q->qflags, ip);
		} while (++i < c->n && c->keys[i] == key);
		return 1;
	}
	return 0;
}

static int any_positive(const struct ip4class *c, uint32_t from, uint32_t to)
{
	if (!c->n) return 0;
	uint32_t i = lower_bound(c, from);
	for (unsigned steps = 0; i < c->n && c->keys[i] <= to; i++, steps++) {
		if (steps > 4096 || vid_at(c, i) != DS_VID_EXCL) return 1;
	}
	return 0;
}

static int ip4set_below(const struct ds *ds, const struct ds_query *q)
{
	const struct ip4set *s = set_of(ds);
	if (!q->ip4partial) return 0;
	uint32_t lo = q->ip4, hi = q->ip4 | (0xffffffffu >> (8 * q->ip4oct));
	for (int cls = E32; cls < NCLASS; cls++)
		if (any_positive(&s->c[cls], lo & class_mask[cls], hi)) return 1;
	return 0;
}

/* ---- dump (AXFR and -d) ------------------------------------------------ */

/* Owner name for a class entry: reversed octets, "*" for blocks. */
static size_t ip4_owner(uint32_t key, int cls, uint8_t *w)
{
	size_t o = 0;
	if (cls != E32) {
		w[o++] = 1;
		w[o++] = '*';
	}
	for (int oct = 3 - cls; oct >= 0; oct--) {
		char t[4];
		int n = snprintf(t, sizeof t, "%u", (key >> (8 * (3 - oct))) & 255);
		w[o++] = (uint8_t)n;
		memcpy(w + o, t, (size_t)n);
		o += (size_t)n;
	}
	w[o++] = 0;
	return o;
}

static void dump_value(const struct ds *ds, struct dnsbl_dump *sink, const uint8_t *owner, uint32_t vid,
		       const char *subst)
{
	const struct ds_val *v = &ds->vals[vid];
	sink->rr(sink, owner, DNS_T_A, ds->ttl, v->a, 4);
	char txt[256];
	size_t n = ds_txt_expand(ds, v->txt, subst, txt + 1);
	if (n) {
		txt[0] = (char)n;
		sink->rr(sink, owner, DNS_T_TXT, ds->ttl, (const uint8_t *)txt, n + 1);
	}
}

static const uint8_t excluded_name[] = "\x08" "excluded";

/* Finds the entry at key in class cls: index or -1. */
static int64_t find_key(const struct ip4class *c, uint32_t key)
{
	if (!c->n) return -1;
	uint32_t i = lower_bound(c, key);
	return (i < c->n && c->keys[i] == key) ? (int64_t)i : -1;
}

/* The entry deciding for block key at a class coarser than cls, or -1. */
static int inherited(const struct ip4set *s, uint32_t key, int cls, int *icls, uint32_t *ikey)
{
	for (int c = cls + 1; c < NCLASS; c++) {
		uint32_t k = key & class_mask[c];
		int64_t i = find_key(&s->c[c], k);
		if (i >= 0) {
			*icls = c;
			*ikey = k;
			return (int)1;
		}
	}
	return 0;
}

static int has_positive_above(const struct ip4set *s, uint32_t key, int cls)
{
	for (int c = cls + 1; c < NCLASS; c++) {
		int64_t i = find_key(&s->c[c], key & class_mask[c]);
		if (i >= 0 && vid_at(&s->c[c], (uint32_t)i) != DS_VID_EXCL) return 1;
	}
	return 0;
}

static void dump_entries(const struct ds *ds, const struct ip4set *s, struct dnsbl_dump *sink, int cls,
			 uint32_t key, int64_t i, const uint8_t *owner)
{
	const struct ip4class *c = &s->c[cls];
	char ip[16];
	ip4_text(key, ip);
	if (vid_at(c, (uint32_t)i) == DS_VID_EXCL) {
		if (has_positive_above(s, key, cls))
			sink->rr(sink, owner, DNS_T_CNAME, ds->ttl, excluded_name, sizeof excluded_name);
		return;
	}
	for (; i < c->n && c->keys[i] == key; i++)
		dump_value(ds, sink, owner, s->trivial ? s->tvid : vid_at(c, (uint32_t)i), ip);
}

static int u32_cmp(const void *x, const void *y)
{
	uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
	return a < b ? -1 : a > b;
}

static void dump_set(const struct ds *ds, const struct ip4set *s, struct dnsbl_dump *sink)
{
	uint8_t owner[64];
	/* Each class's own entries. */
	for (int cls = E08; cls >= E32; cls--) {
		const struct ip4class *c = &s->c[cls];
		for (uint32_t i = 0; i < c->n; i++) {
			if (i && c->keys[i] == c->keys[i - 1]) continue;
			ip4_owner(c->keys[i], cls, owner);
			dump_entries(ds, s, sink, cls, c->keys[i], i, owner);
		}
	}
	/* A /24 or /16 block that holds finer entries exists as a name, so a
	 * coarser wildcard no longer reaches inside it: repeat the deciding
	 * coarser entry as a wildcard at that block. */
	for (int blk = E24; blk <= E16; blk++) {
		size_t nb = 0;
		for (int f = E32; f < blk; f++) nb += s->c[f].n;
		if (!nb) continue;
		uint32_t *b = base_xmalloc(nb * sizeof *b);
		nb = 0;
		for (int f = E32; f < blk; f++)
			for (uint32_t i = 0; i < s->c[f].n; i++) b[nb++] = s->c[f].keys[i] & class_mask[blk];
		base_sort(b, nb, sizeof *b, u32_cmp);
		for (size_t i = 0; i < nb; i++) {
			if (i && b[i] == b[i - 1]) continue;
			if (find_key(&s->c[blk], b[i]) >= 0) continue;
			int icls;
			uint32_t ikey;
			if (!inherited(s, b[i], blk, &icls, &ikey)) continue;
			ip4_owner(b[i], blk, owner);
			dump_entries(ds, s, sink, icls, ikey, find_key(&s->c[icls], ikey), owner);
		}
		free(b);
	}
}

static void ip4set_dump(const struct ds *ds, struct dnsbl_dump *sink)
{
	dump_set(ds, set_of(ds), sink);
}

static void free_set(struct ip4set *s)
{
	for (int i = 0; i < NCLASS; i++) {
		free(s->c[i].keys);
		free(s->c[i].run_start);
		free(s->c[i].run_vid);
		free(s->c[i].idx16);
		free(s->c[i].tmp);
	}
	free(s);
}

static void ip4set_free(struct ds *ds)
{
	if (ds->data) free_set(ds->data);
	ds->data = NULL;
}

void ip4_dump_ranges(const struct ds *ds, const uint32_t *lo, const uint32_t *hi, const uint32_t *vid,
		     size_t n, struct dnsbl_dump *sink)
{
	struct ip4set *s = base_xcalloc(1, sizeof *s);
	for (size_t i = 0; i < n; i++) add_range(s, lo[i], hi[i], vid[i]);
	for (int i = 0; i < NCLASS; i++) build_class(&s->c[i]);
	dump_set(ds, s, sink);
	free_set(s);
}

const struct ds_type ds_ip4set = {
	.name = "ip4set", .flags = DST_IP4, .start = ip4set_start, .line = ip4set_line,
	.finish = ip4set_finish, .query = ip4set_query, .below = ip4set_below, .dump = ip4set_dump,
	.free = ip4set_free,
};

const struct ds_type ds_ip4tset = {
	.name = "ip4tset", .flags = DST_IP4, .start = ip4tset_start, .line = ip4tset_line,
	.finish = ip4set_finish, .query = ip4set_query, .below = ip4set_below, .dump = ip4set_dump,
	.free = ip4set_free,
};
