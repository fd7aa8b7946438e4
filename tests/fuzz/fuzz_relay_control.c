/*
 * fuzz_relay_control.c — libFuzzer target for the relay's control
 * protocol parser (control.h), which reads requests from the control
 * socket and the lines of SPOOL/suspended. Each input line is parsed;
 * a refusal must say something; an accepted request must be one of the
 * documented forms, with a bounded, printable, space-free name, and a
 * suspension written back the way the relay saves it must parse to the
 * same request, and so must a list's cursor.
 */
#include <stdlib.h>
#include <string.h>

#include "relay/control.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one(const char *line, size_t len)
{
	struct relay_ctl_req q;
	struct base_err err;
	if (relay_ctl_parse(line, len, &q, &err) < 0) {
		if (!err.msg[0]) abort();
		return;
	}
	if (len > RELAY_CTL_LINE_MAX + 1) abort();
	size_t n = strlen(q.name);
	if (n > RELAY_CTL_NAME_MAX) abort();
	for (size_t i = 0; i < n; i++)
		if (q.name[i] <= ' ' || q.name[i] > '~') abort();
	switch (q.op) {
	case RELAY_CTL_SUMMARY:
		if (q.kind != RELAY_CTL_NONE) abort();
		break;
	case RELAY_CTL_LIST: {
		if (q.limit == 0 || q.limit > RELAY_CTL_LIST_MAX) abort();
		if (!q.after) break;
		/* a cursor as `mailrep queue --after` sends it back */
		char again[64];
		int k = snprintf(again, sizeof again, "list %u after %llu", q.limit,
		                 (unsigned long long)q.after);
		struct relay_ctl_req r;
		if (relay_ctl_parse(again, (size_t)k, &r, &err) < 0) abort();
		if (r.limit != q.limit || r.after != q.after) abort();
		break;
	}
	case RELAY_CTL_SUSPEND:
	case RELAY_CTL_RESUME: {
		if (q.kind != RELAY_CTL_DOMAIN && q.kind != RELAY_CTL_SITE &&
		    q.kind != RELAY_CTL_POOL && q.kind != RELAY_CTL_ACCOUNT)
			abort();
		if (!n || (q.until && q.secs) || q.until < 0) abort();
		if (q.op == RELAY_CTL_RESUME) break;
		/* as SPOOL/suspended holds it */
		char saved[RELAY_CTL_LINE_MAX + 1];
		int k = snprintf(saved, sizeof saved, "suspend %s %s", relay_ctl_kind_name(q.kind),
		                 q.name);
		if (q.until)
			k += snprintf(saved + k, sizeof saved - (size_t)k, " @%lld",
			              (long long)q.until);
		struct relay_ctl_req r;
		if (relay_ctl_parse(saved, (size_t)k, &r, &err) < 0) abort();
		if (r.op != q.op || r.kind != q.kind || strcmp(r.name, q.name) ||
		    r.until != q.until)
			abort();
		break;
	}
	case RELAY_CTL_BOUNCE:
		if ((q.kind != RELAY_CTL_ID && q.kind != RELAY_CTL_DOMAIN &&
		     q.kind != RELAY_CTL_ACCOUNT) ||
		    !n)
			abort();
		break;
	case RELAY_CTL_RETRY:
		if (q.kind == RELAY_CTL_ALL
		        ? n != 0
		        : (q.kind != RELAY_CTL_ID && q.kind != RELAY_CTL_DOMAIN) || !n)
			abort();
		break;
	default:
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 8192) return 0;
	const char *p = (const char *)data, *end = p + size;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = (size_t)((nl ? nl : end) - p);
		one(p, len);
		p += len + 1;
	}
	return 0;
}
