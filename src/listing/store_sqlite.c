/*
 * store_sqlite.c — the embedded SQLite backend of the listing store.
 *
 * The database runs in WAL mode with synchronous=FULL: in WAL mode NORMAL
 * does not sync the log on commit, so a power cut could lose impacts that
 * were already acknowledged; FULL makes every COMMIT durable, and bulk
 * writers amortise the fsync by committing in batches.
 *
 * Schema versions live in PRAGMA user_version. `migrations` is an ordered
 * list; migration i (1-based) takes the schema from version i-1 to i and
 * runs in its own transaction together with the version bump, so a crash
 * leaves the database at a whole version. A database newer than this
 * program is refused rather than guessed at.
 *
 * Statements used on hot paths (impact insert, listing insert/update) are
 * prepared once and kept in `struct sqlite_store`.
 */
#include "listing/store.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

struct sqlite_store {
	struct listing_store base; /* must be first */
	sqlite3 *db;
	sqlite3_stmt *ins_impact, *ins_listing, *upd_listing;
	struct cached {
		sqlite3_stmt *st;
		int busy;
	} scan[8], range; /* queries an incremental refresh runs per key */
	int version;
};

/* A statement prepared on first use and kept. A callback that re-enters
 * the same query while it runs (busy) gets a private statement instead. */
static sqlite3_stmt *cached_get(struct sqlite_store *q, struct cached *c, const char *sql,
                                int *owned)
{
	sqlite3_stmt *st;
	if (!c->busy) {
		if (!c->st && sqlite3_prepare_v2(q->db, sql, -1, &c->st, NULL) != SQLITE_OK)
			return NULL;
		c->busy = 1;
		*owned = 0;
		return c->st;
	}
	if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK) return NULL;
	*owned = 1;
	return st;
}

static void cached_put(struct cached *c, sqlite3_stmt *st, int owned)
{
	if (owned) {
		sqlite3_finalize(st);
		return;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	c->busy = 0;
}

static const char *const migrations[] = {
    /* 1: the first schema */
    "CREATE TABLE impacts(id INTEGER PRIMARY KEY, time INTEGER NOT NULL, ip BLOB NOT NULL,"
    " trap TEXT, source TEXT, helo TEXT, mail_from TEXT, rcpt TEXT, message_id TEXT,"
    " subject TEXT, headers BLOB);"
    "CREATE INDEX impacts_time ON impacts(time);"
    "CREATE INDEX impacts_ip ON impacts(ip, time);"
    "CREATE TABLE listings(id INTEGER PRIMARY KEY, level INTEGER NOT NULL, key TEXT NOT NULL,"
    " state INTEGER NOT NULL, reason TEXT NOT NULL, listed_at INTEGER, first_seen INTEGER,"
    " last_seen INTEGER, expires INTEGER, removed_at INTEGER, impacts INTEGER, evidence TEXT,"
    " ranges TEXT);"
    "CREATE INDEX listings_key ON listings(level, key);"
    "CREATE INDEX listings_state ON listings(state, expires);"
    "CREATE TABLE delist_requests(id INTEGER PRIMARY KEY, time INTEGER NOT NULL, ip TEXT NOT NULL,"
    " kind TEXT NOT NULL, outcome TEXT NOT NULL, note TEXT);"
    "CREATE INDEX delist_ip ON delist_requests(ip, time);"
    "CREATE INDEX delist_time ON delist_requests(time);"
    "CREATE TABLE delist_floors(level INTEGER NOT NULL, key TEXT NOT NULL, since INTEGER NOT NULL,"
    " PRIMARY KEY(level, key));"
    "CREATE TABLE traps(id INTEGER PRIMARY KEY, address TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,"
    " created INTEGER);"
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);",
    /* 2: statistics ask for listings that began or ended in a time range */
    "CREATE INDEX listings_listed_at ON listings(listed_at);"
    "CREATE INDEX listings_removed_at ON listings(removed_at);",
    /* 3: the refresh reads (id, time, ip) of a time window; a covering index
     * serves it without one random table lookup per impact. Indexes on the
     * listings that no query needs are dropped: each costs a random-order
     * insert per new listing, and counting new listings scans as fast. */
    "DROP INDEX impacts_time;"
    "CREATE INDEX impacts_time_ip ON impacts(time, ip);"
    "DROP INDEX listings_state;"
    "DROP INDEX listings_listed_at;",
};

int listing_sqlite_schema_latest(void)
{
	return (int)(sizeof migrations / sizeof migrations[0]);
}

static int sqlerr(struct sqlite_store *q, struct base_err *err, const char *what)
{
	return base_errf(err, "store: %s: %s", what, sqlite3_errmsg(q->db));
}

static int exec(struct sqlite_store *q, const char *sql, struct base_err *err)
{
	char *msg = NULL;
	if (sqlite3_exec(q->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		base_errf(err, "store: %s", msg ? msg : "error");
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

static int user_version(struct sqlite_store *q)
{
	sqlite3_stmt *st;
	int v = -1;
	if (sqlite3_prepare_v2(q->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK) return -1;
	if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

static int migrate(struct sqlite_store *q, struct base_err *err)
{
	int v = user_version(q);
	int latest = listing_sqlite_schema_latest();
	if (v < 0) return sqlerr(q, err, "reading schema version");
	if (v > latest)
		return base_errf(err, "store: schema version %d is newer than this program (%d)", v,
		                 latest);
	for (; v < latest; v++) {
		char bump[64];
		snprintf(bump, sizeof bump, "PRAGMA user_version=%d", v + 1);
		if (exec(q, "BEGIN IMMEDIATE", err) < 0) return -1;
		struct base_err e2;
		if (exec(q, migrations[v], &e2) < 0 || exec(q, bump, &e2) < 0) {
			exec(q, "ROLLBACK", NULL);
			return base_errf(err, "store: migration to version %d failed: %s", v + 1,
			                 e2.msg);
		}
		if (exec(q, "COMMIT", err) < 0) return -1;
	}
	q->version = latest;
	return 0;
}

/* ---- transactions -------------------------------------------------------- */

static int sq_begin(struct listing_store *s, struct base_err *err)
{
	return exec((struct sqlite_store *)s, "BEGIN IMMEDIATE", err);
}

static int sq_commit(struct listing_store *s, struct base_err *err)
{
	return exec((struct sqlite_store *)s, "COMMIT", err);
}

static void sq_rollback(struct listing_store *s)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	if (!sqlite3_get_autocommit(q->db)) exec(q, "ROLLBACK", NULL);
}

static void sq_close(struct listing_store *s)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	sqlite3_finalize(q->ins_impact);
	sqlite3_finalize(q->ins_listing);
	sqlite3_finalize(q->upd_listing);
	for (size_t i = 0; i < sizeof q->scan / sizeof q->scan[0]; i++)
		sqlite3_finalize(q->scan[i].st);
	sqlite3_finalize(q->range.st);
	sqlite3_close(q->db);
	free(q);
}

static int sq_version(struct listing_store *s)
{
	return user_version((struct sqlite_store *)s);
}

/* ---- impacts ------------------------------------------------------------- */

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
	if (v)
		sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

static int sq_impact_insert(struct listing_store *s, const struct listing_impact *imp, int64_t *id,
                            struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	sqlite3_stmt *st = q->ins_impact;
	sqlite3_reset(st);
	sqlite3_bind_int64(st, 1, imp->time);
	sqlite3_bind_blob(st, 2, imp->ip.a, (int)listing_ip_len(&imp->ip), SQLITE_STATIC);
	bind_text(st, 3, imp->trap);
	bind_text(st, 4, imp->source);
	bind_text(st, 5, imp->helo);
	bind_text(st, 6, imp->mail_from);
	bind_text(st, 7, imp->rcpt);
	bind_text(st, 8, imp->message_id);
	bind_text(st, 9, imp->subject);
	if (imp->headers)
		sqlite3_bind_blob(st, 10, imp->headers, (int)imp->headers_len, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 10);
	if (sqlite3_step(st) != SQLITE_DONE) return sqlerr(q, err, "inserting impact");
	if (id) *id = sqlite3_last_insert_rowid(q->db);
	sqlite3_reset(st);
	return 0;
}

static int column_ip(sqlite3_stmt *st, int col, struct listing_ip *ip)
{
	int n = sqlite3_column_bytes(st, col);
	const void *b = sqlite3_column_blob(st, col);
	memset(ip, 0, sizeof *ip);
	if (n == 4)
		ip->family = 4;
	else if (n == 16)
		ip->family = 6;
	else
		return -1;
	memcpy(ip->a, b, (size_t)n);
	return 0;
}

static int sq_impacts_window(struct listing_store *s, int64_t after, int64_t upto,
                             listing_impact_cb cb, void *ctx, struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(q->db,
	                       "SELECT id, time, ip FROM impacts WHERE time > ? AND time <= ?", -1,
	                       &st, NULL) != SQLITE_OK)
		return sqlerr(q, err, "scanning impacts");
	sqlite3_bind_int64(st, 1, after);
	sqlite3_bind_int64(st, 2, upto);
	int rc, r = 0;
	struct listing_impact imp;
	memset(&imp, 0, sizeof imp);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		imp.id = sqlite3_column_int64(st, 0);
		imp.time = sqlite3_column_int64(st, 1);
		if (column_ip(st, 2, &imp.ip) < 0) continue; /* not written by us; skip */
		if ((r = cb(ctx, &imp)) != 0) break;
	}
	if (r == 0 && rc != SQLITE_DONE) {
		sqlite3_finalize(st);
		return sqlerr(q, err, "scanning impacts");
	}
	sqlite3_finalize(st);
	return r < 0 ? -1 : 0;
}

/* Runs a prepared (id, time, ip) query and feeds the rows to cb; the
 * caller disposes of the statement. */
static int scan_id_time_ip(struct sqlite_store *q, sqlite3_stmt *st, listing_impact_cb cb,
                           void *ctx, struct base_err *err)
{
	int rc, r = 0;
	struct listing_impact imp;
	memset(&imp, 0, sizeof imp);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		imp.id = sqlite3_column_int64(st, 0);
		imp.time = sqlite3_column_int64(st, 1);
		if (column_ip(st, 2, &imp.ip) < 0) continue;
		if ((r = cb(ctx, &imp)) != 0) break;
	}
	if (r == 0 && rc != SQLITE_DONE) return sqlerr(q, err, "scanning impacts");
	return r < 0 ? -1 : 0;
}

static int sq_impacts_after_id(struct listing_store *s, int64_t after_id, listing_impact_cb cb,
                               void *ctx, struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(q->db, "SELECT id, time, ip FROM impacts WHERE id > ? ORDER BY id",
	                       -1, &st, NULL) != SQLITE_OK)
		return sqlerr(q, err, "scanning impacts");
	sqlite3_bind_int64(st, 1, after_id);
	int r = scan_id_time_ip(q, st, cb, ctx, err);
	sqlite3_finalize(st);
	return r;
}

static int sq_impacts_max_id(struct listing_store *s, int64_t *id, struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(q->db, "SELECT coalesce(max(id), 0) FROM impacts", -1, &st, NULL) !=
	    SQLITE_OK)
		return sqlerr(q, err, "reading impacts");
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) *id = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : sqlerr(q, err, "reading impacts");
}

static int sq_impacts_range(struct listing_store *s, const struct listing_ip *lo,
                            const struct listing_ip *hi, int64_t after, int64_t upto,
                            listing_impact_cb cb, void *ctx, struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	/* blobs compare bytewise, so a range of 4-byte keys could also catch
	 * 16-byte ones sharing a prefix: the length test keeps families apart.
	 * "+time" makes SQLite walk the (ip, time) index over the address range
	 * rather than the time index over the whole window. */
	int owned;
	sqlite3_stmt *st = cached_get(q, &q->range,
	                              "SELECT id, time, ip FROM impacts WHERE ip >= ?1 AND ip <= ?2"
	                              " AND length(ip) = ?3 AND +time > ?4 AND +time <= ?5",
	                              &owned);
	if (!st) return sqlerr(q, err, "scanning impacts");
	int n = (int)listing_ip_len(lo);
	sqlite3_bind_blob(st, 1, lo->a, n, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, hi->a, n, SQLITE_STATIC);
	sqlite3_bind_int(st, 3, n);
	sqlite3_bind_int64(st, 4, after);
	sqlite3_bind_int64(st, 5, upto);
	int r = scan_id_time_ip(q, st, cb, ctx, err);
	cached_put(&q->range, st, owned);
	return r;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
	return (const char *)sqlite3_column_text(st, i);
}

static int sq_impacts_of_ip(struct listing_store *s, const struct listing_ip *ip, int64_t upto,
                            unsigned limit, listing_impact_cb cb, void *ctx, struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(
	        q->db,
	        "SELECT id, time, ip, trap, source, helo, mail_from, rcpt, message_id,"
	        " subject, headers FROM impacts WHERE ip = ? AND time <= ?"
	        " ORDER BY time DESC, id DESC LIMIT ?",
	        -1, &st, NULL) != SQLITE_OK)
		return sqlerr(q, err, "reading impacts");
	sqlite3_bind_blob(st, 1, ip->a, (int)listing_ip_len(ip), SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, upto);
	sqlite3_bind_int64(st, 3, limit);
	int rc, r = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct listing_impact imp = {0};
		imp.id = sqlite3_column_int64(st, 0);
		imp.time = sqlite3_column_int64(st, 1);
		if (column_ip(st, 2, &imp.ip) < 0) continue;
		imp.trap = col_text(st, 3);
		imp.source = col_text(st, 4);
		imp.helo = col_text(st, 5);
		imp.mail_from = col_text(st, 6);
		imp.rcpt = col_text(st, 7);
		imp.message_id = col_text(st, 8);
		imp.subject = col_text(st, 9);
		imp.headers = sqlite3_column_blob(st, 10);
		imp.headers_len = (size_t)sqlite3_column_bytes(st, 10);
		if ((r = cb(ctx, &imp)) != 0) break;
	}
	if (r == 0 && rc != SQLITE_DONE) {
		sqlite3_finalize(st);
		return sqlerr(q, err, "reading impacts");
	}
	sqlite3_finalize(st);
	return r < 0 ? -1 : 0;
}

/* ---- listings ------------------------------------------------------------ */

#define LISTING_COLS                                                                               \
	"id, level, key, state, reason, listed_at, first_seen, last_seen, expires, removed_at,"    \
	" impacts, evidence, ranges"

static void copy_col(char *dst, size_t n, sqlite3_stmt *st, int i)
{
	const char *v = col_text(st, i);
	snprintf(dst, n, "%s", v ? v : "");
}

static int sq_listings_scan(struct listing_store *s, int state, int level, const char *key,
                            listing_record_cb cb, void *ctx, struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	char sql[512];
	/* Without a key a scan reads most of the table: "+state" keeps SQLite
	 * from using an index on state and fetching each row at random. */
	snprintf(sql, sizeof sql, "SELECT " LISTING_COLS " FROM listings WHERE 1%s%s%s%s",
	         state >= 0 ? (key ? " AND state = ?1" : " AND +state = ?1") : "",
	         level ? " AND level = ?2" : "", key ? " AND key = ?3" : "",
	         key ? " ORDER BY id DESC" : "");
	struct cached *c = &q->scan[(state >= 0) | (level ? 2 : 0) | (key ? 4 : 0)];
	int owned;
	sqlite3_stmt *st = cached_get(q, c, sql, &owned);
	if (!st) return sqlerr(q, err, "scanning listings");
	if (state >= 0) sqlite3_bind_int(st, 1, state);
	if (level) sqlite3_bind_int(st, 2, level);
	if (key) sqlite3_bind_text(st, 3, key, -1, SQLITE_STATIC);
	int rc, r = 0;
	struct listing_record rec;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		rec.id = sqlite3_column_int64(st, 0);
		rec.level = sqlite3_column_int(st, 1);
		copy_col(rec.key, sizeof rec.key, st, 2);
		rec.state = sqlite3_column_int(st, 3);
		copy_col(rec.reason, sizeof rec.reason, st, 4);
		rec.listed_at = sqlite3_column_int64(st, 5);
		rec.first_seen = sqlite3_column_int64(st, 6);
		rec.last_seen = sqlite3_column_int64(st, 7);
		rec.expires = sqlite3_column_int64(st, 8);
		rec.removed_at = sqlite3_column_int64(st, 9);
		rec.impacts = (uint64_t)sqlite3_column_int64(st, 10);
		copy_col(rec.evidence, sizeof rec.evidence, st, 11);
		rec.ranges = col_text(st, 12);
		if ((r = cb(ctx, &rec)) != 0) break;
	}
	if (r == 0 && rc != SQLITE_DONE) r = sqlerr(q, err, "scanning listings");
	cached_put(c, st, owned);
	return r < 0 ? -1 : 0;
}

static void bind_listing(sqlite3_stmt *st, const struct listing_record *r)
{
	sqlite3_bind_int(st, 1, r->level);
	sqlite3_bind_text(st, 2, r->key, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 3, r->state);
	sqlite3_bind_text(st, 4, r->reason, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, r->listed_at);
	sqlite3_bind_int64(st, 6, r->first_seen);
	sqlite3_bind_int64(st, 7, r->last_seen);
	sqlite3_bind_int64(st, 8, r->expires);
	sqlite3_bind_int64(st, 9, r->removed_at);
	sqlite3_bind_int64(st, 10, (sqlite3_int64)r->impacts);
	sqlite3_bind_text(st, 11, r->evidence, -1, SQLITE_STATIC);
	bind_text(st, 12, r->ranges);
}

static int sq_listing_insert(struct listing_store *s, struct listing_record *rec,
                             struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	sqlite3_stmt *st = q->ins_listing;
	sqlite3_reset(st);
	bind_listing(st, rec);
	if (sqlite3_step(st) != SQLITE_DONE) return sqlerr(q, err, "inserting listing");
	rec->id = sqlite3_last_insert_rowid(q->db);
	sqlite3_reset(st);
	return 0;
}

static int sq_listing_update(struct listing_store *s, const struct listing_record *rec,
                             struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	sqlite3_stmt *st = q->upd_listing;
	sqlite3_reset(st);
	bind_listing(st, rec);
	sqlite3_bind_int64(st, 13, rec->id);
	if (sqlite3_step(st) != SQLITE_DONE) return sqlerr(q, err, "updating listing");
	sqlite3_reset(st);
	return 0;
}

static int count1(struct sqlite_store *q, const char *sql, int level, int64_t a, int64_t b,
                  uint64_t *out, struct base_err *err)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK)
		return sqlerr(q, err, "counting");
	sqlite3_bind_int(st, 1, level);
	sqlite3_bind_int64(st, 2, a);
	sqlite3_bind_int64(st, 3, b);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) *out = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : sqlerr(q, err, "counting");
}

static int sq_listings_count(struct listing_store *s, int level, int64_t after, int64_t upto,
                             uint64_t *began, uint64_t *ended, uint64_t *active,
                             struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	if (count1(q,
	           "SELECT count(*) FROM listings WHERE (?1 = 0 OR level = ?1) AND listed_at > ?2"
	           " AND listed_at <= ?3",
	           level, after, upto, began, err) < 0)
		return -1;
	if (count1(q,
	           "SELECT count(*) FROM listings WHERE (?1 = 0 OR level = ?1) AND state != 0"
	           " AND removed_at > ?2 AND removed_at <= ?3",
	           level, after, upto, ended, err) < 0)
		return -1;
	return count1(q,
	              "SELECT count(*) FROM listings WHERE (?1 = 0 OR level = ?1) AND state = 0"
	              " AND ?2 <= ?3",
	              level, after, upto, active, err);
}

/* ---- floors, delist requests, traps, meta -------------------------------- */

static int run1(struct sqlite_store *q, sqlite3_stmt *st, const char *what, struct base_err *err)
{
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) return sqlerr(q, err, what);
	return 0;
}

static int sq_floor_set(struct listing_store *s, int level, const char *key, int64_t since,
                        struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(
	        q->db,
	        "INSERT INTO delist_floors(level, key, since) VALUES(?, ?, ?)"
	        " ON CONFLICT(level, key) DO UPDATE SET since = max(since, excluded.since)",
	        -1, &st, NULL) != SQLITE_OK)
		return sqlerr(q, err, "setting delist floor");
	sqlite3_bind_int(st, 1, level);
	sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, since);
	return run1(q, st, "setting delist floor", err);
}

static int sq_floors_scan(struct listing_store *s, listing_floor_cb cb, void *ctx,
                          struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(q->db, "SELECT level, key, since FROM delist_floors", -1, &st,
	                       NULL) != SQLITE_OK)
		return sqlerr(q, err, "reading delist floors");
	int rc, r = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *k = col_text(st, 1);
		if ((r = cb(ctx, sqlite3_column_int(st, 0), k ? k : "",
		            sqlite3_column_int64(st, 2))) != 0)
			break;
	}
	sqlite3_finalize(st);
	if (r == 0 && rc != SQLITE_DONE) return sqlerr(q, err, "reading delist floors");
	return r < 0 ? -1 : 0;
}

static int sq_delist_record(struct listing_store *s, int64_t time, const char *ip, const char *kind,
                            const char *outcome, const char *note, struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(
	        q->db,
	        "INSERT INTO delist_requests(time, ip, kind, outcome, note) VALUES(?,?,?,?,?)", -1,
	        &st, NULL) != SQLITE_OK)
		return sqlerr(q, err, "recording delist request");
	sqlite3_bind_int64(st, 1, time);
	sqlite3_bind_text(st, 2, ip, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, outcome, -1, SQLITE_STATIC);
	bind_text(st, 5, note);
	return run1(q, st, "recording delist request", err);
}

static int sq_delist_count(struct listing_store *s, const char *ip, const char *kind, int64_t after,
                           uint64_t *n, struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(q->db,
	                       "SELECT count(*) FROM delist_requests WHERE time > ?1"
	                       " AND (?2 IS NULL OR ip = ?2) AND (?3 IS NULL OR kind = ?3)",
	                       -1, &st, NULL) != SQLITE_OK)
		return sqlerr(q, err, "counting delist requests");
	sqlite3_bind_int64(st, 1, after);
	bind_text(st, 2, ip);
	bind_text(st, 3, kind);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) *n = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : sqlerr(q, err, "counting delist requests");
}

static int sq_trap_add(struct listing_store *s, const char *address, const char *kind, int64_t now,
                       struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(q->db,
	                       "INSERT INTO traps(address, kind, created) VALUES(?, ?, ?)"
	                       " ON CONFLICT(address) DO UPDATE SET kind = excluded.kind",
	                       -1, &st, NULL) != SQLITE_OK)
		return sqlerr(q, err, "adding trap");
	sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, now);
	return run1(q, st, "adding trap", err);
}

static int sq_traps_scan(struct listing_store *s,
                         int (*cb)(void *ctx, const char *address, const char *kind,
                                   int64_t created),
                         void *ctx, struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(q->db, "SELECT address, kind, created FROM traps ORDER BY address",
	                       -1, &st, NULL) != SQLITE_OK)
		return sqlerr(q, err, "reading traps");
	int rc, r = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		if ((r = cb(ctx, col_text(st, 0), col_text(st, 1), sqlite3_column_int64(st, 2))) !=
		    0)
			break;
	sqlite3_finalize(st);
	if (r == 0 && rc != SQLITE_DONE) return sqlerr(q, err, "reading traps");
	return r < 0 ? -1 : 0;
}

static int sq_meta_get(struct listing_store *s, const char *key, char *buf, size_t n,
                       struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(q->db, "SELECT value FROM meta WHERE key = ?", -1, &st, NULL) !=
	    SQLITE_OK)
		return sqlerr(q, err, "reading meta");
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st), found = 0;
	if (rc == SQLITE_ROW) {
		const char *v = col_text(st, 0);
		snprintf(buf, n, "%s", v ? v : "");
		found = 1;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) return sqlerr(q, err, "reading meta");
	return found;
}

static int sq_meta_set(struct listing_store *s, const char *key, const char *value,
                       struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(q->db, "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", -1,
	                       &st, NULL) != SQLITE_OK)
		return sqlerr(q, err, "writing meta");
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
	return run1(q, st, "writing meta", err);
}

static int sq_data_version(struct listing_store *s, uint64_t *v, struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(q->db, "PRAGMA data_version", -1, &st, NULL) != SQLITE_OK)
		return sqlerr(q, err, "reading data_version");
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) *v = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW) return sqlerr(q, err, "reading data_version");
	return 0;
}

static int sq_limit_memory(struct listing_store *s, struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	if (exec(q, "PRAGMA cache_size=-64", err) < 0 || exec(q, "PRAGMA mmap_size=0", err) < 0) return -1;
	for (unsigned i = 0; i < sizeof q->scan / sizeof q->scan[0]; i++) {
		sqlite3_finalize(q->scan[i].st);
		q->scan[i].st = NULL;
	}
	sqlite3_finalize(q->range.st);
	q->range.st = NULL;
	sqlite3_db_release_memory(q->db);
	return 0;
}

static int sq_active_scan(struct listing_store *s, int level, int bulk,
                          int (*cb)(void *ctx, const char *key, int64_t expires, const char *ranges),
                          void *ctx, struct base_err *err)
{
	struct sqlite_store *q = (struct sqlite_store *)s;
	sqlite3_stmt *st;
	/* "+": a scan of most of the table goes in table order; fetching each
	 * row through an index costs a random seek per row (see listings_scan) */
	const char *sql = bulk ? "SELECT key, expires, ranges FROM listings WHERE +state = ?1 AND +level = ?2"
	                       : "SELECT key, expires, ranges FROM listings WHERE +state = ?1 AND level = ?2";
	if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK)
		return sqlerr(q, err, "scanning active listings");
	sqlite3_bind_int(st, 1, LISTING_ACTIVE);
	sqlite3_bind_int(st, 2, level);
	int rc, r = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *key = col_text(st, 0);
		if (!key) continue;
		if ((r = cb(ctx, key, sqlite3_column_int64(st, 1), col_text(st, 2))) != 0) break;
	}
	if (r == 0 && rc != SQLITE_DONE) r = sqlerr(q, err, "scanning active listings");
	sqlite3_finalize(st);
	return r < 0 ? -1 : 0;
}

static const struct listing_store_ops sqlite_ops = {
    .name = "sqlite",
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .close = sq_close,
    .version = sq_version,
    .impact_insert = sq_impact_insert,
    .impacts_window = sq_impacts_window,
    .impacts_of_ip = sq_impacts_of_ip,
    .impacts_after_id = sq_impacts_after_id,
    .impacts_max_id = sq_impacts_max_id,
    .impacts_range = sq_impacts_range,
    .listings_scan = sq_listings_scan,
    .listing_insert = sq_listing_insert,
    .listing_update = sq_listing_update,
    .listings_count = sq_listings_count,
    .floor_set = sq_floor_set,
    .floors_scan = sq_floors_scan,
    .delist_record = sq_delist_record,
    .delist_count = sq_delist_count,
    .trap_add = sq_trap_add,
    .traps_scan = sq_traps_scan,
    .meta_get = sq_meta_get,
    .meta_set = sq_meta_set,
    .data_version = sq_data_version,
    .limit_memory = sq_limit_memory,
    .active_scan = sq_active_scan,
};

int listing_store_open_sqlite(const char *path, struct listing_store **out, struct base_err *err)
{
	struct sqlite_store *q = base_xcalloc(1, sizeof *q);
	q->base.ops = &sqlite_ops;
	if (sqlite3_open_v2(path, &q->db,
	                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
	                    NULL) != SQLITE_OK) {
		base_errf(err, "%s: cannot open store: %s", path,
		          q->db ? sqlite3_errmsg(q->db) : "out of memory");
		sqlite3_close(q->db);
		free(q);
		return -1;
	}
	sqlite3_busy_timeout(q->db, 10000);
	/* A page cache large enough for the random-order index inserts of bulk
	 * imports and refreshes; big scans read through mmap. */
	if (exec(q, "PRAGMA journal_mode=WAL", err) < 0 ||
	    exec(q, "PRAGMA synchronous=FULL", err) < 0 ||
	    exec(q, "PRAGMA cache_size=-131072", err) < 0 ||
	    exec(q, "PRAGMA mmap_size=1073741824", err) < 0 ||
	    exec(q, "PRAGMA foreign_keys=ON", err) < 0 || migrate(q, err) < 0)
		goto fail;
	if (sqlite3_prepare_v2(q->db,
	                       "INSERT INTO impacts(time, ip, trap, source, helo, mail_from, rcpt,"
	                       " message_id, subject, headers) VALUES(?,?,?,?,?,?,?,?,?,?)",
	                       -1, &q->ins_impact, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(
	        q->db,
	        "INSERT INTO listings(level, key, state, reason, listed_at, first_seen,"
	        " last_seen, expires, removed_at, impacts, evidence, ranges)"
	        " VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
	        -1, &q->ins_listing, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(
	        q->db,
	        "UPDATE listings SET level=?1, key=?2, state=?3, reason=?4, listed_at=?5,"
	        " first_seen=?6, last_seen=?7, expires=?8, removed_at=?9, impacts=?10,"
	        " evidence=?11, ranges=?12 WHERE id=?13",
	        -1, &q->upd_listing, NULL) != SQLITE_OK) {
		sqlerr(q, err, "preparing statements");
		goto fail;
	}
	*out = &q->base;
	return 0;
fail:
	sq_close(&q->base);
	return -1;
}

int listing_store_open(const char *path, struct listing_store **out, struct base_err *err)
{
	return listing_store_open_sqlite(path, out, err);
}

void listing_store_close(struct listing_store *s)
{
	if (s) s->ops->close(s);
}

int listing_store_version(struct listing_store *s)
{
	return s->ops->version(s);
}
