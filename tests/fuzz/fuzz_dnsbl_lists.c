/*
 * fuzz_dnsbl_lists.c — libFuzzer target for the DNSBL list file of
 * `mailrep check ip`: the input is parsed as a whole file, and every list
 * it yields must hold bounded, NUL-terminated fields.
 */
#include <stdlib.h>
#include <string.h>

#include "check/check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct check_dnsbl_set set;
	struct base_err err;
	if (check_dnsbl_parse((const char *)data, size, "fuzz", &set, &err) == 0) {
		for (size_t i = 0; i < set.n; i++) {
			const struct check_dnsbl *l = &set.lists[i];
			if (strlen(l->zone) >= sizeof l->zone ||
			    strlen(l->name) >= sizeof l->name ||
			    l->ncodes > CHECK_DNSBL_MAX_CODES || !l->kind)
				abort();
		}
		check_dnsbl_set_free(&set);
	}
	return 0;
}
