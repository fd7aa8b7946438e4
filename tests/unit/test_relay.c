/*
 * test_relay.c — unit tests of the relay's pure parts and of its spool:
 * record encoding and parsing (round trip, torn tails, checksums, bounds),
 * the spool's recovery after a crash (state records folded in, torn tail
 * cut, finished segments removed), the retry schedule, the forward-path
 * check against open-relay tricks, and bounce classification rules.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "relay/relay.h"

static void test_record_roundtrip(void **state)
{
	(void)state;
	struct base_buf b;
	base_buf_init(&b);
	const char *rc[] = {"a@example.com", "b@example.org"};
	relay_record_msg(&b, "abc.1", "s@example.net", "account=acme pool=bulk", 1700000000, rc, 2,
	                 "Subject: x\r\n\r\nhi\r\n", 19);
	relay_record_state(&b, "abc.1", 1, RELAY_RCPT_PENDING, 3, 1700000600);
	struct relay_record r;
	struct base_err err;
	int n = relay_record_parse((const uint8_t *)b.data, b.len, &r, &err);
	assert_true(n > 0);
	assert_int_equal(r.type, 'M');
	assert_string_equal(r.id, "abc.1");
	assert_string_equal(r.sender, "s@example.net");
	assert_string_equal(r.attrs, "account=acme pool=bulk");
	char v[16];
	assert_int_equal(relay_attr_get(r.attrs, "pool", v, sizeof v), 1);
	assert_string_equal(v, "bulk");
	assert_int_equal(relay_attr_get(r.attrs, "account", v, sizeof v), 1);
	assert_string_equal(v, "acme");
	assert_int_equal(relay_attr_get(r.attrs, "acc", v, sizeof v), 0);
	assert_string_equal(v, "");
	assert_int_equal(r.received, 1700000000);
	assert_int_equal(r.nrcpt, 2);
	assert_string_equal(r.rcpts, "a@example.com");
	assert_string_equal(r.rcpts + strlen(r.rcpts) + 1, "b@example.org");
	assert_int_equal(r.body_len, 19);
	assert_memory_equal(b.data + r.body_off, "Subject: x\r\n\r\nhi\r\n", 19);
	int m = relay_record_parse((const uint8_t *)b.data + n, b.len - (size_t)n, &r, &err);
	assert_int_equal((size_t)(n + m), b.len);
	assert_int_equal(r.type, 'S');
	assert_int_equal(r.rcpt_index, 1);
	assert_int_equal(r.attempts, 3);
	assert_int_equal(r.next, 1700000600);
	/* every proper prefix is a torn record, never an error or a record */
	for (size_t k = 0; k < (size_t)n; k++)
		assert_int_equal(relay_record_parse((const uint8_t *)b.data, k, &r, &err), 0);
	/* any flipped payload byte is caught by the checksum */
	for (size_t k = RELAY_RECORD_HDR; k < (size_t)n; k += 7) {
		b.data[k] ^= 0x20;
		assert_int_equal(relay_record_parse((const uint8_t *)b.data, b.len, &r, &err), -1);
		b.data[k] ^= 0x20;
	}
	b.data[0] = 'X';
	assert_int_equal(relay_record_parse((const uint8_t *)b.data, b.len, &r, &err), -1);
	assert_non_null(strstr(err.msg, "byte 0"));
	base_buf_free(&b);
}

/* A message record as written before attributes existed ('M', no attrs
 * field) is still read, with empty attributes. */
static void test_record_without_attrs(void **state)
{
	(void)state;
	static const char payload[] = "old.1\0s@x.example\0001700000000\0" "1\0a@b.example\0hi\r\n";
	size_t plen = sizeof payload - 1;
	uint8_t rec[128] = {'M', 'R', 'S', '1', 'M', 0, 0, 0, (uint8_t)plen, 0, 0, 0};
	memcpy(rec + RELAY_RECORD_HDR, payload, plen);
	uLong crc = crc32(crc32(0L, rec + 4, 8), rec + RELAY_RECORD_HDR, (uInt)plen);
	for (int i = 0; i < 4; i++) rec[12 + i] = (uint8_t)(crc >> (8 * i));
	struct relay_record r;
	struct base_err err;
	assert_int_equal(relay_record_parse(rec, RELAY_RECORD_HDR + plen, &r, &err),
	                 (int)(RELAY_RECORD_HDR + plen));
	assert_int_equal(r.type, 'M');
	assert_string_equal(r.attrs, "");
	assert_string_equal(r.sender, "s@x.example");
	assert_int_equal(r.nrcpt, 1);
	assert_int_equal(r.body_len, 4);
	/* attributes must be key=value words */
	assert_true(relay_attrs_valid(""));
	assert_true(relay_attrs_valid("a=1 b=2"));
	assert_false(relay_attrs_valid("a=1  b=2"));
	assert_false(relay_attrs_valid("a"));
	assert_false(relay_attrs_valid("=x"));
	assert_false(relay_attrs_valid("a=1 "));
	assert_false(relay_attrs_valid("a=\x01"));
	struct base_buf b;
	base_buf_init(&b);
	const char *rc[] = {"a@example.com"};
	relay_record_msg(&b, "id1", "s@x", "bad attrs", 1, rc, 1, "", 0);
	assert_int_equal(relay_record_parse((const uint8_t *)b.data, b.len, &r, &err), -1);
	assert_non_null(strstr(err.msg, "attributes"));
	base_buf_free(&b);
}

static void test_record_bounds(void **state)
{
	(void)state;
	struct base_buf b;
	base_buf_init(&b);
	const char *rc[] = {"a@example.com"};
	/* a bad id is refused even with a valid checksum */
	relay_record_msg(&b, "bad/id", "s@x", "", 1, rc, 1, "", 0);
	struct relay_record r;
	struct base_err err;
	assert_int_equal(relay_record_parse((const uint8_t *)b.data, b.len, &r, &err), -1);
	assert_non_null(strstr(err.msg, "message id"));
	/* an absurd length is refused before waiting for more bytes */
	uint8_t h[RELAY_RECORD_HDR] = {'M', 'R', 'S', '1', 'M', 0, 0, 0, 0xff, 0xff, 0xff, 0x7f};
	assert_int_equal(relay_record_parse(h, sizeof h, &r, &err), -1);
	base_buf_free(&b);
}

struct seen {
	int n;
	char ids[8][RELAY_ID_MAX + 1];
	uint32_t states[8][4], attempts[8][4];
	int64_t next[8][4];
};

static void on_recover(void *arg, const struct relay_record *m, const struct relay_loc *loc,
                       const uint32_t *states, const uint32_t *attempts, const int64_t *next)
{
	struct seen *s = arg;
	assert_true(s->n < 8);
	strcpy(s->ids[s->n], m->id);
	for (uint32_t i = 0; i < m->nrcpt && i < 4; i++) {
		s->states[s->n][i] = states[i];
		s->attempts[s->n][i] = attempts[i];
		s->next[s->n][i] = next[i];
	}
	s->n++;
}

static int count_segments(const char *dir)
{
	DIR *d = opendir(dir);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (!strncmp(de->d_name, "seg-", 4)) n++;
	closedir(d);
	return n;
}

static void test_spool_recovery(void **state)
{
	(void)state;
	char dir[] = "/tmp/mailrep-spool-XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct relay_spool *sp;
	struct base_err err;
	struct seen s = {0};
	assert_int_equal(relay_spool_open(&sp, dir, on_recover, &s, &err), 0);
	assert_int_equal(s.n, 0);
	const char *rc[] = {"a@example.com", "b@example.org"};
	struct relay_loc l1, l2;
	assert_int_equal(
	    relay_spool_add(sp, "m1", "s@x.example", "", 10, rc, 2, "body one\r\n", 10, &l1, &err), 0);
	assert_int_equal(relay_spool_add(sp, "m2", "", "pool=tx", 11, rc, 1, "body two\r\n", 10, &l2, &err),
	                 0);
	assert_int_equal(relay_spool_state(sp, "m1", 0, RELAY_RCPT_DELIVERED, 1, 0, &err), 0);
	assert_int_equal(relay_spool_state(sp, "m1", 1, RELAY_RCPT_PENDING, 2, 999, &err), 0);
	assert_int_equal(relay_spool_state(sp, "m2", 0, RELAY_RCPT_BOUNCED, 1, 0, &err), 0);
	assert_int_equal(relay_spool_commit(sp, &err), 0);
	struct base_buf b;
	base_buf_init(&b);
	assert_int_equal(relay_spool_read(sp, &l2, &b, &err), 0);
	assert_string_equal(b.data, "body two\r\n");
	uint32_t seg = l1.seg;
	relay_spool_close(sp); /* as after kill -9: nothing more is written */

	/* a torn record at the tail (an unacknowledged write) */
	char path[256];
	snprintf(path, sizeof path, "%s/seg-%08u", dir, seg);
	int fd = open(path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "MRS1M\0\0\0\x40\0\0\0", 12), 12);
	close(fd);
	struct stat st1;
	stat(path, &st1);

	assert_int_equal(relay_spool_open(&sp, dir, on_recover, &s, &err), 0);
	assert_int_equal(s.n, 1); /* m2 is finished, m1 has one pending recipient */
	assert_string_equal(s.ids[0], "m1");
	assert_int_equal(s.states[0][0], RELAY_RCPT_DELIVERED);
	assert_int_equal(s.states[0][1], RELAY_RCPT_PENDING);
	assert_int_equal(s.attempts[0][1], 2);
	assert_int_equal(s.next[0][1], 999);
	struct stat st2;
	stat(path, &st2);
	assert_int_equal(st2.st_size, st1.st_size - 12); /* the torn tail is cut */
	assert_int_equal(relay_spool_read(sp, &l1, &b, &err), 0);
	assert_string_equal(b.data, "body one\r\n");
	/* finishing m1 frees the old segment; the current one stays */
	assert_int_equal(count_segments(dir), 2);
	assert_int_equal(relay_spool_state(sp, "m1", 1, RELAY_RCPT_DELIVERED, 3, 0, &err), 0);
	assert_int_equal(relay_spool_commit(sp, &err), 0);
	relay_spool_release(sp, seg);
	assert_int_equal(count_segments(dir), 1);
	relay_spool_close(sp);

	s.n = 0;
	assert_int_equal(relay_spool_open(&sp, dir, on_recover, &s, &err), 0);
	assert_int_equal(s.n, 0);
	relay_spool_close(sp);
	base_buf_free(&b);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

struct counted {
	uint32_t n, bad;
	uint64_t attempts;
};

static void on_count(void *arg, const struct relay_record *m, const struct relay_loc *loc,
                     const uint32_t *states, const uint32_t *attempts, const int64_t *next)
{
	struct counted *c = arg;
	char want[32];
	/* every third message is delivered: the others come back, in order */
	uint32_t i = c->n + c->n / 2;
	snprintf(want, sizeof want, "m%u", i);
	if (strcmp(m->id, want) || m->nrcpt != 1 || strcmp(m->rcpts, "r@dest.example") ||
	    states[0] != RELAY_RCPT_PENDING || next[0] != 1000 + i || loc->len == 0)
		c->bad++;
	c->attempts += attempts[0];
	c->n++;
}

/* Recovery reads a segment in blocks of 1 MB: records that straddle a
 * block, a record larger than a block, and a bad checksum past the first
 * blocks are read exactly as record by record (everything before the bad
 * record kept, the tail from it cut). */
static void test_spool_recovery_in_blocks(void **state)
{
	(void)state;
	char dir[] = "/tmp/mailrep-spool-XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct relay_spool *sp;
	struct base_err err;
	struct counted c = {0};
	assert_int_equal(relay_spool_open(&sp, dir, on_count, &c, &err), 0);
	const char *rc[] = {"r@dest.example"};
	size_t big = 3u << 20;
	char *body = base_xmalloc(big);
	memset(body, 'y', big);
	struct relay_loc loc, bigloc = {0}, cut = {0};
	char id[32], path[256];
	off_t cut_at = 0;
	for (uint32_t i = 0; i < 6000; i++) {
		snprintf(id, sizeof id, "m%u", i);
		if (i == 5000) { /* the record to damage: the file ends here before it */
			struct stat st;
			snprintf(path, sizeof path, "%s/seg-%08u", dir, loc.seg);
			assert_int_equal(stat(path, &st), 0);
			cut_at = st.st_size;
		}
		/* bodies of 333 bytes, and one of 3 MB */
		size_t len = i == 1500 ? big : 333;
		assert_int_equal(
		    relay_spool_add(sp, id, "s@x.example", "", 1, rc, 1, body, len, &loc, &err), 0);
		if (i == 1500) bigloc = loc;
		if (i == 5000) cut = loc;
		uint32_t st = i % 3 == 2 ? RELAY_RCPT_DELIVERED : RELAY_RCPT_PENDING;
		assert_int_equal(relay_spool_state(sp, id, 0, st, 1 + i % 2, 1000 + i, &err), 0);
	}
	assert_int_equal(relay_spool_commit(sp, &err), 0);
	relay_spool_close(sp);
	assert_int_equal(cut.seg, bigloc.seg); /* all in one segment */

	/* the whole spool comes back */
	assert_int_equal(relay_spool_scan(dir, on_count, &c, &err), 0);
	assert_int_equal(c.n, 4000);
	assert_int_equal(c.bad, 0);
	assert_int_equal(c.attempts, 6000); /* 1 or 2, alternately */

	/* a damaged body: recovery stops at its record and cuts it off */
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "z", 1, (off_t)cut.off + 100), 1);
	close(fd);
	memset(&c, 0, sizeof c);
	assert_int_equal(relay_spool_open(&sp, dir, on_count, &c, &err), 0);
	assert_int_equal(c.n, 3334); /* m0 .. m4999, less the delivered ones */
	assert_int_equal(c.bad, 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, cut_at);
	struct base_buf b;
	base_buf_init(&b);
	assert_int_equal(relay_spool_read(sp, &bigloc, &b, &err), 0);
	assert_int_equal(b.len, big);
	assert_int_equal(memcmp(b.data, body, big), 0);
	base_buf_free(&b);
	relay_spool_close(sp);
	free(body);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* A pinned spool does not rotate: a DSN and the states behind it share a
 * segment, so a crash cannot keep the states and lose the DSN. */
static void test_spool_pin(void **state)
{
	(void)state;
	char dir[] = "/tmp/mailrep-spool-XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct relay_spool *sp;
	struct base_err err;
	struct seen s = {0};
	assert_int_equal(relay_spool_open(&sp, dir, on_recover, &s, &err), 0);
	const char *rc[] = {"a@example.com"};
	size_t big = 40u << 20;
	char *body = base_xmalloc(big);
	memset(body, 'x', big);
	struct relay_loc l1, l2, l3, l4;
	/* 80 MB: past the rotation size, the next write would start a segment */
	assert_int_equal(relay_spool_add(sp, "b1", "s@x", "", 1, rc, 1, body, big, &l1, &err), 0);
	assert_int_equal(relay_spool_add(sp, "b2", "s@x", "", 1, rc, 1, body, big, &l2, &err), 0);
	assert_int_equal(l1.seg, l2.seg);
	relay_spool_pin(sp, 1);
	assert_int_equal(relay_spool_add(sp, "dsn1", "", "", 2, rc, 1, "dsn\r\n", 5, &l3, &err), 0);
	assert_int_equal(relay_spool_state(sp, "b1", 0, RELAY_RCPT_BOUNCED, 1, 0, &err), 0);
	relay_spool_pin(sp, 0);
	assert_int_equal(l3.seg, l1.seg); /* pinned: still the full segment */
	assert_int_equal(count_segments(dir), 1);
	assert_int_equal(relay_spool_add(sp, "m4", "s@x", "", 3, rc, 1, "m\r\n", 3, &l4, &err), 0);
	assert_int_equal(l4.seg, l1.seg + 1); /* unpinned: rotated */
	assert_int_equal(relay_spool_commit(sp, &err), 0);
	relay_spool_close(sp);
	free(body);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

static void test_schedule(void **state)
{
	(void)state;
	struct relay_schedule s;
	relay_schedule_default(&s);
	assert_int_equal(s.max_age, 5 * 86400);
	/* the first retry is in the greylisting window */
	for (uint32_t r = 0; r < 1000; r += 37) {
		int64_t n = relay_schedule_next(&s, 1, 1000, r * 2654435761u);
		assert_true(n - 1000 >= 5 * 60 && n - 1000 <= 15 * 60);
	}
	/* later ones at least 30 minutes apart, the last delay repeating */
	for (uint32_t a = 2; a < 40; a++) assert_true(relay_schedule_next(&s, a, 0, 12345) >= 1800);
	assert_true(relay_schedule_next(&s, 30, 0, 0) == 14400);
	/* jitter spreads */
	assert_true(relay_schedule_next(&s, 3, 0, 0) != relay_schedule_next(&s, 3, 0, 77));
	struct base_err err;
	assert_int_equal(relay_schedule_parse(&s, "1s,2s,1m", &err), 0);
	assert_int_equal(s.n, 3);
	assert_int_equal(relay_schedule_next(&s, 1, 0, 99), 1);
	assert_int_equal(relay_schedule_next(&s, 9, 0, 0), 60);
	assert_int_equal(relay_schedule_parse(&s, "1s,", &err), -1);
	assert_int_equal(relay_schedule_parse(&s, "", &err), -1);
	assert_int_equal(relay_schedule_parse(&s, "0s", &err), -1);
	assert_int_equal(relay_schedule_parse(&s, "x", &err), -1);
}

static void test_check_rcpt(void **state)
{
	(void)state;
	struct base_err err;
	assert_int_equal(relay_check_rcpt("user@example.com", &err), 0);
	assert_int_equal(relay_check_rcpt("first.last+tag@sub.example.com", &err), 0);
	const char *bad[] = {
	    "user%victim.example@relay.example",
	    "@relay.example:user@victim.example",
	    "\"user@victim.example\"@relay.example",
	    "user@victim.example@relay.example",
	    "victim.example!user@relay.example",
	    "user",
	    "user@",
	    "@example.com",
	    "user@example.com.",
	    "user@.example.com",
	    "user@exa..mple.com",
	    "user@[127.0.0.1]",
	    "a\\@b@example.com",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(relay_check_rcpt(bad[i], &err), -1);
}

static void test_classify(void **state)
{
	(void)state;
	struct relay_rules *r = NULL;
	struct base_err err;
	const char *extra = "# site rules\nquota  ^452 .*storage\n\nbad-mailbox   no-such-person\n";
	assert_int_equal(relay_rules_add(&r, extra, strlen(extra), "extra", &err), 0);
	assert_int_equal(
	    relay_rules_add(&r, relay_rules_default, strlen(relay_rules_default), "default", &err),
	    0);
	assert_string_equal(
	    relay_classify(r, 550, "5.1.1",
	                   "550 5.1.1 <a@b>: Recipient address rejected: User unknown"),
	    "bad-mailbox");
	assert_string_equal(relay_classify(r, 550, "", "550 no-such-person here"), "bad-mailbox");
	assert_string_equal(relay_classify(r, 452, "4.2.2", "452 4.2.2 Mailbox full"), "quota");
	assert_string_equal(relay_classify(r, 452, "", "452 insufficient storage"), "quota");
	assert_string_equal(
	    relay_classify(
	        r, 554, "5.7.1",
	        "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org"),
	    "spam-related");
	assert_string_equal(
	    relay_classify(r, 550, "5.7.26",
	                   "550 5.7.26 unauthenticated mail is prohibited by DMARC policy"),
	    "policy-related");
	assert_string_equal(relay_classify(r, 550, "5.1.2", "550 5.1.2 bad destination system"),
	                    "bad-domain");
	assert_string_equal(relay_classify(r, 0, "", "000 connection refused"), "bad-connection");
	assert_string_equal(relay_classify(r, 500, "", "500 syntax error"), "protocol");
	assert_string_equal(relay_classify(r, 550, "5.2.1", "550 5.2.1 account disabled"),
	                    "inactive-mailbox");
	assert_string_equal(relay_classify(r, 451, "", "451 something else"), "other");
	relay_rules_free(r);
	r = NULL;
	assert_int_equal(relay_rules_add(&r, "nonsense x\n", 11, "f", &err), -1);
	assert_non_null(strstr(err.msg, "f:1"));
	assert_int_equal(relay_rules_add(&r, "\nquota (\n", 9, "f", &err), -1);
	assert_non_null(strstr(err.msg, "f:2"));
	assert_int_equal(relay_rules_add(&r, "quota\n", 6, "f", &err), -1);
	assert_int_equal(relay_rules_add(&r, "quota ((x{99}){99}){99}\n", 24, "f", &err), -1);
	assert_non_null(strstr(err.msg, "interval"));
	assert_int_equal(relay_rules_add(&r, "quota a+++\n", 11, "f", &err), -1);
	assert_int_equal(relay_rules_add(&r, "quota a+b+c+d+e+f+g+h+i+\n", 25, "f", &err), -1);
	relay_rules_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_record_roundtrip),
	    cmocka_unit_test(test_record_bounds),
	    cmocka_unit_test(test_record_without_attrs),
	    cmocka_unit_test(test_spool_recovery),
	    cmocka_unit_test(test_spool_recovery_in_blocks),
	    cmocka_unit_test(test_spool_pin),
	    cmocka_unit_test(test_schedule),
	    cmocka_unit_test(test_check_rcpt),
	    cmocka_unit_test(test_classify),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
