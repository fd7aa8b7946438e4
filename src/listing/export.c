/*
 * export.c — the listings as files for DNS servers and mirrors:
 *
 *   rbldnsd   rbldnsd ip4set data (IPv4): a default value line for Level 1,
 *             bare addresses for Level 1, and CIDR entries with their own
 *             A value and TXT (127.0.0.3 Level 2, 127.0.0.4 Level 3); the
 *             TXT templates end in the lookup URL followed by "$", which
 *             rbldnsd replaces by the queried address. Loads unchanged in
 *             `mailrep dnsbl` and in rbldnsd as `zone:ip4set:file`.
 *   rbldnsd6  the same for IPv6 listings, as ip6trie data.
 *   txt       one address or CIDR per line.
 *   xml       one <listing> element per listing (schema in docs/LISTING.md).
 *   bind      a master file: reversed-octet names with A and TXT records;
 *             Level 2/3 ranges become octet-aligned wildcards (or single
 *             names for prefixes longer than /24).
 *
 * Every format includes the RFC 5782 test entry (127.0.0.2, ::ffff:7f00:2).
 * Output goes through a 1 MiB buffer into "<out>.tmp.<pid>", which is
 * fsync'd and renamed over <out> (and the directory fsync'd), so a mirror
 * never sees a partial file.
 */
#include "listing/store.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- atomic buffered writer ---------------------------------------------- */

#define AW_BUF (1 << 20)

struct aw {
	int fd;
	int failed;
	char tmp[4200];
	const char *path;
	size_t n;
	char *buf;
	struct base_err *err;
};

static int aw_open(struct aw *w, const char *path, struct base_err *err)
{
	memset(w, 0, sizeof *w);
	w->path = path;
	w->err = err;
	if (strlen(path) > 4000) return base_errf(err, "%s: path too long", path);
	snprintf(w->tmp, sizeof w->tmp, "%s.tmp.%ld", path, (long)getpid());
	w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (w->fd < 0) return base_errf(err, "%s: cannot create: %s", w->tmp, strerror(errno));
	/* published data: readable by servers that drop privileges, whatever the umask */
	if (fchmod(w->fd, 0644) < 0) {
		base_errf(err, "%s: chmod: %s", w->tmp, strerror(errno));
		close(w->fd);
		unlink(w->tmp);
		return -1;
	}
	w->buf = base_xmalloc(AW_BUF);
	return 0;
}

static void aw_flush(struct aw *w)
{
	size_t off = 0;
	while (!w->failed && off < w->n) {
		ssize_t k = write(w->fd, w->buf + off, w->n - off);
		if (k < 0) {
			if (errno == EINTR) continue;
			base_errf(w->err, "%s: write: %s", w->tmp, strerror(errno));
			w->failed = 1;
			break;
		}
		off += (size_t)k;
	}
	w->n = 0;
}

static void aw_write(struct aw *w, const void *p, size_t n)
{
	if (w->n + n > AW_BUF) aw_flush(w);
	if (n > AW_BUF) {
		const char *c = p;
		while (n) {
			size_t k = n > AW_BUF ? AW_BUF : n;
			memcpy(w->buf, c, k);
			w->n = k;
			aw_flush(w);
			c += k;
			n -= k;
		}
		return;
	}
	memcpy(w->buf + w->n, p, n);
	w->n += n;
}

static void aw_puts(struct aw *w, const char *s)
{
	aw_write(w, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void aw_printf(struct aw *w, const char *fmt, ...)
{
	char tmp[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n < 0) return;
	aw_write(w, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void aw_abort(struct aw *w)
{
	if (w->fd >= 0) close(w->fd);
	unlink(w->tmp);
	free(w->buf);
	w->buf = NULL;
}

static int aw_commit(struct aw *w)
{
	aw_flush(w);
	if (!w->failed && fsync(w->fd) < 0) {
		base_errf(w->err, "%s: fsync: %s", w->tmp, strerror(errno));
		w->failed = 1;
	}
	if (w->failed) {
		aw_abort(w);
		return -1;
	}
	close(w->fd);
	w->fd = -1;
	free(w->buf);
	w->buf = NULL;
	if (rename(w->tmp, w->path) < 0) {
		base_errf(w->err, "%s: rename: %s", w->path, strerror(errno));
		unlink(w->tmp);
		return -1;
	}
	/* make the rename itself durable */
	char dir[4200];
	snprintf(dir, sizeof dir, "%s", w->path);
	int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

/* ---- helpers -------------------------------------------------------------- */

int listing_format_parse(const char *s, enum listing_format *f)
{
	static const struct {
		const char *name;
		enum listing_format f;
	} names[] = {{"rbldnsd", LISTING_FMT_RBLDNSD},
	             {"rbldnsd6", LISTING_FMT_RBLDNSD6},
	             {"txt", LISTING_FMT_TXT},
	             {"xml", LISTING_FMT_XML},
	             {"bind", LISTING_FMT_BIND}};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (!strcmp(s, names[i].name)) {
			*f = names[i].f;
			return 0;
		}
	return -1;
}

/* Days since 1970-01-01 to civil date (Howard Hinnant's algorithm): faster
 * than gmtime_r for a million timestamps. */
static void fmt_iso(int64_t t, char *out)
{
	int64_t days = t >= 0 ? t / 86400 : (t - 86399) / 86400;
	int64_t secs = t - days * 86400;
	int64_t z = days + 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t y = yoe + era * 400;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	int64_t d = doy - (153 * mp + 2) / 5 + 1;
	int64_t m = mp < 10 ? mp + 3 : mp - 9;
	if (m <= 2) y++;
	if (y < 0 || y > 9999) {
		snprintf(out, 21, "0000-00-00T00:00:00Z");
		return;
	}
	int hh = (int)(secs / 3600), mi = (int)(secs / 60 % 60), ss = (int)(secs % 60);
	out[0] = (char)('0' + y / 1000);
	out[1] = (char)('0' + y / 100 % 10);
	out[2] = (char)('0' + y / 10 % 10);
	out[3] = (char)('0' + y % 10);
	out[4] = '-';
	out[5] = (char)('0' + m / 10);
	out[6] = (char)('0' + m % 10);
	out[7] = '-';
	out[8] = (char)('0' + d / 10);
	out[9] = (char)('0' + d % 10);
	out[10] = 'T';
	out[11] = (char)('0' + hh / 10);
	out[12] = (char)('0' + hh % 10);
	out[13] = ':';
	out[14] = (char)('0' + mi / 10);
	out[15] = (char)('0' + mi % 10);
	out[16] = ':';
	out[17] = (char)('0' + ss / 10);
	out[18] = (char)('0' + ss % 10);
	out[19] = 'Z';
	out[20] = 0;
}

static void xml_escape(struct aw *w, const char *s)
{
	const char *start = s;
	for (; *s; s++) {
		const char *rep = NULL;
		switch (*s) {
		case '&':
			rep = "&amp;";
			break;
		case '<':
			rep = "&lt;";
			break;
		case '>':
			rep = "&gt;";
			break;
		case '"':
			rep = "&quot;";
			break;
		default:
			continue;
		}
		aw_write(w, start, (size_t)(s - start));
		aw_puts(w, rep);
		start = s + 1;
	}
	aw_write(w, start, (size_t)(s - start));
}

static int is_v6_key(const char *k)
{
	return strchr(k, ':') != NULL;
}

/* Calls fn for each CIDR of a space-separated list. */
static void each_range(const char *ranges, void (*fn)(void *, const char *), void *ctx)
{
	const char *p = ranges ? ranges : "";
	while (*p) {
		while (*p == ' ') p++;
		const char *e = p;
		while (*e && *e != ' ') e++;
		char buf[64];
		size_t n = (size_t)(e - p);
		if (n && n < sizeof buf) {
			memcpy(buf, p, n);
			buf[n] = 0;
			fn(ctx, buf);
		}
		p = e;
	}
}

struct exp {
	struct aw *w;
	const struct listing_export_options *o;
	int64_t count;
	const struct listing_record *rec; /* current, for range callbacks */
};

static const char *level_code(int level)
{
	return level == 1 ? "127.0.0.2" : level == 2 ? "127.0.0.3" : "127.0.0.4";
}

/* ---- rbldnsd -------------------------------------------------------------- */

static void rbl_range(void *ctx, const char *cidr)
{
	struct exp *x = ctx;
	aw_printf(x->w, "%s :%s:Listed at Level %d (%s), see %s$\n", cidr,
	          level_code(x->rec->level), x->rec->level, x->rec->key, x->o->lookup_url);
	x->count++;
}

static int rbl_cb(void *ctx, const struct listing_record *rec)
{
	struct exp *x = ctx;
	if (rec->expires <= x->o->now) return 0;
	int v6 = x->o->format == LISTING_FMT_RBLDNSD6;
	if (rec->level == 1) {
		if (is_v6_key(rec->key) != v6) return 0;
		size_t n = strlen(rec->key);
		aw_write(x->w, rec->key, n);
		aw_write(x->w, "\n", 1);
		x->count++;
		return 0;
	}
	if (v6) return 0;
	x->rec = rec;
	each_range(rec->ranges, rbl_range, x);
	return 0;
}

/* ---- txt ------------------------------------------------------------------ */

static void txt_range(void *ctx, const char *cidr)
{
	struct exp *x = ctx;
	aw_puts(x->w, cidr);
	aw_write(x->w, "\n", 1);
	x->count++;
}

static int txt_cb(void *ctx, const struct listing_record *rec)
{
	struct exp *x = ctx;
	if (rec->expires <= x->o->now) return 0;
	if (rec->level == 1) {
		txt_range(x, rec->key);
		return 0;
	}
	each_range(rec->ranges, txt_range, x);
	return 0;
}

/* ---- xml ------------------------------------------------------------------ */

static void xml_range(void *ctx, const char *cidr)
{
	struct exp *x = ctx;
	aw_puts(x->w, "<range>");
	aw_puts(x->w, cidr);
	aw_puts(x->w, "</range>");
}

static int xml_cb(void *ctx, const struct listing_record *rec)
{
	struct exp *x = ctx;
	if (rec->expires <= x->o->now) return 0;
	char a[24], b[24], c[24], d[24];
	fmt_iso(rec->listed_at, a);
	fmt_iso(rec->first_seen, b);
	fmt_iso(rec->last_seen, c);
	fmt_iso(rec->expires, d);
	aw_printf(
	    x->w,
	    "<listing level=\"%d\" key=\"%s\" listed=\"%s\" first-seen=\"%s\" last-seen=\"%s\" "
	    "expires=\"%s\" impacts=\"%llu\" reason=\"",
	    rec->level, rec->key, a, b, c, d, (unsigned long long)rec->impacts);
	xml_escape(x->w, rec->reason);
	if (rec->level == 1) {
		aw_puts(x->w, "\"/>\n");
	} else {
		aw_puts(x->w, "\">");
		each_range(rec->ranges, xml_range, x);
		aw_puts(x->w, "</listing>\n");
	}
	x->count++;
	return 0;
}

/* ---- bind ----------------------------------------------------------------- */

static void bind_name_txt(struct exp *x, const char *name, int level, const char *what)
{
	aw_printf(x->w, "%s\tA\t%s\n\tTXT\t\"Listed at Level %d (%s), see %s%s\"\n", name,
	          level_code(level), level, what, x->o->lookup_url, what);
	x->count++;
}

static void bind_v4_name(uint32_t a, int labels, char *out, size_t n)
{
	/* labels: 4 = full address, 3 = *.c.b.a, ... */
	uint8_t o[4] = {(uint8_t)(a >> 24), (uint8_t)(a >> 16), (uint8_t)(a >> 8), (uint8_t)a};
	if (labels == 4)
		snprintf(out, n, "%u.%u.%u.%u", o[3], o[2], o[1], o[0]);
	else if (labels == 3)
		snprintf(out, n, "*.%u.%u.%u", o[2], o[1], o[0]);
	else if (labels == 2)
		snprintf(out, n, "*.%u.%u", o[1], o[0]);
	else
		snprintf(out, n, "*.%u", o[0]);
}

static void bind_range(void *ctx, const char *cidr)
{
	struct exp *x = ctx;
	struct base_cidr c;
	if (base_parse_cidr(cidr, &c, NULL) < 0 || c.family != AF_INET || c.prefix == 0) return;
	uint32_t a = (uint32_t)c.addr[0] << 24 | (uint32_t)c.addr[1] << 16 |
	             (uint32_t)c.addr[2] << 8 | c.addr[3];
	unsigned step_len = c.prefix > 24 ? 32 : c.prefix > 16 ? 24 : c.prefix > 8 ? 16 : 8;
	int labels = step_len == 32 ? 4 : step_len == 24 ? 3 : step_len == 16 ? 2 : 1;
	uint64_t count = (uint64_t)1 << (step_len - c.prefix);
	uint64_t step = (uint64_t)1 << (32 - step_len);
	char name[64];
	for (uint64_t i = 0; i < count; i++) {
		bind_v4_name((uint32_t)(a + i * step), labels, name, sizeof name);
		bind_name_txt(x, name, x->rec->level, x->rec->key);
	}
}

static void bind_v6_name(const char *key, char *out, size_t n)
{
	struct listing_ip ip;
	out[0] = 0;
	if (listing_ip_parse(key, &ip) < 0 || ip.family != 6) return;
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	for (int i = 15; i >= 0 && o + 4 < n; i--) {
		out[o++] = hex[ip.a[i] & 15];
		out[o++] = '.';
		out[o++] = hex[ip.a[i] >> 4];
		out[o++] = i ? '.' : 0;
	}
	if (o < n) out[o] = 0;
}

static int bind_cb(void *ctx, const struct listing_record *rec)
{
	struct exp *x = ctx;
	if (rec->expires <= x->o->now) return 0;
	char name[80];
	if (rec->level == 1) {
		if (is_v6_key(rec->key)) {
			bind_v6_name(rec->key, name, sizeof name);
		} else {
			struct listing_ip ip;
			if (listing_ip_parse(rec->key, &ip) < 0) return 0;
			uint32_t a = (uint32_t)ip.a[0] << 24 | (uint32_t)ip.a[1] << 16 |
			             (uint32_t)ip.a[2] << 8 | ip.a[3];
			bind_v4_name(a, 4, name, sizeof name);
		}
		if (name[0]) bind_name_txt(x, name, 1, rec->key);
		return 0;
	}
	x->rec = rec;
	each_range(rec->ranges, bind_range, x);
	return 0;
}

/* ---- driver --------------------------------------------------------------- */

int64_t listing_export(struct listing_store *s, const struct listing_export_options *o,
                       const char *path, struct base_err *err)
{
	struct aw w;
	if (aw_open(&w, path, err) < 0) return -1;
	struct exp x = {.w = &w, .o = o};
	char now[24];
	fmt_iso(o->now, now);
	listing_record_cb cb = NULL;
	switch (o->format) {
	case LISTING_FMT_RBLDNSD:
	case LISTING_FMT_RBLDNSD6:
		aw_printf(&w, "# mailrep listings (%s), generated %s\n",
		          o->format == LISTING_FMT_RBLDNSD ? "ip4set" : "ip6trie", now);
		aw_printf(&w, ":127.0.0.2:Listed at Level 1, see %s$\n", o->lookup_url);
		if (o->format == LISTING_FMT_RBLDNSD)
			aw_puts(&w, "127.0.0.2 :127.0.0.2:RFC 5782 test entry\n");
		else
			aw_puts(&w, "::ffff:7f00:2 :127.0.0.2:RFC 5782 test entry\n");
		cb = rbl_cb;
		break;
	case LISTING_FMT_TXT:
		aw_printf(&w, "# mailrep listings, generated %s\n127.0.0.2\n::ffff:7f00:2\n", now);
		cb = txt_cb;
		break;
	case LISTING_FMT_XML:
		aw_printf(&w,
		          "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		          "<mailrep-listings xmlns=\"urn:mailrep:listings:1\" version=\"1\" "
		          "generated=\"%s\">\n"
		          "<listing level=\"1\" key=\"127.0.0.2\" test=\"true\" reason=\"RFC 5782 "
		          "test entry\"/>\n"
		          "<listing level=\"1\" key=\"::ffff:7f00:2\" test=\"true\" reason=\"RFC "
		          "5782 test entry\"/>\n",
		          now);
		cb = xml_cb;
		break;
	case LISTING_FMT_BIND:
		aw_printf(&w,
		          "; mailrep listings, generated %s\n$ORIGIN %s.\n$TTL %u\n"
		          "@\tSOA\tns.%s. hostmaster.%s. %u 3600 900 604800 %u\n"
		          "\tNS\tns.%s.\nns\tA\t127.0.0.1\n"
		          "2.0.0.127\tA\t127.0.0.2\n\tTXT\t\"RFC 5782 test entry\"\n"
		          "2.0.0.0.0.0.f.7.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0\tA\t127."
		          "0.0.2\n"
		          "\tTXT\t\"RFC 5782 test entry\"\n",
		          now, o->zone, o->ttl, o->zone, o->zone, (unsigned)(uint32_t)o->now,
		          o->ttl, o->zone);
		cb = bind_cb;
		break;
	}
	if (s->ops->listings_scan(s, LISTING_ACTIVE, o->level, NULL, cb, &x, err) < 0) {
		aw_abort(&w);
		return -1;
	}
	if (o->format == LISTING_FMT_XML) aw_puts(&w, "</mailrep-listings>\n");
	if (aw_commit(&w) < 0) return -1;
	return x.count;
}
