/*
 * fuzz_slotfile.c — libFuzzer target for the two-slot state file's
 * parser (src/base/slotfile.c): any input is either refused with a
 * message or yields content that lies inside the input, from a slot whose
 * size is a multiple of 4096.
 */
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > (1u << 20)) return 0;
	size_t off, len;
	uint64_t seq;
	int slot;
	uint32_t ssize;
	struct base_err err;
	err.msg[0] = 0;
	if (base_slotfile_parse(data, size, &off, &len, &seq, &slot, &ssize, &err) < 0) {
		if (!err.msg[0]) abort();
		return 0;
	}
	if (off + len > size || (slot != 0 && slot != 1) || ssize % 4096 || off < 64) abort();
	if (off != (size_t)slot * ssize + 64) abort();
	return 0;
}
