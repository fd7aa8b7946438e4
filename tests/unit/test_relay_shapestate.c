/*
 * test_relay_shapestate.c — unit tests of SPOOL/shaping (shapestate.c):
 * the line format parses back to what was written, every damage is
 * refused with the byte it is at, and a relay's holds and throttles go to
 * the file and come back from it onto the same destinations and sources,
 * while ended entries and those whose rule, pool or source is gone are
 * dropped (the clock is injected through MAILREP_NOW).
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

#include "relay/int.h"
#include "relay/shapestate.h"

#define T0 1795428000 /* 2026-11-23T10:00:00Z */

static void parse_ok(const char *line, struct relay_shape_entry *e)
{
	struct base_err err;
	err.msg[0] = 0;
	if (relay_shape_parse(line, strlen(line), e, &err) < 0) fail_msg("%s: %s", line, err.msg);
}

static void parse_badn(const char *line, size_t len, const char *why)
{
	struct relay_shape_entry e;
	struct base_err err;
	assert_int_equal(relay_shape_parse(line, len, &e, &err), -1);
	if (!strstr(err.msg, why)) fail_msg("'%s': got '%s', expected '%s'", line, err.msg, why);
}

static void parse_bad(const char *line, const char *why)
{
	parse_badn(line, strlen(line), why);
}

static void test_lines_round_trip(void **state)
{
	(void)state;
	static const char *const lines[] = {
	    "throttle site=gmail-smtp-in.l.google.com,alt1.gmail-smtp-in.l.google.com port=25 "
	    "pool=bulk source=192.0.2.10 until=1795431600 rule=gmail-rate\n",
	    "throttle site=mx.example port=2525 pool=- source=- until=1 rule=a.b_c-d\n",
	    "suspend site=127.0.0.1 port=25 pool=- source=- until=1795431600 rule=-\n",
	    "suspend site=mx.example port=65535 pool=tx source=2001:db8::25 until=1795431600 "
	    "rule=yahoo-tss04\n",
	};
	for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
		struct relay_shape_entry e, e2;
		size_t n = strlen(lines[i]) - 1;
		char *l = strndup(lines[i], n);
		parse_ok(l, &e);
		assert_int_not_equal(e.kind, RELAY_SHAPE_NONE);
		struct base_buf b;
		base_buf_init(&b);
		relay_shape_format(&e, &b);
		assert_int_equal(b.len, n + 1);
		assert_memory_equal(b.data, lines[i], n + 1);
		parse_ok(l, &e2);
		assert_memory_equal(&e, &e2, sizeof e);
		/* every cut of a line is refused, up to the rule's name (a cut
		 * of which is another name) */
		size_t last = (size_t)(strstr(l, " rule=") - l) + 6;
		for (size_t k = 1; k < n; k++) {
			struct base_err err;
			int r = relay_shape_parse(l, k, &e2, &err);
			if (k <= last) assert_int_equal(r, -1);
			if (r == 0) assert_int_not_equal(strcmp(e2.rule, e.rule), 0);
		}
		base_buf_free(&b);
		free(l);
	}
	struct relay_shape_entry e;
	parse_ok("throttle site=mx port=25 pool=p source=2001:DB8:0::0001 until=9 rule=r", &e);
	assert_string_equal(e.source, "2001:db8::1"); /* as pools write it */
	assert_string_equal(e.pool, "p");
	assert_int_equal(e.port, 25);
	assert_int_equal(e.until, 9);
	parse_ok("", &e);
	assert_int_equal(e.kind, RELAY_SHAPE_NONE);
	parse_ok("# a comment", &e);
	assert_int_equal(e.kind, RELAY_SHAPE_NONE);
}

static void test_damage_is_refused_with_its_byte(void **state)
{
	(void)state;
	const char *ok = "throttle site=mx port=25 pool=- source=- until=9 rule=r";
	parse_bad("hold site=mx port=25 pool=- source=- until=9 rule=r",
	          "byte 1: 'hold' is not suspend or throttle");
	parse_bad("throttle  site=mx port=25 pool=- source=- until=9 rule=r",
	          "byte 10: expected site=");
	parse_bad("throttle site=mx port=0 pool=- source=- until=9 rule=r",
	          "byte 23: port= is not a port");
	parse_bad("throttle site=mx port=65536 pool=- source=- until=9 rule=r",
	          "port= is not a port");
	parse_bad("throttle site=mx port=25 pool=a/b source=- until=9 rule=r",
	          "byte 31: pool= is not a pool name");
	parse_bad("throttle site=mx port=25 pool=- source=192.0.2.300 until=9 rule=r",
	          "byte 40: source= is not an IP address");
	parse_bad("throttle site=mx port=25 pool=- source=- until=-9 rule=r",
	          "until= is not a UNIX time");
	parse_bad("throttle site=mx port=25 pool=- source=- until=99999999999999999999 rule=r",
	          "until= is not a UNIX time");
	parse_bad("throttle site=mx port=25 pool=- source=- until=9 rule=-",
	          "a throttle line needs its rule");
	parse_bad("suspend site=mx port=25 pool=- source=192.0.2.1 until=9 rule=-",
	          "a source address needs its pool");
	parse_bad("throttle site=mx port=25 pool=- source=- until=9 rule=r extra",
	          "byte 56: more than the line holds");
	parse_bad("throttle site=mx port=25 pool=- source=- until=9 rule=r ",
	          "byte 56: more than the line holds");
	parse_bad("throttle site=- port=25 pool=- source=- until=9 rule=r", "site= is not a site");
	parse_bad("throttle port=25 site=mx pool=- source=- until=9 rule=r",
	          "byte 10: expected site=");
	char nul[64];
	memcpy(nul, ok, strlen(ok));
	nul[14] = 0;
	parse_badn(nul, strlen(ok), "byte 15 is not printable ASCII (0x00)");
	nul[14] = '\t';
	parse_badn(nul, strlen(ok), "byte 15 is not printable ASCII (0x09)");
	char big[RELAY_SHAPE_LINE_MAX + 2];
	memset(big, 'a', sizeof big);
	parse_badn(big, sizeof big, "line longer than 1024 bytes");
}

/* ---- through the file --------------------------------------------------- */

static struct relay_config cfg;
static char dir[] = "/tmp/test-shapestate-XXXXXX";
static char path[sizeof dir + 16];

static void rule(const char *name, const char *action, const char *scope)
{
	struct base_err err;
	assert_int_equal(relay_throttle_set(&cfg, name, "match", "x", &err), 0);
	assert_int_equal(relay_throttle_set(&cfg, name, "action", action, &err), 0);
	assert_int_equal(relay_throttle_set(&cfg, name, "duration", "1h", &err), 0);
	if (scope) assert_int_equal(relay_throttle_set(&cfg, name, "scope", scope, &err), 0);
}

static int setup(void **state)
{
	(void)state;
	struct base_err err;
	relay_config_init(&cfg);
	assert_non_null(mkdtemp(dir));
	cfg.spool = dir;
	snprintf(path, sizeof path, "%s/%s", dir, RELAY_SHAPE_FILE);
	assert_int_equal(relay_pool_add(&cfg, "bulk", "192.0.2.10", &err), 0);
	assert_int_equal(relay_pool_add(&cfg, "bulk", "192.0.2.11", &err), 0);
	rule("rate", "conn-limit 2", NULL);
	rule("slow", "msgs-per-sec 3", "site");
	rule("block", "suspend", NULL);
	setenv("MAILREP_NOW", "2026-11-23T10:00:00Z", 1);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(path);
	rmdir(dir);
	memcpy(dir + sizeof dir - 7, "XXXXXX", 6);
	cfg.spool = NULL;
	relay_shaping_free(&cfg);
	unsetenv("MAILREP_NOW");
	return 0;
}

static void ctx_init(struct relay_ctx *x)
{
	memset(x, 0, sizeof *x);
	x->cfg = &cfg;
	x->base = event_base_new();
}

static void ctx_free(struct relay_ctx *x)
{
	relay_shape_stop(x);
	relay_dests_free(x);
	event_base_free(x->base);
}

static void write_file(const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static char *read_file(void)
{
	static char buf[8192];
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	return buf;
}

static struct dest *find(struct relay_ctx *x, const char *host, int pool)
{
	for (struct dest *d = x->dests; d; d = d->next)
		if (!strcmp(d->host, host) && (d->pool != NULL) == pool) return d;
	return NULL;
}

static void test_state_goes_to_the_file_and_comes_back(void **state)
{
	(void)state;
	struct relay_ctx x;
	ctx_init(&x);
	relay_shape_load(&x); /* no file: nothing */
	assert_null(x.dests);
	/* a back-off, a site-wide and a source-scoped rule, a source's suspend */
	struct dest *a = relay_dest_new(&x, "mx.example", 25, NULL);
	struct dest *b = relay_dest_new(&x, "gmail-smtp-in.l.google.com,alt1.example", 25,
	                                relay_pool_find(&cfg, "bulk"));
	relay_suspend(&x, a, "421 4.7.0 go away");
	x.acct_si = 2;
	assert_int_equal(relay_throttle_reply(&x, b, 451, "451 x"), 1); /* rate: first match */
	x.acct_si = 0;
	relay_throttle_put(&x, b, NULL, relay_throttle_find(&cfg, "slow"), T0 + 600);
	relay_throttle_put(&x, b, &b->src[0], relay_throttle_find(&cfg, "block"), T0 + 60);
	relay_throttle_put(&x, b, &b->src[1], relay_throttle_find(&cfg, "block"), T0 + 90);
	ctx_free(&x); /* a clean stop writes what is pending */
	const char *want =
	    "# mailrep relay: back-offs and throttle rules in force (see docs/RELAY.md)\n"
	    "throttle site=gmail-smtp-in.l.google.com,alt1.example port=25 pool=bulk source=- "
	    "until=1795428600 rule=slow\n"
	    "suspend site=gmail-smtp-in.l.google.com,alt1.example port=25 pool=bulk "
	    "source=192.0.2.10 until=1795428060 rule=block\n"
	    "suspend site=gmail-smtp-in.l.google.com,alt1.example port=25 pool=bulk "
	    "source=192.0.2.11 until=1795428090 rule=block\n"
	    "throttle site=gmail-smtp-in.l.google.com,alt1.example port=25 pool=bulk "
	    "source=192.0.2.11 until=1795431600 rule=rate\n"
	    "suspend site=mx.example port=25 pool=- source=- until=1795428300 rule=-\n";
	assert_string_equal(read_file(), want);

	/* a restart puts every entry back where it was */
	ctx_init(&x);
	relay_shape_load(&x);
	a = find(&x, "mx.example", 0);
	b = find(&x, "gmail-smtp-in.l.google.com,alt1.example", 1);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(a->suspended_until, T0 + 300);
	assert_null(a->susp_rule);
	assert_int_equal(a->cut.set, 0);
	assert_int_equal(b->lim.msgs_per_sec, 3);
	assert_int_equal(b->cut_until, T0 + 600);
	assert_int_equal(b->suspended_until, 0);
	assert_int_equal(b->src[0].suspended_until, T0 + 60);
	assert_int_equal(b->src[1].suspended_until, T0 + 90);
	assert_string_equal(b->src[1].susp_rule, "block");
	assert_int_equal(b->src[1].lim.conn_limit, 2);
	assert_int_equal(b->src[0].lim.conn_limit, 10);
	assert_int_equal(b->src[1].cut_until, T0 + 3600);
	ctx_free(&x); /* nothing changed: the file stays as it was */
	assert_string_equal(read_file(), want);

	/* 70 s later: the first source's suspend has ended and is dropped;
	 * with the rule "slow" gone from the config, so is its entry */
	setenv("MAILREP_NOW", "2026-11-23T10:01:10Z", 1);
	relay_shaping_free(&cfg);
	relay_config_init(&cfg);
	cfg.spool = dir;
	struct base_err err;
	assert_int_equal(relay_pool_add(&cfg, "bulk", "192.0.2.10", &err), 0);
	assert_int_equal(relay_pool_add(&cfg, "bulk", "192.0.2.11", &err), 0);
	rule("rate", "conn-limit 2", NULL);
	rule("block", "suspend", NULL);
	ctx_init(&x);
	relay_shape_load(&x);
	b = find(&x, "gmail-smtp-in.l.google.com,alt1.example", 1);
	assert_int_equal(b->cut.set, 0);
	assert_int_equal(b->lim.msgs_per_sec, 0);
	assert_int_equal(b->src[0].suspended_until, 0);
	assert_int_equal(b->src[1].suspended_until, T0 + 90);
	ctx_free(&x); /* what was dropped leaves the file */
	assert_string_equal(
	    read_file(),
	    "# mailrep relay: back-offs and throttle rules in force (see docs/RELAY.md)\n"
	    "suspend site=mx.example port=25 pool=- source=- until=1795428300 rule=-\n"
	    "suspend site=gmail-smtp-in.l.google.com,alt1.example port=25 pool=bulk "
	    "source=192.0.2.11 until=1795428090 rule=block\n"
	    "throttle site=gmail-smtp-in.l.google.com,alt1.example port=25 pool=bulk "
	    "source=192.0.2.11 until=1795431600 rule=rate\n");
}

static void test_a_damaged_file_never_stops_the_start(void **state)
{
	(void)state;
	write_file("throttle site=mx port=25 pool=- source=- until=1795431600 rule=rate\n"
	           "throttle site=mx port=25 pool=- source=- until=1795431600 rule=rate extra\n"
	           "suspend site=mx port=25 pool=bulk source=192.0.2.99 until=1795431600 rule=-\n"
	           "suspend site=mx port=25 pool=other source=- until=1795431600 rule=-\n"
	           "\xff\xfe\n");
	struct relay_ctx x;
	ctx_init(&x);
	relay_shape_load(&x);
	struct dest *d = find(&x, "mx", 0);
	assert_non_null(d);
	assert_int_equal(d->lim.conn_limit, 2);
	assert_int_equal(d->suspended_until, 0);
	assert_null(find(&x, "mx", 1)); /* its source is not in the pool */
	ctx_free(&x);
	assert_non_null(strstr(read_file(), "rule=rate\n"));
	assert_null(strstr(read_file(), "extra"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lines_round_trip),
	    cmocka_unit_test(test_damage_is_refused_with_its_byte),
	    cmocka_unit_test_setup_teardown(test_state_goes_to_the_file_and_comes_back, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_a_damaged_file_never_stops_the_start, setup,
	                                    teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
