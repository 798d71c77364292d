/*
 * Mirror layout: block-by-block comparison of the IN_SYNC copies
 * (DESIGN.md invariants 3 and 5).
 *
 * The volume is walked in chunks of MIRROR_SCRUB_CHUNK bytes.  Each chunk is
 * range-locked against host writes, every IN_SYNC copy gives the CRC32C of
 * each of its blocks (remote: the peer SUMS request; local: a read and
 * tsr_crc32c), and for each block the copies are grouped by CRC:
 *  - scrub: the largest group wins, a tie goes to the group holding the
 *    local copy, else the lowest index; a copy that cannot read a block
 *    (-EIO: CRC error) is found by asking it block by block, and is in no
 *    group;
 *  - converge (at create, before the volume serves): the first IN_SYNC copy,
 *    local preferred, wins whatever the others say (the previous coordinator
 *    may have written it last), unless it cannot read the block.
 * Blocks outside the winning group are rewritten from it (mirror_xfer, the
 * chunk's lock already held), runs of neighbouring blocks with the same
 * source and targets as one copy.  Scrub counts mismatches, repaired and
 * unrepaired blocks (no readable copy, or the rewrite failed); converge
 * counts the bytes it moved as resync bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layout/mirror_internal.h"
#include "tessera/test_hook.h"

#define CHUNK_BLOCKS (MIRROR_SCRUB_CHUNK / TSR_BLOCK_SIZE)

struct mscrub {
	struct mirror *m;
	bool repair, converge, aborted;
	void (*done)(void *arg, int status);
	void *arg;
	uint64_t pos; /* chunk being compared */
	uint32_t len;
	struct rlock rl;
	bool locked, lock_wait;
	uint32_t set; /* copies compared in this chunk */
	int cstatus[TSR_MIRROR_MAX_COPIES];
	uint32_t sums[TSR_MIRROR_MAX_COPIES][CHUNK_BLOCKS];
	uint8_t unreadable[TSR_MIRROR_MAX_COPIES][CHUNK_BLOCKS];
	int pending;
	/* block-by-block pass over a copy that answered -EIO */
	unsigned fb_copy;
	uint32_t fb_block;
	uint32_t fb_sum;
	/* repairs of this chunk */
	uint32_t rep_block; /* next block to look at */
	uint32_t rep_run;   /* blocks in the run in flight */
	/* the snapshot pass, after the heads */
	bool in_snaps;
	int snap_phase; /* of a chunk: 0 sums, 1 block by block (-EIO), 2 closing */
	uint32_t snap_holding, snap_lacking; /* copies with / without it, this chunk */
	uint32_t srep_bad;                   /* the run being repaired: copies that differ */
	int srep_win;                        /* ... the copy whose bytes they get */
	bool srep_failed;                    /* ... a rewrite of it failed */
	struct tsr_snap_info *snaps; /* listed when the scrub starts */
	size_t n_snaps, snap_i;
	uint64_t head_bytes; /* progress: the heads' part of scrub_total */
	uint64_t snap_base;  /* ... the snapshots before snap_i (their sizes) */
	uint64_t snap_bad;      /* blocks of the current snapshot found differing */
	struct tsr_svol *ssvol; /* the local copy's snapshot, this chunk */
	uint64_t shandle[TSR_MIRROR_MAX_COPIES]; /* remote sessions on VOL@SNAP, this chunk */
	uint8_t *sbuf;                           /* the local snapshot's chunk */
};

struct ssub {
	struct mscrub *s;
	unsigned idx;
};

static void chunk_next(struct mscrub *s);
static void chunk_compare(struct mscrub *s);
static void repair_next(struct mscrub *s);

static bool snaps_start(struct mscrub *s);
static void snaps_list(struct mscrub *s);

static void scrub_finish(struct mscrub *s, int status)
{
	struct mirror *m = s->m;

	if (status == 0 && !s->converge && !s->in_snaps && !s->aborted && snaps_start(s))
		return; /* the snapshots are compared next */
	free(s->snaps);
	s->snaps = NULL;
	if (s->sbuf != NULL)
		tsr_free_aligned(s->sbuf);
	s->sbuf = NULL;
	if (s->locked)
		rl_release(m, &s->rl);
	if (s->lock_wait)
		rl_cancel(m, &s->rl);
	if (m->scrub == s)
		m->scrub = NULL;
	if (!s->converge) {
		m->scrub_running = false;
		m->scrub_finished = status == 0;
	}
	mirror_publish(m);
	s->done(s->arg, status);
	free(s);
	m_put(m);
}

static void chunk_end(struct mscrub *s)
{
	struct mirror *m = s->m;

	if (s->locked) {
		s->locked = false;
		rl_release(m, &s->rl);
	}
	s->pos += s->len;
	if (!s->converge)
		m->scrub_done = s->pos;
}

static void sums_done(void *arg, int status)
{
	struct ssub *ss = arg;
	struct mscrub *s = ss->s;
	struct mcopy *c = &s->m->copies[ss->idx];

	if (status < 0) {
		s->cstatus[ss->idx] = status;
		if (status != -EIO) {
			s->set &= ~(1u << ss->idx);
			mirror_copy_failed(c, status);
		}
	}
	free(ss);
	if (--s->pending == 0)
		chunk_compare(s);
}

/* Ask copy fb_copy for one block at a time; unreadable blocks are marked. */
static void fallback_next(struct mscrub *s);

static void fallback_done(void *arg, int status)
{
	struct mscrub *s = arg;
	unsigned i = s->fb_copy;

	if (status == 0) {
		s->sums[i][s->fb_block] = s->fb_sum;
	} else if (status == -EIO) {
		s->unreadable[i][s->fb_block] = 1;
	} else {
		s->set &= ~(1u << i);
		mirror_copy_failed(&s->m->copies[i], status);
	}
	s->fb_block++;
	fallback_next(s);
}

static void fallback_next(struct mscrub *s)
{
	struct mirror *m = s->m;
	uint32_t nblocks = s->len / TSR_BLOCK_SIZE;

	if (s->aborted || m->fenced || m->closing) {
		chunk_end(s);
		scrub_finish(s, -ECANCELED);
		return;
	}
	for (; s->fb_copy < m->n_copies; s->fb_copy++, s->fb_block = 0) {
		unsigned i = s->fb_copy;
		int ret;

		if (!(s->set & (1u << i)) || s->cstatus[i] != -EIO)
			continue;
		if (s->fb_block >= nblocks) {
			s->cstatus[i] = 0;
			continue;
		}
		ret = mcopy_submit(&m->copies[i], MCOP_SUMS,
				   s->pos + (uint64_t)s->fb_block * TSR_BLOCK_SIZE, TSR_BLOCK_SIZE,
				   &s->fb_sum, 0, fallback_done, s);
		if (ret == 0)
			return;
		s->set &= ~(1u << i);
	}
	chunk_compare(s);
}

static void chunk_sums(struct mscrub *s)
{
	struct mirror *m = s->m;

	s->set = 0;
	for (unsigned i = 0; i < m->n_copies; i++) {
		struct mcopy *c = &m->copies[i];

		if (c->present && c->open && c->state == TSR_COPY_IN_SYNC)
			s->set |= 1u << i;
		s->cstatus[i] = 0;
		memset(s->unreadable[i], 0, sizeof(s->unreadable[i]));
	}
	s->pending = 1;
	for (unsigned i = 0; i < m->n_copies; i++) {
		struct ssub *ss;
		int ret;

		if (!(s->set & (1u << i)))
			continue;
		ss = malloc(sizeof(*ss));
		if (ss == NULL) {
			s->set &= ~(1u << i);
			continue;
		}
		ss->s = s;
		ss->idx = i;
		s->pending++;
		ret = mcopy_submit(&m->copies[i], MCOP_SUMS, s->pos, s->len, s->sums[i], 0,
				   sums_done, ss);
		if (ret < 0)
			sums_done(ss, ret == -EIO ? -EIO : ret);
	}
	if (--s->pending == 0)
		chunk_compare(s);
}

static void chunk_granted(struct rlock *rl)
{
	struct mscrub *s = (struct mscrub *)((char *)rl - offsetof(struct mscrub, rl));

	s->lock_wait = false;
	s->locked = true;
	chunk_sums(s);
}

static void chunk_compare(struct mscrub *s)
{
	struct mirror *m = s->m;

	/* copies that failed their chunk SUMS with -EIO: ask block by block */
	for (unsigned i = 0; i < m->n_copies; i++) {
		if ((s->set & (1u << i)) && s->cstatus[i] == -EIO) {
			s->fb_copy = i;
			s->fb_block = 0;
			fallback_next(s);
			return;
		}
	}
	s->rep_block = 0;
	repair_next(s);
}

/* For block b: the winning copy (or -1: none readable) and the copies to fix. */
static int block_verdict(struct mscrub *s, uint32_t b, uint32_t *bad)
{
	struct mirror *m = s->m;
	int pref = -1, winner = -1, best = 0;

	*bad = 0;
	/* preferred copy: local, else the lowest index */
	for (unsigned i = 0; i < m->n_copies; i++) {
		if (!(s->set & (1u << i)) || s->unreadable[i][b])
			continue;
		if (pref < 0 || (m->copies[i].local && !m->copies[pref].local))
			pref = (int)i;
	}
	if (pref < 0) {
		for (unsigned i = 0; i < m->n_copies; i++)
			if (s->set & (1u << i))
				*bad |= 1u << i;
		return -1;
	}
	if (s->converge) {
		winner = pref;
	} else {
		int votes[TSR_MIRROR_MAX_COPIES] = {0};

		for (unsigned i = 0; i < m->n_copies; i++) {
			if (!(s->set & (1u << i)) || s->unreadable[i][b])
				continue;
			for (unsigned j = 0; j < m->n_copies; j++)
				if ((s->set & (1u << j)) && !s->unreadable[j][b] &&
				    s->sums[j][b] == s->sums[i][b])
					votes[i]++;
			if (votes[i] > best) {
				best = votes[i];
				winner = (int)i;
			}
		}
		/* majority wins; a tie goes to the preferred copy's group */
		if (votes[pref] == best)
			winner = pref;
	}
	for (unsigned i = 0; i < m->n_copies; i++) {
		if (!(s->set & (1u << i)))
			continue;
		if (s->unreadable[i][b] || s->sums[i][b] != s->sums[winner][b])
			*bad |= 1u << i;
	}
	return winner;
}

static void repair_done(void *arg, int status, uint64_t bytes)
{
	struct mscrub *s = arg;
	struct mirror *m = s->m;

	if (status == 0) {
		if (s->converge)
			m->resync_bytes_copied += bytes;
		else
			m->scrub_repaired += s->rep_run;
	} else if (!s->converge) {
		m->scrub_unrepaired += s->rep_run;
	}
	s->rep_block += s->rep_run;
	s->rep_run = 0;
	repair_next(s);
}

static void repair_next(struct mscrub *s)
{
	struct mirror *m = s->m;
	uint32_t nblocks = s->len / TSR_BLOCK_SIZE;

	if (s->aborted || m->fenced || m->closing) {
		chunk_end(s);
		scrub_finish(s, m->fenced ? -EIO : -ECANCELED);
		return;
	}
	while (s->rep_block < nblocks) {
		uint32_t b = s->rep_block, bad, bad2, n = 1;
		int win = block_verdict(s, b, &bad), win2;

		if (bad == 0) {
			s->rep_block++;
			continue;
		}
		if (!s->converge)
			m->scrub_mismatches++;
		if (win < 0 || (!s->repair && !s->converge)) {
			if (win < 0 && !s->converge)
				m->scrub_unrepaired++;
			else if (win < 0)
				tsr_error(
				    "mirror %s: converge: block %llu unreadable on every copy",
				    m->name, (unsigned long long)(s->pos / TSR_BLOCK_SIZE + b));
			s->rep_block++;
			continue;
		}
		/* extend the run: same source group and same targets */
		while (b + n < nblocks) {
			win2 = block_verdict(s, b + n, &bad2);
			if (win2 != win || bad2 != bad)
				break;
			if (!s->converge)
				m->scrub_mismatches++;
			n++;
		}
		s->rep_run = n;
		tsr_warn("mirror %s: %s: blocks %llu+%u differ, rewriting copies 0x%x from copy %d",
			 m->name, s->converge ? "converge" : "scrub",
			 (unsigned long long)(s->pos / TSR_BLOCK_SIZE + b), n, bad, win);
		if (mirror_xfer(m, s->pos + (uint64_t)b * TSR_BLOCK_SIZE, n * TSR_BLOCK_SIZE, bad,
				true, win, repair_done, s) == 0)
			return;
		if (!s->converge)
			m->scrub_unrepaired += n;
		s->rep_block += n;
		s->rep_run = 0;
	}
	chunk_end(s);
	chunk_next(s);
}

static void chunk_next(struct mscrub *s)
{
	struct mirror *m = s->m;

	while (!s->aborted && !m->fenced && !m->closing) {
		if (s->pos >= m->size) {
			scrub_finish(s, 0);
			return;
		}
		s->len = m->size - s->pos < MIRROR_SCRUB_CHUNK ? (uint32_t)(m->size - s->pos)
							       : MIRROR_SCRUB_CHUNK;
		if (mirror_in_sync(m) < 2 && !s->converge) {
			/* nothing to compare against: skip (a single copy checks its
			 * own CRCs on every read) */
			s->pos += s->len;
			m->scrub_done = s->pos;
			continue;
		}
		if (mirror_in_sync(m) < 2) {
			s->pos += s->len;
			continue;
		}
		if (rl_acquire(m, &s->rl, s->pos, s->len, chunk_granted)) {
			s->locked = true;
			chunk_sums(s);
		} else {
			s->lock_wait = true;
		}
		return;
	}
	scrub_finish(s, m->fenced ? -EIO : -ECANCELED);
}

/* ---- snapshots: the same image on every copy ----
 *
 * After the heads, each snapshot the local copy lists is compared the same
 * way, chunk by chunk: under the chunk's range lock (a snapshot operation
 * takes the whole volume's, so no delete runs while a session is open),
 * every IN_SYNC copy's snapshot is opened (local: tsr_store_snap_open, read
 * and summed; remote: a peer session on VOL@SNAP, SUMS), summed, and the
 * block sums voted on as for the heads.  A block outside the majority
 * counts as a mismatch; with repair, the winning copy's bytes (the local
 * chunk already read, or a peer READ on the winner's session) are written
 * into each differing copy that holds the snapshot (an unreadable block
 * too), by tsr_svol_snap_repair (local: a blocking store call, run in a
 * thread of its own, see srep_local_start) or a WRITE with
 * TSR_PEER_F_REPAIR on its session; such a
 * repair changes that snapshot's image only (engine/store/repair.c).  A copy
 * lacking the snapshot (-ENOENT) cannot be repaired so (replace-replica
 * rebuilds it with its snapshots): its blocks count as unrepaired.  Then
 * the sessions are closed, before the lock goes.  A snapshot no copy holds
 * (deleted since the list) is skipped.  The list is taken when the scrub
 * starts (snaps_list), so that scrub_total counts the heads and every
 * snapshot's size from the start and scrub_done reaches it at the end
 * (a snapshot passed over counts as done).
 */
static void snap_chunk_next(struct mscrub *s);

/* Sort the chunk's copies once the sums (and block-by-block answers) are
 * in: holding it, lacking it (every block counts), or left out (failed). */
static void snap_classify(struct mscrub *s)
{
	struct mirror *m = s->m;
	uint32_t nblocks = s->len / TSR_BLOCK_SIZE;

	s->snap_holding = s->snap_lacking = 0;
	for (unsigned i = 0; i < m->n_copies; i++) {
		if (!(s->set & (1u << i)))
			continue;
		if (s->cstatus[i] == -ENOENT || s->cstatus[i] == -EIO) {
			if (s->cstatus[i] == -ENOENT)
				s->snap_lacking |= 1u << i;
			else
				s->snap_holding |= 1u << i;
			memset(s->unreadable[i], 1, nblocks);
		} else if (s->cstatus[i] < 0) {
			s->set &= ~(1u << i); /* not compared (connection, queue) */
		} else {
			s->snap_holding |= 1u << i;
		}
	}
}

/* The chunk's sessions are closed: on to the next chunk. */
static void snap_chunk_compare(struct mscrub *s)
{
	struct mirror *m = s->m;
	const struct tsr_snap_info *si = &s->snaps[s->snap_i];

	if (s->snap_holding == 0) /* deleted since the list, or nothing to compare */
		s->pos = si->size;
	else
		s->pos += s->len;
	m->scrub_done = s->head_bytes + s->snap_base + (s->pos < si->size ? s->pos : si->size);
	if (s->locked) {
		s->locked = false;
		rl_release(m, &s->rl);
	}
	snap_chunk_next(s);
}

static void snap_close_all(struct mscrub *s);
static void snap_repair_next(struct mscrub *s);

/* A run's rewrite on one copy answered (or, local, returned). */
static void snap_rep_write_done(void *arg, int status)
{
	struct mscrub *s = arg;
	struct mirror *m = s->m;

	if (status < 0)
		s->srep_failed = true;
	if (--s->pending > 0)
		return;
	if (s->srep_failed || (s->srep_bad & s->snap_lacking))
		m->scrub_unrepaired += s->rep_run;
	else
		m->scrub_repaired += s->rep_run;
	s->rep_block += s->rep_run;
	s->rep_run = 0;
	snap_repair_next(s);
}

/* ---- the local copy's snapshot repair, off the home worker ----
 *
 * tsr_svol_snap_repair is a blocking store call (the store lock, the
 * layer's writes and fdatasyncs: milliseconds, far more on a loaded disk).
 * On the home worker it stalled every volume of that worker, so it runs in
 * a thread of its own, as the peer server's REPAIR does (f9986c4), and its
 * answer comes back as a worker message (snap_rep_local_done), counted in
 * s->pending like a remote copy's rewrite.  What it touches stays alive
 * until then: the scrub (and so the mirror: its reference) waits for
 * pending to drop to 0 whatever happens meanwhile (an abort, a fence, the
 * volume's close only set flags; the layout's destroy waits for the last
 * reference), s->sbuf (freed only by scrub_finish) and s->ssvol (put by
 * snap_close_all, once pending is 0).  Out of memory for the message, the
 * thread tries again while the worker runs; once the worker stops
 * (-ESHUTDOWN) the answer is dropped: the thread puts the scrub's svol
 * reference (nothing runs the scrub on after that; the store can close)
 * and the scrub itself is left, like a layout whose home worker stopped
 * before it (copyset_destroy).  No thread: the call runs here, as before. */
struct srep_off {
	struct mscrub *s;
	struct tsr_worker *home;
	struct tsr_svol *svol; /* s->ssvol (the scrub's reference) */
	uint64_t epoch, off;
	uint32_t len;
	const uint8_t *data; /* in s->sbuf */
	int status;
};

/* Tests only: while the file named by $TSR_TEST_MIRROR_SNAP_REPAIR_HOLD_FILE
 * exists (30 s at most), a local snapshot repair waits before its store
 * call; FILE.held is made when it starts waiting. */
static void srep_test_hold(void)
{
	tsr_test_hold_file("TSR_TEST_MIRROR_SNAP_REPAIR_HOLD_FILE", true);
}

/* Tests only: $TSR_TEST_MIRROR_SNAP_REPAIR_INLINE set (not "0"): the call
 * on the home worker, as before (the A/B of the stall). */
static bool srep_test_inline(void)
{
	return tsr_test_env_on("TSR_TEST_MIRROR_SNAP_REPAIR_INLINE");
}

static void snap_rep_write_done(void *arg, int status);

/* On the home worker: the local repair's answer. */
static void snap_rep_local_done(struct tsr_worker *w, void *arg)
{
	struct srep_off *o = arg;
	struct mscrub *s = o->s;
	int status = o->status;

	(void)w;
	if (status < 0)
		tsr_warn("mirror %s: scrub: rewriting the local copy's snapshot %s at %llu "
			 "(+%u): %s",
			 s->m->name, s->snaps[s->snap_i].name, (unsigned long long)o->off, o->len,
			 strerror(-status));
	free(o);
	snap_rep_write_done(s, status);
}

static void *srep_main(void *arg)
{
	struct srep_off *o = arg;
	int ret;

	tsr_log_set_thread_name("scrub-repair");
	srep_test_hold();
	o->status = tsr_svol_snap_repair(o->svol, o->epoch, o->off, o->len, o->data);
	ret = tsr_worker_send_retry(o->home, snap_rep_local_done, o, NULL, 0,
				    "mirror: scrub: the answer of a snapshot repair");
	if (ret < 0) { /* the home worker stopped: the answer is dropped, and
			* with it the scrub's last use of the svol (nothing on
			* that worker runs the scrub on): put it, so that the
			* store can close */
		tsr_warn("mirror: scrub: a snapshot repair's answer found its home worker "
			 "stopped: dropped");
		tsr_svol_put(o->svol);
		free(o);
	}
	return NULL;
}

/* The local copy's rewrite of [off, +len) of the chunk's snapshot: started
 * (0; snap_rep_write_done follows, from the worker), or -errno (nothing
 * started; s->pending is the caller's). */
static int srep_local_start(struct mscrub *s, uint64_t off, uint32_t len, const uint8_t *data)
{
	struct mirror *m = s->m;
	struct srep_off *o;
	pthread_attr_t attr;
	pthread_t t;
	int ret;

	if (!srep_test_inline() && (o = calloc(1, sizeof(*o))) != NULL) {
		o->s = s;
		o->home = m->home;
		o->svol = s->ssvol;
		o->epoch = m->epoch;
		o->off = off;
		o->len = len;
		o->data = data;
		ret = pthread_attr_init(&attr);
		if (ret == 0) {
			pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
			ret = pthread_create(&t, &attr, srep_main, o);
			pthread_attr_destroy(&attr);
		}
		if (ret == 0)
			return 0;
		free(o);
	}
	/* inline (no thread, or the test's A/B): the answer now */
	srep_test_hold();
	ret = tsr_svol_snap_repair(s->ssvol, m->epoch, off, len, data);
	if (ret < 0)
		return ret;
	snap_rep_write_done(s, 0);
	return 0;
}

/* The run's good bytes are in sbuf: write them into each differing copy
 * that holds the snapshot. */
static void snap_rep_write(struct mscrub *s)
{
	struct mirror *m = s->m;
	uint64_t off = s->pos + (uint64_t)s->rep_block * TSR_BLOCK_SIZE;
	uint32_t len = s->rep_run * TSR_BLOCK_SIZE;
	const uint8_t *data = s->sbuf + (size_t)s->rep_block * TSR_BLOCK_SIZE;
	int ret;

	s->pending = 1;
	for (unsigned i = 0; i < m->n_copies; i++) {
		struct mcopy *c = &m->copies[i];

		if (!(s->srep_bad & s->snap_holding & (1u << i)))
			continue;
		if (c->local) {
			s->pending++;
			ret = s->ssvol != NULL ? srep_local_start(s, off, len, data) : -ENOTCONN;
			if (ret < 0) {
				s->pending--;
				s->srep_failed = true;
			}
			continue;
		}
		s->pending++;
		ret = s->shandle[i] != 0 && c->client != NULL
			  ? tsr_peer_snap_repair(c->client, s->shandle[i], m->epoch, off, len, data,
						 snap_rep_write_done, s)
			  : -ENOTCONN;
		if (ret < 0) {
			s->pending--;
			s->srep_failed = true;
		}
	}
	snap_rep_write_done(s, 0); /* the launch reference */
}

static void snap_rep_read_done(void *arg, int status)
{
	struct mscrub *s = arg;

	if (status < 0) { /* the winner could not give its bytes */
		s->m->scrub_unrepaired += s->rep_run;
		s->rep_block += s->rep_run;
		s->rep_run = 0;
		snap_repair_next(s);
		return;
	}
	snap_rep_write(s);
}

/* Vote block by block; report each differing block; with repair, rewrite
 * runs of them (same winner, same copies) from the winner. */
static void snap_repair_next(struct mscrub *s)
{
	struct mirror *m = s->m;
	const struct tsr_snap_info *si = &s->snaps[s->snap_i];
	uint32_t nblocks = s->len / TSR_BLOCK_SIZE;

	if (s->snap_holding == 0 || __builtin_popcount(s->set) < 2) {
		snap_close_all(s);
		return;
	}
	if (s->rep_block == 0 && s->rep_run == 0 && s->snap_lacking != 0 && s->pos == 0)
		tsr_warn("mirror %s: scrub: snapshot %s missing on copies 0x%x", m->name, si->name,
			 s->snap_lacking);
	while (s->rep_block < nblocks && !s->aborted && !m->fenced && !m->closing) {
		uint32_t b = s->rep_block, bad, bad2, n = 1;
		int win = block_verdict(s, b, &bad);
		struct mcopy *w;
		int ret;

		if (bad == 0) {
			s->rep_block++;
			continue;
		}
		m->scrub_mismatches++;
		if (s->snap_bad++ < 8)
			tsr_warn("mirror %s: scrub: snapshot %s block %llu differs on copies 0x%x "
				 "(majority: copy %d); %s",
				 m->name, si->name,
				 (unsigned long long)(s->pos / TSR_BLOCK_SIZE + b), bad, win,
				 !s->repair ? "not repaired (--no-repair)"
				 : win < 0  ? "not repaired (no copy reads it)"
				 : (bad & s->snap_lacking)
				     ? "not repaired where the snapshot is missing"
				     : "rewriting");
		if (!s->repair || win < 0 || !(bad & s->snap_holding)) {
			m->scrub_unrepaired++;
			s->rep_block++;
			continue;
		}
		while (b + n < nblocks) {
			int win2 = block_verdict(s, b + n, &bad2);

			if (win2 != win || bad2 != bad)
				break;
			m->scrub_mismatches++;
			s->snap_bad++;
			n++;
		}
		s->rep_run = n;
		s->srep_bad = bad;
		s->srep_win = win;
		s->srep_failed = false;
		w = &m->copies[win];
		if (w->local) { /* its chunk is in sbuf (read whole, or block by block) */
			snap_rep_write(s);
			return;
		}
		/* into sbuf over the blocks of copies that differ (never the
		 * local copy's good bytes: local and winning, it would win) */
		ret =
		    s->shandle[win] != 0 && w->client != NULL
			? tsr_peer_read(w->client, s->shandle[win], m->epoch,
					s->pos + (uint64_t)b * TSR_BLOCK_SIZE, n * TSR_BLOCK_SIZE,
					s->sbuf + (size_t)b * TSR_BLOCK_SIZE, snap_rep_read_done, s)
			: -ENOTCONN;
		if (ret == 0)
			return;
		m->scrub_unrepaired += n;
		s->rep_block += n;
		s->rep_run = 0;
	}
	snap_close_all(s);
}

static void snap_close_done(void *arg, int status);
static void snap_fb_next(struct mscrub *s);

/* Close the chunk's sessions before its lock goes (then a delete may run);
 * compare once they are closed. */
static void snap_close_all(struct mscrub *s)
{
	s->snap_phase = 2;
	s->pending = 1;
	if (s->ssvol != NULL) {
		tsr_svol_put(s->ssvol);
		s->ssvol = NULL;
	}
	for (unsigned i = 0; i < s->m->n_copies; i++) {
		if (s->shandle[i] != 0) {
			struct mcopy *c = &s->m->copies[i];
			uint64_t h = s->shandle[i];

			s->shandle[i] = 0;
			if (c->client == NULL)
				continue;
			s->pending++;
			if (tsr_peer_close(c->client, h, s->m->epoch, snap_close_done, s) < 0)
				s->pending--;
		}
	}
	if (--s->pending == 0)
		snap_chunk_compare(s);
}

static void snap_step_done(struct mscrub *s)
{
	if (--s->pending > 0)
		return;
	if (s->snap_phase == 0) { /* sums in: copies that answered -EIO, block by block */
		s->snap_phase = 1;
		s->fb_copy = 0;
		s->fb_block = 0;
		snap_fb_next(s);
		return;
	}
	snap_chunk_compare(s); /* closed */
}

static void snap_fb_done(void *arg, int status)
{
	struct mscrub *s = arg;
	unsigned i = s->fb_copy;
	uint32_t b = s->fb_block;

	if (status == 0) {
		if (s->m->copies[i].local)
			s->sums[i][b] =
			    tsr_crc32c(0, s->sbuf + (size_t)b * TSR_BLOCK_SIZE, TSR_BLOCK_SIZE);
		else
			s->sums[i][b] = s->fb_sum;
		s->fb_block++;
	} else if (status == -EIO) {
		s->unreadable[i][b] = 1;
		s->fb_block++;
	} else {
		s->cstatus[i] = status; /* left out of the chunk */
		s->fb_copy++;
		s->fb_block = 0;
	}
	snap_fb_next(s);
}

/* Ask each copy whose chunk SUMS (or read) failed with -EIO one block at a
 * time, so that only its unreadable blocks count. */
static void snap_fb_next(struct mscrub *s)
{
	struct mirror *m = s->m;
	uint32_t nblocks = s->len / TSR_BLOCK_SIZE;

	for (; s->fb_copy < m->n_copies; s->fb_copy++, s->fb_block = 0) {
		unsigned i = s->fb_copy;
		struct mcopy *c = &m->copies[i];
		uint64_t off = s->pos + (uint64_t)s->fb_block * TSR_BLOCK_SIZE;
		int ret;

		if (!(s->set & (1u << i)) || s->cstatus[i] != -EIO)
			continue;
		if (s->aborted || m->fenced || m->closing)
			break;
		if (s->fb_block >= nblocks) {
			s->cstatus[i] = 0; /* its unreadable blocks are marked */
			continue;
		}
		if (c->local && s->ssvol != NULL)
			ret = tsr_svol_read_direct(s->ssvol, m->io, off, TSR_BLOCK_SIZE,
						   s->sbuf + (size_t)s->fb_block * TSR_BLOCK_SIZE,
						   snap_fb_done, s);
		else if (!c->local && s->shandle[i] != 0 && c->client != NULL)
			ret = tsr_peer_sums(c->client, s->shandle[i], m->epoch, off, TSR_BLOCK_SIZE,
					    &s->fb_sum, snap_fb_done, s);
		else
			ret = -ENOTCONN;
		if (ret == 0)
			return;
		/* cannot ask: the whole chunk counts as unreadable there */
	}
	snap_classify(s);
	s->rep_block = 0;
	s->rep_run = 0;
	snap_repair_next(s);
}

static void snap_close_done(void *arg, int status)
{
	(void)status; /* the session goes with the connection anyway */
	snap_step_done(arg);
}

static void snap_sums_done(void *arg, int status)
{
	struct ssub *ss = arg;
	struct mscrub *s = ss->s;

	if (status < 0 && s->cstatus[ss->idx] == 0)
		s->cstatus[ss->idx] = status;
	free(ss);
	snap_step_done(s);
}

static void snap_open_done(void *arg, int status, uint64_t handle, uint64_t size)
{
	struct ssub *ss = arg;
	struct mscrub *s = ss->s;
	struct mcopy *c = &s->m->copies[ss->idx];
	int ret;

	(void)size;
	if (status < 0 || c->client == NULL) {
		s->cstatus[ss->idx] = status < 0 ? status : -ENOTCONN;
		free(ss);
		snap_step_done(s);
		return;
	}
	s->shandle[ss->idx] = handle;
	ret = tsr_peer_sums(c->client, handle, s->m->epoch, s->pos, s->len, s->sums[ss->idx],
			    snap_sums_done, ss);
	if (ret < 0)
		snap_sums_done(ss, ret);
}

static void snap_local_done(void *arg, int status)
{
	struct ssub *ss = arg;
	struct mscrub *s = ss->s;

	if (status == 0)
		for (uint32_t b = 0; b < s->len / TSR_BLOCK_SIZE; b++)
			s->sums[ss->idx][b] =
			    tsr_crc32c(0, s->sbuf + (size_t)b * TSR_BLOCK_SIZE, TSR_BLOCK_SIZE);
	snap_sums_done(ss, status);
}

static void snap_chunk_sums(struct mscrub *s)
{
	struct mirror *m = s->m;
	const char *snap = s->snaps[s->snap_i].name;
	char rname[2 * 64 + 2];

	snprintf(rname, sizeof(rname), "%s@%s", m->name, snap);
	s->set = 0;
	s->pending = 1;
	s->snap_phase = 0;
	for (unsigned i = 0; i < m->n_copies; i++) {
		struct mcopy *c = &m->copies[i];
		struct ssub *ss;
		int ret;

		s->cstatus[i] = 0;
		s->shandle[i] = 0;
		memset(s->unreadable[i], 0, sizeof(s->unreadable[i]));
		if (!c->present || !c->open || c->state != TSR_COPY_IN_SYNC)
			continue;
		if (!c->local && c->client == NULL)
			continue;
		ss = malloc(sizeof(*ss));
		if (ss == NULL)
			continue;
		s->set |= 1u << i;
		ss->s = s;
		ss->idx = i;
		s->pending++;
		if (c->local) {
			ret = tsr_store_snap_open(m->store, m->name, snap, &s->ssvol);
			if (ret == 0)
				ret = tsr_svol_read_direct(s->ssvol, m->io, s->pos, s->len, s->sbuf,
							   snap_local_done, ss);
		} else {
			ret = tsr_peer_open(c->client, rname, m->epoch, snap_open_done, ss);
		}
		if (ret < 0) {
			s->cstatus[i] = ret;
			free(ss);
			s->pending--;
		}
	}
	snap_step_done(s);
}

static void snap_granted(struct rlock *rl)
{
	struct mscrub *s = (struct mscrub *)((char *)rl - offsetof(struct mscrub, rl));

	s->lock_wait = false;
	s->locked = true;
	snap_chunk_sums(s);
}

static void snap_chunk_next(struct mscrub *s)
{
	struct mirror *m = s->m;

	while (!s->aborted && !m->fenced && !m->closing) {
		const struct tsr_snap_info *si;

		if (s->snap_i >= s->n_snaps) {
			scrub_finish(s, 0);
			return;
		}
		si = &s->snaps[s->snap_i];
		if (s->pos >= si->size || mirror_in_sync(m) < 2) {
			if (s->snap_bad > 0)
				tsr_warn(
				    "mirror %s: scrub: snapshot %s: %llu blocks differ between "
				    "copies",
				    m->name, si->name, (unsigned long long)s->snap_bad);
			s->snap_base += si->size; /* compared, or passed over */
			m->scrub_done = s->head_bytes + s->snap_base;
			s->snap_i++;
			s->pos = 0;
			s->snap_bad = 0;
			continue;
		}
		s->len = si->size - s->pos < MIRROR_SCRUB_CHUNK ? (uint32_t)(si->size - s->pos)
								: MIRROR_SCRUB_CHUNK;
		if (rl_acquire(m, &s->rl, s->pos, s->len, snap_granted)) {
			s->locked = true;
			snap_chunk_sums(s);
		} else {
			s->lock_wait = true;
		}
		return;
	}
	scrub_finish(s, m->fenced ? -EIO : -ECANCELED);
}

/* The list is in s->snaps: compare them, oldest first (false: none). */
static bool snaps_go(struct mscrub *s)
{
	if (s->n_snaps == 0)
		return false;
	s->sbuf = tsr_alloc_aligned(MIRROR_SCRUB_CHUNK);
	if (s->sbuf == NULL)
		return false;
	s->snap_i = 0;
	s->snap_base = 0;
	s->pos = 0;
	s->snap_bad = 0;
	snap_chunk_next(s);
	return true;
}

/* The list is in (or not): count the snapshots in the progress's total,
 * then compare the heads. */
static void snaps_listed_go(struct mscrub *s)
{
	struct mirror *m = s->m;

	/* compared up to the volume's size: a snapshot cut on copies grown past
	 * the record (a resize cut short) is larger on them than on a copy made
	 * up since (the make-up cuts at most the volume), and nothing past the
	 * volume's end was ever writable */
	for (size_t i = 0; i < s->n_snaps; i++) {
		if (s->snaps[i].size > m->size)
			s->snaps[i].size = m->size;
		m->scrub_total += s->snaps[i].size;
	}
	mirror_publish(m);
	chunk_next(s);
}

/* A remote copy's list (no in-sync copy here): the snapshots to compare. */
static void snaps_listed(void *arg, int status, const struct tsr_peer_snap_entry *e, size_t n)
{
	struct mscrub *s = arg;
	struct mirror *m = s->m;

	if (s->aborted || m->fenced || m->closing) {
		scrub_finish(s, m->fenced ? -EIO : -ECANCELED);
		return;
	}
	if (status == 0 && n > 0) {
		s->snaps = calloc(n, sizeof(*s->snaps));
		if (s->snaps == NULL)
			status = -ENOMEM;
	}
	if (status < 0) {
		tsr_warn("mirror %s: scrub: snapshots not compared (cannot list them on a copy: "
			 "%s)",
			 m->name, strerror(-status));
		snaps_listed_go(s);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		snprintf(s->snaps[i].name, sizeof(s->snaps[i].name), "%s", e[i].name);
		s->snaps[i].size = e[i].size;
	}
	s->n_snaps = n;
	snaps_listed_go(s);
}

/* A scrub's start: list the snapshots to compare after the heads (so that
 * the progress's total counts them from the start), then compare the
 * heads.  The list: the local IN_SYNC copy's store, else a SNAP_LIST asked
 * of the first remote IN_SYNC copy (the snapshots are cut on every in-sync
 * copy: one list serves; a copy lacking one is found by the comparison).
 * A snapshot cut while the scrub runs is left for the next scrub; one
 * deleted meanwhile is passed over. */
static void snaps_list(struct mscrub *s)
{
	struct mirror *m = s->m;
	struct mcopy *remote = NULL;
	bool local = false;

	for (unsigned i = 0; i < m->n_copies; i++) {
		struct mcopy *c = &m->copies[i];

		if (!c->present || !c->open || c->state != TSR_COPY_IN_SYNC)
			continue;
		if (c->local)
			local = true;
		else if (remote == NULL && c->client != NULL)
			remote = c;
	}
	if (local && m->store != NULL) {
		if (tsr_store_snap_list(m->store, m->name, &s->snaps, &s->n_snaps) < 0) {
			s->snaps = NULL;
			s->n_snaps = 0;
		}
		snaps_listed_go(s);
		return;
	}
	if (remote != NULL &&
	    tsr_peer_snap_list(remote->client, remote->handle, m->epoch, snaps_listed, s) == 0)
		return; /* snaps_listed goes on */
	tsr_info("mirror %s: scrub: snapshots not compared (no in-sync copy to list them)",
		 m->name);
	snaps_listed_go(s);
}

/* The heads are done: compare the snapshots listed at the start next
 * (true), or nothing to do. */
static bool snaps_start(struct mscrub *s)
{
	s->in_snaps = true;
	return snaps_go(s);
}

int mirror_scrub_begin(struct mirror *m, bool repair, bool converge,
		       void (*done)(void *arg, int status), void *arg)
{
	struct mscrub *s;

	if (m->scrub != NULL)
		return -EBUSY;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->m = m;
	s->repair = repair;
	s->converge = converge;
	s->done = done;
	s->arg = arg;
	m->scrub = s;
	if (!converge) {
		m->scrub_running = true;
		m->scrub_finished = false;
		m->scrub_total = m->size; /* + the snapshots, once listed */
		m->scrub_done = 0;
		m->scrub_mismatches = m->scrub_repaired = m->scrub_unrepaired = 0;
	}
	s->head_bytes = m->size;
	m_get(m);
	mirror_publish(m);
	if (converge)
		chunk_next(s);
	else
		snaps_list(s);
	return 0;
}

void mirror_scrub_abort(struct mirror *m)
{
	struct mscrub *s = m->scrub;

	if (s == NULL)
		return;
	s->aborted = true;
	if (s->lock_wait) {
		/* waiting for a range: nothing in flight, end now */
		s->lock_wait = false;
		rl_cancel(m, &s->rl);
		scrub_finish(s, -ECANCELED);
	}
}
