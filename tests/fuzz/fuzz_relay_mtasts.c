/*
 * fuzz_relay_mtasts.c — libFuzzer target for the MTA-STS parsers: the
 * first byte picks the _mta-sts TXT record, the policy file, the HTTPS
 * response (and the policy in its body, as the relay reads them one after
 * the other) or the cache file. Invariants checked: an accepted TXT record
 * has an id of 1 to 32 letters and digits; an accepted policy has a mode,
 * max_age within a year, and mx patterns that are lower case and match
 * themselves (a wildcard: with one label put in front); an accepted
 * response's body lies inside the input and within 64 KB; every error is
 * a non-empty message.
 */
#include <stdlib.h>
#include <string.h>

#include "relay/mtasts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_policy(const struct mtasts_policy *p)
{
	if (p->mode != MTASTS_NONE && p->mode != MTASTS_TESTING && p->mode != MTASTS_ENFORCE)
		abort();
	if (p->max_age > MTASTS_MAX_AGE_MAX || p->nmx > MTASTS_MX_MAX) abort();
	if (p->mode != MTASTS_NONE && !p->nmx) abort();
	for (size_t i = 0; i < p->nmx; i++) {
		const char *m = p->mx[i];
		char host[300];
		if (m[0] == '*')
			snprintf(host, sizeof host, "x%s", m + 1);
		else
			snprintf(host, sizeof host, "%s", m);
		for (const char *c = m; *c; c++)
			if (*c >= 'A' && *c <= 'Z') abort();
		if (!mtasts_mx_match(p, host)) abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > MTASTS_RESPONSE_MAX) return 0;
	const char *text = (const char *)data + 1;
	size_t len = size - 1;
	struct base_err err;
	err.msg[0] = 0;
	static struct mtasts_policy p;
	switch (data[0] % 4) {
	case 0: {
		char id[MTASTS_ID_MAX + 1];
		int r = mtasts_txt_parse(text, len, id, &err);
		if (r == 1) {
			size_t n = strlen(id);
			if (!n || n > MTASTS_ID_MAX) abort();
			for (size_t i = 0; i < n; i++)
				if (!((id[i] >= 'a' && id[i] <= 'z') ||
				      (id[i] >= 'A' && id[i] <= 'Z') ||
				      (id[i] >= '0' && id[i] <= '9')))
					abort();
		} else if (r < 0 && !err.msg[0]) {
			abort();
		}
		break;
	}
	case 1:
		if (mtasts_policy_parse(text, len, &p, &err) == 0)
			check_policy(&p);
		else if (!err.msg[0])
			abort();
		break;
	case 2: {
		const char *body;
		size_t blen;
		if (mtasts_http_parse(text, len, &body, &blen, &err) == 0) {
			if (body < text || body + blen > text + len || blen > MTASTS_BODY_MAX)
				abort();
			if (mtasts_policy_parse(body, blen, &p, &err) == 0) check_policy(&p);
		} else if (!err.msg[0]) {
			abort();
		}
		break;
	}
	default: {
		char id[MTASTS_ID_MAX + 1];
		int64_t fetched;
		if (mtasts_cache_parse(text, len, id, &fetched, &p, &err) == 0)
			check_policy(&p);
		else if (!err.msg[0])
			abort();
		break;
	}
	}
	return 0;
}
