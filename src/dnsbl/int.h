/*
 * int.h — structures private to the dnsbl module: datasets, values, zones
 * and the immutable snapshot that the server threads read.
 *
 * Invariants:
 *  - A snapshot and everything reachable from it is immutable once
 *    published; reloads build a new snapshot beside it. Datasets whose files
 *    did not change are shared between consecutive snapshots (refcounted).
 *  - Every dataset value is a struct ds_val interned per dataset; vid 0 is
 *    reserved for "excluded" and vid 1 for the built-in default
 *    (A 127.0.0.2, no TXT), so that sorting entries by vid puts exclusions
 *    first and keeps the order in which values first appeared.
 *  - Names inside datasets are lowercased wire format.
 */
#ifndef MAILREP_DNSBL_INT_H
#define MAILREP_DNSBL_INT_H

#include <stdatomic.h>
#include <sys/types.h>

#include "dnsbl/dnsbl.h"
#include "dns/dns.h"

#define DS_MAX_NS   32
#define DS_VID_EXCL 0
#define DS_VID_DEF  1

/* query type flags, as rbldnsd groups them */
enum { QF_A = 1, QF_TXT = 2, QF_NS = 4, QF_SOA = 8, QF_MX = 16, QF_OTHER = 32, QF_AAAA = 64,
       QF_ANY = QF_A | QF_TXT | QF_NS | QF_SOA | QF_MX | QF_AAAA };

struct ds_val {
	uint8_t a[4];
	const char *txt; /* template, "" for none */
};

struct ds_soa {
	uint32_t ttl;
	struct dns_name mname, rname;
	uint32_t serial, refresh, retry, expire, minimum;
};

/* What a query asks, as seen by one dataset (names relative to its zone). */
struct ds_query {
	const uint8_t *dn;       /* relative name, wire, lowercased, ends with 0 */
	unsigned dnlen;          /* bytes including the final 0 */
	unsigned nlabels;
	unsigned qflags;         /* QF_* */
	int ip4valid;            /* dn is exactly four decimal octets */
	uint32_t ip4;
	int ip4partial;          /* dn is 1..3 decimal octets: a prefix of addresses */
	unsigned ip4oct;
	int ip6valid;            /* dn is 32 hex nibbles */
	uint8_t ip6[16];
	int ip6partial;          /* dn is 1..31 hex nibbles */
	unsigned ip6nib;
	const struct dnsbl_peer *peer;
};

struct ds;
struct answer;

/* One dataset type: a parser for data lines, a finisher that builds the
 * lookup structures, the query, and the AXFR dump. */
struct ds_type {
	const char *name;
	unsigned flags;          /* DST_* */
	int (*start)(struct ds *ds);                      /* once per file */
	int (*line)(struct ds *ds, char *line, struct base_err *err); /* 1 ok, 0 skipped, -1 fatal */
	int (*finish)(struct ds *ds, struct base_err *err);
	/* Adds records for q; returns 1 when the name exists in the dataset. */
	int (*query)(const struct ds *ds, const struct ds_query *q, struct answer *ans);
	/* Whether names strictly below q->dn exist (for empty non-terminals). */
	int (*below)(const struct ds *ds, const struct ds_query *q);
	/* Emits every record, in the form `rbldnsd -d` writes, for AXFR. */
	void (*dump)(const struct ds *ds, struct dnsbl_dump *sink);
	void (*free)(struct ds *ds);
};

#define DST_IP4 1
#define DST_IP6 2
#define DST_DN  4
#define DST_ACL 8
#define DST_COMBINED 16

struct file_stamp {
	char *path;
	dev_t dev;
	ino_t ino;
	time_t mtime;
	off_t size;
};

struct ds {
	const struct ds_type *type;
	char *spec;              /* "type:file,file", the key for sharing */
	char *label;             /* for messages: type:name inside combined */
	int nfiles;
	struct file_stamp *files;
	time_t stamp;            /* newest mtime of its files */
	_Atomic int refs;
	const struct dnsbl_options *opts;

	/* specials */
	uint32_t ttl;
	struct ds_soa *soa;
	unsigned nns;
	uint32_t ns_ttl;
	struct dns_name *ns;
	const char *subst[10];
	const char *basetpl;     /* $= */
	time_t expires;          /* 0: never */
	uint32_t maxrange4;      /* 0: unlimited */

	/* values, interned */
	struct ds_val *vals;
	uint32_t nvals, capvals;
	void *valhash;           /* load-time only */
	uint32_t defvid;         /* current default value (per file) */

	/* load-time diagnostics */
	const char *cur_file;
	unsigned long cur_line;
	unsigned warnings;

	struct base_arena arena;
	void *data;              /* type specific */

	/* data from a source (source.c) rather than files */
	void *source;
	uint64_t source_version;
	time_t source_next;      /* when the source's data changes by itself; 0: never */

	/* combined datasets */
	struct ds *parent;
	struct combined_child *children;
	unsigned nchildren;
};

/* ---- values and specials (value.c) ------------------------------------ */

uint32_t ds_intern(struct ds *ds, const uint8_t a[4], const char *txt, size_t txtlen);
/* Drops the load-time interning table. */
void ds_intern_done(struct ds *ds);
/* Parses an A+TXT value as rbldnsd does; def is the vid whose A/TXT fill
 * in missing parts. Returns the vid, or 0 after a warning. */
uint32_t ds_parse_value(struct ds *ds, const char *s, uint32_t def);
/* Parses "$..." special lines; returns 1 handled, 0 warned, -1 fatal. */
int ds_special(struct ds *ds, const char *s, struct base_err *err);
void ds_warn(struct ds *ds, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* rbldnsd's time value: number with one optional unit letter. */
int ds_parse_time(const char *s, uint32_t *out, const char **end);
uint32_t ds_clamp_ttl(const struct ds *ds, uint32_t ttl);

/* IPv4 forms (ip4.c) */
int ip4_parse_prefix(const char *s, uint32_t *addr, const char **end);
int ip4_parse_range(const char *s, uint32_t *a, uint32_t *b, const char **end);
int ip4_parse_addr(const char *s, uint32_t *addr, const char **end);
int ip6_parse(const char *s, uint8_t out[16], unsigned *bits, const char **end);
/* Dumps disjoint IPv4 ranges the way an ip4set with them would dump. */
void ip4_dump_ranges(const struct ds *ds, const uint32_t *lo, const uint32_t *hi, const uint32_t *vid,
		     size_t n, struct dnsbl_dump *sink);
/* Text form of an IPv6 address as rbldnsd writes it for "$". */
void ip6_text(const uint8_t a[16], char *out);
/* Owner name for an IPv6 prefix of nib nibbles ("*" first when wild). */
size_t ip6_owner(const uint8_t a[16], unsigned nib, int wild, uint8_t *w);

/* Fills the IPv4/IPv6 views of q->dn for datasets of the given DST_* kinds. */
void ds_query_classify(struct ds_query *q, unsigned dflags);
/* Domain-name keys with labels reversed, for sorted name sets. */
size_t ds_rev_key(const uint8_t *wire, uint8_t *out);
int ds_key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl);

/* ---- answers (answer.c) ---------------------------------------------- */

#define ANS_MAX_RR   128
#define ANS_MAX_DATA 16384

struct ans_rr {
	uint16_t type;
	uint16_t len;
	uint32_t ttl;
	uint32_t off;            /* into data[] */
	const uint8_t *name;     /* owner for generic records, NULL = the query name */
};

struct answer {
	unsigned n;
	int full;
	uint32_t used;
	/* Set when an access list gives the client a value: as in rbldnsd, every
	 * dataset then treats any well-formed query as a hit without answering
	 * from its own data (ovr_hit records that), and the zone answers the
	 * access list's value once, with $ as the client's address. */
	int acl_always;
	int acl_hit;
	struct ans_rr rr[ANS_MAX_RR];
	uint8_t data[ANS_MAX_DATA];
};

void ans_add(struct answer *ans, uint16_t type, uint32_t ttl, const void *rdata, size_t len);
/* For a dataset's query, right after it has found the name well-formed:
 * true when an access list answers instead of the data. */
static inline int ans_acl_always(struct answer *ans)
{
	if (!ans->acl_always) return 0;
	ans->acl_hit = 1;
	return 1;
}
/* Adds A and/or TXT for a value, expanding the TXT template with subst ($). */
void ans_add_value(struct answer *ans, const struct ds *ds, const struct ds_val *v, unsigned qflags,
		   const char *subst);
/* Expands a TXT template into out (<=254 bytes); returns the length. */
size_t ds_txt_expand(const struct ds *ds, const char *tpl, const char *subst, char *out);

/* ---- dataset types --------------------------------------------------- */

extern const struct ds_type ds_ip4set, ds_ip4tset, ds_ip4trie, ds_ip6trie, ds_ip6tset, ds_dnset,
	ds_generic, ds_combined, ds_acl;

const struct ds_type *ds_type_find(const char *name);
int ds_load(struct ds *ds, struct base_err *err);
void ds_release(struct ds *ds);
struct ds *ds_new(const struct ds_type *type, const struct dnsbl_options *opts);

/* sources (source.c) */
int source_type_known(const char *name);
int source_load(struct ds *ds, const char *zone, const char *type, char *const *files, int nfiles,
		struct base_err *err);
int source_changed(const struct ds *ds);

/* Reads the lines of a dataset's files into it (used by combined too). */
int ds_feed_line(struct ds *ds, char *line, struct base_err *err);

/* acl lookups */
enum { ACL_NONE, ACL_IGNORE, ACL_REFUSE, ACL_EMPTY, ACL_PASS, ACL_VALUE };
int ds_acl_check(const struct ds *ds, const struct dnsbl_peer *peer, const struct ds_val **val);

/* combined datasets */
struct combined_child {
	struct ds *ds;
	unsigned nsub;
	struct dns_name *sub;    /* relative to the base zone; "" = @ */
};

/* ---- zones and snapshots (zone.c) ------------------------------------ */

struct zone {
	struct dns_name name;
	char *text;
	struct ds **ds;          /* data datasets, command-line order */
	unsigned nds;
	struct ds *acl;
	unsigned dflags;         /* union of DST_* of its datasets */
	const struct ds_soa *soa;
	const struct ds *soa_ds;
	unsigned nns;
	const struct dns_name *ns;
	uint32_t ns_ttl;
	time_t stamp;
	time_t expires;          /* earliest $TIMESTAMP expiry, 0: never */
	_Atomic int expired;     /* set by the server's periodic check */
	int loaded;
	unsigned index;          /* stable across reloads: for counters */
	struct glue *glue;       /* A records for in-zone NS names */
	unsigned nglue;
	uint32_t serial;         /* the SOA serial served: advances on every change (journal.c) */
	struct ixfr_delta **deltas; /* versions before this one, oldest first (journal.c) */
	unsigned ndeltas;
};

/* The difference between two versions of a zone (journal.c): records in
 * the stored form described there, back to back. */
struct ixfr_delta {
	uint32_t from, to;
	struct base_buf del, add;
	size_t ndel, nadd;
	_Atomic int refs;
};

void delta_release(struct ixfr_delta *d);
void journal_zone_free(struct zone *z);
size_t journal_rr_size(const uint8_t *r);
/* Gives each zone of next its serial and deltas, comparing with prev (may be
 * NULL). changed (one per zone of next, may be NULL) marks the zones whose
 * serial advanced. Returns how many did. */
unsigned dnsbl_journal_update(const struct dnsbl_snapshot *prev, struct dnsbl_snapshot *next, unsigned keep,
			      int *changed);

struct glue {
	unsigned ns;             /* index into the zone's NS names */
	uint8_t a[4];
	uint32_t ttl;
};

struct dnsbl_snapshot {
	struct zone *zones;      /* most specific first */
	unsigned nzones;
	struct ds **all;         /* every dataset, for sharing and release */
	unsigned nall;
	struct ds *gacl;
	const struct dnsbl_options *opts;
	uint64_t generation;
	_Atomic int refs;        /* long holders (AXFR) */
};

const struct zone *zone_find(const struct dnsbl_snapshot *s, const struct dns_name *qname);
void zone_finish(struct dnsbl_snapshot *s, struct zone *z);
void zone_glue(struct dnsbl_snapshot *s, struct zone *z);

#endif
