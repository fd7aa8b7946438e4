/*
 * smtp.c — `check smtp`: talks to a mail server the way a sender would and
 * reports what a receiver's admin should fix: the banner and how long it
 * took, EHLO and its extensions, STARTTLS with the certificate's validity
 * dates and names, whether the PTR of the server's address matches the
 * banner name, the time of every step, and optionally whether the server
 * relays for outsiders.
 *
 * The conversation is a straight line of blocking steps through smtp/'s
 * blocking client (each reply bounded in size and in time, OpenSSL on the
 * same socket after STARTTLS). Host names are resolved only through the
 * given resolver. The open-relay probe
 * sends MAIL FROM and RCPT TO with outside addresses and then RSET and QUIT:
 * it never sends DATA, so no message can ever be relayed by it.
 */
#include "check/check.h"
#include "check/report.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "smtp/smtp.h"

static double ms_since(uint64_t t0)
{
	return (double)(base_mono_ns() - t0) / 1e6;
}

/* Sends a command and reads its reply, timing both. */
static int command(struct smtp_client *c, const char *cmd, struct smtp_reply *rp, double *ms,
                   char *why, size_t whysz)
{
	uint64_t t0 = base_mono_ns();
	struct base_err err;
	int rc = smtp_client_command(c, cmd, rp, &err);
	if (rc < 0) snprintf(why, whysz, "%s", err.msg);
	*ms = ms_since(t0);
	return rc;
}

/* ---- target and resolution ---------------------------------------------------- */

struct target {
	char host[256]; /* as given (without brackets) */
	int is_literal;
	uint16_t port;
	int family;
	uint8_t addr[16];
};

static int parse_target(const char *s, struct target *t, struct base_err *err)
{
	memset(t, 0, sizeof *t);
	t->port = 25;
	const char *host = s, *port = NULL;
	size_t hl;
	if (*s == '[') {
		const char *rb = strchr(s, ']');
		if (!rb) return base_errf(err, "'%s': missing ']'", s);
		host = s + 1;
		hl = (size_t)(rb - host);
		if (rb[1] == ':')
			port = rb + 2;
		else if (rb[1])
			return base_errf(err, "'%s': junk after ']'", s);
	} else {
		const char *colon = strchr(s, ':');
		if (colon && strchr(colon + 1, ':')) { /* a bare IPv6 address */
			hl = strlen(s);
		} else {
			hl = colon ? (size_t)(colon - s) : strlen(s);
			if (colon) port = colon + 1;
		}
	}
	if (!hl || hl >= sizeof t->host) return base_errf(err, "'%s': bad host", s);
	memcpy(t->host, host, hl);
	t->host[hl] = 0;
	if (port) {
		uint64_t v;
		if (base_parse_uint(port, 65535, &v) < 0 || v == 0)
			return base_errf(err, "'%s': bad port", s);
		t->port = (uint16_t)v;
	}
	if (inet_pton(AF_INET, t->host, t->addr) == 1) {
		t->family = AF_INET;
		t->is_literal = 1;
	} else if (inet_pton(AF_INET6, t->host, t->addr) == 1) {
		t->family = AF_INET6;
		t->is_literal = 1;
	} else {
		struct dns_name n;
		if (dns_name_from_text(&n, t->host, 1, err) < 0)
			return base_errf(err, "'%s': not a host name or address", t->host);
	}
	return 0;
}

static int resolve(const struct dns_lookup_ops *dns, struct target *t, char *why, size_t whysz)
{
	static const uint16_t types[2] = {DNS_T_A, DNS_T_AAAA};
	for (int i = 0; i < 2; i++) {
		struct dns_answer a;
		dns_lookup(dns, t->host, types[i], &a);
		if (a.n) {
			t->family = i ? AF_INET6 : AF_INET;
			memcpy(t->addr, a.rr[0].data, i ? 16 : 4);
			dns_answer_free(&a);
			return 0;
		}
		snprintf(why, whysz, "%s has no %s record (DNS %s)", t->host, i ? "AAAA" : "A",
		         dns_lookup_status_name(a.status));
		dns_answer_free(&a);
	}
	return -1;
}

/* ---- the certificate ---------------------------------------------------------- */

static void asn1_time_text(const ASN1_TIME *t, char *out, size_t cap, time_t *when)
{
	struct tm tm;
	*when = 0;
	if (t && ASN1_TIME_to_tm(t, &tm) == 1) {
		strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
		*when = timegm(&tm);
	} else {
		snprintf(out, cap, "?");
	}
}

static void report_cert(struct report *r, X509 *cert, const char *name_to_match, long verify)
{
	struct base_buf *j = r->json;
	if (!cert) {
		base_buf_puts(j, ",\"certificate\":null");
		check_problem(r, "tls", "the server sent no certificate");
		return;
	}
	char nb[32], na[32];
	time_t tb, ta;
	asn1_time_text(X509_get0_notBefore(cert), nb, sizeof nb, &tb);
	asn1_time_text(X509_get0_notAfter(cert), na, sizeof na, &ta);
	char subject[256] = "";
	X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, subject,
	                          sizeof subject);
	base_buf_puts(j, ",\"certificate\":{\"subject_cn\":");
	check_json_str(j, subject);
	base_buf_printf(j, ",\"not_before\":\"%s\",\"not_after\":\"%s\",\"names\":[", nb, na);
	GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	int nn = 0;
	char names[600] = "";
	size_t nl = 0;
	for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && i < 100; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		if (g->type != GEN_DNS) continue;
		const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
		int len = ASN1_STRING_length(g->d.dNSName);
		char s[256];
		snprintf(s, sizeof s, "%.*s", len < 255 ? len : 255, (const char *)d);
		for (char *c = s; *c; c++)
			if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e) *c = '?';
		base_buf_puts(j, nn++ ? "," : "");
		check_json_str(j, s);
		if (nl < sizeof names)
			nl += (size_t)snprintf(names + nl, sizeof names - nl, "%s%s",
			                       nn > 1 ? ", " : "", s);
	}
	GENERAL_NAMES_free(sans);
	time_t now = time(NULL);
	int expired = ta && now > ta, not_yet = tb && now < tb;
	int matches = name_to_match && name_to_match[0] &&
	              X509_check_host(cert, name_to_match, 0, 0, NULL) == 1;
	base_buf_printf(j, "],\"expired\":%s,\"not_yet_valid\":%s,\"checked_name\":",
	                expired ? "true" : "false", not_yet ? "true" : "false");
	check_json_str(j, name_to_match ? name_to_match : "");
	base_buf_printf(j, ",\"name_matches\":%s,\"chain_verified\":%s,\"verify_error\":",
	                matches ? "true" : "false", verify == X509_V_OK ? "true" : "false");
	check_json_str(j, X509_verify_cert_error_string(verify));
	base_buf_puts(j, "}");
	check_ok(r, "certificate for %s (names: %s), valid %s to %s", subject[0] ? subject : "(no CN)",
	   names[0] ? names : "none", nb, na);
	if (expired)
		check_problem(r, "tls", "the certificate expired on %s: renew it (and automate renewal)",
		        na);
	else if (not_yet)
		check_problem(r, "tls",
		        "the certificate is not valid before %s: check the server's clock", nb);
	else if (ta && ta - now < 14 * 86400)
		check_warning(r, "tls", "the certificate expires on %s, in under 14 days: renew it", na);
	if (name_to_match && name_to_match[0] && !matches)
		check_problem(r, "tls",
		        "the certificate does not name %s: get one whose subjectAltName includes "
		        "the server's name",
		        name_to_match);
	if (verify != X509_V_OK)
		check_warning(
		    r, "tls",
		    "the certificate chain does not verify against the system's CAs (%s); "
		    "opportunistic TLS still works, but MTA-STS and DANE senders will refuse it",
		    X509_verify_cert_error_string(verify));
}

/* ---- the conversation ---------------------------------------------------------- */

static void ehlo_json(struct base_buf *j, const struct smtp_reply *rp)
{
	base_buf_puts(j, "[");
	for (int i = 1; i < rp->nlines; i++) {
		base_buf_puts(j, i > 1 ? "," : "");
		check_json_str(j, smtp_reply_text(rp, i));
	}
	base_buf_puts(j, "]");
}

static void check_ptr_banner(const struct dns_lookup_ops *dns, struct report *r,
                             const struct target *t, const char *banner_name)
{
	char rev[100];
	const uint8_t *ip = t->addr;
	if (t->family == AF_INET) {
		snprintf(rev, sizeof rev, "%u.%u.%u.%u.in-addr.arpa", ip[3], ip[2], ip[1], ip[0]);
	} else {
		static const char hx[] = "0123456789abcdef";
		size_t o = 0;
		for (int i = 15; i >= 0; i--) {
			rev[o++] = hx[ip[i] & 15];
			rev[o++] = '.';
			rev[o++] = hx[ip[i] >> 4];
			rev[o++] = '.';
		}
		snprintf(rev + o, sizeof rev - o, "ip6.arpa");
	}
	struct dns_answer a;
	dns_lookup(dns, rev, DNS_T_PTR, &a);
	int match = 0;
	base_buf_puts(r->json, ",\"ptr\":[");
	for (size_t i = 0; i < a.n; i++) {
		base_buf_puts(r->json, i ? "," : "");
		check_json_str(r->json, a.rr[i].data);
		if (banner_name && !base_strcasecmp_ascii(a.rr[i].data, banner_name)) match = 1;
	}
	base_buf_printf(r->json, "],\"ptr_matches_banner\":%s", match ? "true" : "false");
	char ipstr[INET6_ADDRSTRLEN];
	inet_ntop(t->family, ip, ipstr, sizeof ipstr);
	if (a.status == DNS_LOOKUP_SERVFAIL || a.status == DNS_LOOKUP_TIMEOUT ||
	    a.status == DNS_LOOKUP_ERROR) {
		r->could_not = 1;
		check_warning(r, "ptr", "could not look up the PTR of %s (DNS %s)", ipstr,
		        dns_lookup_status_name(a.status));
	} else if (!a.n) {
		check_problem(r, "ptr",
		        "%s has no PTR record: ask the address's owner for one naming the server "
		        "(%s), with a matching A record",
		        ipstr, banner_name && banner_name[0] ? banner_name : "its banner name");
	} else if (!match) {
		check_problem(r, "ptr",
		        "the PTR of %s is %s but the banner says %s: make the banner (Postfix: "
		        "myhostname / smtpd_banner) and the PTR name the same host",
		        ipstr, a.rr[0].data,
		        banner_name && banner_name[0] ? banner_name : "nothing");
	} else {
		check_ok(r, "the PTR of %s (%s) matches the banner", ipstr, a.rr[0].data);
	}
	dns_answer_free(&a);
}

static void step_time(struct base_buf *j, const char *step, double ms, int *first)
{
	base_buf_printf(j, "%s\"%s\":%.1f", *first ? "" : ",", step, ms);
	*first = 0;
}

int check_smtp(const struct dns_lookup_ops *dns, const struct check_smtp_opts *o,
               struct base_buf *json, struct base_buf *text, struct base_err *err)
{
	struct target t;
	if (!o->target || parse_target(o->target, &t, err) < 0) return -1;
	const char *helo = o->helo ? o->helo : "mailrep-check.invalid";
	const char *rfrom = o->relay_from ? o->relay_from : "relay-probe@mailrep-probe.example";
	const char *rto = o->relay_to ? o->relay_to : "relay-probe@mailrep-probe.test";
	if (strlen(helo) > 255 || strlen(rfrom) > SMTP_PATH_MAX || strlen(rto) > SMTP_PATH_MAX ||
	    strpbrk(helo, "\r\n <>") || strpbrk(rfrom, "\r\n <>") || strpbrk(rto, "\r\n <>"))
		return base_errf(err, "bad --helo or probe address");
	unsigned timeout = o->timeout_ms ? o->timeout_ms : 10000;

	struct report r = {json, text, {0}, {0}, 0, 0, 0};
	base_buf_init(&r.problems);
	base_buf_init(&r.warnings);
	struct base_buf times;
	base_buf_init(&times);
	int tfirst = 1;
	base_buf_puts(json, "{\"target\":");
	check_json_str(json, o->target);
	base_buf_printf(text, "mailrep check smtp %s\n\n", o->target);

	char why[BASE_ERR_MAX];
	struct smtp_reply *rp = base_xmalloc(sizeof *rp);
	struct smtp_client c;
	smtp_client_init(&c, -1, timeout);
	struct base_err cerr;
	double ms;
	char banner_name[256] = "";
	uint64_t t0 = base_mono_ns();
	if (!t.is_literal && resolve(dns, &t, why, sizeof why) < 0) {
		r.could_not = 2; /* nothing further could be checked */
		check_problem(&r, "connect", "cannot resolve %s: %s", t.host, why);
		goto done;
	}
	step_time(&times, "resolve", ms_since(t0), &tfirst);
	char ipstr[INET6_ADDRSTRLEN];
	inet_ntop(t.family, t.addr, ipstr, sizeof ipstr);
	base_buf_printf(json, ",\"address\":\"%s\",\"port\":%u", ipstr, t.port);

	base_buf_puts(text, "Connection:\n");
	t0 = base_mono_ns();
	struct base_sockaddr to = {.family = t.family, .port = t.port};
	memcpy(to.a.v6, t.addr, t.family == AF_INET ? 4 : 16);
	if (smtp_client_connect(&c, &to, timeout, &cerr) < 0) {
		r.could_not = 2; /* nothing further could be checked */
		check_problem(&r, "connect", "cannot connect to %s port %u: %s", ipstr, t.port,
		              cerr.msg);
		goto done;
	}
	step_time(&times, "connect", ms_since(t0), &tfirst);
	if (smtp_client_read_reply(&c, rp, &cerr) < 0) {
		r.could_not = 2; /* nothing further could be checked */
		check_problem(&r, "banner", "no banner from %s: %s", ipstr, cerr.msg);
		goto done;
	}
	ms = ms_since(t0);
	step_time(&times, "banner", ms, &tfirst);
	const char *banner = smtp_reply_text(rp, 0);
	sscanf(banner, "%255s", banner_name);
	base_buf_printf(json, ",\"banner\":{\"code\":%d,\"text\":", rp->code);
	check_json_str(json, banner);
	base_buf_puts(json, ",\"name\":");
	check_json_str(json, banner_name);
	base_buf_printf(json, ",\"ms\":%.1f}", ms);
	if (rp->code != 220) {
		check_problem(&r, "banner", "the server greets with %d, not 220: %s", rp->code,
		              banner);
		goto quit;
	}
	check_ok(&r, "banner after %.0f ms: 220 %s", ms, banner);
	if (ms > 5000)
		check_warning(&r, "banner",
		        "the banner took %.1f s: senders time out or take it for tarpitting; check "
		        "the server's DNS lookups and load",
		        ms / 1000);
	if (!strchr(banner_name, '.'))
		check_warning(&r, "banner",
		        "the banner does not start with a fully qualified host name: set it to the "
		        "server's name (the same as its PTR)");

	char cmd[300];
	snprintf(cmd, sizeof cmd, "EHLO %s", helo);
	if (command(&c, cmd, rp, &ms, why, sizeof why) < 0) {
		r.could_not = 2; /* nothing further could be checked */
		check_problem(&r, "ehlo", "EHLO failed: %s", why);
		goto done;
	}
	step_time(&times, "ehlo", ms, &tfirst);
	int starttls = smtp_reply_has_ext(rp, "STARTTLS");
	base_buf_printf(json, ",\"ehlo\":{\"code\":%d,\"ms\":%.1f,\"extensions\":", rp->code, ms);
	ehlo_json(json, rp);
	base_buf_puts(json, "}");
	if (rp->code != 250) {
		check_problem(&r, "ehlo", "EHLO answered %d: the server must support ESMTP (RFC 5321)",
		        rp->code);
		goto quit;
	}
	check_ok(&r, "EHLO answered in %.0f ms with %d extension(s)", ms, rp->nlines - 1);

	base_buf_puts(text, "TLS:\n");
	if (!starttls) {
		base_buf_puts(json, ",\"starttls\":false");
		check_problem(
		    &r, "tls",
		    "no STARTTLS: mail to this server travels in clear text; install a "
		    "certificate and enable STARTTLS (Postfix: smtpd_tls_security_level = may)");
	} else {
		base_buf_puts(json, ",\"starttls\":true");
		if (command(&c, "STARTTLS", rp, &ms, why, sizeof why) < 0 || rp->code != 220) {
			check_problem(&r, "tls", "STARTTLS is advertised but refused: %s",
			              rp->nlines ? smtp_reply_text(rp, 0) : why);
			goto done;
		}
		step_time(&times, "starttls", ms, &tfirst);
		t0 = base_mono_ns();
		struct smtp_tls_opts tlso = {.sni = t.is_literal ? NULL : t.host};
		if (smtp_client_starttls(&c, &tlso, &cerr) < 0) {
			check_problem(&r, "tls", "%s", cerr.msg);
			goto done;
		}
		ms = ms_since(t0);
		step_time(&times, "tls_handshake", ms, &tfirst);
		base_buf_puts(json, ",\"tls\":{\"version\":");
		check_json_str(json, c.tls.version);
		base_buf_puts(json, ",\"cipher\":");
		check_json_str(json, c.tls.cipher);
		base_buf_printf(json, ",\"ms\":%.1f", ms);
		check_ok(&r, "STARTTLS: %s, %s, handshake %.0f ms", c.tls.version, c.tls.cipher,
		         ms);
		report_cert(&r, c.tls.cert, t.is_literal ? banner_name : t.host, c.tls.verify);
		base_buf_puts(json, "}");
		if (command(&c, cmd, rp, &ms, why, sizeof why) < 0 || rp->code != 250) {
			check_problem(&r, "tls", "EHLO after STARTTLS failed: %s",
			              rp->nlines ? smtp_reply_text(rp, 0) : why);
			goto done;
		}
		step_time(&times, "ehlo_tls", ms, &tfirst);
	}

	base_buf_puts(text, "Reverse DNS:\n");
	check_ptr_banner(dns, &r, &t, banner_name);

	if (o->open_relay_probe) {
		base_buf_puts(text, "Open relay probe (no message is ever sent):\n");
		snprintf(cmd, sizeof cmd, "MAIL FROM:<%s>", rfrom);
		int mail_code = 0, rcpt_code = 0;
		if (command(&c, cmd, rp, &ms, why, sizeof why) == 0) {
			mail_code = rp->code;
			step_time(&times, "mail", ms, &tfirst);
			if (rp->code / 100 == 2) {
				snprintf(cmd, sizeof cmd, "RCPT TO:<%s>", rto);
				if (command(&c, cmd, rp, &ms, why, sizeof why) == 0) {
					rcpt_code = rp->code;
					step_time(&times, "rcpt", ms, &tfirst);
				}
			}
			/* Never DATA: end the transaction here. */
			command(&c, "RSET", rp, &ms, why, sizeof why);
		}
		const char *verdict = rcpt_code / 100 == 2                           ? "open"
		                      : rcpt_code / 100 == 4 || rcpt_code / 100 == 5 ? "closed"
		                      : mail_code / 100 == 4 || mail_code / 100 == 5 ? "closed"
		                                                                     : "unknown";
		base_buf_printf(
		    json, ",\"open_relay\":{\"result\":\"%s\",\"mail_code\":%d,\"rcpt_code\":%d}",
		    verdict, mail_code, rcpt_code);
		if (!strcmp(verdict, "open"))
			check_problem(&r, "relay",
			        "OPEN RELAY: the server accepted RCPT TO:<%s> for MAIL FROM:<%s> "
			        "from an "
			        "outsider. Restrict relaying to your own networks and "
			        "authenticated users "
			        "(Postfix: smtpd_relay_restrictions = permit_mynetworks, "
			        "permit_sasl_authenticated, reject_unauth_destination) now: open "
			        "relays "
			        "get listed within hours",
			        rto, rfrom);
		else if (!strcmp(verdict, "closed"))
			check_ok(&r, "relaying refused (%d)", rcpt_code ? rcpt_code : mail_code);
		else {
			r.could_not = 1;
			check_warning(&r, "relay", "the open-relay probe got no answer: %s", why);
		}
	}

quit:
	t0 = base_mono_ns();
	if (command(&c, "QUIT", rp, &ms, why, sizeof why) == 0)
		step_time(&times, "quit", ms, &tfirst);
done:
	base_buf_printf(json, ",\"ms\":{%s}", times.data ? times.data : "");
	smtp_client_close(&c);
	free(rp);
	base_buf_free(&times);
	/* A found problem (an open relay) outranks a lookup that failed on the
	 * side; a conversation that never got going is "could not check". */
	int status = r.could_not == 2 ? CHECK_COULD_NOT
	             : r.nproblems    ? CHECK_PROBLEMS
	             : r.could_not    ? CHECK_COULD_NOT
	                              : CHECK_CLEAN;
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
