/*
 * test_relay_account.c — unit tests of the relay's accounts: the
 * [account NAME] config sections (good files and errors naming
 * file:line), PBKDF2 password hashes (round trip, wrong passwords,
 * malformed hashes, the unknown-user path), base64 and SASL PLAIN
 * decoding, the durable send counters (hour and day windows, limits,
 * reload from the state file, a corrupt state file refused; written once
 * per commit, a failed write retried; the spool mark and the recount of
 * messages after it at start), and the authentication cache (hits, misses,
 * expiry, its bound).
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

#include "relay/account.h"

static char tmpdir[64];

static const char *path_in(const char *name)
{
	static char p[128];
	snprintf(p, sizeof p, "%s/%s", tmpdir, name);
	return p;
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_password_hash_roundtrip(void **state)
{
	(void)state;
	char h[RELAY_PW_HASH_MAX], h2[RELAY_PW_HASH_MAX];
	struct base_err err;
	assert_int_equal(relay_password_hash("s3cret", 6, 1000, h, sizeof h, &err), 0);
	assert_true(relay_password_hash_valid(h));
	assert_int_equal(strncmp(h, "$pbkdf2-sha256$1000$", 20), 0);
	assert_int_equal(relay_password_verify(h, "s3cret", 6), 1);
	assert_int_equal(relay_password_verify(h, "s3cret!", 7), 0);
	assert_int_equal(relay_password_verify(h, "s3cre", 5), 0);
	assert_int_equal(relay_password_verify(h, "", 0), 0);
	/* salted: the same password hashes differently */
	assert_int_equal(relay_password_hash("s3cret", 6, 1000, h2, sizeof h2, &err), 0);
	assert_string_not_equal(h, h2);
	/* unknown user: the dummy check never succeeds */
	assert_int_equal(relay_password_verify(NULL, "s3cret", 6), 0);
	/* malformed hashes never match and are refused at load */
	const char *bad[] = {"s3cret",
	                     "$pbkdf2-sha256$",
	                     "$pbkdf2-sha256$10$c2FsdHNhbHQ$x",
	                     "$pbkdf2-sha256$1000$!!$AAAA",
	                     "$6$salt$hash",
	                     ""};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_false(relay_password_hash_valid(bad[i]));
		assert_int_equal(relay_password_verify(bad[i], "s3cret", 6), 0);
	}
}

static void test_base64_and_plain(void **state)
{
	(void)state;
	uint8_t out[64];
	char enc[64];
	assert_int_equal(relay_b64_decode("AGFjbWUAcHc=", 12, out, sizeof out), 8);
	assert_memory_equal(out, "\0acme\0pw", 8);
	assert_int_equal(relay_b64_decode("AGFjbWUAcHc", 11, out, sizeof out), 8);
	assert_int_equal(relay_b64_decode("A", 1, out, sizeof out), -1);
	assert_int_equal(relay_b64_decode("AG?j", 4, out, sizeof out), -1);
	assert_int_equal(relay_b64_decode("AGFj bWU=", 9, out, sizeof out), -1);
	assert_int_equal(relay_b64_decode("AGFjbWUAcHc=", 12, out, 4), -1);
	relay_b64_encode((const uint8_t *)"\0acme\0pw", 8, enc, sizeof enc, 1);
	assert_string_equal(enc, "AGFjbWUAcHc=");
	relay_b64_encode((const uint8_t *)"\0acme\0pw", 8, enc, sizeof enc, 0);
	assert_string_equal(enc, "AGFjbWUAcHc");

	char u[16], p[16];
	assert_int_equal(
	    relay_sasl_plain((const uint8_t *)"\0acme\0pw", 8, u, sizeof u, p, sizeof p), 0);
	assert_string_equal(u, "acme");
	assert_string_equal(p, "pw");
	assert_int_equal(
	    relay_sasl_plain((const uint8_t *)"acme\0acme\0pw", 12, u, sizeof u, p, sizeof p), 0);
	/* another authorization identity, no user, missing parts, NUL in the password */
	assert_int_equal(
	    relay_sasl_plain((const uint8_t *)"root\0acme\0pw", 12, u, sizeof u, p, sizeof p), -1);
	assert_int_equal(relay_sasl_plain((const uint8_t *)"\0\0pw", 4, u, sizeof u, p, sizeof p),
	                 -1);
	assert_int_equal(relay_sasl_plain((const uint8_t *)"\0acme", 5, u, sizeof u, p, sizeof p),
	                 -1);
	assert_int_equal(
	    relay_sasl_plain((const uint8_t *)"\0acme\0p\0w", 9, u, sizeof u, p, sizeof p), -1);
	assert_int_equal(relay_sasl_plain((const uint8_t *)"\0averyveryverylongname\0pw", 25, u,
	                                  sizeof u, p, sizeof p),
	                 -1);
}

static void test_accounts_load(void **state)
{
	(void)state;
	char h[RELAY_PW_HASH_MAX], text[1024];
	struct base_err err;
	assert_int_equal(relay_password_hash("pw", 2, 1000, h, sizeof h, &err), 0);
	snprintf(text, sizeof text,
	         "[relay]\nlisten = 127.0.0.1:25\n\n[account acme]\npassword = %s\n"
	         "per-hour = 100\nper-day = 1000\npool = bulk\npools = tx, promo\n\n"
	         "[account zeta]\npassword = %s\n",
	         h, h);
	write_text(path_in("good.ini"), text);
	struct relay_accounts as = {0};
	assert_int_equal(relay_accounts_load(&as, path_in("good.ini"), &err), 0);
	assert_int_equal(as.n, 2);
	const struct relay_acct *a = relay_accounts_find(&as, "acme");
	assert_non_null(a);
	assert_int_equal(a->per_hour, 100);
	assert_int_equal(a->per_day, 1000);
	assert_string_equal(a->pool, "bulk");
	assert_true(relay_acct_may_use_pool(a, "bulk"));
	assert_true(relay_acct_may_use_pool(a, "promo"));
	assert_false(relay_acct_may_use_pool(a, "other"));
	assert_null(relay_accounts_find(&as, "nobody"));
	assert_int_equal(relay_accounts_find(&as, "zeta")->per_hour, 0);
	relay_accounts_free(&as);

	static const char *const bad[][2] = {
	    {"[account acme]\npassword = plain-text\n", "bad1.ini:2: account acme: password"},
	    {"[account acme]\nper-hour = lots\n", "bad2.ini:2: account acme: per-hour"},
	    {"[account a b]\nper-hour = 1\n", "bad3.ini:2: account name 'a b'"},
	    {"[account acme]\nper-day = 5\n", "account acme has no password"},
	    {"[account acme]\ncolour = blue\n", "bad5.ini:2: account acme: unknown setting"},
	    {"[account acme]\npool = has space\n", "bad6.ini:2: account acme: bad pool name"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char name[16];
		snprintf(name, sizeof name, "bad%zu.ini", i + 1);
		write_text(path_in(name), bad[i][0]);
		memset(&as, 0, sizeof as);
		assert_int_equal(relay_accounts_load(&as, path_in(name), &err), -1);
		if (!strstr(err.msg, bad[i][1])) fail_msg("%s: got '%s'", bad[i][1], err.msg);
		relay_accounts_free(&as);
	}
}

/* What the group commit does with the counters. */
static int commit(struct relay_quota *l)
{
	struct base_err err;
	struct relay_quota_snap *q = relay_quota_snapshot(l);
	if (!q) return 1;
	relay_quota_write(q);
	return relay_quota_end(l, q, &err);
}

static void test_limits_windows_and_reload(void **state)
{
	(void)state;
	struct relay_acct a = {.name = "acme", .per_hour = 3, .per_day = 4};
	struct relay_acct z = {.name = "zeta"};
	struct relay_quota *l;
	struct base_err err;
	const char *which;
	uint32_t lim;
	const char *p = path_in("limits");
	unlink(p);
	int64_t t = 1772359500; /* 2026-03-01T10:05:00Z */
	assert_int_equal(relay_quota_open(&l, p, &err), 0);
	assert_int_equal(relay_quota_check(l, &a, t, 3, &which, &lim), 0);
	assert_int_equal(relay_quota_check(l, &a, t, 4, &which, &lim), -1);
	assert_string_equal(which, "hourly");
	assert_int_equal(lim, 3);
	relay_quota_add(l, &a, t, 2, 1, 100);
	relay_quota_add(l, &z, t, 50, 1, 200);
	assert_int_equal(commit(l), 0);
	assert_int_equal(relay_quota_check(l, &a, t + 60, 1, &which, &lim), 0);
	assert_int_equal(relay_quota_check(l, &a, t + 60, 2, &which, &lim), -1);
	assert_int_equal(relay_quota_check(l, &z, t, 100000, &which, &lim), 0);
	relay_quota_close(l);
	/* reloaded from the state file */
	assert_int_equal(relay_quota_open(&l, p, &err), 0);
	assert_int_equal(relay_quota_check(l, &a, t + 60, 2, &which, &lim), -1);
	relay_quota_add(l, &a, t + 60, 1, 1, 300);
	/* next hour: the hour is fresh, the day is not */
	assert_int_equal(relay_quota_check(l, &a, t + 3600, 1, &which, &lim), 0);
	assert_int_equal(relay_quota_check(l, &a, t + 3600, 2, &which, &lim), -1);
	assert_string_equal(which, "daily");
	assert_int_equal(lim, 4);
	/* next day: both fresh */
	assert_int_equal(relay_quota_check(l, &a, t + 86400, 3, &which, &lim), 0);
	relay_quota_close(l);
	/* a corrupt state file is refused with its line */
	write_text(p, "acme 1772359200 3 1772323200 3\nacme 12 x\n");
	assert_int_equal(relay_quota_open(&l, p, &err), -1);
	assert_non_null(strstr(err.msg, "limits:2"));
	unlink(p);
}

/* The state file's newest content (it is kept in slots, slotfile.c). */
static char *slurp(const char *p)
{
	static char buf[4096];
	struct base_slotfile *f;
	struct base_err err;
	char *text;
	size_t len;
	int legacy;
	if (base_slotfile_open(&f, p, &text, &len, &legacy, &err) < 0) return NULL;
	base_slotfile_close(f);
	if (!text) return NULL;
	snprintf(buf, sizeof buf, "%s", text);
	free(text);
	return buf;
}

static void test_limits_written_once_per_commit(void **state)
{
	(void)state;
	struct relay_acct a = {.name = "acme", .per_hour = 100};
	struct relay_quota *l;
	struct base_err err;
	const char *p = path_in("limits-commit");
	unlink(p);
	int64_t t = 1772359500;
	assert_int_equal(relay_quota_open(&l, p, &err), 0);
	assert_null(relay_quota_snapshot(l)); /* nothing counted: nothing to write */
	relay_quota_add(l, &a, t, 1, 2, 10);
	relay_quota_add(l, &a, t, 2, 2, 500);
	relay_quota_add(l, &a, t, 3, 2, 900);
	assert_null(slurp(p)); /* counting alone writes nothing */
	struct relay_quota_snap *q = relay_quota_snapshot(l);
	assert_non_null(q);
	/* counted after the snapshot: the next commit's business */
	relay_quota_add(l, &a, t, 4, 3, 20);
	relay_quota_write(q);
	assert_int_equal(relay_quota_end(l, q, &err), 0);
	assert_string_equal(slurp(p), "@spool 2 900\nacme 1772359200 6 1772323200 6\n");
	assert_int_equal(commit(l), 0);
	assert_string_equal(slurp(p), "@spool 3 20\nacme 1772359200 10 1772323200 10\n");
	assert_int_equal(commit(l), 1); /* unchanged: no write */
	relay_quota_close(l);
	/* a failed write is reported, and the next commit tries again */
	const char *bad = path_in("no-such-dir/limits");
	assert_int_equal(relay_quota_open(&l, bad, &err), 0);
	relay_quota_add(l, &a, t, 1, 1, 1);
	q = relay_quota_snapshot(l);
	relay_quota_write(q);
	assert_int_equal(relay_quota_end(l, q, &err), -1);
	assert_non_null(strstr(err.msg, "no-such-dir"));
	q = relay_quota_snapshot(l);
	assert_non_null(q);
	relay_quota_write(q);
	assert_int_equal(relay_quota_end(l, q, &err), -1);
	relay_quota_close(l);
	unlink(p);
}

static void test_limits_recount_after_the_mark(void **state)
{
	(void)state;
	struct relay_acct a = {.name = "acme", .per_hour = 5, .per_day = 8};
	struct relay_quota *l;
	struct base_err err;
	const char *which;
	uint32_t lim;
	const char *p = path_in("limits-mark");
	int64_t t = 1772359500, hour = 1772359200;
	/* counts as of spool segment 3, offset 100 */
	write_text(p, "@spool 3 100\nacme 1772359200 2 1772323200 2\n");
	assert_int_equal(relay_quota_open(&l, p, &err), 0);
	assert_int_equal(relay_quota_recover(l, "acme", t, t, 1, 3, 100), 0); /* in the file */
	assert_int_equal(relay_quota_recover(l, "acme", t, t, 1, 2, 9999), 0);
	assert_int_equal(relay_quota_recover(l, "acme", t, t, 1, 3, 101), 1);
	assert_int_equal(relay_quota_recover(l, "acme", t, t, 1, 4, 0), 1);
	assert_int_equal(relay_quota_recover(l, NULL, t, t, 1, 5, 0), 0);
	/* received in the previous hour: counts for the day only */
	assert_int_equal(relay_quota_recover(l, "acme", hour - 10, t, 2, 5, 0), 1);
	/* hour 2 + 2, day 2 + 4 */
	assert_int_equal(relay_quota_check(l, &a, t, 1, &which, &lim), 0);
	assert_int_equal(relay_quota_check(l, &a, t, 2, &which, &lim), -1);
	assert_string_equal(which, "hourly");
	assert_int_equal(relay_quota_check(l, &a, t + 3600, 2, &which, &lim), 0);
	assert_int_equal(relay_quota_check(l, &a, t + 3600, 3, &which, &lim), -1);
	assert_string_equal(which, "daily");
	/* saved with the mark past everything found: a restart counts none again */
	assert_int_equal(relay_quota_save(l, 5, 0, &err), 0);
	relay_quota_close(l);
	assert_int_equal(relay_quota_open(&l, p, &err), 0);
	assert_int_equal(relay_quota_recover(l, "acme", t, t, 2, 5, 0), 0);
	assert_int_equal(relay_quota_check(l, &a, t + 3600, 2, &which, &lim), 0);
	assert_int_equal(relay_quota_check(l, &a, t + 3600, 3, &which, &lim), -1);
	relay_quota_close(l);
	/* no file: every message found is counted */
	unlink(p);
	assert_int_equal(relay_quota_open(&l, p, &err), 0);
	assert_int_equal(relay_quota_recover(l, "acme", t, t, 5, 1, 64), 1);
	assert_int_equal(relay_quota_check(l, &a, t, 1, &which, &lim), -1);
	relay_quota_close(l);
	/* a file from before the mark: counts were synced before the spool
	 * write, so none is counted again */
	write_text(p, "acme 1772359200 2 1772323200 2\n");
	assert_int_equal(relay_quota_open(&l, p, &err), 0);
	assert_int_equal(relay_quota_recover(l, "acme", t, t, 1, 9, 64), 0);
	relay_quota_close(l);
	/* a bad mark is refused with its line */
	write_text(p, "@spool 3\nacme 1772359200 2 1772323200 2\n");
	assert_int_equal(relay_quota_open(&l, p, &err), -1);
	assert_non_null(strstr(err.msg, "limits-mark:1"));
	/* a mark only on the first line */
	write_text(p, "acme 1772359200 2 1772323200 2\n@spool 3 100\n");
	assert_int_equal(relay_quota_open(&l, p, &err), -1);
	assert_non_null(strstr(err.msg, "limits-mark:2"));
	unlink(p);
	uint32_t seg;
	uint64_t off;
	assert_int_equal(relay_quota_parse_mark("@spool 7 123", &seg, &off), 0);
	assert_true(seg == 7 && off == 123);
	const char *badm[] = {"@spool",      "@spool 7",    "@spool 7 1 2",        "@spool -1 2",
	                      "@spool 7  2", "@spoolx 7 2", "@spool 99999999999 2"};
	for (size_t i = 0; i < sizeof badm / sizeof badm[0]; i++)
		assert_int_equal(relay_quota_parse_mark(badm[i], &seg, &off), -1);
}

static void test_auth_cache(void **state)
{
	(void)state;
	struct relay_acct a = {.name = "acme"}, z = {.name = "zeta"};
	struct relay_authc *c = relay_authc_new();
	assert_non_null(c);
	int64_t t = 1000;
	assert_null(relay_authc_find(c, "acme", "pw", 2, t));
	relay_authc_put(c, &a, "acme", "pw", 2, t);
	assert_ptr_equal(relay_authc_find(c, "acme", "pw", 2, t + 1), &a);
	assert_null(relay_authc_find(c, "acme", "pW", 2, t + 1));  /* another password */
	assert_null(relay_authc_find(c, "acme", "pw!", 3, t + 1)); /* longer */
	assert_null(relay_authc_find(c, "acmep", "w", 1, t + 1));  /* the split moved */
	assert_null(relay_authc_find(c, "zeta", "pw", 2, t + 1));  /* another user */
	/* expires RELAY_AUTHC_TTL seconds after the check */
	assert_ptr_equal(relay_authc_find(c, "acme", "pw", 2, t + RELAY_AUTHC_TTL - 1), &a);
	assert_null(relay_authc_find(c, "acme", "pw", 2, t + RELAY_AUTHC_TTL));
	/* bounded: the oldest goes first */
	t = 5000;
	relay_authc_put(c, &z, "zeta", "first", 5, t);
	for (int i = 0; i < RELAY_AUTHC_N; i++) {
		char pw[16];
		snprintf(pw, sizeof pw, "pw%d", i);
		relay_authc_put(c, &a, "acme", pw, strlen(pw), t + 1 + i / 8);
	}
	assert_null(relay_authc_find(c, "zeta", "first", 5, t + 20));
	assert_ptr_equal(relay_authc_find(c, "acme", "pw63", 4, t + 20), &a);
	assert_ptr_equal(relay_authc_find(c, "acme", "pw0", 3, t + 20), &a);
	/* the same credentials again renew their entry, not a second one */
	relay_authc_put(c, &a, "acme", "pw0", 3, t + 100);
	assert_ptr_equal(relay_authc_find(c, "acme", "pw0", 3, t + 100 + RELAY_AUTHC_TTL - 1), &a);
	relay_authc_free(c);
	relay_authc_free(NULL);
	assert_null(relay_authc_find(NULL, "acme", "pw", 2, t));
}

static void test_limits_parse_line(void **state)
{
	(void)state;
	char n[RELAY_NAME_MAX + 1];
	int64_t hs, ds;
	uint32_t hc, dc;
	assert_int_equal(relay_quota_parse_line("acme 3600 5 0 7", n, sizeof n, &hs, &hc, &ds, &dc),
	                 0);
	assert_string_equal(n, "acme");
	assert_true(hs == 3600 && hc == 5 && ds == 0 && dc == 7);
	const char *bad[] = {"",
	                     "acme",
	                     "acme 1 2 3",
	                     "acme 1 2 3 4 5",
	                     "ac me 1 2 3 4",
	                     "acme 1  2 3 4",
	                     "acme -1 2 3 4",
	                     "acme 1 99999999999 3 4"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(relay_quota_parse_line(bad[i], n, sizeof n, &hs, &hc, &ds, &dc),
		                 -1);
}

static int setup_dir(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof tmpdir, "/tmp/mailrep-acct-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_password_hash_roundtrip),
	    cmocka_unit_test(test_base64_and_plain),
	    cmocka_unit_test(test_accounts_load),
	    cmocka_unit_test(test_limits_windows_and_reload),
	    cmocka_unit_test(test_limits_parse_line),
	    cmocka_unit_test(test_limits_written_once_per_commit),
	    cmocka_unit_test(test_limits_recount_after_the_mark),
	    cmocka_unit_test(test_auth_cache),
	};
	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
