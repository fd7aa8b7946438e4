/*
 * test_base64.c — unit tests of base_b64_decode under both of its rules:
 * strict (SASL, stored hashes: no white space, padding optional but never
 * too much, no lone 6-bit group) and DKIM's (folding white space anywhere,
 * up to two '=' whatever the length, a lone group ignored), with the
 * padding edge cases that tell them apart and the output bound.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "base/base.h"

#define DKIM (BASE_B64_SKIP_FWS | BASE_B64_LAX_END)

static long dec(const char *s, unsigned flags, char *out)
{
	uint8_t buf[64];
	long n = base_b64_decode(s, strlen(s), buf, sizeof buf, flags);
	if (n >= 0) {
		memcpy(out, buf, (size_t)n);
		out[n] = 0;
	}
	return n;
}

static void test_both_rules_agree(void **state)
{
	(void)state;
	char out[65];
	static const unsigned rules[] = {0, DKIM};
	for (int r = 0; r < 2; r++) {
		assert_int_equal(dec("", rules[r], out), 0);
		assert_int_equal(dec("Zm9vYmFy", rules[r], out), 6);
		assert_string_equal(out, "foobar");
		assert_int_equal(dec("Zm9vYg==", rules[r], out), 4);
		assert_string_equal(out, "foob");
		assert_int_equal(dec("Zm9vYg", rules[r], out), 4); /* padding is optional */
		assert_int_equal(dec("Zm9vYmE=", rules[r], out), 5);
		assert_string_equal(out, "fooba");
		assert_int_equal(dec("Zm9vYmE", rules[r], out), 5);
		assert_int_equal(dec("Zm9vYg=", rules[r], out), 4); /* half the padding */
		assert_int_equal(dec("+/+/", rules[r], out), 3);
		assert_int_equal(dec("Zm9v=", rules[r], out), -1); /* '=' after a full quantum */
		assert_int_equal(dec("Zm9vYg===", rules[r], out), -1); /* three '=' */
		assert_int_equal(dec("Zm=9v", rules[r], out), -1);     /* data after '=' */
		assert_int_equal(dec("Zm9v-_", rules[r], out),
		                 -1); /* the URL alphabet is not this one */
		assert_int_equal(dec("Zm9v!", rules[r], out), -1);
		assert_int_equal(dec("==", rules[r], out), -1);
	}
	uint8_t nul[] = {'Z', 'm', 0, 'v'};
	uint8_t b[8];
	assert_int_equal(base_b64_decode((const char *)nul, 4, b, sizeof b, 0), -1);
	assert_int_equal(base_b64_decode((const char *)nul, 4, b, sizeof b, DKIM), -1);
}

static void test_strict(void **state)
{
	(void)state;
	char out[65];
	assert_int_equal(dec("AGFjbWUAcHc=", 0, out), 8);
	assert_memory_equal(out, "\0acme\0pw", 8);
	assert_int_equal(dec("Z", 0, out), -1); /* a lone 6-bit group */
	assert_int_equal(dec("Zm9vY", 0, out), -1);
	assert_int_equal(dec("Zm9vY==", 0, out), -1);
	assert_int_equal(dec("Zm9vYmE==", 0, out), -1); /* two '=' where one completes it */
	assert_int_equal(dec("Zm9v YmFy", 0, out), -1); /* no white space */
	assert_int_equal(dec("Zm9vYmFy\r\n", 0, out), -1);
	assert_int_equal(dec("Zm9vYg= =", 0, out), -1);
}

static void test_dkim(void **state)
{
	(void)state;
	char out[65];
	/* folding white space anywhere, around and inside the padding too */
	assert_int_equal(dec(" Zm9v\r\n\tYmFy ", DKIM, out), 6);
	assert_string_equal(out, "foobar");
	assert_int_equal(dec("Zm9vYg= =\r\n", DKIM, out), 4);
	assert_string_equal(out, "foob");
	assert_int_equal(dec(" \t\r\n", DKIM, out), 0);
	/* the loose end: a lone group is dropped, two '=' after three characters */
	assert_int_equal(dec("Z", DKIM, out), 0);
	assert_int_equal(dec("Zm9vY", DKIM, out), 3);
	assert_string_equal(out, "foo");
	assert_int_equal(dec("Zm9vY==", DKIM, out), 3);
	assert_int_equal(dec("Zm9vYmE==", DKIM, out), 5);
	/* other white space is not folding white space */
	assert_int_equal(dec("Zm9v\vYmFy", DKIM, out), -1);
	/* white space alone is not enough for the loose end: only the flag */
	assert_int_equal(dec("Zm9vYmE==", BASE_B64_SKIP_FWS, out), -1);
	assert_int_equal(dec("Zm9v YmE==", BASE_B64_LAX_END, out), -1);
}

static void test_output_bound(void **state)
{
	(void)state;
	uint8_t b[6];
	static const unsigned rules[] = {0, DKIM};
	for (int r = 0; r < 2; r++) {
		assert_int_equal(base_b64_decode("Zm9vYmFy", 8, b, 6, rules[r]), 6);
		assert_int_equal(base_b64_decode("Zm9vYmFy", 8, b, 5, rules[r]), -1);
		assert_int_equal(base_b64_decode("Zm9vYmFy", 8, b, 0, rules[r]), -1);
		assert_int_equal(base_b64_decode("", 0, b, 0, rules[r]), 0);
		/* only len bytes are read: the rest of the string does not count */
		assert_int_equal(base_b64_decode("Zm9v!!!!", 4, b, 6, rules[r]), 3);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_both_rules_agree),
	    cmocka_unit_test(test_strict),
	    cmocka_unit_test(test_dkim),
	    cmocka_unit_test(test_output_bound),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
