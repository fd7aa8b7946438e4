/*
 * account.c — submission accounts: loading [account NAME] sections,
 * PBKDF2 password hashes, SASL PLAIN decoding, and the durable send
 * counters that enforce per-hour and per-day limits.
 *
 * Limits count recipients (as ESPs bill), in fixed windows: the current
 * clock hour and the current UTC day. The counters live in memory and in
 * a state file that the group commit rewrites (in place, one of two
 * checksummed slots: base/slotfile.c) before the spool's sync, so no message is acknowledged before the counts that
 * include it are durable; a message written to the spool but not yet in
 * the file is recognised at start by its place after the file's mark and
 * counted then (invariant in account.h). So neither a restart nor kill -9
 * can hand out more than the limit; a crash can only count a message that
 * was not acknowledged (the error is on the safe side).
 *
 * The authentication cache (end of file) remembers recent successful
 * password checks under a keyed hash, so that a client opening many
 * connections does not pay the PBKDF2 on each.
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/account.h"
#include "relay/relay.h"

/* ---- names and the config file ------------------------------------------------ */

int relay_name_valid(const char *s)
{
	size_t n = strlen(s);
	if (!n || n > RELAY_NAME_MAX) return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' || *s == '-'))
			return 0;
	return 1;
}

static int parse_limit(const char *v, uint32_t *out)
{
	uint64_t n;
	int k = base_parse_uint(v, 1u << 30, &n);
	if (k <= 0 || v[k]) return -1;
	*out = (uint32_t)n;
	return 0;
}

static int account_cb(void *ctx, const char *section, const char *key, const char *value,
                      struct base_err *err)
{
	struct relay_accounts *as = ctx;
	const char *name = section + strlen("account ");
	if (!relay_name_valid(name))
		return base_errf(err, "account name '%s': use letters, digits, '.', '_', '-'",
		                 name);
	struct relay_acct *a = NULL;
	for (size_t i = 0; i < as->n; i++)
		if (!strcmp(as->a[i].name, name)) a = &as->a[i];
	if (!a) {
		as->a = base_xrealloc(as->a, (as->n + 1) * sizeof *as->a);
		a = &as->a[as->n++];
		memset(a, 0, sizeof *a);
		a->name = base_xstrdup(name);
	}
	if (!strcmp(key, "password")) {
		if (!relay_password_hash_valid(value))
			return base_errf(err,
			                 "account %s: password must be a hash from "
			                 "'mailrep relay --hash-password', not plain text",
			                 name);
		free(a->hash);
		a->hash = base_xstrdup(value);
	} else if (!strcmp(key, "per-hour") || !strcmp(key, "per-day")) {
		uint32_t u;
		if (parse_limit(value, &u) < 0)
			return base_errf(err, "account %s: %s: bad number '%s'", name, key, value);
		*(key[4] == 'h' ? &a->per_hour : &a->per_day) = u;
	} else if (!strcmp(key, "pool")) {
		if (!relay_name_valid(value))
			return base_errf(err, "account %s: bad pool name '%s'", name, value);
		free(a->pool);
		a->pool = base_xstrdup(value);
	} else if (!strcmp(key, "pools")) {
		char *list = base_xstrdup(value), *save = NULL;
		for (char *p = strtok_r(list, ", ", &save); p; p = strtok_r(NULL, ", ", &save)) {
			if (!relay_name_valid(p) || a->npools >= 64) {
				free(list);
				return base_errf(err, "account %s: bad pool name '%s'", name, p);
			}
			a->pools = base_xrealloc(a->pools, (a->npools + 1) * sizeof *a->pools);
			a->pools[a->npools++] = base_xstrdup(p);
		}
		free(list);
	} else {
		return base_errf(err, "account %s: unknown setting '%s'", name, key);
	}
	return 0;
}

int relay_accounts_load(struct relay_accounts *out, const char *path, struct base_err *err)
{
	if (base_ini_read_sections(path, "account ", account_cb, out, err) < 0) return -1;
	for (size_t i = 0; i < out->n; i++)
		if (!out->a[i].hash)
			return base_errf(err, "%s: account %s has no password", path,
			                 out->a[i].name);
	return 0;
}

void relay_accounts_free(struct relay_accounts *as)
{
	for (size_t i = 0; i < as->n; i++) {
		struct relay_acct *a = &as->a[i];
		free(a->name);
		free(a->hash);
		free(a->pool);
		for (size_t k = 0; k < a->npools; k++) free(a->pools[k]);
		free(a->pools);
	}
	free(as->a);
	as->a = NULL;
	as->n = 0;
}

int relay_accounts_check(const struct relay_accounts *a, const struct relay_config *c,
                         struct base_err *err)
{
	for (size_t i = 0; i < a->n; i++) {
		const struct relay_acct *ac = &a->a[i];
		if (ac->pool && !relay_pool_find(c, ac->pool))
			return base_errf(err, "account %s: no pool named '%s'", ac->name, ac->pool);
		for (size_t k = 0; k < ac->npools; k++)
			if (!relay_pool_find(c, ac->pools[k]))
				return base_errf(err, "account %s: no pool named '%s'", ac->name,
				                 ac->pools[k]);
	}
	return 0;
}

const struct relay_acct *relay_accounts_find(const struct relay_accounts *as, const char *name)
{
	for (size_t i = 0; as && i < as->n; i++)
		if (!strcmp(as->a[i].name, name)) return &as->a[i];
	return NULL;
}

int relay_acct_may_use_pool(const struct relay_acct *a, const char *pool)
{
	if (a->pool && !strcmp(a->pool, pool)) return 1;
	for (size_t i = 0; i < a->npools; i++)
		if (!strcmp(a->pools[i], pool)) return 1;
	return 0;
}

/* ---- base64 ----------------------------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void relay_b64_encode(const uint8_t *in, size_t len, char *out, size_t n, int pad)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		size_t k = len - i;
		if (k > 1) v |= (uint32_t)in[i + 1] << 8;
		if (k > 2) v |= in[i + 2];
		char q[4] = {b64[(v >> 18) & 63], b64[(v >> 12) & 63], b64[(v >> 6) & 63],
		             b64[v & 63]};
		size_t m = k >= 3 ? 4 : k + 1;
		for (size_t j = 0; j < 4; j++) {
			if (j >= m && !pad) break;
			if (o + 1 < n) out[o++] = j < m ? q[j] : '=';
		}
	}
	if (n) out[o < n ? o : n - 1] = 0;
}

long relay_b64_decode(const char *in, size_t len, uint8_t *out, size_t n)
{
	return base_b64_decode(in, len, out, n, 0);
}

int relay_sasl_plain(const uint8_t *in, size_t len, char *user, size_t ulen, char *pw, size_t pwlen)
{
	const uint8_t *z1 = memchr(in, 0, len);
	if (!z1) return -1;
	const uint8_t *u = z1 + 1;
	const uint8_t *z2 = memchr(u, 0, len - (size_t)(u - in));
	if (!z2) return -1;
	const uint8_t *p = z2 + 1;
	size_t zl = (size_t)(z1 - in), ul = (size_t)(z2 - u), pl = len - (size_t)(p - in);
	if (!ul || ul >= ulen || pl >= pwlen || memchr(p, 0, pl)) return -1;
	if (zl && (zl != ul || memcmp(in, u, ul))) return -1;
	memcpy(user, u, ul);
	user[ul] = 0;
	memcpy(pw, p, pl);
	pw[pl] = 0;
	return 0;
}

/* ---- passwords ----------------------------------------------------------------- */

#define PW_PREFIX "$pbkdf2-sha256$"
#define SALT_LEN  16
#define DK_LEN    32

int relay_password_hash(const char *pw, size_t len, uint32_t iter, char *out, size_t n,
                        struct base_err *err)
{
	uint8_t salt[SALT_LEN], dk[DK_LEN];
	char s64[32], d64[48];
	if (RAND_bytes(salt, sizeof salt) != 1) return base_errf(err, "no random bytes");
	if (PKCS5_PBKDF2_HMAC(pw, (int)len, salt, sizeof salt, (int)iter, EVP_sha256(), DK_LEN,
	                      dk) != 1)
		return base_errf(err, "PBKDF2 failed");
	relay_b64_encode(salt, sizeof salt, s64, sizeof s64, 0);
	relay_b64_encode(dk, sizeof dk, d64, sizeof d64, 0);
	if ((size_t)snprintf(out, n, PW_PREFIX "%u$%s$%s", iter, s64, d64) >= n)
		return base_errf(err, "hash buffer too small");
	return 0;
}

/* Splits a hash into its parts; 0 or -1. */
static int hash_parts(const char *h, uint32_t *iter, uint8_t *salt, long *slen, uint8_t *dk)
{
	if (strncmp(h, PW_PREFIX, strlen(PW_PREFIX))) return -1;
	const char *p = h + strlen(PW_PREFIX);
	uint64_t it;
	int k = base_parse_uint(p, 10000000, &it);
	if (k <= 0 || p[k] != '$' || it < 1000) return -1;
	*iter = (uint32_t)it;
	const char *s = p + k + 1, *d = strchr(s, '$');
	if (!d) return -1;
	*slen = relay_b64_decode(s, (size_t)(d - s), salt, 64);
	if (*slen < 8) return -1;
	if (relay_b64_decode(d + 1, strlen(d + 1), dk, DK_LEN + 1) != DK_LEN) return -1;
	return 0;
}

int relay_password_hash_valid(const char *hash)
{
	uint32_t iter;
	uint8_t salt[64], dk[DK_LEN + 1];
	long sl;
	return hash_parts(hash, &iter, salt, &sl, dk) == 0;
}

int relay_password_verify(const char *hash, const char *pw, size_t len)
{
	uint32_t iter = RELAY_PW_ITER;
	uint8_t salt[64] = {0}, want[DK_LEN + 1] = {0}, got[DK_LEN];
	long sl = SALT_LEN;
	int ok = hash && hash_parts(hash, &iter, salt, &sl, want) == 0;
	if (!ok) {
		/* hash_parts may have stopped half way */
		iter = RELAY_PW_ITER;
		sl = SALT_LEN;
		memset(salt, 0, sizeof salt);
	}
	/* the same work whether or not the account exists */
	if (PKCS5_PBKDF2_HMAC(pw, (int)len, salt, (int)sl, (int)iter, EVP_sha256(), DK_LEN, got) !=
	    1)
		return 0;
	int same = CRYPTO_memcmp(got, want, DK_LEN) == 0;
	OPENSSL_cleanse(got, sizeof got);
	return ok && same;
}

/* ---- send limits ------------------------------------------------------------------ */

struct lcount {
	char name[RELAY_NAME_MAX + 1];
	int64_t hour_start, day_start;
	uint32_t hour_n, day_n;
};

struct relay_quota {
	char *path;
	struct base_slotfile *sf; /* the state file, rewritten in place */
	struct lcount *c;
	size_t n;
	/* the counts include every spool message at or before seg/off */
	uint32_t mark_seg;
	uint64_t mark_off;
	int recount; /* 0: messages found at start are counted only after the mark; -1: none */
	int dirty;   /* changed since the last snapshot */
};

/* What one group commit writes: the file's new contents. */
struct relay_quota_snap {
	struct base_slotfile *sf;
	struct base_buf b;
	int failed; /* 0, or the write failed with err */
	struct base_err err;
};

int relay_quota_parse_line(const char *line, char *name, size_t nlen, int64_t *hs, uint32_t *hc,
                           int64_t *ds, uint32_t *dc)
{
	const char *sp = strchr(line, ' ');
	if (!sp || (size_t)(sp - line) >= nlen) return -1;
	memcpy(name, line, (size_t)(sp - line));
	name[sp - line] = 0;
	if (!relay_name_valid(name)) return -1;
	uint64_t v[4];
	const char *p = sp + 1;
	for (int i = 0; i < 4; i++) {
		int k = base_parse_uint(p, i % 2 ? UINT32_MAX : (uint64_t)1 << 40, &v[i]);
		if (k <= 0) return -1;
		p += k;
		if (i < 3 && *p++ != ' ') return -1;
	}
	if (*p) return -1;
	*hs = (int64_t)v[0];
	*hc = (uint32_t)v[1];
	*ds = (int64_t)v[2];
	*dc = (uint32_t)v[3];
	return 0;
}

#define MARK "@spool "

int relay_quota_parse_mark(const char *line, uint32_t *seg, uint64_t *off)
{
	if (strncmp(line, MARK, strlen(MARK))) return -1;
	const char *p = line + strlen(MARK);
	uint64_t s, o;
	int k = base_parse_uint(p, UINT32_MAX, &s);
	if (k <= 0 || p[k] != ' ') return -1;
	p += k + 1;
	k = base_parse_uint(p, (uint64_t)1 << 48, &o);
	if (k <= 0 || p[k]) return -1;
	*seg = (uint32_t)s;
	*off = o;
	return 0;
}

static struct lcount *lfind(struct relay_quota *l, const char *name, int create)
{
	for (size_t i = 0; i < l->n; i++)
		if (!strcmp(l->c[i].name, name)) return &l->c[i];
	if (!create) return NULL;
	l->c = base_xrealloc(l->c, (l->n + 1) * sizeof *l->c);
	struct lcount *c = &l->c[l->n++];
	memset(c, 0, sizeof *c);
	snprintf(c->name, sizeof c->name, "%s", name);
	return c;
}

int relay_quota_open(struct relay_quota **out, const char *path, struct base_err *err)
{
	struct relay_quota *l = base_xcalloc(1, sizeof *l);
	l->path = base_xstrdup(path);
	char *text;
	size_t len;
	int legacy;
	if (base_slotfile_open(&l->sf, path, &text, &len, &legacy, err) < 0) {
		relay_quota_close(l);
		return -1;
	}
	/* no file: every message found in the spool is counted (mark 0/0);
	 * a file without a mark: none is */
	l->recount = text ? -1 : 0;
	unsigned long lineno = 0;
	for (char *p = text, *end = text + len; p && p < end;) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		char *line = p;
		if (nl) *nl = 0;
		p = nl ? nl + 1 : end;
		lineno++;
		if (!*line && !nl) break;
		struct lcount c;
		if (lineno == 1 && line[0] == '@') {
			if (relay_quota_parse_mark(line, &l->mark_seg, &l->mark_off) < 0) {
				base_errf(err, "%s:%lu: bad spool mark line", path, lineno);
				goto bad;
			}
			l->recount = 0;
			continue;
		}
		if (l->n >= 100000 || strlen(line) > 255 ||
		    relay_quota_parse_line(line, c.name, sizeof c.name, &c.hour_start, &c.hour_n,
		                           &c.day_start, &c.day_n) < 0) {
			base_errf(err, "%s:%lu: bad send-limit counter line", path, lineno);
			goto bad;
		}
		*lfind(l, c.name, 1) = c;
	}
	(void)legacy; /* the first write puts it in slot form */
	free(text);
	*out = l;
	return 0;
bad:
	free(text);
	relay_quota_close(l);
	return -1;
}

void relay_quota_close(struct relay_quota *l)
{
	if (!l) return;
	base_slotfile_close(l->sf);
	free(l->path);
	free(l->c);
	free(l);
}

static void roll(struct lcount *c, int64_t now)
{
	int64_t h = now - now % 3600, d = now - now % 86400;
	if (c->hour_start != h) c->hour_start = h, c->hour_n = 0;
	if (c->day_start != d) c->day_start = d, c->day_n = 0;
}

int relay_quota_check(struct relay_quota *l, const struct relay_acct *a, int64_t now, uint32_t n,
                      const char **which, uint32_t *limit)
{
	struct lcount z, *c = lfind(l, a->name, 0);
	if (!c) {
		memset(&z, 0, sizeof z);
		c = &z;
	}
	roll(c, now);
	if (a->per_hour && (uint64_t)c->hour_n + n > a->per_hour) {
		*which = "hourly";
		*limit = a->per_hour;
		return -1;
	}
	if (a->per_day && (uint64_t)c->day_n + n > a->per_day) {
		*which = "daily";
		*limit = a->per_day;
		return -1;
	}
	return 0;
}

static int after_mark(const struct relay_quota *l, uint32_t seg, uint64_t off)
{
	return seg > l->mark_seg || (seg == l->mark_seg && off > l->mark_off);
}

static uint32_t sat_add(uint32_t a, uint32_t b)
{
	return a > UINT32_MAX - b ? UINT32_MAX : a + b;
}

void relay_quota_add(struct relay_quota *l, const struct relay_acct *a, int64_t now, uint32_t n,
                     uint32_t seg, uint64_t off)
{
	struct lcount *c = lfind(l, a->name, 1);
	roll(c, now);
	c->hour_n = sat_add(c->hour_n, n);
	c->day_n = sat_add(c->day_n, n);
	if (after_mark(l, seg, off)) l->mark_seg = seg, l->mark_off = off;
	l->dirty = 1;
}

int relay_quota_recover(struct relay_quota *l, const char *account, int64_t received, int64_t now,
                        uint32_t n, uint32_t seg, uint64_t off)
{
	if (!account || !relay_name_valid(account) || l->recount < 0 || !after_mark(l, seg, off) ||
	    l->n >= 100000)
		return 0;
	struct lcount *c = lfind(l, account, 1);
	roll(c, now);
	/* only the windows it was received in; a message from an earlier
	 * hour or day no longer counts there */
	if (received >= c->hour_start) c->hour_n = sat_add(c->hour_n, n);
	if (received >= c->day_start) c->day_n = sat_add(c->day_n, n);
	l->dirty = 1;
	return 1;
}

static void serialize(const struct relay_quota *l, struct base_buf *b)
{
	base_buf_printf(b, MARK "%u %llu\n", l->mark_seg, (unsigned long long)l->mark_off);
	for (size_t i = 0; i < l->n; i++)
		base_buf_printf(b, "%s %lld %u %lld %u\n", l->c[i].name,
		                (long long)l->c[i].hour_start, l->c[i].hour_n,
		                (long long)l->c[i].day_start, l->c[i].day_n);
}

int relay_quota_save(struct relay_quota *l, uint32_t seg, uint64_t off, struct base_err *err)
{
	l->mark_seg = seg;
	l->mark_off = off;
	l->recount = 0;
	struct base_buf b;
	base_buf_init(&b);
	serialize(l, &b);
	int r = base_slotfile_write(l->sf, b.data, b.len, err);
	base_buf_free(&b);
	if (r == 0) l->dirty = 0;
	return r;
}

struct relay_quota_snap *relay_quota_snapshot(struct relay_quota *l)
{
	if (!l || !l->dirty) return NULL;
	struct relay_quota_snap *q = base_xcalloc(1, sizeof *q);
	q->sf = l->sf;
	base_buf_init(&q->b);
	serialize(l, &q->b);
	l->dirty = 0;
	return q;
}

void relay_quota_write(struct relay_quota_snap *q)
{
	if (base_slotfile_write(q->sf, q->b.data, q->b.len, &q->err) < 0) q->failed = 1;
}

int relay_quota_end(struct relay_quota *l, struct relay_quota_snap *q, struct base_err *err)
{
	int r = 0;
	if (q->failed) {
		l->dirty = 1; /* the next commit tries again */
		*err = q->err;
		r = -1;
	}
	base_buf_free(&q->b);
	free(q);
	return r;
}

/* ---- the authentication cache --------------------------------------------------- */

struct authc_entry {
	const struct relay_acct *acct; /* NULL: free */
	uint8_t mac[32];
	int64_t expires;
};

struct relay_authc {
	uint8_t key[32];
	struct authc_entry e[RELAY_AUTHC_N];
};

struct relay_authc *relay_authc_new(void)
{
	struct relay_authc *c = base_xcalloc(1, sizeof *c);
	if (RAND_bytes(c->key, sizeof c->key) != 1) {
		free(c);
		return NULL; /* no cache: every check runs in full */
	}
	return c;
}

void relay_authc_free(struct relay_authc *c)
{
	if (!c) return;
	OPENSSL_cleanse(c, sizeof *c);
	free(c);
}

static int authc_mac(const struct relay_authc *c, const char *user, const char *pw, size_t len,
                     uint8_t *out)
{
	uint8_t msg[1024];
	size_t ul = strlen(user);
	if (ul + 1 + len > sizeof msg) return -1;
	memcpy(msg, user, ul + 1); /* with the NUL: "ab"+"c" differs from "a"+"bc" */
	memcpy(msg + ul + 1, pw, len);
	unsigned int ml = 0;
	int ok = HMAC(EVP_sha256(), c->key, sizeof c->key, msg, ul + 1 + len, out, &ml) != NULL &&
	         ml == 32;
	OPENSSL_cleanse(msg, sizeof msg);
	return ok ? 0 : -1;
}

const struct relay_acct *relay_authc_find(struct relay_authc *c, const char *user, const char *pw,
                                          size_t len, int64_t now)
{
	uint8_t mac[32];
	if (!c || authc_mac(c, user, pw, len, mac) < 0) return NULL;
	const struct relay_acct *found = NULL;
	for (size_t i = 0; i < RELAY_AUTHC_N; i++) {
		struct authc_entry *e = &c->e[i];
		if (!e->acct) continue;
		if (e->expires <= now) {
			e->acct = NULL;
			continue;
		}
		if (CRYPTO_memcmp(e->mac, mac, sizeof mac) == 0 && !strcmp(e->acct->name, user))
			found = e->acct;
	}
	return found;
}

void relay_authc_put(struct relay_authc *c, const struct relay_acct *a, const char *user,
                     const char *pw, size_t len, int64_t now)
{
	uint8_t mac[32];
	if (!c || authc_mac(c, user, pw, len, mac) < 0) return;
	/* the same entry again, else a free or expired one, else the oldest */
	struct authc_entry *v = &c->e[0];
	for (size_t i = 0; i < RELAY_AUTHC_N; i++) {
		struct authc_entry *e = &c->e[i];
		if (e->acct && !CRYPTO_memcmp(e->mac, mac, sizeof mac)) {
			v = e;
			break;
		}
		if (!e->acct || e->expires <= now) {
			if (v->acct && v->expires > now) v = e;
		} else if (v->acct && v->expires > now && e->expires < v->expires) {
			v = e;
		}
	}
	v->acct = a;
	memcpy(v->mac, mac, sizeof mac);
	v->expires = now + RELAY_AUTHC_TTL;
}
