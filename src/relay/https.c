/*
 * https.c — a blocking HTTPS exchange for the relay's worker threads (see
 * https.h): the MTA-STS policy fetch and the TLS reports' POST share it.
 * Every wait is a poll in slices of at most 200 ms, so that a stopping
 * relay is not held up, and the whole exchange is bounded by the caller's
 * deadline and the most of the response it keeps.
 */
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay/https.h"
#include "relay/tls.h"

/* Waits for fd to be ready for ev until the deadline: 0, or -1 with why. */
static int wait_fd(const struct relay_https *h, int fd, short ev, char *why, size_t n)
{
	for (;;) {
		if (h->stop && atomic_load(h->stop)) return snprintf(why, n, "relay stopping"), -1;
		uint64_t now = base_mono_ns();
		if (now >= h->deadline) return snprintf(why, n, "timeout"), -1;
		uint64_t left = (h->deadline - now) / 1000000 + 1;
		struct pollfd p = {.fd = fd, .events = ev};
		int r = poll(&p, 1, left > 200 ? 200 : (int)left);
		if (r > 0) return 0;
		if (r < 0 && errno != EINTR)
			return snprintf(why, n, "poll: %s", strerror(errno)), -1;
	}
}

/* Runs an SSL call until done, waiting on the socket as it asks. */
static int ssl_wait(const struct relay_https *h, SSL *ssl, int fd, int r, char *why, size_t n)
{
	int e = SSL_get_error(ssl, r);
	if (e == SSL_ERROR_WANT_READ) return wait_fd(h, fd, POLLIN, why, n);
	if (e == SSL_ERROR_WANT_WRITE) return wait_fd(h, fd, POLLOUT, why, n);
	return -2;
}

static void ssl_why(SSL *ssl, const char *what, char *why, size_t n)
{
	long vr = SSL_get_verify_result(ssl);
	char e[256];
	if (vr != X509_V_OK)
		snprintf(why, n, "%s: certificate not accepted: %s", what,
		         X509_verify_cert_error_string(vr));
	else
		snprintf(why, n, "%s: %s", what, relay_tls_error(e, sizeof e));
}

int relay_https_exchange(const struct relay_https *h, const struct base_sockaddr *a,
                         const char *req, size_t req_len, struct base_buf *resp, char *why,
                         size_t n)
{
	struct base_sockaddr to = *a;
	to.port = h->port;
	struct sockaddr_storage ss;
	socklen_t sl = base_sockaddr_to(&to, &ss);
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) return snprintf(why, n, "socket: %s", strerror(errno)), -1;
	SSL *ssl = NULL;
	int rc = -1;
	if (connect(fd, (struct sockaddr *)&ss, sl) < 0) {
		if (errno != EINPROGRESS) {
			snprintf(why, n, "connect: %s", strerror(errno));
			goto out;
		}
		if (wait_fd(h, fd, POLLOUT, why, n) < 0) goto out;
		int soerr = 0;
		socklen_t el = sizeof soerr;
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el);
		if (soerr) {
			snprintf(why, n, "connect: %s", strerror(soerr));
			goto out;
		}
	}
	ssl = SSL_new(h->ctx);
	if (!ssl || SSL_set_fd(ssl, fd) != 1 || SSL_set_tlsext_host_name(ssl, h->host) != 1 ||
	    SSL_set1_host(ssl, h->host) != 1) {
		snprintf(why, n, "TLS setup failed");
		goto out;
	}
	/* the server may close without close_notify; the body's length is
	 * checked against Content-Length by the caller */
	SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_set_connect_state(ssl);
	int r;
	while ((r = SSL_connect(ssl)) != 1) {
		int w = ssl_wait(h, ssl, fd, r, why, n);
		if (w == -2) ssl_why(ssl, "TLS handshake", why, n);
		if (w < 0) goto out;
	}
	for (size_t off = 0; off < req_len;) {
		size_t chunk = req_len - off > 65536 ? 65536 : req_len - off;
		r = SSL_write(ssl, req + off, (int)chunk);
		if (r > 0) {
			off += (size_t)r;
			continue;
		}
		int w = ssl_wait(h, ssl, fd, r, why, n);
		if (w == -2) ssl_why(ssl, "write", why, n);
		if (w < 0) goto out;
	}
	char chunk[16384];
	for (;;) {
		r = SSL_read(ssl, chunk, sizeof chunk);
		if (r > 0) {
			if (resp->len + (size_t)r > h->max) {
				snprintf(why, n, "response larger than %zu bytes", h->max);
				goto out;
			}
			base_buf_append(resp, chunk, (size_t)r);
			continue;
		}
		int e = SSL_get_error(ssl, r);
		if (e == SSL_ERROR_ZERO_RETURN) break;
		int w = ssl_wait(h, ssl, fd, r, why, n);
		if (w == -2) ssl_why(ssl, "read", why, n);
		if (w < 0) goto out;
	}
	rc = 0;
out:
	if (ssl) SSL_free(ssl);
	close(fd);
	ERR_clear_error();
	return rc;
}
