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
 * coordinator cannot cut a snapshot either).  A CREATE carries the layout's
 * size, so a copy grown past the record (a resize stopped after its grow
 * step) cuts the volume's size like the others; a node of an earlier build
 * refuses the size (-EPROTO) and gets the CREATE again without it.  Outcome:
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
 * the operation, nor do copies that failed it: each such copy gets the
 * operation appended to its journal of missed operations
 * (state_dir/<vol>.<node_id>.snaps, one line "c NAME" or "d NAME" each,
 * replaced atomically and fsynced before the snap is acknowledged).  A copy
 * that was RESYNCING is made OUT_OF_SYNC with every region dirty: its
 * bitmap no longer covers everything it lacks since it left (regions
 * already copied were cleared), and a replay needs that.
 *
 * Replay (before a returning copy's resync proper; the copy is OUT_OF_SYNC
 * so host writes only mark its bitmap): for each missed operation in order,
 * the snapshot is deleted on the copy (it may hold a stale one of that name:
 * a cut that failed there), then for a CREATE whose snapshot still exists:
 * in every dirty region (every region on a full resync or rebuild) the
 * block sums of an IN_SYNC copy's snapshot and of the copy's head are
 * compared and only the blocks that differ are read from the snapshot and
 * written into the copy's head (replay_copy), flushed, and the snapshot cut
 * on the copy.  The copy's head then equals the snapshot's image (the
 * regions not dirty have not changed since the copy left), so its cut holds
 * the same image as the others'.  Since the head holds the previous
 * snapshot's image when the next one is made up, a new copy receives the
 * first snapshot's non-zero blocks, then each next snapshot's changes only.
 * A node of an earlier build refuses the make-up's sized cut (-EPROTO): it
 * gets the cut again without the size when the snapshot is the volume's
 * size, and the size it cut is read back (a snapshot session on it); else
 * (a snapshot cut before a grow, or a wrong size cut and deleted) one WARN
 * names the node to upgrade and the copy stays OUT_OF_SYNC, its session
 * open so that it is not brought back every few seconds, until the node
 * restarts (replay_unsized, replay_park).
 * Then the resync proper brings the head up to date, comparing sums too once
 * a snapshot was cut (head_imaged).  The snapshot is read from the local
 * copy when it is IN_SYNC, else from a remote IN_SYNC copy through a
 * read-only peer session on "VOL@SNAP" (SUMS, then READ of the runs that
 * differ).  Whatever a crash or a failure leaves in the head (a replay cut
 * short, a stale image), the next replay compares against it, so it is
 * made up the same way.
 *
 * The journal lives on the coordinator's node, like the bitmaps; so that
 * another coordinator knows it too, every change of it is also recorded in
 * the metadata store (hooks.set_copy_missed: the copy's
 * CopyRecord.missed_snaps), before the snap that made it is acknowledged
 * (a replay's progress without waiting).  A coordinator that rebuilds the
 * copy in full (full_resync, or no bitmap of it) replays the record's list
 * (tsr_layout_copy.missed): an entry already done is done again, which is
 * harmless when every region is made up.  One that has the copy's bitmap
 * replays its own journal, which matches it exactly (replaying a done entry
 * over part of the regions would mix two images).  A replaced copy's list is
 * every snapshot of the volume: the local IN_SYNC copy's, else the one the
 * cluster gives (also recorded, for a copy replaced while detached).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layout/mirror_internal.h"

struct msnap;

struct msnap_sub {
	struct msnap *s;
	struct mcopy *c;
	unsigned gen;      /* session: a failure of an old one is not news */
	unsigned slot_gen; /* the copy in the slot (replace) */
	int status;
	bool unsized;      /* a sized CREATE refused -EPROTO (a node of an earlier
			    * build): sent again without the size */
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
static int missed_add(struct mcopy *c, enum tsr_snap_op op, const char *snap);
static bool missed_record(struct mcopy *c, struct waiter *w);

static void snap_dec(struct msnap *s)
{
	if (--s->pending == 0)
		snap_step(s);
}

static void sub_done(void *arg, int status)
{
	struct msnap_sub *sub = arg;
	struct msnap *s = sub->s;

	if (status == -EPROTO && !s->undoing && s->req.op == TSR_SNAP_CREATE && s->req.size != 0 &&
	    !sub->unsized) {
		/* a node of a build before the SNAP size field (f7e535e): cut
		 * there at its copy's size, as every build did before; right
		 * unless that copy grew past the record (upgrade the node) */
		struct tsr_snap_req plain = s->req;

		sub->unsized = true;
		plain.size = 0;
		tsr_warn("mirror %s: copy %u (%s) refused the sized snapshot create of %s "
			 "(an earlier build?): cut there at its copy's size; upgrade that node",
			 s->m->name, sub->c->idx, sub->c->node_id, s->req.snap);
		if (mcopy_snap(sub->c, &plain, sub_done, sub) == 0)
			return;
	}
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
		sub->unsized = false;
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
	unsigned n_ok;
	int first = 0;

	if (s->req.op == TSR_SNAP_DELETE && s->ok != 0) {
		/* a copy that answers -ENOENT lacks the snapshot already (an
		 * earlier delete went through there only, e.g. refused -EBUSY
		 * elsewhere): the DELETE is done there, not a failure that puts
		 * it out of sync; "not found" only when no copy had it (as ec,
		 * esnap_dec) */
		for (unsigned i = 0; i < m->n_copies; i++)
			if ((s->targets & (1u << i)) && s->subs[i].status == -ENOENT) {
				s->subs[i].status = 0;
				s->ok |= 1u << i;
			}
	}
	n_ok = (unsigned)__builtin_popcount(s->ok);
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
		 * recorded before we answer (as for a write that missed them),
		 * and their journals say what they missed */
		s->status = 0;
		s->pending = 1;
		for (unsigned i = 0; i < m->n_copies; i++) {
			struct mcopy *c = &m->copies[i];
			struct waiter *w;

			if (!c->present || (s->ok & (1u << i)))
				continue;
			if (c->state == TSR_COPY_RESYNCING) {
				/* regions it got back are cleared in its bitmap, but
				 * its snapshot must be rebuilt from its departure */
				c->full_resync = true;
				mbm_mark_all(&c->bm);
				mirror_copy_failed(c, -EAGAIN);
			}
			if (s->req.op == TSR_SNAP_CLONE)
				continue;
			if (missed_add(c, s->req.op, s->req.snap) < 0) {
				s->status = -EIO;
				continue;
			}
			/* and in vol/<name>, for whichever coordinator brings it back */
			w = calloc(1, sizeof(*w));
			if (w == NULL) {
				s->status = -EIO;
				continue;
			}
			w->fn = hook_recorded;
			w->arg = s;
			s->pending++;
			if (!missed_record(c, w)) {
				s->pending--;
				free(w);
			}
		}
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
		if (s->req.op == TSR_SNAP_CREATE || s->req.op == TSR_SNAP_DELETE) {
			struct msnap_miss *r;

			if (m->n_recent_snaps == MIRROR_RECENT_SNAPS) {
				m->recent_snaps_head = (m->recent_snaps_head + 1) % MIRROR_RECENT_SNAPS;
				m->n_recent_snaps--;
			}
			r = &m->recent_snaps[(m->recent_snaps_head + m->n_recent_snaps++) %
					     MIRROR_RECENT_SNAPS];
			r->op = s->req.op;
			snprintf(r->snap, sizeof(r->snap), "%s", s->req.snap);
		}
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
		s->req.size = 0; /* CREATE only */
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
	/* a CREATE is cut at the layout's size on every copy: a copy grown
	 * past the record (a resize cut short after its grow step, or two that
	 * crossed) would otherwise cut a snapshot larger than the volume.  The
	 * layout's size cannot change meanwhile: a resize is refused while a
	 * snapshot holds the gate.  A request that carries a size keeps it. */
	if (s->req.op == TSR_SNAP_CREATE && s->req.size == 0)
		s->req.size = m->size;
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

/* ---- journal of missed operations ---------------------------------------- */

#define MIRROR_MISSED_MAX 1024u

/* state_dir/<vol>.<node_id>.snaps; the bitmap's path fits, so does this one. */
static void journal_path(const struct mcopy *c, char out[PATH_MAX])
{
	mirror_missed_path(c, out);
}

void mirror_missed_path(const struct mcopy *c, char out[PATH_MAX])
{
	int n = snprintf(out, PATH_MAX, "%s/%s.%s.snaps", c->m->state_dir, c->m->name, c->node_id);

	if (n < 0 || n >= PATH_MAX)
		out[0] = '\0';
}

static char *missed_text(const struct mcopy *c);

/* Write c's journal (unlink it when empty), atomically and durably. */
static int missed_save(struct mcopy *c)
{
	char path[PATH_MAX], *buf;
	size_t len = 0;
	int ret;

	journal_path(c, path);
	buf = missed_text(c);
	if (buf == NULL)
		return -ENOMEM;
	len = strlen(buf);
	ret = tsr_file_replace(path, buf, len);
	free(buf);
	if (ret < 0)
		tsr_error("mirror %s: journal %s: %s", c->m->name, path, strerror(-ret));
	return ret;
}

static int missed_push(struct mcopy *c, enum tsr_snap_op op, const char *snap)
{
	struct msnap_miss *n;

	if (c->n_missed >= MIRROR_MISSED_MAX)
		return -ENOSPC;
	n = realloc(c->missed, (c->n_missed + 1) * sizeof(*n));
	if (n == NULL)
		return -ENOMEM;
	c->missed = n;
	n[c->n_missed].op = op;
	snprintf(n[c->n_missed].snap, sizeof(n[c->n_missed].snap), "%s", snap);
	c->n_missed++;
	return 0;
}

static void missed_pop(struct mcopy *c)
{
	if (c->n_missed == 0)
		return;
	memmove(c->missed, c->missed + 1, (c->n_missed - 1) * sizeof(*c->missed));
	c->n_missed--;
}

/* Append op (durably).  A DELETE drops a pending CREATE of the same name. */
static int missed_add(struct mcopy *c, enum tsr_snap_op op, const char *snap)
{
	int ret;

	/* (not the entry a replay is working on: it pops it when done) */
	if (op == TSR_SNAP_DELETE)
		for (unsigned i = c->replay != NULL ? 1 : 0; i < c->n_missed; i++)
			if (c->missed[i].op == TSR_SNAP_CREATE &&
			    strcmp(c->missed[i].snap, snap) == 0) {
				memmove(c->missed + i, c->missed + i + 1,
					(c->n_missed - i - 1) * sizeof(*c->missed));
				c->n_missed--;
				break;
			}
	ret = missed_push(c, op, snap);
	if (ret == 0)
		ret = missed_save(c);
	if (ret < 0)
		tsr_error("mirror %s: copy %u (%s): cannot record the missed snapshot %s: %s",
			  c->m->name, c->idx, c->node_id, snap, strerror(-ret));
	return ret;
}

/*
 * Parse journal text ("c NAME\n" / "d NAME\n" lines, the file's or the
 * metadata record's) onto c's list.  0, -ENOMEM/-ENOSPC, or -EUCLEAN at a
 * malformed line (the entries before it are kept).
 */
static int missed_parse(struct mcopy *c, const char *text, const char *from)
{
	while (*text != '\0') {
		const char *eol = strchr(text, '\n');
		size_t len = eol != NULL ? (size_t)(eol - text) : strlen(text);
		char name[TSR_SNAP_NAME_MAX + 1];
		int ret;

		if (len < 3 || len - 2 > TSR_SNAP_NAME_MAX || (text[0] != 'c' && text[0] != 'd') ||
		    text[1] != ' ') {
			tsr_error("mirror %s: journal %s: malformed line: ignored from there",
				  c->m->name, from);
			return -EUCLEAN;
		}
		memcpy(name, text + 2, len - 2);
		name[len - 2] = '\0';
		if (!tsr_valid_name(name)) {
			tsr_error("mirror %s: journal %s: malformed line: ignored from there",
				  c->m->name, from);
			return -EUCLEAN;
		}
		ret = missed_push(c, text[0] == 'c' ? TSR_SNAP_CREATE : TSR_SNAP_DELETE, name);
		if (ret < 0)
			return ret;
		text += len;
		if (*text == '\n')
			text++;
	}
	return 0;
}

/* c's list as journal text (malloc'd), NULL: out of memory. */
static char *missed_text(const struct mcopy *c)
{
	char *buf = malloc((size_t)c->n_missed * (sizeof(c->missed[0].snap) + 3) + 1);
	size_t len = 0;

	if (buf == NULL)
		return NULL;
	for (unsigned i = 0; i < c->n_missed; i++)
		len += (size_t)sprintf(buf + len, "%c %s\n",
				       c->missed[i].op == TSR_SNAP_CREATE ? 'c' : 'd',
				       c->missed[i].snap);
	buf[len] = '\0';
	return buf;
}

/* ---- the record of missed operations in the metadata store --------------- */

struct missed_rec {
	struct mirror *m;
	struct waiter *w; /* NULL: nobody waits */
	unsigned idx, slot_gen, seq; /* the copy, its slot, this record's c->missed_rec_seq */
	int status;
};

static void missed_rec_msg(struct tsr_worker *wk, void *arg)
{
	struct missed_rec *r = arg;
	struct mirror *m = r->m;
	struct mcopy *c = &m->copies[r->idx];

	(void)wk;
	if (r->status < 0 && r->status != -ESHUTDOWN) /* -ESHUTDOWN: detached, logged there */
		tsr_error("mirror %s: cannot record missed snapshot operations: %s", m->name,
			  strerror(-r->status));
	/* the last list asked did not reach the record: the tick asks again (a
	 * record that lists entries done already would be replayed by a rebuild) */
	if (c->slot_gen == r->slot_gen && c->missed_rec_seq == r->seq)
		c->missed_rec_retry = r->status < 0 && r->status != -ESHUTDOWN;
	if (r->w != NULL) {
		r->w->fn(r->w->arg, r->status);
		free(r->w);
	}
	free(r);
	m_put(m);
}

/* hooks.set_copy_missed's done: from any thread; back to the home worker. */
static void missed_rec_done(void *arg, int status)
{
	struct missed_rec *r = arg;

	r->status = status;
	if (tsr_worker_send(r->m->home, missed_rec_msg, r) < 0)
		tsr_error("mirror %s: hook answer lost (home worker stopped)", r->m->name);
}

/*
 * Home worker: record c's list as it is now in the metadata store
 * (CopyRecord.missed_snaps), so that a coordinator that did not see the
 * operations replays them (layout.h, tsr_layout_copy.missed).  Records are
 * answered in the order asked.  true: asked, w (may be NULL) gets the answer
 * and is freed; false: no hook (or out of memory, logged), w untouched.
 */
static bool missed_record(struct mcopy *c, struct waiter *w)
{
	struct mirror *m = c->m;
	struct missed_rec *r;
	char *text;

	if (m->hooks.set_copy_missed == NULL)
		return false;
	r = calloc(1, sizeof(*r));
	text = missed_text(c);
	if (r == NULL || text == NULL) {
		tsr_error("mirror %s: copy %u (%s): cannot record missed snapshot operations: %s",
			  m->name, c->idx, c->node_id, strerror(ENOMEM));
		free(r);
		free(text);
		return false;
	}
	r->m = m;
	r->w = w;
	r->idx = c->idx;
	r->slot_gen = c->slot_gen;
	r->seq = ++c->missed_rec_seq;
	c->missed_rec_retry = false;
	m_get(m);
	c->missed_in_record = c->n_missed > 0;
	m->hooks.set_copy_missed(m->hooks.arg, m->name, c->idx, c->node_id, text, missed_rec_done,
				 r);
	free(text);
	return true;
}

void mirror_missed_tick(struct mirror *m, uint64_t now_ns)
{
	for (unsigned i = 0; i < m->n_copies; i++) {
		struct mcopy *c = &m->copies[i];

		if (!c->present || !c->missed_rec_retry || now_ns < c->missed_rec_next_ns)
			continue;
		c->missed_rec_next_ns = now_ns + 1000000000ull;
		missed_record(c, NULL);
	}
}

static int missed_load_file(struct mcopy *c, const char *path)
{
	char *text = NULL;
	size_t cap = 0;
	ssize_t n;
	FILE *f;
	int ret;

	f = fopen(path, "r");
	if (f == NULL)
		return errno == ENOENT ? 0 : -errno;
	n = getdelim(&text, &cap, '\0', f);
	fclose(f);
	ret = n < 0 ? 0 : missed_parse(c, text, path);
	free(text);
	return ret;
}

int mirror_missed_load(struct mcopy *c, const char *recorded, bool rebuild)
{
	char path[PATH_MAX];
	int ret;

	journal_path(c, path);
	if (c->state == TSR_COPY_IN_SYNC) {
		unlink(path); /* nothing missed: stale */
		return 0;
	}
	/*
	 * Rebuilt in full (every region written again): the record, which every
	 * coordinator sees, says what it missed; an entry done already is done
	 * again, harmless when every region is copied.  Else our journal, which
	 * matches our bitmap exactly (the record may still list entries already
	 * replayed: replaying one over part of the regions would mix images).
	 * A record with nothing (written before records kept these) defers to
	 * our journal.
	 */
	if (rebuild && recorded != NULL && recorded[0] != '\0') {
		ret = missed_parse(c, recorded, "(metadata record)");
		if (ret == 0 || ret == -EUCLEAN)
			ret = missed_save(c);
		c->missed_in_record = true;
	} else {
		ret = missed_load_file(c, path);
		c->missed_in_record = recorded != NULL && recorded[0] != '\0';
	}
	if (c->n_missed > 0)
		tsr_info("mirror %s: copy %u (%s) missed %u snapshot operations", c->m->name,
			 c->idx, c->node_id, c->n_missed);
	return ret == -EUCLEAN ? 0 : ret;
}

void mirror_missed_all(struct mcopy *c, const char *given)
{
	struct mirror *m = c->m;
	struct tsr_snap_info *list = NULL;
	size_t n = 0;
	bool local_ok = false;

	free(c->missed);
	c->missed = NULL;
	c->n_missed = 0;
	for (unsigned i = 0; i < m->n_copies; i++)
		if (m->copies[i].present && m->copies[i].local &&
		    m->copies[i].state == TSR_COPY_IN_SYNC)
			local_ok = true;
	/*
	 * The local copy's list is read here, between two cuts (this runs on the
	 * home worker), so no snapshot cut since the caller listed them escapes
	 * it; without one, the caller's list (an IN_SYNC copy's, read before).
	 */
	if (local_ok && tsr_store_snap_list(m->store, m->name, &list, &n) == 0) {
		for (size_t i = 0; i < n; i++)
			if (missed_push(c, TSR_SNAP_CREATE, list[i].name) < 0)
				break;
		free(list);
	} else if (given != NULL) {
		missed_parse(c, given, "(given)");
		/*
		 * Cut here since that list was read (it was read before the
		 * replace reached us): a name created last is missing from it.
		 * One listed and deleted since is skipped by the replay (-ENOENT),
		 * one deleted and cut again is read as it is now: only names
		 * missing need adding, in the order they were cut.
		 */
		for (unsigned k = 0; k < m->n_recent_snaps; k++) {
			const struct msnap_miss *r =
			    &m->recent_snaps[(m->recent_snaps_head + k) % MIRROR_RECENT_SNAPS];
			bool listed = false;

			if (r->op != TSR_SNAP_CREATE)
				continue;
			for (unsigned i = 0; i < c->n_missed && !listed; i++)
				listed = strcmp(c->missed[i].snap, r->snap) == 0;
			if (!listed && missed_push(c, TSR_SNAP_CREATE, r->snap) < 0)
				break;
		}
	}
	missed_save(c);
	missed_record(c, NULL);
}

void mirror_missed_clear(struct mcopy *c)
{
	free(c->missed);
	c->missed = NULL;
	c->n_missed = 0;
	missed_save(c);
}

void mirror_missed_free(struct mcopy *c)
{
	free(c->missed);
	c->missed = NULL;
	c->n_missed = 0;
}

/* ---- replay ------------------------------------------------------------- */

/* RP_VERIFY, RP_CLOSE, RP_UNDO: after an unsized cut on a node of an earlier
 * build (replay_unsized): its size read back through a snapshot session, a
 * wrong one deleted once that session is closed. */
enum replay_step { RP_DELETE, RP_OPEN, RP_COPY, RP_FLUSH, RP_CUT, RP_VERIFY, RP_CLOSE, RP_UNDO };

/* Tries of the delete of a wrong-sized cut answered -EBUSY: the session that
 * read its size is answered closed before the node lets go of the snapshot
 * (its slot is released once the reply is sent). */
#define REPLAY_UNDO_TRIES 20

/* Pieces of a make-up in flight at once, at most (and their bytes, at most
 * MIRROR_RESYNC_INFLIGHT_BYTES: one piece always may go). */
#define REPLAY_DEPTH MIRROR_RESYNC_DEPTH

struct mreplay;

/* One piece of the make-up: [off, off+len) compared and its differing runs
 * written, independently of the other pieces in flight (disjoint ranges). */
struct rpiece {
	struct mreplay *rp;
	bool busy;
	uint64_t off;
	uint32_t len;
	uint8_t *buf;
	uint32_t *ssum, *tsum; /* the piece's block sums: snapshot, copy's head */
	int pending;           /* sums on their way (+1 while launching) */
	int status;            /* the first failure of the sums */
	bool target_bad;       /* the head's SUMS failed with -EIO */
	bool have_data;        /* buf holds the piece's snapshot data (local source) */
	bool writing;          /* the run in flight: its write (else its read) */
	uint32_t b, run_end;   /* the run of differing blocks being written */
};

struct mreplay {
	struct mcopy *c;
	unsigned gen; /* the copy's session: a failure ends the replay */
	bool aborted;
	enum replay_step step;
	struct tsr_snap_req req; /* what is sent to the copy */
	struct tsr_svol *src;    /* the snapshot on the local copy, or NULL: */
	struct mcopy *rsrc;      /* the remote IN_SYNC copy whose snapshot session is read */
	unsigned rsrc_gen;       /* rsrc's session when that OPEN was sent: rhandle is a
				  * slot of that connection only */
	uint64_t rhandle;        /* that session (peer OPEN of "VOL@SNAP"), 0: none */
	char rname[2 * 64];
	uint64_t src_size;
	uint64_t region;     /* next region to copy */
	uint64_t region_end; /* end of the region whose pieces go, 0: none */
	uint64_t next_off;   /* the next piece of that region */
	uint32_t piece_max;  /* bytes of a piece, at most (its buffers' size) */
	unsigned depth;      /* pieces in flight, at most */
	struct rpiece pieces[REPLAY_DEPTH];
	unsigned inflight;        /* pieces busy */
	int copy_status;          /* RP_COPY: the first failure of a piece (no more start) */
	bool copy_end;            /* RP_COPY: every piece started */
	bool pumping, pump_again; /* replay_pump running (a completion inside it) */
	/* a piece whose local read met the full io queue while others were in
	 * flight: started again (first) once one of them is done */
	bool held;
	uint64_t held_off;
	uint32_t held_len;
	uint64_t written;         /* bytes written into the copy's head */
	/* the sized cut was refused -EPROTO (a node of a build before the SNAP
	 * size field) and sent again without the size (replay_unsized) */
	bool unsized;
	uint64_t cut_size;   /* what it cut instead, when not the snapshot's size */
	unsigned undo_tries; /* RP_UNDO: deletes sent */
	void (*done)(struct mcopy *c, int status);
};

static void replay_next(struct mreplay *rp);

static void close_done(void *arg, int status)
{
	(void)arg;
	(void)status; /* the session goes with the connection anyway */
}

/*
 * The remote source's connection is gone since its snapshot session was
 * opened: its client NULL (disconnected), or another connection (back
 * since), where rhandle, a slot number, may name an unrelated session (the
 * head, another make-up's or a scrub's snapshot).  The session went with
 * its connection: nothing to close, and no SUMS/READ may use it (the first
 * would dereference no client, the second read another image into this
 * copy's head and cut it as the snapshot).
 */
static bool replay_source_lost(const struct mreplay *rp)
{
	return rp->rsrc == NULL || rp->rsrc->client == NULL || rp->rsrc->gen != rp->rsrc_gen;
}

/* Let go of the snapshot being read (local handle or remote session). */
static void replay_drop_source(struct mreplay *rp)
{
	if (rp->src != NULL) {
		tsr_svol_put(rp->src);
		rp->src = NULL;
	}
	if (rp->rhandle != 0 && !replay_source_lost(rp))
		tsr_peer_close(rp->rsrc->client, rp->rhandle, rp->c->m->epoch, close_done, NULL);
	rp->rhandle = 0;
	rp->rsrc = NULL;
}

static void replay_finish(struct mreplay *rp, int status)
{
	struct mcopy *c = rp->c;
	struct mirror *m = c->m;

	replay_drop_source(rp);
	for (unsigned i = 0; i < REPLAY_DEPTH; i++) {
		struct rpiece *pc = &rp->pieces[i];

		if (pc->buf != NULL)
			tsr_free_aligned(pc->buf);
		free(pc->ssum);
		free(pc->tsum);
	}
	if (!rp->aborted) {
		c->replay = NULL;
		rp->done(c, status);
	}
	free(rp);
	m_put(m);
}

static bool replay_gone(struct mreplay *rp)
{
	struct mirror *m = rp->c->m;

	return rp->aborted || m->closing || m->fenced || rp->gen != rp->c->gen || !rp->c->open;
}

/* An IN_SYNC copy to read snapshot images from, the local one first; NULL: none. */
static struct mcopy *replay_source(struct mirror *m)
{
	struct mcopy *remote = NULL;

	for (unsigned i = 0; i < m->n_copies; i++) {
		struct mcopy *o = &m->copies[i];

		if (!o->present || !o->open || o->state != TSR_COPY_IN_SYNC)
			continue;
		if (o->local)
			return o;
		if (remote == NULL)
			remote = o;
	}
	return remote;
}

/* The entry is done on the copy: drop it (durably) and go on. */
static void replay_pop(struct mreplay *rp)
{
	struct mcopy *c = rp->c;

	replay_drop_source(rp);
	missed_pop(c);
	missed_save(c); /* a failure replays the entry again: harmless */
	/* the record too (not waited for: an entry it still lists is replayed
	 * only by a rebuild in full, where doing it again is harmless) */
	if (c->missed_in_record)
		missed_record(c, NULL);
	replay_next(rp);
}

static void replay_io_done(void *arg, int status);
static void replay_pump(struct mreplay *rp);
static void piece_run(struct rpiece *pc);

/* The piece is done (its runs written, or failed): the slot is free. */
static void piece_done(struct rpiece *pc, int status)
{
	struct mreplay *rp = pc->rp;

	pc->busy = false;
	rp->inflight--;
	if (status < 0 && rp->copy_status == 0)
		rp->copy_status = status;
	rp->held = false; /* a slot of the io queue may be free: try it again */
	replay_pump(rp);
}

static void piece_run_done(void *arg, int status)
{
	struct rpiece *pc = arg;
	struct mreplay *rp = pc->rp;

	if (status < 0 || replay_gone(rp) || rp->copy_status < 0) {
		piece_done(pc, status < 0 ? status : -ECANCELED);
		return;
	}
	if (!pc->writing) { /* the run's data is here: write it */
		uint64_t off = pc->off + (uint64_t)pc->b * TSR_BLOCK_SIZE;
		uint32_t len = (pc->run_end - pc->b) * TSR_BLOCK_SIZE;
		int ret;

		pc->writing = true;
		ret = mcopy_submit(rp->c, MCOP_WRITE, off, len,
				   pc->buf + (size_t)pc->b * TSR_BLOCK_SIZE, 0, piece_run_done, pc);
		if (ret < 0)
			piece_done(pc, ret);
		return;
	}
	rp->c->m->resync_bytes_copied += (uint64_t)(pc->run_end - pc->b) * TSR_BLOCK_SIZE;
	rp->written += (uint64_t)(pc->run_end - pc->b) * TSR_BLOCK_SIZE;
	pc->b = pc->run_end;
	piece_run(pc);
}

/* The next run of blocks of the piece that differ: read (remote), written. */
static void piece_run(struct rpiece *pc)
{
	struct mreplay *rp = pc->rp;
	uint32_t n = pc->len / TSR_BLOCK_SIZE, b = pc->b, e;
	uint64_t off;
	int ret;

	while (b < n && pc->ssum[b] == pc->tsum[b])
		b++;
	if (b == n) {
		piece_done(pc, 0);
		return;
	}
	for (e = b; e < n && pc->ssum[e] != pc->tsum[e]; e++)
		;
	pc->b = b;
	pc->run_end = e;
	pc->writing = false;
	off = pc->off + (uint64_t)b * TSR_BLOCK_SIZE;
	if (pc->have_data) { /* as if read: piece_run_done writes it */
		piece_run_done(pc, 0);
		return;
	}
	if (replay_source_lost(rp)) {
		piece_done(pc, -ENOTCONN);
		return;
	}
	ret = tsr_peer_read(rp->rsrc->client, rp->rhandle, rp->c->m->epoch, off,
			    (e - b) * TSR_BLOCK_SIZE, pc->buf + (size_t)b * TSR_BLOCK_SIZE,
			    piece_run_done, pc);
	if (ret < 0)
		piece_done(pc, ret);
}

/* One of the piece's sums is here (or failed); both: compare. */
static void piece_sums_done(void *arg, int status)
{
	struct rpiece *pc = arg;
	uint32_t n = pc->len / TSR_BLOCK_SIZE;

	if (status < 0 && pc->status == 0)
		pc->status = status;
	if (--pc->pending > 0)
		return;
	if (pc->status < 0 || replay_gone(pc->rp) || pc->rp->copy_status < 0) {
		piece_done(pc, pc->status < 0 ? pc->status : -ECANCELED);
		return;
	}
	if (pc->have_data)
		for (uint32_t b = 0; b < n; b++)
			pc->ssum[b] =
			    tsr_crc32c(0, pc->buf + (size_t)b * TSR_BLOCK_SIZE, TSR_BLOCK_SIZE);
	if (pc->target_bad) /* the head cannot be read somewhere: write it all */
		for (uint32_t b = 0; b < n; b++)
			pc->tsum[b] = ~pc->ssum[b];
	pc->b = 0;
	piece_run(pc);
}

/* The copy's head sums: -EIO (a block failing its CRC) means rewrite it all. */
static void piece_tsums_done(void *arg, int status)
{
	struct rpiece *pc = arg;

	if (status == -EIO) {
		pc->target_bad = true;
		status = 0;
	}
	piece_sums_done(pc, status);
}

/*
 * The next piece the copy's head may lack, into rp->next_off: false when
 * every region was started.  Pieces of a region are at most piece_max bytes
 * (MIRROR_IO_PIECE for a large --region-size, else the region).
 */
static bool replay_next_piece(struct mreplay *rp, uint64_t *off, uint32_t *len)
{
	struct mcopy *c = rp->c;
	struct mirror *m = c->m;

	if (rp->region_end == 0) {
		while (rp->region < m->nregions && !c->full_resync && !mbm_test(&c->bm, rp->region))
			rp->region++;
		rp->next_off = rp->region << m->region_shift;
		if (rp->region >= m->nregions || rp->next_off >= rp->src_size)
			return false;
		rp->region_end = rp->src_size - rp->next_off < m->region_size
				     ? rp->src_size
				     : rp->next_off + m->region_size;
		rp->region++;
	}
	*off = rp->next_off;
	*len = (uint32_t)(rp->region_end - *off < rp->piece_max ? rp->region_end - *off
								: rp->piece_max);
	rp->next_off = *off + *len;
	if (rp->next_off == rp->region_end)
		rp->region_end = 0; /* its last piece */
	return true;
}

/* Start a piece: the snapshot's sums (local: its data read and summed) and
 * the copy's head's.  False: the local read met the full io queue while
 * other pieces are in flight: nothing started, the range is held for later. */
static bool piece_start(struct rpiece *pc, uint64_t off, uint32_t len)
{
	struct mreplay *rp = pc->rp;
	struct mirror *m = rp->c->m;
	int ret;

	pc->off = off;
	pc->len = len;
	pc->pending = 3; /* the snapshot's sums, the head's, this launch */
	pc->status = 0;
	pc->target_bad = false;
	pc->have_data = rp->src != NULL;
	if (rp->src != NULL)
		ret = tsr_svol_read(rp->src, m->io, off, len, pc->buf, piece_sums_done, pc);
	else if (replay_source_lost(rp))
		ret = -ENOTCONN; /* the replay ends; the copy's next return replays again */
	else
		ret = tsr_peer_sums(rp->rsrc->client, rp->rhandle, m->epoch, off, len, pc->ssum,
				    piece_sums_done, pc);
	if (ret == -EAGAIN && rp->src != NULL && rp->inflight > 0) {
		rp->held = true;
		rp->held_off = off;
		rp->held_len = len;
		return false;
	}
	pc->busy = true;
	rp->inflight++;
	if (ret < 0)
		piece_sums_done(pc, ret);
	ret = mcopy_submit(rp->c, MCOP_SUMS, off, len, pc->tsum, 0, piece_tsums_done, pc);
	if (ret < 0)
		piece_tsums_done(pc, ret);
	piece_sums_done(pc, 0);
	return true;
}

/*
 * Make the copy's head hold the snapshot's image in the regions it may lack,
 * piece by piece: the block sums of the snapshot's piece (the local snapshot
 * read and summed here, or SUMS on the remote snapshot session) and of the
 * copy's head there are compared, and only the runs of blocks that differ
 * are written (piece_run).  The head holds the previous snapshot's image
 * (or, first, whatever it held: nothing on a new copy, a stale image, a
 * replay cut short), so a snapshot that changed little since the previous
 * one costs little, and a new copy gets no write for the blocks that read
 * as zeros.  Nothing writes the copy's head meanwhile: it is OUT_OF_SYNC
 * (host writes only mark its bitmap), and the snapshot does not change.
 * Up to `depth` pieces are in flight at once (a pipeline, as the resync's:
 * REPLAY_DEPTH, and MIRROR_RESYNC_INFLIGHT_BYTES of buffers), each on its
 * own range; a region over MIRROR_IO_PIECE (a large --region-size) goes in
 * pieces of that size: no store read or peer READ/SUMS takes it whole.  A
 * local read that meets the full io queue while other pieces are in flight
 * waits for one of them to finish (with none in flight it fails the replay,
 * as a single read did).  The first failure stops new pieces; once the ones
 * in flight are done the replay ends with it.  When every piece is done: the
 * flush, then the cut.
 */
static void replay_pump(struct mreplay *rp)
{
	struct mcopy *c = rp->c;
	int ret;

	if (rp->pumping) { /* a completion inside a start: the loop goes on */
		rp->pump_again = true;
		return;
	}
	rp->pumping = true;
	do {
		rp->pump_again = false;
		if (rp->copy_status == 0 && replay_gone(rp))
			rp->copy_status = -ECANCELED;
		while (rp->copy_status == 0 && rp->inflight < rp->depth) {
			struct rpiece *pc = NULL;
			uint64_t off;
			uint32_t len;

			for (unsigned i = 0; i < rp->depth && pc == NULL; i++)
				if (!rp->pieces[i].busy)
					pc = &rp->pieces[i];
			if (rp->held_len != 0) { /* the held range first, once a piece is done */
				if (rp->held)
					break;
				off = rp->held_off;
				len = rp->held_len;
				rp->held_len = 0;
			} else if (rp->copy_end) {
				break;
			} else if (!replay_next_piece(rp, &off, &len)) {
				rp->copy_end = true;
				break;
			}
			if (!piece_start(pc, off, len))
				break; /* held: a completion pumps again */
		}
	} while (rp->pump_again);
	rp->pumping = false;
	if (rp->inflight > 0)
		return; /* a completion pumps again */
	if (rp->copy_status < 0) {
		replay_finish(rp, rp->copy_status);
		return;
	}
	if (!rp->copy_end || rp->held_len != 0)
		return; /* not reached: nothing in flight and more to start */
	rp->step = RP_FLUSH;
	ret = mcopy_submit(c, MCOP_FLUSH, 0, 0, NULL, 0, replay_io_done, rp);
	if (ret < 0)
		replay_finish(rp, ret);
}

/* The snapshot's source is open: make up its image, piece by piece. */
static void replay_copy(struct mreplay *rp)
{
	rp->step = RP_COPY;
	rp->region = 0;
	rp->region_end = 0;
	rp->inflight = 0;
	rp->copy_status = 0;
	rp->copy_end = false;
	rp->held = false;
	rp->held_len = 0;
	replay_pump(rp);
}

/* The remote snapshot session is open (or not). */
/*
 * The source snapshot's size as far as this volume reaches: a snapshot cut
 * on copies grown past the record (a resize cut short, two resizes crossed)
 * is larger than the volume; what lies past the volume's end was never
 * writable (zeros), the new copy is only as large as the record, and its
 * store refuses a snapshot larger than its volume.
 */
static uint64_t replay_size(const struct mirror *m, uint64_t src)
{
	uint64_t vol = __atomic_load_n(&m->size, __ATOMIC_ACQUIRE);

	return src < vol ? src : vol;
}

static void replay_open_done(void *arg, int status, uint64_t handle, uint64_t size)
{
	struct mreplay *rp = arg;

	if (status == 0 && replay_source_lost(rp))
		status = -ENOTCONN; /* a handle of a connection gone since */
	if (status == 0)
		rp->rhandle = handle;
	if (replay_gone(rp)) {
		replay_finish(rp, -ECANCELED);
		return;
	}
	if (status == -ENOENT) { /* deleted since: nothing to rebuild */
		replay_pop(rp);
		return;
	}
	if (status < 0) {
		tsr_warn("mirror %s: copy %u (%s): replay: open %s on %s: %s", rp->c->m->name,
			 rp->c->idx, rp->c->node_id, rp->rname, rp->rsrc->node_id,
			 strerror(-status));
		replay_finish(rp, status);
		return;
	}
	rp->src_size = replay_size(rp->c->m, size);
	replay_copy(rp);
}

static void replay_io_done(void *arg, int status);

/*
 * The copy's node cannot take snapshot rp->req.snap at its size: it stays
 * OUT_OF_SYNC, and its session open, so nothing brings it back (the cluster
 * returns copies it sees disconnected): no replay every few seconds, each
 * failing the same way.  The node's restart (its upgrade) drops the session,
 * and its return replays the journal's entry again (kept).  -ECANCELED is
 * what replay_done (mirror_resync.c) takes as "leave the copy as it is".
 * A parked copy is not being rebuilt: when a replace put it there, that
 * replace no longer runs (replace_running cleared), so the other way out,
 * replace-replica moving the copy off that node, is not refused -EBUSY
 * (review 14b, finding 3).  Should the node return instead, the full
 * resync compares sums (compares(): its head holds the snapshots made up).
 */
static void replay_park(struct mreplay *rp)
{
	struct mcopy *c = rp->c;
	struct mirror *m = c->m;

	if (m->replace_running && m->replace_idx == c->idx && !rp->aborted &&
	    getenv("TSR_TEST_MIRROR_PARK_KEEPS_REPLACE") == NULL)
		m->replace_running = false;
	replay_finish(rp, -ECANCELED);
}

/*
 * The copy's node refused the sized cut with -EPROTO: a build before the
 * SNAP size field (f7e535e), whose parser refuses the longer payload.  It
 * cuts at its copy's size, right when that is the snapshot's: sent again
 * without the size when the snapshot is the volume's size (the copy is at
 * least that large), and the size it cut read back (replay_verify_done).  A
 * snapshot cut before the volume grew cannot be cut right there: one WARN
 * naming the node to upgrade, and the copy stays out of sync (replay_park).
 */
static void replay_unsized(struct mreplay *rp)
{
	struct mcopy *c = rp->c;
	struct mirror *m = c->m;
	uint64_t vol = __atomic_load_n(&m->size, __ATOMIC_ACQUIRE);
	int ret;

	if (rp->src_size != vol) {
		tsr_warn("mirror %s: copy %u (%s): node %s refused the sized snapshot create "
			 "of %s (a build before the SNAP size field) and cannot cut it at its "
			 "size (%llu bytes, cut before the volume grew to %llu): upgrade %s; "
			 "the copy stays out of sync until then (or move it off %s: tessera volume "
			 "replace-replica %s --node %s --to NODE)",
			 m->name, c->idx, c->node_id, c->node_id, rp->req.snap,
			 (unsigned long long)rp->src_size, (unsigned long long)vol, c->node_id,
			 c->node_id, m->name, c->node_id);
		replay_park(rp);
		return;
	}
	tsr_warn("mirror %s: copy %u (%s): node %s refused the sized snapshot create of %s (a "
		 "build before the SNAP size field): cut there at its copy's size, which is "
		 "checked; upgrade %s",
		 m->name, c->idx, c->node_id, c->node_id, rp->req.snap, c->node_id);
	rp->unsized = true;
	rp->req.size = 0;
	ret = mcopy_snap(c, &rp->req, replay_io_done, rp);
	if (ret < 0)
		replay_io_done(rp, ret);
}

/* The snapshot is made up on the copy: the next entry. */
static void replay_cut_done(struct mreplay *rp)
{
	struct mcopy *c = rp->c;

	tsr_info("mirror %s: copy %u (%s): snapshot %s replayed (%llu bytes written)", c->m->name,
		 c->idx, c->node_id, rp->req.snap, (unsigned long long)rp->written);
	rp->written = 0;
	c->head_imaged = true; /* its head holds that image now: compare it */
	replay_pop(rp);
}

/* The unsized cut's session ("VOL@SNAP" on the copy's node): its size. */
static void replay_verify_done(void *arg, int status, uint64_t handle, uint64_t size)
{
	struct mreplay *rp = arg;
	struct mcopy *c = rp->c;
	int ret;

	if (status == 0 && size != rp->src_size && c->client != NULL && !replay_gone(rp)) {
		/* its copy is larger than the volume (grown past the record): that
		 * cut is deleted once this session is closed (the store refuses
		 * to delete a snapshot open read-only) */
		rp->cut_size = size;
		rp->step = RP_CLOSE;
		ret = tsr_peer_close(c->client, handle, c->m->epoch, replay_io_done, rp);
		if (ret < 0)
			replay_io_done(rp, ret);
		return;
	}
	/* only on the connection that opened it: after a reconnect (a new gen)
	 * c->client is another connection, where handle may name another
	 * session; the old one went with its connection */
	if (status == 0 && c->client != NULL && rp->gen == c->gen)
		tsr_peer_close(c->client, handle, c->m->epoch, close_done, NULL);
	if (replay_gone(rp)) {
		replay_finish(rp, -ECANCELED);
		return;
	}
	if (status < 0) {
		tsr_warn("mirror %s: copy %u (%s): replay of snapshot %s: its size on %s: %s",
			 c->m->name, c->idx, c->node_id, rp->req.snap, c->node_id,
			 strerror(-status));
		replay_finish(rp, status);
		return;
	}
	replay_cut_done(rp);
}

static void replay_io_done(void *arg, int status)
{
	struct mreplay *rp = arg;
	struct mcopy *c = rp->c;
	char name[2 * 64];
	int ret;

	if (replay_gone(rp)) {
		replay_finish(rp, -ECANCELED);
		return;
	}
	switch (rp->step) {
	case RP_DELETE:
		if (status < 0 && status != -ENOENT)
			break;
		if (c->missed[0].op == TSR_SNAP_DELETE) {
			replay_pop(rp);
			return;
		}
		rp->rsrc = replay_source(c->m);
		if (rp->rsrc == NULL) {
			status = -EHOSTUNREACH;
			break;
		}
		if (!rp->rsrc->local) {
			rp->step = RP_OPEN;
			snprintf(rp->rname, sizeof(rp->rname), "%s@%s", c->m->name,
				 c->missed[0].snap);
			rp->rsrc_gen = rp->rsrc->gen;
			ret = tsr_peer_open(rp->rsrc->client, rp->rname, c->m->epoch,
					    replay_open_done, rp);
			if (ret < 0) {
				status = ret;
				break;
			}
			return;
		}
		rp->rsrc = NULL;
		ret = tsr_store_snap_open(c->m->store, c->m->name, c->missed[0].snap, &rp->src);
		if (ret == -ENOENT) { /* deleted since: nothing to rebuild */
			replay_pop(rp);
			return;
		}
		if (ret < 0) {
			status = ret;
			break;
		}
		rp->src_size = replay_size(rp->c->m, tsr_svol_size(rp->src));
		replay_copy(rp);
		return;
	case RP_OPEN: /* not reached: replay_open_done */
		break;
	case RP_COPY: /* not reached: the pieces' own callbacks */
		break;
	case RP_FLUSH:
		if (status < 0)
			break;
		rp->step = RP_CUT;
		rp->req.op = TSR_SNAP_CREATE;
		/* the snapshot's size, not the volume's: cut before a grow, it is
		 * smaller on the copies that cut it, and must be here too */
		rp->req.size = rp->src_size;
		rp->unsized = false;
		ret = mcopy_snap(c, &rp->req, replay_io_done, rp);
		if (ret < 0) {
			status = ret;
			break;
		}
		return;
	case RP_CUT:
		if (status == -EPROTO && rp->req.size != 0 && !rp->unsized && !c->local) {
			replay_unsized(rp);
			return;
		}
		if (status < 0)
			break;
		if (!rp->unsized) {
			replay_cut_done(rp);
			return;
		}
		/* cut at the copy's size: read it back */
		rp->step = RP_VERIFY;
		snprintf(name, sizeof(name), "%s@%s", c->m->name, rp->req.snap);
		ret = tsr_peer_open(c->client, name, c->m->epoch, replay_verify_done, rp);
		if (ret < 0) {
			status = ret;
			break;
		}
		return;
	case RP_VERIFY: /* not reached: replay_verify_done */
		break;
	case RP_CLOSE:
		tsr_warn("mirror %s: copy %u (%s): node %s (a build before the SNAP size field) "
			 "cut snapshot %s at %llu bytes, not its %llu: deleted there; upgrade %s; "
			 "the copy stays out of sync until then (or move it off %s: tessera volume "
			 "replace-replica %s --node %s --to NODE)",
			 c->m->name, c->idx, c->node_id, c->node_id, rp->req.snap,
			 (unsigned long long)rp->cut_size, (unsigned long long)rp->src_size,
			 c->node_id, c->node_id, c->m->name, c->node_id);
		rp->step = RP_UNDO;
		rp->req.op = TSR_SNAP_DELETE;
		rp->req.missing_ok = true;
		rp->undo_tries = 0;
		/* fall through */
	case RP_UNDO:
		if (rp->step == RP_UNDO && (rp->undo_tries == 0 ||
					    (status == -EBUSY && rp->undo_tries < REPLAY_UNDO_TRIES))) {
			rp->undo_tries++;
			ret = mcopy_snap(c, &rp->req, replay_io_done, rp);
			if (ret == 0)
				return;
			status = ret;
		}
		if (status < 0 && status != -ENOENT) /* the next return deletes it first */
			tsr_warn("mirror %s: copy %u (%s): delete of its wrong-sized %s: %s",
				 c->m->name, c->idx, c->node_id, rp->req.snap, strerror(-status));
		replay_park(rp);
		return;
	}
	tsr_warn("mirror %s: copy %u (%s): replay of snapshot %s: %s", c->m->name, c->idx,
		 c->node_id, c->n_missed ? c->missed[0].snap : "?", strerror(-status));
	replay_finish(rp, status);
}

static void replay_next(struct mreplay *rp)
{
	struct mcopy *c = rp->c;
	int ret;

	if (replay_gone(rp)) {
		replay_finish(rp, -ECANCELED);
		return;
	}
	if (c->n_missed == 0) {
		replay_finish(rp, 0);
		return;
	}
	if (c->missed[0].op == TSR_SNAP_CREATE && replay_source(c->m) == NULL) {
		/* below min_replicas nothing is written anyway; try again later */
		replay_finish(rp, -EHOSTUNREACH);
		return;
	}
	memset(&rp->req, 0, sizeof(rp->req));
	rp->req.op = TSR_SNAP_DELETE;
	rp->req.missing_ok = true; /* the copy may never have had it */
	snprintf(rp->req.snap, sizeof(rp->req.snap), "%s", c->missed[0].snap);
	rp->step = RP_DELETE;
	ret = mcopy_snap(c, &rp->req, replay_io_done, rp);
	if (ret < 0)
		replay_finish(rp, ret);
}

int mirror_snap_replay(struct mcopy *c, void (*done)(struct mcopy *c, int status))
{
	struct mirror *m = c->m;
	struct mreplay *rp;

	if (c->n_missed == 0)
		return 1;
	if (c->replay != NULL)
		return 0;
	rp = calloc(1, sizeof(*rp));
	if (rp == NULL)
		return -ENOMEM;
	rp->piece_max = m->region_size < MIRROR_IO_PIECE ? m->region_size : MIRROR_IO_PIECE;
	rp->depth = MIRROR_RESYNC_INFLIGHT_BYTES / rp->piece_max;
	if (rp->depth < 1)
		rp->depth = 1;
	if (rp->depth > REPLAY_DEPTH)
		rp->depth = REPLAY_DEPTH;
	for (unsigned i = 0; i < rp->depth; i++) {
		struct rpiece *pc = &rp->pieces[i];

		pc->rp = rp;
		pc->buf = tsr_alloc_aligned(rp->piece_max);
		pc->ssum = calloc(rp->piece_max / TSR_BLOCK_SIZE, sizeof(uint32_t));
		pc->tsum = calloc(rp->piece_max / TSR_BLOCK_SIZE, sizeof(uint32_t));
		if (pc->buf == NULL || pc->ssum == NULL || pc->tsum == NULL) {
			for (unsigned j = 0; j <= i; j++) {
				if (rp->pieces[j].buf != NULL)
					tsr_free_aligned(rp->pieces[j].buf);
				free(rp->pieces[j].ssum);
				free(rp->pieces[j].tsum);
			}
			free(rp);
			return -ENOMEM;
		}
	}
	rp->c = c;
	rp->gen = c->gen;
	rp->done = done;
	c->replay = rp;
	m_get(m);
	tsr_info("mirror %s: copy %u (%s): replaying %u missed snapshot operations", m->name,
		 c->idx, c->node_id, c->n_missed);
	replay_next(rp);
	return 0;
}

void mirror_snap_replay_abort(struct mcopy *c)
{
	if (c->replay == NULL)
		return;
	c->replay->aborted = true; /* freed by its op in flight */
	c->replay = NULL;
}
