/*
 * test_relay_work.c — unit tests of the relay's worker pools (work.c) and
 * of the spool's commit in three steps (the sync on another thread):
 * every job runs off the loop thread and comes back to it exactly once,
 * in a pool being freed too; a record written while a sync runs is not
 * counted as covered by it, and the next commit covers it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "relay/int.h"

struct tjob {
	struct relay_work job; /* first: the pool hands back this pointer */
	pthread_t loop;
	int ran_off_loop, done_on_loop, dones;
	int *left;
	pthread_mutex_t *gate; /* run() waits for it when set */
	struct event_base *base;
};

static void tjob_run(struct relay_work *j)
{
	struct tjob *t = (struct tjob *)j;
	if (t->gate) {
		pthread_mutex_lock(t->gate);
		pthread_mutex_unlock(t->gate);
	}
	t->ran_off_loop = !pthread_equal(pthread_self(), t->loop);
}

static void tjob_done(struct relay_work *j)
{
	struct tjob *t = (struct tjob *)j;
	t->done_on_loop = pthread_equal(pthread_self(), t->loop);
	t->dones++;
	if (--*t->left == 0 && t->base) event_base_loopbreak(t->base);
}

static void test_pool_runs_off_the_loop_and_returns(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	struct base_err err;
	struct relay_workers *p = relay_workers_new(base, "test", 3, &err);
	assert_non_null(p);
	enum { N = 300 };
	struct tjob *jobs = calloc(N, sizeof *jobs);
	int left = N;
	for (int i = 0; i < N; i++) {
		jobs[i] = (struct tjob){.job = {.run = tjob_run, .done = tjob_done},
		                        .loop = pthread_self(),
		                        .left = &left,
		                        .base = base};
		relay_workers_submit(p, &jobs[i].job);
	}
	struct timeval limit = {20, 0};
	event_base_loopexit(base, &limit);
	event_base_dispatch(base);
	assert_int_equal(left, 0);
	for (int i = 0; i < N; i++) {
		assert_true(jobs[i].ran_off_loop);
		assert_true(jobs[i].done_on_loop);
		assert_int_equal(jobs[i].dones, 1);
		assert_int_equal(jobs[i].job.ran, 1);
	}
	relay_workers_free(p);
	for (int i = 0; i < N; i++) assert_int_equal(jobs[i].dones, 1); /* not twice */
	free(jobs);
	event_base_free(base);
}

static void test_pool_free_returns_every_job(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	struct base_err err;
	struct relay_workers *p = relay_workers_new(base, "test", 1, &err);
	assert_non_null(p);
	pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
	pthread_mutex_lock(&gate);
	enum { N = 6 };
	struct tjob jobs[N];
	int left = N;
	for (int i = 0; i < N; i++) {
		jobs[i] = (struct tjob){.job = {.run = tjob_run, .done = tjob_done},
		                        .loop = pthread_self(),
		                        .left = &left,
		                        .gate = i == 0 ? &gate : NULL};
		relay_workers_submit(p, &jobs[i].job);
	}
	usleep(50000); /* the one worker is now stuck in the first job */
	pthread_mutex_unlock(&gate);
	/* the loop never ran: freeing the pool hands back all six, run or not */
	relay_workers_free(p);
	assert_int_equal(left, 0);
	assert_int_equal(jobs[0].job.ran, 1);
	int unrun = 0;
	for (int i = 0; i < N; i++) {
		assert_int_equal(jobs[i].dones, 1);
		assert_true(jobs[i].done_on_loop);
		unrun += !jobs[i].job.ran;
	}
	assert_true(unrun >= 0 && unrun <= N - 1);
	event_base_free(base);
}

static int nfound;
static void count_msg(void *arg, const struct relay_record *rec, const struct relay_loc *loc,
                      const uint32_t *states, const uint32_t *attempts, const int64_t *next)
{
	(void)arg, (void)rec, (void)loc, (void)states, (void)attempts, (void)next;
	nfound++;
}

static void add(struct relay_spool *sp, const char *id)
{
	const char *rc[] = {"a@example.com"};
	struct relay_loc loc;
	struct base_err err;
	assert_int_equal(relay_spool_add(sp, id, "s@example.net", "", 1700000000, rc, 1,
	                                 "Subject: x\r\n\r\nhi\r\n", 19, &loc, &err),
	                 0);
}

static void test_spool_commit_in_steps(void **state)
{
	(void)state;
	char dir[] = "/tmp/relay-work-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char spool[64];
	snprintf(spool, sizeof spool, "%s/spool", dir);
	struct relay_spool *sp;
	struct base_err err;
	assert_int_equal(relay_spool_open(&sp, spool, NULL, NULL, &err), 0);
	add(sp, "m.1");
	struct relay_spool_sync *c = relay_spool_commit_begin(sp);
	assert_int_equal(relay_spool_sync_files(c), 1);
	add(sp, "m.2"); /* written while the sync "runs": not covered by it */
	assert_int_equal(relay_spool_commit_run(c), 0);
	assert_int_equal(relay_spool_commit_end(c, &err), 0);
	/* m.2 still needs a sync: a commit now has a segment to sync */
	c = relay_spool_commit_begin(sp);
	assert_int_equal(relay_spool_sync_files(c), 1);
	assert_int_equal(relay_spool_commit_run(c), 0);
	assert_int_equal(relay_spool_commit_end(c, &err), 0);
	/* and nothing is left after that */
	c = relay_spool_commit_begin(sp);
	assert_int_equal(relay_spool_sync_files(c), 0);
	assert_int_equal(relay_spool_commit_run(c), 0);
	assert_int_equal(relay_spool_commit_end(c, &err), 0);
	relay_spool_close(sp);
	nfound = 0;
	assert_int_equal(relay_spool_scan(spool, count_msg, NULL, &err), 0);
	assert_int_equal(nfound, 2);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pool_runs_off_the_loop_and_returns),
	    cmocka_unit_test(test_pool_free_returns_every_job),
	    cmocka_unit_test(test_spool_commit_in_steps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
