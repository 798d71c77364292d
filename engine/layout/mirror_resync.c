/*
 * Mirror layout: region copies.
 *
 * mirror_xfer() copies a range from an IN_SYNC copy to some others, holding
 * the range lock so that no host write lands between the read and the
 * write (a write to the range waits, then reaches the target too), and
 * writes with FUA.  Read repair and scrub use it; scrub holds its chunk's
 * lock already and passes nolock.  A range over MIRROR_IO_PIECE (a region
 * of a --region-size over 32 MiB) is copied piece by piece through one
 * buffer of MIRROR_IO_PIECE bytes (read a piece, write it, the next), the
 * lock held across all of them: no copy buffer is larger than a piece.
 *
 * Resync of one copy (DESIGN.md invariant 7): the copy is opened, recorded
 * RESYNCING (hooks; from then on it receives host writes), then its dirty
 * bitmap is walked as a pipeline:
 *  - a copy covers a run of contiguous dirty regions, up to
 *    MIRROR_RESYNC_IO bytes (a run never mixes regions the local source
 *    holds as holes with regions it holds data in: holes are trimmed);
 *  - up to MIRROR_RESYNC_DEPTH copies and MIRROR_RESYNC_INFLIGHT_BYTES are
 *    in flight at once, each reading the source under the run's range lock
 *    and writing the target WITHOUT FUA, so the reads of the next runs
 *    overlap the writes of the previous ones;
 *  - copies done are batched; a batch is made durable by one FLUSH of the
 *    target when it reaches MIRROR_RESYNC_FLUSH_BYTES, when nothing is left
 *    to copy, or (throttled) when it is MIRROR_RESYNC_FLUSH_NS old; only
 *    when that flush succeeds are the batch's regions cleared in the bitmap
 *    (one bitmap page write per page, not per region).
 * So a region is clean only once its copy is durable on the target: a crash
 * of the target before the flush leaves its bit set and it is copied again.
 * Copies keep going while a flush is in flight.  A token bucket refilled on
 * the layout's tick paces the copies when resync_rate is set.  When no bit
 * is left (every batch flushed) the copy is recorded IN_SYNC and counts for
 * acknowledgements.  Any failure of the copy on the way (a write, a flush)
 * makes it OUT_OF_SYNC again (mirror_copy_failed), with the bits not yet
 * cleared kept for the next attempt.  Before all this, the snapshot
 * operations the copy missed are replayed on it (mirror_snap.c), while it is
 * still OUT_OF_SYNC.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "layout/mirror_internal.h"

/* ---- one range copy ------------------------------------------------------ */

struct xfer {
	struct mirror *m;
	struct rlock rl;
	uint64_t off;
	uint32_t len;
	uint64_t poff; /* the piece being copied: [poff, poff + plen) */
	uint32_t plen;
	uint32_t dst; /* copies to write */
	bool nolock;
	int src;  /* copy read from */
	int hint; /* preferred source, -1 none */
	uint32_t tried; /* sources tried for this piece */
	bool hole; /* the source has a hole in the piece: trim the targets */
	unsigned wflags; /* TSR_WRITE_FUA, or 0: the caller flushes the targets */
	uint8_t *buf;
	uint32_t buf_len; /* allocated size of buf */
	int pending;
	int status;
	uint64_t bytes; /* written, summed over the targets */
	void (*done)(void *arg, int status, uint64_t bytes);
	void *arg;
};

struct xsub {
	struct xfer *x;
	struct mcopy *c;
	unsigned gen;
};

static void xfer_read(struct xfer *x);
static void xfer_finish(struct xfer *x, int status);

/* A piece is written (or failed): the next one, or the end. */
static void xfer_piece_done(struct xfer *x)
{
	uint64_t end = x->off + x->len;

	if (x->status < 0 || x->poff + x->plen >= end || x->m->fenced || x->m->closing) {
		xfer_finish(x, x->status < 0 ? x->status
				: x->poff + x->plen >= end ? 0 : -EIO);
		return;
	}
	x->poff += x->plen;
	x->plen = end - x->poff < MIRROR_IO_PIECE ? (uint32_t)(end - x->poff) : MIRROR_IO_PIECE;
	x->hint = x->src; /* the same source first; another if it cannot read this piece */
	x->tried = 0;
	x->hole = false;
	xfer_read(x);
}

/* The larger copy runs: a resync copy of merged regions (its buffer is at
 * most a piece: xbuf_class). */
static uint32_t xbuf_big(const struct mirror *m)
{
	return m->region_size > MIRROR_RESYNC_IO ? m->region_size : MIRROR_RESYNC_IO;
}

/* A buffer size class, never over a piece. */
static uint32_t xbuf_class(uint32_t len)
{
	return len < MIRROR_IO_PIECE ? len : MIRROR_IO_PIECE;
}

/*
 * A buffer of at least len bytes (len <= MIRROR_IO_PIECE), *alloc_len its
 * size: the smallest cached one that fits, else a new one of len rounded up
 * to the region size (big: to xbuf_big, so that the resync's buffers serve
 * any of its copies), a piece at most.  Counted in xbuf_bytes.
 */
static void *xbuf_get(struct mirror *m, uint32_t len, bool big, uint32_t *alloc_len)
{
	unsigned best = MIRROR_XBUF_CACHE;
	void *buf;

	for (unsigned i = 0; i < m->n_xbuf; i++)
		if (m->xbuf_len[i] >= len &&
		    (best == MIRROR_XBUF_CACHE || m->xbuf_len[i] < m->xbuf_len[best]))
			best = i;
	if (best < MIRROR_XBUF_CACHE) {
		buf = m->xbuf_cache[best];
		*alloc_len = m->xbuf_len[best];
		m->n_xbuf--;
		m->xbuf_cache[best] = m->xbuf_cache[m->n_xbuf];
		m->xbuf_len[best] = m->xbuf_len[m->n_xbuf];
		return buf;
	}
	if (len <= xbuf_class(m->region_size) && !big)
		*alloc_len = xbuf_class(m->region_size);
	else if (len <= xbuf_class(xbuf_big(m)))
		*alloc_len = xbuf_class(xbuf_big(m));
	else
		*alloc_len = len;
	buf = tsr_alloc_aligned(*alloc_len);
	if (buf != NULL) {
		m->xbuf_bytes += *alloc_len;
		if (m->xbuf_bytes > m->xbuf_bytes_max)
			m->xbuf_bytes_max = m->xbuf_bytes;
	}
	return buf;
}

static void xbuf_put(struct mirror *m, void *buf, uint32_t alloc_len)
{
	if (alloc_len <= xbuf_class(xbuf_big(m)) && m->n_xbuf < MIRROR_XBUF_CACHE) {
		m->xbuf_cache[m->n_xbuf] = buf;
		m->xbuf_len[m->n_xbuf++] = alloc_len;
	} else {
		m->xbuf_bytes -= alloc_len;
		tsr_free_aligned(buf);
	}
}

void mirror_xbuf_drop(struct mirror *m)
{
	while (m->n_xbuf > 0) {
		m->n_xbuf--;
		m->xbuf_bytes -= m->xbuf_len[m->n_xbuf];
		tsr_free_aligned(m->xbuf_cache[m->n_xbuf]);
	}
}

static void xfer_finish(struct xfer *x, int status)
{
	struct mirror *m = x->m;

	if (!x->nolock)
		rl_release(m, &x->rl);
	xbuf_put(m, x->buf, x->buf_len);
	x->done(x->arg, status, x->bytes);
	free(x);
	m_put(m);
}

static void xfer_write_done(void *arg, int status)
{
	struct xsub *s = arg;
	struct xfer *x = s->x;

	if (status == 0) {
		if (!x->hole)
			x->bytes += x->plen;
	} else {
		if (x->status == 0)
			x->status = status;
		if (s->gen == s->c->gen)
			mirror_copy_failed(s->c, status);
	}
	free(s);
	if (--x->pending == 0)
		xfer_piece_done(x);
}

static void xfer_read_done(void *arg, int status)
{
	struct xfer *x = arg;
	struct mirror *m = x->m;

	if (status < 0) {
		if (status != -EIO)
			mirror_copy_failed(&m->copies[x->src], status);
		xfer_read(x);
		return;
	}
	x->pending = 1;
	for (unsigned i = 0; i < m->n_copies; i++) {
		struct mcopy *c = &m->copies[i];
		struct xsub *s;
		int ret;

		if (!(x->dst & (1u << i)))
			continue;
		if (!c->present || !c->open) {
			x->status = -ENOTCONN;
			continue;
		}
		s = malloc(sizeof(*s));
		if (s == NULL) {
			x->status = -ENOMEM;
			continue;
		}
		s->x = x;
		s->c = c;
		s->gen = c->gen;
		x->pending++;
		/* FUA unless the caller flushes the targets before it relies on
		 * the copy (the resync's batches); a trim is durable either way
		 * (the store punches and syncs before completing) */
		if (x->hole)
			ret = mcopy_submit(c, MCOP_TRIM, x->poff, x->plen, NULL, 0, xfer_write_done,
					   s);
		else
			ret = mcopy_submit(c, MCOP_WRITE, x->poff, x->plen, x->buf, x->wflags,
					   xfer_write_done, s);
		if (ret < 0)
			xfer_write_done(s, ret);
	}
	if (--x->pending == 0)
		xfer_piece_done(x);
}

/* The local source reads [off, off+len) as one hole (lseek, no data read). */
static bool source_is_hole(struct mcopy *c, uint64_t off, uint32_t len)
{
	struct tsr_extent ext;
	size_t n = 0;

	if (!c->local || c->svol == NULL)
		return false;
	if (tsr_svol_block_status(c->svol, off, len, &ext, 1, &n) < 0 || n != 1)
		return false;
	return (ext.flags & TSR_EXTENT_HOLE) && ext.offset <= off &&
	       ext.offset + ext.length >= off + len;
}

static void xfer_read(struct xfer *x)
{
	struct mirror *m = x->m;
	int src, ret;

	while (!m->fenced && !m->closing) {
		src = -1;
		if (x->hint >= 0 && !(x->tried & (1u << x->hint))) {
			struct mcopy *h = &m->copies[x->hint];

			if (h->present && h->open && h->state == TSR_COPY_IN_SYNC &&
			    !(x->dst & (1u << x->hint)))
				src = x->hint;
		}
		if (src < 0)
			src = mirror_read_source(m, x->tried | x->dst);
		if (src < 0)
			break;
		x->tried |= 1u << src;
		x->src = src;
		if (source_is_hole(&m->copies[src], x->poff, x->plen)) {
			/* sparse: nothing to read, the targets get a hole too */
			x->hole = true;
			xfer_read_done(x, 0);
			return;
		}
		/* the disk: a resync streams the volume once, no reason to
		 * pull it through the source node's page cache */
		ret = mcopy_submit(&m->copies[src], MCOP_READ, x->poff, x->plen, x->buf,
				   MCOP_READ_DIRECT, xfer_read_done, x);
		if (ret == 0)
			return;
	}
	xfer_finish(x, -EIO);
}

static void xfer_granted(struct rlock *rl)
{
	xfer_read((struct xfer *)((char *)rl - offsetof(struct xfer, rl)));
}

/* mirror_xfer with the write flags and buffer size class chosen. */
static int xfer_start(struct mirror *m, uint64_t off, uint32_t len, uint32_t dst, bool nolock,
		      int src_hint, unsigned wflags, bool big,
		      void (*done)(void *arg, int status, uint64_t bytes), void *arg)
{
	struct xfer *x;

	if (m->fenced || m->closing)
		return -EIO;
	x = calloc(1, sizeof(*x));
	if (x == NULL)
		return -ENOMEM;
	x->plen = len < MIRROR_IO_PIECE ? len : MIRROR_IO_PIECE;
	x->buf = xbuf_get(m, x->plen, big, &x->buf_len);
	if (x->buf == NULL) {
		free(x);
		return -ENOMEM;
	}
	x->m = m;
	x->off = off;
	x->len = len;
	x->poff = off;
	x->dst = dst;
	x->nolock = nolock;
	x->hint = src_hint;
	x->wflags = wflags;
	x->done = done;
	x->arg = arg;
	m_get(m);
	if (nolock || rl_acquire(m, &x->rl, off, len, xfer_granted))
		xfer_read(x);
	return 0;
}

int mirror_xfer(struct mirror *m, uint64_t off, uint32_t len, uint32_t dst, bool nolock,
		int src_hint, void (*done)(void *arg, int status, uint64_t bytes), void *arg)
{
	return xfer_start(m, off, len, dst, nolock, src_hint, TSR_WRITE_FUA, false, done, arg);
}

/* ---- one region compared, differing blocks copied ------------------------ */

/*
 * For a full resync of a copy that exists already (lost bitmap, or its node
 * was the last coordinator and may hold writes nobody acknowledged): under
 * the range's lock, the block CRCs of an IN_SYNC source and of the target
 * are compared and only the runs of differing blocks are copied (without
 * FUA: the resync flushes the target before it clears the regions).
 */
struct rcmp {
	struct mirror *m;
	struct rlock rl;
	uint64_t off;
	uint32_t len;
	unsigned target;
	int src;
	uint32_t *ssum, *tsum;
	int pending;
	int status;
	bool target_bad; /* the target's SUMS failed with -EIO: copy it all */
	uint32_t b;      /* next block to look at */
	uint32_t run_end;
	uint64_t bytes;
	void (*done)(void *arg, int status, uint64_t bytes);
	void *arg;
};

static void rcmp_finish(struct rcmp *rc, int status)
{
	struct mirror *m = rc->m;

	rl_release(m, &rc->rl);
	free(rc->ssum);
	free(rc->tsum);
	rc->done(rc->arg, status, rc->bytes);
	free(rc);
	m_put(m);
}

static void rcmp_next(struct rcmp *rc);

static void rcmp_run_done(void *arg, int status, uint64_t bytes)
{
	struct rcmp *rc = arg;

	if (status < 0) {
		rcmp_finish(rc, status);
		return;
	}
	rc->bytes += bytes;
	rc->b = rc->run_end;
	rcmp_next(rc);
}

static void rcmp_next(struct rcmp *rc)
{
	struct mirror *m = rc->m;
	uint32_t n = rc->len / TSR_BLOCK_SIZE, b = rc->b, e;
	int ret;

	if (m->fenced || m->closing) {
		rcmp_finish(rc, -EIO);
		return;
	}
	while (b < n && rc->ssum[b] == rc->tsum[b])
		b++;
	if (b == n) {
		rcmp_finish(rc, 0);
		return;
	}
	for (e = b; e < n && rc->ssum[e] != rc->tsum[e]; e++)
		;
	rc->b = b;
	rc->run_end = e;
	ret = xfer_start(m, rc->off + (uint64_t)b * TSR_BLOCK_SIZE, (e - b) * TSR_BLOCK_SIZE,
			 1u << rc->target, true, rc->src, 0, true, rcmp_run_done, rc);
	if (ret < 0)
		rcmp_finish(rc, ret);
}

static void rcmp_sums_done(void *arg, int status)
{
	struct rcmp *rc = arg;

	if (status < 0 && rc->status == 0)
		rc->status = status;
	if (--rc->pending > 0)
		return;
	if (rc->status < 0) {
		rcmp_finish(rc, rc->status);
		return;
	}
	if (rc->target_bad)
		for (uint32_t b = 0; b < rc->len / TSR_BLOCK_SIZE; b++)
			rc->tsum[b] = ~rc->ssum[b];
	rc->b = 0;
	rcmp_next(rc);
}

/* The target cannot read some block (-EIO: CRC error): every block differs. */
static void rcmp_target_sums_done(void *arg, int status)
{
	struct rcmp *rc = arg;

	if (status == -EIO) {
		rc->target_bad = true;
		status = 0;
	}
	rcmp_sums_done(rc, status);
}

static void rcmp_start(struct rcmp *rc)
{
	struct mirror *m = rc->m;
	int ret;

	rc->src = mirror_read_source(m, 1u << rc->target);
	if (rc->src < 0 || m->fenced || m->closing) {
		rcmp_finish(rc, -EIO);
		return;
	}
	rc->pending = 3;
	ret = mcopy_submit(&m->copies[rc->src], MCOP_SUMS, rc->off, rc->len, rc->ssum, 0,
			   rcmp_sums_done, rc);
	if (ret < 0)
		rcmp_sums_done(rc, ret);
	ret = mcopy_submit(&m->copies[rc->target], MCOP_SUMS, rc->off, rc->len, rc->tsum, 0,
			   rcmp_target_sums_done, rc);
	if (ret < 0)
		rcmp_sums_done(rc, ret);
	rcmp_sums_done(rc, 0);
}

static void rcmp_granted(struct rlock *rl)
{
	rcmp_start((struct rcmp *)((char *)rl - offsetof(struct rcmp, rl)));
}

static int mirror_region_compare(struct mirror *m, uint64_t off, uint32_t len, unsigned target,
				 void (*done)(void *arg, int status, uint64_t bytes), void *arg)
{
	struct rcmp *rc = calloc(1, sizeof(*rc));

	if (rc == NULL)
		return -ENOMEM;
	rc->ssum = calloc(len / TSR_BLOCK_SIZE, sizeof(uint32_t));
	rc->tsum = calloc(len / TSR_BLOCK_SIZE, sizeof(uint32_t));
	if (rc->ssum == NULL || rc->tsum == NULL) {
		free(rc->ssum);
		free(rc->tsum);
		free(rc);
		return -ENOMEM;
	}
	rc->m = m;
	rc->off = off;
	rc->len = len;
	rc->target = target;
	rc->done = done;
	rc->arg = arg;
	m_get(m);
	if (rl_acquire(m, &rc->rl, off, len, rcmp_granted))
		rcmp_start(rc);
	return 0;
}

/* ---- resync of one copy -------------------------------------------------- */

/* One copy of the pipeline: regions [first, first + n), len bytes. */
struct rcopy {
	struct mresync *rs;
	uint64_t first;
	uint32_t n;
	uint32_t len;
	struct rcopy *next; /* the batch waiting for a flush */
};

/* A flush of the target making a batch of copies durable. */
struct rflush {
	struct mresync *rs;
	struct rcopy *batch; /* cleared in the bitmap when the flush succeeds */
	unsigned gen;        /* the copy's session when it was sent */
};

struct mresync {
	struct mcopy *c;
	uint64_t next;     /* next region to look at */
	unsigned inflight; /* copies in flight */
	uint64_t inflight_bytes; /* their length */
	unsigned flushing; /* flushes of the target in flight */
	struct rcopy *copied;  /* written without FUA, waiting for the next flush */
	uint64_t copied_bytes; /* their length */
	uint64_t copied_ns;    /* when the first of them completed */
	bool aborted;      /* c->resync no longer points here: free when idle */
	bool finished;     /* IN_SYNC recorded: free when idle */
	bool pumping;      /* inside resync_pump (a callback it causes may not free us) */
	bool repump;       /* resync_pump was called from inside itself: run again */
	bool waiting_hook; /* a hook waiter refers to us */
	bool copying;      /* recorded RESYNCING: walking the bitmap */
	bool hook_failed;  /* IN_SYNC could not be recorded: retry on the tick */
	uint64_t total, done;
	uint64_t copies, flushes; /* this resync's, for the log */
	unsigned max_inflight;
	double tokens;
	uint64_t last_ns;
};

static void batch_free(struct rcopy *rc)
{
	struct rcopy *next;

	for (; rc != NULL; rc = next) {
		next = rc->next;
		free(rc);
	}
}

static void resync_free_if_idle(struct mresync *rs)
{
	if ((rs->aborted || rs->finished) && rs->inflight == 0 && rs->flushing == 0 &&
	    !rs->waiting_hook && !rs->pumping) {
		batch_free(rs->copied);
		free(rs);
	}
}

static void update_running(struct mirror *m)
{
	bool any = false;

	for (unsigned i = 0; i < m->n_copies; i++)
		if (m->copies[i].resync != NULL && m->copies[i].resync->copying)
			any = true;
	m->resync_running = any;
}

static void resync_pump(struct mresync *rs);

static void resync_in_sync(void *arg, int status)
{
	struct mresync *rs = arg;
	struct mcopy *c = rs->c;
	struct mirror *m = c->m;

	rs->waiting_hook = false;
	if (rs->aborted) {
		resync_free_if_idle(rs);
		return;
	}
	if (status < 0) {
		rs->hook_failed = true; /* stays RESYNCING (still written); tick retries */
		return;
	}
	c->state = TSR_COPY_IN_SYNC;
	c->full_resync = false;
	c->head_imaged = false;
	c->resync = NULL;
	if (m->replace_running && m->replace_idx == c->idx)
		m->replace_running = false;
	tsr_info("mirror %s: copy %u (%s) in sync again (%llu bytes copied; %llu copies, "
		 "up to %u in flight; %llu flushes)",
		 m->name, c->idx, c->node_id, (unsigned long long)rs->done,
		 (unsigned long long)rs->copies, rs->max_inflight, (unsigned long long)rs->flushes);
	rs->finished = true;
	resync_free_if_idle(rs);
	mirror_xbuf_drop(m); /* idle volumes keep no copy buffers */
	update_running(m);
	mirror_publish(m);
	mirror_kick_stalled(m);
}

static void request_in_sync(struct mresync *rs)
{
	struct waiter *w = calloc(1, sizeof(*w));

	if (w == NULL) {
		rs->hook_failed = true;
		return;
	}
	rs->hook_failed = false;
	rs->waiting_hook = true;
	w->fn = resync_in_sync;
	w->arg = rs;
	mirror_hook_request(rs->c, TSR_COPY_IN_SYNC, w);
}

/* A copy is written (not yet durable): it joins the batch for the next flush. */
static void copy_done(void *arg, int status, uint64_t bytes)
{
	struct rcopy *rc = arg;
	struct mresync *rs = rc->rs;
	struct mcopy *c = rs->c;
	struct mirror *m = c->m;

	rs->inflight--;
	rs->inflight_bytes -= rc->len;
	if (rs->aborted) {
		free(rc);
		resync_free_if_idle(rs);
		return;
	}
	if (status < 0) {
		/* the target failed (already OUT_OF_SYNC) or no source could be read */
		tsr_warn("mirror %s: resync of copy %u (%s), regions %llu-%llu: %s", m->name,
			 c->idx, c->node_id, (unsigned long long)rc->first,
			 (unsigned long long)(rc->first + rc->n - 1), strerror(-status));
		free(rc);
		mirror_copy_failed(c, status == -ESTALE ? -ESTALE : -EIO);
		return;
	}
	m->resync_bytes_copied += bytes;
	m->resync_regions_copied += rc->n;
	m->resync_copies++;
	rs->copies++;
	rs->done += bytes;
	m->resync_done = rs->done;
	if (rs->copied == NULL)
		rs->copied_ns = mirror_now_ns();
	rc->next = rs->copied;
	rs->copied = rc;
	rs->copied_bytes += rc->len;
	resync_pump(rs);
}

static void flush_done(void *arg, int status)
{
	struct rflush *f = arg;
	struct mresync *rs = f->rs;
	struct mcopy *c = rs->c;
	struct mirror *m = c->m;

	rs->flushing--;
	if (!rs->aborted && status == 0 && f->batch != NULL) {
		/* durable on the target: these regions are clean now; the bits of
		 * every run first, then one write per bitmap page touched (a write
		 * per run made the page go out twice per batch: the first run's
		 * write was in flight while the others cleared theirs) */
		uint64_t lo = UINT64_MAX, hi = 0;

		for (struct rcopy *rc = f->batch; rc != NULL; rc = rc->next) {
			if (rc->n == 0)
				continue;
			mbm_clear_bits(&c->bm, rc->first, rc->n);
			if (rc->first < lo)
				lo = rc->first;
			if (rc->first + rc->n - 1 > hi)
				hi = rc->first + rc->n - 1;
		}
		if (lo <= hi)
			mbm_write_changed(&c->bm, lo, hi);
	}
	batch_free(f->batch);
	if (rs->aborted) {
		free(f);
		resync_free_if_idle(rs);
		return;
	}
	if (status < 0) {
		tsr_warn("mirror %s: resync of copy %u (%s): flush: %s", m->name, c->idx,
			 c->node_id, strerror(-status));
		if (f->gen == c->gen)
			mirror_copy_failed(c, status == -ESTALE ? -ESTALE : -EIO);
		free(f);
		return;
	}
	free(f);
	resync_pump(rs);
}

/* One FLUSH of the target for every copy in the batch. */
static void flush_batch(struct mresync *rs)
{
	struct mcopy *c = rs->c;
	struct mirror *m = c->m;
	struct rflush *f = malloc(sizeof(*f));
	int ret;

	if (f == NULL)
		return; /* the next pump or tick tries again */
	f->rs = rs;
	f->batch = rs->copied;
	f->gen = c->gen;
	rs->copied = NULL;
	rs->copied_bytes = 0;
	rs->flushing++;
	rs->flushes++;
	m->resync_flushes++;
	ret = mcopy_submit(c, MCOP_FLUSH, 0, 0, NULL, 0, flush_done, f);
	if (ret < 0)
		flush_done(f, ret);
}

/* Throttled: a copy is at most what the token bucket holds. */
static double token_cap(const struct mirror *m)
{
	double cap = (double)m->resync_rate / 10;

	return cap < (double)m->region_size ? (double)m->region_size : cap;
}

/* The local copy, when it is an IN_SYNC source other than target, or NULL. */
static struct mcopy *local_source(struct mirror *m, unsigned target)
{
	for (unsigned i = 0; i < m->n_copies; i++) {
		struct mcopy *c = &m->copies[i];

		if (i != target && c->present && c->local && c->open &&
		    c->state == TSR_COPY_IN_SYNC)
			return c;
	}
	return NULL;
}

static uint32_t region_len(const struct mirror *m, uint64_t r)
{
	uint64_t off = r << m->region_shift;

	return m->size - off < m->region_size ? (uint32_t)(m->size - off) : m->region_size;
}

/*
 * The run of dirty regions starting at r to copy in one go: contiguous, at
 * most max_len bytes, and (a whole copy read from the local copy) all holes
 * or all data there, so holes stay holes on the target.  Returns its region
 * count; *len its bytes.
 */
static uint32_t run_at(struct mresync *rs, uint64_t r, bool compare, uint64_t max_len,
		       uint32_t *len)
{
	struct mcopy *c = rs->c;
	struct mirror *m = c->m;
	struct mcopy *src = compare ? NULL : local_source(m, c->idx);
	uint64_t bytes = region_len(m, r);
	uint32_t n = 1;
	bool hole = src != NULL && source_is_hole(src, r << m->region_shift, (uint32_t)bytes);

	while (r + n < m->nregions && mbm_test(&c->bm, r + n) &&
	       bytes + region_len(m, r + n) <= max_len) {
		uint32_t l = region_len(m, r + n);

		if (src != NULL && source_is_hole(src, (r + n) << m->region_shift, l) != hole)
			break;
		bytes += l;
		n++;
	}
	*len = (uint32_t)bytes;
	return n;
}

/*
 * A run of the bitmap: copied whole, or (full resync of a copy that exists
 * already, mirror.h) compared block by block.  A brand-new copy (replace)
 * has nothing worth comparing: copied whole, holes trimmed; unless the
 * replay of its missed snapshots gave its head the last one's image
 * (head_imaged): then only the blocks the head changed since differ.
 */
static bool compares(const struct mresync *rs)
{
	const struct mcopy *c = rs->c;
	const struct mirror *m = c->m;

	if (c->head_imaged)
		return true;
	return c->full_resync && !(m->replace_running && m->replace_idx == c->idx);
}

static int copy_start(struct mresync *rs, struct rcopy *rc)
{
	struct mcopy *c = rs->c;
	struct mirror *m = c->m;
	uint64_t off = rc->first << m->region_shift;

	if (compares(rs))
		return mirror_region_compare(m, off, rc->len, c->idx, copy_done, rc);
	return xfer_start(m, off, rc->len, 1u << c->idx, false, -1, 0, true, copy_done, rc);
}

static void pump_once(struct mresync *rs)
{
	struct mcopy *c = rs->c;
	struct mirror *m = c->m;
	uint64_t max_len = xbuf_big(m);
	bool at_end = false;

	if (rs->aborted || rs->finished || !rs->copying || m->fenced || m->closing)
		return;
	if (m->resync_rate != 0 && token_cap(m) < (double)max_len)
		max_len = (uint64_t)token_cap(m);
	while (rs->inflight < MIRROR_RESYNC_DEPTH) {
		uint64_t r = mbm_next(&c->bm, rs->next);
		struct rcopy *rc;
		uint32_t len, n;

		if (r >= m->nregions) {
			at_end = true;
			break;
		}
		n = run_at(rs, r, compares(rs), max_len, &len);
		if (rs->inflight > 0 && rs->inflight_bytes + len > MIRROR_RESYNC_INFLIGHT_BYTES)
			break; /* a completion pumps again */
		if (m->resync_rate != 0) {
			if (rs->tokens < (double)len)
				break; /* the tick refills */
			rs->tokens -= (double)len;
		}
		rc = malloc(sizeof(*rc));
		if (rc == NULL)
			break;
		rc->rs = rs;
		rc->first = r;
		rc->n = n;
		rc->len = len;
		rc->next = NULL;
		rs->next = r + n;
		rs->inflight++;
		rs->inflight_bytes += len;
		if (rs->inflight > rs->max_inflight)
			rs->max_inflight = rs->inflight;
		if (rs->inflight > m->resync_max_inflight)
			m->resync_max_inflight = rs->inflight;
		if (copy_start(rs, rc) < 0) {
			rs->inflight--;
			rs->inflight_bytes -= len;
			rs->next = r; /* again on the next pump or tick */
			free(rc);
			break;
		}
		if (rs->aborted)
			return; /* it failed at once */
	}
	/*
	 * Flush a batch when it is large, or when the copies in flight are done
	 * and nothing follows soon (the bitmap walked, or the throttle holding
	 * the next copy back for a while).
	 */
	if (rs->copied != NULL &&
	    (rs->copied_bytes >= MIRROR_RESYNC_FLUSH_BYTES ||
	     (rs->inflight == 0 &&
	      (at_end || mirror_now_ns() - rs->copied_ns >= MIRROR_RESYNC_FLUSH_NS))))
		flush_batch(rs);
	if (rs->aborted || rs->inflight > 0 || rs->flushing > 0 || rs->copied != NULL ||
	    rs->waiting_hook || rs->hook_failed || !at_end)
		return;
	if (mbm_next(&c->bm, 0) < m->nregions) {
		rs->next = 0; /* bits set behind the cursor (should not happen): again */
		rs->repump = true;
		return;
	}
	request_in_sync(rs);
}

/* Start what may start; the callbacks this causes never free rs under us. */
static void resync_pump(struct mresync *rs)
{
	if (rs->pumping) {
		rs->repump = true;
		return;
	}
	rs->pumping = true;
	do {
		rs->repump = false;
		pump_once(rs);
	} while (rs->repump && !rs->aborted && !rs->finished);
	rs->pumping = false;
	resync_free_if_idle(rs);
}

static void resync_recorded(void *arg, int status)
{
	struct mresync *rs = arg;
	struct mcopy *c = rs->c;
	struct mirror *m = c->m;

	rs->waiting_hook = false;
	if (rs->aborted) {
		resync_free_if_idle(rs);
		return;
	}
	if (status == 0 && c->open && c->state == TSR_COPY_OUT_OF_SYNC && c->n_missed > 0) {
		/* a snapshot was cut since the replay: replay it first */
		c->resync = NULL;
		free(rs);
		mirror_resync_start(c);
		return;
	}
	if (status < 0 || !c->open || c->state != TSR_COPY_OUT_OF_SYNC) {
		c->resync = NULL;
		free(rs);
		/* shown as not connected: the cluster calls copy_returned again */
		if (!c->local)
			mcopy_disconnect(c);
		mirror_publish(m);
		return;
	}
	c->state = TSR_COPY_RESYNCING; /* receives host writes from now on */
	rs->copying = true;
	rs->total = c->bm.nset << m->region_shift;
	rs->last_ns = mirror_now_ns();
	rs->tokens = m->resync_rate ? (double)m->region_size : 0;
	m->resync_total = rs->total;
	m->resync_done = 0;
	m->rate_last_bytes = m->resync_bytes_copied;
	m->rate_last_ns = rs->last_ns;
	m->resync_rate_bps = 0;
	update_running(m);
	tsr_info("mirror %s: resync of copy %u (%s): %llu bytes to copy", m->name, c->idx,
		 c->node_id, (unsigned long long)rs->total);
	mirror_publish(m);
	resync_pump(rs);
}

static void replay_done(struct mcopy *c, int status)
{
	if (status == 0)
		mirror_resync_start(c);
	else if (status != -ECANCELED)
		mirror_copy_failed(c, status); /* keeps the journal: the next return retries */
}

void mirror_resync_start(struct mcopy *c)
{
	struct mirror *m = c->m;
	struct mresync *rs;
	struct waiter *w;

	if (c->resync != NULL || c->replay != NULL || !c->open || m->fenced || m->closing ||
	    c->state != TSR_COPY_OUT_OF_SYNC)
		return;
	if (mirror_snap_replay(c, replay_done) != 1)
		return; /* replaying (replay_done goes on), or out of memory */
	rs = calloc(1, sizeof(*rs));
	w = calloc(1, sizeof(*w));
	if (rs == NULL || w == NULL) {
		free(rs);
		free(w);
		return;
	}
	c->resync_queued = false;
	rs->c = c;
	c->resync = rs;
	rs->waiting_hook = true;
	w->fn = resync_recorded;
	w->arg = rs;
	mirror_hook_request(c, TSR_COPY_RESYNCING, w);
}

void mirror_resync_abort(struct mcopy *c)
{
	struct mresync *rs = c->resync;

	if (rs == NULL)
		return;
	c->resync = NULL;
	rs->aborted = true;
	update_running(c->m);
	resync_free_if_idle(rs);
}

void mirror_resync_tick(struct mirror *m, uint64_t now_ns)
{
	for (unsigned i = 0; i < m->n_copies; i++) {
		struct mcopy *c = &m->copies[i];
		struct mresync *rs = c->resync;
		double cap;

		/* the local copy is always "connected", so nobody calls
		 * copy_returned for it: retry its resync here, every few seconds */
		if (rs == NULL && c->present && c->local && c->open &&
		    c->state == TSR_COPY_OUT_OF_SYNC && m->ready &&
		    now_ns - m->local_retry_ns >= m->local_retry_period_ns) {
			m->local_retry_ns = now_ns;
			mirror_resync_start(c);
			continue;
		}

		if (rs == NULL || !rs->copying)
			continue;
		if (m->resync_rate != 0) {
			cap = token_cap(m);
			rs->tokens += (double)m->resync_rate * (double)(now_ns - rs->last_ns) / 1e9;
			if (rs->tokens > cap)
				rs->tokens = cap;
		}
		rs->last_ns = now_ns;
		if (rs->hook_failed)
			request_in_sync(rs);
		else
			resync_pump(rs);
	}
	/* recent rate: over windows of at least 500 ms */
	if (m->resync_running && now_ns - m->rate_last_ns >= 500000000ull) {
		double inst = (double)(m->resync_bytes_copied - m->rate_last_bytes) * 1e9 /
			      (double)(now_ns - m->rate_last_ns);

		m->resync_rate_bps =
		    m->resync_rate_bps == 0 ? inst : 0.5 * m->resync_rate_bps + 0.5 * inst;
		m->rate_last_bytes = m->resync_bytes_copied;
		m->rate_last_ns = now_ns;
	}
}
