/*
 * report.h — the findings of one check, internal to check/: every check
 * (domain, ip, smtp, message) writes its report through these, as text for
 * a person and as JSON arrays of problems and warnings for a program.
 */
#ifndef MAILREP_CHECK_REPORT_H
#define MAILREP_CHECK_REPORT_H

#include "base/base.h"

struct report {
	struct base_buf *json, *text;
	struct base_buf problems, warnings; /* JSON array bodies */
	int nproblems, nwarnings, could_not;
};

/* Appends s as a JSON string (quoted, escaped). */
void check_json_str(struct base_buf *b, const char *s);
/* A problem to fix, a warning, or a passed check. Messages may quote what a
 * remote server or DNS said: unprintable bytes are shown as '?'. */
void check_problem(struct report *r, const char *area, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void check_warning(struct report *r, const char *area, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void check_ok(struct report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
