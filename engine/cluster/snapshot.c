/*
 * Snapshots, clones and rollback of replicated volumes: the admin commands
 * in cluster mode (DESIGN.md invariants 1-3 hold for snapshots too: every
 * copy of a snapshot is the same image).
 *
 * Where a command runs:
 *  - SnapshotCreate/Delete of an attached volume: on its coordinator node,
 *    through the volume's layout gate (writes held back and drained, the
 *    mirror cuts every IN_SYNC copy at that point, see
 *    engine/layout/mirror_snap.c).  A request from a client is cut with
 *    tsr_volset_snap_async on the volume's home worker and answered later
 *    (admin_later_*, "pending requests" below): the loop serves other requests
 *    meanwhile.  A node that is not the coordinator forwards the request
 *    there with the async admin client (admin_async_call) and answers
 *    later too: its loop does not wait for the coordinator;
 *  - SnapshotCreate/Delete of a detached volume: nothing writes it, so the
 *    cut is the same on every copy without a gate: the local_copy form goes
 *    to every copy's node (ours: the store), a CREATE with the record's size
 *    (ec: its chunk volume's; SnapshotCreate.size), so that a copy grown past
 *    the record (a resize stopped after its grow step) still cuts that size
 *    (a node of an earlier build ignores the field and cuts at its copy's
 *    size, as before); every copy must be IN_SYNC and
 *    the last coordinator must have detached cleanly (else the copies may
 *    differ).  A client's request asks every copy's node at once (async
 *    calls; ours, the store's cut, in a thread of its own, snap_local_start,
 *    so that this node's loop answers other calls meanwhile, as the other
 *    copies' nodes do) and is answered when the last one did.  A CREATE
 *    that fails on one copy is deleted again on the others (from the reply,
 *    on the loop; without waiting).  A DELETE is done when at least one
 *    copy had the snapshot and every copy lacks it now (a copy answering
 *    -ENOENT lacks it already: delete_result); "not found" only when no
 *    copy had it;
 *  - SnapshotDiff of an ec volume: computed on a node holding an IN_SYNC
 *    chunk copy (forwarded there as below) from every chunk copy's diff
 *    (its store, or SnapshotDiff with local_copy to the copy's node),
 *    mapped back to volume extents by tsr_ec_diff_map;
 *  - SnapshotList/Show/Diff: answered from the store of a node holding an
 *    IN_SYNC copy: this node when it holds one (the admin layer answers from
 *    the store: tsr_cluster_admin_handle returns false), else the plain
 *    request is forwarded to such a node (alive), which answers the same way
 *    because it holds one.  Every IN_SYNC copy holds every snapshot (the
 *    mirror's and the EC layout's resync replay the snapshots a copy missed
 *    before the copy is IN_SYNC again; not after a re-attach on another
 *    node, whose coordinator lacks the record of what it missed), so any of
 *    them gives the same answer;
 *  - VolumeRollback: detached volumes only; the local_copy form on every
 *    copy (the store's rollback is idempotent: a failure is retried by
 *    running it again), fenced against an attach (vol/v marked "not
 *    detached cleanly" first, every copy's rollback carrying the record's
 *    epoch: "rollback" below); a client's request is answered later, as a
 *    detached cut is (async calls, ours in a thread of its own);
 *  - clones (VolumeCreate with from_volume): the clone's copies are made on
 *    the nodes of the source's copies, by the local_copy VolumeCreate with the
 *    from_* fields, so each store shares the unchanged blocks.  A clone of
 *    the source's current content is made from a temporary snapshot cut as
 *    above (consistent across copies even while the source is written, and
 *    answered later: the clone is made once it is cut, clone_after_cut),
 *    then deleted without waiting (the stores keep it hidden while the
 *    clone needs it; ours in a thread of its own).  The
 *    clone's vol/ record notes its parent.
 *
 * Erasure-coded volumes work the same way: each copy is a chunk volume, cut,
 * deleted, rolled back and cloned like a mirror copy (a stripe's chunks sit
 * at the same offset on every copy, so one cut at one point of the write
 * order is a consistent image of every stripe).  A clone of an ec volume is
 * ec with the same k, m and stripe unit, its chunk copies on the same nodes
 * in the same order (copy c holds the same stripe positions as the source's
 * copy c).
 *
 * Main thread; blocking calls (include/tessera/cluster.h), except a
 * client's SnapshotCreate/Delete and a clone's temporary snapshot (above:
 * "pending requests"), and a client's rollback.  Still blocking: the
 * clone's copies (copy_op_all: threads joined here), a rollback with no
 * later reply possible, metadata reads and writes, and the read-back of a
 * new snapshot from another node when this one holds no copy.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "admin/admin_internal.h"
#include "cluster/internal.h"
#include "cluster/snap_gen.h"
#include "tessera/ec.h"
#include "tessera/test_hook.h"

enum copy_op { COP_SNAP_CREATE, COP_SNAP_DELETE, COP_ROLLBACK, COP_CLONE };

/* What a clone request asks, copied: the clone of a volume's current
 * content is made after its temporary snapshot's cut, answered later,
 * once the request itself is gone. */
struct clone_args {
	char name[64];                 /* the clone */
	char from[64];                 /* its source volume */
	char from_snapshot[64];        /* "": the current content */
	char ec[32];                   /* "" or the layout asked ("K+M": must be the source's) */
	uint64_t size;                 /* 0: the source's */
	uint32_t replicas, min_replicas, stripe_unit; /* 0: the source's */
	uint32_t region_size;          /* 0: the source's (a clone may repeat it) */
};

/* The epoch of a snapshot create or delete that checks none (a rollback,
 * a clone, an undo). */
#define SNAP_NO_EPOCH UINT64_MAX

static const char *cop_name(enum copy_op op)
{
	switch (op) {
	case COP_SNAP_CREATE: return "create the snapshot";
	case COP_SNAP_DELETE: return "delete the snapshot";
	case COP_ROLLBACK: return "roll back";
	default: return "create the clone";
	}
}

/* Tests only: while the file named by $TSR_TEST_ROLLBACK_LOCAL_HOLD_FILE
 * exists (30 s at most), our store copy's part of a rollback waits before it
 * starts (after the record was read and marked, the other copies' calls
 * sent); FILE.held is made when it starts waiting. */
static void rollback_test_hold(void)
{
	tsr_test_hold_file("TSR_TEST_ROLLBACK_LOCAL_HOLD_FILE", true);
}

/* Our own store copy: the store call of a local_copy command.  size: a
 * CREATE's snapshot size (the record's copy size; 0 the copy's), a clone's
 * size (grown to it when larger than its source).  epoch: a detached
 * CREATE's fence, the record's epoch at its start (-ESTALE once an attach
 * raised the copy's past it), else SNAP_NO_EPOCH (a DELETE too: not fenced,
 * snap_change). */
static int local_op(struct tsr_cluster *c, enum copy_op op, const char *vol, const char *snap,
		    const char *clone, uint64_t size, uint64_t epoch, char uuid[37])
{
	struct tsr_vol_info info;
	int ret;

	switch (op) {
	case COP_SNAP_CREATE:
		if (epoch != SNAP_NO_EPOCH)
			return tsr_store_snap_create_epoch(c->o.store, vol, snap, size, epoch);
		return tsr_store_snap_create_sized(c->o.store, vol, snap, size, NULL);
	case COP_SNAP_DELETE:
		if (epoch != SNAP_NO_EPOCH)
			return tsr_store_snap_delete_epoch(c->o.store, vol, snap, false, epoch);
		/* -ENOENT: this copy lacks it already (delete_result), not an ERROR */
		return tsr_store_snap_delete_missing_ok(c->o.store, vol, snap);
	case COP_ROLLBACK:
		rollback_test_hold();
		if (epoch != SNAP_NO_EPOCH) {
			bool rolled;

			return admin_rollback_fenced(c->o.store, vol, snap, epoch, true, &rolled);
		}
		/* on the cluster loop (copy_op_all, rollback_later_start's
		 * fallback): never the store's wait (review 16d N5) */
		return tsr_store_vol_rollback_nowait(c->o.store, vol, snap);
	case COP_CLONE:
		ret = tsr_store_vol_clone(c->o.store, clone, vol, snap[0] ? snap : NULL, &info);
		if (ret == 0)
			snprintf(uuid, 37, "%s", info.uuid);
		if (ret == 0 && size > info.size) {
			ret = tsr_store_vol_resize(c->o.store, clone, size);
			if (ret)
				tsr_store_vol_delete(c->o.store, clone);
		}
		return ret;
	}
	return -EINVAL;
}

/*
 * Run op on node's store copy of vol (ours: the store; others: the
 * local_copy command through their admin API).  0 or -errno with msg.
 * uuid: a clone's copy's, as its node answered it ("" when it named none,
 * and for the other ops): the undo deletes it by that uuid.
 */
static int copy_op(struct tsr_cluster *c, const Tessera__Cluster__NodeRecord *node, enum copy_op op,
		   const char *vol, const char *snap, const char *clone, uint64_t size,
		   uint64_t epoch, char uuid[37], char *msg, size_t msg_len)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotCreate sc = TESSERA__ADMIN__SNAPSHOT_CREATE__INIT;
	Tessera__Admin__SnapshotDelete sd = TESSERA__ADMIN__SNAPSHOT_DELETE__INIT;
	Tessera__Admin__VolumeRollback vr = TESSERA__ADMIN__VOLUME_ROLLBACK__INIT;
	Tessera__Admin__VolumeCreate vc = TESSERA__ADMIN__VOLUME_CREATE__INIT;
	Tessera__Admin__Response *resp = NULL;
	int ret;

	uuid[0] = '\0';
	if (strcmp(node->id, c->node_id) == 0) {
		ret = local_op(c, op, vol, snap, clone, size, epoch, uuid);
		char why[512];

		/* our copy's -EBUSY while another rollback of it runs: to another
		 * snapshot, or to the same one (local_op never waits: on the loop) */
		if (ret == -EBUSY && op == COP_ROLLBACK &&
		    tsr_store_rollback_busy_msg(c->o.store, vol, snap, true, why, sizeof(why)))
			snprintf(msg, msg_len, "cannot roll back on %s (this node): %.400s",
				 node->id, why);
		else if (ret)
			snprintf(msg, msg_len, "cannot %s on %s (this node): %s", cop_name(op),
				 node->id, strerror(-ret));
		return ret;
	}
	switch (op) {
	case COP_SNAP_CREATE:
		sc.volume = (char *)vol;
		sc.name = (char *)snap;
		sc.local_copy = true;
		sc.size = size; /* a node of an earlier build ignores it: its copy's size */
		/* and this: its cut not fenced against an attach meanwhile */
		sc.epoch_set = epoch != SNAP_NO_EPOCH;
		sc.epoch = sc.epoch_set ? epoch : 0;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE;
		req.snapshot_create = &sc;
		break;
	case COP_SNAP_DELETE:
		sd.volume = (char *)vol;
		sd.name = (char *)snap;
		sd.local_copy = true;
		sd.epoch_set = epoch != SNAP_NO_EPOCH;
		sd.epoch = sd.epoch_set ? epoch : 0;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DELETE;
		req.snapshot_delete = &sd;
		break;
	case COP_ROLLBACK:
		vr.volume = (char *)vol;
		vr.snapshot = (char *)snap;
		vr.local_copy = true;
		/* a node of an earlier build ignores it: its rollback not fenced */
		vr.epoch_set = epoch != SNAP_NO_EPOCH;
		vr.epoch = vr.epoch_set ? epoch : 0;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ROLLBACK;
		req.volume_rollback = &vr;
		break;
	case COP_CLONE:
		vc.name = (char *)clone;
		vc.size = size;
		vc.local_copy = true;
		vc.from_volume = (char *)vol;
		vc.from_snapshot = (char *)snap;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE;
		req.volume_create = &vc;
		break;
	}
	/* a rollback or a clone may copy much: as long as a forwarded command */
	ret = cluster_call_node(c, node->address, &req, op == COP_ROLLBACK || op == COP_CLONE ?
				CLUSTER_FORWARD_TIMEOUT_MS : CLUSTER_COPY_TIMEOUT_MS, &resp);
	if (ret) {
		snprintf(msg, msg_len, "cannot reach node %s at %s to %s of '%s': %s", node->id,
			 node->address, cop_name(op), vol, strerror(-ret));
		return ret;
	}
	ret = resp->error;
	if (ret)
		snprintf(msg, msg_len, "node %s: %s", node->id,
			 resp->message && resp->message[0] ? resp->message : strerror(-ret));
	else if (op == COP_CLONE && resp->n_volumes == 1 && resp->volumes[0]->uuid &&
		 strlen(resp->volumes[0]->uuid) < 37)
		snprintf(uuid, 37, "%s", resp->volumes[0]->uuid);
	tessera__admin__response__free_unpacked(resp, NULL);
	return ret;
}

/*
 * copy_op on every node of nodes[0..n) at once (the other nodes' calls from
 * a thread each, ours on this one: a rollback's time is the slowest copy's,
 * not their sum).  rets[i], msgs[i]: each one's result.
 */
struct copy_job {
	struct tsr_cluster *c;
	const Tessera__Cluster__NodeRecord *node;
	enum copy_op op;
	const char *vol, *snap, *clone;
	uint64_t size, epoch;
	int ret;
	char uuid[37]; /* a clone's copy's (copy_op) */
	char msg[512];
	pthread_t thread;
	bool threaded;
};

static void *copy_job_main(void *arg)
{
	struct copy_job *j = arg;

	j->ret = copy_op(j->c, j->node, j->op, j->vol, j->snap, j->clone, j->size, j->epoch,
			 j->uuid, j->msg, sizeof(j->msg));
	return NULL;
}

/* 0 when every copy did it; else the first failure (msg) and ok[i] per copy;
 * rets (may be NULL): each copy's result; uuids (may be NULL): a clone's
 * copies' (copy_op). */
static int copy_op_all(struct tsr_cluster *c, const Tessera__Cluster__NodeRecord *const *nodes,
		       size_t n, enum copy_op op, const char *vol, const char *snap,
		       const char *clone, uint64_t size, uint64_t epoch, bool *ok, int *rets,
		       char (*uuids)[37], char *msg, size_t msg_len)
{
	struct copy_job jobs[TSR_LAYOUT_MAX_COPIES];
	int first = 0;

	for (size_t i = 0; i < n; i++) {
		struct copy_job *j = &jobs[i];

		*j = (struct copy_job){ .c = c, .node = nodes[i], .op = op, .vol = vol,
					.snap = snap, .clone = clone, .size = size,
					.epoch = epoch };
		if (strcmp(nodes[i]->id, c->node_id) != 0 &&
		    pthread_create(&j->thread, NULL, copy_job_main, j) == 0)
			j->threaded = true;
	}
	for (size_t i = 0; i < n; i++)
		if (!jobs[i].threaded)
			copy_job_main(&jobs[i]);
	for (size_t i = 0; i < n; i++) {
		if (jobs[i].threaded)
			pthread_join(jobs[i].thread, NULL);
		ok[i] = jobs[i].ret == 0;
		if (rets)
			rets[i] = jobs[i].ret;
		if (uuids)
			snprintf(uuids[i], 37, "%s", jobs[i].uuid);
		if (jobs[i].ret && first == 0) {
			first = jobs[i].ret;
			snprintf(msg, msg_len, "%s", jobs[i].msg);
		}
	}
	return first;
}

/* Every copy of rec IN_SYNC, its node known and alive, the last detach clean
 * (unless !need_clean): nodes[i] gets the copies' node records.  0, or -errno
 * with msg. */
static int all_copies_ready(const struct cluster_view *v, const Tessera__Cluster__VolumeRecord *rec,
			    const char *what, bool need_clean,
			    const Tessera__Cluster__NodeRecord **nodes, char *msg, size_t msg_len)
{
	if (need_clean && !rec->clean_detach && rec->rollback_snapshot[0] != '\0') {
		/* an attach is refused while the mark is there (attach.c) */
		snprintf(msg, msg_len, "volume '%s' did not detach cleanly: it has an unfinished "
			 "rollback to snapshot '%.*s', so its copies may differ: run it again "
			 "(tessera volume rollback %s %.*s), then %s", rec->name,
			 (int)strcspn(rec->rollback_snapshot, "/"), rec->rollback_snapshot, rec->name,
			 (int)strcspn(rec->rollback_snapshot, "/"), rec->rollback_snapshot, what);
		return -EAGAIN;
	}
	if (need_clean && !rec->clean_detach) {
		snprintf(msg, msg_len, "volume '%s': its last coordinator did not detach cleanly, so "
			 "its copies may differ: attach it (that makes them identical), detach it, "
			 "then %s", rec->name, what);
		return -EAGAIN;
	}
	for (size_t i = 0; i < rec->n_copies; i++) {
		const Tessera__Cluster__CopyRecord *cr = rec->copies[i];

		nodes[i] = view_node(v, cr->node_id);
		if (cr->state != TESSERA__CLUSTER__COPY_STATE__IN_SYNC) {
			snprintf(msg, msg_len, "volume '%s': its copy on %s is %s: attach the volume so "
				 "that copy resyncs (or replace-replica it), then %s", rec->name,
				 cr->node_id, rec_state_name(cr->state), what);
			return -EAGAIN;
		}
		if (nodes[i] == NULL || !view_alive(v, cr->node_id)) {
			snprintf(msg, msg_len, "volume '%s': the node of its copy %s is not alive "
				 "(tessera node list): bring it back, or replace-replica the copy, "
				 "then %s", rec->name, cr->node_id, what);
			return -EHOSTUNREACH;
		}
	}
	return 0;
}

/*
 * The copies a (fenced) rollback rolls back: every copy IN_SYNC with its node
 * alive, except a replaced copy not rebuilt yet (OUT_OF_SYNC with rebuild:
 * replace-replica of a detached volume), which is skipped: whoever attaches
 * next rebuilds it in full (head and every snapshot, its missed_snaps) from
 * the copies that are IN_SYNC, i.e. rolled back.  Without the skip a copy
 * whose node died during a rollback could not be left behind: the mark
 * refuses the attach that would rebuild its replacement, and the rollback
 * refused the replacement (review 15b F1: only delete worked).  At least
 * the layout's need must be rolled back: ec k (a chunk copy is rebuilt by
 * decoding k others), a mirror 1 (its rebuild copies one IN_SYNC copy; more,
 * e.g. min_replicas, would bring the stuck state back for replicas 2
 * min 2 with one node lost: whether writes are acknowledged is the attach's
 * question, as for any degraded volume).  nodes[0..*n) the copies to roll
 * back.  0, or -errno with msg.
 */
static int rollback_copies_ready(const struct cluster_view *v,
				 const Tessera__Cluster__VolumeRecord *rec,
				 const Tessera__Cluster__NodeRecord **nodes, size_t *n, char *msg,
				 size_t msg_len)
{
	size_t need = rec->ec_k ? rec->ec_k : 1, skipped = 0;
	const char *what = "roll it back";
	bool marked = rec->rollback_snapshot[0] != '\0';

	*n = 0;
	for (size_t i = 0; i < rec->n_copies; i++) {
		const Tessera__Cluster__CopyRecord *cr = rec->copies[i];
		const Tessera__Cluster__NodeRecord *node = view_node(v, cr->node_id);

		if (cr->state == TESSERA__CLUSTER__COPY_STATE__OUT_OF_SYNC && cr->rebuild &&
		    !tsr_test_env_on("TSR_TEST_ROLLBACK_NO_SKIP_REBUILD")) {
			skipped++;
			continue;
		}
		if (cr->state != TESSERA__CLUSTER__COPY_STATE__IN_SYNC) {
			/* an attach resyncs it, unless a rollback mark refuses the
			 * attach: then only its replacement helps */
			if (marked)
				snprintf(msg, msg_len, "volume '%s': its copy on %s is %s and an "
					 "unfinished rollback to '%.*s' refuses the attach that "
					 "would resync it: replace-replica that copy (tessera volume "
					 "replace-replica %s --node %s --to NODE; the rollback skips "
					 "a replaced copy, rebuilt at the next attach), then %s",
					 rec->name, cr->node_id, rec_state_name(cr->state),
					 (int)strcspn(rec->rollback_snapshot, "/"),
					 rec->rollback_snapshot, rec->name, cr->node_id, what);
			else
				snprintf(msg, msg_len, "volume '%s': its copy on %s is %s: attach "
					 "the volume so that copy resyncs (or replace-replica it), "
					 "then %s", rec->name, cr->node_id,
					 rec_state_name(cr->state), what);
			return -EAGAIN;
		}
		if (node == NULL || !view_alive(v, cr->node_id)) {
			snprintf(msg, msg_len, "volume '%s': the node of its copy %s is not alive "
				 "(tessera node list): bring it back, or replace-replica the copy "
				 "(tessera volume replace-replica %s --node %s --to NODE; the "
				 "rollback skips a replaced copy, rebuilt at the next attach), "
				 "then %s", rec->name, cr->node_id, rec->name, cr->node_id, what);
			return -EHOSTUNREACH;
		}
		nodes[(*n)++] = node;
	}
	if (*n < need) {
		snprintf(msg, msg_len, "volume '%s': only %zu of its %zu copies can be rolled back "
			 "(%zu replaced copies not rebuilt yet), fewer than the %zu %s: nothing "
			 "done", rec->name, *n, rec->n_copies, skipped, need, rec->ec_k ?
			 "an ec volume needs (k) to rebuild the others" :
			 "the rebuild of the others needs");
		return -EAGAIN;
	}
	return 0;
}

/* Load the view and vol's record; -errno with msg. */
static int load_volume(struct tsr_cluster *c, const char *vol, struct cluster_view *v,
		       Tessera__Cluster__VolumeRecord **rec, uint64_t *rev, char *msg,
		       size_t msg_len)
{
	int ret;

	*rec = NULL;
	ret = view_load(c->meta, v);
	if (ret) {
		snprintf(msg, msg_len, "cannot read the metadata store: %s (is the meta node "
			 "reachable?)", strerror(-ret));
		return ret;
	}
	ret = rec_volume_get(c->meta, vol, rec, rev);
	if (ret) {
		snprintf(msg, msg_len, ret == -ENOENT ? "volume '%s' not found (tessera volume list "
			 "shows what exists)" : "cannot read volume '%s' from the metadata store",
			 vol);
		view_free(v);
	}
	return ret;
}

/* A person's sentence for a layout/store error of a snapshot operation. */
static void snap_error(int err, enum tsr_snap_op op, const char *vol, const char *snap,
		       char *msg, size_t msg_len)
{
	switch (err) {
	case -EEXIST:
		snprintf(msg, msg_len, "snapshot '%s' of '%s' already exists (tessera snapshot list "
			 "%s)", snap, vol, vol);
		break;
	case -ENOENT:
		snprintf(msg, msg_len, "snapshot '%s' of '%s' not found (tessera snapshot list %s)",
			 snap, vol, vol);
		break;
	case -EINVAL:
		snprintf(msg, msg_len, "invalid snapshot name '%s' (letters, digits, '.', '_', '-'; "
			 "up to 63)", snap);
		break;
	case -EOPNOTSUPP:
		snprintf(msg, msg_len, "volume '%s': snapshots are not supported here (a store on "
			 "a raw device, or a layout without snapshots)", vol);
		break;
	case -EIO:
		snprintf(msg, msg_len, "volume '%s': cannot %s snapshot '%s': fewer than "
			 "min-replicas copies in sync, or the coordinator is fenced (tessera volume "
			 "status %s)", vol, op == TSR_SNAP_DELETE ? "delete" : "cut", snap, vol);
		break;
	default:
		snprintf(msg, msg_len, "volume '%s': snapshot '%s': %s", vol, snap, strerror(-err));
	}
}

/* The coordinator's result of a cut (or delete): msg for an error. */
static int coord_result(int ret, enum tsr_snap_op op, const char *vol, const char *snap,
			char *msg, size_t msg_len)
{
	if (ret == -ENOENT && op == TSR_SNAP_CREATE)
		snprintf(msg, msg_len, "volume '%s' is attached here but its coordinator is "
			 "not running (attaching or detaching right now?): retry", vol);
	else if (ret)
		snap_error(ret, op, vol, snap, msg, msg_len);
	return ret;
}

/*
 * The result of a detached volume's DELETE from every copy's answer (rets[0..n)):
 * a copy answering -ENOENT lacks the snapshot already (an earlier delete went
 * through there only: refused elsewhere, -EBUSY under a reader, or cut short),
 * which is where the DELETE leads.  0: at least one copy had it and every copy
 * now lacks it; -ENOENT: no copy had it; else the first error of a copy that
 * has it (-EBUSY, unreachable...): the delete failed there.
 */
static int delete_result(const int *rets, size_t n)
{
	size_t deleted = 0, missing = 0;

	for (size_t i = 0; i < n; i++) {
		if (rets[i] != 0 && rets[i] != -ENOENT)
			return rets[i];
		deleted += rets[i] == 0;
		missing += rets[i] == -ENOENT;
	}
	return deleted == 0 && missing > 0 ? -ENOENT : 0;
}

/* ---- pending requests: snapshot changes without blocking the loop ------- */

/*
 * A client's SnapshotCreate/Delete (or a clone's temporary snapshot): on the
 * coordinator the cut runs on the volume's home worker
 * (tsr_volset_snap_async); elsewhere the request is forwarded to the
 * coordinator, or for a detached volume sent to every copy's node, with
 * admin_async_call (slots).  The admin server sends the reply when it is
 * done (snap_later_reply on the loop).  Pending ones are listed so that
 * tsr_cluster_stop can let go of them (cluster_snapshot_stop, which also
 * cancels calls in flight): their reply then says tesserad is shutting
 * down, without touching the freed cluster.
 */
struct snap_later;

/* One node-to-node call of a pending request (a forward to the coordinator,
 * or a detached volume's local_copy form on one copy's node). */
struct snap_slot {
	struct snap_later *sl;         /* its request */
	struct admin_async *call;      /* in flight (loop); NULL once its callback ran */
	char node_id[64];
	char address[256];
	int ret;                       /* its result (loop), 0 until then */
	char msg[512];                 /* what went wrong, for ret */
};

struct snap_later {
	struct tsr_cluster *c;         /* NULL once that cluster stopped (pending_lock) */
	char vol[64];
	struct tsr_snap_req req;       /* op and snap; the worker reads it until its cb */
	uint64_t epoch;                /* a detached volume's create: vol/v's epoch at the
					* start, every copy's cut fenced by it (SNAP_NO_EPOCH:
					* not detached, or a delete: not fenced) */
	char uuid[37];                 /* a detached volume's: vol/v's uuid at the start,
					* for its record step (snap_gen_record) */
	int status;                    /* the result: set on the home worker (a cut) or
					* the loop (calls) before admin_later_done, read on
					* the loop after */
	char msg[1024];                /* a call's message for status ("": coord_result's) */
	struct admin_later *later;     /* done exactly once: snap_later_cut or the last call */
	int64_t started_ns;            /* tsr_mono_ns() at the request (the log line) */
	size_t n_slots;                /* node-to-node calls (0: a cut on our home worker) */
	size_t outstanding;            /* calls whose callback has not run yet, and our
					* store's cut while its thread runs (pending_lock) */
	bool forward;                  /* slots[0] is the coordinator's answer */
	bool gen_done;                 /* its record step ran (snap_later_gen; loop) */
	struct snap_later *gen_next;   /* cluster_snapshot_stop's list of those to run */
	struct clone_args *clone;      /* a clone's temporary snapshot: the clone is made
					* after the cut (clone_after_cut), freed with this */
	bool rollback;                 /* a detached volume's rollback to req.snap (req.op
					* unused): every copy's local_copy VolumeRollback,
					* fenced by epoch unless SNAP_NO_EPOCH; the reply
					* (rollback_finish, on the loop) clears the mark */
	bool rollback_other;           /* its mark overwrote another snapshot's: the
					* reply keeps the mark (rollback_finish) */
	struct snap_slot slots[TSR_LAYOUT_MAX_COPIES];
	struct snap_later *prev, *next; /* the pending list (pending_lock) */
	/* a create through a node without an IN_SYNC copy (show_remote): its
	 * cut done, the new snapshot is read back from the nodes holding one,
	 * in turn, off the loop (snap_show_*), before the reply is built */
	bool show_remote;
	char origin[64];               /* the node that forwarded the create ("": none) */
	struct snap_later *show_next;  /* snap_show_queue (pending_lock) */
	bool show_read;                /* shown or show_msg set (loop) */
	char shown_id[64], shown_address[256]; /* the node that answered */
	Tessera__Admin__Response *shown; /* its SnapshotShow answer */
	char show_msg[900];            /* else why none answered */
};

static pthread_mutex_t pending_lock = PTHREAD_MUTEX_INITIALIZER; /* guards pending */
static struct snap_later *pending;   /* begun, reply not built yet */
static struct snap_later *snap_show_queue; /* cut, to read back (snap_later_finish) */
/* Our store's cuts (and rollbacks, undos) running in a thread, which use the
 * store: cluster_snapshot_stop waits for them (pending_lock; every
 * cluster's in this process: each is one store call). */
static unsigned local_running;
static pthread_cond_t local_cond = PTHREAD_COND_INITIALIZER;

/* One call or our store's cut of sl is answered (any thread): true for the
 * last one, which goes on with snap_calls_done. */
static bool sl_put(struct snap_later *sl)
{
	bool last;

	pthread_mutex_lock(&pending_lock);
	last = --sl->outstanding == 0;
	pthread_mutex_unlock(&pending_lock);
	return last;
}

static void pending_unlink(struct snap_later *sl)
{
	pthread_mutex_lock(&pending_lock);
	if (sl->prev)
		sl->prev->next = sl->next;
	else
		pending = sl->next;
	if (sl->next)
		sl->next->prev = sl->prev;
	pthread_mutex_unlock(&pending_lock);
}

static void snap_later_gen(struct tsr_cluster *c, struct snap_later *sl);

void cluster_snapshot_stop(struct tsr_cluster *c)
{
	struct snap_later *queued = NULL, *answered = NULL;
	struct admin_async *a;

	/* a detached op whose copies all answered 0, its reply not run yet
	 * (snap_later_reply would find c gone): its record step now, while the
	 * meta store is open, so a replace through another node sees snap_gen
	 * move (review 17a F2); a create whose step fails is answered failed by the
	 * reply, its cuts left in place (no cluster to send the deletes with:
	 * snap_calls_undo's warning names where to delete it).  Our store's cuts
	 * still running are waited for first: the last answer of an sl sets its
	 * status after outstanding reached 0 (review 17c S1) */
	pthread_mutex_lock(&pending_lock);
	while (local_running > 0)
		pthread_cond_wait(&local_cond, &pending_lock);
	for (struct snap_later *sl = pending; sl; sl = sl->next)
		if (sl->c == c && !sl->rollback && !sl->forward && sl->n_slots > 0 &&
		    sl->uuid[0] && sl->outstanding == 0 && sl->status == 0 && !sl->gen_done) {
			sl->gen_next = answered;
			answered = sl;
		}
	pthread_mutex_unlock(&pending_lock);
	for (struct snap_later *sl = answered; sl; sl = sl->gen_next) {
		snap_later_gen(c, sl);
		sl->gen_done = true;
	}
	pthread_mutex_lock(&pending_lock);
	for (struct snap_later *sl = pending; sl; sl = sl->next)
		if (sl->c == c)
			sl->c = NULL;
	/* cut, waiting to be read back: replied now (without c) */
	for (struct snap_later **pp = &snap_show_queue; *pp;) {
		struct snap_later *sl = *pp;

		if (sl->c != NULL) {
			pp = &sl->show_next;
			continue;
		}
		*pp = sl->show_next;
		sl->show_next = queued;
		queued = sl;
	}
	pthread_mutex_unlock(&pending_lock);
	while (queued) {
		struct snap_later *sl = queued;

		queued = sl->show_next;
		admin_later_done(sl->later);
	}
	if (c->snap_show_started) {
		ev_async_stop(c->o.loop, &c->snap_show_async);
		c->snap_show_started = false;
	}
	/* calls in flight (the loop may not run again): their callbacks fire now
	 * (-ECANCELED), outside the lock (the last one hands the reply over) */
	do {
		a = NULL;
		pthread_mutex_lock(&pending_lock);
		for (struct snap_later *sl = pending; sl && a == NULL; sl = sl->next)
			for (size_t i = 0; sl->c == NULL && i < sl->n_slots && a == NULL; i++) {
				a = sl->slots[i].call;
				sl->slots[i].call = NULL;
			}
		pthread_mutex_unlock(&pending_lock);
		if (a)
			admin_async_cancel(a);
	} while (a);
	/* our store's cuts in their threads: they use the store (bounded: a
	 * store call; their answers go to the admin server, not to c) */
	pthread_mutex_lock(&pending_lock);
	while (local_running > 0)
		pthread_cond_wait(&local_cond, &pending_lock);
	pthread_mutex_unlock(&pending_lock);
}

bool cluster_snapshot_changing(struct tsr_cluster *c, const char *vol)
{
	bool found = false;

	pthread_mutex_lock(&pending_lock);
	for (struct snap_later *sl = pending; sl && !found; sl = sl->next)
		found = sl->c == c && !sl->rollback && strcmp(sl->vol, vol) == 0;
	pthread_mutex_unlock(&pending_lock);
	return found;
}

static bool snap_read_unbounded(void);
static void snap_later_finish(struct snap_later *sl);

/* This node holds an IN_SYNC copy of rec. */
static bool holds_in_sync(const struct tsr_cluster *c, const Tessera__Cluster__VolumeRecord *rec)
{
	for (size_t i = 0; i < rec->n_copies; i++)
		if (rec->copies[i]->state == TESSERA__CLUSTER__COPY_STATE__IN_SYNC &&
		    strcmp(rec->copies[i]->node_id, c->node_id) == 0)
			return true;
	return false;
}

/* On the volume's home worker: the cut is made (or failed). */
static void snap_later_cut(void *arg, int status)
{
	struct snap_later *sl = arg;

	sl->status = status;
	snap_later_finish(sl);
}

static void snapshot_reply(struct tsr_cluster *c, const char *vol, const char *snap,
			   Tessera__Admin__Response *resp);
static void snapshot_reply_shown(struct snap_later *sl, Tessera__Admin__Response *resp);
static void clone_after_cut(struct tsr_cluster *c, const struct clone_args *a, const char *snap,
			    int ret, const char *msg, Tessera__Admin__Response *resp);
static void snap_calls_undo(struct tsr_cluster *c, struct snap_later *sl);
static void rollback_later_reply(struct tsr_cluster *c, struct snap_later *sl,
				 Tessera__Admin__Response *resp);

/* ---- a detached snapshot's record step: VolumeRecord.snap_gen ----------- */

/*
 * A detached volume's snapshot create or delete cuts (or deletes on) the
 * copies vol/<name> listed at its start and wrote nothing to the record, so a
 * replace-replica running meanwhile through another node did not see it: the
 * replace gives its new copy the snapshot list it read before its waits
 * (volume.c), and recorded that copy without the snapshot for good (session
 * 16's note; through the same node the two refuse each other, c6bf920,
 * 93236a4).  Now, once every copy answered and before the reply, vol/<name>
 * is updated by compare-and-set (rec_volume_update, retried on a concurrent
 * change): snap_gen raised by one, and in the same write each copy the
 * record lists now that the snapshot did not reach (not on a node of cut[],
 * or a replace's new copy, rebuild set, also on such a node: snap_gen.h; a
 * replace's new copy recorded meanwhile, out of sync) gets the operation as missed,
 * replayed when it is rebuilt (mirror_snap.c).  A replace reads snap_gen
 * before its list and refuses to record its copy once it changed; its own
 * record write is a compare-and-set too, so whichever of the two writes
 * comes second sees the other: either the replace fails (its new copy
 * deleted, nothing recorded: run it again) or the snapshot gives the new copy
 * the operation.  Not given (WARN): a copy it did not reach that is IN_SYNC
 * (its missed list is not replayed) or whose list is full; a create is then
 * still acknowledged (every copy listed at its start holds it).
 */
#define SNAP_MISSED_MAX 1024 /* CopyRecord.missed_snaps entries (records.c) */

static void snap_gen_note(char *list, size_t size, const char *node)
{
	size_t len = strlen(list);

	snprintf(list + len, size - len, "%s%s", len ? ", " : "", node);
}

int snap_gen_mutate(Tessera__Cluster__VolumeRecord *rec, void *arg)
{
	struct snap_gen_step *g = arg;

	g->given[0] = g->lost[0] = '\0'; /* a retry starts again */
	if (strcmp(rec->uuid, g->uuid) != 0)
		return 1; /* not the volume the snapshot read: nothing to write */
	rec->snap_gen++;
	for (size_t i = 0; i < rec->n_copies; i++) {
		Tessera__Cluster__CopyRecord *cr = rec->copies[i];
		bool reached = false;
		char last = 0, *e, **grown;

		/* the copy cut on that node, not a replace's new copy put there
		 * since (snap_gen.h: every copy cut had rebuild clear) */
		for (size_t k = 0; k < g->n_cut && !reached && !cr->rebuild; k++)
			reached = strcmp(g->cut[k], cr->node_id) == 0;
		if (reached)
			continue;
		if (cr->state == TESSERA__CLUSTER__COPY_STATE__IN_SYNC) {
			snap_gen_note(g->lost, sizeof(g->lost), cr->node_id);
			continue;
		}
		for (size_t k = 0; k < cr->n_missed_snaps; k++)
			if (strcmp(cr->missed_snaps[k] + 2, g->snap) == 0)
				last = cr->missed_snaps[k][0];
		/* a create its list has already (the replace read it after the
		 * cut), or a delete of one it never gets (a new copy starts
		 * without any): nothing to replay */
		if (last == g->op || (g->op == 'd' && last != 'c'))
			continue;
		if (cr->n_missed_snaps >= SNAP_MISSED_MAX) {
			snap_gen_note(g->lost, sizeof(g->lost), cr->node_id);
			continue;
		}
		grown = realloc(cr->missed_snaps, (cr->n_missed_snaps + 1) * sizeof(*grown));
		if (grown == NULL)
			return -ENOMEM;
		cr->missed_snaps = grown;
		if (asprintf(&e, "%c %s", g->op, g->snap) < 0)
			return -ENOMEM;
		cr->missed_snaps[cr->n_missed_snaps++] = e;
		snap_gen_note(g->given, sizeof(g->given), cr->node_id);
	}
	return 0;
}

/* Tests only: while the file named by $TSR_TEST_SNAP_GEN_HOLD_FILE exists
 * (30 s at most), a detached snapshot create or delete whose copies answered
 * waits, on the loop, before its record step; FILE.held is made when it
 * starts waiting (test-cluster-replace-snap-othernode: a replace records its
 * new copy meanwhile). */
static void snap_gen_test_hold(void)
{
	tsr_test_hold_file("TSR_TEST_SNAP_GEN_HOLD_FILE", true);
}

/*
 * The record step of a detached volume's snapshot op on vol@snap (vol/<name>
 * of uuid when it began), which reached the copies on cut[0..n_cut): 0, or
 * for a create -errno with msg (vol/<name> could not be written: the caller
 * undoes the cut, as for a copy's failure).  A delete is done on every copy
 * whatever this says: its failure is logged, 0.  Main thread (blocking
 * metadata calls, as the other record writes of this file).
 */
static int snap_gen_record(struct tsr_cluster *c, const char *vol, const char *uuid,
			   enum tsr_snap_op op, const char *snap, const char *const *cut,
			   size_t n_cut, char *msg, size_t msg_len)
{
	struct snap_gen_step g = { .uuid = uuid, .op = op == TSR_SNAP_CREATE ? 'c' : 'd',
				   .snap = snap };
	const char *what = op == TSR_SNAP_CREATE ? "create" : "delete";
	int ret;

	for (size_t i = 0; i < n_cut && i < TSR_LAYOUT_MAX_COPIES; i++)
		g.cut[g.n_cut++] = cut[i];
	snap_gen_test_hold();
	ret = rec_volume_update(c->meta, vol, snap_gen_mutate, &g);
	if (ret == -ENOENT)
		return 0; /* the volume was deleted meanwhile: nobody to tell */
	if (ret) {
		if (op != TSR_SNAP_CREATE) {
			tsr_warn("cluster: snapshot %s@%s deleted on every copy, but vol/%s could not "
				 "be updated (%s): a replace-replica of %s running through another "
				 "node meanwhile may give its new copy that snapshot", vol, snap, vol,
				 strerror(-ret), vol);
			return 0;
		}
		snprintf(msg, msg_len, "cannot create snapshot '%s@%s': vol/%s could not be updated "
			 "after the copies' cuts (%s): the cuts are undone; retry", vol, snap, vol,
			 strerror(-ret));
		tsr_warn("cluster: %s", msg);
		return ret;
	}
	if (g.given[0])
		tsr_info("cluster: snapshot %s %s@%s: given as missed to the copies on %s (recorded "
			 "in vol/%s meanwhile, by a replace-replica through another node)", what,
			 vol, snap, g.given, vol);
	if (g.lost[0])
		tsr_warn("cluster: snapshot %s %s@%s: the copies on %s were recorded in vol/%s "
			 "meanwhile and cannot be given it (in sync, or %d missed operations "
			 "already): their %s lacks it", what, vol, snap, g.lost, vol,
			 SNAP_MISSED_MAX, op == TSR_SNAP_CREATE ? "snapshot list" : "delete");
	return 0;
}

/* sl's record step (snap_gen_record), its copies all answered 0: a create
 * that cannot be recorded fails (sl->status, sl->msg), undone by the caller. */
static void snap_later_gen(struct tsr_cluster *c, struct snap_later *sl)
{
	const char *cut[TSR_LAYOUT_MAX_COPIES];
	int ret;

	for (size_t i = 0; i < sl->n_slots; i++)
		cut[i] = sl->slots[i].node_id;
	ret = snap_gen_record(c, sl->vol, sl->uuid, sl->req.op, sl->req.snap, cut, sl->n_slots,
			      sl->msg, sizeof(sl->msg));
	if (ret)
		sl->status = ret;
}

/* Tests only: while the file named by $TSR_TEST_SNAP_REPLY_HOLD_FILE exists
 * (30 s at most), a create answered later waits, on the loop, after its cut
 * and before its description is read back (snapshot_reply); FILE.held is
 * made when it starts waiting (a node can be frozen in between). */
static void snap_reply_test_hold(void)
{
	tsr_test_hold_file("TSR_TEST_SNAP_REPLY_HOLD_FILE", true);
}

/* Back on the loop (admin_later fn): the reply, as snap_change's caller gives it. */
static void snap_later_reply(struct tsr_admin_server *srv, void *arg,
			     Tessera__Admin__Response *resp)
{
	struct snap_later *sl = arg;
	bool create = sl->req.op == TSR_SNAP_CREATE;
	struct tsr_cluster *c;
	char msg[1024];
	int ret;

	(void)srv;
	pthread_mutex_lock(&pending_lock);
	c = sl->c;
	pthread_mutex_unlock(&pending_lock);
	pending_unlink(sl);
	if (sl->rollback) {
		rollback_later_reply(c, sl, resp);
		free(sl);
		return;
	}
	/* a detached volume's op done on every copy: vol/<name> told first */
	if (sl->status == 0 && c != NULL && sl->n_slots > 0 && !sl->forward && sl->uuid[0] &&
	    !sl->gen_done)
		snap_later_gen(c, sl);
	if (sl->status && sl->n_slots > 0 && !sl->forward)
		snap_calls_undo(c, sl);
	if (sl->status && sl->msg[0])
		ret = sl->status;
	else
		ret = coord_result(sl->status, sl->req.op, sl->vol, sl->req.snap, msg, sizeof(msg));
	/* a replace waiting here noted it (cluster_snapshot_change): its outcome */
	if (c != NULL && sl->clone == NULL)
		cluster_replace_snap_done(c, sl->vol, create ? 'c' : 'd', sl->req.snap, ret == 0);
	if (sl->clone) {
		/* a clone's temporary snapshot: the clone now */
		if (ret == 0)
			tsr_info("cluster: snapshot %s@%s created", sl->vol, sl->req.snap);
		clone_after_cut(c, sl->clone, sl->req.snap, ret, sl->status && sl->msg[0] ?
				sl->msg : msg, resp);
		tsr_info("cluster: clone '%s' of '%s': replied after %.1f ms%s", sl->clone->name,
			 sl->vol, (double)(tsr_mono_ns() - sl->started_ns) / 1e6,
			 resp->error ? " (failed)" : "");
		free(sl->clone);
		free(sl);
		return;
	}
	if (ret) {
		admin_fail(resp, ret, "%s", sl->status && sl->msg[0] ? sl->msg : msg);
	} else if (c == NULL) {
		admin_fail(resp, -ESHUTDOWN, "snapshot '%s' of '%s' was %s, but tesserad is "
			   "shutting down (tessera snapshot list %s through another node)",
			   sl->req.snap, sl->vol, create ? "cut" : "deleted", sl->vol);
	} else {
		tsr_info("cluster: snapshot %s@%s %s", sl->vol, sl->req.snap,
			 create ? "created" : "deleted");
		if (create && sl->show_read) {
			snapshot_reply_shown(sl, resp); /* read back off the loop */
		} else if (create) {
			snap_reply_test_hold();
			snapshot_reply(c, sl->vol, sl->req.snap, resp);
		}
	}
	if (sl->shown)
		tessera__admin__response__free_unpacked(sl->shown, NULL);
	tsr_info("cluster: snapshot %s '%s@%s': replied after %.1f ms%s",
		 create ? "create" : "delete", sl->vol, sl->req.snap,
		 (double)(tsr_mono_ns() - sl->started_ns) / 1e6, resp->error ? " (failed)" : "");
	free(sl);
}

/* A pending request of the admin request running now (its reply comes
 * later), listed; NULL when none can be (not inside an admin request, out
 * of memory): the caller goes on synchronously. */
static struct snap_later *snap_later_new(struct tsr_cluster *c, const char *vol,
					 const struct tsr_snap_req *sr, struct clone_args *clone,
					 bool show_remote)
{
	struct tsr_admin_server *srv = admin_handling_server();
	struct snap_later *sl;

	if (srv == NULL || (sl = calloc(1, sizeof(*sl))) == NULL)
		return NULL;
	sl->started_ns = tsr_mono_ns();
	sl->c = c;
	sl->show_remote = show_remote && !snap_read_unbounded();
	snprintf(sl->origin, sizeof(sl->origin), "%s", c->origin ? c->origin : "");
	snprintf(sl->vol, sizeof(sl->vol), "%s", vol);
	sl->req = *sr;
	sl->epoch = SNAP_NO_EPOCH;
	sl->clone = clone;
	sl->later = admin_later_begin(srv, snap_later_reply, sl);
	if (sl->later == NULL) {
		free(sl);
		return NULL;
	}
	pthread_mutex_lock(&pending_lock);
	sl->next = pending;
	if (pending)
		pending->prev = sl;
	pending = sl;
	pthread_mutex_unlock(&pending_lock);
	return sl;
}

/* Undo snap_later_new: the reply is given at once after all (sl->clone
 * stays the caller's). */
static void snap_later_drop(struct snap_later *sl)
{
	pending_unlink(sl);
	admin_later_cancel(sl->later);
	free(sl);
}

/*
 * Start sr on vol's gate here and let the admin server reply when it is done.
 * True when the reply comes later; false (not inside an admin request, out
 * of memory, the volume not open here) when the caller must go on
 * synchronously.
 */
static bool snap_later_start(struct tsr_cluster *c, const char *vol,
			     const struct tsr_snap_req *sr, struct clone_args *clone,
			     bool show_remote)
{
	struct snap_later *sl = snap_later_new(c, vol, sr, clone, show_remote);

	if (sl == NULL)
		return false;
	if (tsr_volset_snap_async(c->o.vols, vol, &sl->req, snap_later_cut, sl) == 0)
		return true;
	snap_later_drop(sl);
	return false;
}

/* The request of op on vol@snap; local_copy for one copy's own store, a
 * CREATE's size then the snapshot's (0: the copy's; a node of an earlier
 * build ignores it), and epoch its fence (SNAP_NO_EPOCH: none; a node of an
 * earlier build ignores it: its copy not fenced). */
static void snap_request(Tessera__Admin__Request *req, Tessera__Admin__SnapshotCreate *sc,
			 Tessera__Admin__SnapshotDelete *sd, enum tsr_snap_op op, const char *vol,
			 const char *snap, bool local_copy, uint64_t size, uint64_t epoch)
{
	if (op == TSR_SNAP_CREATE) {
		sc->volume = (char *)vol;
		sc->name = (char *)snap;
		sc->local_copy = local_copy;
		sc->size = local_copy ? size : 0;
		sc->epoch_set = local_copy && epoch != SNAP_NO_EPOCH;
		sc->epoch = sc->epoch_set ? epoch : 0;
		req->command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE;
		req->snapshot_create = sc;
	} else {
		sd->volume = (char *)vol;
		sd->name = (char *)snap;
		sd->local_copy = local_copy;
		sd->epoch_set = local_copy && epoch != SNAP_NO_EPOCH;
		sd->epoch = sd->epoch_set ? epoch : 0;
		req->command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DELETE;
		req->snapshot_delete = sd;
	}
}

/* A fire-and-forget local_copy delete (the undo of a detached create that
 * failed elsewhere): its callback logs a failure and frees this. */
struct snap_undo {
	char what[200];                /* "VOL@SNAP on node N" */
};

static void snap_undo_done(void *arg, int status, Tessera__Admin__Response *resp)
{
	struct snap_undo *u = arg;

	if (status || resp->error)
		tsr_warn("cluster: undo of snapshot %s: %s", u->what, status ? strerror(-status) :
			 resp->message && resp->message[0] ? resp->message : strerror(-resp->error));
	tessera__admin__response__free_unpacked(resp, NULL);
	free(u);
}

/* The undo of our store's cut (a detached create that failed elsewhere) in
 * a thread of its own, as the cut ran (snap_local_main): the store call
 * (its lock, the catalogue) not on this loop; cluster_snapshot_stop waits
 * for it (local_running).  No thread: here. */
static bool snap_local_test_inline(void);

struct snap_undo_job {
	struct tsr_store *store;
	char vol[64], snap[64];
	bool tmp;                      /* a clone's temporary snapshot (snap_delete_nowait) */
};

/* Tests only: while the file named by $TSR_TEST_SNAP_TMP_DELETE_HOLD_FILE
 * exists (30 s at most), our store's delete of a clone's temporary snapshot
 * waits before its store call; FILE.held is made when it starts waiting. */
static void snap_tmp_delete_test_hold(void)
{
	tsr_test_hold_file("TSR_TEST_SNAP_TMP_DELETE_HOLD_FILE", true);
}

static void snap_undo_local_run(struct tsr_store *store, const char *vol, const char *snap,
				bool tmp)
{
	int ret;

	if (tmp)
		snap_tmp_delete_test_hold();
	ret = tsr_store_snap_delete(store, vol, snap);
	if (ret && tmp)
		tsr_warn("cluster: the temporary snapshot %s@%s stays on this node: %s (tessera "
			 "snapshot delete %s %s removes it)", vol, snap, strerror(-ret), vol, snap);
	else if (ret)
		tsr_warn("cluster: undo of snapshot %s@%s on this node: %s (delete it again: "
			 "tessera snapshot delete %s %s)", vol, snap, strerror(-ret), vol, snap);
}

static void *snap_undo_main(void *arg)
{
	struct snap_undo_job *j = arg;

	tsr_log_set_thread_name(j->tmp ? "snap-tmpdel" : "snap-undo");
	snap_undo_local_run(j->store, j->vol, j->snap, j->tmp);
	free(j);
	pthread_mutex_lock(&pending_lock);
	local_running--;
	pthread_cond_broadcast(&local_cond);
	pthread_mutex_unlock(&pending_lock);
	return NULL;
}

/* Run fn(arg) in a detached thread counted in local_running (which
 * cluster_snapshot_stop waits on).  0, or -errno: no thread, nothing counted. */
static int local_thread_start(void *(*fn)(void *), void *arg)
{
	pthread_attr_t attr;
	pthread_t t;
	int ret;

	pthread_mutex_lock(&pending_lock);
	local_running++;
	pthread_mutex_unlock(&pending_lock);
	ret = pthread_attr_init(&attr);
	if (ret == 0) {
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		ret = pthread_create(&t, &attr, fn, arg);
		pthread_attr_destroy(&attr);
	}
	if (ret == 0)
		return 0;
	pthread_mutex_lock(&pending_lock);
	local_running--;
	pthread_cond_broadcast(&local_cond);
	pthread_mutex_unlock(&pending_lock);
	return -ret;
}

/* Delete our store's vol@snap off the loop: the undo of a detached create's
 * cut, or (tmp) a clone's temporary snapshot once the clone is made (or
 * failed).  Not waited for; a failure is logged. */
static void snap_undo_local(struct tsr_cluster *c, const char *vol, const char *snap, bool tmp)
{
	struct snap_undo_job *j = malloc(sizeof(*j));

	if (j != NULL && !snap_local_test_inline()) {
		j->store = c->o.store;
		snprintf(j->vol, sizeof(j->vol), "%s", vol);
		snprintf(j->snap, sizeof(j->snap), "%s", snap);
		j->tmp = tmp;
		if (local_thread_start(snap_undo_main, j) == 0)
			return;
	}
	free(j);
	snap_undo_local_run(c->o.store, vol, snap, tmp);
}

/* The last call of sl answered (the loop, or our store's cut's thread): its
 * result, and the reply (snap_later_reply, on the loop, undoes a create that
 * failed somewhere: snap_calls_undo). */
static void snap_calls_done(struct snap_later *sl)
{
	size_t first = sl->n_slots;

	if (sl->rollback) {
		/* every copy's result is the reply's (rollback_later_reply) */
		sl->status = 0;
		admin_later_done(sl->later);
		return;
	}
	if (!sl->forward && sl->req.op == TSR_SNAP_DELETE) {
		int rets[TSR_LAYOUT_MAX_COPIES] = { 0 };

		for (size_t i = 0; i < sl->n_slots; i++)
			rets[i] = sl->slots[i].ret;
		switch (delete_result(rets, sl->n_slots)) {
		case 0: /* the copies without it lack it already */
			for (size_t i = 0; i < sl->n_slots; i++)
				sl->slots[i].ret = 0;
			break;
		case -ENOENT: /* no copy had it: "not found" naming it */
			sl->status = -ENOENT;
			snap_error(-ENOENT, TSR_SNAP_DELETE, sl->vol, sl->req.snap, sl->msg,
				   sizeof(sl->msg));
			admin_later_done(sl->later);
			return;
		default: /* a copy that has it failed: that error (below) */
			break;
		}
	}
	for (size_t i = 0; i < sl->n_slots && first == sl->n_slots; i++)
		if (sl->slots[i].ret != 0)
			first = i;
	if (first == sl->n_slots) {
		sl->status = 0;
		snap_later_finish(sl);
		return;
	}
	/* a copy's epoch past the record's at the start (a detached volume's
	 * create, fenced): an attach (and maybe writes) came between the
	 * copies' cuts */
	for (size_t i = 0; i < sl->n_slots && !sl->forward && sl->epoch != SNAP_NO_EPOCH; i++) {
		if (sl->slots[i].ret != -ESTALE)
			continue;
		sl->status = -ESTALE;
		snprintf(sl->msg, sizeof(sl->msg), "cannot create snapshot '%s@%s': '%s' was "
			 "attached meanwhile (node %s's copy has an epoch past %llu, the volume's "
			 "when this began); the copies' cuts are undone: retry", sl->vol,
			 sl->req.snap, sl->vol, sl->slots[i].node_id,
			 (unsigned long long)sl->epoch);
		admin_later_done(sl->later);
		return;
	}
	sl->status = sl->slots[first].ret;
	snprintf(sl->msg, sizeof(sl->msg), "%s", sl->slots[first].msg);
	admin_later_done(sl->later);
}

/* On the loop, sl's local_copy calls answered and one failed: a create is
 * deleted where it was cut (without waiting: a failure is logged), a delete
 * done on some copies only says so.  c NULL: the cluster stopped. */
static void snap_calls_undo(struct tsr_cluster *c, struct snap_later *sl)
{
	size_t done = 0;

	for (size_t i = 0; i < sl->n_slots; i++)
		done += sl->slots[i].ret == 0;
	if (sl->req.op == TSR_SNAP_CREATE && c == NULL && done > 0) {
		/* the cluster stopped: nothing to send the deletes with; the
		 * copies that cut it keep it (a later create of the name would
		 * fail EEXIST there): say where to delete it */
		char where[TSR_LAYOUT_MAX_COPIES * 66] = "";
		size_t len = 0;

		for (size_t i = 0; i < sl->n_slots; i++)
			if (sl->slots[i].ret == 0 && len < sizeof(where))
				len += (size_t)snprintf(where + len, sizeof(where) - len, "%s%s",
							len ? ", " : "", sl->slots[i].node_id);
		tsr_warn("cluster: snapshot %s@%s failed while tesserad stops, but was cut on "
			 "%zu of %zu copies (%s): not undone; delete it again (tessera snapshot "
			 "delete %s %s)", sl->vol, sl->req.snap, done, sl->n_slots, where, sl->vol,
			 sl->req.snap);
		return;
	}
	if (sl->req.op == TSR_SNAP_CREATE) {
		/* delete it where it was cut (without waiting: a failure is logged) */
		for (size_t i = 0; i < sl->n_slots; i++) {
			Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
			Tessera__Admin__SnapshotCreate sc = TESSERA__ADMIN__SNAPSHOT_CREATE__INIT;
			Tessera__Admin__SnapshotDelete sd = TESSERA__ADMIN__SNAPSHOT_DELETE__INIT;
			struct snap_undo *u;
			int ret;

			if (sl->slots[i].ret != 0 || c == NULL)
				continue;
			if (strcmp(sl->slots[i].node_id, c->node_id) == 0) {
				/* our store's delete off the loop, as the cut was */
				snap_undo_local(c, sl->vol, sl->req.snap, false);
				continue;
			}
			u = malloc(sizeof(*u));
			if (u == NULL)
				continue;
			snprintf(u->what, sizeof(u->what), "%s@%s on %s", sl->vol, sl->req.snap,
				 sl->slots[i].node_id);
			snap_request(&req, &sc, &sd, TSR_SNAP_DELETE, sl->vol, sl->req.snap, true,
				     0, SNAP_NO_EPOCH);
			ret = admin_async_call(c->o.loop, sl->slots[i].address, c->token, &req,
					       CLUSTER_COPY_TIMEOUT_MS, snap_undo_done, u, NULL);
			if (ret) {
				tsr_warn("cluster: undo of snapshot %s: %s", u->what, strerror(-ret));
				free(u);
			}
		}
	} else if (done > 0) {
		tsr_warn("cluster: snapshot %s@%s deleted on %zu of %zu copies: delete it again",
			 sl->vol, sl->req.snap, done, sl->n_slots);
	}
}

/* A node-to-node call of a pending request answered (loop). */
static void snap_slot_done(void *arg, int status, Tessera__Admin__Response *resp)
{
	struct snap_slot *slot = arg;
	struct snap_later *sl = slot->sl;
	const char *what = sl->rollback ? "roll back" : sl->req.op == TSR_SNAP_CREATE ?
			   "create the snapshot" : "delete the snapshot";

	slot->call = NULL;
	if (status == -ECANCELED && sl->rollback) {
		slot->ret = -ESHUTDOWN;
		snprintf(slot->msg, sizeof(slot->msg), "tesserad is shutting down: the rollback of "
			 "'%s' on node %s may or may not be done (run it again through another "
			 "node: tessera volume rollback %s %s)", sl->vol, slot->node_id, sl->vol,
			 sl->req.snap);
	} else if (status == -ECANCELED) {
		slot->ret = -ESHUTDOWN;
		snprintf(slot->msg, sizeof(slot->msg), "tesserad is shutting down: snapshot '%s' of "
			 "'%s' may or may not be %s (tessera snapshot list %s through another node)",
			 sl->req.snap, sl->vol, sl->req.op == TSR_SNAP_CREATE ? "cut" : "deleted",
			 sl->vol);
	} else if (status && sl->forward) {
		slot->ret = status;
		snprintf(slot->msg, sizeof(slot->msg), "cannot reach %s, the coordinator of '%s', at "
			 "%s: %s (is it alive? tessera node list)", slot->node_id, sl->vol,
			 slot->address, strerror(-status));
	} else if (status) {
		slot->ret = status;
		snprintf(slot->msg, sizeof(slot->msg), "cannot reach node %s at %s to %s of '%s': %s",
			 slot->node_id, slot->address, what, sl->vol, strerror(-status));
	} else {
		slot->ret = resp->error;
		if (resp->error && sl->forward)
			snprintf(slot->msg, sizeof(slot->msg), "%s", resp->message &&
				 resp->message[0] ? resp->message : strerror(-resp->error));
		else if (resp->error)
			snprintf(slot->msg, sizeof(slot->msg), "node %s: %s", slot->node_id,
				 resp->message && resp->message[0] ? resp->message :
				 strerror(-resp->error));
		tessera__admin__response__free_unpacked(resp, NULL);
	}
	if (sl_put(sl))
		snap_calls_done(sl);
}

/* Tests only: while the file named by $TSR_TEST_SNAP_LOCAL_CUT_HOLD_FILE
 * exists (30 s at most), our store's cut of a detached volume's snapshot
 * waits before its store call; FILE.held is made when it starts waiting.
 * $TSR_TEST_SNAP_LOCAL_CUT_INLINE set (not "0"): the cut on the loop, as
 * before (the A/B). */
static void snap_local_test_hold(void)
{
	tsr_test_hold_file("TSR_TEST_SNAP_LOCAL_CUT_HOLD_FILE", true);
}

static bool snap_local_test_inline(void)
{
	return tsr_test_env_on("TSR_TEST_SNAP_LOCAL_CUT_INLINE");
}

/* Our store copy's part of sl (a detached volume's local_copy op): slot's
 * result and message.  on_loop: run inline on the cluster loop (no thread),
 * a rollback then never waits in the store for one to the same snapshot:
 * -EBUSY (review 16d N5). */
static void snap_local_run(struct tsr_store *store, struct snap_slot *slot, bool on_loop)
{
	struct snap_later *sl = slot->sl;
	bool create = sl->req.op == TSR_SNAP_CREATE;

	if (sl->rollback) {
		bool rolled;

		rollback_test_hold();
		/* fenced: -ESTALE once an attach reached our copy (rollback_finish) */
		slot->ret = sl->epoch != SNAP_NO_EPOCH ?
			    admin_rollback_fenced(store, sl->vol, sl->req.snap, sl->epoch, on_loop,
						  &rolled) :
			    on_loop ? tsr_store_vol_rollback_nowait(store, sl->vol, sl->req.snap) :
				      tsr_store_vol_rollback(store, sl->vol, sl->req.snap);
		char why[512];

		/* to another snapshot, or to the same one: not waited for
		 * (on_loop), or still running past the store's wait */
		if (slot->ret == -EBUSY &&
		    tsr_store_rollback_busy_msg(store, sl->vol, sl->req.snap, on_loop, why,
						sizeof(why)))
			snprintf(slot->msg, sizeof(slot->msg), "cannot roll back on %s (this node): "
				 "%.400s", slot->node_id, why);
		else if (slot->ret)
			snprintf(slot->msg, sizeof(slot->msg), "cannot roll back on %s (this node): "
				 "%s", slot->node_id, strerror(-slot->ret));
		return;
	}
	snap_local_test_hold();
	/* a create fenced by vol/v's epoch at the start: -ESTALE once an
	 * attach opened our copy meanwhile (snap_calls_done); a delete not
	 * (sl->epoch SNAP_NO_EPOCH, snap_change) */
	slot->ret = create ? tsr_store_snap_create_epoch(store, sl->vol, sl->req.snap,
							 sl->req.size, sl->epoch)
			   : tsr_store_snap_delete_missing_ok(store, sl->vol, sl->req.snap);
	if (slot->ret)
		snprintf(slot->msg, sizeof(slot->msg), "cannot %s on %s (this node): %s",
			 create ? "create the snapshot" : "delete the snapshot", slot->node_id,
			 strerror(-slot->ret));
}

struct snap_local_job {
	struct tsr_store *store;
	struct snap_slot *slot;
};

/* Our store's cut off the loop: the store lock, the layer's files, their
 * fdatasyncs wait here, not every admin call of this node (a detached
 * volume: nothing writes it meanwhile, as for the other copies' nodes,
 * which answer while theirs cut).  The last answer of sl goes on with
 * snap_calls_done here: it only reads the slots and hands the reply to the
 * admin server (admin_later_done, any thread); the undo of a failed create
 * is the reply's, on the loop. */
static void *snap_local_main(void *arg)
{
	struct snap_local_job *j = arg;
	struct snap_slot *slot = j->slot;

	tsr_log_set_thread_name(slot->sl->rollback ? "snap-rollback" : "snap-cut");
	snap_local_run(j->store, slot, false);
	free(j);
	if (sl_put(slot->sl))
		snap_calls_done(slot->sl); /* sl->status set; sl may be freed from here */
	/* done with the store and with sl: cluster_snapshot_stop may go on (its
	 * scan then reads a status this thread set: review 17c S1) */
	pthread_mutex_lock(&pending_lock);
	local_running--;
	pthread_cond_broadcast(&local_cond);
	pthread_mutex_unlock(&pending_lock);
	return NULL;
}

/* Start our store's part of slot's request in a thread: true (its answer
 * counted in sl->outstanding); false (no thread, or the test's A/B): the
 * caller runs it here. */
static bool snap_local_start(struct tsr_cluster *c, struct snap_slot *slot)
{
	struct snap_local_job *j;

	if (snap_local_test_inline() || (j = malloc(sizeof(*j))) == NULL)
		return false;
	j->store = c->o.store;
	j->slot = slot;
	if (local_thread_start(snap_local_main, j) == 0)
		return true;
	free(j);
	return false;
}

/*
 * Start sl's calls: op on every node of nodes[0..n) (forward: the plain
 * request to the coordinator, n 1; else the local_copy form, ours on our
 * store at once).  True when the reply comes later (at least one call
 * started, or every copy ours); false: sl dropped, msg says why.
 */
static bool snap_calls_start(struct tsr_cluster *c, struct snap_later *sl,
			     const Tessera__Cluster__NodeRecord *const *nodes, size_t n, bool forward,
			     int *err, char *msg, size_t msg_len)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotCreate sc = TESSERA__ADMIN__SNAPSHOT_CREATE__INIT;
	Tessera__Admin__SnapshotDelete sd = TESSERA__ADMIN__SNAPSHOT_DELETE__INIT;
	Tessera__Admin__VolumeRollback vr = TESSERA__ADMIN__VOLUME_ROLLBACK__INIT;
	/* a rollback may copy much: as long as a forwarded command (copy_op) */
	int timeout = forward || sl->rollback ? CLUSTER_FORWARD_TIMEOUT_MS :
		      CLUSTER_COPY_TIMEOUT_MS;
	size_t started = 0, local = n;

	sl->forward = forward;
	sl->n_slots = n;
	sl->outstanding = n + 1; /* one for this function: nothing finishes before the end */
	if (sl->rollback) {
		vr.volume = sl->vol;
		vr.snapshot = sl->req.snap;
		vr.local_copy = true;
		/* a node of an earlier build ignores it: its rollback not fenced */
		vr.epoch_set = sl->epoch != SNAP_NO_EPOCH;
		vr.epoch = vr.epoch_set ? sl->epoch : 0;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ROLLBACK;
		req.volume_rollback = &vr;
	} else {
		snap_request(&req, &sc, &sd, sl->req.op, sl->vol, sl->req.snap, !forward,
			     sl->req.size, sl->epoch);
	}
	for (size_t i = 0; i < n; i++) {
		struct snap_slot *slot = &sl->slots[i];
		int ret;

		slot->sl = sl;
		snprintf(slot->node_id, sizeof(slot->node_id), "%s", nodes[i]->id);
		snprintf(slot->address, sizeof(slot->address), "%s", nodes[i]->address);
		if (!forward && strcmp(nodes[i]->id, c->node_id) == 0) {
			local = i; /* after the calls went out (below) */
			continue;
		}
		ret = admin_async_call(c->o.loop, nodes[i]->address, c->token, &req, timeout,
				       snap_slot_done, slot, &slot->call);
		if (ret == 0) {
			started++;
			continue;
		}
		/* not started: its result now */
		slot->call = NULL;
		snap_slot_done(slot, ret, NULL);
	}
	if (local < n) {
		/* ours: the store's part in a thread (its answer counted like a
		 * call's), else here */
		if (!snap_local_start(c, &sl->slots[local])) {
			snap_local_run(c->o.store, &sl->slots[local], true);
			sl_put(sl); /* not the last: this function holds one */
		}
		started++;
	}
	if (forward && started == 0) {
		/* nothing went out: the error at once (the same words) */
		*err = sl->slots[0].ret;
		snprintf(msg, msg_len, "%s", sl->slots[0].msg);
		snap_later_drop(sl);
		return false;
	}
	if (sl_put(sl))
		snap_calls_done(sl);
	return true;
}

/*
 * Cut (CREATE) or delete snapshot snap of vol on all its copies at one
 * point of its write order, wherever it must run (file header).  0 or
 * -errno with msg.  later non-NULL: a client's request, whose cut on this
 * node (the coordinator) may be answered later: then *later is set and 0
 * returned, and the admin server replies once the cut is made
 * (snap_later_reply).
 */
static int snap_change(struct tsr_cluster *c, const char *vol, enum tsr_snap_op op,
		       const char *snap, bool *later, struct clone_args *clone, char *msg,
		       size_t msg_len)
{
	const Tessera__Cluster__NodeRecord *nodes[TSR_LAYOUT_MAX_COPIES];
	Tessera__Cluster__VolumeRecord *rec = NULL;
	struct tsr_snap_req sr = { .op = op };
	bool ok[TSR_LAYOUT_MAX_COPIES];
	int rets[TSR_LAYOUT_MAX_COPIES];
	struct cluster_view v;
	const char *attached;
	uint64_t rev, fence;
	size_t done = 0;
	bool show_remote;
	int ret;

	if (!tsr_valid_name(snap)) {
		snap_error(-EINVAL, op, vol, snap, msg, msg_len);
		return -EINVAL;
	}
	ret = load_volume(c, vol, &v, &rec, &rev, msg, msg_len);
	if (ret)
		return ret;
	/* a client's create (not a clone's): read back from another node? */
	show_remote = op == TSR_SNAP_CREATE && clone == NULL && !holds_in_sync(c, rec);
	snprintf(sr.snap, sizeof(sr.snap), "%s", snap);
	attached = view_attached(&v, vol, NULL);
	if (attached && strcmp(attached, c->node_id) == 0) {
		if (later != NULL && snap_later_start(c, vol, &sr, clone, show_remote)) {
			*later = true; /* snap_later_reply logs and replies */
			ret = 0;
			goto out;
		}
		/* blocking: a clone's temporary snapshot, or the async start failed
		 * (the volume not open here: the same error at once) */
		ret = coord_result(tsr_volset_snap(c->o.vols, vol, &sr), op, vol, snap, msg,
				   msg_len);
		goto out;
	}
	if (attached) {
		Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
		Tessera__Admin__SnapshotCreate sc = TESSERA__ADMIN__SNAPSHOT_CREATE__INIT;
		Tessera__Admin__SnapshotDelete sd = TESSERA__ADMIN__SNAPSHOT_DELETE__INIT;
		const Tessera__Cluster__NodeRecord *coord = view_node(&v, attached);
		Tessera__Admin__Response *resp = NULL;
		struct snap_later *sl;

		if (coord == NULL) {
			ret = -EHOSTUNREACH;
			snprintf(msg, msg_len, "volume '%s' is attached on %s, whose address is "
				 "unknown", vol, attached);
			goto out;
		}
		/* a client's request: forwarded without waiting, answered later */
		if (later != NULL &&
		    (sl = snap_later_new(c, vol, &sr, clone, show_remote)) != NULL) {
			if (snap_calls_start(c, sl, &coord, 1, true, &ret, msg, msg_len)) {
				*later = true;
				ret = 0;
			}
			goto out;
		}
		snap_request(&req, &sc, &sd, op, vol, snap, false, 0, SNAP_NO_EPOCH);
		ret = cluster_call_node(c, coord->address, &req, CLUSTER_FORWARD_TIMEOUT_MS, &resp);
		if (ret) {
			snprintf(msg, msg_len, "cannot reach %s, the coordinator of '%s', at %s: %s",
				 attached, vol, coord->address, strerror(-ret));
			goto out;
		}
		ret = resp->error;
		if (ret)
			snprintf(msg, msg_len, "%s", resp->message && resp->message[0] ?
				 resp->message : strerror(-ret));
		tessera__admin__response__free_unpacked(resp, NULL);
		goto out;
	}
	/* detached: nobody writes it; the same cut on every copy */
	ret = all_copies_ready(&v, rec, op == TSR_SNAP_CREATE ? "cut the snapshot" :
			       "delete the snapshot", true, nodes, msg, msg_len);
	if (ret)
		goto out;
	/* every copy cuts the record's size (ec: its chunk volume's), also a copy
	 * grown past it (a resize stopped after its grow step, or two crossed:
	 * cluster/volume.c), as the attached cut does (mirror_snap.c, ec_snap.c) */
	if (op == TSR_SNAP_CREATE)
		sr.size = rec_copy_size(rec);
	/* every copy's cut fenced by the epoch of the last attach before this
	 * request: the record's, but no later than the view's revision (the
	 * view said detached; an attach whose key came after it has a higher
	 * epoch, also when it wrote vol/v before rec was read).  An attach
	 * meanwhile raises each copy's epoch (its OPEN) before that copy takes
	 * a write, so its cut then fails -ESTALE and the create is undone.
	 * A delete is not fenced (review 14c B): a snapshot's content does not
	 * depend on later writes, so a delete landing after an attach harms no
	 * data and every copy ends without it; fenced, the copies an attach
	 * reached first refused it and in-sync copies held different snapshot
	 * sets.  The trade: a stale detached delete can remove a snapshot of
	 * the same name the new coordinator cuts right after the attach. */
	fence = op != TSR_SNAP_CREATE ? SNAP_NO_EPOCH : rec->epoch < v.rev ? rec->epoch : v.rev;
	if (later != NULL && rec->n_copies <= TSR_LAYOUT_MAX_COPIES) {
		struct snap_later *sl = snap_later_new(c, vol, &sr, clone, show_remote);

		/* a client's request: every copy's node asked at once, answered later
		 * (a fenced create: a -ESTALE fails it, snap_calls_done, and it is
		 * undone) */
		if (sl != NULL) {
			sl->epoch = fence;
			snprintf(sl->uuid, sizeof(sl->uuid), "%s", rec->uuid);
		}
		if (sl != NULL && snap_calls_start(c, sl, nodes, rec->n_copies, false, &ret, msg,
						   msg_len)) {
			*later = true;
			ret = 0;
			goto out;
		}
	}
	ret = copy_op_all(c, nodes, rec->n_copies,
			  op == TSR_SNAP_CREATE ? COP_SNAP_CREATE : COP_SNAP_DELETE, vol, snap, "",
			  sr.size, fence, ok, rets, NULL, msg, msg_len);
	if (ret && op == TSR_SNAP_DELETE) {
		/* copies lacking it already: done there (delete_result) */
		ret = delete_result(rets, rec->n_copies);
		if (ret == -ENOENT)
			snap_error(ret, op, vol, snap, msg, msg_len);
		for (size_t i = 0; i < rec->n_copies; i++)
			ok[i] = ok[i] || (ret == 0 && rets[i] == -ENOENT);
	}
	if (ret == 0) {
		const char *cut[TSR_LAYOUT_MAX_COPIES];

		/* done on every copy: vol/<name>'s record step (a replace through
		 * another node meanwhile), before the answer */
		for (size_t i = 0; i < rec->n_copies && i < TSR_LAYOUT_MAX_COPIES; i++)
			cut[i] = nodes[i]->id;
		ret = snap_gen_record(c, vol, rec->uuid, op, snap, cut, rec->n_copies, msg,
				      msg_len);
		if (ret == 0)
			goto out;
		/* a create not recorded: undone on every copy (ok[] all set) */
	}
	for (size_t i = 0; i < rec->n_copies; i++)
		done += ok[i];
	if (op == TSR_SNAP_CREATE) {
		for (size_t i = 0; i < rec->n_copies; i++) {
			char m2[512], none[37];

			if (ok[i] && copy_op(c, nodes[i], COP_SNAP_DELETE, vol, snap, "", 0,
					     SNAP_NO_EPOCH, none, m2, sizeof(m2)))
				tsr_warn("cluster: undo of snapshot %s@%s: %s", vol, snap, m2);
		}
	} else if (done > 0) {
		tsr_warn("cluster: snapshot %s@%s deleted on %zu of %zu copies: delete it again",
			 vol, snap, done, rec->n_copies);
	}
out:
	if (ret == 0 && !(later != NULL && *later))
		tsr_info("cluster: snapshot %s@%s %s", vol, snap,
			 op == TSR_SNAP_CREATE ? "created" : "deleted");
	tessera__cluster__volume_record__free_unpacked(rec, NULL);
	view_free(&v);
	return ret;
}

/* The admin message of vol@info as our store describes it, exported on our
 * NBD listeners; NULL on ENOMEM. */
static Tessera__Admin__Snapshot *build_snapshot(struct tsr_cluster *c, const char *vol,
						const struct tsr_snap_info *i)
{
	Tessera__Admin__Snapshot *s = calloc(1, sizeof(*s));
	char export[130];

	if (s == NULL)
		return NULL;
	tessera__admin__snapshot__init(s);
	s->volume = admin_strdup(vol);
	s->name = admin_strdup(i->name);
	s->uuid = admin_strdup(i->uuid);
	s->created = i->created;
	s->seq = i->seq;
	s->size = i->size;
	s->allocated = i->allocated;
	s->exclusive = i->exclusive;
	s->clones = i->clones;
	s->deleting = i->deleting;
	s->nbd_uris = calloc(c->o.n_nbd_listeners + 1, sizeof(char *));
	if (s->volume == NULL || s->name == NULL || s->uuid == NULL || s->nbd_uris == NULL) {
		admin_snapshot_free_built(s);
		return NULL;
	}
	snprintf(export, sizeof(export), "%s@%s", vol, i->name);
	for (size_t k = 0; k < c->o.n_nbd_listeners && !i->deleting; k++) {
		char *uri = cluster_nbd_uri(c->nbd_listeners[k], export);

		if (uri)
			s->nbd_uris[s->n_nbd_uris++] = uri;
	}
	return s;
}

void cluster_volume_snapshots(struct tsr_cluster *c, Tessera__Admin__Volume *out)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotList sl = TESSERA__ADMIN__SNAPSHOT_LIST__INIT;
	Tessera__Admin__Response r = TESSERA__ADMIN__RESPONSE__INIT;
	struct tsr_snap_info *list = NULL;
	size_t n = 0;

	sl.volume = out->name;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST;
	req.snapshot_list = &sl;
	if (cluster_snapshot_read(c, out->name, &req, &r, false)) {
		/* answered by a node holding an in-sync copy: take its list */
		if (r.error == 0) {
			out->snapshots = r.snapshots;
			out->n_snapshots = r.n_snapshots;
			r.snapshots = NULL;
			r.n_snapshots = 0;
		}
		admin_response_free_built(&r);
		return;
	}
	admin_response_free_built(&r);
	if (tsr_store_snap_list(c->o.store, out->name, &list, &n) < 0)
		return;
	out->snapshots = calloc(n + 1, sizeof(*out->snapshots));
	for (size_t i = 0; out->snapshots != NULL && i < n; i++) {
		Tessera__Admin__Snapshot *s = build_snapshot(c, out->name, &list[i]);

		if (s == NULL)
			break;
		out->snapshots[out->n_snapshots++] = s;
	}
	free(list);
}

/* ---- volume show: the snapshot list, bounded and off the loop ----------- */

/* A node holding an IN_SYNC copy that a read of the volume asks. */
struct insync_peer {
	char id[64], address[256];
};

/* Whether rec lists an IN_SYNC copy on this node. */
static bool insync_ours(const struct tsr_cluster *c, const Tessera__Cluster__VolumeRecord *rec)
{
	for (size_t i = 0; i < rec->n_copies; i++)
		if (rec->copies[i]->state == TESSERA__CLUSTER__COPY_STATE__IN_SYNC &&
		    strcmp(rec->copies[i]->node_id, c->node_id) == 0)
			return true;
	return false;
}

/*
 * The alive nodes (by v) holding an IN_SYNC copy by rec, in the record's
 * order, into nodes (at most TSR_LAYOUT_MAX_COPIES): their count.  The node
 * that forwarded the request we are handling waits for our answer (asking it
 * would wait for its forward's timeout): left out, *origin_skipped then true.
 */
static size_t insync_peers(const struct tsr_cluster *c, const struct cluster_view *v,
			   const Tessera__Cluster__VolumeRecord *rec, struct insync_peer *nodes,
			   bool *origin_skipped)
{
	size_t n = 0;

	for (size_t i = 0; i < rec->n_copies && n < TSR_LAYOUT_MAX_COPIES; i++) {
		const Tessera__Cluster__CopyRecord *cr = rec->copies[i];
		const Tessera__Cluster__NodeRecord *node;

		if (cr->state != TESSERA__CLUSTER__COPY_STATE__IN_SYNC ||
		    !view_alive(v, cr->node_id) || (node = view_node(v, cr->node_id)) == NULL)
			continue;
		if (c->origin != NULL && strcmp(cr->node_id, c->origin) == 0) {
			*origin_skipped = true;
			continue;
		}
		snprintf(nodes[n].id, sizeof(nodes[0].id), "%s", node->id);
		snprintf(nodes[n].address, sizeof(nodes[0].address), "%s", node->address);
		n++;
	}
	return n;
}

/*
 * volume show through a node without an IN_SYNC copy of the volume used to
 * get its snapshot list by cluster_volume_snapshots: a forward to the
 * record's first IN_SYNC copy's node bounded by CLUSTER_FORWARD_TIMEOUT_MS
 * (120 s), waited for on this node's main loop (session 15, contract show: a
 * frozen node stopped the loop for 120 s).  Now the alive nodes holding an
 * IN_SYNC copy are asked in turn, each bounded by the peer timeout
 * (show_list_timeout_ms); for an admin request without blocking the loop
 * (admin_async_call, the reply given later), else (no request to answer
 * later) by the blocking call, bounded the same.  The first list answered is
 * the show's; none answers: the show answers without it, its message saying
 * so and naming each node asked ("snapshots not listed: n3: no answer in
 * 2000 ms").  Test hook TSR_TEST_SHOW_LIST_UNBOUNDED=1: the old call.
 */
struct show_list {
	struct tsr_cluster *c;
	struct insync_peer nodes[TSR_LAYOUT_MAX_COPIES]; /* to ask, in this order */
	size_t n_nodes, next;            /* next: the one asked now, or to ask */
	char failed[768];                /* "n2: no answer in 2000 ms; ..." */
	struct admin_later *later;       /* our reply */
	struct admin_async *call;        /* until its callback fired */
	Tessera__Admin__Response answer; /* the show's reply, moved out by show_list_reply */
	struct show_list *next_list;     /* g_show_lists, while call runs */
};

static struct show_list *g_show_lists; /* main thread: lists asked, answered later */

static int show_list_timeout_ms(const struct tsr_cluster *c)
{
	return cluster_peer_call_ms(c);
}

/*
 * Who gives out's list: 0 when it is ours (we hold an IN_SYNC copy) or the
 * record cannot be read (cluster_volume_snapshots, as before); 1: sl->nodes
 * to ask (none alive: n_nodes 0, the reason in sl->failed).
 */
static int show_list_plan(struct tsr_cluster *c, const char *name, struct show_list *sl)
{
	Tessera__Cluster__VolumeRecord *rec = NULL;
	struct cluster_view v;
	char msg[512];
	uint64_t rev;
	bool origin_skipped = false;
	int ret = 1;

	if (load_volume(c, name, &v, &rec, &rev, msg, sizeof(msg)))
		return 0;
	if (insync_ours(c, rec)) {
		ret = 0;
		goto out;
	}
	sl->n_nodes = insync_peers(c, &v, rec, sl->nodes, &origin_skipped);
	if (sl->n_nodes == 0)
		snprintf(sl->failed, sizeof(sl->failed), "%s", origin_skipped ?
			 "the only alive node holding an in-sync copy forwarded this request" :
			 "no node holding an in-sync copy is alive");
out:
	tessera__cluster__volume_record__free_unpacked(rec, NULL);
	view_free(&v);
	return ret;
}

/* The answer of sl->nodes[sl->next]: true when it is the list, moved into
 * vol; else its failure is noted in sl->failed.  r freed either way. */
static bool show_list_take(struct show_list *sl, int status, Tessera__Admin__Response *r,
			   Tessera__Admin__Volume *vol)
{
	size_t len = strlen(sl->failed);
	const char *id = sl->nodes[sl->next].id;
	bool ok = status == 0 && r && r->error == 0;

	if (ok) {
		vol->snapshots = r->snapshots;
		vol->n_snapshots = r->n_snapshots;
		r->snapshots = NULL;
		r->n_snapshots = 0;
	} else if (status == -ETIMEDOUT) {
		snprintf(sl->failed + len, sizeof(sl->failed) - len, "%s%s: no answer in %d ms",
			 len ? "; " : "", id, show_list_timeout_ms(sl->c));
	} else {
		snprintf(sl->failed + len, sizeof(sl->failed) - len, "%s%s: %s", len ? "; " : "",
			 id, status ? strerror(-status) : r && r->message && r->message[0] ?
			 r->message : strerror(r ? -r->error : EIO));
	}
	if (!ok)
		tsr_warn("cluster: volume %s: node %s did not give its snapshot list for a show "
			 "(%s)", vol->name, id, status ? strerror(-status) : "it refused");
	if (r)
		tessera__admin__response__free_unpacked(r, NULL);
	return ok;
}

/* None gave the list: the show answers without it and says why. */
static void show_list_none(struct show_list *sl, Tessera__Admin__Response *resp)
{
	admin_fail(resp, 0, "snapshots not listed: %s", sl->failed);
}

static void show_list_req(struct show_list *sl, const char *name, Tessera__Admin__Request *req,
			  Tessera__Admin__SnapshotList *l)
{
	l->volume = (char *)name;
	req->command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST;
	req->snapshot_list = l;
	req->via_node = sl->c->node_id;
}

static void show_list_unlist(struct show_list *sl)
{
	for (struct show_list **pp = &g_show_lists; *pp; pp = &(*pp)->next_list)
		if (*pp == sl) {
			*pp = sl->next_list;
			break;
		}
}

static void show_list_reply(struct tsr_admin_server *srv, void *arg,
			    Tessera__Admin__Response *resp)
{
	struct show_list *sl = arg;

	(void)srv;
	*resp = sl->answer; /* moved: built with the same allocators */
	free(sl);
}

static void show_list_done(void *cb_arg, int status, Tessera__Admin__Response *r);

/* Ask sl->nodes[sl->next], then the next ones until a call starts: 0 (its
 * callback fires), or -EHOSTUNREACH when none could be asked. */
static int show_list_ask(struct show_list *sl)
{
	const char *name = sl->answer.volumes[0]->name;

	for (; sl->next < sl->n_nodes; sl->next++) {
		Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
		Tessera__Admin__SnapshotList l = TESSERA__ADMIN__SNAPSHOT_LIST__INIT;
		int ret;

		show_list_req(sl, name, &req, &l);
		ret = admin_async_call(sl->c->o.loop, sl->nodes[sl->next].address, sl->c->token,
				       &req, show_list_timeout_ms(sl->c), show_list_done, sl,
				       &sl->call);
		if (ret == 0) {
			sl->next_list = g_show_lists;
			g_show_lists = sl;
			return 0;
		}
		show_list_take(sl, ret, NULL, sl->answer.volumes[0]);
	}
	return -EHOSTUNREACH;
}

static void show_list_done(void *cb_arg, int status, Tessera__Admin__Response *r)
{
	struct show_list *sl = cb_arg;
	Tessera__Admin__Volume *vol = sl->answer.volumes[0];

	sl->call = NULL;
	show_list_unlist(sl);
	if (status == -ECANCELED) { /* cluster_show_stop */
		if (r)
			tessera__admin__response__free_unpacked(r, NULL);
		admin_fail(&sl->answer, 0, "snapshots not listed: %s is stopping",
			   sl->c->node_id);
		admin_later_done(sl->later);
		return;
	}
	if (!show_list_take(sl, status, r, vol)) {
		sl->next++;
		if (show_list_ask(sl) == 0)
			return;
		show_list_none(sl, &sl->answer);
	}
	admin_later_done(sl->later);
}

void cluster_show_stop(struct tsr_cluster *c)
{
	for (struct show_list *sl = g_show_lists; sl;) {
		if (sl->c != c) {
			sl = sl->next_list;
			continue;
		}
		admin_async_cancel(sl->call); /* its callback unlists it */
		sl = g_show_lists;
	}
}

bool cluster_volume_show_snapshots(struct tsr_cluster *c, Tessera__Admin__Response *resp)
{
	const char *e = getenv("TSR_TEST_SHOW_LIST_UNBOUNDED");
	struct tsr_admin_server *srv = admin_handling_server();
	Tessera__Admin__Volume *vol = resp->volumes[0];
	struct show_list *sl;

	if (e && strcmp(e, "1") == 0) { /* tests' control only: the old call */
		cluster_volume_snapshots(c, vol);
		return false;
	}
	sl = calloc(1, sizeof(*sl));
	if (sl == NULL) {
		admin_fail(resp, 0, "snapshots not listed: out of memory in tesserad");
		return false;
	}
	sl->c = c;
	if (show_list_plan(c, vol->name, sl) == 0) { /* ours: no call */
		free(sl);
		cluster_volume_snapshots(c, vol);
		return false;
	}
	if (sl->n_nodes == 0) {
		show_list_none(sl, resp);
		free(sl);
		return false;
	}
	/* an admin request: the loop goes on while the nodes answer */
	if (srv && (sl->later = admin_later_begin(srv, show_list_reply, sl)) != NULL) {
		sl->answer = *resp; /* moved; the caller's reply is dropped */
		tessera__admin__response__init(resp);
		if (show_list_ask(sl) == 0)
			return true;
		/* none could be asked: answer now after all */
		*resp = sl->answer;
		admin_later_cancel(sl->later);
		show_list_none(sl, resp);
		free(sl);
		return false;
	}
	/* no request to answer later: blocking, each bounded */
	for (; sl->next < sl->n_nodes; sl->next++) {
		Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
		Tessera__Admin__SnapshotList l = TESSERA__ADMIN__SNAPSHOT_LIST__INIT;
		Tessera__Admin__Response *r = NULL;
		int st;

		show_list_req(sl, vol->name, &req, &l);
		st = cluster_call_node(c, sl->nodes[sl->next].address, &req,
				       show_list_timeout_ms(c), &r);
		if (show_list_take(sl, st, r, vol)) {
			free(sl);
			return false;
		}
	}
	show_list_none(sl, resp);
	free(sl);
	return false;
}

/* resp->snapshots = { vol@snap as our store describes it }, exported on our listeners. */
static void snapshot_show_local(struct tsr_cluster *c, const char *vol, const char *snap,
				Tessera__Admin__Response *resp)
{
	Tessera__Admin__Snapshot *s;
	struct tsr_snap_info info;
	int ret;

	ret = tsr_store_snap_info(c->o.store, vol, snap, &info);
	if (ret) {
		admin_fail(resp, ret, "snapshot '%s' of '%s' was cut, but this node cannot read it "
			   "back: %s", snap, vol, strerror(-ret));
		return;
	}
	s = build_snapshot(c, vol, &info);
	resp->snapshots = calloc(1, sizeof(*resp->snapshots));
	if (s == NULL || resp->snapshots == NULL) {
		admin_snapshot_free_built(s);
		admin_fail(resp, -ENOMEM, "out of memory in tesserad");
		return;
	}
	resp->snapshots[0] = s;
	resp->n_snapshots = 1;
}

static void snapshot_reply_check(const char *vol, const char *snap,
				 Tessera__Admin__Response *resp, const char *why_none);

/* The reply of sl's create from the answer read back off the loop. */
static void snapshot_reply_shown(struct snap_later *sl, Tessera__Admin__Response *resp)
{
	if (sl->shown == NULL) {
		snapshot_reply_check(sl->vol, sl->req.snap, resp, sl->show_msg);
		return;
	}
	cluster_forward_answer(sl->shown_id, sl->shown_address, 0, sl->shown, resp);
	sl->shown = NULL; /* freed by cluster_forward_answer */
	snapshot_reply_check(sl->vol, sl->req.snap, resp, NULL);
}

/*
 * The reply of a create: the new snapshot as a copy's store describes it.
 * Through a node without an IN_SYNC copy a client's create has it read
 * back before (off the loop: snap_show_*, snapshot_reply_shown); else (no
 * request answered later, or the record changed since the request) its
 * SnapshotShow goes to the alive nodes holding one in turn, each bounded by
 * the peer timeout (cluster_snapshot_read, blocking: this runs on the loop
 * while the reply is built; it was one forward bounded by 120 s).  None
 * answers: the create still succeeds (the snapshot was cut), without the
 * description, its message saying why.
 */
static void snapshot_reply(struct tsr_cluster *c, const char *vol, const char *snap,
			   Tessera__Admin__Response *resp)
{
	Tessera__Admin__Request show = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotShow ss = TESSERA__ADMIN__SNAPSHOT_SHOW__INIT;

	ss.volume = (char *)vol;
	ss.name = (char *)snap;
	show.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_SHOW;
	show.snapshot_show = &ss;
	if (!cluster_snapshot_read(c, vol, &show, resp, false)) {
		snapshot_show_local(c, vol, snap, resp);
		return;
	}
	snapshot_reply_check(vol, snap, resp, NULL);
}

/* resp: a node's SnapshotShow answer for a create's reply, or failed (why
 * non-NULL: none answered, why).  Not the snapshot: without it, saying so. */
static void snapshot_reply_check(const char *vol, const char *snap,
				 Tessera__Admin__Response *resp, const char *why_none)
{
	char why[1024];

	if (why_none == NULL && resp->error == 0 && resp->n_snapshots == 1)
		return;
	snprintf(why, sizeof(why), "%s", why_none ? why_none : resp->message &&
		 resp->message[0] ? resp->message : strerror(-resp->error));
	for (size_t i = 0; i < resp->n_snapshots; i++)
		admin_snapshot_free_built(resp->snapshots[i]);
	free(resp->snapshots);
	resp->snapshots = NULL;
	resp->n_snapshots = 0;
	tsr_warn("cluster: snapshot %s@%s was cut, but its description could not be read: %s",
		 vol, snap, why);
	admin_fail(resp, 0, "snapshot '%s' of '%s' was cut, but its description could not be "
		   "read: %s (tessera snapshot show %s %s later)", snap, vol, why, vol, snap);
}

/* vol has a running coordinator here (main thread). */
static bool attached_here(struct tsr_cluster *c, const char *vol)
{
	struct attachment *a = cluster_find_attachment(c, vol);

	return a != NULL && a->layout != NULL;
}

void cluster_snapshot_change(struct tsr_cluster *c, const Tessera__Admin__Request *req,
			     Tessera__Admin__Response *resp)
{
	bool create = req->command_case == TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE;
	const char *vol = create ? req->snapshot_create->volume : req->snapshot_delete->volume;
	const char *snap = create ? req->snapshot_create->name : req->snapshot_delete->name;
	bool later = false;
	const char *replacing;
	char msg[1024];
	int ret, noted;

	/* a replace of vol through this node waits for another node: the
	 * snapshot list it gives its new copy was read before, and a snapshot
	 * cut now would miss that copy for good (review 16a, F2).  Attached
	 * here (the automatic replace's case, and an admin one's through the
	 * coordinator): the cut goes on, noted for the replace, which applies
	 * it to the new copy's list once told its outcome
	 * (cluster_replace_snap_done: a failed create is not given, a delete
	 * done takes the name off; review 17a F4, revB R4 R5).  Detached: a
	 * cut there goes to the copies vol/V lists, and the replace refuses to
	 * record when its snap_gen moved: refused, as before. */
	replacing = vol ? cluster_replace_waiting(c, vol) : NULL;
	noted = -EBUSY; /* detached: refused */
	if (replacing && attached_here(c, vol))
		noted = cluster_replace_note_snap(c, vol, create ? 'c' : 'd', snap);
	if (replacing && noted) {
		const char *why = noted == -E2BIG ? " (and as many snapshot operations as it "
				  "gives its new copy were made during its wait)" :
				  noted == -ENOMEM ? " (and tesserad is out of memory)" : "";

		admin_fail(resp, -EBUSY, "replace-replica of %s (its copy on %s) is running "
			   "here%s: retry the snapshot %s once it answers", vol, replacing, why,
			   create ? "create" : "delete");
		return;
	}
	ret = snap_change(c, vol, create ? TSR_SNAP_CREATE : TSR_SNAP_DELETE, snap, &later, NULL,
			  msg, sizeof(msg));
	if (later) /* the cut runs on the home worker: snap_later_reply answers */
		return;
	cluster_replace_snap_done(c, vol, create ? 'c' : 'd', snap, ret == 0);
	if (ret) {
		admin_fail(resp, ret, "%s", msg);
		return;
	}
	if (create)
		snapshot_reply(c, vol, snap, resp);
}

/* ---- list, show, diff --------------------------------------------------- */

/*
 * An ec volume's snapshot as a chunk copy's store describes it, turned into
 * the volume's: the size of the volume at the cut (the chunk volume holds
 * whole stripes); NBD URIs: the node where the volume is attached, whose
 * VOL@SNAP export decodes the image from the chunk copies (ec_snapread.c),
 * none when detached (a node's own store export would be its chunk column).
 * allocated/exclusive stay this copy's, as for a mirror.
 */
static void ec_snapshot_fix(const struct cluster_view *v, const Tessera__Cluster__VolumeRecord *rec,
			    Tessera__Admin__Snapshot *s)
{
	uint64_t width = (uint64_t)rec->ec_k * rec->stripe_unit;
	const char *attached = view_attached(v, rec->name, NULL);
	const Tessera__Cluster__NodeRecord *coord = attached ? view_node(v, attached) : NULL;
	char export[2 * 64 + 2];

	s->size = s->size == rec_copy_size(rec) ? rec->size : s->size / rec->stripe_unit * width;
	for (size_t i = 0; i < s->n_nbd_uris; i++)
		free(s->nbd_uris[i]);
	s->n_nbd_uris = 0;
	if (coord == NULL)
		return;
	snprintf(export, sizeof(export), "%s@%s", rec->name, s->name);
	for (size_t i = 0; i < coord->n_nbd_listeners; i++) {
		char **uris = realloc(s->nbd_uris, (s->n_nbd_uris + 2) * sizeof(char *));
		char *uri;

		if (uris == NULL)
			return;
		s->nbd_uris = uris;
		uri = cluster_nbd_uri(coord->nbd_listeners[i], export);
		if (uri)
			s->nbd_uris[s->n_nbd_uris++] = uri;
	}
}

/* Extents in one reply (as the admin layer's store diff): ~20 bytes each of
 * the 1 MiB frame. */
#define EC_DIFF_MAX_EXTENTS 50000

/* The page size: EC_DIFF_MAX_EXTENTS, or TSR_DIFF_PAGE_EXTENTS (1..50000)
 * for tests that page a small diff (as the admin layer's). */
static size_t ec_diff_page_extents(void)
{
	const char *env = getenv("TSR_DIFF_PAGE_EXTENTS");
	char *end;
	unsigned long v;

	if (env == NULL || env[0] == '\0')
		return EC_DIFF_MAX_EXTENTS;
	v = strtoul(env, &end, 10);
	if (*end != '\0' || v == 0 || v > EC_DIFF_MAX_EXTENTS)
		return EC_DIFF_MAX_EXTENTS;
	return v;
}

/*
 * Copy i's chunk-volume diff: our store, or the node's admin API
 * (SnapshotDiff with local_copy).  0 with ext/n; -errno with msg when the
 * copy cannot give it (store errors: its own sentence).
 */
static int ec_copy_diff(struct tsr_cluster *c, const struct cluster_view *v,
			const Tessera__Cluster__VolumeRecord *rec, size_t i, const char *from,
			const char *to, struct tsr_extent **ext, size_t *n, char *msg, size_t msg_len)
{
	const Tessera__Cluster__CopyRecord *cr = rec->copies[i];
	const Tessera__Cluster__NodeRecord *node;
	struct tsr_snap_info info;
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotDiff d = TESSERA__ADMIN__SNAPSHOT_DIFF__INIT;
	Tessera__Admin__Response *resp = NULL;
	int ret;

	*ext = NULL;
	*n = 0;
	if (cr->state != TESSERA__CLUSTER__COPY_STATE__IN_SYNC) {
		snprintf(msg, msg_len, "chunk copy on %s is not in sync", cr->node_id);
		return -EAGAIN;
	}
	if (strcmp(cr->node_id, c->node_id) == 0) {
		ret = tsr_store_snap_diff(c->o.store, rec->name, from, to[0] ? to : NULL, ext, n);
		if (ret == -ENOENT)
			/* the one missing: to when from exists */
			snprintf(msg, msg_len, "snapshot '%s' of '%s' not found (tessera snapshot "
				 "list %s)", tsr_store_snap_info(c->o.store, rec->name, from,
				 &info) == 0 ? to : from, rec->name, rec->name);
		else if (ret == -EINVAL)
			snprintf(msg, msg_len, "snapshot '%s@%s' is older than '%s@%s': give the "
				 "older one first (tessera snapshot list %s shows their order)",
				 rec->name, to, rec->name, from, rec->name);
		else if (ret)
			snprintf(msg, msg_len, "node %s (this node): diff of its chunk copy: %s",
				 c->node_id, strerror(-ret));
		return ret;
	}
	if (!view_alive(v, cr->node_id) || (node = view_node(v, cr->node_id)) == NULL) {
		snprintf(msg, msg_len, "node %s is not alive", cr->node_id);
		return -EHOSTUNREACH;
	}
	d.volume = rec->name;
	d.from = (char *)from;
	d.to = (char *)to;
	d.local_copy = true;
	d.paged = true;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DIFF;
	req.snapshot_diff = &d;
	/* page by page until diff_next is 0 */
	do {
		struct tsr_extent *grown;

		ret = cluster_call_node(c, node->address, &req, CLUSTER_COPY_TIMEOUT_MS, &resp);
		if (ret) {
			snprintf(msg, msg_len, "cannot reach node %s at %s: %s", node->id,
				 node->address, strerror(-ret));
			break;
		}
		ret = resp->error;
		if (ret) {
			snprintf(msg, msg_len, "%s", resp->message && resp->message[0] ?
				 resp->message : strerror(-ret));
		} else if (resp->diff_next != 0 && resp->diff_next <= d.start) {
			ret = -EPROTO;
			snprintf(msg, msg_len, "node %s: diff page from %" PRIu64 " does not advance "
				 "(next %" PRIu64 ")", node->id, d.start, resp->diff_next);
		} else if ((grown = realloc(*ext, (*n + resp->n_extents + 1) *
					    sizeof(**ext))) == NULL) {
			ret = -ENOMEM;
			snprintf(msg, msg_len, "out of memory in tesserad");
		} else {
			*ext = grown;
			for (size_t j = 0; j < resp->n_extents; j++)
				(*ext)[(*n)++] = (struct tsr_extent){
					.offset = resp->extents[j]->offset,
					.length = resp->extents[j]->length,
					.flags = resp->extents[j]->zero ?
						 TSR_EXTENT_HOLE | TSR_EXTENT_ZERO : 0,
				};
			d.start = resp->diff_next;
		}
		tessera__admin__response__free_unpacked(resp, NULL);
		resp = NULL;
	} while (ret == 0 && d.start != 0);
	if (ret) {
		free(*ext);
		*ext = NULL;
		*n = 0;
	}
	return ret;
}

/*
 * SnapshotDiff of an ec volume: every chunk copy's diff (metadata only, no
 * data read), mapped back to volume extents (tsr_ec_diff_map: a copy that
 * cannot answer is covered by the parity chunks' diffs, up to m of them).
 */
static void ec_snapshot_diff(struct tsr_cluster *c, const struct cluster_view *v,
			     const Tessera__Cluster__VolumeRecord *rec,
			     const Tessera__Admin__SnapshotDiff *d, Tessera__Admin__Response *resp)
{
	struct tsr_ec_chunk_diff diffs[TSR_LAYOUT_MAX_COPIES];
	struct tsr_extent *exts[TSR_LAYOUT_MAX_COPIES] = { 0 };
	struct tsr_extent *out = NULL;
	const char *to = d->to ? d->to : "";
	char msg[TSR_LAYOUT_MAX_COPIES][512], from[64];
	int rets[TSR_LAYOUT_MAX_COPIES];
	size_t n = rec->n_copies, count = 0, missing = 0, from_i = 0, end;
	size_t page = ec_diff_page_extents();
	int ret;

	/* "VOL@SNAP" with no from (as the admin layer accepts it) */
	snprintf(from, sizeof(from), "%s", d->from && d->from[0] ? d->from :
		 strchr(d->volume, '@') ? strchr(d->volume, '@') + 1 : "");
	if (n > TSR_LAYOUT_MAX_COPIES)
		n = TSR_LAYOUT_MAX_COPIES;
	for (size_t i = 0; i < n; i++) {
		size_t cnt = 0;

		rets[i] = ec_copy_diff(c, v, rec, i, from, to, &exts[i], &cnt, msg[i],
				       sizeof(msg[i]));
		diffs[i] = (struct tsr_ec_chunk_diff){ .ext = exts[i], .n = cnt,
						       .have = rets[i] == 0 };
		if (rets[i])
			missing++;
	}
	if (missing > rec->ec_m) {
		/* a store's answer (no such snapshot, wrong order, too many
		 * extents) is the user's error; else say what is missing */
		size_t pick = n, first = n;

		for (size_t i = 0; i < n && pick == n; i++)
			if (rets[i] == -ENOENT || rets[i] == -EINVAL || rets[i] == -E2BIG)
				pick = i;
		for (size_t i = 0; i < n && first == n; i++)
			if (rets[i])
				first = i;
		if (pick < n)
			admin_fail(resp, rets[pick], "%s", msg[pick]);
		else
			admin_fail(resp, -EHOSTUNREACH, "volume '%s' (ec %u+%u): only %zu of its %zu "
				   "chunk copies could give their diff, %u needed (%s); bring the "
				   "chunk nodes back and retry", rec->name, rec->ec_k, rec->ec_m,
				   n - missing, n, rec->ec_k, first < n ? msg[first] : "?");
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		if (rets[i])
			tsr_warn("snapshot diff %s: %s; its chunks' changes are taken from the "
				 "parity chunks (a superset)", rec->name, msg[i]);
	ret = tsr_ec_diff_map(rec->ec_k, rec->ec_m, rec->stripe_unit, rec->size, diffs, &out,
			      &count);
	if (ret) {
		admin_fail(resp, ret, "volume '%s': cannot map the chunk diffs: %s", rec->name,
			   strerror(-ret));
		goto out;
	}
	/* the page of the merged list: from the first extent ending after start */
	while (from_i < count && out[from_i].offset + out[from_i].length <= d->start)
		from_i++;
	end = count - from_i > page ? from_i + page : count;
	if (end < count && !d->paged) {
		admin_fail(resp, -E2BIG, "the diff of '%s' from '%s' to %s%s has %zu extents, more "
			   "than one reply holds (%zu), and this client does not ask for pages: use "
			   "a newer tessera, or diff a shorter span (a snapshot in between)",
			   rec->name, from, to[0] ? "" : "the head", to, count - from_i, page);
		goto out;
	}
	if (end < count)
		resp->diff_next = out[end].offset;
	resp->extents = calloc(end > from_i ? end - from_i : 1, sizeof(*resp->extents));
	if (resp->extents == NULL)
		goto nomem;
	for (size_t i = from_i; i < end; i++) {
		Tessera__Admin__Extent *e = malloc(sizeof(*e));

		if (e == NULL)
			goto nomem;
		tessera__admin__extent__init(e);
		e->offset = out[i].offset;
		e->length = out[i].length;
		e->zero = (out[i].flags & TSR_EXTENT_ZERO) != 0;
		resp->extents[resp->n_extents++] = e;
		resp->diff_bytes += out[i].length;
	}
	goto out;
nomem:
	admin_fail(resp, -ENOMEM, "out of memory in tesserad");
out:
	free(out);
	for (size_t i = 0; i < n; i++)
		free(exts[i]);
}

/* SnapshotList/Show/Diff of an ec volume from our IN_SYNC chunk copy. */
static void ec_snapshot_read_local(struct tsr_cluster *c, const struct cluster_view *v,
				   const Tessera__Cluster__VolumeRecord *rec,
				   const Tessera__Admin__Request *req, Tessera__Admin__Response *resp)
{
	struct tsr_snap_info *list = NULL, info;
	size_t n = 0;
	int ret;

	switch (req->command_case) {
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST:
		ret = req->snapshot_list->with_deleting ?
			      tsr_store_snap_list_all(c->o.store, rec->name, &list, &n) :
			      tsr_store_snap_list(c->o.store, rec->name, &list, &n);
		if (ret) {
			admin_fail(resp, ret, "cannot list the snapshots of '%s': %s", rec->name,
				   strerror(-ret));
			return;
		}
		resp->snapshots = calloc(n + 1, sizeof(*resp->snapshots));
		for (size_t i = 0; resp->snapshots != NULL && i < n; i++) {
			Tessera__Admin__Snapshot *sn = build_snapshot(c, rec->name, &list[i]);

			if (sn == NULL)
				break;
			ec_snapshot_fix(v, rec, sn);
			resp->snapshots[resp->n_snapshots++] = sn;
		}
		free(list);
		if (resp->snapshots == NULL || resp->n_snapshots < n)
			admin_fail(resp, -ENOMEM, "out of memory in tesserad");
		return;
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_SHOW:
		ret = tsr_store_snap_info(c->o.store, rec->name, req->snapshot_show->name, &info);
		if (ret) {
			admin_fail(resp, ret, ret == -ENOENT ?
				   "snapshot '%s' of '%s' not found (tessera snapshot list %s)" :
				   "snapshot '%s' of '%s': cannot read it", req->snapshot_show->name,
				   rec->name, rec->name);
			return;
		}
		resp->snapshots = calloc(1, sizeof(*resp->snapshots));
		if (resp->snapshots == NULL ||
		    (resp->snapshots[0] = build_snapshot(c, rec->name, &info)) == NULL) {
			admin_fail(resp, -ENOMEM, "out of memory in tesserad");
			return;
		}
		ec_snapshot_fix(v, rec, resp->snapshots[0]);
		resp->n_snapshots = 1;
		return;
	default:
		ec_snapshot_diff(c, v, rec, req->snapshot_diff, resp);
		return;
	}
}

/*
 * SnapshotList/Show/Diff through a node without an IN_SYNC copy of the
 * volume (and a create's reply there, snapshot_reply) used to go to the
 * record's first alive IN_SYNC copy's node only, bounded by
 * CLUSTER_FORWARD_TIMEOUT_MS (120 s): for a create's reply blocking on this
 * node's main loop, for list/show/diff with the reply later (the loop free,
 * but the client waited 120 s on a frozen node although others could
 * answer).  Now each alive node holding an IN_SYNC copy is asked in turn
 * (the record's order; the node that forwarded the request we handle
 * skipped, as before), each bounded by snap_read_timeout_ms: the peer
 * timeout for a list or a show, CLUSTER_COPY_TIMEOUT_MS (30 s) for a diff
 * (a page of a large volume's diff can take its answering node seconds).
 * A node that cannot be reached or does not answer in time is passed over
 * for the next; the first answer (an error included: "not found" is the
 * volume's) is the reply.  None answers: -EHOSTUNREACH naming each node and
 * its failure ("n2: no answer in 2000 ms").  For a client's request
 * (answer_later) the calls run without blocking the loop (admin_async_call,
 * the reply given later, snap_read_*); else (a create's reply, built on the
 * loop) blocking, each call bounded the same.
 * Test hook TSR_TEST_SNAP_READ_UNBOUNDED=1: the old single forward.
 */
struct snap_read {
	struct tsr_cluster *c;
	struct insync_peer nodes[TSR_LAYOUT_MAX_COPIES]; /* to ask, in this order */
	size_t n_nodes, next;            /* next: the one asked now, or to ask */
	int timeout_ms;                  /* each call's */
	bool origin_skipped;             /* the forwarding node holds one too */
	char volume[64];
	char failed[768];                /* "n2: no answer in 2000 ms; ..." */
	Tessera__Admin__Request *req;    /* our copy (via_node set), for each call */
	struct admin_later *later;       /* our reply */
	struct admin_async *call;        /* until its callback fired */
	int status;                      /* for snap_read_reply: 0 with answer, or -errno */
	Tessera__Admin__Response *answer; /* the node's */
	struct snap_read *next_read;     /* g_snap_reads, while call runs */
	void (*fin)(struct snap_read *sr); /* set: called at the end instead of later */
	void *arg;                       /* fin's */
};

static struct snap_read *g_snap_reads; /* main thread: reads asked, answered later */

static int snap_read_timeout_ms(const struct tsr_cluster *c, const Tessera__Admin__Request *req)
{
	if (req->command_case == TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DIFF)
		return CLUSTER_COPY_TIMEOUT_MS;
	return cluster_peer_call_ms(c);
}

static void snap_read_free(struct snap_read *sr)
{
	if (sr->req)
		tessera__admin__request__free_unpacked(sr->req, NULL);
	if (sr->answer)
		tessera__admin__response__free_unpacked(sr->answer, NULL);
	free(sr);
}

/* sr->req: a copy of req naming us as via_node when it names nobody (as
 * cluster_forward: the node asked must not call back here).  0 or -ENOMEM. */
static int snap_read_copy_req(struct tsr_cluster *c, struct snap_read *sr,
			      const Tessera__Admin__Request *req)
{
	Tessera__Admin__Request fwd = *req;
	uint8_t *buf;
	size_t len;

	if (fwd.via_node == NULL || fwd.via_node[0] == '\0')
		fwd.via_node = c->node_id;
	len = tessera__admin__request__get_packed_size(&fwd);
	buf = malloc(len ? len : 1);
	if (buf == NULL)
		return -ENOMEM;
	tessera__admin__request__pack(&fwd, buf);
	sr->req = tessera__admin__request__unpack(NULL, len, buf);
	free(buf);
	return sr->req ? 0 : -ENOMEM;
}

/* Node sr->nodes[sr->next] failed (status: -errno of the call): noted. */
static void snap_read_failed(struct snap_read *sr, int status)
{
	size_t len = strlen(sr->failed);
	const char *id = sr->nodes[sr->next].id;

	if (status == -ETIMEDOUT)
		snprintf(sr->failed + len, sizeof(sr->failed) - len, "%s%s: no answer in %d ms",
			 len ? "; " : "", id, sr->timeout_ms);
	else
		snprintf(sr->failed + len, sizeof(sr->failed) - len, "%s%s: %s", len ? "; " : "",
			 id, strerror(-status));
	tsr_warn("cluster: volume %s: node %s did not answer a snapshot %s (%s)%s", sr->volume,
		 id, sr->req->command_case == TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST ?
		 "list" : sr->req->command_case == TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_SHOW ?
		 "show" : "diff", strerror(-status), sr->next + 1 < sr->n_nodes ?
		 ": asking the next node holding an in-sync copy" : "");
}

/* Every node asked failed (or none could be): resp says so. */
static void snap_read_none(struct snap_read *sr, Tessera__Admin__Response *resp)
{
	admin_fail(resp, -EHOSTUNREACH, "volume '%s': no node holding an in-sync copy answered "
		   "(%s)%s", sr->volume, sr->failed, sr->origin_skipped ?
		   "; the node that forwarded this request holds one too" : "");
}

static void snap_read_unlist(struct snap_read *sr)
{
	for (struct snap_read **pp = &g_snap_reads; *pp; pp = &(*pp)->next_read)
		if (*pp == sr) {
			*pp = sr->next_read;
			break;
		}
}

static void snap_read_reply(struct tsr_admin_server *srv, void *arg,
			    Tessera__Admin__Response *resp)
{
	struct snap_read *sr = arg;

	(void)srv;
	if (sr->status == 0) {
		cluster_forward_answer(sr->nodes[sr->next].id, sr->nodes[sr->next].address, 0,
				       sr->answer, resp);
		sr->answer = NULL; /* freed by cluster_forward_answer */
	} else if (sr->status == -ECANCELED) {
		admin_fail(resp, -ESHUTDOWN, "volume '%s': tesserad is shutting down while it "
			   "waits for node %s's answer (ask another node)", sr->volume,
			   sr->nodes[sr->next].id);
	} else {
		snap_read_none(sr, resp);
	}
	snap_read_free(sr);
}

static void snap_read_done(void *cb_arg, int status, Tessera__Admin__Response *r);

/* Ask sr->nodes[sr->next], then the next ones until a call starts: 0 (its
 * callback fires), or -EHOSTUNREACH when none could be asked. */
static int snap_read_ask(struct snap_read *sr)
{
	for (; sr->next < sr->n_nodes; sr->next++) {
		int ret = admin_async_call(sr->c->o.loop, sr->nodes[sr->next].address,
					   sr->c->token, sr->req, sr->timeout_ms, snap_read_done,
					   sr, &sr->call);

		if (ret == 0) {
			sr->next_read = g_snap_reads;
			g_snap_reads = sr;
			return 0;
		}
		snap_read_failed(sr, ret);
	}
	return -EHOSTUNREACH;
}

/* sr answered (status, answer): snap_read_reply (later) or sr->fin frees it. */
static void snap_read_end(struct snap_read *sr)
{
	if (sr->fin)
		sr->fin(sr);
	else
		admin_later_done(sr->later);
}

static void snap_read_done(void *cb_arg, int status, Tessera__Admin__Response *r)
{
	struct snap_read *sr = cb_arg;

	sr->call = NULL;
	snap_read_unlist(sr);
	if (status == 0 || status == -ECANCELED) {
		sr->status = status;
		sr->answer = r;
		snap_read_end(sr);
		return;
	}
	snap_read_failed(sr, status);
	sr->next++;
	if (snap_read_ask(sr) == 0)
		return;
	sr->status = -EHOSTUNREACH;
	snap_read_end(sr);
}

/* tsr_cluster_stop (cluster_forward_stop): each read of c waiting for a node
 * answers now (-ESHUTDOWN). */
void cluster_snap_read_stop(struct tsr_cluster *c)
{
	for (struct snap_read *sr = g_snap_reads; sr;) {
		if (sr->c != c) {
			sr = sr->next_read;
			continue;
		}
		admin_async_cancel(sr->call); /* its callback unlists it */
		sr = g_snap_reads;
	}
}

/* sr's nodes asked in turn, blocking, each bounded: resp the first answer. */
static void snap_read_blocking(struct snap_read *sr, Tessera__Admin__Response *resp)
{
	for (; sr->next < sr->n_nodes; sr->next++) {
		Tessera__Admin__Response *r = NULL;
		int st = cluster_call_node(sr->c, sr->nodes[sr->next].address, sr->req,
					   sr->timeout_ms, &r);

		if (st == 0) {
			cluster_forward_answer(sr->nodes[sr->next].id, sr->nodes[sr->next].address,
					       0, r, resp);
			return;
		}
		snap_read_failed(sr, st);
	}
	snap_read_none(sr, resp);
}

/* The old way (TSR_TEST_SNAP_READ_UNBOUNDED=1, tests' control only): the
 * record's first alive IN_SYNC copy's node, 120 s. */
static bool snap_read_unbounded(void)
{
	return tsr_test_env_on("TSR_TEST_SNAP_READ_UNBOUNDED");
}

bool cluster_snapshot_read(struct tsr_cluster *c, const char *volume,
			   const Tessera__Admin__Request *req, Tessera__Admin__Response *resp,
			   bool answer_later)
{
	Tessera__Cluster__VolumeRecord *rec = NULL;
	struct tsr_admin_server *srv;
	struct snap_read *sr = NULL;
	struct cluster_view v;
	char msg[1024];
	uint64_t rev;
	bool handled = true, origin_skipped = false;
	int ret;

	/* a chunk copy's own diff, asked by the node computing an ec diff */
	if (req->command_case == TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DIFF &&
	    req->snapshot_diff->local_copy)
		return false;
	ret = load_volume(c, volume, &v, &rec, &rev, msg, sizeof(msg));
	if (ret) {
		admin_fail(resp, ret, "%s", msg);
		return true;
	}
	if (insync_ours(c, rec)) {
		if (rec->ec_k) /* a chunk copy: its answer needs the volume's geometry */
			ec_snapshot_read_local(c, &v, rec, req, resp);
		else
			handled = false; /* our store answers */
		goto out;
	}
	sr = calloc(1, sizeof(*sr));
	if (sr == NULL) {
		admin_fail(resp, -ENOMEM, "out of memory in tesserad");
		goto out;
	}
	sr->n_nodes = insync_peers(c, &v, rec, sr->nodes, &origin_skipped);
	if (sr->n_nodes > 0 && snap_read_unbounded()) { /* tests' control only: the old call */
		if (answer_later)
			cluster_forward_reply(c, sr->nodes[0].id, sr->nodes[0].address, req, resp);
		else
			cluster_forward(c, sr->nodes[0].id, sr->nodes[0].address, req, resp);
		goto out;
	}
	if (sr->n_nodes == 0) {
		if (origin_skipped)
			admin_fail(resp, -EHOSTUNREACH, "volume '%s': the only alive node "
				   "holding an in-sync copy is %s, which is waiting for this "
				   "answer: ask it there (tessera --cluster ADDRESS-OF-%s ...)",
				   volume, c->origin, c->origin);
		else
			admin_fail(resp, -EHOSTUNREACH, "volume '%s': no node holding an "
				   "in-sync copy is alive (tessera volume show %s lists its "
				   "copies)", volume, volume);
		goto out;
	}
	sr->c = c;
	sr->origin_skipped = origin_skipped;
	sr->timeout_ms = snap_read_timeout_ms(c, req);
	snprintf(sr->volume, sizeof(sr->volume), "%s", volume);
	if (snap_read_copy_req(c, sr, req)) {
		admin_fail(resp, -ENOMEM, "out of memory in tesserad");
		goto out;
	}
	/* a client's request: the loop goes on while the nodes answer */
	srv = answer_later ? admin_handling_server() : NULL;
	if (srv && (sr->later = admin_later_begin(srv, snap_read_reply, sr)) != NULL) {
		if (snap_read_ask(sr) == 0) {
			sr = NULL; /* snap_read_reply's */
			goto out;
		}
		admin_later_cancel(sr->later);
		snap_read_none(sr, resp);
		goto out;
	}
	snap_read_blocking(sr, resp);
out:
	if (sr)
		snap_read_free(sr);
	tessera__cluster__volume_record__free_unpacked(rec, NULL);
	view_free(&v);
	return handled;
}

/* ---- a create's reply: its description read back off the loop ---------- */

/*
 * A client's create through a node without an IN_SYNC copy (sl->show_remote,
 * decided from the record at the request) answers later; once its cut is
 * done (on the home worker, a snap-cut thread or the loop) snap_later_finish
 * queues it (snap_show_queue) and wakes the loop (c->snap_show_async), where
 * the new snapshot's SnapshotShow goes to the alive nodes holding an IN_SYNC
 * copy in turn (snap_read, each bounded by the peer timeout, the node that
 * forwarded the create skipped) without blocking the loop; then the reply is
 * built (snap_later_reply) from that answer, or, when none answered, says
 * the snapshot was cut but could not be described (the create succeeds).
 * It was a blocking forward bounded by 120 s on the loop (session 15's note).
 * The record changed meanwhile so that we hold an IN_SYNC copy, or cannot be
 * read: snapshot_reply as before (our store, or the blocking bounded read).
 */

static void snap_later_finish(struct snap_later *sl)
{
	struct tsr_cluster *c;

	pthread_mutex_lock(&pending_lock);
	c = sl->c;
	if (c != NULL && sl->show_remote && sl->status == 0 && c->snap_show_started) {
		sl->show_next = snap_show_queue;
		snap_show_queue = sl;
		/* under the lock: cluster_snapshot_stop clears sl->c first */
		ev_async_send(c->o.loop, &c->snap_show_async);
		pthread_mutex_unlock(&pending_lock);
		return;
	}
	pthread_mutex_unlock(&pending_lock);
	admin_later_done(sl->later);
}

/* The show of sl's snapshot answered, or none did (loop). */
static void snap_show_fin(struct snap_read *sr)
{
	struct snap_later *sl = sr->arg;

	sl->show_read = true;
	if (sr->status == 0) {
		snprintf(sl->shown_id, sizeof(sl->shown_id), "%s", sr->nodes[sr->next].id);
		snprintf(sl->shown_address, sizeof(sl->shown_address), "%s",
			 sr->nodes[sr->next].address);
		sl->shown = sr->answer;
		sr->answer = NULL;
	} else if (sr->status == -ECANCELED) {
		snprintf(sl->show_msg, sizeof(sl->show_msg), "tesserad is shutting down");
	} else {
		snprintf(sl->show_msg, sizeof(sl->show_msg), "no node holding an in-sync copy "
			 "answered (%s)", sr->failed);
	}
	snap_read_free(sr);
	admin_later_done(sl->later);
}

/* On the loop: ask for sl's new snapshot; its reply once answered. */
static void snap_show_start(struct tsr_cluster *c, struct snap_later *sl)
{
	Tessera__Admin__Request show = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotShow ss = TESSERA__ADMIN__SNAPSHOT_SHOW__INIT;
	Tessera__Cluster__VolumeRecord *rec = NULL;
	const Tessera__Cluster__NodeRecord *node;
	struct snap_read *sr = NULL;
	struct cluster_view v;
	char msg[512];
	uint64_t rev;
	bool origin_skipped = false;

	snap_reply_test_hold();
	if (load_volume(c, sl->vol, &v, &rec, &rev, msg, sizeof(msg)))
		goto reply; /* snapshot_reply says why */
	if (holds_in_sync(c, rec) || (sr = calloc(1, sizeof(*sr))) == NULL)
		goto out;
	for (size_t i = 0; i < rec->n_copies && sr->n_nodes < TSR_LAYOUT_MAX_COPIES; i++) {
		const Tessera__Cluster__CopyRecord *cr = rec->copies[i];

		if (cr->state != TESSERA__CLUSTER__COPY_STATE__IN_SYNC ||
		    !view_alive(&v, cr->node_id) || (node = view_node(&v, cr->node_id)) == NULL)
			continue;
		if (strcmp(cr->node_id, sl->origin) == 0) { /* it waits for our answer */
			origin_skipped = true;
			continue;
		}
		snprintf(sr->nodes[sr->n_nodes].id, sizeof(sr->nodes[0].id), "%s", node->id);
		snprintf(sr->nodes[sr->n_nodes].address, sizeof(sr->nodes[0].address), "%s",
			 node->address);
		sr->n_nodes++;
	}
	ss.volume = sl->vol;
	ss.name = sl->req.snap;
	show.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_SHOW;
	show.snapshot_show = &ss;
	show.via_node = sl->origin[0] ? sl->origin : NULL;
	sr->c = c;
	sr->timeout_ms = snap_read_timeout_ms(c, &show);
	snprintf(sr->volume, sizeof(sr->volume), "%s", sl->vol);
	if (sr->n_nodes == 0) {
		/* none to ask: the reply without the description (review 16c N2:
		 * snapshot_reply's blocking read runs where c->origin is unset,
		 * so it would ask the origin, which waits for this answer) */
		if (origin_skipped)
			snprintf(sl->show_msg, sizeof(sl->show_msg), "none to ask but %s, which "
				 "waits for this answer", sl->origin);
		else
			snprintf(sl->show_msg, sizeof(sl->show_msg), "no node holding an in-sync "
				 "copy is alive");
		sl->show_read = true;
		snap_read_free(sr);
		sr = NULL;
		goto out;
	}
	if (snap_read_copy_req(c, sr, &show)) {
		snap_read_free(sr); /* snapshot_reply says why */
		sr = NULL;
		goto out;
	}
	sr->fin = snap_show_fin;
	sr->arg = sl;
	if (snap_read_ask(sr) == 0) {
		sr = NULL; /* snap_show_fin's */
		goto done;
	}
	sr->status = -EHOSTUNREACH;
	snap_show_fin(sr);
	sr = NULL;
	goto done;
out:
	tessera__cluster__volume_record__free_unpacked(rec, NULL);
	view_free(&v);
reply:
	admin_later_done(sl->later);
	return;
done:
	tessera__cluster__volume_record__free_unpacked(rec, NULL);
	view_free(&v);
}

static void snap_show_async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct tsr_cluster *c = w->data;
	struct snap_later *sl;

	(void)loop;
	(void)revents;
	do {
		pthread_mutex_lock(&pending_lock);
		sl = NULL;
		for (struct snap_later **pp = &snap_show_queue; *pp; pp = &(*pp)->show_next)
			if ((*pp)->c == c) {
				sl = *pp;
				*pp = sl->show_next;
				break;
			}
		pthread_mutex_unlock(&pending_lock);
		if (sl)
			snap_show_start(c, sl);
	} while (sl);
}

void cluster_snapshot_start(struct tsr_cluster *c)
{
	ev_async_init(&c->snap_show_async, snap_show_async_cb);
	c->snap_show_async.data = c;
	ev_async_start(c->o.loop, &c->snap_show_async);
	c->snap_show_started = true;
}

/* ---- rollback ----------------------------------------------------------- */

/*
 * A detached volume's rollback is fenced against an attach (session 15):
 *  1. the record's epoch at the start is the fence (an attach whose key came
 *     after the view said "detached" but which already wrote vol/v is
 *     refused: its epoch is past the view's revision);
 *  2. vol/v is marked clean_detach = false (rollback_mark, only while its
 *     epoch is still the fence) before any copy is touched: an attach from
 *     then on finds the copies "not detached cleanly" and converges them
 *     (compares every block, mirror.c / ec.c converge) before it serves,
 *     whichever copies the rollback reached first;
 *  3. every copy's rollback carries the fence (ours: admin_rollback_fenced;
 *     the other nodes: VolumeRollback.epoch/epoch_set): a copy an attach
 *     reached refuses (-ESTALE) rather than be rewritten after it served;
 *  4. done on every copy: the mark is cleared (clean_detach = true while the
 *     epoch is still the fence: every head is now the snapshot's image).
 *     Failed anywhere: the mark stays (an attach converges the copies, a
 *     rollback run again finishes the job: an unclean record does not stop
 *     a rollback, which makes every copy's head the snapshot's image).
 * A rollback of the volume to another snapshot running through this node
 * (rollback_running_other: its later reply pending) refuses the request
 * (-EBUSY, nothing done): each copy's store would run the two in its own
 * order and the copies could end at different snapshots, both answered 0.
 * (Through two different nodes that is still possible, as it always was:
 * the record cannot tell a rollback running from one cut short, which must
 * not block a rollback to another snapshot.)  The same snapshot again is
 * accepted (idempotent).
 * A client's rollback does not hold this node's loop (rollback_later_start):
 * after the mark (a metadata write on the loop, as every command's) the
 * other copies' nodes are asked with admin_async_call, our store's rollback
 * runs in a thread of its own ("snap-rollback", snap_local_start, counted in
 * local_running: cluster_snapshot_stop waits for it), and the reply, the
 * mark's clearing included (rollback_finish), is built on the loop once the
 * last copy answered.  No later reply possible, or no thread: as before
 * (copy_op_all: the other copies from threads, ours here, all joined).
 * TSR_TEST_SNAP_LOCAL_CUT_INLINE set: the blocking path, as before (the
 * tests' A/B, as for the detached cut).
 * TSR_TEST_ROLLBACK_UNFENCED set (tests' A/B): none of it, as before.
 */
/* The mark's forms (VolumeRecord.rollback_snapshot; no snapshot name holds
 * a '/'): "SNAP" a rollback to SNAP runs (or its handling node died before
 * its end), "SNAP/failed" it ended and answered a failure (nothing of it
 * runs any more), "" none. */
#define ROLLBACK_MARK_ENDED "/failed"

/* The mark m names a rollback to snap (running or ended). */
static bool mark_names(const char *m, const char *snap)
{
	size_t len = strlen(snap);

	return strncmp(m, snap, len) == 0 &&
	       (m[len] == '\0' || strcmp(m + len, ROLLBACK_MARK_ENDED) == 0);
}

/* The mark m names a rollback that may still run. */
static bool mark_running(const char *m)
{
	return m[0] != '\0' && strchr(m, '/') == NULL;
}

enum rollback_mark_op {
	RB_MARK_START,                 /* "SNAP", clean_detach = false */
	RB_MARK_DONE,                  /* every copy rolled back: cleared (clean_detach =
					* true) while it names SNAP, unless keep; else a
					* mark stays (kept): another rollback's, or
					* "SNAP/failed" */
	RB_MARK_FAILED,                /* answered a failure: "SNAP/failed", unless
					* another rollback's running mark is there */
};

struct rollback_mark {
	uint64_t epoch;                /* the fence: the record's epoch must still be it */
	bool any_epoch;                /* write it whatever the epoch */
	enum rollback_mark_op op;
	bool keep;                     /* DONE: not cleared (our START replaced another
					* snapshot's running mark) */
	const char *snap;
	bool unchecked;                /* TSR_TEST_ROLLBACK_MARK_UNCHECKED (tests' A/B):
					* DONE clears whatever the mark names, as before */
	bool kept;                     /* out, DONE: not cleared */
	char prev[80];                 /* out: the mark found ("": none) */
};

static int rollback_mark_mutate(Tessera__Cluster__VolumeRecord *rec, void *arg)
{
	struct rollback_mark *mk = arg;
	const char *cur = rec->rollback_snapshot;
	bool clean = false, own = mark_names(cur, mk->snap);
	char *mark;

	if (!mk->any_epoch && rec->epoch != mk->epoch)
		return -ESTALE; /* attached since: leave it to that attachment */
	snprintf(mk->prev, sizeof(mk->prev), "%s", cur);
	mk->kept = false;
	switch (mk->op) {
	case RB_MARK_START:
		break;
	case RB_MARK_DONE:
		/* no mark left and none found at our start: another rollback to
		 * our snapshot (a retry) ended first and cleared it (a mark names
		 * one snapshot and only a rollback to it clears it), so every
		 * copy is at our snapshot: clean (review 15c F1) */
		if (mk->unchecked || (own && !mk->keep) || (cur[0] == '\0' && !mk->keep)) {
			clean = true;
			break;
		}
		/* another rollback of the volume marked it since ours (through
		 * another node, to another snapshot), or ours replaced its
		 * running mark: the copies may be at different snapshots.  A
		 * mark stays: the other's, or ours, ended (also when another
		 * rollback cleared it meanwhile: ours rolled copies back after
		 * that clearing) */
		mk->kept = true;
		if (cur[0] != '\0' && !own)
			return 1; /* nothing to write */
		break;
	case RB_MARK_FAILED:
		if (mark_running(cur) && !own)
			return 1; /* another rollback runs: its mark stays */
		break;
	}
	if (clean)
		mark = strdup("");
	else if (asprintf(&mark, "%s%s", mk->snap, mk->op == RB_MARK_START ? "" :
			  ROLLBACK_MARK_ENDED) < 0)
		mark = NULL;
	if (mark == NULL)
		return -ENOMEM;
	if (rec->rollback_snapshot != protobuf_c_empty_string)
		free(rec->rollback_snapshot);
	rec->rollback_snapshot = mark;
	rec->clean_detach = clean;
	return 0;
}

/* Write the mark (see struct rollback_mark); kept, prev: its outs (NULL:
 * not wanted; prev has 80 bytes). */
static int rollback_mark(struct tsr_cluster *c, const char *vol, const char *snap,
			 uint64_t epoch, enum rollback_mark_op op, bool any_epoch, bool keep,
			 bool *kept, char *prev)
{
	struct rollback_mark mk = { .epoch = epoch, .any_epoch = any_epoch, .op = op,
				    .keep = keep, .snap = snap,
				    .unchecked = tsr_test_env_on("TSR_TEST_ROLLBACK_MARK_UNCHECKED") };
	int ret = rec_volume_update(c->meta, vol, rollback_mark_mutate, &mk);

	if (kept)
		*kept = ret == 0 && mk.kept;
	if (prev)
		memcpy(prev, mk.prev, sizeof(mk.prev));
	return ret;
}

/* A later rollback of vol to another snapshot than snap runs through this
 * node (the pending list): its snapshot in other. */
static bool rollback_running_other(struct tsr_cluster *c, const char *vol, const char *snap,
				   char *other, size_t other_len)
{
	bool found = false;

	pthread_mutex_lock(&pending_lock);
	for (struct snap_later *sl = pending; sl && !found; sl = sl->next) {
		if (!sl->rollback || sl->c != c || strcmp(sl->vol, vol) != 0 ||
		    strcmp(sl->req.snap, snap) == 0)
			continue;
		snprintf(other, other_len, "%s", sl->req.snap);
		found = true;
	}
	pthread_mutex_unlock(&pending_lock);
	return found;
}

/*
 * Every copy's rollback answered (rets[i], node ids[i]; msg: the first
 * failure's): the mark cleared when all did it (fenced: fence is not
 * SNAP_NO_EPOCH), written again when an attach cut it short, and the reply.
 * c NULL: the cluster stopped meanwhile (the mark stays: run it again).
 * On the loop: the blocking path's end, or the later reply's.
 */
static void rollback_finish(struct tsr_cluster *c, const char *vol, const char *snap,
			    uint64_t fence, bool other, size_t n, const int *rets,
			    const char *const *ids, const char *msg, Tessera__Admin__Response *resp)
{
	bool fenced = fence != SNAP_NO_EPOCH, kept = false;
	size_t done = 0, stale = SIZE_MAX, first = SIZE_MAX;
	char left[80] = "";
	int ret;

	for (size_t i = 0; i < n; i++) {
		done += rets[i] == 0;
		if (rets[i] && first == SIZE_MAX)
			first = i;
		if (rets[i] == -ESTALE && stale == SIZE_MAX)
			stale = i;
	}
	if (c == NULL) {
		admin_fail(resp, -ESHUTDOWN, "volume '%s' was rolled back on %zu of %zu copies, but "
			   "tesserad is shutting down: run the rollback again through another node "
			   "(tessera volume rollback %s %s) before attaching it", vol, done, n, vol,
			   snap);
		return;
	}
	if (first != SIZE_MAX && fenced && stale != SIZE_MAX) {
		/* an attach reached a copy: it converged the copies it opened
		 * (the mark); a copy rolled back around it may differ from them
		 * once it detached: the next attach converges again */
		/* the mark only while the record is still ours: an attach that
		 * got in owns its record (it could only get in after another
		 * rollback to the same snapshot cleared the mark, the copies then
		 * agree), and a mark written there would refuse its next attach
		 * until a rollback that throws away what it wrote (review 15c F2) */
		int mret = rollback_mark(c, vol, snap, fence, RB_MARK_FAILED, false, false, NULL,
					 NULL);

		if (mret && mret != -ESTALE)
			tsr_warn("cluster: volume %s: cannot mark it for converging after a rollback "
				 "an attach cut short: %s", vol, strerror(-mret));
		if (mret == -ESTALE) {
			admin_fail(resp, -ESTALE, "cannot roll back '%s': it was attached meanwhile "
				   "(node %s's copy has an epoch past %llu, the volume's when this "
				   "began), after another rollback of it to '%s' ended: what that "
				   "attachment writes stands; roll it back again only if you still "
				   "want the snapshot's data", vol, ids[stale],
				   (unsigned long long)fence, snap);
			return;
		}
		admin_fail(resp, -ESTALE, "cannot roll back '%s': it was attached meanwhile (node "
			   "%s's copy has an epoch past %llu, the volume's when this began); %zu of "
			   "%zu copies were rolled back: detach it and run the rollback again before "
			   "using its data (until then it may be partly rolled back)", vol,
			   ids[stale], (unsigned long long)fence, done, n);
		return;
	}
	if (first != SIZE_MAX) {
		/* the store's rollback is idempotent, and a copy left half-way refuses
		 * to open: running it again finishes the job on every copy (the
		 * mark stays: the attach is refused until then; made again when
		 * another rollback cleared it meanwhile) */
		if (fenced) {
			ret = rollback_mark(c, vol, snap, fence, RB_MARK_FAILED, false, false, NULL,
					    NULL);
			if (ret && ret != -ESTALE)
				tsr_warn("cluster: volume %s: a rollback failed, and its mark cannot "
					 "be checked: %s", vol, strerror(-ret));
		}
		admin_fail(resp, rets[first], "%s%s", msg, done ? "; other copies are rolled back "
			   "already: run the rollback again (it is idempotent) before attaching "
			   "the volume" : "");
		return;
	}
	if (fenced) {
		/* every head is the snapshot's image now: clean again, unless an
		 * attach came since (its own record then), or another rollback
		 * of the volume ran (through another node: its mark found at
		 * our start, other, or at this end): the copies may be at
		 * different snapshots, the mark stays */
		ret = rollback_mark(c, vol, snap, fence, RB_MARK_DONE, false, other, &kept, left);
		if (ret && ret != -ESTALE)
			tsr_warn("cluster: volume %s: rolled back, but cannot clear its rollback "
				 "mark: %s (its next attach is refused until the rollback is run "
				 "again: tessera volume rollback %s %s)", vol, strerror(-ret), vol,
				 snap);
		if (kept) {
			const char *mark = left[0] ? left : snap;
			int len = (int)strcspn(mark, "/"); /* its snapshot */

			tsr_warn("cluster: volume %s rolled back to %s on %zu copies, but another "
				 "rollback of it %s: the mark (rollback to '%.*s') kept", vol, snap, n,
				 other ? "was found at the start (running elsewhere or cut short)" :
				 "ran meanwhile", len, mark);
			admin_fail(resp, -EBUSY, "volume '%s' was rolled back to '%s' on its %zu "
				   "copies, but %s: its copies may be at different snapshots, so "
				   "it stays marked (an attach is refused): once no other rollback "
				   "of it runs, roll it back once more (tessera volume rollback %s "
				   "%.*s), then attach", vol, snap, n, other ? "it found an unfinished "
				   "rollback to another snapshot (running through another node, or "
				   "cut short)" : "another rollback of it ran meanwhile (through "
				   "another node)", vol, len, mark);
			return;
		}
	}
	tsr_info("cluster: volume %s rolled back to snapshot %s on %zu copies", vol, snap, n);
	cluster_volume_list(c, vol, resp);
}

/* Back on the loop: every copy of a later rollback answered (snap_later_reply). */
static void rollback_later_reply(struct tsr_cluster *c, struct snap_later *sl,
				 Tessera__Admin__Response *resp)
{
	int rets[TSR_LAYOUT_MAX_COPIES];
	const char *ids[TSR_LAYOUT_MAX_COPIES];
	const char *msg = "";

	for (size_t i = 0; i < sl->n_slots; i++) {
		rets[i] = sl->slots[i].ret;
		ids[i] = sl->slots[i].node_id;
		if (rets[i] && msg[0] == '\0')
			msg = sl->slots[i].msg;
	}
	rollback_finish(c, sl->vol, sl->req.snap, sl->epoch, sl->rollback_other, sl->n_slots, rets,
			ids, msg, resp);
	tsr_info("cluster: volume rollback '%s' to '%s': replied after %.1f ms%s", sl->vol,
		 sl->req.snap, (double)(tsr_mono_ns() - sl->started_ns) / 1e6,
		 resp->error ? " (failed)" : "");
}

/*
 * A client's rollback: every copy's node asked at once (admin_async_call,
 * ours in a thread: snap_local_start), answered when the last one did
 * (rollback_later_reply, on the loop): this node's loop serves other
 * requests meanwhile.  True when the reply comes later; false (not inside
 * an admin request, out of memory, or TSR_TEST_SNAP_LOCAL_CUT_INLINE: the
 * tests' A/B): the caller goes on blocking.
 */
static bool rollback_later_start(struct tsr_cluster *c, const char *vol, const char *snap,
				 uint64_t fence, bool other,
				 const Tessera__Cluster__NodeRecord *const *nodes, size_t n)
{
	struct tsr_snap_req sr = { .op = TSR_SNAP_DELETE }; /* unused: sl->rollback */
	struct snap_later *sl;
	char msg[16];
	int err = 0;

	if (n > TSR_LAYOUT_MAX_COPIES || snap_local_test_inline())
		return false;
	snprintf(sr.snap, sizeof(sr.snap), "%s", snap);
	sl = snap_later_new(c, vol, &sr, NULL, false);
	if (sl == NULL)
		return false;
	sl->rollback = true;
	sl->rollback_other = other;
	sl->epoch = fence;
	/* not a forward: true whatever the calls' fate (each failure is a slot's) */
	return snap_calls_start(c, sl, nodes, n, false, &err, msg, sizeof(msg));
}

void cluster_volume_rollback(struct tsr_cluster *c, const Tessera__Admin__VolumeRollback *r,
			     Tessera__Admin__Response *resp)
{
	const Tessera__Cluster__NodeRecord *nodes[TSR_LAYOUT_MAX_COPIES];
	Tessera__Cluster__VolumeRecord *rec = NULL;
	bool ok[TSR_LAYOUT_MAX_COPIES];
	int rets[TSR_LAYOUT_MAX_COPIES];
	const char *ids[TSR_LAYOUT_MAX_COPIES];
	bool fenced = !tsr_test_env_on("TSR_TEST_ROLLBACK_UNFENCED");
	uint64_t fence = SNAP_NO_EPOCH;
	struct cluster_view v;
	const char *attached;
	char msg[1024], running[64], prev[80] = "";
	bool other = false;
	uint64_t rev;
	size_t n = 0;
	int ret;

	ret = load_volume(c, r->volume, &v, &rec, &rev, msg, sizeof(msg));
	if (ret) {
		admin_fail(resp, ret, "%s", msg);
		return;
	}
	attached = view_attached(&v, r->volume, NULL);
	if (attached) {
		admin_fail(resp, -EBUSY, "volume %s is attached on node %s; detach it first "
			   "(tessera volume detach %s)", r->volume, attached, r->volume);
		goto out;
	}
	/* unclean: also our own mark left by a rollback that failed or was cut
	 * short (a crash); the rollback makes every head the snapshot's image */
	ret = fenced ? rollback_copies_ready(&v, rec, nodes, &n, msg, sizeof(msg)) :
		       all_copies_ready(&v, rec, "roll it back", true, nodes, msg, sizeof(msg));
	if (!fenced)
		n = rec->n_copies;
	if (ret) {
		admin_fail(resp, ret, "%s", msg);
		goto out;
	}
	if (fenced && rec->epoch > v.rev) {
		/* an attach's key came after the view, and it wrote vol/v already */
		admin_fail(resp, -EBUSY, "volume %s is being attached (tessera volume show %s); "
			   "detach it first", r->volume, r->volume);
		goto out;
	}
	if (rollback_running_other(c, r->volume, r->snapshot, running, sizeof(running))) {
		/* each copy's store would run the two in its own order: the
		 * copies could end at different snapshots, both answered 0 */
		admin_fail(resp, -EBUSY, "volume '%s' is being rolled back to snapshot '%s' "
			   "through this node: wait for it to finish, then roll back to '%s'",
			   r->volume, running, r->snapshot);
		goto out;
	}
	if (fenced) {
		fence = rec->epoch;
		ret = rollback_mark(c, r->volume, r->snapshot, fence, RB_MARK_START, false, false,
				    NULL, prev);
		/* another snapshot's mark: a rollback through another node runs
		 * or was cut short; ours goes on (a rollback cut short must not
		 * block one to another snapshot) but keeps the mark at its end */
		other = ret == 0 && mark_running(prev) && !mark_names(prev, r->snapshot);
		if (other)
			tsr_warn("cluster: volume %s: rollback to %s replaces the mark of an "
				 "unfinished rollback to %s (running through another node, or cut "
				 "short): the mark stays at the end", r->volume, r->snapshot, prev);
		if (ret) {
			admin_fail(resp, ret == -ESTALE ? -EBUSY : ret, ret == -ESTALE ?
				   "volume %s was attached meanwhile (tessera volume show %s); detach "
				   "it first" : "volume %s: cannot record the rollback in the "
				   "metadata store: %s (retry)", r->volume,
				   ret == -ESTALE ? r->volume : strerror(-ret));
			goto out;
		}
	}
	/* a client's request: answered later, this loop free meanwhile (the
	 * store's rollback of a big volume takes seconds) */
	if (rollback_later_start(c, r->volume, r->snapshot, fence, other, nodes, n))
		goto out;
	ret = copy_op_all(c, nodes, n, COP_ROLLBACK, r->volume, r->snapshot, "", 0, fence, ok, rets,
			  NULL, msg, sizeof(msg));
	for (size_t i = 0; i < n; i++)
		ids[i] = nodes[i]->id;
	rollback_finish(c, r->volume, r->snapshot, fence, other, n, rets, ids, msg, resp);
out:
	tessera__cluster__volume_record__free_unpacked(rec, NULL);
	view_free(&v);
}

/* ---- clones ------------------------------------------------------------- */

/* A clone keeps its source's layout: a may repeat it, not change it. */
static bool same_ec(const struct clone_args *a, const Tessera__Cluster__VolumeRecord *src)
{
	unsigned k, m;

	if (a->ec[0] == '\0')
		return a->stripe_unit == 0 || a->stripe_unit == src->stripe_unit;
	if (tsr_ec_parse(a->ec, &k, &m) || k != src->ec_k || m != src->ec_m)
		return false;
	return a->stripe_unit == 0 || a->stripe_unit == src->stripe_unit;
}

/* The region size asked, 0 or the source's (its record's 0 is 1 MiB). */
static bool same_region(const struct clone_args *a, const Tessera__Cluster__VolumeRecord *src)
{
	return a->region_size == 0 ||
	       a->region_size == (src->region_size ? src->region_size : (1u << 20));
}

/* Load a's source and check that the clone can be made from it: 0 with v,
 * *src (to free) and nodes[i] (the source copies' nodes); or -errno with
 * resp failed and nothing to free. */
static int clone_check(struct tsr_cluster *c, const struct clone_args *a, struct cluster_view *v,
		       Tessera__Cluster__VolumeRecord **src,
		       const Tessera__Cluster__NodeRecord **nodes, Tessera__Admin__Response *resp)
{
	Tessera__Cluster__VolumeRecord *s;
	char msg[1024];
	uint64_t rev;
	int ret;

	ret = load_volume(c, a->from, v, src, &rev, msg, sizeof(msg));
	if (ret) {
		admin_fail(resp, ret, "source of the clone: %s", msg);
		return ret;
	}
	s = *src;
	if ((a->size ? a->size : s->size) < s->size || (a->replicas && a->replicas != s->n_copies) ||
	    a->min_replicas > s->n_copies || (s->ec_k && a->min_replicas &&
	    a->min_replicas < s->ec_k) || !same_ec(a, s) || !same_region(a, s) ||
	    s->n_copies > TSR_LAYOUT_MAX_COPIES) {
		char lay[64];

		if (s->ec_k)
			snprintf(lay, sizeof(lay), "ec %u+%u layout (%u KiB unit)", s->ec_k,
				 s->ec_m, s->stripe_unit >> 10);
		else
			snprintf(lay, sizeof(lay), "%zu replicas", s->n_copies);
		uint32_t rs = s->region_size ? s->region_size : (1u << 20);
		unsigned sh = rs >= (1u << 30) ? 30 : rs >= (1u << 20) ? 20 : 10;

		admin_fail(resp, -EINVAL, "a clone of '%s' has its %s (its copies share the "
			   "source's blocks on the same nodes), its region size (%u %s) and at "
			   "least its size", a->from, lay, rs >> sh,
			   sh == 30 ? "GiB" : sh == 20 ? "MiB" : "KiB");
		ret = -EINVAL;
		goto err;
	}
	/* every copy of the source is needed: each makes one copy of the clone */
	for (size_t i = 0; i < s->n_copies; i++) {
		const Tessera__Cluster__CopyRecord *cr = s->copies[i];

		nodes[i] = view_node(v, cr->node_id);
		if (nodes[i] == NULL || !view_alive(v, cr->node_id) ||
		    cr->state != TESSERA__CLUSTER__COPY_STATE__IN_SYNC) {
			admin_fail(resp, -EAGAIN, "cannot clone '%s': its copy on %s is %s (a clone "
				   "is made on every copy's node: bring the node back or let the "
				   "copy resync, then retry)", a->from, cr->node_id,
				   !view_alive(v, cr->node_id) ? "on a node that is not alive" :
				   rec_state_name(cr->state));
			ret = -EAGAIN;
			goto err;
		}
	}
	return 0;
err:
	tessera__cluster__volume_record__free_unpacked(*src, NULL);
	*src = NULL;
	view_free(v);
	return ret;
}

/* A temporary snapshot's delete on a worker, not waited for. */
struct snap_bg {
	char what[200];                /* "VOL@SNAP" */
};

static void snap_bg_done(void *arg, int status)
{
	struct snap_bg *b = arg;

	if (status)
		tsr_warn("cluster: the temporary snapshot %s stays: %s", b->what, strerror(-status));
	free(b);
}

/* Delete snapshot snap of vol (a clone's temporary one) wherever it must
 * run, without waiting: failures are logged (the snapshot then stays, and
 * tessera snapshot delete removes it). */
static void snap_delete_nowait(struct tsr_cluster *c, const char *vol, const char *snap)
{
	const Tessera__Cluster__NodeRecord *nodes[TSR_LAYOUT_MAX_COPIES];
	Tessera__Cluster__VolumeRecord *rec = NULL;
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotCreate sc = TESSERA__ADMIN__SNAPSHOT_CREATE__INIT;
	Tessera__Admin__SnapshotDelete sd = TESSERA__ADMIN__SNAPSHOT_DELETE__INIT;
	struct tsr_snap_req sr = { .op = TSR_SNAP_DELETE };
	const Tessera__Cluster__NodeRecord *coord = NULL;
	struct cluster_view v;
	const char *attached;
	size_t n = 0;
	char msg[1024];
	uint64_t rev;
	int ret;

	snprintf(sr.snap, sizeof(sr.snap), "%s", snap);
	ret = load_volume(c, vol, &v, &rec, &rev, msg, sizeof(msg));
	if (ret) {
		tsr_warn("cluster: the temporary snapshot %s@%s stays: %s", vol, snap, msg);
		return;
	}
	attached = view_attached(&v, vol, NULL);
	if (attached && strcmp(attached, c->node_id) == 0) {
		struct snap_bg *b = malloc(sizeof(*b));

		if (b != NULL) {
			snprintf(b->what, sizeof(b->what), "%s@%s", vol, snap);
			ret = tsr_volset_snap_async(c->o.vols, vol, &sr, snap_bg_done, b);
			if (ret)
				free(b);
		} else {
			ret = -ENOMEM;
		}
		if (ret)
			tsr_warn("cluster: the temporary snapshot %s@%s stays: %s", vol, snap,
				 strerror(-ret));
		goto out;
	}
	if (attached) {
		coord = view_node(&v, attached);
		if (coord == NULL) {
			tsr_warn("cluster: the temporary snapshot %s@%s stays: %s's address is "
				 "unknown", vol, snap, attached);
			goto out;
		}
		nodes[n++] = coord;
	} else {
		ret = all_copies_ready(&v, rec, "delete the snapshot", true, nodes, msg,
				       sizeof(msg));
		if (ret) {
			tsr_warn("cluster: the temporary snapshot %s@%s stays: %s", vol, snap, msg);
			goto out;
		}
		n = rec->n_copies;
	}
	snap_request(&req, &sc, &sd, TSR_SNAP_DELETE, vol, snap, coord == NULL, 0,
		     SNAP_NO_EPOCH);
	for (size_t i = 0; i < n; i++) {
		struct snap_undo *u;

		if (coord == NULL && strcmp(nodes[i]->id, c->node_id) == 0) {
			/* our store's delete off the loop, as the cut was */
			snap_undo_local(c, vol, snap, true);
			continue;
		}
		u = malloc(sizeof(*u));
		if (u == NULL)
			continue;
		snprintf(u->what, sizeof(u->what), "%s@%s on %s", vol, snap, nodes[i]->id);
		ret = admin_async_call(c->o.loop, nodes[i]->address, c->token, &req,
				       CLUSTER_FORWARD_TIMEOUT_MS, snap_undo_done, u, NULL);
		if (ret) {
			tsr_warn("cluster: undo of snapshot %s: %s", u->what, strerror(-ret));
			free(u);
		}
	}
out:
	tessera__cluster__volume_record__free_unpacked(rec, NULL);
	view_free(&v);
}

/*
 * Make the clone a->name from snapshot snap of a->from on every copy's node
 * (the source checked again: time may have passed since the request); tmp:
 * snap is the temporary snapshot of the current content, deleted afterwards
 * without waiting.
 */
static void clone_make(struct tsr_cluster *c, const struct clone_args *a, const char *snap,
		       bool tmp_snap, Tessera__Admin__Response *resp)
{
	const Tessera__Cluster__NodeRecord *nodes[TSR_LAYOUT_MAX_COPIES];
	Tessera__Cluster__CopyRecord copies[TSR_LAYOUT_MAX_COPIES];
	Tessera__Cluster__CopyRecord *copy_ptrs[TSR_LAYOUT_MAX_COPIES];
	Tessera__Cluster__VolumeRecord rec = TESSERA__CLUSTER__VOLUME_RECORD__INIT;
	Tessera__Cluster__VolumeRecord *src = NULL;
	bool made[TSR_LAYOUT_MAX_COPIES] = { false };
	char made_uuid[TSR_LAYOUT_MAX_COPIES][37];
	char msg[1024], key[80], uuid[37];
	struct cluster_view v;
	uint64_t size, copy_size;
	int ret;

	if (clone_check(c, a, &v, &src, nodes, resp)) {
		if (tmp_snap)
			snap_delete_nowait(c, a->from, snap);
		return;
	}
	size = a->size ? a->size : src->size;
	/* each copy's store clones its own copy: for ec, the chunk volume */
	copy_size = src->ec_k ? tsr_ec_chunk_volume_size(size, src->ec_k, src->stripe_unit) : size;
	ret = copy_op_all(c, nodes, src->n_copies, COP_CLONE, a->from, snap, a->name, copy_size,
			  SNAP_NO_EPOCH, made, NULL, made_uuid, msg, sizeof(msg));
	if (ret) {
		admin_fail(resp, ret, "%s; nothing was created", msg);
		goto undo;
	}
	{
		unsigned char b[16];

		if (RAND_bytes(b, sizeof(b)) != 1)
			memset(b, 0x5a, sizeof(b));
		b[6] = (b[6] & 0x0f) | 0x40;
		b[8] = (b[8] & 0x3f) | 0x80;
		snprintf(uuid, sizeof(uuid),
			 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
			 b[12], b[13], b[14], b[15]);
	}
	rec.name = (char *)a->name;
	rec.uuid = uuid;
	rec.size = size;
	rec.replicas = (uint32_t)src->n_copies;
	rec.min_replicas = a->min_replicas ? a->min_replicas : src->min_replicas;
	rec.failure_domain = src->failure_domain;
	rec.created = cluster_now();
	rec.clean_detach = true; /* every copy is the same image */
	rec.parent_volume = (char *)a->from;
	rec.parent_snapshot = tmp_snap ? (char *)"" : (char *)snap;
	rec.ec_k = src->ec_k; /* the same geometry, chunk copies in the same order */
	rec.ec_m = src->ec_m;
	rec.stripe_unit = src->stripe_unit;
	rec.region_size = src->region_size; /* its resync granularity too */
	rec.n_copies = src->n_copies;
	rec.copies = copy_ptrs;
	for (size_t i = 0; i < src->n_copies; i++) {
		tessera__cluster__copy_record__init(&copies[i]);
		copies[i].node_id = src->copies[i]->node_id;
		copies[i].state = TESSERA__CLUSTER__COPY_STATE__IN_SYNC;
		copies[i].since = rec.created;
		copy_ptrs[i] = &copies[i];
	}
	snprintf(key, sizeof(key), "vol/%s", a->name);
	ret = rec_put(c->meta, key, &rec.base, 0, 0, NULL);
	if (ret == -ECANCELED) {
		admin_fail(resp, -EEXIST, "volume '%s' was just created by someone else (tessera "
			   "volume show %s)", a->name, a->name);
		memset(made, 0, sizeof(made)); /* its copies are that volume's now */
		goto undo;
	}
	if (ret) {
		admin_fail(resp, ret, "cannot record volume '%s' in the metadata store: %s",
			   a->name, strerror(-ret));
		goto undo;
	}
	tsr_info("cluster: volume %s cloned from %s%s%s (%zu copies)", a->name, a->from,
		 tmp_snap ? "" : "@", tmp_snap ? "" : snap, src->n_copies);
	tessera__cluster__volume_record__free_unpacked(src, NULL);
	view_free(&v);
	if (tmp_snap)
		snap_delete_nowait(c, a->from, snap);
	cluster_volume_list(c, a->name, resp);
	return;
undo:
	/* each copy by the uuid its node made it with (by name when the node
	 * named none: an earlier build): a delete that reaches a slow node late
	 * leaves alone a copy a create of the name made there since (review
	 * s20-revK C, as the create's undo) */
	for (size_t i = 0; i < src->n_copies; i++) {
		char m2[512];

		if (made[i] &&
		    cluster_copy_delete_uuid(c, nodes[i], a->name, made_uuid[i], m2, sizeof(m2)))
			tsr_warn("cluster: undo clone %s: %s", a->name, m2);
	}
	tessera__cluster__volume_record__free_unpacked(src, NULL);
	view_free(&v);
	if (tmp_snap)
		snap_delete_nowait(c, a->from, snap);
}

/* The clone a after its temporary snapshot's cut (snap_later_reply): ret
 * and msg the cut's result; c NULL when the cluster stopped meanwhile. */
static void clone_after_cut(struct tsr_cluster *c, const struct clone_args *a, const char *snap,
			    int ret, const char *msg, Tessera__Admin__Response *resp)
{
	if (ret)
		admin_fail(resp, ret, "cannot clone '%s': %s", a->from, msg);
	else if (c == NULL)
		admin_fail(resp, -ESHUTDOWN, "clone '%s' was not made: tesserad is shutting down "
			   "(the temporary snapshot %s@%s stays: tessera snapshot delete %s %s)",
			   a->name, a->from, snap, a->from, snap);
	else
		clone_make(c, a, snap, true, resp);
}

void cluster_volume_clone(struct tsr_cluster *c, const Tessera__Admin__VolumeCreate *r,
			  Tessera__Admin__Response *resp)
{
	const Tessera__Cluster__NodeRecord *nodes[TSR_LAYOUT_MAX_COPIES];
	Tessera__Cluster__VolumeRecord *src = NULL, *exists = NULL;
	struct clone_args a = { .size = r->size, .replicas = r->replicas,
				.min_replicas = r->min_replicas, .stripe_unit = r->stripe_unit,
				.region_size = r->region_size };
	struct clone_args *later_args;
	struct cluster_view v;
	bool later = false;
	char msg[1024], snap[64];
	int ret;

	if (!r->from_volume[0]) {
		admin_fail(resp, -EINVAL, "a clone of a snapshot needs its volume too "
			   "(--from-volume VOL --from-snapshot SNAP)");
		return;
	}
	if (!tsr_valid_name(r->name)) {
		admin_fail(resp, -EINVAL, "invalid volume name '%s'", r->name);
		return;
	}
	if (strlen(r->from_volume) >= sizeof(a.from) || strlen(r->from_snapshot) >=
	    sizeof(a.from_snapshot) || (r->ec && strlen(r->ec) >= sizeof(a.ec))) {
		admin_fail(resp, -EINVAL, "clone '%s': source or layout name too long", r->name);
		return;
	}
	snprintf(a.name, sizeof(a.name), "%s", r->name);
	snprintf(a.from, sizeof(a.from), "%s", r->from_volume);
	snprintf(a.from_snapshot, sizeof(a.from_snapshot), "%s", r->from_snapshot);
	snprintf(a.ec, sizeof(a.ec), "%s", r->ec ? r->ec : "");
	if (rec_volume_get(c->meta, r->name, &exists, NULL) == 0) {
		tessera__cluster__volume_record__free_unpacked(exists, NULL);
		admin_fail(resp, -EEXIST, "volume '%s' already exists (tessera volume show %s "
			   "describes it; pick another name)", r->name, r->name);
		return;
	}
	if (clone_check(c, &a, &v, &src, nodes, resp))
		return;
	tessera__cluster__volume_record__free_unpacked(src, NULL);
	view_free(&v);
	if (a.from_snapshot[0]) {
		clone_make(c, &a, a.from_snapshot, false, resp);
		return;
	}
	/* the current content: a cut consistent across copies, even under writes,
	 * made without waiting (the clone is made when it is: clone_after_cut) */
	{
		unsigned char rnd[4];

		if (RAND_bytes(rnd, sizeof(rnd)) != 1)
			memset(rnd, 0x42, sizeof(rnd));
		snprintf(snap, sizeof(snap), "clone-src.%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
			 rnd[3]);
	}
	later_args = malloc(sizeof(*later_args));
	if (later_args)
		*later_args = a;
	ret = snap_change(c, a.from, TSR_SNAP_CREATE, snap, later_args ? &later : NULL,
			  later_args, msg, sizeof(msg));
	if (later) /* later_args are the pending request's now */
		return;
	free(later_args);
	clone_after_cut(c, &a, snap, ret, msg, resp);
}
