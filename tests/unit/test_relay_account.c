/*
 * test_relay_account.c — unit tests of the relay's accounts: the
 * [account NAME] config sections (good files and errors naming
 * file:line), PBKDF2 password hashes (round trip, wrong passwords,
 * malformed hashes, the unknown-user path), base64 and SASL PLAIN
 * decoding, and the durable send counters (hour and day windows, limits,
 * reload from the state file, a corrupt state file refused).
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
	assert_int_equal(relay_quota_add(l, &a, t, 2, &err), 0);
	assert_int_equal(relay_quota_add(l, &z, t, 50, &err), 0);
	assert_int_equal(relay_quota_check(l, &a, t + 60, 1, &which, &lim), 0);
	assert_int_equal(relay_quota_check(l, &a, t + 60, 2, &which, &lim), -1);
	assert_int_equal(relay_quota_check(l, &z, t, 100000, &which, &lim), 0);
	relay_quota_close(l);
	/* reloaded from the state file */
	assert_int_equal(relay_quota_open(&l, p, &err), 0);
	assert_int_equal(relay_quota_check(l, &a, t + 60, 2, &which, &lim), -1);
	assert_int_equal(relay_quota_add(l, &a, t + 60, 1, &err), 0);
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

static void test_limits_parse_line(void **state)
{
	(void)state;
	char n[RELAY_NAME_MAX + 1];
	int64_t hs, ds;
	uint32_t hc, dc;
	assert_int_equal(
	    relay_quota_parse_line("acme 3600 5 0 7", n, sizeof n, &hs, &hc, &ds, &dc), 0);
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
	};
	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
