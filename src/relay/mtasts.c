/*
 * mtasts.c — MTA-STS (RFC 8461) in the relay's delivery: for a domain
 * delivered by MX, whether it publishes a policy, the policy itself, and
 * what it means for the attempt (see mtasts.h; the parsers are in
 * mtasts_policy.c).
 *
 * Each MX-routed domain asked about gets an entry. Its TXT record
 * `_mta-sts.DOMAIN` is looked up through the relay's resolver (again after
 * its TTL, 60 s to an hour; a missing or invalid record is remembered for
 * NEG_SECONDS, a failed lookup for a minute). A valid record whose id
 * differs from the cached policy's, or with no unexpired policy cached,
 * starts a fetch: the A and AAAA records of mta-sts.DOMAIN through the same
 * resolver, then, on a worker thread, a blocking HTTPS GET of
 * /.well-known/mta-sts.txt (the certificate verified against --tls-ca or
 * the system store for that name, SNI; no redirects; 2xx, text/plain, at
 * most 64 KB; --mta-sts-timeout for connect, handshake and read together,
 * over every address). The worker also writes the policy, atomically, to
 * SPOOL/mta-sts/DOMAIN, which is read back at start, so a restart keeps
 * the cache (the files of expired policies are removed: GC_SECONDS). A
 * failed fetch is logged with its reason (a policy's error names its
 * line) and not retried for the same id before NEG_SECONDS.
 *
 * The policy in force is the cached one until max_age after its fetch,
 * whatever the DNS says meanwhile (§3.3: a cached unexpired policy applies
 * when no live one can be had). A policy in force for a domain being
 * mailed, whose TXT id is unchanged, is refreshed in the background once
 * half its max_age (at most a day) has passed since its fetch: mail goes
 * on under it meanwhile, and a failed refresh leaves it in force until
 * max_age (§5.1), tried again after NEG_SECONDS. Mail to the domain waits (relay_mtasts_route
 * returns 0) for the first TXT answer since the start, and while a
 * fetch runs (a new id announces a new policy: the old one could defer
 * mail the new one allows); a domain without a record costs one TXT
 * query, and then nothing for NEG_SECONDS.
 *
 * Invariants: an entry has at most one TXT query (txt_busy) and one fetch
 * (fetching: the address queries, then the work item) at a time; DNS
 * callbacks and a work item point at their entry, which the sweep frees
 * only with nothing in flight, and relay_mtasts_stop only after the worker
 * pool and the resolver are gone, so every callback and done() finds it.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include "dns/dns.h"
#include "relay/https.h"
#include "relay/int.h"
#include "relay/mtasts.h"
#include "relay/tlsrpt.h"
#include "relay/tls.h"

#define NEG_SECONDS   300   /* no record, an invalid one, a failed fetch */
#define REFRESH_MAX   86400 /* a policy in use is refreshed at least daily */
#define FETCH_ADDRS   8
#define FETCH_THREADS 2

struct sts_entry {
	struct relay_mtasts *s;
	char domain[256];
	int known;    /* a TXT answer came since the start (or none could be asked) */
	int txt_busy; /* a TXT query is in flight */
	int64_t txt_next;
	int txt_valid;
	char txt_id[MTASTS_ID_MAX + 1];
	int fetching; /* address queries or the fetch are in flight */
	int refresh;  /* ...to refresh the policy in force (its id unchanged) */
	unsigned addr_pending;
	struct base_sockaddr addrs[FETCH_ADDRS];
	size_t naddrs;
	char fetch_id[MTASTS_ID_MAX + 1];  /* the id being fetched */
	char failed_id[MTASTS_ID_MAX + 1]; /* the id whose fetch failed last */
	int64_t fetch_next;                /* no new fetch for failed_id before */
	struct mtasts_policy *pol;         /* NULL: none cached */
	char pol_id[MTASTS_ID_MAX + 1];
	int64_t pol_fetched;
	int64_t pol_expires;
	/* the MX hosts an enforce policy leaves (relay_mtasts_route); NULL
	 * until needed */
	struct relay_hops *hops;
	char *site;
	char reply[512];
	struct sts_entry *next;
};

/* Entries by domain: a chained hash table. An entry that has no policy and
 * nothing in flight, and whose TXT record is an hour overdue (its domain is
 * no longer mailed), is freed by the sweep that runs at most once every
 * SWEEP_SECONDS when an entry is added. */
#define BUCKETS       4096
#define SWEEP_SECONDS 60

/* The cache files on disk: a file whose policy expired and that no entry
 * holds in force nor is fetching again is removed, at start and by a pass
 * every GC_SECONDS that reads at most GC_SLICE directory entries a second
 * (a domain no longer mailed leaves no file behind, and a large directory
 * does not hold the loop). */
#define GC_SECONDS 3600
#define GC_SLICE   128

struct relay_mtasts {
	struct relay_ctx *x;
	struct sts_entry *buckets[BUCKETS];
	size_t n;
	int64_t swept;
	struct relay_workers *workers;
	char *dir; /* SPOOL/mta-sts; NULL: memory only */
	struct event *second;
	DIR *gc;         /* the pass under way; NULL: none */
	size_t gc_count; /* files removed by it */
	int64_t gc_next; /* the next pass */
	atomic_int stop;
};

struct sts_fetch {
	struct relay_work work;
	struct sts_entry *e;
	struct relay_mtasts *s;
	SSL_CTX *ctx;
	char host[300]; /* mta-sts.DOMAIN */
	char id[MTASTS_ID_MAX + 1];
	struct base_sockaddr addrs[FETCH_ADDRS];
	size_t naddrs;
	uint16_t port;
	uint32_t timeout;
	char *path; /* the cache file; NULL: none */
	/* the result */
	int ok;
	struct mtasts_policy *pol;
	int64_t fetched;
	char why[BASE_ERR_MAX + 16];
};

static void kick(struct relay_mtasts *s)
{
	relay_kick(s->x);
}

/* The policy in force for e (mode none included), NULL when none. */
static const struct mtasts_policy *active(struct sts_entry *e, int64_t now)
{
	if (e->pol && e->pol_expires <= now) {
		base_info("mta-sts %s: cached policy (id %s) expired", e->domain, e->pol_id);
		free(e->pol);
		e->pol = NULL;
	}
	return e->pol;
}

static size_t bucket(const char *domain)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (const char *p = domain; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
	return h % BUCKETS;
}

static struct sts_entry *entry_find(struct relay_mtasts *s, const char *domain)
{
	for (struct sts_entry *e = s->buckets[bucket(domain)]; e; e = e->next)
		if (!strcmp(e->domain, domain)) return e;
	return NULL;
}

static void entry_free(struct sts_entry *e)
{
	free(e->pol);
	free(e->hops);
	free(e->site);
	free(e);
}

static void sweep(struct relay_mtasts *s, int64_t now)
{
	if (now - s->swept < SWEEP_SECONDS) return;
	s->swept = now;
	for (size_t i = 0; i < BUCKETS; i++) {
		struct sts_entry **pp = &s->buckets[i], *e;
		while ((e = *pp)) {
			if (!e->pol && !e->txt_busy && !e->fetching && e->txt_next + 3600 < now) {
				*pp = e->next;
				entry_free(e);
				s->n--;
			} else {
				pp = &e->next;
			}
		}
	}
}

static struct sts_entry *entry_new(struct relay_mtasts *s, const char *domain)
{
	sweep(s, base_now());
	struct sts_entry *e = base_xcalloc(1, sizeof *e);
	e->s = s;
	snprintf(e->domain, sizeof e->domain, "%s", domain);
	size_t b = bucket(e->domain);
	e->next = s->buckets[b];
	s->buckets[b] = e;
	s->n++;
	return e;
}

/* The recipient domain in lower case; 0 when it cannot have a policy file
 * name (not LDH): such a domain is treated as having no policy. */
static int lower_domain(const char *domain, char out[256])
{
	size_t n = strlen(domain);
	if (n >= 256) return 0;
	for (size_t i = 0; i <= n; i++) out[i] = base_lower(domain[i]);
	return mtasts_domain_ok(out);
}

/* ---- the fetch, on a worker thread --------------------------------------- */

/* One address: the whole response in resp, or -1 with why. */
static int fetch_from(struct sts_fetch *f, const struct base_sockaddr *a, uint64_t deadline,
                      struct base_buf *resp, char *why, size_t n)
{
	struct relay_https h = {.ctx = f->ctx,
	                        .host = f->host,
	                        .port = f->port,
	                        .stop = &f->s->stop,
	                        .deadline = deadline,
	                        .max = MTASTS_RESPONSE_MAX};
	char req[512];
	int rl = snprintf(req, sizeof req,
	                  "GET /.well-known/mta-sts.txt HTTP/1.0\r\nHost: %s\r\n"
	                  "User-Agent: mailrep\r\nConnection: close\r\n\r\n",
	                  f->host);
	return relay_https_exchange(&h, a, req, (size_t)rl, resp, why, n);
}

static void fetch_run(struct relay_work *w)
{
	struct sts_fetch *f = (struct sts_fetch *)w;
	uint64_t deadline = base_mono_ns() + (uint64_t)f->timeout * 1000000000ull;
	struct base_buf resp;
	base_buf_init(&resp);
	char why[400] = "no address";
	int got = -1;
	for (size_t i = 0; i < f->naddrs && got < 0; i++) {
		resp.len = 0;
		got = fetch_from(f, &f->addrs[i], deadline, &resp, why, sizeof why);
	}
	struct base_err err;
	const char *body;
	size_t blen;
	if (got < 0) {
		snprintf(f->why, sizeof f->why, "%s", why);
	} else if (mtasts_http_parse(resp.data, resp.len, &body, &blen, &err) < 0) {
		snprintf(f->why, sizeof f->why, "%s", err.msg);
	} else {
		f->pol = base_xmalloc(sizeof *f->pol);
		if (mtasts_policy_parse(body, blen, f->pol, &err) < 0) {
			snprintf(f->why, sizeof f->why, "policy: %s", err.msg);
			free(f->pol);
			f->pol = NULL;
		} else {
			f->ok = 1;
			f->fetched = base_now();
			if (f->path) {
				struct base_buf file;
				base_buf_init(&file);
				mtasts_cache_format(&file, f->id, f->fetched, body, blen);
				if (base_write_file_atomic(f->path, file.data, file.len, &err) < 0)
					base_warn("mta-sts: %s", err.msg);
				base_buf_free(&file);
			}
		}
	}
	base_buf_free(&resp);
}

static void fetch_done(struct relay_work *w)
{
	struct sts_fetch *f = (struct sts_fetch *)w;
	struct sts_entry *e = f->e;
	e->fetching = 0;
	int refresh = e->refresh;
	e->refresh = 0;
	if (w->ran && !f->s->x->stopping) {
		int64_t now = base_now();
		if (f->ok) {
			static const char *const modes[] = {"none", "testing", "enforce"};
			free(e->pol);
			e->pol = f->pol;
			f->pol = NULL;
			snprintf(e->pol_id, sizeof e->pol_id, "%s", f->id);
			e->pol_fetched = f->fetched;
			e->pol_expires = f->fetched + e->pol->max_age;
			e->failed_id[0] = 0;
			base_info(
			    "mta-sts %s: policy id %s%s, mode %s, max_age %u, %zu mx pattern(s)",
			    e->domain, e->pol_id, refresh ? " refreshed" : "", modes[e->pol->mode],
			    e->pol->max_age, e->pol->nmx);
		} else {
			snprintf(e->failed_id, sizeof e->failed_id, "%s", f->id);
			e->fetch_next = now + NEG_SECONDS;
			/* for TLS reports (RFC 8460 4.3.2.2) */
			relay_tlsrpt_note(
			    f->s->x, e->domain, NULL,
			    !strncmp(f->why, "policy: ", 8)              ? TLSRPT_STS_POLICY_INVALID
			    : strstr(f->why, "certificate not accepted") ? TLSRPT_STS_WEBPKI_INVALID
			                                                 : TLSRPT_STS_FETCH_ERROR,
			    NULL, NULL, NULL);
			if (active(e, now))
				base_warn("mta-sts %s: fetching https://%s/.well-known/mta-sts.txt "
				          "failed: %s; the cached policy (id %s) stays in force",
				          e->domain, f->host, f->why, e->pol_id);
			else
				base_warn("mta-sts %s: fetching https://%s/.well-known/mta-sts.txt "
				          "failed: %s; no policy",
				          e->domain, f->host, f->why);
		}
		kick(f->s);
	}
	free(f->pol);
	free(f->path);
	free(f);
}

static void fetch_submit(struct sts_entry *e)
{
	struct relay_mtasts *s = e->s;
	const struct relay_config *c = s->x->cfg;
	struct sts_fetch *f = base_xcalloc(1, sizeof *f);
	f->work.run = fetch_run;
	f->work.done = fetch_done;
	f->e = e;
	f->s = s;
	f->ctx = s->x->tls->verify;
	snprintf(f->host, sizeof f->host, "mta-sts.%s", e->domain);
	snprintf(f->id, sizeof f->id, "%s", e->fetch_id);
	memcpy(f->addrs, e->addrs, sizeof f->addrs);
	f->naddrs = e->naddrs;
	f->port = c->mta_sts_port ? c->mta_sts_port : 443;
	f->timeout = c->mta_sts_timeout ? c->mta_sts_timeout : 60;
	if (s->dir) {
		size_t n = strlen(s->dir) + strlen(e->domain) + 2;
		f->path = base_xmalloc(n);
		snprintf(f->path, n, "%s/%s", s->dir, e->domain);
	}
	relay_workers_submit(s->workers, &f->work);
}

/* ---- discovery, on the loop ---------------------------------------------- */

static void addr_settled(struct sts_entry *e);

static void on_addr(void *arg, const char *name, uint16_t type, struct dns_answer *ans)
{
	struct sts_entry *e = arg;
	if (e->s->x->stopping) return;
	for (size_t i = 0; ans->status == DNS_LOOKUP_OK && i < ans->n; i++) {
		struct dns_record *r = &ans->rr[i];
		if (e->naddrs == FETCH_ADDRS) break;
		struct base_sockaddr *a = &e->addrs[e->naddrs];
		memset(a, 0, sizeof *a);
		if (type == DNS_T_A && r->len == 4) {
			a->family = AF_INET;
			memcpy(a->a.v4, r->data, 4);
			e->naddrs++;
		} else if (type == DNS_T_AAAA && r->len == 16) {
			a->family = AF_INET6;
			memcpy(a->a.v6, r->data, 16);
			e->naddrs++;
		}
	}
	addr_settled(e);
}

/* One address query answered (or the submitting hold dropped): with the
 * last, the fetch, or a failure without an address. */
static void addr_settled(struct sts_entry *e)
{
	if (--e->addr_pending) return;
	if (e->naddrs) {
		fetch_submit(e);
		return;
	}
	e->fetching = 0;
	e->refresh = 0;
	snprintf(e->failed_id, sizeof e->failed_id, "%s", e->fetch_id);
	e->fetch_next = base_now() + NEG_SECONDS;
	base_warn("mta-sts %s: mta-sts.%s has no address; %s", e->domain, e->domain,
	          active(e, base_now()) ? "the cached policy stays in force" : "no policy");
	kick(e->s);
}

static void fetch_start(struct sts_entry *e, int refresh)
{
	struct relay_ctx *x = e->s->x;
	char name[300];
	snprintf(name, sizeof name, "mta-sts.%s", e->domain);
	e->fetching = 1;
	e->refresh = refresh;
	memcpy(e->fetch_id, e->txt_id, sizeof e->fetch_id);
	e->naddrs = 0;
	e->addr_pending = 1; /* held while submitting */
	static const uint16_t types[2] = {DNS_T_A, DNS_T_AAAA};
	struct base_err err;
	for (int k = 0; k < 2; k++) {
		e->addr_pending++;
		if (dns_resolver_submit(x->resolver, name, types[k], on_addr, e, &err) < 0)
			e->addr_pending--;
	}
	relay_lookup_arm(x);
	addr_settled(e); /* drops the hold */
}

/* When a policy in force is refreshed: half its max_age after its fetch,
 * or a day, whichever comes first (§10.2: a policy refreshed while the
 * domain is mailed does not lapse, and a change reaches the cache before
 * max_age). */
static int64_t refresh_due(const struct sts_entry *e)
{
	uint32_t half = e->pol->max_age / 2;
	return e->pol_fetched + (half < REFRESH_MAX ? half : REFRESH_MAX);
}

/* Starts a fetch when the last TXT record was valid and its policy is not
 * the one in force (a new id, or the cached policy expired), or is but
 * its refresh is due, unless a fetch of that id failed less than
 * NEG_SECONDS ago. A refresh runs in the background: the policy in force
 * stays so (mail does not wait) until the new one replaces it or max_age
 * ends it. */
static void maybe_fetch(struct sts_entry *e, int64_t now)
{
	if (!e->txt_valid || e->fetching) return;
	const struct mtasts_policy *p = active(e, now);
	int current = p && !strcmp(e->pol_id, e->txt_id);
	int held = e->fetch_next > now && !strcmp(e->failed_id, e->txt_id);
	if (held || (current && now < refresh_due(e))) return;
	if (current)
		base_info("mta-sts %s: policy id %s expires in %llds: refreshing", e->domain,
		          e->pol_id, (long long)(e->pol_expires - now));
	else if (p)
		base_info("mta-sts %s: TXT id %s, cached policy id %s: fetching", e->domain,
		          e->txt_id, e->pol_id);
	fetch_start(e, current);
}

static void on_txt(void *arg, const char *name, uint16_t type, struct dns_answer *ans)
{
	struct sts_entry *e = arg;
	if (e->s->x->stopping) return;
	int64_t now = base_now();
	e->txt_busy = 0;
	e->known = 1;
	e->txt_valid = 0;
	if (ans->status != DNS_LOOKUP_OK && ans->status != DNS_LOOKUP_NODATA &&
	    ans->status != DNS_LOOKUP_NXDOMAIN) {
		e->txt_next = now + 60;
		kick(e->s);
		return;
	}
	/* §3.1: records not starting with v=STSv1 are discarded; exactly one
	 * valid record must be left */
	unsigned cand = 0, bad = 0;
	uint32_t ttl = 3600;
	char id[MTASTS_ID_MAX + 1] = "";
	struct base_err err = {""};
	for (size_t i = 0; ans->status == DNS_LOOKUP_OK && i < ans->n; i++) {
		char one[MTASTS_ID_MAX + 1];
		struct base_err e1;
		int r = mtasts_txt_parse(ans->rr[i].data, ans->rr[i].len, one, &e1);
		if (r == 0) continue;
		cand++;
		if (ans->rr[i].ttl < ttl) ttl = ans->rr[i].ttl;
		if (r < 0) {
			bad++;
			err = e1;
		} else {
			memcpy(id, one, sizeof id);
		}
	}
	if (cand == 1 && !bad) {
		e->txt_valid = 1;
		memcpy(e->txt_id, id, sizeof id);
		if (ttl < 60) ttl = 60;
		e->txt_next = now + ttl;
	} else {
		if (cand > 1)
			base_warn("mta-sts %s: %u STSv1 TXT records at _mta-sts.%s: no policy",
			          e->domain, cand, e->domain);
		else if (bad)
			base_warn("mta-sts %s: TXT record at _mta-sts.%s: %s: no policy", e->domain,
			          e->domain, err.msg);
		e->txt_next = now + NEG_SECONDS;
	}
	maybe_fetch(e, now);
	kick(e->s);
}

static void txt_start(struct sts_entry *e)
{
	struct relay_ctx *x = e->s->x;
	char name[300];
	snprintf(name, sizeof name, "_mta-sts.%s", e->domain);
	struct base_err err;
	e->txt_busy = 1;
	if (dns_resolver_submit(x->resolver, name, DNS_T_TXT, on_txt, e, &err) < 0) {
		e->txt_busy = 0;
		e->known = 1;
		e->txt_next = base_now() + 60;
		return;
	}
	relay_lookup_arm(x);
}

/* The entry of domain (lower case), its TXT record asked for when due;
 * NULL when MTA-STS is off or the domain cannot have a policy. */
static struct sts_entry *entry_for(struct relay_ctx *x, const char *domain, int create)
{
	struct relay_mtasts *s = x->mtasts;
	char dom[256];
	if (!s || !x->resolver || !lower_domain(domain, dom)) return NULL;
	struct sts_entry *e = entry_find(s, dom);
	if (!e && !create) return NULL;
	if (!e) e = entry_new(s, dom);
	if (create && !e->txt_busy && base_now() >= e->txt_next) txt_start(e);
	return e;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int relay_mtasts_route(struct relay_ctx *x, const char *domain, const char **site,
                       const struct relay_hops **hops, int *code, const char **reply)
{
	if (!relay_mtasts_applies(x->cfg, domain)) return 1;
	struct sts_entry *e = entry_for(x, domain, 1);
	if (!e) return 1;
	int64_t now = base_now();
	maybe_fetch(e, now); /* the cached policy may just have expired */
	const struct mtasts_policy *p = active(e, now);
	/* wait for the first TXT answer (a policy cached on disk may be
	 * outdated), for a new policy on its way (the fetch is bounded by its
	 * timeout; a failure leaves the cached one in force), but not for a
	 * refresh of the policy in force, and for the TXT record of a domain
	 * that had one but has no policy in force */
	int refreshing = e->refresh && p && !strcmp(e->txt_id, e->fetch_id);
	if ((e->fetching && !refreshing) || !e->known || (e->txt_busy && !p && e->txt_valid))
		return 0;
	if (!p || p->mode != MTASTS_ENFORCE) return 1;
	const struct relay_hops *h = *hops;
	if (!e->hops) e->hops = base_xmalloc(sizeof *e->hops);
	struct relay_hops *f = e->hops;
	f->n = 0;
	for (size_t i = 0; i < h->n; i++) {
		if (!h->names[i] || !mtasts_mx_match(p, h->names[i])) continue;
		f->addrs[f->n] = h->addrs[i];
		f->names[f->n] = h->names[i];
		f->dane[f->n] = h->dane[i]; /* NULL: DANE comes first where it applies */
		f->prefs[f->n++] = h->prefs[i];
	}
	if (f->n == h->n) return 1;
	if (!f->n) {
		char r[sizeof e->reply];
		snprintf(r, sizeof r,
		         "451 4.7.5 MTA-STS policy of %s (id %s, enforce): no MX host matches (%s)",
		         e->domain, e->pol_id, *site);
		if (strcmp(r, e->reply)) base_warn("%s: %s", e->domain, r + 10);
		memcpy(e->reply, r, sizeof r);
		*code = 451;
		*reply = e->reply;
		return -1;
	}
	/* the site is the MX hosts left: a destination of its own */
	const char *names[DEST_ADDRS_MAX];
	size_t len = 1;
	for (size_t i = 0; i < f->n; i++) {
		names[i] = f->names[i];
		len += strlen(names[i]) + 1;
	}
	base_sort(names, f->n, sizeof *names, by_name);
	free(e->site);
	e->site = base_xmalloc(len);
	e->site[0] = 0;
	for (size_t i = 0; i < f->n; i++) {
		if (i && !strcmp(names[i], names[i - 1])) continue;
		if (i) strcat(e->site, ",");
		strcat(e->site, names[i]);
	}
	*site = e->site;
	*hops = f;
	return 1;
}

int relay_mtasts_tls(struct relay_ctx *x, const char *domain)
{
	if (!x->mtasts || !relay_mtasts_applies(x->cfg, domain)) return 0;
	struct sts_entry *e = entry_for(x, domain, 0);
	const struct mtasts_policy *p = e ? active(e, base_now()) : NULL;
	if (!p) return 0;
	return p->mode == MTASTS_ENFORCE ? 1 : p->mode == MTASTS_TESTING ? 2 : 0;
}

const struct mtasts_policy *relay_mtasts_policy(struct relay_ctx *x, const char *domain)
{
	if (!x->mtasts || !relay_mtasts_applies(x->cfg, domain)) return NULL;
	struct sts_entry *e = entry_for(x, domain, 0);
	return e ? active(e, base_now()) : NULL;
}

const char *relay_mtasts_acct(struct relay_ctx *x, const char *domain, const char *mx, int tls,
                              int verified)
{
	int m = relay_mtasts_tls(x, domain);
	if (m == 1) return "enforce";
	if (m != 2) return NULL;
	struct sts_entry *e = entry_for(x, domain, 0);
	int ok = mx && tls && verified && mtasts_mx_match(e->pol, mx);
	return ok ? "testing" : "testing-fail";
}

/* ---- start and stop -------------------------------------------------------- */

/* A temporary file of base_write_file_atomic ("DOMAIN.tmp.PID") left by
 * another process (one interrupted during a write): 1. */
static int stale_tmp(const char *name)
{
	const char *t = strstr(name, ".tmp.");
	if (!t) return 0;
	char pid[32];
	snprintf(pid, sizeof pid, "%ld", (long)getpid());
	return strcmp(t + 5, pid) != 0;
}

/* Reads the cache file path into buf (at most MTASTS_BODY_MAX + 256
 * bytes): 0 with its id, fetch time and policy, or -1 with err (cannot be
 * read, or does not parse). */
static int cache_read(const char *path, char *buf, char id[MTASTS_ID_MAX + 1], int64_t *fetched,
                      struct mtasts_policy *p, struct base_err *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) return base_errf(err, "%s", strerror(errno));
	size_t n = 0;
	ssize_t r;
	while (n < MTASTS_BODY_MAX + 256 && (r = read(fd, buf + n, MTASTS_BODY_MAX + 256 - n)) > 0)
		n += (size_t)r;
	close(fd);
	return mtasts_cache_parse(buf, n, id, fetched, p, err);
}

/* Removes path; counts it in *removed. */
static void cache_remove(const char *path, size_t *removed)
{
	if (unlink(path) == 0)
		(*removed)++;
	else if (errno != ENOENT)
		base_warn("mta-sts: %s: cannot remove: %s", path, strerror(errno));
}

/* Reads SPOOL/mta-sts/: every unexpired policy becomes an entry; the
 * files of expired policies, and temporary files left by an interrupted
 * write, are removed. */
static void load_cache(struct relay_mtasts *s)
{
	DIR *d = opendir(s->dir);
	if (!d) return;
	struct dirent *de;
	int64_t now = base_now();
	size_t loaded = 0, removed = 0;
	char *buf = base_xmalloc(MTASTS_BODY_MAX + 256);
	while ((de = readdir(d))) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", s->dir, de->d_name);
		/* domains only: not the temporary files of an interrupted write */
		if (!mtasts_domain_ok(de->d_name) || strstr(de->d_name, ".tmp.")) {
			if (mtasts_domain_ok(de->d_name) && stale_tmp(de->d_name))
				cache_remove(path, &removed);
			continue;
		}
		struct mtasts_policy *p = base_xmalloc(sizeof *p);
		char id[MTASTS_ID_MAX + 1];
		int64_t fetched;
		struct base_err err;
		if (cache_read(path, buf, id, &fetched, p, &err) < 0) {
			base_warn("mta-sts: %s: %s (ignored)", path, err.msg);
			free(p);
			continue;
		}
		if (fetched + p->max_age <= now) {
			free(p);
			cache_remove(path, &removed);
			continue;
		}
		struct sts_entry *e = entry_new(s, de->d_name);
		e->pol = p;
		memcpy(e->pol_id, id, sizeof id);
		e->pol_fetched = fetched;
		e->pol_expires = fetched + p->max_age;
		loaded++;
	}
	free(buf);
	closedir(d);
	if (loaded) base_info("mta-sts: %zu cached policies from %s", loaded, s->dir);
	if (removed) base_info("mta-sts: %zu expired cache files removed from %s", removed, s->dir);
}

/* One slice of the pass over the cache files (see GC_SECONDS). On the
 * loop: an entry fetching has the only writer of its file, so a file
 * judged here cannot be replaced before it is removed. */
static void gc_slice(struct relay_mtasts *s, int64_t now)
{
	char *buf = NULL;
	struct dirent *de = NULL;
	for (int k = 0; k < GC_SLICE && (de = readdir(s->gc)); k++) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", s->dir, de->d_name);
		if (!mtasts_domain_ok(de->d_name)) continue;
		if (strstr(de->d_name, ".tmp.")) {
			if (stale_tmp(de->d_name)) cache_remove(path, &s->gc_count);
			continue;
		}
		struct sts_entry *e = entry_find(s, de->d_name);
		if (e && (e->fetching || active(e, now))) continue; /* in use */
		if (!buf) buf = base_xmalloc(MTASTS_BODY_MAX + 256);
		struct mtasts_policy p;
		char id[MTASTS_ID_MAX + 1];
		int64_t fetched;
		struct base_err err;
		/* a damaged file stays (it was named at start) */
		if (cache_read(path, buf, id, &fetched, &p, &err) == 0 &&
		    fetched + p.max_age <= now)
			cache_remove(path, &s->gc_count);
	}
	free(buf);
	if (de) return;
	closedir(s->gc);
	s->gc = NULL;
	if (s->gc_count)
		base_info("mta-sts: %zu expired cache files removed from %s", s->gc_count, s->dir);
}

static void on_second(evutil_socket_t fd, short what, void *arg)
{
	struct relay_mtasts *s = arg;
	(void)fd;
	(void)what;
	int64_t now = base_now();
	if (!s->gc && now >= s->gc_next) {
		s->gc_next = now + GC_SECONDS;
		s->gc_count = 0;
		if (!(s->gc = opendir(s->dir)))
			base_warn("mta-sts: %s: %s", s->dir, strerror(errno));
	}
	if (s->gc) gc_slice(s, now);
}

int relay_mtasts_start(struct relay_ctx *x, struct base_err *err)
{
	if (!relay_mtasts_any(x->cfg) || !x->resolver) return 0;
	struct relay_mtasts *s = base_xcalloc(1, sizeof *s);
	s->x = x;
	atomic_init(&s->stop, 0);
	s->workers = relay_workers_new(x->base, "mtasts", FETCH_THREADS, err);
	if (!s->workers) {
		free(s);
		return -1;
	}
	size_t n = strlen(x->cfg->spool) + sizeof "/mta-sts";
	s->dir = base_xmalloc(n);
	snprintf(s->dir, n, "%s/mta-sts", x->cfg->spool);
	if (mkdir(s->dir, 0700) < 0 && errno != EEXIST) {
		base_warn("mta-sts: %s: %s; policies are cached in memory only", s->dir,
		          strerror(errno));
		free(s->dir);
		s->dir = NULL;
	} else {
		load_cache(s);
		s->gc_next = base_now() + GC_SECONDS;
		s->second = event_new(x->base, -1, EV_PERSIST, on_second, s);
		struct timeval sec = {1, 0};
		evtimer_add(s->second, &sec);
	}
	x->mtasts = s;
	return 0;
}

void relay_mtasts_stop(struct relay_ctx *x)
{
	struct relay_mtasts *s = x->mtasts;
	if (!s) return;
	if (s->second) event_free(s->second);
	if (s->gc) closedir(s->gc);
	atomic_store(&s->stop, 1);
	relay_workers_free(s->workers); /* fetches end; their done() still sees the entries */
	for (size_t i = 0; i < BUCKETS; i++)
		while (s->buckets[i]) {
			struct sts_entry *e = s->buckets[i];
			s->buckets[i] = e->next;
			entry_free(e);
		}
	free(s->dir);
	free(s);
	x->mtasts = NULL;
}
