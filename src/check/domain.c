/*
 * domain.c — `check domain`: SPF (one record, syntax, DNS-querying terms,
 * +all, ptr, where all stands, and with a client IP the evaluation), DKIM
 * keys per selector (present, revoked, type, size, t=y, sha1), DMARC (one
 * record, p/sp/np, rua, alignment modes), MX (not a CNAME, not an address,
 * resolvable, null MX) and whether an MTA-STS record is published.
 *
 * Each check appends to one struct report: findings become lines of the
 * human report and members of the JSON object; problems (things to fix)
 * and warnings (things to consider) are also collected in two JSON arrays.
 * A DNS failure marks the report "could not check" instead of guessing.
 */
#include "check/check.h"
#include "check/report.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "auth/auth.h"

static int dns_failed(const struct dns_answer *a)
{
	return a->status == DNS_LOOKUP_SERVFAIL || a->status == DNS_LOOKUP_TIMEOUT ||
	       a->status == DNS_LOOKUP_ERROR;
}

/* ---- SPF ------------------------------------------------------------------ */

/* Counts DNS-querying terms of domain's record, following include: and
 * redirect= targets written without macros (depth-limited). */
static unsigned spf_count_terms(const struct dns_lookup_ops *dns, const char *domain, int depth)
{
	if (depth > 10) return 0;
	struct dns_answer a;
	dns_lookup(dns, domain, DNS_T_TXT, &a);
	const struct dns_record *rec = NULL;
	int nrec = 0;
	for (size_t i = 0; i < a.n; i++)
		if (auth_spf_is_record(a.rr[i].data, a.rr[i].len)) {
			rec = &a.rr[i];
			nrec++;
		}
	unsigned count = 0;
	struct auth_spf_record r;
	if (nrec == 1 && auth_spf_parse(rec->data, rec->len, &r, NULL) == 0) {
		for (size_t i = 0; i < r.n && count < 100; i++) {
			const struct auth_spf_term *t = &r.terms[i];
			int k = t->kind;
			if (k == AUTH_SPF_INCLUDE || k == AUTH_SPF_A || k == AUTH_SPF_MX ||
			    k == AUTH_SPF_PTR || k == AUTH_SPF_EXISTS || k == AUTH_SPF_REDIRECT)
				count++;
			if ((k == AUTH_SPF_INCLUDE || k == AUTH_SPF_REDIRECT) &&
			    t->spec_len < 256 && !memchr(t->spec, '%', t->spec_len)) {
				char target[256];
				memcpy(target, t->spec, t->spec_len);
				target[t->spec_len] = 0;
				count += spf_count_terms(dns, target, depth + 1);
			}
		}
		auth_spf_record_free(&r);
	}
	dns_answer_free(&a);
	return count;
}

static void check_spf(const struct dns_lookup_ops *dns, const struct check_domain_opts *o,
                      struct report *r)
{
	struct base_buf *j = r->json;
	base_buf_printf(r->text, "SPF (%s):\n", o->domain);
	base_buf_puts(j, ",\"spf\":{");
	struct dns_answer a;
	dns_lookup(dns, o->domain, DNS_T_TXT, &a);
	if (dns_failed(&a)) {
		check_problem(r, "spf", "could not fetch the TXT records of %s (DNS %s)", o->domain,
		        dns_lookup_status_name(a.status));
		r->could_not = 1;
	}
	const struct dns_record *rec = NULL;
	int nrec = 0;
	for (size_t i = 0; i < a.n; i++)
		if (auth_spf_is_record(a.rr[i].data, a.rr[i].len)) {
			rec = &a.rr[i];
			nrec++;
		}
	base_buf_printf(j, "\"records\":%d", nrec);
	if (!dns_failed(&a) && nrec == 0)
		check_problem(r, "spf",
		        "no SPF record at %s: publish one TXT record such as "
		        "\"v=spf1 mx -all\" listing every host that sends for the domain",
		        o->domain);
	if (nrec > 1)
		check_problem(r, "spf",
		        "%d SPF records at %s: receivers treat that as a permerror; merge "
		        "them into one",
		        nrec, o->domain);
	if (nrec == 1) {
		char *text = base_xstrndup(rec->data, rec->len);
		base_buf_puts(j, ",\"record\":");
		check_json_str(j, text);
		struct auth_spf_record p;
		struct base_err err;
		if (auth_spf_parse(rec->data, rec->len, &p, &err) < 0) {
			base_buf_puts(j, ",\"valid\":false,\"error\":");
			check_json_str(j, err.msg);
			check_problem(r, "spf",
			        "the SPF record has a syntax error (%s); receivers "
			        "return permerror for every message",
			        err.msg);
		} else {
			base_buf_puts(j, ",\"valid\":true");
			check_ok(r, "one SPF record, valid syntax: %s", text);
			int all = -1, last_mech = -1, ptr = 0;
			for (size_t i = 0; i < p.n; i++) {
				if (p.terms[i].kind < AUTH_SPF_REDIRECT) last_mech = (int)i;
				if (p.terms[i].kind == AUTH_SPF_ALL && all < 0) all = (int)i;
				if (p.terms[i].kind == AUTH_SPF_PTR) ptr = 1;
			}
			unsigned terms = spf_count_terms(dns, o->domain, 0);
			/* Void lookups: evaluate for an address no record lists (class
			 * E, reserved), so every term before 'all' is looked up. */
			struct auth_spf_request probe = {0};
			probe.family = AF_INET;
			probe.ip[0] = 240;
			probe.ip[3] = 1;
			char ps[320];
			snprintf(ps, sizeof ps, "postmaster@%s", o->domain);
			probe.sender = ps;
			probe.helo = o->domain;
			struct auth_spf_outcome po;
			auth_spf_check(dns, &probe, &po);
			base_buf_printf(j, ",\"void_lookups\":%u", po.void_lookups);
			if (po.result == AUTH_SPF_PERMERROR)
				check_problem(r, "spf", "evaluating the record fails: %s", po.reason);
			else if (po.void_lookups)
				check_warning(r, "spf",
				        "%u lookup(s) of the record find nothing (void; "
				        "more than %d is a permerror): remove dead names",
				        po.void_lookups, AUTH_SPF_MAX_VOID);
			base_buf_printf(j, ",\"dns_terms\":%u,\"ptr\":%s", terms,
			                ptr ? "true" : "false");
			if (terms > AUTH_SPF_MAX_DNS_TERMS)
				check_problem(r, "spf",
				        "%u DNS-querying terms (includes followed); the limit is "
				        "%d and beyond it receivers return permerror: flatten "
				        "includes or use ip4:/ip6:",
				        terms, AUTH_SPF_MAX_DNS_TERMS);
			else
				check_ok(r, "%u DNS-querying terms (limit %d)", terms,
				   AUTH_SPF_MAX_DNS_TERMS);
			if (ptr)
				check_problem(
				    r, "spf",
				    "the record uses ptr, which RFC 7208 says not to use "
				    "(slow, unreliable): list the addresses with ip4:/ip6: or a");
			if (all >= 0) {
				char q = p.terms[all].qualifier;
				base_buf_printf(j, ",\"all\":\"%call\"", q);
				if (q == '+')
					check_problem(r, "spf",
					        "'+all' lets every host on the internet pass: end "
					        "the record with -all or ~all");
				else if (q == '?')
					check_warning(r, "spf",
					        "'?all' gives neutral for everybody else: prefer "
					        "~all or -all");
				if (all != last_mech)
					check_problem(r, "spf",
					        "terms after 'all' are never evaluated: move 'all' "
					        "to the end");
				if (p.redirect >= 0)
					check_warning(
					    r, "spf",
					    "redirect= is ignored because the record has 'all'");
			} else {
				base_buf_puts(j, ",\"all\":null");
				if (p.redirect < 0)
					check_problem(r, "spf",
					        "the record has no 'all' and no redirect=: other "
					        "hosts get neutral; end it with -all or ~all");
			}
			auth_spf_record_free(&p);
		}
		free(text);
	}
	dns_answer_free(&a);

	if (o->ip) {
		struct auth_spf_request req = {0};
		if (inet_pton(AF_INET, o->ip, req.ip) == 1)
			req.family = AF_INET;
		else if (inet_pton(AF_INET6, o->ip, req.ip) == 1)
			req.family = AF_INET6;
		char sender[320];
		snprintf(sender, sizeof sender, "postmaster@%s", o->domain);
		req.sender = o->mail_from ? o->mail_from : sender;
		req.helo = o->helo ? o->helo : o->domain;
		struct auth_spf_outcome out;
		auth_spf_check(dns, &req, &out);
		base_buf_puts(j, ",\"ip\":");
		check_json_str(j, o->ip);
		base_buf_puts(j, ",\"result\":");
		check_json_str(j, auth_spf_result_name(out.result));
		base_buf_puts(j, ",\"reason\":");
		check_json_str(j, out.reason);
		base_buf_printf(j, ",\"evaluated_dns_terms\":%u,\"void_lookups\":%u", out.dns_terms,
		                out.void_lookups);
		if (out.explanation[0]) {
			base_buf_puts(j, ",\"explanation\":");
			check_json_str(j, out.explanation);
		}
		if (out.result == AUTH_SPF_PASS)
			check_ok(r, "%s from %s: pass (%s)", req.sender, o->ip, out.reason);
		else if (out.result == AUTH_SPF_TEMPERROR) {
			check_problem(r, "spf", "%s from %s: temperror (%s)", req.sender, o->ip,
			        out.reason);
			r->could_not = 1;
		} else
			check_problem(r, "spf", "%s from %s: %s (%s)%s", req.sender, o->ip,
			        auth_spf_result_name(out.result), out.reason,
			        out.result == AUTH_SPF_PERMERROR
			            ? ": fix the record"
			            : ": add this address to the record "
			              "if it sends for the domain");
	}
	base_buf_puts(j, "}");
}

/* ---- DKIM keys ------------------------------------------------------------------ */

static void check_dkim(const struct dns_lookup_ops *dns, const struct check_domain_opts *o,
                       struct report *r)
{
	struct base_buf *j = r->json;
	base_buf_puts(j, ",\"dkim\":[");
	for (size_t s = 0; s < o->nselectors; s++) {
		const char *sel = o->selectors[s];
		char name[600];
		snprintf(name, sizeof name, "%s._domainkey.%s", sel, o->domain);
		base_buf_printf(r->text, "DKIM key (%s):\n", name);
		base_buf_puts(j, s ? ",{\"selector\":" : "{\"selector\":");
		check_json_str(j, sel);
		struct dns_answer a;
		dns_lookup(dns, name, DNS_T_TXT, &a);
		const char *status;
		if (dns_failed(&a)) {
			status = "dns-error";
			r->could_not = 1;
			check_problem(r, "dkim", "could not fetch %s (DNS %s)", name,
			        dns_lookup_status_name(a.status));
		} else if (a.n == 0) {
			status = "missing";
			check_problem(r, "dkim",
			        "no key at %s: publish the TXT record printed by "
			        "'mailrep dkim keygen'",
			        name);
		} else if (a.n > 1) {
			status = "invalid";
			check_problem(r, "dkim", "%zu TXT records at %s: keep exactly one", a.n, name);
		} else {
			struct auth_dkim_keyrec k;
			struct base_err err;
			if (auth_dkim_keyrec_parse(a.rr[0].data, a.rr[0].len, &k, &err) < 0) {
				status = "invalid";
				check_problem(r, "dkim", "the key at %s is unusable: %s", name, err.msg);
			} else {
				status = k.revoked ? "revoked" : "ok";
				const char *type =
				    k.alg == AUTH_DKIM_ED25519_SHA256 ? "ed25519" : "rsa";
				base_buf_printf(j,
				                ",\"type\":\"%s\",\"bits\":%u,\"testing\":%s,"
				                "\"sha1_only\":%s",
				                type, k.bits, k.testing ? "true" : "false",
				                k.sha1_only ? "true" : "false");
				if (k.revoked)
					check_problem(r, "dkim", "the key at %s is revoked (empty p=)",
					        name);
				else if (k.alg == AUTH_DKIM_RSA_SHA256 &&
				         k.bits < AUTH_DKIM_RSA_MIN_BITS)
					check_problem(r, "dkim",
					        "RSA key of %u bits: receivers refuse keys under "
					        "%d bits (RFC 8301); publish a 2048-bit key",
					        k.bits, AUTH_DKIM_RSA_MIN_BITS);
				else if (k.alg == AUTH_DKIM_RSA_SHA256 && k.bits < 2048)
					check_warning(r, "dkim",
					        "RSA key of %u bits: 2048 is recommended", k.bits);
				else
					check_ok(r, "%s key, %u bits", type, k.bits);
				if (k.sha1_only)
					check_problem(r, "dkim",
					        "the key allows only sha1 (h=), which receivers "
					        "refuse (RFC 8301)");
				if (k.testing)
					check_warning(r, "dkim",
					        "t=y: the key is in testing mode; receivers may "
					        "ignore its signatures");
				auth_dkim_keyrec_free(&k);
			}
		}
		base_buf_printf(j, ",\"status\":\"%s\"}", status);
		dns_answer_free(&a);
	}
	base_buf_puts(j, "]");
}

/* ---- DMARC ------------------------------------------------------------------------- */

static void check_dmarc(const struct dns_lookup_ops *dns, const struct check_domain_opts *o,
                        struct report *r)
{
	struct base_buf *j = r->json;
	base_buf_printf(r->text, "DMARC (_dmarc.%s):\n", o->domain);
	base_buf_puts(j, ",\"dmarc\":{");
	char name[300];
	snprintf(name, sizeof name, "_dmarc.%.250s", o->domain);
	struct dns_answer a;
	dns_lookup(dns, name, DNS_T_TXT, &a);
	int n = 0;
	for (size_t i = 0; i < a.n; i++) n += auth_dmarc_is_record(a.rr[i].data, a.rr[i].len);
	int failed = dns_failed(&a);
	dns_answer_free(&a);
	base_buf_printf(j, "\"records\":%d", n);
	if (failed) {
		r->could_not = 1;
		check_problem(r, "dmarc", "could not fetch %s", name);
		base_buf_puts(j, "}");
		return;
	}
	if (n > 1)
		check_problem(r, "dmarc", "%d DMARC records at %s: receivers then apply none; keep one",
		        n, name);
	struct auth_dmarc_found f;
	auth_dmarc_discover(dns, AUTH_DMARC_PSL, o->domain, &f);
	if (f.status < 0) {
		r->could_not = 1;
		check_problem(r, "dmarc", "DNS failure during discovery: %s", f.why);
	} else if (f.status > 0) {
		if (n <= 1)
			check_problem(r, "dmarc",
			        "no DMARC record for %s: publish "
			        "\"v=DMARC1; p=none; rua=mailto:...\" at %s, then "
			        "tighten p= once reports look right",
			        o->domain, name);
	} else {
		const struct auth_dmarc_record *d = &f.rec;
		base_buf_puts(j, ",\"found_at\":");
		check_json_str(j, f.domain);
		base_buf_printf(j, ",\"p\":\"%s\"", auth_dmarc_policy_name(d->p));
		if (d->sp >= 0) base_buf_printf(j, ",\"sp\":\"%s\"", auth_dmarc_policy_name(d->sp));
		if (d->np >= 0) base_buf_printf(j, ",\"np\":\"%s\"", auth_dmarc_policy_name(d->np));
		base_buf_printf(j,
		                ",\"adkim\":\"%c\",\"aspf\":\"%c\",\"pct\":%u,\"rua\":", d->adkim,
		                d->aspf, d->pct);
		check_json_str(j, d->rua);
		check_ok(r, "DMARC record at _dmarc.%s: p=%s%s%s, adkim=%c, aspf=%c", f.domain,
		   auth_dmarc_policy_name(d->p), d->sp >= 0 ? ", sp=" : "",
		   d->sp >= 0 ? auth_dmarc_policy_name(d->sp) : "", d->adkim, d->aspf);
		if (strcmp(f.domain, o->domain))
			check_warning(r, "dmarc",
			        "no record at %s itself; the organisational domain's "
			        "record applies (sp= if set)",
			        name);
		if (!d->has_p)
			check_problem(r, "dmarc",
			        "the record has no p=: add p=none, quarantine or reject");
		else if (d->p == AUTH_DMARC_NONE)
			check_warning(r, "dmarc",
			        "p=none only monitors: move to quarantine or reject when "
			        "reports show all your mail aligned");
		if (!d->rua[0]) check_warning(r, "dmarc", "no rua=: you get no aggregate reports");
		if (d->pct < 100)
			check_warning(r, "dmarc",
			        "pct=%u: the policy applies to part of the failing mail only",
			        d->pct);
	}
	base_buf_puts(j, "}");
}

/* ---- MX ------------------------------------------------------------------------------ */

static void check_mx(const struct dns_lookup_ops *dns, const struct check_domain_opts *o,
                     struct report *r)
{
	struct base_buf *j = r->json;
	base_buf_printf(r->text, "MX (%s):\n", o->domain);
	base_buf_puts(j, ",\"mx\":{\"hosts\":[");
	struct dns_answer a;
	dns_lookup(dns, o->domain, DNS_T_MX, &a);
	int null_mx = a.n == 1 && (!strcmp(a.rr[0].data, ".") || !a.rr[0].data[0]);
	for (size_t i = 0; i < a.n && !null_mx; i++) {
		const char *host = a.rr[i].data;
		uint8_t ip[16];
		int literal =
		    inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
		struct dns_answer c, h4, h6;
		dns_answer_init(&c);
		dns_answer_init(&h4);
		dns_answer_init(&h6);
		if (!literal) { /* an address is not looked up as a name */
			dns_lookup(dns, host, DNS_T_CNAME, &c);
			dns_lookup(dns, host, DNS_T_A, &h4);
			dns_lookup(dns, host, DNS_T_AAAA, &h6);
		}
		int cname = c.status == DNS_LOOKUP_OK;
		int resolves = h4.status == DNS_LOOKUP_OK || h6.status == DNS_LOOKUP_OK;
		if (!literal && dns_failed(&h4) && dns_failed(&h6)) r->could_not = 1;
		base_buf_puts(j, i ? ",{\"host\":" : "{\"host\":");
		check_json_str(j, host);
		base_buf_printf(
		    j, ",\"preference\":%u,\"cname\":%s,\"ip_literal\":%s,\"resolves\":%s}",
		    a.rr[i].pref, cname ? "true" : "false", literal ? "true" : "false",
		    resolves ? "true" : "false");
		if (literal)
			check_problem(r, "mx",
			        "MX %s is an IP address; an MX must name a host with A/AAAA "
			        "records",
			        host);
		else if (cname)
			check_problem(r, "mx",
			        "MX %s is a CNAME (RFC 2181 §10.3 forbids it): point the MX at "
			        "the canonical name %s",
			        host, c.rr[0].data);
		else if (!resolves)
			check_problem(r, "mx",
			        "MX %s has no A or AAAA record: mail to it cannot be delivered",
			        host);
		else
			check_ok(r, "MX %u %s resolves", a.rr[i].pref, host);
		dns_answer_free(&c);
		dns_answer_free(&h4);
		dns_answer_free(&h6);
	}
	base_buf_printf(j, "],\"null_mx\":%s", null_mx ? "true" : "false");
	if (dns_failed(&a)) {
		r->could_not = 1;
		check_problem(r, "mx", "could not fetch the MX records (DNS %s)",
		        dns_lookup_status_name(a.status));
	} else if (a.status == DNS_LOOKUP_NXDOMAIN) {
		check_problem(r, "mx", "%s does not exist in DNS", o->domain);
	} else if (a.status == DNS_LOOKUP_NODATA) {
		check_warning(r, "mx",
		        "no MX record: senders fall back to the domain's A/AAAA record; "
		        "publish an MX (or a null MX \"0 .\" if the domain takes no mail)");
	} else if (null_mx) {
		check_warning(r, "mx",
		        "null MX: the domain says it accepts no mail (RFC 7505); fine only "
		        "if intended");
	}
	dns_answer_free(&a);
	base_buf_puts(j, "}");
}

static void check_mta_sts(const struct dns_lookup_ops *dns, const struct check_domain_opts *o,
                          struct report *r)
{
	char name[300];
	snprintf(name, sizeof name, "_mta-sts.%.250s", o->domain);
	base_buf_printf(r->text, "MTA-STS (%s):\n", name);
	struct dns_answer a;
	dns_lookup(dns, name, DNS_T_TXT, &a);
	int present = 0;
	for (size_t i = 0; i < a.n; i++)
		if (a.rr[i].len >= 7 && !memcmp(a.rr[i].data, "v=STSv1", 7)) present = 1;
	base_buf_printf(r->json, ",\"mta_sts\":{\"present\":%s}", present ? "true" : "false");
	if (present)
		check_ok(r, "MTA-STS record present");
	else
		check_warning(r, "mta-sts", "no MTA-STS record: senders cannot require TLS to your MX");
	dns_answer_free(&a);
}

int check_domain(const struct dns_lookup_ops *dns, const struct check_domain_opts *o,
                 struct base_buf *json, struct base_buf *text, struct base_err *err)
{
	struct dns_name n;
	if (!o->domain || dns_name_from_text(&n, o->domain, 1, err) < 0)
		return base_errf(err, "not a domain name: '%s'", o->domain ? o->domain : "");
	if (o->ip) {
		uint8_t ip[16];
		if (inet_pton(AF_INET, o->ip, ip) != 1 && inet_pton(AF_INET6, o->ip, ip) != 1)
			return base_errf(err, "--ip: not an IP address: '%s'", o->ip);
	}
	struct report r = {json, text, {0}, {0}, 0, 0, 0};
	base_buf_init(&r.problems);
	base_buf_init(&r.warnings);
	base_buf_puts(json, "{\"domain\":");
	check_json_str(json, o->domain);
	base_buf_printf(text, "mailrep check domain %s\n\n", o->domain);
	check_spf(dns, o, &r);
	check_dkim(dns, o, &r);
	check_dmarc(dns, o, &r);
	check_mx(dns, o, &r);
	check_mta_sts(dns, o, &r);
	int status = r.could_not ? CHECK_COULD_NOT : r.nproblems ? CHECK_PROBLEMS : CHECK_CLEAN;
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
