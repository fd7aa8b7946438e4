/*
 * dsnparam.h — the DSN extension's parameters (RFC 3461): RET and ENVID on
 * MAIL FROM, NOTIFY and ORCPT on RCPT TO, their xtext encoding, and the
 * compact form in which the spool keeps them with a message (a 'P' record,
 * see relay.h). Pure parsing over caller-owned bytes: no I/O, no state;
 * shared by reception (server.c), delivery (mta.c), DSNs (dsn.c), the spool,
 * the unit test and the fuzzer.
 */
#ifndef MAILREP_RELAY_DSNPARAM_H
#define MAILREP_RELAY_DSNPARAM_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#define RELAY_DSN_ENVID_MAX 100 /* RFC 3461 4.4: the ENVID value, as sent */
#define RELAY_DSN_ORCPT_MAX 500 /* RFC 3461 4.2: the ORCPT value, as sent */

/* NOTIFY, as bits; 0: the parameter was absent (the default applies). */
enum {
	RELAY_NOTIFY_SET = 1, /* given */
	RELAY_NOTIFY_SUCCESS = 2,
	RELAY_NOTIFY_FAILURE = 4,
	RELAY_NOTIFY_DELAY = 8,
	RELAY_NOTIFY_NEVER = 16,
};

enum { RELAY_RET_NONE = 0, RELAY_RET_FULL = 1, RELAY_RET_HDRS = 2 };

/* MAIL FROM's parameters. envid is decoded (printable ASCII), "" absent. */
struct relay_dsn_mail {
	int ret;
	char envid[RELAY_DSN_ENVID_MAX + 1];
};

/* RCPT TO's. orcpt is "addr-type;address" with the address decoded
 * (printable ASCII), "" absent. */
struct relay_dsn_rcpt {
	uint8_t notify;
	char orcpt[RELAY_DSN_ORCPT_MAX + 1];
};

/* Parse the ESMTP parameters of a MAIL or RCPT command (`params`, as
 * smtp_parse_command leaves them). Parameters of other extensions (SIZE,
 * BODY, SMTPUTF8...) are left alone. Returns 0, or -1 with err naming the
 * parameter and what is wrong ("NOTIFY: NEVER cannot be combined"), for a
 * 501 5.5.4 reply. */
int relay_dsn_parse_mail(const char *params, size_t len, struct relay_dsn_mail *out,
                         struct base_err *err);
int relay_dsn_parse_rcpt(const char *params, size_t len, struct relay_dsn_rcpt *out,
                         struct base_err *err);

/* xtext (RFC 3461 4): decodes in[0..len) into out (room for n bytes, NUL
 * terminated). Returns the decoded length, or -1 when in is not xtext, or
 * decodes to something other than printable ASCII (0x20..0x7e), or does
 * not fit. */
int relay_xtext_decode(const char *in, size_t len, char *out, size_t n);
/* Appends the xtext encoding of s to b. */
void relay_xtext_encode(struct base_buf *b, const char *s);
/* The NOTIFY keyword list of bits ("SUCCESS,FAILURE", "NEVER"); "" for 0. */
const char *relay_notify_text(uint8_t notify, char *buf, size_t n);

/* What the spool keeps for one message: RET, ENVID and, per recipient,
 * NOTIFY and ORCPT. */
struct relay_dsn_params {
	int ret;
	char *envid; /* NULL: none */
	uint32_t nrcpt;
	uint8_t *notify; /* nrcpt of them */
	char **orcpt;    /* nrcpt of them, NULL: none */
};

/* Whether p says anything (else nothing need be kept). */
int relay_dsn_given(const struct relay_dsn_params *p);
/* The spool form: "ret NUL envid NUL nrcpt NUL" then "notify NUL orcpt NUL"
 * per recipient (ret "", "FULL" or "HDRS"; notify in decimal). */
void relay_dsn_encode(struct base_buf *out, const struct relay_dsn_params *p);
/* Checks the spool form: 0, or -1 with err naming the byte. With out, also
 * returns the parameters, allocated (relay_dsn_params_free). */
int relay_dsn_decode(const char *p, size_t len, struct relay_dsn_params **out,
                     struct base_err *err);
void relay_dsn_params_free(struct relay_dsn_params *p);

#endif
