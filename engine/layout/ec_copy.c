/*
 * EC layout: one copy's operations and the stripe locks (its session and
 * snapshot requests: copyset.c).
 *
 * A copy holds one chunk position of every stripe in a chunk volume, either
 * in this node's store (local: the same epoch rule a replica applies, a
 * write whose epoch is below the volume's recorded one fails with -ESTALE)
 * or on another node through a struct tsr_peer_client.  The functions here
 * hide which.  Every operation holds a reference on the layout until its
 * callback has run, so teardown can wait for the last one.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "layout/ec_internal.h"

/* ---- stripe locks ------------------------------------------------------- */

static bool sl_blocked(struct ec *e, struct slock *sl)
{
	struct slock *o;

	for (o = e->locks_held; o != NULL; o = o->next)
		if (o->stripe == sl->stripe)
			return true;
	for (o = e->locks_wait; o != NULL && o != sl; o = o->next)
		if (o->stripe == sl->stripe)
			return true;
	return false;
}

bool sl_acked(const struct ec *e, uint64_t stripe)
{
	const struct slock *o;

	for (o = e->locks_held; o != NULL; o = o->next)
		if (o->stripe == stripe)
			return o->acked;
	return false;
}

bool sl_acquire(struct ec *e, struct slock *sl, uint64_t stripe, void (*granted)(struct slock *sl))
{
	sl->stripe = stripe;
	sl->granted = granted;
	sl->held = sl->queued = sl->acked = false;
	sl->next = NULL;
	if (!sl_blocked(e, sl)) {
		sl->held = true;
		sl->next = e->locks_held;
		e->locks_held = sl;
		return true;
	}
	sl->queued = true;
	if (e->locks_wait_tail != NULL)
		e->locks_wait_tail->next = sl;
	else
		e->locks_wait = sl;
	e->locks_wait_tail = sl;
	return false;
}

static void sl_unlink_wait(struct ec *e, struct slock *sl)
{
	struct slock **pp, *prev = NULL;

	for (pp = &e->locks_wait; *pp != NULL; prev = *pp, pp = &(*pp)->next) {
		if (*pp == sl) {
			*pp = sl->next;
			if (e->locks_wait_tail == sl)
				e->locks_wait_tail = prev;
			sl->next = NULL;
			sl->queued = false;
			return;
		}
	}
}

/* Grant the first waiter for stripe, if nobody holds it.  Only the release
 * of that stripe's lock can unblock its waiters: no scan of the others. */
static void sl_grant_stripe(struct ec *e, uint64_t stripe)
{
	struct slock *sl, *o;

	for (o = e->locks_held; o != NULL; o = o->next)
		if (o->stripe == stripe)
			return;
	for (sl = e->locks_wait; sl != NULL; sl = sl->next)
		if (sl->stripe == stripe)
			break;
	if (sl == NULL)
		return;
	sl_unlink_wait(e, sl);
	sl->held = true;
	sl->next = e->locks_held;
	e->locks_held = sl;
	sl->granted(sl);
}

void sl_release(struct ec *e, struct slock *sl)
{
	struct slock **pp;

	if (sl->queued) {
		sl_unlink_wait(e, sl);
		sl_grant_stripe(e, sl->stripe);
		return;
	}
	if (!sl->held)
		return;
	for (pp = &e->locks_held; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == sl) {
			*pp = sl->next;
			break;
		}
	}
	sl->held = false;
	sl->next = NULL;
	sl_grant_stripe(e, sl->stripe);
}

/* ---- copy operations ------------------------------------------------------ */

bool ecopy_readable(const struct ecopy *c)
{
	return c->open && c->state == TSR_COPY_IN_SYNC;
}

bool ecopy_writable(const struct ecopy *c)
{
	return c->open && (c->state == TSR_COPY_IN_SYNC || c->state == TSR_COPY_RESYNCING);
}

/*
 * One operation on one copy, holding a layout reference until its callback.
 * A local one keeps its arguments: when the home io's queue is full
 * (-EAGAIN) it waits in e->io_waiters and is issued again when one of our
 * operations completes or on the tick (ec_io_kick), so callers never see
 * -EAGAIN (retrying at once from a deferred call would spin: the pass never
 * reaches its submit).
 */
/* ECOP_READ_DIRECT: the copy's disk, not the page cache (scrub): a local
 * copy through tsr_svol_read_direct, a remote one a READ with
 * TSR_PEER_F_DIRECT (a plain READ, logged once, to a replica of a build
 * without it: tsr_peer_read_direct) */
enum ecop_kind {
	ECOP_READ,
	ECOP_READ_DIRECT,
	ECOP_WRITE,
	ECOP_FLUSH,
	ECOP_STAGE,
	ECOP_COMMIT,
	ECOP_RELEASE
};

struct ecop {
	struct ec *e;
	struct ecopy *c;
	enum ecop_kind kind;
	uint64_t off; /* READ/WRITE: offset; COMMIT: txn; RELEASE: txn_upto */
	uint32_t len;
	void *buf;
	struct tsr_stage_entry en; /* STAGE */
	tsr_cb cb;
	void *arg;
	struct ecop *next_wait;
};

static void io_wait(struct ec *e, struct ecop *op);

static void ecop_done(void *arg, int status)
{
	struct ecop *op = arg;
	struct ec *e = op->e;

	if (status == -EAGAIN && op->c->local && !e->closing) {
		/* the store met a full queue after accepting the call (a commit's
		 * in-place write): every kind is safe to issue again (stage
		 * replaces its own bytes, commit rewrites them, release and
		 * plain reads/writes are idempotent under the stripe lock) */
		io_wait(e, op);
		return;
	}
	op->cb(op->arg, status);
	free(op);
	ec_io_kick(e); /* a slot of the io queue may be free now */
	ec_put(e);
}

static bool local_fenced(const struct ecopy *c)
{
	return tsr_svol_epoch(c->svol) > c->e->epoch;
}

static int local_issue(struct ecop *op)
{
	struct ecopy *c = op->c;
	struct tsr_io *io = c->e->io;

	if (c->svol == NULL)
		return -ENOTCONN;
	if (op->kind != ECOP_READ && op->kind != ECOP_READ_DIRECT && op->kind != ECOP_FLUSH &&
	    local_fenced(c))
		return -ESTALE;
	switch (op->kind) {
	case ECOP_READ:
		return tsr_svol_read(c->svol, io, op->off, op->len, op->buf, ecop_done, op);
	case ECOP_READ_DIRECT:
		return tsr_svol_read_direct(c->svol, io, op->off, op->len, op->buf, ecop_done, op);
	case ECOP_WRITE:
		return tsr_svol_write(c->svol, io, op->off, op->len, op->buf, TSR_WRITE_FUA,
				      ecop_done, op);
	case ECOP_FLUSH:
		return tsr_svol_flush(c->svol, io, ecop_done, op);
	case ECOP_STAGE:
		return tsr_svol_stage(c->svol, io, &op->en, op->buf, ecop_done, op);
	case ECOP_COMMIT:
		return tsr_svol_stage_commit(c->svol, io, op->off, ecop_done, op);
	case ECOP_RELEASE:
		return tsr_svol_stage_release(c->svol, io, op->off, ecop_done, op);
	}
	return -EINVAL;
}

static int remote_issue(struct ecop *op)
{
	struct ecopy *c = op->c;
	uint64_t epoch = c->e->epoch;

	switch (op->kind) {
	case ECOP_READ:
		return tsr_peer_read(c->client, c->handle, epoch, op->off, op->len, op->buf,
				     ecop_done, op);
	case ECOP_READ_DIRECT:
		return tsr_peer_read_direct(c->client, c->handle, epoch, op->off, op->len,
					    op->buf, ecop_done, op);
	case ECOP_WRITE:
		return tsr_peer_write(c->client, c->handle, epoch, op->off, op->len, op->buf,
				      TSR_WRITE_FUA, ecop_done, op);
	case ECOP_FLUSH:
		return tsr_peer_flush(c->client, c->handle, epoch, ecop_done, op);
	case ECOP_STAGE:
		return tsr_peer_stage(c->client, c->handle, epoch, &op->en, op->buf, ecop_done, op);
	case ECOP_COMMIT:
		return tsr_peer_commit(c->client, c->handle, epoch, op->off, ecop_done, op);
	case ECOP_RELEASE:
		return tsr_peer_release(c->client, c->handle, epoch, op->off, ecop_done, op);
	}
	return -EINVAL;
}

static void io_wait(struct ec *e, struct ecop *op)
{
	op->next_wait = NULL;
	if (e->io_waiters_tail != NULL)
		e->io_waiters_tail->next_wait = op;
	else
		e->io_waiters = op;
	e->io_waiters_tail = op;
}

void ec_io_kick(struct ec *e)
{
	struct ecop *op, *list = e->io_waiters;

	/* bitmap page writes that met a full queue (closing: -ECANCELED) */
	for (unsigned i = 0; i < e->n_copies; i++)
		mbm_retry(&e->copies[i].bm);
	if (list == NULL)
		return;
	e->io_waiters = e->io_waiters_tail = NULL;
	while ((op = list) != NULL) {
		int ret;

		list = op->next_wait;
		ret = e->closing ? -ECANCELED : local_issue(op);
		if (ret == -EAGAIN)
			io_wait(e, op);
		else if (ret < 0)
			ecop_done(op, ret);
	}
}

static int ecop_submit(struct ecopy *c, enum ecop_kind kind, uint64_t off, uint32_t len,
		       const void *buf, const struct tsr_stage_entry *en, tsr_cb cb, void *arg)
{
	struct ec *e = c->e;
	struct ecop *op;
	int ret;

	if (!c->open)
		return -ENOTCONN;
	if (c->local && kind != ECOP_READ && kind != ECOP_READ_DIRECT && kind != ECOP_FLUSH &&
	    local_fenced(c))
		return -ESTALE;
	op = calloc(1, sizeof(*op));
	if (op == NULL)
		return -ENOMEM;
	op->e = e;
	op->c = c;
	op->kind = kind;
	op->off = off;
	op->len = len;
	op->buf = (void *)buf;
	if (en != NULL)
		op->en = *en;
	op->cb = cb;
	op->arg = arg;
	ec_get(e);
	ret = c->local ? local_issue(op) : remote_issue(op);
	if (ret == -EAGAIN && c->local) {
		io_wait(e, op);
		return 0;
	}
	if (ret < 0) {
		free(op);
		ec_put(e);
	}
	return ret;
}

int ecopy_read(struct ecopy *c, uint64_t off, uint32_t len, void *buf, tsr_cb cb, void *arg)
{
	return ecop_submit(c, ECOP_READ, off, len, buf, NULL, cb, arg);
}

int ecopy_read_direct(struct ecopy *c, uint64_t off, uint32_t len, void *buf, tsr_cb cb, void *arg)
{
	return ecop_submit(c, ECOP_READ_DIRECT, off, len, buf, NULL, cb, arg);
}

int ecopy_write(struct ecopy *c, uint64_t off, uint32_t len, const void *buf, tsr_cb cb, void *arg)
{
	return ecop_submit(c, ECOP_WRITE, off, len, buf, NULL, cb, arg);
}

int ecopy_flush(struct ecopy *c, tsr_cb cb, void *arg)
{
	return ecop_submit(c, ECOP_FLUSH, 0, 0, NULL, NULL, cb, arg);
}

int ecopy_stage(struct ecopy *c, const struct tsr_stage_entry *en, const void *buf, tsr_cb cb,
		void *arg)
{
	return ecop_submit(c, ECOP_STAGE, 0, 0, buf, en, cb, arg);
}

int ecopy_commit(struct ecopy *c, uint64_t txn, tsr_cb cb, void *arg)
{
	return ecop_submit(c, ECOP_COMMIT, txn, 0, NULL, NULL, cb, arg);
}

int ecopy_release(struct ecopy *c, uint64_t upto, tsr_cb cb, void *arg)
{
	return ecop_submit(c, ECOP_RELEASE, upto, 0, NULL, NULL, cb, arg);
}

int ecopy_stage_list(struct ecopy *c, tsr_peer_stage_list_cb cb, void *arg)
{
	struct tsr_stage_entry *list = NULL;
	size_t n = 0;
	int ret;

	if (!c->open)
		return -ENOTCONN;
	if (!c->local)
		return tsr_peer_stage_list(c->client, c->handle, c->e->epoch, cb, arg);
	ret = tsr_svol_stage_list(c->svol, &list, &n);
	cb(arg, ret, list, ret < 0 ? 0 : n);
	free(list);
	return 0;
}

int ecopy_snap(struct ecopy *c, const struct tsr_snap_req *req, tsr_cb cb, void *arg)
{
	return copyset_snap(&c->base, req, cb, arg);
}

/* ---- sessions (copyset.c) ------------------------------------------------- */

void ecopy_disconnect(struct ecopy *c)
{
	copyset_disconnect(&c->base);
}

int ecopy_connect(struct ecopy *c, tsr_cb cb, void *arg)
{
	return copyset_connect(&c->base, cb, arg);
}
