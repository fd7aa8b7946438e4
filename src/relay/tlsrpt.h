/*
 * tlsrpt.h — SMTP TLS Reporting (RFC 8460) as a sending MTA (inside
 * src/relay only, but for the CLI's `mailrep tlsrpt show`, which reaches
 * it through relay.h). Two halves:
 *
 * - tlsrpt_report.c, pure: the day's counters (struct tlsrpt_day: per
 *   policy domain, the policies that applied, their successful and failed
 *   sessions and failure-detail rows, all bounded), their state file, the
 *   `_smtp._tls` TXT record (§3) and the JSON report (§4). Parsers of
 *   hostile input return 0 or -1 with an error naming what and where.
 * - tlsrpt.c, the daemon's side: what mta.c reports after each session,
 *   the periodic write of SPOOL/tlsrpt/DAY, and once a day the reports.
 *
 * Invariant of struct tlsrpt_day: at most TLSRPT_DOMAINS_MAX domains, each
 * with at most TLSRPT_POLICIES_MAX policies and TLSRPT_ROWS_MAX failure
 * rows per policy; a session that does not fit is counted in `dropped`
 * (of the day, or of the domain) and nowhere else.
 */
#ifndef MAILREP_RELAY_TLSRPT_H
#define MAILREP_RELAY_TLSRPT_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#define TLSRPT_DOMAINS_MAX  4096
#define TLSRPT_POLICIES_MAX 4
#define TLSRPT_ROWS_MAX     32
#define TLSRPT_STRINGS_MAX  80  /* policy-string lines (and mx-host patterns) of one policy */
#define TLSRPT_LINE_MAX     600 /* one policy-string line */
#define TLSRPT_RUA_MAX      8
#define TLSRPT_URI_MAX      512
#define TLSRPT_FILE_MAX     (64u << 20) /* the state file */

enum tlsrpt_policy_type { TLSRPT_STS = 1, TLSRPT_TLSA, TLSRPT_NO_POLICY };

/* The result types of RFC 8460 4.3. */
enum tlsrpt_result {
	TLSRPT_STARTTLS_NOT_SUPPORTED = 1,
	TLSRPT_CERT_HOST_MISMATCH,
	TLSRPT_CERT_EXPIRED,
	TLSRPT_CERT_NOT_TRUSTED,
	TLSRPT_VALIDATION_FAILURE,
	TLSRPT_TLSA_INVALID,
	TLSRPT_DNSSEC_INVALID,
	TLSRPT_DANE_REQUIRED,
	TLSRPT_STS_FETCH_ERROR,
	TLSRPT_STS_POLICY_INVALID,
	TLSRPT_STS_WEBPKI_INVALID,
	TLSRPT_RESULT_LAST = TLSRPT_STS_WEBPKI_INVALID
};
const char *tlsrpt_result_name(int r);
int tlsrpt_result_parse(const char *s);

/* One failure-details row: the sessions that failed alike. */
struct tlsrpt_row {
	int result;          /* enum tlsrpt_result */
	char sending_ip[46]; /* "" when unknown */
	char receiving_ip[46];
	char mx[256];
	uint64_t count;
};

/* A policy as it applied: its type and, for sts and tlsa, its policy
 * strings ("version: STSv1", ...; "3 1 1 HEX", ...) and for sts its mx
 * patterns, each line NUL-separated in one block. */
struct tlsrpt_policy {
	int type; /* enum tlsrpt_policy_type */
	char *strings;
	size_t nstrings, slen;
	char *mx;
	size_t nmx, mlen;
	uint64_t ok, failed;
	struct tlsrpt_row rows[TLSRPT_ROWS_MAX];
	size_t nrows;
	uint64_t dropped; /* failed sessions without a row (the rows were full) */
};

struct tlsrpt_domain {
	char name[256];
	struct tlsrpt_policy pol[TLSRPT_POLICIES_MAX];
	size_t npol;
	uint64_t dropped;           /* sessions under a policy that did not fit */
	struct tlsrpt_domain *next; /* hash chain */
};

#define TLSRPT_BUCKETS 1024
struct tlsrpt_day {
	char day[11]; /* YYYY-MM-DD, UTC */
	struct tlsrpt_domain *b[TLSRPT_BUCKETS];
	size_t n;
	uint64_t dropped; /* sessions of domains beyond TLSRPT_DOMAINS_MAX */
	uint64_t changes; /* bumped by every record: the writer compares */
};

/* What one session contributes. strings/mx: lines, nstrings/nmx of them. */
struct tlsrpt_session {
	const char *domain;
	int type;
	const char *const *strings;
	size_t nstrings;
	const char *const *mx;
	size_t nmx;
	int result; /* 0: success */
	const char *sending_ip, *receiving_ip, *mx_host;
};

void tlsrpt_day_init(struct tlsrpt_day *d, const char *day);
void tlsrpt_day_free(struct tlsrpt_day *d);
void tlsrpt_day_add(struct tlsrpt_day *d, const struct tlsrpt_session *s);
struct tlsrpt_domain *tlsrpt_day_find(const struct tlsrpt_day *d, const char *domain);
/* The domains sorted by name (a new array of d->n pointers; free it). */
struct tlsrpt_domain **tlsrpt_day_sorted(const struct tlsrpt_day *d);

/* The state file SPOOL/tlsrpt/DAY (see tlsrpt_report.c for its lines). */
void tlsrpt_state_format(const struct tlsrpt_day *d, struct base_buf *out);
/* Fills d (tlsrpt_day_init'ed by the call) or returns -1 with err naming
 * the line ("line 4: ..."); d is then empty. */
int tlsrpt_state_parse(const char *text, size_t len, struct tlsrpt_day *d, struct base_err *err);

/* One TXT record of _smtp._tls.DOMAIN (§3): 1 with its rua URIs (mailto:
 * and https: ones; others are skipped), 0 when it does not start with
 * "v=TLSRPTv1" (discarded), -1 with err when it does but is invalid, or
 * names no URI the relay can use. */
struct tlsrpt_rua {
	size_t n;
	char uri[TLSRPT_RUA_MAX][TLSRPT_URI_MAX];
};
int tlsrpt_txt_parse(const char *txt, size_t len, struct tlsrpt_rua *rua, struct base_err *err);

/* The JSON report (§4) of one domain of a day. */
struct tlsrpt_meta {
	const char *org;     /* organization-name */
	const char *contact; /* contact-info */
	const char *report_id;
};
void tlsrpt_json(const struct tlsrpt_day *d, const struct tlsrpt_domain *dom,
                 const struct tlsrpt_meta *meta, struct base_buf *out);
/* Appends s as a JSON string (quoted; control characters, quotes and
 * backslashes escaped; bytes >= 0x80 as they are). */
void tlsrpt_json_str(struct base_buf *out, const char *s);

/* A report whose delivery is to be tried again (RFC 8460 5.4), as kept in
 * SPOOL/tlsrpt/retry/NAME (see tlsrpt_report.c for its lines). The pending
 * reports are at most TLSRPT_RETRY_MAX, their reports TLSRPT_RETRY_BYTES
 * together; each is given up TLSRPT_RETRY_SPAN after its first attempt. */
#define TLSRPT_RETRY_MAX    256
#define TLSRPT_RETRY_BYTES  (16u << 20)
#define TLSRPT_REPORT_MAX   (1u << 20) /* one gzip report */
#define TLSRPT_RETRY_SPAN   86400
#define TLSRPT_RETRY_CAP    14400 /* the longest interval between attempts */
#define TLSRPT_ATTEMPTS_MAX 1000
struct tlsrpt_retry {
	char domain[256];
	char day[11];
	char uri[TLSRPT_URI_MAX]; /* mailto:ADDRESS (without ?query) or https://... */
	int64_t first;            /* the first attempt */
	int64_t next;             /* the next one */
	uint32_t attempts;        /* failed so far */
	const char *report;       /* the gzip report (into the parsed text) */
	size_t len;
};
void tlsrpt_retry_format(const struct tlsrpt_retry *r, struct base_buf *out);
/* Fills r (its report points into text) or returns -1 with err naming the
 * line and its byte offset ("line 3 (offset 40): ..."). */
int tlsrpt_retry_parse(const char *text, size_t len, struct tlsrpt_retry *r, struct base_err *err);
/* Seconds to wait after the attempts-th failure (attempts >= 1): first,
 * then three times the previous wait, at most TLSRPT_RETRY_CAP (or first,
 * when that is longer). */
uint32_t tlsrpt_retry_wait(uint32_t first, uint32_t attempts);

/* A day "YYYY-MM-DD" that is a real date (also the state file's name). */
int tlsrpt_day_ok(const char *s);

#endif
