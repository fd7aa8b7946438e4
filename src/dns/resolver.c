/*
 * resolver.c — the DNS client: answers as records, a c-ares resolver with
 * many queries in flight, and the blocking lookup interface on top of it.
 *
 * A query is built here in wire form (header, question, an EDNS OPT record
 * advertising 1232 bytes) and handed to c-ares with ares_send, which picks
 * the id, retries, and falls back to TCP on truncation. c-ares is told not
 * to judge responses (ARES_FLAG_NOCHECKRESP) so that every rcode reaches us
 * and is classified by dns_answer_parse: callers such as SPF must tell a
 * server failure (temperror) from a name that does not exist (a void lookup).
 *
 * Each submitted query owns a struct pending until its callback has run;
 * r->pending counts them. Invariant: r->pending equals the number of
 * ares_send calls whose callback has not yet run.
 */
#include "dns/dns.h"

#include <arpa/inet.h>
#include <ares.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- answers ----------------------------------------------------------- */

void dns_answer_init(struct dns_answer *a)
{
	memset(a, 0, sizeof *a);
	a->status = DNS_LOOKUP_ERROR;
}

void dns_answer_free(struct dns_answer *a)
{
	for (size_t i = 0; i < a->n; i++) free(a->rr[i].data);
	free(a->rr);
	free(a->canon);
	a->rr = NULL;
	a->canon = NULL;
	a->n = 0;
}

void dns_answer_take(struct dns_answer *dst, struct dns_answer *src)
{
	*dst = *src;
	src->rr = NULL;
	src->canon = NULL;
	src->n = 0;
}

int dns_answer_add(struct dns_answer *a, uint16_t type, uint16_t pref, uint32_t ttl,
                   const void *data, size_t len)
{
	if (a->n >= DNS_ANSWER_MAX_RR) return -1;
	if ((a->n & (a->n - 1)) == 0) /* grow at powers of two */
		a->rr = base_xrealloc(a->rr, (a->n ? a->n * 2 : 1) * sizeof *a->rr);
	struct dns_record *r = &a->rr[a->n++];
	r->type = type;
	r->pref = pref;
	r->ttl = ttl;
	r->len = len;
	r->data = base_xmalloc(len + 1);
	if (len) memcpy(r->data, data, len);
	r->data[len] = '\0';
	return 0;
}

static void answer_fail(struct dns_answer *a, int status, const char *why)
{
	dns_answer_free(a);
	a->status = status;
	snprintf(a->why, sizeof a->why, "%.120s", why);
}

/* Decodes one RR's RDATA of a type we understand into a record. */
static int add_rdata(struct dns_answer *a, const uint8_t *msg, size_t len, const struct dns_rr *rr)
{
	uint8_t wire[DNS_NAME_MAX + 1];
	char text[DNS_NAME_TEXT_MAX];
	size_t off = rr->rdata_off, end = rr->rdata_off + rr->rdlen;
	uint16_t pref = 0;

	switch (rr->type) {
	case DNS_T_A:
		if (rr->rdlen != 4) return -1;
		return dns_answer_add(a, rr->type, 0, rr->ttl, rr->rdata, 4);
	case DNS_T_AAAA:
		if (rr->rdlen != 16) return -1;
		return dns_answer_add(a, rr->type, 0, rr->ttl, rr->rdata, 16);
	case DNS_T_TXT: {
		/* Character-strings joined without separators; at most 64 KiB. */
		char *buf = base_xmalloc(rr->rdlen + 1u);
		size_t o = 0;
		while (off < end) {
			uint8_t l = msg[off++];
			if (off + l > end) {
				free(buf);
				return -1;
			}
			memcpy(buf + o, msg + off, l);
			o += l;
			off += l;
		}
		int rc = dns_answer_add(a, rr->type, 0, rr->ttl, buf, o);
		free(buf);
		return rc;
	}
	case DNS_T_MX:
		if (rr->rdlen < 3) return -1;
		pref = dns_get16(rr->rdata);
		off += 2;
		/* fall through */
	case DNS_T_PTR:
	case DNS_T_CNAME:
	case DNS_T_NS: {
		if (dns_read_name(msg, len, &off, wire) < 0 || off != end) return -1;
		/* Compression may point into the question, echoed in the case we
		 * sent: names are handed out lowercased. */
		for (size_t i = 0; wire[i]; i += 1u + wire[i])
			for (unsigned j = 1; j <= wire[i]; j++)
				wire[i + j] = (uint8_t)base_lower((char)wire[i + j]);
		int n = dns_name_to_text(wire, text, sizeof text);
		if (n < 0) return -1;
		return dns_answer_add(a, rr->type, pref, rr->ttl, text, (size_t)n);
	}
	default:
		return dns_answer_add(a, rr->type, 0, rr->ttl, rr->rdata, rr->rdlen);
	}
}

/* Two wire names equal but for ASCII case. */
static int same_name(const uint8_t *x, const uint8_t *y)
{
	for (;;) {
		if (*x != *y) return 0;
		unsigned n = *x;
		if (!n) return 1;
		for (unsigned i = 1; i <= n; i++) {
			uint8_t a = x[i], b = y[i];
			if (a >= 'A' && a <= 'Z') a = (uint8_t)(a - 'A' + 'a');
			if (b >= 'A' && b <= 'Z') b = (uint8_t)(b - 'A' + 'a');
			if (a != b) return 0;
		}
		x += n + 1;
		y += n + 1;
	}
}

void dns_answer_parse(const uint8_t *msg, size_t len, uint16_t qtype, struct dns_answer *a)
{
	dns_answer_free(a);
	if (len < DNS_HDR_SIZE)
		return answer_fail(a, DNS_LOOKUP_ERROR, "answer shorter than a header");
	uint16_t flags = dns_get16(msg + 2);
	unsigned qd = dns_get16(msg + 4), an = dns_get16(msg + 6);
	a->rcode = flags & 0xf;
	a->secure = (flags & DNS_F_AD) != 0;
	if (!(flags & DNS_F_QR))
		return answer_fail(a, DNS_LOOKUP_ERROR, "answer is not a response");
	switch (a->rcode) {
	case DNS_R_NOERROR:
		break;
	case DNS_R_NXDOMAIN:
		a->status = DNS_LOOKUP_NXDOMAIN;
		return;
	default:
		a->status = DNS_LOOKUP_SERVFAIL;
		snprintf(a->why, sizeof a->why, "server answered %s", dns_rcode_name(a->rcode));
		return;
	}
	if (flags & DNS_F_TC) return answer_fail(a, DNS_LOOKUP_ERROR, "answer truncated");
	size_t off = DNS_HDR_SIZE;
	uint8_t wire[DNS_NAME_MAX + 1], qname[DNS_NAME_MAX + 1] = {0};
	for (unsigned i = 0; i < qd; i++) {
		if (dns_read_name(msg, len, &off, wire) < 0 || off + 4 > len)
			return answer_fail(a, DNS_LOOKUP_ERROR, "malformed question section");
		if (i == 0) memcpy(qname, wire, sizeof qname);
		off += 4;
	}
	for (unsigned i = 0; i < an; i++) {
		struct dns_rr rr;
		if (dns_read_rr(msg, len, &off, &rr) < 0)
			return answer_fail(a, DNS_LOOKUP_ERROR, "malformed answer record");
		if (rr.cls != DNS_C_IN || rr.type != qtype) continue;
		if (!a->n && qd && !same_name(rr.owner, qname)) {
			char text[DNS_NAME_TEXT_MAX];
			if (dns_name_to_text(rr.owner, text, sizeof text) < 0)
				return answer_fail(a, DNS_LOOKUP_ERROR, "malformed record owner");
			for (char *c = text; *c; c++)
				if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
			a->canon = base_xstrdup(text);
		}
		if (add_rdata(a, msg, len, &rr) < 0)
			return answer_fail(a, DNS_LOOKUP_ERROR,
			                   a->n >= DNS_ANSWER_MAX_RR ? "too many records in answer"
			                                             : "malformed record data");
	}
	a->status = a->n ? DNS_LOOKUP_OK : DNS_LOOKUP_NODATA;
}

const char *dns_lookup_status_name(int status)
{
	switch (status) {
	case DNS_LOOKUP_OK:
		return "ok";
	case DNS_LOOKUP_NODATA:
		return "nodata";
	case DNS_LOOKUP_NXDOMAIN:
		return "nxdomain";
	case DNS_LOOKUP_SERVFAIL:
		return "servfail";
	case DNS_LOOKUP_TIMEOUT:
		return "timeout";
	default:
		return "error";
	}
}

/* ---- the c-ares resolver ---------------------------------------------- */

struct dns_resolver {
	ares_channel channel;
	unsigned pending;
	int dnssec; /* queries carry the DO bit */
};

struct pending {
	struct dns_resolver *r;
	dns_resolver_cb cb;
	void *arg;
	uint16_t type;
	char name[];
};

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_rc;

static void ares_global_init(void)
{
	ares_init_rc = ares_library_init(ARES_LIB_INIT_ALL);
}

int dns_resolver_new(struct dns_resolver **out, const struct dns_resolver_config *cfg,
                     struct base_err *err)
{
	pthread_once(&ares_once, ares_global_init);
	if (ares_init_rc != ARES_SUCCESS)
		return base_errf(err, "c-ares: %s", ares_strerror(ares_init_rc));

	char csv[128] = "";
	if (cfg && cfg->server) {
		struct base_sockaddr sa;
		if (base_parse_hostport(cfg->server, 53, &sa, err) < 0) return -1;
		char host[64];
		if (sa.family == AF_INET)
			snprintf(host, sizeof host, "%u.%u.%u.%u", sa.a.v4[0], sa.a.v4[1],
			         sa.a.v4[2], sa.a.v4[3]);
		else if (!inet_ntop(AF_INET6, sa.a.v6, host, sizeof host))
			return base_errf(err, "resolver '%s': bad address", cfg->server);
		if (sa.family == AF_INET)
			snprintf(csv, sizeof csv, "%s:%u", host, sa.port);
		else
			snprintf(csv, sizeof csv, "[%s]:%u", host, sa.port);
	}

	struct ares_options o;
	memset(&o, 0, sizeof o);
	int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
	o.flags = ARES_FLAG_NOCHECKRESP | ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
	o.timeout = (int)(cfg && cfg->timeout_ms ? cfg->timeout_ms : 2000);
	o.tries = (int)(cfg && cfg->tries ? cfg->tries : 2);
	struct in_addr placeholder = {.s_addr = htonl(0x7f000001)};
	if (csv[0]) {
		/* Given servers keep c-ares from taking them from resolv.conf;
		 * the real one (with its port) is set just below. */
		mask |= ARES_OPT_SERVERS;
		o.servers = &placeholder;
		o.nservers = 1;
	}
	struct dns_resolver *r = base_xcalloc(1, sizeof *r);
	int rc = ares_init_options(&r->channel, &o, mask);
	if (rc != ARES_SUCCESS) {
		free(r);
		return base_errf(err, "c-ares init: %s", ares_strerror(rc));
	}
	if (csv[0] && (rc = ares_set_servers_ports_csv(r->channel, csv)) != ARES_SUCCESS) {
		ares_destroy(r->channel);
		free(r);
		return base_errf(err, "resolver '%s': %s", cfg->server, ares_strerror(rc));
	}
	*out = r;
	return 0;
}

void dns_resolver_set_dnssec(struct dns_resolver *r, int on)
{
	r->dnssec = on;
}

void dns_resolver_free(struct dns_resolver *r)
{
	if (!r) return;
	ares_destroy(r->channel); /* runs pending callbacks with ARES_EDESTRUCTION */
	free(r);
}

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct pending *p = arg;
	struct dns_answer a;
	dns_answer_init(&a);
	if (status == ARES_SUCCESS) {
		dns_answer_parse(abuf, (size_t)alen, p->type, &a);
	} else {
		a.status = status == ARES_ETIMEOUT ? DNS_LOOKUP_TIMEOUT : DNS_LOOKUP_SERVFAIL;
		snprintf(a.why, sizeof a.why, "c-ares: %s", ares_strerror(status));
	}
	p->r->pending--;
	p->cb(p->arg, p->name, p->type, &a);
	dns_answer_free(&a);
	free(p);
}

int dns_resolver_submit(struct dns_resolver *r, const char *name, uint16_t type, dns_resolver_cb cb,
                        void *arg, struct base_err *err)
{
	struct dns_name n;
	if (dns_name_from_text(&n, name, 0, err) < 0) return -1;
	uint8_t q[DNS_HDR_SIZE + DNS_NAME_MAX + 1 + 4 + 11];
	memset(q, 0, DNS_HDR_SIZE);
	dns_put16(q + 2, DNS_F_RD);
	dns_put16(q + 4, 1);  /* one question */
	dns_put16(q + 10, 1); /* one additional: OPT */
	size_t o = DNS_HDR_SIZE;
	memcpy(q + o, n.wire, n.len);
	o += n.len;
	dns_put16(q + o, type);
	dns_put16(q + o + 2, DNS_C_IN);
	o += 4;
	/* OPT: root owner, type 41, class = UDP size, ttl 0 (or the DO bit),
	 * rdlen 0 */
	q[o++] = 0;
	dns_put16(q + o, DNS_T_OPT);
	dns_put16(q + o + 2, 1232);
	memset(q + o + 4, 0, 6);
	if (r->dnssec) dns_put16(q + o + 6, 0x8000);
	o += 10;

	size_t nl = strlen(name);
	struct pending *p = base_xmalloc(sizeof *p + nl + 1);
	p->r = r;
	p->cb = cb;
	p->arg = arg;
	p->type = type;
	memcpy(p->name, name, nl + 1);
	r->pending++;
	ares_send(r->channel, q, (int)o, on_answer, p);
	return 0;
}

unsigned dns_resolver_pending(const struct dns_resolver *r)
{
	return r->pending;
}

int dns_resolver_fds(struct dns_resolver *r, struct pollfd *fds, int max, int *timeout_ms)
{
	ares_socket_t socks[ARES_GETSOCK_MAXNUM];
	int bits = ares_getsock(r->channel, socks, ARES_GETSOCK_MAXNUM);
	int n = 0;
	for (int i = 0; i < ARES_GETSOCK_MAXNUM && n < max; i++) {
		short ev = 0;
		/* ARES_GETSOCK_WRITABLE shifts a signed 1 into the sign bit */
		if ((unsigned)bits & (1u << i)) ev |= POLLIN;
		if ((unsigned)bits & (1u << (i + ARES_GETSOCK_MAXNUM))) ev |= POLLOUT;
		if (!ev) continue;
		fds[n].fd = socks[i];
		fds[n].events = ev;
		fds[n].revents = 0;
		n++;
	}
	struct timeval tv, *tvp = ares_timeout(r->channel, NULL, &tv);
	if (timeout_ms)
		*timeout_ms = tvp ? (int)(tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000) : -1;
	return n;
}

void dns_resolver_process(struct dns_resolver *r, const struct pollfd *fds, int n)
{
	int any = 0;
	for (int i = 0; i < n; i++) {
		if (!fds[i].revents) continue;
		any = 1;
		ares_socket_t rd =
		    fds[i].revents & (POLLIN | POLLERR | POLLHUP) ? fds[i].fd : ARES_SOCKET_BAD;
		ares_socket_t wr = fds[i].revents & POLLOUT ? fds[i].fd : ARES_SOCKET_BAD;
		ares_process_fd(r->channel, rd, wr);
	}
	if (!any) ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

unsigned dns_resolver_poll(struct dns_resolver *r, int timeout_ms)
{
	struct pollfd fds[ARES_GETSOCK_MAXNUM];
	int wait;
	int n = dns_resolver_fds(r, fds, ARES_GETSOCK_MAXNUM, &wait);
	if (wait < 0 || (timeout_ms >= 0 && wait > timeout_ms)) wait = timeout_ms;
	if (poll(fds, (nfds_t)n, wait) < 0) n = 0;
	dns_resolver_process(r, fds, n);
	return r->pending;
}

void dns_resolver_run(struct dns_resolver *r)
{
	while (r->pending) dns_resolver_poll(r, 1000);
}

/* The blocking interface: submit, then process until this one is done. */
struct sync_slot {
	int done;
	struct dns_answer *ans;
};

static void on_sync(void *arg, const char *name, uint16_t type, struct dns_answer *ans)
{
	struct sync_slot *s = arg;
	dns_answer_take(s->ans, ans);
	s->done = 1;
}

static void resolver_lookup(void *ctx, const char *name, uint16_t type, struct dns_answer *ans)
{
	struct dns_resolver *r = ctx;
	struct base_err err;
	struct sync_slot s = {0, ans};
	dns_answer_init(ans);
	if (dns_resolver_submit(r, name, type, on_sync, &s, &err) < 0) {
		answer_fail(ans, DNS_LOOKUP_ERROR, err.msg);
		return;
	}
	while (!s.done) dns_resolver_poll(r, 1000);
}

void dns_resolver_ops(struct dns_resolver *r, struct dns_lookup_ops *ops)
{
	ops->lookup = resolver_lookup;
	ops->ctx = r;
}
