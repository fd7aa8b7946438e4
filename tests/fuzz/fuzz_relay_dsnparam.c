/*
 * fuzz_relay_dsnparam.c — libFuzzer target for the DSN extension's
 * parameters (dsnparam.h), which come from the network (MAIL and RCPT
 * commands) and from the spool ('P' records). The first byte picks the
 * parser: MAIL parameters, RCPT parameters, or the spool form. Parsed
 * values must be bounded and printable, a refusal must name the parameter,
 * and what is accepted must come back the same after being encoded again
 * (xtext for a next hop, the spool form for the spool).
 */
#include <stdlib.h>
#include <string.h>

#include "relay/dsnparam.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void printable(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n > max) abort();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e) abort();
}

/* s encoded as xtext decodes to s again */
static void xtext_back(const char *s)
{
	struct base_buf b;
	base_buf_init(&b);
	relay_xtext_encode(&b, s);
	char out[RELAY_DSN_ORCPT_MAX + 1];
	if (relay_xtext_decode(b.data ? b.data : "", b.len, out, sizeof out) != (int)strlen(s) ||
	    strcmp(out, s))
		abort();
	base_buf_free(&b);
}

static void named(const struct base_err *err)
{
	if (!strstr(err->msg, "RET") && !strstr(err->msg, "ENVID") && !strstr(err->msg, "NOTIFY") &&
	    !strstr(err->msg, "ORCPT"))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1) return 0;
	const char *p = (const char *)data + 1;
	size_t n = size - 1;
	struct base_err err;
	switch (data[0] % 3) {
	case 0: {
		struct relay_dsn_mail m;
		if (relay_dsn_parse_mail(p, n, &m, &err) < 0) {
			named(&err);
			break;
		}
		if (m.ret != RELAY_RET_NONE && m.ret != RELAY_RET_FULL && m.ret != RELAY_RET_HDRS)
			abort();
		printable(m.envid, RELAY_DSN_ENVID_MAX);
		xtext_back(m.envid);
		break;
	}
	case 1: {
		struct relay_dsn_rcpt r;
		if (relay_dsn_parse_rcpt(p, n, &r, &err) < 0) {
			named(&err);
			break;
		}
		if (r.notify && !(r.notify & RELAY_NOTIFY_SET)) abort();
		if ((r.notify & RELAY_NOTIFY_NEVER) &&
		    r.notify != (RELAY_NOTIFY_SET | RELAY_NOTIFY_NEVER))
			abort();
		printable(r.orcpt, RELAY_DSN_ORCPT_MAX);
		if (r.orcpt[0]) {
			const char *semi = strchr(r.orcpt, ';');
			if (!semi || semi == r.orcpt) abort();
			xtext_back(semi + 1);
		}
		break;
	}
	default: {
		struct relay_dsn_params *d;
		if (relay_dsn_decode(p, n, &d, &err) < 0) {
			if (!err.msg[0]) abort();
			break;
		}
		/* the spool form is canonical: encoding gives the same bytes */
		struct base_buf b;
		base_buf_init(&b);
		relay_dsn_encode(&b, d);
		if (b.len != n || memcmp(b.data, p, n)) abort();
		base_buf_free(&b);
		relay_dsn_params_free(d);
		break;
	}
	}
	return 0;
}
