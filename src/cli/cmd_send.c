/*
 * cmd_send.c — `mailrep send`: local injection in the manner of sendmail.
 * Reads a message on standard input and submits it over SMTP to a relay
 * (by default the `listen` address of the config file's [relay] section),
 * optionally after STARTTLS and AUTH PLAIN. A blocking client: one
 * connection, one transaction, every read and write under a timeout.
 *
 * Exit status (sendmail's sysexits): 0 the message was accepted (250);
 * 75 a temporary failure (4xx, no connection, timeout: try again later);
 * 69 a permanent refusal (5xx); 66 the message or password file could not
 * be read; 2 a usage error. On failure the server's reply is printed.
 */
#include <errno.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "base/base.h"
#include "cli/cli.h"
#include "relay/account.h"
#include "smtp/smtp.h"

#define EX_TEMP    75
#define EX_PERM    69
#define EX_NOINPUT 66
#define MSG_MAX    (64u << 20)

static const char send_help[] =
    "usage: mailrep send [options] -f SENDER RCPT... < message\n"
    "\n"
    "Submits the message on standard input to a relay over SMTP.\n"
    "\n"
    "  -f, --from SENDER          envelope sender ('' for the null sender)\n"
    "  -t                         also take recipients from To:, Cc: and Bcc:\n"
    "                             (Bcc: is removed from the message)\n"
    "  --server ADDR:PORT         the relay (default: listen of the config's [relay])\n"
    "  -c, --config FILE          config file to read [relay] listen from\n"
    "  --tls                      STARTTLS before anything else; fail without it\n"
    "  --tls-ca FILE              verify the server's certificate with these CAs\n"
    "                             (default: no certificate check)\n"
    "  --user NAME                AUTH PLAIN as this account (needs --password-file)\n"
    "  --password-file FILE       the account's password (first line)\n"
    "  --helo NAME                name for EHLO (default: localhost)\n"
    "  --timeout SECONDS          for each read and write (default 60)\n"
    "\n"
    "Exit status: 0 accepted, 75 temporary failure, 69 permanent failure,\n"
    "66 unreadable input, 2 usage error.\n";

#define fail(...) cli_fail("send", __VA_ARGS__)

struct client {
	int fd;
	SSL *ssl;
	SSL_CTX *ctx;
	char buf[4096];
	size_t have;
	char reply[4096]; /* the last reply, all its lines */
};

static int io_write(struct client *c, const char *p, size_t n)
{
	while (n) {
		ssize_t w = c->ssl ? SSL_write(c->ssl, p, (int)(n > 65536 ? 65536 : n))
		                   : write(c->fd, p, n);
		if (w <= 0) {
			if (!c->ssl && w < 0 && errno == EINTR) continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* One line (without CRLF) into out; -1 on EOF, error or an overlong line. */
static int io_line(struct client *c, char *out, size_t n)
{
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->have);
		if (nl) {
			size_t len = (size_t)(nl - c->buf);
			size_t l2 = len && c->buf[len - 1] == '\r' ? len - 1 : len;
			if (l2 >= n) return -1;
			memcpy(out, c->buf, l2);
			out[l2] = 0;
			memmove(c->buf, nl + 1, c->have - len - 1);
			c->have -= len + 1;
			return 0;
		}
		if (c->have == sizeof c->buf) return -1;
		ssize_t r = c->ssl
		                ? SSL_read(c->ssl, c->buf + c->have, (int)(sizeof c->buf - c->have))
		                : read(c->fd, c->buf + c->have, sizeof c->buf - c->have);
		if (r <= 0) {
			if (!c->ssl && r < 0 && errno == EINTR) continue;
			return -1;
		}
		c->have += (size_t)r;
	}
}

/* Reads a reply; returns its code (0: connection failure), c->reply has
 * every line. If ehlo_kw is given, sets *found when that keyword is in it. */
static int read_reply(struct client *c, const char *kw, int *found)
{
	char line[1024];
	size_t used = 0;
	c->reply[0] = 0;
	for (int lines = 0; lines < 100; lines++) {
		int code, more;
		const char *text;
		if (io_line(c, line, sizeof line) < 0) {
			snprintf(c->reply, sizeof c->reply, "connection lost");
			return 0;
		}
		if (smtp_parse_reply_line(line, strlen(line), &code, &more, &text) < 0) {
			snprintf(c->reply, sizeof c->reply, "malformed reply: %.200s", line);
			return 0;
		}
		if (kw && lines && !strncasecmp(text, kw, strlen(kw)) &&
		    (text[strlen(kw)] == 0 || text[strlen(kw)] == ' '))
			*found = 1;
		int w = snprintf(c->reply + used, sizeof c->reply - used, "%s%s", used ? "\n" : "",
		                 line);
		if (w > 0 && (size_t)w < sizeof c->reply - used) used += (size_t)w;
		if (!more) return code;
	}
	snprintf(c->reply, sizeof c->reply, "reply too long");
	return 0;
}

static int cmd(struct client *c, const char *kw, int *found, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int cmd(struct client *c, const char *kw, int *found, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof line - 2) {
		snprintf(c->reply, sizeof c->reply, "command too long");
		return 0;
	}
	memcpy(line + n, "\r\n", 3);
	if (io_write(c, line, (size_t)n + 2) < 0) {
		snprintf(c->reply, sizeof c->reply, "connection lost");
		return 0;
	}
	return read_reply(c, kw, found);
}

/* The exit status for a failed step, after printing what the server said. */
static int refused(struct client *c, const char *what, int code)
{
	fprintf(stderr, "mailrep send: %s: %s\n", what, c->reply);
	return code >= 500 && code < 600 ? EX_PERM : EX_TEMP;
}

static int connect_to(const char *server, int timeout, struct base_err *err)
{
	struct base_sockaddr a;
	if (base_parse_hostport(server, 25, &a, err) < 0) return -1;
	struct sockaddr_storage ss;
	socklen_t len = base_sockaddr_to(&a, &ss);
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) return base_errf(err, "socket: %s", strerror(errno));
	struct timeval tv = {timeout, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
		base_errf(err, "connect %s: %s", server, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int start_tls(struct client *c, const char *ca)
{
	c->ctx = SSL_CTX_new(TLS_client_method());
	if (!c->ctx) return -1;
	SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
	if (ca) {
		if (SSL_CTX_load_verify_locations(c->ctx, ca, NULL) != 1) {
			snprintf(c->reply, sizeof c->reply, "%s: cannot load CA certificates", ca);
			return -1;
		}
		SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
	}
	c->ssl = SSL_new(c->ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) return -1;
	c->have = 0; /* nothing the server sent before the handshake counts */
	if (SSL_connect(c->ssl) != 1) {
		unsigned long e = ERR_get_error();
		char b[256] = "connection closed";
		if (e) ERR_error_string_n(e, b, sizeof b);
		snprintf(c->reply, sizeof c->reply, "TLS handshake failed: %s", b);
		SSL_free(c->ssl);
		c->ssl = NULL;
		return -1;
	}
	return 0;
}

static int read_all(FILE *f, struct base_buf *b)
{
	char chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
		if (b->len + n > MSG_MAX) return -1;
		base_buf_append(b, chunk, n);
	}
	return ferror(f) ? -1 : 0;
}

/* -t: adds the addresses of To:, Cc: and Bcc: (with their continuation
 * lines) to *rcpts and removes Bcc: from the message. */
static void header_rcpts(struct base_buf *m, char ***rcpts, size_t *n)
{
	size_t p = 0;
	while (p < m->len) {
		char *line = m->data + p;
		char *eol = memchr(line, '\n', m->len - p);
		size_t end = eol ? (size_t)(eol - m->data) + 1 : m->len;
		if (end - p <= 2 && (line[0] == '\r' || line[0] == '\n')) break;
		size_t fend = end;
		while (fend < m->len && (m->data[fend] == ' ' || m->data[fend] == '\t')) {
			char *e2 = memchr(m->data + fend, '\n', m->len - fend);
			fend = e2 ? (size_t)(e2 - m->data) + 1 : m->len;
		}
		int bcc = !strncasecmp(line, "bcc:", 4);
		if (bcc || !strncasecmp(line, "to:", 3) || !strncasecmp(line, "cc:", 3)) {
			char *v = base_xstrndup(line, fend - p), *save = NULL;
			for (char *t = strtok_r(strchr(v, ':') + 1, ",", &save); t;
			     t = strtok_r(NULL, ",", &save)) {
				char *lt = strchr(t, '<'), *gt = lt ? strchr(lt, '>') : NULL;
				char *a = lt && gt ? lt + 1 : t,
				     *ae = lt && gt ? gt : t + strlen(t);
				while (a < ae && strchr(" \t\r\n", *a)) a++;
				while (ae > a && strchr(" \t\r\n", ae[-1])) ae--;
				if (ae > a && memchr(a, '@', (size_t)(ae - a)) && *n < 1000) {
					*rcpts = base_xrealloc(*rcpts, (*n + 1) * sizeof **rcpts);
					(*rcpts)[(*n)++] = base_xstrndup(a, (size_t)(ae - a));
				}
			}
			free(v);
		}
		if (bcc) {
			memmove(m->data + p, m->data + fend, m->len - fend);
			m->len -= fend - p;
		} else {
			p = fend;
		}
	}
}

/* The message as SMTP DATA: CRLF line ends, dot-stuffed, final dot. */
static void to_data(const struct base_buf *m, struct base_buf *out)
{
	size_t p = 0;
	while (p < m->len) {
		const char *line = m->data + p;
		const char *eol = memchr(line, '\n', m->len - p);
		size_t n = eol ? (size_t)(eol - line) : m->len - p;
		size_t content = n && line[n - 1] == '\r' ? n - 1 : n;
		if (content && line[0] == '.') base_buf_append(out, ".", 1);
		base_buf_append(out, line, content);
		base_buf_append(out, "\r\n", 2);
		p += eol ? n + 1 : n;
	}
	base_buf_append(out, ".\r\n", 3);
}

static int listen_cb(void *ctx, const char *key, const char *value, struct base_err *err)
{
	char **out = ctx;
	if (!strcmp(key, "listen") && !*out) *out = base_xstrdup(value);
	return 0;
}

static int transact(struct client *c, const char *helo, int tls, const char *ca, const char *user,
                    const char *pw, const char *from, char **rcpts, size_t nrcpt,
                    const struct base_buf *data)
{
	int code = read_reply(c, NULL, NULL), has_tls = 0;
	if (code != 220) return refused(c, "greeting", code);
	if ((code = cmd(c, "STARTTLS", &has_tls, "EHLO %s", helo)) != 250)
		return refused(c, "EHLO", code);
	if (tls) {
		if (!has_tls) {
			snprintf(c->reply, sizeof c->reply, "the server does not offer STARTTLS");
			return refused(c, "STARTTLS", 0);
		}
		if ((code = cmd(c, NULL, NULL, "STARTTLS")) != 220)
			return refused(c, "STARTTLS", code);
		if (start_tls(c, ca) < 0) return refused(c, "STARTTLS", 0);
		if ((code = cmd(c, NULL, NULL, "EHLO %s", helo)) != 250)
			return refused(c, "EHLO", code);
	}
	if (user) {
		size_t ul = strlen(user), pl = strlen(pw);
		uint8_t *raw = base_xmalloc(ul + pl + 2);
		raw[0] = 0;
		memcpy(raw + 1, user, ul);
		raw[ul + 1] = 0;
		memcpy(raw + ul + 2, pw, pl);
		size_t bl = 4 * ((ul + pl + 2 + 2) / 3) + 1;
		char *b64 = base_xmalloc(bl);
		relay_b64_encode(raw, ul + pl + 2, b64, bl, 1);
		code = cmd(c, NULL, NULL, "AUTH PLAIN %s", b64);
		OPENSSL_cleanse(raw, ul + pl + 2);
		OPENSSL_cleanse(b64, bl);
		free(raw);
		free(b64);
		if (code != 235) return refused(c, "AUTH", code);
	}
	if ((code = cmd(c, NULL, NULL, "MAIL FROM:<%s>", from)) != 250)
		return refused(c, "MAIL", code);
	size_t ok = 0;
	for (size_t i = 0; i < nrcpt; i++) {
		code = cmd(c, NULL, NULL, "RCPT TO:<%s>", rcpts[i]);
		if (code != 250 && code != 251) return refused(c, rcpts[i], code);
		ok++;
	}
	if ((code = cmd(c, NULL, NULL, "DATA")) != 354) return refused(c, "DATA", code);
	if (io_write(c, data->data, data->len) < 0) {
		snprintf(c->reply, sizeof c->reply, "connection lost");
		return refused(c, "message", 0);
	}
	if ((code = read_reply(c, NULL, NULL)) != 250) return refused(c, "message", code);
	printf("%s\n", c->reply);
	cmd(c, NULL, NULL, "QUIT");
	return 0;
}

int cli_send(int argc, char **argv)
{
	enum { O_SERVER = 256, O_TLS, O_CA, O_USER, O_PWFILE, O_HELO, O_TIMEOUT };
	static const struct option opts[] = {{"from", required_argument, NULL, 'f'},
	                                     {"config", required_argument, NULL, 'c'},
	                                     {"server", required_argument, NULL, O_SERVER},
	                                     {"tls", no_argument, NULL, O_TLS},
	                                     {"tls-ca", required_argument, NULL, O_CA},
	                                     {"user", required_argument, NULL, O_USER},
	                                     {"password-file", required_argument, NULL, O_PWFILE},
	                                     {"helo", required_argument, NULL, O_HELO},
	                                     {"timeout", required_argument, NULL, O_TIMEOUT},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {NULL, 0, NULL, 0}};
	const char *from = NULL, *config = NULL, *ca = NULL, *user = NULL, *pwfile = NULL;
	const char *helo = "localhost";
	char *server = NULL;
	int tls = 0, hdr = 0, timeout = 60, c;
	while ((c = getopt_long(argc, argv, "f:c:th", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			from = optarg;
			break;
		case 'c':
			config = optarg;
			break;
		case 't':
			hdr = 1;
			break;
		case O_SERVER:
			free(server);
			server = base_xstrdup(optarg);
			break;
		case O_TLS:
			tls = 1;
			break;
		case O_CA:
			ca = optarg;
			break;
		case O_USER:
			user = optarg;
			break;
		case O_PWFILE:
			pwfile = optarg;
			break;
		case O_HELO:
			helo = optarg;
			break;
		case O_TIMEOUT: {
			uint64_t v;
			int k = base_parse_uint(optarg, 3600, &v);
			if (k <= 0 || optarg[k] || !v)
				return fail("--timeout: bad number '%s'", optarg);
			timeout = (int)v;
			break;
		}
		case 'h':
			fputs(send_help, stdout);
			return 0;
		default:
			return fail("see --help");
		}
	}
	struct base_err err;
	if (!from) return fail("-f SENDER is required");
	if (user && !pwfile) return fail("--user needs --password-file");
	if (strlen(from) > SMTP_PATH_MAX) return fail("-f: address too long");
	if (!server && config && base_ini_read(config, "relay", listen_cb, &server, &err) < 0)
		return fail("%s", err.msg);
	if (!server) return fail("no --server, and no [relay] listen in a -c config file");
	char pw[1024] = "";
	if (pwfile) {
		FILE *f = fopen(pwfile, "r");
		if (!f || !fgets(pw, sizeof pw, f)) {
			fprintf(stderr, "mailrep send: %s: %s\n", pwfile,
			        f ? "empty" : strerror(errno));
			if (f) fclose(f);
			free(server);
			return EX_NOINPUT;
		}
		fclose(f);
		pw[strcspn(pw, "\r\n")] = 0;
	}
	struct base_buf msg, data;
	base_buf_init(&msg);
	base_buf_init(&data);
	char **rcpts = NULL;
	size_t nrcpt = 0;
	int rc = 0;
	for (int i = optind; i < argc; i++) {
		if (strlen(argv[i]) > SMTP_PATH_MAX || strpbrk(argv[i], "<>\r\n ")) {
			rc = fail("bad recipient '%s'", argv[i]);
			goto out;
		}
		rcpts = base_xrealloc(rcpts, (nrcpt + 1) * sizeof *rcpts);
		rcpts[nrcpt++] = base_xstrdup(argv[i]);
	}
	if (read_all(stdin, &msg) < 0) {
		fprintf(stderr, "mailrep send: the message on stdin is unreadable or over 64 MB\n");
		rc = EX_NOINPUT;
		goto out;
	}
	if (hdr) header_rcpts(&msg, &rcpts, &nrcpt);
	if (!nrcpt) {
		rc = fail("no recipient");
		goto out;
	}
	to_data(&msg, &data);
	struct client cl;
	memset(&cl, 0, sizeof cl);
	cl.fd = connect_to(server, timeout, &err);
	if (cl.fd < 0) {
		fprintf(stderr, "mailrep send: %s\n", err.msg);
		rc = EX_TEMP;
		goto out;
	}
	rc = transact(&cl, helo, tls, ca, user, pw, from, rcpts, nrcpt, &data);
	if (cl.ssl) {
		SSL_shutdown(cl.ssl);
		SSL_free(cl.ssl);
	}
	if (cl.ctx) SSL_CTX_free(cl.ctx);
	close(cl.fd);
out:
	OPENSSL_cleanse(pw, sizeof pw);
	for (size_t i = 0; i < nrcpt; i++) free(rcpts[i]);
	free(rcpts);
	base_buf_free(&msg);
	base_buf_free(&data);
	free(server);
	return rc;
}
