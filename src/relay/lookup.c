/*
 * lookup.c — MX routing for recipients without a static route: the MX
 * records of the domain through the shared DNS client (dns/, c-ares, the
 * resolver given with --resolver), the best-preference host's address,
 * and a per-domain cache of the result.
 *
 * Each domain has one entry that goes RESOLVING → READY (an address),
 * NULLMX (RFC 7505: bounce at once), NOTFOUND (the domain does not exist:
 * bounce) or TEMPFAIL (retry later). MX targets are tried in preference
 * order until one has an A record; a domain without MX records falls back
 * to its own A record (RFC 5321 5.1). Entries expire with the records' TTL
 * (at most an hour; a failure after a minute). Queries are driven from the
 * relay's event loop by a short timer while any is pending.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "dns/dns.h"
#include "relay/int.h"

enum { MX_RESOLVING, MX_READY, MX_NULLMX, MX_NOTFOUND, MX_TEMPFAIL };

struct mxroute {
	struct relay_ctx *x;
	char *domain;
	int state;
	char host[64];
	int64_t expires;
	char **targets; /* by preference */
	size_t ntargets, next_target;
	uint32_t ttl;
	struct mxroute *next;
};

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

static void settle(struct mxroute *e, int state, uint32_t ttl)
{
	e->state = state;
	if (ttl > 3600) ttl = 3600;
	if (state == MX_TEMPFAIL || ttl < 60) ttl = 60;
	e->expires = base_now() + ttl;
	relay_kick(e->x);
}

static void on_a(void *arg, const char *name, uint16_t type, struct dns_answer *ans);

static void next_target(struct mxroute *e)
{
	struct base_err err;
	while (e->next_target < e->ntargets) {
		const char *t = e->targets[e->next_target++];
		if (dns_resolver_submit(e->x->resolver, t, DNS_T_A, on_a, e, &err) == 0) {
			arm(e->x);
			return;
		}
	}
	settle(e, MX_TEMPFAIL, 60);
}

static void on_a(void *arg, const char *name, uint16_t type, struct dns_answer *ans)
{
	struct mxroute *e = arg;
	if (ans->status == DNS_LOOKUP_OK && ans->rr[0].len == 4) {
		inet_ntop(AF_INET, ans->rr[0].data, e->host, sizeof e->host);
		settle(e, MX_READY, ans->rr[0].ttl < e->ttl ? ans->rr[0].ttl : e->ttl);
		return;
	}
	if (e->ntargets == 1 && !strcmp(e->targets[0], e->domain) &&
	    ans->status == DNS_LOOKUP_NXDOMAIN) {
		settle(e, MX_NOTFOUND, 300);
		return;
	}
	next_target(e);
}

static int by_pref(const void *a, const void *b)
{
	const struct dns_record *x = a, *y = b;
	return x->pref < y->pref ? -1 : x->pref > y->pref;
}

static void on_mx(void *arg, const char *name, uint16_t type, struct dns_answer *ans)
{
	struct mxroute *e = arg;
	e->ttl = 3600;
	if (ans->status == DNS_LOOKUP_NXDOMAIN) {
		settle(e, MX_NOTFOUND, 300);
		return;
	}
	if (ans->status == DNS_LOOKUP_NODATA) {
		/* no MX: the domain's own address is the implicit MX */
		e->targets = base_xcalloc(1, sizeof *e->targets);
		e->targets[0] = base_xstrdup(e->domain);
		e->ntargets = 1;
		next_target(e);
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
	e->targets = base_xcalloc(ans->n, sizeof *e->targets);
	for (size_t i = 0; i < ans->n; i++) {
		if (ans->rr[i].ttl < e->ttl) e->ttl = ans->rr[i].ttl;
		if (ans->rr[i].len && strcmp(ans->rr[i].data, "."))
			e->targets[e->ntargets++] = base_xstrdup(ans->rr[i].data);
	}
	next_target(e);
}

static void entry_free(struct mxroute *e)
{
	for (size_t i = 0; i < e->ntargets; i++) free(e->targets[i]);
	free(e->targets);
	free(e->domain);
	free(e);
}

int relay_mx_route(struct relay_ctx *x, const char *domain, const char **host, int *code,
                   const char **reply)
{
	if (!x->resolver) {
		*code = 451;
		*reply = "451 4.4.0 no route to the domain";
		return -1;
	}
	struct mxroute **pp = &x->mx, *e;
	int64_t now = base_now();
	for (; (e = *pp); pp = &e->next) {
		if (base_strcasecmp_ascii(e->domain, domain)) continue;
		if (e->state != MX_RESOLVING && e->expires <= now) {
			*pp = e->next;
			entry_free(e);
			e = NULL;
		}
		break;
	}
	if (!e) {
		e = base_xcalloc(1, sizeof *e);
		e->x = x;
		e->domain = base_xstrdup(domain);
		e->state = MX_RESOLVING;
		e->next = x->mx;
		x->mx = e;
		struct base_err err;
		if (dns_resolver_submit(x->resolver, domain, DNS_T_MX, on_mx, e, &err) < 0)
			settle(e, MX_NOTFOUND, 300);
		else
			arm(x);
	}
	switch (e->state) {
	case MX_READY:
		*host = e->host;
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

int relay_mx_start(struct relay_ctx *x, const char *server, struct base_err *err)
{
	if (!server) return 0;
	struct dns_resolver_config rc = {.server = server};
	if (dns_resolver_new(&x->resolver, &rc, err) < 0) return -1;
	x->dns_ev = evtimer_new(x->base, poll_dns, x);
	return 0;
}

void relay_mx_stop(struct relay_ctx *x)
{
	while (x->mx) {
		struct mxroute *e = x->mx;
		x->mx = e->next;
		entry_free(e);
	}
	if (x->dns_ev) event_free(x->dns_ev);
	if (x->resolver) dns_resolver_free(x->resolver);
	x->dns_ev = NULL;
	x->resolver = NULL;
}
