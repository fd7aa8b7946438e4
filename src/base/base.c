/*
 * base.c — errors, logging, memory helpers, buffers, arenas and strings.
 *
 * The arena hands out memory from large blocks and frees them all at once;
 * datasets use it for their many small strings so that a snapshot can be
 * dropped with a handful of free() calls.
 */
#include "base/base.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

int base_errf(struct base_err *err, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof err->msg, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* ---- logging ---------------------------------------------------------- */

static _Atomic int log_level = BASE_LOG_INFO;
static const char *log_prefix = "mailrep";

void base_log_set_level(enum base_log_level level)
{
	atomic_store(&log_level, (int)level);
}

void base_log_set_prefix(const char *prefix)
{
	log_prefix = prefix;
}

void base_log(enum base_log_level level, const char *fmt, ...)
{
	static const char *names[] = {"error", "warning", "info", "debug"};
	if ((int)level > atomic_load(&log_level)) return;
	char line[2048];
	int n = snprintf(line, sizeof line, "%s: %s: ", log_prefix, names[level]);
	va_list ap;
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < sizeof line) n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
	va_end(ap);
	if (n < 0) return;
	if ((size_t)n >= sizeof line - 1) n = (int)sizeof line - 2;
	line[n++] = '\n';
	/* One write() per line so that lines from several threads never interleave. */
	ssize_t w = write(STDERR_FILENO, line, (size_t)n);
	(void)w;
}

/* ---- memory ----------------------------------------------------------- */

static void oom(size_t n)
{
	fprintf(stderr, "mailrep: out of memory allocating %zu bytes\n", n);
	abort();
}

void *base_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p) oom(n);
	return p;
}

void *base_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p) oom(n * size);
	return p;
}

void *base_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q) oom(n);
	return q;
}

char *base_xstrdup(const char *s)
{
	return base_xstrndup(s, strlen(s));
}

char *base_xstrndup(const char *s, size_t n)
{
	char *p = base_xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

void base_buf_init(struct base_buf *b)
{
	b->data = NULL;
	b->len = b->cap = 0;
}

void base_buf_free(struct base_buf *b)
{
	free(b->data);
	base_buf_init(b);
}

void base_buf_reserve(struct base_buf *b, size_t extra)
{
	if (b->len + extra + 1 <= b->cap) return;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < b->len + extra + 1) cap *= 2;
	b->data = base_xrealloc(b->data, cap);
	b->cap = cap;
}

void base_buf_append(struct base_buf *b, const void *p, size_t n)
{
	base_buf_reserve(b, n);
	if (n) memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void base_buf_puts(struct base_buf *b, const char *s)
{
	base_buf_append(b, s, strlen(s));
}

void base_buf_printf(struct base_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0) return;
	base_buf_reserve(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

/* ---- arena ------------------------------------------------------------ */

struct base_arena_block {
	struct base_arena_block *next;
	size_t used, size;
	_Alignas(16) unsigned char mem[];
};

#define ARENA_BLOCK (64 * 1024)

void base_arena_init(struct base_arena *a)
{
	a->head = NULL;
	a->total = 0;
}

void *base_arena_alloc(struct base_arena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	struct base_arena_block *b = a->head;
	if (!b || b->size - b->used < n) {
		size_t size = n > ARENA_BLOCK / 4 ? n : ARENA_BLOCK;
		b = base_xmalloc(sizeof *b + size);
		b->used = 0;
		b->size = size;
		/* A big private block goes behind the current one so the current
		 * block's free tail stays usable. */
		if (size != ARENA_BLOCK && a->head) {
			b->next = a->head->next;
			a->head->next = b;
		} else {
			b->next = a->head;
			a->head = b;
		}
		a->total += size;
	}
	void *p = b->mem + b->used;
	b->used += n;
	return p;
}

char *base_arena_strndup(struct base_arena *a, const char *s, size_t n)
{
	char *p = base_arena_alloc(a, n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

void base_arena_free(struct base_arena *a)
{
	struct base_arena_block *b = a->head;
	while (b) {
		struct base_arena_block *next = b->next;
		free(b);
		b = next;
	}
	base_arena_init(a);
}

void base_json_fputs(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

void base_sort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *))
{
	if (n > 1) qsort(base, n, size, cmp);
}

/* ---- strings ---------------------------------------------------------- */

int base_strcasecmp_ascii(const char *a, const char *b)
{
	for (;; a++, b++) {
		char ca = base_lower(*a), cb = base_lower(*b);
		if (ca != cb) return (unsigned char)ca - (unsigned char)cb;
		if (!ca) return 0;
	}
}

const char *base_skip_ws(const char *s)
{
	while (*s == ' ' || *s == '\t') s++;
	return s;
}

int base_parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	int i = 0;
	if (s[0] < '0' || s[0] > '9') return -1;
	for (; s[i] >= '0' && s[i] <= '9'; i++) {
		v = v * 10 + (uint64_t)(s[i] - '0');
		if (v > max) return -1;
	}
	*out = v;
	return i;
}
