/*
 * dane.c — DANE for SMTP (RFC 7672): what a validated TLSA answer says
 * about one MX host, and the OpenSSL settings that make a handshake
 * authenticate the host by it (see dane.h).
 *
 * The answer comes from the relay's resolver, which must validate DNSSEC:
 * it is asked with the DO bit, and an answer counts as secure only when it
 * carries the AD bit (dns.h). The TLSA records are read here from their
 * RDATA, hostile and bounded: usage, selector and matching type, then the
 * association data (at most RELAY_TLSA_DATA_MAX bytes; a digest must have
 * its exact length). Only usages 2 (DANE-TA) and 3 (DANE-EE) are usable
 * for SMTP (RFC 7672 3.1.3); a secure RRset without a usable record still
 * makes TLS mandatory (unauthenticated, as Postfix's "encrypt").
 *
 * OpenSSL does the matching: SSL_dane_enable names the MX host as the
 * reference identifier, each usable record goes in with
 * SSL_dane_tlsa_add, and DANE_FLAG_NO_DANE_EE_NAMECHECKS leaves DANE-EE
 * without a name check (RFC 7672 3.1.1) while DANE-TA checks the name
 * (3.1.2). Wildcards match one whole label only.
 */
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

#include "dns/dns.h"
#include "relay/dane.h"

int relay_tlsa_parse(const uint8_t *rd, size_t len, struct relay_tlsa *out, const char **why)
{
	if (len < 4) {
		*why = len < 3 ? "TLSA record shorter than its 3 fixed bytes"
		               : "TLSA record without association data";
		return -1;
	}
	out->usage = rd[0];
	out->selector = rd[1];
	out->mtype = rd[2];
	out->data = (uint8_t *)rd + 3;
	size_t dl = len - 3;
	if (out->usage != 2 && out->usage != 3) {
		*why = out->usage < 2 ? "TLSA usage 0 or 1 (PKIX) is unusable for SMTP"
		                      : "TLSA usage unknown";
		return 0;
	}
	if (out->selector > 1) {
		*why = "TLSA selector unknown";
		return 0;
	}
	if (out->mtype > 2) {
		*why = "TLSA matching type unknown";
		return 0;
	}
	if ((out->mtype == 1 && dl != 32) || (out->mtype == 2 && dl != 64)) {
		*why = "TLSA digest of the wrong length for its matching type";
		return 0;
	}
	if (dl > RELAY_TLSA_DATA_MAX) {
		*why = "TLSA association data too long";
		return 0;
	}
	out->len = (uint16_t)dl;
	return 1;
}

static struct relay_dane *dane_new(const char *host, int state)
{
	struct relay_dane *d = base_xcalloc(1, sizeof *d);
	d->refs = 1;
	d->state = state;
	snprintf(d->host, sizeof d->host, "%s", host);
	return d;
}

struct relay_dane *relay_dane_from_answer(const char *host, const struct dns_answer *ans)
{
	struct relay_dane *d;
	switch (ans->status) {
	case DNS_LOOKUP_NXDOMAIN:
	case DNS_LOOKUP_NODATA:
		/* secure or not, no TLSA records: DANE does not apply (RFC 7672 2.2) */
		return NULL;
	case DNS_LOOKUP_OK:
		if (!ans->secure) return NULL;
		break;
	default:
		/* SERVFAIL (a validating resolver's answer to bogus data), a
		 * timeout or a malformed answer: the host cannot be used now */
		d = dane_new(host, RELAY_DANE_FAIL);
		snprintf(d->why, sizeof d->why,
		         "451 4.7.5 DANE: TLSA lookup for %s failed (%s%s%s)", host,
		         dns_lookup_status_name(ans->status), ans->why[0] ? ": " : "", ans->why);
		return d;
	}
	d = dane_new(host, RELAY_DANE_UNUSABLE);
	for (size_t i = 0; i < ans->n && d->n < RELAY_TLSA_MAX; i++) {
		struct relay_tlsa t;
		const char *why;
		if (relay_tlsa_parse((const uint8_t *)ans->rr[i].data, ans->rr[i].len, &t, &why) <
		    1) {
			base_debug("_25._tcp.%s: a TLSA record skipped: %s", host, why);
			continue;
		}
		uint8_t *copy = base_xmalloc(t.len);
		memcpy(copy, t.data, t.len);
		t.data = copy;
		d->rr[d->n++] = t;
	}
	if (d->n) d->state = RELAY_DANE_USABLE;
	return d;
}

struct relay_dane *relay_dane_ref(struct relay_dane *d)
{
	if (d) d->refs++;
	return d;
}

void relay_dane_unref(struct relay_dane *d)
{
	if (!d || --d->refs) return;
	for (size_t i = 0; i < d->n; i++) free(d->rr[i].data);
	free(d);
}

int relay_dane_ssl(SSL *ssl, const struct relay_dane *d)
{
	if (SSL_dane_enable(ssl, d->host) <= 0) return -1;
	if (d->alias[0] && SSL_add1_host(ssl, d->alias) != 1) return -1;
	SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
	SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	int usable = 0;
	for (size_t i = 0; i < d->n; i++) {
		const struct relay_tlsa *t = &d->rr[i];
		int rc = SSL_dane_tlsa_add(ssl, t->usage, t->selector, t->mtype, t->data, t->len);
		if (rc < 0) return -1;
		usable += rc > 0;
	}
	return usable ? 0 : -1;
}

int relay_dane_matched(SSL *ssl)
{
	uint8_t usage, selector, mtype;
	const unsigned char *data;
	size_t dlen;
	if (SSL_get0_dane_authority(ssl, NULL, NULL) < 0) return -1;
	if (SSL_get0_dane_tlsa(ssl, &usage, &selector, &mtype, &data, &dlen) < 0) return -1;
	return usage;
}
