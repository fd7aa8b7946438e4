/*
 * fuzz_dkim_message.c — libFuzzer target for messages as DKIM sees them:
 * header splitting (auth_msg_parse), both canonicalisations of every field
 * and of the body, the tag lists of DKIM-Signature fields and key records,
 * and full verification against an in-memory key (a fuzzer must not touch
 * the network).
 */
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"

static struct dns_memzone *zone;
static struct dns_lookup_ops ops;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	zone = dns_memzone_new();
	const char *ed = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
	const char *rsa = "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWR"
	                  "iGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutAC"
	                  "DfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3"
	                  "Ip3G+2kryOTIKT+l/K4w3QIDAQAB";
	dns_memzone_add(zone, "brisbane._domainkey.football.example.com", DNS_T_TXT, 0, ed,
	                strlen(ed), NULL);
	dns_memzone_add(zone, "test._domainkey.football.example.com", DNS_T_TXT, 0, rsa,
	                strlen(rsa), NULL);
	dns_memzone_ops(zone, &ops);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct auth_msg m;
	struct base_err err;
	/* canonicalisation must also cope with input nobody normalised */
	struct base_buf raw;
	base_buf_init(&raw);
	auth_dkim_canon_body(AUTH_DKIM_RELAXED, (const char *)data, size, &raw);
	auth_dkim_canon_body(AUTH_DKIM_SIMPLE, (const char *)data, size, &raw);
	auth_dkim_canon_header(AUTH_DKIM_RELAXED, (const char *)data, size, &raw);
	base_buf_free(&raw);
	if (auth_msg_parse(&m, (const char *)data, size, &err) == 0) {
		struct base_buf b;
		base_buf_init(&b);
		for (size_t i = 0; i < m.n; i++) {
			const struct auth_msg_field *f = &m.fields[i];
			if (f->raw + f->raw_len > m.buf + m.len || f->value_off > f->raw_len)
				abort();
			auth_dkim_canon_header(AUTH_DKIM_RELAXED, f->raw, f->raw_len, &b);
			auth_dkim_canon_header(AUTH_DKIM_SIMPLE, f->raw, f->raw_len, &b);
			struct auth_dkim_sig sig;
			auth_dkim_sig_parse(f->raw + f->value_off, f->raw_len - f->value_off, &sig,
			                    &err);
			struct auth_dkim_keyrec k;
			if (auth_dkim_keyrec_parse(f->raw + f->value_off, f->raw_len - f->value_off,
			                           &k, &err) == 0)
				auth_dkim_keyrec_free(&k);
			b.len = 0;
		}
		auth_dkim_canon_body(AUTH_DKIM_RELAXED, m.body, m.body_len, &b);
		b.len = 0;
		auth_dkim_canon_body(AUTH_DKIM_SIMPLE, m.body, m.body_len, &b);
		base_buf_free(&b);
		auth_msg_free(&m);
	}
	struct auth_dkim_verdict v[4];
	int n = auth_dkim_verify(&ops, (const char *)data, size, 1528637909, v, 4, &err);
	for (int i = 0; i < n && i < 4; i++)
		if (v[i].result < AUTH_DKIM_NONE || v[i].result > AUTH_DKIM_PERMERROR) abort();
	return 0;
}
