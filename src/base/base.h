/*
 * base — the small things every other module leans on: error messages,
 * logging, growable buffers, time (with an injectable clock), durations in
 * rbldnsd's units, IP address parsing, and a bounded line reader that reads
 * plain and gzip-compressed files alike.
 *
 * Conventions: functions return 0 (or a count) on success and a negative
 * value on failure, and fill a `struct base_err` the caller can show.
 */
#ifndef MAILREP_BASE_H
#define MAILREP_BASE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#define BASE_ERR_MAX 512

struct base_err {
	char msg[BASE_ERR_MAX];
};

/* Formats a message into err (if not NULL) and returns -1. */
int base_errf(struct base_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- logging ---------------------------------------------------------- */

enum base_log_level { BASE_LOG_ERROR, BASE_LOG_WARN, BASE_LOG_INFO, BASE_LOG_DEBUG };

void base_log_set_level(enum base_log_level level);
void base_log_set_prefix(const char *prefix);
void base_log(enum base_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define base_error(...) base_log(BASE_LOG_ERROR, __VA_ARGS__)
#define base_warn(...)  base_log(BASE_LOG_WARN, __VA_ARGS__)
#define base_info(...)  base_log(BASE_LOG_INFO, __VA_ARGS__)
#define base_debug(...) base_log(BASE_LOG_DEBUG, __VA_ARGS__)

/* ---- memory ----------------------------------------------------------- */

/* Allocation that aborts on exhaustion: used only where a failure could not
 * be reported sensibly anyway (tiny bookkeeping structures). */
void *base_xmalloc(size_t n);
void *base_xcalloc(size_t n, size_t size);
void *base_xrealloc(void *p, size_t n);
char *base_xstrdup(const char *s);
char *base_xstrndup(const char *s, size_t n);

/* ---- hash index (hmap.c) ------------------------------------------------ */

/* Pointers to the caller's items by a 64-bit hash of their key; a lookup
 * asks match(item, key) of the items whose hash is equal. Zeroed is empty. */
struct base_hmap {
	struct base_hslot {
		uint64_t h;
		void *p;
	} *s;
	size_t cap, n;
};
/* FNV-1a of len bytes (of s lower-cased in ASCII), going on from h; h = 0
 * starts from the process's random seed. */
uint64_t base_hash_mix(uint64_t h, const void *data, size_t len);
uint64_t base_hash_lower(uint64_t h, const char *s);
void base_hmap_put(struct base_hmap *m, uint64_t h, void *item);
void *base_hmap_find(const struct base_hmap *m, uint64_t h,
                     int (*match)(const void *item, const void *key), const void *key);
/* Removes item (this pointer, put with hash h); returns whether it was there. */
int base_hmap_del(struct base_hmap *m, uint64_t h, const void *item);
void base_hmap_free(struct base_hmap *m);

/* A growable byte buffer; always NUL-terminated for convenience. */
struct base_buf {
	char *data;
	size_t len;
	size_t cap;
};

void base_buf_init(struct base_buf *b);
void base_buf_free(struct base_buf *b);
void base_buf_reserve(struct base_buf *b, size_t extra);
void base_buf_append(struct base_buf *b, const void *p, size_t n);
void base_buf_puts(struct base_buf *b, const char *s);
void base_buf_printf(struct base_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* An arena for many small immutable objects freed together. */
struct base_arena {
	struct base_arena_block *head;
	size_t total;
};

void base_arena_init(struct base_arena *a);
void *base_arena_alloc(struct base_arena *a, size_t n);
char *base_arena_strndup(struct base_arena *a, const char *s, size_t n);
void base_arena_free(struct base_arena *a);

/* qsort that accepts an empty (NULL) array. */
void base_sort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *));

/* ---- strings ---------------------------------------------------------- */

int base_strcasecmp_ascii(const char *a, const char *b);
static inline char base_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
}
/* Skips spaces and tabs. */
const char *base_skip_ws(const char *s);
/* Parses a decimal unsigned number of at most max; returns chars consumed or -1. */
int base_parse_uint(const char *s, uint64_t max, uint64_t *out);

/* Writes s as a JSON string: quoted, with '"', '\\', control characters and
 * DEL escaped; other bytes (UTF-8 included) pass through. */
void base_json_fputs(FILE *f, const char *s);

/* ---- time ------------------------------------------------------------- */

/* Parses a duration in rbldnsd's units: a number with an optional suffix
 * s, m, h, d or w (several terms may follow one another, as in "1h30m").
 * Returns 0 or -1. */
int base_parse_duration(const char *s, uint32_t *out, struct base_err *err);

/* The current time. Honours MAILREP_NOW (an ISO 8601 instant) when set, so
 * that tests and replays can fix the clock; MAILREP_NOW=file:PATH reads the
 * instant from PATH on every call, so a test can move a running server's
 * clock. */
time_t base_now(void);
/* Parses "YYYY-MM-DDTHH:MM:SS[Z|+hh:mm]" (date alone allowed) to UTC seconds. */
int base_parse_iso8601(const char *s, time_t *out);
/* Whether year-month-day is a real calendar date (month 1..12). */
int base_valid_date(int y, int m, int d);
/* A monotonic clock in nanoseconds, for measurements and timeouts. */
uint64_t base_mono_ns(void);

/* ---- addresses -------------------------------------------------------- */

/* A socket address given as "addr/port", "addr", "[v6]:port" or "addr:port"
 * (IPv4 only for the latter). */
struct base_sockaddr {
	int family;
	union {
		uint8_t v4[4];
		uint8_t v6[16];
	} a;
	uint16_t port;
};

int base_parse_hostport(const char *s, uint16_t default_port, struct base_sockaddr *out,
			struct base_err *err);
/* Fills a socket address for bind/connect; returns its length. */
socklen_t base_sockaddr_to(const struct base_sockaddr *a, struct sockaddr_storage *ss);
/* A CIDR in either family: "1.2.3.0/24", "2001:db8::/32", or a bare address. */
struct base_cidr {
	int family;
	uint8_t addr[16];
	unsigned prefix;
};
int base_parse_cidr(const char *s, struct base_cidr *out, struct base_err *err);
/* Whether addr (4 or 16 bytes, per family) is inside the CIDR. */
int base_cidr_contains(const struct base_cidr *c, int family, const uint8_t *addr);

/* ---- files ------------------------------------------------------------ */

/* Reads text files line by line, transparently decompressing gzip. Lines
 * longer than BASE_LINE_MAX are reported as errors, never split silently. */
#define BASE_LINE_MAX 32768

struct base_lines {
	void *gz;
	const char *path;
	unsigned long lineno;
	size_t start, end;
	int eof;
	int keep_cr; /* set after open: keep a trailing CR (rbldnsd treats it as data) */
	char buf[4 * BASE_LINE_MAX];
};

int base_lines_open(struct base_lines *l, const char *path, struct base_err *err);
/* Returns 1 with *line set (without the newline), 0 at EOF, -1 on error. */
int base_lines_next(struct base_lines *l, char **line, size_t *len, struct base_err *err);
void base_lines_close(struct base_lines *l);

/* Reads the [section] of an INI file and calls fn for each "key = value"
 * in it (keys and values trimmed). Errors, including fn's, name file:line. */
int base_ini_read(const char *path, const char *section,
		  int (*fn)(void *ctx, const char *key, const char *value, struct base_err *err), void *ctx,
		  struct base_err *err);

/* Reads every section whose name is `prefix`, or starts with `prefix` when
 * that ends in a space ("pool " reads "[pool bulk]", "[pool tx]"...), and
 * calls fn with the section's whole name for each "key = value" in it. */
int base_ini_read_sections(const char *path, const char *prefix,
                           int (*fn)(void *ctx, const char *section, const char *key,
                                     const char *value, struct base_err *err),
                           void *ctx, struct base_err *err);

/* priv.c: "NAME[:GROUP]" to a uid and gid (root is refused). */
int base_user_lookup(const char *spec, uid_t *uid, gid_t *gid, struct base_err *err);
/* When running as root, becomes that user for good (supplementary groups
 * dropped, checked); does nothing otherwise. */
int base_drop_privileges(const char *spec, struct base_err *err);
/* The user daemons become when none is named: "mailrep" if it exists,
 * else "nobody". */
const char *base_default_user(void);

/* Writes a whole file atomically: to a temporary name, fsync, rename. */
int base_write_file_atomic(const char *path, const void *data, size_t len, struct base_err *err);

/* A small state file rewritten in place, one fdatasync a write: two
 * checksummed slots, the newer valid one wins (slotfile.c). _open reads
 * the newest content into *content (malloc'd, NUL-terminated; NULL when
 * there is no file); a file not in slot form is returned whole with
 * *legacy set. _write may be called from any one thread at a time. */
struct base_slotfile;
int base_slotfile_open(struct base_slotfile **out, const char *path, char **content, size_t *len,
                       int *legacy, struct base_err *err);
int base_slotfile_write(struct base_slotfile *f, const void *data, size_t len, struct base_err *err);
void base_slotfile_close(struct base_slotfile *f);
/* The parser behind _open, for tests and the fuzzer: the newest valid
 * slot's content at buf[*off..*off+*len). */
int base_slotfile_parse(const uint8_t *buf, size_t n, size_t *off, size_t *len, uint64_t *seq,
                        int *slot, uint32_t *size, struct base_err *err);

/* b64.c: base64 (RFC 4648 §4) decoding. By default strict: no white space,
 * padding optional but never more than the length calls for, and no
 * length that leaves a lone 6-bit group. DKIM tag values (RFC 6376 §3.5)
 * ask for the two flags: folding white space (space, tab, CR, LF)
 * anywhere, and up to two '=' whatever the length, a lone group ignored. */
enum { BASE_B64_SKIP_FWS = 1, BASE_B64_LAX_END = 2 };
/* Decodes len bytes of in into out (cap bytes). Returns the decoded length,
 * or -1 for a bad character, bad padding, or output over cap. */
long base_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap, unsigned flags);

#endif
