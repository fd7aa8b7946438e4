/*
 * https.h — the relay's blocking HTTPS client (inside src/relay only), for
 * worker threads: the MTA-STS policy fetch (mtasts.c) and the TLS reports'
 * POST (tlsrpt.c). One request to one address, TLS 1.2 or later with SNI
 * and the certificate verified for the host name by the context given,
 * HTTP/1.0 so that the server ends the response by closing.
 */
#ifndef MAILREP_RELAY_HTTPS_H
#define MAILREP_RELAY_HTTPS_H

#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

struct relay_https {
	SSL_CTX *ctx;     /* verifies the peer's chain (relay_tls.verify) */
	const char *host; /* SNI, the name the certificate must be for */
	uint16_t port;
	atomic_int *stop;  /* set: give up at once ("relay stopping") */
	uint64_t deadline; /* base_mono_ns() by which everything is done */
	size_t max;        /* the most of the response kept */
};

/* Connects to a (port h->port), sends req (req_len bytes: the request's
 * head and body) and reads the response to the end into resp: 0, or -1
 * with why (n bytes). */
int relay_https_exchange(const struct relay_https *h, const struct base_sockaddr *a,
                         const char *req, size_t req_len, struct base_buf *resp, char *why,
                         size_t n);

#endif
