/*
 * report.c — findings written as text and as JSON (see report.h).
 */
#include "check/report.h"

#include <stdarg.h>
#include <stdio.h>

void check_json_str(struct base_buf *b, const char *s)
{
	base_buf_append(b, "\"", 1);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			char e[2] = {'\\', (char)c};
			base_buf_append(b, e, 2);
		} else if (c < 0x20 || c > 0x7e) {
			base_buf_printf(b, "\\u%04x", c);
		} else {
			base_buf_append(b, s, 1);
		}
	}
	base_buf_append(b, "\"", 1);
}

static void printable(char *msg)
{
	for (char *c = msg; *c; c++)
		if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e) *c = '?';
}

static void finding(struct report *r, struct base_buf *list, int *n, const char *mark, const char *area,
                    const char *fmt, va_list ap) __attribute__((format(printf, 6, 0)));
static void finding(struct report *r, struct base_buf *list, int *n, const char *mark, const char *area,
                    const char *fmt, va_list ap)
{
	char msg[900];
	vsnprintf(msg, sizeof msg, fmt, ap);
	printable(msg);
	base_buf_printf(r->text, "  %s %s\n", mark, msg);
	if ((*n)++) base_buf_puts(list, ",");
	base_buf_puts(list, "{\"check\":");
	check_json_str(list, area);
	base_buf_puts(list, ",\"message\":");
	check_json_str(list, msg);
	base_buf_puts(list, "}");
}

void check_problem(struct report *r, const char *area, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	finding(r, &r->problems, &r->nproblems, "PROBLEM:", area, fmt, ap);
	va_end(ap);
}

void check_warning(struct report *r, const char *area, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	finding(r, &r->warnings, &r->nwarnings, "warning:", area, fmt, ap);
	va_end(ap);
}

void check_ok(struct report *r, const char *fmt, ...)
{
	char msg[900];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	printable(msg);
	base_buf_printf(r->text, "  ok: %s\n", msg);
}
