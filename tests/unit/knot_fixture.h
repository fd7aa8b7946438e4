/*
 * knot_fixture.h — starts a real authoritative server (Debian's knotd) on a
 * free loopback port for unit tests that resolve names, with its own
 * configuration, zone files and run directory in a fresh temporary
 * directory, and stops it afterwards.
 *
 * Usage: knot_start(&k, zones) where zones is a NULL-terminated list of
 * {origin, zone-file text} pairs; k.server is then "127.0.0.1:PORT".
 * Header-only (static functions) so any test can include it.
 */
#ifndef MAILREP_TEST_KNOT_FIXTURE_H
#define MAILREP_TEST_KNOT_FIXTURE_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dns/dns.h"

struct knot_zone {
	const char *origin;
	const char *text;
};

struct knot_fixture {
	char dir[64];
	char server[32];
	unsigned port;
	pid_t pid;
};

static unsigned knot_free_port(void)
{
	for (int tries = 0; tries < 100; tries++) {
		int t = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in sa = {.sin_family = AF_INET};
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		socklen_t sl = sizeof sa;
		if (bind(t, (struct sockaddr *)&sa, sizeof sa) < 0 ||
		    getsockname(t, (struct sockaddr *)&sa, &sl) < 0) {
			close(t);
			continue;
		}
		int u = socket(AF_INET, SOCK_DGRAM, 0);
		int ok = bind(u, (struct sockaddr *)&sa, sizeof sa) == 0;
		close(u);
		close(t);
		if (ok) return ntohs(sa.sin_port);
	}
	return 0;
}

static int knot_write(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f) return -1;
	fputs(text, f);
	return fclose(f);
}

static void knot_status(void *arg, const char *name, uint16_t type, struct dns_answer *ans)
{
	*(int *)arg = ans->status;
}

/* Returns 0 when the server answers authoritatively for the first zone. */
static int knot_start(struct knot_fixture *k, const struct knot_zone *zones)
{
	memset(k, 0, sizeof *k);
	snprintf(k->dir, sizeof k->dir, "/tmp/mailrep-knot-XXXXXX");
	if (!mkdtemp(k->dir)) return -1;
	k->port = knot_free_port();
	if (!k->port) return -1;
	snprintf(k->server, sizeof k->server, "127.0.0.1:%u", k->port);

	struct base_buf conf;
	base_buf_init(&conf);
	base_buf_printf(&conf,
	                "server:\n  rundir: \"%s\"\n  listen: 127.0.0.1@%u\n"
	                "  udp-workers: 1\n  tcp-workers: 1\n  background-workers: 1\n"
	                "database:\n  storage: \"%s\"\n"
	                "log:\n  - target: stderr\n    any: error\n"
	                "template:\n  - id: default\n    storage: \"%s\"\n    file: \"%%s.zone\"\n"
	                "zone:\n",
	                k->dir, k->port, k->dir, k->dir);
	for (const struct knot_zone *z = zones; z->origin; z++) {
		char path[256];
		base_buf_printf(&conf, "  - domain: %s\n", z->origin);
		snprintf(path, sizeof path, "%s/%s.zone", k->dir, z->origin);
		if (knot_write(path, z->text) < 0) return -1;
	}
	char cpath[128];
	snprintf(cpath, sizeof cpath, "%s/knot.conf", k->dir);
	int rc = knot_write(cpath, conf.data);
	base_buf_free(&conf);
	if (rc < 0) return -1;

	k->pid = fork();
	if (k->pid < 0) return -1;
	if (k->pid == 0) {
		/* the server goes when the test does, even when it crashes */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		execl("/usr/sbin/knotd", "knotd", "-c", cpath, (char *)NULL);
		_exit(127);
	}
	/* Wait (up to ~10 s) until the first zone's SOA is served. */
	struct dns_resolver *r;
	struct dns_resolver_config cfg = {k->server, 100, 1};
	if (dns_resolver_new(&r, &cfg, NULL) < 0) return -1;
	int status = -1;
	for (int i = 0; i < 100 && status != DNS_LOOKUP_OK; i++) {
		status = -1;
		dns_resolver_submit(r, zones[0].origin, DNS_T_SOA, knot_status, &status, NULL);
		dns_resolver_run(r);
		if (status != DNS_LOOKUP_OK) usleep(100 * 1000);
	}
	dns_resolver_free(r);
	return status == DNS_LOOKUP_OK ? 0 : -1;
}

static void knot_stop(struct knot_fixture *k)
{
	if (k->pid > 0) {
		kill(k->pid, SIGTERM);
		waitpid(k->pid, NULL, 0);
		k->pid = 0;
	}
	if (k->dir[0]) {
		char cmd[128];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", k->dir);
		if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", k->dir);
		k->dir[0] = 0;
	}
}

#endif
