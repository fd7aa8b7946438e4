/*
 * ip.c — `check ip`: is an address on DNS blocklists, and does its reverse
 * DNS look like a mail server's?
 *
 * The lists come from a data file (data/dnsbls.txt), one per line:
 *     zone | kind | name | codes | lookup URL
 * kind is ip4, ip6 or both; codes is "-" or a comma-separated list of
 * 127.0.0.x=meaning. The parser is bounded (line length, list count,
 * field sizes) and names file:line in its errors.
 *
 * All the DNS work of one check is submitted to the c-ares resolver before
 * any answer is awaited, so the whole check costs one round trip: for each
 * list the address's A and TXT records and the RFC 5782 test entries
 * (127.0.0.2 must be listed, 127.0.0.1 must not; ::FFFF:7F00:2 and
 * ::FFFF:7F00:1 for IPv6), plus the address's PTR. Only the forward lookup
 * of the PTR names waits for a second round. A list failing its test
 * entries is reported as broken and its answer not trusted; 127.255.255.x
 * answers are the list refusing the query (e.g. Spamhaus's answer to
 * public resolvers), not listings.
 */
#include "check/check.h"
#include "check/report.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* ---- the list file ------------------------------------------------------- */

#define LINE_MAX_LEN 2048

static void trim(const char **s, const char **e)
{
	while (*s < *e && isspace((unsigned char)**s)) (*s)++;
	while (*e > *s && isspace((unsigned char)(*e)[-1])) (*e)--;
}

static int copy_field(char *dst, size_t cap, const char *s, const char *e, const char *where,
                      unsigned long line, const char *what, struct base_err *err)
{
	size_t n = (size_t)(e - s);
	if (n >= cap)
		return base_errf(err, "%s:%lu: %s longer than %zu bytes", where, line, what,
		                 cap - 1);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return base_errf(err, "%s:%lu: %s has a control or non-ASCII byte", where,
			                 line, what);
	memcpy(dst, s, n);
	dst[n] = 0;
	return 0;
}

static int parse_codes(struct check_dnsbl *l, const char *s, const char *e, const char *where,
                       unsigned long line, struct base_err *err)
{
	if (e - s == 1 && *s == '-') return 0;
	while (s < e) {
		const char *c = memchr(s, ',', (size_t)(e - s));
		const char *ie = c ? c : e;
		const char *eq = memchr(s, '=', (size_t)(ie - s));
		if (!eq) return base_errf(err, "%s:%lu: code needs 127.0.0.x=meaning", where, line);
		const char *as = s, *ae = eq, *ms = eq + 1, *me = ie;
		trim(&as, &ae);
		trim(&ms, &me);
		char addr[16];
		uint8_t a[4];
		if (ae - as >= (long)sizeof addr || ae == as)
			return base_errf(err, "%s:%lu: bad return code address", where, line);
		memcpy(addr, as, (size_t)(ae - as));
		addr[ae - as] = 0;
		if (inet_pton(AF_INET, addr, a) != 1 || a[0] != 127)
			return base_errf(err, "%s:%lu: return code '%s' is not in 127.0.0.0/8",
			                 where, line, addr);
		if (l->ncodes == CHECK_DNSBL_MAX_CODES)
			return base_errf(err, "%s:%lu: more than %d return codes", where, line,
			                 CHECK_DNSBL_MAX_CODES);
		struct check_dnsbl_code *code = &l->codes[l->ncodes++];
		memcpy(code->addr, a, 4);
		if (copy_field(code->meaning, sizeof code->meaning, ms, me, where, line,
		               "code meaning", err) < 0)
			return -1;
		s = c ? c + 1 : e;
	}
	return 0;
}

static int parse_line(struct check_dnsbl *l, const char *s, const char *e, const char *where,
                      unsigned long line, struct base_err *err)
{
	const char *f[5][2];
	int nf = 0, more = 0;
	while (nf < 5) {
		const char *bar = memchr(s, '|', (size_t)(e - s));
		f[nf][0] = s;
		f[nf][1] = bar ? bar : e;
		trim(&f[nf][0], &f[nf][1]);
		nf++;
		more = bar != NULL;
		if (!bar) break;
		s = bar + 1;
	}
	if (nf != 5 || more)
		return base_errf(err, "%s:%lu: want 5 fields: zone | kind | name | codes | url",
		                 where, line);
	memset(l, 0, sizeof *l);
	if (copy_field(l->zone, sizeof l->zone, f[0][0], f[0][1], where, line, "zone", err) < 0)
		return -1;
	struct dns_name n;
	struct base_err e2;
	if (!l->zone[0] || dns_name_from_text(&n, l->zone, 1, &e2) < 0 || n.len > 200)
		return base_errf(err, "%s:%lu: bad zone name '%s'", where, line, l->zone);
	size_t kl = (size_t)(f[1][1] - f[1][0]);
	if (kl == 3 && !memcmp(f[1][0], "ip4", 3))
		l->kind = CHECK_DNSBL_IP4;
	else if (kl == 3 && !memcmp(f[1][0], "ip6", 3))
		l->kind = CHECK_DNSBL_IP6;
	else if (kl == 4 && !memcmp(f[1][0], "both", 4))
		l->kind = CHECK_DNSBL_BOTH;
	else
		return base_errf(err, "%s:%lu: kind must be ip4, ip6 or both", where, line);
	if (copy_field(l->name, sizeof l->name, f[2][0], f[2][1], where, line, "name", err) < 0)
		return -1;
	if (!l->name[0]) return base_errf(err, "%s:%lu: empty name", where, line);
	if (parse_codes(l, f[3][0], f[3][1], where, line, err) < 0) return -1;
	if (copy_field(l->url, sizeof l->url, f[4][0], f[4][1], where, line, "url", err) < 0)
		return -1;
	return 0;
}

int check_dnsbl_parse(const char *text, size_t len, const char *where, struct check_dnsbl_set *set,
                      struct base_err *err)
{
	memset(set, 0, sizeof *set);
	if (len > CHECK_DNSBL_FILE_MAX)
		return base_errf(err, "%s: larger than %u bytes", where, CHECK_DNSBL_FILE_MAX);
	const char *p = text, *end = text + len;
	unsigned long line = 0;
	size_t cap = 0;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		line++;
		if (le - p > LINE_MAX_LEN) {
			check_dnsbl_set_free(set);
			return base_errf(err, "%s:%lu: line longer than %d bytes", where, line,
			                 LINE_MAX_LEN);
		}
		const char *s = p, *e = le;
		if (memchr(s, '\0', (size_t)(e - s))) {
			check_dnsbl_set_free(set);
			return base_errf(err, "%s:%lu: NUL byte", where, line);
		}
		const char *hash = memchr(s, '#', (size_t)(e - s));
		if (hash) e = hash;
		trim(&s, &e);
		p = nl ? nl + 1 : end;
		if (s == e) continue;
		if (set->n == CHECK_DNSBL_MAX_LISTS) {
			check_dnsbl_set_free(set);
			return base_errf(err, "%s:%lu: more than %d lists", where, line,
			                 CHECK_DNSBL_MAX_LISTS);
		}
		if (set->n == cap) {
			cap = cap ? cap * 2 : 16;
			set->lists = base_xrealloc(set->lists, cap * sizeof *set->lists);
		}
		if (parse_line(&set->lists[set->n], s, e, where, line, err) < 0) {
			check_dnsbl_set_free(set);
			return -1;
		}
		for (size_t i = 0; i < set->n; i++)
			if (!base_strcasecmp_ascii(set->lists[i].zone, set->lists[set->n].zone)) {
				base_errf(err, "%s:%lu: zone %s listed twice", where, line,
				          set->lists[i].zone);
				check_dnsbl_set_free(set);
				return -1;
			}
		set->n++;
	}
	if (!set->n) return base_errf(err, "%s: no lists", where);
	return 0;
}

int check_dnsbl_load(const char *path, struct check_dnsbl_set *set, struct base_err *err)
{
	memset(set, 0, sizeof *set);
	FILE *f = fopen(path, "rb");
	if (!f) return base_errf(err, "%s: %s", path, strerror(errno));
	char *buf = base_xmalloc(CHECK_DNSBL_FILE_MAX + 1);
	size_t n = fread(buf, 1, CHECK_DNSBL_FILE_MAX + 1, f);
	int bad = ferror(f);
	fclose(f);
	int rc;
	if (bad)
		rc = base_errf(err, "%s: read error", path);
	else
		rc = check_dnsbl_parse(buf, n, path, set, err);
	free(buf);
	return rc;
}

void check_dnsbl_set_free(struct check_dnsbl_set *set)
{
	free(set->lists);
	set->lists = NULL;
	set->n = 0;
}

/* ---- classification ------------------------------------------------------ */

int check_dnsbl_classify(const struct dns_answer *a)
{
	switch (a->status) {
	case DNS_LOOKUP_NXDOMAIN:
	case DNS_LOOKUP_NODATA:
		return CHECK_V_NOT_LISTED;
	case DNS_LOOKUP_OK:
		break;
	default:
		return CHECK_V_DNS_FAILED;
	}
	for (size_t i = 0; i < a->n; i++) {
		const uint8_t *d = (const uint8_t *)a->rr[i].data;
		if (a->rr[i].len != 4 || d[0] != 127) return CHECK_V_LIST_ERROR;
		if (d[1] == 255 && d[2] == 255) return CHECK_V_LIST_ERROR;
	}
	return CHECK_V_LISTED;
}

/* ---- the generic-PTR heuristic -------------------------------------------- */

/* Words access providers put in the PTR names of customer lines. Kept to
 * words that a mail server's chosen name hardly ever contains as a whole
 * word (not "host", "ip" or "mail"): a false alarm sends people to their
 * provider for nothing. */
static const char *const generic_words[] = {
    "dynamic", "dyn",    "dhcp",     "pool",      "dsl",         "adsl", "vdsl",       "xdsl",
    "cable",   "ppp",    "pppoe",    "static",    "customer",    "cust", "client",     "clients",
    "dial",    "dialup", "dialin",   "broadband", "residential", "home", "unassigned", "generic",
    "ftth",    "fttx",   "wireless", "mobile",    "hsd",         "cpe",  "subscriber", NULL};

/* Long words caught even inside a bigger token ("adsldynamic"). */
static const char *const generic_substrings[] = {"dynamic",  "dhcp",        "dialup", "broadband",
                                                 "customer", "residential", "pppoe",  NULL};

static int word_is_generic(const char *w, size_t n)
{
	for (size_t i = 0; generic_words[i]; i++)
		if (strlen(generic_words[i]) == n && !memcmp(generic_words[i], w, n)) return 1;
	for (size_t i = 0; generic_substrings[i]; i++) {
		size_t m = strlen(generic_substrings[i]);
		for (size_t k = 0; k + m <= n; k++)
			if (!memcmp(w + k, generic_substrings[i], m)) return 1;
	}
	return 0;
}

int check_ptr_generic(const char *ptr, int family, const uint8_t *ip, char *why, size_t whysz)
{
	char name[DNS_NAME_TEXT_MAX];
	size_t n = strlen(ptr);
	if (n >= sizeof name) n = sizeof name - 1;
	for (size_t i = 0; i < n; i++) name[i] = base_lower(ptr[i]);
	name[n] = 0;
	/* Only the host part counts: the last two labels are the operator's domain. */
	size_t host_end = n;
	for (int dots = 0; host_end > 0; host_end--)
		if (name[host_end - 1] == '.' && ++dots == 2) break;
	if (host_end) host_end--;

	/* Words made of letters (a run of letters between non-letters). */
	for (size_t i = 0; i < host_end;) {
		if (!isalpha((unsigned char)name[i])) {
			i++;
			continue;
		}
		size_t s = i;
		while (i < host_end && isalpha((unsigned char)name[i])) i++;
		if (word_is_generic(name + s, i - s)) {
			if (why)
				snprintf(why, whysz, "contains the word '%.*s'", (int)(i - s),
				         name + s);
			return 1;
		}
	}
	if (family == AF_INET) {
		/* Decimal runs: three or four of the address's octets, or all four run together. */
		int used[4] = {0}, matched = 0;
		for (size_t i = 0; i < host_end;) {
			if (!isdigit((unsigned char)name[i])) {
				i++;
				continue;
			}
			size_t s = i;
			while (i < host_end && isdigit((unsigned char)name[i])) i++;
			size_t len = i - s;
			if (len >= 8) {
				char all[16], padded[16];
				snprintf(all, sizeof all, "%u%u%u%u", ip[0], ip[1], ip[2], ip[3]);
				snprintf(padded, sizeof padded, "%03u%03u%03u%03u", ip[0], ip[1],
				         ip[2], ip[3]);
				if ((len == strlen(all) && !memcmp(name + s, all, len)) ||
				    (len == 12 && !memcmp(name + s, padded, 12))) {
					if (why)
						snprintf(why, whysz,
						         "embeds the address as one number");
					return 1;
				}
				continue;
			}
			if (len > 3) continue;
			char tmp[4];
			memcpy(tmp, name + s, len);
			tmp[len] = 0;
			unsigned v = (unsigned)atoi(tmp);
			for (int k = 0; k < 4; k++)
				if (!used[k] && ip[k] == v) {
					used[k] = 1;
					matched++;
					break;
				}
		}
		if (matched >= 3) {
			if (why)
				snprintf(why, whysz, "embeds %d of the address's 4 numbers",
				         matched);
			return 1;
		}
		char hex[9];
		snprintf(hex, sizeof hex, "%02x%02x%02x%02x", ip[0], ip[1], ip[2], ip[3]);
		if (strstr(name, hex)) {
			if (why) snprintf(why, whysz, "embeds the address in hexadecimal");
			return 1;
		}
	} else {
		/* IPv6: the low 32 bits in hex, each run of up to four hex digits
		 * read as one zero-padded group ("2001-db8--c000-20a"). */
		char hexname[4 * DNS_NAME_TEXT_MAX];
		size_t h = 0;
		for (size_t i = 0; i < host_end;) {
			if (!isxdigit((unsigned char)name[i])) {
				i++;
				continue;
			}
			size_t st = i;
			while (i < host_end && isxdigit((unsigned char)name[i])) i++;
			size_t len = i - st;
			for (size_t k = len; k < 4; k++) hexname[h++] = '0';
			memcpy(hexname + h, name + st, len);
			h += len;
		}
		hexname[h] = 0;
		char low[9];
		snprintf(low, sizeof low, "%02x%02x%02x%02x", ip[12], ip[13], ip[14], ip[15]);
		if (strcmp(low, "00000000") && strstr(hexname, low)) {
			if (why) snprintf(why, whysz, "embeds the address's hexadecimal digits");
			return 1;
		}
	}
	return 0;
}

/* ---- the report ------------------------------------------------------------ */

/* ---- the lookups ----------------------------------------------------------- */

/* One query's answer, filled by the resolver callback. */
struct slot {
	struct dns_answer ans;
	int done;
};

static void slot_cb(void *arg, const char *name, uint16_t type, struct dns_answer *ans)
{
	(void)name;
	(void)type;
	struct slot *s = arg;
	dns_answer_take(&s->ans, ans);
	s->done = 1;
}

static void submit(struct dns_resolver *r, const char *name, uint16_t type, struct slot *s)
{
	struct base_err e;
	dns_answer_init(&s->ans);
	if (dns_resolver_submit(r, name, type, slot_cb, s, &e) < 0) {
		s->ans.status = DNS_LOOKUP_ERROR;
		snprintf(s->ans.why, sizeof s->ans.why, "%.120s", e.msg);
		s->done = 1;
	}
}

/* The reversed-address prefix of a DNSBL or PTR name, without the suffix. */
static void reverse_name(int family, const uint8_t *ip, char *out, size_t cap)
{
	if (family == AF_INET) {
		snprintf(out, cap, "%u.%u.%u.%u", ip[3], ip[2], ip[1], ip[0]);
		return;
	}
	static const char hx[] = "0123456789abcdef";
	size_t o = 0;
	for (int i = 15; i >= 0 && o + 4 < cap; i--) {
		out[o++] = hx[ip[i] & 15];
		out[o++] = '.';
		out[o++] = hx[ip[i] >> 4];
		out[o++] = '.';
	}
	out[o ? o - 1 : 0] = 0;
}

/* Per list: the address, its TXT, the must-be-listed and must-not entries. */
enum { Q_ADDR, Q_TXT, Q_TEST2, Q_TEST1, Q_PER_LIST };

static const char *verdict_word(int v)
{
	static const char *const w[] = {"not-listed", "listed", "list-error", "dns-failed"};
	return w[v];
}

static const char *code_meaning(const struct check_dnsbl *l, const uint8_t *a)
{
	for (size_t i = 0; i < l->ncodes; i++)
		if (!memcmp(l->codes[i].addr, a, 4)) return l->codes[i].meaning;
	return NULL;
}

static void report_list(struct report *r, const struct check_dnsbl *l, struct slot *q,
                        const char *ipstr, int first)
{
	struct base_buf *j = r->json;
	int v = check_dnsbl_classify(&q[Q_ADDR].ans);
	int t2 = check_dnsbl_classify(&q[Q_TEST2].ans);
	int t1 = check_dnsbl_classify(&q[Q_TEST1].ans);
	const char *status;
	char detail[300] = "";
	if (v == CHECK_V_DNS_FAILED || t2 == CHECK_V_DNS_FAILED || t1 == CHECK_V_DNS_FAILED) {
		const struct dns_answer *f = v == CHECK_V_DNS_FAILED    ? &q[Q_ADDR].ans
		                             : t2 == CHECK_V_DNS_FAILED ? &q[Q_TEST2].ans
		                                                        : &q[Q_TEST1].ans;
		status = "error";
		snprintf(detail, sizeof detail, "DNS %s", dns_lookup_status_name(f->status));
	} else if (v == CHECK_V_LIST_ERROR || t2 == CHECK_V_LIST_ERROR) {
		const struct dns_answer *f =
		    v == CHECK_V_LIST_ERROR ? &q[Q_ADDR].ans : &q[Q_TEST2].ans;
		char a[INET_ADDRSTRLEN] = "?";
		for (size_t i = 0; i < f->n; i++)
			if (f->rr[i].len == 4) inet_ntop(AF_INET, f->rr[i].data, a, sizeof a);
		status = "error";
		snprintf(detail, sizeof detail,
		         "the list answered %s, an error code, not a listing", a);
	} else if (t2 != CHECK_V_LISTED || t1 != CHECK_V_NOT_LISTED) {
		status = "broken";
		snprintf(detail, sizeof detail, "%s",
		         t2 != CHECK_V_LISTED
		             ? "its test entry 127.0.0.2 is not listed"
		             : "it lists its test entry 127.0.0.1, which it must not");
	} else {
		status = verdict_word(v);
	}
	base_buf_puts(j, first ? "{\"zone\":" : ",{\"zone\":");
	check_json_str(j, l->zone);
	base_buf_puts(j, ",\"name\":");
	check_json_str(j, l->name);
	base_buf_printf(j, ",\"status\":\"%s\",\"codes\":[", status);
	char codes[400] = "";
	size_t cl = 0;
	if (!strcmp(status, "listed")) {
		for (size_t i = 0; i < q[Q_ADDR].ans.n; i++) {
			const uint8_t *d = (const uint8_t *)q[Q_ADDR].ans.rr[i].data;
			char a[INET_ADDRSTRLEN];
			inet_ntop(AF_INET, d, a, sizeof a);
			const char *m = code_meaning(l, d);
			base_buf_printf(j, "%s{\"code\":\"%s\"", i ? "," : "", a);
			if (m) {
				base_buf_puts(j, ",\"meaning\":");
				check_json_str(j, m);
			}
			base_buf_puts(j, "}");
			if (cl < sizeof codes)
				cl += (size_t)snprintf(codes + cl, sizeof codes - cl, "%s%s%s%s%s",
				                       i ? ", " : "", a, m ? " (" : "", m ? m : "",
				                       m ? ")" : "");
		}
	}
	base_buf_puts(j, "]");
	char reason[512] = "";
	if (!strcmp(status, "listed") && q[Q_TXT].ans.n) {
		snprintf(reason, sizeof reason, "%.*s", (int)q[Q_TXT].ans.rr[0].len,
		         q[Q_TXT].ans.rr[0].data);
		base_buf_puts(j, ",\"reason\":");
		check_json_str(j, reason);
	}
	if (detail[0]) {
		base_buf_puts(j, ",\"detail\":");
		check_json_str(j, detail);
	}
	base_buf_puts(j, ",\"url\":");
	check_json_str(j, l->url);
	base_buf_puts(j, "}");

	if (!strcmp(status, "listed")) {
		for (char *c = reason; *c; c++)
			if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e) *c = '?';
		check_problem(
		    r, "dnsbl",
		    "%s is listed on %s (%s): %s%s%s. Find and stop what sent the mail that got it "
		    "listed (an infected or compromised machine, an open relay or form, a bad "
		    "list), then ask for delisting at %s",
		    ipstr, l->name, l->zone, codes, reason[0] ? "; the list says: " : "", reason,
		    l->url);
	} else if (!strcmp(status, "broken")) {
		check_warning(r, "dnsbl",
		        "%s (%s) fails the RFC 5782 test: %s; its answer is not trusted. Drop it "
		        "from your list file",
		        l->name, l->zone, detail);
	} else if (!strcmp(status, "error")) {
		r->could_not = 1;
		int refused = strstr(detail, "error code") != NULL;
		check_warning(r, "dnsbl", "%s (%s) could not be checked: %s. %s", l->name, l->zone,
		        detail,
		        refused ? "The list refuses this resolver: query it through your own "
		                  "resolver (not a public one) or with the list's access key"
		                : "Check that your resolver can reach the list, and try again");
	} else {
		check_ok(r, "not listed on %s (%s)", l->name, l->zone);
	}
}

static void check_rdns(struct dns_resolver *res, struct report *r, int family, const uint8_t *ip,
                       const char *ipstr, struct dns_answer *ptr)
{
	struct base_buf *j = r->json;
	base_buf_printf(r->text, "\nReverse DNS:\n");
	base_buf_puts(j, ",\"ptr\":{\"names\":[");
	if (ptr->status == DNS_LOOKUP_SERVFAIL || ptr->status == DNS_LOOKUP_TIMEOUT ||
	    ptr->status == DNS_LOOKUP_ERROR) {
		base_buf_printf(j, "],\"status\":\"error\"}");
		r->could_not = 1;
		check_warning(r, "ptr", "could not look up the PTR of %s (DNS %s)", ipstr,
		        dns_lookup_status_name(ptr->status));
		return;
	}
	if (ptr->n == 0) {
		base_buf_printf(j, "],\"status\":\"missing\"}");
		check_problem(
		    r, "ptr",
		    "%s has no PTR record: many receivers refuse mail from it. Ask whoever owns "
		    "the address (your hosting or access provider) to set a PTR naming your mail "
		    "server, e.g. mail.yourdomain.example, with a matching A%s record",
		    ipstr, family == AF_INET6 ? "AAAA" : "");
		return;
	}
	size_t n = ptr->n > 8 ? 8 : ptr->n;
	struct slot fw[8];
	for (size_t i = 0; i < n; i++)
		submit(res, ptr->rr[i].data, family == AF_INET ? DNS_T_A : DNS_T_AAAA, &fw[i]);
	dns_resolver_run(res);
	int confirmed_any = 0, generic_any = 0, fw_failed = 0;
	for (size_t i = 0; i < n; i++) {
		const char *name = ptr->rr[i].data;
		int confirmed = 0;
		for (size_t k = 0; k < fw[i].ans.n; k++)
			if (fw[i].ans.rr[k].len == (family == AF_INET ? 4u : 16u) &&
			    !memcmp(fw[i].ans.rr[k].data, ip, fw[i].ans.rr[k].len))
				confirmed = 1;
		if (fw[i].ans.status == DNS_LOOKUP_SERVFAIL ||
		    fw[i].ans.status == DNS_LOOKUP_TIMEOUT || fw[i].ans.status == DNS_LOOKUP_ERROR)
			fw_failed = 1;
		char why[128];
		int generic = check_ptr_generic(name, family, ip, why, sizeof why);
		base_buf_puts(j, i ? ",{\"name\":" : "{\"name\":");
		check_json_str(j, name);
		base_buf_printf(j, ",\"forward_confirmed\":%s,\"generic\":%s",
		                confirmed ? "true" : "false", generic ? "true" : "false");
		if (generic) {
			base_buf_puts(j, ",\"generic_why\":");
			check_json_str(j, why);
		}
		base_buf_puts(j, "}");
		confirmed_any |= confirmed;
		if (confirmed)
			check_ok(r, "PTR %s resolves back to %s (forward-confirmed)", name, ipstr);
		else
			check_problem(r, "fcrdns",
			        "PTR %s does not resolve back to %s: add an A%s record for %s "
			        "pointing to %s (or change the PTR to a name that has one)",
			        name, ipstr, family == AF_INET6 ? "AAAA" : "", name, ipstr);
		if (generic) {
			generic_any = 1;
			check_problem(r, "ptr",
			        "PTR %s looks generic (%s): receivers take it for a dial-up or "
			        "customer line. Ask your provider for a PTR that names your mail "
			        "server (e.g. mail.yourdomain.example) and use that name in HELO",
			        name, why);
		} else {
			check_ok(r, "PTR %s does not look generic", name);
		}
		dns_answer_free(&fw[i].ans);
	}
	if (fw_failed && !confirmed_any) r->could_not = 1;
	base_buf_printf(j, "],\"status\":\"%s\",\"forward_confirmed\":%s,\"generic\":%s}",
	                confirmed_any && !generic_any ? "ok" : "problems",
	                confirmed_any ? "true" : "false", generic_any ? "true" : "false");
}

int check_ip(struct dns_resolver *res, const struct check_ip_opts *o, struct base_buf *json,
             struct base_buf *text, struct base_err *err)
{
	uint8_t ip[16];
	int family;
	if (!o->ip) return base_errf(err, "no IP address given");
	if (inet_pton(AF_INET, o->ip, ip) == 1)
		family = AF_INET;
	else if (inet_pton(AF_INET6, o->ip, ip) == 1)
		family = AF_INET6;
	else
		return base_errf(err, "not an IP address: '%s'", o->ip);
	char ipstr[INET6_ADDRSTRLEN];
	inet_ntop(family, ip, ipstr, sizeof ipstr);
	const struct check_dnsbl_set *set = o->lists;
	size_t nl = set ? set->n : 0;

	char rev[80], t2[80], t1[80];
	reverse_name(family, ip, rev, sizeof rev);
	if (family == AF_INET) {
		snprintf(t2, sizeof t2, "2.0.0.127");
		snprintf(t1, sizeof t1, "1.0.0.127");
	} else {
		static const uint8_t v6t2[16] = {0, 0, 0,    0,    0,   0, 0, 0,
		                                 0, 0, 0xff, 0xff, 127, 0, 0, 2};
		static const uint8_t v6t1[16] = {0, 0, 0,    0,    0,   0, 0, 0,
		                                 0, 0, 0xff, 0xff, 127, 0, 0, 1};
		reverse_name(AF_INET6, v6t2, t2, sizeof t2);
		reverse_name(AF_INET6, v6t1, t1, sizeof t1);
	}
	struct slot *q = base_xcalloc(nl * Q_PER_LIST + 1, sizeof *q);
	char *use = base_xcalloc(nl + 1, 1);
	const int want = family == AF_INET ? CHECK_DNSBL_IP4 : CHECK_DNSBL_IP6;
	/* Everything goes out before anything is awaited: one round trip. */
	char name[400];
	snprintf(name, sizeof name, "%s.%s", rev, family == AF_INET ? "in-addr.arpa" : "ip6.arpa");
	struct slot *ptr = &q[nl * Q_PER_LIST];
	submit(res, name, DNS_T_PTR, ptr);
	for (size_t i = 0; i < nl; i++) {
		const struct check_dnsbl *l = &set->lists[i];
		if (!(l->kind & want)) continue;
		use[i] = 1;
		struct slot *s = &q[i * Q_PER_LIST];
		snprintf(name, sizeof name, "%s.%s", rev, l->zone);
		submit(res, name, DNS_T_A, &s[Q_ADDR]);
		submit(res, name, DNS_T_TXT, &s[Q_TXT]);
		snprintf(name, sizeof name, "%s.%s", t2, l->zone);
		submit(res, name, DNS_T_A, &s[Q_TEST2]);
		snprintf(name, sizeof name, "%s.%s", t1, l->zone);
		submit(res, name, DNS_T_A, &s[Q_TEST1]);
	}
	dns_resolver_run(res);

	struct report r = {json, text, {0}, {0}, 0, 0, 0};
	base_buf_init(&r.problems);
	base_buf_init(&r.warnings);
	base_buf_puts(json, "{\"ip\":");
	check_json_str(json, ipstr);
	base_buf_printf(text, "mailrep check ip %s\n\nBlocklists:\n", ipstr);
	base_buf_puts(json, ",\"dnsbls\":[");
	int first = 1, nlisted = 0, nchecked = 0;
	for (size_t i = 0; i < nl; i++) {
		if (!use[i]) continue;
		int before = r.nproblems;
		report_list(&r, &set->lists[i], &q[i * Q_PER_LIST], ipstr, first);
		first = 0;
		nchecked++;
		if (r.nproblems > before) nlisted++;
	}
	base_buf_printf(json, "],\"lists_checked\":%d,\"listed_on\":%d", nchecked, nlisted);
	if (!nchecked)
		check_warning(&r, "dnsbl", "no list in the list file takes %s addresses",
		        family == AF_INET ? "IPv4" : "IPv6");
	check_rdns(res, &r, family, ip, ipstr, &ptr->ans);

	for (size_t i = 0; i < nl * Q_PER_LIST + 1; i++) dns_answer_free(&q[i].ans);
	free(q);
	free(use);
	int status = r.nproblems ? CHECK_PROBLEMS : r.could_not ? CHECK_COULD_NOT : CHECK_CLEAN;
	static const char *const words[] = {"clean", "problems", "usage", "could-not-check"};
	base_buf_printf(json, ",\"status\":\"%s\",\"problems\":[%s],\"warnings\":[%s]}\n",
	                words[status], r.problems.data ? r.problems.data : "",
	                r.warnings.data ? r.warnings.data : "");
	base_buf_printf(text, "\n%d problem(s), %d warning(s): %s\n", r.nproblems, r.nwarnings,
	                words[status]);
	base_buf_free(&r.problems);
	base_buf_free(&r.warnings);
	return status;
}
