/*
 * policy.c — the level policy: which keys are listed at an instant `now`,
 * and the reconciliation of that answer with the listings in the store.
 *
 * listing_refresh() is a pure recomputation over the impacts of the last
 * window (time in (now - window, now]); nothing older can matter, because
 * every listing's expiry is derived from counted impacts plus the window:
 *
 *   L1  per IP, impacts after its delist floor: listed when count >= k
 *       (l1_threshold); expires at the k-th newest impact + window (with the
 *       default k = 1: 7 days after the last impact, and each impact extends).
 *   L2  per allocation (longest prefix in the allocation table, else the
 *       /24): the impacts counted for its L1-listed IPs, each contributing
 *       until min(impact + window, the IP's L1 expiry); listed when count >=
 *       T(/len); expires when the count would fall below T, i.e. at the T-th
 *       latest contribution end.
 *   L3  per AS (IP->AS map): the same contributions; listed when count >= N
 *       where N = max(l3_min_impacts, least count whose SPAMSCORE reaches
 *       l3_min_score); expires at the N-th latest contribution end.
 *
 * The result is reconciled with the ACTIVE episodes of the store: an episode
 * continues (and is extended) when the key still qualifies without a gap,
 * is closed (EXPIRED, removed_at = its expiry, or now if it stopped early)
 * when not, and new keys start new episodes. Refresh runs only when
 * something could have changed; see need_refresh().
 */
#include "listing/store.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#define EVIDENCE_IDS 8

/* ---- addresses ----------------------------------------------------------- */

int listing_ip_parse(const char *s, struct listing_ip *ip)
{
	memset(ip, 0, sizeof *ip);
	if (strlen(s) > 45) return -1;
	if (inet_pton(AF_INET, s, ip->a) == 1) {
		ip->family = 4;
		return 0;
	}
	if (inet_pton(AF_INET6, s, ip->a) == 1) {
		ip->family = 6;
		return 0;
	}
	return -1;
}

void listing_ip_format(const struct listing_ip *ip, char *out, size_t n)
{
	if (!inet_ntop(ip->family == 4 ? AF_INET : AF_INET6, ip->a, out, (socklen_t)n))
		snprintf(out, n, "?");
}

static uint32_t ip4(const struct listing_ip *ip)
{
	return (uint32_t)ip->a[0] << 24 | (uint32_t)ip->a[1] << 16 | (uint32_t)ip->a[2] << 8 |
	       ip->a[3];
}

/* ---- policy settings ----------------------------------------------------- */

static const char *const default_never[] = {
    "0.0.0.0/8",     "10.0.0.0/8",      "100.64.0.0/10",  "127.0.0.0/8",    "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24",    "192.0.2.0/24",   "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",    "240.0.0.0/4",
    "::/128",        "::1/128",         "::ffff:0:0/96",  "100::/64",       "2001:db8::/32",
    "fc00::/7",      "fe80::/10",       "ff00::/8",
};

void listing_policy_defaults(struct listing_policy *p)
{
	memset(p, 0, sizeof *p);
	p->l1_threshold = 1;
	p->window = 7 * 86400;
	p->l2_base[0] = 4;
	p->l2_base[1] = 3;
	p->l2_base[2] = 2;
	p->l2_base[3] = 1;
	p->l3_min_impacts = 50;
	p->l3_min_score10 = 500;
	p->delist_quiet = 86400;
	p->delist_period = 7 * 86400;
	p->delist_max = 3;
	for (size_t i = 0; i < sizeof default_never / sizeof default_never[0]; i++)
		base_parse_cidr(default_never[i], &p->never[p->n_never++], NULL);
}

void listing_policy_free(struct listing_policy *p)
{
	free(p->whitelist);
	p->whitelist = NULL;
	p->n_whitelist = 0;
}

static int set_u32(const char *key, const char *v, uint32_t *out, uint32_t min,
                   struct base_err *err)
{
	uint64_t x;
	int k = base_parse_uint(v, 0xffffffffu, &x);
	if (k <= 0 || v[k] || x < min) return base_errf(err, "%s: bad number '%s'", key, v);
	*out = (uint32_t)x;
	return 0;
}

static int set_dur(const char *key, const char *v, uint32_t *out, struct base_err *err)
{
	struct base_err e;
	if (base_parse_duration(v, out, &e) < 0)
		return base_errf(err, "%s: bad duration '%s'", key, v);
	return 0;
}

/* "50", "49.9": tenths */
static int set_score(const char *key, const char *v, uint32_t *out, struct base_err *err)
{
	uint64_t whole, frac = 0;
	int k = base_parse_uint(v, 100000000, &whole);
	if (k <= 0) return base_errf(err, "%s: bad score '%s'", key, v);
	if (v[k] == '.') {
		if (v[k + 1] < '0' || v[k + 1] > '9' || v[k + 2])
			return base_errf(err, "%s: one decimal at most", key);
		frac = (uint64_t)(v[k + 1] - '0');
	} else if (v[k]) {
		return base_errf(err, "%s: bad score '%s'", key, v);
	}
	*out = (uint32_t)(whole * 10 + frac);
	return 0;
}

int listing_policy_set(struct listing_policy *p, const char *key, const char *v,
                       struct base_err *err)
{
	if (!strcmp(key, "l1-threshold")) return set_u32(key, v, &p->l1_threshold, 1, err);
	if (!strcmp(key, "window")) {
		if (set_dur(key, v, &p->window, err) < 0) return -1;
		if (!p->window) return base_errf(err, "window: must be positive");
		return 0;
	}
	if (!strcmp(key, "l2-24")) return set_u32(key, v, &p->l2_base[0], 1, err);
	if (!strcmp(key, "l2-25")) return set_u32(key, v, &p->l2_base[1], 1, err);
	if (!strcmp(key, "l2-26")) return set_u32(key, v, &p->l2_base[2], 1, err);
	if (!strcmp(key, "l2-27")) return set_u32(key, v, &p->l2_base[3], 1, err);
	if (!strcmp(key, "l3-min-impacts")) return set_u32(key, v, &p->l3_min_impacts, 1, err);
	if (!strcmp(key, "l3-min-score")) return set_score(key, v, &p->l3_min_score10, err);
	if (!strcmp(key, "delist-quiet")) return set_dur(key, v, &p->delist_quiet, err);
	if (!strcmp(key, "delist-period")) return set_dur(key, v, &p->delist_period, err);
	if (!strcmp(key, "delist-max")) return set_u32(key, v, &p->delist_max, 0, err);
	if (!strcmp(key, "never")) {
		if (p->n_never >= LISTING_MAX_NEVER)
			return base_errf(err, "never: at most %d ranges", LISTING_MAX_NEVER);
		if (base_parse_cidr(v, &p->never[p->n_never], err) < 0) return -1;
		p->n_never++;
		return 0;
	}
	return base_errf(err, "unknown listing option '%s'", key);
}

int listing_policy_load_whitelist(struct listing_policy *p, const char *path, struct base_err *err)
{
	struct base_lines *l = base_xmalloc(sizeof *l);
	if (base_lines_open(l, path, err) < 0) {
		free(l);
		return -1;
	}
	char *line;
	size_t len;
	int r;
	size_t cap = p->n_whitelist;
	while ((r = base_lines_next(l, &line, &len, err)) == 1) {
		char *s = (char *)base_skip_ws(line);
		char *hash = strchr(s, '#');
		if (hash) *hash = 0;
		size_t n = strlen(s);
		while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = 0;
		if (!n) continue;
		if (p->n_whitelist == cap) {
			cap = cap ? cap * 2 : 64;
			p->whitelist = base_xrealloc(p->whitelist, cap * sizeof *p->whitelist);
		}
		struct base_err e;
		if (base_parse_cidr(s, &p->whitelist[p->n_whitelist], &e) < 0) {
			base_errf(err, "%s:%lu: %s", path, l->lineno, e.msg);
			r = -1;
			break;
		}
		p->n_whitelist++;
	}
	base_lines_close(l);
	free(l);
	return r < 0 ? -1 : 0;
}

static void fnv(uint64_t *h, const void *d, size_t n)
{
	const uint8_t *b = d;
	for (size_t i = 0; i < n; i++) {
		*h ^= b[i];
		*h *= 1099511628211ull;
	}
}

uint64_t listing_policy_fingerprint(const struct listing_policy *p)
{
	uint64_t h = 1469598103934665603ull;
	fnv(&h, &p->l1_threshold, sizeof p->l1_threshold);
	fnv(&h, &p->window, sizeof p->window);
	fnv(&h, p->l2_base, sizeof p->l2_base);
	fnv(&h, &p->l3_min_impacts, sizeof p->l3_min_impacts);
	fnv(&h, &p->l3_min_score10, sizeof p->l3_min_score10);
	for (size_t i = 0; i < p->n_never; i++) fnv(&h, &p->never[i], sizeof p->never[i]);
	for (size_t i = 0; i < p->n_whitelist; i++)
		fnv(&h, &p->whitelist[i], sizeof p->whitelist[i]);
	uint64_t a = p->allocs ? p->allocs->fingerprint : 0,
	         b = p->asmap ? p->asmap->fingerprint : 0;
	fnv(&h, &a, sizeof a);
	fnv(&h, &b, sizeof b);
	return h;
}

/* ---- formulas ------------------------------------------------------------ */

#define SATURATE (UINT64_MAX / 4)

uint64_t listing_l2_threshold(const struct listing_policy *p, unsigned len)
{
	if (len >= 27) return p->l2_base[3];
	if (len >= 24) return p->l2_base[len - 24];
	uint64_t t[28];
	t[27] = p->l2_base[3];
	t[26] = p->l2_base[2];
	t[25] = p->l2_base[1];
	t[24] = p->l2_base[0];
	for (int n = 23; n >= (int)len; n--) {
		uint64_t v = t[n + 1] + t[n + 3];
		t[n] = v > SATURATE ? SATURATE : v;
	}
	return t[len];
}

uint64_t listing_spamscore10(uint64_t impacts, uint64_t total)
{
	if (!total) return 0;
	unsigned __int128 num = (unsigned __int128)impacts * 2000000u + total;
	unsigned __int128 q = num / ((unsigned __int128)total * 2u);
	return q > UINT64_MAX ? UINT64_MAX : (uint64_t)q;
}

uint64_t listing_spamscore_min_impacts(uint64_t score10, uint64_t total)
{
	if (!score10) return 0;
	/* floor(n*1e6/total + 1/2) >= S  <=>  2*n*1e6 >= (2S-1)*total */
	unsigned __int128 need = (unsigned __int128)(2 * score10 - 1) * total;
	unsigned __int128 n = (need + 1999999u) / 2000000u;
	return n > UINT64_MAX ? UINT64_MAX : (uint64_t)n;
}

const char *listing_never(const struct listing_policy *p, const struct listing_ip *ip)
{
	int fam = ip->family == 4 ? AF_INET : AF_INET6;
	for (size_t i = 0; i < p->n_never; i++)
		if (base_cidr_contains(&p->never[i], fam, ip->a)) return "reserved";
	for (size_t i = 0; i < p->n_whitelist; i++)
		if (base_cidr_contains(&p->whitelist[i], fam, ip->a)) return "whitelisted";
	return NULL;
}

int listing_is_test_listed(const struct listing_ip *ip)
{
	static const uint8_t v4[4] = {127, 0, 0, 2};
	static const uint8_t v6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0x7f, 0, 0, 2};
	if (ip->family == 4) return !memcmp(ip->a, v4, 4);
	return !memcmp(ip->a, v6, 16);
}

/* ---- a small string-keyed hash map --------------------------------------- */

/* Open addressing with linear probing; keys live in the arena. Invariant:
 * used < cap / 2, cap a power of two. */
struct smap {
	struct smap_slot {
		const char *key;
		size_t val;
	} * slots;
	size_t cap, used;
	struct base_arena *arena;
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 1099511628211ull;
	}
	return h;
}

static void smap_init(struct smap *m, struct base_arena *a)
{
	m->cap = 1024;
	m->used = 0;
	m->slots = base_xcalloc(m->cap, sizeof *m->slots);
	m->arena = a;
}

static void smap_free(struct smap *m)
{
	free(m->slots);
	m->slots = NULL;
}

static struct smap_slot *smap_find(struct smap *m, const char *key)
{
	size_t i = hash_str(key) & (m->cap - 1);
	while (m->slots[i].key && strcmp(m->slots[i].key, key)) i = (i + 1) & (m->cap - 1);
	return &m->slots[i];
}

/* Returns the slot; *fresh tells whether the key was just added (val 0). */
static struct smap_slot *smap_put(struct smap *m, const char *key, int *fresh)
{
	if ((m->used + 1) * 2 > m->cap) {
		struct smap old = *m;
		m->cap *= 2;
		m->slots = base_xcalloc(m->cap, sizeof *m->slots);
		for (size_t i = 0; i < old.cap; i++)
			if (old.slots[i].key) *smap_find(m, old.slots[i].key) = old.slots[i];
		free(old.slots);
	}
	struct smap_slot *s = smap_find(m, key);
	*fresh = !s->key;
	if (!s->key) {
		s->key = base_arena_strndup(m->arena, key, strlen(key));
		s->val = 0;
		m->used++;
	}
	return s;
}

static struct smap_slot *smap_get(struct smap *m, const char *key)
{
	struct smap_slot *s = smap_find(m, key);
	return s->key ? s : NULL;
}

/* ---- refresh ------------------------------------------------------------- */

struct imp {
	int64_t time, id;
	struct listing_ip ip;
};

/* One impact's contribution to an L2 or L3 group. */
struct contrib {
	size_t group;
	int64_t time, end, id;
};

struct group {
	char key[64];
	unsigned len;     /* L2: prefix length */
	uint32_t asn;     /* L3 */
	const char *name; /* L2: the allocation's name from the table, or NULL */
	int64_t floor;
	size_t first, n; /* slice of the sorted contribution array */
};

struct refresh {
	const struct listing_policy *p;
	int64_t now;
	struct base_arena arena;
	struct smap floors; /* "level|key" -> index into floor_v */
	int64_t *floor_v;
	size_t n_floor, cap_floor;
	struct imp *imps;
	size_t n_imps, cap_imps;
	struct listing_record *want; /* desired listings */
	size_t n_want, cap_want;
	struct contrib *c2, *c3;
	size_t n2, cap2, n3, cap3;
	struct group *g2, *g3;
	size_t ng2, capg2, ng3, capg3;
	struct smap gmap2, gmap3;
};

#define GROW(arr, n, cap)                                                                          \
	do {                                                                                       \
		if ((n) == (cap)) {                                                                \
			(cap) = (cap) ? (cap)*2 : 256;                                             \
			(arr) = base_xrealloc((arr), (cap) * sizeof *(arr));                       \
		}                                                                                  \
	} while (0)

static int floor_cb(void *ctx, int level, const char *key, int64_t since)
{
	struct refresh *r = ctx;
	char k[80];
	snprintf(k, sizeof k, "%d|%s", level, key);
	int fresh;
	struct smap_slot *s = smap_put(&r->floors, k, &fresh);
	GROW(r->floor_v, r->n_floor, r->cap_floor);
	r->floor_v[r->n_floor] = since;
	s->val = r->n_floor++;
	return 0;
}

static int64_t floor_of(struct refresh *r, int level, const char *key)
{
	char k[80];
	snprintf(k, sizeof k, "%d|%s", level, key);
	struct smap_slot *s = smap_get(&r->floors, k);
	return s ? r->floor_v[s->val] : INT64_MIN;
}

static int imp_cb(void *ctx, const struct listing_impact *imp)
{
	struct refresh *r = ctx;
	if (listing_never(r->p, &imp->ip)) return 0;
	GROW(r->imps, r->n_imps, r->cap_imps);
	struct imp *x = &r->imps[r->n_imps++];
	x->time = imp->time;
	x->id = imp->id;
	x->ip = imp->ip;
	return 0;
}

static int cmp_imp(const void *a, const void *b)
{
	const struct imp *x = a, *y = b;
	if (x->ip.family != y->ip.family) return x->ip.family < y->ip.family ? -1 : 1;
	int c = memcmp(x->ip.a, y->ip.a, 16);
	if (c) return c;
	if (x->time != y->time) return x->time < y->time ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static void evidence_ids(char *out, size_t n, const int64_t *ids, size_t count)
{
	size_t o = 0;
	out[0] = 0;
	for (size_t i = 0; i < count && o + 22 < n; i++)
		o += (size_t)snprintf(out + o, n - o, "%s%lld", i ? "," : "", (long long)ids[i]);
}

static struct listing_record *want_new(struct refresh *r)
{
	GROW(r->want, r->n_want, r->cap_want);
	struct listing_record *w = &r->want[r->n_want++];
	memset(w, 0, sizeof *w);
	w->state = LISTING_ACTIVE;
	return w;
}

static size_t group_of(struct refresh *r, int level, const char *key, unsigned len, uint32_t asn)
{
	struct smap *m = level == 2 ? &r->gmap2 : &r->gmap3;
	int fresh;
	struct smap_slot *s = smap_put(m, key, &fresh);
	if (!fresh) return s->val;
	struct group *g;
	if (level == 2) {
		GROW(r->g2, r->ng2, r->capg2);
		s->val = r->ng2;
		g = &r->g2[r->ng2++];
	} else {
		GROW(r->g3, r->ng3, r->capg3);
		s->val = r->ng3;
		g = &r->g3[r->ng3++];
	}
	memset(g, 0, sizeof *g);
	snprintf(g->key, sizeof g->key, "%s", key);
	g->len = len;
	g->asn = asn;
	g->floor = floor_of(r, level, key);
	return s->val;
}

static void add_contrib(struct refresh *r, int level, size_t group, int64_t time, int64_t end,
                        int64_t id)
{
	struct group *g = level == 2 ? &r->g2[group] : &r->g3[group];
	if (time <= g->floor) return;
	struct contrib *c;
	if (level == 2) {
		GROW(r->c2, r->n2, r->cap2);
		c = &r->c2[r->n2++];
	} else {
		GROW(r->c3, r->n3, r->cap3);
		c = &r->c3[r->n3++];
	}
	c->group = group;
	c->time = time;
	c->end = end;
	c->id = id;
}

/* Level 1 for the impacts of one IP, imps[0..n) sorted by time. */
static void level1(struct refresh *r, const struct imp *v, size_t n)
{
	const struct listing_policy *p = r->p;
	char key[64];
	listing_ip_format(&v[0].ip, key, sizeof key);
	int64_t fl = floor_of(r, 1, key);
	size_t s = 0;
	while (s < n && v[s].time <= fl) s++;
	size_t c = n - s;
	if (c < p->l1_threshold) return;
	const struct imp *cv = v + s;
	struct listing_record *w = want_new(r);
	w->level = 1;
	snprintf(w->key, sizeof w->key, "%s", key);
	w->first_seen = cv[0].time;
	w->last_seen = cv[c - 1].time;
	w->listed_at = cv[p->l1_threshold - 1].time;
	w->expires = cv[c - p->l1_threshold].time + p->window;
	w->impacts = c;
	int64_t ids[EVIDENCE_IDS] = {0};
	size_t ne = 0;
	for (size_t i = c; i > 0 && ne < EVIDENCE_IDS; i--) ids[ne++] = cv[i - 1].id;
	evidence_ids(w->evidence, sizeof w->evidence, ids, ne);
	snprintf(w->reason, sizeof w->reason, "%zu trap impact%s within %u days", c,
	         c == 1 ? "" : "s", (unsigned)(p->window / 86400));
	if (v[0].ip.family != 4) return;

	/* contributions to the allocation and the AS */
	uint32_t a = ip4(&v[0].ip);
	const struct listing_prefix *al = listing_prefixes_match(p->allocs, a);
	char gkey[64];
	unsigned glen = al ? al->len : 24;
	uint32_t net = al ? al->addr : (a & 0xffffff00u);
	snprintf(gkey, sizeof gkey, "%u.%u.%u.%u/%u", net >> 24, (net >> 16) & 255,
	         (net >> 8) & 255, net & 255, glen);
	size_t g2 = group_of(r, 2, gkey, glen, 0);
	r->g2[g2].name = al ? al->name : NULL;
	const struct listing_prefix *asp = listing_prefixes_match(p->asmap, a);
	size_t g3 = 0;
	if (asp && asp->asn) {
		snprintf(gkey, sizeof gkey, "AS%u", asp->asn);
		g3 = group_of(r, 3, gkey, 0, asp->asn);
	}
	for (size_t i = 0; i < c; i++) {
		int64_t end = cv[i].time + p->window;
		if (end > w->expires) end = w->expires;
		add_contrib(r, 2, g2, cv[i].time, end, cv[i].id);
		if (asp && asp->asn) add_contrib(r, 3, g3, cv[i].time, end, cv[i].id);
	}
}

static int cmp_contrib_end(const void *a, const void *b)
{
	const struct contrib *x = a, *y = b;
	if (x->group != y->group) return x->group < y->group ? -1 : 1;
	if (x->end != y->end) return x->end > y->end ? -1 : 1; /* latest end first */
	if (x->time != y->time) return x->time > y->time ? -1 : 1;
	return x->id > y->id ? -1 : x->id < y->id;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

/* The ranges an AS announces, as "a.b.c.d/len ..." in the arena. */
static const char *as_ranges(struct refresh *r, uint32_t asn)
{
	struct base_buf b;
	base_buf_init(&b);
	const struct listing_prefixes *t = r->p->asmap;
	for (size_t i = 0; i < t->n; i++) {
		if (t->v[i].asn != asn) continue;
		uint32_t x = t->v[i].addr;
		base_buf_printf(&b, "%s%u.%u.%u.%u/%u", b.len ? " " : "", x >> 24, (x >> 16) & 255,
		                (x >> 8) & 255, x & 255, t->v[i].len);
	}
	const char *s = base_arena_strndup(&r->arena, b.data ? b.data : "", b.len);
	base_buf_free(&b);
	return s;
}

/* Levels 2 and 3 from the contributions of one level. */
static void upper_level(struct refresh *r, int level)
{
	struct contrib *c = level == 2 ? r->c2 : r->c3;
	size_t n = level == 2 ? r->n2 : r->n3;
	struct group *groups = level == 2 ? r->g2 : r->g3;
	base_sort(c, n, sizeof *c, cmp_contrib_end);
	int64_t *times = NULL;
	size_t cap_t = 0;
	for (size_t i = 0; i < n;) {
		size_t j = i;
		while (j < n && c[j].group == c[i].group) j++;
		struct group *g = &groups[c[i].group];
		uint64_t cnt = j - i, need, total = 0;
		if (level == 2) {
			need = listing_l2_threshold(r->p, g->len);
		} else {
			total = listing_prefixes_as_size(r->p->asmap, g->asn);
			uint64_t by_score =
			    listing_spamscore_min_impacts(r->p->l3_min_score10, total);
			need = r->p->l3_min_impacts > by_score ? r->p->l3_min_impacts : by_score;
			if (!total) need = UINT64_MAX;
		}
		if (need == 0) need = 1;
		if (cnt >= need) {
			struct listing_record *w = want_new(r);
			w->level = level;
			snprintf(w->key, sizeof w->key, "%s", g->key);
			w->expires = c[i + need - 1].end;
			w->impacts = cnt;
			if (cap_t < cnt) {
				cap_t = cnt;
				times = base_xrealloc(times, cap_t * sizeof *times);
			}
			for (size_t k = 0; k < cnt; k++) times[k] = c[i + k].time;
			base_sort(times, cnt, sizeof *times, cmp_i64);
			w->first_seen = times[0];
			w->last_seen = times[cnt - 1];
			w->listed_at = times[need - 1];
			/* evidence: the contributions that last longest (the newest) */
			int64_t ids[EVIDENCE_IDS] = {0};
			size_t ne = 0;
			for (size_t k = i; k < j && ne < EVIDENCE_IDS; k++) ids[ne++] = c[k].id;
			evidence_ids(w->evidence, sizeof w->evidence, ids, ne);
			if (level == 2) {
				snprintf(w->reason, sizeof w->reason,
				         "allocation /%u%s%.40s%s: %llu impacts from listed IPs "
				         "within %u days "
				         "(threshold %llu)",
				         g->len, g->name ? " (" : "", g->name ? g->name : "",
				         g->name ? ")" : "", (unsigned long long)cnt,
				         (unsigned)(r->p->window / 86400),
				         (unsigned long long)need);
				w->ranges = base_arena_strndup(&r->arena, g->key, strlen(g->key));
			} else {
				uint64_t sc = listing_spamscore10(cnt, total);
				snprintf(w->reason, sizeof w->reason,
				         "%.16s: %llu impacts within %u days, SPAMSCORE %llu.%llu "
				         "(%llu IPs announced)",
				         g->key, (unsigned long long)cnt,
				         (unsigned)(r->p->window / 86400),
				         (unsigned long long)(sc / 10),
				         (unsigned long long)(sc % 10), (unsigned long long)total);
				w->ranges = as_ranges(r, g->asn);
			}
		}
		i = j;
	}
	free(times);
}

/* ---- reconciliation ------------------------------------------------------ */

struct active {
	struct listing_record *v;
	size_t n, cap;
	struct smap map; /* "level|key" -> index */
	struct base_arena *arena;
};

static int active_cb(void *ctx, const struct listing_record *rec)
{
	struct active *a = ctx;
	GROW(a->v, a->n, a->cap);
	a->v[a->n] = *rec;
	if (rec->ranges)
		a->v[a->n].ranges = base_arena_strndup(a->arena, rec->ranges, strlen(rec->ranges));
	char k[80];
	snprintf(k, sizeof k, "%d|%s", rec->level, rec->key);
	int fresh;
	smap_put(&a->map, k, &fresh)->val = a->n;
	a->n++;
	return 0;
}

static int same_str(const char *a, const char *b)
{
	return !strcmp(a ? a : "", b ? b : "");
}

/* Reconciles r->want with the active episodes in `act` (all of them for a
 * full refresh, those of the recomputed keys for an incremental one). */
static int reconcile(struct listing_store *s, struct refresh *r, struct active *a,
                     struct listing_refresh_result *res, struct base_err *err)
{
	struct active act = *a;
	uint8_t *seen = NULL;
	int rc = -1;
	seen = base_xcalloc(act.n ? act.n : 1, 1);
	for (size_t i = 0; i < r->n_want; i++) {
		struct listing_record *w = &r->want[i];
		char k[80];
		snprintf(k, sizeof k, "%d|%s", w->level, w->key);
		struct smap_slot *sl = smap_get(&act.map, k);
		if (sl) {
			struct listing_record *e = &act.v[sl->val];
			seen[sl->val] = 1;
			if (e->expires >= w->first_seen || e->expires > r->now) {
				/* the same episode continues */
				struct listing_record u = *w;
				u.id = e->id;
				u.listed_at = e->listed_at;
				u.first_seen =
				    e->first_seen < w->first_seen ? e->first_seen : w->first_seen;
				if (u.expires == e->expires && u.last_seen == e->last_seen &&
				    u.impacts == e->impacts && !strcmp(u.evidence, e->evidence) &&
				    !strcmp(u.reason, e->reason) && same_str(u.ranges, e->ranges))
					continue;
				if (s->ops->listing_update(s, &u, err) < 0) goto out;
				res->updated++;
				continue;
			}
			/* it lapsed before these impacts came: close it, start anew */
			e->state = LISTING_EXPIRED;
			e->removed_at = e->expires;
			if (s->ops->listing_update(s, e, err) < 0) goto out;
			res->removed++;
		}
		if (s->ops->listing_insert(s, w, err) < 0) goto out;
		res->listed++;
	}
	for (size_t i = 0; i < act.n; i++) {
		if (seen[i]) continue;
		struct listing_record *e = &act.v[i];
		e->state = LISTING_EXPIRED;
		e->removed_at = e->expires < r->now ? e->expires : r->now;
		if (s->ops->listing_update(s, e, err) < 0) goto out;
		res->removed++;
	}
	rc = 0;
out:
	free(seen);
	return rc;
}

static int any_cb(void *ctx, const struct listing_impact *imp)
{
	(void)imp;
	*(int *)ctx = 1;
	return 1;
}

enum { REFRESH_NONE = 0, REFRESH_INCREMENTAL = 1, REFRESH_FULL = 2 };

static int meta_i64(struct listing_store *s, const char *key, int64_t *v, struct base_err *err)
{
	char buf[64];
	int f = s->ops->meta_get(s, key, buf, sizeof buf, err);
	if (f == 1) *v = strtoll(buf, NULL, 10);
	return f;
}

/* What a refresh at `now` has to do. Full: the policy changed, something
 * was delisted, or time went back. Incremental: impacts arrived, came due
 * (stamped after the last refresh), or left the window since it; every
 * change of a listing, expiry included, is one of these. None: nothing can
 * have changed. */
static int need_refresh(struct listing_store *s, const struct listing_policy *p, int64_t now,
                        struct base_err *err)
{
	char buf[64];
	int f = s->ops->meta_get(s, "dirty_full", buf, sizeof buf, err);
	if (f < 0) return -1;
	if (f == 1 && strcmp(buf, "0")) return REFRESH_FULL;
	f = s->ops->meta_get(s, "policy", buf, sizeof buf, err);
	if (f < 0) return -1;
	char fp[32];
	snprintf(fp, sizeof fp, "%016llx", (unsigned long long)listing_policy_fingerprint(p));
	if (f == 0 || strcmp(buf, fp)) return REFRESH_FULL;
	int64_t last = 0, last_id = 0;
	if ((f = meta_i64(s, "refreshed_at", &last, err)) <= 0) return f < 0 ? -1 : REFRESH_FULL;
	if (last > now) return REFRESH_FULL;
	if ((f = meta_i64(s, "last_id", &last_id, err)) <= 0) return f < 0 ? -1 : REFRESH_FULL;
	f = s->ops->meta_get(s, "dirty", buf, sizeof buf, err);
	if (f < 0) return -1;
	if (f == 1 && strcmp(buf, "0")) return REFRESH_INCREMENTAL;
	if (last != now) {
		int any = 0;
		int64_t w = (int64_t)p->window;
		if (s->ops->impacts_window(s, last, now, any_cb, &any, err) < 0 ||
		    (!any && s->ops->impacts_window(s, last - w, now - w, any_cb, &any, err) < 0))
			return -1;
		if (any) return REFRESH_INCREMENTAL;
	}
	return REFRESH_NONE;
}

static void refresh_free(struct refresh *r)
{
	smap_free(&r->floors);
	smap_free(&r->gmap2);
	smap_free(&r->gmap3);
	free(r->floor_v);
	free(r->imps);
	free(r->want);
	free(r->c2);
	free(r->c3);
	free(r->g2);
	free(r->g3);
	base_arena_free(&r->arena);
}

/* ---- incremental refresh ------------------------------------------------ */

/* Beyond this many new impacts a full refresh is cheaper. */
#define INCREMENTAL_MAX 50000

/* The keys an incremental refresh recomputes, and the address ranges whose
 * impacts it reads: every IP with a new impact, its allocation (all of it)
 * and its AS (all of its prefixes). Every IP inside a range read has all
 * its window impacts read, so its Level 1 result is complete; Level 2 and 3
 * results are kept only for the allocations and ASes read whole. */
struct scope {
	struct refresh *r;
	int64_t max_id;
	size_t n_new;
	int too_many;
	struct smap ips, allocs, ases;
	struct smap loaded; /* Level 1 keys whose active episode was read */
	struct range {
		struct listing_ip lo, hi;
	} * ranges;
	size_t n_ranges, cap_ranges;
	struct as_index {
		uint32_t asn;
		size_t i;
	} * by_asn; /* the asmap's prefixes sorted by AS, built on first use */
};

static void add_range(struct scope *sc, const struct listing_ip *lo, const struct listing_ip *hi)
{
	GROW(sc->ranges, sc->n_ranges, sc->cap_ranges);
	sc->ranges[sc->n_ranges].lo = *lo;
	sc->ranges[sc->n_ranges].hi = *hi;
	sc->n_ranges++;
}

static void v4_range(uint32_t net, unsigned len, struct listing_ip *lo, struct listing_ip *hi)
{
	uint32_t last = net | (len ? ~(0xffffffffu << (32 - len)) : 0xffffffffu);
	memset(lo, 0, sizeof *lo);
	memset(hi, 0, sizeof *hi);
	lo->family = hi->family = 4;
	for (int i = 0; i < 4; i++) {
		lo->a[i] = (uint8_t)(net >> (24 - 8 * i));
		hi->a[i] = (uint8_t)(last >> (24 - 8 * i));
	}
}

static int cmp_as_index(const void *a, const void *b)
{
	const struct as_index *x = a, *y = b;
	if (x->asn != y->asn) return x->asn < y->asn ? -1 : 1;
	return x->i < y->i ? -1 : x->i > y->i;
}

static void add_as(struct scope *sc, uint32_t asn)
{
	const struct listing_prefixes *t = sc->r->p->asmap;
	if (!sc->by_asn) {
		sc->by_asn = base_xmalloc((t->n ? t->n : 1) * sizeof *sc->by_asn);
		for (size_t i = 0; i < t->n; i++) {
			sc->by_asn[i].asn = t->v[i].asn;
			sc->by_asn[i].i = i;
		}
		base_sort(sc->by_asn, t->n, sizeof *sc->by_asn, cmp_as_index);
	}
	size_t lo = 0, hi = t->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (sc->by_asn[mid].asn < asn)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < t->n && sc->by_asn[lo].asn == asn; lo++) {
		const struct listing_prefix *px = &t->v[sc->by_asn[lo].i];
		struct listing_ip a, b;
		v4_range(px->addr, px->len, &a, &b);
		add_range(sc, &a, &b);
	}
}

static int new_impact_cb(void *ctx, const struct listing_impact *imp)
{
	struct scope *sc = ctx;
	const struct listing_policy *p = sc->r->p;
	if (imp->id > sc->max_id) sc->max_id = imp->id;
	if (imp->time > sc->r->now) return 0; /* not yet */
	if (listing_never(p, &imp->ip)) return 0;
	if (++sc->n_new > INCREMENTAL_MAX) {
		sc->too_many = 1;
		return 1;
	}
	char key[64];
	listing_ip_format(&imp->ip, key, sizeof key);
	int fresh;
	smap_put(&sc->ips, key, &fresh);
	if (!fresh) return 0;
	if (imp->ip.family != 4) {
		add_range(sc, &imp->ip, &imp->ip);
		return 0;
	}
	uint32_t a = ip4(&imp->ip);
	const struct listing_prefix *al = listing_prefixes_match(p->allocs, a);
	unsigned len = al ? al->len : 24;
	uint32_t net = al ? al->addr : (a & 0xffffff00u);
	snprintf(key, sizeof key, "%u.%u.%u.%u/%u", net >> 24, (net >> 16) & 255, (net >> 8) & 255,
	         net & 255, len);
	smap_put(&sc->allocs, key, &fresh);
	if (fresh) {
		struct listing_ip lo, hi;
		v4_range(net, len, &lo, &hi);
		add_range(sc, &lo, &hi);
	}
	const struct listing_prefix *asp = listing_prefixes_match(p->asmap, a);
	if (asp && asp->asn) {
		snprintf(key, sizeof key, "AS%u", asp->asn);
		smap_put(&sc->ases, key, &fresh);
		if (fresh) add_as(sc, asp->asn);
	}
	return 0;
}

static int same_impact(const struct imp *x, const struct imp *y)
{
	return x->id == y->id;
}

/* Fills r->want with the recomputed keys and `act` with their active
 * episodes. Returns 0, 1 if a full refresh should be done instead, or -1. */
static int incremental(struct listing_store *s, struct refresh *r, int64_t last, int64_t last_id,
                       struct active *act, int64_t *max_id, struct base_err *err)
{
	struct scope sc;
	memset(&sc, 0, sizeof sc);
	sc.r = r;
	sc.max_id = last_id;
	smap_init(&sc.ips, &r->arena);
	smap_init(&sc.allocs, &r->arena);
	smap_init(&sc.ases, &r->arena);
	smap_init(&sc.loaded, &r->arena);
	int rc = -1;
	const struct listing_policy *p = r->p;
	if (s->ops->impacts_after_id(s, last_id, new_impact_cb, &sc, err) < 0) goto out;
	int64_t win = (int64_t)p->window;
	if (!sc.too_many &&
	    s->ops->impacts_window(s, last - win, r->now - win, new_impact_cb, &sc, err) < 0)
		goto out;
	if (!sc.too_many && s->ops->impacts_window(s, last, r->now, new_impact_cb, &sc, err) < 0)
		goto out;
	if (sc.too_many) {
		rc = 1;
		goto out;
	}
	int64_t after = r->now - (int64_t)p->window;
	for (size_t i = 0; i < sc.n_ranges; i++)
		if (s->ops->impacts_range(s, &sc.ranges[i].lo, &sc.ranges[i].hi, after, r->now,
		                          imp_cb, r, err) < 0)
			goto out;
	base_sort(r->imps, r->n_imps, sizeof *r->imps, cmp_imp);
	size_t m = 0; /* ranges overlap (an allocation inside its AS): drop repeats */
	for (size_t i = 0; i < r->n_imps; i++)
		if (!m || !same_impact(&r->imps[m - 1], &r->imps[i])) r->imps[m++] = r->imps[i];
	r->n_imps = m;
	for (size_t i = 0; i < r->n_imps;) {
		size_t j = i + 1;
		while (j < r->n_imps && r->imps[j].ip.family == r->imps[i].ip.family &&
		       !memcmp(r->imps[j].ip.a, r->imps[i].ip.a, 16))
			j++;
		level1(r, r->imps + i, j - i);
		/* this IP's Level 1 episode is in scope */
		char key[64];
		listing_ip_format(&r->imps[i].ip, key, sizeof key);
		int fresh;
		smap_put(&sc.loaded, key, &fresh);
		if (fresh &&
		    s->ops->listings_scan(s, LISTING_ACTIVE, 1, key, active_cb, act, err) < 0)
			goto out;
		i = j;
	}
	/* and so are those of new-impact IPs with nothing left in the window */
	for (size_t i = 0; i < sc.ips.cap; i++) {
		const char *key = sc.ips.slots[i].key;
		int fresh;
		if (!key) continue;
		smap_put(&sc.loaded, key, &fresh);
		if (fresh &&
		    s->ops->listings_scan(s, LISTING_ACTIVE, 1, key, active_cb, act, err) < 0)
			goto out;
	}
	upper_level(r, 2);
	if (p->asmap) upper_level(r, 3);
	size_t k = 0;
	for (size_t i = 0; i < r->n_want; i++) {
		const struct listing_record *w = &r->want[i];
		if (w->level == 1 || (w->level == 2 && smap_get(&sc.allocs, w->key)) ||
		    (w->level == 3 && smap_get(&sc.ases, w->key)))
			r->want[k++] = *w;
	}
	r->n_want = k;
	for (size_t i = 0; i < sc.allocs.cap; i++)
		if (sc.allocs.slots[i].key &&
		    s->ops->listings_scan(s, LISTING_ACTIVE, 2, sc.allocs.slots[i].key, active_cb,
		                          act, err) < 0)
			goto out;
	for (size_t i = 0; i < sc.ases.cap; i++)
		if (sc.ases.slots[i].key &&
		    s->ops->listings_scan(s, LISTING_ACTIVE, 3, sc.ases.slots[i].key, active_cb,
		                          act, err) < 0)
			goto out;
	*max_id = sc.max_id;
	rc = 0;
out:
	smap_free(&sc.ips);
	smap_free(&sc.allocs);
	smap_free(&sc.ases);
	smap_free(&sc.loaded);
	free(sc.ranges);
	free(sc.by_asn);
	return rc;
}

/* ---- the driver ------------------------------------------------------------ */

static void full(struct refresh *r)
{
	base_sort(r->imps, r->n_imps, sizeof *r->imps, cmp_imp);
	for (size_t i = 0; i < r->n_imps;) {
		size_t j = i + 1;
		while (j < r->n_imps && r->imps[j].ip.family == r->imps[i].ip.family &&
		       !memcmp(r->imps[j].ip.a, r->imps[i].ip.a, 16))
			j++;
		level1(r, r->imps + i, j - i);
		i = j;
	}
	upper_level(r, 2);
	if (r->p->asmap) upper_level(r, 3);
}

static void refresh_reset(struct refresh *r, const struct listing_policy *p, int64_t now)
{
	memset(r, 0, sizeof *r);
	r->p = p;
	r->now = now;
	base_arena_init(&r->arena);
	smap_init(&r->floors, &r->arena);
	smap_init(&r->gmap2, &r->arena);
	smap_init(&r->gmap3, &r->arena);
}

static int set_meta_i64(struct listing_store *s, const char *key, int64_t v, struct base_err *err)
{
	char buf[32];
	snprintf(buf, sizeof buf, "%lld", (long long)v);
	return s->ops->meta_set(s, key, buf, err);
}

int listing_refresh(struct listing_store *s, const struct listing_policy *p, int64_t now, int force,
                    struct listing_refresh_result *res, struct base_err *err)
{
	struct listing_refresh_result dummy;
	if (!res) res = &dummy;
	memset(res, 0, sizeof *res);
	int need = REFRESH_FULL;
	if (!force) {
		need = need_refresh(s, p, now, err);
		if (need <= 0) return need;
	}
	res->ran = 1;
	struct refresh r;
	refresh_reset(&r, p, now);
	struct active act = {0};
	act.arena = &r.arena;
	smap_init(&act.map, &r.arena);
	int rc = -1;
	int64_t last = 0, last_id = 0, max_id = 0;
	if (s->ops->begin(s, err) < 0) goto out;
	if (s->ops->floors_scan(s, floor_cb, &r, err) < 0) goto fail;
	if (need == REFRESH_INCREMENTAL) {
		if (meta_i64(s, "refreshed_at", &last, err) < 0 ||
		    meta_i64(s, "last_id", &last_id, err) < 0)
			goto fail;
		int k = incremental(s, &r, last, last_id, &act, &max_id, err);
		if (k < 0) goto fail;
		if (k == 1) { /* too much changed: start over with everything */
			need = REFRESH_FULL;
			free(act.v);
			smap_free(&act.map);
			refresh_free(&r);
			refresh_reset(&r, p, now);
			memset(&act, 0, sizeof act);
			act.arena = &r.arena;
			smap_init(&act.map, &r.arena);
			if (s->ops->floors_scan(s, floor_cb, &r, err) < 0) goto fail;
		}
	}
	if (need == REFRESH_FULL) {
		if (s->ops->impacts_max_id(s, &max_id, err) < 0) goto fail;
		if (s->ops->impacts_window(s, now - (int64_t)p->window, now, imp_cb, &r, err) < 0)
			goto fail;
		full(&r);
		if (s->ops->listings_scan(s, LISTING_ACTIVE, 0, NULL, active_cb, &act, err) < 0)
			goto fail;
	}
	res->incremental = need == REFRESH_INCREMENTAL;
	if (reconcile(s, &r, &act, res, err) < 0) goto fail;
	char buf[32];
	snprintf(buf, sizeof buf, "%016llx", (unsigned long long)listing_policy_fingerprint(p));
	if (s->ops->meta_set(s, "policy", buf, err) < 0 ||
	    set_meta_i64(s, "refreshed_at", now, err) < 0 ||

	    set_meta_i64(s, "last_id", max_id, err) < 0 ||
	    s->ops->meta_set(s, "dirty", "0", err) < 0 ||
	    (need == REFRESH_FULL && s->ops->meta_set(s, "dirty_full", "0", err) < 0) ||
	    s->ops->commit(s, err) < 0)
		goto fail;
	rc = 0;
	goto out;
fail:
	s->ops->rollback(s);
out:
	free(act.v);
	smap_free(&act.map);
	refresh_free(&r);
	return rc;
}
