/*
 * relay — the outbound relay: reception (SMTP server) → spool (durable,
 * group-committed) → scheduler (retries, per-destination limits,
 * suspension) → mta (SMTP client). The cut follows OpenSMTPD's stages.
 *
 * This header is the module's public face: the spool's record format (so
 * that the unit tests and the fuzzer can reach its parser), the retry
 * schedule, and the daemon's configuration and entry point.
 */
#ifndef MAILREP_RELAY_H
#define MAILREP_RELAY_H

#include <regex.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "base/base.h"

/* ---- spool records ------------------------------------------------------
 *
 * A spool is a directory of append-only segment files "seg-NNNNNNNN". Each
 * holds records:
 *
 *   offset 0  "MRS1"            magic
 *          4  type              'N' message, 'S' recipient state, 'P' DSN
 *                               parameters ('M': a message without
 *                               attributes, as written before attributes
 *                               existed; still read)
 *          5  3 zero bytes
 *          8  u32 LE            payload length (<= RELAY_RECORD_MAX)
 *         12  u32 LE            CRC-32 of bytes 4..11 and of the payload
 *         16  payload
 *
 * 'N' payload: id NUL sender NUL received NUL attrs NUL nrcpt NUL rcpt_1 NUL
 *              ... rcpt_n NUL, then the message (CRLF lines, DKIM-Signature
 *              first). attrs: "key=value" words separated by single spaces,
 *              printable ASCII, at most RELAY_ATTRS_MAX bytes ("account=acme
 *              pool=bulk"); may be empty.
 * 'M' payload: the same without attrs.
 * 'S' payload: id NUL rcpt-index NUL state NUL attempts NUL next-attempt NUL
 *              [flags NUL] (decimal numbers; state is one of enum
 *              relay_rcpt_state; flags RELAY_RCPT_F_*, absent: 0; a flag,
 *              once written, stays set whatever later records say).
 * 'P' payload: id NUL, then the message's DSN parameters in the form of
 *              relay_dsn_encode (dsnparam.h). Written right behind its
 *              'N' record, in the same write; only for messages that had
 *              DSN parameters.
 */
#define RELAY_RECORD_HDR 16
#define RELAY_RECORD_MAX (64u << 20)
#define RELAY_ID_MAX     32
#define RELAY_RCPT_MAX   1000
#define RELAY_ATTRS_MAX  1024

enum relay_rcpt_state {
	RELAY_RCPT_PENDING = 0, /* to be (re)tried at `next` */
	RELAY_RCPT_DELIVERED = 1,
	RELAY_RCPT_BOUNCED = 2,
	RELAY_RCPT_EXPIRED = 3,
};
/* Recipient flags ('S' records). */
#define RELAY_RCPT_F_WARNED 1u /* its delayed-delivery DSN was sent */

struct relay_record {
	char type; /* 'M' (a message, whether written as 'M' or 'N') or 'S' */
	char id[RELAY_ID_MAX + 1];
	/* 'M' */
	const char *sender; /* into the payload; NUL-terminated */
	const char *attrs;  /* into the payload ("" for an 'M' record) */
	int64_t received;
	uint32_t nrcpt;
	const char *rcpts; /* nrcpt NUL-terminated strings one after another */
	size_t body_off;   /* offset of the message within the payload */
	size_t body_len;
	/* 'S' */
	uint32_t rcpt_index;
	uint32_t state;
	uint32_t attempts;
	int64_t next;
	uint32_t flags;
	/* 'P': the parameters (into the payload). A recovered message ('M'
	 * given to relay_recover_cb): its 'P' record's, NULL if none, and its
	 * recipients' flags (NULL: none set). */
	const char *dsn;
	size_t dsn_len;
	const uint32_t *rflags;
};

/* Parses one record at the start of buf. Returns its total size (> 0), 0
 * if buf holds only part of a record (a torn tail), or -1 with err (bad
 * magic, bad checksum, bad payload) giving the byte offset in the record. */
int relay_record_parse(const uint8_t *buf, size_t len, struct relay_record *r,
                       struct base_err *err);
/* Appends an encoded message ('N') record to out; attrs as above. */
void relay_record_msg(struct base_buf *out, const char *id, const char *sender, const char *attrs,
                      int64_t received, const char *const *rcpts, uint32_t nrcpt,
                      const char *body, size_t body_len);
/* Whether attrs (as above) are well formed: key=value words, single
 * spaces, printable ASCII, bounded. */
int relay_attrs_valid(const char *attrs);
/* The value of `key` in attrs, copied to out (n bytes): 1 if present, 0
 * if not (out is then ""). */
int relay_attr_get(const char *attrs, const char *key, char *out, size_t n);
/* Appends an encoded 'S' record to out. */
void relay_record_state(struct base_buf *out, const char *id, uint32_t rcpt_index, uint32_t state,
                        uint32_t attempts, int64_t next);
/* The same with flags (RELAY_RCPT_F_*). */
void relay_record_state_flags(struct base_buf *out, const char *id, uint32_t rcpt_index,
                              uint32_t state, uint32_t attempts, int64_t next, uint32_t flags);
/* Appends an encoded 'P' record (dsn: relay_dsn_encode's form). */
void relay_record_params(struct base_buf *out, const char *id, const char *dsn, size_t len);

/* ---- the spool ------------------------------------------------------------ */

struct relay_spool;

struct relay_loc {
	uint32_t seg;
	uint64_t off; /* of the message (body) in the segment */
	uint32_t len;
};

/* Called for each message recovered at open, with the state records that
 * followed it already folded in (states[i], attempts[i], next[i]). */
typedef void (*relay_recover_cb)(void *arg, const struct relay_record *m,
                                 const struct relay_loc *loc, const uint32_t *states,
                                 const uint32_t *attempts, const int64_t *next);

int relay_spool_open(struct relay_spool **out, const char *dir, relay_recover_cb cb, void *arg,
                     struct base_err *err);
void relay_spool_close(struct relay_spool *sp);
/* Reads a spool without changing it (a running relay may own it): cb for
 * each message with a pending recipient. A record being written shows as
 * a torn tail and is skipped. */
int relay_spool_scan(const char *dir, relay_recover_cb cb, void *arg, struct base_err *err);
/* Writes (without syncing) a message record; on failure (ENOSPC...) the
 * segment is cut back so nothing partial remains. */
int relay_spool_add(struct relay_spool *sp, const char *id, const char *sender, const char *attrs,
                    int64_t received,
                    const char *const *rcpts, uint32_t nrcpt, const char *body, size_t body_len,
                    struct relay_loc *loc, struct base_err *err);
/* The same with the message's DSN parameters (relay_dsn_encode's form;
 * NULL: none) in a 'P' record behind it, in the same write. */
int relay_spool_add_dsn(struct relay_spool *sp, const char *id, const char *sender,
                        const char *attrs, int64_t received, const char *const *rcpts,
                        uint32_t nrcpt, const char *body, size_t body_len, const char *dsn,
                        size_t dsn_len, struct relay_loc *loc, struct base_err *err);
/* Writes (without syncing) a recipient state record. */
/* While pinned (calls nest), the spool does not rotate to a new segment,
 * so the records written meanwhile share one segment and a crash can only
 * lose a suffix of them: recovery cuts a segment at its first unreadable
 * record. */
void relay_spool_pin(struct relay_spool *sp, int on);
int relay_spool_state(struct relay_spool *sp, const char *id, uint32_t rcpt_index, uint32_t state,
                      uint32_t attempts, int64_t next, struct base_err *err);
int relay_spool_state_flags(struct relay_spool *sp, const char *id, uint32_t rcpt_index,
                            uint32_t state, uint32_t attempts, int64_t next, uint32_t flags,
                            struct base_err *err);
/* Makes everything written so far durable: one fdatasync per segment
 * written since the last commit (normally one), plus the directory when a
 * segment was created. */
int relay_spool_commit(struct relay_spool *sp, struct base_err *err);
/* The same commit in three steps, so the sync can run on another thread
 * while the loop goes on writing: _begin (owner's thread) notes what the
 * sync must cover — every segment written since its last sync, as far as
 * it is written now, and the directory if a segment was created; _run (any
 * thread) syncs that; _end (owner's thread) records the result and frees
 * c. Records written after _begin are not covered. One commit at a time. */
struct relay_spool_sync;
struct relay_spool_sync *relay_spool_commit_begin(struct relay_spool *sp);
int relay_spool_commit_run(struct relay_spool_sync *c);
int relay_spool_commit_end(struct relay_spool_sync *c, struct base_err *err);
/* How many segment files commit c syncs (the directory not counted). */
size_t relay_spool_sync_files(const struct relay_spool_sync *c);
/* Reads a message body back. */
int relay_spool_read(struct relay_spool *sp, const struct relay_loc *loc, struct base_buf *out,
                     struct base_err *err);
/* Tells the spool a message of segment seg is finished; segments are
 * removed oldest first once no message in them or before them is live. */
void relay_spool_release(struct relay_spool *sp, uint32_t seg);
/* Counts one more live message in seg (done by open and add themselves). */
void relay_spool_hold(struct relay_spool *sp, uint32_t seg);

/* ---- retries ------------------------------------------------------------- */

/* A retry schedule: delays (seconds) after attempts 1, 2, ...; the last one
 * repeats. Jitter adds up to 1/8 of the delay (none when the delay < 8 s). */
#define RELAY_SCHEDULE_MAX 16
struct relay_schedule {
	uint32_t delay[RELAY_SCHEDULE_MAX];
	unsigned n;
	uint32_t max_age;
};
/* The default: 10m, 30m, 1h, 2h, 4h, 4h, ...; max age 5 days. */
void relay_schedule_default(struct relay_schedule *s);
/* Parses "10m,30m,1h" (durations in base units). */
int relay_schedule_parse(struct relay_schedule *s, const char *text, struct base_err *err);
/* When to try again after `attempts` failed attempts at `now`; rnd is any
 * random 32-bit value (for jitter). */
int64_t relay_schedule_next(const struct relay_schedule *s, uint32_t attempts, int64_t now,
                            uint32_t rnd);

/* ---- address policy ------------------------------------------------------- */

/* Whether a forward path is a plain local@domain that can be relayed
 * without a second routing step: one '@', no '%', '!', quotes, source
 * route or trailing dot. Returns 0 or -1 with err. */
int relay_check_rcpt(const char *path, struct base_err *err);

/* ---- bounce classification ----------------------------------------------- */

/* Ordered rules "category regex" (see rules.c for the file format). */
struct relay_rules;
extern const char relay_rules_default[];
/* Parses rules from text and appends them to *r (allocated when NULL);
 * errors name origin:line. */
int relay_rules_add(struct relay_rules **r, const char *text, size_t len, const char *origin,
                    struct base_err *err);
void relay_rules_free(struct relay_rules *r);
/* Compiles an operator's pattern (POSIX ERE, case-insensitive, no
 * interval expressions, bounded repetition: see rules.c); errors begin
 * with `where`. */
int relay_regex_compile(regex_t *re, const char *p, size_t n, const char *where,
                        struct base_err *err);
/* The subject operators' patterns see: "CODE ENHANCED TEXT" ("-" for no
 * enhanced code), as the bounce and throttle rules match it. */
void relay_reply_subject(int code, const char *enhanced, const char *text, char *out, size_t n);
/* The category of a reply: bad-mailbox, bad-domain, inactive-mailbox,
 * quota, spam-related, policy-related, bad-connection, protocol, expired
 * or other. code 0 stands for a connection-level failure. */
const char *relay_classify(const struct relay_rules *r, int code, const char *enhanced,
                           const char *text);

/* ---- the daemon ------------------------------------------------------------ */

struct relay_route {
	char *domain; /* "*" for every domain */
	char *host;   /* an IP address ("[v6]" for IPv6), or a host name when `name` */
	uint16_t port;
	int name; /* host is a name, resolved (A and AAAA) through --resolver */
};

/* A route's next hop given as NAME[:PORT] (port 25 when absent): 1 with the
 * name in lower case (letters, digits, hyphens, dots; at most 253 bytes,
 * labels of 1 to 63, a last label that is not all digits) and the port, 0
 * when hp is not that. name has room for n bytes. */
int relay_route_host_parse(const char *hp, char *name, size_t n, uint16_t *port);

struct auth_dkim_key;
struct relay_dkim {
	char *domain, *selector;
	struct auth_dkim_key *key;
};

/* ---- IP pools and shaping (pool.c) -----------------------------------------
 *
 * A pool is a named set of source addresses, each with its EHLO name and a
 * weight; a new delivery connection binds one of them, chosen by smooth
 * weighted round robin. Limits apply per site (the MX host set a domain's
 * mail goes to, or a static route's next hop) and per source address. */

#define RELAY_POOL_SOURCES_MAX 64
#define RELAY_POOLS_MAX        256
#define RELAY_DOMAINS_MAX      4096
#define RELAY_THROTTLES_MAX    256

struct relay_source {
	struct base_sockaddr addr; /* port 0 */
	char ip[48];               /* the address as text */
	char ehlo[256];            /* "": the relay's host name */
	uint32_t weight;           /* 1..1000 */
};

struct relay_pool {
	char *name;
	struct relay_source *src;
	size_t nsrc;
};

/* Shaping limits; for a [domain NAME] override, `set` says which were given. */
struct relay_limits {
	uint32_t conn_limit;    /* simultaneous connections per site and source address */
	uint32_t msgs_per_conn; /* 0: no limit */
	uint32_t msgs_per_sec;  /* per site and source address; 0: unlimited */
	uint32_t conns_per_min; /* new connections, per site and source address; 0: unlimited */
	unsigned set;           /* RELAY_LIM_* bits */
};
enum { RELAY_LIM_CONN = 1, RELAY_LIM_MPC = 2, RELAY_LIM_MPS = 4, RELAY_LIM_CPM = 8 };

/* A [domain NAME] section: shaping limits, and MTA-STS for the domain. */
struct relay_domain_limits {
	char *domain; /* lower case */
	struct relay_limits lim;
	int mta_sts; /* mta-sts = on: 1, off: -1; 0: as the [relay] setting */
};

struct relay_config;
/* "IP [ehlo=NAME] [weight=N]" (a [pool NAME] section's `source` value). */
int relay_source_parse(struct relay_source *s, const char *spec, struct base_err *err);
/* Adds a source to the named pool (created when new). */
int relay_pool_add(struct relay_config *c, const char *pool, const char *spec,
                   struct base_err *err);
/* The flag form "NAME=IP[/EHLO][*WEIGHT],IP[/EHLO][*WEIGHT],...". */
int relay_pool_flag(struct relay_config *c, const char *spec, struct base_err *err);
/* Sets a [domain NAME] key (conn-limit, msgs-per-conn, msgs-per-sec,
 * conns-per-min, mta-sts). */
int relay_domain_set(struct relay_config *c, const char *domain, const char *key, const char *value,
                     struct base_err *err);
/* The [relay] keys for pools and shaping (pool, default-pool, msgs-per-sec,
 * conns-per-min): 0 done, -1 error, 1 not one of them. */
int relay_shaping_set(struct relay_config *c, const char *key, const char *value,
                      struct base_err *err);
/* Reads the [pool NAME] and [domain NAME] sections of an INI file. */
int relay_config_sections(struct relay_config *c, const char *path, struct base_err *err);
/* Checks what spans settings (default-pool names a pool). */
int relay_shaping_check(const struct relay_config *c, struct base_err *err);
const struct relay_pool *relay_pool_find(const struct relay_config *c, const char *name);
const struct relay_domain_limits *relay_domain_find(const struct relay_config *c,
                                                    const char *domain);
/* Frees the pools only (a --pool flag replaces the file's pools). */
void relay_pools_clear(struct relay_config *c);
/* Frees pools, default pool, domain overrides and throttle rules. */
void relay_shaping_free(struct relay_config *c);
/* A [throttle NAME] key (match, action, duration; see throttle.c). */
struct relay_throttle;
int relay_throttle_set(struct relay_config *c, const char *name, const char *key,
                       const char *value, struct base_err *err);
/* Checks that every throttle rule is complete. */
int relay_throttles_check(const struct relay_config *c, struct base_err *err);
void relay_throttles_free(struct relay_config *c);
/* STARTTLS at delivery, per recipient domain ("*": the default). */
enum relay_tls_mode {
	RELAY_TLS_OPPORTUNISTIC = 0, /* when offered, no certificate check */
	RELAY_TLS_OFF,
	RELAY_TLS_REQUIRED, /* never plain text: no STARTTLS is a transient failure */
	RELAY_TLS_VERIFY,   /* required, and the chain must verify */
	RELAY_TLS_DANE,     /* required, authenticated by DANE TLSA records (dane-only) */
};
struct relay_tls_policy {
	char *domain;
	enum relay_tls_mode mode;
};
struct relay_accounts;

struct relay_config {
	/* Reads the configuration again (SIGHUP): a new one that lives until
	 * the relay returns, or NULL with err set. NULL hook: no reload. The
	 * relay takes its accounts, DKIM keys, trusted networks and bounce
	 * rules; the rest needs a restart. */
	const struct relay_config *(*reload)(struct base_err *err);
	const char *listen;
	const char *spool;
	const char *log;      /* accounting, one JSON line per event; NULL: none */
	const char *csv;      /* the same events as CSV, PowerMTA's style; NULL: none */
	const char *resolver; /* DNS server for MX lookups; NULL: static routes only */
	uint16_t smtp_port;   /* port of MX hosts (25) */
	const char *hostname;
	const char *user; /* "NAME[:GROUP]" to become after binding (as root); NULL: stay */
	struct relay_route *routes;
	size_t nroutes;
	struct base_cidr *trusted;
	size_t ntrusted;
	struct relay_dkim *dkim;
	size_t ndkim;
	struct relay_schedule schedule;
	uint32_t suspend;       /* seconds a destination rests after a 4xx greeting or 421 */
	uint32_t dead_time;     /* seconds an address that refused or timed out is skipped */
	uint32_t conn_limit;    /* connections per destination */
	uint32_t msgs_per_conn; /* transactions per connection; 0: no limit */
	uint64_t max_size;
	uint32_t max_rcpts;
	uint32_t max_conns;        /* inbound sessions */
	uint32_t max_outbound;     /* outbound connections, every site together */
	uint32_t timeout;          /* inbound idle timeout, seconds */
	uint32_t commit_delay_us;  /* group-commit window; 0: commit at the end of each loop turn */
	uint32_t sign_threads;     /* DKIM signing and password threads; 0: one per core */
	struct relay_rules *rules; /* bounce classification */
	/* pool.c: IP pools, the pool of mail that names none (NULL: no bind),
	 * rate limits (0: unlimited) and per-domain overrides */
	struct relay_pool *pools;
	size_t npools;
	char *default_pool;
	uint32_t msgs_per_sec, conns_per_min;
	struct relay_domain_limits *domains;
	size_t ndomains;
	struct relay_throttle *throttles; /* throttle.c: reactions to replies */
	size_t nthrottles;
	/* TLS, AUTH and accounts (server.c, tls.c, account.c) */
	const char *tls_cert, *tls_key; /* STARTTLS at reception; NULL: not offered */
	const char *tls_ca;             /* CA file for the verify policy; NULL: system store */
	struct relay_tls_policy *tls_policy;
	size_t ntls_policy;
	int auth_without_tls;           /* offer AUTH before STARTTLS */
	const struct relay_accounts *accounts; /* NULL or empty: no AUTH */
	/* MTA-STS at delivery (mtasts.c): on unless mta_sts_off; the HTTPS
	 * port of policy hosts (0: 443) and the fetch's timeout (0: 60 s) */
	int mta_sts_off;
	uint16_t mta_sts_port;
	uint32_t mta_sts_timeout;
	int dane; /* DANE (RFC 7672) for MX-routed mail; needs a validating resolver */
	uint32_t delay_warning; /* seconds deferred before a delayed-delivery DSN; 0: none */
	/* TLS reporting, RFC 8460 (tlsrpt.c): off unless tlsrpt; the report's
	 * organization-name (NULL: the host name) and contact-info, the
	 * reports' sender (NULL: the null sender, From MAILER-DAEMON@host),
	 * and the most a day's reports wait after midnight, at random */
	int tlsrpt;
	const char *tlsrpt_org, *tlsrpt_contact, *tlsrpt_from;
	uint32_t tlsrpt_delay;
	/* seconds before a failed report's second attempt (RFC 8460 5.4) */
	uint32_t tlsrpt_retry;
	uint16_t tlsrpt_port; /* the port of every https: report URI (0: the URI's; for tests) */
};

/* The MTA-STS settings (mta-sts = on|off, mta-sts-port, mta-sts-timeout):
 * 0, -1 with err, or 1 when key is not one of them (mtasts_policy.c). */
int relay_mtasts_set(struct relay_config *c, const char *key, const char *value,
                     struct base_err *err);
/* 1 when MTA-STS applies to the recipient domain: its [domain] section's
 * mta-sts key, else the [relay] setting; never for a domain an explicit
 * --tls-policy names ('*' does not count). relay_mtasts_any: 1 when it
 * may apply to some domain (the daemon's side starts). */
int relay_mtasts_applies(const struct relay_config *c, const char *domain);
int relay_mtasts_any(const struct relay_config *c);
/* The TLS reporting settings (tlsrpt = on|off, tlsrpt-org, tlsrpt-contact,
 * tlsrpt-from, tlsrpt-delay, tlsrpt-retry, tlsrpt-port; values are kept, not
 * copied): 0, -1 with err, or 1 when key is not one of them (tlsrpt.c). */
int relay_tlsrpt_set(struct relay_config *c, const char *key, const char *value,
                     struct base_err *err);
/* `mailrep tlsrpt show`: prints the JSON report of each domain (or of
 * domain only) of day's counters in SPOOL/tlsrpt (day NULL: today, UTC),
 * one per line, as the relay would send them from host. 0 or -1 with err. */
int relay_tlsrpt_show(FILE *out, const char *spool, const char *day, const char *domain,
                      const char *org, const char *contact, const char *host, struct base_err *err);
void relay_config_init(struct relay_config *c);
/* Runs until SIGTERM/SIGINT. */
int relay_run(const struct relay_config *c, struct base_err *err);
/* Checks that host-name routes have a resolver: 0 or -1 with err. */
int relay_routes_check(const struct relay_config *c, struct base_err *err);

#endif
