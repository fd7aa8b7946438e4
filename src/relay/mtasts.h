/*
 * mtasts.h — MTA-STS (RFC 8461) for the relay's delivery (inside
 * src/relay only). Two halves:
 *
 * - mtasts_policy.c, pure parsers of hostile input: the `_mta-sts` TXT
 *   record (§3.1), the policy file (§3.2), the HTTP response that carries
 *   it, the on-disk cache file, and the match of an MX host against the
 *   policy's `mx` patterns (§4.1). Each takes bounded input and returns 0
 *   or -1 with an error that names what was wrong and where (line N).
 * - mtasts.c, the daemon's side: discovery through the relay's resolver,
 *   the HTTPS fetch on a worker thread, the per-domain cache in memory and
 *   under SPOOL/mta-sts/, and what a policy means for a delivery.
 */
#ifndef MAILREP_RELAY_MTASTS_H
#define MAILREP_RELAY_MTASTS_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#define MTASTS_ID_MAX       32                        /* sts-id = 1*32(ALPHA / DIGIT) */
#define MTASTS_MX_MAX       64                        /* mx patterns kept from one policy */
#define MTASTS_BODY_MAX     65536                     /* a policy file, in bytes */
#define MTASTS_MAX_AGE_MAX  31557600u                 /* §3.2: at most a year */
#define MTASTS_RESPONSE_MAX (MTASTS_BODY_MAX + 16384) /* with the status line and headers */

enum mtasts_mode { MTASTS_NONE = 0, MTASTS_TESTING, MTASTS_ENFORCE };

struct mtasts_policy {
	enum mtasts_mode mode;
	uint32_t max_age;
	size_t nmx;
	char mx[MTASTS_MX_MAX][256]; /* lower case, "*.example.net" for a wildcard */
};

/* One TXT record of _mta-sts.DOMAIN: 1 with its id (NUL-terminated) when it
 * is a valid STSv1 record, 0 when it does not start with "v=STSv1" (not a
 * candidate: discarded, §3.1), -1 with err when it starts so but is not
 * valid. */
int mtasts_txt_parse(const char *txt, size_t len, char id[MTASTS_ID_MAX + 1], struct base_err *err);

/* A policy file (CRLF or LF lines of "key: value"). 0, or -1 with err
 * naming the line ("line 3: mode must be enforce, testing or none"). */
int mtasts_policy_parse(const char *text, size_t len, struct mtasts_policy *p,
                        struct base_err *err);

/* 1 when host (any case, a trailing dot allowed) matches one of the
 * policy's mx patterns: exactly, or "*.rest" with one label before rest. */
int mtasts_mx_match(const struct mtasts_policy *p, const char *host);

/* An HTTP/1.x response as read up to the end of the connection: 0 with the
 * body (pointing into buf) when the status is 2xx, the media type is
 * text/plain and the body is whole and at most MTASTS_BODY_MAX bytes; -1
 * with err otherwise (a 3xx is refused: redirects are not followed). */
int mtasts_http_parse(const char *buf, size_t len, const char **body, size_t *blen,
                      struct base_err *err);

/* The cache file SPOOL/mta-sts/DOMAIN: "id ID\nfetched EPOCH\n\n" and the
 * policy text as fetched. mtasts_cache_parse fills id, fetched and the
 * parsed policy (errors name the line of the file). */
void mtasts_cache_format(struct base_buf *out, const char *id, int64_t fetched, const char *body,
                         size_t blen);
int mtasts_cache_parse(const char *text, size_t len, char id[MTASTS_ID_MAX + 1], int64_t *fetched,
                       struct mtasts_policy *p, struct base_err *err);

/* A recipient domain as a cache file name: lower case LDH labels only. */
int mtasts_domain_ok(const char *domain);

/* ---- the daemon's side (mtasts.c) ---------------------------------------- */

struct relay_ctx;
struct relay_hops;

int relay_mtasts_start(struct relay_ctx *x, struct base_err *err);
void relay_mtasts_stop(struct relay_ctx *x);

/* For an MX-routed domain whose MX hosts are *site / *hops: 1 to deliver
 * (under enforce, *site and *hops are narrowed to the MX hosts the policy
 * names), 0 while the policy is being discovered or fetched (look again
 * later), -1 with a transient failure in code and reply (enforce and no MX
 * host matches). */
int relay_mtasts_route(struct relay_ctx *x, const char *domain, const char **site,
                       const struct relay_hops **hops, int *code, const char **reply);

/* The domain's policy for STARTTLS: 1 when enforce applies (TLS with a
 * certificate verified for the MX host name), 2 when testing applies (the
 * verification runs and is only reported), 0 otherwise (and when
 * MTA-STS does not apply to the domain: relay_mtasts_applies). */
int relay_mtasts_tls(struct relay_ctx *x, const char *domain);

/* The domain's policy in force (NULL: none, or MTA-STS does not apply to
 * the domain), for TLS reports. */
const struct mtasts_policy *relay_mtasts_policy(struct relay_ctx *x, const char *domain);

/* What to say in the accounting line of an attempt to domain over the MX
 * host mx ("enforce", "testing", "testing-fail"), NULL without a policy.
 * tls: the transaction ran over TLS; verified: its certificate verified
 * for mx. */
const char *relay_mtasts_acct(struct relay_ctx *x, const char *domain, const char *mx, int tls,
                              int verified);

#endif
