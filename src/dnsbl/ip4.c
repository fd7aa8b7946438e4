/*
 * ip4.c — the address forms rbldnsd data files use.
 *
 * IPv4 prefixes are 1..4 decimal octets ("127.0.0" is 127.0.0.0/24),
 * ranges are "P-Q" (a one-octet Q replaces P's last octet), and CIDRs are
 * "P/n". IPv6 addresses follow RFC 4291 text with "::", and trailing zero
 * groups may be left out ("2001:db8:1" is 2001:db8:1::/48).
 */
#include "dnsbl/int.h"

#include <string.h>

/* Parses 1..4 octets; returns the number of octets, or -1. */
int ip4_parse_prefix(const char *s, uint32_t *addr, const char **end)
{
	uint32_t a = 0;
	int oct = 0;
	for (;;) {
		if (*s < '0' || *s > '9') return -1;
		unsigned v = 0;
		while (*s >= '0' && *s <= '9') {
			v = v * 10 + (unsigned)(*s++ - '0');
			if (v > 255) return -1;
		}
		a = (a << 8) | v;
		oct++;
		if (*s != '.' || oct == 4) break;
		s++;
	}
	*addr = a << (8 * (4 - oct));
	*end = s;
	return oct;
}

static int ends_entry(char c)
{
	return !c || c == ' ' || c == '\t' || c == '#' || c == ';' || c == ':';
}

/* Returns the prefix bits (32 for ranges), or -1. */
int ip4_parse_range(const char *s, uint32_t *pa, uint32_t *pb, const char **end)
{
	uint32_t a, b;
	const char *e;
	int oa = ip4_parse_prefix(s, &a, &e);
	if (oa < 0) return -1;
	if (*e == '-') {
		uint32_t q;
		int ob = ip4_parse_prefix(e + 1, &q, &e);
		if (ob < 0) return -1;
		if (ob == 1) {
			unsigned shift = 8 * (4 - (unsigned)oa);
			uint32_t v = q >> 24;
			uint32_t high = oa == 1 ? 0 : (a & ~(0xffffffffu >> (8 * (oa - 1))));
			b = high | (v << shift);
		} else if (ob == oa) {
			b = q;
		} else {
			return -1;
		}
		if (oa < 4) b |= 0xffffffffu >> (8 * oa);
		if (a > b) return -1;
		*pa = a;
		*pb = b;
		*end = e;
		return 32;
	}
	if (*e == '/') {
		uint64_t n;
		int k = base_parse_uint(e + 1, 32, &n);
		if (k < 0) return -1;
		*pa = a;
		*pb = a | (n >= 32 ? 0 : (0xffffffffu >> n));
		*end = e + 1 + k;
		return (int)n;
	}
	if (oa == 1) return -1;
	*pa = a;
	*pb = a | (oa == 4 ? 0 : (0xffffffffu >> (8 * oa)));
	*end = e;
	return 8 * oa;
}

/* inet_aton-like: "a" is 0.0.0.a, "a.b" is a.0.0.b, "a.b.c" is a.b.0.c.
 * Returns the number of parts given, or -1. */
int ip4_parse_addr(const char *s, uint32_t *addr, const char **end)
{
	unsigned part[4];
	int n = 0;
	for (;;) {
		if (*s < '0' || *s > '9') return -1;
		unsigned v = 0;
		while (*s >= '0' && *s <= '9') {
			v = v * 10 + (unsigned)(*s++ - '0');
			if (v > 255) return -1;
		}
		part[n++] = v;
		if (*s != '.' || n == 4) break;
		s++;
	}
	uint32_t a;
	switch (n) {
	case 1: a = part[0]; break;
	case 2: a = (part[0] << 24) | part[1]; break;
	case 3: a = (part[0] << 24) | (part[1] << 16) | part[2]; break;
	default: a = (part[0] << 24) | (part[1] << 16) | (part[2] << 8) | part[3]; break;
	}
	*addr = a;
	*end = s;
	return n;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9') return c - '0';
	c = base_lower(c);
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	return -1;
}

/* Parses an IPv6 address; groups left out at the end are zero. Returns the
 * number of bits given explicitly (16 per group; 128 with "::"), or -1. */
int ip6_parse(const char *s, uint8_t out[16], unsigned *bits, const char **end)
{
	uint16_t head[8], tail[8];
	unsigned nh = 0, nt = 0;
	int dcolon = 0;
	const char *p = s;
	if (p[0] == ':' && p[1] == ':') {
		dcolon = 1;
		p += 2;
	}
	for (;;) {
		int h = hexval(*p);
		if (h < 0) break;
		unsigned v = 0, digits = 0;
		while ((h = hexval(*p)) >= 0) {
			if (++digits > 4) return -1;
			v = (v << 4) | (unsigned)h;
			p++;
		}
		if (nh + nt >= 8) return -1;
		if (dcolon) tail[nt++] = (uint16_t)v;
		else head[nh++] = (uint16_t)v;
		if (*p != ':') break;
		if (p[1] == ':') {
			if (dcolon) return -1;
			dcolon = 1;
			p += 2;
			continue;
		}
		p++;
		if (hexval(*p) < 0) return -1;
	}
	if (!dcolon && nh == 0) return -1;
	if (dcolon && nh + nt > 7) return -1;
	memset(out, 0, 16);
	for (unsigned i = 0; i < nh; i++) {
		out[2 * i] = (uint8_t)(head[i] >> 8);
		out[2 * i + 1] = (uint8_t)head[i];
	}
	for (unsigned i = 0; i < nt; i++) {
		unsigned g = 8 - nt + i;
		out[2 * g] = (uint8_t)(tail[i] >> 8);
		out[2 * g + 1] = (uint8_t)tail[i];
	}
	*bits = dcolon ? 128 : 16 * nh;
	*end = p;
	(void)ends_entry;
	return 0;
}

void ip6_text(const uint8_t a[16], char *out)
{
	unsigned g[8];
	for (int i = 0; i < 8; i++) g[i] = (unsigned)(a[2 * i] << 8) | a[2 * i + 1];
	int best = -1, bestlen = 0;
	for (int i = 0; i < 8;) {
		if (g[i]) {
			i++;
			continue;
		}
		int j = i;
		while (j < 8 && !g[j]) j++;
		if (j - i > bestlen && j - i >= 2) {
			best = i;
			bestlen = j - i;
		}
		i = j;
	}
	size_t o = 0;
	for (int i = 0; i < 8; i++) {
		if (i == best) {
			out[o++] = ':';
			out[o++] = ':';
			i += bestlen - 1;
			continue;
		}
		if (i && i != best + bestlen) out[o++] = ':';
		o += (size_t)snprintf(out + o, 8, "%x", g[i]);
	}
	out[o] = '\0';
}

size_t ip6_owner(const uint8_t a[16], unsigned nib, int wild, uint8_t *w)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	if (wild) {
		w[o++] = 1;
		w[o++] = '*';
	}
	for (int i = (int)nib - 1; i >= 0; i--) {
		unsigned v = (i & 1) ? a[i / 2] & 15 : a[i / 2] >> 4;
		w[o++] = 1;
		w[o++] = (uint8_t)hex[v];
	}
	w[o++] = 0;
	return o;
}
