/*
 * Unit tests for the monotonic timed waits (engine/util/util.c,
 * tsr_cond_init_mono, tsr_cond_wait_until_ms), which the cluster's lease and
 * sweep threads wait with (engine/cluster/cluster.c wait_until).
 *
 * The wall clock is stepped without touching the machine's: the binary is
 * linked with -Wl,--wrap=clock_gettime (tests/CMakeLists.txt), and
 * __wrap_clock_gettime adds g_realtime_step_s to every CLOCK_REALTIME reading
 * the engine makes (glibc's own, inside pthread_cond_timedwait, stay true).
 * A wait that computed its deadline on the wall clock, as wait_until did,
 * then times out an hour early (step -3600 s: at once) or an hour late
 * (+3600 s: the test would hang to ctest's timeout, so only the first is
 * run).  The assertions are on the return code and on the deadline having
 * passed when ETIMEDOUT is returned, never on how long a wait took.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "tessera/common.h"

int __real_clock_gettime(clockid_t clk, struct timespec *ts);
int __wrap_clock_gettime(clockid_t clk, struct timespec *ts);

static time_t g_realtime_step_s;

int __wrap_clock_gettime(clockid_t clk, struct timespec *ts)
{
	int ret = __real_clock_gettime(clk, ts);

	if (ret == 0 && clk == CLOCK_REALTIME)
		ts->tv_sec += g_realtime_step_s;
	return ret;
}

/* The wall clock true again, even after a failed assertion. */
static int clock_reset(void **state)
{
	(void)state;
	g_realtime_step_s = 0;
	return 0;
}

/* A wait of 200 ms with the wall clock an hour behind: ETIMEDOUT only once
 * the monotonic deadline has passed (a wall-clock deadline lay an hour in
 * the past: ETIMEDOUT at once, 200 ms early). */
static void test_wait_until_wall_clock_back(void **state)
{
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t cond;
	int64_t deadline;
	int ret;

	(void)state;
	assert_int_equal(tsr_cond_init_mono(&cond), 0);
	g_realtime_step_s = -3600;
	pthread_mutex_lock(&lock);
	deadline = tsr_mono_ms() + 200;
	do
		ret = tsr_cond_wait_until_ms(&cond, &lock, deadline);
	while (ret == 0); /* a spurious wake-up: nobody signals */
	assert_int_equal(ret, ETIMEDOUT);
	assert_true(tsr_mono_ms() >= deadline);
	pthread_mutex_unlock(&lock);
	pthread_cond_destroy(&cond);
}

struct waker {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool woken;
};

static void *wake(void *arg)
{
	struct waker *w = arg;

	pthread_mutex_lock(&w->lock);
	w->woken = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/* A signal ends the wait (0), long before its deadline (an hour away). */
static void test_wait_until_signalled(void **state)
{
	struct waker w = {.lock = PTHREAD_MUTEX_INITIALIZER};
	int64_t deadline;
	pthread_t t;
	int ret = 0;

	(void)state;
	assert_int_equal(tsr_cond_init_mono(&w.cond), 0);
	pthread_mutex_lock(&w.lock);
	deadline = tsr_mono_ms() + 3600 * 1000;
	assert_int_equal(pthread_create(&t, NULL, wake, &w), 0);
	while (!w.woken && ret == 0)
		ret = tsr_cond_wait_until_ms(&w.cond, &w.lock, deadline);
	assert_int_equal(ret, 0);
	assert_true(w.woken);
	pthread_mutex_unlock(&w.lock);
	pthread_join(t, NULL);
	pthread_cond_destroy(&w.cond);
}

/* A deadline already past: ETIMEDOUT at once, without sleeping. */
static void test_wait_until_past(void **state)
{
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t cond;

	(void)state;
	assert_int_equal(tsr_cond_init_mono(&cond), 0);
	pthread_mutex_lock(&lock);
	assert_int_equal(tsr_cond_wait_until_ms(&cond, &lock, tsr_mono_ms() - 1000), ETIMEDOUT);
	assert_int_equal(tsr_cond_wait_until_ms(&cond, &lock, -5), ETIMEDOUT);
	pthread_mutex_unlock(&lock);
	pthread_cond_destroy(&cond);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_wait_until_wall_clock_back, clock_reset),
	    cmocka_unit_test(test_wait_until_signalled),
	    cmocka_unit_test(test_wait_until_past),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
