/*
 * Cluster membership and the threads of the control plane.
 *
 * Start: open the metadata store (sqlite on --meta, else the meta node's
 * service), start the meta service (--meta), grant this node's lease and
 * register node/<id> (no lease) and alive/<id> (on the lease).
 *
 * The background thread ("cluster") owns the lease: it renews it every
 * TSR_CLUSTER_KEEPALIVE_MS and records copy-state changes the mirrors ask
 * for (cluster_set_copy_state).  It never calls the store: the leftover
 * sweep (sweep.c), which lists and deletes store copies under the store's
 * lock, runs on a thread of its own ("sweep", with its own metadata handle),
 * so that a store call holding that lock for longer than the lease TTL (a
 * rollback rewriting gigabytes) cannot keep the lease from being renewed
 * (review 15b, finding F4: the node left the cluster and every volume it
 * coordinated was fenced, host I/O EIO).  When the lease cannot be proved any more
 * (the store says it expired, or no renewal succeeded for the TTL minus a
 * margin, measured from the renewal's send time so that the store's own
 * expiry can only come later), every attached mirror is fenced: an isolated
 * coordinator stops acknowledging writes before anyone else can attach.
 * Then it grants a new lease and registers again; fenced volumes stay fenced
 * until someone attaches them again.
 *
 * The main thread runs the admin commands and, every CLUSTER_TICK_SEC, the
 * pass over the attachments (attach.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "admin/admin_internal.h"
#include "cluster/internal.h"
#include "tessera/test_hook.h"

#define FENCE_MARGIN_MS 500u
#define JOIN_RETRY_SEC 30

int64_t cluster_now(void)
{
	return (int64_t)time(NULL);
}

uint64_t cluster_lease(struct tsr_cluster *c)
{
	uint64_t l;

	pthread_mutex_lock(&c->lock);
	l = c->lease;
	pthread_mutex_unlock(&c->lock);
	return l;
}

int cluster_peer_call_ms(const struct tsr_cluster *c)
{
	unsigned ms = c->o.peer_timeout_ms ? c->o.peer_timeout_ms : 5000;

	return (int)(ms < CLUSTER_COPY_TIMEOUT_MS ? ms : CLUSTER_COPY_TIMEOUT_MS);
}

const char *tsr_cluster_node_id(const struct tsr_cluster *c)
{
	return c->node_id;
}

struct tsr_meta_server *tsr_cluster_meta_server(struct tsr_cluster *c)
{
	return c->meta_srv;
}

struct attachment *cluster_find_attachment(struct tsr_cluster *c, const char *name)
{
	for (struct attachment *a = c->attached; a; a = a->next)
		if (strcmp(a->name, name) == 0)
			return a;
	return NULL;
}

struct attachment *cluster_find_recording(struct tsr_cluster *c, const char *name,
					  bool *draining)
{
	struct attachment *a = cluster_find_attachment(c, name);

	if (draining)
		*draining = false;
	for (struct attachment *d = c->draining; d && a == NULL; d = d->next)
		if (strcmp(d->name, name) == 0) {
			a = d;
			if (draining)
				*draining = true;
		}
	return a;
}

/* ---- registration --------------------------------------------------- */

/* Put node/<id> and alive/<id> under lease.  On m (either thread's handle). */
static int register_node(struct tsr_cluster *c, struct tsr_meta *m, uint64_t lease)
{
	Tessera__Cluster__NodeRecord rec = TESSERA__CLUSTER__NODE_RECORD__INIT;
	char key[80];
	int ret;

	rec.id = c->node_id;
	rec.address = c->address;
	rec.zone = c->zone;
	rec.site = c->site;
	rec.capacity = c->o.capacity;
	rec.nbd_listeners = c->nbd_listeners;
	rec.n_nbd_listeners = c->o.n_nbd_listeners;
	rec.started = cluster_now();
	rec.meta = c->o.meta;
	snprintf(key, sizeof(key), "node/%s", c->node_id);
	ret = rec_put(m, key, &rec.base, TSR_META_ANY_REV, 0, NULL);
	if (ret) {
		tsr_error("cluster: register %s: %s", key, strerror(-ret));
		return ret;
	}
	snprintf(key, sizeof(key), "alive/%s", c->node_id);
	/* a restart within the TTL finds its previous life's key: wait for it to lapse */
	for (int64_t start = tsr_mono_ms(), tries = 0;; tries++) {
		ret = tsr_meta_cas(m, key, 0, NULL, 0, lease, NULL);
		if (ret != -ECANCELED ||
		    tsr_mono_ms() - start > (int64_t)TSR_CLUSTER_LEASE_TTL_MS + 1500)
			break;
		if (tries == 0)
			tsr_info("cluster: %s still held (a previous run of this node?): waiting up "
				 "to %u ms for its lease to lapse", key, TSR_CLUSTER_LEASE_TTL_MS);
		/* our fresh lease has the same TTL as the old one: keep it while we wait */
		tsr_meta_lease_keepalive(m, lease);
		usleep(250 * 1000);
	}
	if (ret == -ECANCELED) {
		tsr_error("cluster: node id '%s' is already alive in the cluster (another tesserad "
			  "uses it: give this one another --node-id, or stop the other one and "
			  "wait %u ms)", c->node_id, TSR_CLUSTER_LEASE_TTL_MS);
		return -EEXIST;
	}
	if (ret)
		tsr_error("cluster: register %s: %s", key, strerror(-ret));
	return ret;
}

/* ---- the background thread ------------------------------------------- */

static void fence_all(struct tsr_cluster *c, const char *why)
{
	pthread_mutex_lock(&c->lock);
	for (struct attachment *a = c->attached; a; a = a->next) {
		if (a->fenced)
			continue;
		a->fenced = true;
		if (a->layout)
			tsr_layout_fence(a->layout);
		tsr_warn("cluster: volume %s fenced: %s (attach it again once the node is back in "
			 "the cluster)", a->name, why);
	}
	pthread_mutex_unlock(&c->lock);
}

/*
 * record_state's mutator: copy r->idx's state, refused for a stale epoch.
 * The slot must still list the copy the layout asked for (r->node_id, as
 * missed_mutate): a record that lists another node there was replaced since
 * (1: nothing written), or lists the new node of a replace-replica of that
 * slot still waiting for the coordinator's answer (volume.c).  Then the state
 * is held for that replace's undo (attachment copies[].held_*) and the record
 * is written back unchanged: an undo that read it before must read it again
 * (its compare-and-set fails), so it cannot miss this state.  The old copy is
 * listed nowhere meanwhile, so no coordinator trusts it (review 14b, finding
 * 1: marking the new, empty copy in sync by index lost every write).
 */
struct state_update {
	struct tsr_cluster *c;
	const struct state_req *r;
	uint64_t epoch;    /* our attachment's */
	char node_id[64];  /* the copy's node, for the log */
	int outcome;       /* 0 recorded, 1 replaced since, 2 held for a replace's undo */
};

static bool state_hold(struct state_update *u, const char *listed)
{
	const struct state_req *r = u->r;
	struct attachment *a;
	bool held = false;

	pthread_mutex_lock(&u->c->lock);
	a = cluster_find_attachment(u->c, r->vol);
	if (a && a->epoch == u->epoch && r->idx < a->n_copies &&
	    a->copies[r->idx].pending_new[0] &&
	    strcmp(a->copies[r->idx].pending_new, listed) == 0 &&
	    strcmp(a->copies[r->idx].node_id, r->node_id) == 0) {
		a->copies[r->idx].held_set = true;
		a->copies[r->idx].held_state = r->state;
		held = true;
	}
	pthread_mutex_unlock(&u->c->lock);
	return held;
}

static int state_mutate(Tessera__Cluster__VolumeRecord *rec, void *arg)
{
	struct state_update *u = arg;

	if (rec->epoch != u->epoch)
		return -ESTALE;
	if (u->r->idx >= rec->n_copies)
		return -EINVAL;
	if (u->r->node_id[0] && strcmp(rec->copies[u->r->idx]->node_id, u->r->node_id) != 0) {
		snprintf(u->node_id, sizeof(u->node_id), "%s", rec->copies[u->r->idx]->node_id);
		if (state_hold(u, rec->copies[u->r->idx]->node_id)) {
			u->outcome = 2;
			return 0; /* unchanged, at a new revision */
		}
		u->outcome = 1;
		return 1; /* replaced since: the slot is another copy's */
	}
	u->outcome = 0;
	rec->copies[u->r->idx]->state = rec_state_from_mirror(u->r->state);
	rec->copies[u->r->idx]->since = cluster_now();
	snprintf(u->node_id, sizeof(u->node_id), "%s", rec->copies[u->r->idx]->node_id);
	return 0;
}

/* Record one copy-state change in vol/<name>, refused for a stale epoch. */
static int record_state(struct tsr_cluster *c, const struct state_req *r)
{
	struct state_update u = { .c = c, .r = r };
	struct attachment *a;
	bool fenced = true, draining;
	int ret;

	pthread_mutex_lock(&c->lock);
	a = cluster_find_recording(c, r->vol, &draining);
	if (a) {
		u.epoch = a->epoch;
		fenced = a->fenced;
	}
	pthread_mutex_unlock(&c->lock);
	/*
	 * A detached coordinator's change is recorded while its clients'
	 * requests still hold the volume (a copy failing under them: the
	 * request waits for this record).  Once the last handle went, the
	 * layout's own close (an ec commit cancelled by it) is no copy
	 * failure: refused, as for any detached coordinator.
	 */
	if (draining && !tsr_volset_in_use(c->o.vols, r->vol))
		fenced = true;
	if (fenced)
		return -ESTALE;
	ret = rec_volume_update(c->meta_bg, r->vol, state_mutate, &u);
	if (ret == 0 && u.outcome == 1)
		tsr_info("cluster: volume %s: copy %u (%s) %s not recorded: that slot lists %s now "
			 "(replaced since)", r->vol, r->idx, r->node_id,
			 tsr_copy_state_name(r->state), u.node_id);
	else if (ret == 0 && u.outcome == 2)
		tsr_info("cluster: volume %s: copy %u (%s) %s held: a replace of that slot onto %s "
			 "waits for the coordinator", r->vol, r->idx, r->node_id,
			 tsr_copy_state_name(r->state), u.node_id);
	else if (ret == 0)
		tsr_info("cluster: volume %s copy %s %s", r->vol, u.node_id,
			 tsr_copy_state_name(r->state));
	else
		tsr_error("cluster: volume %s: cannot record copy %u as %s: %s%s", r->vol, r->idx,
			  tsr_copy_state_name(r->state), strerror(-ret),
			  ret == -ESTALE ? " (a newer coordinator exists)" : "");
	return ret;
}

static void keepalive(struct tsr_cluster *c, int64_t *last_ok, bool *fenced_for_lease)
{
	int64_t sent = tsr_mono_ms();
	uint64_t lease = cluster_lease(c), fresh;
	int ret;

	ret = tsr_meta_lease_keepalive(c->meta_bg, lease);
	if (ret == 0) {
		*last_ok = sent;
		if (*fenced_for_lease)
			tsr_info("cluster: lease renewed again");
		*fenced_for_lease = false;
		return;
	}
	if (ret != -ENOENT) {
		if (sent - *last_ok >= (int64_t)(TSR_CLUSTER_LEASE_TTL_MS - FENCE_MARGIN_MS) &&
		    !*fenced_for_lease) {
			tsr_warn("cluster: lease not renewed for %lld ms (%s)",
				 (long long)(sent - *last_ok), strerror(-ret));
			fence_all(c, "this node cannot renew its lease");
			*fenced_for_lease = true;
		}
		return;
	}
	tsr_warn("cluster: lease %llu expired: this node left the cluster; registering again",
		 (unsigned long long)lease);
	fence_all(c, "this node's lease expired");
	*fenced_for_lease = true;
	ret = tsr_meta_lease_grant(c->meta_bg, TSR_CLUSTER_LEASE_TTL_MS, &fresh);
	if (ret == 0)
		ret = register_node(c, c->meta_bg, fresh);
	if (ret) {
		tsr_warn("cluster: register again: %s (retrying)", strerror(-ret));
		return;
	}
	pthread_mutex_lock(&c->lock);
	c->lease = fresh;
	pthread_mutex_unlock(&c->lock);
	*last_ok = sent;
	*fenced_for_lease = false;
	tsr_info("cluster: node %s registered again (lease %llu)", c->node_id,
		 (unsigned long long)fresh);
}

/*
 * Test switch TSR_TEST_SWEEP_ON_LEASE_THREAD=1: the sweep runs on the
 * background thread right after a renewal, as before review 15b's F4 (A/B:
 * test-cluster-sweep-lease-rollback shows the lease lost then).
 */
static bool sweep_on_lease_thread(void)
{
	return tsr_test_env_on("TSR_TEST_SWEEP_ON_LEASE_THREAD");
}

/* Wait on cond (c->cond or c->sweep_cond, c->lock held) until the monotonic
 * time deadline_ms at most.  Both conds count on CLOCK_MONOTONIC
 * (tsr_cond_init_mono at create): a deadline on the wall clock, as before,
 * moved with each step of it, and the wall clock set back an hour kept the
 * lease unrenewed an hour (the node declared dead, its volumes fenced). */
static void wait_until(struct tsr_cluster *c, pthread_cond_t *cond, int64_t deadline_ms)
{
	tsr_cond_wait_until_ms(cond, &c->lock, deadline_ms);
}

/*
 * The leftover sweep's thread: a pass a keepalive period after the start (as
 * when it followed the first renewal), then every cluster_sweep_interval_ms
 * (a second when a pass stopped at its budget).  Its store calls may wait for
 * the store's lock as long as any store call holds it; nothing else waits
 * for this thread but tsr_cluster_stop.
 */
static void *sweep_thread(void *arg)
{
	struct tsr_cluster *c = arg;
	int64_t next = tsr_mono_ms() + TSR_CLUSTER_KEEPALIVE_MS;

	tsr_log_set_thread_name("sweep");
	pthread_mutex_lock(&c->lock);
	while (!c->stopping) {
		if (tsr_mono_ms() >= next) {
			bool more;

			pthread_mutex_unlock(&c->lock);
			more = cluster_sweep(c);
			next = tsr_mono_ms() + (more ? 1000 : cluster_sweep_interval_ms(c));
			pthread_mutex_lock(&c->lock);
			continue;
		}
		wait_until(c, &c->sweep_cond, next);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

static void *bg_thread(void *arg)
{
	struct tsr_cluster *c = arg;
	int64_t last_ok = tsr_mono_ms(), next = last_ok + TSR_CLUSTER_KEEPALIVE_MS;
	int64_t next_sweep = last_ok; /* the first pass after the first renewal */
	bool fenced_for_lease = false, sweep_here = c->sweep_on && !c->sweep_started;

	tsr_log_set_thread_name("cluster");
	pthread_mutex_lock(&c->lock);
	while (!c->stopping) {
		struct state_req *r = c->queue;

		if (r) {
			int ret;

			c->queue = r->next;
			if (c->queue == NULL)
				c->queue_tail = NULL;
			pthread_mutex_unlock(&c->lock);
			ret = record_state(c, r);
			r->done(r->done_arg, ret);
			free(r);
			pthread_mutex_lock(&c->lock);
			continue;
		}
		if (tsr_mono_ms() >= next) {
			pthread_mutex_unlock(&c->lock);
			keepalive(c, &last_ok, &fenced_for_lease);
			next = tsr_mono_ms() + TSR_CLUSTER_KEEPALIVE_MS;
			/* the old way (TSR_TEST_SWEEP_ON_LEASE_THREAD=1 only): right
			 * after a renewal, a store call away from the next one */
			if (sweep_here && tsr_mono_ms() >= next_sweep)
				next_sweep = tsr_mono_ms() + (cluster_sweep(c) ? 1000 :
							       cluster_sweep_interval_ms(c));
			pthread_mutex_lock(&c->lock);
			continue;
		}
		wait_until(c, &c->cond, next);
	}
	/* fail what is still queued: nobody will record it */
	while (c->queue) {
		struct state_req *r = c->queue;

		c->queue = r->next;
		pthread_mutex_unlock(&c->lock);
		r->done(r->done_arg, -ESHUTDOWN);
		free(r);
		pthread_mutex_lock(&c->lock);
	}
	c->queue_tail = NULL;
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

void cluster_set_copy_state(void *arg, const char *vol, unsigned idx, const char *node_id,
			    enum tsr_copy_state st, void (*done)(void *done_arg, int status),
			    void *done_arg)
{
	struct tsr_cluster *c = arg;
	struct state_req *r = calloc(1, sizeof(*r));

	if (r == NULL) {
		done(done_arg, -ENOMEM);
		return;
	}
	snprintf(r->vol, sizeof(r->vol), "%s", vol);
	r->idx = idx;
	r->state = st;
	r->done = done;
	r->done_arg = done_arg;
	pthread_mutex_lock(&c->lock);
	if (node_id && node_id[0]) {
		/* the copy the layout asks for: a replaced slot's new copy from
		 * the moment the layout took it, before the replace's end sets
		 * the attachment's node (review 14c, finding D: that copy's
		 * first state, named by the old node then, was held and dropped) */
		snprintf(r->node_id, sizeof(r->node_id), "%s", node_id);
	} else {
		/* no node given: the slot's node as the cluster has it */
		struct attachment *a = cluster_find_recording(c, vol, NULL);

		if (a && idx < a->n_copies)
			snprintf(r->node_id, sizeof(r->node_id), "%s", a->copies[idx].node_id);
	}
	if (c->stopping) {
		pthread_mutex_unlock(&c->lock);
		free(r);
		done(done_arg, -ESHUTDOWN);
		return;
	}
	if (c->queue_tail)
		c->queue_tail->next = r;
	else
		c->queue = r;
	c->queue_tail = r;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

/* ---- tick ------------------------------------------------------------- */

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	cluster_attach_tick(w->data);
}

/* ---- admin ------------------------------------------------------------ */

static bool cluster_admin_dispatch(struct tsr_cluster *c, const Tessera__Admin__Request *req,
				   Tessera__Admin__Response *resp);

/*
 * The rule for a local_copy VolumeDelete (node to node: this node's store
 * copy of d->name only), judged before the admin server's store delete
 * (admin_ops.c op_volume_delete) runs it: a copy that vol/<name> lists on
 * this node is deleted only by a request naming its uuid (d->uuid: the store
 * delete then checks that it is that copy, else -ESTALE).  Since session 20
 * the senders name the uuid of the copy they mean wherever they know it
 * (volume delete: asked while the record listed the copy; a create's undo:
 * the uuid it made; a clone's undo: the uuid each node answered (review
 * s20-revK C); a DR claim's release: asked under tcreate/<name>; a
 * replace: since session 13), so that a delete reaching this node late is
 * refused by a newer copy of the name (revE M1).  Without a uuid the delete
 * is meant for a copy the sender knows to be garbage: what a sender of an
 * earlier build, or one whose asked node named no uuid, deletes by name (the copies
 * of a volume whose record it has just deleted, the old copy of a
 * replace-replica once the record lists its new one, a create or clone
 * undone, a claim's leftovers).  When the record lists a copy here, the copy here is
 * not that one any more: a replace onto this node made and recorded it
 * after the sender read the record (review 13b, finding 3: a late delete of
 * replace A removed the copy replace B had made here and recorded, and the
 * record listed a copy that did not exist).  Refused -EBUSY; the copy and
 * its data stay.  A record that cannot be read or decoded refuses too (as
 * in the sweep: never a reason to delete); the copy, if it is garbage, is
 * the leftover sweep's (sweep.c).
 *
 * The check and the store delete run in one admin command on the main
 * thread, which runs one command at a time: no copy of that name is made on
 * this node in between (copies are made by this thread's admin commands or
 * by its own replace, both on this thread).  The sweep (background thread)
 * only deletes unlisted copies, under c->sweep_lock with its own re-check.
 *
 * Not closed here: a late by-name delete that arrives after another create
 * or replace made its new copy here and before it wrote the record (the
 * record does not list it yet): only a delete by the old copy's uuid tells
 * the two copies apart, which is why the senders above name it.
 *
 * Mixed versions: a node older than this one deletes as before; a sender
 * older than this one sends by-name deletes only for the cases above and
 * gets -EBUSY, logged as a copy left behind, for a copy listed here.
 * Returns 0 (go on with the delete) or -errno with resp filled.
 */
static int copy_delete_check(struct tsr_cluster *c, const Tessera__Admin__VolumeDelete *d,
			     Tessera__Admin__Response *resp)
{
	Tessera__Cluster__VolumeRecord *rec = NULL;
	bool listed = false;
	int ret;

	if (d->uuid && d->uuid[0])
		return 0; /* that copy only: the store delete checks it */
	ret = rec_volume_get(c->meta, d->name, &rec, NULL);
	if (ret == -ENOENT)
		return 0; /* the volume is deleted (or never was): garbage */
	if (ret) {
		admin_fail(resp, ret, "cannot read vol/%s to check that node %s's copy of '%s' "
			   "is not listed: %s; not deleted (an unlisted copy is removed later by "
			   "the leftover sweep)", d->name, c->node_id, d->name, strerror(-ret));
		return ret;
	}
	for (size_t i = 0; i < rec->n_copies && !listed; i++)
		listed = rec->copies[i]->node_id &&
			 strcmp(rec->copies[i]->node_id, c->node_id) == 0;
	tessera__cluster__volume_record__free_unpacked(rec, NULL);
	if (!listed)
		return 0;
	tsr_warn("cluster: delete of the copy of %s by name refused: vol/%s lists a copy on this "
		 "node (%s): a replace onto this node since the sender read the record?",
		 d->name, d->name, c->node_id);
	admin_fail(resp, -EBUSY, "node %s's copy of '%s' is one vol/%s lists on %s: not deleted "
		   "by name (recorded after the sender read vol/%s: a replace onto %s?); a delete "
		   "naming its uuid, or tessera volume delete %s, removes it", c->node_id, d->name,
		   d->name, c->node_id, d->name, c->node_id, d->name);
	return -EBUSY;
}

bool tsr_cluster_admin_handle(struct tsr_cluster *c, const Tessera__Admin__Request *req,
			      Tessera__Admin__Response *resp)
{
	const char *saved = c->origin;
	bool handled;

	c->origin = req->via_node != NULL ? req->via_node : "";
	handled = cluster_admin_dispatch(c, req, resp);
	c->origin = saved;
	return handled;
}

static bool cluster_admin_dispatch(struct tsr_cluster *c, const Tessera__Admin__Request *req,
				   Tessera__Admin__Response *resp)
{
	if (admin_is_replication(req->command_case))
		return repl_admin_handle(c, req, resp);
	switch (req->command_case) {
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE: {
		char msg[1024];
		int ret;

		if (req->volume_create->local_copy)
			return false;
		ret = repl_name_claimed(c, req->volume_create->name, msg, sizeof(msg));
		if (ret)
			admin_fail(resp, ret, "%s", msg);
		else if (req->volume_create->from_volume[0] || req->volume_create->from_snapshot[0])
			cluster_volume_clone(c, req->volume_create, resp);
		else
			cluster_volume_create(c, req->volume_create, resp);
		return true;
	}
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DELETE: {
		char msg[512];
		int ret;

		if (req->volume_delete->local_copy) /* refused here, or the store's delete */
			return copy_delete_check(c, req->volume_delete, resp) != 0;
		ret = repl_volume_busy(c, req->volume_delete->name, msg, sizeof(msg));
		if (ret)
			admin_fail(resp, ret, "%s", msg);
		else
			cluster_volume_delete(c, req->volume_delete->name, resp);
		/* deleted: cluster_volume_delete calls repl_volume_deleted with
		 * the record's delete (its answer may come later) */
		if (resp->error == -ENOENT) /* a claim alone: released */
			repl_claim_release(c, req->volume_delete->name, resp);
		return true;
	}
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_RESIZE:
		if (req->volume_resize->local_copy)
			return false;
		cluster_volume_resize(c, req->volume_resize, resp);
		return true;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_LIST:
		cluster_volume_list(c, NULL, resp);
		return true;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SHOW:
		cluster_volume_list(c, req->volume_show->name, resp);
		if (resp->error == 0 && resp->n_volumes == 1) /* and its snapshots */
			cluster_volume_show_snapshots(c, resp);
		return true;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ATTACH:
		cluster_attach(c, req, resp);
		return true;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DETACH:
		cluster_detach(c, req, resp);
		return true;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_STATUS:
		cluster_volume_status(c, req, resp);
		return true;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SCRUB:
		cluster_volume_scrub(c, req, resp);
		return true;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_REPLACE_REPLICA: {
		const Tessera__Admin__VolumeReplaceReplica *r = req->volume_replace_replica;
		char msg[1024];
		int ret;
		Tessera__Cluster__VolumeRecord *rec = NULL;
		struct tsr_meta_kv kv = { 0 };
		char key[80];

		/* an attached volume is rebuilt by its coordinator */
		snprintf(key, sizeof(key), "attach/%s", r->name);
		if (tsr_meta_get(c->meta, key, &kv) == 0) {
			Tessera__Cluster__AttachRecord *a = rec_attach_decode(&kv);

			tsr_meta_kv_clear(&kv);
			if (a && strcmp(a->node_id, c->node_id)) {
				Tessera__Cluster__NodeRecord *n = NULL;

				if (rec_node_get(c->meta, a->node_id, &n) == 0) {
					/* answered when it answers: the loop goes on */
					cluster_forward_reply(c, a->node_id, n->address, req,
							      resp);
					tessera__cluster__node_record__free_unpacked(n, NULL);
				} else {
					admin_fail(resp, -EHOSTUNREACH, "volume '%s' is attached on "
						   "%s, whose address is unknown", r->name,
						   a->node_id);
				}
				tessera__cluster__attach_record__free_unpacked(a, NULL);
				return true;
			}
			if (a)
				tessera__cluster__attach_record__free_unpacked(a, NULL);
		}
		(void)rec;
		/* its layout opens the copies the record listed before: a copy
		 * replaced meanwhile would be unknown to the coordinator */
		if (cluster_attach_running(c, r->name)) {
			admin_fail(resp, -EBUSY, "attach of '%s' is running here (its copies are "
				   "being opened): retry the replace once it answered", r->name);
			return true;
		}
		ret = cluster_replace_replica(c, r->name, r->node, r->to, msg, sizeof(msg));
		if (ret)
			admin_fail(resp, ret, "%s", msg);
		else
			cluster_volume_list(c, r->name, resp);
		return true;
	}
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE:
		if (req->snapshot_create->local_copy)
			return false;
		cluster_snapshot_change(c, req, resp);
		return true;
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DELETE:
		if (req->snapshot_delete->local_copy)
			return false;
		cluster_snapshot_change(c, req, resp);
		return true;
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST:
		return cluster_snapshot_read(c, req->snapshot_list->volume, req, resp, true);
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_SHOW:
		return cluster_snapshot_read(c, req->snapshot_show->volume, req, resp, true);
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DIFF:
		return cluster_snapshot_read(c, req->snapshot_diff->volume, req, resp, true);
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ROLLBACK:
		if (req->volume_rollback->local_copy)
			return false;
		cluster_volume_rollback(c, req->volume_rollback, resp);
		return true;
	case TESSERA__ADMIN__REQUEST__COMMAND_NODE_LIST:
		cluster_node_list(c, resp);
		return true;
	case TESSERA__ADMIN__REQUEST__COMMAND_CLUSTER_STATUS:
		cluster_status(c, resp);
		return true;
	default:
		return false;
	}
}

/* ---- start / stop ----------------------------------------------------- */

static char *dup_checked(const char *s, bool *nomem)
{
	char *d;

	if (s == NULL)
		return NULL;
	d = strdup(s);
	if (d == NULL)
		*nomem = true;
	return d;
}

static int open_meta(struct tsr_cluster *c)
{
	char *path = NULL;
	int ret;

	if (c->o.meta) {
		if (asprintf(&path, "%s/meta.db", c->dir) < 0)
			return -ENOMEM;
		ret = tsr_meta_open_sqlite(path, &c->meta);
		if (ret) {
			tsr_error("cluster: metadata store %s: %s", path, strerror(-ret));
			free(path);
			return ret;
		}
		free(path);
		c->meta_bg = c->meta;
		c->meta_sweep = c->meta;
		ret = tsr_meta_server_start(c->meta, c->token, &c->meta_srv);
		if (ret)
			tsr_error("cluster: meta service: %s", strerror(-ret));
		return ret;
	}
	for (int64_t start = tsr_mono_ms();;) {
		ret = tsr_meta_open_remote(c->join, c->token, 0, &c->meta);
		if (ret == 0)
			ret = tsr_meta_open_remote(c->join, c->token, 0, &c->meta_bg);
		if (ret == 0)
			ret = tsr_meta_open_remote(c->join, c->token, 0, &c->meta_sweep);
		if (ret == 0)
			return 0;
		if (ret == -EACCES) {
			tsr_error("cluster: the meta node at %s refused our token (give the cluster "
				  "token with --token-file: DIR/admin.token of the --meta node)",
				  c->join);
			return ret;
		}
		if (tsr_mono_ms() - start > JOIN_RETRY_SEC * 1000) {
			tsr_error("cluster: cannot reach the meta node at %s: %s (is the --meta "
				  "tesserad running, and is --join its --listen address?)", c->join,
				  strerror(-ret));
			return ret;
		}
		tsr_info("cluster: meta node at %s: %s; retrying", c->join, strerror(-ret));
		tsr_meta_close(c->meta_bg);
		tsr_meta_close(c->meta);
		c->meta = NULL;
		c->meta_bg = NULL;
		sleep(1);
	}
}

int tsr_cluster_start(const struct tsr_cluster_opts *opts, struct tsr_cluster **out)
{
	struct tsr_cluster *c;
	bool nomem = false;
	uint64_t lease;
	int ret;

	if (opts->loop == NULL || opts->store == NULL || opts->vols == NULL ||
	    opts->n_workers == 0 || opts->address == NULL || opts->token == NULL ||
	    !tsr_valid_name(opts->node_id) || (!opts->meta && opts->join == NULL))
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	c->o = *opts;
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->sweep_lock, NULL);
	/* timed waits against tsr_mono_ms deadlines (wait_until); glibc's
	 * cannot fail, and a calloc'd cond is safe to destroy */
	ret = tsr_cond_init_mono(&c->cond);
	if (ret == 0)
		ret = tsr_cond_init_mono(&c->sweep_cond);
	if (ret) {
		tsr_error("cluster: condition variables: %s", strerror(-ret));
		goto err;
	}
	c->dir = dup_checked(opts->dir, &nomem);
	c->address = dup_checked(opts->address, &nomem);
	c->join = dup_checked(opts->join, &nomem);
	c->token = dup_checked(opts->token, &nomem);
	c->node_id = dup_checked(opts->node_id, &nomem);
	c->zone = dup_checked(opts->zone ? opts->zone : opts->node_id, &nomem);
	c->site = dup_checked(opts->site ? opts->site : "site1", &nomem);
	c->nbd_listeners = calloc(opts->n_nbd_listeners + 1, sizeof(char *));
	if (c->nbd_listeners == NULL)
		nomem = true;
	for (size_t i = 0; !nomem && i < opts->n_nbd_listeners; i++)
		c->nbd_listeners[i] = dup_checked(opts->nbd_listeners[i], &nomem);
	if (!nomem && asprintf(&c->coord_dir, "%s/coord", opts->dir) < 0) {
		c->coord_dir = NULL;
		nomem = true;
	}
	if (nomem) {
		ret = -ENOMEM;
		goto err;
	}
	if (mkdir(c->coord_dir, 0700) && errno != EEXIST) {
		ret = -errno;
		tsr_error("cluster: mkdir %s: %s", c->coord_dir, strerror(-ret));
		goto err;
	}
	ret = open_meta(c);
	if (ret)
		goto err;
	ret = tsr_meta_lease_grant(c->meta, TSR_CLUSTER_LEASE_TTL_MS, &lease);
	if (ret) {
		tsr_error("cluster: lease: %s", strerror(-ret));
		goto err;
	}
	c->lease = lease;
	ret = register_node(c, c->meta, lease);
	if (ret)
		goto err;
	ret = repl_start(c);
	if (ret)
		goto err;
	cluster_sweep_init(c); /* needs cluster/id (repl_start) */
	if (c->sweep_on && !sweep_on_lease_thread()) {
		ret = -pthread_create(&c->sweep_thread, NULL, sweep_thread, c);
		if (ret) {
			tsr_error("cluster: sweep thread: %s", strerror(-ret));
			goto err;
		}
		c->sweep_started = true;
	} else if (c->sweep_on) {
		tsr_info("cluster: leftover sweep on the lease's thread "
			 "(TSR_TEST_SWEEP_ON_LEASE_THREAD=1)");
	}
	ret = -pthread_create(&c->thread, NULL, bg_thread, c);
	if (ret) {
		tsr_error("cluster: thread: %s", strerror(-ret));
		goto err;
	}
	c->thread_started = true;
	cluster_snapshot_start(c);
	cluster_attach_init(c);
	ev_timer_init(&c->tick, tick_cb, CLUSTER_TICK_SEC, CLUSTER_TICK_SEC);
	c->tick.data = c;
	ev_timer_start(c->o.loop, &c->tick);
	c->tick_running = true;
	tsr_info("cluster: node %s joined at %s (zone %s, site %s, meta %s%s%s)", c->node_id,
		 c->address, c->zone, c->site, tsr_meta_backend(c->meta),
		 c->join ? " at " : "", c->join ? c->join : "");
	*out = c;
	return 0;
err:
	tsr_cluster_stop(c);
	return ret;
}

void tsr_cluster_stop(struct tsr_cluster *c)
{
	if (c == NULL)
		return;
	if (c->tick_running)
		ev_timer_stop(c->o.loop, &c->tick);
	/* the detaches below wait for their DR sites' ACKs (attach.c, the
	 * drain) within one peer call timeout in all: the sources ship at once */
	c->drain_until_ns = tsr_mono_ns() + (int64_t)cluster_peer_call_ms(c) * 1000000;
	/* detaches waiting for their clients end now (the admin server still
	 * sends their replies: it goes after us) */
	cluster_detach_stop_waits(c);
	cluster_forward_stop(c);
	cluster_snap_read_stop(c); /* snapshot list/show/diff waiting for a node */
	/* attaches whose layout still opens: waited for and undone */
	cluster_attach_stop(c);
	/* detach what we coordinate, cleanly: the next attach needs no convergence */
	while (c->attached) {
		char msg[512];

		if (cluster_detach_local(c, c->attached, msg, sizeof(msg)))
			tsr_warn("cluster: %s", msg);
	}
	repl_stop(c); /* demotions still queued are recorded: the meta store is open */
	cluster_snapshot_stop(c); /* cuts answered later must not touch c */
	if (c->thread_started || c->sweep_started) {
		pthread_mutex_lock(&c->lock);
		c->stopping = true;
		pthread_cond_signal(&c->cond);
		pthread_cond_signal(&c->sweep_cond);
		pthread_mutex_unlock(&c->lock);
		if (c->thread_started)
			pthread_join(c->thread, NULL);
		/* a pass under way ends first (its store call, its deletes' budget) */
		if (c->sweep_started)
			pthread_join(c->sweep_thread, NULL);
	}
	if (c->meta && c->lease) {
		/* leave at once rather than after the TTL (and drop alive/<id>) */
		tsr_meta_lease_revoke(c->meta, c->lease);
	}
	tsr_meta_server_stop(c->meta_srv);
	if (c->meta_sweep != c->meta)
		tsr_meta_close(c->meta_sweep);
	if (c->meta_bg != c->meta)
		tsr_meta_close(c->meta_bg);
	tsr_meta_close(c->meta);
	for (size_t i = 0; c->nbd_listeners && c->nbd_listeners[i]; i++)
		free(c->nbd_listeners[i]);
	free(c->nbd_listeners);
	free(c->dir);
	free(c->address);
	free(c->join);
	free(c->token);
	free(c->node_id);
	free(c->zone);
	free(c->site);
	free(c->coord_dir);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->sweep_lock);
	free(c->sweep_seen);
	pthread_cond_destroy(&c->cond);
	pthread_cond_destroy(&c->sweep_cond);
	free(c);
}
