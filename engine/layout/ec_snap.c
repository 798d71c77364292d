/*
 * EC layout: the snap op (layout_module.h).  layout.c holds host writes back
 * and waits for the ones in flight before calling it, so every chunk volume
 * is at the same point of the write order: the request is run on every
 * IN_SYNC copy at once (the store snapshots each chunk volume), and the
 * snapshot of the volume is the set of those chunk-volume snapshots.
 *
 * Resync and scrub write chunks outside host writes, and the store refuses a
 * cut with writes in flight (-EBUSY): during the op they start no new
 * stripe (snap_holding), and the cut goes once their stripes in flight are
 * done (bg_ops == 0).
 *
 * A copy that fails the request while others succeed is made OUT_OF_SYNC.
 * A copy that is not IN_SYNC at the cut misses the snapshot: unlike the
 * mirror (mirror_snap.c), no journal of missed operations is kept yet, so
 * that copy's chunk-volume snapshot is absent and reads of the snapshot
 * would have to decode its chunks (debt, docs/ARCHITECTURE.md).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "layout/ec_internal.h"

struct esnap {
	struct ec *e;
	struct tsr_snap_req req;
	tsr_cb cb_fn;
	void *cb_arg;
	int pending;
	unsigned asked, ok;
	int first_error;
	int status; /* the outcome, once known */
	struct esnap_sub {
		struct esnap *s;
		struct ecopy *c;
		unsigned gen;
		int status;
	} subs[TSR_LAYOUT_MAX_COPIES];
};

static void esnap_finish(struct esnap *s)
{
	struct ec *e = s->e;

	e->snap_holding = false;
	s->cb_fn(s->cb_arg, s->status);
	free(s);
	ec_scrub_unpark(e);
	ec_put(e);
}

static void undo_done(void *arg, int status)
{
	struct esnap *s = arg;

	if (status < 0)
		tsr_warn("ec %s: undoing snapshot %s on a copy: %s", s->e->name, s->req.snap,
			 strerror(-status));
	if (--s->pending == 0)
		esnap_finish(s);
}

/* Delete the snapshot from the copies that cut it, then finish. */
static void undo_create(struct esnap *s)
{
	struct ec *e = s->e;
	struct tsr_snap_req del = s->req;

	del.op = TSR_SNAP_DELETE;
	tsr_error("ec %s: snapshot %s cut on %u copies only, %u needed: undone", e->name,
		  s->req.snap, s->ok, e->min_in_sync);
	s->pending = 1;
	for (unsigned i = 0; i < e->n_copies; i++) {
		struct esnap_sub *sub = &s->subs[i];

		if (sub->s != s || sub->status != 0 || !sub->c->open)
			continue;
		s->pending++;
		if (ecopy_snap(sub->c, &del, undo_done, s) < 0)
			s->pending--;
	}
	undo_done(s, 0);
}

static void esnap_dec(struct esnap *s)
{
	struct ec *e = s->e;
	int status = 0;

	if (--s->pending > 0)
		return;
	if (s->ok == 0)
		status = s->first_error < 0 ? s->first_error : -EIO;
	else if (e->fenced)
		status = -EIO;
	if (status == 0 && s->ok < e->min_in_sync) {
		/* too few chunk volumes hold the cut to read it back: undo a CREATE */
		s->status = s->first_error < 0 ? s->first_error : -EIO;
		if (s->req.op == TSR_SNAP_CREATE) {
			undo_create(s);
			return;
		}
		tsr_error("ec %s: snapshot %s: done on %u copies only, %u needed: %s", e->name,
			  s->req.snap, s->ok, e->min_in_sync, strerror(-s->status));
		esnap_finish(s);
		return;
	}
	if (status == 0) {
		/* done, but some copies failed it: those fall out of sync */
		for (unsigned i = 0; i < e->n_copies; i++)
			if (s->subs[i].s == s && s->subs[i].status < 0 &&
			    s->subs[i].gen == s->subs[i].c->gen)
				ec_copy_failed(s->subs[i].c, s->subs[i].status);
	}
	s->status = status;
	esnap_finish(s);
}

static void esnap_sub_done(void *arg, int status)
{
	struct esnap_sub *sub = arg;
	struct esnap *s = sub->s;

	sub->status = status;
	if (status == 0)
		s->ok++;
	else if (s->first_error == 0)
		s->first_error = status;
	if (status == -ESTALE)
		ec_fence_now(s->e, "a copy has seen a newer epoch");
	esnap_dec(s);
}

/* A CREATE's copy is flushed first: commits write in place without FUA
 * (their bytes are durable in the stage journal until a release), and a
 * cut of bytes that a crash could still take back would leave the
 * snapshot with the old chunk once the journal replays the commit into
 * the head (copy-on-write of what the disk then holds). */
static void esnap_sub_flushed(void *arg, int status)
{
	struct esnap_sub *sub = arg;
	int ret;

	if (status == 0 && sub->s->e->fenced)
		status = -EIO;
	if (status == 0) {
		ret = ecopy_snap(sub->c, &sub->s->req, esnap_sub_done, sub);
		if (ret == 0)
			return;
		status = ret;
	}
	esnap_sub_done(sub, status);
}

/* Cut on every IN_SYNC copy (resync and scrub are quiet). */
static void esnap_go(struct tsr_worker *w, void *arg)
{
	struct esnap *s = arg;
	struct ec *e = s->e;

	(void)w;
	s->pending = 1;
	for (unsigned i = 0; i < e->n_copies && !e->fenced; i++) {
		struct ecopy *c = &e->copies[i];
		struct esnap_sub *sub = &s->subs[i];
		int ret;

		if (!ecopy_readable(c)) {
			tsr_warn("ec %s: copy %u (%s) is %s: it misses this snapshot operation",
				 e->name, i, c->node_id, tsr_copy_state_name(c->state));
			continue;
		}
		sub->s = s;
		sub->c = c;
		sub->gen = c->gen;
		s->asked++;
		s->pending++;
		if (s->req.op == TSR_SNAP_CREATE) {
			ret = ecopy_flush(c, esnap_sub_flushed, sub);
			if (ret < 0)
				esnap_sub_done(sub, ret);
			continue;
		}
		ret = ecopy_snap(c, &s->req, esnap_sub_done, sub);
		if (ret < 0)
			esnap_sub_done(sub, ret);
	}
	esnap_dec(s);
}

static void esnap_launch(struct esnap *s)
{
	struct ec *e = s->e;

	e->snap_pending = NULL;
	/* not inline: we may be inside a resync or scrub callback */
	if (tsr_worker_defer(e->home, esnap_go, s) < 0) {
		s->first_error = -ENOMEM;
		s->pending = 1;
		esnap_dec(s);
	}
}

void ec_bg_done(struct ec *e)
{
	if (--e->bg_ops == 0 && e->snap_pending != NULL)
		esnap_launch(e->snap_pending);
}

int ec_snap(void *ctx, const struct tsr_snap_req *req, tsr_cb cb_fn, void *cb_arg)
{
	struct ec *e = ctx;
	struct esnap *s;

	if (ec_fence_requested(e) || e->closing || !e->ready)
		return -EIO;
	if (e->snap_holding)
		return -EBUSY; /* layout.c runs one at a time */
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->e = e;
	s->req = *req;
	s->cb_fn = cb_fn;
	s->cb_arg = cb_arg;
	ec_get(e);
	e->snap_holding = true;
	if (e->bg_ops == 0)
		esnap_launch(s);
	else
		e->snap_pending = s;
	return 0;
}
