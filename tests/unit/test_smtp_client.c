/*
 * test_smtp_client.c — unit tests of the blocking SMTP client against a
 * peer inside the test (one end of a socketpair, or a loopback listener
 * for connect): multi-line replies and EHLO extensions, the bounds on line
 * length and line count, malformed lines, a code that changes mid-reply,
 * a peer that closes, a peer that says nothing, a peer that drips bytes
 * (the whole reply is under one deadline), commands on the wire, data
 * already waiting when STARTTLS would begin, and STARTTLS itself against
 * an OpenSSL server in a thread (SNI, what is reported, verification with
 * a CA file, and a server that stalls or drops the connection under TLS).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "smtp/smtp.h"

struct pair {
	struct smtp_client c;
	struct smtp_reply *r;
	int peer;
};

static void pair_open(struct pair *p, unsigned timeout_ms)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	smtp_client_init(&p->c, sv[0], timeout_ms);
	p->peer = sv[1];
	p->r = malloc(sizeof *p->r);
	assert_non_null(p->r);
}

static void pair_close(struct pair *p)
{
	smtp_client_close(&p->c);
	if (p->peer >= 0) close(p->peer);
	free(p->r);
}

static void peer_says(struct pair *p, const char *s)
{
	size_t n = strlen(s);
	assert_int_equal(send(p->peer, s, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Reads a reply that must fail, and checks that err names what. */
static void expect_error(struct pair *p, const char *what)
{
	struct base_err err;
	assert_int_equal(smtp_client_read_reply(&p->c, p->r, &err), -1);
	if (!strstr(err.msg, what)) fail_msg("error '%s' does not say '%s'", err.msg, what);
}

static void test_multiline_and_extensions(void **state)
{
	(void)state;
	struct pair p;
	struct base_err err;
	pair_open(&p, 2000);
	/* two replies in one write, the second with bare LF line ends */
	peer_says(&p, "250-mx.example Hello\r\n250-PIPELINING\r\n250-starttls\r\n"
	              "250-SIZE 1000\r\n250 8BITMIME\r\n220 ready\n");
	assert_int_equal(smtp_client_read_reply(&p.c, p.r, &err), 0);
	assert_int_equal(p.r->code, 250);
	assert_int_equal(p.r->nlines, 5);
	assert_string_equal(p.r->lines[0], "250-mx.example Hello");
	assert_string_equal(smtp_reply_text(p.r, 0), "mx.example Hello");
	assert_string_equal(smtp_reply_text(p.r, 3), "SIZE 1000");
	assert_true(smtp_reply_has_ext(p.r, "STARTTLS"));
	assert_true(smtp_reply_has_ext(p.r, "size"));
	assert_true(smtp_reply_has_ext(p.r, "8BITMIME"));
	assert_false(smtp_reply_has_ext(p.r, "PIPE"));
	assert_false(smtp_reply_has_ext(p.r, "mx.example")); /* the greeting line is no extension */
	assert_int_equal(smtp_client_read_reply(&p.c, p.r, &err), 0);
	assert_int_equal(p.r->code, 220);
	assert_int_equal(p.r->nlines, 1);
	assert_string_equal(smtp_reply_text(p.r, 0), "ready");
	/* a bare code, no text */
	peer_says(&p, "354\r\n");
	assert_int_equal(smtp_client_read_reply(&p.c, p.r, &err), 0);
	assert_int_equal(p.r->code, 354);
	assert_string_equal(smtp_reply_text(p.r, 0), "");
	pair_close(&p);
}

static void test_line_length_bound(void **state)
{
	(void)state;
	struct pair p;
	struct base_err err;
	char *line = malloc(SMTP_REPLY_LINE_CAP + 8);
	assert_non_null(line);
	/* the longest line that fits: CRLF included, exactly the buffer */
	pair_open(&p, 2000);
	memset(line, 'x', SMTP_REPLY_LINE_CAP);
	memcpy(line, "250 ", 4);
	memcpy(line + SMTP_REPLY_LINE_CAP - 2, "\r\n", 3);
	peer_says(&p, line);
	assert_int_equal(smtp_client_read_reply(&p.c, p.r, &err), 0);
	assert_int_equal(strlen(p.r->lines[0]), SMTP_REPLY_LINE_CAP - 2);
	/* one byte more */
	memset(line, 'x', SMTP_REPLY_LINE_CAP + 1);
	memcpy(line, "250 ", 4);
	memcpy(line + SMTP_REPLY_LINE_CAP - 1, "\r\n", 3);
	peer_says(&p, line);
	expect_error(&p, "reply line longer than 2000 bytes");
	pair_close(&p);
	free(line);
}

static void test_line_count_bound(void **state)
{
	(void)state;
	struct pair p;
	struct base_err err;
	char buf[32];
	pair_open(&p, 2000);
	for (int i = 1; i < SMTP_REPLY_LINES; i++) {
		snprintf(buf, sizeof buf, "250-line %d\r\n", i);
		peer_says(&p, buf);
	}
	peer_says(&p, "250 last\r\n");
	assert_int_equal(smtp_client_read_reply(&p.c, p.r, &err), 0);
	assert_int_equal(p.r->nlines, SMTP_REPLY_LINES);
	assert_string_equal(smtp_reply_text(p.r, SMTP_REPLY_LINES - 1), "last");
	for (int i = 0; i < SMTP_REPLY_LINES; i++) peer_says(&p, "250-more\r\n");
	peer_says(&p, "250 end\r\n");
	expect_error(&p, "reply longer than 100 lines");
	pair_close(&p);
}

static void test_malformed(void **state)
{
	(void)state;
	static const struct {
		const char *in, *why;
	} cases[] = {
	    {"hello\r\n", "malformed reply line 'hello'"},
	    {"25\r\n", "malformed reply line '25'"},
	    {"250x text\r\n", "malformed reply line '250x text'"},
	    {"199 too low\r\n", "malformed reply line"},
	    {"hel\x1blo\r\n", "malformed reply line 'hel?lo'"}, /* shown without the control */
	    {"250-a\r\n550 b\r\n", "reply code changed inside a multi-line reply (250, then 550)"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct pair p;
		pair_open(&p, 2000);
		peer_says(&p, cases[i].in);
		expect_error(&p, cases[i].why);
		pair_close(&p);
	}
	/* a NUL inside a line would cut it short: refused, shown as '?' */
	struct pair p;
	pair_open(&p, 2000);
	assert_int_equal(send(p.peer, "250 a\0b\r\n", 9, MSG_NOSIGNAL), 9);
	expect_error(&p, "malformed reply line '250 a?b'");
	pair_close(&p);
}

static void test_closed_and_silent(void **state)
{
	(void)state;
	struct pair p;
	pair_open(&p, 2000);
	peer_says(&p, "250-half a reply\r\n250-and");
	shutdown(p.peer, SHUT_WR);
	expect_error(&p, "connection closed");
	pair_close(&p);

	pair_open(&p, 150);
	uint64_t t0 = base_mono_ns();
	expect_error(&p, "timed out after 150 ms waiting for a reply");
	assert_true(base_mono_ns() - t0 >= 140 * 1000000ull);
	pair_close(&p);
}

/* A peer that sends one byte of a line that never ends every 20 ms, until
 * its writes fail or 5 s have passed. */
static void *drip(void *arg)
{
	int fd = *(int *)arg;
	for (int i = 0; i < 250; i++) {
		if (send(fd, i < 4 ? &"250-"[i] : "x", 1, MSG_NOSIGNAL) != 1) break;
		usleep(20000);
	}
	return NULL;
}

static void test_dripping_peer_times_out(void **state)
{
	(void)state;
	struct pair p;
	pthread_t th;
	pair_open(&p, 300);
	assert_int_equal(pthread_create(&th, NULL, drip, &p.peer), 0);
	/* every read gets a byte well within 300 ms; the reply as a whole does not
	 * come, and the client gives up long before the peer stops dripping */
	uint64_t t0 = base_mono_ns();
	expect_error(&p, "timed out after 300 ms waiting for a reply");
	assert_true(base_mono_ns() - t0 < 3000 * 1000000ull);
	smtp_client_close(&p.c); /* the dripping peer's next write fails */
	pthread_join(th, NULL);
	close(p.peer);
	free(p.r);
}

static void test_command(void **state)
{
	(void)state;
	struct pair p;
	struct base_err err;
	char got[64];
	pair_open(&p, 2000);
	peer_says(&p, "250 2.0.0 Ok\r\n");
	assert_int_equal(smtp_client_command(&p.c, "MAIL FROM:<a@example.com>", p.r, &err), 0);
	assert_int_equal(p.r->code, 250);
	ssize_t n = recv(p.peer, got, sizeof got - 1, 0);
	assert_true(n > 0);
	got[n] = 0;
	assert_string_equal(got, "MAIL FROM:<a@example.com>\r\n");
	/* nothing that could smuggle a second command */
	assert_int_equal(smtp_client_command(&p.c, "NOOP\r\nQUIT", p.r, &err), -1);
	assert_string_equal(err.msg, "line break inside a command");
	char big[1100];
	memset(big, 'a', sizeof big - 1);
	big[sizeof big - 1] = 0;
	memcpy(big, "AUTH PLAIN ", 11);
	assert_int_equal(smtp_client_command(&p.c, big, p.r, &err), -1);
	assert_string_equal(err.msg, "command AUTH longer than 1022 bytes");
	/* a peer gone: the error names the verb only, never the rest */
	close(p.peer);
	p.peer = -1;
	assert_int_equal(smtp_client_command(&p.c, "AUTH PLAIN c2VjcmV0", p.r, &err), -1);
	assert_non_null(strstr(err.msg, "could not send AUTH: "));
	assert_null(strstr(err.msg, "c2VjcmV0"));
	pair_close(&p);
}

static void test_starttls_refuses_early_data(void **state)
{
	(void)state;
	struct pair p;
	struct base_err err;
	pair_open(&p, 2000);
	/* the 220 and, in the same packet, a reply injected before the handshake */
	peer_says(&p, "220 go ahead\r\n250 injected\r\n");
	assert_int_equal(smtp_client_read_reply(&p.c, p.r, &err), 0);
	assert_int_equal(p.r->code, 220);
	struct smtp_tls_opts o = {0};
	assert_int_equal(smtp_client_starttls(&p.c, &o, &err), -1);
	assert_string_equal(err.msg, "the server sent data before the TLS handshake");
	pair_close(&p);
}

/* ---- STARTTLS against a server in a thread ---------------------------------- */

enum { SRV_ANSWER, SRV_STALL, SRV_DROP };

struct tls_server {
	int fd, mode;
	EVP_PKEY *key;
	X509 *cert;
	char sni[64];
};

/* A self-signed certificate for mx.example.com, on a fresh P-256 key. */
static void make_cert(struct tls_server *s)
{
	s->key = EVP_EC_gen("P-256");
	assert_non_null(s->key);
	s->cert = X509_new();
	ASN1_INTEGER_set(X509_get_serialNumber(s->cert), 1);
	X509_gmtime_adj(X509_getm_notBefore(s->cert), -60);
	X509_gmtime_adj(X509_getm_notAfter(s->cert), 3600);
	X509_NAME *n = X509_get_subject_name(s->cert);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"mx.example.com",
	                           -1, -1, 0);
	X509_set_issuer_name(s->cert, n);
	X509_set_pubkey(s->cert, s->key);
	assert_true(X509_sign(s->cert, s->key, EVP_sha256()) > 0);
}

/* Accepts TLS, reads one command line, then answers it, says nothing
 * until the client goes, or drops the connection without close_notify. */
static void *tls_serve(void *arg)
{
	struct tls_server *s = arg;
	sigset_t pipe;
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE); /* the server's own writes to a client gone */
	pthread_sigmask(SIG_BLOCK, &pipe, NULL);
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	SSL_CTX_use_certificate(ctx, s->cert);
	SSL_CTX_use_PrivateKey(ctx, s->key);
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, s->fd);
	if (SSL_accept(ssl) == 1) {
		const char *sn = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
		snprintf(s->sni, sizeof s->sni, "%s", sn ? sn : "");
		char line[256];
		size_t n = 0;
		while (n < sizeof line && SSL_read(ssl, line + n, 1) == 1 && line[n++] != '\n') {
		}
		if (s->mode == SRV_ANSWER) {
			SSL_write(ssl, "250 over TLS\r\n", 14);
			SSL_read(ssl, line, sizeof line); /* until the client closes */
		} else if (s->mode == SRV_STALL) {
			SSL_read(ssl, line, sizeof line);
		}
	}
	shutdown(s->fd, SHUT_RDWR);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	return NULL;
}

/* Runs one STARTTLS conversation: the handshake with o, then EHLO. */
static int tls_run(struct tls_server *s, int mode, const struct smtp_tls_opts *o, struct pair *p,
                   struct base_err *err)
{
	pthread_t th;
	s->mode = mode;
	s->sni[0] = 0;
	pair_open(p, 1000);
	s->fd = p->peer;
	assert_int_equal(pthread_create(&th, NULL, tls_serve, s), 0);
	int rc = smtp_client_starttls(&p->c, o, err);
	if (rc == 0) rc = smtp_client_command(&p->c, "EHLO client.example", p->r, err);
	if (rc < 0) shutdown(p->c.fd, SHUT_RDWR); /* a failed handshake: let the server go */
	smtp_client_close(&p->c);
	pthread_join(th, NULL);
	return rc;
}

static void test_starttls(void **state)
{
	(void)state;
	struct tls_server s = {0};
	struct pair p;
	struct base_err err;
	make_cert(&s);
	struct smtp_tls_opts o = {.sni = "mx.example.com", .min_version = TLS1_2_VERSION};

	/* what was negotiated is reported; the self-signed chain does not verify */
	pthread_t th;
	s.mode = SRV_ANSWER;
	pair_open(&p, 2000);
	s.fd = p.peer;
	assert_int_equal(pthread_create(&th, NULL, tls_serve, &s), 0);
	assert_int_equal(smtp_client_starttls(&p.c, &o, &err), 0);
	assert_non_null(strstr(p.c.tls.version, "TLSv1."));
	assert_true(strlen(p.c.tls.cipher) > 0);
	assert_true(p.c.tls.verify != X509_V_OK);
	assert_non_null(p.c.tls.cert);
	assert_int_equal(X509_cmp(p.c.tls.cert, s.cert), 0);
	assert_int_equal(smtp_client_command(&p.c, "EHLO client.example", p.r, &err), 0);
	assert_string_equal(p.r->lines[0], "250 over TLS");
	smtp_client_close(&p.c);
	pthread_join(th, NULL);
	assert_string_equal(s.sni, "mx.example.com");
	close(p.peer);
	free(p.r);

	/* with the certificate as the CA file, the chain verifies */
	char ca[] = "/tmp/mailrep-test-smtp-client-XXXXXX";
	int fd = mkstemp(ca);
	assert_true(fd >= 0);
	FILE *f = fdopen(fd, "w");
	PEM_write_X509(f, s.cert);
	fclose(f);
	struct smtp_tls_opts verify = {.ca_file = ca};
	assert_int_equal(tls_run(&s, SRV_ANSWER, &verify, &p, &err), 0);
	assert_string_equal(s.sni, ""); /* none asked for, none sent */
	close(p.peer);
	free(p.r);
	unlink(ca);

	/* a CA file that does not hold the server's issuer: the handshake fails */
	struct tls_server other = {0};
	make_cert(&other);
	strcpy(ca + strlen(ca) - 6, "XXXXXX");
	fd = mkstemp(ca);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	PEM_write_X509(f, other.cert);
	fclose(f);
	assert_int_equal(tls_run(&s, SRV_ANSWER, &verify, &p, &err), -1);
	assert_non_null(strstr(err.msg, "TLS handshake failed: "));
	assert_non_null(strstr(err.msg, "certificate verify failed"));
	close(p.peer);
	free(p.r);
	unlink(ca);
	struct smtp_tls_opts missing = {.ca_file = "/nonexistent/ca.pem"};
	pair_open(&p, 300);
	assert_int_equal(smtp_client_starttls(&p.c, &missing, &err), -1);
	assert_string_equal(err.msg, "/nonexistent/ca.pem: cannot load CA certificates");
	pair_close(&p);

	/* under TLS, a silent server times out and a dropped one is closed */
	assert_int_equal(tls_run(&s, SRV_STALL, &o, &p, &err), -1);
	assert_string_equal(err.msg, "timed out after 1000 ms waiting for a reply");
	close(p.peer);
	free(p.r);
	assert_int_equal(tls_run(&s, SRV_DROP, &o, &p, &err), -1);
	assert_string_equal(err.msg, "connection closed (no TLS close_notify)");
	close(p.peer);
	free(p.r);

	X509_free(s.cert);
	EVP_PKEY_free(s.key);
	X509_free(other.cert);
	EVP_PKEY_free(other.key);
}

static void test_connect(void **state)
{
	(void)state;
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof sin;
	assert_int_equal(bind(l, (struct sockaddr *)&sin, sizeof sin), 0);
	assert_int_equal(listen(l, 1), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&sin, &sl), 0);
	struct base_sockaddr a = {.family = AF_INET, .port = ntohs(sin.sin_port)};
	memcpy(a.a.v4, "\x7f\0\0\1", 4);
	struct smtp_client c;
	struct base_err err;
	assert_int_equal(smtp_client_connect(&c, &a, 2000, &err), 0);
	int s = accept(l, NULL, NULL);
	assert_true(s >= 0);
	assert_int_equal(send(s, "220 hi\r\n", 8, MSG_NOSIGNAL), 8);
	struct smtp_reply *r = malloc(sizeof *r);
	assert_non_null(r);
	assert_int_equal(smtp_client_read_reply(&c, r, &err), 0);
	assert_int_equal(r->code, 220);
	smtp_client_close(&c);
	assert_int_equal(c.fd, -1);
	close(s);
	close(l); /* nothing listens there now */
	assert_int_equal(smtp_client_connect(&c, &a, 2000, &err), -1);
	assert_string_equal(err.msg, "connect: Connection refused");
	assert_int_equal(c.fd, -1);
	smtp_client_close(&c);
	free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_multiline_and_extensions),
	    cmocka_unit_test(test_line_length_bound),
	    cmocka_unit_test(test_line_count_bound),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_closed_and_silent),
	    cmocka_unit_test(test_dripping_peer_times_out),
	    cmocka_unit_test(test_command),
	    cmocka_unit_test(test_starttls_refuses_early_data),
	    cmocka_unit_test(test_starttls),
	    cmocka_unit_test(test_connect),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
