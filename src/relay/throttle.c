/*
 * throttle.c — shaping that reacts to what receivers say. A `[throttle
 * NAME]` section of the config names a pattern over the replies of a
 * destination site and what to do when one matches:
 *
 *   [throttle gmail-rate]
 *   match    = 4\.7\.28        ; POSIX ERE, case-insensitive, over "CODE ENHANCED TEXT"
 *   action   = conn-limit 2    ; or msgs-per-conn N, msgs-per-sec N, conns-per-min N, suspend
 *   duration = 1h
 *   scope    = source          ; or site
 *
 * The subject a pattern sees is the one the bounce rules see (rules.c):
 * "451 4.7.28 451 4.7.28 Our system has detected an unusual rate ...".
 * Every reply that is not 2xx is matched, the greeting's and a 421's
 * included; the first matching rule in file order applies. With scope
 * `source` (the default) it applies to the one egress path that got the
 * reply: the source address of the connection, towards that site, in that
 * pool (the limits are counted per source address anyway, and receivers
 * throttle per sending address); with scope `site` to the whole
 * destination (one MX site as seen from one pool: all its source
 * addresses). A destination without a pool has one unbound source, so
 * both scopes are the destination there. A limit only ever lowers the
 * configured one, several rules combine to the lowest of each, and each
 * match moves the end to DURATION from now; when it passes, the
 * configured limits return. `suspend` holds the destination (or the
 * source) for DURATION as a 4xx greeting does for --suspend. This is
 * KumoMTA's shaping automation and PowerMTA's backoff mode in a small
 * form.
 *
 * State (the invariant): dest.conf holds the configured limits (defaults
 * and a [domain] override), dest.cut those of the site-wide rules in force
 * until dest.cut_until (cut.set says which, cut_rules which rules), and
 * dest.lim the effective ones; each source has its own cut, cut_until and
 * cut_rules for the rules scoped to it, and its lim is dest.lim lowered by
 * them. relay_dest_limits() recomputes both; the rate buckets of a source
 * are initialised for its lim's rates. What is in force is also kept in
 * SPOOL/shaping (shapestate.c), so that a restart holds it to its end.
 */
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay/account.h"
#include "relay/int.h"

enum { T_SUSPEND = 1, T_CONN, T_MPC, T_MPS, T_CPM };

enum { SCOPE_SOURCE, SCOPE_SITE };

struct relay_throttle {
	char *name;
	regex_t re;
	int has_re;
	int action; /* T_*; 0 while not yet given */
	uint32_t value;
	uint32_t duration; /* seconds; 0 while not yet given */
	int scope;         /* SCOPE_*; SCOPE_SOURCE unless given */
	int has_scope;
};

static const struct {
	const char *name;
	int action;
	unsigned bit;
	uint32_t min;
} actions[] = {
    {"suspend", T_SUSPEND, 0, 0},
    {"conn-limit", T_CONN, RELAY_LIM_CONN, 1},
    {"msgs-per-conn", T_MPC, RELAY_LIM_MPC, 1},
    {"msgs-per-sec", T_MPS, RELAY_LIM_MPS, 1},
    {"conns-per-min", T_CPM, RELAY_LIM_CPM, 1},
};
#define NACTIONS (sizeof actions / sizeof actions[0])

static struct relay_throttle *throttle_get(struct relay_config *c, const char *name,
                                           struct base_err *err)
{
	for (size_t i = 0; i < c->nthrottles; i++)
		if (!strcmp(c->throttles[i].name, name)) return &c->throttles[i];
	if (!relay_name_valid(name)) {
		base_errf(err, "bad throttle name '%.64s'", name);
		return NULL;
	}
	if (c->nthrottles >= RELAY_THROTTLES_MAX) {
		base_errf(err, "too many [throttle] sections (at most %d)", RELAY_THROTTLES_MAX);
		return NULL;
	}
	c->throttles = base_xrealloc(c->throttles, (c->nthrottles + 1) * sizeof *c->throttles);
	struct relay_throttle *t = &c->throttles[c->nthrottles++];
	memset(t, 0, sizeof *t);
	t->name = base_xstrdup(name);
	return t;
}

static int action_set(struct relay_throttle *t, const char *v, struct base_err *err)
{
	size_t n = strcspn(v, " \t");
	const char *arg = v + n + strspn(v + n, " \t");
	for (size_t i = 0; i < NACTIONS; i++) {
		if (strlen(actions[i].name) != n || strncmp(actions[i].name, v, n)) continue;
		if (actions[i].action == T_SUSPEND) {
			if (*arg)
				return base_errf(err, "throttle %s: action suspend takes no number",
				                 t->name);
			t->action = T_SUSPEND;
			return 0;
		}
		uint64_t x;
		int k = base_parse_uint(arg, 1u << 30, &x);
		if (k <= 0 || arg[k] || x < actions[i].min)
			return base_errf(err,
			                 "throttle %s: action %s needs a number of at least %u",
			                 t->name, actions[i].name, actions[i].min);
		t->action = actions[i].action;
		t->value = (uint32_t)x;
		return 0;
	}
	return base_errf(err,
	                 "throttle %s: unknown action '%.40s' (suspend, conn-limit N, "
	                 "msgs-per-conn N, msgs-per-sec N, conns-per-min N)",
	                 t->name, v);
}

int relay_throttle_set(struct relay_config *c, const char *name, const char *key, const char *value,
                       struct base_err *err)
{
	struct relay_throttle *t = throttle_get(c, name, err);
	if (!t) return -1;
	if (!strcmp(key, "match")) {
		if (t->has_re) return base_errf(err, "throttle %s: match given twice", name);
		char origin[96];
		snprintf(origin, sizeof origin, "throttle %s: match", name);
		if (relay_regex_compile(&t->re, value, strlen(value), origin, err) < 0) return -1;
		t->has_re = 1;
		return 0;
	}
	if (!strcmp(key, "action")) return action_set(t, value, err);
	if (!strcmp(key, "duration")) {
		char m[sizeof err->msg];
		if (base_parse_duration(value, &t->duration, err) < 0 || !t->duration) {
			snprintf(m, sizeof m, "%s", t->duration ? err->msg : "must not be 0");
			return base_errf(err, "throttle %s: duration: %s", name, m);
		}
		return 0;
	}
	if (!strcmp(key, "scope")) {
		if (t->has_scope) return base_errf(err, "throttle %s: scope given twice", name);
		if (!strcmp(value, "source"))
			t->scope = SCOPE_SOURCE;
		else if (!strcmp(value, "site"))
			t->scope = SCOPE_SITE;
		else
			return base_errf(err,
			                 "throttle %s: scope must be source or site, not '%.40s'",
			                 name, value);
		t->has_scope = 1;
		return 0;
	}
	return base_errf(err,
	                 "throttle %s: unknown setting '%.40s' (match, action, duration, scope)",
	                 name, key);
}

int relay_throttles_check(const struct relay_config *c, struct base_err *err)
{
	for (size_t i = 0; i < c->nthrottles; i++) {
		const struct relay_throttle *t = &c->throttles[i];
		const char *missing = !t->has_re     ? "match"
		                      : !t->action   ? "action"
		                      : !t->duration ? "duration"
		                                     : NULL;
		if (missing) return base_errf(err, "throttle %s: no %s given", t->name, missing);
	}
	return 0;
}

void relay_throttles_free(struct relay_config *c)
{
	for (size_t i = 0; i < c->nthrottles; i++) {
		free(c->throttles[i].name);
		if (c->throttles[i].has_re) regfree(&c->throttles[i].re);
	}
	free(c->throttles);
	c->throttles = NULL;
	c->nthrottles = 0;
}

const struct relay_throttle *relay_throttle_find(const struct relay_config *c, const char *name)
{
	for (size_t i = 0; i < c->nthrottles; i++)
		if (!strcmp(c->throttles[i].name, name)) return &c->throttles[i];
	return NULL;
}

const char *relay_throttle_name(const struct relay_config *c, size_t i)
{
	return i < c->nthrottles ? c->throttles[i].name : NULL;
}

/* ---- at run time ------------------------------------------------------------ */

static uint32_t lower(uint32_t conf, uint32_t cut, int zero_unlimited)
{
	if (zero_unlimited && !conf) return cut;
	return cut < conf ? cut : conf;
}

/* e lowered by the limits cut sets. */
static void limits_lower(struct relay_limits *e, const struct relay_limits *cut)
{
	if (cut->set & RELAY_LIM_CONN) e->conn_limit = lower(e->conn_limit, cut->conn_limit, 0);
	if (cut->set & RELAY_LIM_MPC)
		e->msgs_per_conn = lower(e->msgs_per_conn, cut->msgs_per_conn, 1);
	if (cut->set & RELAY_LIM_MPS)
		e->msgs_per_sec = lower(e->msgs_per_sec, cut->msgs_per_sec, 1);
	if (cut->set & RELAY_LIM_CPM)
		e->conns_per_min = lower(e->conns_per_min, cut->conns_per_min, 1);
}

/* The rules in force on a destination or on one of its sources. */
struct cut_ref {
	struct relay_limits *cut;
	int64_t *until;
	const char **rule;
	unsigned char *rules;
};

static struct cut_ref cut_of(struct dest *d, struct dest_src *s)
{
	if (s) return (struct cut_ref){&s->cut, &s->cut_until, &s->cut_rule, s->cut_rules};
	return (struct cut_ref){&d->cut, &d->cut_until, &d->cut_rule, d->cut_rules};
}

/* Forgets the rules of r once their end has passed; 1 when it did. */
static int cut_expire(struct cut_ref r, int64_t now)
{
	if (!*r.until || *r.until > now) return 0;
	memset(r.cut, 0, sizeof *r.cut);
	memset(r.rules, 0, RELAY_THROTTLES_MAX / 8);
	*r.until = 0;
	*r.rule = NULL;
	return 1;
}

static const char *src_ip(const struct dest *d, const struct dest_src *s)
{
	return d->pool ? d->pool->src[s - d->src].ip : "-";
}

void relay_dest_limits(struct relay_ctx *x, struct dest *d)
{
	(void)x;
	int64_t now = base_now();
	const char *ended = d->cut_rule;
	if (cut_expire(cut_of(d, NULL), now))
		base_info("destination %s:%u: throttle %s ended", d->host, d->port,
		          ended ? ended : "-");
	struct relay_limits e = d->conf;
	limits_lower(&e, &d->cut);
	d->lim = e;
	for (size_t i = 0; i < d->nsrc; i++) {
		struct dest_src *s = &d->src[i];
		ended = s->cut_rule;
		if (cut_expire(cut_of(d, s), now))
			base_info("destination %s:%u source %s: throttle %s ended", d->host,
			          d->port, src_ip(d, s), ended ? ended : "-");
		struct relay_limits se = e;
		limits_lower(&se, &s->cut);
		/* the address's shared limits follow the ones it shares (this
		 * runs for every recipient routed: only when they moved) */
		int moved = se.conn_limit != s->lim.conn_limit ||
		            se.msgs_per_sec != s->lim.msgs_per_sec ||
		            se.conns_per_min != s->lim.conns_per_min;
		if (se.msgs_per_sec != s->lim.msgs_per_sec)
			relay_rate_init(&s->msgs, se.msgs_per_sec, 1000000000ull);
		if (se.conns_per_min != s->lim.conns_per_min)
			relay_rate_init(&s->conns, se.conns_per_min, 60000000000ull);
		s->lim = se;
		if (s->all && moved) relay_src_site_limits(s->all);
	}
}

static void account_throttle(struct relay_ctx *x, const struct dest *d, const struct dest_src *s,
                             const struct relay_throttle *t, int64_t until, const char *reply)
{
	if (!x->log) return;
	char hp[300], u[32];
	time_t tu = (time_t)until;
	struct tm tm;
	gmtime_r(&tu, &tm);
	strftime(u, sizeof u, "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(hp, sizeof hp, "%s:%u", d->host, d->port);
	FILE *f = x->log;
	fprintf(f, "{\"time\":%lld,\"event\":\"throttle\",\"rule\":", (long long)base_now());
	base_json_fputs(f, t->name);
	fputs(",\"site\":", f);
	base_json_fputs(f, hp);
	fputs(",\"pool\":", f);
	if (d->pool)
		base_json_fputs(f, d->pool->name);
	else
		fputs("null", f);
	/* the one source address it holds back, or null: all of them */
	fputs(",\"source\":", f);
	if (s)
		base_json_fputs(f, src_ip(d, s));
	else
		fputs("null", f);
	fputs(",\"action\":", f);
	for (size_t i = 0; i < NACTIONS; i++)
		if (actions[i].action == t->action) base_json_fputs(f, actions[i].name);
	if (t->action != T_SUSPEND) fprintf(f, ",\"value\":%u", t->value);
	fputs(",\"until\":", f);
	base_json_fputs(f, u);
	fputs(",\"reply\":", f);
	base_json_fputs(f, reply ? reply : "");
	fputs("}\n", f);
	fflush(f);
}

/* Puts the limit of rule t (index ti) in force in r until `until`;
 * returns whether that changed more than the end: a limit newly set or
 * lowered (fresh, so that a burst of matching replies logs once), or a
 * rule not yet in force (*added). */
static int cut_apply(struct cut_ref r, const struct relay_throttle *t, size_t ti, int64_t until,
                     int *added)
{
	unsigned bit = 0;
	uint32_t *field = NULL;
	switch (t->action) {
	case T_CONN:
		bit = RELAY_LIM_CONN, field = &r.cut->conn_limit;
		break;
	case T_MPC:
		bit = RELAY_LIM_MPC, field = &r.cut->msgs_per_conn;
		break;
	case T_MPS:
		bit = RELAY_LIM_MPS, field = &r.cut->msgs_per_sec;
		break;
	default:
		bit = RELAY_LIM_CPM, field = &r.cut->conns_per_min;
		break;
	}
	int fresh = !(r.cut->set & bit) || *field > t->value;
	if (fresh) *field = t->value;
	r.cut->set |= bit;
	if (*r.until < until) *r.until = until;
	*r.rule = t->name;
	*added = !(r.rules[ti / 8] & (1u << (ti % 8)));
	r.rules[ti / 8] |= (unsigned char)(1u << (ti % 8));
	return fresh;
}

/* Puts rule t in force on d, or on its source s, until `until`; returns
 * whether it was not already (fresh), and in *urgent whether the state
 * kept on disk must be written at once. */
static int put(struct relay_ctx *x, struct dest *d, struct dest_src *s,
               const struct relay_throttle *t, int64_t until, int *urgent)
{
	int fresh, added = 0;
	if (t->action == T_SUSPEND && s) {
		fresh = s->suspended_until < until;
		if (fresh) {
			s->suspended_until = until;
			s->susp_rule = t->name;
		}
		*urgent = fresh;
		return fresh;
	}
	if (t->action == T_SUSPEND) {
		fresh = d->suspended_until < until;
		relay_suspend_until(x, d, until, "");
		if (fresh) d->susp_rule = t->name;
		*urgent = fresh;
		return fresh;
	}
	fresh = cut_apply(cut_of(d, s), t, (size_t)(t - x->cfg->throttles), until, &added);
	relay_dest_limits(x, d);
	*urgent = fresh || added;
	return fresh;
}

void relay_throttle_put(struct relay_ctx *x, struct dest *d, struct dest_src *s,
                        const struct relay_throttle *t, int64_t until)
{
	int urgent;
	put(x, d, s, t, until, &urgent);
}

int relay_throttle_reply(struct relay_ctx *x, struct dest *d, int code, const char *reply)
{
	const struct relay_config *c = x->cfg;
	if (!d || !c->nthrottles || (code >= 200 && code < 300)) return 0;
	char e[16], subject[1200];
	relay_enhanced(reply, e, sizeof e);
	relay_reply_subject(code, e, reply, subject, sizeof subject);
	for (size_t i = 0; i < c->nthrottles; i++) {
		const struct relay_throttle *t = &c->throttles[i];
		if (regexec(&t->re, subject, 0, NULL, 0)) continue;
		int64_t until = base_now() + t->duration;
		/* scope source: the connection's source, when the destination
		 * binds one of several (without a pool the one source is d) */
		struct dest_src *s = NULL;
		if (t->scope == SCOPE_SOURCE && d->pool && x->acct_si && x->acct_si <= d->nsrc)
			s = &d->src[x->acct_si - 1];
		int urgent, fresh = put(x, d, s, t, until, &urgent);
		if (fresh) {
			if (s)
				base_info("destination %s:%u source %s: throttle %s for %us: %s",
				          d->host, d->port, src_ip(d, s), t->name, t->duration,
				          reply ? reply : "");
			else
				base_info("destination %s:%u: throttle %s for %us: %s", d->host,
				          d->port, t->name, t->duration, reply ? reply : "");
			account_throttle(x, d, s, t, until, reply);
		}
		relay_shape_changed(x, urgent);
		return 1;
	}
	return 0;
}
