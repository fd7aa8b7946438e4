/*
 * check — the deliverability checker: probes of a domain's (and later an
 * IP's, an SMTP server's and a message's) mail setup, each finding said in
 * words that tell what to fix, as a human report and as JSON.
 */
#ifndef MAILREP_CHECK_H
#define MAILREP_CHECK_H

#include <stddef.h>

#include "base/base.h"
#include "dns/dns.h"

/* Exit statuses shared by the check commands. */
enum { CHECK_CLEAN = 0, CHECK_PROBLEMS = 1, CHECK_USAGE = 2, CHECK_COULD_NOT = 3 };

#define CHECK_MAX_SELECTORS 16

struct check_domain_opts {
	const char *domain;
	const char *selectors[CHECK_MAX_SELECTORS];
	size_t nselectors;
	const char *ip;        /* evaluate SPF for this client when set */
	const char *mail_from; /* MAIL FROM for the evaluation (default postmaster@domain) */
	const char *helo;      /* HELO name for the evaluation (default the domain) */
};

/* Runs every domain check through dns. Appends one JSON object to json and
 * the human report to text. Returns CHECK_CLEAN, CHECK_PROBLEMS or
 * CHECK_COULD_NOT (a DNS failure kept a check from finishing), or -1 with
 * err filled for bad options. */
int check_domain(const struct dns_lookup_ops *dns, const struct check_domain_opts *o,
                 struct base_buf *json, struct base_buf *text, struct base_err *err);

#endif
