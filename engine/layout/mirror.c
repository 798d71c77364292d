/*
 * The mirror layout (include/tessera/mirror.h): N full copies of a volume,
 * driven from the volume's home worker.
 *
 * Threads.  tsr_layout_mirror_create runs on the control thread: it opens
 * the local copy and the bitmap files (blocking), then sends the start-up to
 * the home worker and waits on a semaphore.  From then on every piece of
 * state belongs to the home worker: host I/O arrives there (io must be the
 * home worker's), control calls are messages to it, and teardown runs there
 * (inline when tsr_layout_destroy is called on the home worker, else sent and
 * waited for).  The one lock is cs.status_lock, guarding the published status:
 * the home worker refreshes it on every state change and on its 20 ms tick
 * (counters may be up to one tick old); tsr_layout_get_status copies it.
 *
 * Writes (and trims, write_zeroes).  Each takes a range lock (overlapping
 * writes reach every copy in arrival order; region copies and scrub chunks
 * take the same locks), then fans out to every IN_SYNC and RESYNCING copy.
 * A copy that fails becomes OUT_OF_SYNC: the write's regions are set in its
 * bitmap, and the write waits until the bitmap page is durable and the
 * metadata store holds OUT_OF_SYNC (hooks) before it is acknowledged.  A
 * write that lands on fewer than min_replicas copies (or starts while fewer
 * are IN_SYNC) waits (stalled, its range given back so a resync can copy it)
 * for a copy to return, up to write_wait_ms from its arrival, then fails
 * with -EIO; it is never acknowledged on fewer.
 * Regions written without FUA since the last completed flush are remembered
 * (unflushed): a copy that fails may have lost them, so they go into its
 * bitmap too.
 *
 * Reads go to the local copy when IN_SYNC, else round robin over the remote
 * IN_SYNC copies; a failed read tries the next copy, and a copy that answered
 * -EIO (a block failing its CRC) is rewritten from a good one under the range
 * lock (mirror_xfer).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layout/mirror_internal.h"
#include "tessera/layout_module.h"
#include "tessera/test_hook.h"

uint64_t mirror_now_ns(void)
{
	return (uint64_t)tsr_mono_ns();
}

static bool on_home(const struct mirror *m)
{
	return m->io != NULL && pthread_equal(pthread_self(), m->home_thread);
}

/* ---- lifetime ----------------------------------------------------------- */

static void mirror_free(struct mirror *m)
{
	for (unsigned i = 0; i < m->n_copies; i++) {
		struct mcopy *c = &m->copies[i];

		mbm_close(&c->bm, false);
		mirror_missed_free(c);
		if (c->svol != NULL)
			tsr_svol_put(c->svol);
	}
	for (unsigned i = 0; i < m->n_retired; i++) {
		mbm_close(m->retired[i], false);
		free(m->retired[i]);
	}
	free(m->unflushed);
	free(m->unflushed_prev);
	mirror_xbuf_drop(m);
	mop_cache_drop(&m->wop_cache);
	mop_cache_drop(&m->mcop_cache);
	copyset_fini(&m->cs);
	free(m);
}

/* Atomic (copyset_get): control calls that do not wait (fence,
 * copy_returned) take a reference from their own thread for their message. */
void m_get(struct mirror *m)
{
	copyset_get(&m->cs);
}

void m_put(struct mirror *m)
{
	copyset_put(&m->cs);
}

unsigned mirror_in_sync(const struct mirror *m)
{
	unsigned n = 0;

	for (unsigned i = 0; i < m->n_copies; i++)
		if (m->copies[i].present && m->copies[i].state == TSR_COPY_IN_SYNC &&
		    m->copies[i].open)
			n++;
	return n;
}

uint32_t mirror_in_sync_mask(const struct mirror *m)
{
	uint32_t mask = 0;

	for (unsigned i = 0; i < m->n_copies; i++)
		if (m->copies[i].present && m->copies[i].state == TSR_COPY_IN_SYNC &&
		    m->copies[i].open)
			mask |= 1u << i;
	return mask;
}

void mirror_publish(struct mirror *m)
{
	struct tsr_layout_status s;

	memset(&s, 0, sizeof(s));
	s.epoch = m->epoch;
	s.ready = m->ready;
	s.fenced = m->fenced;
	s.n_copies = m->n_copies;
	s.in_sync = mirror_in_sync(m);
	for (unsigned i = 0; i < m->n_copies; i++) {
		const struct mcopy *c = &m->copies[i];

		snprintf(s.copies[i].node_id, sizeof(s.copies[i].node_id), "%s", c->node_id);
		s.copies[i].state = c->state;
		s.copies[i].connected = c->open;
		s.copies[i].dirty_bytes = c->bm.nset << m->region_shift;
	}
	s.resync_running = m->resync_running;
	s.resync_total_bytes = m->resync_total;
	s.resync_done_bytes = m->resync_done;
	s.resync_rate_bps = m->resync_rate_bps;
	if (m->resync_running && m->resync_rate_bps > 1.0 && m->resync_total > m->resync_done)
		s.resync_eta_sec =
		    (uint64_t)((double)(m->resync_total - m->resync_done) / m->resync_rate_bps);
	s.resync_bytes_copied = m->resync_bytes_copied;
	s.resync_regions_copied = m->resync_regions_copied;
	s.resync_copies = m->resync_copies;
	s.resync_flushes = m->resync_flushes;
	s.resync_max_inflight = m->resync_max_inflight;
	s.copy_buf_bytes_max = m->xbuf_bytes_max;
	s.bitmap_writes = m->bitmap_writes;
	s.writes = m->n_writes;
	s.reads = m->n_reads;
	for (unsigned i = 0; i < m->n_copies; i++) {
		const struct mcopy *c = &m->copies[i];
		struct tsr_svol_stats ss;

		if (c->present && c->local && c->svol != NULL) {
			tsr_svol_get_stats(c->svol, &ss);
			s.cached_reads += ss.cached_reads;
			s.crc_errors += ss.crc_errors;
		}
		/* every copy's, remote ones as their node last answered */
		if (c->present)
			copyset_stats_fill(&c->base, &s.copies[i], &s);
	}
	s.write_errors = m->write_errors;
	s.copy_failures = m->copy_failures;
	s.scrub_running = m->scrub_running;
	s.scrub_done = m->scrub_finished;
	s.scrub_total_bytes = m->scrub_total;
	s.scrub_done_bytes = m->scrub_done;
	s.scrub_mismatches = m->scrub_mismatches;
	s.scrub_repaired = m->scrub_repaired;
	s.scrub_unrepaired = m->scrub_unrepaired;
	copyset_publish(&m->cs, &s);
}

/* ---- hooks: copy states in the metadata store (copyset.c) -------------- */

void mirror_hook_request(struct mcopy *c, enum tsr_copy_state st, struct waiter *w)
{
	copyset_hook_request(&c->base, st, w);
}

/* ---- failures and fencing ----------------------------------------------- */

static void fail_waiting_writes(struct mirror *m);

void mirror_fence_now(struct mirror *m, const char *why)
{
	if (m->fenced)
		return;
	m->fenced = true;
	tsr_error("mirror %s: fenced at epoch %llu (%s): every I/O fails from now on", m->name,
		  (unsigned long long)m->epoch, why);
	for (unsigned i = 0; i < m->n_copies; i++) {
		if (m->copies[i].resync != NULL)
			mirror_resync_abort(&m->copies[i]);
		mirror_snap_replay_abort(&m->copies[i]);
	}
	mirror_scrub_abort(m);
	fail_waiting_writes(m);
	mirror_publish(m);
}

/* tsr_layout_fence from another thread: in force before its message runs. */
static bool fence_requested(struct mirror *m)
{
	return copyset_fence_requested(&m->cs);
}

/* Regions that a failing copy may have lost: written and not yet flushed. */
static void mark_unflushed(struct mcopy *c)
{
	struct mirror *m = c->m;

	for (uint64_t r = 0; r < m->nregions; r++) {
		uint8_t bit = (uint8_t)(1u << (r & 7));

		if ((r & 7) == 0 && r + 8 <= m->nregions &&
		    (m->unflushed[r >> 3] | m->unflushed_prev[r >> 3]) == 0) {
			r += 7;
			continue;
		}
		if ((m->unflushed[r >> 3] | m->unflushed_prev[r >> 3]) & bit)
			mbm_mark(&c->bm, r << m->region_shift, 1, NULL, NULL);
	}
}

void mirror_copy_failed(struct mcopy *c, int err)
{
	struct mirror *m = c->m;

	if (err == -ESTALE) {
		mirror_fence_now(m, "a copy has seen a newer epoch");
		return;
	}
	if (m->closing || !c->present)
		return;
	if (c->state == TSR_COPY_OUT_OF_SYNC) {
		if (!c->local && (c->open || c->connecting))
			mcopy_disconnect(c);
		return;
	}
	m->copy_failures++;
	tsr_warn("mirror %s: copy %u (%s) failed (%s): out of sync", m->name, c->idx, c->node_id,
		 strerror(-err));
	c->state = TSR_COPY_OUT_OF_SYNC;
	if (c->local)
		m->local_retry_ns = mirror_now_ns(); /* its next resync: in a while */
	if (c->resync != NULL)
		mirror_resync_abort(c);
	mark_unflushed(c);
	if (!c->local)
		mcopy_disconnect(c);
	/*
	 * Before ready, in memory only: an attach that fails (fewer than
	 * min_replicas left) must not shrink the recorded in-sync set, or every
	 * later attach is refused though no copy missed a write.  A start-up
	 * that goes on records it (start_done) before any host write.
	 */
	if (m->ready)
		mirror_hook_request(c, TSR_COPY_OUT_OF_SYNC, NULL);
	else
		c->start_failed = true;
	mirror_publish(m);
}

/* ---- writes, trims, write_zeroes, flushes -------------------------------- */

struct wsub {
	struct wop *op;
	struct mcopy *c;
	unsigned gen;      /* session: a failure of an old one is not news */
	unsigned slot_gen; /* the copy in the slot (replace) */
};

#define WOP_INLINE_SUMS 8 /* 32 KiB writes and below: no allocation */

struct wop {
	struct mirror *m;
	enum mcop_kind kind; /* WRITE, TRIM, ZEROES or FLUSH */
	uint64_t off, len;   /* FLUSH: 0, 0 */
	void *buf;
	unsigned flags;
	tsr_cb cb_fn;
	void *cb_arg;
	struct rlock rl; /* held from grant to completion, not while stalled (not FLUSH) */
	int pending;     /* copies, bitmap pages, hooks still awaited */
	int status;      /* -EIO once a dependency failed */
	uint32_t ok;     /* copies that have it */
	uint64_t submit_ns;
	bool stalled, blocked;
	struct wop *next; /* stalled or blocked list */
	/* one per copy for the launch in flight (a relaunch starts after all
	 * of them came back): no allocation per copy and write */
	struct wsub subs[TSR_MIRROR_MAX_COPIES];
	/*
	 * WRITE: its blocks' CRC32Cs, computed once in wop_submit for every
	 * copy (the local store's entries, each peer frame's data_crc) rather
	 * than once per copy; sums_inline up to WOP_INLINE_SUMS blocks, else
	 * allocated; NULL (no memory): each copy computes its own.
	 */
	uint32_t *sums;
	uint32_t sums_inline[WOP_INLINE_SUMS];
};


static void wop_launch(struct wop *op);

static void wop_put(struct mirror *m, struct wop *op)
{
	if (op->sums != op->sums_inline)
		free(op->sums);
	mop_cache_put(&m->wop_cache, op);
}

static void list_remove(struct wop **head, struct wop **tail, struct wop *op)
{
	struct wop **pp, *prev = NULL;

	for (pp = head; *pp != NULL; prev = *pp, pp = &(*pp)->next) {
		if (*pp == op) {
			*pp = op->next;
			if (tail != NULL && *tail == op)
				*tail = prev;
			op->next = NULL;
			return;
		}
	}
}

static void wop_complete(struct wop *op, int status)
{
	struct mirror *m = op->m;

	if (op->kind == MCOP_FLUSH) {
		if (--m->flushes_inflight == 0)
			memset(m->unflushed_prev, 0, (m->nregions + 7) / 8);
	}
	if (status < 0)
		m->write_errors++;
	op->cb_fn(op->cb_arg, status);
	if (op->kind != MCOP_FLUSH)
		rl_release(m, &op->rl);
	wop_put(m, op);
	m_put(m);
}

/*
 * Wait for min_replicas IN_SYNC copies.  The range is given back meanwhile:
 * nothing of ours is in flight, and a resync that would bring a copy back
 * may need to copy exactly this range.  Stalled writes retake their ranges
 * in arrival order when they go again (mirror_kick_stalled), and a newer
 * overlapping write stalls behind them, so the order on the copies holds.
 */
static void stall(struct wop *op)
{
	struct mirror *m = op->m;

	op->stalled = true;
	op->next = NULL;
	if (m->stalled_tail != NULL)
		m->stalled_tail->next = op;
	else
		m->stalled = op;
	m->stalled_tail = op;
	if (op->kind != MCOP_FLUSH && op->rl.held)
		rl_release(m, &op->rl);
}

static bool expired(const struct mirror *m, const struct wop *op, uint64_t now)
{
	return now - op->submit_ns >= (uint64_t)m->write_wait_ms * 1000000ull;
}

static void wop_finish(struct wop *op)
{
	struct mirror *m = op->m;
	unsigned ok = (unsigned)__builtin_popcount(op->ok);

	if (fence_requested(m) || m->closing || op->status < 0) {
		wop_complete(op, -EIO);
		return;
	}
	/* never acknowledge on fewer than min_replicas, or without an IN_SYNC copy */
	if (ok < m->min_replicas || (mirror_in_sync_mask(m) & ~op->ok) != 0) {
		if (expired(m, op, mirror_now_ns())) {
			tsr_error("mirror %s: write at %llu: %u copies in sync, %u needed: -EIO",
				  m->name, (unsigned long long)op->off, mirror_in_sync(m),
				  m->min_replicas);
			wop_complete(op, -EIO);
			return;
		}
		if (mirror_in_sync(m) >= m->min_replicas)
			wop_launch(op);
		else
			stall(op);
		return;
	}
	wop_complete(op, 0);
}

static void wop_dec(struct wop *op)
{
	if (--op->pending == 0)
		wop_finish(op);
}

static void wop_dep_done(void *arg, int status)
{
	struct wop *op = arg;

	if (status < 0)
		op->status = -EIO;
	wop_dec(op);
}

/* The write did not reach copy c: its regions go into c's bitmap, durably,
 * and c must be recorded OUT_OF_SYNC, before the write is acknowledged. */
static void wop_missed(struct wop *op, struct mcopy *c)
{
	int n;

	if (op->kind == MCOP_FLUSH)
		n = mbm_wait_all(&c->bm, wop_dep_done, op);
	else
		n = mbm_mark(&c->bm, op->off, op->len, wop_dep_done, op);
	if (n < 0)
		op->status = -EIO;
	else
		op->pending += n;
	/* recorded OUT_OF_SYNC with a RESYNCING hook in flight is fine: the bits
	 * are set before the walk starts */
	if (c->recorded != TSR_COPY_OUT_OF_SYNC) {
		struct waiter *w = calloc(1, sizeof(*w));

		if (w == NULL) {
			op->status = -EIO;
			return;
		}
		w->fn = wop_dep_done;
		w->arg = op;
		op->pending++;
		mirror_hook_request(c, TSR_COPY_OUT_OF_SYNC, w);
	}
}

static void wsub_done(void *arg, int status)
{
	struct wsub *s = arg;
	struct wop *op = s->op;
	struct mcopy *c = s->c;

	if (s->slot_gen != c->slot_gen) {
		/* the copy was replaced meanwhile: the new one gets a full resync */
	} else if (status == 0) {
		op->ok |= 1u << c->idx;
	} else if (status == -ESTALE) {
		mirror_fence_now(op->m, "a copy has seen a newer epoch");
	} else {
		if (s->gen == c->gen)
			mirror_copy_failed(c, status);
		if (c->present)
			wop_missed(op, c);
	}
	wop_dec(op);
}

static void wop_launch(struct wop *op)
{
	struct mirror *m = op->m;

	op->stalled = false;
	op->pending = 1;
	op->ok = 0;
	if (op->kind != MCOP_FLUSH && !(op->flags & TSR_WRITE_FUA))
		bits_set_range(m->unflushed, op->off >> m->region_shift,
			       (op->off + op->len - 1) >> m->region_shift);
	for (unsigned i = 0; i < m->n_copies; i++) {
		struct mcopy *c = &m->copies[i];
		struct wsub *s;
		int ret;

		if (!c->present)
			continue;
		if (!(c->open &&
		      (c->state == TSR_COPY_IN_SYNC || c->state == TSR_COPY_RESYNCING))) {
			wop_missed(op, c);
			continue;
		}
		s = &op->subs[i];
		s->op = op;
		s->c = c;
		s->gen = c->gen;
		s->slot_gen = c->slot_gen;
		op->pending++;
		if (op->kind == MCOP_WRITE)
			ret = mcopy_write_sums(c, op->off, op->len, op->buf, op->sums, op->flags,
					       wsub_done, s);
		else
			ret = mcopy_submit(c, op->kind, op->off, op->len, op->buf, op->flags,
					   wsub_done, s);
		if (ret < 0)
			wsub_done(s, ret);
	}
	wop_dec(op);
}

static void wop_start(struct wop *op)
{
	struct mirror *m = op->m;

	if (m->fenced || m->closing) {
		wop_complete(op, -EIO);
		return;
	}
	if (mirror_in_sync(m) < m->min_replicas) {
		stall(op);
		return;
	}
	wop_launch(op);
}

static void wop_granted(struct rlock *rl)
{
	struct wop *op = (struct wop *)((char *)rl - offsetof(struct wop, rl));

	op->blocked = false;
	list_remove(&op->m->blocked, NULL, op);
	wop_start(op);
}

void mirror_kick_stalled(struct mirror *m)
{
	while (m->stalled != NULL && mirror_in_sync(m) >= m->min_replicas && !m->fenced) {
		struct wop *op = m->stalled;

		m->stalled = op->next;
		if (m->stalled == NULL)
			m->stalled_tail = NULL;
		op->next = NULL;
		op->stalled = false;
		if (op->kind == MCOP_FLUSH || op->rl.held) {
			wop_launch(op);
		} else if (rl_acquire(m, &op->rl, op->off, op->len, wop_granted)) {
			wop_launch(op);
		} else {
			op->blocked = true;
			op->next = m->blocked;
			m->blocked = op;
		}
	}
}

/* Fail (-EIO) the writes waiting for min_replicas or for a range:
 * all of them (fenced, closing) or those past write_wait_ms. */
static void expire_writes(struct mirror *m, bool all)
{
	uint64_t now = mirror_now_ns();
	struct wop *op, *next;
	bool short_of_copies = mirror_in_sync(m) < m->min_replicas;

	for (op = m->stalled; op != NULL; op = next) {
		next = op->next;
		if (!all && !expired(m, op, now))
			continue;
		list_remove(&m->stalled, &m->stalled_tail, op);
		op->stalled = false;
		if (!all)
			tsr_error(
			    "mirror %s: write at %llu waited %u ms for %u in-sync copies: -EIO",
			    m->name, (unsigned long long)op->off, m->write_wait_ms,
			    m->min_replicas);
		wop_complete(op, -EIO);
		next = m->stalled; /* completing released a range: the list may have moved */
	}
	for (op = m->blocked; op != NULL; op = next) {
		next = op->next;
		if (!all && !(short_of_copies && expired(m, op, now)))
			continue;
		list_remove(&m->blocked, NULL, op);
		op->blocked = false;
		rl_cancel(m, &op->rl);
		wop_complete(op, -EIO);
		next = m->blocked;
	}
}

static void fail_waiting_writes(struct mirror *m)
{
	expire_writes(m, true);
}

static int wop_submit(struct mirror *m, struct tsr_io *io, enum mcop_kind kind, uint64_t off,
		      uint64_t len, const void *buf, unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	struct wop *op;

	if (io != m->io)
		return -EINVAL; /* not the home worker's thread */
	if (fence_requested(m) || m->closing || !m->ready)
		return -EIO;
	op = mop_cache_get(&m->wop_cache, sizeof(*op));
	if (op == NULL)
		return -ENOMEM;
	op->m = m;
	op->kind = kind;
	op->off = off;
	op->len = len;
	op->buf = (void *)buf;
	op->flags = flags;
	op->cb_fn = cb_fn;
	op->cb_arg = cb_arg;
	op->submit_ns = mirror_now_ns();
	if (kind == MCOP_WRITE && len % TSR_BLOCK_SIZE == 0) {
		uint64_t n = len / TSR_BLOCK_SIZE;

		op->sums = n <= WOP_INLINE_SUMS ? op->sums_inline : malloc(n * sizeof(*op->sums));
		if (op->sums != NULL)
			tsr_crc32c_blocks(buf, n, op->sums);
	}
	m_get(m);
	if (kind == MCOP_FLUSH) {
		for (uint64_t i = 0; i < (m->nregions + 7) / 8; i++) {
			m->unflushed_prev[i] |= m->unflushed[i];
			m->unflushed[i] = 0;
		}
		m->flushes_inflight++;
		wop_start(op);
		return 0;
	}
	m->n_writes++;
	if (rl_acquire(m, &op->rl, off, len, wop_granted)) {
		wop_start(op);
	} else {
		op->blocked = true;
		op->next = m->blocked;
		m->blocked = op;
	}
	return 0;
}

static int mirror_write(void *ctx, struct tsr_io *io, uint64_t offset, uint32_t len,
			const void *buf, unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	return wop_submit(ctx, io, MCOP_WRITE, offset, len, buf, flags & TSR_WRITE_FUA, cb_fn,
			  cb_arg);
}

static int mirror_flush(void *ctx, struct tsr_io *io, tsr_cb cb_fn, void *cb_arg)
{
	return wop_submit(ctx, io, MCOP_FLUSH, 0, 0, NULL, 0, cb_fn, cb_arg);
}

static int mirror_trim(void *ctx, struct tsr_io *io, uint64_t offset, uint64_t len, tsr_cb cb_fn,
		       void *cb_arg)
{
	return wop_submit(ctx, io, MCOP_TRIM, offset, len, NULL, 0, cb_fn, cb_arg);
}

static int mirror_write_zeroes(void *ctx, struct tsr_io *io, uint64_t offset, uint64_t len,
			       unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	return wop_submit(ctx, io, MCOP_ZEROES, offset, len, NULL, flags, cb_fn, cb_arg);
}

/* ---- reads --------------------------------------------------------------- */

struct rop {
	struct mirror *m;
	uint64_t off;
	uint32_t len;
	void *buf;
	tsr_cb cb_fn;
	void *cb_arg;
	uint32_t tried; /* copies asked */
	uint32_t bad;   /* copies that answered -EIO (bad blocks): repair them */
	int cur;
	int status;
	unsigned flags; /* MCOP_READ_DIRECT: the copies' disks, not their page cache */
};

int mirror_read_source(struct mirror *m, uint32_t exclude)
{
	unsigned n = m->n_copies, i;

	for (i = 0; i < n; i++) {
		struct mcopy *c = &m->copies[i];

		if (c->present && c->local && c->open && c->state == TSR_COPY_IN_SYNC &&
		    !(exclude & (1u << i)))
			return (int)i;
	}
	for (unsigned k = 0; k < n; k++) {
		struct mcopy *c;

		i = (m->read_rr + k) % n;
		c = &m->copies[i];
		if (c->present && c->open && c->state == TSR_COPY_IN_SYNC &&
		    !(exclude & (1u << i))) {
			m->read_rr = i + 1;
			return (int)i;
		}
	}
	return -1;
}

static void rop_next(struct rop *op);

static void read_repair_done(void *arg, int status, uint64_t bytes)
{
	struct mirror *m = arg;

	(void)bytes;
	if (status == 0)
		tsr_info("mirror %s: bad blocks repaired from a good copy", m->name);
	m_put(m);
}

static void rop_done(void *arg, int status)
{
	struct rop *op = arg;
	struct mirror *m = op->m;
	struct mcopy *c = &m->copies[op->cur];

	if (status == 0 && fence_requested(m))
		status = -EIO;
	if (status == 0) {
		if (op->bad != 0 && !m->fenced) {
			/* invariant 5: rewrite the bad copies from a good one */
			m_get(m);
			if (mirror_xfer(m, op->off, op->len, op->bad, false, op->cur,
					read_repair_done, m) < 0)
				m_put(m);
		}
		op->cb_fn(op->cb_arg, 0);
		free(op);
		m_put(m);
		return;
	}
	op->status = status;
	if (status == -EIO && c->state == TSR_COPY_IN_SYNC) {
		tsr_warn("mirror %s: read %llu+%u from copy %u (%s): -EIO, trying another copy",
			 m->name, (unsigned long long)op->off, op->len, op->cur, c->node_id);
		op->bad |= 1u << op->cur;
	} else if (status != -EIO) {
		mirror_copy_failed(c, status);
	}
	rop_next(op);
}

static void rop_next(struct rop *op)
{
	struct mirror *m = op->m;

	while (!m->fenced) {
		int i = mirror_read_source(m, op->tried);
		int ret;

		if (i < 0)
			break;
		op->tried |= 1u << i;
		op->cur = i;
		ret = mcopy_submit(&m->copies[i], MCOP_READ, op->off, op->len, op->buf, op->flags,
				   rop_done, op);
		if (ret == 0)
			return;
		op->status = ret;
	}
	/* every IN_SYNC copy failed (or fenced): the host sees -EIO */
	op->cb_fn(op->cb_arg, -EIO);
	free(op);
	m_put(m);
}

static int rop_submit(struct mirror *m, struct tsr_io *io, uint64_t offset, uint32_t len, void *buf,
		      unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	struct rop *op;

	if (io != m->io)
		return -EINVAL;
	if (fence_requested(m) || m->closing || !m->ready)
		return -EIO;
	if (mirror_read_source(m, 0) < 0)
		return -EIO;
	op = calloc(1, sizeof(*op));
	if (op == NULL)
		return -ENOMEM;
	op->m = m;
	op->off = offset;
	op->len = len;
	op->buf = buf;
	op->cb_fn = cb_fn;
	op->cb_arg = cb_arg;
	op->status = -EIO;
	op->flags = flags;
	m->n_reads++;
	m_get(m);
	rop_next(op);
	return 0;
}

static int mirror_read(void *ctx, struct tsr_io *io, uint64_t offset, uint32_t len, void *buf,
		       tsr_cb cb_fn, void *cb_arg)
{
	return rop_submit(ctx, io, offset, len, buf, 0, cb_fn, cb_arg);
}

/* A local copy through tsr_svol_read_direct, a remote one a READ with
 * TSR_PEER_F_DIRECT (mirror_copy.c); the rest as mirror_read (another copy
 * on -EIO, the bad one repaired). */
static int mirror_read_direct(void *ctx, struct tsr_io *io, uint64_t offset, uint32_t len,
			      void *buf, tsr_cb cb_fn, void *cb_arg)
{
	return rop_submit(ctx, io, offset, len, buf, MCOP_READ_DIRECT, cb_fn, cb_arg);
}

/* Any thread: an NBD handshake on another worker asks it (mirror_resize). */
static uint64_t mirror_size(void *ctx)
{
	return __atomic_load_n(&((struct mirror *)ctx)->size, __ATOMIC_ACQUIRE);
}

static int mirror_block_status(void *ctx, uint64_t offset, uint64_t len, struct tsr_extent *ext,
			       size_t max, size_t *count)
{
	struct mirror *m = ctx;

	for (unsigned i = 0; i < m->n_copies; i++) {
		struct mcopy *c = &m->copies[i];

		/* racy read of the local copy's state: a stale answer only says
		 * "allocated" where a hole is, or the reverse for one resync */
		if (c->present && c->local && c->svol != NULL &&
		    __atomic_load_n(&c->state, __ATOMIC_RELAXED) == TSR_COPY_IN_SYNC)
			return tsr_svol_block_status(c->svol, offset, len, ext, max, count);
	}
	ext[0].offset = offset;
	ext[0].length = len < m->size - offset ? len : m->size - offset;
	ext[0].flags = 0;
	*count = 1;
	return 0;
}

/* ---- the tick ------------------------------------------------------------ */

static void tick(void *arg, uint32_t events)
{
	struct mirror *m = arg;
	uint64_t v, now = mirror_now_ns();

	(void)events;
	if (read(m->timer_fd, &v, sizeof(v)) < 0) {
		/* EAGAIN: spurious wake-up */
	}
	if (m->closing)
		return;
	mirror_io_kick(m);
	for (unsigned i = 0; i < m->n_copies; i++)
		mbm_retry(&m->copies[i].bm);
	for (unsigned i = 0; i < m->n_retired; i++)
		mbm_retry(m->retired[i]);
	if (m->stalled != NULL || m->blocked != NULL)
		expire_writes(m, false);
	mirror_resync_tick(m, now);
	mirror_missed_tick(m, now);
	for (unsigned i = 0; i < m->n_copies; i++)
		if (m->copies[i].present)
			copyset_stats_tick(&m->copies[i].base, now);
	mirror_publish(m);
}

/* ---- start-up (home worker) ---------------------------------------------- */

/*
 * The end of the start-up.  Nothing was recorded before: a copy away or
 * failed on the way is OUT_OF_SYNC in memory only (mirror_copy_failed), so a
 * failed start-up leaves the copy states in the metadata store as they were.
 * A start-up that succeeds records those copies OUT_OF_SYNC and waits for the
 * records before it is ready: converge did not compare them (they may hold
 * writes of the previous coordinator that the others do not), and once the
 * attach returns a clean detach could tell the next attach that the copies
 * need no converging.  A record that fails fails the start-up.
 */
static void start_done(struct mirror *m)
{
	int status = m->start_status;

	if (status == 0 && m->fenced)
		status = m->start_status = -ESTALE;
	if (status == 0) {
		m->ready = true;
		for (unsigned i = 0; i < m->n_copies; i++) {
			struct mcopy *c = &m->copies[i];

			/* failed while its record was on its way */
			if (c->start_failed && c->recorded != TSR_COPY_OUT_OF_SYNC)
				mirror_hook_request(c, TSR_COPY_OUT_OF_SYNC, NULL);
			else if (c->resync_queued)
				mirror_resync_start(c);
		}
	}
	for (unsigned i = 0; i < m->n_copies; i++)
		m->copies[i].start_failed = false;
	mirror_publish(m);
	sem_post(&m->cs.sem);
}

static void start_record_done(void *arg, int status)
{
	struct mirror *m = arg;

	if (status < 0 && m->start_status == 0)
		m->start_status = -EIO; /* hook_done_msg logged the cause */
	if (--m->start_pending == 0)
		start_done(m);
}

static void start_finish(struct mirror *m, int status)
{
	m->start_status = status;
	if (status < 0) {
		start_done(m);
		return;
	}
	m->start_pending = 1;
	for (unsigned i = 0; i < m->n_copies; i++) {
		struct mcopy *c = &m->copies[i];
		struct waiter *w;

		/* an IN_SYNC copy marked full_resync was just compared by
		 * converge: nothing of it is suspect any more */
		if (c->open && c->state == TSR_COPY_IN_SYNC && c->full_resync) {
			c->full_resync = false;
			mbm_clear_all(&c->bm);
		}
		if (!c->present || c->recorded == TSR_COPY_OUT_OF_SYNC ||
		    (c->open && !c->start_failed))
			continue;
		w = calloc(1, sizeof(*w));
		if (w == NULL) {
			m->start_status = -ENOMEM;
			break;
		}
		c->start_failed = false; /* recorded here */
		w->fn = start_record_done;
		w->arg = m;
		m->start_pending++;
		mirror_hook_request(c, TSR_COPY_OUT_OF_SYNC, w);
	}
	if (--m->start_pending == 0)
		start_done(m);
}

static void converge_done(void *arg, int status)
{
	struct mirror *m = arg;

	if (status < 0)
		tsr_error("mirror %s: converge: %s", m->name, strerror(-status));
	if (m->fenced)
		status = -ESTALE;
	else if (mirror_in_sync(m) < m->min_replicas)
		status = -EIO;
	start_finish(m, status < 0 ? status : 0);
}

static void start_evaluate(struct mirror *m)
{
	int ret;

	if (m->start_status < 0) {
		start_finish(m, m->start_status);
		return;
	}
	for (unsigned i = 0; i < m->n_copies; i++) {
		struct mcopy *c = &m->copies[i];

		/* suspect, and no converge to compare it: resync it (compared) */
		if (c->state == TSR_COPY_IN_SYNC && c->full_resync && !m->converge)
			c->state = TSR_COPY_OUT_OF_SYNC;
		if (c->state == TSR_COPY_IN_SYNC && !c->open) {
			c->state = TSR_COPY_OUT_OF_SYNC;
		} else if (c->state != TSR_COPY_IN_SYNC) {
			c->state = TSR_COPY_OUT_OF_SYNC;
			c->resync_queued = c->open;
		}
	}
	if (mirror_in_sync(m) < m->min_replicas) {
		tsr_error("mirror %s: %u copies in sync and reachable, %u needed", m->name,
			  mirror_in_sync(m), m->min_replicas);
		start_finish(m, -EIO);
		return;
	}
	if (m->converge) {
		ret = mirror_scrub_begin(m, true, true, converge_done, m);
		if (ret == 0)
			return;
		start_finish(m, ret);
		return;
	}
	start_finish(m, 0);
}

static void start_open_done(void *arg, int status)
{
	struct mcopy *c = arg;
	struct mirror *m = c->m;

	if (status < 0)
		copyset_start_open_failed(&c->base, status, &m->start_status);
	if (--m->start_pending == 0)
		start_evaluate(m);
}

static void start_msg(struct tsr_worker *w, void *arg)
{
	struct mirror *m = arg;
	int ret;

	m->io = tsr_worker_io(w);
	m->home_thread = pthread_self();
	ret = copyset_timer_start(&m->cs, w, MIRROR_TICK_MS, tick, m, &m->timer_fd);
	if (ret < 0) {
		start_finish(m, ret);
		return;
	}
	m->start_pending = 1;
	for (unsigned i = 0; i < m->n_copies; i++) {
		struct mcopy *c = &m->copies[i];

		if (c->local)
			continue;
		m->start_pending++;
		ret = mcopy_connect(c, start_open_done, c);
		if (ret < 0)
			start_open_done(c, ret);
	}
	if (--m->start_pending == 0)
		start_evaluate(m);
}

/* ---- teardown (home worker) ---------------------------------------------- */

static void teardown(struct mirror *m)
{
	if (m->closing)
		return;
	m->closing = true;
	m->ready = false;
	for (unsigned i = 0; i < m->n_copies; i++) {
		if (m->copies[i].resync != NULL)
			mirror_resync_abort(&m->copies[i]);
		mirror_snap_replay_abort(&m->copies[i]);
	}
	mirror_scrub_abort(m);
	fail_waiting_writes(m);
	mirror_io_kick(m); /* local ops waiting for io queue room: -ECANCELED */
	for (unsigned i = 0; i < m->n_copies; i++)
		mbm_retry(&m->copies[i].bm); /* page writes waiting: -ECANCELED */
	for (unsigned i = 0; i < m->n_retired; i++)
		mbm_retry(m->retired[i]);
	for (unsigned i = 0; i < m->n_copies; i++)
		mcopy_disconnect(&m->copies[i]);
	copyset_timer_stop(&m->cs, &m->timer_fd);
	mirror_publish(m);
	m_put(m); /* the layout's own reference: freed once the last op is back */
}

static void mirror_destroy(void *ctx)
{
	struct mirror *m = ctx;

	if (m != NULL)
		copyset_destroy(&m->cs, m->io != NULL, on_home(m));
}

static void mirror_copy_returned(void *ctx, unsigned idx, const char *address);
static int mirror_replace_copy(void *ctx, unsigned idx, const struct tsr_layout_copy *copy);
static void mirror_fence(void *ctx);
static int mirror_scrub_start(void *ctx, bool repair);
static void mirror_get_status(void *ctx, struct tsr_layout_status *out);
static int mirror_resize(void *ctx, uint64_t new_size, bool check_only, char *why,
			 size_t why_len);

static const struct tsr_layout_ops mirror_layout_ops = {
    .name = "mirror",
    .size = mirror_size,
    .read = mirror_read,
    .read_direct = mirror_read_direct,
    .write = mirror_write,
    .flush = mirror_flush,
    .trim = mirror_trim,
    .write_zeroes = mirror_write_zeroes,
    .block_status = mirror_block_status,
    .snap = mirror_snap,
    .copy_returned = mirror_copy_returned,
    .replace_copy = mirror_replace_copy,
    .fence = mirror_fence,
    .scrub_start = mirror_scrub_start,
    .get_status = mirror_get_status,
    .destroy = mirror_destroy,
    .resize = mirror_resize,
};

bool tsr_layout_is_mirror(const struct tsr_layout *l)
{
	return l != NULL && tsr_layout_ops_of(l) == &mirror_layout_ops;
}

/* ---- control calls -------------------------------------------------------- */

/* A control call's arguments (copyset_call: run on the home worker, waited
 * for). */
struct ctl {
	struct mirror *m;
	unsigned idx;
	char oldpath[PATH_MAX]; /* replace: the old copy's bitmap file */
	char oldjournal[PATH_MAX]; /* replace: the old copy's journal of missed snapshots */
	const char *newmissed;  /* replace: the snapshots the new copy gets (may be NULL) */
	bool repair;
	struct mcopy newcopy;
	struct mbitmap *newbm;
	struct tsr_svol *newsvol;
};

static void returned_open_done(void *arg, int status)
{
	struct mcopy *c = arg;
	struct mirror *m = c->m;

	if (status < 0) {
		copyset_returned_open_failed(&c->base, status);
		if (m->replace_running && c->idx == m->replace_idx)
			m->replace_running = false;
		mirror_publish(m);
		return;
	}
	mirror_resync_start(c);
}

static void copy_returned_fn(void *layout, unsigned idx, const char *address)
{
	struct mirror *m = layout;
	struct mcopy *c = &m->copies[idx];

	if (m->closing || m->fenced || !c->present || c->state != TSR_COPY_OUT_OF_SYNC ||
	    c->connecting || c->resync != NULL || c->replay != NULL)
		return; /* in sync, or already on its way back */
	if (address[0] != '\0')
		snprintf(c->address, sizeof(c->address), "%s", address);
	copyset_reopen(&c->base, returned_open_done, c);
}

/* Does not wait for the home worker (callers may hold locks its hooks take). */
static void mirror_copy_returned(void *ctx, unsigned idx, const char *address)
{
	struct mirror *m = ctx;

	if (m != NULL && idx < m->n_copies)
		copyset_copy_returned(&m->cs, idx, address, copy_returned_fn);
}

static int replace_fn(void *arg)
{
	struct ctl *ctl = arg;
	struct mirror *m = ctl->m;
	struct mcopy *c = &m->copies[ctl->idx];
	struct mbitmap *old;

	if (m->closing || m->fenced)
		return -EIO;
	if (m->replace_running)
		return -EBUSY;
	old = malloc(sizeof(*old));
	if (old == NULL)
		return -ENOMEM;
	/* drop the old copy: its in-flight ops fail into a slot no longer present */
	if (c->resync != NULL)
		mirror_resync_abort(c);
	if (c->state == TSR_COPY_IN_SYNC)
		m->copy_failures++;
	c->present = false;
	mcopy_disconnect(c);
	if (c->svol != NULL)
		ctl->newsvol = c->svol; /* the old local handle goes back to the caller to put */
	/* waiters of the old slot's hooks: a new slot never records their states */
	copyset_hook_forget(&c->base);
	mirror_missed_path(c, ctl->oldjournal);
	*old = c->bm;
	m->retired[m->n_retired++] = old;
	c->bm = *ctl->newbm;
	free(ctl->newbm);
	ctl->newbm = NULL;
	snprintf(c->node_id, sizeof(c->node_id), "%s", ctl->newcopy.node_id);
	snprintf(c->address, sizeof(c->address), "%s", ctl->newcopy.address);
	c->local = ctl->newcopy.local;
	c->svol = ctl->newcopy.svol;
	c->open = c->local && c->svol != NULL;
	c->present = true;
	c->state = TSR_COPY_OUT_OF_SYNC;
	c->recorded = ctl->newcopy.state;
	c->hook_want = c->recorded;
	c->full_resync = true;
	c->head_imaged = false;
	m->replace_running = true;
	m->replace_idx = ctl->idx;
	mirror_snap_replay_abort(c);
	mirror_missed_all(c, ctl->newmissed); /* the new copy gets every snapshot */
	memcpy(ctl->oldpath, old->path, sizeof(ctl->oldpath));
	copyset_reopen(&c->base, returned_open_done, c);
	mirror_publish(m);
	return 0;
}

/* The tests replace_fn makes before it takes the slot (replace check). */
static int replace_check_fn(void *arg)
{
	struct ctl *ctl = arg;
	struct mirror *m = ctl->m;

	if (m->closing || m->fenced)
		return -EIO;
	if (m->replace_running)
		return -EBUSY;
	return 0;
}

/* copy NULL: only check (tsr_layout_replace_check), change nothing. */
static int mirror_replace_copy(void *ctx, unsigned idx, const struct tsr_layout_copy *copy)
{
	struct mirror *m = ctx;
	struct ctl ctl = {.m = m, .idx = idx};
	char path[PATH_MAX];
	int ret;

	if (m == NULL || idx >= m->n_copies || (copy != NULL && copy->node_id[0] == '\0'))
		return -EINVAL;
	if (m->n_retired >= TSR_MIRROR_MAX_COPIES * 4)
		return -EBUSY;
	if (copy == NULL)
		return copyset_call(&m->cs, on_home(m), replace_check_fn, &ctl);
	ctl.newbm = calloc(1, sizeof(*ctl.newbm));
	if (ctl.newbm == NULL)
		return -ENOMEM;
	snprintf(ctl.newcopy.node_id, sizeof(ctl.newcopy.node_id), "%s", copy->node_id);
	snprintf(ctl.newcopy.address, sizeof(ctl.newcopy.address), "%s", copy->address);
	ctl.newcopy.local = copy->local;
	ctl.newcopy.state = copy->state;
	ctl.newmissed = copy->missed;
	if (copy->local) {
		ret = tsr_store_vol_open(m->store, m->name, &ctl.newcopy.svol);
		if (ret == 0)
			ret = tsr_store_vol_set_epoch(m->store, m->name, m->epoch);
		/* as at create: a copy smaller than the volume is refused */
		if (ret == 0)
			ret = copyset_check_size(&m->cs, ctl.newcopy.svol, "local copy");
		if (ret < 0)
			goto err;
	}
	ret = copyset_bitmap_path(&m->cs, copy->node_id, path);
	if (ret < 0)
		goto err;
	ret = mbm_open(ctl.newbm, m, path, false, true);
	if (ret < 0)
		goto err;
	ret = copyset_call(&m->cs, on_home(m), replace_fn, &ctl);
	if (ret < 0)
		goto err;
	/* the old copy's bitmap file goes (its fd is closed at teardown), and
	 * its journal of missed snapshots (the new copy has its own) */
	unlink(ctl.oldpath);
	if (ctl.oldjournal[0] != '\0')
		unlink(ctl.oldjournal);
	if (ctl.newsvol != NULL)
		tsr_svol_put(ctl.newsvol);
	return 0;
err:
	if (ctl.newbm != NULL) {
		mbm_close(ctl.newbm, true);
		free(ctl.newbm);
	}
	if (ctl.newcopy.svol != NULL)
		tsr_svol_put(ctl.newcopy.svol);
	return ret;
}

/* Does not wait for the home worker (copyset_fence). */
static void mirror_fence(void *ctx)
{
	struct mirror *m = ctx;

	if (m != NULL)
		copyset_fence(&m->cs, on_home(m));
}

static void scrub_done_log(void *arg, int status)
{
	struct mirror *m = arg;

	tsr_info("mirror %s: scrub %s: %llu mismatches, %llu repaired, %llu unrepaired", m->name,
		 status == 0 ? "done" : strerror(-status), (unsigned long long)m->scrub_mismatches,
		 (unsigned long long)m->scrub_repaired, (unsigned long long)m->scrub_unrepaired);
}

static int scrub_fn(void *arg)
{
	struct ctl *ctl = arg;
	struct mirror *m = ctl->m;

	if (m->closing || m->fenced)
		return -EIO;
	return mirror_scrub_begin(m, ctl->repair, false, scrub_done_log, m);
}

static int mirror_scrub_start(void *ctx, bool repair)
{
	struct mirror *m = ctx;
	struct ctl ctl = {.m = m, .repair = repair};

	return copyset_call(&m->cs, on_home(m), scrub_fn, &ctl);
}

/* ---- online growth -------------------------------------------------------- */

/*
 * tsr_layout_resize.  The copies were grown by the caller (their stores)
 * before; the metadata record names the new size.  Three steps:
 *  1. home worker (resize_check_fn): may a grow run now?  Every copy
 *     present, open and IN_SYNC, no resync, rebuild (replace), snapshot
 *     make-up or scrub running: a copy that is not in sync has a bitmap
 *     meant for the old size and a resync that may be reading it, and a
 *     scrub's or make-up's range was fixed when it began;
 *  2. control thread: each copy's bitmap file gets its new pages and a header
 *     naming the new size (mbm_grow_file), durable;
 *  3. home worker (resize_grow_fn): the in-memory bitmaps, the regions
 *     written since the last flush, then the size: a write past the old end
 *     is accepted from here on, and only from here.
 * A copy that fails between 1 and 3 is harmless: it was grown (the caller),
 * and the grown regions are clear in its bitmap because nothing wrote them;
 * a write past the old end made after 3 marks them as any write does.
 *
 * Crash points (the cluster's order: copies grown, record, this):
 *  - before 2: bitmap headers name the old size, the record the new one: at
 *    the next attach a copy that is not IN_SYNC opens its bitmap with load,
 *    whose header disagrees: every region dirty, full_resync (its blocks
 *    compared by sums, mirror.c create), nothing acknowledged lost (writes
 *    past the old end were not accepted before 3);
 *  - between 2 and 3: headers name the new size as the record does, the bits
 *    of the old regions are as persisted, the new ones clear (never
 *    written): the ordinary rule;
 *  - an IN_SYNC copy's bitmap is not loaded at attach (create: load only when
 *    not IN_SYNC), and a coordinator that died converges the copies anyway.
 */
struct resize_ctl {
	struct mirror *m;
	uint64_t new_size, new_nregions;
	char *why;
	size_t why_len;
};

static int resize_check_fn(void *arg)
{
	struct resize_ctl *rc = arg;
	struct mirror *m = rc->m;
	int ret;

	ret = copyset_resize_gate(&m->cs, rc->why, rc->why_len);
	if (ret < 0)
		return ret;
	if (!m->ready) {
		snprintf(rc->why, rc->why_len, "'%s' is still starting (converging its copies): "
			 "retry when tessera volume status shows it ready", m->name);
		return -EBUSY;
	}
	for (unsigned i = 0; i < m->n_copies; i++) {
		const struct mcopy *c = &m->copies[i];

		if (!c->present)
			continue;
		if (c->replay != NULL) {
			snprintf(rc->why, rc->why_len, "the snapshots copy %u (%s) missed are being "
				 "made up: retry when tessera volume status shows every copy in "
				 "sync", i, c->node_id);
			return -EBUSY;
		}
		if (c->resync != NULL || (m->replace_running && m->replace_idx == i)) {
			snprintf(rc->why, rc->why_len, "copy %u (%s) is being %s: retry when "
				 "tessera volume status shows every copy in sync", i, c->node_id,
				 m->replace_running && m->replace_idx == i ? "rebuilt" :
				 "resynced");
			return -EBUSY;
		}
		if (c->state != TSR_COPY_IN_SYNC || !c->open) {
			snprintf(rc->why, rc->why_len, "copy %u (%s) is not in sync (its node away, "
				 "or it failed): bring the node back and wait for its resync, or "
				 "tessera volume replace-replica %s --node %s", i, c->node_id,
				 m->name, c->node_id);
			return -EBUSY;
		}
	}
	if (m->resync_running || m->replace_running) {
		snprintf(rc->why, rc->why_len, "a resync of '%s' is running: retry when tessera "
			 "volume status shows it done", m->name);
		return -EBUSY;
	}
	if (m->layout != NULL && tsr_layout_snap_busy(m->layout)) {
		snprintf(rc->why, rc->why_len, "a snapshot of '%s' is being cut or deleted: retry "
			 "when it is done", m->name);
		return -EBUSY;
	}
	if (m->scrub != NULL || m->scrub_running) {
		snprintf(rc->why, rc->why_len, "a scrub of '%s' is running: retry when tessera "
			 "volume status shows it done", m->name);
		return -EBUSY;
	}
	return 0;
}

static int resize_grow_fn(void *arg)
{
	struct resize_ctl *rc = arg;
	struct mirror *m = rc->m;
	size_t old_bytes = (m->nregions + 7) / 8, new_bytes = (rc->new_nregions + 7) / 8;
	int ret;

	ret = copyset_resize_gate(&m->cs, rc->why, rc->why_len);
	if (ret < 0)
		return ret;
	if (new_bytes > old_bytes) {
		uint8_t *u = calloc(new_bytes, 1), *p = calloc(new_bytes, 1);

		if (u == NULL || p == NULL) {
			free(u);
			free(p);
			return -ENOMEM;
		}
		memcpy(u, m->unflushed, old_bytes);
		memcpy(p, m->unflushed_prev, old_bytes);
		free(m->unflushed);
		free(m->unflushed_prev);
		m->unflushed = u;
		m->unflushed_prev = p;
	}
	for (unsigned i = 0; i < m->n_copies; i++) {
		if (!m->copies[i].present)
			continue;
		ret = mbm_grow(&m->copies[i].bm, rc->new_nregions);
		if (ret < 0)
			return ret; /* larger bitmaps than regions: harmless, a retry goes on */
	}
	m->nregions = rc->new_nregions;
	m->cs.copy_size = rc->new_size; /* a copy that opens again must be this large */
	__atomic_store_n(&m->size, rc->new_size, __ATOMIC_RELEASE);
	mirror_publish(m);
	return 0;
}

static int mirror_resize(void *ctx, uint64_t new_size, bool check_only, char *why,
			 size_t why_len)
{
	struct mirror *m = ctx;
	struct resize_ctl rc = {
	    .m = m,
	    .new_size = new_size,
	    .new_nregions = (new_size + m->region_size - 1) >> m->region_shift,
	    .why = why,
	    .why_len = why_len,
	};
	uint64_t old_size = mirror_size(m);
	int ret;

	ret = copyset_call(&m->cs, on_home(m), resize_check_fn, &rc);
	if (ret < 0 || check_only || new_size == old_size) {
		if (ret < 0 && why[0] == '\0')
			snprintf(why, why_len, "%s", strerror(-ret));
		return ret;
	}
	/* bm's fd, path and page count change only by a replace or a grow, which
	 * run on this (the control) thread too */
	for (unsigned i = 0; i < m->n_copies; i++) {
		struct mcopy *c = &m->copies[i];

		if (!c->present)
			continue;
		ret = mbm_grow_file(&c->bm, new_size, rc.new_nregions);
		if (ret < 0) {
			snprintf(why, why_len, "cannot grow the dirty-region bitmap of copy %u (%s) "
				 "in %s: %s (the volume keeps its size; retry)", i, c->node_id,
				 m->state_dir, strerror(-ret));
			return ret;
		}
	}
	ret = copyset_call(&m->cs, on_home(m), resize_grow_fn, &rc);
	if (ret < 0) {
		if (why[0] == '\0')
			snprintf(why, why_len, "cannot grow the layout of '%s': %s (retry)", m->name,
				 strerror(-ret));
		return ret;
	}
	tsr_info("mirror %s: grown online from %llu to %llu bytes (%llu regions)", m->name,
		 (unsigned long long)old_size, (unsigned long long)new_size,
		 (unsigned long long)rc.new_nregions);
	return 0;
}

static void mirror_get_status(void *ctx, struct tsr_layout_status *out)
{
	copyset_get_status(&((struct mirror *)ctx)->cs, out);
}

/* ---- create (control thread) ---------------------------------------------- */

/* copyset.c's view of the layout */
static void cs_free(void *layout)
{
	mirror_free(layout);
}

static void cs_teardown(void *layout)
{
	teardown(layout);
}

static void cs_copy_failed(struct copyset_copy *c, int err)
{
	mirror_copy_failed(copyset_copy_of(c, struct mcopy), err);
}

static void cs_fence_now(void *layout, const char *why)
{
	mirror_fence_now(layout, why);
}

static const struct copyset_ops mirror_copyset_ops = {
    .free = cs_free,
    .teardown = cs_teardown,
    .copy_failed = cs_copy_failed,
    .fence_now = cs_fence_now,
};

static int check_opts(const struct tsr_mirror_opts *o)
{
	if (o == NULL || o->name == NULL || !tsr_valid_name(o->name) || o->size == 0 ||
	    o->size % TSR_BLOCK_SIZE || o->home == NULL || o->state_dir == NULL ||
	    o->node_id == NULL || o->n_copies == 0 || o->n_copies > TSR_MIRROR_MAX_COPIES ||
	    o->min_replicas == 0 || o->min_replicas > o->n_copies ||
	    o->hooks.set_copy_state == NULL)
		return -EINVAL;
	if (o->region_size != 0 &&
	    (o->region_size < (64u << 10) || (o->region_size & (o->region_size - 1))))
		return -EINVAL;
	return copyset_check_copies(o->copies, o->n_copies, o->store);
}

int tsr_layout_mirror_create(const struct tsr_mirror_opts *opts, struct tsr_layout **out)
{
	struct mirror *m;
	int ret;

	ret = check_opts(opts);
	if (ret < 0)
		return ret;
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return -ENOMEM;
	m->timer_fd = -1;
	snprintf(m->name, sizeof(m->name), "%s", opts->name);
	snprintf(m->node_id, sizeof(m->node_id), "%s", opts->node_id);
	snprintf(m->token, sizeof(m->token), "%s", opts->token ? opts->token : "");
	snprintf(m->state_dir, sizeof(m->state_dir), "%s", opts->state_dir);
	m->size = opts->size;
	m->epoch = opts->epoch;
	m->store = opts->store;
	m->home = opts->home;
	m->min_replicas = opts->min_replicas;
	m->peer_timeout_ms = opts->peer_timeout_ms ? opts->peer_timeout_ms : 5000;
	m->write_wait_ms = opts->write_wait_ms ? opts->write_wait_ms : 30000;
	m->resync_rate = opts->resync_rate;
	m->local_retry_period_ns =
	    (uint64_t)tsr_test_env_ms("TSR_TEST_MIRROR_LOCAL_RETRY_MS", 500,
				      (int)(MIRROR_LOCAL_RETRY_NS / 1000000),
				      (int)(MIRROR_LOCAL_RETRY_NS / 1000000)) * 1000000;
	m->region_size = opts->region_size ? opts->region_size : (1u << 20);
	m->region_shift = (unsigned)__builtin_ctz(m->region_size);
	m->nregions = (m->size + m->region_size - 1) >> m->region_shift;
	m->converge = opts->converge;
	m->hooks = opts->hooks;
	m->n_copies = opts->n_copies;
	m->cs = (struct copyset){
	    .ops = &mirror_copyset_ops,
	    .layout = m,
	    .kind = "mirror",
	    .name = m->name,
	    .node_id = m->node_id,
	    .token = m->token,
	    .state_dir = m->state_dir,
	    .peer_timeout_ms = m->peer_timeout_ms,
	    .epoch = m->epoch,
	    .copy_size = m->size,
	    .store = m->store,
	    .home = m->home,
	    .hooks = &m->hooks,
	    .closing = &m->closing,
	    .fenced = &m->fenced,
	    .fence_req = &m->fence_req,
	};
	copyset_init(&m->cs);
	m->unflushed = calloc((m->nregions + 7) / 8, 1);
	m->unflushed_prev = calloc((m->nregions + 7) / 8, 1);
	if (m->unflushed == NULL || m->unflushed_prev == NULL) {
		ret = -ENOMEM;
		goto err;
	}
	for (unsigned i = 0; i < m->n_copies; i++) {
		const struct tsr_layout_copy *oc = &opts->copies[i];
		struct mcopy *c = &m->copies[i];
		char path[PATH_MAX];

		copyset_copy_init(&c->base, &m->cs, i, oc);
		c->m = m;
		c->present = true;
		c->bm.fd = -1;
		/*
		 * Converging: the last coordinator died with writes in flight,
		 * and any copy may hold blocks of them that the others lack.
		 * The converge compares only the copies open and IN_SYNC when
		 * it runs; every other one (away, failing on the way, out of
		 * sync or resyncing, whose bitmap misses what it got and the
		 * others did not) is resynced comparing every block: the bits
		 * are all set durably here, before anything is recorded, and
		 * start_finish clears them for the copies the converge compared.
		 */
		c->full_resync = oc->full_resync || opts->converge;
		ret = copyset_bitmap_path(&m->cs, oc->node_id, path);
		if (ret < 0)
			goto err;
		ret = mbm_open(&c->bm, m, path, oc->state != TSR_COPY_IN_SYNC, c->full_resync);
		if (ret < 0)
			goto err;
		if (ret == 0 && c->bm.stale_header && !c->full_resync) {
			/* its bitmap missed a grow (mirror_resize): compare every block */
			tsr_warn("mirror %s: copy %u (%s): its bitmap is for another size than "
				 "the volume's %llu bytes: full resync, compared by sums", m->name,
				 i, oc->node_id, (unsigned long long)m->size);
			c->full_resync = true;
		}
		/* ret 0: no bitmap loaded, every region dirty (a rebuild in full) */
		ret = mirror_missed_load(c, oc->missed, c->full_resync || ret == 0);
		if (ret < 0)
			goto err;
		if (c->local) {
			ret = copyset_open_local(&c->base, "local copy");
			if (ret < 0)
				goto err;
		}
	}
	/* from here the layout is freed or destroyed on failure */
	ret = copyset_start(&m->cs, start_msg, &m->start_status, &mirror_layout_ops, out);
	if (ret < 0)
		return ret;
	m->layout = *out;
	tsr_info("mirror %s: ready, epoch %llu, %u of %u copies in sync", m->name,
		 (unsigned long long)m->epoch, m->cs.status.in_sync, m->n_copies);
	return 0;
err:
	mirror_free(m);
	return ret;
}
