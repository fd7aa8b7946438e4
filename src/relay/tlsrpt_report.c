/*
 * tlsrpt_report.c — the pure half of SMTP TLS Reporting (RFC 8460): the
 * day's counters, their state file, the `_smtp._tls` TXT record and the
 * JSON report. Nothing here does I/O.
 *
 * The counters (struct tlsrpt_day, see tlsrpt.h for its bounds) are a hash
 * table of domains; a domain holds the policies that applied to its
 * sessions that day (a policy is its type and its strings: a new MTA-STS
 * policy id or a TLSA change is a new policy), each with its success and
 * failure counts and its failure-detail rows (result type, sending IP,
 * receiving IP, MX host).
 *
 * The state file, one line each, every line ending in LF:
 *
 *   mailrep-tlsrpt v1 DAY
 *   dropped N                          sessions of domains beyond the cap
 *   domain NAME DROPPED                then its policies
 *   policy TYPE OK FAILED DROPPED      TYPE: sts, tlsa, no-policy-found
 *   string TEXT                        a policy-string line of the policy
 *   mx PATTERN                         an mx-host pattern of the policy
 *   row RESULT COUNT SIP RIP MX        a failure-details row ("-": none)
 *   end
 *
 * The parser takes nothing on trust: every field is checked against the
 * same bounds as the counters (a count is at most 2^48), a policy's rows
 * and dropped sessions must add up to its failures, and any error names
 * its line.
 *
 * A report to try again (SPOOL/tlsrpt/retry/NAME), header lines ending in
 * LF, then the gzip report's bytes, exactly as many as the last line says:
 *
 *   mailrep-tlsrpt-retry v1
 *   domain NAME                        the policy domain
 *   day YYYY-MM-DD                     the day reported
 *   uri URI                            mailto:ADDRESS or https://...
 *   first SECONDS                      the first attempt (Unix time)
 *   next SECONDS                       the next attempt
 *   attempts N                         failed so far
 *   report BYTES
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/int.h"
#include "relay/tlsrpt.h"

static const char *const result_names[] = {
    NULL,
    "starttls-not-supported",
    "certificate-host-mismatch",
    "certificate-expired",
    "certificate-not-trusted",
    "validation-failure",
    "tlsa-invalid",
    "dnssec-invalid",
    "dane-required",
    "sts-policy-fetch-error",
    "sts-policy-invalid",
    "sts-webpki-invalid",
};

static const char *const type_names[] = {NULL, "sts", "tlsa", "no-policy-found"};

const char *tlsrpt_result_name(int r)
{
	return r >= 1 && r <= TLSRPT_RESULT_LAST ? result_names[r] : "validation-failure";
}

int tlsrpt_result_parse(const char *s)
{
	for (int r = 1; r <= TLSRPT_RESULT_LAST; r++)
		if (!strcmp(s, result_names[r])) return r;
	return 0;
}

static int type_parse(const char *s)
{
	for (int t = 1; t <= TLSRPT_NO_POLICY; t++)
		if (!strcmp(s, type_names[t])) return t;
	return 0;
}

int tlsrpt_day_ok(const char *s)
{
	if (strlen(s) != 10 || s[4] != '-' || s[7] != '-') return 0;
	for (int i = 0; i < 10; i++)
		if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9')) return 0;
	int y = atoi(s), m = atoi(s + 5), d = atoi(s + 8);
	return base_valid_date(y, m, d);
}

/* ---- the counters ------------------------------------------------------------ */

static size_t bucket(const char *name)
{
	uint32_t h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ (uint32_t)base_lower((char)*p)) * 16777619u;
	return h % TLSRPT_BUCKETS;
}

void tlsrpt_day_init(struct tlsrpt_day *d, const char *day)
{
	memset(d, 0, sizeof *d);
	snprintf(d->day, sizeof d->day, "%s", day);
}

void tlsrpt_day_free(struct tlsrpt_day *d)
{
	for (size_t i = 0; i < TLSRPT_BUCKETS; i++)
		while (d->b[i]) {
			struct tlsrpt_domain *x = d->b[i];
			d->b[i] = x->next;
			for (size_t k = 0; k < x->npol; k++) {
				free(x->pol[k].strings);
				free(x->pol[k].mx);
			}
			free(x);
		}
	d->n = 0;
}

struct tlsrpt_domain *tlsrpt_day_find(const struct tlsrpt_day *d, const char *domain)
{
	for (struct tlsrpt_domain *x = d->b[bucket(domain)]; x; x = x->next)
		if (!base_strcasecmp_ascii(x->name, domain)) return x;
	return NULL;
}

static int by_name(const void *a, const void *b)
{
	return strcmp((*(struct tlsrpt_domain *const *)a)->name,
	              (*(struct tlsrpt_domain *const *)b)->name);
}

struct tlsrpt_domain **tlsrpt_day_sorted(const struct tlsrpt_day *d)
{
	struct tlsrpt_domain **v = base_xcalloc(d->n ? d->n : 1, sizeof *v);
	size_t n = 0;
	for (size_t i = 0; i < TLSRPT_BUCKETS; i++)
		for (struct tlsrpt_domain *x = d->b[i]; x && n < d->n; x = x->next) v[n++] = x;
	base_sort(v, n, sizeof *v, by_name);
	return v;
}

/* Lines as one NUL-separated block. */
static char *join(const char *const *v, size_t n, size_t *len)
{
	size_t t = 0;
	for (size_t i = 0; i < n; i++) t += strlen(v[i]) + 1;
	char *s = base_xmalloc(t ? t : 1);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(v[i]) + 1;
		memcpy(s + o, v[i], l);
		o += l;
	}
	*len = t;
	return s;
}

static int same_lines(const char *block, size_t blen, size_t nb, const char *const *v, size_t n)
{
	if (nb != n) return 0;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(v[i]) + 1;
		if (o + l > blen || memcmp(block + o, v[i], l)) return 0;
		o += l;
	}
	return 1;
}

static struct tlsrpt_domain *domain_get(struct tlsrpt_day *d, const char *name)
{
	struct tlsrpt_domain *x = tlsrpt_day_find(d, name);
	if (x || d->n >= TLSRPT_DOMAINS_MAX) return x;
	x = base_xcalloc(1, sizeof *x);
	size_t i = 0;
	for (; name[i] && i < sizeof x->name - 1; i++) x->name[i] = base_lower(name[i]);
	x->name[i] = 0;
	size_t h = bucket(x->name);
	x->next = d->b[h];
	d->b[h] = x;
	d->n++;
	return x;
}

static struct tlsrpt_policy *policy_get(struct tlsrpt_domain *x, int type,
                                        const char *const *strings, size_t nstrings,
                                        const char *const *mx, size_t nmx)
{
	if (nstrings > TLSRPT_STRINGS_MAX) nstrings = TLSRPT_STRINGS_MAX;
	if (nmx > TLSRPT_STRINGS_MAX) nmx = TLSRPT_STRINGS_MAX;
	for (size_t i = 0; i < x->npol; i++) {
		struct tlsrpt_policy *p = &x->pol[i];
		if (p->type == type &&
		    same_lines(p->strings, p->slen, p->nstrings, strings, nstrings) &&
		    same_lines(p->mx, p->mlen, p->nmx, mx, nmx))
			return p;
	}
	if (x->npol >= TLSRPT_POLICIES_MAX) return NULL;
	struct tlsrpt_policy *p = &x->pol[x->npol++];
	memset(p, 0, sizeof *p);
	p->type = type;
	p->strings = join(strings, nstrings, &p->slen);
	p->nstrings = nstrings;
	p->mx = join(mx, nmx, &p->mlen);
	p->nmx = nmx;
	return p;
}

static void row_add(struct tlsrpt_policy *p, int result, const char *sip, const char *rip,
                    const char *mx, uint64_t count)
{
	sip = sip ? sip : "";
	rip = rip ? rip : "";
	mx = mx ? mx : "";
	for (size_t i = 0; i < p->nrows; i++) {
		struct tlsrpt_row *r = &p->rows[i];
		if (r->result == result && !strcmp(r->sending_ip, sip) &&
		    !strcmp(r->receiving_ip, rip) && !base_strcasecmp_ascii(r->mx, mx)) {
			r->count += count;
			return;
		}
	}
	if (p->nrows >= TLSRPT_ROWS_MAX) {
		p->dropped += count;
		return;
	}
	struct tlsrpt_row *r = &p->rows[p->nrows++];
	r->result = result;
	snprintf(r->sending_ip, sizeof r->sending_ip, "%s", sip);
	snprintf(r->receiving_ip, sizeof r->receiving_ip, "%s", rip);
	size_t i = 0;
	for (; mx[i] && i < sizeof r->mx - 1; i++) r->mx[i] = base_lower(mx[i]);
	r->mx[i] = 0;
	r->count = count;
}

void tlsrpt_day_add(struct tlsrpt_day *d, const struct tlsrpt_session *s)
{
	d->changes++;
	struct tlsrpt_domain *x = domain_get(d, s->domain);
	if (!x) {
		d->dropped++;
		return;
	}
	struct tlsrpt_policy *p = policy_get(x, s->type, s->strings, s->nstrings, s->mx, s->nmx);
	if (!p) {
		x->dropped++;
		return;
	}
	if (!s->result) {
		p->ok++;
		return;
	}
	p->failed++;
	row_add(p, s->result, s->sending_ip, s->receiving_ip, s->mx_host, 1);
}

/* ---- the state file ---------------------------------------------------------- */

static const char *dash(const char *s)
{
	return s[0] ? s : "-";
}

static void lines_out(struct base_buf *out, const char *key, const char *block, size_t n)
{
	const char *s = block;
	for (size_t i = 0; i < n; i++) {
		base_buf_printf(out, "%s %s\n", key, s);
		s += strlen(s) + 1;
	}
}

void tlsrpt_state_format(const struct tlsrpt_day *d, struct base_buf *out)
{
	base_buf_printf(out, "mailrep-tlsrpt v1 %s\ndropped %llu\n", d->day,
	                (unsigned long long)d->dropped);
	struct tlsrpt_domain **v = tlsrpt_day_sorted(d);
	for (size_t i = 0; i < d->n; i++) {
		const struct tlsrpt_domain *x = v[i];
		base_buf_printf(out, "domain %s %llu\n", x->name, (unsigned long long)x->dropped);
		for (size_t k = 0; k < x->npol; k++) {
			const struct tlsrpt_policy *p = &x->pol[k];
			base_buf_printf(out, "policy %s %llu %llu %llu\n", type_names[p->type],
			                (unsigned long long)p->ok, (unsigned long long)p->failed,
			                (unsigned long long)p->dropped);
			lines_out(out, "string", p->strings, p->nstrings);
			lines_out(out, "mx", p->mx, p->nmx);
			for (size_t r = 0; r < p->nrows; r++) {
				const struct tlsrpt_row *w = &p->rows[r];
				base_buf_printf(out, "row %s %llu %s %s %s\n",
				                tlsrpt_result_name(w->result),
				                (unsigned long long)w->count, dash(w->sending_ip),
				                dash(w->receiving_ip), dash(w->mx));
			}
		}
	}
	free(v);
	base_buf_puts(out, "end\n");
}

/* A host name or domain: 1 to 253 of letters, digits, '-', '.', '_' (and
 * '*' for an mx pattern). */
static int name_ok(const char *s, int star)
{
	size_t n = strlen(s);
	if (!n || n > 253) return 0;
	for (const char *p = s; *p; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.' || c == '_' || (star && c == '*')))
			return 0;
	}
	return 1;
}

static int ip_ok(const char *s)
{
	size_t n = strlen(s);
	if (!n || n > 45) return 0;
	for (const char *p = s; *p; p++) {
		char c = *p;
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
		      c == ':' || c == '.'))
			return 0;
	}
	return 1;
}

static int printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e) return 0;
	return 1;
}

/* Splits line (NUL-terminated, modified) at spaces into at most max
 * fields. */
static size_t split(char *line, char **f, size_t max)
{
	size_t n = 0;
	char *p = line;
	while (*p && n < max) {
		f[n++] = p;
		char *sp = strchr(p, ' ');
		if (!sp) break;
		*sp = 0;
		p = sp + 1;
	}
	return n;
}

/* Whether a policy's rows and dropped sessions add up to its failures. */
static int policy_whole(const struct tlsrpt_policy *p)
{
	uint64_t n = p->dropped;
	for (size_t i = 0; i < p->nrows; i++) n += p->rows[i].count;
	return n == p->failed;
}

static int count_parse(const char *s, uint64_t *out)
{
	/* at most 2^48: sums of a policy's rows cannot overflow */
	int k = base_parse_uint(s, (uint64_t)1 << 48, out);
	return k > 0 && !s[k] ? 0 : -1;
}

/* Adds a string or mx line to a policy being read. */
static int line_add(char **block, size_t *len, size_t *n, const char *s)
{
	size_t l = strlen(s);
	if (*n >= TLSRPT_STRINGS_MAX || !l || l > TLSRPT_LINE_MAX) return -1;
	*block = base_xrealloc(*block, *len + l + 1);
	memcpy(*block + *len, s, l + 1);
	*len += l + 1;
	(*n)++;
	return 0;
}

int tlsrpt_state_parse(const char *text, size_t len, struct tlsrpt_day *d, struct base_err *err)
{
	tlsrpt_day_init(d, "");
	if (len > TLSRPT_FILE_MAX) return base_errf(err, "larger than %u bytes", TLSRPT_FILE_MAX);
	const char *p = text, *end = text + len;
	char line[TLSRPT_LINE_MAX + 64];
	unsigned ln = 0;
	int ended = 0;
	struct tlsrpt_domain *dom = NULL;
	struct tlsrpt_policy *pol = NULL;
	while (p < end) {
		ln++;
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		if (!eol) {
			base_errf(err, "line %u: no line end (the file is cut short)", ln);
			goto bad;
		}
		size_t n = (size_t)(eol - p);
		if (n >= sizeof line || !printable(p, n)) {
			base_errf(err, "line %u: too long or not printable ASCII", ln);
			goto bad;
		}
		memcpy(line, p, n);
		line[n] = 0;
		p = eol + 1;
		if (ended) {
			base_errf(err, "line %u: text after 'end'", ln);
			goto bad;
		}
		/* a string or mx line's text runs to the line's end */
		char raw[sizeof line];
		memcpy(raw, line, n + 1);
		char *rest = strchr(raw, ' ');
		char *f[8] = {0};
		size_t nf = split(line, f, 8);
		if (!nf) {
			base_errf(err, "line %u: empty", ln);
			goto bad;
		}
		if (ln == 1) {
			if (nf != 3 || strcmp(f[0], "mailrep-tlsrpt") || strcmp(f[1], "v1") ||
			    !tlsrpt_day_ok(f[2])) {
				base_errf(err, "line 1: expected 'mailrep-tlsrpt v1 YYYY-MM-DD'");
				goto bad;
			}
			snprintf(d->day, sizeof d->day, "%s", f[2]);
			continue;
		}
		if (pol &&
		    (!strcmp(f[0], "end") || !strcmp(f[0], "domain") || !strcmp(f[0], "policy")) &&
		    !policy_whole(pol)) {
			base_errf(
			    err,
			    "line %u: the rows and dropped sessions of the policy above do not "
			    "add up to its %llu failed sessions",
			    ln, (unsigned long long)pol->failed);
			goto bad;
		}
		if (!strcmp(f[0], "end") && nf == 1) {
			ended = 1;
		} else if (!strcmp(f[0], "dropped") && nf == 2 && !dom) {
			if (count_parse(f[1], &d->dropped) < 0) {
				base_errf(err, "line %u: bad count '%s'", ln, f[1]);
				goto bad;
			}
		} else if (!strcmp(f[0], "domain") && nf == 3) {
			uint64_t dr;
			if (!name_ok(f[1], 0) || count_parse(f[2], &dr) < 0) {
				base_errf(err, "line %u: expected 'domain NAME COUNT'", ln);
				goto bad;
			}
			if (tlsrpt_day_find(d, f[1]) || d->n >= TLSRPT_DOMAINS_MAX) {
				base_errf(err, "line %u: domain %s repeated, or too many domains",
				          ln, f[1]);
				goto bad;
			}
			dom = domain_get(d, f[1]);
			dom->dropped = dr;
			pol = NULL;
		} else if (!strcmp(f[0], "policy") && nf == 5 && dom) {
			int t = type_parse(f[1]);
			uint64_t ok, fl, dr;
			if (!t || count_parse(f[2], &ok) < 0 || count_parse(f[3], &fl) < 0 ||
			    count_parse(f[4], &dr) < 0) {
				base_errf(err, "line %u: expected 'policy TYPE OK FAILED DROPPED'",
				          ln);
				goto bad;
			}
			if (dom->npol >= TLSRPT_POLICIES_MAX) {
				base_errf(err, "line %u: more than %d policies for %s", ln,
				          TLSRPT_POLICIES_MAX, dom->name);
				goto bad;
			}
			pol = &dom->pol[dom->npol++];
			memset(pol, 0, sizeof *pol);
			pol->type = t;
			pol->ok = ok;
			pol->failed = fl;
			pol->dropped = dr;
		} else if ((!strcmp(f[0], "string") || !strcmp(f[0], "mx")) && pol && rest) {
			int mx = f[0][0] == 'm';
			if (mx && !name_ok(rest + 1, 1)) {
				base_errf(err, "line %u: bad mx pattern", ln);
				goto bad;
			}
			if (pol->type == TLSRPT_NO_POLICY ||
			    line_add(mx ? &pol->mx : &pol->strings, mx ? &pol->mlen : &pol->slen,
			             mx ? &pol->nmx : &pol->nstrings, rest + 1) < 0) {
				base_errf(err,
				          "line %u: %s line not allowed here, empty, or too many",
				          ln, mx ? "mx" : "string");
				goto bad;
			}
		} else if (!strcmp(f[0], "row") && nf == 6 && pol) {
			int r = tlsrpt_result_parse(f[1]);
			uint64_t c;
			const char *sip = strcmp(f[3], "-") ? f[3] : "";
			const char *rip = strcmp(f[4], "-") ? f[4] : "";
			const char *mx = strcmp(f[5], "-") ? f[5] : "";
			if (!r || count_parse(f[2], &c) < 0 || !c || (sip[0] && !ip_ok(sip)) ||
			    (rip[0] && !ip_ok(rip)) || (mx[0] && !name_ok(mx, 0))) {
				base_errf(err, "line %u: expected 'row RESULT COUNT SIP RIP MX'",
				          ln);
				goto bad;
			}
			if (pol->nrows >= TLSRPT_ROWS_MAX) {
				base_errf(err, "line %u: more than %d rows", ln, TLSRPT_ROWS_MAX);
				goto bad;
			}
			row_add(pol, r, sip, rip, mx, c);
		} else {
			base_errf(err, "line %u: unexpected '%.40s'", ln, f[0]);
			goto bad;
		}
	}
	if (!ended) {
		base_errf(err, "line %u: no 'end' line (the file is cut short)", ln);
		goto bad;
	}
	return 0;
bad:
	tlsrpt_day_free(d);
	tlsrpt_day_init(d, "");
	return -1;
}

/* ---- the TXT record (§3) ----------------------------------------------------- */

static int is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

static int is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* A URI character of RFC 3986 (unreserved, reserved, '%'), without ',' and
 * ';', which the record uses as delimiters (they must be %-encoded). */
static int uri_char(char c)
{
	return is_alnum(c) || (c && strchr("-._~:/?#[]@!$&'()*+=%", c));
}

/* mailto:local@domain (an optional ?query is ignored when delivering). */
static int mailto_ok(const char *u, size_t n)
{
	const char *a = u + 7, *end = u + n;
	const char *q = memchr(a, '?', (size_t)(end - a));
	if (q) end = q;
	const char *at = NULL;
	for (const char *p = a; p < end; p++) {
		if (*p == '@') {
			if (at) return 0;
			at = p;
		} else if (*p == '%' || *p == '/' || *p == '#' || *p == '[' || *p == ']') {
			return 0;
		}
	}
	if (!at || at == a || at + 1 >= end || end - a > 254) return 0;
	for (const char *p = at + 1; p < end; p++)
		if (!(is_alnum(*p) || *p == '-' || *p == '.')) return 0;
	return 1;
}

/* https://host[:port][/path] */
static int https_ok(const char *u, size_t n)
{
	const char *h = u + 8, *end = u + n;
	const char *p = h;
	while (p < end && (is_alnum(*p) || *p == '-' || *p == '.')) p++;
	if (p == h) return 0;
	if (p < end && *p == ':') {
		/* the text is not NUL-terminated: the digits are read here */
		const char *d = ++p;
		unsigned port = 0;
		while (p < end && *p >= '0' && *p <= '9' && p - d < 5)
			port = port * 10 + (unsigned)(*p++ - '0');
		if (p == d || port < 1 || port > 65535 || (p < end && *p >= '0' && *p <= '9'))
			return 0;
	}
	return p == end || *p == '/';
}

/* The URIs of a rua field's value: tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)
 * (§3); those of schemes other than mailto: and https: are counted in
 * *skipped. */
static int rua_parse(const char *txt, const struct relay_txt_field *f, struct tlsrpt_rua *rua,
                     size_t *skipped, struct base_err *err)
{
	const char *p = f->value, *end = f->value + f->vlen;
	for (;;) {
		const char *u = p;
		while (p < end && uri_char(*p)) p++;
		size_t ul = (size_t)(p - u);
		if (!ul) return base_errf(err, "empty URI at offset %zu", (size_t)(u - txt));
		if (ul >= TLSRPT_URI_MAX)
			return base_errf(err, "URI longer than %d bytes at offset %zu",
			                 TLSRPT_URI_MAX - 1, (size_t)(u - txt));
		int mailto = ul > 7 && !memcmp(u, "mailto:", 7);
		int https = ul > 8 && !memcmp(u, "https://", 8);
		if (mailto && !mailto_ok(u, ul))
			return base_errf(err, "bad mailto URI '%.*s' at offset %zu", (int)ul, u,
			                 (size_t)(u - txt));
		if (https && !https_ok(u, ul))
			return base_errf(err, "bad https URI '%.*s' at offset %zu", (int)ul, u,
			                 (size_t)(u - txt));
		if ((mailto || https) && rua->n < TLSRPT_RUA_MAX) {
			memcpy(rua->uri[rua->n], u, ul);
			rua->uri[rua->n++][ul] = 0;
		} else {
			(*skipped)++;
		}
		while (p < end && is_wsp(*p)) p++;
		if (p == end) return 0;
		if (*p != ',')
			return base_errf(err, "expected ',' or ';' at offset %zu",
			                 (size_t)(p - txt));
		p++;
		while (p < end && is_wsp(*p)) p++;
	}
}

int tlsrpt_txt_parse(const char *txt, size_t len, struct tlsrpt_rua *rua, struct base_err *err)
{
	rua->n = 0;
	/* records that do not start with "v=TLSRPTv1;" are discarded (§3) */
	if (len < 10 || memcmp(txt, "v=TLSRPTv1", 10)) return 0;
	if (len > 10 && !is_wsp(txt[10]) && txt[10] != ';') return 0;
	int have_rua = 0, k;
	size_t skipped = 0, pos = 10;
	struct relay_txt_field f;
	while ((k = relay_txt_next(txt, len, &pos, 0, &f, err)) == 1) {
		if (!relay_txt_name_is(&f, "rua")) {
			if (relay_txt_ext_value(&f, err) < 0) return -1;
			continue;
		}
		if (have_rua) return base_errf(err, "rua given twice at offset %zu", f.off);
		have_rua = 1;
		if (rua_parse(txt, &f, rua, &skipped, err) < 0) return -1;
	}
	if (k < 0) return -1;
	if (!have_rua) return base_errf(err, "no rua field");
	if (!rua->n)
		return base_errf(err, "no mailto: or https: URI in rua (%zu other%s skipped)",
		                 skipped, skipped == 1 ? "" : "s");
	return 1;
}

/* ---- a report to try again ---------------------------------------------------- */

void tlsrpt_retry_format(const struct tlsrpt_retry *r, struct base_buf *out)
{
	base_buf_printf(out,
	                "mailrep-tlsrpt-retry v1\ndomain %s\nday %s\nuri %s\nfirst %lld\n"
	                "next %lld\nattempts %u\nreport %zu\n",
	                r->domain, r->day, r->uri, (long long)r->first, (long long)r->next,
	                r->attempts, r->len);
	base_buf_append(out, r->report, r->len);
}

uint32_t tlsrpt_retry_wait(uint32_t first, uint32_t attempts)
{
	uint64_t w = first;
	for (uint32_t i = 1; i < attempts && w < TLSRPT_RETRY_CAP; i++) w *= 3;
	if (w > TLSRPT_RETRY_CAP) w = first > TLSRPT_RETRY_CAP ? first : TLSRPT_RETRY_CAP;
	return (uint32_t)w;
}

/* Decimal digits only, without leading zeros (the file is written back the
 * same), at most max. */
static int uint_parse(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t n = 0;
	if (!*s || strlen(s) > 20 || (s[0] == '0' && s[1])) return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9') return -1;
		n = n * 10 + (uint64_t)(*s - '0');
		if (n > max) return -1;
	}
	*out = n;
	return 0;
}

int tlsrpt_retry_parse(const char *text, size_t len, struct tlsrpt_retry *r, struct base_err *err)
{
	static const char *const keys[] = {
	    "mailrep-tlsrpt-retry", "domain", "day", "uri", "first", "next", "attempts", "report"};
	memset(r, 0, sizeof *r);
	const char *p = text, *end = text + len;
	char line[TLSRPT_URI_MAX + 64];
	for (unsigned ln = 1; ln <= 8; ln++) {
		size_t off = (size_t)(p - text);
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		if (!eol)
			return base_errf(err,
			                 "line %u (offset %zu): no line end (the file is cut "
			                 "short)",
			                 ln, off);
		size_t n = (size_t)(eol - p);
		if (n >= sizeof line || !printable(p, n))
			return base_errf(
			    err, "line %u (offset %zu): too long or not printable ASCII", ln, off);
		memcpy(line, p, n);
		line[n] = 0;
		p = eol + 1;
		const char *k = keys[ln - 1];
		size_t kl = strlen(k);
		if (strncmp(line, k, kl) || line[kl] != ' ')
			return base_errf(err, "line %u (offset %zu): expected '%s ...'", ln, off,
			                 k);
		const char *v = line + kl + 1;
		uint64_t u = 0;
		int ok = 1;
		switch (ln) {
		case 1:
			ok = !strcmp(v, "v1");
			break;
		case 2:
			ok = name_ok(v, 0);
			if (ok) snprintf(r->domain, sizeof r->domain, "%s", v);
			break;
		case 3:
			ok = tlsrpt_day_ok(v);
			if (ok) memcpy(r->day, v, 11);
			break;
		case 4: {
			size_t ul = strlen(v);
			ok = ul < TLSRPT_URI_MAX &&
			     ((ul > 7 && !strncmp(v, "mailto:", 7) && !strchr(v, '?') &&
			       mailto_ok(v, ul)) ||
			      (ul > 8 && !strncmp(v, "https://", 8) && https_ok(v, ul)));
			for (size_t i = 0; ok && i < ul; i++) ok = uri_char(v[i]);
			if (ok) memcpy(r->uri, v, ul + 1);
			break;
		}
		case 5:
		case 6:
			ok = uint_parse(v, (uint64_t)1 << 40, &u) == 0;
			*(ln == 5 ? &r->first : &r->next) = (int64_t)u;
			break;
		case 7:
			ok = uint_parse(v, TLSRPT_ATTEMPTS_MAX, &u) == 0;
			r->attempts = (uint32_t)u;
			break;
		default:
			ok = uint_parse(v, TLSRPT_REPORT_MAX, &u) == 0 && u > 0;
			r->len = (size_t)u;
			break;
		}
		if (!ok)
			return base_errf(err, "line %u (offset %zu): bad %s '%.*s'", ln, off,
			                 ln == 1 ? "version" : k, 80, v);
	}
	size_t off = (size_t)(p - text);
	if ((size_t)(end - p) != r->len)
		return base_errf(err, "offset %zu: %zu bytes of report, not %zu", off,
		                 (size_t)(end - p), r->len);
	r->report = p;
	return 0;
}

/* ---- the JSON report (§4) ---------------------------------------------------- */

void tlsrpt_json_str(struct base_buf *out, const char *s)
{
	base_buf_append(out, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\') {
			char e[2] = {'\\', (char)*p};
			base_buf_append(out, e, 2);
		} else if (*p < 0x20 || *p == 0x7f) {
			base_buf_printf(out, "\\u%04x", *p);
		} else {
			base_buf_append(out, p, 1);
		}
	}
	base_buf_append(out, "\"", 1);
}

static void json_lines(struct base_buf *out, const char *block, size_t n)
{
	base_buf_puts(out, "[");
	const char *s = block;
	for (size_t i = 0; i < n; i++) {
		if (i) base_buf_puts(out, ",");
		tlsrpt_json_str(out, s);
		s += strlen(s) + 1;
	}
	base_buf_puts(out, "]");
}

void tlsrpt_json(const struct tlsrpt_day *d, const struct tlsrpt_domain *dom,
                 const struct tlsrpt_meta *meta, struct base_buf *out)
{
	base_buf_puts(out, "{\"organization-name\":");
	tlsrpt_json_str(out, meta->org ? meta->org : "");
	base_buf_printf(out,
	                ",\"date-range\":{\"start-datetime\":\"%sT00:00:00Z\","
	                "\"end-datetime\":\"%sT23:59:59Z\"},\"contact-info\":",
	                d->day, d->day);
	tlsrpt_json_str(out, meta->contact ? meta->contact : "");
	base_buf_puts(out, ",\"report-id\":");
	tlsrpt_json_str(out, meta->report_id ? meta->report_id : "");
	base_buf_puts(out, ",\"policies\":[");
	for (size_t k = 0; k < dom->npol; k++) {
		const struct tlsrpt_policy *p = &dom->pol[k];
		if (k) base_buf_puts(out, ",");
		base_buf_printf(out, "{\"policy\":{\"policy-type\":\"%s\"", type_names[p->type]);
		if (p->type != TLSRPT_NO_POLICY) {
			base_buf_puts(out, ",\"policy-string\":");
			json_lines(out, p->strings, p->nstrings);
		}
		base_buf_puts(out, ",\"policy-domain\":");
		tlsrpt_json_str(out, dom->name);
		if (p->type == TLSRPT_STS) {
			base_buf_puts(out, ",\"mx-host\":");
			json_lines(out, p->mx, p->nmx);
		}
		/* sessions that got no row still count as failed */
		base_buf_printf(out,
		                "},\"summary\":{\"total-successful-session-count\":%llu,"
		                "\"total-failure-session-count\":%llu}",
		                (unsigned long long)p->ok, (unsigned long long)p->failed);
		if (p->nrows) {
			base_buf_puts(out, ",\"failure-details\":[");
			for (size_t r = 0; r < p->nrows; r++) {
				const struct tlsrpt_row *w = &p->rows[r];
				if (r) base_buf_puts(out, ",");
				base_buf_printf(out, "{\"result-type\":\"%s\"",
				                tlsrpt_result_name(w->result));
				if (w->sending_ip[0]) {
					base_buf_puts(out, ",\"sending-mta-ip\":");
					tlsrpt_json_str(out, w->sending_ip);
				}
				if (w->mx[0]) {
					base_buf_puts(out, ",\"receiving-mx-hostname\":");
					tlsrpt_json_str(out, w->mx);
				}
				if (w->receiving_ip[0]) {
					base_buf_puts(out, ",\"receiving-ip\":");
					tlsrpt_json_str(out, w->receiving_ip);
				}
				base_buf_printf(out, ",\"failed-session-count\":%llu}",
				                (unsigned long long)w->count);
			}
			base_buf_puts(out, "]");
		}
		base_buf_puts(out, "}");
	}
	base_buf_puts(out, "]}\n");
}
