/*
 * combined.c — one file holding several datasets, each attached to
 * subzones of the zone ("$DATASET type[:name] subzone... | @").
 *
 * $SOA, $NS, $TIMESTAMP and $MAXRANGE4 belong to the combined dataset (the
 * zone); $TTL, $0..$9 and $= belong to the nested dataset being read, which
 * starts with copies of the combined dataset's values. A query goes to the
 * datasets of the longest subzone that contains it.
 */
#include "dnsbl/int.h"

#include <stdlib.h>
#include <string.h>

struct combined {
	struct combined_child *cur;
};

static int c_start(struct ds *ds)
{
	if (!ds->data) ds->data = base_xcalloc(1, sizeof(struct combined));
	return 0;
}

static int is_special(const char *line, const char **sp)
{
	if (line[0] == '$') {
		*sp = line + 1;
		return 1;
	}
	if ((line[0] == '#' || line[0] == ';' || line[0] == ':') && line[1] == '$') {
		*sp = line + 2;
		return 1;
	}
	return 0;
}

static int kw(const char *s, const char *k)
{
	size_t n = strlen(k);
	return !strncasecmp(s, k, n) && (s[n] == ' ' || s[n] == '\t');
}

static int new_dataset(struct ds *ds, const char *s, struct base_err *err)
{
	struct combined *c = ds->data;
	char type[64], *name;
	s = base_skip_ws(s);
	size_t n = strcspn(s, " \t");
	if (n >= sizeof type) n = sizeof type - 1;
	memcpy(type, s, n);
	type[n] = 0;
	s += n;
	if ((name = strchr(type, ':'))) *name++ = 0;
	const struct ds_type *t = ds_type_find(type);
	if (!t || t == &ds_combined || t == &ds_acl)
		return base_errf(err, "%s:%lu: invalid dataset type '%s' in $DATASET", ds->cur_file, ds->cur_line,
				 type);
	struct ds *child = ds_new(t, ds->opts);
	child->ttl = ds->ttl;
	memcpy(child->subst, ds->subst, sizeof child->subst);
	child->basetpl = ds->basetpl;
	child->maxrange4 = ds->maxrange4;
	child->parent = ds;
	struct base_buf lb;
	base_buf_init(&lb);
	base_buf_printf(&lb, "%s/%s:%s", ds->label, t->name, name && *name ? name : "-");
	child->label = lb.data;
	child->spec = base_xstrdup(child->label);
	if (t->start) t->start(child);
	ds->children = base_xrealloc(ds->children, (ds->nchildren + 1) * sizeof *ds->children);
	struct combined_child *cc = &ds->children[ds->nchildren++];
	memset(cc, 0, sizeof *cc);
	cc->ds = child;
	c->cur = cc;
	/* subzones, up to a comment */
	for (;;) {
		s = base_skip_ws(s);
		if (!*s || *s == '#' || *s == ';') break;
		n = strcspn(s, " \t");
		char sub[300];
		if (n >= sizeof sub) n = sizeof sub - 1;
		memcpy(sub, s, n);
		sub[n] = 0;
		s += n;
		struct dns_name dn;
		struct base_err e;
		if (!strcmp(sub, "@")) {
			dn.wire[0] = 0;
			dns_name_index(&dn);
		} else if (dns_name_from_text(&dn, sub, 1, &e) < 0) {
			ds_warn(ds, "invalid subzone '%s'", sub);
			continue;
		}
		cc->sub = base_xrealloc(cc->sub, (cc->nsub + 1) * sizeof *cc->sub);
		cc->sub[cc->nsub++] = dn;
	}
	if (!cc->nsub) ds_warn(ds, "no subzone(s) specified for dataset, data will be ignored");
	return 1;
}

static int c_line(struct ds *ds, char *line, struct base_err *err)
{
	struct combined *c = ds->data;
	const char *sp;
	if (is_special(line, &sp)) {
		if (kw(sp, "DATASET")) return new_dataset(ds, sp + 7, err) < 0 ? -1 : 1;
		if (c->cur && (kw(sp, "TTL") || ((*sp >= '0' && *sp <= '9') || *sp == '=')))
			return ds_special(c->cur->ds, sp, err) < 0 ? -1 : 1;
		int r = ds_special(ds, sp, err);
		if (r > 0 && kw(sp, "MAXRANGE4") && c->cur) c->cur->ds->maxrange4 = ds->maxrange4;
		if (r == 0) ds_warn(ds, "invalid or unrecognized special entry");
		return r;
	}
	if (line[0] == '#' || line[0] == ';') return 0;
	if (!c->cur)
		return base_errf(err, "%s:%lu: specify $DATASET line before data", ds->cur_file, ds->cur_line);
	struct ds *child = c->cur->ds;
	child->cur_file = ds->cur_file;
	child->cur_line = ds->cur_line;
	int r = child->type->line(child, line, err);
	ds->warnings += child->warnings;
	child->warnings = 0;
	return r;
}

static int c_finish(struct ds *ds, struct base_err *err)
{
	if (!ds->data) c_start(ds);
	for (unsigned i = 0; i < ds->nchildren; i++) {
		struct ds *child = ds->children[i].ds;
		if (child->type->finish(child, err) < 0) return -1;
		ds_intern_done(child);
		child->stamp = ds->stamp;
	}
	base_info("%s: datasets=%u", ds->label, ds->nchildren);
	return 0;
}

/* The longest subzone containing q: its label count, or -1. */
static int best_subzone(const struct ds *ds, const struct ds_query *q)
{
	int best = -1;
	struct dns_name qn;
	memcpy(qn.wire, q->dn, q->dnlen);
	dns_name_index(&qn);
	for (unsigned i = 0; i < ds->nchildren; i++)
		for (unsigned k = 0; k < ds->children[i].nsub; k++) {
			const struct dns_name *sz = &ds->children[i].sub[k];
			if ((int)sz->nlabels > best && dns_name_is_subdomain(&qn, sz)) best = sz->nlabels;
		}
	return best;
}

static int child_has(const struct combined_child *cc, const struct ds_query *q, unsigned labels)
{
	struct dns_name qn;
	memcpy(qn.wire, q->dn, q->dnlen);
	dns_name_index(&qn);
	for (unsigned k = 0; k < cc->nsub; k++)
		if (cc->sub[k].nlabels == labels && dns_name_is_subdomain(&qn, &cc->sub[k])) return 1;
	return 0;
}

static void sub_query(const struct ds_query *q, unsigned labels, struct ds_query *sq, uint8_t *buf, unsigned flags)
{
	*sq = *q;
	unsigned rel = q->nlabels - labels;
	size_t off = 0;
	for (unsigned i = 0; i < rel; i++) off += 1u + q->dn[off];
	memcpy(buf, q->dn, off);
	buf[off] = 0;
	sq->dn = buf;
	sq->dnlen = (unsigned)off + 1;
	sq->nlabels = rel;
	ds_query_classify(sq, flags);
}

static int c_query(const struct ds *ds, const struct ds_query *q, struct answer *ans)
{
	int best = best_subzone(ds, q);
	if (best < 0) return 0;
	/* the subzone apex itself always exists; its datasets may still hold records there */
	int found = (unsigned)best == q->nlabels;
	for (unsigned i = 0; i < ds->nchildren; i++) {
		const struct combined_child *cc = &ds->children[i];
		if (!child_has(cc, q, (unsigned)best)) continue;
		struct ds_query sq;
		uint8_t buf[DNS_NAME_MAX + 1];
		sub_query(q, (unsigned)best, &sq, buf, cc->ds->type->flags);
		if (cc->ds->type->query(cc->ds, &sq, ans)) found = 1;
	}
	return found;
}

static int c_below(const struct ds *ds, const struct ds_query *q)
{
	struct dns_name qn;
	memcpy(qn.wire, q->dn, q->dnlen);
	dns_name_index(&qn);
	/* a parent of a subzone */
	for (unsigned i = 0; i < ds->nchildren; i++)
		for (unsigned k = 0; k < ds->children[i].nsub; k++)
			if (ds->children[i].sub[k].nlabels > qn.nlabels && dns_name_is_subdomain(&ds->children[i].sub[k], &qn))
				return 1;
	int best = best_subzone(ds, q);
	if (best < 0) return 0;
	for (unsigned i = 0; i < ds->nchildren; i++) {
		const struct combined_child *cc = &ds->children[i];
		if (!child_has(cc, q, (unsigned)best) || !cc->ds->type->below) continue;
		struct ds_query sq;
		uint8_t buf[DNS_NAME_MAX + 1];
		sub_query(q, (unsigned)best, &sq, buf, cc->ds->type->flags);
		if (cc->ds->type->below(cc->ds, &sq)) return 1;
	}
	return 0;
}

/* Appends the subzone to each owner before passing records on. */
struct subsink {
	struct dnsbl_dump d;
	struct dnsbl_dump *up;
	const struct dns_name *sub;
};

static void sub_rr(struct dnsbl_dump *d, const uint8_t *owner, uint16_t type, uint32_t ttl,
		   const uint8_t *rdata, size_t rdlen)
{
	struct subsink *s = (struct subsink *)d;
	uint8_t w[DNS_NAME_MAX + 1];
	size_t o = 0;
	while (owner[o]) o += 1u + owner[o];
	if (o + s->sub->len > DNS_NAME_MAX + 1) return;
	memcpy(w, owner, o);
	memcpy(w + o, s->sub->wire, s->sub->len);
	s->up->rr(s->up, w, type, ttl, rdata, rdlen);
}

static void c_dump(const struct ds *ds, struct dnsbl_dump *sink)
{
	for (unsigned i = 0; i < ds->nchildren; i++) {
		const struct combined_child *cc = &ds->children[i];
		for (unsigned k = 0; k < cc->nsub; k++) {
			struct subsink s = {{sub_rr, NULL}, sink, &cc->sub[k]};
			if (cc->ds->type->dump) cc->ds->type->dump(cc->ds, &s.d);
		}
	}
}

static void c_free(struct ds *ds)
{
	for (unsigned i = 0; i < ds->nchildren; i++) free(ds->children[i].sub);
	free(ds->data);
	ds->data = NULL;
}

const struct ds_type ds_combined = {
	.name = "combined", .flags = DST_COMBINED, .start = c_start, .line = c_line, .finish = c_finish,
	.query = c_query, .below = c_below, .dump = c_dump, .free = c_free,
};
