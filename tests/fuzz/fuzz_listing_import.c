/*
 * fuzz_listing_import.c — libFuzzer target for the impact import line
 * parser. The input is split at newlines; each line goes, in a buffer of
 * exactly its size, through listing_impact_parse_line(), which may reject
 * it with a message but must never read or write outside it. An accepted
 * impact must satisfy the parser's promises (bounded, control-free fields).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "listing/listing.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_field(const char *f)
{
	if (!f) return;
	size_t n = strlen(f);
	if (n > LISTING_FIELD_MAX) abort();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)f[i] < 0x20) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t start = 0;
	while (start <= size) {
		const uint8_t *nl = memchr(data + start, '\n', size - start);
		size_t end = nl ? (size_t)(nl - data) : size;
		size_t n = end - start;
		char *line = malloc(n + 1);
		memcpy(line, data + start, n);
		line[n] = 0;
		struct listing_impact imp;
		struct base_err err;
		int r = listing_impact_parse_line(line, n, 1700000000, &imp, &err);
		if (r == 1) {
			if (imp.ip.family != 4 && imp.ip.family != 6) abort();
			check_field(imp.trap);
			check_field(imp.source);
			check_field(imp.helo);
			check_field(imp.mail_from);
			check_field(imp.rcpt);
			check_field(imp.message_id);
			check_field(imp.subject);
		} else if (r < 0 && !err.msg[0]) {
			abort(); /* every rejection says why */
		}
		free(line);
		if (!nl) break;
		start = end + 1;
	}
	return 0;
}
