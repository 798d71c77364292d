/*
 * Snapshots, clones, diffs and rollback of the local store: the control
 * functions of the store.h snapshot section, the chain of layers of an open
 * volume, and the crash rules of snapshot create and delete.
 *
 * Create (O(1) in the volume size): make and fsync the layer's files
 * (layer.c), fsync the directory, open the layer when the volume is open,
 * commit its row, then publish the new chain: writes from then on copy into
 * it (cow.c).  A crash before the commit leaves files without a row, removed
 * at the next open; after it, the snapshot is whole.  A volume that keeps a
 * spare (spare.c, tsr_store_snap_spare: the local layout's volumes) has the
 * first three steps done ahead by the store's thread, so a create inside the
 * layout's gate is the name check, the row's commit and the publish; the
 * spare's files have no row until that commit, so the crash rule is the same.
 *
 * Delete of Si: with clones made from it, it is only marked hidden (its name
 * is free; it goes when its last clone does).  Otherwise the row is marked
 * deleting (committed), then, unless it is the oldest layer, every block it
 * holds that its older neighbour Si-1 lacks is copied there (data and entry,
 * fdatasync, then the bits, fdatasync: Si-1's image never changes), then the
 * row is deleted and the files removed.  Each step is idempotent, and
 * snap_recover finishes a delete the next open finds marked.
 *
 * Volume delete: with no clone depending on any of its layers, its snapshot
 * rows and its row go in one transaction, then the files.  Otherwise, in one
 * transaction, the row is renamed ".h-<uuid>" and hidden, the layers clones
 * depend on hidden and the others marked deleting; the deletes are then
 * finished as above.  A hidden volume goes with its last dependent clone
 * (gc_volume), which may in turn free the layer it was cloned from.
 *
 * Layers of an open volume: svol->chain, an array replaced whole under
 * store->lock; retired arrays and deleted layers stay mapped until the svol
 * is freed when a reader may still hold them (read-only handles, clones).
 * The write path looks at the chain without the lock (chain_enter, cow.c):
 * a dropped layer is closed only once no such look is running (chain_quiet).
 *
 * Every function here holds store->lock for its whole run, except the
 * rollback's data copy (tsr_store_vol_rollback: h->rollback_running).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/internal.h"
#include "tessera/test_hook.h"

int store_test_crash_at;

/* Tests: the process ends at the store_test_crash_at-th point reached.  The
 * points of the spare thread and the reaper count too, so the count is
 * taken atomically: each decrement once, one thread ends it. */
void store_crash_point(void)
{
	if (__atomic_load_n(&store_test_crash_at, __ATOMIC_ACQUIRE) > 0 &&
	    __atomic_sub_fetch(&store_test_crash_at, 1, __ATOMIC_ACQ_REL) == 0)
		_exit(99);
}

static bool visible(const struct snap_row *s)
{
	return !(s->flags & (SNAP_HIDDEN | SNAP_DELETING | SNAP_AUTO | SNAP_PENDING));
}

/* A user's snapshot whose delete is accepted (marked) and not finished. */
static bool delete_pending(const struct snap_row *s)
{
	return (s->flags & (SNAP_HIDDEN | SNAP_DELETING | SNAP_AUTO | SNAP_PENDING)) ==
	       SNAP_DELETING;
}

/* ---- the chain of an open volume (store->lock held) ---- */

/* Wait (up to CHAIN_QUIET_MAX_US) until no write path looks at svol's chain
 * lock-free (chain_enter): a layer dropped from the chain published before
 * can then be closed.  false: still looked at; keep the layer until the
 * svol is freed. */
#define CHAIN_QUIET_MAX_US 1000000
static bool chain_quiet(struct tsr_svol *svol)
{
	const struct timespec pause = {.tv_nsec = 50000};
	int64_t deadline = tsr_mono_us() + CHAIN_QUIET_MAX_US;

	while (atomic_load_explicit(&svol->chain_users, memory_order_seq_cst) != 0) {
		if (tsr_mono_us() > deadline)
			return false;
		nanosleep(&pause, NULL);
	}
	return true;
}

static int chain_publish(struct tsr_svol *svol, struct layer *add, struct layer *drop)
{
	struct layer_chain *old = chain_load(svol), *c;
	unsigned n = old ? old->n : 0, i, k = 0;

	c = calloc(1, sizeof(*c) + sizeof(c->l[0]) * (n + 1));
	if (c == NULL)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		if (old->l[i] != drop)
			c->l[k++] = old->l[i];
	if (add)
		c->l[k++] = add;
	c->n = k;
	atomic_store_explicit(&svol->chain, c, memory_order_seq_cst);
	if (old) {
		old->next_retired = svol->retired_chains;
		svol->retired_chains = old;
	}
	if (drop) {
		/* nobody reads through layers (a running rollback reads the
		 * chain it loaded without chain_enter), and no write path still
		 * looks at the old chain (a write's copy-on-write check reads the bits
		 * of every layer in it: closing drop under it was a SIGSEGV):
		 * free the space now */
		if (svol->child_refs == 0 && svol->ro_handles == 0 && !svol->rollback_running &&
		    chain_quiet(svol)) {
			layer_close(drop);
		} else {
			drop->next_retired = svol->retired_layers;
			svol->retired_layers = drop;
		}
	}
	return 0;
}

static struct layer *chain_find(struct tsr_svol *svol, const char *uuid)
{
	struct layer_chain *c = chain_load(svol);
	unsigned i;

	for (i = 0; c && i < c->n; i++)
		if (strcmp(c->l[i]->uuid, uuid) == 0)
			return c->l[i];
	return NULL;
}

int snap_attach(struct tsr_svol *svol, const struct vol_row *row)
{
	struct tsr_store *store = svol->store;
	struct snap_row *rows = NULL, prow;
	char path[PATH_MAX];
	struct layer *l;
	size_t n, i;
	int ret;

	if (row->dev_offset >= 0)
		return 0;
	ret = catalog_snap_list(store->db, row->uuid, &rows, &n);
	if (ret)
		return ret;
	for (i = 0; i < n; i++) {
		/* a spare's row (spare.c): in the chain only once cut */
		if ((rows[i].flags & SNAP_PENDING) && !spare_is_cut(store, rows[i].uuid))
			continue;
		ret = layer_open(store, &rows[i], &l);
		if (ret == 0) {
			/* an interrupted delete: no copy on write goes there */
			atomic_store(&l->deleting, (rows[i].flags & SNAP_DELETING) != 0);
			ret = chain_publish(svol, l, NULL);
		}
		if (ret)
			goto out;
	}
	if (row->parent[0]) {
		struct tsr_svol *p;

		ret = catalog_snap_get(store->db, row->parent, &prow);
		if (ret == 0)
			ret = store_svol_get_uuid(store, prow.vol_uuid, &p);
		if (ret) {
			tsr_error("open: clone %s: its source layer %s is missing: %s", row->name,
				  row->parent, strerror(-ret));
			ret = -EIO;
			goto out;
		}
		svol->parent = p;
		p->child_refs++;
		svol->parent_layer = chain_find(p, row->parent);
		store_meta_path(store, row->uuid, "present", path);
		ret = svol->parent_layer ? own_bits_open(&svol->own, path, row->size) : -EIO;
		if (ret)
			goto out;
		svol->is_clone = true;
	}
out:
	free(rows);
	return ret;
}

void snap_detach(struct tsr_svol *svol)
{
	struct layer_chain *c = chain_load(svol), *r;
	struct layer *l;
	unsigned i;

	for (i = 0; c && i < c->n; i++)
		layer_close(c->l[i]);
	free(c);
	atomic_store(&svol->chain, NULL);
	while ((r = svol->retired_chains)) {
		svol->retired_chains = r->next_retired;
		free(r);
	}
	while ((l = svol->retired_layers)) {
		svol->retired_layers = l->next_retired;
		layer_close(l);
	}
	if (svol->parent) {
		svol->parent->child_refs--;
		store_svol_unref(svol->parent);
		svol->parent = NULL;
		svol->parent_layer = NULL;
	}
	svol->is_clone = false;
}

/* ---- lookups (store->lock held) ---- */

static int get_vol(struct tsr_store *store, const char *op, const char *name, struct vol_row *row)
{
	int ret;

	if (store->dev_fd >= 0) {
		tsr_error("%s: volume %s: snapshots and clones need a data directory store (not "
			  "--device)",
			  op, name ? name : "");
		return -EOPNOTSUPP;
	}
	if (name == NULL || !tsr_valid_name(name))
		return -ENOENT;
	ret = catalog_get(store->db, name, row);
	if (ret == -ENOENT)
		tsr_error("%s: no volume %s", op, name);
	return ret;
}

/* get_vol, then -EBUSY while a rollback of that volume runs (the calls that
 * would change the volume, its chain or its epoch, or open it). */
static int get_vol_idle(struct tsr_store *store, const char *op, const char *name,
			struct vol_row *row)
{
	int ret = get_vol(store, op, name, row);

	return ret ? ret : store_rollback_busy(store, row, op);
}

/*
 * Visible snapshot name of volume v.  A missing one is logged at missing_level:
 * ERROR where the caller asked for a snapshot it expects (delete, clone, diff,
 * rollback); DEBUG for tsr_store_snap_open, whose callers ask whether a copy
 * holds a name (an ec export's probe of every chunk copy, a mirror's scrub or
 * make-up) and take -ENOENT as an answer, and log it themselves where it is
 * the user's error.
 */
static int get_snap(struct tsr_store *store, const char *op, const struct vol_row *v,
		    const char *name, struct snap_row *out, enum tsr_log_level missing_level)
{
	struct snap_row *rows;
	size_t n, i;
	int ret;

	if (name == NULL || !tsr_valid_name(name)) {
		tsr_log(missing_level, "%s: volume %s has no snapshot %s", op, v->name,
			name ? name : "(null)");
		return -ENOENT;
	}
	ret = catalog_snap_list(store->db, v->uuid, &rows, &n);
	if (ret)
		return ret;
	ret = -ENOENT;
	for (i = 0; i < n; i++) {
		if (visible(&rows[i]) && strcmp(rows[i].name, name) == 0) {
			*out = rows[i];
			ret = 0;
			break;
		}
	}
	free(rows);
	if (ret)
		tsr_log(missing_level, "%s: volume %s has no snapshot %s", op, v->name, name);
	return ret;
}

static bool writes_in_flight(struct tsr_svol *svol)
{
	return svol && atomic_load(&svol->writes_started) != atomic_load(&svol->writes_done);
}

/* ---- create ---- */

/*
 * Cut a layer of volume v now: files (or the volume's spare, for a named
 * snapshot: *used_spare set), row (in the caller's transaction when it has
 * one), and, when v is open, the layer opened in *lout (published by the
 * caller after the commit).  defer, with a spare taken: no catalogue write at
 * all (the spare's pending row is made final later by spare_commit, which the
 * caller queues); the cut's name and seq are checked against the creates
 * still queued there too.  Every catalogue write here first waits for the
 * rows of v still queued (their seqs are lower and must be final first).
 */
static int snap_cut(struct tsr_store *store, const struct vol_row *v, const char *name,
		    uint32_t flags, uint64_t size, struct snap_row *out, struct layer **lout,
		    bool *used_spare, bool defer)
{
	struct tsr_svol *svol = store_find_open_uuid(store, v->uuid);
	struct layer *spare;
	struct snap_row *rows, row;
	size_t n, i;
	int ret;

	*lout = NULL;
	if (writes_in_flight(svol)) {
		tsr_error("snapshot: volume %s has writes in flight; quiesce it first", v->name);
		return -EBUSY;
	}
	ret = catalog_snap_list(store->db, v->uuid, &rows, &n);
	if (ret)
		return ret;
	memset(&row, 0, sizeof(row));
	for (i = 0; i < n; i++) {
		if (name[0] && visible(&rows[i]) && strcmp(rows[i].name, name) == 0)
			ret = -EEXIST;
		if (!(rows[i].flags & SNAP_PENDING) && rows[i].seq >= row.seq)
			row.seq = rows[i].seq;
	}
	free(rows);
	if (spare_inflight(store, v->uuid, name, &row.seq)) /* cut, row not final yet */
		ret = -EEXIST;
	if (ret) {
		tsr_error("snapshot: volume %s already has a snapshot %s", v->name, name);
		return ret;
	}
	snprintf(row.vol_uuid, sizeof(row.vol_uuid), "%s", v->uuid);
	snprintf(row.name, sizeof(row.name), "%s", name);
	row.seq++;
	row.created = (int64_t)time(NULL);
	/* size: a make-up's cut of a snapshot cut before the volume grew (its
	 * size then; the layer holds nothing past it, as the other copies' layer
	 * of that snapshot, cut before the grow, does not) */
	row.size = size != 0 ? size : v->size;
	row.flags = flags;
	/* a layer made ahead (spare.c): its files are durable, its row pending */
	spare = flags == 0 && row.size == v->size ? spare_take(store, v->uuid, v->size, row.uuid)
						  : NULL;
	if (spare != NULL) {
		spare->seq = row.seq;
		if (used_spare)
			*used_spare = true;
		store_crash_point();
		if (!defer) {
			spare_commits_wait(store, v->uuid);
			ret = catalog_snap_finalize(store->db, &row);
			if (ret) {
				/* the row stays pending and the layer uncut: the
				 * next open removes both */
				layer_close(spare);
				return ret;
			}
		}
		if (svol)
			*lout = spare;
		else
			layer_close(spare);
		*out = row;
		return 0;
	}
	store_make_uuid(row.uuid);
	store_crash_point();
	ret = layer_create_files(store, row.uuid, row.size);
	if (ret)
		goto err;
	store_crash_point();
	ret = store_fsync_voldir(store);
	if (ret)
		goto err;
	store_crash_point();
	if (svol) {
		ret = layer_open(store, &row, lout);
		if (ret)
			goto err;
	}
	spare_commits_wait(store, v->uuid);
	ret = catalog_snap_insert(store->db, &row);
	if (ret)
		goto err;
	*out = row;
	return 0;
err:
	layer_close(*lout);
	*lout = NULL;
	layer_remove_files(store, row.uuid, row.size);
	return ret;
}

static void fill_info(struct tsr_store *store, const struct snap_row *row,
		      const struct snap_row *older, struct tsr_snap_info *info);

static int check_snap_name(struct tsr_store *store, const char *snap)
{
	if (snap == NULL || !tsr_valid_name(snap)) {
		tsr_error("snapshot: invalid snapshot name '%s': use 1-63 of [A-Za-z0-9._-], "
			  "starting with a letter or digit",
			  snap ? snap : "(null)");
		return store->dev_fd >= 0 ? -EOPNOTSUPP : -EINVAL;
	}
	return 0;
}

/* The epoch argument of the calls that take none: every epoch passes. */
#define ANY_EPOCH UINT64_MAX

/*
 * A peer SNAP's epoch (tsr_store_snap_create_epoch and the others), checked
 * again under store->lock against v's highest epoch as the catalogue holds
 * it: tsr_store_vol_set_epoch raises it under the same lock, so a newer
 * coordinator's OPEN is either after the call or refuses it.  0 or -ESTALE.
 */
static int check_epoch(const char *op, const struct vol_row *v, uint64_t epoch)
{
	if (epoch >= v->epoch)
		return 0;
	tsr_info("%s: volume %s: refused: epoch %llu is below the volume's %llu (a newer "
		 "coordinator opened it)",
		 op, v->name, (unsigned long long)epoch, (unsigned long long)v->epoch);
	return -ESTALE;
}

static int snap_create(struct tsr_store *store, const char *vol, const char *snap, uint64_t size,
		       uint64_t epoch, struct tsr_snap_info *info_out);

int tsr_store_snap_create(struct tsr_store *store, const char *vol, const char *snap,
			  struct tsr_snap_info *info_out)
{
	return snap_create(store, vol, snap, 0, ANY_EPOCH, info_out);
}

int tsr_store_snap_create_sized(struct tsr_store *store, const char *vol, const char *snap,
				uint64_t size, struct tsr_snap_info *info_out)
{
	return snap_create(store, vol, snap, size, ANY_EPOCH, info_out);
}

int tsr_store_snap_create_epoch(struct tsr_store *store, const char *vol, const char *snap,
				uint64_t size, uint64_t epoch)
{
	return snap_create(store, vol, snap, size, epoch, NULL);
}

static int snap_create(struct tsr_store *store, const char *vol, const char *snap, uint64_t size,
		       uint64_t epoch, struct tsr_snap_info *info_out)
{
	struct snap_row row;
	struct vol_row v;
	struct layer *l;
	bool used_spare = false;
	int ret;

	ret = check_snap_name(store, snap);
	if (ret)
		return ret;
	pthread_mutex_lock(&store->lock);
	ret = get_vol_idle(store, "snapshot", vol, &v);
	if (ret == 0)
		ret = check_epoch("snapshot", &v, epoch);
	if (ret)
		goto out;
	if (size % TSR_BLOCK_SIZE != 0 || size > v.size) {
		tsr_error("snapshot: volume %s: snapshot %s of %llu bytes: the volume has %llu; "
			  "a snapshot's size is a multiple of %u no larger than its volume's",
			  vol, snap, (unsigned long long)size, (unsigned long long)v.size,
			  TSR_BLOCK_SIZE);
		ret = -EINVAL;
		goto out;
	}
	ret = snap_cut(store, &v, snap, 0, size, &row, &l, &used_spare, false);
	/* the next create's files, made in the background (when the volume
	 * wants spares), also after a failed one that used this spare */
	spare_request(store, v.uuid, v.size);
	if (ret)
		goto out;
	store_crash_point();
	if (l) {
		struct tsr_svol *svol = store_find_open_uuid(store, v.uuid);

		ret = chain_publish(svol, l, NULL);
		if (ret) { /* committed but not in use: make it unusable rather than wrong */
			layer_close(l);
			tsr_error("snapshot: volume %s: %s: out of memory; the snapshot is "
				  "incomplete, delete it",
				  vol, snap);
			goto out;
		}
	}
	if (info_out)
		fill_info(store, &row, NULL, info_out);
	tsr_info("snapshot: volume %s: created %s (%s), seq %llu%s", vol, snap, row.uuid,
		 (unsigned long long)row.seq, used_spare ? ", on a spare layer" : "");
out:
	pthread_mutex_unlock(&store->lock);
	return ret;
}

/* A create whose row the spare thread makes final (tsr_store_snap_create_async). */
struct create_later {
	char vol[64];
	struct snap_row row;
	struct timespec cut;    /* when the cut was published */
	tsr_cb done;            /* the caller's */
	void *arg;
};

/* Tests: creates whose row was made final after the cut returned. */
_Atomic unsigned store_test_rows_after_cut;

/* On the spare thread, once the row is final (or could not be made so). */
static void create_later_done(void *arg, int status)
{
	struct create_later *cl = arg;
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (status == 0) {
		atomic_fetch_add(&store_test_rows_after_cut, 1);
		tsr_info("snapshot: volume %s: created %s (%s), seq %llu, on a spare layer; row "
			 "durable %.1f ms after the cut",
			 cl->vol, cl->row.name, cl->row.uuid, (unsigned long long)cl->row.seq,
			 (double)(now.tv_sec - cl->cut.tv_sec) * 1e3 +
			     (double)(now.tv_nsec - cl->cut.tv_nsec) / 1e6);
	}
	cl->done(cl->arg, status);
	free(cl);
}

int tsr_store_snap_create_async(struct tsr_store *store, const char *vol, const char *snap,
				tsr_cb done, void *arg)
{
	struct create_later *cl;
	struct tsr_svol *svol;
	struct snap_row row;
	struct vol_row v;
	struct layer *l;
	bool used_spare = false;
	int ret;

	ret = check_snap_name(store, snap);
	if (ret)
		return ret;
	if (done == NULL)
		return -EINVAL;
	cl = calloc(1, sizeof(*cl));
	if (cl == NULL)
		return -ENOMEM;
	memset(&v, 0, sizeof(v));
	pthread_mutex_lock(&store->lock);
	ret = get_vol_idle(store, "snapshot", vol, &v);
	if (ret)
		goto err;
	svol = store_find_open_uuid(store, v.uuid);
	/* a spare is cut only into an open volume's chain here; otherwise the
	 * whole create runs now */
	ret = snap_cut(store, &v, snap, 0, 0, &row, &l, &used_spare, svol != NULL);
	if (ret)
		goto err;
	if (l && chain_publish(svol, l, NULL)) {
		/* used_spare: row pending, layer uncut, the next open removes both */
		layer_close(l);
		if (!used_spare)
			tsr_error("snapshot: volume %s: %s: out of memory; the snapshot is "
				  "incomplete, delete it",
				  vol, snap);
		ret = -ENOMEM;
		goto err;
	}
	if (!used_spare || svol == NULL) { /* committed above, in this call */
		tsr_info("snapshot: volume %s: created %s (%s), seq %llu%s", vol, snap, row.uuid,
			 (unsigned long long)row.seq, used_spare ? ", on a spare layer" : "");
		spare_request(store, v.uuid, v.size);
		pthread_mutex_unlock(&store->lock);
		free(cl);
		return 1;
	}
	/* published: writes from now on copy into the layer; the row follows */
	snprintf(cl->vol, sizeof(cl->vol), "%s", vol);
	cl->row = row;
	cl->done = done;
	cl->arg = arg;
	clock_gettime(CLOCK_MONOTONIC, &cl->cut);
	store_crash_point();
	ret = spare_commit(store, &row, create_later_done, cl);
	if (ret) { /* no memory to queue it: make it final here */
		spare_commits_wait(store, v.uuid);
		ret = catalog_snap_finalize(store->db, &row);
		if (ret) {
			tsr_error("snapshot: volume %s: %s: %s; the snapshot is not created (its "
				  "layer goes at the next open)",
				  vol, snap, strerror(-ret));
			/* the layer stays in the chain until the volume closes */
		}
		spare_request(store, v.uuid, v.size);
		pthread_mutex_unlock(&store->lock);
		free(cl);
		return ret ? ret : 1;
	}
	/* the next spare after the row: the thread commits rows first, but a
	 * spare it started before the row was queued would delay the row */
	spare_request(store, v.uuid, v.size);
	pthread_mutex_unlock(&store->lock);
	return 0;
err:
	/* also after a failed create that took the spare */
	if (v.uuid[0])
		spare_request(store, v.uuid, v.size);
	pthread_mutex_unlock(&store->lock);
	free(cl);
	return ret;
}

/* ---- delete ---- */

#define MERGE_RUN 256u

static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));

		if (r <= 0)
			return r < 0 ? -errno : -EIO;
		done += (size_t)r;
	}
	return 0;
}

static int pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r =
		    pwrite(fd, (const uint8_t *)buf + done, len - done, (off_t)(off + done));

		if (r <= 0)
			return r < 0 ? -errno : -EIO;
		done += (size_t)r;
	}
	return 0;
}

/* Bits of src that dst lacks, word w (blocks >= dst's size masked out). */
static uint64_t merge_word(const struct layer *src, const struct layer *dst, uint64_t w)
{
	uint64_t nblk = dst->size >> STORE_BLOCK_SHIFT, m;

	if (w * 64 >= nblk)
		return 0;
	m = __atomic_load_n(&src->present[w], __ATOMIC_ACQUIRE) &
	    ~__atomic_load_n(&dst->present[w], __ATOMIC_ACQUIRE);
	if (nblk - w * 64 < 64)
		m &= (1ull << (nblk - w * 64)) - 1;
	return m;
}

/* Copy blocks [b, b+n) of src to dst (same offsets, one segment). */
static int copy_run(struct layer *src, struct layer *dst, uint8_t *buf, uint64_t b, uint64_t n)
{
	uint64_t off = b << STORE_BLOCK_SHIFT, so, doff, max;
	int sfd = layer_fd(src, off, &so, &max);
	int dfd = layer_fd(dst, off, &doff, &max);
	int ret;

	if (sfd < 0 || dfd < 0)
		return -EIO;
	ret = pread_full(sfd, buf, (size_t)n << STORE_BLOCK_SHIFT, so);
	if (ret == 0)
		ret = pwrite_full(dfd, buf, (size_t)n << STORE_BLOCK_SHIFT, doff);
	return ret;
}

/* Copy into dst every block src holds and dst lacks: data (runs of up to
 * 1 MiB) and entries, synced, then the bits, synced. */
static int merge_into(struct layer *src, struct layer *dst)
{
	uint64_t nw = ((dst->size >> STORE_BLOCK_SHIFT) + 63) / 64, w, m;
	uint64_t run_b = 0, run_n = 0, reserved = UINT64_MAX;
	uint8_t *buf = tsr_alloc_aligned((size_t)MERGE_RUN << STORE_BLOCK_SHIFT);
	unsigned i;
	int ret = 0;

	if (buf == NULL)
		return -ENOMEM;
	for (w = 0; w < nw && ret == 0; w++) {
		for (m = merge_word(src, dst, w); m && ret == 0; m &= m - 1) {
			uint64_t b = w * 64 + (uint64_t)__builtin_ctzll(m);
			uint64_t e = entry_load(&src->crc[b]);

			/* dst's crc page (512 blocks) and bits allocated first: a
			 * full file system is -ENOSPC here, not a SIGBUS */
			if (b / 512 != reserved) {
				ret = layer_reserve(dst, b / 512 * 512, 512);
				if (ret)
					break;
				reserved = b / 512;
			}
			entry_store(&dst->crc[b], e);
			if (entry_cur(e) == 0) /* a zero block: the entry says it all */
				continue;
			/* extend the run while contiguous, in one segment, under 1 MiB */
			if (run_n && run_b + run_n == b && run_n < MERGE_RUN &&
			    (b >> (STORE_SEG_SHIFT - STORE_BLOCK_SHIFT)) ==
				(run_b >> (STORE_SEG_SHIFT - STORE_BLOCK_SHIFT))) {
				run_n++;
				continue;
			}
			if (run_n)
				ret = copy_run(src, dst, buf, run_b, run_n);
			run_b = b;
			run_n = 1;
		}
	}
	if (ret == 0 && run_n)
		ret = copy_run(src, dst, buf, run_b, run_n);
	tsr_free_aligned(buf);
	for (i = 0; ret == 0 && i < dst->nseg; i++)
		if (fdatasync(dst->seg_fd[i]) < 0)
			ret = -errno;
	if (ret == 0 && fdatasync(dst->crc_fd) < 0)
		ret = -errno;
	/* tests hold the merge here (data and entries in dst, no bit yet): a
	 * write meanwhile must not reach src, whose bits the loop below reads
	 * again; the oldest layer's delete (no merge) calls it before its row
	 * goes */
	if (store_test_merge_hook)
		store_test_merge_hook(store_test_merge_arg);
	store_crash_point();
	for (w = 0; w < nw && ret == 0; w++) {
		m = merge_word(src, dst, w);
		if (m)
			__atomic_fetch_or(&dst->present[w], m, __ATOMIC_SEQ_CST);
	}
	if (ret == 0 && fdatasync(dst->present_fd) < 0)
		ret = -errno;
	if (ret)
		tsr_error("snapshot delete: merge %s into %s: %s", src->uuid, dst->uuid,
			  strerror(-ret));
	return ret;
}

/* Remove the files of a layer whose row is gone: the store's reaper thread
 * does it when it runs, else now unless they are many extents (remove.c); a
 * crash first: the open does (no row). */
static void reap_files(struct tsr_store *store, const struct snap_row *row)
{
	if (!spare_reap(store, row->uuid, row->size) &&
	    !store_remove_deleted(store, row->uuid, row->size, false))
		store_fsync_voldir(store);
}

/* Finish the delete of a row marked SNAP_DELETING, here and now (the
 * volume is not open, or the merge thread could not take it). */
static int finish_now(struct tsr_store *store, const struct snap_row *row)
{
	struct tsr_svol *svol = store_find_open_uuid(store, row->vol_uuid);
	struct layer *me = NULL, *older = NULL, *tmp_me = NULL, *tmp_older = NULL;
	struct snap_row *rows;
	size_t n, i;
	int ret;

	ret = catalog_snap_list(store->db, row->vol_uuid, &rows, &n);
	if (ret)
		return ret;
	for (i = 0; i < n; i++)
		if (strcmp(rows[i].uuid, row->uuid) == 0)
			break;
	if (i == n) {
		free(rows);
		return 0;
	}
	if (i == 0 && store_test_merge_hook) /* tests: see merge_into */
		store_test_merge_hook(store_test_merge_arg);
	if (i > 0) { /* not the oldest: merge into the older neighbour */
		if (svol) {
			me = chain_find(svol, rows[i].uuid);
			older = chain_find(svol, rows[i - 1].uuid);
		}
		if (me == NULL)
			ret = layer_open(store, &rows[i], &tmp_me);
		if (ret == 0 && older == NULL)
			ret = layer_open(store, &rows[i - 1], &tmp_older);
		if (ret == 0)
			ret = merge_into(me ? me : tmp_me, older ? older : tmp_older);
		layer_close(tmp_me);
		layer_close(tmp_older);
	}
	free(rows);
	if (ret)
		return ret;
	ret = catalog_snap_delete(store->db, row->uuid);
	if (ret)
		return ret;
	store_crash_point();
	if (svol && (me = chain_find(svol, row->uuid)) != NULL)
		chain_publish(svol, NULL, me);
	reap_files(store, row);
	return 0;
}

/*
 * Finish the delete of a row marked SNAP_DELETING (store->lock held).  The
 * layer of an open volume is flagged deleting at once (the switch: copies on
 * write go to the newest layer that is not deleting from now on) and the
 * rest goes to the merge thread (merge.c, snap_merge_job), so a delete in
 * the layout's gate ends here.  A volume that is not open has no writer:
 * the delete is finished in the caller.
 */
static int finish_delete(struct tsr_store *store, const struct snap_row *row)
{
	struct tsr_svol *svol = store_find_open_uuid(store, row->vol_uuid);
	struct layer *me = svol ? chain_find(svol, row->uuid) : NULL;

	if (me == NULL)
		return finish_now(store, row);
	atomic_store(&me->deleting, true);
	if (merge_queue(store, svol, row->uuid) == 0) {
		store_crash_point(); /* switched and queued, nothing merged */
		return 0;
	}
	/* gc_layer under writes: finish_now does not wait for the copies into the
	 * layer; the row stays marked, the next open finishes it */
	if (writes_in_flight(svol))
		return 0;
	return finish_now(store, row);
}

static void gc_volume(struct tsr_store *store, const struct vol_row *v);

static uint64_t layer_blocks_held(const struct layer *l)
{
	uint64_t nw = ((l->size >> STORE_BLOCK_SHIFT) + 63) / 64, w, n = 0;

	for (w = 0; w < nw; w++)
		n += (uint64_t)__builtin_popcountll(__atomic_load_n(&l->present[w],
								   __ATOMIC_ACQUIRE));
	return n;
}

void snap_merge_job(struct tsr_store *store, struct tsr_svol *svol, const char *snap_uuid)
{
	struct layer *me = NULL, *older = NULL;
	struct snap_row *rows = NULL, row;
	char vol_uuid[37];
	size_t n = 0, i;
	int64_t t0;
	uint64_t blocks = 0;
	int ret;

	pthread_mutex_lock(&store->lock);
	snprintf(vol_uuid, sizeof(vol_uuid), "%s", svol->uuid);
	ret = catalog_snap_get(store->db, snap_uuid, &row);
	if (ret || !(row.flags & SNAP_DELETING))
		goto out; /* finished meanwhile (or never marked): nothing to do */
	ret = catalog_snap_list(store->db, row.vol_uuid, &rows, &n);
	if (ret)
		goto out;
	for (i = 0; i < n; i++)
		if (strcmp(rows[i].uuid, row.uuid) == 0)
			break;
	me = chain_find(svol, row.uuid);
	if (i < n && i > 0)
		older = chain_find(svol, rows[i - 1].uuid);
	if (i == n || me == NULL || (i > 0 && older == NULL)) {
		/* not the chain we expect: the old way, under the lock */
		ret = finish_now(store, &row);
		goto out;
	}
	pthread_mutex_unlock(&store->lock);

	/* no copy on write into me from here on: its bits are final */
	while (atomic_load(&me->cow_users) != 0) {
		struct timespec ts = {0, 1000000};

		nanosleep(&ts, NULL);
	}
	if (older == NULL && store_test_merge_hook) /* tests: see merge_into */
		store_test_merge_hook(store_test_merge_arg);
	t0 = tsr_mono_ms();
	if (older) {
		blocks = layer_blocks_held(me);
		/* without store->lock: only this thread drops layers of an
		 * open volume, and the job's reference keeps the chain loaded */
		ret = merge_into(me, older);
	}

	pthread_mutex_lock(&store->lock);
	if (ret) /* the row stays marked: the next open finishes it */
		goto out;
	ret = catalog_snap_delete(store->db, row.uuid);
	if (ret)
		goto out;
	store_crash_point();
	chain_publish(svol, NULL, me);
	reap_files(store, &row);
	/* bench/snapshot.sh (part "delete") reads this line */
	tsr_info("snapshot: volume %s: delete of %s (%s) finished outside the gate: merge "
		 "%lld ms (%llu blocks held, into %s)",
		 svol->name, row.name, row.uuid, (long long)(tsr_mono_ms() - t0),
		 (unsigned long long)blocks, older ? older->uuid : "none: the oldest");
out:
	free(rows);
	store_svol_unref(svol);
	/* a volume deleted meanwhile (hidden while we held it) goes now */
	if (store_find_open_uuid(store, vol_uuid) == NULL) {
		struct vol_row v;

		if (catalog_get_uuid(store->db, vol_uuid, &v) == 0 && (v.flags & VOL_HIDDEN))
			gc_volume(store, &v);
	}
	pthread_mutex_unlock(&store->lock);
}

static void gc_layer(struct tsr_store *store, const char *snap_uuid);

/* Delete a snapshot row (hide it when clones depend on it). */
static int snap_remove(struct tsr_store *store, struct snap_row *row)
{
	uint32_t clones;
	int ret = catalog_clone_count(store->db, row->uuid, &clones);

	if (ret)
		return ret;
	if (clones) {
		row->flags |= SNAP_HIDDEN;
		return catalog_snap_update_flags(store->db, row);
	}
	row->flags |= SNAP_DELETING;
	ret = catalog_snap_update_flags(store->db, row);
	if (ret)
		return ret;
	store_crash_point();
	/* The mark is the delete's commit point (its name is free, the layer is
	 * no longer listed): a finish that fails now (the merge needs blocks on
	 * a full file system) leaves the row marked and the delete accepted.
	 * retry_marked tries it again at the volume's next snapshot list or
	 * delete, the open of the store at the latest. */
	ret = finish_delete(store, row);
	if (ret)
		tsr_warn("snapshot delete: %s (%s) accepted, its merge did not finish (%s): "
			 "tried again at the next snapshot list or delete of the volume once "
			 "there is space, or at the next start",
			 row->name, row->uuid, strerror(-ret));
	return 0;
}

/*
 * The deletes of vol_uuid's snapshots that are marked but not finished (a
 * merge that failed: ENOSPC on a full file system, or an I/O error) are
 * tried again here (store->lock held), newest first as at open, if the
 * volume is closed.  An open volume's marked rows may have merge jobs queued
 * or running (merge.c), which must not be doubled: a job that failed leaves
 * its row to the first retry after the volume is closed, or to the next
 * start.
 */
static void retry_marked(struct tsr_store *store, const char *vol_uuid)
{
	struct snap_row *rows;
	size_t n, i;
	int ret;

	if (store_find_open_uuid(store, vol_uuid) ||
	    catalog_snap_list(store->db, vol_uuid, &rows, &n))
		return;
	for (i = n; i-- > 0;) {
		if ((rows[i].flags & (SNAP_DELETING | SNAP_PENDING)) != SNAP_DELETING)
			continue;
		ret = finish_delete(store, &rows[i]);
		if (ret == 0)
			tsr_info("snapshot: the delete of %s (%s) finished on a retry", rows[i].name,
				 rows[i].uuid);
	}
	free(rows);
}

static int snap_delete(struct tsr_store *store, const char *vol, const char *snap,
		       enum tsr_log_level missing_level, uint64_t epoch);

int tsr_store_snap_delete(struct tsr_store *store, const char *vol, const char *snap)
{
	return snap_delete(store, vol, snap, TSR_LOG_ERROR, ANY_EPOCH);
}

int tsr_store_snap_delete_missing_ok(struct tsr_store *store, const char *vol, const char *snap)
{
	return snap_delete(store, vol, snap, TSR_LOG_DEBUG, ANY_EPOCH);
}

int tsr_store_snap_delete_epoch(struct tsr_store *store, const char *vol, const char *snap,
				bool missing_ok, uint64_t epoch)
{
	return snap_delete(store, vol, snap, missing_ok ? TSR_LOG_DEBUG : TSR_LOG_ERROR, epoch);
}

static int snap_delete(struct tsr_store *store, const char *vol, const char *snap,
		       enum tsr_log_level missing_level, uint64_t epoch)
{
	struct tsr_svol *svol;
	struct snap_row row;
	struct vol_row v;
	int ret;

	pthread_mutex_lock(&store->lock);
	ret = get_vol_idle(store, "snapshot delete", vol, &v);
	if (ret == 0)
		ret = check_epoch("snapshot delete", &v, epoch);
	if (ret == 0) {
		retry_marked(store, v.uuid);
		ret = get_snap(store, "snapshot delete", &v, snap, &row, missing_level);
	}
	if (ret)
		goto out;
	svol = store_find_open_uuid(store, v.uuid);
	if (writes_in_flight(svol)) {
		tsr_error("snapshot delete: volume %s has writes in flight; quiesce it first", vol);
		ret = -EBUSY;
		goto out;
	}
	if (svol && svol->ro_handles) {
		tsr_error(
		    "snapshot delete: volume %s has snapshots open read-only; close them first",
		    vol);
		ret = -EBUSY;
		goto out;
	}
	ret = snap_remove(store, &row);
	if (ret == 0)
		tsr_info("snapshot: volume %s: deleted %s%s", vol, snap,
			 (row.flags & SNAP_HIDDEN) ? " (kept hidden: clones depend on it)" : "");
out:
	pthread_mutex_unlock(&store->lock);
	return ret;
}

/* Remove a volume with every snapshot row left, rows first (one
 * transaction), then the files: now, or by the reaper for those of many
 * extents (remove.c: their unlink's time grows with the extents). */
static int drop_volume(struct tsr_store *store, const struct vol_row *v)
{
	struct snap_row *rows;
	unsigned later = 0;
	size_t n, i;
	int ret;

	ret = catalog_snap_list(store->db, v->uuid, &rows, &n);
	if (ret)
		return ret;
	ret = catalog_begin(store->db);
	for (i = 0; ret == 0 && i < n; i++)
		ret = catalog_snap_delete(store->db, rows[i].uuid);
	if (ret == 0)
		ret = catalog_delete(store->db, v->name);
	if (ret == 0)
		ret = catalog_commit(store->db);
	else
		catalog_rollback(store->db);
	if (ret == 0) {
		store_crash_point();
		for (i = 0; i < n; i++)
			later += store_remove_deleted(store, rows[i].uuid, rows[i].size, true);
		later += store_remove_deleted(store, v->uuid, v->size, true);
		store_fsync_voldir(store);
		tsr_info("delete: volume %s (%s)%s%s", v->flags & VOL_HIDDEN ? v->orig : v->name,
			 v->uuid, n ? " and its snapshots" : "",
			 later ? "; files of many extents are removed in the background" : "");
	}
	free(rows);
	if (ret == 0 && v->parent[0])
		gc_layer(store, v->parent);
	return ret;
}

/* A hidden volume goes when no clone depends on any of its layers. */
static void gc_volume(struct tsr_store *store, const struct vol_row *v)
{
	struct snap_row *rows;
	uint32_t clones = 0, c;
	size_t n, i;

	if (!(v->flags & VOL_HIDDEN) || store_find_open_uuid(store, v->uuid))
		return;
	if (catalog_snap_list(store->db, v->uuid, &rows, &n))
		return;
	for (i = 0; i < n; i++)
		if (catalog_clone_count(store->db, rows[i].uuid, &c) == 0)
			clones += c;
	free(rows);
	if (clones == 0)
		drop_volume(store, v);
}

/* After a clone went: its source layer may be unneeded now. */
static void gc_layer(struct tsr_store *store, const char *snap_uuid)
{
	struct tsr_svol *svol;
	struct snap_row row;
	struct vol_row v;
	uint32_t clones;

	if (catalog_snap_get(store->db, snap_uuid, &row) ||
	    catalog_get_uuid(store->db, row.vol_uuid, &v))
		return;
	if (v.flags & VOL_HIDDEN) {
		gc_volume(store, &v);
		return;
	}
	if (!(row.flags & (SNAP_HIDDEN | SNAP_AUTO)) ||
	    catalog_clone_count(store->db, row.uuid, &clones) || clones)
		return;
	svol = store_find_open_uuid(store, v.uuid);
	/* with writes flowing only the merge thread may finish it (it waits out
	 * the copies into the layer: cow.c), so the layer must be in the open
	 * chain; else the next open finishes it */
	if (writes_in_flight(svol) && chain_find(svol, row.uuid) == NULL)
		return;
	snap_remove(store, &row);
}

int snap_volume_delete(struct tsr_store *store, const struct vol_row *v)
{
	struct tsr_svol *svol = store_find_open_uuid(store, v->uuid);
	struct snap_row *rows;
	struct vol_row h = *v;
	uint32_t clones, total = 0;
	size_t n, i;
	int ret;

	spare_forget(store, v->uuid);
	ret = catalog_snap_list(store->db, v->uuid, &rows, &n);
	if (ret)
		return ret;
	for (i = 0; ret == 0 && i < n; i++) {
		ret = catalog_clone_count(store->db, rows[i].uuid, &clones);
		total += clones;
		rows[i].flags |= clones ? SNAP_HIDDEN : (SNAP_HIDDEN | SNAP_DELETING);
	}
	if (ret == 0 && total == 0 && svol == NULL) {
		free(rows);
		return drop_volume(store, v);
	}
	/* clones depend on it: hide it, free what they do not need */
	snprintf(h.name, sizeof(h.name), ".h-%s", v->uuid);
	snprintf(h.orig, sizeof(h.orig), "%s", v->name);
	h.flags |= VOL_HIDDEN;
	if (ret == 0)
		ret = catalog_begin(store->db);
	for (i = 0; ret == 0 && i < n; i++)
		ret = catalog_snap_update_flags(store->db, &rows[i]);
	if (ret == 0)
		ret = catalog_update_row(store->db, v->name, &h);
	if (ret == 0)
		ret = catalog_commit(store->db);
	else
		catalog_rollback(store->db);
	if (ret) {
		free(rows);
		return ret;
	}
	if (svol)
		snprintf(svol->name, sizeof(svol->name), "%s", h.name);
	store_crash_point();
	for (i = n; i-- > 0;)
		if (rows[i].flags & SNAP_DELETING)
			finish_delete(store, &rows[i]);
	free(rows);
	tsr_info("delete: volume %s (%s) hidden until the clones of its snapshots are deleted",
		 v->name, v->uuid);
	return 0;
}

void snap_recover_present(struct tsr_store *store, struct tsr_svol *svol)
{
	uint64_t regions = (atomic_load(&svol->size) + ((uint64_t)1 << STORE_REGION_SHIFT) - 1) >>
			   STORE_REGION_SHIFT;
	uint64_t fixed = 0, dropped = 0, k;
	struct snap_row *rows;
	size_t n, i;
	int ret;

	if (store->dev_fd >= 0)
		return;
	for (k = 0; k < (regions + 7) / 8 && svol->meta.dirty_map[k] == 0; k++)
		;
	if (k == (regions + 7) / 8) /* no dirty region: nothing to look at */
		return;
	pthread_mutex_lock(&store->lock);
	if (catalog_snap_list(store->db, svol->uuid, &rows, &n) == 0) {
		for (i = 0; i < n; i++) {
			struct layer *l;

			if (layer_open(store, &rows[i], &l))
				continue; /* logged; its own open fails the same way later */
			ret = layer_recover_present(l, svol->meta.dirty_map,
						    atomic_load(&svol->size), &fixed, &dropped);
			if (ret)
				tsr_error("recovery: volume %s: snapshot %s: %s", svol->name,
					  rows[i].name, strerror(-ret));
			layer_close(l);
		}
		free(rows);
	}
	pthread_mutex_unlock(&store->lock);
	if (fixed || dropped)
		tsr_info("recovery: volume %s: %llu snapshot blocks copied before the crash "
			 "marked present again, %llu unfinished copies dropped",
			 svol->name, (unsigned long long)fixed, (unsigned long long)dropped);
}

void snap_recover(struct tsr_store *store)
{
	struct snap_row *rows;
	struct vol_row *vols;
	size_t n, i;

	pthread_mutex_lock(&store->lock);
	if (catalog_snap_list(store->db, NULL, &rows, &n) == 0) {
		/* newest first: a merge target is never deleted before its source */
		for (i = n; i-- > 0;) {
			if (!(rows[i].flags & (SNAP_DELETING | SNAP_PENDING)))
				continue;
			if (rows[i].flags & SNAP_PENDING) /* spare.c: never made final */
				tsr_info("open: dropping the layer %s of an unfinished snapshot "
					 "create or an unused spare",
					 rows[i].uuid);
			else
				tsr_info("open: finishing the interrupted delete of snapshot %s (%s)",
					 rows[i].name, rows[i].uuid);
			finish_delete(store, &rows[i]);
		}
		for (i = 0; i < n; i++)
			if ((rows[i].flags & (SNAP_HIDDEN | SNAP_AUTO)) &&
			    !(rows[i].flags & SNAP_DELETING))
				gc_layer(store, rows[i].uuid);
		free(rows);
	}
	if (catalog_list(store->db, false, &vols, &n) == 0) {
		for (i = 0; i < n; i++)
			if (vols[i].flags & VOL_HIDDEN)
				gc_volume(store, &vols[i]);
		free(vols);
	}
	pthread_mutex_unlock(&store->lock);
}

/* ---- list, info, space ---- */

/* Bytes deleting row would free: blocks it holds with data that the older
 * neighbour holds too, or that lie past its size (merge copies the rest). */
static uint64_t exclusive_bytes(struct tsr_store *store, const struct snap_row *row,
				const struct snap_row *older)
{
	struct layer *me = NULL, *old = NULL;
	uint64_t nblk = row->size >> STORE_BLOCK_SHIFT, oblk, w, m, count = 0;

	if (older == NULL)
		return layer_allocated(store, row->uuid, row->size);
	if (layer_open(store, row, &me) || layer_open(store, older, &old))
		goto out;
	oblk = old->size >> STORE_BLOCK_SHIFT;
	for (w = 0; w * 64 < nblk; w++) {
		m = __atomic_load_n(&me->present[w], __ATOMIC_ACQUIRE);
		if (w * 64 < oblk) {
			uint64_t keep = ~__atomic_load_n(&old->present[w], __ATOMIC_ACQUIRE);

			if (oblk - w * 64 < 64) /* blocks past the older size are freed */
				keep &= (1ull << (oblk - w * 64)) - 1;
			m &= ~keep;
		}
		for (; m; m &= m - 1) {
			uint64_t b = w * 64 + (uint64_t)__builtin_ctzll(m);

			if (b < nblk && entry_cur(me->crc[b]))
				count++;
		}
	}
out:
	layer_close(me);
	layer_close(old);
	return count << STORE_BLOCK_SHIFT;
}

static void fill_info(struct tsr_store *store, const struct snap_row *row,
		      const struct snap_row *older, struct tsr_snap_info *info)
{
	uint32_t clones = 0;

	memset(info, 0, sizeof(*info));
	snprintf(info->name, sizeof(info->name), "%s", row->name);
	snprintf(info->uuid, sizeof(info->uuid), "%s", row->uuid);
	info->created = row->created;
	info->seq = row->seq;
	info->size = row->size;
	info->allocated = layer_allocated(store, row->uuid, row->size);
	catalog_clone_count(store->db, row->uuid, &clones);
	info->clones = clones;
	info->exclusive = clones ? 0 : exclusive_bytes(store, row, older);
}

/* Infos of the visible snapshots of v (name NULL: all); with_deleting: and
 * those whose delete is pending (deleting set). */
static int list_infos(struct tsr_store *store, const struct vol_row *v, const char *name,
		      bool with_deleting, struct tsr_snap_info **out, size_t *count)
{
	struct tsr_snap_info *infos;
	struct snap_row *rows;
	size_t n, i, k = 0;
	int ret;

	ret = catalog_snap_list(store->db, v->uuid, &rows, &n);
	if (ret)
		return ret;
	infos = calloc(n ? n : 1, sizeof(*infos));
	if (infos == NULL) {
		free(rows);
		return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		bool deleting = with_deleting && delete_pending(&rows[i]);

		if ((!visible(&rows[i]) && !deleting) || (name && strcmp(rows[i].name, name) != 0))
			continue;
		fill_info(store, &rows[i], i ? &rows[i - 1] : NULL, &infos[k]);
		infos[k++].deleting = deleting;
	}
	free(rows);
	*out = infos;
	*count = k;
	return 0;
}

static int snap_list(struct tsr_store *store, const char *vol, bool with_deleting,
		     struct tsr_snap_info **out, size_t *count)
{
	struct vol_row v;
	int ret;

	pthread_mutex_lock(&store->lock);
	ret = get_vol(store, "snapshot list", vol, &v);
	if (ret == 0) {
		retry_marked(store, v.uuid);
		ret = list_infos(store, &v, NULL, with_deleting, out, count);
	}
	pthread_mutex_unlock(&store->lock);
	return ret;
}

int tsr_store_snap_list(struct tsr_store *store, const char *vol, struct tsr_snap_info **out,
			size_t *count)
{
	return snap_list(store, vol, false, out, count);
}

int tsr_store_snap_list_all(struct tsr_store *store, const char *vol,
			    struct tsr_snap_info **out, size_t *count)
{
	return snap_list(store, vol, true, out, count);
}

int tsr_store_snap_info(struct tsr_store *store, const char *vol, const char *snap,
			struct tsr_snap_info *out)
{
	struct tsr_snap_info *infos = NULL;
	struct vol_row v;
	size_t n = 0;
	int ret;

	pthread_mutex_lock(&store->lock);
	ret = get_vol(store, "snapshot info", vol, &v);
	if (ret == 0 && (snap == NULL || !tsr_valid_name(snap)))
		ret = -ENOENT;
	if (ret == 0)
		ret = list_infos(store, &v, snap, false, &infos, &n);
	if (ret == 0 && n == 0)
		ret = -ENOENT;
	if (ret == 0)
		*out = infos[0];
	free(infos);
	pthread_mutex_unlock(&store->lock);
	return ret;
}

int tsr_store_snap_row_info(struct tsr_store *store, const char *vol, const char *snap,
			    struct tsr_snap_info *out)
{
	struct snap_row *rows = NULL;
	struct vol_row v;
	size_t n = 0, i;
	int ret;

	pthread_mutex_lock(&store->lock);
	ret = get_vol(store, "snapshot info", vol, &v);
	if (ret == 0 && (snap == NULL || !tsr_valid_name(snap)))
		ret = -ENOENT;
	if (ret == 0)
		ret = catalog_snap_list(store->db, v.uuid, &rows, &n);
	pthread_mutex_unlock(&store->lock);
	if (ret)
		return ret;
	ret = -ENOENT;
	for (i = 0; i < n; i++) {
		if (!visible(&rows[i]) || strcmp(rows[i].name, snap) != 0)
			continue;
		memset(out, 0, sizeof(*out));
		snprintf(out->name, sizeof(out->name), "%s", rows[i].name);
		snprintf(out->uuid, sizeof(out->uuid), "%s", rows[i].uuid);
		out->created = rows[i].created;
		out->seq = rows[i].seq;
		out->size = rows[i].size;
		ret = 0;
		break;
	}
	free(rows);
	return ret;
}

int tsr_store_vol_space(struct tsr_store *store, const char *vol, uint64_t *allocated,
			uint64_t *exclusive)
{
	struct tsr_snap_info *infos = NULL;
	struct vol_row v;
	uint64_t excl;
	uint32_t deps = 0;
	size_t n = 0, i;
	int ret;

	pthread_mutex_lock(&store->lock);
	ret = get_vol(store, "space", vol, &v);
	if (ret == 0)
		ret = list_infos(store, &v, NULL, false, &infos, &n);
	if (ret)
		goto out;
	*allocated = layer_allocated(store, v.uuid, v.size);
	excl = *allocated;
	for (i = 0; i < n; i++) {
		deps += infos[i].clones;
		excl += infos[i].allocated;
	}
	{
		struct snap_row *rows;
		size_t sn, k;
		uint32_t c;

		if (catalog_snap_list(store->db, v.uuid, &rows, &sn) == 0) {
			for (k = 0; k < sn; k++)
				if (!visible(&rows[k]) &&
				    catalog_clone_count(store->db, rows[k].uuid, &c) == 0)
					deps += c;
			free(rows);
		}
	}
	/* with clones depending on its layers the head stays (hidden): only the
	 * snapshots nobody depends on go, and those free at most their exclusive bytes */
	if (deps) {
		excl = 0;
		for (i = 0; i < n; i++)
			excl += infos[i].exclusive;
	}
	*exclusive = excl;
out:
	free(infos);
	pthread_mutex_unlock(&store->lock);
	return ret;
}

/* ---- clones ---- */

static int vol_clone(struct tsr_store *store, const char *name, const char *vol, const char *snap,
		     uint64_t epoch, struct tsr_vol_info *info_out);

int tsr_store_vol_clone(struct tsr_store *store, const char *name, const char *vol,
			const char *snap, struct tsr_vol_info *info_out)
{
	return vol_clone(store, name, vol, snap, ANY_EPOCH, info_out);
}

int tsr_store_vol_clone_epoch(struct tsr_store *store, const char *name, const char *vol,
			      const char *snap, uint64_t epoch)
{
	return vol_clone(store, name, vol, snap, epoch, NULL);
}

static int vol_clone(struct tsr_store *store, const char *name, const char *vol, const char *snap,
		     uint64_t epoch, struct tsr_vol_info *info_out)
{
	struct layer *auto_layer = NULL;
	struct snap_row srow;
	struct vol_row v, c;
	bool files = false, txn = false, cut = false;
	int ret;

	if (store->dev_fd >= 0)
		return -EOPNOTSUPP;
	if (name == NULL || !tsr_valid_name(name)) {
		tsr_error("clone: invalid volume name '%s': use 1-63 of [A-Za-z0-9._-], starting "
			  "with a letter or digit",
			  name ? name : "(null)");
		return -EINVAL;
	}
	pthread_mutex_lock(&store->lock);
	ret = get_vol_idle(store, "clone", vol, &v);
	if (ret == 0)
		ret = check_epoch("clone", &v, epoch);
	if (ret == 0 && snap)
		ret = get_snap(store, "clone", &v, snap, &srow, TSR_LOG_ERROR);
	if (ret)
		goto out;
	if (catalog_get(store->db, name, &c) == 0) {
		tsr_error("clone: volume %s already exists", name);
		ret = -EEXIST;
		goto out;
	}
	memset(&c, 0, sizeof(c));
	snprintf(c.name, sizeof(c.name), "%s", name);
	store_make_uuid(c.uuid);
	c.size = snap ? srow.size : v.size;
	c.created = (int64_t)time(NULL);
	c.dev_offset = -1;
	files = true;
	ret = store_create_head_files(store, c.uuid, c.size, true);
	if (ret == 0)
		ret = store_fsync_voldir(store);
	/* rows of v still queued by spare.c go first (and not while our
	 * transaction holds the catalogue's write lock) */
	spare_commits_wait(store, v.uuid);
	if (ret == 0)
		ret = catalog_begin(store->db);
	if (ret)
		goto out;
	txn = true;
	if (snap == NULL) { /* the source's content now: a hidden snapshot of it */
		ret = snap_cut(store, &v, "", SNAP_HIDDEN | SNAP_AUTO, 0, &srow, &auto_layer, NULL,
			       false);
		if (ret)
			goto out; /* snap_cut removed its files */
		cut = true;
	}
	snprintf(c.parent, sizeof(c.parent), "%s", srow.uuid);
	ret = catalog_insert(store->db, &c);
	if (ret)
		goto out;
	store_crash_point();
	txn = false;
	ret = catalog_commit(store->db); /* rolls back itself on failure */
	if (ret)
		goto out;
	cut = false;
	files = false;
	if (auto_layer)
		chain_publish(store_find_open_uuid(store, v.uuid), auto_layer, NULL);
	if (info_out) {
		memset(info_out, 0, sizeof(*info_out));
		snprintf(info_out->name, sizeof(info_out->name), "%s", c.name);
		snprintf(info_out->uuid, sizeof(info_out->uuid), "%s", c.uuid);
		info_out->size = c.size;
		info_out->created = c.created;
	}
	tsr_info("clone: volume %s (%s) from %s@%s", name, c.uuid, vol, snap ? snap : "(now)");
out:
	if (txn)
		catalog_rollback(store->db);
	if (cut) { /* the hidden snapshot's row went with the transaction */
		layer_close(auto_layer);
		layer_remove_files(store, srow.uuid, srow.size);
	}
	if (files)
		store_remove_files(store, c.uuid, c.size);
	pthread_mutex_unlock(&store->lock);
	return ret;
}

int tsr_store_vol_parent(struct tsr_store *store, const char *name, char vol_out[64],
			 char snap_out[64])
{
	struct snap_row s;
	struct vol_row v, p;
	int ret;

	vol_out[0] = snap_out[0] = 0;
	pthread_mutex_lock(&store->lock);
	ret = name && tsr_valid_name(name) ? catalog_get(store->db, name, &v) : -ENOENT;
	if (ret || !v.parent[0])
		goto out;
	ret = catalog_snap_get(store->db, v.parent, &s);
	if (ret == 0)
		ret = catalog_get_uuid(store->db, s.vol_uuid, &p);
	if (ret)
		goto out;
	snprintf(vol_out, 64, "%s", (p.flags & VOL_HIDDEN) ? p.orig : p.name);
	snprintf(snap_out, 64, "%s", (s.flags & SNAP_AUTO) ? "" : s.name);
out:
	pthread_mutex_unlock(&store->lock);
	return ret;
}

/* ---- read-only snapshot handles ---- */

int tsr_store_snap_open(struct tsr_store *store, const char *vol, const char *snap,
			struct tsr_svol **out)
{
	struct tsr_svol *h = NULL, *ro;
	struct snap_row s;
	struct vol_row v;
	int ret;

	pthread_mutex_lock(&store->lock);
	ret = get_vol_idle(store, "snapshot open", vol, &v);
	if (ret == 0)
		ret = get_snap(store, "snapshot open", &v, snap, &s, TSR_LOG_DEBUG);
	if (ret == 0)
		ret = store_svol_get_uuid(store, v.uuid, &h);
	if (ret)
		goto out;
	ro = calloc(1, sizeof(*ro));
	if (ro == NULL || chain_find(h, s.uuid) == NULL) {
		free(ro);
		store_svol_unref(h);
		ret = ro ? -EIO : -ENOMEM;
		goto out;
	}
	ro->store = store;
	snprintf(ro->name, sizeof(ro->name), "%s@%s", vol, snap);
	snprintf(ro->uuid, sizeof(ro->uuid), "%s", s.uuid);
	atomic_init(&ro->size, s.size);
	ro->dev_offset = -1;
	ro->meta.crc_fd = ro->meta.dirty_fd = -1;
	ro->own.fd = -1;
	pthread_mutex_init(&ro->cow_lock, NULL);
	ro->base = h;
	ro->ro_layer = chain_find(h, s.uuid);
	ro->refs = 1;
	h->ro_handles++;
	*out = ro;
out:
	pthread_mutex_unlock(&store->lock);
	return ret;
}

bool tsr_svol_readonly(const struct tsr_svol *svol)
{
	return svol->ro_layer != NULL;
}

/* ---- diff ---- */

struct ext_list {
	struct tsr_extent *e;
	size_t n, cap;
};

static int ext_add(struct ext_list *l, uint64_t off, uint64_t len, uint32_t flags)
{
	if (l->n && l->e[l->n - 1].flags == flags &&
	    l->e[l->n - 1].offset + l->e[l->n - 1].length == off) {
		l->e[l->n - 1].length += len;
		return 0;
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct tsr_extent *e = realloc(l->e, cap * sizeof(*e));

		if (e == NULL)
			return -ENOMEM;
		l->e = e;
		l->cap = cap;
	}
	l->e[l->n].offset = off;
	l->e[l->n].length = len;
	l->e[l->n].flags = flags;
	l->n++;
	return 0;
}

/*
 * Does block b read as zeros at the later point of a diff (layer index k of
 * chain c, c->n = the head)?  The head's entries are read with pread through
 * a 32 KiB window rather than through the mapping: a diff of a large volume
 * touches most pages of a 2 GiB (per TiB) table, and a page fault per page
 * costs several times the copy.
 */
#define DIFF_WINDOW 1024u /* entries: 8 KiB */

struct crc_window {
	int fd;
	uint64_t first, n; /* entries held: [first, first+n) */
	uint64_t *buf;
};

static bool later_zero(struct tsr_svol *h, struct layer_chain *c, unsigned k,
		       struct crc_window *win, uint64_t b)
{
	unsigned j;

	if (h->is_clone)
		return image_zero(h, k < c->n ? c->l[k] : NULL, b);
	for (j = k; j < c->n; j++)
		if ((b << STORE_BLOCK_SHIFT) < c->l[j]->size && bit_test(c->l[j]->present, b))
			return entry_cur(entry_load(&c->l[j]->crc[b])) == 0;
	if (b < win->first || b >= win->first + win->n) {
		ssize_t r;

		win->first = b & ~(uint64_t)(DIFF_WINDOW - 1);
		r = pread(win->fd, win->buf, DIFF_WINDOW * STORE_CRC_ENTRY,
			  (off_t)(win->first * STORE_CRC_ENTRY));
		if (r < 0)
			r = 0;
		win->n = (uint64_t)r / STORE_CRC_ENTRY;
		if (b >= win->first + win->n) /* unreadable: ask the mapping */
			return image_zero(h, NULL, b);
	}
	return entry_cur(win->buf[b - win->first]) == 0;
}

/*
 * OR of the present bitmaps of layers [k0, k1) of c, words [w, w+nw), into
 * out: pread (a hole of the bitmap file is skipped with SEEK_DATA), not the
 * mappings, for the same reason as above.
 */
#define DIFF_CHUNK_WORDS (1u << 17) /* 1 MiB of bitmap: 32 GiB of volume */

static int bits_union(struct layer_chain *c, unsigned k0, unsigned k1, uint64_t w, uint64_t nw,
		      uint64_t *out, uint64_t *tmp)
{
	unsigned k;
	uint64_t i;

	memset(out, 0, nw * 8);
	for (k = k0; k < k1; k++) {
		struct layer *l = c->l[k];
		off_t pos = (off_t)(w * 8), d;
		size_t len = nw * 8;
		ssize_t r;

		if ((uint64_t)pos >= l->present_len)
			continue;
		if ((uint64_t)pos + len > l->present_len)
			len = l->present_len - (size_t)pos;
		d = lseek(l->present_fd, pos, SEEK_DATA);
		if ((d < 0 && errno == ENXIO) || (d >= 0 && d >= pos + (off_t)len))
			continue; /* all hole: no bit */
		r = pread(l->present_fd, tmp, len, pos);
		if (r < 0)
			return -errno;
		if ((size_t)r < len)
			memset((uint8_t *)tmp + r, 0, len - (size_t)r);
		for (i = 0; i < len / 8; i++)
			out[i] |= tmp[i];
	}
	return 0;
}

static unsigned chain_index(struct layer_chain *c, const char *uuid)
{
	unsigned i;

	for (i = 0; c && i < c->n; i++)
		if (strcmp(c->l[i]->uuid, uuid) == 0)
			return i;
	return UINT32_MAX;
}

int tsr_store_snap_diff(struct tsr_store *store, const char *vol, const char *snap1,
			const char *snap2, struct tsr_extent **out, size_t *count)
{
	const uint32_t zero = TSR_EXTENT_HOLE | TSR_EXTENT_ZERO;
	struct ext_list l = {0};
	struct crc_window win = {.fd = -1};
	uint64_t *uni = NULL, *lat = NULL, *tmp = NULL;
	struct tsr_svol *h = NULL;
	struct layer_chain *c;
	struct snap_row s1, s2;
	struct vol_row v;
	uint64_t nblk, lblk, w, b;
	unsigned i1, i2;
	int ret;

	pthread_mutex_lock(&store->lock);
	ret = get_vol(store, "diff", vol, &v);
	if (ret == 0 && snap2 == NULL) /* the head, which a rollback rewrites */
		ret = store_rollback_busy(store, &v, "diff");
	if (ret == 0)
		ret = get_snap(store, "diff", &v, snap1, &s1, TSR_LOG_ERROR);
	if (ret == 0 && snap2)
		ret = get_snap(store, "diff", &v, snap2, &s2, TSR_LOG_ERROR);
	if (ret)
		goto out;
	if (snap2 && s2.seq < s1.seq) {
		tsr_error("diff: volume %s: snapshot %s is older than %s", vol, snap2, snap1);
		ret = -EINVAL;
		goto out;
	}
	ret = store_svol_get_uuid(store, v.uuid, &h);
	if (ret)
		goto out;
	c = chain_load(h);
	i1 = chain_index(c, s1.uuid);
	i2 = snap2 ? chain_index(c, s2.uuid) : (c ? c->n : 0);
	if (i1 == UINT32_MAX || i2 == UINT32_MAX) {
		ret = -EIO;
		goto out;
	}
	win.fd = h->meta.crc_fd;
	win.buf = malloc(DIFF_WINDOW * STORE_CRC_ENTRY);
	uni = malloc(DIFF_CHUNK_WORDS * 8);
	lat = malloc(DIFF_CHUNK_WORDS * 8);
	tmp = malloc(DIFF_CHUNK_WORDS * 8);
	if (win.buf == NULL || uni == NULL || lat == NULL || tmp == NULL) {
		ret = -ENOMEM;
		goto out;
	}
	nblk = s1.size >> STORE_BLOCK_SHIFT;
	lblk = (snap2 ? s2.size : tsr_svol_size(h)) >> STORE_BLOCK_SHIFT;
	/* the union of the layers' bits, a word at a time, read by chunks */
	for (w = 0; w * 64 < nblk && ret == 0; w += DIFF_CHUNK_WORDS) {
		uint64_t nw = (nblk + 63) / 64 - w, i;

		if (nw > DIFF_CHUNK_WORDS)
			nw = DIFF_CHUNK_WORDS;
		ret = bits_union(c, i1, i2, w, nw, uni, tmp);
		if (ret == 0)
			ret = bits_union(c, i2, c->n, w, nw, lat, tmp);
		for (i = 0; i < nw && ret == 0; i++) {
			uint64_t m = uni[i];

			if ((w + i) * 64 + 64 > nblk)
				m &= (1ull << (nblk - (w + i) * 64)) - 1;
			for (; m && ret == 0; m &= m - 1) {
				b = (w + i) * 64 + (uint64_t)__builtin_ctzll(m);
				/* a later layer holds it (lat), else the head does */
				ret = ext_add(
				    &l, b << STORE_BLOCK_SHIFT, TSR_BLOCK_SIZE,
				    later_zero(h, c, (lat[i] >> (b % 64)) & 1 ? i2 : c->n, &win, b)
					? zero
					: 0);
			}
		}
	}
	/* blocks past the older point's size: changed where the later one has data */
	for (b = nblk; b < lblk && ret == 0; b++)
		if (!later_zero(h, c, i2, &win, b))
			ret = ext_add(&l, b << STORE_BLOCK_SHIFT, TSR_BLOCK_SIZE, 0);
	if (ret == 0) {
		*out = l.e ? l.e : calloc(1, sizeof(*l.e));
		*count = l.n;
		if (*out == NULL)
			ret = -ENOMEM;
		l.e = NULL;
	}
out:
	free(l.e);
	free(win.buf);
	free(uni);
	free(lat);
	free(tmp);
	if (h)
		store_svol_unref(h);
	pthread_mutex_unlock(&store->lock);
	return ret;
}

/* ---- rollback ---- */

struct sync_wait {
	int calls, status;
};

static void sync_cb(void *cb_arg, int status)
{
	struct sync_wait *w = cb_arg;

	w->calls++;
	w->status = status;
}

static int sync_run(struct tsr_io *io, int ret, struct sync_wait *w)
{
	if (ret)
		return ret;
	while (w->calls == 0) {
		if (tsr_io_submit(io) < 0 || tsr_io_poll(io, 0, tsr_io_inflight(io) > 0) < 0)
			return -EIO;
	}
	return w->status;
}

#define RB_CHUNK    256u
#define RB_INFLIGHT 16

/* Requests of one rollback chunk: issued, called back, first error. */
struct rb_wait {
	int issued, calls, status;
};

static void rb_cb(void *cb_arg, int status)
{
	struct rb_wait *w = cb_arg;

	w->calls++;
	if (status && w->status == 0)
		w->status = status;
}

static void rb_poll(struct tsr_io *io)
{
	tsr_io_submit(io);
	tsr_io_poll(io, 0, tsr_io_inflight(io) > 0);
}

static bool block_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)(const void *)p;
	size_t i;

	for (i = 0; i < TSR_BLOCK_SIZE / 8; i++)
		if (w[i])
			return false;
	return true;
}

/* Head blocks [first, first+n) := the image of l (union bits in mask). */
static int rollback_chunk(struct tsr_svol *h, struct layer *l, struct tsr_io *io, uint8_t *buf,
			  uint64_t first, uint64_t n, const uint8_t *want)
{
	struct sync_wait rd = {0};
	struct rb_wait w;
	uint64_t i, j;
	int ret;

	ret = sync_run(io,
		       image_read(h, l, h, io, first << STORE_BLOCK_SHIFT, n << STORE_BLOCK_SHIFT,
				  buf, sync_cb, &rd),
		       &rd);
	/* one request per run of wanted blocks (each may cost a copy with its
	 * syncs), up to RB_INFLIGHT at a time: zeros inside a run are written
	 * as zeros (their entry is 0 all the same), a run of zeros only is
	 * trimmed */
	memset(&w, 0, sizeof(w));
	for (i = 0; ret == 0 && i < n;) {
		bool z = true;
		uint64_t k;
		int r;

		if (!want[i]) {
			i++;
			continue;
		}
		for (j = i; j < n && want[j]; j++)
			;
		for (k = i; k < j && z; k++)
			z = block_is_zero(buf + (k << STORE_BLOCK_SHIFT));
		while (w.issued - w.calls >= RB_INFLIGHT)
			rb_poll(io);
		for (;;) {
			if (z)
				r = tsr_svol_trim(h, io, (first + i) << STORE_BLOCK_SHIFT,
						  (j - i) << STORE_BLOCK_SHIFT, rb_cb, &w);
			else
				r = tsr_svol_write(h, io, (first + i) << STORE_BLOCK_SHIFT,
						   (uint32_t)((j - i) << STORE_BLOCK_SHIFT),
						   buf + (i << STORE_BLOCK_SHIFT), 0, rb_cb, &w);
			if (r != -EAGAIN || w.issued == w.calls)
				break;
			rb_poll(io); /* queue full: let some complete */
		}
		if (r)
			ret = r;
		else
			w.issued++;
		i = j;
	}
	while (w.calls < w.issued)
		rb_poll(io);
	return ret ? ret : w.status;
}

/* Tests: called after each chunk a rollback rewrote (store_rolllock_ut holds
 * a rollback there, in the middle of its data copy). */
void (*store_test_rollback_chunk)(void *arg);
void *store_test_rollback_arg;

static int rollback_run(struct tsr_svol *h, const struct snap_row *s)
{
	struct tsr_io_opts o = {.kind = TSR_IO_AUTO, .queue_depth = 64};
	struct layer_chain *c = chain_load(h);
	unsigned k = chain_index(c, s->uuid), j;
	uint64_t nblk = s->size >> STORE_BLOCK_SHIFT, first, b, size;
	struct sync_wait w = {0};
	uint8_t want[RB_CHUNK];
	struct tsr_io *io = NULL;
	uint8_t *buf = NULL;
	int ret;

	if (k == UINT32_MAX)
		return -EIO;
	ret = tsr_io_create(&o, &io);
	if (ret)
		return ret;
	buf = tsr_alloc_aligned((size_t)RB_CHUNK << STORE_BLOCK_SHIFT);
	if (buf == NULL) {
		ret = -ENOMEM;
		goto out;
	}
	for (first = 0; first < nblk && ret == 0; first += RB_CHUNK) {
		uint64_t n = nblk - first < RB_CHUNK ? nblk - first : RB_CHUNK;
		bool any = false;

		for (b = 0; b < n; b++) {
			want[b] = 0;
			for (j = k; j < c->n && !want[b]; j++)
				want[b] = bit_test(c->l[j]->present, first + b);
			any = any || want[b];
		}
		if (any) {
			ret = rollback_chunk(h, c->l[k], io, buf, first, n, want);
			store_crash_point();
			if (ret == 0 && store_test_rollback_chunk)
				store_test_rollback_chunk(store_test_rollback_arg);
		}
	}
	size = tsr_svol_size(h);
	if (ret == 0 && size > s->size) /* blocks the snapshot did not have read as zeros */
		ret = sync_run(io, tsr_svol_trim(h, io, s->size, size - s->size, sync_cb, &w), &w);
	memset(&w, 0, sizeof(w));
	if (ret == 0)
		ret = sync_run(io, tsr_svol_flush(h, io, sync_cb, &w), &w);
out:
	tsr_free_aligned(buf);
	tsr_io_destroy(io);
	return ret;
}

/*
 * Test hook: while the file $TSR_TEST_STORE_ROLLBACK_HOLD_FILE exists (at
 * most 30 s, tsr_test_hold_file), a rollback waits once it started (the row
 * marked VOL_ROLLBACK, the volume's rollback_running set), before its data
 * copy, without store->lock since s16 (before: with it): a long rollback of
 * a small volume (store_rolllock_ut, test-snap-rollback-storelock).  With
 * the lock: TSR_TEST_STORE_ROLLBACK_LOCKED_HOLD_FILE below.
 */
static void rollback_test_hold(const char *vol)
{
	const char *f = getenv("TSR_TEST_STORE_ROLLBACK_HOLD_FILE");

	if (f == NULL || f[0] == '\0' || access(f, F_OK) != 0)
		return;
	tsr_info("rollback: volume %s: test hold (%s), store's lock not held", vol, f);
	tsr_test_hold_file("TSR_TEST_STORE_ROLLBACK_HOLD_FILE", false);
}

/*
 * Test hook: while the file $TSR_TEST_STORE_ROLLBACK_LOCKED_HOLD_FILE exists
 * (at most 30 s, tsr_test_hold_file; FILE.held made), a rollback waits at the
 * end of its step 1 with store->lock held, as every rollback did before s16:
 * a store call that holds the lock longer than a lease's TTL
 * (test-cluster-sweep-lease-rollback).  store->lock held.
 */
static void rollback_test_locked_hold(const char *vol)
{
	const char *f = getenv("TSR_TEST_STORE_ROLLBACK_LOCKED_HOLD_FILE");

	if (f == NULL || f[0] == '\0' || access(f, F_OK) != 0)
		return;
	tsr_info("rollback: volume %s: test hold (%s), store's lock held", vol, f);
	tsr_test_hold_file("TSR_TEST_STORE_ROLLBACK_LOCKED_HOLD_FILE", true);
}

/* Tests: called (store->lock held) when a rollback starts waiting for
 * another one of the same volume to the same snapshot (store_rolllock_ut). */
void (*store_test_rollback_wait)(void *arg);
void *store_test_rollback_wait_arg;

/* The longest a rollback waits for another one of the same volume to the
 * same snapshot (rollback_wait_same); past it, -EBUSY as to another one. */
#define ROLLBACK_WAIT_MS (30ll * 60 * 1000)

/* Tests: when > 0, the wait's bound instead of ROLLBACK_WAIT_MS
 * (store_rolllock_ut: the bound's -EBUSY and its message). */
int64_t store_test_rollback_wait_ms;

static int64_t rollback_wait_ms(void)
{
	return store_test_rollback_wait_ms > 0 ? store_test_rollback_wait_ms : ROLLBACK_WAIT_MS;
}

/* The longest a rollback waits for its copy's last open handle to go
 * (rollback_wait_closed): a coordinator's session still closing after the
 * volume's detach answered (its node's peer server closes the copy once it
 * has read the end of the stream and the session's last request ended). */
#define ROLLBACK_CLOSE_WAIT_MS (10ll * 1000)

/* Tests: when > 0, that wait's bound instead (store_snap_ut). */
int64_t store_test_rollback_close_wait_ms;

static int64_t rollback_close_wait_ms(void)
{
	return store_test_rollback_close_wait_ms > 0 ? store_test_rollback_close_wait_ms :
						       ROLLBACK_CLOSE_WAIT_MS;
}

/*
 * Step 1 (store->lock held), vol's open head h: wait for its close.  A
 * detach answers once the coordinator's sessions are gone on its side; each
 * copy's node closes its copy a moment later, so a rollback right after a
 * detach may find its copy still open.  Waits (ROLLBACK_CLOSE_WAIT_MS at
 * most from *deadline's start, -1 the first time) on svol_closed: 0 when
 * woken or timed out (the caller looks again); -EBUSY once the bound passed
 * or for a _nowait caller (an event loop's); -ESHUTDOWN once the store is
 * closing.
 */
static int rollback_wait_closed(struct tsr_store *store, const char *vol,
				const struct tsr_svol *h, bool nowait, int64_t *deadline)
{
	if (store->closing) {
		tsr_warn("rollback: volume %s: the store is closing: not waiting for the copy's "
			 "close", vol);
		return -ESHUTDOWN;
	}
	if (nowait || (*deadline >= 0 && tsr_mono_ms() >= *deadline)) {
		tsr_error("rollback: volume %s is open (%d session(s), %d snapshot session(s))%s; "
			  "detach it first", vol, h->opens, h->ro_handles,
			  nowait ? "" : " after the wait for its close");
		return -EBUSY;
	}
	if (*deadline < 0) {
		*deadline = tsr_mono_ms() + rollback_close_wait_ms();
		tsr_info("rollback: volume %s: this copy is still open (%d session(s), %d "
			 "snapshot session(s)): waiting up to %lld s for its close (a detach's "
			 "session closing)", vol, h->opens, h->ro_handles,
			 (long long)(rollback_close_wait_ms() / 1000));
	}
	tsr_cond_wait_until_ms(&store->svol_closed, &store->lock, *deadline);
	return 0;
}

/*
 * Step 1's lookups (store->lock held): rows v of vol and s of snap.  While a
 * rollback of vol runs: to another snapshot, -EBUSY ("try again when it
 * ends"); to the same one (a client's retry, review 16b R2), wait for its end
 * (ROLLBACK_WAIT_MS at most, then -EBUSY) and look again, so that the caller
 * then runs it again: the same image, idempotent, and a failed first one
 * finished.  Callers on an event loop pass nowait (the _nowait entry
 * points): -EBUSY at once instead (review 16d N5).  Once the store is
 * closing (tsr_store_closing), a waiter answers -ESHUTDOWN at once (woken by
 * the broadcast on rollback_end) instead of waiting and then copying again
 * (review 16d N4); a running copy still finishes (tsr_store_close waits).
 */
static int rollback_wait_same(struct tsr_store *store, const char *vol, const char *snap,
			      bool nowait, struct vol_row *v, struct snap_row *s)
{
	int64_t deadline = -1;
	struct tsr_svol *h;
	int ret;

	for (;;) {
		ret = get_vol(store, "rollback", vol, v);
		if (ret == 0)
			ret = get_snap(store, "rollback", v, snap, s, TSR_LOG_ERROR);
		if (ret)
			return ret;
		h = store_find_open_uuid(store, v->uuid);
		if (h == NULL || !h->rollback_running)
			return 0;
		if (strcmp(h->rollback_snap, s->uuid) != 0) {
			tsr_warn("rollback: volume %s to %s: a rollback of it to another snapshot "
				 "is running: try again when it ends",
				 vol, snap);
			return -EBUSY;
		}
		if (nowait) { /* an event loop's caller (review 16d N5) */
			tsr_warn("rollback: volume %s to %s: the same rollback is running: "
				 "try again when it ends",
				 vol, snap);
			return -EBUSY;
		}
		if (store->closing) { /* review 16d N4: shutdown does not wait for a retry */
			tsr_warn("rollback: volume %s to %s: the store is closing: not waiting "
				 "for the same rollback running",
				 vol, snap);
			return -ESHUTDOWN;
		}
		if (deadline < 0) {
			deadline = tsr_mono_ms() + rollback_wait_ms();
			tsr_info("rollback: volume %s to %s: the same rollback is running: "
				 "waiting for its end",
				 vol, snap);
			if (store_test_rollback_wait)
				store_test_rollback_wait(store_test_rollback_wait_arg);
		} else if (tsr_mono_ms() >= deadline) {
			tsr_warn("rollback: volume %s to %s: the same rollback still runs after "
				 "%lld s: try again when it ends",
				 vol, snap, (long long)(rollback_wait_ms() / 1000));
			return -EBUSY;
		}
		tsr_cond_wait_until_ms(&store->rollback_end, &store->lock, deadline);
	}
}

/*
 * Step 3 (store->lock held, rollback_running cleared): close the layers
 * chain_publish retired during the copy when chain_publish's own rule allows
 * it now, instead of keeping their space until the head's last ref goes
 * (review 16b L1: a merge job's ref can outlive the rollback into an attach).
 */
static void retired_close_quiet(struct tsr_svol *h)
{
	struct layer *l;

	if (h->child_refs || h->ro_handles || !chain_quiet(h))
		return;
	while ((l = h->retired_layers)) {
		h->retired_layers = l->next_retired;
		layer_close(l);
	}
}

bool tsr_store_vol_rollback_running(struct tsr_store *store, const char *vol)
{
	struct tsr_svol *svol;
	struct vol_row v;
	bool running = false;

	if (vol == NULL || !tsr_valid_name(vol))
		return false;
	pthread_mutex_lock(&store->lock);
	if (catalog_get(store->db, vol, &v) == 0) {
		svol = store_find_open_uuid(store, v.uuid);
		running = svol && svol->rollback_running;
	}
	pthread_mutex_unlock(&store->lock);
	return running;
}

enum tsr_rollback_busy tsr_store_vol_rollback_busy(struct tsr_store *store, const char *vol,
						   const char *snap)
{
	enum tsr_rollback_busy busy = TSR_ROLLBACK_BUSY_NONE;
	struct tsr_svol *svol;
	struct snap_row s;
	struct vol_row v;

	if (vol == NULL || !tsr_valid_name(vol))
		return busy;
	pthread_mutex_lock(&store->lock);
	if (catalog_get(store->db, vol, &v) == 0) {
		svol = store_find_open_uuid(store, v.uuid);
		if (svol && svol->rollback_running) {
			/* a snapshot not found (deleted since): not the running one */
			busy = snap != NULL && get_snap(store, "rollback", &v, snap, &s,
							TSR_LOG_DEBUG) == 0 &&
			       strcmp(svol->rollback_snap, s.uuid) == 0 ?
			       TSR_ROLLBACK_BUSY_SAME : TSR_ROLLBACK_BUSY_OTHER;
		}
	}
	pthread_mutex_unlock(&store->lock);
	return busy;
}

bool tsr_store_rollback_busy_msg(struct tsr_store *store, const char *vol, const char *snap,
				 bool nowait, char *msg, size_t msg_len)
{
	switch (tsr_store_vol_rollback_busy(store, vol, snap)) {
	case TSR_ROLLBACK_BUSY_OTHER:
		snprintf(msg, msg_len, "another rollback of this copy (to another snapshot) is "
			 "running; wait for it to end, then run the rollback again");
		return true;
	case TSR_ROLLBACK_BUSY_SAME:
		if (nowait)
			snprintf(msg, msg_len, "a rollback of this copy to the same snapshot '%s' "
				 "is running already (this call ran on tesserad's control loop, "
				 "which does not wait for it); wait for it to end, then run the "
				 "rollback again", snap);
		else
			snprintf(msg, msg_len, "a rollback of this copy to the same snapshot '%s' "
				 "still runs after this call waited %lld s for its end; wait for "
				 "it to end (the node's log then says 'rollback: volume %s is %s "
				 "again'), then run the rollback again", snap,
				 (long long)(rollback_wait_ms() / 1000), vol, snap);
		return true;
	case TSR_ROLLBACK_BUSY_NONE:
		break;
	}
	return false;
}

/*
 * Three steps, so that the store's other calls do not wait for the data copy
 * (review 15b F2):
 * 1. store->lock held: the rows; when a rollback of the volume already runs,
 *    -EBUSY if it is to another snapshot, else a wait for its end
 *    (rollback_wait_same: a client's retry then runs it again); the open
 *    check, the row marked VOL_ROLLBACK (durable), a ref on the head h,
 *    h->rollback_running and h->rollback_snap set; a fenced rollback
 *    (tsr_store_vol_rollback_epoch) -ESTALE first when the row's epoch is
 *    past its fence (review 16b I2: a newer coordinator's OPEN between the
 *    caller's fence check and this step).  From then until step 3 the calls
 *    that would open the volume or change it, its chain or its epoch answer
 *    -EBUSY (store_rollback_busy); catalogue reads go on.
 * 2. Without the lock: rollback_run (the head's writes through the usual
 *    copy-on-write path, which runs lock-free on served volumes too), then
 *    stage_drop (its own j->lock).  A merge of a delete queued before may
 *    publish a chain meanwhile: chain_publish retires the dropped layer
 *    (still mapped) instead of closing it while rollback_running is set, and
 *    a merge never changes an image.
 * 3. store->lock again: the row read again by uuid (not the copy of step 1,
 *    which must not be written back), VOL_ROLLBACK cleared on success (left
 *    on failure: opens refused -EAGAIN until a rollback runs again), the flag
 *    cleared, layers retired meanwhile closed if chain_publish's rule allows
 *    it now, the ref dropped, the waiters woken (store->rollback_end).
 * The crash rule is unchanged: the row's flag is durable before any block is
 * touched and cleared only after the flush and stage_drop.
 */
static int vol_rollback(struct tsr_store *store, const char *vol, const char *snap, uint64_t epoch,
			bool nowait)
{
	int64_t close_deadline = -1;
	struct tsr_svol *h = NULL;
	struct snap_row s;
	struct vol_row v;
	int ret;

	pthread_mutex_lock(&store->lock);
	store->rollbacks++;
	for (;;) { /* the lookups again after each wait for a close */
		ret = rollback_wait_same(store, vol, snap, nowait, &v, &s);
		if (ret == 0 && epoch != ANY_EPOCH) /* a newer coordinator opened it since */
			ret = check_epoch("rollback", &v, epoch);
		if (ret)
			goto out;
		h = store_find_open_uuid(store, v.uuid);
		if (h == NULL || (h->opens == 0 && h->ro_handles == 0))
			break;
		ret = rollback_wait_closed(store, vol, h, nowait, &close_deadline);
		h = NULL;
		if (ret)
			goto out;
	}
	h = NULL;
	if (!(v.flags & VOL_ROLLBACK)) {
		v.flags |= VOL_ROLLBACK;
		ret = catalog_update_row(store->db, v.name, &v);
		if (ret)
			goto out;
	}
	ret = store_svol_get_uuid(store, v.uuid, &h);
	if (ret)
		goto out;
	h->rollback_running = true;
	snprintf(h->rollback_snap, sizeof(h->rollback_snap), "%s", s.uuid);
	rollback_test_locked_hold(vol);
	pthread_mutex_unlock(&store->lock);

	rollback_test_hold(vol);
	ret = rollback_run(h, &s);
	if (ret == 0) /* staged or committed chunk writes belong to the old head */
		ret = stage_drop(h);

	pthread_mutex_lock(&store->lock);
	h->rollback_running = false;
	h->rollback_snap[0] = '\0';
	retired_close_quiet(h);
	if (ret) {
		tsr_error("rollback: volume %s to %s: %s; run it again to finish", vol, snap,
			  strerror(-ret));
		goto out;
	}
	ret = catalog_get_uuid(store->db, v.uuid, &v);
	if (ret == 0) {
		v.flags &= ~VOL_ROLLBACK;
		ret = catalog_update_row(store->db, v.name, &v);
	}
	if (ret == 0)
		tsr_info("rollback: volume %s is %s again", vol, snap);
	else
		tsr_error("rollback: volume %s to %s: its row: %s; run it again to finish", vol,
			  snap, strerror(-ret));
out:
	if (h)
		store_svol_unref(h);
	store->rollbacks--;
	pthread_cond_broadcast(&store->rollback_end); /* waiters, tsr_store_close */
	pthread_mutex_unlock(&store->lock);
	return ret;
}

int tsr_store_vol_rollback(struct tsr_store *store, const char *vol, const char *snap)
{
	return vol_rollback(store, vol, snap, ANY_EPOCH, false);
}

int tsr_store_vol_rollback_nowait(struct tsr_store *store, const char *vol, const char *snap)
{
	return vol_rollback(store, vol, snap, ANY_EPOCH, true);
}

int tsr_store_vol_rollback_epoch(struct tsr_store *store, const char *vol, const char *snap,
				 uint64_t epoch)
{
	return vol_rollback(store, vol, snap, epoch, false);
}

int tsr_store_vol_rollback_epoch_nowait(struct tsr_store *store, const char *vol,
					const char *snap, uint64_t epoch)
{
	return vol_rollback(store, vol, snap, epoch, true);
}
