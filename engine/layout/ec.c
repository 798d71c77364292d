/*
 * The erasure-coded layout (include/tessera/ec.h): k data + m parity chunks
 * per stripe, one chunk position per copy, driven from the volume's home
 * worker.  Threads as in the mirror (mirror.c): tsr_layout_ec_create runs on
 * the control thread (local chunk volume, epoch, bitmap files), then sends
 * the start-up to the home worker and waits; every piece of state belongs to
 * the home worker from then on; cs.status_lock guards the published status.
 *
 * Start-up (home worker): connect every remote copy (OPEN with our epoch;
 * -ESTALE anywhere fails the create), then the staged-txn recovery of ec.h:
 *   1. STAGE_LIST on every open copy;
 *   2. per txn, looking at the copies recorded IN_SYNC only (an out-of-sync
 *      copy's chunk is rebuilt anyway): COMMITTED on one of them, or STAGED
 *      on the copy of every participant position that is open (listed) ->
 *      roll forward (COMMIT on each IN_SYNC copy holding it; committing
 *      twice rewrites the same bytes); otherwise roll back (nothing: step 4
 *      forgets it).  A host write is acknowledged once every participant
 *      staged, so an acknowledged txn always rolls forward, even with a
 *      participant unreachable now; rolling forward a txn that was not
 *      acknowledged is also sound: every open IN_SYNC chunk then holds the
 *      new stripe (participants: committed; the others: untouched), and
 *      there are at least k of them, so the stripe decodes to its new
 *      content and the absent copies rebuild their chunk from it (step 3);
 *   3. the stripe of every listed txn is marked dirty on every copy that is
 *      not open and IN_SYNC (so its chunk is recomputed when it returns), and
 *      of every copy whose roll-forward COMMIT failed;
 *   3b. the guard: fewer than min_in_sync copies open and IN_SYNC -> the
 *      start-up fails here, having recorded nothing and released nothing (a
 *      COMMIT it did is redone by the next recovery: the txn is still listed
 *      COMMITTED); else every copy recorded IN_SYNC that holds a participant
 *      chunk of a txn rolled forward and did not get its COMMIT (not
 *      reachable, full resync, or its COMMIT failed) is recorded
 *      OUT_OF_SYNC, and step 4 waits for those records: once the others
 *      forgot the txn, only the record says that the copy's chunk is old
 *      (were it still IN_SYNC, the next recovery would find the txn STAGED
 *      on it alone and roll it back there);
 *   4. RELEASE up to (epoch << 32) - 1 on every open copy: every txn of an
 *      older coordinator is forgotten (rolled-back ones never reach disk).
 * Then the in-sync count is checked against min_in_sync and the resyncs of
 * the open out-of-sync copies start.
 *
 * Copy states during the start-up.  A copy whose OPEN fails or times out, or
 * that fails later before ready, is OUT_OF_SYNC in memory only
 * (ec_copy_failed); the start-up records it OUT_OF_SYNC once it succeeds
 * (start_finish), before any host write.  A failed start-up thus leaves the
 * recorded in-sync set as it was (save the copies 3b had to record before
 * releasing, when it got that far): copies that were merely unreachable for
 * one attach never count as having missed writes they could not have
 * received, and the next attach, with them back, succeeds.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layout/ec_internal.h"
#include "tessera/layout_module.h"

uint64_t ec_now_ns(void)
{
	return (uint64_t)tsr_mono_ns();
}

static bool on_home(const struct ec *e)
{
	return e->io != NULL && pthread_equal(pthread_self(), e->home_thread);
}

/* ---- lifetime ----------------------------------------------------------- */

static void ec_free(struct ec *e)
{
	for (unsigned i = 0; i < e->n_copies; i++) {
		struct ecopy *c = &e->copies[i];

		mbm_close(&c->bm, false);
		if (c->svol != NULL)
			tsr_svol_put(c->svol);
	}
	tsr_ec_codec_destroy(e->codec);
	free(e->bmhost);
	copyset_fini(&e->cs);
	free(e);
}

void ec_get(struct ec *e)
{
	copyset_get(&e->cs);
}

void ec_put(struct ec *e)
{
	copyset_put(&e->cs);
}

/* mbitmap.hold: a page write in flight keeps the layout alive */
static void bm_hold(void *owner, bool get)
{
	if (get)
		ec_get(owner);
	else
		ec_put(owner);
}

unsigned ec_in_sync(const struct ec *e)
{
	unsigned n = 0;

	for (unsigned i = 0; i < e->n_copies; i++)
		if (ecopy_readable(&e->copies[i]))
			n++;
	return n;
}

void ec_publish(struct ec *e)
{
	struct tsr_layout_status s;
	uint64_t per_region = e->region_size / e->unit, rebuilding = 0;
	bool degraded = false;

	memset(&s, 0, sizeof(s));
	s.epoch = e->epoch;
	s.ready = e->ready;
	s.fenced = e->fenced;
	s.n_copies = e->n_copies;
	s.in_sync = ec_in_sync(e);
	for (unsigned i = 0; i < e->n_copies; i++) {
		const struct ecopy *c = &e->copies[i];

		snprintf(s.copies[i].node_id, sizeof(s.copies[i].node_id), "%s", c->node_id);
		s.copies[i].state = c->state;
		s.copies[i].connected = c->open;
		s.copies[i].dirty_bytes = c->bm.nset << e->region_shift;
		if (!ecopy_readable(c))
			degraded = true;
		if (c->state != TSR_COPY_IN_SYNC)
			rebuilding += c->bm.nset * per_region;
		if (c->state == TSR_COPY_RESYNCING)
			s.stripes_unrebuilt += c->kept_stripes;
	}
	s.resync_running = e->resync_running;
	s.resync_total_bytes = e->resync_total * e->unit;
	s.resync_done_bytes = e->resync_done * e->unit;
	s.resync_rate_bps = e->resync_rate_bps;
	if (e->resync_running && e->resync_rate_bps > 1.0 && e->resync_total > e->resync_done)
		s.resync_eta_sec =
		    (uint64_t)((double)((e->resync_total - e->resync_done) * e->unit) /
			       e->resync_rate_bps);
	s.resync_bytes_copied = e->resync_bytes_copied;
	s.resync_regions_copied = e->resync_regions_copied;
	s.writes = e->n_writes;
	s.reads = e->n_reads;
	for (unsigned i = 0; i < e->n_copies; i++) {
		const struct ecopy *c = &e->copies[i];
		struct tsr_svol_stats ss;

		if (c->local && c->svol != NULL) {
			tsr_svol_get_stats(c->svol, &ss);
			s.cached_reads += ss.cached_reads;
			s.crc_errors += ss.crc_errors;
		}
		/* every copy's, remote ones as their node last answered */
		copyset_stats_fill(&c->base, &s.copies[i], &s);
	}
	s.write_errors = e->write_errors;
	s.copy_failures = e->copy_failures;
	s.scrub_running = e->scrub_running;
	s.scrub_done = e->scrub_finished;
	s.scrub_total_bytes = e->scrub_total;
	s.scrub_done_bytes = e->scrub_done;
	s.scrub_mismatches = e->scrub_mismatches;
	s.scrub_repaired = e->scrub_repaired;
	s.scrub_unrepaired = e->scrub_unrepaired;
	s.ec_k = e->k;
	s.ec_m = e->m;
	s.stripe_unit = e->unit;
	s.stripes_total = e->nstripes;
	s.stripes_degraded = degraded ? e->nstripes : 0;
	s.stripes_rebuilding = rebuilding < e->nstripes ? rebuilding : e->nstripes;
	s.degraded_reads = e->degraded_reads;
	s.txn_rolled_forward = e->txn_rolled_forward;
	s.txn_rolled_back = e->txn_rolled_back;
	copyset_publish(&e->cs, &s);
	pthread_mutex_lock(&e->cs.status_lock);
	for (unsigned i = 0; i < e->n_copies; i++) {
		_Static_assert(sizeof(e->places[i].address) == sizeof(e->copies[i].address),
			       "a copy's address fits its place");
		memcpy(e->places[i].address, e->copies[i].address, sizeof(e->places[i].address));
		e->places[i].local = e->copies[i].local;
	}
	pthread_mutex_unlock(&e->cs.status_lock);
}

/* ---- hooks: copy states in the metadata store (copyset.c) ---------------- */

void ec_hook_request(struct ecopy *c, enum tsr_copy_state st, struct waiter *w)
{
	copyset_hook_request(&c->base, st, w);
}

/* ---- failures and fencing ------------------------------------------------- */

void ec_fence_now(struct ec *e, const char *why)
{
	if (e->fenced)
		return;
	e->fenced = true;
	tsr_error("ec %s: fenced at epoch %llu (%s): every I/O fails from now on", e->name,
		  (unsigned long long)e->epoch, why);
	for (unsigned i = 0; i < e->n_copies; i++)
		if (e->copies[i].resync != NULL)
			ec_resync_abort(&e->copies[i]);
	ec_scrub_abort(e);
	ec_expire_stalled(e, true);
	ec_publish(e);
}

bool ec_fence_requested(struct ec *e)
{
	return copyset_fence_requested(&e->cs);
}

void ec_copy_failed(struct ecopy *c, int err)
{
	struct ec *e = c->e;

	if (err == -ESTALE) {
		ec_fence_now(e, "a copy has seen a newer epoch");
		return;
	}
	if (e->closing)
		return;
	if (c->state == TSR_COPY_OUT_OF_SYNC) {
		if (!c->local && (c->open || c->connecting))
			ecopy_disconnect(c);
		return;
	}
	e->copy_failures++;
	tsr_warn("ec %s: copy %u (%s) failed (%s): out of sync", e->name, c->idx, c->node_id,
		 strerror(-err));
	c->state = TSR_COPY_OUT_OF_SYNC;
	if (c->local)
		e->local_retry_ns = ec_now_ns();
	if (c->resync != NULL)
		ec_resync_abort(c);
	if (!c->local)
		ecopy_disconnect(c);
	if (!e->ready) {
		/* start-up: recorded by start_finish if the attach goes on (see the
		 * file comment); a failed attach records nothing */
		c->start_failed = true;
		ec_publish(e);
		return;
	}
	ec_hook_request(c, TSR_COPY_OUT_OF_SYNC, NULL);
	ec_publish(e);
}

/* ---- the tick ------------------------------------------------------------- */

static void tick(void *arg, uint32_t events)
{
	struct ec *e = arg;
	uint64_t v, now = ec_now_ns();

	(void)events;
	if (read(e->timer_fd, &v, sizeof(v)) < 0) {
		/* EAGAIN: spurious wake-up */
	}
	if (e->closing)
		return;
	ec_fence_requested(e);
	ec_io_kick(e);
	if (e->stalled != NULL)
		ec_expire_stalled(e, false);
	ec_release_tick(e, now);
	ec_resync_tick(e, now);
	for (unsigned i = 0; i < e->n_copies; i++)
		copyset_stats_tick(&e->copies[i].base, now);
	ec_publish(e);
}

/* ---- start-up: sessions, staged-txn recovery ------------------------------- */

struct rec_entry {
	struct tsr_stage_entry en;
	unsigned copy;
};

struct recovery {
	struct ec *e;
	struct rec_entry *ents;
	size_t n, cap;
	int pending;
};

static void start_finish(struct ec *e, int status)
{
	e->start_status = status;
	if (status == 0) {
		e->ready = true;
		for (unsigned i = 0; i < e->n_copies; i++) {
			struct ecopy *c = &e->copies[i];
			/* away, or failed during the start-up: it misses this epoch's writes */
			bool away = !c->open && c->recorded != TSR_COPY_OUT_OF_SYNC;
			bool failed =
			    (c->start_failed || c->start_missed) && c->recorded == TSR_COPY_IN_SYNC;

			if (away || failed)
				ec_hook_request(c, TSR_COPY_OUT_OF_SYNC, NULL);
			else if (c->resync_queued)
				ec_resync_start(c);
		}
	}
	for (unsigned i = 0; i < e->n_copies; i++)
		e->copies[i].start_failed = e->copies[i].start_missed = false;
	ec_publish(e);
	sem_post(&e->cs.sem);
}

static void converge_done(void *arg, int status)
{
	struct ec *e = arg;

	if (status < 0)
		tsr_error("ec %s: converge scrub: %s", e->name, strerror(-status));
	if (e->fenced)
		status = -ESTALE;
	else if (ec_in_sync(e) < e->min_in_sync)
		status = -EIO;
	start_finish(e, status < 0 ? status : 0);
}

static void start_evaluate(struct ec *e)
{
	if (e->fenced && e->start_status == 0)
		e->start_status = -ESTALE;
	if (e->start_status < 0) {
		start_finish(e, e->start_status);
		return;
	}
	for (unsigned i = 0; i < e->n_copies; i++) {
		struct ecopy *c = &e->copies[i];

		if (c->state == TSR_COPY_IN_SYNC && c->full_resync)
			c->state = TSR_COPY_OUT_OF_SYNC;
		if (c->state == TSR_COPY_IN_SYNC && !c->open) {
			c->state = TSR_COPY_OUT_OF_SYNC;
		} else if (c->state != TSR_COPY_IN_SYNC) {
			c->state = TSR_COPY_OUT_OF_SYNC;
			c->resync_queued = c->open;
		}
	}
	if (ec_in_sync(e) < e->min_in_sync) {
		tsr_error("ec %s: %u copies in sync and reachable, %u needed", e->name,
			  ec_in_sync(e), e->min_in_sync);
		start_finish(e, -EIO);
		return;
	}
	if (e->converge) {
		int ret = ec_scrub_begin(e, true, converge_done, e);

		if (ret == 0)
			return;
		start_finish(e, ret);
		return;
	}
	start_finish(e, 0);
}

static void rec_free(struct recovery *r)
{
	free(r->ents);
	free(r);
}

static void rec_release_done(void *arg, int status)
{
	struct ecopy *c = arg;
	struct ec *e = c->e;

	if (status < 0) {
		tsr_warn("ec %s: copy %u (%s): release of older txns: %s", e->name, c->idx,
			 c->node_id, strerror(-status));
		if (status == -ESTALE)
			e->start_status = -ESTALE;
		ecopy_disconnect(c);
	}
	if (--e->start_pending == 0)
		start_evaluate(e);
}

/* Step 4: forget every txn of an older coordinator. */
static void rec_release(struct ec *e)
{
	uint64_t upto = (e->epoch << 32) - 1;

	e->released_upto = upto;
	e->start_pending = 1;
	for (unsigned i = 0; i < e->n_copies; i++) {
		struct ecopy *c = &e->copies[i];
		int ret;

		if (!c->open)
			continue;
		e->start_pending++;
		ret = ecopy_release(c, upto, rec_release_done, c);
		if (ret < 0)
			rec_release_done(c, ret);
	}
	if (--e->start_pending == 0)
		start_evaluate(e);
}

struct rec_commit {
	struct ecopy *c;
	uint64_t stripe;
};

static void rec_guard(struct ec *e);

static void rec_commit_done(void *arg, int status)
{
	struct rec_commit *rc = arg;
	struct ecopy *c = rc->c;
	struct ec *e = c->e;

	if (status < 0 && status != -ENOENT) {
		tsr_warn("ec %s: copy %u (%s): roll forward: %s", e->name, c->idx, c->node_id,
			 strerror(-status));
		if (status == -ESTALE)
			e->start_status = -ESTALE;
		c->state = TSR_COPY_OUT_OF_SYNC;
		/* its chunk is old: rebuilt when it returns (3), recorded before
		 * the others forget the txn (3b) */
		c->start_missed = true;
		mbm_mark(&c->bm, ec_chunk_off(e, rc->stripe), e->unit, NULL, NULL);
		ecopy_disconnect(c);
	}
	free(rc);
	if (--e->start_pending == 0)
		rec_guard(e);
}

/* One record of step 3b answered (or the loop issuing them is done). */
static void rec_guard_next(struct ec *e)
{
	if (--e->start_pending > 0)
		return;
	if (e->start_status < 0 || e->fenced)
		start_evaluate(e); /* fails: no RELEASE */
	else
		rec_release(e);
}

static void rec_guard_recorded(void *arg, int status)
{
	struct ecopy *c = arg;
	struct ec *e = c->e;

	if (status < 0) {
		tsr_error("ec %s: copy %u (%s) missed a rolled-forward txn and cannot be "
			  "recorded out of sync: %s; the attach fails, nothing released",
			  e->name, c->idx, c->node_id, strerror(-status));
		if (e->start_status == 0)
			e->start_status = -EIO;
	}
	rec_guard_next(e);
}

/*
 * Step 3b: fail before any RELEASE when fewer than min_in_sync copies can
 * be read (the state recorded stays as it was: see the file comment), else
 * record the copies that missed a roll-forward COMMIT, then step 4.
 */
static void rec_guard(struct ec *e)
{
	unsigned readable = 0;

	if (e->start_status < 0 || e->fenced) {
		start_evaluate(e);
		return;
	}
	for (unsigned i = 0; i < e->n_copies; i++) {
		const struct ecopy *c = &e->copies[i];

		if (ecopy_readable(c) && !c->full_resync)
			readable++;
	}
	if (readable < e->min_in_sync) {
		tsr_error("ec %s: %u copies in sync and reachable, %u needed: attach refused, "
			  "no copy state changed",
			  e->name, readable, e->min_in_sync);
		start_finish(e, -EIO);
		return;
	}
	e->start_pending = 1;
	for (unsigned i = 0; i < e->n_copies; i++) {
		struct ecopy *c = &e->copies[i];
		struct waiter *w;

		if (!c->start_missed || c->recorded != TSR_COPY_IN_SYNC)
			continue;
		w = calloc(1, sizeof(*w));
		if (w == NULL) {
			e->start_status = -ENOMEM;
			break;
		}
		w->fn = rec_guard_recorded;
		w->arg = c;
		e->start_pending++;
		ec_hook_request(c, TSR_COPY_OUT_OF_SYNC, w);
	}
	rec_guard_next(e);
}

static int rec_cmp(const void *a, const void *b)
{
	const struct rec_entry *x = a, *y = b;

	if (x->en.txn != y->en.txn)
		return x->en.txn < y->en.txn ? -1 : 1;
	return x->copy < y->copy ? -1 : x->copy > y->copy;
}

/* Steps 2 and 3 over the collected lists. */
static void rec_decide(struct recovery *r)
{
	struct ec *e = r->e;
	size_t i = 0, j;

	if (r->n > 0)
		qsort(r->ents, r->n, sizeof(*r->ents), rec_cmp);
	e->start_pending = 1;
	while (i < r->n) {
		uint64_t txn = r->ents[i].en.txn, stripe = r->ents[i].en.stripe;
		uint32_t parts = r->ents[i].en.participants, have = 0, reach = 0;
		bool committed = false, forward;

		for (unsigned ci = 0; ci < e->n_copies; ci++) {
			const struct ecopy *c = &e->copies[ci];

			if (c->open && c->state == TSR_COPY_IN_SYNC && !c->full_resync)
				reach |= 1u << tsr_ec_position_of(stripe, c->idx, e->k, e->m);
		}

		for (j = i; j < r->n && r->ents[j].en.txn == txn; j++) {
			struct ecopy *c = &e->copies[r->ents[j].copy];

			if (c->state != TSR_COPY_IN_SYNC || c->full_resync)
				continue;
			have |= 1u << tsr_ec_position_of(stripe, c->idx, e->k, e->m);
			if (r->ents[j].en.state == TSR_STAGE_COMMITTED)
				committed = true;
		}
		forward = committed || (parts & reach & ~have) == 0;
		if (forward)
			e->txn_rolled_forward++;
		else
			e->txn_rolled_back++;
		tsr_info("ec %s: txn %llx (stripe %llu, participants %#x, reachable %#x, staged on "
			 "%#x%s): %s",
			 e->name, (unsigned long long)txn, (unsigned long long)stripe, parts, reach,
			 have, committed ? ", committed" : "", forward ? "roll forward" : "roll back");
		for (; i < j; i++) {
			struct ecopy *c = &e->copies[r->ents[i].copy];
			struct rec_commit *rc;
			int ret;

			if (!forward || c->state != TSR_COPY_IN_SYNC || c->full_resync)
				continue;
			rc = calloc(1, sizeof(*rc));
			if (rc == NULL) {
				e->start_status = -ENOMEM;
				continue;
			}
			rc->c = c;
			rc->stripe = stripe;
			e->start_pending++;
			ret = ecopy_commit(c, txn, rec_commit_done, rc);
			if (ret < 0)
				rec_commit_done(rc, ret);
		}
		/* step 3: copies that cannot take part get the stripe rebuilt; a
		 * participant among them misses a roll forward (3b).  (Rolled
		 * back, it holds the txn STAGED at most: a COMMIT goes out only
		 * once every participant staged, so a reachable one would list it
		 * and the txn would roll forward.) */
		for (unsigned ci = 0; ci < e->n_copies; ci++) {
			struct ecopy *c = &e->copies[ci];

			if (c->open && c->state == TSR_COPY_IN_SYNC && !c->full_resync)
				continue;
			mbm_mark(&c->bm, ec_chunk_off(e, stripe), e->unit, NULL, NULL);
			if (forward &&
			    (parts >> tsr_ec_position_of(stripe, c->idx, e->k, e->m)) & 1)
				c->start_missed = true;
		}
	}
	rec_free(r);
	if (--e->start_pending == 0)
		rec_guard(e);
}

struct rec_list_ctx {
	struct recovery *r;
	struct ecopy *c;
};

static void rec_list_done(void *arg, int status, const struct tsr_stage_entry *ents, size_t n)
{
	struct rec_list_ctx *lc = arg;
	struct recovery *r = lc->r;
	struct ecopy *c = lc->c;
	struct ec *e = r->e;

	if (status < 0) {
		tsr_warn("ec %s: copy %u (%s): stage list: %s", e->name, c->idx, c->node_id,
			 strerror(-status));
		if (status == -ESTALE)
			e->start_status = -ESTALE;
		ecopy_disconnect(c);
	} else {
		for (size_t i = 0; i < n; i++) {
			if (ents[i].stripe >= e->nstripes) {
				tsr_warn("ec %s: copy %u: staged txn for stripe %llu beyond the "
					 "volume: ignored",
					 e->name, c->idx, (unsigned long long)ents[i].stripe);
				continue;
			}
			if (r->n == r->cap) {
				size_t cap = r->cap ? r->cap * 2 : 64;
				struct rec_entry *p = realloc(r->ents, cap * sizeof(*p));

				if (p == NULL) {
					e->start_status = -ENOMEM;
					break;
				}
				r->ents = p;
				r->cap = cap;
			}
			r->ents[r->n].en = ents[i];
			r->ents[r->n].copy = c->idx;
			r->n++;
		}
	}
	free(lc);
	if (--r->pending == 0) {
		if (e->start_status < 0) {
			rec_free(r);
			start_evaluate(e);
			return;
		}
		rec_decide(r);
	}
}

/* Step 1. */
static void rec_start(struct ec *e)
{
	struct recovery *r;

	if (e->start_status < 0) {
		start_evaluate(e);
		return;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		start_finish(e, -ENOMEM);
		return;
	}
	r->e = e;
	r->pending = 1;
	for (unsigned i = 0; i < e->n_copies; i++) {
		struct ecopy *c = &e->copies[i];
		struct rec_list_ctx *lc;
		int ret;

		if (!c->open)
			continue;
		lc = calloc(1, sizeof(*lc));
		if (lc == NULL) {
			e->start_status = -ENOMEM;
			break;
		}
		lc->r = r;
		lc->c = c;
		r->pending++;
		ec_get(e);
		ret = ecopy_stage_list(c, rec_list_done, lc);
		ec_put(e);
		if (ret < 0)
			rec_list_done(lc, ret, NULL, 0);
	}
	if (--r->pending == 0) {
		if (e->start_status < 0) {
			rec_free(r);
			start_evaluate(e);
			return;
		}
		rec_decide(r);
	}
}

static void start_open_done(void *arg, int status)
{
	struct ecopy *c = arg;
	struct ec *e = c->e;

	if (status < 0)
		copyset_start_open_failed(&c->base, status, &e->start_status);
	if (--e->start_pending == 0)
		rec_start(e);
}

static void start_msg(struct tsr_worker *w, void *arg)
{
	struct ec *e = arg;
	int ret;

	e->io = tsr_worker_io(w);
	e->bmhost->io = e->io;
	e->home_thread = pthread_self();
	ret = copyset_timer_start(&e->cs, w, EC_TICK_MS, tick, e, &e->timer_fd);
	if (ret < 0) {
		start_finish(e, ret);
		return;
	}
	e->last_release_ns = ec_now_ns();
	e->start_pending = 1;
	for (unsigned i = 0; i < e->n_copies; i++) {
		struct ecopy *c = &e->copies[i];

		if (c->local)
			continue;
		e->start_pending++;
		ret = ecopy_connect(c, start_open_done, c);
		if (ret < 0)
			start_open_done(c, ret);
	}
	if (--e->start_pending == 0)
		rec_start(e);
}

/* ---- teardown (home worker) ------------------------------------------------ */

static void teardown(struct ec *e)
{
	if (e->closing)
		return;
	e->closing = true;
	e->bmhost->closing = true;
	e->ready = false;
	for (unsigned i = 0; i < e->n_copies; i++)
		if (e->copies[i].resync != NULL)
			ec_resync_abort(&e->copies[i]);
	ec_scrub_abort(e);
	ec_expire_stalled(e, true);
	ec_io_kick(e); /* local ops waiting for io queue room: -ECANCELED */
	for (unsigned i = 0; i < e->n_copies; i++)
		ecopy_disconnect(&e->copies[i]);
	copyset_timer_stop(&e->cs, &e->timer_fd);
	ec_publish(e);
	ec_put(e);
}

static void ec_destroy(void *ctx)
{
	struct ec *e = ctx;

	if (e != NULL)
		copyset_destroy(&e->cs, e->io != NULL, on_home(e));
}

/* ---- control calls ---------------------------------------------------------- */

/* A control call's arguments (copyset_call: run on the home worker, waited
 * for). */
struct ctl {
	struct ec *e;
	unsigned idx;
	bool repair;
	struct tsr_layout_copy newcopy;
	struct tsr_svol *svol; /* in: the new local handle; out: the old one to put */
	struct mbitmap bm;     /* in: the new bitmap; out: the old one to close */
};

static void returned_open_done(void *arg, int status)
{
	struct ecopy *c = arg;
	struct ec *e = c->e;

	if (status < 0) {
		copyset_returned_open_failed(&c->base, status);
		if (e->replace_running && c->idx == e->replace_idx)
			e->replace_running = false;
		ec_publish(e);
		return;
	}
	ec_resync_start(c);
}

static void copy_returned_fn(void *layout, unsigned idx, const char *address)
{
	struct ec *e = layout;
	struct ecopy *c = &e->copies[idx];

	if (e->closing || e->fenced || !e->ready || c->state != TSR_COPY_OUT_OF_SYNC ||
	    c->connecting || c->resync != NULL)
		return;
	if (address[0] != '\0')
		snprintf(c->address, sizeof(c->address), "%s", address);
	copyset_reopen(&c->base, returned_open_done, c);
}

static void ec_copy_returned(void *ctx, unsigned idx, const char *address)
{
	struct ec *e = ctx;

	if (e != NULL && idx < e->n_copies)
		copyset_copy_returned(&e->cs, idx, address, copy_returned_fn);
}

static int replace_fn(void *arg)
{
	struct ctl *ctl = arg;
	struct ec *e = ctl->e;
	struct ecopy *c = &e->copies[ctl->idx];
	struct tsr_svol *oldsvol;
	struct mbitmap oldbm;

	if (e->closing || e->fenced || !e->ready)
		return -EIO;
	if (e->replace_running)
		return -EBUSY;
	/* a page write in flight points at the slot's bitmap: wait for it */
	if (mbm_busy(&c->bm))
		return -EBUSY;
	if (c->resync != NULL)
		ec_resync_abort(c);
	if (c->state == TSR_COPY_IN_SYNC)
		e->copy_failures++;
	c->state = TSR_COPY_OUT_OF_SYNC;
	c->open = false;
	oldsvol = c->svol;
	c->svol = NULL;
	ecopy_disconnect(c);
	copyset_hook_forget(&c->base);
	oldbm = c->bm;
	c->bm = ctl->bm;
	ctl->bm = oldbm;
	/* what the old copy missed is moot: it is no copy any more */
	if (strcmp(c->node_id, ctl->newcopy.node_id) != 0)
		ec_missed_forget(e, c->node_id);
	snprintf(c->node_id, sizeof(c->node_id), "%s", ctl->newcopy.node_id);
	snprintf(c->address, sizeof(c->address), "%s", ctl->newcopy.address);
	c->local = ctl->newcopy.local;
	c->svol = ctl->svol; /* the new local handle (NULL for a remote copy) */
	ctl->svol = oldsvol;
	c->recorded = c->hook_want = ctl->newcopy.state;
	c->full_resync = true;
	c->open = c->local && c->svol != NULL;
	e->replace_running = true;
	e->replace_idx = ctl->idx;
	copyset_reopen(&c->base, returned_open_done, c);
	ec_publish(e);
	return 0;
}

/* The tests replace_fn makes before it takes the slot (replace check; an
 * in-flight bitmap page write is left to replace_fn: it passes). */
static int replace_check_fn(void *arg)
{
	struct ctl *ctl = arg;
	struct ec *e = ctl->e;

	if (e->closing || e->fenced || !e->ready)
		return -EIO;
	if (e->replace_running)
		return -EBUSY;
	return 0;
}

/*
 * Replace copy idx by a new (empty) chunk volume on another node: the slot
 * takes the new copy, a full bitmap, and is rebuilt stripe by stripe from
 * k others (ec_resync.c).  Control thread; waits for the home worker.
 * copy NULL: only check (tsr_layout_replace_check), change nothing.
 */
static int ec_replace_copy(void *ctx, unsigned idx, const struct tsr_layout_copy *copy)
{
	struct ec *e = ctx;
	struct ctl ctl = {.e = e, .idx = idx};
	struct tsr_svol *newsvol = NULL;
	char path[PATH_MAX];
	bool had_missed;
	int nsnaps = 0;
	int ret;

	ctl.bm.fd = -1;

	/* copy NULL: only check (tsr_layout_replace_check), change nothing */
	if (e != NULL && idx < e->n_copies && copy == NULL)
		return copyset_call(&e->cs, on_home(e), replace_check_fn, &ctl);
	if (e == NULL || idx >= e->n_copies || copy == NULL || copy->node_id[0] == '\0' ||
	    strchr(copy->node_id, '/') != NULL || (!copy->local && copy->address[0] == '\0') ||
	    (copy->local && e->store == NULL))
		return -EINVAL;
	for (unsigned i = 0; i < e->n_copies; i++)
		if (i != idx && copy->local && e->copies[i].local)
			return -EINVAL;
	ctl.newcopy = *copy;
	if (copy->local) {
		ret = tsr_store_vol_open(e->store, e->name, &newsvol);
		if (ret == 0)
			ret = tsr_store_vol_set_epoch(e->store, e->name, e->epoch);
		if (ret == 0)
			ret = copyset_check_size(&e->cs, newsvol, "local chunk volume");
		if (ret < 0)
			goto err;
	}
	ret = copyset_bitmap_path(&e->cs, copy->node_id, path);
	if (ret < 0)
		goto err;
	ret = mbm_open(&ctl.bm, e->bmhost, path, false, true);
	if (ret < 0)
		goto err;
	ctl.bm.hold = bm_hold;
	ctl.bm.owner = e;
	ctl.svol = newsvol;
	/* the new copy has none of the snapshots: the rebuild makes them up */
	had_missed = ec_missed_pending_node(e, copy->node_id);
	nsnaps = ec_missed_note_all(e, copy->node_id, copy->missed);
	ret = nsnaps < 0 ? nsnaps : copyset_call(&e->cs, on_home(e), replace_fn, &ctl);
	if (ret < 0) {
		if (nsnaps < 0)
			tsr_error("ec %s: copy %u: cannot note the snapshots the copy on %s must "
				  "get: %s",
				  e->name, idx, copy->node_id, strerror(-ret));
		/* the file is ours only if we made it (the node may hold a slot) */
		if (!had_missed)
			ec_missed_forget(e, copy->node_id);
		goto err;
	}
	/* the slot has the new copy (rebuilding); ctl holds the old one's handle and bitmap */
	if (ctl.svol != NULL)
		tsr_svol_put(ctl.svol);
	{
		char oldpath[PATH_MAX];

		snprintf(oldpath, sizeof(oldpath), "%s", ctl.bm.path);
		mbm_close(&ctl.bm, false);
		if (strcmp(oldpath, path) != 0)
			unlink(oldpath);
	}
	tsr_info("ec %s: copy %u replaced by %s: rebuilding (and %d snapshots made up there)",
		 e->name, idx, copy->node_id, nsnaps);
	return 0;
err:
	mbm_close(&ctl.bm, true);
	if (newsvol != NULL)
		tsr_svol_put(newsvol);
	return ret;
}

static void ec_fence(void *ctx)
{
	struct ec *e = ctx;

	if (e != NULL)
		copyset_fence(&e->cs, on_home(e));
}

static void scrub_done_log(void *arg, int status)
{
	struct ec *e = arg;

	tsr_info("ec %s: scrub %s: %llu mismatches, %llu repaired, %llu unrepaired", e->name,
		 status == 0 ? "done" : strerror(-status), (unsigned long long)e->scrub_mismatches,
		 (unsigned long long)e->scrub_repaired, (unsigned long long)e->scrub_unrepaired);
}

static int scrub_fn(void *arg)
{
	struct ctl *ctl = arg;
	struct ec *e = ctl->e;

	if (e->closing || e->fenced)
		return -EIO;
	return ec_scrub_begin(e, ctl->repair, scrub_done_log, e);
}

static int ec_scrub_start(void *ctx, bool repair)
{
	struct ec *e = ctx;
	struct ctl ctl = {.e = e, .repair = repair};

	return copyset_call(&e->cs, on_home(e), scrub_fn, &ctl);
}

static void ec_get_status(void *ctx, struct tsr_layout_status *out)
{
	copyset_get_status(&((struct ec *)ctx)->cs, out);
}

/* Any thread: an NBD handshake on another worker asks it (ec_resize). */
static uint64_t ec_size(void *ctx)
{
	return __atomic_load_n(&((struct ec *)ctx)->size, __ATOMIC_ACQUIRE);
}

/* ---- online growth ------------------------------------------------------------ */

/*
 * tsr_layout_resize: the mirror's three steps (mirror.c mirror_resize), on
 * chunk volumes: the caller grew every chunk volume to
 * tsr_ec_chunk_volume_size(new_size) (whole stripes) and recorded the size.
 *  1. home worker: every copy present, open and IN_SYNC, no resync, rebuild,
 *     scrub, snapshot cut (snap_holding, the layout's gate) running;
 *  2. control thread: each copy's bitmap file (chunk-volume regions) gets
 *     its new pages and a header naming the new chunk size (mbm_grow_file
 *     through bmhost, whose size is the chunk size);
 *  3. home worker: bitmaps, bmhost, stripes, chunk size, regions, then the
 *     volume size (atomic).
 * The grown stripes hold zeros on every chunk (data and parity agree); the
 * old last stripe's columns past the old end were never written (zeros), so
 * its parity stays right when they become part of the volume.  Crash points
 * as the mirror's: a bitmap header naming the old chunk size at the next
 * attach makes that copy's bitmap all dirty (every stripe recomputed).
 */
struct ec_resize_ctl {
	struct ec *e;
	uint64_t new_size, nstripes, chunk_size, nregions;
	char *why;
	size_t why_len;
};

static int ec_resize_check_fn(void *arg)
{
	struct ec_resize_ctl *rc = arg;
	struct ec *e = rc->e;
	int ret;

	ret = copyset_resize_gate(&e->cs, rc->why, rc->why_len);
	if (ret < 0)
		return ret;
	if (!e->ready) {
		snprintf(rc->why, rc->why_len, "'%s' is still starting: retry when tessera volume "
			 "status shows it ready", e->name);
		return -EBUSY;
	}
	for (unsigned i = 0; i < e->n_copies; i++) {
		const struct ecopy *c = &e->copies[i];

		if (c->resync != NULL || (e->replace_running && e->replace_idx == i)) {
			snprintf(rc->why, rc->why_len, "chunk copy %u (%s) is being %s: retry when "
				 "tessera volume status shows every copy in sync", i, c->node_id,
				 e->replace_running && e->replace_idx == i ? "rebuilt" : "resynced");
			return -EBUSY;
		}
		if (c->state != TSR_COPY_IN_SYNC || !c->open) {
			snprintf(rc->why, rc->why_len, "chunk copy %u (%s) is not in sync (its node "
				 "away, or it failed): bring the node back and wait for its resync, "
				 "or tessera volume replace-replica %s --node %s", i, c->node_id,
				 e->name, c->node_id);
			return -EBUSY;
		}
	}
	if (e->resync_running || e->replace_running) {
		snprintf(rc->why, rc->why_len, "a resync of '%s' is running: retry when tessera "
			 "volume status shows it done", e->name);
		return -EBUSY;
	}
	if (e->snap_holding || e->snap_pending != NULL ||
	    (e->layout != NULL && tsr_layout_snap_busy(e->layout))) {
		snprintf(rc->why, rc->why_len, "a snapshot of '%s' is being cut or deleted: retry "
			 "when it is done", e->name);
		return -EBUSY;
	}
	if (e->scrub != NULL || e->scrub_running) {
		snprintf(rc->why, rc->why_len, "a scrub of '%s' is running: retry when tessera "
			 "volume status shows it done", e->name);
		return -EBUSY;
	}
	return 0;
}

static int ec_resize_grow_fn(void *arg)
{
	struct ec_resize_ctl *rc = arg;
	struct ec *e = rc->e;
	int ret;

	ret = copyset_resize_gate(&e->cs, rc->why, rc->why_len);
	if (ret < 0)
		return ret;
	for (unsigned i = 0; i < e->n_copies; i++) {
		ret = mbm_grow(&e->copies[i].bm, rc->nregions);
		if (ret < 0)
			return ret; /* larger bitmaps than regions: harmless, a retry goes on */
	}
	e->bmhost->size = rc->chunk_size;
	e->bmhost->nregions = rc->nregions;
	e->nregions = rc->nregions;
	e->nstripes = rc->nstripes;
	e->chunk_size = rc->chunk_size;
	e->cs.copy_size = rc->chunk_size; /* a copy that opens again must be this large */
	__atomic_store_n(&e->size, rc->new_size, __ATOMIC_RELEASE);
	ec_publish(e);
	return 0;
}

static int ec_resize(void *ctx, uint64_t new_size, bool check_only, char *why, size_t why_len)
{
	struct ec *e = ctx;
	struct ec_resize_ctl rc = {
	    .e = e,
	    .new_size = new_size,
	    .nstripes = tsr_ec_stripes(new_size, e->k, e->unit),
	    .chunk_size = tsr_ec_chunk_volume_size(new_size, e->k, e->unit),
	    .why = why,
	    .why_len = why_len,
	};
	uint64_t old_size = ec_size(e);
	int ret;

	rc.nregions = (rc.chunk_size + e->region_size - 1) >> e->region_shift;
	ret = copyset_call(&e->cs, on_home(e), ec_resize_check_fn, &rc);
	if (ret < 0 || check_only || new_size == old_size) {
		if (ret < 0 && why[0] == '\0')
			snprintf(why, why_len, "%s", strerror(-ret));
		return ret;
	}
	/* bm's fd, path and page count change only by a replace or a grow, which
	 * run on this (the control) thread too */
	for (unsigned i = 0; rc.chunk_size != e->chunk_size && i < e->n_copies; i++) {
		ret = mbm_grow_file(&e->copies[i].bm, rc.chunk_size, rc.nregions);
		if (ret < 0) {
			snprintf(why, why_len, "cannot grow the dirty-region bitmap of chunk copy %u "
				 "(%s) in %s: %s (the volume keeps its size; retry)", i,
				 e->copies[i].node_id, e->state_dir, strerror(-ret));
			return ret;
		}
	}
	ret = copyset_call(&e->cs, on_home(e), ec_resize_grow_fn, &rc);
	if (ret < 0) {
		if (why[0] == '\0')
			snprintf(why, why_len, "cannot grow the layout of '%s': %s (retry)", e->name,
				 strerror(-ret));
		return ret;
	}
	tsr_info("ec %s: grown online from %llu to %llu bytes (%llu stripes, chunk volumes %llu "
		 "bytes)", e->name, (unsigned long long)old_size, (unsigned long long)new_size,
		 (unsigned long long)rc.nstripes, (unsigned long long)rc.chunk_size);
	return 0;
}

static const struct tsr_layout_ops ec_layout_ops = {
    .name = "ec",
    .size = ec_size,
    .read = ec_read,
    .read_direct = ec_read_direct,
    .write = ec_write,
    .flush = ec_flush,
    .trim = ec_trim,
    .write_zeroes = ec_write_zeroes,
    .block_status = NULL, /* chunks do not map to volume extents: all allocated */
    .snap = ec_snap,
    .copy_returned = ec_copy_returned,
    .replace_copy = ec_replace_copy,
    .fence = ec_fence,
    .scrub_start = ec_scrub_start,
    .get_status = ec_get_status,
    .destroy = ec_destroy,
    .resize = ec_resize,
};

bool tsr_layout_is_ec(const struct tsr_layout *l)
{
	return l != NULL && tsr_layout_ops_of(l) == &ec_layout_ops;
}

/* ---- create (control thread) -------------------------------------------------- */

/* copyset.c's view of the layout */
static void cs_free(void *layout)
{
	ec_free(layout);
}

static void cs_teardown(void *layout)
{
	teardown(layout);
}

static void cs_copy_failed(struct copyset_copy *c, int err)
{
	ec_copy_failed(copyset_copy_of(c, struct ecopy), err);
}

static void cs_fence_now(void *layout, const char *why)
{
	ec_fence_now(layout, why);
}

static const struct copyset_ops ec_copyset_ops = {
    .free = cs_free,
    .teardown = cs_teardown,
    .copy_failed = cs_copy_failed,
    .fence_now = cs_fence_now,
};

static int check_opts(const struct tsr_ec_opts *o)
{
	if (o == NULL || o->name == NULL || !tsr_valid_name(o->name) || o->size == 0 ||
	    o->size % TSR_BLOCK_SIZE || o->home == NULL || o->state_dir == NULL ||
	    o->node_id == NULL || o->hooks.set_copy_state == NULL)
		return -EINVAL;
	if (o->k < 1 || o->k > TSR_EC_MAX_K || o->m < 1 || o->m > TSR_EC_MAX_M ||
	    !tsr_ec_unit_valid(o->stripe_unit) || o->n_copies != o->k + o->m ||
	    o->min_in_sync > o->n_copies || (o->min_in_sync != 0 && o->min_in_sync < o->k))
		return -EINVAL;
	if (o->region_size != 0 &&
	    (o->region_size < o->stripe_unit || (o->region_size & (o->region_size - 1))))
		return -EINVAL;
	return copyset_check_copies(o->copies, o->n_copies, o->store);
}

/* "staged:N" / "committed:N" (ec.h fault switch) */
static void crash_point_parse(struct ec *e)
{
	const char *s = getenv("TESSERA_EC_CRASH_POINT");
	const char *num;
	char *end;
	unsigned long n;

	if (s == NULL || *s == '\0')
		return;
	if (strncmp(s, "staged:", 7) == 0) {
		e->crash_kind = EC_CRASH_STAGED;
		num = s + 7;
	} else if (strncmp(s, "committed:", 10) == 0) {
		e->crash_kind = EC_CRASH_COMMITTED;
		num = s + 10;
	} else if (strcmp(s, "acked:0") == 0) {
		e->crash_kind = EC_CRASH_ACKED;
		num = s + 6;
	} else {
		tsr_warn("ec %s: TESSERA_EC_CRASH_POINT=%s: not staged:N, committed:N or acked:0, ignored",
			 e->name, s);
		return;
	}
	n = strtoul(num, &end, 10);
	if (*num == '\0' || *end != '\0' || n > TSR_LAYOUT_MAX_COPIES) {
		tsr_warn("ec %s: TESSERA_EC_CRASH_POINT=%s: bad count, ignored", e->name, s);
		e->crash_kind = EC_CRASH_NONE;
		return;
	}
	e->crash_n = (unsigned)n;
	e->crash_armed = true;
	tsr_warn("ec %s: fault switch armed: %s", e->name, s);
}

int tsr_layout_ec_create(const struct tsr_ec_opts *opts, struct tsr_layout **out)
{
	struct ec *e;
	int ret;

	ret = check_opts(opts);
	if (ret < 0)
		return ret;
	e = calloc(1, sizeof(*e));
	if (e == NULL)
		return -ENOMEM;
	e->timer_fd = -1;
	snprintf(e->name, sizeof(e->name), "%s", opts->name);
	snprintf(e->node_id, sizeof(e->node_id), "%s", opts->node_id);
	snprintf(e->token, sizeof(e->token), "%s", opts->token ? opts->token : "");
	snprintf(e->state_dir, sizeof(e->state_dir), "%s", opts->state_dir);
	e->size = opts->size;
	e->k = opts->k;
	e->m = opts->m;
	e->n = e->k + e->m;
	e->unit = opts->stripe_unit;
	e->width = (uint64_t)e->k * e->unit;
	e->nstripes = tsr_ec_stripes(e->size, e->k, e->unit);
	e->chunk_size = tsr_ec_chunk_volume_size(e->size, e->k, e->unit);
	e->epoch = opts->epoch;
	e->store = opts->store;
	e->home = opts->home;
	e->min_in_sync = opts->min_in_sync ? opts->min_in_sync : e->k;
	e->peer_timeout_ms = opts->peer_timeout_ms ? opts->peer_timeout_ms : 5000;
	e->write_wait_ms = opts->write_wait_ms ? opts->write_wait_ms : 30000;
	e->resync_rate = opts->resync_rate;
	e->region_size = opts->region_size ? opts->region_size : (1u << 20);
	if (e->region_size < e->unit)
		e->region_size = e->unit;
	e->region_shift = (unsigned)__builtin_ctz(e->region_size);
	e->nregions = (e->chunk_size + e->region_size - 1) >> e->region_shift;
	e->converge = opts->converge;
	e->hooks = opts->hooks;
	e->n_copies = opts->n_copies;
	e->cs = (struct copyset){
	    .ops = &ec_copyset_ops,
	    .layout = e,
	    .kind = "ec",
	    .name = e->name,
	    .node_id = e->node_id,
	    .token = e->token,
	    .state_dir = e->state_dir,
	    .peer_timeout_ms = e->peer_timeout_ms,
	    .epoch = e->epoch,
	    .copy_size = e->chunk_size,
	    .store = e->store,
	    .home = e->home,
	    .hooks = &e->hooks,
	    .closing = &e->closing,
	    .fenced = &e->fenced,
	    .fence_req = &e->fence_req,
	};
	copyset_init(&e->cs);
	crash_point_parse(e);
	ret = tsr_ec_codec_create(e->k, e->m, &e->codec);
	if (ret < 0)
		goto err;
	/* the bitmaps' host: only the fields mirror_bitmap.c reads */
	e->bmhost = calloc(1, sizeof(*e->bmhost));
	if (e->bmhost == NULL) {
		ret = -ENOMEM;
		goto err;
	}
	snprintf(e->bmhost->name, sizeof(e->bmhost->name), "%s", e->name);
	e->bmhost->size = e->chunk_size;
	e->bmhost->region_size = e->region_size;
	e->bmhost->region_shift = e->region_shift;
	e->bmhost->nregions = e->nregions;
	for (unsigned i = 0; i < e->n_copies; i++)
		e->copies[i].bm.fd = -1;
	for (unsigned i = 0; i < e->n_copies; i++) {
		const struct tsr_layout_copy *oc = &opts->copies[i];
		struct ecopy *c = &e->copies[i];
		char path[PATH_MAX];

		copyset_copy_init(&c->base, &e->cs, i, oc);
		c->e = e;
		/*
		 * full_resync on a copy recorded IN_SYNC is attach.c's mark of
		 * the dead last coordinator's own copy (the mirror's rule: a
		 * mirror copy is written in place before the others acknowledge,
		 * so it may hold writes nobody acknowledged).  An ec chunk copy
		 * recorded IN_SYNC changes in place only by the COMMIT of a txn
		 * in its stage journal: reachable, the recovery lists and decides
		 * it like every other copy's; away, its stripes are marked (steps
		 * 3 and ec_resync.c step 1).  So it is an in-sync copy like the
		 * others.  Taken for out of sync, it left a 2+1 volume whose
		 * coordinator died while another copy rebuilt with one in-sync
		 * copy, and every attach elsewhere was refused.
		 */
		c->full_resync = oc->full_resync && oc->state != TSR_COPY_IN_SYNC;
		if (oc->full_resync && !c->full_resync)
			tsr_info("ec %s: copy %u (%s): the last coordinator's, recorded in sync: its "
				 "staged txns are recovered with the others' (no full rebuild)",
				 e->name, i, oc->node_id);
		/* what it missed under another coordinator, from the metadata store */
		ret = ec_missed_adopt(e, oc->node_id, oc->missed);
		if (ret < 0) {
			tsr_error("ec %s: copy %u (%s): cannot note the snapshot operations it "
				  "missed: %s",
				  e->name, i, oc->node_id, strerror(-ret));
			goto err;
		}
		if (ret > 0)
			tsr_info("ec %s: copy %u (%s): %d snapshot operations it missed, as recorded",
				 e->name, i, oc->node_id, ret);
		ret = copyset_bitmap_path(&e->cs, oc->node_id, path);
		if (ret < 0)
			goto err;
		ret = mbm_open(&c->bm, e->bmhost, path, oc->state != TSR_COPY_IN_SYNC,
			       c->full_resync);
		if (ret < 0)
			goto err;
		c->bm.hold = bm_hold;
		c->bm.owner = e;
		if (c->local) {
			ret = copyset_open_local(&c->base, "local chunk volume");
			if (ret < 0)
				goto err;
		}
	}
	/* from here the layout is freed or destroyed on failure */
	ret = copyset_start(&e->cs, start_msg, &e->start_status, &ec_layout_ops, out);
	if (ret < 0)
		return ret;
	e->layout = *out;
	tsr_info("ec %s: ready, %u+%u, unit %u, epoch %llu, %u of %u copies in sync, %llu txns "
		 "rolled forward, %llu back",
		 e->name, e->k, e->m, e->unit, (unsigned long long)e->epoch, e->cs.status.in_sync,
		 e->n_copies, (unsigned long long)e->txn_rolled_forward,
		 (unsigned long long)e->txn_rolled_back);
	return 0;
err:
	ec_free(e);
	return ret;
}
