/*
 * generic.c — rbldnsd's simplified BIND-style records: "owner [ttl] [IN]
 * A|TXT|MX data", one per line, owners relative to the zone ("@" is the
 * apex). Records are sorted by reversed owner key and type so that one
 * bisection finds every record of a name.
 */
#include "dnsbl/int.h"

#include <stdlib.h>
#include <string.h>

struct grec {
	const uint8_t *key;
	uint16_t klen, type;
	uint32_t ttl;
	const uint8_t *rd;
	uint16_t rdlen;
	uint32_t seq;
};

struct gset {
	struct grec *r;
	size_t n, cap;
};

static int g_start(struct ds *ds)
{
	if (!ds->data) ds->data = base_xcalloc(1, sizeof(struct gset));
	return 0;
}

static int type_rank(uint16_t t)
{
	return t == DNS_T_A ? 0 : t == DNS_T_MX ? 1 : 2;
}

static const char *tok(const char *s, char *buf, size_t sz)
{
	s = base_skip_ws(s);
	size_t n = 0;
	while (*s && *s != ' ' && *s != '\t') {
		if (n + 1 < sz) buf[n++] = *s;
		s++;
	}
	buf[n] = 0;
	return s;
}

static int g_line(struct ds *ds, char *line, struct base_err *err)
{
	struct gset *g = ds->data;
	char owner[300], t[300];
	const char *s = tok(line, owner, sizeof owner);
	struct dns_name dn;
	struct base_err e;
	(void)err;
	if (!strcmp(owner, "@")) {
		dn.wire[0] = 0;
		dns_name_index(&dn);
	} else if (dns_name_from_text(&dn, owner, 1, &e) < 0 || dn.nlabels == 0) {
		ds_warn(ds, "invalid domain name");
		return 0;
	}
	uint32_t ttl = ds->ttl;
	s = base_skip_ws(s);
	if (*s >= '0' && *s <= '9') {
		s = tok(s, t, sizeof t);
		uint32_t v;
		if (ds_parse_time(t, &v, NULL) < 0) {
			ds_warn(ds, "invalid TTL");
			return 0;
		}
		ttl = ds_clamp_ttl(ds, v);
	}
	s = tok(s, t, sizeof t);
	if (!base_strcasecmp_ascii(t, "IN")) s = tok(s, t, sizeof t);
	const char *data = base_skip_ws(s);
	uint8_t rd[512];
	size_t rdlen = 0;
	uint16_t type;
	if (!base_strcasecmp_ascii(t, "A") && *data) {
		uint32_t a;
		const char *end;
		if (ip4_parse_addr(data, &a, &end) < 0) {
			ds_warn(ds, "invalid A record");
			return 0;
		}
		type = DNS_T_A;
		dns_put32(rd, a);
		rdlen = 4;
	} else if (!base_strcasecmp_ascii(t, "TXT") && *data) {
		size_t n = strlen(data);
		if (n >= 2 && data[0] == '"' && data[n - 1] == '"') {
			data++;
			n -= 2;
		}
		if (n > 255) {
			ds_warn(ds, "TXT RR truncated to 255 bytes");
			n = 255;
		}
		type = DNS_T_TXT;
		rd[0] = (uint8_t)n;
		memcpy(rd + 1, data, n);
		rdlen = n + 1;
	} else if (!base_strcasecmp_ascii(t, "MX") && *data) {
		uint64_t pri;
		s = tok(data, t, sizeof t);
		int k = base_parse_uint(t, 65535, &pri);
		if (k < 0 || t[k]) {
			ds_warn(ds, "invalid MX preference");
			return 0;
		}
		s = tok(s, t, sizeof t);
		struct dns_name mx;
		if (!*t || dns_name_from_text(&mx, t, 0, &e) < 0 || *base_skip_ws(s)) {
			ds_warn(ds, "invalid MX host");
			return 0;
		}
		type = DNS_T_MX;
		dns_put16(rd, (uint16_t)pri);
		memcpy(rd + 2, mx.wire, mx.len);
		rdlen = 2u + mx.len;
	} else {
		ds_warn(ds, "invalid/unrecognized entry");
		return 0;
	}
	if (g->n == g->cap) {
		g->cap = g->cap ? g->cap * 2 : 64;
		g->r = base_xrealloc(g->r, g->cap * sizeof *g->r);
	}
	uint8_t key[DNS_NAME_MAX + 1];
	size_t kl = ds_rev_key(dn.wire, key);
	struct grec *r = &g->r[g->n];
	uint8_t *k = base_arena_alloc(&ds->arena, kl + rdlen + 1);
	memcpy(k, key, kl);
	memcpy(k + kl, rd, rdlen);
	r->key = k;
	r->klen = (uint16_t)kl;
	r->rd = k + kl;
	r->rdlen = (uint16_t)rdlen;
	r->type = type;
	r->ttl = ttl;
	r->seq = (uint32_t)g->n;
	g->n++;
	return 1;
}

static int grec_cmp(const void *x, const void *y)
{
	const struct grec *a = x, *b = y;
	int c = ds_key_cmp(a->key, a->klen, b->key, b->klen);
	if (c) return c;
	if (a->type != b->type) return type_rank(a->type) - type_rank(b->type);
	return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static int g_finish(struct ds *ds, struct base_err *err)
{
	struct gset *g = ds->data;
	if (!g) g = ds->data = base_xcalloc(1, sizeof *g);
	base_sort(g->r, g->n, sizeof *g->r, grec_cmp);
	base_info("%s: %zu records", ds->label, g->n);
	(void)err;
	return 0;
}

static size_t g_lower(const struct gset *g, const uint8_t *k, size_t kl)
{
	size_t lo = 0, hi = g->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (ds_key_cmp(g->r[mid].key, g->r[mid].klen, k, kl) < 0) lo = mid + 1;
		else hi = mid;
	}
	return lo;
}

static int g_query(const struct ds *ds, const struct ds_query *q, struct answer *ans)
{
	const struct gset *g = ds->data;
	uint8_t key[DNS_NAME_MAX + 1];
	size_t kl = ds_rev_key(q->dn, key);
	size_t i = g_lower(g, key, kl);
	if (i >= g->n || ds_key_cmp(g->r[i].key, g->r[i].klen, key, kl)) return 0;
	for (; i < g->n && !ds_key_cmp(g->r[i].key, g->r[i].klen, key, kl); i++) {
		const struct grec *r = &g->r[i];
		unsigned need = r->type == DNS_T_A ? QF_A : r->type == DNS_T_MX ? QF_MX : QF_TXT;
		if (q->qflags & need) ans_add(ans, r->type, r->ttl, r->rd, r->rdlen);
	}
	return 1;
}

static int g_below(const struct ds *ds, const struct ds_query *q)
{
	const struct gset *g = ds->data;
	uint8_t key[DNS_NAME_MAX + 1];
	size_t kl = ds_rev_key(q->dn, key);
	size_t i = g_lower(g, key, kl);
	for (; i < g->n; i++) {
		if (g->r[i].klen < kl || memcmp(g->r[i].key, key, kl)) return 0;
		if (g->r[i].klen > kl) return 1;
	}
	return 0;
}

static void g_dump(const struct ds *ds, struct dnsbl_dump *sink)
{
	const struct gset *g = ds->data;
	for (size_t i = 0; i < g->n; i++) {
		const struct grec *r = &g->r[i];
		uint8_t rev[DNS_NAME_MAX + 1], owner[DNS_NAME_MAX + 1];
		memcpy(rev, r->key, r->klen);
		rev[r->klen] = 0;
		size_t o = ds_rev_key(rev, owner);
		owner[o] = 0;
		sink->rr(sink, owner, r->type, r->ttl, r->rd, r->rdlen);
	}
}

static void g_free(struct ds *ds)
{
	struct gset *g = ds->data;
	if (!g) return;
	free(g->r);
	free(g);
	ds->data = NULL;
}

const struct ds_type ds_generic = {
	.name = "generic", .flags = DST_DN, .start = g_start, .line = g_line, .finish = g_finish,
	.query = g_query, .below = g_below, .dump = g_dump, .free = g_free,
};
