/*
 * fuzz_dns_query.c — libFuzzer target for the path every UDP and TCP
 * packet takes: dns_parse_query and dnsbl_answer against a snapshot with
 * one zone of each dataset type. The reply must always be a well-formed
 * message no larger than the buffer it was given.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dnsbl/dnsbl.h"
#include "dns/dns.h"

static struct dnsbl_snapshot *snap;
static struct dnsbl_options opts;
static struct dnsbl_zonespec *specs;

static const char *files[][2] = {
	{"ip4set", "$SOA 1h ns1.ex.test hm.ex.test 0 1h 1h 1w 1m\n$NS 1d ns1.ex.test ns2.ex.test\n"
		   ":127.0.0.2:Listed $ see $1\n$1 http://ex.test/\n127.0.0.2\n10.0.0.0/8\n!10.1.2.3\n"
		   "1.2.3.4-20 :3:x\n192.168/16 text $$ $=\n"},
	{"ip4trie", "$SOA 1h ns1.ex.test hm.ex.test 0 1h 1h 1w 1m\n10.0.0.0/9\n!10.1.0.0/16\n10.1.2.0/24 :4:\n"},
	{"ip6trie", "$SOA 1h ns1.ex.test hm.ex.test 0 1h 1h 1w 1m\n::ffff:7f00:2\n2001:db8::/32\n!2001:db8::1\n"},
	{"ip6tset", "$SOA 1h ns1.ex.test hm.ex.test 0 1h 1h 1w 1m\n2001:db8:1:2\n!2001:db8:1:2::5\n"},
	{"dnset", "$SOA 1h ns1.ex.test hm.ex.test 0 1h 1h 1w 1m\nspam.test\n*.wild.test :3:$\n.both.test\n!ok.wild.test\n"},
	{"generic", "$SOA 1h ns1.ex.test hm.ex.test 0 1h 1h 1w 1m\n@ A 127.0.0.8\nwww 300 A 1.2.3.4\n"
		    "www TXT \"hello\"\n@ MX 10 mx.ex.test\n"},
	{"combined", "$SOA 1h ns1.ex.test hm.ex.test 0 1h 1h 1w 1m\n$DATASET ip4set a @\n127.0.0.2\n"
		     "$DATASET dnset b\nspam.test\n$DATASET generic c @\nwww A 1.1.1.1\n"},
};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	base_log_set_level(BASE_LOG_ERROR);
	char dir[] = "/tmp/fuzz-dnsq-XXXXXX";
	if (!mkdtemp(dir)) abort();
	size_t n = sizeof files / sizeof files[0];
	specs = calloc(n, sizeof *specs);
	for (size_t i = 0; i < n; i++) {
		char path[256], spec[512];
		snprintf(path, sizeof path, "%s/%s", dir, files[i][0]);
		FILE *f = fopen(path, "w");
		fputs(files[i][1], f);
		fclose(f);
		snprintf(spec, sizeof spec, "%s.ex.test:%s:%s", files[i][0], files[i][0], path);
		struct base_err err;
		if (dnsbl_zonespec_parse(spec, &specs[i], &err) < 0) abort();
	}
	dnsbl_options_default(&opts);
	struct base_err err;
	if (dnsbl_snapshot_load(&opts, specs, (unsigned)n, NULL, &snap, &err) != 0) {
		fprintf(stderr, "%s\n", err.msg);
		abort();
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t out[65536];
	struct dnsbl_peer peer = {AF_INET, {127, 0, 0, 1}};
	int zone, xfr;
	size_t cap = size && (data[0] & 1) ? 512 : sizeof out;
	enum dnsbl_transport t = size && (data[0] & 2) ? DNSBL_TCP : DNSBL_UDP;
	size_t n = dnsbl_answer(snap, data, size, &peer, t, out, cap, &zone, &xfr);
	if (n > cap) abort();
	if (n) {
		/* the reply must parse back */
		if (n < DNS_HDR_SIZE) abort();
		size_t off = DNS_HDR_SIZE;
		uint8_t name[DNS_NAME_MAX + 1];
		for (unsigned i = 0; i < dns_get16(out + 4); i++) {
			if (dns_read_name(out, n, &off, name) < 0) abort();
			off += 4;
		}
		unsigned rrs = (unsigned)dns_get16(out + 6) + dns_get16(out + 8) + dns_get16(out + 10);
		for (unsigned i = 0; i < rrs; i++) {
			struct dns_rr rr;
			if (dns_read_rr(out, n, &off, &rr) < 0) abort();
		}
		if (off != n) abort();
	}
	if (xfr >= 0) {
		struct dnsbl_xfr *x = dnsbl_xfr_start(snap, xfr, data, size);
		if (x) {
			while (dnsbl_xfr_next(x, out, sizeof out) > 0) {
			}
			dnsbl_xfr_free(x);
		}
	}
	return 0;
}
