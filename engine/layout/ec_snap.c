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
 * A CREATE carries the chunk size of the layout's size, so a chunk copy
 * grown past the record (a resize stopped after its grow step) cuts the
 * same chunk size as the others; a node of an earlier build refuses the
 * size (-EPROTO) and gets the CREATE again without it.  So does a make-up's
 * cut (below) when the snapshot's chunk size is the chunk volume's, and the
 * size cut there is read back; else that node cannot cut it right, and the
 * snapshot is skipped there with a WARN naming the node to upgrade.
 *
 * A copy that fails the request while others succeed is made OUT_OF_SYNC.
 *
 * Missed operations.  Every CREATE or DELETE a copy did not do (not IN_SYNC
 * at the cut, or failing it) is appended to its file of missed operations
 * (state_dir/<vol>.<node_id>.snaps, "c NAME" or "d NAME" a line, fsynced
 * before the operation is acknowledged), because:
 *  - a copy that missed a DELETE still holds that snapshot; if the name is
 *    cut again, its old one would be read as the new one (reads take a data
 *    chunk from its own copy first);
 *  - a copy that missed a CREATE lacks it: one copy less redundancy for it,
 *    and `snapshot list` answered from that copy's node would omit it.
 * So:
 *  - a copy with entries in its file serves no snapshot reads (snapread);
 *  - a returning copy (ec_resync.c) first deletes the name of every entry
 *    (ec_missed_delete), then, with its dirty stripes listed and released
 *    and before it goes RESYNCING, gets every snapshot whose last entry is a
 *    CREATE made up, oldest first (ec_missed_makeup, below); then the entries
 *    are dropped.  Entries noted while it resyncs are deleted once it is
 *    IN_SYNC, not made up (it takes host writes by then);
 *  - a CREATE that at least min_in_sync copies cut and others answered
 *    -EEXIST (their file is on another coordinator's node, or was lost)
 *    deletes the stale one there and cuts again, inside the same hold of
 *    host writes (drop_stale).  -EEXIST from k copies or more is a real
 *    snapshot of that name: the CREATE fails and is undone, as before;
 *  - a DELETE that a copy answers -ENOENT (it lacks that snapshot) is done
 *    there, unless no copy had it.
 * The copy's whole list is also recorded in the metadata store
 * (hooks.set_copy_missed: CopyRecord.missed_snaps) before the operation is
 * answered, as the mirror does, and again (without waiting) when a replay
 * shortens it: a coordinator on another node has no such file (attach.c
 * removes a stale one) and takes the recorded list as the copy's file at
 * attach (ec_missed_adopt).  A file that exists at attach is this node's own
 * as the last coordinator and is kept: it is the authority (the record is
 * written from it, and a replay's progress reaches it first).  A CREATE whose
 * record fails is undone and answers -EIO; such a DELETE answers -EIO (done
 * on the copies that took it; the file holds the entry).
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
	bool noted;       /* note_missed done: what copies missed is noted and asked to be recorded */
	int record_error; /* a note or record of a missed operation failed */
	struct esnap_sub {
		struct esnap *s;
		struct ecopy *c;
		unsigned gen;
		int status;
		bool stale_dropped; /* -EEXIST once: its stale one deleted, cut again */
		bool unsized;       /* a sized CREATE refused -EPROTO (a node of an
				     * earlier build): sent again without the size */
	} subs[TSR_LAYOUT_MAX_COPIES];
};

/* ---- snapshot operations a copy missed --------------------------------------- */

#define EC_MISSED_COMPACT 1024u /* entries before a note keeps only each name's last */
#define EC_MAKEUP_BYTES   (512u * 1024) /* image bytes a make-up reads at once (whole stripes) */

struct mentry {
	char op;       /* 'c' CREATE, 'd' DELETE */
	char snap[64];
};

/* What a replay works from: c's entries when it began. */
struct ec_missed {
	struct ecopy *c;
	unsigned gen;
	struct mentry *v;
	size_t n;
	size_t next;             /* delete: entry; makeup: entry whose snapshot is made up */
	struct tsr_snap_req req; /* the request in flight */
	tsr_cb done;
	void *arg;
	/* makeup of one snapshot */
	struct tsr_layout *img;  /* the snapshot's image, read from the other copies */
	uint64_t img_stripes;    /* stripes the image covers */
	uint64_t region, stripe, end;
	/* a batch of up to `batch` stripes in a row: the image read (batch * width),
	 * then m parity chunks (encoding), then the copy's chunks to write
	 * (batch * unit, contiguous in its chunk volume) */
	uint8_t *buf;
	unsigned batch;          /* stripes per batch (EC_MAKEUP_BYTES of image) */
	unsigned nbatch;         /* stripes in the batch in flight */
	unsigned made;           /* snapshots made up */
	/* the sized cut was refused -EPROTO (a node of a build before the SNAP
	 * size field) and sent again without the size (makeup_unsized) */
	bool unsized;
	uint64_t cut_size;   /* what such a node cut instead (makeup_verify_done): deleted */
	unsigned undo_tries; /* deletes of that cut sent (makeup_undone) */
};

/* Tries of the delete of a wrong-sized cut answered -EBUSY: the session that
 * read its size is answered closed before the node lets go of the snapshot
 * (its slot is released once the reply is sent). */
#define MAKEUP_UNDO_TRIES 20

static void img_destroy_msg(struct tsr_worker *w, void *arg)
{
	(void)w;
	tsr_layout_destroy(arg);
}

/* m's snapshot image goes, at the end of this loop pass: not from inside
 * one of its own read callbacks. */
static void img_drop(struct ec_missed *m)
{
	struct tsr_layout *img = m->img;

	if (img == NULL)
		return;
	m->img = NULL;
	if (tsr_worker_defer(m->c->e->home, img_destroy_msg, img) < 0)
		tsr_error("ec %s: a snapshot image could not be freed (out of memory): leaked",
			  m->c->e->name);
}

/* state_dir/<vol>.<node_id>.snaps (the bitmap's path fits, so does this). */
static void missed_path_node(const struct ec *e, const char *node_id, char out[PATH_MAX])
{
	int n = snprintf(out, PATH_MAX, "%s/%s.%s.snaps", e->state_dir, e->name, node_id);

	if (n < 0 || n >= PATH_MAX)
		out[0] = '\0';
}

bool ec_missed_pending(const struct ec *e, const struct ecopy *c)
{
	return ec_missed_pending_node(e, c->node_id);
}

bool ec_missed_pending_node(const struct ec *e, const char *node_id)
{
	char path[PATH_MAX];

	missed_path_node(e, node_id, path);
	return path[0] == '\0' || access(path, F_OK) == 0;
}

/* c's entries, in order ("c NAME" or "d NAME" a line; a last line without
 * its newline is a torn append, a line not of that form is not ours: both
 * skipped).  *out NULL and *n 0 when there is none. */
static int missed_load_node(const struct ec *e, const char *node_id, struct mentry **out, size_t *n)
{
	char path[PATH_MAX], line[128];
	struct mentry *v = NULL;
	size_t cap = 0;
	FILE *f;
	int ret = 0;

	*out = NULL;
	*n = 0;
	missed_path_node(e, node_id, path);
	if (path[0] == '\0')
		return -ENAMETOOLONG;
	f = fopen(path, "re");
	if (f == NULL)
		return errno == ENOENT ? 0 : -errno;
	while (fgets(line, sizeof(line), f) != NULL) {
		size_t len = strlen(line);

		if (len == 0 || line[len - 1] != '\n')
			break;
		line[len - 1] = '\0';
		if (len < 4 || (line[0] != 'c' && line[0] != 'd') || line[1] != ' ' ||
		    !tsr_valid_name(line + 2))
			continue;
		if (*n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct mentry *nv = realloc(v, ncap * sizeof(*v));

			if (nv == NULL) {
				ret = -ENOMEM;
				break;
			}
			v = nv;
			cap = ncap;
		}
		v[*n].op = line[0];
		memcpy(v[*n].snap, line + 2, len - 2);
		(*n)++;
	}
	if (ferror(f) && ret == 0)
		ret = -EIO;
	fclose(f);
	if (ret < 0) {
		free(v);
		*n = 0;
		return ret;
	}
	*out = v;
	return 0;
}

static int missed_load(const struct ec *e, const struct ecopy *c, struct mentry **out, size_t *n)
{
	return missed_load_node(e, c->node_id, out, n);
}

static int missed_save_node(const struct ec *e, const char *node_id, const struct mentry *v,
			    size_t n)
{
	char path[PATH_MAX], *buf = malloc(n * (sizeof(*v) + 2) + 1);
	size_t len = 0;
	int ret;

	if (buf == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		len += (size_t)sprintf(buf + len, "%c %s\n", v[i].op, v[i].snap);
	missed_path_node(e, node_id, path);
	ret = tsr_file_replace(path, buf, len);
	free(buf);
	return ret;
}

static int missed_save(const struct ec *e, const struct ecopy *c, const struct mentry *v, size_t n)
{
	return missed_save_node(e, c->node_id, v, n);
}

/* The last entry of snap at or after from, or n. */
static size_t last_of(const struct mentry *v, size_t n, size_t from, const char *snap)
{
	size_t last = n;

	for (size_t i = from; i < n; i++)
		if (strcmp(v[i].snap, snap) == 0)
			last = i;
	return last;
}

/* Append (op, snap) to c's file, durable when this returns 0.  A long file
 * keeps only each name's last entry (in their order): what a replay does
 * with it is the same. */
static int missed_note_node(const struct ec *e, const char *node_id, char op, const char *snap)
{
	struct mentry *v, *nv;
	size_t n, kept = 0;
	int ret = missed_load_node(e, node_id, &v, &n);

	if (ret < 0)
		return ret;
	nv = realloc(v, (n + 1) * sizeof(*v));
	if (nv == NULL) {
		free(v);
		return -ENOMEM;
	}
	v = nv;
	v[n].op = op;
	snprintf(v[n].snap, sizeof(v[n].snap), "%s", snap);
	n++;
	if (n > EC_MISSED_COMPACT) {
		for (size_t i = 0; i < n; i++)
			if (last_of(v, n, i, v[i].snap) == i)
				v[kept++] = v[i];
		n = kept;
	}
	ret = missed_save_node(e, node_id, v, n);
	free(v);
	return ret;
}

static int missed_note(struct ec *e, struct ecopy *c, char op, const char *snap)
{
	return missed_note_node(e, c->node_id, op, snap);
}

void ec_missed_forget(struct ec *e, const char *node_id)
{
	char path[PATH_MAX];

	missed_path_node(e, node_id, path);
	if (path[0] != '\0' && unlink(path) < 0 && errno != ENOENT)
		tsr_warn("ec %s: %s: %s (left behind)", e->name, path, strerror(errno));
}

/* node_id's entries as tsr_layout_copy.missed text ("c NAME\n" lines); NULL
 * with *err set on failure. */
static char *missed_text_node(const struct ec *e, const char *node_id, int *err)
{
	struct mentry *v;
	size_t n, len = 0;
	char *text;

	*err = missed_load_node(e, node_id, &v, &n);
	if (*err < 0)
		return NULL;
	text = malloc(n * (sizeof(*v) + 2) + 1);
	if (text == NULL) {
		free(v);
		*err = -ENOMEM;
		return NULL;
	}
	text[0] = '\0';
	for (size_t i = 0; i < n; i++)
		len += (size_t)sprintf(text + len, "%c %s\n", v[i].op, v[i].snap);
	free(v);
	return text;
}

struct missed_rec {
	struct ec *e;
	struct esnap *s; /* NULL: nobody waits (a replay's progress) */
	unsigned idx;
	int status;
};

static void esnap_recorded(struct esnap *s, int status);

static void missed_rec_msg(struct tsr_worker *wk, void *arg)
{
	struct missed_rec *r = arg;
	struct ec *e = r->e;

	(void)wk;
	if (r->status < 0 && r->status != -ESHUTDOWN) /* -ESHUTDOWN: detached, logged there */
		tsr_error("ec %s: copy %u: cannot record its missed snapshot operations: %s",
			  e->name, r->idx, strerror(-r->status));
	if (r->s != NULL)
		esnap_recorded(r->s, r->status);
	free(r);
	ec_put(e);
}

/* hooks.set_copy_missed's done: from any thread; back to the home worker. */
static void missed_rec_done(void *arg, int status)
{
	struct missed_rec *r = arg;

	r->status = status;
	if (tsr_worker_send(r->e->home, missed_rec_msg, r) < 0)
		tsr_error("ec %s: hook answer lost (home worker stopped)", r->e->name);
}

/*
 * Home worker: record copy idx's list as its file holds it now in the
 * metadata store (hooks.set_copy_missed: CopyRecord.missed_snaps), for a
 * coordinator on another node, which has no such file (attach.c removes a
 * stale one), to replay (ec_missed_adopt).  1: asked, s (may be NULL) gets
 * esnap_recorded; 0: no hook; -errno: the list could not be read.
 */
static int missed_record(struct ec *e, unsigned idx, const char *node_id, struct esnap *s)
{
	struct missed_rec *r;
	char *text;
	int ret;

	if (e->hooks.set_copy_missed == NULL)
		return 0;
	text = missed_text_node(e, node_id, &ret);
	if (text == NULL)
		return ret;
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		free(text);
		return -ENOMEM;
	}
	r->e = e;
	r->s = s;
	r->idx = idx;
	ec_get(e);
	e->hooks.set_copy_missed(e->hooks.arg, e->name, idx, node_id, text, missed_rec_done, r);
	free(text);
	return 1;
}

/* recorded's "c NAME" / "d NAME" lines (tsr_layout_copy.missed) noted for
 * node_id, in order; a line not of that form is skipped.  How many. */
static int note_recorded(struct ec *e, const char *node_id, const char *recorded)
{
	int n = 0, ret = 0;

	while (*recorded != '\0' && ret == 0) {
		const char *nl = strchr(recorded, '\n');
		size_t len = nl ? (size_t)(nl - recorded) : strlen(recorded);
		char name[64];

		if (len >= 3 && len - 2 < sizeof(name) &&
		    (recorded[0] == 'c' || recorded[0] == 'd') && recorded[1] == ' ') {
			memcpy(name, recorded + 2, len - 2);
			name[len - 2] = '\0';
			if (tsr_valid_name(name)) {
				ret = missed_note_node(e, node_id, recorded[0], name);
				n++;
			}
		}
		recorded += len + (nl != NULL);
	}
	return ret < 0 ? ret : n;
}

int ec_missed_note_all(struct ec *e, const char *node_id, const char *recorded)
{
	struct tsr_layout_status st;
	struct tsr_snap_info *list = NULL;
	size_t n = 0;
	int src = -1, ret;

	/* this node's copy lists them when it is a source: in sync, nothing missed */
	pthread_mutex_lock(&e->cs.status_lock);
	st = e->cs.status;
	for (unsigned i = 0; i < e->n_copies && i < st.n_copies; i++)
		if (e->places[i].local && st.copies[i].state == TSR_COPY_IN_SYNC &&
		    strcmp(st.copies[i].node_id, node_id) != 0)
			src = (int)i;
	pthread_mutex_unlock(&e->cs.status_lock);
	if (src < 0 || e->store == NULL || ec_missed_pending_node(e, st.copies[src].node_id)) {
		/* else the list the caller read from the metadata store */
		if (recorded != NULL && recorded[0] != '\0')
			return note_recorded(e, node_id, recorded);
		tsr_warn(
		    "ec %s: the copy on %s gets none of the volume's snapshots, if it has any: "
		    "this node holds no in-sync chunk copy to list them (replace the copy with "
		    "%s attached on a node that holds one)",
		    e->name, node_id, e->name);
		return 0;
	}
	ret = tsr_store_snap_list(e->store, e->name, &list, &n);
	for (size_t i = 0; i < n && ret == 0; i++) /* oldest first */
		ret = missed_note_node(e, node_id, 'c', list[i].name);
	free(list);
	return ret < 0 ? ret : (int)n;
}

int ec_missed_adopt(struct ec *e, const char *node_id, const char *recorded)
{
	if (recorded == NULL || recorded[0] == '\0' || ec_missed_pending_node(e, node_id))
		return 0; /* ours is the last coordinator's own, kept in step with the record */
	return note_recorded(e, node_id, recorded);
}

int ec_missed_begin(struct ecopy *c, struct ec_missed **out)
{
	struct ec_missed *m;
	int ret;

	*out = NULL;
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return -ENOMEM;
	ret = missed_load(c->e, c, &m->v, &m->n);
	if (ret < 0) {
		free(m);
		return ret;
	}
	m->c = c;
	m->gen = c->gen;
	*out = m;
	return 0;
}

bool ec_missed_empty(const struct ec_missed *m)
{
	return m == NULL || m->n == 0;
}

struct ecopy *ec_missed_copy(const struct ec_missed *m)
{
	return m->c;
}

void ec_missed_end(struct ec_missed *m, bool done)
{
	struct ec *e;
	struct mentry *v;
	size_t n;

	if (m == NULL)
		return;
	e = m->c->e;
	/* drop the entries replayed, if the file still starts with them (a note
	 * that compacted it meanwhile: kept whole, the next return replays it
	 * again, which comes to the same) */
	if (done && missed_load(e, m->c, &v, &n) == 0) {
		bool prefix = n >= m->n;

		for (size_t i = 0; prefix && i < m->n; i++)
			prefix = v[i].op == m->v[i].op && strcmp(v[i].snap, m->v[i].snap) == 0;
		if (prefix && missed_save(e, m->c, v + m->n, n - m->n) < 0)
			tsr_warn("ec %s: copy %u (%s): cannot update its file of missed snapshots",
				 e->name, m->c->idx, m->c->node_id);
		else if (prefix && missed_record(e, m->c->idx, m->c->node_id, NULL) < 0)
			tsr_warn("ec %s: copy %u (%s): cannot record its replay's progress",
				 e->name, m->c->idx, m->c->node_id);
		free(v);
	}
	img_drop(m);
	tsr_free_aligned(m->buf);
	free(m->v);
	free(m);
}

/* Phase 1: every name of the entries deleted on the copy (it may hold a stale
 * snapshot of it, or none: -ENOENT is done). */
static void delete_step(void *arg, int status)
{
	struct ec_missed *m = arg;
	int ret;

	if (status < 0 && status != -ENOENT) {
		m->done(m->arg, status);
		return;
	}
	if (m->c->gen != m->gen) {
		m->done(m->arg, -ECONNRESET);
		return;
	}
	while (m->next < m->n && last_of(m->v, m->n, m->next, m->v[m->next].snap) != m->next)
		m->next++; /* one delete per name */
	if (m->next == m->n) {
		tsr_info("ec %s: copy %u (%s): the snapshots of %zu operations it missed deleted "
			 "there",
			 m->c->e->name, m->c->idx, m->c->node_id, m->n);
		m->done(m->arg, 0);
		return;
	}
	/* the copy may never have had it */
	m->req = (struct tsr_snap_req){ .op = TSR_SNAP_DELETE, .missing_ok = true };
	snprintf(m->req.snap, sizeof(m->req.snap), "%s", m->v[m->next++].snap);
	ret = ecopy_snap(m->c, &m->req, delete_step, m);
	if (ret < 0)
		delete_step(m, ret);
}

int ec_missed_delete(struct ec_missed *m, tsr_cb done, void *arg)
{
	m->done = done;
	m->arg = arg;
	m->next = 0;
	delete_step(m, 0);
	return 0;
}

/*
 * Phase 2 (the copy OUT_OF_SYNC, its dirty stripes listed and released, not
 * yet RESYNCING: its head holds what it held when it left, outside its dirty
 * regions): each snapshot whose last missed operation is a CREATE, oldest
 * first, is made up on it the way the mirror does: its chunk of every stripe
 * of a dirty region is decoded from the snapshot's image (the other copies'
 * chunk snapshots, ec_snapread.c) and written into the copy's head, flushed,
 * and the snapshot cut there.  The head then equals that snapshot's chunk
 * volume, so its cut holds the same chunks as the others'.  The resync then
 * brings the dirty regions up to date.  A snapshot that cannot be read (gone
 * since, or on fewer than k copies) is skipped: the copy just lacks it.
 */
static void makeup_next(struct ec_missed *m);
static uint64_t makeup_img_size(const struct ec_missed *m);
static void makeup_stripe(struct ec_missed *m);

static void makeup_fail(struct ec_missed *m, int status)
{
	struct ec *e = m->c->e;

	if (status != -ECANCELED)
		tsr_warn("ec %s: copy %u (%s): make-up of snapshot %s: %s: the copy stays out of "
			 "sync (tried again when it returns)",
			 e->name, m->c->idx, m->c->node_id,
			 m->next < m->n ? m->v[m->next].snap : "?", strerror(-status));
	img_drop(m);
	m->done(m->arg, status);
}

/* This snapshot is not made up: the copy lacks it (reads decode its chunks). */
static void makeup_skip(struct ec_missed *m, int status)
{
	struct ec *e = m->c->e;

	tsr_warn("ec %s: copy %u (%s): snapshot %s is not made up there (%s): its chunks of it "
		 "are decoded from the others while they hold it (none does when it was deleted "
		 "since)",
		 e->name, m->c->idx, m->c->node_id, m->v[m->next].snap, strerror(-status));
	img_drop(m);
	m->next++;
	makeup_next(m);
}

static void makeup_cut(void *arg, int status);

/*
 * The copy's node cannot cut this snapshot at its chunk size (a build
 * before the SNAP size field, and a snapshot cut before the volume grew, or
 * its chunk copy grown past the record): skipped as makeup_skip does (the
 * copy lacks it; its chunks of it are decoded from the others), with the
 * node to upgrade named once.  Failing the make-up instead would keep the
 * whole copy (the head too) out of sync, its make-up read, written and
 * refused again at every return.
 */
static void makeup_skip_old_node(struct ec_missed *m, uint64_t cut)
{
	struct ec *e = m->c->e;
	uint64_t want = tsr_ec_chunk_volume_size(makeup_img_size(m), e->k, e->unit);

	tsr_warn("ec %s: copy %u (%s): node %s (a build before the SNAP size field) cannot cut "
		 "snapshot %s at its chunk size (%llu bytes; %s %llu): upgrade %s; the copy goes "
		 "on without %s, its chunks of it decoded from the others",
		 e->name, m->c->idx, m->c->node_id, m->c->node_id, m->v[m->next].snap,
		 (unsigned long long)want, cut ? "it cut" : "its chunk volume is",
		 (unsigned long long)(cut ? cut : e->chunk_size), m->c->node_id,
		 m->v[m->next].snap);
	img_drop(m);
	m->next++;
	makeup_next(m);
}

/*
 * The sized cut was refused -EPROTO: a node of a build before the SNAP size
 * field (f7e535e).  It cuts at its chunk copy's size, right when that is the
 * snapshot's: sent again without the size when the snapshot's chunk size is
 * the chunk volume's (the copy is at least that large), and the size it cut
 * read back (makeup_verify_done).  Otherwise makeup_skip_old_node.
 */
static void makeup_unsized(struct ec_missed *m)
{
	struct ec *e = m->c->e;
	int ret;

	if (m->req.size != e->chunk_size) {
		makeup_skip_old_node(m, 0);
		return;
	}
	tsr_warn("ec %s: copy %u (%s): node %s refused the sized snapshot create of %s (a build "
		 "before the SNAP size field): cut there at its chunk copy's size, which is "
		 "checked; upgrade %s",
		 e->name, m->c->idx, m->c->node_id, m->c->node_id, m->req.snap, m->c->node_id);
	m->unsized = true;
	m->req.size = 0;
	ret = ecopy_snap(m->c, &m->req, makeup_cut, m);
	if (ret < 0)
		makeup_cut(m, ret);
}

/* The wrong-sized cut deleted (or not: the next return deletes it first). */
static void makeup_undone(void *arg, int status)
{
	struct ec_missed *m = arg;
	int ret;

	if (status == -EBUSY && m->undo_tries < MAKEUP_UNDO_TRIES && m->c->gen == m->gen) {
		m->undo_tries++;
		ret = ecopy_snap(m->c, &m->req, makeup_undone, m);
		if (ret == 0)
			return;
		status = ret;
	}
	if (status < 0 && status != -ENOENT)
		tsr_warn("ec %s: copy %u (%s): delete of its wrong-sized %s: %s", m->c->e->name,
			 m->c->idx, m->c->node_id, m->v[m->next].snap, strerror(-status));
	if (m->c->gen != m->gen) {
		makeup_fail(m, -ECONNRESET);
		return;
	}
	makeup_skip_old_node(m, m->cut_size);
}

static void makeup_close_done(void *arg, int status)
{
	(void)arg;
	(void)status; /* the session goes with the connection anyway */
}

/* The session that read a wrong size is closed: that cut deleted. */
static void makeup_verify_closed(void *arg, int status)
{
	struct ec_missed *m = arg;
	int ret;

	(void)status; /* deleted anyway: a session still open makes it -EBUSY */
	if (m->c->gen != m->gen) {
		makeup_fail(m, -ECONNRESET);
		return;
	}
	m->req = (struct tsr_snap_req){ .op = TSR_SNAP_DELETE, .missing_ok = true };
	snprintf(m->req.snap, sizeof(m->req.snap), "%s", m->v[m->next].snap);
	m->undo_tries = 1;
	ret = ecopy_snap(m->c, &m->req, makeup_undone, m);
	if (ret < 0)
		makeup_undone(m, ret);
}

/* The unsized cut's session ("VOL@SNAP" on the copy's node): its size. */
static void makeup_verify_done(void *arg, int status, uint64_t handle, uint64_t size)
{
	struct ec_missed *m = arg;
	struct ecopy *c = m->c;
	int ret;

	if (status == 0 && c->gen != m->gen)
		status = -ECONNRESET;
	if (status == 0 &&
	    size != tsr_ec_chunk_volume_size(makeup_img_size(m), c->e->k, c->e->unit)) {
		/* its chunk copy is larger than the record: that cut is not the
		 * snapshot, deleted once this session is closed (the store
		 * refuses to delete a snapshot open read-only) */
		m->cut_size = size;
		ret = tsr_peer_close(c->client, handle, c->e->epoch, makeup_verify_closed, m);
		if (ret < 0)
			makeup_verify_closed(m, ret);
		return;
	}
	/* only on the connection that opened it (the gen unchanged): after a
	 * reconnect c->client is another connection, where handle may name
	 * another session; the old one went with its connection */
	if (handle != 0 && c->client != NULL && c->gen == m->gen)
		tsr_peer_close(c->client, handle, c->e->epoch, makeup_close_done, NULL);
	if (status < 0) {
		makeup_fail(m, status);
		return;
	}
	m->unsized = false;
	makeup_cut(m, 0);
}

static void makeup_cut(void *arg, int status)
{
	struct ec_missed *m = arg;
	char name[2 * 64];
	int ret;

	if (status == -EPROTO && m->req.size != 0 && !m->unsized && !m->c->local) {
		makeup_unsized(m);
		return;
	}
	if (status < 0) {
		makeup_fail(m, status);
		return;
	}
	if (m->unsized) { /* cut at the chunk copy's size: read it back */
		snprintf(name, sizeof(name), "%s@%s", m->c->e->name, m->v[m->next].snap);
		ret = tsr_peer_open(m->c->client, name, m->c->e->epoch, makeup_verify_done, m);
		if (ret < 0)
			makeup_fail(m, ret);
		return;
	}
	m->made++;
	tsr_info("ec %s: copy %u (%s): snapshot %s made up there", m->c->e->name, m->c->idx,
		 m->c->node_id, m->v[m->next].snap);
	img_drop(m);
	m->next++;
	makeup_next(m);
}

/*
 * The image's size as far as this volume reaches: a snapshot cut on chunk
 * copies grown past the record (a resize cut short) is larger than the
 * volume, and what lies past the volume's end was never writable (zeros);
 * the new chunk copy is only as large as the record.
 */
static uint64_t makeup_img_size(const struct ec_missed *m)
{
	uint64_t img = tsr_layout_size(m->img);
	uint64_t vol = __atomic_load_n(&m->c->e->size, __ATOMIC_ACQUIRE);

	return img < vol ? img : vol;
}
static void makeup_flushed(void *arg, int status)
{
	struct ec_missed *m = arg;
	int ret;

	if (status < 0 || m->c->gen != m->gen) {
		makeup_fail(m, status < 0 ? status : -ECONNRESET);
		return;
	}
	/* the snapshot's chunk size (whole stripes of its image), not the chunk
	 * volume's: cut before a grow, it is smaller on the copies that cut it */
	m->req = (struct tsr_snap_req){
	    .op = TSR_SNAP_CREATE,
	    .size = tsr_ec_chunk_volume_size(makeup_img_size(m), m->c->e->k, m->c->e->unit),
	};
	m->unsized = false;
	snprintf(m->req.snap, sizeof(m->req.snap), "%s", m->v[m->next].snap);
	ret = ecopy_snap(m->c, &m->req, makeup_cut, m);
	if (ret < 0)
		makeup_cut(m, ret);
}

static void makeup_written(void *arg, int status)
{
	struct ec_missed *m = arg;

	if (status < 0 || m->c->gen != m->gen) {
		makeup_fail(m, status < 0 ? status : -ECONNRESET);
		return;
	}
	m->stripe += m->nbatch;
	makeup_stripe(m);
}

static void makeup_read(void *arg, int status)
{
	struct ec_missed *m = arg;
	struct ec *e = m->c->e;
	uint8_t *img = m->buf, *pbuf = img + (size_t)m->batch * e->width;
	uint8_t *out = pbuf + (size_t)e->m * e->unit;
	int ret;

	if (status < 0) {
		makeup_skip(m, status);
		return;
	}
	/* the copy's chunk of each stripe: taken (data) or encoded (parity) */
	for (unsigned j = 0; j < m->nbatch; j++) {
		const uint8_t *stripe = img + (size_t)j * e->width;
		unsigned pos = tsr_ec_position_of(m->stripe + j, m->c->idx, e->k, e->m);
		const uint8_t *chunk;

		if (pos < e->k) {
			chunk = stripe + (size_t)pos * e->unit;
		} else {
			const uint8_t *data[TSR_EC_MAX_K];
			uint8_t *parity[TSR_EC_MAX_M];

			for (unsigned i = 0; i < e->k; i++)
				data[i] = stripe + (size_t)i * e->unit;
			for (unsigned i = 0; i < e->m; i++)
				parity[i] = pbuf + (size_t)i * e->unit;
			tsr_ec_encode(e->codec, e->unit, data, parity);
			chunk = parity[pos - e->k];
		}
		memcpy(out + (size_t)j * e->unit, chunk, e->unit);
	}
	ret = ecopy_write(m->c, ec_chunk_off(e, m->stripe), m->nbatch * e->unit, out,
			  makeup_written, m);
	if (ret < 0)
		makeup_written(m, ret);
}


/* The next stripes of the dirty regions (a batch in a row), or the flush and cut once done. */
static void makeup_stripe(struct ec_missed *m)
{
	struct ec *e = m->c->e;
	uint64_t per_region = e->region_size / e->unit, off, len, img = makeup_img_size(m);
	int ret;

	while (m->stripe >= m->end) {
		m->region = mbm_next(&m->c->bm, m->end == 0 ? 0 : m->region + 1);
		if (m->region >= e->nregions || m->region * per_region >= m->img_stripes) {
			ret = ecopy_flush(m->c, makeup_flushed, m);
			if (ret < 0)
				makeup_flushed(m, ret);
			return;
		}
		m->stripe = m->region * per_region;
		m->end = m->stripe + per_region;
		if (m->end > m->img_stripes)
			m->end = m->img_stripes;
	}
	/* the stripes in a row from here, up to a batch, inside the region */
	m->nbatch = m->end - m->stripe < m->batch ? (unsigned)(m->end - m->stripe) : m->batch;
	off = m->stripe * e->width;
	len = (uint64_t)m->nbatch * e->width;
	if (len > img - off)
		len = img - off;
	/* past the image: zeros */
	memset(m->buf + len, 0, (size_t)m->nbatch * e->width - len);
	ret = tsr_layout_read(m->img, e->io, off, (uint32_t)len, m->buf, makeup_read, m);
	if (ret < 0)
		makeup_read(m, ret);
}

static void makeup_next(struct ec_missed *m)
{
	struct ec *e = m->c->e;
	int ret;

	if (m->c->gen != m->gen) {
		makeup_fail(m, -ECONNRESET);
		return;
	}
	while (m->next < m->n && (m->v[m->next].op != 'c' ||
				  last_of(m->v, m->n, m->next, m->v[m->next].snap) != m->next))
		m->next++; /* not the name's last entry, or a DELETE */
	if (m->next == m->n) {
		m->done(m->arg, 0);
		return;
	}
	ret = ec_snap_image(e, m->v[m->next].snap, &m->img);
	if (ret < 0) {
		makeup_skip(m, ret);
		return;
	}
	m->img_stripes = (makeup_img_size(m) + e->width - 1) / e->width;
	m->region = 0;
	m->stripe = m->end = 0;
	makeup_stripe(m);
}

int ec_missed_makeup(struct ec_missed *m, tsr_cb done, void *arg)
{
	struct ec *e = m->c->e;

	m->done = done;
	m->arg = arg;
	m->next = 0;
	if (m->buf == NULL) {
		m->batch = EC_MAKEUP_BYTES / e->width ? EC_MAKEUP_BYTES / e->width : 1;
		m->buf = tsr_alloc_aligned((size_t)m->batch * e->width + (size_t)e->m * e->unit +
					   (size_t)m->batch * e->unit);
		if (m->buf == NULL)
			return -ENOMEM;
	}
	makeup_next(m);
	return 0;
}

/*
 * Every copy that did not do s's CREATE or DELETE gets its name noted.  An
 * operation that failed with no copy changed (a CREATE of a name taken, undone,
 * or a DELETE of a name no copy has) was missed by nobody: noting it would
 * leave every IN_SYNC copy with entries pending, so none would be a source
 * for snapshot reads (snapread) until it left and came back, and every
 * VOL@SNAP would fail (test-ec-snap-open).  A DELETE done on some copies
 * only, and failed for too few, was missed by the others.
 */
static void note_missed(struct esnap *s)
{
	struct ec *e = s->e;

	if (s->req.op != TSR_SNAP_CREATE && s->req.op != TSR_SNAP_DELETE)
		return;
	if (s->status != 0 && !(s->req.op == TSR_SNAP_DELETE && s->ok > 0))
		return;
	for (unsigned i = 0; i < e->n_copies; i++) {
		struct ecopy *c = &e->copies[i];
		int ret;

		if (s->subs[i].s == s && s->subs[i].status == 0)
			continue;
		ret = missed_note(e, c, s->req.op == TSR_SNAP_CREATE ? 'c' : 'd', s->req.snap);
		if (ret >= 0) {
			/* and in vol/<name>, for whichever coordinator brings it back */
			s->pending++;
			ret = missed_record(e, i, c->node_id, s);
			if (ret <= 0)
				s->pending--;
		}
		if (ret < 0) {
			tsr_error("ec %s: copy %u (%s): cannot record the missed snapshot %s: %s",
				  e->name, i, c->node_id, s->req.snap, strerror(-ret));
			if (s->record_error == 0)
				s->record_error = ret;
		}
	}
}

static void undo_create(struct esnap *s, const char *why);

/* The outcome, once what the copies missed is recorded. */
static void esnap_end(struct esnap *s)
{
	struct ec *e = s->e;

	if (s->record_error < 0 && s->status == 0) {
		/* not recorded: a coordinator elsewhere would not replay it */
		s->status = -EIO;
		if (s->req.op == TSR_SNAP_CREATE) {
			undo_create(s, "what the other copies missed could not be recorded");
			return;
		}
		tsr_error("ec %s: snapshot delete %s: done, but what the other copies missed "
			  "could not be recorded: %s",
			  e->name, s->req.snap, strerror(-s->record_error));
	}
	e->snap_holding = false;
	s->cb_fn(s->cb_arg, s->status);
	free(s);
	ec_scrub_unpark(e);
	ec_put(e);
}

/* A record of note_missed answered. */
static void esnap_recorded(struct esnap *s, int status)
{
	if (status < 0 && status != -ESHUTDOWN && s->record_error == 0)
		s->record_error = status;
	if (--s->pending == 0)
		esnap_end(s);
}

/* What copies missed is noted in their files and recorded in the metadata
 * store before the operation is answered (as the mirror does). */
static void esnap_finish(struct esnap *s)
{
	if (!s->noted) {
		s->noted = true;
		s->pending = 1;
		note_missed(s);
		if (--s->pending > 0)
			return;
	}
	esnap_end(s);
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
static void undo_create(struct esnap *s, const char *why)
{
	struct ec *e = s->e;
	struct tsr_snap_req del = s->req;

	del.op = TSR_SNAP_DELETE;
	del.size = 0; /* CREATE only */
	if (why != NULL)
		tsr_error("ec %s: snapshot %s: %s: undone", e->name, s->req.snap, why);
	else
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
			undo_create(s, NULL);
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

	if (status == -EPROTO && s->req.op == TSR_SNAP_CREATE && s->req.size != 0 &&
	    !sub->unsized) {
		/* a node of a build before the SNAP size field (f7e535e): cut
		 * there at its chunk volume's size, as every build did before;
		 * right unless that copy grew past the record (upgrade the node) */
		struct tsr_snap_req plain = s->req;

		sub->unsized = true;
		plain.size = 0;
		tsr_warn("ec %s: copy %u (%s) refused the sized snapshot create of %s "
			 "(an earlier build?): cut there at its chunk volume's size; upgrade "
			 "that node",
			 s->e->name, sub->c->idx, sub->c->node_id, s->req.snap);
		if (ecopy_snap(sub->c, &plain, esnap_sub_done, sub) == 0)
			return;
	}
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
	/* a CREATE is cut at the chunk size of the layout's size on every
	 * copy: a chunk copy grown past the record (a resize cut short after
	 * its grow step, or two that crossed) would otherwise cut a snapshot
	 * larger than the others' and the volume's.  The layout's size cannot
	 * change meanwhile: a resize is refused while a snapshot is held. */
	if (s->req.op == TSR_SNAP_CREATE && s->req.size == 0)
		s->req.size = tsr_ec_chunk_volume_size(e->size, e->k, e->unit);
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
