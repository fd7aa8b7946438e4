/*
 * fuzz_dmarc_record.c — libFuzzer target for DMARC records: auth_dmarc_parse
 * on the input, then the input served as the record at _dmarc.example.com
 * and evaluated in both discovery modes (PSL and tree walk) from a deep
 * subdomain. DNS data comes from the in-memory zone.
 */
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct auth_dmarc_record r;
	struct base_err err;
	if (auth_dmarc_parse((const char *)data, size, &r, &err) == 0) {
		if (r.pct > 100 || (r.adkim != 'r' && r.adkim != 's')) abort();
		if (r.p < AUTH_DMARC_NONE || r.p > AUTH_DMARC_REJECT) abort();
	}
	if (size > 1024) return 0;
	struct dns_memzone *z = dns_memzone_new();
	dns_memzone_add(z, "_dmarc.example.com", DNS_T_TXT, 0, data, size, NULL);
	dns_memzone_add(z, "_dmarc.c.d.e.f.g.h.i.example.com", DNS_T_TXT, 0, data, size, NULL);
	struct dns_lookup_ops ops;
	dns_memzone_ops(z, &ops);
	for (int mode = 0; mode < 2; mode++) {
		struct auth_dmarc_input in = {0};
		in.from_domain = "a.b.c.d.e.f.g.h.i.example.com";
		in.spf_result = AUTH_SPF_PASS;
		in.spf_domain = "bounce.example.com";
		in.ndkim = 1;
		in.dkim[0].result = AUTH_DKIM_PASS;
		in.dkim[0].domain = "x.example.com";
		in.mode = mode;
		struct auth_dmarc_outcome out;
		auth_dmarc_evaluate(&ops, &in, &out);
		if (out.result < AUTH_DMARC_R_NONE || out.result > AUTH_DMARC_R_PERMERROR) abort();
		if (out.found.queries > AUTH_DMARC_WALK_MAX) abort();
	}
	dns_memzone_free(z);
	return 0;
}
