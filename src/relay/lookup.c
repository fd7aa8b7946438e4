/*
 * lookup.c — MX routing for recipients without a static route: the MX
 * records of the domain through the shared DNS client (dns/, c-ares, the
 * resolver given with --resolver), the addresses (A and AAAA) of every MX
 * host, and a per-domain cache of the result.
 *
 * Each domain has one entry that goes RESOLVING → READY (a site and its
 * addresses), NULLMX (RFC 7505: bounce at once), NOTFOUND (the domain does
 * not exist: bounce) or TEMPFAIL (retry later). Once the MX records are in,
 * every target's A and AAAA records are asked for at once; the entry is
 * settled when the last answer arrives. Its addresses are in MX preference
 * order, each host's IPv4 addresses before its IPv6 ones, at most
 * DEST_ADDRS_MAX; mta.c tries them in that order. A domain without MX
 * records falls back to its own A/AAAA records (RFC 5321 5.1).
 *
 * The site is the sorted, comma-separated list of MX host names (the
 * domain itself for the implicit MX): domains with the same MX hosts share
 * it, and with it their connection limits, rates and suspension
 * (KumoMTA's site_name). Entries expire with the records' TTL (at most an
 * hour; a failure after a minute). Queries are driven from the relay's
 * event loop by a short timer while any is pending.
 *
 * Every address keeps the name of the MX host it came from and that host's
 * preference (struct relay_hops): the verify TLS policy checks the
 * certificate against the name, and mta.c shuffles hosts of equal
 * preference for each connection (RFC 5321 5.1).
 *
 * DANE (--dane, dane.h): the relay's resolver is then asked with the DO
 * bit and must validate. When the MX answer is secure (AD), and once the
 * addresses are in, the TLSA records of every MX host whose address
 * answers were secure too are asked for (`_PORT._tcp.HOST`, PORT the
 * port of MX hosts, 25; RFC 7672 2.2.2) before the entry is settled; each
 * answer that makes DANE apply gives the host a struct relay_dane, which
 * rides with the host's addresses (relay_hops.dane). Such a site's name
 * ends in ";dane", so that mail of a domain whose MX records are not
 * signed never shares a destination, nor its DANE state, with mail of one
 * whose records are. An MX host that is an alias (CNAME) whose chain is
 * secure has its TLSA records asked for at the expanded name first, and
 * at the MX host name when there are none there (RFC 7672 2.2.2, RFC 7671
 * 7): the name where they were found is the TLSA base domain, and both
 * names are accepted by DANE-TA's name check. A CNAME at the TLSA name
 * itself is followed by the resolver and validated with it.
 *
 * A static route may name a host instead of an IP address: its A and AAAA
 * records are looked up and cached the same way (an entry of kind HOST,
 * one target, no MX query).
 *
 * Dead addresses: an address (and port) that refused a connection or timed
 * out is remembered for RELAY_DEAD_SECONDS in a small table (DEAD_MAX
 * entries; when full, the entry that ends first is replaced), and new
 * connections skip it while the site has another address (mta.c).
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "dns/dns.h"
#include "relay/dane.h"
#include "relay/int.h"
#include "relay/mtasts.h"

enum { MX_RESOLVING, MX_READY, MX_NULLMX, MX_NOTFOUND, MX_TEMPFAIL };

#define MX_TARGETS_MAX 16
#define HOST_ADDRS_MAX 8

struct mxtarget {
	char *name;
	uint32_t pref;
	struct base_sockaddr a4[HOST_ADDRS_MAX], a6[HOST_ADDRS_MAX];
	size_t n4, n6;
	int nxdomain;
	int insecure;            /* an address answer came without AD */
	char *canon;             /* the name a secure CNAME chain led its addresses to; NULL: none */
	int tlsa_initial;        /* the TLSA query asks at name (after none at canon) */
	struct relay_dane *dane; /* its TLSA lookup's result (reference held); NULL: no DANE */
};

struct mxquery {
	struct mxroute *e;
	size_t ti;
};

enum { KIND_MX, KIND_HOST };

struct mxroute {
	struct relay_ctx *x;
	char *domain; /* or the route's host name (KIND_HOST) */
	int kind;
	int state;
	char *site;
	struct relay_hops hops;
	int64_t expires;
	struct mxtarget *targets; /* by preference */
	struct mxquery *queries;  /* one per target */
	size_t ntargets;
	unsigned pending; /* address (then TLSA) queries not answered yet */
	uint32_t ttl;
	int secure; /* --dane and the MX answer (or its NODATA) was validated, or a route's host */
	uint16_t port; /* of the MX hosts, or the route's (for the TLSA name) */
	int tlsa;   /* the TLSA queries are asked (after the addresses) */
};

struct mxkey {
	int kind;
	uint16_t port;
	const char *name;
};

static uint64_t mxkey_hash(const struct mxkey *k)
{
	unsigned char kp[3] = {(unsigned char)k->kind, (unsigned char)(k->port >> 8),
	                       (unsigned char)k->port};
	return base_hash_lower(base_hash_mix(0, kp, sizeof kp), k->name);
}

static int mxkey_match(const void *item, const void *key)
{
	const struct mxroute *e = item;
	const struct mxkey *k = key;
	return e->kind == k->kind && e->port == k->port && !base_strcasecmp_ascii(e->domain, k->name);
}

static void poll_dns(evutil_socket_t fd, short what, void *arg)
{
	struct relay_ctx *x = arg;
	if (dns_resolver_poll(x->resolver, 0) > 0) {
		struct timeval tv = {0, 5000};
		evtimer_add(x->dns_ev, &tv);
	}
}

static void arm(struct relay_ctx *x)
{
	if (evtimer_pending(x->dns_ev, NULL)) return;
	struct timeval tv = {0, 1000};
	evtimer_add(x->dns_ev, &tv);
}

void relay_lookup_arm(struct relay_ctx *x)
{
	arm(x);
}

int relay_hops_dane(const struct relay_hops *h)
{
	for (size_t i = 0; i < h->n; i++)
		if (h->dane[i]) return 1;
	return 0;
}

static void settle(struct mxroute *e, int state, uint32_t ttl)
{
	e->state = state;
	if (ttl > 3600) ttl = 3600;
	if (state == MX_TEMPFAIL || ttl < 60) ttl = 60;
	e->expires = base_now() + ttl;
	relay_kick(e->x);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every address query is answered: the site and its addresses. */
static void addresses_done(struct mxroute *e)
{
	struct relay_hops *h = &e->hops;
	h->n = 0;
	for (size_t i = 0; i < e->ntargets; i++) {
		struct mxtarget *t = &e->targets[i];
		for (size_t k = 0; k < t->n4 + t->n6 && h->n < DEST_ADDRS_MAX; k++) {
			h->addrs[h->n] = k < t->n4 ? t->a4[k] : t->a6[k - t->n4];
			h->names[h->n] = t->name;
			h->dane[h->n] = t->dane;
			h->prefs[h->n++] = t->pref;
		}
	}
	if (!h->n) {
		if (e->ntargets == 1 && !strcmp(e->targets[0].name, e->domain) &&
		    e->targets[0].nxdomain)
			settle(e, MX_NOTFOUND, 300);
		else
			settle(e, MX_TEMPFAIL, 60);
		return;
	}
	char **names = base_xcalloc(e->ntargets, sizeof *names);
	size_t len = 1 + sizeof ";dane";
	int dane = 0;
	for (size_t i = 0; i < h->n; i++) dane |= h->dane[i] != NULL;
	for (size_t i = 0; i < e->ntargets; i++) {
		names[i] = e->targets[i].name;
		len += strlen(names[i]) + 1;
	}
	base_sort(names, e->ntargets, sizeof *names, by_name);
	e->site = base_xmalloc(len);
	e->site[0] = 0;
	for (size_t i = 0; i < e->ntargets; i++) {
		if (i && !strcmp(names[i], names[i - 1])) continue;
		if (i) strcat(e->site, ",");
		strcat(e->site, names[i]);
	}
	if (dane) strcat(e->site, ";dane");
	free(names);
	settle(e, MX_READY, e->ttl);
}

static int ask_tlsa(struct mxroute *e, size_t i);

static void on_tlsa(void *arg, const char *name, uint16_t type, struct dns_answer *ans)
{
	struct mxquery *q = arg;
	struct mxroute *e = q->e;
	if (e->x->stopping) return;
	struct mxtarget *t = &e->targets[q->ti];
	if (t->canon && !t->tlsa_initial &&
	    (ans->status == DNS_LOOKUP_NODATA || ans->status == DNS_LOOKUP_NXDOMAIN)) {
		/* none at the expanded name: the MX host name's (still pending) */
		t->tlsa_initial = 1;
		if (ask_tlsa(e, q->ti) == 0) {
			arm(e->x);
			return;
		} /* else t->dane says why the host cannot be used */
	} else {
		const char *base = t->canon && !t->tlsa_initial ? t->canon : t->name;
		t->dane = relay_dane_from_answer(base, ans);
		if (t->dane && t->canon)
			snprintf(t->dane->alias, sizeof t->dane->alias, "%s",
			         base == t->canon ? t->name : t->canon);
	}
	for (size_t i = 0; i < ans->n; i++)
		if (ans->rr[i].ttl < e->ttl) e->ttl = ans->rr[i].ttl;
	if (t->dane && t->dane->state == RELAY_DANE_FAIL) {
		base_warn("%s: %s", e->domain, t->dane->why + 10);
		if (e->ttl > 60) e->ttl = 60; /* a failure is asked again soon */
	} else if (t->dane)
		base_debug("%s: DANE applies to %s (%zu usable TLSA records)", e->domain, t->name,
		           t->dane->n);
	if (--e->pending == 0) addresses_done(e);
}

/* The addresses are in: with a secure MX answer, the TLSA records of each
 * host whose addresses are secure too; then the entry is settled. */
static void addresses_in(struct mxroute *e)
{
	if (!e->secure || e->tlsa) {
		addresses_done(e);
		return;
	}
	e->tlsa = 1;
	e->pending = 1; /* held while submitting */
	for (size_t i = 0; i < e->ntargets; i++) {
		struct mxtarget *t = &e->targets[i];
		if (!t->n4 && !t->n6) continue;
		if (t->insecure) {
			base_debug("%s: the addresses of %s are not signed: no DANE for it",
			           e->domain, t->name);
			continue;
		}
		e->pending++;
		if (ask_tlsa(e, i) < 0) e->pending--;
	}
	arm(e->x);
	if (--e->pending == 0) addresses_done(e);
}

/* Asks for target i's TLSA records: at its expanded name first, if it has
 * one, else (or then) at its own. -1 when the query could not be made: the
 * host then has a failed DANE state and cannot be used. */
static int ask_tlsa(struct mxroute *e, size_t i)
{
	struct mxtarget *t = &e->targets[i];
	const char *base = t->canon && !t->tlsa_initial ? t->canon : t->name;
	char qname[DNS_NAME_TEXT_MAX];
	struct base_err err;
	snprintf(qname, sizeof qname, "_%u._tcp.%s", e->port, base);
	if (dns_resolver_submit(e->x->resolver, qname, DNS_T_TLSA, on_tlsa, &e->queries[i], &err) ==
	    0)
		return 0;
	/* a name too long for its TLSA name */
	struct dns_answer fail;
	dns_answer_init(&fail);
	snprintf(fail.why, sizeof fail.why, "%.120s", err.msg);
	t->dane = relay_dane_from_answer(base, &fail);
	return -1;
}

static void on_addr(void *arg, const char *name, uint16_t type, struct dns_answer *ans)
{
	struct mxquery *q = arg;
	struct mxroute *e = q->e;
	if (e->x->stopping) return;
	struct mxtarget *t = &e->targets[q->ti];
	if (ans->status == DNS_LOOKUP_OK) {
		if (!ans->secure) t->insecure = 1;
		if (ans->secure && ans->canon && !t->canon) t->canon = base_xstrdup(ans->canon);
		for (size_t i = 0; i < ans->n; i++) {
			struct dns_record *r = &ans->rr[i];
			if (r->ttl < e->ttl) e->ttl = r->ttl;
			struct base_sockaddr a;
			memset(&a, 0, sizeof a);
			if (type == DNS_T_A && r->len == 4 && t->n4 < HOST_ADDRS_MAX) {
				a.family = AF_INET;
				memcpy(a.a.v4, r->data, 4);
				t->a4[t->n4++] = a;
			} else if (type == DNS_T_AAAA && r->len == 16 && t->n6 < HOST_ADDRS_MAX) {
				a.family = AF_INET6;
				memcpy(a.a.v6, r->data, 16);
				t->a6[t->n6++] = a;
			}
		}
	} else if (ans->status == DNS_LOOKUP_NXDOMAIN) {
		t->nxdomain = 1;
	}
	if (--e->pending == 0) addresses_in(e);
}

/* Asks for every target's A and AAAA records. */
static void resolve_targets(struct mxroute *e)
{
	struct base_err err;
	e->queries = base_xcalloc(e->ntargets, sizeof *e->queries);
	e->pending = 1; /* held while submitting */
	for (size_t i = 0; i < e->ntargets; i++) {
		e->queries[i].e = e;
		e->queries[i].ti = i;
		static const uint16_t types[2] = {DNS_T_A, DNS_T_AAAA};
		for (int k = 0; k < 2; k++) {
			e->pending++;
			if (dns_resolver_submit(e->x->resolver, e->targets[i].name, types[k],
			                        on_addr, &e->queries[i], &err) < 0)
				e->pending--;
		}
	}
	arm(e->x);
	if (--e->pending == 0) addresses_in(e);
}

static int by_pref(const void *a, const void *b)
{
	const struct dns_record *x = a, *y = b;
	return x->pref < y->pref ? -1 : x->pref > y->pref;
}

static void on_mx(void *arg, const char *name, uint16_t type, struct dns_answer *ans)
{
	struct mxroute *e = arg;
	if (e->x->stopping) return;
	e->ttl = 3600;
	e->secure = e->x->cfg->dane && ans->secure;
	if (ans->status == DNS_LOOKUP_NXDOMAIN) {
		settle(e, MX_NOTFOUND, 300);
		return;
	}
	if (ans->status == DNS_LOOKUP_NODATA) {
		/* no MX: the domain's own address is the implicit MX */
		e->targets = base_xcalloc(1, sizeof *e->targets);
		e->targets[0].name = base_xstrdup(e->domain);
		e->ntargets = 1;
		resolve_targets(e);
		return;
	}
	if (ans->status != DNS_LOOKUP_OK) {
		settle(e, MX_TEMPFAIL, 60);
		return;
	}
	if (ans->n == 1 && (ans->rr[0].len == 0 || !strcmp(ans->rr[0].data, "."))) {
		settle(e, MX_NULLMX, ans->rr[0].ttl);
		return;
	}
	base_sort(ans->rr, ans->n, sizeof *ans->rr, by_pref);
	size_t n = ans->n < MX_TARGETS_MAX ? ans->n : MX_TARGETS_MAX;
	e->targets = base_xcalloc(n, sizeof *e->targets);
	for (size_t i = 0; i < ans->n && e->ntargets < n; i++) {
		if (ans->rr[i].ttl < e->ttl) e->ttl = ans->rr[i].ttl;
		if (ans->rr[i].len && strcmp(ans->rr[i].data, ".")) {
			e->targets[e->ntargets].pref = ans->rr[i].pref;
			e->targets[e->ntargets++].name = base_xstrdup(ans->rr[i].data);
		}
	}
	if (!e->ntargets) {
		settle(e, MX_TEMPFAIL, 60);
		return;
	}
	resolve_targets(e);
}

static void entry_free(struct mxroute *e)
{
	for (size_t i = 0; i < e->ntargets; i++) {
		free(e->targets[i].name);
		free(e->targets[i].canon);
		relay_dane_unref(e->targets[i].dane);
	}
	free(e->targets);
	free(e->queries);
	free(e->site);
	free(e->domain);
	free(e);
}

/* The cache entry of (kind, name, port), started when missing or expired. */
static struct mxroute *entry_get(struct relay_ctx *x, int kind, const char *name, uint16_t port)
{
	const struct mxkey k = {kind, port, name};
	uint64_t h = mxkey_hash(&k);
	struct mxroute *e = base_hmap_find(&x->mx, h, mxkey_match, &k);
	if (e && e->state != MX_RESOLVING && e->expires <= base_now()) {
		base_hmap_del(&x->mx, h, e);
		entry_free(e);
		e = NULL;
	}
	if (e) return e;
	e = base_xcalloc(1, sizeof *e);
	e->x = x;
	e->domain = base_xstrdup(name);
	e->kind = kind;
	e->port = port;
	e->state = MX_RESOLVING;
	base_hmap_put(&x->mx, h, e);
	if (kind == KIND_HOST) {
		/* a host the configuration names: DANE applies when its address
		 * answers are secure and it has TLSA records (RFC 7672 2.2.3) */
		e->secure = x->cfg->dane;
		e->ttl = 3600;
		e->targets = base_xcalloc(1, sizeof *e->targets);
		e->targets[0].name = base_xstrdup(name);
		e->ntargets = 1;
		resolve_targets(e);
		return e;
	}
	struct base_err err;
	if (dns_resolver_submit(x->resolver, name, DNS_T_MX, on_mx, e, &err) < 0)
		settle(e, MX_NOTFOUND, 300);
	else
		arm(x);
	return e;
}

int relay_mx_route(struct relay_ctx *x, const char *domain, const char **site,
                   const struct relay_hops **hops, int *code, const char **reply)
{
	if (!x->resolver) {
		*code = 451;
		*reply = "451 4.4.0 no route to the domain";
		return -1;
	}
	struct mxroute *e = entry_get(x, KIND_MX, domain, x->cfg->smtp_port);
	switch (e->state) {
	case MX_READY:
		*site = e->site;
		*hops = &e->hops;
		return 1;
	case MX_NULLMX:
		*code = 556;
		*reply = "556 5.1.10 the domain accepts no mail (null MX)";
		return -1;
	case MX_NOTFOUND:
		*code = 550;
		*reply = "550 5.1.2 the domain does not exist";
		return -1;
	case MX_TEMPFAIL:
		*code = 451;
		*reply = "451 4.4.3 MX lookup failed";
		return -1;
	default:
		return 0;
	}
}

int relay_host_route(struct relay_ctx *x, const char *host, uint16_t port,
                     const struct relay_hops **hops, int *code, const char **reply)
{
	if (!x->resolver) {
		/* refused at start (relay_routes_check); kept for safety */
		*code = 451;
		*reply = "451 4.4.0 no resolver for the route's host name";
		return -1;
	}
	struct mxroute *e = entry_get(x, KIND_HOST, host, port);
	switch (e->state) {
	case MX_READY:
		*hops = &e->hops;
		return 1;
	case MX_RESOLVING:
		return 0;
	case MX_NOTFOUND:
		/* the configuration is the thing to fix: deferred, never bounced */
		*code = 451;
		*reply = "451 4.4.4 the route's next hop host does not exist";
		return -1;
	default:
		*code = 451;
		*reply = "451 4.4.3 lookup of the route's next hop host failed";
		return -1;
	}
}

int relay_route_host_parse(const char *hp, char *name, size_t n, uint16_t *port)
{
	const char *colon = strrchr(hp, ':');
	size_t len = colon ? (size_t)(colon - hp) : strlen(hp);
	if (len == 0 || len > 253 || len >= n) return 0;
	unsigned long p = 25;
	if (colon) {
		char *end;
		if (!colon[1] || colon[1] == '-' || colon[1] == '+') return 0;
		p = strtoul(colon + 1, &end, 10);
		if (*end || p == 0 || p > 65535) return 0;
	}
	size_t label = 0;
	int alpha = 0; /* the label has a non-digit: a last label must (not an address) */
	for (size_t i = 0; i < len; i++) {
		char ch = hp[i];
		if (ch == '.') {
			if (!label || hp[i - 1] == '-') return 0;
			label = 0;
			alpha = 0;
		} else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		           (ch >= '0' && ch <= '9') || (ch == '-' && label)) {
			if (++label > 63) return 0;
			alpha |= ch < '0' || ch > '9';
		} else {
			return 0;
		}
		name[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
	}
	if (!label || !alpha || hp[len - 1] == '-') return 0;
	name[len] = 0;
	*port = (uint16_t)p;
	return 1;
}

int relay_routes_check(const struct relay_config *c, struct base_err *err)
{
	for (size_t i = 0; i < c->nroutes; i++)
		if (c->routes[i].name && !c->resolver)
			return base_errf(err,
			                 "route %s=%s:%u: a host name as next hop needs --resolver "
			                 "(or give an IP address)",
			                 c->routes[i].domain, c->routes[i].host, c->routes[i].port);
	return 0;
}

/* ---- dead addresses ------------------------------------------------------- */

#define DEAD_MAX 256

struct relay_dead {
	struct base_sockaddr a;
	int64_t until;     /* refused or timed out: skipped by every connection */
	int64_t tls_until; /* no TLS there: skipped by connections that need it */
};

static int64_t latest(const struct relay_dead *d)
{
	return d->until > d->tls_until ? d->until : d->tls_until;
}

static int same_addr(const struct base_sockaddr *a, const struct base_sockaddr *b)
{
	if (a->family != b->family || a->port != b->port) return 0;
	return a->family == AF_INET ? !memcmp(a->a.v4, b->a.v4, 4) : !memcmp(a->a.v6, b->a.v6, 16);
}

/* The entry of a, or the least recent one, reset for a. */
static struct relay_dead *dead_slot(struct relay_ctx *x, const struct base_sockaddr *a)
{
	struct relay_dead *slot = NULL;
	for (size_t i = 0; i < DEAD_MAX; i++) {
		struct relay_dead *d = &x->dead[i];
		if (latest(d) && same_addr(&d->a, a)) return d;
		if (!slot || latest(d) < latest(slot)) slot = d;
	}
	memset(slot, 0, sizeof *slot);
	slot->a = *a;
	return slot;
}

void relay_addr_dead(struct relay_ctx *x, const struct base_sockaddr *a)
{
	if (!x->dead) return;
	dead_slot(x, a)->until = base_now() + x->cfg->dead_time;
}

void relay_addr_tls_failed(struct relay_ctx *x, const struct base_sockaddr *a)
{
	if (!x->dead) return;
	dead_slot(x, a)->tls_until = base_now() + x->cfg->dead_time;
}

int relay_addr_tls_bad(struct relay_ctx *x, const struct base_sockaddr *a)
{
	if (!x->dead) return 0;
	int64_t now = base_now();
	for (size_t i = 0; i < DEAD_MAX; i++)
		if (x->dead[i].tls_until > now && same_addr(&x->dead[i].a, a)) return 1;
	return 0;
}

int relay_addr_is_dead(struct relay_ctx *x, const struct base_sockaddr *a)
{
	if (!x->dead) return 0;
	int64_t now = base_now();
	for (size_t i = 0; i < DEAD_MAX; i++)
		if (x->dead[i].until > now && same_addr(&x->dead[i].a, a)) return 1;
	return 0;
}

int relay_mx_start(struct relay_ctx *x, const char *server, struct base_err *err)
{
	x->dead = base_xcalloc(DEAD_MAX, sizeof *x->dead);
	if (!server) return 0;
	struct dns_resolver_config rc = {.server = server};
	if (dns_resolver_new(&x->resolver, &rc, err) < 0) return -1;
	dns_resolver_set_dnssec(x->resolver, x->cfg->dane);
	x->dns_ev = evtimer_new(x->base, poll_dns, x);
	return relay_mtasts_start(x, err);
}

void relay_mx_stop(struct relay_ctx *x)
{
	/* first the resolver: destroying it runs the pending callbacks, which
	 * see x->stopping and leave the entries alone */
	if (x->dns_ev) event_free(x->dns_ev);
	if (x->resolver) dns_resolver_free(x->resolver);
	x->dns_ev = NULL;
	x->resolver = NULL;
	relay_mtasts_stop(x);
	for (size_t i = 0; i < x->mx.cap; i++)
		if (x->mx.s[i].p) entry_free(x->mx.s[i].p);
	base_hmap_free(&x->mx);
	free(x->dead);
	x->dead = NULL;
}
