/*
 * fuzz_relay_record.c — libFuzzer target for the relay spool's record
 * reader: the input is read as a segment file, record after record, the
 * way recovery does (a record never claims more bytes than it was given,
 * and a parsed record's fields stay inside it); then the same bytes are
 * put in a real spool directory as a segment and recovered. In this build
 * recovery reads segments in blocks of 64 bytes (spool.c), so records
 * cross blocks and outgrow them.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "relay/relay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_msg(void *arg, const struct relay_record *m, const struct relay_loc *loc,
                   const uint32_t *states, const uint32_t *attempts, const int64_t *next)
{
	size_t *n = arg;
	const char *p = m->rcpts;
	for (uint32_t i = 0; i < m->nrcpt; i++) p += strlen(p) + 1;
	(*n)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct relay_record r;
	struct base_err err;
	size_t off = 0;
	while (off < size) {
		int n = relay_record_parse(data + off, size - off, &r, &err);
		if (n <= 0) break;
		if ((size_t)n > size - off) abort();
		if (r.type == 'M' && r.body_off + r.body_len != (size_t)n) abort();
		off += (size_t)n;
	}
	char dir[] = "/tmp/fuzz-relay-XXXXXX";
	if (!mkdtemp(dir)) return 0;
	char path[64];
	snprintf(path, sizeof path, "%s/seg-00000001", dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd >= 0) {
		if (write(fd, data, size) != (ssize_t)size) abort();
		close(fd);
		struct relay_spool *sp;
		size_t n = 0;
		if (relay_spool_open(&sp, dir, on_msg, &n, &err) == 0) relay_spool_close(sp);
	}
	unlink(path);
	snprintf(path, sizeof path, "%s/seg-00000002", dir);
	unlink(path);
	rmdir(dir);
	return 0;
}
