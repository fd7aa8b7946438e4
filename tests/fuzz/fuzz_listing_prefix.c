/*
 * fuzz_listing_prefix.c — libFuzzer target for the allocation / prefix2as
 * line parser and the table built from it. Every line of the input is
 * added (in an exactly-sized buffer); the finished table must then answer
 * longest-prefix matches consistently: a match contains the address, and
 * no longer prefix of the table contains it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "listing/listing.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int contains(const struct listing_prefix *p, uint32_t a)
{
	uint32_t mask = p->len ? 0xffffffffu << (32 - p->len) : 0;
	return (a & mask) == p->addr;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct listing_prefixes *t = listing_prefixes_new();
	size_t start = 0;
	while (start <= size) {
		const uint8_t *nl = memchr(data + start, '\n', size - start);
		size_t end = nl ? (size_t)(nl - data) : size;
		size_t n = end - start;
		char *line = malloc(n ? n : 1);
		memcpy(line, data + start, n);
		struct base_err err;
		if (listing_prefixes_add_line(t, line, n, &err) < 0 && !err.msg[0]) abort();
		free(line);
		if (!nl) break;
		start = end + 1;
	}
	listing_prefixes_finish(t);
	/* probe the table at every prefix's edges */
	for (size_t i = 0; i < t->n && i < 64; i++) {
		uint32_t probes[3] = {
		    t->v[i].addr, t->v[i].addr - 1,
		    t->v[i].addr |
		        (t->v[i].len ? ~(0xffffffffu << (32 - t->v[i].len)) : 0xffffffffu)};
		for (int k = 0; k < 3; k++) {
			const struct listing_prefix *m = listing_prefixes_match(t, probes[k]);
			if (m && !contains(m, probes[k])) abort();
			for (size_t j = 0; j < t->n; j++)
				if (contains(&t->v[j], probes[k]) && (!m || t->v[j].len > m->len))
					abort();
		}
		(void)listing_prefixes_as_size(t, t->v[i].asn);
	}
	listing_prefixes_free(t);
	return 0;
}
