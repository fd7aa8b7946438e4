/*
 * tls.c — TLS contexts for the relay's STARTTLS on both sides (see tls.h).
 * The bufferevent plumbing lives with each side (server.c, mta.c); here
 * are only the OpenSSL settings, so they are the same for both.
 */
#include <openssl/err.h>
#include <string.h>

#include "relay/int.h"
#include "relay/tls.h"

const char *relay_tls_error(char *buf, size_t n)
{
	unsigned long e = ERR_get_error();
	if (!e) {
		snprintf(buf, n, "connection closed during the handshake");
	} else {
		ERR_error_string_n(e, buf, n);
		ERR_clear_error();
	}
	return buf;
}

static SSL_CTX *new_ctx(const SSL_METHOD *m)
{
	SSL_CTX *c = SSL_CTX_new(m);
	if (!c) return NULL;
	SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
	SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_mode(c, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return c;
}

int relay_tls_init(struct relay_tls *t, const char *cert, const char *key, const char *ca,
                   struct base_err *err)
{
	char e[256];
	memset(t, 0, sizeof *t);
	if (cert) {
		t->server = new_ctx(TLS_server_method());
		if (!t->server) goto ssl_fail;
		if (SSL_CTX_use_certificate_chain_file(t->server, cert) != 1) {
			base_errf(err, "tls-cert %s: %s", cert, relay_tls_error(e, sizeof e));
			goto fail;
		}
		if (SSL_CTX_use_PrivateKey_file(t->server, key ? key : cert, SSL_FILETYPE_PEM) !=
		        1 ||
		    SSL_CTX_check_private_key(t->server) != 1) {
			base_errf(err, "tls-key %s: %s", key ? key : cert,
			          relay_tls_error(e, sizeof e));
			goto fail;
		}
	}
	t->client = new_ctx(TLS_client_method());
	t->verify = new_ctx(TLS_client_method());
	t->dane = new_ctx(TLS_client_method());
	if (!t->client || !t->verify || !t->dane) goto ssl_fail;
	/* no trust store: DANE-TA and DANE-EE records are the only anchors */
	if (SSL_CTX_dane_enable(t->dane) <= 0) goto ssl_fail;
	SSL_CTX_set_verify(t->dane, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_verify(t->client, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_verify(t->verify, SSL_VERIFY_PEER, NULL);
	if (ca ? SSL_CTX_load_verify_locations(t->verify, ca, NULL) != 1
	       : SSL_CTX_set_default_verify_paths(t->verify) != 1) {
		base_errf(err, "tls-ca %s: %s", ca ? ca : "(system store)",
		          relay_tls_error(e, sizeof e));
		goto fail;
	}
	return 0;
ssl_fail:
	base_errf(err, "TLS: %s", relay_tls_error(e, sizeof e));
fail:
	relay_tls_free(t);
	return -1;
}

void relay_tls_free(struct relay_tls *t)
{
	if (t->server) SSL_CTX_free(t->server);
	if (t->client) SSL_CTX_free(t->client);
	if (t->verify) SSL_CTX_free(t->verify);
	if (t->dane) SSL_CTX_free(t->dane);
	memset(t, 0, sizeof *t);
}

enum relay_tls_mode relay_tls_mode_for(const struct relay_config *c, const char *domain)
{
	enum relay_tls_mode dflt = RELAY_TLS_OPPORTUNISTIC;
	for (size_t i = 0; i < c->ntls_policy; i++) {
		if (!strcmp(c->tls_policy[i].domain, "*"))
			dflt = c->tls_policy[i].mode;
		else if (!base_strcasecmp_ascii(c->tls_policy[i].domain, domain))
			return c->tls_policy[i].mode;
	}
	return dflt;
}
