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
 * A copy that is not IN_SYNC at the cut misses the snapshot: its chunks of
 * it are decoded from the others' (ec_snapread.c).
 *
 * Stale snapshots.  A copy that missed a DELETE still holds that snapshot;
 * if the name is cut again later, its old one would be read as the new one
 * (reads take a data chunk from its own copy first).  So every name of a
 * CREATE or DELETE that a copy did not do goes into its file of missed
 * names (state_dir/<vol>.<node_id>.snaps, one name a line, fsynced before
 * the operation is acknowledged), and:
 *  - a copy with names in its file serves no snapshot reads (snapread);
 *  - a returning copy first deletes each of them (ec_missed_replay, from
 *    ec_resync.c: before its resync and again once IN_SYNC if more came
 *    meanwhile), then the file is emptied;
 *  - a CREATE that at least min_in_sync copies cut and others answered
 *    -EEXIST (their file is on another coordinator's node, or was lost)
 *    deletes the stale one there and cuts again, inside the same hold of
 *    host writes (drop_stale).  -EEXIST from k copies or more is a real
 *    snapshot of that name: the CREATE fails and is undone, as before.
 * A missed CREATE is not made up on the copy: its chunks stay decoded, and
 * a DELETE that copy answers -ENOENT is done there (unless no copy had it).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
		bool stale_dropped; /* -EEXIST once: its stale one deleted, cut again */
	} subs[TSR_LAYOUT_MAX_COPIES];
};

/* ---- names of snapshot operations a copy missed ---------------------------- */

#define EC_MISSED_MAX 4096u /* names kept per copy; more are refused (logged) */

/* state_dir/<vol>.<node_id>.snaps (the bitmap's path fits, so does this). */
static void missed_path(const struct ec *e, const struct ecopy *c, char out[PATH_MAX])
{
	int n = snprintf(out, PATH_MAX, "%s/%s.%s.snaps", e->state_dir, e->name, c->node_id);

	if (n < 0 || n >= PATH_MAX)
		out[0] = '\0';
}

bool ec_missed_pending(const struct ec *e, const struct ecopy *c)
{
	char path[PATH_MAX];

	missed_path(e, c, path);
	return path[0] == '\0' || access(path, F_OK) == 0;
}

/* The names in c's file, in order (a last line without its newline is a torn
 * append: not a name).  *out NULL and *n 0 when there is none. */
static int missed_load(const struct ec *e, const struct ecopy *c, char (**out)[64], size_t *n)
{
	char path[PATH_MAX], line[128];
	char (*names)[64] = NULL;
	FILE *f;
	int ret = 0;

	*out = NULL;
	*n = 0;
	missed_path(e, c, path);
	if (path[0] == '\0')
		return -ENAMETOOLONG;
	f = fopen(path, "re");
	if (f == NULL)
		return errno == ENOENT ? 0 : -errno;
	while (fgets(line, sizeof(line), f) != NULL) {
		size_t len = strlen(line);
		char (*grown)[64];

		if (len == 0 || line[len - 1] != '\n')
			break;
		line[len - 1] = '\0';
		if (!tsr_valid_name(line))
			continue; /* not a name we wrote: nothing to delete */
		if (*n >= EC_MISSED_MAX) {
			ret = -EFBIG;
			break;
		}
		grown = realloc(names, (*n + 1) * sizeof(*names));
		if (grown == NULL) {
			ret = -ENOMEM;
			break;
		}
		names = grown;
		memcpy(names[(*n)++], line, len);
	}
	if (ferror(f) && ret == 0)
		ret = -EIO;
	fclose(f);
	if (ret < 0) {
		free(names);
		*n = 0;
		return ret;
	}
	*out = names;
	return 0;
}

/* Append snap to c's file, durable when this returns 0. */
static int missed_note(struct ec *e, struct ecopy *c, const char *snap)
{
	char (*names)[64], path[PATH_MAX], *buf;
	size_t n, len = 0;
	int ret = missed_load(e, c, &names, &n);

	if (ret < 0)
		return ret;
	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], snap) == 0) {
			free(names); /* there already: deleting it once is enough */
			return 0;
		}
	buf = malloc((n + 1) * (sizeof(*names) + 1));
	if (buf == NULL) {
		free(names);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		len += (size_t)sprintf(buf + len, "%s\n", names[i]);
	len += (size_t)sprintf(buf + len, "%s\n", snap);
	missed_path(e, c, path);
	ret = tsr_file_replace(path, buf, len);
	free(buf);
	free(names);
	return ret;
}

/* Drop the first done names of c's file (those a replay deleted; names noted
 * since stay). */
static int missed_drop(struct ec *e, struct ecopy *c, size_t done)
{
	char (*names)[64], path[PATH_MAX], *buf;
	size_t n, len = 0;
	int ret = missed_load(e, c, &names, &n);

	if (ret < 0)
		return ret;
	buf = malloc(n * (sizeof(*names) + 1) + 1);
	if (buf == NULL) {
		free(names);
		return -ENOMEM;
	}
	for (size_t i = done; i < n; i++)
		len += (size_t)sprintf(buf + len, "%s\n", names[i]);
	missed_path(e, c, path);
	ret = tsr_file_replace(path, buf, len);
	free(buf);
	free(names);
	return ret;
}

struct mreplay {
	struct ecopy *c;
	unsigned gen;
	char (*names)[64];
	size_t n, next;
	struct tsr_snap_req del;
	tsr_cb done;
	void *arg;
};

static void replay_end(struct mreplay *r, int status)
{
	struct ec *e = r->c->e;

	if (status == 0)
		status = missed_drop(e, r->c, r->n);
	if (status < 0)
		tsr_warn("ec %s: copy %u (%s): deleting the snapshots it missed: %s", e->name,
			 r->c->idx, r->c->node_id, strerror(-status));
	else
		tsr_info("ec %s: copy %u (%s): %zu snapshot names it missed deleted there", e->name,
			 r->c->idx, r->c->node_id, r->n);
	r->done(r->arg, status);
	free(r->names);
	free(r);
}

static void replay_step(void *arg, int status)
{
	struct mreplay *r = arg;
	int ret;

	if (status < 0 && status != -ENOENT) {
		replay_end(r, status);
		return;
	}
	if (r->c->gen != r->gen) {
		replay_end(r, -ECONNRESET);
		return;
	}
	if (r->next == r->n) {
		replay_end(r, 0);
		return;
	}
	snprintf(r->del.snap, sizeof(r->del.snap), "%s", r->names[r->next++]);
	ret = ecopy_snap(r->c, &r->del, replay_step, r);
	if (ret < 0)
		replay_end(r, ret);
}

int ec_missed_replay(struct ecopy *c, tsr_cb done, void *arg)
{
	struct mreplay *r;
	char (*names)[64];
	size_t n;
	int ret = missed_load(c->e, c, &names, &n);

	if (ret < 0)
		return ret;
	if (n == 0) {
		free(names);
		if (ec_missed_pending(c->e, c)) /* only torn or foreign lines */
			return missed_drop(c->e, c, 0) < 0 ? -EIO : 1;
		return 1;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		free(names);
		return -ENOMEM;
	}
	*r = (struct mreplay){ .c = c, .gen = c->gen, .names = names, .n = n,
			       .del = { .op = TSR_SNAP_DELETE }, .done = done, .arg = arg };
	replay_step(r, 0);
	return 0;
}

/* Every copy that did not do s's CREATE or DELETE gets its name noted. */
static void note_missed(struct esnap *s)
{
	struct ec *e = s->e;

	if (s->req.op != TSR_SNAP_CREATE && s->req.op != TSR_SNAP_DELETE)
		return;
	for (unsigned i = 0; i < e->n_copies; i++) {
		struct ecopy *c = &e->copies[i];
		int ret;

		if (s->subs[i].s == s && s->subs[i].status == 0)
			continue;
		ret = missed_note(e, c, s->req.snap);
		if (ret < 0)
			tsr_error("ec %s: copy %u (%s): cannot record the missed snapshot %s: %s",
				  e->name, i, c->node_id, s->req.snap, strerror(-ret));
	}
}

static void esnap_finish(struct esnap *s)
{
	struct ec *e = s->e;

	note_missed(s);
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

static void esnap_sub_stale_dropped(void *arg, int status);

/*
 * A CREATE that at least min_in_sync copies cut, and that some others
 * answered -EEXIST: those hold a stale snapshot of the name (one they kept
 * from a DELETE they missed: a real one would be on at least k copies, and
 * then fewer than k could have cut it).  Delete it there and cut again, the
 * host writes still held.  Returns how many went (each ends in
 * esnap_sub_done).
 */
static unsigned drop_stale(struct esnap *s)
{
	struct ec *e = s->e;
	struct tsr_snap_req del = { .op = TSR_SNAP_DELETE };
	unsigned n = 0;

	if (s->req.op != TSR_SNAP_CREATE || e->fenced || s->ok < e->min_in_sync)
		return 0;
	snprintf(del.snap, sizeof(del.snap), "%s", s->req.snap);
	for (unsigned i = 0; i < e->n_copies; i++) {
		struct esnap_sub *sub = &s->subs[i];

		if (sub->s != s || sub->status != -EEXIST || sub->stale_dropped ||
		    sub->gen != sub->c->gen)
			continue;
		sub->stale_dropped = true;
		tsr_warn("ec %s: copy %u (%s) holds an old snapshot %s: deleted there, cut again",
			 e->name, sub->c->idx, sub->c->node_id, s->req.snap);
		s->pending++;
		if (ecopy_snap(sub->c, &del, esnap_sub_stale_dropped, sub) == 0)
			n++;
		else
			s->pending--;
	}
	return n;
}

static void esnap_dec(struct esnap *s)
{
	struct ec *e = s->e;
	int status = 0;

	if (--s->pending > 0)
		return;
	if (drop_stale(s) > 0)
		return;
	if (s->req.op == TSR_SNAP_DELETE && s->ok > 0) {
		/* a copy without it (it missed the CREATE) is where the DELETE
		 * leads: done there, not a failure that puts it out of sync */
		for (unsigned i = 0; i < e->n_copies; i++)
			if (s->subs[i].s == s && s->subs[i].status == -ENOENT) {
				s->subs[i].status = 0;
				s->ok++;
			}
	}
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

static void esnap_sub_done(void *arg, int status);

/* The stale snapshot is gone from the copy: cut the new one there. */
static void esnap_sub_stale_dropped(void *arg, int status)
{
	struct esnap_sub *sub = arg;
	int ret;

	if (status == 0 || status == -ENOENT) {
		ret = ecopy_snap(sub->c, &sub->s->req, esnap_sub_done, sub);
		if (ret == 0)
			return;
		status = ret;
	}
	esnap_sub_done(sub, status);
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
