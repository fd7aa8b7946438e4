/*
 * source.c — datasets whose data comes from a program instead of files.
 *
 * A higher layer (the listing store, through the cli) registers a source
 * under a zone-spec type name ("store", "store1", ...). A zone spec of that
 * type, "zone:store:/path/to/db", then becomes one combined dataset whose
 * text the source writes line by line — "$SOA", "$DATASET ip4trie @",
 * "192.0.2.1 :2:Listed" — and the ordinary rbldnsd parsers read it. So a
 * live zone is answered by exactly the code that answers the files the
 * store exports.
 *
 * A source says cheaply whether its data changed (a version number), and
 * when it will change by itself (the next expiry). The server polls
 * sources often (every 100 ms) and rebuilds only a dataset whose source
 * changed, off to the side like any reload.
 *
 * The registry is filled once at start-up, before any thread starts, and is
 * only read afterwards; handles are used by the reloading thread alone.
 */
#include "dnsbl/int.h"

#include <stdlib.h>
#include <string.h>

#define MAX_SOURCE_TYPES 16

struct source_type {
	char name[32];
	const struct dnsbl_source_ops *ops;
	void *arg;
};

struct source_handle {
	char *spec; /* "type:path" */
	const struct source_type *t;
	void *h;
	struct source_handle *next;
};

static struct source_type source_types[MAX_SOURCE_TYPES];
static unsigned nsource_types;
static struct source_handle *handles;

int dnsbl_source_register(const char *type, const struct dnsbl_source_ops *ops, void *arg)
{
	if (nsource_types == MAX_SOURCE_TYPES || strlen(type) >= sizeof source_types[0].name)
		return -1;
	struct source_type *t = &source_types[nsource_types++];
	snprintf(t->name, sizeof t->name, "%s", type);
	t->ops = ops;
	t->arg = arg;
	return 0;
}

static const struct source_type *find_type(const char *name)
{
	for (unsigned i = 0; i < nsource_types; i++)
		if (!base_strcasecmp_ascii(source_types[i].name, name)) return &source_types[i];
	return NULL;
}

int source_type_known(const char *name)
{
	return find_type(name) != NULL;
}

/* The open handle for a spec, opened on first use. */
static struct source_handle *handle_for(const char *type, const char *path, const char *zone,
					 struct base_err *err)
{
	const struct source_type *t = find_type(type);
	if (!t) {
		base_errf(err, "unknown source type '%s'", type);
		return NULL;
	}
	size_t n = strlen(type) + strlen(path) + 2;
	char *spec = base_xmalloc(n);
	snprintf(spec, n, "%s:%s", type, path);
	for (struct source_handle *s = handles; s; s = s->next)
		if (!strcmp(s->spec, spec)) {
			free(spec);
			return s;
		}
	void *h = t->ops->open(t->arg, type, path, zone, err);
	if (!h) {
		free(spec);
		return NULL;
	}
	struct source_handle *s = base_xcalloc(1, sizeof *s);
	s->spec = spec;
	s->t = t;
	s->h = h;
	s->next = handles;
	handles = s;
	return s;
}

void dnsbl_sources_close(void)
{
	while (handles) {
		struct source_handle *s = handles;
		handles = s->next;
		s->t->ops->close(s->h);
		free(s->spec);
		free(s);
	}
}

int dnsbl_sources_registered(void)
{
	return nsource_types > 0;
}

struct feed {
	struct ds *ds;
	unsigned long line;
};

static int feed_line(void *ctx, const char *line, struct base_err *err)
{
	struct feed *f = ctx;
	char buf[BASE_LINE_MAX + 1];
	size_t n = strlen(line);
	if (n > BASE_LINE_MAX)
		return base_errf(err, "%s: line %lu longer than %d bytes", f->ds->label,
		                 f->line + 1, BASE_LINE_MAX);
	memcpy(buf, line, n + 1);
	f->ds->cur_line = ++f->line;
	return ds_feed_line(f->ds, buf, err);
}

/* Reads the extra files of a source's zone spec ($SOA, $NS, ...) into ds. */
static int feed_files(struct ds *ds, char *const *files, int nfiles, struct base_err *err)
{
	for (int i = 0; i < nfiles; i++) {
		struct base_lines lr;
		if (base_lines_open(&lr, files[i], err) < 0) return -1;
		ds->cur_file = files[i];
		char *line;
		size_t len;
		int r;
		while ((r = base_lines_next(&lr, &line, &len, err)) > 0) {
			ds->cur_line = lr.lineno;
			if (ds_feed_line(ds, line, err) < 0) break;
		}
		base_lines_close(&lr);
		if (r != 0) return -1;
	}
	return 0;
}

int source_load(struct ds *ds, const char *zone, const char *type, char *const *files, int nfiles,
		struct base_err *err)
{
	struct source_handle *s = handle_for(type, files[0], zone, err);
	if (!s) return -1;
	uint64_t ver;
	if (s->t->ops->version(s->h, &ver, err) < 0) return -1;
	if (ds->type->start) ds->type->start(ds);
	if (feed_files(ds, files + 1, nfiles - 1, err) < 0) return -1;
	ds->cur_file = ds->label;
	struct feed f = {ds, 0};
	char line[600];
	if (!ds->soa) { /* a zone needs an SOA for negative answers and transfers */
		snprintf(line, sizeof line, "$SOA 60 ns.%s. hostmaster.%s. 0 600 300 604800 60", zone, zone);
		if (feed_line(&f, line, err) < 0) return -1;
	}
	if (!ds->nns) {
		snprintf(line, sizeof line, "$NS 3600 ns.%s.", zone);
		if (feed_line(&f, line, err) < 0) return -1;
	}
	time_t next = 0;
	if (s->t->ops->fill(s->h, base_now(), feed_line, &f, &next, err) < 0) return -1;
	ds->cur_file = NULL;
	ds->source = s;
	ds->source_version = ver;
	ds->source_next = next;
	ds->stamp = base_now();
	if (ds->warnings > 5) base_warn("%s: %u more warnings suppressed", ds->label, ds->warnings - 5);
	if (ds->type->finish(ds, err) < 0) return -1;
	ds_intern_done(ds);
	return 0;
}

int source_changed(const struct ds *ds)
{
	const struct source_handle *s = ds->source;
	uint64_t ver;
	struct base_err err;
	if (s->t->ops->version(s->h, &ver, &err) < 0) {
		base_warn("%s: %s", ds->label, err.msg);
		return 0; /* keep serving what we have */
	}
	if (ver != ds->source_version) return 1;
	return ds->source_next && base_now() >= ds->source_next;
}
