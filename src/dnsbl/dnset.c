/*
 * dnset.c — sets of domain names (RHSBL): exact names, "*.name" for the
 * names below, and ".name" for both; "!" excludes.
 *
 * Names are kept as keys with their labels reversed ("com" "example" ...),
 * each label with its length byte, in two sorted arrays (exact and
 * wildcard). Reversal makes every suffix of a query name a prefix of its
 * key, so the wildcard walk and the "anything below this name" check are
 * bisections on the same arrays.
 */
#include "dnsbl/int.h"

#include <stdlib.h>
#include <string.h>

struct dent {
	const uint8_t *key;
	uint32_t len;
	uint32_t vid;
};

struct dset {
	struct dent *e[2]; /* 0: exact, 1: wildcard */
	size_t n[2], cap[2];
};

size_t ds_rev_key(const uint8_t *wire, uint8_t *out)
{
	const uint8_t *lab[128];
	unsigned n = 0;
	for (const uint8_t *p = wire; *p && n < 128; p += 1 + *p) lab[n++] = p;
	size_t o = 0;
	while (n--) {
		memcpy(out + o, lab[n], 1u + lab[n][0]);
		o += 1u + lab[n][0];
	}
	return o;
}

int ds_key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
	size_t m = al < bl ? al : bl;
	int c = memcmp(a, b, m);
	if (c) return c;
	return al < bl ? -1 : al > bl;
}

/* Text of a key (labels back in normal order), relative, no trailing dot. */
static void key_text(const uint8_t *key, size_t len, char *out, size_t outsz)
{
	uint8_t w[DNS_NAME_MAX + 1];
	const uint8_t *lab[128];
	unsigned n = 0;
	for (size_t o = 0; o < len && n < 128; o += 1u + key[o]) lab[n++] = key + o;
	size_t o = 0;
	while (n--) {
		memcpy(w + o, lab[n], 1u + lab[n][0]);
		o += 1u + lab[n][0];
	}
	w[o] = 0;
	if (dns_name_to_text(w, out, outsz) < 0) out[0] = 0;
	if (!strcmp(out, ".")) out[0] = 0;
}

static int dset_start(struct ds *ds)
{
	if (!ds->data) ds->data = base_xcalloc(1, sizeof(struct dset));
	ds->defvid = DS_VID_DEF;
	return 0;
}

static void add(struct ds *ds, int wild, const uint8_t *key, size_t len, uint32_t vid)
{
	struct dset *d = ds->data;
	if (d->n[wild] == d->cap[wild]) {
		d->cap[wild] = d->cap[wild] ? d->cap[wild] * 2 : 256;
		d->e[wild] = base_xrealloc(d->e[wild], d->cap[wild] * sizeof *d->e[wild]);
	}
	uint8_t *k = base_arena_alloc(&ds->arena, len ? len : 1);
	memcpy(k, key, len);
	d->e[wild][d->n[wild]].key = k;
	d->e[wild][d->n[wild]].len = (uint32_t)len;
	d->e[wild][d->n[wild]].vid = vid;
	d->n[wild]++;
}

static int dset_line(struct ds *ds, char *line, struct base_err *err)
{
	(void)err;
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
	size_t n = strcspn(line, " \t");
	char *rest = line + n;
	char save = *rest;
	*rest = '\0';
	int plain = 1, wild = 0;
	char *name = line;
	if (name[0] == '*' && name[1] == '.') {
		name += 2;
		plain = 0;
		wild = 1;
	} else if (name[0] == '.') {
		name += 1;
		wild = 1;
	}
	struct dns_name dn;
	struct base_err e;
	int bad = !*name || dns_name_from_text(&dn, name, 1, &e) < 0 || dn.nlabels == 0;
	*rest = save;
	if (bad) {
		ds_warn(ds, "invalid domain name");
		return 0;
	}
	uint32_t vid = DS_VID_EXCL;
	if (!excl) {
		const char *v = base_skip_ws(rest);
		if (!*v || *v == '#' || *v == ';') vid = ds->defvid;
		else if (!(vid = ds_parse_value(ds, v, ds->defvid))) return 0;
	}
	uint8_t key[DNS_NAME_MAX + 1];
	size_t kl = ds_rev_key(dn.wire, key);
	if (plain) add(ds, 0, key, kl, vid);
	if (wild) add(ds, 1, key, kl, vid);
	return 1;
}

static int dent_cmp(const void *x, const void *y)
{
	const struct dent *a = x, *b = y;
	int c = ds_key_cmp(a->key, a->len, b->key, b->len);
	if (c) return c;
	return a->vid < b->vid ? -1 : a->vid > b->vid;
}

static int dset_finish(struct ds *ds, struct base_err *err)
{
	struct dset *d = ds->data;
	if (!d) d = ds->data = base_xcalloc(1, sizeof *d);
	for (int w = 0; w < 2; w++) {
		base_sort(d->e[w], d->n[w], sizeof *d->e[w], dent_cmp);
		size_t o = 0;
		for (size_t i = 0; i < d->n[w]; i++) {
			struct dent *p = o ? &d->e[w][o - 1] : NULL;
			if (p && !ds_key_cmp(p->key, p->len, d->e[w][i].key, d->e[w][i].len) &&
			    (p->vid == DS_VID_EXCL || p->vid == d->e[w][i].vid))
				continue;
			d->e[w][o++] = d->e[w][i];
		}
		d->n[w] = o;
	}
	base_info("%s: e/w=%zu/%zu", ds->label, d->n[0], d->n[1]);
	(void)err;
	return 0;
}

/* First index with key >= k. */
static size_t lower(const struct dent *e, size_t n, const uint8_t *k, size_t kl)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (ds_key_cmp(e[mid].key, e[mid].len, k, kl) < 0) lo = mid + 1;
		else hi = mid;
	}
	return lo;
}

static int answer_at(const struct ds *ds, const struct dent *e, size_t n, size_t i, const struct ds_query *q,
		     struct answer *ans)
{
	if (e[i].vid == DS_VID_EXCL) return 0;
	char text[DNS_NAME_MAX * 4 + 1];
	key_text(e[i].key, e[i].len, text, sizeof text);
	size_t j = i;
	do {
		ans_add_value(ans, ds, &ds->vals[e[j].vid], q->qflags, text);
	} while (++j < n && !ds_key_cmp(e[j].key, e[j].len, e[i].key, e[i].len));
	return 1;
}

static int dset_query(const struct ds *ds, const struct ds_query *q, struct answer *ans)
{
	const struct dset *d = ds->data;
	if (!q->nlabels) return 0;
	if (ans_acl_always(ans)) return 1;
	uint8_t key[DNS_NAME_MAX + 1];
	size_t kl = ds_rev_key(q->dn, key);
	size_t i = lower(d->e[0], d->n[0], key, kl);
	if (i < d->n[0] && !ds_key_cmp(d->e[0][i].key, d->e[0][i].len, key, kl))
		return answer_at(ds, d->e[0], d->n[0], i, q, ans);
	/* wildcards: the longest proper suffix present decides */
	size_t cut[128];
	unsigned nc = 0;
	for (size_t o = 0; o < kl; o += 1u + key[o]) cut[nc++] = o;
	for (unsigned k = nc; k-- > 1;) {
		size_t pl = cut[k];
		i = lower(d->e[1], d->n[1], key, pl);
		if (i < d->n[1] && !ds_key_cmp(d->e[1][i].key, d->e[1][i].len, key, pl))
			return answer_at(ds, d->e[1], d->n[1], i, q, ans);
	}
	return 0;
}

static int prefix_present(const struct dent *e, size_t n, const uint8_t *k, size_t kl, int strict)
{
	size_t i = lower(e, n, k, kl);
	for (unsigned steps = 0; i < n && steps < 4096; i++, steps++) {
		if (e[i].len < kl || memcmp(e[i].key, k, kl)) return 0;
		if (strict && e[i].len == kl) continue;
		if (e[i].vid != DS_VID_EXCL) return 1;
	}
	return i < n;
}

static int dset_below(const struct ds *ds, const struct ds_query *q)
{
	const struct dset *d = ds->data;
	uint8_t key[DNS_NAME_MAX + 1];
	size_t kl = ds_rev_key(q->dn, key);
	return prefix_present(d->e[0], d->n[0], key, kl, 1) || prefix_present(d->e[1], d->n[1], key, kl, 0);
}

static const uint8_t excluded_name[] = "\x08" "excluded";

static void dset_dump(const struct ds *ds, struct dnsbl_dump *sink)
{
	const struct dset *d = ds->data;
	for (int w = 0; w < 2; w++) {
		for (size_t i = 0; i < d->n[w]; i++) {
			const struct dent *e = &d->e[w][i];
			uint8_t owner[DNS_NAME_MAX + 3], rev[DNS_NAME_MAX + 1];
			size_t o = 0;
			if (w) {
				owner[o++] = 1;
				owner[o++] = '*';
			}
			memcpy(rev, e->key, e->len);
			rev[e->len] = 0;
			o += ds_rev_key(rev, owner + o);
			owner[o] = 0;
			if (o > DNS_NAME_MAX) continue;
			if (e->vid == DS_VID_EXCL) { /* as rbldnsd -d writes an exclusion */
				sink->rr(sink, owner, DNS_T_CNAME, ds->ttl, excluded_name, sizeof excluded_name);
				continue;
			}
			char text[DNS_NAME_MAX * 4 + 1];
			key_text(e->key, e->len, text, sizeof text);
			const struct ds_val *v = &ds->vals[e->vid];
			sink->rr(sink, owner, DNS_T_A, ds->ttl, v->a, 4);
			char txt[256];
			size_t n = ds_txt_expand(ds, v->txt, text, txt + 1);
			if (n) {
				txt[0] = (char)n;
				sink->rr(sink, owner, DNS_T_TXT, ds->ttl, (const uint8_t *)txt, n + 1);
			}
		}
	}
}

static void dset_free(struct ds *ds)
{
	struct dset *d = ds->data;
	if (!d) return;
	free(d->e[0]);
	free(d->e[1]);
	free(d);
	ds->data = NULL;
}

const struct ds_type ds_dnset = {
	.name = "dnset", .flags = DST_DN, .start = dset_start, .line = dset_line, .finish = dset_finish,
	.query = dset_query, .below = dset_below, .dump = dset_dump, .free = dset_free,
};
