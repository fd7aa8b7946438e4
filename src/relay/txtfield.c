/*
 * txtfield.c — the fields of a DNS TXT policy record, as MTA-STS's
 * `_mta-sts` record (RFC 8461 3.1) and TLS reporting's `_smtp._tls` record
 * (RFC 8460 3) write them after their version: ';'-separated
 * "name=value", with optional white space (SP, HTAB) around each ';'. A
 * name is 1 to 32 of ALPHA, DIGIT, '_', '-', '.', starting with ALPHA or
 * DIGIT. Pure; every read bounded by the length given; every error names
 * its byte offset in the record.
 */
#include <string.h>

#include "relay/int.h"

static int is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

int relay_txt_next(const char *txt, size_t len, size_t *pos, int flags, struct relay_txt_field *f,
                   struct base_err *err)
{
	const char *p = txt + *pos, *end = txt + len;
	for (;;) {
		while (p < end && is_wsp(*p)) p++;
		if (p == end) break;
		if (*p != ';')
			return base_errf(err, "expected ';' at offset %zu", (size_t)(p - txt));
		p++;
		while (p < end && is_wsp(*p)) p++;
		if (p == end) break; /* a trailing delimiter */
		const char *name = p;
		if (!is_alnum(*p))
			return base_errf(err, "bad field name at offset %zu", (size_t)(p - txt));
		while (p < end && (is_alnum(*p) || *p == '_' || *p == '-' || *p == '.')) p++;
		size_t nl = (size_t)(p - name);
		if (nl > 32)
			return base_errf(err, "field name longer than 32 at offset %zu",
			                 (size_t)(name - txt));
		if (flags & RELAY_TXT_WSP_EQ)
			while (p < end && is_wsp(*p)) p++;
		if (p == end || *p != '=')
			return base_errf(err, "expected '=' after '%.*s' at offset %zu", (int)nl,
			                 name, (size_t)(p - txt));
		p++;
		if (flags & RELAY_TXT_WSP_EQ)
			while (p < end && is_wsp(*p)) p++;
		const char *val = p;
		while (p < end && *p != ';') p++;
		size_t vl = (size_t)(p - val);
		while (vl && is_wsp(val[vl - 1])) vl--;
		if (!vl)
			return base_errf(err, "empty value for '%.*s' at offset %zu", (int)nl, name,
			                 (size_t)(val - txt));
		f->name = name;
		f->nlen = nl;
		f->value = val;
		f->vlen = vl;
		f->off = (size_t)(name - txt);
		f->voff = (size_t)(val - txt);
		*pos = (size_t)(p - txt);
		return 1;
	}
	*pos = len;
	return 0;
}

int relay_txt_ext_value(const struct relay_txt_field *f, struct base_err *err)
{
	for (size_t i = 0; i < f->vlen; i++) {
		unsigned char u = (unsigned char)f->value[i];
		/* ext-value = 1*(%x21-3A / %x3C / %x3E-7E); ';' ends the value */
		if (u < 0x21 || u > 0x7e || u == '=')
			return base_errf(err, "bad character in the value of '%.*s' at offset %zu",
			                 (int)f->nlen, f->name, f->voff + i);
	}
	return 0;
}

int relay_txt_name_is(const struct relay_txt_field *f, const char *name)
{
	size_t n = strlen(name);
	return f->nlen == n && !memcmp(f->name, name, n);
}
