/*
 * test_relay_shape.c — unit tests of the relay's shaping arithmetic and
 * pool configuration: the GCRA rate limiter (bursts, spacing, waits, the
 * unlimited case) under an injected clock, smooth weighted round robin
 * (exact ratios, interleaving, eligibility), and the parsers of pool
 * sources (INI form and flag form), [domain] overrides and their errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <sys/socket.h>

#include "relay/relay.h"
#include "relay/shape.h"

#define SEC 1000000000ll

static void test_rate_per_second(void **state)
{
	(void)state;
	struct relay_rate r;
	relay_rate_init(&r, 5, SEC); /* 5 a second: burst 5, then one per 200 ms */
	int64_t t = 1000 * SEC;
	for (int i = 0; i < 5; i++) assert_int_equal(relay_rate_take(&r, t), 0);
	int64_t w = relay_rate_take(&r, t);
	assert_int_equal(w, SEC / 5);
	assert_int_equal(relay_rate_wait(&r, t), w); /* asking takes nothing */
	assert_int_equal(relay_rate_take(&r, t + w - 1), 1);
	assert_int_equal(relay_rate_take(&r, t + w), 0);
	/* over the first 10 s of steady asking, between 5 * 10 and 5 * 10 + 5
	 * (the burst) went through, counting the 6 above */
	unsigned n = 0;
	for (int64_t now = t + w; now < t + 10 * SEC; now += SEC / 100)
		if (relay_rate_take(&r, now) == 0) n++;
	assert_true(n + 6 >= 50 && n + 6 <= 55);
	/* idle time refills up to the burst, not beyond */
	t += 3600 * SEC;
	n = 0;
	while (relay_rate_take(&r, t) == 0) n++;
	assert_int_equal(n, 5);
}

static void test_rate_per_minute_and_unlimited(void **state)
{
	(void)state;
	struct relay_rate r;
	relay_rate_init(&r, 6, 60 * SEC); /* 6 a minute: burst 1, one per 10 s */
	int64_t t = 5 * SEC;
	assert_int_equal(relay_rate_take(&r, t), 0);
	assert_int_equal(relay_rate_take(&r, t), 10 * SEC);
	assert_int_equal(relay_rate_take(&r, t + 9 * SEC), SEC);
	assert_int_equal(relay_rate_take(&r, t + 10 * SEC), 0);
	relay_rate_init(&r, 120, 60 * SEC); /* 2 a second: burst 2 */
	assert_int_equal(relay_rate_take(&r, t), 0);
	assert_int_equal(relay_rate_take(&r, t), 0);
	assert_int_equal(relay_rate_take(&r, t), SEC / 2);
	relay_rate_init(&r, 0, SEC);
	for (int i = 0; i < 100000; i++) assert_int_equal(relay_rate_take(&r, t), 0);
}

static void test_swrr(void **state)
{
	(void)state;
	/* nginx's example: weights 5, 1, 1 give a a b a c a a */
	uint32_t w[3] = {5, 1, 1};
	int64_t cur[3] = {0};
	char seq[8] = {0};
	for (int i = 0; i < 7; i++) seq[i] = (char)('a' + relay_swrr_pick(w, cur, NULL, 3));
	assert_string_equal(seq, "aabacaa");
	/* exact ratio over every full round */
	uint32_t w2[2] = {3, 1};
	int64_t c2[2] = {0};
	unsigned n[2] = {0};
	for (int i = 0; i < 400; i++) n[relay_swrr_pick(w2, c2, NULL, 2)]++;
	assert_int_equal(n[0], 300);
	assert_int_equal(n[1], 100);
	/* ineligible candidates are skipped; none eligible gives -1 */
	unsigned char ok[2] = {0, 1};
	for (int i = 0; i < 5; i++) assert_int_equal(relay_swrr_pick(w2, c2, ok, 2), 1);
	ok[1] = 0;
	assert_int_equal(relay_swrr_pick(w2, c2, ok, 2), -1);
}

static void test_source_parse(void **state)
{
	(void)state;
	struct relay_source s;
	struct base_err err;
	assert_int_equal(relay_source_parse(&s, "127.0.0.2 ehlo=mta2.example.net weight=3", &err),
	                 0);
	assert_int_equal(s.addr.family, AF_INET);
	assert_string_equal(s.ip, "127.0.0.2");
	assert_string_equal(s.ehlo, "mta2.example.net");
	assert_int_equal(s.weight, 3);
	assert_int_equal(relay_source_parse(&s, "  2001:db8::25\t", &err), 0);
	assert_int_equal(s.addr.family, AF_INET6);
	assert_string_equal(s.ip, "2001:db8::25");
	assert_string_equal(s.ehlo, "");
	assert_int_equal(s.weight, 1);
	assert_int_equal(relay_source_parse(&s, "[::1] ehlo=[IPv6:::1]", &err), 0);
	static const char *const bad[] = {"",
	                                  "mta.example.net",
	                                  "127.0.0.256",
	                                  "127.0.0.2 weight=0",
	                                  "127.0.0.2 weight=1001",
	                                  "127.0.0.2 weight=3x",
	                                  "127.0.0.2 ehlo=",
	                                  "127.0.0.2 ehlo=a_b.example",
	                                  "127.0.0.2 ehlo=a\rb",
	                                  "127.0.0.2 colour=blue"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		assert_int_equal(relay_source_parse(&s, bad[i], &err), -1);
}

static void test_pool_config(void **state)
{
	(void)state;
	struct relay_config c;
	struct base_err err;
	relay_config_init(&c);
	assert_int_equal(
	    relay_pool_flag(&c, "bulk=127.0.0.2/mta2.test*3,127.0.0.3,::1/mta6.test", &err), 0);
	assert_int_equal(relay_pool_add(&c, "tx", "127.0.0.9 ehlo=tx.test", &err), 0);
	assert_int_equal(relay_pool_add(&c, "bulk", "127.0.0.4 weight=2", &err), 0);
	const struct relay_pool *p = relay_pool_find(&c, "bulk");
	assert_non_null(p);
	assert_int_equal(p->nsrc, 4);
	assert_string_equal(p->src[0].ehlo, "mta2.test");
	assert_int_equal(p->src[0].weight, 3);
	assert_string_equal(p->src[1].ehlo, "");
	assert_int_equal(p->src[1].weight, 1);
	assert_int_equal(p->src[2].addr.family, AF_INET6);
	assert_int_equal(p->src[3].weight, 2);
	assert_null(relay_pool_find(&c, "nope"));
	/* errors name the pool and what is wrong */
	assert_int_equal(relay_pool_add(&c, "bulk", "127.0.0.2", &err), -1);
	assert_non_null(strstr(err.msg, "given twice"));
	assert_int_equal(relay_pool_flag(&c, "bulk=127.0.0.7*2/x.test", &err), -1);
	assert_int_equal(relay_pool_flag(&c, "bulk=127.0.0.7,", &err), -1);
	assert_non_null(strstr(err.msg, "pool 'bulk'"));
	assert_int_equal(relay_pool_flag(&c, "b ulk=127.0.0.7", &err), -1);
	assert_int_equal(relay_pool_flag(&c, "127.0.0.7", &err), -1);
	/* default-pool must name a pool */
	assert_int_equal(relay_shaping_set(&c, "default-pool", "tx", &err), 0);
	assert_int_equal(relay_shaping_check(&c, &err), 0);
	assert_int_equal(relay_shaping_set(&c, "default-pool", "nope", &err), 0);
	assert_int_equal(relay_shaping_check(&c, &err), -1);
	assert_int_equal(relay_shaping_set(&c, "msgs-per-sec", "7", &err), 0);
	assert_int_equal(c.msgs_per_sec, 7);
	assert_int_equal(relay_shaping_set(&c, "conns-per-min", "x", &err), -1);
	assert_int_equal(relay_shaping_set(&c, "listen", "x", &err), 1);
	relay_pools_clear(&c);
	assert_null(relay_pool_find(&c, "bulk"));
	/* [domain] overrides */
	assert_int_equal(relay_domain_set(&c, "Slow.Example", "conn-limit", "1", &err), 0);
	assert_int_equal(relay_domain_set(&c, "slow.example", "msgs-per-sec", "0", &err), 0);
	const struct relay_domain_limits *d = relay_domain_find(&c, "SLOW.example");
	assert_non_null(d);
	assert_int_equal(d->lim.set, RELAY_LIM_CONN | RELAY_LIM_MPS);
	assert_int_equal(d->lim.conn_limit, 1);
	assert_int_equal(relay_domain_set(&c, "slow.example", "conn-limit", "0", &err), -1);
	assert_int_equal(relay_domain_set(&c, "slow.example", "frobs", "1", &err), -1);
	assert_non_null(strstr(err.msg, "frobs"));
	assert_int_equal(relay_domain_set(&c, "bad domain", "conn-limit", "1", &err), -1);
	relay_shaping_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rate_per_second),
	    cmocka_unit_test(test_rate_per_minute_and_unlimited),
	    cmocka_unit_test(test_swrr),
	    cmocka_unit_test(test_source_parse),
	    cmocka_unit_test(test_pool_config),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
