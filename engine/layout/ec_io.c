/*
 * EC layout: the host data path (ec.h rules), on the home worker.
 *
 * Reads.  A read is cut into pieces, one per (stripe, data chunk), all
 * issued at once; a piece goes to the copy holding its data chunk when that
 * copy is IN_SYNC.  A piece whose copy is not IN_SYNC, or whose read fails
 * (-EIO: a block failing its CRC; a connection failure also makes the copy
 * OUT_OF_SYNC), takes the stripe lock and is decoded from the same column
 * range of k other chunks (ec_col_read; counted in degraded_reads).  The
 * stripe lock keeps a decode away from a transaction half committed.
 *
 * Writes (write_zeroes: writes of zeros).  One transaction per stripe,
 * holding the stripe lock from arrival to the end (writes to a stripe run
 * one at a time in arrival order; the locks of a host write are all queued
 * when it arrives):
 *   1. column range [col, col+L): the bytes of the touched data chunks
 *      (one chunk: its range; several: the whole unit);
 *   2. old data: the data chunks whose column range the write does not
 *      cover are read (decoded if one cannot be read) -- none for a full
 *      stripe;
 *   3. the new bytes are laid over, parity encoded for the column range;
 *   4. STAGE on every participant: the touched data chunks and the m parity
 *      chunks whose copies are IN_SYNC or RESYNCING; a touched chunk whose
 *      copy is away is "missed": its stripe goes into that copy's dirty
 *      bitmap (durably) and the copy is recorded OUT_OF_SYNC (hooks) before
 *      the host hears back -- its content is implied by the others;
 *   5. once every participant answered STAGE: unless fewer than
 *      min_in_sync copies are IN_SYNC any more (then -EIO, the staged bytes
 *      are released later and never reach disk), the stripe's part of the
 *      host write is acknowledged (txn_ack) and COMMIT goes to the ones that
 *      staged (a participant failing meanwhile is missed as above).  An
 *      acknowledged write is safe before its commits: every participant
 *      that can be reached at a recovery holds it staged, and recovery rolls
 *      such a txn forward (ec.c).  Until the commits are done the stripe
 *      lock stays held and marked acked: a read of the stripe waits for it
 *      (no stale read after the acknowledgment), and so does a snapshot cut
 *      (the txn counts in bg_ops);
 *   6. once every COMMIT answered the txn ends and the lock is released
 *      (staged and committed bytes are durable by the store contract -- in
 *      the stage journal, replayed at an unclean open, until a release that
 *      flushes the chunk volume first -- so FUA needs nothing more).
 * txn ids are (epoch << 32) | counter.  Finished txns are released on
 * every writable copy in batches (EC_RELEASE_BATCH, or EC_RELEASE_MS after
 * the last batch) up to the lowest unfinished txn - 1.
 *
 * Admission: at most EC_TXN_ACTIVE transactions past their lock at once
 * (old-data read, stage, commit), staging at most EC_ACTIVE_BYTES between
 * them (one is always admitted); the others wait in arrival order, lock
 * held.  Small writes are bounded by the count (64 partial-stripe txns of
 * 4 KiB stage 12 KiB each on a 4+2 volume), full stripes by the bytes (16
 * stripes of 4+2 x 64 KiB): a 64-deep window of full stripes was slower
 * than 16 (more staged bytes in flight per copy, 1M QD8 -40%), a 16-deep
 * window of 4 KiB writes left the journals idle (4k QD32 -35%).  This bounds the requests queued at each peer, so a slow node makes
 * writes slow instead of letting the oldest request of a deep pipeline hit
 * the peer timeout (which counts from submission).
 *
 * Journal drain: a store starts a new journal generation only when a
 * release leaves no live entry, which a release up to the lowest
 * unfinished txn never does under writes that never pause.  So every
 * ec_drain_txns admitted txns, or once ec_drain_bytes are estimated staged
 * on one copy, admission stops; when the last active txn ends, RELEASE up
 * to the newest txn goes to every writable copy, and once those answered
 * the waiting txns go on.  Each store's .stage file then stays near
 * max(its roll size, what one drain interval writes).
 *
 * A host write arriving while fewer than min_in_sync copies are IN_SYNC
 * waits (stalled, no lock held) for a copy to come back, up to
 * write_wait_ms, then fails with -EIO; one that loses copies during its
 * transaction fails with -EIO at once.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "layout/ec_internal.h"

#define EC_WRITE_WINDOW 32 /* stripes of a host write in flight at once (io queue room) */
#define EC_TXN_ACTIVE   64 /* transactions past admission at once (peer queue depth) */
#define EC_ACTIVE_BYTES (6u << 20) /* ... and at most this much staged by them (see txn_weight) */

uint64_t ec_drain_txns = 4096;
uint64_t ec_drain_bytes = 16ull << 20;

/* ---- the stripe column reader ------------------------------------------- */

struct scol;

struct scol_sub {
	struct scol *s;
	unsigned pos;
	unsigned gen;
};

struct scol {
	struct ec *e;
	uint64_t stripe;
	uint32_t col, len;
	uint32_t want, exclude, tried, present;
	unsigned flags; /* EC_COL_DIRECT */
	int inflight;
	uint8_t *bufs;
	void (*done)(void *arg, int status, uint32_t present);
	void *arg;
	struct scol_sub subs[TSR_LAYOUT_MAX_COPIES];
};

static void scol_step(struct scol *s);

static void scol_finish(struct scol *s, int status)
{
	struct ec *e = s->e;

	s->done(s->arg, status, s->present);
	free(s);
	ec_put(e);
}

static void scol_sub_done(void *arg, int status)
{
	struct scol_sub *sub = arg;
	struct scol *s = sub->s;
	struct ec *e = s->e;
	struct ecopy *c = &e->copies[tsr_ec_copy_of(s->stripe, sub->pos, e->k, e->m)];

	s->inflight--;
	if (status == 0) {
		s->present |= 1u << sub->pos;
	} else if (status == -ESTALE) {
		ec_fence_now(e, "a copy has seen a newer epoch");
	} else if (status == -EIO) {
		tsr_warn("ec %s: stripe %llu chunk %u on copy %u (%s): -EIO, decoding it", e->name,
			 (unsigned long long)s->stripe, sub->pos, c->idx, c->node_id);
	} else if (sub->gen == c->gen) {
		ec_copy_failed(c, status);
	}
	if (s->inflight == 0)
		scol_step(s);
}

static bool scol_issue(struct scol *s, unsigned p)
{
	struct ec *e = s->e;
	struct ecopy *c = &e->copies[tsr_ec_copy_of(s->stripe, p, e->k, e->m)];
	struct scol_sub *sub = &s->subs[p];
	int ret;

	s->tried |= 1u << p;
	if (!ecopy_readable(c) || (s->exclude & (1u << p)))
		return false;
	sub->s = s;
	sub->pos = p;
	sub->gen = c->gen;
	s->inflight++;
	if (s->flags & EC_COL_DIRECT)
		ret = ecopy_read_direct(c, ec_chunk_off(e, s->stripe) + s->col, s->len,
					s->bufs + (size_t)p * s->len, scol_sub_done, sub);
	else
		ret = ecopy_read(c, ec_chunk_off(e, s->stripe) + s->col, s->len,
				 s->bufs + (size_t)p * s->len, scol_sub_done, sub);
	if (ret < 0) {
		s->inflight--;
		if (ret == -ESTALE)
			ec_fence_now(e, "a copy has seen a newer epoch");
		return false;
	}
	return true;
}

static void scol_step(struct scol *s)
{
	struct ec *e = s->e;
	uint32_t missing = s->want & ~s->present;
	uint8_t *chunks[TSR_LAYOUT_MAX_COPIES];
	int need, ret;

	if (e->fenced || e->closing) {
		scol_finish(s, -EIO);
		return;
	}
	if (missing == 0) {
		scol_finish(s, 0);
		return;
	}
	for (unsigned p = 0; p < e->n; p++)
		if ((missing & (1u << p)) && !(s->tried & (1u << p)))
			scol_issue(s, p);
	if (s->inflight > 0)
		return;
	need = (int)e->k - __builtin_popcount(s->present);
	for (unsigned p = 0; p < e->n && need > 0; p++)
		if (!(s->tried & (1u << p)) && scol_issue(s, p))
			need--;
	if (s->inflight > 0)
		return;
	if (need > 0) {
		tsr_error("ec %s: stripe %llu: fewer than %u chunks readable", e->name,
			  (unsigned long long)s->stripe, e->k);
		scol_finish(s, -EIO);
		return;
	}
	for (unsigned p = 0; p < e->n; p++)
		chunks[p] = s->bufs + (size_t)p * s->len;
	ret = tsr_ec_decode(e->codec, s->len, chunks, s->present, missing);
	if (ret < 0) {
		tsr_error("ec %s: stripe %llu: decode: %s", e->name, (unsigned long long)s->stripe,
			  strerror(-ret));
		scol_finish(s, -EIO);
		return;
	}
	s->present |= missing;
	scol_finish(s, 0);
}

int ec_col_read(struct ec *e, uint64_t stripe, uint32_t col, uint32_t len, uint32_t want,
		uint32_t exclude, unsigned flags, uint8_t *bufs,
		void (*done)(void *arg, int status, uint32_t present), void *arg)
{
	struct scol *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return -ENOMEM;
	s->e = e;
	s->stripe = stripe;
	s->col = col;
	s->len = len;
	s->want = want;
	s->exclude = exclude;
	s->flags = flags;
	s->bufs = bufs;
	s->done = done;
	s->arg = arg;
	ec_get(e);
	scol_step(s);
	return 0;
}

/* ---- reads ---------------------------------------------------------------- */

struct erop {
	struct ec *e;
	tsr_cb cb_fn;
	void *cb_arg;
	int pending;
	int status;
	bool direct; /* the chunks' disks, not their page cache (ec_read_direct) */
};

struct erpiece {
	struct erop *op;
	uint64_t stripe;
	unsigned d; /* data chunk position */
	uint32_t col, len;
	uint8_t *dst; /* in the host buffer */
	unsigned gen; /* of the copy read directly */
	uint32_t exclude;
	struct slock sl;
	uint8_t *bufs;
};

static void erop_dec(struct erop *op)
{
	struct ec *e = op->e;

	if (--op->pending > 0)
		return;
	if (op->status == 0 && ec_fence_requested(e))
		op->status = -EIO;
	op->cb_fn(op->cb_arg, op->status);
	free(op);
	ec_put(e);
}

static void piece_end(struct erpiece *pc, int status)
{
	struct erop *op = pc->op;

	if (status < 0)
		op->status = -EIO;
	free(pc);
	erop_dec(op);
}

static void piece_decoded(void *arg, int status, uint32_t present)
{
	struct erpiece *pc = arg;
	struct ec *e = pc->op->e;

	(void)present;
	if (status == 0)
		memcpy(pc->dst, pc->bufs + (size_t)pc->d * pc->len, pc->len);
	tsr_free_aligned(pc->bufs);
	sl_release(e, &pc->sl);
	piece_end(pc, status);
}

static void piece_degraded_go(struct erpiece *pc)
{
	struct ec *e = pc->op->e;
	int ret;

	e->degraded_reads++;
	pc->bufs = tsr_alloc_aligned((size_t)e->n * pc->len);
	if (pc->bufs == NULL) {
		sl_release(e, &pc->sl);
		piece_end(pc, -ENOMEM);
		return;
	}
	ret = ec_col_read(e, pc->stripe, pc->col, pc->len, 1u << pc->d, pc->exclude,
			  pc->op->direct ? EC_COL_DIRECT : 0, pc->bufs, piece_decoded, pc);
	if (ret < 0) {
		tsr_free_aligned(pc->bufs);
		sl_release(e, &pc->sl);
		piece_end(pc, ret);
	}
}

static void piece_granted(struct slock *sl)
{
	piece_degraded_go((struct erpiece *)((char *)sl - offsetof(struct erpiece, sl)));
}

static void piece_degraded(struct erpiece *pc)
{
	struct ec *e = pc->op->e;

	if (e->fenced || e->closing) {
		piece_end(pc, -EIO);
		return;
	}
	if (sl_acquire(e, &pc->sl, pc->stripe, piece_granted))
		piece_degraded_go(pc);
}

static void piece_read_done(void *arg, int status)
{
	struct erpiece *pc = arg;
	struct ec *e = pc->op->e;
	struct ecopy *c = &e->copies[tsr_ec_copy_of(pc->stripe, pc->d, e->k, e->m)];

	if (status == 0) {
		piece_end(pc, 0);
		return;
	}
	if (status == -ESTALE) {
		ec_fence_now(e, "a copy has seen a newer epoch");
		piece_end(pc, status);
		return;
	}
	if (status == -EIO) {
		tsr_warn("ec %s: read of stripe %llu chunk %u from copy %u (%s): -EIO, decoding",
			 e->name, (unsigned long long)pc->stripe, pc->d, c->idx, c->node_id);
		pc->exclude = 1u << pc->d;
	} else if (pc->gen == c->gen) {
		ec_copy_failed(c, status);
	}
	piece_degraded(pc);
}

/* Read pc from its chunk's copy, or decode it when that copy cannot. */
static void piece_direct(struct erpiece *pc)
{
	struct ec *e = pc->op->e;
	struct ecopy *c = &e->copies[tsr_ec_copy_of(pc->stripe, pc->d, e->k, e->m)];
	int ret = -ENOTCONN;

	pc->gen = c->gen;
	if (ecopy_readable(c) && pc->op->direct)
		ret = ecopy_read_direct(c, ec_chunk_off(e, pc->stripe) + pc->col, pc->len, pc->dst,
					piece_read_done, pc);
	else if (ecopy_readable(c))
		ret = ecopy_read(c, ec_chunk_off(e, pc->stripe) + pc->col, pc->len, pc->dst,
				 piece_read_done, pc);
	if (ret < 0)
		piece_degraded(pc);
}

/* The acknowledged txn that held pc's stripe has committed everywhere. */
static void piece_unblocked(struct slock *sl)
{
	struct erpiece *pc = (struct erpiece *)((char *)sl - offsetof(struct erpiece, sl));

	sl_release(pc->op->e, &pc->sl);
	if (pc->op->e->fenced || pc->op->e->closing) {
		piece_end(pc, -EIO);
		return;
	}
	piece_direct(pc);
}

static int erop_submit(struct ec *e, struct tsr_io *io, uint64_t offset, uint32_t len, void *buf,
		       bool direct, tsr_cb cb_fn, void *cb_arg)
{
	struct erop *op;
	uint64_t pos = offset, end = offset + len;

	if (io != e->io)
		return -EINVAL;
	if (ec_fence_requested(e) || e->closing || !e->ready)
		return -EIO;
	op = calloc(1, sizeof(*op));
	if (op == NULL)
		return -ENOMEM;
	op->e = e;
	op->cb_fn = cb_fn;
	op->cb_arg = cb_arg;
	op->pending = 1;
	op->direct = direct;
	e->n_reads++;
	ec_get(e);
	while (pos < end) {
		uint64_t stripe = pos / e->width, in = pos % e->width;
		unsigned d = (unsigned)(in / e->unit);
		uint32_t col = (uint32_t)(in % e->unit);
		uint32_t n = e->unit - col;
		struct erpiece *pc = calloc(1, sizeof(*pc));

		if (n > end - pos)
			n = (uint32_t)(end - pos);
		if (pc == NULL) {
			op->status = -EIO;
			break;
		}
		pc->op = op;
		pc->stripe = stripe;
		pc->d = d;
		pc->col = col;
		pc->len = n;
		pc->dst = (uint8_t *)buf + (pos - offset);
		op->pending++;
		/* a txn acknowledged but not committed everywhere: wait for it */
		if (e->acked_txns > 0 && sl_acked(e, stripe)) {
			if (sl_acquire(e, &pc->sl, stripe, piece_unblocked))
				piece_unblocked(&pc->sl); /* not reached: the acked lock is held */
		} else {
			piece_direct(pc);
		}
		pos += n;
	}
	erop_dec(op);
	return 0;
}

int ec_read(void *ctx, struct tsr_io *io, uint64_t offset, uint32_t len, void *buf, tsr_cb cb_fn,
	    void *cb_arg)
{
	return erop_submit(ctx, io, offset, len, buf, false, cb_fn, cb_arg);
}

/* Every chunk read (or decoded from chunks read) with ecopy_read_direct. */
int ec_read_direct(void *ctx, struct tsr_io *io, uint64_t offset, uint32_t len, void *buf,
		   tsr_cb cb_fn, void *cb_arg)
{
	return erop_submit(ctx, io, offset, len, buf, true, cb_fn, cb_arg);
}

/* ---- writes ------------------------------------------------------------------ */

struct ehost {
	struct ec *e;
	uint64_t off, end;  /* volume bytes */
	uint64_t next;      /* first byte not yet given a transaction */
	const uint8_t *buf; /* NULL: zeros */
	tsr_cb cb_fn;
	void *cb_arg;
	int pending; /* transactions of the window in flight (+1 launching) */
	int status;
	uint64_t submit_ns;
	struct ehost *next_stalled;
};

struct etxn;

struct tsub {
	struct etxn *t;
	unsigned pos;
	unsigned gen;
};

struct etxn {
	struct ec *e;
	struct ehost *h;
	struct slock sl;
	uint64_t stripe;
	uint64_t s0, s1;    /* bytes of the stripe written, [s0, s1) from its start */
	const uint8_t *src; /* host bytes for s0 (NULL: zeros) */
	uint32_t col, len;  /* column range */
	uint8_t *bufs;      /* n * len: data chunks then parity */
	uint32_t touched;   /* positions whose chunk changes */
	uint32_t parts;     /* participants (STAGE sent) */
	uint32_t staged, committed;
	uint64_t txn; /* 0 until assigned */
	bool partial, crash;
	int phase; /* 0 old read, 1 staging, 2 committing */
	int pending;
	int status;
	bool stage_wait;          /* STAGEs held until the missed copies' records landed */
	bool admitted;            /* counted in e->txn_active and e->active_bytes */
	bool acked;               /* host told (txn_ack): counted in e->acked_txns and bg_ops */
	uint32_t weight;          /* bytes it stages on all participants (txn_weight) */
	struct etxn *next_unfinished;
	struct etxn *next_admit; /* e->admit_wait link */
	struct tsub subs[TSR_LAYOUT_MAX_COPIES];
};

static void ehost_window(struct ehost *h);

static void ehost_complete(struct ehost *h, int status)
{
	struct ec *e = h->e;

	if (status < 0)
		e->write_errors++;
	h->cb_fn(h->cb_arg, status);
	free(h);
	ec_put(e);
}

static void ehost_dec(struct ehost *h)
{
	if (--h->pending > 0)
		return;
	if (h->status == 0 && h->next < h->end && !h->e->fenced && !h->e->closing) {
		ehost_window(h);
		return;
	}
	if (h->status == 0 && h->next < h->end)
		h->status = -EIO;
	ehost_complete(h, h->status);
}

static void crash_now(struct ec *e, const char *step, unsigned n)
{
	tsr_error("ec fault switch: %s: %s:%u reached in the first partial-stripe write: SIGKILL",
		  e->name, step, n);
	raise(SIGKILL);
}

/* ---- release batching ---- */

static void drain_step(struct ec *e);

static void release_done(void *arg, int status)
{
	struct ecopy *c = arg;
	struct ec *e = c->e;

	e->releases_inflight--;
	if (status < 0 && !e->closing) {
		tsr_warn("ec %s: copy %u (%s): release: %s", e->name, c->idx, c->node_id,
			 strerror(-status));
		ec_copy_failed(c, status);
	}
	if (e->releases_inflight == 0)
		drain_step(e);
}

/* RELEASE up to upto on every writable copy. */
static void release_send(struct ec *e, uint64_t upto)
{
	e->released_upto = upto;
	for (unsigned i = 0; i < e->n_copies; i++) {
		struct ecopy *c = &e->copies[i];
		int ret;

		if (!ecopy_writable(c))
			continue;
		e->releases_inflight++;
		ret = ecopy_release(c, upto, release_done, c);
		if (ret < 0) {
			e->releases_inflight--;
			ec_copy_failed(c, ret);
		}
	}
}

static void release_now(struct ec *e)
{
	uint64_t upto = (e->epoch << 32) | e->txn_counter;

	for (struct etxn *t = e->unfinished; t != NULL; t = t->next_unfinished)
		if (t->txn - 1 < upto)
			upto = t->txn - 1;
	e->finished_since_release = 0;
	e->last_release_ns = ec_now_ns();
	if (upto <= e->released_upto || e->releases_inflight > 0)
		return;
	release_send(e, upto);
}

/* ---- admission and the journal drain ---- */

static void txn_run(struct etxn *t);

/* Bytes t stages across its participants: its column range on each touched
 * data chunk and on the m parities (txn_run computes the same range). */
static uint32_t txn_weight(const struct ec *e, const struct etxn *t)
{
	unsigned d0 = (unsigned)(t->s0 / e->unit), d1 = (unsigned)((t->s1 - 1) / e->unit);
	uint64_t len = d0 == d1 ? t->s1 - t->s0 : e->unit;

	return (uint32_t)(len * (d1 - d0 + 1 + e->m));
}

/* Room for t now: no drain, and under both bounds (or nothing active). */
static bool admit_room(const struct ec *e, const struct etxn *t)
{
	if (e->draining)
		return false;
	if (e->txn_active == 0)
		return true;
	return e->txn_active < EC_TXN_ACTIVE &&
	       e->active_bytes + txn_weight(e, t) <= EC_ACTIVE_BYTES;
}

/* Admit waiting txns while there is room and no drain. */
static void admit_kick(struct ec *e)
{
	struct etxn *t;

	while (e->admit_wait != NULL && admit_room(e, e->admit_wait)) {
		t = e->admit_wait;
		e->admit_wait = t->next_admit;
		if (e->admit_wait == NULL)
			e->admit_wait_tail = NULL;
		t->next_admit = NULL;
		txn_run(t);
	}
}

/*
 * The drain: once nothing is active and no RELEASE in flight, release up to
 * the newest txn everywhere; when those answered, admission goes on.
 */
static void drain_step(struct ec *e)
{
	if (!e->draining || e->txn_active > 0 || e->releases_inflight > 0)
		return;
	if (!e->drain_sent) {
		uint64_t upto = (e->epoch << 32) | e->txn_counter;

		e->drain_sent = true;
		e->finished_since_release = 0;
		e->last_release_ns = ec_now_ns();
		if (upto > e->released_upto && !e->fenced && !e->closing)
			release_send(e, upto);
		if (e->releases_inflight > 0)
			return; /* release_done calls again */
	}
	e->draining = false;
	e->drain_sent = false;
	e->drain_txns = 0;
	for (unsigned i = 0; i < e->n_copies; i++)
		e->copies[i].journal_est = 0;
	e->journal_drains++;
	admit_kick(e);
}

/* Count a staged chunk towards c's journal estimate (header + data +
 * commit record); start a drain when due. */
static void drain_account(struct ec *e, struct ecopy *c, uint32_t len)
{
	c->journal_est += 2 * 4096ull + len;
	if (c->journal_est >= ec_drain_bytes)
		e->draining = true;
}

void ec_release_tick(struct ec *e, uint64_t now_ns)
{
	if (e->crash_at_ns != 0 && now_ns >= e->crash_at_ns)
		crash_now(e, "acked", 0);
	if (e->finished_since_release > 0 && !e->fenced &&
	    now_ns - e->last_release_ns >= EC_RELEASE_MS * 1000000ull)
		release_now(e);
}

/* ---- one stripe transaction ---- */

static void txn_end(struct etxn *t, int status)
{
	struct ec *e = t->e;
	struct ehost *h = t->h;
	struct etxn **pp;

	if (t->txn != 0) {
		for (pp = &e->unfinished; *pp != NULL; pp = &(*pp)->next_unfinished) {
			if (*pp == t) {
				*pp = t->next_unfinished;
				break;
			}
		}
		e->finished_since_release++;
		if (e->finished_since_release >= EC_RELEASE_BATCH && !e->fenced)
			release_now(e);
	}
	if (status < 0 && h != NULL)
		h->status = -EIO;
	if (status < 0 && t->acked)
		tsr_error("ec %s: txn %llx (stripe %llu) failed after its acknowledgment: %s; its "
			  "participants hold it staged, the next attach rolls it forward",
			  e->name, (unsigned long long)t->txn, (unsigned long long)t->stripe,
			  strerror(-status));
	tsr_free_aligned(t->bufs);
	sl_release(e, &t->sl);
	if (t->admitted) {
		e->txn_active--;
		e->active_bytes -= t->weight;
		drain_step(e);
		admit_kick(e);
	}
	if (t->acked) {
		free(t);
		e->acked_txns--;
		ec_bg_done(e);
		ec_put(e);
		return;
	}
	free(t);
	ehost_dec(h);
}

static void txn_dep_done(void *arg, int status);

/* Chunk position p of t's stripe did not get the write: its copy's dirty
 * bitmap has the stripe and the copy is recorded OUT_OF_SYNC before the
 * host hears back. */
static void txn_missed(struct etxn *t, struct ecopy *c)
{
	struct ec *e = t->e;
	int n;

	n = mbm_mark(&c->bm, ec_chunk_off(e, t->stripe), e->unit, txn_dep_done, t);
	if (n < 0)
		t->status = -EIO;
	else
		t->pending += n;
	if (c->recorded != TSR_COPY_OUT_OF_SYNC) {
		struct waiter *w = calloc(1, sizeof(*w));

		if (w == NULL) {
			t->status = -EIO;
			return;
		}
		w->fn = txn_dep_done;
		w->arg = t;
		t->pending++;
		ec_hook_request(c, TSR_COPY_OUT_OF_SYNC, w);
	}
}

static void txn_commit(struct etxn *t);
static void txn_stage_send(struct etxn *t);

/*
 * Every participant staged: acknowledge the stripe's part of the host write
 * now (step 5).  The txn keeps its own reference on the layout, holds its
 * lock marked acked (reads of the stripe wait) and counts in bg_ops (a
 * snapshot cut waits) until its commits are done.
 */
static void txn_ack(struct etxn *t)
{
	struct ec *e = t->e;
	struct ehost *h = t->h;

	t->acked = true;
	t->sl.acked = true;
	e->acked_txns++;
	e->bg_ops++;
	ec_get(e);
	t->h = NULL;
	ehost_dec(h);
}

static void txn_phase_done(struct etxn *t)
{
	struct ec *e = t->e;

	if (t->status < 0 || ec_fence_requested(e) || e->closing) {
		txn_end(t, -EIO);
		return;
	}
	if (ec_in_sync(e) < e->min_in_sync) {
		tsr_error("ec %s: write to stripe %llu: %u copies in sync, %u needed: -EIO",
			  e->name, (unsigned long long)t->stripe, ec_in_sync(e), e->min_in_sync);
		txn_end(t, -EIO);
		return;
	}
	if (t->phase == 1 && t->stage_wait) {
		txn_stage_send(t);
		return;
	}
	if (t->phase == 1) {
		txn_ack(t);
		txn_commit(t);
		return;
	}
	txn_end(t, 0);
}

static void txn_dec(struct etxn *t)
{
	if (--t->pending == 0)
		txn_phase_done(t);
}

static void txn_dep_done(void *arg, int status)
{
	struct etxn *t = arg;

	if (status < 0)
		t->status = -EIO;
	txn_dec(t);
}

static void tsub_done(void *arg, int status)
{
	struct tsub *s = arg;
	struct etxn *t = s->t;
	struct ec *e = t->e;
	struct ecopy *c = &e->copies[tsr_ec_copy_of(t->stripe, s->pos, e->k, e->m)];

	if (status == 0) {
		if (t->phase == 1) {
			t->staged |= 1u << s->pos;
			if (t->crash && e->crash_kind == EC_CRASH_STAGED &&
			    (unsigned)__builtin_popcount(t->staged) == e->crash_n)
				crash_now(e, "staged", e->crash_n);
		} else {
			t->committed |= 1u << s->pos;
			if (t->crash && e->crash_kind == EC_CRASH_COMMITTED &&
			    (unsigned)__builtin_popcount(t->committed) == e->crash_n)
				crash_now(e, "committed", e->crash_n);
		}
	} else if (status == -ESTALE) {
		ec_fence_now(e, "a copy has seen a newer epoch");
		t->status = -EIO;
	} else {
		tsr_warn("ec %s: txn %llx stripe %llu: %s on copy %u (%s): %s", e->name,
			 (unsigned long long)t->txn, (unsigned long long)t->stripe,
			 t->phase == 1 ? "stage" : "commit", c->idx, c->node_id, strerror(-status));
		if (s->gen == c->gen)
			ec_copy_failed(c, status);
		txn_missed(t, c);
	}
	txn_dec(t);
}

/* Send position s->pos its STAGE or COMMIT (the txn's phase). */
static int tsub_send(struct tsub *s)
{
	struct etxn *t = s->t;
	struct ec *e = t->e;
	struct ecopy *c = &e->copies[tsr_ec_copy_of(t->stripe, s->pos, e->k, e->m)];
	struct tsr_stage_entry en;

	if (t->phase == 2)
		return ecopy_commit(c, t->txn, tsub_done, s);
	memset(&en, 0, sizeof(en));
	en.txn = t->txn;
	en.stripe = t->stripe;
	en.offset = ec_chunk_off(e, t->stripe) + t->col;
	en.length = t->len;
	en.participants = t->parts;
	en.state = TSR_STAGE_STAGED;
	drain_account(e, c, t->len);
	return ecopy_stage(c, &en, t->bufs + (size_t)s->pos * t->len, tsub_done, s);
}

static void tsub_start(struct etxn *t, unsigned pos)
{
	struct ec *e = t->e;
	struct tsub *s = &t->subs[pos];
	int ret;

	s->t = t;
	s->pos = pos;
	s->gen = e->copies[tsr_ec_copy_of(t->stripe, pos, e->k, e->m)].gen;
	t->pending++;
	ret = tsub_send(s);
	if (ret < 0)
		tsub_done(s, ret);
}

static void txn_commit(struct etxn *t)
{
	struct ec *e = t->e;

	t->phase = 2;
	t->pending = 1;
	if (t->crash && e->crash_kind == EC_CRASH_COMMITTED && e->crash_n == 0)
		crash_now(e, "committed", 0);
	if (t->crash && e->crash_kind == EC_CRASH_ACKED) {
		/* no COMMIT; the txn never ends; the tick kills once the reply is out */
		tsr_error("ec fault switch: %s: acked:0: acknowledged, commits withheld; SIGKILL "
			  "in 300 ms", e->name);
		e->crash_at_ns = ec_now_ns() + 300000000ull;
		return;
	}
	for (unsigned p = 0; p < e->n; p++)
		if (t->staged & (1u << p))
			tsub_start(t, p);
	txn_dec(t);
}

static void txn_stage(struct etxn *t)
{
	struct ec *e = t->e;

	t->phase = 1;
	t->pending = 1;
	for (unsigned p = 0; p < e->n; p++) {
		struct ecopy *c = &e->copies[tsr_ec_copy_of(t->stripe, p, e->k, e->m)];

		if (!(t->touched & (1u << p)))
			continue;
		if (ecopy_writable(c)) {
			t->parts |= 1u << p;
		} else {
			/* a missed position is not in the entry's participants: were
			 * the STAGEs out before its OUT_OF_SYNC record and the
			 * coordinator died, a recovery with it reachable and still
			 * recorded IN_SYNC would roll the txn forward and leave its
			 * chunk stale, unmarked */
			if (c->recorded != TSR_COPY_OUT_OF_SYNC)
				t->stage_wait = true;
			txn_missed(t, c);
		}
	}
	if (t->partial && e->crash_armed) {
		e->crash_armed = false;
		t->crash = true;
		if (e->crash_kind == EC_CRASH_STAGED && e->crash_n == 0)
			crash_now(e, "staged", 0);
	}
	if (t->stage_wait) {
		/* the STAGEs go out once the records landed (txn_phase_done) */
		txn_dec(t);
		return;
	}
	txn_stage_send(t);
}

/* Send the STAGEs (step 4); the caller's pending reference is dropped. */
static void txn_stage_send(struct etxn *t)
{
	struct ec *e = t->e;

	if (t->stage_wait) {
		t->stage_wait = false;
		t->pending = 1;
	}
	for (unsigned p = 0; p < e->n; p++)
		if (t->parts & (1u << p))
			tsub_start(t, p);
	txn_dec(t);
}

/* Lay the new bytes over the column range and encode parity. */
static void txn_encode(struct etxn *t)
{
	struct ec *e = t->e;
	const uint8_t *data[TSR_EC_MAX_K];
	uint8_t *parity[TSR_EC_MAX_M];

	for (unsigned d = 0; d < e->k; d++) {
		uint64_t c0 = (uint64_t)d * e->unit + t->col, c1 = c0 + t->len;
		uint64_t a = c0 > t->s0 ? c0 : t->s0, b = c1 < t->s1 ? c1 : t->s1;
		uint8_t *dst = t->bufs + (size_t)d * t->len;

		if (a < b) {
			if (t->src != NULL)
				memcpy(dst + (a - c0), t->src + (a - t->s0), b - a);
			else
				memset(dst + (a - c0), 0, b - a);
		}
		data[d] = dst;
	}
	for (unsigned j = 0; j < e->m; j++)
		parity[j] = t->bufs + (size_t)(e->k + j) * t->len;
	tsr_ec_encode(e->codec, t->len, data, parity);
	txn_stage(t);
}

static void txn_old_done(void *arg, int status, uint32_t present)
{
	struct etxn *t = arg;

	(void)present;
	if (status < 0 || t->e->fenced) {
		txn_end(t, -EIO);
		return;
	}
	txn_encode(t);
}

/* Lock held: run now if admitted, else wait in arrival order. */
static void txn_begin(struct etxn *t)
{
	struct ec *e = t->e;

	if (e->admit_wait == NULL && admit_room(e, t)) {
		txn_run(t);
		return;
	}
	t->next_admit = NULL;
	if (e->admit_wait_tail != NULL)
		e->admit_wait_tail->next_admit = t;
	else
		e->admit_wait = t;
	e->admit_wait_tail = t;
}

static void txn_run(struct etxn *t)
{
	struct ec *e = t->e;
	uint32_t need_old = 0;
	unsigned d0 = (unsigned)(t->s0 / e->unit), d1 = (unsigned)((t->s1 - 1) / e->unit);
	int ret;

	t->admitted = true;
	t->weight = txn_weight(e, t);
	e->txn_active++;
	e->active_bytes += t->weight;
	if (++e->drain_txns >= ec_drain_txns)
		e->draining = true;
	if (ec_fence_requested(e) || e->closing) {
		txn_end(t, -EIO);
		return;
	}
	if (d0 == d1) {
		t->col = (uint32_t)(t->s0 % e->unit);
		t->len = (uint32_t)(t->s1 - t->s0);
	} else {
		t->col = 0;
		t->len = e->unit;
	}
	for (unsigned d = d0; d <= d1; d++)
		t->touched |= 1u << d;
	for (unsigned j = 0; j < e->m; j++)
		t->touched |= 1u << (e->k + j);
	for (unsigned d = 0; d < e->k; d++) {
		uint64_t c0 = (uint64_t)d * e->unit + t->col;

		if (!(t->s0 <= c0 && c0 + t->len <= t->s1))
			need_old |= 1u << d;
	}
	t->partial = !(t->s0 == 0 && t->s1 == e->width);
	t->bufs = tsr_alloc_aligned((size_t)e->n * t->len);
	if (t->bufs == NULL) {
		txn_end(t, -ENOMEM);
		return;
	}
	t->txn = (e->epoch << 32) | ++e->txn_counter;
	t->next_unfinished = e->unfinished;
	e->unfinished = t;
	if (need_old == 0) {
		txn_encode(t);
		return;
	}
	t->phase = 0;
	ret = ec_col_read(e, t->stripe, t->col, t->len, need_old, 0, 0, t->bufs, txn_old_done, t);
	if (ret < 0)
		txn_end(t, ret);
}

static void txn_granted(struct slock *sl)
{
	txn_begin((struct etxn *)((char *)sl - offsetof(struct etxn, sl)));
}

/* Give the next window of h's range its transactions (locks queued in order). */
static void ehost_window(struct ehost *h)
{
	struct ec *e = h->e;
	uint64_t stop = (h->next / e->width + EC_WRITE_WINDOW) * e->width;
	struct etxn *first = NULL, **tailp = &first, *t;

	if (stop > h->end)
		stop = h->end;
	h->pending = 1;
	/* queue every lock first, then start the granted ones: a transaction
	 * that ends at once must not let a later one of ours overtake */
	while (h->next < stop) {
		uint64_t stripe = h->next / e->width, sbase = stripe * e->width;
		uint64_t b = sbase + e->width < stop ? sbase + e->width : stop;

		t = calloc(1, sizeof(*t));
		if (t == NULL) {
			h->status = -EIO;
			h->next = h->end;
			break;
		}
		t->e = e;
		t->h = h;
		t->stripe = stripe;
		t->s0 = h->next - sbase;
		t->s1 = b - sbase;
		t->src = h->buf != NULL ? h->buf + (h->next - h->off) : NULL;
		h->pending++;
		if (sl_acquire(e, &t->sl, stripe, txn_granted)) {
			*tailp = t;
			tailp = &t->next_unfinished;
		}
		h->next = b;
	}
	while ((t = first) != NULL) {
		first = t->next_unfinished;
		t->next_unfinished = NULL;
		txn_begin(t);
	}
	ehost_dec(h);
}

static bool expired(const struct ec *e, const struct ehost *h, uint64_t now)
{
	return now - h->submit_ns >= (uint64_t)e->write_wait_ms * 1000000ull;
}

void ec_kick_stalled(struct ec *e)
{
	while (e->stalled != NULL && ec_in_sync(e) >= e->min_in_sync && !e->fenced && !e->closing) {
		struct ehost *h = e->stalled;

		e->stalled = h->next_stalled;
		if (e->stalled == NULL)
			e->stalled_tail = NULL;
		h->next_stalled = NULL;
		ehost_window(h);
	}
}

void ec_expire_stalled(struct ec *e, bool all)
{
	uint64_t now = ec_now_ns();
	struct ehost **pp = &e->stalled, *h, *prev = NULL;

	if (!all)
		ec_kick_stalled(e);
	while ((h = *pp) != NULL) {
		if (!all && !expired(e, h, now)) {
			prev = h;
			pp = &h->next_stalled;
			continue;
		}
		*pp = h->next_stalled;
		if (e->stalled_tail == h)
			e->stalled_tail = prev;
		if (!all)
			tsr_error("ec %s: write at %llu waited %u ms for %u in-sync copies: -EIO",
				  e->name, (unsigned long long)h->off, e->write_wait_ms,
				  e->min_in_sync);
		ehost_complete(h, -EIO);
	}
}

static int ehost_submit(struct ec *e, struct tsr_io *io, uint64_t off, uint64_t len,
			const void *buf, tsr_cb cb_fn, void *cb_arg)
{
	struct ehost *h;

	if (io != e->io)
		return -EINVAL;
	if (ec_fence_requested(e) || e->closing || !e->ready)
		return -EIO;
	h = calloc(1, sizeof(*h));
	if (h == NULL)
		return -ENOMEM;
	h->e = e;
	h->off = h->next = off;
	h->end = off + len;
	h->buf = buf;
	h->cb_fn = cb_fn;
	h->cb_arg = cb_arg;
	h->submit_ns = ec_now_ns();
	e->n_writes++;
	ec_get(e);
	if (e->stalled != NULL || ec_in_sync(e) < e->min_in_sync) {
		if (e->stalled_tail != NULL)
			e->stalled_tail->next_stalled = h;
		else
			e->stalled = h;
		e->stalled_tail = h;
		return 0;
	}
	ehost_window(h);
	return 0;
}

int ec_write(void *ctx, struct tsr_io *io, uint64_t offset, uint32_t len, const void *buf,
	     unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	(void)flags; /* staged and committed bytes are durable: FUA needs nothing more */
	if (buf == NULL)
		return -EINVAL;
	return ehost_submit(ctx, io, offset, len, buf, cb_fn, cb_arg);
}

int ec_write_zeroes(void *ctx, struct tsr_io *io, uint64_t offset, uint64_t len, unsigned flags,
		    tsr_cb cb_fn, void *cb_arg)
{
	(void)flags;
	return ehost_submit(ctx, io, offset, len, NULL, cb_fn, cb_arg);
}

/* ---- flush, trim ---------------------------------------------------------------- */

struct eflush {
	struct ec *e;
	tsr_cb cb_fn;
	void *cb_arg;
	int pending;
	struct {
		struct eflush *f;
		struct ecopy *c;
		unsigned gen;
	} subs[TSR_LAYOUT_MAX_COPIES];
};

static void eflush_dec(struct eflush *f)
{
	struct ec *e = f->e;

	if (--f->pending > 0)
		return;
	f->cb_fn(f->cb_arg, ec_fence_requested(e) || e->closing ? -EIO : 0);
	free(f);
	ec_put(e);
}

static void eflush_sub_done(void *arg, int status)
{
	/* subs[i] starts with the flush pointer */
	struct eflush **fp = arg;
	struct eflush *f = *fp;
	unsigned i = (unsigned)(((char *)fp - (char *)f->subs) / sizeof(f->subs[0]));

	if (status < 0 && f->subs[i].gen == f->subs[i].c->gen)
		ec_copy_failed(f->subs[i].c, status);
	eflush_dec(f);
}

/* Every byte a write acknowledged is durable already (stage and commit are);
 * the flush reaches the writable copies for what resync wrote. */
int ec_flush(void *ctx, struct tsr_io *io, tsr_cb cb_fn, void *cb_arg)
{
	struct ec *e = ctx;
	struct eflush *f;

	if (io != e->io)
		return -EINVAL;
	if (ec_fence_requested(e) || e->closing || !e->ready)
		return -EIO;
	f = calloc(1, sizeof(*f));
	if (f == NULL)
		return -ENOMEM;
	f->e = e;
	f->cb_fn = cb_fn;
	f->cb_arg = cb_arg;
	f->pending = 1;
	ec_get(e);
	for (unsigned i = 0; i < e->n_copies; i++) {
		struct ecopy *c = &e->copies[i];
		int ret;

		if (!ecopy_writable(c))
			continue;
		f->subs[i].f = f;
		f->subs[i].c = c;
		f->subs[i].gen = c->gen;
		f->pending++;
		ret = ecopy_flush(c, eflush_sub_done, &f->subs[i]);
		if (ret < 0)
			eflush_sub_done(&f->subs[i], ret);
	}
	eflush_dec(f);
	return 0;
}

struct etrim {
	tsr_cb cb_fn;
	void *cb_arg;
	struct ec *e;
};

static void trim_deferred(struct tsr_worker *w, void *arg)
{
	struct etrim *tr = arg;
	struct ec *e = tr->e;

	(void)w;
	tr->cb_fn(tr->cb_arg, 0);
	free(tr);
	ec_put(e);
}

/* Accepted and ignored (ec.h): the data stays readable. */
int ec_trim(void *ctx, struct tsr_io *io, uint64_t offset, uint64_t len, tsr_cb cb_fn, void *cb_arg)
{
	struct ec *e = ctx;
	struct etrim *tr;

	(void)offset;
	(void)len;
	if (io != e->io)
		return -EINVAL;
	if (ec_fence_requested(e) || e->closing || !e->ready)
		return -EIO;
	tr = malloc(sizeof(*tr));
	if (tr == NULL)
		return -ENOMEM;
	tr->cb_fn = cb_fn;
	tr->cb_arg = cb_arg;
	tr->e = e;
	ec_get(e);
	if (tsr_worker_defer(e->home, trim_deferred, tr) < 0) {
		free(tr);
		ec_put(e);
		return -ENOMEM;
	}
	return 0;
}
