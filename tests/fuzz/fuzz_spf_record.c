/*
 * fuzz_spf_record.c — libFuzzer target for SPF records: the input is parsed
 * with auth_spf_parse and, when it looks like a record, also served as the
 * TXT record of the sender's domain and evaluated by auth_spf_check, which
 * drives macro expansion, the limits and every mechanism. DNS data comes
 * from the in-memory zone (a fuzzer must not touch the network).
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "auth/auth.h"

static struct dns_memzone *zone;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

static void add(const char *name, uint16_t type, const char *data)
{
	uint8_t ip[16];
	if (type == DNS_T_A && inet_pton(AF_INET, data, ip) == 1)
		dns_memzone_add(zone, name, type, 0, ip, 4, NULL);
	else if (type == DNS_T_AAAA && inet_pton(AF_INET6, data, ip) == 1)
		dns_memzone_add(zone, name, type, 0, ip, 16, NULL);
	else
		dns_memzone_add(zone, name, type, 10, data, strlen(data), NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct auth_spf_record rec;
	struct base_err err;
	if (auth_spf_parse((const char *)data, size, &rec, &err) == 0) {
		for (size_t i = 0; i < rec.n; i++)
			if (rec.terms[i].spec && rec.terms[i].spec_len > size) abort();
		auth_spf_record_free(&rec);
	}
	if (size < 6 || memcmp(data, "v=spf1", 6) || size > 2048) return 0;

	zone = dns_memzone_new();
	dns_memzone_add(zone, "example.com", DNS_T_TXT, 0, data, size, NULL);
	add("inc.example.com", DNS_T_TXT, "v=spf1 a mx -all");
	add("inc.example.com", DNS_T_A, "192.0.2.1");
	add("example.com", DNS_T_MX, "mail.example.com");
	add("mail.example.com", DNS_T_A, "192.0.2.2");
	add("mail.example.com", DNS_T_AAAA, "2001:db8::2");
	add("2.2.0.192.in-addr.arpa", DNS_T_PTR, "mail.example.com");
	add("loop.example.com", DNS_T_TXT, "v=spf1 include:loop.example.com");
	add("exp.example.com", DNS_T_TXT, "%{l} at %{d} from %{i} %{p} %{c} %{r} %{t} %{h}");
	dns_memzone_add_timeout(zone, "slow.example.com", NULL);
	struct dns_lookup_ops ops;
	dns_memzone_ops(zone, &ops);
	struct auth_spf_request req = {0};
	req.family = AF_INET;
	inet_pton(AF_INET, "192.0.2.2", req.ip);
	req.sender = "user.name+tag@example.com";
	req.helo = "mail.example.com";
	req.now = 1000000000;
	struct auth_spf_outcome out;
	auth_spf_check(&ops, &req, &out);
	if (out.result < AUTH_SPF_NONE || out.result > AUTH_SPF_PERMERROR) abort();
	if (out.dns_terms > AUTH_SPF_MAX_DNS_TERMS + 1) abort();
	req.family = AF_INET6;
	inet_pton(AF_INET6, "2001:db8::2", req.ip);
	auth_spf_check(&ops, &req, &out);
	dns_memzone_free(zone);
	return 0;
}
