/*
 * dsn.c — delivery status notifications (RFC 3464), one per message.
 *
 * A recipient that fails finally (a 5xx, an expiry, an administrator's
 * bounce) is not reported at once: its failure is kept with the message
 * (relay_dsn_owe) and the message's DSN goes out when no recipient of it
 * is in a transaction any more (m->busy == 0: every job the scheduler
 * made for it in this attempt cycle has its outcome). So the recipients
 * refused in one transaction, or in parallel transactions to several
 * sites, share one DSN listing them all; a recipient that fails later
 * (after a retry, on expiry) gets a DSN of its own then.
 *
 * Durability (at least once): until its DSN is written, a failed
 * recipient stays PENDING in the spool; relay_dsn_flush writes the DSN's
 * message record first and the recipients' final state records behind
 * it, in the same segment and under the same commit. A crash before both
 * are on disk leaves the recipients pending: they are tried again after
 * the restart and fail again, which owes the DSN again. Mail from the
 * null sender gets no DSN; its failures are final at once.
 */
#include <stdlib.h>
#include <string.h>

#include "relay/int.h"

struct relay_dsn_item {
	uint32_t idx;
	uint32_t state; /* RELAY_RCPT_BOUNCED or RELAY_RCPT_EXPIRED */
	char *reply;    /* NULL: none */
	char *remote;   /* the site's name ("host" of its dest); NULL: none */
	struct relay_dsn_item *next;
};

void relay_dsn_owe(struct relay_ctx *x, struct rmsg *m, uint32_t idx, uint32_t state,
                   const struct dest *d, const char *reply)
{
	struct rrcpt *r = &m->rcpt[idx];
	r->state = state;
	m->live--;
	if (!m->sender[0]) { /* never bounce a bounce: final at once */
		struct base_err err;
		if (relay_spool_state(x->spool, m->id, idx, state, r->attempts, r->next, &err) < 0)
			base_warn("%s", err.msg);
		return;
	}
	struct relay_dsn_item *it = base_xcalloc(1, sizeof *it);
	it->idx = idx;
	it->state = state;
	it->reply = reply ? base_xstrdup(reply) : NULL;
	it->remote = d ? base_xstrdup(d->host) : NULL;
	/* kept in recipient order */
	struct relay_dsn_item **p = &m->owed;
	while (*p && (*p)->idx < idx) p = &(*p)->next;
	it->next = *p;
	*p = it;
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

/* The enhanced status code at the start of a reply ("5.1.1"), or dflt. */
static void status_of(const char *reply, const char *dflt, char *out, size_t n)
{
	snprintf(out, n, "%s", dflt);
	if (!reply || strlen(reply) < 6) return;
	const char *t = reply + 4;
	if (!((t[0] == '4' || t[0] == '5') && t[1] == '.')) return;
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

void relay_dsn_flush(struct relay_ctx *x, struct rmsg *m)
{
	if (!m->owed) return;
	struct base_buf orig, b;
	base_buf_init(&orig);
	base_buf_init(&b);
	struct base_err err;
	if (relay_spool_read(x->spool, &m->loc, &orig, &err) < 0) base_warn("DSN: %s", err.msg);
	char id[RELAY_ID_MAX + 1], date[64];
	relay_id_new(x, id);
	time_t now = base_now();
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
	const char *h = x->hostname;
	uint32_t n = 0, expired = 0;
	for (struct relay_dsn_item *it = m->owed; it; it = it->next) {
		n++;
		expired += it->state == RELAY_RCPT_EXPIRED;
	}
	base_buf_printf(&b,
	                "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n"
	                "To: <%s>\r\n"
	                "Subject: Undelivered Mail Returned to Sender\r\n"
	                "Date: %s\r\n"
	                "Message-ID: <%s@%s>\r\n"
	                "Auto-Submitted: auto-replied\r\n"
	                "MIME-Version: 1.0\r\n"
	                "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	                "\tboundary=\"%s/%s\"\r\n\r\n"
	                "This is a MIME-encapsulated message.\r\n\r\n"
	                "--%s/%s\r\n"
	                "Content-Type: text/plain; charset=us-ascii\r\n\r\n",
	                h, m->sender, date, id, h, id, h, id, h);
	if (n == 1)
		base_buf_printf(&b, "Your message to <%s> could not be delivered%s.\r\n",
		                m->rcpt[m->owed->idx].addr, expired ? " before it expired" : "");
	else
		base_buf_printf(&b,
		                "Your message could not be delivered to these %u recipients%s:\r\n",
		                n, expired == n ? " before it expired" : "");
	base_buf_puts(&b, "\r\n");
	for (struct relay_dsn_item *it = m->owed; it; it = it->next) {
		base_buf_printf(&b, "<%s>: %s", m->rcpt[it->idx].addr,
		                it->state == RELAY_RCPT_EXPIRED ? "expired: " : "");
		one_line(&b, it->reply ? it->reply : "failed");
		base_buf_puts(&b, "\r\n");
	}
	base_buf_printf(&b,
	                "\r\n--%s/%s\r\n"
	                "Content-Type: message/delivery-status\r\n\r\n"
	                "Reporting-MTA: dns; %s\r\n"
	                "X-Mailrep-Queue-ID: %s\r\n",
	                id, h, h, m->id);
	for (struct relay_dsn_item *it = m->owed; it; it = it->next) {
		char st[16];
		status_of(it->reply, it->state == RELAY_RCPT_EXPIRED ? "4.4.7" : "5.0.0", st,
		          sizeof st);
		base_buf_printf(&b,
		                "\r\nFinal-Recipient: rfc822; %s\r\n"
		                "Action: failed\r\n"
		                "Status: %s\r\n",
		                m->rcpt[it->idx].addr, st);
		if (it->remote) base_buf_printf(&b, "Remote-MTA: dns; %s\r\n", it->remote);
		if (it->reply) {
			base_buf_puts(&b, "Diagnostic-Code: smtp; ");
			one_line(&b, it->reply);
			base_buf_puts(&b, "\r\n");
		}
	}
	base_buf_printf(&b, "\r\n--%s/%s\r\nContent-Type: text/rfc822-headers\r\n\r\n", id, h);
	/* the original header section */
	const char *hend = strstr(orig.data ? orig.data : "", "\r\n\r\n");
	if (hend) base_buf_append(&b, orig.data, (size_t)(hend - orig.data) + 2);
	base_buf_printf(&b, "\r\n--%s/%s--\r\n", id, h);
	base_buf_free(&orig);
	const char *rc[1] = {m->sender};
	struct relay_loc loc;
	/* the DSN and the final states behind it in one segment: a crash that
	 * loses the DSN loses the states too, and the recipients are tried
	 * (and reported) again */
	relay_spool_pin(x->spool, 1);
	if (relay_spool_add(x->spool, id, "", "", now, rc, 1, b.data, b.len, &loc, &err) < 0) {
		/* the recipients stay pending in the spool: a restart tries them again */
		base_error("DSN for %s: %s", m->id, err.msg);
	} else {
		struct rmsg *d = relay_queue_add(x, id, "", "", "", now, &loc, rc, 1);
		relay_account(x, "reception", d, NULL, NULL, 0, "DSN");
		/* now the failures are final in the spool too, behind their DSN */
		for (struct relay_dsn_item *it = m->owed; it; it = it->next) {
			struct rrcpt *r = &m->rcpt[it->idx];
			if (relay_spool_state(x->spool, m->id, it->idx, it->state, r->attempts,
			                      r->next, &err) < 0)
				base_warn("%s", err.msg);
		}
		relay_commit_soon(x);
	}
	relay_spool_pin(x->spool, 0);
	base_buf_free(&b);
	relay_dsn_discard(m);
}
