/*
 * trap.c — the trap receiver: an SMTP server (libevent) that accepts mail
 * for trap domains and trap addresses and records each accepted delivery as
 * one impact.
 *
 * One `struct conn` per client, driven by the read callback as a small state
 * machine:
 *
 *   PROXY  (only for peers in --proxy-from) waiting for a PROXY v1/v2 header,
 *          which then names the real client;
 *   CMD    reading command lines; every complete line in the input buffer is
 *          handled in order and its reply queued, which is all PIPELINING
 *          needs;
 *   DATA   reading the message: size counted, headers kept up to 8 KiB,
 *          the rest discarded; at the final dot the impact is written and
 *          committed (synchronous=FULL) before "250" is queued;
 *   CLOSING the last reply is queued; the connection is freed once the
 *          output has drained.
 *
 * Bounds: command lines 1000 bytes (a longer one is refused and the
 * connection closed, since resynchronising is guesswork), data lines are
 * counted but never buffered beyond SMTP_LINE_MAX, messages up to max_size
 * (the rest is read and refused with 552), max_rcpts recipients, max_errors
 * bad commands, max_conns connections, and `timeout` seconds of silence.
 *
 * The commit runs on the event loop: a trap's acceptance rate is small and
 * one fsync per message is the durability the reply promises.
 */
#include "listing/store.h"
#include "smtp/smtp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

enum conn_state { ST_PROXY, ST_CMD, ST_DATA, ST_CLOSING };

struct trap {
	const struct listing_trap_options *o;
	struct event_base *base;
	unsigned n_conns;
	struct conn *conns; /* every open connection, to free them at shutdown */
	char **traps;       /* from the store: "address" or "@domain" */
	size_t n_traps;
};

struct conn {
	struct trap *t;
	struct conn *prev, *next;
	struct bufferevent *bev;
	enum conn_state state;
	struct listing_ip client;
	char helo[256];
	int greeted, have_mail;
	char mail_from[SMTP_PATH_MAX + 1];
	char trap[SMTP_PATH_MAX + 1];
	struct base_buf rcpts;
	unsigned n_rcpts, errors;
	struct base_buf headers;
	int in_headers, oversize, long_line;
	uint64_t size;
};

static void reply(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct conn *c, const char *fmt, ...)
{
	char buf[600];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf - 2, fmt, ap);
	va_end(ap);
	if (n < 0) return;
	if ((size_t)n > sizeof buf - 3) n = (int)sizeof buf - 3;
	buf[n++] = '\r';
	buf[n++] = '\n';
	bufferevent_write(c->bev, buf, (size_t)n);
}

static void conn_free(struct conn *c)
{
	c->t->n_conns--;
	if (c->prev)
		c->prev->next = c->next;
	else
		c->t->conns = c->next;
	if (c->next) c->next->prev = c->prev;
	bufferevent_free(c->bev);
	base_buf_free(&c->rcpts);
	base_buf_free(&c->headers);
	free(c);
}

/* Stops reading; the connection is freed once its output has drained (by
 * on_write, or at the end of on_read if there is nothing to send). */
static void close_after_reply(struct conn *c)
{
	c->state = ST_CLOSING;
	bufferevent_disable(c->bev, EV_READ);
}

static void reset_transaction(struct conn *c)
{
	c->have_mail = 0;
	c->mail_from[0] = 0;
	c->trap[0] = 0;
	c->n_rcpts = 0;
	c->rcpts.len = 0;
	if (c->rcpts.data) c->rcpts.data[0] = 0;
	c->headers.len = 0;
	c->size = 0;
	c->oversize = c->long_line = 0;
}

static void set_client(struct conn *c, int family, const uint8_t *addr)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	memset(&c->client, 0, sizeof c->client);
	if (family == AF_INET) {
		c->client.family = 4;
		memcpy(c->client.a, addr, 4);
	} else if (!memcmp(addr, mapped, 12)) {
		c->client.family = 4; /* an IPv4 client on a dual-stack socket */
		memcpy(c->client.a, addr + 12, 4);
	} else {
		c->client.family = 6;
		memcpy(c->client.a, addr, 16);
	}
}

/* ---- recipients ----------------------------------------------------------- */

static int is_trap(struct trap *t, const char *path)
{
	const struct listing_trap_options *o = t->o;
	const char *dom = smtp_path_domain(path);
	for (size_t i = 0; i < o->n_addresses; i++)
		if (!strcasecmp(o->addresses[i], path)) return 1;
	for (size_t i = 0; i < o->n_domains; i++)
		if (*dom && !strcasecmp(o->domains[i], dom)) return 1;
	for (size_t i = 0; i < t->n_traps; i++) {
		const char *x = t->traps[i];
		if (x[0] == '@' ? (*dom && !strcasecmp(x + 1, dom)) : !strcasecmp(x, path))
			return 1;
	}
	return 0;
}

/* ---- the final dot -------------------------------------------------------- */

static void finish_message(struct conn *c)
{
	if (c->oversize) {
		reply(c, "552 5.3.4 Message exceeds the size limit of %llu bytes",
		      (unsigned long long)c->t->o->max_size);
		reset_transaction(c);
		return;
	}
	if (c->long_line) {
		reply(c, "500 5.5.2 Line longer than %d bytes in message", SMTP_LINE_MAX);
		reset_transaction(c);
		return;
	}
	struct listing_impact imp = {0};
	imp.ip = c->client;
	imp.time = (int64_t)base_now();
	imp.trap = c->trap;
	imp.source = "smtp";
	imp.helo = c->helo[0] ? c->helo : NULL;
	imp.mail_from = c->mail_from;
	imp.rcpt = c->rcpts.data;
	imp.headers = c->headers.data;
	imp.headers_len = c->headers.len;
	char store[LISTING_HDRVAL_STORE];
	const char *envelope_from = imp.mail_from;
	listing_impact_parse_headers(&imp, c->headers.data ? c->headers.data : "", c->headers.len,
	                             store);
	imp.mail_from = envelope_from;
	int64_t id;
	struct base_err err;
	if (listing_impact_add(c->t->o->store, &imp, &id, &err) < 0) {
		base_error("trap: %s", err.msg);
		reply(c, "451 4.3.0 Local error, try again later");
	} else {
		char ip[64];
		listing_ip_format(&c->client, ip, sizeof ip);
		base_info("trap: impact %lld from %s to %s", (long long)id, ip, c->trap);
		reply(c, "250 2.0.0 Ok: recorded as %lld", (long long)id);
	}
	reset_transaction(c);
}

/* ---- commands -------------------------------------------------------------- */

static void bad_command(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad_command(struct conn *c, const char *fmt, ...)
{
	char buf[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (++c->errors >= c->t->o->max_errors) {
		reply(c, "421 4.7.0 Too many errors, closing");
		close_after_reply(c);
		return;
	}
	reply(c, "%s", buf);
}

static void command(struct conn *c, const char *line, size_t len)
{
	struct smtp_command cmd;
	struct base_err err;
	const struct listing_trap_options *o = c->t->o;
	if (smtp_parse_command(line, len, &cmd, &err) < 0) {
		bad_command(c, "501 5.5.4 %s", err.msg);
		return;
	}
	switch (cmd.verb) {
	case SMTP_HELO:
	case SMTP_EHLO: {
		size_t n = cmd.arg_len < sizeof c->helo - 1 ? cmd.arg_len : sizeof c->helo - 1;
		memcpy(c->helo, cmd.arg, n);
		c->helo[n] = 0;
		c->greeted = 1;
		reset_transaction(c);
		if (cmd.verb == SMTP_HELO) {
			reply(c, "250 %s", o->hostname);
		} else {
			reply(c, "250-%s", o->hostname);
			reply(c, "250-PIPELINING");
			reply(c, "250-SIZE %llu", (unsigned long long)o->max_size);
			reply(c, "250-8BITMIME");
			reply(c, "250 ENHANCEDSTATUSCODES");
		}
		return;
	}
	case SMTP_MAIL: {
		if (!c->greeted) return bad_command(c, "503 5.5.1 Say HELO or EHLO first");
		if (c->have_mail) return bad_command(c, "503 5.5.1 Nested MAIL command");
		uint64_t size;
		int k = smtp_param_size(cmd.params, cmd.params_len, &size);
		if (k < 0) return bad_command(c, "501 5.5.4 Bad SIZE parameter");
		if (k == 1 && size > o->max_size) {
			reply(c, "552 5.3.4 Message size exceeds the limit of %llu bytes",
			      (unsigned long long)o->max_size);
			return;
		}
		snprintf(c->mail_from, sizeof c->mail_from, "%s", cmd.path);
		c->have_mail = 1;
		reply(c, "250 2.1.0 Ok");
		return;
	}
	case SMTP_RCPT:
		if (!c->have_mail) return bad_command(c, "503 5.5.1 Need MAIL before RCPT");
		if (c->n_rcpts >= o->max_rcpts) {
			reply(c, "452 4.5.3 Too many recipients");
			return;
		}
		if (!is_trap(c->t, cmd.path)) {
			reply(c, "550 5.1.1 <%s>: Recipient address rejected: User unknown",
			      cmd.path);
			return;
		}
		if (!c->n_rcpts) snprintf(c->trap, sizeof c->trap, "%s", cmd.path);
		if (c->rcpts.len + strlen(cmd.path) + 1 <= LISTING_FIELD_MAX) {
			if (c->rcpts.len) base_buf_puts(&c->rcpts, ",");
			base_buf_puts(&c->rcpts, cmd.path);
		}
		c->n_rcpts++;
		reply(c, "250 2.1.5 Ok");
		return;
	case SMTP_DATA:
		if (!c->have_mail) return bad_command(c, "503 5.5.1 Need MAIL command");
		if (!c->n_rcpts) return bad_command(c, "554 5.5.1 No valid recipients");
		c->state = ST_DATA;
		c->in_headers = 1;
		reply(c, "354 End data with <CR><LF>.<CR><LF>");
		return;
	case SMTP_RSET:
		reset_transaction(c);
		reply(c, "250 2.0.0 Ok");
		return;
	case SMTP_NOOP:
		reply(c, "250 2.0.0 Ok");
		return;
	case SMTP_VRFY:
		reply(c, "252 2.5.2 Cannot VRFY user");
		return;
	case SMTP_HELP:
		reply(c, "214 2.0.0 See RFC 5321");
		return;
	case SMTP_QUIT:
		reply(c, "221 2.0.0 Bye");
		close_after_reply(c);
		return;
	case SMTP_STARTTLS:
		bad_command(c, "502 5.5.1 STARTTLS not offered");
		return;
	case SMTP_BDAT:
		bad_command(c, "502 5.5.1 CHUNKING not offered");
		return;
	case SMTP_UNKNOWN:
		bad_command(c, "500 5.5.2 Command not recognised");
		return;
	}
}

static void data_line(struct conn *c, const char *line, size_t len)
{
	const char *s;
	size_t n;
	if (smtp_data_line(line, len, &s, &n) == 1) {
		c->state = ST_CMD;
		finish_message(c);
		return;
	}
	c->size += n + 2;
	if (c->size > c->t->o->max_size) c->oversize = 1;
	if (c->in_headers) {
		if (n == 0) {
			c->in_headers = 0;
		} else if (c->headers.len + n + 2 <= LISTING_HEADERS_MAX) {
			base_buf_append(&c->headers, s, n);
			base_buf_append(&c->headers, "\r\n", 2);
		}
	}
}

/* ---- libevent callbacks -------------------------------------------------- */

static void greet(struct conn *c)
{
	c->state = ST_CMD;
	reply(c, "220 %s ESMTP mailrep trap", c->t->o->hostname);
}

static void handle_proxy(struct conn *c, struct evbuffer *in)
{
	size_t len = evbuffer_get_length(in);
	size_t want = len < SMTP_PROXY_V2_MAX ? len : SMTP_PROXY_V2_MAX;
	const uint8_t *p = evbuffer_pullup(in, (ssize_t)want);
	struct smtp_proxy px;
	struct base_err err;
	int k = smtp_proxy_parse(p, want, &px, &err);
	if (k == 0) return;
	if (k < 0) {
		base_info("trap: dropping a trusted peer's connection: %s", err.msg);
		close_after_reply(c);
		return;
	}
	if (px.family) set_client(c, px.family, px.src);
	evbuffer_drain(in, (size_t)k);
	greet(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	while (c->state != ST_CLOSING) {
		if (c->state == ST_PROXY) {
			handle_proxy(c, in);
			if (c->state == ST_PROXY) return;
			continue;
		}
		size_t n;
		char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
		if (!line) {
			size_t pending = evbuffer_get_length(in);
			if (pending <= SMTP_LINE_MAX) return;
			if (c->state == ST_CMD) {
				reply(c, "500 5.5.2 Line too long");
				close_after_reply(c);
				break;
			}
			/* DATA: count and drop the over-long line's bytes */
			c->size += pending;
			c->long_line = 1;
			if (c->size > c->t->o->max_size) c->oversize = 1;
			evbuffer_drain(in, pending);
			return;
		}
		if (c->state == ST_CMD) {
			if (n > SMTP_LINE_MAX) {
				free(line);
				reply(c, "500 5.5.2 Line too long");
				close_after_reply(c);
				break;
			}
			command(c, line, n);
		} else {
			if (n > SMTP_LINE_MAX) c->long_line = 1;
			data_line(c, line, n);
		}
		free(line);
	}
	if (c->state == ST_CLOSING && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn_free(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	if (c->state == ST_CLOSING && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn_free(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	(void)bev;
	if ((what & BEV_EVENT_TIMEOUT) && c->state != ST_CLOSING) {
		reply(c, "421 4.4.2 %s Timeout, closing", c->t->o->hostname);
		close_after_reply(c);
		return;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) conn_free(c);
}

static int from_proxy(struct trap *t, const struct sockaddr *sa)
{
	int fam = sa->sa_family;
	const uint8_t *a = fam == AF_INET
	                       ? (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr
	                       : (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
	for (size_t i = 0; i < t->o->n_proxy_from; i++)
		if (base_cidr_contains(&t->o->proxy_from[i], fam, a)) return 1;
	return 0;
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
	struct trap *t = arg;
	(void)l;
	(void)salen;
	if (t->n_conns >= t->o->max_conns) {
		static const char busy[] = "421 4.3.2 Too many connections, try again later\r\n";
		ssize_t w = send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		(void)w;
		evutil_closesocket(fd);
		return;
	}
	struct conn *c = base_xcalloc(1, sizeof *c);
	c->t = t;
	base_buf_init(&c->rcpts);
	base_buf_init(&c->headers);
	c->bev = bufferevent_socket_new(t->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!c->bev) {
		evutil_closesocket(fd);
		free(c);
		return;
	}
	t->n_conns++;
	c->next = t->conns;
	if (t->conns) t->conns->prev = c;
	t->conns = c;
	if (sa->sa_family == AF_INET)
		set_client(c, AF_INET, (const uint8_t *)&((struct sockaddr_in *)sa)->sin_addr);
	else
		set_client(c, AF_INET6, (const uint8_t *)&((struct sockaddr_in6 *)sa)->sin6_addr);
	struct timeval tv = {.tv_sec = t->o->timeout};
	bufferevent_set_timeouts(c->bev, &tv, &tv);
	bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	if (from_proxy(t, sa))
		c->state = ST_PROXY;
	else
		greet(c);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	event_base_loopexit(arg, NULL);
}

static int trap_cb(void *ctx, const char *address, const char *kind, int64_t created)
{
	struct trap *t = ctx;
	(void)created;
	if (!address) return 0;
	t->traps = base_xrealloc(t->traps, (t->n_traps + 1) * sizeof *t->traps);
	size_t n = strlen(address) + 2;
	char *s = base_xmalloc(n);
	snprintf(s, n, "%s%s", kind && !strcmp(kind, "domain") ? "@" : "", address);
	t->traps[t->n_traps++] = s;
	return 0;
}

int listing_trap_run(const struct listing_trap_options *o, struct base_err *err)
{
	struct trap t = {.o = o};
	int rc = -1;
	struct evconnlistener *lis = NULL;
	struct event *sigterm = NULL, *sigint = NULL;
	if (o->store->ops->traps_scan(o->store, trap_cb, &t, err) < 0) goto out;
	if (!o->n_domains && !o->n_addresses && !t.n_traps) {
		base_errf(err, "no trap domain or address configured");
		goto out;
	}
	signal(SIGPIPE, SIG_IGN);
	t.base = event_base_new();
	if (!t.base) {
		base_errf(err, "cannot create the event loop");
		goto out;
	}
	struct sockaddr_storage ss;
	socklen_t sl = base_sockaddr_to(&o->listen, &ss);
	lis = evconnlistener_new_bind(t.base, on_accept, &t,
	                              LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 128,
	                              (struct sockaddr *)&ss, (int)sl);
	if (!lis) {
		base_errf(err, "cannot listen on port %u: %s", o->listen.port, strerror(errno));
		goto out;
	}
	/* the port is bound and the store open (its files stay open): root is
	 * no longer needed */
	if (geteuid() == 0) {
		const char *user = o->user ? o->user : base_default_user();
		if (base_drop_privileges(user, err) < 0) goto out;
		base_info("trap: running as %s", user);
	}
	sigterm = evsignal_new(t.base, SIGTERM, on_signal, t.base);
	sigint = evsignal_new(t.base, SIGINT, on_signal, t.base);
	evsignal_add(sigterm, NULL);
	evsignal_add(sigint, NULL);
	if (o->ready_fd >= 0) {
		ssize_t w = write(o->ready_fd, "ready\n", 6);
		(void)w;
	}
	base_info("trap: listening on port %u", o->listen.port);
	event_base_dispatch(t.base);
	rc = 0;
out:
	while (t.conns) conn_free(t.conns);
	if (sigterm) event_free(sigterm);
	if (sigint) event_free(sigint);
	if (lis) evconnlistener_free(lis);
	if (t.base) event_base_free(t.base);
	for (size_t i = 0; i < t.n_traps; i++) free(t.traps[i]);
	free(t.traps);
	return rc;
}
