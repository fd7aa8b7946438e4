/*
 * spool.c — the relay's durable message store: append-only segment files
 * of checksummed records (format in relay.h), with group commit.
 *
 * Writes go to the current segment with plain write(); a commit is one
 * fdatasync of that segment (plus the segments rotated out since the last
 * commit, and the directory when a segment was created), so every message
 * written by any session before the commit is covered by that one sync.
 * The reception side answers 250 only after the commit that covers the
 * message (see server.c).
 *
 * Invariants:
 *  - a segment is only ever appended to by the process that created it; a
 *    restart starts a new segment, so a torn tail is never followed by data;
 *  - a record is acknowledged only once a commit covering its last byte
 *    returned; an unreadable tail (short or bad checksum) therefore holds
 *    only unacknowledged data and is cut off at recovery;
 *  - state records ('S') always follow their message record ('M'), in the
 *    same or a later segment; segments are removed oldest first, and only
 *    when no live message is in them or in any older segment, so a state
 *    record is never removed before the message it talks about;
 *  - a lost state record (not yet synced at a crash) only makes a
 *    recipient be tried again: delivery is at least once;
 *  - records written while the spool is pinned (relay_spool_pin) land in
 *    one segment, in order: if an earlier one is lost at a crash, recovery
 *    cuts the segment there, so a later one cannot survive it (a DSN and
 *    the final states of the recipients it reports).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "relay/dsnparam.h"
#include "relay/relay.h"
#include "smtp/smtp.h"

#define SEGMENT_MAX (64u << 20) /* rotate after this many bytes */

struct segment {
	uint32_t no;
	int fd;        /* -1 once closed */
	uint32_t live; /* messages not yet finished */
	/* Writes and syncs are counted: the segment is dirty (written since
	 * its last completed sync) while wgen != sgen. A sync in flight on the
	 * sync thread holds the fd (syncing > 0): it is not closed meanwhile. */
	uint64_t wgen, sgen;
	uint32_t syncing;
};

static int seg_dirty(const struct segment *s)
{
	return s->wgen != s->sgen;
}

struct relay_spool {
	char *dir;
	int dirfd;
	struct segment *segs; /* oldest first */
	size_t nsegs;
	uint64_t cur_size;
	int dir_dirty;
	int pinned; /* no rotation while > 0 */
	struct base_buf scratch;
};

/* ---- record encoding ---------------------------------------------------- */

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static size_t record_begin(struct base_buf *out, char type)
{
	size_t start = out->len;
	uint8_t h[RELAY_RECORD_HDR] = {'M', 'R', 'S', '1', (uint8_t)type, 0, 0, 0};
	base_buf_append(out, h, sizeof h);
	return start;
}

static void record_end(struct base_buf *out, size_t start)
{
	uint8_t *h = (uint8_t *)out->data + start;
	uint32_t plen = (uint32_t)(out->len - start - RELAY_RECORD_HDR);
	put_u32(h + 8, plen);
	uLong crc = crc32(0L, h + 4, 8);
	crc = crc32(crc, h + RELAY_RECORD_HDR, plen);
	put_u32(h + 12, (uint32_t)crc);
}

void relay_record_msg(struct base_buf *out, const char *id, const char *sender, const char *attrs,
                      int64_t received, const char *const *rcpts, uint32_t nrcpt,
                      const char *body, size_t body_len)
{
	size_t start = record_begin(out, 'N');
	base_buf_printf(out, "%s%c%s%c%lld%c%s%c%u%c", id, 0, sender, 0, (long long)received, 0,
	                attrs ? attrs : "", 0, nrcpt, 0);
	for (uint32_t i = 0; i < nrcpt; i++) base_buf_append(out, rcpts[i], strlen(rcpts[i]) + 1);
	base_buf_append(out, body, body_len);
	record_end(out, start);
}

void relay_record_state(struct base_buf *out, const char *id, uint32_t rcpt_index, uint32_t state,
                        uint32_t attempts, int64_t next)
{
	size_t start = record_begin(out, 'S');
	base_buf_printf(out, "%s%c%u%c%u%c%u%c%lld%c", id, 0, rcpt_index, 0, state, 0, attempts, 0,
	                (long long)next, 0);
	record_end(out, start);
}

void relay_record_state_flags(struct base_buf *out, const char *id, uint32_t rcpt_index,
                              uint32_t state, uint32_t attempts, int64_t next, uint32_t flags)
{
	if (!flags) {
		relay_record_state(out, id, rcpt_index, state, attempts, next);
		return;
	}
	size_t start = record_begin(out, 'S');
	base_buf_printf(out, "%s%c%u%c%u%c%u%c%lld%c%u%c", id, 0, rcpt_index, 0, state, 0, attempts,
	                0, (long long)next, 0, flags, 0);
	record_end(out, start);
}

void relay_record_params(struct base_buf *out, const char *id, const char *dsn, size_t len)
{
	size_t start = record_begin(out, 'P');
	base_buf_append(out, id, strlen(id) + 1);
	base_buf_append(out, dsn, len);
	record_end(out, start);
}

int relay_attrs_valid(const char *attrs)
{
	size_t n = strlen(attrs);
	if (n > RELAY_ATTRS_MAX) return 0;
	if (!n) return 1;
	const char *w = attrs;
	for (;;) {
		const char *e = strchr(w, ' ');
		size_t len = e ? (size_t)(e - w) : strlen(w);
		const char *eq = memchr(w, '=', len);
		if (!len || !eq || eq == w) return 0;
		for (size_t i = 0; i < len; i++)
			if ((unsigned char)w[i] <= 0x20 || (unsigned char)w[i] >= 0x7f) return 0;
		if (!e) return 1;
		w = e + 1;
	}
}

int relay_attr_get(const char *attrs, const char *key, char *out, size_t n)
{
	size_t kl = strlen(key);
	if (n) *out = 0;
	for (const char *w = attrs; w && *w;) {
		const char *e = strchr(w, ' ');
		size_t len = e ? (size_t)(e - w) : strlen(w);
		if (len > kl && !strncmp(w, key, kl) && w[kl] == '=') {
			if (n) snprintf(out, n, "%.*s", (int)(len - kl - 1), w + kl + 1);
			return 1;
		}
		w = e ? e + 1 : NULL;
	}
	return 0;
}

/* ---- record parsing ------------------------------------------------------ */

/* Takes the next NUL-terminated field of payload p[*off..n). */
static const char *field(const uint8_t *p, size_t n, size_t *off, size_t max)
{
	if (*off >= n) return NULL;
	const uint8_t *z = memchr(p + *off, 0, n - *off);
	if (!z || (size_t)(z - (p + *off)) > max) return NULL;
	const char *s = (const char *)p + *off;
	*off = (size_t)(z - p) + 1;
	return s;
}

static int number(const char *s, uint64_t max, uint64_t *v)
{
	if (!s) return -1;
	int neg = 0;
	if (*s == '-') neg = 1, s++;
	int n = base_parse_uint(s, max, v);
	if (n <= 0 || s[n]) return -1;
	if (neg) *v = (uint64_t)(-(int64_t)*v);
	return 0;
}

static int valid_id(const char *s)
{
	if (!s || !*s) return 0;
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= 'a' && *s <= 'z') || *s == '.' || *s == '-'))
			return 0;
	return 1;
}

int relay_record_parse(const uint8_t *buf, size_t len, struct relay_record *r, struct base_err *err)
{
	memset(r, 0, sizeof *r);
	if (len < RELAY_RECORD_HDR) return 0;
	if (memcmp(buf, "MRS1", 4)) return base_errf(err, "byte 0: bad record magic");
	if (buf[4] != 'M' && buf[4] != 'N' && buf[4] != 'S' && buf[4] != 'P')
		return base_errf(err, "byte 4: unknown record type");
	if (buf[5] || buf[6] || buf[7]) return base_errf(err, "byte 5: reserved bytes not zero");
	uint32_t plen = get_u32(buf + 8);
	if (plen > RELAY_RECORD_MAX)
		return base_errf(err, "byte 8: payload length %u too large", plen);
	if (len - RELAY_RECORD_HDR < plen) return 0;
	const uint8_t *p = buf + RELAY_RECORD_HDR;
	uLong crc = crc32(0L, buf + 4, 8);
	crc = crc32(crc, p, plen);
	if ((uint32_t)crc != get_u32(buf + 12)) return base_errf(err, "byte 12: checksum mismatch");
	r->type = buf[4] == 'N' ? 'M' : (char)buf[4];
	size_t off = 0;
	const char *id = field(p, plen, &off, RELAY_ID_MAX);
	if (!valid_id(id))
		return base_errf(err, "byte %zu: bad message id", RELAY_RECORD_HDR + off);
	strcpy(r->id, id);
	uint64_t v;
	if (r->type == 'M') {
		r->sender = field(p, plen, &off, SMTP_PATH_MAX);
		if (!r->sender)
			return base_errf(err, "byte %zu: bad sender", RELAY_RECORD_HDR + off);
		if (number(field(p, plen, &off, 20), INT64_MAX, &v) < 0)
			return base_errf(err, "byte %zu: bad reception time",
			                 RELAY_RECORD_HDR + off);
		r->received = (int64_t)v;
		r->attrs = "";
		if (buf[4] == 'N') {
			r->attrs = field(p, plen, &off, RELAY_ATTRS_MAX);
			if (!r->attrs || !relay_attrs_valid(r->attrs))
				return base_errf(err, "byte %zu: bad attributes",
				                 RELAY_RECORD_HDR + off);
		}
		if (number(field(p, plen, &off, 10), RELAY_RCPT_MAX, &v) < 0 || v == 0)
			return base_errf(err, "byte %zu: bad recipient count",
			                 RELAY_RECORD_HDR + off);
		r->nrcpt = (uint32_t)v;
		r->rcpts = (const char *)p + off;
		for (uint32_t i = 0; i < r->nrcpt; i++) {
			const char *rc = field(p, plen, &off, SMTP_PATH_MAX);
			if (!rc || !*rc)
				return base_errf(err, "byte %zu: bad recipient %u",
				                 RELAY_RECORD_HDR + off, i);
		}
		r->body_off = RELAY_RECORD_HDR + off;
		r->body_len = plen - off;
	} else if (r->type == 'P') {
		r->dsn = (const char *)p + off;
		r->dsn_len = plen - off;
		struct base_err e2;
		if (relay_dsn_decode(r->dsn, r->dsn_len, NULL, &e2) < 0)
			return base_errf(err, "byte %zu: %s", RELAY_RECORD_HDR + off, e2.msg);
	} else {
		uint64_t idx, st, at, nx;
		if (number(field(p, plen, &off, 10), RELAY_RCPT_MAX - 1, &idx) < 0 ||
		    number(field(p, plen, &off, 10), RELAY_RCPT_EXPIRED, &st) < 0 ||
		    number(field(p, plen, &off, 10), UINT32_MAX, &at) < 0 ||
		    number(field(p, plen, &off, 20), INT64_MAX, &nx) < 0)
			return base_errf(err, "byte %zu: bad state record", RELAY_RECORD_HDR + off);
		/* the flags, written only when some are set */
		uint64_t fl = 0;
		if (off != plen &&
		    (number(field(p, plen, &off, 10), UINT32_MAX, &fl) < 0 || off != plen))
			return base_errf(err, "byte %zu: bad state record", RELAY_RECORD_HDR + off);
		r->flags = (uint32_t)fl;
		r->rcpt_index = (uint32_t)idx;
		r->state = (uint32_t)st;
		r->attempts = (uint32_t)at;
		r->next = (int64_t)nx;
	}
	return (int)(RELAY_RECORD_HDR + plen);
}

/* ---- segments ------------------------------------------------------------- */

static struct segment *cur(struct relay_spool *sp)
{
	return sp->nsegs ? &sp->segs[sp->nsegs - 1] : NULL;
}

static void seg_name(char *out, size_t n, uint32_t no)
{
	snprintf(out, n, "seg-%08u", no);
}

static int seg_new(struct relay_spool *sp, struct base_err *err)
{
	struct segment *c = cur(sp);
	uint32_t no = c ? c->no + 1 : 1;
	char name[32];
	seg_name(name, sizeof name, no);
	/* read-write: deliveries read bodies back through the same fd */
	int fd = openat(sp->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0) return base_errf(err, "%s/%s: %s", sp->dir, name, strerror(errno));
	sp->segs = base_xrealloc(sp->segs, (sp->nsegs + 1) * sizeof *sp->segs);
	sp->segs[sp->nsegs++] = (struct segment){.no = no, .fd = fd, .live = 0, .wgen = 1};
	sp->cur_size = 0;
	sp->dir_dirty = 1;
	return 0;
}

static struct segment *seg_find(struct relay_spool *sp, uint32_t no)
{
	size_t lo = 0, hi = sp->nsegs;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (sp->segs[mid].no < no)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < sp->nsegs && sp->segs[lo].no == no ? &sp->segs[lo] : NULL;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* ---- recovery ------------------------------------------------------------- */

struct pending_msg {
	struct relay_record rec;
	struct relay_loc loc;
	uint8_t *payload; /* the record up to its body (the envelope) */
	uint32_t *states, *attempts;
	int64_t *next;   /* one allocation with states and attempts behind it */
	uint32_t *flags; /* NULL: none set */
	char *dsn;       /* its 'P' record's parameters; NULL: none */
	size_t dsn_len;
};

/* Messages read so far, with an open-addressing index by id: a slot holds
 * a message's index + 1 (0: empty) and the top half of its id's hash, so
 * that a probe compares ids only when the hashes agree; the table is kept
 * at most half full. */
#define RECOVERY_MAX (UINT32_MAX - 1) /* messages */

struct slot {
	uint32_t idx, tag;
};

struct recovery {
	struct pending_msg *msgs;
	size_t n, cap;
	struct slot *slots;
	size_t nslots;
};

static uint64_t id_hash(const char *id)
{
	uint64_t h = 1469598103934665603ull;
	for (; *id; id++) h = (h ^ (unsigned char)*id) * 1099511628211ull;
	return h;
}

static struct slot *find_slot(struct recovery *rv, const char *id, uint64_t h)
{
	size_t mask = rv->nslots - 1, i = (size_t)h & mask;
	uint32_t tag = (uint32_t)(h >> 32);
	while (rv->slots[i].idx &&
	       (rv->slots[i].tag != tag || strcmp(rv->msgs[rv->slots[i].idx - 1].rec.id, id)))
		i = (i + 1) & mask;
	return &rv->slots[i];
}

static struct pending_msg *find_msg(struct recovery *rv, const char *id)
{
	if (!rv->nslots) return NULL;
	struct slot *sl = find_slot(rv, id, id_hash(id));
	return sl->idx ? &rv->msgs[sl->idx - 1] : NULL;
}

/* Adds a message record with this id unless one is there already: NULL. */
static struct pending_msg *add_msg(struct recovery *rv, const char *id)
{
	if (2 * (rv->n + 1) > rv->nslots) {
		free(rv->slots);
		rv->nslots = rv->nslots ? 2 * rv->nslots : 128;
		rv->slots = base_xcalloc(rv->nslots, sizeof *rv->slots);
		for (size_t i = 0; i < rv->n; i++) {
			uint64_t h = id_hash(rv->msgs[i].rec.id);
			*find_slot(rv, rv->msgs[i].rec.id, h) =
			    (struct slot){.idx = (uint32_t)i + 1, .tag = (uint32_t)(h >> 32)};
		}
	}
	uint64_t h = id_hash(id);
	struct slot *sl = find_slot(rv, id, h);
	if (sl->idx) return NULL;
	if (rv->n == rv->cap) {
		rv->cap = rv->cap ? 2 * rv->cap : 64;
		rv->msgs = base_xrealloc(rv->msgs, rv->cap * sizeof *rv->msgs);
	}
	*sl = (struct slot){.idx = (uint32_t)rv->n + 1, .tag = (uint32_t)(h >> 32)};
	return &rv->msgs[rv->n++];
}

/* Whether p, if it points into the block of n bytes at rec, points into
 * its first keep bytes. */
static int below(const char *p, const uint8_t *rec, size_t n, size_t keep)
{
	uintptr_t v = (uintptr_t)p, b = (uintptr_t)rec;
	return v < b || v >= b + n || v < b + keep;
}

/* Points *p, if it pointed into the old block of n bytes at old, to the
 * same offset in the block now at rec ("" constants stay as they are). */
static void rebase(const char **p, uintptr_t old, size_t n, const uint8_t *rec)
{
	uintptr_t v = (uintptr_t)*p;
	if (v >= old && v < old + n) *p = (const char *)rec + (v - old);
}

/* A segment read in large blocks: recovery asks for a record's bytes by
 * offset, in increasing order, and most records are served from the block
 * already read, without a system call of their own. buf holds the file's
 * bytes [base, base + len); it grows to hold the largest record asked for. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define READ_BLOCK 64u /* the fuzzer's segments are small: records cross blocks */
#else
#define READ_BLOCK (1u << 20)
#endif

struct seg_reader {
	int fd;
	uint64_t size; /* the file's size when it was opened: nothing past it is read */
	uint8_t *buf;
	size_t cap, len;
	uint64_t base;
};

/* Bytes [off, off + n) of the file, or NULL when they are not all there. */
static const uint8_t *seg_bytes(struct seg_reader *rd, uint64_t off, size_t n)
{
	if (off >= rd->base && off + n <= rd->base + rd->len) return rd->buf + (off - rd->base);
	if (off > rd->size || n > rd->size - off) return NULL;
	/* keep what is already read from off on, and read behind it */
	if (off >= rd->base && off < rd->base + rd->len) {
		size_t skip = (size_t)(off - rd->base);
		memmove(rd->buf, rd->buf + skip, rd->len - skip);
		rd->len -= skip;
	} else {
		rd->len = 0;
	}
	rd->base = off;
	if (rd->cap < n || rd->cap < READ_BLOCK) {
		rd->cap = n > READ_BLOCK ? n : READ_BLOCK;
		rd->buf = base_xrealloc(rd->buf, rd->cap);
	}
	while (rd->len < n) {
		uint64_t at = rd->base + rd->len;
		size_t want = rd->cap - rd->len;
		if (want > rd->size - at) want = (size_t)(rd->size - at);
		ssize_t got = pread(rd->fd, rd->buf + rd->len, want, (off_t)at);
		if (got < 0 && errno == EINTR) continue;
		if (got <= 0) return NULL;
		rd->len += (size_t)got;
	}
	return rd->buf;
}

/* Reads one segment's records; cuts a torn tail off. */
static int recover_segment(struct relay_spool *sp, uint32_t no, struct recovery *rv, int readonly,
                           struct base_err *err)
{
	char name[32];
	seg_name(name, sizeof name, no);
	int fd = openat(sp->dirfd, name, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd < 0) return base_errf(err, "%s/%s: %s", sp->dir, name, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return base_errf(err, "%s/%s: %s", sp->dir, name, strerror(errno));
	}
	sp->segs = base_xrealloc(sp->segs, (sp->nsegs + 1) * sizeof *sp->segs);
	sp->segs[sp->nsegs++] = (struct segment){.no = no, .fd = -1};
	uint64_t off = 0, size = (uint64_t)st.st_size;
	struct seg_reader rd = {.fd = fd, .size = size};
	while (off + RELAY_RECORD_HDR <= size) {
		const uint8_t *hdr = seg_bytes(&rd, off, RELAY_RECORD_HDR);
		if (!hdr) break;
		uint32_t plen = get_u32(hdr + 8);
		if (memcmp(hdr, "MRS1", 4) || plen > RELAY_RECORD_MAX ||
		    off + RELAY_RECORD_HDR + plen > size)
			break;
		size_t rlen = RELAY_RECORD_HDR + (size_t)plen;
		const uint8_t *rec = seg_bytes(&rd, off, rlen);
		if (!rec) break;
		struct relay_record r;
		struct base_err e2;
		int n = relay_record_parse(rec, rlen, &r, &e2);
		if (n <= 0) {
			base_warn("spool %s/%s: offset %llu: %s", sp->dir, name,
			          (unsigned long long)off, n < 0 ? e2.msg : "truncated record");
			break;
		}
		if (r.type == 'M' && rv->n == RECOVERY_MAX) {
			close(fd);
			free(rd.buf);
			return base_errf(err, "spool %s: more than %u messages", sp->dir,
			                 RECOVERY_MAX);
		}
		struct pending_msg *m;
		if (r.type == 'M' && (m = add_msg(rv, r.id))) {
			m->rec = r;
			m->loc = (struct relay_loc){
			    .seg = no, .off = off + r.body_off, .len = (uint32_t)r.body_len};
			/* keep the envelope only: the body stays on disk, so that
			 * recovering a large spool needs no more memory than the
			 * queue it rebuilds */
			size_t keep = r.body_off;
			if (!below(r.sender, rec, (size_t)n, keep) ||
			    !below(r.attrs, rec, (size_t)n, keep) ||
			    !below(r.rcpts, rec, (size_t)n, keep))
				keep = (size_t)n;
			m->payload = base_xmalloc(keep);
			memcpy(m->payload, rec, keep);
			rebase(&m->rec.sender, (uintptr_t)rec, keep, m->payload);
			rebase(&m->rec.attrs, (uintptr_t)rec, keep, m->payload);
			rebase(&m->rec.rcpts, (uintptr_t)rec, keep, m->payload);
			m->flags = NULL;
			m->dsn = NULL;
			m->dsn_len = 0;
			/* one block: next, then states, then attempts */
			m->next = base_xcalloc(r.nrcpt, sizeof *m->next + 2 * sizeof(uint32_t));
			m->states = (uint32_t *)(m->next + r.nrcpt);
			m->attempts = m->states + r.nrcpt;
		} else if (r.type == 'S') {
			m = find_msg(rv, r.id);
			if (m && r.rcpt_index < m->rec.nrcpt) {
				m->states[r.rcpt_index] = r.state;
				m->attempts[r.rcpt_index] = r.attempts;
				m->next[r.rcpt_index] = r.next;
				if (r.flags && !m->flags)
					m->flags = base_xcalloc(m->rec.nrcpt, sizeof *m->flags);
				if (r.flags) m->flags[r.rcpt_index] |= r.flags;
			}
		} else if (r.type == 'P') {
			m = find_msg(rv, r.id);
			if (m && !m->dsn) {
				m->dsn = base_xmalloc(r.dsn_len + 1);
				memcpy(m->dsn, r.dsn, r.dsn_len);
				m->dsn_len = r.dsn_len;
			}
		}
		off += (uint64_t)n;
	}
	free(rd.buf);
	if (off < size && !readonly) {
		base_warn("spool %s/%s: cutting %llu unreadable bytes at offset %llu", sp->dir,
		          name, (unsigned long long)(size - off), (unsigned long long)off);
		if (ftruncate(fd, (off_t)off) < 0 || fdatasync(fd) < 0) {
			close(fd);
			return base_errf(err, "%s/%s: truncate: %s", sp->dir, name,
			                 strerror(errno));
		}
	}
	close(fd);
	return 0;
}

/* Reads every segment of sp's directory and calls cb for each message
 * with a pending recipient (holding its segment unless readonly). */
static int load(struct relay_spool *sp, int readonly, relay_recover_cb cb, void *arg,
                struct base_err *err);

int relay_spool_scan(const char *dir, relay_recover_cb cb, void *arg, struct base_err *err)
{
	struct relay_spool *sp = base_xcalloc(1, sizeof *sp);
	sp->dir = base_xstrdup(dir);
	base_buf_init(&sp->scratch);
	sp->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = sp->dirfd < 0 ? base_errf(err, "spool %s: %s", dir, strerror(errno))
	                       : load(sp, 1, cb, arg, err);
	relay_spool_close(sp);
	return rc;
}

int relay_spool_open(struct relay_spool **out, const char *dir, relay_recover_cb cb, void *arg,
                     struct base_err *err)
{
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return base_errf(err, "spool %s: %s", dir, strerror(errno));
	struct relay_spool *sp = base_xcalloc(1, sizeof *sp);
	sp->dir = base_xstrdup(dir);
	base_buf_init(&sp->scratch);
	sp->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sp->dirfd < 0) {
		base_errf(err, "spool %s: %s", dir, strerror(errno));
		relay_spool_close(sp);
		return -1;
	}
	int rc = load(sp, 0, cb, arg, err);
	if (!rc) rc = seg_new(sp, err);
	if (!rc) rc = relay_spool_commit(sp, err);
	if (rc) {
		relay_spool_close(sp);
		return -1;
	}
	/* segments nobody holds can go now */
	relay_spool_release(sp, 0);
	*out = sp;
	return 0;
}

static int load(struct relay_spool *sp, int readonly, relay_recover_cb cb, void *arg,
                struct base_err *err)
{
	DIR *d = fdopendir(dup(sp->dirfd));
	if (!d) return base_errf(err, "spool %s: %s", sp->dir, strerror(errno));
	uint32_t *nos = NULL;
	size_t nn = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		uint64_t v;
		if (strncmp(de->d_name, "seg-", 4) || strlen(de->d_name) != 12) continue;
		if (base_parse_uint(de->d_name + 4, UINT32_MAX - 1, &v) != 8) continue;
		nos = base_xrealloc(nos, (nn + 1) * sizeof *nos);
		nos[nn++] = (uint32_t)v;
	}
	closedir(d);
	base_sort(nos, nn, sizeof *nos, cmp_u32);
	struct recovery rv = {0};
	int rc = 0;
	for (size_t i = 0; i < nn && !rc; i++) rc = recover_segment(sp, nos[i], &rv, readonly, err);
	free(nos);
	for (size_t i = 0; i < rv.n; i++) {
		struct pending_msg *m = &rv.msgs[i];
		int live = 0;
		for (uint32_t k = 0; k < m->rec.nrcpt; k++)
			live |= m->states[k] == RELAY_RCPT_PENDING;
		if (!rc && live) {
			if (!readonly) relay_spool_hold(sp, m->loc.seg);
			m->rec.dsn = m->dsn;
			m->rec.dsn_len = m->dsn_len;
			m->rec.rflags = m->flags;
			if (cb) cb(arg, &m->rec, &m->loc, m->states, m->attempts, m->next);
		}
		free(m->flags);
		free(m->dsn);
		free(m->payload);
		free(m->next); /* with states and attempts */
	}
	free(rv.msgs);
	free(rv.slots);
	return rc;
}

void relay_spool_close(struct relay_spool *sp)
{
	if (!sp) return;
	for (size_t i = 0; i < sp->nsegs; i++)
		if (sp->segs[i].fd >= 0) close(sp->segs[i].fd);
	free(sp->segs);
	if (sp->dirfd >= 0) close(sp->dirfd);
	base_buf_free(&sp->scratch);
	free(sp->dir);
	free(sp);
}

/* ---- writing -------------------------------------------------------------- */

static int append(struct relay_spool *sp, uint64_t *at, struct base_err *err)
{
	struct segment *c = cur(sp);
	if (sp->cur_size >= SEGMENT_MAX && !sp->pinned) {
		if (seg_new(sp, err) < 0) return -1;
		c = cur(sp);
	}
	size_t done = 0;
	while (done < sp->scratch.len) {
		ssize_t w = write(c->fd, sp->scratch.data + done, sp->scratch.len - done);
		if (w < 0 && errno == EINTR) continue;
		if (w <= 0) {
			int e = w < 0 ? errno : ENOSPC;
			/* cut back so no partial record stays in front of later ones */
			if (ftruncate(c->fd, (off_t)sp->cur_size) < 0)
				base_warn("spool %s: cannot cut back a failed write: %s", sp->dir,
				          strerror(errno));
			return base_errf(err, "spool %s/seg-%08u: write: %s", sp->dir, c->no,
			                 strerror(e));
		}
		done += (size_t)w;
	}
	*at = sp->cur_size;
	sp->cur_size += sp->scratch.len;
	c->wgen++;
	return 0;
}

int relay_spool_add(struct relay_spool *sp, const char *id, const char *sender, const char *attrs,
                    int64_t received, const char *const *rcpts, uint32_t nrcpt,
                    const char *body, size_t body_len, struct relay_loc *loc,
                    struct base_err *err)
{
	return relay_spool_add_dsn(sp, id, sender, attrs, received, rcpts, nrcpt, body, body_len,
	                           NULL, 0, loc, err);
}

int relay_spool_add_dsn(struct relay_spool *sp, const char *id, const char *sender,
                        const char *attrs, int64_t received, const char *const *rcpts,
                        uint32_t nrcpt, const char *body, size_t body_len, const char *dsn,
                        size_t dsn_len, struct relay_loc *loc, struct base_err *err)
{
	if (body_len > RELAY_RECORD_MAX - 8192 || nrcpt == 0 || nrcpt > RELAY_RCPT_MAX ||
	    dsn_len > RELAY_RECORD_MAX / 2)
		return base_errf(err, "message too large or bad recipient count");
	if (!attrs) attrs = "";
	if (!relay_attrs_valid(attrs)) return base_errf(err, "bad message attributes '%s'", attrs);
	sp->scratch.len = 0;
	relay_record_msg(&sp->scratch, id, sender, attrs, received, rcpts, nrcpt, body, body_len);
	size_t msg_len = sp->scratch.len;
	if (dsn) relay_record_params(&sp->scratch, id, dsn, dsn_len);
	uint64_t at;
	if (append(sp, &at, err) < 0) return -1;
	loc->seg = cur(sp)->no;
	loc->off = at + msg_len - body_len;
	loc->len = (uint32_t)body_len;
	relay_spool_hold(sp, loc->seg);
	return 0;
}

void relay_spool_pin(struct relay_spool *sp, int on)
{
	if (on)
		sp->pinned++;
	else if (sp->pinned)
		sp->pinned--;
}

int relay_spool_state(struct relay_spool *sp, const char *id, uint32_t rcpt_index, uint32_t state,
                      uint32_t attempts, int64_t next, struct base_err *err)
{
	return relay_spool_state_flags(sp, id, rcpt_index, state, attempts, next, 0, err);
}

int relay_spool_state_flags(struct relay_spool *sp, const char *id, uint32_t rcpt_index,
                            uint32_t state, uint32_t attempts, int64_t next, uint32_t flags,
                            struct base_err *err)
{
	sp->scratch.len = 0;
	relay_record_state_flags(&sp->scratch, id, rcpt_index, state, attempts, next, flags);
	uint64_t at;
	return append(sp, &at, err);
}

/* What one commit covers, noted on the loop thread by _begin. */
struct relay_spool_sync {
	struct relay_spool *sp;
	size_t n;
	struct sync_item {
		uint32_t no;
		int fd;
		uint64_t gen; /* the segment's wgen when the commit began */
	} * items;
	int dirfd; /* -1: the directory need not be synced */
	int failed_errno;
	uint32_t failed_no; /* 0: the directory */
	size_t done;        /* items synced before a failure */
};

struct relay_spool_sync *relay_spool_commit_begin(struct relay_spool *sp)
{
	struct relay_spool_sync *c = base_xcalloc(1, sizeof *c);
	c->sp = sp;
	c->dirfd = -1;
	c->items = base_xcalloc(sp->nsegs ? sp->nsegs : 1, sizeof *c->items);
	for (size_t i = 0; i < sp->nsegs; i++) {
		struct segment *s = &sp->segs[i];
		if (!seg_dirty(s) || s->fd < 0) continue;
		c->items[c->n++] = (struct sync_item){.no = s->no, .fd = s->fd, .gen = s->wgen};
		s->syncing++;
	}
	if (sp->dir_dirty) {
		c->dirfd = sp->dirfd;
		sp->dir_dirty = 0;
	}
	return c;
}

size_t relay_spool_sync_files(const struct relay_spool_sync *c)
{
	return c->n;
}

/* Touches only c and the file descriptors it holds: safe on another thread. */
int relay_spool_commit_run(struct relay_spool_sync *c)
{
	for (c->done = 0; c->done < c->n; c->done++)
		if (fdatasync(c->items[c->done].fd) < 0) {
			c->failed_errno = errno;
			c->failed_no = c->items[c->done].no;
			return -1;
		}
	if (c->dirfd >= 0 && fsync(c->dirfd) < 0) {
		c->failed_errno = errno;
		c->failed_no = 0;
		return -1;
	}
	return 0;
}

int relay_spool_commit_end(struct relay_spool_sync *c, struct base_err *err)
{
	struct relay_spool *sp = c->sp;
	for (size_t i = 0; i < c->n; i++) {
		struct segment *s = seg_find(sp, c->items[i].no);
		if (!s) continue;
		s->syncing--;
		if (i < c->done && s->sgen < c->items[i].gen) s->sgen = c->items[i].gen;
		/* a segment rotated out and fully synced needs its fd no more */
		if (s != cur(sp) && !seg_dirty(s) && !s->syncing && s->fd >= 0) {
			close(s->fd);
			s->fd = -1;
		}
	}
	int rc = 0;
	if (c->failed_errno) {
		if (c->dirfd >= 0) sp->dir_dirty = 1;
		if (c->failed_no)
			rc = base_errf(err, "spool %s/seg-%08u: fdatasync: %s", sp->dir,
			               c->failed_no, strerror(c->failed_errno));
		else
			rc = base_errf(err, "spool %s: fsync: %s", sp->dir,
			               strerror(c->failed_errno));
	}
	free(c->items);
	free(c);
	return rc;
}

int relay_spool_commit(struct relay_spool *sp, struct base_err *err)
{
	struct relay_spool_sync *c = relay_spool_commit_begin(sp);
	relay_spool_commit_run(c);
	return relay_spool_commit_end(c, err);
}

int relay_spool_read(struct relay_spool *sp, const struct relay_loc *loc, struct base_buf *out,
                     struct base_err *err)
{
	char name[32];
	seg_name(name, sizeof name, loc->seg);
	/* a segment still open for writing is read through its fd: no open and
	 * close per delivery; older segments are opened for the read */
	struct segment *sg = seg_find(sp, loc->seg);
	int own = !sg || sg->fd < 0;
	int fd = own ? openat(sp->dirfd, name, O_RDONLY | O_CLOEXEC) : sg->fd;
	if (fd < 0) return base_errf(err, "%s/%s: %s", sp->dir, name, strerror(errno));
	out->len = 0;
	base_buf_reserve(out, loc->len + 1);
	ssize_t n = pread(fd, out->data, loc->len, (off_t)loc->off);
	int e = errno;
	if (own) close(fd);
	if (n != (ssize_t)loc->len)
		return base_errf(err, "%s/%s: short read at offset %llu: %s", sp->dir, name,
		                 (unsigned long long)loc->off, n < 0 ? strerror(e) : "end of file");
	out->len = loc->len;
	out->data[out->len] = 0;
	return 0;
}

void relay_spool_hold(struct relay_spool *sp, uint32_t seg)
{
	struct segment *s = seg_find(sp, seg);
	if (s) s->live++;
}

void relay_spool_release(struct relay_spool *sp, uint32_t seg)
{
	struct segment *s = seg_find(sp, seg);
	if (s && s->live) s->live--;
	/* remove finished segments from the oldest, never the current one */
	size_t k = 0;
	while (k + 1 < sp->nsegs && sp->segs[k].live == 0 && !seg_dirty(&sp->segs[k]) &&
	       !sp->segs[k].syncing) {
		char name[32];
		seg_name(name, sizeof name, sp->segs[k].no);
		if (sp->segs[k].fd >= 0) close(sp->segs[k].fd);
		if (unlinkat(sp->dirfd, name, 0) < 0 && errno != ENOENT)
			base_warn("spool %s/%s: unlink: %s", sp->dir, name, strerror(errno));
		k++;
	}
	if (k) {
		memmove(sp->segs, sp->segs + k, (sp->nsegs - k) * sizeof *sp->segs);
		sp->nsegs -= k;
	}
}
