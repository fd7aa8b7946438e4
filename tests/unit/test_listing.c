/*
 * test_listing.c — unit tests of the listing module: the T(/n) recurrence,
 * SPAMSCORE rounding, prefix tables, the import line parser, and the level
 * policy run against a real SQLite store in a temporary directory with time
 * moved by hand (expiry, extension, whitelist, reserved ranges, RFC 5782
 * entries, de-escalation, delisting) and schema migrations.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "listing/listing.h"
#include "listing/store.h"

#define DAY 86400
#define T0  1767225600 /* 2026-01-01T00:00:00Z */

static char dir[64];

static int setup_dir(void **state)
{
	(void)state;
	snprintf(dir, sizeof dir, "/tmp/test_listing.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static struct listing_store *fresh_store(const char *name)
{
	char path[160];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	unlink(path);
	struct listing_store *s;
	struct base_err err;
	int r = listing_store_open(path, &s, &err);
	if (r < 0) fail_msg("%s", err.msg);
	return s;
}

static void add(struct listing_store *s, const char *ip, int64_t t)
{
	struct listing_impact imp = {0};
	assert_int_equal(listing_ip_parse(ip, &imp.ip), 0);
	imp.time = t;
	struct base_err err;
	assert_int_equal(listing_impact_add(s, &imp, NULL, &err), 0);
}

static void refresh(struct listing_store *s, const struct listing_policy *p, int64_t now)
{
	struct base_err err;
	if (listing_refresh(s, p, now, 0, NULL, &err) < 0) fail_msg("%s", err.msg);
}

/* The active listing of (level, key), or 0 if none. */
struct find {
	int level;
	const char *key;
	struct listing_record rec;
	int n;
};

static int find_cb(void *ctx, const struct listing_record *r)
{
	struct find *f = ctx;
	if (r->level == f->level && !strcmp(r->key, f->key)) {
		f->rec = *r;
		f->rec.ranges = NULL;
		f->n++;
	}
	return 0;
}

static int active(struct listing_store *s, int level, const char *key, struct listing_record *out)
{
	struct find f = {.level = level, .key = key};
	struct base_err err;
	assert_int_equal(s->ops->listings_scan(s, LISTING_ACTIVE, level, NULL, find_cb, &f, &err),
	                 0);
	assert_true(f.n <= 1);
	if (out && f.n) *out = f.rec;
	return f.n;
}

/* ---- formulas ------------------------------------------------------------ */

static void test_l2_thresholds(void **state)
{
	(void)state;
	struct listing_policy p;
	listing_policy_defaults(&p);
	assert_int_equal(listing_l2_threshold(&p, 32), 1);
	assert_int_equal(listing_l2_threshold(&p, 28), 1);
	assert_int_equal(listing_l2_threshold(&p, 27), 1);
	assert_int_equal(listing_l2_threshold(&p, 26), 2);
	assert_int_equal(listing_l2_threshold(&p, 25), 3);
	assert_int_equal(listing_l2_threshold(&p, 24), 4);
	assert_int_equal(listing_l2_threshold(&p, 23), 6);
	assert_int_equal(listing_l2_threshold(&p, 22), 9);
	assert_int_equal(listing_l2_threshold(&p, 21), 13);
	assert_int_equal(listing_l2_threshold(&p, 20), 19);
	assert_int_equal(listing_l2_threshold(&p, 19), 28);
	assert_int_equal(listing_l2_threshold(&p, 18), 41);
	/* the recurrence holds everywhere below /24 and never overflows */
	for (unsigned n = 1; n <= 23; n++)
		assert_true(listing_l2_threshold(&p, n - 1) >= listing_l2_threshold(&p, n));
	for (unsigned n = 10; n <= 24; n++)
		assert_int_equal(listing_l2_threshold(&p, n - 1),
		                 listing_l2_threshold(&p, n) + listing_l2_threshold(&p, n + 2));
	assert_true(listing_l2_threshold(&p, 0) > 1000);
	/* configured bases move the whole table */
	struct base_err err;
	assert_int_equal(listing_policy_set(&p, "l2-24", "5", &err), 0);
	assert_int_equal(listing_l2_threshold(&p, 23), 7);
	assert_int_equal(listing_policy_set(&p, "l2-24", "0", &err), -1);
	assert_int_equal(listing_policy_set(&p, "bogus", "1", &err), -1);
}

static void test_spamscore(void **state)
{
	(void)state;
	assert_int_equal(listing_spamscore10(50, 100000), 500);
	assert_int_equal(listing_spamscore10(1, 3), 333333);      /* 33333.33 -> 33333.3 */
	assert_int_equal(listing_spamscore10(2, 3), 666667);      /* 66666.67 -> 66666.7 */
	assert_int_equal(listing_spamscore10(999, 2000000), 500); /* 49.95 rounds up */
	assert_int_equal(listing_spamscore10(998, 2000000), 499); /* 49.90 */
	assert_int_equal(listing_spamscore10(1, 400000), 3);      /* 0.25 -> 0.3 */
	assert_int_equal(listing_spamscore10(1, 2000001), 0);     /* 0.0499... -> 0.0 */
	assert_int_equal(listing_spamscore10(5, 0), 0);
	assert_int_equal(listing_spamscore_min_impacts(500, 2000000), 999);
	assert_int_equal(listing_spamscore_min_impacts(500, 65536), 33);
	assert_int_equal(listing_spamscore_min_impacts(500, 1048576), 524);
	/* min_impacts is exactly the boundary, for many sizes */
	for (uint64_t total = 1; total < 5000000; total = total * 3 + 7) {
		uint64_t n = listing_spamscore_min_impacts(500, total);
		assert_true(listing_spamscore10(n, total) >= 500);
		if (n) assert_true(listing_spamscore10(n - 1, total) < 500);
	}
	struct listing_policy p;
	listing_policy_defaults(&p);
	struct base_err err;
	assert_int_equal(listing_policy_set(&p, "l3-min-score", "49.9", &err), 0);
	assert_int_equal(p.l3_min_score10, 499);
	assert_int_equal(listing_policy_set(&p, "l3-min-score", "49.95", &err), -1);
}

static void test_never_and_test_entries(void **state)
{
	(void)state;
	struct listing_policy p;
	listing_policy_defaults(&p);
	struct listing_ip ip;
	const char *reserved[] = {"10.1.2.3",   "127.0.0.2",   "192.168.1.1", "172.20.0.1",
	                          "100.64.1.1", "169.254.0.1", "224.0.0.1",   "::1",
	                          "fe80::1",    "fd00::1",     "2001:db8::1"};
	for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
		assert_int_equal(listing_ip_parse(reserved[i], &ip), 0);
		assert_string_equal(listing_never(&p, &ip), "reserved");
	}
	assert_int_equal(listing_ip_parse("11.2.3.4", &ip), 0);
	assert_null(listing_never(&p, &ip));
	assert_int_equal(listing_ip_parse("127.0.0.2", &ip), 0);
	assert_true(listing_is_test_listed(&ip));
	assert_int_equal(listing_ip_parse("127.0.0.1", &ip), 0);
	assert_false(listing_is_test_listed(&ip));
	assert_int_equal(listing_ip_parse("::FFFF:7F00:2", &ip), 0);
	assert_true(listing_is_test_listed(&ip));
	assert_int_equal(listing_ip_parse("::FFFF:7F00:1", &ip), 0);
	assert_false(listing_is_test_listed(&ip));
	struct base_err err;
	assert_int_equal(listing_policy_set(&p, "never", "11.2.0.0/16", &err), 0);
	assert_int_equal(listing_ip_parse("11.2.3.4", &ip), 0);
	assert_string_equal(listing_never(&p, &ip), "reserved");
}

/* ---- prefix tables --------------------------------------------------------- */

static void addl(struct listing_prefixes *t, const char *line, int want)
{
	struct base_err err;
	int r = listing_prefixes_add_line(t, line, strlen(line), &err);
	if (r != want) fail_msg("line '%s': got %d (%s)", line, r, r < 0 ? err.msg : "");
}

static void test_prefixes(void **state)
{
	(void)state;
	struct listing_prefixes *t = listing_prefixes_new();
	addl(t, "# comment", 0);
	addl(t, "", 0);
	addl(t, "11.0.0.0/8 big allocation", 0);
	addl(t, "11.1.0.0/16\tAS64500", 0);
	addl(t, "11.1.2.0\t24\t64501_64502", 0);
	addl(t, "11.1.2.0\t24\t99", 0); /* duplicate: the first wins */
	addl(t, "12.0.0.0\t20\t64503", 0);
	addl(t, "12.0.8.0\t21\t64503", 0); /* overlaps the /20 */
	addl(t, "12.1.0.0\t24\t64503,64504", 0);
	addl(t, "2001:db8::\t32\t64505", 0); /* IPv6: skipped */
	addl(t, "11.1.2.1/24 x", -1);        /* host bits */
	addl(t, "11.1.2.0/33 x", -1);
	addl(t, "300.1.2.0/24 x", -1);
	addl(t, "11.1.2.0\t24", -1);
	addl(t, "11.1.2.0\t24\tASX", -1);
	addl(t, "11.1.2.0\t24\t123x", -1);
	listing_prefixes_finish(t);
	const struct listing_prefix *p = listing_prefixes_match(t, 0x0b010203); /* 11.1.2.3 */
	assert_non_null(p);
	assert_int_equal(p->len, 24);
	assert_int_equal(p->asn, 64501);
	p = listing_prefixes_match(t, 0x0b010303);
	assert_int_equal(p->len, 16);
	assert_int_equal(p->asn, 64500);
	p = listing_prefixes_match(t, 0x0b020304);
	assert_int_equal(p->len, 8);
	assert_string_equal(p->name, "big allocation");
	assert_int_equal(p->asn, 0);
	assert_null(listing_prefixes_match(t, 0x0d000001));
	assert_int_equal(listing_prefixes_as_size(t, 64503), 4096 + 256); /* /21 inside the /20 */
	assert_int_equal(listing_prefixes_as_size(t, 64500), 65536);
	assert_int_equal(listing_prefixes_as_size(t, 1), 0);
	listing_prefixes_free(t);
}

static void test_import_parse(void **state)
{
	(void)state;
	struct listing_impact imp;
	struct base_err err;
	char l1[] = "2026-01-02T03:04:05Z\t11.2.3.4\ttrap@example.org";
	assert_int_equal(listing_impact_parse_line(l1, strlen(l1), 0, &imp, &err), 1);
	assert_int_equal(imp.time, T0 + DAY + 3 * 3600 + 4 * 60 + 5);
	assert_string_equal(imp.trap, "trap@example.org");
	assert_null(imp.source);
	char l2[] = "@1700000000\t2a00:1450::1\t-\tnet\thelo\tfrom@x\trcpt@y\t<id@x>\tSubject here";
	assert_int_equal(listing_impact_parse_line(l2, strlen(l2), 0, &imp, &err), 1);
	assert_int_equal(imp.ip.family, 6);
	assert_null(imp.trap);
	assert_string_equal(imp.subject, "Subject here");
	char l3[] = "-\t11.2.3.4";
	assert_int_equal(listing_impact_parse_line(l3, strlen(l3), 42, &imp, &err), 1);
	assert_int_equal(imp.time, 42);
	char c[] = "# comment";
	assert_int_equal(listing_impact_parse_line(c, strlen(c), 0, &imp, &err), 0);
	const char *bad[] = {"2026-01-02\t11.2.3.400",
	                     "yesterday\t11.2.3.4",
	                     "2026-01-02",
	                     "2026-01-02\t11.2.3.4\ta\tb\tc",
	                     "2026-01-02\t11.2.3.4\ta\tb\tc\td\te\tf\tg\th",
	                     "@x\t11.2.3.4",
	                     "2026-01-02\t11.2.3.4\ttr\x01p"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char buf[128];
		snprintf(buf, sizeof buf, "%s", bad[i]);
		if (listing_impact_parse_line(buf, strlen(buf), 0, &imp, &err) != -1)
			fail_msg("accepted '%s'", bad[i]);
	}
	char big[LISTING_FIELD_MAX + 64];
	int n = snprintf(big, sizeof big, "-\t11.2.3.4\t");
	memset(big + n, 'a', LISTING_FIELD_MAX + 1);
	big[n + LISTING_FIELD_MAX + 1] = 0;
	assert_int_equal(listing_impact_parse_line(big, strlen(big), 0, &imp, &err), -1);
}

/* ---- policy against a real store ------------------------------------------ */

static void test_l1_expiry_and_extension(void **state)
{
	(void)state;
	struct listing_store *s = fresh_store("l1.db");
	struct listing_policy p;
	listing_policy_defaults(&p);
	struct listing_record r;
	add(s, "11.2.3.4", T0);
	refresh(s, &p, T0 + DAY);
	assert_int_equal(active(s, 1, "11.2.3.4", &r), 1);
	assert_int_equal(r.expires, T0 + 7 * DAY);
	assert_int_equal(r.listed_at, T0);
	add(s, "11.2.3.4", T0 + 3 * DAY); /* extends */
	refresh(s, &p, T0 + 4 * DAY);
	assert_int_equal(active(s, 1, "11.2.3.4", &r), 1);
	assert_int_equal(r.expires, T0 + 10 * DAY);
	assert_int_equal(r.listed_at, T0);
	assert_int_equal(r.impacts, 2);
	refresh(s, &p, T0 + 10 * DAY - 1);
	assert_int_equal(active(s, 1, "11.2.3.4", NULL), 1);
	refresh(s, &p, T0 + 10 * DAY);
	assert_int_equal(active(s, 1, "11.2.3.4", NULL), 0);
	struct listing_stats st;
	struct base_err err;
	assert_int_equal(listing_stats(s, T0 + 10 * DAY, &st, &err), 0);
	assert_int_equal(st.removed48[1], 1);
	assert_int_equal(st.listed[1], 0);
	/* a new impact after the gap starts a new episode */
	add(s, "11.2.3.4", T0 + 20 * DAY);
	refresh(s, &p, T0 + 20 * DAY);
	assert_int_equal(active(s, 1, "11.2.3.4", &r), 1);
	assert_int_equal(r.listed_at, T0 + 20 * DAY);
	/* threshold 2: one impact in the window is not enough */
	assert_int_equal(listing_policy_set(&p, "l1-threshold", "2", &err), 0);
	refresh(s, &p, T0 + 20 * DAY);
	assert_int_equal(active(s, 1, "11.2.3.4", NULL), 0);
	add(s, "11.2.3.4", T0 + 21 * DAY);
	refresh(s, &p, T0 + 21 * DAY);
	assert_int_equal(active(s, 1, "11.2.3.4", &r), 1);
	assert_int_equal(r.expires, T0 + 27 * DAY); /* the 2nd newest + 7 days */
	listing_store_close(s);
}

static void test_whitelist_reserved_and_l2(void **state)
{
	(void)state;
	struct listing_store *s = fresh_store("l2.db");
	struct listing_policy p;
	listing_policy_defaults(&p);
	struct listing_prefixes *al = listing_prefixes_new();
	addl(al, "11.3.0.0/26 small", 0);
	listing_prefixes_finish(al);
	p.allocs = al;
	p.whitelist = calloc(1, sizeof *p.whitelist);
	assert_int_equal(base_parse_cidr("11.3.0.5", &p.whitelist[0], NULL), 0);
	p.n_whitelist = 1;
	/* /26 needs 2: one listed IP plus a whitelisted one is not enough */
	add(s, "11.3.0.1", T0);
	add(s, "11.3.0.5", T0);
	add(s, "10.0.0.1", T0);
	refresh(s, &p, T0 + 1);
	assert_int_equal(active(s, 1, "11.3.0.1", NULL), 1);
	assert_int_equal(active(s, 1, "11.3.0.5", NULL), 0);
	assert_int_equal(active(s, 1, "10.0.0.1", NULL), 0);
	assert_int_equal(active(s, 2, "11.3.0.0/26", NULL), 0);
	add(s, "11.3.0.2", T0 + DAY);
	refresh(s, &p, T0 + DAY);
	struct listing_record r;
	assert_int_equal(active(s, 2, "11.3.0.0/26", &r), 1);
	assert_int_equal(r.expires, T0 + 7 * DAY); /* the 2nd latest contribution ends then */
	/* outside the table: the /24 fallback needs 4 */
	add(s, "11.4.0.1", T0);
	add(s, "11.4.0.2", T0);
	add(s, "11.4.0.3", T0);
	refresh(s, &p, T0 + DAY);
	assert_int_equal(active(s, 2, "11.4.0.0/24", NULL), 0);
	add(s, "11.4.0.3", T0 + DAY);
	refresh(s, &p, T0 + DAY);
	assert_int_equal(active(s, 2, "11.4.0.0/24", &r), 1);
	assert_int_equal(r.expires, T0 + 7 * DAY);
	/* de-escalation: delisting one IP of the /26 drops it below 2 */
	struct listing_ip ip;
	listing_ip_parse("11.3.0.2", &ip);
	int outcome;
	char why[200];
	struct base_err err;
	assert_int_equal(
	    listing_delist(s, &p, &ip, 1, 0, T0 + 2 * DAY, NULL, &outcome, why, sizeof why, &err),
	    0);
	assert_int_equal(outcome, LISTING_DELISTED_NOW);
	refresh(s, &p, T0 + 2 * DAY);
	assert_int_equal(active(s, 1, "11.3.0.2", NULL), 0);
	assert_int_equal(active(s, 2, "11.3.0.0/26", NULL), 0);
	/* impacts after the delisting list it again */
	add(s, "11.3.0.2", T0 + 2 * DAY + 1);
	refresh(s, &p, T0 + 2 * DAY + 1);
	assert_int_equal(active(s, 1, "11.3.0.2", NULL), 1);
	assert_int_equal(active(s, 2, "11.3.0.0/26", NULL), 1);
	listing_policy_free(&p);
	listing_prefixes_free(al);
	listing_store_close(s);
}

static void test_l3(void **state)
{
	(void)state;
	struct listing_store *s = fresh_store("l3.db");
	struct listing_policy p;
	listing_policy_defaults(&p);
	struct listing_prefixes *as = listing_prefixes_new();
	addl(as, "11.16.0.0\t12\t64600", 0); /* 1048576 IPs: SPAMSCORE 50 needs 524 */
	addl(as, "11.5.0.0\t16\t64601", 0);  /* 65536 IPs: 50 impacts suffice */
	listing_prefixes_finish(as);
	p.asmap = as;
	char ip[32];
	for (int i = 0; i < 49; i++) {
		snprintf(ip, sizeof ip, "11.5.%d.1", i);
		add(s, ip, T0 + i);
	}
	refresh(s, &p, T0 + DAY);
	assert_int_equal(active(s, 3, "AS64601", NULL), 0);
	add(s, "11.5.100.1", T0 + 100);
	refresh(s, &p, T0 + DAY);
	struct listing_record r;
	assert_int_equal(active(s, 3, "AS64601", &r), 1);
	assert_int_equal(r.impacts, 50);
	assert_int_equal(r.expires, T0 + 7 * DAY); /* the oldest of the 50 leaves the window */
	refresh(s, &p, T0 + 7 * DAY);
	assert_int_equal(active(s, 3, "AS64601", NULL), 0);
	/* the big AS: 523 impacts give SPAMSCORE 49.9, 524 give 50.0 */
	for (int i = 0; i < 523; i++) {
		snprintf(ip, sizeof ip, "11.%d.%d.%d", 16 + i / 250, i % 250, 1 + i % 7);
		add(s, ip, T0 + 8 * DAY);
	}
	refresh(s, &p, T0 + 8 * DAY);
	assert_int_equal(active(s, 3, "AS64600", NULL), 0);
	add(s, "11.30.1.1", T0 + 8 * DAY);
	refresh(s, &p, T0 + 8 * DAY);
	assert_int_equal(active(s, 3, "AS64600", &r), 1);
	assert_non_null(strstr(r.reason, "SPAMSCORE 50.0"));
	listing_prefixes_free(as);
	listing_store_close(s);
}

static void test_self_service(void **state)
{
	(void)state;
	struct listing_store *s = fresh_store("self.db");
	struct listing_policy p;
	listing_policy_defaults(&p);
	p.delist_max = 2;
	struct listing_ip ip;
	listing_ip_parse("11.6.0.1", &ip);
	add(s, "11.6.0.1", T0);
	refresh(s, &p, T0 + 3600);
	int outcome;
	char why[200];
	struct base_err err;
	assert_int_equal(
	    listing_delist(s, &p, &ip, 1, 1, T0 + 3600, NULL, &outcome, why, sizeof why, &err), 0);
	assert_int_equal(outcome, LISTING_DELIST_REFUSED); /* impact 1 hour ago */
	assert_int_equal(active(s, 1, "11.6.0.1", NULL), 1);
	assert_int_equal(
	    listing_delist(s, &p, &ip, 1, 1, T0 + DAY, NULL, &outcome, why, sizeof why, &err), 0);
	assert_int_equal(outcome, LISTING_DELISTED_NOW);
	refresh(s, &p, T0 + DAY);
	assert_int_equal(active(s, 1, "11.6.0.1", NULL), 0);
	uint64_t n;
	assert_int_equal(s->ops->delist_count(s, "11.6.0.1", NULL, 0, &n, &err), 0);
	assert_int_equal(n, 2);
	/* relisted, then the request limit (2 per 7 days) refuses the next */
	add(s, "11.6.0.1", T0 + DAY + 1);
	refresh(s, &p, T0 + 3 * DAY);
	assert_int_equal(
	    listing_delist(s, &p, &ip, 1, 1, T0 + 3 * DAY, NULL, &outcome, why, sizeof why, &err),
	    0);
	assert_int_equal(outcome, LISTING_DELIST_REFUSED);
	assert_non_null(strstr(why, "limit"));
	listing_store_close(s);
}

/* Incremental refreshes must leave exactly what a full recomputation would:
 * after each one, a forced full refresh finds nothing to change. */
static void test_incremental_equals_full(void **state)
{
	(void)state;
	struct listing_store *s = fresh_store("incr.db");
	struct listing_policy p;
	listing_policy_defaults(&p);
	struct listing_prefixes *al = listing_prefixes_new(), *as = listing_prefixes_new();
	addl(al, "11.70.0.0/26 a", 0);
	addl(al, "11.70.2.0/23 b", 0);
	listing_prefixes_finish(al);
	addl(as, "11.70.0.0\t20\t64700", 0); /* 4096 IPs: 50 impacts list it */
	addl(as, "11.71.0.0\t24\t64701", 0);
	addl(as, "11.71.4.0\t24\t64701", 0);
	listing_prefixes_finish(as);
	p.allocs = al;
	p.asmap = as;
	p.l3_min_impacts = 8; /* so that Level 3 comes and goes in a small world */
	unsigned seed = 12345;
	int incremental = 0, listed3 = 0;
	uint64_t expired = 0;
	int64_t now = T0;
	for (int step = 0; step < 120; step++) {
		/* about 3 hours a step, 15 days in all: impacts leave the window */
		now += 3600 + (int64_t)(seed % 14400);
		/* every fifth step only moves time on */
		int n = step % 5 == 4 ? 0 : 1 + (int)(seed % 4);
		for (int i = 0; i < n; i++) {
			seed = seed * 1103515245u + 12345u;
			char ip[64];
			unsigned x = (seed >> 8) % 100;
			if (x < 70)
				snprintf(ip, sizeof ip, "11.70.%u.%u", (seed >> 16) % 16,
				         1 + (seed >> 4) % 40);
			else if (x < 90)
				snprintf(ip, sizeof ip, "11.71.%u.%u", (seed >> 16) % 6,
				         1 + (seed >> 4) % 40);
			else
				snprintf(ip, sizeof ip, "2a01:4f8::%x", (seed >> 12) % 50);
			/* some impacts arrive late, some early */
			add(s, ip,
			    now - (int64_t)((seed >> 20) % 3) * 3600 + ((x % 10) == 0 ? 1800 : 0));
		}
		struct listing_refresh_result a, b;
		struct base_err err;
		assert_int_equal(listing_refresh(s, &p, now, 0, &a, &err), 0);
		incremental += a.incremental;
		if (a.incremental) expired += a.removed;
		assert_int_equal(listing_refresh(s, &p, now, 1, &b, &err), 0);
		if (b.listed || b.updated || b.removed)
			fail_msg(
			    "step %d (incremental %d): the full refresh changed %llu/%llu/%llu",
			    step, a.incremental, (unsigned long long)b.listed,
			    (unsigned long long)b.updated, (unsigned long long)b.removed);
		struct listing_record r;
		listed3 += active(s, 3, "AS64700", &r) + active(s, 3, "AS64701", &r);
	}
	assert_true(incremental > 100); /* the incremental path was taken, */
	assert_true(expired > 0);       /* listings expired along it */
	assert_true(listed3 > 0);       /* and the world reached Level 3 */
	listing_prefixes_free(al);
	listing_prefixes_free(as);
	listing_store_close(s);
}

static void test_migrations(void **state)
{
	(void)state;
	char path[160];
	snprintf(path, sizeof path, "%s/mig.db", dir);
	unlink(path);
	struct listing_store *s;
	struct base_err err;
	assert_int_equal(listing_store_open(path, &s, &err), 0);
	assert_int_equal(listing_store_version(s), listing_sqlite_schema_latest());
	assert_int_equal(listing_sqlite_schema_latest(), 3);
	listing_store_close(s);
	/* take it back to version 1 by hand; opening migrates forward again */
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
	                              "DROP INDEX listings_removed_at; DROP INDEX impacts_time_ip;"
	                              " CREATE INDEX impacts_time ON impacts(time);"
	                              " CREATE INDEX listings_state ON listings(state, expires);"
	                              " PRAGMA user_version=1",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(listing_store_open(path, &s, &err), 0);
	assert_int_equal(listing_store_version(s), listing_sqlite_schema_latest());
	listing_store_close(s);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db,
	                                    "SELECT count(*) FROM sqlite_master WHERE name IN"
	                                    " ('listings_removed_at', 'impacts_time_ip')",
	                                    -1, &st, NULL),
	                 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 2);
	sqlite3_finalize(st);
	assert_int_equal(
	    sqlite3_prepare_v2(db,
	                       "SELECT count(*) FROM sqlite_master WHERE name IN"
	                       " ('impacts_time', 'listings_state', 'listings_listed_at')",
	                       -1, &st, NULL),
	    SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 0);
	sqlite3_finalize(st);
	/* a newer schema than ours is refused */
	assert_int_equal(sqlite3_exec(db, "PRAGMA user_version=999", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(listing_store_open(path, &s, &err), -1);
	assert_non_null(strstr(err.msg, "newer"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_l2_thresholds),
	    cmocka_unit_test(test_spamscore),
	    cmocka_unit_test(test_never_and_test_entries),
	    cmocka_unit_test(test_prefixes),
	    cmocka_unit_test(test_import_parse),
	    cmocka_unit_test(test_l1_expiry_and_extension),
	    cmocka_unit_test(test_whitelist_reserved_and_l2),
	    cmocka_unit_test(test_l3),
	    cmocka_unit_test(test_self_service),
	    cmocka_unit_test(test_incremental_equals_full),
	    cmocka_unit_test(test_migrations),
	};
	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
