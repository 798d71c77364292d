/*
 * NBD targets through libnbd's asynchronous API: one handle (one
 * connection) per job thread, nbd_aio_pread/pwrite with a completion
 * callback per I/O, and nbd_poll to move the state machine.  Completions run
 * inside reap(), on the job's thread, as the engine contract requires.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "bench.h"

/* Where libnbd's completion callbacks find their I/O and target. */
struct nbd_cb_ctx {
	struct bench_target *t;
	struct bench_io *io;
};

struct bench_target {
	struct nbd_handle *nbd;
	unsigned inflight;        /* commands sent whose callback has not run */
	bench_complete_fn cb_fn;
	void *cb_arg;
	struct nbd_cb_ctx *ctx;   /* one per slot: no allocation per I/O */
	char errbuf[512];
};

static void nbd_close_target(struct bench_target *t)
{
	if (t == NULL)
		return;
	if (t->nbd) {
		/* orderly NBD_CMD_DISC so the server sees a clean goodbye */
		if (nbd_aio_is_ready(t->nbd))
			nbd_shutdown(t->nbd, 0);
		nbd_close(t->nbd);
	}
	free(t->ctx);
	free(t);
}

static int nbd_open_target(struct bench_target **tp, const char *uri, unsigned depth, void *bufs,
			   size_t buf_len, uint64_t min_size, uint64_t *size,
			   bench_complete_fn cb_fn, void *cb_arg, char *err, size_t errlen)
{
	struct bench_target *t = calloc(1, sizeof(*t));
	int64_t sz;
	int ret;

	if (t == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	t->cb_fn = cb_fn;
	t->cb_arg = cb_arg;
	(void)bufs;
	(void)buf_len;
	t->ctx = calloc(depth, sizeof(*t->ctx));
	if (t->ctx == NULL) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto err;
	}
	for (unsigned i = 0; i < depth; i++)
		t->ctx[i].t = t;
	t->nbd = nbd_create();
	if (t->nbd == NULL) {
		ret = -ENOMEM;
		snprintf(err, errlen, "cannot create an nbd handle: %s", nbd_get_error());
		goto err;
	}
	/* the benchmark overwrites every read buffer: skip libnbd's memset */
	nbd_set_pread_initialize(t->nbd, false);
	if (nbd_connect_uri(t->nbd, uri) == -1) {
		ret = nbd_get_errno() ? -nbd_get_errno() : -ECONNREFUSED;
		snprintf(err, errlen, "cannot connect to %s: %s", uri, nbd_get_error());
		goto err;
	}
	sz = nbd_get_size(t->nbd);
	if (sz < 0) {
		ret = -EIO;
		snprintf(err, errlen, "cannot get the size of %s: %s", uri, nbd_get_error());
		goto err;
	}
	*size = (uint64_t)sz;
	(void)min_size; /* an export cannot be grown from here; the job checks the range */
	*tp = t;
	return 0;
err:
	nbd_close_target(t);
	return ret;
}

static int nbd_io_done(void *user_data, int *error)
{
	struct nbd_cb_ctx *ctx = user_data;

	ctx->t->inflight--;
	ctx->t->cb_fn(ctx->t->cb_arg, ctx->io, *error ? -*error : 0);
	return 1; /* retire the command: nothing else looks at it */
}

static int nbd_queue(struct bench_target *t, struct bench_io *io)
{
	struct nbd_cb_ctx *ctx = &t->ctx[io->slot];
	nbd_completion_callback cb = { .callback = nbd_io_done, .user_data = ctx };
	int64_t cookie;

	ctx->io = io;
	t->inflight++;
	if (io->ddir == BENCH_READ)
		cookie = nbd_aio_pread(t->nbd, io->buf, io->len, io->offset, cb, 0);
	else
		cookie = nbd_aio_pwrite(t->nbd, io->buf, io->len, io->offset, cb, 0);
	if (cookie == -1) {
		/* not submitted: libnbd never calls the completion callback */
		t->inflight--;
		snprintf(t->errbuf, sizeof(t->errbuf), "%s", nbd_get_error());
		return nbd_get_errno() ? -nbd_get_errno() : -EIO;
	}
	return 0;
}

static int nbd_submit(struct bench_target *t)
{
	(void)t;
	return 0;
}

static int nbd_reap(struct bench_target *t)
{
	if (t->inflight == 0)
		return 0;
	if (nbd_poll(t->nbd, -1) == -1) {
		snprintf(t->errbuf, sizeof(t->errbuf), "%s", nbd_get_error());
		return nbd_get_errno() ? -nbd_get_errno() : -EIO;
	}
	return 0;
}

static const char *nbd_strerror(struct bench_target *t)
{
	return t->errbuf[0] ? t->errbuf : NULL;
}

const struct bench_engine bench_engine_nbd = {
	.name = "nbd",
	.queue_sends = true,
	.open = nbd_open_target,
	.queue = nbd_queue,
	.submit = nbd_submit,
	.reap = nbd_reap,
	.strerror = nbd_strerror,
	.close = nbd_close_target,
};
