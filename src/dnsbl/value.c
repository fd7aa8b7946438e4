/*
 * value.c — what every dataset type shares: A+TXT values (interned per
 * dataset), the "$" special lines, TTL handling, TXT template expansion,
 * and load-time warnings that name file:line.
 *
 * Interning: values are looked up in an open-addressing hash on (A, TXT)
 * while a dataset loads, so a million entries with the default value cost
 * one ds_val, and entries can refer to values by a 32-bit vid.
 */
#include "dnsbl/int.h"

#include <stdlib.h>
#include <string.h>

#define WARN_LIMIT 5

void ds_warn(struct ds *ds, const char *fmt, ...)
{
	ds->warnings++;
	if (ds->warnings > WARN_LIMIT) return;
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	base_warn("%s:%lu: %s", ds->cur_file ? ds->cur_file : "?", ds->cur_line, msg);
}

/* ---- interning --------------------------------------------------------- */

struct valhash {
	uint32_t *slots; /* vid+1, 0 = empty */
	uint32_t mask;
};

static uint64_t val_hash(const uint8_t a[4], const char *txt, size_t len)
{
	uint64_t h = 1469598103934665603ull;
	for (int i = 0; i < 4; i++) h = (h ^ a[i]) * 1099511628211ull;
	for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)txt[i]) * 1099511628211ull;
	return h ^ (h >> 29);
}

static void valhash_grow(struct ds *ds)
{
	struct valhash *vh = ds->valhash;
	uint32_t ncap = vh->slots ? (vh->mask + 1) * 2 : 64;
	uint32_t *ns = base_xcalloc(ncap, sizeof *ns);
	for (uint32_t v = 0; v < ds->nvals; v++) {
		const struct ds_val *x = &ds->vals[v];
		uint64_t h = val_hash(x->a, x->txt, strlen(x->txt));
		uint32_t i = (uint32_t)h & (ncap - 1);
		while (ns[i]) i = (i + 1) & (ncap - 1);
		ns[i] = v + 1;
	}
	free(vh->slots);
	vh->slots = ns;
	vh->mask = ncap - 1;
}

uint32_t ds_intern(struct ds *ds, const uint8_t a[4], const char *txt, size_t len)
{
	struct valhash *vh = ds->valhash;
	if (!vh) {
		vh = ds->valhash = base_xcalloc(1, sizeof *vh);
	}
	if (!vh->slots || (ds->nvals + 1) * 2 > vh->mask + 1) valhash_grow(ds);
	uint64_t h = val_hash(a, txt, len);
	uint32_t i = (uint32_t)h & vh->mask;
	while (vh->slots[i]) {
		const struct ds_val *x = &ds->vals[vh->slots[i] - 1];
		if (!memcmp(x->a, a, 4) && !strncmp(x->txt, txt, len) && x->txt[len] == '\0')
			return vh->slots[i] - 1;
		i = (i + 1) & vh->mask;
	}
	if (ds->nvals == ds->capvals) {
		ds->capvals = ds->capvals ? ds->capvals * 2 : 16;
		ds->vals = base_xrealloc(ds->vals, ds->capvals * sizeof *ds->vals);
	}
	uint32_t vid = ds->nvals++;
	memcpy(ds->vals[vid].a, a, 4);
	ds->vals[vid].txt = base_arena_strndup(&ds->arena, txt, len);
	vh->slots[i] = vid + 1;
	return vid;
}

void ds_intern_done(struct ds *ds)
{
	struct valhash *vh = ds->valhash;
	if (!vh) return;
	free(vh->slots);
	free(vh);
	ds->valhash = NULL;
}

/* ---- values ------------------------------------------------------------ */

uint32_t ds_parse_value(struct ds *ds, const char *s, uint32_t def)
{
	const struct ds_val *d = &ds->vals[def];
	uint8_t a[4];
	const char *txt;
	memcpy(a, d->a, 4);
	if (*s == ':') {
		uint32_t addr;
		const char *end;
		s++;
		int parts = ip4_parse_addr(s, &addr, &end);
		if (parts < 0 || addr == 0) {
			ds_warn(ds, "invalid A RR");
			return 0;
		}
		if (parts == 1) addr |= 0x7f000000u; /* ":2" means 127.0.0.2 */
		a[0] = (uint8_t)(addr >> 24);
		a[1] = (uint8_t)(addr >> 16);
		a[2] = (uint8_t)(addr >> 8);
		a[3] = (uint8_t)addr;
		s = base_skip_ws(end);
		if (*s == ':') {
			txt = base_skip_ws(s + 1);
		} else if (!*s) {
			txt = d->txt;
		} else {
			ds_warn(ds, "unrecognized value for an entry");
			return 0;
		}
	} else {
		txt = s;
	}
	size_t len = strlen(txt);
	if (len > 255) {
		ds_warn(ds, "TXT RR truncated to 255 bytes");
		len = 255;
	}
	return ds_intern(ds, a, txt, len);
}

/* ---- time and TTL ------------------------------------------------------ */

int ds_parse_time(const char *s, uint32_t *out, const char **end)
{
	uint64_t v;
	int n = base_parse_uint(s, UINT32_MAX, &v);
	if (n < 0) return -1;
	s += n;
	uint64_t m = 1;
	switch (*s) {
	case 's': case 'S': m = 1; s++; break;
	case 'm': case 'M': m = 60; s++; break;
	case 'h': case 'H': m = 3600; s++; break;
	case 'd': case 'D': m = 86400; s++; break;
	case 'w': case 'W': m = 604800; s++; break;
	default: break;
	}
	if (v * m > UINT32_MAX) return -1;
	if (*s && *s != ' ' && *s != '\t' && *s != ':') return -1;
	*out = (uint32_t)(v * m);
	if (end) *end = s;
	return 0;
}

uint32_t ds_clamp_ttl(const struct ds *ds, uint32_t ttl)
{
	if (ttl == 0) return ds->ttl;
	if (ds->opts->minttl && ttl < ds->opts->minttl) ttl = ds->opts->minttl;
	if (ds->opts->maxttl && ttl > ds->opts->maxttl) ttl = ds->opts->maxttl;
	return ttl;
}

/* ---- specials ---------------------------------------------------------- */

/* Reads one whitespace-delimited token into buf. */
static const char *token(const char *s, char *buf, size_t bufsz)
{
	s = base_skip_ws(s);
	size_t n = 0;
	while (*s && *s != ' ' && *s != '\t') {
		if (n + 1 < bufsz) buf[n++] = *s;
		s++;
	}
	buf[n] = '\0';
	return s;
}

static int keyword(const char *s, const char *kw, const char **rest)
{
	size_t n = strlen(kw);
	for (size_t i = 0; i < n; i++)
		if (base_lower(s[i]) != base_lower(kw[i])) return 0;
	if (s[n] != ' ' && s[n] != '\t') return 0;
	*rest = base_skip_ws(s + n);
	return 1;
}

static int parse_soa(struct ds *ds, const char *s)
{
	char tok[300];
	struct ds_soa soa;
	uint32_t ttl;
	struct base_err e;
	s = token(s, tok, sizeof tok);
	if (ds_parse_time(tok, &ttl, NULL) < 0) return 0;
	soa.ttl = ttl ? ds_clamp_ttl(ds, ttl) : ds->ttl;
	s = token(s, tok, sizeof tok);
	if (!*tok || dns_name_from_text(&soa.mname, tok, 0, &e) < 0) return 0;
	s = token(s, tok, sizeof tok);
	if (!*tok || dns_name_from_text(&soa.rname, tok, 0, &e) < 0) return 0;
	uint64_t serial;
	s = token(s, tok, sizeof tok);
	int n = base_parse_uint(tok, UINT32_MAX, &serial);
	if (n < 0 || tok[n]) return 0;
	soa.serial = (uint32_t)serial;
	uint32_t *f[] = {&soa.refresh, &soa.retry, &soa.expire, &soa.minimum};
	for (int i = 0; i < 4; i++) {
		s = token(s, tok, sizeof tok);
		const char *end;
		if (ds_parse_time(tok, f[i], &end) < 0 || *end) return 0;
	}
	if (*base_skip_ws(s)) return 0;
	if (!ds->soa) {
		ds->soa = base_arena_alloc(&ds->arena, sizeof soa);
		*ds->soa = soa;
	}
	return 1;
}

static int parse_ns(struct ds *ds, const char *s)
{
	char tok[300];
	uint32_t ttl;
	struct base_err e;
	if (*s < '0' || *s > '9') return 0;
	s = token(s, tok, sizeof tok);
	if (ds_parse_time(tok, &ttl, NULL) < 0) return 0;
	struct dns_name names[DS_MAX_NS];
	unsigned n = 0, tokens = 0;
	for (;;) {
		s = token(s, tok, sizeof tok);
		if (!*tok) break;
		tokens++;
		if (tok[0] == '-') continue;
		struct dns_name nm;
		if (dns_name_from_text(&nm, tok, 0, &e) < 0) return 0;
		int dup = 0;
		for (unsigned i = 0; i < n; i++)
			if (nm.len == names[i].len && !strncasecmp((char *)nm.wire, (char *)names[i].wire, nm.len)) dup = 1;
		if (dup) continue;
		if (n == DS_MAX_NS) {
			ds_warn(ds, "too many NS records specified, only first %d will be used", DS_MAX_NS);
			break;
		}
		names[n++] = nm;
	}
	if (!tokens) return 0;
	if (ds->ns) return 1; /* only the first $NS line counts */
	ds->ns_ttl = ttl ? ds_clamp_ttl(ds, ttl) : ds->ttl;
	ds->ns = base_arena_alloc(&ds->arena, sizeof(struct dns_name) * (n ? n : 1));
	memcpy(ds->ns, names, sizeof(struct dns_name) * n);
	ds->nns = n;
	if (!n) ds->ns = base_arena_alloc(&ds->arena, sizeof(struct dns_name)); /* marks "seen" */
	return 1;
}

/* yyyy mm dd [hh [mi [ss]]], each optionally followed by ':' or '-'. */
static int parse_stamp(const char *s, time_t *out, const char **end)
{
	static const int width[] = {4, 2, 2, 2, 2, 2};
	int v[6] = {0, 1, 1, 0, 0, 0};
	int i;
	if ((s[0] == '0' || s[0] == '-' || s[0] == ':') && (!s[1] || s[1] == ' ' || s[1] == '\t')) {
		*out = 0;
		*end = s + 1;
		return 0;
	}
	for (i = 0; i < 6; i++) {
		if (!*s || *s == ' ' || *s == '\t') break;
		int x = 0;
		for (int k = 0; k < width[i]; k++) {
			if (s[k] < '0' || s[k] > '9') return -1;
			x = x * 10 + (s[k] - '0');
		}
		v[i] = x;
		s += width[i];
		if (*s == ':' || *s == '-') s++;
	}
	if (i < 3) return -1;
	if (v[0] < 1970 || v[0] > 2099 || !base_valid_date(v[0], v[1], v[2]) || v[3] > 23 ||
	    v[4] > 59 || v[5] > 59)
		return -1;
	char iso[64];
	snprintf(iso, sizeof iso, "%04d-%02d-%02dT%02d:%02d:%02dZ", v[0], v[1], v[2], v[3], v[4], v[5]);
	*end = s;
	return base_parse_iso8601(iso, out);
}

static int parse_timestamp(struct ds *ds, const char *s, struct base_err *err)
{
	time_t created, expires = 0;
	const char *end;
	if (parse_stamp(s, &created, &end) < 0) return 0;
	s = base_skip_ws(end);
	if (*s == '+') {
		uint32_t rel;
		if (!created || ds_parse_time(s + 1, &rel, &end) < 0) return 0;
		expires = created + rel;
		s = end;
	} else if (*s) {
		if (parse_stamp(s, &expires, &end) < 0) return 0;
		s = end;
	}
	if (*base_skip_ws(s)) return 0;
	time_t now = base_now();
	if (created && created > now) {
		base_errf(err, "%s:%lu: data timestamp is %ld sec in the future, aborting loading",
			  ds->cur_file, ds->cur_line, (long)(created - now));
		return -1;
	}
	if (expires && (!ds->expires || expires < ds->expires)) ds->expires = expires;
	return 1;
}

static int parse_maxrange(struct ds *ds, const char *s)
{
	uint64_t v;
	uint32_t m;
	int n;
	if (*s == '/') {
		n = base_parse_uint(s + 1, 32, &v);
		if (n < 0 || *base_skip_ws(s + 1 + n)) return 0;
		m = v == 0 ? 0 : (uint32_t)(1ull << (32 - v)); /* /0 wraps to "no limit", as rbldnsd */
	} else {
		n = base_parse_uint(s, UINT32_MAX, &v);
		if (n < 0 || v == 0 || *base_skip_ws(s + n)) return 0;
		m = (uint32_t)v;
	}
	if (ds->maxrange4 && m && m > ds->maxrange4) {
		ds_warn(ds, "ignoring attempt to increase $MAXRANGE4 from %u to %u", ds->maxrange4, m);
		return 1;
	}
	ds->maxrange4 = m;
	return 1;
}

int ds_special(struct ds *ds, const char *s, struct base_err *err)
{
	const char *rest;
	/* substitution variables and the base template */
	if (((*s >= '0' && *s <= '9') || *s == '=') && (s[1] == ' ' || s[1] == '\t')) {
		rest = base_skip_ws(s + 1);
		if (!*rest) return 0;
		const char **slot = *s == '=' ? &ds->basetpl : &ds->subst[*s - '0'];
		if (!*slot) *slot = base_arena_strndup(&ds->arena, rest, strlen(rest));
		return 1;
	}
	if (keyword(s, "SOA", &rest)) return ds->type->flags & DST_ACL ? 0 : parse_soa(ds, rest);
	if (keyword(s, "NS", &rest) || keyword(s, "NAMESERVER", &rest))
		return ds->type->flags & DST_ACL ? 0 : parse_ns(ds, rest);
	if (keyword(s, "TTL", &rest)) {
		uint32_t t;
		const char *end;
		if (ds_parse_time(rest, &t, &end) < 0 || *base_skip_ws(end)) return 0;
		ds->ttl = t ? ds_clamp_ttl(ds, t) : ds->opts->defttl;
		return 1;
	}
	if (keyword(s, "MAXRANGE4", &rest)) return parse_maxrange(ds, rest);
	if (keyword(s, "TIMESTAMP", &rest)) return parse_timestamp(ds, rest, err);
	return 0;
}

/* ---- TXT templates ----------------------------------------------------- */

size_t ds_txt_expand(const struct ds *ds, const char *tpl, const char *subst, char *out)
{
	const size_t max = 254;
	const char *sx;
	const char *t;
	if (tpl[0] == '=') {
		t = tpl + 1;
		sx = t;
	} else if (ds->basetpl && ds->basetpl[0]) {
		t = ds->basetpl;
		sx = tpl[0] ? tpl : subst;
	} else {
		t = tpl;
		sx = tpl;
	}
	size_t n = 0;
	while (*t && n < max) {
		if (*t != '$') {
			out[n++] = *t++;
			continue;
		}
		t++;
		const char *ins;
		size_t il;
		char two[2];
		if (*t == '$') {
			ins = "$";
			il = 1;
			t++;
		} else if (*t >= '0' && *t <= '9') {
			ins = ds->subst[*t - '0'];
			if (ins) {
				il = strlen(ins);
			} else {
				two[0] = '$';
				two[1] = *t;
				ins = two;
				il = 2;
			}
			t++;
		} else if (*t == '=') {
			ins = sx;
			il = strlen(sx);
			t++;
		} else {
			ins = subst;
			il = strlen(subst);
		}
		if (il > max - n) il = max - n;
		memcpy(out + n, ins, il);
		n += il;
	}
	return n;
}
