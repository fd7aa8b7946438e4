/*
 * policy.c — the relay's small pure rules: the retry schedule (delays per
 * attempt with jitter, maximum age) and the forward-path check that keeps
 * the relay from being tricked into a second routing step (the %-hack,
 * source routes, quoted local parts holding '@', "user@a@b", bang paths).
 */
#include <string.h>

#include "relay/relay.h"

void relay_schedule_default(struct relay_schedule *s)
{
	/* RFC 5321 4.5.4.1: retry at least 30 minutes apart, give up after
	 * 4-5 days; the first retry comes early for greylisting. */
	static const uint32_t d[] = {600, 1800, 3600, 7200, 14400};
	memset(s, 0, sizeof *s);
	memcpy(s->delay, d, sizeof d);
	s->n = sizeof d / sizeof d[0];
	s->max_age = 5 * 86400;
}

int relay_schedule_parse(struct relay_schedule *s, const char *text, struct base_err *err)
{
	struct relay_schedule t;
	memset(&t, 0, sizeof t);
	t.max_age = s->max_age;
	const char *p = text;
	while (*p) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		char term[32];
		if (n == 0 || n >= sizeof term)
			return base_errf(err, "retry schedule '%s': bad term", text);
		if (t.n == RELAY_SCHEDULE_MAX)
			return base_errf(err, "retry schedule '%s': more than %d terms", text,
			                 RELAY_SCHEDULE_MAX);
		memcpy(term, p, n);
		term[n] = 0;
		struct base_err e2;
		if (base_parse_duration(term, &t.delay[t.n], &e2) < 0 || t.delay[t.n] == 0)
			return base_errf(err, "retry schedule '%s': bad duration '%s'", text, term);
		t.n++;
		p += n + (comma ? 1 : 0);
		if (comma && !*p)
			return base_errf(err, "retry schedule '%s': trailing comma", text);
	}
	if (t.n == 0) return base_errf(err, "retry schedule is empty");
	*s = t;
	return 0;
}

int64_t relay_schedule_next(const struct relay_schedule *s, uint32_t attempts, int64_t now,
                            uint32_t rnd)
{
	uint32_t i = attempts == 0 ? 0 : attempts - 1;
	uint32_t d = s->delay[i < s->n ? i : s->n - 1];
	uint32_t jitter = d >= 8 ? rnd % (d / 8 + 1) : 0;
	return now + d + jitter;
}

int relay_check_rcpt(const char *path, struct base_err *err)
{
	const char *at = strchr(path, '@');
	if (!at || at == path) return base_errf(err, "5.1.3 address must be local-part@domain");
	if (strchr(at + 1, '@')) return base_errf(err, "5.1.3 more than one '@' in address");
	if (path[0] == '@' || strchr(path, ':'))
		return base_errf(err, "5.1.3 source routes are not accepted");
	if (strpbrk(path, "%!\"\\"))
		return base_errf(err, "5.1.3 '%%', '!', quotes and backslashes are not accepted");
	const char *d = at + 1;
	size_t dl = strlen(d);
	if (dl == 0 || d[dl - 1] == '.' || d[0] == '.' || strstr(d, ".."))
		return base_errf(err, "5.1.2 bad domain");
	for (const char *c = d; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9') || *c == '-' || *c == '.' ||
		      (unsigned char)*c >= 0x80))
			return base_errf(err, "5.1.2 bad domain");
	return 0;
}
