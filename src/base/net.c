/*
 * net.c — parsing of socket addresses and CIDR networks given by people
 * (command lines and config files). Dataset files have their own, more
 * permissive parsers in dnsbl/.
 */
#include "base/base.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static int parse_port(const char *s, uint16_t *port, struct base_err *err)
{
	uint64_t v;
	int n = base_parse_uint(s, 65535, &v);
	if (n < 0 || s[n]) return base_errf(err, "bad port '%s'", s);
	*port = (uint16_t)v;
	return 0;
}

static int parse_addr(const char *s, struct base_sockaddr *out)
{
	if (inet_pton(AF_INET, s, out->a.v4) == 1) {
		out->family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, s, out->a.v6) == 1) {
		out->family = AF_INET6;
		return 0;
	}
	if (!strcmp(s, "localhost")) {
		out->family = AF_INET;
		memcpy(out->a.v4, "\x7f\0\0\x01", 4);
		return 0;
	}
	if (!strcmp(s, "*") || !*s) {
		out->family = AF_INET;
		memset(out->a.v4, 0, 4);
		return 0;
	}
	return -1;
}

int base_parse_hostport(const char *s, uint16_t default_port, struct base_sockaddr *out,
			struct base_err *err)
{
	char host[128];
	const char *port = NULL;
	size_t hl;
	memset(out, 0, sizeof *out);
	out->port = default_port;
	if (strlen(s) >= sizeof host) return base_errf(err, "address '%s' too long", s);
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close) return base_errf(err, "missing ']' in '%s'", s);
		hl = (size_t)(close - s - 1);
		memcpy(host, s + 1, hl);
		host[hl] = '\0';
		if (close[1] == ':' || close[1] == '/') port = close + 2;
		else if (close[1]) return base_errf(err, "junk after ']' in '%s'", s);
	} else {
		const char *slash = strrchr(s, '/');
		const char *colon = strchr(s, ':');
		if (slash) {
			port = slash + 1;
			hl = (size_t)(slash - s);
		} else if (colon && !strchr(colon + 1, ':')) {
			port = colon + 1;
			hl = (size_t)(colon - s);
		} else {
			hl = strlen(s);
		}
		memcpy(host, s, hl);
		host[hl] = '\0';
	}
	if (port && parse_port(port, &out->port, err) < 0) return -1;
	if (parse_addr(host, out) < 0) return base_errf(err, "bad address '%s' (a numeric IPv4 or IPv6 address is needed)", host);
	return 0;
}

int base_parse_cidr(const char *s, struct base_cidr *out, struct base_err *err)
{
	char tmp[64];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	if (n >= sizeof tmp) return base_errf(err, "bad network '%s'", s);
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	memset(out, 0, sizeof *out);
	unsigned max;
	if (inet_pton(AF_INET, tmp, out->addr) == 1) {
		out->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, tmp, out->addr) == 1) {
		out->family = AF_INET6;
		max = 128;
	} else {
		return base_errf(err, "bad network address '%s'", s);
	}
	out->prefix = max;
	if (slash) {
		uint64_t v;
		int k = base_parse_uint(slash + 1, max, &v);
		if (k < 0 || slash[1 + k]) return base_errf(err, "bad prefix length in '%s'", s);
		out->prefix = (unsigned)v;
	}
	/* Clear host bits so that comparisons need no mask. */
	for (unsigned bit = out->prefix; bit < max; bit++) out->addr[bit / 8] &= (uint8_t) ~(0x80 >> (bit % 8));
	return 0;
}

int base_cidr_contains(const struct base_cidr *c, int family, const uint8_t *addr)
{
	if (c->family != family) return 0;
	unsigned full = c->prefix / 8, rest = c->prefix % 8;
	if (memcmp(c->addr, addr, full)) return 0;
	if (rest) {
		uint8_t mask = (uint8_t)(0xff << (8 - rest));
		if ((addr[full] & mask) != c->addr[full]) return 0;
	}
	return 1;
}

socklen_t base_sockaddr_to(const struct base_sockaddr *a, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof *ss);
	if (a->family == AF_INET6) {
		struct sockaddr_in6 *s6 = (void *)ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(a->port);
		memcpy(&s6->sin6_addr, a->a.v6, 16);
		return sizeof *s6;
	}
	struct sockaddr_in *s4 = (void *)ss;
	s4->sin_family = AF_INET;
	s4->sin_port = htons(a->port);
	memcpy(&s4->sin_addr, a->a.v4, 4);
	return sizeof *s4;
}
