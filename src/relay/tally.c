/*
 * tally.c — the queue's counters, kept as mail comes and goes, so that
 * `mailrep queue` (control.c) costs time in the number of groups it
 * reports, not in the number of queued messages.
 *
 * A *cell* counts the pending recipients of one domain (lower case) in
 * mail of one pool and one account: how many, how many already tried
 * (deferred), and in how many messages. Every pending recipient names its
 * cell (rrcpt.cell); the summary by domain, pool, account and site adds
 * cells up. A message's recipients share its pool and account, so its
 * recipients in one domain are in one cell: a domain's message count is
 * the sum of its cells'. A message with pending recipients in several
 * cells would be counted once per cell by a pool, an account or a site;
 * such messages are kept in a list (`multi`), which the summary walks to
 * take the extra counts off. Bulk mail has one recipient, or one domain,
 * per message, so the list is short.
 *
 * The oldest pending message is the top of a binary min-heap of live
 * messages keyed by their reception time.
 *
 * Invariants (relay_tally_check verifies them against the queue):
 *  - a recipient has cell != RELAY_CELL_NONE exactly when it is PENDING,
 *    and that cell's key is its domain (lower case), pool and account;
 *  - a cell's rcpts, deferred (attempts > 0) and msgs are those of the
 *    pending recipients naming it; a cell with no recipient is free (its
 *    domain is NULL and it is on the free list);
 *  - msgs and rcpts are the live messages (live > 0) and their pending
 *    recipients; a message is in the heap (oidx) exactly when live > 0;
 *  - a message is in multi (midx) exactly when its pending recipients
 *    name more than one cell.
 *
 * Every change goes through four calls: relay_tally_msg_in when a message
 * enters the queue (its states set), relay_tally_tried after a pending
 * recipient's attempts grew, relay_tally_rcpt_out after a recipient became
 * final (state set, live decremented), and relay_tally_msg_out before a
 * message is freed.
 */
#include <stdlib.h>
#include <string.h>

#include "relay/int.h"
#include "smtp/smtp.h"

/* ---- cells ------------------------------------------------------------------ */

static uint64_t cell_hash(const char *domain, size_t len, const char *pool, const char *account)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)base_lower(domain[i])) * 1099511628211ull;
	h ^= (uint64_t)(uintptr_t)pool * 0x9e3779b97f4a7c15ull;
	h ^= (uint64_t)(uintptr_t)account * 0xc2b2ae3d27d4eb4full;
	return h ^ (h >> 29);
}

static int cell_is(const struct relay_cell *c, const char *domain, size_t len, const char *pool,
                   const char *account)
{
	if (c->pool != pool || c->account != account || strlen(c->domain) != len) return 0;
	for (size_t i = 0; i < len; i++)
		if (c->domain[i] != base_lower(domain[i])) return 0;
	return 1;
}

static void rehash(struct relay_tally *t)
{
	uint32_t n = t->nbuckets ? 2 * t->nbuckets : 256;
	free(t->buckets);
	t->buckets = base_xcalloc(n, sizeof *t->buckets);
	t->nbuckets = n;
	for (uint32_t i = 0; i < t->ncells; i++) {
		struct relay_cell *c = &t->cells[i];
		if (!c->domain) continue;
		uint32_t b =
		    (uint32_t)(cell_hash(c->domain, strlen(c->domain), c->pool, c->account) &
		               (n - 1));
		c->chain = t->buckets[b];
		t->buckets[b] = i + 1;
	}
}

/* The cell of a recipient with this domain in mail of this pool and account. */
static uint32_t cell_get(struct relay_tally *t, const char *domain, const char *pool,
                         const char *account)
{
	size_t len = strlen(domain);
	if (t->nbuckets) {
		uint32_t b = (uint32_t)(cell_hash(domain, len, pool, account) & (t->nbuckets - 1));
		for (uint32_t k = t->buckets[b]; k; k = t->cells[k - 1].chain)
			if (cell_is(&t->cells[k - 1], domain, len, pool, account)) return k - 1;
	}
	uint32_t i;
	if (t->free) {
		i = t->free - 1;
		t->free = t->cells[i].chain;
	} else {
		if (t->ncells == t->cap) {
			t->cap = t->cap ? 2 * t->cap : 64;
			t->cells = base_xrealloc(t->cells, t->cap * sizeof *t->cells);
		}
		i = t->ncells++;
	}
	struct relay_cell *c = &t->cells[i];
	memset(c, 0, sizeof *c);
	c->domain = base_xmalloc(len + 1);
	for (size_t k = 0; k <= len; k++) c->domain[k] = base_lower(domain[k]);
	c->pool = pool;
	c->account = account;
	if (++t->used > t->nbuckets) {
		rehash(t); /* links c too */
	} else {
		uint32_t b = (uint32_t)(cell_hash(domain, len, pool, account) & (t->nbuckets - 1));
		c->chain = t->buckets[b];
		t->buckets[b] = i + 1;
	}
	return i;
}

static void cell_put(struct relay_tally *t, uint32_t i)
{
	struct relay_cell *c = &t->cells[i];
	uint32_t b = (uint32_t)(cell_hash(c->domain, strlen(c->domain), c->pool, c->account) &
	                        (t->nbuckets - 1));
	uint32_t *p = &t->buckets[b];
	while (*p != i + 1) p = &t->cells[*p - 1].chain;
	*p = c->chain;
	free(c->domain);
	c->domain = NULL;
	c->chain = t->free;
	t->free = i + 1;
	t->used--;
}

/* ---- the oldest message: a min-heap by reception time ------------------------- */

static void old_put(struct relay_tally *t, size_t i, struct rmsg *m)
{
	t->old[i] = m;
	m->oidx = (uint32_t)i;
}

static void old_up(struct relay_tally *t, size_t i)
{
	struct rmsg *m = t->old[i];
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (t->old[p]->received <= m->received) break;
		old_put(t, i, t->old[p]);
		i = p;
	}
	old_put(t, i, m);
}

static void old_down(struct relay_tally *t, size_t i)
{
	struct rmsg *m = t->old[i];
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= t->nold) break;
		if (c + 1 < t->nold && t->old[c + 1]->received < t->old[c]->received) c++;
		if (m->received <= t->old[c]->received) break;
		old_put(t, i, t->old[c]);
		i = c;
	}
	old_put(t, i, m);
}

static void old_add(struct relay_tally *t, struct rmsg *m)
{
	if (t->nold == t->capold) {
		t->capold = t->capold ? 2 * t->capold : 1024;
		t->old = base_xrealloc(t->old, t->capold * sizeof *t->old);
	}
	t->old[t->nold] = m;
	old_up(t, t->nold++);
}

static void old_remove(struct relay_tally *t, struct rmsg *m)
{
	size_t i = m->oidx;
	if (i == RELAY_HEAP_NONE) return;
	m->oidx = RELAY_HEAP_NONE;
	struct rmsg *last = t->old[--t->nold];
	if (i == t->nold) return;
	old_put(t, i, last);
	if (i > 0 && t->old[(i - 1) / 2]->received > last->received)
		old_up(t, i);
	else
		old_down(t, i);
}

int relay_tally_oldest(const struct relay_tally *t, int64_t *oldest)
{
	if (!t->nold) return 0;
	*oldest = t->old[0]->received;
	return 1;
}

/* ---- messages with recipients in several cells -------------------------------- */

/* Whether m's pending recipients name more than one cell. */
static int spans_cells(const struct rmsg *m)
{
	uint32_t first = RELAY_CELL_NONE;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		uint32_t c = m->rcpt[i].cell;
		if (c == RELAY_CELL_NONE) continue;
		if (first == RELAY_CELL_NONE)
			first = c;
		else if (c != first)
			return 1;
	}
	return 0;
}

static void multi_set(struct relay_tally *t, struct rmsg *m, int on)
{
	if (on && m->midx == RELAY_HEAP_NONE) {
		if (t->nmulti == t->capmulti) {
			t->capmulti = t->capmulti ? 2 * t->capmulti : 64;
			t->multi = base_xrealloc(t->multi, t->capmulti * sizeof *t->multi);
		}
		m->midx = (uint32_t)t->nmulti;
		t->multi[t->nmulti++] = m;
	} else if (!on && m->midx != RELAY_HEAP_NONE) {
		struct rmsg *last = t->multi[--t->nmulti];
		t->multi[m->midx] = last;
		last->midx = m->midx;
		m->midx = RELAY_HEAP_NONE;
	}
}

/* ---- the four changes ------------------------------------------------------------ */

/* Whether another pending recipient of m than idx names cell c. */
static int shares_cell(const struct rmsg *m, uint32_t idx, uint32_t c)
{
	for (uint32_t i = 0; i < m->nrcpt; i++)
		if (i != idx && m->rcpt[i].cell == c) return 1;
	return 0;
}

void relay_tally_msg_in(struct relay_ctx *x, struct rmsg *m)
{
	struct relay_tally *t = &x->tally;
	m->oidx = m->midx = RELAY_HEAP_NONE;
	for (uint32_t i = 0; i < m->nrcpt; i++) m->rcpt[i].cell = RELAY_CELL_NONE;
	if (!m->live) return;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		struct rrcpt *r = &m->rcpt[i];
		if (r->state != RELAY_RCPT_PENDING) continue;
		uint32_t c = cell_get(t, smtp_path_domain(r->addr), m->pool, m->account);
		struct relay_cell *cl = &t->cells[c];
		if (!shares_cell(m, i, c)) cl->msgs++;
		cl->rcpts++;
		if (r->attempts) cl->deferred++;
		r->cell = c;
		t->rcpts++;
	}
	t->msgs++;
	old_add(t, m);
	multi_set(t, m, spans_cells(m));
}

void relay_tally_tried(struct relay_ctx *x, struct rmsg *m, uint32_t idx)
{
	struct rrcpt *r = &m->rcpt[idx];
	if (r->cell != RELAY_CELL_NONE && r->attempts == 1) x->tally.cells[r->cell].deferred++;
}

/* Takes recipient idx of m out of its cell. */
static void rcpt_leave(struct relay_tally *t, struct rmsg *m, uint32_t idx)
{
	struct rrcpt *r = &m->rcpt[idx];
	uint32_t c = r->cell;
	r->cell = RELAY_CELL_NONE;
	struct relay_cell *cl = &t->cells[c];
	cl->rcpts--;
	if (r->attempts) cl->deferred--;
	if (!shares_cell(m, idx, c)) cl->msgs--;
	if (!cl->rcpts) cell_put(t, c);
	t->rcpts--;
}

/* Takes m out of the message count, the heap and the multi-cell list. */
static void msg_leave(struct relay_tally *t, struct rmsg *m)
{
	if (m->oidx == RELAY_HEAP_NONE) return;
	t->msgs--;
	old_remove(t, m);
	multi_set(t, m, 0);
}

void relay_tally_rcpt_out(struct relay_ctx *x, struct rmsg *m, uint32_t idx)
{
	struct relay_tally *t = &x->tally;
	if (m->rcpt[idx].cell == RELAY_CELL_NONE) return;
	rcpt_leave(t, m, idx);
	if (m->live)
		multi_set(t, m, spans_cells(m));
	else
		msg_leave(t, m);
}

void relay_tally_msg_out(struct relay_ctx *x, struct rmsg *m)
{
	/* at shutdown a message leaves with recipients still pending */
	for (uint32_t i = 0; i < m->nrcpt; i++)
		if (m->rcpt[i].cell != RELAY_CELL_NONE) rcpt_leave(&x->tally, m, i);
	msg_leave(&x->tally, m);
}

void relay_tally_free(struct relay_tally *t)
{
	for (uint32_t i = 0; i < t->ncells; i++) free(t->cells[i].domain);
	free(t->cells);
	free(t->buckets);
	free(t->old);
	free(t->multi);
	memset(t, 0, sizeof *t);
}

/* ---- verification --------------------------------------------------------------- */

int relay_tally_check(struct relay_ctx *x, struct base_err *err)
{
	const struct relay_tally *t = &x->tally;
	uint64_t msgs = 0, rcpts = 0, nmulti = 0;
	int64_t oldest = INT64_MAX;
	/* every cell counted again from its recipients, in a scratch copy */
	uint64_t *cnt = base_xcalloc((size_t)t->ncells * 3 + 1, sizeof *cnt);
	int rc = 0;
	for (struct rmsg *m = x->msgs; m && !rc; m = m->next) {
		uint32_t live = 0;
		for (uint32_t i = 0; i < m->nrcpt && !rc; i++) {
			const struct rrcpt *r = &m->rcpt[i];
			int pending = r->state == RELAY_RCPT_PENDING;
			live += pending;
			if (pending != (r->cell != RELAY_CELL_NONE)) {
				rc = base_errf(err, "%s: recipient %u: %s but cell %u", m->id, i,
				               pending ? "pending" : "final", r->cell);
				break;
			}
			if (!pending) continue;
			const char *dom = smtp_path_domain(r->addr);
			if (r->cell >= t->ncells || !t->cells[r->cell].domain ||
			    !cell_is(&t->cells[r->cell], dom, strlen(dom), m->pool, m->account)) {
				rc =
				    base_errf(err, "%s: recipient %u: in the wrong cell", m->id, i);
				break;
			}
			cnt[3 * r->cell]++;
			if (r->attempts) cnt[3 * r->cell + 1]++;
			/* the message counts once per cell: at its first recipient there */
			uint32_t k = 0;
			while (k < i && m->rcpt[k].cell != r->cell) k++;
			if (k == i) cnt[3 * r->cell + 2]++;
			rcpts++;
		}
		if (rc) break;
		if (live != m->live) {
			rc = base_errf(err, "%s: live %u, %u pending recipients", m->id, m->live,
			               live);
			break;
		}
		if (!live) {
			if (m->oidx != RELAY_HEAP_NONE || m->midx != RELAY_HEAP_NONE)
				rc = base_errf(err, "%s: finished but still counted", m->id);
			continue;
		}
		msgs++;
		if (m->received < oldest) oldest = m->received;
		if (m->oidx >= t->nold || t->old[m->oidx] != m)
			rc = base_errf(err, "%s: not in the oldest heap", m->id);
		int multi = spans_cells(m);
		nmulti += multi;
		if (multi != (m->midx != RELAY_HEAP_NONE) ||
		    (multi && (m->midx >= t->nmulti || t->multi[m->midx] != m)))
			rc = base_errf(err, "%s: multi-cell list wrong", m->id);
	}
	for (uint32_t i = 0; i < t->ncells && !rc; i++) {
		const struct relay_cell *c = &t->cells[i];
		if (!c->domain) continue;
		if (c->rcpts != cnt[3 * i] || c->deferred != cnt[3 * i + 1] ||
		    c->msgs != cnt[3 * i + 2] || !c->rcpts)
			rc = base_errf(
			    err,
			    "cell %s/%s/%s: %llu messages, %llu recipients, %llu deferred; "
			    "the queue has %llu, %llu, %llu",
			    c->domain, c->pool ? c->pool : "-", c->account ? c->account : "-",
			    (unsigned long long)c->msgs, (unsigned long long)c->rcpts,
			    (unsigned long long)c->deferred, (unsigned long long)cnt[3 * i + 2],
			    (unsigned long long)cnt[3 * i], (unsigned long long)cnt[3 * i + 1]);
	}
	free(cnt);
	if (rc) return rc;
	int64_t o;
	if (msgs != t->msgs || rcpts != t->rcpts || msgs != t->nold || nmulti != t->nmulti)
		return base_errf(err,
		                 "totals: %llu messages, %llu recipients, %zu in the heap, %zu "
		                 "multi; the queue has %llu, %llu, %llu multi",
		                 (unsigned long long)t->msgs, (unsigned long long)t->rcpts, t->nold,
		                 t->nmulti, (unsigned long long)msgs, (unsigned long long)rcpts,
		                 (unsigned long long)nmulti);
	if (msgs && (!relay_tally_oldest(t, &o) || o != oldest))
		return base_errf(err, "oldest %lld, the queue's %lld", (long long)o,
		                 (long long)oldest);
	return 0;
}
