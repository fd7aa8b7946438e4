/*
 * smtp — the SMTP protocol pieces shared by servers (the trap receiver, the
 * relay's submission side) and clients (the relay's delivery side):
 * command-line parsing with path validation, reply-line parsing, dot
 * unstuffing, and the PROXY protocol (v1 text and v2 binary) that a trusted
 * load balancer puts in front of a connection.
 *
 * Everything here is pure parsing over caller-owned bytes with explicit
 * lengths: no I/O, no allocation, no global state. Inputs are hostile.
 */
#ifndef MAILREP_SMTP_H
#define MAILREP_SMTP_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#define SMTP_LINE_MAX 1000 /* RFC 5321 4.5.3.1.6: text line incl. CRLF */
#define SMTP_CMD_MAX  512  /* RFC 5321 4.5.3.1.4: command line incl. CRLF */
#define SMTP_PATH_MAX 256  /* RFC 5321 4.5.3.1.3: reverse/forward path */

enum smtp_verb {
	SMTP_UNKNOWN = 0,
	SMTP_HELO,
	SMTP_EHLO,
	SMTP_MAIL,
	SMTP_RCPT,
	SMTP_DATA,
	SMTP_RSET,
	SMTP_NOOP,
	SMTP_QUIT,
	SMTP_VRFY,
	SMTP_HELP,
	SMTP_STARTTLS,
	SMTP_BDAT,
};

/* A parsed command. `arg` points into the caller's line (HELO/EHLO domain,
 * VRFY argument...); for MAIL and RCPT `path` holds the address without
 * angle brackets ("" for the null reverse-path) and `params` the ESMTP
 * parameters after it. */
struct smtp_command {
	enum smtp_verb verb;
	const char *arg;
	size_t arg_len;
	char path[SMTP_PATH_MAX + 1];
	const char *params;
	size_t params_len;
};

/* Parses one command line (without CRLF). Returns 0, or -1 with err holding
 * a reply text ("5.5.2 Syntax error ...") for a known verb with bad
 * arguments. An unknown verb returns 0 with verb SMTP_UNKNOWN. */
int smtp_parse_command(const char *line, size_t len, struct smtp_command *cmd,
                       struct base_err *err);

/* Looks up the SIZE=n parameter in ESMTP params; returns 1 found, 0 absent,
 * -1 malformed. */
int smtp_param_size(const char *params, size_t len, uint64_t *size);

/* The domain part of an address ("" if none). */
const char *smtp_path_domain(const char *path);

/* Parses one reply line "250-text" / "250 text". Returns 0 with *code,
 * *more (1 for '-') and *text set, or -1. */
int smtp_parse_reply_line(const char *line, size_t len, int *code, int *more, const char **text);

/* A DATA line after dot-unstuffing: returns 1 for the terminating ".",
 * else 0 with *out / *out_len pointing at the line's content. */
int smtp_data_line(const char *line, size_t len, const char **out, size_t *out_len);

/* ---- PROXY protocol ----------------------------------------------------- */

struct smtp_proxy {
	int family; /* AF_INET, AF_INET6, or 0 for UNKNOWN / LOCAL */
	uint8_t src[16], dst[16];
	uint16_t src_port, dst_port;
};

#define SMTP_PROXY_V1_MAX 107
#define SMTP_PROXY_V2_MAX (16 + 65535)

/* Parses a PROXY header at the start of buf. Returns the number of bytes
 * it takes (> 0), 0 if more bytes are needed, or -1 with err. */
int smtp_proxy_parse(const uint8_t *buf, size_t len, struct smtp_proxy *out, struct base_err *err);

#endif
