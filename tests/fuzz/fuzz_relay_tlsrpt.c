/*
 * fuzz_relay_tlsrpt.c — libFuzzer target for the TLS reporting parsers:
 * the first byte picks the _smtp._tls TXT record (odd), the file of a
 * report kept for another attempt (SPOOL/tlsrpt/retry/NAME; 2 set) or the
 * state file (SPOOL/tlsrpt/DAY). Invariants checked: an accepted TXT
 * record has 1 to TLSRPT_RUA_MAX URIs, each mailto: or https: and
 * NUL-terminated within its slot; an accepted retry file has its fields
 * within their bounds, its report inside the input, and writes back to the
 * same bytes; an accepted state file stays within the counters' bounds,
 * writes back to a file that parses again to the same text, and its JSON
 * reports build; every error is a non-empty message and leaves no domain.
 */
#include <stdlib.h>
#include <string.h>

#include "relay/tlsrpt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_day(const struct tlsrpt_day *d)
{
	if (d->n > TLSRPT_DOMAINS_MAX || !tlsrpt_day_ok(d->day)) abort();
	struct tlsrpt_domain **v = tlsrpt_day_sorted(d);
	for (size_t i = 0; i < d->n; i++) {
		if (v[i]->npol > TLSRPT_POLICIES_MAX) abort();
		for (size_t k = 0; k < v[i]->npol; k++)
			if (v[i]->pol[k].nrows > TLSRPT_ROWS_MAX ||
			    v[i]->pol[k].nstrings > TLSRPT_STRINGS_MAX)
				abort();
		struct tlsrpt_meta meta = {"org", "contact", "id"};
		struct base_buf b;
		base_buf_init(&b);
		tlsrpt_json(d, v[i], &meta, &b);
		if (!b.len || b.data[0] != '{') abort();
		base_buf_free(&b);
	}
	free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1) return 0;
	const char *text = (const char *)data + 1;
	size_t len = size - 1;
	struct base_err err;
	err.msg[0] = 0;
	if (data[0] & 1) {
		struct tlsrpt_rua r;
		int k = tlsrpt_txt_parse(text, len, &r, &err);
		if (k == 1) {
			if (!r.n || r.n > TLSRPT_RUA_MAX) abort();
			for (size_t i = 0; i < r.n; i++) {
				if (!memchr(r.uri[i], 0, TLSRPT_URI_MAX)) abort();
				if (strncmp(r.uri[i], "mailto:", 7) &&
				    strncmp(r.uri[i], "https://", 8))
					abort();
			}
		} else if (k < 0 && !err.msg[0]) {
			abort();
		}
		return 0;
	}
	if (data[0] & 2) {
		struct tlsrpt_retry r;
		if (tlsrpt_retry_parse(text, len, &r, &err) < 0) {
			if (!err.msg[0]) abort();
			return 0;
		}
		if (!r.domain[0] || !tlsrpt_day_ok(r.day) || r.attempts > TLSRPT_ATTEMPTS_MAX ||
		    !r.len || r.len > TLSRPT_REPORT_MAX || r.report < text ||
		    r.report + r.len != text + len)
			abort();
		if (strncmp(r.uri, "mailto:", 7) && strncmp(r.uri, "https://", 8)) abort();
		struct base_buf a;
		base_buf_init(&a);
		tlsrpt_retry_format(&r, &a);
		if (a.len != len || memcmp(a.data, text, len)) abort();
		base_buf_free(&a);
		return 0;
	}
	static struct tlsrpt_day d, e;
	if (tlsrpt_state_parse(text, len, &d, &err) < 0) {
		if (!err.msg[0] || d.n) abort();
		return 0;
	}
	check_day(&d);
	struct base_buf a, b;
	base_buf_init(&a);
	base_buf_init(&b);
	tlsrpt_state_format(&d, &a);
	if (tlsrpt_state_parse(a.data, a.len, &e, &err) < 0) abort();
	tlsrpt_state_format(&e, &b);
	if (a.len != b.len || memcmp(a.data, b.data, a.len)) abort();
	base_buf_free(&a);
	base_buf_free(&b);
	tlsrpt_day_free(&d);
	tlsrpt_day_free(&e);
	return 0;
}
