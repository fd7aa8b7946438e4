/*
 * cmd_send.c — `mailrep send`: local injection in the manner of sendmail.
 * Reads a message on standard input and submits it over SMTP to a relay
 * (by default the `listen` address of the config file's [relay] section),
 * optionally after STARTTLS and AUTH PLAIN, through smtp/'s blocking
 * client: one connection, one transaction, every step under a timeout.
 *
 * Exit status (sendmail's sysexits): 0 the message was accepted (250);
 * 75 a temporary failure (4xx, no connection, timeout: try again later);
 * 69 a permanent refusal (5xx); 66 the message or password file could not
 * be read; 2 a usage error. On failure the server's reply is printed.
 */
#include <errno.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	struct smtp_client c;
	struct smtp_reply *rp;
	char reply[4096]; /* the last reply, all its lines, or why there was none */
};

/* Reads a reply (line NULL) or sends line and reads its reply. Returns the
 * code (0: no reply), with c->reply holding every line or what failed. */
static int exchange(struct client *c, const char *line)
{
	struct base_err err;
	int rc = line ? smtp_client_command(&c->c, line, c->rp, &err)
	              : smtp_client_read_reply(&c->c, c->rp, &err);
	if (rc < 0) {
		snprintf(c->reply, sizeof c->reply, "%s", err.msg);
		return 0;
	}
	size_t used = 0;
	c->reply[0] = 0;
	for (int i = 0; i < c->rp->nlines; i++) {
		int w = snprintf(c->reply + used, sizeof c->reply - used, "%s%s", i ? "\n" : "",
		                 c->rp->lines[i]);
		if (w > 0 && (size_t)w < sizeof c->reply - used) used += (size_t)w;
	}
	return c->rp->code;
}

static int read_reply(struct client *c)
{
	return exchange(c, NULL);
}

static int cmd(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cmd(struct client *c, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof line - 2) {
		snprintf(c->reply, sizeof c->reply, "command too long");
		return 0;
	}
	int code = exchange(c, line);
	OPENSSL_cleanse(line, sizeof line);
	return code;
}

/* The exit status for a failed step, after printing what the server said. */
static int refused(struct client *c, const char *what, int code)
{
	fprintf(stderr, "mailrep send: %s: %s\n", what, c->reply);
	return code >= 500 && code < 600 ? EX_PERM : EX_TEMP;
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
	int code = read_reply(c);
	if (code != 220) return refused(c, "greeting", code);
	if ((code = cmd(c, "EHLO %s", helo)) != 250) return refused(c, "EHLO", code);
	if (tls) {
		if (!smtp_reply_has_ext(c->rp, "STARTTLS")) {
			snprintf(c->reply, sizeof c->reply, "the server does not offer STARTTLS");
			return refused(c, "STARTTLS", 0);
		}
		if ((code = cmd(c, "STARTTLS")) != 220) return refused(c, "STARTTLS", code);
		struct smtp_tls_opts o = {.ca_file = ca, .min_version = TLS1_2_VERSION};
		struct base_err err;
		if (smtp_client_starttls(&c->c, &o, &err) < 0) {
			snprintf(c->reply, sizeof c->reply, "%s", err.msg);
			return refused(c, "STARTTLS", 0);
		}
		if ((code = cmd(c, "EHLO %s", helo)) != 250) return refused(c, "EHLO", code);
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
		code = cmd(c, "AUTH PLAIN %s", b64);
		OPENSSL_cleanse(raw, ul + pl + 2);
		OPENSSL_cleanse(b64, bl);
		free(raw);
		free(b64);
		if (code != 235) return refused(c, "AUTH", code);
	}
	if ((code = cmd(c, "MAIL FROM:<%s>", from)) != 250) return refused(c, "MAIL", code);
	size_t ok = 0;
	for (size_t i = 0; i < nrcpt; i++) {
		code = cmd(c, "RCPT TO:<%s>", rcpts[i]);
		if (code != 250 && code != 251) return refused(c, rcpts[i], code);
		ok++;
	}
	if ((code = cmd(c, "DATA")) != 354) return refused(c, "DATA", code);
	struct base_err err;
	if (smtp_client_write(&c->c, data->data, data->len, &err) < 0) {
		snprintf(c->reply, sizeof c->reply, "%s", err.msg);
		return refused(c, "message", 0);
	}
	if ((code = read_reply(c)) != 250) return refused(c, "message", code);
	printf("%s\n", c->reply);
	cmd(c, "QUIT");
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
	struct base_sockaddr addr;
	struct client *cl = base_xmalloc(sizeof *cl);
	cl->rp = base_xmalloc(sizeof *cl->rp);
	if (base_parse_hostport(server, 25, &addr, &err) < 0 ||
	    smtp_client_connect(&cl->c, &addr, (unsigned)timeout * 1000, &err) < 0) {
		fprintf(stderr, "mailrep send: %s: %s\n", server, err.msg);
		rc = EX_TEMP;
	} else {
		rc = transact(cl, helo, tls, ca, user, pw, from, rcpts, nrcpt, &data);
		smtp_client_close(&cl->c);
	}
	free(cl->rp);
	free(cl);
out:
	OPENSSL_cleanse(pw, sizeof pw);
	for (size_t i = 0; i < nrcpt; i++) free(rcpts[i]);
	free(rcpts);
	base_buf_free(&msg);
	base_buf_free(&data);
	free(server);
	return rc;
}
