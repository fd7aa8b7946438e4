/*
 * control.c — the control channel of a running relay and the holds an
 * administrator puts on mail.
 *
 * The relay listens on the UNIX socket SPOOL/control (mode 0600, made
 * after the SMTP listener, removed at exit; a stale one left by a crash
 * is replaced). A client sends one request line (control.h), the relay
 * answers with one JSON object and closes. Requests are read by libevent
 * in the relay's own loop, so they see and change the queue between two
 * scheduler ticks with no locking; each is bounded (line length, a read
 * timeout, at most CTL_CLIENTS at once).
 *
 * Holds (suspensions of a domain, a site or a pool, until a time or until
 * resumed) live in struct relay_control and in SPOOL/suspended, rewritten
 * atomically on every change. The scheduler asks relay_control_held()
 * before it makes a job: held mail is not tried and no attempt is counted;
 * its message goes back into the heap at the end of the hold.
 *
 * Every action is written to the accounting log as an `admin` event (and
 * to the CSV as a row of type `a`).
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "relay/control.h"
#include "relay/int.h"
#include "smtp/smtp.h"

/* ---- the protocol ------------------------------------------------------- */

static const char *const op_names[] = {"summary", "list", "suspend", "resume", "bounce", "retry"};
static const char *const kind_names[] = {"", "domain", "site", "pool", "id", "all", "account"};

const char *relay_ctl_op_name(enum relay_ctl_op op)
{
	return op_names[op];
}

const char *relay_ctl_kind_name(enum relay_ctl_kind k)
{
	return kind_names[k];
}

#define CTL_WORDS 5

int relay_ctl_parse(const char *line, size_t len, struct relay_ctl_req *q, struct base_err *err)
{
	memset(q, 0, sizeof *q);
	if (len && line[len - 1] == '\r') len--;
	if (len > RELAY_CTL_LINE_MAX)
		return base_errf(err, "request longer than %u bytes", RELAY_CTL_LINE_MAX);
	if (len == 0) return base_errf(err, "empty request");
	/* split into words, refusing anything but printable ASCII and single spaces */
	char buf[RELAY_CTL_LINE_MAX + 1];
	const char *w[CTL_WORDS];
	size_t nw = 0;
	memcpy(buf, line, len);
	buf[len] = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)buf[i];
		if (c == ' ') {
			if (i == 0 || buf[i - 1] == 0 || i + 1 == len)
				return base_errf(err, "stray space at byte %zu", i + 1);
			buf[i] = 0;
			continue;
		}
		if (c < 0x21 || c > 0x7e)
			return base_errf(err, "byte %zu is not printable ASCII (0x%02x)", i + 1, c);
		if (i == 0 || buf[i - 1] == 0) {
			if (nw == CTL_WORDS) return base_errf(err, "too many words");
			w[nw++] = buf + i;
		}
	}
	size_t op;
	for (op = 0; op < sizeof op_names / sizeof *op_names; op++)
		if (!strcmp(w[0], op_names[op])) break;
	if (op == sizeof op_names / sizeof *op_names)
		return base_errf(err,
		                 "unknown command '%.40s' (summary, list, suspend, resume, "
		                 "bounce, retry)",
		                 w[0]);
	q->op = (enum relay_ctl_op)op;
	switch (q->op) {
	case RELAY_CTL_SUMMARY:
		if (nw != 1) return base_errf(err, "summary: takes no argument");
		return 0;
	case RELAY_CTL_LIST: {
		q->limit = 1000;
		size_t i = 1;
		if (i < nw && strcmp(w[i], "after")) {
			char *end;
			errno = 0;
			unsigned long v = strtoul(w[i], &end, 10);
			if (*end || errno || w[i][0] < '0' || w[i][0] > '9' || v == 0 ||
			    v > RELAY_CTL_LIST_MAX)
				return base_errf(err, "list: bad LIMIT '%.40s' (1 to %u)", w[i],
				                 RELAY_CTL_LIST_MAX);
			q->limit = (uint32_t)v;
			i++;
		}
		if (i < nw) {
			if (strcmp(w[i], "after"))
				return base_errf(
				    err, "list: unexpected '%.40s' (list [LIMIT] [after CURSOR])",
				    w[i]);
			if (++i == nw) return base_errf(err, "list after: CURSOR is missing");
			char *end;
			errno = 0;
			unsigned long long v = strtoull(w[i], &end, 10);
			if (*end || errno || w[i][0] < '0' || w[i][0] > '9' || v == 0)
				return base_errf(
				    err,
				    "list after: bad CURSOR '%.40s' (the \"next\" of a list's "
				    "reply)",
				    w[i]);
			q->after = v;
			i++;
		}
		if (i < nw)
			return base_errf(err, "list: too many words (list [LIMIT] [after CURSOR])");
		return 0;
	}
	default:
		break;
	}
	const char *opn = op_names[q->op];
	if (nw < 2) return base_errf(err, "%s: what? (see the protocol in docs/RELAY.md)", opn);
	size_t k;
	for (k = 1; k < sizeof kind_names / sizeof *kind_names; k++)
		if (!strcmp(w[1], kind_names[k])) break;
	if (k == sizeof kind_names / sizeof *kind_names)
		return base_errf(err, "%s: unknown kind '%.40s'", opn, w[1]);
	q->kind = (enum relay_ctl_kind)k;
	int holds = q->op == RELAY_CTL_SUSPEND || q->op == RELAY_CTL_RESUME;
	if (holds && q->kind != RELAY_CTL_DOMAIN && q->kind != RELAY_CTL_SITE &&
	    q->kind != RELAY_CTL_POOL && q->kind != RELAY_CTL_ACCOUNT)
		return base_errf(err, "%s: kind must be domain, site, pool or account", opn);
	if (q->op == RELAY_CTL_BOUNCE && q->kind != RELAY_CTL_ID && q->kind != RELAY_CTL_DOMAIN &&
	    q->kind != RELAY_CTL_ACCOUNT)
		return base_errf(err, "bounce: kind must be id, domain or account");
	if (q->op == RELAY_CTL_RETRY && q->kind != RELAY_CTL_ID && q->kind != RELAY_CTL_DOMAIN &&
	    q->kind != RELAY_CTL_ALL)
		return base_errf(err, "retry: kind must be id, domain or all");
	if (q->kind == RELAY_CTL_ALL) {
		if (nw != 2) return base_errf(err, "%s all: takes no name", opn);
		return 0;
	}
	if (nw < 3) return base_errf(err, "%s %s: NAME is missing", opn, w[1]);
	size_t nl = strlen(w[2]);
	if (nl > RELAY_CTL_NAME_MAX)
		return base_errf(err, "%s %s: name longer than %u bytes", opn, w[1],
		                 RELAY_CTL_NAME_MAX);
	for (size_t i = 0; i <= nl; i++)
		q->name[i] = q->kind == RELAY_CTL_DOMAIN ? base_lower(w[2][i]) : w[2][i];
	if (q->op != RELAY_CTL_SUSPEND) {
		if (nw != 3) return base_errf(err, "%s: too many words", opn);
		return 0;
	}
	if (nw == 3) return 0;
	if (nw != 4) return base_errf(err, "suspend: too many words");
	if (w[3][0] == '@') {
		char *end;
		errno = 0;
		long long t = strtoll(w[3] + 1, &end, 10);
		if (*end || errno || w[3][1] < '0' || w[3][1] > '9' || t <= 0)
			return base_errf(err, "suspend: bad time '%.40s' (@UNIXTIME)", w[3]);
		q->until = t;
		return 0;
	}
	struct base_err e2;
	if (base_parse_duration(w[3], &q->secs, &e2) < 0 || q->secs == 0)
		return base_errf(err, "suspend: bad duration '%.40s' (as 30m, 2h, 1d)", w[3]);
	return 0;
}

/* ---- the client side ----------------------------------------------------- */

static int ctl_path(const char *dir, struct sockaddr_un *sa, struct base_err *err)
{
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	int n = snprintf(sa->sun_path, sizeof sa->sun_path, "%s/%s", dir, RELAY_CTL_SOCKET);
	if (n < 0 || (size_t)n >= sizeof sa->sun_path)
		return base_errf(err, "%s/%s: path longer than a UNIX socket allows (%zu bytes)",
		                 dir, RELAY_CTL_SOCKET, sizeof sa->sun_path - 1);
	return 0;
}

int relay_ctl_call(const char *dir, const char *line, struct base_buf *out, struct base_err *err)
{
	struct sockaddr_un sa;
	if (ctl_path(dir, &sa, err) < 0) return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) return base_errf(err, "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int e = errno;
		close(fd);
		if (e == ENOENT || e == ECONNREFUSED) return 0;
		return base_errf(err, "%s: %s", sa.sun_path, strerror(e));
	}
	struct timeval tv = {60, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	size_t len = strlen(line), off = 0;
	while (off < len) {
		ssize_t n = send(fd, line + off, len - off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR) continue;
		if (n <= 0) break; /* the relay may answer a refusal before reading it all */
		off += (size_t)n;
	}
	if (off == len) send(fd, "\n", 1, MSG_NOSIGNAL);
	char chunk[65536];
	for (;;) {
		ssize_t n = recv(fd, chunk, sizeof chunk, 0);
		if (n < 0 && errno == EINTR) continue;
		if (n < 0) {
			int e = errno;
			close(fd);
			return base_errf(err, "%s: %s", sa.sun_path, strerror(e));
		}
		if (n == 0) break;
		base_buf_append(out, chunk, (size_t)n);
	}
	close(fd);
	if (!out->len) return base_errf(err, "%s: the relay closed without a reply", sa.sun_path);
	return 1;
}

/* ---- the daemon side: state ----------------------------------------------- */

#define CTL_CLIENTS    16
#define CTL_TIMEOUT    10
#define CTL_SUSP_BYTES (1u << 20)

/* A hold, with the messages the scheduler parked on it: those it found
 * held, by this hold the longest, when it last looked at them. Invariant:
 * parked[i] has an entry {this hold, i} in its park[] (and only one). */
struct relay_hold {
	enum relay_ctl_kind kind;
	char *name;
	int64_t until; /* 0: until resumed */
	struct rmsg **parked;
	uint32_t nparked, capparked;
};

struct ctl_client {
	struct relay_control *c;
	struct bufferevent *bev;
	struct ctl_client *prev, *next;
};

struct relay_control {
	struct relay_ctx *x;
	struct ctl_client *clist; /* connected clients */
	struct evconnlistener *listener;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char susp_path[4096];
	struct relay_hold **holds; /* each allocated alone: messages point at it */
	size_t nholds;
	unsigned clients;
};

static void json_esc(struct base_buf *b, const char *s)
{
	if (!s) {
		base_buf_puts(b, "null");
		return;
	}
	base_buf_puts(b, "\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			base_buf_printf(b, "\\%c", c);
		else if (c == '\n')
			base_buf_puts(b, "\\n");
		else if (c < 0x20 || c >= 0x7f)
			base_buf_printf(b, "\\u%04x", c);
		else
			base_buf_append(b, s, 1);
	}
	base_buf_puts(b, "\"");
}

static void iso(int64_t t, char *out, size_t n)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The `admin` accounting event: what was done (action), to what (kind,
 * name), and how much it touched. */
static void account_admin(struct relay_ctx *x, const struct relay_ctl_req *q, int64_t until,
                          uint64_t msgs, uint64_t rcpts)
{
	const char *action = op_names[q->op], *kind = kind_names[q->kind];
	if (x->log) {
		struct base_buf b;
		base_buf_init(&b);
		base_buf_printf(
		    &b, "{\"time\":%lld,\"event\":\"admin\",\"action\":", (long long)base_now());
		json_esc(&b, action);
		base_buf_puts(&b, ",\"kind\":");
		json_esc(&b, kind);
		base_buf_puts(&b, ",\"name\":");
		json_esc(&b, q->kind == RELAY_CTL_ALL ? NULL : q->name);
		if (q->op == RELAY_CTL_SUSPEND) {
			char t[32];
			iso(until, t, sizeof t);
			base_buf_puts(&b, ",\"until\":");
			json_esc(&b, until ? t : NULL);
		}
		base_buf_printf(&b, ",\"messages\":%llu,\"recipients\":%llu}\n",
		                (unsigned long long)msgs, (unsigned long long)rcpts);
		fwrite(b.data, 1, b.len, x->log);
		fflush(x->log);
		base_buf_free(&b);
	}
	if (x->csv) {
		char t1[40], diag[RELAY_CTL_NAME_MAX + 64], n[24];
		time_t now = base_now();
		struct tm tm;
		gmtime_r(&now, &tm);
		strftime(t1, sizeof t1, "%Y-%m-%d %H:%M:%S+0000", &tm);
		snprintf(diag, sizeof diag, "%s %s", kind, q->kind == RELAY_CTL_ALL ? "" : q->name);
		snprintf(n, sizeof n, "%llu", (unsigned long long)rcpts);
		const char *row[] = {"a", t1, "", "", "", action, "", diag, "", "", "", n, ""};
		for (size_t i = 0; i < 13; i++) relay_csv_field(x->csv, row[i], i == 12);
		fflush(x->csv);
	}
}

/* ---- holds ------------------------------------------------------------------ */

/* Takes the entry for h out of m's parks. */
static void park_forget(struct rmsg *m, const struct relay_hold *h)
{
	for (uint32_t k = 0; k < m->npark; k++) {
		if (m->park[k].h != h) continue;
		m->park[k] = m->park[--m->npark];
		break;
	}
	if (!m->npark) {
		free(m->park);
		m->park = NULL;
	}
}

void relay_control_park(struct rmsg *m, struct relay_hold *h)
{
	for (uint32_t k = 0; k < m->npark; k++)
		if (m->park[k].h == h) return;
	if (h->nparked == h->capparked) {
		h->capparked = h->capparked ? 2 * h->capparked : 16;
		h->parked = base_xrealloc(h->parked, h->capparked * sizeof *h->parked);
	}
	m->park = base_xrealloc(m->park, (m->npark + 1) * sizeof *m->park);
	m->park[m->npark++] = (struct relay_park){h, h->nparked};
	h->parked[h->nparked++] = m;
}

void relay_control_unpark(struct rmsg *m)
{
	for (uint32_t k = 0; k < m->npark; k++) {
		struct relay_hold *h = m->park[k].h;
		uint32_t pos = m->park[k].pos;
		struct rmsg *last = h->parked[--h->nparked];
		if (pos == h->nparked) continue;
		h->parked[pos] = last;
		for (uint32_t i = 0; i < last->npark; i++)
			if (last->park[i].h == h) last->park[i].pos = pos;
	}
	free(m->park);
	m->park = NULL;
	m->npark = 0;
}

/* Empties h's list of parked messages. */
static void hold_unpark_all(struct relay_hold *h)
{
	for (uint32_t i = 0; i < h->nparked; i++) park_forget(h->parked[i], h);
	free(h->parked);
	h->parked = NULL;
	h->nparked = h->capparked = 0;
}

/* Brings the messages parked on h forward to their due time without the
 * hold: the scheduler looks at them again (and parks those still held). */
static void hold_release(struct relay_ctx *x, struct relay_hold *h)
{
	for (uint32_t i = 0; i < h->nparked; i++) {
		struct rmsg *m = h->parked[i];
		if (m->hidx != RELAY_HEAP_NONE) relay_heap_update(&x->heap, m, relay_msg_due(m));
	}
	hold_unpark_all(h);
}

static void hold_free(struct relay_hold *h)
{
	hold_unpark_all(h);
	free(h->name);
	free(h);
}

int relay_control_check(struct relay_ctx *x, struct base_err *err)
{
	struct relay_control *c = x->ctl;
	uint64_t parks = 0, parked = 0;
	for (size_t i = 0; c && i < c->nholds; i++) {
		const struct relay_hold *h = c->holds[i];
		parked += h->nparked;
		for (uint32_t k = 0; k < h->nparked; k++) {
			const struct rmsg *m = h->parked[k];
			uint32_t found = 0;
			for (uint32_t p = 0; p < m->npark; p++)
				if (m->park[p].h == h && m->park[p].pos == k) found++;
			if (found != 1)
				return base_errf(err,
				                 "message %s is parked on %s %s %u times at %u",
				                 m->id, kind_names[h->kind], h->name, found, k);
		}
	}
	for (const struct rmsg *m = x->msgs; m; m = m->next) parks += m->npark;
	if (parks != parked)
		return base_errf(err, "messages name %llu parks, the holds list %llu",
		                 (unsigned long long)parks, (unsigned long long)parked);
	return 0;
}

static void holds_save(struct relay_control *c)
{
	struct base_buf b;
	base_buf_init(&b);
	base_buf_puts(&b, "");
	int64_t now = base_now();
	for (size_t i = 0; i < c->nholds;) { /* forget the ended ones */
		if (c->holds[i]->until && c->holds[i]->until <= now) {
			hold_free(c->holds[i]); /* its messages are due by its end */
			c->holds[i] = c->holds[--c->nholds];
		} else {
			i++;
		}
	}
	for (size_t i = 0; i < c->nholds; i++) {
		struct relay_hold *h = c->holds[i];
		base_buf_printf(&b, "suspend %s %s", kind_names[h->kind], h->name);
		if (h->until) base_buf_printf(&b, " @%lld", (long long)h->until);
		base_buf_puts(&b, "\n");
	}
	struct base_err err;
	if (base_write_file_atomic(c->susp_path, b.data ? b.data : "", b.len, &err) < 0)
		base_error("suspensions not saved: %s", err.msg);
	base_buf_free(&b);
}

static size_t hold_find(struct relay_control *c, enum relay_ctl_kind k, const char *name)
{
	size_t i;
	for (i = 0; i < c->nholds; i++)
		if (c->holds[i]->kind == k && !strcmp(c->holds[i]->name, name)) break;
	return i;
}

/* Puts a hold in force until `until`; a hold that was already there gives
 * its messages back to the scheduler, to be held to the new end. */
static void hold_set(struct relay_control *c, enum relay_ctl_kind k, const char *name,
                     int64_t until)
{
	size_t i = hold_find(c, k, name);
	if (i == c->nholds) {
		c->holds = base_xrealloc(c->holds, (c->nholds + 1) * sizeof *c->holds);
		struct relay_hold *h = base_xcalloc(1, sizeof *h);
		h->kind = k;
		h->name = base_xstrdup(name);
		c->holds[c->nholds++] = h;
	} else if (c->x) {
		hold_release(c->x, c->holds[i]);
	}
	c->holds[i]->until = until;
}

/* Ends a hold; returns 0 if there is none. Its messages come forward. */
static int hold_clear(struct relay_control *c, enum relay_ctl_kind k, const char *name)
{
	size_t i = hold_find(c, k, name);
	if (i == c->nholds) return 0;
	hold_release(c->x, c->holds[i]);
	hold_free(c->holds[i]);
	c->holds[i] = c->holds[--c->nholds];
	return 1;
}

static void holds_load(struct relay_control *c)
{
	FILE *f = fopen(c->susp_path, "rb");
	if (!f) return;
	char line[RELAY_CTL_LINE_MAX + 2];
	unsigned lineno = 0;
	long total = 0;
	int64_t now = base_now();
	while (fgets(line, sizeof line, f)) {
		lineno++;
		size_t n = strlen(line);
		total += (long)n;
		if (total > (long)CTL_SUSP_BYTES) {
			base_warn("%s:%u: file longer than %u bytes, the rest is ignored",
			          c->susp_path, lineno, CTL_SUSP_BYTES);
			break;
		}
		if (n && line[n - 1] == '\n') {
			line[--n] = 0;
		} else if (!feof(f)) {
			base_warn("%s:%u: line longer than %u bytes, ignored", c->susp_path, lineno,
			          RELAY_CTL_LINE_MAX);
			int ch;
			while ((ch = fgetc(f)) != EOF && ch != '\n') {
			}
			continue;
		}
		struct relay_ctl_req q;
		struct base_err err;
		if (relay_ctl_parse(line, n, &q, &err) < 0) {
			base_warn("%s:%u: %s, ignored", c->susp_path, lineno, err.msg);
			continue;
		}
		if (q.op != RELAY_CTL_SUSPEND || q.secs) {
			base_warn("%s:%u: not a 'suspend KIND NAME [@UNIXTIME]' line, ignored",
			          c->susp_path, lineno);
			continue;
		}
		if (q.until && q.until <= now) continue;
		hold_set(c, q.kind, q.name, q.until);
	}
	fclose(f);
	if (c->nholds) base_info("%zu suspensions restored from %s", c->nholds, c->susp_path);
}

static int name_eq(const char *a, const char *b)
{
	return a && b && !base_strcasecmp_ascii(a, b);
}

int64_t relay_control_held(struct relay_ctx *x, const struct rmsg *m, const char *addr,
                           const struct dest *d, int64_t now, struct relay_hold **by)
{
	struct relay_control *c = x->ctl;
	if (by) *by = NULL;
	if (!c || !c->nholds) return 0;
	int64_t held = 0;
	char site[300];
	const char *s = NULL;
	for (size_t i = 0; i < c->nholds; i++) {
		struct relay_hold *h = c->holds[i];
		if (h->until && h->until <= now) continue;
		int match = 0;
		if (h->kind == RELAY_CTL_DOMAIN)
			match = name_eq(smtp_path_domain(addr), h->name);
		else if (h->kind == RELAY_CTL_POOL)
			match = m->pool && !strcmp(m->pool, h->name);
		else if (h->kind == RELAY_CTL_ACCOUNT)
			match = m->account && !strcmp(m->account, h->name);
		else if (h->kind == RELAY_CTL_SITE) {
			if (!s) s = relay_site(x, m, addr, site, sizeof site);
			match = s && !strcmp(s, h->name);
		}
		(void)d;
		if (!match) continue;
		int64_t u = h->until ? h->until : INT64_MAX;
		if (u > held) {
			held = u;
			if (by) *by = h;
		}
	}
	return held;
}

/* ---- summary ------------------------------------------------------------------ */

/* Counts by name, in a small open-addressing table (a queue may hold many
 * domains). A table of domains (fold) keeps its names in lower case. */
struct agg_ent {
	char *name; /* NULL: empty slot; "" stands for none (no pool, no account) */
	uint64_t msgs, rcpts, deferred;
	uint64_t last; /* the last message counted, so that msgs counts each once */
};

struct agg {
	struct agg_ent *v;
	size_t n, cap;
	int fold;
};

static uint64_t hash_str(const char *s, int fold)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++) h = (h ^ (unsigned char)(fold ? base_lower(*s) : *s)) * 1099511628211ull;
	return h;
}

static int name_is(const char *a, const char *b, int fold)
{
	return fold ? !base_strcasecmp_ascii(a, b) : !strcmp(a, b);
}

static struct agg_ent *agg_get(struct agg *a, const char *name)
{
	if (!name) name = "";
	if (2 * (a->n + 1) > a->cap) {
		struct agg old = *a;
		a->cap = a->cap ? 2 * a->cap : 64;
		a->v = base_xcalloc(a->cap, sizeof *a->v);
		a->n = 0;
		for (size_t i = 0; i < old.cap; i++)
			if (old.v[i].name) {
				size_t k = hash_str(old.v[i].name, a->fold) & (a->cap - 1);
				while (a->v[k].name) k = (k + 1) & (a->cap - 1);
				a->v[k] = old.v[i];
				a->n++;
			}
		free(old.v);
	}
	size_t k = hash_str(name, a->fold) & (a->cap - 1);
	while (a->v[k].name && !name_is(a->v[k].name, name, a->fold)) k = (k + 1) & (a->cap - 1);
	if (!a->v[k].name) {
		a->v[k].name = base_xstrdup(name);
		if (a->fold)
			for (char *p = a->v[k].name; *p; p++) *p = base_lower(*p);
		a->n++;
	}
	return &a->v[k];
}

/* One pending recipient of message number msgno. */
static void agg_add(struct agg *a, const char *name, uint64_t msgno, int deferred)
{
	struct agg_ent *e = agg_get(a, name);
	if (e->last != msgno) e->msgs++, e->last = msgno;
	e->rcpts++;
	if (deferred) e->deferred++;
}

/* Counts of a tally cell. */
static void agg_put(struct agg *a, const char *name, const struct relay_cell *c)
{
	struct agg_ent *e = agg_get(a, name);
	e->msgs += c->msgs;
	e->rcpts += c->rcpts;
	e->deferred += c->deferred;
}

static int cmp_ent(const void *p, const void *q)
{
	const struct agg_ent *a = p, *b = q;
	if (a->rcpts != b->rcpts) return a->rcpts > b->rcpts ? -1 : 1;
	return strcmp(a->name, b->name);
}

/* Writes "key":[{"<field>":name,"messages":..,"recipients":..,"deferred":..}]
 * and the same as text lines; frees the table. */
static void agg_out(struct agg *a, const char *key, const char *field, struct base_buf *j,
                    struct base_buf *t)
{
	size_t n = 0;
	for (size_t i = 0; i < a->cap; i++)
		if (a->v[i].name) a->v[n++] = a->v[i];
	base_sort(a->v, n, sizeof *a->v, cmp_ent);
	base_buf_printf(j, ",\"%s\":[", key);
	base_buf_printf(t, "by %s:\n", field);
	for (size_t i = 0; i < n; i++) {
		struct agg_ent *e = &a->v[i];
		base_buf_printf(j, "%s{\"%s\":", i ? "," : "", field);
		json_esc(j, e->name[0] ? e->name : NULL);
		base_buf_printf(j, ",\"messages\":%llu,\"recipients\":%llu,\"deferred\":%llu}",
		                (unsigned long long)e->msgs, (unsigned long long)e->rcpts,
		                (unsigned long long)e->deferred);
		base_buf_printf(t, "  %-40s %8llu messages %8llu recipients %8llu deferred\n",
		                e->name[0] ? e->name : "(none)", (unsigned long long)e->msgs,
		                (unsigned long long)e->rcpts, (unsigned long long)e->deferred);
		free(e->name);
	}
	base_buf_puts(j, "]");
	free(a->v);
	memset(a, 0, sizeof *a);
}

/* One entry of the `held` list: d as a whole (source NULL), or one of its
 * source addresses, with its back-off or suspend rule and its rules in
 * force. */
static void held_one(const struct dest *d, const char *source, int64_t susp_until,
                     const struct relay_limits *cut, int64_t cut_until, const char *cut_rule,
                     int64_t now, size_t *n, struct base_buf *j, struct base_buf *t)
{
	int susp = susp_until > now, in_force = cut->set && cut_until > now;
	if (!susp && !in_force) return;
	char hp[300], u[32];
	snprintf(hp, sizeof hp, "%s:%u", d->host, d->port);
	base_buf_printf(j, "%s{\"site\":", (*n)++ ? "," : "");
	json_esc(j, hp);
	base_buf_puts(j, ",\"pool\":");
	json_esc(j, d->pool ? d->pool->name : NULL);
	base_buf_puts(t, "  ");
	base_buf_puts(t, hp);
	if (d->pool) base_buf_printf(t, " (pool %s)", d->pool->name);
	if (source) {
		/* only this source address is held back */
		base_buf_puts(j, ",\"source\":");
		json_esc(j, source);
		base_buf_printf(t, " source %s", source);
	}
	base_buf_puts(j, ",\"suspended_until\":");
	if (susp) iso(susp_until, u, sizeof u);
	json_esc(j, susp ? u : NULL);
	if (susp) base_buf_printf(t, " suspended until %s", u);
	base_buf_puts(j, ",\"throttle\":");
	if (!in_force) {
		base_buf_puts(j, "null}");
		base_buf_puts(t, "\n");
		return;
	}
	iso(cut_until, u, sizeof u);
	base_buf_puts(j, "{\"rule\":");
	json_esc(j, cut_rule);
	base_buf_puts(j, ",\"until\":");
	json_esc(j, u);
	base_buf_printf(t, " throttle %s until %s:", cut_rule ? cut_rule : "-", u);
	static const struct {
		unsigned bit;
		const char *json, *text;
		size_t off;
	} f[] = {
	    {RELAY_LIM_CONN, "conn_limit", "conn-limit", offsetof(struct relay_limits, conn_limit)},
	    {RELAY_LIM_MPC, "msgs_per_conn", "msgs-per-conn",
	     offsetof(struct relay_limits, msgs_per_conn)},
	    {RELAY_LIM_MPS, "msgs_per_sec", "msgs-per-sec",
	     offsetof(struct relay_limits, msgs_per_sec)},
	    {RELAY_LIM_CPM, "conns_per_min", "conns-per-min",
	     offsetof(struct relay_limits, conns_per_min)},
	};
	for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
		if (!(cut->set & f[i].bit)) continue;
		uint32_t v;
		memcpy(&v, (const char *)cut + f[i].off, sizeof v);
		base_buf_printf(j, ",\"%s\":%u", f[i].json, v);
		base_buf_printf(t, " %s %u", f[i].text, v);
	}
	base_buf_puts(j, "}}");
	base_buf_puts(t, "\n");
}

/* Destinations the relay itself holds back: a back-off after a 4xx
 * greeting or a 421, suspend rules, or [throttle] rules in force
 * (throttle.c), on the whole destination or on one of its sources. */
static void held_out(struct relay_ctx *x, int64_t now, struct base_buf *j, struct base_buf *t)
{
	base_buf_puts(j, ",\"held\":[");
	base_buf_puts(t, "held by the relay:\n");
	size_t n = 0;
	for (struct dest *d = x->dests; d; d = d->next) {
		held_one(d, NULL, d->suspended_until, &d->cut, d->cut_until, d->cut_rule, now, &n,
		         j, t);
		for (size_t i = 0; d->pool && i < d->nsrc; i++) {
			const struct dest_src *s = &d->src[i];
			held_one(d, d->pool->src[i].ip, s->suspended_until, &s->cut, s->cut_until,
			         s->cut_rule, now, &n, j, t);
		}
	}
	base_buf_puts(j, "]");
}

/* What the summary reports, before it is written out. */
struct summary {
	struct agg dom, site, pool, acct;
	uint64_t msgs, rcpts;
	int64_t oldest;
	int any; /* oldest is set */
};

static void summary_init(struct summary *s)
{
	memset(s, 0, sizeof *s);
	s->dom.fold = 1;
}

/* The summary from the queue itself: every recipient of every message.
 * O(messages); kept as the reference the counters are checked against. */
static void summary_walk(struct relay_ctx *x, struct summary *s)
{
	uint64_t msgno = 0;
	char sb[300], dom[SMTP_PATH_MAX + 1];
	for (struct rmsg *m = x->msgs; m; m = m->next) {
		if (!m->live) continue;
		s->msgs++, msgno++;
		if (!s->any || m->received < s->oldest) s->oldest = m->received, s->any = 1;
		for (uint32_t i = 0; i < m->nrcpt; i++) {
			struct rrcpt *r = &m->rcpt[i];
			if (r->state != RELAY_RCPT_PENDING) continue;
			s->rcpts++;
			int def = r->attempts > 0;
			snprintf(dom, sizeof dom, "%s", smtp_path_domain(r->addr));
			for (char *p = dom; *p; p++) *p = base_lower(*p);
			agg_add(&s->dom, dom, msgno, def);
			const char *st = relay_site_domain(x, m->pool, dom, m->id, sb, sizeof sb);
			agg_add(&s->site, st ? st : "", msgno, def);
			agg_add(&s->pool, m->pool, msgno, def);
			agg_add(&s->acct, m->account, msgno, def);
		}
	}
}

static int cmp_cellno(const void *p, const void *q)
{
	uint32_t a = *(const uint32_t *)p, b = *(const uint32_t *)q;
	return a < b ? -1 : a > b;
}

static int cmp_strp(const void *p, const void *q)
{
	return strcmp(*(const char *const *)p, *(const char *const *)q);
}

/* A message whose pending recipients span k > 1 cells was counted k times
 * by its pool and its account, and j times by a site that j of those cells
 * go to: count it once. */
static void uncount_multi(struct relay_ctx *x, struct summary *s, const struct rmsg *m,
                          char **site_of)
{
	uint32_t *cells = base_xmalloc(m->nrcpt * sizeof *cells), k = 0;
	for (uint32_t i = 0; i < m->nrcpt; i++)
		if (m->rcpt[i].cell != RELAY_CELL_NONE) cells[k++] = m->rcpt[i].cell;
	base_sort(cells, k, sizeof *cells, cmp_cellno);
	uint32_t u = 0;
	for (uint32_t i = 0; i < k; i++)
		if (!u || cells[u - 1] != cells[i]) cells[u++] = cells[i];
	agg_get(&s->pool, m->pool)->msgs -= u - 1;
	agg_get(&s->acct, m->account)->msgs -= u - 1;
	const char **names = base_xmalloc(u * sizeof *names);
	for (uint32_t i = 0; i < u; i++) names[i] = site_of[cells[i]];
	base_sort(names, u, sizeof *names, cmp_strp);
	for (uint32_t i = 1; i < u; i++)
		if (!strcmp(names[i - 1], names[i])) agg_get(&s->site, names[i])->msgs--;
	free(names);
	free(cells);
	(void)x;
}

/* The summary from the counters (tally.c): O(cells + messages whose
 * recipients span cells), whatever the length of the queue. A cell's site
 * is asked once, for its domain and pool. */
static void summary_tally(struct relay_ctx *x, struct summary *s)
{
	const struct relay_tally *t = &x->tally;
	s->msgs = t->msgs;
	s->rcpts = t->rcpts;
	s->any = relay_tally_oldest(t, &s->oldest);
	char **site_of = base_xcalloc(t->ncells + 1, sizeof *site_of);
	char sb[300];
	for (uint32_t i = 0; i < t->ncells; i++) {
		const struct relay_cell *c = &t->cells[i];
		if (!c->domain) continue;
		agg_put(&s->dom, c->domain, c);
		agg_put(&s->pool, c->pool, c);
		agg_put(&s->acct, c->account, c);
		const char *st = relay_site_domain(x, c->pool, c->domain, NULL, sb, sizeof sb);
		site_of[i] = base_xstrdup(st ? st : "");
		agg_put(&s->site, site_of[i], c);
	}
	for (size_t i = 0; i < t->nmulti; i++) uncount_multi(x, s, t->multi[i], site_of);
	for (uint32_t i = 0; i < t->ncells; i++) free(site_of[i]);
	free(site_of);
}

/* Writes the summary's reply (and frees s's tables). */
static void summary_out(struct relay_control *c, struct summary *s, struct base_buf *j)
{
	uint64_t msgs = s->msgs, rcpts = s->rcpts;
	int64_t oldest = s->oldest;
	char t[32] = "-";
	if (s->any) iso(oldest, t, sizeof t);
	struct base_buf txt;
	base_buf_init(&txt);
	base_buf_printf(&txt, "%llu messages, %llu recipients pending, oldest %s\n",
	                (unsigned long long)msgs, (unsigned long long)rcpts, t);
	base_buf_printf(j,
	                "{\"ok\":true,\"source\":\"relay\",\"total\":{\"messages\":%llu,"
	                "\"recipients\":%llu,\"oldest\":",
	                (unsigned long long)msgs, (unsigned long long)rcpts);
	json_esc(j, s->any ? t : NULL);
	base_buf_puts(j, "}");
	agg_out(&s->dom, "domains", "domain", j, &txt);
	agg_out(&s->site, "sites", "site", j, &txt);
	agg_out(&s->pool, "pools", "pool", j, &txt);
	agg_out(&s->acct, "accounts", "account", j, &txt);
	base_buf_puts(j, ",\"suspended\":[");
	base_buf_puts(&txt, "suspended:\n");
	int64_t now = base_now();
	size_t n = 0;
	for (size_t i = 0; i < c->nholds; i++) {
		struct relay_hold *h = c->holds[i];
		if (h->until && h->until <= now) continue;
		char u[32] = "until resumed";
		if (h->until) iso(h->until, u, sizeof u);
		base_buf_printf(j, "%s{\"kind\":\"%s\",\"name\":", n++ ? "," : "",
		                kind_names[h->kind]);
		json_esc(j, h->name);
		base_buf_puts(j, ",\"until\":");
		json_esc(j, h->until ? u : NULL);
		base_buf_puts(j, "}");
		base_buf_printf(&txt, "  %s %s %s\n", kind_names[h->kind], h->name, u);
	}
	base_buf_puts(j, "]");
	held_out(c->x, now, j, &txt);
	base_buf_puts(j, ",\"text\":");
	json_esc(j, txt.data ? txt.data : "");
	base_buf_puts(j, "}\n");
	base_buf_free(&txt);
}

static void refuse(struct base_buf *j, const char *why);

static void do_summary(struct relay_control *c, struct base_buf *j)
{
	struct summary s;
	summary_init(&s);
	summary_tally(c->x, &s);
	if (!c->x->verify) {
		summary_out(c, &s, j);
		return;
	}
	/* tests: the same summary from a walk of the queue, or a refusal */
	struct summary w;
	summary_init(&w);
	summary_walk(c->x, &w);
	struct base_buf jw;
	base_buf_init(&jw);
	summary_out(c, &s, j);
	summary_out(c, &w, &jw);
	if (j->len != jw.len || memcmp(j->data, jw.data, j->len)) {
		base_error("queue summary from the counters: %.*s", (int)j->len, j->data);
		base_error("queue summary from the queue:    %.*s", (int)jw.len, jw.data);
		j->len = 0;
		refuse(j, "the summary from the counters differs from a walk of the queue");
	}
	base_buf_free(&jw);
}

static void do_list(struct relay_control *c, const struct relay_ctl_req *q, struct base_buf *j)
{
	if (q->after > c->x->order.seq) { /* a cursor of an earlier run, most likely */
		char e[160];
		snprintf(e, sizeof e,
		         "list after %llu: not a cursor of this relay (it has numbered %llu "
		         "messages since it started)",
		         (unsigned long long)q->after, (unsigned long long)c->x->order.seq);
		refuse(j, e);
		return;
	}
	struct base_buf txt;
	base_buf_init(&txt);
	base_buf_puts(j, "{\"ok\":true,\"source\":\"relay\",\"messages\":[");
	uint32_t n = 0;
	uint64_t lines = 0; /* recipients listed */
	uint64_t last = 0;  /* the number of the last message listed */
	int more = 0;
	/* the newest first, from the entry below the cursor */
	const struct relay_order *o = &c->x->order;
	size_t at = q->after ? relay_order_below(o, q->after) : o->n;
	while (at > 0) {
		const struct relay_order_ent *e = &o->v[--at];
		struct rmsg *m = e->m;
		if (!m || !m->live) continue;
		if (n == q->limit || (n && lines + m->live > RELAY_CTL_LIST_MAX)) {
			more = 1;
			break;
		}
		lines += m->live;
		last = e->seq;
		char t[32];
		iso(m->received, t, sizeof t);
		base_buf_printf(j, "%s{\"id\":", n++ ? "," : "");
		json_esc(j, m->id);
		base_buf_puts(j, ",\"sender\":");
		json_esc(j, m->sender);
		base_buf_printf(j, ",\"received\":\"%s\",\"size\":%u,\"account\":", t, m->loc.len);
		json_esc(j, m->account);
		base_buf_puts(j, ",\"pool\":");
		json_esc(j, m->pool);
		base_buf_puts(j, ",\"rcpts\":[");
		base_buf_printf(&txt, "%s  %s  <%s>  %u bytes\n", m->id, t, m->sender, m->loc.len);
		int first = 1;
		for (uint32_t i = 0; i < m->nrcpt; i++) {
			struct rrcpt *r = &m->rcpt[i];
			if (r->state != RELAY_RCPT_PENDING) continue;
			char nx[32] = "now";
			if (r->next) iso(r->next, nx, sizeof nx);
			base_buf_printf(j, "%s{\"rcpt\":", first ? "" : ",");
			json_esc(j, r->addr);
			base_buf_printf(j, ",\"attempts\":%u,\"next\":\"%s\",\"busy\":%s}",
			                r->attempts, nx, r->busy ? "true" : "false");
			base_buf_printf(&txt, "    %s  attempts %u  next %s%s\n", r->addr,
			                r->attempts, nx, r->busy ? "  (being delivered)" : "");
			first = 0;
		}
		base_buf_puts(j, "]}");
	}
	if (more)
		base_buf_printf(&txt, "(more: %u shown; the next ones with --after %llu)\n", n,
		                (unsigned long long)last);
	base_buf_printf(j, "],\"truncated\":%s,\"next\":", more ? "true" : "false");
	if (more)
		base_buf_printf(j, "%llu", (unsigned long long)last);
	else
		base_buf_puts(j, "null");
	base_buf_puts(j, ",\"text\":");
	json_esc(j, txt.data ? txt.data : "");
	base_buf_puts(j, "}\n");
	base_buf_free(&txt);
}

/* ---- actions ------------------------------------------------------------------ */

/* Whether recipient r of m is selected by q (bounce and retry). */
static int selects(const struct relay_ctl_req *q, const struct rmsg *m, const struct rrcpt *r)
{
	if (q->kind == RELAY_CTL_ALL) return 1;
	if (q->kind == RELAY_CTL_ID) return !strcmp(m->id, q->name);
	if (q->kind == RELAY_CTL_ACCOUNT) return m->account && !strcmp(m->account, q->name);
	return name_eq(smtp_path_domain(r->addr), q->name);
}

/* Returns jobs waiting for a connection whose mail is now held to the
 * queue (nothing was attempted for them). */
static void drain_held(struct relay_ctx *x)
{
	int64_t now = base_now();
	for (struct dest *d = x->dests; d; d = d->next) {
		struct job *keep = NULL, *tail = NULL, *j, *back = NULL;
		uint32_t n = 0;
		while ((j = relay_job_take(d))) {
			int held = 0;
			for (uint32_t i = 0; i < j->n && !held; i++)
				held = relay_control_held(x, j->m, j->m->rcpt[j->idx[i]].addr, d,
				                          now, NULL) != 0;
			if (held) {
				j->next = back;
				back = j;
				continue;
			}
			if (tail)
				tail->next = j;
			else
				keep = j;
			tail = j;
			n++;
		}
		d->head = keep, d->tail = tail, d->njobs = n;
		while ((j = back)) {
			back = j->next;
			relay_job_free(x, j);
		}
	}
}

static void do_hold(struct relay_control *c, const struct relay_ctl_req *q, struct base_buf *j)
{
	struct relay_ctx *x = c->x;
	int64_t until = 0;
	if (q->op == RELAY_CTL_SUSPEND) {
		until = q->until ? q->until : q->secs ? base_now() + q->secs : 0;
		hold_set(c, q->kind, q->name, until);
		drain_held(x);
	} else if (!hold_clear(c, q->kind, q->name)) {
		base_buf_printf(j, "{\"ok\":false,\"error\":");
		char e[RELAY_CTL_NAME_MAX + 64];
		snprintf(e, sizeof e, "%s %s is not suspended", kind_names[q->kind], q->name);
		json_esc(j, e);
		base_buf_puts(j, "}\n");
		return;
	} else {
		/* hold_clear brought the messages parked on it forward */
		relay_kick(x);
	}
	holds_save(c);
	account_admin(x, q, until, 0, 0);
	char msg[RELAY_CTL_NAME_MAX + 128], u[32] = "until resumed";
	if (until) iso(until, u + 6, sizeof u - 6), memcpy(u, "until ", 6);
	if (q->op == RELAY_CTL_SUSPEND)
		snprintf(msg, sizeof msg, "%s %s suspended %s", kind_names[q->kind], q->name, u);
	else
		snprintf(msg, sizeof msg, "%s %s resumed", kind_names[q->kind], q->name);
	base_info("control: %s", msg);
	base_buf_puts(j, "{\"ok\":true,\"message\":");
	json_esc(j, msg);
	base_buf_puts(j, "}\n");
}

/* Bounces or retries the recipients of m that q selects, and reschedules
 * m (which may free it). */
static void touch(struct relay_ctx *x, const struct relay_ctl_req *q, struct rmsg *m, int64_t now,
                  uint64_t *msgs, uint64_t *rcpts, uint64_t *busy)
{
	uint64_t touched = 0;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		struct rrcpt *r = &m->rcpt[i];
		if (r->state != RELAY_RCPT_PENDING || !selects(q, m, r)) continue;
		if (r->busy) { /* in a transaction right now: its outcome decides */
			(*busy)++;
			continue;
		}
		touched++;
		if (q->op == RELAY_CTL_BOUNCE)
			relay_admin_bounce(x, m, i,
			                   "550 5.0.0 Bounced by the relay's administrator");
		else if (r->next > now)
			r->next = now;
	}
	if (touched) (*msgs)++, *rcpts += touched;
	relay_resched(x, m);
}

static void do_bounce_retry(struct relay_control *c, const struct relay_ctl_req *q,
                            struct base_buf *j)
{
	struct relay_ctx *x = c->x;
	int64_t now = base_now();
	uint64_t msgs = 0, rcpts = 0, busy = 0;
	if (q->kind == RELAY_CTL_ID) {
		struct rmsg *m = relay_index_get(&x->index, q->name);
		if (m && m->live) touch(x, q, m, now, &msgs, &rcpts, &busy);
	} else {
		struct rmsg *next;
		/* messages added meanwhile (DSNs) go to the head of the list, behind us */
		for (struct rmsg *m = x->msgs; m; m = next) {
			next = m->next;
			if (m->live) touch(x, q, m, now, &msgs, &rcpts, &busy);
		}
	}
	if (q->kind == RELAY_CTL_ID && !msgs && !busy) {
		base_buf_puts(j, "{\"ok\":false,\"error\":");
		char e[RELAY_CTL_NAME_MAX + 64];
		snprintf(e, sizeof e, "no queued message %s", q->name);
		json_esc(j, e);
		base_buf_puts(j, "}\n");
		return;
	}
	account_admin(x, q, 0, msgs, rcpts);
	relay_kick(x);
	char msg[RELAY_CTL_NAME_MAX + 160];
	snprintf(msg, sizeof msg, "%s %s%s%s: %llu recipients in %llu messages%s", op_names[q->op],
	         kind_names[q->kind], q->kind == RELAY_CTL_ALL ? "" : " ", q->name,
	         (unsigned long long)rcpts, (unsigned long long)msgs,
	         busy ? " (some being delivered right now were left to their outcome)" : "");
	base_info("control: %s", msg);
	base_buf_printf(j,
	                "{\"ok\":true,\"messages\":%llu,\"recipients\":%llu,\"busy\":%llu,"
	                "\"message\":",
	                (unsigned long long)msgs, (unsigned long long)rcpts,
	                (unsigned long long)busy);
	json_esc(j, msg);
	base_buf_puts(j, "}\n");
}

/* ---- the socket ----------------------------------------------------------------- */

static void refuse(struct base_buf *j, const char *why)
{
	base_buf_puts(j, "{\"ok\":false,\"error\":");
	char e[sizeof(((struct base_err *)0)->msg) + 16];
	snprintf(e, sizeof e, "control: %s", why);
	json_esc(j, e);
	base_buf_puts(j, "}\n");
}

static void client_free(struct bufferevent *bev, void *arg)
{
	struct ctl_client *k = arg;
	struct relay_control *c = k->c;
	if (k->prev)
		k->prev->next = k->next;
	else
		c->clist = k->next;
	if (k->next) k->next->prev = k->prev;
	bufferevent_free(bev);
	free(k);
	c->clients--;
}

static void on_written(struct bufferevent *bev, void *arg)
{
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) client_free(bev, arg);
}

static void on_write_error(struct bufferevent *bev, short what, void *arg)
{
	client_free(bev, arg);
}

static void answer(struct bufferevent *bev, struct ctl_client *k, struct base_buf *j)
{
	bufferevent_disable(bev, EV_READ);
	bufferevent_setcb(bev, NULL, on_written, on_write_error, k);
	bufferevent_write(bev, j->data, j->len);
	base_buf_free(j);
}

static void handle(struct relay_control *c, const char *line, size_t len, struct base_buf *j)
{
	struct relay_ctl_req q;
	struct base_err err;
	if (relay_ctl_parse(line, len, &q, &err) < 0) {
		refuse(j, err.msg);
		return;
	}
	switch (q.op) {
	case RELAY_CTL_SUMMARY:
		do_summary(c, j);
		break;
	case RELAY_CTL_LIST:
		do_list(c, &q, j);
		break;
	case RELAY_CTL_SUSPEND:
	case RELAY_CTL_RESUME:
		do_hold(c, &q, j);
		break;
	case RELAY_CTL_BOUNCE:
	case RELAY_CTL_RETRY:
		do_bounce_retry(c, &q, j);
		break;
	}
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct ctl_client *k = arg;
	struct relay_control *c = k->c;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct base_buf j;
	base_buf_init(&j);
	size_t eol_len = 0;
	struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
	if (p.pos < 0) {
		if (evbuffer_get_length(in) > RELAY_CTL_LINE_MAX + 1) {
			refuse(&j, "request longer than 1024 bytes");
			answer(bev, k, &j);
		}
		return;
	}
	if ((size_t)p.pos > RELAY_CTL_LINE_MAX + 1) {
		refuse(&j, "request longer than 1024 bytes");
		answer(bev, k, &j);
		return;
	}
	char line[RELAY_CTL_LINE_MAX + 2];
	evbuffer_remove(in, line, (size_t)p.pos);
	handle(c, line, (size_t)p.pos, &j);
	answer(bev, k, &j);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct ctl_client *k = arg;
	if (what & BEV_EVENT_EOF) {
		struct base_buf j;
		base_buf_init(&j);
		refuse(&j, "request not ended by a newline");
		answer(bev, k, &j);
		return;
	}
	client_free(bev, arg);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
	struct relay_control *c = arg;
	struct bufferevent *bev = bufferevent_socket_new(c->x->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!bev) {
		evutil_closesocket(fd);
		return;
	}
	struct ctl_client *k = base_xcalloc(1, sizeof *k);
	k->c = c, k->bev = bev;
	k->next = c->clist;
	if (c->clist) c->clist->prev = k;
	c->clist = k;
	c->clients++;
	if (c->clients > CTL_CLIENTS) {
		struct base_buf j;
		base_buf_init(&j);
		refuse(&j, "too many control clients");
		answer(bev, k, &j);
		bufferevent_enable(bev, EV_WRITE);
		return;
	}
	struct timeval tv = {CTL_TIMEOUT, 0};
	bufferevent_set_timeouts(bev, &tv, &tv);
	bufferevent_setwatermark(bev, EV_READ, 0, RELAY_CTL_LINE_MAX + 2);
	bufferevent_setcb(bev, on_read, NULL, on_event, k);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

int relay_control_start(struct relay_ctx *x, struct base_err *err)
{
	struct relay_control *c = base_xcalloc(1, sizeof *c);
	c->x = x;
	x->ctl = c;
	snprintf(c->susp_path, sizeof c->susp_path, "%s/%s", x->cfg->spool, RELAY_CTL_SUSPENDED);
	holds_load(c);
	struct sockaddr_un sa;
	struct base_err e2;
	if (ctl_path(x->cfg->spool, &sa, &e2) < 0) {
		/* suspensions still hold; `mailrep queue` reads the spool offline */
		base_warn("no control socket: %s", e2.msg);
		return 0;
	}
	snprintf(c->path, sizeof c->path, "%s", sa.sun_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) return base_errf(err, "control socket: %s", strerror(errno));
	/* a socket that still answers belongs to another relay on this spool;
	 * one that does not was left by a crash and is replaced */
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (probe >= 0) {
		int live =
		    connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0 || errno == EAGAIN;
		close(probe);
		if (live) {
			close(fd);
			return base_errf(err, "%s: another relay is running on this spool",
			                 c->path);
		}
	}
	if (unlink(c->path) < 0 && errno != ENOENT) {
		close(fd);
		return base_errf(err, "%s: %s", c->path, strerror(errno));
	}
	mode_t old = umask(0177);
	int b = bind(fd, (struct sockaddr *)&sa, sizeof sa);
	umask(old);
	if (b < 0 || chmod(c->path, 0600) < 0) {
		int e = errno;
		close(fd);
		return base_errf(err, "%s: %s", c->path, strerror(e));
	}
	c->listener = evconnlistener_new(x->base, on_accept, c,
	                                 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16, fd);
	if (!c->listener) {
		close(fd);
		unlink(c->path);
		return base_errf(err, "%s: cannot listen", c->path);
	}
	return 0;
}

void relay_control_stop(struct relay_ctx *x)
{
	struct relay_control *c = x->ctl;
	if (!c) return;
	if (c->listener) {
		evconnlistener_free(c->listener);
		unlink(c->path);
	}
	while (c->clist) client_free(c->clist->bev, c->clist);
	for (size_t i = 0; i < c->nholds; i++) hold_free(c->holds[i]);
	free(c->holds);
	free(c);
	x->ctl = NULL;
}
