/*
 * dsnparam.c — the DSN extension's ESMTP parameters (RFC 3461 §4) and the
 * spool form they are kept in (dsnparam.h).
 *
 * Parameters are space-separated KEY=VALUE words; keys are matched without
 * regard to case. Each DSN parameter may appear once. ENVID and ORCPT are
 * xtext: printable ASCII from '!' to '~' except '+' and '=', which (like
 * any other octet) are written "+XX" with two upper-case hex digits. The
 * decoded values are kept, and only printable ASCII is accepted once
 * decoded, so that nothing taken from a client can break a DSN's header
 * fields; they are encoded again when passed on to a next hop.
 */
#include <stdlib.h>
#include <string.h>

#include "relay/dsnparam.h"

static int ieq(const char *a, size_t alen, const char *b)
{
	size_t n = strlen(b);
	if (alen != n) return 0;
	for (size_t i = 0; i < n; i++)
		if (base_lower(a[i]) != base_lower(b[i])) return 0;
	return 1;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

int relay_xtext_decode(const char *in, size_t len, char *out, size_t n)
{
	size_t k = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c == '+') {
			if (i + 2 >= len) return -1;
			int h = hexval(in[i + 1]), l = hexval(in[i + 2]);
			if (h < 0 || l < 0) return -1;
			c = (unsigned char)(h * 16 + l);
			if (c < 0x20 || c > 0x7e) return -1;
			i += 2;
		} else if (c < '!' || c > '~' || c == '=') {
			return -1;
		}
		if (k + 1 >= n) return -1;
		out[k++] = (char)c;
	}
	if (n) out[k] = 0;
	return (int)k;
}

void relay_xtext_encode(struct base_buf *b, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < '!' || c > '~' || c == '+' || c == '=')
			base_buf_printf(b, "+%02X", c);
		else
			base_buf_append(b, s, 1);
	}
}

const char *relay_notify_text(uint8_t notify, char *buf, size_t n)
{
	static const struct {
		uint8_t bit;
		const char *name;
	} kw[] = {{RELAY_NOTIFY_NEVER, "NEVER"},
	          {RELAY_NOTIFY_SUCCESS, "SUCCESS"},
	          {RELAY_NOTIFY_FAILURE, "FAILURE"},
	          {RELAY_NOTIFY_DELAY, "DELAY"}};
	size_t k = 0;
	if (n) buf[0] = 0;
	for (size_t i = 0; i < sizeof kw / sizeof kw[0]; i++) {
		if (!(notify & kw[i].bit)) continue;
		int w = snprintf(buf + k, n - k, "%s%s", k ? "," : "", kw[i].name);
		if (w < 0 || (size_t)w >= n - k) break;
		k += (size_t)w;
	}
	return buf;
}

/* One KEY=VALUE word of params (has_eq 0: no '=', the value is empty). */
struct word {
	const char *key, *val;
	size_t klen, vlen;
	int has_eq;
};

static size_t next_word(const char *p, size_t len, size_t i, struct word *w)
{
	while (i < len && p[i] == ' ') i++;
	size_t s = i;
	while (i < len && p[i] != ' ') i++;
	const char *eq = memchr(p + s, '=', i - s);
	w->key = p + s;
	w->klen = eq ? (size_t)(eq - (p + s)) : i - s;
	w->val = eq ? eq + 1 : p + i;
	w->vlen = eq ? (size_t)(p + i - (eq + 1)) : 0;
	w->has_eq = eq != NULL;
	return i;
}

int relay_dsn_parse_mail(const char *params, size_t len, struct relay_dsn_mail *out,
                         struct base_err *err)
{
	memset(out, 0, sizeof *out);
	int have_envid = 0;
	for (size_t i = 0; i < len;) {
		struct word w;
		i = next_word(params, len, i, &w);
		if (!w.klen && !w.has_eq) continue;
		if (ieq(w.key, w.klen, "RET")) {
			if (out->ret) return base_errf(err, "RET parameter given twice");
			if (!w.has_eq) return base_errf(err, "RET parameter without a value");
			if (ieq(w.val, w.vlen, "FULL"))
				out->ret = RELAY_RET_FULL;
			else if (ieq(w.val, w.vlen, "HDRS"))
				out->ret = RELAY_RET_HDRS;
			else
				return base_errf(err, "RET parameter must be FULL or HDRS");
		} else if (ieq(w.key, w.klen, "ENVID")) {
			if (have_envid) return base_errf(err, "ENVID parameter given twice");
			if (!w.vlen) return base_errf(err, "ENVID parameter without a value");
			if (w.vlen > RELAY_DSN_ENVID_MAX)
				return base_errf(err, "ENVID parameter longer than %d characters",
				                 RELAY_DSN_ENVID_MAX);
			if (relay_xtext_decode(w.val, w.vlen, out->envid, sizeof out->envid) < 0)
				return base_errf(err, "ENVID parameter is not valid xtext");
			have_envid = 1;
		}
	}
	return 0;
}

static int atom_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_';
}

static int parse_notify(const char *v, size_t n, uint8_t *out, struct base_err *err)
{
	uint8_t bits = RELAY_NOTIFY_SET;
	if (!n) return base_errf(err, "NOTIFY parameter without a value");
	for (size_t i = 0; i <= n;) {
		const char *c = memchr(v + i, ',', n - i);
		size_t e = c ? (size_t)(c - v) : n;
		uint8_t b = ieq(v + i, e - i, "NEVER")     ? RELAY_NOTIFY_NEVER
		            : ieq(v + i, e - i, "SUCCESS") ? RELAY_NOTIFY_SUCCESS
		            : ieq(v + i, e - i, "FAILURE") ? RELAY_NOTIFY_FAILURE
		            : ieq(v + i, e - i, "DELAY")   ? RELAY_NOTIFY_DELAY
		                                           : 0;
		if (!b)
			return base_errf(err,
			                 "NOTIFY parameter must be NEVER or a list of SUCCESS, "
			                 "FAILURE, DELAY");
		if (bits & b) return base_errf(err, "NOTIFY parameter names a keyword twice");
		bits |= b;
		if (!c) break;
		i = e + 1;
	}
	if ((bits & RELAY_NOTIFY_NEVER) && bits != (RELAY_NOTIFY_SET | RELAY_NOTIFY_NEVER))
		return base_errf(err, "NOTIFY parameter: NEVER cannot be combined with others");
	*out = bits;
	return 0;
}

int relay_dsn_parse_rcpt(const char *params, size_t len, struct relay_dsn_rcpt *out,
                         struct base_err *err)
{
	memset(out, 0, sizeof *out);
	int have_orcpt = 0;
	for (size_t i = 0; i < len;) {
		struct word w;
		i = next_word(params, len, i, &w);
		if (!w.klen && !w.has_eq) continue;
		if (ieq(w.key, w.klen, "NOTIFY")) {
			if (out->notify) return base_errf(err, "NOTIFY parameter given twice");
			if (parse_notify(w.val, w.vlen, &out->notify, err) < 0) return -1;
		} else if (ieq(w.key, w.klen, "ORCPT")) {
			if (have_orcpt) return base_errf(err, "ORCPT parameter given twice");
			if (w.vlen > RELAY_DSN_ORCPT_MAX)
				return base_errf(err, "ORCPT parameter longer than %d characters",
				                 RELAY_DSN_ORCPT_MAX);
			const char *semi = memchr(w.val, ';', w.vlen);
			size_t tl = semi ? (size_t)(semi - w.val) : 0;
			if (!semi || !tl || semi + 1 == w.val + w.vlen)
				return base_errf(err, "ORCPT parameter must be addr-type;address");
			for (size_t k = 0; k < tl; k++)
				if (!atom_char(w.val[k]))
					return base_errf(err, "ORCPT parameter: bad address type");
			memcpy(out->orcpt, w.val, tl + 1);
			if (relay_xtext_decode(semi + 1, (size_t)(w.val + w.vlen - semi - 1),
			                       out->orcpt + tl + 1, sizeof out->orcpt - tl - 1) < 0)
				return base_errf(err,
				                 "ORCPT parameter: the address is not valid xtext");
			have_orcpt = 1;
		}
	}
	return 0;
}

/* ---- the spool form ------------------------------------------------------- */

int relay_dsn_given(const struct relay_dsn_params *p)
{
	if (p->ret || p->envid) return 1;
	for (uint32_t i = 0; i < p->nrcpt; i++)
		if (p->notify[i] || p->orcpt[i]) return 1;
	return 0;
}

void relay_dsn_encode(struct base_buf *out, const struct relay_dsn_params *p)
{
	const char *ret = p->ret == RELAY_RET_FULL   ? "FULL"
	                  : p->ret == RELAY_RET_HDRS ? "HDRS"
	                                             : "";
	base_buf_printf(out, "%s%c%s%c%u%c", ret, 0, p->envid ? p->envid : "", 0, p->nrcpt, 0);
	for (uint32_t i = 0; i < p->nrcpt; i++)
		base_buf_printf(out, "%u%c%s%c", p->notify[i], 0, p->orcpt[i] ? p->orcpt[i] : "",
		                0);
}

void relay_dsn_params_free(struct relay_dsn_params *p)
{
	if (!p) return;
	for (uint32_t i = 0; p->orcpt && i < p->nrcpt; i++) free(p->orcpt[i]);
	free(p->orcpt);
	free(p->notify);
	free(p->envid);
	free(p);
}

/* The next NUL-terminated field of p[*off..len), at most max bytes. */
static const char *field(const char *p, size_t len, size_t *off, size_t max)
{
	if (*off >= len) return NULL;
	const char *z = memchr(p + *off, 0, len - *off);
	if (!z || (size_t)(z - (p + *off)) > max) return NULL;
	const char *s = p + *off;
	*off = (size_t)(z - p) + 1;
	return s;
}

/* A decimal number in its one spelling (no sign, no leading zero), <= max;
 * -1 if s is not that. */
static long canon_num(const char *s, long max)
{
	if (!s || !*s || (s[0] == '0' && s[1])) return -1;
	long v = 0;
	for (; *s; s++) {
		if (*s < '0' || *s > '9') return -1;
		v = v * 10 + (*s - '0');
		if (v > max) return -1;
	}
	return v;
}

static int printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) return 0;
	return 1;
}

int relay_dsn_decode(const char *p, size_t len, struct relay_dsn_params **out, struct base_err *err)
{
	size_t off = 0;
	if (out) *out = NULL;
	const char *ret = field(p, len, &off, 4);
	int rv = !ret                   ? -1
	         : !*ret                ? RELAY_RET_NONE
	         : !strcmp(ret, "FULL") ? RELAY_RET_FULL
	         : !strcmp(ret, "HDRS") ? RELAY_RET_HDRS
	                                : -1;
	if (rv < 0) return base_errf(err, "DSN parameters: byte %zu: bad RET", off);
	const char *envid = field(p, len, &off, RELAY_DSN_ENVID_MAX);
	if (!envid || !printable(envid))
		return base_errf(err, "DSN parameters: byte %zu: bad ENVID", off);
	long n = canon_num(field(p, len, &off, 4), 1000);
	if (n <= 0) return base_errf(err, "DSN parameters: byte %zu: bad recipient count", off);
	struct relay_dsn_params *d = NULL;
	if (out) {
		d = base_xcalloc(1, sizeof *d);
		d->ret = rv;
		d->envid = *envid ? base_xstrdup(envid) : NULL;
		d->nrcpt = (uint32_t)n;
		d->notify = base_xcalloc(n, 1);
		d->orcpt = base_xcalloc(n, sizeof *d->orcpt);
	}
	for (uint32_t i = 0; i < n; i++) {
		long v = canon_num(field(p, len, &off, 3), 31);
		const char *oc = v >= 0 ? field(p, len, &off, RELAY_DSN_ORCPT_MAX) : NULL;
		/* as the parser leaves NOTIFY: absent, or given with keywords, NEVER alone */
		int bad =
		    v < 0 || (v && (!(v & RELAY_NOTIFY_SET) || v == RELAY_NOTIFY_SET)) ||
		    ((v & RELAY_NOTIFY_NEVER) && v != (RELAY_NOTIFY_SET | RELAY_NOTIFY_NEVER)) ||
		    !oc || !printable(oc);
		if (bad) {
			relay_dsn_params_free(d);
			return base_errf(err, "DSN parameters: byte %zu: bad recipient %u", off, i);
		}
		if (d) {
			d->notify[i] = (uint8_t)v;
			d->orcpt[i] = *oc ? base_xstrdup(oc) : NULL;
		}
	}
	if (off != len) {
		relay_dsn_params_free(d);
		return base_errf(err, "DSN parameters: byte %zu: trailing bytes", off);
	}
	if (out) *out = d;
	return 0;
}
