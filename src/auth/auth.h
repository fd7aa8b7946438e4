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

#endif
