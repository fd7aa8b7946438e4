/*
 * shapestate.h — the line format of SPOOL/shaping, the shaping state that
 * outlives a restart: back-off suspensions and throttle rules in force,
 * one line each, written by the relay and read back at its start (and by
 * the fuzzer and the unit tests). Private to src/relay/.
 *
 *   suspend site=HOST port=PORT pool=NAME|- source=IP|- until=UNIXTIME rule=NAME|-
 *   throttle site=HOST port=PORT pool=NAME|- source=IP|- until=UNIXTIME rule=NAME
 *
 * HOST is the destination's site (a static route's host, or the sorted MX
 * host names, comma-separated), `pool=-` a destination without a pool,
 * `source=-` the whole destination (else the one source address held
 * back), `rule=-` a back-off after a 4xx greeting or a 421 (a suspend
 * line only). Every word is there, in this order, separated by single
 * spaces; a line starting with '#' and an empty line say nothing.
 */
#ifndef MAILREP_RELAY_SHAPESTATE_H
#define MAILREP_RELAY_SHAPESTATE_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#define RELAY_SHAPE_FILE     "shaping"
#define RELAY_SHAPE_LINE_MAX 1024
#define RELAY_SHAPE_BYTES    (1u << 20) /* a longer file is read up to here */
#define RELAY_SHAPE_LAZY     60         /* seconds a moved end may wait to be written */

enum relay_shape_kind { RELAY_SHAPE_NONE, RELAY_SHAPE_SUSPEND, RELAY_SHAPE_THROTTLE };

struct relay_shape_entry {
	enum relay_shape_kind kind; /* NONE: a comment or an empty line */
	char site[RELAY_SHAPE_LINE_MAX];
	uint16_t port;
	char pool[65];   /* "": none */
	char source[64]; /* "": the whole destination */
	char rule[65];   /* "": none (a back-off) */
	int64_t until;
};

/* Parses one line (without its LF; len bytes, may hold NULs) into e.
 * Returns 0, or -1 with err saying what is wrong and at which byte. */
int relay_shape_parse(const char *line, size_t len, struct relay_shape_entry *e,
                      struct base_err *err);
/* Appends e as one line, LF included. */
void relay_shape_format(const struct relay_shape_entry *e, struct base_buf *b);

#endif
