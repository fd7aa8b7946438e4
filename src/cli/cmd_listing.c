/*
 * cmd_listing.c — the blocklist data commands: `mailrep impact add|import`,
 * `lookup`, `delist`, `stats`, `export` and `traps`.
 *
 * Every command shares one option set for the store and the policy (struct
 * env): a `-c FILE` [listing] section is read first, then flags override it.
 * Policy settings given on a command are remembered in the store, and a
 * command given none uses the remembered ones, so that `lookup` computes
 * with the same allocation table as the `impact import` before it. Each
 * command refreshes the listings to base_now() (MAILREP_NOW) before it
 * reads or writes them.
 */
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "cli/cli.h"
#include "dnsbl/dnsbl.h"
#include "listing/listing.h"
#include "listing/store.h"

#define DEFAULT_LOOKUP_URL "https://mailrep.invalid/lookup?ip="

static const char common_help[] =
    "common options:\n"
    "  --db PATH           the listing store (SQLite; created if missing)\n"
    "  -c FILE             read the [listing] section of this config file first\n"
    "  --prefixes FILE     Level 2 allocation table (\"CIDR name\" or CAIDA prefix2as lines)\n"
    "  --asn-map FILE      Level 3 IP->AS map (CAIDA prefix2as, or \"CIDR ASN\")\n"
    "  --whitelist FILE    addresses/CIDRs never listed (one per line)\n"
    "  --never CIDR        another range never listed (repeatable; reserved ranges are built in)\n"
    "  --l1-threshold N    impacts within the window that list an IP (default 1)\n"
    "  --window DUR        how long an impact counts, and Level 1 lasts after it (default 7d)\n"
    "  --l2-24 N --l2-25 N --l2-26 N --l2-27 N\n"
    "                      Level 2 thresholds for /24../27 (default 4 3 2 1); larger\n"
    "                      allocations follow T(/n-1) = T(/n) + T(/n+2)\n"
    "  --l3-min-impacts N  Level 3: impacts within the window (default 50)\n"
    "  --l3-min-score S    Level 3: SPAMSCORE, one decimal (default 50)\n"
    "  --delist-quiet DUR  self-service delisting needs this long without impacts (default 24h)\n"
    "  --delist-period DUR --delist-max N\n"
    "                      at most N self-service requests per IP per period (default 3 per 7d)\n"
    "  -h, --help          this help\n"
    "The time is MAILREP_NOW (ISO 8601) when set, else the system clock.\n";

/* ---- shared environment -------------------------------------------------- */

struct env {
	const char *cmd;
	char *db, *prefixes, *asn_map, *whitelist, *lookup_url, *zone;
	struct listing_policy pol;
	struct base_buf policy_args; /* "key\tvalue\n" of every policy setting given */
	int policy_given;
	struct listing_prefixes *allocs, *asmap;
	struct listing_store *store;
	int64_t now;
};

#define fail(e, ...) cli_fail((e)->cmd, __VA_ARGS__)

static void set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = base_xstrdup(v);
}

static int is_policy_key(const char *k)
{
	static const char *const keys[] = {
	    "prefixes",       "asn-map",      "whitelist",    "never",         "l1-threshold",
	    "window",         "l2-24",        "l2-25",        "l2-26",         "l2-27",
	    "l3-min-impacts", "l3-min-score", "delist-quiet", "delist-period", "delist-max"};
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		if (!strcmp(k, keys[i])) return 1;
	return 0;
}

/* Applies one setting from a flag, the config file or the remembered set. */
/* Applies one setting. Policy settings from flags and the config file
 * (remember = 1) are validated and collected in policy_args; env_open()
 * merges them over the remembered ones and applies the result. */
static int env_set(struct env *e, const char *key, const char *val, int remember,
                   struct base_err *err)
{
	if (is_policy_key(key) && remember) {
		if (strchr(val, '\t') || strchr(val, '\n'))
			return base_errf(err, "%s: bad value", key);
		char abs[4096];
		const char *v = val;
		if (!strcmp(key, "prefixes") || !strcmp(key, "asn-map") ||
		    !strcmp(key, "whitelist")) {
			/* remember files by absolute path, so later commands find them anywhere */
			if (val[0] != '/' && realpath(val, abs)) v = abs;
		} else {
			struct listing_policy scratch;
			listing_policy_defaults(&scratch);
			if (listing_policy_set(&scratch, key, val, err) < 0) return -1;
		}
		e->policy_given = 1;
		base_buf_printf(&e->policy_args, "%s\t%s\n", key, v);
		return 0;
	}
	if (!strcmp(key, "db"))
		set_str(&e->db, val);
	else if (!strcmp(key, "prefixes"))
		set_str(&e->prefixes, val);
	else if (!strcmp(key, "asn-map"))
		set_str(&e->asn_map, val);
	else if (!strcmp(key, "whitelist"))
		set_str(&e->whitelist, val);
	else if (!strcmp(key, "lookup-url"))
		set_str(&e->lookup_url, val);
	else if (!strcmp(key, "zone"))
		set_str(&e->zone, val);
	else
		return listing_policy_set(&e->pol, key, val, err);
	return 0;
}

static int ini_cb(void *ctx, const char *key, const char *value, struct base_err *err)
{
	return env_set(ctx, key, value, 1, err);
}

enum {
	OPT_DB = 300,
	OPT_POLICY,
	OPT_JSON,
	OPT_TRAP,
	OPT_EVIDENCE,
	OPT_TIME,
	OPT_HELO,
	OPT_FROM,
	OPT_RCPT,
	OPT_SOURCE,
	OPT_SUBJECT,
	OPT_MSGID,
	OPT_BATCH,
	OPT_NO_REFRESH,
	OPT_SELF,
	OPT_LEVEL,
	OPT_NOTE,
	OPT_FORMAT,
	OPT_OUT,
	OPT_URL,
	OPT_ZONE,
	OPT_TTL,
	OPT_EVERY,
	OPT_KIND,
	OPT_SCHEDULE
};

#define COMMON_OPTIONS                                                                             \
	{"db", required_argument, NULL, OPT_DB}, {"help", no_argument, NULL, 'h'},                 \
	    {"prefixes", required_argument, NULL, OPT_POLICY},                                     \
	    {"asn-map", required_argument, NULL, OPT_POLICY},                                      \
	    {"whitelist", required_argument, NULL, OPT_POLICY},                                    \
	    {"never", required_argument, NULL, OPT_POLICY},                                        \
	    {"l1-threshold", required_argument, NULL, OPT_POLICY},                                 \
	    {"window", required_argument, NULL, OPT_POLICY},                                       \
	    {"l2-24", required_argument, NULL, OPT_POLICY},                                        \
	    {"l2-25", required_argument, NULL, OPT_POLICY},                                        \
	    {"l2-26", required_argument, NULL, OPT_POLICY},                                        \
	    {"l2-27", required_argument, NULL, OPT_POLICY},                                        \
	    {"l3-min-impacts", required_argument, NULL, OPT_POLICY},                               \
	    {"l3-min-score", required_argument, NULL, OPT_POLICY},                                 \
	    {"delist-quiet", required_argument, NULL, OPT_POLICY},                                 \
	    {"delist-period", required_argument, NULL, OPT_POLICY},                                \
	{                                                                                          \
		"delist-max", required_argument, NULL, OPT_POLICY                                  \
	}

static void env_init(struct env *e, const char *cmd)
{
	memset(e, 0, sizeof *e);
	e->cmd = cmd;
	listing_policy_defaults(&e->pol);
	base_buf_init(&e->policy_args);
	e->now = (int64_t)base_now();
}

static void env_free(struct env *e)
{
	listing_store_close(e->store);
	listing_prefixes_free(e->allocs);
	listing_prefixes_free(e->asmap);
	listing_policy_free(&e->pol);
	base_buf_free(&e->policy_args);
	free(e->db);
	free(e->prefixes);
	free(e->asn_map);
	free(e->whitelist);
	free(e->lookup_url);
	free(e->zone);
}

/* Reads -c FILE before the other options, so that flags override it. */
static int env_config(struct env *e, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *path = NULL;
		if (!strcmp(argv[i], "--")) break;
		if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) {
			if (i + 1 >= argc) return fail(e, "%s needs a file", argv[i]);
			path = argv[i + 1];
		} else if (!strncmp(argv[i], "--config=", 9)) {
			path = argv[i] + 9;
		}
		if (path) {
			struct base_err err;
			if (base_ini_read(path, "listing", ini_cb, e, &err) < 0)
				return fail(e, "%s", err.msg);
		}
	}
	return 0;
}

/* Handles an option every command shares; returns 1 if handled, 0 if not, 2 on error. */
static int env_option(struct env *e, int c, const struct option *longopts, int idx)
{
	struct base_err err;
	if (c == OPT_DB) {
		set_str(&e->db, optarg);
		return 1;
	}
	if (c == 'c') return 1; /* read by env_config */
	if (c == OPT_POLICY) {
		if (env_set(e, longopts[idx].name, optarg, 1, &err) < 0) {
			fail(e, "%s", err.msg);
			return 2;
		}
		return 1;
	}
	return 0;
}

/* Whether "key\t" starts a line of the list. */
static int has_key(const char *list, const char *key)
{
	size_t kl = strlen(key);
	for (const char *l = list; l && *l;) {
		if (!strncmp(l, key, kl) && l[kl] == '\t') return 1;
		const char *nl = strchr(l, '\n');
		l = nl ? nl + 1 : NULL;
	}
	return 0;
}

/* The policy: the remembered settings whose keys were not given, then the
 * given ones; applied to e->pol, and saved if anything was given. */
static int settle_policy(struct env *e, struct base_err *err)
{
	char *buf = base_xmalloc(65536);
	int f = e->store->ops->meta_get(e->store, "policy_args", buf, 65536, err);
	if (f < 0) {
		free(buf);
		return -1;
	}
	if (f == 0) buf[0] = 0;
	const char *given = e->policy_args.data ? e->policy_args.data : "";
	struct base_buf merged;
	base_buf_init(&merged);
	for (char *line = buf, *nl; *line; line = nl + 1) {
		nl = strchr(line, '\n');
		if (!nl) break;
		*nl = 0;
		char *tab = strchr(line, '\t');
		if (!tab) continue;
		*tab = 0;
		if (!has_key(given, line)) base_buf_printf(&merged, "%s\t%s\n", line, tab + 1);
	}
	base_buf_puts(&merged, given);
	free(buf);
	int rc = 0;
	if (e->policy_given && e->store->ops->meta_set(e->store, "policy_args",
	                                               merged.data ? merged.data : "", err) < 0)
		rc = -1;
	for (char *line = merged.data; rc == 0 && line && *line;) {
		char *nl = strchr(line, '\n');
		if (!nl) break;
		*nl = 0;
		char *tab = strchr(line, '\t');
		if (tab) {
			*tab = 0;
			if (env_set(e, line, tab + 1, 0, err) < 0) rc = -1;
		}
		line = nl + 1;
	}
	base_buf_free(&merged);
	return rc;
}

/* Opens the store, settles the policy, loads the tables, refreshes. */
static int env_open(struct env *e, int refresh)
{
	struct base_err err;
	if (!e->db) return fail(e, "--db PATH is required");
	if (listing_store_open(e->db, &e->store, &err) < 0) return fail(e, "%s", err.msg);
	if (settle_policy(e, &err) < 0) return fail(e, "policy: %s", err.msg);
	if (e->prefixes && listing_prefixes_load(e->prefixes, &e->allocs, &err) < 0)
		return fail(e, "%s", err.msg);
	if (e->asn_map && listing_prefixes_load(e->asn_map, &e->asmap, &err) < 0)
		return fail(e, "%s", err.msg);
	if (e->whitelist && listing_policy_load_whitelist(&e->pol, e->whitelist, &err) < 0)
		return fail(e, "%s", err.msg);
	e->pol.allocs = e->allocs;
	e->pol.asmap = e->asmap;
	if (refresh) {
		struct listing_refresh_result rr;
		if (listing_refresh(e->store, &e->pol, e->now, 0, &rr, &err) < 0)
			return fail(e, "%s", err.msg);
		if (rr.ran)
			base_debug("refresh: %llu listed, %llu updated, %llu removed",
			           (unsigned long long)rr.listed, (unsigned long long)rr.updated,
			           (unsigned long long)rr.removed);
	}
	return 0;
}

/* ---- output helpers ------------------------------------------------------ */

static void fmt_time(int64_t t, char *out, size_t n)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void json_str(FILE *f, const char *s)
{
	if (s)
		base_json_fputs(f, s);
	else
		fputs("null", f);
}

static void json_time(FILE *f, int64_t t)
{
	char b[32];
	fmt_time(t, b, sizeof b);
	json_str(f, b);
}

static const char *state_name(int s)
{
	return s == LISTING_ACTIVE ? "active" : s == LISTING_EXPIRED ? "expired" : "delisted";
}

static void json_record(FILE *f, const struct listing_record *r)
{
	fprintf(f, "{\"level\":%d,\"key\":", r->level);
	json_str(f, r->key);
	fprintf(f, ",\"state\":\"%s\",\"reason\":", state_name(r->state));
	json_str(f, r->reason);
	fputs(",\"listed_at\":", f);
	json_time(f, r->listed_at);
	fputs(",\"first_seen\":", f);
	json_time(f, r->first_seen);
	fputs(",\"last_seen\":", f);
	json_time(f, r->last_seen);
	fputs(",\"expires\":", f);
	json_time(f, r->expires);
	fputs(",\"removed_at\":", f);
	if (r->state == LISTING_ACTIVE)
		fputs("null", f);
	else
		json_time(f, r->removed_at);
	fprintf(f, ",\"impacts\":%llu,\"evidence\":[%s],\"ranges\":[",
	        (unsigned long long)r->impacts, r->evidence);
	const char *p = r->ranges ? r->ranges : "";
	int first = 1;
	while (*p) {
		while (*p == ' ') p++;
		const char *q = p;
		while (*q && *q != ' ') q++;
		if (q > p) {
			fprintf(f, "%s\"%.*s\"", first ? "" : ",", (int)(q - p), p);
			first = 0;
		}
		p = q;
	}
	fputs("]}", f);
}

/* ---- impact -------------------------------------------------------------- */

static const char impact_help[] =
    "usage: mailrep impact add --db PATH IP [--trap ADDR] [--evidence FILE] [options]\n"
    "       mailrep impact import --db PATH [FILE|-] [--batch N] [--no-refresh]\n"
    "\n"
    "Records trap hits (impacts) and brings the listings up to date.\n"
    "\n"
    "add options:\n"
    "  --trap ADDR         the trap address that was hit\n"
    "  --evidence FILE     a message file: its headers (up to 8 KiB), Message-ID, Subject, From\n"
    "  --time ISO8601      when it happened (default: now)\n"
    "  --helo H --mail-from A --rcpt A --source S --subject S --message-id M\n"
    "import: one impact per line, tab-separated (see docs/LISTING.md):\n"
    "  TIME IP [TRAP [SOURCE [HELO MAIL_FROM RCPT MESSAGE_ID SUBJECT]]]\n"
    "  TIME is ISO 8601, @UNIXSECONDS or - (now); '#' lines are comments. Bad lines are\n"
    "  reported as FILE:LINE: reason and counted; the exit status is 1 if any was rejected.\n"
    "  --batch N           impacts per durable transaction (default 50000)\n"
    "  --no-refresh        do not recompute the listings afterwards\n"
    "\n";

static int impact_add(struct env *e, int argc, char **argv)
{
	static const struct option opts[] = {COMMON_OPTIONS,
	                                     {"trap", required_argument, NULL, OPT_TRAP},
	                                     {"evidence", required_argument, NULL, OPT_EVIDENCE},
	                                     {"time", required_argument, NULL, OPT_TIME},
	                                     {"helo", required_argument, NULL, OPT_HELO},
	                                     {"mail-from", required_argument, NULL, OPT_FROM},
	                                     {"rcpt", required_argument, NULL, OPT_RCPT},
	                                     {"source", required_argument, NULL, OPT_SOURCE},
	                                     {"subject", required_argument, NULL, OPT_SUBJECT},
	                                     {"message-id", required_argument, NULL, OPT_MSGID},
	                                     {"config", required_argument, NULL, 'c'},
	                                     {NULL, 0, NULL, 0}};
	struct listing_impact imp = {0};
	const char *evidence = NULL, *when = NULL;
	int c, idx = 0;
	while ((c = getopt_long(argc, argv, "hc:", opts, &idx)) != -1) {
		int h = env_option(e, c, opts, idx);
		if (h == 2) return 2;
		if (h) continue;
		switch (c) {
		case 'h':
			fputs(impact_help, stdout);
			fputs(common_help, stdout);
			return 0;
		case OPT_TRAP:
			imp.trap = optarg;
			break;
		case OPT_EVIDENCE:
			evidence = optarg;
			break;
		case OPT_TIME:
			when = optarg;
			break;
		case OPT_HELO:
			imp.helo = optarg;
			break;
		case OPT_FROM:
			imp.mail_from = optarg;
			break;
		case OPT_RCPT:
			imp.rcpt = optarg;
			break;
		case OPT_SOURCE:
			imp.source = optarg;
			break;
		case OPT_SUBJECT:
			imp.subject = optarg;
			break;
		case OPT_MSGID:
			imp.message_id = optarg;
			break;
		default:
			return fail(e, "see --help");
		}
	}
	if (optind + 1 != argc) return fail(e, "expected exactly one IP address (see --help)");
	if (listing_ip_parse(argv[optind], &imp.ip) < 0)
		return fail(e, "bad IP address '%s'", argv[optind]);
	const char *fields[] = {imp.trap,   imp.helo,    imp.mail_from, imp.rcpt,
	                        imp.source, imp.subject, imp.message_id};
	for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
		if (fields[i] && strlen(fields[i]) > LISTING_FIELD_MAX)
			return fail(e, "a field is longer than %d bytes", LISTING_FIELD_MAX);
	imp.time = e->now;
	if (when) {
		time_t t;
		if (base_parse_iso8601(when, &t) < 0) return fail(e, "bad --time '%s'", when);
		imp.time = (int64_t)t;
	}
	struct base_err err;
	char *buf = NULL;
	if (evidence && listing_impact_read_evidence(evidence, &imp, &buf, &err) < 0)
		return fail(e, "%s", err.msg);
	int rc = env_open(e, 0);
	int64_t id = 0;
	if (rc == 0 && listing_impact_add(e->store, &imp, &id, &err) < 0)
		rc = fail(e, "%s", err.msg);
	free(buf);
	if (rc) return rc;
	if (listing_refresh(e->store, &e->pol, e->now, 0, NULL, &err) < 0)
		return fail(e, "%s", err.msg);
	const char *never = listing_never(&e->pol, &imp.ip);
	printf("impact %lld recorded%s%s%s\n", (long long)id, never ? " (" : "", never ? never : "",
	       never ? ": never listed)" : "");
	return 0;
}

static int impact_import(struct env *e, int argc, char **argv)
{
	static const struct option opts[] = {COMMON_OPTIONS,
	                                     {"batch", required_argument, NULL, OPT_BATCH},
	                                     {"no-refresh", no_argument, NULL, OPT_NO_REFRESH},
	                                     {"config", required_argument, NULL, 'c'},
	                                     {NULL, 0, NULL, 0}};
	size_t batch = 50000;
	int refresh = 1, c, idx = 0;
	while ((c = getopt_long(argc, argv, "hc:", opts, &idx)) != -1) {
		int h = env_option(e, c, opts, idx);
		if (h == 2) return 2;
		if (h) continue;
		switch (c) {
		case 'h':
			fputs(impact_help, stdout);
			fputs(common_help, stdout);
			return 0;
		case OPT_BATCH: {
			uint64_t v;
			int k = base_parse_uint(optarg, 1000000, &v);
			if (k <= 0 || optarg[k] || v == 0)
				return fail(e, "bad --batch '%s'", optarg);
			batch = (size_t)v;
			break;
		}
		case OPT_NO_REFRESH:
			refresh = 0;
			break;
		default:
			return fail(e, "see --help");
		}
	}
	if (argc - optind > 1) return fail(e, "at most one input file (see --help)");
	const char *path = optind < argc ? argv[optind] : "-";
	int rc = env_open(e, 0);
	if (rc) return rc;
	struct base_err err;
	struct listing_import_result res;
	uint64_t t0 = base_mono_ns();
	int r = listing_import(e->store, path, e->now, batch, stderr, &res, &err);
	double secs = (double)(base_mono_ns() - t0) / 1e9;
	fprintf(stderr,
	        "imported %llu impacts (%llu lines, %llu rejected) in %.3f s (%.0f impacts/s)\n",
	        (unsigned long long)res.imported, (unsigned long long)res.lines,
	        (unsigned long long)res.rejected, secs,
	        secs > 0 ? (double)res.imported / secs : 0.0);
	if (r < 0) return fail(e, "%s", err.msg);
	if (refresh) {
		struct listing_refresh_result rr;
		t0 = base_mono_ns();
		if (listing_refresh(e->store, &e->pol, e->now, 0, &rr, &err) < 0)
			return fail(e, "%s", err.msg);
		fprintf(stderr, "listings: %llu new, %llu updated, %llu removed in %.3f s\n",
		        (unsigned long long)rr.listed, (unsigned long long)rr.updated,
		        (unsigned long long)rr.removed, (double)(base_mono_ns() - t0) / 1e9);
	}
	return res.rejected ? 1 : 0;
}

int cli_impact(int argc, char **argv)
{
	struct env e;
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		fputs(impact_help, argc < 2 ? stderr : stdout);
		fputs(common_help, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	int rc;
	if (!strcmp(argv[1], "add")) {
		env_init(&e, "impact add");
		rc = env_config(&e, argc - 1, argv + 1);
		if (!rc) rc = impact_add(&e, argc - 1, argv + 1);
	} else if (!strcmp(argv[1], "import")) {
		env_init(&e, "impact import");
		rc = env_config(&e, argc - 1, argv + 1);
		if (!rc) rc = impact_import(&e, argc - 1, argv + 1);
	} else {
		fprintf(stderr, "mailrep impact: unknown action '%s' (add or import)\n", argv[1]);
		return 2;
	}
	env_free(&e);
	return rc;
}

/* ---- lookup --------------------------------------------------------------- */

static const char lookup_help[] =
    "usage: mailrep lookup --db PATH IP [--json]\n"
    "\n"
    "Shows every level that lists IP now (reason, evidence, first/last seen, expiry),\n"
    "the history of its listings, its newest impacts, and whether a self-service\n"
    "delisting is possible now.\n"
    "  --json              machine-readable output\n"
    "\n";

static void lookup_json(const struct listing_lookup *l, int64_t now)
{
	char ip[64];
	listing_ip_format(&l->ip, ip, sizeof ip);
	printf("{\"ip\":");
	json_str(stdout, ip);
	printf(",\"now\":");
	json_time(stdout, now);
	printf(",\"listed\":%s,\"test_entry\":%s,\"never_listed\":",
	       (l->n_active || l->test_entry) ? "true" : "false", l->test_entry ? "true" : "false");
	json_str(stdout, l->never);
	printf(",\"levels\":[");
	int first = 1;
	if (l->test_entry) {
		printf("{\"level\":1,\"key\":\"%s\",\"state\":\"active\",\"reason\":\"RFC 5782 "
		       "test entry\","
		       "\"expires\":null}",
		       ip);
		first = 0;
	}
	for (size_t i = 0; i < l->n_active; i++) {
		if (!first) putchar(',');
		json_record(stdout, &l->active[i]);
		first = 0;
	}
	printf("],\"history\":[");
	for (size_t i = 0; i < l->n_history; i++) {
		if (i) putchar(',');
		json_record(stdout, &l->history[i]);
	}
	printf("],\"impacts\":[");
	for (size_t i = 0; i < l->n_impacts; i++) {
		const struct listing_impact *m = &l->impacts[i];
		printf("%s{\"id\":%lld,\"time\":", i ? "," : "", (long long)m->id);
		json_time(stdout, m->time);
		printf(",\"trap\":");
		json_str(stdout, m->trap);
		printf(",\"source\":");
		json_str(stdout, m->source);
		printf(",\"helo\":");
		json_str(stdout, m->helo);
		printf(",\"mail_from\":");
		json_str(stdout, m->mail_from);
		printf(",\"rcpt\":");
		json_str(stdout, m->rcpt);
		printf(",\"message_id\":");
		json_str(stdout, m->message_id);
		printf(",\"subject\":");
		json_str(stdout, m->subject);
		printf(",\"headers_bytes\":%zu}", m->headers ? m->headers_len : 0);
	}
	printf("],\"self_service_delist\":{\"possible\":%s,\"reason\":",
	       l->self_delist_possible ? "true" : "false");
	json_str(stdout, l->self_delist_why);
	printf("}}\n");
}

static void print_record(const struct listing_record *r, const char *indent)
{
	char a[32], b[32], c[32], d[32], x[32];
	fmt_time(r->listed_at, a, sizeof a);
	fmt_time(r->first_seen, b, sizeof b);
	fmt_time(r->last_seen, c, sizeof c);
	fmt_time(r->expires, d, sizeof d);
	fmt_time(r->removed_at, x, sizeof x);
	printf("%sLevel %d %s [%s]: %s\n", indent, r->level, r->key, state_name(r->state),
	       r->reason);
	printf("%s  listed %s, first seen %s, last seen %s\n", indent, a, b, c);
	if (r->state == LISTING_ACTIVE)
		printf("%s  expires %s\n", indent, d);
	else
		printf("%s  removed %s\n", indent, x);
	printf("%s  evidence: impacts %s\n", indent, r->evidence[0] ? r->evidence : "-");
}

static void lookup_text(const struct listing_lookup *l)
{
	char ip[64];
	listing_ip_format(&l->ip, ip, sizeof ip);
	if (l->test_entry)
		printf("%s: LISTED (RFC 5782 test entry)\n", ip);
	else if (l->n_active)
		printf("%s: LISTED at %zu level%s\n", ip, l->n_active, l->n_active == 1 ? "" : "s");
	else
		printf("%s: not listed%s%s%s\n", ip, l->never ? " (" : "", l->never ? l->never : "",
		       l->never ? ": never listed)" : "");
	for (size_t i = 0; i < l->n_active; i++) print_record(&l->active[i], "  ");
	if (l->n_history) {
		printf("history (newest first):\n");
		for (size_t i = 0; i < l->n_history; i++) print_record(&l->history[i], "  ");
	}
	if (l->n_impacts) {
		printf("impacts (newest first):\n");
		for (size_t i = 0; i < l->n_impacts; i++) {
			char t[32];
			fmt_time(l->impacts[i].time, t, sizeof t);
			printf("  #%lld %s trap %s", (long long)l->impacts[i].id, t,
			       l->impacts[i].trap ? l->impacts[i].trap : "-");
			if (l->impacts[i].subject) printf(" subject \"%s\"", l->impacts[i].subject);
			putchar('\n');
		}
	}
	printf("self-service delisting: %s (%s)\n",
	       l->self_delist_possible ? "possible now" : "not possible", l->self_delist_why);
}

/* The options of a command whose only own option is --json (besides the
 * common ones and -c): 0 to go on, -1 once --help is printed, or an exit
 * status. */
static int json_command_options(struct env *e, int argc, char **argv, const char *help, int *json)
{
	static const struct option opts[] = {COMMON_OPTIONS,
	                                     {"json", no_argument, NULL, OPT_JSON},
	                                     {"config", required_argument, NULL, 'c'},
	                                     {NULL, 0, NULL, 0}};
	int rc = env_config(e, argc, argv);
	int c, idx = 0;
	while (!rc && (c = getopt_long(argc, argv, "hc:", opts, &idx)) != -1) {
		int h = env_option(e, c, opts, idx);
		if (h == 2) rc = 2;
		if (h) continue;
		if (c == 'h') {
			fputs(help, stdout);
			fputs(common_help, stdout);
			return -1;
		}
		if (c == OPT_JSON)
			*json = 1;
		else
			rc = fail(e, "see --help");
	}
	return rc;
}

int cli_lookup(int argc, char **argv)
{
	struct env e;
	env_init(&e, "lookup");
	int json = 0;
	int rc = json_command_options(&e, argc, argv, lookup_help, &json);
	if (rc < 0) {
		env_free(&e);
		return 0;
	}
	struct listing_ip ip;
	if (!rc && optind + 1 != argc)
		rc = fail(&e, "expected exactly one IP address (see --help)");
	if (!rc && listing_ip_parse(argv[optind], &ip) < 0)
		rc = fail(&e, "bad IP address '%s'", argv[optind]);
	if (!rc) rc = env_open(&e, 1);
	if (!rc) {
		struct listing_lookup l;
		struct base_err err;
		if (listing_lookup(e.store, &e.pol, &ip, e.now, &l, &err) < 0) {
			rc = fail(&e, "%s", err.msg);
		} else {
			if (json)
				lookup_json(&l, e.now);
			else
				lookup_text(&l);
		}
		listing_lookup_free(&l);
	}
	env_free(&e);
	return rc;
}

/* ---- delist -------------------------------------------------------------- */

static const char delist_help[] =
    "usage: mailrep delist --db PATH IP [--self-service] [--level N] [--note TEXT] [--json]\n"
    "\n"
    "Removes a listing now. Operator requests (the default) remove the listing of\n"
    "--level N (1, 2 or 3; default 1) that covers IP. --self-service requests (Level 1\n"
    "only) are honoured only if IP had no impact for --delist-quiet and made fewer\n"
    "than --delist-max requests in --delist-period. Every request is recorded; impacts\n"
    "after a delisting list the IP again. Delisting is never paid for.\n"
    "Exit status: 0 delisted, 3 refused, 4 not listed.\n"
    "\n";

int cli_delist(int argc, char **argv)
{
	static const struct option opts[] = {COMMON_OPTIONS,
	                                     {"self-service", no_argument, NULL, OPT_SELF},
	                                     {"level", required_argument, NULL, OPT_LEVEL},
	                                     {"note", required_argument, NULL, OPT_NOTE},
	                                     {"json", no_argument, NULL, OPT_JSON},
	                                     {"config", required_argument, NULL, 'c'},
	                                     {NULL, 0, NULL, 0}};
	struct env e;
	env_init(&e, "delist");
	int rc = env_config(&e, argc, argv);
	int self = 0, level = 1, json = 0, c, idx = 0;
	const char *note = NULL;
	while (!rc && (c = getopt_long(argc, argv, "hc:", opts, &idx)) != -1) {
		int h = env_option(&e, c, opts, idx);
		if (h == 2) rc = 2;
		if (h) continue;
		switch (c) {
		case 'h':
			fputs(delist_help, stdout);
			fputs(common_help, stdout);
			env_free(&e);
			return 0;
		case OPT_SELF:
			self = 1;
			break;
		case OPT_LEVEL:
			if (strlen(optarg) != 1 || optarg[0] < '1' || optarg[0] > '3')
				rc = fail(&e, "--level is 1, 2 or 3");
			else
				level = optarg[0] - '0';
			break;
		case OPT_NOTE:
			if (strlen(optarg) > 200) rc = fail(&e, "--note is at most 200 bytes");
			note = optarg;
			break;
		case OPT_JSON:
			json = 1;
			break;
		default:
			rc = fail(&e, "see --help");
		}
	}
	struct listing_ip ip;
	if (!rc && optind + 1 != argc)
		rc = fail(&e, "expected exactly one IP address (see --help)");
	if (!rc && listing_ip_parse(argv[optind], &ip) < 0)
		rc = fail(&e, "bad IP address '%s'", argv[optind]);
	if (!rc && self && level != 1) rc = fail(&e, "self-service delisting is for Level 1 only");
	if (!rc) rc = env_open(&e, 1);
	if (!rc) {
		struct base_err err;
		int outcome;
		char why[200];
		if (listing_delist(e.store, &e.pol, &ip, level, self, e.now, note, &outcome, why,
		                   sizeof why, &err) < 0)
			rc = fail(&e, "%s", err.msg);
		else if (listing_refresh(e.store, &e.pol, e.now, 0, NULL, &err) < 0)
			rc = fail(&e, "%s", err.msg);
		else {
			static const char *const names[] = {"delisted", "refused", "not-listed"};
			if (json) {
				printf("{\"ip\":\"%s\",\"level\":%d,\"self_service\":%s,"
				       "\"outcome\":\"%s\",\"reason\":",
				       argv[optind], level, self ? "true" : "false",
				       names[outcome]);
				json_str(stdout, why);
				printf("}\n");
			} else {
				printf("%s: %s (%s)\n", argv[optind], names[outcome], why);
			}
			rc = outcome == LISTING_DELISTED_NOW     ? 0
			     : outcome == LISTING_DELIST_REFUSED ? 3
			                                         : 4;
		}
	}
	env_free(&e);
	return rc;
}

/* ---- stats --------------------------------------------------------------- */

static const char stats_help[] =
    "usage: mailrep stats --db PATH [--json]\n"
    "\n"
    "New listings, removals and delisting requests in the last 48 hours,\n"
    "and the number listed now, per level.\n"
    "\n";

int cli_stats(int argc, char **argv)
{
	struct env e;
	env_init(&e, "stats");
	int json = 0;
	int rc = json_command_options(&e, argc, argv, stats_help, &json);
	if (rc < 0) {
		env_free(&e);
		return 0;
	}
	if (!rc && optind != argc) rc = fail(&e, "unexpected argument '%s'", argv[optind]);
	if (!rc) rc = env_open(&e, 1);
	struct listing_stats st;
	struct base_err err;
	if (!rc && listing_stats(e.store, e.now, &st, &err) < 0) rc = fail(&e, "%s", err.msg);
	if (!rc) {
		if (json) {
			const char *names[] = {"new_48h", "removed_48h", "listed"};
			const uint64_t *rows[] = {st.new48, st.removed48, st.listed};
			printf("{\"now\":");
			json_time(stdout, e.now);
			for (int i = 0; i < 3; i++)
				printf(",\"%s\":{\"all\":%llu,\"1\":%llu,\"2\":%llu,\"3\":%llu}",
				       names[i], (unsigned long long)rows[i][0],
				       (unsigned long long)rows[i][1],
				       (unsigned long long)rows[i][2],
				       (unsigned long long)rows[i][3]);
			printf(",\"delist_requests_48h\":%llu}\n",
			       (unsigned long long)st.delist_requests48);
		} else {
			printf("%-24s %10s %10s %10s %10s\n", "", "all", "level 1", "level 2",
			       "level 3");
			const char *names[] = {"new listings (48h)", "removals (48h)",
			                       "listed now"};
			const uint64_t *rows[] = {st.new48, st.removed48, st.listed};
			for (int i = 0; i < 3; i++)
				printf(
				    "%-24s %10llu %10llu %10llu %10llu\n", names[i],
				    (unsigned long long)rows[i][0], (unsigned long long)rows[i][1],
				    (unsigned long long)rows[i][2], (unsigned long long)rows[i][3]);
			printf("%-24s %10llu\n", "delist requests (48h)",
			       (unsigned long long)st.delist_requests48);
		}
	}
	env_free(&e);
	return rc;
}

/* ---- export -------------------------------------------------------------- */

static const char export_help[] =
    "usage: mailrep export --db PATH --format rbldnsd|rbldnsd6|txt|xml|bind --out FILE [options]\n"
    "\n"
    "Writes the current listings to FILE through a temporary file, fsync and rename.\n"
    "  rbldnsd   rbldnsd ip4set data (IPv4; serve as zone:ip4set:FILE)\n"
    "  rbldnsd6  rbldnsd ip6trie data (IPv6; serve as zone:ip6trie:FILE)\n"
    "  txt       one address or CIDR per line\n"
    "  xml       <mailrep-listings> document (schema in docs/LISTING.md)\n"
    "  bind      a BIND master file for --zone\n"
    "  --level N           only this level (1, 2 or 3; default all: 127.0.0.2/3/4)\n"
    "  --lookup-url URL    TXT records point here, followed by the address\n"
    "                      (default " DEFAULT_LOOKUP_URL ")\n"
    "  --zone NAME         bind: the zone name (default bl.mailrep.invalid)\n"
    "  --ttl SECONDS       bind: the TTL (default 2100)\n"
    "  --every DUR         run until stopped, exporting now and then every DUR\n"
    "                      (e.g. 30m)\n"
    "  --schedule          the same on UBL's hourly schedule (--every 1h)\n"
    "\n";

static volatile sig_atomic_t stop_flag;
static void on_stop(int sig)
{
	(void)sig;
	stop_flag = 1;
}

int cli_export(int argc, char **argv)
{
	static const struct option opts[] = {COMMON_OPTIONS,
	                                     {"format", required_argument, NULL, OPT_FORMAT},
	                                     {"out", required_argument, NULL, OPT_OUT},
	                                     {"level", required_argument, NULL, OPT_LEVEL},
	                                     {"lookup-url", required_argument, NULL, OPT_URL},
	                                     {"zone", required_argument, NULL, OPT_ZONE},
	                                     {"ttl", required_argument, NULL, OPT_TTL},
	                                     {"every", required_argument, NULL, OPT_EVERY},
	                                     {"schedule", no_argument, NULL, OPT_SCHEDULE},
	                                     {"config", required_argument, NULL, 'c'},
	                                     {NULL, 0, NULL, 0}};
	struct env e;
	env_init(&e, "export");
	int rc = env_config(&e, argc, argv);
	struct listing_export_options o = {.ttl = 2100};
	const char *out = NULL;
	int have_format = 0, c, idx = 0;
	uint32_t every = 0;
	struct base_err err;
	while (!rc && (c = getopt_long(argc, argv, "hc:", opts, &idx)) != -1) {
		int h = env_option(&e, c, opts, idx);
		if (h == 2) rc = 2;
		if (h) continue;
		switch (c) {
		case 'h':
			fputs(export_help, stdout);
			fputs(common_help, stdout);
			env_free(&e);
			return 0;
		case OPT_FORMAT:
			if (listing_format_parse(optarg, &o.format) < 0)
				rc = fail(&e, "unknown --format '%s'", optarg);
			have_format = 1;
			break;
		case OPT_OUT:
			out = optarg;
			break;
		case OPT_LEVEL:
			if (strlen(optarg) != 1 || optarg[0] < '1' || optarg[0] > '3')
				rc = fail(&e, "--level is 1, 2 or 3");
			else
				o.level = optarg[0] - '0';
			break;
		case OPT_URL:
			set_str(&e.lookup_url, optarg);
			break;
		case OPT_ZONE:
			set_str(&e.zone, optarg);
			break;
		case OPT_TTL: {
			uint64_t v;
			int k = base_parse_uint(optarg, 0x7fffffff, &v);
			if (k <= 0 || optarg[k]) rc = fail(&e, "bad --ttl '%s'", optarg);
			o.ttl = (uint32_t)v;
			break;
		}
		case OPT_SCHEDULE:
			every = 3600;
			break;
		case OPT_EVERY:
			if (base_parse_duration(optarg, &every, &err) < 0 || every == 0)
				rc = fail(&e, "bad --every '%s'", optarg);
			break;
		default:
			rc = fail(&e, "see --help");
		}
	}
	if (!rc && (!have_format || !out))
		rc = fail(&e, "--format and --out are required (see --help)");
	if (!rc && optind != argc) rc = fail(&e, "unexpected argument '%s'", argv[optind]);
	const char *url = e.lookup_url ? e.lookup_url : DEFAULT_LOOKUP_URL;
	if (!rc && (strchr(url, '"') || strchr(url, '\\') || strchr(url, ' ') || strchr(url, '$') ||
	            strlen(url) > 200))
		rc = fail(&e, "--lookup-url must not contain quotes, backslashes, spaces or '$'");
	const char *zone = e.zone ? e.zone : "bl.mailrep.invalid";
	if (!rc && (strlen(zone) > 200 || strpbrk(zone, " \t\";()\\")))
		rc = fail(&e, "bad --zone '%s'", zone);
	if (!rc) rc = env_open(&e, 0);
	o.lookup_url = url;
	o.zone = zone;
	if (every) {
		signal(SIGTERM, on_stop);
		signal(SIGINT, on_stop);
	}
	while (!rc) {
		e.now = (int64_t)base_now();
		o.now = e.now;
		uint64_t t0 = base_mono_ns();
		if (listing_refresh(e.store, &e.pol, e.now, 0, NULL, &err) < 0) {
			rc = fail(&e, "%s", err.msg);
			break;
		}
		uint64_t t1 = base_mono_ns();
		int64_t n = listing_export(e.store, &o, out, &err);
		if (n < 0) {
			rc = fail(&e, "%s", err.msg);
			break;
		}
		fprintf(stderr, "exported %lld entries to %s (refresh %.3f s, export %.3f s)\n",
		        (long long)n, out, (double)(t1 - t0) / 1e9,
		        (double)(base_mono_ns() - t1) / 1e9);
		if (!every) break;
		for (uint32_t i = 0; i < every && !stop_flag; i++) sleep(1);
		if (stop_flag) break;
	}
	env_free(&e);
	return rc;
}

/* ---- traps --------------------------------------------------------------- */

static const char traps_help[] =
    "usage: mailrep traps add --db PATH ADDRESS [--kind address|domain|unsubscribe-probe]\n"
    "       mailrep traps list --db PATH [--json]\n"
    "\n"
    "Trap definitions: addresses and domains whose mail is a trap hit. An\n"
    "unsubscribe-probe address is only ever given out in unsubscribe requests.\n"
    "\n";

static int trap_print(void *ctx, const char *address, const char *kind, int64_t created)
{
	int *json = ctx;
	char t[32];
	fmt_time(created, t, sizeof t);
	if (*json) {
		printf("%s{\"address\":", *json == 2 ? "," : "");
		json_str(stdout, address);
		printf(",\"kind\":");
		json_str(stdout, kind);
		printf(",\"created\":\"%s\"}", t);
		*json = 2;
	} else {
		printf("%s\t%s\t%s\n", address, kind, t);
	}
	return 0;
}

int cli_traps(int argc, char **argv)
{
	static const struct option opts[] = {{"db", required_argument, NULL, OPT_DB},
	                                     {"kind", required_argument, NULL, OPT_KIND},
	                                     {"json", no_argument, NULL, OPT_JSON},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {NULL, 0, NULL, 0}};
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		fputs(traps_help, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	int add = !strcmp(argv[1], "add");
	if (!add && strcmp(argv[1], "list")) {
		fprintf(stderr, "mailrep traps: unknown action '%s' (add or list)\n", argv[1]);
		return 2;
	}
	struct env e;
	env_init(&e, add ? "traps add" : "traps list");
	const char *kind = "address";
	int json = 0, c, idx = 0, rc = 0;
	argc--, argv++;
	while (!rc && (c = getopt_long(argc, argv, "h", opts, &idx)) != -1) {
		switch (c) {
		case 'h':
			fputs(traps_help, stdout);
			env_free(&e);
			return 0;
		case OPT_DB:
			set_str(&e.db, optarg);
			break;
		case OPT_KIND:
			if (strcmp(optarg, "address") && strcmp(optarg, "domain") &&
			    strcmp(optarg, "unsubscribe-probe"))
				rc = fail(&e, "--kind is address, domain or unsubscribe-probe");
			kind = optarg;
			break;
		case OPT_JSON:
			json = 1;
			break;
		default:
			rc = fail(&e, "see --help");
		}
	}
	if (!rc && add && optind + 1 != argc) rc = fail(&e, "expected one trap address or domain");
	if (!rc && !add && optind != argc) rc = fail(&e, "unexpected argument '%s'", argv[optind]);
	if (!rc && add && (strlen(argv[optind]) > 254 || strpbrk(argv[optind], " \t\r\n<>\"")))
		rc = fail(&e, "bad trap '%s'", argv[optind]);
	if (!rc) rc = env_open(&e, 0);
	struct base_err err;
	if (!rc && add) {
		if (e.store->ops->trap_add(e.store, argv[optind], kind, e.now, &err) < 0)
			rc = fail(&e, "%s", err.msg);
	} else if (!rc) {
		if (json) printf("[");
		if (e.store->ops->traps_scan(e.store, trap_print, &json, &err) < 0)
			rc = fail(&e, "%s", err.msg);
		if (json) printf("]\n");
	}
	env_free(&e);
	return rc;
}

/* ---- trap ---------------------------------------------------------------- */

static const char trap_help[] =
    "usage: mailrep trap --db PATH --listen ADDR:PORT --trap-domain DOMAIN\n"
    "                    [--trap-address ADDR ...] [--proxy-from CIDR ...] [options]\n"
    "\n"
    "An SMTP server for spamtraps: mail to a trap domain (any local part), a trap\n"
    "address, or a trap defined with `mailrep traps add` is accepted and recorded as\n"
    "one impact (client IP, HELO, MAIL FROM, RCPT, Message-ID, Subject, headers up to\n"
    "8 KiB, the trap hit), durable before the reply to the final dot. Other\n"
    "recipients are refused.\n"
    "  --listen ADDR:PORT   where to listen (\"[v6]:port\" for IPv6)\n"
    "  --trap-domain D      a trap domain (repeatable)\n"
    "  --trap-address A     a single trap address (repeatable)\n"
    "  --proxy-from CIDR    connections from here must start with a PROXY v1/v2\n"
    "                       header naming the real client (repeatable)\n"
    "  --hostname NAME      the name in the greeting (default: the host name)\n"
    "  --user USER[:GROUP]  as root: become USER once the port is bound and the\n"
    "                       store is open (default mailrep if it exists, else nobody)\n"
    "  --timeout DUR        close clients silent this long (default 5m)\n"
    "  --max-size BYTES     largest message (default 10485760)\n"
    "  --max-conns N        concurrent connections (default 256)\n"
    "  --max-rcpts N        recipients per message (default 100)\n"
    "  -c FILE              read the [trap] section (same keys, without --) first\n"
    "  --debug              log every delivery\n"
    "  -h, --help           this help\n";

enum {
	OPT_LISTEN = 400,
	OPT_TDOMAIN,
	OPT_TADDR,
	OPT_PROXY,
	OPT_HOST,
	OPT_TIMEOUT,
	OPT_MAXSIZE,
	OPT_MAXCONNS,
	OPT_MAXRCPTS,
	OPT_TDEBUG,
	OPT_TUSER
};

struct trap_cfg {
	struct env *e;
	struct listing_trap_options o;
	const char **domains, **addrs;
	struct base_cidr *proxies;
	char *hostname;
	int have_listen;
	char **owned;
	size_t n_owned;
};

static const char *keep(struct trap_cfg *t, const char *s)
{
	t->owned = base_xrealloc(t->owned, (t->n_owned + 1) * sizeof *t->owned);
	return t->owned[t->n_owned++] = base_xstrdup(s);
}

static int trap_set(struct trap_cfg *t, const char *key, const char *v, struct base_err *err)
{
	uint64_t n;
	if (!strcmp(key, "db")) {
		set_str(&t->e->db, v);
	} else if (!strcmp(key, "listen")) {
		if (base_parse_hostport(v, 25, &t->o.listen, err) < 0) return -1;
		t->have_listen = 1;
	} else if (!strcmp(key, "trap-domain")) {
		if (strlen(v) > 253 || strpbrk(v, " \t@<>"))
			return base_errf(err, "bad trap domain '%s'", v);
		t->domains = base_xrealloc(t->domains, (t->o.n_domains + 1) * sizeof *t->domains);
		t->domains[t->o.n_domains++] = keep(t, v);
	} else if (!strcmp(key, "trap-address")) {
		if (strlen(v) > 256 || !strchr(v, '@') || strpbrk(v, " \t<>"))
			return base_errf(err, "bad trap address '%s'", v);
		t->addrs = base_xrealloc(t->addrs, (t->o.n_addresses + 1) * sizeof *t->addrs);
		t->addrs[t->o.n_addresses++] = keep(t, v);
	} else if (!strcmp(key, "proxy-from")) {
		t->proxies =
		    base_xrealloc(t->proxies, (t->o.n_proxy_from + 1) * sizeof *t->proxies);
		if (base_parse_cidr(v, &t->proxies[t->o.n_proxy_from], err) < 0) return -1;
		t->o.n_proxy_from++;
	} else if (!strcmp(key, "user")) {
		t->o.user = keep(t, v);
	} else if (!strcmp(key, "hostname")) {
		if (strlen(v) > 253 || strpbrk(v, " \t\r\n"))
			return base_errf(err, "bad hostname '%s'", v);
		free(t->hostname);
		t->hostname = base_xstrdup(v);
	} else if (!strcmp(key, "timeout")) {
		if (base_parse_duration(v, &t->o.timeout, err) < 0 || !t->o.timeout)
			return base_errf(err, "bad timeout '%s'", v);
	} else if (!strcmp(key, "max-size") || !strcmp(key, "max-conns") ||
	           !strcmp(key, "max-rcpts")) {
		int k = base_parse_uint(v, (uint64_t)1 << 40, &n);
		if (k <= 0 || v[k] || !n) return base_errf(err, "bad %s '%s'", key, v);
		if (!strcmp(key, "max-size"))
			t->o.max_size = n;
		else if (!strcmp(key, "max-conns"))
			t->o.max_conns = n > 100000 ? 100000 : (unsigned)n;
		else
			t->o.max_rcpts = n > 10000 ? 10000 : (unsigned)n;
	} else {
		return base_errf(err, "unknown trap option '%s'", key);
	}
	return 0;
}

static int trap_ini_cb(void *ctx, const char *key, const char *value, struct base_err *err)
{
	return trap_set(ctx, key, value, err);
}

int cli_trap(int argc, char **argv)
{
	static const struct option opts[] = {{"db", required_argument, NULL, OPT_DB},
	                                     {"listen", required_argument, NULL, OPT_LISTEN},
	                                     {"trap-domain", required_argument, NULL, OPT_TDOMAIN},
	                                     {"trap-address", required_argument, NULL, OPT_TADDR},
	                                     {"proxy-from", required_argument, NULL, OPT_PROXY},
	                                     {"hostname", required_argument, NULL, OPT_HOST},
	                                     {"timeout", required_argument, NULL, OPT_TIMEOUT},
	                                     {"max-size", required_argument, NULL, OPT_MAXSIZE},
	                                     {"max-conns", required_argument, NULL, OPT_MAXCONNS},
	                                     {"max-rcpts", required_argument, NULL, OPT_MAXRCPTS},
	                                     {"debug", no_argument, NULL, OPT_TDEBUG},
	                                     {"user", required_argument, NULL, OPT_TUSER},
	                                     {"config", required_argument, NULL, 'c'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {NULL, 0, NULL, 0}};
	struct env e;
	env_init(&e, "trap");
	struct trap_cfg t;
	memset(&t, 0, sizeof t);
	t.e = &e;
	t.o.timeout = 300;
	t.o.max_size = 10485760;
	t.o.max_conns = 256;
	t.o.max_rcpts = 100;
	t.o.max_errors = 10;
	t.o.ready_fd = -1;
	int rc = 0, c, idx = 0;
	struct base_err err;
	for (int i = 1; i < argc && !rc; i++)
		if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc &&
		    base_ini_read(argv[i + 1], "trap", trap_ini_cb, &t, &err) < 0)
			rc = fail(&e, "%s", err.msg);
	while (!rc && (c = getopt_long(argc, argv, "hc:", opts, &idx)) != -1) {
		switch (c) {
		case 'h':
			fputs(trap_help, stdout);
			rc = -1;
			break;
		case 'c':
			break;
		case OPT_TDEBUG:
			base_log_set_level(BASE_LOG_DEBUG);
			break;
		case '?':
			rc = fail(&e, "see --help");
			break;
		default:
			if (trap_set(&t, opts[idx].name, optarg, &err) < 0)
				rc = fail(&e, "%s", err.msg);
		}
	}
	if (!rc && optind != argc) rc = fail(&e, "unexpected argument '%s'", argv[optind]);
	if (!rc && !t.have_listen) rc = fail(&e, "--listen ADDR:PORT is required");
	if (!rc) rc = env_open(&e, 0);
	if (!rc) {
		char host[256] = "localhost";
		if (!t.hostname && gethostname(host, sizeof host - 1) == 0)
			host[sizeof host - 1] = 0;
		t.o.hostname = t.hostname ? t.hostname : host;
		t.o.store = e.store;
		t.o.domains = t.domains;
		t.o.addresses = t.addrs;
		t.o.proxy_from = t.proxies;
		if (listing_trap_run(&t.o, &err) < 0) rc = fail(&e, "%s", err.msg);
	}
	for (size_t i = 0; i < t.n_owned; i++) free(t.owned[i]);
	free(t.owned);
	free(t.domains);
	free(t.addrs);
	free(t.proxies);
	free(t.hostname);
	env_free(&e);
	return rc < 0 ? 0 : rc;
}

/* ---- live zones: the store as a source for `mailrep dnsbl` ---------------
 *
 * A zone spec "ZONE:store:DB" serves every level from the store, one code
 * per level (127.0.0.2, .3, .4), each level its own dataset so that an
 * address covered by several levels gets every code; "ZONE:storeN:DB"
 * serves level N alone. The data is written as rbldnsd combined text, so
 * the zone answers exactly what the rbldnsd export would. Each fill first
 * refreshes the listings to the current time, and reports the next expiry
 * so that the server rebuilds the zone when a listing runs out even if
 * nothing is written. New impacts are noticed through the store's data
 * version, which changes whenever another process commits. */

struct live {
	struct env e;
	int level; /* 0: every level; 1..3: that level alone */
	const char *url;
};

struct live_fill {
	struct live *l;
	dnsbl_emit_fn emit;
	void *ctx;
	struct base_err *err;
	int level, v6, failed;
	int64_t now, next;
	struct base_buf v6keys; /* Level 1 IPv6 keys met in the IPv4 pass, NUL-separated */
};

static int live_line(struct live_fill *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int live_line(struct live_fill *f, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (!f->failed && f->emit(f->ctx, line, f->err) < 0) f->failed = 1;
	return f->failed ? -1 : 0;
}

static const char *live_code(int level)
{
	return level == 1 ? "127.0.0.2" : level == 2 ? "127.0.0.3" : "127.0.0.4";
}

static int live_record(void *ctx, const char *key, int64_t expires, const char *ranges)
{
	struct live_fill *f = ctx;
	if (expires <= f->now) return 0;
	if (!f->next || expires < f->next) f->next = expires;
	int v6 = strchr(key, ':') != NULL;
	if (f->level == 1) {
		if (v6) { /* kept for the IPv6 dataset: one pass over the table serves both */
			base_buf_append(&f->v6keys, key, strlen(key) + 1);
			return 0;
		}
		/* the dataset's default value (written first) serves every Level 1 entry */
		if (!f->failed && f->emit(f->ctx, key, f->err) < 0) f->failed = 1;
		return f->failed;
	}
	if (f->v6) return 0;
	const char *r = ranges ? ranges : key;
	while (*r) {
		size_t n = strcspn(r, " ");
		if (n && n < 64 && live_line(f, "%.*s :%s:Listed at Level %d (%s), see %s$", (int)n, r,
		                             live_code(f->level), f->level, key, f->l->url) < 0)
			return 1;
		r += n;
		while (*r == ' ') r++;
	}
	return f->failed;
}

static void live_close(void *h);

static void *live_open(void *arg, const char *type, const char *path, const char *zone,
                       struct base_err *err)
{
	(void)zone;
	struct live *l = base_xcalloc(1, sizeof *l);
	l->level = type[5] ? type[5] - '0' : 0;
	l->url = arg ? arg : DEFAULT_LOOKUP_URL;
	env_init(&l->e, "dnsbl");
	set_str(&l->e.db, path);
	if (listing_store_open(path, &l->e.store, err) < 0 || settle_policy(&l->e, err) < 0 ||
	    (l->e.prefixes && listing_prefixes_load(l->e.prefixes, &l->e.allocs, err) < 0) ||
	    (l->e.asn_map && listing_prefixes_load(l->e.asn_map, &l->e.asmap, err) < 0) ||
	    (l->e.whitelist && listing_policy_load_whitelist(&l->e.pol, l->e.whitelist, err) < 0)) {
		env_free(&l->e);
		free(l);
		return NULL;
	}
	l->e.pol.allocs = l->e.allocs;
	l->e.pol.asmap = l->e.asmap;
	if (l->e.store->ops->limit_memory(l->e.store, err) < 0) {
		live_close(l);
		return NULL;
	}
	return l;
}

static int live_version(void *h, uint64_t *v, struct base_err *err)
{
	struct live *l = h;
	return l->e.store->ops->data_version(l->e.store, v, err);
}

static int live_fill(void *h, time_t now, dnsbl_emit_fn emit, void *ctx, time_t *next_change,
                     struct base_err *err)
{
	struct live *l = h;
	if (listing_refresh(l->e.store, &l->e.pol, (int64_t)now, 0, NULL, err) < 0) return -1;
	struct live_fill f = {.l = l, .emit = emit, .ctx = ctx, .err = err, .now = (int64_t)now};
	base_buf_init(&f.v6keys);
	for (int level = 1; level <= 3; level++) {
		if (l->level && l->level != level) continue;
		for (int v6 = 0; v6 <= (level == 1); v6++) {
			f.level = level;
			f.v6 = v6;
			/* Level 1 is single addresses: ip4set keeps them in 4 bytes each */
			const char *type = v6 ? "ip6trie" : level == 1 ? "ip4set" : "ip4trie";
			if (live_line(&f, "$DATASET %s:level%d%s @", type, level, v6 ? "v6" : "") < 0)
				return -1;
			/* the default value; $ is the address asked */
			if (level == 1 && live_line(&f, ":%s:Listed at Level 1, see %s$", live_code(1), l->url) < 0)
				return -1;
			/* RFC 5782: the test entry is listed in every zone */
			if (live_line(&f, "%s :%s:RFC 5782 test entry", v6 ? "::ffff:7f00:2" : "127.0.0.2",
			              live_code(level)) < 0)
				return -1;
			if (level == 1 && v6) {
				for (size_t o = 0; o < f.v6keys.len && !f.failed; o += strlen(f.v6keys.data + o) + 1)
					if (f.emit(f.ctx, f.v6keys.data + o, err) < 0) f.failed = 1;
			} else if (l->e.store->ops->active_scan(l->e.store, level, level == 1, live_record, &f,
			                                        err) < 0) {
				base_buf_free(&f.v6keys);
				return -1;
			}
			if (f.failed) {
				base_buf_free(&f.v6keys);
				return -1;
			}
		}
	}
	base_buf_free(&f.v6keys);
	*next_change = (time_t)f.next;
	return l->e.store->ops->limit_memory(l->e.store, err);
}

static void live_close(void *h)
{
	struct live *l = h;
	env_free(&l->e);
	free(l);
}

static const struct dnsbl_source_ops live_ops = {live_open, live_version, live_fill, live_close};

void cli_listing_register_sources(const char *lookup_url)
{
	static const char *const types[] = {"store", "store1", "store2", "store3"};
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
		dnsbl_source_register(types[i], &live_ops, (void *)lookup_url);
}
