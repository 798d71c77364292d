/*
 * io_uring backend (liburing): the default I/O backend.
 *
 * One ring per context, owned by the context's thread.  queue() only fills an
 * SQE (no system call); submit() hands every queued SQE to the kernel with a
 * single io_uring_submit(); reap() walks the CQ ring in user space and only
 * enters the kernel to wait.  An eventfd registered on the ring is signalled
 * on every completion, for the owner's epoll loop.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <liburing.h>

#include "tessera/common.h"
#include "tessera/test_hook.h"
#include "internal.h"

struct uring_ctx {
	struct io_uring ring;
	bool ring_ready;     /* ring set up: io_uring_queue_exit() needed */
	int event_fd;        /* registered eventfd, -1 until created */
	bool evfd_async;     /* signalled for io-wq completions only */
	unsigned inflight;   /* SQEs queued and not yet reaped */
};

static void uring_destroy(void *ctx)
{
	struct uring_ctx *c = ctx;

	if (c == NULL)
		return;
	if (c->ring_ready)
		io_uring_queue_exit(&c->ring);
	if (c->event_fd >= 0)
		close(c->event_fd);
	free(c);
}

static int uring_create(const struct tsr_io_opts *opts, void **ctx_out)
{
	struct uring_ctx *c;
	bool coop;
	int ret;

	/* Tests only: TSR_TEST_IO_URING_UNAVAILABLE=1 fails the setup as a
	 * kernel or a seccomp profile without io_uring does (--io auto then
	 * falls back to libaio, io.c) */
	if (tsr_test_env_on("TSR_TEST_IO_URING_UNAVAILABLE")) {
		tsr_debug("io_uring: TSR_TEST_IO_URING_UNAVAILABLE set: setup refused");
		return -ENOSYS;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	c->event_fd = -1;

	/*
	 * SUBMIT_ALL (5.18): one bad SQE does not stop the rest of a batch.
	 * Older kernels reject the flag; plain setup behaves the same for us
	 * because the rest is submitted by the next io_uring_submit().
	 * COOP_TASKRUN (5.19): completions do not interrupt the worker with an
	 * IPI while it runs; they are posted at its next kernel entry, which
	 * every loop pass makes (and a sleeping worker is still woken).
	 */
	ret = io_uring_queue_init(opts->queue_depth, &c->ring,
				  IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN);
	coop = ret == 0;
	if (ret == -EINVAL)
		ret = io_uring_queue_init(opts->queue_depth, &c->ring, IORING_SETUP_SUBMIT_ALL);
	if (ret == -EINVAL)
		ret = io_uring_queue_init(opts->queue_depth, &c->ring, 0);
	if (ret < 0) {
		/* io.c logs the fallback; say here why the ring failed */
		tsr_debug("io_uring: io_uring_queue_init(%u): %s", opts->queue_depth,
			  strerror(-ret));
		goto err;
	}
	c->ring_ready = true;

	c->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->event_fd < 0) {
		ret = -errno;
		tsr_error("io_uring: eventfd: %s", strerror(-ret));
		goto err;
	}
	/*
	 * Where COOP_TASKRUN exists (5.19; disk completions come as task
	 * work to the submitting thread since 5.x before it), a completion's
	 * task work wakes the worker out of epoll_wait (EINTR) and is posted
	 * when that returns, so an eventfd signal for it too only cost a
	 * read() of the eventfd per batch of completions (1.7 us a system
	 * call on the bench VM; ARCHITECTURE.md, "Performance as measured",
	 * per-request counts).  Registered async, the eventfd is signalled only by
	 * io-wq workers (punted fsyncs, buffered I/O), which never interrupt
	 * the worker; the loop checks completions_ready before it blocks.
	 * Only for an owner that asked (opts->lazy_event_fd: the worker
	 * loop); TSR_IO_URING_EVFD_ALL=1 registers it for every completion
	 * even then (A/B).
	 */
	if (coop && opts->lazy_event_fd && !tsr_test_env_on("TSR_IO_URING_EVFD_ALL")) {
		ret = io_uring_register_eventfd_async(&c->ring, c->event_fd);
		c->evfd_async = ret == 0;
	}
	if (!c->evfd_async)
		ret = io_uring_register_eventfd(&c->ring, c->event_fd);
	if (ret < 0) {
		tsr_error("io_uring: register eventfd: %s", strerror(-ret));
		goto err;
	}
	*ctx_out = c;
	return 0;
err:
	uring_destroy(c);
	return ret;
}

static int uring_queue(void *ctx, struct tsr_io_req *req)
{
	struct uring_ctx *c = ctx;
	struct io_uring_sqe *sqe;

	sqe = io_uring_get_sqe(&c->ring);
	if (sqe == NULL) {
		/* SQ full: send what is there, which frees the slots */
		int ret = io_uring_submit(&c->ring);

		if (ret < 0)
			return ret;
		sqe = io_uring_get_sqe(&c->ring);
		if (sqe == NULL)
			return -EAGAIN;
	}
	switch (req->op) {
	case TSR_IO_OP_READ:
		io_uring_prep_readv(sqe, req->fd, req->iov, (unsigned)req->iovcnt, req->offset);
		break;
	case TSR_IO_OP_WRITE:
		io_uring_prep_writev2(sqe, req->fd, req->iov, (unsigned)req->iovcnt, req->offset,
				      (req->flags & TSR_IO_FUA) ? RWF_DSYNC : 0);
		break;
	case TSR_IO_OP_FSYNC:
		io_uring_prep_fsync(sqe, req->fd, 0);
		break;
	case TSR_IO_OP_FDATASYNC:
		io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC);
		break;
	}
	io_uring_sqe_set_data(sqe, req);
	c->inflight++;
	return 0;
}

static int uring_submit(void *ctx)
{
	struct uring_ctx *c = ctx;

	return io_uring_submit(&c->ring);
}

static int uring_reap(void *ctx, unsigned max, bool wait)
{
	struct uring_ctx *c = ctx;
	struct io_uring_cqe *cqe;
	unsigned n = 0;
	int ret;

	while (max == 0 || n < max) {
		struct tsr_io_req *req;
		int res;

		ret = io_uring_peek_cqe(&c->ring, &cqe);
		if (ret == -EAGAIN) {
			if (!wait || n > 0 || c->inflight == 0)
				break;
			/*
			 * Submit too: SQEs a failed submit left in the SQ would
			 * otherwise never complete and we would wait forever.
			 */
			ret = io_uring_submit_and_wait(&c->ring, 1);
			if (ret >= 0 || ret == -EINTR)
				continue;
		}
		if (ret < 0)
			return n > 0 ? (int)n : ret;
		req = io_uring_cqe_get_data(cqe);
		res = cqe->res;
		/*
		 * Consume the CQE before the completion runs: its callback may
		 * queue and submit new work, which is safe on a consumed ring.
		 */
		io_uring_cqe_seen(&c->ring, cqe);
		c->inflight--;
		n++;
		tsr_io_req_complete(req, res);
	}
	return (int)n;
}

static bool uring_completions_ready(void *ctx)
{
	struct uring_ctx *c = ctx;

	/* an overflowed CQ: peek (reap) flushes the overflow into the ring */
	return c->evfd_async &&
	       (io_uring_cq_ready(&c->ring) > 0 || io_uring_cq_has_overflow(&c->ring));
}

static int uring_event_fd(void *ctx)
{
	struct uring_ctx *c = ctx;

	return c->event_fd;
}

/* A buffered read that misses the cache waits for its pages in the kernel
 * (async buffered reads, Linux 5.9; an io-wq worker before), never in
 * io_uring_submit. */
static bool uring_buffered_reads_async(void *ctx)
{
	(void)ctx;
	return true;
}

const struct tsr_io_backend tsr_io_uring_backend = {
	.name = "io_uring",
	.create = uring_create,
	.destroy = uring_destroy,
	.queue = uring_queue,
	.submit = uring_submit,
	.reap = uring_reap,
	.event_fd = uring_event_fd,
	.buffered_reads_async = uring_buffered_reads_async,
	.completions_ready = uring_completions_ready,
};
