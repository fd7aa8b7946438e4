/*
 * fuzz_listing_files.c — libFuzzer target for the listing module's whole-
 * file readers: the [listing] section of a config file, the whitelist, the
 * allocation table and an evidence message. The input is written to a file
 * (plain or, if it starts with the gzip magic, compressed) and read by each;
 * each may fail with a file:line message but must never crash, leak or hang.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "listing/listing.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	base_log_set_level(BASE_LOG_ERROR);
	snprintf(path, sizeof path, "/tmp/fuzz-listing-%ld", (long)getpid());
	return 0;
}

static int policy_cb(void *ctx, const char *key, const char *value, struct base_err *err)
{
	return listing_policy_set(ctx, key, value, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	FILE *f = fopen(path, "wb");
	if (!f) return 0;
	fwrite(data, 1, size, f);
	fclose(f);
	struct base_err err;
	struct listing_policy p;
	listing_policy_defaults(&p);
	(void)base_ini_read(path, "listing", policy_cb, &p, &err);
	(void)listing_policy_load_whitelist(&p, path, &err);
	listing_policy_free(&p);
	struct listing_prefixes *t = NULL;
	if (listing_prefixes_load(path, &t, &err) == 0) listing_prefixes_free(t);
	struct listing_impact imp = {0};
	char *buf = NULL;
	if (listing_impact_read_evidence(path, &imp, &buf, &err) == 0) {
		if (imp.headers_len > LISTING_HEADERS_MAX) abort();
		if (imp.subject && strlen(imp.subject) > LISTING_FIELD_MAX) abort();
		free(buf);
	}
	unlink(path);
	return 0;
}
