/*
 * Unit tests of the I/O layer (engine/io/): every test runs against both real
 * backends, io_uring and libaio, on an O_DIRECT file on a disk file system,
 * and checks data read back or counters.  The fault injector is tested on
 * top of each backend.  io_uring tests are skipped (with the reason) when the
 * kernel or a seccomp profile does not allow a ring.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tessera/common.h"
#include "tessera/io.h"

#include "io_test.h"

#define BS 4096u
#define FILE_SIZE (16u * 1024 * 1024)

struct backend_case {
	enum tsr_io_kind kind;
	const char *name;    /* expected tsr_io_name() */
	bool available;      /* set in main() */
	char why[128];       /* reason when not available */
};

static struct backend_case g_uring = { TSR_IO_URING, "io_uring", false, "" };
static struct backend_case g_aio = { TSR_IO_AIO, "libaio", false, "" };
static char g_dir[1024];    /* directory whose file system supports O_DIRECT */

/* Per-test state: the backend under test and an O_DIRECT temp file. */
struct env {
	struct backend_case *bc;
	int fd;
	char path[PATH_MAX];
};

/* One operation's completion as the callback saw it. */
struct done {
	int calls;
	int res;
	struct tsr_io *io;   /* for callbacks that queue more */
	void *chain;         /* test-specific */
};

static void done_cb(void *cb_arg, int res)
{
	struct done *d = cb_arg;

	d->calls++;
	d->res = res;
}

/* Deterministic content: every 8-byte word names its seed and file offset. */
static void fill(void *buf, size_t len, uint64_t seed, uint64_t offset)
{
	uint64_t *w = buf;

	for (size_t i = 0; i < len / 8; i++)
		w[i] = (seed << 40) ^ (offset + i * 8);
}

static void *xalloc(size_t len)
{
	void *p = tsr_alloc_aligned(len);

	assert_non_null(p);
	memset(p, 0xee, len);
	return p;
}

/* Read the file directly (no io layer) and compare with the expected seed. */
static void assert_file(int fd, uint64_t offset, size_t len, uint64_t seed)
{
	void *got = xalloc(len), *want = xalloc(len);

	assert_int_equal(pread(fd, got, len, (off_t)offset), (ssize_t)len);
	fill(want, len, seed, offset);
	assert_memory_equal(got, want, len);
	tsr_free_aligned(got);
	tsr_free_aligned(want);
}

static void assert_file_zero(int fd, uint64_t offset, size_t len)
{
	char *got = xalloc(len);

	assert_int_equal(pread(fd, got, len, (off_t)offset), (ssize_t)len);
	for (size_t i = 0; i < len; i++)
		assert_int_equal(got[i], 0);
	tsr_free_aligned(got);
}

static void wait_all(struct tsr_io *io)
{
	int guard = 0;

	while (tsr_io_inflight(io) > 0) {
		assert_true(tsr_io_poll(io, 0, true) >= 0);
		assert_true(++guard < 100000);
	}
}

static struct tsr_io *make_io(struct env *e, unsigned qd, const char *spec)
{
	struct tsr_io_opts opts = { .kind = e->bc->kind, .queue_depth = qd, .fault_spec = spec };
	struct tsr_io *io = NULL;
	char name[64];

	assert_int_equal(tsr_io_create(&opts, &io), 0);
	assert_non_null(io);
	if (spec != NULL)
		snprintf(name, sizeof(name), "fault(%s)", e->bc->name);
	else
		snprintf(name, sizeof(name), "%s", e->bc->name);
	assert_string_equal(tsr_io_name(io), name);
	return io;
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	if (e == NULL)
		return -1;
	e->bc = *state;
	e->fd = -1;
	*state = e;
	if (!e->bc->available)
		return 0;
	snprintf(e->path, sizeof(e->path), "%s/tsr-io-ut-XXXXXX", g_dir);
	e->fd = mkostemp(e->path, O_DIRECT);
	if (e->fd < 0 || ftruncate(e->fd, FILE_SIZE) < 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	io_test_file_remove(e->fd, e->path);
	free(e);
	return 0;
}

static struct env *env_of(void **state)
{
	struct env *e = *state;

	if (!e->bc->available) {
		print_message("skipped: %s unavailable: %s\n", e->bc->name, e->bc->why);
		skip();
	}
	return e;
}

/* Write then read back, scattered over several iovecs of different sizes. */
static void test_write_read(void **state)
{
	struct env *e = env_of(state);
	struct tsr_io *io = make_io(e, 0, NULL);
	const size_t len = 64 * 1024;
	const uint64_t off = 1024 * 1024;
	char *wbuf = xalloc(len), *rbuf = xalloc(len);
	struct iovec wiov[3] = { { wbuf, BS }, { wbuf + BS, 2 * BS }, { wbuf + 3 * BS, len - 3 * BS } };
	struct iovec riov[2] = { { rbuf, 5 * BS }, { rbuf + 5 * BS, len - 5 * BS } };
	struct done w = { 0 }, r = { 0 };

	fill(wbuf, len, 1, off);
	assert_int_equal(tsr_io_writev(io, e->fd, wiov, 3, off, 0, done_cb, &w), 0);
	assert_int_equal(tsr_io_inflight(io), 1);
	assert_true(tsr_io_submit(io) >= 0);
	assert_int_equal(w.calls, 0); /* callbacks only from tsr_io_poll */
	wait_all(io);
	assert_int_equal(w.calls, 1);
	assert_int_equal(w.res, (int)len);
	assert_int_equal(tsr_io_inflight(io), 0);

	assert_int_equal(tsr_io_readv(io, e->fd, riov, 2, off, done_cb, &r), 0);
	assert_true(tsr_io_submit(io) >= 0);
	wait_all(io);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.res, (int)len);
	assert_memory_equal(rbuf, wbuf, len);
	assert_file(e->fd, off, len, 1);

	tsr_io_destroy(io);
	tsr_free_aligned(wbuf);
	tsr_free_aligned(rbuf);
}

/* 64 writes in flight at random offsets, then 64 reads, several rounds. */
static void test_qd64_random(void **state)
{
	struct env *e = env_of(state);
	enum { QD = 64, ROUNDS = 8, BLOCKS = FILE_SIZE / BS };
	struct tsr_io *io = make_io(e, QD, NULL);
	char *wbuf = xalloc(QD * BS), *rbuf = xalloc(QD * BS);
	struct iovec iov[QD], riov[QD];
	uint64_t off[QD];
	struct done d[QD];
	unsigned seed = 12345;

	for (int round = 0; round < ROUNDS; round++) {
		/* distinct random blocks */
		for (int i = 0; i < QD; i++) {
			bool dup;

			do {
				off[i] = (uint64_t)(rand_r(&seed) % BLOCKS) * BS;
				dup = false;
				for (int j = 0; j < i; j++)
					dup |= off[j] == off[i];
			} while (dup);
			iov[i] = (struct iovec){ wbuf + i * BS, BS };
			riov[i] = (struct iovec){ rbuf + i * BS, BS };
			fill(wbuf + i * BS, BS, 100 + (uint64_t)round, off[i]);
		}
		memset(d, 0, sizeof(d));
		for (int i = 0; i < QD; i++)
			assert_int_equal(tsr_io_writev(io, e->fd, &iov[i], 1, off[i], 0, done_cb,
						       &d[i]), 0);
		assert_int_equal(tsr_io_inflight(io), QD);
		assert_int_equal(tsr_io_submit(io), QD); /* one batch */
		wait_all(io);
		for (int i = 0; i < QD; i++) {
			assert_int_equal(d[i].calls, 1);
			assert_int_equal(d[i].res, (int)BS);
		}

		memset(d, 0, sizeof(d));
		memset(rbuf, 0, QD * BS);
		for (int i = QD; i-- > 0;)
			assert_int_equal(tsr_io_readv(io, e->fd, &riov[i], 1, off[i], done_cb, &d[i]),
					 0);
		assert_true(tsr_io_submit(io) >= 0);
		wait_all(io);
		for (int i = 0; i < QD; i++) {
			assert_int_equal(d[i].calls, 1);
			assert_int_equal(d[i].res, (int)BS);
		}
		assert_memory_equal(rbuf, wbuf, QD * BS);
	}
	tsr_io_destroy(io);
	tsr_free_aligned(wbuf);
	tsr_free_aligned(rbuf);
}

static void test_fua_write(void **state)
{
	struct env *e = env_of(state);
	struct tsr_io *io = make_io(e, 8, NULL);
	char *buf = xalloc(2 * BS);
	struct iovec iov = { buf, 2 * BS };
	struct done d = { 0 };

	fill(buf, 2 * BS, 7, 8 * BS);
	assert_int_equal(tsr_io_writev(io, e->fd, &iov, 1, 8 * BS, 0x80, done_cb, &d), -EINVAL);
	assert_int_equal(tsr_io_writev(io, e->fd, &iov, 1, 8 * BS, TSR_IO_FUA, done_cb, &d), 0);
	assert_true(tsr_io_submit(io) >= 0);
	wait_all(io);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.res, (int)(2 * BS));
	assert_file(e->fd, 8 * BS, 2 * BS, 7);
	tsr_io_destroy(io);
	tsr_free_aligned(buf);
}

static void test_fsync(void **state)
{
	struct env *e = env_of(state);
	struct tsr_io *io = make_io(e, 8, NULL);
	char *buf = xalloc(BS);
	struct iovec iov = { buf, BS };
	struct done w = { 0 }, f = { 0 }, fd = { 0 };

	fill(buf, BS, 9, 0);
	assert_int_equal(tsr_io_writev(io, e->fd, &iov, 1, 0, 0, done_cb, &w), 0);
	assert_true(tsr_io_submit(io) >= 0);
	wait_all(io);
	assert_int_equal(w.res, (int)BS);

	f.res = fd.res = 12345;
	assert_int_equal(tsr_io_fsync(io, e->fd, false, done_cb, &f), 0);
	assert_int_equal(tsr_io_fsync(io, e->fd, true, done_cb, &fd), 0);
	assert_int_equal(tsr_io_fsync(io, -1, true, done_cb, &fd), -EINVAL);
	assert_int_equal(tsr_io_inflight(io), 2);
	assert_true(tsr_io_submit(io) >= 0);
	wait_all(io);
	assert_int_equal(f.calls, 1);
	assert_int_equal(f.res, 0);
	assert_int_equal(fd.calls, 1);
	assert_int_equal(fd.res, 0);
	assert_file(e->fd, 0, BS, 9);
	tsr_io_destroy(io);
	tsr_free_aligned(buf);
}

/*
 * fsync of a file that cannot be synced (a pipe): -EINVAL through the
 * callback.  On libaio the kernel rejects the aio fsync at submission, which
 * switches the backend to synchronous flushes in reap(): the following
 * fsyncs of the regular file must still succeed.
 */
static void test_fsync_unsupported_file(void **state)
{
	struct env *e = env_of(state);
	struct tsr_io *io = make_io(e, 8, NULL);
	struct done p = { 0 }, f = { 0 }, fd = { 0 };
	int pipefd[2];

	assert_int_equal(pipe(pipefd), 0);
	assert_int_equal(tsr_io_fsync(io, pipefd[1], false, done_cb, &p), 0);
	assert_true(tsr_io_submit(io) >= 0);
	assert_int_equal(p.calls, 0);
	wait_all(io);
	assert_int_equal(p.calls, 1);
	assert_int_equal(p.res, -EINVAL);

	f.res = fd.res = 12345;
	assert_int_equal(tsr_io_fsync(io, e->fd, false, done_cb, &f), 0);
	assert_int_equal(tsr_io_fsync(io, e->fd, true, done_cb, &fd), 0);
	assert_true(tsr_io_submit(io) >= 0);
	wait_all(io);
	assert_int_equal(f.calls, 1);
	assert_int_equal(f.res, 0);
	assert_int_equal(fd.calls, 1);
	assert_int_equal(fd.res, 0);
	close(pipefd[0]);
	close(pipefd[1]);
	tsr_io_destroy(io);
}

static void test_queue_full(void **state)
{
	struct env *e = env_of(state);
	enum { QD = 4 };
	struct tsr_io *io = make_io(e, QD, NULL);
	char *buf = xalloc((QD + 1) * BS);
	struct iovec iov[QD + 1];
	struct done d[QD + 1];

	memset(d, 0, sizeof(d));
	for (int i = 0; i <= QD; i++)
		iov[i] = (struct iovec){ buf + i * BS, BS };
	for (int i = 0; i < QD; i++)
		assert_int_equal(tsr_io_readv(io, e->fd, &iov[i], 1, (uint64_t)i * BS, done_cb,
					      &d[i]), 0);
	assert_int_equal(tsr_io_readv(io, e->fd, &iov[QD], 1, 0, done_cb, &d[QD]), -EAGAIN);
	assert_int_equal(tsr_io_inflight(io), QD);
	assert_true(tsr_io_submit(io) >= 0);
	wait_all(io);
	for (int i = 0; i < QD; i++)
		assert_int_equal(d[i].res, (int)BS);
	assert_int_equal(d[QD].calls, 0); /* an error return never calls back */
	/* slots come back */
	assert_int_equal(tsr_io_readv(io, e->fd, &iov[QD], 1, 0, done_cb, &d[QD]), 0);
	assert_true(tsr_io_submit(io) >= 0);
	wait_all(io);
	assert_int_equal(d[QD].calls, 1);
	assert_int_equal(d[QD].res, (int)BS);
	tsr_io_destroy(io);
	tsr_free_aligned(buf);
}

static void test_bad_args(void **state)
{
	struct env *e = env_of(state);
	struct tsr_io *io = make_io(e, 8, NULL);
	char *buf = xalloc(BS);
	struct iovec iov = { buf, BS }, empty = { buf, 0 };
	struct done d = { 0 };

	assert_int_equal(tsr_io_readv(io, -1, &iov, 1, 0, done_cb, &d), -EINVAL);
	assert_int_equal(tsr_io_readv(io, e->fd, &iov, 0, 0, done_cb, &d), -EINVAL);
	assert_int_equal(tsr_io_readv(io, e->fd, &iov, IOV_MAX + 1, 0, done_cb, &d), -EINVAL);
	assert_int_equal(tsr_io_readv(io, e->fd, NULL, 1, 0, done_cb, &d), -EINVAL);
	assert_int_equal(tsr_io_readv(io, e->fd, &iov, 1, 0, NULL, &d), -EINVAL);
	assert_int_equal(tsr_io_readv(io, e->fd, &empty, 1, 0, done_cb, &d), -EINVAL);
	assert_int_equal(tsr_io_writev(io, e->fd, &iov, 1, UINT64_MAX - 10, 0, done_cb, &d),
			 -EINVAL);
	assert_int_equal(tsr_io_fsync(io, e->fd, false, NULL, &d), -EINVAL);
	assert_int_equal(tsr_io_inflight(io), 0);
	assert_int_equal(tsr_io_poll(io, 0, false), 0);
	assert_int_equal(d.calls, 0);
	tsr_io_destroy(io);
	tsr_free_aligned(buf);
}

/* Reading past the end of the file: short, then 0 bytes: -EIO, not a short result. */
static void test_read_past_eof(void **state)
{
	struct env *e = env_of(state);
	struct tsr_io *io = make_io(e, 8, NULL);
	char *buf = xalloc(2 * BS);
	struct iovec iov = { buf, 2 * BS };
	struct done d = { 0 };

	assert_int_equal(tsr_io_readv(io, e->fd, &iov, 1, FILE_SIZE - BS, done_cb, &d), 0);
	assert_true(tsr_io_submit(io) >= 0);
	wait_all(io);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.res, -EIO);
	tsr_io_destroy(io);
	tsr_free_aligned(buf);
}

static void test_event_fd(void **state)
{
	struct env *e = env_of(state);
	struct tsr_io *io = make_io(e, 8, NULL);
	char *buf = xalloc(BS);
	struct iovec iov = { buf, BS };
	struct done d = { 0 };
	struct pollfd pfd = { .fd = tsr_io_event_fd(io), .events = POLLIN };
	uint64_t counter = 0;

	assert_true(pfd.fd >= 0);
	assert_int_equal(poll(&pfd, 1, 0), 0); /* nothing yet */
	fill(buf, BS, 3, 5 * BS);
	assert_int_equal(tsr_io_writev(io, e->fd, &iov, 1, 5 * BS, 0, done_cb, &d), 0);
	assert_true(tsr_io_submit(io) >= 0);
	assert_int_equal(poll(&pfd, 1, 5000), 1);
	assert_true(pfd.revents & POLLIN);
	assert_int_equal(read(pfd.fd, &counter, sizeof(counter)), (ssize_t)sizeof(counter));
	assert_true(counter >= 1);
	assert_int_equal(d.calls, 0);
	assert_int_equal(tsr_io_poll(io, 0, false), 1);
	assert_int_equal(d.res, (int)BS);
	assert_int_equal(poll(&pfd, 1, 0), 0); /* counter was read */
	assert_file(e->fd, 5 * BS, BS, 3);
	tsr_io_destroy(io);
	tsr_free_aligned(buf);
}

/* Destroy with operations queued and in flight: every callback fires, data lands. */
static void test_destroy_inflight(void **state)
{
	struct env *e = env_of(state);
	enum { N = 32 };
	struct tsr_io *io = make_io(e, N, NULL);
	char *buf = xalloc(N * BS);
	struct iovec iov[N];
	struct done d[N];

	memset(d, 0, sizeof(d));
	for (int i = 0; i < N; i++) {
		iov[i] = (struct iovec){ buf + i * BS, BS };
		fill(buf + i * BS, BS, 11, (uint64_t)(64 + i) * BS);
		assert_int_equal(tsr_io_writev(io, e->fd, &iov[i], 1, (uint64_t)(64 + i) * BS, 0,
					       done_cb, &d[i]), 0);
		if (i == N / 2)
			assert_true(tsr_io_submit(io) >= 0); /* half submitted, half only queued */
	}
	tsr_io_destroy(io);
	for (int i = 0; i < N; i++) {
		assert_int_equal(d[i].calls, 1);
		assert_int_equal(d[i].res, (int)BS);
	}
	assert_file(e->fd, 64 * BS, N * BS, 11);
	tsr_free_aligned(buf);
}

/* A callback queues the next operation: allowed, and it completes later. */
struct chain {
	struct tsr_io *io;
	int fd;
	char *buf;
	struct iovec iov;
	int left;
	int done;
	int errors;
};

static void chain_cb(void *cb_arg, int res)
{
	struct chain *c = cb_arg;

	c->done++;
	if (res != (int)BS)
		c->errors++;
	if (--c->left > 0) {
		uint64_t off = (uint64_t)(200 + c->done) * BS;

		fill(c->buf, BS, 21, off);
		if (tsr_io_writev(c->io, c->fd, &c->iov, 1, off, 0, chain_cb, c) != 0)
			c->errors++;
		/* polling from a callback is refused */
		if (tsr_io_poll(c->io, 0, false) != -EBUSY)
			c->errors++;
	}
}

static void test_callback_requeue(void **state)
{
	struct env *e = env_of(state);
	struct tsr_io *io = make_io(e, 1, NULL);
	struct chain c = { .io = io, .fd = e->fd, .left = 10 };

	c.buf = xalloc(BS);
	c.iov = (struct iovec){ c.buf, BS };
	fill(c.buf, BS, 21, 200 * BS);
	/* queue depth 1: the slot must be free again inside the callback */
	assert_int_equal(tsr_io_writev(io, e->fd, &c.iov, 1, 200 * BS, 0, chain_cb, &c), 0);
	assert_true(tsr_io_submit(io) >= 0);
	wait_all(io);
	assert_int_equal(c.done, 10);
	assert_int_equal(c.errors, 0);
	assert_file(e->fd, 209 * BS, BS, 21);
	tsr_io_destroy(io);
	tsr_free_aligned(c.buf);
}

/* ---- fault injector ---------------------------------------------------- */

static void test_fault_fail(void **state)
{
	struct env *e = env_of(state);
	struct tsr_io *io = make_io(e, 8, "write:2:fail=EIO");
	char *buf = xalloc(3 * BS);
	struct iovec iov[3];
	struct done d[3];

	memset(d, 0, sizeof(d));
	for (int i = 0; i < 3; i++) {
		iov[i] = (struct iovec){ buf + i * BS, BS };
		fill(buf + i * BS, BS, 31, (uint64_t)(300 + i) * BS);
		assert_int_equal(tsr_io_writev(io, e->fd, &iov[i], 1, (uint64_t)(300 + i) * BS, 0,
					       done_cb, &d[i]), 0);
	}
	assert_true(tsr_io_submit(io) >= 0);
	assert_int_equal(d[1].calls, 0); /* even an injected failure waits for poll */
	wait_all(io);
	assert_int_equal(d[0].res, (int)BS);
	assert_int_equal(d[1].calls, 1);
	assert_int_equal(d[1].res, -EIO);
	assert_int_equal(d[2].res, (int)BS);
	assert_int_equal(tsr_io_fault_count(io), 1);
	assert_file(e->fd, 300 * BS, BS, 31);
	assert_file_zero(e->fd, 301 * BS, BS); /* the failed write never reached the disk */
	assert_file(e->fd, 302 * BS, BS, 31);
	tsr_io_destroy(io);
	tsr_free_aligned(buf);
}

static void test_fault_nth_plus_and_fsync(void **state)
{
	struct env *e = env_of(state);
	struct tsr_io *io = make_io(e, 8, "write:2+:fail=ENOSPC,fsync:1:fail=5");
	char *buf = xalloc(BS);
	struct iovec iov = { buf, BS };
	struct done d[4], f1 = { 0 }, f2 = { 0 };

	memset(d, 0, sizeof(d));
	fill(buf, BS, 1, 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(tsr_io_writev(io, e->fd, &iov, 1, (uint64_t)i * BS, 0, done_cb,
					       &d[i]), 0);
	assert_int_equal(tsr_io_fsync(io, e->fd, true, done_cb, &f1), 0);
	assert_int_equal(tsr_io_fsync(io, e->fd, false, done_cb, &f2), 0);
	assert_true(tsr_io_submit(io) >= 0);
	wait_all(io);
	assert_int_equal(d[0].res, (int)BS);
	for (int i = 1; i < 4; i++)
		assert_int_equal(d[i].res, -ENOSPC);
	assert_int_equal(f1.res, -EIO);
	assert_int_equal(f2.calls, 1);
	assert_int_equal(f2.res, 0);
	assert_int_equal(tsr_io_fault_count(io), 4);
	tsr_io_destroy(io);
	tsr_free_aligned(buf);
}

/* short: the backend transfers less, the core resumes, the full data lands. */
static void test_fault_short(void **state)
{
	struct env *e = env_of(state);
	const size_t len = 64 * 1024;
	/* write 1: one element, cut inside it; write 2: four elements, cut inside the 2nd */
	struct tsr_io *io = make_io(e, 8, "write:1:short=4096,write:2:short=20k,read:1:short=8k");
	char *w1 = xalloc(len), *w2 = xalloc(len), *r = xalloc(len);
	struct iovec iov1 = { w1, len }, iov2[4], riov[4];
	struct done d1 = { 0 }, d2 = { 0 }, dr = { 0 };

	for (int i = 0; i < 4; i++) {
		iov2[i] = (struct iovec){ w2 + i * (len / 4), len / 4 };
		riov[i] = (struct iovec){ r + i * (len / 4), len / 4 };
	}
	fill(w1, len, 41, 0);
	fill(w2, len, 42, len);
	assert_int_equal(tsr_io_writev(io, e->fd, &iov1, 1, 0, 0, done_cb, &d1), 0);
	assert_int_equal(tsr_io_writev(io, e->fd, iov2, 4, len, 0, done_cb, &d2), 0);
	assert_true(tsr_io_submit(io) >= 0);
	wait_all(io);
	assert_int_equal(d1.calls, 1);
	assert_int_equal(d1.res, (int)len);
	assert_int_equal(d2.calls, 1);
	assert_int_equal(d2.res, (int)len);
	assert_file(e->fd, 0, len, 41);
	assert_file(e->fd, len, len, 42);

	assert_int_equal(tsr_io_readv(io, e->fd, riov, 4, len, done_cb, &dr), 0);
	assert_true(tsr_io_submit(io) >= 0);
	wait_all(io);
	assert_int_equal(dr.res, (int)len);
	assert_memory_equal(r, w2, len);
	assert_int_equal(tsr_io_fault_count(io), 3);
	tsr_io_destroy(io);
	tsr_free_aligned(w1);
	tsr_free_aligned(w2);
	tsr_free_aligned(r);
}

/* tear: only the first BYTES change on disk, the caller gets -EIO. */
static void test_fault_tear(void **state)
{
	struct env *e = env_of(state);
	const size_t len = 32 * 1024;
	const uint64_t off = 512 * BS;
	struct tsr_io *io = make_io(e, 8, "write:1:tear=8192");
	char *old = xalloc(len), *buf = xalloc(len);
	struct iovec iov[2] = { { buf, BS }, { buf + BS, len - BS } };
	struct done d = { 0 };

	fill(old, len, 51, off);
	assert_int_equal(pwrite(e->fd, old, len, (off_t)off), (ssize_t)len);
	fill(buf, len, 52, off);
	assert_int_equal(tsr_io_writev(io, e->fd, iov, 2, off, 0, done_cb, &d), 0);
	assert_true(tsr_io_submit(io) >= 0);
	wait_all(io);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.res, -EIO);
	assert_int_equal(tsr_io_fault_count(io), 1);
	assert_file(e->fd, off, 8192, 52);
	assert_file(e->fd, off + 8192, len - 8192, 51);
	tsr_io_destroy(io);
	tsr_free_aligned(old);
	tsr_free_aligned(buf);
}

/* delay: completes no sooner than asked, with the right data; the eventfd wakes us. */
static void test_fault_delay(void **state)
{
	struct env *e = env_of(state);
	struct tsr_io *io = make_io(e, 8, "write:1:delay=150,read:1+:delay=50");
	char *buf = xalloc(BS), *r = xalloc(BS);
	struct iovec iov = { buf, BS }, riov = { r, BS };
	struct pollfd pfd = { .fd = tsr_io_event_fd(io), .events = POLLIN };
	struct done w = { 0 }, d = { 0 };
	uint64_t counter;
	int64_t t0;
	int guard = 0;

	fill(buf, BS, 61, 700 * BS);
	t0 = tsr_mono_ms();
	assert_int_equal(tsr_io_writev(io, e->fd, &iov, 1, 700 * BS, 0, done_cb, &w), 0);
	assert_true(tsr_io_submit(io) >= 0);
	/* an epoll-style loop: wait for the eventfd, drain it, poll */
	while (w.calls == 0) {
		assert_int_equal(poll(&pfd, 1, 5000), 1);
		if (read(pfd.fd, &counter, sizeof(counter)) < 0)
			assert_int_equal(errno, EAGAIN);
		assert_true(tsr_io_poll(io, 0, false) >= 0);
		assert_true(++guard < 10000000);
	}
	assert_true(tsr_mono_ms() - t0 >= 150);
	assert_int_equal(w.res, (int)BS);
	assert_file(e->fd, 700 * BS, BS, 61);

	t0 = tsr_mono_ms();
	assert_int_equal(tsr_io_readv(io, e->fd, &riov, 1, 700 * BS, done_cb, &d), 0);
	assert_true(tsr_io_submit(io) >= 0);
	wait_all(io);
	assert_true(tsr_mono_ms() - t0 >= 50);
	assert_int_equal(d.res, (int)BS);
	assert_memory_equal(r, buf, BS);
	assert_int_equal(tsr_io_fault_count(io), 2);
	tsr_io_destroy(io);
	tsr_free_aligned(buf);
	tsr_free_aligned(r);
}

/* "any" counts every kind; destroy waits for completions still held back. */
static void test_fault_any_destroy_held(void **state)
{
	struct env *e = env_of(state);
	struct tsr_io *io = make_io(e, 8, "any:2:fail=EIO,any:3:delay=100");
	char *buf = xalloc(BS), *r = xalloc(BS);
	struct iovec iov = { buf, BS }, riov = { r, BS };
	struct done w = { 0 }, f = { 0 }, d = { 0 };
	int64_t t0;

	fill(buf, BS, 81, 900 * BS);
	assert_int_equal(tsr_io_writev(io, e->fd, &iov, 1, 900 * BS, 0, done_cb, &w), 0);
	assert_true(tsr_io_submit(io) >= 0);
	wait_all(io);
	t0 = tsr_mono_ms();
	assert_int_equal(tsr_io_fsync(io, e->fd, true, done_cb, &f), 0);
	assert_int_equal(tsr_io_readv(io, e->fd, &riov, 1, 900 * BS, done_cb, &d), 0);
	assert_true(tsr_io_submit(io) >= 0);
	assert_int_equal(tsr_io_fault_count(io), 2);
	tsr_io_destroy(io);
	assert_true(tsr_mono_ms() - t0 >= 100);
	assert_int_equal(w.res, (int)BS);
	assert_int_equal(f.calls, 1);
	assert_int_equal(f.res, -EIO);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.res, (int)BS);
	assert_memory_equal(r, buf, BS);
	tsr_free_aligned(buf);
	tsr_free_aligned(r);
}

static void test_fault_bad_spec(void **state)
{
	struct env *e = env_of(state);
	static const char *const bad[] = {
		"", "write", "write:1", "write:1:", "write:0:fail=EIO", "write:x:fail=EIO",
		"write:-1:fail=EIO", "write:1:fail=EWHAT", "write:1:fail=", "write:1:fail=0",
		"write:1:fail=5000", "write:1:explode=3", "write:1:short=abc", "write:1:short=-4",
		"fsync:1:short=4096", "read:1:tear=4096", "fsync:1:tear=4096", "write:1:delay=-1",
		"write:1:delay=5s", ",write:1:fail=EIO", "write:1:fail=EIO,",
		"write:1:fail=EIO,,read:1:fail=EIO", "write:1:fail=EIO:extra", "bogus:1:fail=EIO",
		"write:1++:fail=EIO", "write:+:fail=EIO", "write:1+2:fail=EIO", "Write:1:fail=EIO",
		"write: 1:fail=EIO", "write:99999999999999999999999:fail=EIO",
	};
	static const char *const good[] = {
		"write:3:fail=EIO,read:1+:delay=5", "any:2+:fail=5", "write:1:tear=4k",
		"read:7:short=8192", "any:1:short=0", "fsync:1+:delay=0",
	};
	struct tsr_io_opts opts = { .kind = e->bc->kind };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct tsr_io *io = (struct tsr_io *)&opts; /* must be reset to NULL */

		opts.fault_spec = bad[i];
		if (tsr_io_create(&opts, &io) != -EINVAL || io != NULL)
			fail_msg("spec \"%s\" was not rejected with -EINVAL", bad[i]);
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct tsr_io *io = NULL;

		opts.fault_spec = good[i];
		if (tsr_io_create(&opts, &io) != 0)
			fail_msg("spec \"%s\" was rejected", good[i]);
		assert_int_equal(tsr_io_fault_count(io), 0);
		tsr_io_destroy(io);
	}
}

/* ---- backend choice ---------------------------------------------------- */

static void test_backend_choice(void **state)
{
	struct tsr_io_opts opts = { .kind = TSR_IO_AUTO, .queue_depth = 4 };
	struct tsr_io *io = NULL;
	const char *saved = getenv("TSR_IO_BACKEND");
	char *keep = saved != NULL ? strdup(saved) : NULL;

	if (!g_aio.available)
		skip();
	/* forced libaio */
	setenv("TSR_IO_BACKEND", "libaio", 1);
	assert_int_equal(tsr_io_create(&opts, &io), 0);
	assert_string_equal(tsr_io_name(io), "libaio");
	tsr_io_destroy(io);

	/* forced io_uring */
	setenv("TSR_IO_BACKEND", "io_uring", 1);
	if (g_uring.available) {
		assert_int_equal(tsr_io_create(&opts, &io), 0);
		assert_string_equal(tsr_io_name(io), "io_uring");
		tsr_io_destroy(io);
	}

	/* forced, with a fault spec */
	setenv("TSR_IO_BACKEND", "libaio", 1);
	opts.fault_spec = "read:1:fail=EIO";
	assert_int_equal(tsr_io_create(&opts, &io), 0);
	assert_string_equal(tsr_io_name(io), "fault(libaio)");
	tsr_io_destroy(io);
	opts.fault_spec = NULL;

	setenv("TSR_IO_BACKEND", "bogus", 1);
	io = NULL;
	assert_int_equal(tsr_io_create(&opts, &io), -EINVAL);
	assert_null(io);

	/* AUTO: io_uring when it works, libaio otherwise */
	unsetenv("TSR_IO_BACKEND");
	assert_int_equal(tsr_io_create(&opts, &io), 0);
	assert_string_equal(tsr_io_name(io), g_uring.available ? "io_uring" : "libaio");
	tsr_io_destroy(io);

	/* bad options */
	opts.kind = (enum tsr_io_kind)7;
	assert_int_equal(tsr_io_create(&opts, &io), -EINVAL);
	opts.kind = TSR_IO_AIO;
	opts.queue_depth = 1u << 20;
	assert_int_equal(tsr_io_create(&opts, &io), -EINVAL);

	if (keep != NULL)
		setenv("TSR_IO_BACKEND", keep, 1);
	free(keep);
}

/*
 * AUTO when io_uring is blocked the way container runtimes block it (a
 * seccomp filter failing io_uring_setup with EPERM): libaio, and it works.
 * Runs in a child, which the filter confines.
 */
static int auto_fallback_child(const char *dir)
{
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(filter) / sizeof(filter[0]), .filter = filter };
	struct tsr_io_opts opts = { .kind = TSR_IO_AUTO, .queue_depth = 4 };
	struct tsr_io *io = NULL;
	char path[1100];
	char *buf, *r;
	struct iovec iov, riov;
	struct done w = { 0 }, d = { 0 };
	int fd;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
		return 77;
	/* the filter is what refuses io_uring here, not the tests' switch
	 * (io_uring.c: -ENOSYS before the syscall, which the check below
	 * would take for a filter that does not block) */
	unsetenv("TSR_TEST_IO_URING_UNAVAILABLE");
	opts.kind = TSR_IO_URING;
	if (tsr_io_create(&opts, &io) != -EPERM)
		return 2; /* the filter must really block io_uring */
	opts.kind = TSR_IO_AUTO;
	if (tsr_io_create(&opts, &io) != 0 || strcmp(tsr_io_name(io), "libaio") != 0)
		return 3;
	snprintf(path, sizeof(path), "%s/tsr-io-ut-XXXXXX", dir);
	fd = mkostemp(path, O_DIRECT);
	if (fd < 0)
		return 4;
	unlink(path);
	buf = tsr_alloc_aligned(BS);
	r = tsr_alloc_aligned(BS);
	fill(buf, BS, 71, 0);
	iov = (struct iovec){ buf, BS };
	riov = (struct iovec){ r, BS };
	if (tsr_io_writev(io, fd, &iov, 1, 0, 0, done_cb, &w) != 0 || tsr_io_submit(io) < 0)
		return 5;
	while (tsr_io_inflight(io) > 0)
		tsr_io_poll(io, 0, true);
	if (tsr_io_readv(io, fd, &riov, 1, 0, done_cb, &d) != 0 || tsr_io_submit(io) < 0)
		return 6;
	while (tsr_io_inflight(io) > 0)
		tsr_io_poll(io, 0, true);
	if (w.res != (int)BS || d.res != (int)BS || memcmp(buf, r, BS) != 0)
		return 7;
	tsr_io_destroy(io);
	return 0;
}

static void test_auto_fallback_seccomp(void **state)
{
	const char *saved = getenv("TSR_IO_BACKEND");
	int status;
	pid_t pid;

	if (saved != NULL && strcmp(saved, "auto") != 0)
		skip(); /* a forced backend would bypass AUTO */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(auto_fallback_child(g_dir));
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 77) {
		print_message("skipped: cannot install a seccomp filter\n");
		skip();
	}
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- main -------------------------------------------------------------- */

static void probe(struct backend_case *bc)
{
	struct tsr_io_opts opts = { .kind = bc->kind, .queue_depth = 4 };
	struct tsr_io *io = NULL;
	int ret = tsr_io_create(&opts, &io);

	bc->available = ret == 0;
	if (ret < 0)
		snprintf(bc->why, sizeof(bc->why), "%s", strerror(-ret));
	tsr_io_destroy(io);
}

#define BOTH(f)                                                          \
	{ "io_uring/" #f, f, setup, teardown, &g_uring, },               \
	{ "libaio/" #f, f, setup, teardown, &g_aio, }

int main(void)
{
	const struct CMUnitTest tests[] = {
		BOTH(test_write_read),
		BOTH(test_qd64_random),
		BOTH(test_fua_write),
		BOTH(test_fsync),
		BOTH(test_fsync_unsupported_file),
		BOTH(test_queue_full),
		BOTH(test_bad_args),
		BOTH(test_read_past_eof),
		BOTH(test_event_fd),
		BOTH(test_destroy_inflight),
		BOTH(test_callback_requeue),
		BOTH(test_fault_fail),
		BOTH(test_fault_nth_plus_and_fsync),
		BOTH(test_fault_short),
		BOTH(test_fault_tear),
		BOTH(test_fault_delay),
		BOTH(test_fault_any_destroy_held),
		BOTH(test_fault_bad_spec),
		cmocka_unit_test(test_backend_choice),
		cmocka_unit_test(test_auto_fallback_seccomp),
	};

	if (io_test_find_direct_dir(g_dir, sizeof(g_dir)) < 0) {
		fprintf(stderr, "skipped: no directory with O_DIRECT support (set TSR_TEST_DIR)\n");
		return 77;
	}
	/* the tests choose backends explicitly; AUTO is tested on its own */
	probe(&g_uring);
	probe(&g_aio);
	if (!g_uring.available)
		fprintf(stderr, "note: io_uring tests skipped: %s\n", g_uring.why);
	if (!g_aio.available) {
		fprintf(stderr, "skipped: libaio unavailable: %s\n", g_aio.why);
		return 77;
	}
	tsr_log_set_level(TSR_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
