/*
 * Spare snapshot layers: the slow half of a snapshot create, done ahead of
 * time by a background thread of the store, so that the cut itself (in the
 * layout's gate, on the volume's home worker) only checks the name and seq and
 * publishes the layer; the catalogue row is made final afterwards by the same
 * thread (below).
 *
 * A volume asks for a spare with tsr_store_snap_spare(keep) (the local
 * layout does when it opens a volume).  The thread then creates the files of
 * a layer sized for the volume (layer_create_files: created O_EXCL, sized,
 * fsynced), fsyncs volumes/, opens and maps the layer, and parks it here.
 * snap_cut takes it (spare_take) instead of making the files itself, and the
 * create asks for the next one (spare_request) once it is done.
 *
 * A spare has no catalogue row: until a create commits the row that names
 * it, its files are files without a row, which the next open removes (the
 * rule a crash during create always relied on).  So a crash at any point of
 * the background work, or with a spare parked, leaves no snapshot and no
 * space behind.  A spare made for another size (the volume grew) is dropped
 * when taken or when its volume is opened again; one of a deleted volume when
 * the volume goes; every spare at store close.  One of a closed volume stays
 * parked SPARE_LINGER_MS (below), so that a reopen in that time finds it,
 * then goes.  The thread makes one spare of a volume at a time: a request
 * while it makes one waits for that one (spare_request).
 *
 * A second thread of the set, the reaper, removes the files of deleted
 * layers (spare_reap), one layer at a time: a delete inside the layout's gate
 * then ends with its row's commit.  It also removes the files of deleted
 * volumes and layers that hold more than store_remove_piece() extents when
 * the delete ran outside the gate (spare_reap_start, which starts the threads
 * if need be: remove.c), and files of that size found without a row at open.
 * Files whose row is gone are files without a row: removed at open if a
 * crash comes first; at store close the queue is emptied, except that a
 * volume's and a leftover's removals get REAP_CLOSE_MS (below).  It is a
 * thread of its own because an unlink frees all of a
 * file's extents in one call: for a 1 GiB layer written by 4 KiB copies on
 * write that is seconds of file system work (9-13 s here: ext4 without a
 * journal, mounted with discard, so freeing extents issues discards), and a
 * spare asked for meanwhile must not wait for it (bench/snapshot.sh: 9 of 20
 * cuts found no spare while the spare thread unlinked three such layers).
 * Cutting the files down in small truncate steps on the spare thread instead
 * was tried: 3 GiB took 2876 pieces and 50 s, with pieces up to 1.4 s, and it
 * loaded the disk through the whole latency run.  Freeing a file in paced
 * hole-punch steps (32 MiB, 20 ms apart) before the unlink was tried on the
 * reaper (a1271ac, reverted): beside a loop of 4 KiB append + fdatasync on
 * another file, a plain unlink of a 1 GiB file of 4 KiB extents left that
 * loop's fdatasync at p99 3.4-3.6 ms, max 18-28 ms; the paced removal at p99
 * 4.7-9.0 ms, max 81-93 ms.  So the removal is not paced.  It is cut into
 * pieces of store_remove_piece() extents (1024) since session 22, unpaced,
 * only so that a store close can stop it between two (remove.c): the same
 * loop beside the removal of a file of 60000 4 KiB extents, whole or in 58
 * ftruncate pieces, 5 runs each by turns at load 4-7
 * (/var/tmp/s22-snapdel/lat.c): whole 4.7-14.7 s, fdatasync p99 0.4-8.8 ms;
 * pieces 6.4-15.8 s, p99 1.0-8.0 ms: the machine's noise, no difference.
 *
 * Pending rows and the row commit out of the gate.  Once a spare's files are
 * durable the thread commits a *pending* row for it (SNAP_PENDING, no name,
 * seq SNAP_PENDING_SEQ + the order the spares were made) on its own SQLite
 * connection.  A pending row is not listed, is left out of the chain at
 * attach unless its layer was cut (spare_is_cut), and is finished like a
 * delete at the next open (snap_recover: merged into its older neighbour,
 * which is a no-op for a layer nothing was copied into, then the row and the
 * files go).  tsr_store_snap_create_async cuts on a spare without writing the
 * catalogue: it checks the name and seq (against the rows and the creates
 * still queued here), publishes the layer and queues the row's finish
 * (spare_commit).  The thread makes the row final (catalog_snap_finalize, one
 * transaction) in the order the cuts were queued, before any other work, and
 * then calls the creator back.  Pending rows of one volume are cut in the
 * order they were made (one spare parked at a time), so at an open their seq
 * order is their cut order and the newest-first recovery merges each into the
 * layer it was cut above.
 *
 * The catalogue WAL.  A row's commit on the thread's connection is on the
 * reply path, and SQLite may add work to it: a checkpoint when the WAL has
 * grown past wal_autocheckpoint frames (a WAL sync, the pages written back,
 * a store.db sync), a WAL restart when the WAL was checkpointed whole (a new
 * header written and synced before the frames), and, when the commit
 * appends past the end of store.db-wal, the file's new blocks and size
 * written with the frames' fdatasync.  So the connection never checkpoints
 * inside a commit (wal_autocheckpoint 0); the thread checkpoints the WAL
 * itself while it prepares a spare (wal_settle, just before the spare's
 * pending row), so that row's commit is the one that restarts the WAL, and
 * the next cut's row commit appends inside the file: one fdatasync of
 * blocks store.db-wal already has.  Durability is SQLite's as before
 * (synchronous=FULL, the commit's fdatasync).  It does not make that
 * fdatasync immune to a stalled disk: in bench/snapshot.sh one row commit
 * took 806 ms (strace -T: the WAL's fdatasync, appending) while the reaper
 * unlinked a copy-on-write layer, and in another run an fdatasync that only
 * overwrote WAL blocks took 788 ms when the disk stalled for everyone (see
 * docs/ARCHITECTURE.md, Snapshots).
 *
 * Locks: spare_set.lock guards the lists and both threads' state; it may be
 * taken under store->lock (snap_cut), never the other way round, and neither
 * thread holds either lock while it creates, removes files or commits.
 * Neither takes store->lock, so a caller holding it may wait for them
 * (spare_commits_wait, spare_forget).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/internal.h"

/* What the store knows of one volume that wants spares. */
struct spare {
	char vol_uuid[37];   /* the volume */
	uint64_t size;       /* the volume's size to make the next spare for */
	bool wanted;         /* keep one ready (tsr_store_snap_spare) */
	bool queued;         /* the thread is to make one */
	bool making;         /* the thread is making one (for size) */
	int64_t linger_end;  /* let go: the parked one stays until then
			      * (tsr_mono_ms; 0 while wanted) */
	char uuid[37];       /* the parked layer's uuid (its files' names) */
	struct layer *layer; /* parked: files durable, mapped; NULL: none */
	uint64_t layer_size; /* the size the parked layer was made for */
	struct spare *next;
};

/* Files whose row is gone, to remove: a deleted layer's (spare_reap), or
 * large ones of a deleted volume or found at open (spare_reap_start). */
struct reap {
	char uuid[37];
	uint64_t size;     /* the volume's size (at the cut): which segments exist */
	bool may_stay;     /* spare_reap_start's: a close may leave it to the next
			    * open (REAP_CLOSE_MS); a layer's is finished first */
	struct reap *next; /* queue order */
};

/* A spare nobody will cut (resized volume, volume closed or deleted): its
 * pending row, then its files, go on the thread. */
struct drop {
	char uuid[37];
	uint64_t size;
	struct layer *layer; /* mapped, closed by the thread */
	struct drop *next;
};

/* A cut on a spare whose row is still pending (spare_commit). */
struct commit {
	struct snap_row row; /* the final row: name, seq, created, flags 0 */
	tsr_cb done;         /* fired once by the thread, no lock held */
	void *arg;
	struct commit *next;
};

/* The uuid of a cut layer whose row could not be made final: it stays in the
 * chain of its volume (spare_is_cut) until the next open finishes it. */
struct cut_failed {
	char uuid[37];
	struct cut_failed *next;
};

struct spare_set {
	pthread_mutex_t lock; /* every field below and every struct spare */
	pthread_cond_t cond;  /* work queued, stop, work done, or a thread idle */
	pthread_t thread;
	pthread_t reaper;     /* removes the files of deleted layers (reaper_main) */
	sqlite3 *db;          /* the thread's own catalogue connection: the thread only,
			       * and spare_stop after the join */
	uint64_t next_seq;    /* seq of the next pending row (thread only) */
	bool stopping;        /* spare_stop: the thread ends once commits and drops are done */
	bool busy;            /* the spare thread is committing, making or dropping */
	unsigned made;        /* spares parked since the store opened (tests) */
	unsigned committed;   /* rows made final by the thread since the store opened (tests) */
	unsigned wal_settled; /* wal_settle runs that copied every WAL frame back (tests) */
	struct spare *list;
	struct reap *reaps, *reaps_tail; /* layers whose files to remove, oldest first;
					  * the first leaves the list once its files are
					  * gone (the reaper's) */
	_Atomic int64_t reap_stop_at;    /* tsr_mono_ms past which the reaper drops the
					  * reaps that may stay (set by spare_stop; 0 none) */
	struct drop *drops;   /* spares to throw away, any order */
	unsigned drops_left;  /* queued drops not yet done (spare_forget waits for 0) */
	struct commit *commits, *commits_tail; /* queued row finishes, oldest first; an
						* entry leaves the list once committed */
	struct cut_failed *failed;
};

/* Tests: while non-zero the thread waits before it makes a queued row final
 * (a commit held back while writes go through the reopened gate). */
_Atomic int store_test_commit_hold;

/*
 * How long a spare outlives its volume's close.  Clients open a volume more
 * than once in a row: fio's nbd engine connects to learn the size, closes,
 * and connects again for the job (about 0.1 s later); nbdinfo and qemu ask
 * NBD_OPT_INFO before NBD_OPT_GO.  Each open asks for a spare and each close
 * let it go, so every such client made two layers and threw the first away
 * (fsyncs, a catalogue commit, a removal).  Now a close leaves the parked
 * spare for SPARE_LINGER_MS and the next open finds it; the thread drops it
 * after that.  It is a parked spare like any other (files, pending row): a
 * crash removes it at the next open, a volume delete and store close at once.
 */
#define SPARE_LINGER_MS 5000
/* Tests: >= 0 replaces SPARE_LINGER_MS for the spares let go from now on. */
_Atomic int store_test_spare_linger_ms = -1;
/* Tests: layers spare_make made (files, row, mapping), kept or not. */
_Atomic unsigned store_test_spares_built;
/* Tests: while non-zero the thread waits before it makes a queued spare, and
 * says so in store_test_make_held. */
_Atomic int store_test_make_hold;
_Atomic int store_test_make_held;

/* Tests: while non-zero the reaper waits before it removes a layer's files. */
_Atomic int store_test_reap_hold;
/* Tests: removals queued and not finished when the spare thread last parked a
 * spare. */
_Atomic unsigned store_test_reaps_left_at_made;

/*
 * How long a store close lets the reaper go on with the removals that may
 * stay (struct reap.may_stay: a volume delete's files of many extents, large
 * files found at open).  Those go in pieces (remove.c), each ~0.1 s on a
 * quiet test machine and ~1 s at load 14; past this the reaper stops before
 * the next piece and drops the rest of them from its queue, logged, for the
 * next open to remove (files without a row).  A deleted layer's removal
 * (spare_reap) is finished by the close, as it always was: a clean stop after
 * snapshot deletes leaves no file of theirs (test-snapshot-history and
 * test-snapshot-crash count them), and it is one layer's unlink, not a whole
 * volume's.
 */
#define REAP_CLOSE_MS 2000
/* Tests: >= 0 replaces REAP_CLOSE_MS. */
_Atomic int store_test_reap_close_ms = -1;

/* The reaper's stop test between two pieces of a removal that may stay. */
static bool reap_stop(void *arg)
{
	struct spare_set *ss = arg;
	int64_t at = atomic_load(&ss->reap_stop_at);

	return at != 0 && tsr_mono_ms() >= at;
}

/* Remove r's files (reaper, no lock held): a layer's whole, as before; one
 * that may stay in pieces, stopped by a close's time. */
static void reap_one(struct tsr_store *store, struct spare_set *ss, const struct reap *r)
{
	int64_t t0 = tsr_mono_us();
	unsigned cuts = atomic_load(&store_test_remove_cuts);
	int ret;

	if (!r->may_stay) {
		layer_remove_files(store, r->uuid, r->size);
		store_fsync_voldir(store);
		tsr_info("snapshot: layer %s: files removed in %.1f ms", r->uuid,
			 (double)(tsr_mono_us() - t0) / 1e3);
		return;
	}
	ret = store_remove_pieces(store, r->uuid, r->size, reap_stop, ss);
	store_fsync_voldir(store);
	cuts = atomic_load(&store_test_remove_cuts) - cuts;
	if (ret == -EINTR)
		tsr_warn("close: the removal of the files of %s stopped after %.1f ms (%u "
			 "pieces); the next start removes the rest",
			 r->uuid, (double)(tsr_mono_us() - t0) / 1e3, cuts);
	else
		tsr_info("delete: %s: files removed in %.1f ms (%u pieces cut first)", r->uuid,
			 (double)(tsr_mono_us() - t0) / 1e3, cuts);
}

/*
 * The reaper: removes the files of the oldest queued reap, syncs volumes/,
 * then takes the next, until stopping with the queue empty.  Once a close's
 * time is over (reap_stop) the reaps that may stay are dropped from the
 * queue instead (logged; files without a row: the next open removes them).
 * It holds no lock while it removes files, and the spare thread never waits
 * for it.
 */
static void *reaper_main(void *arg)
{
	struct tsr_store *store = arg;
	struct spare_set *ss = store->spares;

	tsr_log_set_thread_name("reap");
	pthread_mutex_lock(&ss->lock);
	for (;;) {
		struct reap *r = ss->reaps;

		if (r == NULL) {
			if (ss->stopping)
				break;
			pthread_cond_wait(&ss->cond, &ss->lock);
			continue;
		}
		if (r->may_stay && reap_stop(ss)) {
			tsr_warn("close: the files of %s are left for the next start to remove",
				 r->uuid);
		} else {
			pthread_mutex_unlock(&ss->lock);
			/* a close's time over ends a test's hold (store_remove_ut) */
			while (atomic_load(&store_test_reap_hold) && !reap_stop(ss))
				usleep(1000);
			store_crash_point();
			reap_one(store, ss, r);
			pthread_mutex_lock(&ss->lock);
		}
		ss->reaps = r->next;
		if (ss->reaps == NULL)
			ss->reaps_tail = NULL;
		free(r);
		pthread_cond_broadcast(&ss->cond);
	}
	pthread_mutex_unlock(&ss->lock);
	return NULL;
}

/* A spare's mapping, pending row and files (thread, or spare_stop after the
 * join: ss->db is the thread's). */
static void spare_discard(struct tsr_store *store, struct layer *l, const char *uuid,
			  uint64_t size)
{
	layer_close(l);
	catalog_snap_delete(store->spares->db, uuid);
	layer_remove_files(store, uuid, size);
}

/* Queue a spare for the thread to throw away (ss->lock held). */
static void drop_queue(struct spare_set *ss, struct layer *l, const char *uuid, uint64_t size)
{
	struct drop *d = calloc(1, sizeof(*d));

	if (d == NULL) { /* its row stays pending: the next open finishes it */
		tsr_error("snapshot: spare layer %s: out of memory; its files stay until the "
			  "next open",
			  uuid);
		layer_close(l);
		return;
	}
	snprintf(d->uuid, sizeof(d->uuid), "%s", uuid);
	d->size = size;
	d->layer = l;
	d->next = ss->drops;
	ss->drops = d;
	ss->drops_left++;
	pthread_cond_broadcast(&ss->cond);
}

/* Files, directory sync, pending row and mapping of a new layer; the row and
 * files are removed again on failure.  0 or -errno (logged).  Thread only. */
static int spare_make(struct tsr_store *store, const char *vol_uuid, uint64_t size,
		      char uuid[37], struct layer **out)
{
	struct spare_set *ss = store->spares;
	struct snap_row row;
	bool inserted = false;
	int ret;

	memset(&row, 0, sizeof(row));
	store_make_uuid(row.uuid);
	snprintf(row.vol_uuid, sizeof(row.vol_uuid), "%s", vol_uuid);
	row.size = size;
	row.seq = ss->next_seq;
	row.created = (int64_t)time(NULL);
	row.flags = SNAP_PENDING;
	store_crash_point();
	ret = layer_create_files(store, row.uuid, size);
	if (ret == 0) {
		store_crash_point();
		ret = store_fsync_voldir(store);
	}
	if (ret == 0) {
		store_crash_point();
		ret = catalog_snap_insert(ss->db, &row);
		inserted = ret == 0;
	}
	if (ret == 0) {
		ss->next_seq++;
		store_crash_point();
		ret = layer_open(store, &row, out);
	}
	if (ret) {
		tsr_error("snapshot: volume %s: spare layer: %s (the next create makes its "
			  "files itself)",
			  vol_uuid, strerror(-ret));
		if (inserted)
			catalog_snap_delete(ss->db, row.uuid);
		layer_remove_files(store, row.uuid, size);
		return ret;
	}
	memcpy(uuid, row.uuid, 37);
	atomic_fetch_add(&store_test_spares_built, 1);
	return 0;
}

/*
 * Checkpoint the catalogue WAL on the thread's connection (PASSIVE: it waits
 * for no reader or writer), off every reply path, just before the thread
 * commits the next spare's pending row.  With every frame copied back, that
 * commit is the first writer and starts the WAL over at its first frame
 * (SQLite's WAL restart: a new header, written and fdatasynced, then the
 * frames), so the restart's extra sync is not a row's.  The next row's
 * commit then appends after those frames, inside the file: it rewrites
 * blocks store.db-wal already has, with one fdatasync.  A checkpoint that
 * could not copy everything (a reader on an old snapshot) is harmless: the
 * commit then appends as before.  Thread only.
 */
static void wal_settle(struct spare_set *ss)
{
	int frames = -1, copied = -1;
	int rc;

	rc = sqlite3_wal_checkpoint_v2(ss->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &frames, &copied);
	if (rc != SQLITE_OK) {
		tsr_warn("catalogue: checkpoint: %s (row commits append to the WAL until the "
			 "next one)",
			 sqlite3_errmsg(ss->db));
		return;
	}
	if (frames < 0 || frames != copied)
		return;
	pthread_mutex_lock(&ss->lock);
	ss->wal_settled++;
	pthread_mutex_unlock(&ss->lock);
}

/* Make the oldest queued row final, then call its creator back (ss->lock
 * held on entry and return, dropped meanwhile). */
static void commit_run(struct tsr_store *store, struct spare_set *ss)
{
	struct commit *c = ss->commits;
	int ret;

	ss->busy = true;
	pthread_mutex_unlock(&ss->lock);
	while (atomic_load(&store_test_commit_hold))
		usleep(1000);
	store_crash_point();
	ret = catalog_snap_finalize(ss->db, &c->row);
	if (ret == 0)
		store_crash_point();
	pthread_mutex_lock(&ss->lock);
	ss->commits = c->next;
	if (ss->commits == NULL)
		ss->commits_tail = NULL;
	if (ret == 0) {
		ss->committed++;
	} else {
		struct cut_failed *f = calloc(1, sizeof(*f));

		tsr_error("snapshot: volume %s: %s (%s): the row could not be made final: %s; "
			  "the snapshot is not created (its layer goes at the next open)",
			  c->row.vol_uuid, c->row.name, c->row.uuid, strerror(-ret));
		if (f != NULL) {
			memcpy(f->uuid, c->row.uuid, sizeof(f->uuid));
			f->next = ss->failed;
			ss->failed = f;
		}
	}
	pthread_cond_broadcast(&ss->cond);
	pthread_mutex_unlock(&ss->lock);
	c->done(c->arg, ret);
	free(c);
	pthread_mutex_lock(&ss->lock);
}

/* Throw away one queued drop (ss->lock held on entry and return). */
static void drop_one(struct tsr_store *store, struct spare_set *ss)
{
	struct drop *d = ss->drops;

	ss->drops = d->next;
	ss->busy = true;
	pthread_mutex_unlock(&ss->lock);
	spare_discard(store, d->layer, d->uuid, d->size);
	free(d);
	pthread_mutex_lock(&ss->lock);
	ss->drops_left--;
	pthread_cond_broadcast(&ss->cond);
}

/* Queued reaps not finished (ss->lock held). */
static unsigned reaps_left(const struct spare_set *ss)
{
	const struct reap *r;
	unsigned n = 0;

	for (r = ss->reaps; r != NULL; r = r->next)
		n++;
	return n;
}

static struct spare *spare_find(struct spare_set *ss, const char *vol_uuid)
{
	struct spare *sp;

	for (sp = ss->list; sp != NULL; sp = sp->next)
		if (strcmp(sp->vol_uuid, vol_uuid) == 0)
			return sp;
	return NULL;
}

/* A let-go spare whose time is up (ss->lock held). */
static bool linger_over(const struct spare *sp, int64_t now)
{
	return !sp->wanted && sp->linger_end <= now;
}

/* Hand the parked spares whose linger is over to the drops; the earliest
 * deadline of those left, or -1 (ss->lock held). */
static int64_t linger_expire(struct spare_set *ss)
{
	int64_t now = tsr_mono_ms(), next = -1;
	struct spare *sp;

	for (sp = ss->list; sp != NULL; sp = sp->next) {
		if (sp->layer == NULL || sp->wanted)
			continue;
		if (linger_over(sp, now)) {
			tsr_info("snapshot: volume %s: spare layer %s dropped (the volume stayed "
				 "closed)",
				 sp->vol_uuid, sp->uuid);
			drop_queue(ss, sp->layer, sp->uuid, sp->layer_size);
			sp->layer = NULL;
		} else if (next < 0 || sp->linger_end < next) {
			next = sp->linger_end;
		}
	}
	return next;
}

/* cond wait on ss->cond until deadline (tsr_mono_ms), or for ever if -1. */
static void wait_until(struct spare_set *ss, int64_t deadline)
{
	struct timespec ts;

	if (deadline < 0) {
		pthread_cond_wait(&ss->cond, &ss->lock);
		return;
	}
	ts.tv_sec = (time_t)(deadline / 1000);
	ts.tv_nsec = (long)(deadline % 1000) * 1000000;
	pthread_cond_timedwait(&ss->cond, &ss->lock, &ts);
}

/*
 * The spare thread's loop: one piece of work per pass, in this order,
 * looking at the queues again after each:
 *  1. a queued row (commit_run): a creator waits for its reply;
 *  2. a queued spare (spare_make): the next cut of that volume waits for it
 *     (a cut that finds none makes its files in the gate);
 *  3. one drop (a spare nobody will cut): its pending row and files.
 * With nothing to do it hands the let-go spares whose linger is over to the
 * drops, and sleeps until the next one's is.
 * Removals of deleted layers' files are the reaper's (reaper_main).
 * Stopping: rows and drops are finished, no spare is made.
 */
static void *spare_main(void *arg)
{
	struct tsr_store *store = arg;
	struct spare_set *ss = store->spares;

	tsr_log_set_thread_name("spare");
	pthread_mutex_lock(&ss->lock);
	while (!ss->stopping || ss->commits != NULL || ss->drops != NULL) {
		char vol_uuid[37], uuid[37];
		struct layer *l = NULL;
		struct spare *sp = NULL;
		uint64_t size;
		int ret;

		if (ss->commits != NULL) { /* first: a creator waits for it */
			commit_run(store, ss);
			continue;
		}
		if (!ss->stopping)
			for (sp = ss->list; sp != NULL && !sp->queued; sp = sp->next)
				;
		if (sp == NULL && ss->drops != NULL) {
			drop_one(store, ss);
			continue;
		}
		if (ss->stopping)
			break;
		if (sp == NULL) {
			int64_t next = linger_expire(ss);

			if (ss->drops != NULL)
				continue;
			ss->busy = false;
			pthread_cond_broadcast(&ss->cond);
			wait_until(ss, next);
			continue;
		}
		ss->busy = true;
		sp->queued = false;
		sp->making = true; /* spare_request queues no second one meanwhile */
		memcpy(vol_uuid, sp->vol_uuid, sizeof(vol_uuid));
		size = sp->size;
		pthread_mutex_unlock(&ss->lock);
		wal_settle(ss); /* the pending row's commit restarts the WAL, not a cut's */
		while (atomic_load(&store_test_make_hold)) {
			atomic_store(&store_test_make_held, 1);
			usleep(1000);
		}
		atomic_store(&store_test_make_held, 0);
		ret = spare_make(store, vol_uuid, size, uuid, &l);
		pthread_mutex_lock(&ss->lock);
		sp = spare_find(ss, vol_uuid); /* entries live until spare_stop */
		sp->making = false;
		if (ret)
			continue;
		/* let go meanwhile: parked all the same until its linger is over */
		if (ss->stopping || linger_over(sp, tsr_mono_ms()) || sp->layer != NULL ||
		    sp->size != size) {
			pthread_mutex_unlock(&ss->lock);
			spare_discard(store, l, uuid, size);
			pthread_mutex_lock(&ss->lock);
			pthread_cond_broadcast(&ss->cond);
			continue;
		}
		sp->layer = l;
		sp->layer_size = size;
		memcpy(sp->uuid, uuid, sizeof(sp->uuid));
		ss->made++;
		atomic_store(&store_test_reaps_left_at_made, reaps_left(ss));
	}
	ss->busy = false;
	pthread_cond_broadcast(&ss->cond);
	pthread_mutex_unlock(&ss->lock);
	return NULL;
}

/* Highest seq of the pending rows left (a failed open-time finish), so that
 * new pending rows sort above them. */
static uint64_t pending_seq_start(sqlite3 *db)
{
	uint64_t seq = SNAP_PENDING_SEQ;
	struct snap_row *rows;
	size_t n, i;

	if (catalog_snap_list(db, NULL, &rows, &n) == 0) {
		for (i = 0; i < n; i++)
			if ((rows[i].flags & SNAP_PENDING) && rows[i].seq >= seq)
				seq = rows[i].seq + 1;
		free(rows);
	}
	return seq;
}

/* The store's spare set, started on first use (store->lock held). */
static int spare_set_get(struct tsr_store *store, struct spare_set **out)
{
	struct spare_set *ss = store->spares;
	pthread_condattr_t ca;
	int ret;

	if (ss == NULL) {
		ss = calloc(1, sizeof(*ss));
		if (ss == NULL)
			return -ENOMEM;
		ret = catalog_open(store->dir, store->device, &ss->db);
		if (ret) {
			free(ss);
			return ret;
		}
		/* checkpoints are the thread's, never inside a row's commit */
		sqlite3_wal_autocheckpoint(ss->db, 0);
		ss->next_seq = pending_seq_start(ss->db);
		pthread_mutex_init(&ss->lock, NULL);
		pthread_condattr_init(&ca); /* wait_until's deadlines are tsr_mono_ms */
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&ss->cond, &ca);
		pthread_condattr_destroy(&ca);
		store->spares = ss;
		if (pthread_create(&ss->thread, NULL, spare_main, store) != 0) {
			ret = -EAGAIN;
		} else if (pthread_create(&ss->reaper, NULL, reaper_main, store) != 0) {
			pthread_mutex_lock(&ss->lock);
			ss->stopping = true;
			pthread_cond_broadcast(&ss->cond);
			pthread_mutex_unlock(&ss->lock);
			pthread_join(ss->thread, NULL);
			ret = -EAGAIN;
		}
		if (ret) {
			store->spares = NULL;
			pthread_cond_destroy(&ss->cond);
			pthread_mutex_destroy(&ss->lock);
			catalog_close(ss->db);
			free(ss);
			return ret;
		}
	}
	*out = ss;
	return 0;
}

void spare_request(struct tsr_store *store, const char *vol_uuid, uint64_t size)
{
	struct spare_set *ss = store->spares;
	struct spare *sp;

	if (ss == NULL)
		return;
	pthread_mutex_lock(&ss->lock);
	sp = spare_find(ss, vol_uuid);
	if (sp != NULL && sp->wanted && sp->layer != NULL && sp->layer_size != size) {
		/* parked before the volume grew (while it was closed): useless */
		drop_queue(ss, sp->layer, sp->uuid, sp->layer_size);
		sp->layer = NULL;
	}
	/* one at a time: the one being made is parked if it is still of use */
	if (sp != NULL && sp->wanted && sp->layer == NULL && !(sp->making && sp->size == size)) {
		sp->size = size;
		sp->queued = true;
		pthread_cond_broadcast(&ss->cond);
	}
	pthread_mutex_unlock(&ss->lock);
}

struct layer *spare_take(struct tsr_store *store, const char *vol_uuid, uint64_t size,
			 char uuid_out[37])
{
	struct spare_set *ss = store->spares;
	struct layer *l = NULL;
	struct spare *sp;
	char uuid[37];
	uint64_t made;

	if (ss == NULL)
		return NULL;
	pthread_mutex_lock(&ss->lock);
	sp = spare_find(ss, vol_uuid);
	if (sp != NULL && sp->layer != NULL) {
		l = sp->layer;
		made = sp->layer_size;
		memcpy(uuid, sp->uuid, sizeof(uuid));
		sp->layer = NULL;
	}
	pthread_mutex_unlock(&ss->lock);
	if (l == NULL)
		return NULL;
	if (made != size) { /* the volume grew since: useless */
		pthread_mutex_lock(&ss->lock);
		drop_queue(ss, l, uuid, made);
		pthread_mutex_unlock(&ss->lock);
		return NULL;
	}
	memcpy(uuid_out, uuid, 37);
	return l;
}

/* How long a closed volume's spare stays parked: SPARE_LINGER_MS, or for
 * tests store_test_spare_linger_ms (unit tests) or TSR_TEST_SPARE_LINGER_MS
 * (0..SPARE_LINGER_MS: test-fd-limit waits for closed volumes' descriptors
 * to go). */
static int spare_linger_ms(void)
{
	int ms = atomic_load(&store_test_spare_linger_ms);
	const char *env;
	char *end;
	long v;

	if (ms >= 0)
		return ms;
	env = getenv("TSR_TEST_SPARE_LINGER_MS");
	if (env != NULL && env[0] != '\0') {
		v = strtol(env, &end, 10);
		if (*end == '\0' && v >= 0 && v <= SPARE_LINGER_MS)
			return (int)v;
	}
	return SPARE_LINGER_MS;
}

/* Let vol_uuid's spare go.  linger: the volume closed; its spare stays parked
 * for spare_linger_ms() (a reopen takes it), then the thread drops it.  Else
 * (deleted) it is queued for the thread now and we wait until every queued
 * drop is done. */
static void spare_let_go(struct tsr_store *store, const char *vol_uuid, bool linger)
{
	struct spare_set *ss = store->spares;
	int linger_ms = spare_linger_ms();
	struct spare *sp;

	if (ss == NULL)
		return;
	pthread_mutex_lock(&ss->lock);
	sp = spare_find(ss, vol_uuid);
	if (sp != NULL) {
		sp->wanted = false;
		sp->queued = false;
		sp->linger_end = linger ? tsr_mono_ms() + linger_ms : 0;
		if (sp->layer != NULL && !linger) {
			drop_queue(ss, sp->layer, sp->uuid, sp->layer_size);
			sp->layer = NULL;
		}
		pthread_cond_broadcast(&ss->cond); /* the thread's next deadline */
	}
	while (!linger && ss->drops_left > 0)
		pthread_cond_wait(&ss->cond, &ss->lock);
	pthread_mutex_unlock(&ss->lock);
}

void spare_forget(struct tsr_store *store, const char *vol_uuid)
{
	spare_let_go(store, vol_uuid, false);
}

int spare_commit(struct tsr_store *store, const struct snap_row *row, tsr_cb done, void *arg)
{
	struct spare_set *ss = store->spares;
	struct commit *c;

	if (ss == NULL)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	c->row = *row;
	c->done = done;
	c->arg = arg;
	pthread_mutex_lock(&ss->lock);
	if (ss->commits_tail != NULL)
		ss->commits_tail->next = c;
	else
		ss->commits = c;
	ss->commits_tail = c;
	pthread_cond_broadcast(&ss->cond);
	pthread_mutex_unlock(&ss->lock);
	return 0;
}

bool spare_inflight(struct tsr_store *store, const char *vol_uuid, const char *name,
		    uint64_t *seq)
{
	struct spare_set *ss = store->spares;
	struct commit *c;
	bool found = false;

	if (ss == NULL)
		return false;
	pthread_mutex_lock(&ss->lock);
	for (c = ss->commits; c != NULL; c = c->next) {
		if (strcmp(c->row.vol_uuid, vol_uuid) != 0)
			continue;
		if (name[0] && strcmp(c->row.name, name) == 0)
			found = true;
		if (c->row.seq > *seq)
			*seq = c->row.seq;
	}
	pthread_mutex_unlock(&ss->lock);
	return found;
}

void spare_commits_wait(struct tsr_store *store, const char *vol_uuid)
{
	struct spare_set *ss = store->spares;
	struct commit *c;

	if (ss == NULL)
		return;
	pthread_mutex_lock(&ss->lock);
	for (;;) {
		for (c = ss->commits; c != NULL; c = c->next)
			if (strcmp(c->row.vol_uuid, vol_uuid) == 0)
				break;
		if (c == NULL)
			break;
		pthread_cond_wait(&ss->cond, &ss->lock);
	}
	pthread_mutex_unlock(&ss->lock);
}

bool spare_is_cut(struct tsr_store *store, const char *uuid)
{
	struct spare_set *ss = store->spares;
	struct cut_failed *f;
	struct commit *c;
	bool cut = false;

	if (ss == NULL)
		return false;
	pthread_mutex_lock(&ss->lock);
	for (c = ss->commits; c != NULL && !cut; c = c->next)
		cut = strcmp(c->row.uuid, uuid) == 0;
	for (f = ss->failed; f != NULL && !cut; f = f->next)
		cut = strcmp(f->uuid, uuid) == 0;
	pthread_mutex_unlock(&ss->lock);
	return cut;
}

void spare_stop(struct tsr_store *store)
{
	struct spare_set *ss = store->spares;
	struct cut_failed *f;
	struct spare *sp;
	int close_ms;

	if (ss == NULL)
		return;
	pthread_mutex_lock(&ss->lock);
	ss->stopping = true; /* the threads finish the queued commits, drops and reaps */
	close_ms = atomic_load(&store_test_reap_close_ms);
	atomic_store(&ss->reap_stop_at, tsr_mono_ms() + (close_ms >= 0 ? close_ms : REAP_CLOSE_MS));
	pthread_cond_broadcast(&ss->cond);
	pthread_mutex_unlock(&ss->lock);
	pthread_join(ss->thread, NULL);
	pthread_join(ss->reaper, NULL); /* its queue is empty now */
	while ((sp = ss->list) != NULL) {
		ss->list = sp->next;
		if (sp->layer != NULL)
			spare_discard(store, sp->layer, sp->uuid, sp->layer_size);
		free(sp);
	}
	while ((f = ss->failed) != NULL) {
		ss->failed = f->next;
		free(f);
	}
	catalog_close(ss->db);
	pthread_cond_destroy(&ss->cond);
	pthread_mutex_destroy(&ss->lock);
	free(ss);
	store->spares = NULL;
}

/* Queue a reap on ss: true, or false (no memory). */
static bool reap_queue(struct spare_set *ss, const char *uuid, uint64_t size, bool may_stay)
{
	struct reap *r;

	if (ss == NULL || (r = calloc(1, sizeof(*r))) == NULL)
		return false;
	snprintf(r->uuid, sizeof(r->uuid), "%s", uuid);
	r->size = size;
	r->may_stay = may_stay;
	pthread_mutex_lock(&ss->lock);
	if (ss->reaps_tail != NULL)
		ss->reaps_tail->next = r;
	else
		ss->reaps = r;
	ss->reaps_tail = r;
	pthread_cond_broadcast(&ss->cond);
	pthread_mutex_unlock(&ss->lock);
	return true;
}

bool spare_reap(struct tsr_store *store, const char *uuid, uint64_t size)
{
	return reap_queue(store->spares, uuid, size, false);
}

int spare_reap_start(struct tsr_store *store, const char *uuid, uint64_t size, bool may_stay)
{
	struct spare_set *ss;
	int ret = spare_set_get(store, &ss);

	if (ret)
		return ret;
	return reap_queue(ss, uuid, size, may_stay) ? 0 : -ENOMEM;
}

unsigned store_test_spares_made(struct tsr_store *store)
{
	struct spare_set *ss = store->spares;
	unsigned made;

	if (ss == NULL)
		return 0;
	pthread_mutex_lock(&ss->lock);
	made = ss->made;
	pthread_mutex_unlock(&ss->lock);
	return made;
}

unsigned store_test_wal_settled(struct tsr_store *store)
{
	struct spare_set *ss = store->spares;
	unsigned n;

	if (ss == NULL)
		return 0;
	pthread_mutex_lock(&ss->lock);
	n = ss->wal_settled;
	pthread_mutex_unlock(&ss->lock);
	return n;
}

unsigned store_test_spares_idle(struct tsr_store *store)
{
	struct spare_set *ss = store->spares;
	unsigned made;

	if (ss == NULL)
		return 0;
	pthread_mutex_lock(&ss->lock);
	for (;;) {
		int64_t now = tsr_mono_ms();
		struct spare *sp;

		/* nothing queued, and no let-go spare due for its drop */
		for (sp = ss->list;
		     sp != NULL && !sp->queued && !(sp->layer != NULL && linger_over(sp, now));
		     sp = sp->next)
			;
		if (sp == NULL && !ss->busy && ss->reaps == NULL && ss->commits == NULL &&
		    ss->drops == NULL)
			break;
		pthread_cond_wait(&ss->cond, &ss->lock);
	}
	made = ss->made;
	pthread_mutex_unlock(&ss->lock);
	return made;
}

int tsr_store_snap_spare(struct tsr_store *store, const char *vol, bool keep)
{
	struct spare_set *ss = NULL;
	struct spare *sp;
	struct vol_row v;
	int ret;

	if (store->dev_fd >= 0)
		return -EOPNOTSUPP;
	if (vol == NULL || !tsr_valid_name(vol))
		return -ENOENT;
	pthread_mutex_lock(&store->lock);
	ret = catalog_get(store->db, vol, &v);
	if (ret == 0 && keep)
		ret = store_rollback_busy(store, &v, "spare");
	if (ret == 0 && !keep)
		spare_let_go(store, v.uuid, true); /* the thread drops it later: no wait */
	if (ret == 0 && keep)
		ret = spare_set_get(store, &ss);
	if (ret || !keep)
		goto out;
	pthread_mutex_lock(&ss->lock);
	sp = spare_find(ss, v.uuid);
	if (sp == NULL && (sp = calloc(1, sizeof(*sp))) != NULL) {
		memcpy(sp->vol_uuid, v.uuid, sizeof(sp->vol_uuid));
		sp->next = ss->list;
		ss->list = sp;
	}
	if (sp != NULL) {
		sp->wanted = true; /* a spare parked at a close within its linger is ours */
		sp->linger_end = 0;
	}
	pthread_mutex_unlock(&ss->lock);
	if (sp == NULL)
		ret = -ENOMEM;
	else
		spare_request(store, v.uuid, v.size);
out:
	pthread_mutex_unlock(&store->lock);
	return ret;
}
