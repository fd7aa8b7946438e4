/*
 * test_relay_tally.c — unit tests of the queue's counters (tally.c) against
 * a brute-force count of the queue: random receptions (some recovered,
 * with recipients already final or tried), attempts, final outcomes and
 * messages leaving, finished or at shutdown. After every step the
 * counters agree with relay_tally_check's walk, and with totals, the
 * oldest message and per-domain counts recounted here.
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
#include "smtp/smtp.h"

static const char *const domains[] = {"a.example", "A.Example", "b.example", "c.example",
                                      "d.example"};
/* interned names: the counters compare them by pointer */
static const char *const pools[] = {NULL, "bulk", "tx"};
static const char *const accounts[] = {NULL, "acme", "zeta"};

static struct rmsg *new_msg(struct relay_ctx *x, unsigned long id, int recovered)
{
	struct rmsg *m = calloc(1, sizeof *m);
	snprintf(m->id, sizeof m->id, "m%lu", id);
	m->nrcpt = 1 + (uint32_t)(random() % 4);
	m->rcpt = calloc(m->nrcpt, sizeof *m->rcpt);
	m->pool = pools[random() % 3];
	m->account = accounts[random() % 3];
	m->received = 1000 + random() % 50; /* not in order, with ties */
	m->hidx = RELAY_HEAP_NONE;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		char a[64];
		snprintf(a, sizeof a, "r%u@%s", i, domains[random() % 5]);
		m->rcpt[i].addr = strdup(a);
		if (recovered && random() % 3 == 0)
			m->rcpt[i].state = RELAY_RCPT_DELIVERED;
		else
			m->live++;
		if (recovered) m->rcpt[i].attempts = (uint32_t)(random() % 3);
	}
	if (!m->live) m->rcpt[0].state = RELAY_RCPT_PENDING, m->live = 1;
	m->next = x->msgs;
	if (x->msgs) x->msgs->prev = m;
	x->msgs = m;
	x->nmsgs++;
	relay_tally_msg_in(x, m);
	return m;
}

static void drop_msg(struct relay_ctx *x, struct rmsg *m)
{
	relay_tally_msg_out(x, m);
	if (m->prev)
		m->prev->next = m->next;
	else
		x->msgs = m->next;
	if (m->next) m->next->prev = m->prev;
	x->nmsgs--;
	for (uint32_t i = 0; i < m->nrcpt; i++) free(m->rcpt[i].addr);
	free(m->rcpt);
	free(m);
}

static struct rmsg *nth(struct relay_ctx *x, size_t k)
{
	struct rmsg *m = x->msgs;
	while (k--) m = m->next;
	return m;
}

/* The counters against a count made here, without the cells' bookkeeping. */
static void recount(struct relay_ctx *x)
{
	struct base_err err;
	if (relay_tally_check(x, &err) < 0) fail_msg("%s", err.msg);
	uint64_t msgs = 0, rcpts = 0, per_dom[4][3] = {{0}};
	int64_t oldest = INT64_MAX;
	for (struct rmsg *m = x->msgs; m; m = m->next) {
		if (!m->live) continue;
		msgs++;
		if (m->received < oldest) oldest = m->received;
		int seen[4] = {0};
		for (uint32_t i = 0; i < m->nrcpt; i++) {
			if (m->rcpt[i].state != RELAY_RCPT_PENDING) continue;
			rcpts++;
			int d = base_lower(smtp_path_domain(m->rcpt[i].addr)[0]) - 'a';
			per_dom[d][1]++;
			if (m->rcpt[i].attempts) per_dom[d][2]++;
			if (!seen[d]++) per_dom[d][0]++;
		}
	}
	const struct relay_tally *t = &x->tally;
	assert_int_equal(t->msgs, msgs);
	assert_int_equal(t->rcpts, rcpts);
	int64_t o = 0;
	assert_int_equal(relay_tally_oldest(t, &o), msgs > 0);
	if (msgs) assert_int_equal(o, oldest);
	uint64_t cells[4][3] = {{0}};
	for (uint32_t i = 0; i < t->ncells; i++) {
		const struct relay_cell *c = &t->cells[i];
		if (!c->domain) continue;
		assert_true(c->domain[0] >= 'a' && c->domain[0] <= 'd'); /* lower case */
		int d = c->domain[0] - 'a';
		cells[d][0] += c->msgs, cells[d][1] += c->rcpts, cells[d][2] += c->deferred;
	}
	assert_memory_equal(cells, per_dom, sizeof cells);
}

static void test_tally_random(void **state)
{
	(void)state;
	struct relay_ctx x;
	memset(&x, 0, sizeof x);
	srandom(4242);
	unsigned long ids = 0;
	for (int step = 0; step < 20000; step++) {
		int op = (int)(random() % 10);
		if (op < 3 || !x.nmsgs) {
			new_msg(&x, ids++, random() % 4 == 0);
		} else {
			struct rmsg *m = nth(&x, (size_t)random() % x.nmsgs);
			uint32_t i = (uint32_t)(random() % m->nrcpt);
			struct rrcpt *r = &m->rcpt[i];
			if (op == 9) {
				/* a finished message leaves; a live one as at shutdown */
				if (m->live == 0 || random() % 8 == 0) drop_msg(&x, m);
			} else if (r->state != RELAY_RCPT_PENDING) {
				continue;
			} else if (op < 6) {
				r->attempts++;
				relay_tally_tried(&x, m, i);
			} else {
				r->state = op == 6 ? RELAY_RCPT_DELIVERED : RELAY_RCPT_BOUNCED;
				m->live--;
				relay_tally_rcpt_out(&x, m, i);
			}
		}
		if (step % 7 == 0 || x.nmsgs < 50) recount(&x);
	}
	recount(&x);
	while (x.msgs) drop_msg(&x, x.msgs);
	assert_int_equal(x.tally.msgs, 0);
	assert_int_equal(x.tally.rcpts, 0);
	assert_int_equal(x.tally.used, 0);
	assert_int_equal(x.tally.nold, 0);
	assert_int_equal(x.tally.nmulti, 0);
	relay_tally_free(&x.tally);
}

/* A message in several domains is on the list the summary walks, and off
 * it once its recipients are down to one domain. */
static void test_tally_multi(void **state)
{
	(void)state;
	struct relay_ctx x;
	memset(&x, 0, sizeof x);
	struct rmsg *m = calloc(1, sizeof *m);
	strcpy(m->id, "multi");
	m->nrcpt = m->live = 3;
	m->rcpt = calloc(3, sizeof *m->rcpt);
	m->rcpt[0].addr = strdup("x@a.example");
	m->rcpt[1].addr = strdup("y@b.example");
	m->rcpt[2].addr = strdup("z@A.EXAMPLE");
	m->hidx = RELAY_HEAP_NONE;
	x.msgs = m;
	x.nmsgs = 1;
	relay_tally_msg_in(&x, m);
	assert_int_equal(x.tally.nmulti, 1);
	assert_int_equal(x.tally.used, 2); /* a.example in two spellings is one cell */
	assert_int_equal(m->rcpt[0].cell, m->rcpt[2].cell);
	m->rcpt[1].state = RELAY_RCPT_DELIVERED;
	m->live--;
	relay_tally_rcpt_out(&x, m, 1);
	assert_int_equal(x.tally.nmulti, 0);
	assert_int_equal(x.tally.used, 1);
	const struct relay_cell *c = &x.tally.cells[m->rcpt[0].cell];
	assert_string_equal(c->domain, "a.example");
	assert_int_equal(c->msgs, 1);
	assert_int_equal(c->rcpts, 2);
	recount(&x);
	drop_msg(&x, m);
	relay_tally_free(&x.tally);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tally_random),
	    cmocka_unit_test(test_tally_multi),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
