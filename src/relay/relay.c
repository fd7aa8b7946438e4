/*
 * relay.c — the relay daemon's core: it opens the spool (recovering the
 * queue), runs the group commit for reception, the scheduler that turns
 * due recipients into delivery jobs per destination, the outcome rules
 * (delivered, retry, bounce, expire, suspend), DSNs, DKIM signing at
 * reception, and the accounting log.
 *
 * The scheduler runs every second, and at once when new mail is committed
 * or a connection frees up. It pops the messages that are due from a heap
 * keyed by next-attempt time (sched.c), so its cost follows the due mail,
 * not the queue: every PENDING recipient that is due, not busy, not held
 * by an administrator (control.c) and whose destination is not suspended
 * joins a job for (message, destination); the message goes back into the
 * heap at its next due time. Destinations then open connections up to
 * their limit (mta.c).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "auth/auth.h"
#include "relay/account.h"
#include "relay/dane.h"
#include "relay/dsnparam.h"
#include "relay/int.h"
#include "relay/mtasts.h"
#include "smtp/smtp.h"

void relay_config_init(struct relay_config *c)
{
	memset(c, 0, sizeof *c);
	relay_schedule_default(&c->schedule);
	c->suspend = 300;
	c->dead_time = RELAY_DEAD_SECONDS;
	c->conn_limit = 10;
	c->msgs_per_conn = 100;
	c->max_size = 10485760;
	c->max_rcpts = 100;
	c->max_conns = 256;
	c->max_outbound = 1000;
	c->timeout = 300;
	c->smtp_port = 25;
	c->tlsrpt_delay = 3600;
	c->tlsrpt_retry = 300;
}

/* The outbound connections the relay may open: --max-outbound, fitted
 * into the limit on open files (raised to its hard limit first) beside
 * the inbound sessions and a reserve for the spool, logs and DNS. */
#define FD_RESERVE 64
static uint32_t out_limit(const struct relay_config *c)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return c->max_outbound;
	if (rl.rlim_cur < rl.rlim_max) {
		struct rlimit up = {rl.rlim_max, rl.rlim_max};
		if (setrlimit(RLIMIT_NOFILE, &up) == 0) rl = up;
	}
	uint64_t need = (uint64_t)c->max_outbound + c->max_conns + FD_RESERVE;
	if (rl.rlim_cur == RLIM_INFINITY || need <= rl.rlim_cur) return c->max_outbound;
	uint64_t fit = rl.rlim_cur > (uint64_t)c->max_conns + FD_RESERVE + 1
	                   ? rl.rlim_cur - c->max_conns - FD_RESERVE
	                   : 1;
	base_warn("%u outbound connections and %u inbound sessions need about %llu open files, "
	          "and the limit is %llu: at most %llu outbound connections",
	          c->max_outbound, c->max_conns, (unsigned long long)need,
	          (unsigned long long)rl.rlim_cur, (unsigned long long)fit);
	return (uint32_t)fit;
}

/* ---- ids, accounting -------------------------------------------------------- */

void relay_id_new(struct relay_ctx *x, char *out)
{
	snprintf(out, RELAY_ID_MAX + 1, "%llx.%x.%llx", (unsigned long long)base_now(),
	         x->pid & 0xffff, (unsigned long long)++x->seq);
}

static void json_str(FILE *f, const char *s)
{
	base_json_fputs(f, s ? s : "");
}

static void json_or_null(FILE *f, const char *s)
{
	if (s)
		base_json_fputs(f, s);
	else
		fputs("null", f);
}

/* The enhanced status code at the start of a reply text ("5.1.1 ..."). */
void relay_enhanced(const char *reply, char *out, size_t n)
{
	out[0] = 0;
	if (!reply || strlen(reply) < 4) return;
	const char *t = reply + 4;
	size_t k = 0;
	if ((t[0] == '2' || t[0] == '4' || t[0] == '5') && t[1] == '.') {
		while (k + 1 < n && t[k] && t[k] != ' ' &&
		       ((t[k] >= '0' && t[k] <= '9') || t[k] == '.'))
			out[k] = t[k], k++;
		out[k] = 0;
	}
}

static const char *categorize(struct relay_ctx *x, int code, const char *reply)
{
	if (x->category) return x->category; /* an administrator's action */
	char e[16];
	relay_enhanced(reply, e, sizeof e);
	return relay_classify(x->cfg->rules, code, e, reply ? reply : "");
}

void relay_csv_field(FILE *f, const char *s, int last)
{
	s = s ? s : "";
	if (strpbrk(s, ",\"\r\n")) {
		fputc('"', f);
		for (; *s; s++) {
			if (*s == '"') fputc('"', f);
			fputc(*s == '\r' || *s == '\n' ? ' ' : *s, f);
		}
		fputc('"', f);
	} else {
		fputs(s, f);
	}
	fputc(last ? '\n' : ',', f);
}

static const char csv_header[] = "type,timeLogged,timeQueued,orig,rcpt,dsnAction,dsnStatus,dsnDiag,"
                                 "dsnMta,bounceCat,srcIp,attempts,jobId,dlvTls,dlvDane\n";

/* PowerMTA's record types: d delivered, b bounced, t transient; r (our
 * addition) received; an expiry is a bounce of category "expired". */
static void account_csv(struct relay_ctx *x, const char *event, const struct rmsg *m,
                        const struct rrcpt *r, const struct dest *d, int code, const char *reply)
{
	FILE *f = x->csv;
	char t1[40], t2[40], e[16], mta[300] = "", att[16] = "";
	time_t now = base_now(), q = (time_t)m->received;
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(t1, sizeof t1, "%Y-%m-%d %H:%M:%S+0000", &tm);
	gmtime_r(&q, &tm);
	strftime(t2, sizeof t2, "%Y-%m-%d %H:%M:%S+0000", &tm);
	relay_enhanced(reply, e, sizeof e);
	if (d && x->acct_mx)
		snprintf(mta, sizeof mta, "%s", x->acct_mx);
	else if (d)
		snprintf(mta, sizeof mta, "%s:%u", d->host, d->port);
	if (r) snprintf(att, sizeof att, "%u", r->attempts);
	int expiry = !strcmp(event, "expiry");
	char type = !strcmp(event, "delivery")    ? 'd'
	            : !strcmp(event, "transient") ? 't'
	            : !strcmp(event, "reception") ? 'r'
	                                          : 'b';
	const char *action = type == 'd'   ? "relayed"
	                     : type == 't' ? "delayed"
	                     : type == 'r' ? "queued"
	                                   : "failed";
	char ts[2] = {type, 0};
	relay_csv_field(f, ts, 0);
	relay_csv_field(f, t1, 0);
	relay_csv_field(f, t2, 0);
	relay_csv_field(f, m->sender, 0);
	relay_csv_field(f, r ? r->addr : "", 0);
	relay_csv_field(f, action, 0);
	relay_csv_field(f, e, 0);
	relay_csv_field(f, type != 'r' ? reply : "", 0);
	relay_csv_field(f, mta, 0);
	relay_csv_field(f,
	          expiry                     ? "expired"
	          : code >= 400 || code == 0 ? categorize(x, code, reply)
	                                     : "",
	          0);
	relay_csv_field(f, r && x->acct_src ? x->acct_src : m->client, 0);
	relay_csv_field(f, att, 0);
	relay_csv_field(f, m->id, 0);
	/* TLS of the session: the reception's, or the delivery attempt's */
	relay_csv_field(f, x->acct_tls ? "yes" : "no", 0);
	relay_csv_field(f, !x->acct_dane ? "" : x->acct_dane == 3 ? "dane-ee" : "dane-ta", 1);
	if (!x->acct_hold) fflush(f);
}

/* Writes the accounting lines held back by acct_hold. */
void relay_account_flush(struct relay_ctx *x)
{
	if (x->csv) fflush(x->csv);
	if (x->log) fflush(x->log);
}

void relay_account(struct relay_ctx *x, const char *event, const struct rmsg *m,
                   const struct rrcpt *r, const struct dest *d, int code, const char *reply)
{
	if (x->csv) account_csv(x, event, m, r, d, code, reply);
	if (!x->log) return;
	char e[16];
	relay_enhanced(reply, e, sizeof e);
	FILE *f = x->log;
	fprintf(f, "{\"time\":%lld,\"event\":", (long long)base_now());
	json_str(f, event);
	fputs(",\"id\":", f);
	json_str(f, m->id);
	fputs(",\"sender\":", f);
	json_str(f, m->sender);
	if (r) {
		fputs(",\"rcpt\":", f);
		json_str(f, r->addr);
		fprintf(f, ",\"attempts\":%u", r->attempts);
	} else {
		fprintf(f, ",\"rcpts\":%u", m->nrcpt);
	}
	fputs(",\"account\":", f);
	json_or_null(f, m ? m->account : NULL);
	fputs(",\"pool\":", f);
	json_or_null(f, d && d->pool ? d->pool->name : m->pool);
	fputs(",\"source_ip\":", f);
	/* a delivery attempt's: the connection's bound source address */
	json_str(f, r && x->acct_src ? x->acct_src : m->client);
	fputs(",\"mx\":", f);
	if (d && x->acct_mx) {
		json_str(f, x->acct_mx);
	} else if (d) {
		char hp[300];
		snprintf(hp, sizeof hp, "%s:%u", d->host, d->port);
		json_str(f, hp);
	} else {
		fputs("null", f);
	}
	if (code) fprintf(f, ",\"code\":%d", code);
	fputs(",\"reply\":", f);
	json_str(f, reply);
	fputs(",\"enhanced\":", f);
	json_str(f, e);
	fputs(",\"category\":", f);
	if (code >= 400 || !strcmp(event, "expiry") || !strcmp(event, "transient"))
		json_str(f, !strcmp(event, "expiry") ? "expired" : categorize(x, code, reply));
	else
		fputs("null", f);
	if (x->acct_sts) {
		fputs(",\"mta_sts\":", f);
		json_str(f, x->acct_sts);
	}
	if (x->acct_dane)
		fprintf(f, ",\"dane\":\"verified\",\"dane_usage\":\"%s\"",
		        x->acct_dane == 3 ? "dane-ee" : "dane-ta");
	fputs(x->acct_tls ? ",\"tls\":true}\n" : ",\"tls\":false}\n", f);
	if (!x->acct_hold) fflush(f);
}

/* ---- the queue -------------------------------------------------------------- */

const char *relay_intern(struct relay_ctx *x, const char *s)
{
	if (!s || !*s) return NULL;
	for (struct relay_name *n = x->names; n; n = n->next)
		if (!strcmp(n->s, s)) return n->s;
	size_t len = strlen(s);
	struct relay_name *n = base_xmalloc(sizeof *n + len + 1);
	memcpy(n->s, s, len + 1);
	n->next = x->names;
	x->names = n;
	return n->s;
}

/* A new message in the queue, every recipient pending; not yet in the
 * scheduler's heap nor in the counters (relay_tally_msg_in). */
static struct rmsg *queue_new(struct relay_ctx *x, const char *id, const char *sender,
                              const char *attrs, const char *client, int64_t received,
                              const struct relay_loc *loc, const char *const *rcpts, uint32_t nrcpt)
{
	struct rmsg *m = base_xcalloc(1, sizeof *m);
	snprintf(m->id, sizeof m->id, "%s", id);
	char v[RELAY_ATTRS_MAX + 1];
	if (relay_attr_get(attrs, "account", v, sizeof v)) m->account = relay_intern(x, v);
	if (relay_attr_get(attrs, "pool", v, sizeof v)) m->pool = relay_intern(x, v);
	m->sender = base_xstrdup(sender);
	snprintf(m->client, sizeof m->client, "%s", client ? client : "");
	m->received = received;
	m->loc = *loc;
	m->nrcpt = m->live = nrcpt;
	m->rcpt = base_xcalloc(nrcpt, sizeof *m->rcpt);
	for (uint32_t i = 0; i < nrcpt; i++) m->rcpt[i].addr = base_xstrdup(rcpts[i]);
	m->next = x->msgs;
	if (x->msgs) x->msgs->prev = m;
	x->msgs = m;
	x->nmsgs++;
	m->hidx = RELAY_HEAP_NONE;
	relay_index_put(&x->index, m);
	relay_order_add(&x->order, m);
	return m;
}

struct rmsg *relay_queue_add(struct relay_ctx *x, const char *id, const char *sender,
                             const char *attrs, const char *client, int64_t received,
                             const struct relay_loc *loc, const char *const *rcpts, uint32_t nrcpt)
{
	struct rmsg *m = queue_new(x, id, sender, attrs, client, received, loc, rcpts, nrcpt);
	relay_heap_update(&x->heap, m, 0);
	relay_tally_msg_in(x, m);
	return m;
}

/* Frees a message's memory only: at shutdown, when the spool must keep it. */
static void msg_drop(struct relay_ctx *x, struct rmsg *m)
{
	if (m->prev)
		m->prev->next = m->next;
	else
		x->msgs = m->next;
	if (m->next) m->next->prev = m->prev;
	x->nmsgs--;
	relay_heap_remove(&x->heap, m);
	relay_index_del(&x->index, m);
	relay_order_del(&x->order, m);
	relay_control_unpark(m);
	relay_tally_msg_out(x, m);
	relay_dsn_discard(m);
	relay_dsn_params_free(m->dsnp);
	for (uint32_t i = 0; i < m->nrcpt; i++) free(m->rcpt[i].addr);
	free(m->rcpt);
	free(m->sender);
	free(m);
}

/* Frees a finished message and lets the spool reclaim its segment. */
static void msg_free(struct relay_ctx *x, struct rmsg *m)
{
	relay_dsn_flush(x, m); /* normally done already, when its last job ended */
	relay_spool_release(x->spool, m->loc.seg);
	msg_drop(x, m);
}

static void recovered(void *arg, const struct relay_record *rec, const struct relay_loc *loc,
                      const uint32_t *states, const uint32_t *attempts, const int64_t *next)
{
	struct relay_ctx *x = arg;
	const char **rc = base_xcalloc(rec->nrcpt, sizeof *rc);
	const char *p = rec->rcpts;
	for (uint32_t i = 0; i < rec->nrcpt; i++) {
		rc[i] = p;
		p += strlen(p) + 1;
	}
	struct rmsg *m =
	    queue_new(x, rec->id, rec->sender, rec->attrs, "", rec->received, loc, rc, rec->nrcpt);
	free(rc);
	relay_dsn_attach(x, m, rec->dsn, rec->dsn_len, rec->rflags);
	m->live = 0;
	for (uint32_t i = 0; i < rec->nrcpt; i++) {
		m->rcpt[i].state = states[i];
		m->rcpt[i].attempts = attempts[i];
		m->rcpt[i].next = next[i];
		if (states[i] == RELAY_RCPT_PENDING) m->live++;
	}
	relay_tally_msg_in(x, m);
	relay_heap_update(&x->heap, m, relay_msg_due(m));
}

/* ---- routing -------------------------------------------------------------- */

/* The destination of a recipient of m: its site (a static route's next hop,
 * or the MX host set of its domain) seen from m's pool. 1 with *d, 0 while
 * its MX lookup runs, -1 with the failure in code and reply. */
static const struct relay_route *route_for(const struct relay_config *c, const char *domain);
static struct dest *dest_get(struct relay_ctx *x, const char *host, uint16_t port,
                             const struct relay_pool *pool, const struct relay_hops *h);

/* The same for a domain in mail of pool mpool (NULL: none); id names the
 * message in a warning (NULL: no warning). */
static int dest_for_domain(struct relay_ctx *x, const char *mpool, const char *domain,
                           const char *id, struct dest **d, int *code, const char **reply)
{
	const struct relay_config *c = x->cfg;
	const struct relay_pool *pool = relay_pool_find(c, mpool ? mpool : c->default_pool);
	if (mpool && !pool) {
		if (id) base_warn("%s: unknown IP pool '%s': deferred", id, mpool);
		*code = 451;
		*reply = "451 4.3.5 unknown IP pool";
		return -1;
	}
	const struct relay_route *rt = route_for(c, domain);
	int r = 1;
	if (rt && rt->name) {
		/* a host name: its addresses, checked by verify against the name */
		const struct relay_hops *h;
		r = relay_host_route(x, rt->host, rt->port, &h, code, reply);
		if (r == 1) *d = dest_get(x, rt->host, rt->port, pool, h);
	} else if (rt) {
		struct relay_hops h = {.n = 1};
		struct base_err err;
		char hp[300];
		snprintf(hp, sizeof hp, "%s:%u", rt->host, rt->port);
		if (base_parse_hostport(hp, rt->port, &h.addrs[0], &err) < 0) {
			*code = 451;
			*reply = "451 4.4.0 bad next hop address";
			return -1;
		}
		*d = dest_get(x, rt->host, rt->port, pool, &h);
	} else {
		const char *site;
		const struct relay_hops *h;
		r = relay_mx_route(x, domain, &site, &h, code, reply);
		/* DANE, where it applies, comes before MTA-STS (RFC 8461 2) */
		if (r == 1 && !relay_hops_dane(h))
			r = relay_mtasts_route(x, domain, &site, &h, code, reply);
		if (r == 1) *d = dest_get(x, site, c->smtp_port, pool, h);
	}
	if (r == 1) {
		/* a [domain] override applies to the site its mail goes to */
		const struct relay_domain_limits *o = relay_domain_find(c, domain);
		if (o) {
			struct relay_limits *l = &(*d)->conf;
			if (o->lim.set & RELAY_LIM_CONN) l->conn_limit = o->lim.conn_limit;
			if (o->lim.set & RELAY_LIM_MPC) l->msgs_per_conn = o->lim.msgs_per_conn;
			if (o->lim.set & RELAY_LIM_MPS) l->msgs_per_sec = o->lim.msgs_per_sec;
			if (o->lim.set & RELAY_LIM_CPM) l->conns_per_min = o->lim.conns_per_min;
		}
		relay_dest_limits(x, *d); /* the rate buckets follow a changed rate */
	}
	return r;
}

static int dest_for(struct relay_ctx *x, const struct rmsg *m, const char *addr, struct dest **d,
                    int *code, const char **reply)
{
	return dest_for_domain(x, m->pool, smtp_path_domain(addr), m->id, d, code, reply);
}

static const struct relay_route *route_for(const struct relay_config *c, const char *domain)
{
	const struct relay_route *star = NULL;
	for (size_t i = 0; i < c->nroutes; i++) {
		if (!strcmp(c->routes[i].domain, "*"))
			star = &c->routes[i];
		else if (!base_strcasecmp_ascii(c->routes[i].domain, domain))
			return &c->routes[i];
	}
	return star;
}

void relay_dests_free(struct relay_ctx *x)
{
	while (x->dests) {
		struct dest *d = x->dests;
		x->dests = d->next;
		struct job *j;
		while ((j = relay_job_take(d))) {
			free(j->idx);
			free(j);
		}
		relay_mta_dest_free(d);
		free(d->src);
		free(d->host);
		free(d);
	}
	while (x->src_sites) {
		struct src_site *s = x->src_sites;
		x->src_sites = s->next;
		free(s->users);
		free(s->host);
		free(s);
	}
	base_hmap_free(&x->dest_index);
	base_hmap_free(&x->src_index);
	free(x->busy);
	x->busy = NULL;
	x->nbusy = x->capbusy = 0;
}

struct src_key {
	const char *host;
	uint16_t port;
	const struct base_sockaddr *addr;
};

static uint64_t src_key_hash(const struct src_key *k)
{
	size_t alen = k->addr->family == AF_INET ? 4 : 16;
	uint64_t h = base_hash_mix(0, &k->port, sizeof k->port);
	h = base_hash_mix(h, &k->addr->a, alen);
	return base_hash_mix(h, k->host, strlen(k->host));
}

static int src_key_match(const void *item, const void *key)
{
	const struct src_site *s = item;
	const struct src_key *k = key;
	return s->port == k->port && s->addr.family == k->addr->family &&
	       !memcmp(&s->addr.a, &k->addr->a, k->addr->family == AF_INET ? 4 : 16) &&
	       !strcmp(s->host, k->host);
}

struct dest_key {
	const char *host;
	uint16_t port;
	const struct relay_pool *pool;
};

static uint64_t dest_key_hash(const struct dest_key *k)
{
	uint64_t h = base_hash_mix(0, &k->port, sizeof k->port);
	h = base_hash_mix(h, &k->pool, sizeof k->pool);
	return base_hash_mix(h, k->host, strlen(k->host));
}

static int dest_key_match(const void *item, const void *key)
{
	const struct dest *d = item;
	const struct dest_key *k = key;
	return d->port == k->port && d->pool == k->pool && !strcmp(d->host, k->host);
}

/* The shared count of connections from addr to the site host:port. */
static struct src_site *src_site(struct relay_ctx *x, const char *host, uint16_t port,
                                 const struct base_sockaddr *addr)
{
	const struct src_key k = {host, port, addr};
	uint64_t h = src_key_hash(&k);
	struct src_site *s = base_hmap_find(&x->src_index, h, src_key_match, &k);
	if (s) return s;
	s = base_xcalloc(1, sizeof *s);
	s->host = base_xstrdup(host);
	s->port = port;
	s->addr = *addr;
	s->next = x->src_sites;
	x->src_sites = s;
	base_hmap_put(&x->src_index, h, s);
	return s;
}

/* The lower of two rates or limits, where 0 is no limit. */
static uint32_t lower(uint32_t a, uint32_t b)
{
	return !a ? b : !b ? a : a < b ? a : b;
}

void relay_src_site_limits(struct src_site *ss)
{
	struct relay_limits l = ss->users[0].d->src[ss->users[0].si].lim;
	for (size_t i = 1; i < ss->nusers; i++) {
		const struct relay_limits *u = &ss->users[i].d->src[ss->users[i].si].lim;
		l.conn_limit = u->conn_limit < l.conn_limit ? u->conn_limit : l.conn_limit;
		l.msgs_per_sec = lower(l.msgs_per_sec, u->msgs_per_sec);
		l.conns_per_min = lower(l.conns_per_min, u->conns_per_min);
	}
	if (l.msgs_per_sec != ss->lim.msgs_per_sec || !ss->lim.set)
		relay_rate_init(&ss->msgs, l.msgs_per_sec, 1000000000ull);
	if (l.conns_per_min != ss->lim.conns_per_min || !ss->lim.set)
		relay_rate_init(&ss->conns, l.conns_per_min, 60000000000ull);
	ss->lim = l;
	ss->lim.set = RELAY_LIM_CONN | RELAY_LIM_MPS | RELAY_LIM_CPM; /* armed */
}

uint32_t relay_src_conn_limit(const struct dest_src *ds)
{
	return ds->all ? ds->all->lim.conn_limit : ds->lim.conn_limit;
}

struct relay_rate *relay_src_msgs(struct dest_src *ds)
{
	return ds->all ? &ds->all->msgs : &ds->msgs;
}

struct relay_rate *relay_src_conns(struct dest_src *ds)
{
	return ds->all ? &ds->all->conns : &ds->conns;
}

int64_t relay_src_suspended_until(const struct dest_src *ds)
{
	if (!ds->all) return ds->suspended_until;
	int64_t u = 0;
	for (size_t i = 0; i < ds->all->nusers; i++) {
		const struct src_user *w = &ds->all->users[i];
		if (w->d->src[w->si].suspended_until > u) u = w->d->src[w->si].suspended_until;
	}
	return u;
}

uint32_t relay_src_wanted(const struct dest *d, size_t si)
{
	const struct src_site *ss = d->src[si].all;
	uint32_t n = 0;
	for (size_t i = 0; ss && i < ss->nusers; i++)
		if (ss->users[i].d != d && ss->users[i].d->njobs > ss->users[i].d->connecting) n++;
	return n;
}

struct dest *relay_dest_new(struct relay_ctx *x, const char *host, uint16_t port,
                            const struct relay_pool *pool)
{
	const struct dest_key k = {host, port, pool};
	uint64_t h = dest_key_hash(&k);
	struct dest *d = base_hmap_find(&x->dest_index, h, dest_key_match, &k);
	if (d) return d;
	const struct relay_config *c = x->cfg;
	d = base_xcalloc(1, sizeof *d);
	d->host = base_xstrdup(host);
	d->port = port;
	d->pool = pool;
	d->conf.conn_limit = c->conn_limit;
	d->conf.msgs_per_conn = c->msgs_per_conn;
	d->conf.msgs_per_sec = c->msgs_per_sec;
	d->conf.conns_per_min = c->conns_per_min;
	d->lim = d->conf;
	d->nsrc = pool ? pool->nsrc : 1;
	d->src = base_xcalloc(d->nsrc, sizeof *d->src);
	for (size_t i = 0; i < d->nsrc; i++) {
		if (pool) d->src[i].all = src_site(x, host, port, &pool->src[i].addr);
		d->src[i].lim = d->conf;
		relay_rate_init(&d->src[i].msgs, c->msgs_per_sec, 1000000000ull);
		relay_rate_init(&d->src[i].conns, c->conns_per_min, 60000000000ull);
		struct src_site *ss = d->src[i].all;
		if (ss) {
			ss->users = base_xrealloc(ss->users, (ss->nusers + 1) * sizeof *ss->users);
			ss->users[ss->nusers++] = (struct src_user){d, i};
			relay_src_site_limits(ss);
		}
	}
	d->next = x->dests;
	x->dests = d;
	base_hmap_put(&x->dest_index, h, d);
	return d;
}

static struct dest *dest_get(struct relay_ctx *x, const char *host, uint16_t port,
                             const struct relay_pool *pool, const struct relay_hops *h)
{
	size_t naddrs = h->n < DEST_ADDRS_MAX ? h->n : DEST_ADDRS_MAX;
	struct dest *d = relay_dest_new(x, host, port, pool);
	/* the addresses follow the DNS (a static route's never change) */
	for (size_t i = 0; i < naddrs; i++) {
		d->addrs[i] = h->addrs[i];
		d->addrs[i].port = port;
		d->prefs[i] = h->prefs[i];
		const char *nm = h->names[i];
		if (!nm || !d->names[i] || strcmp(nm, d->names[i])) {
			free(d->names[i]);
			d->names[i] = nm ? base_xstrdup(nm) : NULL;
		}
		if (d->dane[i] != h->dane[i]) {
			relay_dane_unref(d->dane[i]);
			d->dane[i] = relay_dane_ref(h->dane[i]);
		}
	}
	for (size_t i = naddrs; i < d->naddrs; i++) {
		free(d->names[i]);
		d->names[i] = NULL;
		relay_dane_unref(d->dane[i]);
		d->dane[i] = NULL;
	}
	d->naddrs = naddrs;
	return d;
}

/* ---- outcomes ------------------------------------------------------------- */

static void finish(struct relay_ctx *x, struct rmsg *m, uint32_t idx, uint32_t state)
{
	struct rrcpt *r = &m->rcpt[idx];
	struct base_err err;
	r->state = state;
	if (relay_spool_state(x->spool, m->id, idx, state, r->attempts, r->next, &err) < 0)
		base_warn("%s", err.msg);
	m->live--;
	relay_tally_rcpt_out(x, m, idx);
}

void relay_outcome(struct relay_ctx *x, struct dest *d, struct rmsg *m, uint32_t idx, int code,
                   const char *reply)
{
	struct rrcpt *r = &m->rcpt[idx];
	int64_t now = base_now();
	r->attempts++;
	relay_tally_tried(x, m, idx);
	relay_throttle_reply(x, d, code, reply);
	if (code >= 200 && code < 300) {
		/* the line first: a kill -9 between the two writes then delivers
		 * again (and logs it twice) rather than leave no line at all */
		relay_account(x, "delivery", m, r, d, code, reply);
		finish(x, m, idx, RELAY_RCPT_DELIVERED);
	} else if (code >= 500) {
		relay_dsn_owe(x, m, idx, RELAY_RCPT_BOUNCED, d, reply);
		relay_account(x, "bounce", m, r, d, code, reply);
	} else if (now - m->received >= (int64_t)x->cfg->schedule.max_age) {
		relay_dsn_owe(x, m, idx, RELAY_RCPT_EXPIRED, d, reply);
		relay_account(x, "expiry", m, r, d, code, reply);
	} else {
		r->next =
		    relay_schedule_next(&x->cfg->schedule, r->attempts, now, (uint32_t)random());
		if (d && d->suspended_until > r->next) r->next = d->suspended_until;
		struct base_err err;
		if (relay_spool_state(x->spool, m->id, idx, RELAY_RCPT_PENDING, r->attempts,
		                      r->next, &err) < 0)
			base_warn("%s", err.msg);
		relay_account(x, "transient", m, r, d, code, reply);
		relay_dsn_deferred(x, m, idx, d, reply);
	}
}

void relay_suspend(struct relay_ctx *x, struct dest *d, const char *why)
{
	/* a throttle rule may hold the site longer (or cut its limits) */
	int code = why && why[0] >= '1' && why[0] <= '5' ? atoi(why) : 421;
	relay_throttle_reply(x, d, code, why);
	int64_t until = base_now() + x->cfg->suspend;
	if (d->suspended_until < until)
		base_info("destination %s:%u suspended for %us: %s", d->host, d->port,
		          x->cfg->suspend, why);
	relay_suspend_until(x, d, until, why);
}

void relay_suspend_until(struct relay_ctx *x, struct dest *d, int64_t until, const char *why)
{
	(void)why;
	if (d->suspended_until < until) {
		/* a new hold is kept on disk at once; a longer one soon */
		relay_shape_changed(x, d->suspended_until <= base_now());
		d->suspended_until = until;
		d->susp_rule = NULL; /* a throttle rule's suspend names itself after */
	}
	/* waiting jobs go back to the queue, without counting an attempt */
	relay_jobs_back(x, d, d->suspended_until);
}

void relay_jobs_back(struct relay_ctx *x, struct dest *d, int64_t until)
{
	struct job *j;
	while ((j = relay_job_take(d))) {
		for (uint32_t i = 0; i < j->n; i++)
			if (j->m->rcpt[j->idx[i]].next < until) j->m->rcpt[j->idx[i]].next = until;
		relay_job_free(x, j);
	}
}

struct job *relay_job_take(struct dest *d)
{
	struct job *j = d->head;
	if (!j) return NULL;
	d->head = j->next;
	if (!d->head) d->tail = NULL;
	d->njobs--;
	j->next = NULL;
	return j;
}

/* Releases a job's recipients; frees the message when nothing is left. */
void relay_job_free(struct relay_ctx *x, struct job *j)
{
	struct rmsg *m = j->m;
	for (uint32_t i = 0; i < j->n; i++) m->rcpt[j->idx[i]].busy = 0;
	m->busy--;
	free(j->idx);
	free(j);
	if (m->busy == 0) relay_dsn_flush(x, m); /* the attempt cycle is over */
	if (m->live == 0 && m->busy == 0)
		msg_free(x, m);
	else
		relay_heap_update(&x->heap, m, relay_msg_due(m));
	relay_kick(x);
}

/* ---- the scheduler ---------------------------------------------------------- */

/* Makes the jobs of one message that is due; returns when it is due again
 * (INT64_MAX: when a job ends), or -1 when the message was freed. */
static int64_t schedule_msg(struct relay_ctx *x, struct rmsg *m, int64_t now)
{
	if (m->live == 0) {
		if (m->busy) return INT64_MAX;
		msg_free(x, m);
		return -1;
	}
	int64_t due = INT64_MAX;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		struct rrcpt *r = &m->rcpt[i];
		if (r->state != RELAY_RCPT_PENDING || r->busy) continue;
		if (r->next > now) {
			if (r->next < due) due = r->next;
			continue;
		}
		struct dest *d;
		int code = 0;
		const char *why = NULL;
		int found = dest_for(x, m, r->addr, &d, &code, &why);
		if (found == 0) { /* the MX lookup is running: look again next tick */
			due = now;
			continue;
		}
		if (found < 0) {
			relay_outcome(x, NULL, m, i, code, why);
			if (r->state == RELAY_RCPT_PENDING && r->next < due) due = r->next;
			continue;
		}
		struct relay_hold *by = NULL;
		int64_t held = relay_control_held(x, m, r->addr, d, now, &by);
		if (held) relay_control_park(m, by); /* its end brings m forward */
		if (!held && d->suspended_until > now) held = d->suspended_until;
		if (held) {
			if (held < due) due = held;
			continue;
		}
		/* gather every due recipient of m for d into one job */
		struct job *j = base_xcalloc(1, sizeof *j);
		j->m = m;
		j->idx = base_xcalloc(m->nrcpt, sizeof *j->idx);
		for (uint32_t k = i; k < m->nrcpt; k++) {
			struct rrcpt *q = &m->rcpt[k];
			if (q->state != RELAY_RCPT_PENDING || q->busy || q->next > now) continue;
			struct dest *dq = d;
			if (k != i && dest_for(x, m, q->addr, &dq, &code, &why) != 1) continue;
			if (dq != d) continue;
			if (k != i && relay_control_held(x, m, q->addr, d, now, NULL)) continue;
			q->busy = 1;
			j->idx[j->n++] = k;
		}
		m->busy++;
		if (d->tail)
			d->tail->next = j;
		else
			d->head = j;
		d->tail = j;
		d->njobs++;
		if (!d->in_busy) {
			if (x->nbusy == x->capbusy) {
				x->capbusy = x->capbusy ? 2 * x->capbusy : 64;
				x->busy = base_xrealloc(x->busy, x->capbusy * sizeof *x->busy);
			}
			x->busy[x->nbusy++] = d;
			d->in_busy = 1;
		}
	}
	if (m->busy == 0) relay_dsn_flush(x, m); /* failures without a job (no route) */
	if (m->live == 0 && m->busy == 0) {
		msg_free(x, m);
		return -1;
	}
	return due;
}

static void schedule(struct relay_ctx *x)
{
	if (x->verify) {
		struct base_err err;
		if (relay_tally_check(x, &err) < 0) {
			base_error("queue counters differ from the queue: %s", err.msg);
			abort();
		}
		if (relay_qindex_check(&x->index, &x->order, x->msgs, x->nmsgs, &err) < 0 ||
		    relay_control_check(x, &err) < 0) {
			base_error("queue indexes differ from the queue: %s", err.msg);
			abort();
		}
	}
	int64_t now = base_now();
	struct rmsg *m, **again = NULL; /* still due: back into the heap after the tick */
	size_t nagain = 0, capagain = 0;
	while ((m = relay_heap_top(&x->heap)) && m->due <= now) {
		relay_heap_remove(&x->heap, m);
		relay_control_unpark(m); /* schedule_msg parks it again where still held */
		int64_t due = schedule_msg(x, m, now);
		if (due < 0) continue;
		if (due > now) {
			relay_heap_update(&x->heap, m, due);
			continue;
		}
		if (nagain == capagain) {
			capagain = capagain ? 2 * capagain : 16;
			again = base_xrealloc(again, capagain * sizeof *again);
		}
		m->due = due;
		again[nagain++] = m;
	}
	for (size_t i = 0; i < nagain; i++) relay_heap_push(&x->heap, again[i]);
	free(again);
	x->out_wait = 0; /* found again by the pumps, while it holds */
	/* those with jobs, starting after the last that opened a connection:
	 * at --max-outbound the first pumped take the places that came free,
	 * so they go round; by index, as a pump can add to the list */
	size_t n = x->nbusy, first = n ? x->busy_turn % n : 0;
	for (size_t i = 0; i < n; i++) {
		size_t at = (first + i) % n;
		uint32_t out = x->nout;
		relay_mta_pump(x, x->busy[at]);
		if (x->nout > out) x->busy_turn = at + 1;
	}
	/* and every other destination once a second, where a throttle rule's
	 * end is noticed */
	int64_t mono = (int64_t)base_mono_ns();
	if (mono - x->full_pass >= 1000000000ll) {
		x->full_pass = mono;
		for (struct dest *d = x->dests; d; d = d->next)
			if (!d->in_busy) relay_mta_pump(x, d);
	}
	size_t k = 0;
	for (size_t i = 0; i < x->nbusy; i++) {
		struct dest *d = x->busy[i];
		if (d->njobs)
			x->busy[k++] = d;
		else
			d->in_busy = 0;
	}
	x->nbusy = k;
}

/* Puts a message back at its due time after an administrator changed it. */
void relay_resched(struct relay_ctx *x, struct rmsg *m)
{
	if (m->busy == 0) relay_dsn_flush(x, m);
	if (m->live == 0 && m->busy == 0)
		msg_free(x, m);
	else
		relay_heap_update(&x->heap, m, relay_msg_due(m));
}

/* The site a recipient of m goes to, as "host:port" (a static route's next
 * hop, or its domain's MX host set "mx1,mx2:25"); NULL while unknown (MX
 * lookup running, no route). The summary by site and site suspensions ask
 * here alone. */
const char *relay_site(struct relay_ctx *x, const struct rmsg *m, const char *addr, char *buf,
                       size_t n)
{
	return relay_site_domain(x, m->pool, smtp_path_domain(addr), m->id, buf, n);
}

const char *relay_site_domain(struct relay_ctx *x, const char *pool, const char *domain,
                              const char *id, char *buf, size_t n)
{
	struct dest *d;
	int code = 0;
	const char *why = NULL;
	if (dest_for_domain(x, pool, domain, id, &d, &code, &why) != 1) return NULL;
	snprintf(buf, n, "%s:%u", d->host, d->port);
	return buf;
}

/* An administrator bounces one pending recipient: a final outcome, a
 * `bounce` event of category `admin`, and the sender's DSN when the caller
 * reschedules the message (relay_resched: one DSN for all its recipients). */
void relay_admin_bounce(struct relay_ctx *x, struct rmsg *m, uint32_t idx, const char *reply)
{
	relay_dsn_owe(x, m, idx, RELAY_RCPT_BOUNCED, NULL, reply);
	x->category = "admin";
	relay_account(x, "bounce", m, &m->rcpt[idx], NULL, 550, reply);
	x->category = NULL;
	relay_commit_soon(x);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	schedule(arg);
}

void relay_kick(struct relay_ctx *x)
{
	struct timeval tv = {0, 0};
	/* re-arm the periodic tick to fire now; it re-arms itself each second */
	evtimer_add(x->tick, &tv);
}

/* ---- group commit ------------------------------------------------------------ */

/* A commit on the sync thread: the spool's sync and the sessions it will
 * answer. While it runs the loop goes on reading and writing; sessions
 * whose message is written meanwhile wait for the next commit, which starts
 * when this one ends. So a 250 still comes only after a sync that began
 * after the message was written. The send counters, when they changed,
 * are written on the same thread before the sync (account.h), so the 250
 * also waits for the counts that include the message. */
struct commit {
	struct relay_work work;
	struct relay_ctx *x;
	struct relay_spool_sync *sync;
	struct relay_quota_snap *quota; /* send counters to write first; NULL: unchanged */
	struct session **batch;
	size_t n;
};

static void commit_run(struct relay_work *j)
{
	struct commit *c = (struct commit *)j;
	if (c->quota) relay_quota_write(c->quota);
	relay_spool_commit_run(c->sync);
}

static void commit_done(struct relay_work *j)
{
	struct commit *c = (struct commit *)j;
	struct relay_ctx *x = c->x;
	struct base_err err;
	int ok = relay_spool_commit_end(c->sync, &err) == 0 && j->ran;
	if (!ok && j->ran) base_error("%s", err.msg);
	/* no 250 before the counts covering the batch are durable too */
	if (c->quota && relay_quota_end(x->quota, c->quota, &err) < 0) {
		base_error("%s", err.msg);
		ok = 0;
	}
	x->sync_work = NULL;
	x->syncs += j->ran;
	if (ok) x->synced += c->n;
	if (!x->stopping) {
		/* the batch's reception lines go out in one write, before any 250 */
		if (ok) {
			x->acct_hold++;
			for (size_t i = 0; i < c->n; i++) relay_server_queued(x, c->batch[i]);
			x->acct_hold--;
			relay_account_flush(x);
		}
		for (size_t i = 0; i < c->n; i++)
			relay_server_committed(x, c->batch[i], ok, ok ? NULL : err.msg);
	}
	free(c->batch);
	free(c);
	if (x->stopping) return;
	if (x->nwaiting || x->commit_again) relay_commit_soon(x);
	x->commit_again = 0;
	relay_kick(x);
}

static void on_commit(evutil_socket_t fd, short what, void *arg)
{
	struct relay_ctx *x = arg;
	if (x->sync_work) {
		x->commit_again = 1; /* the running commit starts the next */
		return;
	}
	struct commit *c = base_xcalloc(1, sizeof *c);
	c->work.run = commit_run;
	c->work.done = commit_done;
	c->x = x;
	c->batch = x->waiting;
	c->n = x->nwaiting;
	x->waiting = NULL;
	x->nwaiting = x->capwaiting = 0;
	c->sync = relay_spool_commit_begin(x->spool);
	c->quota = relay_quota_snapshot(x->quota);
	x->sync_work = &c->work;
	relay_workers_submit(x->syncer, &c->work);
}

void relay_commit_soon(struct relay_ctx *x)
{
	if (evtimer_pending(x->commit_ev, NULL)) return;
	struct timeval tv = {0, (suseconds_t)x->cfg->commit_delay_us};
	evtimer_add(x->commit_ev, &tv);
}

/* ---- DKIM signing at reception ---------------------------------------------- */

/* The domain of the first address in the From: header field. */
static int from_domain(const char *msg, size_t len, char *out, size_t n)
{
	const char *p = msg, *end = msg + len;
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		if (!eol) eol = end;
		if (eol == p || (eol == p + 1 && *p == '\r')) break; /* end of header */
		if ((size_t)(eol - p) > 5 && !strncasecmp(p, "From:", 5)) {
			/* the field, unfolded up to the next non-continuation line */
			const char *fe = eol;
			while (fe + 1 < end && (fe[1] == ' ' || fe[1] == '\t')) {
				const char *ne = memchr(fe + 1, '\n', (size_t)(end - fe - 1));
				fe = ne ? ne : end;
			}
			const char *at = NULL;
			for (const char *q = p + 5; q < fe; q++)
				if (*q == '@') {
					at = q;
					break;
				}
			if (!at) return -1;
			size_t k = 0;
			for (const char *q = at + 1; q < fe && k + 1 < n; q++) {
				char c = *q;
				if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				      (c >= '0' && c <= '9') || c == '-' || c == '.'))
					break;
				out[k++] = base_lower(c);
			}
			out[k] = 0;
			return k ? 0 : -1;
		}
		p = eol + 1;
	}
	return -1;
}

int relay_sign(const struct relay_dkim *keys, size_t nkeys, struct base_buf *msg,
               struct base_err *err)
{
	if (!nkeys) return 0;
	char dom[256];
	const struct relay_dkim *k = &keys[0]; /* the first key is the service key */
	if (from_domain(msg->data, msg->len, dom, sizeof dom) == 0) {
		for (size_t i = 0; i < nkeys; i++) {
			size_t dl = strlen(dom), kl = strlen(keys[i].domain);
			/* the From domain itself, or a subdomain of a key's domain */
			if (!strcmp(dom, keys[i].domain) ||
			    (dl > kl && dom[dl - kl - 1] == '.' && !strcmp(dom + dl - kl, keys[i].domain))) {
				k = &keys[i];
				break;
			}
		}
	}
	struct auth_dkim_sign_opts o;
	memset(&o, 0, sizeof o);
	o.domain = k->domain;
	o.selector = k->selector;
	struct base_buf sig;
	base_buf_init(&sig);
	if (auth_dkim_sign(k->key, &o, msg->data, msg->len, &sig, err) < 0) {
		base_buf_free(&sig);
		return -1;
	}
	base_buf_append(&sig, msg->data, msg->len);
	base_buf_free(msg);
	*msg = sig;
	return 0;
}

/* ---- running ------------------------------------------------------------------- */

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopexit(arg, NULL);
}

static void on_periodic(evutil_socket_t fd, short what, void *arg)
{
	schedule(arg);
}

static int same_str(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

/* SIGHUP: the configuration is read again, whole, and checked as at start.
 * If any of it is wrong the relay goes on as it was. Otherwise the
 * accounts, DKIM keys, trusted networks and bounce rules of the new one
 * take effect for what comes next: sessions already authenticated keep the
 * account they logged in with, messages already ending keep the keys they
 * were given, and the replaced settings stay in memory until the relay
 * stops (they may still be in use). Other settings need a restart. */
static void reload(struct relay_ctx *x)
{
	struct base_err err;
	const struct relay_config *n = x->cfg->reload(&err);
	if (!n) {
		base_error("reload refused, the running configuration stays: %s", err.msg);
		return;
	}
	int accounts = n->accounts && n->accounts->n;
	if ((n->ndkim || accounts) && !x->signers &&
	    !(x->signers = relay_workers_new(x->base, "sign",
	                                     n->sign_threads ? n->sign_threads : relay_workers_cores(),
	                                     &err))) {
		base_error("reload refused, the running configuration stays: %s", err.msg);
		return;
	}
	if (accounts && relay_server_accounts_on(x, &err) < 0) {
		base_error("reload refused, the running configuration stays: %s", err.msg);
		return;
	}
	if (!same_str(n->listen, x->live.listen) || !same_str(n->spool, x->live.spool) ||
	    !same_str(n->log, x->live.log) || !same_str(n->csv, x->live.csv) ||
	    !same_str(n->resolver, x->live.resolver) || n->nroutes != x->live.nroutes ||
	    !same_str(n->tls_cert, x->live.tls_cert) || !same_str(n->user, x->live.user))
		base_warn("reload: listen, spool, log, resolver, routes, TLS and the user change only "
		          "with a restart");
	x->live.accounts = n->accounts;
	x->live.dkim = n->dkim;
	x->live.ndkim = n->ndkim;
	x->live.trusted = n->trusted;
	x->live.ntrusted = n->ntrusted;
	x->live.rules = n->rules;
	relay_server_accounts_changed(x);
	base_info("reloaded: %zu accounts, %zu DKIM keys, %zu trusted networks",
	          n->accounts ? n->accounts->n : 0, n->ndkim, n->ntrusted);
}

static void on_hup(evutil_socket_t fd, short what, void *arg)
{
	struct relay_ctx *x = arg;
	if (!x->cfg->reload) {
		base_warn("SIGHUP: this relay has no configuration to read again");
		return;
	}
	reload(x);
}

/* Gives the spool directory and everything in it to the user the relay
 * becomes, so that it can go on creating segments, counters and state
 * files once it is no longer root. */
static int spool_give(const char *dir, uid_t uid, gid_t gid, struct base_err *err)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	if (!d) {
		if (fd >= 0) close(fd);
		return base_errf(err, "spool %s: %s", dir, strerror(errno));
	}
	int rc = fchown(fd, uid, gid) < 0 ? base_errf(err, "chown %s: %s", dir, strerror(errno)) : 0;
	struct dirent *e;
	while (rc == 0 && (e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
		if (fchownat(fd, e->d_name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
			rc = base_errf(err, "chown %s/%s: %s", dir, e->d_name, strerror(errno));
	}
	closedir(d);
	return rc;
}

/* After binding: the spool to the user, then root given up for good. */
static int drop_root(const struct relay_config *c, struct base_err *err)
{
	if (geteuid() != 0) {
		if (c->user) base_info("not root: --user %s not needed", c->user);
		return 0;
	}
	const char *user = c->user ? c->user : base_default_user();
	uid_t uid;
	gid_t gid;
	if (base_user_lookup(user, &uid, &gid, err) < 0) return -1;
	if (spool_give(c->spool, uid, gid, err) < 0) return -1;
	if (base_drop_privileges(user, err) < 0) return -1;
	if (access(c->spool, R_OK | W_OK | X_OK) < 0)
		return base_errf(err,
		                 "spool %s: not usable as %s (%s): its parent directories must let "
		                 "that user through",
		                 c->spool, user, strerror(errno));
	base_info("running as %s", user);
	return 0;
}

int relay_run(const struct relay_config *c, struct base_err *err)
{
	struct relay_ctx x;
	memset(&x, 0, sizeof x);
	x.live = *c;
	x.cfg = &x.live;
	x.pid = (unsigned)getpid();
	x.verify = getenv("MAILREP_QUEUE_VERIFY") && *getenv("MAILREP_QUEUE_VERIFY");
	signal(SIGPIPE, SIG_IGN);
	srandom((unsigned)base_mono_ns());
	if (c->hostname)
		snprintf(x.hostname, sizeof x.hostname, "%s", c->hostname);
	else if (gethostname(x.hostname, sizeof x.hostname - 1) < 0)
		strcpy(x.hostname, "localhost");
	if (c->log && !(x.log = fopen(c->log, "a")))
		return base_errf(err, "%s: %s", c->log, strerror(errno));
	if (c->csv) {
		if (!(x.csv = fopen(c->csv, "a"))) {
			if (x.log) fclose(x.log);
			return base_errf(err, "%s: %s", c->csv, strerror(errno));
		}
		if (fseek(x.csv, 0, SEEK_END) == 0 && ftell(x.csv) == 0) fputs(csv_header, x.csv);
	}
	if (relay_spool_open(&x.spool, c->spool, recovered, &x, err) < 0) {
		if (x.log) fclose(x.log);
		if (x.csv) fclose(x.csv);
		return -1;
	}
	base_info("spool %s: %zu messages recovered", c->spool, x.nmsgs);
	x.base = event_base_new();
	x.max_out = out_limit(c);
	relay_shape_load(&x); /* throttles and back-offs still in force */
	x.tick = evtimer_new(x.base, on_tick, &x);
	x.commit_ev = evtimer_new(x.base, on_commit, &x);
	struct event *periodic = event_new(x.base, -1, EV_PERSIST, on_periodic, &x);
	struct timeval sec = {1, 0};
	evtimer_add(periodic, &sec);
	struct event *sigterm = evsignal_new(x.base, SIGTERM, on_signal, x.base);
	struct event *sigint = evsignal_new(x.base, SIGINT, on_signal, x.base);
	struct event *sighup = evsignal_new(x.base, SIGHUP, on_hup, &x);
	evsignal_add(sigterm, NULL);
	evsignal_add(sigint, NULL);
	evsignal_add(sighup, NULL);
	/* bind (and read the TLS keys) as root, then give root up before any
	 * thread starts or any peer is talked to */
	int rc = relay_server_start(&x, err);
	if (rc == 0) rc = drop_root(c, err);
	if (rc == 0 && !(x.syncer = relay_workers_new(x.base, "commit", 1, err))) rc = -1;
	/* the same threads check AUTH passwords */
	if (rc == 0 && (c->ndkim || (c->accounts && c->accounts->n)) &&
	    !(x.signers = relay_workers_new(x.base, "sign", c->sign_threads ? c->sign_threads : relay_workers_cores(),
	                                  err)))
		rc = -1;
	if (rc == 0) rc = relay_mx_start(&x, c->resolver, err);
	if (rc == 0) rc = relay_tlsrpt_start(&x, err);
	if (rc == 0) rc = relay_control_start(&x, err);
	if (rc == 0) {
		relay_kick(&x);
		event_base_dispatch(x.base);
	}
	/* no work runs past this point; sessions it held are freed below */
	x.stopping = 1;
	relay_workers_free(x.signers);
	relay_workers_free(x.syncer);
	/* DSNs still owed (their message's jobs end without outcome below) */
	for (struct rmsg *m = x.msgs; m; m = m->next) relay_dsn_flush(&x, m);
	if (rc == 0) {
		/* whatever is written is made durable before leaving */
		struct base_err e2;
		if (relay_spool_commit(x.spool, &e2) < 0) base_error("%s", e2.msg);
		base_info("group commit: %llu messages acknowledged in %llu syncs",
		          (unsigned long long)x.synced, (unsigned long long)x.syncs);
	}
	relay_shape_stop(&x);
	relay_control_stop(&x);
	relay_server_stop(&x);
	relay_mta_shutdown(&x);
	relay_mx_stop(&x);
	relay_tlsrpt_stop(&x); /* after the last session's outcome: the counters are whole */
	event_free(sigterm);
	event_free(sigint);
	event_free(sighup);
	event_free(periodic);
	event_free(x.tick);
	event_free(x.commit_ev);
	/* the queue stays in the spool for the next start */
	while (x.msgs) msg_drop(&x, x.msgs);
	relay_heap_free(&x.heap);
	relay_tally_free(&x.tally);
	relay_index_free(&x.index);
	relay_order_free(&x.order);
	relay_dests_free(&x);
	free(x.waiting);
	while (x.names) {
		struct relay_name *n = x.names;
		x.names = n->next;
		free(n);
	}
	event_base_free(x.base);
	relay_spool_close(x.spool);
	if (x.log) fclose(x.log);
	if (x.csv) fclose(x.csv);
	return rc;
}
