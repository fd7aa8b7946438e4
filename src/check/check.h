/*
 * check — the deliverability checker: probes of a domain's (and later an
 * IP's, an SMTP server's and a message's) mail setup, each finding said in
 * words that tell what to fix, as a human report and as JSON.
 */
#ifndef MAILREP_CHECK_H
#define MAILREP_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "dns/dns.h"

/* Exit statuses shared by the check commands. */
enum { CHECK_CLEAN = 0, CHECK_PROBLEMS = 1, CHECK_USAGE = 2, CHECK_COULD_NOT = 3 };

#define CHECK_MAX_SELECTORS 16

struct check_domain_opts {
	const char *domain;
	const char *selectors[CHECK_MAX_SELECTORS];
	size_t nselectors;
	const char *ip;        /* evaluate SPF for this client when set */
	const char *mail_from; /* MAIL FROM for the evaluation (default postmaster@domain) */
	const char *helo;      /* HELO name for the evaluation (default the domain) */
};

/* Runs every domain check through dns. Appends one JSON object to json and
 * the human report to text. Returns CHECK_CLEAN, CHECK_PROBLEMS or
 * CHECK_COULD_NOT (a DNS failure kept a check from finishing), or -1 with
 * err filled for bad options. */
int check_domain(const struct dns_lookup_ops *dns, const struct check_domain_opts *o,
                 struct base_buf *json, struct base_buf *text, struct base_err *err);

/* ---- check ip: DNSBLs, PTR and forward-confirmed reverse DNS ------------ */

enum { CHECK_DNSBL_IP4 = 1, CHECK_DNSBL_IP6 = 2, CHECK_DNSBL_BOTH = 3 };

#define CHECK_DNSBL_MAX_LISTS 256 /* lists in one file */
#define CHECK_DNSBL_MAX_CODES 32  /* return codes described per list */
#define CHECK_DNSBL_FILE_MAX  (1u << 20)

struct check_dnsbl_code {
	uint8_t addr[4]; /* 127.0.0.x */
	char meaning[64];
};

/* One list of the data file: "zone | kind | name | codes | url". */
struct check_dnsbl {
	char zone[254];
	char name[64];
	int kind; /* CHECK_DNSBL_IP4/IP6/BOTH */
	size_t ncodes;
	struct check_dnsbl_code codes[CHECK_DNSBL_MAX_CODES];
	char url[256];
};

struct check_dnsbl_set {
	size_t n;
	struct check_dnsbl *lists;
};

/* Parses a list file held in memory; where names it in errors (file:line). */
int check_dnsbl_parse(const char *text, size_t len, const char *where, struct check_dnsbl_set *set,
                      struct base_err *err);
/* Reads and parses a list file (at most CHECK_DNSBL_FILE_MAX bytes). */
int check_dnsbl_load(const char *path, struct check_dnsbl_set *set, struct base_err *err);
void check_dnsbl_set_free(struct check_dnsbl_set *set);

/* What one DNSBL answer means. */
enum check_verdict {
	CHECK_V_NOT_LISTED = 0, /* NXDOMAIN (or no A record) */
	CHECK_V_LISTED,         /* A records in 127.0.0.0/8, none 127.255.255.x */
	CHECK_V_LIST_ERROR,     /* 127.255.255.x (the list refuses the query) or outside 127/8 */
	CHECK_V_DNS_FAILED,     /* SERVFAIL, timeout or a malformed answer */
};
int check_dnsbl_classify(const struct dns_answer *a);

/* Whether a PTR name looks assigned by an access provider rather than
 * chosen for a mail server: the address's digits embedded in it, or words
 * like dynamic, dhcp, pool, dsl, cable, ppp. Returns 1 and says why in why
 * (which may be NULL), or 0. family is AF_INET (ip: 4 bytes) or AF_INET6. */
int check_ptr_generic(const char *ptr, int family, const uint8_t *ip, char *why, size_t whysz);

struct check_ip_opts {
	const char *ip;
	const struct check_dnsbl_set *lists;
};

/* Queries every list (the listing, its TXT reason and the RFC 5782 test
 * entries) and the PTR at once through r, then the PTR names' addresses.
 * Same outputs and return values as check_domain. */
int check_ip(struct dns_resolver *r, const struct check_ip_opts *o, struct base_buf *json,
             struct base_buf *text, struct base_err *err);

/* ---- check smtp: banner, EHLO, STARTTLS, PTR, open relay ------------------- */

struct check_smtp_opts {
	const char *target;     /* HOST[:PORT], IP[:PORT] or [IPv6]:PORT; port 25 by default */
	const char *helo;       /* EHLO name (default mailrep-check.invalid) */
	int open_relay_probe;   /* MAIL FROM/RCPT TO outside addresses, then RSET: never DATA */
	const char *relay_from; /* probe addresses (defaults under .example/.test) */
	const char *relay_to;
	unsigned timeout_ms; /* per step; 0 means 10000 */
};

/* Holds one SMTP conversation with the target, resolving host names only
 * through dns. Same outputs and return values as check_domain. */
int check_smtp(const struct dns_lookup_ops *dns, const struct check_smtp_opts *o,
               struct base_buf *json, struct base_buf *text, struct base_err *err);

/* ---- check message: DKIM, SPF, DMARC and the bulk-sender rules ------------- */

struct check_message_opts {
	const char *ip;        /* client address, for SPF (needs mail_from) */
	const char *mail_from; /* MAIL FROM */
	const char *helo;      /* HELO name (default the MAIL FROM domain) */
};

/* Checks one RFC 5322 message (at most AUTH_MSG_MAX bytes). Same outputs
 * and return values as check_domain; -1 also for an unparsable message. */
int check_message(const struct dns_lookup_ops *dns, const struct check_message_opts *o,
                  const char *data, size_t len, struct base_buf *json, struct base_buf *text,
                  struct base_err *err);

#endif
