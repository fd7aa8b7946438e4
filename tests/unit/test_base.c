/*
 * test_base.c — unit tests for src/base: durations in rbldnsd's units,
 * ISO 8601 instants and the injectable clock (MAILREP_NOW), CIDR and
 * host:port parsing, growable buffers, arenas, the bounded line reader
 * (plain, CRLF, gzip, damaged gzip, NUL bytes, over-long lines) and atomic
 * file writes.
 *
 * File tests work in one mkdtemp directory created by the group setup and
 * removed by the group teardown; each test writes the files it reads.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "base/base.h"

static char tmpdir[64];

#define WRITE_LIT(path, lit) write_raw((path), (lit), sizeof(lit) - 1)

/* ---- helpers ----------------------------------------------------------- */

static void path_in_tmp(char *out, size_t sz, const char *name)
{
	snprintf(out, sz, "%s/%s", tmpdir, name);
}

static void write_raw(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	if (len) assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void write_gzip(const char *path, const void *data, size_t len)
{
	gzFile g = gzopen(path, "wb9");
	assert_non_null(g);
	assert_int_equal(gzwrite(g, data, (unsigned)len), (int)len);
	assert_int_equal(gzclose(g), Z_OK);
}

static void *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	struct base_buf b;
	base_buf_init(&b);
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) base_buf_append(&b, chunk, n);
	fclose(f);
	*len = b.len;
	if (!b.data) base_buf_reserve(&b, 0);
	return b.data;
}

static int count_dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
	closedir(d);
	return n;
}

static int group_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof tmpdir, "/tmp/mailrep-test-base-XXXXXX");
	if (!mkdtemp(tmpdir)) return -1;
	base_log_set_level(BASE_LOG_ERROR);
	return 0;
}

static void remove_tree(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d) return;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
		char p[512];
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		struct stat st;
		if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
			remove_tree(p);
			rmdir(p);
		} else {
			unlink(p);
		}
	}
	closedir(d);
}

static int group_teardown(void **state)
{
	(void)state;
	remove_tree(tmpdir);
	rmdir(tmpdir);
	return 0;
}

/* Reads every line of path into a buffer joined by '|'; returns the last
 * base_lines_next result (0 at a clean EOF, -1 on error). */
static int read_lines_joined(const char *path, int keep_cr, struct base_buf *out,
                             unsigned long *nlines, struct base_err *err)
{
	struct base_lines *l = malloc(sizeof *l);
	assert_non_null(l);
	assert_int_equal(base_lines_open(l, path, err), 0);
	l->keep_cr = keep_cr;
	char *line;
	size_t len;
	int r;
	*nlines = 0;
	while ((r = base_lines_next(l, &line, &len, err)) == 1) {
		assert_int_equal(strlen(line), len); /* NUL-terminated at len */
		if (*nlines) base_buf_puts(out, "|");
		base_buf_append(out, line, len);
		(*nlines)++;
		assert_int_equal(l->lineno, *nlines);
	}
	base_lines_close(l);
	free(l);
	return r;
}

/* ---- errors, strings --------------------------------------------------- */

static void test_errf(void **state)
{
	(void)state;
	struct base_err e;
	assert_int_equal(base_errf(&e, "x=%d %s", 42, "y"), -1);
	assert_string_equal(e.msg, "x=42 y");
	assert_int_equal(base_errf(NULL, "ignored %d", 1), -1);
	/* long messages are cut, never overflow */
	char big[2 * BASE_ERR_MAX];
	memset(big, 'a', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	base_errf(&e, "%s", big);
	assert_int_equal(strlen(e.msg), BASE_ERR_MAX - 1);
}

static void test_strings(void **state)
{
	(void)state;
	assert_int_equal(base_strcasecmp_ascii("Example.COM", "example.com"), 0);
	assert_true(base_strcasecmp_ascii("a", "b") < 0);
	assert_true(base_strcasecmp_ascii("abc", "ab") > 0);
	assert_int_equal(base_lower('Q'), 'q');
	assert_int_equal(base_lower('@'), '@');
	assert_string_equal(base_skip_ws(" \t x "), "x ");
	assert_string_equal(base_skip_ws("\nx"), "\nx"); /* only spaces and tabs */

	uint64_t v = 0;
	assert_int_equal(base_parse_uint("123abc", 1000, &v), 3);
	assert_int_equal(v, 123);
	assert_int_equal(base_parse_uint("65535", 65535, &v), 5);
	assert_int_equal(v, 65535);
	assert_int_equal(base_parse_uint("65536", 65535, &v), -1);
	assert_int_equal(base_parse_uint("-1", 65535, &v), -1);
	assert_int_equal(base_parse_uint("", 65535, &v), -1);
	assert_int_equal(base_parse_uint("18446744073709551615", UINT64_MAX, &v), 20);
	assert_true(v == UINT64_MAX);
}

static int int_cmp(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

static void test_sort(void **state)
{
	(void)state;
	base_sort(NULL, 0, sizeof(int), int_cmp); /* must not crash */
	int a[] = {5, 3, 9, 1, 3};
	base_sort(a, 5, sizeof a[0], int_cmp);
	int want[] = {1, 3, 3, 5, 9};
	assert_memory_equal(a, want, sizeof a);
}

/* ---- durations --------------------------------------------------------- */

static void test_duration_units(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		uint32_t v;
	} ok[] = {
	    {"0", 0},
	    {"1", 1},
	    {"3600", 3600},
	    {"10s", 10},
	    {"5m", 300},
	    {"2h", 7200},
	    {"1d", 86400},
	    {"1w", 604800},
	    {"35m", 2100},
	    {"1H", 3600},
	    {"2D", 172800},
	    {"1h30m", 5400},
	    {"1w1d1h1m1s", 604800 + 86400 + 3600 + 60 + 1},
	    {"1m30", 90},
	    {"4294967295", 4294967295u},
	    {"4294967295s", 4294967295u},
	};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		struct base_err e = {{0}};
		uint32_t v = 12345;
		int r = base_parse_duration(ok[i].s, &v, &e);
		if (r != 0) fail_msg("'%s' rejected: %s", ok[i].s, e.msg);
		if (v != ok[i].v) fail_msg("'%s' gave %u, want %u", ok[i].s, v, ok[i].v);
	}
}

static void test_duration_invalid(void **state)
{
	(void)state;
	static const char *bad[] = {
	    "",              /* empty */
	    "10x",           /* bad unit */
	    "h",             /* unit without number */
	    "abc",           /* no number */
	    "1h 30m",        /* blank inside */
	    "-5",            /* sign */
	    "5mm",           /* unit twice */
	    "4294967296",    /* overflows 32 bits */
	    "7102w",         /* 7102 weeks > 2^32 s */
	    "4294967295s1s", /* sum overflows */
	    "99999999999999999999",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct base_err e;
		e.msg[0] = '\0';
		uint32_t v = 777;
		if (base_parse_duration(bad[i], &v, &e) != -1)
			fail_msg("'%s' accepted as %u", bad[i], v);
		assert_int_not_equal(e.msg[0], '\0');
		assert_int_equal(v, 777); /* untouched on failure */
	}
	struct base_err e;
	uint32_t v;
	base_parse_duration("10x", &v, &e);
	assert_non_null(strstr(e.msg, "10x"));
	assert_non_null(strstr(e.msg, "unit"));
	base_parse_duration("7102w", &v, &e);
	assert_non_null(strstr(e.msg, "too large"));
	base_parse_duration("", &v, &e);
	assert_non_null(strstr(e.msg, "empty"));
	/* the largest multiple of a week that fits */
	assert_int_equal(base_parse_duration("7101w", &v, &e), 0);
	assert_int_equal(v, 7101u * 604800u);
}

/* ---- ISO 8601 and the clock -------------------------------------------- */

static void test_iso8601_valid(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		long long t;
	} ok[] = {
	    {"1970-01-01", 0},
	    {"1970-01-01T00:00:00Z", 0},
	    {"1970-01-02", 86400},
	    {"2000-03-01", 951868800},
	    {"2024-01-01", 1704067200},
	    {"2024-01-01T00:00:00Z", 1704067200},
	    {"2024-01-01t00:00:00z", 1704067200},
	    {"2024-01-01 00:00:00", 1704067200},
	    {"2024-02-29T12:34:56Z", 1709210096},
	    {"2024-01-01T02:00:00+02:00", 1704067200},
	    {"2024-01-01T02:00:00+0200", 1704067200},
	    {"2023-12-31T22:30:00-01:30", 1704067200},
	    {"2024-01-01T00:00Z", 1704067200},
	    {"2024-01-01T00:00:00.123456Z", 1704067200},
	    {"2038-01-19T03:14:08Z", 2147483648LL},
	    {"1969-12-31T23:59:59Z", -1},
	};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		time_t t = 99;
		if (base_parse_iso8601(ok[i].s, &t) != 0) fail_msg("'%s' rejected", ok[i].s);
		if ((long long)t != ok[i].t)
			fail_msg("'%s' gave %lld, want %lld", ok[i].s, (long long)t, ok[i].t);
	}
}

static void test_iso8601_invalid(void **state)
{
	(void)state;
	static const char *bad[] = {
	    "",
	    "2024",
	    "2024-01",
	    "20240101",
	    "2024-1-01",
	    "2024-01-1",
	    "2024/01/01",
	    "2024-13-01",
	    "2024-00-10",
	    "2024-01-00",
	    "2024-01-32",
	    "2024-01-01T24:00:00Z",
	    "2024-01-01T23:60:00Z",
	    "2024-01-01T23:59:61Z",
	    "2024-01-01T12",
	    "2024-01-01T12:5",
	    "2024-01-01T12:00:00+2",
	    "2024-01-01T12:00:00+02:0",
	    "2024-01-01T12:00:00Zjunk",
	    "2024-01-01X",
	    "2024-01-01T12:00:00 ",
	    "abcd-ef-gh",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		time_t t = 4242;
		if (base_parse_iso8601(bad[i], &t) == 0)
			fail_msg("'%s' accepted as %lld", bad[i], (long long)t);
		assert_int_equal((long long)t, 4242);
	}
}

/* Regression test for a fixed bug, as it was: day-of-month is only checked against 31, so
 * impossible dates are accepted and silently roll over into the next month
 * ("2023-02-30" is taken as 2023-03-02, "2023-04-31" as 2023-05-01), and
 * the UTC offset's hours and minutes are not range-checked ("+99:99" is
 * taken as an offset of 100 h 39 min). Affects MAILREP_NOW and $TIMESTAMP. */
static void test_iso8601_rejects_impossible_dates(void **state)
{
	(void)state;
	static const char *bad[] = {"2023-02-30", "2023-02-29" /* not a leap year */, "2023-04-31",
	                            "2024-01-01T00:00:00+99:99", "2024-01-01T00:00:00+00:75"};
	char accepted[512] = "";
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		time_t t;
		if (base_parse_iso8601(bad[i], &t) == 0) {
			size_t n = strlen(accepted);
			snprintf(accepted + n, sizeof accepted - n, " %s=%lld", bad[i],
			         (long long)t);
		}
	}
	if (accepted[0]) fail_msg("accepted:%s", accepted);
}

static void test_now_env(void **state)
{
	(void)state;
	const char *old = getenv("MAILREP_NOW");
	char *saved = old ? strdup(old) : NULL;

	assert_int_equal(setenv("MAILREP_NOW", "2030-05-06T07:08:09Z", 1), 0);
	assert_int_equal((long long)base_now(), 1904281689LL);
	assert_int_equal(setenv("MAILREP_NOW", "2030-05-06T09:08:09+02:00", 1), 0);
	assert_int_equal((long long)base_now(), 1904281689LL);
	assert_int_equal(setenv("MAILREP_NOW", "1999-12-31", 1), 0);
	assert_int_equal((long long)base_now(), 946598400LL);

	/* unparsable or empty: the real clock */
	time_t before = time(NULL);
	assert_int_equal(setenv("MAILREP_NOW", "yesterday", 1), 0);
	time_t t = base_now();
	assert_true(t >= before && t <= time(NULL));
	assert_int_equal(setenv("MAILREP_NOW", "", 1), 0);
	t = base_now();
	assert_true(t >= before && t <= time(NULL));
	unsetenv("MAILREP_NOW");
	t = base_now();
	assert_true(t >= before && t <= time(NULL));

	if (saved) {
		setenv("MAILREP_NOW", saved, 1);
		free(saved);
	}
}

static void test_mono(void **state)
{
	(void)state;
	uint64_t a = base_mono_ns();
	uint64_t b = base_mono_ns();
	assert_true(a > 0);
	assert_true(b >= a);
}

/* ---- CIDR and host:port ----------------------------------------------- */

static void addr4(const char *s, uint8_t out[4])
{
	assert_int_equal(inet_pton(AF_INET, s, out), 1);
}

static void addr6(const char *s, uint8_t out[16])
{
	assert_int_equal(inet_pton(AF_INET6, s, out), 1);
}

static void test_cidr_v4(void **state)
{
	(void)state;
	struct base_cidr c;
	struct base_err e;
	uint8_t a[4];

	assert_int_equal(base_parse_cidr("192.0.2.0/24", &c, &e), 0);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 24);
	addr4("192.0.2.77", a);
	assert_true(base_cidr_contains(&c, AF_INET, a));
	addr4("192.0.2.0", a);
	assert_true(base_cidr_contains(&c, AF_INET, a));
	addr4("192.0.2.255", a);
	assert_true(base_cidr_contains(&c, AF_INET, a));
	addr4("192.0.3.1", a);
	assert_false(base_cidr_contains(&c, AF_INET, a));
	addr4("192.0.1.255", a);
	assert_false(base_cidr_contains(&c, AF_INET, a));

	/* host bits are cleared */
	assert_int_equal(base_parse_cidr("192.0.2.77/24", &c, &e), 0);
	addr4("192.0.2.0", a);
	assert_memory_equal(c.addr, a, 4);
	addr4("192.0.2.1", a);
	assert_true(base_cidr_contains(&c, AF_INET, a));

	/* a prefix that does not end on a byte */
	assert_int_equal(base_parse_cidr("10.128.0.0/9", &c, &e), 0);
	addr4("10.200.1.1", a);
	assert_true(base_cidr_contains(&c, AF_INET, a));
	addr4("10.127.255.255", a);
	assert_false(base_cidr_contains(&c, AF_INET, a));
	assert_int_equal(base_parse_cidr("10.1.2.3/31", &c, &e), 0);
	addr4("10.1.2.2", a);
	assert_true(base_cidr_contains(&c, AF_INET, a));
	addr4("10.1.2.4", a);
	assert_false(base_cidr_contains(&c, AF_INET, a));

	/* a bare address is a /32 */
	assert_int_equal(base_parse_cidr("10.1.2.3", &c, &e), 0);
	assert_int_equal(c.prefix, 32);
	addr4("10.1.2.3", a);
	assert_true(base_cidr_contains(&c, AF_INET, a));
	addr4("10.1.2.4", a);
	assert_false(base_cidr_contains(&c, AF_INET, a));

	/* /0 holds every IPv4 address, and no IPv6 one */
	assert_int_equal(base_parse_cidr("0.0.0.0/0", &c, &e), 0);
	assert_int_equal(c.prefix, 0);
	addr4("255.255.255.255", a);
	assert_true(base_cidr_contains(&c, AF_INET, a));
	uint8_t a6[16];
	addr6("::", a6);
	assert_false(base_cidr_contains(&c, AF_INET6, a6));
}

static void test_cidr_v6(void **state)
{
	(void)state;
	struct base_cidr c;
	struct base_err e;
	uint8_t a[16];

	assert_int_equal(base_parse_cidr("2001:db8::/32", &c, &e), 0);
	assert_int_equal(c.family, AF_INET6);
	assert_int_equal(c.prefix, 32);
	addr6("2001:db8:ffff::1", a);
	assert_true(base_cidr_contains(&c, AF_INET6, a));
	addr6("2001:db9::", a);
	assert_false(base_cidr_contains(&c, AF_INET6, a));
	uint8_t a4[4];
	addr4("32.1.13.184", a4); /* same leading bytes, other family */
	assert_false(base_cidr_contains(&c, AF_INET, a4));

	assert_int_equal(base_parse_cidr("2001:db8::1", &c, &e), 0);
	assert_int_equal(c.prefix, 128);
	addr6("2001:db8::1", a);
	assert_true(base_cidr_contains(&c, AF_INET6, a));
	addr6("2001:db8::2", a);
	assert_false(base_cidr_contains(&c, AF_INET6, a));

	assert_int_equal(base_parse_cidr("2001:db8:abcd:12ff::/57", &c, &e), 0);
	addr6("2001:db8:abcd:1280::", a); /* 0x12ff keeps its top 9 bits */
	assert_memory_equal(c.addr, a, 16);
	addr6("2001:db8:abcd:12c0:1::", a);
	assert_true(base_cidr_contains(&c, AF_INET6, a));
	addr6("2001:db8:abcd:127f:ffff::", a);
	assert_false(base_cidr_contains(&c, AF_INET6, a));
	addr6("2001:db8:abcd:1300::", a);
	assert_false(base_cidr_contains(&c, AF_INET6, a));

	assert_int_equal(base_parse_cidr("::/0", &c, &e), 0);
	addr6("ffff::1", a);
	assert_true(base_cidr_contains(&c, AF_INET6, a));
}

static void test_cidr_invalid(void **state)
{
	(void)state;
	static const char *bad[] = {
	    "10.0.0.0/33",
	    "::/129",
	    "10.0.0.0/",
	    "10.0.0.0/8x",
	    "10.0.0.0/-1",
	    "10.0.0/8",
	    "example.com",
	    "",
	    "10.0.0.0/ 8",
	    "1.2.3.4.5",
	    "2001:db8::/",
	    "/8",
	    "1111111111111111111111111111111111111111111111111111111111111111111111/8",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct base_cidr c;
		struct base_err e;
		e.msg[0] = '\0';
		if (base_parse_cidr(bad[i], &c, &e) != -1) fail_msg("'%s' accepted", bad[i]);
		assert_int_not_equal(e.msg[0], '\0');
	}
	struct base_cidr c;
	struct base_err e;
	base_parse_cidr("10.0.0.0/33", &c, &e);
	assert_non_null(strstr(e.msg, "prefix"));
	assert_int_equal(base_parse_cidr("10.0.0.0/32", &c, &e), 0);
	assert_int_equal(base_parse_cidr("::/128", &c, &e), 0);
}

static void test_hostport_valid(void **state)
{
	(void)state;
	struct base_sockaddr a;
	struct base_err e;
	uint8_t want4[4], want6[16];

	assert_int_equal(base_parse_hostport("127.0.0.1/5300", 53, &a, &e), 0);
	assert_int_equal(a.family, AF_INET);
	assert_int_equal(a.port, 5300);
	addr4("127.0.0.1", want4);
	assert_memory_equal(a.a.v4, want4, 4);

	assert_int_equal(base_parse_hostport("192.0.2.1:5353", 53, &a, &e), 0);
	assert_int_equal(a.family, AF_INET);
	assert_int_equal(a.port, 5353);
	addr4("192.0.2.1", want4);
	assert_memory_equal(a.a.v4, want4, 4);

	assert_int_equal(base_parse_hostport("192.0.2.1", 53, &a, &e), 0);
	assert_int_equal(a.port, 53);

	assert_int_equal(base_parse_hostport("[::1]:5353", 53, &a, &e), 0);
	assert_int_equal(a.family, AF_INET6);
	assert_int_equal(a.port, 5353);
	addr6("::1", want6);
	assert_memory_equal(a.a.v6, want6, 16);

	assert_int_equal(base_parse_hostport("[2001:db8::5]", 99, &a, &e), 0);
	assert_int_equal(a.family, AF_INET6);
	assert_int_equal(a.port, 99);
	addr6("2001:db8::5", want6);
	assert_memory_equal(a.a.v6, want6, 16);

	/* a bare IPv6 address: its colons are not a port */
	assert_int_equal(base_parse_hostport("2001:db8::53", 53, &a, &e), 0);
	assert_int_equal(a.family, AF_INET6);
	assert_int_equal(a.port, 53);
	addr6("2001:db8::53", want6);
	assert_memory_equal(a.a.v6, want6, 16);

	assert_int_equal(base_parse_hostport("::1/8053", 53, &a, &e), 0);
	assert_int_equal(a.family, AF_INET6);
	assert_int_equal(a.port, 8053);

	assert_int_equal(base_parse_hostport("[::1]/8054", 53, &a, &e), 0);
	assert_int_equal(a.port, 8054);

	assert_int_equal(base_parse_hostport("localhost/1", 53, &a, &e), 0);
	assert_int_equal(a.family, AF_INET);
	addr4("127.0.0.1", want4);
	assert_memory_equal(a.a.v4, want4, 4);
	assert_int_equal(a.port, 1);

	assert_int_equal(base_parse_hostport("*/65535", 53, &a, &e), 0);
	assert_int_equal(a.family, AF_INET);
	addr4("0.0.0.0", want4);
	assert_memory_equal(a.a.v4, want4, 4);
	assert_int_equal(a.port, 65535);

	assert_int_equal(base_parse_hostport("10.0.0.1:0", 53, &a, &e), 0);
	assert_int_equal(a.port, 0);
}

static void test_hostport_invalid(void **state)
{
	(void)state;
	static const char *bad[] = {
	    "1.2.3.4:65536",  "1.2.3.4:abc", "1.2.3.4/",      "1.2.3.4:",  "[::1]:x",
	    "[::1]:",         "[::1",        "[::1]x",        "[::1]:53x", "example.com",
	    "example.com/53", "1.2.3.4:-1",  "1.2.3.4/53/54", "300.1.1.1", "1.2.3.4:5:6",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct base_sockaddr a;
		struct base_err e;
		e.msg[0] = '\0';
		if (base_parse_hostport(bad[i], 53, &a, &e) != -1)
			fail_msg("'%s' accepted", bad[i]);
		assert_int_not_equal(e.msg[0], '\0');
	}
	struct base_sockaddr a;
	struct base_err e;
	base_parse_hostport("1.2.3.4:65536", 53, &a, &e);
	assert_non_null(strstr(e.msg, "bad port"));
	base_parse_hostport("[::1", 53, &a, &e);
	assert_non_null(strstr(e.msg, "]"));
	base_parse_hostport("example.com/53", 53, &a, &e);
	assert_non_null(strstr(e.msg, "example.com"));
	char longname[300];
	memset(longname, '1', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	assert_int_equal(base_parse_hostport(longname, 53, &a, &e), -1);
	assert_non_null(strstr(e.msg, "too long"));
}

/* ---- buffers and arenas ------------------------------------------------ */

static void test_buf(void **state)
{
	(void)state;
	struct base_buf b;
	base_buf_init(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);

	base_buf_append(&b, "", 0);
	assert_non_null(b.data);
	assert_string_equal(b.data, "");

	base_buf_puts(&b, "hello");
	base_buf_append(&b, ", ", 2);
	base_buf_printf(&b, "%s %d", "world", 42);
	assert_string_equal(b.data, "hello, world 42");
	assert_int_equal(b.len, 15);
	assert_true(b.cap > b.len);

	/* binary data with NUL bytes is kept, and a NUL still follows */
	base_buf_append(&b, "a\0b", 3);
	assert_int_equal(b.len, 18);
	assert_memory_equal(b.data + 15, "a\0b", 3);
	assert_int_equal(b.data[18], '\0');

	/* growth across many doublings, with printf larger than the buffer */
	struct base_buf c;
	base_buf_init(&c);
	for (int i = 0; i < 1000; i++) base_buf_printf(&c, "%04d,", i);
	assert_int_equal(c.len, 5000);
	assert_memory_equal(c.data, "0000,0001,", 10);
	assert_memory_equal(c.data + 4995, "0999,", 5);
	assert_int_equal(c.data[5000], '\0');
	char big[3000];
	memset(big, 'z', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	base_buf_printf(&c, "[%s]", big);
	assert_int_equal(c.len, 5000 + 3001);
	assert_int_equal(c.data[5000], '[');
	assert_int_equal(c.data[c.len - 1], ']');
	assert_int_equal(c.data[c.len], '\0');

	/* reserve guarantees room without changing the contents */
	size_t len = c.len;
	base_buf_reserve(&c, 100000);
	assert_true(c.cap >= len + 100000 + 1);
	assert_int_equal(c.len, len);
	assert_int_equal(c.data[5000], '[');

	base_buf_free(&b);
	base_buf_free(&c);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, 0);
}

static void test_xalloc(void **state)
{
	(void)state;
	char *s = base_xstrdup("dup me");
	assert_string_equal(s, "dup me");
	free(s);
	s = base_xstrndup("abcdef", 3);
	assert_string_equal(s, "abc");
	free(s);
	int *z = base_xcalloc(16, sizeof *z);
	for (int i = 0; i < 16; i++) assert_int_equal(z[i], 0);
	z = base_xrealloc(z, 1000 * sizeof *z);
	assert_int_equal(z[15], 0);
	free(z);
	void *p = base_xmalloc(0); /* zero bytes still gives a pointer */
	assert_non_null(p);
	free(p);
}

static void test_arena(void **state)
{
	(void)state;
	struct base_arena a;
	base_arena_init(&a);
	assert_null(a.head);
	assert_int_equal(a.total, 0);

	/* many small objects: aligned, disjoint, all intact */
	enum { N = 5000 };
	unsigned char **p = malloc(N * sizeof *p);
	assert_non_null(p);
	for (int i = 0; i < N; i++) {
		size_t n = 1 + (size_t)(i % 37);
		p[i] = base_arena_alloc(&a, n);
		assert_int_equal((uintptr_t)p[i] % 16, 0);
		memset(p[i], i & 0xff, n);
	}
	for (int i = 0; i < N; i++) {
		size_t n = 1 + (size_t)(i % 37);
		for (size_t k = 0; k < n; k++) assert_int_equal(p[i][k], i & 0xff);
	}
	free(p);
	base_arena_free(&a);
	assert_null(a.head);
	assert_int_equal(a.total, 0);

	/* a big object gets its own block and the current block keeps serving */
	base_arena_init(&a);
	void *s1 = base_arena_alloc(&a, 10);
	size_t t1 = a.total;
	assert_int_equal(t1, 64 * 1024);
	unsigned char *big = base_arena_alloc(&a, 100000);
	memset(big, 0xab, 100000);
	assert_int_equal(a.total, t1 + 100000);
	unsigned char *s2 = base_arena_alloc(&a, 10);
	assert_int_equal(a.total, t1 + 100000); /* no new block for a small object */
	assert_ptr_equal(s2, (unsigned char *)s1 + 16);
	assert_int_equal(big[99999], 0xab);

	/* filling a block starts a new one */
	for (int i = 0; i < 5000; i++) base_arena_alloc(&a, 16);
	assert_true(a.total >= t1 * 2 + 100000);

	char *d = base_arena_strndup(&a, "hello world", 5);
	assert_string_equal(d, "hello");
	d = base_arena_strndup(&a, "", 0);
	assert_string_equal(d, "");
	base_arena_free(&a);
	assert_null(a.head);
}

/* ---- the line reader --------------------------------------------------- */

static void test_lines_lf(void **state)
{
	(void)state;
	char path[256];
	path_in_tmp(path, sizeof path, "lf.txt");
	WRITE_LIT(path, "a\nbb\n\nccc\n  spaced  \n");
	struct base_buf out;
	base_buf_init(&out);
	unsigned long n;
	struct base_err e;
	assert_int_equal(read_lines_joined(path, 0, &out, &n, &e), 0);
	assert_int_equal(n, 5);
	assert_string_equal(out.data, "a|bb||ccc|  spaced  ");
	base_buf_free(&out);
}

static void test_lines_crlf(void **state)
{
	(void)state;
	char path[256];
	path_in_tmp(path, sizeof path, "crlf.txt");
	WRITE_LIT(path, "one\r\ntwo\r\n\r\nlast\r");
	struct base_buf out;
	unsigned long n;
	struct base_err e;

	/* CR stripped by default */
	base_buf_init(&out);
	assert_int_equal(read_lines_joined(path, 0, &out, &n, &e), 0);
	assert_int_equal(n, 4);
	assert_string_equal(out.data, "one|two||last");
	base_buf_free(&out);

	/* ... and kept when keep_cr is set after opening */
	base_buf_init(&out);
	assert_int_equal(read_lines_joined(path, 1, &out, &n, &e), 0);
	assert_int_equal(n, 4);
	assert_string_equal(out.data, "one\r|two\r|\r|last\r");
	base_buf_free(&out);

	/* a CR in the middle of a line is data either way */
	path_in_tmp(path, sizeof path, "midcr.txt");
	WRITE_LIT(path, "a\rb\n");
	base_buf_init(&out);
	assert_int_equal(read_lines_joined(path, 0, &out, &n, &e), 0);
	assert_int_equal(n, 1);
	assert_string_equal(out.data, "a\rb");
	base_buf_free(&out);
}

static void test_lines_no_final_newline(void **state)
{
	(void)state;
	char path[256];
	path_in_tmp(path, sizeof path, "nofinal.txt");
	WRITE_LIT(path, "first\nsecond");
	struct base_buf out;
	base_buf_init(&out);
	unsigned long n;
	struct base_err e;
	assert_int_equal(read_lines_joined(path, 0, &out, &n, &e), 0);
	assert_int_equal(n, 2);
	assert_string_equal(out.data, "first|second");
	base_buf_free(&out);

	/* an empty file has no lines; a lone newline has one empty line */
	path_in_tmp(path, sizeof path, "empty.txt");
	WRITE_LIT(path, "");
	base_buf_init(&out);
	assert_int_equal(read_lines_joined(path, 0, &out, &n, &e), 0);
	assert_int_equal(n, 0);
	base_buf_free(&out);
	path_in_tmp(path, sizeof path, "nl.txt");
	WRITE_LIT(path, "\n");
	base_buf_init(&out);
	assert_int_equal(read_lines_joined(path, 0, &out, &n, &e), 0);
	assert_int_equal(n, 1);
	base_buf_free(&out);
}

static void test_lines_nul_byte(void **state)
{
	(void)state;
	char path[256];
	path_in_tmp(path, sizeof path, "nul.txt");
	WRITE_LIT(path, "ok\nok2\nba\0d\nafter\n");
	struct base_lines *l = malloc(sizeof *l);
	struct base_err e;
	char *line;
	size_t len;
	assert_int_equal(base_lines_open(l, path, &e), 0);
	assert_int_equal(base_lines_next(l, &line, &len, &e), 1);
	assert_string_equal(line, "ok");
	assert_int_equal(base_lines_next(l, &line, &len, &e), 1);
	assert_string_equal(line, "ok2");
	e.msg[0] = '\0';
	assert_int_equal(base_lines_next(l, &line, &len, &e), -1);
	char want[300];
	snprintf(want, sizeof want, "%s:3:", path);
	assert_non_null(strstr(e.msg, want));
	assert_non_null(strstr(e.msg, "NUL"));
	base_lines_close(l);
	free(l);
}

static void test_lines_too_long(void **state)
{
	(void)state;
	char path[256];
	struct base_err e;
	char *line;
	size_t len;
	struct base_lines *l = malloc(sizeof *l);
	size_t n = BASE_LINE_MAX + 1;
	char *data = malloc(n + 64);

	/* exactly BASE_LINE_MAX is fine */
	memcpy(data, "x\n", 2);
	memset(data + 2, 'a', BASE_LINE_MAX);
	memcpy(data + 2 + BASE_LINE_MAX, "\ny\n", 3);
	path_in_tmp(path, sizeof path, "max.txt");
	write_raw(path, data, 5 + BASE_LINE_MAX);
	assert_int_equal(base_lines_open(l, path, &e), 0);
	assert_int_equal(base_lines_next(l, &line, &len, &e), 1);
	assert_int_equal(base_lines_next(l, &line, &len, &e), 1);
	assert_int_equal(len, BASE_LINE_MAX);
	assert_int_equal(line[BASE_LINE_MAX - 1], 'a');
	assert_int_equal(base_lines_next(l, &line, &len, &e), 1);
	assert_string_equal(line, "y");
	assert_int_equal(base_lines_next(l, &line, &len, &e), 0);
	base_lines_close(l);

	/* one byte more is an error naming file:line */
	memcpy(data, "x\n", 2);
	memset(data + 2, 'a', n);
	memcpy(data + 2 + n, "\ny\n", 3);
	path_in_tmp(path, sizeof path, "long.txt");
	write_raw(path, data, 5 + n);
	assert_int_equal(base_lines_open(l, path, &e), 0);
	assert_int_equal(base_lines_next(l, &line, &len, &e), 1);
	assert_int_equal(base_lines_next(l, &line, &len, &e), -1);
	char want[300];
	snprintf(want, sizeof want, "%s:2:", path);
	assert_non_null(strstr(e.msg, want));
	assert_non_null(strstr(e.msg, "longer than"));
	base_lines_close(l);
	free(data);

	/* a huge line with no newline at all, bigger than the whole window */
	size_t hn = 5 * BASE_LINE_MAX;
	data = malloc(hn);
	memset(data, 'b', hn);
	path_in_tmp(path, sizeof path, "huge.txt");
	write_raw(path, data, hn);
	assert_int_equal(base_lines_open(l, path, &e), 0);
	assert_int_equal(base_lines_next(l, &line, &len, &e), -1);
	assert_non_null(strstr(e.msg, "longer than"));
	snprintf(want, sizeof want, "%s:1:", path);
	assert_non_null(strstr(e.msg, want));
	base_lines_close(l);
	free(data);
	free(l);
}

/* Lines of many lengths, so that they straddle every refill of the window. */
static void make_varied_lines(struct base_buf *b, unsigned count)
{
	for (unsigned i = 0; i < count; i++) {
		unsigned len = (i * 7919u) % 300u;
		if (i % 1000 == 999) len = 20000; /* now and then a long one */
		base_buf_printf(b, "%u:", i);
		for (unsigned k = 0; k < len; k++) base_buf_append(b, &"abcdefghij"[k % 10], 1);
		base_buf_puts(b, (i % 3) ? "\n" : "\r\n");
	}
}

static void check_varied_lines(const char *path, unsigned count)
{
	struct base_lines *l = malloc(sizeof *l);
	struct base_err e;
	char *line;
	size_t len;
	assert_int_equal(base_lines_open(l, path, &e), 0);
	for (unsigned i = 0; i < count; i++) {
		int r = base_lines_next(l, &line, &len, &e);
		if (r != 1) fail_msg("line %u: r=%d %s", i, r, r < 0 ? e.msg : "");
		unsigned want = (i * 7919u) % 300u;
		if (i % 1000 == 999) want = 20000;
		char prefix[16];
		int pl = snprintf(prefix, sizeof prefix, "%u:", i);
		assert_int_equal(len, (size_t)pl + want);
		assert_memory_equal(line, prefix, (size_t)pl);
		if (want) assert_int_equal(line[len - 1], "abcdefghij"[(want - 1) % 10]);
	}
	assert_int_equal(base_lines_next(l, &line, &len, &e), 0);
	assert_int_equal(base_lines_next(l, &line, &len, &e), 0); /* EOF is sticky */
	assert_int_equal(l->lineno, count);
	base_lines_close(l);
	free(l);
}

static void test_lines_many(void **state)
{
	(void)state;
	char path[256];
	path_in_tmp(path, sizeof path, "many.txt");
	struct base_buf b;
	base_buf_init(&b);
	make_varied_lines(&b, 5000);
	write_raw(path, b.data, b.len);
	check_varied_lines(path, 5000);
	base_buf_free(&b);
}

static void test_lines_gzip(void **state)
{
	(void)state;
	char path[256];
	path_in_tmp(path, sizeof path, "data.gz");
	write_gzip(path, "alpha\r\nbeta\ngamma", 17);
	struct base_buf out;
	base_buf_init(&out);
	unsigned long n;
	struct base_err e;
	assert_int_equal(read_lines_joined(path, 0, &out, &n, &e), 0);
	assert_int_equal(n, 3);
	assert_string_equal(out.data, "alpha|beta|gamma");
	base_buf_free(&out);

	/* a big compressed file, crossing many window refills */
	struct base_buf b;
	base_buf_init(&b);
	make_varied_lines(&b, 5000);
	path_in_tmp(path, sizeof path, "many.gz");
	write_gzip(path, b.data, b.len);
	check_varied_lines(path, 5000);
	base_buf_free(&b);
}

static void test_lines_gzip_truncated(void **state)
{
	(void)state;
	char path[256];
	struct base_buf b;
	base_buf_init(&b);
	for (int i = 0; i < 20000; i++)
		base_buf_printf(&b, "10.%d.%d.%d :2:line %d\n", i % 256, (i * 7) % 256,
		                (i * 13) % 256, i);
	path_in_tmp(path, sizeof path, "trunc.gz");
	write_gzip(path, b.data, b.len);
	size_t glen;
	char *gz = read_all(path, &glen);
	assert_true(glen > 100);

	static const double cuts[] = {0.5, 0.9};
	for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
		write_raw(path, gz, (size_t)((double)glen * cuts[c]));
		struct base_buf out;
		base_buf_init(&out);
		unsigned long n;
		struct base_err e;
		e.msg[0] = '\0';
		assert_int_equal(read_lines_joined(path, 0, &out, &n, &e), -1);
		assert_true(n < 20000);
		assert_non_null(strstr(e.msg, "corrupt or truncated"));
		assert_non_null(strstr(e.msg, path));
		base_buf_free(&out);
	}
	/* cut inside the 8-byte trailer: all data is there, the check is not */
	write_raw(path, gz, glen - 3);
	struct base_buf out;
	base_buf_init(&out);
	unsigned long n;
	struct base_err e;
	e.msg[0] = '\0';
	assert_int_equal(read_lines_joined(path, 0, &out, &n, &e), -1);
	assert_non_null(strstr(e.msg, "corrupt or truncated"));
	base_buf_free(&out);
	free(gz);
	base_buf_free(&b);
}

static void test_lines_gzip_bad_crc(void **state)
{
	(void)state;
	char path[256];
	path_in_tmp(path, sizeof path, "crc.gz");
	const char *text = "127.0.0.2\n127.0.0.3\n127.0.0.4\n";
	write_gzip(path, text, strlen(text));
	size_t glen;
	unsigned char *gz = read_all(path, &glen);
	gz[glen - 8] ^= 0x5a; /* the CRC32 in the trailer */
	write_raw(path, gz, glen);
	free(gz);
	struct base_buf out;
	base_buf_init(&out);
	unsigned long n;
	struct base_err e;
	e.msg[0] = '\0';
	assert_int_equal(read_lines_joined(path, 0, &out, &n, &e), -1);
	assert_non_null(strstr(e.msg, path));
	assert_true(strstr(e.msg, "error") || strstr(e.msg, "corrupt"));
	base_buf_free(&out);

	/* a wrong length (ISIZE) is also caught */
	path_in_tmp(path, sizeof path, "isize.gz");
	write_gzip(path, text, strlen(text));
	gz = read_all(path, &glen);
	gz[glen - 1] ^= 0x01;
	write_raw(path, gz, glen);
	free(gz);
	base_buf_init(&out);
	assert_int_equal(read_lines_joined(path, 0, &out, &n, &e), -1);
	base_buf_free(&out);
}

static void test_lines_open_missing(void **state)
{
	(void)state;
	char path[256];
	path_in_tmp(path, sizeof path, "does-not-exist.txt");
	struct base_lines *l = malloc(sizeof *l);
	struct base_err e;
	assert_int_equal(base_lines_open(l, path, &e), -1);
	assert_non_null(strstr(e.msg, path));
	assert_non_null(strstr(e.msg, "cannot open"));
	base_lines_close(l); /* harmless after a failed open */
	free(l);
}

/* ---- INI sections ------------------------------------------------------ */

struct ini_seen {
	char log[512];
};

static int ini_collect(void *ctx, const char *section, const char *key, const char *value,
                       struct base_err *err)
{
	struct ini_seen *s = ctx;
	if (!strcmp(value, "bad")) return base_errf(err, "bad value for %s", key);
	size_t n = strlen(s->log);
	snprintf(s->log + n, sizeof s->log - n, "%s|%s=%s;", section, key, value);
	return 0;
}

static void test_ini_sections(void **state)
{
	(void)state;
	char path[300];
	path_in_tmp(path, sizeof path, "sections.ini");
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("[relay]\nlisten = 1\n[pool bulk]\nip = a\n[pools]\nx = 1\n[pool]\ny = 2\n"
	      "# comment\n[ pool tx ]\n ip =  b \n[relayx]\nz = 3\n",
	      f);
	fclose(f);
	struct base_err e;
	struct ini_seen s = {""};
	assert_int_equal(base_ini_read_sections(path, "pool ", ini_collect, &s, &e), 0);
	assert_string_equal(s.log, "pool bulk|ip=a;pool tx|ip=b;");
	memset(&s, 0, sizeof s);
	assert_int_equal(base_ini_read_sections(path, "relay", ini_collect, &s, &e), 0);
	assert_string_equal(s.log, "relay|listen=1;");

	f = fopen(path, "w");
	fputs("[pool a]\nip = ok\n\nip = bad\n", f);
	fclose(f);
	memset(&s, 0, sizeof s);
	assert_int_equal(base_ini_read_sections(path, "pool ", ini_collect, &s, &e), -1);
	assert_non_null(strstr(e.msg, "sections.ini:4: bad value for ip"));
}

/* ---- atomic writes ----------------------------------------------------- */

static void test_write_atomic(void **state)
{
	(void)state;
	char dir[256], path[300];
	path_in_tmp(dir, sizeof dir, "atomic");
	assert_int_equal(mkdir(dir, 0755), 0);
	snprintf(path, sizeof path, "%s/out.txt", dir);
	struct base_err e;

	assert_int_equal(base_write_file_atomic(path, "first\n", 6, &e), 0);
	size_t len;
	char *got = read_all(path, &len);
	assert_int_equal(len, 6);
	assert_memory_equal(got, "first\n", 6);
	free(got);

	/* replacing keeps no temporary file behind */
	char big[100000];
	for (size_t i = 0; i < sizeof big; i++) big[i] = (char)(i * 31);
	assert_int_equal(base_write_file_atomic(path, big, sizeof big, &e), 0);
	got = read_all(path, &len);
	assert_int_equal(len, sizeof big);
	assert_memory_equal(got, big, sizeof big);
	free(got);
	assert_int_equal(count_dir_entries(dir), 1);

	/* empty contents */
	assert_int_equal(base_write_file_atomic(path, "", 0, &e), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 0);
	assert_int_equal(count_dir_entries(dir), 1);

	/* a directory that does not exist: an error, and the message says where */
	char bad[300];
	snprintf(bad, sizeof bad, "%s/no/such/dir/file", dir);
	e.msg[0] = '\0';
	assert_int_equal(base_write_file_atomic(bad, "x", 1, &e), -1);
	assert_non_null(strstr(e.msg, "cannot create"));
	assert_non_null(strstr(e.msg, "no/such/dir"));

	/* renaming over a directory fails and cleans up the temporary file */
	char sub[300];
	snprintf(sub, sizeof sub, "%s/subdir", dir);
	assert_int_equal(mkdir(sub, 0755), 0);
	char inner[320];
	snprintf(inner, sizeof inner, "%s/keep", sub);
	write_raw(inner, "k", 1);
	assert_int_equal(base_write_file_atomic(sub, "x", 1, &e), -1);
	assert_non_null(strstr(e.msg, "rename"));
	assert_int_equal(count_dir_entries(dir), 2); /* out.txt and subdir only */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_errf),
	    cmocka_unit_test(test_strings),
	    cmocka_unit_test(test_sort),
	    cmocka_unit_test(test_duration_units),
	    cmocka_unit_test(test_duration_invalid),
	    cmocka_unit_test(test_iso8601_valid),
	    cmocka_unit_test(test_iso8601_invalid),
	    cmocka_unit_test(test_iso8601_rejects_impossible_dates),
	    cmocka_unit_test(test_now_env),
	    cmocka_unit_test(test_mono),
	    cmocka_unit_test(test_cidr_v4),
	    cmocka_unit_test(test_cidr_v6),
	    cmocka_unit_test(test_cidr_invalid),
	    cmocka_unit_test(test_hostport_valid),
	    cmocka_unit_test(test_hostport_invalid),
	    cmocka_unit_test(test_buf),
	    cmocka_unit_test(test_xalloc),
	    cmocka_unit_test(test_arena),
	    cmocka_unit_test(test_lines_lf),
	    cmocka_unit_test(test_lines_crlf),
	    cmocka_unit_test(test_lines_no_final_newline),
	    cmocka_unit_test(test_lines_nul_byte),
	    cmocka_unit_test(test_lines_too_long),
	    cmocka_unit_test(test_lines_many),
	    cmocka_unit_test(test_lines_gzip),
	    cmocka_unit_test(test_lines_gzip_truncated),
	    cmocka_unit_test(test_lines_gzip_bad_crc),
	    cmocka_unit_test(test_lines_open_missing),
	    cmocka_unit_test(test_write_atomic),
	    cmocka_unit_test(test_ini_sections),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
