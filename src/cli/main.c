/*
 * main.c — the mailrep executable: dispatches to a subcommand.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "cli/cli.h"

int cli_fail(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "mailrep %s: ", cmd);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return 2;
}

struct subcommand {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
};

static const struct subcommand commands[] = {
	{"dnsbl", cli_dnsbl, "serve DNS blocklist zones (rbldnsd-compatible command line)"},
	{"impact", cli_impact, "record trap hits: add one, or import many"},
	{"lookup", cli_lookup, "show the listings, history and evidence of an IP"},
	{"delist", cli_delist, "remove a listing (operator or self-service)"},
	{"stats", cli_stats, "listing statistics: new, removed, delist requests, listed"},
	{"export", cli_export, "write the listings as rbldnsd, txt, xml or bind files"},
	{"trap", cli_trap, "SMTP trap receiver: record every delivery as an impact"},
	{"traps", cli_traps, "define trap addresses and domains"},
	{"dkim", cli_dkim, "DKIM keys, signing and verification"},
	{"check", cli_check, "check a domain, an IP (DNSBLs, PTR), a mail server or a message"},
	{"relay", cli_relay, "outbound relay: sign, spool durably, deliver, retry, bounce"},
	{"queue", cli_queue, "show what a relay's spool holds, by domain or message"},
	{"send", cli_send, "submit a message on stdin to a relay over SMTP, like sendmail"},
	{"tlsrpt", cli_tlsrpt, "show the TLS reports (RFC 8460) a relay would send for a day"},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: mailrep COMMAND [options]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "  %-10s %s\n", "version", "print the version");
	fprintf(f, "\nRun 'mailrep COMMAND --help' for the options of a command.\n");
}

int main(int argc, char **argv)
{
	base_log_set_prefix("mailrep");
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("mailrep %s\n", MAILREP_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (!strcmp(cmd, commands[i].name)) return commands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "mailrep: unknown command '%s'\n", cmd);
	usage(stderr);
	return 2;
}
