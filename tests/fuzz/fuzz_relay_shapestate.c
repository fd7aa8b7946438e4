/*
 * fuzz_relay_shapestate.c — libFuzzer target for the lines of
 * SPOOL/shaping (shapestate.h), the relay's back-offs and throttle rules
 * kept across a restart. Each input line is parsed: a refusal must say
 * something; an accepted entry must be sane (a printable, space-free
 * site, a port, a time, a rule on every throttle line, a source only with
 * a pool), and written back the way the relay saves it must parse to the
 * same entry and write to the same line again.
 */
#include <stdlib.h>
#include <string.h>

#include "relay/shapestate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one(const char *line, size_t len)
{
	struct relay_shape_entry e, r;
	struct base_err err;
	err.msg[0] = 0;
	if (relay_shape_parse(line, len, &e, &err) < 0) {
		if (!err.msg[0]) abort();
		return;
	}
	if (e.kind == RELAY_SHAPE_NONE) return;
	if (len > RELAY_SHAPE_LINE_MAX) abort();
	size_t n = strlen(e.site);
	if (!n || n >= sizeof e.site) abort();
	for (size_t i = 0; i < n; i++)
		if (e.site[i] <= ' ' || e.site[i] > '~') abort();
	if (!e.port || e.until <= 0) abort();
	if (e.kind == RELAY_SHAPE_THROTTLE && !e.rule[0]) abort();
	if (e.source[0] && !e.pool[0]) abort();
	struct base_buf a, b;
	base_buf_init(&a);
	base_buf_init(&b);
	relay_shape_format(&e, &a);
	if (!a.len || a.data[a.len - 1] != '\n') abort();
	if (relay_shape_parse(a.data, a.len - 1, &r, &err) < 0) abort();
	if (memcmp(&e, &r, sizeof e)) abort();
	relay_shape_format(&r, &b);
	if (a.len != b.len || memcmp(a.data, b.data, a.len)) abort();
	base_buf_free(&a);
	base_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = (size_t)((nl ? nl : end) - p);
		one(p, len);
		p += len + 1;
	}
	return 0;
}
