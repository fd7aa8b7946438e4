/*
 * time.c — durations in rbldnsd's units, ISO 8601 instants, and the clock.
 *
 * base_now() is the only place that reads the wall clock, so that every
 * command honours MAILREP_NOW and tests can move time without sleeping.
 */
#include "base/base.h"

#include <stdlib.h>
#include <string.h>

int base_parse_duration(const char *s, uint32_t *out, struct base_err *err)
{
	const char *p = s;
	uint64_t total = 0;
	if (!*p) return base_errf(err, "empty time value");
	while (*p) {
		uint64_t v;
		int n = base_parse_uint(p, UINT32_MAX, &v);
		if (n < 0) return base_errf(err, "bad time value '%s'", s);
		p += n;
		uint64_t mult = 1;
		switch (base_lower(*p)) {
		case 's': mult = 1; p++; break;
		case 'm': mult = 60; p++; break;
		case 'h': mult = 3600; p++; break;
		case 'd': mult = 86400; p++; break;
		case 'w': mult = 604800; p++; break;
		case '\0': break;
		default: return base_errf(err, "bad time unit in '%s'", s);
		}
		total += v * mult;
		if (total > UINT32_MAX) return base_errf(err, "time value '%s' too large", s);
	}
	*out = (uint32_t)total;
	return 0;
}

static int digits(const char *s, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9') return -1;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 0;
}

/* Days since 1970-01-01 for a proleptic Gregorian date (no timezone games). */
static int64_t days_from_civil(int y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

int base_valid_date(int y, int m, int d)
{
	static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (m < 1 || m > 12 || d < 1) return 0;
	int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return d <= mdays[m - 1] + (m == 2 && leap);
}

int base_parse_iso8601(const char *s, time_t *out)
{
	int y, mo, d, h = 0, mi = 0, sec = 0;
	size_t len = strlen(s);
	if (len < 10 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) || s[7] != '-' ||
	    digits(s + 8, 2, &d))
		return -1;
	const char *p = s + 10;
	if (*p == 'T' || *p == 't' || *p == ' ') {
		p++;
		if (strlen(p) < 5 || digits(p, 2, &h) || p[2] != ':' || digits(p + 3, 2, &mi)) return -1;
		p += 5;
		if (*p == ':') {
			if (digits(p + 1, 2, &sec)) return -1;
			p += 3;
			if (*p == '.') {
				p++;
				while (*p >= '0' && *p <= '9') p++;
			}
		}
	}
	int64_t offset = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int oh, om;
		int sign = *p == '-' ? -1 : 1;
		if (digits(p + 1, 2, &oh)) return -1;
		const char *q = p + 3;
		if (*q == ':') q++;
		if (digits(q, 2, &om) || oh > 23 || om > 59) return -1;
		offset = sign * (oh * 3600 + om * 60);
		p = q + 2;
	}
	if (*p) return -1;
	if (!base_valid_date(y, mo, d) || h > 23 || mi > 59 || sec > 60) return -1;
	*out = (time_t)(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset);
	return 0;
}

time_t base_now(void)
{
	const char *fixed = getenv("MAILREP_NOW");
	time_t t;
	if (!fixed || !*fixed) return time(NULL);
	if (!strncmp(fixed, "file:", 5)) {
		/* a clock that a test moves while the program runs: the file
		 * holds an ISO 8601 instant and is read on every call */
		char buf[64] = "";
		FILE *f = fopen(fixed + 5, "r");
		if (f) {
			if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
			fclose(f);
		}
		buf[strcspn(buf, "\r\n")] = 0;
		if (base_parse_iso8601(buf, &t) == 0) return t;
		return time(NULL);
	}
	if (base_parse_iso8601(fixed, &t) == 0) return t;
	return time(NULL);
}

uint64_t base_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
