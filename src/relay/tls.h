/*
 * tls.h — the relay's TLS contexts (inside src/relay only): the server
 * context for STARTTLS at reception (the configured certificate and key)
 * and the client contexts for STARTTLS at delivery (one that checks
 * nothing, for opportunistic and required TLS, and one that verifies the
 * peer's chain, for the verify policy). TLS 1.2 is the minimum everywhere.
 */
#ifndef MAILREP_RELAY_TLS_H
#define MAILREP_RELAY_TLS_H

#include <openssl/ssl.h>

#include "base/base.h"

struct relay_tls {
	SSL_CTX *server; /* NULL without --tls-cert */
	SSL_CTX *client; /* no certificate check */
	SSL_CTX *verify; /* chain checked against --tls-ca or the system store */
	SSL_CTX *dane;   /* DANE (dane.c): the peer authenticated by TLSA records only */
};

int relay_tls_init(struct relay_tls *t, const char *cert, const char *key, const char *ca,
                   struct base_err *err);
void relay_tls_free(struct relay_tls *t);
/* The last OpenSSL error of this thread as text (and clears the queue). */
const char *relay_tls_error(char *buf, size_t n);

#endif
