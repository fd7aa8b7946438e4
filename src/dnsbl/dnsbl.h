/*
 * dnsbl — rbldnsd-compatible DNS blocklist datasets and their server.
 *
 * The module loads zones from rbldnsd data files into an immutable
 * snapshot, answers DNS queries from a snapshot (dnsbl_answer), streams
 * zones for AXFR, and runs the UDP/TCP server with reloads.
 */
#ifndef MAILREP_DNSBL_H
#define MAILREP_DNSBL_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

enum dnsbl_any_mode { DNSBL_ANY_RBLDNSD, DNSBL_ANY_MINIMAL };

struct dnsbl_options {
	uint32_t defttl, minttl, maxttl;  /* -t */
	int accept_in_cidr;               /* -e */
	int lazy;                         /* -a: no NS in authority */
	int version_mode;                 /* -v count: 0 full, 1 name only, 2 refuse */
	int no_gzip;                      /* -C */
	enum dnsbl_any_mode any_mode;
	uint16_t udp_max;                 /* largest EDNS reply we send */
	int axfr;                         /* zone transfers allowed at all */
	struct base_cidr *axfr_allow;     /* NULL/0: anyone */
	unsigned naxfr_allow;
	const char *version_text;
	int quiet;                        /* -q: load errors are not fatal */
};

void dnsbl_options_default(struct dnsbl_options *o);

/* The client a query came from. */
struct dnsbl_peer {
	int family;                       /* AF_INET or AF_INET6 */
	uint8_t addr[16];
};

/* A zone spec from the command line: "name:type:file[,file...]". */
struct dnsbl_zonespec {
	char *zone;                       /* "" for a global acl */
	char *type;
	char **files;
	int nfiles;
};

int dnsbl_zonespec_parse(const char *arg, struct dnsbl_zonespec *out, struct base_err *err);
void dnsbl_zonespec_free(struct dnsbl_zonespec *z);

struct dnsbl_snapshot;

/* Loads every zone. prev, when given, lends its datasets whose files did
 * not change. A dataset that fails to load keeps prev's copy (when there
 * is one) and the failure is reported through warn_cb; with no copy to
 * keep, the zone is marked not loaded (SERVFAIL) under opts->quiet, or the
 * load fails. Returns 0, 1 when nothing changed (out = NULL), or -1. */
int dnsbl_snapshot_load(const struct dnsbl_options *opts, const struct dnsbl_zonespec *specs,
			unsigned nspecs, const struct dnsbl_snapshot *prev, struct dnsbl_snapshot **out,
			struct base_err *err);
/* What a reload looks at: files (on the -c interval and SIGHUP), sources
 * (polled often), or both. dnsbl_snapshot_load looks at both. */
enum { DNSBL_LOAD_FILES = 1, DNSBL_LOAD_SOURCES = 2 };
int dnsbl_snapshot_reload(const struct dnsbl_options *opts, const struct dnsbl_zonespec *specs,
			  unsigned nspecs, const struct dnsbl_snapshot *prev, unsigned what,
			  struct dnsbl_snapshot **out, struct base_err *err);
void dnsbl_snapshot_free(struct dnsbl_snapshot *s);

/* ---- sources: data from a program instead of files (source.c) ---------- */

/* Receives one line of rbldnsd "combined" data: "$SOA ...", "$NS ...",
 * "$DATASET ip4trie @", "192.0.2.1 :2:Listed, see ...". */
typedef int (*dnsbl_emit_fn)(void *ctx, const char *line, struct base_err *err);

struct dnsbl_source_ops {
	/* Opens the source that a zone spec "ZONE:TYPE:PATH[,FILE...]" names
	 * (the FILEs are rbldnsd data read before the source's own lines:
	 * $SOA, $NS, $TTL and the like). */
	void *(*open)(void *arg, const char *type, const char *path, const char *zone,
		      struct base_err *err);
	/* A number that differs whenever the data may have changed; cheap. */
	int (*version)(void *h, uint64_t *version, struct base_err *err);
	/* Writes the data as of now; *next_change is when it changes by
	 * itself (the next expiry), 0 for never. */
	int (*fill)(void *h, time_t now, dnsbl_emit_fn emit, void *ctx, time_t *next_change,
		    struct base_err *err);
	void (*close)(void *h);
};

/* Registers a source under a zone-spec type name; before any load. */
int dnsbl_source_register(const char *type, const struct dnsbl_source_ops *ops, void *arg);
int dnsbl_sources_registered(void);
void dnsbl_sources_close(void);
/* Zones that expired ($TIMESTAMP) stop being served; returns how many changed. */
unsigned dnsbl_snapshot_zones(const struct dnsbl_snapshot *s);
const char *dnsbl_snapshot_zone_name(const struct dnsbl_snapshot *s, unsigned i);
size_t dnsbl_snapshot_memory(const struct dnsbl_snapshot *s);
void dnsbl_snapshot_describe(const struct dnsbl_snapshot *s, struct base_buf *out);

/* Per-zone counters, as in rbldnsd's statistics line. */
struct dnsbl_counters {
	uint64_t qtot, qok, qnxd, bin, bout;
};

enum dnsbl_transport { DNSBL_UDP, DNSBL_TCP };

/* Answers one query. Returns the reply length, or 0 when the query is to
 * be dropped without a reply. zone_index receives the zone the query went
 * to (or -1) for the counters. For AXFR/IXFR over TCP it returns 0 and sets
 * *xfr_zone; the caller then streams the zone with dnsbl_xfr_*. */
size_t dnsbl_answer(const struct dnsbl_snapshot *s, const uint8_t *pkt, size_t len,
		    const struct dnsbl_peer *peer, enum dnsbl_transport transport, uint8_t *out,
		    size_t cap, int *zone_index, int *xfr_zone);

/* ---- zone transfer ----------------------------------------------------- */

/* Receives the records of a zone in order, one at a time: owner relative to
 * the zone in wire form ("" = apex, a leading "*" label for wildcards). */
struct dnsbl_dump {
	void (*rr)(struct dnsbl_dump *d, const uint8_t *owner, uint16_t type, uint32_t ttl,
		   const uint8_t *rdata, size_t rdlen);
	void *ctx;
};
/* Whether a peer may transfer. */
int dnsbl_xfr_allowed(const struct dnsbl_options *o, const struct dnsbl_peer *peer);

/* A streaming AXFR: produces DNS messages of at most 16 KiB each. */
struct dnsbl_xfr;
struct dnsbl_xfr *dnsbl_xfr_start(const struct dnsbl_snapshot *s, int zone, const uint8_t *query,
				  size_t qlen);
/* Writes the next message into out (TCP length prefix not included);
 * returns its length, or 0 when the transfer is complete. */
size_t dnsbl_xfr_next(struct dnsbl_xfr *x, uint8_t *out, size_t cap);
void dnsbl_xfr_free(struct dnsbl_xfr *x);
/* "AXFR", or "IXFR" when the transfer sent only the changes (RFC 1995). */
const char *dnsbl_xfr_kind(const struct dnsbl_xfr *x);

/* Writes the zone in BIND master-file format (rbldnsd -d). */
int dnsbl_dump_text(const struct dnsbl_snapshot *s, FILE *out, struct base_err *err);

/* ---- the server -------------------------------------------------------- */

struct dnsbl_server_config {
	struct dnsbl_options opts;
	struct base_sockaddr *listen;     /* -b */
	unsigned nlisten;
	struct dnsbl_zonespec *specs;
	unsigned nspecs;
	unsigned threads;                 /* UDP workers; 0: one per core */
	uint32_t check_interval;          /* -c, seconds; 0: only on SIGHUP */
	const char *user;                 /* -u user[:group] */
	const char *chroot_dir;           /* -r */
	const char *workdir;              /* -w */
	const char *pidfile;              /* -p */
	const char *logfile;              /* -l, without its '+' */
	int log_unbuffered;
	const char *statsfile;            /* -s, without its '+' */
	int stats_incremental;
	int foreground;                   /* -n */
	uint32_t tcp_idle;                /* seconds */
	unsigned tcp_max;                 /* concurrent TCP connections */
	unsigned coalesce_us;             /* pause between partial UDP batches */
	struct base_sockaddr *notify;     /* --notify: secondaries told of every new serial */
	unsigned nnotify;
	unsigned ixfr_keep;               /* versions kept per zone for IXFR; 0: AXFR only */
	unsigned source_poll_ms;          /* how often sources are asked for changes */
};

/* Runs the server until SIGTERM/SIGINT. Returns the exit status. */
int dnsbl_serve(const struct dnsbl_server_config *cfg);

#endif
