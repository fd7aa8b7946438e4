/*
 * fuzz_smtp_reply.c — libFuzzer target for the blocking client's reply
 * reader: the input is what a server sends (then it closes), fed through a
 * socketpair so that the reader's own buffering is what gets exercised;
 * replies are read until one fails. Every reply read must respect the
 * bounds: at most SMTP_REPLY_LINES lines, each shorter than the line cap,
 * one code in 200..599 for all of them.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "smtp/smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct smtp_reply r;
	int sv[2];
	if (size > 65536 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return 0;
	size_t off = 0;
	while (off < size) {
		ssize_t k = send(sv[1], data + off, size - off, MSG_NOSIGNAL);
		if (k <= 0) abort();
		off += (size_t)k;
	}
	close(sv[1]);
	struct smtp_client c;
	struct base_err err;
	smtp_client_init(&c, sv[0], 1000);
	for (int n = 0; smtp_client_read_reply(&c, &r, &err) == 0; n++) {
		if (r.nlines < 1 || r.nlines > SMTP_REPLY_LINES) abort();
		if (r.code < 200 || r.code > 599) abort();
		for (int i = 0; i < r.nlines; i++) {
			if (strlen(r.lines[i]) >= SMTP_REPLY_LINE_CAP) abort();
			if ((r.lines[i][0] - '0') * 100 + (r.lines[i][1] - '0') * 10 +
			        (r.lines[i][2] - '0') !=
			    r.code)
				abort();
			(void)smtp_reply_text(&r, i);
		}
		(void)smtp_reply_has_ext(&r, "STARTTLS");
		if (n > (int)size) abort(); /* every reply takes at least one byte */
	}
	if (!err.msg[0]) abort(); /* a failure always says why */
	smtp_client_close(&c);
	return 0;
}
