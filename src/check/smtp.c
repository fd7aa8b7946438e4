/*
 * smtp.c — `check smtp`: talks to a mail server the way a sender would and
 * reports what a receiver's admin should fix: the banner and how long it
 * took, EHLO and its extensions, STARTTLS with the certificate's validity
 * dates and names, whether the PTR of the server's address matches the
 * banner name, the time of every step, and optionally whether the server
 * relays for outsiders.
 *
 * The conversation is a straight line of blocking steps over one socket
 * with send/receive timeouts (SO_RCVTIMEO/SO_SNDTIMEO), with OpenSSL on the
 * same socket after STARTTLS; replies are read through one bounded line
 * buffer (lines up to SMTP_LINE_MAX*2, replies up to REPLY_MAX_LINES). Host
 * names are resolved only through the given resolver. The open-relay probe
 * sends MAIL FROM and RCPT TO with outside addresses and then RSET and QUIT:
 * it never sends DATA, so no message can ever be relayed by it.
 */
#include "check/check.h"
#include "check/report.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "smtp/smtp.h"

#define REPLY_MAX_LINES 100
#define LINE_CAP        (2 * SMTP_LINE_MAX)

struct conn {
	int fd;
	SSL *ssl;
	char buf[LINE_CAP];
	size_t len;
};

struct reply {
	int code;
	int nlines;
	char lines[REPLY_MAX_LINES][LINE_CAP]; /* text after "NNN-" */
};


/* ---- the connection ----------------------------------------------------------- */

static int conn_read(struct conn *c, char *p, size_t n)
{
	if (c->ssl) {
		int k = SSL_read(c->ssl, p, (int)n);
		return k > 0 ? k : -1;
	}
	ssize_t k = recv(c->fd, p, n, 0);
	return k > 0 ? (int)k : -1;
}

static int conn_write(struct conn *c, const char *p, size_t n)
{
	while (n) {
		int k;
		if (c->ssl)
			k = SSL_write(c->ssl, p, (int)n);
		else
			k = (int)send(c->fd, p, n, MSG_NOSIGNAL);
		if (k <= 0) return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* One line without CRLF into out (NUL-terminated). -1 on EOF, timeout or
 * a line longer than LINE_CAP. */
static int read_line(struct conn *c, char *out)
{
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->len);
		if (nl) {
			size_t n = (size_t)(nl - c->buf);
			size_t m = n && c->buf[n - 1] == '\r' ? n - 1 : n;
			memcpy(out, c->buf, m);
			out[m] = 0;
			memmove(c->buf, nl + 1, c->len - n - 1);
			c->len -= n + 1;
			return 0;
		}
		if (c->len == sizeof c->buf) return -1;
		int k = conn_read(c, c->buf + c->len, sizeof c->buf - c->len);
		if (k < 0) return -1;
		c->len += (size_t)k;
	}
}

/* Reads a whole (multi-line) reply. Returns 0, or -1 with why set. */
static int read_reply(struct conn *c, struct reply *rp, char *why, size_t whysz)
{
	char line[LINE_CAP];
	rp->nlines = 0;
	rp->code = 0;
	for (;;) {
		if (read_line(c, line) < 0) {
			snprintf(why, whysz,
			         "no complete reply (connection closed, timed out or a line "
			         "over %d bytes)",
			         LINE_CAP);
			return -1;
		}
		int code, more;
		const char *text;
		if (smtp_parse_reply_line(line, strlen(line), &code, &more, &text) < 0) {
			snprintf(why, whysz, "malformed reply line '%.80s'", line);
			return -1;
		}
		if (rp->nlines && code != rp->code) {
			snprintf(why, whysz, "reply code changed inside a multi-line reply");
			return -1;
		}
		rp->code = code;
		if (rp->nlines == REPLY_MAX_LINES) {
			snprintf(why, whysz, "reply longer than %d lines", REPLY_MAX_LINES);
			return -1;
		}
		snprintf(rp->lines[rp->nlines++], LINE_CAP, "%s", text ? text : "");
		if (!more) return 0;
	}
}

static double ms_since(uint64_t t0)
{
	return (double)(base_mono_ns() - t0) / 1e6;
}

/* Sends a command and reads its reply, timing both. */
static int command(struct conn *c, const char *cmd, struct reply *rp, double *ms, char *why,
                   size_t whysz)
{
	uint64_t t0 = base_mono_ns();
	char line[SMTP_CMD_MAX + 8];
	snprintf(line, sizeof line, "%s\r\n", cmd);
	if (conn_write(c, line, strlen(line)) < 0) {
		snprintf(why, whysz, "could not send %.20s", cmd);
		return -1;
	}
	int rc = read_reply(c, rp, why, whysz);
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

static int connect_to(const struct target *t, unsigned timeout_ms, char *why, size_t whysz)
{
	struct base_sockaddr a = {.family = t->family, .port = t->port};
	memcpy(a.a.v6, t->addr, t->family == AF_INET ? 4 : 16);
	struct sockaddr_storage ss;
	socklen_t sl = base_sockaddr_to(&a, &ss);
	int fd = socket(t->family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(why, whysz, "socket: %s", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS) {
		snprintf(why, whysz, "connect: %s", strerror(errno));
		close(fd);
		return -1;
	}
	struct pollfd p = {fd, POLLOUT, 0};
	int soerr = 0;
	socklen_t el = sizeof soerr;
	if (poll(&p, 1, (int)timeout_ms) != 1 ||
	    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el) < 0 || soerr) {
		snprintf(why, whysz, "connect: %s", soerr ? strerror(soerr) : "timed out");
		close(fd);
		return -1;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	return fd;
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

static void report_cert(struct report *r, SSL *ssl, const char *name_to_match, long verify)
{
	struct base_buf *j = r->json;
	X509 *cert = SSL_get1_peer_certificate(ssl);
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
	X509_free(cert);
}

/* ---- the conversation ---------------------------------------------------------- */

static void ehlo_json(struct base_buf *j, const struct reply *rp, int *starttls)
{
	base_buf_puts(j, "[");
	*starttls = 0;
	for (int i = 1; i < rp->nlines; i++) {
		char kw[LINE_CAP];
		snprintf(kw, sizeof kw, "%s", rp->lines[i]);
		if (!base_strcasecmp_ascii(kw, "STARTTLS")) *starttls = 1;
		base_buf_puts(j, i > 1 ? "," : "");
		check_json_str(j, kw);
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

	char why[300];
	struct reply *rp = base_xmalloc(sizeof *rp);
	struct conn c = {-1, NULL, {0}, 0};
	SSL_CTX *ctx = NULL;
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
	c.fd = connect_to(&t, timeout, why, sizeof why);
	if (c.fd < 0) {
		r.could_not = 2; /* nothing further could be checked */
		check_problem(&r, "connect", "cannot connect to %s port %u: %s", ipstr, t.port, why);
		goto done;
	}
	step_time(&times, "connect", ms_since(t0), &tfirst);
	if (read_reply(&c, rp, why, sizeof why) < 0) {
		r.could_not = 2; /* nothing further could be checked */
		check_problem(&r, "banner", "no banner from %s: %s", ipstr, why);
		goto done;
	}
	ms = ms_since(t0);
	step_time(&times, "banner", ms, &tfirst);
	sscanf(rp->lines[0], "%255s", banner_name);
	base_buf_printf(json, ",\"banner\":{\"code\":%d,\"text\":", rp->code);
	check_json_str(json, rp->lines[0]);
	base_buf_puts(json, ",\"name\":");
	check_json_str(json, banner_name);
	base_buf_printf(json, ",\"ms\":%.1f}", ms);
	if (rp->code != 220) {
		check_problem(&r, "banner", "the server greets with %d, not 220: %s", rp->code,
		        rp->lines[0]);
		goto quit;
	}
	check_ok(&r, "banner after %.0f ms: 220 %s", ms, rp->lines[0]);
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
	int starttls = 0;
	base_buf_printf(json, ",\"ehlo\":{\"code\":%d,\"ms\":%.1f,\"extensions\":", rp->code, ms);
	ehlo_json(json, rp, &starttls);
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
			        rp->nlines ? rp->lines[0] : why);
			goto done;
		}
		step_time(&times, "starttls", ms, &tfirst);
		t0 = base_mono_ns();
		ctx = SSL_CTX_new(TLS_client_method());
		if (ctx) {
			SSL_CTX_set_default_verify_paths(ctx);
			SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
			c.ssl = SSL_new(ctx);
		}
		if (!c.ssl) {
			snprintf(why, sizeof why, "TLS setup failed");
			r.could_not = 2; /* nothing further could be checked */
			check_problem(&r, "tls", "%s", why);
			goto done;
		}
		SSL_set_fd(c.ssl, c.fd);
		if (!t.is_literal) SSL_set_tlsext_host_name(c.ssl, t.host);
		if (SSL_connect(c.ssl) != 1 || c.len) {
			unsigned long e = ERR_get_error();
			char es[200];
			ERR_error_string_n(e, es, sizeof es);
			SSL_free(c.ssl);
			c.ssl = NULL;
			check_problem(&r, "tls", "the TLS handshake failed: %s",
			        c.len ? "data before it" : es);
			goto done;
		}
		ms = ms_since(t0);
		step_time(&times, "tls_handshake", ms, &tfirst);
		base_buf_puts(json, ",\"tls\":{\"version\":");
		check_json_str(json, SSL_get_version(c.ssl));
		base_buf_puts(json, ",\"cipher\":");
		check_json_str(json, SSL_get_cipher_name(c.ssl));
		base_buf_printf(json, ",\"ms\":%.1f", ms);
		check_ok(&r, "STARTTLS: %s, %s, handshake %.0f ms", SSL_get_version(c.ssl),
		   SSL_get_cipher_name(c.ssl), ms);
		report_cert(&r, c.ssl, t.is_literal ? banner_name : t.host,
		            SSL_get_verify_result(c.ssl));
		base_buf_puts(json, "}");
		if (command(&c, cmd, rp, &ms, why, sizeof why) < 0 || rp->code != 250) {
			check_problem(&r, "tls", "EHLO after STARTTLS failed: %s",
			        rp->nlines ? rp->lines[0] : why);
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
	if (c.ssl) {
		SSL_shutdown(c.ssl);
		SSL_free(c.ssl);
	}
	SSL_CTX_free(ctx);
	if (c.fd >= 0) close(c.fd);
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
