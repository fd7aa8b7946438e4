/*
 * ini.c — reads one section of an INI-style config file ("-c FILE"):
 * "[section]" headers, "key = value" lines, '#' and ';' comments. Each
 * component reads its own section; keys of other sections are ignored,
 * and a malformed line anywhere is an error naming file:line. Named
 * sections ("[pool bulk]", "[account acme]") are read by prefix.
 */
#include "base/base.h"

#include <stdlib.h>
#include <string.h>

static char *trim(char *s)
{
	s = (char *)base_skip_ws(s);
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = 0;
	return s;
}

int base_ini_read_sections(const char *path, const char *prefix,
                           int (*fn)(void *ctx, const char *section, const char *key,
                                     const char *value, struct base_err *err),
                           void *ctx, struct base_err *err)
{
	struct base_lines *l = base_xmalloc(sizeof *l);
	if (base_lines_open(l, path, err) < 0) {
		free(l);
		return -1;
	}
	char *line, sect[256] = "";
	size_t len, plen = strlen(prefix);
	int r, in = 0;
	while ((r = base_lines_next(l, &line, &len, err)) == 1) {
		char *s = trim(line);
		if (!*s || *s == '#' || *s == ';') continue;
		if (*s == '[') {
			char *e = strchr(s, ']');
			if (!e || e[1]) {
				r = base_errf(err, "%s:%lu: bad section header", path, l->lineno);
				break;
			}
			*e = 0;
			char *name = trim(s + 1);
			/* "[relay]" matches the prefix "relay"; "[pool bulk]" matches
			 * the prefix "pool " (note the space). */
			in = plen && plen < sizeof sect && !strncmp(name, prefix, plen) &&
			     (prefix[plen - 1] == ' ' ? name[plen] != 0 : name[plen] == 0);
			if (in) snprintf(sect, sizeof sect, "%s", name);
			if (in && strlen(name) >= sizeof sect) {
				r = base_errf(err, "%s:%lu: section name too long", path, l->lineno);
				break;
			}
			continue;
		}
		char *eq = strchr(s, '=');
		if (!eq) {
			r = base_errf(err, "%s:%lu: expected key = value", path, l->lineno);
			break;
		}
		if (!in) continue;
		*eq = 0;
		char *key = trim(s), *val = trim(eq + 1);
		struct base_err e;
		if (fn(ctx, sect, key, val, &e) < 0) {
			r = base_errf(err, "%s:%lu: %s", path, l->lineno, e.msg);
			break;
		}
	}
	base_lines_close(l);
	free(l);
	return r < 0 ? -1 : 0;
}

struct one_section {
	int (*fn)(void *ctx, const char *key, const char *value, struct base_err *err);
	void *ctx;
};

static int one_cb(void *ctx, const char *section, const char *key, const char *value,
                  struct base_err *err)
{
	(void)section;
	struct one_section *o = ctx;
	return o->fn(o->ctx, key, value, err);
}

int base_ini_read(const char *path, const char *section,
                  int (*fn)(void *ctx, const char *key, const char *value, struct base_err *err),
                  void *ctx, struct base_err *err)
{
	struct one_section o = {fn, ctx};
	return base_ini_read_sections(path, section, one_cb, &o, err);
}
