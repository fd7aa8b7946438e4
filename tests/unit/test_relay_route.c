/*
 * test_relay_route.c — unit tests of a static route's next hop given as a
 * host name (relay_route_host_parse): names with and without a port, case
 * folded, and the malformed ones refused (empty labels, hyphens at a
 * label's ends, bad ports, an all-digit last label, other characters,
 * lengths).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "relay/relay.h"

static void test_good_names(void **state)
{
	(void)state;
	char name[256];
	uint16_t port;
	assert_int_equal(relay_route_host_parse("mx.example.net:2525", name, sizeof name, &port),
	                 1);
	assert_string_equal(name, "mx.example.net");
	assert_int_equal(port, 2525);
	assert_int_equal(relay_route_host_parse("MX-1.Example.NET", name, sizeof name, &port), 1);
	assert_string_equal(name, "mx-1.example.net");
	assert_int_equal(port, 25);
	assert_int_equal(relay_route_host_parse("localhost:1", name, sizeof name, &port), 1);
	assert_int_equal(port, 1);
	assert_int_equal(relay_route_host_parse("1.2.3.example:65535", name, sizeof name, &port),
	                 1);
	char long_ok[300];
	memset(long_ok, 'a', 63);
	strcpy(long_ok + 63, ".example");
	assert_int_equal(relay_route_host_parse(long_ok, name, sizeof name, &port), 1);
}

static void test_bad_names(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "",
	    ":25",
	    "mx.example:",
	    "mx.example:0",
	    "mx.example:65536",
	    "mx.example:-1",
	    "mx.example:+25",
	    "mx.example:2x",
	    "-mx.example",
	    "mx-.example",
	    "mx..example",
	    ".mx.example",
	    "mx.example.",
	    "1.2.3.999",
	    "mx_1.example",
	    "mx example",
	    "[mx.example]",
	    "mx.exa/mple",
	    "m\xc3\xa9.example",
	    "mx.example:25:25",
	};
	char name[256];
	uint16_t port;
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		assert_int_equal(relay_route_host_parse(bad[i], name, sizeof name, &port), 0);
	char long_label[300];
	memset(long_label, 'a', 64);
	strcpy(long_label + 64, ".example");
	assert_int_equal(relay_route_host_parse(long_label, name, sizeof name, &port), 0);
	char too_long[300];
	for (int i = 0; i < 130; i++) memcpy(too_long + 2 * i, "a.", 2);
	strcpy(too_long + 260, "com");
	assert_int_equal(relay_route_host_parse(too_long, name, sizeof name, &port), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good_names),
	    cmocka_unit_test(test_bad_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
