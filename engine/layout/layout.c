/*
 * Layout core: the one place that calls through struct tsr_layout_ops.
 * Every wrapper checks the request against the volume (alignment, range,
 * maximum size) so layouts receive only valid requests, and keeps the
 * async contract: a layout that returns an error must not call back.
 *
 * The snapshot gate (tsr_layout_snap) lives here too.  A layout is used by
 * one thread, its home worker (vol.h), so the gate is plain fields, no lock:
 *  - every write, trim and write-zeroes passed to the layout is counted in
 *    inflight_writes; its completion comes back through a small wrapper
 *    (struct gate_done, reused from a free list: no malloc in steady state)
 *    that decrements the count;
 *  - tsr_layout_snap closes the gate (gated); from then on new writes, trims
 *    and write-zeroes are queued in arrival order (struct gate_item), reads,
 *    flushes and block status pass;
 *  - when inflight_writes reaches 0 the layout's snap op runs; when it calls
 *    back, the gate opens and the queue is replayed in order.  A layout may
 *    open the gate before it calls back (tsr_layout_snap_opened: the cut is
 *    in place, its durable record comes later, e.g. the local layout's
 *    catalogue row); the request then waits in l->finishing until its
 *    callback, and callers are called back in the order their requests
 *    entered the gate (a later one that ends first waits there too).  A snap request
 *    that arrives while the gate is closed is queued like a write, so it is
 *    cut exactly after the writes that came before it and before the ones
 *    that came after.
 * The hot path pays one flag test, one counter and a free-list pop and push.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tessera/layout_module.h"

/* The completion wrapper of a write-type operation passed to the layout. */
struct gate_done {
	struct tsr_layout *l;
	tsr_cb cb_fn;
	void *cb_arg;
	struct gate_done *next; /* l->free_done */
};

enum gate_kind { GATE_WRITE, GATE_TRIM, GATE_WRITE_ZEROES, GATE_SNAP };

/* A request held while the gate is closed (or the snap request being run). */
struct gate_item {
	enum gate_kind kind;
	struct tsr_io *io;
	uint64_t offset, len;
	const void *buf;
	unsigned flags;
	struct tsr_snap_req snap; /* GATE_SNAP */
	int64_t closed_ns, cut_ns; /* GATE_SNAP: gate closed for it, snap op called */
	int64_t opened_ns;         /* GATE_SNAP: gate reopened early for it (0: not) */
	bool finished;             /* GATE_SNAP in l->finishing: its status is known */
	int status;                /* ... and is this */
	struct tsr_layout *l;      /* GATE_SNAP: for the op's callback */
	tsr_cb cb_fn;
	void *cb_arg;
	struct gate_item *next;
};

struct tsr_layout;
static void gate_run(struct tsr_layout *l);

struct tsr_layout {
	const struct tsr_layout_ops *ops; /* never NULL; block_status may be NULL */
	void *ctx;                        /* the layout's own state, freed by ops->destroy */
	/* The snapshot gate (file header); home thread only. */
	unsigned inflight_writes;     /* write-type ops passed to ops, not yet called back */
	bool gated;                   /* write-type ops are held: a snap request is current,
				       * or held ones wait to be replayed (current NULL) */
	bool snap_running;            /* ops->snap called for current, not yet called back */
	struct gate_item *current;    /* the snap request the gate is closed for */
	struct gate_item *held_head;  /* held requests (writes and snaps) in arrival order */
	struct gate_item *held_tail;
	bool running;                 /* gate_run is on the stack (no re-entry) */
	struct gate_done *free_done;  /* reusable completion wrappers */
	struct gate_item *finishing;  /* snap requests out of the gate whose callers wait
				       * (opened early, or done behind one), in gate order */
	struct gate_item *finishing_tail;
	tsr_layout_post_fn post;      /* the home thread's post (tsr_layout_set_home), or NULL */
	void *post_arg;
};

int tsr_layout_new(const struct tsr_layout_ops *ops, void *ctx, struct tsr_layout **out)
{
	struct tsr_layout *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return -ENOMEM;
	l->ops = ops;
	l->ctx = ctx;
	*out = l;
	return 0;
}

const struct tsr_layout_ops *tsr_layout_ops_of(const struct tsr_layout *l)
{
	return l->ops;
}

void *tsr_layout_ctx(struct tsr_layout *l)
{
	return l->ctx;
}

void tsr_layout_destroy(struct tsr_layout *l)
{
	if (l == NULL)
		return;
	if (l->gated || l->inflight_writes)
		tsr_error("layout %s: destroyed with %u writes in flight%s", l->ops->name,
			  l->inflight_writes, l->gated ? " and a snapshot pending" : "");
	l->ops->destroy(l->ctx);
	while (l->free_done != NULL) {
		struct gate_done *d = l->free_done;

		l->free_done = d->next;
		free(d);
	}
	while (l->held_head != NULL) {
		struct gate_item *it = l->held_head;

		l->held_head = it->next;
		free(it);
	}
	if (l->finishing != NULL)
		tsr_error("layout %s: destroyed with a snapshot request not called back",
			  l->ops->name);
	while (l->finishing != NULL) {
		struct gate_item *it = l->finishing;

		l->finishing = it->next;
		free(it);
	}
	free(l->current);
	free(l);
}

void tsr_layout_set_home(struct tsr_layout *l, tsr_layout_post_fn post, void *post_arg)
{
	l->post = post;
	l->post_arg = post_arg;
}

bool tsr_layout_has_home(const struct tsr_layout *l)
{
	return l->post != NULL;
}

int tsr_layout_post(struct tsr_layout *l, void (*fn)(void *arg), void *arg)
{
	if (l->post == NULL)
		return -EOPNOTSUPP;
	return l->post(l->post_arg, fn, arg);
}

const char *tsr_copy_state_name(enum tsr_copy_state st)
{
	switch (st) {
	case TSR_COPY_IN_SYNC:
		return "in-sync";
	case TSR_COPY_OUT_OF_SYNC:
		return "out-of-sync";
	case TSR_COPY_RESYNCING:
		return "resyncing";
	}
	return "unknown";
}

void tsr_layout_copy_returned(struct tsr_layout *l, unsigned idx, const char *address)
{
	if (l->ops->copy_returned != NULL)
		l->ops->copy_returned(l->ctx, idx, address);
}

int tsr_layout_replace_copy(struct tsr_layout *l, unsigned idx, const struct tsr_layout_copy *copy)
{
	if (l->ops->replace_copy == NULL)
		return -EOPNOTSUPP;
	if (copy == NULL || idx >= TSR_LAYOUT_MAX_COPIES)
		return -EINVAL;
	return l->ops->replace_copy(l->ctx, idx, copy);
}

int tsr_layout_replace_check(struct tsr_layout *l, unsigned idx)
{
	if (l->ops->replace_copy == NULL)
		return -EOPNOTSUPP;
	if (idx >= TSR_LAYOUT_MAX_COPIES)
		return -EINVAL;
	return l->ops->replace_copy(l->ctx, idx, NULL); /* NULL: check only */
}

void tsr_layout_fence(struct tsr_layout *l)
{
	if (l->ops->fence != NULL)
		l->ops->fence(l->ctx);
}

int tsr_layout_scrub_start(struct tsr_layout *l, bool repair)
{
	if (l->ops->scrub_start == NULL)
		return -EOPNOTSUPP;
	return l->ops->scrub_start(l->ctx, repair);
}

bool tsr_layout_snap_busy(const struct tsr_layout *l)
{
	return l->gated || l->current != NULL || l->snap_running || l->finishing != NULL;
}

int tsr_layout_resize(struct tsr_layout *l, uint64_t new_size, bool check_only, char *why,
		      size_t why_len)
{
	char dummy[8];
	uint64_t size = l->ops->size(l->ctx);

	if (why == NULL || why_len == 0) {
		why = dummy;
		why_len = sizeof(dummy);
	}
	why[0] = '\0';
	if (l->ops->resize == NULL) {
		snprintf(why, why_len, "a %s volume cannot grow while attached", l->ops->name);
		return -EOPNOTSUPP;
	}
	if (new_size % TSR_BLOCK_SIZE || new_size < size) {
		snprintf(why, why_len, "the new size must be a multiple of %u bytes and not below "
			 "the current %llu", TSR_BLOCK_SIZE, (unsigned long long)size);
		return -EINVAL;
	}
	return l->ops->resize(l->ctx, new_size, check_only, why, why_len);
}

void tsr_layout_get_status(struct tsr_layout *l, struct tsr_layout_status *out)
{
	memset(out, 0, sizeof(*out));
	if (l->ops->get_status != NULL)
		l->ops->get_status(l->ctx, out);
}

const char *tsr_layout_name(const struct tsr_layout *l)
{
	return l->ops->name;
}

uint64_t tsr_layout_size(const struct tsr_layout *l)
{
	return l->ops->size(l->ctx);
}

/* -EINVAL for misaligned, -ENOSPC past the end (the NBD error for both reads
 * and writes beyond the export is EINVAL/ENOSPC; the NBD layer maps it). */
static int check_range(struct tsr_layout *l, uint64_t offset, uint64_t len, uint64_t max_len)
{
	uint64_t size = l->ops->size(l->ctx);

	if (len == 0 || len > max_len)
		return -EINVAL;
	if (offset % TSR_BLOCK_SIZE || len % TSR_BLOCK_SIZE)
		return -EINVAL;
	if (offset > size || len > size - offset)
		return -ENOSPC;
	return 0;
}

int tsr_layout_read(struct tsr_layout *l, struct tsr_io *io, uint64_t offset, uint32_t len,
		    void *buf, tsr_cb cb_fn, void *cb_arg)
{
	int ret = check_range(l, offset, len, TSR_MAX_IO);

	if (ret)
		return ret;
	if (__builtin_expect(l->gated, 0) && l->current == NULL)
		gate_run(l); /* a replay that found the I/O queue full: go on */
	return l->ops->read(l->ctx, io, offset, len, buf, cb_fn, cb_arg);
}

int tsr_layout_read_direct(struct tsr_layout *l, struct tsr_io *io, uint64_t offset, uint32_t len,
			   void *buf, tsr_cb cb_fn, void *cb_arg)
{
	int ret = check_range(l, offset, len, TSR_MAX_IO);

	if (ret)
		return ret;
	if (__builtin_expect(l->gated, 0) && l->current == NULL)
		gate_run(l);
	if (l->ops->read_direct == NULL) /* its reads never use a cache */
		return l->ops->read(l->ctx, io, offset, len, buf, cb_fn, cb_arg);
	return l->ops->read_direct(l->ctx, io, offset, len, buf, cb_fn, cb_arg);
}

/* ---- the snapshot gate ---- */


static void gate_done_cb(void *arg, int status)
{
	struct gate_done *d = arg;
	struct tsr_layout *l = d->l;
	tsr_cb cb_fn = d->cb_fn;
	void *cb_arg = d->cb_arg;
	bool run_snap;

	d->next = l->free_done;
	l->free_done = d;
	l->inflight_writes--;
	/*
	 * Decide before calling back: the callback may drop the last handle and
	 * destroy l, unless a snap request is pending (its caller keeps l alive
	 * until the snap's callback).
	 */
	run_snap = l->gated && !l->snap_running && !l->running &&
		   (l->inflight_writes == 0 || l->current == NULL);
	cb_fn(cb_arg, status);
	if (run_snap)
		gate_run(l);
}

/* Pass a write-type operation to the layout, counted.  0 or -errno. */
static int gate_pass(struct tsr_layout *l, enum gate_kind kind, struct tsr_io *io,
		     uint64_t offset, uint64_t len, const void *buf, unsigned flags,
		     tsr_cb cb_fn, void *cb_arg)
{
	struct gate_done *d = l->free_done;
	int ret;

	if (d != NULL) {
		l->free_done = d->next;
	} else {
		d = malloc(sizeof(*d));
		if (d == NULL)
			return -ENOMEM;
		d->l = l;
	}
	d->cb_fn = cb_fn;
	d->cb_arg = cb_arg;
	switch (kind) {
	case GATE_WRITE:
		ret = l->ops->write(l->ctx, io, offset, (uint32_t)len, buf, flags, gate_done_cb, d);
		break;
	case GATE_TRIM:
		ret = l->ops->trim(l->ctx, io, offset, len, gate_done_cb, d);
		break;
	case GATE_WRITE_ZEROES:
	default:
		ret = l->ops->write_zeroes(l->ctx, io, offset, len, flags, gate_done_cb, d);
		break;
	}
	if (ret) {
		d->next = l->free_done;
		l->free_done = d;
		return ret;
	}
	l->inflight_writes++;
	return 0;
}

static void held_push(struct tsr_layout *l, struct gate_item *it)
{
	it->next = NULL;
	if (l->held_tail != NULL)
		l->held_tail->next = it;
	else
		l->held_head = it;
	l->held_tail = it;
}

/* Queue a write-type operation behind the closed gate.  0 or -ENOMEM. */
static int gate_hold(struct tsr_layout *l, enum gate_kind kind, struct tsr_io *io,
		     uint64_t offset, uint64_t len, const void *buf, unsigned flags,
		     tsr_cb cb_fn, void *cb_arg)
{
	struct gate_item *it = calloc(1, sizeof(*it));

	if (it == NULL)
		return -ENOMEM;
	it->kind = kind;
	it->io = io;
	it->offset = offset;
	it->len = len;
	it->buf = buf;
	it->flags = flags;
	it->cb_fn = cb_fn;
	it->cb_arg = cb_arg;
	held_push(l, it);
	return 0;
}

static inline int gate_write_op(struct tsr_layout *l, enum gate_kind kind, struct tsr_io *io,
				uint64_t offset, uint64_t len, const void *buf, unsigned flags,
				tsr_cb cb_fn, void *cb_arg)
{
	int ret;

	if (__builtin_expect(!l->gated, 1))
		return gate_pass(l, kind, io, offset, len, buf, flags, cb_fn, cb_arg);
	ret = gate_hold(l, kind, io, offset, len, buf, flags, cb_fn, cb_arg);
	if (ret == 0 && l->current == NULL)
		gate_run(l);
	return ret;
}

static const char *snap_op_name(enum tsr_snap_op op)
{
	return op == TSR_SNAP_CREATE ? "create" : op == TSR_SNAP_DELETE ? "delete" : "clone";
}

static void finishing_push(struct tsr_layout *l, struct gate_item *it)
{
	it->next = NULL;
	if (l->finishing_tail != NULL)
		l->finishing_tail->next = it;
	else
		l->finishing = it;
	l->finishing_tail = it;
}

/* Call back the finished requests at the head of l->finishing, in order. */
static void finishing_run(struct tsr_layout *l)
{
	while (l->finishing != NULL && l->finishing->finished) {
		struct gate_item *it = l->finishing;

		l->finishing = it->next;
		if (l->finishing == NULL)
			l->finishing_tail = NULL;
		it->cb_fn(it->cb_arg, it->status);
		free(it);
	}
}

void tsr_layout_snap_opened(struct tsr_layout *l)
{
	struct gate_item *it = l->current;
	int64_t now = tsr_mono_ns();

	if (it == NULL || !l->snap_running || it->opened_ns)
		return;
	/* the same line as a cut that ends in the gate: what the gate held */
	tsr_info("snapshot gate: %s '%s'%s%s: writes held %.1f ms (drain %.1f ms, %s op %.1f ms), "
		 "gate reopened before the op is durable",
		 snap_op_name(it->snap.op), it->snap.snap, it->snap.clone[0] ? " -> " : "",
		 it->snap.clone, (now - it->closed_ns) / 1e6, (it->cut_ns - it->closed_ns) / 1e6,
		 l->ops->name, (now - it->cut_ns) / 1e6);
	it->opened_ns = now;
	finishing_push(l, it);
	l->current = NULL;
	l->snap_running = false;
	l->gated = l->held_head != NULL;
	if (!l->running)
		gate_run(l);
}

static void gate_snap_done(void *arg, int status)
{
	struct gate_item *it = arg;
	struct tsr_layout *l = it->l;
	int64_t now = tsr_mono_ns();

	if (it->opened_ns) { /* out of the gate already: now durable */
		tsr_info("snapshot gate: %s '%s': %s op done %.1f ms after the gate reopened%s",
			 snap_op_name(it->snap.op), it->snap.snap, l->ops->name,
			 (now - it->opened_ns) / 1e6, status ? " (failed)" : "");
		it->finished = true;
		it->status = status;
		finishing_run(l);
		return;
	}
	/* How long host writes were held: what "without stopping I/O for more
	 * than a few ms" is measured by (bench/snapshot.sh reads this line). */
	tsr_info("snapshot gate: %s '%s'%s%s: writes held %.1f ms (drain %.1f ms, %s op %.1f ms)%s",
		 snap_op_name(it->snap.op), it->snap.snap, it->snap.clone[0] ? " -> " : "",
		 it->snap.clone, (now - it->closed_ns) / 1e6, (it->cut_ns - it->closed_ns) / 1e6,
		 l->ops->name, (now - it->cut_ns) / 1e6, status ? " (failed)" : "");

	l->current = NULL;
	l->snap_running = false;
	/* the held ones (if any) are replayed by gate_run, which keeps gated */
	l->gated = l->held_head != NULL;
	if (l->finishing != NULL) {
		/* an earlier request is not called back yet: this one waits */
		it->finished = true;
		it->status = status;
		finishing_push(l, it);
	} else {
		/* The caller's callback first (requests complete in order); it
		 * must not destroy the layout (tsr_layout_snap). */
		it->cb_fn(it->cb_arg, status);
		free(it);
	}
	if (!l->running)
		gate_run(l);
}

/*
 * Make progress: run the current snap request once nothing is in flight, or
 * replay held requests in arrival order up to the next snap request.  A
 * replayed operation that finds the I/O queue full stays at the head and is
 * tried again at the next completion or call into the layout.
 */
static void gate_run(struct tsr_layout *l)
{
	if (l->running)
		return;
	l->running = true;
	while (l->gated) {
		struct gate_item *it;
		int ret;

		if (l->current != NULL) {
			if (l->snap_running || l->inflight_writes > 0)
				break;
			l->snap_running = true;
			l->current->cut_ns = tsr_mono_ns();
			l->current->l = l;
			ret = l->ops->snap(l->ctx, &l->current->snap, gate_snap_done, l->current);
			if (ret)
				gate_snap_done(l->current, ret);
			continue;
		}
		it = l->held_head;
		if (it == NULL) {
			l->gated = false;
			break;
		}
		if (it->kind == GATE_SNAP) {
			l->held_head = it->next;
			if (l->held_head == NULL)
				l->held_tail = NULL;
			l->current = it;
			it->closed_ns = tsr_mono_ns();
			continue;
		}
		ret = gate_pass(l, it->kind, it->io, it->offset, it->len, it->buf, it->flags,
				it->cb_fn, it->cb_arg);
		if (ret == -EAGAIN)
			break;
		l->held_head = it->next;
		if (l->held_head == NULL)
			l->held_tail = NULL;
		if (ret)
			it->cb_fn(it->cb_arg, ret); /* it returned 0 when it was held */
		free(it);
	}
	l->running = false;
}

int tsr_layout_snap(struct tsr_layout *l, const struct tsr_snap_req *req, tsr_cb cb_fn,
		    void *cb_arg)
{
	struct gate_item *it;

	if (l->ops->snap == NULL)
		return -EOPNOTSUPP;
	if (req == NULL || req->op < TSR_SNAP_CREATE || req->op > TSR_SNAP_CLONE)
		return -EINVAL;
	it = calloc(1, sizeof(*it));
	if (it == NULL)
		return -ENOMEM;
	it->kind = GATE_SNAP;
	it->snap = *req;
	it->snap.snap[sizeof(it->snap.snap) - 1] = '\0';
	it->snap.clone[sizeof(it->snap.clone) - 1] = '\0';
	it->cb_fn = cb_fn;
	it->cb_arg = cb_arg;
	if (l->gated) {
		held_push(l, it); /* behind the writes and snaps already waiting */
		if (l->current == NULL)
			gate_run(l);
		return 0;
	}
	l->gated = true;
	l->current = it;
	it->closed_ns = tsr_mono_ns();
	gate_run(l);
	return 0;
}

int tsr_layout_write(struct tsr_layout *l, struct tsr_io *io, uint64_t offset, uint32_t len,
		     const void *buf, unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	int ret = check_range(l, offset, len, TSR_MAX_IO);

	if (ret)
		return ret;
	return gate_write_op(l, GATE_WRITE, io, offset, len, buf, flags, cb_fn, cb_arg);
}

int tsr_layout_flush(struct tsr_layout *l, struct tsr_io *io, tsr_cb cb_fn, void *cb_arg)
{
	if (__builtin_expect(l->gated, 0) && l->current == NULL)
		gate_run(l);
	return l->ops->flush(l->ctx, io, cb_fn, cb_arg);
}

int tsr_layout_trim(struct tsr_layout *l, struct tsr_io *io, uint64_t offset, uint64_t len,
		    tsr_cb cb_fn, void *cb_arg)
{
	int ret = check_range(l, offset, len, UINT64_MAX);

	if (ret)
		return ret;
	return gate_write_op(l, GATE_TRIM, io, offset, len, NULL, 0, cb_fn, cb_arg);
}

int tsr_layout_write_zeroes(struct tsr_layout *l, struct tsr_io *io, uint64_t offset,
			    uint64_t len, unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	int ret = check_range(l, offset, len, UINT64_MAX);

	if (ret)
		return ret;
	return gate_write_op(l, GATE_WRITE_ZEROES, io, offset, len, NULL, flags, cb_fn, cb_arg);
}

int tsr_layout_block_status(struct tsr_layout *l, uint64_t offset, uint64_t len,
			    struct tsr_extent *ext, size_t max, size_t *count)
{
	uint64_t size = l->ops->size(l->ctx);
	int ret = check_range(l, offset, len, UINT64_MAX);

	if (ret)
		return ret;
	if (max == 0) {
		*count = 0;
		return 0;
	}
	if (l->ops->block_status == NULL) {
		ext[0].offset = offset;
		ext[0].length = len < size - offset ? len : size - offset;
		ext[0].flags = 0;
		*count = 1;
		return 0;
	}
	return l->ops->block_status(l->ctx, offset, len, ext, max, count);
}
