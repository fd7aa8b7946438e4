/*
 * work.c — small pools of worker threads for the relay's blocking work, so
 * that the event loop keeps serving sessions while it runs: DKIM signing
 * (an RSA-2048 signature costs about 0.3 ms of CPU) on one thread per core,
 * and the spool's group-commit fdatasync on a thread of its own.
 *
 * A work item (struct relay_work) is submitted from the loop thread; a
 * worker takes it from the pool's FIFO and calls its run() (which must
 * touch nothing the loop thread touches meanwhile), puts it on the pool's
 * done list and, when that list was empty, writes the pool's eventfd. The loop thread's event on
 * that eventfd takes the whole done list and calls each item's done(), in
 * the order they finished. So run() is the only code that runs off the
 * loop, and done() is where results meet the rest of the relay.
 *
 * Invariants (under the pool's mutex): an item is on at most one of the two
 * lists; the eventfd holds a wake-up whenever the done list is non-empty
 * and the loop has not taken it yet. relay_workers_free() joins the threads
 * and then calls done() once for every item it still holds, run or not
 * (w->ran says which), so items can always release what they own.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "relay/int.h"

struct relay_workers {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct relay_work *todo, *todo_tail; /* FIFO, oldest first */
	struct relay_work *done;             /* newest first */
	int stop;
	int efd;
	struct event *ev;
	pthread_t *threads;
	unsigned nthreads;
};

static void *worker(void *arg)
{
	struct relay_workers *p = arg;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->todo && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
		if (p->stop) break;
		struct relay_work *j = p->todo;
		p->todo = j->next;
		if (!p->todo) p->todo_tail = NULL;
		pthread_mutex_unlock(&p->mu);
		j->run(j);
		pthread_mutex_lock(&p->mu);
		j->ran = 1;
		int wake = p->done == NULL;
		j->next = p->done;
		p->done = j;
		if (wake) {
			uint64_t one = 1;
			while (write(p->efd, &one, sizeof one) < 0 && errno == EINTR) continue;
		}
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* Reverses a newest-first list into finishing order. */
static struct relay_work *reverse(struct relay_work *j)
{
	struct relay_work *r = NULL;
	while (j) {
		struct relay_work *n = j->next;
		j->next = r;
		r = j;
		j = n;
	}
	return r;
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
	struct relay_workers *p = arg;
	uint64_t v;
	if (read(p->efd, &v, sizeof v) < 0 && errno != EAGAIN)
		base_warn("pool: eventfd: %s", strerror(errno));
	pthread_mutex_lock(&p->mu);
	struct relay_work *j = reverse(p->done);
	p->done = NULL;
	pthread_mutex_unlock(&p->mu);
	while (j) {
		struct relay_work *n = j->next;
		j->next = NULL;
		j->done(j);
		j = n;
	}
}

struct relay_workers *relay_workers_new(struct event_base *base, const char *name, unsigned nthreads,
                                        struct base_err *err)
{
	struct relay_workers *p = base_xcalloc(1, sizeof *p);
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->efd < 0) {
		base_errf(err, "eventfd: %s", strerror(errno));
		relay_workers_free(p);
		return NULL;
	}
	p->ev = event_new(base, p->efd, EV_READ | EV_PERSIST, on_done, p);
	event_add(p->ev, NULL);
	p->threads = base_xcalloc(nthreads, sizeof *p->threads);
	for (unsigned i = 0; i < nthreads; i++) {
		int e = pthread_create(&p->threads[i], NULL, worker, p);
		if (e) {
			base_errf(err, "pthread_create: %s", strerror(e));
			relay_workers_free(p);
			return NULL;
		}
		p->nthreads++;
		char tn[16];
		snprintf(tn, sizeof tn, "mailrep-%.7s", name);
		pthread_setname_np(p->threads[i], tn); /* only informative: a failure changes nothing */
	}
	return p;
}

void relay_workers_submit(struct relay_workers *p, struct relay_work *j)
{
	j->next = NULL;
	j->ran = 0;
	pthread_mutex_lock(&p->mu);
	if (p->todo_tail)
		p->todo_tail->next = j;
	else
		p->todo = j;
	p->todo_tail = j;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

void relay_workers_free(struct relay_workers *p)
{
	if (!p) return;
	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
	/* every item still held gets its done(): finished ones first */
	struct relay_work *j = reverse(p->done);
	struct relay_work *last = j;
	while (last && last->next) last = last->next;
	if (last)
		last->next = p->todo;
	else
		j = p->todo;
	p->done = p->todo = p->todo_tail = NULL;
	while (j) {
		struct relay_work *n = j->next;
		j->next = NULL;
		j->done(j);
		j = n;
	}
	if (p->ev) event_free(p->ev);
	if (p->efd >= 0) close(p->efd);
	free(p->threads);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

unsigned relay_workers_cores(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > 16 ? 16 : (unsigned)n;
}
