/*
 * shape.c — rate limits and weighted source selection for the relay (see
 * shape.h). The rate limiter is GCRA: one timestamp per bucket, integer
 * nanoseconds, no refill timer; a caller told "wait N ns" arms its own
 * timer for that long and asks again.
 */
#include "relay/shape.h"

void relay_rate_init(struct relay_rate *r, uint32_t count, uint64_t period_ns)
{
	r->tat = 0;
	if (!count || !period_ns) {
		r->interval_ns = 0;
		r->burst = 1;
		return;
	}
	r->interval_ns = period_ns / count ? period_ns / count : 1;
	/* one second's worth, at least one */
	uint64_t per_sec = (uint64_t)count * 1000000000ull / period_ns;
	r->burst = per_sec > 1 ? (uint32_t)(per_sec > 1000000 ? 1000000 : per_sec) : 1;
}

int64_t relay_rate_wait(const struct relay_rate *r, int64_t now_ns)
{
	if (!r->interval_ns) return 0;
	int64_t tat = r->tat > now_ns ? r->tat : now_ns;
	int64_t slack = (int64_t)(r->burst - 1) * (int64_t)r->interval_ns;
	return tat - now_ns > slack ? tat - now_ns - slack : 0;
}

int64_t relay_rate_take(struct relay_rate *r, int64_t now_ns)
{
	int64_t w = relay_rate_wait(r, now_ns);
	if (w || !r->interval_ns) return w;
	r->tat = (r->tat > now_ns ? r->tat : now_ns) + (int64_t)r->interval_ns;
	return 0;
}

long relay_swrr_pick(const uint32_t *weight, int64_t *current, const unsigned char *eligible,
                     size_t n)
{
	long best = -1;
	int64_t total = 0;
	for (size_t i = 0; i < n; i++) {
		if (eligible && !eligible[i]) continue;
		current[i] += weight[i];
		total += weight[i];
		if (best < 0 || current[i] > current[best]) best = (long)i;
	}
	if (best >= 0) current[best] -= total;
	return best;
}
