/*
 * message.c — `check message`: what a receiver will think of one message.
 * Verifies every DKIM signature (keys through the DNS client), evaluates
 * SPF when the client IP and MAIL FROM are given, then DMARC on those
 * results, and checks the bulk-sender rules of the large mailbox providers:
 * a List-Unsubscribe field with an https URI, List-Unsubscribe-Post:
 * List-Unsubscribe=One-Click, both covered by a passing DKIM signature
 * aligned with the From domain, and the From domain aligned (DMARC pass).
 *
 * The message is parsed once by auth_msg_parse (bounded by AUTH_MSG_MAX and
 * its field limits); the From address is read from the one From field with
 * a small bounded scan (angle-addr if present, else the bare address).
 */
#include "check/check.h"
#include "check/report.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "auth/auth.h"

/* The value of field i, unfolded and trimmed, into out (bounded). */
static void field_value(const struct auth_msg *m, size_t i, char *out, size_t cap)
{
	const struct auth_msg_field *f = &m->fields[i];
	const char *v = f->raw + f->value_off, *e = f->raw + f->raw_len;
	size_t n = 0;
	for (; v < e && n + 1 < cap; v++) {
		if (*v == '\r' || *v == '\n') continue;
		char c = *v == '\t' ? ' ' : *v;
		if (c == ' ' && (n == 0 || out[n - 1] == ' ')) continue;
		out[n++] = c;
	}
	while (n && out[n - 1] == ' ') n--;
	out[n] = 0;
}

static int count_fields(const struct auth_msg *m, const char *name)
{
	int n = 0;
	size_t len = strlen(name);
	for (size_t i = 0; i < m->n; i++)
		if (m->fields[i].name_len == len && !strncasecmp(m->fields[i].name, name, len)) n++;
	return n;
}

/* The domain of the From address: the angle-addr if there is one, else the
 * first word with an '@'. Returns 0 or -1. */
static int from_domain(const char *value, char *out, size_t cap)
{
	const char *s = strrchr(value, '<'), *e;
	if (s) {
		s++;
		e = strchr(s, '>');
		if (!e) return -1;
	} else {
		s = value;
		while (*s == ' ') s++;
		e = s + strcspn(s, " ");
	}
	const char *at = NULL;
	for (const char *p = s; p < e; p++)
		if (*p == '@') at = p;
	if (!at || at + 1 >= e || (size_t)(e - at - 1) >= cap) return -1;
	size_t n = (size_t)(e - at - 1);
	for (size_t i = 0; i < n; i++) {
		char c = at[1 + i];
		if (!(isalnum((unsigned char)c) || c == '.' || c == '-' || c == '_')) return -1;
		out[i] = (char)tolower((unsigned char)c);
	}
	out[n] = 0;
	return 0;
}

/* Whether name is one of the ':'-joined lowercased names in list. */
static int list_has(const char *list, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = list; *p;) {
		const char *c = strchr(p, ':');
		size_t len = c ? (size_t)(c - p) : strlen(p);
		if (len == n && !memcmp(p, name, n)) return 1;
		if (!c) break;
		p = c + 1;
	}
	return 0;
}

/* Whether a List-Unsubscribe value holds an <https://...> URI. */
static int has_https_uri(const char *v)
{
	for (const char *p = strchr(v, '<'); p; p = strchr(p + 1, '<'))
		if (!strncasecmp(p + 1, "https://", 8) && strchr(p, '>')) return 1;
	return 0;
}

int check_message(const struct dns_lookup_ops *dns, const struct check_message_opts *o,
                  const char *data, size_t len, struct base_buf *json, struct base_buf *text,
                  struct base_err *err)
{
	struct auth_spf_request req = {0};
	if (o->ip) {
		if (inet_pton(AF_INET, o->ip, req.ip) == 1)
			req.family = AF_INET;
		else if (inet_pton(AF_INET6, o->ip, req.ip) == 1)
			req.family = AF_INET6;
		else
			return base_errf(err, "--ip: not an IP address: '%s'", o->ip);
		if (!o->mail_from) return base_errf(err, "--ip needs --mail-from");
	}
	struct auth_msg m;
	if (auth_msg_parse(&m, data, len, err) < 0) return -1;

	struct report r = {json, text, {0}, {0}, 0, 0, 0};
	base_buf_init(&r.problems);
	base_buf_init(&r.warnings);
	base_buf_puts(json, "{");
	base_buf_puts(text, "mailrep check message\n\nFrom:\n");

	/* From */
	char fromv[1024] = "", fdom[256] = "";
	int nfrom = count_fields(&m, "From");
	int fi = auth_msg_find_last(&m, "From", 4, m.n);
	if (fi >= 0) field_value(&m, (size_t)fi, fromv, sizeof fromv);
	int have_from = nfrom == 1 && from_domain(fromv, fdom, sizeof fdom) == 0;
	base_buf_puts(json, "\"from\":");
	check_json_str(json, fromv);
	base_buf_puts(json, ",\"from_domain\":");
	check_json_str(json, fdom);
	if (nfrom != 1)
		check_problem(&r, "from", "the message has %d From fields; it must have exactly one",
		        nfrom);
	else if (!have_from)
		check_problem(&r, "from", "the From field holds no usable address: '%.200s'", fromv);
	else
		check_ok(&r, "From domain %s", fdom);

	/* DKIM */
	base_buf_puts(text, "DKIM:\n");
	struct auth_dkim_verdict *v = base_xcalloc(AUTH_DKIM_MAX_SIGS, sizeof *v);
	struct base_err verr;
	int nsig = auth_dkim_verify(dns, data, len, 0, v, AUTH_DKIM_MAX_SIGS, &verr);
	if (nsig < 0) nsig = 0;
	size_t nv = (size_t)nsig < AUTH_DKIM_MAX_SIGS ? (size_t)nsig : AUTH_DKIM_MAX_SIGS;
	base_buf_puts(json, ",\"dkim\":[");
	char org_from[256] = "";
	if (have_from &&
	    auth_dmarc_org_domain(dns, AUTH_DMARC_PSL, fdom, org_from, sizeof org_from) < 0)
		org_from[0] = 0;
	int lu_covered = 0, lup_covered = 0, aligned_pass = 0;
	for (size_t i = 0; i < nv; i++) {
		char org[256] = "";
		auth_dmarc_org_domain(dns, AUTH_DMARC_PSL, v[i].domain, org, sizeof org);
		int aligned = org_from[0] && org[0] && !strcmp(org, org_from);
		int pass = v[i].result == AUTH_DKIM_PASS;
		base_buf_puts(json, i ? ",{\"domain\":" : "{\"domain\":");
		check_json_str(json, v[i].domain);
		base_buf_puts(json, ",\"selector\":");
		check_json_str(json, v[i].selector);
		base_buf_puts(json, ",\"result\":");
		check_json_str(json, auth_dkim_result_name(v[i].result));
		base_buf_puts(json, ",\"reason\":");
		check_json_str(json, v[i].reason);
		base_buf_puts(json, ",\"headers\":");
		check_json_str(json, v[i].headers);
		base_buf_printf(json, ",\"key_bits\":%u,\"aligned\":%s}", v[i].key_bits,
		                aligned ? "true" : "false");
		if (pass) {
			check_ok(&r, "signature d=%s s=%s passes%s", v[i].domain, v[i].selector,
			   aligned ? " and is aligned with From" : "");
			if (aligned) {
				aligned_pass = 1;
				lu_covered |= list_has(v[i].headers, "list-unsubscribe");
				lup_covered |= list_has(v[i].headers, "list-unsubscribe-post");
			}
		} else if (v[i].result == AUTH_DKIM_TEMPERROR) {
			r.could_not = 1;
			check_warning(&r, "dkim", "signature d=%s s=%s could not be checked: %s",
			        v[i].domain, v[i].selector, v[i].reason);
		} else {
			check_problem(&r, "dkim",
			        "signature d=%s s=%s: %s (%s): publish the selector's key at "
			        "%s._domainkey.%s and sign after the last change to the message",
			        v[i].domain, v[i].selector, auth_dkim_result_name(v[i].result),
			        v[i].reason, v[i].selector, v[i].domain);
		}
		if (pass && v[i].testing)
			check_warning(&r, "dkim", "the key of d=%s s=%s has t=y (testing): remove it",
			        v[i].domain, v[i].selector);
	}
	base_buf_puts(json, "]");
	if (!nsig)
		check_problem(&r, "dkim",
		        "the message has no DKIM signature: sign everything you send with a key of "
		        "your From domain (mailrep dkim sign)");
	else if (!aligned_pass)
		check_problem(&r, "dkim",
		        "no passing DKIM signature is aligned with the From domain %s: sign with "
		        "d=%s (or a subdomain of its organisational domain)",
		        fdom, fdom[0] ? fdom : "your From domain");

	/* SPF */
	base_buf_puts(text, "SPF:\n");
	struct auth_spf_outcome spf = {0};
	spf.result = AUTH_SPF_NONE;
	const char *spf_domain = NULL;
	if (o->ip) {
		req.sender = o->mail_from;
		const char *at = strrchr(o->mail_from, '@');
		spf_domain = at ? at + 1 : o->helo;
		req.helo = o->helo ? o->helo : (spf_domain ? spf_domain : "unknown");
		auth_spf_check(dns, &req, &spf);
		base_buf_puts(json, ",\"spf\":{\"result\":");
		check_json_str(json, auth_spf_result_name(spf.result));
		base_buf_puts(json, ",\"reason\":");
		check_json_str(json, spf.reason);
		base_buf_puts(json, "}");
		if (spf.result == AUTH_SPF_PASS)
			check_ok(&r, "SPF pass for %s from %s", o->mail_from, o->ip);
		else if (spf.result == AUTH_SPF_TEMPERROR) {
			r.could_not = 1;
			check_warning(&r, "spf", "SPF temperror for %s: %s", o->mail_from, spf.reason);
		} else
			check_problem(
			    &r, "spf",
			    "SPF %s for %s from %s (%s): add the sending address to the SPF record "
			    "of %s",
			    auth_spf_result_name(spf.result), o->mail_from, o->ip, spf.reason,
			    spf_domain ? spf_domain : "the MAIL FROM domain");
	} else {
		base_buf_puts(json, ",\"spf\":null");
		base_buf_puts(text, "  (not evaluated: give --ip and --mail-from)\n");
	}

	/* DMARC */
	base_buf_puts(text, "DMARC:\n");
	if (have_from) {
		struct auth_dmarc_input in = {0};
		in.from_domain = fdom;
		in.spf_result = spf.result;
		in.spf_domain = spf_domain;
		in.mode = AUTH_DMARC_PSL;
		for (size_t i = 0; i < nv && i < AUTH_DMARC_MAX_DKIM; i++) {
			in.dkim[i].result = v[i].result;
			in.dkim[i].domain = v[i].domain;
			in.ndkim++;
		}
		struct auth_dmarc_outcome out;
		auth_dmarc_evaluate(dns, &in, &out);
		base_buf_puts(json, ",\"dmarc\":{\"result\":");
		check_json_str(json, auth_dmarc_result_name(out.result));
		base_buf_printf(json, ",\"spf_aligned\":%s,\"dkim_aligned\":%s,\"reason\":",
		                out.spf_aligned ? "true" : "false",
		                out.dkim_aligned ? "true" : "false");
		check_json_str(json, out.reason);
		base_buf_puts(json, "}");
		if (out.result == AUTH_DMARC_R_PASS)
			check_ok(&r, "DMARC pass (%s aligned)",
			   out.dkim_aligned && out.spf_aligned ? "DKIM and SPF"
			   : out.dkim_aligned                  ? "DKIM"
			                                       : "SPF");
		else if (out.result == AUTH_DMARC_R_TEMPERROR) {
			r.could_not = 1;
			check_warning(&r, "dmarc", "DMARC could not be evaluated: %s", out.reason);
		} else if (out.result == AUTH_DMARC_R_NONE)
			check_problem(&r, "dmarc",
			        "no DMARC record for %s: bulk senders must publish one (start with "
			        "\"v=DMARC1; p=none; rua=mailto:...\" at _dmarc.%s)",
			        fdom, org_from[0] ? org_from : fdom);
		else
			check_problem(
			    &r, "dmarc",
			    "DMARC %s (%s): the From domain %s is not aligned with a passing DKIM "
			    "signature%s",
			    auth_dmarc_result_name(out.result), out.reason, fdom,
			    o->ip ? " or SPF" : "");
	} else {
		base_buf_puts(json, ",\"dmarc\":null");
	}

	/* Bulk-sender rules */
	base_buf_puts(text, "Bulk-sender rules:\n");
	char lu[2048] = "", lup[512] = "";
	int lui = auth_msg_find_last(&m, "List-Unsubscribe", 16, m.n);
	int lupi = auth_msg_find_last(&m, "List-Unsubscribe-Post", 21, m.n);
	if (lui >= 0) field_value(&m, (size_t)lui, lu, sizeof lu);
	if (lupi >= 0) field_value(&m, (size_t)lupi, lup, sizeof lup);
	int https = lui >= 0 && has_https_uri(lu);
	int one_click = lupi >= 0 && !strcmp(lup, "List-Unsubscribe=One-Click");
	base_buf_printf(json,
	                ",\"bulk\":{\"list_unsubscribe\":%s,\"https_uri\":%s,\"one_click\":%s,"
	                "\"list_unsubscribe_signed\":%s,\"list_unsubscribe_post_signed\":%s}",
	                lui >= 0 ? "true" : "false", https ? "true" : "false",
	                one_click ? "true" : "false", lu_covered ? "true" : "false",
	                lup_covered ? "true" : "false");
	if (lui < 0)
		check_problem(&r, "bulk",
		        "no List-Unsubscribe field: bulk mail must carry one with an https URI "
		        "(List-Unsubscribe: <https://...>)");
	else if (!https)
		check_problem(&r, "bulk", "List-Unsubscribe has no <https://...> URI (only '%.200s')",
		        lu);
	else
		check_ok(&r, "List-Unsubscribe with an https URI");
	if (lupi < 0)
		check_problem(&r, "bulk",
		        "no List-Unsubscribe-Post field: add \"List-Unsubscribe-Post: "
		        "List-Unsubscribe=One-Click\" (RFC 8058) for one-click unsubscribe");
	else if (!one_click)
		check_problem(&r, "bulk",
		        "List-Unsubscribe-Post is '%.200s', not List-Unsubscribe=One-Click", lup);
	else
		check_ok(&r, "List-Unsubscribe-Post: List-Unsubscribe=One-Click");
	if (lui >= 0 || lupi >= 0) {
		if (lu_covered && lup_covered)
			check_ok(&r,
			   "both List-Unsubscribe fields are covered by an aligned DKIM signature");
		else
			check_problem(
			    &r, "bulk",
			    "%s not covered by a passing DKIM signature aligned with From: add "
			    "them to the signed headers (h=), as mailrep dkim sign does by default",
			    !lu_covered && !lup_covered
			        ? "List-Unsubscribe and List-Unsubscribe-Post are"
			    : !lu_covered ? "List-Unsubscribe is"
			                  : "List-Unsubscribe-Post is");
	}

	free(v);
	auth_msg_free(&m);
	/* As for domains: a DNS failure may be what caused the problems seen. */
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
