/*
 * trie.c — longest-prefix-match datasets: ip4trie, ip6trie, and acl.
 *
 * The prefixes are not kept as a tree. At load time they are flattened
 * into disjoint intervals that tile the address space: interval i covers
 * [start[i], start[i+1]) and carries the value of the longest prefix that
 * covers it (or none). A lookup is one binary search, and "is anything
 * listed below this name" is a range check on the same arrays.
 *
 * Invariants: start[] is strictly ascending, start[0] == 0, and adjacent
 * intervals carry different vids. IPv4 addresses live in the low 32 bits.
 */
#include "dnsbl/int.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef unsigned __int128 u128;

#define VID_NONE UINT32_MAX
/* acl actions, stored as vids */
#define ACLV_IGNORE (UINT32_MAX - 1)
#define ACLV_REFUSE (UINT32_MAX - 2)
#define ACLV_EMPTY  (UINT32_MAX - 3)
#define ACLV_PASS   (UINT32_MAX - 4)

struct pfx {
	u128 start;
	unsigned len;
	uint32_t vid;
	uint32_t seq;
};

struct flat {
	u128 *start;
	uint32_t *vid;
	size_t n;
};

struct trie {
	unsigned width;           /* 32 or 128 */
	struct pfx *p;
	size_t np, cap;
	struct flat f;
	/* acl: a second family */
	struct pfx *p6;
	size_t np6, cap6;
	struct flat f6;
	uint32_t defaction;       /* acl: action for entries without a value */
};

static u128 host_mask(unsigned width, unsigned len)
{
	if (len >= width) return 0;
	u128 all = width == 128 ? ~(u128)0 : (u128)0xffffffffu;
	return all >> len;
}

static void add_pfx(struct pfx **arr, size_t *n, size_t *cap, u128 start, unsigned len, uint32_t vid)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 256;
		*arr = base_xrealloc(*arr, *cap * sizeof **arr);
	}
	(*arr)[*n].start = start;
	(*arr)[*n].len = len;
	(*arr)[*n].vid = vid;
	(*arr)[*n].seq = (uint32_t)*n;
	(*n)++;
}

static int pfx_cmp(const void *x, const void *y)
{
	const struct pfx *a = x, *b = y;
	if (a->start != b->start) return a->start < b->start ? -1 : 1;
	if (a->len != b->len) return a->len < b->len ? -1 : 1;
	return a->seq < b->seq ? -1 : (a->seq > b->seq);
}

static void emit(struct flat *f, size_t *cap, u128 start, uint32_t vid)
{
	if (f->n && f->start[f->n - 1] == start) {
		f->vid[f->n - 1] = vid;
		if (f->n > 1 && f->vid[f->n - 2] == vid) f->n--;
		return;
	}
	if (f->n && f->vid[f->n - 1] == vid) return;
	if (f->n == *cap) {
		*cap = *cap ? *cap * 2 : 256;
		f->start = base_xrealloc(f->start, *cap * sizeof *f->start);
		f->vid = base_xrealloc(f->vid, *cap * sizeof *f->vid);
	}
	f->start[f->n] = start;
	f->vid[f->n] = vid;
	f->n++;
}

/* Flattens prefixes into intervals; duplicates keep the first and warn. */
static void flatten(struct ds *ds, struct pfx *p, size_t n, unsigned width, struct flat *f)
{
	base_sort(p, n, sizeof *p, pfx_cmp);
	size_t cap = 0;
	f->start = NULL;
	f->vid = NULL;
	f->n = 0;
	emit(f, &cap, 0, VID_NONE);
	struct {
		u128 end;
		uint32_t vid;
	} stack[130];
	int sp = 0;
	u128 top = width == 128 ? ~(u128)0 : (u128)0xffffffffu;
	for (size_t i = 0; i < n; i++) {
		if (i && p[i].start == p[i - 1].start && p[i].len == p[i - 1].len) {
			char buf[64];
			if (width == 32) {
				uint32_t a = (uint32_t)p[i].start;
				snprintf(buf, sizeof buf, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
			} else {
				uint8_t b[16];
				for (int k = 0; k < 16; k++) b[k] = (uint8_t)(p[i].start >> (8 * (15 - k)));
				ip6_text(b, buf);
			}
			base_warn("%s: duplicated entry for %s/%u", ds->label, buf, p[i].len);
			continue;
		}
		u128 end = p[i].start | host_mask(width, p[i].len);
		while (sp && stack[sp - 1].end < p[i].start) {
			u128 e = stack[--sp].end;
			emit(f, &cap, e + 1, sp ? stack[sp - 1].vid : VID_NONE);
		}
		emit(f, &cap, p[i].start, p[i].vid);
		stack[sp].end = end;
		stack[sp].vid = p[i].vid;
		sp++;
	}
	while (sp) {
		u128 e = stack[--sp].end;
		if (e == top) continue;
		emit(f, &cap, e + 1, sp ? stack[sp - 1].vid : VID_NONE);
	}
	/* merging after the fact: equal neighbours */
	size_t o = 0;
	for (size_t i = 0; i < f->n; i++) {
		if (o && f->vid[o - 1] == f->vid[i]) continue;
		f->start[o] = f->start[i];
		f->vid[o] = f->vid[i];
		o++;
	}
	f->n = o;
}

static size_t flat_find(const struct flat *f, u128 x)
{
	size_t lo = 0, hi = f->n;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (f->start[mid] <= x) lo = mid;
		else hi = mid;
	}
	return lo;
}

static int positive(uint32_t vid)
{
	return vid != VID_NONE && vid != DS_VID_EXCL && vid < ACLV_PASS;
}

static int flat_any(const struct flat *f, u128 lo, u128 hi)
{
	for (size_t i = flat_find(f, lo); i < f->n && f->start[i] <= hi; i++)
		if (positive(f->vid[i])) return 1;
	return 0;
}

static u128 from_bytes(const uint8_t *b, unsigned n)
{
	u128 v = 0;
	for (unsigned i = 0; i < n; i++) v = (v << 8) | b[i];
	return v;
}

/* ---- loading ----------------------------------------------------------- */

static int trie_start(struct ds *ds)
{
	if (!ds->data) {
		struct trie *t = base_xcalloc(1, sizeof *t);
		t->width = ds->type == &ds_ip6trie ? 128 : 32;
		t->defaction = ACLV_IGNORE;
		ds->data = t;
	}
	ds->defvid = DS_VID_DEF;
	return 0;
}

static int ends_addr(char c)
{
	return !c || c == ' ' || c == '\t' || c == '#' || c == ';' || c == ':';
}

/* ip4cidr: a.b.c.d, a.b.c (/24), a.b (/16), P/n. */
static int parse_cidr4(const char *s, uint32_t *a, unsigned *len, const char **end)
{
	const char *e;
	int oct = ip4_parse_prefix(s, a, &e);
	if (oct < 0) return -1;
	if (*e == '/') {
		uint64_t n;
		int k = base_parse_uint(e + 1, 32, &n);
		if (k < 0) return -1;
		*len = (unsigned)n;
		e += 1 + k;
	} else {
		if (oct == 1) return -1;
		*len = 8u * (unsigned)oct;
	}
	*end = e;
	return 0;
}

static int parse_cidr6(const char *s, uint8_t a[16], unsigned *len, const char **end)
{
	const char *e;
	unsigned bits;
	if (ip6_parse(s, a, &bits, &e) < 0) return -1;
	if (*e == '/') {
		uint64_t n;
		int k = base_parse_uint(e + 1, 128, &n);
		if (k < 0) return -1;
		*len = (unsigned)n;
		e += 1 + k;
	} else {
		if (bits == 16) return -1; /* a bare single group */
		*len = bits;
	}
	*end = e;
	return 0;
}

static uint32_t entry_value(struct ds *ds, const char *rest)
{
	rest = base_skip_ws(rest);
	if (!*rest || *rest == '#' || *rest == ';') return ds->defvid;
	return ds_parse_value(ds, rest, ds->defvid);
}

static int host_bits_ok(struct ds *ds, u128 *start, unsigned width, unsigned len)
{
	u128 hm = host_mask(width, len);
	if (!(*start & hm)) return 1;
	if (!ds->opts->accept_in_cidr) {
		ds_warn(ds, "invalid range (non-zero host part)");
		return 0;
	}
	*start &= ~hm;
	return 1;
}

static int ip4trie_line(struct ds *ds, char *line, struct base_err *err)
{
	struct trie *t = ds->data;
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
	uint32_t a;
	unsigned len;
	const char *end;
	if (parse_cidr4(line, &a, &len, &end) < 0 || !ends_addr(*end)) {
		ds_warn(ds, "invalid address");
		return 0;
	}
	u128 start = a;
	if (!host_bits_ok(ds, &start, 32, len)) return 0;
	if (ds->maxrange4 && (len == 0 || (1ull << (32 - len)) > ds->maxrange4)) {
		ds_warn(ds, "too large range ignored (%u max)", ds->maxrange4);
		return 0;
	}
	uint32_t vid = DS_VID_EXCL;
	if (!excl && !(vid = entry_value(ds, end))) return 0;
	add_pfx(&t->p, &t->np, &t->cap, start, len, vid);
	(void)err;
	return 1;
}

static int ip6trie_line(struct ds *ds, char *line, struct base_err *err)
{
	struct trie *t = ds->data;
	if (line[0] == ':' && line[1] != ':') {
		uint32_t v = ds_parse_value(ds, line, DS_VID_DEF);
		if (v) ds->defvid = v;
		return v ? 1 : 0;
	}
	int excl = 0;
	if (*line == '!') {
		excl = 1;
		line = (char *)base_skip_ws(line + 1);
	}
	uint8_t a[16];
	unsigned len;
	const char *end;
	if (parse_cidr6(line, a, &len, &end) < 0 || !(ends_addr(*end) && *end != ':')) {
		ds_warn(ds, "invalid address");
		return 0;
	}
	u128 start = from_bytes(a, 16);
	if (!host_bits_ok(ds, &start, 128, len)) return 0;
	uint32_t vid = DS_VID_EXCL;
	if (!excl && !(vid = entry_value(ds, end))) return 0;
	add_pfx(&t->p, &t->np, &t->cap, start, len, vid);
	(void)err;
	return 1;
}

static int trie_finish(struct ds *ds, struct base_err *err)
{
	struct trie *t = ds->data;
	if (!t) {
		trie_start(ds);
		t = ds->data;
	}
	flatten(ds, t->p, t->np, t->width, &t->f);
	base_info("%s: %zu prefixes, %zu intervals", ds->label, t->np, t->f.n);
	free(t->p);
	t->p = NULL;
	if (ds->type == &ds_acl) {
		flatten(ds, t->p6, t->np6, 128, &t->f6);
		free(t->p6);
		t->p6 = NULL;
	}
	(void)err;
	return 0;
}

static void trie_free(struct ds *ds)
{
	struct trie *t = ds->data;
	if (!t) return;
	free(t->p);
	free(t->p6);
	free(t->f.start);
	free(t->f.vid);
	free(t->f6.start);
	free(t->f6.vid);
	free(t);
	ds->data = NULL;
}

/* ---- queries ----------------------------------------------------------- */

static int ip4trie_query(const struct ds *ds, const struct ds_query *q, struct answer *ans)
{
	const struct trie *t = ds->data;
	if (!q->ip4valid) return 0;
	if (ans_acl_always(ans)) return 1;
	if (!t->f.n) return 0;
	uint32_t vid = t->f.vid[flat_find(&t->f, q->ip4)];
	if (!positive(vid)) return 0;
	char ip[16];
	snprintf(ip, sizeof ip, "%u.%u.%u.%u", q->ip4 >> 24, (q->ip4 >> 16) & 255, (q->ip4 >> 8) & 255,
		 q->ip4 & 255);
	ans_add_value(ans, ds, &ds->vals[vid], q->qflags, ip);
	return 1;
}

static int ip4trie_below(const struct ds *ds, const struct ds_query *q)
{
	const struct trie *t = ds->data;
	if (!q->ip4partial) return 0;
	return flat_any(&t->f, q->ip4, q->ip4 | (0xffffffffu >> (8 * q->ip4oct)));
}

static int ip6trie_query(const struct ds *ds, const struct ds_query *q, struct answer *ans)
{
	const struct trie *t = ds->data;
	if (!q->ip6valid) return 0;
	if (ans_acl_always(ans)) return 1;
	if (!t->f.n) return 0;
	uint32_t vid = t->f.vid[flat_find(&t->f, from_bytes(q->ip6, 16))];
	if (!positive(vid)) return 0;
	char ip[64];
	ip6_text(q->ip6, ip);
	ans_add_value(ans, ds, &ds->vals[vid], q->qflags, ip);
	return 1;
}

static int ip6trie_below(const struct ds *ds, const struct ds_query *q)
{
	const struct trie *t = ds->data;
	if (!q->ip6partial) return 0;
	u128 lo = from_bytes(q->ip6, 16);
	return flat_any(&t->f, lo, lo | host_mask(128, 4 * q->ip6nib));
}

/* ---- dumps ------------------------------------------------------------- */

static void ip4trie_dump(const struct ds *ds, struct dnsbl_dump *sink)
{
	const struct trie *t = ds->data;
	size_t n = 0;
	uint32_t *lo = base_xmalloc((t->f.n + 1) * sizeof *lo);
	uint32_t *hi = base_xmalloc((t->f.n + 1) * sizeof *hi);
	uint32_t *vid = base_xmalloc((t->f.n + 1) * sizeof *vid);
	for (size_t i = 0; i < t->f.n; i++) {
		if (!positive(t->f.vid[i])) continue;
		lo[n] = (uint32_t)t->f.start[i];
		hi[n] = i + 1 < t->f.n ? (uint32_t)(t->f.start[i + 1] - 1) : 0xffffffffu;
		vid[n] = t->f.vid[i];
		n++;
	}
	ip4_dump_ranges(ds, lo, hi, vid, n, sink);
	free(lo);
	free(hi);
	free(vid);
}

static void to_bytes(u128 v, uint8_t b[16])
{
	for (int k = 15; k >= 0; k--) {
		b[k] = (uint8_t)v;
		v >>= 8;
	}
}

static void dump6_value(const struct ds *ds, struct dnsbl_dump *sink, const uint8_t *owner, uint32_t vid,
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

/* Emits the aligned block [start, start + 2^(128-len)) as nibble names. */
static void dump6_block(const struct ds *ds, struct dnsbl_dump *sink, u128 start, unsigned len, uint32_t vid)
{
	uint8_t owner[80], b[16];
	char ip[64];
	if (len % 4) {
		unsigned next = (len + 3) / 4 * 4;
		u128 step = (u128)1 << (128 - next);
		for (u128 k = 0; k < ((u128)1 << (next - len)); k++) dump6_block(ds, sink, start + k * step, next, vid);
		return;
	}
	to_bytes(start, b);
	ip6_text(b, ip);
	ip6_owner(b, len / 4, len < 128, owner);
	dump6_value(ds, sink, owner, vid, ip);
}

static void ip6trie_dump(const struct ds *ds, struct dnsbl_dump *sink)
{
	const struct trie *t = ds->data;
	for (size_t i = 0; i < t->f.n; i++) {
		if (!positive(t->f.vid[i])) continue;
		u128 lo = t->f.start[i];
		u128 hi = i + 1 < t->f.n ? t->f.start[i + 1] - 1 : ~(u128)0;
		/* cut [lo, hi] into aligned CIDR blocks */
		for (;;) {
			unsigned len = 128;
			while (len > 0) {
				u128 hm = host_mask(128, len - 1);
				if ((lo & hm) || (lo | hm) > hi) break;
				len--;
			}
			dump6_block(ds, sink, lo, len, t->f.vid[i]);
			u128 last = lo | host_mask(128, len);
			if (last >= hi) break;
			lo = last + 1;
		}
	}
}

/* ---- acl --------------------------------------------------------------- */

static uint32_t acl_action(struct ds *ds, const char *s, int *ok)
{
	static const struct {
		const char *kw;
		uint32_t v;
	} kws[] = {{"ignore", ACLV_IGNORE}, {"blackhole", ACLV_IGNORE}, {"refuse", ACLV_REFUSE},
		   {"empty", ACLV_EMPTY},   {"pass", ACLV_PASS}};
	*ok = 1;
	if (*s == ':' || *s == '=') {
		const char *k = base_skip_ws(s + 1);
		for (size_t i = 0; i < sizeof kws / sizeof kws[0]; i++) {
			size_t n = strlen(kws[i].kw);
			if (!strncasecmp(k, kws[i].kw, n) && !*base_skip_ws(k + n)) return kws[i].v;
		}
	}
	uint32_t v = ds_parse_value(ds, *s == '=' ? s + 1 : s, DS_VID_DEF);
	if (!v) *ok = 0;
	return v;
}

static int acl_line(struct ds *ds, char *line, struct base_err *err)
{
	struct trie *t = ds->data;
	int ok;
	if ((line[0] == ':' && line[1] != ':') || line[0] == '=') {
		uint32_t v = acl_action(ds, line, &ok);
		if (ok) t->defaction = v;
		return ok;
	}
	char *rest;
	uint32_t vid;
	/* IPv4 first, then IPv6 */
	uint32_t a4;
	unsigned len;
	const char *end;
	int v6 = 0;
	uint8_t a6[16];
	if (parse_cidr4(line, &a4, &len, &end) == 0 && ends_addr(*end) && *end != ':') {
		v6 = 0;
	} else if (parse_cidr6(line, a6, &len, &end) == 0 && ends_addr(*end) && *end != ':') {
		v6 = 1;
	} else {
		ds_warn(ds, "invalid address");
		return 0;
	}
	rest = (char *)base_skip_ws(end);
	if (!*rest || *rest == '#' || *rest == ';') {
		vid = t->defaction;
	} else {
		vid = acl_action(ds, rest, &ok);
		if (!ok) return 0;
	}
	if (v6) {
		u128 start = from_bytes(a6, 16);
		if (!host_bits_ok(ds, &start, 128, len)) return 0;
		add_pfx(&t->p6, &t->np6, &t->cap6, start, len, vid);
	} else {
		u128 start = a4;
		if (!host_bits_ok(ds, &start, 32, len)) return 0;
		add_pfx(&t->p, &t->np, &t->cap, start, len, vid);
	}
	(void)err;
	return 1;
}

int ds_acl_check(const struct ds *ds, const struct dnsbl_peer *peer, const struct ds_val **val)
{
	const struct trie *t = ds->data;
	uint32_t vid;
	*val = NULL;
	if (peer->family == AF_INET) {
		if (!t->f.n) return ACL_NONE;
		vid = t->f.vid[flat_find(&t->f, from_bytes(peer->addr, 4))];
	} else {
		if (!t->f6.n) return ACL_NONE;
		vid = t->f6.vid[flat_find(&t->f6, from_bytes(peer->addr, 16))];
	}
	switch (vid) {
	case VID_NONE: return ACL_NONE;
	case ACLV_IGNORE: return ACL_IGNORE;
	case ACLV_REFUSE: return ACL_REFUSE;
	case ACLV_EMPTY: return ACL_EMPTY;
	case ACLV_PASS: return ACL_PASS;
	case DS_VID_EXCL: return ACL_NONE;
	default: *val = &ds->vals[vid]; return ACL_VALUE;
	}
}

static int none_query(const struct ds *ds, const struct ds_query *q, struct answer *ans)
{
	(void)ds;
	(void)q;
	(void)ans;
	return 0;
}

const struct ds_type ds_ip4trie = {
	.name = "ip4trie", .flags = DST_IP4, .start = trie_start, .line = ip4trie_line,
	.finish = trie_finish, .query = ip4trie_query, .below = ip4trie_below, .dump = ip4trie_dump,
	.free = trie_free,
};

const struct ds_type ds_ip6trie = {
	.name = "ip6trie", .flags = DST_IP6, .start = trie_start, .line = ip6trie_line,
	.finish = trie_finish, .query = ip6trie_query, .below = ip6trie_below, .dump = ip6trie_dump,
	.free = trie_free,
};

const struct ds_type ds_acl = {
	.name = "acl", .flags = DST_ACL, .start = trie_start, .line = acl_line,
	.finish = trie_finish, .query = none_query, .free = trie_free,
};
