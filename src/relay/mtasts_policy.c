/*
 * mtasts_policy.c — the parsers of MTA-STS (RFC 8461), all of hostile
 * input and all pure: the `_mta-sts` TXT record (§3.1), the policy file
 * (§3.2), the HTTP/1.x response that carries it, and the cache file the
 * relay keeps it in. Every read is bounded by the length given; errors name
 * the line ("line 3: ...") so that an operator can tell the domain's owner
 * what to fix.
 *
 * The policy file: lines end in LF or CRLF; each is "key:" *WSP value; a
 * key is 1 to 32 of ALPHA, DIGIT, '_', '-', '.'. version (STSv1), mode and
 * max_age are required; a key given twice keeps its first value, except mx,
 * which adds a pattern each time (at least one unless mode is none). Keys
 * the RFC does not define are ignored (extensions). Blank lines are
 * tolerated, as deployed policies often end with one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "relay/int.h"
#include "relay/mtasts.h"

static int is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* ---- the TXT record (§3.1) ------------------------------------------------- */

int mtasts_txt_parse(const char *txt, size_t len, char id[MTASTS_ID_MAX + 1], struct base_err *err)
{
	/* sts-version = "v" *WSP "=" *WSP "STSv1"; candidates start "v=STSv1" */
	if (len < 7 || memcmp(txt, "v=STSv1", 7)) return 0;
	if (len > 7 && !is_wsp(txt[7]) && txt[7] != ';') return 0; /* "v=STSv10": another version */
	int have_id = 0;
	id[0] = 0;
	size_t pos = 7;
	struct relay_txt_field f;
	int k;
	while ((k = relay_txt_next(txt, len, &pos, RELAY_TXT_WSP_EQ, &f, err)) == 1) {
		if (relay_txt_ext_value(&f, err) < 0) return -1;
		if (!relay_txt_name_is(&f, "id") || have_id) continue; /* the first id counts */
		if (f.vlen > MTASTS_ID_MAX)
			return base_errf(err, "id longer than %d characters at offset %zu",
			                 MTASTS_ID_MAX, f.voff);
		for (size_t i = 0; i < f.vlen; i++)
			if (!is_alnum(f.value[i]))
				return base_errf(err,
				                 "id '%.*s': letters and digits only (offset %zu)",
				                 (int)f.vlen, f.value, f.voff + i);
		memcpy(id, f.value, f.vlen);
		id[f.vlen] = 0;
		have_id = 1;
	}
	if (k < 0) return -1;
	if (!have_id) return base_errf(err, "no id field");
	return 1;
}

/* ---- the policy file (§3.2) ------------------------------------------------ */

/* An mx pattern: an LDH domain name, or "*." and one. Lower-cased into out;
 * a trailing dot is dropped. */
static int mx_pattern(const char *v, size_t n, char out[256])
{
	if (n && v[n - 1] == '.') n--;
	if (n == 0 || n > 253) return -1;
	size_t i = 0, label = 0;
	if (n > 2 && v[0] == '*' && v[1] == '.') {
		out[0] = '*';
		out[1] = '.';
		i = 2;
	}
	size_t start = i;
	for (; i < n; i++) {
		char c = v[i];
		if (c == '.') {
			if (!label || v[i - 1] == '-') return -1;
			label = 0;
		} else if (is_alnum(c) || (c == '-' && label)) {
			if (++label > 63) return -1;
		} else {
			return -1;
		}
		out[i] = base_lower(c);
	}
	if (!label || v[n - 1] == '-' || start == n) return -1;
	out[n] = 0;
	return 0;
}

int mtasts_policy_parse(const char *text, size_t len, struct mtasts_policy *p, struct base_err *err)
{
	memset(p, 0, sizeof *p);
	if (len > MTASTS_BODY_MAX)
		return base_errf(err, "policy larger than %d bytes", MTASTS_BODY_MAX);
	const char *s = text, *end = text + len;
	int have_version = 0, have_mode = 0, have_age = 0;
	unsigned line = 0;
	while (s < end) {
		line++;
		const char *eol = memchr(s, '\n', (size_t)(end - s));
		const char *le = eol ? eol : end;
		const char *next = eol ? eol + 1 : end;
		if (le > s && le[-1] == '\r') le--;
		for (const char *q = s; q < le; q++)
			if ((unsigned char)*q < 0x20 && *q != '\t')
				return base_errf(err, "line %u: control character", line);
		if (le == s) { /* a blank line */
			s = next;
			continue;
		}
		const char *k = s;
		while (s < le && (is_alnum(*s) || *s == '_' || *s == '-' || *s == '.')) s++;
		size_t kl = (size_t)(s - k);
		if (!kl || kl > 32 || s == le || *s != ':')
			return base_errf(err, "line %u: expected 'key: value'", line);
		s++;
		while (s < le && is_wsp(*s)) s++;
		const char *v = s;
		size_t vl = (size_t)(le - v);
		while (vl && is_wsp(v[vl - 1])) vl--;
#define KEY(lit) (kl == sizeof lit - 1 && !memcmp(k, lit, kl))
		if (KEY("version")) {
			if (!have_version) {
				if (vl != 5 || memcmp(v, "STSv1", 5))
					return base_errf(
					    err, "line %u: version must be STSv1, not '%.*s'", line,
					    (int)(vl > 40 ? 40 : vl), v);
				have_version = 1;
			}
		} else if (KEY("mode")) {
			if (!have_mode) {
				if (vl == 7 && !memcmp(v, "enforce", 7))
					p->mode = MTASTS_ENFORCE;
				else if (vl == 7 && !memcmp(v, "testing", 7))
					p->mode = MTASTS_TESTING;
				else if (vl == 4 && !memcmp(v, "none", 4))
					p->mode = MTASTS_NONE;
				else
					return base_errf(
					    err,
					    "line %u: mode must be enforce, testing or none, not "
					    "'%.*s'",
					    line, (int)(vl > 40 ? 40 : vl), v);
				have_mode = 1;
			}
		} else if (KEY("max_age")) {
			if (!have_age) {
				uint64_t n = 0;
				size_t i = 0;
				for (; i < vl && i < 11 && v[i] >= '0' && v[i] <= '9'; i++)
					n = n * 10 + (uint64_t)(v[i] - '0');
				if (!vl || i != vl || vl > 10 || n > MTASTS_MAX_AGE_MAX)
					return base_errf(
					    err,
					    "line %u: max_age must be a number of seconds up to "
					    "%u, not '%.*s'",
					    line, MTASTS_MAX_AGE_MAX, (int)(vl > 40 ? 40 : vl), v);
				p->max_age = (uint32_t)n;
				have_age = 1;
			}
		} else if (KEY("mx")) {
			if (p->nmx == MTASTS_MX_MAX)
				return base_errf(err, "line %u: more than %d mx patterns", line,
				                 MTASTS_MX_MAX);
			if (mx_pattern(v, vl, p->mx[p->nmx]) < 0)
				return base_errf(err, "line %u: bad mx pattern '%.*s'", line,
				                 (int)(vl > 80 ? 80 : vl), v);
			p->nmx++;
		}
#undef KEY
		s = next;
	}
	if (!have_version) return base_errf(err, "line %u: no version field", line);
	if (!have_mode) return base_errf(err, "line %u: no mode field", line);
	if (!have_age) return base_errf(err, "line %u: no max_age field", line);
	if (!p->nmx && p->mode != MTASTS_NONE)
		return base_errf(err, "line %u: no mx field (needed by mode %s)", line,
		                 p->mode == MTASTS_ENFORCE ? "enforce" : "testing");
	return 0;
}

int mtasts_mx_match(const struct mtasts_policy *p, const char *host)
{
	char h[256];
	size_t n = strlen(host);
	if (n && host[n - 1] == '.') n--;
	if (n == 0 || n >= sizeof h) return 0;
	for (size_t i = 0; i < n; i++) h[i] = base_lower(host[i]);
	h[n] = 0;
	for (size_t i = 0; i < p->nmx; i++) {
		const char *pat = p->mx[i];
		if (pat[0] == '*') {
			/* one label, then exactly the rest (".example.net") */
			const char *dot = strchr(h, '.');
			if (dot && dot != h && !strcmp(dot, pat + 1)) return 1;
		} else if (!strcmp(h, pat)) {
			return 1;
		}
	}
	return 0;
}

/* ---- the HTTP response ----------------------------------------------------- */

/* A header field's value when the line is "name:" (case-insensitive). */
static const char *header_value(const char *line, size_t n, const char *name, size_t *vl)
{
	size_t nl = strlen(name);
	if (n <= nl || line[nl] != ':' || strncasecmp(line, name, nl)) return NULL;
	const char *v = line + nl + 1, *e = line + n;
	while (v < e && is_wsp(*v)) v++;
	while (e > v && is_wsp(e[-1])) e--;
	*vl = (size_t)(e - v);
	return v;
}

int mtasts_http_parse(const char *buf, size_t len, const char **body, size_t *blen,
                      struct base_err *err)
{
	const char *end = buf + len;
	/* the header ends at the first empty line (CRLF CRLF, or LF LF) */
	const char *hend = NULL, *bstart = NULL;
	for (const char *q = buf; q < end; q++) {
		if (*q != '\n') continue;
		if (q + 1 < end && q[1] == '\n') {
			hend = q + 1, bstart = q + 2;
			break;
		}
		if (q + 2 < end && q[1] == '\r' && q[2] == '\n') {
			hend = q + 1, bstart = q + 3;
			break;
		}
	}
	if (!hend) return base_errf(err, "HTTP response without a complete header");
	if (hend - buf > 16384) return base_errf(err, "HTTP header larger than 16 KB");
	const char *eol = memchr(buf, '\n', (size_t)(hend - buf));
	size_t sl = (size_t)(eol - buf);
	if (sl && buf[sl - 1] == '\r') sl--;
	if (sl < 12 || memcmp(buf, "HTTP/1.", 7) || buf[8] != ' ' || buf[9] < '1' || buf[9] > '5' ||
	    buf[10] < '0' || buf[10] > '9' || buf[11] < '0' || buf[11] > '9' ||
	    (sl > 12 && buf[12] != ' '))
		return base_errf(err, "bad HTTP status line '%.*s'", (int)(sl > 60 ? 60 : sl), buf);
	int status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
	if (status >= 300 && status < 400)
		return base_errf(err, "HTTP %d: redirects are not followed (RFC 8461 3.3)", status);
	if (status < 200 || status >= 300)
		return base_errf(err, "HTTP %d: '%.*s'", status, (int)(sl > 80 ? 80 : sl), buf);
	int have_len = 0, plain = 0;
	uint64_t clen = 0;
	for (const char *l = eol + 1; l < hend;) {
		const char *le = memchr(l, '\n', (size_t)(hend - l));
		if (!le) le = hend;
		size_t n = (size_t)(le - l);
		if (n && l[n - 1] == '\r') n--;
		size_t vl;
		const char *v;
		if ((v = header_value(l, n, "content-length", &vl))) {
			size_t i = 0;
			clen = 0;
			for (; i < vl && i < 12 && v[i] >= '0' && v[i] <= '9'; i++)
				clen = clen * 10 + (uint64_t)(v[i] - '0');
			if (!vl || i != vl)
				return base_errf(err, "bad Content-Length '%.*s'",
				                 (int)(vl > 40 ? 40 : vl), v);
			have_len = 1;
		} else if ((v = header_value(l, n, "transfer-encoding", &vl))) {
			return base_errf(err, "Transfer-Encoding '%.*s' in a reply to HTTP/1.0",
			                 (int)(vl > 40 ? 40 : vl), v);
		} else if ((v = header_value(l, n, "content-type", &vl))) {
			/* text/plain, perhaps with parameters (charset) */
			plain = vl >= 10 && !strncasecmp(v, "text/plain", 10) &&
			        (vl == 10 || v[10] == ';' || is_wsp(v[10]));
			if (!plain)
				return base_errf(err, "media type '%.*s', not text/plain",
				                 (int)(vl > 60 ? 60 : vl), v);
		}
		l = le + 1;
	}
	if (!plain) return base_errf(err, "no Content-Type (text/plain expected)");
	size_t have = (size_t)(end - bstart);
	if (have_len) {
		if (clen > MTASTS_BODY_MAX)
			return base_errf(err, "policy of %llu bytes, more than %d",
			                 (unsigned long long)clen, MTASTS_BODY_MAX);
		if (have < clen)
			return base_errf(err, "body cut short: %zu of %llu bytes", have,
			                 (unsigned long long)clen);
		have = (size_t)clen;
	}
	if (have > MTASTS_BODY_MAX)
		return base_errf(err, "policy larger than %d bytes", MTASTS_BODY_MAX);
	*body = bstart;
	*blen = have;
	return 0;
}

/* ---- the cache file -------------------------------------------------------- */

void mtasts_cache_format(struct base_buf *out, const char *id, int64_t fetched, const char *body,
                         size_t blen)
{
	base_buf_printf(out, "id %s\nfetched %lld\n\n", id, (long long)fetched);
	base_buf_append(out, body, blen);
}

int mtasts_cache_parse(const char *text, size_t len, char id[MTASTS_ID_MAX + 1], int64_t *fetched,
                       struct mtasts_policy *p, struct base_err *err)
{
	const char *end = text + len, *s = text;
	const char *l1 = memchr(s, '\n', len);
	if (!l1 || l1 - s < 4 || memcmp(s, "id ", 3))
		return base_errf(err, "line 1: expected 'id ID'");
	size_t il = (size_t)(l1 - s - 3);
	if (il > MTASTS_ID_MAX) return base_errf(err, "line 1: id too long");
	for (size_t i = 0; i < il; i++)
		if (!is_alnum(s[3 + i])) return base_errf(err, "line 1: bad id");
	memcpy(id, s + 3, il);
	id[il] = 0;
	s = l1 + 1;
	const char *l2 = memchr(s, '\n', (size_t)(end - s));
	if (!l2 || l2 - s < 9 || memcmp(s, "fetched ", 8))
		return base_errf(err, "line 2: expected 'fetched SECONDS'");
	uint64_t t = 0;
	size_t dl = (size_t)(l2 - s - 8), i = 0;
	for (; i < dl && i < 12 && s[8 + i] >= '0' && s[8 + i] <= '9'; i++)
		t = t * 10 + (uint64_t)(s[8 + i] - '0');
	if (i != dl) return base_errf(err, "line 2: bad time");
	*fetched = (int64_t)t;
	s = l2 + 1;
	if (s == end || *s != '\n') return base_errf(err, "line 3: expected an empty line");
	s++;
	struct base_err e2;
	if (mtasts_policy_parse(s, (size_t)(end - s), p, &e2) < 0) {
		/* the policy's line numbers, shifted past the three header lines */
		unsigned n;
		const char *rest;
		if (sscanf(e2.msg, "line %u:", &n) == 1 && (rest = strchr(e2.msg, ':')))
			return base_errf(err, "line %u:%s", n + 3, rest + 1);
		return base_errf(err, "%s", e2.msg);
	}
	return 0;
}

int mtasts_domain_ok(const char *domain)
{
	size_t n = strlen(domain), label = 0;
	if (n == 0 || n > 253) return 0;
	for (size_t i = 0; i < n; i++) {
		char c = domain[i];
		if (c == '.') {
			if (!label || domain[i - 1] == '-') return 0;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		           (c == '-' && label)) {
			if (++label > 63) return 0;
		} else {
			return 0;
		}
	}
	return label && domain[n - 1] != '-';
}

/* ---- settings -------------------------------------------------------------- */

int relay_mtasts_set(struct relay_config *c, const char *key, const char *value,
                     struct base_err *err)
{
	if (!strcmp(key, "mta-sts")) {
		if (!strcmp(value, "on") || !strcmp(value, "yes"))
			c->mta_sts_off = 0;
		else if (!strcmp(value, "off") || !strcmp(value, "no"))
			c->mta_sts_off = 1;
		else
			return base_errf(err, "mta-sts: expected on or off, not '%s'", value);
	} else if (!strcmp(key, "mta-sts-port")) {
		uint64_t n;
		int k = base_parse_uint(value, 65535, &n);
		if (k <= 0 || value[k] || n == 0)
			return base_errf(err, "mta-sts-port: bad port '%s'", value);
		c->mta_sts_port = (uint16_t)n;
	} else if (!strcmp(key, "mta-sts-timeout")) {
		uint32_t t;
		if (base_parse_duration(value, &t, err) < 0) return -1;
		if (t == 0 || t > 600)
			return base_errf(err, "mta-sts-timeout: from 1s to 10m, not '%s'", value);
		c->mta_sts_timeout = t;
	} else {
		return 1;
	}
	return 0;
}

int relay_mtasts_applies(const struct relay_config *c, const char *domain)
{
	for (size_t i = 0; i < c->ntls_policy; i++)
		if (!base_strcasecmp_ascii(c->tls_policy[i].domain, domain)) return 0;
	const struct relay_domain_limits *d = relay_domain_find(c, domain);
	if (d && d->mta_sts) return d->mta_sts > 0;
	return !c->mta_sts_off;
}

int relay_mtasts_any(const struct relay_config *c)
{
	if (!c->mta_sts_off) return 1;
	for (size_t i = 0; i < c->ndomains; i++)
		if (c->domains[i].mta_sts > 0) return 1;
	return 0;
}
