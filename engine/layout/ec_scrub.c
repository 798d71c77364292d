/*
 * EC layout: scrub (tsr_layout_scrub_start, and the converge pass at create
 * when the previous coordinator did not detach cleanly).
 *
 * One stripe at a time, under its stripe lock: every chunk is read from its
 * copy when that copy is IN_SYNC.  The stripe is consistent when every
 * choice of k of the chunks read decodes to the others (checked as: the
 * lowest k positions read decode to all the others read).  Otherwise:
 *  - a chunk that failed its CRC (-EIO) is bad: it is decoded from the good
 *    ones (when k of those agree) and rewritten;
 *  - a stripe that reads whole but disagrees: each position in turn is
 *    taken out; when exactly one position's removal leaves the rest
 *    consistent, that chunk is the wrong one and is rewritten with what the
 *    others decode to.  With fewer than k + 2 chunks read no single culprit
 *    can be told apart (any one removed leaves k + 0..1 consistent chunks):
 *    counted unrepaired.
 * Counts: scrub_mismatches (stripes found wrong), scrub_repaired (chunks
 * rewritten), scrub_unrepaired (stripes left wrong or unreadable).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "layout/ec_internal.h"

struct escrub;

struct scrub_sub {
	struct escrub *sc;
	unsigned pos;
	unsigned gen;
};

struct escrub {
	struct ec *e;
	bool repair, aborted;
	uint64_t stripe; /* the one being checked */
	struct slock sl;
	uint8_t *bufs;    /* n * unit: chunks read */
	uint8_t *tmp;     /* n * unit: decoded */
	uint32_t ok, bad; /* positions read; positions that failed their CRC */
	int inflight;
	void (*done)(void *arg, int status);
	void *arg;
	struct scrub_sub subs[TSR_LAYOUT_MAX_COPIES];
};

static void scrub_next(struct tsr_worker *w, void *arg);

static void scrub_end(struct escrub *sc, int status)
{
	struct ec *e = sc->e;

	if (e->scrub == sc)
		e->scrub = NULL;
	e->scrub_running = false;
	e->scrub_finished = status == 0;
	tsr_free_aligned(sc->bufs);
	tsr_free_aligned(sc->tmp);
	ec_publish(e);
	sc->done(sc->arg, status);
	free(sc);
	ec_put(e);
}

/* Go on with the next stripe at the end of this loop pass (no recursion). */
static void scrub_advance(struct escrub *sc)
{
	struct ec *e = sc->e;

	sl_release(e, &sc->sl);
	ec_bg_done(e);
	sc->stripe++;
	e->scrub_done = sc->stripe * e->width < e->size ? sc->stripe * e->width : e->size;
	if (tsr_worker_defer(e->home, scrub_next, sc) < 0)
		scrub_end(sc, -ENOMEM);
}

/* The lowest k positions of mask. */
static uint32_t lowest_k(const struct ec *e, uint32_t mask)
{
	uint32_t out = 0;
	unsigned got = 0;

	for (unsigned p = 0; p < e->n && got < e->k; p++)
		if (mask & (1u << p)) {
			out |= 1u << p;
			got++;
		}
	return out;
}

/* Decode every position of want from the lowest k of from, into tmp. */
static int decode_into_tmp(struct escrub *sc, uint32_t from, uint32_t want)
{
	struct ec *e = sc->e;
	uint8_t *ptr[TSR_LAYOUT_MAX_COPIES];
	uint32_t present = lowest_k(e, from);

	for (unsigned p = 0; p < e->n; p++)
		ptr[p] = present & (1u << p) ? sc->bufs + (size_t)p * e->unit
					     : sc->tmp + (size_t)p * e->unit;
	return tsr_ec_decode(e->codec, e->unit, ptr, present, want & ~present);
}

/* The chunks of mask (>= k of them) agree with each other. */
static bool agrees(struct escrub *sc, uint32_t mask)
{
	struct ec *e = sc->e;
	uint32_t rest = mask & ~lowest_k(e, mask);

	if (rest == 0)
		return true;
	if (decode_into_tmp(sc, mask, rest) < 0)
		return false;
	for (unsigned p = 0; p < e->n; p++)
		if ((rest & (1u << p)) && memcmp(sc->tmp + (size_t)p * e->unit,
						 sc->bufs + (size_t)p * e->unit, e->unit) != 0)
			return false;
	return true;
}

struct repair_ctx {
	struct escrub *sc;
	struct ecopy *c;
	unsigned gen;
	uint8_t *buf;
};

static void repair_done(void *arg, int status)
{
	struct repair_ctx *rc = arg;
	struct escrub *sc = rc->sc;
	struct ec *e = sc->e;

	if (status == 0) {
		e->scrub_repaired++;
	} else {
		e->scrub_unrepaired++;
		if (rc->gen == rc->c->gen)
			ec_copy_failed(rc->c, status);
	}
	tsr_free_aligned(rc->buf);
	free(rc);
	if (--sc->inflight == 0)
		scrub_advance(sc);
}

/* Rewrite position p of the stripe with tmp's content for it. */
static void repair_chunk(struct escrub *sc, unsigned p)
{
	struct ec *e = sc->e;
	struct ecopy *c = &e->copies[tsr_ec_copy_of(sc->stripe, p, e->k, e->m)];
	struct repair_ctx *rc = calloc(1, sizeof(*rc));
	int ret;

	if (rc == NULL || (rc->buf = tsr_alloc_aligned(e->unit)) == NULL) {
		free(rc);
		e->scrub_unrepaired++;
		return;
	}
	rc->sc = sc;
	rc->c = c;
	rc->gen = c->gen;
	memcpy(rc->buf, sc->tmp + (size_t)p * e->unit, e->unit);
	sc->inflight++;
	ret = ecopy_write(c, ec_chunk_off(e, sc->stripe), e->unit, rc->buf, repair_done, rc);
	if (ret < 0) {
		sc->inflight--;
		e->scrub_unrepaired++;
		tsr_free_aligned(rc->buf);
		free(rc);
	}
}

static void scrub_evaluate(struct escrub *sc)
{
	struct ec *e = sc->e;
	uint32_t ok = sc->ok, culprits = 0;
	unsigned nok = (unsigned)__builtin_popcount(ok);

	if (nok < e->k) {
		if (sc->bad != 0) {
			e->scrub_mismatches++;
			e->scrub_unrepaired++;
		}
		scrub_advance(sc);
		return;
	}
	if (sc->bad != 0) {
		/* bad blocks: rewrite them from k good chunks that agree */
		e->scrub_mismatches++;
		if (!agrees(sc, ok)) {
			e->scrub_unrepaired++;
		} else if (sc->repair && decode_into_tmp(sc, ok, sc->bad) == 0) {
			for (unsigned p = 0; p < e->n; p++)
				if (sc->bad & (1u << p))
					repair_chunk(sc, p);
		} else {
			e->scrub_unrepaired++;
		}
	} else if (!agrees(sc, ok)) {
		e->scrub_mismatches++;
		tsr_warn("ec %s: scrub: stripe %llu does not decode consistently", e->name,
			 (unsigned long long)sc->stripe);
		if (nok >= e->k + 2)
			for (unsigned p = 0; p < e->n; p++)
				if ((ok & (1u << p)) && agrees(sc, ok & ~(1u << p)))
					culprits |= 1u << p;
		if (sc->repair && __builtin_popcount(culprits) == 1 &&
		    decode_into_tmp(sc, ok & ~culprits, culprits) == 0) {
			tsr_warn("ec %s: scrub: stripe %llu: chunk %u disagrees with the others: "
				 "rewritten",
				 e->name, (unsigned long long)sc->stripe,
				 (unsigned)__builtin_ctz(culprits));
			repair_chunk(sc, (unsigned)__builtin_ctz(culprits));
		} else {
			e->scrub_unrepaired++;
		}
	}
	if (sc->inflight == 0)
		scrub_advance(sc);
}

/* Every read of the stripe is back. */
static void scrub_reads_settled(struct escrub *sc)
{
	struct ec *e = sc->e;

	if (sc->aborted || e->fenced || e->closing) {
		sl_release(e, &sc->sl);
		ec_bg_done(e);
		scrub_end(sc, -ECANCELED);
		return;
	}
	scrub_evaluate(sc);
}

static void scrub_read_done(void *arg, int status)
{
	struct scrub_sub *sub = arg;
	struct escrub *sc = sub->sc;
	struct ec *e = sc->e;
	struct ecopy *c = &e->copies[tsr_ec_copy_of(sc->stripe, sub->pos, e->k, e->m)];

	if (status == 0)
		sc->ok |= 1u << sub->pos;
	else if (status == -EIO)
		sc->bad |= 1u << sub->pos;
	else if (status == -ESTALE)
		ec_fence_now(e, "a copy has seen a newer epoch");
	else if (sub->gen == c->gen)
		ec_copy_failed(c, status);
	if (--sc->inflight == 0)
		scrub_reads_settled(sc);
}

static void scrub_stripe(struct escrub *sc)
{
	struct ec *e = sc->e;

	sc->ok = sc->bad = 0;
	sc->inflight = 1;
	for (unsigned p = 0; p < e->n; p++) {
		struct ecopy *c = &e->copies[tsr_ec_copy_of(sc->stripe, p, e->k, e->m)];
		struct scrub_sub *sub = &sc->subs[p];

		if (!ecopy_readable(c))
			continue;
		sub->sc = sc;
		sub->pos = p;
		sub->gen = c->gen;
		sc->inflight++;
		/* the disk, not the page cache: scrub checks what is stored */
		if (ecopy_read_direct(c, ec_chunk_off(e, sc->stripe), e->unit,
				      sc->bufs + (size_t)p * e->unit, scrub_read_done, sub) < 0)
			sc->inflight--;
	}
	if (--sc->inflight == 0)
		scrub_reads_settled(sc);
}

static void scrub_granted(struct slock *sl)
{
	scrub_stripe((struct escrub *)((char *)sl - offsetof(struct escrub, sl)));
}

static void scrub_next(struct tsr_worker *w, void *arg)
{
	struct escrub *sc = arg;
	struct ec *e = sc->e;

	(void)w;
	if (sc->aborted || e->fenced || e->closing) {
		scrub_end(sc, -ECANCELED);
		return;
	}
	if (sc->stripe >= e->nstripes) {
		scrub_end(sc, 0);
		return;
	}
	if (e->snap_holding) {
		e->scrub_parked = true; /* ec_scrub_unpark goes on */
		return;
	}
	e->bg_ops++;
	if (sl_acquire(e, &sc->sl, sc->stripe, scrub_granted))
		scrub_stripe(sc);
}

int ec_scrub_begin(struct ec *e, bool repair, void (*done)(void *arg, int status), void *arg)
{
	struct escrub *sc;

	if (e->scrub != NULL)
		return -EBUSY;
	sc = calloc(1, sizeof(*sc));
	if (sc == NULL)
		return -ENOMEM;
	sc->bufs = tsr_alloc_aligned((size_t)e->n * e->unit);
	sc->tmp = tsr_alloc_aligned((size_t)e->n * e->unit);
	if (sc->bufs == NULL || sc->tmp == NULL) {
		tsr_free_aligned(sc->bufs);
		tsr_free_aligned(sc->tmp);
		free(sc);
		return -ENOMEM;
	}
	sc->e = e;
	sc->repair = repair;
	sc->done = done;
	sc->arg = arg;
	e->scrub = sc;
	e->scrub_running = true;
	e->scrub_finished = false;
	e->scrub_total = e->size;
	e->scrub_done = 0;
	e->scrub_mismatches = e->scrub_repaired = e->scrub_unrepaired = 0;
	ec_get(e);
	if (tsr_worker_defer(e->home, scrub_next, sc) < 0) {
		e->scrub = NULL;
		e->scrub_running = false;
		tsr_free_aligned(sc->bufs);
		tsr_free_aligned(sc->tmp);
		free(sc);
		ec_put(e);
		return -ENOMEM;
	}
	ec_publish(e);
	return 0;
}

/* The scrub stops at its next step (its deferred call or its reads). */
void ec_scrub_abort(struct ec *e)
{
	struct escrub *sc = e->scrub;

	if (sc == NULL)
		return;
	sc->aborted = true;
	e->scrub = NULL;
	if (e->scrub_parked) {
		e->scrub_parked = false;
		scrub_end(sc, -ECANCELED);
	}
}

void ec_scrub_unpark(struct ec *e)
{
	if (!e->scrub_parked || e->scrub == NULL)
		return;
	e->scrub_parked = false;
	if (tsr_worker_defer(e->home, scrub_next, e->scrub) < 0)
		scrub_end(e->scrub, -ENOMEM);
}
