/*
 * ini.c — reads one section of an INI-style config file ("-c FILE"):
 * "[section]" headers, "key = value" lines, '#' and ';' comments. Each
 * component reads its own section; keys of other sections are ignored,
 * and a malformed line anywhere is an error naming file:line.
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

int base_ini_read(const char *path, const char *section,
                  int (*fn)(void *ctx, const char *key, const char *value, struct base_err *err),
                  void *ctx, struct base_err *err)
{
	struct base_lines *l = base_xmalloc(sizeof *l);
	if (base_lines_open(l, path, err) < 0) {
		free(l);
		return -1;
	}
	char *line;
	size_t len;
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
			in = !strcmp(trim(s + 1), section);
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
		if (fn(ctx, key, val, &e) < 0) {
			r = base_errf(err, "%s:%lu: %s", path, l->lineno, e.msg);
			break;
		}
	}
	base_lines_close(l);
	free(l);
	return r < 0 ? -1 : 0;
}
