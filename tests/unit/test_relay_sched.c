/*
 * test_relay_sched.c — unit tests of the relay scheduler's heap (sched.c)
 * against a brute-force model: random pushes, due-time changes (earlier
 * and later) and removals keep the heap property and every message's
 * position; popping yields due times in order; a large queue with few due
 * messages only touches those. Also the control protocol's parser
 * (control.h): every command, and refusals that name what is wrong. And
 * recovery keeping only envelopes: what it hands over still reads right,
 * for new ('N') and old ('M', no attributes) records.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "relay/control.h"
#include "relay/int.h"

static void check_heap(const struct relay_heap *h)
{
	for (size_t i = 0; i < h->n; i++) {
		assert_int_equal(h->v[i]->hidx, i);
		if (i) assert_true(h->v[(i - 1) / 2]->due <= h->v[i]->due);
	}
}

static struct rmsg *msgs(size_t n)
{
	struct rmsg *m = calloc(n, sizeof *m);
	for (size_t i = 0; i < n; i++) m[i].hidx = RELAY_HEAP_NONE;
	return m;
}

static void test_heap_random(void **state)
{
	(void)state;
	enum { N = 2000 };
	struct rmsg *m = msgs(N);
	int in[N] = {0};
	struct relay_heap h = {0};
	srandom(12345);
	for (int step = 0; step < 50000; step++) {
		size_t k = (size_t)random() % N;
		int op = (int)(random() % 3);
		if (op == 0 || !in[k]) {
			relay_heap_update(&h, &m[k], random() % 100000);
			in[k] = 1;
		} else if (op == 1) {
			relay_heap_update(&h, &m[k], m[k].due + (random() % 2001) - 1000);
		} else {
			relay_heap_remove(&h, &m[k]);
			assert_int_equal(m[k].hidx, RELAY_HEAP_NONE);
			in[k] = 0;
		}
		if (step % 997 == 0) check_heap(&h);
	}
	check_heap(&h);
	size_t count = 0;
	for (size_t i = 0; i < N; i++) count += (size_t)in[i];
	assert_int_equal(h.n, count);
	/* removing a message twice, or one never pushed, changes nothing */
	struct rmsg stray = {.hidx = RELAY_HEAP_NONE};
	relay_heap_remove(&h, &stray);
	assert_int_equal(h.n, count);
	/* popping gives due times in order */
	int64_t last = INT64_MIN;
	struct rmsg *t;
	while ((t = relay_heap_top(&h))) {
		assert_true(t->due >= last);
		last = t->due;
		relay_heap_remove(&h, t);
		check_heap(&h);
	}
	assert_null(relay_heap_top(&h));
	relay_heap_free(&h);
	free(m);
}

/* A tick over a large deferred queue only reaches the due messages. */
static void test_heap_only_due(void **state)
{
	(void)state;
	enum { N = 100000 };
	struct rmsg *m = msgs(N);
	struct relay_heap h = {0};
	for (size_t i = 0; i < N; i++)
		relay_heap_push(&h, (m[i].due = 1000 + (int64_t)(i % 977), &m[i]));
	relay_heap_update(&h, &m[4242], 5);
	relay_heap_update(&h, &m[77], 7);
	size_t seen = 0;
	struct rmsg *t;
	while ((t = relay_heap_top(&h)) && t->due <= 10) {
		relay_heap_remove(&h, t);
		seen++;
		relay_heap_update(&h, t, 5000); /* deferred again */
	}
	assert_int_equal(seen, 2);
	assert_int_equal(h.n, N);
	assert_int_equal(relay_heap_top(&h)->due, 1000);
	check_heap(&h);
	relay_heap_free(&h);
	for (size_t i = 0; i < N; i++) assert_int_equal(m[i].hidx, RELAY_HEAP_NONE);
	free(m);
}

static void test_msg_due(void **state)
{
	(void)state;
	struct rrcpt r[3];
	memset(r, 0, sizeof r);
	struct rmsg m = {.nrcpt = 3, .rcpt = r};
	r[0].next = 50, r[1].next = 20, r[2].next = 30;
	assert_int_equal(relay_msg_due(&m), 20);
	r[1].busy = 1; /* in a job: its outcome reschedules it */
	assert_int_equal(relay_msg_due(&m), 30);
	r[2].state = RELAY_RCPT_DELIVERED;
	assert_int_equal(relay_msg_due(&m), 50);
	r[0].state = RELAY_RCPT_BOUNCED;
	assert_true(relay_msg_due(&m) == INT64_MAX);
}

static int parse(const char *s, struct relay_ctl_req *q, struct base_err *err)
{
	return relay_ctl_parse(s, strlen(s), q, err);
}

static void test_ctl_parse(void **state)
{
	(void)state;
	struct relay_ctl_req q;
	struct base_err err;
	assert_int_equal(parse("summary", &q, &err), 0);
	assert_int_equal(q.op, RELAY_CTL_SUMMARY);
	assert_int_equal(parse("list\r", &q, &err), 0);
	assert_int_equal(q.op, RELAY_CTL_LIST);
	assert_int_equal(q.limit, 1000);
	assert_int_equal(parse("list 10000", &q, &err), 0);
	assert_int_equal(q.limit, RELAY_CTL_LIST_MAX);
	assert_int_equal(parse("list 5", &q, &err), 0);
	assert_int_equal(q.limit, 5);
	assert_int_equal(q.after, 0);
	assert_int_equal(parse("list 5 after 123456789012", &q, &err), 0);
	assert_int_equal(q.limit, 5);
	assert_int_equal(q.after, 123456789012ull);
	assert_int_equal(parse("list after 7", &q, &err), 0);
	assert_int_equal(q.limit, 1000);
	assert_int_equal(q.after, 7);
	assert_int_equal(parse("suspend domain Example.COM", &q, &err), 0);
	assert_int_equal(q.kind, RELAY_CTL_DOMAIN);
	assert_string_equal(q.name, "example.com");
	assert_int_equal(q.secs, 0);
	assert_int_equal(parse("suspend site 127.0.0.1:25 1h30m", &q, &err), 0);
	assert_int_equal(q.kind, RELAY_CTL_SITE);
	assert_int_equal(q.secs, 5400);
	assert_int_equal(parse("suspend pool Bulk @1800000000", &q, &err), 0);
	assert_string_equal(q.name, "Bulk");
	assert_int_equal(q.until, 1800000000);
	assert_int_equal(parse("resume pool bulk", &q, &err), 0);
	assert_int_equal(q.op, RELAY_CTL_RESUME);
	assert_int_equal(parse("bounce id 6b03cdbe.81f.1", &q, &err), 0);
	assert_int_equal(q.kind, RELAY_CTL_ID);
	assert_int_equal(parse("retry all", &q, &err), 0);
	assert_int_equal(q.kind, RELAY_CTL_ALL);
	assert_int_equal(parse("suspend account Acme 2h", &q, &err), 0);
	assert_int_equal(q.kind, RELAY_CTL_ACCOUNT);
	assert_string_equal(q.name, "Acme"); /* account names keep their case */
	assert_int_equal(q.secs, 7200);
	assert_int_equal(parse("resume account acme", &q, &err), 0);
	assert_int_equal(parse("bounce account acme", &q, &err), 0);
	assert_int_equal(q.op, RELAY_CTL_BOUNCE);
	assert_int_equal(q.kind, RELAY_CTL_ACCOUNT);
	assert_int_equal(parse("retry domain x.example", &q, &err), 0);

	static const struct {
		const char *in, *says;
	} bad[] = {
	    {"", "empty"},
	    {"frobnicate", "unknown command"},
	    {"summary now", "no argument"},
	    {"list 0", "LIMIT"},
	    {"list 99999999999", "LIMIT"},
	    {"list 10001", "LIMIT"},
	    {"list -1", "LIMIT"},
	    {"list after", "CURSOR is missing"},
	    {"list 5 after", "CURSOR is missing"},
	    {"list after 0", "bad CURSOR"},
	    {"list after x1", "bad CURSOR"},
	    {"list after -3", "bad CURSOR"},
	    {"list after 99999999999999999999999", "bad CURSOR"},
	    {"list 5 before 3", "unexpected 'before'"},
	    {"list after 3 4", "too many words"},
	    {"list after 3 after 4", "too many words"},
	    {"suspend", "what?"},
	    {"suspend id x", "domain, site, pool or account"},
	    {"suspend domain", "NAME is missing"},
	    {"suspend domain a.example 0", "duration"},
	    {"suspend domain a.example soon", "duration"},
	    {"suspend domain a.example @", "bad time"},
	    {"suspend domain a.example 1h extra", "too many"},
	    {"resume domain a.example 1h", "too many"},
	    {"bounce all", "id, domain or account"},
	    {"bounce site a:25", "id, domain or account"},
	    {"retry account acme", "id, domain or all"},
	    {"retry pool bulk", "id, domain or all"},
	    {"retry all x", "no name"},
	    {"retry  all", "stray space"},
	    {" summary", "stray space"},
	    {"summary ", "stray space"},
	    {"retry\tall", "printable"},
	    {"retry domain \xc3\xa9.example", "printable"},
	    {"a b c d e f", "too many words"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		if (parse(bad[i].in, &q, &err) == 0) fail_msg("accepted '%s'", bad[i].in);
		if (!strstr(err.msg, bad[i].says))
			fail_msg("'%s': '%s' does not say '%s'", bad[i].in, err.msg, bad[i].says);
	}
	/* a NUL inside the line, an over-long line and an over-long name */
	assert_int_equal(relay_ctl_parse("retry\0all", 9, &q, &err), -1);
	char big[RELAY_CTL_LINE_MAX + 10];
	memset(big, 'a', sizeof big);
	assert_int_equal(relay_ctl_parse(big, sizeof big, &q, &err), -1);
	assert_non_null(strstr(err.msg, "longer than"));
	char name[300 + 16];
	memcpy(name, "bounce id ", 10);
	memset(name + 10, 'b', 300);
	name[310] = 0;
	assert_int_equal(parse(name, &q, &err), -1);
	assert_non_null(strstr(err.msg, "longer than"));
}

struct seen {
	int n;
};

static void on_recovered(void *arg, const struct relay_record *m, const struct relay_loc *loc,
                         const uint32_t *states, const uint32_t *attempts, const int64_t *next)
{
	struct seen *s = arg;
	(void)states, (void)attempts, (void)next;
	if (!strcmp(m->id, "old.1")) {
		assert_string_equal(m->sender, "s@x.example");
		assert_string_equal(m->attrs, "");
		assert_string_equal(m->rcpts, "a@b.example");
		assert_int_equal(loc->len, 4);
	} else {
		assert_string_equal(m->id, "new.2");
		assert_string_equal(m->sender, "t@y.example");
		assert_string_equal(m->attrs, "account=acme pool=bulk");
		assert_string_equal(m->rcpts, "c@d.example");
		assert_string_equal(m->rcpts + strlen(m->rcpts) + 1, "e@f.example");
		assert_int_equal(loc->len, 1000);
	}
	s->n++;
}

static void test_recovery_keeps_envelopes(void **state)
{
	(void)state;
	char dir[] = "/tmp/mailrep-sched-XXXXXX";
	assert_non_null(mkdtemp(dir));
	static const char payload[] = "old.1\0s@x.example\0001700000000\0"
	                              "1\0a@b.example\0hi\r\n";
	size_t plen = sizeof payload - 1;
	uint8_t rec[128] = {'M', 'R', 'S', '1', 'M', 0, 0, 0, (uint8_t)plen, 0, 0, 0};
	memcpy(rec + RELAY_RECORD_HDR, payload, plen);
	uLong crc = crc32(crc32(0L, rec + 4, 8), rec + RELAY_RECORD_HDR, (uInt)plen);
	for (int i = 0; i < 4; i++) rec[12 + i] = (uint8_t)(crc >> (8 * i));
	struct base_buf b;
	base_buf_init(&b);
	base_buf_append(&b, rec, RELAY_RECORD_HDR + plen);
	char body[1000];
	memset(body, 'x', sizeof body);
	const char *rc[] = {"c@d.example", "e@f.example"};
	relay_record_msg(&b, "new.2", "t@y.example", "account=acme pool=bulk", 1700000001, rc, 2,
	                 body, sizeof body);
	char path[64];
	snprintf(path, sizeof path, "%s/seg-00000001", dir);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(b.data, 1, b.len, f), b.len);
	fclose(f);
	base_buf_free(&b);
	struct seen s = {0};
	struct base_err err;
	assert_int_equal(relay_spool_scan(dir, on_recovered, &s, &err), 0);
	assert_int_equal(s.n, 2);
	s.n = 0;
	struct relay_spool *sp;
	assert_int_equal(relay_spool_open(&sp, dir, on_recovered, &s, &err), 0);
	assert_int_equal(s.n, 2);
	relay_spool_close(sp);
	for (int i = 1; i <= 3; i++) { /* open starts a segment of its own */
		snprintf(path, sizeof path, "%s/seg-%08d", dir, i);
		unlink(path);
	}
	assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_heap_random),
	    cmocka_unit_test(test_heap_only_due),
	    cmocka_unit_test(test_msg_due),
	    cmocka_unit_test(test_ctl_parse),
	    cmocka_unit_test(test_recovery_keeps_envelopes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
