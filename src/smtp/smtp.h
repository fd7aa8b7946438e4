/*
 * smtp — the SMTP protocol pieces shared by servers (the trap receiver, the
 * relay's submission side) and clients (the relay's delivery side):
 * command-line parsing with path validation, reply-line parsing, dot
 * unstuffing, and the PROXY protocol (v1 text and v2 binary) that a trusted
 * load balancer puts in front of a connection.
 *
 * Everything here but the blocking client at the end is pure parsing over
 * caller-owned bytes with explicit lengths: no I/O, no allocation, no
 * global state. Inputs are hostile.
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

/* ---- the blocking client (client.c) -------------------------------------- */

/* One connection, one conversation, every step under a timeout: what the
 * command-line tools use (`mailrep send`, `mailrep check smtp`); the relay's
 * delivery side is event-driven and does not. Unlike the rest of this
 * header, these functions do I/O. */

#define SMTP_REPLY_LINES    100                 /* lines in one reply */
#define SMTP_REPLY_LINE_CAP (2 * SMTP_LINE_MAX) /* one reply line with CRLF (lenient) */

/* One reply: its code and every line as received, without CRLF. */
struct smtp_reply {
	int code;
	int nlines;
	char lines[SMTP_REPLY_LINES][SMTP_REPLY_LINE_CAP];
};

/* The text of line i after "250-" / "250 " ("" if none). */
const char *smtp_reply_text(const struct smtp_reply *r, int i);
/* Whether an EHLO reply advertises the extension kw (its first word on a
 * line after the greeting line, in any case). */
int smtp_reply_has_ext(const struct smtp_reply *r, const char *kw);

struct ssl_st;
struct ssl_ctx_st;
struct x509_st;

/* What a STARTTLS handshake negotiated; valid until smtp_client_close. */
struct smtp_tls_info {
	const char *version, *cipher;
	long verify;          /* X509_V_OK, or why the chain did not verify */
	struct x509_st *cert; /* the server's certificate, or NULL */
};

struct smtp_client {
	int fd;
	unsigned timeout_ms; /* for connecting, each reply and each write */
	struct ssl_ctx_st *ctx;
	struct ssl_st *ssl;       /* after smtp_client_starttls */
	struct smtp_tls_info tls; /* after smtp_client_starttls */
	size_t len;               /* bytes waiting in buf */
	char buf[SMTP_REPLY_LINE_CAP];
};

struct smtp_tls_opts {
	const char *sni;     /* server name to send, or NULL */
	const char *ca_file; /* verify the server against these CAs, failing the handshake
	                        if it does not; NULL: no check (tls.verify still says) */
	int min_version;     /* e.g. TLS1_2_VERSION; 0: OpenSSL's default */
};

/* Starts a client over fd (-1 for none yet; the client owns it). */
void smtp_client_init(struct smtp_client *c, int fd, unsigned timeout_ms);
/* Connects to addr (IPv4 or IPv6) within timeout_ms. Returns 0, or -1
 * with err ("connect: Connection refused"). */
int smtp_client_connect(struct smtp_client *c, const struct base_sockaddr *addr,
                        unsigned timeout_ms, struct base_err *err);
/* Reads one whole reply, its lines bounded in length and number and the
 * whole of it in time. Returns 0, or -1 with err saying what was wrong. */
int smtp_client_read_reply(struct smtp_client *c, struct smtp_reply *r, struct base_err *err);
/* Writes n bytes as they are (a DATA body, already dot-stuffed). */
int smtp_client_write(struct smtp_client *c, const void *p, size_t n, struct base_err *err);
/* Sends line (without CRLF; no line breaks in it) and reads the reply. */
int smtp_client_command(struct smtp_client *c, const char *line, struct smtp_reply *r,
                        struct base_err *err);
/* After the server's 220 to STARTTLS: the TLS handshake, with c->tls
 * filled on success. Fails if the server sent anything after its 220. */
int smtp_client_starttls(struct smtp_client *c, const struct smtp_tls_opts *o,
                         struct base_err *err);
/* Ends TLS (if any), closes the socket, frees everything. */
void smtp_client_close(struct smtp_client *c);

#endif
