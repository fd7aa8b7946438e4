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
 * At the end of DATA the message gets a Received field, is DKIM-signed,
 * and written to the spool; the session then stops reading and waits for
 * the group commit (relay.c), which answers 250 for every message it made
 * durable, or 451 if the sync failed. A failed write (full disk) answers
 * 452 and leaves nothing behind.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "relay/int.h"
#include "smtp/smtp.h"

#define DATA_LINE_MAX 65536 /* lenient beyond RFC 5321's 1000, but bounded */
#define MAX_ERRORS    10

enum sstate { S_CMD, S_DATA, S_WAIT, S_CLOSING };

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
	struct session *prev, *next;
};

static void reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct session *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	evbuffer_add_vprintf(bufferevent_get_output(s->bev), fmt, ap);
	va_end(ap);
	evbuffer_add(bufferevent_get_output(s->bev), "\r\n", 2);
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
	bufferevent_free(s->bev);
	free(s);
}

static void on_drained(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) session_free(s);
}

/* Sends what is queued, then closes. */
static void close_after_reply(struct session *s)
{
	s->st = S_CLOSING;
	bufferevent_disable(s->bev, EV_READ);
	bufferevent_setcb(s->bev, NULL, on_drained, NULL, s);
	on_drained(s->bev, s);
}

static int error_count(struct session *s)
{
	if (++s->errors < MAX_ERRORS) return 0;
	reply(s, "421 4.7.0 %s too many errors, closing", s->x->hostname);
	close_after_reply(s);
	return 1;
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
	reply(s, "250-ENHANCEDSTATUSCODES");
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
	if (!s->trusted) {
		reply(s, "554 5.7.1 <%s>: relay access denied", c->path);
		error_count(s);
		return;
	}
	if (relay_check_rcpt(c->path, &err) < 0) {
		reply(s, "553 %s", err.msg);
		error_count(s);
		return;
	}
	if (s->nrcpt >= s->x->cfg->max_rcpts || s->nrcpt >= RELAY_RCPT_MAX) {
		reply(s, "452 4.5.3 too many recipients");
		return;
	}
	s->rcpts = base_xrealloc(s->rcpts, (s->nrcpt + 1) * sizeof *s->rcpts);
	s->rcpts[s->nrcpt++] = base_xstrdup(c->path);
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
	    &s->data, "Received: from %s ([%s])\r\n\tby %s (mailrep) with %s id %s;\r\n\t%s\r\n",
	    s->helo_name, s->ip, s->x->hostname, s->esmtp ? "ESMTP" : "SMTP", s->id, date);
	s->st = S_DATA;
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void end_data(struct session *s)
{
	struct relay_ctx *x = s->x;
	struct base_err err;
	s->st = S_CMD;
	if (s->too_big) {
		reply(s, "552 5.3.4 message size exceeds the limit of %llu bytes",
		      (unsigned long long)x->cfg->max_size);
		tx_reset(s);
		return;
	}
	if (relay_sign(x, &s->data, &err) < 0) {
		base_warn("%s: DKIM signing failed: %s", s->id, err.msg);
		reply(s, "451 4.7.0 signing failed, try again later");
		tx_reset(s);
		return;
	}
	if (relay_spool_add(x->spool, s->id, s->sender, s->attrs, base_now(),
	                    (const char *const *)s->rcpts, s->nrcpt, s->data.data, s->data.len,
	                    &s->loc, &err) < 0) {
		base_error("%s", err.msg);
		reply(s, "452 4.3.1 insufficient system storage");
		tx_reset(s);
		return;
	}
	base_buf_free(&s->data);
	s->st = S_WAIT;
	bufferevent_disable(s->bev, EV_READ);
	if (x->nwaiting == x->capwaiting) {
		x->capwaiting = x->capwaiting ? 2 * x->capwaiting : 64;
		x->waiting = base_xrealloc(x->waiting, x->capwaiting * sizeof *x->waiting);
	}
	x->waiting[x->nwaiting++] = s;
	relay_commit_soon(x);
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

static void command(struct session *s, const char *line, size_t n)
{
	struct smtp_command c;
	struct base_err err;
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
	case SMTP_BDAT:
	case SMTP_UNKNOWN:
	default:
		reply(s, "502 5.5.1 command not implemented");
		error_count(s);
	}
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	while (s->st == S_CMD || s->st == S_DATA) {
		size_t n;
		char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
		if (!line) {
			size_t limit = s->st == S_DATA ? DATA_LINE_MAX : SMTP_CMD_MAX;
			if (evbuffer_get_length(in) > limit) {
				reply(s, "500 5.5.2 line too long");
				close_after_reply(s);
			}
			return;
		}
		if (s->st == S_DATA) {
			if (n > DATA_LINE_MAX) s->too_big = 1;
			data_line(s, line, n);
		} else if (n > SMTP_CMD_MAX) {
			reply(s, "500 5.5.2 line too long");
			error_count(s);
		} else {
			command(s, line, n);
		}
		free(line);
	}
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct session *s = arg;
	if (s->st == S_WAIT) {
		/* the commit still owns the session; it frees it */
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

void relay_server_committed(struct relay_ctx *x, struct session *s, int ok, const char *why)
{
	if (ok) {
		struct rmsg *m =
		    relay_queue_add(x, s->id, s->sender, s->attrs, s->ip, base_now(), &s->loc,
		                    (const char *const *)s->rcpts, s->nrcpt);
		relay_account(x, "reception", m, NULL, NULL, 250, NULL);
	}
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
}

int relay_server_start(struct relay_ctx *x, struct base_err *err)
{
	struct base_sockaddr a;
	if (base_parse_hostport(x->cfg->listen, 25, &a, err) < 0) return -1;
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
}
