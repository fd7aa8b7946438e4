/*
 * dsn.c — delivery status notifications (RFC 3464), one per message and
 * kind, and the DSN extension's parameters (RFC 3461) that steer them.
 *
 * A recipient that fails finally (a 5xx, an expiry, an administrator's
 * bounce) is not reported at once: its failure is kept with the message
 * (relay_dsn_owe) and the message's DSN goes out when no recipient of it
 * is in a transaction any more (m->busy == 0: every job the scheduler
 * made for it in this attempt cycle has its outcome). So the recipients
 * refused in one transaction, or in parallel transactions to several
 * sites, share one DSN listing them all; a recipient that fails later
 * (after a retry, on expiry) gets a DSN of its own then. Notices of the
 * other kinds are gathered the same way: `delayed` (a recipient deferred
 * for --delay-warning, once) and `relayed` (NOTIFY=SUCCESS, delivered to
 * a next hop without DSN). A flush writes one DSN per kind present.
 *
 * NOTIFY decides who gets one: absent means FAILURE (and DELAY when
 * delayed notices are on); NEVER, or a list without the kind, means none.
 * RET=FULL returns the whole message with a failure DSN; otherwise (and
 * for the other kinds) the header section. ENVID and ORCPT come back as
 * Original-Envelope-Id and Original-Recipient.
 *
 * Durability (at least once): until its DSN is written, a failed
 * recipient stays PENDING in the spool; relay_dsn_flush writes the DSN's
 * message record first and the recipients' final state records behind
 * it, in the same segment and under the same commit. A crash before both
 * are on disk leaves the recipients pending: they are tried again after
 * the restart and fail again, which owes the DSN again. A delayed notice
 * is followed in the same way by a state record carrying the recipient's
 * RELAY_RCPT_F_WARNED flag, so a restart does not warn again, and a crash
 * that loses the notice loses the flag too (the warning is sent again). A
 * relayed notice is owed after the recipient's delivered state is written:
 * a crash before it is written loses it (at most once). Mail from the
 * null sender gets no DSN; its failures are final at once.
 */
#include <stdlib.h>
#include <string.h>

#include "relay/dsnparam.h"
#include "relay/int.h"

enum kind { K_FAILED, K_DELAYED, K_RELAYED, K_N };

struct relay_dsn_item {
	uint32_t idx;
	enum kind kind;
	uint32_t state; /* K_FAILED: RELAY_RCPT_BOUNCED or RELAY_RCPT_EXPIRED */
	char *reply;    /* NULL: none */
	char *remote;   /* the site's name ("host" of its dest); NULL: none */
	struct relay_dsn_item *next;
};

/* ---- parameters ------------------------------------------------------------ */

void relay_dsn_attach(struct relay_ctx *x, struct rmsg *m, const char *dsn, size_t len,
                      const uint32_t *rflags)
{
	for (uint32_t i = 0; rflags && i < m->nrcpt; i++)
		m->rcpt[i].warned = (rflags[i] & RELAY_RCPT_F_WARNED) != 0;
	if (!dsn) return;
	struct base_err err;
	struct relay_dsn_params *p;
	if (relay_dsn_decode(dsn, len, &p, &err) < 0) {
		base_warn("%s: %s: ignored", m->id, err.msg);
		return;
	}
	if (p->nrcpt != m->nrcpt) {
		base_warn("%s: DSN parameters for %u recipients, not %u: ignored", m->id, p->nrcpt,
		          m->nrcpt);
		relay_dsn_params_free(p);
		return;
	}
	relay_dsn_params_free(m->dsnp);
	m->dsnp = p;
}

/* NOTIFY as it applies: the recipient's, or the default. */
static uint8_t notify_of(const struct relay_ctx *x, const struct rmsg *m, uint32_t idx)
{
	uint8_t n = m->dsnp ? m->dsnp->notify[idx] : 0;
	if (!n)
		n = RELAY_NOTIFY_SET | RELAY_NOTIFY_FAILURE |
		    (x->cfg->delay_warning ? RELAY_NOTIFY_DELAY : 0);
	return n;
}

void relay_dsn_mail_params(const struct rmsg *m, struct base_buf *b)
{
	if (!m->dsnp) return;
	if (m->dsnp->ret)
		base_buf_printf(b, " RET=%s", m->dsnp->ret == RELAY_RET_FULL ? "FULL" : "HDRS");
	if (m->dsnp->envid) {
		base_buf_puts(b, " ENVID=");
		relay_xtext_encode(b, m->dsnp->envid);
	}
}

void relay_dsn_rcpt_params(const struct rmsg *m, uint32_t idx, struct base_buf *b)
{
	if (!m->dsnp) return;
	char t[64];
	if (m->dsnp->notify[idx])
		base_buf_printf(b, " NOTIFY=%s",
		                relay_notify_text(m->dsnp->notify[idx], t, sizeof t));
	const char *o = m->dsnp->orcpt[idx];
	if (o) {
		const char *semi = strchr(o, ';');
		base_buf_printf(b, " ORCPT=%.*s;", (int)(semi - o), o);
		relay_xtext_encode(b, semi + 1);
	}
}

/* ---- owing ------------------------------------------------------------------- */

static void owe(struct rmsg *m, uint32_t idx, enum kind k, uint32_t state, const struct dest *d,
                const char *reply)
{
	struct relay_dsn_item *it = base_xcalloc(1, sizeof *it);
	it->idx = idx;
	it->kind = k;
	it->state = state;
	it->reply = reply ? base_xstrdup(reply) : NULL;
	it->remote = d ? base_xstrdup(d->host) : NULL;
	/* kept in recipient order */
	struct relay_dsn_item **p = &m->owed;
	while (*p && (*p)->idx <= idx) p = &(*p)->next;
	it->next = *p;
	*p = it;
}

void relay_dsn_owe(struct relay_ctx *x, struct rmsg *m, uint32_t idx, uint32_t state,
                   const struct dest *d, const char *reply)
{
	struct rrcpt *r = &m->rcpt[idx];
	r->state = state;
	m->live--;
	relay_tally_rcpt_out(x, m, idx);
	/* never bounce a bounce, nor to whom asked for none: final at once */
	if (!m->sender[0] || !(notify_of(x, m, idx) & RELAY_NOTIFY_FAILURE)) {
		struct base_err err;
		if (relay_spool_state(x->spool, m->id, idx, state, r->attempts, r->next, &err) < 0)
			base_warn("%s", err.msg);
		return;
	}
	owe(m, idx, K_FAILED, state, d, reply);
}

void relay_dsn_delivered(struct relay_ctx *x, struct rmsg *m, uint32_t idx, const struct dest *d,
                         const char *reply, int peer_dsn)
{
	/* a next hop with DSN got NOTIFY and reports success itself */
	if (peer_dsn || !m->sender[0] || m->rcpt[idx].state != RELAY_RCPT_DELIVERED ||
	    !(notify_of(x, m, idx) & RELAY_NOTIFY_SUCCESS))
		return;
	owe(m, idx, K_RELAYED, RELAY_RCPT_DELIVERED, d, reply);
}

void relay_dsn_deferred(struct relay_ctx *x, struct rmsg *m, uint32_t idx, const struct dest *d,
                        const char *reply)
{
	struct rrcpt *r = &m->rcpt[idx];
	uint32_t after = x->cfg->delay_warning;
	if (!after || r->warned || !m->sender[0] || r->state != RELAY_RCPT_PENDING ||
	    base_now() - m->received < (int64_t)after ||
	    !(notify_of(x, m, idx) & RELAY_NOTIFY_DELAY))
		return;
	r->warned = 1;
	owe(m, idx, K_DELAYED, RELAY_RCPT_PENDING, d, reply);
}

void relay_dsn_discard(struct rmsg *m)
{
	struct relay_dsn_item *it;
	while ((it = m->owed)) {
		m->owed = it->next;
		free(it->reply);
		free(it->remote);
		free(it);
	}
}

/* ---- writing ------------------------------------------------------------------ */

/* The enhanced status code at the start of a reply ("5.1.1"), or dflt. */
static void status_of(const char *reply, const char *dflt, char *out, size_t n)
{
	snprintf(out, n, "%s", dflt);
	if (!reply || strlen(reply) < 6) return;
	const char *t = reply + 4;
	if (!((t[0] == '2' || t[0] == '4' || t[0] == '5') && t[1] == '.')) return;
	size_t k = 0;
	while (k + 1 < n && ((t[k] >= '0' && t[k] <= '9') || t[k] == '.')) out[k] = t[k], k++;
	out[k] = 0;
}

/* A reply on one line, for a DSN field or its text part. */
static void one_line(struct base_buf *b, const char *s)
{
	for (; *s; s++) {
		char c = *s;
		base_buf_append(b, c == '\r' || c == '\n' || (unsigned char)c < 0x20 ? " " : &c, 1);
	}
}

static void rfc822_date(time_t t, char *out, size_t n)
{
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, n, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

/* The human part's text for the items of kind k. */
static void human_text(struct relay_ctx *x, struct rmsg *m, enum kind k, uint32_t n,
                       uint32_t expired, struct base_buf *b)
{
	struct relay_dsn_item *first = NULL;
	for (struct relay_dsn_item *it = m->owed; it && !first; it = it->next)
		if (it->kind == k) first = it;
	if (k == K_FAILED) {
		if (n == 1)
			base_buf_printf(b, "Your message to <%s> could not be delivered%s.\r\n",
			                m->rcpt[first->idx].addr,
			                expired ? " before it expired" : "");
		else
			base_buf_printf(
			    b, "Your message could not be delivered to these %u recipients%s:\r\n",
			    n, expired == n ? " before it expired" : "");
	} else if (k == K_DELAYED) {
		char until[64];
		rfc822_date((time_t)(m->received + x->cfg->schedule.max_age), until, sizeof until);
		base_buf_printf(b,
		                "Your message has not been delivered yet to %s%s%s. It is still "
		                "being retried, until %s.\r\n",
		                n == 1 ? "<" : "these recipients",
		                n == 1 ? m->rcpt[first->idx].addr : "", n == 1 ? ">" : "", until);
	} else {
		base_buf_printf(
		    b,
		    "Your message was delivered to %s%s%s, which cannot send a delivery "
		    "notice of its own: this is the last one.\r\n",
		    n == 1 ? "<" : "these recipients' next hop",
		    n == 1 ? m->rcpt[first->idx].addr : "", n == 1 ? ">" : "");
	}
	base_buf_puts(b, "\r\n");
	for (struct relay_dsn_item *it = m->owed; it; it = it->next) {
		if (it->kind != k) continue;
		base_buf_printf(b, "<%s>: %s", m->rcpt[it->idx].addr,
		                it->state == RELAY_RCPT_EXPIRED ? "expired: " : "");
		one_line(b, it->reply ? it->reply : k == K_FAILED ? "failed" : "no reply");
		base_buf_puts(b, "\r\n");
	}
}

/* Writes the DSN of kind k for m's owed items of that kind to the spool
 * and queues it; 0, or -1 when it could not be written. */
static int write_dsn(struct relay_ctx *x, struct rmsg *m, enum kind k, const struct base_buf *orig)
{
	static const char *const subject[K_N] = {"Undelivered Mail Returned to Sender",
	                                         "Delayed Mail (still being retried)",
	                                         "Successful Mail Delivery Report"};
	static const char *const action[K_N] = {"failed", "delayed", "relayed"};
	struct base_buf b;
	base_buf_init(&b);
	struct base_err err;
	char id[RELAY_ID_MAX + 1], date[64];
	relay_id_new(x, id);
	time_t now = base_now();
	rfc822_date(now, date, sizeof date);
	const char *h = x->hostname;
	uint32_t n = 0, expired = 0;
	for (struct relay_dsn_item *it = m->owed; it; it = it->next) {
		if (it->kind != k) continue;
		n++;
		expired += it->state == RELAY_RCPT_EXPIRED;
	}
	const struct relay_dsn_params *p = m->dsnp;
	/* RET=FULL: the whole message with a failure DSN, if it is not larger
	 * than the relay takes in */
	int full = k == K_FAILED && p && p->ret == RELAY_RET_FULL && orig->len &&
	           orig->len <= x->cfg->max_size;
	base_buf_printf(&b,
	                "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n"
	                "To: <%s>\r\n"
	                "Subject: %s\r\n"
	                "Date: %s\r\n"
	                "Message-ID: <%s@%s>\r\n"
	                "Auto-Submitted: auto-replied\r\n"
	                "MIME-Version: 1.0\r\n"
	                "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	                "\tboundary=\"%s/%s\"\r\n\r\n"
	                "This is a MIME-encapsulated message.\r\n\r\n"
	                "--%s/%s\r\n"
	                "Content-Type: text/plain; charset=us-ascii\r\n\r\n",
	                h, m->sender, subject[k], date, id, h, id, h, id, h);
	human_text(x, m, k, n, expired, &b);
	base_buf_printf(&b, "\r\n--%s/%s\r\nContent-Type: message/delivery-status\r\n\r\n", id, h);
	if (p && p->envid) base_buf_printf(&b, "Original-Envelope-Id: %s\r\n", p->envid);
	base_buf_printf(&b, "Reporting-MTA: dns; %s\r\nX-Mailrep-Queue-ID: %s\r\n", h, m->id);
	char arrival[64];
	rfc822_date((time_t)m->received, arrival, sizeof arrival);
	base_buf_printf(&b, "Arrival-Date: %s\r\n", arrival);
	for (struct relay_dsn_item *it = m->owed; it; it = it->next) {
		if (it->kind != k) continue;
		char st[16];
		status_of(it->reply,
		          k == K_RELAYED                    ? "2.0.0"
		          : k == K_DELAYED                  ? "4.0.0"
		          : it->state == RELAY_RCPT_EXPIRED ? "4.4.7"
		                                            : "5.0.0",
		          st, sizeof st);
		if (k == K_FAILED && st[0] == '2') snprintf(st, sizeof st, "5.0.0");
		base_buf_puts(&b, "\r\n");
		if (p && p->orcpt[it->idx])
			base_buf_printf(&b, "Original-Recipient: %s\r\n", p->orcpt[it->idx]);
		base_buf_printf(&b,
		                "Final-Recipient: rfc822; %s\r\n"
		                "Action: %s\r\n"
		                "Status: %s\r\n",
		                m->rcpt[it->idx].addr, action[k], st);
		if (it->remote) base_buf_printf(&b, "Remote-MTA: dns; %s\r\n", it->remote);
		if (it->reply) {
			base_buf_puts(&b, "Diagnostic-Code: smtp; ");
			one_line(&b, it->reply);
			base_buf_puts(&b, "\r\n");
		}
		if (k == K_DELAYED) {
			char until[64];
			rfc822_date((time_t)(m->received + x->cfg->schedule.max_age), until,
			            sizeof until);
			base_buf_printf(&b, "Will-Retry-Until: %s\r\n", until);
		}
	}
	if (full) {
		base_buf_printf(&b, "\r\n--%s/%s\r\nContent-Type: message/rfc822\r\n\r\n", id, h);
		base_buf_append(&b, orig->data, orig->len);
		if (orig->len < 2 || memcmp(orig->data + orig->len - 2, "\r\n", 2))
			base_buf_puts(&b, "\r\n");
	} else {
		base_buf_printf(&b, "\r\n--%s/%s\r\nContent-Type: text/rfc822-headers\r\n\r\n", id,
		                h);
		/* the original header section */
		const char *hend = strstr(orig->data ? orig->data : "", "\r\n\r\n");
		if (hend) base_buf_append(&b, orig->data, (size_t)(hend - orig->data) + 2);
	}
	base_buf_printf(&b, "\r\n--%s/%s--\r\n", id, h);
	const char *rc[1] = {m->sender};
	struct relay_loc loc;
	int rc_ = relay_spool_add(x->spool, id, "", "", now, rc, 1, b.data, b.len, &loc, &err);
	if (rc_ < 0) {
		/* failures stay pending in the spool: a restart tries them again */
		base_error("DSN for %s: %s", m->id, err.msg);
	} else {
		struct rmsg *d = relay_queue_add(x, id, "", "", "", now, &loc, rc, 1);
		relay_account(x, "reception", d, NULL, NULL, 0, "DSN");
	}
	base_buf_free(&b);
	return rc_;
}

void relay_dsn_flush(struct relay_ctx *x, struct rmsg *m)
{
	if (!m->owed) return;
	struct base_buf orig;
	base_buf_init(&orig);
	struct base_err err;
	if (relay_spool_read(x->spool, &m->loc, &orig, &err) < 0) base_warn("DSN: %s", err.msg);
	/* each DSN and the states behind it in one segment: a crash that loses
	 * the DSN loses the states too, and the recipients are tried (and
	 * reported) again */
	relay_spool_pin(x->spool, 1);
	for (enum kind k = K_FAILED; k < K_N; k++) {
		int any = 0;
		for (struct relay_dsn_item *it = m->owed; it && !any; it = it->next)
			any = it->kind == k;
		if (!any || write_dsn(x, m, k, &orig) < 0) continue;
		for (struct relay_dsn_item *it = m->owed; it; it = it->next) {
			struct rrcpt *r = &m->rcpt[it->idx];
			int rc = 0;
			if (it->kind != k) continue;
			if (k == K_FAILED) /* now final in the spool too, behind their DSN */
				rc = relay_spool_state_flags(
				    x->spool, m->id, it->idx, it->state, r->attempts, r->next,
				    r->warned ? RELAY_RCPT_F_WARNED : 0, &err);
			else if (k == K_DELAYED) /* warned: not again after a restart */
				rc = relay_spool_state_flags(x->spool, m->id, it->idx, r->state,
				                             r->attempts, r->next,
				                             RELAY_RCPT_F_WARNED, &err);
			if (rc < 0) base_warn("%s", err.msg);
		}
	}
	relay_commit_soon(x);
	relay_spool_pin(x->spool, 0);
	base_buf_free(&orig);
	relay_dsn_discard(m);
}
