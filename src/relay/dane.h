/*
 * dane.h — DANE for SMTP (RFC 7672) at delivery (inside src/relay only).
 *
 * What DANE says about one MX host is a struct relay_dane, made from the
 * validated answer to `_25._tcp.HOST TLSA` (dane.c) and shared by the MX
 * cache entry (lookup.c), the destinations (relay.c) and the connections
 * (mta.c) that use the host, by reference count: it never changes once
 * made. No object at all means DANE does not apply to the host (the
 * domain's MX RRset or the host's addresses are insecure, the TLSA RRset
 * is insecure or absent, or --dane is off).
 */
#ifndef MAILREP_RELAY_DANE_H
#define MAILREP_RELAY_DANE_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

struct dns_answer;

#define RELAY_TLSA_MAX      16   /* usable records kept per host; more are ignored */
#define RELAY_TLSA_DATA_MAX 4096 /* the association data of one record (a full certificate) */

/* One TLSA record (RFC 6698 2.1). */
struct relay_tlsa {
	uint8_t usage, selector, mtype;
	uint16_t len;
	uint8_t *data;
};

enum relay_dane_state {
	RELAY_DANE_USABLE = 1, /* secure, with usable records: STARTTLS authenticated by them */
	RELAY_DANE_UNUSABLE,   /* secure, records present, none usable: STARTTLS, unauthenticated */
	RELAY_DANE_FAIL,       /* the lookup failed (SERVFAIL, bogus...): the host is not used */
};

struct relay_dane {
	unsigned refs;
	int state; /* enum relay_dane_state */
	char host[256];  /* the TLSA base domain: the reference identifier */
	char alias[256]; /* the MX host's other name (CNAME), also accepted; "" none */
	char why[448]; /* FAIL: the reply text ("451 4.7.5 DANE: ...") */
	size_t n;      /* USABLE: usable records in rr */
	struct relay_tlsa rr[RELAY_TLSA_MAX];
};

/* One TLSA RDATA (hostile, len bytes): 1 with *out filled (data pointing
 * into rd) when the record is usable for SMTP (usage 2 DANE-TA or 3
 * DANE-EE, selector 0 or 1, matching type 0, 1 (32 bytes) or 2 (64
 * bytes)); 0 with why when it is well formed but unusable (RFC 7672
 * 3.1.3: usages 0 and 1, unknown parameters, a digest of the wrong
 * length); -1 with why when it is malformed. */
int relay_tlsa_parse(const uint8_t *rd, size_t len, struct relay_tlsa *out, const char **why);

/* What a TLSA answer for host means: NULL when DANE does not apply (an
 * insecure answer: no AD; or a secure NXDOMAIN or NODATA), else a new
 * object (one reference): FAIL for a failed lookup (SERVFAIL, timeout,
 * a malformed answer; a validating resolver answers SERVFAIL for bogus
 * data), USABLE or UNUSABLE for secure records. */
struct relay_dane *relay_dane_from_answer(const char *host, const struct dns_answer *ans);
struct relay_dane *relay_dane_ref(struct relay_dane *d);
void relay_dane_unref(struct relay_dane *d);

/* Makes ssl authenticate its peer by d's records (SSL_dane_enable with
 * d->host as the reference identifier: DANE-TA checks the name, DANE-EE
 * does not). The context must have SSL_CTX_dane_enable. 0 or -1. */
int relay_dane_ssl(SSL *ssl, const struct relay_dane *d);
/* After a handshake: the usage (2 or 3) of the record that authenticated
 * the peer, -1 when DANE did not. */
int relay_dane_matched(SSL *ssl);

#endif
