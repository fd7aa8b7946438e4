/*
 * load.c — reading datasets from their files, and building snapshots.
 *
 * A dataset is identified by its spec ("type:file,file"); zones that name
 * the same spec share one dataset, as in rbldnsd. A reload stats every file
 * and rebuilds only the datasets whose files changed; the others are shared
 * with the previous snapshot through their reference counts. When a changed
 * dataset fails to load, the previous copy keeps serving and the error (with
 * file:line) is logged — rbldnsd would stop serving the zone instead.
 */
#include "dnsbl/int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const struct ds_type *const types[] = {
	&ds_ip4set, &ds_ip4tset, &ds_ip4trie, &ds_ip6trie, &ds_ip6tset,
	&ds_dnset,  &ds_generic, &ds_combined, &ds_acl,
};

const struct ds_type *ds_type_find(const char *name)
{
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
		if (!base_strcasecmp_ascii(types[i]->name, name)) return types[i];
	return NULL;
}

void dnsbl_options_default(struct dnsbl_options *o)
{
	memset(o, 0, sizeof *o);
	o->defttl = 2100;
	o->udp_max = 1232;
	o->axfr = 1;
	o->version_text = "mailrep " MAILREP_VERSION;
}

/* ---- zone specs -------------------------------------------------------- */

int dnsbl_zonespec_parse(const char *arg, struct dnsbl_zonespec *z, struct base_err *err)
{
	memset(z, 0, sizeof *z);
	const char *c1 = strchr(arg, ':');
	if (!c1) return base_errf(err, "zone spec '%s': expected name:type:file[,file...]", arg);
	const char *c2 = strchr(c1 + 1, ':');
	if (!c2) return base_errf(err, "zone spec '%s': expected name:type:file[,file...]", arg);
	z->zone = base_xstrndup(arg, (size_t)(c1 - arg));
	z->type = base_xstrndup(c1 + 1, (size_t)(c2 - c1 - 1));
	if (!ds_type_find(z->type) && !source_type_known(z->type)) {
		base_errf(err, "zone spec '%s': unknown dataset type '%s'", arg, z->type);
		dnsbl_zonespec_free(z);
		return -1;
	}
	if (!*z->zone && strcmp(z->type, "acl")) {
		base_errf(err, "zone spec '%s': an empty zone name is only allowed for a global acl", arg);
		dnsbl_zonespec_free(z);
		return -1;
	}
	const char *p = c2 + 1;
	while (*p) {
		size_t n = strcspn(p, ",:");
		if (n) {
			z->files = base_xrealloc(z->files, (size_t)(z->nfiles + 1) * sizeof *z->files);
			z->files[z->nfiles++] = base_xstrndup(p, n);
		}
		p += n;
		if (*p) p++;
	}
	if (!z->nfiles) {
		base_errf(err, "zone spec '%s': no data file given", arg);
		dnsbl_zonespec_free(z);
		return -1;
	}
	if (*z->zone) {
		struct dns_name n;
		if (dns_name_from_text(&n, z->zone, 1, err) < 0) {
			dnsbl_zonespec_free(z);
			return -1;
		}
	}
	return 0;
}

void dnsbl_zonespec_free(struct dnsbl_zonespec *z)
{
	free(z->zone);
	free(z->type);
	for (int i = 0; i < z->nfiles; i++) free(z->files[i]);
	free(z->files);
	memset(z, 0, sizeof *z);
}

/* ---- datasets ---------------------------------------------------------- */

struct ds *ds_new(const struct ds_type *type, const struct dnsbl_options *opts)
{
	struct ds *ds = base_xcalloc(1, sizeof *ds);
	ds->type = type;
	ds->opts = opts;
	ds->ttl = opts->defttl;
	atomic_init(&ds->refs, 1);
	base_arena_init(&ds->arena);
	static const uint8_t def_a[4] = {127, 0, 0, 2};
	static const uint8_t excl_a[4] = {0, 0, 0, 0};
	ds_intern(ds, excl_a, "\x01", 1); /* vid 0: placeholder for exclusions */
	ds_intern(ds, def_a, "", 0);      /* vid 1: the built-in default */
	ds->defvid = DS_VID_DEF;
	return ds;
}

void ds_release(struct ds *ds)
{
	if (!ds) return;
	if (atomic_fetch_sub(&ds->refs, 1) != 1) return;
	if (ds->type->free) ds->type->free(ds);
	for (unsigned i = 0; i < ds->nchildren; i++) ds_release(ds->children[i].ds);
	free(ds->children);
	for (int i = 0; i < ds->nfiles; i++) free(ds->files[i].path);
	free(ds->files);
	free(ds->vals);
	ds_intern_done(ds);
	free(ds->spec);
	free(ds->label);
	base_arena_free(&ds->arena);
	free(ds);
}

int ds_feed_line(struct ds *ds, char *line, struct base_err *err)
{
	/* strip leading and trailing blanks (only spaces and tabs, as rbldnsd) */
	while (*line == ' ' || *line == '\t') line++;
	size_t n = strlen(line);
	while (n && (line[n - 1] == ' ' || line[n - 1] == '\t')) line[--n] = '\0';
	if (!n) return 0;
	if (ds->type->flags & DST_COMBINED) return ds->type->line(ds, line, err) < 0 ? -1 : 0;
	const char *sp = NULL;
	if (line[0] == '$') sp = line + 1;
	else if ((line[0] == '#' || line[0] == ';' || line[0] == ':') && line[1] == '$') sp = line + 2;
	if (sp) {
		int r = ds_special(ds, sp, err);
		if (r == 0) ds_warn(ds, "invalid or unrecognized special entry");
		return r < 0 ? -1 : 0;
	}
	if (line[0] == '#' || line[0] == ';') return 0;
	return ds->type->line(ds, line, err) < 0 ? -1 : 0;
}

static int stat_file(const char *path, struct file_stamp *fs)
{
	struct stat st;
	if (stat(path, &st) < 0) return -1;
	fs->dev = st.st_dev;
	fs->ino = st.st_ino;
	fs->mtime = st.st_mtime;
	fs->size = st.st_size;
	return 0;
}

static int is_gzip(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) return 0;
	unsigned char m[2] = {0, 0};
	size_t n = fread(m, 1, 2, f);
	fclose(f);
	return n == 2 && m[0] == 0x1f && m[1] == 0x8b;
}

int ds_load(struct ds *ds, struct base_err *err)
{
	time_t stamp = 0;
	for (int i = 0; i < ds->nfiles; i++) {
		struct file_stamp *fs = &ds->files[i];
		if (stat_file(fs->path, fs) < 0)
			return base_errf(err, "%s: cannot stat: %s", fs->path, strerror(errno));
		if (ds->opts->no_gzip && is_gzip(fs->path))
			return base_errf(err, "%s: file is compressed, decompression disabled (-C)", fs->path);
		struct base_lines lr;
		if (base_lines_open(&lr, fs->path, err) < 0) return -1;
		lr.keep_cr = 1; /* rbldnsd: CR is not white space ("text\r" keeps it) */
		ds->cur_file = fs->path;
		if (ds->type->start) ds->type->start(ds);
		char *line;
		size_t len;
		int r;
		while ((r = base_lines_next(&lr, &line, &len, err)) > 0) {
			ds->cur_line = lr.lineno;
			if (ds_feed_line(ds, line, err) < 0) {
				base_lines_close(&lr);
				return -1;
			}
		}
		base_lines_close(&lr);
		if (r < 0) return -1;
		struct file_stamp after;
		if (stat_file(fs->path, &after) < 0 || after.mtime != fs->mtime || after.size != fs->size)
			return base_errf(err, "%s: file changed while it was being read, data load aborted",
					 fs->path);
		if (fs->mtime > stamp) stamp = fs->mtime;
	}
	ds->stamp = stamp;
	if (ds->warnings > 5) base_warn("%s: %u more warnings suppressed", ds->label, ds->warnings - 5);
	ds->cur_file = NULL;
	if (ds->type->finish(ds, err) < 0) return -1;
	ds_intern_done(ds);
	return 0;
}

/* Whether the data of ds changed since it was loaded, among what a reload
 * looks at (DNSBL_LOAD_*). */
static int ds_changed(const struct ds *ds, unsigned what)
{
	if (ds->source) return (what & DNSBL_LOAD_SOURCES) && source_changed(ds);
	if (!(what & DNSBL_LOAD_FILES)) return 0;
	for (int i = 0; i < ds->nfiles; i++) {
		struct file_stamp now;
		if (stat_file(ds->files[i].path, &now) < 0) return 1;
		const struct file_stamp *was = &ds->files[i];
		if (now.mtime != was->mtime || now.size != was->size || now.ino != was->ino ||
		    now.dev != was->dev)
			return 1;
	}
	return 0;
}

static char *spec_key(const struct dnsbl_zonespec *z)
{
	struct base_buf b;
	base_buf_init(&b);
	base_buf_puts(&b, z->type);
	for (int i = 0; i < z->nfiles; i++) {
		base_buf_puts(&b, i ? "," : ":");
		base_buf_puts(&b, z->files[i]);
	}
	return b.data;
}

static struct ds *load_spec(const struct dnsbl_options *opts, const struct dnsbl_zonespec *z,
			    struct base_err *err)
{
	const struct ds_type *t = ds_type_find(z->type);
	if (!t) { /* a source writes combined data */
		struct ds *ds = ds_new(&ds_combined, opts);
		ds->spec = spec_key(z);
		ds->label = base_xstrdup(ds->spec);
		if (source_load(ds, z->zone, z->type, z->files, z->nfiles, err) < 0) {
			ds_release(ds);
			return NULL;
		}
		return ds;
	}
	struct ds *ds = ds_new(t, opts);
	ds->spec = spec_key(z);
	ds->label = base_xstrdup(ds->spec);
	ds->nfiles = z->nfiles;
	ds->files = base_xcalloc((size_t)z->nfiles, sizeof *ds->files);
	for (int i = 0; i < z->nfiles; i++) ds->files[i].path = base_xstrdup(z->files[i]);
	if (ds_load(ds, err) < 0) {
		ds_release(ds);
		return NULL;
	}
	return ds;
}

/* ---- snapshots --------------------------------------------------------- */

static int zone_cmp_specific(const void *x, const void *y)
{
	const struct zone *a = x, *b = y;
	if (a->name.nlabels != b->name.nlabels) return a->name.nlabels > b->name.nlabels ? -1 : 1;
	return a->index < b->index ? -1 : (a->index > b->index);
}

static struct ds *find_prev(const struct dnsbl_snapshot *prev, const char *spec)
{
	if (!prev) return NULL;
	for (unsigned i = 0; i < prev->nall; i++)
		if (prev->all[i] && !strcmp(prev->all[i]->spec, spec)) return prev->all[i];
	return NULL;
}

int dnsbl_snapshot_load(const struct dnsbl_options *opts, const struct dnsbl_zonespec *specs,
			unsigned nspecs, const struct dnsbl_snapshot *prev, struct dnsbl_snapshot **out,
			struct base_err *err)
{
	return dnsbl_snapshot_reload(opts, specs, nspecs, prev, DNSBL_LOAD_FILES | DNSBL_LOAD_SOURCES, out, err);
}

int dnsbl_snapshot_reload(const struct dnsbl_options *opts, const struct dnsbl_zonespec *specs,
			  unsigned nspecs, const struct dnsbl_snapshot *prev, unsigned what,
			  struct dnsbl_snapshot **out, struct base_err *err)
{
	*out = NULL;
	struct ds **all = base_xcalloc(nspecs, sizeof *all);
	char **keys = base_xcalloc(nspecs, sizeof *keys);
	unsigned nall = 0;
	int changed = prev == NULL, failed = 0;
	int *slot = base_xcalloc(nspecs, sizeof *slot);

	for (unsigned i = 0; i < nspecs; i++) {
		char *key = spec_key(&specs[i]);
		unsigned j;
		for (j = 0; j < nall; j++)
			if (!strcmp(keys[j], key)) break;
		slot[i] = (int)j;
		if (j < nall) {
			free(key);
			continue;
		}
		keys[nall] = key;
		struct ds *old = find_prev(prev, key);
		struct ds *ds = NULL;
		if (old && !ds_changed(old, what)) {
			atomic_fetch_add(&old->refs, 1);
			ds = old;
		} else {
			struct base_err e;
			uint64_t t0 = base_mono_ns();
			ds = load_spec(opts, &specs[i], &e);
			changed = 1;
			if (!ds) {
				if (old) {
					base_error("%s; keeping the data loaded before", e.msg);
					atomic_fetch_add(&old->refs, 1);
					ds = old;
				} else if (opts->quiet) {
					base_error("%s; zones using %s will not be serviced", e.msg, key);
				} else {
					base_errf(err, "%s", e.msg);
					failed = 1;
				}
			} else {
				base_info("%s: loaded in %.3f s", key, (double)(base_mono_ns() - t0) / 1e9);
			}
		}
		all[nall++] = ds;
		if (failed) break;
	}
	if (failed || !changed) {
		for (unsigned j = 0; j < nall; j++) ds_release(all[j]);
		for (unsigned j = 0; j < nall; j++) free(keys[j]);
		free(keys);
		free(all);
		free(slot);
		return failed ? -1 : 1;
	}
	for (unsigned j = 0; j < nall; j++) free(keys[j]);
	free(keys);

	struct dnsbl_snapshot *s = base_xcalloc(1, sizeof *s);
	s->opts = opts;
	s->all = all;
	s->nall = nall;
	s->generation = prev ? prev->generation + 1 : 1;
	atomic_init(&s->refs, 1);
	for (unsigned i = 0; i < nspecs; i++) {
		struct ds *ds = all[slot[i]];
		if (!*specs[i].zone) {
			s->gacl = ds;
			continue;
		}
		struct dns_name zn;
		dns_name_from_text(&zn, specs[i].zone, 1, NULL);
		struct zone *z = NULL;
		for (unsigned k = 0; k < s->nzones; k++)
			if (s->zones[k].name.len == zn.len && !memcmp(s->zones[k].name.wire, zn.wire, zn.len))
				z = &s->zones[k];
		if (!z) {
			s->zones = base_xrealloc(s->zones, (s->nzones + 1) * sizeof *s->zones);
			z = &s->zones[s->nzones];
			memset(z, 0, sizeof *z);
			z->name = zn;
			z->text = base_xstrdup(specs[i].zone);
			z->index = s->nzones++;
			z->loaded = 1;
		}
		if (!ds) {
			z->loaded = 0;
			if (!strcmp(specs[i].type, "acl")) continue;
			z->ds = base_xrealloc(z->ds, (z->nds + 1) * sizeof *z->ds);
			z->ds[z->nds++] = NULL;
			continue;
		}
		if (ds->type->flags & DST_ACL) {
			z->acl = ds;
			continue;
		}
		z->ds = base_xrealloc(z->ds, (z->nds + 1) * sizeof *z->ds);
		z->ds[z->nds++] = ds;
	}
	free(slot);
	for (unsigned k = 0; k < s->nzones; k++) zone_finish(s, &s->zones[k]);
	base_sort(s->zones, s->nzones, sizeof *s->zones, zone_cmp_specific);
	for (unsigned k = 0; k < s->nzones; k++) zone_glue(s, &s->zones[k]);
	*out = s;
	return 0;
}

void dnsbl_snapshot_free(struct dnsbl_snapshot *s)
{
	if (!s) return;
	for (unsigned k = 0; k < s->nzones; k++) {
		free(s->zones[k].ds);
		free(s->zones[k].text);
		free(s->zones[k].glue);
		journal_zone_free(&s->zones[k]);
	}
	free(s->zones);
	for (unsigned i = 0; i < s->nall; i++) ds_release(s->all[i]);
	free(s->all);
	free(s);
}

unsigned dnsbl_snapshot_zones(const struct dnsbl_snapshot *s)
{
	return s->nzones;
}

const char *dnsbl_snapshot_zone_name(const struct dnsbl_snapshot *s, unsigned index)
{
	for (unsigned k = 0; k < s->nzones; k++)
		if (s->zones[k].index == index) return s->zones[k].text;
	return "?";
}
