/*
 * auth — email authentication: SPF (RFC 7208), DKIM (RFC 6376, 8301, 8463)
 * and DMARC (RFC 7489, with the DMARCbis DNS tree walk).
 *
 * Everything that needs DNS data asks a struct dns_lookup_ops (see
 * dns/dns.h): the real c-ares resolver in production, an in-memory zone for
 * the RFC 7208 suite. Records, messages and keys are hostile input: every
 * parser here is bounded and reports what was wrong and where.
 */
#ifndef MAILREP_AUTH_H
#define MAILREP_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "base/base.h"
#include "dns/dns.h"

/* ==== SPF ============================================================== */

/* The seven results of RFC 7208 §2.6. */
enum auth_spf_result {
	AUTH_SPF_NONE,
	AUTH_SPF_NEUTRAL,
	AUTH_SPF_PASS,
	AUTH_SPF_FAIL,
	AUTH_SPF_SOFTFAIL,
	AUTH_SPF_TEMPERROR,
	AUTH_SPF_PERMERROR,
};
const char *auth_spf_result_name(int result);

/* The processing limits of RFC 7208 §4.6.4; the defaults are the RFC's. */
#define AUTH_SPF_MAX_DNS_TERMS 10
#define AUTH_SPF_MAX_VOID      2
#define AUTH_SPF_MAX_MX        10
#define AUTH_SPF_MAX_PTR       10

enum auth_spf_kind {
	AUTH_SPF_ALL,
	AUTH_SPF_INCLUDE,
	AUTH_SPF_A,
	AUTH_SPF_MX,
	AUTH_SPF_PTR,
	AUTH_SPF_IP4,
	AUTH_SPF_IP6,
	AUTH_SPF_EXISTS,
	AUTH_SPF_REDIRECT,
	AUTH_SPF_EXP,
	AUTH_SPF_UNKNOWN_MODIFIER,
};

/* One term of a parsed record. spec points into the record's own copy of
 * the text (not NUL-terminated: spec_len bytes) and is the unexpanded
 * domain-spec, or NULL when the mechanism has none (a, mx, ptr: the current
 * domain is meant). */
struct auth_spf_term {
	int kind;       /* enum auth_spf_kind */
	char qualifier; /* '+', '-', '~' or '?' (mechanisms only) */
	const char *spec;
	size_t spec_len;
	unsigned cidr4, cidr6; /* prefix lengths: 32 and 128 unless given */
	uint8_t net[16];       /* ip4 (4 bytes) or ip6 network */
	const char *text;      /* the whole term as written */
	size_t text_len;
};

/* Invariant: terms holds n terms in record order; redirect and exp are the
 * index of that modifier or -1; each appears at most once. */
struct auth_spf_record {
	char *copy; /* the record text the terms point into */
	size_t n;
	struct auth_spf_term *terms;
	int redirect, exp;
};

#define AUTH_SPF_RECORD_MAX 8192 /* longer records are refused */

/* Parses a record (which must start with "v=spf1"). Any syntax error
 * anywhere is an error (RFC 7208 §4.6: a permerror), described in err. */
int auth_spf_parse(const char *text, size_t len, struct auth_spf_record *rec, struct base_err *err);
void auth_spf_record_free(struct auth_spf_record *rec);
/* Whether a TXT record's text is an SPF record (starts with "v=spf1"
 * followed by a space or its end). */
int auth_spf_is_record(const char *text, size_t len);

struct auth_spf_request {
	int family;           /* AF_INET or AF_INET6 */
	uint8_t ip[16];       /* the client address */
	const char *sender;   /* MAIL FROM; "" or NULL for the null reverse-path */
	const char *helo;     /* HELO/EHLO name */
	const char *receiver; /* the receiving host for %{r}; NULL: "unknown" */
	time_t now;           /* for %{t}; 0: the current time */
};

struct auth_spf_outcome {
	int result;            /* enum auth_spf_result */
	char explanation[512]; /* for fail: the exp= text; "" when the default applies */
	char reason[512];      /* what decided the result, for people */
	char domain[256];      /* the domain checked */
	unsigned dns_terms;    /* terms that caused DNS lookups */
	unsigned void_lookups;
};

/* check_host() of RFC 7208 §4 for the sender's domain (or the HELO name
 * when the sender is empty). Never fails as a function: every problem is
 * one of the results. Returns out->result. */
int auth_spf_check(const struct dns_lookup_ops *dns, const struct auth_spf_request *req,
                   struct auth_spf_outcome *out);
/* The same for an explicit domain (as for the HELO identity). */
int auth_spf_check_domain(const struct dns_lookup_ops *dns, const struct auth_spf_request *req,
                          const char *domain, struct auth_spf_outcome *out);

/* ==== messages ========================================================== */

/* An RFC 5322 message split into header fields and a body. The input is
 * copied with bare LF line ends turned into CRLF (files on disk usually
 * have LF). Bounds: AUTH_MSG_MAX bytes, AUTH_MSG_MAX_FIELDS fields, each at
 * most AUTH_MSG_MAX_FIELD bytes; anything beyond is an error, not a cut. */
#define AUTH_MSG_MAX        (64u << 20)
#define AUTH_MSG_MAX_FIELDS 1000
#define AUTH_MSG_MAX_FIELD  (64u << 10)

/* A header field: raw is the whole field as received ("Name: value", folds
 * included, without the final CRLF); name is its name without trailing
 * whitespace. Both point into the message's buffer. */
struct auth_msg_field {
	const char *name;
	size_t name_len;
	const char *raw;
	size_t raw_len;
	size_t value_off; /* offset of the value (just past the colon) in raw */
};

/* Invariant: fields are in message order (top first); body points just
 * past the empty line ending the header, or at the end when there is none. */
struct auth_msg {
	char *buf;
	size_t len;
	size_t n;
	struct auth_msg_field *fields;
	const char *body;
	size_t body_len;
};

int auth_msg_parse(struct auth_msg *m, const char *data, size_t len, struct base_err *err);
void auth_msg_free(struct auth_msg *m);
/* The index of the last (bottom-most) field named name below index before
 * (exclusive; pass m->n to search all), or -1. */
int auth_msg_find_last(const struct auth_msg *m, const char *name, size_t name_len, size_t before);

/* ==== DKIM ============================================================== */

enum auth_dkim_alg { AUTH_DKIM_RSA_SHA256, AUTH_DKIM_ED25519_SHA256 };
/* Relaxed is 0 so that a zeroed options struct asks for relaxed/relaxed. */
enum auth_dkim_canon { AUTH_DKIM_RELAXED = 0, AUTH_DKIM_SIMPLE = 1 };

#define AUTH_DKIM_RSA_MIN_BITS     1024 /* RFC 8301: smaller keys are refused */
#define AUTH_DKIM_RSA_DEFAULT_BITS 2048
#define AUTH_DKIM_MAX_SIGS         16 /* signatures verified per message */

/* Canonicalisation (RFC 6376 §3.4), appended to out. A header field is
 * given as its raw text (no final CRLF); the output ends with CRLF. */
void auth_dkim_canon_header(int canon, const char *raw, size_t len, struct base_buf *out);
void auth_dkim_canon_body(int canon, const char *body, size_t len, struct base_buf *out);

/* A tag=value list (RFC 6376 §3.2), as in DKIM-Signature and key records.
 * Values are trimmed of surrounding whitespace; voff/vend locate the raw
 * value (between '=' and ';' or the end) in the parsed text. */
#define AUTH_DKIM_MAX_TAGS 32
struct auth_dkim_tag {
	char name[16];
	const char *value;
	size_t value_len;
	size_t voff, vend;
};
struct auth_dkim_tags {
	size_t n;
	struct auth_dkim_tag tag[AUTH_DKIM_MAX_TAGS];
};
int auth_dkim_tags_parse(const char *s, size_t len, struct auth_dkim_tags *t, struct base_err *err);
const struct auth_dkim_tag *auth_dkim_tag_get(const struct auth_dkim_tags *t, const char *name);

/* A parsed DKIM-Signature value. Strings are NUL-terminated copies. */
struct auth_dkim_sig {
	int alg;            /* enum auth_dkim_alg */
	int hcanon, bcanon; /* enum auth_dkim_canon */
	char domain[256];   /* d= */
	char selector[128]; /* s= */
	char identity[320]; /* i= ("@d" when absent) */
	char headers[2048]; /* h=, names joined with ':' and lowercased */
	uint8_t bh[64];     /* bh=, decoded */
	size_t bh_len;
	uint8_t b[1024]; /* b=, decoded */
	size_t b_len;
	int64_t timestamp;   /* t=, -1 when absent */
	int64_t expires;     /* x=, -1 when absent */
	int64_t body_length; /* l=, -1 when absent */
	struct auth_dkim_tags tags;
};
int auth_dkim_sig_parse(const char *value, size_t len, struct auth_dkim_sig *sig,
                        struct base_err *err);

/* A key record (s._domainkey.d TXT). */
struct auth_dkim_keyrec {
	int alg;       /* from k= (rsa when absent) */
	int revoked;   /* p= empty */
	int testing;   /* t=y */
	int strict;    /* t=s */
	int sha1_only; /* h= lists no sha256 */
	unsigned bits; /* key size */
	void *pkey;    /* EVP_PKEY *, NULL when revoked */
};
int auth_dkim_keyrec_parse(const char *txt, size_t len, struct auth_dkim_keyrec *k,
                           struct base_err *err);
void auth_dkim_keyrec_free(struct auth_dkim_keyrec *k);

/* A private key for signing. */
struct auth_dkim_key;
int auth_dkim_key_generate(struct auth_dkim_key **out, int alg, unsigned bits,
                           struct base_err *err);
int auth_dkim_key_load(struct auth_dkim_key **out, const char *pem, size_t len,
                       struct base_err *err);
int auth_dkim_key_pem(const struct auth_dkim_key *k, struct base_buf *out, struct base_err *err);
/* "v=DKIM1; k=rsa; p=..." for the selector's TXT record. */
int auth_dkim_key_record(const struct auth_dkim_key *k, struct base_buf *out, struct base_err *err);
int auth_dkim_key_alg(const struct auth_dkim_key *k);
unsigned auth_dkim_key_bits(const struct auth_dkim_key *k);
void auth_dkim_key_free(struct auth_dkim_key *k);

struct auth_dkim_sign_opts {
	const char *domain;          /* d= */
	const char *selector;        /* s= */
	int hcanon, bcanon;          /* enum auth_dkim_canon; zero is relaxed */
	const char *const *headers;  /* names to sign, NULL-terminated; NULL: the default list */
	const char *const *oversign; /* names signed once more than present; NULL: the default */
	int64_t timestamp;           /* t=; 0: now; -1: omit */
	uint32_t expire_after;       /* x= t + this; 0: no x= */
};

/* Signs msg and appends the DKIM-Signature field (name included, folded,
 * ending in CRLF) to out, ready to be put in front of the message. */
int auth_dkim_sign(const struct auth_dkim_key *key, const struct auth_dkim_sign_opts *o,
                   const char *msg, size_t len, struct base_buf *out, struct base_err *err);
/* The b= value (base64) for a DKIM-Signature field given in full with an
 * empty b= (as "DKIM-Signature: ...; b="), over msg. For test vectors. */
int auth_dkim_sign_field(const struct auth_dkim_key *key, const char *msg, size_t len,
                         const char *field, struct base_buf *b64, struct base_err *err);

/* Verification results (RFC 8601 words). */
enum auth_dkim_result {
	AUTH_DKIM_NONE,
	AUTH_DKIM_PASS,
	AUTH_DKIM_FAIL,
	AUTH_DKIM_NEUTRAL,
	AUTH_DKIM_TEMPERROR,
	AUTH_DKIM_PERMERROR,
};
const char *auth_dkim_result_name(int result);

struct auth_dkim_verdict {
	int result;
	char domain[256];
	char selector[128];
	char identity[320];
	char headers[2048]; /* the h= list, lowercased, ':'-joined */
	int alg;
	unsigned key_bits;
	int testing; /* the key has t=y */
	char reason[256];
};

/* Verifies every DKIM-Signature of msg (the first AUTH_DKIM_MAX_SIGS),
 * fetching keys through dns. Fills up to max verdicts and returns how many
 * signatures there were (0: none), or -1 when msg cannot be parsed. */
int auth_dkim_verify(const struct dns_lookup_ops *dns, const char *msg, size_t len, time_t now,
                     struct auth_dkim_verdict *v, size_t max, struct base_err *err);

/* ==== DMARC ============================================================= */

enum auth_dmarc_policy { AUTH_DMARC_NONE, AUTH_DMARC_QUARANTINE, AUTH_DMARC_REJECT };
const char *auth_dmarc_policy_name(int policy);

/* A DMARC record (RFC 7489 §6.3, with DMARCbis's np=, psd= and t=). */
struct auth_dmarc_record {
	int p; /* enum auth_dmarc_policy; none when p= is absent */
	int has_p;
	int sp, np;       /* -1 when absent */
	char adkim, aspf; /* 'r' or 's' */
	unsigned pct;     /* 0..100, 100 when absent */
	char psd;         /* 'y', 'n' or 'u' (absent) */
	int testing;      /* t=y */
	char rua[512];    /* as written, "" when absent */
	char ruf[512];
};
int auth_dmarc_parse(const char *txt, size_t len, struct auth_dmarc_record *r,
                     struct base_err *err);
/* Whether a TXT record's text is a DMARC record (starts with v=DMARC1). */
int auth_dmarc_is_record(const char *txt, size_t len);

/* How the policy record and organisational domains are found. */
enum auth_dmarc_discovery {
	AUTH_DMARC_PSL,      /* RFC 7489: the domain, then its PSL organisational domain */
	AUTH_DMARC_TREEWALK, /* DMARCbis (RFC 9989): the DNS tree walk, at most 8 queries */
};
#define AUTH_DMARC_WALK_MAX 8

/* Result of looking for the record that governs a domain. */
struct auth_dmarc_found {
	int status;       /* 0 found, 1 none, -1 DNS failure */
	char domain[256]; /* where the record was found */
	struct auth_dmarc_record rec;
	unsigned queries;
	char why[256];
};
/* Finds the policy record for an author domain. */
void auth_dmarc_discover(const struct dns_lookup_ops *dns, int mode, const char *domain,
                         struct auth_dmarc_found *f);
/* The organisational domain of name (lowercased into out). Returns 0, or
 * -1 on a DNS failure during a tree walk. */
int auth_dmarc_org_domain(const struct dns_lookup_ops *dns, int mode, const char *name, char *out,
                          size_t outsz);

/* Authentication results DMARC is evaluated on. */
#define AUTH_DMARC_MAX_DKIM 16
struct auth_dmarc_input {
	const char *from_domain; /* RFC5322.From domain */
	int spf_result;          /* enum auth_spf_result */
	const char *spf_domain;  /* the domain SPF checked (MAIL FROM, or HELO) */
	size_t ndkim;
	struct {
		int result; /* enum auth_dkim_result */
		const char *domain;
	} dkim[AUTH_DMARC_MAX_DKIM];
	int mode; /* enum auth_dmarc_discovery */
};

enum auth_dmarc_result {
	AUTH_DMARC_R_NONE,
	AUTH_DMARC_R_PASS,
	AUTH_DMARC_R_FAIL,
	AUTH_DMARC_R_TEMPERROR,
	AUTH_DMARC_R_PERMERROR,
};
const char *auth_dmarc_result_name(int result);

struct auth_dmarc_outcome {
	int result;       /* enum auth_dmarc_result */
	int disposition;  /* the policy that applies (p, sp or np), on fail */
	int spf_aligned;  /* SPF passed for an aligned domain */
	int dkim_aligned; /* a DKIM signature passed for an aligned domain */
	char org_domain[256];
	struct auth_dmarc_found found;
	char reason[256];
};
int auth_dmarc_evaluate(const struct dns_lookup_ops *dns, const struct auth_dmarc_input *in,
                        struct auth_dmarc_outcome *out);

#endif
