/*
 * Coordinators: attach makes this node a volume's single writer.
 *
 *  1. attach/<name> is created (compare-and-set: absent) on this node's
 *     lease; its mod_rev is the epoch.  If this node's lease lapses, the key
 *     goes with it and another node may attach with a higher epoch.
 *  2. vol/<name> gets epoch = that epoch (older coordinators can no longer
 *     record copy states) and clean_detach = false; the old clean_detach
 *     says whether the copies need converging (mirror opts.converge).
 *  3. the layout (mirror, or ec when the record has ec_k: layout_open is the
 *     one place that picks) opens every copy with the epoch (fencing any
 *     older coordinator at the replicas) and is registered in the volume
 *     set, which serves it over NBD.  The open waits up to the peer timeout
 *     for a node that does not answer: for an admin request (and a DR
 *     target's VOLUME_OPEN) it runs in a thread and the reply comes later
 *     (struct attach_job); steps 1 and 2 before it and the registration
 *     after it stay on the control thread, in the same order.  Meanwhile
 *     an attach, detach, scrub or replace of that volume here is refused
 *     -EBUSY ("attach of V is running"); tsr_cluster_stop waits for the open
 *     and undoes the attach.  Its volume status says "attaching on node N"
 *     (Volume.attaching).  At most ATTACH_THREADS_MAX opens run at once on
 *     a node; beyond, an attach is refused -EAGAIN "too many attaches".
 * Detach undoes it; clean_detach = true only when the mirror was not fenced.
 * The 500 ms tick tells a mirror when a copy's node is alive again and
 * rebuilds a copy whose node stayed dead for --rebuild-after seconds.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin/admin_internal.h"
#include "cluster/internal.h"
#include "tessera/ec.h"
#include "tessera/test_hook.h"
#include "tessera/vol.h"

/* Forward req to the node called node_id, answered when it answers
 * (cluster_forward_reply: resp is not ours after); false when that is us. */
static bool forward_to(struct tsr_cluster *c, const char *node_id,
		       const Tessera__Admin__Request *req, Tessera__Admin__Response *resp)
{
	Tessera__Cluster__NodeRecord *n = NULL;
	int ret;

	if (strcmp(node_id, c->node_id) == 0)
		return false;
	ret = rec_node_get(c->meta, node_id, &n);
	if (ret) {
		admin_fail(resp, ret == -ENOENT ? -ENOENT : ret, "node %s %s (tessera node list "
			   "shows the nodes)", node_id, ret == -ENOENT ? "is not in the cluster" :
			   "cannot be looked up");
		return true;
	}
	cluster_forward_reply(c, node_id, n->address, req, resp);
	tessera__cluster__node_record__free_unpacked(n, NULL);
	return true;
}

int cluster_get_attach(struct tsr_cluster *c, const char *name, char *node, size_t node_len,
		       uint64_t *epoch, uint64_t *lease)
{
	Tessera__Cluster__AttachRecord *a;
	struct tsr_meta_kv kv = { 0 };
	char key[80];
	int ret;

	snprintf(key, sizeof(key), "attach/%s", name);
	ret = tsr_meta_get(c->meta, key, &kv);
	if (ret)
		return ret;
	a = rec_attach_decode(&kv);
	if (a == NULL) {
		tsr_meta_kv_clear(&kv);
		return -EUCLEAN;
	}
	snprintf(node, node_len, "%s", a->node_id);
	if (epoch)
		*epoch = kv.mod_rev;
	if (lease)
		*lease = kv.lease;
	tessera__cluster__attach_record__free_unpacked(a, NULL);
	tsr_meta_kv_clear(&kv);
	return 0;
}

/* update_volume's arguments, for its mutator (rec_volume_update). */
struct volume_update {
	struct tsr_cluster *c;
	uint64_t epoch;
	bool clean, only_if_epoch;
	const char *coord;
	bool *old_clean, *was_ours;
	char *old_coord;
	size_t old_coord_len;
};

static int volume_mutate(Tessera__Cluster__VolumeRecord *rec, void *arg)
{
	const struct volume_update *u = arg;

	if (u->only_if_epoch && rec->epoch != u->epoch)
		return -ESTALE;
	/* the attach's own write (not a restore or a detach): refused while a
	 * detached rollback runs or was cut short (snapshot.c marks vol/v
	 * before it touches a copy, so either that mark or this write comes
	 * first: the later one is refused) */
	if (!u->only_if_epoch && u->coord != NULL && rec->rollback_snapshot[0] != '\0')
		return -EINPROGRESS;
	if (u->old_clean)
		*u->old_clean = rec->clean_detach;
	if (u->was_ours)
		*u->was_ours = strcmp(rec->coordinator, u->c->node_id) == 0;
	if (u->old_coord)
		snprintf(u->old_coord, u->old_coord_len, "%s", rec->coordinator);
	if (u->coord) {
		char *id = strdup(u->coord);

		if (id == NULL)
			return -ENOMEM;
		if (rec->coordinator != protobuf_c_empty_string)
			free(rec->coordinator);
		rec->coordinator = id;
	}
	rec->epoch = u->epoch;
	rec->clean_detach = u->clean;
	/* the attach's own write: its copies are being opened (review F9);
	 * a restore or a detach: no attach is opening */
	rec->attaching_epoch = !u->only_if_epoch && u->coord != NULL ? u->epoch : 0;
	/* an IN_SYNC copy missed nothing: a list left from a record of its
	 * replay's end that failed must not be replayed if it leaves again */
	for (size_t i = 0; i < rec->n_copies; i++) {
		Tessera__Cluster__CopyRecord *cr = rec->copies[i];

		if (cr->state != TESSERA__CLUSTER__COPY_STATE__IN_SYNC)
			continue;
		for (size_t k = 0; k < cr->n_missed_snaps; k++)
			free(cr->missed_snaps[k]);
		free(cr->missed_snaps);
		cr->missed_snaps = NULL;
		cr->n_missed_snaps = 0;
		cr->rebuild = false; /* rebuilt */
	}
	return 0;
}

/*
 * Read-modify-write of vol/<name>: set epoch and clean_detach, and the
 * coordinator to coord unless it is NULL, and empty the missed snapshot
 * operations and the rebuild flag of IN_SYNC copies; *old_clean, *was_ours and old_coord
 * (each may be NULL) get the previous clean_detach, whether the previous
 * coordinator was this node, and its id.  only_if_epoch: do nothing when the
 * record's epoch is not this one (a newer coordinator owns it: -ESTALE).
 */
static int update_volume(struct tsr_cluster *c, const char *name, uint64_t epoch,
			 bool clean, bool only_if_epoch, const char *coord, bool *old_clean,
			 bool *was_ours, char *old_coord, size_t old_coord_len)
{
	struct volume_update u = { .c = c, .epoch = epoch, .clean = clean,
				   .only_if_epoch = only_if_epoch, .coord = coord,
				   .old_clean = old_clean, .was_ours = was_ours,
				   .old_coord = old_coord, .old_coord_len = old_coord_len };

	return rec_volume_update(c->meta, name, volume_mutate, &u);
}

static int attaching_end_mutate(Tessera__Cluster__VolumeRecord *rec, void *arg)
{
	const uint64_t *epoch = arg;

	if (rec->attaching_epoch != *epoch)
		return 1; /* another epoch's record now: nothing of ours to clear */
	rec->attaching_epoch = 0;
	return 0;
}

/*
 * The attach of epoch opened its copies: vol/<name> no longer says it is
 * being attached (VolumeRecord.attaching_epoch, review F9).  Written before
 * the volume is registered for NBD (the same control-loop step: nobody sees
 * it attached in between); a failure fails the attach like its other record
 * writes (the metadata store full: "No space left on device", retry), so no
 * record says "being attached" of a volume attached for good.  0 or -errno.
 */
static int attaching_end(struct tsr_cluster *c, const char *name, uint64_t epoch)
{
	return rec_volume_update(c->meta, name, attaching_end_mutate, &epoch);
}

/*
 * An attach that failed after update_volume recorded it: put back the
 * coordinator and clean_detach it found (its epoch stays: it fences nothing
 * that should run).  The failed attach wrote no host data (and a failed mirror
 * or ec start-up records no copy state, save records that went through before
 * one was refused), so the record must say what it said before: whether the
 * copies need converging, who the unclean coordinator was, whose copy may hold
 * writes the others lack (full_resync below), and where the out-of-sync
 * copies' bitmaps are.  Overwritten by it, the next attach took the failed
 * attacher for the last coordinator (test-cluster-failed-attach).  A newer
 * epoch owns the record: nothing to do.  A crash in the middle of the attach
 * still leaves this node recorded: the mirror's converge then resyncs in full
 * every copy it did not compare (mirror.c, tsr_layout_mirror_create).
 */
static void restore_volume(struct tsr_cluster *c, const char *name, uint64_t epoch,
			   const char *prev_coord, bool old_clean)
{
	int ret = update_volume(c, name, epoch, old_clean, true, prev_coord, NULL, NULL, NULL, 0);

	if (ret && ret != -ESTALE)
		tsr_warn("cluster: volume %s: cannot restore coordinator '%s' after the failed "
			 "attach: %s (the next attach converges the copies)", name, prev_coord,
			 strerror(-ret));
}

static void attachment_unlink(struct tsr_cluster *c, struct attachment *a)
{
	pthread_mutex_lock(&c->lock);
	for (struct attachment **pp = &c->attached; *pp; pp = &(*pp)->next)
		if (*pp == a) {
			*pp = a->next;
			break;
		}
	pthread_mutex_unlock(&c->lock);
}

static void delete_attach_key(struct tsr_cluster *c, const char *name, uint64_t epoch)
{
	char key[80];
	int ret;

	snprintf(key, sizeof(key), "attach/%s", name);
	ret = tsr_meta_delete(c->meta, key, epoch);
	if (ret && ret != -ENOENT && ret != -ECANCELED)
		tsr_warn("cluster: delete %s: %s (it goes when this node's lease ends)", key,
			 strerror(-ret));
}

/* ---- missed snapshot operations in vol/<name> (hooks.set_copy_missed) ---- */

/*
 * A copy's CopyRecord.missed_snaps as tsr_layout_copy.missed text ("c NAME\n"
 * lines); NULL: out of memory.
 */
static char *missed_text(const Tessera__Cluster__CopyRecord *cr)
{
	size_t len = 1;
	char *s, *p;

	for (size_t i = 0; i < cr->n_missed_snaps; i++)
		len += strlen(cr->missed_snaps[i]) + 1;
	s = malloc(len);
	if (s == NULL)
		return NULL;
	p = s;
	*p = '\0';
	for (size_t i = 0; i < cr->n_missed_snaps; i++)
		p += sprintf(p, "%s\n", cr->missed_snaps[i]);
	return s;
}

/* A record of a copy's missed operations, waiting for the recording thread. */
struct missed_req {
	struct tsr_cluster *c;
	char vol[64];
	unsigned idx;
	char node_id[64];
	char *ops; /* "c NAME\n" lines */
	void (*done)(void *done_arg, int status);
	void *done_arg;
	struct missed_req *next;
};

/*
 * One thread records them all, in the order asked (a later list replaces an
 * earlier one: the order matters), started when the queue gets work and
 * gone when it is empty: a snapshot operation that misses a copy is rare.
 * The layout holds itself until done is called; a detach waits until the
 * thread holds nothing of its cluster (missed_drain).
 */
static pthread_mutex_t g_missed_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_missed_cond = PTHREAD_COND_INITIALIZER; /* a run was recorded */
static struct missed_req *g_missed_head, *g_missed_tail; /* g_missed_lock */
static bool g_missed_running;                            /* g_missed_lock */
static struct tsr_cluster *g_missed_current; /* g_missed_lock: the run being recorded's */

/* record_missed's mutator: r->ops split into the copy's entry. */
struct missed_update {
	const struct missed_req *r;
	uint64_t epoch; /* our attachment's */
};

/*
 * ops ("c NAME\n" / "d NAME\n" lines) as CopyRecord.missed_snaps: cr's list
 * replaced.  0, -ENOMEM, -E2BIG or -EINVAL (cr unchanged).
 */
int cluster_missed_set(Tessera__Cluster__CopyRecord *cr, const char *ops)
{
	const char *p = ops;
	char **list;
	size_t n = 0;
	int ret;

	for (const char *q = p; *q; q++)
		n += *q == '\n';
	list = calloc(n + 1, sizeof(*list));
	ret = list == NULL ? -ENOMEM : 0;
	if (n > 1024) /* rec_volume_decode would refuse the whole record */
		ret = -E2BIG;
	for (size_t i = 0; ret == 0 && i < n; i++) {
		const char *eol = strchr(p, '\n');

		list[i] = strndup(p, (size_t)(eol - p));
		if (list[i] == NULL)
			ret = -ENOMEM;
		else if ((list[i][0] != 'c' && list[i][0] != 'd') || list[i][1] != ' ' ||
			 strlen(list[i] + 2) > 63 || !tsr_valid_name(list[i] + 2))
			ret = -EINVAL; /* the same */
		p = eol + 1;
	}
	if (ret) {
		for (size_t i = 0; list != NULL && i < n; i++)
			free(list[i]);
		free(list);
		return ret;
	}
	for (size_t i = 0; i < cr->n_missed_snaps; i++)
		free(cr->missed_snaps[i]);
	free(cr->missed_snaps);
	cr->missed_snaps = list;
	cr->n_missed_snaps = n;
	return 0;
}

/*
 * The slot lists listed, not r's copy: the new node of a replace-replica of
 * that slot still waiting for the coordinator's answer (volume.c)?  Then r's
 * list is held for that replace's undo (attachment copies[].held_missed), as
 * record_state holds a state.  1 held, 0 not, -ENOMEM.
 */
static int missed_hold(const struct missed_update *u, const char *listed)
{
	const struct missed_req *r = u->r;
	struct attachment *a;
	int ret = 0;

	pthread_mutex_lock(&r->c->lock);
	a = cluster_find_attachment(r->c, r->vol);
	if (a && a->epoch == u->epoch && r->idx < a->n_copies &&
	    a->copies[r->idx].pending_new[0] &&
	    strcmp(a->copies[r->idx].pending_new, listed) == 0 &&
	    strcmp(a->copies[r->idx].node_id, r->node_id) == 0) {
		char *ops = strdup(r->ops);

		if (ops == NULL) {
			ret = -ENOMEM;
		} else {
			free(a->copies[r->idx].held_missed);
			a->copies[r->idx].held_missed = ops;
			ret = 1;
		}
	}
	pthread_mutex_unlock(&r->c->lock);
	return ret;
}

static int missed_mutate(Tessera__Cluster__VolumeRecord *rec, void *arg)
{
	const struct missed_update *u = arg;
	const struct missed_req *r = u->r;
	int ret;

	if (rec->epoch != u->epoch)
		return -ESTALE;
	if (r->idx >= rec->n_copies)
		return 1; /* replaced since: the new copy's list is not this one */
	if (strcmp(rec->copies[r->idx]->node_id, r->node_id) != 0) {
		ret = missed_hold(u, rec->copies[r->idx]->node_id);
		/* held: written back unchanged, so an undo that read it before
		 * must read it again (volume.c replace_undo_mutate) */
		return ret == 1 ? 0 : ret < 0 ? ret : 1;
	}
	return cluster_missed_set(rec->copies[r->idx], r->ops);
}

/* Record r's list in vol/<name>, refused for a stale epoch. */
static int record_missed(struct tsr_meta *meta, const struct missed_req *r)
{
	struct missed_update u = { .r = r };
	struct attachment *a;
	bool fenced = true;
	int ret;

	pthread_mutex_lock(&r->c->lock);
	a = cluster_find_attachment(r->c, r->vol);
	if (a) {
		u.epoch = a->epoch;
		fenced = a->fenced;
	}
	pthread_mutex_unlock(&r->c->lock);
	if (a == NULL) {
		/* detached (a replay's progress while the layout goes): the next
		 * attach rebuilds from the record as it is, done entries included */
		tsr_info("cluster: volume %s detached: the snapshot operations copy %u (%s) "
			 "missed are not recorded again", r->vol, r->idx, r->node_id);
		return -ESHUTDOWN;
	}
	if (fenced)
		return -ESTALE;
	ret = rec_volume_update(meta, r->vol, missed_mutate, &u);
	if (ret)
		tsr_error("cluster: volume %s: cannot record the snapshot operations copy %u (%s) "
			  "missed: %s%s", r->vol, r->idx, r->node_id, strerror(-ret),
			  ret == -ESTALE ? " (a newer coordinator exists)" : "");
	return ret;
}

static bool same_copy(const struct missed_req *a, const struct missed_req *b)
{
	return a->c == b->c && a->idx == b->idx && strcmp(a->vol, b->vol) == 0 &&
	       strcmp(a->node_id, b->node_id) == 0;
}

static void *missed_thread(void *arg)
{
	struct tsr_meta *own = NULL;      /* our remote connection, kept while there is work */
	struct tsr_cluster *own_c = NULL; /* the cluster it belongs to */

	(void)arg;
	tsr_log_set_thread_name("cluster-missed");
	pthread_mutex_lock(&g_missed_lock);
	while (g_missed_head != NULL) {
		struct missed_req *first = g_missed_head, *last = first, *r;
		struct tsr_meta *meta = first->c->meta;
		int ret = 0;

		/* a run of lists for one copy: only the last counts (each replaces
		 * the one before), every caller gets its answer */
		while (last->next != NULL && same_copy(last->next, first))
			last = last->next;
		g_missed_head = last->next;
		if (g_missed_head == NULL)
			g_missed_tail = NULL;
		last->next = NULL;
		g_missed_current = first->c;
		pthread_mutex_unlock(&g_missed_lock);
		/* the sqlite backend serialises its callers; a remote handle is one
		 * thread's (meta.h): a connection of our own */
		if (first->c->meta_bg != first->c->meta) {
			if (own != NULL && own_c != first->c) {
				tsr_meta_close(own);
				own = NULL;
			}
			if (own == NULL) {
				ret = tsr_meta_open_remote(first->c->join, first->c->token, 0, &own);
				own_c = ret == 0 ? first->c : NULL;
			}
			meta = own;
		}
		if (ret == 0)
			ret = record_missed(meta, last);
		else
			tsr_error("cluster: volume %s: cannot reach the metadata store to record "
				  "missed snapshots: %s", first->vol, strerror(-ret));
		if (ret != 0 && own != NULL) { /* maybe the connection: a fresh one next time */
			tsr_meta_close(own);
			own = NULL;
		}
		while ((r = first) != NULL) {
			first = r->next;
			r->done(r->done_arg, ret);
			free(r->ops);
			free(r);
		}
		pthread_mutex_lock(&g_missed_lock);
		g_missed_current = NULL;
		pthread_cond_broadcast(&g_missed_cond);
	}
	g_missed_running = false;
	pthread_mutex_unlock(&g_missed_lock);
	tsr_meta_close(own);
	return NULL;
}

/*
 * Called by a detach once the layout is gone, so that the last detach of
 * tsr_cluster_stop leaves the recording thread nothing of c's: the records
 * asked through c and still queued are answered -ESHUTDOWN here (the layout
 * they belong to is gone: nobody acknowledges on them any more; the next
 * attach rebuilds from the record as it is), and the one being recorded is
 * waited for (its metadata calls end within their timeouts).  Before, the
 * wait gave up after 10 s and a record still queued then used c after
 * tsr_cluster_stop had freed it.
 */
static void missed_drain(struct tsr_cluster *c)
{
	struct missed_req *mine = NULL, **pp, *r;

	pthread_mutex_lock(&g_missed_lock);
	pp = &g_missed_head;
	g_missed_tail = NULL;
	while ((r = *pp) != NULL) {
		if (r->c == c) {
			*pp = r->next;
			r->next = mine;
			mine = r;
		} else {
			g_missed_tail = r;
			pp = &r->next;
		}
	}
	while (g_missed_current == c)
		pthread_cond_wait(&g_missed_cond, &g_missed_lock);
	pthread_mutex_unlock(&g_missed_lock);
	while ((r = mine) != NULL) {
		mine = r->next;
		tsr_info("cluster: volume %s: the snapshot operations copy %u (%s) missed are "
			 "not recorded (detached first)", r->vol, r->idx, r->node_id);
		r->done(r->done_arg, -ESHUTDOWN);
		free(r->ops);
		free(r);
	}
}

/* hooks.set_copy_missed (layout.h): queue it for the recording thread. */
static void cluster_set_copy_missed(void *arg, const char *vol, unsigned idx,
				    const char *node_id, const char *ops,
				    void (*done)(void *done_arg, int status), void *done_arg)
{
	struct missed_req *r = calloc(1, sizeof(*r));
	pthread_attr_t attr;
	pthread_t th;
	int ret = 0;

	if (r == NULL || (r->ops = strdup(ops)) == NULL) {
		free(r);
		done(done_arg, -ENOMEM);
		return;
	}
	r->c = arg;
	snprintf(r->vol, sizeof(r->vol), "%s", vol);
	snprintf(r->node_id, sizeof(r->node_id), "%s", node_id);
	r->idx = idx;
	r->done = done;
	r->done_arg = done_arg;
	pthread_mutex_lock(&g_missed_lock);
	if (g_missed_tail)
		g_missed_tail->next = r;
	else
		g_missed_head = r;
	g_missed_tail = r;
	if (!g_missed_running) {
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		ret = pthread_create(&th, &attr, missed_thread, NULL);
		pthread_attr_destroy(&attr);
		if (ret == 0) {
			g_missed_running = true;
		} else { /* take it back: nobody would record it */
			struct missed_req **pp = &g_missed_head;

			while (*pp != r)
				pp = &(*pp)->next;
			*pp = NULL;
			g_missed_tail = NULL;
			for (struct missed_req *q = g_missed_head; q; q = q->next)
				g_missed_tail = q;
		}
	}
	pthread_mutex_unlock(&g_missed_lock);
	if (ret) {
		free(r->ops);
		free(r);
		done(done_arg, -ret);
	}
}

/* What the attach works out before the layout exists (attach_local). */
struct layout_params {
	uint64_t epoch;
	struct tsr_worker *home;
	bool converge;                 /* the last coordinator did not detach cleanly */
	struct tsr_layout_copy copies[TSR_LAYOUT_MAX_COPIES]; /* rec->copies, addresses filled */
	char *missed[TSR_LAYOUT_MAX_COPIES]; /* copies[i].missed's text, freed after the open */
};

/*
 * The one place that knows two layouts exist: ec when rec->ec_k > 0, else
 * the mirror.  Everything after it drives the layout through tsr_layout_*.
 * Errors as tsr_layout_mirror_create / tsr_layout_ec_create.
 */
static int layout_open(struct tsr_cluster *c, const Tessera__Cluster__VolumeRecord *rec,
		       const struct layout_params *p, struct tsr_layout **out)
{
	struct tsr_layout_hooks hooks = { .set_copy_state = cluster_set_copy_state,
					  .set_copy_missed = cluster_set_copy_missed,
					  .arg = c };

	if (rec->ec_k) {
		struct tsr_ec_opts eo;

		memset(&eo, 0, sizeof(eo));
		eo.name = rec->name;
		eo.size = rec->size;
		eo.k = rec->ec_k;
		eo.m = rec->ec_m;
		eo.stripe_unit = rec->stripe_unit;
		eo.region_size = rec->region_size; /* 0: 1 MiB */
		eo.epoch = p->epoch;
		eo.store = c->o.store;
		eo.state_dir = c->coord_dir;
		eo.home = p->home;
		eo.node_id = c->node_id;
		eo.token = c->token;
		memcpy(eo.copies, p->copies, sizeof(eo.copies));
		eo.n_copies = (unsigned)rec->n_copies;
		eo.min_in_sync = rec->min_replicas;
		eo.peer_timeout_ms = c->o.peer_timeout_ms;
		eo.write_wait_ms = c->o.write_wait_ms;
		eo.resync_rate = c->o.resync_rate;
		eo.converge = p->converge;
		eo.hooks = hooks;
		return tsr_layout_ec_create(&eo, out);
	} else {
		struct tsr_mirror_opts mo;

		if (rec->n_copies > TSR_MIRROR_MAX_COPIES)
			return -EINVAL;
		memset(&mo, 0, sizeof(mo));
		mo.name = rec->name;
		mo.size = rec->size;
		mo.epoch = p->epoch;
		mo.store = c->o.store;
		mo.state_dir = c->coord_dir;
		mo.home = p->home;
		mo.node_id = c->node_id;
		mo.token = c->token;
		memcpy(mo.copies, p->copies, sizeof(mo.copies));
		mo.n_copies = (unsigned)rec->n_copies;
		mo.min_replicas = rec->min_replicas;
		mo.region_size = rec->region_size; /* 0: 1 MiB */
		mo.peer_timeout_ms = c->o.peer_timeout_ms;
		mo.write_wait_ms = c->o.write_wait_ms;
		mo.resync_rate = c->o.resync_rate;
		mo.converge = p->converge;
		mo.hooks = hooks;
		return tsr_layout_mirror_create(&mo, out);
	}
}

/*
 * An attach in three steps (session 16): attach_prepare (control thread:
 * the metadata steps 1 and 2 of the file's header, the attachment listed
 * with no layout yet), attach_open (the layout opens every copy: it waits
 * up to the peer timeout for a node that does not answer, so it runs in a
 * thread of its own when the attach can answer later), attach_apply
 * (control thread: the layout registered, or everything undone).  The
 * epoch is taken and recorded before any copy is opened, and the layout is
 * served only after: the order of the fencing steps is the one it was.
 */
struct attach_job {
	struct tsr_cluster *c;       /* NULL once tsr_cluster_stop finished the job */
	char name[64];
	bool capped;                 /* attach_start's: attach_prepare refuses beyond the
				      * cap of layouts opening (ATTACH_THREADS_MAX) */
	struct attachment *a;        /* listed in c->attached; layout NULL until applied */
	Tessera__Cluster__VolumeRecord *rec; /* vol/<name> as written with our epoch */
	struct layout_params lo;
	char prev_coord[64];         /* the record's coordinator before us (restore_volume) */
	bool old_clean;              /* its clean_detach before us */
	bool dr_target;              /* site_open_volume's: write-fenced -EROFS once registered */
	bool dr_was_promoted;        /* dr_target: repl_target_promoted when it began */
	int64_t failed_ms;           /* a DR target's failure: when (kept ATTACH_FAIL_KEEP_MS) */
	struct tsr_layout *layout;   /* attach_open's result (ret 0) */
	int ret;                     /* attach_open's, then the attach's */
	pthread_t thread;
	bool thread_started;         /* main */
	bool opened;                 /* c->lock: the thread is done with the job */
	bool applied;                /* main: attach_apply ran: ret and msg are final */
	struct admin_later *later;   /* the admin reply (attach_reply frees the job), or NULL */
	char msg[1024];
	struct attach_job *next;     /* c->attaching (main) */
};

/*
 * A DR target's failed attach is told to the next VOLUME_OPEN of its name
 * (cluster_attach_target) if one comes within this long; older, or when
 * another attach of that name begins (attach_prepare), it is dropped: the
 * next VOLUME_OPEN attaches anew.  As TARGET_GROW_KEEP_MS (replication.c).
 */
#define ATTACH_FAIL_KEEP_MS 5000

/* name's job still opening (applied false: at most one), or with failed:
 * a DR target's failed one waiting to be told (cluster_attach_target). */
static struct attach_job *attach_job_find(struct tsr_cluster *c, const char *name, bool failed)
{
	for (struct attach_job *j = c->attaching; j; j = j->next)
		if (strcmp(j->name, name) == 0 &&
		    (failed ? j->applied && j->later == NULL && j->ret != 0 : !j->applied))
			return j;
	return NULL;
}

static void attach_job_unlink(struct tsr_cluster *c, struct attach_job *j);

/* Drop the kept DR failures of name (NULL: every name) that are too old,
 * or (all) every one of name.  Main thread. */
static void attach_failed_drop(struct tsr_cluster *c, const char *name, bool all)
{
	int64_t now = tsr_mono_ms();
	struct attach_job *j, *next;

	for (j = c->attaching; j; j = next) {
		next = j->next;
		if (!j->applied || j->later != NULL || j->ret == 0 ||
		    (name != NULL && strcmp(j->name, name) != 0) ||
		    (!all && now - j->failed_ms < ATTACH_FAIL_KEEP_MS))
			continue;
		tsr_info("cluster: the failed attach of DR target %s (%s) is forgotten (%s)",
			 j->name, j->msg, all ? "another attach of it begins" : "not asked for in "
			 "time");
		attach_job_unlink(c, j);
		free(j);
	}
}

bool cluster_attach_running(struct tsr_cluster *c, const char *name)
{
	return attach_job_find(c, name, false) != NULL;
}

static void attach_job_unlink(struct tsr_cluster *c, struct attach_job *j)
{
	for (struct attach_job **pp = &c->attaching; *pp; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	j->next = NULL;
}

/*
 * At most this many layout opens run at once on a node, each in a thread of
 * its own (attach_start).  An open takes milliseconds when the copies' nodes
 * answer; only a node that does not answer makes it last (up to the peer
 * timeout), and that is when attaches pile up.  Beyond it an attach is
 * refused at once, nothing done (-EAGAIN, a DR target's -EBUSY): "too many
 * attaches ... retry" (a retry, not a queue: a queued attach would wait
 * behind the stuck ones without saying so; the CSI plugin maps -EAGAIN to
 * UNAVAILABLE, which its caller retries; the DR source retries a busy
 * VOLUME_OPEN).  Tests only: $TSR_TEST_ATTACH_THREADS_MAX (1..) lowers it.
 */
#define ATTACH_THREADS_MAX 16

static unsigned attach_threads_max(void)
{
	const char *e = getenv("TSR_TEST_ATTACH_THREADS_MAX");
	unsigned long n = e ? strtoul(e, NULL, 10) : 0;

	return n >= 1 && n < ATTACH_THREADS_MAX ? (unsigned)n : ATTACH_THREADS_MAX;
}

/* Layout opens running in their threads now (main thread). */
static unsigned attach_threads_running(struct tsr_cluster *c)
{
	unsigned n = 0;

	for (struct attach_job *j = c->attaching; j; j = j->next)
		if (!j->applied && j->thread_started)
			n++;
	return n;
}

static void attach_running_msg(const char *name, char *msg, size_t msg_len)
{
	snprintf(msg, msg_len, "attach of '%s' is running here (its copies are being opened: "
		 "up to the peer timeout for a node that does not answer): retry once it "
		 "answered", name);
}

/*
 * Steps 1 and 2, and the attachment listed with its layout's parameters in
 * j->lo.  0: prepared (attach_open next); 1: attached here already (msg
 * says so, nothing to do); -errno: refused, nothing left behind (msg).
 */
static int attach_prepare(struct tsr_cluster *c, const char *name, struct attach_job *j,
			  char *msg, size_t msg_len)
{
	Tessera__Cluster__AttachRecord arec = TESSERA__CLUSTER__ATTACH_RECORD__INIT;
	Tessera__Cluster__VolumeRecord *rec = NULL;
	struct layout_params *lo = &j->lo;
	struct attachment *a;
	char key[80], holder[64];
	uint64_t epoch, lease = cluster_lease(c), held_lease;
	bool bitmaps_ours = false;
	int ret;

	if (cluster_attach_running(c, name)) {
		attach_running_msg(name, msg, msg_len);
		return -EBUSY;
	}
	/* a DR target's failure kept for its next VOLUME_OPEN is stale now */
	attach_failed_drop(c, name, true);
	if (cluster_detach_pending(c, name)) {
		snprintf(msg, msg_len,
			 "volume '%s' is being detached here (waiting for its NBD "
			 "clients to go, or for its DR site to acknowledge its writes): retry in "
			 "a moment",
			 name);
		return -EBUSY;
	}
	a = cluster_find_attachment(c, name);
	if (a && !a->fenced) {
		snprintf(msg, msg_len, "volume '%s' is attached here already (epoch %llu)", name,
			 (unsigned long long)a->epoch);
		return 1;
	}
	if (a) { /* fenced: drop the stale coordinator and attach anew */
		cluster_detach_local(c, a, msg, msg_len);
	}
	snprintf(j->name, sizeof(j->name), "%s", name);
	ret = rec_volume_get(c->meta, name, &rec, NULL);
	if (ret) {
		snprintf(msg, msg_len, ret == -ENOENT ? "volume '%s' not found (tessera volume list "
			 "shows what exists)" : "cannot read volume '%s' from the metadata store",
			 name);
		return ret;
	}
	ret = cluster_get_attach(c, name, holder, sizeof(holder), &epoch, &held_lease);
	if (ret == 0 && strcmp(holder, c->node_id) == 0 && held_lease == lease) {
		/* ours from an attach that failed half-way: take it over */
		delete_attach_key(c, name, epoch);
	} else if (ret == 0) {
		snprintf(msg, msg_len, "volume '%s' is attached on %s (epoch %llu); detach it there "
			 "first (tessera volume detach %s), or wait for that node's lease to "
			 "expire (%u ms) if it is dead", name, holder, (unsigned long long)epoch,
			 name, TSR_CLUSTER_LEASE_TTL_MS);
		ret = -EBUSY;
		goto out;
	} else if (ret != -ENOENT) {
		snprintf(msg, msg_len, "cannot read attach/%s: %s", name, strerror(-ret));
		goto out;
	}
	/* the cap, after every other answer (a second attach, one attached
	 * here already, "not found", "attached on N", "being detached": review
	 * 17b F3) and before anything is written */
	if (j->capped && attach_threads_running(c) >= attach_threads_max()) {
		snprintf(msg, msg_len, "cannot attach '%s' now: too many attaches in progress on "
			 "%s (%u opening their copies, the most at once: each waits up to the peer "
			 "timeout for a node that does not answer); nothing was recorded: retry in "
			 "a moment", name, c->node_id, attach_threads_max());
		ret = -EAGAIN;
		goto out;
	}
	/* Tests only: while the file $TSR_TEST_ATTACH_RECORD_HOLD_FILE exists
	 * (30 s at most), the attach waits here, on the control loop, between
	 * its checks and its record writes (test-cluster-delete-attach-race) */
	tsr_test_hold_file("TSR_TEST_ATTACH_RECORD_HOLD_FILE", true);
	arec.node_id = c->node_id;
	snprintf(key, sizeof(key), "attach/%s", name);
	ret = rec_put(c->meta, key, &arec.base, 0, lease, &epoch);
	if (ret == -ECANCELED) {
		snprintf(msg, msg_len, "volume '%s' was just attached elsewhere (tessera volume "
			 "show %s)", name, name);
		ret = -EBUSY;
		goto out;
	}
	if (ret) {
		snprintf(msg, msg_len, "cannot record the attachment of '%s': %s%s", name,
			 strerror(-ret), ret == -ENOENT ? " (this node's lease expired: retry in a "
			 "second)" : "");
		goto out;
	}
	ret = update_volume(c, name, epoch, false, false, c->node_id, &j->old_clean,
			    &bitmaps_ours, j->prev_coord, sizeof(j->prev_coord));
	if (ret == -EINPROGRESS) {
		/* rec was read before the mark when the rollback began meanwhile */
		const char *mark = rec->rollback_snapshot[0] ? rec->rollback_snapshot : "SNAP";
		/* "SNAP": it runs or its node died; "SNAP/failed": it failed
		 * (snapshot.c, rollback_mark) */
		bool ended = strchr(mark, '/') != NULL;
		int len = (int)strcspn(mark, "/");

		snprintf(msg, msg_len, "volume '%s' has an unfinished rollback to snapshot '%.*s' "
			 "(%s): its copies may differ until it is done; %srun it again: tessera "
			 "volume rollback %s %.*s (a copy whose node is gone: tessera volume "
			 "replace-replica %s --node NODE --to NEW first; the rollback skips the "
			 "replaced copy, which the next attach rebuilds; or roll back to another "
			 "snapshot instead, e.g. when a copy lacks '%.*s'%s), then attach", name,
			 len, mark, ended ? "it failed" : "running now, or cut short",
			 ended ? "" : "wait for it, or ", name, len, mark, name, len, mark,
			 ended ? "" : ": while it may run, that one keeps the mark, run it twice");
		ret = -EBUSY;
		goto undo_key;
	}
	if (ret == -ENOENT) {
		/* a volume delete won: it read vol/<name> and found no
		 * attach/<name> before our write above, and deleted the record
		 * before this read-modify-write (a compare-and-set at the
		 * revision it reads: had ours come first, the delete's
		 * compare-and-set at its older revision would have failed
		 * instead).  Its copies are being deleted: nothing to open. */
		snprintf(msg, msg_len, "volume '%s' was deleted while this attach was being "
			 "recorded: nothing is attached (tessera volume list shows what exists)",
			 name);
		goto undo_key;
	}
	if (ret) {
		snprintf(msg, msg_len, "cannot record epoch %llu in vol/%s: %s (retry)",
			 (unsigned long long)epoch, name, strerror(-ret));
		goto undo_key;
	}
	tessera__cluster__volume_record__free_unpacked(rec, NULL);
	ret = rec_volume_get(c->meta, name, &rec, NULL); /* as it is now, states included */
	if (ret) {
		rec = NULL;
		snprintf(msg, msg_len, "cannot read volume '%s': %s", name, strerror(-ret));
		goto undo_record;
	}

	memset(lo, 0, sizeof(*lo));
	lo->epoch = epoch;
	lo->home = repl_home_hint(c, name); /* consistency group: one worker */
	if (lo->home == NULL)
		lo->home = c->o.workers[c->next_home++ % c->o.n_workers];
	lo->converge = !j->old_clean;
	a = calloc(1, sizeof(*a));
	if (a == NULL) {
		ret = -ENOMEM;
		snprintf(msg, msg_len, "out of memory in tesserad");
		goto undo_record;
	}
	snprintf(a->name, sizeof(a->name), "%s", name);
	a->epoch = epoch;
	a->n_copies = (unsigned)rec->n_copies;
	for (unsigned i = 0; i < a->n_copies; i++) {
		const Tessera__Cluster__CopyRecord *cr = rec->copies[i];
		struct tsr_layout_copy *mc = &lo->copies[i];
		Tessera__Cluster__NodeRecord *node = NULL;
		char bitmap[4096];

		snprintf(mc->node_id, sizeof(mc->node_id), "%s", cr->node_id);
		snprintf(a->copies[i].node_id, sizeof(a->copies[i].node_id), "%s", cr->node_id);
		mc->local = strcmp(cr->node_id, c->node_id) == 0;
		mc->state = rec_state_to_mirror(cr->state);
		a->copies[i].last_state = mc->state;
		if (!mc->local && rec_node_get(c->meta, cr->node_id, &node) == 0) {
			snprintf(mc->address, sizeof(mc->address), "%s", node->address);
			tessera__cluster__node_record__free_unpacked(node, NULL);
		}
		/*
		 * Away under another coordinator: our bitmap (if any) misses its
		 * writes, copy it all.  A lost bitmap the mirror detects itself.
		 */
		snprintf(bitmap, sizeof(bitmap), "%s/%s.%s.bitmap", c->coord_dir, name, cr->node_id);
		mc->full_resync = mc->state != TSR_COPY_IN_SYNC &&
				  (!bitmaps_ours || access(bitmap, F_OK) != 0);
		/*
		 * The last coordinator died or was cut off without detaching: its own
		 * copy may hold writes it never got acknowledged elsewhere.  Converge
		 * compares it if it is reachable now; if not, its resync compares
		 * every block when it returns (mirror.h, full_resync).
		 */
		if (lo->converge && !mc->local && strcmp(cr->node_id, j->prev_coord) == 0)
			mc->full_resync = true;
		/*
		 * A new copy (replace-replica while no coordinator ran it): a
		 * bitmap or journal we hold of its node is an older copy's, whose
		 * bits say nothing of this empty one.
		 */
		if (cr->rebuild && mc->state != TSR_COPY_IN_SYNC) {
			char journal[4096];

			mc->full_resync = true;
			snprintf(journal, sizeof(journal), "%s/%s.%s.snaps", c->coord_dir, name,
				 cr->node_id);
			unlink(journal);
		}
		/*
		 * The snapshot operations it missed, whoever coordinated then.  A
		 * journal of ours is stale when another node coordinated last (as
		 * its bitmap): the record says what the copy missed since.
		 */
		if (cr->n_missed_snaps > 0 && mc->state != TSR_COPY_IN_SYNC) {
			lo->missed[i] = missed_text(cr);
			mc->missed = lo->missed[i];
		}
		if (!bitmaps_ours) {
			char journal[4096];

			snprintf(journal, sizeof(journal), "%s/%s.%s.snaps", c->coord_dir, name,
				 cr->node_id);
			unlink(journal);
		}
	}
	/* listed before the mirror exists: its first state changes need our epoch */
	pthread_mutex_lock(&c->lock);
	a->next = c->attached;
	c->attached = a;
	pthread_mutex_unlock(&c->lock);
	j->a = a;
	j->rec = rec;

	tsr_info("cluster: attaching %s epoch %llu (%s%u copies, min %u, %s)", name,
		 (unsigned long long)epoch, rec->ec_k ? "ec, " : "", a->n_copies,
		 rec->min_replicas, lo->converge ? "converging: the last coordinator did not "
		 "detach cleanly" : "clean");
	return 0;
undo_record:
	restore_volume(c, name, epoch, j->prev_coord, j->old_clean);
undo_key:
	delete_attach_key(c, name, epoch);
out:
	if (rec)
		tessera__cluster__volume_record__free_unpacked(rec, NULL);
	tsr_warn("cluster: %s", msg);
	return ret;
}

/*
 * Step 3's wait: the layout opens every copy with the epoch.  Any thread:
 * it reads only j and c's options; the layout's hooks queue their records
 * for the cluster's threads.
 */
/*
 * Test hook: while the file $TSR_TEST_ATTACH_TARGET_FAIL_FILE exists, a DR
 * target's layout open waits (up to 30 s, in its thread), then fails
 * -ECONNREFUSED without opening a copy (test-site-attach-failed-drop: the
 * test cuts the link meanwhile, so the failure is kept for a VOLUME_OPEN
 * that does not come).
 */
static bool attach_test_target_fail(const struct attach_job *j)
{
	const char *f = getenv("TSR_TEST_ATTACH_TARGET_FAIL_FILE");

	if (f == NULL || !j->dr_target || access(f, F_OK) != 0)
		return false;
	tsr_info("cluster: test hook (%s): the open of DR target %s waits for the file to go, "
		 "then fails", f, j->name);
	for (int i = 0; i < 3000 && access(f, F_OK) == 0; i++)
		usleep(10000);
	return true;
}

static void attach_open(struct attach_job *j)
{
	if (attach_test_target_fail(j))
		j->ret = -ECONNREFUSED;
	else
		j->ret = layout_open(j->c, j->rec, &j->lo, &j->layout);
	for (unsigned i = 0; i < TSR_LAYOUT_MAX_COPIES; i++) {
		free(j->lo.missed[i]);
		j->lo.missed[i] = NULL;
	}
}

/*
 * Back on the control thread: register the layout and serve it, or (the
 * open failed, or stopping: tsr_cluster_stop) undo steps 1 and 2.  Sets
 * j->ret, j->msg and applied.
 */
static void attach_apply(struct attach_job *j, bool stopping)
{
	struct tsr_cluster *c = j->c;
	struct attachment *a = j->a;
	uint64_t epoch = a->epoch;
	int ret = j->ret;
	bool dr_fence, fenced;

	if (ret == 0 && stopping) {
		tsr_layout_destroy(j->layout);
		ret = -ESHUTDOWN;
		snprintf(j->msg, sizeof(j->msg), "cannot attach '%s': tesserad is stopping (the "
			 "attach is undone: attach it again)", j->name);
		goto undo;
	}
	if (ret) {
		snprintf(j->msg, sizeof(j->msg), "cannot attach '%s': %s", j->name,
			 ret == -EIO ? "fewer than min-replicas in-sync copies are reachable (tessera "
			 "volume show lists them: bring their nodes back, or replace-replica)" :
			 ret == -ESTALE ? "a copy has seen a newer coordinator (someone attached it "
			 "since: tessera volume show)" :
			 ret == -ENOENT ? "a copy is missing on its node (replace-replica it)" :
			 strerror(-ret));
		goto undo;
	}
	/* a DR target takes no host writes (site_open_volume), unless it was
	 * promoted while its layout opened (a promote then is refused -EBUSY,
	 * repl_promote: this is the second guard): the promote found nothing
	 * to unfence, and target/<vol> "promoted" keeps repl_on_attach from
	 * fencing it.  Promoted before (a failback takes it back as a target):
	 * fenced as always.  Registered fenced: no host write slips in between
	 * (review 16c N4). */
	dr_fence = j->dr_target;
	if (dr_fence && !j->dr_was_promoted && repl_target_promoted(c, j->name)) {
		tsr_warn("cluster: DR target %s was promoted while it was being attached: not "
			 "write-fenced", j->name);
		dr_fence = false;
	}
	ret = attaching_end(c, j->name, epoch);
	if (ret) {
		tsr_layout_destroy(j->layout);
		snprintf(j->msg, sizeof(j->msg),
			 "cannot record the end of the attach of '%s' in "
			 "vol/%s: %s (the attach is undone: retry)",
			 j->name, j->name, strerror(-ret));
		goto undo;
	}
	ret = tsr_volset_attach_fenced(c->o.vols, j->name, j->layout, j->lo.home,
				       dr_fence ? -EROFS : 0);
	if (ret) {
		tsr_layout_destroy(j->layout);
		snprintf(j->msg, sizeof(j->msg), "cannot register '%s' for NBD: %s", j->name,
			 strerror(-ret));
		goto undo;
	}
	pthread_mutex_lock(&c->lock);
	a->layout = j->layout;
	fenced = a->fenced;
	if (fenced) /* the lease went while we were building it */
		tsr_layout_fence(j->layout);
	pthread_mutex_unlock(&c->lock);
	tsr_info("cluster: attach %s epoch %llu on %s", j->name, (unsigned long long)epoch,
		 c->node_id);
	/* geo-replication: ship it (a source from here on), or fence it (demoted, target) */
	repl_on_attach(c, j->name);
	if (fenced) {
		/* not "attached": it takes no write (review 16c N4); left listed
		 * fenced, as before: the next attach here detaches it first */
		ret = -ESTALE;
		snprintf(j->msg, sizeof(j->msg), "cannot attach '%s': this node's lease lapsed "
			 "while its copies were being opened, so it is fenced (epoch %llu takes no "
			 "write here; another node may attach it now): attach it again", j->name,
			 (unsigned long long)epoch);
		tsr_warn("cluster: %s", j->msg);
		goto out;
	}
	snprintf(j->msg, sizeof(j->msg), "attached '%s' on %s (epoch %llu)", j->name, c->node_id,
		 (unsigned long long)epoch);
	goto out;
undo:
	attachment_unlink(c, a);
	free(a);
	restore_volume(c, j->name, epoch, j->prev_coord, j->old_clean);
	delete_attach_key(c, j->name, epoch);
	tsr_warn("cluster: %s", j->msg);
out:
	j->a = NULL;
	j->layout = NULL;
	j->ret = ret;
	j->applied = true;
	j->failed_ms = tsr_mono_ms();
	tessera__cluster__volume_record__free_unpacked(j->rec, NULL);
	j->rec = NULL;
}

/* The attach on this thread (dr_target: a DR target's, registered fenced). */
static int attach_inline(struct tsr_cluster *c, const char *name, bool dr_target, char *msg,
			 size_t msg_len)
{
	struct attach_job *j = calloc(1, sizeof(*j));
	int ret;

	if (j == NULL) {
		snprintf(msg, msg_len, "out of memory in tesserad");
		return -ENOMEM;
	}
	j->c = c;
	j->dr_target = dr_target;
	j->dr_was_promoted = dr_target && repl_target_promoted(c, name);
	ret = attach_prepare(c, name, j, msg, msg_len);
	if (ret == 0) {
		attach_open(j);
		attach_apply(j, false);
		ret = j->ret;
		snprintf(msg, msg_len, "%s", j->msg);
	}
	free(j);
	return ret == 1 ? 0 : ret;
}

int cluster_attach_local(struct tsr_cluster *c, const char *name, char *msg, size_t msg_len)
{
	return attach_inline(c, name, false, msg, msg_len);
}

/* The layout opens here, off the control loop; its end wakes the loop. */
static void *attach_thread(void *arg)
{
	struct attach_job *j = arg;
	struct tsr_cluster *c = j->c;

	tsr_log_set_thread_name("attach-open");
	attach_open(j);
	pthread_mutex_lock(&c->lock);
	j->opened = true; /* j is the control thread's again */
	ev_async_send(c->o.loop, &c->attach_wake);
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* admin_later_fn: the attach's reply, j freed. */
static void attach_reply(struct tsr_admin_server *srv, void *arg, Tessera__Admin__Response *resp)
{
	struct attach_job *j = arg;

	(void)srv;
	if (j->c)
		attach_job_unlink(j->c, j);
	if (j->ret)
		admin_fail(resp, j->ret, "%s", j->msg);
	else if (j->c)
		cluster_volume_list(j->c, j->name, resp);
	else
		admin_fail(resp, -ESHUTDOWN, "%s, but tesserad stopped before the reply (and "
			   "detached it)", j->msg);
	free(j);
}

/* An applied job: its admin reply goes (the job freed by attach_reply), or
 * a DR target's success is forgotten (its failure waits for the next
 * VOLUME_OPEN, cluster_attach_start). */
static void attach_job_answer(struct tsr_cluster *c, struct attach_job *j)
{
	if (j->later) {
		admin_later_done(j->later);
	} else if (j->ret == 0) {
		attach_job_unlink(c, j);
		free(j);
	}
}

static void attach_wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct tsr_cluster *c = w->data;
	struct attach_job *j, *next;

	(void)loop;
	(void)revents;
	for (j = c->attaching; j; j = next) {
		bool opened;

		next = j->next;
		if (j->applied)
			continue;
		pthread_mutex_lock(&c->lock);
		opened = j->opened;
		pthread_mutex_unlock(&c->lock);
		if (!opened)
			continue;
		pthread_join(j->thread, NULL);
		j->thread_started = false;
		attach_apply(j, false);
		attach_job_answer(c, j);
	}
}

/*
 * Start an attach of name whose layout opens in a thread.  srv: the admin
 * request's server (the reply comes later, attach_reply), or NULL (a DR
 * target: dr_target).  1: started; 2: not started, attach inline
 * (cluster_attach_local: no wake-up yet, out of memory); 0: attached here
 * already, or no later reply or no thread: attached inline after all;
 * -errno: refused or failed (msg).
 */
static int attach_start(struct tsr_cluster *c, const char *name, struct tsr_admin_server *srv,
			bool dr_target, char *msg, size_t msg_len)
{
	struct attach_job *j;
	int ret;

	if (!c->attach_wake_started)
		return 2;
	j = calloc(1, sizeof(*j));
	if (j == NULL)
		return 2;
	j->c = c;
	j->capped = true;
	j->dr_target = dr_target;
	j->dr_was_promoted = dr_target && repl_target_promoted(c, name);
	ret = attach_prepare(c, name, j, msg, msg_len);
	if (ret) {
		free(j);
		return ret == 1 ? 0 : ret;
	}
	if (srv)
		j->later = admin_later_begin(srv, attach_reply, j);
	ret = srv && j->later == NULL ? -ENOMEM :
	      -pthread_create(&j->thread, NULL, attach_thread, j);
	if (ret) {
		if (j->later)
			admin_later_cancel(j->later);
		j->later = NULL;
		/* no later reply or no thread: as before, on this thread */
		attach_open(j);
		attach_apply(j, false);
		ret = j->ret;
		snprintf(msg, msg_len, "%s", j->msg);
		free(j);
		return ret;
	}
	j->thread_started = true;
	j->next = c->attaching;
	c->attaching = j;
	return 1;
}

int cluster_attach_target(struct tsr_cluster *c, const char *name, char *msg, size_t msg_len)
{
	struct attach_job *j;
	int ret;

	if (cluster_attach_running(c, name)) {
		snprintf(msg, msg_len, "being attached (its copies are being opened): retry");
		return -EINPROGRESS;
	}
	attach_failed_drop(c, name, false); /* too old to tell */
	j = attach_job_find(c, name, true);
	if (j) { /* its failure, told once */
		ret = j->ret;
		snprintf(msg, msg_len, "%s", j->msg);
		attach_job_unlink(c, j);
		free(j);
		return ret;
	}
	ret = attach_start(c, name, NULL, true, msg, msg_len);
	if (ret == 2)
		return attach_inline(c, name, true, msg, msg_len);
	if (ret == 1) {
		snprintf(msg, msg_len, "being attached (its copies are being opened): retry");
		return -EINPROGRESS;
	}
	/* too many attaches here: site_open_volume tells the source a busy
	 * target (it retries), not a failed attach (-EIO) */
	return ret == -EAGAIN ? -EBUSY : ret;
}

void cluster_attach_init(struct tsr_cluster *c)
{
	ev_async_init(&c->attach_wake, attach_wake_cb);
	c->attach_wake.data = c;
	ev_async_start(c->o.loop, &c->attach_wake);
	c->attach_wake_started = true;
}

/*
 * tsr_cluster_stop: wait for every layout still opening (each open ends
 * within the peer timeouts), undo those attaches, and leave nothing of c in
 * the replies still to go (the admin server, destroyed after the cluster,
 * sends them).
 */
void cluster_attach_stop(struct tsr_cluster *c)
{
	struct attach_job *j;

	while ((j = c->attaching) != NULL) {
		c->attaching = j->next;
		j->next = NULL;
		if (!j->applied) {
			tsr_info("cluster: stopping: waiting for the attach of %s (its copies are "
				 "being opened)", j->name);
			if (j->thread_started)
				pthread_join(j->thread, NULL);
			j->thread_started = false;
			attach_apply(j, true);
			j->c = NULL;
			if (j->later)
				admin_later_done(j->later);
			else
				free(j);
			continue;
		}
		j->c = NULL; /* applied: its reply is out already (later), or a DR failure */
		if (j->later == NULL)
			free(j);
	}
	if (c->attach_wake_started) {
		ev_async_stop(c->o.loop, &c->attach_wake);
		c->attach_wake_started = false;
	}
}

void cluster_attach(struct tsr_cluster *c, const Tessera__Admin__Request *req,
		    Tessera__Admin__Response *resp)
{
	const Tessera__Admin__VolumeAttach *r = req->volume_attach;
	struct tsr_admin_server *srv = admin_handling_server();
	char msg[1024];
	int ret = 2;

	if (r->node[0] && forward_to(c, r->node, req, resp))
		return;
	/* Tests only: TSR_TEST_ATTACH_INLINE=1, the layout opens on the loop (the
	 * code before: test-cluster-attach-frozen's control) */
	if (srv != NULL && !tsr_test_env_on("TSR_TEST_ATTACH_INLINE"))
		ret = attach_start(c, r->name, srv, false, msg, sizeof(msg));
	if (ret == 1)
		return; /* attach_reply answers */
	if (ret == 2)
		ret = cluster_attach_local(c, r->name, msg, sizeof(msg));
	if (ret)
		admin_fail(resp, ret, "%s", msg);
	else
		cluster_volume_list(c, r->name, resp);
}

/*
 * A client that has just closed its socket (an unmount, nbdfuse ending right
 * before the detach) is gone once its worker has read the end of the stream
 * and dropped the volume: give that up to DETACH_CLIENT_WAIT_MS.  An admin
 * detach whose volume still has NBD clients after it is refused (-EBUSY,
 * the clients named), the volume left attached and registered; with force
 * it closes them first (tsr_volset_disconnect: their requests in flight
 * are answered, no new one is read) and detaches cleanly once they are
 * gone (waited for up to the peer call timeout more: a write in flight may
 * wait for a copy's node that long).  The admin command waits on an
 * ev_timer and answers later (admin_later_begin): the loop keeps serving
 * admin calls, the CSI plugin and the tick meanwhile.  tsr_cluster_stop's
 * detaches, and an attach
 * replacing a fenced attachment, are not refused: they wait in place and
 * count a client left as an unclean detach, as before.
 *
 * The drain: a clean detach of a volume that ships to a DR site stops its
 * source only once the site has ACKed every write acknowledged here before
 * the clients were gone (repl_unshipped), up to the peer call timeout more
 * (the same ev_timer poll, the reply later).  Past it (the site down or slow)
 * the source stops anyway and the detach says how many writes its site lacks:
 * the next attach's initial copy sends them.  tsr_cluster_stop's detaches
 * wait in place, all within one peer call timeout (c->drain_until_ns).
 */
#define DETACH_CLIENT_WAIT_MS 2000
#define DETACH_CLIENT_POLL_MS 10

/*
 * A detach of an admin request answered later: waiting for its volume's NBD
 * clients to go (listed in c->detaching), then, once recorded, for its
 * copies to be closed on their nodes (closewait.c).  Main thread only.
 */
struct detach_wait {
	struct tsr_cluster *c;
	struct attachment *a;      /* clients_phase: still in c->attached; then unlinked
				    * from it, freed by detach_finish (NULL from then on) */
	bool clients_phase;        /* waiting for its NBD clients before anything is
				    * undone: the volume stays attached and registered */
	bool force;                /* VolumeDetach.force: close the clients */
	unsigned disconnected;     /* force: the clients it closed (the reply's) */
	unsigned refused;          /* the clients still connected after the wait: the
				    * detach is refused (the reply's), 0: not refused */
	char peers[TSR_DETACH_CLIENTS_LISTED][TSR_PEER_ADDR_MAX]; /* the first of them */
	char node_id[64];          /* this node's, for the refusal (the reply may be sent
				    * after tsr_cluster_stop freed c) */
	bool stopping;             /* refused because tesserad stops (the wait cut short) */
	int wait_ms;               /* the wait's length: DETACH_CLIENT_WAIT_MS, and for the
				    * handles of clients force closed the peer call
				    * timeout more (their writes may wait for a copy) */
	bool fenced;               /* the detach is unclean already */
	int64_t drain_since_ns;    /* the clients gone, waiting for the DR site's ACKs
				    * (detach_drain_start): tsr_mono_ns when they were
				    * seen gone, the writes acknowledged before it are
				    * waited for; 0: not that wait */
	char *unshipped;           /* the source stopped with writes its site had not
				    * ACKed: the reply's sentence (detach_finish), NULL: none */
	double deadline;           /* ev_now at which the clients count as left (the drain:
				    * at which the source stops anyway) */
	ev_timer poll;             /* every DETACH_CLIENT_POLL_MS on c->o.loop */
	struct admin_later *later; /* the admin reply, given once the waits are over */
	struct detach_wait *next;  /* c->detaching */
	char name[64];             /* the volume's */
	uint64_t epoch;            /* the detached coordinator's */
	unsigned n_nodes;          /* the nodes of the copies the coordinator had open */
	char nodes[TSR_LAYOUT_MAX_COPIES][64];
	char *note;                /* the copies still open at the end (the reply's
				    * message), NULL: all closed */
};

/* Whether a detached (detach_begin) volume's handles other than the
 * detach's own (a->held) are still held: its clients' requests. */
static bool handles_held(struct tsr_cluster *c, struct attachment *a)
{
	return a->held ? tsr_vol_shared(a->held) : tsr_volset_in_use(c->o.vols, a->name);
}

/* Blocking form, for tsr_cluster_stop and callers outside an admin request. */
static bool clients_gone(struct tsr_cluster *c, struct attachment *a)
{
	for (int ms = 0; ms < DETACH_CLIENT_WAIT_MS; ms += DETACH_CLIENT_POLL_MS) {
		if (!handles_held(c, a))
			return true;
		usleep(DETACH_CLIENT_POLL_MS * 1000);
	}
	return !handles_held(c, a);
}

bool cluster_detach_pending(struct tsr_cluster *c, const char *name)
{
	for (struct detach_wait *w = c->detaching; w; w = w->next)
		if (strcmp(w->name, name) == 0)
			return true;
	return false;
}

/* Whether a's coordinator is fenced (the detach is unclean anyway). */
static bool attachment_fenced(struct tsr_cluster *c, struct attachment *a)
{
	bool fenced;

	pthread_mutex_lock(&c->lock);
	fenced = a->fenced;
	if (a->layout && !fenced) {
		struct tsr_layout_status st;

		tsr_layout_get_status(a->layout, &st);
		fenced = st.fenced;
	}
	pthread_mutex_unlock(&c->lock);
	return fenced;
}

/*
 * The refusal of a detach whose volume has n NBD clients still connected
 * (peers: the first of them, at most TSR_DETACH_CLIENTS_LISTED), into resp:
 * -EBUSY, what to do, and the clients (Response.nbd_clients).  stopping:
 * the wait was cut short by tesserad's stop, which detaches it next.
 */
static void detach_refuse(const char *name, const char *node_id, unsigned n,
			  char (*peers)[TSR_PEER_ADDR_MAX], bool stopping,
			  Tessera__Admin__Response *resp)
{
	unsigned listed = n < TSR_DETACH_CLIENTS_LISTED ? n : TSR_DETACH_CLIENTS_LISTED;
	char list[TSR_DETACH_CLIENTS_LISTED * (TSR_PEER_ADDR_MAX + 2) + 16] = "";
	size_t used = 0;

	for (unsigned i = 0; i < listed && used < sizeof(list); i++)
		used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "",
					 peers[i]);
	if (n > listed && used < sizeof(list))
		snprintf(list + used, sizeof(list) - used, ", ...");
	if (stopping)
		admin_fail(resp, -EBUSY, "volume '%s' is in use by %u NBD client%s on %s (%s) "
			   "and tesserad is stopping there: this detach was not done; the stop "
			   "detaches it (not cleanly while %s stay%s connected: the next attach "
			   "converges the copies)", name, n, n == 1 ? "" : "s", node_id, list,
			   n == 1 ? "it" : "they", n == 1 ? "s" : "");
	else
		admin_fail(resp, -EBUSY, "volume '%s' is in use by %u NBD client%s on %s (%s), "
			   "still connected %d ms after the detach was asked: nothing was changed "
			   "(it stays attached); disconnect %s (unmount, nbd-client -d, end nbdfuse "
			   "or qemu), or detach with --force (tessera volume detach %s --force: "
			   "their requests in flight are answered, then their connections are "
			   "closed)", name, n, n == 1 ? "" : "s", node_id, list,
			   DETACH_CLIENT_WAIT_MS, n == 1 ? "it" : "them", name);
	resp->nbd_clients_total = n;
	resp->nbd_clients = calloc(listed, sizeof(*resp->nbd_clients));
	if (resp->nbd_clients == NULL)
		return;
	for (unsigned i = 0; i < listed; i++) {
		resp->nbd_clients[i] = admin_strdup(peers[i]);
		if (resp->nbd_clients[i] == NULL)
			break;
		resp->n_nbd_clients++;
	}
}

/*
 * First half of a detach: unlink a, take it out of the volume set.  Returns
 * whether the detach is unclean already (fenced).  Its replication source
 * keeps shipping until detach_finish (a->held keeps the volume for it):
 * the writes its clients' requests complete meanwhile are acknowledged
 * and go to the DR site's log, as every acknowledged write.
 */
static bool detach_begin(struct tsr_cluster *c, struct attachment *a)
{
	bool fenced = attachment_fenced(c, a);
	int ret;

	attachment_unlink(c, a);
	pthread_mutex_lock(&c->lock);
	a->next = c->draining; /* until detach_finish: its copies' states still recorded */
	c->draining = a;
	pthread_mutex_unlock(&c->lock);
	a->held = NULL;
	if (a->layout && tsr_vol_get(c->o.vols, a->name, &a->held))
		a->held = NULL;
	if (a->held == NULL)
		repl_on_detach(c, a->name); /* no handle: its source goes before the volume */
	if (a->layout) {
		ret = tsr_volset_detach(c->o.vols, a->name);
		if (ret)
			tsr_warn("cluster: unregister %s: %s", a->name, strerror(-ret));
	}
	return fenced;
}

/*
 * Second half, once the clients are gone or the wait is over (clients_left):
 * record the clean detach unless fenced, delete attach/<name>, free a.
 * msg: "detached NAME", and, when a clean detach's source stopped with
 * writes its DR site had not ACKed (the drain's bound passed), how many and
 * that the next attach copies them: then true (the log line says it too).
 */
static bool detach_finish(struct tsr_cluster *c, struct attachment *a, bool fenced,
			  bool clients_left, char *msg, size_t msg_len)
{
	struct repl_unshipped u;
	bool unshipped = false;
	char lacks[256] = "";
	int ret;

	/*
	 * NBD clients still connected keep the detached coordinator until they
	 * go: their writes may still land, so the copies are not known to be
	 * identical.  The next attach converges them (a higher epoch fences
	 * these clients at every copy).
	 */
	if (clients_left) {
		tsr_warn("cluster: volume %s detached with NBD clients still connected: "
			 "they drain on the old coordinator; the next attach converges the "
			 "copies", a->name);
		fenced = true;
	}
	/* after its clients' requests (those still in flight, clients_left,
	 * are not shipped: the next attach's initial copy sends them) and, clean,
	 * after the drain: what its site still lacks now is dropped, said here */
	if (a->held) {
		unshipped = !fenced && repl_unshipped(c, a->name, 0, &u);
		if (unshipped && u.writes)
			snprintf(lacks, sizeof(lacks),
				 "; %llu write%s (%llu bytes) not yet at site "
				 "'%s' when its source stopped: the next attach copies them",
				 (unsigned long long)u.writes, u.writes == 1 ? "" : "s",
				 (unsigned long long)u.bytes, u.site);
		else if (unshipped) /* an initial copy or an overflow's regions */
			snprintf(lacks, sizeof(lacks),
				 "; %llu bytes of regions not yet copied to site '%s' when "
				 "its source stopped: the next attach copies them",
				 (unsigned long long)u.bytes, u.site);
		repl_on_detach(c, a->name);
	}
	missed_drain(c);
	if (!fenced) {
		ret = update_volume(c, a->name, a->epoch, true, true, NULL, NULL, NULL, NULL, 0);
		if (ret)
			tsr_warn("cluster: volume %s: cannot record the clean detach: %s (the next "
				 "attach converges the copies)", a->name, strerror(-ret));
	}
	delete_attach_key(c, a->name, a->epoch);
	tsr_info("cluster: detach %s epoch %llu from %s%s%s", a->name, (unsigned long long)a->epoch,
		 c->node_id, fenced ? " (not clean: the next attach converges)" : " (clean)",
		 lacks);
	snprintf(msg, msg_len, "detached '%s'%s", a->name, lacks);
	pthread_mutex_lock(&c->lock);
	for (struct attachment **pp = &c->draining; *pp; pp = &(*pp)->next)
		if (*pp == a) {
			*pp = a->next;
			break;
		}
	pthread_mutex_unlock(&c->lock);
	/* off c->draining first: the layout's own close at the last put
	 * records no copy state (record_state) */
	tsr_vol_put(a->held);
	free(a);
	return unshipped;
}

/*
 * Blocking form of the drain (detach_drain_start), for tsr_cluster_stop and
 * callers outside an admin request: until a's DR site has ACKed what its
 * source holds, or c->drain_until_ns (tsr_cluster_stop's one bound for all
 * its detaches), else the peer call timeout from now.
 */
static void drain_blocking(struct tsr_cluster *c, struct attachment *a)
{
	int64_t since = tsr_mono_ns(), until = c->drain_until_ns;
	struct repl_unshipped u;
	bool said = false;

	if (until == 0)
		until = since + (int64_t)cluster_peer_call_ms(c) * 1000000;
	while (a->held && repl_unshipped(c, a->name, since, &u) && tsr_mono_ns() < until) {
		if (!said && (u.writes || u.bytes)) {
			tsr_info("cluster: detach %s: waiting up to %lld ms for site %s to "
				 "acknowledge %llu write%s (%llu bytes) before its source stops",
				 a->name, (long long)((until - tsr_mono_ns()) / 1000000), u.site,
				 (unsigned long long)u.writes, u.writes == 1 ? "" : "s",
				 (unsigned long long)u.bytes);
			said = true;
		}
		usleep(DETACH_CLIENT_POLL_MS * 1000);
	}
}

int cluster_detach_local(struct tsr_cluster *c, struct attachment *a, char *msg, size_t msg_len)
{
	bool fenced = detach_begin(c, a);
	/* a fenced detach is unclean whatever its clients do: no wait */
	bool left = a->layout && !fenced && !clients_gone(c, a);

	if (a->layout && !fenced && !left)
		drain_blocking(c, a);
	detach_finish(c, a, fenced, left, msg, msg_len);
	return 0;
}

/* admin_later_fn: the detach's reply (success; a note when a copy is still
 * open on its node), w freed. */
static void detach_reply(struct tsr_admin_server *srv, void *arg, Tessera__Admin__Response *resp)
{
	struct detach_wait *w = arg;

	(void)srv;
	if (w->refused)
		detach_refuse(w->name, w->node_id, w->refused, w->peers, w->stopping, resp);
	else if (w->note || w->unshipped)
		admin_fail(resp, 0, "%s%s%s", w->unshipped ? w->unshipped : "",
			   w->unshipped && w->note ? "; " : "", w->note ? w->note : "");
	resp->clients_disconnected = w->disconnected;
	free(w->note);
	free(w->unshipped);
	free(w);
}

/* The nodes of the copies a's coordinator has open now (its layout's
 * copies with a session), into w: those whose close the reply waits for.
 * A copy whose session ended earlier (its node away, failed) was let go
 * then: not waited for. */
static void detach_copy_nodes(struct detach_wait *w, struct attachment *a)
{
	struct tsr_layout_status st;

	w->epoch = a->epoch;
	w->n_nodes = 0;
	if (a->layout == NULL)
		return;
	pthread_mutex_lock(&w->c->lock);
	tsr_layout_get_status(a->layout, &st);
	pthread_mutex_unlock(&w->c->lock);
	for (unsigned i = 0; i < st.n_copies && i < TSR_LAYOUT_MAX_COPIES; i++)
		if (st.copies[i].connected && st.copies[i].node_id[0])
			snprintf(w->nodes[w->n_nodes++], 64, "%s", st.copies[i].node_id);
}

/* close_wait_fn: the copies are closed (note ""), or the bound passed. */
static void detach_closed(void *cb_arg, const char *note)
{
	struct detach_wait *w = cb_arg;

	w->note = note[0] ? strdup(note) : NULL;
	admin_later_done(w->later); /* detach_reply frees w */
}

/*
 * The detach is recorded (detach_finish): reply once its copies are closed
 * on their nodes (closewait.c), when the detach was clean (fenced: a newer
 * coordinator may hold them; clients left: the old coordinator still drains
 * into them), else now.
 */
static void detach_wait_close(struct detach_wait *w, bool clean)
{
	struct tsr_cluster *c = w->c;
	int ret;

	if (!clean || w->n_nodes == 0 || c->stopping_waits) {
		admin_later_done(w->later); /* detach_reply frees w */
		return;
	}
	ret = cluster_close_wait_start(c, w->name, w->epoch, (const char (*)[64])w->nodes,
				       w->n_nodes, detach_closed, w);
	if (ret) {
		tsr_warn("cluster: detach %s: not waiting for its copies' close: %s", w->name,
			 strerror(-ret));
		admin_later_done(w->later);
	}
}

/* Stop w's poll and take it off c->detaching (a no-op when it is not on it). */
static void detach_wait_unlist(struct detach_wait *w)
{
	struct tsr_cluster *c = w->c;

	ev_timer_stop(c->o.loop, &w->poll);
	for (struct detach_wait **pp = &c->detaching; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
}

/* End w's wait for the clients (or for the DR site's ACKs): finish the
 * detach, unlist w, let the admin reply go once the copies are closed. */
static void detach_wait_end(struct detach_wait *w)
{
	struct tsr_cluster *c = w->c;
	bool left = handles_held(c, w->a);
	char msg[512];

	detach_wait_unlist(w);
	if (detach_finish(c, w->a, w->fenced, left, msg, sizeof(msg)))
		w->unshipped = strdup(msg); /* NULL: the log line says it */
	w->a = NULL;
	if (left && !w->fenced && w->note == NULL &&
	    asprintf(&w->note, "detached '%s' not cleanly: requests of its NBD clients were "
		     "still in flight %d ms after the detach (a copy's node slow or away?); "
		     "they are answered as they complete, and the next attach converges the "
		     "copies", w->name, w->wait_ms) < 0)
		w->note = NULL; /* the warning in the log says it */
	detach_wait_close(w, !w->fenced && !left);
}

static bool detach_drain_start(struct tsr_cluster *c, struct detach_wait *w, struct attachment *a);

static void detach_poll_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct detach_wait *w = t->data;

	(void)revents;
	if (!handles_held(w->c, w->a)) {
		/* clean so far: its DR site's ACKs next, then the reply */
		if (w->fenced || !detach_drain_start(w->c, w, w->a))
			detach_wait_end(w);
		return;
	}
	if (ev_now(loop) >= w->deadline) {
		detach_wait_end(w);
		return;
	}
	/* a client that reached its worker after the last ask (an open
	 * delivered, a connection moving to the volume's home) is asked now;
	 * without force too: the volume had no client when the detach went
	 * ahead, so this one's open raced the unregister, and left alone it
	 * would keep writing through the detached coordinator */
	tsr_volset_disconnect(w->c->o.vols, w->a->name);
}

static void detach_run(struct tsr_cluster *c, struct attachment *a, struct detach_wait *w,
		       Tessera__Admin__Response *resp);

/*
 * End w's wait for the NBD clients before the detach: none left, the detach
 * runs (w goes on with it); else it is refused, nothing changed, and the
 * reply goes now.
 */
static void detach_clients_end(struct detach_wait *w)
{
	struct tsr_cluster *c = w->c;
	struct attachment *a = w->a;

	detach_wait_unlist(w);
	w->clients_phase = false;
	w->refused = tsr_volset_clients(c->o.vols, a->name, w->peers, TSR_DETACH_CLIENTS_LISTED);
	w->stopping = c->stopping_waits;
	if (w->refused) {
		tsr_warn("cluster: detach %s refused: %u NBD client%s still connected %s (first: "
			 "%s); %s", a->name, w->refused, w->refused == 1 ? "" : "s",
			 w->stopping ? "as tesserad stops" : "after the wait", w->peers[0],
			 w->stopping ? "the stop detaches it" : "it stays attached");
		w->a = NULL;
		admin_later_done(w->later); /* detach_reply frees w */
		return;
	}
	w->a = NULL;
	detach_run(c, a, w, NULL);
}

static void detach_clients_poll_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct detach_wait *w = t->data;

	(void)revents;
	if (tsr_volset_clients(w->c->o.vols, w->a->name, NULL, 0) > 0 && ev_now(loop) < w->deadline)
		return;
	detach_clients_end(w);
}

/* Start w's poll of kind cb until wait_ms from now; w listed. */
static void detach_wait_start(struct tsr_cluster *c, struct detach_wait *w,
			      void (*cb)(struct ev_loop *, ev_timer *, int), int wait_ms)
{
	ev_now_update(c->o.loop); /* the loop time of this pass may be old */
	w->wait_ms = wait_ms;
	w->deadline = ev_now(c->o.loop) + wait_ms / 1000.0;
	ev_timer_init(&w->poll, cb, DETACH_CLIENT_POLL_MS / 1000.0,
		      DETACH_CLIENT_POLL_MS / 1000.0);
	w->poll.data = w;
	ev_timer_start(c->o.loop, &w->poll);
	w->next = c->detaching;
	c->detaching = w;
}

static void detach_drain_poll_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct detach_wait *w = t->data;
	struct repl_unshipped u;

	(void)revents;
	if (!repl_unshipped(w->c, w->name, w->drain_since_ns, &u) || ev_now(loop) >= w->deadline)
		detach_wait_end(w); /* past the bound: detach_finish says what its site lacks */
}

/*
 * a's clients are gone and its detach is clean so far: when its source
 * holds writes acknowledged before now that its DR site has not ACKed
 * (repl_unshipped), wait for the ACKs up to the peer call timeout (the
 * source ships meanwhile), then detach_wait_end: true, w listed (off its
 * wait for the handles first).  false: nothing to wait for (no source, all
 * ACKed; or tesserad stops: waited for here, drain_blocking), w untouched.
 */
static bool detach_drain_start(struct tsr_cluster *c, struct detach_wait *w, struct attachment *a)
{
	int64_t since = tsr_mono_ns();
	struct repl_unshipped u;

	if (a->held == NULL)
		return false;
	if (c->stopping_waits) { /* tesserad stops: within its one bound, in place */
		drain_blocking(c, a);
		return false;
	}
	if (!repl_unshipped(c, a->name, since, &u))
		return false;
	detach_wait_unlist(w);
	w->a = a;
	w->fenced = false;
	w->drain_since_ns = since;
	detach_wait_start(c, w, detach_drain_poll_cb, cluster_peer_call_ms(c));
	if (u.writes || u.bytes)
		tsr_info("cluster: detach %s: waiting up to %d ms for site %s to acknowledge %llu "
			 "write%s (%llu bytes) before its source stops (the reply comes then)",
			 a->name, w->wait_ms, u.site, (unsigned long long)u.writes,
			 u.writes == 1 ? "" : "s", (unsigned long long)u.bytes);
	return true;
}

void cluster_detach_stop_waits(struct tsr_cluster *c)
{
	c->stopping_waits = true; /* their replies go now, not after the copies' close */
	/* a wait for the clients before a detach ends as if its time were up:
	 * refused, the attachment left to tsr_cluster_stop's own detach, or run
	 * (then, if its clients' handles linger, listed again: ended next) */
	while (c->detaching) {
		if (c->detaching->clients_phase) {
			detach_clients_end(c->detaching);
			continue;
		}
		/* clients gone (a wait for the DR site's ACKs, or one for the
		 * handles that ended): the wait for the ACKs goes on in place,
		 * within the stop's one bound (c->drain_until_ns) */
		if (!c->detaching->fenced && !handles_held(c, c->detaching->a))
			drain_blocking(c, c->detaching->a);
		detach_wait_end(c->detaching);
	}
	cluster_close_wait_stop(c);
}

/*
 * The detach itself, once no NBD client holds the volume (or, force, with
 * its clients told to go: w->disconnected): when handles are still held
 * (a client that has just closed, the forced ones draining), the reply
 * comes once they are gone or DETACH_CLIENT_WAIT_MS passed, without holding
 * the loop; a clean detach's reply then waits for its copies to be closed
 * on their nodes (detach_wait_close, at most the peer timeout).  Falls back
 * to the blocking wait for the handles, and no wait for the copies, when the
 * reply cannot be deferred (w NULL: not inside an admin request, out of
 * memory).  resp: the admin request's, while it is being handled (a reply
 * with nothing to wait for goes in it), NULL later (w's reply).
 */
static void detach_run(struct tsr_cluster *c, struct attachment *a, struct detach_wait *w,
		       Tessera__Admin__Response *resp)
{
	bool fenced, opened = a->layout != NULL;
	char msg[512];

	if (w)
		detach_copy_nodes(w, a);
	fenced = detach_begin(c, a);
	if (w && w->force && opened) {
		/* unregistered first: no new client can open it meanwhile (a
		 * fenced one's clients too: their I/O fails from now on anyway) */
		w->disconnected = tsr_volset_disconnect(c->o.vols, a->name);
		if (w->disconnected)
			tsr_info("cluster: detach %s --force: closing its %u NBD client%s",
				 a->name, w->disconnected, w->disconnected == 1 ? "" : "s");
	}
	if (!opened || fenced || !handles_held(c, a)) {
		if (w && opened && !fenced && detach_drain_start(c, w, a))
			return; /* the reply comes after the drain */
		if (w == NULL && opened && !fenced)
			drain_blocking(c, a);
		if (detach_finish(c, a, fenced, false, msg, sizeof(msg)) && w)
			w->unshipped = strdup(msg); /* tesserad stops: bound passed (drain_start) */
		if (w && opened && !fenced) {
			detach_wait_close(w, true);
		} else if (w && resp) { /* nothing to wait for: the reply goes now */
			resp->clients_disconnected = w->disconnected;
			admin_later_cancel(w->later);
			free(w);
		} else if (w) {
			admin_later_done(w->later); /* detach_reply frees w */
		}
		return;
	}
	if (w == NULL) {
		bool left = !clients_gone(c, a);

		if (!left && !fenced)
			drain_blocking(c, a);
		detach_finish(c, a, fenced, left, msg, sizeof(msg));
		return;
	}
	w->a = a;
	w->fenced = fenced;
	/* a closed client's write in flight may wait for a copy's node up to the
	 * peer timeout: answered by then, and the detach clean */
	detach_wait_start(c, w, detach_poll_cb, DETACH_CLIENT_WAIT_MS +
			  (w->disconnected ? cluster_peer_call_ms(c) : 0));
	tsr_info("cluster: detach %s: waiting up to %d ms for its NBD clients to go (the reply "
		 "comes then)", a->name, w->wait_ms);
}

/*
 * The detach of an admin request (force: VolumeDetach.force).  A volume
 * whose NBD clients stay connected DETACH_CLIENT_WAIT_MS is not detached:
 * the reply refuses it and names them (detach_refuse); meanwhile it stays
 * attached and a second detach or an attach of it is refused
 * (cluster_detach_pending).  With force they are closed, then it detaches.
 * A fenced coordinator's detach is unclean anyway: not refused, as before
 * (its clients' writes fail; the next epoch fences them at every copy).
 */
static void detach_admin(struct tsr_cluster *c, struct attachment *a, bool force,
			 Tessera__Admin__Response *resp)
{
	struct tsr_admin_server *srv = admin_handling_server();
	struct detach_wait *w = srv ? calloc(1, sizeof(*w)) : NULL;
	unsigned n = 0;

	if (w) {
		w->c = c;
		w->force = force;
		snprintf(w->name, sizeof(w->name), "%s", a->name);
		snprintf(w->node_id, sizeof(w->node_id), "%s", c->node_id);
		w->later = admin_later_begin(srv, detach_reply, w);
		if (w->later == NULL) {
			free(w);
			w = NULL;
		}
	}
	if (!force && a->layout && !attachment_fenced(c, a))
		n = tsr_volset_clients(c->o.vols, a->name, NULL, 0);
	if (n == 0) {
		if (w == NULL && force && a->layout)
			tsr_volset_disconnect(c->o.vols, a->name); /* then the blocking wait */
		detach_run(c, a, w, resp);
		return;
	}
	if (w == NULL) { /* no later reply: refused at once */
		char peers[TSR_DETACH_CLIENTS_LISTED][TSR_PEER_ADDR_MAX];

		n = tsr_volset_clients(c->o.vols, a->name, peers, TSR_DETACH_CLIENTS_LISTED);
		detach_refuse(a->name, c->node_id, n, peers, false, resp);
		return;
	}
	w->a = a;
	w->clients_phase = true;
	detach_wait_start(c, w, detach_clients_poll_cb, DETACH_CLIENT_WAIT_MS);
	tsr_info("cluster: detach %s: waiting up to %d ms for its NBD clients to go (%u "
		 "connected; else the detach is refused, nothing changed; the reply comes then)",
		 a->name, DETACH_CLIENT_WAIT_MS, n);
}

void cluster_detach(struct tsr_cluster *c, const Tessera__Admin__Request *req,
		    Tessera__Admin__Response *resp)
{
	const char *name = req->volume_detach->name;
	struct attachment *a = cluster_find_attachment(c, name);
	char holder[64];
	uint64_t epoch;
	int ret;

	if (cluster_attach_running(c, name)) {
		char msg[512];

		attach_running_msg(name, msg, sizeof(msg));
		admin_fail(resp, -EBUSY, "%s", msg);
		return;
	}
	if (cluster_detach_pending(c, name)) {
		admin_fail(resp, -EBUSY,
			   "volume '%s' is being detached (waiting for its NBD "
			   "clients to go, or for its DR site to acknowledge its writes): retry in "
			   "a moment",
			   name);
		return;
	}
	if (a == NULL) {
		ret = cluster_get_attach(c, name, holder, sizeof(holder), &epoch, NULL);
		if (ret == -ENOENT) {
			admin_fail(resp, -ENOENT, "volume '%s' is not attached", name);
			return;
		}
		if (ret) {
			admin_fail(resp, ret, "cannot read attach/%s: %s", name, strerror(-ret));
			return;
		}
		/* answered when the coordinator answers (it may wait for its NBD
		 * clients up to DETACH_CLIENT_WAIT_MS): the loop here goes on */
		if (forward_to(c, holder, req, resp))
			return;
		/* recorded as ours but not here (a restart within the lease): drop the key */
		delete_attach_key(c, name, epoch);
		return;
	}
	detach_admin(c, a, req->volume_detach->force, resp);
}

/* ---- status and scrub ------------------------------------------------- */

void cluster_status_copy(Tessera__Admin__Copy *cp, const struct tsr_layout_copy_status *lc)
{
	char *state;

	if (strcmp(cp->node, lc->node_id) != 0) {
		/* the record names another copy than the layout's: its figures
		 * would be shown under the wrong node's name (review F7) */
		char *has = admin_strdup(lc->node_id);

		if (has) {
			if (cp->coordinator_has != protobuf_c_empty_string)
				free(cp->coordinator_has);
			cp->coordinator_has = has;
		}
		cp->connected = false;
		cp->counters_known = false;
		cp->counters_unsupported = false;
		return;
	}
	state = admin_strdup(tsr_copy_state_name(lc->state));
	if (state) {
		free(cp->state);
		cp->state = state;
	}
	cp->connected = lc->connected;
	cp->dirty_bytes = lc->dirty_bytes;
	cp->counters_known = lc->counters_known;
	cp->counters_unsupported = lc->counters_unsupported;
	cp->crc_errors = lc->crc_errors;
	cp->cached_reads = lc->cached_reads;
}

static void fill_status(struct tsr_cluster *c, struct attachment *a,
			Tessera__Admin__Response *resp)
{
	Tessera__Admin__VolumeStatus *vs;
	struct tsr_layout_status st;
	Tessera__Admin__Volume *v;

	cluster_volume_list(c, a->name, resp);
	if (resp->error || resp->n_volumes != 1)
		return;
	v = resp->volumes[0];
	resp->volumes[0] = NULL;
	resp->n_volumes = 0;
	vs = malloc(sizeof(*vs));
	if (vs == NULL) {
		admin_volume_free_built(v);
		admin_fail(resp, -ENOMEM, "out of memory in tesserad");
		return;
	}
	tessera__admin__volume_status__init(vs);
	vs->volume = v;
	resp->volume_status = vs;
	tsr_layout_get_status(a->layout, &st);
	for (size_t i = 0; i < v->n_copies && i < st.n_copies; i++)
		cluster_status_copy(v->copies[i], &st.copies[i]);
	vs->ready = st.ready;
	vs->fenced = st.fenced || a->fenced;
	vs->in_sync = st.in_sync;
	vs->resync_running = st.resync_running;
	vs->resync_total_bytes = st.resync_total_bytes;
	vs->resync_done_bytes = st.resync_done_bytes;
	vs->resync_rate_bps = st.resync_rate_bps;
	vs->resync_eta_sec = st.resync_eta_sec;
	vs->resync_bytes_copied = st.resync_bytes_copied;
	vs->resync_regions_copied = st.resync_regions_copied;
	vs->scrub_running = st.scrub_running;
	vs->scrub_done = st.scrub_done;
	vs->scrub_total_bytes = st.scrub_total_bytes;
	vs->scrub_done_bytes = st.scrub_done_bytes;
	vs->scrub_mismatches = st.scrub_mismatches;
	vs->scrub_repaired = st.scrub_repaired;
	vs->scrub_unrepaired = st.scrub_unrepaired;
	vs->writes = st.writes;
	vs->reads = st.reads;
	vs->cached_reads = st.cached_reads;
	vs->crc_errors = st.crc_errors;
	vs->crc_errors_all = st.crc_errors_all;
	vs->cached_reads_all = st.cached_reads_all;
	vs->copies_counted = st.copies_counted;
	vs->counters_per_copy = true;
	vs->copy_failures = st.copy_failures;
	vs->stripes_total = st.stripes_total;
	vs->stripes_degraded = st.stripes_degraded;
	vs->stripes_rebuilding = st.stripes_rebuilding;
	vs->degraded_reads = st.degraded_reads;
	vs->txn_rolled_forward = st.txn_rolled_forward;
	vs->txn_rolled_back = st.txn_rolled_back;
	vs->stripes_unrebuilt = st.stripes_unrebuilt;
}

/* Status or scrub of a volume: here, forwarded to its coordinator, or from the record. */
static struct attachment *route(struct tsr_cluster *c, const char *name,
				const Tessera__Admin__Request *req,
				Tessera__Admin__Response *resp, bool *done)
{
	struct attachment *a = cluster_find_attachment(c, name);
	char holder[64];
	uint64_t epoch;
	int ret;

	*done = false;
	if (a && a->layout)
		return a;
	ret = cluster_get_attach(c, name, holder, sizeof(holder), &epoch, NULL);
	if (ret == 0 && forward_to(c, holder, req, resp)) {
		*done = true;
		return NULL;
	}
	return NULL;
}

void cluster_volume_status(struct tsr_cluster *c, const Tessera__Admin__Request *req,
			   Tessera__Admin__Response *resp)
{
	const char *name = req->volume_status->name;
	Tessera__Admin__VolumeStatus *vs;
	struct attachment *a;
	bool done;

	a = route(c, name, req, resp, &done);
	if (done)
		return;
	if (a) {
		fill_status(c, a, resp);
		return;
	}
	/* detached, or its attach here still opening its copies: what the
	 * metadata store says (the attach key names us already) */
	cluster_volume_list(c, name, resp);
	if (resp->error || resp->n_volumes != 1)
		return;
	/* not "attached" yet (no coordinator runs: no live figures), not
	 * detached either: the status says so (Volume.attaching, set by
	 * cluster_build_volume) */
	vs = malloc(sizeof(*vs));
	if (vs == NULL) {
		admin_fail(resp, -ENOMEM, "out of memory in tesserad");
		return;
	}
	tessera__admin__volume_status__init(vs);
	vs->volume = resp->volumes[0];
	resp->volumes[0] = NULL;
	resp->n_volumes = 0;
	for (size_t i = 0; i < vs->volume->n_copies; i++)
		if (strcmp(vs->volume->copies[i]->state, "in-sync") == 0)
			vs->in_sync++;
	if (vs->volume->ec_k) /* the geometry is known without a coordinator */
		vs->stripes_total = tsr_ec_stripes(vs->volume->size, vs->volume->ec_k,
						   vs->volume->stripe_unit);
	resp->volume_status = vs;
}

void cluster_volume_scrub(struct tsr_cluster *c, const Tessera__Admin__Request *req,
			  Tessera__Admin__Response *resp)
{
	const Tessera__Admin__VolumeScrub *r = req->volume_scrub;
	struct attachment *a;
	bool done;
	int ret;

	a = route(c, r->name, req, resp, &done);
	if (done)
		return;
	if (a == NULL && cluster_attach_running(c, r->name)) {
		char msg[512];

		attach_running_msg(r->name, msg, sizeof(msg));
		admin_fail(resp, -EBUSY, "%s", msg);
		return;
	}
	if (a == NULL) {
		admin_fail(resp, -ENOTCONN, "volume '%s' is not attached: a scrub runs on its "
			   "coordinator (tessera volume attach %s --node N first)", r->name, r->name);
		return;
	}
	ret = tsr_layout_scrub_start(a->layout, !r->no_repair);
	if (ret) {
		admin_fail(resp, ret, ret == -EBUSY ? "a scrub of '%s' is already running (tessera "
			   "volume status %s shows its progress)" : "cannot start a scrub of '%s'",
			   r->name, r->name);
		return;
	}
	tsr_info("cluster: scrub %s started%s", r->name, r->no_repair ? " (no repair)" : "");
	fill_status(c, a, resp);
}

/* ---- the tick --------------------------------------------------------- */

/*
 * The end of an automatic replace of name's copy on old (slot): logged, and
 * after a failure the next attempt waits another --rebuild-after period from
 * now, the attempt's end (review 16a, F3).  From cluster_replace_auto's
 * result or, answered later, its hook (the attachment looked up again: it may
 * be detached meanwhile, or attached again, its mark then already clear).
 */
static void auto_replace_done(struct tsr_cluster *c, const char *name, const char *old,
			      unsigned slot, int ret, const char *msg)
{
	struct attachment *a = cluster_find_attachment(c, name);

	if (a && slot < a->n_copies) {
		a->copies[slot].replacing = false;
		if (ret)
			a->copies[slot].dead_since = ev_time();
	}
	if (ret == 0)
		tsr_info("cluster: automatic replace of %s on %s: done", name, old);
	else
		tsr_warn("cluster: automatic replace of %s on %s: %s (%s)", name, old, msg,
			 ret == -ESHUTDOWN ? "stopping" : "retrying later");
}

/*
 * Seconds between two tsr_layout_copy_returned calls for one copy seen alive
 * and disconnected: CLUSTER_RETURN_BACKOFF_SEC, paced by the tick
 * (CLUSTER_TICK_SEC), so about every 2.5 s.  Tests only:
 * $TSR_TEST_RETURN_BACKOFF_MS (500..2000) shortens it, so that a test's wait
 * for "not brought back again" spans a few periods in less time
 * (test-snap-makeup-earlier-build: 500, a return at every tick).
 */
static double return_backoff_sec(void)
{
	const int dflt = (int)(CLUSTER_RETURN_BACKOFF_SEC * 1000);

	return tsr_test_env_ms("TSR_TEST_RETURN_BACKOFF_MS", (int)(CLUSTER_TICK_SEC * 1000), dflt,
			       dflt) / 1000.0;
}

static void tick_one(struct tsr_cluster *c, struct attachment *a, const struct cluster_view *v,
		     double now)
{
	struct tsr_layout_status st;

	tsr_layout_get_status(a->layout, &st);
	if (st.fenced && !a->fence_logged) {
		a->fence_logged = true;
		tsr_warn("cluster: volume %s epoch %llu fenced (a newer coordinator exists, or the "
			 "lease was lost): its I/O fails until it is attached again", a->name,
			 (unsigned long long)a->epoch);
	}
	if (st.fenced || a->fenced)
		return;
	for (unsigned i = 0; i < st.n_copies && i < a->n_copies; i++) {
		const char *id = a->copies[i].node_id;
		bool alive = strcmp(id, c->node_id) == 0 || view_alive(v, id);

		if (st.copies[i].state != a->copies[i].last_state) {
			a->copies[i].last_state = st.copies[i].state;
		}
		if (alive) {
			a->copies[i].dead_since = 0;
		} else if (a->copies[i].dead_since == 0) {
			a->copies[i].dead_since = now;
			tsr_info("cluster: volume %s copy %s: node %s is not alive", a->name, id, id);
		}
		if (st.copies[i].state == TSR_COPY_OUT_OF_SYNC && alive && !st.copies[i].connected &&
		    now >= a->copies[i].next_return) {
			const Tessera__Cluster__NodeRecord *n = view_node(v, id);

			a->copies[i].next_return = now + return_backoff_sec();
			if (n) {
				tsr_info("cluster: volume %s copy %s is back: resync", a->name, id);
				tsr_layout_copy_returned(a->layout, i, n->address);
			}
		}
		/* one automatic replace per slot at a time (replacing: its calls
		 * run off this loop since session 17, answered later), and none
		 * while another replace of this volume through this node waits
		 * (an admin request's, or another slot's) */
		if (!alive && st.copies[i].state != TSR_COPY_IN_SYNC && c->o.rebuild_after_sec &&
		    !a->copies[i].replacing && cluster_replace_waiting(c, a->name) == NULL &&
		    now - a->copies[i].dead_since >= c->o.rebuild_after_sec) {
			char msg[1024], old[64];
			int ret;

			snprintf(old, sizeof(old), "%s", id);
			tsr_info("cluster: volume %s copy %s dead for %u s: rebuilding elsewhere",
				 a->name, old, c->o.rebuild_after_sec);
			msg[0] = '\0';
			a->copies[i].replacing = true;
			ret = cluster_replace_auto(c, a->name, old, i, auto_replace_done, msg,
						   sizeof(msg));
			/* answered now (nothing had to wait, or a refusal): else
			 * auto_replace_done runs when the other nodes answer.
			 * Either way the next try comes another period after the
			 * end of this one (review 16a, F3) */
			if (ret != -EINPROGRESS)
				auto_replace_done(c, a->name, old, i, ret, msg);
			return; /* the view is stale now */
		}
	}
}

void cluster_attach_tick(struct tsr_cluster *c)
{
	struct cluster_view v;
	double now = ev_now(c->o.loop);

	attach_failed_drop(c, NULL, false); /* DR failures nobody asked for in time */
	if (c->attached == NULL)
		return;
	if (view_load(c->meta, &v))
		return; /* meta unreachable: the lease logic deals with it */
	for (struct attachment *a = c->attached; a; a = a->next)
		if (a->layout)
			tick_one(c, a, &v, now);
	view_free(&v);
}
