/*
 * shape.h — the relay's traffic shaping arithmetic, kept free of I/O so the
 * unit tests can drive it with an injected clock: a rate limiter (GCRA, a
 * token bucket written as one "theoretical arrival time") and smooth
 * weighted round robin (nginx's) for choosing a pool's source address.
 * Private to src/relay/.
 */
#ifndef MAILREP_RELAY_SHAPE_H
#define MAILREP_RELAY_SHAPE_H

#include <stddef.h>
#include <stdint.h>

/* At most `count` events per `period_ns`, in bursts of at most one
 * second's worth (and at least one). count 0: unlimited.
 * Invariant: tat is when the bucket would be full again; an event at t is
 * allowed when tat - t <= (burst - 1) * interval. */
struct relay_rate {
	uint64_t interval_ns; /* period / count; 0: unlimited */
	uint32_t burst;
	int64_t tat;
};

void relay_rate_init(struct relay_rate *r, uint32_t count, uint64_t period_ns);
/* Takes one event at now_ns: 0 when allowed (and counted), else how many
 * nanoseconds until it would be (nothing is counted). */
int64_t relay_rate_take(struct relay_rate *r, int64_t now_ns);
/* The same answer without taking anything. */
int64_t relay_rate_wait(const struct relay_rate *r, int64_t now_ns);

/* Smooth weighted round robin over n candidates: weight[i] >= 1, current[i]
 * the running state (start at 0), eligible[i] whether candidate i may be
 * chosen now (NULL: all). Returns the chosen index, or -1 when none is
 * eligible. Over any run of sum(weights) picks with all eligible, candidate
 * i is chosen exactly weight[i] times, interleaved. */
long relay_swrr_pick(const uint32_t *weight, int64_t *current, const unsigned char *eligible,
                     size_t n);

#endif
