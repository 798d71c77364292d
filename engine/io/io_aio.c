/*
 * libaio backend: Linux native AIO, for hosts where io_uring cannot be set up
 * (seccomp profiles of containers, kernel.io_uring_disabled).
 *
 * queue() fills a preallocated iocb and appends it to the pending array;
 * submit() hands the whole array to one io_submit(); reap() collects events
 * with io_getevents() (libaio reads the completion ring in user space when not
 * asked to wait).  Every iocb carries IOCB_FLAG_RESFD so the context's eventfd
 * is signalled on completion.
 *
 * fsync: some kernels (before 4.18) and some files (those without ->fsync)
 * reject IOCB_CMD_FSYNC / IOCB_CMD_FDSYNC with EINVAL at io_submit().  Such a
 * request is then performed synchronously with fsync()/fdatasync() inside
 * reap() and completed with its result.  That blocks the owning thread for
 * the duration of the flush: acceptable only because it is the fallback of
 * the fallback backend.  The decision is per request (a context may serve
 * files on different file systems); on those old kernels it costs one failed
 * io_submit() per fsync.  Requests io_submit() rejects for any other reason
 * also complete from reap() with the error, keeping the async contract.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <libaio.h>

#include "tessera/common.h"
#include "internal.h"

/* One iocb and what to do with it. */
struct aio_slot {
	struct iocb iocb;            /* iocb.data points back to this slot */
	struct tsr_io_req *req;      /* request being served, NULL while free */
	bool sync_fsync;             /* on the local list: run fsync in reap() */
	int res;                     /* on the local list, !sync_fsync: result */
	struct aio_slot *next;       /* free list or local list link */
};

struct aio_ctx {
	io_context_t aio;            /* kernel AIO context */
	bool aio_ready;              /* io_setup done: io_destroy() needed */
	int event_fd;                /* signalled per completion, -1 until created */
	unsigned depth;              /* slots, pending and events capacity */
	struct aio_slot *slots;      /* all slots, allocated once */
	struct aio_slot *free_slots;
	struct iocb **pending;       /* queued, not yet accepted by io_submit() */
	unsigned npending;
	struct io_event *events;     /* io_getevents() buffer */
	/* Completions decided in user space, run by reap() in order. */
	struct aio_slot *local_head, *local_tail;
	unsigned inflight;           /* accepted by the kernel, not yet reaped */
};

static void aio_destroy(void *ctx)
{
	struct aio_ctx *c = ctx;

	if (c == NULL)
		return;
	if (c->aio_ready)
		io_destroy(c->aio); /* waits for anything still in flight */
	if (c->event_fd >= 0)
		close(c->event_fd);
	free(c->slots);
	free(c->pending);
	free(c->events);
	free(c);
}

static int aio_create(const struct tsr_io_opts *opts, void **ctx_out)
{
	struct aio_ctx *c;
	int ret;

	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	c->event_fd = -1;
	c->depth = opts->queue_depth;
	c->slots = calloc(c->depth, sizeof(*c->slots));
	c->pending = calloc(c->depth, sizeof(*c->pending));
	c->events = calloc(c->depth, sizeof(*c->events));
	if (c->slots == NULL || c->pending == NULL || c->events == NULL) {
		ret = -ENOMEM;
		goto err;
	}
	for (unsigned i = c->depth; i-- > 0;) {
		c->slots[i].next = c->free_slots;
		c->free_slots = &c->slots[i];
	}

	ret = io_setup((int)c->depth, &c->aio);
	if (ret < 0) {
		tsr_error("libaio: io_setup(%u): %s%s", c->depth, strerror(-ret),
			  ret == -EAGAIN ? " (raise fs.aio-max-nr or lower the queue depth)" : "");
		goto err;
	}
	c->aio_ready = true;

	c->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->event_fd < 0) {
		ret = -errno;
		tsr_error("libaio: eventfd: %s", strerror(-ret));
		goto err;
	}
	*ctx_out = c;
	return 0;
err:
	aio_destroy(c);
	return ret;
}

static void signal_event_fd(struct aio_ctx *c)
{
	uint64_t one = 1;

	/* EAGAIN only when the counter is saturated: it is readable anyway */
	if (write(c->event_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		tsr_warn("libaio: signal eventfd: %s", strerror(errno));
}

/* Put a slot on the local completion list; reap() completes it. */
static void complete_locally(struct aio_ctx *c, struct aio_slot *s)
{
	s->next = NULL;
	if (c->local_tail != NULL)
		c->local_tail->next = s;
	else
		c->local_head = s;
	c->local_tail = s;
	signal_event_fd(c);
}

static int aio_queue(void *ctx, struct tsr_io_req *req)
{
	struct aio_ctx *c = ctx;
	struct aio_slot *s = c->free_slots;
	struct iocb *iocb;

	if (s == NULL)
		return -EAGAIN;
	c->free_slots = s->next;
	s->req = req;
	s->sync_fsync = false;
	iocb = &s->iocb;

	switch (req->op) {
	case TSR_IO_OP_READ:
		io_prep_preadv(iocb, req->fd, req->iov, req->iovcnt, (long long)req->offset);
		break;
	case TSR_IO_OP_WRITE:
		io_prep_pwritev(iocb, req->fd, req->iov, req->iovcnt, (long long)req->offset);
		if (req->flags & TSR_IO_FUA)
			iocb->aio_rw_flags = RWF_DSYNC;
		break;
	case TSR_IO_OP_FSYNC:
		io_prep_fsync(iocb, req->fd);
		break;
	case TSR_IO_OP_FDATASYNC:
		io_prep_fdsync(iocb, req->fd);
		break;
	}
	io_set_eventfd(iocb, c->event_fd); /* after prep, which clears the iocb */
	iocb->data = s;
	c->pending[c->npending++] = iocb;
	return 0;
}

static int aio_submit(void *ctx)
{
	struct aio_ctx *c = ctx;
	unsigned done = 0;
	int submitted = 0;

	while (done < c->npending) {
		struct aio_slot *s;
		int ret;

		ret = io_submit(c->aio, (long)(c->npending - done), c->pending + done);
		if (ret > 0) {
			done += (unsigned)ret;
			c->inflight += (unsigned)ret;
			submitted += ret;
			continue;
		}
		if (ret == -EINTR)
			continue;
		if (ret == 0 || ret == -EAGAIN)
			break; /* out of kernel resources: retried by the next submit */

		/* io_submit() rejected the first iocb: complete it with why */
		s = c->pending[done]->data;
		done++;
		if (ret == -EINVAL && (s->req->op == TSR_IO_OP_FSYNC ||
				       s->req->op == TSR_IO_OP_FDATASYNC)) {
			tsr_debug("libaio: fd %d: aio fsync rejected, flushing synchronously",
				  s->req->fd);
			s->sync_fsync = true;
		} else {
			s->res = ret;
		}
		complete_locally(c, s);
	}
	if (done > 0) {
		memmove(c->pending, c->pending + done, (c->npending - done) * sizeof(*c->pending));
		c->npending -= done;
	}
	return submitted;
}

static void slot_complete(struct aio_ctx *c, struct aio_slot *s, int res)
{
	struct tsr_io_req *req = s->req;

	/* Free first: the completion may queue a resume into this slot. */
	s->req = NULL;
	s->next = c->free_slots;
	c->free_slots = s;
	tsr_io_req_complete(req, res);
}

static int aio_reap(void *ctx, unsigned max, bool wait)
{
	struct aio_ctx *c = ctx;
	unsigned n = 0;

	/* iocbs an earlier io_submit() left behind (kernel out of resources) */
	if (c->npending > 0)
		aio_submit(c);

	while (c->local_head != NULL && (max == 0 || n < max)) {
		struct aio_slot *s = c->local_head;
		int res = s->res;

		c->local_head = s->next;
		if (c->local_head == NULL)
			c->local_tail = NULL;
		if (s->sync_fsync) {
			int fd = s->req->fd;
			int ret = s->req->op == TSR_IO_OP_FSYNC ? fsync(fd) : fdatasync(fd);

			res = ret < 0 ? -errno : 0;
		}
		n++;
		slot_complete(c, s, res);
	}

	while (c->inflight > 0 && (max == 0 || n < max)) {
		struct timespec zero = { 0, 0 };
		unsigned want = c->depth;
		long min_nr = (wait && n == 0) ? 1 : 0;
		int ret;

		if (max > 0 && max - n < want)
			want = max - n;
		/* a zero timeout lets libaio read the ring without a system call */
		ret = io_getevents(c->aio, min_nr, (long)want, c->events, min_nr ? NULL : &zero);
		if (ret == -EINTR)
			continue;
		if (ret < 0)
			return n > 0 ? (int)n : ret;
		c->inflight -= (unsigned)ret;
		for (int i = 0; i < ret; i++) {
			struct aio_slot *s = c->events[i].data;

			n++;
			slot_complete(c, s, (int)(long)c->events[i].res);
		}
		break;
	}
	return (int)n;
}

static int aio_event_fd(void *ctx)
{
	struct aio_ctx *c = ctx;

	return c->event_fd;
}

const struct tsr_io_backend tsr_io_aio_backend = {
	.name = "libaio",
	.create = aio_create,
	.destroy = aio_destroy,
	.queue = aio_queue,
	.submit = aio_submit,
	.reap = aio_reap,
	.event_fd = aio_event_fd,
};
