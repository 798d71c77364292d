/*
 * Mirror layout: one copy's operations and the range locks (its session and
 * snapshot requests: copyset.c).
 *
 * A copy is either this node's store volume (local) or a volume on another
 * node reached through a struct tsr_peer_client (remote); mcopy_submit()
 * hides which, so the write fan-out, resync and scrub never ask.  The local
 * copy is written through the same epoch rule as a replica applies: a write
 * whose epoch is below the volume's recorded epoch fails with -ESTALE.
 *
 * Every operation holds a reference on the layout (m_get/m_put) until its
 * callback has run, so teardown can wait for the last one.  A local one
 * that finds the home io queue full (-EAGAIN) waits in m->io_waiters and
 * goes again when one of ours completes or on the tick (mirror_io_kick):
 * a deep queue never makes the local copy fail.  So does one that completes
 * with -EAGAIN (the store met the full queue in a step it ran later, such as
 * a copy on write into a snapshot: nothing of it was acknowledged, and every
 * kind is safe to issue again under the range lock its caller holds).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "layout/mirror_internal.h"

/* ---- range locks -------------------------------------------------------- */

static bool overlaps(const struct rlock *a, const struct rlock *b)
{
	return a->off < b->off + b->len && b->off < a->off + a->len;
}

/* Does rl conflict with a held lock, or with a queued one ahead of it? */
static bool blocked_by_others(struct mirror *m, struct rlock *rl)
{
	struct rlock *o;

	for (o = m->locks_held; o != NULL; o = o->next)
		if (overlaps(o, rl))
			return true;
	for (o = m->locks_wait; o != NULL && o != rl; o = o->next)
		if (overlaps(o, rl))
			return true;
	return false;
}

bool rl_acquire(struct mirror *m, struct rlock *rl, uint64_t off, uint64_t len,
		void (*granted)(struct rlock *rl))
{
	rl->off = off;
	rl->len = len;
	rl->granted = granted;
	rl->held = false;
	rl->queued = false;
	rl->next = NULL;
	if (!blocked_by_others(m, rl)) {
		rl->held = true;
		rl->next = m->locks_held;
		m->locks_held = rl;
		return true;
	}
	rl->queued = true;
	if (m->locks_wait_tail != NULL)
		m->locks_wait_tail->next = rl;
	else
		m->locks_wait = rl;
	m->locks_wait_tail = rl;
	return false;
}

static void wait_unlink(struct mirror *m, struct rlock *rl)
{
	struct rlock **pp, *prev = NULL;

	for (pp = &m->locks_wait; *pp != NULL; prev = *pp, pp = &(*pp)->next) {
		if (*pp == rl) {
			*pp = rl->next;
			if (m->locks_wait_tail == rl)
				m->locks_wait_tail = prev;
			rl->next = NULL;
			rl->queued = false;
			return;
		}
	}
}

/* Grant queued locks that no longer conflict, in order; a granted callback
 * may take or release locks itself, so scan again from the head each time. */
static void grant_waiting(struct mirror *m)
{
	struct rlock *rl;

again:
	for (rl = m->locks_wait; rl != NULL; rl = rl->next) {
		if (blocked_by_others(m, rl))
			continue;
		wait_unlink(m, rl);
		rl->held = true;
		rl->next = m->locks_held;
		m->locks_held = rl;
		rl->granted(rl);
		goto again;
	}
}

void rl_release(struct mirror *m, struct rlock *rl)
{
	struct rlock **pp;

	if (rl->queued) {
		rl_cancel(m, rl);
		return;
	}
	if (!rl->held)
		return;
	for (pp = &m->locks_held; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == rl) {
			*pp = rl->next;
			break;
		}
	}
	rl->held = false;
	rl->next = NULL;
	grant_waiting(m);
}

void rl_cancel(struct mirror *m, struct rlock *rl)
{
	if (!rl->queued)
		return;
	wait_unlink(m, rl);
	grant_waiting(m); /* locks queued behind it may go now */
}

/* ---- copy operations ---------------------------------------------------- */

struct mcop {
	struct mcopy *c;
	struct mirror *m;
	enum mcop_kind kind;
	tsr_cb cb_fn;
	void *cb_arg;
	int pending; /* pieces not yet called back (+1 while launching) */
	int status;
	uint8_t *data; /* local sums: the blocks read */
	uint32_t *sums;
	uint64_t len;
	/* local: the arguments kept for mirror_io_kick (io queue full) */
	uint64_t w_off, w_len;
	void *w_buf;
	const uint32_t *w_sums; /* WRITE: its blocks' CRCs (mcopy_write_sums), or NULL */
	unsigned w_flags;
	struct mcop *next_wait;
};

void *mop_cache_get(struct mop_cache *mc, size_t size)
{
	void *op = mc->head;

	if (op == NULL)
		return calloc(1, size);
	memcpy(&mc->head, op, sizeof(mc->head));
	mc->n--;
	memset(op, 0, size);
	return op;
}

void mop_cache_put(struct mop_cache *mc, void *op)
{
	if (!TSR_KEEP_FREED || mc->n >= MIRROR_FREE_OPS) {
		free(op);
		return;
	}
	memcpy(op, &mc->head, sizeof(mc->head));
	mc->head = op;
	mc->n++;
}

void mop_cache_drop(struct mop_cache *mc)
{
	void *op;

	while ((op = mc->head) != NULL) {
		memcpy(&mc->head, op, sizeof(mc->head));
		free(op);
	}
	mc->n = 0;
}

static void mcop_io_wait(struct mirror *m, struct mcop *op)
{
	op->next_wait = NULL;
	if (m->io_waiters_tail != NULL)
		m->io_waiters_tail->next_wait = op;
	else
		m->io_waiters = op;
	m->io_waiters_tail = op;
}

static void mcop_finish(struct mcop *op)
{
	struct mirror *m = op->m;

	if (op->kind == MCOP_SUMS && op->data != NULL) {
		if (op->status == 0)
			for (uint64_t b = 0; b < op->len / TSR_BLOCK_SIZE; b++)
				op->sums[b] =
				    tsr_crc32c(0, op->data + b * TSR_BLOCK_SIZE, TSR_BLOCK_SIZE);
		tsr_free_aligned(op->data);
	}
	op->cb_fn(op->cb_arg, op->status);
	mop_cache_put(&m->mcop_cache, op);
	mirror_io_kick(m); /* a slot of the io queue may be free now */
	m_put(m);
}

static void mcop_piece_done(void *arg, int status)
{
	struct mcop *op = arg;

	if (status == -EAGAIN && op->c->local && !op->m->closing) {
		/* a local op is one piece (pending 1): it goes again as if its
		 * submit had met the full queue, never failing the copy */
		mcop_io_wait(op->m, op);
		return;
	}
	if (status < 0 && op->status == 0)
		op->status = status;
	if (--op->pending == 0)
		mcop_finish(op);
}

static bool local_fenced(struct mcopy *c)
{
	return tsr_svol_epoch(c->svol) > c->m->epoch;
}

static int local_submit(struct mcop *op, uint64_t off, uint64_t len, void *buf, unsigned flags)
{
	struct mcopy *c = op->c;
	struct tsr_io *io = c->m->io;

	switch (op->kind) {
	case MCOP_READ:
		if (flags & MCOP_READ_DIRECT)
			return tsr_svol_read_direct(c->svol, io, off, (uint32_t)len, buf,
						    mcop_piece_done, op);
		return tsr_svol_read(c->svol, io, off, (uint32_t)len, buf, mcop_piece_done, op);
	case MCOP_WRITE:
		if (local_fenced(c))
			return -ESTALE;
		return tsr_svol_write_sums(c->svol, io, off, (uint32_t)len, buf, op->w_sums, flags,
					   mcop_piece_done, op);
	case MCOP_FLUSH:
		return tsr_svol_flush(c->svol, io, mcop_piece_done, op);
	case MCOP_TRIM:
		if (local_fenced(c))
			return -ESTALE;
		return tsr_svol_trim(c->svol, io, off, len, mcop_piece_done, op);
	case MCOP_ZEROES:
		if (local_fenced(c))
			return -ESTALE;
		return tsr_svol_write_zeroes(c->svol, io, off, len, flags, mcop_piece_done, op);
	case MCOP_SUMS:
		if (op->data == NULL) /* kept across an -EAGAIN retry */
			op->data = tsr_alloc_aligned(len);
		if (op->data == NULL)
			return -ENOMEM;
		op->sums = buf;
		op->len = len;
		/* sums check what is stored: from the disk, not the page cache */
		return tsr_svol_read_direct(c->svol, io, off, (uint32_t)len, op->data,
					    mcop_piece_done, op);
	}
	return -EINVAL;
}

static int remote_submit(struct mcop *op, uint64_t off, uint64_t len, void *buf, unsigned flags)
{
	struct mcopy *c = op->c;
	struct mirror *m = c->m;
	uint64_t pos, n;
	int ret = 0;

	switch (op->kind) {
	case MCOP_READ:
		if (flags & MCOP_READ_DIRECT)
			return tsr_peer_read_direct(c->client, c->handle, m->epoch, off,
						    (uint32_t)len, buf, mcop_piece_done, op);
		return tsr_peer_read(c->client, c->handle, m->epoch, off, (uint32_t)len, buf,
				     mcop_piece_done, op);
	case MCOP_WRITE:
		return tsr_peer_write_sums(c->client, c->handle, m->epoch, off, (uint32_t)len, buf,
					   op->w_sums, flags, mcop_piece_done, op);
	case MCOP_FLUSH:
		return tsr_peer_flush(c->client, c->handle, m->epoch, mcop_piece_done, op);
	case MCOP_SUMS:
		return tsr_peer_sums(c->client, c->handle, m->epoch, off, (uint32_t)len, buf,
				     mcop_piece_done, op);
	case MCOP_TRIM:
	case MCOP_ZEROES:
		/* the wire length is 32 bits: pieces of 1 GiB, all in flight */
		for (pos = off; pos < off + len; pos += n) {
			n = off + len - pos;
			if (n > MIRROR_PEER_SPLIT)
				n = MIRROR_PEER_SPLIT;
			op->pending++;
			if (op->kind == MCOP_TRIM)
				ret = tsr_peer_trim(c->client, c->handle, m->epoch, pos,
						    (uint32_t)n, mcop_piece_done, op);
			else
				ret =
				    tsr_peer_write_zeroes(c->client, c->handle, m->epoch, pos,
							  (uint32_t)n, flags, mcop_piece_done, op);
			if (ret < 0) {
				op->pending--;
				break;
			}
		}
		if (ret < 0 && pos == off)
			return ret; /* nothing in flight: a plain error */
		if (ret < 0 && op->status == 0)
			op->status = ret; /* some pieces in flight: fail through them */
		mcop_piece_done(op, 0);   /* the launch reference (pending started at 1) */
		return 0;
	}
	return -EINVAL;
}

/*
 * Local operations that met a full io queue go again (any completion of
 * ours, the tick); at teardown they fail with -ECANCELED.  Retrying at once
 * from a deferred call would spin: the pass never reaches its submit.
 */
void mirror_io_kick(struct mirror *m)
{
	struct mcop *op, *list = m->io_waiters;

	if (list == NULL)
		return;
	m->io_waiters = m->io_waiters_tail = NULL;
	while ((op = list) != NULL) {
		int ret;

		list = op->next_wait;
		if (m->closing || op->c->svol == NULL || !op->c->open)
			ret = -ECANCELED;
		else
			ret = local_submit(op, op->w_off, op->w_len, op->w_buf, op->w_flags);
		if (ret == -EAGAIN) {
			mcop_io_wait(m, op);
		} else if (ret < 0) {
			op->status = ret;
			mcop_piece_done(op, ret); /* pending was 1: finishes it */
		}
	}
}

static int mcopy_submit_one(struct mcopy *c, enum mcop_kind kind, uint64_t off, uint64_t len,
			    void *buf, const uint32_t *sums, unsigned flags, tsr_cb cb_fn,
			    void *cb_arg)
{
	struct mirror *m = c->m;
	struct mcop *op;
	int ret;

	if (!c->open)
		return -ENOTCONN;
	op = mop_cache_get(&m->mcop_cache, sizeof(*op));
	if (op == NULL)
		return -ENOMEM;
	op->c = c;
	op->m = m;
	op->kind = kind;
	op->cb_fn = cb_fn;
	op->cb_arg = cb_arg;
	op->pending = 1;
	op->w_off = off;
	op->w_len = len;
	op->w_buf = buf;
	op->w_sums = sums;
	op->w_flags = flags;
	m_get(m);
	if (c->local)
		ret = local_submit(op, off, len, buf, flags);
	else
		ret = remote_submit(op, off, len, buf, flags);
	if (ret == -EAGAIN && c->local) {
		/* io queue full: wait for one of ours to complete, or the tick */
		mcop_io_wait(m, op);
		return 0;
	}
	if (ret < 0) {
		if (op->data != NULL)
			tsr_free_aligned(op->data);
		mop_cache_put(&m->mcop_cache, op);
		m_put(m);
	}
	return ret;
}

/*
 * A READ, WRITE or SUMS over MIRROR_IO_PIECE: pieces one after another (a
 * region of a large --region-size; no store or peer request takes it
 * whole).  One piece at a time keeps the memory of a local SUMS (its blocks
 * read) and the requests in flight per operation what they were.
 */
struct msplit {
	struct mcopy *c;
	enum mcop_kind kind;
	uint64_t off, end; /* the whole range */
	uint64_t pos;      /* the next piece's offset */
	uint8_t *buf;      /* READ, WRITE: the data of [off, end) */
	uint32_t *sums;    /* SUMS: one per block of [off, end) */
	unsigned flags;
	tsr_cb cb_fn;
	void *cb_arg;
};

static void msplit_piece_done(void *arg, int status);

static int msplit_submit(struct msplit *sp)
{
	uint64_t pos = sp->pos, n = sp->end - pos;
	void *buf;

	if (n > MIRROR_IO_PIECE)
		n = MIRROR_IO_PIECE;
	if (sp->kind == MCOP_SUMS)
		buf = sp->sums + (pos - sp->off) / TSR_BLOCK_SIZE;
	else
		buf = sp->buf + (pos - sp->off);
	sp->pos = pos + n;
	return mcopy_submit_one(sp->c, sp->kind, pos, n, buf, NULL, sp->flags, msplit_piece_done,
				sp);
}

static void msplit_piece_done(void *arg, int status)
{
	struct msplit *sp = arg;

	if (status == 0 && sp->pos < sp->end) {
		status = msplit_submit(sp);
		if (status == 0)
			return;
	}
	sp->cb_fn(sp->cb_arg, status);
	free(sp);
}

int mcopy_submit(struct mcopy *c, enum mcop_kind kind, uint64_t off, uint64_t len, void *buf,
		 unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	struct msplit *sp;
	int ret;

	if (len <= MIRROR_IO_PIECE ||
	    (kind != MCOP_READ && kind != MCOP_WRITE && kind != MCOP_SUMS))
		return mcopy_submit_one(c, kind, off, len, buf, NULL, flags, cb_fn, cb_arg);
	if (buf == NULL)
		return -EINVAL;
	sp = calloc(1, sizeof(*sp));
	if (sp == NULL)
		return -ENOMEM;
	sp->c = c;
	sp->kind = kind;
	sp->off = sp->pos = off;
	sp->end = off + len;
	sp->buf = buf;
	sp->sums = buf;
	sp->flags = flags;
	sp->cb_fn = cb_fn;
	sp->cb_arg = cb_arg;
	ret = msplit_submit(sp);
	if (ret < 0)
		free(sp); /* nothing in flight: the callback never fires */
	return ret;
}

int mcopy_write_sums(struct mcopy *c, uint64_t off, uint64_t len, void *buf, const uint32_t *sums,
		     unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	if (sums == NULL || len > MIRROR_IO_PIECE) /* pieces: each computes its own */
		return mcopy_submit(c, MCOP_WRITE, off, len, buf, flags, cb_fn, cb_arg);
	return mcopy_submit_one(c, MCOP_WRITE, off, len, buf, sums, flags, cb_fn, cb_arg);
}

/* A snapshot operation on one copy (the snap op of mirror_snap.c). */
int mcopy_snap(struct mcopy *c, const struct tsr_snap_req *req, tsr_cb cb_fn, void *cb_arg)
{
	return copyset_snap(&c->base, req, cb_fn, cb_arg);
}

/* ---- sessions (copyset.c) ----------------------------------------------- */

void mcopy_disconnect(struct mcopy *c)
{
	copyset_disconnect(&c->base);
}

int mcopy_connect(struct mcopy *c, tsr_cb cb_fn, void *cb_arg)
{
	return copyset_connect(&c->base, cb_fn, cb_arg);
}
