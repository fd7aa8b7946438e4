/*
 * shapestate.c — the shaping state that outlives a restart. A relay that
 * was told "421 4.7.28 slow down" and is restarted (or killed) a minute
 * later must not open its full connection count at once: the back-off
 * suspensions (a 4xx greeting, a 421) and the [throttle] rules in force,
 * site-wide or on one source address, are kept in SPOOL/shaping (format
 * in shapestate.h) and put back at start until their original end.
 *
 * Writing: such state changes rarely (not per message). A change marks the
 * state dirty; a new hold or limit (urgent) is written at once, and an end
 * that only moved later waits up to RELAY_SHAPE_LAZY seconds, so that a
 * receiver answering every message with the same 4xx costs one write a
 * minute. The text is built on the loop thread from the destinations and
 * written on the group commit's thread (temp file, fsync, rename,
 * directory fsync: base_write_file_atomic); one write at a time, and
 * changes made meanwhile go into the next. A clean stop writes what is
 * still pending.
 *
 * Reading (at start, before any delivery): every line is checked; a
 * damaged one is skipped with a warning naming file:line (the relay starts
 * anyway: this file never stops it), and an entry that has ended, or
 * whose rule, pool or source address is no longer configured, is dropped
 * with an info line. A kept entry is put back as its rule now says
 * (relay_throttle_put), on the destination it names, which is created then
 * (its addresses come with its first mail).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay/account.h"
#include "relay/int.h"
#include "relay/shapestate.h"

/* ---- the line format ------------------------------------------------------ */

static const char *const keys[] = {"site", "port", "pool", "source", "until", "rule"};
#define NKEYS (sizeof keys / sizeof keys[0])

/* A decimal number of at most max, the whole of v (n bytes). */
static int number(const char *v, size_t n, uint64_t max, uint64_t *out)
{
	char tmp[24];
	if (!n || n >= sizeof tmp || v[0] < '0' || v[0] > '9') return -1;
	memcpy(tmp, v, n);
	tmp[n] = 0;
	int k = base_parse_uint(tmp, max, out);
	return k == (int)n ? 0 : -1;
}

/* A pool or rule name, or "-" for none. */
static int name(const char *v, size_t n, char *out, size_t cap)
{
	if (n == 1 && v[0] == '-') {
		out[0] = 0;
		return 0;
	}
	if (n >= cap) return -1;
	memcpy(out, v, n);
	out[n] = 0;
	return relay_name_valid(out) ? 0 : -1;
}

/* A source address (kept in inet_ntop's form, as pools keep theirs), or "-". */
static int source(const char *v, size_t n, char *out, size_t cap)
{
	unsigned char a[16];
	char ip[64];
	if (n == 1 && v[0] == '-') {
		out[0] = 0;
		return 0;
	}
	if (n >= sizeof ip) return -1;
	memcpy(ip, v, n);
	ip[n] = 0;
	int fam = inet_pton(AF_INET, ip, a) == 1    ? AF_INET
	          : inet_pton(AF_INET6, ip, a) == 1 ? AF_INET6
	                                            : 0;
	if (!fam || !inet_ntop(fam, a, out, (socklen_t)cap)) return -1;
	return 0;
}

static int value(struct relay_shape_entry *e, size_t k, const char *v, size_t n)
{
	uint64_t x;
	switch (k) {
	case 0: /* site */
		if (!n || n >= sizeof e->site || (n == 1 && v[0] == '-')) return -1;
		memcpy(e->site, v, n);
		e->site[n] = 0;
		return 0;
	case 1: /* port */
		if (number(v, n, 65535, &x) < 0 || !x) return -1;
		e->port = (uint16_t)x;
		return 0;
	case 2:
		return name(v, n, e->pool, sizeof e->pool);
	case 3:
		return source(v, n, e->source, sizeof e->source);
	case 4: /* until */
		if (number(v, n, (uint64_t)INT64_MAX / 2, &x) < 0 || !x) return -1;
		e->until = (int64_t)x;
		return 0;
	default:
		return name(v, n, e->rule, sizeof e->rule);
	}
}

static const char *const what[] = {"a site (a host name or host names)",
                                   "a port (1 to 65535)",
                                   "a pool name or '-'",
                                   "an IP address or '-'",
                                   "a UNIX time",
                                   "a rule name or '-'"};

int relay_shape_parse(const char *line, size_t len, struct relay_shape_entry *e,
                      struct base_err *err)
{
	memset(e, 0, sizeof *e);
	if (len == 0 || line[0] == '#') return 0;
	if (len > RELAY_SHAPE_LINE_MAX)
		return base_errf(err, "line longer than %u bytes", RELAY_SHAPE_LINE_MAX);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if (c != ' ' && (c < 0x21 || c > 0x7e))
			return base_errf(err, "byte %zu is not printable ASCII (0x%02x)", i + 1, c);
	}
	size_t p = 0;
	while (p < len && line[p] != ' ') p++;
	if (p == 7 && !memcmp(line, "suspend", 7))
		e->kind = RELAY_SHAPE_SUSPEND;
	else if (p == 8 && !memcmp(line, "throttle", 8))
		e->kind = RELAY_SHAPE_THROTTLE;
	else
		return base_errf(err, "byte 1: '%.*s' is not suspend or throttle",
		                 (int)(p > 40 ? 40 : p), line);
	for (size_t k = 0; k < NKEYS; k++) {
		size_t kl = strlen(keys[k]);
		if (p >= len) return base_errf(err, "byte %zu: %s= is missing", p + 1, keys[k]);
		p++; /* the space */
		size_t w = p;
		while (p < len && line[p] != ' ') p++;
		if (p - w <= kl || memcmp(line + w, keys[k], kl) || line[w + kl] != '=')
			return base_errf(err, "byte %zu: expected %s=", w + 1, keys[k]);
		if (value(e, k, line + w + kl + 1, p - w - kl - 1) < 0)
			return base_errf(err, "byte %zu: %s= is not %s", w + kl + 2, keys[k],
			                 what[k]);
	}
	if (p < len) return base_errf(err, "byte %zu: more than the line holds", p + 1);
	if (e->kind == RELAY_SHAPE_THROTTLE && !e->rule[0])
		return base_errf(err, "byte %zu: a throttle line needs its rule", len);
	if (e->source[0] && !e->pool[0]) return base_errf(err, "a source address needs its pool");
	return 0;
}

void relay_shape_format(const struct relay_shape_entry *e, struct base_buf *b)
{
	base_buf_printf(b, "%s site=%s port=%u pool=%s source=%s until=%lld rule=%s\n",
	                e->kind == RELAY_SHAPE_THROTTLE ? "throttle" : "suspend", e->site, e->port,
	                e->pool[0] ? e->pool : "-", e->source[0] ? e->source : "-",
	                (long long)e->until, e->rule[0] ? e->rule : "-");
}

/* ---- in the relay ----------------------------------------------------------- */

struct shape_write {
	struct relay_work work;
	struct relay_shapestate *st;
	struct base_buf text;
	int rc;
	struct base_err err;
};

struct relay_shapestate {
	struct relay_ctx *x;
	char path[4096];
	struct event *ev;
	int dirty, urgent, loading;
	uint64_t last_ns;      /* when the last write began (monotonic) */
	struct shape_write *w; /* the write in flight; NULL: none */
};

static void iso(int64_t t, char *out, size_t n)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Appends one line for d (source "" : all of it), unless its site cannot
 * be written in the format (then it is not kept; the DNS named it). */
static void line_out(struct base_buf *b, enum relay_shape_kind kind, const struct dest *d,
                     const char *src, int64_t until, const char *rule)
{
	struct relay_shape_entry e;
	memset(&e, 0, sizeof e);
	size_t n = strlen(d->host);
	if (!n || n >= sizeof e.site) return;
	for (size_t i = 0; i < n; i++)
		if (d->host[i] < 0x21 || d->host[i] > 0x7e) return;
	e.kind = kind;
	memcpy(e.site, d->host, n + 1);
	e.port = d->port;
	if (d->pool) snprintf(e.pool, sizeof e.pool, "%s", d->pool->name);
	snprintf(e.source, sizeof e.source, "%s", src);
	e.until = until;
	snprintf(e.rule, sizeof e.rule, "%s", rule ? rule : "");
	size_t before = b->len;
	relay_shape_format(&e, b);
	if (b->len - before > RELAY_SHAPE_LINE_MAX + 1) b->len = before;
}

/* The lines of one destination or source: its hold, its rules in force. */
static void holds_out(struct relay_ctx *x, struct base_buf *b, const struct dest *d,
                      const char *src, int64_t susp, const char *susp_rule,
                      const struct relay_limits *cut, int64_t cut_until, const unsigned char *rules,
                      int64_t now)
{
	if (susp > now) line_out(b, RELAY_SHAPE_SUSPEND, d, src, susp, susp_rule);
	if (!cut->set || cut_until <= now) return;
	for (size_t i = 0; i < RELAY_THROTTLES_MAX; i++)
		if (rules[i / 8] & (1u << (i % 8)))
			line_out(b, RELAY_SHAPE_THROTTLE, d, src, cut_until,
			         relay_throttle_name(x->cfg, i));
}

static void state_text(struct relay_ctx *x, struct base_buf *b)
{
	int64_t now = base_now();
	base_buf_puts(b, "# mailrep relay: back-offs and throttle rules in force "
	                 "(see docs/RELAY.md)\n");
	for (const struct dest *d = x->dests; d; d = d->next) {
		holds_out(x, b, d, "", d->suspended_until, d->susp_rule, &d->cut, d->cut_until,
		          d->cut_rules, now);
		for (size_t i = 0; d->pool && i < d->nsrc; i++) {
			const struct dest_src *s = &d->src[i];
			holds_out(x, b, d, d->pool->src[i].ip, s->suspended_until, s->susp_rule,
			          &s->cut, s->cut_until, s->cut_rules, now);
		}
	}
}

static void arm(struct relay_shapestate *st)
{
	if (st->w || st->x->stopping || !st->dirty) return; /* a write's end arms again */
	uint64_t now = base_mono_ns(), due = st->last_ns + RELAY_SHAPE_LAZY * 1000000000ull;
	uint64_t wait = st->urgent || !st->last_ns || due <= now ? 0 : due - now;
	if (wait && evtimer_pending(st->ev, NULL)) return;
	struct timeval tv = {(time_t)(wait / 1000000000), (suseconds_t)(wait % 1000000000 / 1000)};
	evtimer_add(st->ev, &tv);
}

static void save_run(struct relay_work *j)
{
	struct shape_write *w = (struct shape_write *)j;
	w->rc = base_write_file_atomic(w->st->path, w->text.data, w->text.len, &w->err);
}

static void save_done(struct relay_work *j)
{
	struct shape_write *w = (struct shape_write *)j;
	struct relay_shapestate *st = w->st;
	st->w = NULL;
	if (!j->ran || w->rc < 0) {
		if (j->ran) base_error("shaping state not saved: %s", w->err.msg);
		st->dirty = 1; /* tried again later, or at the stop */
	}
	base_buf_free(&w->text);
	free(w);
	arm(st);
}

static void on_save(evutil_socket_t fd, short what_, void *arg)
{
	struct relay_shapestate *st = arg;
	struct relay_ctx *x = st->x;
	if (st->w || !st->dirty) return;
	struct shape_write *w = base_xcalloc(1, sizeof *w);
	w->work.run = save_run;
	w->work.done = save_done;
	w->st = st;
	base_buf_init(&w->text);
	state_text(x, &w->text);
	st->dirty = st->urgent = 0;
	st->last_ns = base_mono_ns();
	st->w = w;
	if (x->syncer) {
		relay_workers_submit(x->syncer, &w->work);
	} else {
		save_run(&w->work);
		w->work.ran = 1;
		save_done(&w->work);
	}
}

void relay_shape_changed(struct relay_ctx *x, int urgent)
{
	struct relay_shapestate *st = x->shst;
	if (!st || st->loading) return;
	st->dirty = 1;
	if (urgent) st->urgent = 1;
	arm(st);
}

/* Puts entry e (line lineno) back; 1 when kept, 0 when dropped. */
static int restore(struct relay_shapestate *st, const struct relay_shape_entry *e, unsigned lineno,
                   int64_t now)
{
	struct relay_ctx *x = st->x;
	const struct relay_config *c = x->cfg;
	char at[sizeof st->path + RELAY_SHAPE_LINE_MAX + 256], u[32];
	snprintf(at, sizeof at, "%s:%u: %s%s%s of %s:%u%s%s%s%s", st->path, lineno,
	         e->kind == RELAY_SHAPE_THROTTLE ? "throttle"
	         : e->rule[0]                    ? "suspend rule"
	                                         : "back-off",
	         e->rule[0] ? " " : "", e->rule, e->site, e->port, e->pool[0] ? " pool " : "",
	         e->pool, e->source[0] ? " source " : "", e->source);
	iso(e->until, u, sizeof u);
	if (e->until <= now) {
		base_info("%s ended at %s, dropped", at, u);
		return 0;
	}
	const struct relay_pool *pool = NULL;
	if (e->pool[0] && !(pool = relay_pool_find(c, e->pool))) {
		base_info("%s: no pool %s is configured now, dropped", at, e->pool);
		return 0;
	}
	const struct relay_throttle *t = NULL;
	if (e->rule[0] && !(t = relay_throttle_find(c, e->rule))) {
		base_info("%s: no [throttle %s] rule is configured now, dropped", at, e->rule);
		return 0;
	}
	size_t si = 0;
	if (e->source[0]) {
		while (si < pool->nsrc && strcmp(pool->src[si].ip, e->source)) si++;
		if (si == pool->nsrc) {
			base_info("%s: pool %s has no source %s now, dropped", at, e->pool,
			          e->source);
			return 0;
		}
	}
	struct dest *d = relay_dest_new(x, e->site, e->port, pool);
	struct dest_src *s = e->source[0] ? &d->src[si] : NULL;
	if (t) {
		relay_throttle_put(x, d, s, t, e->until);
	} else if (s) {
		if (s->suspended_until < e->until)
			s->suspended_until = e->until, s->susp_rule = NULL;
	} else {
		relay_suspend_until(x, d, e->until, "");
	}
	base_info("%s restored until %s", at, u);
	return 1;
}

void relay_shape_load(struct relay_ctx *x)
{
	struct relay_shapestate *st = base_xcalloc(1, sizeof *st);
	st->x = x;
	x->shst = st;
	snprintf(st->path, sizeof st->path, "%s/%s", x->cfg->spool, RELAY_SHAPE_FILE);
	st->ev = evtimer_new(x->base, on_save, st);
	FILE *f = fopen(st->path, "rb");
	if (!f) {
		if (errno != ENOENT)
			base_warn("%s: %s: shaping state not restored", st->path, strerror(errno));
		return;
	}
	char line[RELAY_SHAPE_LINE_MAX + 1];
	unsigned lineno = 0, kept = 0, dropped = 0;
	size_t total = 0;
	int64_t now = base_now();
	int end = 0;
	st->loading = 1;
	while (!end) {
		/* one line, NULs and all; a longer one is skipped to its end */
		size_t n = 0, over = 0;
		int ch;
		while ((ch = fgetc(f)) != EOF && ch != '\n') {
			if (n < sizeof line)
				line[n++] = (char)ch;
			else
				over++;
		}
		end = ch == EOF;
		if (end && !n) break;
		lineno++;
		total += n + over + 1;
		if (total > RELAY_SHAPE_BYTES) {
			base_warn("%s:%u: file longer than %u bytes, the rest is ignored", st->path,
			          lineno, RELAY_SHAPE_BYTES);
			dropped++;
			break;
		}
		if (n > RELAY_SHAPE_LINE_MAX) {
			base_warn("%s:%u: line longer than %u bytes, ignored", st->path, lineno,
			          RELAY_SHAPE_LINE_MAX);
			dropped++;
			continue;
		}
		struct relay_shape_entry e;
		struct base_err err;
		if (relay_shape_parse(line, n, &e, &err) < 0) {
			base_warn("%s:%u: %s, ignored", st->path, lineno, err.msg);
			dropped++;
			continue;
		}
		if (e.kind == RELAY_SHAPE_NONE) continue;
		if (restore(st, &e, lineno, now))
			kept++;
		else
			dropped++;
	}
	fclose(f);
	st->loading = 0;
	if (kept) base_info("%s: %u holds and throttles restored", st->path, kept);
	/* what was dropped leaves the file at its next write, made now */
	if (dropped) relay_shape_changed(x, 1);
}

void relay_shape_stop(struct relay_ctx *x)
{
	struct relay_shapestate *st = x->shst;
	if (!st) return;
	if (st->dirty && !st->w) {
		struct base_buf b;
		struct base_err err;
		base_buf_init(&b);
		state_text(x, &b);
		if (base_write_file_atomic(st->path, b.data, b.len, &err) < 0)
			base_error("shaping state not saved: %s", err.msg);
		base_buf_free(&b);
	}
	if (st->ev) event_free(st->ev);
	free(st);
	x->shst = NULL;
}
