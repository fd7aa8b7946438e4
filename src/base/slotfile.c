/*
 * slotfile.c — a small state file rewritten in place with one fdatasync,
 * instead of a temporary file, its fsync, a rename and the directory's
 * fsync (base_write_file_atomic: two syncs, each an ext4 journal commit).
 *
 * The file holds two slots of `size` bytes each (a multiple of 4096). A
 * slot is a 64-byte header line and the content:
 *
 *   mailrep-slot v1 seq=SEQ len=LEN crc=CRC32 size=SIZE      (padded, '\n' at byte 63)
 *   LEN bytes of content, then whatever an older write left
 *
 * A write goes to the slot that does not hold the newest valid content,
 * with the next sequence number, and is made durable by fdatasync (the
 * file's size does not change, so no metadata has to be). Reading takes
 * the valid slot with the highest sequence number; a slot torn by a crash
 * fails its CRC and the other one, the previous write, is used. Content
 * that outgrows a slot rebuilds the file with larger slots, atomically,
 * the old way. A file that does not begin with the header is returned as
 * it is ("legacy"), so callers can read the format they wrote before.
 *
 * Invariant: after a successful write the newest valid slot is that
 * write's, and the other slot holds the write before it (or the same);
 * a failed write leaves the newest valid slot as it was, and the next
 * attempt goes to the same slot again.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "base/base.h"

#define HDR      64
#define MAGIC    "mailrep-slot v1 "
#define FILE_MAX (64u << 20)

struct base_slotfile {
	char *path;
	int fd;        /* -1: no file in slot form yet (the next write builds it) */
	uint32_t size; /* of one slot */
	uint64_t seq;  /* of the newest valid slot */
	int newest;    /* its index */
};

static uint32_t crc(const void *p, size_t n)
{
	return (uint32_t)crc32(0L, (const Bytef *)p, (uInt)n);
}

/* One slot's header at p (HDR bytes): 0 with its fields, or -1. */
static int parse_header(const char *p, uint64_t *seq, uint32_t *len, uint32_t *c, uint32_t *size)
{
	char h[HDR + 1];
	memcpy(h, p, HDR);
	h[HDR] = 0;
	if (strncmp(h, MAGIC, strlen(MAGIC)) || h[HDR - 1] != '\n') return -1;
	unsigned long long s;
	unsigned l, k, z;
	int used = 0;
	if (sscanf(h + strlen(MAGIC), "seq=%llu len=%u crc=%x size=%u%n", &s, &l, &k, &z, &used) !=
	    4)
		return -1;
	for (const char *q = h + strlen(MAGIC) + used; q < h + HDR - 1; q++)
		if (*q != ' ') return -1;
	*seq = s;
	*len = l;
	*c = k;
	*size = z;
	return 0;
}

int base_slotfile_parse(const uint8_t *buf, size_t n, size_t *off, size_t *len, uint64_t *seq,
                        int *slot, uint32_t *size, struct base_err *err)
{
	uint64_t s0;
	uint32_t l0, c0, z0;
	if (n < HDR || parse_header((const char *)buf, &s0, &l0, &c0, &z0) < 0)
		return base_errf(err, "not a slot file (no header at byte 0)");
	if (z0 < 2 * HDR || z0 % 4096 || (uint64_t)z0 * 2 > FILE_MAX)
		return base_errf(err, "bad slot size %u at byte 0", z0);
	int best = -1;
	uint64_t bseq = 0;
	for (int i = 0; i < 2; i++) {
		size_t at = (size_t)i * z0;
		uint64_t s;
		uint32_t l, c, z;
		if (at + HDR > n || parse_header((const char *)buf + at, &s, &l, &c, &z) < 0)
			continue;
		if (z != z0 || l > z0 - HDR || at + HDR + l > n) continue;
		if (crc(buf + at + HDR, l) != c) continue;
		if (best < 0 || s > bseq) {
			best = i;
			bseq = s;
			*off = at + HDR;
			*len = l;
		}
	}
	if (best < 0) return base_errf(err, "neither slot is valid (torn or corrupt)");
	*seq = bseq;
	*slot = best;
	*size = z0;
	return 0;
}

int base_slotfile_open(struct base_slotfile **out, const char *path, char **content, size_t *len,
                       int *legacy, struct base_err *err)
{
	*content = NULL;
	*len = 0;
	*legacy = 0;
	struct base_slotfile *f = base_xcalloc(1, sizeof *f);
	f->path = base_xstrdup(path);
	f->fd = open(path, O_RDWR | O_CLOEXEC);
	if (f->fd < 0) {
		if (errno != ENOENT) {
			base_errf(err, "%s: %s", path, strerror(errno));
			base_slotfile_close(f);
			return -1;
		}
		*out = f;
		return 0;
	}
	struct stat st;
	if (fstat(f->fd, &st) < 0 || st.st_size > FILE_MAX) {
		base_errf(err, "%s: %s", path,
		          st.st_size > FILE_MAX ? "too large" : strerror(errno));
		base_slotfile_close(f);
		return -1;
	}
	size_t n = (size_t)st.st_size;
	uint8_t *buf = base_xmalloc(n + 1);
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(f->fd, buf + got, n - got, (off_t)got);
		if (r < 0 && errno == EINTR) continue;
		if (r <= 0) break;
		got += (size_t)r;
	}
	if (got < n) {
		base_errf(err, "%s: short read", path);
		free(buf);
		base_slotfile_close(f);
		return -1;
	}
	buf[n] = 0;
	if (n < strlen(MAGIC) || memcmp(buf, MAGIC, strlen(MAGIC))) {
		/* the format before slots: the whole file is the content, and
		 * the next write rebuilds it */
		close(f->fd);
		f->fd = -1;
		*legacy = 1;
		*content = (char *)buf;
		*len = n;
		*out = f;
		return 0;
	}
	size_t off, l;
	struct base_err e;
	if (base_slotfile_parse(buf, n, &off, &l, &f->seq, &f->newest, &f->size, &e) < 0) {
		base_errf(err, "%s: %s", path, e.msg);
		free(buf);
		base_slotfile_close(f);
		return -1;
	}
	memmove(buf, buf + off, l);
	buf[l] = 0;
	*content = (char *)buf;
	*len = l;
	*out = f;
	return 0;
}

static void header(char *h, uint64_t seq, size_t len, uint32_t c, uint32_t size)
{
	int k =
	    snprintf(h, HDR, MAGIC "seq=%" PRIu64 " len=%zu crc=%08x size=%u", seq, len, c, size);
	memset(h + k, ' ', (size_t)(HDR - 1 - k));
	h[HDR - 1] = '\n';
}

/* Content that outgrew its slot (or a first write): a new file with both
 * slots holding it, written atomically, then reopened. */
static int rebuild(struct base_slotfile *f, const void *data, size_t len, struct base_err *err)
{
	uint64_t want = ((uint64_t)(HDR + len) * 2 + 4095) / 4096 * 4096;
	if (want < 4096) want = 4096;
	if (want * 2 > FILE_MAX)
		return base_errf(err, "%s: state too large (%zu bytes)", f->path, len);
	uint32_t size = (uint32_t)want;
	uint8_t *img = base_xcalloc(2, size);
	uint64_t seq = f->seq + 1;
	for (int i = 0; i < 2; i++) {
		header((char *)img + (size_t)i * size, seq, len, crc(data, len), size);
		memcpy(img + (size_t)i * size + HDR, data, len);
	}
	int r = base_write_file_atomic(f->path, img, (size_t)size * 2, err);
	free(img);
	if (r < 0) return -1;
	if (f->fd >= 0) close(f->fd);
	f->fd = open(f->path, O_RDWR | O_CLOEXEC);
	if (f->fd < 0) return base_errf(err, "%s: reopen: %s", f->path, strerror(errno));
	f->size = size;
	f->seq = seq;
	f->newest = 1; /* both hold it; the next write goes to slot 0 */
	return 0;
}

int base_slotfile_write(struct base_slotfile *f, const void *data, size_t len, struct base_err *err)
{
	if (f->fd < 0 || HDR + len > f->size) return rebuild(f, data, len, err);
	int slot = 1 - f->newest;
	uint8_t *b = base_xmalloc(HDR + len);
	header((char *)b, f->seq + 1, len, crc(data, len), f->size);
	memcpy(b + HDR, data, len);
	size_t done = 0;
	int rc = 0;
	while (done < HDR + len) {
		ssize_t w =
		    pwrite(f->fd, b + done, HDR + len - done, (off_t)slot * f->size + (off_t)done);
		if (w < 0 && errno == EINTR) continue;
		if (w <= 0) {
			rc = base_errf(err, "%s: write: %s", f->path,
			               w < 0 ? strerror(errno) : "short");
			break;
		}
		done += (size_t)w;
	}
	free(b);
	if (rc == 0 && fdatasync(f->fd) < 0)
		rc = base_errf(err, "%s: fdatasync: %s", f->path, strerror(errno));
	if (rc < 0) return -1; /* the newest valid slot is unchanged; the next try reuses `slot` */
	f->seq++;
	f->newest = slot;
	return 0;
}

void base_slotfile_close(struct base_slotfile *f)
{
	if (!f) return;
	if (f->fd >= 0) close(f->fd);
	free(f->path);
	free(f);
}
