/*
 * fuzz_smtp.c — libFuzzer target for the SMTP parsers that read the
 * network: the input is tried as a PROXY header (whole and at every
 * prefix length, which must never claim more bytes than it was given), and
 * each of its lines as a command and a reply line.
 */
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_proxy p;
	struct base_err err;
	for (size_t k = 0; k <= size && k < 256; k++) {
		uint8_t *copy = malloc(k ? k : 1);
		memcpy(copy, data, k);
		int r = smtp_proxy_parse(copy, k, &p, &err);
		if (r > (int)k) abort();
		free(copy);
	}
	size_t start = 0;
	while (start <= size) {
		const uint8_t *nl = memchr(data + start, '\n', size - start);
		size_t end = nl ? (size_t)(nl - data) : size;
		size_t n = end - start;
		char *line = malloc(n ? n : 1);
		memcpy(line, data + start, n);
		struct smtp_command c;
		if (smtp_parse_command(line, n, &c, &err) == 0) {
			if (strlen(c.path) > SMTP_PATH_MAX) abort();
			if (c.arg < line || c.arg > line + n || c.params < line ||
			    c.params + c.params_len > line + n)
				abort();
			uint64_t sz;
			(void)smtp_param_size(c.params, c.params_len, &sz);
		}
		int code, more;
		const char *text;
		if (smtp_parse_reply_line(line, n, &code, &more, &text) == 0 &&
		    (text < line || text > line + n))
			abort();
		const char *o;
		size_t ol;
		if (smtp_data_line(line, n, &o, &ol) == 0 && o + ol > line + n) abort();
		free(line);
		if (!nl) break;
		start = end + 1;
	}
	return 0;
}
