/*
 * query.c — what people ask of the listings: a lookup of one IP (every
 * level that covers it, with reasons, evidence and history), delisting
 * (operator and self-service, every request recorded) and the statistics
 * of UBL's page (new, removed and delist requests in 48 hours; listed now).
 *
 * Callers refresh the listings to `now` first (listing_refresh), so that
 * what these functions read is current.
 */
#include "listing/store.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <string.h>

#define LOOKUP_IMPACTS 20

/* Whether an IPv4 address is inside any CIDR of a space-separated list. */
static int ranges_contain(const char *ranges, const struct listing_ip *ip)
{
	if (!ranges || ip->family != 4) return 0;
	const char *p = ranges;
	while (*p) {
		while (*p == ' ') p++;
		const char *e = p;
		while (*e && *e != ' ') e++;
		char buf[64];
		size_t n = (size_t)(e - p);
		if (n && n < sizeof buf) {
			memcpy(buf, p, n);
			buf[n] = 0;
			struct base_cidr c;
			if (base_parse_cidr(buf, &c, NULL) == 0 &&
			    base_cidr_contains(&c, AF_INET, ip->a))
				return 1;
		}
		p = e;
	}
	return 0;
}

struct collect {
	struct listing_lookup *l;
	const struct listing_ip *ip;
	int filter_ranges;
	size_t cap_h;
};

static int collect_cb(void *ctx, const struct listing_record *rec)
{
	struct collect *c = ctx;
	if (c->filter_ranges && !ranges_contain(rec->ranges, c->ip)) return 0;
	struct listing_lookup *l = c->l;
	if (l->n_history == c->cap_h) {
		c->cap_h = c->cap_h ? c->cap_h * 2 : 16;
		l->history = base_xrealloc(l->history, c->cap_h * sizeof *l->history);
	}
	struct listing_record *r = &l->history[l->n_history++];
	*r = *rec;
	if (rec->ranges)
		r->ranges = base_arena_strndup(&l->arena, rec->ranges, strlen(rec->ranges));
	return 0;
}

static char *dup_opt(struct base_arena *a, const char *s, size_t n)
{
	return s ? base_arena_strndup(a, s, n) : NULL;
}

struct impacts_ctx {
	struct listing_lookup *l;
};

static int impact_cb(void *ctx, const struct listing_impact *imp)
{
	struct listing_lookup *l = ((struct impacts_ctx *)ctx)->l;
	l->impacts = base_xrealloc(l->impacts, (l->n_impacts + 1) * sizeof *l->impacts);
	struct listing_impact *d = &l->impacts[l->n_impacts++];
	*d = *imp;
	struct base_arena *a = &l->arena;
	d->trap = dup_opt(a, imp->trap, imp->trap ? strlen(imp->trap) : 0);
	d->source = dup_opt(a, imp->source, imp->source ? strlen(imp->source) : 0);
	d->helo = dup_opt(a, imp->helo, imp->helo ? strlen(imp->helo) : 0);
	d->mail_from = dup_opt(a, imp->mail_from, imp->mail_from ? strlen(imp->mail_from) : 0);
	d->rcpt = dup_opt(a, imp->rcpt, imp->rcpt ? strlen(imp->rcpt) : 0);
	d->message_id = dup_opt(a, imp->message_id, imp->message_id ? strlen(imp->message_id) : 0);
	d->subject = dup_opt(a, imp->subject, imp->subject ? strlen(imp->subject) : 0);
	d->headers = imp->headers ? dup_opt(a, imp->headers, imp->headers_len) : NULL;
	return 0;
}

static int cmp_rec_newest(const void *a, const void *b)
{
	const struct listing_record *x = a, *y = b;
	return x->id > y->id ? -1 : x->id < y->id;
}

int listing_lookup(struct listing_store *s, const struct listing_policy *p,
                   const struct listing_ip *ip, int64_t now, struct listing_lookup *out,
                   struct base_err *err)
{
	memset(out, 0, sizeof *out);
	base_arena_init(&out->arena);
	out->ip = *ip;
	out->never = listing_never(p, ip);
	out->test_entry = listing_is_test_listed(ip);
	char key[64];
	listing_ip_format(ip, key, sizeof key);
	struct collect c = {.l = out, .ip = ip};
	if (s->ops->listings_scan(s, -1, 1, key, collect_cb, &c, err) < 0) return -1;
	if (ip->family == 4) {
		c.filter_ranges = 1;
		if (s->ops->listings_scan(s, -1, 2, NULL, collect_cb, &c, err) < 0) return -1;
		if (s->ops->listings_scan(s, -1, 3, NULL, collect_cb, &c, err) < 0) return -1;
	}
	base_sort(out->history, out->n_history, sizeof *out->history, cmp_rec_newest);
	out->active = base_arena_alloc(&out->arena, (out->n_history + 1) * sizeof *out->active);
	for (size_t i = 0; i < out->n_history; i++)
		if (out->history[i].state == LISTING_ACTIVE && out->history[i].expires > now)
			out->active[out->n_active++] = out->history[i];
	struct impacts_ctx ic = {out};
	if (s->ops->impacts_of_ip(s, ip, now, LOOKUP_IMPACTS, impact_cb, &ic, err) < 0) return -1;
	return listing_self_delist_check(s, p, ip, now, &out->self_delist_possible,
	                                 out->self_delist_why, sizeof out->self_delist_why, err);
}

void listing_lookup_free(struct listing_lookup *l)
{
	free(l->history);
	free(l->impacts);
	base_arena_free(&l->arena);
	memset(l, 0, sizeof *l);
}

/* ---- delisting ----------------------------------------------------------- */

struct find_active {
	const struct listing_ip *ip;
	int found;
	struct listing_record rec;
	char *ranges; /* owned copy of rec.ranges */
};

static int find_cb(void *ctx, const struct listing_record *rec)
{
	struct find_active *f = ctx;
	if (rec->level > 1 && !ranges_contain(rec->ranges, f->ip)) return 0;
	f->rec = *rec;
	f->ranges = rec->ranges ? base_xstrdup(rec->ranges) : NULL;
	f->rec.ranges = f->ranges;
	f->found = 1;
	return 1;
}

static int find_active(struct listing_store *s, const struct listing_ip *ip, int level,
                       struct find_active *f, struct base_err *err)
{
	char key[64];
	listing_ip_format(ip, key, sizeof key);
	memset(f, 0, sizeof *f);
	f->ip = ip;
	return s->ops->listings_scan(s, LISTING_ACTIVE, level, level == 1 ? key : NULL, find_cb, f,
	                             err);
}

struct last_ctx {
	int found;
	int64_t time;
};

static int last_cb(void *ctx, const struct listing_impact *imp)
{
	struct last_ctx *c = ctx;
	c->found = 1;
	c->time = imp->time;
	return 1;
}

static void fmt_time(int64_t t, char *out, size_t n)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int listing_self_delist_check(struct listing_store *s, const struct listing_policy *p,
                              const struct listing_ip *ip, int64_t now, int *possible, char *why,
                              size_t whylen, struct base_err *err)
{
	*possible = 0;
	struct find_active f;
	if (find_active(s, ip, 1, &f, err) < 0) return -1;
	free(f.ranges);
	if (!f.found) {
		snprintf(why, whylen, "not listed at Level 1");
		return 0;
	}
	struct last_ctx lc = {0};
	if (s->ops->impacts_of_ip(s, ip, now, 1, last_cb, &lc, err) < 0) return -1;
	if (lc.found && now - lc.time < (int64_t)p->delist_quiet) {
		char t[32], u[32];
		fmt_time(lc.time, t, sizeof t);
		fmt_time(lc.time + p->delist_quiet, u, sizeof u);
		snprintf(why, whylen, "last impact at %s; self-service delisting opens at %s", t,
		         u);
		return 0;
	}
	char key[64];
	listing_ip_format(ip, key, sizeof key);
	uint64_t n = 0;
	if (s->ops->delist_count(s, key, "self-service", now - (int64_t)p->delist_period, &n, err) <
	    0)
		return -1;
	if (n >= p->delist_max) {
		snprintf(why, whylen, "%llu self-service requests within %u days (limit %u)",
		         (unsigned long long)n, (unsigned)(p->delist_period / 86400),
		         (unsigned)p->delist_max);
		return 0;
	}
	*possible = 1;
	snprintf(why, whylen, "no impact for at least %u hours",
	         (unsigned)(p->delist_quiet / 3600));
	return 0;
}

int listing_delist(struct listing_store *s, const struct listing_policy *p,
                   const struct listing_ip *ip, int level, int self_service, int64_t now,
                   const char *note, int *outcome, char *why, size_t whylen, struct base_err *err)
{
	char key[64];
	listing_ip_format(ip, key, sizeof key);
	if (self_service) level = 1;
	if (level < 1 || level > 3) return base_errf(err, "level must be 1, 2 or 3");
	if (s->ops->begin(s, err) < 0) return -1;
	struct find_active f = {0};
	const char *kind = self_service ? "self-service" : "operator";
	const char *res;
	if (find_active(s, ip, level, &f, err) < 0) goto fail;
	if (!f.found) {
		*outcome = LISTING_NOT_LISTED;
		snprintf(why, whylen, "not listed at Level %d", level);
		res = "not-listed";
	} else {
		int ok = 1;
		if (self_service) {
			if (listing_self_delist_check(s, p, ip, now, &ok, why, whylen, err) < 0)
				goto fail;
		} else {
			snprintf(why, whylen, "removed by the operator");
		}
		if (ok) {
			f.rec.state = LISTING_DELISTED;
			f.rec.removed_at = now;
			if (s->ops->floor_set(s, level, f.rec.key, now, err) < 0) goto fail;
			if (s->ops->listing_update(s, &f.rec, err) < 0) goto fail;
			if (s->ops->meta_set(s, "dirty_full", "1", err) < 0) goto fail;
			*outcome = LISTING_DELISTED_NOW;
			res = "delisted";
			if (self_service)
				snprintf(why, whylen, "delisted; listed again if impacts continue");
		} else {
			*outcome = LISTING_DELIST_REFUSED;
			res = "refused";
		}
	}
	char full[400];
	snprintf(full, sizeof full, "%s%s%s", why, note ? "; " : "", note ? note : "");
	if (s->ops->delist_record(s, now, key, kind, res, full, err) < 0) goto fail;
	if (s->ops->commit(s, err) < 0) goto fail;
	free(f.ranges);
	return 0;
fail:
	free(f.ranges);
	s->ops->rollback(s);
	return -1;
}

/* ---- statistics ---------------------------------------------------------- */

int listing_stats(struct listing_store *s, int64_t now, struct listing_stats *st,
                  struct base_err *err)
{
	memset(st, 0, sizeof *st);
	for (int level = 0; level <= 3; level++)
		if (s->ops->listings_count(s, level, now - 48 * 3600, now, &st->new48[level],
		                           &st->removed48[level], &st->listed[level], err) < 0)
			return -1;
	return s->ops->delist_count(s, NULL, NULL, now - 48 * 3600, &st->delist_requests48, err);
}
