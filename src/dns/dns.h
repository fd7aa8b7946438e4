/*
 * dns — DNS wire format: parsing queries, building responses, and domain
 * names in wire and text form. No I/O happens here; servers and clients
 * hand buffers in and out.
 *
 * Every read from a packet is bounds-checked against its length: a packet
 * is hostile until proven otherwise.
 */
#ifndef MAILREP_DNS_H
#define MAILREP_DNS_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

enum {
	DNS_T_A = 1, DNS_T_NS = 2, DNS_T_CNAME = 5, DNS_T_SOA = 6, DNS_T_PTR = 12, DNS_T_MX = 15,
	DNS_T_TXT = 16, DNS_T_AAAA = 28, DNS_T_OPT = 41, DNS_T_IXFR = 251, DNS_T_AXFR = 252,
	DNS_T_TSIG = 250, DNS_T_ANY = 255,
	DNS_T_TLSA = 52,
};
enum { DNS_C_IN = 1, DNS_C_CH = 3, DNS_C_NONE = 254, DNS_C_ANY = 255 };
enum {
	DNS_R_NOERROR = 0, DNS_R_FORMERR = 1, DNS_R_SERVFAIL = 2, DNS_R_NXDOMAIN = 3,
	DNS_R_NOTIMP = 4, DNS_R_REFUSED = 5, DNS_R_NOTAUTH = 9, DNS_R_BADVERS = 16,
};
enum { DNS_OP_QUERY = 0, DNS_OP_NOTIFY = 4, DNS_OP_UPDATE = 5 };

/* Header flag bits, in the 16-bit flags word. */
#define DNS_F_QR 0x8000
#define DNS_F_AA 0x0400
#define DNS_F_TC 0x0200
#define DNS_F_RD 0x0100
#define DNS_F_RA 0x0080
#define DNS_F_AD 0x0020
#define DNS_F_CD 0x0010

#define DNS_HDR_SIZE  12
#define DNS_NAME_MAX  255
#define DNS_LABEL_MAX 63
#define DNS_UDP_MIN   512

/* ---- names ------------------------------------------------------------ */

/* A name in wire form (length-prefixed labels, ending with the root label),
 * lowercased by the parsers that produce it. */
struct dns_name {
	uint8_t len;                 /* bytes in wire, including the final 0 */
	uint8_t nlabels;             /* labels, not counting the root */
	uint8_t wire[DNS_NAME_MAX + 1];
	uint8_t label[128];          /* offset of each label in wire */
};

/* Text (dotted, with \DDD and \c escapes; trailing dot optional; "." or ""
 * for the root) to wire. Lowercases when fold is set. */
int dns_name_from_text(struct dns_name *n, const char *text, int fold, struct base_err *err);
/* Wire to dotted text (no trailing dot, "." for the root); escapes
 * unprintables. Returns the length, or -1 when out is too small. */
int dns_name_to_text(const uint8_t *wire, char *out, size_t outsz);
/* Fills label offsets and counts of a wire name already known to be valid. */
void dns_name_index(struct dns_name *n);
/* Whether child is at or below parent (both lowercased wire). */
int dns_name_is_subdomain(const struct dns_name *child, const struct dns_name *parent);

/* ---- query parsing ---------------------------------------------------- */

enum dns_parse_result {
	DNS_PARSE_OK = 0,
	DNS_PARSE_DROP = -1,    /* not worth an answer: too short for a header, or a response */
	DNS_PARSE_FORMERR = -2, /* malformed: answer FORMERR with the id */
	DNS_PARSE_NOTIMP = -3,  /* an opcode we do not serve */
};

struct dns_query {
	uint16_t id;
	uint16_t flags;
	unsigned opcode;
	struct dns_name qname;   /* lowercased */
	uint8_t qname_case[DNS_NAME_MAX + 1]; /* as sent, to echo it back unchanged */
	uint16_t qtype, qclass;
	size_t question_end;     /* offset just past the question in the packet */
	/* EDNS(0) */
	int edns;                /* an OPT record was present */
	uint8_t edns_version;
	uint16_t edns_udp;
	int edns_do;
	/* the SOA serial carried in the authority section of an IXFR query */
	int has_ixfr_serial;
	uint32_t ixfr_serial;
};

/* Parses a query. On DNS_PARSE_FORMERR the id and flags are filled in when
 * the header was readable, and why says what was wrong. */
int dns_parse_query(const uint8_t *pkt, size_t len, struct dns_query *q, const char **why);

/* ---- response building ------------------------------------------------ */

enum dns_section { DNS_SEC_ANSWER, DNS_SEC_AUTHORITY, DNS_SEC_ADDITIONAL };

#define DNS_COMPRESS_MAX 64

struct dns_builder {
	uint8_t *buf;
	size_t cap;       /* bytes available in buf */
	size_t limit;     /* the most this message may use (UDP size) */
	size_t len;
	uint16_t count[3];
	int section;      /* current section; sections are written in order */
	int overflow;     /* an RR did not fit and was left out */
	unsigned ncomp;
	uint16_t comp[DNS_COMPRESS_MAX]; /* offsets of names written, for compression */
	size_t rr_start;  /* where the RR being written began, for rollback */
	size_t rd_start;  /* where its RDATA begins */
};

/* Starts a response to q in buf: header and the question echoed back. */
int dns_b_start(struct dns_builder *b, uint8_t *buf, size_t cap, size_t limit,
		const struct dns_query *q, uint16_t flags, unsigned rcode);
/* Starts an empty message (for AXFR continuation messages or queries). */
void dns_b_init(struct dns_builder *b, uint8_t *buf, size_t cap, size_t limit);
void dns_b_set_rcode(struct dns_builder *b, unsigned rcode);
void dns_b_set_flags(struct dns_builder *b, uint16_t set, uint16_t clear);
/* Moves to a later section; RRs are appended to the current one. */
void dns_b_section(struct dns_builder *b, enum dns_section s);

/* Writes an owner name with compression. Returns 0, or -1 when it does not fit. */
int dns_b_name(struct dns_builder *b, const uint8_t *wire);
/* Begins an RR (owner given in wire form, or as a 0xC000|offset pointer when
 * owner is NULL). Returns 0 or -1 (no room: the builder is left unchanged). */
int dns_b_rr_begin(struct dns_builder *b, const uint8_t *owner, uint16_t owner_ptr, uint16_t type,
		   uint16_t cls, uint32_t ttl);
int dns_b_rd_bytes(struct dns_builder *b, const void *p, size_t n);
int dns_b_rd_u16(struct dns_builder *b, uint16_t v);
int dns_b_rd_u32(struct dns_builder *b, uint32_t v);
int dns_b_rd_name(struct dns_builder *b, const uint8_t *wire, int compress);
/* Finishes the RR and counts it. */
int dns_b_rr_end(struct dns_builder *b);
/* Drops a partly written RR (after a -1 from an rd_ call) and marks overflow. */
void dns_b_rr_abort(struct dns_builder *b);
/* Appends an OPT RR advertising udp_size; ext_rcode is the upper 8 bits. */
int dns_b_opt(struct dns_builder *b, uint16_t udp_size, uint8_t ext_rcode, int do_bit);
/* Writes the counts into the header and returns the message length. */
size_t dns_b_finish(struct dns_builder *b);

/* A minimal FORMERR/NOTIMP/REFUSED reply built straight from a raw query
 * header (used when the question could not be parsed). Returns length or 0. */
size_t dns_error_reply(const uint8_t *pkt, size_t len, uint8_t *out, size_t cap, unsigned rcode);

/* ---- generic message reading (for tests, clients and secondaries) ----- */

struct dns_rr {
	uint8_t owner[DNS_NAME_MAX + 1]; /* decompressed wire */
	uint16_t type, cls;
	uint32_t ttl;
	uint16_t rdlen;
	const uint8_t *rdata;    /* points into the message */
	size_t rdata_off;
};

/* Decompresses a name at *off; advances *off past it in the message. */
int dns_read_name(const uint8_t *msg, size_t len, size_t *off, uint8_t out[DNS_NAME_MAX + 1]);
/* Reads one RR at *off. */
int dns_read_rr(const uint8_t *msg, size_t len, size_t *off, struct dns_rr *rr);

static inline uint16_t dns_get16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}
static inline uint32_t dns_get32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void dns_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void dns_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

const char *dns_type_name(uint16_t type, char buf[16]);
const char *dns_rcode_name(unsigned rcode);

/* ---- lookups: the interface SPF, DKIM and DMARC resolve through -------
 *
 * Callers that need DNS data ask a struct dns_lookup_ops, a pair of a
 * function and its context. The c-ares resolver below is the real backend;
 * struct dns_memzone is an in-memory one for test suites that come with
 * their own zone data (the RFC 7208 suite). Everything else is tested
 * against a real server on loopback. */

enum dns_lookup_status {
	DNS_LOOKUP_OK = 0,   /* NOERROR and at least one record of the type asked */
	DNS_LOOKUP_NODATA,   /* NOERROR but no record of that type */
	DNS_LOOKUP_NXDOMAIN, /* the name does not exist */
	DNS_LOOKUP_SERVFAIL, /* SERVFAIL, REFUSED or another error rcode */
	DNS_LOOKUP_TIMEOUT,  /* no answer in time */
	DNS_LOOKUP_ERROR,    /* a malformed answer, a bad name or a local failure */
};

/* At most this many records are kept from one answer; more is an error. */
#define DNS_ANSWER_MAX_RR 512
/* Room for a name as dotted text (escapes included) and its NUL. */
#define DNS_NAME_TEXT_MAX 1024

/* One record of the type asked for. data is NUL-terminated after len bytes:
 *   TXT         the character-strings concatenated (RFC 7208 §3.3)
 *   A, AAAA     4 or 16 address bytes
 *   MX, PTR, CNAME, NS  the target name as lowercased dotted text, no trailing dot
 *   others (TLSA...)    the RDATA as received */
struct dns_record {
	uint16_t type;
	uint16_t pref; /* MX preference */
	uint32_t ttl;
	size_t len;
	char *data;
};

/* Invariant: rr holds n records, all of the type asked for, and is NULL
 * when n is 0; status is DNS_LOOKUP_OK exactly when n > 0. */
struct dns_answer {
	int status;     /* enum dns_lookup_status */
	unsigned rcode; /* as received (0 when nothing was received) */
	size_t n;
	struct dns_record *rr;
	char why[128]; /* for failures: what went wrong, for messages */
	/* The response's AD bit (RFC 4035 3.2.3): the resolver validated it
	 * with DNSSEC. Meaningful only from a validating resolver asked with
	 * dns_resolver_set_dnssec; 0 when nothing was received. */
	int secure;
	/* The owner of the records when a CNAME chain led to them: the
	 * expanded name as lowercased dotted text (no trailing dot); NULL when
	 * they sit at the name asked for. Owned (dns_answer_free). */
	char *canon;
};

void dns_answer_init(struct dns_answer *a);
void dns_answer_free(struct dns_answer *a);
/* Appends a record (data copied). Returns 0 or -1 when the answer is full. */
int dns_answer_add(struct dns_answer *a, uint16_t type, uint16_t pref, uint32_t ttl, const void *data,
		   size_t len);
/* Reads a response message into a: rcode, then every answer-section record
 * of class IN and type qtype (owners are not compared: a CNAME chain's end
 * carries the data). The message is hostile: every read is bounded, and a
 * malformed one gives DNS_LOOKUP_ERROR with why filled. */
void dns_answer_parse(const uint8_t *msg, size_t len, uint16_t qtype, struct dns_answer *a);
const char *dns_lookup_status_name(int status);

struct dns_lookup_ops {
	/* Resolves name (dotted text) for type and fills ans (initialised by the
	 * callee; the caller frees it with dns_answer_free). Blocks until done. */
	void (*lookup)(void *ctx, const char *name, uint16_t type, struct dns_answer *ans);
	void *ctx;
};

static inline void dns_lookup(const struct dns_lookup_ops *ops, const char *name, uint16_t type,
			      struct dns_answer *ans)
{
	ops->lookup(ops->ctx, name, type, ans);
}

/* ---- the resolver: c-ares, asynchronous ----------------------------------
 *
 * Many queries may be in flight at once on one resolver. The server is
 * configurable as HOST:PORT (IPv4, or [IPv6]:PORT); the system's
 * /etc/resolv.conf is read only when no server is given. A resolver is not
 * thread-safe: use one per thread. */

struct dns_resolver;

struct dns_resolver_config {
	const char *server;  /* "127.0.0.1:5353", "[::1]:53"; NULL: the system's */
	unsigned timeout_ms; /* per try; 0 means 2000 */
	unsigned tries;      /* 0 means 2 */
};

/* Called once per submitted query, from dns_resolver_poll/run, with an
 * answer the callee may keep (it then owns it and must free it) or leave
 * (it is freed after the call returns); see dns_answer_take. */
typedef void (*dns_resolver_cb)(void *arg, const char *name, uint16_t type, struct dns_answer *ans);

int dns_resolver_new(struct dns_resolver **out, const struct dns_resolver_config *cfg,
		     struct base_err *err);
void dns_resolver_free(struct dns_resolver *r);
/* With on, queries set the DO bit (RFC 3225): a validating resolver then
 * says in each answer's AD bit (dns_answer.secure) whether it validated it. */
void dns_resolver_set_dnssec(struct dns_resolver *r, int on);
/* Sends a query; cb runs later. Returns 0 or -1 (bad name: cb is not called). */
int dns_resolver_submit(struct dns_resolver *r, const char *name, uint16_t type, dns_resolver_cb cb,
			void *arg, struct base_err *err);
/* Queries submitted and not yet completed. */
unsigned dns_resolver_pending(const struct dns_resolver *r);
/* Waits at most timeout_ms for I/O and processes it (callbacks run here).
 * Returns the number of queries still pending. */
unsigned dns_resolver_poll(struct dns_resolver *r, int timeout_ms);
/* Runs until every query submitted so far has completed. */
void dns_resolver_run(struct dns_resolver *r);
/* For an external event loop: the sockets to watch (up to max; events
 * POLLIN/POLLOUT as in poll(2)) and the longest wait before calling
 * dns_resolver_process anyway. Returns the number of descriptors. */
struct pollfd;
int dns_resolver_fds(struct dns_resolver *r, struct pollfd *fds, int max, int *timeout_ms);
/* Processes what poll(2) reported on fds (revents), and any timeouts. */
void dns_resolver_process(struct dns_resolver *r, const struct pollfd *fds, int n);
/* Moves an answer's contents to dst, leaving src empty (for callbacks
 * that keep an answer). */
void dns_answer_take(struct dns_answer *dst, struct dns_answer *src);
/* The blocking lookup interface backed by this resolver. */
void dns_resolver_ops(struct dns_resolver *r, struct dns_lookup_ops *ops);

/* ---- an in-memory zone, for suites that bring their own data ---------- */

struct dns_memzone;

struct dns_memzone *dns_memzone_new(void);
void dns_memzone_free(struct dns_memzone *z);
void dns_memzone_clear(struct dns_memzone *z);
/* Adds a record; for MX, PTR, CNAME and NS data is the target as text. */
int dns_memzone_add(struct dns_memzone *z, const char *name, uint16_t type, uint16_t pref,
		    const void *data, size_t len, struct base_err *err);
/* Makes lookups of name time out for every type it has no records of. */
int dns_memzone_add_timeout(struct dns_memzone *z, const char *name, struct base_err *err);
/* Lookups answered since creation or the last clear. */
unsigned dns_memzone_queries(const struct dns_memzone *z);
void dns_memzone_ops(struct dns_memzone *z, struct dns_lookup_ops *ops);

#endif
