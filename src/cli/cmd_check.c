/*
 * cmd_check.c — `mailrep check`: the deliverability checker: a domain's
 * mail setup and an IP's blocklist listings and reverse DNS; every
 * subcommand resolves through --resolver HOST:PORT.
 * Exit status: 0 clean, 1 problems found, 3 could not check (DNS
 * failures), 2 usage errors.
 */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/auth.h"
#include "base/base.h"
#include "check/check.h"
#include "cli/cli.h"

static const char check_help[] =
    "usage: mailrep check domain DOMAIN [--selector S ...] [--ip IP] [--mail-from ADDR]\n"
    "                            [--helo NAME] [--resolver HOST:PORT] [--json]\n"
    "\n"
    "Checks a domain's mail setup: SPF (one valid record, DNS-querying terms, +all, ptr,\n"
    "where all stands; with --ip the evaluation for that client), the DKIM key of each\n"
    "--selector, DMARC, MX and MTA-STS, and says what to fix. --json prints one JSON\n"
    "object (its spf member has a result, one of RFC 7208's seven words, with --ip).\n"
    "\n"
    "       mailrep check ip IP [--lists FILE] [--resolver HOST:PORT] [--json]\n"
    "\n"
    "Queries every DNS blocklist of the list file (default: data/dnsbls.txt next to the\n"
    "build directory, or $MAILREP_DNSBLS) at once, with the RFC 5782 test entries to\n"
    "catch broken lists, fetches the reasons of listings, and checks the PTR of the IP:\n"
    "present, forward-confirmed, and not generic-looking.\n"
    "\n"
    "       mailrep check smtp HOST[:PORT] [--helo NAME] [--open-relay-probe]\n"
    "                          [--timeout MS] [--resolver HOST:PORT] [--json]\n"
    "\n"
    "Talks to a mail server: the banner and its delay, EHLO and its extensions, STARTTLS\n"
    "with the certificate's dates and names, whether the PTR of the server's address\n"
    "matches the banner, the time of each step; --open-relay-probe also tries MAIL FROM\n"
    "and RCPT TO with outside addresses (then RSET: it never sends DATA or a message).\n"
    "\n"
    "       mailrep check message FILE|- [--ip IP --mail-from ADDR] [--helo NAME]\n"
    "                             [--resolver HOST:PORT] [--json]\n"
    "\n"
    "Verifies every DKIM signature of a message, evaluates SPF (with --ip and\n"
    "--mail-from) and DMARC, and checks the bulk-sender rules: List-Unsubscribe with an\n"
    "https URI, List-Unsubscribe-Post: List-Unsubscribe=One-Click, both signed by an\n"
    "aligned DKIM signature, and the From domain aligned.\n"
    "Exit status: 0 clean, 1 problems, 3 could not check, 2 usage error.\n";

#define fail(...) cli_fail("check", __VA_ARGS__)

/* Prints the report, colouring problems red, warnings yellow and passed
 * checks green when colour is on (a terminal, and NO_COLOR unset). */
static void print_report(const struct base_buf *t, int colour)
{
	const char *p = t->data ? t->data : "", *end = p + t->len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p + 1) : (size_t)(end - p);
		const char *c = NULL;
		if (colour && !strncmp(p, "  PROBLEM:", 10)) c = "\033[31m";
		if (colour && !strncmp(p, "  warning:", 10)) c = "\033[33m";
		if (colour && !strncmp(p, "  ok:", 5)) c = "\033[32m";
		if (c) fputs(c, stdout);
		fwrite(p, 1, c && nl ? n - 1 : n, stdout);
		if (c) fputs(nl ? "\033[0m\n" : "\033[0m", stdout);
		p += n;
	}
}

/* What the subcommands share: --resolver and --json (every one), --ip,
 * --mail-from and --helo (those that take them), the resolver it opens, and
 * the report the check writes. */
struct run {
	const char *resolver;
	int json;
	const char *ip, *mail_from, *helo;
	struct dns_resolver *r;
	struct dns_lookup_ops dns;
	struct base_buf j, t;
	struct base_err err;
};

/* The options every subcommand has, ending its option table. */
/* clang-format off */
#define RUN_OPTIONS \
	{"resolver", required_argument, 0, 'r'}, {"json", no_argument, 0, 'j'}, \
	{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}
/* clang-format on */

/* An option more than one subcommand has (its getopt string says which):
 * returns -1 to go on, or the exit status (--help, or an unknown option). */
static int run_option(struct run *x, int c)
{
	switch (c) {
	case 'i':
		x->ip = optarg;
		return -1;
	case 'm':
		x->mail_from = optarg;
		return -1;
	case 'H':
		x->helo = optarg;
		return -1;
	case 'r':
		x->resolver = optarg;
		return -1;
	case 'j':
		x->json = 1;
		return -1;
	case 'h':
		fputs(check_help, stdout);
		return 0;
	default:
		return fail("see mailrep check --help");
	}
}

/* Opens the resolver (--resolver, or the system's) and the report buffers. */
static int run_open(struct run *x)
{
	struct dns_resolver_config cfg = {x->resolver, 0, 0};
	if (dns_resolver_new(&x->r, &cfg, &x->err) < 0) return fail("%s", x->err.msg);
	dns_resolver_ops(x->r, &x->dns);
	base_buf_init(&x->j);
	base_buf_init(&x->t);
	return 0;
}

/* Prints the check's report (JSON or text, in colour on a terminal) or its
 * error (after what, if given), frees everything run_open made, and returns
 * the exit status. */
static int run_close(struct run *x, int rc, const char *what)
{
	dns_resolver_free(x->r);
	if (rc < 0) {
		rc = what ? fail("%s: %s", what, x->err.msg) : fail("%s", x->err.msg);
	} else if (x->json) {
		fwrite(x->j.data, 1, x->j.len, stdout);
	} else {
		print_report(&x->t, isatty(STDOUT_FILENO) && !getenv("NO_COLOR"));
	}
	base_buf_free(&x->j);
	base_buf_free(&x->t);
	return rc;
}

static int check_domain_cmd(int argc, char **argv)
{
	static const struct option opts[] = {{"selector", required_argument, 0, 's'},
	                                     {"ip", required_argument, 0, 'i'},
	                                     {"mail-from", required_argument, 0, 'm'},
	                                     {"helo", required_argument, 0, 'H'},
	                                     RUN_OPTIONS};
	struct check_domain_opts o = {0};
	struct run x = {0};
	int c, rc;
	while ((c = getopt_long(argc, argv, "s:i:m:H:r:jh", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (o.nselectors == CHECK_MAX_SELECTORS)
				return fail("at most %d selectors", CHECK_MAX_SELECTORS);
			o.selectors[o.nselectors++] = optarg;
			break;
		default:
			if ((rc = run_option(&x, c)) >= 0) return rc;
		}
	}
	if (optind != argc - 1) return fail("check domain needs exactly one DOMAIN");
	o.domain = argv[optind];
	o.ip = x.ip;
	o.mail_from = x.mail_from;
	o.helo = x.helo;
	if ((rc = run_open(&x)) != 0) return rc;
	return run_close(&x, check_domain(&x.dns, &o, &x.j, &x.t, &x.err), NULL);
}

/* The default list file: $MAILREP_DNSBLS, else data/dnsbls.txt beside the
 * directory holding the executable (build/mailrep → data/dnsbls.txt), else
 * the installed copy. */
static const char *default_lists(char *buf, size_t cap)
{
	const char *env = getenv("MAILREP_DNSBLS");
	if (env && *env) return env;
	char exe[4096];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n > 0) {
		exe[n] = 0;
		for (int up = 0; up < 2; up++) {
			char *slash = strrchr(exe, '/');
			if (!slash) break;
			*slash = 0;
		}
		snprintf(buf, cap, "%s/data/dnsbls.txt", exe);
		if (access(buf, R_OK) == 0) return buf;
	}
	return "/usr/share/mailrep/dnsbls.txt";
}

static int check_ip_cmd(int argc, char **argv)
{
	static const struct option opts[] = {{"lists", required_argument, 0, 'l'}, RUN_OPTIONS};
	const char *lists = NULL;
	struct run x = {0};
	int c, rc;
	while ((c = getopt_long(argc, argv, "l:r:jh", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			lists = optarg;
			break;
		default:
			if ((rc = run_option(&x, c)) >= 0) return rc;
		}
	}
	if (optind != argc - 1) return fail("check ip needs exactly one IP");
	char path[4200];
	if (!lists) lists = default_lists(path, sizeof path);
	struct check_dnsbl_set set;
	if (check_dnsbl_load(lists, &set, &x.err) < 0) return fail("%s", x.err.msg);
	struct check_ip_opts o = {argv[optind], &set};
	if ((rc = run_open(&x)) == 0)
		rc = run_close(&x, check_ip(x.r, &o, &x.j, &x.t, &x.err), NULL);
	check_dnsbl_set_free(&set);
	return rc;
}

static int check_smtp_cmd(int argc, char **argv)
{
	static const struct option opts[] = {{"helo", required_argument, 0, 'H'},
	                                     {"open-relay-probe", no_argument, 0, 'o'},
	                                     {"timeout", required_argument, 0, 't'},
	                                     RUN_OPTIONS};
	struct check_smtp_opts o = {0};
	struct run x = {0};
	int c, rc;
	uint64_t v;
	while ((c = getopt_long(argc, argv, "H:ot:r:jh", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			o.open_relay_probe = 1;
			break;
		case 't':
			if (base_parse_uint(optarg, 600000, &v) < 0 || !v)
				return fail("--timeout: milliseconds, 1 to 600000");
			o.timeout_ms = (unsigned)v;
			break;
		default:
			if ((rc = run_option(&x, c)) >= 0) return rc;
		}
	}
	if (optind != argc - 1) return fail("check smtp needs exactly one HOST[:PORT]");
	o.target = argv[optind];
	o.helo = x.helo;
	if ((rc = run_open(&x)) != 0) return rc;
	return run_close(&x, check_smtp(&x.dns, &o, &x.j, &x.t, &x.err), NULL);
}

static int check_message_cmd(int argc, char **argv)
{
	static const struct option opts[] = {{"ip", required_argument, 0, 'i'},
	                                     {"mail-from", required_argument, 0, 'm'},
	                                     {"helo", required_argument, 0, 'H'},
	                                     RUN_OPTIONS};
	struct check_message_opts o = {0};
	struct run x = {0};
	int c, rc;
	while ((c = getopt_long(argc, argv, "i:m:H:r:jh", opts, NULL)) != -1)
		if ((rc = run_option(&x, c)) >= 0) return rc;
	if (optind != argc - 1) return fail("check message needs exactly one FILE (or -)");
	o.ip = x.ip;
	o.mail_from = x.mail_from;
	o.helo = x.helo;
	const char *path = argv[optind];
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	if (!f) return fail("%s: cannot open", path);
	/* One byte more than AUTH_MSG_MAX tells an oversized message. */
	size_t cap = (size_t)AUTH_MSG_MAX + 1, n = 0;
	char *data = malloc(cap);
	if (!data) {
		if (f != stdin) fclose(f);
		return fail("out of memory");
	}
	size_t k;
	while (n < cap && (k = fread(data + n, 1, cap - n, f)) > 0) n += k;
	int bad = ferror(f);
	if (f != stdin) fclose(f);
	if (bad || n == cap) {
		free(data);
		return fail("%s: %s", path, bad ? "read error" : "larger than 64 MiB");
	}
	if ((rc = run_open(&x)) == 0)
		rc = run_close(&x, check_message(&x.dns, &o, data, n, &x.j, &x.t, &x.err), path);
	free(data);
	return rc;
}

int cli_check(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(check_help, argc < 2 ? stderr : stdout);
		return argc < 2 ? CHECK_USAGE : 0;
	}
	optind = 1;
	if (!strcmp(argv[1], "domain")) return check_domain_cmd(argc - 1, argv + 1);
	if (!strcmp(argv[1], "ip")) return check_ip_cmd(argc - 1, argv + 1);
	if (!strcmp(argv[1], "smtp")) return check_smtp_cmd(argc - 1, argv + 1);
	if (!strcmp(argv[1], "message")) return check_message_cmd(argc - 1, argv + 1);
	return fail("unknown check '%s' (domain, ip, smtp, message)", argv[1]);
}
