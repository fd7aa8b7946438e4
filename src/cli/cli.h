/*
 * cli.h — subcommands of the mailrep executable. Each takes the arguments
 * after its name (argv[0] is the subcommand) and returns an exit status.
 */
#ifndef MAILREP_CLI_H
#define MAILREP_CLI_H

/* Prints "mailrep CMD: message" on standard error and returns 2, the exit
 * status of a usage error. */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

int cli_dnsbl(int argc, char **argv);
/* Lets `mailrep dnsbl` serve the listing store live (zone types store, store1..3). */
void cli_listing_register_sources(const char *lookup_url);
int cli_impact(int argc, char **argv);
int cli_lookup(int argc, char **argv);
int cli_delist(int argc, char **argv);
int cli_stats(int argc, char **argv);
int cli_export(int argc, char **argv);
int cli_traps(int argc, char **argv);
int cli_trap(int argc, char **argv);
int cli_dkim(int argc, char **argv);
int cli_check(int argc, char **argv);
int cli_relay(int argc, char **argv);
int cli_queue(int argc, char **argv);
int cli_send(int argc, char **argv);
int cli_tlsrpt(int argc, char **argv);

#endif
