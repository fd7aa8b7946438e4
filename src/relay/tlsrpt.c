/*
 * tlsrpt.c — SMTP TLS Reporting (RFC 8460), the daemon's side: the relay
 * as a sending MTA counts the TLS outcome of its delivery sessions per
 * policy domain and UTC day, and once a day reports them to the domains
 * that ask for it.
 *
 * Recording: mta.c calls relay_tlsrpt_note after each session's TLS
 * outcome (a handshake that succeeded or failed, a server without
 * STARTTLS where TLS was needed, a host kept away by a failed TLSA
 * lookup), and mtasts.c after a failed policy fetch. The policy that
 * applied is worked out here: DANE's TLSA records when DANE applies to the
 * host, else the domain's MTA-STS policy (enforce or testing), else
 * no-policy-found. The counters live in memory (struct tlsrpt_day,
 * bounded: see tlsrpt.h) and are written to SPOOL/tlsrpt/DAY atomically
 * (temporary file, fsync, rename) once a minute when they changed, at the
 * turn of the day and at shutdown; a start reads today's file back. So a
 * kill -9 loses at most the last minute's sessions.
 *
 * Reporting: a day's file that is not today's is due at the next midnight
 * plus a random delay (up to --tlsrpt-delay). Its domains' `_smtp._tls`
 * TXT records are asked through --resolver; for each domain with exactly
 * one valid v=TLSRPTv1 record, the JSON report (tlsrpt_report.c) is
 * gzipped and sent to every mailto: URI as a message queued like any other
 * (the null sender, or --tlsrpt-from; DKIM-signed when a key applies).
 * When every answer is in, the file is renamed DAY.sent. A shutdown in the
 * middle leaves the file as it is: the next start reports the day again
 * (a domain may get its report twice). For an https: URI the host's
 * addresses are asked through the same resolver, then a worker thread
 * POSTs the gzip report (Content-Type application/tlsrpt+gzip) with the
 * MTA-STS fetch's HTTPS client (https.c: the certificate verified against
 * --tls-ca or the system store, for the URI's host); a 2xx answer is
 * success.
 *
 * Retries (§5.4): a report that is not delivered (a POST that fails, a
 * mail that cannot be queued; a queued mail is retried by the queue like
 * any other) is tried again after --tlsrpt-retry, then three times longer
 * each time (tlsrpt_retry_wait), and given up when the next attempt would
 * be more than a day after the first. While it may need another attempt it
 * is a file SPOOL/tlsrpt/retry/NAME (tlsrpt_retry_format), written
 * atomically; an https: report's before its first POST, so that a kill -9
 * during the POST loses nothing (the endpoint may then get it twice). A
 * start reads them back. At most TLSRPT_RETRY_MAX of them, of
 * TLSRPT_RETRY_BYTES together: a dead endpoint cannot fill the disk.
 */
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "dns/dns.h"
#include "relay/dane.h"
#include "relay/https.h"
#include "relay/int.h"
#include "relay/mtasts.h"
#include "relay/tls.h"
#include "relay/tlsrpt.h"

#define SAVE_SECONDS 60
#define POST_ADDRS   8
#define POST_TIMEOUT 60 /* seconds for one POST, over every address */
#define POST_REPLY   16384

/* One report to one URI, from its first attempt until it is delivered or
 * given up. Kept on disk (file[0] set) while it may need another attempt:
 * an https: report from before its first POST (so that a kill -9 during
 * the POST loses nothing), a mailto: one once it could not be queued. */
struct pend {
	struct tlsrpt_retry r; /* r.report: body's bytes */
	struct base_buf body;  /* the gzip report */
	char file[32];         /* its name in SPOOL/tlsrpt/retry; "": not on disk */
	int busy;              /* an attempt under way */
	struct pend *next;     /* in relay_tlsrpt.pends when on disk */
};

/* A report on its way to an https: URI: the host's addresses through the
 * resolver, then the POST on the worker thread. Owned by the relay_tlsrpt
 * list while its lookups run, by the worker pool once submitted; its pend
 * is not (the POST only reads the pend's body). */
struct post {
	struct relay_work work;
	struct relay_tlsrpt *t;
	struct pend *pe;
	char host[256], path[TLSRPT_URI_MAX];
	uint16_t port;
	struct base_sockaddr addrs[POST_ADDRS];
	size_t naddrs;
	unsigned pending; /* address queries in flight */
	SSL_CTX *ctx;
	int ok;
	char why[512];
	struct post *next; /* in relay_tlsrpt.posts while looking up */
};

struct relay_tlsrpt {
	struct relay_ctx *x;
	char *dir; /* SPOOL/tlsrpt; NULL: counted in memory only */
	struct tlsrpt_day day;
	uint64_t saved; /* day.changes when last written */
	int64_t next_save;
	struct event *ev;
	/* the report run: the day being reported, when it starts, its
	 * counters as read back, and the TXT answers still awaited */
	char rday[11];
	int64_t due;
	int running;
	struct tlsrpt_day rep;
	struct tlsrpt_domain **doms;
	size_t pending;
	unsigned sent;
	struct relay_workers *workers; /* the POSTs; NULL until the first */
	struct post *posts;            /* looking up their host */
	atomic_int stop;
	/* the reports kept for another attempt (RFC 8460 5.4) */
	char *rdir; /* SPOOL/tlsrpt/retry; NULL: none kept */
	struct pend *pends;
	size_t npend, pbytes;
};

struct txt_q {
	struct relay_tlsrpt *t;
	struct tlsrpt_domain *dom;
};

static void day_of(int64_t t, char out[11])
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, 11, "%Y-%m-%d", &tm);
}

static int64_t day_start(const char *day)
{
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	tm.tm_year = atoi(day) - 1900;
	tm.tm_mon = atoi(day + 5) - 1;
	tm.tm_mday = atoi(day + 8);
	return (int64_t)timegm(&tm);
}

static char *path_of(const struct relay_tlsrpt *t, const char *day, const char *suffix)
{
	size_t n = strlen(t->dir) + strlen(day) + strlen(suffix) + 2;
	char *p = base_xmalloc(n);
	snprintf(p, n, "%s/%s%s", t->dir, day, suffix);
	return p;
}

static int read_file(const char *path, struct base_buf *out, struct base_err *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) return base_errf(err, "%s: %s", path, strerror(errno));
	char chunk[65536];
	ssize_t r;
	while ((r = read(fd, chunk, sizeof chunk)) > 0) {
		base_buf_append(out, chunk, (size_t)r);
		if (out->len > TLSRPT_FILE_MAX) {
			close(fd);
			return base_errf(err, "%s: larger than %u bytes", path, TLSRPT_FILE_MAX);
		}
	}
	close(fd);
	if (r < 0) return base_errf(err, "%s: %s", path, strerror(errno));
	return 0;
}

static int load(const char *path, struct tlsrpt_day *d, struct base_err *err)
{
	struct base_buf b;
	base_buf_init(&b);
	int rc = read_file(path, &b, err);
	if (rc == 0 && tlsrpt_state_parse(b.data ? b.data : "", b.len, d, err) < 0) {
		char m[BASE_ERR_MAX];
		snprintf(m, sizeof m, "%s", err->msg);
		rc = base_errf(err, "%s: %s", path, m);
	}
	base_buf_free(&b);
	return rc;
}

static void save(struct relay_tlsrpt *t)
{
	if (!t->dir || t->saved == t->day.changes) return;
	struct base_buf b;
	base_buf_init(&b);
	tlsrpt_state_format(&t->day, &b);
	char *p = path_of(t, t->day.day, "");
	struct base_err err;
	if (base_write_file_atomic(p, b.data, b.len, &err) < 0)
		base_warn("tlsrpt: %s", err.msg);
	else
		t->saved = t->day.changes;
	free(p);
	base_buf_free(&b);
}

/* ---- recording ------------------------------------------------------------------ */

static void hex(const uint8_t *p, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[p[i] >> 4];
		out[2 * i + 1] = d[p[i] & 15];
	}
	out[2 * n] = 0;
}

void relay_tlsrpt_note(struct relay_ctx *x, const char *domain, const struct relay_dane *dn,
                       int result, const char *sip, const char *rip, const char *mx)
{
	struct relay_tlsrpt *t = x->tlsrpt;
	if (!t || !domain || !domain[0] || strlen(domain) > 253) return;
	struct tlsrpt_session s = {.domain = domain,
	                           .type = TLSRPT_NO_POLICY,
	                           .result = result,
	                           .sending_ip = sip,
	                           .receiving_ip = rip,
	                           .mx_host = mx};
	const char *strs[TLSRPT_STRINGS_MAX];
	const char *mxs[MTASTS_MX_MAX];
	char lines[8][64];
	char *tlsa[RELAY_TLSA_MAX] = {0};
	const struct mtasts_policy *p;
	if (dn) {
		s.type = TLSRPT_TLSA;
		for (size_t i = 0; dn->state == RELAY_DANE_USABLE && i < dn->n; i++) {
			/* policy-string: the records in presentation form, the data
			 * cut to what a line holds */
			const struct relay_tlsa *r = &dn->rr[i];
			size_t n = r->len > 256 ? 256 : r->len;
			tlsa[i] = base_xmalloc(2 * n + 16);
			int k = snprintf(tlsa[i], 16, "%u %u %u ", r->usage, r->selector, r->mtype);
			hex(r->data, n, tlsa[i] + k);
			strs[s.nstrings++] = tlsa[i];
		}
	} else if ((p = relay_mtasts_policy(x, domain)) && p->mode != MTASTS_NONE) {
		/* policy-string: the policy's lines as the relay read them */
		s.type = TLSRPT_STS;
		snprintf(lines[0], sizeof lines[0], "version: STSv1");
		snprintf(lines[1], sizeof lines[1], "mode: %s",
		         p->mode == MTASTS_ENFORCE ? "enforce" : "testing");
		snprintf(lines[2], sizeof lines[2], "max_age: %u", p->max_age);
		strs[s.nstrings++] = lines[0];
		strs[s.nstrings++] = lines[1];
		for (size_t i = 0; i < p->nmx; i++) mxs[s.nmx++] = p->mx[i];
		/* "mx: PATTERN" lines */
		char *mxl[MTASTS_MX_MAX];
		for (size_t i = 0; i < s.nmx; i++) {
			mxl[i] = base_xmalloc(strlen(mxs[i]) + 5);
			sprintf(mxl[i], "mx: %s", mxs[i]);
			strs[s.nstrings++] = mxl[i];
		}
		strs[s.nstrings++] = lines[2];
		s.strings = strs;
		s.mx = mxs;
		tlsrpt_day_add(&t->day, &s);
		for (size_t i = 0; i < s.nmx; i++) free(mxl[i]);
		return;
	}
	s.strings = strs;
	tlsrpt_day_add(&t->day, &s);
	for (size_t i = 0; i < RELAY_TLSA_MAX; i++) free(tlsa[i]);
}

/* ---- reporting ------------------------------------------------------------------ */

static void gzip_buf(const struct base_buf *in, struct base_buf *out)
{
	z_stream z;
	memset(&z, 0, sizeof z);
	if (deflateInit2(&z, 9, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) return;
	uLong bound = deflateBound(&z, (uLong)in->len) + 32;
	base_buf_reserve(out, bound);
	z.next_in = (Bytef *)(in->data ? in->data : "");
	z.avail_in = (uInt)in->len;
	z.next_out = (Bytef *)out->data + out->len;
	z.avail_out = (uInt)bound;
	if (deflate(&z, Z_FINISH) == Z_STREAM_END) out->len += z.total_out;
	deflateEnd(&z);
}

static void b64_lines(const struct base_buf *in, struct base_buf *out)
{
	for (size_t o = 0; o < in->len; o += 57) {
		size_t n = in->len - o > 57 ? 57 : in->len - o;
		unsigned char line[80];
		int k = EVP_EncodeBlock(line, (const unsigned char *)in->data + o, (int)n);
		base_buf_append(out, line, (size_t)k);
		base_buf_puts(out, "\r\n");
	}
}

static const char *submitter(const struct relay_ctx *x)
{
	const char *f = x->cfg->tlsrpt_from;
	const char *at = f ? strrchr(f, '@') : NULL;
	return at && at[1] ? at + 1 : x->hostname;
}

static void report_id(const char *day, const char *domain, const char *host, char *out, size_t n)
{
	snprintf(out, n, "%s.%s@%s", day, domain, host);
}

/* Queues pe's report as a message to its mailto: address (RFC 8460 5.3):
 * 0, or -1 with why. */
static int send_mail(struct relay_tlsrpt *t, const struct pend *pe, char *why, size_t wn)
{
	struct relay_ctx *x = t->x;
	const char *addr = pe->r.uri + 7, *dname = pe->r.domain, *day = pe->r.day;
	char rid[600];
	report_id(day, dname, x->hostname, rid, sizeof rid);
	const struct relay_config *c = x->cfg;
	const char *sub = submitter(x);
	char id[RELAY_ID_MAX + 1], date[64], fname[600];
	relay_id_new(x, id);
	time_t now = base_now();
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
	int64_t b = day_start(day);
	snprintf(fname, sizeof fname, "%s!%s!%lld!%lld.json.gz", sub, dname, (long long)b,
	         (long long)(b + 86399));
	struct base_buf m;
	base_buf_init(&m);
	base_buf_printf(&m,
	                "From: %s%s%s\r\n"
	                "To: <%s>\r\n"
	                "Date: %s\r\n"
	                "Subject: Report Domain: %s Submitter: %s Report-ID: <%s>\r\n"
	                "Message-ID: <%s@%s>\r\n"
	                "TLS-Report-Domain: %s\r\n"
	                "TLS-Report-Submitter: %s\r\n"
	                "Auto-Submitted: auto-generated\r\n"
	                "MIME-Version: 1.0\r\n"
	                "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n"
	                "\tboundary=\"%s/%s\"\r\n\r\n"
	                "This is a multipart message in MIME format.\r\n\r\n"
	                "--%s/%s\r\n"
	                "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
	                "This is an aggregate TLS report from %s for %s, %s.\r\n\r\n"
	                "--%s/%s\r\n"
	                "Content-Type: application/tlsrpt+gzip\r\n"
	                "Content-Transfer-Encoding: base64\r\n"
	                "Content-Disposition: attachment;\r\n\tfilename=\"%s\"\r\n\r\n",
	                c->tlsrpt_from ? "<" : "MAILER-DAEMON@",
	                c->tlsrpt_from ? c->tlsrpt_from : x->hostname, c->tlsrpt_from ? ">" : "",
	                addr, date, dname, sub, rid, id, x->hostname, dname, sub, id, x->hostname,
	                id, x->hostname, sub, dname, day, id, x->hostname, fname);
	b64_lines(&pe->body, &m);
	base_buf_printf(&m, "\r\n--%s/%s--\r\n", id, x->hostname);
	struct base_err err;
	if (relay_sign(x->cfg->dkim, x->cfg->ndkim, &m, &err) < 0)
		base_warn("tlsrpt: signing the report: %s", err.msg);
	const char *rc[1] = {addr};
	const char *sender = c->tlsrpt_from ? c->tlsrpt_from : "";
	struct relay_loc loc;
	int rc2 = 0;
	if (relay_spool_add(x->spool, id, sender, "", now, rc, 1, m.data, m.len, &loc, &err) < 0) {
		snprintf(why, wn, "%s", err.msg);
		rc2 = -1;
	} else {
		struct rmsg *q = relay_queue_add(x, id, sender, "", "", now, &loc, rc, 1);
		relay_account(x, "reception", q, NULL, NULL, 0, "TLSRPT");
		relay_commit_soon(x);
		relay_kick(x);
		t->sent++;
		base_info("tlsrpt %s: report %s for %s queued as %s to %s", dname, rid, day, id,
		          addr);
	}
	base_buf_free(&m);
	return rc2;
}

/* ---- the reports kept for another attempt (section 5.4) ---------------------- */

static void pend_free(struct pend *pe)
{
	base_buf_free(&pe->body);
	free(pe);
}

/* SPOOL/tlsrpt/retry/FILE */
static char *pend_path(const struct relay_tlsrpt *t, const char *file)
{
	return path_of(t, "retry/", file);
}

/* Writes pe to its file: 0, or -1 logged. */
static int pend_write(struct relay_tlsrpt *t, struct pend *pe)
{
	struct base_buf b;
	base_buf_init(&b);
	pe->r.report = pe->body.data;
	pe->r.len = pe->body.len;
	tlsrpt_retry_format(&pe->r, &b);
	char *path = pend_path(t, pe->file);
	struct base_err err;
	int rc = base_write_file_atomic(path, b.data, b.len, &err);
	if (rc < 0) base_warn("tlsrpt %s: %s", pe->r.domain, err.msg);
	free(path);
	base_buf_free(&b);
	return rc;
}

/* Whether the kept reports leave room for one more of len bytes. */
static int pend_room(const struct relay_tlsrpt *t, size_t len)
{
	return t->npend < TLSRPT_RETRY_MAX && t->pbytes + len <= TLSRPT_RETRY_BYTES;
}

/* Puts pe, on disk, in the list of kept reports. */
static void pend_link(struct relay_tlsrpt *t, struct pend *pe)
{
	pe->next = t->pends;
	t->pends = pe;
	t->npend++;
	t->pbytes += pe->body.len;
}

/* Puts pe on disk and in the list, when the bounds leave room: 0, or -1
 * logged (pe is then not kept). */
static int pend_keep(struct relay_tlsrpt *t, struct pend *pe)
{
	if (!t->rdir) return -1;
	if (pe->body.len > TLSRPT_REPORT_MAX) {
		base_warn("tlsrpt %s: the report for %s to %s is not kept for another attempt: "
		          "%zu bytes (at most %u)",
		          pe->r.domain, pe->r.day, pe->r.uri, pe->body.len, TLSRPT_REPORT_MAX);
		return -1;
	}
	if (!pend_room(t, pe->body.len)) {
		base_warn("tlsrpt %s: the report for %s to %s is not kept for another attempt: "
		          "%zu reports of %zu bytes are (at most %d of %u bytes)",
		          pe->r.domain, pe->r.day, pe->r.uri, t->npend, t->pbytes, TLSRPT_RETRY_MAX,
		          TLSRPT_RETRY_BYTES);
		return -1;
	}
	snprintf(pe->file, sizeof pe->file, "%08x%08x", arc4random(), arc4random());
	if (pend_write(t, pe) < 0) {
		pe->file[0] = 0;
		return -1;
	}
	pend_link(t, pe);
	return 0;
}

/* Takes pe off the disk and the list, and frees it. */
static void pend_drop(struct relay_tlsrpt *t, struct pend *pe)
{
	if (pe->file[0]) {
		char *path = pend_path(t, pe->file);
		if (unlink(path) < 0 && errno != ENOENT)
			base_warn("tlsrpt: unlink %s: %s", path, strerror(errno));
		free(path);
		struct pend **pp = &t->pends;
		while (*pp && *pp != pe) pp = &(*pp)->next;
		if (*pp) *pp = pe->next;
		t->npend--;
		t->pbytes -= pe->body.len;
	}
	pend_free(pe);
}

/* The end of an attempt at pe: delivered (ok), or another attempt after the
 * back-off, or given up TLSRPT_RETRY_SPAN after the first. */
static void attempt_done(struct relay_tlsrpt *t, struct pend *pe, int ok, const char *why)
{
	pe->busy = 0;
	if (atomic_load(&t->stop)) {
		/* stopping: what is on disk is attempted again at the next start */
		if (!pe->file[0]) pend_free(pe);
		return;
	}
	if (ok) {
		pend_drop(t, pe);
		return;
	}
	int64_t now = base_now();
	uint32_t wait = tlsrpt_retry_wait(t->x->cfg->tlsrpt_retry, pe->r.attempts + 1);
	if (now + wait > pe->r.first + TLSRPT_RETRY_SPAN ||
	    pe->r.attempts + 1 >= TLSRPT_ATTEMPTS_MAX) {
		base_warn("tlsrpt %s: the report for %s to %s is given up after %u attempt%s: %s",
		          pe->r.domain, pe->r.day, pe->r.uri, pe->r.attempts + 1,
		          pe->r.attempts ? "s" : "", why);
		pend_drop(t, pe);
		return;
	}
	pe->r.attempts++;
	pe->r.next = now + wait;
	if (pe->file[0] ? pend_write(t, pe) : pend_keep(t, pe)) {
		base_warn("tlsrpt %s: the report for %s to %s failed (%s) and is not tried again",
		          pe->r.domain, pe->r.day, pe->r.uri, why);
		pend_drop(t, pe);
		return;
	}
	base_warn("tlsrpt %s: the report for %s to %s failed (%s): attempt %u in %u s",
	          pe->r.domain, pe->r.day, pe->r.uri, why, pe->r.attempts + 1, wait);
}

/* ---- https: POST (section 5.2) ------------------------------------------------- */

static void post_run(struct relay_work *w)
{
	struct post *p = (struct post *)w;
	const struct base_buf *body = &p->pe->body;
	struct base_buf req, resp;
	base_buf_init(&req);
	base_buf_init(&resp);
	base_buf_printf(&req,
	                "POST %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: mailrep\r\n"
	                "Content-Type: application/tlsrpt+gzip\r\nContent-Length: %zu\r\n"
	                "Connection: close\r\n\r\n",
	                p->path, p->host, body->len);
	base_buf_append(&req, body->data, body->len);
	struct relay_https h = {.ctx = p->ctx,
	                        .host = p->host,
	                        .port = p->port,
	                        .stop = &p->t->stop,
	                        .deadline = base_mono_ns() + POST_TIMEOUT * 1000000000ull,
	                        .max = POST_REPLY};
	snprintf(p->why, sizeof p->why, "no address");
	for (size_t i = 0; i < p->naddrs && !p->ok; i++) {
		resp.len = 0;
		if (relay_https_exchange(&h, &p->addrs[i], req.data, req.len, &resp, p->why,
		                         sizeof p->why) < 0)
			continue;
		/* "HTTP/1.x NNN ...": 2xx is taken */
		base_buf_append(&resp, "", 1);
		const char *s = resp.data;
		size_t line = strcspn(s, "\r\n");
		if (strncmp(s, "HTTP/1.", 7) || line < 12 || s[8] != ' ')
			snprintf(p->why, sizeof p->why, "not an HTTP response");
		else if (s[9] == '2')
			p->ok = 1;
		else
			snprintf(p->why, sizeof p->why, "the server answered '%.*s'",
			         (int)(line > 200 ? 200 : line), s);
	}
	base_buf_free(&req);
	base_buf_free(&resp);
}

static void post_done(struct relay_work *w)
{
	struct post *p = (struct post *)w;
	struct pend *pe = p->pe;
	if (w->ran && p->ok)
		base_info("tlsrpt %s: report posted to https://%s:%u%s (%s, attempt %u)",
		          pe->r.domain, p->host, p->port, p->path, pe->r.day, pe->r.attempts + 1);
	attempt_done(p->t, pe, w->ran && p->ok, w->ran ? p->why : "the relay stopped");
	free(p);
}

static void post_unlist(struct post *p)
{
	struct post **pp = &p->t->posts;
	while (*pp && *pp != p) pp = &(*pp)->next;
	if (*pp) *pp = p->next;
}

static void on_post_addr(void *arg, const char *name, uint16_t type, struct dns_answer *ans)
{
	struct post *p = arg;
	p->pending--;
	for (size_t i = 0; ans->status == DNS_LOOKUP_OK && i < ans->n; i++) {
		struct dns_record *r = &ans->rr[i];
		if (p->naddrs == POST_ADDRS) break;
		struct base_sockaddr *a = &p->addrs[p->naddrs];
		memset(a, 0, sizeof *a);
		if (type == DNS_T_A && r->len == 4) {
			a->family = AF_INET;
			memcpy(a->a.v4, r->data, 4);
			p->naddrs++;
		} else if (type == DNS_T_AAAA && r->len == 16) {
			a->family = AF_INET6;
			memcpy(a->a.v6, r->data, 16);
			p->naddrs++;
		}
	}
	/* stopping: relay_tlsrpt_stop frees what is still listed */
	if (p->pending || p->t->x->stopping) return;
	post_unlist(p);
	struct relay_tlsrpt *t = p->t;
	struct base_err err;
	if (!p->naddrs) {
		snprintf(p->why, sizeof p->why, "%s has no address", p->host);
	} else if (!t->workers && !(t->workers = relay_workers_new(t->x->base, "tlsrpt", 1, &err))) {
		snprintf(p->why, sizeof p->why, "%s", err.msg);
	} else {
		relay_workers_submit(t->workers, &p->work);
		return;
	}
	attempt_done(t, p->pe, 0, p->why);
	free(p);
}

/* POSTs pe's report to its https://host[:port][/path] (checked by
 * tlsrpt_txt_parse or tlsrpt_retry_parse). */
static void send_post(struct relay_tlsrpt *t, struct pend *pe)
{
	struct relay_ctx *x = t->x;
	struct post *p = base_xcalloc(1, sizeof *p);
	p->work.run = post_run;
	p->work.done = post_done;
	p->t = t;
	p->pe = pe;
	p->ctx = x->tls->verify;
	const char *h = pe->r.uri + 8, *e = h + strcspn(h, ":/");
	snprintf(p->host, sizeof p->host, "%.*s", (int)(e - h), h);
	p->port = 443;
	if (*e == ':') p->port = (uint16_t)atoi(e + 1);
	if (x->cfg->tlsrpt_port) p->port = x->cfg->tlsrpt_port;
	const char *path = strchr(h, '/');
	snprintf(p->path, sizeof p->path, "%s", path ? path : "/");
	p->next = t->posts;
	t->posts = p;
	static const uint16_t types[2] = {DNS_T_A, DNS_T_AAAA};
	struct base_err err;
	p->pending = 1; /* held while submitting */
	for (int k = 0; k < 2; k++) {
		p->pending++;
		if (dns_resolver_submit(x->resolver, p->host, types[k], on_post_addr, p, &err) < 0)
			p->pending--;
	}
	relay_lookup_arm(x);
	struct dns_answer none;
	dns_answer_init(&none);
	none.status = DNS_LOOKUP_NODATA;
	on_post_addr(p, p->host, 0, &none); /* drops the hold */
}

/* One attempt at pe; its end comes to attempt_done (at once for a mail). */
static void attempt(struct relay_tlsrpt *t, struct pend *pe)
{
	pe->busy = 1;
	if (!strncmp(pe->r.uri, "mailto:", 7)) {
		char why[BASE_ERR_MAX];
		int ok = send_mail(t, pe, why, sizeof why) == 0;
		attempt_done(t, pe, ok, why);
	} else {
		send_post(t, pe);
	}
}

static void report_domain(struct relay_tlsrpt *t, const struct tlsrpt_domain *dom,
                          const struct tlsrpt_rua *rua)
{
	struct relay_ctx *x = t->x;
	char rid[600];
	report_id(t->rep.day, dom->name, x->hostname, rid, sizeof rid);
	struct tlsrpt_meta meta = {x->cfg->tlsrpt_org ? x->cfg->tlsrpt_org : x->hostname,
	                           x->cfg->tlsrpt_contact ? x->cfg->tlsrpt_contact : "", rid};
	struct base_buf json, gz;
	base_buf_init(&json);
	base_buf_init(&gz);
	tlsrpt_json(&t->rep, dom, &meta, &json);
	gzip_buf(&json, &gz);
	int64_t now = base_now();
	for (size_t i = 0; i < rua->n; i++) {
		struct pend *pe = base_xcalloc(1, sizeof *pe);
		snprintf(pe->r.domain, sizeof pe->r.domain, "%s", dom->name);
		memcpy(pe->r.day, t->rep.day, sizeof pe->r.day);
		snprintf(pe->r.uri, sizeof pe->r.uri, "%s", rua->uri[i]);
		int mail = !strncmp(pe->r.uri, "mailto:", 7);
		if (mail) pe->r.uri[strcspn(pe->r.uri, "?")] = 0; /* the ?query is not used */
		pe->r.first = pe->r.next = now;
		base_buf_init(&pe->body);
		base_buf_append(&pe->body, gz.data, gz.len);
		/* on disk before the POST: a relay killed during it posts it again */
		if (!mail) pend_keep(t, pe);
		attempt(t, pe);
	}
	base_buf_free(&json);
	base_buf_free(&gz);
}

static void run_end(struct relay_tlsrpt *t)
{
	char *from = path_of(t, t->rday, ""), *to = path_of(t, t->rday, ".sent");
	if (rename(from, to) < 0) base_warn("tlsrpt: rename %s: %s", from, strerror(errno));
	base_info("tlsrpt: reports for %s done: %u queued", t->rday, t->sent);
	free(from);
	free(to);
	free(t->doms);
	t->doms = NULL;
	tlsrpt_day_free(&t->rep);
	t->running = 0;
	t->rday[0] = 0;
	t->due = 0;
}

static void on_txt(void *arg, const char *name, uint16_t type, struct dns_answer *ans)
{
	struct txt_q *q = arg;
	struct relay_tlsrpt *t = q->t;
	const struct tlsrpt_domain *dom = q->dom;
	free(q);
	t->pending--;
	if (t->x->stopping) return;
	/* §3: records not starting with v=TLSRPTv1 are discarded; exactly one
	 * valid record must be left */
	unsigned cand = 0, bad = 0;
	struct tlsrpt_rua rua, one;
	struct base_err err = {""};
	memset(&rua, 0, sizeof rua);
	for (size_t i = 0; ans->status == DNS_LOOKUP_OK && i < ans->n; i++) {
		struct base_err e1;
		int r = tlsrpt_txt_parse(ans->rr[i].data, ans->rr[i].len, &one, &e1);
		if (r == 0) continue;
		cand++;
		if (r < 0) {
			bad++;
			err = e1;
		} else {
			rua = one;
		}
	}
	if (ans->status != DNS_LOOKUP_OK && ans->status != DNS_LOOKUP_NODATA &&
	    ans->status != DNS_LOOKUP_NXDOMAIN)
		base_warn("tlsrpt %s: TXT lookup of %s failed (%s): no report", dom->name, name,
		          ans->why);
	else if (cand == 1 && !bad)
		report_domain(t, dom, &rua);
	else if (cand > 1)
		base_warn("tlsrpt %s: %u TLSRPTv1 records at %s: no report", dom->name, cand, name);
	else if (bad)
		base_warn("tlsrpt %s: TXT record at %s: %s: no report", dom->name, name, err.msg);
	if (!t->pending) run_end(t);
}

static void run_start(struct relay_tlsrpt *t)
{
	struct relay_ctx *x = t->x;
	char *p = path_of(t, t->rday, "");
	struct base_err err;
	if (load(p, &t->rep, &err) < 0) {
		base_warn("tlsrpt: %s; the day is not reported", err.msg);
		char *bad = path_of(t, t->rday, ".bad");
		if (rename(p, bad) < 0) base_warn("tlsrpt: rename %s: %s", p, strerror(errno));
		free(bad);
		free(p);
		t->rday[0] = 0;
		t->due = 0;
		return;
	}
	free(p);
	t->running = 1;
	t->sent = 0;
	t->doms = tlsrpt_day_sorted(&t->rep);
	size_t n = t->rep.n;
	t->pending = n;
	for (size_t i = 0; i < n; i++) {
		char name[300];
		snprintf(name, sizeof name, "_smtp._tls.%s", t->doms[i]->name);
		struct txt_q *q = base_xcalloc(1, sizeof *q);
		q->t = t;
		q->dom = t->doms[i];
		if (dns_resolver_submit(x->resolver, name, DNS_T_TXT, on_txt, q, &err) < 0) {
			base_warn("tlsrpt %s: %s", t->doms[i]->name, err.msg);
			free(q);
			t->pending--;
		}
	}
	relay_lookup_arm(x);
	if (!t->pending) run_end(t);
}

/* The oldest day's file that is not today's and not reported yet. */
static int next_day(struct relay_tlsrpt *t, char out[11])
{
	DIR *d = opendir(t->dir);
	if (!d) return 0;
	struct dirent *e;
	int found = 0;
	while ((e = readdir(d))) {
		if (!tlsrpt_day_ok(e->d_name) || !strcmp(e->d_name, t->day.day)) continue;
		if (strcmp(e->d_name, t->day.day) > 0) continue; /* a clock set back */
		if (!found || strcmp(e->d_name, out) < 0) {
			memcpy(out, e->d_name, 11);
			found = 1;
		}
	}
	closedir(d);
	return found;
}

static void on_second(evutil_socket_t fd, short what, void *arg)
{
	struct relay_tlsrpt *t = arg;
	struct relay_ctx *x = t->x;
	int64_t now = base_now();
	char today[11];
	day_of(now, today);
	if (strcmp(today, t->day.day)) {
		/* the turn of the day: the old day's counters are final */
		save(t);
		tlsrpt_day_free(&t->day);
		tlsrpt_day_init(&t->day, today);
		t->saved = 0;
	} else if (now >= t->next_save) {
		save(t);
		t->next_save = now + SAVE_SECONDS;
	}
	if (!t->dir || !x->resolver || x->stopping) return;
	for (struct pend *pe = t->pends, *nx; pe; pe = nx) {
		nx = pe->next; /* a mail's attempt ends at once, and may free pe */
		if (!pe->busy && pe->r.next <= now) attempt(t, pe);
	}
	if (t->running) return;
	if (!t->rday[0]) {
		if (!next_day(t, t->rday)) return;
		int64_t due = day_start(t->rday) + 86400;
		if (due < now) due = now;
		uint32_t delay = x->cfg->tlsrpt_delay;
		t->due = due + (delay ? (int64_t)(arc4random() % (delay + 1)) : 0);
		base_info("tlsrpt: reports for %s due in %lld s", t->rday,
		          (long long)(t->due - now));
	}
	if (now >= t->due) run_start(t);
}

/* Reads back the reports kept for another attempt. A file that does not
 * parse is set aside as NAME.bad; one past TLSRPT_RETRY_SPAN is given up;
 * the rest are attempted at their time (at once when it is past). */
static void pend_load(struct relay_tlsrpt *t, int64_t now)
{
	DIR *d = opendir(t->rdir);
	if (!d) return;
	struct dirent *e;
	while ((e = readdir(d))) {
		const char *n = e->d_name;
		/* NAME: 16 hex digits; others are temporary or set-aside files */
		if (strlen(n) != 16 || strspn(n, "0123456789abcdef") != 16) continue;
		char *path = pend_path(t, n);
		struct pend *pe = base_xcalloc(1, sizeof *pe);
		base_buf_init(&pe->body);
		struct base_err err;
		struct base_buf raw;
		base_buf_init(&raw);
		int rc = read_file(path, &raw, &err);
		if (rc == 0 &&
		    tlsrpt_retry_parse(raw.data ? raw.data : "", raw.len, &pe->r, &err) < 0) {
			base_warn("tlsrpt: %s: %s; set aside as %s.bad", path, err.msg, n);
			char *bad = base_xmalloc(strlen(path) + 5);
			sprintf(bad, "%s.bad", path);
			if (rename(path, bad) < 0)
				base_warn("tlsrpt: rename %s: %s", path, strerror(errno));
			free(bad);
			rc = -1;
		} else if (rc < 0) {
			base_warn("tlsrpt: %s", err.msg);
		} else if (now > pe->r.first + TLSRPT_RETRY_SPAN) {
			base_warn(
			    "tlsrpt %s: the report for %s to %s is given up after %u attempt%s: "
			    "its first was more than %d s ago",
			    pe->r.domain, pe->r.day, pe->r.uri, pe->r.attempts,
			    pe->r.attempts == 1 ? "" : "s", TLSRPT_RETRY_SPAN);
			if (unlink(path) < 0)
				base_warn("tlsrpt: unlink %s: %s", path, strerror(errno));
			rc = -1;
		} else if (!pend_room(t, pe->r.len)) {
			base_warn("tlsrpt: %s: left out: %zu reports of %zu bytes are kept already "
			          "(at most %d of %u bytes)",
			          path, t->npend, t->pbytes, TLSRPT_RETRY_MAX, TLSRPT_RETRY_BYTES);
			rc = -1;
		}
		if (rc == 0) {
			base_buf_append(&pe->body, pe->r.report, pe->r.len);
			pe->r.report = NULL;
			memcpy(pe->file, n, 17);
			/* a clock set back: no longer than the longest wait */
			int64_t most = now + tlsrpt_retry_wait(t->x->cfg->tlsrpt_retry, UINT32_MAX);
			if (pe->r.next > most) pe->r.next = most;
			pend_link(t, pe);
			base_info(
			    "tlsrpt %s: the report for %s to %s is pending: attempt %u in %lld s",
			    pe->r.domain, pe->r.day, pe->r.uri, pe->r.attempts + 1,
			    (long long)(pe->r.next > now ? pe->r.next - now : 0));
		} else {
			pend_free(pe);
		}
		base_buf_free(&raw);
		free(path);
	}
	closedir(d);
}

int relay_tlsrpt_start(struct relay_ctx *x, struct base_err *err)
{
	if (!x->cfg->tlsrpt) return 0;
	struct relay_tlsrpt *t = base_xcalloc(1, sizeof *t);
	t->x = x;
	char today[11];
	int64_t now = base_now();
	day_of(now, today);
	tlsrpt_day_init(&t->day, today);
	size_t n = strlen(x->cfg->spool) + sizeof "/tlsrpt";
	t->dir = base_xmalloc(n);
	snprintf(t->dir, n, "%s/tlsrpt", x->cfg->spool);
	if (mkdir(t->dir, 0700) < 0 && errno != EEXIST) {
		base_warn("tlsrpt: %s: %s; counted in memory only, no reports", t->dir,
		          strerror(errno));
		free(t->dir);
		t->dir = NULL;
	} else {
		/* today's counters, as last written */
		char *p = path_of(t, today, "");
		struct base_err e2;
		if (access(p, F_OK) == 0) {
			if (load(p, &t->day, &e2) < 0) {
				base_warn("tlsrpt: %s; today's counters start from zero", e2.msg);
				tlsrpt_day_init(&t->day, today);
			} else {
				base_info("tlsrpt: %zu domains counted today, from %s", t->day.n,
				          p);
			}
		}
		free(p);
		/* the reports kept for another attempt */
		size_t rn = strlen(t->dir) + sizeof "/retry";
		t->rdir = base_xmalloc(rn);
		snprintf(t->rdir, rn, "%s/retry", t->dir);
		if (mkdir(t->rdir, 0700) < 0 && errno != EEXIST) {
			base_warn("tlsrpt: %s: %s; failed reports are not tried again", t->rdir,
			          strerror(errno));
			free(t->rdir);
			t->rdir = NULL;
		} else {
			pend_load(t, now);
		}
	}
	if (!x->resolver) base_warn("tlsrpt: no --resolver: sessions are counted, no reports sent");
	if (!x->cfg->ndkim)
		base_warn("tlsrpt: no --dkim-key: report mails go unsigned (RFC 8460 5.3 asks for "
		          "DKIM)");
	t->next_save = now + SAVE_SECONDS;
	t->ev = event_new(x->base, -1, EV_PERSIST, on_second, t);
	struct timeval sec = {1, 0};
	evtimer_add(t->ev, &sec);
	atomic_init(&t->stop, 0);
	x->tlsrpt = t;
	(void)err;
	return 0;
}

void relay_tlsrpt_stop(struct relay_ctx *x)
{
	struct relay_tlsrpt *t = x->tlsrpt;
	if (!t) return;
	save(t);
	event_free(t->ev);
	atomic_store(&t->stop, 1);
	relay_workers_free(t->workers); /* a POST under way ends; done() frees it */
	while (t->posts) {
		struct post *p = t->posts;
		t->posts = p->next;
		if (!p->pe->file[0]) pend_free(p->pe);
		free(p);
	}
	/* what is on disk is attempted again at the next start */
	while (t->pends) {
		struct pend *pe = t->pends;
		t->pends = pe->next;
		pend_free(pe);
	}
	free(t->rdir);
	tlsrpt_day_free(&t->day);
	tlsrpt_day_free(&t->rep);
	free(t->doms);
	free(t->dir);
	free(t);
	x->tlsrpt = NULL;
}

/* ---- settings -------------------------------------------------------------- */

int relay_tlsrpt_set(struct relay_config *c, const char *key, const char *value,
                     struct base_err *err)
{
	if (!strcmp(key, "tlsrpt")) {
		if (!strcmp(value, "on") || !strcmp(value, "yes"))
			c->tlsrpt = 1;
		else if (!strcmp(value, "off") || !strcmp(value, "no"))
			c->tlsrpt = 0;
		else
			return base_errf(err, "tlsrpt: expected on or off, not '%s'", value);
	} else if (!strcmp(key, "tlsrpt-org")) {
		c->tlsrpt_org = value;
	} else if (!strcmp(key, "tlsrpt-contact")) {
		c->tlsrpt_contact = value;
	} else if (!strcmp(key, "tlsrpt-from")) {
		const char *at = strrchr(value, '@');
		if (!at || at == value || !at[1] || strpbrk(value, " <>\"\t\r\n"))
			return base_errf(err, "tlsrpt-from: expected an address, not '%s'", value);
		c->tlsrpt_from = value;
	} else if (!strcmp(key, "tlsrpt-port")) {
		uint64_t n;
		int k = base_parse_uint(value, 65535, &n);
		if (k <= 0 || value[k] || n == 0)
			return base_errf(err, "tlsrpt-port: bad port '%s'", value);
		c->tlsrpt_port = (uint16_t)n;
	} else if (!strcmp(key, "tlsrpt-retry")) {
		uint32_t t;
		if (base_parse_duration(value, &t, err) < 0) return -1;
		if (t == 0 || t > 3600)
			return base_errf(err, "tlsrpt-retry: from 1s to 1h, not '%s'", value);
		c->tlsrpt_retry = t;
	} else if (!strcmp(key, "tlsrpt-delay")) {
		uint32_t t;
		if (base_parse_duration(value, &t, err) < 0) return -1;
		if (t > 86400) return base_errf(err, "tlsrpt-delay: at most 1d, not '%s'", value);
		c->tlsrpt_delay = t;
	} else {
		return 1;
	}
	return 0;
}

/* ---- mailrep tlsrpt show --------------------------------------------------------- */

int relay_tlsrpt_show(FILE *out, const char *spool, const char *day, const char *domain,
                      const char *org, const char *contact, const char *host, struct base_err *err)
{
	char today[11];
	if (!day) {
		day_of(base_now(), today);
		day = today;
	}
	if (!tlsrpt_day_ok(day)) return base_errf(err, "bad day '%s': expected YYYY-MM-DD", day);
	char dir[4096];
	snprintf(dir, sizeof dir, "%s/tlsrpt", spool);
	struct relay_tlsrpt t = {.dir = dir};
	/* the day's file, or the file of a day already reported */
	char *p = path_of(&t, day, "");
	if (access(p, F_OK) < 0) {
		free(p);
		p = path_of(&t, day, ".sent");
		if (access(p, F_OK) < 0) {
			free(p);
			return base_errf(err, "%s/%s: no TLS counters for %s", dir, day, day);
		}
	}
	struct tlsrpt_day d;
	int rc = load(p, &d, err);
	free(p);
	if (rc < 0) return -1;
	struct tlsrpt_domain **v = tlsrpt_day_sorted(&d);
	size_t shown = 0;
	for (size_t i = 0; i < d.n; i++) {
		if (domain && base_strcasecmp_ascii(v[i]->name, domain)) continue;
		char rid[600];
		report_id(d.day, v[i]->name, host, rid, sizeof rid);
		struct tlsrpt_meta meta = {org ? org : host, contact ? contact : "", rid};
		struct base_buf b;
		base_buf_init(&b);
		tlsrpt_json(&d, v[i], &meta, &b);
		fwrite(b.data, 1, b.len, out);
		base_buf_free(&b);
		shown++;
	}
	free(v);
	if (d.dropped)
		base_warn("%s: %llu sessions of domains beyond the %d counted were dropped", day,
		          (unsigned long long)d.dropped, TLSRPT_DOMAINS_MAX);
	tlsrpt_day_free(&d);
	if (domain && !shown) return base_errf(err, "no TLS counters for %s on %s", domain, day);
	return 0;
}
