/*
 * message.c — splitting an RFC 5322 message into header fields and a body,
 * for DKIM and the message checks. The message is hostile input: sizes and
 * counts are bounded and every malformed line is reported with its number.
 *
 * The input is copied once, with bare LF line ends turned into CRLF, so
 * that everything downstream (canonicalisation above all) sees the wire
 * form. Fields then point into that copy: one pass finds each field's
 * extent (a line not starting with whitespace opens a field, lines that do
 * continue it) and its name (the bytes before the colon, trailing
 * whitespace dropped, as the obsolete syntax "Name : value" allows).
 */
#include "auth/auth.h"

#include <stdlib.h>
#include <string.h>

static int field_name_ok(const char *s, size_t n)
{
	if (!n) return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 33 || (unsigned char)s[i] > 126) return 0;
	return 1;
}

int auth_msg_parse(struct auth_msg *m, const char *data, size_t len, struct base_err *err)
{
	memset(m, 0, sizeof *m);
	if (len > AUTH_MSG_MAX) return base_errf(err, "message larger than %u bytes", AUTH_MSG_MAX);
	/* bare LFs, found with memchr: a message on the wire has none, and is
	 * then copied in one go */
	size_t lf = 0;
	for (const char *nl = len ? memchr(data, '\n', len) : NULL; nl;
	     nl = memchr(nl + 1, '\n', len - (size_t)(nl + 1 - data)))
		if (nl == data || nl[-1] != '\r') lf++;
	m->buf = base_xmalloc(len + lf + 1);
	size_t o = 0;
	if (!lf) {
		if (len) memcpy(m->buf, data, len);
		o = len;
	} else {
		for (size_t i = 0; i < len; i++) {
			if (data[i] == '\n' && (i == 0 || data[i - 1] != '\r')) m->buf[o++] = '\r';
			m->buf[o++] = data[i];
		}
	}
	m->buf[o] = 0;
	m->len = o;

	const char *p = m->buf, *end = m->buf + m->len;
	size_t cap = 0;
	unsigned line = 1;
	while (p < end) {
		if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') { /* the empty line */
			m->body = p + 2;
			m->body_len = (size_t)(end - p - 2);
			return 0;
		}
		if (*p == ' ' || *p == '\t') {
			auth_msg_free(m);
			return base_errf(err, "header line %u: continuation line without a field",
			                 line);
		}
		/* the field runs to a CRLF not followed by whitespace */
		unsigned fline = line;
		const char *q = p;
		for (;;) {
			const char *nl = memchr(q, '\n', (size_t)(end - q));
			if (!nl) {
				q = end;
				break;
			}
			line++;
			q = nl + 1;
			if (q >= end || (*q != ' ' && *q != '\t')) break;
		}
		size_t flen = (size_t)(q - p);
		if (flen >= 2 && q[-1] == '\n' && q[-2] == '\r') flen -= 2;
		if (flen > AUTH_MSG_MAX_FIELD) {
			auth_msg_free(m);
			return base_errf(err, "header line %u: field longer than %u bytes", fline,
			                 AUTH_MSG_MAX_FIELD);
		}
		const char *colon = memchr(p, ':', flen);
		size_t nlen = colon ? (size_t)(colon - p) : 0;
		while (nlen && (p[nlen - 1] == ' ' || p[nlen - 1] == '\t')) nlen--;
		if (!colon || !field_name_ok(p, nlen)) {
			auth_msg_free(m);
			return base_errf(err, "header line %u: not a 'Name: value' field", fline);
		}
		if (m->n == AUTH_MSG_MAX_FIELDS) {
			auth_msg_free(m);
			return base_errf(err, "more than %d header fields", AUTH_MSG_MAX_FIELDS);
		}
		if (m->n == cap) {
			cap = cap ? cap * 2 : 32;
			m->fields = base_xrealloc(m->fields, cap * sizeof *m->fields);
		}
		struct auth_msg_field *f = &m->fields[m->n++];
		f->name = p;
		f->name_len = nlen;
		f->raw = p;
		f->raw_len = flen;
		f->value_off = (size_t)(colon - p) + 1;
		p = q;
	}
	m->body = end;
	m->body_len = 0;
	return 0;
}

void auth_msg_free(struct auth_msg *m)
{
	free(m->buf);
	free(m->fields);
	memset(m, 0, sizeof *m);
}

int auth_msg_find_last(const struct auth_msg *m, const char *name, size_t name_len, size_t before)
{
	if (before > m->n) before = m->n;
	for (size_t i = before; i-- > 0;) {
		const struct auth_msg_field *f = &m->fields[i];
		if (f->name_len != name_len) continue;
		size_t k = 0;
		while (k < name_len && base_lower(f->name[k]) == base_lower(name[k])) k++;
		if (k == name_len) return (int)i;
	}
	return -1;
}
