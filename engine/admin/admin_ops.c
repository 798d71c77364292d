/*
 * Admin API commands: one function per Request command, each turning a
 * validated request into store calls and a Response.  They run on the
 * control thread (tesserad's libev loop), where blocking store calls are
 * allowed.  Error replies carry a message for a person: what failed and what
 * to do; the CLI prints it as is.  Snapshot create, snapshot delete and a
 * clone of a volume open on this node do not block the loop: the request
 * goes through the volume's gate on its home worker and the reply is sent
 * when the gate is done (admin_later_*, gate_start).  Neither does a
 * local_copy rollback (one copy of a detached volume, asked by the node
 * handling the cluster's rollback): the store's rollback runs in a thread
 * of its own and the reply is sent when it is done (rollback_later_start).
 * The store logs its own failures; nothing is logged twice here.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "admin/admin_internal.h"
#include "tessera/ec.h"
#include "tessera/test_hook.h"

/* "unix:PATH" -> nbd+unix:///NAME?socket=PATH; "tcp:HOST:PORT" -> nbd://HOST:PORT/NAME */
static char *nbd_uri(const char *listener, const char *name)
{
	char *uri = NULL;
	int n = -1;

	if (strncmp(listener, "unix:", 5) == 0)
		n = asprintf(&uri, "nbd+unix:///%s?socket=%s", name, listener + 5);
	else if (strncmp(listener, "tcp:", 4) == 0)
		n = asprintf(&uri, "nbd://%s/%s", listener + 4, name);
	return n < 0 ? NULL : uri;
}

static Tessera__Admin__Snapshot *build_snapshot(struct tsr_admin_server *srv, const char *vol,
						const struct tsr_snap_info *info)
{
	Tessera__Admin__Snapshot *s = malloc(sizeof(*s));
	char export[2 * 64];
	size_t i;

	if (s == NULL)
		return NULL;
	tessera__admin__snapshot__init(s);
	s->volume = admin_strdup(vol);
	s->name = admin_strdup(info->name);
	s->uuid = admin_strdup(info->uuid);
	s->created = info->created;
	s->seq = info->seq;
	s->size = info->size;
	s->allocated = info->allocated;
	s->exclusive = info->exclusive;
	s->clones = info->clones;
	s->deleting = info->deleting;
	s->nbd_uris = calloc(srv->n_nbd_listeners ? srv->n_nbd_listeners : 1, sizeof(char *));
	if (s->volume == NULL || s->name == NULL || s->uuid == NULL || s->nbd_uris == NULL)
		goto err;
	/* the read-only export of the snapshot (vol.c: "VOL@SNAP"); none for a
	 * snapshot being deleted (its name may be a new snapshot's already) */
	snprintf(export, sizeof(export), "%s@%s", vol, info->name);
	for (i = 0; i < srv->n_nbd_listeners && !info->deleting; i++) {
		char *uri = nbd_uri(srv->nbd_listeners[i], export);

		if (uri)
			s->nbd_uris[s->n_nbd_uris++] = uri;
	}
	return s;
err:
	if (s->volume == NULL)
		s->volume = (char *)protobuf_c_empty_string;
	if (s->name == NULL)
		s->name = (char *)protobuf_c_empty_string;
	if (s->uuid == NULL)
		s->uuid = (char *)protobuf_c_empty_string;
	admin_snapshot_free_built(s);
	return NULL;
}

/* Snapshots of vol into v->snapshots (volume show).  0 or -ENOMEM; a store
 * without snapshots (device mode) leaves the list empty. */
static int add_snapshots(struct tsr_admin_server *srv, Tessera__Admin__Volume *v,
			 const char *vol)
{
	struct tsr_snap_info *infos = NULL;
	size_t count = 0, i;

	if (tsr_store_snap_list(srv->store, vol, &infos, &count) < 0)
		return 0;
	v->snapshots = calloc(count ? count : 1, sizeof(*v->snapshots));
	if (v->snapshots == NULL) {
		free(infos);
		return -ENOMEM;
	}
	for (i = 0; i < count; i++) {
		v->snapshots[i] = build_snapshot(srv, vol, &infos[i]);
		if (v->snapshots[i] == NULL) {
			free(infos);
			return -ENOMEM;
		}
		v->n_snapshots++;
	}
	free(infos);
	return 0;
}

static Tessera__Admin__Volume *build_volume(struct tsr_admin_server *srv,
					    const struct tsr_vol_info *info, bool with_snapshots)
{
	Tessera__Admin__Volume *v = malloc(sizeof(*v));
	char parent_vol[64] = "", parent_snap[64] = "";
	uint64_t allocated, exclusive;
	size_t i;

	if (v == NULL)
		return NULL;
	tessera__admin__volume__init(v);
	v->name = admin_strdup(info->name);
	v->uuid = admin_strdup(info->uuid);
	v->size = info->size;
	v->allocated = info->allocated;
	v->created = info->created;
	v->in_use = tsr_volset_in_use(srv->vols, info->name);
	v->copy_sessions = info->sessions;
	/* snapshot space and lineage: absent (zero, "") where the store has none */
	if (tsr_store_vol_space(srv->store, info->name, &allocated, &exclusive) == 0)
		v->exclusive = exclusive;
	if (tsr_store_vol_parent(srv->store, info->name, parent_vol, parent_snap) < 0)
		parent_vol[0] = parent_snap[0] = '\0';
	parent_vol[63] = parent_snap[63] = '\0';
	v->parent_volume = admin_strdup(parent_vol);
	v->parent_snapshot = admin_strdup(parent_snap);
	v->nbd_uris = calloc(srv->n_nbd_listeners ? srv->n_nbd_listeners : 1, sizeof(char *));
	if (v->name == NULL || v->uuid == NULL || v->nbd_uris == NULL ||
	    v->parent_volume == NULL || v->parent_snapshot == NULL)
		goto err;
	if (with_snapshots && add_snapshots(srv, v, info->name) < 0)
		goto err;
	for (i = 0; i < srv->n_nbd_listeners; i++) {
		char *uri = nbd_uri(srv->nbd_listeners[i], info->name);

		if (uri)
			v->nbd_uris[v->n_nbd_uris++] = uri;
	}
	return v;
err:
	if (v->name == NULL)
		v->name = (char *)protobuf_c_empty_string;
	if (v->uuid == NULL)
		v->uuid = (char *)protobuf_c_empty_string;
	if (v->parent_volume == NULL)
		v->parent_volume = (char *)protobuf_c_empty_string;
	if (v->parent_snapshot == NULL)
		v->parent_snapshot = (char *)protobuf_c_empty_string;
	admin_volume_free_built(v);
	return NULL;
}

/* Reply with the one volume name (after create/resize/show). */
static void reply_volume(struct tsr_admin_server *srv, const char *name,
			 Tessera__Admin__Response *resp)
{
	struct tsr_vol_info info;
	int ret;

	ret = tsr_store_vol_info(srv->store, name, &info);
	if (ret == -ENOENT) {
		admin_fail(resp, ret, "volume '%s' not found (tessera volume list shows what exists)",
			   name);
		return;
	}
	if (ret) {
		admin_fail(resp, ret, "cannot read volume '%s': %s (see tesserad's log)", name,
			   strerror(-ret));
		return;
	}
	resp->volumes = malloc(sizeof(*resp->volumes));
	if (resp->volumes == NULL ||
	    (resp->volumes[0] = build_volume(srv, &info, true)) == NULL) {
		admin_fail(resp, -ENOMEM, "out of memory in tesserad");
		return;
	}
	resp->n_volumes = 1;
}

/* ---- snapshots ---------------------------------------------------------- */

/* VOL and SNAP from (volume, name) or from (volume "VOL@SNAP", name ""); the
 * parser checked both forms. */
static void split_ref(const char *volume, const char *name, char vol[64], char snap[64])
{
	const char *at = strchr(volume, '@');

	if (at != NULL && (name == NULL || name[0] == '\0')) {
		snprintf(vol, 64, "%.*s", (int)(at - volume), volume);
		snprintf(snap, 64, "%s", at + 1);
	} else {
		snprintf(vol, 64, "%s", volume);
		snprintf(snap, 64, "%s", name ? name : "");
	}
}

/* The epoch of a store snapshot call that checks none. */
#define SNAP_NO_EPOCH UINT64_MAX

/* epoch: a local_copy create's or delete's fence (SnapshotCreate.epoch:
 * -ESTALE once an attach raised the copy's past it), else SNAP_NO_EPOCH. */
static int store_snap(struct tsr_admin_server *srv, const char *vol,
		      const struct tsr_snap_req *req, uint64_t epoch)
{
	struct tsr_snap_info snap_info;
	struct tsr_vol_info vol_info;

	switch (req->op) {
	case TSR_SNAP_CREATE:
		/* req->size: a local_copy cut at the record's size (0: the copy's) */
		if (epoch != SNAP_NO_EPOCH)
			return tsr_store_snap_create_epoch(srv->store, vol, req->snap, req->size,
							   epoch);
		return tsr_store_snap_create_sized(srv->store, vol, req->snap, req->size,
						   &snap_info);
	case TSR_SNAP_DELETE:
		if (epoch != SNAP_NO_EPOCH)
			return tsr_store_snap_delete_epoch(srv->store, vol, req->snap, false,
							   epoch);
		return tsr_store_snap_delete(srv->store, vol, req->snap);
	case TSR_SNAP_CLONE:
	default:
		return tsr_store_vol_clone(srv->store, req->clone, vol,
					   req->snap[0] ? req->snap : NULL, &vol_info);
	}
}

/* A snapshot operation (create, delete, clone) of an open volume waiting
 * for its gate: the loop goes on, the reply is sent when the gate is done
 * (admin_later_*).  Built on the loop, read by the worker until gate_done,
 * then by the loop in gate_reply, which frees it. */
struct gate_later {
	char vol[64];              /* the volume (a clone's source) */
	struct tsr_snap_req req;   /* the worker reads it until gate_done */
	uint64_t size;             /* clone: the size asked (0: the source's) */
	uint64_t src_size;         /* clone: the source's size (grown after when less) */
	int status;                /* the gate's result, set on the home worker */
	struct admin_later *later; /* done by gate_done, exactly once */
	int64_t started_ns;        /* tsr_mono_ns() at the request (the log line) */
	uint64_t epoch;            /* local_copy create/delete: its fence (SNAP_NO_EPOCH: none) */
};

static void snap_finish(struct tsr_admin_server *srv, const struct gate_later *g, int ret,
			Tessera__Admin__Response *resp);

/* On the volume's home worker: the gate let the volume go (or failed). */
static void gate_done(void *arg, int status)
{
	struct gate_later *g = arg;

	g->status = status;
	admin_later_done(g->later);
}

static const char *snap_op_name(enum tsr_snap_op op)
{
	return op == TSR_SNAP_CREATE ? "snapshot create" : op == TSR_SNAP_DELETE ?
	       "snapshot delete" : "clone";
}

/* Back on the loop (admin_later fn): the reply. */
static void gate_reply(struct tsr_admin_server *srv, void *arg, Tessera__Admin__Response *resp)
{
	struct gate_later *g = arg;
	int ret = g->status;

	/* its last client left meanwhile: the store directly (nothing writes
	 * it; -EBUSY if one came back, the message says to retry) */
	if (ret == -ENOENT)
		ret = store_snap(srv, g->vol, &g->req, SNAP_NO_EPOCH);
	snap_finish(srv, g, ret, resp);
	/* the server's side of the round trip (bench/snapshot.sh reads it) */
	tsr_info("admin: %s '%s@%s': replied after %.1f ms%s", snap_op_name(g->req.op), g->vol,
		 g->req.op == TSR_SNAP_CLONE ? g->req.clone : g->req.snap,
		 (double)(tsr_mono_ns() - g->started_ns) / 1e6, resp->error ? " (failed)" : "");
	free(g);
}

/*
 * Start g->req on g->vol's gate without waiting.  1: the reply comes later
 * (g is the later handle's now, a copy of tmpl); 0: no later reply is
 * possible (not inside a connection's request, out of memory): the caller
 * waits; -ENOENT: no open handle here (the store acts, nothing writes it);
 * other -errno from tsr_volset_snap_async (-ESHUTDOWN).
 */
static int gate_start(struct tsr_admin_server *srv, const struct gate_later *tmpl)
{
	struct gate_later *g = malloc(sizeof(*g));
	int ret;

	if (g == NULL)
		return 0;
	*g = *tmpl;
	g->started_ns = tsr_mono_ns();
	g->later = admin_later_begin(srv, gate_reply, g);
	if (g->later == NULL) {
		free(g);
		return 0;
	}
	ret = tsr_volset_snap_async(srv->vols, g->vol, &g->req, gate_done, g);
	if (ret == 0)
		return 1;
	admin_later_cancel(g->later);
	free(g);
	return ret;
}

/*
 * Run g->req on volume g->vol at one point of its write order: through the
 * gate of its layout when it is open on this node (a local volume with NBD
 * clients, or the coordinator the cluster layer registered: the mirror cuts
 * every copy), answered later (1 returned; the loop is not blocked), else
 * on the store directly, where nothing writes it.  local_copy (node to
 * node): this store's copy only, never the gate.  In cluster mode a volume
 * not attached here is the cluster layer's business: -ENOTCONN.  Waits for
 * the gate (tsr_volset_snap) only when no later reply can be taken.
 */
static int snap_run(struct tsr_admin_server *srv, const struct gate_later *g, bool local_copy)
{
	int ret = -ENOENT;

	/* a copy lacking the snapshot answers -ENOENT, which the handling node
	 * takes as done there (cluster/snapshot.c delete_result): not an ERROR */
	if (local_copy && g->req.op == TSR_SNAP_DELETE && g->epoch == SNAP_NO_EPOCH)
		return tsr_store_snap_delete_missing_ok(srv->store, g->vol, g->req.snap);
	if (local_copy)
		return store_snap(srv, g->vol, &g->req, g->epoch);
	for (int tries = 0; tries < 2; tries++) {
		ret = gate_start(srv, g);
		if (ret == 0)
			ret = tsr_volset_snap(srv->vols, g->vol, &g->req);
		if (ret != -ENOENT)
			return ret;
		if (srv->cluster.handle != NULL) {
			struct tsr_vol_info info;

			/* -ENOENT for a volume the store lacks, else not attached here */
			return tsr_store_vol_info(srv->store, g->vol, &info) ?: -ENOTCONN;
		}
		ret = store_snap(srv, g->vol, &g->req, SNAP_NO_EPOCH);
		/* -EBUSY: a client opened the volume meanwhile; its gate cuts it */
		if (ret != -EBUSY)
			return ret;
	}
	return ret;
}

/* A person's message for a snapshot operation's error. */
static void snap_fail(struct tsr_admin_server *srv, Tessera__Admin__Response *resp, int err,
		      const char *what, const char *vol, const char *snap)
{
	struct tsr_vol_info info;

	switch (err) {
	case -ENOENT:
		if (tsr_store_vol_info(srv->store, vol, &info) == -ENOENT)
			admin_fail(resp, err, "volume '%s' not found (tessera volume list shows what "
				   "exists)", vol);
		else
			admin_fail(resp, err, "snapshot '%s@%s' not found (tessera snapshot list %s "
				   "shows them)", vol, snap, vol);
		return;
	case -EEXIST:
		admin_fail(resp, err, "snapshot '%s@%s' already exists (tessera snapshot list %s "
			   "shows them; pick another name)", vol, snap, vol);
		return;
	case -EOPNOTSUPP:
		admin_fail(resp, err, "cannot %s: this tesserad keeps its volumes on a raw device "
			   "(--device), which has no snapshots or clones; use a data directory "
			   "store for them", what);
		return;
	case -EBUSY:
		if (tsr_store_vol_rollback_running(srv->store, vol))
			admin_fail(resp, err, "cannot %s of '%s' now: a rollback of it is running "
				   "on this node; try again when it ends", what, vol);
		else
			admin_fail(resp, err, "cannot %s of '%s' now: it is busy (writes that could "
				   "not be drained, or the snapshot is being read by an NBD client or "
				   "a copy's resync); try again", what, vol);
		return;
	case -EAGAIN:
		admin_fail(resp, err, "volume '%s' has an unfinished rollback: run tessera volume "
			   "rollback again to finish it first", vol);
		return;
	case -ENOTCONN:
		admin_fail(resp, err, "volume '%s' is not attached on this node: a replicated "
			   "volume's snapshots are cut by its coordinator (send the command to "
			   "the cluster, or attach the volume here)", vol);
		return;
	case -ESHUTDOWN:
		admin_fail(resp, err, "cannot %s: tesserad is shutting down", what);
		return;
	case -EINVAL:
		admin_fail(resp, err, "cannot %s '%s@%s': invalid name (use 1 to 63 of A-Z a-z "
			   "0-9 . _ - starting with a letter or digit)", what, vol, snap);
		return;
	default:
		admin_fail(resp, err, "cannot %s '%s@%s': %s (see tesserad's log)", what, vol, snap,
			   strerror(-err));
		return;
	}
}

/* Reply with snapshot vol@snap: for show with its space figures; just cut
 * (created) from the catalogue's fields only, no space scan of its layers
 * (it holds no block yet; snapshot show counts them). */
static void reply_snap_info(struct tsr_admin_server *srv, const char *vol, const char *snap,
			    bool created, Tessera__Admin__Response *resp)
{
	struct tsr_snap_info info;
	int ret = created ? tsr_store_snap_row_info(srv->store, vol, snap, &info)
			  : tsr_store_snap_info(srv->store, vol, snap, &info);

	if (ret) {
		snap_fail(srv, resp, ret, "show snapshot", vol, snap);
		return;
	}
	resp->snapshots = malloc(sizeof(*resp->snapshots));
	if (resp->snapshots == NULL ||
	    (resp->snapshots[0] = build_snapshot(srv, vol, &info)) == NULL) {
		admin_fail(resp, -ENOMEM, "out of memory in tesserad");
		return;
	}
	resp->n_snapshots = 1;
}

static void op_snapshot_create(struct tsr_admin_server *srv,
			       const Tessera__Admin__SnapshotCreate *c,
			       Tessera__Admin__Response *resp)
{
	struct gate_later g = { .req = { .op = TSR_SNAP_CREATE }, .epoch = SNAP_NO_EPOCH };
	struct tsr_vol_info info;
	char sz[32], vsz[32];
	int ret;

	split_ref(c->volume, c->name, g.vol, g.req.snap);
	/* a detached volume's cut on each copy at the record's size
	 * (cluster/snapshot.c; the parser allows a size with local_copy only):
	 * a copy grown past the record still cuts that size */
	if (c->local_copy)
		g.req.size = c->size;
	/* a detached volume's create fenced by the record's epoch at its start */
	if (c->local_copy && c->epoch_set)
		g.epoch = c->epoch;
	ret = snap_run(srv, &g, c->local_copy);
	if (ret == -ESTALE && g.epoch != SNAP_NO_EPOCH) {
		admin_fail(resp, ret, "cannot cut snapshot '%s@%s' on this node's copy: '%s' was "
			   "attached meanwhile (its epoch is past %llu): retry", g.vol, g.req.snap,
			   g.vol, (unsigned long long)g.epoch);
		return;
	}
	if (ret == -EINVAL && g.req.size != 0 &&
	    tsr_store_vol_info(srv->store, g.vol, &info) == 0 && g.req.size > info.size) {
		tsr_format_size(g.req.size, sz, sizeof(sz));
		tsr_format_size(info.size, vsz, sizeof(vsz));
		admin_fail(
		    resp, ret,
		    "cannot cut snapshot '%s@%s' at the volume's size %s: this "
		    "node's copy is %s, smaller than the volume's record: replace it (tessera "
		    "volume replace-replica %s --node NODE --to NODE)",
		    g.vol, g.req.snap, sz, vsz, g.vol);
		return;
	}
	if (ret != 1) /* 1: an open volume's gate cuts it, the reply comes then */
		snap_finish(srv, &g, ret, resp);
}

/* True when an NBD client reads snapshot vol@snap. */
static bool snapshot_exported(struct tsr_admin_server *srv, const char *vol, const char *snap)
{
	char export[2 * 64];

	snprintf(export, sizeof(export), "%s@%s", vol, snap);
	return tsr_volset_in_use(srv->vols, export);
}

static void op_snapshot_delete(struct tsr_admin_server *srv,
			       const Tessera__Admin__SnapshotDelete *d,
			       Tessera__Admin__Response *resp)
{
	struct gate_later g = { .req = { .op = TSR_SNAP_DELETE }, .epoch = SNAP_NO_EPOCH };
	int ret;

	split_ref(d->volume, d->name, g.vol, g.req.snap);
	if (d->local_copy && d->epoch_set)
		g.epoch = d->epoch;
	if (snapshot_exported(srv, g.vol, g.req.snap)) {
		admin_fail(resp, -EBUSY, "snapshot '%s@%s' is exported to an NBD client; "
			   "disconnect it first", g.vol, g.req.snap);
		return;
	}
	ret = snap_run(srv, &g, d->local_copy);
	if (ret == -ESTALE && g.epoch != SNAP_NO_EPOCH) {
		admin_fail(resp, ret, "cannot delete snapshot '%s@%s' on this node's copy: '%s' "
			   "was attached meanwhile (its epoch is past %llu): retry", g.vol,
			   g.req.snap, g.vol, (unsigned long long)g.epoch);
		return;
	}
	if (ret != 1) /* 1: the gate of the open volume deletes it, the reply comes then */
		snap_finish(srv, &g, ret, resp);
}

static void op_snapshot_list(struct tsr_admin_server *srv, const Tessera__Admin__SnapshotList *l,
			     Tessera__Admin__Response *resp)
{
	struct tsr_snap_info *infos = NULL;
	size_t count = 0, i;
	int ret;

	ret = l->with_deleting ? tsr_store_snap_list_all(srv->store, l->volume, &infos, &count) :
				 tsr_store_snap_list(srv->store, l->volume, &infos, &count);
	if (ret) {
		snap_fail(srv, resp, ret, "list snapshots", l->volume, "");
		return;
	}
	resp->snapshots = calloc(count ? count : 1, sizeof(*resp->snapshots));
	if (resp->snapshots == NULL)
		goto nomem;
	for (i = 0; i < count; i++) {
		resp->snapshots[i] = build_snapshot(srv, l->volume, &infos[i]);
		if (resp->snapshots[i] == NULL)
			goto nomem;
		resp->n_snapshots++;
	}
	free(infos);
	return;
nomem:
	free(infos);
	admin_fail(resp, -ENOMEM, "out of memory in tesserad");
}

static void op_snapshot_show(struct tsr_admin_server *srv, const Tessera__Admin__SnapshotShow *sh,
			     Tessera__Admin__Response *resp)
{
	char vol[64], snap[64];

	split_ref(sh->volume, sh->name, vol, snap);
	reply_snap_info(srv, vol, snap, false, resp);
}

/* Extents in one reply: each takes up to ~20 bytes of the 1 MiB frame. */
#define MAX_DIFF_EXTENTS 50000

/* The page size: MAX_DIFF_EXTENTS, or TSR_DIFF_PAGE_EXTENTS (1..50000) for
 * tests that page a small diff. */
static size_t diff_page_extents(void)
{
	const char *env = getenv("TSR_DIFF_PAGE_EXTENTS");
	char *end;
	unsigned long v;

	if (env == NULL || env[0] == '\0')
		return MAX_DIFF_EXTENTS;
	v = strtoul(env, &end, 10);
	if (*end != '\0' || v == 0 || v > MAX_DIFF_EXTENTS)
		return MAX_DIFF_EXTENTS;
	return v;
}

static void op_snapshot_diff(struct tsr_admin_server *srv, const Tessera__Admin__SnapshotDiff *d,
			     Tessera__Admin__Response *resp)
{
	struct tsr_extent *ext = NULL;
	struct tsr_snap_info info;
	size_t count = 0, i, first = 0, end, page = diff_page_extents();
	const char *to = d->to[0] ? d->to : NULL;
	char vol[64], from[64];
	int ret;

	split_ref(d->volume, d->from, vol, from);
	ret = tsr_store_snap_diff(srv->store, vol, from, to, &ext, &count);
	if (ret == -ENOENT && to != NULL && tsr_store_snap_info(srv->store, vol, from, &info) == 0) {
		snap_fail(srv, resp, ret, "diff", vol, to);
		return;
	}
	if (ret == -EINVAL) {
		admin_fail(resp, ret, "snapshot '%s@%s' is older than '%s@%s': give the older one "
			   "first (tessera snapshot list %s shows their order)", vol, to, vol, from,
			   vol);
		return;
	}
	if (ret) {
		snap_fail(srv, resp, ret, "diff", vol, from);
		return;
	}
	/* the page: from the first extent that ends after start, at most page of them */
	while (first < count && ext[first].offset + ext[first].length <= d->start)
		first++;
	end = count - first > page ? first + page : count;
	if (end < count && !d->paged) {
		admin_fail(resp, -E2BIG, "the diff of '%s' from '%s' to %s%s has %zu extents, more "
			   "than one reply holds (%zu), and this client does not ask for pages: use "
			   "a newer tessera, or diff a shorter span (a snapshot in between)",
			   vol, from, to ? "" : "the head", to ? to : "", count - first, page);
		free(ext);
		return;
	}
	if (end < count)
		resp->diff_next = ext[end].offset;
	resp->extents = calloc(end > first ? end - first : 1, sizeof(*resp->extents));
	if (resp->extents == NULL)
		goto nomem;
	for (i = first; i < end; i++) {
		Tessera__Admin__Extent *e = malloc(sizeof(*e));

		if (e == NULL)
			goto nomem;
		tessera__admin__extent__init(e);
		e->offset = ext[i].offset;
		e->length = ext[i].length;
		e->zero = (ext[i].flags & TSR_EXTENT_ZERO) != 0;
		resp->extents[resp->n_extents++] = e;
		resp->diff_bytes += ext[i].length;
	}
	free(ext);
	return;
nomem:
	free(ext);
	admin_fail(resp, -ENOMEM, "out of memory in tesserad");
}

int admin_rollback_fenced(struct tsr_store *store, const char *vol, const char *snap,
			  uint64_t epoch, bool nowait, bool *rolled)
{
	int ret;

	*rolled = false;
	ret = tsr_store_vol_set_epoch(store, vol, epoch);
	if (ret)
		return ret;
	/* fenced again at the store's step 1, under its lock (review 16b I2) */
	ret = nowait ? tsr_store_vol_rollback_epoch_nowait(store, vol, snap, epoch) :
		       tsr_store_vol_rollback_epoch(store, vol, snap, epoch);
	if (ret)
		return ret;
	*rolled = true;
	return tsr_store_vol_set_epoch(store, vol, epoch);
}

/* The reply of a copy's rollback of vol to snap: ret its result (rolled:
 * admin_rollback_fenced's, epoch the fence asked, nowait: the store's
 * _nowait call was used, on the loop). */
static void rollback_answer(struct tsr_admin_server *srv, const char *vol, const char *snap,
			    uint64_t epoch, int ret, bool rolled, bool nowait,
			    Tessera__Admin__Response *resp)
{
	char why[512];

	switch (ret) {
	case 0:
		reply_volume(srv, vol, resp);
		return;
	case -ESTALE:
		admin_fail(resp, ret, "cannot roll back '%s' on this node's copy: '%s' was "
			   "attached meanwhile (its epoch is past %llu)%s", vol, vol,
			   (unsigned long long)epoch, rolled ? "; this copy was rolled back "
			   "around that attach" : "; this copy is not rolled back");
		return;
	case -EBUSY:
		/* to another snapshot, or to the same one (a retry that did not
		 * wait: nowait; or still running past the store's wait) */
		if (tsr_store_rollback_busy_msg(srv->store, vol, snap, nowait, why, sizeof(why)))
			admin_fail(resp, ret, "volume '%s' on this node: %s", vol, why);
		else if (tsr_volset_in_use(srv->vols, vol))
			admin_fail(resp, ret, "volume '%s' is in use by an NBD client; disconnect "
				   "it first", vol);
		else /* open with no NBD client here: a coordinator's peer session */
			admin_fail(resp, ret, "this node's copy of '%s' is still open by a "
				   "coordinator's session%s (attached again, or its detach's close "
				   "is late: see this node's log); check tessera volume show %s, "
				   "then run the rollback again", vol,
				   nowait ? "" : " after a 10 s wait for its close", vol);
		return;
	default:
		snap_fail(srv, resp, ret, "roll back to", vol, snap);
		return;
	}
}

/* A local_copy rollback in a thread of its own.  Built on the loop, read by
 * the thread until admin_later_done (its last touch: the admin server's
 * destroy waits for it, before the store closes), then by the loop in
 * rollback_later_reply, which frees it. */
struct rollback_later {
	struct tsr_store *store;
	char vol[64], snap[64];
	bool fenced;               /* VolumeRollback.epoch_set: epoch is the fence */
	uint64_t epoch;
	int ret;                   /* the store's answer (the thread's) */
	bool rolled;               /* admin_rollback_fenced's */
	bool on_loop;              /* run inline on the loop: the store's no-wait
				    * calls (-EBUSY, review 16d N5) */
	struct admin_later *later;
};

/* Tests only: while the file named by $TSR_TEST_ROLLBACK_COPY_HOLD_FILE
 * exists (30 s at most), a local_copy rollback waits before its store
 * call; FILE.held is made when it starts waiting.
 * $TSR_TEST_SNAP_LOCAL_CUT_INLINE set (not "0"): on the loop, as before
 * (the A/B, as for the handling node's part, cluster/snapshot.c). */
static void rollback_copy_run(struct rollback_later *rl)
{
	tsr_test_hold_file("TSR_TEST_ROLLBACK_COPY_HOLD_FILE", true);
	/* a detached volume's rollback fenced by the record's epoch at its
	 * start (cluster/snapshot.c): refused once an attach reached this copy */
	rl->rolled = false;
	if (rl->fenced)
		rl->ret = admin_rollback_fenced(rl->store, rl->vol, rl->snap, rl->epoch,
						rl->on_loop, &rl->rolled);
	else if (rl->on_loop)
		rl->ret = tsr_store_vol_rollback_nowait(rl->store, rl->vol, rl->snap);
	else
		rl->ret = tsr_store_vol_rollback(rl->store, rl->vol, rl->snap);
}

static void *rollback_copy_main(void *arg)
{
	struct rollback_later *rl = arg;

	tsr_log_set_thread_name("copy-rollback");
	rollback_copy_run(rl);
	admin_later_done(rl->later); /* rl is the loop's now */
	return NULL;
}

/* Back on the loop (admin_later fn): the reply. */
static void rollback_later_reply(struct tsr_admin_server *srv, void *arg,
				 Tessera__Admin__Response *resp)
{
	struct rollback_later *rl = arg;

	rollback_answer(srv, rl->vol, rl->snap, rl->epoch, rl->ret, rl->rolled, rl->on_loop,
			resp);
	free(rl);
}

/* Start rl's rollback in a detached thread, the reply later: true; false (no
 * later reply possible, no thread, the A/B): the caller runs it here. */
static bool rollback_later_start(struct tsr_admin_server *srv, struct rollback_later *tmpl)
{
	struct rollback_later *rl;
	pthread_attr_t attr;
	pthread_t t;
	int ret;

	if (tsr_test_env_on("TSR_TEST_SNAP_LOCAL_CUT_INLINE") ||
	    (rl = malloc(sizeof(*rl))) == NULL)
		return false;
	*rl = *tmpl;
	rl->later = admin_later_begin(srv, rollback_later_reply, rl);
	if (rl->later == NULL) {
		free(rl);
		return false;
	}
	ret = pthread_attr_init(&attr);
	if (ret == 0) {
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		ret = pthread_create(&t, &attr, rollback_copy_main, rl);
		pthread_attr_destroy(&attr);
	}
	if (ret == 0)
		return true;
	admin_later_cancel(rl->later);
	free(rl);
	return false;
}

static void op_volume_rollback(struct tsr_admin_server *srv,
			       const Tessera__Admin__VolumeRollback *r,
			       Tessera__Admin__Response *resp)
{
	struct rollback_later rl = { .store = srv->store };
	char vol[64], snap[64];
	bool rolled = false;
	int ret;

	split_ref(r->volume, r->snapshot, vol, snap);
	if (srv->cluster.handle != NULL && !r->local_copy) {
		/* one copy rolled back alone would diverge from the others */
		admin_fail(resp, -EOPNOTSUPP, "volume '%s' is replicated: roll it back through the "
			   "cluster (send the command to any node of the cluster), not on one "
			   "node's copy", vol);
		return;
	}
	if (tsr_volset_layout(srv->vols, vol) != NULL) {
		admin_fail(resp, -EBUSY, "volume '%s' is attached on this node; detach it first "
			   "(tessera volume detach %s)", vol, vol);
		return;
	}
	if (tsr_volset_in_use(srv->vols, vol)) {
		admin_fail(resp, -EBUSY, "volume '%s' is in use by an NBD client; disconnect it "
			   "first", vol);
		return;
	}
	if (r->local_copy) {
		/* one copy of a detached volume (the store's checks hold in the
		 * thread: an open copy -EBUSY, the fence -ESTALE) */
		snprintf(rl.vol, sizeof(rl.vol), "%s", vol);
		snprintf(rl.snap, sizeof(rl.snap), "%s", snap);
		rl.fenced = r->epoch_set;
		rl.epoch = r->epoch;
		if (rollback_later_start(srv, &rl))
			return;
		rl.on_loop = true; /* no thread: here, never the store's wait */
		rollback_copy_run(&rl);
		rollback_answer(srv, vol, snap, r->epoch, rl.ret, rl.rolled, true, resp);
		return;
	}
	/* on the loop: never the store's wait for a rollback of vol to the same
	 * snapshot running in a copy-rollback thread (answered -EBUSY instead) */
	if (tsr_store_vol_rollback_running(srv->store, vol)) {
		admin_fail(resp, -EBUSY,
			   "volume '%s': a rollback of it is running on this node; "
			   "wait for it to end, then run the rollback again",
			   vol);
		return;
	}
	/* no-wait: a copy-rollback thread reaching the store between that check
	 * and this call is answered -EBUSY too (review 16d N5) */
	ret = tsr_store_vol_rollback_nowait(srv->store, vol, snap);
	rollback_answer(srv, vol, snap, r->epoch, ret, rolled, true, resp);
}

/* VolumeCreate with from_volume: a clone of a volume's content now or of a snapshot. */
static void op_volume_clone(struct tsr_admin_server *srv, const Tessera__Admin__VolumeCreate *c,
			    Tessera__Admin__Response *resp)
{
	struct gate_later g = { .req = { .op = TSR_SNAP_CLONE }, .size = c->size };
	struct tsr_snap_info snap_info;
	struct tsr_vol_info vol_info;
	char src_sz[32];
	int ret;

	split_ref(c->from_volume, c->from_snapshot, g.vol, g.req.snap);
	snprintf(g.req.clone, sizeof(g.req.clone), "%s", c->name);
	if (g.req.snap[0]) {
		ret = tsr_store_snap_info(srv->store, g.vol, g.req.snap, &snap_info);
		g.src_size = snap_info.size;
	} else {
		ret = tsr_store_vol_info(srv->store, g.vol, &vol_info);
		g.src_size = vol_info.size;
	}
	if (ret) {
		snap_fail(srv, resp, ret, "clone", g.vol, g.req.snap);
		return;
	}
	tsr_format_size(g.src_size, src_sz, sizeof(src_sz));
	if (c->size != 0 && c->size < g.src_size) {
		admin_fail(resp, -EINVAL, "a clone starts as large as its source '%s%s%s' (%s): "
			   "give no size, or %s or more", g.vol, g.req.snap[0] ? "@" : "",
			   g.req.snap, src_sz, src_sz);
		return;
	}
	ret = snap_run(srv, &g, c->local_copy);
	if (ret != 1) /* 1: the source is open: its gate clones it, the reply comes then */
		snap_finish(srv, &g, ret, resp);
}

/* The clone g->req.clone was made (ret 0) or not: grow it to the size asked,
 * and the reply. */
static void clone_finish(struct tsr_admin_server *srv, const struct gate_later *g, int ret,
			 Tessera__Admin__Response *resp)
{
	struct tsr_vol_info vol_info;
	char src_sz[32], sz[32];

	switch (ret) {
	case 0:
		break;
	case -EEXIST:
		if (tsr_store_vol_info(srv->store, g->req.clone, &vol_info) == 0) {
			admin_fail(resp, ret, "volume '%s' already exists (tessera volume show %s "
				   "describes it; pick another name)", g->req.clone, g->req.clone);
			return;
		}
		/* fall through */
	default:
		snap_fail(srv, resp, ret, "clone", g->vol, g->req.snap);
		return;
	}
	if (g->size > g->src_size) {
		tsr_format_size(g->src_size, src_sz, sizeof(src_sz));
		tsr_format_size(g->size, sz, sizeof(sz));
		ret = tsr_store_vol_resize(srv->store, g->req.clone, g->size);
		if (ret) {
			admin_fail(resp, ret, "clone '%s' was created at %s but could not grow to %s: "
				   "%s (tessera volume resize %s --size %s)", g->req.clone, src_sz, sz,
				   strerror(-ret), g->req.clone, sz);
			return;
		}
	}
	reply_volume(srv, g->req.clone, resp);
}

/* The reply of a snapshot create, delete or clone whose result is ret
 * (at once, or later from gate_reply). */
static void snap_finish(struct tsr_admin_server *srv, const struct gate_later *g, int ret,
			Tessera__Admin__Response *resp)
{
	switch (g->req.op) {
	case TSR_SNAP_CREATE:
		if (ret)
			snap_fail(srv, resp, ret, "create a snapshot", g->vol, g->req.snap);
		else
			reply_snap_info(srv, g->vol, g->req.snap, true, resp);
		return;
	case TSR_SNAP_DELETE:
		if (ret)
			snap_fail(srv, resp, ret, "delete snapshot", g->vol, g->req.snap);
		return;
	default:
		clone_finish(srv, g, ret, resp);
		return;
	}
}

static void op_volume_create(struct tsr_admin_server *srv, const Tessera__Admin__VolumeCreate *c,
			     Tessera__Admin__Response *resp)
{
	struct tsr_vol_info info;
	unsigned flags = 0;
	uint32_t unit = 0;
	char sz[32];
	int ret;

	if (c->ec != NULL && c->ec[0] != '\0' && c->local_copy && srv->cluster.handle != NULL &&
	    (c->from_volume == NULL || c->from_volume[0] == '\0')) {
		/* a cluster node's chunk copy of an ec volume (cluster/volume.c sends
		 * the geometry with local_copy): marked in the store so that its
		 * snapshots are never served as images (vol.c) */
		flags = TSR_VOL_EC_CHUNK;
		/* its redirect map is cut in stripe units (store/rowmap.c) */
		unit = c->stripe_unit ? c->stripe_unit : TSR_EC_DEFAULT_UNIT;
	} else if (c->ec != NULL && c->ec[0] != '\0') {
		/* a standalone node has one store: nowhere to put k+m chunks */
		admin_fail(resp, -EINVAL, "volume '%s': erasure coding (ec %s) needs a cluster of "
			   "at least K+M nodes (start tesserad with --meta / --join); a standalone "
			   "node keeps one copy", c->name, c->ec);
		return;
	}
	if (c->from_volume != NULL && c->from_volume[0] != '\0') {
		op_volume_clone(srv, c, resp);
		return;
	}

	tsr_format_size(c->size, sz, sizeof(sz));
	ret = tsr_store_vol_create_flags(srv->store, c->name, c->size, flags, unit, &info);
	switch (ret) {
	case 0:
		reply_volume(srv, c->name, resp);
		return;
	case -EEXIST:
		/* the copy met, for a cluster's replace (its uuid: cluster/volume.c) */
		reply_volume(srv, c->name, resp);
		admin_fail(resp, ret, "volume '%s' already exists (tessera volume show %s describes "
			   "it; pick another name)", c->name, c->name);
		return;
	case -ENOSPC:
		if (srv->device && srv->device[0])
			admin_fail(resp, ret, "no space for volume '%s' of %s on the device %s "
				   "(delete volumes or use a smaller size)", c->name, sz, srv->device);
		else
			admin_fail(resp, ret, "no space for volume '%s' of %s: the file system of %s "
				   "is full (delete volumes or snapshots, or free space on it)",
				   c->name, sz, srv->data_dir);
		return;
	case -EINVAL:
		admin_fail(resp, ret, "cannot create volume '%s' of %s: invalid name or size "
			   "(tessera volume create --help)", c->name, sz);
		return;
	default:
		admin_fail(resp, ret, "cannot create volume '%s': %s (see tesserad's log)", c->name,
			   strerror(-ret));
		return;
	}
}

static void op_volume_list(struct tsr_admin_server *srv, Tessera__Admin__Response *resp)
{
	struct tsr_vol_info *infos = NULL;
	size_t count = 0, i;
	int ret;

	ret = tsr_store_vol_list(srv->store, &infos, &count);
	if (ret) {
		admin_fail(resp, ret, "cannot list volumes: %s (see tesserad's log)", strerror(-ret));
		return;
	}
	resp->volumes = calloc(count ? count : 1, sizeof(*resp->volumes));
	if (resp->volumes == NULL)
		goto nomem;
	for (i = 0; i < count; i++) {
		resp->volumes[i] = build_volume(srv, &infos[i], false);
		if (resp->volumes[i] == NULL)
			goto nomem;
		resp->n_volumes++;
	}
	free(infos);
	return;
nomem:
	free(infos);
	admin_fail(resp, -ENOMEM, "out of memory in tesserad");
}

static void op_volume_resize(struct tsr_admin_server *srv, const Tessera__Admin__VolumeResize *r,
			     Tessera__Admin__Response *resp)
{
	struct tsr_vol_info info;
	char old_sz[32], new_sz[32];
	int ret;

	ret = tsr_store_vol_info(srv->store, r->name, &info);
	if (ret == 0 && r->check_only && r->size == 0) {
		/* a cluster asking for this copy's uuid, whatever its size (a
		 * claim's release: cluster replication.c claim_leftovers_delete) */
		reply_volume(srv, r->name, resp);
		return;
	}
	if (ret == 0 && r->size < info.size) {
		/* a node asking for its copy (check_only, local_copy: a detach
		 * waiting for its close, cluster/closewait.c) gets it also when it
		 * is larger than the record (a resize stopped after its grow step) */
		if (r->check_only && r->local_copy)
			reply_volume(srv, r->name, resp);
		admin_fail(resp, -EINVAL, "volume '%s' can only grow: it is %s, asked for %s",
			   r->name, tsr_format_size(info.size, old_sz, sizeof(old_sz)),
			   tsr_format_size(r->size, new_sz, sizeof(new_sz)));
		return;
	}
	if (ret == 0 && r->size != info.size)
		ret = r->check_only ? tsr_store_vol_resize_check(srv->store, r->name, r->size) :
		      tsr_store_vol_resize(srv->store, r->name, r->size);
	switch (ret) {
	case 0:
		reply_volume(srv, r->name, resp);
		return;
	case -ENOENT:
		admin_fail(resp, ret, "volume '%s' not found (tessera volume list shows what exists)",
			   r->name);
		return;
	case -ENOSPC:
		tsr_format_size(r->size, new_sz, sizeof(new_sz));
		if (srv->device && srv->device[0])
			admin_fail(resp, ret, "no space to grow volume '%s' to %s on the device %s",
				   r->name, new_sz, srv->device);
		else
			admin_fail(resp, ret, "no space to grow volume '%s' to %s: the file system "
				   "of %s is full (delete volumes or snapshots, or free space on it)",
				   r->name, new_sz, srv->data_dir);
		return;
	case -EINVAL:
		admin_fail(resp, ret, "cannot resize volume '%s' to %s: sizes grow only, in "
			   "multiples of 4 KiB", r->name,
			   tsr_format_size(r->size, new_sz, sizeof(new_sz)));
		return;
	default:
		admin_fail(resp, ret, "cannot resize volume '%s': %s (see tesserad's log)", r->name,
			   strerror(-ret));
		return;
	}
}

static void op_volume_delete(struct tsr_admin_server *srv, const Tessera__Admin__VolumeDelete *d,
			     Tessera__Admin__Response *resp)
{
	struct tsr_snap_info *snaps = NULL;
	size_t count = 0, i;
	char other[37] = "";
	int ret;

	/* a snapshot being read keeps its volume too */
	if (tsr_store_snap_list(srv->store, d->name, &snaps, &count) == 0) {
		for (i = 0; i < count; i++) {
			if (snapshot_exported(srv, d->name, snaps[i].name)) {
				admin_fail(resp, -EBUSY, "snapshot '%s@%s' is exported to an NBD "
					   "client; disconnect it first", d->name, snaps[i].name);
				free(snaps);
				return;
			}
		}
		free(snaps);
	}
	if (tsr_volset_in_use(srv->vols, d->name)) {
		ret = -EBUSY;
	} else {
		/* the cluster's leftover sweep checks and deletes atomically against us */
		struct tsr_vol_info info;

		ret = 0;
		if (srv->cluster.copy_delete_lock)
			srv->cluster.copy_delete_lock(srv->cluster.arg, true);
		/* a cluster's delete of one copy it knows (its uuid): another copy
		 * made under that name meanwhile is left alone */
		if (d->local_copy && d->uuid && d->uuid[0]) {
			ret = tsr_store_vol_info(srv->store, d->name, &info);
			if (ret == 0 && strcmp(info.uuid, d->uuid) != 0) {
				snprintf(other, sizeof(other), "%s", info.uuid);
				ret = -ESTALE;
			}
		}
		if (ret == 0)
			ret = tsr_store_vol_delete(srv->store, d->name);
		if (srv->cluster.copy_delete_lock)
			srv->cluster.copy_delete_lock(srv->cluster.arg, false);
	}
	switch (ret) {
	case 0:
		return;
	case -ESTALE:
		admin_fail(resp, ret, "the store copy of '%s' here is another one (uuid %s, not %s): "
			   "left alone", d->name, other, d->uuid);
		return;
	case -ENOENT:
		admin_fail(resp, ret, "volume '%s' not found (tessera volume list shows what exists)",
			   d->name);
		return;
	case -EBUSY:
		if (tsr_store_vol_rollback_running(srv->store, d->name))
			admin_fail(resp, ret, "volume '%s' is being rolled back on this node: "
				   "delete it when the rollback ends", d->name);
		else if (tsr_volset_in_use(srv->vols, d->name))
			admin_fail(resp, ret, "volume '%s' is in use by an NBD client (disconnect "
				   "it first)", d->name);
		else /* open with no NBD client here: a coordinator's peer session */
			admin_fail(resp, ret, "this node's copy of '%s' is still open by a "
				   "coordinator's session (attached again, or its detach's close is "
				   "late: see this node's log); run the delete again in a moment",
				   d->name);
		return;
	default:
		admin_fail(resp, ret, "cannot delete volume '%s': %s (see tesserad's log)", d->name,
			   strerror(-ret));
		return;
	}
}

static char **copy_strings(char *const *v, size_t n)
{
	char **out = calloc(n ? n : 1, sizeof(char *));

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		out[i] = admin_strdup(v[i]);
		if (out[i] == NULL) {
			while (i--)
				free(out[i]);
			free(out);
			return NULL;
		}
	}
	return out;
}

Tessera__Admin__DataFs *admin_data_fs_unknown(const char *why)
{
	Tessera__Admin__DataFs *fs = malloc(sizeof(*fs));

	if (fs == NULL)
		return NULL;
	tessera__admin__data_fs__init(fs);
	fs->error = admin_strdup(why);
	if (fs->error == NULL) {
		free(fs);
		return NULL;
	}
	return fs;
}

Tessera__Admin__DataFs *admin_data_fs(const char *dir)
{
	Tessera__Admin__DataFs *fs;
	struct statvfs st;
	char why[256];

	if (statvfs(dir, &st) < 0) {
		snprintf(why, sizeof(why), "statvfs %s: %s", dir, strerror(errno));
		return admin_data_fs_unknown(why);
	}
	fs = admin_data_fs_unknown("");
	if (fs == NULL)
		return NULL;
	fs->size = (uint64_t)st.f_blocks * st.f_frsize;
	fs->free = (uint64_t)st.f_bfree * st.f_frsize;
	fs->avail = (uint64_t)st.f_bavail * st.f_frsize;
	return fs;
}

int admin_store_allocated(struct tsr_store *store, uint64_t *out)
{
	return tsr_store_allocated(store, out);
}

static void op_status(struct tsr_admin_server *srv, Tessera__Admin__Response *resp)
{
	Tessera__Admin__Status *s;
	struct tsr_vol_info *infos = NULL;
	char *admin_names[2];
	size_t count = 0, i;
	time_t now = time(NULL);
	int ret;

	s = malloc(sizeof(*s));
	if (s == NULL)
		goto nomem;
	tessera__admin__status__init(s);
	resp->status = s;
	s->version = admin_strdup(TSR_VERSION);
	s->pid = (int32_t)getpid();
	s->data_dir = admin_strdup(srv->data_dir);
	s->io_backend = admin_strdup(srv->io_backend);
	s->device = admin_strdup(srv->device);
	s->workers = srv->workers;
	s->started = srv->started;
	s->uptime_sec = now > srv->started ? (uint64_t)(now - srv->started) : 0;
	if (!s->version || !s->data_dir || !s->io_backend || !s->device)
		goto nomem;
	s->nbd_listeners = copy_strings(srv->nbd_listeners, srv->n_nbd_listeners);
	if (s->nbd_listeners == NULL)
		goto nomem;
	s->n_nbd_listeners = srv->n_nbd_listeners;
	for (i = 0; i < srv->n_listeners; i++)
		admin_names[i] = srv->listeners[i].name;
	s->admin_listeners = copy_strings(admin_names, srv->n_listeners);
	if (s->admin_listeners == NULL)
		goto nomem;
	s->n_admin_listeners = srv->n_listeners;
	if (srv->nbd) {
		struct tsr_nbd_stats st;

		tsr_nbd_server_get_stats(srv->nbd, &st);
		s->nbd_connections_open = st.connections_open;
		s->nbd_connections_total = st.connections_total;
	}
	ret = tsr_store_vol_list(srv->store, &infos, &count);
	if (ret) {
		admin_fail(resp, ret, "cannot list volumes: %s (see tesserad's log)", strerror(-ret));
		return;
	}
	free(infos);
	s->volumes = (uint32_t)count;
	/* every file of its volumes (snapshot layers, hidden volumes...), not
	 * only the heads' data: the node's real use of its file system */
	if (tsr_store_allocated(srv->store, &s->allocated) != 0)
		s->allocated = 0;
	if (srv->cluster.leftovers_removed)
		s->leftovers_removed = srv->cluster.leftovers_removed(srv->cluster.arg);
	s->node_id = admin_strdup(srv->node_id);
	s->cluster_address = admin_strdup(srv->cluster_address);
	s->data_fs = admin_data_fs(srv->data_dir);
	if (!s->node_id || !s->cluster_address || !s->data_fs)
		goto nomem;
	return;
nomem:
	admin_fail(resp, -ENOMEM, "out of memory in tesserad");
}

bool admin_is_replication(Tessera__Admin__Request__CommandCase cmd)
{
	switch (cmd) {
	case TESSERA__ADMIN__REQUEST__COMMAND_SITE_ADD:
	case TESSERA__ADMIN__REQUEST__COMMAND_SITE_REMOVE:
	case TESSERA__ADMIN__REQUEST__COMMAND_SITE_LIST:
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_ENABLE:
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_DISABLE:
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_STATUS:
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_PROMOTE:
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_RESYNC:
		return true;
	default:
		return false;
	}
}

/*
 * Test hook (test-cluster-delete-late): while the file named by
 * $TSR_TEST_COPY_DELETE_DEFER_FILE exists, a local_copy VolumeDelete is
 * answered at once -ETIMEDOUT, which is what its sender sees when this node
 * is slow, and is run later, once the file is gone, as a delete that stayed
 * queued here would be: through admin_handle, its result logged.  Polled
 * every 50 ms, for 60 s at most.
 */
struct deferred_delete {
	ev_timer poll;
	struct tsr_admin_server *srv;
	const char *file;
	int polls;
	char *name, *uuid;
};

static void deferred_delete_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct deferred_delete *d = w->data;
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeDelete vd = TESSERA__ADMIN__VOLUME_DELETE__INIT;
	Tessera__Admin__Response resp = TESSERA__ADMIN__RESPONSE__INIT;

	(void)revents;
	if (access(d->file, F_OK) == 0 && ++d->polls < 1200)
		return;
	ev_timer_stop(loop, w);
	if (d->polls >= 1200) {
		tsr_info("admin: test hook (%s): the deferred delete of the copy of '%s' dropped "
			 "(the file stayed 60 s)", d->file, d->name);
		goto out;
	}
	vd.name = d->name;
	vd.local_copy = true;
	vd.uuid = d->uuid;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DELETE;
	req.volume_delete = &vd;
	admin_handle(d->srv, &req, &resp);
	tsr_info("admin: test hook (%s): the deferred delete of the copy of '%s' (%s%s) ran: %s",
		 d->file, d->name, d->uuid[0] ? "uuid " : "by name", d->uuid,
		 resp.error ? resp.message : "deleted");
	admin_response_free_built(&resp);
out:
	free(d->name);
	free(d->uuid);
	free(d);
}

/* The test hook above: true when d was deferred (resp answered). */
static bool delete_test_defer(struct tsr_admin_server *srv, const Tessera__Admin__VolumeDelete *d,
			      Tessera__Admin__Response *resp)
{
	const char *f = getenv("TSR_TEST_COPY_DELETE_DEFER_FILE");
	struct deferred_delete *dd;

	if (!d->local_copy || f == NULL || f[0] == '\0' || access(f, F_OK) != 0)
		return false;
	dd = calloc(1, sizeof(*dd));
	if (dd == NULL)
		return false;
	dd->srv = srv;
	dd->file = f;
	dd->name = strdup(d->name);
	dd->uuid = strdup(d->uuid ? d->uuid : "");
	if (dd->name == NULL || dd->uuid == NULL) {
		free(dd->name);
		free(dd->uuid);
		free(dd);
		return false;
	}
	ev_timer_init(&dd->poll, deferred_delete_cb, 0.05, 0.05);
	dd->poll.data = dd;
	ev_timer_start(srv->loop, &dd->poll);
	tsr_info("admin: test hook (%s): the delete of the copy of '%s' (%s%s) is deferred until "
		 "the file is gone", f, dd->name, dd->uuid[0] ? "uuid " : "by name", dd->uuid);
	admin_fail(resp, -ETIMEDOUT, "test hook: the delete of the copy of '%s' is deferred",
		   d->name);
	return true;
}

void admin_handle(struct tsr_admin_server *srv, const Tessera__Admin__Request *req,
		  Tessera__Admin__Response *resp)
{
	if (req->command_case == TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DELETE &&
	    delete_test_defer(srv, req->volume_delete, resp))
		return;
	/* cluster mode: the control plane answers what is not this node's own business */
	if (srv->cluster.handle && srv->cluster.handle(srv->cluster.arg, req, resp))
		return;
	if (admin_is_replication(req->command_case)) {
		admin_fail(resp, -EOPNOTSUPP, "replication needs cluster mode: start tesserad with "
			   "--listen (and --meta or --join; tesserad --help)");
		return;
	}
	switch (req->command_case) {
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE:
		op_volume_create(srv, req->volume_create, resp);
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_LIST:
		op_volume_list(srv, resp);
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SHOW:
		reply_volume(srv, req->volume_show->name, resp);
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_RESIZE:
		op_volume_resize(srv, req->volume_resize, resp);
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DELETE:
		op_volume_delete(srv, req->volume_delete, resp);
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_STATUS:
		op_status(srv, resp);
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE:
		op_snapshot_create(srv, req->snapshot_create, resp);
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DELETE:
		op_snapshot_delete(srv, req->snapshot_delete, resp);
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST:
		op_snapshot_list(srv, req->snapshot_list, resp);
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_SHOW:
		op_snapshot_show(srv, req->snapshot_show, resp);
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DIFF:
		op_snapshot_diff(srv, req->snapshot_diff, resp);
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ROLLBACK:
		op_volume_rollback(srv, req->volume_rollback, resp);
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ATTACH:
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DETACH:
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_STATUS:
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SCRUB:
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_REPLACE_REPLICA:
	case TESSERA__ADMIN__REQUEST__COMMAND_NODE_LIST:
	case TESSERA__ADMIN__REQUEST__COMMAND_CLUSTER_STATUS:
		admin_fail(resp, -EOPNOTSUPP, "this tesserad is standalone: that command needs a "
			   "cluster (start tesserad with --listen and --meta or --join; tesserad "
			   "--help)");
		break;
	default:
		/* tsr_admin_request_parse lets no other case through */
		admin_fail(resp, -EINVAL, "unknown command");
		break;
	}
}
