/*
 * fuzz_relay_pool.c — libFuzzer target for the relay's pool and shaping
 * settings: the input's first line is a --pool flag value, the second a
 * [pool] section's `source` value, the third a [domain] key=value, the
 * fourth and later [throttle] key=value lines (match, action, duration). Each is
 * accepted with sane results (weights 1..1000, an address of a known
 * family, a bounded EHLO name, a domain's mta-sts on, off or unset and
 * what MTA-STS then does for it) or refused with a message.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "relay/relay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_pools(const struct relay_config *c)
{
	for (size_t i = 0; i < c->npools; i++) {
		const struct relay_pool *p = &c->pools[i];
		if (!p->name[0] || p->nsrc > RELAY_POOL_SOURCES_MAX) abort();
		for (size_t k = 0; k < p->nsrc; k++) {
			const struct relay_source *s = &p->src[k];
			if (s->weight < 1 || s->weight > 1000) abort();
			if (s->addr.family != AF_INET && s->addr.family != AF_INET6) abort();
			if (strlen(s->ehlo) > 253) abort();
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096) return 0;
	char *text = malloc(size + 1);
	memcpy(text, data, size);
	text[size] = 0;
	char *line[4] = {text, "", "", ""};
	for (int i = 1; i < 4; i++) {
		char *nl = strchr(line[i - 1], '\n');
		if (!nl) break;
		*nl = 0;
		line[i] = nl + 1;
	}
	struct relay_config c;
	struct base_err err;
	relay_config_init(&c);
	if (relay_pool_flag(&c, line[0], &err) < 0 && !err.msg[0]) abort();
	if (relay_pool_add(&c, "fuzz", line[1], &err) < 0 && !err.msg[0]) abort();
	check_pools(&c);
	char *eq = strchr(line[2], '=');
	if (eq) {
		*eq = 0;
		if (relay_domain_set(&c, "fuzz.example", line[2], eq + 1, &err) < 0 && !err.msg[0])
			abort();
		const struct relay_domain_limits *d = relay_domain_find(&c, "FUZZ.example");
		if (d && (d->mta_sts < -1 || d->mta_sts > 1)) abort();
		if (relay_mtasts_applies(&c, "fuzz.example") !=
		    (d && d->mta_sts ? d->mta_sts > 0 : !c.mta_sts_off))
			abort();
		if (relay_shaping_set(&c, line[2], eq + 1, &err) < 0 && !err.msg[0]) abort();
	}
	/* the rest: one [throttle fuzz] key=value a line */
	for (char *l = line[3]; *l;) {
		char *nl = strchr(l, '\n');
		if (nl) *nl = 0;
		char *e = strchr(l, '=');
		if (e) {
			*e = 0;
			if (relay_throttle_set(&c, "fuzz", l, e + 1, &err) < 0 && !err.msg[0]) abort();
		}
		if (!nl) break;
		l = nl + 1;
	}
	if (relay_throttles_check(&c, &err) < 0 && !err.msg[0]) abort();
	relay_shaping_free(&c);
	free(text);
	return 0;
}
