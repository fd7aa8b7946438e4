/*
 * test_relay_dsnparam.c — unit tests of the DSN extension's parameters
 * (dsnparam.h): xtext decoding and encoding, RET and ENVID on MAIL, NOTIFY
 * and ORCPT on RCPT with every refusal naming its parameter, the spool
 * form's round trip and its refusals, and the spool records that carry
 * them: a 'P' record behind its message, and 'S' records whose flags stay
 * set through later records, through recovery.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "relay/dsnparam.h"
#include "relay/relay.h"

static void test_xtext(void **state)
{
	char out[64];
	assert_int_equal(relay_xtext_decode("a+2Bb+3Dc", 9, out, sizeof out), 5);
	assert_string_equal(out, "a+b=c");
	assert_int_equal(relay_xtext_decode("", 0, out, sizeof out), 0);
	assert_string_equal(out, "");
	assert_int_equal(relay_xtext_decode("x+20y", 5, out, sizeof out), 3);
	assert_string_equal(out, "x y");
	assert_int_equal(relay_xtext_decode("a+2b", 4, out, sizeof out), -1); /* lower-case hex */
	assert_int_equal(relay_xtext_decode("a+2", 3, out, sizeof out), -1);  /* cut short */
	assert_int_equal(relay_xtext_decode("a+", 2, out, sizeof out), -1);
	assert_int_equal(relay_xtext_decode("a=b", 3, out, sizeof out), -1);   /* '=' raw */
	assert_int_equal(relay_xtext_decode("a b", 3, out, sizeof out), -1);   /* space raw */
	assert_int_equal(relay_xtext_decode("a+0Ab", 5, out, sizeof out), -1); /* LF decoded */
	assert_int_equal(relay_xtext_decode("a+00", 4, out, sizeof out), -1);  /* NUL decoded */
	assert_int_equal(relay_xtext_decode("a+C3", 4, out, sizeof out), -1);  /* 8-bit */
	assert_int_equal(relay_xtext_decode("\x7f", 1, out, sizeof out), -1);
	assert_int_equal(relay_xtext_decode("abcd", 4, out, 4), -1); /* does not fit */
	assert_int_equal(relay_xtext_decode("abc", 3, out, 4), 3);

	struct base_buf b;
	base_buf_init(&b);
	relay_xtext_encode(&b, "a+b=c d@e~!");
	assert_string_equal(b.data, "a+2Bb+3Dc+20d@e~!");
	/* and back */
	assert_int_equal(relay_xtext_decode(b.data, b.len, out, sizeof out), 11);
	assert_string_equal(out, "a+b=c d@e~!");
	base_buf_free(&b);
}

static void test_mail(void **state)
{
	struct relay_dsn_mail m;
	struct base_err err;
	const char *p = "SIZE=100 RET=hdrs BODY=8BITMIME ENVID=QQ+2B1";
	assert_int_equal(relay_dsn_parse_mail(p, strlen(p), &m, &err), 0);
	assert_int_equal(m.ret, RELAY_RET_HDRS);
	assert_string_equal(m.envid, "QQ+1");
	assert_int_equal(relay_dsn_parse_mail("", 0, &m, &err), 0);
	assert_int_equal(m.ret, RELAY_RET_NONE);
	assert_string_equal(m.envid, "");
	p = "ret=FULL";
	assert_int_equal(relay_dsn_parse_mail(p, strlen(p), &m, &err), 0);
	assert_int_equal(m.ret, RELAY_RET_FULL);

	static const struct {
		const char *params, *says;
	} bad[] = {
	    {"RET=FOO", "RET parameter must be FULL or HDRS"},
	    {"RET=", "RET parameter must be FULL or HDRS"},
	    {"RET", "RET parameter without a value"},
	    {"RET=FULL RET=FULL", "RET parameter given twice"},
	    {"ENVID=", "ENVID parameter without a value"},
	    {"ENVID=a ENVID=a", "ENVID parameter given twice"},
	    {"ENVID=a+zz", "ENVID parameter is not valid xtext"},
	    {"ENVID=a=b", "ENVID parameter is not valid xtext"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err.msg[0] = 0;
		assert_int_equal(
		    relay_dsn_parse_mail(bad[i].params, strlen(bad[i].params), &m, &err), -1);
		assert_string_equal(err.msg, bad[i].says);
	}
	/* ENVID: 100 characters as sent, no more */
	char big[128];
	memcpy(big, "ENVID=", 6);
	memset(big + 6, 'e', 100);
	assert_int_equal(relay_dsn_parse_mail(big, 106, &m, &err), 0);
	assert_int_equal(strlen(m.envid), 100);
	big[106] = 'e';
	assert_int_equal(relay_dsn_parse_mail(big, 107, &m, &err), -1);
	assert_non_null(strstr(err.msg, "ENVID parameter longer than 100"));
	/* the length given is the end, whatever follows */
	assert_int_equal(relay_dsn_parse_mail("RET=FULLX", 8, &m, &err), 0);
	assert_int_equal(m.ret, RELAY_RET_FULL);
}

static void test_rcpt(void **state)
{
	struct relay_dsn_rcpt r;
	struct base_err err;
	const char *p = "NOTIFY=success,DELAY ORCPT=rfc822;a+2Bb+40c.example";
	assert_int_equal(relay_dsn_parse_rcpt(p, strlen(p), &r, &err), 0);
	assert_int_equal(r.notify, RELAY_NOTIFY_SET | RELAY_NOTIFY_SUCCESS | RELAY_NOTIFY_DELAY);
	assert_string_equal(r.orcpt, "rfc822;a+b@c.example");
	char t[64];
	assert_string_equal(relay_notify_text(r.notify, t, sizeof t), "SUCCESS,DELAY");
	p = "NOTIFY=NEVER";
	assert_int_equal(relay_dsn_parse_rcpt(p, strlen(p), &r, &err), 0);
	assert_int_equal(r.notify, RELAY_NOTIFY_SET | RELAY_NOTIFY_NEVER);
	assert_string_equal(relay_notify_text(r.notify, t, sizeof t), "NEVER");
	assert_string_equal(r.orcpt, "");
	assert_int_equal(relay_dsn_parse_rcpt("", 0, &r, &err), 0);
	assert_int_equal(r.notify, 0);
	assert_string_equal(relay_notify_text(0, t, sizeof t), "");
	p = "NOTIFY=FAILURE,SUCCESS,DELAY";
	assert_int_equal(relay_dsn_parse_rcpt(p, strlen(p), &r, &err), 0);
	assert_string_equal(relay_notify_text(r.notify, t, sizeof t), "SUCCESS,FAILURE,DELAY");

	static const struct {
		const char *params, *says;
	} bad[] = {
	    {"NOTIFY=NEVER,FAILURE", "NOTIFY parameter: NEVER cannot be combined with others"},
	    {"NOTIFY=DELAY,NEVER", "NOTIFY parameter: NEVER cannot be combined with others"},
	    {"NOTIFY=SOMETIMES",
	     "NOTIFY parameter must be NEVER or a list of SUCCESS, FAILURE, DELAY"},
	    {"NOTIFY=SUCCESS,",
	     "NOTIFY parameter must be NEVER or a list of SUCCESS, FAILURE, DELAY"},
	    {"NOTIFY=,SUCCESS",
	     "NOTIFY parameter must be NEVER or a list of SUCCESS, FAILURE, DELAY"},
	    {"NOTIFY=", "NOTIFY parameter without a value"},
	    {"NOTIFY", "NOTIFY parameter without a value"},
	    {"NOTIFY=FAILURE,FAILURE", "NOTIFY parameter names a keyword twice"},
	    {"NOTIFY=NEVER NOTIFY=NEVER", "NOTIFY parameter given twice"},
	    {"ORCPT=a@b", "ORCPT parameter must be addr-type;address"},
	    {"ORCPT=;a@b", "ORCPT parameter must be addr-type;address"},
	    {"ORCPT=rfc822;", "ORCPT parameter must be addr-type;address"},
	    {"ORCPT", "ORCPT parameter must be addr-type;address"},
	    {"ORCPT=rfc 822;a", "ORCPT parameter must be addr-type;address"},
	    {"ORCPT=rf@c;a", "ORCPT parameter: bad address type"},
	    {"ORCPT=rfc822;a=b", "ORCPT parameter: the address is not valid xtext"},
	    {"ORCPT=rfc822;a+0D", "ORCPT parameter: the address is not valid xtext"},
	    {"ORCPT=rfc822;a ORCPT=rfc822;a", "ORCPT parameter given twice"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err.msg[0] = 0;
		assert_int_equal(
		    relay_dsn_parse_rcpt(bad[i].params, strlen(bad[i].params), &r, &err), -1);
		assert_string_equal(err.msg, bad[i].says);
	}
	/* ORCPT: 500 characters as sent, no more */
	char big[600];
	int n = snprintf(big, sizeof big, "ORCPT=rfc822;");
	memset(big + n, 'o', 493);
	assert_int_equal(relay_dsn_parse_rcpt(big, (size_t)n + 493, &r, &err), 0);
	assert_int_equal(strlen(r.orcpt), 500);
	big[n + 493] = 'o';
	assert_int_equal(relay_dsn_parse_rcpt(big, (size_t)n + 494, &r, &err), -1);
	assert_non_null(strstr(err.msg, "ORCPT parameter longer than 500"));
}

static struct relay_dsn_params *sample(void)
{
	struct relay_dsn_params *p = calloc(1, sizeof *p);
	p->ret = RELAY_RET_FULL;
	p->envid = strdup("campaign 7");
	p->nrcpt = 3;
	p->notify = calloc(3, 1);
	p->orcpt = calloc(3, sizeof *p->orcpt);
	p->notify[0] = RELAY_NOTIFY_SET | RELAY_NOTIFY_NEVER;
	p->orcpt[1] = strdup("rfc822;b@x.example");
	return p;
}

static void test_spool_form(void **state)
{
	struct relay_dsn_params *p = sample(), *q;
	struct base_err err;
	struct base_buf b;
	base_buf_init(&b);
	assert_true(relay_dsn_given(p));
	relay_dsn_encode(&b, p);
	assert_int_equal(relay_dsn_decode(b.data, b.len, &q, &err), 0);
	assert_int_equal(q->ret, RELAY_RET_FULL);
	assert_string_equal(q->envid, "campaign 7");
	assert_int_equal(q->nrcpt, 3);
	assert_int_equal(q->notify[0], RELAY_NOTIFY_SET | RELAY_NOTIFY_NEVER);
	assert_int_equal(q->notify[1], 0);
	assert_null(q->orcpt[0]);
	assert_string_equal(q->orcpt[1], "rfc822;b@x.example");
	assert_null(q->orcpt[2]);
	relay_dsn_params_free(q);
	/* every cut is refused, and so is a byte more */
	for (size_t k = 0; k < b.len; k++)
		assert_int_equal(relay_dsn_decode(b.data, k, NULL, &err), -1);
	base_buf_append(&b, "x", 1);
	assert_int_equal(relay_dsn_decode(b.data, b.len, NULL, &err), -1);
	assert_non_null(strstr(err.msg, "trailing bytes"));
	/* nothing said: nothing to keep */
	p->ret = 0;
	free(p->envid);
	p->envid = NULL;
	p->notify[0] = 0;
	free(p->orcpt[1]);
	p->orcpt[1] = NULL;
	assert_false(relay_dsn_given(p));
	relay_dsn_params_free(p);
	static const struct {
		const char *s;
		size_t n;
	} bad[] = {
	    {"FOO\0\0"
	     "1\0"
	     "0\0\0",
	     10}, /* RET */
	    {"\0\x01\0"
	     "1\0"
	     "0\0\0",
	     8}, /* ENVID not printable */
	    {"\0\0"
	     "0\0",
	     4}, /* no recipients */
	    {"\0\0"
	     "1\0"
	     "2\0\0",
	     7}, /* NOTIFY without its "given" bit */
	    {"\0\0"
	     "1\0"
	     "99\0\0",
	     8}, /* NOTIFY out of range */
	    {"\0\0"
	     "1\0"
	     "0\0a\nb\0",
	     10}, /* ORCPT not printable */
	    {"\0\0"
	     "2\0"
	     "0\0\0",
	     7}, /* a recipient missing */
	    {"\0\0"
	     "01\0"
	     "0\0\0",
	     8}, /* a count not in its one spelling */
	    {"\0\0"
	     "1\0"
	     "00\0\0",
	     8}, /* nor NOTIFY */
	    {"\0\0"
	     "1\0"
	     "1\0\0",
	     7}, /* NOTIFY given without keywords */
	    {"\0\0"
	     "1\0"
	     "19\0\0",
	     8}, /* NEVER with FAILURE */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(relay_dsn_decode(bad[i].s, bad[i].n, NULL, &err), -1);
	base_buf_free(&b);
}

/* What recovery hands over for the one message of the spool. */
struct seen {
	int n;
	char dsn[256];
	size_t dsn_len;
	int has_dsn;
	uint32_t flags[3];
	uint32_t states[3];
};

static void on_msg(void *arg, const struct relay_record *m, const struct relay_loc *loc,
                   const uint32_t *states, const uint32_t *attempts, const int64_t *next)
{
	struct seen *s = arg;
	s->n++;
	s->has_dsn = m->dsn != NULL;
	if (m->dsn && m->dsn_len <= sizeof s->dsn) {
		memcpy(s->dsn, m->dsn, m->dsn_len);
		s->dsn_len = m->dsn_len;
	}
	for (uint32_t i = 0; i < m->nrcpt && i < 3; i++) {
		s->flags[i] = m->rflags ? m->rflags[i] : 0;
		s->states[i] = states[i];
	}
}

static void test_spool_records(void **state)
{
	char dir[] = "/tmp/test-dsnparam-XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct relay_spool *sp;
	struct base_err err;
	struct seen seen = {0};
	assert_int_equal(relay_spool_open(&sp, dir, on_msg, &seen, &err), 0);
	struct relay_dsn_params *p = sample();
	struct base_buf b;
	base_buf_init(&b);
	relay_dsn_encode(&b, p);
	const char *rc[3] = {"a@x.example", "b@x.example", "c@x.example"};
	struct relay_loc l1, l2;
	assert_int_equal(relay_spool_add_dsn(sp, "m1", "s@x.example", "", 10, rc, 3, "body\r\n", 6,
	                                     b.data, b.len, &l1, &err),
	                 0);
	/* the body is where loc says, with the 'P' record behind it */
	struct base_buf body;
	base_buf_init(&body);
	assert_int_equal(relay_spool_read(sp, &l1, &body, &err), 0);
	assert_string_equal(body.data, "body\r\n");
	assert_int_equal(
	    relay_spool_add(sp, "m2", "s@x.example", "", 11, rc, 1, "b2\r\n", 4, &l2, &err), 0);
	assert_int_equal(relay_spool_state(sp, "m2", 0, RELAY_RCPT_DELIVERED, 1, 0, &err), 0);
	/* recipient 1 warned, then deferred again without the flag: still warned */
	assert_int_equal(relay_spool_state_flags(sp, "m1", 1, RELAY_RCPT_PENDING, 2, 99,
	                                         RELAY_RCPT_F_WARNED, &err),
	                 0);
	assert_int_equal(relay_spool_state(sp, "m1", 1, RELAY_RCPT_PENDING, 3, 120, &err), 0);
	assert_int_equal(relay_spool_state(sp, "m1", 0, RELAY_RCPT_BOUNCED, 1, 0, &err), 0);
	assert_int_equal(relay_spool_commit(sp, &err), 0);
	relay_spool_close(sp);

	memset(&seen, 0, sizeof seen);
	assert_int_equal(relay_spool_open(&sp, dir, on_msg, &seen, &err), 0);
	assert_int_equal(seen.n, 1); /* m2 is finished */
	assert_true(seen.has_dsn);
	assert_int_equal(seen.dsn_len, b.len);
	assert_memory_equal(seen.dsn, b.data, b.len);
	assert_int_equal(seen.flags[0], 0);
	assert_int_equal(seen.flags[1], RELAY_RCPT_F_WARNED);
	assert_int_equal(seen.flags[2], 0);
	assert_int_equal(seen.states[0], RELAY_RCPT_BOUNCED);
	assert_int_equal(seen.states[1], RELAY_RCPT_PENDING);
	relay_spool_close(sp);

	/* the 'S' record with flags, parsed on its own */
	struct base_buf r;
	base_buf_init(&r);
	relay_record_state_flags(&r, "m1", 2, RELAY_RCPT_PENDING, 4, 5, RELAY_RCPT_F_WARNED);
	struct relay_record rec;
	assert_int_equal(relay_record_parse((const uint8_t *)r.data, r.len, &rec, &err),
	                 (int)r.len);
	assert_int_equal(rec.type, 'S');
	assert_int_equal(rec.flags, RELAY_RCPT_F_WARNED);
	assert_int_equal(rec.rcpt_index, 2);
	/* without flags it is the old record, byte for byte */
	struct base_buf o;
	base_buf_init(&o);
	r.len = 0;
	relay_record_state_flags(&r, "m1", 2, RELAY_RCPT_PENDING, 4, 5, 0);
	relay_record_state(&o, "m1", 2, RELAY_RCPT_PENDING, 4, 5);
	assert_int_equal(r.len, o.len);
	assert_memory_equal(r.data, o.data, o.len);
	/* a 'P' record whose parameters do not parse is a bad record */
	r.len = 0;
	relay_record_params(&r, "m1", "FOO\0", 4);
	assert_int_equal(relay_record_parse((const uint8_t *)r.data, r.len, &rec, &err), -1);
	assert_non_null(strstr(err.msg, "DSN parameters"));
	r.len = 0;
	relay_record_params(&r, "m1", b.data, b.len);
	assert_int_equal(relay_record_parse((const uint8_t *)r.data, r.len, &rec, &err),
	                 (int)r.len);
	assert_int_equal(rec.type, 'P');
	assert_int_equal(rec.dsn_len, b.len);
	base_buf_free(&r);
	base_buf_free(&o);
	base_buf_free(&body);
	base_buf_free(&b);
	relay_dsn_params_free(p);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_xtext),         cmocka_unit_test(test_mail),
	    cmocka_unit_test(test_rcpt),          cmocka_unit_test(test_spool_form),
	    cmocka_unit_test(test_spool_records),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
