/*
 * qindex.c — two indexes of the relay's in-memory queue, kept in step with
 * it where a message enters it (queue_new in relay.c: reception, a DSN,
 * recovery at start) and where it leaves (msg_drop: final delivery, bounce
 * or expiry, and shutdown), so that an administrator's request costs time
 * in what it asks for, not in the length of the queue.
 *
 * By id (struct relay_index): a hash table of chains threaded through
 * rmsg.inext, doubled when it holds as many messages as buckets, so a
 * chain holds one message on average: `bounce id` and `retry id` find
 * their message in O(1).
 *
 * In order of entry (struct relay_order): every message with its sequence
 * number, ascending, in an array; a message that leaves leaves a hole (its
 * entry keeps its number), and the holes are squeezed out once they are
 * more than half of the array, so each costs O(1) amortised. A list pages
 * through the queue from the newest by sequence number: the cursor is the
 * number of the last message shown, found by binary search whether that
 * message is still queued or not.
 *
 * Invariants (relay_qindex_check verifies them, with MAILREP_QUEUE_VERIFY):
 * every queued message is in exactly one chain, the one its id hashes to,
 * and t->n counts them; o->v[m->opos].m == m for every queued message, the
 * entries' numbers strictly increase, and o->dead counts the holes.
 */
#include <stdlib.h>
#include <string.h>

#include "relay/int.h"

/* ---- by id ------------------------------------------------------------------ */

#define INDEX_MIN 1024

static uint64_t id_hash(const char *id)
{
	uint64_t h = base_hash_mix(0, id, strlen(id));
	return h ^ (h >> 29);
}

static void index_link(struct rmsg **b, size_t nb, struct rmsg *m)
{
	size_t i = (size_t)(id_hash(m->id) & (nb - 1));
	m->inext = b[i];
	b[i] = m;
}

static void index_grow(struct relay_index *t)
{
	size_t nb = t->nb ? 2 * t->nb : INDEX_MIN;
	struct rmsg **b = base_xcalloc(nb, sizeof *b);
	for (size_t i = 0; i < t->nb; i++) {
		struct rmsg *m, *next;
		for (m = t->b[i]; m; m = next) {
			next = m->inext;
			index_link(b, nb, m);
		}
	}
	free(t->b);
	t->b = b;
	t->nb = nb;
}

void relay_index_put(struct relay_index *t, struct rmsg *m)
{
	if (t->n >= t->nb) index_grow(t);
	index_link(t->b, t->nb, m);
	t->n++;
}

void relay_index_del(struct relay_index *t, struct rmsg *m)
{
	if (!t->nb) return;
	struct rmsg **p = &t->b[id_hash(m->id) & (t->nb - 1)];
	for (; *p; p = &(*p)->inext) {
		if (*p != m) continue;
		*p = m->inext;
		m->inext = NULL;
		t->n--;
		return;
	}
}

struct rmsg *relay_index_get(const struct relay_index *t, const char *id)
{
	if (!t->nb) return NULL;
	struct rmsg *m = t->b[id_hash(id) & (t->nb - 1)];
	for (; m; m = m->inext)
		if (!strcmp(m->id, id)) return m;
	return NULL;
}

void relay_index_free(struct relay_index *t)
{
	free(t->b);
	memset(t, 0, sizeof *t);
}

/* ---- in order of entry ---------------------------------------------------------- */

#define ORDER_SQUEEZE 4096 /* holes below this many are left alone */

void relay_order_add(struct relay_order *o, struct rmsg *m)
{
	if (o->n == o->cap) {
		o->cap = o->cap ? 2 * o->cap : 1024;
		o->v = base_xrealloc(o->v, o->cap * sizeof *o->v);
	}
	o->v[o->n] = (struct relay_order_ent){++o->seq, m};
	m->opos = (uint32_t)o->n++;
}

static void order_squeeze(struct relay_order *o)
{
	size_t k = 0;
	for (size_t i = 0; i < o->n; i++) {
		if (!o->v[i].m) continue;
		o->v[k] = o->v[i];
		o->v[k].m->opos = (uint32_t)k;
		k++;
	}
	o->n = k;
	o->dead = 0;
}

void relay_order_del(struct relay_order *o, struct rmsg *m)
{
	if (m->opos >= o->n || o->v[m->opos].m != m) return;
	o->v[m->opos].m = NULL;
	m->opos = UINT32_MAX;
	if (++o->dead >= ORDER_SQUEEZE && 2 * o->dead > o->n) order_squeeze(o);
}

size_t relay_order_below(const struct relay_order *o, uint64_t seq)
{
	size_t lo = 0, hi = o->n; /* the answer is in [lo, hi] */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (o->v[mid].seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

void relay_order_free(struct relay_order *o)
{
	free(o->v);
	memset(o, 0, sizeof *o);
}

/* ---- checks ---------------------------------------------------------------------- */

int relay_qindex_check(const struct relay_index *t, const struct relay_order *o,
                       const struct rmsg *msgs, size_t nmsgs, struct base_err *err)
{
	if (t->n != nmsgs)
		return base_errf(err, "the id index holds %zu messages, the queue %zu", t->n,
		                 nmsgs);
	size_t chained = 0;
	for (size_t i = 0; i < t->nb; i++)
		for (const struct rmsg *m = t->b[i]; m; m = m->inext) {
			if ((id_hash(m->id) & (t->nb - 1)) != i)
				return base_errf(
				    err, "message %s in the id index's chain %zu, not its own",
				    m->id, i);
			if (++chained > nmsgs)
				return base_errf(
				    err, "the id index's chains hold more than %zu messages",
				    nmsgs);
		}
	if (chained != nmsgs)
		return base_errf(err, "the id index's chains hold %zu messages, the queue %zu",
		                 chained, nmsgs);
	size_t live = 0;
	for (size_t i = 0; i < o->n; i++) {
		if (i && o->v[i].seq <= o->v[i - 1].seq)
			return base_errf(err, "the queue's order: number %llu after %llu at %zu",
			                 (unsigned long long)o->v[i].seq,
			                 (unsigned long long)o->v[i - 1].seq, i);
		if (o->v[i].m) live++;
	}
	if (live != nmsgs || o->n - live != o->dead)
		return base_errf(
		    err,
		    "the queue's order holds %zu messages and %zu holes (%zu counted), "
		    "the queue %zu",
		    live, o->n - live, o->dead, nmsgs);
	for (const struct rmsg *m = msgs; m; m = m->next) {
		if (relay_index_get(t, m->id) == NULL)
			return base_errf(err, "message %s is not in the id index", m->id);
		if (m->opos >= o->n || o->v[m->opos].m != m)
			return base_errf(err, "message %s is not at its place in the queue's order",
			                 m->id);
	}
	return 0;
}
