/*
 * Copy-on-write of head writes into the newest snapshot (store.h model).
 *
 * Before block b of the head is written, trimmed or zeroed while the volume
 * has snapshots and the newest one, Sn, lacks b (b below Sn's size), the
 * head's current content of b (an image read of the head: a clone's head may
 * take it from its parent) is copied into Sn:
 *   1. claim the range (svol->cow_busy, under cow_lock; cow_inflight counts
 *      claims): a writer of a claimed block waits (it retries through a
 *      no-op read on its own io, so no thread ever blocks and no other
 *      thread's io is touched);
 *   2. read the head's blocks that are not zeros;
 *   3. store their crc entries {c, c} ({0, LAYER_ZERO_MARK} for zero
 *      blocks), then, in parallel, write them into Sn's data file (FUA) and
 *      wait for an fdatasync of Sn's .crc that started after the entries were
 *      stored;
 *   4. when both are done, set their present bits (not synced here: the layer
 *      is flagged present_unsynced), release the claim and issue the head
 *      operation (data.c *_go), which marks its dirty region durably before
 *      it writes.
 * The bit reaches the disk lazily: the head's dirty-region bitmap is the
 * intent record.  A crash that loses the bit finds the head's region dirty
 * (the head write cannot land before its region is marked) and Sn's entry
 * set: recovery (layer_recover_present) sets the bit again when Sn's data
 * matches the entry (or it is a zero mark), else clears the entry (the copy
 * did not finish, so the head write after it was never issued).  Before the
 * dirty bitmap is cleared (quiet flush, clean close) the layers' .present
 * are synced (chain_sync_present).  Step 3's order still holds because the
 * kernel may write back a mapped page at any time: a bit on disk always has
 * its entry and data behind it.
 * One copy handles up to COW_CHUNK blocks of a request with one set of syncs
 * (a 1 MiB write after a snapshot costs one read, one write, one fdatasync:
 * one journal commit before the head write instead of two).
 *
 * Group commit of the .crc syncs of step 3 (struct sync_batch, one per
 * layer): a copy joins the batch with a ticket once its entries are stored; if no fdatasync of the file is in flight it issues one on
 * its own io, covering every ticket handed out so far; otherwise it waits, and
 * when the sync in flight completes, its completion wakes the copies it
 * covered and issues the next one (same io) for the copies that joined
 * meanwhile.  So concurrent copies of a layer share its syncs, one in flight
 * per file at a time, and every copy still waits for a sync that started
 * after its own stores.  A copy is woken on its own thread only: directly when
 * the syncs run on its io, else it polls its "synced" flag through no-op reads
 * on its own io (the same way it waits for a claimed block).
 * Zero blocks cost no read or write (the zero mark and the bit); a trim or
 * zeroing of a block that reads zeros already needs no copy at all.
 *
 * A full io queue (-EAGAIN) met once the request was accepted cannot go back
 * to the caller as such (it would reach the host as EIO, or fail a mirror's
 * local copy), nor fail the copy (it would start over into the same queue,
 * which other requests on the io, such as a backup reading a snapshot, keep
 * full: a completion frees one slot, and one completion can resume several
 * copies).  Where nothing of the copy is in flight to resume it, the step is
 * done on the spot, blocking, as data.c write_sub does: the data write
 * (pwritev2 RWF_DSYNC), the .crc sync (fdatasync; also for a polling copy
 * that cannot queue its no-op read), the head write (DATA_GO_LATE).  Left as
 * -EAGAIN to the callback (rare, and the NBD server, the mirror's and the
 * EC layout's local copies issue the request again): the read of a later
 * chunk, the no-op read that waits for another copy's claim, a trim or a
 * zeroing resumed after its copy.
 *
 * Fast path (cow_needed): the volume has no snapshot, or Sn holds every block
 * of the range and no copy is in flight: bits are loaded before cow_inflight,
 * and a copy raises cow_inflight before it sets a bit, so a set bit seen with
 * no copy in flight has its data and entry durable (the bit itself is
 * rebuilt from them should it be lost: the head write marks the region).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "store/internal.h"

#define COW_CHUNK 256u /* blocks: 1 MiB */

struct cow_busy {
	uint64_t first, last; /* blocks claimed */
	struct cow_busy *next;
};

struct cow_op {
	struct tsr_svol *svol;
	struct tsr_io *io;
	enum cow_kind kind;
	uint64_t offset, len;
	const void *buf;
	unsigned flags;
	tsr_cb cb_fn;
	void *cb_arg;
	bool async;              /* a completion may have run: report errors by callback */
	struct layer *target;    /* Sn when the request started */
	uint64_t pos, end;       /* blocks still to consider: [pos, end) */
	uint64_t cfirst, cn;     /* the chunk being copied */
	struct cow_busy busy;    /* its claim */
	uint8_t need[COW_CHUNK]; /* 0 nothing, 1 zero block, 2 data block */
	uint8_t *cbuf;           /* COW_CHUNK blocks */
	uint64_t rfirst;         /* first block read into cbuf */
	uint64_t wcursor;        /* next block of the chunk to write */
	int pending;
	int status;
	struct iovec iov[COW_CHUNK];
	struct iovec tramp;

	/* waiting in a sync batch, from batch_join until after_sync runs */
	struct sync_batch *batch;   /* the batch joined */
	uint64_t ticket;            /* covered by a sync issued after it was handed out */
	bool polling;               /* woken through synced (another io runs the syncs) */
	_Atomic bool synced;        /* polling: a sync covering it is done (batch lock) */
	int sync_status;            /* polling: that sync's result, valid once synced */
	tsr_io_cb after_sync;       /* called (op, result) on op's thread */
	struct cow_op *next_waiter; /* batch->waiters (batch lock) */
};

/* Index in c of the copy target: the newest layer that is not deleting;
 * -1 when every layer is (then no snapshot that stays can see the head). */
static int chain_target(const struct layer_chain *c)
{
	unsigned i;

	for (i = c ? c->n : 0; i-- > 0;)
		if (!atomic_load(&c->l[i]->deleting))
			return (int)i;
	return -1;
}

/* Position of layer t in c (c->n when absent). */
static unsigned chain_pos(const struct layer_chain *c, const struct layer *t)
{
	unsigned i;

	for (i = 0; i < c->n; i++)
		if (c->l[i] == t)
			return i;
	return c->n;
}

/* Word w of the bits of layers c->l[k..]: blocks held by the target or by a
 * deleting layer after it.  The target's image of such a block is not the
 * head's, so a head write of it needs no copy: a deleting layer's blocks
 * reach the target by its merge (snap.c), and it stays in the chain until
 * then. */
static uint64_t held_word(const struct layer_chain *c, unsigned k, uint64_t w)
{
	uint64_t m = 0;

	for (; k < c->n; k++)
		m |= __atomic_load_n(&c->l[k]->present[w], __ATOMIC_SEQ_CST);
	return m;
}

static bool held(const struct layer_chain *c, unsigned k, uint64_t b)
{
	return (held_word(c, k, b / 64) >> (b % 64)) & 1;
}

static bool range_held(const struct layer_chain *c, unsigned k, uint64_t b, uint64_t end)
{
	while (b < end) {
		if (b % 64 == 0 && b + 64 <= end) {
			if (held_word(c, k, b / 64) != UINT64_MAX)
				return false;
			b += 64;
			continue;
		}
		if (!held(c, k, b))
			return false;
		b++;
	}
	return true;
}

/* Tests: cow_needed sleeps this long inside its look at the chain and
 * raises store_test_chain_held first (store_snapdel_ut). */
unsigned store_test_chain_hold_us;
_Atomic int store_test_chain_held;

bool cow_needed(struct tsr_svol *svol, uint64_t offset, uint64_t len)
{
	struct layer_chain *c = chain_enter(svol);
	struct layer *t;
	uint64_t first, end;
	bool needed = false;
	int k;

	if (c == NULL || c->n == 0)
		goto out;
	if (store_test_chain_hold_us) {
		atomic_store(&store_test_chain_held, 1);
		usleep(store_test_chain_hold_us);
	}
	k = chain_target(c);
	if (k >= 0) {
		t = c->l[k];
		first = offset >> STORE_BLOCK_SHIFT;
		end = (offset + len) >> STORE_BLOCK_SHIFT;
		if (end > t->size >> STORE_BLOCK_SHIFT)
			end = t->size >> STORE_BLOCK_SHIFT;
		needed = first < end && !range_held(c, (unsigned)k, first, end);
	}
	needed = needed || atomic_load(&svol->cow_inflight) != 0;
out:
	chain_exit(svol);
	return needed;
}

static void cow_free(struct cow_op *op)
{
	if (op->target)
		atomic_fetch_sub(&op->target->cow_users, 1);
	tsr_free_aligned(op->cbuf);
	free(op);
}

/* The copies are done: run the head operation itself.  From a completion
 * (op->async) a write cannot meet -EAGAIN any more (DATA_GO_LATE): the one
 * slot a completion frees may be taken already (batch_synced resumes every
 * copy its sync covered, and issues the next sync first). */
static int cow_resume(struct cow_op *op)
{
	struct tsr_svol *svol = op->svol;
	int ret;

	switch (op->kind) {
	case COW_WRITE:
		ret = data_write_go(svol, op->io, op->offset, (uint32_t)op->len, op->buf, NULL,
				    op->flags | (op->async ? DATA_GO_LATE : 0), op->cb_fn,
				    op->cb_arg);
		break;
	case COW_TRIM:
		ret = data_trim_go(svol, op->io, op->offset, op->len, op->flags, op->cb_fn,
				   op->cb_arg);
		break;
	default:
		ret = data_zeroes_go(svol, op->io, op->offset, op->len, op->flags, op->cb_fn,
				     op->cb_arg);
		break;
	}
	svol_write_end(svol); /* after the head operation counted itself */
	return ret;
}

/* End of the request: error or resume.  Returns what the caller of
 * cow_start gets when still synchronous. */
static int cow_done(struct cow_op *op, int err)
{
	tsr_cb cb_fn = op->cb_fn;
	void *cb_arg = op->cb_arg;
	bool async = op->async;

	if (err == 0)
		err = cow_resume(op);
	else
		svol_write_end(op->svol);
	cow_free(op);
	if (err && async) {
		cb_fn(cb_arg, err);
		return 0;
	}
	return err;
}

static void release_claim(struct cow_op *op)
{
	struct tsr_svol *svol = op->svol;
	struct cow_busy **pp;

	pthread_mutex_lock(&svol->cow_lock);
	for (pp = &svol->cow_busy; *pp; pp = &(*pp)->next) {
		if (*pp == &op->busy) {
			*pp = op->busy.next;
			break;
		}
	}
	atomic_fetch_sub(&svol->cow_inflight, 1);
	pthread_mutex_unlock(&svol->cow_lock);
}

/* ---- group commit of a layer file's syncs (see the header) ---- */

static void batch_synced(void *cb_arg, int res);

/* Issue the batch's sync on io.  On failure, fail the copies it would cover
 * (b->inflight, covered and round_io already set under the lock).  The copies
 * were told 0 long ago: a full queue (-EAGAIN; other requests on the io, such
 * as a backup reading a snapshot, take every slot a completion frees) makes
 * the sync run on the spot, blocking, as data.c write_sub does; failing them
 * would start their copies over into the same full queue. */
static void batch_issue(struct sync_batch *b, struct tsr_io *io)
{
	int ret = tsr_io_fsync(io, b->fd, true, batch_synced, b);

	if (ret == -EAGAIN)
		ret = fdatasync(b->fd) < 0 ? -errno : 0;
	else if (ret == 0)
		return;
	batch_synced(b, ret);
}

/* Completion of the batch's sync (on round_io's thread): hand the result to
 * the copies it covered, start the next sync for the ones that joined
 * meanwhile, then resume the covered copies of this thread. */
static void batch_synced(void *cb_arg, int res)
{
	struct sync_batch *b = cb_arg;
	struct cow_op *direct = NULL, **pp, *op, *next;
	struct tsr_io *io;
	bool again;

	pthread_mutex_lock(&b->lock);
	io = b->round_io;
	for (pp = &b->waiters; (op = *pp) != NULL;) {
		if (op->ticket > b->covered) {
			pp = &op->next_waiter;
			continue;
		}
		*pp = op->next_waiter;
		if (op->polling) {
			/* another thread's copy: it sees synced from its own io
			 * (set under the lock: batch_leave may be looking) and
			 * is not touched here again */
			op->sync_status = res;
			atomic_store_explicit(&op->synced, true, memory_order_release);
		} else {
			op->next_waiter = direct;
			direct = op;
		}
	}
	again = b->waiters != NULL;
	if (again)
		b->covered = b->joined; /* their stores are done: the next sync covers them */
	else
		b->inflight = false;
	pthread_mutex_unlock(&b->lock);
	if (again)
		batch_issue(b, io);
	/* copies of this thread (io): resume them here */
	for (op = direct; op; op = next) {
		next = op->next_waiter;
		op->after_sync(op, res);
	}
}

static void batch_poll(void *cb_arg, int res);

/* A polling copy gives up waiting (its no-op read could not be queued):
 * leave the batch unless a sync covering it is already done.  On a full
 * queue (-EAGAIN) it then syncs the file itself, on the spot: a sync that
 * starts after its stores is all it waits for (see batch_issue). */
static void batch_leave(struct cow_op *op, int err)
{
	struct sync_batch *b = op->batch;
	struct cow_op **pp;
	bool left = false;

	pthread_mutex_lock(&b->lock);
	if (atomic_load_explicit(&op->synced, memory_order_acquire)) {
		err = op->sync_status;
	} else {
		for (pp = &b->waiters; *pp; pp = &(*pp)->next_waiter) {
			if (*pp == op) {
				*pp = op->next_waiter;
				break;
			}
		}
		left = true;
	}
	pthread_mutex_unlock(&b->lock);
	if (left && err == -EAGAIN)
		err = fdatasync(b->fd) < 0 ? -errno : 0;
	op->after_sync(op, err);
}

/* Wait for synced through a no-op read on the copy's own io. */
static void batch_poll_later(struct cow_op *op)
{
	int ret = data_trampoline(op->svol->store, op->io, &op->tramp, batch_poll, op);

	if (ret)
		batch_leave(op, ret);
}

static void batch_poll(void *cb_arg, int res)
{
	struct cow_op *op = cb_arg;

	(void)res;
	if (atomic_load_explicit(&op->synced, memory_order_acquire))
		op->after_sync(op, op->sync_status);
	else
		batch_poll_later(op);
}

/* op's stores into b's file are done: wait for a sync of the file issued
 * after them.  after_sync(op, 0 or -errno) fires exactly once, on op's thread,
 * possibly before batch_join returns (when the sync cannot be queued). */
static void batch_join(struct cow_op *op, struct sync_batch *b, tsr_io_cb after_sync)
{
	bool issue = false;

	op->batch = b;
	op->after_sync = after_sync;
	op->async = true;
	atomic_store_explicit(&op->synced, false, memory_order_relaxed);
	pthread_mutex_lock(&b->lock);
	op->ticket = ++b->joined;
	op->next_waiter = b->waiters;
	b->waiters = op;
	if (!b->inflight) {
		b->inflight = true;
		b->covered = b->joined;
		b->round_io = op->io;
		issue = true;
	}
	/* syncs stay on round_io while copies wait: woken directly if it is ours */
	op->polling = b->round_io != op->io;
	pthread_mutex_unlock(&b->lock);
	if (issue)
		batch_issue(b, op->io);
	else if (op->polling)
		batch_poll_later(op);
}

static int cow_step(struct cow_op *op);

static void cow_fail(struct cow_op *op, int err)
{
	store_log_step(err, "snapshot copy: volume %s blocks %llu+%llu", op->svol->name,
		       (unsigned long long)op->cfirst, (unsigned long long)op->cn);
	release_claim(op);
	cow_done(op, err);
}

static void cow_retry(void *cb_arg, int res)
{
	struct cow_op *op = cb_arg;

	(void)res;
	op->async = true;
	cow_step(op);
}

/* Data and entries are durable: the bits, then the next chunk (or the head
 * operation).  The bits reach the disk lazily (see the header). */
static void cow_bits(struct cow_op *op)
{
	uint64_t i;

	for (i = 0; i < op->cn; i++)
		if (op->need[i])
			bit_set(op->target->present, op->cfirst + i);
	atomic_store(&op->target->present_unsynced, true);
	release_claim(op);
	op->pos = op->cfirst + op->cn;
	cow_step(op);
}

/* Store the entries of the chunk ({c, c}, the zero mark for zeros). */
static void cow_entries(struct cow_op *op)
{
	uint64_t i;

	for (i = 0; i < op->cn; i++) {
		uint64_t b = op->cfirst + i;
		uint64_t e = entry_make(0, LAYER_ZERO_MARK);

		if (op->need[i] == 0)
			continue;
		if (op->need[i] == 2) {
			uint32_t c =
			    blockmeta_block_crc(op->cbuf + ((b - op->rfirst) << STORE_BLOCK_SHIFT));

			e = entry_make(c, c);
		}
		if (entry_load(&op->target->crc[b]) != e)
			entry_store(&op->target->crc[b], e);
	}
}

static void write_done(void *cb_arg, int res);

/* Write runs of data blocks to the layer, a few at a time. */
static int write_runs(struct cow_op *op)
{
	while (op->pending < 8 && op->wcursor < op->cn) {
		uint64_t i = op->wcursor, j, fd_off, max;
		uint64_t off;
		int fd, ret;

		if (op->need[i] != 2) {
			op->wcursor++;
			continue;
		}
		off = (op->cfirst + i) << STORE_BLOCK_SHIFT;
		fd = layer_fd(op->target, off, &fd_off, &max);
		for (j = i + 1;
		     j < op->cn && op->need[j] == 2 && ((j - i) << STORE_BLOCK_SHIFT) < max; j++)
			;
		op->iov[i].iov_base =
		    op->cbuf + ((op->cfirst + i - op->rfirst) << STORE_BLOCK_SHIFT);
		op->iov[i].iov_len = (j - i) << STORE_BLOCK_SHIFT;
		ret = tsr_io_writev(op->io, fd, &op->iov[i], 1, fd_off, TSR_IO_FUA, write_done, op);
		if (ret == -EAGAIN && op->pending > 0)
			return 0; /* more when one of ours completes */
		if (ret == -EAGAIN) {
			/* a full queue and nothing of ours in flight to resume
			 * us (we were resumed by a sync's completion whose slot
			 * went to the next sync or to another copy): the data is
			 * read and its entries stored, and failing would start
			 * the copy over into the same full queue.  Write the run
			 * on the spot, as data.c write_sub does; durable when
			 * it returns, like the FUA write. */
			ssize_t n = pwritev2(fd, &op->iov[i], 1, (off_t)fd_off, RWF_DSYNC);

			if (n != (ssize_t)op->iov[i].iov_len)
				return n < 0 ? -errno : -EIO;
			op->wcursor = j;
			continue;
		}
		if (ret)
			return ret;
		op->pending++;
		op->wcursor = j;
	}
	return 0;
}

/* Completion of a data write or of the .crc sync (they run in parallel:
 * both must be durable before any bit is set, in no order between them). */
static void write_done(void *cb_arg, int res)
{
	struct cow_op *op = cb_arg;
	int ret;

	op->pending--;
	if (res < 0 && op->status == 0)
		op->status = res;
	if (op->status == 0 && op->wcursor < op->cn) {
		ret = write_runs(op);
		if (ret)
			op->status = ret;
	}
	if (op->pending)
		return;
	if (op->status) {
		cow_fail(op, op->status);
		return;
	}
	cow_bits(op);
}

/* Entries stored, then data writes and the .crc sync queued together.  The
 * sync is joined even when no entry changed: an equal entry left by an
 * earlier, failed copy may not be on disk yet, and recovery relies on it. */
static void cow_copy(struct cow_op *op)
{
	int ret;

	cow_entries(op);
	op->wcursor = 0;
	op->status = 0;
	op->pending = 1; /* guard */
	ret = write_runs(op);
	if (ret && op->status == 0)
		op->status = ret;
	if (ret == 0) {
		/* entries stored: a .crc sync issued from now on covers them */
		op->pending++;
		batch_join(op, &op->target->crc_sync, write_done);
	}
	/* drop the guard: completes now when nothing was queued */
	write_done(op, 0);
}

static void read_done(void *cb_arg, int res)
{
	struct cow_op *op = cb_arg;

	if (res < 0) {
		cow_fail(op, res);
		return;
	}
	cow_copy(op);
}

/* Claim the next chunk that needs a copy and start copying it; when nothing
 * is left, run the head operation.  Returns what cow_start returns while
 * still synchronous. */
static int cow_step(struct cow_op *op)
{
	struct tsr_svol *svol = op->svol;
	struct cow_busy *c;
	uint64_t i, last_data, first_data;
	int ret;

	while (op->pos < op->end) {
		uint64_t first = op->pos;
		uint64_t n = op->end - first < COW_CHUNK ? op->end - first : COW_CHUNK;
		/* the chain may have changed since (a merged layer dropped, a
		 * layer flagged deleting), never the target's place in it:
		 * cow_users keeps it there */
		struct layer_chain *ch = chain_enter(svol);
		unsigned k = chain_pos(ch, op->target);
		bool any = false;

		if (range_held(ch, k, first, first + n) &&
		    atomic_load(&svol->cow_inflight) == 0) {
			chain_exit(svol);
			op->pos += n;
			continue;
		}
		pthread_mutex_lock(&svol->cow_lock);
		for (c = svol->cow_busy; c; c = c->next)
			if (c->first < first + n && first <= c->last)
				break;
		if (c) { /* another copy of these blocks is running: wait for it */
			pthread_mutex_unlock(&svol->cow_lock);
			chain_exit(svol);
			ret = data_trampoline(svol->store, op->io, &op->tramp, cow_retry, op);
			if (ret)
				return cow_done(op, ret);
			return 0;
		}
		first_data = UINT64_MAX;
		last_data = 0;
		for (i = 0; i < n; i++) {
			uint64_t b = first + i;

			op->need[i] = 0;
			if (held(ch, k, b))
				continue;
			if (image_zero(svol, NULL, b)) {
				/* a trim of zeros changes nothing the snapshot could see */
				if (op->kind != COW_WRITE)
					continue;
				op->need[i] = 1;
			} else {
				op->need[i] = 2;
				if (first_data == UINT64_MAX)
					first_data = b;
				last_data = b;
			}
			any = true;
		}
		chain_exit(svol);
		if (!any) {
			pthread_mutex_unlock(&svol->cow_lock);
			op->pos += n;
			continue;
		}
		op->busy.first = first;
		op->busy.last = first + n - 1;
		op->busy.next = svol->cow_busy;
		svol->cow_busy = &op->busy;
		atomic_fetch_add(&svol->cow_inflight, 1);
		pthread_mutex_unlock(&svol->cow_lock);
		op->cfirst = first;
		op->cn = n;
		/* the layer's entries and bits are stored through mappings: on a
		 * full file system this is -ENOSPC, not a SIGBUS later */
		ret = layer_reserve(op->target, first, n);
		if (ret) {
			tsr_error("snapshot copy: volume %s blocks %llu+%llu: allocate the "
				  "snapshot's crc table and bitmap: %s",
				  svol->name, (unsigned long long)first, (unsigned long long)n,
				  strerror(-ret));
			release_claim(op);
			return cow_done(op, ret);
		}
		if (first_data == UINT64_MAX) {
			op->async = true; /* the syncs below complete later */
			cow_copy(op);
			return 0;
		}
		if (op->cbuf == NULL) {
			op->cbuf = tsr_alloc_aligned((size_t)COW_CHUNK << STORE_BLOCK_SHIFT);
			if (op->cbuf == NULL) {
				release_claim(op);
				return cow_done(op, -ENOMEM);
			}
		}
		op->rfirst = first_data;
		ret = image_read(svol, NULL, NULL, op->io, first_data << STORE_BLOCK_SHIFT,
				 (last_data - first_data + 1) << STORE_BLOCK_SHIFT, op->cbuf,
				 read_done, op);
		if (ret) {
			release_claim(op);
			return cow_done(op, ret);
		}
		op->async = true;
		return 0;
	}
	return cow_done(op, 0);
}

int cow_start(struct tsr_svol *svol, struct tsr_io *io, enum cow_kind kind, uint64_t offset,
	      uint64_t len, const void *buf, unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	struct cow_op *op = calloc(1, sizeof(*op));
	struct layer_chain *c;
	struct layer *t;
	uint64_t end;
	int k;

	if (op == NULL)
		return -ENOMEM;
	/* the target, counted in its cow_users before deleting is checked
	 * again (both sequentially consistent): a delete that flags it after
	 * this check waits for the count to drop (snap_merge_job) */
	for (;;) {
		c = chain_enter(svol);
		k = chain_target(c);
		if (k < 0) { /* every layer is being deleted: nothing to copy */
			chain_exit(svol);
			t = NULL;
			break;
		}
		t = c->l[k];
		atomic_fetch_add(&t->cow_users, 1);
		chain_exit(svol); /* t stays: its merge waits for cow_users */
		if (!atomic_load(&t->deleting))
			break;
		atomic_fetch_sub(&t->cow_users, 1);
	}
	svol_write_begin(svol);
	op->svol = svol;
	op->io = io;
	op->kind = kind;
	op->offset = offset;
	op->len = len;
	op->buf = buf;
	op->flags = flags;
	op->cb_fn = cb_fn;
	op->cb_arg = cb_arg;
	op->target = t;
	op->pos = offset >> STORE_BLOCK_SHIFT;
	end = (offset + len) >> STORE_BLOCK_SHIFT;
	if (t == NULL)
		op->end = op->pos;
	else
		op->end = end < (t->size >> STORE_BLOCK_SHIFT) ? end : t->size >> STORE_BLOCK_SHIFT;
	return cow_step(op);
}
