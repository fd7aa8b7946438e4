/*
 * test_base_hmap.c — unit tests of the hash index (hmap.c): lookups,
 * growth and removal against a plain array kept beside it, with real
 * hashes and with every item forced into one run (equal hashes, and
 * hashes whose runs wrap around the end of the table), where removal
 * has to shift the rest of the run back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

struct item {
	char key[24];
	uint64_t h;
	int in;
};

static int match(const void *item, const void *key)
{
	return !strcmp(((const struct item *)item)->key, key);
}

/* Every item present is found, and no absent one. */
static void check(const struct base_hmap *m, struct item *it, size_t n)
{
	size_t in = 0;
	for (size_t i = 0; i < n; i++) {
		void *f = base_hmap_find(m, it[i].h, match, it[i].key);
		if (it[i].in) {
			assert_ptr_equal(f, &it[i]);
			in++;
		} else {
			assert_null(f);
		}
	}
	assert_int_equal(m->n, in);
}

static void churn(uint64_t (*hash)(size_t i, const char *key))
{
	enum { N = 3000 };
	struct item *it = calloc(N, sizeof *it);
	struct base_hmap m = {0};
	for (size_t i = 0; i < N; i++) {
		snprintf(it[i].key, sizeof it[i].key, "mx%zu.example", i);
		it[i].h = hash(i, it[i].key);
	}
	assert_null(base_hmap_find(&m, it[0].h, match, it[0].key)); /* empty */
	for (size_t i = 0; i < N; i++) {
		base_hmap_put(&m, it[i].h, &it[i]);
		it[i].in = 1;
	}
	check(&m, it, N);
	/* remove every third, then every other of the rest, checking as we go */
	for (size_t i = 0; i < N; i += 3) {
		assert_true(base_hmap_del(&m, it[i].h, &it[i]));
		it[i].in = 0;
	}
	check(&m, it, N);
	assert_false(base_hmap_del(&m, it[0].h, &it[0])); /* gone already */
	for (size_t i = 1; i < N; i += 2)
		if (it[i].in) {
			assert_true(base_hmap_del(&m, it[i].h, &it[i]));
			it[i].in = 0;
			if (i % 97 == 1) check(&m, it, N);
		}
	check(&m, it, N);
	/* put back: the slots freed by removal are used again */
	for (size_t i = 0; i < N; i++)
		if (!it[i].in) {
			base_hmap_put(&m, it[i].h, &it[i]);
			it[i].in = 1;
		}
	check(&m, it, N);
	base_hmap_free(&m);
	assert_int_equal(m.n, 0);
	free(it);
}

static uint64_t real_hash(size_t i, const char *key)
{
	(void)i;
	return base_hash_lower(0, key);
}

static uint64_t one_hash(size_t i, const char *key)
{
	(void)i;
	(void)key;
	return 42;
}

/* Few distinct hashes: long runs that cross each other and the table's end. */
static uint64_t few_hashes(size_t i, const char *key)
{
	(void)key;
	return (uint64_t)(i % 7) * 0x9e3779b97f4a7c15ull;
}

static void test_real_hashes(void **state)
{
	(void)state;
	churn(real_hash);
}

static void test_colliding_hashes(void **state)
{
	(void)state;
	churn(one_hash);
	churn(few_hashes);
}

static void test_hash_functions(void **state)
{
	(void)state;
	/* lower-cased in ASCII only; the same bytes hash alike */
	assert_true(base_hash_lower(0, "MX.Example.COM") == base_hash_lower(0, "mx.example.com"));
	assert_true(base_hash_lower(0, "mx.example.com") ==
	            base_hash_mix(0, "mx.example.com", 14));
	assert_true(base_hash_lower(0, "a") != base_hash_lower(0, "b"));
	/* going on from a hash is hashing the concatenation */
	assert_true(base_hash_mix(base_hash_mix(0, "ab", 2), "cd", 2) == base_hash_mix(0, "abcd", 4));
	/* the seed is drawn: not FNV-1a's published offset basis */
	assert_true(base_hash_mix(0, "", 0) != 0xcbf29ce484222325ull);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_real_hashes),
	    cmocka_unit_test(test_colliding_hashes),
	    cmocka_unit_test(test_hash_functions),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
