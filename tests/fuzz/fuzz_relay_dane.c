/*
 * fuzz_relay_dane.c — libFuzzer target for what DANE reads from the
 * network: the first byte picks one TLSA RDATA alone (relay_tlsa_parse)
 * or a whole DNS response to a TLSA query, read by dns_answer_parse and
 * then by relay_dane_from_answer. Invariants checked: an accepted record
 * has usage 2 or 3, selector 0 or 1, matching type 0 to 2, a digest of
 * its exact length and data inside the input; every refusal says why; a
 * host's DANE state is one of three, a usable one holds 1 to
 * RELAY_TLSA_MAX records that pass the same checks, a failure's reply is
 * a 4.7.5 that names the host; an insecure answer never makes DANE apply.
 */
#include <stdlib.h>
#include <string.h>

#include "dns/dns.h"
#include "relay/dane.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_tlsa(const struct relay_tlsa *t)
{
	if ((t->usage != 2 && t->usage != 3) || t->selector > 1 || t->mtype > 2) abort();
	if (!t->len || t->len > RELAY_TLSA_DATA_MAX) abort();
	if ((t->mtype == 1 && t->len != 32) || (t->mtype == 2 && t->len != 64)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 65536) return 0;
	const uint8_t *in = data + 1;
	size_t len = size - 1;
	if (data[0] & 1) {
		struct relay_tlsa t;
		const char *why = NULL;
		int r = relay_tlsa_parse(in, len, &t, &why);
		if (r == 1) {
			check_tlsa(&t);
			if (t.data != in + 3 || 3u + t.len != len) abort();
		} else if (!why || !why[0]) {
			abort();
		}
		return 0;
	}
	struct dns_answer a;
	dns_answer_init(&a);
	dns_answer_parse(in, len, DNS_T_TLSA, &a);
	if ((a.status == DNS_LOOKUP_OK) != (a.n > 0)) abort();
	struct relay_dane *d = relay_dane_from_answer("mx.example", &a);
	if (d) {
		if (a.status == DNS_LOOKUP_OK && !a.secure) abort();
		if (strcmp(d->host, "mx.example") || d->refs != 1) abort();
		switch (d->state) {
		case RELAY_DANE_USABLE:
			if (!d->n || d->n > RELAY_TLSA_MAX) abort();
			for (size_t i = 0; i < d->n; i++) check_tlsa(&d->rr[i]);
			break;
		case RELAY_DANE_UNUSABLE:
			if (d->n) abort();
			break;
		case RELAY_DANE_FAIL:
			if (strncmp(d->why, "451 4.7.5 DANE: ", 16) ||
			    !strstr(d->why, "mx.example"))
				abort();
			break;
		default:
			abort();
		}
		relay_dane_unref(d);
	}
	dns_answer_free(&a);
	return 0;
}
