/*
 * cmd_dnsbl.c — `mailrep dnsbl`: rbldnsd's command line, plus long options
 * for what rbldnsd cannot do (TCP limits, zone transfer control, threads).
 * Every rbldnsd option is either implemented or refused with a message;
 * none is silently ignored.
 */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/base.h"
#include "cli/cli.h"
#include "dnsbl/dnsbl.h"

static const char dnsbl_help[] =
	"usage: mailrep dnsbl [options] zone:type:file[,file...] ...\n"
	"\n"
	"Serves DNS blocklist zones from rbldnsd data files over UDP and TCP.\n"
	"Dataset types: ip4set ip4tset ip4trie ip6trie ip6tset dnset generic combined acl\n"
	"(\":acl:file\" with an empty zone name is a global ACL).\n"
	"\n"
	"rbldnsd options:\n"
	"  -b addr[/port]  listen on this address (repeatable; IPv4 or IPv6; port 53 by default)\n"
	"  -4 | -6         accept only IPv4 | IPv6 -b addresses\n"
	"  -t def[:min[:max]]  default TTL and TTL limits (time units s m h d w; default 35m)\n"
	"  -c interval     check data files for changes this often (default 1m; 0: only on SIGHUP)\n"
	"  -e              accept CIDR ranges with host bits set (they are masked)\n"
	"  -v              answer version.bind with \"mailrep\" only; -vv refuses it\n"
	"  -a | -A         lazy: no NS records in positive answers | non-lazy (the default)\n"
	"  -n              stay in the foreground\n"
	"  -q              quick start: a zone that fails to load is served as SERVFAIL\n"
	"  -p pidfile      write the process id here\n"
	"  -u user[:group] run as this user after binding (default rbldns, else nobody, when root)\n"
	"  -r rootdir      chroot here after binding\n"
	"  -w workdir      change to this directory (after -r) before loading data\n"
	"  -l [+]logfile   log every query (\"-\" is standard output; \"+\" flushes each line)\n"
	"  -s [+]statsfile append rbldnsd's statistics line every -c interval (\"+\": deltas)\n"
	"  -C              do not read gzip-compressed data files\n"
	"  -f              accepted for compatibility: reloads never interrupt answering\n"
	"  -d              print the zones in BIND master-file format and exit\n"
	"\n"
	"mailrep options:\n"
	"  --threads N         UDP worker threads (default: one per core)\n"
	"  --axfr-allow CIDR   only these client networks may transfer zones (repeatable)\n"
	"  --no-axfr           refuse all zone transfers (by default anyone may transfer)\n"
	"  --notify ADDR[/PORT]  send NOTIFY (RFC 1996) to this secondary whenever a zone's\n"
	"                      serial advances (repeatable; port 53 by default)\n"
	"  --ixfr-keep N       versions kept per zone for IXFR (default 32; 0: AXFR only)\n"
	"  --lookup-url URL    live store zones: TXT records point here, followed by the address\n"
	"Zone types store, store1, store2, store3 serve a listing store (mailrep impact/trap) live:\n"
	"  ZONE:store:DB[,FILE...]  every level (127.0.0.2, .3, .4); storeN: level N alone;\n"
	"  FILEs hold rbldnsd specials such as $SOA and $NS for the zone.\n"
	"  --tcp-idle SECONDS  close idle TCP connections after this long (default 10)\n"
	"  --tcp-max N         at most N concurrent TCP connections (default 512)\n"
	"  --udp-max BYTES     largest EDNS UDP response (default 1232, 512..4096)\n"
	"  --coalesce USEC     under load, pause this long between partial batches of UDP\n"
	"                      queries so that each wake-up answers many (default 500; a lone\n"
	"                      query is never delayed; 0 answers every packet at once)\n"
	"  --any rbldnsd|minimal  ANY answers: all A and TXT records (default) or one RRset (RFC 8482)\n"
	"  --debug             verbose logging\n"
	"  -h, --help          this help\n";

enum { OPT_THREADS = 256, OPT_AXFR_ALLOW, OPT_NO_AXFR, OPT_TCP_IDLE, OPT_TCP_MAX, OPT_UDP_MAX, OPT_ANY,
       OPT_DEBUG, OPT_COALESCE, OPT_NOTIFY, OPT_IXFR_KEEP, OPT_LOOKUP_URL };

#define fail(...) cli_fail("dnsbl", __VA_ARGS__)

static int parse_ttls(const char *s, struct dnsbl_options *o)
{
	char buf[128];
	snprintf(buf, sizeof buf, "%s", s);
	char *parts[3] = {buf, NULL, NULL};
	char *c = strchr(buf, ':');
	if (c) {
		*c = 0;
		parts[1] = c + 1;
		c = strchr(parts[1], ':');
		if (c) {
			*c = 0;
			parts[2] = c + 1;
		}
	}
	uint32_t v[3] = {o->defttl, o->minttl, o->maxttl};
	for (int i = 0; i < 3; i++) {
		if (!parts[i] || !*parts[i]) continue;
		struct base_err e;
		if (base_parse_duration(parts[i], &v[i], &e) < 0) return -1;
	}
	if (v[0] == 0) return -1;
	if (v[2] && v[1] > v[2]) return -1;
	o->defttl = v[0];
	o->minttl = v[1];
	o->maxttl = v[2];
	return 0;
}

static int parse_uint_arg(const char *s, uint64_t max, uint64_t *out)
{
	int n = base_parse_uint(s, max, out);
	return n < 0 || s[n] ? -1 : 0;
}

/* Parses the zone specs and either dumps the zones (-d) or serves them.
 * cfg->specs has room for nzones; the caller frees what this fills in. */
static int run(struct dnsbl_server_config *cfg, int nzones, char **zones, char **binds, unsigned nbinds,
	       int family, int dump)
{
	struct base_err err;
	for (int i = 0; i < nzones; i++) {
		if (dnsbl_zonespec_parse(zones[i], &cfg->specs[i], &err) < 0) return fail("%s", err.msg);
		cfg->nspecs = (unsigned)i + 1;
	}
	if (dump) {
		struct dnsbl_snapshot *snap;
		base_log_set_level(BASE_LOG_WARN);
		if (dnsbl_snapshot_load(&cfg->opts, cfg->specs, cfg->nspecs, NULL, &snap, &err) < 0)
			return fail("%s", err.msg);
		int r = dnsbl_dump_text(snap, stdout, &err);
		dnsbl_snapshot_free(snap);
		if (r < 0) return fail("%s", err.msg);
		return 0;
	}
	if (!nbinds) return fail("%s", "no listening address given (-b addr[/port])");
	cfg->listen = base_xcalloc(nbinds, sizeof *cfg->listen);
	for (unsigned i = 0; i < nbinds; i++) {
		if (base_parse_hostport(binds[i], 53, &cfg->listen[i], &err) < 0) return fail("-b: %s", err.msg);
		if (family && cfg->listen[i].family != family)
			return fail("-b %s does not match the -4/-6 restriction", binds[i]);
	}
	cfg->nlisten = nbinds;
	return dnsbl_serve(cfg);
}

int cli_dnsbl(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"threads", required_argument, NULL, OPT_THREADS},
		{"axfr-allow", required_argument, NULL, OPT_AXFR_ALLOW},
		{"no-axfr", no_argument, NULL, OPT_NO_AXFR},
		{"tcp-idle", required_argument, NULL, OPT_TCP_IDLE},
		{"tcp-max", required_argument, NULL, OPT_TCP_MAX},
		{"udp-max", required_argument, NULL, OPT_UDP_MAX},
		{"any", required_argument, NULL, OPT_ANY},
		{"debug", no_argument, NULL, OPT_DEBUG},
		{"coalesce", required_argument, NULL, OPT_COALESCE},
		{"notify", required_argument, NULL, OPT_NOTIFY},
		{"ixfr-keep", required_argument, NULL, OPT_IXFR_KEEP},
		{"lookup-url", required_argument, NULL, OPT_LOOKUP_URL},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct dnsbl_server_config cfg;
	memset(&cfg, 0, sizeof cfg);
	dnsbl_options_default(&cfg.opts);
	cfg.check_interval = 60;
	cfg.tcp_idle = 10;
	cfg.tcp_max = 512;
	cfg.coalesce_us = 500;
	cfg.ixfr_keep = 32;
	int family = 0, dump = 0, c;
	struct base_err err;
	uint64_t v;
	char **binds = NULL;
	unsigned nbinds = 0;
	const char *lookup_url = NULL;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":u:r:b:w:t:c:p:nel:qs:h46dvaAfCx:X:", longopts, NULL)) != -1) {
		switch (c) {
		case 'u': cfg.user = optarg; break;
		case 'r': cfg.chroot_dir = optarg; break;
		case 'w': cfg.workdir = optarg; break;
		case 'b':
			binds = base_xrealloc(binds, (nbinds + 1) * sizeof *binds);
			binds[nbinds++] = optarg;
			break;
		case 't':
			if (parse_ttls(optarg, &cfg.opts) < 0) return fail("invalid -t value '%s'", optarg);
			break;
		case 'c': {
			uint32_t t;
			if (base_parse_duration(optarg, &t, &err) < 0) return fail("invalid -c value '%s'", optarg);
			cfg.check_interval = t;
			break;
		}
		case 'p': cfg.pidfile = optarg; break;
		case 'n': cfg.foreground = 1; break;
		case 'e': cfg.opts.accept_in_cidr = 1; break;
		case 'l':
			cfg.logfile = optarg;
			if (*optarg == '+') {
				cfg.log_unbuffered = 1;
				cfg.logfile = optarg + 1;
			}
			break;
		case 'q': cfg.opts.quiet = 1; break;
		case 's':
			cfg.statsfile = optarg;
			if (*optarg == '+') {
				cfg.stats_incremental = 1;
				cfg.statsfile = optarg + 1;
			}
			break;
		case 'h': fputs(dnsbl_help, stdout); return 0;
		case '4': family = AF_INET; break;
		case '6': family = AF_INET6; break;
		case 'd': dump = 1; break;
		case 'v': cfg.opts.version_mode++; break;
		case 'a': cfg.opts.lazy = 1; break;
		case 'A': cfg.opts.lazy = 0; break;
		case 'f': break; /* serving never pauses during reloads */
		case 'C': cfg.opts.no_gzip = 1; break;
		case 'x':
		case 'X': return fail("option -%s (extensions) is not supported", c == 'x' ? "x" : "X");
		case OPT_THREADS:
			if (parse_uint_arg(optarg, 256, &v) < 0 || !v) return fail("invalid --threads '%s'", optarg);
			cfg.threads = (unsigned)v;
			break;
		case OPT_AXFR_ALLOW: {
			struct base_cidr cidr;
			if (base_parse_cidr(optarg, &cidr, &err) < 0) return fail("invalid --axfr-allow: %s", err.msg);
			cfg.opts.axfr_allow = base_xrealloc(cfg.opts.axfr_allow, (cfg.opts.naxfr_allow + 1) * sizeof cidr);
			cfg.opts.axfr_allow[cfg.opts.naxfr_allow++] = cidr;
			break;
		}
		case OPT_NO_AXFR: cfg.opts.axfr = 0; break;
		case OPT_NOTIFY: {
			struct base_sockaddr a;
			if (base_parse_hostport(optarg, 53, &a, &err) < 0) return fail("invalid --notify: %s", err.msg);
			cfg.notify = base_xrealloc(cfg.notify, (cfg.nnotify + 1) * sizeof a);
			cfg.notify[cfg.nnotify++] = a;
			break;
		}
		case OPT_LOOKUP_URL:
			if (strpbrk(optarg, "\"\\ $\t\n"))
				return fail("--lookup-url must not contain quotes, backslashes, spaces or '$'");
			lookup_url = optarg;
			break;
		case OPT_IXFR_KEEP:
			if (parse_uint_arg(optarg, 100000, &v) < 0) return fail("invalid --ixfr-keep '%s'", optarg);
			cfg.ixfr_keep = (unsigned)v;
			break;
		case OPT_TCP_IDLE:
			if (parse_uint_arg(optarg, 3600, &v) < 0 || !v) return fail("invalid --tcp-idle '%s'", optarg);
			cfg.tcp_idle = (uint32_t)v;
			break;
		case OPT_TCP_MAX:
			if (parse_uint_arg(optarg, 100000, &v) < 0 || !v) return fail("invalid --tcp-max '%s'", optarg);
			cfg.tcp_max = (unsigned)v;
			break;
		case OPT_UDP_MAX:
			if (parse_uint_arg(optarg, 4096, &v) < 0 || v < 512) return fail("invalid --udp-max '%s' (512..4096)", optarg);
			cfg.opts.udp_max = (uint16_t)v;
			break;
		case OPT_ANY:
			if (!strcmp(optarg, "rbldnsd")) cfg.opts.any_mode = DNSBL_ANY_RBLDNSD;
			else if (!strcmp(optarg, "minimal")) cfg.opts.any_mode = DNSBL_ANY_MINIMAL;
			else return fail("invalid --any '%s' (rbldnsd or minimal)", optarg);
			break;
		case OPT_DEBUG: base_log_set_level(BASE_LOG_DEBUG); break;
		case OPT_COALESCE:
			if (parse_uint_arg(optarg, 10000, &v) < 0) return fail("invalid --coalesce '%s' (0..10000)", optarg);
			cfg.coalesce_us = (unsigned)v;
			break;
		case ':': {
			char o[3] = {'-', (char)optopt, 0};
			return fail("option %s needs an argument", optopt ? o : argv[optind - 1]);
		}
		default: {
			char o[3] = {'-', (char)optopt, 0};
			return fail("unsupported option '%s' (see mailrep dnsbl --help)", optopt ? o : argv[optind - 1]);
		}
		}
	}
	if (optind >= argc) return fail("%s", "no zones given (zone:type:file[,file...])");
	cli_listing_register_sources(lookup_url);
	cfg.specs = base_xcalloc((size_t)(argc - optind), sizeof *cfg.specs);
	int r = run(&cfg, argc - optind, argv + optind, binds, nbinds, family, dump);
	for (unsigned i = 0; i < cfg.nspecs; i++) dnsbl_zonespec_free(&cfg.specs[i]);
	free(cfg.specs);
	free(cfg.listen);
	free(binds);
	free(cfg.opts.axfr_allow);
	free(cfg.notify);
	dnsbl_sources_close();
	return r;
}
