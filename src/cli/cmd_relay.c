/*
 * cmd_relay.c — `mailrep relay`: the outbound relay daemon's command line
 * and [relay] config section. Options and config keys share names; list
 * options (route, trusted, dkim-key) add up, and a flag replaces the whole
 * list read from the config file.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth/auth.h"
#include "base/base.h"
#include "cli/cli.h"
#include "relay/account.h"
#include "relay/control.h"
#include "relay/relay.h"

static const char relay_help[] =
    "usage: mailrep relay --listen ADDR:PORT --spool DIR [options]\n"
    "\n"
    "The outbound relay: accepts mail from trusted clients, signs it with DKIM,\n"
    "spools it durably (250 only after the fsync) and delivers it.\n"
    "\n"
    "  --listen ADDR:PORT         where to accept SMTP submissions\n"
    "  --spool DIR                the spool directory (created if missing)\n"
    "  --route DOMAIN=HOST:PORT   next hop for a domain ('*' for every domain); HOST is an\n"
    "                             IP address or a host name (needs --resolver); repeatable\n"
    "  --trusted CIDR             a client network allowed to relay; repeatable (default: none)\n"
    "  --resolver HOST:PORT       DNS server for MX lookups of domains without a route\n"
    "  --smtp-port N              port of the MX hosts (25)\n"
    "  --dkim-key DOMAIN=SELECTOR:KEYFILE\n"
    "                             signing key for a From domain; repeatable; the first\n"
    "                             one also signs mail from every other domain\n"
    "  --log FILE                 accounting log, one JSON line per event\n"
    "  --csv FILE                 the same events as CSV, in PowerMTA's accounting style\n"
    "  --hostname NAME            name in the greeting, EHLO and DSNs\n"
    "  --user USER[:GROUP]        as root: become USER after binding (the spool is given\n"
    "                             to USER); default mailrep if it exists, else nobody\n"
    "  --retry-schedule LIST      delays between attempts, e.g. 10m,30m,1h,2h,4h (default)\n"
    "  --max-age DURATION         give up (expire, DSN) after this long (default 5d)\n"
    "  --delay-warning DURATION   one delayed-delivery DSN after this long deferred (0: off)\n"
    "  --suspend DURATION         rest for a destination after a 4xx greeting or 421 (5m)\n"
    "  --dead-time DURATION       skip an address that refused or timed out this long (1m)\n"
    "  --conn-limit N             connections per destination (10)\n"
    "  --msgs-per-conn N          messages per connection before a new one (100)\n"
    "  --msgs-per-sec N           messages a second per site and source IP (0: no limit)\n"
    "  --conns-per-min N          new connections a minute per site and source IP (0: no limit)\n"
    "  --pool NAME=IP[/EHLO][*WEIGHT],...\n"
    "                             an IP pool: source addresses, their EHLO names and\n"
    "                             weights; repeatable (config: [pool NAME] sections)\n"
    "  --default-pool NAME        the pool of mail that names none (default: no bind)\n"
    "  --max-size BYTES           largest message accepted (10485760)\n"
    "  --max-rcpts N              recipients per message (100)\n"
    "  --max-conns N              simultaneous inbound sessions (256)\n"
    "  --max-outbound N           simultaneous outbound connections, all sites (1000)\n"
    "  --timeout DURATION         inbound idle timeout (5m)\n"
    "  --commit-delay USEC        group-commit window in microseconds (0: one loop turn)\n"
    "  --sign-threads N           DKIM signing and password threads (0: one per core)\n"
    "  --bounce-rules FILE        extra bounce classification rules, tried first\n"
    "  --tls-cert FILE            certificate (PEM chain) for STARTTLS at reception\n"
    "  --tls-key FILE             its private key (PEM; default: in the cert file)\n"
    "  --tls-policy DOMAIN=MODE   STARTTLS when delivering: opportunistic (default),\n"
    "                             required, verify, dane-only or off; '*' for every\n"
    "                             domain; repeatable\n"
    "  --tls-ca FILE              CA certificates for the verify policy (default: system)\n"
    "  --auth-without-tls         offer AUTH before STARTTLS too (default: after it only)\n"
    "  --mta-sts on|off           honour the MTA-STS policies of MX-routed domains (on)\n"
    "  --mta-sts-timeout DURATION time to fetch one policy over HTTPS (60s)\n"
    "  --mta-sts-port N           HTTPS port of policy hosts (443; for tests)\n"
    "  --dane on|off              authenticate MX hosts by DANE TLSA records (off);\n"
    "                             --resolver must then be a validating resolver\n"
    "  --tlsrpt on|off            count TLS results per domain and send daily TLS reports\n"
    "                             (RFC 8460) to the domains that ask for them (off)\n"
    "  --tlsrpt-org NAME          the reports' organization-name (default: the host name)\n"
    "  --tlsrpt-contact TEXT      the reports' contact-info (an address or a URL)\n"
    "  --tlsrpt-from ADDR         the reports' sender (default: the null sender)\n"
    "  --tlsrpt-delay DURATION    the most the reports wait after midnight UTC, at random\n"
    "                             (1h; 0 for tests)\n"
    "  --tlsrpt-retry DURATION    wait before a failed report's second attempt (5m); then\n"
    "                             three times longer each time, at most 4h, for 24h\n"
    "  --tlsrpt-port N            HTTPS port of every https: report URI (for tests)\n"
    "  --hash-password            read a password on stdin, print its hash for [account]\n"
    "  -c, --config FILE          read the [relay], [pool NAME], [domain NAME] and\n"
    "                             [account NAME] sections of an INI file first\n"
    "  --debug                    verbose log on stderr\n"
    "\n"
    "SIGHUP reads the same files and flags again and applies their accounts, DKIM\n"
    "keys, trusted networks and bounce rules; a configuration with an error is\n"
    "refused and the running one stays. SIGTERM stops after a final commit.\n";

struct relay_cli {
	struct relay_config c;
	char **strs; /* every string kept() (config values the config points to) */
	size_t nstrs, capstrs;
	int flag_routes, flag_trusted, flag_dkim, flag_pools, flag_tls_policy;
	struct relay_accounts accounts;
	const char *rules_file;
	struct base_err err; /* parse()'s error */
};

#define fail(...) cli_fail("relay", __VA_ARGS__)

static const char *keep(struct relay_cli *r, const char *v)
{
	char *s = base_xstrdup(v);
	if (r->nstrs == r->capstrs) {
		r->capstrs = r->capstrs ? 2 * r->capstrs : 32;
		r->strs = base_xrealloc(r->strs, r->capstrs * sizeof *r->strs);
	}
	r->strs[r->nstrs++] = s;
	return s;
}

static int parse_u32(const char *v, uint32_t max, uint32_t *out)
{
	uint64_t n;
	int k = base_parse_uint(v, max, &n);
	if (k <= 0 || v[k]) return -1;
	*out = (uint32_t)n;
	return 0;
}

static int add_route(struct relay_cli *r, const char *v, struct base_err *err)
{
	const char *eq = strchr(v, '=');
	if (!eq || eq == v) return base_errf(err, "route '%s': expected DOMAIN=HOST:PORT", v);
	struct base_sockaddr a;
	struct relay_config *c = &r->c;
	char name[256];
	uint16_t nport;
	if (base_parse_hostport(eq + 1, 25, &a, err) < 0) {
		if (!relay_route_host_parse(eq + 1, name, sizeof name, &nport))
			return base_errf(
			    err,
			    "route '%s': next hop must be an IP address or a host name, "
			    "with an optional :PORT",
			    v);
		c->routes = base_xrealloc(c->routes, (c->nroutes + 1) * sizeof *c->routes);
		struct relay_route *rt = &c->routes[c->nroutes++];
		rt->domain = base_xstrndup(v, (size_t)(eq - v));
		rt->host = base_xstrdup(name);
		rt->port = nport;
		rt->name = 1;
		return 0;
	}
	c->routes = base_xrealloc(c->routes, (c->nroutes + 1) * sizeof *c->routes);
	struct relay_route *rt = &c->routes[c->nroutes++];
	rt->domain = base_xstrndup(v, (size_t)(eq - v));
	char host[64];
	const char *hp = eq + 1;
	const char *colon = strrchr(hp, ':');
	size_t hl = colon && hp[0] != '[' ? (size_t)(colon - hp) : strlen(hp);
	if (hp[0] == '[') {
		const char *cb = strchr(hp, ']');
		hl = cb ? (size_t)(cb - hp - 1) : 0;
		hp++;
	}
	snprintf(host, sizeof host, "%.*s", (int)hl, hp);
	if (strchr(host, ':')) {
		char tmp[80];
		snprintf(tmp, sizeof tmp, "[%s]", host);
		rt->host = base_xstrdup(tmp);
	} else {
		rt->host = base_xstrdup(host);
	}
	rt->port = a.port;
	rt->name = 0;
	return 0;
}

static int add_dkim(struct relay_cli *r, const char *v, struct base_err *err)
{
	const char *eq = strchr(v, '='), *colon = eq ? strchr(eq + 1, ':') : NULL;
	if (!eq || !colon || eq == v || colon == eq + 1 || !colon[1])
		return base_errf(err, "dkim-key '%s': expected DOMAIN=SELECTOR:KEYFILE", v);
	FILE *f = fopen(colon + 1, "rb");
	if (!f) return base_errf(err, "%s: %s", colon + 1, strerror(errno));
	char pem[65536];
	size_t n = fread(pem, 1, sizeof pem, f);
	int big = !feof(f);
	fclose(f);
	if (big) return base_errf(err, "%s: larger than 64 KB", colon + 1);
	struct auth_dkim_key *k;
	if (auth_dkim_key_load(&k, pem, n, err) < 0) return -1;
	struct relay_config *c = &r->c;
	c->dkim = base_xrealloc(c->dkim, (c->ndkim + 1) * sizeof *c->dkim);
	struct relay_dkim *d = &c->dkim[c->ndkim++];
	d->domain = base_xstrndup(v, (size_t)(eq - v));
	for (char *p = d->domain; *p; p++) *p = base_lower(*p);
	d->selector = base_xstrndup(eq + 1, (size_t)(colon - eq - 1));
	d->key = k;
	return 0;
}

static int add_tls_policy(struct relay_cli *r, const char *v, struct base_err *err)
{
	static const char *const modes[] = {"opportunistic", "off", "required", "verify",
	                                    "dane-only"};
	const char *eq = strchr(v, '=');
	if (!eq || eq == v) return base_errf(err, "tls-policy '%s': expected DOMAIN=MODE", v);
	size_t m = 0;
	while (m < 5 && strcmp(eq + 1, modes[m])) m++;
	if (m == 5)
		return base_errf(err,
		                 "tls-policy '%s': mode must be opportunistic, required, verify, "
		                 "dane-only or off",
		                 v);
	struct relay_config *c = &r->c;
	c->tls_policy = base_xrealloc(c->tls_policy, (c->ntls_policy + 1) * sizeof *c->tls_policy);
	c->tls_policy[c->ntls_policy].domain = base_xstrndup(v, (size_t)(eq - v));
	c->tls_policy[c->ntls_policy++].mode = (enum relay_tls_mode)m;
	return 0;
}

/* `mailrep relay --hash-password`: one line from stdin, its hash on stdout. */
static int hash_password(void)
{
	char pw[1024], out[RELAY_PW_HASH_MAX];
	struct base_err err;
	if (!fgets(pw, sizeof pw, stdin)) return fail("--hash-password: no password on stdin");
	pw[strcspn(pw, "\r\n")] = 0;
	if (!*pw) return fail("--hash-password: empty password");
	if (relay_password_hash(pw, strlen(pw), RELAY_PW_ITER, out, sizeof out, &err) < 0)
		return fail("%s", err.msg);
	puts(out);
	return 0;
}

static void clear_lists(struct relay_cli *r, const char *key)
{
	struct relay_config *c = &r->c;
	if (!strcmp(key, "route") && !r->flag_routes) {
		r->flag_routes = 1;
		for (size_t i = 0; i < c->nroutes; i++)
			free(c->routes[i].domain), free(c->routes[i].host);
		c->nroutes = 0;
	} else if (!strcmp(key, "trusted") && !r->flag_trusted) {
		r->flag_trusted = 1;
		c->ntrusted = 0;
	} else if (!strcmp(key, "pool") && !r->flag_pools) {
		r->flag_pools = 1;
		relay_pools_clear(c);
	} else if (!strcmp(key, "tls-policy") && !r->flag_tls_policy) {
		r->flag_tls_policy = 1;
		for (size_t i = 0; i < c->ntls_policy; i++) free(c->tls_policy[i].domain);
		c->ntls_policy = 0;
	} else if (!strcmp(key, "dkim-key") && !r->flag_dkim) {
		r->flag_dkim = 1;
		for (size_t i = 0; i < c->ndkim; i++) {
			free(c->dkim[i].domain);
			free(c->dkim[i].selector);
			auth_dkim_key_free(c->dkim[i].key);
		}
		c->ndkim = 0;
	}
}

static int relay_set(struct relay_cli *r, const char *key, const char *v, struct base_err *err)
{
	struct relay_config *c = &r->c;
	uint32_t u;
	if (!strcmp(key, "listen"))
		c->listen = keep(r, v);
	else if (!strcmp(key, "spool"))
		c->spool = keep(r, v);
	else if (!strcmp(key, "log"))
		c->log = keep(r, v);
	else if (!strcmp(key, "csv"))
		c->csv = keep(r, v);
	else if (!strcmp(key, "hostname"))
		c->hostname = keep(r, v);
	else if (!strcmp(key, "user"))
		c->user = keep(r, v);
	else if (!strcmp(key, "resolver"))
		c->resolver = keep(r, v);
	else if (!strcmp(key, "bounce-rules"))
		r->rules_file = keep(r, v);
	else if (!strcmp(key, "tls-cert"))
		c->tls_cert = keep(r, v);
	else if (!strcmp(key, "tls-key"))
		c->tls_key = keep(r, v);
	else if (!strcmp(key, "tls-ca"))
		c->tls_ca = keep(r, v);
	else if (!strcmp(key, "tls-policy"))
		return add_tls_policy(r, v, err);
	else if (!strcmp(key, "dane")) {
		if (!strcmp(v, "on") || !strcmp(v, "yes"))
			c->dane = 1;
		else if (!strcmp(v, "off") || !strcmp(v, "no"))
			c->dane = 0;
		else
			return base_errf(err, "dane: expected on or off, not '%s'", v);
	} else if (!strcmp(key, "auth-without-tls")) {
		if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "1"))
			c->auth_without_tls = 1;
		else if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "0"))
			c->auth_without_tls = 0;
		else
			return base_errf(err, "auth-without-tls: expected yes or no, not '%s'", v);
	} else if (!strcmp(key, "route"))
		return add_route(r, v, err);
	else if (!strcmp(key, "dkim-key"))
		return add_dkim(r, v, err);
	else if (!strcmp(key, "trusted")) {
		struct base_cidr cidr;
		if (base_parse_cidr(v, &cidr, err) < 0) return -1;
		c->trusted = base_xrealloc(c->trusted, (c->ntrusted + 1) * sizeof *c->trusted);
		c->trusted[c->ntrusted++] = cidr;
	} else if (!strcmp(key, "retry-schedule")) {
		return relay_schedule_parse(&c->schedule, v, err);
	} else if (!strcmp(key, "max-age") || !strcmp(key, "suspend") || !strcmp(key, "timeout") ||
	           !strcmp(key, "dead-time") || !strcmp(key, "delay-warning")) {
		if (base_parse_duration(v, &u, err) < 0) return -1;
		if (!strcmp(key, "delay-warning"))
			c->delay_warning = u;
		else if (!strcmp(key, "max-age"))
			c->schedule.max_age = u;
		else if (!strcmp(key, "suspend"))
			c->suspend = u;
		else if (!strcmp(key, "dead-time"))
			c->dead_time = u;
		else
			c->timeout = u ? u : 1;
	} else if (!strcmp(key, "conn-limit") || !strcmp(key, "max-rcpts") ||
	           !strcmp(key, "max-conns") || !strcmp(key, "commit-delay") ||
	           !strcmp(key, "max-outbound") ||
	           !strcmp(key, "max-size") || !strcmp(key, "smtp-port") ||
	           !strcmp(key, "msgs-per-conn") || !strcmp(key, "sign-threads")) {
		int zero_ok = !strcmp(key, "commit-delay") || !strcmp(key, "sign-threads");
		uint32_t max = !strcmp(key, "commit-delay") ? 1000000
		               : !strcmp(key, "sign-threads") ? 64 : 1u << 30;
		if (parse_u32(v, max, &u) < 0 || (u == 0 && !zero_ok))
			return base_errf(err, "%s: bad number '%s'", key, v);
		if (!strcmp(key, "conn-limit"))
			c->conn_limit = u;
		else if (!strcmp(key, "max-rcpts"))
			c->max_rcpts = u;
		else if (!strcmp(key, "max-conns"))
			c->max_conns = u;
		else if (!strcmp(key, "max-outbound"))
			c->max_outbound = u;
		else if (!strcmp(key, "max-size"))
			c->max_size = u;
		else if (!strcmp(key, "msgs-per-conn"))
			c->msgs_per_conn = u;
		else if (!strcmp(key, "sign-threads"))
			c->sign_threads = u;
		else if (!strcmp(key, "smtp-port")) {
			if (u > 65535) return base_errf(err, "smtp-port: bad port '%s'", v);
			c->smtp_port = (uint16_t)u;
		} else
			c->commit_delay_us = u;
	} else if (!strncmp(key, "tlsrpt", 6)) {
		int k = relay_tlsrpt_set(c, key, keep(r, v), err);
		if (k == 1) return base_errf(err, "unknown setting '%s'", key);
		return k;
	} else if (!strncmp(key, "mta-sts", 7)) {
		int k = relay_mtasts_set(c, key, v, err);
		if (k == 1) return base_errf(err, "unknown setting '%s'", key);
		return k;
	} else {
		int k = relay_shaping_set(c, key, v, err);
		if (k == 1) return base_errf(err, "unknown setting '%s'", key);
		return k;
	}
	return 0;
}

static int ini_cb(void *ctx, const char *key, const char *value, struct base_err *err)
{
	return relay_set(ctx, key, value, err);
}

static int load_rules(struct relay_cli *r, struct base_err *err)
{
	if (r->rules_file) {
		FILE *f = fopen(r->rules_file, "rb");
		if (!f) return base_errf(err, "%s: %s", r->rules_file, strerror(errno));
		struct base_buf b;
		base_buf_init(&b);
		char chunk[4096];
		size_t n;
		while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && b.len < (1u << 20))
			base_buf_append(&b, chunk, n);
		fclose(f);
		int rc =
		    relay_rules_add(&r->c.rules, b.data ? b.data : "", b.len, r->rules_file, err);
		base_buf_free(&b);
		if (rc < 0) return -1;
	}
	return relay_rules_add(&r->c.rules, relay_rules_default, strlen(relay_rules_default),
	                       "built-in rules", err);
}

enum { O_BASE = 256 };
static const struct option relay_opts[] = {{"listen", required_argument, NULL, O_BASE},
                                     {"spool", required_argument, NULL, O_BASE},
                                     {"route", required_argument, NULL, O_BASE},
                                     {"trusted", required_argument, NULL, O_BASE},
                                     {"resolver", required_argument, NULL, O_BASE},
                                     {"dkim-key", required_argument, NULL, O_BASE},
                                     {"log", required_argument, NULL, O_BASE},
                                     {"hostname", required_argument, NULL, O_BASE},
                                     {"retry-schedule", required_argument, NULL, O_BASE},
                                     {"max-age", required_argument, NULL, O_BASE},
                                     {"delay-warning", required_argument, NULL, O_BASE},
                                     {"suspend", required_argument, NULL, O_BASE},
                                     {"dead-time", required_argument, NULL, O_BASE},
                                     {"user", required_argument, NULL, O_BASE},
                                     {"conn-limit", required_argument, NULL, O_BASE},
                                     {"max-size", required_argument, NULL, O_BASE},
                                     {"max-rcpts", required_argument, NULL, O_BASE},
                                     {"max-conns", required_argument, NULL, O_BASE},
                                     {"max-outbound", required_argument, NULL, O_BASE},
                                     {"timeout", required_argument, NULL, O_BASE},
                                     {"commit-delay", required_argument, NULL, O_BASE},
                                     {"sign-threads", required_argument, NULL, O_BASE},
                                     {"smtp-port", required_argument, NULL, O_BASE},
                                     {"csv", required_argument, NULL, O_BASE},
                                     {"msgs-per-conn", required_argument, NULL, O_BASE},
                                     {"bounce-rules", required_argument, NULL, O_BASE},
                                     {"msgs-per-sec", required_argument, NULL, O_BASE},
                                     {"conns-per-min", required_argument, NULL, O_BASE},
                                     {"pool", required_argument, NULL, O_BASE},
                                     {"default-pool", required_argument, NULL, O_BASE},
                                     {"tls-cert", required_argument, NULL, O_BASE},
                                     {"tls-key", required_argument, NULL, O_BASE},
                                     {"tls-ca", required_argument, NULL, O_BASE},
                                     {"tls-policy", required_argument, NULL, O_BASE},
                                     {"mta-sts", required_argument, NULL, O_BASE},
                                     {"dane", required_argument, NULL, O_BASE},
                                     {"mta-sts-port", required_argument, NULL, O_BASE},
                                     {"mta-sts-timeout", required_argument, NULL, O_BASE},
                                     {"tlsrpt", required_argument, NULL, O_BASE},
                                     {"tlsrpt-org", required_argument, NULL, O_BASE},
                                     {"tlsrpt-contact", required_argument, NULL, O_BASE},
                                     {"tlsrpt-from", required_argument, NULL, O_BASE},
                                     {"tlsrpt-delay", required_argument, NULL, O_BASE},
                                     {"tlsrpt-retry", required_argument, NULL, O_BASE},
                                     {"tlsrpt-port", required_argument, NULL, O_BASE},
                                     {"auth-without-tls", no_argument, NULL, 'A'},
                                     {"hash-password", no_argument, NULL, 'H'},
                                     {"config", required_argument, NULL, 'c'},
                                     {"debug", no_argument, NULL, 'd'},
                                     {"help", no_argument, NULL, 'h'},
                                     {NULL, 0, NULL, 0}};

/* Frees what parse() built. */
static void relay_cli_free(struct relay_cli *r)
{
	for (size_t i = 0; i < r->c.nroutes; i++)
		free(r->c.routes[i].domain), free(r->c.routes[i].host);
	free(r->c.routes);
	for (size_t i = 0; i < r->c.ndkim; i++) {
		free(r->c.dkim[i].domain);
		free(r->c.dkim[i].selector);
		auth_dkim_key_free(r->c.dkim[i].key);
	}
	free(r->c.dkim);
	free(r->c.trusted);
	for (size_t i = 0; i < r->c.ntls_policy; i++) free(r->c.tls_policy[i].domain);
	free(r->c.tls_policy);
	relay_accounts_free(&r->accounts);
	relay_rules_free(r->c.rules);
	relay_shaping_free(&r->c);
	for (size_t i = 0; i < r->nstrs; i++) free(r->strs[i]);
	free(r->strs);
}

#define BAD(...) (base_errf(&r->err, __VA_ARGS__), 2)

/* The config files (-c) then the flags, into r, checked: 0, -1 after
 * --help, or 2 with r->err set. Run again for a reload. */
static int parse(struct relay_cli *r, int argc, char **argv)
{
	struct base_err err;
	int rc = 0, c, idx = 0;
	relay_config_init(&r->c);
	for (int i = 1; i < argc && !rc; i++)
		if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc &&
		    (base_ini_read(argv[i + 1], "relay", ini_cb, r, &err) < 0 ||
		     relay_config_sections(&r->c, argv[i + 1], &err) < 0 ||
		     relay_accounts_load(&r->accounts, argv[i + 1], &err) < 0))
			rc = BAD("%s", err.msg);
	r->c.accounts = &r->accounts;
	optind = 0; /* glibc: start over, also when parsing again */
	while (!rc && (c = getopt_long(argc, argv, "hc:", relay_opts, &idx)) != -1) {
		switch (c) {
		case 'h':
			fputs(relay_help, stdout);
			rc = -1;
			break;
		case 'c':
			break;
		case 'd':
			base_log_set_level(BASE_LOG_DEBUG);
			break;
		case 'A':
			r->c.auth_without_tls = 1;
			break;
		case O_BASE:
			clear_lists(r, relay_opts[idx].name);
			if (relay_set(r, relay_opts[idx].name, optarg, &err) < 0) rc = BAD("%s", err.msg);
			break;
		default:
			rc = BAD("see --help");
		}
	}
	if (!rc && optind != argc) rc = BAD("unexpected argument '%s'", argv[optind]);
	if (!rc && !r->c.listen) rc = BAD("--listen ADDR:PORT is required");
	if (!rc && !r->c.spool) rc = BAD("--spool DIR is required");
	if (!rc && load_rules(r, &err) < 0) rc = BAD("%s", err.msg);
	if (!rc && relay_shaping_check(&r->c, &err) < 0) rc = BAD("%s", err.msg);
	if (!rc && relay_routes_check(&r->c, &err) < 0) rc = BAD("%s", err.msg);
	if (!rc && relay_accounts_check(&r->accounts, &r->c, &err) < 0) rc = BAD("%s", err.msg);
	if (!rc && r->c.tls_key && !r->c.tls_cert) rc = BAD("--tls-key needs --tls-cert");
	return rc;
}

/* SIGHUP: the same arguments, read again; every configuration read stays
 * until the relay returns (the relay may still use the ones it replaced). */
static struct {
	int argc;
	char **argv;
	struct relay_cli *gens[256];
	size_t ngens;
} reloads;

static const struct relay_config *reload_config(struct base_err *err)
{
	if (reloads.ngens == sizeof reloads.gens / sizeof reloads.gens[0]) {
		base_errf(err, "%zu reloads since the start: restart the relay", reloads.ngens);
		return NULL;
	}
	struct relay_cli *r = base_xcalloc(1, sizeof *r);
	if (parse(r, reloads.argc, reloads.argv) != 0) {
		base_errf(err, "%s", r->err.msg);
		relay_cli_free(r);
		free(r);
		return NULL;
	}
	r->c.reload = reload_config;
	reloads.gens[reloads.ngens++] = r;
	return &r->c;
}

int cli_relay(int argc, char **argv)
{
	struct relay_cli r;
	memset(&r, 0, sizeof r);
	base_log_set_prefix("relay");
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--hash-password")) return hash_password();
	int rc = parse(&r, argc, argv);
	if (rc > 0) rc = fail("%s", r.err.msg);
	if (!rc && !r.c.ntrusted && !r.accounts.n)
		base_warn("no --trusted network and no account: every client will be refused");
	struct base_err err;
	reloads.argc = argc;
	reloads.argv = argv;
	r.c.reload = reload_config;
	if (!rc && relay_run(&r.c, &err) < 0) rc = fail("%s", err.msg);
	relay_cli_free(&r);
	for (size_t i = 0; i < reloads.ngens; i++) {
		relay_cli_free(reloads.gens[i]);
		free(reloads.gens[i]);
	}
	reloads.ngens = 0;
	return rc < 0 ? 0 : rc;
}

#undef BAD

/* ---- mailrep queue ---------------------------------------------------------- */

#define qfail(...) cli_fail("queue", __VA_ARGS__)

static const char queue_help[] =
    "usage: mailrep queue --spool DIR [--json] [--list] [--limit N] [--after CURSOR]\n"
    "                     [--offline]\n"
    "       mailrep queue --spool DIR [--json] COMMAND...\n"
    "\n"
    "Shows and manages a relay's queue. With the relay running it asks the relay\n"
    "over its control socket (DIR/control): the summary is by domain, site, pool\n"
    "and account, with the suspensions. Without it (or with --offline) it reads\n"
    "the spool without changing it: the summary is by domain. --list adds every\n"
    "message with its pending recipients, attempts and next try (--limit N: at\n"
    "most N messages from a running relay, the newest; 1000 by default, 10000 at\n"
    "most, and fewer when they hold more than 10000 recipients; --after CURSOR:\n"
    "the next page, older than the one whose reply gave CURSOR as \"next\").\n"
    "\n"
    "Commands (they need the relay running; each is written to its accounting\n"
    "log as an `admin` event):\n"
    "  summary | list [N] [after CURSOR]      as above\n"
    "  suspend domain|site|pool|account NAME [DURATION|@UNIXTIME]\n"
    "                                         hold its mail (not tried, no attempt\n"
    "                                         counted), until resumed or for DURATION;\n"
    "                                         kept across restarts\n"
    "  resume domain|site|pool|account NAME   end a suspension\n"
    "  bounce id|domain|account NAME          bounce the pending recipients, with a\n"
    "                                         DSN to the sender (category admin)\n"
    "  retry id ID | retry domain NAME | retry all\n"
    "                                         make them due now\n"
    "A site is named with its port: a route's HOST:PORT, or MX hosts \"mx1,mx2:25\".\n";

struct qdomain {
	char *name;
	uint64_t rcpts, deferred; /* deferred: tried at least once */
};

struct qview {
	int list, json;
	uint64_t msgs, rcpts;
	int64_t oldest;
	struct qdomain *doms;
	size_t ndoms;
	int first;
};


static void iso(int64_t t, char *out, size_t n)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void on_queued(void *arg, const struct relay_record *m, const struct relay_loc *loc,
                      const uint32_t *states, const uint32_t *attempts, const int64_t *next)
{
	struct qview *q = arg;
	q->msgs++;
	if (!q->oldest || m->received < q->oldest) q->oldest = m->received;
	char t[32];
	iso(m->received, t, sizeof t);
	if (q->list && q->json) {
		printf("%s{\"id\":", q->first ? "" : ",");
		base_json_fputs(stdout, m->id);
		printf(",\"sender\":");
		base_json_fputs(stdout, m->sender);
		printf(",\"received\":\"%s\",\"size\":%u,\"rcpts\":[", t, loc->len);
	} else if (q->list) {
		printf("%s  %s  <%s>  %u bytes\n", m->id, t, m->sender, loc->len);
	}
	q->first = 0;
	const char *r = m->rcpts;
	int firstr = 1;
	for (uint32_t i = 0; i < m->nrcpt; i++, r += strlen(r) + 1) {
		if (states[i] != RELAY_RCPT_PENDING) continue;
		q->rcpts++;
		const char *dom = strrchr(r, '@') ? strrchr(r, '@') + 1 : "";
		size_t k = 0;
		while (k < q->ndoms && base_strcasecmp_ascii(q->doms[k].name, dom)) k++;
		if (k == q->ndoms) {
			q->doms = base_xrealloc(q->doms, (q->ndoms + 1) * sizeof *q->doms);
			q->doms[q->ndoms++] = (struct qdomain){.name = base_xstrdup(dom)};
		}
		q->doms[k].rcpts++;
		if (attempts[i]) q->doms[k].deferred++;
		if (!q->list) continue;
		char nx[32] = "now";
		if (next[i]) iso(next[i], nx, sizeof nx);
		if (q->json) {
			printf("%s{\"rcpt\":", firstr ? "" : ",");
			base_json_fputs(stdout, r);
			printf(",\"attempts\":%u,\"next\":\"%s\"}", attempts[i], nx);
		} else {
			printf("    %s  attempts %u  next %s\n", r, attempts[i], nx);
		}
		firstr = 0;
	}
	if (q->list && q->json) printf("]}");
}

static int cmp_dom(const void *a, const void *b)
{
	const struct qdomain *x = a, *y = b;
	if (x->rcpts != y->rcpts) return x->rcpts > y->rcpts ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* The string value of a top-level member of a control reply ("text",
 * "message", "error"), unescaped into out; 0 if absent. Inside a JSON
 * string a quote is always escaped, so the pattern cannot match there. */
static int reply_field(const char *doc, const char *key, struct base_buf *out)
{
	char pat[32];
	snprintf(pat, sizeof pat, "\"%s\":\"", key);
	const char *p = strstr(doc, pat);
	if (!p) return 0;
	for (p += strlen(pat); *p && *p != '"'; p++) {
		char c = *p;
		if (c == '\\' && p[1]) {
			p++;
			c = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
			if (*p == 'u' && strlen(p) >= 5) {
				c = (char)strtol((char[]){p[1], p[2], p[3], p[4], 0}, NULL, 16);
				p += 4;
			}
		}
		base_buf_append(out, &c, 1);
	}
	base_buf_append(out, "", 1);
	return 1;
}

/* Asks the running relay; 1 answered (rc set), 0 not running. */
static int queue_ask(const char *spool, const char *line, int json, int *rc)
{
	struct base_buf reply, f;
	base_buf_init(&reply);
	base_buf_init(&f);
	struct base_err err;
	int r = relay_ctl_call(spool, line, &reply, &err);
	if (r <= 0) {
		base_buf_free(&reply);
		if (r < 0) *rc = qfail("%s", err.msg);
		return r < 0;
	}
	base_buf_append(&reply, "", 1);
	int ok = strstr(reply.data, "\"ok\":true") == reply.data + 1;
	if (!ok) {
		if (json) fputs(reply.data, stdout);
		*rc = qfail("%s", reply_field(reply.data, "error", &f) ? f.data : reply.data);
	} else if (json) {
		fputs(reply.data, stdout);
		*rc = 0;
	} else {
		if (reply_field(reply.data, "text", &f) || reply_field(reply.data, "message", &f))
			fputs(f.data, stdout);
		if (f.len > 1 && f.data[f.len - 2] != '\n') fputs("\n", stdout);
		*rc = 0;
	}
	base_buf_free(&f);
	base_buf_free(&reply);
	return 1;
}

int cli_queue(int argc, char **argv)
{
	static const struct option opts[] = {{"spool", required_argument, NULL, 's'},
	                                     {"list", no_argument, NULL, 'l'},
	                                     {"limit", required_argument, NULL, 'n'},
	                                     {"after", required_argument, NULL, 'a'},
	                                     {"offline", no_argument, NULL, 'o'},
	                                     {"json", no_argument, NULL, 'j'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {NULL, 0, NULL, 0}};
	struct qview q;
	memset(&q, 0, sizeof q);
	q.first = 1;
	const char *spool = NULL, *limit = NULL, *after = NULL;
	int c, offline = 0;
	/* "+": options first, then the command words (which may look like options) */
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			spool = optarg;
			break;
		case 'l':
			q.list = 1;
			break;
		case 'n':
			limit = optarg;
			break;
		case 'a':
			after = optarg;
			q.list = 1;
			break;
		case 'o':
			offline = 1;
			break;
		case 'j':
			q.json = 1;
			break;
		case 'h':
			fputs(queue_help, stdout);
			return 0;
		default:
			return qfail("see --help");
		}
	}
	if (!spool) return qfail("--spool DIR is required");
	/* the request line: the command words, or summary / list */
	char line[RELAY_CTL_LINE_MAX + 1];
	size_t len = 0;
	if ((limit || after) && optind < argc)
		return qfail("--limit and --after go with --list, not with a command");
	if (after && offline)
		return qfail("--after needs the relay running (an offline list shows every message)");
	if (optind == argc) {
		int n = snprintf(line, sizeof line, "%s%s%s%s%s", q.list ? "list" : "summary",
		                 q.list && limit ? " " : "", q.list && limit ? limit : "",
		                 after ? " after " : "", after ? after : "");
		if (n < 0 || (size_t)n >= sizeof line)
			return qfail("command longer than %u bytes", RELAY_CTL_LINE_MAX);
		len = (size_t)n;
	}
	for (int i = optind; i < argc; i++) {
		size_t n = strlen(argv[i]);
		if (len + n + 1 > RELAY_CTL_LINE_MAX)
			return qfail("command longer than %u bytes", RELAY_CTL_LINE_MAX);
		if (len) line[len++] = ' ';
		memcpy(line + len, argv[i], n + 1);
		len += n;
	}
	struct relay_ctl_req req;
	struct base_err err;
	if (relay_ctl_parse(line, len, &req, &err) < 0) return qfail("%s", err.msg);
	int view = req.op == RELAY_CTL_SUMMARY || req.op == RELAY_CTL_LIST;
	if (req.op == RELAY_CTL_LIST) q.list = 1;
	if (!offline || !view) {
		int rc;
		if (queue_ask(spool, line, q.json, &rc)) return rc;
		if (!view)
			return qfail(
			    "no relay is running on %s (no answer on %s/%s): '%s' needs it", spool,
			    spool, RELAY_CTL_SOCKET, relay_ctl_op_name(req.op));
	}
	if (q.json) printf("{\"messages\":[");
	int rc = relay_spool_scan(spool, on_queued, &q, &err);
	if (rc < 0) {
		if (q.json) printf("]}\n");
		return qfail("%s", err.msg);
	}
	base_sort(q.doms, q.ndoms, sizeof *q.doms, cmp_dom);
	char t[32] = "-";
	if (q.oldest) iso(q.oldest, t, sizeof t);
	if (q.json) {
		printf("],\"total\":{\"messages\":%llu,\"recipients\":%llu,\"oldest\":",
		       (unsigned long long)q.msgs, (unsigned long long)q.rcpts);
		if (q.oldest)
			printf("\"%s\"", t);
		else
			printf("null");
		printf("},\"domains\":[");
		for (size_t i = 0; i < q.ndoms; i++) {
			printf("%s{\"domain\":", i ? "," : "");
			base_json_fputs(stdout, q.doms[i].name);
			printf(",\"recipients\":%llu,\"deferred\":%llu}",
			       (unsigned long long)q.doms[i].rcpts,
			       (unsigned long long)q.doms[i].deferred);
		}
		printf("]}\n");
	} else {
		printf("%llu messages, %llu recipients pending, oldest %s\n",
		       (unsigned long long)q.msgs, (unsigned long long)q.rcpts, t);
		for (size_t i = 0; i < q.ndoms; i++)
			printf("  %-40s %8llu recipients  %8llu deferred\n", q.doms[i].name,
			       (unsigned long long)q.doms[i].rcpts,
			       (unsigned long long)q.doms[i].deferred);
	}
	for (size_t i = 0; i < q.ndoms; i++) free(q.doms[i].name);
	free(q.doms);
	return 0;
}

/* ---- mailrep tlsrpt ---------------------------------------------------------- */

#define tfail(...) cli_fail("tlsrpt", __VA_ARGS__)

static const char tlsrpt_help[] =
    "usage: mailrep tlsrpt show --spool DIR [--day YYYY-MM-DD] [--domain DOMAIN]\n"
    "                           [--org NAME] [--contact TEXT] [--hostname NAME] [-c FILE]\n"
    "\n"
    "Prints the TLS reports (RFC 8460 JSON, one per line and domain) that a relay\n"
    "run with --tlsrpt on would send for a day (default: today, UTC, so far) from\n"
    "the counters in DIR/tlsrpt/. -c reads spool, hostname, tlsrpt-org and\n"
    "tlsrpt-contact from the [relay] section of a config file first.\n";

struct tlsrpt_cli {
	const char *spool, *org, *contact, *host;
	char *strs[8];
	size_t nstrs;
};

static int tlsrpt_ini(void *ctx, const char *key, const char *value, struct base_err *err)
{
	struct tlsrpt_cli *t = ctx;
	const char **to = !strcmp(key, "spool")            ? &t->spool
	                  : !strcmp(key, "tlsrpt-org")     ? &t->org
	                  : !strcmp(key, "tlsrpt-contact") ? &t->contact
	                  : !strcmp(key, "hostname")       ? &t->host
	                                                   : NULL;
	if (to && t->nstrs < 8) *to = t->strs[t->nstrs++] = base_xstrdup(value);
	(void)err;
	return 0;
}

int cli_tlsrpt(int argc, char **argv)
{
	static const struct option opts[] = {{"spool", required_argument, NULL, 's'},
	                                     {"day", required_argument, NULL, 'D'},
	                                     {"domain", required_argument, NULL, 'm'},
	                                     {"org", required_argument, NULL, 'o'},
	                                     {"contact", required_argument, NULL, 'C'},
	                                     {"hostname", required_argument, NULL, 'H'},
	                                     {"config", required_argument, NULL, 'c'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {NULL, 0, NULL, 0}};
	struct tlsrpt_cli t;
	memset(&t, 0, sizeof t);
	const char *day = NULL, *domain = NULL;
	struct base_err err;
	int rc = 0, c;
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(tlsrpt_help, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "show")) return tfail("unknown command '%s' (see --help)", argv[1]);
	argc--;
	argv++;
	for (int i = 1; i < argc && !rc; i++)
		if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc &&
		    base_ini_read(argv[i + 1], "relay", tlsrpt_ini, &t, &err) < 0)
			rc = tfail("%s", err.msg);
	while (!rc && (c = getopt_long(argc, argv, "hc:", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			t.spool = optarg;
			break;
		case 'D':
			day = optarg;
			break;
		case 'm':
			domain = optarg;
			break;
		case 'o':
			t.org = optarg;
			break;
		case 'C':
			t.contact = optarg;
			break;
		case 'H':
			t.host = optarg;
			break;
		case 'c':
			break;
		case 'h':
			fputs(tlsrpt_help, stdout);
			rc = -1;
			break;
		default:
			rc = tfail("see --help");
		}
	}
	if (!rc && optind != argc) rc = tfail("unexpected argument '%s'", argv[optind]);
	if (!rc && !t.spool) rc = tfail("--spool DIR is required");
	char host[256] = "localhost";
	if (t.host)
		snprintf(host, sizeof host, "%s", t.host);
	else if (gethostname(host, sizeof host - 1) < 0)
		strcpy(host, "localhost");
	if (!rc &&
	    relay_tlsrpt_show(stdout, t.spool, day, domain, t.org, t.contact, host, &err) < 0)
		rc = tfail("%s", err.msg);
	for (size_t i = 0; i < t.nstrs; i++) free(t.strs[i]);
	return rc < 0 ? 0 : rc;
}
