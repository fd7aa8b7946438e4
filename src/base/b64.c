/*
 * b64.c — the one base64 decoder (RFC 4648 §4 alphabet), with the two
 * rules its callers need: strict for SASL and stored hashes, and DKIM's
 * (white space folded anywhere, a loose end).
 *
 * Characters are taken one by one into a bit accumulator; k counts the
 * alphabet characters and pad the '=' after them (nothing but white space
 * may follow a '='). Whether the end is acceptable is decided from k % 4
 * and pad alone: strict allows pad 0, or exactly up to what completes the
 * last quantum (k % 4 == 2: up to 2; k % 4 == 3: up to 1), and never
 * k % 4 == 1; lax allows pad up to 2 unless k % 4 == 0.
 */
#include "base/base.h"

static int b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z') return c - 'A';
	if (c >= 'a' && c <= 'z') return c - 'a' + 26;
	if (c >= '0' && c <= '9') return c - '0' + 52;
	if (c == '+') return 62;
	if (c == '/') return 63;
	return -1;
}

long base_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap, unsigned flags)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t o = 0, k = 0, pad = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		if ((flags & BASE_B64_SKIP_FWS) &&
		    (c == ' ' || c == '\t' || c == '\r' || c == '\n'))
			continue;
		if (c == '=') {
			pad++;
			continue;
		}
		int v = b64val(c);
		if (v < 0 || pad) return -1;
		k++;
		acc = (acc << 6 | (uint32_t)v) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o >= cap) return -1;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	if (flags & BASE_B64_LAX_END) {
		if (pad > 2 || (pad && k % 4 == 0)) return -1;
	} else {
		if (k % 4 == 1 || pad > (4 - k % 4) % 4) return -1;
	}
	return (long)o;
}
