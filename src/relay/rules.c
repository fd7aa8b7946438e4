/*
 * rules.c — bounce classification: an ordered list of rules read from a
 * data file (operators extend it), each a category and a POSIX extended
 * regular expression matched, case-insensitively, against the subject
 * "CODE ENHANCED TEXT" of a reply (for example "550 5.1.1 550 5.1.1 <a@b>:
 * user unknown"). The first matching rule wins; nothing matching gives
 * "other". Built-in defaults follow the operator's rules.
 *
 * File format: one rule a line, "category regex"; blank lines and lines
 * starting with '#' are ignored; the category is one of the names below;
 * patterns are at most 1024 bytes, may not use interval expressions, nor
 * stack repetition operators, nor use more than 8 '+'.
 */
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "relay/relay.h"

struct rule {
	const char *category;
	regex_t re;
};

struct relay_rules {
	struct rule *v;
	size_t n;
};

static const char *const categories[] = {
    "bad-mailbox",    "bad-domain",     "inactive-mailbox", "quota",   "spam-related",
    "policy-related", "bad-connection", "protocol",         "expired", "other",
};

const char relay_rules_default[] =
    "# category  regex over \"CODE ENHANCED TEXT\"\n"
    "spam-related     ^[45][0-9][0-9] [45]\\.7\\.1 "
    ".*(spam|blocked|blacklist|blocklist|reputation|rbl)\n"
    "spam-related     (spam|blacklisted|blocklisted|listed at|dnsbl|reputation)\n"
    "inactive-mailbox (inactive|disabled|deactivated|expired account|no longer)\n"
    "quota            ^[45][0-9][0-9] [45]\\.2\\.2 \n"
    "quota            (quota|mailbox (is )?full|over ?quota|insufficient storage)\n"
    "bad-mailbox      ^[45][0-9][0-9] [45]\\.1\\.[16] \n"
    "bad-mailbox      (user unknown|no such user|unknown user|mailbox unavailable|does not "
    "exist|recipient rejected|invalid recipient|mailbox not found)\n"
    "bad-domain       ^[45][0-9][0-9] [45]\\.1\\.2 \n"
    "bad-domain       ^[45][0-9][0-9] [45]\\.4\\.4 \n"
    "bad-domain       (host not found|domain not found|no route|null mx|no mx)\n"
    "policy-related   ^[45][0-9][0-9] [45]\\.7\\.[0-9]+ \n"
    "policy-related   (policy|not allowed|denied|relay|spf|dmarc|dkim)\n"
    "bad-connection   ^[45][0-9][0-9] [45]\\.4\\.[0-9]+ \n"
    "bad-connection   ^000 \n"
    "bad-connection   (timed? ?out|connection (refused|reset|lost|closed))\n"
    "protocol         ^[45][0-9][0-9] [45]\\.5\\.[0-9]+ \n"
    "protocol         ^50[0-4] \n";

static const char *category_name(const char *s, size_t n)
{
	for (size_t i = 0; i < sizeof categories / sizeof categories[0]; i++)
		if (strlen(categories[i]) == n && !strncmp(categories[i], s, n))
			return categories[i];
	return NULL;
}

/* glibc also copies the tree for each '+', so "a++++..." or deeply nested
 * "((a+)+)+" grows exponentially: at most PLUS_MAX '+' and no operator
 * right after another. */
#define PLUS_MAX 8

static int repetition_ok(const char *p, size_t n)
{
	int plus = 0;
	for (size_t i = 0; i < n; i++) {
		int op = p[i] == '+' || p[i] == '*' || p[i] == '?';
		if (p[i] == '+' && ++plus > PLUS_MAX) return 0;
		if (op && i > 0 && (p[i - 1] == '+' || p[i - 1] == '*' || p[i - 1] == '?'))
			return 0;
	}
	return 1;
}

int relay_regex_compile(regex_t *re, const char *p, size_t n, const char *where,
                        struct base_err *err)
{
	if (!n) return base_errf(err, "%s: empty pattern", where);
	if (n > 1024) return base_errf(err, "%s: pattern too long", where);
	if (memchr(p, 0, n)) return base_errf(err, "%s: NUL byte in pattern", where);
	/* glibc expands interval expressions by copying the tree:
	 * "(x{100}){100}" takes gigabytes, so they are refused */
	if (memchr(p, '{', n))
		return base_errf(err, "%s: interval expressions ({n,m}) are not supported", where);
	if (!repetition_ok(p, n))
		return base_errf(err, "%s: stacked repetition operators or more than %d '+'", where,
		                 PLUS_MAX);
	char *pat = base_xstrndup(p, n);
	int rc = regcomp(re, pat, REG_EXTENDED | REG_ICASE | REG_NOSUB);
	free(pat);
	if (rc) {
		char msg[128];
		regerror(rc, re, msg, sizeof msg);
		return base_errf(err, "%s: bad pattern: %s", where, msg);
	}
	return 0;
}

int relay_rules_add(struct relay_rules **rp, const char *text, size_t len, const char *origin,
                    struct base_err *err)
{
	struct relay_rules *r = *rp;
	if (!r) r = *rp = base_xcalloc(1, sizeof *r);
	size_t lineno = 0;
	const char *p = text, *end = text + len;
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		if (!eol) eol = end;
		lineno++;
		const char *q = p;
		while (q < eol && (*q == ' ' || *q == '\t')) q++;
		const char *e = eol;
		while (e > q && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) e--;
		if (q < e && *q != '#') {
			const char *ce = q;
			while (ce < e && *ce != ' ' && *ce != '\t') ce++;
			const char *cat = category_name(q, (size_t)(ce - q));
			if (!cat)
				return base_errf(err, "%s:%zu: unknown category '%.*s'", origin,
				                 lineno, (int)(ce - q > 40 ? 40 : ce - q), q);
			while (ce < e && (*ce == ' ' || *ce == '\t')) ce++;
			if (ce == e)
				return base_errf(err, "%s:%zu: rule without a pattern", origin,
				                 lineno);
			char where[300];
			snprintf(where, sizeof where, "%s:%zu", origin, lineno);
			regex_t re;
			if (relay_regex_compile(&re, ce, (size_t)(e - ce), where, err) < 0)
				return -1;
			r->v = base_xrealloc(r->v, (r->n + 1) * sizeof *r->v);
			r->v[r->n].category = cat;
			r->v[r->n].re = re;
			r->n++;
		}
		p = eol + 1;
	}
	return 0;
}

void relay_rules_free(struct relay_rules *r)
{
	if (!r) return;
	for (size_t i = 0; i < r->n; i++) regfree(&r->v[i].re);
	free(r->v);
	free(r);
}

void relay_reply_subject(int code, const char *enhanced, const char *text, char *out, size_t n)
{
	snprintf(out, n, "%03d %s %s", code, enhanced && *enhanced ? enhanced : "-", text ? text : "");
}

const char *relay_classify(const struct relay_rules *r, int code, const char *enhanced,
                           const char *text)
{
	if (!r) return "other";
	char subject[1200];
	relay_reply_subject(code, enhanced, text, subject, sizeof subject);
	for (size_t i = 0; i < r->n; i++)
		if (regexec(&r->v[i].re, subject, 0, NULL, 0) == 0) return r->v[i].category;
	return "other";
}
