/*
 * server.c — the DNS server: UDP workers, one TCP thread, and the main
 * thread that reloads data, writes statistics and handles signals.
 *
 * Each UDP worker owns one SO_REUSEPORT socket per listen address and
 * answers in batches (recvmmsg/sendmmsg) from the current snapshot. The
 * snapshot is published through one atomic pointer. Readers protect the
 * snapshot they use with a hazard slot of their own: store the pointer in
 * the slot, then check that it is still current. The main thread retires
 * an old snapshot and frees it once no slot holds it, so readers never
 * take a lock or touch a shared counter.
 */
#include "dnsbl/int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <malloc.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define BATCH 64
#define PKT_MAX 4096

struct hazard {
	_Atomic(struct dnsbl_snapshot *) p;
	char pad[64 - sizeof(void *)];
};

struct counters {
	_Atomic uint64_t c[5]; /* qtot qok qnxd bin bout */
};

struct server {
	const struct dnsbl_server_config *cfg;
	_Atomic(struct dnsbl_snapshot *) current;
	struct hazard *hazards;  /* one per UDP worker, plus one for TCP */
	unsigned nhazards;
	unsigned nzones;
	struct counters *cnt;    /* [nworkers+1][nzones+1] */
	unsigned nworkers;
	_Atomic int stop;
	FILE *qlog;
	pthread_mutex_t qlog_lock;
	struct dnsbl_snapshot *retired[64];
	unsigned nretired;
	struct event_base *tcp_base;
	unsigned tcp_conns;
	unsigned xfr_active;
	_Atomic int ixfr_seen;   /* a client asked for IXFR: keep differences from now on */
	/* NOTIFY (RFC 1996) messages waiting for an answer from a secondary */
	struct notify *pend;
	unsigned npend;
	int notify_fd[2];        /* IPv4, IPv6 */
};

/* One NOTIFY to one secondary, resent until it answers or NOTIFY_TRIES. */
struct notify {
	unsigned zone;           /* zone index */
	uint8_t name[DNS_NAME_MAX + 1];
	size_t namelen;
	uint32_t serial;
	unsigned target;         /* index into cfg->notify */
	uint16_t id;
	unsigned tries;
	uint64_t next_ns;
};

#define NOTIFY_TRIES 5

static struct dnsbl_snapshot *acquire(struct server *s, unsigned slot)
{
	struct dnsbl_snapshot *snap;
	do {
		snap = atomic_load(&s->current);
		atomic_store(&s->hazards[slot].p, snap);
	} while (snap != atomic_load(&s->current));
	return snap;
}

static void release(struct server *s, unsigned slot)
{
	atomic_store_explicit(&s->hazards[slot].p, NULL, memory_order_release);
}

static struct counters *counters_for(struct server *s, unsigned worker, int zone)
{
	unsigned z = zone < 0 || (unsigned)zone >= s->nzones ? s->nzones : (unsigned)zone;
	return &s->cnt[worker * (s->nzones + 1) + z];
}

/* Only the owning thread writes a counter slot, so a relaxed load and
 * store (no locked instruction) is enough; readers may see a value that is
 * a few queries old. */
static inline void bump(_Atomic uint64_t *c, uint64_t v)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v, memory_order_relaxed);
}

static void count(struct server *s, unsigned worker, int zone, size_t in, const uint8_t *out, size_t outlen)
{
	struct counters *c = counters_for(s, worker, zone);
	bump(&c->c[0], 1);
	if (outlen >= DNS_HDR_SIZE) {
		unsigned rcode = out[3] & 0xf;
		if (rcode == DNS_R_NOERROR) bump(&c->c[1], 1);
		else if (rcode == DNS_R_NXDOMAIN) bump(&c->c[2], 1);
	}
	bump(&c->c[3], in);
	bump(&c->c[4], outlen);
}

static void peer_from(const struct sockaddr_storage *ss, struct dnsbl_peer *p)
{
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)ss;
		static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		if (!memcmp(a->sin6_addr.s6_addr, mapped, 12)) {
			p->family = AF_INET;
			memcpy(p->addr, a->sin6_addr.s6_addr + 12, 4);
		} else {
			p->family = AF_INET6;
			memcpy(p->addr, a->sin6_addr.s6_addr, 16);
		}
	} else {
		const struct sockaddr_in *a = (const void *)ss;
		p->family = AF_INET;
		memcpy(p->addr, &a->sin_addr, 4);
	}
}

static void log_query(struct server *s, const struct dnsbl_peer *peer, const uint8_t *q, size_t qlen,
		      const uint8_t *r, size_t rlen)
{
	if (!s->qlog || rlen < DNS_HDR_SIZE) return;
	struct dns_query dq;
	if (dns_parse_query(q, qlen, &dq, NULL) != DNS_PARSE_OK) return;
	char ip[INET6_ADDRSTRLEN], name[DNS_NAME_MAX * 4 + 2], tb[16];
	inet_ntop(peer->family, peer->addr, ip, sizeof ip);
	dns_name_to_text(dq.qname_case, name, sizeof name);
	const char *cls = dq.qclass == DNS_C_IN ? "IN" : dq.qclass == DNS_C_CH ? "CH" : "CLASS?";
	pthread_mutex_lock(&s->qlog_lock);
	fprintf(s->qlog, "%ld %s %s %s %s: %s/%u/%zu\n", (long)time(NULL), ip, name, dns_type_name(dq.qtype, tb),
		cls, dns_rcode_name(r[3] & 0xf), dns_get16(r + 6), rlen);
	if (s->cfg->log_unbuffered) fflush(s->qlog);
	pthread_mutex_unlock(&s->qlog_lock);
}

/* ---- UDP workers ------------------------------------------------------- */

struct worker {
	struct server *s;
	unsigned id;
	int *fds;
	unsigned nfds;
	pthread_t th;
	struct mmsghdr in[BATCH], out[BATCH];
	struct iovec iin[BATCH], iout[BATCH];
	struct sockaddr_storage from[BATCH];
	uint8_t qbuf[BATCH][PKT_MAX], rbuf[BATCH][PKT_MAX];
};

/* Receives and answers one batch; returns how many packets came in. */
static int udp_batch(struct worker *w, int fd, int flags)
{
	struct server *s = w->s;
	struct mmsghdr *in = w->in, *out = w->out;
	struct iovec *iin = w->iin, *iout = w->iout;
	struct sockaddr_storage *from = w->from;
	uint8_t(*qbuf)[PKT_MAX] = w->qbuf, (*rbuf)[PKT_MAX] = w->rbuf;
	for (int i = 0; i < BATCH; i++) {
		iin[i].iov_base = qbuf[i];
		iin[i].iov_len = PKT_MAX;
		in[i].msg_hdr.msg_iov = &iin[i];
		in[i].msg_hdr.msg_iovlen = 1;
		in[i].msg_hdr.msg_name = &from[i];
		in[i].msg_hdr.msg_namelen = sizeof from[i];
		in[i].msg_hdr.msg_control = NULL;
		in[i].msg_hdr.msg_controllen = 0;
		in[i].msg_hdr.msg_flags = 0;
	}
	int n = recvmmsg(fd, in, BATCH, flags, NULL);
	if (n <= 0) return 0;
	struct dnsbl_snapshot *snap = acquire(s, w->id);
	int m = 0;
	for (int i = 0; i < n; i++) {
		struct dnsbl_peer peer;
		peer_from(&from[i], &peer);
		int zone, xfr;
		size_t len = dnsbl_answer(snap, qbuf[i], in[i].msg_len, &peer, DNSBL_UDP, rbuf[m], PKT_MAX, &zone, &xfr);
		count(s, w->id, zone, in[i].msg_len, rbuf[m], len);
		if (!len) continue;
		if (s->qlog) log_query(s, &peer, qbuf[i], in[i].msg_len, rbuf[m], len);
		iout[m].iov_base = rbuf[m];
		iout[m].iov_len = len;
		out[m].msg_hdr.msg_iov = &iout[m];
		out[m].msg_hdr.msg_iovlen = 1;
		out[m].msg_hdr.msg_name = &from[i];
		out[m].msg_hdr.msg_namelen = in[i].msg_hdr.msg_namelen;
		out[m].msg_hdr.msg_control = NULL;
		out[m].msg_hdr.msg_controllen = 0;
		out[m].msg_hdr.msg_flags = 0;
		m++;
	}
	release(s, w->id);
	int sent = 0;
	while (sent < m) {
		int r = sendmmsg(fd, out + sent, (unsigned)(m - sent), 0);
		if (r < 0) {
			if (errno == EINTR) continue;
			sent++; /* skip the one that failed (e.g. unreachable peer) */
			continue;
		}
		sent += r;
	}
	return n;
}

static void *udp_worker(void *arg)
{
	struct worker *w = arg;
	struct pollfd pf[32];
	const struct timespec pause = {0, (long)w->s->cfg->coalesce_us * 1000};
	while (!atomic_load(&w->s->stop)) {
		if (w->nfds == 1) {
			int n = udp_batch(w, w->fds[0], MSG_WAITFORONE);
			/* A lone query is answered at once. When more are already
			 * waiting, the server is under load: from then on it pauses
			 * between partial batches so that each wake-up answers many
			 * queries (a context switch and two system calls per batch
			 * instead of per packet), until a pause brings nothing. */
			if (n <= 0 || !pause.tv_nsec) continue;
			if (n < BATCH && (n = udp_batch(w, w->fds[0], MSG_DONTWAIT)) <= 0) continue;
			while (n > 0 && !atomic_load(&w->s->stop)) {
				if (n < BATCH) nanosleep(&pause, NULL);
				n = udp_batch(w, w->fds[0], MSG_DONTWAIT);
			}
			continue;
		}
		for (unsigned i = 0; i < w->nfds; i++) {
			pf[i].fd = w->fds[i];
			pf[i].events = POLLIN;
		}
		int r = poll(pf, w->nfds, 500);
		if (r <= 0) continue;
		for (unsigned i = 0; i < w->nfds; i++)
			if (pf[i].revents & POLLIN) udp_batch(w, w->fds[i], MSG_DONTWAIT);
	}
	return NULL;
}

/* ---- sockets ----------------------------------------------------------- */

static int open_socket(const struct base_sockaddr *a, int type, int reuseport, struct base_err *err)
{
	struct sockaddr_storage ss;
	socklen_t sl = base_sockaddr_to(a, &ss);
	int fd = socket(a->family, type | SOCK_CLOEXEC, 0);
	if (fd < 0) return base_errf(err, "socket: %s", strerror(errno));
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	if (a->family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (type == SOCK_DGRAM) {
		int sz = 4 << 20;
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
		struct timeval tv = {0, 500000};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	}
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0) {
		char ip[INET6_ADDRSTRLEN];
		inet_ntop(a->family, a->family == AF_INET ? (const void *)a->a.v4 : (const void *)a->a.v6, ip, sizeof ip);
		base_errf(err, "cannot bind %s %s/%u: %s", type == SOCK_DGRAM ? "UDP" : "TCP", ip, a->port,
			  strerror(errno));
		close(fd);
		return -1;
	}
	if (type == SOCK_STREAM && listen(fd, 256) < 0) {
		base_errf(err, "listen: %s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* ---- TCP --------------------------------------------------------------- */

struct tcpconn {
	struct server *s;
	struct bufferevent *bev;
	struct dnsbl_peer peer;
};

static void tcp_close(struct tcpconn *c)
{
	bufferevent_free(c->bev);
	c->s->tcp_conns--;
	free(c);
}

static void tcp_write_msg(struct bufferevent *bev, const uint8_t *m, size_t n)
{
	uint8_t l[2];
	dns_put16(l, (uint16_t)n);
	bufferevent_write(bev, l, 2);
	bufferevent_write(bev, m, n);
}

static void tcp_xfr(struct tcpconn *c, struct dnsbl_snapshot *snap, int zone, const uint8_t *q, size_t qlen)
{
	struct dnsbl_xfr *x = dnsbl_xfr_start(snap, zone, q, qlen);
	if (!x) return;
	static uint8_t m[65536];
	size_t n, total = 0;
	while ((n = dnsbl_xfr_next(x, m, sizeof m)) > 0) {
		tcp_write_msg(c->bev, m, n);
		total += n;
	}
	char ip[INET6_ADDRSTRLEN];
	inet_ntop(c->peer.family, c->peer.addr, ip, sizeof ip);
	base_info("%s of %s to %s: %zu bytes", dnsbl_xfr_kind(x), dnsbl_snapshot_zone_name(snap, (unsigned)zone), ip,
		  total);
	dnsbl_xfr_free(x);
}

static void tcp_read(struct bufferevent *bev, void *arg)
{
	struct tcpconn *c = arg;
	struct server *s = c->s;
	struct evbuffer *in = bufferevent_get_input(bev);
	static uint8_t q[65536], r[65536];
	for (;;) {
		size_t avail = evbuffer_get_length(in);
		if (avail < 2) break;
		uint8_t l[2];
		evbuffer_copyout(in, l, 2);
		size_t n = dns_get16(l);
		if (avail < 2 + n) break;
		evbuffer_drain(in, 2);
		evbuffer_remove(in, q, n);
		struct dnsbl_snapshot *snap = acquire(s, s->nworkers);
		int zone, xfr;
		size_t len = dnsbl_answer(snap, q, n, &c->peer, DNSBL_TCP, r, sizeof r, &zone, &xfr);
		count(s, s->nworkers, zone, n, r, len);
		if (xfr >= 0) {
			if (n > 12 && !atomic_load(&s->ixfr_seen)) {
				struct dns_query dq;
				if (dns_parse_query(q, n, &dq, NULL) == DNS_PARSE_OK && dq.qtype == DNS_T_IXFR)
					atomic_store(&s->ixfr_seen, 1);
			}
			tcp_xfr(c, snap, xfr, q, n);
		} else if (len) {
			if (s->qlog) log_query(s, &c->peer, q, n, r, len);
			tcp_write_msg(bev, r, len);
		}
		release(s, s->nworkers);
		if (evbuffer_get_length(bufferevent_get_output(bev)) > (1u << 20)) {
			/* the client is not reading: stop reading until it catches up */
			bufferevent_disable(bev, EV_READ);
			bufferevent_setwatermark(bev, EV_WRITE, 64 * 1024, 0);
			break;
		}
	}
}

static void tcp_write(struct bufferevent *bev, void *arg)
{
	(void)arg;
	if (!(bufferevent_get_enabled(bev) & EV_READ)) bufferevent_enable(bev, EV_READ);
}

static void tcp_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	tcp_close(arg);
}

static void tcp_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int slen, void *arg)
{
	struct server *s = arg;
	(void)l;
	(void)slen;
	if (s->tcp_conns >= s->cfg->tcp_max) {
		close(fd);
		return;
	}
	struct tcpconn *c = base_xcalloc(1, sizeof *c);
	c->s = s;
	peer_from((struct sockaddr_storage *)sa, &c->peer);
	c->bev = bufferevent_socket_new(s->tcp_base, fd, BEV_OPT_CLOSE_ON_FREE);
	s->tcp_conns++;
	bufferevent_setcb(c->bev, tcp_read, tcp_write, tcp_event, c);
	struct timeval idle = {(time_t)s->cfg->tcp_idle, 0};
	bufferevent_set_timeouts(c->bev, &idle, &idle);
	bufferevent_setwatermark(c->bev, EV_READ, 0, 128 * 1024);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void tcp_stop_check(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;
	(void)fd;
	(void)what;
	if (atomic_load(&s->stop)) event_base_loopbreak(s->tcp_base);
}

struct tcpthread {
	struct server *s;
	int *fds;
	unsigned nfds;
};

static void *tcp_thread(void *arg)
{
	struct tcpthread *t = arg;
	struct server *s = t->s;
	struct evconnlistener **ls = base_xcalloc(t->nfds, sizeof *ls);
	for (unsigned i = 0; i < t->nfds; i++) {
		evutil_make_socket_nonblocking(t->fds[i]);
		ls[i] = evconnlistener_new(s->tcp_base, tcp_accept, s, LEV_OPT_CLOSE_ON_FREE, -1, t->fds[i]);
	}
	struct event *tick = event_new(s->tcp_base, -1, EV_PERSIST, tcp_stop_check, s);
	struct timeval tv = {0, 200000};
	event_add(tick, &tv);
	event_base_dispatch(s->tcp_base);
	event_free(tick);
	for (unsigned i = 0; i < t->nfds; i++)
		if (ls[i]) evconnlistener_free(ls[i]);
	free(ls);
	return NULL;
}

/* ---- statistics -------------------------------------------------------- */

static void write_stats(struct server *s, struct dnsbl_snapshot *snap, uint64_t *last)
{
	const struct dnsbl_server_config *cfg = s->cfg;
	if (!cfg->statsfile) return;
	FILE *f = fopen(cfg->statsfile, "a");
	if (!f) {
		base_warn("%s: %s", cfg->statsfile, strerror(errno));
		return;
	}
	fprintf(f, "%ld", (long)time(NULL));
	uint64_t tot[5] = {0};
	for (unsigned z = 0; z <= s->nzones; z++) {
		uint64_t v[5] = {0};
		for (unsigned w = 0; w <= s->nworkers; w++)
			for (int k = 0; k < 5; k++) v[k] += atomic_load_explicit(&s->cnt[w * (s->nzones + 1) + z].c[k], memory_order_relaxed);
		for (int k = 0; k < 5; k++) tot[k] += v[k];
		if (z == s->nzones) break;
		uint64_t out[5];
		for (int k = 0; k < 5; k++) {
			out[k] = cfg->stats_incremental ? v[k] - last[z * 5 + k] : v[k];
			last[z * 5 + k] = v[k];
		}
		fprintf(f, " %s:%llu:%llu:%llu:%llu:%llu", dnsbl_snapshot_zone_name(snap, z), (unsigned long long)out[0],
			(unsigned long long)out[1], (unsigned long long)out[2], (unsigned long long)out[3],
			(unsigned long long)out[4]);
	}
	uint64_t out[5];
	for (int k = 0; k < 5; k++) {
		out[k] = cfg->stats_incremental ? tot[k] - last[s->nzones * 5 + k] : tot[k];
		last[s->nzones * 5 + k] = tot[k];
	}
	fprintf(f, " *:%llu:%llu:%llu:%llu:%llu\n", (unsigned long long)out[0], (unsigned long long)out[1],
		(unsigned long long)out[2], (unsigned long long)out[3], (unsigned long long)out[4]);
	fclose(f);
}

static void stats_mark(const struct dnsbl_server_config *cfg)
{
	if (!cfg->statsfile) return;
	FILE *f = fopen(cfg->statsfile, "a");
	if (!f) return;
	fprintf(f, "%ld\n", (long)time(NULL));
	fclose(f);
}

/* ---- snapshots --------------------------------------------------------- */

static void reclaim(struct server *s)
{
	unsigned keep = 0;
	for (unsigned i = 0; i < s->nretired; i++) {
		struct dnsbl_snapshot *old = s->retired[i];
		int busy = 0;
		for (unsigned h = 0; h < s->nhazards; h++)
			if (atomic_load(&s->hazards[h].p) == old) busy = 1;
		if (busy) s->retired[keep++] = old;
		else dnsbl_snapshot_free(old);
	}
	s->nretired = keep;
}

static void publish(struct server *s, struct dnsbl_snapshot *next)
{
	struct dnsbl_snapshot *old = atomic_exchange(&s->current, next);
	if (!old) return;
	while (s->nretired == sizeof s->retired / sizeof s->retired[0]) {
		reclaim(s);
		if (s->nretired == sizeof s->retired / sizeof s->retired[0]) usleep(1000);
	}
	s->retired[s->nretired++] = old;
	/* readers hold a snapshot for one batch: a few ms at most */
	for (int i = 0; i < 100 && s->nretired; i++) {
		reclaim(s);
		if (s->nretired) usleep(1000);
	}
}

/* ---- NOTIFY ------------------------------------------------------------ */

static void notify_queue(struct server *s, const struct dnsbl_snapshot *snap, const int *changed)
{
	const struct dnsbl_server_config *cfg = s->cfg;
	for (unsigned k = 0; k < snap->nzones; k++) {
		if (!changed[k]) continue;
		const struct zone *z = &snap->zones[k];
		for (unsigned t = 0; t < cfg->nnotify; t++) {
			struct notify *n = NULL;
			for (unsigned i = 0; i < s->npend; i++)
				if (s->pend[i].zone == z->index && s->pend[i].target == t) n = &s->pend[i];
			if (!n) {
				s->pend = base_xrealloc(s->pend, (s->npend + 1) * sizeof *s->pend);
				n = &s->pend[s->npend++];
			}
			memset(n, 0, sizeof *n);
			n->zone = z->index;
			memcpy(n->name, z->name.wire, z->name.len);
			n->namelen = z->name.len;
			n->serial = z->serial;
			n->target = t;
			if (getrandom(&n->id, sizeof n->id, 0) != (ssize_t)sizeof n->id) n->id = (uint16_t)base_mono_ns();
		}
	}
}

static void notify_drop(struct server *s, unsigned i)
{
	s->pend[i] = s->pend[--s->npend];
}

/* Sends what is due; gives up on a secondary after NOTIFY_TRIES. */
static void notify_run(struct server *s)
{
	uint64_t now = base_mono_ns();
	for (unsigned i = 0; i < s->npend;) {
		struct notify *n = &s->pend[i];
		const struct base_sockaddr *a = &s->cfg->notify[n->target];
		char ip[INET6_ADDRSTRLEN];
		inet_ntop(a->family, a->a.v6, ip, sizeof ip);
		if (n->next_ns > now) {
			i++;
			continue;
		}
		if (n->tries == NOTIFY_TRIES) {
			char zn[DNS_NAME_MAX * 4 + 2];
			dns_name_to_text(n->name, zn, sizeof zn);
			base_warn("NOTIFY of %s serial %u to %s port %u: no answer after %u tries", zn, n->serial, ip,
				  a->port, NOTIFY_TRIES);
			notify_drop(s, i);
			continue;
		}
		uint8_t m[DNS_HDR_SIZE + DNS_NAME_MAX + 1 + 4];
		memset(m, 0, DNS_HDR_SIZE);
		dns_put16(m, n->id);
		dns_put16(m + 2, (uint16_t)(DNS_OP_NOTIFY << 11) | DNS_F_AA);
		dns_put16(m + 4, 1);
		memcpy(m + DNS_HDR_SIZE, n->name, n->namelen);
		dns_put16(m + DNS_HDR_SIZE + n->namelen, DNS_T_SOA);
		dns_put16(m + DNS_HDR_SIZE + n->namelen + 2, DNS_C_IN);
		struct sockaddr_storage ss;
		socklen_t sl = base_sockaddr_to(a, &ss);
		int fd = s->notify_fd[a->family == AF_INET6];
		if (fd >= 0 &&
		    sendto(fd, m, DNS_HDR_SIZE + n->namelen + 4, 0, (struct sockaddr *)&ss, sl) < 0)
			base_warn("NOTIFY to %s port %u: %s", ip, a->port, strerror(errno));
		n->tries++;
		n->next_ns = now + (1000000000ull << (n->tries - 1)); /* 1, 2, 4, 8 s */
		i++;
	}
}

/* Reads the secondaries' answers and retires the NOTIFYs they answer. */
static void notify_recv(struct server *s)
{
	for (int f = 0; f < 2; f++) {
		int fd = s->notify_fd[f];
		if (fd < 0) continue;
		for (;;) {
			uint8_t m[512];
			struct sockaddr_storage ss;
			socklen_t sl = sizeof ss;
			ssize_t r = recvfrom(fd, m, sizeof m, MSG_DONTWAIT, (struct sockaddr *)&ss, &sl);
			if (r < 0) break;
			if (r < DNS_HDR_SIZE) continue;
			uint16_t id = dns_get16(m), fl = dns_get16(m + 2);
			if (!(fl & DNS_F_QR) || ((fl >> 11) & 15) != DNS_OP_NOTIFY) continue;
			struct dnsbl_peer p;
			peer_from(&ss, &p);
			uint16_t port = ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
								: ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
			for (unsigned i = 0; i < s->npend; i++) {
				const struct base_sockaddr *a = &s->cfg->notify[s->pend[i].target];
				if (s->pend[i].id != id || a->family != p.family || a->port != port ||
				    memcmp(a->a.v6, p.addr, a->family == AF_INET ? 4 : 16))
					continue;
				char ip[INET6_ADDRSTRLEN];
				inet_ntop(a->family, a->a.v6, ip, sizeof ip);
				base_info("NOTIFY of serial %u to %s port %u answered (%s)", s->pend[i].serial, ip,
					  a->port, dns_rcode_name(fl & 15));
				notify_drop(s, i);
				break;
			}
		}
	}
}

static void reload(struct server *s, unsigned what)
{
	struct dnsbl_snapshot *cur = atomic_load(&s->current), *next = NULL;
	struct base_err err;
	uint64_t t0 = base_mono_ns();
	int r = dnsbl_snapshot_reload(&s->cfg->opts, s->cfg->specs, s->cfg->nspecs, cur, what, &next, &err);
	if (r < 0) {
		base_error("reload failed: %s; keeping the data loaded before", err.msg);
		return;
	}
	if (r == 1) return;
	int *changed = base_xcalloc(next->nzones ? next->nzones : 1, sizeof *changed);
	/* differences cost a sort of the zone: kept only once someone can use them */
	unsigned keep = s->cfg->nnotify || atomic_load(&s->ixfr_seen) ? s->cfg->ixfr_keep : 0;
	unsigned nchanged = dnsbl_journal_update(cur, next, keep, changed);
	publish(s, next);
	malloc_trim(0); /* give the old snapshot's memory back to the system */
	if (nchanged && s->cfg->nnotify) {
		notify_queue(s, next, changed);
		notify_run(s);
	}
	free(changed);
	base_info("zones reloaded in %.3f s", (double)(base_mono_ns() - t0) / 1e9);
}

static void check_expiry(struct dnsbl_snapshot *snap)
{
	time_t now = base_now();
	for (unsigned k = 0; k < snap->nzones; k++) {
		struct zone *z = &snap->zones[k];
		if (z->expires && now > z->expires && !atomic_load(&z->expired)) {
			base_warn("zone %s: data expired, zone will not be serviced", z->text);
			atomic_store(&z->expired, 1);
		}
	}
}

/* ---- start-up ---------------------------------------------------------- */

static int drop_privileges(const struct dnsbl_server_config *cfg, struct base_err *err)
{
	if (cfg->chroot_dir) {
		if (chroot(cfg->chroot_dir) < 0 || chdir("/") < 0)
			return base_errf(err, "chroot %s: %s", cfg->chroot_dir, strerror(errno));
	}
	if (cfg->workdir && chdir(cfg->workdir) < 0)
		return base_errf(err, "cannot chdir to %s: %s", cfg->workdir, strerror(errno));
	if (geteuid() != 0) return 0;
	const char *user = cfg->user;
	if (!user) user = getpwnam("rbldns") ? "rbldns" : "nobody";
	struct base_err e;
	if (base_drop_privileges(user, &e) < 0) return base_errf(err, "%s (-u)", e.msg);
	return 0;
}

static unsigned ncpu(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}

int dnsbl_serve(const struct dnsbl_server_config *cfg)
{
	struct base_err err;
	struct server srv;
	memset(&srv, 0, sizeof srv);
	srv.cfg = cfg;
	srv.nworkers = cfg->threads ? cfg->threads : ncpu();
	signal(SIGPIPE, SIG_IGN);

	/* sockets first, while we may still bind privileged ports */
	int **udp = base_xcalloc(srv.nworkers, sizeof *udp);
	int *tcp = base_xcalloc(cfg->nlisten, sizeof *tcp);
	for (unsigned w = 0; w < srv.nworkers; w++) {
		udp[w] = base_xcalloc(cfg->nlisten, sizeof **udp);
		for (unsigned i = 0; i < cfg->nlisten; i++) {
			udp[w][i] = open_socket(&cfg->listen[i], SOCK_DGRAM, 1, &err);
			if (udp[w][i] < 0) {
				base_error("%s", err.msg);
				return 1;
			}
		}
	}
	for (unsigned i = 0; i < cfg->nlisten; i++) {
		tcp[i] = open_socket(&cfg->listen[i], SOCK_STREAM, 0, &err);
		if (tcp[i] < 0) {
			base_error("%s", err.msg);
			return 1;
		}
	}
	int pidfd = -1;
	if (cfg->pidfile) {
		pidfd = open(cfg->pidfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (pidfd < 0) {
			base_error("%s: %s", cfg->pidfile, strerror(errno));
			return 1;
		}
	}
	if (drop_privileges(cfg, &err) < 0) {
		base_error("%s", err.msg);
		return 1;
	}
	if (cfg->logfile) {
		const char *lf = cfg->logfile;
		if (!strcmp(lf, "-")) srv.qlog = stdout;
		else srv.qlog = fopen(lf, "a");
		if (!srv.qlog) {
			base_error("%s: %s", lf, strerror(errno));
			return 1;
		}
		pthread_mutex_init(&srv.qlog_lock, NULL);
	}

	struct dnsbl_snapshot *snap = NULL;
	uint64_t t0 = base_mono_ns();
	if (dnsbl_snapshot_load(&cfg->opts, cfg->specs, cfg->nspecs, NULL, &snap, &err) < 0) {
		base_error("%s", err.msg);
		base_error("zone loading errors, aborting");
		return 1;
	}
	base_info("zones loaded in %.3f s, %u zone(s)", (double)(base_mono_ns() - t0) / 1e9, dnsbl_snapshot_zones(snap));
	srv.nzones = dnsbl_snapshot_zones(snap);
	malloc_trim(0); /* what loading needed only for a while goes back to the system */
	atomic_store(&srv.current, snap);

	if (!cfg->foreground) {
		pid_t pid = fork();
		if (pid < 0) {
			base_error("fork: %s", strerror(errno));
			return 1;
		}
		if (pid > 0) _exit(0);
		setsid();
		int nul = open("/dev/null", O_RDWR);
		if (nul >= 0) {
			dup2(nul, 0);
			dup2(nul, 1);
			dup2(nul, 2);
			if (nul > 2) close(nul);
		}
	}
	if (pidfd >= 0) {
		char b[32];
		int n = snprintf(b, sizeof b, "%ld\n", (long)getpid());
		if (write(pidfd, b, (size_t)n) != n) base_warn("%s: short write", cfg->pidfile);
		close(pidfd);
	}

	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGUSR1);
	sigaddset(&sigs, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	srv.nhazards = srv.nworkers + 1;
	srv.hazards = base_xcalloc(srv.nhazards, sizeof *srv.hazards);
	srv.cnt = base_xcalloc((size_t)(srv.nworkers + 1) * (srv.nzones + 1), sizeof *srv.cnt);
	struct worker *ws = base_xcalloc(srv.nworkers, sizeof *ws);
	for (unsigned w = 0; w < srv.nworkers; w++) {
		ws[w].s = &srv;
		ws[w].id = w;
		ws[w].fds = udp[w];
		ws[w].nfds = cfg->nlisten;
		pthread_create(&ws[w].th, NULL, udp_worker, &ws[w]);
	}
	srv.tcp_base = event_base_new();
	struct tcpthread tt = {&srv, tcp, cfg->nlisten};
	pthread_t tth;
	pthread_create(&tth, NULL, tcp_thread, &tt);

	base_info("mailrep dnsbl %s started (%u UDP worker(s), %u address(es), %u zone(s))", MAILREP_VERSION,
		  srv.nworkers, cfg->nlisten, srv.nzones);
	stats_mark(cfg);
	srv.notify_fd[0] = srv.notify_fd[1] = -1;
	for (unsigned t = 0; t < cfg->nnotify; t++) {
		int f = cfg->notify[t].family == AF_INET6;
		if (srv.notify_fd[f] < 0) srv.notify_fd[f] = socket(f ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (srv.notify_fd[f] < 0) base_warn("NOTIFY socket: %s", strerror(errno));
	}
	uint64_t *last = base_xcalloc((srv.nzones + 1) * 5, sizeof *last);
	uint32_t interval = cfg->check_interval;
	uint64_t next_check = base_mono_ns() + (uint64_t)interval * 1000000000u;
	/* sources (live zones) are asked for changes far more often than files */
	uint64_t poll_ns = dnsbl_sources_registered() ? (uint64_t)(cfg->source_poll_ms ? cfg->source_poll_ms : 100) * 1000000u : 0;
	uint64_t next_poll = base_mono_ns() + poll_ns;
	while (!atomic_load(&srv.stop)) {
		struct timespec ts = {1, 0};
		if (interval) {
			uint64_t now = base_mono_ns();
			uint64_t left = next_check > now ? next_check - now : 0;
			ts.tv_sec = (time_t)(left / 1000000000u);
			ts.tv_nsec = (long)(left % 1000000000u);
		}
		if (srv.npend && (ts.tv_sec > 0 || ts.tv_nsec > 250000000)) {
			ts.tv_sec = 0;
			ts.tv_nsec = 250000000;
		}
		if (poll_ns) {
			uint64_t now = base_mono_ns();
			uint64_t left = next_poll > now ? next_poll - now : 0;
			if ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec > left) {
				ts.tv_sec = (time_t)(left / 1000000000u);
				ts.tv_nsec = (long)(left % 1000000000u);
			}
		}
		int sig = sigtimedwait(&sigs, NULL, &ts);
		if (srv.npend) {
			notify_recv(&srv);
			notify_run(&srv);
		}
		if (sig == SIGTERM || sig == SIGINT) break;
		if (sig == SIGHUP) {
			if (srv.qlog && srv.qlog != stdout) {
				FILE *nf = fopen(cfg->logfile, "a");
				if (nf) {
					pthread_mutex_lock(&srv.qlog_lock);
					fclose(srv.qlog);
					srv.qlog = nf;
					pthread_mutex_unlock(&srv.qlog_lock);
				}
			}
			reload(&srv, DNSBL_LOAD_FILES | DNSBL_LOAD_SOURCES);
			check_expiry(atomic_load(&srv.current));
		} else if (sig == SIGUSR1 || sig == SIGUSR2) {
			write_stats(&srv, atomic_load(&srv.current), last);
			if (sig == SIGUSR2) {
				for (size_t i = 0; i < (size_t)(srv.nworkers + 1) * (srv.nzones + 1); i++)
					for (int k = 0; k < 5; k++) atomic_store(&srv.cnt[i].c[k], 0);
				memset(last, 0, (srv.nzones + 1) * 5 * sizeof *last);
				stats_mark(cfg);
			}
		} else if (interval && base_mono_ns() >= next_check) {
			reload(&srv, DNSBL_LOAD_FILES | DNSBL_LOAD_SOURCES);
			check_expiry(atomic_load(&srv.current));
			write_stats(&srv, atomic_load(&srv.current), last);
			next_check = base_mono_ns() + (uint64_t)interval * 1000000000u;
		}
		if (poll_ns && base_mono_ns() >= next_poll) {
			reload(&srv, DNSBL_LOAD_SOURCES);
			next_poll = base_mono_ns() + poll_ns;
		}
		reclaim(&srv);
	}
	atomic_store(&srv.stop, 1);
	for (unsigned w = 0; w < srv.nworkers; w++) pthread_join(ws[w].th, NULL);
	pthread_join(tth, NULL);
	write_stats(&srv, atomic_load(&srv.current), last);
	stats_mark(cfg);
	event_base_free(srv.tcp_base);
	for (unsigned w = 0; w < srv.nworkers; w++) {
		for (unsigned i = 0; i < cfg->nlisten; i++) close(udp[w][i]);
		free(udp[w]);
	}
	free(udp);
	free(tcp);
	free(ws);
	free(last);
	reclaim(&srv);
	dnsbl_snapshot_free(atomic_load(&srv.current));
	free(srv.hazards);
	free(srv.cnt);
	free(srv.pend);
	for (int f = 0; f < 2; f++)
		if (srv.notify_fd[f] >= 0) close(srv.notify_fd[f]);
	if (srv.qlog && srv.qlog != stdout) fclose(srv.qlog);
	base_info("exiting");
	return 0;
}
