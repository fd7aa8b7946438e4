/*
 * listing — the blocklist's data side: impacts (trap hits) go into a store,
 * a policy engine turns them into levelled listings (Level 1 single IP,
 * Level 2 allocation, Level 3 AS), and the listings are looked up, delisted,
 * counted and exported.
 *
 * Shape of the module:
 *   - store.h / store_sqlite.c: the one interface through which everything
 *     reaches persistent state, and its SQLite (WAL) implementation with
 *     versioned migrations;
 *   - prefix.c: allocation and IP->AS tables (CIDR + name, CAIDA prefix2as);
 *   - policy.c: thresholds, SPAMSCORE, never-listed ranges, and
 *     listing_refresh(), which recomputes the listings at an instant `now`
 *     from the impacts of the last window and reconciles them with the store;
 *   - impact.c: the bulk import line format and evidence files;
 *   - query.c: lookup, delisting and statistics;
 *   - export.c: rbldnsd / txt / xml / bind exports, written atomically.
 *
 * Time is always a parameter (`now`, UTC seconds), never read here, so that
 * tests can simulate weeks in milliseconds; the CLI passes base_now().
 */
#ifndef MAILREP_LISTING_H
#define MAILREP_LISTING_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/base.h"

/* ---- addresses -------------------------------------------------------- */

/* An IPv4 (family 4, bytes a[0..3]) or IPv6 (family 6, a[0..15]) address.
 * IPv4-mapped IPv6 addresses stay IPv6: they are what the client sent. */
struct listing_ip {
	uint8_t family; /* 4 or 6 */
	uint8_t a[16];
};

int listing_ip_parse(const char *s, struct listing_ip *ip);
/* Canonical text (inet_ntop); out must hold 46 bytes. */
void listing_ip_format(const struct listing_ip *ip, char *out, size_t n);
static inline size_t listing_ip_len(const struct listing_ip *ip)
{
	return ip->family == 4 ? 4 : 16;
}

/* ---- prefix tables (prefix.c) ------------------------------------------ */

/* One IPv4 prefix of an allocation table or of an IP->AS map. */
struct listing_prefix {
	uint32_t addr;    /* network address, host bits clear */
	uint8_t len;      /* 0..32 */
	uint32_t asn;     /* 0 when the line named no AS */
	const char *name; /* allocation name, or NULL */
};

/* A longest-prefix-match table of IPv4 prefixes. Invariant after
 * listing_prefixes_finish(): `v` is sorted by (len, addr) without duplicates
 * (the first line for a prefix wins), and by_len[l]..by_len[l+1] is the
 * slice of length l. */
struct listing_prefixes {
	struct listing_prefix *v;
	size_t n, cap;
	size_t by_len[34];
	uint64_t fingerprint; /* FNV-1a over the accepted entries */
	struct base_arena names;
	/* per-AS announced address space, sorted by asn (after finish) */
	struct listing_as_size {
		uint32_t asn;
		uint64_t size;
	} * as_sizes;
	size_t n_as;
	int finished;
};

struct listing_prefixes *listing_prefixes_new(void);
void listing_prefixes_free(struct listing_prefixes *t);
/* Adds one line: "CIDR [name]" or CAIDA prefix2as "addr<TAB>len<TAB>asn"
 * (asn may be "a_b" or "a,b": the first is taken). Blank lines and '#'
 * comments are accepted; IPv6 prefixes are skipped (return 0). Returns 0 or
 * -1 with err naming what/where is wrong. */
int listing_prefixes_add_line(struct listing_prefixes *t, const char *line, size_t len,
                              struct base_err *err);
void listing_prefixes_finish(struct listing_prefixes *t);
/* Loads a file (plain or gzip); errors name file:line. */
int listing_prefixes_load(const char *path, struct listing_prefixes **out, struct base_err *err);
const struct listing_prefix *listing_prefixes_match(const struct listing_prefixes *t,
                                                    uint32_t addr);
/* Total distinct IPv4 addresses announced by an AS (overlaps counted once). */
uint64_t listing_prefixes_as_size(const struct listing_prefixes *t, uint32_t asn);

/* ---- policy (policy.c) ------------------------------------------------- */

#define LISTING_MAX_NEVER 64

struct listing_policy {
	uint32_t l1_threshold;   /* impacts within the window that list an IP (1) */
	uint32_t window;         /* seconds; impacts older than this stop counting (7d) */
	uint32_t l2_base[4];     /* thresholds for /24, /25, /26, /27-and-smaller (4 3 2 1) */
	uint32_t l3_min_impacts; /* 50 */
	uint32_t l3_min_score10; /* SPAMSCORE x 10 (500 = 50.0) */
	uint32_t delist_quiet;   /* self-service: no impact for this long (24h) */
	uint32_t delist_period;  /* self-service: request-limit period (7d) */
	uint32_t delist_max;     /* self-service: requests per IP per period (3) */
	const struct listing_prefixes *allocs;     /* L2 allocation table, or NULL (/24 fallback) */
	const struct listing_prefixes *asmap;      /* L3 IP->AS map, or NULL (no L3) */
	struct base_cidr never[LISTING_MAX_NEVER]; /* reserved ranges: never listed */
	size_t n_never;
	struct base_cidr *whitelist; /* never listed, not counted for L2/L3 */
	size_t n_whitelist;
};

/* UCEPROTECT's published defaults and the usual reserved ranges. */
void listing_policy_defaults(struct listing_policy *p);
/* Sets one option by name (as in the [listing] INI section): l1-threshold,
 * window, l2-24, l2-25, l2-26, l2-27, l3-min-impacts, l3-min-score,
 * delist-quiet, delist-period, delist-max, never (adds a CIDR). */
int listing_policy_set(struct listing_policy *p, const char *key, const char *value,
                       struct base_err *err);
int listing_policy_load_whitelist(struct listing_policy *p, const char *path, struct base_err *err);
void listing_policy_free(struct listing_policy *p);
/* A hash of everything that changes which listings exist. */
uint64_t listing_policy_fingerprint(const struct listing_policy *p);

/* T(/len): base values for /24../27, 1 below, and above /24 the recurrence
 * T(/n-1) = T(/n) + T(/n+2). Saturates at UINT64_MAX/4. */
uint64_t listing_l2_threshold(const struct listing_policy *p, unsigned len);
/* SPAMSCORE x 10, i.e. impacts / total * 100000 rounded half-up to one
 * decimal place, returned as an integer number of tenths. */
uint64_t listing_spamscore10(uint64_t impacts, uint64_t total);
/* The least impact count with listing_spamscore10() >= score10. */
uint64_t listing_spamscore_min_impacts(uint64_t score10, uint64_t total);
/* Whether the IP can never be listed: returns "reserved", "whitelisted" or NULL. */
const char *listing_never(const struct listing_policy *p, const struct listing_ip *ip);
/* RFC 5782 test entries: 1 for 127.0.0.2 / ::ffff:7f00:2, 0 otherwise. */
int listing_is_test_listed(const struct listing_ip *ip);

/* ---- store ------------------------------------------------------------- */

struct listing_store; /* see store.h for the interface backends implement */

int listing_store_open(const char *path, struct listing_store **out, struct base_err *err);
void listing_store_close(struct listing_store *s);
int listing_store_version(struct listing_store *s);

/* One recorded trap hit. Strings may be NULL; the store copies them. */
struct listing_impact {
	int64_t id;
	int64_t time;
	struct listing_ip ip;
	const char *trap, *source, *helo, *mail_from, *rcpt, *message_id, *subject;
	const char *headers;
	size_t headers_len;
};

#define LISTING_FIELD_MAX   998  /* longest text field of an impact */
#define LISTING_HEADERS_MAX 8192 /* headers kept per impact */

enum listing_state { LISTING_ACTIVE = 0, LISTING_EXPIRED = 1, LISTING_DELISTED = 2 };

/* One listing episode: from the moment a key qualified until it expired or
 * was delisted. A key's history is the list of its episodes. Invariant: at
 * most one ACTIVE episode per (level, key); after listing_refresh(now) every
 * ACTIVE episode has expires > now. */
struct listing_record {
	int64_t id;
	int level;    /* 1, 2, 3 */
	char key[64]; /* "192.0.2.1", "192.0.2.0/24", "AS64500" */
	int state;    /* enum listing_state */
	char reason[160];
	int64_t listed_at, first_seen, last_seen, expires, removed_at;
	uint64_t impacts;   /* impacts counted for it at the last refresh */
	char evidence[200]; /* comma-separated ids of the newest counted impacts */
	const char *ranges; /* space-separated CIDRs it covers (L2: the key, L3: the AS's) */
};

/* ---- impacts (impact.c) ------------------------------------------------ */

/* Parses one import line in place (see docs/LISTING.md):
 *   TIME <TAB> IP [<TAB> TRAP [<TAB> SOURCE [<TAB> HELO <TAB> MAIL_FROM <TAB> RCPT
 *   <TAB> MESSAGE_ID <TAB> SUBJECT]]]
 * TIME is ISO 8601, "@" + Unix seconds, or "-" for now. Returns 1 for an
 * impact, 0 for a blank or comment line, -1 with err (without position). */
int listing_impact_parse_line(char *line, size_t len, int64_t now, struct listing_impact *out,
                              struct base_err *err);
/* Fills message_id, subject, mail_from (From:) and headers from a message
 * file; the buffer is owned by the caller (free). */
int listing_impact_read_evidence(const char *path, struct listing_impact *imp, char **buf,
                                 struct base_err *err);

/* Sets message_id, subject and (if unset) mail_from from a header section;
 * the values are copied to `store`, which holds LISTING_HDRVAL_STORE bytes. */
#define LISTING_HDRVAL_STORE (3 * (LISTING_FIELD_MAX + 1))
void listing_impact_parse_headers(struct listing_impact *imp, const char *hdr, size_t len,
                                  char *store);

struct listing_import_result {
	uint64_t lines, imported, rejected;
};
/* Imports a file ("-" for stdin), committing every `batch` impacts. Each bad
 * line is reported on `errs` as "file:line: reason" and counted. */
int listing_import(struct listing_store *s, const char *path, int64_t now, size_t batch, FILE *errs,
                   struct listing_import_result *res, struct base_err *err);
int listing_impact_add(struct listing_store *s, const struct listing_impact *imp, int64_t *id,
                       struct base_err *err);

/* ---- refresh (policy.c) ------------------------------------------------ */

struct listing_refresh_result {
	int ran;         /* 0 when nothing could have changed since the last refresh */
	int incremental; /* 1 when only the keys near new impacts were recomputed */
	uint64_t listed, updated, removed;
};
/* Brings the listings up to `now`. Skipped (ran = 0) unless impacts or
 * delistings arrived, the policy changed, a listing expired, or force.
 * When only impacts arrived, only the IPs, allocations and ASes they touch
 * are recomputed; otherwise (or with force) everything is. */
int listing_refresh(struct listing_store *s, const struct listing_policy *p, int64_t now, int force,
                    struct listing_refresh_result *res, struct base_err *err);

/* ---- queries (query.c) ------------------------------------------------- */

struct listing_lookup {
	struct listing_ip ip;
	const char *never;             /* "reserved" / "whitelisted" / NULL */
	int test_entry;                /* RFC 5782 127.0.0.2 / ::ffff:7f00:2 */
	struct listing_record *active; /* episodes covering the IP now */
	size_t n_active;
	struct listing_record *history; /* every episode covering the IP, newest first */
	size_t n_history;
	struct listing_impact *impacts; /* the IP's newest impacts (evidence) */
	size_t n_impacts;
	int self_delist_possible;
	char self_delist_why[160];
	struct base_arena arena;
};
int listing_lookup(struct listing_store *s, const struct listing_policy *p,
                   const struct listing_ip *ip, int64_t now, struct listing_lookup *out,
                   struct base_err *err);
void listing_lookup_free(struct listing_lookup *l);

enum listing_delist_outcome {
	LISTING_DELISTED_NOW = 0,
	LISTING_DELIST_REFUSED = 1,
	LISTING_NOT_LISTED = 2
};
/* Operator (self_service = 0: removes the listing at `level` covering the IP)
 * or self-service (Level 1 only, with the quiet-period and request-limit
 * rules). Every request is recorded. */
int listing_delist(struct listing_store *s, const struct listing_policy *p,
                   const struct listing_ip *ip, int level, int self_service, int64_t now,
                   const char *note, int *outcome, char *why, size_t whylen, struct base_err *err);
/* The self-service verdict without recording anything. */
int listing_self_delist_check(struct listing_store *s, const struct listing_policy *p,
                              const struct listing_ip *ip, int64_t now, int *possible, char *why,
                              size_t whylen, struct base_err *err);

struct listing_stats {
	uint64_t new48[4], removed48[4], listed[4]; /* [0] = all levels */
	uint64_t delist_requests48;
};
int listing_stats(struct listing_store *s, int64_t now, struct listing_stats *st,
                  struct base_err *err);

/* ---- exports (export.c) ------------------------------------------------ */

enum listing_format {
	LISTING_FMT_RBLDNSD,
	LISTING_FMT_RBLDNSD6,
	LISTING_FMT_TXT,
	LISTING_FMT_XML,
	LISTING_FMT_BIND
};
struct listing_export_options {
	enum listing_format format;
	int level;              /* 0: all levels */
	const char *lookup_url; /* TXT template base; the IP is appended ("$") */
	const char *zone;       /* bind: zone origin */
	uint32_t ttl;
	int64_t now;
};
int listing_format_parse(const char *s, enum listing_format *f);
/* Writes the export to path through a temporary file, fsync and rename.
 * Returns the number of entries written, or -1. */
int64_t listing_export(struct listing_store *s, const struct listing_export_options *o,
                       const char *path, struct base_err *err);

/* ---- trap receiver (trap.c) -------------------------------------------- */

/* An SMTP server for trap domains and addresses: every accepted delivery is
 * one impact, durable before the reply to the final dot. */
struct listing_trap_options {
	struct listing_store *store;
	struct base_sockaddr listen;
	const char *hostname;
	const char *const *domains; /* trap domains: any local part */
	size_t n_domains;
	const char *const *addresses; /* single trap addresses */
	size_t n_addresses;
	const struct base_cidr *proxy_from; /* peers that must send a PROXY header */
	size_t n_proxy_from;
	uint32_t timeout;    /* seconds a client may stay silent (300) */
	uint64_t max_size;   /* largest message accepted (10 MB) */
	unsigned max_conns;  /* concurrent connections (256) */
	unsigned max_rcpts;  /* recipients per message (100) */
	unsigned max_errors; /* bad commands before the connection is closed (10) */
	int ready_fd;        /* if >= 0: "ready\n" is written here once listening */
	const char *user;    /* as root: "NAME[:GROUP]" to become once listening */
};
/* Runs until SIGTERM or SIGINT. */
int listing_trap_run(const struct listing_trap_options *o, struct base_err *err);

#endif
