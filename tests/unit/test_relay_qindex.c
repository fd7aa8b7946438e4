/*
 * test_relay_qindex.c — unit tests of the queue's indexes (qindex.c): the
 * index by id finds what was put in and nothing else, through growth, with
 * 200,000 ids of the relay's own form, and after removals from the middle
 * of chains; random puts and removals against a brute-force model keep it
 * and the order of entry right (relay_qindex_check agrees); the order of
 * entry pages through a queue from any cursor, whether the message the
 * cursor names is still there or not, and squeezes its holes out.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/int.h"

static struct rmsg *msgs(size_t n)
{
	struct rmsg *m = calloc(n, sizeof *m);
	for (size_t i = 0; i < n; i++) {
		/* the form relay_id_new gives: time.pid.seq, in hex */
		snprintf(m[i].id, sizeof m[i].id, "%llx.%x.%x", 0x6b03cdbeull + i / 1000, 0x81f,
		         (unsigned)(i + 1));
		m[i].opos = UINT32_MAX;
	}
	return m;
}

static void test_index_basic(void **state)
{
	(void)state;
	struct relay_index t = {0};
	struct rmsg *m = msgs(3);
	assert_null(relay_index_get(&t, m[0].id)); /* empty: no table yet */
	relay_index_del(&t, &m[0]);                /* nor a crash */
	relay_index_put(&t, &m[0]);
	relay_index_put(&t, &m[1]);
	assert_ptr_equal(relay_index_get(&t, m[0].id), &m[0]);
	assert_ptr_equal(relay_index_get(&t, m[1].id), &m[1]);
	assert_null(relay_index_get(&t, m[2].id));
	assert_null(relay_index_get(&t, ""));
	assert_null(relay_index_get(&t, "6b03cdbe.81f")); /* a prefix is not an id */
	assert_int_equal(t.n, 2);
	relay_index_del(&t, &m[2]); /* not in it: nothing changes */
	assert_int_equal(t.n, 2);
	relay_index_del(&t, &m[0]);
	assert_null(relay_index_get(&t, m[0].id));
	assert_ptr_equal(relay_index_get(&t, m[1].id), &m[1]);
	assert_int_equal(t.n, 1);
	relay_index_put(&t, &m[0]); /* back again */
	assert_ptr_equal(relay_index_get(&t, m[0].id), &m[0]);
	relay_index_free(&t);
	assert_null(relay_index_get(&t, m[0].id));
	free(m);
}

/* Many ids: the table grows (one message per bucket at most, on average),
 * every id is found, removals from anywhere in a chain keep the rest. */
static void test_index_many(void **state)
{
	(void)state;
	enum { N = 200000 };
	struct relay_index t = {0};
	struct rmsg *m = msgs(N);
	size_t grew = 0, nb = 0;
	for (size_t i = 0; i < N; i++) {
		relay_index_put(&t, &m[i]);
		if (t.nb != nb) grew++, nb = t.nb;
		assert_true(t.n <= t.nb);
	}
	assert_true(grew >= 8); /* 1024 → 262144 */
	assert_int_equal(t.nb & (t.nb - 1), 0);
	size_t longest = 0;
	for (size_t b = 0; b < t.nb; b++) {
		size_t len = 0;
		for (struct rmsg *p = t.b[b]; p; p = p->inext) len++;
		if (len > longest) longest = len;
	}
	assert_true(longest <= 12); /* the hash spreads ids that differ in a digit */
	for (size_t i = 0; i < N; i++) assert_ptr_equal(relay_index_get(&t, m[i].id), &m[i]);
	for (size_t i = 0; i < N; i += 3) relay_index_del(&t, &m[i]);
	for (size_t i = 0; i < N; i++) {
		if (i % 3 == 0)
			assert_null(relay_index_get(&t, m[i].id));
		else
			assert_ptr_equal(relay_index_get(&t, m[i].id), &m[i]);
	}
	assert_int_equal(t.n, N - (N + 2) / 3);
	relay_index_free(&t);
	free(m);
}

/* Random entries and departures against a model: the check agrees, the
 * index finds exactly the queued ones, the order keeps them by entry. */
static void test_random_against_model(void **state)
{
	(void)state;
	enum { N = 20000 };
	struct relay_index t = {0};
	struct relay_order o = {0};
	struct rmsg *m = msgs(N);
	uint64_t seq[N] = {0}; /* 0: not queued */
	struct rmsg *head = NULL;
	size_t queued = 0, squeezes = 0;
	srandom(4242);
	for (int step = 0; step < 200000; step++) {
		size_t i = (size_t)random() % N;
		if (!seq[i]) {
			relay_index_put(&t, &m[i]);
			relay_order_add(&o, &m[i]);
			seq[i] = o.v[m[i].opos].seq;
			m[i].prev = NULL, m[i].next = head;
			if (head) head->prev = &m[i];
			head = &m[i];
			queued++;
		} else {
			size_t before = o.n;
			relay_index_del(&t, &m[i]);
			relay_order_del(&o, &m[i]);
			if (o.n < before) squeezes++;
			assert_int_equal(m[i].opos, UINT32_MAX);
			seq[i] = 0;
			if (m[i].prev)
				m[i].prev->next = m[i].next;
			else
				head = m[i].next;
			if (m[i].next) m[i].next->prev = m[i].prev;
			queued--;
		}
		assert_int_equal(t.n, queued); /* a removal missed would link it twice */
		if (step % 20000) continue;
		struct base_err err;
		if (relay_qindex_check(&t, &o, head, queued, &err) < 0) fail_msg("%s", err.msg);
		for (size_t k = 0; k < N; k++) {
			struct rmsg *g = relay_index_get(&t, m[k].id);
			assert_ptr_equal(g, seq[k] ? &m[k] : NULL);
			if (seq[k]) assert_int_equal(o.v[m[k].opos].seq, seq[k]);
		}
	}
	assert_true(squeezes > 0);
	struct base_err err;
	if (relay_qindex_check(&t, &o, head, queued, &err) < 0) fail_msg("%s", err.msg);
	/* the check sees a message missing from the index */
	if (head) {
		relay_index_del(&t, head);
		assert_int_equal(relay_qindex_check(&t, &o, head, queued, &err), -1);
	}
	relay_index_free(&t);
	relay_order_free(&o);
	free(m);
}

/* Pages of 7, newest first, from each page's last number: every message
 * exactly once, also when the message a cursor names has left meanwhile
 * and when others entered. */
static void test_order_pages(void **state)
{
	(void)state;
	enum { N = 10000 };
	struct relay_order o = {0};
	struct rmsg *m = msgs(N);
	for (size_t i = 0; i < N; i++) relay_order_add(&o, &m[i]);
	for (size_t i = 0; i < N; i += 2) relay_order_del(&o, &m[i]);
	assert_int_equal(o.dead, N / 2); /* half are holes: not yet squeezed */
	assert_int_equal(o.n, N);
	relay_order_del(&o, &m[1]); /* more than half: squeezed */
	assert_int_equal(o.dead, 0);
	assert_int_equal(o.n, N / 2 - 1);
	assert_int_equal(m[3].opos, 0);
	for (size_t i = 3; i < N; i += 10) relay_order_del(&o, &m[i]); /* holes stay */
	assert_int_equal(o.dead, N / 10);
	assert_int_equal(relay_order_below(&o, 1), 0);
	assert_int_equal(relay_order_below(&o, UINT64_MAX), o.n);
	/* numbers 4, 6, 8... are left, and 4 is a hole that keeps its number */
	assert_null(o.v[0].m);
	assert_int_equal(o.v[0].seq, 4);
	assert_int_equal(relay_order_below(&o, 4), 0);
	assert_int_equal(relay_order_below(&o, 5), 1);
	assert_int_equal(relay_order_below(&o, 6), 1);
	assert_int_equal(relay_order_below(&o, 7), 2);
	unsigned char *seen = calloc(N, 1);
	uint64_t cursor = 0;
	size_t pages = 0, total = 0;
	for (;;) {
		size_t at = cursor ? relay_order_below(&o, cursor) : o.n, n = 0;
		uint64_t last = 0;
		while (at > 0 && n < 7) {
			const struct relay_order_ent *e = &o.v[--at];
			if (!e->m) continue;
			size_t k = (size_t)(e->m - m);
			assert_true(k < N);
			assert_int_equal(seen[k]++, 0);
			if (last) assert_true(e->seq < last);
			last = e->seq;
			n++;
		}
		if (!n) break;
		total += n, pages++;
		cursor = last;
		/* meanwhile: the cursor's message leaves, and a new one comes */
		relay_order_del(&o, &m[(size_t)(o.v[relay_order_below(&o, cursor)].m - m)]);
		relay_order_add(&o, &m[0]);
		relay_order_del(&o, &m[0]);
	}
	for (size_t i = 0; i < N; i++)
		assert_int_equal(seen[i], i % 2 == 1 && i != 1 && i % 10 != 3 ? 1 : 0);
	assert_int_equal(total, N / 2 - 1 - N / 10);
	assert_true(pages >= total / 7);
	free(seen);
	relay_order_free(&o);
	free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_index_basic),
	    cmocka_unit_test(test_index_many),
	    cmocka_unit_test(test_random_against_model),
	    cmocka_unit_test(test_order_pages),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
