/*
 * spf.c — Sender Policy Framework, RFC 7208: record parsing, macro
 * expansion and check_host().
 *
 * A record is parsed whole before anything is evaluated (§4.6: a syntax
 * error anywhere is a permerror) into an array of terms pointing into a
 * private copy of its text. Evaluation walks the mechanisms in order; the
 * first that matches gives its qualifier's result, else redirect= is
 * followed, else the result is neutral. include: and redirect= recurse into
 * check_host() with the same struct spf_eval, which carries the limits that
 * hold across the whole evaluation:
 *
 *   - terms that cause DNS lookups (include, a, mx, ptr, exists, redirect)
 *     are counted before their lookup; the 11th is a permerror;
 *   - terms whose lookup comes back empty (NODATA or NXDOMAIN, "void") are
 *     counted; the 3rd is a permerror;
 *   - an mx term may name at most 10 exchanges (permerror beyond), and
 *     ptr and %{p} consider at most the first 10 PTR names.
 *
 * DNS failures (SERVFAIL, timeouts) give temperror except where the RFC
 * says a mechanism simply does not match (ptr, %{p}, exp=).
 */
#include "auth/auth.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define EXPAND_MAX 4096

const char *auth_spf_result_name(int result)
{
	static const char *const names[] = {"none",     "neutral",   "pass",     "fail",
	                                    "softfail", "temperror", "permerror"};
	return result >= 0 && result <= AUTH_SPF_PERMERROR ? names[result] : "?";
}

/* ---- small character classes ---------------------------------------- */

static int is_alpha(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
static int is_digit(int c)
{
	return c >= '0' && c <= '9';
}
static int is_alnum(int c)
{
	return is_alpha(c) || is_digit(c);
}
static int is_delim(int c)
{
	return c == '.' || c == '-' || c == '+' || c == ',' || c == '/' || c == '_' || c == '=';
}
/* Copies a string, truncating to fit. */
static void copy_str(char *dst, size_t sz, const char *src)
{
	size_t n = strlen(src);
	if (n >= sz) n = sz - 1;
	memcpy(dst, src, n);
	dst[n] = 0;
}

static int ieq(const char *a, size_t alen, const char *lit)
{
	size_t n = strlen(lit);
	if (alen != n) return 0;
	for (size_t i = 0; i < n; i++)
		if (base_lower(a[i]) != lit[i]) return 0;
	return 1;
}

int auth_spf_is_record(const char *text, size_t len)
{
	return len >= 6 && ieq(text, 6, "v=spf1") && (len == 6 || text[6] == ' ');
}

/* ---- macro strings ----------------------------------------------------- */

/* Checks a macro-string (RFC 7208 §7.1). explain allows the c, r and t
 * letters and spaces. Returns 0, or -1 with err filled. On success *ends_macro
 * tells whether the string ends with a macro-expand. */
static int macro_check(const char *s, size_t n, int explain, int *ends_macro, struct base_err *err)
{
	int last_macro = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		last_macro = 0;
		if (c == '%') {
			if (i + 1 >= n)
				return base_errf(err, "'%%' at the end of '%.*s'", (int)n, s);
			char d = s[++i];
			if (d == '%' || d == '_' || d == '-') {
				last_macro = 1;
				continue;
			}
			if (d != '{')
				return base_errf(err, "bad macro '%%%c' in '%.*s'", d, (int)n, s);
			if (++i >= n)
				return base_errf(err, "unterminated macro in '%.*s'", (int)n, s);
			char l = base_lower(s[i]);
			if (!strchr("slodiphv", l) && !(explain && strchr("crt", l)))
				return base_errf(err, "bad macro letter '%c' in '%.*s'", s[i],
				                 (int)n, s);
			i++;
			size_t d0 = i;
			while (i < n && is_digit(s[i])) i++;
			if (i > d0) {
				/* the DIGIT transformer must be nonzero */
				size_t k = d0;
				while (k < i && s[k] == '0') k++;
				if (k == i)
					return base_errf(err, "zero transformer in '%.*s'", (int)n,
					                 s);
			}
			if (i < n && base_lower(s[i]) == 'r') i++;
			while (i < n && is_delim(s[i])) i++;
			if (i >= n || s[i] != '}')
				return base_errf(err, "malformed macro in '%.*s'", (int)n, s);
			last_macro = 1;
			continue;
		}
		if (c == ' ' && explain) continue;
		if (c < 0x21 || c > 0x7e)
			return base_errf(err, "bad character 0x%02x in '%.*s'", c, (int)n, s);
	}
	if (ends_macro) *ends_macro = last_macro;
	return 0;
}

/* A toplabel: alphanumerics and inner hyphens, not all digits. */
static int is_toplabel(const char *s, size_t n)
{
	if (!n || s[0] == '-' || s[n - 1] == '-') return 0;
	int alpha = 0;
	for (size_t i = 0; i < n; i++) {
		if (!is_alnum(s[i]) && s[i] != '-') return 0;
		if (!is_digit(s[i])) alpha = 1;
	}
	return alpha;
}

/* domain-spec = macro-string domain-end; domain-end = "." toplabel ["."]
 * / macro-expand. */
static int domain_spec_check(const char *s, size_t n, struct base_err *err)
{
	int ends_macro = 0;
	if (!n) return base_errf(err, "empty domain-spec");
	if (macro_check(s, n, 0, &ends_macro, err) < 0) return -1;
	if (ends_macro) return 0;
	size_t end = n;
	if (s[end - 1] == '.') end--;
	size_t dot = end;
	while (dot > 0 && s[dot - 1] != '.') dot--;
	if (dot == 0 || !is_toplabel(s + dot, end - dot))
		return base_errf(err, "domain-spec '%.*s' does not end in a valid top label",
		                 (int)n, s);
	return 0;
}

/* ---- addresses ---------------------------------------------------------- */

static int parse_ip4(const char *s, size_t n, uint8_t out[4])
{
	size_t i = 0;
	for (int part = 0; part < 4; part++) {
		if (part) {
			if (i >= n || s[i] != '.') return -1;
			i++;
		}
		size_t d0 = i;
		unsigned v = 0;
		while (i < n && is_digit(s[i]) && i - d0 < 3) v = v * 10 + (unsigned)(s[i++] - '0');
		if (i == d0 || v > 255 || (i - d0 > 1 && s[d0] == '0')) return -1;
		out[part] = (uint8_t)v;
	}
	return i == n ? 0 : -1;
}

static int parse_ip6(const char *s, size_t n, uint8_t out[16])
{
	char buf[64];
	if (n == 0 || n >= sizeof buf) return -1;
	memcpy(buf, s, n);
	buf[n] = 0;
	return inet_pton(AF_INET6, buf, out) == 1 ? 0 : -1;
}

/* A CIDR length: "0" or a number without leading zero, at most max. */
static int parse_cidr(const char *s, size_t n, unsigned max, unsigned *out)
{
	if (n == 0 || n > 3 || (n > 1 && s[0] == '0')) return -1;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(s[i])) return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > max) return -1;
	*out = v;
	return 0;
}

static int prefix_match(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned full = bits / 8, rest = bits % 8;
	if (memcmp(a, b, full)) return 0;
	if (!rest) return 1;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (a[full] & mask) == (b[full] & mask);
}

/* ---- parsing ---------------------------------------------------------- */

/* Splits a trailing dual-cidr-length off [s, s+*n): "/N", "//N" or "/N//M". */
static int strip_dual_cidr(const char *s, size_t *n, struct auth_spf_term *t, struct base_err *err)
{
	size_t e = *n, d = e;
	while (d > 0 && is_digit(s[d - 1])) d--;
	if (d < e && d >= 2 && s[d - 1] == '/' && s[d - 2] == '/') {
		if (parse_cidr(s + d, e - d, 128, &t->cidr6) < 0)
			return base_errf(err, "bad ip6 prefix length in '%.*s'", (int)*n, s);
		e = d - 2;
		d = e;
		while (d > 0 && is_digit(s[d - 1])) d--;
	}
	if (d < e && d >= 1 && s[d - 1] == '/') {
		if (parse_cidr(s + d, e - d, 32, &t->cidr4) < 0)
			return base_errf(err, "bad ip4 prefix length in '%.*s'", (int)*n, s);
		e = d - 1;
	}
	*n = e;
	return 0;
}

static int parse_mechanism(struct auth_spf_term *t, const char *name, size_t nlen, const char *rest,
                           size_t rlen, struct base_err *err)
{
	static const struct {
		const char *name;
		int kind;
	} mechs[] = {{"all", AUTH_SPF_ALL}, {"include", AUTH_SPF_INCLUDE}, {"a", AUTH_SPF_A},
	             {"mx", AUTH_SPF_MX},   {"ptr", AUTH_SPF_PTR},         {"ip4", AUTH_SPF_IP4},
	             {"ip6", AUTH_SPF_IP6}, {"exists", AUTH_SPF_EXISTS}};
	t->kind = -1;
	for (size_t i = 0; i < sizeof mechs / sizeof mechs[0]; i++)
		if (ieq(name, nlen, mechs[i].name)) t->kind = mechs[i].kind;
	if (t->kind < 0)
		return base_errf(err, "unknown mechanism '%.*s'", (int)t->text_len, t->text);
	t->cidr4 = 32;
	t->cidr6 = 128;
	switch (t->kind) {
	case AUTH_SPF_ALL:
		if (rlen)
			return base_errf(err, "'all' takes no argument: '%.*s'", (int)t->text_len,
			                 t->text);
		return 0;
	case AUTH_SPF_INCLUDE:
	case AUTH_SPF_EXISTS:
		if (rlen < 2 || rest[0] != ':')
			return base_errf(err, "'%.*s' needs ':domain'", (int)t->text_len, t->text);
		t->spec = rest + 1;
		t->spec_len = rlen - 1;
		return domain_spec_check(t->spec, t->spec_len, err);
	case AUTH_SPF_A:
	case AUTH_SPF_MX:
		if (strip_dual_cidr(rest, &rlen, t, err) < 0) return -1;
		/* fall through */
	case AUTH_SPF_PTR:
		if (!rlen) return 0;
		if (rest[0] != ':' || rlen < 2)
			return base_errf(err, "malformed mechanism '%.*s'", (int)t->text_len,
			                 t->text);
		t->spec = rest + 1;
		t->spec_len = rlen - 1;
		return domain_spec_check(t->spec, t->spec_len, err);
	case AUTH_SPF_IP4:
	case AUTH_SPF_IP6: {
		if (rlen < 2 || rest[0] != ':')
			return base_errf(err, "'%.*s' needs ':address'", (int)t->text_len, t->text);
		size_t e = rlen, d = rlen;
		while (d > 1 && is_digit(rest[d - 1])) d--;
		unsigned max = t->kind == AUTH_SPF_IP4 ? 32 : 128;
		unsigned *cidr = t->kind == AUTH_SPF_IP4 ? &t->cidr4 : &t->cidr6;
		if (d < e && rest[d - 1] == '/') {
			if (parse_cidr(rest + d, e - d, max, cidr) < 0)
				return base_errf(err, "bad prefix length in '%.*s'",
				                 (int)t->text_len, t->text);
			e = d - 1;
		}
		int rc = t->kind == AUTH_SPF_IP4 ? parse_ip4(rest + 1, e - 1, t->net)
		                                 : parse_ip6(rest + 1, e - 1, t->net);
		if (rc < 0)
			return base_errf(err, "bad address in '%.*s'", (int)t->text_len, t->text);
		return 0;
	}
	}
	return 0;
}

static int parse_term(struct auth_spf_record *rec, struct auth_spf_term *t, const char *s, size_t n,
                      struct base_err *err)
{
	memset(t, 0, sizeof *t);
	t->text = s;
	t->text_len = n;
	t->qualifier = '+';
	size_t i = 0;
	int qualified = 0;
	if (strchr("+-~?", s[0])) {
		t->qualifier = s[0];
		qualified = 1;
		i = 1;
	}
	size_t nstart = i;
	if (i < n && is_alpha(s[i])) {
		i++;
		while (i < n && (is_alnum(s[i]) || s[i] == '-' || s[i] == '_' || s[i] == '.')) i++;
	}
	size_t nlen = i - nstart;
	if (!qualified && nlen && i < n && s[i] == '=') {
		const char *name = s + nstart, *val = s + i + 1;
		size_t vlen = n - i - 1;
		if (ieq(name, nlen, "redirect") || ieq(name, nlen, "exp")) {
			int is_redirect = ieq(name, nlen, "redirect");
			int *slot = is_redirect ? &rec->redirect : &rec->exp;
			if (*slot >= 0)
				return base_errf(err, "modifier '%.*s' given twice", (int)nlen,
				                 name);
			*slot = (int)rec->n;
			t->kind = is_redirect ? AUTH_SPF_REDIRECT : AUTH_SPF_EXP;
			t->spec = val;
			t->spec_len = vlen;
			return domain_spec_check(val, vlen, err);
		}
		t->kind = AUTH_SPF_UNKNOWN_MODIFIER;
		return macro_check(val, vlen, 0, NULL, err);
	}
	/* A mechanism name runs up to ':' or '/'. */
	size_t m = nstart;
	while (m < n && s[m] != ':' && s[m] != '/') m++;
	if (m == nstart) return base_errf(err, "malformed term '%.*s'", (int)n, s);
	return parse_mechanism(t, s + nstart, m - nstart, s + m, n - m, err);
}

int auth_spf_parse(const char *text, size_t len, struct auth_spf_record *rec, struct base_err *err)
{
	memset(rec, 0, sizeof *rec);
	rec->redirect = rec->exp = -1;
	if (len > AUTH_SPF_RECORD_MAX)
		return base_errf(err, "SPF record longer than %d bytes", AUTH_SPF_RECORD_MAX);
	if (!auth_spf_is_record(text, len))
		return base_errf(err, "not an SPF record (no 'v=spf1')");
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)text[i] < 0x20 || (unsigned char)text[i] > 0x7e)
			return base_errf(err, "SPF record has a non-ASCII or control byte at %zu",
			                 i);
	rec->copy = base_xstrndup(text, len);
	size_t cap = 0;
	const char *p = rec->copy + 6, *end = rec->copy + len;
	for (;;) {
		while (p < end && *p == ' ') p++;
		if (p >= end) break;
		const char *q = p;
		while (q < end && *q != ' ') q++;
		if (rec->n == cap) {
			cap = cap ? cap * 2 : 16;
			rec->terms = base_xrealloc(rec->terms, cap * sizeof *rec->terms);
		}
		if (parse_term(rec, &rec->terms[rec->n], p, (size_t)(q - p), err) < 0) {
			auth_spf_record_free(rec);
			return -1;
		}
		rec->n++;
		p = q;
	}
	return 0;
}

void auth_spf_record_free(struct auth_spf_record *rec)
{
	free(rec->copy);
	free(rec->terms);
	rec->copy = NULL;
	rec->terms = NULL;
	rec->n = 0;
}

/* ---- evaluation -------------------------------------------------------- */

struct spf_eval {
	const struct dns_lookup_ops *dns;
	const struct auth_spf_request *req;
	struct auth_spf_outcome *out;
	char local[256];   /* local-part of the sender ("postmaster" if none) */
	char sdomain[256]; /* domain of the sender */
	char sender[600];  /* local@domain */
	unsigned terms, voids;
	unsigned depth;
	int in_include;
	char pname[256];        /* %{p}, computed on first use for pname_domain */
	char pname_domain[256]; /* "" until computed */
};

/* Outcome of evaluating a record or a term: a result, or "no match". */
#define NOMATCH (-1)

static int setreason(struct spf_eval *e, int result, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int setreason(struct spf_eval *e, int result, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->out->reason, sizeof e->out->reason, fmt, ap);
	va_end(ap);
	return result;
}

/* Whether a domain is usable as a DNS name: labels of 1..63 bytes, at most
 * 253 in all (a trailing dot allowed), and at least two labels. */
static int domain_ok(const char *d)
{
	size_t n = strlen(d);
	if (n && d[n - 1] == '.') n--;
	if (!n || n > 253) return 0;
	size_t lab = 0, labels = 1;
	for (size_t i = 0; i < n; i++) {
		if (d[i] == '.') {
			if (!lab) return 0;
			lab = 0;
			labels++;
		} else if (++lab > 63) {
			return 0;
		}
	}
	return lab && labels >= 2;
}

static void ip_text(const struct auth_spf_request *r, char *out, size_t sz)
{
	inet_ntop(r->family, r->ip, out, (socklen_t)sz);
}

/* %{i}: dotted quad, or 32 dot-separated nibbles for IPv6. */
static void ip_dotted(const struct auth_spf_request *r, char *out, size_t sz)
{
	if (r->family == AF_INET) {
		snprintf(out, sz, "%u.%u.%u.%u", r->ip[0], r->ip[1], r->ip[2], r->ip[3]);
		return;
	}
	/* Uppercase nibbles, as in the examples of RFC 7208 §7.4. */
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (int i = 0; i < 16 && o + 4 < sz; i++) {
		out[o++] = hex[r->ip[i] >> 4];
		out[o++] = '.';
		out[o++] = hex[r->ip[i] & 15];
		out[o++] = '.';
	}
	out[o ? o - 1 : 0] = 0;
}

/* The reverse-lookup name: 4.3.2.1.in-addr.arpa or the nibble form. */
static void ip_reverse(const struct auth_spf_request *r, char *out, size_t sz)
{
	if (r->family == AF_INET) {
		snprintf(out, sz, "%u.%u.%u.%u.in-addr.arpa", r->ip[3], r->ip[2], r->ip[1],
		         r->ip[0]);
		return;
	}
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	for (int i = 15; i >= 0; i--) {
		out[o++] = hex[r->ip[i] & 15];
		out[o++] = '.';
		out[o++] = hex[r->ip[i] >> 4];
		out[o++] = '.';
	}
	snprintf(out + o, sz - o, "ip6.arpa");
}

static int name_eq_or_under(const char *name, const char *domain)
{
	size_t n = strlen(name), d = strlen(domain);
	if (n && name[n - 1] == '.') n--;
	if (d && domain[d - 1] == '.') d--;
	if (n < d) return 0;
	for (size_t i = 0; i < d; i++)
		if (base_lower(name[n - d + i]) != base_lower(domain[i])) return 0;
	return n == d || name[n - d - 1] == '.';
}

static int addr_matches(const struct dns_answer *a, const struct auth_spf_request *r, unsigned cidr)
{
	for (size_t i = 0; i < a->n; i++) {
		size_t want = r->family == AF_INET ? 4 : 16;
		if (a->rr[i].len == want &&
		    prefix_match((const uint8_t *)a->rr[i].data, r->ip, cidr))
			return 1;
	}
	return 0;
}

/* Whether name has an address equal to the client's (for PTR validation).
 * DNS errors count as "no". */
static int name_has_ip(struct spf_eval *e, const char *name)
{
	struct dns_answer a;
	dns_lookup(e->dns, name, e->req->family == AF_INET ? DNS_T_A : DNS_T_AAAA, &a);
	int hit = a.status == DNS_LOOKUP_OK &&
	          addr_matches(&a, e->req, e->req->family == AF_INET ? 32 : 128);
	dns_answer_free(&a);
	return hit;
}

/* Validated PTR names (§5.5): the first AUTH_SPF_MAX_PTR names of the
 * client's PTR records whose addresses include the client. Calls fn for
 * each; stops when fn returns nonzero. Returns the PTR lookup's status. */
static int validated_names(struct spf_eval *e, int (*fn)(void *, const char *), void *arg)
{
	char rev[128];
	ip_reverse(e->req, rev, sizeof rev);
	struct dns_answer a;
	dns_lookup(e->dns, rev, DNS_T_PTR, &a);
	int status = a.status;
	for (size_t i = 0; i < a.n && i < AUTH_SPF_MAX_PTR; i++)
		if (name_has_ip(e, a.rr[i].data) && fn(arg, a.rr[i].data)) break;
	dns_answer_free(&a);
	return status;
}

struct pname_pick {
	const char *domain;
	char first[256];
	char best[256];
};

static int pick_pname(void *arg, const char *name)
{
	struct pname_pick *p = arg;
	if (!p->first[0]) copy_str(p->first, sizeof p->first, name);
	if (name_eq_or_under(name, p->domain)) {
		copy_str(p->best, sizeof p->best, name);
		return 1;
	}
	return 0;
}

static void append(char *out, size_t *o, size_t sz, const char *s, size_t n, int *overflow)
{
	if (*o + n >= sz) {
		*overflow = 1;
		return;
	}
	memcpy(out + *o, s, n);
	*o += n;
	out[*o] = 0;
}

/* Appends one macro's value after its transformers (§7.3). */
static void transform(const char *val, unsigned keep, int reverse, const char *delims, int upper,
                      char *out, size_t *o, size_t sz, int *overflow)
{
	/* split on delimiters */
	const char *parts[256];
	size_t lens[256], np = 0;
	const char *p = val;
	for (;;) {
		const char *q = p;
		while (*q && !strchr(delims, *q)) q++;
		if (np < 256) {
			parts[np] = p;
			lens[np] = (size_t)(q - p);
			np++;
		} else {
			*overflow = 1;
			return;
		}
		if (!*q) break;
		p = q + 1;
	}
	if (reverse)
		for (size_t i = 0; i < np / 2; i++) {
			const char *tp = parts[i];
			size_t tl = lens[i];
			parts[i] = parts[np - 1 - i];
			lens[i] = lens[np - 1 - i];
			parts[np - 1 - i] = tp;
			lens[np - 1 - i] = tl;
		}
	size_t first = keep && keep < np ? np - keep : 0;
	for (size_t i = first; i < np; i++) {
		if (i > first) append(out, o, sz, ".", 1, overflow);
		if (!upper) {
			append(out, o, sz, parts[i], lens[i], overflow);
			continue;
		}
		/* URL-escape everything but RFC 3986 unreserved characters. */
		for (size_t k = 0; k < lens[i]; k++) {
			unsigned char c = (unsigned char)parts[i][k];
			char enc[4];
			if (is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
				enc[0] = (char)c;
				append(out, o, sz, enc, 1, overflow);
			} else {
				snprintf(enc, sizeof enc, "%%%02X", c);
				append(out, o, sz, enc, 3, overflow);
			}
		}
	}
}

/* Expands a macro-string (already checked) for the current domain.
 * Returns the length, or -1 on overflow or a syntax error. */
static int expand(struct spf_eval *e, const char *s, size_t n, const char *domain, int explain,
                  char *out, size_t sz)
{
	size_t o = 0;
	int overflow = 0;
	out[0] = 0;
	if (macro_check(s, n, explain, NULL, NULL) < 0) return -1;
	for (size_t i = 0; i < n && !overflow; i++) {
		if (s[i] != '%') {
			append(out, &o, sz, s + i, 1, &overflow);
			continue;
		}
		char d = s[++i];
		if (d == '%' || d == '_' || d == '-') {
			append(out, &o, sz,
			       d == '%'   ? "%"
			       : d == '_' ? " "
			                  : "%20",
			       d == '-' ? 3 : 1, &overflow);
			continue;
		}
		char letter = s[i + 1];
		i += 2;
		unsigned keep = 0;
		while (is_digit(s[i])) {
			if (keep < 1000) keep = keep * 10 + (unsigned)(s[i] - '0');
			i++;
		}
		int reverse = 0;
		if (base_lower(s[i]) == 'r') {
			reverse = 1;
			i++;
		}
		char delims[16];
		size_t nd = 0;
		while (s[i] != '}') {
			if (nd < sizeof delims - 1 && !memchr(delims, s[i], nd))
				delims[nd++] = s[i];
			i++;
		}
		delims[nd] = 0;
		if (!nd) strcpy(delims, ".");
		char buf[600];
		const char *val = buf;
		switch (base_lower(letter)) {
		case 's':
			val = e->sender;
			break;
		case 'l':
			val = e->local;
			break;
		case 'o':
			val = e->sdomain;
			break;
		case 'd':
			val = domain;
			break;
		case 'i':
			ip_dotted(e->req, buf, sizeof buf);
			break;
		case 'c':
			ip_text(e->req, buf, sizeof buf);
			break;
		case 'v':
			val = e->req->family == AF_INET ? "in-addr" : "ip6";
			break;
		case 'h':
			val = e->req->helo ? e->req->helo : "";
			break;
		case 'r':
			val = e->req->receiver ? e->req->receiver : "unknown";
			break;
		case 't':
			snprintf(buf, sizeof buf, "%lld",
			         (long long)(e->req->now ? e->req->now : base_now()));
			break;
		case 'p':
			if (strcmp(e->pname_domain, domain)) {
				struct pname_pick pk = {domain, "", ""};
				validated_names(e, pick_pname, &pk);
				snprintf(e->pname, sizeof e->pname, "%s",
				         pk.best[0]    ? pk.best
				         : pk.first[0] ? pk.first
				                       : "unknown");
				copy_str(e->pname_domain, sizeof e->pname_domain, domain);
			}
			val = e->pname;
			break;
		}
		transform(val, keep, reverse, delims, is_alpha(letter) && letter < 'a', out, &o, sz,
		          &overflow);
	}
	return overflow ? -1 : (int)o;
}

/* Expands a domain-spec into a name to query, truncated on the left to 253
 * characters (§7.3). Returns 0, or -1 (syntax or size: a permerror). */
static int expand_domain(struct spf_eval *e, const struct auth_spf_term *t, const char *domain,
                         char *out, size_t sz)
{
	if (!t->spec) {
		snprintf(out, sz, "%s", domain);
		return 0;
	}
	char buf[EXPAND_MAX];
	int n = expand(e, t->spec, t->spec_len, domain, 0, buf, sizeof buf);
	if (n < 0) return -1;
	if (n && buf[n - 1] == '.') buf[--n] = 0;
	const char *p = buf;
	while (strlen(p) > 253) {
		const char *dot = strchr(p, '.');
		if (!dot) return -1;
		p = dot + 1;
	}
	snprintf(out, sz, "%s", p);
	return 0;
}

static int check_host(struct spf_eval *e, const char *domain);

/* Counts a term that queries DNS; the 11th is a permerror. */
static int count_term(struct spf_eval *e, const struct auth_spf_term *t)
{
	if (++e->terms > AUTH_SPF_MAX_DNS_TERMS)
		return setreason(e, AUTH_SPF_PERMERROR,
		                 "more than %d DNS-querying terms (at '%.*s')",
		                 AUTH_SPF_MAX_DNS_TERMS, (int)t->text_len, t->text);
	return 0;
}

/* Counts a void lookup; the 3rd is a permerror. */
static int count_void(struct spf_eval *e, const struct auth_spf_term *t)
{
	if (++e->voids > AUTH_SPF_MAX_VOID)
		return setreason(e, AUTH_SPF_PERMERROR, "more than %d void lookups (at '%.*s')",
		                 AUTH_SPF_MAX_VOID, (int)t->text_len, t->text);
	return 0;
}

/* A lookup failure other than "no such data": temperror. */
static int dns_failed(struct spf_eval *e, const struct auth_spf_term *t, const char *name,
                      const struct dns_answer *a)
{
	return setreason(e, AUTH_SPF_TEMPERROR, "DNS %s for %s (term '%.*s')",
	                 dns_lookup_status_name(a->status), name, (int)t->text_len, t->text);
}

static int is_void(const struct dns_answer *a)
{
	return a->status == DNS_LOOKUP_NODATA || a->status == DNS_LOOKUP_NXDOMAIN;
}

static int is_failure(const struct dns_answer *a)
{
	return a->status != DNS_LOOKUP_OK && !is_void(a);
}

struct ptr_match {
	const char *target;
	int hit;
};

static int ptr_check(void *arg, const char *name)
{
	struct ptr_match *m = arg;
	if (name_eq_or_under(name, m->target)) m->hit = 1;
	return m->hit;
}

/* Evaluates one mechanism: returns 1 (match), 0 (no match) or a result
 * (>= 100 + result) for errors that end the evaluation. */
#define STOP(r) (100 + (r))

static int eval_mechanism(struct spf_eval *e, const struct auth_spf_term *t, const char *domain)
{
	const struct auth_spf_request *r = e->req;
	char target[EXPAND_MAX];
	struct dns_answer a;
	int rc;

	switch (t->kind) {
	case AUTH_SPF_ALL:
		return 1;
	case AUTH_SPF_IP4:
		return r->family == AF_INET && prefix_match(r->ip, t->net, t->cidr4);
	case AUTH_SPF_IP6:
		return r->family == AF_INET6 && prefix_match(r->ip, t->net, t->cidr6);
	}

	if ((rc = count_term(e, t)) != 0) return STOP(rc);
	if (expand_domain(e, t, domain, target, sizeof target) < 0)
		return STOP(setreason(e, AUTH_SPF_PERMERROR, "cannot expand '%.*s'",
		                      (int)t->text_len, t->text));

	switch (t->kind) {
	case AUTH_SPF_INCLUDE: {
		int saved = e->in_include;
		e->in_include = 1;
		int res = check_host(e, target);
		e->in_include = saved;
		switch (res) {
		case AUTH_SPF_PASS:
			return 1;
		case AUTH_SPF_FAIL:
		case AUTH_SPF_SOFTFAIL:
		case AUTH_SPF_NEUTRAL:
			return 0;
		case AUTH_SPF_TEMPERROR:
			return STOP(AUTH_SPF_TEMPERROR);
		case AUTH_SPF_NONE:
			return STOP(setreason(e, AUTH_SPF_PERMERROR, "include:%s has no SPF record",
			                      target));
		default:
			return STOP(AUTH_SPF_PERMERROR);
		}
	}
	case AUTH_SPF_A:
	case AUTH_SPF_EXISTS: {
		uint16_t type =
		    t->kind == AUTH_SPF_EXISTS || r->family == AF_INET ? DNS_T_A : DNS_T_AAAA;
		if (!domain_ok(target)) {
			if ((rc = count_void(e, t)) != 0) return STOP(rc);
			return 0;
		}
		dns_lookup(e->dns, target, type, &a);
		if (is_failure(&a)) {
			rc = dns_failed(e, t, target, &a);
			dns_answer_free(&a);
			return STOP(rc);
		}
		int hit;
		if (t->kind == AUTH_SPF_EXISTS)
			hit = a.n > 0;
		else
			hit = addr_matches(&a, r, r->family == AF_INET ? t->cidr4 : t->cidr6);
		int vd = is_void(&a);
		dns_answer_free(&a);
		if (vd && (rc = count_void(e, t)) != 0) return STOP(rc);
		return hit;
	}
	case AUTH_SPF_MX: {
		if (!domain_ok(target)) {
			if ((rc = count_void(e, t)) != 0) return STOP(rc);
			return 0;
		}
		dns_lookup(e->dns, target, DNS_T_MX, &a);
		if (is_failure(&a)) {
			rc = dns_failed(e, t, target, &a);
			dns_answer_free(&a);
			return STOP(rc);
		}
		if (is_void(&a)) {
			dns_answer_free(&a);
			if ((rc = count_void(e, t)) != 0) return STOP(rc);
			return 0;
		}
		if (a.n > AUTH_SPF_MAX_MX) {
			dns_answer_free(&a);
			return STOP(setreason(e, AUTH_SPF_PERMERROR,
			                      "%s has more than %d MX records", target,
			                      AUTH_SPF_MAX_MX));
		}
		int hit = 0;
		for (size_t i = 0; i < a.n && !hit; i++) {
			const char *host = a.rr[i].data;
			if (!strcmp(host, ".") || !*host) continue; /* null MX */
			struct dns_answer h;
			dns_lookup(e->dns, host, r->family == AF_INET ? DNS_T_A : DNS_T_AAAA, &h);
			if (is_failure(&h)) {
				rc = dns_failed(e, t, host, &h);
				dns_answer_free(&h);
				dns_answer_free(&a);
				return STOP(rc);
			}
			hit = addr_matches(&h, r, r->family == AF_INET ? t->cidr4 : t->cidr6);
			dns_answer_free(&h);
		}
		dns_answer_free(&a);
		return hit;
	}
	case AUTH_SPF_PTR: {
		struct ptr_match m = {target, 0};
		int st = validated_names(e, ptr_check, &m);
		if ((st == DNS_LOOKUP_NODATA || st == DNS_LOOKUP_NXDOMAIN) &&
		    (rc = count_void(e, t)) != 0)
			return STOP(rc);
		return m.hit;
	}
	}
	return 0;
}

/* Applies exp= of the record that produced a fail (§6.2); any problem
 * leaves the default explanation. */
static void explain(struct spf_eval *e, const struct auth_spf_record *rec, const char *domain)
{
	char target[EXPAND_MAX], text[EXPAND_MAX];
	if (rec->exp < 0 || e->in_include) return;
	if (expand_domain(e, &rec->terms[rec->exp], domain, target, sizeof target) < 0) return;
	if (!domain_ok(target)) return;
	struct dns_answer a;
	dns_lookup(e->dns, target, DNS_T_TXT, &a);
	if (a.status == DNS_LOOKUP_OK && a.n == 1 &&
	    expand(e, a.rr[0].data, a.rr[0].len, domain, 1, text, sizeof text) >= 0) {
		int ascii = 1;
		for (const char *p = text; *p; p++)
			if ((unsigned char)*p > 0x7e || (unsigned char)*p < 0x20) ascii = 0;
		if (ascii) copy_str(e->out->explanation, sizeof e->out->explanation, text);
	}
	dns_answer_free(&a);
}

static int qualifier_result(char q)
{
	switch (q) {
	case '-':
		return AUTH_SPF_FAIL;
	case '~':
		return AUTH_SPF_SOFTFAIL;
	case '?':
		return AUTH_SPF_NEUTRAL;
	default:
		return AUTH_SPF_PASS;
	}
}

static int eval_record(struct spf_eval *e, const struct auth_spf_record *rec, const char *domain)
{
	for (size_t i = 0; i < rec->n; i++) {
		const struct auth_spf_term *t = &rec->terms[i];
		if (t->kind >= AUTH_SPF_REDIRECT) continue;
		int m = eval_mechanism(e, t, domain);
		if (m >= 100) return m - 100;
		if (m) {
			int res = qualifier_result(t->qualifier);
			setreason(e, res, "%s matched '%.*s' in the record of %s",
			          auth_spf_result_name(res), (int)t->text_len, t->text, domain);
			if (res == AUTH_SPF_FAIL) explain(e, rec, domain);
			return res;
		}
	}
	if (rec->redirect >= 0) {
		const struct auth_spf_term *t = &rec->terms[rec->redirect];
		char target[EXPAND_MAX];
		int rc = count_term(e, t);
		if (rc) return rc;
		if (expand_domain(e, t, domain, target, sizeof target) < 0)
			return setreason(e, AUTH_SPF_PERMERROR, "cannot expand '%.*s'",
			                 (int)t->text_len, t->text);
		int res = check_host(e, target);
		if (res == AUTH_SPF_NONE)
			return setreason(e, AUTH_SPF_PERMERROR, "redirect=%s has no SPF record",
			                 target);
		return res;
	}
	return setreason(e, AUTH_SPF_NEUTRAL, "no mechanism matched in the record of %s", domain);
}

static int check_host(struct spf_eval *e, const char *domain)
{
	if (!domain_ok(domain))
		return setreason(e, AUTH_SPF_NONE, "'%s' is not a valid domain name", domain);
	if (++e->depth > 2 * AUTH_SPF_MAX_DNS_TERMS + 2) /* belt and braces: terms bound it */
		return setreason(e, AUTH_SPF_PERMERROR, "SPF evaluation nested too deeply");
	struct dns_answer a;
	dns_lookup(e->dns, domain, DNS_T_TXT, &a);
	int res;
	if (a.status == DNS_LOOKUP_NXDOMAIN || a.status == DNS_LOOKUP_NODATA) {
		res = setreason(e, AUTH_SPF_NONE, "%s has no SPF record", domain);
	} else if (a.status != DNS_LOOKUP_OK) {
		res = setreason(e, AUTH_SPF_TEMPERROR, "DNS %s looking up the SPF record of %s",
		                dns_lookup_status_name(a.status), domain);
	} else {
		const struct dns_record *found = NULL;
		int count = 0;
		for (size_t i = 0; i < a.n; i++)
			if (auth_spf_is_record(a.rr[i].data, a.rr[i].len)) {
				found = &a.rr[i];
				count++;
			}
		struct auth_spf_record rec;
		struct base_err err;
		if (!count) {
			res = setreason(e, AUTH_SPF_NONE, "%s has no SPF record", domain);
		} else if (count > 1) {
			res = setreason(e, AUTH_SPF_PERMERROR, "%s has %d SPF records", domain,
			                count);
		} else if (auth_spf_parse(found->data, found->len, &rec, &err) < 0) {
			res = setreason(e, AUTH_SPF_PERMERROR, "SPF record of %s: %s", domain,
			                err.msg);
		} else {
			res = eval_record(e, &rec, domain);
			auth_spf_record_free(&rec);
		}
	}
	dns_answer_free(&a);
	e->depth--;
	return res;
}

int auth_spf_check_domain(const struct dns_lookup_ops *dns, const struct auth_spf_request *req,
                          const char *domain, struct auth_spf_outcome *out)
{
	memset(out, 0, sizeof *out);
	/* An IPv4-mapped IPv6 client is the IPv4 client it maps. */
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	struct auth_spf_request v4;
	if (req->family == AF_INET6 && !memcmp(req->ip, mapped, 12)) {
		v4 = *req;
		v4.family = AF_INET;
		memmove(v4.ip, req->ip + 12, 4);
		req = &v4;
	}
	struct spf_eval e;
	memset(&e, 0, sizeof e);
	e.dns = dns;
	e.req = req;
	e.out = out;
	const char *sender = req->sender ? req->sender : "";
	const char *helo = req->helo ? req->helo : "";
	const char *at = strrchr(sender, '@');
	if (!*sender) {
		snprintf(e.local, sizeof e.local, "postmaster");
		copy_str(e.sdomain, sizeof e.sdomain, helo);
	} else if (!at) {
		snprintf(e.local, sizeof e.local, "postmaster");
		copy_str(e.sdomain, sizeof e.sdomain, sender);
	} else {
		if (at == sender)
			snprintf(e.local, sizeof e.local, "postmaster");
		else
			snprintf(e.local, sizeof e.local, "%.*s", (int)(at - sender), sender);
		copy_str(e.sdomain, sizeof e.sdomain, at + 1);
	}
	snprintf(e.sender, sizeof e.sender, "%s@%s", e.local, e.sdomain);
	if (!domain) domain = e.sdomain;
	copy_str(out->domain, sizeof out->domain, domain);
	out->result = check_host(&e, domain);
	out->dns_terms = e.terms;
	out->void_lookups = e.voids;
	if (out->result != AUTH_SPF_FAIL) out->explanation[0] = 0;
	return out->result;
}

int auth_spf_check(const struct dns_lookup_ops *dns, const struct auth_spf_request *req,
                   struct auth_spf_outcome *out)
{
	return auth_spf_check_domain(dns, req, NULL, out);
}
