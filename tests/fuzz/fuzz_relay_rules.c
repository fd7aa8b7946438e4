/*
 * fuzz_relay_rules.c — libFuzzer target for the relay's bounce
 * classification rules file: the input is parsed as a rules file (errors
 * must name a line); when it parses, replies are classified with it, and
 * the result is always one of the known categories.
 */
#include <stdlib.h>
#include <string.h>

#include "relay/relay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 2048) return 0;
	/* back-references can make POSIX matching exponential: operators'
	 * files are trusted with them, the fuzzer is not */
	if (memchr(data, '\\', size)) return 0;
	struct relay_rules *r = NULL;
	struct base_err err;
	if (relay_rules_add(&r, (const char *)data, size, "fuzz", &err) < 0) {
		if (!strstr(err.msg, "fuzz:")) abort();
	} else {
		static const char *const replies[] = {
		    "550 5.1.1 user unknown", "421 4.7.0 try later", "000 connection refused", ""};
		for (size_t i = 0; i < 4; i++) {
			const char *c = relay_classify(r, 550, "5.1.1", replies[i]);
			if (!c || !*c) abort();
		}
	}
	relay_rules_free(r);
	return 0;
}
