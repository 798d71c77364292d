/*
 * EC layout: resync of a returning copy, rebuild of a replacing one
 * (DESIGN.md invariant 7), on the home worker.
 *
 * A copy that comes back (copy_returned, or open at create while not
 * IN_SYNC) goes through:
 *   0. the snapshots of the operations it missed deleted there (ec_snap.c,
 *      ec_missed_*): it may hold a stale snapshot of a name cut again since;
 *   1. STAGE_LIST on it: the stripe of every entry it holds is marked in its
 *      dirty bitmap (its chunk there may be staged-only, rolled back or
 *      committed while the others rolled back: recomputed below), and the
 *      marks are made durable;
 *   2. RELEASE of everything up to our latest txn on it (it took part in
 *      none of ours since it failed: nothing of ours is lost);
 *   2b. the snapshots it missed the CREATE of made up there, oldest first
 *      (its chunks of them decoded into its dirty regions, then cut): its
 *      head is still what it held when it left, outside those regions;
 *   3. RESYNCING (hooks; from now on it takes part in writes);
 *   4. every region set in its bitmap: each stripe of the region is locked,
 *      the copy's chunk of it decoded from k IN_SYNC chunks and written
 *      (FUA), EC_RESYNC_DEPTH stripes at a time, paced by resync_rate; a
 *      region done is cleared;
 *   5. IN_SYNC recorded (hooks), then it counts again; the snapshots of
 *      operations noted while it resynced (it was not IN_SYNC for them) are
 *      deleted there then (not made up), and until that is done it serves no
 *      snapshot reads.
 * A failure of the copy on the way makes it OUT_OF_SYNC again with the bits
 * not yet cleared kept.  A rebuild is the same walk over a full bitmap.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layout/ec_internal.h"

struct eresync;

struct rstripe {
	struct eresync *rs;
	struct slock sl;
	uint64_t stripe;
	unsigned pos;
	unsigned gen;
	uint8_t *bufs;
};

struct eresync {
	struct ecopy *c;
	struct ec *e;
	unsigned gen; /* c->gen when started */
	bool aborted;
	int stage;       /* 0 missed snapshots, 1 listing, 2 releasing and making up,
			    3 hook, 4 walking, 5 in-sync hook */
	uint64_t region; /* region being copied */
	uint64_t next_stripe, end_stripe;
	int inflight; /* stripes in flight */
	int status;   /* a failure of the region */
	uint64_t start_ns;
	uint64_t bytes;           /* written by this resync */
	bool waiting_tokens;      /* paced: the tick goes on */
	bool in_walk, again;      /* rs_walk running: a nested call only asks for another pass */
	uint64_t regions_done;    /* regions this walk cleared (the test hold's count) */
	uint64_t unrecoverable;   /* stripes of this walk no k other chunks rebuilt */
	bool region_kept;         /* the current region has one: its bit stays set */
	bool held_logged;         /* the test hold logged once */
	struct ec_missed *missed; /* stages 0 and 2b, until dropped */
};

static void rs_walk(struct eresync *rs);

static void rs_free(struct eresync *rs)
{
	struct ec *e = rs->e;

	ec_missed_end(rs->missed, false); /* not all done: kept for its next return */
	free(rs);
	ec_put(e);
}

/* Stop: c failed, or the layout is closing/fenced.  The bits stay. */
static void rs_stop(struct eresync *rs)
{
	struct ecopy *c = rs->c;
	struct ec *e = rs->e;

	if (c->resync == rs)
		c->resync = NULL;
	e->resync_running = false;
	for (unsigned i = 0; i < e->n_copies; i++)
		if (e->copies[i].resync != NULL)
			e->resync_running = true;
	ec_publish(e);
	rs_free(rs);
}

static bool rs_gone(struct eresync *rs)
{
	return rs->aborted || rs->e->closing || rs->e->fenced || rs->c->gen != rs->gen;
}

/* Operations noted while the copy resynced: their snapshots deleted there
 * once it is IN_SYNC (not made up: it takes host writes now). */
static void late_replay_done(void *arg, int status)
{
	struct ec_missed *m = arg;
	struct ec *e = ec_missed_copy(m)->e;

	ec_missed_end(m, status == 0); /* else kept for its next return */
	ec_put(e);
}

static void late_replay(struct ecopy *c)
{
	struct ec_missed *m;

	if (ec_missed_begin(c, &m) < 0)
		return; /* logged at its next return */
	if (ec_missed_empty(m)) {
		ec_missed_end(m, true);
		return;
	}
	ec_get(c->e);
	ec_missed_delete(m, late_replay_done, m);
}

static void rs_in_sync_done(void *arg, int status)
{
	struct eresync *rs = arg;
	struct ecopy *c = rs->c;
	struct ec *e = rs->e;

	if (status == 0 && !rs_gone(rs) && c->state == TSR_COPY_RESYNCING) {
		c->state = TSR_COPY_IN_SYNC;
		c->full_resync = false;
		c->kept_retry_ns = c->kept_delay_ns = c->kept_stripes = 0;
		tsr_info("ec %s: copy %u (%s) in sync again (%llu bytes written)", e->name, c->idx,
			 c->node_id, (unsigned long long)rs->bytes);
		if (e->replace_running && e->replace_idx == c->idx)
			e->replace_running = false;
		late_replay(c);
		rs_stop(rs);
		ec_kick_stalled(e);
		return;
	}
	if (status < 0 && !rs_gone(rs))
		ec_copy_failed(c, -EIO);
	rs_stop(rs);
}

static void rs_finish_walk(struct eresync *rs)
{
	struct waiter *w = calloc(1, sizeof(*w));

	rs->stage = 5;
	if (w == NULL) {
		rs_stop(rs);
		return;
	}
	w->fn = rs_in_sync_done;
	w->arg = rs;
	ec_hook_request(rs->c, TSR_COPY_IN_SYNC, w);
}

static void rstripe_end(struct rstripe *st, int status)
{
	struct eresync *rs = st->rs;
	struct ec *e = rs->e;

	tsr_free_aligned(st->bufs);
	sl_release(e, &st->sl);
	free(st);
	if (status < 0)
		rs->status = status;
	rs->inflight--;
	ec_bg_done(e);
	rs_walk(rs);
}

static void rstripe_written(void *arg, int status)
{
	struct rstripe *st = arg;
	struct eresync *rs = st->rs;
	struct ec *e = rs->e;

	if (status == 0) {
		rs->bytes += e->unit;
		e->resync_bytes_copied += e->unit;
		e->resync_done++;
	} else if (!rs_gone(rs)) {
		if (st->gen == rs->c->gen)
			ec_copy_failed(rs->c, status);
	}
	rstripe_end(st, status);
}

static void rstripe_decoded(void *arg, int status, uint32_t present)
{
	struct rstripe *st = arg;
	struct eresync *rs = st->rs;
	struct ec *e = rs->e;
	int ret;

	(void)present;
	if (status < 0 && !rs_gone(rs) && ec_in_sync(e) >= e->k) {
		/* k copies are readable, yet fewer than k chunks of the stripe
		 * were: another copy's chunk failed its CRC (or a read of it was
		 * not issued: a transient cause, walked again).  Not this copy's
		 * fault (failing it would only start this resync again and meet
		 * the same chunk): its chunk is kept as it is, its region stays
		 * dirty, the walk goes on (rs_unrecoverable). */
		tsr_error("ec %s: copy %u (%s): resync: stripe %llu (volume bytes %llu-%llu): its "
			  "chunk cannot be rebuilt (fewer than %u other chunks read: a CRC error "
			  "or a read not issued, see the lines above): kept as it is, its region "
			  "stays dirty",
			  e->name, rs->c->idx, rs->c->node_id, (unsigned long long)st->stripe,
			  (unsigned long long)(st->stripe * e->width),
			  (unsigned long long)((st->stripe + 1) * e->width - 1), e->k);
		rs->unrecoverable++;
		rs->region_kept = true;
		rstripe_end(st, 0);
		return;
	}
	if (status < 0 || rs_gone(rs)) {
		rstripe_end(st, status < 0 ? status : -ECANCELED);
		return;
	}
	ret = ecopy_write(rs->c, ec_chunk_off(rs->e, st->stripe), rs->e->unit,
			  st->bufs + (size_t)st->pos * rs->e->unit, rstripe_written, st);
	if (ret < 0)
		rstripe_written(st, ret);
}

static void rstripe_go(struct rstripe *st)
{
	struct eresync *rs = st->rs;
	struct ec *e = rs->e;
	int ret;

	if (rs_gone(rs)) {
		rstripe_end(st, -ECANCELED);
		return;
	}
	st->bufs = tsr_alloc_aligned((size_t)e->n * e->unit);
	if (st->bufs == NULL) {
		rstripe_end(st, -ENOMEM);
		return;
	}
	/* the sources' disks: a resync or rebuild reads each stripe once, no
	 * reason to pull the volume through every source node's page cache */
	ret = ec_col_read(e, st->stripe, 0, e->unit, 1u << st->pos, 1u << st->pos, EC_COL_DIRECT,
			  st->bufs, rstripe_decoded, st);
	if (ret < 0)
		rstripe_end(st, ret);
}

static void rstripe_granted(struct slock *sl)
{
	rstripe_go((struct rstripe *)((char *)sl - offsetof(struct rstripe, sl)));
}

static bool rs_paced(struct eresync *rs)
{
	struct ec *e = rs->e;
	double allowed;

	if (e->resync_rate == 0)
		return false;
	allowed =
	    (double)e->resync_rate * (double)(ec_now_ns() - rs->start_ns) / 1e9 + (double)e->unit;
	return (double)rs->bytes >= allowed;
}

/*
 * Tests only: while the file named by $TSR_TEST_EC_RESYNC_HOLD_FILE exists, a
 * resync or rebuild that has cleared at least one region starts no further
 * region (the tick looks again every EC_TICK_MS; one access() per look, on
 * the home worker, only with the variable set).  Logged once per walk:
 * "resync held (test) after N regions".  test-ec-rebuild-crash holds a
 * rebuild half done and kills the coordinator there.
 */
static bool rs_test_held(struct eresync *rs)
{
	const char *f;
	struct ec *e = rs->e;

	if (rs->regions_done == 0 || rs->next_stripe % (e->region_size / e->unit) != 0)
		return false;
	f = getenv("TSR_TEST_EC_RESYNC_HOLD_FILE");
	if (f == NULL || f[0] == '\0' || access(f, F_OK) != 0)
		return false;
	if (!rs->held_logged) {
		rs->held_logged = true;
		tsr_info("ec %s: copy %u (%s): resync held (test) after %llu regions, %llu left",
			 e->name, rs->c->idx, rs->c->node_id, (unsigned long long)rs->regions_done,
			 (unsigned long long)rs->c->bm.nset);
	}
	return true;
}

/*
 * The walk reached the end with stripes it could not rebuild: the copy
 * stays RESYNCING (it takes writes; it serves no reads and does not count
 * as in sync) with their regions dirty, and is not failed -- a failed copy
 * comes back and resyncs at once, meeting the same chunks, for ever.  The
 * next resync of it (its next return, or the next attach) retries them:
 * once the damaged chunks are rewritten (a host write of the stripe) they
 * decode.  The regions the walk did not reach again (set behind it while
 * it ran) wait for that retry too.
 */
static void rs_unrecoverable(struct eresync *rs)
{
	struct ecopy *c = rs->c;
	struct ec *e = rs->e;

	c->kept_delay_ns = c->kept_delay_ns == 0 ? EC_KEPT_RETRY_NS : 2 * c->kept_delay_ns;
	if (c->kept_delay_ns > EC_KEPT_RETRY_MAX_NS)
		c->kept_delay_ns = EC_KEPT_RETRY_MAX_NS;
	c->kept_retry_ns = ec_now_ns() + c->kept_delay_ns;
	c->kept_stripes = rs->unrecoverable;
	tsr_error("ec %s: copy %u (%s): resync stopped: %llu stripes could not be rebuilt "
		  "(fewer than %u chunks of each readable; see the lines above): the copy stays "
		  "resyncing with %llu regions dirty, walked again in %llu s.  Rewrite those "
		  "stripes' bytes (they read as errors) or bring back the copies that are away",
		  e->name, c->idx, c->node_id, (unsigned long long)rs->unrecoverable, e->k,
		  (unsigned long long)c->bm.nset,
		  (unsigned long long)(c->kept_delay_ns / 1000000000ull));
	rs_stop(rs);
}

/* One pass; true when rs is gone (stopped and freed, or handed to the hook). */
static bool rs_walk_once(struct eresync *rs)
{
	struct ec *e = rs->e;
	struct ecopy *c = rs->c;
	uint64_t per_region = e->region_size / e->unit;

	if (rs_gone(rs)) {
		if (rs->inflight == 0) {
			rs_stop(rs);
			return true;
		}
		return false;
	}
	for (;;) {
		/* launch stripes of the current region */
		while (rs->next_stripe < rs->end_stripe && rs->inflight < EC_RESYNC_DEPTH) {
			struct rstripe *st;

			if (rs_paced(rs) || e->snap_holding || rs_test_held(rs)) {
				rs->waiting_tokens = true; /* the tick goes on */
				return false;
			}
			st = calloc(1, sizeof(*st));
			if (st == NULL) {
				rs->status = -ENOMEM;
				break;
			}
			st->rs = rs;
			st->stripe = rs->next_stripe++;
			st->pos = tsr_ec_position_of(st->stripe, c->idx, e->k, e->m);
			st->gen = c->gen;
			rs->inflight++;
			e->bg_ops++;
			if (sl_acquire(e, &st->sl, st->stripe, rstripe_granted))
				rstripe_go(st);
			if (rs_gone(rs))
				return false; /* the callbacks finish it */
		}
		if (rs->inflight > 0)
			return false;
		if (rs->status < 0) {
			if (!rs_gone(rs) && rs->status != -ECANCELED)
				ec_copy_failed(c, rs->status);
			rs_stop(rs);
			return true;
		}
		/* the region is done (kept dirty when a stripe of it could not be) */
		if (rs->end_stripe > 0 && rs->region < e->nregions && !rs->region_kept &&
		    mbm_test(&c->bm, rs->region)) {
			mbm_clear_region(&c->bm, rs->region);
			e->resync_regions_copied++;
			rs->regions_done++;
		}
		rs->region_kept = false;
		rs->region = mbm_next(&c->bm, rs->end_stripe == 0 ? 0 : rs->region + 1);
		if (rs->region >= e->nregions) {
			if (rs->unrecoverable > 0) {
				rs_unrecoverable(rs);
				return true;
			}
			rs->region = mbm_next(&c->bm, 0);
			if (rs->region >= e->nregions) {
				rs_finish_walk(rs);
				return true;
			}
		}
		rs->next_stripe = rs->region * per_region;
		rs->end_stripe = rs->next_stripe + per_region;
		if (rs->end_stripe > e->nstripes)
			rs->end_stripe = e->nstripes;
	}
}

static void rs_walk(struct eresync *rs)
{
	bool gone;

	if (rs->in_walk) {
		rs->again = true;
		return;
	}
	rs->in_walk = true;
	do {
		rs->again = false;
		gone = rs_walk_once(rs);
	} while (!gone && rs->again);
	if (!gone)
		rs->in_walk = false;
}

static void rs_made_up(void *arg, int status);

/* Stage 4: walk every region set in the bitmap of c (RESYNCING). */
static void rs_walk_begin(struct eresync *rs)
{
	struct ecopy *c = rs->c;
	struct ec *e = rs->e;

	rs->stage = 4;
	e->resync_total = c->bm.nset * (e->region_size / e->unit);
	if (e->resync_total > e->nstripes)
		e->resync_total = e->nstripes;
	e->resync_done = 0;
	tsr_info("ec %s: copy %u (%s): resync of %llu regions", e->name, c->idx, c->node_id,
		 (unsigned long long)c->bm.nset);
	ec_publish(e);
	rs->end_stripe = 0;
	rs_walk(rs);
}

static void rs_released(void *arg, int status)
{
	struct eresync *rs = arg;
	struct ecopy *c = rs->c;
	int ret;

	if (rs_gone(rs)) {
		rs_stop(rs);
		return;
	}
	if (status < 0) {
		ec_copy_failed(c, status);
		rs_stop(rs);
		return;
	}
	rs->stage = 2;
	if (ec_missed_empty(rs->missed)) {
		rs_made_up(rs, 0);
		return;
	}
	ret = ec_missed_makeup(rs->missed, rs_made_up, rs);
	if (ret < 0)
		rs_made_up(rs, ret);
}

/* Stage 2b done: the copy holds every snapshot it missed that can be read. */
static void rs_made_up(void *arg, int status)
{
	struct eresync *rs = arg;
	struct ecopy *c = rs->c;

	if (rs_gone(rs)) {
		rs_stop(rs);
		return;
	}
	if (status < 0) {
		ec_copy_failed(c, status);
		rs_stop(rs);
		return;
	}
	ec_missed_end(rs->missed, true);
	rs->missed = NULL;
	c->state = TSR_COPY_RESYNCING;
	ec_hook_request(c, TSR_COPY_RESYNCING, NULL);
	rs_walk_begin(rs);
}

static void rs_marks_durable(void *arg, int status)
{
	struct eresync *rs = arg;
	struct ec *e = rs->e;
	int ret;

	if (--rs->inflight > 0)
		return;
	if (rs_gone(rs)) {
		rs_stop(rs);
		return;
	}
	if (status < 0 || rs->status < 0) {
		rs_stop(rs);
		return;
	}
	rs->stage = 2;
	ret = ecopy_release(rs->c, (e->epoch << 32) | e->txn_counter, rs_released, rs);
	if (ret < 0)
		rs_released(rs, ret);
}

static void rs_mark_dep(void *arg, int status)
{
	struct eresync *rs = arg;

	if (status < 0)
		rs->status = status;
	rs_marks_durable(rs, 0);
}

static void rs_listed(void *arg, int status, const struct tsr_stage_entry *ents, size_t n)
{
	struct eresync *rs = arg;
	struct ecopy *c = rs->c;
	struct ec *e = rs->e;
	size_t older = 0;
	int waits;

	if (status < 0 || rs_gone(rs)) {
		if (status < 0 && !rs_gone(rs))
			ec_copy_failed(c, status);
		rs_stop(rs);
		return;
	}
	/*
	 * An older coordinator's entry: what became of its txn elsewhere is not
	 * known here, the chunk is recomputed.  One of ours: every txn this copy
	 * missed (failed in, or not taken part in) is in its bitmap already, and
	 * a COMMITTED one is in place (the store replays it at open).
	 */
	for (size_t i = 0; i < n; i++)
		if (ents[i].stripe < e->nstripes && ents[i].txn >> 32 < e->epoch) {
			mbm_mark(&c->bm, ec_chunk_off(e, ents[i].stripe), e->unit, NULL, NULL);
			older++;
		}
	if (older > 0)
		tsr_info("ec %s: copy %u (%s): %zu entries of an older coordinator: their stripes "
			 "are rebuilt",
			 e->name, c->idx, c->node_id, older);
	rs->inflight = 1;
	waits = mbm_wait_all(&c->bm, rs_mark_dep, rs);
	if (waits > 0)
		rs->inflight += waits;
	rs_marks_durable(rs, 0);
}

/* Stage 0 done: the copy holds no snapshot it missed an operation of. */
static void rs_replayed(void *arg, int status)
{
	struct eresync *rs = arg;
	int ret;

	if (status < 0 || rs_gone(rs)) {
		if (status < 0 && !rs_gone(rs))
			ec_copy_failed(rs->c, status);
		rs_stop(rs);
		return;
	}
	rs->stage = 1;
	ret = ecopy_stage_list(rs->c, rs_listed, rs);
	if (ret < 0)
		rs_listed(rs, ret, NULL, 0);
}

static struct eresync *rs_new(struct ecopy *c)
{
	struct ec *e = c->e;
	struct eresync *rs = calloc(1, sizeof(*rs));

	if (rs == NULL)
		return NULL;
	rs->c = c;
	rs->e = e;
	rs->gen = c->gen;
	rs->stage = 0;
	rs->start_ns = ec_now_ns();
	ec_get(e);
	c->resync = rs;
	c->kept_retry_ns = 0;
	e->resync_running = true;
	return rs;
}

/*
 * The kept regions of a RESYNCING copy walked again (rs_unrecoverable; the
 * tick, when due): stages 0-3 were done by the resync that kept them, and
 * it has taken every write since.  Retried so that the copy does not stay
 * RESYNCING for ever (one copy less of redundancy) once the stripes decode
 * again: rewritten by the host, or a copy that was away back in sync.
 */
static void rs_retry_kept(struct ecopy *c)
{
	struct eresync *rs = rs_new(c);

	if (rs == NULL)
		return;
	tsr_info("ec %s: copy %u (%s): resync: its %llu kept regions walked again", c->e->name,
		 c->idx, c->node_id, (unsigned long long)c->bm.nset);
	rs_walk_begin(rs);
}

void ec_resync_start(struct ecopy *c)
{
	struct ec *e = c->e;
	struct eresync *rs;
	int ret;

	c->resync_queued = false;
	if (c->resync != NULL || !c->open || e->closing || e->fenced ||
	    c->state == TSR_COPY_IN_SYNC)
		return;
	rs = rs_new(c);
	if (rs == NULL)
		return;
	ret = ec_missed_begin(c, &rs->missed);
	if (ret == 0 && !ec_missed_empty(rs->missed))
		ret = ec_missed_delete(rs->missed, rs_replayed, rs);
	else
		rs_replayed(rs, ret);
}

void ec_resync_abort(struct ecopy *c)
{
	struct eresync *rs = c->resync;

	if (rs == NULL)
		return;
	rs->aborted = true;
	c->resync = NULL;
	/* in-flight steps see aborted and stop; a paced walk is freed here */
	if (rs->waiting_tokens && rs->inflight == 0) {
		rs->waiting_tokens = false;
		rs_stop(rs);
	}
}

void ec_resync_tick(struct ec *e, uint64_t now_ns)
{
	for (unsigned i = 0; i < e->n_copies; i++) {
		struct ecopy *c = &e->copies[i];
		struct eresync *rs = c->resync;

		if (rs != NULL && rs->waiting_tokens) {
			rs->waiting_tokens = false;
			rs_walk(rs);
		} else if (rs == NULL && c->kept_retry_ns != 0 && now_ns >= c->kept_retry_ns &&
			   c->open && e->ready && !e->closing && !e->fenced &&
			   c->state == TSR_COPY_RESYNCING) {
			rs_retry_kept(c);
		} else if (rs == NULL && c->local && c->open && e->ready &&
			   c->state == TSR_COPY_OUT_OF_SYNC &&
			   now_ns - e->local_retry_ns >= EC_LOCAL_RETRY_NS) {
			e->local_retry_ns = now_ns;
			ec_resync_start(c);
		}
	}
	if (e->resync_running && now_ns - e->rate_last_ns >= 1000000000ull) {
		if (e->rate_last_ns != 0) {
			double inst = (double)(e->resync_bytes_copied - e->rate_last_bytes) * 1e9 /
				      (double)(now_ns - e->rate_last_ns);

			e->resync_rate_bps =
			    e->resync_rate_bps == 0 ? inst : 0.5 * e->resync_rate_bps + 0.5 * inst;
		}
		e->rate_last_ns = now_ns;
		e->rate_last_bytes = e->resync_bytes_copied;
	}
}
