/*
 * Volume coordinator (layer 2).  Today a volume attached on this node has one
 * local copy, so the coordinator's data path is a pass-through to its
 * layout; this is where write ordering, the epoch fence and the in-sync set
 * live once replication arrives.
 *
 * Locking policy: the volset's mutex guards the list of attached volumes and
 * their reference counts (attach, detach, in-use checks: control path only).
 * The data path takes no lock.  Nothing waits for another node under it: an
 * ec snapshot's export, whose make may ask the chunk copies (up to the peer
 * timeout), is made with the lock let go and the coordinator pinned
 * (get_ec_snapshot_locked); only the coordinator's last put (a detach) waits
 * for such an open to end, so that its layout is destroyed by the detaching
 * thread while the home worker runs.
 *
 * Two kinds of entries: a standalone node attaches a local volume on first
 * use (tsr_vol_get) and drops it with its last handle; a cluster node serves
 * only the coordinators the cluster layer registered (tsr_volset_attach).
 * Either runs its data path on one worker, its home (local volumes: round
 * robin over tsr_volset_set_workers' list at first open; coordinators: the
 * cluster layer's choice); the NBD layer moves each connection there after
 * the handshake, so a layout is only ever used by one thread.
 *
 * A name "VOL@SNAP" is snapshot SNAP of VOL, served read-only from this
 * node's store (a local layout over tsr_store_snap_open), on a cluster node
 * too: a snapshot never changes, so any store holding it may serve it.  It
 * has no home (any worker may read it).  Exception: on the node where an
 * erasure-coded VOL is attached, "VOL@SNAP" is the ec snapshot layout
 * (tsr_layout_ec_snap_create: chunks read from every copy's snapshot and
 * decoded), with the coordinator's home worker as its home.  Everywhere
 * else an ec volume's "VOL@SNAP" is refused (-ENOENT): the store copy is one
 * chunk column (its catalogue row says so, TSR_VOL_EC_CHUNK), not the image.
 *
 * tsr_volset_snap_async runs a snapshot request through the gate of a
 * volume's layout (layout.c) on its home worker and reports on that worker's
 * thread once the cut is made (the admin server hands it back to its loop);
 * tsr_volset_snap is the blocking form (a condition variable), for callers
 * that may block: tests, and the admin and cluster layers only when no later
 * reply can be taken (a command run outside a connection's request).
 *
 * Geo-replication taps (tsr_vol_set_hooks): while hooks are installed, each
 * host write, zero and trim carries a small context (recycled on the home
 * worker, no lock) so that its completion reports to the hooks before the
 * host's callback runs; the write fence (an atomic int) refuses host writes
 * on a replication target or a demoted former primary.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tessera/ec.h"
#include "tessera/layout.h"
#include "tessera/vol.h"

/* "VOL@SNAP": two names and the '@' */
#define VOL_NAME_MAX (2 * TSR_SNAP_NAME_MAX + 1)

struct tsr_vol {
	struct tsr_volset *set;    /* owner; outlives every vol */
	char name[VOL_NAME_MAX + 1]; /* volume name or "VOL@SNAP" (export name) */
	struct tsr_layout *layout; /* how the volume maps onto copies */
	struct tsr_worker *home;   /* worker that must run the I/O, NULL: any */
	unsigned refs;             /* handles held (+1 while registered); guarded by set->lock */
	unsigned pins;             /* opens using layout without set->lock (an ec snapshot's
				    * make, get_ec_snapshot_locked); guarded by set->lock;
				    * the last put waits for 0 (set->unpinned) */
	bool registered;           /* tsr_volset_attach'ed and not yet detached */
	bool local;                /* opened by tsr_vol_get (a local layout), not registered */
	bool snapshot;             /* "VOL@SNAP": read-only, no home */
	struct tsr_vol *next;      /* set->attached list; guarded by set->lock */
	/* geo-replication taps (home worker only, see tsr_vol_set_hooks) */
	struct tsr_vol_hooks hooks; /* on_write NULL: none installed */
	struct tap_req *free_taps;  /* recycled tap contexts (home worker only) */
	_Atomic int write_fence;    /* 0, or the error host writes fail with */
};

/* One host write/zero/trim in flight while hooks are installed. */
struct tap_req {
	struct tsr_vol *vol;
	bool zero;                 /* write_zeroes or trim: on_zero */
	uint64_t offset, len;
	const void *buf;           /* the host's, valid until its cb */
	tsr_cb cb_fn;
	void *cb_arg;
	struct tap_req *next;      /* vol->free_taps */
};

struct tsr_volset {
	struct tsr_store *store;   /* the node's local store */
	pthread_mutex_t lock;      /* see the policy in the file header */
	pthread_cond_t unpinned;   /* with lock: some vol's pins dropped to 0 */
	struct tsr_vol *attached;  /* volumes with refs > 0 */
	bool cluster_mode;         /* serve registered volumes (and snapshots) only */
	struct tsr_worker **workers; /* homes for local volumes (set_workers), or NULL */
	unsigned n_workers;
	unsigned next_worker;      /* round robin; guarded by lock */
	/* the host clients (tsr_volset_set_client_ops), NULL: none; guarded by
	 * lock, called without it (their implementer has its own) */
	const struct tsr_volset_client_ops *client_ops;
	void *client_arg;
};

int tsr_volset_create(struct tsr_store *store, struct tsr_volset **out)
{
	struct tsr_volset *set = calloc(1, sizeof(*set));

	if (set == NULL)
		return -ENOMEM;
	set->store = store;
	pthread_mutex_init(&set->lock, NULL);
	pthread_cond_init(&set->unpinned, NULL);
	*out = set;
	return 0;
}

void tsr_volset_destroy(struct tsr_volset *set)
{
	if (set == NULL)
		return;
	pthread_cond_destroy(&set->unpinned);
	pthread_mutex_destroy(&set->lock);
	free(set->workers);
	free(set);
}

/* The live entry for name: a registered coordinator, or a local volume in use.
 * A detached coordinator still draining its last handles is not found. */
static struct tsr_vol *find_locked(struct tsr_volset *set, const char *name)
{
	struct tsr_vol *v;

	for (v = set->attached; v; v = v->next)
		if (strcmp(v->name, name) == 0 && (v->registered || v->local))
			return v;
	return NULL;
}

static void unlink_locked(struct tsr_vol *vol)
{
	struct tsr_vol **pp;

	for (pp = &vol->set->attached; *pp; pp = &(*pp)->next) {
		if (*pp == vol) {
			*pp = vol->next;
			break;
		}
	}
}

void tsr_volset_set_cluster_mode(struct tsr_volset *set, bool on)
{
	set->cluster_mode = on;
}

void tsr_volset_set_workers(struct tsr_volset *set, struct tsr_worker *const *workers,
			    unsigned n)
{
	struct tsr_worker **copy = NULL;

	if (n > 0) {
		copy = calloc(n, sizeof(*copy));
		if (copy == NULL) {
			/* still correct, only slower: every worker may run every volume */
			tsr_warn("vol: no memory for the home worker list; volumes run on any worker");
			n = 0;
		} else {
			memcpy(copy, workers, n * sizeof(*copy));
		}
	}
	pthread_mutex_lock(&set->lock);
	free(set->workers);
	set->workers = copy;
	set->n_workers = n;
	set->next_worker = 0;
	pthread_mutex_unlock(&set->lock);
}

/*
 * Split "VOL@SNAP" into vol (both parts valid names).  Returns 1 for a
 * snapshot name, 0 for a plain valid name, -ENOENT otherwise.
 */
static int split_name(const char *name, char vol[64])
{
	const char *at = strchr(name, '@');
	size_t n;

	if (at == NULL)
		return tsr_valid_name(name) ? 0 : -ENOENT;
	n = (size_t)(at - name);
	if (n == 0 || n > TSR_SNAP_NAME_MAX || !tsr_valid_name(at + 1))
		return -ENOENT;
	memcpy(vol, name, n);
	vol[n] = '\0';
	return tsr_valid_name(vol) ? 1 : -ENOENT;
}

int tsr_volset_attach(struct tsr_volset *set, const char *name, struct tsr_layout *layout,
		      struct tsr_worker *home)
{
	return tsr_volset_attach_fenced(set, name, layout, home, 0);
}

int tsr_volset_attach_fenced(struct tsr_volset *set, const char *name, struct tsr_layout *layout,
			     struct tsr_worker *home, int write_fence)
{
	struct tsr_vol *v;
	int ret = 0;

	if (!tsr_valid_name(name) || layout == NULL)
		return -EINVAL;
	pthread_mutex_lock(&set->lock);
	if (find_locked(set, name) != NULL) {
		ret = -EEXIST;
		goto out;
	}
	v = calloc(1, sizeof(*v));
	if (v == NULL) {
		ret = -ENOMEM;
		goto out;
	}
	v->set = set;
	strncpy(v->name, name, sizeof(v->name) - 1);
	v->layout = layout;
	v->home = home;
	v->registered = true;
	atomic_store(&v->write_fence, write_fence); /* before anyone can find it */
	v->refs = 1; /* the registration's */
	v->next = set->attached;
	set->attached = v;
out:
	pthread_mutex_unlock(&set->lock);
	return ret;
}

int tsr_volset_detach(struct tsr_volset *set, const char *name)
{
	struct tsr_vol *v;

	pthread_mutex_lock(&set->lock);
	v = find_locked(set, name);
	if (v == NULL || !v->registered) {
		pthread_mutex_unlock(&set->lock);
		return -ENOENT;
	}
	v->registered = false;
	pthread_mutex_unlock(&set->lock);
	tsr_vol_put(v); /* the registration's reference */
	return 0;
}

struct tsr_layout *tsr_volset_layout(struct tsr_volset *set, const char *name)
{
	struct tsr_vol *v;
	struct tsr_layout *l = NULL;

	pthread_mutex_lock(&set->lock);
	v = find_locked(set, name);
	if (v != NULL && v->registered)
		l = v->layout;
	pthread_mutex_unlock(&set->lock);
	return l;
}

struct tsr_worker *tsr_vol_home(const struct tsr_vol *vol)
{
	return vol->home;
}

/*
 * A cluster node's store copy of an ec volume is one chunk column, not the
 * image: its snapshot is never served as "VOL@SNAP" here (only the node
 * where VOL is attached decodes it).  The store's catalogue says so
 * (TSR_VOL_EC_CHUNK, set when the cluster created the copy); copies made
 * before the flag existed are served as before.  -ENOENT or 0.
 */
static int refuse_ec_chunk(struct tsr_volset *set, const char *vol, const char *name)
{
	bool chunk = false;
	int ret = tsr_store_vol_ec_chunk(set->store, vol, &chunk);

	if (ret == 0 && !chunk)
		return 0;
	if (ret == 0)
		tsr_warn("vol: export %s refused: this node holds one chunk of erasure-coded "
			 "volume %s, not its image; connect to the node where %s is attached "
			 "(tessera snapshot show gives the URI), or attach %s first", name, vol,
			 vol, vol);
	else if (ret != -ENOENT)
		tsr_warn("vol: export %s refused: cannot read volume %s in the store: %s", name,
			 vol, strerror(-ret));
	return -ENOENT;
}

/* The layout's way back to its home worker (tsr_layout_set_home). */
struct home_call {
	void (*fn)(void *arg);
	void *arg;
};

static void home_call_msg(struct tsr_worker *w, void *arg)
{
	struct home_call hc = *(struct home_call *)arg;

	(void)w;
	free(arg);
	hc.fn(hc.arg);
}

static int home_post(void *post_arg, void (*fn)(void *arg), void *arg)
{
	struct home_call *hc = malloc(sizeof(*hc));
	int ret;

	if (hc == NULL)
		return -ENOMEM;
	hc->fn = fn;
	hc->arg = arg;
	ret = tsr_worker_send(post_arg, home_call_msg, hc);
	if (ret < 0)
		free(hc);
	return ret < 0 ? ret : 0;
}

/* Put v at the head of the attached list, one reference held. */
static void link_locked(struct tsr_volset *set, struct tsr_vol *v, const char *name,
			bool snapshot)
{
	v->set = set;
	strncpy(v->name, name, sizeof(v->name) - 1);
	v->refs = 1;
	v->local = true;
	v->snapshot = snapshot;
	v->next = set->attached;
	set->attached = v;
}

/* The end of an entry nobody holds or pins any more (unlinked): its layout
 * and itself.  Without set->lock. */
static void vol_free(struct tsr_vol *vol)
{
	tsr_layout_destroy(vol->layout);
	while (vol->free_taps) {
		struct tap_req *t = vol->free_taps;

		vol->free_taps = t->next;
		free(t);
	}
	free(vol);
}

/* A pinned coordinator outlives a detach made meanwhile: its last put waits
 * for the last unpin (tsr_vol_put). */
static void unpin_locked(struct tsr_vol *coord)
{
	if (--coord->pins == 0)
		pthread_cond_broadcast(&coord->set->unpinned);
}

/*
 * "VOL@SNAP" of an ec volume coordinated here: the image decoded from its
 * chunk copies' snapshots on the coordinator's home worker.  Making it may
 * ask the other copies whether they hold SNAP (ec_snapread.c: up to the peer
 * timeout when one does not answer), so it runs without set->lock, the
 * coordinator pinned (not a handle: it is not "in use"; a detach made
 * meanwhile unregisters it at once and its destroy waits for the unpin).
 * Called and returns with set->lock held.  0 (*out: a new entry, or the one
 * another open made meanwhile), -ENOENT (no such snapshot, or VOL detached
 * meanwhile), -errno.  The caller, once it let go of the lock, destroys
 * *destroy (a layout made for nothing).
 */
static int get_ec_snapshot_locked(struct tsr_volset *set, struct tsr_vol *coord,
				  const char *name, struct tsr_vol **out,
				  struct tsr_layout **destroy)
{
	struct tsr_layout *layout = NULL;
	struct tsr_worker *home = NULL;
	struct tsr_vol *v;
	int ret;

	coord->pins++;
	pthread_mutex_unlock(&set->lock);
	ret = tsr_layout_ec_snap_create(coord->layout, strchr(name, '@') + 1, &layout, &home);
	if (ret == -ENOENT)
		tsr_info("vol: export %s refused: fewer than k chunk copies hold snapshot %s",
			 name, strchr(name, '@') + 1);
	v = ret == 0 ? calloc(1, sizeof(*v)) : NULL;
	if (ret == 0 && v == NULL)
		ret = -ENOMEM;
	pthread_mutex_lock(&set->lock);
	unpin_locked(coord);
	if (ret == 0 && !coord->registered) {
		ret = -ENOENT; /* detached meanwhile: as if asked after */
	} else if (ret == 0 && (*out = find_locked(set, name)) != NULL) {
		(*out)->refs++; /* another open of the same name was faster */
	} else if (ret == 0) {
		link_locked(set, v, name, true);
		v->layout = layout;
		v->home = home;
		*out = v;
		return 0;
	}
	free(v);
	*destroy = layout;
	return ret;
}

int tsr_vol_get(struct tsr_volset *set, const char *name, struct tsr_vol **out)
{
	struct tsr_vol *v = NULL, *coord;
	struct tsr_layout *destroy = NULL;
	char vol[64];
	int snapshot = split_name(name, vol);
	int ret = 0;

	if (snapshot < 0)
		return -ENOENT;
	pthread_mutex_lock(&set->lock);
	v = find_locked(set, name);
	if (v) {
		v->refs++;
		goto out;
	}
	if (set->cluster_mode && !snapshot) {
		/* the store's volumes are copies: only their coordinator writes them */
		ret = -ENOENT;
		goto out;
	}
	coord = snapshot && set->cluster_mode ? find_locked(set, vol) : NULL;
	if (coord != NULL && coord->registered && tsr_layout_is_ec(coord->layout)) {
		ret = get_ec_snapshot_locked(set, coord, name, &v, &destroy);
		goto out;
	}
	/* Debt: the store's catalogue read and file opens under the lock (short) */
	v = calloc(1, sizeof(*v));
	if (v == NULL) {
		ret = -ENOMEM;
		goto out;
	}
	ret = set->cluster_mode ? refuse_ec_chunk(set, vol, name) : 0;
	if (ret == 0) {
		ret = tsr_layout_local_create(set->store, name, &v->layout);
		/* the store says it at DEBUG only (tsr_store_snap_open) */
		if (ret == -ENOENT && snapshot)
			tsr_info("vol: export %s refused: no such snapshot here", name);
	}
	if (ret) {
		free(v);
		v = NULL;
		goto out;
	}
	link_locked(set, v, name, snapshot);
	/* a writable volume's layout (its snapshot gate) runs on one thread */
	if (!snapshot && set->n_workers > 0) {
		v->home = set->workers[set->next_worker++ % set->n_workers];
		tsr_layout_set_home(v->layout, home_post, v->home);
	}
out:
	pthread_mutex_unlock(&set->lock);
	tsr_layout_destroy(destroy);
	if (ret == 0)
		*out = v;
	return ret;
}

void tsr_vol_put(struct tsr_vol *vol)
{
	struct tsr_volset *set;

	if (vol == NULL)
		return;
	set = vol->set;
	pthread_mutex_lock(&set->lock);
	if (--vol->refs > 0) {
		pthread_mutex_unlock(&set->lock);
		return;
	}
	unlink_locked(vol);
	/* an open making one of its ec snapshots uses its layout: the last put
	 * waits (at most the peer timeout + 1 s) rather than leave the destroy
	 * to that open's thread, which may outlive the home worker */
	while (vol->pins > 0)
		pthread_cond_wait(&set->unpinned, &set->lock);
	pthread_mutex_unlock(&set->lock);
	vol_free(vol);
}

bool tsr_volset_in_use(struct tsr_volset *set, const char *name)
{
	struct tsr_vol *v;
	bool in_use = false;

	pthread_mutex_lock(&set->lock);
	/* any entry: a detached coordinator still draining counts too */
	for (v = set->attached; v && !in_use; v = v->next)
		in_use = strcmp(v->name, name) == 0;
	pthread_mutex_unlock(&set->lock);
	return in_use;
}

bool tsr_vol_shared(struct tsr_vol *vol)
{
	bool shared;

	pthread_mutex_lock(&vol->set->lock);
	shared = vol->refs > 1;
	pthread_mutex_unlock(&vol->set->lock);
	return shared;
}

void tsr_volset_set_client_ops(struct tsr_volset *set, const struct tsr_volset_client_ops *ops,
			       void *arg)
{
	pthread_mutex_lock(&set->lock);
	set->client_ops = ops;
	set->client_arg = arg;
	pthread_mutex_unlock(&set->lock);
}

/* The installed client ops (*arg their argument), or NULL.  The caller
 * (control thread) runs while they stay installed: the NBD server is
 * destroyed after the control loop ends. */
static const struct tsr_volset_client_ops *client_ops_get(struct tsr_volset *set, void **arg)
{
	const struct tsr_volset_client_ops *ops;

	pthread_mutex_lock(&set->lock);
	ops = set->client_ops;
	*arg = set->client_arg;
	pthread_mutex_unlock(&set->lock);
	return ops;
}

unsigned tsr_volset_clients(struct tsr_volset *set, const char *name,
			    char (*peers)[TSR_PEER_ADDR_MAX], unsigned max)
{
	void *arg;
	const struct tsr_volset_client_ops *ops = client_ops_get(set, &arg);

	return ops ? ops->list(arg, name, peers, max) : 0;
}

unsigned tsr_volset_disconnect(struct tsr_volset *set, const char *name)
{
	void *arg;
	const struct tsr_volset_client_ops *ops = client_ops_get(set, &arg);

	return ops ? ops->disconnect(arg, name) : 0;
}

/* ---- snapshot requests through a volume's gate ---- */

/* One snapshot request on its way through a volume's gate. */
struct snap_call {
	struct tsr_vol *vol;        /* our reference, put on the home worker */
	struct tsr_snap_req req;    /* copied at the start: the caller's may go */
	int status;                 /* the gate's result, set before snap_put_msg */
	tsr_cb cb_fn;               /* the caller's, fired once after the put */
	void *cb_arg;
};

/* On the home worker, after the gate's callback returned: drop our handle
 * (the layout may be destroyed here, on its own thread), then report. */
static void snap_put_msg(struct tsr_worker *w, void *arg)
{
	struct snap_call *call = arg;
	tsr_cb cb_fn = call->cb_fn;
	void *cb_arg = call->cb_arg;
	int status = call->status;

	(void)w;
	tsr_vol_put(call->vol);
	free(call);
	cb_fn(cb_arg, status);
}

static void snap_cb(void *arg, int status)
{
	struct snap_call *call = arg;

	call->status = status;
	/* the gate still runs on this stack: let go of the volume afterwards */
	if (call->vol->home == NULL || tsr_worker_defer(call->vol->home, snap_put_msg, call) < 0)
		snap_put_msg(call->vol->home, call);
}

/* Tests only: while the file named by $TSR_TEST_SNAP_HOLD_FILE exists (at
 * most 30 s), a snapshot request holds its volume's home worker before the
 * gate: a slow cut (test-cluster-snapshot.sh). */
static void snap_test_hold(void)
{
	const char *path = getenv("TSR_TEST_SNAP_HOLD_FILE");

	for (int i = 0; path != NULL && path[0] && i < 3000 && access(path, F_OK) == 0; i++)
		usleep(10000);
}

static void snap_msg(struct tsr_worker *w, void *arg)
{
	struct snap_call *call = arg;
	int ret;

	(void)w;
	snap_test_hold();
	ret = tsr_layout_snap(call->vol->layout, &call->req, snap_cb, call);
	if (ret < 0)
		snap_cb(call, ret);
}

int tsr_volset_snap_async(struct tsr_volset *set, const char *name,
			  const struct tsr_snap_req *req, tsr_cb cb_fn, void *cb_arg)
{
	struct snap_call *call;
	struct tsr_vol *v;
	int ret;

	if (req == NULL || cb_fn == NULL)
		return -EINVAL;
	call = calloc(1, sizeof(*call));
	if (call == NULL)
		return -ENOMEM;
	pthread_mutex_lock(&set->lock);
	v = find_locked(set, name);
	if (v != NULL && !v->snapshot)
		v->refs++;
	else
		v = NULL;
	pthread_mutex_unlock(&set->lock);
	if (v == NULL) {
		free(call);
		return -ENOENT;
	}
	call->vol = v;
	call->req = *req;
	call->cb_fn = cb_fn;
	call->cb_arg = cb_arg;
	if (v->home == NULL) {
		/* no workers configured (unit tests): the caller's thread is the only user */
		snap_msg(NULL, call);
		return 0;
	}
	ret = tsr_worker_send(v->home, snap_msg, call);
	if (ret < 0) {
		tsr_vol_put(v);
		free(call);
	}
	return ret;
}

/* The blocking form: a condition variable the callback signals. */
struct snap_wait {
	pthread_mutex_t lock;       /* guards done and status */
	pthread_cond_t cond;
	bool done;
	int status;
};

static void snap_wait_cb(void *arg, int status)
{
	struct snap_wait *sw = arg;

	pthread_mutex_lock(&sw->lock);
	sw->status = status;
	sw->done = true;
	pthread_cond_signal(&sw->cond);
	pthread_mutex_unlock(&sw->lock);
}

int tsr_volset_snap(struct tsr_volset *set, const char *name, const struct tsr_snap_req *req)
{
	struct snap_wait sw = { .done = false };
	int ret;

	pthread_mutex_init(&sw.lock, NULL);
	pthread_cond_init(&sw.cond, NULL);
	ret = tsr_volset_snap_async(set, name, req, snap_wait_cb, &sw);
	if (ret == 0) {
		pthread_mutex_lock(&sw.lock);
		while (!sw.done)
			pthread_cond_wait(&sw.cond, &sw.lock);
		ret = sw.status;
		pthread_mutex_unlock(&sw.lock);
	}
	pthread_cond_destroy(&sw.cond);
	pthread_mutex_destroy(&sw.lock);
	return ret;
}

const char *tsr_vol_name(const struct tsr_vol *vol)
{
	return vol->name;
}

uint64_t tsr_vol_size(const struct tsr_vol *vol)
{
	return tsr_layout_size(vol->layout);
}

int tsr_vol_read(struct tsr_vol *vol, struct tsr_io *io, uint64_t offset, uint32_t len,
		 void *buf, tsr_cb cb_fn, void *cb_arg)
{
	return tsr_layout_read(vol->layout, io, offset, len, buf, cb_fn, cb_arg);
}

int tsr_vol_read_direct(struct tsr_vol *vol, struct tsr_io *io, uint64_t offset, uint32_t len,
			void *buf, tsr_cb cb_fn, void *cb_arg)
{
	return tsr_layout_read_direct(vol->layout, io, offset, len, buf, cb_fn, cb_arg);
}

/* ---- replication taps and the write fence ---- */

int tsr_vol_set_hooks(struct tsr_vol *vol, const struct tsr_vol_hooks *h)
{
	if (h != NULL && vol->hooks.on_write != NULL)
		return -EBUSY;
	if (h == NULL)
		memset(&vol->hooks, 0, sizeof(vol->hooks));
	else
		vol->hooks = *h;
	return 0;
}

void tsr_vol_set_write_fence(struct tsr_vol *vol, int err)
{
	atomic_store(&vol->write_fence, err);
}

int tsr_vol_write_fence(const struct tsr_vol *vol)
{
	return atomic_load(&vol->write_fence);
}

static void tap_done(void *arg, int status)
{
	struct tap_req *t = arg;
	struct tsr_vol *vol = t->vol;
	tsr_cb cb_fn = t->cb_fn;
	void *cb_arg = t->cb_arg;

	/* the hooks see it before the host does: log order is ack order */
	if (status == 0 && vol->hooks.on_write != NULL) {
		if (t->zero)
			vol->hooks.on_zero(vol->hooks.arg, t->offset, t->len);
		else
			vol->hooks.on_write(vol->hooks.arg, t->offset, (uint32_t)t->len, t->buf);
	}
	if (TSR_KEEP_FREED) {
		t->next = vol->free_taps;
		vol->free_taps = t;
	} else {
		free(t); /* see TSR_KEEP_FREED */
	}
	cb_fn(cb_arg, status);
}

/* A tap context for a host write, or NULL when none is needed (no hooks, or
 * a replication write).  *err: -ENOMEM when one was needed and not had. */
static struct tap_req *tap_get(struct tsr_vol *vol, unsigned flags, bool zero, uint64_t offset,
			       uint64_t len, const void *buf, tsr_cb cb_fn, void *cb_arg, int *err)
{
	struct tap_req *t;

	*err = 0;
	if (vol->hooks.on_write == NULL || (flags & TSR_WRITE_REPL))
		return NULL;
	t = vol->free_taps;
	if (t != NULL)
		vol->free_taps = t->next;
	else if ((t = malloc(sizeof(*t))) == NULL) {
		*err = -ENOMEM;
		return NULL;
	}
	*t = (struct tap_req){ .vol = vol, .zero = zero, .offset = offset, .len = len,
			       .buf = buf, .cb_fn = cb_fn, .cb_arg = cb_arg };
	return t;
}

static void tap_put_back(struct tap_req *t)
{
	t->next = t->vol->free_taps;
	t->vol->free_taps = t;
}

static int fence_check(const struct tsr_vol *vol, unsigned flags)
{
	if (flags & TSR_WRITE_REPL)
		return 0;
	return atomic_load_explicit(&vol->write_fence, memory_order_relaxed);
}

enum modify_kind { MODIFY_WRITE, MODIFY_TRIM, MODIFY_ZEROES };

static int layout_modify(struct tsr_vol *vol, enum modify_kind kind, struct tsr_io *io,
			 uint64_t offset, uint64_t len, const void *buf, unsigned flags,
			 tsr_cb cb_fn, void *cb_arg)
{
	switch (kind) {
	case MODIFY_WRITE:
		return tsr_layout_write(vol->layout, io, offset, (uint32_t)len, buf, flags, cb_fn,
					cb_arg);
	case MODIFY_TRIM:
		return tsr_layout_trim(vol->layout, io, offset, len, cb_fn, cb_arg);
	default:
		return tsr_layout_write_zeroes(vol->layout, io, offset, len, flags, cb_fn, cb_arg);
	}
}

/* A host (or replication) change of the volume: the fence, then the layout,
 * through a tap context when hooks are installed. */
static int vol_modify(struct tsr_vol *vol, enum modify_kind kind, struct tsr_io *io,
		      uint64_t offset, uint64_t len, const void *buf, unsigned flags,
		      tsr_cb cb_fn, void *cb_arg)
{
	struct tap_req *t;
	int ret = fence_check(vol, flags);

	if (ret)
		return ret;
	t = tap_get(vol, flags, kind != MODIFY_WRITE, offset, len, buf, cb_fn, cb_arg, &ret);
	if (ret)
		return ret;
	flags &= ~TSR_WRITE_REPL;
	if (t == NULL)
		return layout_modify(vol, kind, io, offset, len, buf, flags, cb_fn, cb_arg);
	ret = layout_modify(vol, kind, io, offset, len, buf, flags, tap_done, t);
	if (ret)
		tap_put_back(t);
	return ret;
}

int tsr_vol_write(struct tsr_vol *vol, struct tsr_io *io, uint64_t offset, uint32_t len,
		  const void *buf, unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	return vol_modify(vol, MODIFY_WRITE, io, offset, len, buf, flags, cb_fn, cb_arg);
}

int tsr_vol_flush(struct tsr_vol *vol, struct tsr_io *io, tsr_cb cb_fn, void *cb_arg)
{
	return tsr_layout_flush(vol->layout, io, cb_fn, cb_arg);
}

int tsr_vol_trim_flags(struct tsr_vol *vol, struct tsr_io *io, uint64_t offset, uint64_t len,
		       unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	return vol_modify(vol, MODIFY_TRIM, io, offset, len, NULL, flags, cb_fn, cb_arg);
}

int tsr_vol_trim(struct tsr_vol *vol, struct tsr_io *io, uint64_t offset, uint64_t len,
		 tsr_cb cb_fn, void *cb_arg)
{
	return tsr_vol_trim_flags(vol, io, offset, len, 0, cb_fn, cb_arg);
}

int tsr_vol_write_zeroes(struct tsr_vol *vol, struct tsr_io *io, uint64_t offset,
			 uint64_t len, unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	return vol_modify(vol, MODIFY_ZEROES, io, offset, len, NULL, flags, cb_fn, cb_arg);
}

int tsr_vol_block_status(struct tsr_vol *vol, uint64_t offset, uint64_t len,
			 struct tsr_extent *ext, size_t max, size_t *count)
{
	return tsr_layout_block_status(vol->layout, offset, len, ext, max, count);
}
