/*
 * Mirror layout: the snap op (layout_module.h), a snapshot operation cut on
 * every IN_SYNC copy at one point of the write order (DESIGN.md invariants
 * 1-3: a snapshot of a replicated volume is the same image on each copy
 * that holds it).
 *
 * layout.c's gate calls it with no host write, trim or write-zeroes in
 * flight and holds new ones back until it completes.  Region copies
 * (resync, read repair) and scrub repairs are not host writes: the op first
 * takes the range lock over the whole volume, so none of them is in flight
 * on any copy during the cut (the store refuses a cut with writes in
 * flight, -EBUSY) and none starts before it is done.
 *
 * Then req goes to every IN_SYNC copy at once: the local one through the
 * store, the remote ones as TSR_PEER_SNAP with our epoch (so a fenced
 * coordinator cannot cut a snapshot either).  Outcome:
 *  - every copy did it: success;
 *  - some failed, and those that did it are still >= min_replicas: each
 *    failed one is marked OUT_OF_SYNC exactly as a copy that fails a write
 *    (recorded in the metadata store before the snap is acknowledged), and
 *    the snap succeeds;
 *  - fewer than min_replicas did it: the snap fails with the first copy's
 *    error (e.g. -EEXIST from all of them), and a CREATE is undone (the
 *    snapshot deleted) on the copies that cut it.  A DELETE or CLONE that
 *    went through on some copies cannot be taken back: logged, and the
 *    error returned (deleting again finishes a DELETE);
 *  - a copy answering -ESTALE fences the layout: -EIO.
 *
 * Copies that are not IN_SYNC at the cut (away, or resyncing) do not get
 * the operation.  The cluster layer records which copies hold each
 * snapshot; bringing a returning copy's snapshots up to date is the
 * resync's job (docs/ARCHITECTURE.md, "Snapshots of replicated volumes").
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "layout/mirror_internal.h"

struct msnap;

struct msnap_sub {
	struct msnap *s;
	struct mcopy *c;
	unsigned gen;      /* session: a failure of an old one is not news */
	unsigned slot_gen; /* the copy in the slot (replace) */
	int status;
};

struct msnap {
	struct mirror *m;
	struct tsr_snap_req req; /* the operation; the undo's DELETE once undoing */
	tsr_cb cb_fn;
	void *cb_arg;
	struct rlock rl;  /* the whole volume, from grant to completion */
	int pending;      /* copies (and hooks) still awaited, +1 while launching */
	uint32_t targets; /* copies sent the operation */
	uint32_t ok;      /* copies that did it */
	int status;       /* the result once decided */
	bool undoing;
	struct msnap_sub subs[TSR_MIRROR_MAX_COPIES];
};

static const char *op_name(enum tsr_snap_op op)
{
	switch (op) {
	case TSR_SNAP_CREATE:
		return "create";
	case TSR_SNAP_DELETE:
		return "delete";
	case TSR_SNAP_CLONE:
		return "clone";
	default:
		return "?";
	}
}

static void snap_complete(struct msnap *s, int status)
{
	struct mirror *m = s->m;

	rl_release(m, &s->rl);
	s->cb_fn(s->cb_arg, status);
	free(s);
	m_put(m);
}

static void snap_step(struct msnap *s);

static void snap_dec(struct msnap *s)
{
	if (--s->pending == 0)
		snap_step(s);
}

static void sub_done(void *arg, int status)
{
	struct msnap_sub *sub = arg;
	struct msnap *s = sub->s;

	sub->status = status;
	if (status == 0)
		s->ok |= 1u << sub->c->idx;
	snap_dec(s);
}

/* Send s->req to the copies in mask. */
static void snap_send(struct msnap *s, uint32_t mask)
{
	struct mirror *m = s->m;

	s->pending = 1;
	s->ok = 0;
	for (unsigned i = 0; i < m->n_copies; i++) {
		struct msnap_sub *sub = &s->subs[i];
		struct mcopy *c = &m->copies[i];
		int ret;

		if (!(mask & (1u << i)))
			continue;
		sub->s = s;
		sub->c = c;
		sub->gen = c->gen;
		sub->slot_gen = c->slot_gen;
		sub->status = 0;
		s->pending++;
		ret = mcopy_snap(c, &s->req, sub_done, sub);
		if (ret < 0)
			sub_done(sub, ret);
	}
	snap_dec(s);
}

static void hook_recorded(void *arg, int status)
{
	struct msnap *s = arg;

	if (status < 0 && s->status == 0)
		s->status = -EIO;
	snap_dec(s);
}

/* The operation came back from every target: decide. */
static void snap_decided(struct msnap *s)
{
	struct mirror *m = s->m;
	unsigned n_ok = (unsigned)__builtin_popcount(s->ok);
	int first = 0;

	for (unsigned i = 0; i < m->n_copies; i++) {
		struct msnap_sub *sub = &s->subs[i];

		if (!(s->targets & (1u << i)) || sub->status == 0)
			continue;
		if (sub->status == -ESTALE)
			mirror_fence_now(m, "a copy has seen a newer epoch");
		if (first == 0)
			first = sub->status;
	}
	if (m->fenced || m->closing) {
		s->status = -EIO;
	} else if (n_ok < m->min_replicas) {
		s->status = first < 0 ? first : -EIO;
	} else {
		/* enough copies have it: the others are out of sync, durably
		 * recorded before we answer (as for a write that missed them) */
		s->status = 0;
		s->pending = 1;
		for (unsigned i = 0; i < m->n_copies; i++) {
			struct msnap_sub *sub = &s->subs[i];
			struct mcopy *c = &m->copies[i];
			struct waiter *w;

			if (!(s->targets & (1u << i)) || sub->status == 0 ||
			    sub->slot_gen != c->slot_gen || !c->present)
				continue;
			tsr_warn("mirror %s: snapshot %s %s on copy %u (%s): %s", m->name,
				 op_name(s->req.op), s->req.snap, i, c->node_id,
				 strerror(-sub->status));
			if (sub->gen == c->gen)
				mirror_copy_failed(c, sub->status);
			if (c->recorded == TSR_COPY_OUT_OF_SYNC && c->hook_want == c->recorded)
				continue;
			w = calloc(1, sizeof(*w));
			if (w == NULL) {
				s->status = -EIO;
				continue;
			}
			w->fn = hook_recorded;
			w->arg = s;
			s->pending++;
			mirror_hook_request(c, TSR_COPY_OUT_OF_SYNC, w);
		}
		snap_dec(s); /* -> snap_step with s->status set */
		return;
	}
	snap_step(s);
}

/*
 * The state machine, entered when no copy is awaited: after the cut
 * (status unset: decide), after the hooks (status 0: done, or -EIO: undo)
 * and after the undo.
 */
static void snap_step(struct msnap *s)
{
	struct mirror *m = s->m;

	if (s->undoing) {
		if (s->ok != s->targets)
			tsr_error("mirror %s: snapshot %s: undo failed on some copies; "
				  "delete the snapshot to clean up",
				  m->name, s->req.snap);
		snap_complete(s, s->status);
		return;
	}
	if (s->status == 1) {
		s->status = 0;
		snap_decided(s);
		return;
	}
	if (s->status == 0) {
		snap_complete(s, 0);
		return;
	}
	tsr_warn("mirror %s: snapshot %s %s: %s on %u of %u copies", m->name, op_name(s->req.op),
		 s->req.snap, strerror(-s->status), (unsigned)__builtin_popcount(s->ok),
		 (unsigned)__builtin_popcount(s->targets));
	if (s->req.op == TSR_SNAP_CREATE && s->ok != 0 && !m->fenced) {
		uint32_t done = s->ok;

		s->undoing = true;
		s->targets = done;
		s->req.op = TSR_SNAP_DELETE;
		snap_send(s, done);
		return;
	}
	if (s->req.op != TSR_SNAP_CREATE && s->ok != 0)
		tsr_error("mirror %s: snapshot %s %s went through on %u copies only: repeat it",
			  m->name, op_name(s->req.op), s->req.snap,
			  (unsigned)__builtin_popcount(s->ok));
	snap_complete(s, s->status);
}

static void snap_go(struct msnap *s)
{
	struct mirror *m = s->m;

	if (m->fenced || m->closing) {
		snap_complete(s, -EIO);
		return;
	}
	s->targets = mirror_in_sync_mask(m);
	if ((unsigned)__builtin_popcount(s->targets) < m->min_replicas) {
		tsr_error("mirror %s: snapshot %s: %u copies in sync, %u needed", m->name,
			  s->req.snap, mirror_in_sync(m), m->min_replicas);
		snap_complete(s, -EIO);
		return;
	}
	s->status = 1; /* undecided */
	snap_send(s, s->targets);
}

static void snap_granted(struct rlock *rl)
{
	snap_go((struct msnap *)((char *)rl - offsetof(struct msnap, rl)));
}

int mirror_snap(void *ctx, const struct tsr_snap_req *req, tsr_cb cb_fn, void *cb_arg)
{
	struct mirror *m = ctx;
	struct msnap *s;

	if (req == NULL || cb_fn == NULL)
		return -EINVAL;
	if (m->fenced || __atomic_load_n(&m->fence_req, __ATOMIC_ACQUIRE) || m->closing ||
	    !m->ready)
		return -EIO;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->m = m;
	s->req = *req;
	s->cb_fn = cb_fn;
	s->cb_arg = cb_arg;
	m_get(m);
	if (rl_acquire(m, &s->rl, 0, m->size, snap_granted))
		snap_go(s);
	return 0;
}
