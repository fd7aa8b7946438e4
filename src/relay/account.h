/*
 * account.h — submission accounts of the relay: the [account NAME]
 * sections of the config file (password hash, send limits, IP pools), the
 * password hash format, the SASL PLAIN decoding, the durable per-account
 * send counters, and the cache of recent successful password checks.
 * Included by the CLI (to load accounts and hash passwords), by the
 * reception stage and by the group commit (relay.c).
 */
#ifndef MAILREP_RELAY_ACCOUNT_H
#define MAILREP_RELAY_ACCOUNT_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#define RELAY_NAME_MAX 64 /* account and pool names: [A-Za-z0-9._-] */

struct relay_acct {
	char *name;
	char *hash;        /* "$pbkdf2-sha256$ITER$SALT$HASH" (base64 without padding) */
	uint32_t per_hour; /* recipients per clock hour; 0: no limit */
	uint32_t per_day;  /* recipients per UTC day; 0: no limit */
	char *pool;        /* the default pool of its mail; NULL: none */
	char **pools;      /* further pools it may choose by header */
	size_t npools;
};

struct relay_accounts {
	struct relay_acct *a;
	size_t n;
};

/* Reads every [account NAME] section of an INI file (keys: password,
 * per-hour, per-day, pool, pools). Errors name file:line. An account
 * without a password is refused. */
int relay_accounts_load(struct relay_accounts *out, const char *path, struct base_err *err);
void relay_accounts_free(struct relay_accounts *a);
/* Checks that every pool an account names is configured ([pool NAME] or
 * --pool). */
struct relay_config;
int relay_accounts_check(const struct relay_accounts *a, const struct relay_config *c,
                         struct base_err *err);
const struct relay_acct *relay_accounts_find(const struct relay_accounts *a, const char *name);
/* Whether an account may send from a pool (its pool, or one of its pools). */
int relay_acct_may_use_pool(const struct relay_acct *a, const char *pool);
/* Whether s is a valid account or pool name. */
int relay_name_valid(const char *s);

/* ---- passwords -------------------------------------------------------------
 *
 * PBKDF2-HMAC-SHA256 (OpenSSL), a 16-byte random salt, RELAY_PW_ITER
 * iterations by default, written "$pbkdf2-sha256$ITER$SALT$HASH" with
 * SALT and HASH in unpadded standard base64. */
#define RELAY_PW_ITER     100000
#define RELAY_PW_HASH_MAX 128
int relay_password_hash(const char *pw, size_t len, uint32_t iter, char *out, size_t n,
                        struct base_err *err);
/* 1 if pw matches hash, 0 if not (also for a malformed hash). With hash
 * NULL it does the same work against a dummy and returns 0, so that an
 * unknown user costs as much time as a wrong password. */
int relay_password_verify(const char *hash, const char *pw, size_t len);
/* Whether a hash string is in the format above (used at load). */
int relay_password_hash_valid(const char *hash);

/* ---- SASL ------------------------------------------------------------------ */

/* Strict base64 decoding (padding optional, no whitespace). Returns the
 * decoded length, or -1 if malformed or longer than n. */
long relay_b64_decode(const char *in, size_t len, uint8_t *out, size_t n);
void relay_b64_encode(const uint8_t *in, size_t len, char *out, size_t n, int pad);
/* Splits a decoded PLAIN response "authzid NUL authcid NUL passwd" into
 * user and password (copied, NUL-terminated). An authzid other than empty
 * or the authcid is refused. Returns 0 or -1. */
int relay_sasl_plain(const uint8_t *in, size_t len, char *user, size_t ulen, char *pw,
                     size_t pwlen);

/* ---- send limits -------------------------------------------------------------
 *
 * Counters of recipients accepted per account in the current clock hour
 * and UTC day, kept in memory and in a small state file, SPOOL/limits:
 *
 *   @spool SEG OFF
 *   NAME HOUR-START HOUR-COUNT DAY-START DAY-COUNT      (one per account)
 *
 * A message is counted in memory when it is written to the spool
 * (relay_quota_add, with the message's place in the spool). The file is
 * rewritten in place, one of its two checksummed slots with one fdatasync
 * (base_slotfile), once per group commit, on the commit thread, before the spool's sync
 * (relay_quota_snapshot / _write / _end): one write covers every message
 * of the commit, and no message is acknowledged before the counts that
 * include it are durable.
 *
 * Invariant: the file's counts include every message the spool holds at
 * or before the "@spool" mark (segment SEG, body offset OFF). A message
 * after the mark, found in the spool at start, was written but perhaps not
 * counted in the file (a crash before the commit that would have written
 * it): relay_quota_recover counts it. Every error is on the safe side: a
 * message counted but never acknowledged (a crash or a failed sync before
 * its 250) only lowers what may still be sent. A missing file counts every message found
 * in the spool; a file without the mark (written before the mark existed,
 * when counts were synced before the spool write) counts none of them. */
struct relay_quota;
struct relay_quota_snap;
int relay_quota_open(struct relay_quota **out, const char *path, struct base_err *err);
void relay_quota_close(struct relay_quota *l);
/* Whether n more recipients fit: 0 yes, else -1 with *which "hourly" or
 * "daily" and *limit set. */
int relay_quota_check(struct relay_quota *l, const struct relay_acct *a, int64_t now, uint32_t n,
                      const char **which, uint32_t *limit);
/* Counts n recipients of a message just written to the spool at seg/off
 * (in memory; the next group commit makes it durable). */
void relay_quota_add(struct relay_quota *l, const struct relay_acct *a, int64_t now, uint32_t n,
                     uint32_t seg, uint64_t off);
/* At start, for every message found in the spool: counts its n recipients
 * (received at `received`) when it lies after the file's mark. Returns 1
 * if counted, 0 if not. */
int relay_quota_recover(struct relay_quota *l, const char *account, int64_t received, int64_t now,
                        uint32_t n, uint32_t seg, uint64_t off);
/* After recovery: moves the mark to seg/off (the last message found, 0/0
 * for none: everything the spool holds is counted now) and writes the file
 * at once, so that a spool whose numbering starts over stays after it. */
int relay_quota_save(struct relay_quota *l, uint32_t seg, uint64_t off, struct base_err *err);
/* The group commit's part: _snapshot (loop thread) copies the counts when
 * they changed since the last snapshot (NULL: nothing to write); _write
 * (any thread; touches only the snapshot) writes and syncs the file;
 * _end (loop thread) frees the snapshot and returns 0, or -1 with err when
 * the write failed (the counts are then written by the next commit). */
struct relay_quota_snap *relay_quota_snapshot(struct relay_quota *l);
void relay_quota_write(struct relay_quota_snap *q);
int relay_quota_end(struct relay_quota *l, struct relay_quota_snap *q, struct base_err *err);
/* Parsers of one state file line (for tests and the fuzzer): a count
 * line, and the mark line. 0 or -1. */
int relay_quota_parse_line(const char *line, char *name, size_t nlen, int64_t *hs, uint32_t *hc,
                           int64_t *ds, uint32_t *dc);
int relay_quota_parse_mark(const char *line, uint32_t *seg, uint64_t *off);

/* ---- the authentication cache ---------------------------------------------
 *
 * Recent successful password checks, so that a client opening many
 * connections pays the PBKDF2 once: at most RELAY_AUTHC_N entries, each
 * valid for RELAY_AUTHC_TTL seconds after the check, the oldest replaced
 * when full. An entry is the account and HMAC-SHA256(key, user NUL
 * password) with a random key drawn at start and kept in memory only:
 * never the password, and nothing that outlives the process. A password
 * changed in the config takes effect at the restart that loads it (a new
 * key, an empty cache); only successes are cached, so a wrong password
 * always costs the full check. Loop thread only. */
#define RELAY_AUTHC_N   64
#define RELAY_AUTHC_TTL 300
struct relay_authc;
struct relay_authc *relay_authc_new(void);
void relay_authc_free(struct relay_authc *c);
/* The account cached for user and pw at time now (seconds, monotonic),
 * NULL if none. */
const struct relay_acct *relay_authc_find(struct relay_authc *c, const char *user, const char *pw,
                                          size_t len, int64_t now);
void relay_authc_put(struct relay_authc *c, const struct relay_acct *a, const char *user,
                     const char *pw, size_t len, int64_t now);

#endif
