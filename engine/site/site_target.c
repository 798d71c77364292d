/*
 * Target side of a geo-replication stream (include/tessera/site.h, "target
 * side"): applies the source's WRITE and ZERO frames to a local store
 * volume in sequence order, pipelined: up to a window of frames are in the
 * store at once.  Every check runs before the store sees the frame: a
 * refused frame changes nothing.
 *
 * The window is a ring of frame slots in seq order:
 *   [head, issue)  given to the store (ISSUED) or completed (DONE);
 *   [issue, tail)  accepted, not given yet (QUEUED): the one at issue waits
 *                  for an overlapping frame in the store, for every earlier
 *                  frame to complete (an ordering point), or for io queue
 *                  room (-EAGAIN, stalled); later ones wait behind it, so
 *                  frames reach the store in seq order.
 * A completion marks its slot DONE; then the slots at head that are DONE
 * retire in order: applied moves to their seq and their callbacks fire.  So
 * applied is always the contiguous prefix of completed frames, and a frame
 * completing before an earlier one waits at its slot.  A store error breaks
 * the stream: the queued frames are never issued, they and every frame after
 * the failed one complete with -EIO once the ones still in the store are
 * back; frames before the failed one still retire normally.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "site/site_target_int.h"
#include "tessera/site.h"
#include "tessera/vol.h"

#define WINDOW_MAX 1024u

enum slot_state { SLOT_QUEUED = 1, SLOT_ISSUED, SLOT_DONE };

/* One accepted frame, from apply until its callback fired. */
struct slot {
	struct tsr_site_target *t; /* back pointer for the store's callback */
	enum slot_state state;
	uint8_t op;                /* enum tsr_site_op */
	uint64_t seq;              /* its seq; 0 for BARRIER (takes none) */
	uint64_t offset, length;   /* WRITE / ZERO: the byte range; else 0 */
	const void *payload;       /* WRITE: the caller's, until cb */
	uint32_t bytes;            /* WRITE payload bytes held in the window */
	int status;                /* DONE: the store's result (or -EIO: cancelled) */
	bool late;                 /* ISSUED, completed -EAGAIN, not issued again yet */
	tsr_cb cb_fn;              /* fires once, at retire */
	void *cb_arg;
};

struct tsr_site_target {
	struct tsr_vol *vol;    /* the target volume (the caller's handle) */
	struct tsr_io *io;      /* the owning thread's io */
	uint64_t stream;        /* the only stream accepted */
	uint64_t epoch;         /* highest source epoch seen; lower ones are stale */
	uint64_t applied;       /* every frame up to this seq completed on the store */
	uint64_t received;      /* the last seq accepted (>= applied) */
	bool consistent;        /* the volume equals a prefix of the history */
	bool broken;            /* a store error: the extent may be half written */
	unsigned late;          /* slots waiting to be issued again (late -EAGAIN) */
	bool failed_retired;    /* the failed frame retired: later ones report -EIO */
	bool stalled;           /* the slot at issue got -EAGAIN from the store */
	bool retiring;          /* retire() runs (callbacks may re-enter) */
	bool free_pending;      /* destroy was called from inside a callback */
	unsigned window;        /* ring size: frames held at most */
	uint64_t window_bytes;  /* WRITE payload bytes held at most */
	uint64_t bytes_held;    /* WRITE payload bytes of the held frames */
	unsigned in_store;      /* ISSUED slots */
	uint64_t head, issue, tail; /* ring positions (mod window), head <= issue <= tail */
	struct slot *slots;     /* window entries */
};

int tsr_site_target_create(const struct tsr_site_target_opts *opts,
			   struct tsr_site_target **out)
{
	struct tsr_site_target *t;

	if (opts == NULL || opts->vol == NULL || opts->io == NULL || opts->stream == 0 ||
	    opts->window > WINDOW_MAX || out == NULL)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	t->window = opts->window ? opts->window : TSR_SITE_TARGET_WINDOW;
	t->window_bytes = opts->window_bytes ? opts->window_bytes : TSR_SITE_TARGET_WINDOW_BYTES;
	if (t->window_bytes < TSR_SITE_MAX_DATA)
		t->window_bytes = TSR_SITE_MAX_DATA;
	t->slots = calloc(t->window, sizeof(*t->slots));
	if (t->slots == NULL) {
		free(t);
		return -ENOMEM;
	}
	t->vol = opts->vol;
	t->consistent = opts->consistent;
	t->io = opts->io;
	t->stream = opts->stream;
	t->epoch = opts->epoch;
	t->applied = opts->applied;
	t->received = opts->applied;
	*out = t;
	return 0;
}

static void target_free(struct tsr_site_target *t)
{
	free(t->slots);
	free(t);
}

void tsr_site_target_destroy(struct tsr_site_target *t)
{
	if (t == NULL)
		return;
	if (t->retiring) { /* from inside a callback: retire() frees it */
		t->free_pending = true;
		return;
	}
	target_free(t);
}

static struct slot *slot_at(struct tsr_site_target *t, uint64_t pos)
{
	return &t->slots[pos % t->window];
}

static bool is_ordering(uint8_t op)
{
	return op == TSR_SITE_BARRIER || op == TSR_SITE_SYNC_BEGIN || op == TSR_SITE_SYNC_END ||
	       op == TSR_SITE_SNAPSHOT;
}

/* Another frame in the store writes some byte of f's range. */
static bool overlaps_store(struct tsr_site_target *t, const struct slot *f)
{
	for (uint64_t p = t->head; p != t->issue; p++) {
		const struct slot *o = slot_at(t, p);

		if (o->state == SLOT_ISSUED && o->length && o->offset < f->offset + f->length &&
		    f->offset < o->offset + o->length)
			return true;
	}
	return false;
}

/* Run every slot that is DONE at head: applied moves, callbacks fire. */
static void retire(struct tsr_site_target *t)
{
	if (t->retiring)
		return; /* a callback re-entered: the outer loop goes on */
	t->retiring = true;
	while (t->head != t->tail && !t->free_pending) {
		struct slot *f = slot_at(t, t->head);
		tsr_cb cb_fn = f->cb_fn;
		void *cb_arg = f->cb_arg;
		int status = f->status;

		if (f->state != SLOT_DONE)
			break;
		if (status == 0 && t->failed_retired)
			status = -EIO; /* written, but past a frame that failed */
		if (status == 0) {
			if (f->seq)
				t->applied = f->seq;
			if (f->op == TSR_SITE_SYNC_BEGIN)
				t->consistent = false;
			else if (f->op == TSR_SITE_SYNC_END)
				t->consistent = true;
		} else {
			t->failed_retired = true;
		}
		t->bytes_held -= f->bytes;
		t->head++;
		memset(f, 0, sizeof(*f));
		cb_fn(cb_arg, status);
	}
	t->retiring = false;
	if (t->free_pending)
		target_free(t);
}

static void slot_done(struct tsr_site_target *t, struct slot *f, int status)
{
	if (status < 0 && !t->broken) {
		if (f->seq)
			tsr_error("site target: stream %llu seq %llu: %s; the stream stops here",
				  (unsigned long long)t->stream, (unsigned long long)f->seq,
				  strerror(-status));
		else
			tsr_error("site target: stream %llu: barrier flush: %s; the stream stops "
				  "here", (unsigned long long)t->stream, strerror(-status));
		t->broken = true;
	}
	f->state = SLOT_DONE;
	f->status = status;
}

static void store_done(void *arg, int status);

/* Hand f to the store: 0, or the store's refusal (nothing started). */
static int issue_one(struct tsr_site_target *t, struct slot *f)
{
	switch (f->op) {
	case TSR_SITE_WRITE:
		return tsr_vol_write(t->vol, t->io, f->offset, (uint32_t)f->length, f->payload,
				     TSR_WRITE_REPL, store_done, f);
	case TSR_SITE_ZERO:
		return tsr_vol_write_zeroes(t->vol, t->io, f->offset, f->length, TSR_WRITE_REPL,
					    store_done, f);
	default: /* BARRIER, SYNC_*: what is applied becomes durable */
		return tsr_vol_flush(t->vol, t->io, store_done, f);
	}
}

/*
 * Give the store what may go now, in seq order, from issue on.  Stops at
 * the first slot that must wait.  first_only: apply() issuing its own frame
 * (which is then at issue): a refusal is returned, not recorded.
 */
static int issue_ready(struct tsr_site_target *t, bool first_only)
{
	while (t->issue != t->tail) {
		struct slot *f = slot_at(t, t->issue);
		int ret;

		if (t->broken) { /* never issued: cancelled */
			t->stalled = false;
			slot_done(t, f, -EIO);
			t->issue++;
			continue;
		}
		if (f->op == TSR_SITE_MARKER) { /* a point in the seq order, nothing to store */
			t->stalled = false;
			slot_done(t, f, 0);
			t->issue++;
			if (first_only)
				return 0;
			continue;
		}
		if (is_ordering(f->op) ? t->in_store > 0 : overlaps_store(t, f))
			return 0;
		ret = issue_one(t, f);
		if (ret == -EAGAIN) { /* the io queue is full: retried at a completion or kick */
			t->stalled = true;
			return 0;
		}
		t->stalled = false;
		if (ret && first_only)
			return ret;
		if (ret)
			slot_done(t, f, ret);
		else
			f->state = SLOT_ISSUED;
		if (f->state == SLOT_ISSUED)
			t->in_store++;
		t->issue++;
		if (first_only)
			return 0;
	}
	return 0;
}

/*
 * Issue again the slots whose store operation completed with -EAGAIN (a step
 * the store queued after accepting it met a full io queue, a copy on write
 * on a target that keeps snapshots): nothing of it was applied for sure, and
 * writing it again is what the frame asks.  They stay counted in in_store,
 * so the frames after them keep their order.
 */
static void reissue_late(struct tsr_site_target *t)
{
	for (uint64_t i = t->head; t->late > 0 && i != t->issue; i++) {
		struct slot *f = slot_at(t, i);
		int ret;

		if (!f->late)
			continue;
		ret = t->broken ? -EIO : issue_one(t, f);
		if (ret == -EAGAIN)
			return; /* at the next completion or kick */
		f->late = false;
		t->late--;
		if (ret) {
			t->in_store--;
			slot_done(t, f, ret);
		}
	}
}

static void store_done(void *arg, int status)
{
	struct slot *f = arg;
	struct tsr_site_target *t = f->t;

	if (status == -EAGAIN && !t->broken) {
		f->late = true;
		t->late++;
		reissue_late(t);
		return;
	}
	t->in_store--;
	slot_done(t, f, status < 0 ? status : 0);
	reissue_late(t);
	issue_ready(t, false);
	retire(t);
}

void tsr_site_target_kick(struct tsr_site_target *t)
{
	if (t == NULL || t->retiring)
		return;
	reissue_late(t);
	if (t->stalled || (t->broken && t->issue != t->tail))
		issue_ready(t, false);
	retire(t);
}

bool tsr_site_target_room(const struct tsr_site_target *t, uint32_t payload_len)
{
	return t->tail - t->head < t->window && t->bytes_held + payload_len <= t->window_bytes;
}

unsigned tsr_site_target_inflight(const struct tsr_site_target *t)
{
	return (unsigned)(t->tail - t->head);
}

/* Every rule a frame must meet before the store sees it (site.h);
 * crc_checked: the caller checked a WRITE payload's CRC already. */
static int check(const struct tsr_site_target *t, const struct tsr_site_hdr *h,
		 const void *payload, bool crc_checked)
{
	if (t->broken)
		return -EIO;
	if (!tsr_site_target_room(t, h->opcode == TSR_SITE_WRITE ? h->payload_len : 0))
		return -EBUSY;
	if (h->stream != t->stream)
		return -EPROTO;
	switch (h->opcode) {
	case TSR_SITE_WRITE:
	case TSR_SITE_ZERO:
	case TSR_SITE_SNAPSHOT:
	case TSR_SITE_MARKER:
	case TSR_SITE_SYNC_BEGIN:
	case TSR_SITE_SYNC_END:
		if (h->seq != t->received + 1)
			return -EILSEQ;
		break;
	case TSR_SITE_BARRIER:
		if (h->seq > t->received)
			return -EILSEQ;
		break;
	default:
		return -EPROTO;
	}
	if (h->epoch < t->epoch)
		return -ESTALE;
	if (h->opcode == TSR_SITE_SNAPSHOT)
		return -EOPNOTSUPP;
	if (h->opcode == TSR_SITE_WRITE) {
		if (payload == NULL || h->payload_len != h->length ||
		    (!crc_checked && tsr_site_data_check(h, payload) < 0))
			return -EBADMSG;
		if ((uintptr_t)payload % TSR_BLOCK_SIZE)
			return -EINVAL;
	}
	if ((h->opcode == TSR_SITE_WRITE || h->opcode == TSR_SITE_ZERO) &&
	    (h->offset > tsr_vol_size(t->vol) ||
	     h->length > tsr_vol_size(t->vol) - h->offset))
		return -ENOSPC;
	return 0;
}

static int apply(struct tsr_site_target *t, const struct tsr_site_hdr *hdr, const void *payload,
		 bool crc_checked, tsr_cb cb_fn, void *cb_arg)
{
	struct slot *f;
	int ret = check(t, hdr, payload, crc_checked);

	if (ret)
		return ret;
	f = slot_at(t, t->tail);
	*f = (struct slot){.t = t, .state = SLOT_QUEUED, .op = hdr->opcode,
			   .seq = hdr->opcode == TSR_SITE_BARRIER ? 0 : hdr->seq,
			   .cb_fn = cb_fn, .cb_arg = cb_arg};
	if (hdr->opcode == TSR_SITE_WRITE || hdr->opcode == TSR_SITE_ZERO) {
		f->offset = hdr->offset;
		f->length = hdr->length;
	}
	if (hdr->opcode == TSR_SITE_WRITE) {
		f->payload = payload;
		f->bytes = hdr->payload_len;
	}
	t->tail++;
	if (t->issue == t->tail - 1 && !t->stalled) {
		ret = issue_ready(t, true);
		if (ret) { /* the store refused before doing anything: cb never fires */
			t->tail--;
			t->issue = t->tail;
			memset(f, 0, sizeof(*f));
			return ret;
		}
	}
	t->bytes_held += f->bytes;
	if (f->seq)
		t->received = f->seq;
	if (hdr->epoch > t->epoch)
		t->epoch = hdr->epoch;
	return 0;
}

int tsr_site_target_apply(struct tsr_site_target *t, const struct tsr_site_hdr *hdr,
			  const void *payload, tsr_cb cb_fn, void *cb_arg)
{
	return apply(t, hdr, payload, false, cb_fn, cb_arg);
}

int tsr_site_target_apply_checked(struct tsr_site_target *t, const struct tsr_site_hdr *hdr,
				  const void *payload, tsr_cb cb_fn, void *cb_arg)
{
	return apply(t, hdr, payload, true, cb_fn, cb_arg);
}

uint64_t tsr_site_target_applied(const struct tsr_site_target *t)
{
	return t->applied;
}

bool tsr_site_target_consistent(const struct tsr_site_target *t)
{
	return t->consistent;
}

void tsr_site_target_set_inconsistent(struct tsr_site_target *t)
{
	t->consistent = false;
}

void tsr_site_target_ack(const struct tsr_site_target *t, struct tsr_site_hdr *out)
{
	memset(out, 0, sizeof(*out));
	out->opcode = TSR_SITE_ACK;
	out->stream = t->stream;
	out->seq = t->applied;
	out->epoch = t->epoch;
}
