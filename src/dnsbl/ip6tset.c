/*
 * ip6tset.c — the "trivial" IPv6 set: /64 networks sharing one value, with
 * single /128 exclusions. Both are sorted arrays searched by bisection.
 */
#include "dnsbl/int.h"

#include <stdlib.h>
#include <string.h>

typedef unsigned __int128 u128;

struct ip6tset {
	uint64_t *nets;
	size_t n, cap;
	u128 *excl;
	size_t nx, capx;
	uint32_t vid;
	int have_default;
};

static int t6_start(struct ds *ds)
{
	if (!ds->data) {
		struct ip6tset *t = base_xcalloc(1, sizeof *t);
		t->vid = DS_VID_DEF;
		ds->data = t;
	}
	return 0;
}

static u128 bytes128(const uint8_t *b)
{
	u128 v = 0;
	for (int i = 0; i < 16; i++) v = (v << 8) | b[i];
	return v;
}

static int t6_line(struct ds *ds, char *line, struct base_err *err)
{
	struct ip6tset *t = ds->data;
	(void)err;
	if (*line == ':') {
		/* any line starting with ':' is the default value, as in rbldnsd */
		if (t->have_default) return 1;
		uint32_t v = ds_parse_value(ds, line, DS_VID_DEF);
		if (!v) return 0;
		t->vid = v;
		t->have_default = 1;
		return 1;
	}
	int excl = 0;
	if (*line == '!') {
		excl = 1;
		line = (char *)base_skip_ws(line + 1);
	}
	uint8_t a[16];
	unsigned bits;
	const char *end;
	if (ip6_parse(line, a, &bits, &end) < 0 ||
	    !(!*end || *end == ' ' || *end == '\t' || *end == '#' || *end == ';')) {
		ds_warn(ds, "invalid address");
		return 0;
	}
	if (excl) {
		if (bits != 128) {
			ds_warn(ds, "invalid address for exclusion (should be 128 bits)");
			return 0;
		}
		if (t->nx == t->capx) {
			t->capx = t->capx ? t->capx * 2 : 64;
			t->excl = base_xrealloc(t->excl, t->capx * sizeof *t->excl);
		}
		t->excl[t->nx++] = bytes128(a);
		return 1;
	}
	if (bits != 64) {
		ds_warn(ds, "invalid address for regular entry (should be 64 bits)");
		return 0;
	}
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 1024;
		t->nets = base_xrealloc(t->nets, t->cap * sizeof *t->nets);
	}
	t->nets[t->n++] = (uint64_t)(bytes128(a) >> 64);
	return 1;
}

static int u64_cmp(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
	return a < b ? -1 : a > b;
}

static int u128_cmp(const void *x, const void *y)
{
	u128 a = *(const u128 *)x, b = *(const u128 *)y;
	return a < b ? -1 : a > b;
}

static int t6_finish(struct ds *ds, struct base_err *err)
{
	struct ip6tset *t = ds->data;
	if (!t) {
		t6_start(ds);
		t = ds->data;
	}
	base_sort(t->nets, t->n, sizeof *t->nets, u64_cmp);
	size_t o = 0;
	for (size_t i = 0; i < t->n; i++)
		if (!o || t->nets[o - 1] != t->nets[i]) t->nets[o++] = t->nets[i];
	t->n = o;
	base_sort(t->excl, t->nx, sizeof *t->excl, u128_cmp);
	base_info("%s: %zu/%zu", ds->label, t->n, t->nx);
	(void)err;
	return 0;
}

static size_t lb64(const uint64_t *a, size_t n, uint64_t k)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (a[mid] < k) lo = mid + 1;
		else hi = mid;
	}
	return lo;
}

static int has128(const u128 *a, size_t n, u128 k)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (a[mid] < k) lo = mid + 1;
		else hi = mid;
	}
	return lo < n && a[lo] == k;
}

static int t6_query(const struct ds *ds, const struct ds_query *q, struct answer *ans)
{
	const struct ip6tset *t = ds->data;
	if (!q->ip6valid) return 0;
	if (ans_acl_always(ans)) return 1;
	u128 a = bytes128(q->ip6);
	uint64_t net = (uint64_t)(a >> 64);
	size_t i = lb64(t->nets, t->n, net);
	if (i >= t->n || t->nets[i] != net) return 0;
	if (has128(t->excl, t->nx, a)) return 0;
	char ip[64];
	ip6_text(q->ip6, ip);
	ans_add_value(ans, ds, &ds->vals[t->vid], q->qflags, ip);
	return 1;
}

static int t6_below(const struct ds *ds, const struct ds_query *q)
{
	const struct ip6tset *t = ds->data;
	if (!q->ip6partial) return 0;
	u128 a = bytes128(q->ip6);
	uint64_t hi64 = (uint64_t)(a >> 64);
	if (q->ip6nib >= 16) {
		size_t i = lb64(t->nets, t->n, hi64);
		return i < t->n && t->nets[i] == hi64;
	}
	uint64_t span = ~(uint64_t)0 >> (4 * q->ip6nib);
	size_t i = lb64(t->nets, t->n, hi64);
	return i < t->n && t->nets[i] <= (hi64 | span);
}

static const uint8_t excluded_name[] = "\x08" "excluded";

static void t6_dump(const struct ds *ds, struct dnsbl_dump *sink)
{
	const struct ip6tset *t = ds->data;
	const struct ds_val *v = &ds->vals[t->vid];
	uint8_t owner[80], b[16];
	char ip[64], txt[256];
	for (size_t i = 0; i < t->n; i++) {
		memset(b, 0, 16);
		for (int k = 0; k < 8; k++) b[k] = (uint8_t)(t->nets[i] >> (56 - 8 * k));
		ip6_owner(b, 16, 1, owner);
		sink->rr(sink, owner, DNS_T_A, ds->ttl, v->a, 4);
		ip6_text(b, ip);
		size_t n = ds_txt_expand(ds, v->txt, ip, txt + 1);
		if (n) {
			txt[0] = (char)n;
			sink->rr(sink, owner, DNS_T_TXT, ds->ttl, (const uint8_t *)txt, n + 1);
		}
	}
	for (size_t i = 0; i < t->nx; i++) {
		for (int k = 0; k < 16; k++) b[k] = (uint8_t)(t->excl[i] >> (120 - 8 * k));
		uint64_t net = (uint64_t)(t->excl[i] >> 64);
		size_t j = lb64(t->nets, t->n, net);
		if (j >= t->n || t->nets[j] != net) continue;
		ip6_owner(b, 32, 0, owner);
		sink->rr(sink, owner, DNS_T_CNAME, ds->ttl, excluded_name, sizeof excluded_name);
	}
}

static void t6_free(struct ds *ds)
{
	struct ip6tset *t = ds->data;
	if (!t) return;
	free(t->nets);
	free(t->excl);
	free(t);
	ds->data = NULL;
}

const struct ds_type ds_ip6tset = {
	.name = "ip6tset", .flags = DST_IP6, .start = t6_start, .line = t6_line, .finish = t6_finish,
	.query = t6_query, .below = t6_below, .dump = t6_dump, .free = t6_free,
};
