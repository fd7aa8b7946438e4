/*
 * test_relay_throttle.c — unit tests of the relay's [throttle] rules
 * (throttle.c): their settings and errors, which reply matches which rule,
 * how the limits in force combine the configured ones with the rules'
 * (lowest wins, 0 meaning unlimited), that the rate buckets follow a
 * changed rate, that a rule ends at its time (the clock is injected
 * through MAILREP_NOW), and a rule's scope: the one source whose
 * connection got the reply, or the whole destination.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "relay/int.h"

static struct relay_config cfg;

static int setup(void **state)
{
	(void)state;
	relay_config_init(&cfg);
	setenv("MAILREP_NOW", "2026-11-23T10:00:00Z", 1);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	relay_shaping_free(&cfg);
	unsetenv("MAILREP_NOW");
	return 0;
}

static void rule(const char *name, const char *match, const char *action, const char *duration)
{
	struct base_err err;
	assert_int_equal(relay_throttle_set(&cfg, name, "match", match, &err), 0);
	assert_int_equal(relay_throttle_set(&cfg, name, "action", action, &err), 0);
	assert_int_equal(relay_throttle_set(&cfg, name, "duration", duration, &err), 0);
}

static void test_settings_and_errors(void **state)
{
	(void)state;
	struct base_err err;
	assert_int_equal(relay_throttle_set(&cfg, "a", "action", "conn-limit", &err), -1);
	assert_non_null(strstr(err.msg, "needs a number"));
	assert_int_equal(relay_throttle_set(&cfg, "a", "action", "msgs-per-sec 1x", &err), -1);
	assert_int_equal(relay_throttle_set(&cfg, "a", "action", "suspend now", &err), -1);
	assert_non_null(strstr(err.msg, "takes no number"));
	assert_int_equal(relay_throttle_set(&cfg, "a", "action", "conn-limitx 2", &err), -1);
	assert_non_null(strstr(err.msg, "unknown action"));
	assert_int_equal(relay_throttle_set(&cfg, "a", "match", "a++++++++++", &err), -1);
	assert_int_equal(relay_throttle_set(&cfg, "a", "match", "(", &err), -1);
	assert_non_null(strstr(err.msg, "bad pattern"));
	assert_int_equal(relay_throttle_set(&cfg, "a", "duration", "soon", &err), -1);
	assert_int_equal(relay_throttle_set(&cfg, "bad name!", "match", "x", &err), -1);
	assert_non_null(strstr(err.msg, "bad throttle name"));
	/* incomplete: the check names what is missing */
	assert_int_equal(relay_throttle_set(&cfg, "a", "match", "x", &err), 0);
	assert_int_equal(relay_throttle_set(&cfg, "a", "match", "y", &err), -1);
	assert_non_null(strstr(err.msg, "twice"));
	assert_int_equal(relay_throttles_check(&cfg, &err), -1);
	assert_non_null(strstr(err.msg, "throttle a: no action"));
	assert_int_equal(relay_throttle_set(&cfg, "a", "action", "conns-per-min 6", &err), 0);
	assert_int_equal(relay_throttles_check(&cfg, &err), -1);
	assert_non_null(strstr(err.msg, "no duration"));
	assert_int_equal(relay_throttle_set(&cfg, "a", "duration", "90m", &err), 0);
	assert_int_equal(relay_throttles_check(&cfg, &err), 0);
}

static struct dest *new_dest(struct relay_ctx *x, uint32_t conn, uint32_t mps)
{
	struct dest *d = calloc(1, sizeof *d);
	d->host = "mx.example";
	d->port = 25;
	d->nsrc = 2;
	d->src = calloc(d->nsrc, sizeof *d->src);
	d->conf.conn_limit = conn;
	d->conf.msgs_per_conn = 100;
	d->conf.msgs_per_sec = mps;
	d->lim = d->conf;
	for (size_t i = 0; i < d->nsrc; i++) relay_rate_init(&d->src[i].msgs, mps, 1000000000ull);
	relay_dest_limits(x, d);
	return d;
}

static void free_dest(struct dest *d)
{
	free(d->src);
	free(d);
}

static void test_rules_lower_limits_until_their_end(void **state)
{
	(void)state;
	rule("rate", "4\\.7\\.28", "conn-limit 2", "1h");
	rule("slow", "^421 .*slow down", "msgs-per-sec 3", "30m");
	rule("hold", "blocked", "suspend", "2h");
	struct relay_ctx x;
	memset(&x, 0, sizeof x);
	x.cfg = &cfg;
	struct dest *d = new_dest(&x, 10, 0);
	/* 2xx and unmatched replies do nothing */
	assert_int_equal(relay_throttle_reply(&x, d, 250, "250 2.7.28 unusual rate"), 0);
	assert_int_equal(relay_throttle_reply(&x, d, 451, "451 4.7.1 greylisted"), 0);
	assert_int_equal(d->lim.conn_limit, 10);
	/* a match lowers the limit, and only that one */
	assert_int_equal(relay_throttle_reply(&x, d, 451, "451 4.7.28 unusual rate"), 1);
	assert_int_equal(d->lim.conn_limit, 2);
	assert_int_equal(d->lim.msgs_per_conn, 100);
	assert_int_equal(d->lim.msgs_per_sec, 0);
	assert_int_equal(d->cut_until, base_now() + 3600);
	assert_string_equal(d->cut_rule, "rate");
	/* a second rule combines: unlimited (0) becomes 3 a second, and the
	 * rate buckets of every source follow (burst 3, then waits) */
	assert_int_equal(relay_throttle_reply(&x, d, 421, "421 4.4.2 please slow down"), 1);
	assert_int_equal(d->lim.conn_limit, 2);
	assert_int_equal(d->lim.msgs_per_sec, 3);
	for (size_t i = 0; i < d->nsrc; i++) {
		int64_t t = 1000000000000ll;
		for (int k = 0; k < 3; k++)
			assert_int_equal(relay_rate_take(&d->src[i].msgs, t), 0);
		assert_true(relay_rate_take(&d->src[i].msgs, t) > 0);
	}
	assert_int_equal(d->cut_until, base_now() + 3600); /* the later end of the two */
	/* a limit is never raised by a rule: a configured 1 stays 1 */
	struct dest *low = new_dest(&x, 1, 0);
	relay_throttle_reply(&x, low, 451, "451 4.7.28 unusual rate");
	assert_int_equal(low->lim.conn_limit, 1);
	free_dest(low);
	/* suspend holds the destination instead */
	assert_int_equal(relay_throttle_reply(&x, d, 550, "550 5.7.1 blocked"), 1);
	assert_int_equal(d->suspended_until, base_now() + 7200);
	/* after the end, the configured limits and an unlimited rate return */
	setenv("MAILREP_NOW", "2026-11-23T11:00:01Z", 1);
	relay_dest_limits(&x, d);
	assert_int_equal(d->lim.conn_limit, 10);
	assert_int_equal(d->lim.msgs_per_sec, 0);
	assert_int_equal(d->cut.set, 0);
	assert_null(d->cut_rule);
	assert_int_equal(relay_rate_take(&d->src[0].msgs, 1000000000000ll), 0);
	free_dest(d);
}

static void test_scope_setting(void **state)
{
	(void)state;
	struct base_err err;
	assert_int_equal(relay_throttle_set(&cfg, "a", "scope", "source", &err), 0);
	assert_int_equal(relay_throttle_set(&cfg, "a", "scope", "site", &err), -1);
	assert_non_null(strstr(err.msg, "scope given twice"));
	assert_int_equal(relay_throttle_set(&cfg, "b", "scope", "pool", &err), -1);
	assert_non_null(strstr(err.msg, "scope must be source or site, not 'pool'"));
	assert_int_equal(relay_throttle_set(&cfg, "b", "frob", "1", &err), -1);
	assert_non_null(strstr(err.msg, "(match, action, duration, scope)"));
}

/* A destination of pool "bulk" (two sources), conn-limit 10. */
static struct dest *pool_dest(struct relay_ctx *x)
{
	struct base_err err;
	assert_int_equal(relay_pool_add(&cfg, "bulk", "192.0.2.10", &err), 0);
	assert_int_equal(relay_pool_add(&cfg, "bulk", "192.0.2.11", &err), 0);
	struct dest *d = new_dest(x, 10, 0);
	d->pool = relay_pool_find(&cfg, "bulk");
	return d;
}

static void test_source_scope_holds_back_one_source(void **state)
{
	(void)state;
	rule("rate", "4\\.7\\.28", "conn-limit 2", "1h");
	rule("mps", "4\\.7\\.0 slow", "msgs-per-sec 1", "2h");
	rule("block", "TSS04", "suspend", "30m");
	struct relay_ctx x;
	memset(&x, 0, sizeof x);
	x.cfg = &cfg;
	struct dest *d = pool_dest(&x);
	/* the reply came on a connection from the second source */
	x.acct_si = 2;
	assert_int_equal(relay_throttle_reply(&x, d, 451, "451 4.7.28 unusual rate"), 1);
	assert_int_equal(d->src[1].lim.conn_limit, 2);
	assert_int_equal(d->src[0].lim.conn_limit, 10);
	assert_int_equal(d->lim.conn_limit, 10);
	assert_int_equal(d->cut.set, 0);
	assert_int_equal(d->src[1].cut_until, base_now() + 3600);
	assert_string_equal(d->src[1].cut_rule, "rate");
	/* a rate rule re-arms that source's bucket only */
	assert_int_equal(relay_throttle_reply(&x, d, 421, "421 4.7.0 slow down"), 1);
	assert_int_equal(d->src[1].lim.msgs_per_sec, 1);
	assert_int_equal(d->src[0].lim.msgs_per_sec, 0);
	int64_t t = 1000000000000ll;
	assert_int_equal(relay_rate_take(&d->src[1].msgs, t), 0);
	assert_true(relay_rate_take(&d->src[1].msgs, t) > 0);
	assert_int_equal(relay_rate_take(&d->src[0].msgs, t), 0);
	assert_int_equal(relay_rate_take(&d->src[0].msgs, t), 0);
	assert_int_equal(d->src[1].cut_until, base_now() + 7200); /* the later end */
	/* suspend: the source alone, not the destination */
	assert_int_equal(relay_throttle_reply(&x, d, 421, "421 4.7.0 [TSS04] deferred"), 1);
	assert_int_equal(d->src[1].suspended_until, base_now() + 1800);
	assert_string_equal(d->src[1].susp_rule, "block");
	assert_int_equal(d->src[0].suspended_until, 0);
	assert_int_equal(d->suspended_until, 0);
	/* the first source's own reply holds it too; the other stays as it is */
	x.acct_si = 1;
	assert_int_equal(relay_throttle_reply(&x, d, 451, "451 4.7.28 unusual rate"), 1);
	assert_int_equal(d->src[0].lim.conn_limit, 2);
	assert_int_equal(d->src[0].lim.msgs_per_sec, 0);
	/* without a known source (not a connection's reply) the destination */
	x.acct_si = 0;
	assert_int_equal(relay_throttle_reply(&x, d, 451, "451 4.7.28 unusual rate"), 1);
	assert_int_equal(d->lim.conn_limit, 2);
	/* the ends pass: every limit returns */
	setenv("MAILREP_NOW", "2026-11-23T12:00:01Z", 1);
	relay_dest_limits(&x, d);
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(d->src[i].lim.conn_limit, 10);
		assert_int_equal(d->src[i].lim.msgs_per_sec, 0);
		assert_int_equal(d->src[i].cut.set, 0);
		assert_null(d->src[i].cut_rule);
	}
	assert_int_equal(d->lim.conn_limit, 10);
	free_dest(d);
}

static void test_site_scope_holds_back_every_source(void **state)
{
	(void)state;
	struct base_err err;
	rule("rate", "4\\.7\\.28", "conn-limit 1", "1h");
	assert_int_equal(relay_throttle_set(&cfg, "rate", "scope", "site", &err), 0);
	rule("block", "TSS04", "suspend", "30m");
	assert_int_equal(relay_throttle_set(&cfg, "block", "scope", "site", &err), 0);
	struct relay_ctx x;
	memset(&x, 0, sizeof x);
	x.cfg = &cfg;
	struct dest *d = pool_dest(&x);
	x.acct_si = 2;
	assert_int_equal(relay_throttle_reply(&x, d, 451, "451 4.7.28 unusual rate"), 1);
	assert_int_equal(d->lim.conn_limit, 1);
	assert_int_equal(d->src[0].lim.conn_limit, 1);
	assert_int_equal(d->src[1].lim.conn_limit, 1);
	assert_int_equal(d->src[1].cut.set, 0);
	assert_int_equal(relay_throttle_reply(&x, d, 421, "421 4.7.0 [TSS04] deferred"), 1);
	assert_int_equal(d->suspended_until, base_now() + 1800);
	assert_string_equal(d->susp_rule, "block");
	assert_int_equal(d->src[1].suspended_until, 0);
	free_dest(d);
}

/* Two pools' destinations towards one site share the first source's
 * address: what a rule puts on it in one pool holds it in the other. */
static void test_a_shared_address_holds_in_every_pool(void **state)
{
	(void)state;
	rule("rate", "4\\.7\\.28", "conn-limit 2", "1h");
	rule("mps", "4\\.7\\.0 slow", "msgs-per-sec 1", "2h");
	rule("block", "TSS04", "suspend", "30m");
	struct relay_ctx x;
	memset(&x, 0, sizeof x);
	x.cfg = &cfg;
	struct dest *a = pool_dest(&x), *b = new_dest(&x, 10, 5);
	b->pool = a->pool;
	struct src_site ss;
	memset(&ss, 0, sizeof ss);
	struct src_user users[2] = {{a, 0}, {b, 0}};
	ss.users = users;
	ss.nusers = 2;
	a->src[0].all = b->src[0].all = &ss;
	relay_src_site_limits(&ss);
	/* the lowest of each, 0 being no limit: b's 5 a second */
	assert_int_equal(ss.lim.conn_limit, 10);
	assert_int_equal(ss.lim.msgs_per_sec, 5);
	assert_ptr_equal(relay_src_msgs(&a->src[0]), &ss.msgs);
	assert_ptr_equal(relay_src_msgs(&a->src[1]), &a->src[1].msgs); /* not shared */
	/* a's first source gets the replies */
	x.acct_si = 1;
	assert_int_equal(relay_throttle_reply(&x, a, 451, "451 4.7.28 unusual rate"), 1);
	assert_int_equal(relay_src_conn_limit(&b->src[0]), 2);
	assert_int_equal(relay_src_conn_limit(&b->src[1]), 10);
	assert_int_equal(relay_throttle_reply(&x, a, 421, "421 4.7.0 slow down"), 1);
	int64_t t = 1000000000000ll;
	assert_int_equal(relay_rate_take(relay_src_msgs(&b->src[0]), t), 0);
	assert_true(relay_rate_take(relay_src_msgs(&a->src[0]), t) > 0); /* one bucket */
	assert_int_equal(relay_src_suspended_until(&b->src[0]), 0);
	assert_int_equal(relay_throttle_reply(&x, a, 421, "421 4.7.0 [TSS04] deferred"), 1);
	assert_int_equal(relay_src_suspended_until(&b->src[0]), base_now() + 1800);
	assert_int_equal(relay_src_suspended_until(&b->src[1]), 0);
	/* mail waiting in b wants the address a's connection holds */
	assert_false(relay_src_wanted(a, 0));
	b->njobs = 1;
	assert_true(relay_src_wanted(a, 0));
	assert_false(relay_src_wanted(a, 1));
	assert_false(relay_src_wanted(b, 0)); /* a has nothing waiting */
	/* the ends pass: the address's limits return */
	setenv("MAILREP_NOW", "2026-11-23T12:00:01Z", 1);
	relay_dest_limits(&x, a);
	assert_int_equal(ss.lim.conn_limit, 10);
	assert_int_equal(ss.lim.msgs_per_sec, 5);
	free_dest(a);
	free_dest(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_settings_and_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rules_lower_limits_until_their_end, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_scope_setting, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_source_scope_holds_back_one_source, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_site_scope_holds_back_every_source, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_a_shared_address_holds_in_every_pool, setup,
	                                    teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
