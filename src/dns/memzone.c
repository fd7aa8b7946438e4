/*
 * memzone.c — an in-memory zone behind the lookup interface, for test
 * suites that come with their own zone data (the openspf RFC 7208 suite).
 * Everything else is tested against a real server on loopback.
 *
 * Names are kept lowercased in a flat array searched linearly: a scenario
 * holds a few dozen names. A lookup answers the records of the type asked;
 * failing that it follows a CNAME (at most 8 links, a loop is a server
 * failure); failing that a name marked "timeout" times out; otherwise the
 * answer is NODATA when the name exists and NXDOMAIN when it does not.
 */
#include "dns/dns.h"

#include <stdlib.h>
#include <string.h>

struct mz_rr {
	uint16_t type, pref;
	size_t len;
	char *data;
};

/* Invariant: names are lowercased, without a trailing dot, and unique. */
struct mz_name {
	char *name;
	int timeout;
	size_t n;
	struct mz_rr *rr;
};

struct dns_memzone {
	size_t n, cap;
	struct mz_name *names;
	unsigned queries;
};

struct dns_memzone *dns_memzone_new(void)
{
	return base_xcalloc(1, sizeof(struct dns_memzone));
}

void dns_memzone_clear(struct dns_memzone *z)
{
	for (size_t i = 0; i < z->n; i++) {
		for (size_t j = 0; j < z->names[i].n; j++) free(z->names[i].rr[j].data);
		free(z->names[i].rr);
		free(z->names[i].name);
	}
	z->n = 0;
	z->queries = 0;
}

void dns_memzone_free(struct dns_memzone *z)
{
	if (!z) return;
	dns_memzone_clear(z);
	free(z->names);
	free(z);
}

static char *canon(const char *name)
{
	size_t l = strlen(name);
	if (l > 1 && name[l - 1] == '.') l--;
	char *s = base_xstrndup(name, l);
	for (char *p = s; *p; p++) *p = base_lower(*p);
	return s;
}

static struct mz_name *find(struct dns_memzone *z, const char *name)
{
	char *c = canon(name);
	struct mz_name *hit = NULL;
	for (size_t i = 0; i < z->n && !hit; i++)
		if (!strcmp(z->names[i].name, c)) hit = &z->names[i];
	free(c);
	return hit;
}

static struct mz_name *find_or_add(struct dns_memzone *z, const char *name)
{
	struct mz_name *m = find(z, name);
	if (m) return m;
	if (z->n == z->cap) {
		z->cap = z->cap ? z->cap * 2 : 16;
		z->names = base_xrealloc(z->names, z->cap * sizeof *z->names);
	}
	m = &z->names[z->n++];
	memset(m, 0, sizeof *m);
	m->name = canon(name);
	return m;
}

int dns_memzone_add(struct dns_memzone *z, const char *name, uint16_t type, uint16_t pref,
                    const void *data, size_t len, struct base_err *err)
{
	if (!*name) return base_errf(err, "memzone: empty owner name");
	struct mz_name *m = find_or_add(z, name);
	m->rr = base_xrealloc(m->rr, (m->n + 1) * sizeof *m->rr);
	struct mz_rr *r = &m->rr[m->n++];
	r->type = type;
	r->pref = pref;
	r->len = len;
	r->data = base_xmalloc(len + 1);
	memcpy(r->data, data, len);
	r->data[len] = '\0';
	/* Targets are kept as given, minus a trailing dot. */
	if ((type == DNS_T_MX || type == DNS_T_PTR || type == DNS_T_CNAME || type == DNS_T_NS) &&
	    r->len > 1 && r->data[r->len - 1] == '.')
		r->data[--r->len] = '\0';
	return 0;
}

int dns_memzone_add_timeout(struct dns_memzone *z, const char *name, struct base_err *err)
{
	if (!*name) return base_errf(err, "memzone: empty owner name");
	find_or_add(z, name)->timeout = 1;
	return 0;
}

unsigned dns_memzone_queries(const struct dns_memzone *z)
{
	return z->queries;
}

static void memzone_lookup(void *ctx, const char *name, uint16_t type, struct dns_answer *ans)
{
	struct dns_memzone *z = ctx;
	dns_answer_init(ans);
	z->queries++;
	struct dns_name check;
	if (dns_name_from_text(&check, name, 1, NULL) < 0) {
		ans->status = DNS_LOOKUP_ERROR;
		snprintf(ans->why, sizeof ans->why, "bad name");
		return;
	}
	const char *cur = name;
	for (int hops = 0; hops <= 8; hops++) {
		struct mz_name *m = find(z, cur);
		if (!m) {
			ans->status = DNS_LOOKUP_NXDOMAIN;
			return;
		}
		const struct mz_rr *cname = NULL;
		for (size_t i = 0; i < m->n; i++) {
			if (m->rr[i].type == type)
				dns_answer_add(ans, type, m->rr[i].pref, 300, m->rr[i].data,
				               m->rr[i].len);
			else if (m->rr[i].type == DNS_T_CNAME)
				cname = &m->rr[i];
		}
		if (ans->n) {
			ans->status = DNS_LOOKUP_OK;
			return;
		}
		if (cname) {
			cur = cname->data;
			continue;
		}
		ans->status = m->timeout ? DNS_LOOKUP_TIMEOUT : DNS_LOOKUP_NODATA;
		return;
	}
	ans->status = DNS_LOOKUP_SERVFAIL;
	snprintf(ans->why, sizeof ans->why, "CNAME chain too long or looping");
}

void dns_memzone_ops(struct dns_memzone *z, struct dns_lookup_ops *ops)
{
	ops->lookup = memzone_lookup;
	ops->ctx = z;
}
