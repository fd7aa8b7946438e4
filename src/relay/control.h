/*
 * control.h — the relay's control protocol, shared by the daemon (which
 * answers on the UNIX socket SPOOL/control), `mailrep queue` (which asks)
 * and the fuzzer (which attacks the parser).
 *
 * One request line (at most RELAY_CTL_LINE_MAX bytes before the LF; a CR
 * before it is allowed), words of printable ASCII separated by single
 * spaces; the relay answers with one JSON object and closes:
 *
 *   summary                                   counts by domain, site, pool, account
 *   list [LIMIT] [after CURSOR]               the newest messages (LIMIT: 1000 by
 *                                             default, at most RELAY_CTL_LIST_MAX);
 *                                             after CURSOR: those older than the
 *                                             page whose reply gave "next": CURSOR
 *   suspend domain|site|pool|account NAME [DURATION|@UNIXTIME]   hold mail
 *   resume domain|site|pool|account NAME
 *   bounce id|domain|account NAME             final bounce with a DSN to the sender
 *   retry id ID | retry domain NAME | retry all          due now
 *
 * Every reply has "ok" (true or false); a refusal has "error". The file
 * SPOOL/suspended holds the suspensions as `suspend` lines with @UNIXTIME
 * (none: until resumed), read with the same parser.
 */
#ifndef MAILREP_RELAY_CONTROL_H
#define MAILREP_RELAY_CONTROL_H

#include "base/base.h"

#define RELAY_CTL_LINE_MAX 1024
#define RELAY_CTL_NAME_MAX 255
/* A list reply holds at most this many messages, and no more messages once
 * it holds this many recipients: the relay's loop builds it at once. */
#define RELAY_CTL_LIST_MAX  10000u
#define RELAY_CTL_SOCKET    "control"
#define RELAY_CTL_SUSPENDED "suspended"

enum relay_ctl_op {
	RELAY_CTL_SUMMARY,
	RELAY_CTL_LIST,
	RELAY_CTL_SUSPEND,
	RELAY_CTL_RESUME,
	RELAY_CTL_BOUNCE,
	RELAY_CTL_RETRY,
};

enum relay_ctl_kind {
	RELAY_CTL_NONE,
	RELAY_CTL_DOMAIN,
	RELAY_CTL_SITE,
	RELAY_CTL_POOL,
	RELAY_CTL_ID,
	RELAY_CTL_ALL,
	RELAY_CTL_ACCOUNT, /* the account that submitted the mail (AUTH) */
};

struct relay_ctl_req {
	enum relay_ctl_op op;
	enum relay_ctl_kind kind;
	char name[RELAY_CTL_NAME_MAX + 1]; /* domains lowercased */
	uint32_t secs;                     /* suspend: a duration (0: none given) */
	int64_t until;                     /* suspend: @UNIXTIME (0: none given) */
	uint32_t limit;                    /* list */
	uint64_t after;                    /* list: the cursor (0: from the newest) */
};

/* Parses one request (line without its LF; len bytes, may hold NULs).
 * Returns 0, or -1 with err saying what is wrong and at which word. */
int relay_ctl_parse(const char *line, size_t len, struct relay_ctl_req *q, struct base_err *err);
const char *relay_ctl_op_name(enum relay_ctl_op op);
const char *relay_ctl_kind_name(enum relay_ctl_kind k);

/* Sends one request to the relay running on spool dir and reads the whole
 * reply into out. Returns 1 when answered, 0 when no relay listens there
 * (no socket, or a stale one), -1 with err otherwise. */
int relay_ctl_call(const char *dir, const char *line, struct base_buf *out, struct base_err *err);

#endif
