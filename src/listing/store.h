/*
 * store.h — the one interface between the listing code and persistent
 * state. Policy, queries and exports call only these operations (through
 * s->ops), never SQL, so that another backend (PostgreSQL, for several trap
 * receivers and web nodes sharing one store) is a new `ops` table and an
 * open function, not a change to the policy code.
 *
 * Conventions: every operation returns 0 or -1 and fills err; scans call
 * the callback for each row and stop early (returning its value) when it
 * returns non-zero; strings passed to callbacks live until the callback
 * returns. Writes outside begin/commit are committed on their own.
 */
#ifndef MAILREP_LISTING_STORE_H
#define MAILREP_LISTING_STORE_H

#include "listing/listing.h"

typedef int (*listing_impact_cb)(void *ctx, const struct listing_impact *imp);
typedef int (*listing_record_cb)(void *ctx, const struct listing_record *rec);
typedef int (*listing_floor_cb)(void *ctx, int level, const char *key, int64_t since);

struct listing_store_ops {
	const char *name;
	int (*begin)(struct listing_store *s, struct base_err *err);
	int (*commit)(struct listing_store *s, struct base_err *err);
	void (*rollback)(struct listing_store *s);
	void (*close)(struct listing_store *s);
	int (*version)(struct listing_store *s);

	int (*impact_insert)(struct listing_store *s, const struct listing_impact *imp, int64_t *id,
	                     struct base_err *err);
	/* Impacts with after < time <= upto, id/time/ip only, in no particular order. */
	int (*impacts_window)(struct listing_store *s, int64_t after, int64_t upto,
	                      listing_impact_cb cb, void *ctx, struct base_err *err);
	/* Impacts with id > after_id (id/time/ip only), and the largest id (0 if none). */
	int (*impacts_after_id)(struct listing_store *s, int64_t after_id, listing_impact_cb cb,
	                        void *ctx, struct base_err *err);
	int (*impacts_max_id)(struct listing_store *s, int64_t *id, struct base_err *err);
	/* Impacts of addresses lo..hi (both of one family, inclusive) with
	 * after < time <= upto, id/time/ip only. */
	int (*impacts_range)(struct listing_store *s, const struct listing_ip *lo,
	                     const struct listing_ip *hi, int64_t after, int64_t upto,
	                     listing_impact_cb cb, void *ctx, struct base_err *err);
	/* An IP's impacts with time <= upto, newest first, at most limit, all fields. */
	int (*impacts_of_ip)(struct listing_store *s, const struct listing_ip *ip, int64_t upto,
	                     unsigned limit, listing_impact_cb cb, void *ctx, struct base_err *err);

	/* Listings: state < 0 scans every state; level 0 every level; key NULL every key. */
	int (*listings_scan)(struct listing_store *s, int state, int level, const char *key,
	                     listing_record_cb cb, void *ctx, struct base_err *err);
	int (*listing_insert)(struct listing_store *s, struct listing_record *rec,
	                      struct base_err *err);
	int (*listing_update)(struct listing_store *s, const struct listing_record *rec,
	                      struct base_err *err);
	/* Counts for statistics: listings of a level (0: all) that began / ended
	 * in (after, upto], and ACTIVE ones. */
	int (*listings_count)(struct listing_store *s, int level, int64_t after, int64_t upto,
	                      uint64_t *began, uint64_t *ended, uint64_t *active,
	                      struct base_err *err);

	/* Delist floors: impacts at or before `since` no longer count for (level, key). */
	int (*floor_set)(struct listing_store *s, int level, const char *key, int64_t since,
	                 struct base_err *err);
	int (*floors_scan)(struct listing_store *s, listing_floor_cb cb, void *ctx,
	                   struct base_err *err);

	int (*delist_record)(struct listing_store *s, int64_t time, const char *ip,
	                     const char *kind, const char *outcome, const char *note,
	                     struct base_err *err);
	/* Requests after `after`; ip NULL counts all, kind NULL any kind. */
	int (*delist_count)(struct listing_store *s, const char *ip, const char *kind,
	                    int64_t after, uint64_t *n, struct base_err *err);

	int (*trap_add)(struct listing_store *s, const char *address, const char *kind, int64_t now,
	                struct base_err *err);
	int (*traps_scan)(struct listing_store *s,
	                  int (*cb)(void *ctx, const char *address, const char *kind,
	                            int64_t created),
	                  void *ctx, struct base_err *err);

	/* Small named values (refresh bookkeeping); get returns 1 if found, 0 if not. */
	int (*meta_get)(struct listing_store *s, const char *key, char *buf, size_t n,
	                struct base_err *err);
	int (*meta_set)(struct listing_store *s, const char *key, const char *value,
	                struct base_err *err);
	/* A number that changes whenever another connection (another process)
	 * has committed since the last call; cheap enough to poll many times a
	 * second. Live DNS zones use it to notice new impacts. */
	int (*data_version)(struct listing_store *s, uint64_t *v, struct base_err *err);
	/* For a long-running reader that scans now and then (a live DNS zone):
	 * keep little of the database in memory between scans; called again
	 * after each scan, it gives back what the scan cached. */
	int (*limit_memory)(struct listing_store *s, struct base_err *err);
	/* The ACTIVE listings of one level, only what a DNS zone needs: key,
	 * expiry and (Levels 2, 3) the ranges. Several times faster than
	 * listings_scan, which reads every column. bulk: the level holds most
	 * of the table (Level 1), so read it in table order, not by index. */
	int (*active_scan)(struct listing_store *s, int level, int bulk,
	                   int (*cb)(void *ctx, const char *key, int64_t expires, const char *ranges),
	                   void *ctx, struct base_err *err);
};

/* Every backend's handle starts with this. */
struct listing_store {
	const struct listing_store_ops *ops;
};

int listing_store_open_sqlite(const char *path, struct listing_store **out, struct base_err *err);
/* The number of schema migrations the SQLite backend knows. */
int listing_sqlite_schema_latest(void);

#endif
