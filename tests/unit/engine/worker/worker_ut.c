/*
 * Unit tests for engine/worker/worker.c: messages run on the worker thread
 * in order, fd callbacks (including unwatching from inside one), deferred
 * calls, stop hooks, stop waiting for in-flight I/O (held open with the
 * fault injector's delay), and calls deferred to after the pass's submit
 * seeing its I/O submitted.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cmocka.h>

#include "tessera/common.h"
#include "tessera/worker.h"

static int g_seq[16];
static int g_nseq;
static pthread_t g_worker_thread;
static int g_wrong_thread;

static void wait_for(volatile int *v, int want)
{
	for (int i = 0; i < 5000 && __atomic_load_n(v, __ATOMIC_ACQUIRE) < want; i++)
		usleep(1000);
	assert_int_equal(__atomic_load_n(v, __ATOMIC_ACQUIRE), want);
}

static void note_thread(void)
{
	if (!pthread_equal(pthread_self(), g_worker_thread))
		g_wrong_thread++;
}

static void msg_record(struct tsr_worker *w, void *arg)
{
	note_thread();
	g_seq[g_nseq] = (int)(intptr_t)arg;
	__atomic_store_n(&g_nseq, g_nseq + 1, __ATOMIC_RELEASE);
}

static void msg_get_thread(struct tsr_worker *w, void *arg)
{
	g_worker_thread = pthread_self();
	__atomic_store_n((int *)arg, 1, __ATOMIC_RELEASE);
}

static struct tsr_worker *start_worker(const char *fault)
{
	struct tsr_io_opts o = { .kind = TSR_IO_AUTO, .fault_spec = fault };
	struct tsr_worker *w = NULL;
	int ret = tsr_worker_start(3, &o, &w);
	int got = 0;

	if (ret == -ENOSYS || ret == -EPERM) {
		print_message("no I/O backend available: %s\n", strerror(-ret));
		exit(77);
	}
	assert_int_equal(ret, 0);
	assert_int_equal(tsr_worker_index(w), 3);
	assert_int_equal(tsr_worker_send(w, msg_get_thread, &got), 0);
	wait_for(&got, 1);
	return w;
}

static void test_messages_in_order(void **state)
{
	struct tsr_worker *w = start_worker(NULL);

	g_nseq = 0;
	g_wrong_thread = 0;
	for (intptr_t i = 0; i < 10; i++)
		assert_int_equal(tsr_worker_send(w, msg_record, (void *)i), 0);
	wait_for(&g_nseq, 10);
	for (int i = 0; i < 10; i++)
		assert_int_equal(g_seq[i], i);
	assert_int_equal(g_wrong_thread, 0);
	tsr_worker_stop(w);
}

/* ---- fd callbacks and deferred calls ---- */

struct pipe_test {
	struct tsr_worker *w;
	int fds[2];
	int reads;      /* callbacks run */
	int deferred;   /* deferred calls run */
	int stopped;    /* stop hook ran */
};

static void deferred_fn(struct tsr_worker *w, void *arg)
{
	struct pipe_test *t = arg;

	note_thread();
	__atomic_add_fetch(&t->deferred, 1, __ATOMIC_RELEASE);
}

static void on_readable(void *arg, uint32_t events)
{
	struct pipe_test *t = arg;
	char c;

	note_thread();
	assert_int_equal(read(t->fds[0], &c, 1), 1);
	assert_int_equal(tsr_worker_defer(t->w, deferred_fn, t), 0);
	if (c == 'q') /* unwatching from inside the callback is allowed */
		assert_int_equal(tsr_worker_unwatch(t->w, t->fds[0]), 0);
	__atomic_add_fetch(&t->reads, 1, __ATOMIC_RELEASE);
}

static void msg_watch(struct tsr_worker *w, void *arg)
{
	struct pipe_test *t = arg;

	assert_int_equal(tsr_worker_watch(w, t->fds[0], EPOLLIN, on_readable, t), 0);
	assert_int_equal(tsr_worker_watch(w, t->fds[0], EPOLLIN, on_readable, t), -EEXIST);
}

static void stop_hook(struct tsr_worker *w, void *arg)
{
	struct pipe_test *t = arg;

	note_thread();
	t->stopped++;
}

static void msg_register_hook(struct tsr_worker *w, void *arg)
{
	assert_int_equal(tsr_worker_on_stop(w, stop_hook, arg), 0);
	__atomic_store_n(&((struct pipe_test *)arg)->deferred, 0, __ATOMIC_RELEASE);
}

static void test_fds_defer_stop_hook(void **state)
{
	struct pipe_test t = { 0 };

	g_wrong_thread = 0;
	t.w = start_worker(NULL);
	assert_int_equal(pipe(t.fds), 0);
	assert_int_equal(tsr_worker_send(t.w, msg_register_hook, &t), 0);
	assert_int_equal(tsr_worker_send(t.w, msg_watch, &t), 0);
	assert_int_equal(write(t.fds[1], "a", 1), 1);
	wait_for(&t.reads, 1);
	wait_for(&t.deferred, 1);
	assert_int_equal(write(t.fds[1], "q", 1), 1);
	wait_for(&t.reads, 2);
	wait_for(&t.deferred, 2);
	/* unwatched: more bytes do not call back */
	assert_int_equal(write(t.fds[1], "b", 1), 1);
	usleep(50000);
	assert_int_equal(__atomic_load_n(&t.reads, __ATOMIC_ACQUIRE), 2);
	assert_int_equal(t.stopped, 0);
	tsr_worker_stop(t.w);
	assert_int_equal(t.stopped, 1);
	assert_int_equal(g_wrong_thread, 0);
	close(t.fds[0]);
	close(t.fds[1]);
}

/* ---- stop waits for in-flight I/O ---- */

struct io_test {
	int fd;
	void *buf;
	struct iovec iov;
	int done;
	int res;
};

static void io_done(void *arg, int res)
{
	struct io_test *t = arg;

	note_thread();
	t->res = res;
	t->done++;
}

static void msg_write(struct tsr_worker *w, void *arg)
{
	struct io_test *t = arg;

	assert_int_equal(tsr_io_writev(tsr_worker_io(w), t->fd, &t->iov, 1, 0, 0, io_done, t), 0);
}

/* An unlinked temporary file in *fd and a 4 KiB block of byte c to write. */
static void tmp_file_block(int *fd, void **buf, struct iovec *iov, int c)
{
	char path[] = "/tmp/worker_ut.XXXXXX";

	*fd = mkstemp(path);
	assert_true(*fd >= 0);
	unlink(path);
	*buf = tsr_alloc_aligned(4096);
	assert_non_null(*buf);
	memset(*buf, c, 4096);
	iov->iov_base = *buf;
	iov->iov_len = 4096;
}

static void test_stop_waits_for_io(void **state)
{
	struct io_test t = { 0 };
	struct tsr_worker *w;
	int64_t t0;

	g_wrong_thread = 0;
	tmp_file_block(&t.fd, &t.buf, &t.iov, 0x5a);
	/* the write completes only after 200 ms */
	w = start_worker("write:1:delay=200");
	t0 = tsr_mono_ms();
	assert_int_equal(tsr_worker_send(w, msg_write, &t), 0);
	usleep(20000);
	/* still held: certain only while less than the 200 ms have passed
	 * since the send (a loaded machine may oversleep past them) */
	if (tsr_mono_ms() - t0 < 150)
		assert_int_equal(__atomic_load_n(&t.done, __ATOMIC_ACQUIRE), 0);
	tsr_worker_stop(w);
	/* stop returned only after the callback ran, with the full length */
	assert_int_equal(t.done, 1);
	assert_int_equal(t.res, 4096);
	assert_int_equal(g_wrong_thread, 0);
	tsr_free_aligned(t.buf);
	close(t.fd);
}

/* ---- calls deferred to after the pass's submit ---- */

struct after_test {
	int fd;
	void *buf;
	struct iovec iov;
	int order[4];        /* 1: tsr_worker_defer call, 2: after-submit call */
	int norder;
	unsigned unsubmitted; /* seen by the after-submit call */
	unsigned inflight;
	int done;             /* write callbacks run */
};

static void write_done(void *arg, int res)
{
	struct after_test *t = arg;

	assert_int_equal(res, 4096);
	__atomic_add_fetch(&t->done, 1, __ATOMIC_RELEASE);
}

static void plain_deferred(struct tsr_worker *w, void *arg)
{
	struct after_test *t = arg;

	t->order[t->norder++] = 1;
}

/* Sees the pass's write submitted already, and queues one more write: the
 * pass submits it too (its callback comes without any other event). */
static void after_submit(struct tsr_worker *w, void *arg)
{
	struct after_test *t = arg;

	note_thread();
	t->order[t->norder++] = 2;
	t->unsubmitted = tsr_io_unsubmitted(tsr_worker_io(w));
	t->inflight = tsr_io_inflight(tsr_worker_io(w));
	assert_int_equal(tsr_io_writev(tsr_worker_io(w), t->fd, &t->iov, 1, 4096, 0, write_done, t),
			 0);
	__atomic_store_n(&t->norder, t->norder, __ATOMIC_RELEASE);
}

static void msg_write_then_defer(struct tsr_worker *w, void *arg)
{
	struct after_test *t = arg;

	assert_int_equal(tsr_io_writev(tsr_worker_io(w), t->fd, &t->iov, 1, 0, 0, write_done, t), 0);
	assert_int_equal(tsr_worker_defer_after_submit(w, after_submit, t), 0);
	assert_int_equal(tsr_worker_defer(w, plain_deferred, t), 0);
}

static void test_defer_after_submit(void **state)
{
	struct after_test t = { 0 };
	struct tsr_worker *w;

	g_wrong_thread = 0;
	tmp_file_block(&t.fd, &t.buf, &t.iov, 0xa5);
	w = start_worker(NULL);
	assert_int_equal(tsr_worker_send(w, msg_write_then_defer, &t), 0);
	wait_for(&t.done, 2);
	/* the after-submit call found the message's write submitted (in
	 * flight, not yet called back), and ran after the plain deferred call */
	assert_int_equal(t.unsubmitted, 0);
	assert_true(t.inflight >= 1);
	assert_int_equal(t.norder, 2);
	assert_int_equal(t.order[0], 1);
	assert_int_equal(t.order[1], 2);
	tsr_worker_stop(w);
	assert_int_equal(g_wrong_thread, 0);
	tsr_free_aligned(t.buf);
	close(t.fd);
}

/* ---- calls queued by a stop hook ---- */

struct hook_test {
	bool plain;   /* the hook also queues a plain deferred call */
	int plain_calls, after_calls;
	int registered;
};

static void count_call(struct tsr_worker *w, void *arg)
{
	note_thread();
	(*(int *)arg)++;
}

/* A stop hook (run between loop passes) queues an after-submit call. */
static void stop_hook_defers(struct tsr_worker *w, void *arg)
{
	struct hook_test *t = arg;

	if (t->plain)
		assert_int_equal(tsr_worker_defer(w, count_call, &t->plain_calls), 0);
	assert_int_equal(tsr_worker_defer_after_submit(w, count_call, &t->after_calls), 0);
}

static void msg_hook_defers(struct tsr_worker *w, void *arg)
{
	struct hook_test *t = arg;

	assert_int_equal(tsr_worker_on_stop(w, stop_hook_defers, t), 0);
	__atomic_store_n(&t->registered, 1, __ATOMIC_RELEASE);
}

/* The after-submit call runs before the worker's thread ends, with or
 * without a plain deferred call to keep the last passes going. */
static void test_stop_hook_defers(void **state)
{
	g_wrong_thread = 0;
	for (int plain = 1; plain >= 0; plain--) {
		struct hook_test t = { .plain = plain };
		struct tsr_worker *w = start_worker(NULL);

		assert_int_equal(tsr_worker_send(w, msg_hook_defers, &t), 0);
		wait_for(&t.registered, 1);
		tsr_worker_stop(w);
		assert_int_equal(t.plain_calls, plain);
		assert_int_equal(t.after_calls, 1);
	}
	assert_int_equal(g_wrong_thread, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_messages_in_order),
		cmocka_unit_test(test_fds_defer_stop_hook),
		cmocka_unit_test(test_stop_waits_for_io),
		cmocka_unit_test(test_defer_after_submit),
		cmocka_unit_test(test_stop_hook_defers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
