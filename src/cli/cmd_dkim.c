/*
 * cmd_dkim.c — `mailrep dkim`: keygen (a private key file and the TXT
 * record to publish), sign (a message on stdin, signed on stdout) and
 * verify (every signature of a message on stdin, keys fetched through the
 * resolver given with --resolver).
 *
 * Exit status of verify: 0 every signature passed, 1 a signature failed or
 * there was none, 3 the keys could not be fetched (temperror) — "could not
 * check" rather than "bad"; 2 is a usage or input error everywhere.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "auth/auth.h"
#include "base/base.h"
#include "cli/cli.h"

static const char dkim_help[] =
    "usage: mailrep dkim keygen --type rsa|ed25519 [--bits N] --selector S --domain D --out "
    "KEYFILE\n"
    "       mailrep dkim sign --key KEYFILE --selector S --domain D [--simple] [--headers "
    "A:B:...]\n"
    "                         [--oversign A:B:...] < message > signed\n"
    "       mailrep dkim verify [--resolver HOST:PORT] [--json] < message\n"
    "\n"
    "keygen writes a private key (PEM, mode 0600) and prints the DNS TXT record to publish\n"
    "at S._domainkey.D. RSA keys are 2048 bits unless --bits says otherwise (1024 at least).\n"
    "sign prepends a DKIM-Signature (relaxed/relaxed unless --simple; From, Subject,\n"
    "List-Unsubscribe and List-Unsubscribe-Post over-signed). verify checks every signature;\n"
    "exit status 0: all passed, 1: one failed or none present, 3: keys could not be fetched.\n";

#define fail(...) cli_fail("dkim", __VA_ARGS__)

/* Reads all of f, at most max bytes. */
static int read_all(FILE *f, size_t max, struct base_buf *b, struct base_err *err)
{
	char chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
		if (b->len + n > max) return base_errf(err, "input larger than %zu bytes", max);
		base_buf_append(b, chunk, n);
	}
	if (ferror(f)) return base_errf(err, "read error: %s", strerror(errno));
	return 0;
}

/* Splits "A:B:C" into a NULL-terminated array (strings point into s). */
static const char **split_names(char *s)
{
	size_t n = 1;
	for (char *p = s; *p; p++) n += *p == ':';
	const char **v = base_xcalloc(n + 1, sizeof *v);
	size_t i = 0;
	for (char *tok = strtok(s, ":"); tok; tok = strtok(NULL, ":")) v[i++] = tok;
	v[i] = NULL;
	return v;
}

static int keygen(int argc, char **argv)
{
	static const struct option opts[] = {{"type", required_argument, 0, 't'},
	                                     {"bits", required_argument, 0, 'b'},
	                                     {"selector", required_argument, 0, 's'},
	                                     {"domain", required_argument, 0, 'd'},
	                                     {"out", required_argument, 0, 'o'},
	                                     {"help", no_argument, 0, 'h'},
	                                     {0, 0, 0, 0}};
	const char *type = NULL, *sel = NULL, *dom = NULL, *out = NULL;
	uint64_t bits = 0;
	int c;
	while ((c = getopt_long(argc, argv, "t:b:s:d:o:h", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			type = optarg;
			break;
		case 'b':
			if (base_parse_uint(optarg, 16384, &bits) != (int)strlen(optarg))
				return fail("--bits: not a number: %s", optarg);
			break;
		case 's':
			sel = optarg;
			break;
		case 'd':
			dom = optarg;
			break;
		case 'o':
			out = optarg;
			break;
		case 'h':
			fputs(dkim_help, stdout);
			return 0;
		default:
			return fail("see mailrep dkim --help");
		}
	}
	if (!type || !sel || !dom || !out)
		return fail("keygen needs --type, --selector, --domain and --out");
	int alg;
	if (!strcmp(type, "rsa"))
		alg = AUTH_DKIM_RSA_SHA256;
	else if (!strcmp(type, "ed25519"))
		alg = AUTH_DKIM_ED25519_SHA256;
	else
		return fail("--type must be rsa or ed25519, not '%s'", type);
	if (alg == AUTH_DKIM_ED25519_SHA256 && bits) return fail("--bits applies to RSA keys only");

	struct base_err err;
	struct auth_dkim_key *k;
	if (auth_dkim_key_generate(&k, alg, (unsigned)bits, &err) < 0) return fail("%s", err.msg);
	struct base_buf pem, rec;
	base_buf_init(&pem);
	base_buf_init(&rec);
	int rc = 2;
	if (auth_dkim_key_pem(k, &pem, &err) < 0 || auth_dkim_key_record(k, &rec, &err) < 0) {
		rc = fail("%s", err.msg);
		goto out;
	}
	int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = fail("%s: %s", out, strerror(errno));
		goto out;
	}
	if (fchmod(fd, 0600) < 0 || write(fd, pem.data, pem.len) != (ssize_t)pem.len ||
	    fsync(fd) < 0) {
		close(fd);
		rc = fail("%s: %s", out, strerror(errno));
		goto out;
	}
	close(fd);
	/* The record as zone-file strings of at most 255 bytes each. */
	printf("%s._domainkey.%s. IN TXT (", sel, dom);
	for (size_t i = 0; i < rec.len; i += 250)
		printf(" \"%.*s\"", (int)(rec.len - i < 250 ? rec.len - i : 250), rec.data + i);
	printf(" )\n");
	rc = 0;
out:
	base_buf_free(&pem);
	base_buf_free(&rec);
	auth_dkim_key_free(k);
	return rc;
}

static int sign(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"key", required_argument, 0, 'k'},     {"selector", required_argument, 0, 's'},
	    {"domain", required_argument, 0, 'd'},  {"simple", no_argument, 0, 'S'},
	    {"headers", required_argument, 0, 'H'}, {"oversign", required_argument, 0, 'O'},
	    {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
	const char *keyfile = NULL;
	char *headers = NULL, *oversign = NULL;
	struct auth_dkim_sign_opts o = {0};
	int c;
	while ((c = getopt_long(argc, argv, "k:s:d:SH:O:h", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			keyfile = optarg;
			break;
		case 's':
			o.selector = optarg;
			break;
		case 'd':
			o.domain = optarg;
			break;
		case 'S':
			o.hcanon = o.bcanon = AUTH_DKIM_SIMPLE;
			break;
		case 'H':
			headers = optarg;
			break;
		case 'O':
			oversign = optarg;
			break;
		case 'h':
			fputs(dkim_help, stdout);
			return 0;
		default:
			return fail("see mailrep dkim --help");
		}
	}
	if (!keyfile || !o.selector || !o.domain)
		return fail("sign needs --key, --selector and --domain");
	struct base_err err;
	struct base_buf pem, msg, sig;
	base_buf_init(&pem);
	base_buf_init(&msg);
	base_buf_init(&sig);
	struct auth_dkim_key *k = NULL;
	const char **hl = NULL, **ol = NULL;
	int rc = 2;
	FILE *f = fopen(keyfile, "r");
	if (!f) {
		rc = fail("%s: %s", keyfile, strerror(errno));
		goto out;
	}
	int r = read_all(f, 64 * 1024, &pem, &err);
	fclose(f);
	if (r < 0 || auth_dkim_key_load(&k, pem.data ? pem.data : "", pem.len, &err) < 0) {
		rc = fail("%s: %s", keyfile, err.msg);
		goto out;
	}
	if (headers) o.headers = hl = split_names(headers);
	if (oversign) o.oversign = ol = split_names(oversign);
	if (read_all(stdin, AUTH_MSG_MAX, &msg, &err) < 0) {
		rc = fail("stdin: %s", err.msg);
		goto out;
	}
	if (auth_dkim_sign(k, &o, msg.data ? msg.data : "", msg.len, &sig, &err) < 0) {
		rc = fail("%s", err.msg);
		goto out;
	}
	/* Keep the message's own line ends: LF files get an LF field. */
	const char *nl = msg.data ? memchr(msg.data, '\n', msg.len) : NULL;
	int lf = nl && (nl == msg.data || nl[-1] != '\r');
	for (size_t i = 0; i < sig.len; i++)
		if (!(lf && sig.data[i] == '\r')) putchar(sig.data[i]);
	fwrite(msg.data, 1, msg.len, stdout);
	rc = fflush(stdout) == 0 ? 0 : fail("write error: %s", strerror(errno));
out:
	free(hl);
	free(ol);
	auth_dkim_key_free(k);
	base_buf_free(&pem);
	base_buf_free(&msg);
	base_buf_free(&sig);
	return rc;
}

static int verify(int argc, char **argv)
{
	static const struct option opts[] = {{"resolver", required_argument, 0, 'r'},
	                                     {"json", no_argument, 0, 'j'},
	                                     {"help", no_argument, 0, 'h'},
	                                     {0, 0, 0, 0}};
	const char *resolver = NULL;
	int json = 0, c;
	while ((c = getopt_long(argc, argv, "r:jh", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			resolver = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			fputs(dkim_help, stdout);
			return 0;
		default:
			return fail("see mailrep dkim --help");
		}
	}
	struct base_err err;
	struct base_buf msg;
	base_buf_init(&msg);
	if (read_all(stdin, AUTH_MSG_MAX, &msg, &err) < 0) {
		base_buf_free(&msg);
		return fail("stdin: %s", err.msg);
	}
	struct dns_resolver *r;
	struct dns_resolver_config cfg = {resolver, 0, 0};
	if (dns_resolver_new(&r, &cfg, &err) < 0) {
		base_buf_free(&msg);
		return fail("%s", err.msg);
	}
	struct dns_lookup_ops dns;
	dns_resolver_ops(r, &dns);
	struct auth_dkim_verdict v[AUTH_DKIM_MAX_SIGS];
	int n = auth_dkim_verify(&dns, msg.data ? msg.data : "", msg.len, 0, v, AUTH_DKIM_MAX_SIGS,
	                         &err);
	dns_resolver_free(r);
	base_buf_free(&msg);
	if (n < 0) return fail("message: %s", err.msg);
	if (n > AUTH_DKIM_MAX_SIGS) n = AUTH_DKIM_MAX_SIGS;
	int pass = 0, bad = 0, temp = 0;
	for (int i = 0; i < n; i++) {
		if (v[i].result == AUTH_DKIM_PASS)
			pass++;
		else if (v[i].result == AUTH_DKIM_TEMPERROR)
			temp++;
		else
			bad++;
	}
	if (json) {
		printf("{\"signatures\":[");
		for (int i = 0; i < n; i++) {
			printf("%s{\"result\":", i ? "," : "");
			base_json_fputs(stdout, auth_dkim_result_name(v[i].result));
			printf(",\"domain\":");
			base_json_fputs(stdout, v[i].domain);
			printf(",\"selector\":");
			base_json_fputs(stdout, v[i].selector);
			printf(",\"algorithm\":\"%s\",\"key_bits\":%u,\"testing\":%s,\"reason\":",
			       v[i].alg == AUTH_DKIM_ED25519_SHA256 ? "ed25519-sha256"
			                                            : "rsa-sha256",
			       v[i].key_bits, v[i].testing ? "true" : "false");
			base_json_fputs(stdout, v[i].reason);
			printf("}");
		}
		printf("]}\n");
	} else if (!n) {
		printf("dkim=none (no DKIM-Signature field)\n");
	} else {
		for (int i = 0; i < n; i++)
			printf("dkim=%s d=%s s=%s: %s\n", auth_dkim_result_name(v[i].result),
			       v[i].domain[0] ? v[i].domain : "?",
			       v[i].selector[0] ? v[i].selector : "?", v[i].reason);
	}
	if (n && !bad && !temp) return 0;
	if (temp && !bad) return 3;
	return 1;
}

/* ---- bench: signatures per second on one core ----------------------- */

/* A message of about size bytes: typical headers and a text body. */
static void bench_message(size_t size, struct base_buf *m)
{
	base_buf_puts(m, "From: Newsletter <news@example.com>\r\n"
	                 "To: reader@example.net\r\n"
	                 "Subject: This week's news\r\n"
	                 "Date: Mon, 23 Nov 2026 03:00:00 +0000\r\n"
	                 "Message-ID: <bench.1@example.com>\r\n"
	                 "MIME-Version: 1.0\r\n"
	                 "Content-Type: text/plain; charset=utf-8\r\n"
	                 "List-Unsubscribe: <https://example.com/u/1>\r\n"
	                 "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n");
	while (m->len < size)
		base_buf_puts(m,
		              "The quick brown fox jumps over the lazy dog,  again and again.\r\n");
}

/* The raw primitive, as `openssl speed` measures it: one signature over a
 * SHA-256 digest. */
static int raw_sign(EVP_PKEY *pk, int alg, const uint8_t digest[32])
{
	uint8_t sig[1024];
	size_t slen = sizeof sig;
	int ok;
	if (alg == AUTH_DKIM_ED25519_SHA256) {
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		ok = ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, pk) == 1 &&
		     EVP_DigestSign(ctx, sig, &slen, digest, 32) == 1;
		EVP_MD_CTX_free(ctx);
	} else {
		EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pk, NULL);
		ok = ctx && EVP_PKEY_sign_init(ctx) == 1 &&
		     EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1 &&
		     EVP_PKEY_sign(ctx, sig, &slen, digest, 32) == 1;
		EVP_PKEY_CTX_free(ctx);
	}
	return ok ? 0 : -1;
}

static int bench(int argc, char **argv)
{
	static const struct option opts[] = {{"seconds", required_argument, 0, 's'},
	                                     {"size", required_argument, 0, 'z'},
	                                     {"help", no_argument, 0, 'h'},
	                                     {0, 0, 0, 0}};
	uint64_t secs = 3, size = 4096;
	int c;
	while ((c = getopt_long(argc, argv, "s:z:h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (base_parse_uint(optarg, 600, &secs) != (int)strlen(optarg) || !secs)
				return fail("--seconds: 1 to 600");
			break;
		case 'z':
			if (base_parse_uint(optarg, 1 << 24, &size) != (int)strlen(optarg))
				return fail("--size: a byte count");
			break;
		case 'h':
			fputs(dkim_help, stdout);
			return 0;
		default:
			return fail("see mailrep dkim --help");
		}
	}
	struct base_buf msg;
	base_buf_init(&msg);
	bench_message((size_t)size, &msg);
	printf("DKIM signing, one thread, %zu-byte message, %llu s per figure\n", msg.len,
	       (unsigned long long)secs);
	printf("%-10s %14s %14s %8s\n", "key", "mailrep sig/s", "raw sig/s", "ratio");
	static const struct {
		const char *name;
		int alg;
		unsigned bits;
	} algs[] = {{"rsa-2048", AUTH_DKIM_RSA_SHA256, 2048},
	            {"ed25519", AUTH_DKIM_ED25519_SHA256, 0}};
	int rc = 0;
	for (size_t a = 0; a < 2 && !rc; a++) {
		struct base_err err;
		struct auth_dkim_key *k;
		if (auth_dkim_key_generate(&k, algs[a].alg, algs[a].bits, &err) < 0)
			return fail("%s", err.msg);
		struct base_buf pem, out;
		base_buf_init(&pem);
		base_buf_init(&out);
		auth_dkim_key_pem(k, &pem, &err);
		BIO *bio = BIO_new_mem_buf(pem.data, (int)pem.len);
		EVP_PKEY *pk = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
		BIO_free(bio);
		struct auth_dkim_sign_opts o = {0};
		o.domain = "example.com";
		o.selector = "bench";
		uint64_t n_ours = 0, n_raw = 0, t0 = base_mono_ns(), limit = secs * 1000000000ull;
		while (base_mono_ns() - t0 < limit) {
			out.len = 0;
			if (auth_dkim_sign(k, &o, msg.data, msg.len, &out, &err) < 0) {
				rc = fail("%s", err.msg);
				break;
			}
			n_ours++;
		}
		double t_ours = (double)(base_mono_ns() - t0) / 1e9;
		uint8_t digest[32] = {1};
		t0 = base_mono_ns();
		while (!rc && base_mono_ns() - t0 < limit) {
			if (!pk || raw_sign(pk, algs[a].alg, digest) < 0) {
				rc = fail("raw signing failed");
				break;
			}
			n_raw++;
		}
		double t_raw = (double)(base_mono_ns() - t0) / 1e9;
		if (!rc)
			printf("%-10s %14.0f %14.0f %8.2f\n", algs[a].name, n_ours / t_ours,
			       n_raw / t_raw, (n_ours / t_ours) / (n_raw / t_raw));
		EVP_PKEY_free(pk);
		base_buf_free(&pem);
		base_buf_free(&out);
		auth_dkim_key_free(k);
	}
	base_buf_free(&msg);
	return rc;
}

int cli_dkim(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(dkim_help, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	const char *sub = argv[1];
	optind = 1;
	if (!strcmp(sub, "keygen")) return keygen(argc - 1, argv + 1);
	if (!strcmp(sub, "sign")) return sign(argc - 1, argv + 1);
	if (!strcmp(sub, "verify")) return verify(argc - 1, argv + 1);
	if (!strcmp(sub, "bench")) return bench(argc - 1, argv + 1);
	return fail("unknown subcommand '%s' (keygen, sign, verify, bench)", sub);
}
