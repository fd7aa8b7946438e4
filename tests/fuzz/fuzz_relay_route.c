/*
 * fuzz_relay_route.c — libFuzzer target for a static route's next hop
 * given as a host name (--route DOMAIN=NAME:PORT, or `route =` in the
 * config file): either refused, or a lower-case LDH name of at most 253
 * bytes with labels of 1 to 63 and a port from 1 to 65535.
 */
#include <stdlib.h>
#include <string.h>

#include "relay/relay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1024) return 0;
	char *text = malloc(size + 1);
	memcpy(text, data, size);
	text[size] = 0;
	char name[256];
	uint16_t port = 0;
	if (relay_route_host_parse(text, name, sizeof name, &port)) {
		size_t len = strlen(name), label = 0;
		if (!len || len > 253 || !port) abort();
		for (size_t i = 0; i < len; i++) {
			char ch = name[i];
			if (ch == '.') {
				if (!label) abort();
				label = 0;
			} else if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
			           ch == '-') {
				if (++label > 63) abort();
			} else {
				abort();
			}
		}
		if (!label || name[0] == '-' || name[len - 1] == '-') abort();
	}
	free(text);
	return 0;
}
