/*
 * server.c — the relay's reception stage: a libevent SMTP server for
 * submission by trusted clients. Each session is a small state machine
 * (commands → DATA → waiting for the commit → commands) over one
 * bufferevent; lines and sizes are bounded, idle sessions time out.
 *
 * Only clients inside a --trusted network may relay; everyone else gets
 * 554 5.7.1 at RCPT (the default list is empty: nobody relays). Forward
 * paths that would need a second routing step (%-hack, source routes,
 * quoted local parts, several '@') are refused for everybody.
 *
 * At the end of DATA the message gets a Received field, is DKIM-signed on
 * a signing thread (work.c; the session stops reading meanwhile, the loop
 * serves the others), and written to the spool; the session waits for
 * the group commit (relay.c), which answers 250 for every message it made
 * durable, or 451 if the sync failed. A failed write (full disk) answers
 * 452 and leaves nothing behind.
 *
 * STARTTLS (RFC 3207) is offered when a certificate is configured; the
 * handshake runs in an OpenSSL filter bufferevent stacked on the socket's,
 * and everything the client sent before it (buffered input, HELO, AUTH) is
 * forgotten, so nothing pipelined behind STARTTLS in plain text is ever
 * executed (CVE-2011-0411). AUTH PLAIN and LOGIN (RFC 4954) check the
 * [account] passwords; an authenticated session relays like a trusted
 * network, within its account's send limits (account.c), and its mail
 * carries account= and pool= attributes.
 *
 * A password check (PBKDF2, tens of milliseconds) runs on a worker thread
 * like signing: the session stops reading (S_AUTH) until the result comes
 * back to the loop, unless the authentication cache (account.h) knows the
 * user and password from a recent success. A message's recipients are
 * counted against its account in memory when it is written to the spool;
 * the group commit (relay.c) makes the counts durable with the message.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "relay/account.h"
#include "relay/dsnparam.h"
#include "relay/int.h"
#include "relay/tls.h"
#include "smtp/smtp.h"

#define DATA_LINE_MAX 65536 /* lenient beyond RFC 5321's 1000, but bounded */
/* MAIL and RCPT: RFC 5321's 512, plus what RFC 3461 §4 lets DSN parameters
 * add (ENVID 100 characters on MAIL, ORCPT 500 on RCPT, with their keywords
 * and NOTIFY); other commands keep 512 */
#define CMD_LINE_MAX  (SMTP_CMD_MAX + 600)
#define MAX_ERRORS    10
#define MAX_AUTH_FAIL 3 /* failed AUTH attempts before the session is closed */

#define OUT_MAX 1024 /* bytes of replies gathered before they are sent */

enum astep { A_NONE, A_PLAIN, A_USER, A_PASS }; /* waiting for a SASL response */

/* S_SIGN: the message is on a signing thread (work.c); S_WAIT: it is in
 * the spool, waiting for the commit; S_AUTH: a password is being checked
 * on a worker thread. In these the session does not read, and a lost
 * connection only marks it gone: the job or the commit frees it. */
enum sstate { S_CMD, S_DATA, S_SIGN, S_WAIT, S_CLOSING, S_AUTH };

struct session {
	struct relay_ctx *x;
	struct bufferevent *bev;
	char ip[64];
	int trusted;
	enum sstate st;
	int helo, esmtp, gone;
	char helo_name[64];
	char *sender; /* NULL: no transaction */
	char **rcpts;
	uint32_t nrcpt;
	struct base_buf data;
	uint64_t size;
	int too_big, errors;
	char id[RELAY_ID_MAX + 1];
	struct relay_loc loc;
	/* spool attributes of the message in progress ("account=... pool=..."),
	 * set once the transaction knows them; "" for none */
	char attrs[RELAY_ATTRS_MAX + 1];
	/* DSN parameters of the transaction (notify and orcpt follow rcpts),
	 * and their spool form once stored */
	struct relay_dsn_params dsn;
	struct base_buf dsn_blob;
	int tls, handshake;            /* in TLS; TLS handshake running */
	const struct relay_acct *acct; /* authenticated as; NULL: not */
	enum astep auth_step;
	int auth_fails;
	char auth_user[256];
	/* the password check off the loop: what it reads, and its result */
	struct relay_work check;
	const struct relay_acct *check_acct; /* NULL: unknown user (dummy work) */
	char check_pw[512];
	size_t check_pwlen;
	int check_ok;
	struct event *linger; /* closing over TLS: waits for the socket's output */
	int lingered;
	struct relay_work sign; /* signing off the loop; data belongs to it meanwhile */
	int sign_rc;
	struct base_err sign_err;
	const struct relay_dkim *keys; /* the keys when the message ended (a reload may follow) */
	size_t nkeys;
	unsigned check_gen; /* x->acct_gen when its password check started */
	struct session *prev, *next;
	/* replies not sent yet: those of a pipelined batch go out in one write */
	char out[OUT_MAX];
	size_t nout;
};

/* Sends the gathered replies. In plain text, with nothing queued in the
 * bufferevent, they are written straight to the socket: libevent would add
 * the write event, wait for it and remove it again, two epoll_ctl calls and
 * a loop turn for every reply. What the socket does not take at once, and
 * everything in TLS (the OpenSSL filter encrypts it), goes through the
 * bufferevent, which also reports the errors. */
static void flush(struct session *s)
{
	if (!s->nout) return;
	struct evbuffer *o = bufferevent_get_output(s->bev);
	size_t off = 0;
	if (!bufferevent_get_underlying(s->bev) && !evbuffer_get_length(o)) {
		ssize_t k =
		    send(bufferevent_getfd(s->bev), s->out, s->nout, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (k > 0) off = (size_t)k;
	}
	if (off < s->nout) evbuffer_add(o, s->out + off, s->nout - off);
	s->nout = 0;
}

/* Queues a reply line; on_read, on_accept and close_after_reply send them
 * (flush). */
static void reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct session *s, const char *fmt, ...)
{
	char line[OUT_MAX];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line - 2, fmt, ap);
	va_end(ap);
	if (n < 0) return;
	if ((size_t)n >= sizeof line - 2) {
		/* longer than any reply the server makes: not gathered */
		flush(s);
		va_start(ap, fmt);
		evbuffer_add_vprintf(bufferevent_get_output(s->bev), fmt, ap);
		va_end(ap);
		evbuffer_add(bufferevent_get_output(s->bev), "\r\n", 2);
		return;
	}
	memcpy(line + n, "\r\n", 2);
	if (s->nout + (size_t)n + 2 > sizeof s->out) flush(s);
	memcpy(s->out + s->nout, line, (size_t)n + 2);
	s->nout += (size_t)n + 2;
}

static void tx_reset(struct session *s)
{
	free(s->sender);
	s->sender = NULL;
	for (uint32_t i = 0; i < s->nrcpt; i++) free(s->rcpts[i]);
	free(s->rcpts);
	s->rcpts = NULL;
	s->nrcpt = 0;
	base_buf_free(&s->data);
	s->size = 0;
	s->too_big = 0;
	for (uint32_t i = 0; i < s->dsn.nrcpt; i++) free(s->dsn.orcpt[i]);
	free(s->dsn.orcpt);
	free(s->dsn.notify);
	free(s->dsn.envid);
	memset(&s->dsn, 0, sizeof s->dsn);
	base_buf_free(&s->dsn_blob);
}

static void session_free(struct session *s)
{
	struct relay_ctx *x = s->x;
	if (s->prev)
		s->prev->next = s->next;
	else
		x->slist = s->next;
	if (s->next) s->next->prev = s->prev;
	x->sessions--;
	tx_reset(s);
	OPENSSL_cleanse(s->check_pw, sizeof s->check_pw);
	if (s->linger) event_free(s->linger);
	bufferevent_free(s->bev);
	free(s);
}

static void on_linger(evutil_socket_t fd, short what, void *arg);

static void on_drained(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;
	if (evbuffer_get_length(bufferevent_get_output(bev))) return;
	/* over TLS the last records may still wait in the socket's bufferevent */
	struct bufferevent *u = bufferevent_get_underlying(bev);
	if (u && evbuffer_get_length(bufferevent_get_output(u)) && s->lingered < 50) {
		if (!s->linger) s->linger = evtimer_new(s->x->base, on_linger, s);
		struct timeval tv = {0, 20000};
		s->lingered++; /* bounds the wait to about a second */
		evtimer_add(s->linger, &tv);
		return;
	}
	session_free(s);
}

static void on_linger(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	on_drained(s->bev, s);
}

/* Sends what is queued, then closes. */
static void close_after_reply(struct session *s)
{
	s->st = S_CLOSING;
	bufferevent_disable(s->bev, EV_READ);
	bufferevent_setcb(s->bev, NULL, on_drained, NULL, s);
	flush(s);
	if (!evbuffer_get_length(bufferevent_get_output(s->bev)) &&
	    !bufferevent_get_underlying(s->bev)) {
		/* written straight to the socket: freed from the loop, not under
		 * the caller, which may still use the session */
		if (!s->linger) s->linger = evtimer_new(s->x->base, on_linger, s);
		struct timeval tv = {0, 0};
		evtimer_add(s->linger, &tv);
		return;
	}
	on_drained(s->bev, s);
}

static int error_count(struct session *s)
{
	if (++s->errors < MAX_ERRORS) return 0;
	reply(s, "421 4.7.0 %s too many errors, closing", s->x->hostname);
	close_after_reply(s);
	return 1;
}

static int auth_offered(const struct session *s)
{
	const struct relay_accounts *as = s->x->cfg->accounts;
	return as && as->n && (s->tls || s->x->cfg->auth_without_tls);
}

static void cmd_ehlo(struct session *s, const struct smtp_command *c)
{
	tx_reset(s);
	s->helo = 1;
	s->esmtp = c->verb == SMTP_EHLO;
	snprintf(s->helo_name, sizeof s->helo_name, "%.*s",
	         (int)(c->arg_len < 63 ? c->arg_len : 63), c->arg);
	for (char *p = s->helo_name; *p; p++)
		if ((unsigned char)*p < 0x21 || *p == '(' || *p == ')' || (unsigned char)*p > 0x7e)
			*p = '?';
	if (!s->esmtp) {
		reply(s, "250 %s", s->x->hostname);
		return;
	}
	reply(s, "250-%s", s->x->hostname);
	reply(s, "250-SIZE %llu", (unsigned long long)s->x->cfg->max_size);
	reply(s, "250-PIPELINING");
	reply(s, "250-8BITMIME");
	reply(s, "250-DSN");
	reply(s, "250-ENHANCEDSTATUSCODES");
	if (s->x->tls->server && !s->tls) reply(s, "250-STARTTLS");
	if (auth_offered(s)) reply(s, "250-AUTH PLAIN LOGIN");
	reply(s, "250 SMTPUTF8");
}

static void cmd_mail(struct session *s, const struct smtp_command *c)
{
	if (!s->helo) {
		reply(s, "503 5.5.1 EHLO or HELO first");
		error_count(s);
		return;
	}
	if (s->sender) {
		reply(s, "503 5.5.1 nested MAIL command");
		error_count(s);
		return;
	}
	uint64_t size = 0;
	int has = smtp_param_size(c->params, c->params_len, &size);
	if (has < 0) {
		reply(s, "501 5.5.4 bad SIZE parameter");
		error_count(s);
		return;
	}
	if (has && size > s->x->cfg->max_size) {
		reply(s, "552 5.3.4 message size exceeds the limit of %llu bytes",
		      (unsigned long long)s->x->cfg->max_size);
		return;
	}
	struct relay_dsn_mail dm;
	struct base_err err;
	if (relay_dsn_parse_mail(c->params, c->params_len, &dm, &err) < 0) {
		reply(s, "501 5.5.4 %s", err.msg);
		error_count(s);
		return;
	}
	s->dsn.ret = dm.ret;
	s->dsn.envid = dm.envid[0] ? base_xstrdup(dm.envid) : NULL;
	s->sender = base_xstrdup(c->path);
	reply(s, "250 2.1.0 Ok");
}

static void cmd_rcpt(struct session *s, const struct smtp_command *c)
{
	struct base_err err;
	if (!s->sender) {
		reply(s, "503 5.5.1 MAIL first");
		error_count(s);
		return;
	}
	if (!s->trusted && !s->acct) {
		reply(s, "554 5.7.1 <%s>: relay access denied", c->path);
		error_count(s);
		return;
	}
	if (relay_check_rcpt(c->path, &err) < 0) {
		reply(s, "553 %s", err.msg);
		error_count(s);
		return;
	}
	struct relay_dsn_rcpt dr;
	if (relay_dsn_parse_rcpt(c->params, c->params_len, &dr, &err) < 0) {
		reply(s, "501 5.5.4 %s", err.msg);
		error_count(s);
		return;
	}
	if (s->nrcpt >= s->x->cfg->max_rcpts || s->nrcpt >= RELAY_RCPT_MAX) {
		reply(s, "452 4.5.3 too many recipients");
		return;
	}
	const char *which;
	uint32_t limit;
	if (s->acct &&
	    relay_quota_check(s->x->quota, s->acct, base_now(), s->nrcpt + 1, &which, &limit) < 0) {
		reply(s, "452 4.7.1 account %s: %s limit of %u recipients reached, try again later",
		      s->acct->name, which, limit);
		return;
	}
	s->rcpts = base_xrealloc(s->rcpts, (s->nrcpt + 1) * sizeof *s->rcpts);
	s->rcpts[s->nrcpt++] = base_xstrdup(c->path);
	s->dsn.notify = base_xrealloc(s->dsn.notify, s->nrcpt);
	s->dsn.orcpt = base_xrealloc(s->dsn.orcpt, s->nrcpt * sizeof *s->dsn.orcpt);
	s->dsn.notify[s->dsn.nrcpt] = dr.notify;
	s->dsn.orcpt[s->dsn.nrcpt++] = dr.orcpt[0] ? base_xstrdup(dr.orcpt) : NULL;
	reply(s, "250 2.1.5 Ok");
}

static void cmd_data(struct session *s)
{
	if (!s->sender || !s->nrcpt) {
		reply(s, "503 5.5.1 %s first", s->sender ? "RCPT" : "MAIL");
		error_count(s);
		return;
	}
	time_t now = base_now();
	struct tm tm;
	char date[64];
	gmtime_r(&now, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
	relay_id_new(s->x, s->id);
	base_buf_init(&s->data);
	base_buf_printf(
	    &s->data,
	    "Received: from %s ([%s])\r\n\tby %s (mailrep) with %s%s%s id %s;\r\n\t%s\r\n",
	    s->helo_name, s->ip, s->x->hostname, s->esmtp ? "ESMTP" : "SMTP",
	    s->esmtp && s->tls ? "S" : "", s->esmtp && s->acct ? "A" : "", s->id, date);
	s->st = S_DATA;
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

/* Takes the X-Mailrep-Pool field(s) out of the message's header section
 * (with their continuation lines) and copies the first one's value to
 * pool. Returns 1 found, 0 none, -1 a value that is not a pool name. */
static int take_pool_header(struct base_buf *b, char *pool, size_t n)
{
	static const char name[] = "x-mailrep-pool:";
	size_t nl = sizeof name - 1, p = 0;
	int found = 0, bad = 0;
	while (p < b->len) {
		const char *line = b->data + p;
		const char *eol = memchr(line, '\n', b->len - p);
		size_t end = eol ? (size_t)(eol - b->data) + 1 : b->len;
		if (end - p <= 2 && (line[0] == '\r' || line[0] == '\n')) break; /* body */
		if (end - p < nl || strncasecmp(line, name, nl)) {
			p = end;
			continue;
		}
		size_t fend = end; /* the field with its continuation lines */
		while (fend < b->len && (b->data[fend] == ' ' || b->data[fend] == '\t')) {
			const char *e2 = memchr(b->data + fend, '\n', b->len - fend);
			fend = e2 ? (size_t)(e2 - b->data) + 1 : b->len;
		}
		if (!found) {
			const char *v = line + nl, *ve = b->data + end;
			while (v < ve && (*v == ' ' || *v == '\t')) v++;
			while (ve > v && (ve[-1] == '\r' || ve[-1] == '\n' || ve[-1] == ' ' ||
			                  ve[-1] == '\t'))
				ve--;
			size_t vl = (size_t)(ve - v);
			found = 1;
			if (vl >= n || fend != end) {
				bad = 1;
			} else {
				memcpy(pool, v, vl);
				pool[vl] = 0;
				bad = !relay_name_valid(pool);
			}
		}
		memmove(b->data + p, b->data + fend, b->len - fend);
		b->len -= fend - p;
	}
	return bad ? -1 : found;
}

/* The message's IP pool: the client's X-Mailrep-Pool header (an account
 * may name only its own pools; a trusted network any), else the account's
 * pool, else --default-pool. Fills s->attrs; -1 after a 550. */
static int choose_pool(struct session *s)
{
	char pool[RELAY_NAME_MAX + 1] = "";
	int h = take_pool_header(&s->data, pool, sizeof pool);
	if (h < 0) {
		reply(s, "550 5.7.1 malformed X-Mailrep-Pool header");
		return -1;
	}
	if (h && s->acct && !relay_acct_may_use_pool(s->acct, pool)) {
		reply(s, "550 5.7.1 account %s may not send from pool %s", s->acct->name, pool);
		return -1;
	}
	if (h && !relay_pool_find(s->x->cfg, pool)) {
		reply(s, "550 5.7.1 no IP pool named %s", pool);
		return -1;
	}
	if (!h && s->acct && s->acct->pool)
		snprintf(pool, sizeof pool, "%s", s->acct->pool);
	else if (!h && s->x->cfg->default_pool)
		snprintf(pool, sizeof pool, "%s", s->x->cfg->default_pool);
	s->attrs[0] = 0;
	if (s->acct)
		snprintf(s->attrs, sizeof s->attrs, "account=%s%s", s->acct->name,
		         *pool ? " " : "");
	if (*pool)
		snprintf(s->attrs + strlen(s->attrs), sizeof s->attrs - strlen(s->attrs), "pool=%s",
		         pool);
	return 0;
}

/* Whether the transaction's recipients no longer fit its account's send
 * limits; if so it is answered 451 and reset. */
static int over_quota(struct session *s)
{
	const char *which;
	uint32_t limit;
	if (!s->acct ||
	    relay_quota_check(s->x->quota, s->acct, base_now(), s->nrcpt, &which, &limit) == 0)
		return 0;
	reply(s, "451 4.7.1 account %s: %s limit of %u recipients reached, try again later",
	      s->acct->name, which, limit);
	tx_reset(s);
	return 1;
}

/* After signing: counts the message against its account, writes it to the
 * spool and waits for the commit (1), or answers the failure (0). */
static int store(struct session *s)
{
	struct relay_ctx *x = s->x;
	struct base_err err;
	if (s->sign_rc < 0) {
		base_warn("%s: DKIM signing failed: %s", s->id, s->sign_err.msg);
		reply(s, "451 4.7.0 signing failed, try again later");
		tx_reset(s);
		return 0;
	}
	/* checked again: other sessions of the account may have been counted
	 * while this one was being signed */
	if (over_quota(s)) return 0;
	s->dsn_blob.len = 0;
	if (relay_dsn_given(&s->dsn)) relay_dsn_encode(&s->dsn_blob, &s->dsn);
	if (relay_spool_add_dsn(x->spool, s->id, s->sender, s->attrs, base_now(),
	                        (const char *const *)s->rcpts, s->nrcpt, s->data.data, s->data.len,
	                        s->dsn_blob.len ? s->dsn_blob.data : NULL, s->dsn_blob.len, &s->loc,
	                        &err) < 0) {
		base_error("%s", err.msg);
		reply(s, "452 4.3.1 insufficient system storage");
		tx_reset(s);
		return 0;
	}
	/* counted in memory; the commit that acknowledges the message writes
	 * the counts first (relay.c), and a crash before it is caught at start
	 * by the message's place in the spool (account.h) */
	if (s->acct)
		relay_quota_add(x->quota, s->acct, base_now(), s->nrcpt, s->loc.seg, s->loc.off);
	base_buf_free(&s->data);
	s->st = S_WAIT;
	bufferevent_disable(s->bev, EV_READ);
	if (x->nwaiting == x->capwaiting) {
		x->capwaiting = x->capwaiting ? 2 * x->capwaiting : 64;
		x->waiting = base_xrealloc(x->waiting, x->capwaiting * sizeof *x->waiting);
	}
	x->waiting[x->nwaiting++] = s;
	relay_commit_soon(x);
	return 1;
}

/* On a signing thread: touches only the session's message and the config. */
static void sign_run(struct relay_work *j)
{
	struct session *s = (struct session *)((char *)j - offsetof(struct session, sign));
	s->sign_rc = relay_sign(s->keys, s->nkeys, &s->data, &s->sign_err);
}

static void on_read(struct bufferevent *bev, void *arg);

static void sign_done(struct relay_work *j)
{
	struct session *s = (struct session *)((char *)j - offsetof(struct session, sign));
	if (s->x->stopping) return; /* relay_server_stop frees it */
	if (s->gone) {
		session_free(s);
		return;
	}
	s->st = S_CMD;
	if (store(s)) return;
	bufferevent_enable(s->bev, EV_READ);
	on_read(s->bev, s); /* commands pipelined behind the data */
}

static void end_data(struct session *s)
{
	struct relay_ctx *x = s->x;
	s->st = S_CMD;
	if (s->too_big) {
		reply(s, "552 5.3.4 message size exceeds the limit of %llu bytes",
		      (unsigned long long)x->cfg->max_size);
		tx_reset(s);
		return;
	}
	if (choose_pool(s) < 0) {
		tx_reset(s);
		return;
	}
	if (over_quota(s)) return;
	s->keys = x->cfg->dkim;
	s->nkeys = x->cfg->ndkim;
	if (x->signers && x->cfg->ndkim) {
		s->st = S_SIGN;
		bufferevent_disable(s->bev, EV_READ);
		s->sign.run = sign_run;
		s->sign.done = sign_done;
		relay_workers_submit(x->signers, &s->sign);
		return;
	}
	s->sign_rc = relay_sign(s->keys, s->nkeys, &s->data, &s->sign_err);
	store(s);
}

static void data_line(struct session *s, const char *line, size_t n)
{
	const char *out;
	size_t olen;
	if (smtp_data_line(line, n, &out, &olen) == 1) {
		end_data(s);
		return;
	}
	s->size += olen + 2;
	if (s->size > s->x->cfg->max_size) {
		s->too_big = 1;
		return;
	}
	base_buf_append(&s->data, out, olen);
	base_buf_append(&s->data, "\r\n", 2);
}

static void on_event(struct bufferevent *bev, short what, void *arg);

/* STARTTLS: the 220 goes out in plain text, then an OpenSSL filter is
 * stacked on the socket's bufferevent. Input already buffered behind the
 * command is dropped, and the session starts over (RFC 3207 4.2). */
static void cmd_starttls(struct session *s, size_t arg_len)
{
	if (arg_len) {
		reply(s, "501 5.5.4 STARTTLS takes no argument");
		error_count(s);
		return;
	}
	SSL *ssl = SSL_new(s->x->tls->server);
	struct bufferevent *tb =
	    ssl ? bufferevent_openssl_filter_new(s->x->base, s->bev, ssl, BUFFEREVENT_SSL_ACCEPTING,
	                                         BEV_OPT_CLOSE_ON_FREE)
	        : NULL;
	if (!tb) {
		if (ssl) SSL_free(ssl);
		reply(s, "454 4.7.0 TLS not available");
		return;
	}
	/* the filter owns the socket's bufferevent now; the 220 queued on it
	 * before any TLS record goes out first, after the replies before it */
	flush(s);
	evbuffer_add_printf(bufferevent_get_output(s->bev), "220 2.0.0 Ready to start TLS\r\n");
	struct evbuffer *in = bufferevent_get_input(s->bev);
	evbuffer_drain(in, evbuffer_get_length(in));
	s->bev = tb;
	s->handshake = 1;
	tx_reset(s);
	s->helo = s->esmtp = 0;
	strcpy(s->helo_name, "unknown");
	s->acct = NULL;
	bufferevent_openssl_set_allow_dirty_shutdown(tb, 1);
	bufferevent_setcb(tb, on_read, NULL, on_event, s);
	struct timeval tv = {s->x->cfg->timeout, 0};
	bufferevent_set_timeouts(tb, &tv, &tv);
	bufferevent_enable(tb, EV_READ | EV_WRITE);
}

static int64_t mono_seconds(void)
{
	return (int64_t)(base_mono_ns() / 1000000000u);
}

/* The outcome of a password check, on the loop thread. */
static void auth_result(struct session *s, const struct relay_acct *a, int ok, int cached)
{
	if (ok) {
		s->acct = a;
		base_info("%s: authenticated as %s%s", s->ip, a->name, cached ? " (cached)" : "");
		reply(s, "235 2.7.0 authentication successful");
		return;
	}
	char shown[64];
	snprintf(shown, sizeof shown, "%.63s", s->auth_user);
	for (char *p = shown; *p; p++)
		if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) *p = '?';
	base_warn("%s: authentication failed for '%s'", s->ip, shown);
	reply(s, "535 5.7.8 authentication credentials invalid");
	if (++s->auth_fails >= MAX_AUTH_FAIL) {
		reply(s, "421 4.7.0 %s too many failed authentications, closing", s->x->hostname);
		close_after_reply(s);
	}
}

/* On a worker thread: reads only the session's copy of the password and
 * the account (a reload leaves the accounts it replaces in memory). */
static void check_run(struct relay_work *j)
{
	struct session *s = (struct session *)((char *)j - offsetof(struct session, check));
	/* a password check even for an unknown user: the same time either way */
	s->check_ok = relay_password_verify(s->check_acct ? s->check_acct->hash : NULL, s->check_pw,
	                                    s->check_pwlen) &&
	              s->check_acct;
}

static void check_done(struct relay_work *j)
{
	struct session *s = (struct session *)((char *)j - offsetof(struct session, check));
	struct relay_ctx *x = s->x;
	int ok = j->ran && s->check_ok;
	/* a check that started before a reload is not cached under the new accounts */
	if (ok && s->check_gen == x->acct_gen)
		relay_authc_put(x->authc, s->check_acct, s->auth_user, s->check_pw, s->check_pwlen,
		                mono_seconds());
	OPENSSL_cleanse(s->check_pw, sizeof s->check_pw);
	if (x->stopping) return; /* relay_server_stop frees it */
	if (s->gone) {
		session_free(s);
		return;
	}
	s->st = S_CMD;
	auth_result(s, s->check_acct, ok, 0);
	if (s->st != S_CMD) return; /* closing after too many failures */
	bufferevent_enable(s->bev, EV_READ);
	on_read(s->bev, s); /* commands pipelined behind the AUTH */
}

static void auth_finish(struct session *s, const char *user, const char *pw, size_t pwlen)
{
	struct relay_ctx *x = s->x;
	const struct relay_acct *a = relay_accounts_find(x->cfg->accounts, user);
	if (user != s->auth_user) snprintf(s->auth_user, sizeof s->auth_user, "%s", user);
	if (a && relay_authc_find(x->authc, user, pw, pwlen, mono_seconds()) == a) {
		auth_result(s, a, 1, 1);
		return;
	}
	if (pwlen >= sizeof s->check_pw) { /* longer than any SASL response we read */
		auth_result(s, NULL, 0, 0);
		return;
	}
	s->check_acct = a;
	s->check_gen = x->acct_gen;
	memcpy(s->check_pw, pw, pwlen);
	s->check_pwlen = pwlen;
	if (!x->signers) { /* no worker threads (cannot happen with accounts) */
		check_run(&s->check);
		OPENSSL_cleanse(s->check_pw, sizeof s->check_pw);
		auth_result(s, a, s->check_ok, 0);
		return;
	}
	s->st = S_AUTH;
	bufferevent_disable(s->bev, EV_READ);
	s->check.run = check_run;
	s->check.done = check_done;
	relay_workers_submit(x->signers, &s->check);
}

static void auth_plain(struct session *s, const uint8_t *dec, size_t len)
{
	char user[256], pw[256];
	if (relay_sasl_plain(dec, len, user, sizeof user, pw, sizeof pw) < 0) {
		reply(s, "501 5.5.2 malformed AUTH PLAIN response");
		error_count(s);
		return;
	}
	auth_finish(s, user, pw, strlen(pw));
	OPENSSL_cleanse(pw, sizeof pw);
}

/* A SASL response line (base64, or "*" to cancel). */
static void auth_line(struct session *s, const char *line, size_t n)
{
	enum astep step = s->auth_step;
	s->auth_step = A_NONE;
	if (n == 1 && line[0] == '*') {
		reply(s, "501 5.0.0 authentication cancelled");
		return;
	}
	uint8_t dec[512];
	long k = relay_b64_decode(line, n, dec, sizeof dec - 1);
	if (k < 0) {
		reply(s, "501 5.5.2 malformed base64 in the AUTH response");
		error_count(s);
		return;
	}
	dec[k] = 0;
	if (step == A_PLAIN) {
		auth_plain(s, dec, (size_t)k);
	} else if (step == A_USER) {
		if (!k || memchr(dec, 0, (size_t)k) || (size_t)k >= sizeof s->auth_user) {
			reply(s, "501 5.5.2 malformed user name");
			error_count(s);
			return;
		}
		memcpy(s->auth_user, dec, (size_t)k + 1);
		s->auth_step = A_PASS;
		reply(s, "334 UGFzc3dvcmQ6");
	} else {
		auth_finish(s, s->auth_user, (const char *)dec, (size_t)k);
	}
	OPENSSL_cleanse(dec, sizeof dec);
}

static void cmd_auth(struct session *s, const char *arg, size_t n)
{
	const struct relay_accounts *as = s->x->cfg->accounts;
	if (!as || !as->n) {
		reply(s, "502 5.5.1 AUTH not available");
		error_count(s);
		return;
	}
	if (!s->tls && !s->x->cfg->auth_without_tls) {
		reply(s, "538 5.7.11 encryption required for requested authentication mechanism");
		error_count(s);
		return;
	}
	if (!s->helo || !s->esmtp || s->acct || s->sender) {
		reply(s, "503 5.5.1 %s",
		      s->acct     ? "already authenticated"
		      : s->sender ? "AUTH not allowed during a mail transaction"
		                  : "EHLO first");
		error_count(s);
		return;
	}
	const char *sp = memchr(arg, ' ', n);
	size_t ml = sp ? (size_t)(sp - arg) : n;
	const char *init = sp ? sp + 1 : NULL;
	size_t il = sp ? n - ml - 1 : 0;
	if (ml == 5 && !strncasecmp(arg, "PLAIN", 5)) {
		if (!init) {
			s->auth_step = A_PLAIN;
			reply(s, "334 ");
		} else {
			s->auth_step = A_PLAIN;
			auth_line(s, init, il);
		}
	} else if (ml == 5 && !strncasecmp(arg, "LOGIN", 5)) {
		s->auth_step = init ? A_USER : A_NONE;
		if (init)
			auth_line(s, init, il);
		else {
			s->auth_step = A_USER;
			reply(s, "334 VXNlcm5hbWU6");
		}
	} else {
		reply(s, "504 5.5.4 unrecognized authentication mechanism");
		error_count(s);
	}
}

static void command(struct session *s, const char *line, size_t n)
{
	struct smtp_command c;
	struct base_err err;
	if (s->auth_step != A_NONE) {
		auth_line(s, line, n);
		return;
	}
	if (n >= 4 && !strncasecmp(line, "AUTH", 4) && (n == 4 || line[4] == ' ')) {
		cmd_auth(s, n > 5 ? line + 5 : "", n > 5 ? n - 5 : 0);
		return;
	}
	if (smtp_parse_command(line, n, &c, &err) < 0) {
		reply(s, "501 %s", err.msg);
		error_count(s);
		return;
	}
	switch (c.verb) {
	case SMTP_HELO:
	case SMTP_EHLO:
		cmd_ehlo(s, &c);
		break;
	case SMTP_MAIL:
		cmd_mail(s, &c);
		break;
	case SMTP_RCPT:
		cmd_rcpt(s, &c);
		break;
	case SMTP_DATA:
		cmd_data(s);
		break;
	case SMTP_RSET:
		tx_reset(s);
		reply(s, "250 2.0.0 Ok");
		break;
	case SMTP_NOOP:
		reply(s, "250 2.0.0 Ok");
		break;
	case SMTP_VRFY:
		reply(s, "252 2.5.0 cannot verify");
		break;
	case SMTP_HELP:
		reply(s, "214 2.0.0 see RFC 5321");
		break;
	case SMTP_QUIT:
		reply(s, "221 2.0.0 %s closing", s->x->hostname);
		close_after_reply(s);
		break;
	case SMTP_STARTTLS:
		if (s->x->tls->server && !s->tls) {
			cmd_starttls(s, c.arg_len);
			break;
		}
		/* fall through */
	case SMTP_BDAT:
	case SMTP_UNKNOWN:
	default:
		reply(s, "502 5.5.1 command not implemented");
		error_count(s);
	}
}

static void read_lines(struct bufferevent *bev, struct session *s)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	while (s->st == S_CMD || s->st == S_DATA) {
		size_t n;
		char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
		if (!line) {
			size_t limit = s->st == S_DATA ? DATA_LINE_MAX : CMD_LINE_MAX;
			if (evbuffer_get_length(in) > limit) {
				reply(s, "500 5.5.2 line too long");
				close_after_reply(s);
			}
			return;
		}
		if (s->st == S_DATA) {
			if (n > DATA_LINE_MAX) s->too_big = 1;
			data_line(s, line, n);
		} else if (n > (strncasecmp(line, "MAIL ", 5) && strncasecmp(line, "RCPT ", 5)
		                    ? SMTP_CMD_MAX
		                    : CMD_LINE_MAX)) {
			reply(s, "500 5.5.2 line too long");
			error_count(s);
		} else {
			command(s, line, n);
		}
		free(line);
		if (s->bev != bev) return; /* STARTTLS: the TLS layer reads from now on */
	}
}

/* Handles every complete line, then sends the replies in one write. */
static void on_read(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;
	read_lines(bev, s);
	flush(s);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct session *s = arg;
	if (what & BEV_EVENT_CONNECTED) {
		/* the TLS handshake is done */
		s->handshake = 0;
		s->tls = 1;
		SSL *ssl = bufferevent_openssl_get_ssl(bev);
		base_debug("%s: TLS %s %s", s->ip, SSL_get_version(ssl), SSL_get_cipher_name(ssl));
		return;
	}
	if (s->handshake) {
		char e[256] = "connection closed during the handshake";
		unsigned long code = bufferevent_get_openssl_error(bev);
		if (code) ERR_error_string_n(code, e, sizeof e);
		while (bufferevent_get_openssl_error(bev)) continue;
		base_warn("TLS handshake with %s failed: %s", s->ip,
		          what & BEV_EVENT_TIMEOUT ? "timeout" : e);
		session_free(s);
		return;
	}
	if (s->st == S_WAIT || s->st == S_SIGN || s->st == S_AUTH) {
		/* the commit, the signing or the password check still owns the
		 * session; it frees it */
		s->gone = 1;
		bufferevent_disable(bev, EV_READ | EV_WRITE);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT && s->st != S_CLOSING) {
		reply(s, "421 4.4.2 %s timeout, closing", s->x->hostname);
		close_after_reply(s);
		return;
	}
	session_free(s);
}

/* A committed message joins the queue and gets its reception line; then
 * relay_server_committed() answers for it. */
void relay_server_queued(struct relay_ctx *x, struct session *s)
{
	struct rmsg *m = relay_queue_add(x, s->id, s->sender, s->attrs, s->ip, base_now(), &s->loc,
	                                 (const char *const *)s->rcpts, s->nrcpt);
	if (s->dsn_blob.len) relay_dsn_attach(x, m, s->dsn_blob.data, s->dsn_blob.len, NULL);
	x->acct_tls = s->tls;
	relay_account(x, "reception", m, NULL, NULL, 250, NULL);
	x->acct_tls = 0;
}

void relay_server_committed(struct relay_ctx *x, struct session *s, int ok, const char *why)
{
	if (s->gone) {
		session_free(s);
		return;
	}
	if (ok)
		reply(s, "250 2.0.0 Ok: queued as %s", s->id);
	else
		reply(s, "451 4.3.0 the spool could not be synced, try again later");
	tx_reset(s);
	s->st = S_CMD;
	bufferevent_enable(s->bev, EV_READ);
	on_read(s->bev, s); /* commands pipelined behind the data */
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
	struct relay_ctx *x = arg;
	struct bufferevent *bev = bufferevent_socket_new(x->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!bev) {
		evutil_closesocket(fd);
		return;
	}
	struct session *s = base_xcalloc(1, sizeof *s);
	s->x = x;
	s->bev = bev;
	base_buf_init(&s->data);
	strcpy(s->helo_name, "unknown");
	int fam = sa->sa_family;
	const uint8_t *a = fam == AF_INET
	                       ? (const uint8_t *)&((struct sockaddr_in *)sa)->sin_addr
	                       : (const uint8_t *)&((struct sockaddr_in6 *)sa)->sin6_addr;
	inet_ntop(fam, a, s->ip, sizeof s->ip);
	for (size_t i = 0; i < x->cfg->ntrusted; i++)
		if (base_cidr_contains(&x->cfg->trusted[i], fam, a)) s->trusted = 1;
	s->next = x->slist;
	if (x->slist) x->slist->prev = s;
	x->slist = s;
	x->sessions++;
	bufferevent_setcb(bev, on_read, NULL, on_event, s);
	struct timeval tv = {x->cfg->timeout, 0};
	bufferevent_set_timeouts(bev, &tv, &tv);
	if (x->sessions > x->cfg->max_conns) {
		reply(s, "421 4.7.0 %s too many connections", x->hostname);
		close_after_reply(s);
		return;
	}
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	reply(s, "220 %s ESMTP mailrep relay", x->hostname);
	flush(s);
}

/* At start: counts the messages found in the spool that the counters file
 * may not include yet (after its mark), then moves the mark past every
 * message found, so that new ones all come after it (account.h). */
static int quota_recover(struct relay_ctx *x, struct base_err *err)
{
	uint32_t seg = 0, n = 0;
	uint64_t off = 0;
	for (const struct rmsg *m = x->msgs; m; m = m->next) {
		if (m->account)
			n += (uint32_t)relay_quota_recover(x->quota, m->account, m->received,
			                                   base_now(), m->nrcpt, m->loc.seg,
			                                   m->loc.off);
		if (m->loc.seg > seg || (m->loc.seg == seg && m->loc.off > off))
			seg = m->loc.seg, off = m->loc.off;
	}
	if (n) base_info("send limits: %u messages in the spool counted again", n);
	return relay_quota_save(x->quota, seg, off, err);
}

/* The send counters and the password cache, for a relay with accounts: at
 * start, or when a reload brings the first accounts. */
int relay_server_accounts_on(struct relay_ctx *x, struct base_err *err)
{
	if (x->quota) return 0;
	char path[4096];
	snprintf(path, sizeof path, "%s/limits", x->cfg->spool);
	if (relay_quota_open(&x->quota, path, err) < 0) return -1;
	if (quota_recover(x, err) < 0) {
		relay_quota_close(x->quota);
		x->quota = NULL;
		return -1;
	}
	x->authc = relay_authc_new();
	return 0;
}

/* After a reload: passwords checked against the previous accounts are
 * forgotten, so that a changed or removed password stops working at once. */
void relay_server_accounts_changed(struct relay_ctx *x)
{
	x->acct_gen++;
	if (!x->authc) return;
	relay_authc_free(x->authc);
	x->authc = relay_authc_new();
}

int relay_server_start(struct relay_ctx *x, struct base_err *err)
{
	struct base_sockaddr a;
	if (base_parse_hostport(x->cfg->listen, 25, &a, err) < 0) return -1;
	x->tls = base_xcalloc(1, sizeof *x->tls);
	if (relay_tls_init(x->tls, x->cfg->tls_cert, x->cfg->tls_key, x->cfg->tls_ca, err) < 0)
		return -1;
	if (x->cfg->accounts && x->cfg->accounts->n && relay_server_accounts_on(x, err) < 0)
		return -1;
	struct sockaddr_storage ss;
	socklen_t len = base_sockaddr_to(&a, &ss);
	x->listener = evconnlistener_new_bind(x->base, on_accept, x,
	                                      LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE, 1024,
	                                      (struct sockaddr *)&ss, (int)len);
	if (!x->listener) return base_errf(err, "listen %s: %s", x->cfg->listen, strerror(errno));
	base_info("relay listening on %s", x->cfg->listen);
	return 0;
}

void relay_server_stop(struct relay_ctx *x)
{
	if (x->listener) evconnlistener_free(x->listener);
	x->listener = NULL;
	while (x->slist) session_free(x->slist);
	x->nwaiting = 0;
	if (x->tls) relay_tls_free(x->tls);
	free(x->tls);
	x->tls = NULL;
	relay_quota_close(x->quota);
	x->quota = NULL;
	relay_authc_free(x->authc);
	x->authc = NULL;
}
