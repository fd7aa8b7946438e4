/*
 * dmarc.c — DMARC: record parsing, policy discovery, organisational
 * domains, and evaluation of SPF and DKIM results with identifier alignment.
 *
 * Two discovery modes share one evaluator:
 *
 *   - RFC 7489: the record at _dmarc.<author domain>, else at
 *     _dmarc.<organisational domain>, the organisational domain being the
 *     registrable domain by the Public Suffix List (libpsl);
 *   - the DMARCbis (RFC 9989) DNS tree walk: query _dmarc.<domain>, and
 *     while nothing is found walk up, removing one label at a time, except
 *     that a name of 8 labels or more is first cut to its rightmost 7; at
 *     most AUTH_DMARC_WALK_MAX queries. For policy discovery the first
 *     record found governs. For the organisational domain the walk goes on
 *     past records without psd=: a record with psd=n marks its own domain,
 *     psd=y marks the domain one label below it, and otherwise the last
 *     (shortest) domain with a record is the organisational domain.
 *
 * The PSL is loaded once (pthread_once) and only read afterwards.
 */
#include "auth/auth.h"

#include <libpsl.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

const char *auth_dmarc_policy_name(int policy)
{
	switch (policy) {
	case AUTH_DMARC_QUARANTINE:
		return "quarantine";
	case AUTH_DMARC_REJECT:
		return "reject";
	default:
		return "none";
	}
}

const char *auth_dmarc_result_name(int result)
{
	static const char *const names[] = {"none", "pass", "fail", "temperror", "permerror"};
	return result >= 0 && result <= AUTH_DMARC_R_PERMERROR ? names[result] : "?";
}

static void copy_str(char *dst, size_t sz, const char *src, size_t n)
{
	if (n >= sz) n = sz - 1;
	memcpy(dst, src, n);
	dst[n] = 0;
}

static int tag_eq(const struct auth_dkim_tag *t, const char *lit)
{
	size_t n = strlen(lit);
	if (t->value_len != n) return 0;
	for (size_t i = 0; i < n; i++)
		if (base_lower(t->value[i]) != lit[i]) return 0;
	return 1;
}

int auth_dmarc_is_record(const char *txt, size_t len)
{
	size_t i = 0;
	while (i < len && (txt[i] == ' ' || txt[i] == '\t')) i++;
	if (len - i < 8 || txt[i] != 'v' || txt[i + 1] != '=') return 0;
	for (size_t k = 0; k < 6; k++)
		if (base_lower(txt[i + 2 + k]) != "dmarc1"[k]) return 0;
	i += 8;
	while (i < len && (txt[i] == ' ' || txt[i] == '\t')) i++;
	return i == len || txt[i] == ';';
}

static int parse_policy(const struct auth_dkim_tag *t, int *out, struct base_err *err)
{
	if (tag_eq(t, "none"))
		*out = AUTH_DMARC_NONE;
	else if (tag_eq(t, "quarantine"))
		*out = AUTH_DMARC_QUARANTINE;
	else if (tag_eq(t, "reject"))
		*out = AUTH_DMARC_REJECT;
	else
		return base_errf(err, "DMARC record: %s= must be none, quarantine or reject",
		                 t->name);
	return 0;
}

int auth_dmarc_parse(const char *txt, size_t len, struct auth_dmarc_record *r, struct base_err *err)
{
	memset(r, 0, sizeof *r);
	r->sp = r->np = -1;
	r->adkim = r->aspf = 'r';
	r->pct = 100;
	r->psd = 'u';
	if (len > 4096) return base_errf(err, "DMARC record longer than 4096 bytes");
	if (!auth_dmarc_is_record(txt, len))
		return base_errf(err, "not a DMARC record (no v=DMARC1 first)");
	struct auth_dkim_tags t;
	if (auth_dkim_tags_parse(txt, len, &t, err) < 0) return -1;
	for (size_t i = 0; i < t.n; i++) {
		const struct auth_dkim_tag *g = &t.tag[i];
		const char *n = g->name;
		if (!strcmp(n, "p")) {
			if (parse_policy(g, &r->p, err) < 0) return -1;
			r->has_p = 1;
		} else if (!strcmp(n, "sp")) {
			if (parse_policy(g, &r->sp, err) < 0) return -1;
		} else if (!strcmp(n, "np")) {
			if (parse_policy(g, &r->np, err) < 0) return -1;
		} else if (!strcmp(n, "adkim") || !strcmp(n, "aspf")) {
			if (!tag_eq(g, "r") && !tag_eq(g, "s"))
				return base_errf(err, "DMARC record: %s= must be r or s", n);
			*(n[1] == 'd' ? &r->adkim : &r->aspf) = base_lower(g->value[0]);
		} else if (!strcmp(n, "pct")) {
			/* the value is not NUL-terminated: parse it in place */
			unsigned v = 0;
			int ok = g->value_len >= 1 && g->value_len <= 3;
			for (size_t k = 0; ok && k < g->value_len; k++) {
				ok = g->value[k] >= '0' && g->value[k] <= '9';
				v = v * 10 + (unsigned)(g->value[k] - '0');
			}
			if (!ok || v > 100)
				return base_errf(err, "DMARC record: pct= must be 0 to 100");
			r->pct = v;
		} else if (!strcmp(n, "psd")) {
			if (!tag_eq(g, "y") && !tag_eq(g, "n") && !tag_eq(g, "u"))
				return base_errf(err, "DMARC record: psd= must be y, n or u");
			r->psd = base_lower(g->value[0]);
		} else if (!strcmp(n, "t")) {
			if (!tag_eq(g, "y") && !tag_eq(g, "n"))
				return base_errf(err, "DMARC record: t= must be y or n");
			r->testing = tag_eq(g, "y");
		} else if (!strcmp(n, "rua")) {
			copy_str(r->rua, sizeof r->rua, g->value, g->value_len);
		} else if (!strcmp(n, "ruf")) {
			copy_str(r->ruf, sizeof r->ruf, g->value, g->value_len);
		}
		/* v was checked above; fo, rf, ri and unknown tags are ignored */
	}
	return 0;
}

/* ---- lookups -------------------------------------------------------------- */

/* Looks for the one DMARC record at _dmarc.domain: 0 found, 1 none (no
 * record, several, or one that does not parse), -1 DNS failure. */
static int query_record(const struct dns_lookup_ops *dns, const char *domain,
                        struct auth_dmarc_record *rec, char *why, size_t whysz)
{
	char name[300];
	if (strlen(domain) > 240) {
		snprintf(why, whysz, "domain name too long");
		return 1;
	}
	snprintf(name, sizeof name, "_dmarc.%s", domain);
	struct dns_answer a;
	dns_lookup(dns, name, DNS_T_TXT, &a);
	int rc = 1;
	if (a.status == DNS_LOOKUP_SERVFAIL || a.status == DNS_LOOKUP_TIMEOUT ||
	    a.status == DNS_LOOKUP_ERROR) {
		snprintf(why, whysz, "DNS %s for %.200s", dns_lookup_status_name(a.status), name);
		rc = -1;
	} else {
		int count = 0;
		const struct dns_record *hit = NULL;
		for (size_t i = 0; i < a.n; i++)
			if (auth_dmarc_is_record(a.rr[i].data, a.rr[i].len)) {
				hit = &a.rr[i];
				count++;
			}
		struct base_err err;
		if (count > 1) {
			snprintf(why, whysz, "%d DMARC records at %.200s (ignored)", count, name);
		} else if (count == 1 && auth_dmarc_parse(hit->data, hit->len, rec, &err) < 0) {
			snprintf(why, whysz, "%.60s: %.180s", name, err.msg);
		} else if (count == 1) {
			rc = 0;
		}
	}
	dns_answer_free(&a);
	return rc;
}

static size_t count_labels(const char *d)
{
	size_t n = *d ? 1 : 0;
	for (; *d; d++) n += *d == '.';
	return n;
}

/* The rightmost n labels of d. */
static const char *rightmost(const char *d, size_t n)
{
	size_t have = count_labels(d);
	while (have > n) {
		d = strchr(d, '.') + 1;
		have--;
	}
	return d;
}

/* The next name up the tree walk, or NULL at the top. */
static const char *walk_next(const char *d)
{
	size_t n = count_labels(d);
	if (n <= 1) return NULL;
	if (n >= AUTH_DMARC_WALK_MAX) return rightmost(d, AUTH_DMARC_WALK_MAX - 1);
	return strchr(d, '.') + 1;
}

static void lower_copy(char *dst, size_t sz, const char *src)
{
	size_t n = strlen(src);
	if (n && src[n - 1] == '.') n--;
	copy_str(dst, sz, src, n);
	for (char *p = dst; *p; p++) *p = base_lower(*p);
}

static pthread_once_t psl_once = PTHREAD_ONCE_INIT;
static const psl_ctx_t *psl_ctx;

static void psl_load(void)
{
	psl_ctx = psl_latest(NULL);
	if (!psl_ctx) psl_ctx = psl_builtin();
}

static void psl_org(const char *name, char *out, size_t outsz)
{
	pthread_once(&psl_once, psl_load);
	const char *reg = psl_ctx ? psl_registrable_domain(psl_ctx, name) : NULL;
	copy_str(out, outsz, reg ? reg : name, strlen(reg ? reg : name));
}

void auth_dmarc_discover(const struct dns_lookup_ops *dns, int mode, const char *domain,
                         struct auth_dmarc_found *f)
{
	memset(f, 0, sizeof *f);
	char d[256];
	lower_copy(d, sizeof d, domain);
	f->status = 1;
	if (mode == AUTH_DMARC_PSL) {
		f->queries++;
		int rc = query_record(dns, d, &f->rec, f->why, sizeof f->why);
		if (rc <= 0) {
			f->status = rc;
			copy_str(f->domain, sizeof f->domain, d, strlen(d));
			return;
		}
		char org[256];
		psl_org(d, org, sizeof org);
		if (!strcmp(org, d)) return;
		f->queries++;
		rc = query_record(dns, org, &f->rec, f->why, sizeof f->why);
		f->status = rc;
		if (rc <= 0) copy_str(f->domain, sizeof f->domain, org, strlen(org));
		return;
	}
	for (const char *cur = d; cur && f->queries < AUTH_DMARC_WALK_MAX; cur = walk_next(cur)) {
		f->queries++;
		int rc = query_record(dns, cur, &f->rec, f->why, sizeof f->why);
		if (rc <= 0) {
			f->status = rc;
			copy_str(f->domain, sizeof f->domain, cur, strlen(cur));
			return;
		}
	}
}

int auth_dmarc_org_domain(const struct dns_lookup_ops *dns, int mode, const char *name, char *out,
                          size_t outsz)
{
	char d[256];
	lower_copy(d, sizeof d, name);
	if (mode == AUTH_DMARC_PSL) {
		psl_org(d, out, outsz);
		return 0;
	}
	const char *last = NULL;
	unsigned q = 0;
	char why[256];
	for (const char *cur = d; cur && q < AUTH_DMARC_WALK_MAX; cur = walk_next(cur)) {
		struct auth_dmarc_record rec;
		q++;
		int rc = query_record(dns, cur, &rec, why, sizeof why);
		if (rc < 0) return -1;
		if (rc > 0) continue;
		if (rec.psd == 'n') {
			last = cur;
			break;
		}
		if (rec.psd == 'y') {
			/* the organisational domain is one label below the PSD */
			last = cur == d ? d : rightmost(d, count_labels(cur) + 1);
			break;
		}
		last = cur;
	}
	if (!last) last = d;
	copy_str(out, outsz, last, strlen(last));
	return 0;
}

/* ---- evaluation ------------------------------------------------------------ */

static int aligned(const struct dns_lookup_ops *dns, int mode, char how, const char *from,
                   const char *from_org, const char *other, int *dns_failed)
{
	char o[256], org[256];
	lower_copy(o, sizeof o, other);
	if (!strcmp(o, from)) return 1;
	if (how == 's') return 0;
	if (auth_dmarc_org_domain(dns, mode, o, org, sizeof org) < 0) {
		*dns_failed = 1;
		return 0;
	}
	return !strcmp(org, from_org);
}

static int set_reason(struct auth_dmarc_outcome *out, int result, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int set_reason(struct auth_dmarc_outcome *out, int result, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out->reason, sizeof out->reason, fmt, ap);
	va_end(ap);
	out->result = result;
	return result;
}

int auth_dmarc_evaluate(const struct dns_lookup_ops *dns, const struct auth_dmarc_input *in,
                        struct auth_dmarc_outcome *out)
{
	memset(out, 0, sizeof *out);
	if (!in->from_domain || !*in->from_domain || strlen(in->from_domain) > 253)
		return set_reason(out, AUTH_DMARC_R_PERMERROR, "no usable From domain");
	char from[256];
	lower_copy(from, sizeof from, in->from_domain);
	auth_dmarc_discover(dns, in->mode, from, &out->found);
	if (out->found.status < 0)
		return set_reason(out, AUTH_DMARC_R_TEMPERROR, "%s", out->found.why);
	if (out->found.status > 0)
		return set_reason(out, AUTH_DMARC_R_NONE, "no DMARC record for %s%s%s", from,
		                  out->found.why[0] ? ": " : "", out->found.why);
	const struct auth_dmarc_record *r = &out->found.rec;
	if (auth_dmarc_org_domain(dns, in->mode, from, out->org_domain, sizeof out->org_domain) < 0)
		return set_reason(out, AUTH_DMARC_R_TEMPERROR,
		                  "DNS failure finding the "
		                  "organisational domain of %s",
		                  from);
	int dns_failed = 0;
	if (in->spf_result == AUTH_SPF_PASS && in->spf_domain)
		out->spf_aligned = aligned(dns, in->mode, r->aspf, from, out->org_domain,
		                           in->spf_domain, &dns_failed);
	for (size_t i = 0; i < in->ndkim && i < AUTH_DMARC_MAX_DKIM && !out->dkim_aligned; i++)
		if (in->dkim[i].result == AUTH_DKIM_PASS && in->dkim[i].domain)
			out->dkim_aligned = aligned(dns, in->mode, r->adkim, from, out->org_domain,
			                            in->dkim[i].domain, &dns_failed);

	/* the policy that applies: p= at the author domain; below it sp=,
	 * or np= when the author domain does not exist */
	out->disposition = r->p;
	if (strcmp(out->found.domain, from)) {
		int np = 0;
		if (r->np >= 0) {
			struct dns_answer a;
			dns_lookup(dns, from, DNS_T_A, &a);
			np = a.status == DNS_LOOKUP_NXDOMAIN;
			dns_answer_free(&a);
		}
		if (np)
			out->disposition = r->np;
		else if (r->sp >= 0)
			out->disposition = r->sp;
	}
	if (out->spf_aligned || out->dkim_aligned)
		return set_reason(out, AUTH_DMARC_R_PASS,
		                  "%s aligned with %s (record at _dmarc.%s)",
		                  out->dkim_aligned ? "DKIM" : "SPF", from, out->found.domain);
	if (dns_failed)
		return set_reason(out, AUTH_DMARC_R_TEMPERROR,
		                  "DNS failure while checking alignment");
	return set_reason(out, AUTH_DMARC_R_FAIL,
	                  "neither SPF nor DKIM passed aligned with %s (%s alignment); policy %s",
	                  from, r->adkim == 's' && r->aspf == 's' ? "strict" : "relaxed",
	                  auth_dmarc_policy_name(out->disposition));
}
