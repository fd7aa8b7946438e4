/*
 * mta.c — the relay's delivery stage: an SMTP client over libevent
 * bufferevents. A destination (next hop host:port) opens connections up to
 * its limit while jobs wait; each connection reads the greeting, says EHLO
 * (HELO when EHLO is refused), then takes jobs one after another (connection
 * reuse) until none is left, waits up to IDLE_LINGER seconds for another
 * (relay_mta_pump gives new jobs to idle connections first, when their TLS
 * state suits the job), and QUITs.
 *
 * A job is one transaction: MAIL, one RCPT per recipient, DATA, the body,
 * and the final dot. With PIPELINING the commands up to DATA go out in one
 * write and the replies are matched in order; without it each command
 * waits for the previous reply. Replies are bounded (line length, lines per
 * reply), and every wait has the timeout RFC 5321 4.5.3.2 gives it.
 *
 * Outcomes go back to relay.c per recipient: 2xx delivered, 5xx bounce,
 * anything else (4xx, lost connection, timeout) transient. A 4xx greeting
 * or a 421 suspends the destination.
 *
 * Opening a connection (pools and shaping): a destination is a site seen
 * from one pool. Its pump picks a source address of the pool by smooth
 * weighted round robin among those under the site's connection limit and
 * new-connection rate (shape.c) and of an address family the site has;
 * the connection binds that address and says its EHLO name. It then tries
 * the site's addresses in order (MX preference, IPv4 before IPv6 per host):
 * a refused connection, a timeout, a lost connection or a 4xx/5xx greeting
 * moves on to the next address. When none is left, the outcome is: a
 * suspension when any address greeted 4xx, a bounce (of the waiting jobs)
 * when every address greeted 5xx, else a transient failure. Before each
 * job a connection takes a token from its source's message rate; without
 * one it waits on a timer (C_WAIT), which is neither a failure nor an
 * attempt.
 *
 * Address order: each connection takes the site's addresses in MX
 * preference order, with the hosts of equal preference in a random order
 * drawn for that connection (RFC 5321 5.1; a host's own addresses keep
 * their order, IPv4 first). Addresses that refused a connection or timed
 * out in the last RELAY_DEAD_SECONDS are left out (lookup.c remembers
 * them), unless all of the site's addresses are: then all are tried.
 *
 * STARTTLS follows the --tls-policy of the first waiting job's recipient
 * domain: opportunistic (when offered, no certificate check; a failed
 * handshake reconnects to the same address in plain text), required
 * (never plain text: a failed handshake moves on to the site's next
 * address, and with none left, or without STARTTLS, the jobs fail
 * transiently with 4.7.5), verify (required, the chain must verify and
 * the certificate must match the host name the address came from: the MX
 * host, or a static route's host name; an IP-address route checks the
 * chain only), off. SNI carries that name whenever there is one. After
 * the handshake the client says EHLO again. Every job is checked against
 * its own domain's policy before it is sent: one that needs TLS the
 * connection does not have fails transiently, and the others go on.
 *
 * DANE (--dane, dane.h): an address whose MX host has usable TLSA records
 * takes mode DANE, whatever the domain's --tls-policy or MTA-STS policy
 * says, unless its --tls-policy entry of its own is off: STARTTLS is
 * required, and the handshake authenticates the host by its records
 * (DANE-EE: the key or certificate matches, no name check; DANE-TA: the
 * chain ends at the matched trust anchor and the certificate is for the
 * MX host name); a failure moves on to the next address, never to plain
 * text. Secure TLSA records that are all unusable require STARTTLS
 * without authentication; a failed TLSA lookup keeps the connection away
 * from that host. The policy dane-only asks DANE of every MX host of the
 * domain: mail to one without usable TLSA records fails transiently.
 *
 * TLS reporting (--tlsrpt, tlsrpt.c): each connection attempt that tried
 * TLS, or needed it, counts once for the recipient domain of the job it
 * was opened for: a handshake that worked (under MTA-STS testing, one
 * whose certificate also verified), or the reason it did not, in RFC
 * 8460's terms; in TLS, once more for each other domain it carries mail
 * for. A plain-text session that needed no TLS does not count.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "relay/dane.h"
#include "relay/int.h"
#include "relay/mtasts.h"
#include "relay/tls.h"
#include "relay/tlsrpt.h"
#include "smtp/smtp.h"

#define REPLY_LINE_MAX  2048
#define REPLY_LINES_MAX 64

/* RFC 5321 4.5.3.2 */
#define T_CONNECT 300
#define T_GREET   300
#define T_MAIL    300
#define T_RCPT    300
#define T_DATA    120
#define T_BLOCK   180
#define T_FINAL   600

/* How long a connection with nothing to do waits for the next job, as
 * Postfix's connection cache does (smtp_connection_cache_time_limit): under
 * a steady stream each commit brings only a few jobs, and without it every
 * one of them would pay for a new connection, greeting and EHLO. */
#define IDLE_LINGER 2

/* Recipient domains one connection attempt remembers having counted for
 * TLS reporting (a connection carrying more may count one twice). */
#define RPT_DOMS 16

enum cstate {
	C_CONNECT,
	C_GREETING,
	C_EHLO,
	C_HELO,
	C_STARTTLS,
	C_IDLE,
	C_TX,
	C_RSET,
	C_QUIT,
	C_WAIT
};

struct conn {
	struct relay_ctx *x;
	struct dest *d;
	struct bufferevent *bev;
	enum cstate st;
	int esmtp, pipelining, counted_connecting;
	int dsn;           /* the last EHLO offered DSN: parameters are passed on (dsn.c) */
	int in_read, dead; /* see on_read */
	uint32_t jobs;     /* transactions started on this connection */
	/* STARTTLS: offered in the last EHLO; handshake running; in TLS (with
	 * a verified chain); the policy the connection was opened for */
	int starttls, handshake, tls, verified;
	int plain; /* this address again without STARTTLS, after a failed handshake */
	int probe; /* MTA-STS testing: the certificate checked, not enforced */
	int dane_usage; /* in TLS authenticated by DANE: the usage (2, 3) of the matched record */
	/* TLS reporting: the domains this attempt is counted for (hashes, the
	 * last RPT_DOMS), and the handshake's result for them */
	uint64_t rpt_dom[RPT_DOMS];
	unsigned nrpt;
	int tls_result;
	enum relay_tls_mode mode;
	/* the reply being read */
	struct base_buf reply;
	unsigned lines;
	int code;
	/* the transaction */
	struct job *job;
	uint32_t step; /* replies consumed: 0 MAIL, 1..n RCPT, n+1 DATA, n+2 dot */
	uint32_t sent; /* commands sent (without pipelining: step + 1) */
	int mail_code, data_code;
	char *mail_reply, *data_reply;
	int *rcpt_code;
	char **rcpt_reply;
	uint32_t accepted;
	/* where from and to (pools and failover) */
	size_t si;                      /* d->src index */
	const struct relay_source *src; /* NULL: not bound */
	struct base_sockaddr addrs[DEST_ADDRS_MAX];
	char *names[DEST_ADDRS_MAX]; /* the host name of each (NULL: an IP next hop), owned */
	struct relay_dane *dane[DEST_ADDRS_MAX]; /* DANE for each (dest.dane), references held */
	size_t naddrs, ai;           /* addresses to try, the one being tried */
	unsigned greet4xx, greet5xx; /* greetings refused, over all addresses */
	int last_code, code4xx;
	char last_why[256], why4xx[256];        /* the last failure, the last 4xx greeting */
	char src_ip[48], peer[64], peer4xx[64]; /* of the current attempt */
	struct event *wait;                     /* C_WAIT: the message rate's timer */
	struct conn *prev, *next;   /* x->clist */
	struct conn *dprev, *dnext; /* d->conns */
	/* commands not sent yet (send_line while batch is set): a pipelined
	 * MAIL, RCPT... DATA goes out in one write */
	struct base_buf out;
	int batch;
};

static void on_read(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void sockaddr_text(const struct sockaddr_storage *ss, char *out, size_t n, int port);

/* Backs off from c's destination after its reply `why` (a 4xx greeting, a
 * 421); a throttle rule scoped to the source sees the connection's. */
static void back_off(struct conn *c, const char *why)
{
	c->x->acct_si = (uint32_t)c->si + 1;
	relay_suspend(c->x, c->d, why);
	c->x->acct_si = 0;
}

static void conn_free(struct conn *c)
{
	struct relay_ctx *x = c->x;
	if (c->in_read) {
		c->dead = 1;
		bufferevent_disable(c->bev, EV_READ | EV_WRITE);
		return;
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		x->clist = c->next;
	if (c->next) c->next->prev = c->prev;
	if (c->dprev)
		c->dprev->dnext = c->dnext;
	else
		c->d->conns = c->dnext;
	if (c->dnext) c->dnext->dprev = c->dprev;
	if (c->counted_connecting) c->d->connecting--;
	c->d->active--;
	x->nout--;
	c->d->src[c->si].active--;
	if (c->d->src[c->si].all) c->d->src[c->si].all->active--;
	if (c->wait) event_free(c->wait);
	for (size_t i = 0; i < c->naddrs; i++) {
		free(c->names[i]);
		relay_dane_unref(c->dane[i]);
	}
	base_buf_free(&c->reply);
	base_buf_free(&c->out);
	if (c->bev) bufferevent_free(c->bev);
	free(c);
}

static void tx_clear(struct conn *c)
{
	if (c->job) {
		for (uint32_t i = 0; i < c->job->n; i++) free(c->rcpt_reply[i]);
	}
	free(c->rcpt_reply);
	free(c->rcpt_code);
	free(c->mail_reply);
	free(c->data_reply);
	c->rcpt_reply = NULL;
	c->rcpt_code = NULL;
	c->mail_reply = c->data_reply = NULL;
	c->job = NULL;
}

/* Writes iov to the connection. In plain text, with nothing queued in the
 * bufferevent, straight to the socket: libevent would add the write event,
 * wait for it and remove it again (two epoll_ctl calls and a loop turn per
 * write). What the socket does not take at once, and everything in TLS
 * (the OpenSSL filter encrypts it), goes through the bufferevent, which
 * also reports the errors. */
static void send_iov(struct conn *c, const struct iovec *iov, int n)
{
	struct evbuffer *o = bufferevent_get_output(c->bev);
	size_t done = 0;
	if (!bufferevent_get_underlying(c->bev) && !evbuffer_get_length(o)) {
		struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
		ssize_t k = sendmsg(bufferevent_getfd(c->bev), &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (k > 0) done = (size_t)k;
	}
	for (int i = 0; i < n; i++) {
		if (done >= iov[i].iov_len) {
			done -= iov[i].iov_len;
			continue;
		}
		evbuffer_add(o, (const char *)iov[i].iov_base + done, iov[i].iov_len - done);
		done = 0;
	}
}

/* Sends the commands gathered in c->out. */
static void send_out(struct conn *c)
{
	if (!c->out.len) return;
	struct iovec iov = {c->out.data, c->out.len};
	send_iov(c, &iov, 1);
	c->out.len = 0;
}

static void send_line(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void send_line(struct conn *c, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n < 0) return;
	if ((size_t)n < sizeof line) {
		base_buf_append(&c->out, line, (size_t)n);
	} else {
		char *big = base_xmalloc((size_t)n + 1);
		va_start(ap, fmt);
		vsnprintf(big, (size_t)n + 1, fmt, ap);
		va_end(ap);
		base_buf_append(&c->out, big, (size_t)n);
		free(big);
	}
	base_buf_append(&c->out, "\r\n", 2);
	if (!c->batch) send_out(c);
}

static void set_timeout(struct conn *c, int read_s)
{
	struct timeval r = {read_s, 0}, w = {T_BLOCK, 0};
	bufferevent_set_timeouts(c->bev, &r, &w);
}

/* Whether DANE applies to any host of d (then MTA-STS does not, RFC 8461 2). */
static int dane_site(const struct dest *d)
{
	for (size_t i = 0; i < d->naddrs; i++)
		if (d->dane[i]) return 1;
	return 0;
}

/* Reports every recipient of the current job, then frees the job. A
 * recipient's code is the first failure on its way: MAIL, its RCPT, DATA,
 * then the final reply. */
static void tx_report(struct conn *c, int code, const char *why)
{
	struct job *j = c->job;
	if (!j) return;
	c->x->acct_src = c->src_ip[0] ? c->src_ip : NULL;
	c->x->acct_mx = c->peer[0] ? c->peer : NULL;
	c->x->acct_si = (uint32_t)c->si + 1;
	for (uint32_t i = 0; i < j->n; i++) {
		int rc = code;
		const char *rr = why;
		if (c->mail_code && (c->mail_code < 200 || c->mail_code >= 300))
			rc = c->mail_code, rr = c->mail_reply;
		else if (c->rcpt_code[i] && (c->rcpt_code[i] < 200 || c->rcpt_code[i] >= 300))
			rc = c->rcpt_code[i], rr = c->rcpt_reply[i];
		else if (c->data_code && c->data_code != 354)
			rc = c->data_code, rr = c->data_reply;
		c->x->acct_tls = c->tls;
		c->x->acct_dane = c->tls ? c->dane_usage : 0;
		c->x->acct_sts =
		    dane_site(c->d)
		        ? NULL
		        : relay_mtasts_acct(c->x, smtp_path_domain(j->m->rcpt[j->idx[i]].addr),
		                            c->ai < c->naddrs ? c->names[c->ai] : NULL, c->tls,
		                            c->verified);
		relay_outcome(c->x, c->d, j->m, j->idx[i], rc, rr);
		c->x->acct_tls = c->x->acct_dane = 0;
		c->x->acct_sts = NULL;
		if (rc >= 200 && rc < 300)
			relay_dsn_delivered(c->x, j->m, j->idx[i], c->d, rr, c->dsn);
	}
	c->x->acct_src = c->x->acct_mx = NULL;
	c->x->acct_si = 0;
	tx_clear(c);
	relay_job_free(c->x, j);
}

/* The connection is broken (or refused): the job in hand and, when the
 * connection never got as far as a job, every waiting job fail transiently
 * so that they wait for their retry instead of looping here. */
static void conn_fail(struct conn *c, int code, const char *why)
{
	struct relay_ctx *x = c->x;
	struct dest *d = c->d;
	int had_job = c->job != NULL;
	if (had_job) tx_report(c, code, why);
	if (!had_job && (c->st == C_CONNECT || c->st == C_GREETING || c->st == C_EHLO ||
	                 c->st == C_HELO || c->st == C_STARTTLS)) {
		struct job *j;
		while ((j = relay_job_take(d))) {
			c->job = j;
			c->rcpt_code = base_xcalloc(j->n, sizeof *c->rcpt_code);
			c->rcpt_reply = base_xcalloc(j->n, sizeof *c->rcpt_reply);
			tx_report(c, code, why);
		}
	}
	conn_free(c);
	relay_kick(x);
}

static void start_tx(struct conn *c);
static const char *ehlo_name(const struct conn *c);
static void next_addr(struct conn *c, int code, const char *why);

static void on_wait(evutil_socket_t fd, short what, void *arg);

/* Whether domain has a --tls-policy entry of its own saying off. */
static int explicit_off(const struct relay_config *cfg, const char *domain)
{
	for (size_t i = 0; i < cfg->ntls_policy; i++)
		if (!base_strcasecmp_ascii(cfg->tls_policy[i].domain, domain))
			return cfg->tls_policy[i].mode == RELAY_TLS_OFF;
	return 0;
}

/* DANE for the address being tried (NULL: it does not apply). */
static const struct relay_dane *conn_dane(const struct conn *c)
{
	return c->ai < c->naddrs ? c->dane[c->ai] : NULL;
}

/* The recipient domain of the job in hand, else of the first waiting one. */
static const char *conn_domain(const struct conn *c)
{
	const struct job *j = c->job ? c->job : c->d->head;
	return j ? smtp_path_domain(j->m->rcpt[j->idx[0]].addr) : NULL;
}

/* Counts the current attempt for TLS reporting, once for each recipient
 * domain: result 0 when TLS worked, else an enum tlsrpt_result. */
static void tlsrpt_note_for(struct conn *c, const char *dom, int result)
{
	if (!c->x->tlsrpt || !dom) return;
	uint64_t h = 14695981039346656037ull;
	for (const char *p = dom; *p; p++) h = (h ^ (uint8_t)base_lower(*p)) * 1099511628211ull;
	for (unsigned i = 0; i < c->nrpt && i < RPT_DOMS; i++)
		if (c->rpt_dom[i] == h) return;
	c->rpt_dom[c->nrpt++ % RPT_DOMS] = h;
	const struct relay_dane *dn = conn_dane(c);
	if (dn && explicit_off(c->x->cfg, dom)) dn = NULL;
	char rip[INET6_ADDRSTRLEN + 8] = "";
	if (c->ai < c->naddrs) {
		struct sockaddr_storage ss;
		base_sockaddr_to(&c->addrs[c->ai], &ss);
		sockaddr_text(&ss, rip, sizeof rip, 0);
	}
	relay_tlsrpt_note(c->x, dom, dn, result, c->src_ip, rip,
	                  c->ai < c->naddrs ? c->names[c->ai] : NULL);
}

static void tlsrpt_note(struct conn *c, int result)
{
	tlsrpt_note_for(c, conn_domain(c), result);
}

/* A verification error as an RFC 8460 result type. */
static int tlsrpt_cert_result(long vr)
{
	switch (vr) {
	case X509_V_OK:
	case X509_V_ERR_DANE_NO_MATCH:
		return TLSRPT_VALIDATION_FAILURE;
	case X509_V_ERR_HOSTNAME_MISMATCH:
		return TLSRPT_CERT_HOST_MISMATCH;
	case X509_V_ERR_CERT_HAS_EXPIRED:
		return TLSRPT_CERT_EXPIRED;
	default:
		return TLSRPT_CERT_NOT_TRUSTED;
	}
}

static enum relay_tls_mode job_mode(struct conn *c, const struct job *j)
{
	const char *dom = j ? smtp_path_domain(j->m->rcpt[j->idx[0]].addr) : "*";
	const struct relay_dane *dn = conn_dane(c);
	if (dn && !explicit_off(c->x->cfg, dom))
		return dn->state == RELAY_DANE_UNUSABLE ? RELAY_TLS_REQUIRED : RELAY_TLS_DANE;
	/* an MTA-STS policy in enforce mode asks what verify does */
	if (j && !dane_site(c->d) && relay_mtasts_tls(c->x, dom) == 1) return RELAY_TLS_VERIFY;
	return relay_tls_mode_for(c->x->cfg, dom);
}

static int tls_ok(struct conn *c, const struct job *j)
{
	enum relay_tls_mode m = job_mode(c, j);
	if (m == RELAY_TLS_DANE) return c->tls && c->dane_usage;
	return m < RELAY_TLS_REQUIRED || (c->tls && (m != RELAY_TLS_VERIFY || c->verified));
}

/* Why a job in mode m cannot go over this connection, for its reply. */
static const char *tls_refusal(struct conn *c, enum relay_tls_mode m, char *buf, size_t n)
{
	const char *host = c->ai < c->naddrs && c->names[c->ai] ? c->names[c->ai] : c->peer;
	if (m != RELAY_TLS_DANE)
		return c->tls ? "451 4.7.5 TLS certificate not verified, and the policy is verify"
		              : "451 4.7.5 STARTTLS not available, and TLS is required by policy";
	if (!conn_dane(c))
		snprintf(
		    buf, n,
		    "451 4.7.5 DANE: no usable TLSA records for %s, and the policy is dane-only",
		    host);
	else if (!c->tls)
		snprintf(buf, n,
		         "451 4.7.5 DANE: %s offers no STARTTLS, and its TLSA records require it",
		         host);
	else
		snprintf(buf, n, "451 4.7.5 DANE: %s not authenticated by its TLSA records", host);
	return buf;
}

/* After the 220 to STARTTLS: an OpenSSL filter on the socket's
 * bufferevent; anything the server sent before the handshake is dropped. */
static void start_tls(struct conn *c)
{
	const char *name = c->names[c->ai];
	const struct job *hj = c->d->head;
	const struct relay_dane *dn = conn_dane(c);
	int dane = c->mode == RELAY_TLS_DANE && dn && dn->state == RELAY_DANE_USABLE;
	c->probe = c->mode != RELAY_TLS_VERIFY && !dane && !dane_site(c->d) && name && hj &&
	           relay_mtasts_tls(c->x, smtp_path_domain(hj->m->rcpt[hj->idx[0]].addr)) == 2;
	SSL_CTX *ctx = dane                                      ? c->x->tls->dane
	               : c->mode == RELAY_TLS_VERIFY || c->probe ? c->x->tls->verify
	                                                         : c->x->tls->client;
	SSL *ssl = SSL_new(ctx);
	if (ssl && dane && relay_dane_ssl(ssl, dn) < 0) {
		SSL_free(ssl);
		ssl = NULL;
	}
	if (ssl && c->probe) {
		/* the chain and name are checked, and the result only reported */
		SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
		if (SSL_set1_host(ssl, name) != 1) c->probe = 0;
	}
	if (ssl && name) {
		/* SNI, and with verify the certificate must be for this name */
		if (SSL_set_tlsext_host_name(ssl, name) != 1 ||
		    (c->mode == RELAY_TLS_VERIFY && SSL_set1_host(ssl, name) != 1)) {
			SSL_free(ssl);
			ssl = NULL;
		}
	}
	struct bufferevent *tb =
	    ssl ? bufferevent_openssl_filter_new(c->x->base, c->bev, ssl,
	                                         BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE)
	        : NULL;
	if (!tb) {
		if (ssl) SSL_free(ssl);
		conn_fail(c, 451, "451 4.7.5 TLS not available locally");
		return;
	}
	struct evbuffer *in = bufferevent_get_input(c->bev);
	evbuffer_drain(in, evbuffer_get_length(in));
	c->bev = tb;
	c->handshake = 1;
	bufferevent_openssl_set_allow_dirty_shutdown(tb, 1);
	bufferevent_setcb(tb, on_read, NULL, on_event, c);
	bufferevent_enable(tb, EV_READ | EV_WRITE);
	set_timeout(c, T_GREET);
}

/* Ends an idle connection (C_IDLE) with QUIT; it is freed, and the
 * destinations pumped, when the peer answers or closes. */
static void conn_quit(struct conn *c)
{
	c->st = C_QUIT;
	send_line(c, "QUIT");
	set_timeout(c, 10);
	bufferevent_enable(c->bev, EV_READ);
}

/* The source address ss is at its connection limit towards its site (or,
 * with ss NULL, the relay at --max-outbound): an idle connection another
 * destination keeps from it there (from anywhere) is ended, so that d's
 * waiting mail gets the place (without this, the idle linger of one pool
 * would hold back the other). One a call: each close pumps again. */
static void release_idle(struct relay_ctx *x, const struct dest *d, const struct src_site *ss)
{
	if (!ss) {
		for (struct conn *c = x->clist; c; c = c->next)
			if (c->st == C_IDLE && c->d != d) {
				conn_quit(c);
				return;
			}
		return;
	}
	/* only the other pools' destinations that share the address */
	for (size_t i = 0; i < ss->nusers; i++) {
		const struct src_user *u = &ss->users[i];
		if (u->d == d) continue;
		for (struct conn *c = u->d->conns; c; c = c->dnext)
			if (c->st == C_IDLE && c->si == u->si) {
				conn_quit(c);
				return;
			}
	}
}

static void next_job(struct conn *c)
{
	if (c->counted_connecting) {
		c->counted_connecting = 0;
		c->d->connecting--;
	}
	struct dest_src *ds = &c->d->src[c->si];
	uint32_t limit = ds->lim.msgs_per_conn;
	int64_t now_s = base_now();
	int stop = c->x->stopping || c->d->suspended_until > now_s ||
	           relay_src_suspended_until(ds) > now_s ||
	           (limit && c->jobs >= limit);
	/* an address shared by pools, at its limit while other pools' mail
	 * waits for it: a pool holding more than an equal share gives this
	 * connection up, so the place goes to a waiting pool */
	uint32_t wanting = relay_src_wanted(c->d, c->si);
	if (!stop && wanting && ds->all->active >= relay_src_conn_limit(ds)) {
		uint32_t share = relay_src_conn_limit(ds) / (wanting + 1);
		stop = ds->active > (share ? share : 1);
	}
	if (!stop && c->d->head) {
		int64_t w = relay_rate_take(relay_src_msgs(ds), (int64_t)base_mono_ns());
		if (w > 0) {
			/* the message rate: wait for the next token, not a failure */
			if (!c->wait) c->wait = evtimer_new(c->x->base, on_wait, c);
			struct timeval tv = {(time_t)(w / 1000000000),
			                     (suseconds_t)(w % 1000000000 / 1000)};
			c->st = C_WAIT;
			set_timeout(c, T_MAIL);
			evtimer_add(c->wait, &tv);
			return;
		}
	}
	struct job *j = stop ? NULL : relay_job_take(c->d);
	while (j && !tls_ok(c, j)) {
		/* its domain needs TLS this connection does not have */
		char why[320];
		c->job = j;
		c->rcpt_code = base_xcalloc(j->n, sizeof *c->rcpt_code);
		c->rcpt_reply = base_xcalloc(j->n, sizeof *c->rcpt_reply);
		if (job_mode(c, j) == RELAY_TLS_DANE && !conn_dane(c))
			tlsrpt_note(c, TLSRPT_DANE_REQUIRED);
		tx_report(c, 451, tls_refusal(c, job_mode(c, j), why, sizeof why));
		j = relay_job_take(c->d);
	}
	/* lingers for more mail, unless another pool waits for the address or
	 * another destination for a connection under --max-outbound */
	if (!j && !stop && c->st != C_IDLE && !c->x->out_wait && !wanting) {
		c->st = C_IDLE;
		set_timeout(c, IDLE_LINGER);
		return;
	}
	if (!j) {
		c->st = C_QUIT;
		send_line(c, "QUIT");
		set_timeout(c, 10);
		return;
	}
	c->job = j;
	c->jobs++;
	start_tx(c);
}

static void on_wait(evutil_socket_t fd, short what, void *arg)
{
	next_job(arg);
}

static void send_step(struct conn *c, uint32_t k)
{
	struct job *j = c->job;
	struct base_buf p; /* DSN parameters for a next hop that offers DSN */
	base_buf_init(&p);
	int dsn = c->dsn && j->m->dsnp;
	if (k == 0) {
		if (dsn) relay_dsn_mail_params(j->m, &p);
		if (c->esmtp)
			send_line(c, "MAIL FROM:<%s> SIZE=%u%s", j->m->sender, j->m->loc.len,
			          p.len ? p.data : "");
		else
			send_line(c, "MAIL FROM:<%s>", j->m->sender);
		set_timeout(c, T_MAIL);
	} else if (k <= j->n) {
		if (dsn) relay_dsn_rcpt_params(j->m, j->idx[k - 1], &p);
		send_line(c, "RCPT TO:<%s>%s", j->m->rcpt[j->idx[k - 1]].addr, p.len ? p.data : "");
		set_timeout(c, T_RCPT);
	} else if (k == j->n + 1) {
		send_line(c, "DATA");
		set_timeout(c, T_DATA);
	}
	base_buf_free(&p);
	c->sent = k + 1;
}

static void start_tx(struct conn *c)
{
	struct job *j = c->job;
	/* over TLS: the session counts for the other recipient domains it
	 * carries mail for too (connections are reused across domains that
	 * share MX hosts); an MTA-STS testing check made for the connection's
	 * first domain applies to the others in testing */
	for (uint32_t i = 0; c->tls && c->x->tlsrpt && i < j->n; i++) {
		const char *dom = smtp_path_domain(j->m->rcpt[j->idx[i]].addr);
		tlsrpt_note_for(c, dom, relay_mtasts_tls(c->x, dom) == 2 ? c->tls_result : 0);
	}
	c->st = C_TX;
	c->step = 0;
	c->accepted = 0;
	c->mail_code = c->data_code = 0;
	c->rcpt_code = base_xcalloc(j->n, sizeof *c->rcpt_code);
	c->rcpt_reply = base_xcalloc(j->n, sizeof *c->rcpt_reply);
	if (c->pipelining) {
		c->batch = 1;
		for (uint32_t k = 0; k <= j->n + 1; k++) send_step(c, k);
		c->batch = 0;
		send_out(c);
	} else {
		send_step(c, 0);
	}
}

/* Sends the message, dot-stuffed, and the final dot. */
static int send_body(struct conn *c)
{
	struct base_buf b;
	struct base_err err;
	base_buf_init(&b);
	if (relay_spool_read(c->x->spool, &c->job->m->loc, &b, &err) < 0) {
		base_error("%s: %s", c->job->m->id, err.msg);
		base_buf_free(&b);
		return -1;
	}
	/* dot-stuffed only when a line starts with a dot (rare), then the body
	 * and the final dot go out in one write */
	int dots = b.len && b.data[0] == '.';
	const char *q = b.data, *last = b.len ? b.data + b.len - 1 : b.data;
	while (!dots && q < last && (q = memchr(q, '\n', (size_t)(last - q)))) {
		dots = q[1] == '.';
		q++;
	}
	struct base_buf st;
	base_buf_init(&st);
	if (dots) {
		const char *p = b.data, *end = b.data + b.len;
		while (p < end) {
			const char *eol = memchr(p, '\n', (size_t)(end - p));
			size_t n = eol ? (size_t)(eol - p) + 1 : (size_t)(end - p);
			if (*p == '.') base_buf_append(&st, ".", 1);
			base_buf_append(&st, p, n);
			p += n;
		}
	}
	const struct base_buf *body = dots ? &st : &b;
	int partial = body->len && body->data[body->len - 1] != '\n'; /* no line end at the end */
	struct iovec iov[2] = {{body->data, body->len},
	                       {(char *)(partial ? "\r\n.\r\n" : ".\r\n"), partial ? 5 : 3}};
	send_iov(c, iov, 2);
	base_buf_free(&st);
	base_buf_free(&b);
	set_timeout(c, T_FINAL);
	return 0;
}

static void on_tx_reply(struct conn *c, int code, const char *text)
{
	struct job *j = c->job;
	uint32_t k = c->step++;
	if (k == 0) {
		c->mail_code = code;
		c->mail_reply = base_xstrdup(text);
	} else if (k <= j->n) {
		c->rcpt_code[k - 1] = code;
		c->rcpt_reply[k - 1] = base_xstrdup(text);
		if (code >= 200 && code < 300) c->accepted++;
	} else if (k == j->n + 1) {
		c->data_code = code;
		c->data_reply = base_xstrdup(text);
		if (code == 354) {
			if (c->accepted && c->mail_code >= 200 && c->mail_code < 300) {
				if (send_body(c) < 0) {
					conn_fail(c, 451, "451 4.3.0 local spool read error");
					return;
				}
			} else {
				evbuffer_add(bufferevent_get_output(c->bev), ".\r\n", 3);
				set_timeout(c, T_FINAL);
			}
			return;
		}
	} else {
		/* the reply to the final dot */
		int suspend = code == 421;
		tx_report(c, code, text);
		if (suspend) {
			back_off(c, text);
			conn_free(c);
			return;
		}
		next_job(c);
		return;
	}
	if (code == 421) {
		/* the server is closing: what is unanswered is transient */
		tx_report(c, code, text);
		back_off(c, text);
		conn_free(c);
		return;
	}
	int failed = (k == 0 && (code < 200 || code >= 300)) || (k == j->n && c->accepted == 0) ||
	             (k == j->n + 1);
	if (c->pipelining) {
		/* replies keep coming up to DATA's; after a rejected DATA, RSET */
		if (k == j->n + 1) {
			tx_report(c, 0, NULL);
			c->st = C_RSET;
			send_line(c, "RSET");
			set_timeout(c, T_MAIL);
		}
		return;
	}
	if (failed) {
		tx_report(c, 0, NULL);
		c->st = C_RSET;
		send_line(c, "RSET");
		set_timeout(c, T_MAIL);
		return;
	}
	send_step(c, k + 1);
}

/* Whether the connection needs TLS (its policy requires it, or an MTA-STS
 * policy in testing mode asks that failures be reported). */
static int tls_wanted(struct conn *c)
{
	const char *dom = conn_domain(c);
	/* dane-only without TLSA records: next_job reports dane-required */
	if (c->mode == RELAY_TLS_DANE && !conn_dane(c)) return 0;
	return c->mode >= RELAY_TLS_REQUIRED ||
	       (c->mode != RELAY_TLS_OFF && dom && !dane_site(c->d) &&
	        relay_mtasts_tls(c->x, dom) == 2);
}

/* A server that offers no STARTTLS (or no ESMTP) to a connection whose
 * first job needs TLS: the site's next address is tried instead, as
 * Postfix does under "encrypt"; the last address gets the jobs' 4.7.5.
 * 1 when it moved on. */
static int no_tls_next(struct conn *c)
{
	if (!c->tls && !c->jobs && !c->plain && tls_wanted(c))
		tlsrpt_note(c, TLSRPT_STARTTLS_NOT_SUPPORTED);
	if (c->tls || c->jobs || c->mode < RELAY_TLS_REQUIRED) return 0;
	relay_addr_tls_failed(c->x, &c->addrs[c->ai]);
	if (c->ai + 1 >= c->naddrs) return 0;
	char why[320];
	next_addr(c, 0, tls_refusal(c, c->mode, why, sizeof why));
	return 1;
}

static void on_reply(struct conn *c, int code, const char *text)
{
	switch (c->st) {
	case C_GREETING:
		if (code >= 200 && code < 300) {
			c->st = C_EHLO;
			send_line(c, "EHLO %s", ehlo_name(c));
			set_timeout(c, T_GREET);
		} else {
			next_addr(c, code, text);
		}
		break;
	case C_EHLO:
		if (code >= 200 && code < 300) {
			c->esmtp = 1;
			if (!c->tls) {
				c->mode = job_mode(c, c->d->head);
				if (c->starttls && c->mode != RELAY_TLS_OFF &&
				    !(c->plain && c->mode == RELAY_TLS_OPPORTUNISTIC)) {
					c->st = C_STARTTLS;
					send_line(c, "STARTTLS");
					set_timeout(c, T_GREET);
					break;
				}
				if (no_tls_next(c)) break;
			}
			next_job(c);
		} else if (code == 421) {
			back_off(c, text);
			conn_free(c);
		} else {
			c->st = C_HELO;
			send_line(c, "HELO %s", ehlo_name(c));
		}
		break;
	case C_HELO:
		if (code >= 200 && code < 300) {
			c->mode = job_mode(c, c->d->head);
			if (!no_tls_next(c)) next_job(c);
		} else
			conn_fail(c, code, text);
		break;
	case C_STARTTLS:
		if (code == 220) {
			start_tls(c);
		} else {
			if (tls_wanted(c)) tlsrpt_note(c, TLSRPT_STARTTLS_NOT_SUPPORTED);
			next_job(c); /* refused: jobs that need TLS fail there */
		}
		break;
	case C_TX:
		on_tx_reply(c, code, text);
		break;
	case C_RSET:
		if (code >= 200 && code < 300)
			next_job(c);
		else
			conn_free(c);
		break;
	case C_QUIT:
	default:
		conn_free(c);
		break;
	}
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	for (;;) {
		size_t n;
		char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
		if (!line) {
			if (evbuffer_get_length(in) > REPLY_LINE_MAX)
				conn_fail(c, 0, "000 reply line too long");
			return;
		}
		int code, more;
		const char *text;
		if (n > REPLY_LINE_MAX || smtp_parse_reply_line(line, n, &code, &more, &text) < 0 ||
		    (c->lines && code != c->code) || ++c->lines > REPLY_LINES_MAX) {
			free(line);
			conn_fail(c, 0, "000 malformed reply");
			return;
		}
		c->code = code;
		if (c->st == C_EHLO && !base_strcasecmp_ascii(text, "PIPELINING"))
			c->pipelining = 1;
		if (c->st == C_EHLO && c->lines > 1 && !base_strcasecmp_ascii(text, "DSN"))
			c->dsn = 1;
		if (c->st == C_EHLO && c->lines > 1 && !base_strcasecmp_ascii(text, "STARTTLS"))
			c->starttls = 1;
		if (c->lines == 1) {
			c->reply.len = 0;
			base_buf_append(&c->reply, line, n > 512 ? 512 : n);
		}
		free(line);
		if (more) continue;
		c->lines = 0;
		/* on_reply may end the connection: conn_free then only marks it,
		 * and it is freed here once the reply is handled */
		c->in_read = 1;
		on_reply(c, code, c->reply.data ? c->reply.data : "");
		c->in_read = 0;
		if (c->dead) {
			conn_free(c);
			return;
		}
		if (c->bev != bev) return; /* the next address, or STARTTLS's layer */
	}
}

static const char *ehlo_name(const struct conn *c)
{
	return c->src && c->src->ehlo[0] ? c->src->ehlo : c->x->hostname;
}

static void sockaddr_text(const struct sockaddr_storage *ss, char *out, size_t n, int port)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	unsigned p = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
		p = ntohs(a->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
		p = ntohs(a->sin6_port);
	}
	if (!port)
		snprintf(out, n, "%s", ip);
	else if (ss->ss_family == AF_INET6)
		snprintf(out, n, "[%s]:%u", ip, p);
	else
		snprintf(out, n, "%s:%u", ip, p);
}

static void on_event(struct bufferevent *bev, short what, void *arg);

/* Starts connecting to c->addrs[c->ai] from c's source: 0, or -1 with why
 * (the attempt failed at once). */
static int attempt(struct conn *c, char *why, size_t n)
{
	const struct relay_dane *dn = conn_dane(c);
	c->nrpt = 0;
	if (dn && dn->state == RELAY_DANE_FAIL && job_mode(c, c->d->head) == RELAY_TLS_DANE) {
		/* RFC 7672 2.2: a host whose TLSA lookup failed is not used */
		snprintf(why, n, "%.250s", dn->why);
		tlsrpt_note(c, TLSRPT_DNSSEC_INVALID);
		return -1;
	}
	const struct base_sockaddr *a = &c->addrs[c->ai];
	struct sockaddr_storage ss;
	socklen_t len = base_sockaddr_to(a, &ss);
	sockaddr_text(&ss, c->peer, sizeof c->peer, 1);
	/* the bound address; an unbound one is known once connected */
	snprintf(c->src_ip, sizeof c->src_ip, "%s", c->src ? c->src->ip : "");
	c->st = C_CONNECT;
	c->lines = 0;
	c->esmtp = c->pipelining = c->dsn = 0;
	if (c->bev) bufferevent_free(c->bev);
	c->bev = NULL;
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, n, "000 socket: %s", strerror(errno));
		return -1;
	}
	if (c->src) {
		struct sockaddr_storage sa;
		socklen_t sl = base_sockaddr_to(&c->src->addr, &sa);
#ifdef IP_BIND_ADDRESS_NO_PORT
		int one = 1;
		(void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
		if (bind(fd, (struct sockaddr *)&sa, sl) < 0) {
			snprintf(why, n, "000 cannot bind source address %s: %s", c->src->ip,
			         strerror(errno));
			base_warn("pool %s: %s", c->d->pool ? c->d->pool->name : "-", why + 4);
			close(fd);
			return -1;
		}
	}
	c->bev = bufferevent_socket_new(c->x->base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	set_timeout(c, T_CONNECT);
	if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&ss, (int)len) < 0) {
		snprintf(why, n, "000 connection refused");
		relay_addr_dead(c->x, a);
		return -1;
	}
	return 0;
}

/* The attempt at the current address failed (code 0: at the connection
 * level, else the greeting's reply): the next address, or the outcome when
 * none is left. */
static void next_addr(struct conn *c, int code, const char *why)
{
	if (code >= 400 && code < 500) {
		c->greet4xx++;
		c->code4xx = code;
		snprintf(c->why4xx, sizeof c->why4xx, "%s", why);
		memcpy(c->peer4xx, c->peer, sizeof c->peer4xx);
	}
	if (code >= 500) c->greet5xx++;
	c->last_code = code;
	snprintf(c->last_why, sizeof c->last_why, "%s", why);
	char w[256];
	while (c->ai + 1 < c->naddrs) {
		base_info("%s: %s; trying the next address", c->peer, c->last_why);
		c->ai++;
		c->plain = 0;
		if (attempt(c, w, sizeof w) == 0) return;
		c->last_code = 0;
		snprintf(c->last_why, sizeof c->last_why, "%s", w);
	}
	if (c->greet4xx) {
		/* back off: no new connection for a while; one job carries the
		 * refusal as its attempt, the others wait without one */
		struct job *j = relay_job_take(c->d);
		if (j) {
			c->job = j;
			c->rcpt_code = base_xcalloc(j->n, sizeof *c->rcpt_code);
			c->rcpt_reply = base_xcalloc(j->n, sizeof *c->rcpt_reply);
			memcpy(c->peer, c->peer4xx, sizeof c->peer); /* who said it */
			tx_report(c, c->code4xx, c->why4xx);
		}
		back_off(c, c->why4xx);
		conn_free(c);
	} else if (c->greet5xx == c->naddrs) {
		conn_fail(c, c->last_code, c->last_why);
	} else {
		conn_fail(c, 0, c->last_code ? "000 no address took the connection" : c->last_why);
	}
}

/* A failed STARTTLS handshake: under opportunistic, the same address again
 * in plain text (as Postfix does with smtp_tls_security_level = may);
 * under required and verify, the site's next address; with none left the
 * jobs fail transiently with why (4.7.5). Not remembered as dead: the
 * address takes connections. */
static void tls_failed(struct conn *c, const char *why)
{
	char w[256];
	c->handshake = c->tls = c->verified = c->starttls = c->dane_usage = 0;
	if (c->mode == RELAY_TLS_OPPORTUNISTIC && !c->plain) {
		base_info("%s: retrying in plain text (opportunistic TLS)", c->peer);
		c->plain = 1;
		if (attempt(c, w, sizeof w) < 0) next_addr(c, 0, w);
		return;
	}
	relay_addr_tls_failed(c->x, &c->addrs[c->ai]);
	if (c->ai + 1 < c->naddrs)
		next_addr(c, 0, why);
	else
		conn_fail(c, 451, why);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	if (c->handshake) {
		if (what & BEV_EVENT_CONNECTED) {
			c->handshake = 0;
			c->tls = 1;
			c->verified = c->mode == RELAY_TLS_VERIFY ||
			              (c->probe && SSL_get_verify_result(bufferevent_openssl_get_ssl(
			                               bev)) == X509_V_OK);
			if (c->mode == RELAY_TLS_DANE) {
				int u = relay_dane_matched(bufferevent_openssl_get_ssl(bev));
				c->dane_usage = u > 0 ? u : 0;
			}
			/* (dane-only without TLSA records: next_job reports dane-required) */
			c->tls_result = c->probe && !c->verified
			                    ? tlsrpt_cert_result(SSL_get_verify_result(
			                          bufferevent_openssl_get_ssl(bev)))
			                    : 0;
			if (c->mode != RELAY_TLS_DANE || c->dane_usage)
				tlsrpt_note(c, c->tls_result);
			c->st = C_EHLO;
			c->pipelining = c->starttls = c->dsn = 0;
			send_line(c, "EHLO %s", ehlo_name(c));
			set_timeout(c, T_GREET);
			return;
		}
		char e[256] = "connection closed during the handshake", why[320];
		unsigned long code = bufferevent_get_openssl_error(bev);
		if (code) ERR_error_string_n(code, e, sizeof e);
		while (bufferevent_get_openssl_error(bev)) continue;
		SSL *ssl = bufferevent_openssl_get_ssl(bev);
		long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
		if (c->mode == RELAY_TLS_VERIFY && vr != X509_V_OK) {
			/* say why the certificate was refused, and for which name */
			const char *nm = c->names[c->ai];
			snprintf(e, sizeof e, "certificate not accepted: %s%s%s",
			         X509_verify_cert_error_string(vr), nm ? " for " : "",
			         nm ? nm : "");
		}
		if (what & BEV_EVENT_TIMEOUT) snprintf(e, sizeof e, "timeout");
		base_warn("TLS handshake with %s failed: %s", c->peer, e);
		tlsrpt_note(c, (c->mode == RELAY_TLS_VERIFY || c->mode == RELAY_TLS_DANE) &&
		                       !(what & BEV_EVENT_TIMEOUT)
		                   ? tlsrpt_cert_result(vr)
		                   : TLSRPT_VALIDATION_FAILURE);
		snprintf(why, sizeof why, "451 4.7.5 TLS handshake failed: %s", e);
		if (c->mode == RELAY_TLS_DANE && conn_dane(c) && !(what & BEV_EVENT_TIMEOUT)) {
			const char *nm = conn_dane(c)->host;
			if (vr == X509_V_ERR_DANE_NO_MATCH)
				snprintf(
				    why, sizeof why,
				    "451 4.7.5 DANE: no TLSA record matched the certificate of %s",
				    nm);
			else if (vr != X509_V_OK)
				snprintf(why, sizeof why,
				         "451 4.7.5 DANE: the certificate of %s not accepted: %s",
				         nm, X509_verify_cert_error_string(vr));
		}
		tls_failed(c, why);
		return;
	}
	if (what & BEV_EVENT_CONNECTED) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof ss;
		if (getsockname(bufferevent_getfd(bev), (struct sockaddr *)&ss, &sl) == 0)
			sockaddr_text(&ss, c->src_ip, sizeof c->src_ip, 0);
		c->st = C_GREETING;
		set_timeout(c, T_GREET);
		return;
	}
	if (c->st == C_IDLE && what & BEV_EVENT_TIMEOUT) {
		/* lingered long enough: the timeout stopped reading, QUIT resumes it */
		conn_quit(c);
		return;
	}
	if (c->st == C_QUIT || c->st == C_WAIT || c->st == C_IDLE) {
		/* nothing in hand: the peer closed an idle connection */
		struct relay_ctx *x = c->x;
		conn_free(c);
		relay_kick(x);
		return;
	}
	const char *why = what & BEV_EVENT_TIMEOUT ? "000 timeout"
	                  : c->st == C_CONNECT     ? "000 connection refused"
	                                           : "000 connection lost";
	if (c->st == C_CONNECT || c->st == C_GREETING) {
		if (c->st == C_CONNECT || (what & BEV_EVENT_TIMEOUT)) {
			/* refused or timed out: new connections skip it for a while */
			relay_addr_dead(c->x, &c->addrs[c->ai]);
			base_debug("%s: %s, skipped for %u s", c->peer, why + 4,
			           c->x->cfg->dead_time);
		}
		next_addr(c, 0, why);
		return;
	}
	conn_fail(c, 0, why);
}

/* c's addresses: the site's of the source's family, live ones only when
 * any is live, hosts of equal preference shuffled (see the top). */
static void order_addrs(struct conn *c)
{
	const struct dest *d = c->d;
	size_t idx[DEST_ADDRS_MAX], n = 0, live = 0;
	uint32_t key[DEST_ADDRS_MAX];
	unsigned char dead[DEST_ADDRS_MAX];
	/* the first job needs TLS: addresses where it failed lately count as dead */
	int tls = job_mode(c, d->head) >= RELAY_TLS_REQUIRED || dane_site(d);
	for (size_t i = 0; i < d->naddrs && n < DEST_ADDRS_MAX; i++) {
		if (c->src && d->addrs[i].family != c->src->addr.family) continue;
		dead[n] = (unsigned char)(relay_addr_is_dead(c->x, &d->addrs[i]) ||
		                          (tls && relay_addr_tls_bad(c->x, &d->addrs[i])));
		live += !dead[n];
		/* one random key per host: its addresses stay together */
		size_t p = n ? idx[n - 1] : 0;
		int same_host = n && d->prefs[i] == d->prefs[p] && d->names[i] && d->names[p] &&
		                !strcmp(d->names[i], d->names[p]);
		key[n] = same_host ? key[n - 1] : arc4random();
		idx[n++] = i;
	}
	/* insertion sort by (preference, key), stable */
	for (size_t i = 1; i < n; i++) {
		size_t v = idx[i];
		uint32_t k = key[i];
		unsigned char dv = dead[i];
		size_t j = i;
		while (j > 0 && (d->prefs[idx[j - 1]] > d->prefs[v] ||
		                 (d->prefs[idx[j - 1]] == d->prefs[v] && key[j - 1] > k))) {
			idx[j] = idx[j - 1];
			key[j] = key[j - 1];
			dead[j] = dead[j - 1];
			j--;
		}
		idx[j] = v;
		key[j] = k;
		dead[j] = dv;
	}
	for (size_t i = 0; i < n; i++) {
		if (live && dead[i]) {
			char t[64];
			struct sockaddr_storage ss;
			base_sockaddr_to(&d->addrs[idx[i]], &ss);
			sockaddr_text(&ss, t, sizeof t, 1);
			base_debug("%s: skipped, it refused, timed out or failed TLS recently", t);
			continue;
		}
		c->addrs[c->naddrs] = d->addrs[idx[i]];
		c->dane[c->naddrs] = relay_dane_ref(d->dane[idx[i]]);
		c->names[c->naddrs++] = d->names[idx[i]] ? base_xstrdup(d->names[idx[i]]) : NULL;
	}
}

static void conn_open(struct relay_ctx *x, struct dest *d, size_t si)
{
	struct conn *c = base_xcalloc(1, sizeof *c);
	c->x = x;
	c->d = d;
	c->si = si;
	c->src = d->pool ? &d->pool->src[si] : NULL;
	d->active++;
	x->nout++;
	d->connecting++;
	d->src[si].active++;
	if (d->src[si].all) d->src[si].all->active++;
	c->counted_connecting = 1;
	base_buf_init(&c->reply);
	c->next = x->clist;
	if (x->clist) x->clist->prev = c;
	x->clist = c;
	c->dnext = d->conns;
	if (d->conns) d->conns->dprev = c;
	d->conns = c;
	order_addrs(c);
	if (!c->naddrs) {
		conn_fail(c, 0, "000 no next hop address");
		return;
	}
	char w[256];
	if (attempt(c, w, sizeof w) < 0) next_addr(c, 0, w);
}

struct dest_wake {
	struct relay_ctx *x;
	struct dest *d;
	struct event *ev;
};

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	struct dest_wake *w = arg;
	relay_mta_pump(w->x, w->d);
}

/* Fails the waiting jobs of d transiently (an attempt each). */
static void fail_waiting(struct relay_ctx *x, struct dest *d, const char *why)
{
	struct job *j;
	while ((j = relay_job_take(d))) {
		for (uint32_t i = 0; i < j->n; i++) relay_outcome(x, d, j->m, j->idx[i], 451, why);
		relay_job_free(x, j);
	}
}

/* When a suspend rule holds every source of d that could take a
 * connection, the earliest end of those holds; else 0. */
static int64_t sources_held(const struct dest *d, int64_t now)
{
	int64_t end = 0;
	for (size_t i = 0; i < d->nsrc; i++) {
		const struct relay_source *s = d->pool ? &d->pool->src[i] : NULL;
		int fam = !s;
		for (size_t k = 0; !fam && k < d->naddrs; k++)
			fam = d->addrs[k].family == s->addr.family;
		if (!fam) continue;
		int64_t until = relay_src_suspended_until(&d->src[i]);
		if (until <= now) return 0;
		if (!end || until < end) end = until;
	}
	return end;
}

void relay_mta_pump(struct relay_ctx *x, struct dest *d)
{
	int64_t now_s = base_now();
	if (x->stopping || d->suspended_until > now_s) return;
	relay_dest_limits(x, d); /* a throttle rule's end */
	int64_t held = d->njobs ? sources_held(d, now_s) : 0;
	if (held) {
		/* the jobs wait in the queue for the first source to be free */
		relay_jobs_back(x, d, held);
		return;
	}
	/* idle connections first, when their TLS state suits the next job */
	struct conn *cn;
	for (struct conn *c = d->conns; c && d->head; c = cn) {
		cn = c->dnext;
		if (c->st == C_IDLE && tls_ok(c, d->head)) next_job(c);
	}
	int64_t now = (int64_t)base_mono_ns(), wait = 0;
	uint32_t weight[RELAY_POOL_SOURCES_MAX];
	int64_t cur[RELAY_POOL_SOURCES_MAX];
	unsigned char ok[RELAY_POOL_SOURCES_MAX];
	size_t n = d->nsrc < RELAY_POOL_SOURCES_MAX ? d->nsrc : RELAY_POOL_SOURCES_MAX;
	while (d->njobs > d->connecting) {
		if (x->nout >= x->max_out) {
			/* one idle connection ended a scheduler pass at most: its
			 * close starts the next pass */
			if (!x->out_wait) release_idle(x, d, NULL);
			x->out_wait = 1;
			break;
		}
		int usable = 0;
		for (size_t i = 0; i < n; i++) {
			const struct relay_source *s = d->pool ? &d->pool->src[i] : NULL;
			struct dest_src *ds = &d->src[i];
			int fam = !s;
			for (size_t k = 0; !fam && k < d->naddrs; k++)
				fam = d->addrs[k].family == s->addr.family;
			usable |= fam;
			ok[i] = 0;
			weight[i] = s ? s->weight : 1;
			cur[i] = ds->swrr;
			/* the limit counts the address's connections in every pool */
			uint32_t open = ds->all ? ds->all->active : ds->active;
			if (!fam || relay_src_suspended_until(ds) > now_s) continue;
			if (open >= relay_src_conn_limit(ds)) {
				if (ds->all && open > ds->active) release_idle(x, d, ds->all);
				continue;
			}
			/* a new connection needs a connection token, and is of use
			 * only when a message may go now */
			int64_t w1 = relay_rate_wait(relay_src_conns(ds), now);
			int64_t w2 = relay_rate_wait(relay_src_msgs(ds), now);
			int64_t w = w1 > w2 ? w1 : w2;
			if (w > 0) {
				if (!wait || w < wait) wait = w;
				continue;
			}
			ok[i] = 1;
		}
		if (!usable && d->naddrs) {
			base_warn("pool %s has no source address of an address family of %s",
			          d->pool ? d->pool->name : "-", d->host);
			fail_waiting(x, d,
			             "451 4.4.0 no source address of the site's address family");
			return;
		}
		long pick = relay_swrr_pick(weight, cur, ok, n);
		if (pick < 0) break;
		for (size_t i = 0; i < n; i++) d->src[i].swrr = cur[i];
		relay_rate_take(relay_src_conns(&d->src[pick]), now);
		conn_open(x, d, (size_t)pick);
	}
	if (wait > 0 && d->njobs > d->connecting) {
		if (!d->wake) {
			d->wake = base_xcalloc(1, sizeof *d->wake);
			d->wake->x = x;
			d->wake->d = d;
			d->wake->ev = evtimer_new(x->base, on_wake, d->wake);
		}
		if (!evtimer_pending(d->wake->ev, NULL)) {
			/* rounded up to the next millisecond */
			wait += 1000000;
			struct timeval tv = {(time_t)(wait / 1000000000),
			                     (suseconds_t)(wait % 1000000000 / 1000)};
			evtimer_add(d->wake->ev, &tv);
		}
	}
}

void relay_mta_dest_free(struct dest *d)
{
	for (size_t i = 0; i < d->naddrs; i++) {
		free(d->names[i]);
		d->names[i] = NULL;
		relay_dane_unref(d->dane[i]);
		d->dane[i] = NULL;
	}
	if (!d->wake) return;
	event_free(d->wake->ev);
	free(d->wake);
	d->wake = NULL;
}

void relay_mta_shutdown(struct relay_ctx *x)
{
	x->stopping = 1;
	while (x->clist) {
		struct conn *c = x->clist;
		if (c->job) {
			/* the recipients stay PENDING in the spool: tried again later */
			struct job *j = c->job;
			for (uint32_t i = 0; i < j->n; i++) j->m->rcpt[j->idx[i]].busy = 0;
			j->m->busy--;
			tx_clear(c);
			free(j->idx);
			free(j);
		}
		conn_free(c);
	}
}
