/*
 * impact.c — getting impacts into the store: one at a time (with evidence
 * read from a message file) or in bulk from the tab-separated import
 * format of other trap networks.
 *
 * Import line format (docs/LISTING.md):
 *   TIME <TAB> IP [<TAB> TRAP [<TAB> SOURCE [<TAB> HELO <TAB> MAIL_FROM
 *   <TAB> RCPT <TAB> MESSAGE_ID <TAB> SUBJECT]]]
 * Empty or "-" optional fields are absent. '#' starts a comment line.
 *
 * Bulk import commits every `batch` impacts in one transaction, so the cost
 * of the durable commit (an fsync of the WAL) is shared by the batch. Every
 * insert also marks the store dirty, so the next refresh recomputes.
 */
#include "listing/store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FIELDS 9

static int bad_chars(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f) return 1;
	}
	return 0;
}

static int parse_time(const char *s, int64_t now, int64_t *out)
{
	if (!strcmp(s, "-")) {
		*out = now;
		return 0;
	}
	if (s[0] == '@') {
		uint64_t v;
		int k = base_parse_uint(s + 1, (uint64_t)1 << 40, &v);
		if (k <= 0 || s[1 + k]) return -1;
		*out = (int64_t)v;
		return 0;
	}
	time_t t;
	if (base_parse_iso8601(s, &t) < 0) return -1;
	*out = (int64_t)t;
	return 0;
}

static const char *const field_names[MAX_FIELDS] = {
    "time", "ip", "trap", "source", "helo", "mail-from", "rcpt", "message-id", "subject"};

int listing_impact_parse_line(char *line, size_t len, int64_t now, struct listing_impact *out,
                              struct base_err *err)
{
	memset(out, 0, sizeof *out);
	size_t i = 0;
	while (i < len && (line[i] == ' ' || line[i] == '\t')) i++;
	if (i == len || line[i] == '#') return 0;
	if (memchr(line, 0, len)) return base_errf(err, "NUL byte");
	char *f[MAX_FIELDS] = {0};
	size_t nf = 0;
	char *p = line, *end = line + len;
	for (;;) {
		char *tab = memchr(p, '\t', (size_t)(end - p));
		if (nf == MAX_FIELDS) return base_errf(err, "more than %d fields", MAX_FIELDS);
		f[nf++] = p;
		if (!tab) {
			*end = 0;
			break;
		}
		*tab = 0;
		p = tab + 1;
	}
	if (nf < 2) return base_errf(err, "expected TIME<TAB>IP[<TAB>...]");
	if (nf > 4 && nf != MAX_FIELDS)
		return base_errf(err, "expected 2, 3, 4 or %d fields, got %zu", MAX_FIELDS, nf);
	for (size_t k = 0; k < nf; k++) {
		size_t n = strlen(f[k]);
		if (n > LISTING_FIELD_MAX)
			return base_errf(err, "%s: longer than %d bytes", field_names[k],
			                 LISTING_FIELD_MAX);
		if (bad_chars(f[k], n))
			return base_errf(err, "%s: control character", field_names[k]);
	}
	if (parse_time(f[0], now, &out->time) < 0)
		return base_errf(err, "time: bad instant '%.64s'", f[0]);
	if (listing_ip_parse(f[1], &out->ip) < 0)
		return base_errf(err, "ip: bad address '%.64s'", f[1]);
	const char **dst[MAX_FIELDS] = {NULL,         NULL,
	                                &out->trap,   &out->source,
	                                &out->helo,   &out->mail_from,
	                                &out->rcpt,   &out->message_id,
	                                &out->subject};
	for (size_t k = 2; k < nf; k++) *dst[k] = (f[k][0] && strcmp(f[k], "-")) ? f[k] : NULL;
	return 1;
}

/* ---- evidence files ------------------------------------------------------ */

#define EVIDENCE_READ_MAX (1 << 20)

/* Copies a header's value (unfolded first line, trimmed, bounded) into the
 * buffer at *o; returns the copy or NULL. */
static const char *header_value(const char *hdr, size_t hlen, const char *name, char *store,
                                size_t cap)
{
	size_t nl = strlen(name);
	const char *p = hdr, *end = hdr + hlen;
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		if (!eol) eol = end;
		if ((size_t)(eol - p) > nl && !strncasecmp(p, name, nl) && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (v < eol && (*v == ' ' || *v == '\t')) v++;
			size_t n = 0;
			for (const char *c = v; c < eol && n + 1 < cap; c++)
				if ((unsigned char)*c >= 0x20 && *c != 0x7f) store[n++] = *c;
			while (n && store[n - 1] == ' ') n--;
			store[n] = 0;
			return store;
		}
		p = eol + 1;
	}
	return NULL;
}

int listing_impact_read_evidence(const char *path, struct listing_impact *imp, char **buf,
                                 struct base_err *err)
{
	FILE *f = fopen(path, "rb");
	if (!f) return base_errf(err, "%s: cannot open: %s", path, strerror(errno));
	/* headers (capped) plus room for three extracted values */
	size_t cap = LISTING_HEADERS_MAX + 3 * (LISTING_FIELD_MAX + 1);
	char *b = base_xmalloc(cap);
	size_t n = 0, total = 0;
	int in_headers = 1, c, prev = '\n';
	while ((c = getc(f)) != EOF && total < EVIDENCE_READ_MAX) {
		total++;
		if (!in_headers) break;
		if (c == '\r') continue;
		if (c == '\n' && prev == '\n') {
			in_headers = 0;
			continue;
		}
		if (n < LISTING_HEADERS_MAX) b[n++] = (char)c;
		prev = c;
	}
	int rerr = ferror(f);
	fclose(f);
	if (rerr) {
		free(b);
		return base_errf(err, "%s: read error", path);
	}
	imp->headers = b;
	imp->headers_len = n;
	listing_impact_parse_headers(imp, b, n, b + LISTING_HEADERS_MAX);
	*buf = b;
	return 0;
}

void listing_impact_parse_headers(struct listing_impact *imp, const char *hdr, size_t len,
                                  char *store)
{
	imp->message_id = header_value(hdr, len, "Message-ID", store, LISTING_FIELD_MAX + 1);
	store += LISTING_FIELD_MAX + 1;
	imp->subject = header_value(hdr, len, "Subject", store, LISTING_FIELD_MAX + 1);
	store += LISTING_FIELD_MAX + 1;
	if (!imp->mail_from)
		imp->mail_from = header_value(hdr, len, "From", store, LISTING_FIELD_MAX + 1);
}

/* ---- writing ------------------------------------------------------------- */

int listing_impact_add(struct listing_store *s, const struct listing_impact *imp, int64_t *id,
                       struct base_err *err)
{
	if (s->ops->begin(s, err) < 0) return -1;
	if (s->ops->impact_insert(s, imp, id, err) < 0 ||
	    s->ops->meta_set(s, "dirty", "1", err) < 0 || s->ops->commit(s, err) < 0) {
		s->ops->rollback(s);
		return -1;
	}
	return 0;
}

int listing_import(struct listing_store *s, const char *path, int64_t now, size_t batch, FILE *errs,
                   struct listing_import_result *res, struct base_err *err)
{
	memset(res, 0, sizeof *res);
	if (batch == 0) batch = 50000;
	int is_stdin = !strcmp(path, "-");
	struct base_lines *l = base_xmalloc(sizeof *l);
	if (base_lines_open(l, is_stdin ? "/dev/stdin" : path, err) < 0) {
		free(l);
		return -1;
	}
	if (is_stdin) l->path = "stdin";
	char *line;
	size_t len, in_batch = 0;
	int r, rc = 0;
	struct base_err e;
	int open_tx = 0, read_failed = 0;
	while ((r = base_lines_next(l, &line, &len, &e)) != 0) {
		if (r < 0) {
			/* the reader cannot resynchronise: stop, keeping what is committed */
			base_errf(err, "%s", e.msg);
			read_failed = 1;
			break;
		}
		res->lines++;
		struct listing_impact imp;
		int k = listing_impact_parse_line(line, len, now, &imp, &e);
		if (k == 0) continue;
		if (k < 0) {
			res->rejected++;
			if (errs) fprintf(errs, "%s:%lu: %s\n", l->path, l->lineno, e.msg);
			continue;
		}
		if (!open_tx) {
			if (s->ops->begin(s, err) < 0) {
				rc = -1;
				break;
			}
			open_tx = 1;
		}
		if (s->ops->impact_insert(s, &imp, NULL, err) < 0) {
			rc = -1;
			break;
		}
		res->imported++;
		if (++in_batch == batch) {
			if (s->ops->meta_set(s, "dirty", "1", err) < 0 ||
			    s->ops->commit(s, err) < 0) {
				rc = -1;
				break;
			}
			open_tx = 0;
			in_batch = 0;
		}
	}
	if (open_tx) {
		/* a read error keeps the good lines before it; a store error loses the batch */
		if (rc == 0 &&
		    (s->ops->meta_set(s, "dirty", "1", err) < 0 || s->ops->commit(s, err) < 0))
			rc = -1;
		if (rc < 0) {
			s->ops->rollback(s);
			res->imported -= in_batch;
		}
	}
	base_lines_close(l);
	free(l);
	return read_failed ? -1 : rc;
}
