/*
 * test_base_slotfile.c — unit tests of the two-slot state file
 * (src/base/slotfile.c): a first write builds the file, later writes
 * alternate slots in place without replacing the file, a torn newest slot
 * falls back to the write before it, two bad slots are refused, a file in
 * the old whole-file form is read as it is and converted by the next
 * write, and content that outgrows its slot rebuilds the file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"

static char path[256];

static int setup(void **state)
{
	(void)state;
	snprintf(path, sizeof path, "/tmp/mailrep-slotfile-%d", (int)getpid());
	unlink(path);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(path);
	return 0;
}

/* The newest content, or NULL (and err) when the file is refused. */
static char *content(int *legacy, struct base_err *err)
{
	struct base_slotfile *f;
	char *text;
	size_t len;
	int lg;
	if (base_slotfile_open(&f, path, &text, &len, &lg, err) < 0) return NULL;
	base_slotfile_close(f);
	if (legacy) *legacy = lg;
	return text;
}

static void expect(const char *want)
{
	struct base_err err;
	char *got = content(NULL, &err);
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static void flip_byte(off_t at)
{
	FILE *f = fopen(path, "r+b");
	assert_non_null(f);
	fseek(f, at, SEEK_SET);
	int c = fgetc(f);
	fseek(f, at, SEEK_SET);
	fputc(c ^ 0x20, f);
	fclose(f);
}

static void test_writes_alternate_in_place(void **state)
{
	(void)state;
	struct base_slotfile *f;
	struct base_err err;
	char *text;
	size_t len;
	int legacy;
	assert_int_equal(base_slotfile_open(&f, path, &text, &len, &legacy, &err), 0);
	assert_null(text); /* no file yet */
	assert_int_equal(base_slotfile_write(f, "one\n", 4, &err), 0);
	struct stat a, b;
	assert_int_equal(stat(path, &a), 0);
	assert_int_equal(a.st_size, 8192); /* two 4 KB slots */
	expect("one\n");
	assert_int_equal(base_slotfile_write(f, "two\n", 4, &err), 0);
	expect("two\n");
	assert_int_equal(base_slotfile_write(f, "three\n", 6, &err), 0);
	expect("three\n");
	assert_int_equal(stat(path, &b), 0);
	assert_int_equal(a.st_ino, b.st_ino); /* rewritten in place, not replaced */
	assert_int_equal(b.st_size, 8192);
	base_slotfile_close(f);
	/* reopened, the next write goes after the newest */
	assert_int_equal(base_slotfile_open(&f, path, &text, &len, &legacy, &err), 0);
	assert_string_equal(text, "three\n");
	assert_int_equal(legacy, 0);
	free(text);
	assert_int_equal(base_slotfile_write(f, "four\n", 5, &err), 0);
	base_slotfile_close(f);
	expect("four\n");
}

static void test_torn_slot_falls_back(void **state)
{
	(void)state;
	struct base_slotfile *f;
	struct base_err err;
	char *text;
	size_t len;
	int legacy;
	assert_int_equal(base_slotfile_open(&f, path, &text, &len, &legacy, &err), 0);
	assert_int_equal(base_slotfile_write(f, "old\n", 4, &err), 0); /* both slots */
	assert_int_equal(base_slotfile_write(f, "new\n", 4, &err), 0); /* slot 0 */
	base_slotfile_close(f);
	expect("new\n");
	flip_byte(64 + 1); /* the newest slot's content: its CRC fails */
	expect("old\n");
	flip_byte(4096 + 64); /* and the other's: nothing valid is left */
	assert_null(content(NULL, &err));
	assert_non_null(strstr(err.msg, "neither slot is valid"));
	assert_non_null(strstr(err.msg, path));
	/* a damaged header is as bad as damaged content */
	unlink(path);
	assert_int_equal(base_slotfile_open(&f, path, &text, &len, &legacy, &err), 0);
	assert_int_equal(base_slotfile_write(f, "a\n", 2, &err), 0);
	assert_int_equal(base_slotfile_write(f, "b\n", 2, &err), 0);
	base_slotfile_close(f);
	flip_byte(20); /* inside slot 0's "seq=" */
	assert_null(content(NULL, &err));
	assert_non_null(strstr(err.msg, "no header at byte 0"));
}

static void test_legacy_and_growth(void **state)
{
	(void)state;
	FILE *w = fopen(path, "w");
	fputs("@spool 1 2\nacme 1 2 3 4\n", w);
	fclose(w);
	int legacy = 0;
	struct base_err err;
	char *text = content(&legacy, &err);
	assert_non_null(text);
	assert_int_equal(legacy, 1);
	assert_string_equal(text, "@spool 1 2\nacme 1 2 3 4\n");
	free(text);
	struct base_slotfile *f;
	size_t len;
	assert_int_equal(base_slotfile_open(&f, path, &text, &len, &legacy, &err), 0);
	free(text);
	assert_int_equal(base_slotfile_write(f, "converted\n", 10, &err), 0);
	expect("converted\n");
	/* 10,000 bytes do not fit a 4 KB slot: the file is rebuilt larger */
	char *big = malloc(10001);
	memset(big, 'x', 10000);
	big[10000] = 0;
	assert_int_equal(base_slotfile_write(f, big, 10000, &err), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_true(st.st_size >= 2 * (64 + 10000));
	expect(big);
	/* and it shrinks back into the same slots */
	assert_int_equal(base_slotfile_write(f, "small\n", 6, &err), 0);
	expect("small\n");
	base_slotfile_close(f);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_writes_alternate_in_place, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_torn_slot_falls_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_legacy_and_growth, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
