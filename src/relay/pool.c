/*
 * pool.c — the configuration of IP pools and shaping: `[pool NAME]`
 * sections (`source = IP ehlo=NAME weight=N`, repeatable), the flag form
 * `--pool NAME=IP[/EHLO][*WEIGHT],...`, `default-pool`, the rate limits and
 * `[domain NAME]` overrides of the shaping keys. Everything here is
 * operator input: each value is bounded and checked, and an error names
 * the pool, domain or key it is about (the INI reader adds file:line).
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "relay/relay.h"

static int name_ok(const char *s, size_t n, size_t max)
{
	if (!n || n > max) return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.' || c == '_'))
			return 0;
	}
	return 1;
}

/* An EHLO name: a host name, or an address literal "[...]". */
static int ehlo_ok(const char *s, size_t n)
{
	if (!n || n > 253) return 0;
	if (s[0] == '[') {
		if (s[n - 1] != ']' || n < 3) return 0;
		for (size_t i = 1; i + 1 < n; i++) {
			char c = s[i];
			if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
			      (c >= 'A' && c <= 'F') || c == '.' || c == ':' || c == 'I' ||
			      c == 'P' || c == 'v'))
				return 0;
		}
		return 1;
	}
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.'))
			return 0;
	}
	return 1;
}

/* The address at s (n bytes): IPv4 or IPv6, optionally in brackets. */
static int ip_set(struct relay_source *src, const char *s, size_t n, struct base_err *err)
{
	char ip[64];
	if (n >= 2 && s[0] == '[' && s[n - 1] == ']') s++, n -= 2;
	if (!n || n >= sizeof ip)
		return base_errf(err, "source address '%.*s' is not an IP address",
		                 (int)(n > 64 ? 64 : n), s);
	memcpy(ip, s, n);
	ip[n] = 0;
	memset(&src->addr, 0, sizeof src->addr);
	if (inet_pton(AF_INET, ip, src->addr.a.v4) == 1)
		src->addr.family = AF_INET;
	else if (inet_pton(AF_INET6, ip, src->addr.a.v6) == 1)
		src->addr.family = AF_INET6;
	else
		return base_errf(err, "source address '%s' is not an IP address", ip);
	inet_ntop(src->addr.family, &src->addr.a, src->ip, sizeof src->ip);
	return 0;
}

static int weight_set(struct relay_source *src, const char *s, size_t n, struct base_err *err)
{
	uint64_t w;
	char tmp[16];
	if (!n || n >= sizeof tmp)
		return base_errf(err, "bad weight '%.*s' (1 to 1000)", (int)(n > 16 ? 16 : n), s);
	memcpy(tmp, s, n);
	tmp[n] = 0;
	int k = base_parse_uint(tmp, 1000, &w);
	if (k <= 0 || tmp[k] || w == 0) return base_errf(err, "bad weight '%s' (1 to 1000)", tmp);
	src->weight = (uint32_t)w;
	return 0;
}

static int ehlo_set(struct relay_source *src, const char *s, size_t n, struct base_err *err)
{
	if (!ehlo_ok(s, n))
		return base_errf(err, "bad EHLO name '%.*s'", (int)(n > 64 ? 64 : n), s);
	memcpy(src->ehlo, s, n);
	src->ehlo[n] = 0;
	return 0;
}

int relay_source_parse(struct relay_source *s, const char *spec, struct base_err *err)
{
	memset(s, 0, sizeof *s);
	s->weight = 1;
	const char *p = spec;
	int first = 1;
	while (*p) {
		while (*p == ' ' || *p == '\t') p++;
		if (!*p) break;
		const char *w = p;
		while (*p && *p != ' ' && *p != '\t') p++;
		size_t n = (size_t)(p - w);
		if (first) {
			if (ip_set(s, w, n, err) < 0) return -1;
			first = 0;
		} else if (n > 5 && !strncmp(w, "ehlo=", 5)) {
			if (ehlo_set(s, w + 5, n - 5, err) < 0) return -1;
		} else if (n > 7 && !strncmp(w, "weight=", 7)) {
			if (weight_set(s, w + 7, n - 7, err) < 0) return -1;
		} else {
			return base_errf(
			    err, "source: unknown word '%.*s' (expected ehlo=NAME or weight=N)",
			    (int)(n > 64 ? 64 : n), w);
		}
	}
	if (first) return base_errf(err, "source: an IP address is required");
	return 0;
}

static struct relay_pool *pool_get(struct relay_config *c, const char *name, size_t n,
                                   struct base_err *err)
{
	if (!name_ok(name, n, 64)) {
		base_errf(err, "bad pool name '%.*s' (letters, digits, '.', '-', '_')",
		          (int)(n > 64 ? 64 : n), name);
		return NULL;
	}
	for (size_t i = 0; i < c->npools; i++)
		if (strlen(c->pools[i].name) == n && !memcmp(c->pools[i].name, name, n))
			return &c->pools[i];
	if (c->npools >= RELAY_POOLS_MAX) {
		base_errf(err, "too many pools (at most %d)", RELAY_POOLS_MAX);
		return NULL;
	}
	c->pools = base_xrealloc(c->pools, (c->npools + 1) * sizeof *c->pools);
	struct relay_pool *p = &c->pools[c->npools++];
	memset(p, 0, sizeof *p);
	p->name = base_xstrndup(name, n);
	return p;
}

static int pool_append(struct relay_pool *p, const struct relay_source *s, struct base_err *err)
{
	if (p->nsrc >= RELAY_POOL_SOURCES_MAX)
		return base_errf(err, "pool '%s': too many sources (at most %d)", p->name,
		                 RELAY_POOL_SOURCES_MAX);
	for (size_t i = 0; i < p->nsrc; i++)
		if (!strcmp(p->src[i].ip, s->ip))
			return base_errf(err, "pool '%s': source %s given twice", p->name, s->ip);
	p->src = base_xrealloc(p->src, (p->nsrc + 1) * sizeof *p->src);
	p->src[p->nsrc++] = *s;
	return 0;
}

int relay_pool_add(struct relay_config *c, const char *pool, const char *spec, struct base_err *err)
{
	struct relay_source s;
	struct relay_pool *p = pool_get(c, pool, strlen(pool), err);
	if (!p) return -1;
	if (relay_source_parse(&s, spec, err) < 0) {
		char m[sizeof err->msg];
		snprintf(m, sizeof m, "%s", err->msg);
		return base_errf(err, "pool '%s': %s", p->name, m);
	}
	return pool_append(p, &s, err);
}

int relay_pool_flag(struct relay_config *c, const char *spec, struct base_err *err)
{
	const char *eq = strchr(spec, '=');
	if (!eq) return base_errf(err, "pool '%.64s': expected NAME=IP[/EHLO][*WEIGHT],...", spec);
	struct relay_pool *p = pool_get(c, spec, (size_t)(eq - spec), err);
	if (!p) return -1;
	const char *q = eq + 1;
	for (;;) {
		const char *end = strchr(q, ',');
		if (!end) end = q + strlen(q);
		const char *slash = memchr(q, '/', (size_t)(end - q));
		const char *star = memchr(q, '*', (size_t)(end - q));
		if (slash && star && star < slash)
			return base_errf(err, "pool '%s': '%.*s': expected IP[/EHLO][*WEIGHT]",
			                 p->name, (int)(end - q > 80 ? 80 : end - q), q);
		const char *ipend = slash ? slash : star ? star : end;
		struct relay_source s;
		memset(&s, 0, sizeof s);
		s.weight = 1;
		char m[sizeof err->msg];
		if (ip_set(&s, q, (size_t)(ipend - q), err) < 0 ||
		    (slash &&
		     ehlo_set(&s, slash + 1, (size_t)((star ? star : end) - slash - 1), err) < 0) ||
		    (star && weight_set(&s, star + 1, (size_t)(end - star - 1), err) < 0)) {
			snprintf(m, sizeof m, "%s", err->msg);
			return base_errf(err, "pool '%s': %s", p->name, m);
		}
		if (pool_append(p, &s, err) < 0) return -1;
		if (!*end) break;
		q = end + 1;
	}
	return 0;
}

static int parse_limit(const char *key, const char *v, uint32_t min, uint32_t *out,
                       struct base_err *err)
{
	uint64_t n;
	int k = base_parse_uint(v, 1u << 30, &n);
	if (k <= 0 || v[k] || n < min) return base_errf(err, "%s: bad number '%.64s'", key, v);
	*out = (uint32_t)n;
	return 0;
}

/* A shaping key into lim: 0, -1, or 1 when key is not one. */
static int limit_set(struct relay_limits *lim, const char *key, const char *v, struct base_err *err)
{
	if (!strcmp(key, "conn-limit")) {
		lim->set |= RELAY_LIM_CONN;
		return parse_limit(key, v, 1, &lim->conn_limit, err);
	}
	if (!strcmp(key, "msgs-per-conn")) {
		lim->set |= RELAY_LIM_MPC;
		return parse_limit(key, v, 1, &lim->msgs_per_conn, err);
	}
	if (!strcmp(key, "msgs-per-sec")) {
		lim->set |= RELAY_LIM_MPS;
		return parse_limit(key, v, 0, &lim->msgs_per_sec, err);
	}
	if (!strcmp(key, "conns-per-min")) {
		lim->set |= RELAY_LIM_CPM;
		return parse_limit(key, v, 0, &lim->conns_per_min, err);
	}
	return 1;
}

int relay_domain_set(struct relay_config *c, const char *domain, const char *key, const char *value,
                     struct base_err *err)
{
	size_t n = strlen(domain);
	if (!name_ok(domain, n, 253) || strchr(domain, '_'))
		return base_errf(err, "bad domain name '%.64s'", domain);
	struct relay_domain_limits *d = NULL;
	for (size_t i = 0; i < c->ndomains; i++)
		if (!base_strcasecmp_ascii(c->domains[i].domain, domain)) d = &c->domains[i];
	if (!d) {
		if (c->ndomains >= RELAY_DOMAINS_MAX)
			return base_errf(err, "too many [domain] sections (at most %d)",
			                 RELAY_DOMAINS_MAX);
		c->domains = base_xrealloc(c->domains, (c->ndomains + 1) * sizeof *c->domains);
		d = &c->domains[c->ndomains++];
		memset(d, 0, sizeof *d);
		d->domain = base_xstrdup(domain);
		for (char *p = d->domain; *p; p++) *p = base_lower(*p);
	}
	if (!strcmp(key, "mta-sts")) {
		if (!strcmp(value, "on") || !strcmp(value, "yes"))
			d->mta_sts = 1;
		else if (!strcmp(value, "off") || !strcmp(value, "no"))
			d->mta_sts = -1;
		else
			return base_errf(err, "domain %s: mta-sts: expected on or off, not '%.64s'",
			                 d->domain, value);
		return 0;
	}
	int r = limit_set(&d->lim, key, value, err);
	if (r == 1)
		return base_errf(err,
		                 "domain %s: unknown setting '%s' (conn-limit, msgs-per-conn, "
		                 "msgs-per-sec, conns-per-min, mta-sts)",
		                 d->domain, key);
	if (r < 0) {
		char m[sizeof err->msg];
		snprintf(m, sizeof m, "%s", err->msg);
		return base_errf(err, "domain %s: %s", d->domain, m);
	}
	return r;
}

int relay_shaping_set(struct relay_config *c, const char *key, const char *value,
                      struct base_err *err)
{
	if (!strcmp(key, "pool")) return relay_pool_flag(c, value, err);
	if (!strcmp(key, "default-pool")) {
		if (!name_ok(value, strlen(value), 64))
			return base_errf(err, "default-pool: bad pool name '%.64s'", value);
		free(c->default_pool);
		c->default_pool = base_xstrdup(value);
		return 0;
	}
	if (!strcmp(key, "msgs-per-sec")) return parse_limit(key, value, 0, &c->msgs_per_sec, err);
	if (!strcmp(key, "conns-per-min"))
		return parse_limit(key, value, 0, &c->conns_per_min, err);
	return 1;
}

static int section_cb(void *ctx, const char *section, const char *key, const char *value,
                      struct base_err *err)
{
	struct relay_config *c = ctx;
	if (!strncmp(section, "pool ", 5)) {
		if (strcmp(key, "source"))
			return base_errf(err, "pool %s: unknown setting '%s' (source)", section + 5,
			                 key);
		return relay_pool_add(c, section + 5, value, err);
	}
	if (!strncmp(section, "throttle ", 9)) return relay_throttle_set(c, section + 9, key, value, err);
	return relay_domain_set(c, section + 7, key, value, err);
}

int relay_config_sections(struct relay_config *c, const char *path, struct base_err *err)
{
	if (base_ini_read_sections(path, "pool ", section_cb, c, err) < 0 ||
	    base_ini_read_sections(path, "throttle ", section_cb, c, err) < 0)
		return -1;
	return base_ini_read_sections(path, "domain ", section_cb, c, err);
}

int relay_shaping_check(const struct relay_config *c, struct base_err *err)
{
	if (c->default_pool && !relay_pool_find(c, c->default_pool))
		return base_errf(err, "default-pool: no pool named '%s'", c->default_pool);
	return relay_throttles_check(c, err);
}

const struct relay_pool *relay_pool_find(const struct relay_config *c, const char *name)
{
	if (!name) return NULL;
	for (size_t i = 0; i < c->npools; i++)
		if (!strcmp(c->pools[i].name, name)) return &c->pools[i];
	return NULL;
}

const struct relay_domain_limits *relay_domain_find(const struct relay_config *c,
                                                    const char *domain)
{
	for (size_t i = 0; i < c->ndomains; i++)
		if (!base_strcasecmp_ascii(c->domains[i].domain, domain)) return &c->domains[i];
	return NULL;
}

void relay_pools_clear(struct relay_config *c)
{
	for (size_t i = 0; i < c->npools; i++) {
		free(c->pools[i].name);
		free(c->pools[i].src);
	}
	free(c->pools);
	c->pools = NULL;
	c->npools = 0;
}

void relay_shaping_free(struct relay_config *c)
{
	relay_pools_clear(c);
	free(c->default_pool);
	c->default_pool = NULL;
	for (size_t i = 0; i < c->ndomains; i++) free(c->domains[i].domain);
	free(c->domains);
	c->domains = NULL;
	c->ndomains = 0;
	relay_throttles_free(c);
}
