/*
 * fuzz_dataset.c — libFuzzer target for the data-file parsers. The first
 * byte picks the dataset type; the rest is written to a file and loaded.
 * A load may fail with a message, but must never crash, leak or hang, and
 * a loaded zone must answer queries and dump for AXFR.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dnsbl/dnsbl.h"
#include "dns/dns.h"

static const char *types[] = {"ip4set", "ip4tset", "ip4trie", "ip6trie", "ip6tset", "dnset", "generic", "combined"};
static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	base_log_set_level(BASE_LOG_ERROR);
	snprintf(path, sizeof path, "/tmp/fuzz-ds-%ld", (long)getpid());
	return 0;
}

static size_t query(uint8_t *q, const char *name, uint16_t type)
{
	memset(q, 0, 12);
	q[1] = 1;
	q[5] = 1;
	struct dns_name n;
	dns_name_from_text(&n, name, 1, NULL);
	memcpy(q + 12, n.wire, n.len);
	dns_put16(q + 12 + n.len, type);
	dns_put16(q + 14 + n.len, DNS_C_IN);
	return 16u + n.len;
}

static void rr_sink(struct dnsbl_dump *d, const uint8_t *owner, uint16_t type, uint32_t ttl, const uint8_t *rdata,
		    size_t rdlen)
{
	(void)d;
	(void)owner;
	(void)type;
	(void)ttl;
	(void)rdata;
	(void)rdlen;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 1 << 16) return 0;
	const char *type = types[data[0] % (sizeof types / sizeof types[0])];
	FILE *f = fopen(path, "wb");
	if (!f) return 0;
	fwrite(data + 1, 1, size - 1, f);
	fclose(f);
	char spec[128];
	snprintf(spec, sizeof spec, "z.test:%s:%s", type, path);
	struct dnsbl_zonespec zs;
	struct base_err err;
	if (dnsbl_zonespec_parse(spec, &zs, &err) < 0) abort();
	struct dnsbl_options opts;
	dnsbl_options_default(&opts);
	opts.accept_in_cidr = data[0] & 0x80;
	struct dnsbl_snapshot *snap = NULL;
	if (dnsbl_snapshot_load(&opts, &zs, 1, NULL, &snap, &err) == 0) {
		static const char *names[] = {"2.0.0.127.z.test", "1.2.3.4.z.test", "0.0.127.z.test", "z.test",
					      "spam.test.z.test", "www.z.test",
					      "2.0.0.0.0.0.f.7.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.z.test"};
		static const uint16_t qt[] = {DNS_T_A, DNS_T_TXT, DNS_T_ANY, DNS_T_MX};
		uint8_t q[512], out[4096];
		struct dnsbl_peer peer = {AF_INET, {127, 0, 0, 1}};
		for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
			for (size_t k = 0; k < sizeof qt / sizeof qt[0]; k++) {
				int zone, xfr;
				size_t n = query(q, names[i], qt[k]);
				if (dnsbl_answer(snap, q, n, &peer, DNSBL_UDP, out, sizeof out, &zone, &xfr) > 512) abort();
			}
		if (size < 4096) {
			size_t n = query(q, "z.test", DNS_T_AXFR);
			struct dnsbl_xfr *x = dnsbl_xfr_start(snap, 0, q, n);
			if (x) {
				static uint8_t m[65536];
				while (dnsbl_xfr_next(x, m, sizeof m) > 0) {
				}
				dnsbl_xfr_free(x);
			}
			struct dnsbl_dump sink = {rr_sink, NULL};
			(void)sink;
		}
		dnsbl_snapshot_free(snap);
	}
	dnsbl_zonespec_free(&zs);
	unlink(path);
	return 0;
}
