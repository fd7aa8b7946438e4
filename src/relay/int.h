/*
 * int.h — what the relay's stages share inside the module (not included
 * from outside src/relay/): the in-memory queue of messages and
 * recipients, destinations with their connection counts and suspension,
 * delivery jobs, and the daemon context that ties reception (server.c),
 * the scheduler and accounting (relay.c) and delivery (mta.c) together.
 */
#ifndef MAILREP_RELAY_INT_H
#define MAILREP_RELAY_INT_H

#include <event2/event.h>

#include "relay/relay.h"
#include "relay/shape.h"

struct rrcpt {
	char *addr;
	uint32_t state; /* enum relay_rcpt_state */
	uint32_t attempts;
	int64_t next;   /* earliest next attempt */
	uint8_t busy;   /* in a job right now */
	uint8_t warned; /* its delayed-delivery DSN is sent or owed (dsn.c) */
	uint32_t cell;  /* its counters while PENDING (tally.c); RELAY_CELL_NONE: final */
};

/* A queued message. Invariant: `live` counts recipients still PENDING; the
 * message holds its spool segment while live > 0 and is freed at 0. */
struct rmsg {
	char id[RELAY_ID_MAX + 1];
	char *sender;
	char client[64]; /* source IP of the submitting client ("" if recovered) */
	/* From the spool record's attributes, interned (relay_intern); NULL:
	 * none. The account that submitted it, and the IP pool it goes out of. */
	const char *account, *pool;
	int64_t received;
	struct relay_loc loc;
	uint32_t nrcpt, live, busy;
	uint32_t oidx; /* position in the tally's heap by reception time (tally.c) */
	struct rrcpt *rcpt;
	struct rmsg *prev, *next;
	int64_t due;   /* scheduler: see sched.c */
	uint32_t hidx; /* position in the scheduler's heap, RELAY_HEAP_NONE: not in it */
	uint32_t midx; /* position in the tally's list of messages spanning cells */
	struct relay_dsn_item *owed; /* final failures awaiting the message's DSN (dsn.c) */
	struct relay_dsn_params *dsnp; /* RET, ENVID, NOTIFY, ORCPT (dsnparam.h); NULL: none */
	struct rmsg *inext; /* next in its chain of the index by id (qindex.c) */
	uint32_t opos;      /* its entry in the queue's order (qindex.c) */
	uint32_t npark;     /* holds it is parked on (control.c) */
	struct relay_park *park;
};

/* A message parked on an administrator's hold (control.c): the hold, and
 * the message's position in the hold's list. */
struct relay_hold;
struct relay_park {
	struct relay_hold *h;
	uint32_t pos;
};

/* sched.c: the messages by due time (a binary min-heap). */
#define RELAY_HEAP_NONE UINT32_MAX
struct relay_heap {
	struct rmsg **v;
	size_t n, cap;
};
void relay_heap_push(struct relay_heap *h, struct rmsg *m);
void relay_heap_remove(struct relay_heap *h, struct rmsg *m);
/* Sets m->due and moves m into place (pushing it when not in the heap). */
void relay_heap_update(struct relay_heap *h, struct rmsg *m, int64_t due);
struct rmsg *relay_heap_top(const struct relay_heap *h);
void relay_heap_free(struct relay_heap *h);
/* The earliest `next` of m's pending recipients not in a job (INT64_MAX: none). */
int64_t relay_msg_due(const struct rmsg *m);

/* qindex.c: the queued messages by id, and in the order they entered the
 * queue (numbered from 1), for paging a list (the invariants are at the
 * top of qindex.c). */
struct relay_index {
	struct rmsg **b; /* chain heads, through rmsg.inext */
	size_t nb, n;    /* buckets (a power of two), messages */
};
void relay_index_put(struct relay_index *t, struct rmsg *m);
void relay_index_del(struct relay_index *t, struct rmsg *m);
/* The queued message with this id; NULL: none. */
struct rmsg *relay_index_get(const struct relay_index *t, const char *id);
void relay_index_free(struct relay_index *t);
struct relay_order_ent {
	uint64_t seq;
	struct rmsg *m; /* NULL: it has left the queue */
};
struct relay_order {
	struct relay_order_ent *v; /* ascending seq */
	size_t n, cap, dead;       /* entries, allocated, holes */
	uint64_t seq;              /* the last number given */
};
void relay_order_add(struct relay_order *o, struct rmsg *m);
void relay_order_del(struct relay_order *o, struct rmsg *m);
/* The number of entries numbered below seq (the first at or above it). */
size_t relay_order_below(const struct relay_order *o, uint64_t seq);
void relay_order_free(struct relay_order *o);
int relay_qindex_check(const struct relay_index *t, const struct relay_order *o,
                       const struct rmsg *msgs, size_t nmsgs, struct base_err *err);

/* tally.c: the queue's counters by domain, pool and account, kept as
 * recipients come and go (the invariants are at the top of tally.c). */
#define RELAY_CELL_NONE UINT32_MAX
struct relay_cell {
	char *domain;               /* lower case, owned; NULL: a free slot */
	const char *pool, *account; /* interned; NULL: none */
	uint64_t msgs, rcpts, deferred;
	uint32_t chain; /* next in its bucket, or in the free list (index + 1; 0: end) */
};
struct relay_tally {
	struct relay_cell *cells;
	uint32_t ncells, cap, used; /* slots, allocated, in use */
	uint32_t *buckets;          /* chain heads (index + 1) */
	uint32_t nbuckets, free;
	uint64_t msgs, rcpts; /* live messages, pending recipients */
	struct rmsg **old;    /* live messages, a min-heap by reception time */
	size_t nold, capold;
	struct rmsg **multi; /* live messages whose pending recipients span cells */
	size_t nmulti, capmulti;
};
struct relay_ctx;
void relay_tally_msg_in(struct relay_ctx *x, struct rmsg *m);
void relay_tally_tried(struct relay_ctx *x, struct rmsg *m, uint32_t idx);
void relay_tally_rcpt_out(struct relay_ctx *x, struct rmsg *m, uint32_t idx);
void relay_tally_msg_out(struct relay_ctx *x, struct rmsg *m);
/* The reception time of the oldest live message: 1 with *oldest, 0: none. */
int relay_tally_oldest(const struct relay_tally *t, int64_t *oldest);
void relay_tally_free(struct relay_tally *t);
/* Checks every counter against the queue itself (MAILREP_QUEUE_VERIFY). */
int relay_tally_check(struct relay_ctx *x, struct base_err *err);

/* Recipients of one message going to one destination in one transaction. */
struct job {
	struct rmsg *m;
	uint32_t *idx;
	uint32_t n;
	struct job *next;
};

/* One source address towards one site, whatever the pool: the receiver
 * sees one address, so pools that share it share its open connections,
 * its rate buckets and its limits there. Invariant: users are every
 * pool's view of this address and site (a dest_src); lim is the lowest of their
 * lims (a source-scoped throttle rule put in one pool holds the address
 * in all), and the buckets are armed for lim's rates. */
struct src_site {
	char *host;
	uint16_t port;
	struct base_sockaddr addr;
	uint32_t active;
	struct relay_limits lim;
	struct relay_rate msgs, conns;
	struct src_user {
		struct dest *d;
		size_t si; /* d->src[si] */
	} *users;
	size_t nusers;
	struct src_site *next;
};

/* Per source address of a destination (one, unbound, without a pool).
 * Invariant: lim is the destination's lim lowered by the rules scoped to
 * this source (cut, until cut_until; throttle.c), and the rate buckets are
 * initialised for lim's rates. */
struct dest_src {
	uint32_t active; /* open connections from this source, in this pool */
	struct src_site *all; /* those of every pool (a pool's source); NULL: active alone */
	int64_t swrr;    /* smooth weighted round robin state */
	struct relay_rate msgs, conns;
	struct relay_limits lim; /* in force from this source */
	struct relay_limits cut; /* rules scoped to this source (cut.set: which) */
	int64_t cut_until;
	const char *cut_rule; /* the last that matched */
	/* every rule in force, a bit by its index in the config */
	unsigned char cut_rules[RELAY_THROTTLES_MAX / 8];
	/* a suspend rule scoped to this source, and which */
	int64_t suspended_until;
	const char *susp_rule;
};

#define DEST_ADDRS_MAX 16

/* A site's next hops in MX preference order (lookup.c): each address with
 * the host name it came from (the MX host, or a static route's host name;
 * NULL for an IP next hop), which the verify TLS policy checks the
 * certificate against, and its MX preference (mta.c shuffles hosts of
 * equal preference). */
struct relay_hops {
	struct base_sockaddr addrs[DEST_ADDRS_MAX];
	const char *names[DEST_ADDRS_MAX];
	uint32_t prefs[DEST_ADDRS_MAX];
	size_t n;
	/* What DANE says about each address's host (dane.h; borrowed); NULL:
	 * DANE does not apply. Only MX routes with --dane have any. */
	struct relay_dane *dane[DEST_ADDRS_MAX];
};

/* A site (a static route's next hop "host:port", or the set of MX hosts
 * some domains share: host is then their sorted names, comma-separated)
 * seen from one pool, with its limits. The scheduler queues jobs here;
 * mta.c opens connections from the pool's sources to the site's
 * addresses (pool.c, shape.c). */
struct dest {
	char *host;
	uint16_t port;
	const struct relay_pool *pool;              /* NULL: no pool, connections are not bound */
	struct base_sockaddr addrs[DEST_ADDRS_MAX]; /* in the order to try */
	size_t naddrs;
	char *names[DEST_ADDRS_MAX]; /* of addrs: relay_hops.names, owned (mta.c frees) */
	uint32_t prefs[DEST_ADDRS_MAX];
	struct relay_dane *dane[DEST_ADDRS_MAX]; /* of addrs: relay_hops.dane, references held */
	struct relay_limits lim;  /* in force: conf lowered by cut (throttle.c) */
	struct relay_limits conf; /* configured: the defaults and a [domain] override */
	struct relay_limits cut;  /* throttle rules' limits until cut_until (cut.set: which) */
	int64_t cut_until;
	const char *cut_rule; /* the last rule that matched (config-owned) */
	/* every rule in force, as in dest_src */
	unsigned char cut_rules[RELAY_THROTTLES_MAX / 8];
	struct dest_src *src; /* pool->nsrc of them, or one */
	size_t nsrc;
	struct dest_wake *wake; /* a rate limit's wait (mta.c) */
	uint32_t active;     /* open connections (connecting included) */
	uint32_t connecting; /* not yet asking for a job */
	int64_t suspended_until;
	/* the suspend rule that set suspended_until; NULL: a back-off */
	const char *susp_rule;
	struct job *head, *tail; /* waiting jobs */
	uint32_t njobs;
	int in_busy; /* on x->busy */
	struct conn *conns; /* its open connections (mta.c) */
	struct dest *next;
};

/* A unit of blocking work for a worker pool (work.c): run() on a worker
 * thread, then done() on the loop thread. Embedded in what it works for. */
struct relay_work {
	void (*run)(struct relay_work *w);
	void (*done)(struct relay_work *w);
	int ran; /* 0 when done() comes from relay_workers_free without a run */
	struct relay_work *next;
};
struct relay_workers;

struct session;
struct dest_wake;
struct dns_resolver;
struct mxroute;
struct conn;
struct evconnlistener;
struct relay_control;
struct relay_authc;
struct relay_mtasts;
struct relay_tlsrpt;
struct relay_dane;

struct relay_ctx {
	const struct relay_config *cfg; /* &live */
	struct relay_config live;       /* the settings in force: a reload replaces some */
	unsigned acct_gen;              /* reloads of the accounts */
	struct event_base *base;
	struct relay_spool *spool;
	FILE *log;
	FILE *csv;         /* PowerMTA-style accounting; NULL: none */
	struct rmsg *msgs; /* all live messages, newest first */
	size_t nmsgs;
	struct dest *dests;
	struct base_hmap dest_index; /* the dests by host, port and pool */
	struct src_site *src_sites;
	struct base_hmap src_index;  /* the src_sites by host, port and address */
	/* the dests that may have jobs (njobs > 0 when put; dropped by the
	 * pass that finds them without), so that a kick of the scheduler
	 * pumps those alone; every dest is pumped once a second */
	struct dest **busy;
	size_t nbusy, capbusy;
	int64_t full_pass; /* monotonic ns of the last pump of every dest */
	size_t busy_turn; /* where the next pass over busy starts (mod nbusy) */
	struct event *tick, *commit_ev;
	struct session **waiting; /* sessions whose message awaits the commit */
	size_t nwaiting, capwaiting;
	struct relay_workers *signers; /* DKIM signing, one thread per core */
	struct relay_workers *syncer;  /* the group commit's fdatasync, one thread */
	struct relay_work *sync_work;  /* the commit in flight; NULL: none */
	int commit_again;              /* a commit was asked for while one ran */
	uint32_t sessions;
	struct session *slist; /* inbound sessions */
	struct evconnlistener *listener;
	struct conn *clist; /* outbound connections */
	uint32_t nout;      /* of them (connecting included) */
	uint32_t max_out;   /* --max-outbound, within the open-file limit */
	int out_wait;       /* a destination waits for nout to fall below max_outbound */
	int stopping;
	struct dns_resolver *resolver; /* MX lookups; NULL without --resolver */
	struct event *dns_ev;
	struct base_hmap mx; /* struct mxroute by kind, port and name (lookup.c) */
	struct relay_dead *dead; /* addresses that refused or timed out (lookup.c) */
	uint64_t seq;
	unsigned pid;   /* for message ids; the relay does not fork */
	int acct_hold;  /* >0: accounting lines wait for relay_account_flush() */
	uint64_t syncs, synced; /* group commits, and messages they acknowledged */
	char hostname[256];
	struct relay_name *names; /* interned account, pool... names */
	/* Set by mta.c while it reports outcomes: the connection's source
	 * address and peer "addr:port", for the accounting log. */
	const char *acct_src, *acct_mx;
	struct relay_tls *tls;       /* TLS contexts (server.c sets them up) */
	struct relay_quota *quota;   /* per-account send counters */
	int acct_tls;                /* the event being accounted ran over TLS */
	struct relay_heap heap;      /* every live message not being scheduled, by due time */
	struct relay_control *ctl;   /* control.c; NULL: no control socket */
	const char *category;        /* set while an administrator's action is accounted */
	struct relay_authc *authc;   /* recent successful AUTH checks (account.h); NULL: none */
	struct relay_mtasts *mtasts; /* MTA-STS policies (mtasts.h); NULL: off */
	const char *acct_sts;        /* the attempt's MTA-STS outcome for accounting; NULL: none */
	int acct_dane;               /* the usage (2, 3) of the TLSA record that matched; 0: none */
	/* Set by mta.c while a reply of one of its connections is handled:
	 * the index + 1 of the connection's source in its dest (0: none), so
	 * that a throttle rule can apply to that source alone. */
	uint32_t acct_si;
	struct relay_shapestate *shst; /* shapestate.c: SPOOL/shaping; NULL: not kept */
	struct relay_tally tally;    /* the queue's counters (tally.c) */
	/* MAILREP_QUEUE_VERIFY set: the counters are checked against the queue
	 * at every tick, and every summary is made both ways and compared */
	int verify;
	struct relay_tlsrpt *tlsrpt; /* TLS reporting (tlsrpt.c); NULL: off */
	struct relay_index index;    /* the live messages by id (qindex.c) */
	struct relay_order order;    /* and in the order they entered (qindex.c) */
};

/* A name kept once for the daemon's life (accounts and pools are few). */
struct relay_name {
	struct relay_name *next;
	char s[];
};

/* relay.c */
void relay_id_new(struct relay_ctx *x, char *out);
/* attrs: the message's spool attributes (account=, pool=), "" for none. */
struct rmsg *relay_queue_add(struct relay_ctx *x, const char *id, const char *sender,
                             const char *attrs, const char *client, int64_t received,
                             const struct relay_loc *loc, const char *const *rcpts,
                             uint32_t nrcpt);
/* Writes one CSV field (RFC 4180 quoting, CR/LF as spaces) and a comma,
 * or a newline when last. */
void relay_csv_field(FILE *f, const char *s, int last);
/* The interned copy of s (NULL for NULL or ""). */
const char *relay_intern(struct relay_ctx *x, const char *s);
void relay_kick(struct relay_ctx *x);
void relay_commit_soon(struct relay_ctx *x);
/* DKIM-signs msg with the key of its From domain among keys, or keys[0]. */
int relay_sign(const struct relay_dkim *keys, size_t nkeys, struct base_buf *msg,
               struct base_err *err);
/* Accounting: one JSON line. rcpt may be NULL for message events. */
void relay_account(struct relay_ctx *x, const char *event, const struct rmsg *m,
                   const struct rrcpt *r, const struct dest *d, int code, const char *reply);
/* Writes the lines held back while acct_hold > 0. */
void relay_account_flush(struct relay_ctx *x);
/* The outcome of one recipient's attempt (code 0: connection-level failure). */
void relay_outcome(struct relay_ctx *x, struct dest *d, struct rmsg *m, uint32_t idx, int code,
                   const char *reply);
void relay_suspend(struct relay_ctx *x, struct dest *d, const char *why);
/* Holds d until `until` (a throttle rule's suspend; relay_suspend's). */
void relay_suspend_until(struct relay_ctx *x, struct dest *d, int64_t until, const char *why);
/* Gives d's waiting jobs back to the queue, no attempt counted, their
 * recipients not tried before `until`. */
void relay_jobs_back(struct relay_ctx *x, struct dest *d, int64_t until);
/* Frees every destination, its waiting jobs and the shared source counts
 * (at the end: no connection is open). */
void relay_dests_free(struct relay_ctx *x);
/* The shared view of a source (relay.c): what holds for the address of
 * ds towards its site in every pool, or ds's own when no pool shares it. */
void relay_src_site_limits(struct src_site *ss);
uint32_t relay_src_conn_limit(const struct dest_src *ds);
struct relay_rate *relay_src_msgs(struct dest_src *ds);
struct relay_rate *relay_src_conns(struct dest_src *ds);
int64_t relay_src_suspended_until(const struct dest_src *ds);
/* How many other pools have mail waiting for a connection from the
 * address of d->src[si] to its site. */
uint32_t relay_src_wanted(const struct dest *d, size_t si);
/* The destination for site host:port seen from pool, created (with the
 * configured limits and no address yet) when new. */
struct dest *relay_dest_new(struct relay_ctx *x, const char *host, uint16_t port,
                            const struct relay_pool *pool);
/* The enhanced status code at the start of a reply's text ("5.1.1"), or "". */
void relay_enhanced(const char *reply, char *out, size_t n);
/* throttle.c: applies the first [throttle] rule matching a reply of d's
 * (returns 1) to d, or with scope source to the source x->acct_si names;
 * relay_dest_limits recomputes d->lim from d->conf and the rules in force,
 * and each source's lim from d->lim and its own. relay_throttle_find: the
 * rule named name (NULL: none); relay_throttle_put puts rule t in force on
 * d (s NULL) or on its source s until `until`, as a matching reply would,
 * without logging (shapestate.c restores with it). */
int relay_throttle_reply(struct relay_ctx *x, struct dest *d, int code, const char *reply);
void relay_dest_limits(struct relay_ctx *x, struct dest *d);
const struct relay_throttle *relay_throttle_find(const struct relay_config *c, const char *name);
void relay_throttle_put(struct relay_ctx *x, struct dest *d, struct dest_src *s,
                        const struct relay_throttle *t, int64_t until);
/* The name of rule index i of the config (for cut_rules bits). */
const char *relay_throttle_name(const struct relay_config *c, size_t i);

/* shapestate.c: the shaping state that outlives a restart (SPOOL/shaping,
 * see shapestate.h). relay_shape_load restores it at start;
 * relay_shape_changed marks it changed (urgent: a new hold or limit,
 * written at once; otherwise an end moved later, written within
 * RELAY_SHAPE_LAZY seconds); relay_shape_stop writes what is pending and
 * frees it. */
void relay_shape_load(struct relay_ctx *x);
void relay_shape_changed(struct relay_ctx *x, int urgent);
void relay_shape_stop(struct relay_ctx *x);
struct job *relay_job_take(struct dest *d);
void relay_job_free(struct relay_ctx *x, struct job *j);

/* Admin actions (control.c): relay_resched puts a message back in the
 * heap at its due time (or frees it when finished); relay_site names the
 * site of a recipient ("host:port", NULL while unknown); relay_admin_bounce
 * bounces one pending recipient with a DSN. */
void relay_resched(struct relay_ctx *x, struct rmsg *m);
const char *relay_site(struct relay_ctx *x, const struct rmsg *m, const char *addr, char *buf,
                       size_t n);
/* The same for a domain in mail of a pool (NULL: none); id names a message
 * in a warning (NULL: none). The site depends on nothing else of a recipient. */
const char *relay_site_domain(struct relay_ctx *x, const char *pool, const char *domain,
                              const char *id, char *buf, size_t n);
void relay_admin_bounce(struct relay_ctx *x, struct rmsg *m, uint32_t idx, const char *reply);

/* control.c: the control socket SPOOL/control and administrators' holds.
 * relay_control_held: 0 if the recipient may be tried now, else until when
 * it is held (INT64_MAX: until resumed), with *by (when by is not NULL)
 * the hold that holds it the longest. The scheduler parks a message it
 * found held on that hold (relay_control_park), so that ending the hold
 * reaches the messages it held and no other; relay_control_unpark takes a
 * message off every hold's list (when the scheduler looks at it again, and
 * when it leaves the queue); relay_control_check verifies the lists
 * (MAILREP_QUEUE_VERIFY). */
int relay_control_start(struct relay_ctx *x, struct base_err *err);
void relay_control_stop(struct relay_ctx *x);
int64_t relay_control_held(struct relay_ctx *x, const struct rmsg *m, const char *addr,
                           const struct dest *d, int64_t now, struct relay_hold **by);
void relay_control_park(struct rmsg *m, struct relay_hold *h);
void relay_control_unpark(struct rmsg *m);
int relay_control_check(struct relay_ctx *x, struct base_err *err);

/* dsn.c: one DSN per message. relay_dsn_owe makes recipient idx final
 * (state BOUNCED or EXPIRED) in memory and keeps its failure for the DSN
 * (null sender: final in the spool at once, no DSN); relay_dsn_flush
 * writes the DSN listing every failure kept, then their final states;
 * relay_dsn_discard forgets them (shutdown: they stay pending on disk). */
void relay_dsn_owe(struct relay_ctx *x, struct rmsg *m, uint32_t idx, uint32_t state,
                   const struct dest *d, const char *reply);
void relay_dsn_flush(struct relay_ctx *x, struct rmsg *m);
void relay_dsn_discard(struct rmsg *m);
/* The DSN parameters (RFC 3461): relay_dsn_attach gives m its parameters
 * (dsn: relay_dsn_encode's form, NULL: none) and its recipients' spool
 * flags (NULL: none); relay_dsn_delivered owes a `relayed` notice when the
 * recipient asked for SUCCESS and the next hop (peer_dsn 0) cannot carry
 * the request on; relay_dsn_deferred owes a `delayed` notice once a
 * recipient has been deferred for --delay-warning; relay_dsn_mail_params
 * and relay_dsn_rcpt_params append the parameters to pass on to a next
 * hop that offers DSN. */
void relay_dsn_attach(struct relay_ctx *x, struct rmsg *m, const char *dsn, size_t len,
                      const uint32_t *rflags);
void relay_dsn_delivered(struct relay_ctx *x, struct rmsg *m, uint32_t idx, const struct dest *d,
                         const char *reply, int peer_dsn);
void relay_dsn_deferred(struct relay_ctx *x, struct rmsg *m, uint32_t idx, const struct dest *d,
                        const char *reply);
void relay_dsn_mail_params(const struct rmsg *m, struct base_buf *b);
void relay_dsn_rcpt_params(const struct rmsg *m, uint32_t idx, struct base_buf *b);

/* work.c */
/* name: the threads' name ("mailrep-" NAME, as top -H and /proc show it; at most 7 bytes). */
struct relay_workers *relay_workers_new(struct event_base *base, const char *name, unsigned nthreads,
                                        struct base_err *err);
void relay_workers_submit(struct relay_workers *p, struct relay_work *w);
/* Joins the threads, then calls done() for every piece of work not yet done. */
void relay_workers_free(struct relay_workers *p);
unsigned relay_workers_cores(void);

/* server.c */
int relay_server_start(struct relay_ctx *x, struct base_err *err);
void relay_server_queued(struct relay_ctx *x, struct session *s);
int relay_server_accounts_on(struct relay_ctx *x, struct base_err *err);
void relay_server_accounts_changed(struct relay_ctx *x);
void relay_server_committed(struct relay_ctx *x, struct session *s, int ok, const char *why);
void relay_server_stop(struct relay_ctx *x);

/* lookup.c */
int relay_mx_start(struct relay_ctx *x, const char *server, struct base_err *err);
void relay_mx_stop(struct relay_ctx *x);
/* The site of a domain without a static route: 1 with *site (the sorted
 * MX host names) and its next hops in preference order (port 0), 0 while
 * the lookup runs, -1 with a final or transient failure in code and
 * reply. */
int relay_mx_route(struct relay_ctx *x, const char *domain, const char **site,
                   const struct relay_hops **hops, int *code, const char **reply);
/* The addresses (A and AAAA, cached by TTL) of a static route's host name:
 * as relay_mx_route, every hop named host; with --dane, the TLSA records
 * at _PORT._tcp.HOST when its addresses are secure. */
int relay_host_route(struct relay_ctx *x, const char *host, uint16_t port,
                     const struct relay_hops **hops, int *code, const char **reply);
/* Memory of dead addresses (address and port): one that refused the
 * connection or timed out is skipped by new connections for
 * RELAY_DEAD_SECONDS, unless every address of the site is dead. */
#define RELAY_DEAD_SECONDS 60 /* the default of --dead-time */
void relay_addr_dead(struct relay_ctx *x, const struct base_sockaddr *a);
int relay_addr_is_dead(struct relay_ctx *x, const struct base_sockaddr *a);
/* An address where TLS failed (a failed handshake, or no STARTTLS, under a
 * policy that needs TLS): for --dead-time, connections that need TLS skip
 * it while the site has another address. */
void relay_addr_tls_failed(struct relay_ctx *x, const struct base_sockaddr *a);
int relay_addr_tls_bad(struct relay_ctx *x, const struct base_sockaddr *a);
/* Whether DANE applies to any of h's hosts (then MTA-STS does not). */
int relay_hops_dane(const struct relay_hops *h);
/* Polls the resolver soon (after submitting a query from outside lookup.c). */
void relay_lookup_arm(struct relay_ctx *x);

/* tls.c: the STARTTLS policy for a recipient domain */
enum relay_tls_mode relay_tls_mode_for(const struct relay_config *c, const char *domain);

/* txtfield.c: one field of a DNS TXT policy record (MTA-STS's `_mta-sts`,
 * TLS reporting's `_smtp._tls`) after its version: the name and the value,
 * neither NUL-terminated, and their byte offsets in the record. */
struct relay_txt_field {
	const char *name, *value;
	size_t nlen, vlen;
	size_t off, voff;
};
#define RELAY_TXT_WSP_EQ 1 /* white space allowed around '=' (MTA-STS) */
/* The next field of the record txt from byte *pos (just past the version,
 * then where the previous call left it): 1 with *f and *pos moved on, 0 at
 * the end (a trailing ';' allowed), -1 with err naming the byte offset. The
 * value runs to the next ';' or the end, without trailing white space, and
 * is not empty; what it may hold is the caller's to check. */
int relay_txt_next(const char *txt, size_t len, size_t *pos, int flags, struct relay_txt_field *f,
                   struct base_err *err);
/* 0 when f's value is an extension value, 1*(%x21-3A / %x3C / %x3E-7E);
 * else -1 with err naming the offset of the first byte that is not. */
int relay_txt_ext_value(const struct relay_txt_field *f, struct base_err *err);
/* Whether f's name is name (case-sensitive). */
int relay_txt_name_is(const struct relay_txt_field *f, const char *name);

/* tlsrpt.c: TLS reporting (RFC 8460). relay_tlsrpt_note counts one
 * session to domain's MX host mx (receiving IP rip, from sending IP sip;
 * any may be NULL): result 0 for a successful TLS session, else an enum
 * tlsrpt_result; dn: DANE for the host (NULL: it does not apply), which
 * makes the policy tlsa, else the domain's MTA-STS policy, else none. */
int relay_tlsrpt_start(struct relay_ctx *x, struct base_err *err);
void relay_tlsrpt_stop(struct relay_ctx *x);
void relay_tlsrpt_note(struct relay_ctx *x, const char *domain, const struct relay_dane *dn,
                       int result, const char *sip, const char *rip, const char *mx);

/* mta.c */
void relay_mta_pump(struct relay_ctx *x, struct dest *d);
/* Closes every delivery connection, dropping their jobs without outcome. */
void relay_mta_shutdown(struct relay_ctx *x);
/* Frees what mta.c keeps in a destination (its timer). */
void relay_mta_dest_free(struct dest *d);

#endif
