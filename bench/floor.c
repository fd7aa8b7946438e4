/*
 * floor.c - "do-nothing" UDP DNS responder: the lower bound for the
 * dnsbl benchmark.
 *
 * Usage: floor ADDR PORT THREADS
 *
 * Starts THREADS worker threads, each with its own SO_REUSEPORT UDP socket
 * bound to ADDR:PORT.  Every worker receives batches of up to 64 datagrams
 * with recvmmsg(MSG_WAITFORONE) and answers each one with sendmmsg by
 * echoing it back with the QR bit set and RCODE=NXDOMAIN.  Nothing is parsed
 * beyond a 12-byte (DNS header) length check; shorter datagrams are dropped.
 *
 * The process exits with status 0 on SIGTERM (or SIGINT).
 *
 * Build: cc -std=c17 -O2 -Wall -Wextra -Werror -pthread -o floor floor.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

enum {
	BATCH = 64,          /* datagrams per recvmmsg/sendmmsg call */
	BUFSZ = 4096,        /* per-datagram buffer (EDNS-sized queries fit) */
	DNS_HDR = 12,        /* DNS header length */
	MAX_THREADS = 1024,
};

struct worker {
	pthread_t tid;
	int fd;
};

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static int open_socket(const struct sockaddr_storage *ss, socklen_t sslen)
{
	int fd = socket(ss->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	int one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
		die("setsockopt(SO_REUSEPORT)");
	if (ss->ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
		die("setsockopt(IPV6_V6ONLY)");
	if (bind(fd, (const struct sockaddr *)ss, sslen) < 0)
		die("bind");
	return fd;
}

static void *worker_main(void *arg)
{
	const struct worker *w = arg;
	unsigned char (*bufs)[BUFSZ] = malloc(sizeof(unsigned char[BATCH][BUFSZ]));
	struct sockaddr_storage peers[BATCH];
	struct iovec iov[BATCH];
	struct mmsghdr in[BATCH];
	struct mmsghdr out[BATCH];

	if (!bufs)
		die("malloc");
	for (;;) {
		for (int i = 0; i < BATCH; i++) {
			iov[i].iov_base = bufs[i];
			iov[i].iov_len = BUFSZ;
			memset(&in[i], 0, sizeof in[i]);
			in[i].msg_hdr.msg_name = &peers[i];
			in[i].msg_hdr.msg_namelen = sizeof peers[i];
			in[i].msg_hdr.msg_iov = &iov[i];
			in[i].msg_hdr.msg_iovlen = 1;
		}

		int n = recvmmsg(w->fd, in, BATCH, MSG_WAITFORONE, NULL);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			perror("recvmmsg");
			continue;
		}

		/* Build the reply batch, skipping runt datagrams. */
		int m = 0;
		for (int i = 0; i < n; i++) {
			unsigned int len = in[i].msg_len;
			if (len < DNS_HDR)
				continue;
			if (len > BUFSZ)
				len = BUFSZ;
			unsigned char *p = bufs[i];
			p[2] |= 0x80;                         /* QR = response */
			p[3] = (unsigned char)((p[3] & 0xF0) | 3); /* NXDOMAIN */
			iov[i].iov_len = len;
			memset(&out[m], 0, sizeof out[m]);
			out[m].msg_hdr.msg_name = &peers[i];
			out[m].msg_hdr.msg_namelen = in[i].msg_hdr.msg_namelen;
			out[m].msg_hdr.msg_iov = &iov[i];
			out[m].msg_hdr.msg_iovlen = 1;
			m++;
		}

		int sent = 0;
		while (sent < m) {
			int r = sendmmsg(w->fd, out + sent, (unsigned int)(m - sent), 0);
			if (r < 0) {
				if (errno == EINTR)
					continue;
				/* Drop this datagram (e.g. ENOBUFS) and go on. */
				sent++;
				continue;
			}
			sent += r;
		}
	}
	return NULL;
}

static long parse_long(const char *s, const char *what, long lo, long hi)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *s == '\0' || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "floor: invalid %s: %s\n", what, s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s ADDR PORT THREADS\n", argv[0]);
		return 2;
	}
	long port = parse_long(argv[2], "port", 1, 65535);
	long nthreads = parse_long(argv[3], "thread count", 1, MAX_THREADS);

	struct sockaddr_storage ss;
	socklen_t sslen;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, argv[1], &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		sslen = sizeof *sin;
	} else if (inet_pton(AF_INET6, argv[1], &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		sslen = sizeof *sin6;
	} else {
		fprintf(stderr, "floor: invalid address: %s\n", argv[1]);
		return 2;
	}

	/* Block termination signals in every thread; main waits for them. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	if ((errno = pthread_sigmask(SIG_BLOCK, &sigs, NULL)) != 0)
		die("pthread_sigmask");

	struct worker *workers = calloc((size_t)nthreads, sizeof *workers);
	if (!workers)
		die("calloc");

	/* Bind every socket before starting any thread so errors are fatal. */
	for (long i = 0; i < nthreads; i++)
		workers[i].fd = open_socket(&ss, sslen);
	for (long i = 0; i < nthreads; i++) {
		if ((errno = pthread_create(&workers[i].tid, NULL, worker_main,
					    &workers[i])) != 0)
			die("pthread_create");
	}

	int sig = 0;
	if ((errno = sigwait(&sigs, &sig)) != 0)
		die("sigwait");
	/* Exiting the process ends all workers; the kernel closes sockets. */
	return 0;
}
