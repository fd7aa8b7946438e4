/*
 * file.c — the bounded line reader (plain or gzip, through zlib's gzread,
 * which passes uncompressed files through untouched) and atomic writes.
 */
#include "base/base.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

int base_lines_open(struct base_lines *l, const char *path, struct base_err *err)
{
	memset(l, 0, sizeof *l);
	l->path = path;
	errno = 0;
	l->gz = gzopen(path, "rb");
	if (!l->gz) return base_errf(err, "%s: cannot open: %s", path, strerror(errno ? errno : ENOMEM));
	gzbuffer(l->gz, 128 * 1024);
	return 0;
}

/* Refills the window; returns bytes added, 0 at EOF, -1 on error. */
static int lines_fill(struct base_lines *l, struct base_err *err)
{
	if (l->start > 0) {
		memmove(l->buf, l->buf + l->start, l->end - l->start);
		l->end -= l->start;
		l->start = 0;
	}
	if (l->eof || l->end == sizeof l->buf) return 0;
	int n = gzread(l->gz, l->buf + l->end, (unsigned)(sizeof l->buf - l->end));
	if (n < 0) {
		int code;
		const char *msg = gzerror(l->gz, &code);
		return base_errf(err, "%s:%lu: read error: %s", l->path, l->lineno + 1, msg);
	}
	if (n == 0) {
		/* zlib reports a truncated or damaged stream only through gzerror */
		int code;
		const char *msg = gzerror(l->gz, &code);
		if (code != Z_OK && code != Z_STREAM_END)
			return base_errf(err, "%s:%lu: corrupt or truncated gzip data: %s", l->path, l->lineno + 1,
					 msg);
		l->eof = 1;
	}
	l->end += (size_t)n;
	return n;
}

int base_lines_next(struct base_lines *l, char **line, size_t *len, struct base_err *err)
{
	size_t scanned = l->start;
	for (;;) {
		char *nl = memchr(l->buf + scanned, '\n', l->end - scanned);
		if (nl || (l->eof && l->end > l->start)) {
			size_t e = nl ? (size_t)(nl - l->buf) : l->end;
			size_t n = e - l->start;
			char *s = l->buf + l->start;
			l->start = nl ? e + 1 : e;
			l->lineno++;
			if (n > BASE_LINE_MAX)
				return base_errf(err, "%s:%lu: line longer than %d bytes", l->path, l->lineno, BASE_LINE_MAX);
			if (memchr(s, '\0', n)) return base_errf(err, "%s:%lu: NUL byte in line", l->path, l->lineno);
			while (!l->keep_cr && n && s[n - 1] == '\r') n--;
			s[n] = '\0';
			*line = s;
			*len = n;
			return 1;
		}
		if (l->eof) return 0;
		size_t before = l->end - l->start;
		if (before > BASE_LINE_MAX)
			return base_errf(err, "%s:%lu: line longer than %d bytes", l->path, l->lineno + 1, BASE_LINE_MAX);
		int r = lines_fill(l, err);
		if (r < 0) return -1;
		scanned = l->start + before;
	}
}

void base_lines_close(struct base_lines *l)
{
	if (l->gz) gzclose(l->gz);
	l->gz = NULL;
}

int base_write_file_atomic(const char *path, const void *data, size_t len, struct base_err *err)
{
	size_t pl = strlen(path);
	char *tmp = base_xmalloc(pl + 32);
	snprintf(tmp, pl + 32, "%s.tmp.%ld", path, (long)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		base_errf(err, "%s: cannot create: %s", tmp, strerror(errno));
		free(tmp);
		return -1;
	}
	const char *p = data;
	size_t left = len;
	while (left) {
		ssize_t w = write(fd, p, left);
		if (w < 0) {
			if (errno == EINTR) continue;
			base_errf(err, "%s: write: %s", tmp, strerror(errno));
			goto fail;
		}
		p += w;
		left -= (size_t)w;
	}
	if (fsync(fd) < 0) {
		base_errf(err, "%s: fsync: %s", tmp, strerror(errno));
		goto fail;
	}
	close(fd);
	if (rename(tmp, path) < 0) {
		base_errf(err, "%s: rename: %s", path, strerror(errno));
		unlink(tmp);
		free(tmp);
		return -1;
	}
	free(tmp);
	/* the rename itself is durable only once the directory is synced */
	char *dir = base_xstrdup(path);
	char *slash = strrchr(dir, '/');
	if (slash) *(slash == dir ? slash + 1 : slash) = '\0';
	int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = 0;
	if (dfd < 0 || fsync(dfd) < 0) r = base_errf(err, "%s: fsync of its directory: %s", path, strerror(errno));
	if (dfd >= 0) close(dfd);
	free(dir);
	return r;
fail:
	close(fd);
	unlink(tmp);
	free(tmp);
	return -1;
}
