/*
 * sched.c — the scheduler's index of the queue: a binary min-heap of
 * messages keyed by `due`, the earliest time one of a message's recipients
 * may be tried. A scheduler tick pops the messages that are due, makes
 * their jobs and pushes them back with their next due time, so a tick
 * costs O(due · log n) however long the queue, and a queue of deferred
 * mail costs nothing until it is due again.
 *
 * Invariants: every message in the heap has hidx equal to its position in
 * v[]; a message not in the heap has hidx == RELAY_HEAP_NONE; for every i
 * > 0, v[(i - 1) / 2]->due <= v[i]->due. `due` is a lower bound: the tick
 * that pops a message decides what is really due (suspensions and MX
 * lookups are looked at then, lazily), and pushes it back with a later due.
 */
#include <stdlib.h>

#include "relay/int.h"

static void put(struct relay_heap *h, size_t i, struct rmsg *m)
{
	h->v[i] = m;
	m->hidx = (uint32_t)i;
}

static void sift_up(struct relay_heap *h, size_t i)
{
	struct rmsg *m = h->v[i];
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (h->v[p]->due <= m->due) break;
		put(h, i, h->v[p]);
		i = p;
	}
	put(h, i, m);
}

static void sift_down(struct relay_heap *h, size_t i)
{
	struct rmsg *m = h->v[i];
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= h->n) break;
		if (c + 1 < h->n && h->v[c + 1]->due < h->v[c]->due) c++;
		if (m->due <= h->v[c]->due) break;
		put(h, i, h->v[c]);
		i = c;
	}
	put(h, i, m);
}

void relay_heap_push(struct relay_heap *h, struct rmsg *m)
{
	if (h->n == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 1024;
		h->v = base_xrealloc(h->v, h->cap * sizeof *h->v);
	}
	h->v[h->n] = m;
	sift_up(h, h->n++);
}

void relay_heap_remove(struct relay_heap *h, struct rmsg *m)
{
	size_t i = m->hidx;
	if (i == RELAY_HEAP_NONE || i >= h->n || h->v[i] != m) return;
	m->hidx = RELAY_HEAP_NONE;
	struct rmsg *last = h->v[--h->n];
	if (i == h->n) return;
	put(h, i, last);
	if (i > 0 && h->v[(i - 1) / 2]->due > last->due)
		sift_up(h, i);
	else
		sift_down(h, i);
}

void relay_heap_update(struct relay_heap *h, struct rmsg *m, int64_t due)
{
	if (m->hidx == RELAY_HEAP_NONE) {
		m->due = due;
		relay_heap_push(h, m);
		return;
	}
	int64_t old = m->due;
	m->due = due;
	if (due < old)
		sift_up(h, m->hidx);
	else if (due > old)
		sift_down(h, m->hidx);
}

struct rmsg *relay_heap_top(const struct relay_heap *h)
{
	return h->n ? h->v[0] : NULL;
}

void relay_heap_free(struct relay_heap *h)
{
	for (size_t i = 0; i < h->n; i++) h->v[i]->hidx = RELAY_HEAP_NONE;
	free(h->v);
	h->v = NULL;
	h->n = h->cap = 0;
}

int64_t relay_msg_due(const struct rmsg *m)
{
	int64_t due = INT64_MAX;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		const struct rrcpt *r = &m->rcpt[i];
		if (r->state == RELAY_RCPT_PENDING && !r->busy && r->next < due) due = r->next;
	}
	return due;
}
