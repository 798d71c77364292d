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
#include <stdlib.h>
#include <string.h>

#include "layout/mirror_internal.h"

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
};

struct ssub {
	struct mscrub *s;
	unsigned idx;
};

static void chunk_next(struct mscrub *s);
static void chunk_compare(struct mscrub *s);
static void repair_next(struct mscrub *s);

static void scrub_finish(struct mscrub *s, int status)
{
	struct mirror *m = s->m;

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
		m->scrub_total = m->size;
		m->scrub_done = 0;
		m->scrub_mismatches = m->scrub_repaired = m->scrub_unrepaired = 0;
	}
	m_get(m);
	mirror_publish(m);
	chunk_next(s);
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
