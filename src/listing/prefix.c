/*
 * prefix.c — IPv4 prefix tables: the allocation table of Level 2 and the
 * IP->AS map of Level 3.
 *
 * Two line formats are accepted in the same file:
 *   "192.0.2.0/24 name of the allocation"   (CIDR, then anything as name;
 *                                            a name that is an AS number,
 *                                            "64500" or "AS64500", also
 *                                            sets the AS)
 *   "192.0.2.0<TAB>24<TAB>64500"            (CAIDA routeviews prefix2as;
 *                                            "a_b" multi-origin and "a,b"
 *                                            AS sets take the first AS)
 * IPv6 prefixes are skipped: Levels 2 and 3 are IPv4-only.
 *
 * The table is a flat array sorted by (length, address): a lookup binary-
 * searches each length present, longest first — at most 33 searches, no
 * pointer chasing, and the array is built in one sort.
 */
#include "listing/listing.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 200

struct listing_prefixes *listing_prefixes_new(void)
{
	struct listing_prefixes *t = base_xcalloc(1, sizeof *t);
	base_arena_init(&t->names);
	t->fingerprint = 1469598103934665603ull;
	return t;
}

void listing_prefixes_free(struct listing_prefixes *t)
{
	if (!t) return;
	free(t->v);
	free(t->as_sizes);
	base_arena_free(&t->names);
	free(t);
}

static void fnv(uint64_t *h, const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++) {
		*h ^= b[i];
		*h *= 1099511628211ull;
	}
}

static uint32_t mask_of(unsigned len)
{
	return len == 0 ? 0 : 0xffffffffu << (32 - len);
}

/* Parses an AS number: digits, optionally after "AS"; stops at '_' or ','
 * (multi-origin / AS-set: the first AS is taken). Returns 0 or -1. */
static int parse_asn(const char *s, size_t n, uint32_t *asn)
{
	if (n >= 2 && (s[0] == 'A' || s[0] == 'a') && (s[1] == 'S' || s[1] == 's')) s += 2, n -= 2;
	size_t i = 0;
	uint64_t v = 0;
	while (i < n && s[i] >= '0' && s[i] <= '9' && i < 10) v = v * 10 + (uint64_t)(s[i++] - '0');
	if (i == 0 || v > 0xffffffffu) return -1;
	if (i < n && s[i] != '_' && s[i] != ',') return -1;
	*asn = (uint32_t)v;
	return 0;
}

static int parse_v4(const char *s, size_t n, uint32_t *out, int *is_v6)
{
	char buf[64];
	*is_v6 = 0;
	if (n == 0 || n >= sizeof buf) return -1;
	memcpy(buf, s, n);
	buf[n] = 0;
	uint8_t a[16];
	if (inet_pton(AF_INET, buf, a) == 1) {
		*out = (uint32_t)a[0] << 24 | (uint32_t)a[1] << 16 | (uint32_t)a[2] << 8 | a[3];
		return 0;
	}
	if (inet_pton(AF_INET6, buf, a) == 1) {
		*is_v6 = 1;
		return 0;
	}
	return -1;
}

static int parse_len(const char *s, size_t n, unsigned max, unsigned *len)
{
	if (n == 0 || n > 3) return -1;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9') return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > max) return -1;
	*len = v;
	return 0;
}

static int is_ws(char c)
{
	return c == ' ' || c == '\t';
}

int listing_prefixes_add_line(struct listing_prefixes *t, const char *line, size_t len,
                              struct base_err *err)
{
	/* tokens: up to three, the third running to the end of the line */
	const char *tok[3] = {0};
	size_t tl[3] = {0};
	size_t i = 0, nt = 0;
	while (i < len && is_ws(line[i])) i++;
	if (i == len || line[i] == '#' || line[i] == ';') return 0;
	while (i < len && nt < 3) {
		tok[nt] = line + i;
		if (nt == 2 || (nt == 1 && memchr(tok[0], '/', tl[0]))) {
			size_t e = len;
			while (e > i && is_ws(line[e - 1])) e--;
			tl[nt++] = e - i;
			break;
		}
		while (i < len && !is_ws(line[i])) i++;
		tl[nt] = (size_t)(line + i - tok[nt]);
		nt++;
		while (i < len && is_ws(line[i])) i++;
	}
	for (size_t k = 0; k < len; k++)
		if ((unsigned char)line[k] < 0x20 && line[k] != '\t')
			return base_errf(err, "control character in line");

	uint32_t addr = 0, asn = 0;
	unsigned plen;
	int v6;
	const char *name = NULL;
	size_t name_len = 0;
	const char *slash = memchr(tok[0], '/', tl[0]);
	if (slash) {
		size_t al = (size_t)(slash - tok[0]);
		if (parse_v4(tok[0], al, &addr, &v6) < 0)
			return base_errf(err, "bad prefix address");
		if (parse_len(slash + 1, tl[0] - al - 1, v6 ? 128 : 32, &plen) < 0)
			return base_errf(err, "bad prefix length");
		if (v6) return 0;
		if (nt >= 2) {
			name = tok[1];
			name_len = tl[1];
			if (parse_asn(name, name_len, &asn) < 0) asn = 0;
		}
	} else {
		if (nt != 3)
			return base_errf(
			    err, "expected \"CIDR name\" or \"address<TAB>length<TAB>asn\"");
		if (parse_v4(tok[0], tl[0], &addr, &v6) < 0)
			return base_errf(err, "bad prefix address");
		if (parse_len(tok[1], tl[1], v6 ? 128 : 32, &plen) < 0)
			return base_errf(err, "bad prefix length");
		if (parse_asn(tok[2], tl[2], &asn) < 0) return base_errf(err, "bad AS number");
		if (v6) return 0;
	}
	if (addr & ~mask_of(plen)) return base_errf(err, "host bits set in prefix");
	if (name_len > NAME_MAX_LEN)
		return base_errf(err, "name longer than %d bytes", NAME_MAX_LEN);
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 1024;
		t->v = base_xrealloc(t->v, t->cap * sizeof *t->v);
	}
	struct listing_prefix *p = &t->v[t->n++];
	p->addr = addr;
	p->len = (uint8_t)plen;
	p->asn = asn;
	p->name = name ? base_arena_strndup(&t->names, name, name_len) : NULL;
	fnv(&t->fingerprint, &addr, sizeof addr);
	fnv(&t->fingerprint, &plen, sizeof plen);
	fnv(&t->fingerprint, &asn, sizeof asn);
	if (name) fnv(&t->fingerprint, name, name_len);
	t->finished = 0;
	return 0;
}

/* Sort key for finishing: (len, addr) then arrival order, so that the
 * first line naming a prefix wins deterministically. */
struct keyed {
	uint64_t k;
	size_t i;
};

static int cmp_keyed(const void *a, const void *b)
{
	const struct keyed *x = a, *y = b;
	if (x->k != y->k) return x->k < y->k ? -1 : 1;
	return x->i < y->i ? -1 : x->i > y->i;
}

struct span {
	uint32_t asn;
	uint64_t lo, hi; /* inclusive */
};

static int cmp_span(const void *a, const void *b)
{
	const struct span *x = a, *y = b;
	if (x->asn != y->asn) return x->asn < y->asn ? -1 : 1;
	if (x->lo != y->lo) return x->lo < y->lo ? -1 : 1;
	return 0;
}

void listing_prefixes_finish(struct listing_prefixes *t)
{
	size_t n = t->n;
	struct keyed *ks = base_xmalloc((n ? n : 1) * sizeof *ks);
	for (size_t i = 0; i < n; i++) {
		ks[i].k = (uint64_t)t->v[i].len << 32 | t->v[i].addr;
		ks[i].i = i;
	}
	base_sort(ks, n, sizeof *ks, cmp_keyed);
	struct listing_prefix *nv = base_xmalloc((n ? n : 1) * sizeof *nv);
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		const struct listing_prefix *p = &t->v[ks[i].i];
		if (m && nv[m - 1].len == p->len && nv[m - 1].addr == p->addr) continue;
		nv[m++] = *p;
	}
	free(ks);
	free(t->v);
	t->v = nv;
	t->n = t->cap = m;
	size_t j = 0;
	for (unsigned l = 0; l <= 33; l++) {
		while (j < m && t->v[j].len < l) j++;
		t->by_len[l] = j;
	}
	/* per-AS announced space: merge overlapping ranges */
	struct span *sp = base_xmalloc((m ? m : 1) * sizeof *sp);
	size_t ns = 0;
	for (size_t i = 0; i < m; i++) {
		if (!t->v[i].asn) continue;
		sp[ns].asn = t->v[i].asn;
		sp[ns].lo = t->v[i].addr;
		sp[ns].hi = (uint64_t)t->v[i].addr + ((uint64_t)1 << (32 - t->v[i].len)) - 1;
		ns++;
	}
	base_sort(sp, ns, sizeof *sp, cmp_span);
	free(t->as_sizes);
	t->as_sizes = base_xmalloc((ns ? ns : 1) * sizeof *t->as_sizes);
	t->n_as = 0;
	for (size_t i = 0; i < ns;) {
		uint32_t asn = sp[i].asn;
		uint64_t total = 0, lo = sp[i].lo, hi = sp[i].hi;
		for (i++; i < ns && sp[i].asn == asn; i++) {
			if (sp[i].lo <= hi + 1) {
				if (sp[i].hi > hi) hi = sp[i].hi;
			} else {
				total += hi - lo + 1;
				lo = sp[i].lo;
				hi = sp[i].hi;
			}
		}
		total += hi - lo + 1;
		t->as_sizes[t->n_as].asn = asn;
		t->as_sizes[t->n_as].size = total;
		t->n_as++;
	}
	free(sp);
	t->finished = 1;
}

int listing_prefixes_load(const char *path, struct listing_prefixes **out, struct base_err *err)
{
	struct base_lines *l = base_xmalloc(sizeof *l);
	if (base_lines_open(l, path, err) < 0) {
		free(l);
		return -1;
	}
	struct listing_prefixes *t = listing_prefixes_new();
	char *line;
	size_t len;
	int r;
	struct base_err e;
	while ((r = base_lines_next(l, &line, &len, err)) == 1) {
		if (listing_prefixes_add_line(t, line, len, &e) < 0) {
			base_errf(err, "%s:%lu: %s", path, l->lineno, e.msg);
			r = -1;
			break;
		}
	}
	base_lines_close(l);
	free(l);
	if (r < 0) {
		listing_prefixes_free(t);
		return -1;
	}
	listing_prefixes_finish(t);
	*out = t;
	return 0;
}

static int cmp_addr_in_slice(uint32_t key, const struct listing_prefix *v, size_t lo, size_t hi)
{
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v[mid].addr == key) return (int)mid;
		if (v[mid].addr < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

const struct listing_prefix *listing_prefixes_match(const struct listing_prefixes *t, uint32_t addr)
{
	if (!t || !t->finished) return NULL;
	for (int l = 32; l >= 0; l--) {
		size_t lo = t->by_len[l], hi = t->by_len[l + 1];
		if (lo == hi) continue;
		int k = cmp_addr_in_slice(addr & mask_of((unsigned)l), t->v, lo, hi);
		if (k >= 0) return &t->v[k];
	}
	return NULL;
}

uint64_t listing_prefixes_as_size(const struct listing_prefixes *t, uint32_t asn)
{
	if (!t) return 0;
	size_t lo = 0, hi = t->n_as;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (t->as_sizes[mid].asn == asn) return t->as_sizes[mid].size;
		if (t->as_sizes[mid].asn < asn)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}
