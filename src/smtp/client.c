/*
 * client.c — the blocking SMTP client of the command-line tools: one
 * socket, one conversation, each step a straight call that returns when the
 * reply is in or its time is up.
 *
 * Bytes from the server go through one bounded buffer, c->buf: a reply line
 * must fit in it whole (SMTP_REPLY_LINE_CAP, CRLF included), a reply may
 * have at most SMTP_REPLY_LINES lines, and the whole reply must arrive
 * within timeout_ms: before every read the socket's receive timeout is set
 * to what is left of that budget, so a server that drips one byte at a
 * time cannot hold the client longer than the timeout either. After
 * STARTTLS the same buffer is fed by SSL_read on the same (blocking)
 * socket; anything the server sent between its 220 and the handshake is
 * refused, never read as if it had come under TLS.
 *
 * Plain writes use MSG_NOSIGNAL; OpenSSL writes with write(2), so every
 * OpenSSL call that may write runs with SIGPIPE blocked in the calling
 * thread and any SIGPIPE it raised taken back before unblocking: a server
 * that goes away gives an error to report, never a killed process.
 */
#include "smtp/smtp.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* ---- replies -------------------------------------------------------------- */

const char *smtp_reply_text(const struct smtp_reply *r, int i)
{
	const char *l = r->lines[i];
	return strlen(l) > 4 ? l + 4 : "";
}

int smtp_reply_has_ext(const struct smtp_reply *r, const char *kw)
{
	size_t n = strlen(kw);
	for (int i = 1; i < r->nlines; i++) {
		const char *t = smtp_reply_text(r, i);
		if (!strncasecmp(t, kw, n) && (t[n] == 0 || t[n] == ' ')) return 1;
	}
	return 0;
}

/* A server's bytes, fit to be shown: controls and non-ASCII as '?'. */
static void printable(char *out, size_t cap, const char *s, size_t n)
{
	size_t k = 0;
	for (; k < n && k + 1 < cap; k++) {
		unsigned char ch = (unsigned char)s[k];
		out[k] = ch < 0x20 || ch > 0x7e ? '?' : (char)ch;
	}
	if (cap) out[k] = 0;
}

/* Adds one line (without CRLF) to r. Returns 1 if more lines follow, 0 at
 * the last, -1 with err. */
static int add_line(struct smtp_reply *r, const char *line, size_t n, struct base_err *err)
{
	int code, more;
	const char *text;
	if (smtp_parse_reply_line(line, n, &code, &more, &text) < 0 || memchr(line, 0, n)) {
		char shown[81];
		printable(shown, sizeof shown, line, n);
		return base_errf(err, "malformed reply line '%s'", shown);
	}
	if (r->nlines && code != r->code)
		return base_errf(err, "reply code changed inside a multi-line reply (%d, then %d)",
		                 r->code, code);
	if (r->nlines == SMTP_REPLY_LINES)
		return base_errf(err, "reply longer than %d lines", SMTP_REPLY_LINES);
	r->code = code;
	memcpy(r->lines[r->nlines], line, n);
	r->lines[r->nlines++][n] = 0;
	return more;
}

/* ---- the socket ----------------------------------------------------------- */

void smtp_client_init(struct smtp_client *c, int fd, unsigned timeout_ms)
{
	memset(c, 0, sizeof *c);
	c->fd = fd;
	c->timeout_ms = timeout_ms;
}

static void set_timeout(int fd, int opt, uint64_t ms)
{
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	if (!tv.tv_sec && !tv.tv_usec) tv.tv_usec = 1000; /* 0 would mean forever */
	setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv);
}

int smtp_client_connect(struct smtp_client *c, const struct base_sockaddr *addr,
                        unsigned timeout_ms, struct base_err *err)
{
	smtp_client_init(c, -1, timeout_ms);
	struct sockaddr_storage ss;
	socklen_t sl = base_sockaddr_to(addr, &ss);
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) return base_errf(err, "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS) {
		base_errf(err, "connect: %s", strerror(errno));
		close(fd);
		return -1;
	}
	struct pollfd p = {fd, POLLOUT, 0};
	int soerr = 0, k;
	socklen_t el = sizeof soerr;
	do k = poll(&p, 1, (int)timeout_ms);
	while (k < 0 && errno == EINTR);
	if (k != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el) < 0 || soerr) {
		base_errf(err, "connect: %s", soerr ? strerror(soerr) : "timed out");
		close(fd);
		return -1;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	set_timeout(fd, SO_SNDTIMEO, timeout_ms);
	c->fd = fd;
	return 0;
}

/* SIGPIPE held back around an OpenSSL call (see the top of the file). */
struct nopipe {
	sigset_t old;
	int was_pending;
};

static void nopipe_begin(struct nopipe *g)
{
	sigset_t pipe, pending;
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	sigpending(&pending);
	g->was_pending = sigismember(&pending, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe, &g->old);
}

static void nopipe_end(struct nopipe *g)
{
	sigset_t pipe, pending;
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	sigpending(&pending);
	if (!g->was_pending && sigismember(&pending, SIGPIPE)) {
		struct timespec zero = {0, 0};
		int e = errno, r; /* errno is the failed call's, still to be reported */
		do r = sigtimedwait(&pipe, NULL, &zero);
		while (r < 0 && errno == EINTR);
		errno = e;
	}
	pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* Why a read or write of k (<= 0) failed. */
static int io_failed(struct smtp_client *c, int k, const char *doing, struct base_err *err)
{
	int e = errno;
	if (c->ssl) {
		int se = SSL_get_error(c->ssl, k);
		if (se == SSL_ERROR_ZERO_RETURN) return base_errf(err, "connection closed");
		if (se == SSL_ERROR_SSL) {
			unsigned long code = ERR_get_error();
			if (ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
				return base_errf(err, "connection closed (no TLS close_notify)");
			char es[200];
			ERR_error_string_n(code, es, sizeof es);
			return base_errf(err, "TLS error %s: %s", doing, es);
		}
		if (se == SSL_ERROR_WANT_READ || se == SSL_ERROR_WANT_WRITE) /* SO_*TIMEO ran out */
			return base_errf(err, "timed out after %u ms %s", c->timeout_ms, doing);
		if (se != SSL_ERROR_SYSCALL) return base_errf(err, "TLS error %s", doing);
	}
	if (k == 0 || (c->ssl && !ERR_peek_error() && e == 0))
		return base_errf(err, "connection closed");
	if (e == EAGAIN || e == EWOULDBLOCK)
		return base_errf(err, "timed out after %u ms %s", c->timeout_ms, doing);
	return base_errf(err, "%s: %s", doing, strerror(e));
}

/* Reads more bytes into c->buf before the deadline. */
static int fill(struct smtp_client *c, uint64_t deadline, struct base_err *err)
{
	for (;;) {
		uint64_t now = base_mono_ns();
		if (now >= deadline)
			return base_errf(err, "timed out after %u ms waiting for a reply",
			                 c->timeout_ms);
		set_timeout(c->fd, SO_RCVTIMEO, (deadline - now) / 1000000);
		size_t room = sizeof c->buf - c->len;
		int k;
		errno = 0;
		if (c->ssl) {
			struct nopipe g;
			nopipe_begin(&g);
			k = SSL_read(c->ssl, c->buf + c->len, (int)room);
			nopipe_end(&g);
		} else {
			k = (int)recv(c->fd, c->buf + c->len, room, 0);
		}
		if (k > 0) {
			c->len += (size_t)k;
			return 0;
		}
		if (!c->ssl && k < 0 && errno == EINTR) continue;
		return io_failed(c, k, "waiting for a reply", err);
	}
}

int smtp_client_read_reply(struct smtp_client *c, struct smtp_reply *r, struct base_err *err)
{
	uint64_t deadline = base_mono_ns() + (uint64_t)c->timeout_ms * 1000000;
	r->code = 0;
	r->nlines = 0;
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->len);
		if (!nl) {
			if (c->len == sizeof c->buf)
				return base_errf(err, "reply line longer than %zu bytes",
				                 sizeof c->buf);
			if (fill(c, deadline, err) < 0) return -1;
			continue;
		}
		size_t n = (size_t)(nl - c->buf);
		size_t m = n && c->buf[n - 1] == '\r' ? n - 1 : n;
		int more = add_line(r, c->buf, m, err);
		memmove(c->buf, nl + 1, c->len - n - 1);
		c->len -= n + 1;
		if (more <= 0) return more;
	}
}

int smtp_client_write(struct smtp_client *c, const void *p, size_t n, struct base_err *err)
{
	const char *s = p;
	while (n) {
		int k;
		errno = 0;
		if (c->ssl) {
			struct nopipe g;
			nopipe_begin(&g);
			k = SSL_write(c->ssl, s, (int)(n > 65536 ? 65536 : n));
			nopipe_end(&g);
		} else {
			k = (int)send(c->fd, s, n > 65536 ? 65536 : n, MSG_NOSIGNAL);
		}
		if (k <= 0) {
			if (!c->ssl && k < 0 && errno == EINTR) continue;
			return io_failed(c, k, "sending", err);
		}
		s += k;
		n -= (size_t)k;
	}
	return 0;
}

int smtp_client_command(struct smtp_client *c, const char *line, struct smtp_reply *r,
                        struct base_err *err)
{
	char out[1024];
	size_t n = strlen(line);
	size_t verb = strcspn(line, " ");
	if (n + 2 > sizeof out)
		return base_errf(err, "command %.*s longer than %zu bytes",
		                 (int)(verb < 16 ? verb : 16), line, sizeof out - 2);
	if (strpbrk(line, "\r\n")) return base_errf(err, "line break inside a command");
	memcpy(out, line, n);
	memcpy(out + n, "\r\n", 2);
	r->code = 0;
	r->nlines = 0;
	int rc = smtp_client_write(c, out, n + 2, err);
	OPENSSL_cleanse(out, n + 2); /* it may hold a credential (AUTH PLAIN) */
	if (rc < 0) {
		/* The verb only: the rest may be a credential (AUTH PLAIN). */
		char why[BASE_ERR_MAX];
		snprintf(why, sizeof why, "%s", err->msg);
		return base_errf(err, "could not send %.*s: %s", (int)(verb < 16 ? verb : 16), line,
		                 why);
	}
	return smtp_client_read_reply(c, r, err);
}

/* ---- TLS ------------------------------------------------------------------ */

int smtp_client_starttls(struct smtp_client *c, const struct smtp_tls_opts *o, struct base_err *err)
{
	if (c->len) return base_errf(err, "the server sent data before the TLS handshake");
	c->ctx = SSL_CTX_new(TLS_client_method());
	if (!c->ctx) return base_errf(err, "TLS setup failed");
	if (o->min_version) SSL_CTX_set_min_proto_version(c->ctx, o->min_version);
	if (o->ca_file) {
		if (SSL_CTX_load_verify_locations(c->ctx, o->ca_file, NULL) != 1)
			return base_errf(err, "%s: cannot load CA certificates", o->ca_file);
		SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_default_verify_paths(c->ctx);
		SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
	}
	SSL *ssl = SSL_new(c->ctx);
	if (!ssl || SSL_set_fd(ssl, c->fd) != 1) {
		SSL_free(ssl);
		return base_errf(err, "TLS setup failed");
	}
	if (o->sni) SSL_set_tlsext_host_name(ssl, o->sni);
	set_timeout(c->fd, SO_RCVTIMEO, c->timeout_ms);
	ERR_clear_error();
	struct nopipe g;
	nopipe_begin(&g);
	int ok = SSL_connect(ssl) == 1;
	nopipe_end(&g);
	if (!ok) {
		unsigned long e = ERR_get_error();
		char es[256] = "connection closed";
		if (e) ERR_error_string_n(e, es, sizeof es);
		SSL_free(ssl);
		return base_errf(err, "TLS handshake failed: %s", es);
	}
	c->ssl = ssl;
	c->tls.version = SSL_get_version(ssl);
	c->tls.cipher = SSL_get_cipher_name(ssl);
	c->tls.verify = SSL_get_verify_result(ssl);
	c->tls.cert = SSL_get1_peer_certificate(ssl);
	return 0;
}

void smtp_client_close(struct smtp_client *c)
{
	if (c->ssl) {
		struct nopipe g;
		nopipe_begin(&g);
		SSL_shutdown(c->ssl);
		nopipe_end(&g);
		SSL_free(c->ssl);
	}
	SSL_CTX_free(c->ctx);
	X509_free(c->tls.cert);
	if (c->fd >= 0) close(c->fd);
	smtp_client_init(c, -1, c->timeout_ms);
}
