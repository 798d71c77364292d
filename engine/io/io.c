/*
 * The core of the I/O layer: the tsr_io_* functions of include/tessera/io.h.
 *
 * It picks and creates the backend (io_uring, libaio, optionally wrapped by
 * the fault injector), checks every request's arguments, keeps the per-op
 * request objects on a free list allocated once at creation (no malloc and no
 * lock per I/O), and resumes short reads and writes so that callers only ever
 * see the full length or -errno.  It is the only code that calls through a
 * struct tsr_io_backend table.
 *
 * A context belongs to one thread; nothing here locks.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/common.h"
#include "tessera/io.h"
#include "internal.h"

/* One caller operation, from its queueing call to its callback. */
struct io_req {
	struct io_req_hook hook;   /* what the backend sees; must stay first */
	struct tsr_io *io;         /* owning context */
	tsr_io_cb cb_fn;           /* caller's callback, NULL while free */
	void *cb_arg;
	const struct iovec *user_iov; /* caller's array, never modified */
	int user_iovcnt;
	uint64_t user_offset;
	size_t total;              /* bytes the caller asked for */
	size_t done;               /* bytes transferred so far */
	/* Resume position: element index and bytes already done inside it. */
	int pos_idx;
	size_t pos_off;
	size_t submitted_len;      /* bytes of the backend op now in flight */
	struct iovec head;         /* rest of a partly done element, when resuming */
	struct io_req *next_free;  /* free list link */
};

struct tsr_io {
	const struct tsr_io_backend *backend; /* fault injector or a real backend */
	void *ctx;                 /* backend context */
	char name[32];             /* "io_uring", "fault(libaio)", ... */
	unsigned queue_depth;      /* size of reqs[] */
	struct io_req *reqs;       /* all request objects, allocated once */
	struct io_req *free_reqs;  /* free list through next_free */
	unsigned inflight;         /* requests queued or in flight */
	unsigned unsubmitted;      /* queued since the last submit (resumes included) */
	unsigned callbacks_run;    /* callbacks run by the current tsr_io_poll */
	bool polling;              /* inside tsr_io_poll: forbids recursion */
};

const struct tsr_io_backend *io_backend_of(const struct tsr_io *io)
{
	return io->backend;
}

void *io_backend_ctx(const struct tsr_io *io)
{
	return io->ctx;
}

static const char *op_name(enum tsr_io_op op)
{
	switch (op) {
	case TSR_IO_OP_READ:
		return "read";
	case TSR_IO_OP_WRITE:
		return "write";
	case TSR_IO_OP_FSYNC:
		return "fsync";
	case TSR_IO_OP_FDATASYNC:
		return "fdatasync";
	}
	return "?";
}

/* Point the backend request at what is left after pos_idx/pos_off. */
static void set_remainder(struct io_req *r)
{
	struct tsr_io_req *req = &r->hook.req;
	const struct iovec *cur = &r->user_iov[r->pos_idx];

	req->offset = r->user_offset + r->done;
	if (r->pos_off == 0) {
		/* On an element boundary: the caller's array can be used as is. */
		req->iov = cur;
		req->iovcnt = r->user_iovcnt - r->pos_idx;
		r->submitted_len = r->total - r->done;
	} else {
		/*
		 * Inside an element: send only its rest, without copying the
		 * caller's array; the next resume continues on a boundary.
		 */
		r->head.iov_base = (char *)cur->iov_base + r->pos_off;
		r->head.iov_len = cur->iov_len - r->pos_off;
		req->iov = &r->head;
		req->iovcnt = 1;
		r->submitted_len = r->head.iov_len;
	}
}

/* Advance the resume position by n bytes (n <= what is left). */
static void advance(struct io_req *r, size_t n)
{
	r->done += n;
	while (n > 0 || (r->pos_idx < r->user_iovcnt &&
			 r->user_iov[r->pos_idx].iov_len == r->pos_off)) {
		size_t left = r->user_iov[r->pos_idx].iov_len - r->pos_off;

		if (n < left) {
			r->pos_off += n;
			return;
		}
		n -= left;
		r->pos_idx++;
		r->pos_off = 0;
		if (r->pos_idx == r->user_iovcnt)
			return;
	}
}

static void req_finish(struct io_req *r, int res)
{
	struct tsr_io *io = r->io;
	tsr_io_cb cb_fn = r->cb_fn;
	void *cb_arg = r->cb_arg;

	/* Free before the callback so that it may queue a new operation. */
	r->cb_fn = NULL;
	r->next_free = io->free_reqs;
	io->free_reqs = r;
	io->inflight--;
	io->callbacks_run++;
	cb_fn(cb_arg, res);
}

/* hook->done of core requests: resume a short transfer or call back. */
static void req_done(struct io_req_hook *hook, int res)
{
	struct io_req *r = container_of(hook, struct io_req, hook);
	struct tsr_io_req *req = &hook->req;
	struct tsr_io *io = r->io;
	int ret;

	if (res < 0 || req->op == TSR_IO_OP_FSYNC || req->op == TSR_IO_OP_FDATASYNC) {
		req_finish(r, res);
		return;
	}
	if ((size_t)res > r->submitted_len) {
		tsr_error("%s: fd %d offset %" PRIu64 ": backend %s reported %d bytes of %zu",
			  op_name(req->op), req->fd, req->offset, io->name, res,
			  r->submitted_len);
		req_finish(r, -EIO);
		return;
	}
	if (res == 0) {
		tsr_warn("%s: fd %d offset %" PRIu64 ": unexpected end of file, %zu of %zu bytes done",
			 op_name(req->op), req->fd, req->offset, r->done, r->total);
		req_finish(r, -EIO);
		return;
	}
	advance(r, (size_t)res);
	if (r->done == r->total) {
		req_finish(r, (int)r->total);
		return;
	}
	set_remainder(r);
	hook->resumed = true;
	ret = io->backend->queue(io->ctx, req);
	if (ret < 0) {
		tsr_error("%s: fd %d offset %" PRIu64 ": cannot resume short transfer: %s",
			  op_name(req->op), req->fd, req->offset, strerror(-ret));
		req_finish(r, ret);
		return;
	}
	io->unsubmitted++;
}

void tsr_io_req_complete(struct tsr_io_req *req, int res)
{
	struct io_req_hook *hook = io_req_hook_of(req);

	hook->done(hook, res);
}

/* Allocate a request and hand it to the backend.  0 or -errno. */
static int io_queue(struct tsr_io *io, enum tsr_io_op op, int fd, const struct iovec *iov,
		    int iovcnt, uint64_t offset, unsigned flags, tsr_io_cb cb_fn, void *cb_arg)
{
	struct io_req *r;
	size_t total = 0;
	int ret;

	if (io == NULL || fd < 0 || cb_fn == NULL)
		return -EINVAL;
	if (op == TSR_IO_OP_READ || op == TSR_IO_OP_WRITE) {
		if (iov == NULL || iovcnt < 1 || iovcnt > IOV_MAX)
			return -EINVAL;
		for (int i = 0; i < iovcnt; i++) {
			if (iov[i].iov_len > INT_MAX - total)
				return -EINVAL; /* the result must fit an int */
			total += iov[i].iov_len;
		}
		/* zero length has no meaning; the end must fit an off_t */
		if (total == 0 || offset > (uint64_t)INT64_MAX - total)
			return -EINVAL;
	}
	r = io->free_reqs;
	if (r == NULL)
		return -EAGAIN;

	r->hook.req.op = op;
	r->hook.req.fd = fd;
	r->hook.req.flags = flags;
	r->hook.req.backend_data = NULL;
	r->hook.resumed = false;
	r->cb_fn = cb_fn;
	r->cb_arg = cb_arg;
	r->user_iov = iov;
	r->user_iovcnt = iovcnt;
	r->user_offset = offset;
	r->total = total;
	r->done = 0;
	r->pos_idx = 0;
	r->pos_off = 0;
	if (total > 0) {
		advance(r, 0); /* skip leading empty elements */
		set_remainder(r);
	} else {
		r->hook.req.iov = NULL;
		r->hook.req.iovcnt = 0;
		r->hook.req.offset = 0;
		r->submitted_len = 0;
	}

	ret = io->backend->queue(io->ctx, &r->hook.req);
	if (ret < 0) {
		r->cb_fn = NULL;
		return ret;
	}
	io->free_reqs = r->next_free;
	io->inflight++;
	io->unsubmitted++;
	return 0;
}

int tsr_io_readv(struct tsr_io *io, int fd, const struct iovec *iov, int iovcnt,
		 uint64_t offset, tsr_io_cb cb_fn, void *cb_arg)
{
	return io_queue(io, TSR_IO_OP_READ, fd, iov, iovcnt, offset, 0, cb_fn, cb_arg);
}

int tsr_io_writev(struct tsr_io *io, int fd, const struct iovec *iov, int iovcnt,
		  uint64_t offset, unsigned flags, tsr_io_cb cb_fn, void *cb_arg)
{
	if (flags & ~TSR_IO_FUA)
		return -EINVAL;
	return io_queue(io, TSR_IO_OP_WRITE, fd, iov, iovcnt, offset, flags, cb_fn, cb_arg);
}

int tsr_io_fsync(struct tsr_io *io, int fd, bool datasync, tsr_io_cb cb_fn, void *cb_arg)
{
	return io_queue(io, datasync ? TSR_IO_OP_FDATASYNC : TSR_IO_OP_FSYNC, fd, NULL, 0, 0,
			0, cb_fn, cb_arg);
}

int tsr_io_submit(struct tsr_io *io)
{
	int ret;

	ret = io->backend->submit(io->ctx);
	if (ret >= 0)
		io->unsubmitted = 0;
	return ret;
}

int tsr_io_poll(struct tsr_io *io, unsigned max, bool wait)
{
	int ret = 0;

	if (io->polling)
		return -EBUSY; /* called from a callback */
	io->polling = true;
	io->callbacks_run = 0;
	/* Waiting for operations nobody submitted would never end. */
	if (wait && io->unsubmitted > 0) {
		ret = tsr_io_submit(io);
		if (ret < 0)
			goto out;
	}
	for (;;) {
		unsigned budget = 0;

		if (max > 0) {
			if (io->callbacks_run >= max)
				break;
			budget = max - io->callbacks_run;
		}
		ret = io->backend->reap(io->ctx, budget, wait && io->callbacks_run == 0 &&
					io->inflight > 0);
		if (ret < 0)
			break;
		/* Remainders of short transfers queued by req_done go out now. */
		if (io->unsubmitted > 0) {
			int sret = tsr_io_submit(io);

			if (sret < 0)
				tsr_warn("%s: submit resumed transfers: %s (retried on next submit)",
					 io->name, strerror(-sret));
		}
		/* Only resumptions completed: a waiting caller waits on. */
		if (!wait || ret == 0 || io->callbacks_run > 0 || io->inflight == 0)
			break;
	}
out:
	io->polling = false;
	if (ret < 0 && io->callbacks_run == 0)
		return ret;
	return (int)io->callbacks_run;
}

unsigned tsr_io_inflight(const struct tsr_io *io)
{
	return io->inflight;
}

unsigned tsr_io_unsubmitted(const struct tsr_io *io)
{
	return io->unsubmitted;
}

int tsr_io_event_fd(const struct tsr_io *io)
{
	return io->backend->event_fd(io->ctx);
}

bool tsr_io_completions_ready(const struct tsr_io *io)
{
	return io->backend->completions_ready != NULL &&
	       io->backend->completions_ready(io->ctx);
}

const char *tsr_io_name(const struct tsr_io *io)
{
	return io->name;
}

bool tsr_io_buffered_reads_async(const struct tsr_io *io)
{
	return io->backend->buffered_reads_async != NULL &&
	       io->backend->buffered_reads_async(io->ctx);
}

/* TSR_IO_BACKEND=io_uring|libaio|auto chooses the backend for TSR_IO_AUTO. */
static int kind_from_env(enum tsr_io_kind *kind)
{
	const char *env = getenv("TSR_IO_BACKEND");

	if (env == NULL || *env == '\0' || strcmp(env, "auto") == 0)
		return 0;
	if (strcmp(env, "io_uring") == 0) {
		*kind = TSR_IO_URING;
		return 0;
	}
	if (strcmp(env, "libaio") == 0) {
		*kind = TSR_IO_AIO;
		return 0;
	}
	tsr_error("io: TSR_IO_BACKEND=%s: expected io_uring, libaio or auto", env);
	return -EINVAL;
}

/* Create the backend context for kind (wrapped by the fault injector if asked). */
static int create_backend(struct tsr_io *io, const struct tsr_io_backend *real,
			  const struct tsr_io_opts *opts)
{
	int ret;

	if (opts->fault_spec != NULL) {
		ret = tsr_io_fault_create(real, opts, &io->ctx);
		if (ret < 0)
			return ret;
		io->backend = &tsr_io_fault_backend;
		snprintf(io->name, sizeof(io->name), "fault(%s)", real->name);
		return 0;
	}
	ret = real->create(opts, &io->ctx);
	if (ret < 0)
		return ret;
	io->backend = real;
	snprintf(io->name, sizeof(io->name), "%s", real->name);
	return 0;
}

int tsr_io_create(const struct tsr_io_opts *opts, struct tsr_io **out)
{
	struct tsr_io_opts o;
	struct tsr_io *io;
	int ret;

	*out = NULL;
	if (opts == NULL || opts->kind > TSR_IO_AIO || opts->queue_depth > IO_MAX_QUEUE_DEPTH)
		return -EINVAL;
	o = *opts;
	if (o.queue_depth == 0)
		o.queue_depth = IO_DEFAULT_QUEUE_DEPTH;
	if (o.kind == TSR_IO_AUTO) {
		ret = kind_from_env(&o.kind);
		if (ret < 0)
			return ret;
	}
	if (o.fault_spec != NULL) {
		ret = fault_spec_validate(o.fault_spec);
		if (ret < 0)
			return ret;
	}

	io = calloc(1, sizeof(*io));
	if (io == NULL)
		return -ENOMEM;
	io->queue_depth = o.queue_depth;
	io->reqs = calloc(o.queue_depth, sizeof(*io->reqs));
	if (io->reqs == NULL) {
		ret = -ENOMEM;
		goto err;
	}
	for (unsigned i = o.queue_depth; i-- > 0;) {
		io->reqs[i].io = io;
		io->reqs[i].hook.done = req_done;
		io->reqs[i].next_free = io->free_reqs;
		io->free_reqs = &io->reqs[i];
	}

	switch (o.kind) {
	case TSR_IO_AUTO:
		ret = create_backend(io, &tsr_io_uring_backend, &o);
		if (ret < 0) {
			tsr_warn("io: io_uring unavailable (%s), falling back to libaio",
				 strerror(-ret));
			ret = create_backend(io, &tsr_io_aio_backend, &o);
		}
		break;
	case TSR_IO_URING:
		ret = create_backend(io, &tsr_io_uring_backend, &o);
		break;
	case TSR_IO_AIO:
		ret = create_backend(io, &tsr_io_aio_backend, &o);
		break;
	}
	if (ret < 0)
		goto err;
	*out = io;
	return 0;
err:
	tsr_io_destroy(io);
	return ret;
}

/* Not from a callback of io: destroying inside tsr_io_poll would free under it. */
void tsr_io_destroy(struct tsr_io *io)
{
	if (io == NULL)
		return;
	if (io->polling) {
		tsr_error("%s: destroy called from a completion callback: ignored (leaks)",
			  io->name);
		return;
	}
	if (io->backend != NULL) {
		while (io->inflight > 0) {
			int ret = tsr_io_poll(io, 0, true);

			if (ret < 0 && ret != -EINTR) {
				tsr_error("%s: destroy: reaping %u in-flight operations: %s",
					  io->name, io->inflight, strerror(-ret));
				break;
			}
		}
		io->backend->destroy(io->ctx);
	}
	free(io->reqs);
	free(io);
}
