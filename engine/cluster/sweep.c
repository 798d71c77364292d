/*
 * The leftover sweep: store copies on this node that no volume record lists
 * for it are removed, so that they stop holding its disk.
 *
 * They come from a replace-replica made while this node was down (its delete
 * of the old copy did not reach us), from the delete right after a replace of
 * an attached volume (refused: the coordinator's session still had it open),
 * and from a volume deleted while this node was down.
 *
 * A visible store volume (hidden rows, kept by the store for clones, are the
 * store's business and never looked at) is a leftover when all of these hold:
 *   - vol/<name> does not exist, or lists no copy on this node (any state);
 *     read in one range, then read again just before the delete;
 *   - THIS run of the sweep has seen it so at every pass for at least the
 *     grace (--leftover-grace, default SWEEP_GRACE_DEFAULT_SEC; a monotonic
 *     time kept in memory per name and uuid: c->sweep_seen; a pass that sees
 *     it listed, or another uuid under that name, starts the clock again, and
 *     so does a restart): a create writes its copies before vol/<name> (at
 *     most TSR_PLACE_MAX copies, each call bounded by CLUSTER_COPY_TIMEOUT_MS:
 *     30 s), a replace or clone its new copy a moment before the record
 *     lists it; a copy unlisted for less may be one of them.  Not its
 *     catalogue row's age: a metadata store restored from an older backup, or
 *     a record that lists us under an id we no longer run as, makes old copies
 *     look unlisted all at once; the grace after the first pass that sees it
 *     is the operator's time to notice (the WARN below, the records);
 *   - it was created after this data dir joined this cluster (DIR/cluster.joined
 *     below): volumes from before, a standalone life or another cluster, are
 *     not ours to judge;
 *   - the store has no handle on it (tsr_store_vol_delete refuses -EBUSY; it
 *     is tried again at the next pass);
 *   - its row is still the one judged (same uuid), checked under
 *     c->sweep_lock with the delete (internal.h: the main thread's deletes
 *     of store copies wait meanwhile, so a copy deleted and made again under
 *     that name by a replace cannot come in between).
 * Ec chunk copies and DR target volumes follow the same rule: both are listed
 * by their cluster's own vol/<name> (a target is created by
 * cluster_volume_create in the target cluster).
 *
 * DIR/cluster.joined: "<cluster id> <node id> <unix seconds>\n", written the
 * first time the node starts in a cluster.  When the metadata store's
 * cluster/id differs (a new meta store, the dir moved to another cluster), or
 * this run's node id differs (the records list this dir's copies under the
 * old id; tesserad refuses a --node-id other than DIR/node.id, so only a
 * node.id removed or edited by hand gets here), the sweep is off, with a
 * WARN: every copy would look unlisted.  A file of the first format ("<cluster id> <seconds>", no
 * node id) turns it off too: remove the file to start the sweep again.
 *
 * Runs on a thread of its own ("sweep", cluster.c), with its own metadata
 * handle (c->meta_sweep): a pass a keepalive period after the start, then
 * every grace/4 seconds (1 to 60), each bounded to SWEEP_BUDGET_MS of
 * deletes (the rest at the next pass, a second later).  Not on the lease's
 * thread: its store calls wait for the store's lock, which a rollback holds
 * for its whole data copy (review 15b, F4: the lease lapsed behind it).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/internal.h"

#define SWEEP_BUDGET_MS 250

/* Whether r lists a copy on node_id. */
static bool lists_node(const Tessera__Cluster__VolumeRecord *r, const char *node_id)
{
	for (size_t i = 0; i < r->n_copies; i++)
		if (r->copies[i]->node_id && strcmp(r->copies[i]->node_id, node_id) == 0)
			return true;
	return false;
}

int cluster_sweep_init(struct tsr_cluster *c)
{
	char path[4200], line[200], id[64], node[64], third[32];
	long long at;
	int n;
	FILE *f;
	int fd;

	c->sweep_on = false;
	if (c->o.leftover_grace_sec == 0) {
		tsr_info("cluster: leftover sweep off (--leftover-grace 0)");
		return 0;
	}
	snprintf(path, sizeof(path), "%s/cluster.joined", c->dir);
	f = fopen(path, "r");
	if (f) {
		bool ok = fgets(line, sizeof(line), f) != NULL &&
			  (n = sscanf(line, "%63s %63s %31s", id, node, third)) >= 2;

		fclose(f);
		if (ok && n == 2) {
			tsr_warn("cluster: %s names no node id (written by an older tesserad): "
				 "leftover sweep off (remove the file to start it again from now, "
				 "as node %s)", path, c->node_id);
			return 0;
		}
		if (!ok || sscanf(third, "%lld", &at) != 1 || at <= 0) {
			tsr_warn("cluster: %s does not read '<cluster id> <node id> <seconds>': "
				 "leftover sweep off (remove the file to start it again from now)",
				 path);
			return 0;
		}
		if (strcmp(id, c->cluster_id) != 0) {
			tsr_warn("cluster: this data dir joined cluster %s (%s), the metadata store "
				 "is cluster %s: leftover sweep off (its copies may belong to %s)",
				 id, path, c->cluster_id, id);
			return 0;
		}
		if (strcmp(node, c->node_id) != 0) {
			tsr_warn("cluster: this data dir joined cluster %s as node %s (%s), this run "
				 "is node %s (DIR/node.id removed or edited): leftover sweep off (the "
				 "records list its copies under %s: write %s into DIR/node.id and "
				 "restart with --node-id %s)", id, node, path, c->node_id, node, node,
				 node);
			return 0;
		}
		c->joined_at = at;
		c->sweep_on = true;
		return 0;
	}
	if (errno != ENOENT) {
		tsr_warn("cluster: %s: %s: leftover sweep off", path, strerror(errno));
		return 0;
	}
	at = (long long)cluster_now();
	snprintf(line, sizeof(line), "%s %s %lld\n", c->cluster_id, c->node_id, at);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, line, strlen(line)) != (ssize_t)strlen(line) || fsync(fd) < 0) {
		int err = errno;

		if (fd >= 0) {
			close(fd);
			unlink(path);
		}
		tsr_warn("cluster: cannot write %s: %s: leftover sweep off", path, strerror(err));
		return 0;
	}
	close(fd);
	c->joined_at = at;
	c->sweep_on = true;
	tsr_info("cluster: data dir joined cluster %s as node %s (%s): store copies made from "
		 "now on that no volume record lists for this node are removed once seen so for "
		 "%u s", c->cluster_id, c->node_id, path, c->o.leftover_grace_sec);
	return 0;
}

unsigned cluster_sweep_interval_ms(const struct tsr_cluster *c)
{
	unsigned s = c->o.leftover_grace_sec / 4;

	return (s < 1 ? 1 : s > 60 ? 60 : s) * 1000u;
}

/*
 * Test hook: while the file $TSR_TEST_SWEEP_HOLD_FILE exists (at most 60 s),
 * the sweep waits between its last check of a copy and its delete, holding
 * c->sweep_lock (test-cluster-leftover-race holds that window open).
 */
static void sweep_test_hold(const char *name)
{
	const char *f = getenv("TSR_TEST_SWEEP_HOLD_FILE");

	if (f == NULL || access(f, F_OK) != 0)
		return;
	tsr_info("cluster: leftover copy %s: test hold (%s) between the check and the delete",
		 name, f);
	for (int i = 0; i < 6000 && access(f, F_OK) == 0; i++)
		usleep(10 * 1000);
}

/* Remove name (store row info) if vol/<name>, read again, still does not list us. */
static int sweep_one(struct tsr_cluster *c, const struct tsr_vol_info *info, int64_t now,
		     int64_t unlisted_ms)
{
	Tessera__Cluster__VolumeRecord *rec = NULL;
	struct tsr_vol_info again;
	const char *why;
	int ret;

	ret = rec_volume_get(c->meta_sweep, info->name, &rec, NULL);
	if (ret == 0) {
		bool listed = lists_node(rec, c->node_id);

		tessera__cluster__volume_record__free_unpacked(rec, NULL);
		if (listed)
			return 0; /* listed meanwhile (a replace onto us) */
		why = "vol/%s lists no copy on this node";
	} else if (ret == -ENOENT) {
		why = "vol/%s does not exist";
	} else {
		return 0; /* unreadable or malformed: never a reason to delete */
	}
	/* the same row as listed (a copy made again under that name is young);
	 * no delete of this node's copies runs elsewhere until ours is done */
	pthread_mutex_lock(&c->sweep_lock);
	ret = tsr_store_vol_info(c->o.store, info->name, &again);
	if (ret == 0 && strcmp(again.uuid, info->uuid) == 0) {
		sweep_test_hold(info->name);
		ret = tsr_store_vol_delete(c->o.store, info->name);
	} else {
		ret = -ENOENT;
	}
	pthread_mutex_unlock(&c->sweep_lock);
	if (ret == -EBUSY) {
		tsr_info("cluster: leftover copy %s is open here: removed at a later pass",
			 info->name);
		return 0;
	}
	if (ret == -ENOENT)
		return 0;
	if (ret) {
		tsr_warn("cluster: leftover copy %s: delete: %s (tried again at the next pass)",
			 info->name, strerror(-ret));
		return 0;
	}
	{
		char reason[160];

		snprintf(reason, sizeof(reason), why, info->name);
		tsr_info("cluster: leftover copy %s removed (%s; seen so for %" PRId64 " s, "
			 "created %" PRId64 " s ago, %s, uuid %s)", info->name, reason,
			 unlisted_ms / 1000, now - info->created,
			 tsr_format_size(info->size, (char[32]){ 0 }, 32), info->uuid);
	}
	pthread_mutex_lock(&c->lock);
	c->leftovers_removed++;
	pthread_mutex_unlock(&c->lock);
	return 1;
}

void tsr_cluster_copy_delete_lock(struct tsr_cluster *c, bool lock)
{
	if (lock)
		pthread_mutex_lock(&c->sweep_lock);
	else
		pthread_mutex_unlock(&c->sweep_lock);
}

/* c->sweep_seen's entry for in (same name and uuid), marked; a new one (the
 * clock starts now) if none.  NULL: out of memory (nothing judged). */
static struct sweep_seen *seen_mark(struct tsr_cluster *c, const struct tsr_vol_info *in,
				    int64_t now_ms)
{
	struct sweep_seen *s;

	for (size_t i = 0; i < c->n_sweep_seen; i++) {
		s = &c->sweep_seen[i];
		if (strcmp(s->name, in->name) != 0)
			continue;
		if (strcmp(s->uuid, in->uuid) != 0) { /* another copy under that name */
			snprintf(s->uuid, sizeof(s->uuid), "%s", in->uuid);
			s->since_ms = now_ms;
		}
		s->mark = true;
		return s;
	}
	s = realloc(c->sweep_seen, (c->n_sweep_seen + 1) * sizeof(*s));
	if (s == NULL)
		return NULL;
	c->sweep_seen = s;
	s = &c->sweep_seen[c->n_sweep_seen++];
	memset(s, 0, sizeof(*s));
	snprintf(s->name, sizeof(s->name), "%s", in->name);
	snprintf(s->uuid, sizeof(s->uuid), "%s", in->uuid);
	s->since_ms = now_ms;
	s->mark = true;
	return s;
}

/* Forget the copies this pass did not see unlisted (listed, gone, replaced). */
static void seen_sweep_unmarked(struct tsr_cluster *c)
{
	size_t j = 0;

	for (size_t i = 0; i < c->n_sweep_seen; i++)
		if (c->sweep_seen[i].mark)
			c->sweep_seen[j++] = c->sweep_seen[i];
	c->n_sweep_seen = j;
}

bool cluster_sweep(struct tsr_cluster *c)
{
	Tessera__Cluster__VolumeRecord **recs = NULL;
	struct tsr_meta_kv *kvs = NULL;
	struct tsr_vol_info *infos = NULL;
	size_t n_infos = 0, n_kvs = 0;
	int64_t now = cluster_now(), start = tsr_mono_ms();
	int64_t grace_ms = (int64_t)c->o.leftover_grace_sec * 1000;
	bool more = false, judged = false;

	if (!c->sweep_on)
		return false;
	if (tsr_store_vol_list(c->o.store, &infos, &n_infos) != 0)
		return false;
	if (n_infos == 0) { /* nothing to judge: no metadata read */
		c->n_sweep_seen = 0;
		goto out;
	}
	/* a pass that cannot read the records neither confirms nor resets a clock */
	if (tsr_meta_range(c->meta_sweep, "vol/", &kvs, &n_kvs, NULL) != 0)
		goto out;
	recs = calloc(n_kvs ? n_kvs : 1, sizeof(*recs));
	if (recs == NULL)
		goto out;
	for (size_t i = 0; i < c->n_sweep_seen; i++)
		c->sweep_seen[i].mark = false;
	judged = true;
	for (size_t i = 0; i < n_kvs; i++)
		recs[i] = rec_volume_decode(&kvs[i]);
	for (size_t i = 0; i < n_infos; i++) {
		const struct tsr_vol_info *in = &infos[i];
		bool listed = false, malformed = false, exists = false;
		struct sweep_seen *seen;
		int64_t mono;

		if (in->created < c->joined_at)
			continue;
		for (size_t j = 0; j < n_kvs; j++) {
			if (strcmp(kvs[j].key + 4, in->name) != 0)
				continue;
			exists = true;
			if (recs[j] == NULL)
				malformed = true;
			else
				listed = lists_node(recs[j], c->node_id);
			break;
		}
		if (listed || malformed)
			continue;
		mono = tsr_mono_ms();
		seen = seen_mark(c, in, mono);
		if (seen == NULL) {
			judged = false; /* keep every clock as it was */
			break;
		}
		if (seen->since_ms == mono)
			tsr_info("cluster: store copy %s (uuid %s) unlisted (%s): removed as a "
				 "leftover if it stays so for %u s", in->name, in->uuid, exists ?
				 "its vol/ record lists no copy on this node" : "no vol/ record",
				 c->o.leftover_grace_sec);
		if (mono - seen->since_ms < grace_ms)
			continue;
		if (mono - start >= SWEEP_BUDGET_MS) {
			more = true; /* still marked: the clocks of the rest go on */
			continue;
		}
		sweep_one(c, in, now, mono - seen->since_ms);
	}
out:
	if (judged)
		seen_sweep_unmarked(c);
	for (size_t i = 0; recs && i < n_kvs; i++)
		if (recs[i])
			tessera__cluster__volume_record__free_unpacked(recs[i], NULL);
	free(recs);
	tsr_meta_kv_free_array(kvs, n_kvs);
	free(infos);
	return more;
}

uint64_t tsr_cluster_leftovers_removed(struct tsr_cluster *c)
{
	uint64_t n;

	pthread_mutex_lock(&c->lock);
	n = c->leftovers_removed;
	pthread_mutex_unlock(&c->lock);
	return n;
}
