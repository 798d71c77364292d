/*
 * Replicated volumes in the metadata store: create (placement, one store
 * copy per chosen node, then vol/<name> by compare-and-set), delete, resize,
 * list/show and replace-replica, plus the node-to-node calls they make (a
 * copy on another node is created through its admin API with local_copy).
 * An erasure-coded volume (ec K+M) is the same with K+M copies, each a
 * chunk volume of tsr_ec_chunk_volume_size bytes (rec_copy_size): created,
 * grown, replaced and counted in the nodes' provisioned space at that size.
 * Main thread; blocking calls (see include/tessera/cluster.h), except a
 * resize's and the forwards answered later.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "admin/admin_internal.h"
#include "cluster/internal.h"
#include "tessera/ec.h"
#include "tessera/test_hook.h"

/* VolumeRecord.region_size: the dirty-bitmap region of the volume's layout */
#define CLUSTER_REGION_DEFAULT (1u << 20) /* 0 in the record */
#define CLUSTER_REGION_MIN (64u << 10)
#define CLUSTER_REGION_MAX (1u << 31)

/* ---- node-to-node ------------------------------------------------------- */

int cluster_call_node(struct tsr_cluster *c, const char *address, Tessera__Admin__Request *req,
		      int timeout_ms, Tessera__Admin__Response **resp)
{
	struct tsr_admin_client *cl = NULL;
	int ret;

	ret = tsr_admin_connect_tcp(address, c->token, &cl);
	if (ret == 0)
		ret = tsr_admin_call(cl, req, timeout_ms, resp);
	tsr_admin_close(cl);
	return ret;
}

void cluster_forward(struct tsr_cluster *c, const char *node_id, const char *address,
		     const Tessera__Admin__Request *req, Tessera__Admin__Response *resp)
{
	Tessera__Admin__Request *fwd = (Tessera__Admin__Request *)req;
	Tessera__Admin__Response *r = NULL;
	char *via = fwd->via_node;
	int ret;

	/* the first forward names us: the node handling it must not call back
	 * here while we wait (cluster_snapshot_read avoids c->origin) */
	if (via == NULL || via[0] == '\0')
		fwd->via_node = c->node_id;
	ret = cluster_call_node(c, address, fwd, CLUSTER_FORWARD_TIMEOUT_MS, &r);
	fwd->via_node = via;
	cluster_forward_answer(node_id, address, ret, r, resp);
}

/*
 * A forward whose reply is sent when the other node answers (admin_async_call
 * + admin_later_begin), so that this node's loop serves other calls
 * meanwhile, also when that node is slow or frozen (main thread).
 */
struct forward_later {
	struct admin_async *call;         /* until its callback fired */
	struct admin_later *later;        /* our reply */
	int status;                       /* the call's */
	Tessera__Admin__Response *answer; /* the other node's (status 0) */
	char node_id[64], address[256];
	struct forward_later *next;       /* c->forwards, while call runs */
	struct tsr_cluster *c;
};

static void forward_later_reply(struct tsr_admin_server *srv, void *arg,
				Tessera__Admin__Response *resp)
{
	struct forward_later *f = arg;

	(void)srv;
	cluster_forward_answer(f->node_id, f->address, f->status, f->answer, resp);
	free(f);
}

static void forward_later_done(void *cb_arg, int status, Tessera__Admin__Response *r)
{
	struct forward_later *f = cb_arg;

	f->call = NULL;
	for (struct forward_later **pp = &f->c->forwards; *pp; pp = &(*pp)->next)
		if (*pp == f) {
			*pp = f->next;
			break;
		}
	f->status = status;
	f->answer = r;
	admin_later_done(f->later); /* forward_later_reply frees f */
}

bool cluster_forward_later(struct tsr_cluster *c, const char *node_id, const char *address,
			   const Tessera__Admin__Request *req, Tessera__Admin__Response *resp)
{
	struct tsr_admin_server *srv = admin_handling_server();
	Tessera__Admin__Request fwd = *req;
	struct forward_later *f;
	int ret;

	if (srv == NULL)
		return false;
	f = calloc(1, sizeof(*f));
	if (f == NULL)
		return false;
	f->c = c;
	snprintf(f->node_id, sizeof(f->node_id), "%s", node_id);
	snprintf(f->address, sizeof(f->address), "%s", address);
	f->later = admin_later_begin(srv, forward_later_reply, f);
	if (f->later == NULL) {
		free(f);
		return false;
	}
	/* as cluster_forward: the first forward names us */
	if (fwd.via_node == NULL || fwd.via_node[0] == '\0')
		fwd.via_node = c->node_id;
	ret = admin_async_call(c->o.loop, f->address, c->token, &fwd, CLUSTER_FORWARD_TIMEOUT_MS,
			       forward_later_done, f, &f->call);
	if (ret) {
		/* answered now, as the blocking forward would */
		admin_later_cancel(f->later);
		cluster_forward_answer(node_id, address, ret, NULL, resp);
		free(f);
		return true;
	}
	f->next = c->forwards;
	c->forwards = f;
	return true;
}

void cluster_forward_reply(struct tsr_cluster *c, const char *node_id, const char *address,
			   const Tessera__Admin__Request *req, Tessera__Admin__Response *resp)
{
	if (!cluster_forward_later(c, node_id, address, req, resp))
		cluster_forward(c, node_id, address, req, resp);
}

static void resize_stop(struct tsr_cluster *c);
static void replace_list_stop(struct tsr_cluster *c);
static void vol_delete_stop(struct tsr_cluster *c);

void cluster_forward_stop(struct tsr_cluster *c)
{
	resize_stop(c); /* resizes waiting for a node answer (-ECANCELED) */
	replace_list_stop(c); /* replaces waiting for a snapshot list (-ECANCELED) */
	vol_delete_stop(c);   /* deletes waiting for a node: answered now */
	cluster_show_stop(c); /* shows waiting for a snapshot list: without it */
	/* each answers -ECANCELED at once (its callback unlists it) */
	while (c->forwards)
		admin_async_cancel(c->forwards->call);
}

void cluster_forward_answer(const char *node_id, const char *address, int status,
			    Tessera__Admin__Response *r, Tessera__Admin__Response *resp)
{
	if (status) {
		admin_fail(resp, status, "cannot reach node %s at %s: %s (is it alive? tessera "
			   "node list)", node_id, address, strerror(-status));
		return;
	}
	/* move the answer over: protobuf-c's default allocator is malloc, as ours */
	resp->error = r->error;
	if (r->message && r->message[0])
		admin_fail(resp, r->error, "%s", r->message);
	resp->volumes = r->volumes;
	resp->n_volumes = r->n_volumes;
	r->volumes = NULL;
	r->n_volumes = 0;
	resp->volume_status = r->volume_status;
	r->volume_status = NULL;
	resp->snapshots = r->snapshots;
	resp->n_snapshots = r->n_snapshots;
	r->snapshots = NULL;
	r->n_snapshots = 0;
	resp->extents = r->extents;
	resp->n_extents = r->n_extents;
	r->extents = NULL;
	r->n_extents = 0;
	resp->diff_bytes = r->diff_bytes;
	resp->diff_next = r->diff_next;
	resp->nbd_clients = r->nbd_clients; /* a detach refused: its clients */
	resp->n_nbd_clients = r->n_nbd_clients;
	r->nbd_clients = NULL;
	r->n_nbd_clients = 0;
	resp->nbd_clients_total = r->nbd_clients_total;
	resp->clients_disconnected = r->clients_disconnected;
	tessera__admin__response__free_unpacked(r, NULL);
}

/* copy_create on this node (its store). */
static int copy_create_local(struct tsr_cluster *c, const Tessera__Cluster__NodeRecord *node,
			     const char *name, uint64_t size, uint32_t ec_k, uint32_t unit,
			     char uuid[37], char *msg, size_t msg_len)
{
	struct tsr_vol_info info;
	int ret;

	if (uuid)
		uuid[0] = '\0';
	/* an ec chunk copy gets its redirect map cut in stripe units (store/rowmap.c) */
	ret = tsr_store_vol_create_flags(c->o.store, name, size, ec_k ? TSR_VOL_EC_CHUNK : 0,
					 ec_k ? (unit ? unit : TSR_EC_DEFAULT_UNIT) : 0, &info);
	if (ret == -EEXIST && uuid && tsr_store_vol_info(c->o.store, name, &info) != 0)
		info.uuid[0] = '\0';
	if (uuid && (ret == 0 || ret == -EEXIST))
		snprintf(uuid, 37, "%s", info.uuid);
	if (ret)
		snprintf(msg, msg_len, "cannot create the copy of '%s' on %s (this node): %s%s",
			 name, node->id, strerror(-ret), ret == -EEXIST ?
			 " (a store copy of that name is left over: delete it with "
			 "local_copy, or pick another name)" : "");
	return ret;
}

/* The local_copy VolumeCreate asking another node for its copy (req, vc,
 * ec[16]: the caller's, filled). */
static void copy_create_req(const char *name, uint64_t size, uint32_t ec_k, uint32_t ec_m,
			    uint32_t unit, Tessera__Admin__Request *req,
			    Tessera__Admin__VolumeCreate *vc, char ec[16])
{
	ec[0] = '\0';
	if (ec_k)
		snprintf(ec, 16, "%u+%u", ec_k, ec_m);
	vc->name = (char *)name;
	vc->size = size;
	vc->local_copy = true;
	vc->ec = ec;
	vc->stripe_unit = unit;
	req->command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE;
	req->volume_create = vc;
}

/*
 * What node's answer resp (status 0) or the call's failure (status; resp
 * NULL) to copy_create_req says: 0 or -errno with msg, and *uuid the new
 * copy's, or on -EEXIST the one met (empty when unknown: a node older than
 * session 13's ctl3 sends none on EEXIST).  resp stays the caller's.
 */
static int copy_create_answer(const Tessera__Cluster__NodeRecord *node, const char *name,
			      int status, const Tessera__Admin__Response *resp, int timeout_ms,
			      char uuid[37], char *msg, size_t msg_len)
{
	int ret;

	if (uuid)
		uuid[0] = '\0';
	if (status == -ETIMEDOUT) {
		snprintf(msg, msg_len, "node %s did not answer in %d ms (the bound of a copy's "
			 "create) to create the copy of '%s' (hung, or its disk far too slow?)",
			 node->id, timeout_ms, name);
		return status;
	}
	if (status) {
		snprintf(msg, msg_len, "cannot reach node %s at %s to create the copy of '%s': %s",
			 node->id, node->address, name, strerror(-status));
		return status;
	}
	ret = resp->error;
	if (ret)
		snprintf(msg, msg_len, "node %s: %s", node->id, resp->message);
	if (uuid && (ret == 0 || ret == -EEXIST) && resp->n_volumes == 1 &&
	    resp->volumes[0]->uuid && strlen(resp->volumes[0]->uuid) < 37)
		snprintf(uuid, 37, "%s", resp->volumes[0]->uuid);
	return ret;
}

/*
 * Create the store copy of volume name on node.  ec_k > 0: an ec volume's
 * chunk copy, created with TSR_VOL_EC_CHUNK (a remote node gets the geometry
 * in VolumeCreate.ec / stripe_unit with local_copy) so that no node serves
 * its snapshots as images (vol.c).  A node older than the flag ignores it
 * and serves them as before.
 */
static int copy_create(struct tsr_cluster *c, const Tessera__Cluster__NodeRecord *node,
		       const char *name, uint64_t size, uint32_t ec_k, uint32_t ec_m,
		       uint32_t unit, char uuid[37], char *msg, size_t msg_len)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeCreate vc = TESSERA__ADMIN__VOLUME_CREATE__INIT;
	Tessera__Admin__Response *resp = NULL;
	char ec[16];
	int ret;

	if (strcmp(node->id, c->node_id) == 0)
		return copy_create_local(c, node, name, size, ec_k, unit, uuid, msg, msg_len);
	copy_create_req(name, size, ec_k, ec_m, unit, &req, &vc, ec);
	ret = cluster_call_node(c, node->address, &req, CLUSTER_COPY_TIMEOUT_MS, &resp);
	ret = copy_create_answer(node, name, ret, resp, CLUSTER_COPY_TIMEOUT_MS, uuid, msg, msg_len);
	if (resp)
		tessera__admin__response__free_unpacked(resp, NULL);
	return ret;
}

int cluster_copy_create(struct tsr_cluster *c, const Tessera__Cluster__NodeRecord *node,
			const char *name, uint64_t size, char *msg, size_t msg_len)
{
	return copy_create(c, node, name, size, 0, 0, 0, NULL, msg, msg_len);
}

int cluster_copy_delete(struct tsr_cluster *c, const Tessera__Cluster__NodeRecord *node,
			const char *name, char *msg, size_t msg_len)
{
	return cluster_copy_delete_uuid(c, node, name, NULL, msg, msg_len);
}

static int copy_delete_call(struct tsr_cluster *c, const Tessera__Cluster__NodeRecord *node,
			    const char *name, const char *uuid, int timeout_ms, char *msg,
			    size_t msg_len);

int cluster_copy_delete_uuid(struct tsr_cluster *c, const Tessera__Cluster__NodeRecord *node,
			     const char *name, const char *uuid, char *msg, size_t msg_len)
{
	return copy_delete_call(c, node, name, uuid, CLUSTER_COPY_TIMEOUT_MS, msg, msg_len);
}

int cluster_copy_delete_short(struct tsr_cluster *c, const Tessera__Cluster__NodeRecord *node,
			      const char *name, const char *uuid, char *msg, size_t msg_len)
{
	return copy_delete_call(c, node, name, uuid, cluster_peer_call_ms(c), msg, msg_len);
}

/* cluster_copy_delete_uuid with the other node's call bounded by timeout_ms. */
static int copy_delete_call(struct tsr_cluster *c, const Tessera__Cluster__NodeRecord *node,
			    const char *name, const char *uuid, int timeout_ms, char *msg,
			    size_t msg_len)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeDelete vd = TESSERA__ADMIN__VOLUME_DELETE__INIT;
	Tessera__Admin__Response *resp = NULL;
	int ret;

	if (uuid && uuid[0] == '\0')
		uuid = NULL;
	if (strcmp(node->id, c->node_id) == 0) {
		struct tsr_vol_info info;

		ret = 0;
		tsr_cluster_copy_delete_lock(c, true);
		if (uuid) {
			ret = tsr_store_vol_info(c->o.store, name, &info);
			if (ret == 0 && strcmp(info.uuid, uuid) != 0)
				ret = -ESTALE;
		}
		if (ret == 0)
			ret = tsr_store_vol_delete(c->o.store, name);
		tsr_cluster_copy_delete_lock(c, false);
		if (ret == -ESTALE)
			snprintf(msg, msg_len, "the copy of '%s' on %s is another one (uuid %s, not "
				 "%s): left alone", name, node->id, info.uuid, uuid);
		else if (ret && ret != -ENOENT)
			snprintf(msg, msg_len, "cannot delete the copy of '%s' on %s: %s", name,
				 node->id, strerror(-ret));
		return ret == -ENOENT ? 0 : ret;
	}
	cluster_copy_delete_req(name, uuid, &req, &vd);
	ret = cluster_call_node(c, node->address, &req, timeout_ms, &resp);
	ret = cluster_copy_delete_answer(node, name, ret, resp, timeout_ms, msg, msg_len);
	if (resp)
		tessera__admin__response__free_unpacked(resp, NULL);
	return ret;
}

/* The local_copy VolumeDelete (by uuid, unless NULL) asking another node to
 * delete its copy (req, vd: the caller's, filled). */
void cluster_copy_delete_req(const char *name, const char *uuid, Tessera__Admin__Request *req,
			     Tessera__Admin__VolumeDelete *vd)
{
	vd->name = (char *)name;
	vd->local_copy = true;
	vd->uuid = (char *)(uuid ? uuid : "");
	req->command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DELETE;
	req->volume_delete = vd;
}

/* What node's answer resp (status 0) or the call's failure (status) to
 * cluster_copy_delete_req says: 0 (deleted, or no copy), or -errno with msg (-ESTALE:
 * its copy is another one than the uuid asked).  resp stays the caller's. */
int cluster_copy_delete_answer(const Tessera__Cluster__NodeRecord *node, const char *name,
			       int status, const Tessera__Admin__Response *resp, int timeout_ms,
			       char *msg, size_t msg_len)
{
	int ret;

	if (status == -ETIMEDOUT) {
		snprintf(msg, msg_len, "node %s did not answer in %d ms to delete its copy of '%s' "
			 "(the delete stays queued there: it runs when the node reads it)", node->id,
			 timeout_ms, name);
		return status;
	}
	if (status) {
		snprintf(msg, msg_len, "cannot reach node %s at %s to delete the copy of '%s': %s",
			 node->id, node->address, name, strerror(-status));
		return status;
	}
	ret = resp->error == -ENOENT ? 0 : resp->error;
	if (ret)
		snprintf(msg, msg_len, "node %s: %s", node->id, resp->message);
	return ret;
}

void cluster_copy_uuid_req(const char *name, uint64_t size, Tessera__Admin__Request *req,
			   Tessera__Admin__VolumeResize *vr)
{
	vr->name = (char *)name;
	vr->size = size;
	vr->local_copy = true;
	vr->check_only = true;
	req->command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_RESIZE;
	req->volume_resize = vr;
}

/* The uuid in a node's answer to cluster_copy_uuid_req (empty when none): 0,
 * -ENOENT when the node says it holds no copy of that name, or the node's
 * other error (-errno: it named no copy, and a delete by name could remove
 * one it holds; review s20-revK B).  -EINVAL is 0 with no uuid: a node of an
 * earlier build refusing size 0, or a copy larger than the size asked. */
int cluster_copy_uuid_answer(const Tessera__Admin__Response *resp, char uuid[37])
{
	uuid[0] = '\0';
	if (resp->error == 0) {
		if (resp->n_volumes == 1 && resp->volumes[0]->uuid &&
		    strlen(resp->volumes[0]->uuid) < 37)
			snprintf(uuid, 37, "%s", resp->volumes[0]->uuid);
		return 0;
	}
	if (resp->error == -EINVAL)
		return 0;
	return resp->error < 0 ? resp->error : -EPROTO;
}

/*
 * The uuid of node's store copy of name, asked at size: its record's size,
 * or 0 for whatever size (a node older than session 20 answers a size 0
 * -EINVAL: no uuid).  0 with uuid (empty when the node named none: a copy
 * larger than size, a node too old), -ENOENT (no copy of that name there),
 * the node's other error (*answered true) or the transport's -errno (no
 * answer within timeout_ms).
 * No request asks a node for its copy alone: the local_copy VolumeResize
 * with check_only at the copy's own size (or 0) changes nothing and answers
 * with the copy (admin_ops.c op_volume_resize: reply_volume); a node older
 * than check_only (session 13) grows a smaller copy to size, its record's
 * size.
 */
static int copy_uuid_ask(struct tsr_cluster *c, const Tessera__Cluster__NodeRecord *node,
			 const char *name, uint64_t size, int timeout_ms, char uuid[37],
			 bool *answered)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeResize vr = TESSERA__ADMIN__VOLUME_RESIZE__INIT;
	Tessera__Admin__Response *resp = NULL;
	struct tsr_vol_info info;
	int ret;

	uuid[0] = '\0';
	*answered = true;
	if (strcmp(node->id, c->node_id) == 0) {
		ret = tsr_store_vol_info(c->o.store, name, &info);
		if (ret == 0)
			snprintf(uuid, 37, "%s", info.uuid);
		return ret;
	}
	cluster_copy_uuid_req(name, size, &req, &vr);
	ret = cluster_call_node(c, node->address, &req, timeout_ms, &resp);
	if (ret) {
		*answered = false;
		return ret;
	}
	ret = cluster_copy_uuid_answer(resp, uuid);
	tessera__admin__response__free_unpacked(resp, NULL);
	return ret;
}

/*
 * Asked at size 0 first (any size: nodes of session 20 on), so that a copy
 * larger than its record (a grow stopped after its grow step) is named too;
 * a node that names none then (an earlier build refuses size 0) is asked
 * again at size, the record's (0: not again).  Review s20-revK B.
 */
int cluster_copy_uuid(struct tsr_cluster *c, const Tessera__Cluster__NodeRecord *node,
		      const char *name, uint64_t size, char uuid[37])
{
	bool answered;
	int ret = copy_uuid_ask(c, node, name, 0, cluster_peer_call_ms(c), uuid, &answered);

	if (ret == 0 && uuid[0] == '\0' && size != 0 && strcmp(node->id, c->node_id) != 0)
		ret = copy_uuid_ask(c, node, name, size, cluster_peer_call_ms(c), uuid, &answered);
	return ret;
}

/* copy_uuid_ask, with "no copy" and a node's error as 0 and no uuid (the
 * replace's reading: only no answer is unheard). */
static int copy_uuid_get(struct tsr_cluster *c, const Tessera__Cluster__NodeRecord *node,
			 const char *name, uint64_t size, int timeout_ms, char uuid[37])
{
	bool answered;
	int ret = copy_uuid_ask(c, node, name, size, timeout_ms, uuid, &answered);

	return answered ? 0 : ret;
}

/* ---- copy walk: nodes asked for their copy's uuid and deleted by it -------- */

static void walk_cb(void *cb_arg, int status, Tessera__Admin__Response *r);

/* w's node now as the record cluster_copy_* take. */
static void walk_node_record(const struct copy_walk *w, Tessera__Cluster__NodeRecord *nr)
{
	*nr = (Tessera__Cluster__NodeRecord)TESSERA__CLUSTER__NODE_RECORD__INIT;
	nr->id = (char *)w->nodes[w->next].id;
	nr->address = (char *)w->nodes[w->next].address;
}

/* The node now, blocking: asked (cluster_copy_uuid), then its copy deleted. */
static void walk_blocking(struct copy_walk *w)
{
	struct copy_walk_node *n = &w->nodes[w->next];
	Tessera__Cluster__NodeRecord nr;

	walk_node_record(w, &nr);
	if (w->asks)
		n->asked = cluster_copy_uuid(w->c, &nr, w->name, w->size, n->uuid);
	if (w->deletes && n->asked == 0)
		n->deleted = copy_delete_call(w->c, &nr, w->name, n->uuid, w->delete_ms, n->msg,
					      sizeof(n->msg));
}

/* The node's call of w->step: 0 (walk_cb fires) or the call's -errno. */
static int walk_call(struct copy_walk *w)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeResize vr = TESSERA__ADMIN__VOLUME_RESIZE__INIT;
	Tessera__Admin__VolumeDelete vd = TESSERA__ADMIN__VOLUME_DELETE__INIT;
	const struct copy_walk_node *n = &w->nodes[w->next];

	if (w->step == WALK_DELETE)
		cluster_copy_delete_req(w->name, n->uuid[0] ? n->uuid : NULL, &req, &vd);
	else
		cluster_copy_uuid_req(w->name, w->step == WALK_ASK_SIZE ? w->size : 0, &req, &vr);
	return admin_async_call(w->c->o.loop, n->address, w->c->token, &req,
				w->step == WALK_DELETE ? w->delete_ms : cluster_peer_call_ms(w->c),
				walk_cb, w, &w->call);
}

/* The node's step answered (status, r: as admin_async_fn's; r stays the
 * caller's) or its call not started (status): noted, and its next step's
 * call started: 0 (walk_cb fires again), or 1 when the node is done. */
static int walk_answer(struct copy_walk *w, int status, const Tessera__Admin__Response *r)
{
	struct copy_walk_node *n = &w->nodes[w->next];
	Tessera__Cluster__NodeRecord nr;

	for (;;) {
		if (w->step == WALK_DELETE) {
			walk_node_record(w, &nr);
			n->deleted = cluster_copy_delete_answer(
			    &nr, w->name, status, r, w->delete_ms, n->msg, sizeof(n->msg));
			return 1;
		}
		n->asked = status ? status : cluster_copy_uuid_answer(r, n->uuid);
		/* a node that named none at size 0 (an earlier build) asked at size */
		if (n->asked == 0 && n->uuid[0] == '\0' && w->size && w->step == WALK_ASK)
			w->step = WALK_ASK_SIZE;
		else if (n->asked == 0 && w->deletes)
			w->step = WALK_DELETE;
		else
			return 1;
		status = walk_call(w);
		if (status == 0)
			return 0;
		r = NULL;
	}
}

/* The nodes from nodes[next] on, until a call starts: 0 (walk_cb goes on),
 * or 1 when every node is done. */
static int walk_next(struct copy_walk *w)
{
	for (; w->next < w->n_nodes; w->next++) {
		struct copy_walk_node *n = &w->nodes[w->next];
		int ret;

		if (!n->call || (!w->asks && n->asked != 0))
			continue;
		if (!w->async || strcmp(n->id, w->c->node_id) == 0) {
			walk_blocking(w);
			continue;
		}
		w->step = w->asks ? WALK_ASK : WALK_DELETE;
		ret = walk_call(w);
		if (ret == 0 || walk_answer(w, ret, NULL) == 0)
			return 0;
	}
	return 1;
}

static void walk_cb(void *cb_arg, int status, Tessera__Admin__Response *r)
{
	struct copy_walk *w = cb_arg;

	w->call = NULL;
	if (status == -ECANCELED) {
		w->stopped = true;
		/* called, not "not called" (copy_walk_run's text; review s20-revN) */
		if (w->step == WALK_DELETE)
			snprintf(w->nodes[w->next].msg, sizeof(w->nodes[w->next].msg),
				 "its delete was sent, but tesserad stopped before %s answered: "
				 "it may be deleted or left",
				 w->nodes[w->next].id);
	} else if (walk_answer(w, status, r) == 0)
		goto out; /* its next step's answer comes here */
	else
		w->next++;
	if (w->stopped || walk_next(w) == 1)
		w->done_fn(w->done_arg); /* may free w */
out:
	if (r)
		tessera__admin__response__free_unpacked(r, NULL);
}

void copy_walk_init(struct copy_walk *w, struct tsr_cluster *c, const char *name, int delete_ms,
		    copy_walk_fn done_fn, void *done_arg)
{
	w->c = c;
	w->name = name;
	w->delete_ms = delete_ms;
	w->done_fn = done_fn;
	w->done_arg = done_arg;
}

int copy_walk_run(struct copy_walk *w, bool asks, bool deletes)
{
	w->asks = asks;
	w->deletes = deletes;
	w->next = 0;
	w->stopped = false;
	for (size_t i = 0; i < w->n_nodes; i++) {
		struct copy_walk_node *n = &w->nodes[i];

		if (!n->call || (!asks && n->asked != 0))
			continue;
		if (asks) {
			n->asked = -ECANCELED; /* until answered */
			n->uuid[0] = '\0';
		}
		n->deleted = deletes ? -ECANCELED : 0;
		snprintf(n->msg, sizeof(n->msg), "not called: tesserad stopped meanwhile");
	}
	return walk_next(w) == 0;
}

void copy_walk_stop(struct copy_walk *w)
{
	if (w->call)
		admin_async_cancel(w->call); /* walk_cb: stopped, done_fn */
}

static struct copy_walk *g_copy_walks; /* main thread */

void copy_walk_list(struct copy_walk *w)
{
	w->next_walk = g_copy_walks;
	g_copy_walks = w;
}

void copy_walk_unlist(struct copy_walk *w)
{
	for (struct copy_walk **pp = &g_copy_walks; *pp; pp = &(*pp)->next_walk)
		if (*pp == w) {
			*pp = w->next_walk;
			break;
		}
}

struct copy_walk *copy_walk_find(struct tsr_cluster *c, const char *name, copy_walk_fn done_fn)
{
	for (struct copy_walk *w = g_copy_walks; w; w = w->next_walk)
		if (w->c == c && w->done_fn == done_fn && strcmp(w->name, name) == 0)
			return w;
	return NULL;
}

void copy_walks_stop(struct tsr_cluster *c, copy_walk_fn done_fn)
{
	for (struct copy_walk *w = g_copy_walks; w;) {
		if (w->c != c || w->done_fn != done_fn || w->call == NULL) {
			w = w->next_walk;
			continue;
		}
		copy_walk_stop(w); /* its done_fn unlists it */
		w = g_copy_walks;
	}
}

/*
 * Grow this node's copy of name to size (its store), or with check_only only
 * ask whether it could (nothing changes).  0 or -errno with msg.  Another
 * node's copy grows through the local_copy VolumeResize (resize_call), whose
 * answer copy_resize_answer reads.
 */
static int copy_resize_local(struct tsr_cluster *c, const char *name, uint64_t size,
			     bool check_only, char *msg, size_t msg_len)
{
	char sz[32];
	int ret;

	ret = check_only ? tsr_store_vol_resize_check(c->o.store, name, size) :
	      tsr_store_vol_resize(c->o.store, name, size);
	if (ret == -ENOSPC)
		snprintf(msg, msg_len, "node %s: no space to grow volume '%s' to %s: the "
			 "file system of %s is full (delete volumes or snapshots, or free "
			 "space on it)", c->node_id, name, tsr_format_size(size, sz, sizeof(sz)),
			 c->dir ? c->dir : "its data dir");
	else if (ret)
		snprintf(msg, msg_len, "cannot %s the copy of '%s' on %s: %s",
			 check_only ? "check the growth of" : "resize", name, c->node_id,
			 strerror(-ret));
	return ret;
}

/* What node's answer r (status 0) or the call's failure (status) to a
 * local_copy VolumeResize of name says: 0 or -errno with msg. */
static int copy_resize_answer(const Tessera__Cluster__NodeRecord *node, const char *name,
			      int status, const Tessera__Admin__Response *r, char *msg,
			      size_t msg_len)
{
	if (status == -ETIMEDOUT) {
		snprintf(msg, msg_len, "node %s did not answer in %d s to resize the copy of '%s' "
			 "(bring it back, or replace-replica it, then retry)", node->id,
			 CLUSTER_COPY_TIMEOUT_MS / 1000, name);
		return status;
	}
	if (status) {
		snprintf(msg, msg_len, "cannot reach node %s at %s to resize the copy of '%s': %s "
			 "(bring it back, or replace-replica it, then retry)", node->id,
			 node->address, name, strerror(-status));
		return status;
	}
	if (r->error)
		snprintf(msg, msg_len, "node %s: %s", node->id, r->message);
	return r->error;
}

/* ---- building replies ------------------------------------------------- */

char *cluster_nbd_uri(const char *listener, const char *name)
{
	char *uri = NULL;
	int n = -1;

	if (strncmp(listener, "unix:", 5) == 0)
		n = asprintf(&uri, "nbd+unix:///%s?socket=%s", name, listener + 5);
	else if (strncmp(listener, "tcp:", 4) == 0)
		n = asprintf(&uri, "nbd://%s/%s", listener + 4, name);
	return n < 0 ? NULL : uri;
}

Tessera__Admin__Volume *cluster_build_volume(struct tsr_cluster *c, const struct cluster_view *v,
					     const Tessera__Cluster__VolumeRecord *r)
{
	Tessera__Admin__Volume *out = calloc(1, sizeof(*out));
	const Tessera__Cluster__NodeRecord *coord = NULL;
	const char *attached;
	uint64_t epoch = 0;
	struct tsr_vol_info info;

	if (out == NULL)
		return NULL;
	tessera__admin__volume__init(out);
	out->name = admin_strdup(r->name);
	out->uuid = admin_strdup(r->uuid);
	out->failure_domain = admin_strdup(r->failure_domain);
	attached = view_attached(v, r->name, &epoch);
	out->attached_node = admin_strdup(attached);
	out->size = r->size;
	out->created = r->created;
	out->replicas = (uint32_t)r->n_copies;
	out->ec_k = r->ec_k;
	out->ec_m = r->ec_m;
	out->stripe_unit = r->stripe_unit;
	out->region_size = r->region_size ? r->region_size : CLUSTER_REGION_DEFAULT;
	out->min_replicas = r->min_replicas;
	out->target_stream = r->target_stream;
	out->epoch = attached ? epoch : 0;
	out->in_use = attached != NULL;
	/* its attach still opens the copies (review F9: from any node, and in
	 * volume list too): the holder knows, the others read the record */
	if (attached && strcmp(attached, c->node_id) == 0)
		out->attaching = cluster_attach_running(c, r->name);
	else
		out->attaching = attached && r->attaching_epoch != 0 && r->attaching_epoch == epoch;
	if (tsr_store_vol_info(c->o.store, r->name, &info) == 0) {
		uint64_t allocated, exclusive;

		out->allocated = info.allocated; /* this node's copy */
		if (tsr_store_vol_space(c->o.store, r->name, &allocated, &exclusive) == 0)
			out->exclusive = exclusive;
	}
	out->parent_volume = admin_strdup(r->parent_volume);
	out->parent_snapshot = admin_strdup(r->parent_snapshot);
	out->copies = calloc(r->n_copies, sizeof(*out->copies));
	if (attached)
		coord = view_node(v, attached);
	out->nbd_uris = calloc(coord ? coord->n_nbd_listeners + 1 : 1, sizeof(char *));
	if (!out->name || !out->uuid || !out->failure_domain || !out->attached_node ||
	    !out->copies || !out->nbd_uris || !out->parent_volume || !out->parent_snapshot)
		goto err;
	for (size_t i = 0; coord && i < coord->n_nbd_listeners; i++) {
		char *uri = cluster_nbd_uri(coord->nbd_listeners[i], r->name);

		if (uri)
			out->nbd_uris[out->n_nbd_uris++] = uri;
	}
	for (size_t i = 0; i < r->n_copies; i++) {
		Tessera__Admin__Copy *cp = malloc(sizeof(*cp));

		if (cp == NULL)
			goto err;
		tessera__admin__copy__init(cp);
		out->copies[out->n_copies++] = cp;
		cp->node = admin_strdup(r->copies[i]->node_id);
		cp->state = admin_strdup(rec_state_name(r->copies[i]->state));
		if (!cp->node || !cp->state)
			goto err;
	}
	return out;
err:
	admin_volume_free_built(out);
	return NULL;
}

void cluster_volume_list(struct tsr_cluster *c, const char *only,
			 Tessera__Admin__Response *resp)
{
	struct cluster_view v;
	int ret;

	ret = view_load(c->meta, &v);
	if (ret) {
		admin_fail(resp, ret, "cannot read the metadata store: %s (is the meta node "
			   "reachable?)", strerror(-ret));
		return;
	}
	resp->volumes = calloc(v.n_vols + 1, sizeof(*resp->volumes));
	if (resp->volumes == NULL)
		goto nomem;
	for (size_t i = 0; i < v.n_vols; i++) {
		if (only && strcmp(v.vols[i]->name, only))
			continue;
		resp->volumes[resp->n_volumes] = cluster_build_volume(c, &v, v.vols[i]);
		if (resp->volumes[resp->n_volumes] == NULL)
			goto nomem;
		resp->n_volumes++;
	}
	if (only && resp->n_volumes == 0)
		admin_fail(resp, -ENOENT, "volume '%s' not found (tessera volume list shows what "
			   "exists)", only);
	view_free(&v);
	return;
nomem:
	view_free(&v);
	admin_fail(resp, -ENOMEM, "out of memory in tesserad");
}

/* ---- placement input ---------------------------------------------------- */

/* Fill pn[] from the view; holders: node ids already holding a copy (skip_vol excluded). */
static size_t place_input(const struct cluster_view *v, const Tessera__Cluster__VolumeRecord *vol,
			  struct tsr_place_node *pn, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < v->n_nodes && n < max; i++) {
		const Tessera__Cluster__NodeRecord *nr = v->nodes[i];

		pn[n].id = nr->id;
		pn[n].zone = nr->zone[0] ? nr->zone : nr->id;
		pn[n].site = nr->site[0] ? nr->site : "site1";
		pn[n].capacity = nr->capacity;
		pn[n].provisioned = view_provisioned(v, nr->id, NULL);
		pn[n].alive = view_alive(v, nr->id);
		pn[n].holds_copy = false;
		for (size_t k = 0; vol && k < vol->n_copies; k++)
			if (strcmp(vol->copies[k]->node_id, nr->id) == 0)
				pn[n].holds_copy = true;
		n++;
	}
	return n;
}

static void make_uuid(char out[37])
{
	unsigned char b[16];

	if (RAND_bytes(b, sizeof(b)) != 1)
		memset(b, 0x5a, sizeof(b));
	b[6] = (b[6] & 0x0f) | 0x40;
	b[8] = (b[8] & 0x3f) | 0x80;
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
}

size_t cluster_place_input(const struct cluster_view *v, struct tsr_place_node *pn, size_t max)
{
	return place_input(v, NULL, pn, max);
}

void cluster_fresh_record(struct cluster_fresh_record *f, const char *name, uint64_t size,
			  unsigned n, unsigned min_in_sync, enum tsr_failure_domain fd, unsigned k,
			  unsigned m, uint32_t unit, uint32_t region_size, const char *const *node_ids)
{
	Tessera__Cluster__VolumeRecord *rec = &f->rec;

	tessera__cluster__volume_record__init(rec);
	make_uuid(f->uuid);
	rec->name = (char *)name;
	rec->uuid = f->uuid;
	rec->size = size;
	rec->replicas = n;
	rec->min_replicas = min_in_sync;
	rec->failure_domain = (char *)tsr_failure_domain_name(fd);
	rec->created = cluster_now();
	rec->clean_detach = true; /* fresh copies are identical (all zeros; ec: zero parity) */
	rec->ec_k = k;
	rec->ec_m = m;
	rec->stripe_unit = unit;
	rec->region_size = region_size; /* 0: 1 MiB */
	rec->n_copies = n;
	rec->copies = f->copy_ptrs;
	for (unsigned i = 0; i < n; i++) {
		tessera__cluster__copy_record__init(&f->copies[i]);
		f->copies[i].node_id = (char *)node_ids[i];
		f->copies[i].state = TESSERA__CLUSTER__COPY_STATE__IN_SYNC;
		f->copies[i].since = rec->created;
		f->copy_ptrs[i] = &f->copies[i];
	}
}

/* ---- create ----------------------------------------------------------- */

/*
 * VolumeCreate.region_size: 0 (1 MiB), or a power of 2 in 64 KiB..2 GiB, for
 * ec at least the stripe unit (the region counts chunk-volume bytes).  0, or
 * -EINVAL with resp filled.
 */
static int create_region(const Tessera__Admin__VolumeCreate *r, unsigned k, uint32_t unit,
			 Tessera__Admin__Response *resp)
{
	uint32_t rs = r->region_size;

	if (rs == 0)
		return 0;
	if (rs < CLUSTER_REGION_MIN || rs > CLUSTER_REGION_MAX || (rs & (rs - 1))) {
		admin_fail(resp, -EINVAL, "invalid region size %u for '%s': a power of 2 from "
			   "64 KiB to 2 GiB (default 1 MiB); nothing was created", rs, r->name);
		return -EINVAL;
	}
	if (k && rs < unit) {
		admin_fail(resp, -EINVAL, "invalid region size %u for '%s': at least the stripe "
			   "unit (%u KiB; an ec region counts chunk-volume bytes) and at most 2 GiB; "
			   "nothing was created", rs, r->name, unit >> 10);
		return -EINVAL;
	}
	return 0;
}

/*
 * The layout asked by r: a mirror of *copies (replicas, default 3), or ec
 * k+m (copies = k+m, *unit the stripe unit); *min_in_sync (default 2 for a
 * mirror, k for ec).  0, or -EINVAL with resp filled.
 */
static int create_layout(const Tessera__Admin__VolumeCreate *r, unsigned *copies,
			 unsigned *min_in_sync, unsigned *k, unsigned *m, uint32_t *unit,
			 Tessera__Admin__Response *resp)
{
	*k = *m = 0;
	*unit = 0;
	if (r->ec == NULL || r->ec[0] == '\0') {
		*copies = r->replicas ? r->replicas : 3;
		*min_in_sync = r->min_replicas ? r->min_replicas : (*copies < 2 ? *copies : 2);
		if (*copies > TSR_MIRROR_MAX_COPIES || *min_in_sync > *copies || r->stripe_unit) {
			admin_fail(resp, -EINVAL, "invalid replication for '%s': replicas 1..%u, "
				   "min-replicas 1..replicas, a stripe unit only with ec", r->name,
				   TSR_MIRROR_MAX_COPIES);
			return -EINVAL;
		}
		return 0;
	}
	if (tsr_ec_parse(r->ec, k, m)) {
		admin_fail(resp, -EINVAL, "invalid ec '%s' for '%s': give K+M, K data chunks 1..%u "
			   "and M parity chunks 1..%u, e.g. 4+2", r->ec, r->name, TSR_EC_MAX_K,
			   TSR_EC_MAX_M);
		return -EINVAL;
	}
	*unit = r->stripe_unit ? r->stripe_unit : TSR_EC_DEFAULT_UNIT;
	if (!tsr_ec_unit_valid(*unit)) {
		admin_fail(resp, -EINVAL, "invalid stripe unit %u for '%s': a power of 2 from 4 KiB "
			   "to 1 MiB (default 64 KiB)", *unit, r->name);
		return -EINVAL;
	}
	if (r->replicas) {
		admin_fail(resp, -EINVAL, "volume '%s': ec %s and replicas %u exclude each other (an "
			   "ec K+M volume has K+M chunk copies)", r->name, r->ec, r->replicas);
		return -EINVAL;
	}
	*copies = *k + *m;
	*min_in_sync = r->min_replicas ? r->min_replicas : *k;
	if (*min_in_sync < *k || *min_in_sync > *copies) {
		admin_fail(resp, -EINVAL, "volume '%s': min-replicas of ec %u+%u must be %u..%u (a "
			   "stripe needs %u chunks in sync to be written)", r->name, *k, *m, *k,
			   *copies, *k);
		return -EINVAL;
	}
	return 0;
}

/* "ec 4+2 (64 KiB unit)" or "3 replicas" */
static const char *layout_text(unsigned copies, unsigned k, unsigned m, uint32_t unit,
			       char *buf, size_t len)
{
	if (k && unit >= (1u << 20))
		snprintf(buf, len, "ec %u+%u (%u MiB unit)", k, m, unit >> 20);
	else if (k)
		snprintf(buf, len, "ec %u+%u (%u KiB unit)", k, m, unit >> 10);
	else
		snprintf(buf, len, "%u replicas", copies);
	return buf;
}

void cluster_volume_create(struct tsr_cluster *c, const Tessera__Admin__VolumeCreate *r,
			   Tessera__Admin__Response *resp)
{
	struct cluster_fresh_record fresh;
	const char *node_ids[TSR_PLACE_MAX];
	char uuids[TSR_PLACE_MAX][37];
	struct tsr_place_node pn[256];
	unsigned chosen[TSR_PLACE_MAX], replicas, min_replicas, made = 0, k, m;
	enum tsr_failure_domain fd;
	struct cluster_view v;
	char why[1024], key[80], sz[32], lay[64];
	uint64_t copy_size;
	uint32_t unit;
	size_t n;
	int ret;

	if (tsr_failure_domain_parse(r->failure_domain, &fd)) {
		admin_fail(resp, -EINVAL, "invalid failure domain '%s' for '%s': node, zone or site",
			   r->failure_domain, r->name);
		return;
	}
	if (create_layout(r, &replicas, &min_replicas, &k, &m, &unit, resp) ||
	    create_region(r, k, unit, resp))
		return;
	copy_size = k ? tsr_ec_chunk_volume_size(r->size, k, unit) : r->size;
	layout_text(replicas, k, m, unit, lay, sizeof(lay));
	ret = view_load(c->meta, &v);
	if (ret) {
		admin_fail(resp, ret, "cannot read the metadata store: %s (is the meta node "
			   "reachable?)", strerror(-ret));
		return;
	}
	for (size_t i = 0; i < v.n_vols; i++)
		if (strcmp(v.vols[i]->name, r->name) == 0) {
			admin_fail(resp, -EEXIST, "volume '%s' already exists (tessera volume show %s "
				   "describes it; pick another name)", r->name, r->name);
			goto out;
		}
	n = place_input(&v, NULL, pn, 256);
	if (k)
		ret = tsr_cluster_place_ec(pn, n, fd, k, m, unit, r->size, chosen, why,
					   sizeof(why));
	else
		ret = tsr_cluster_place(pn, n, fd, replicas, r->size, chosen, why, sizeof(why));
	if (ret) {
		admin_fail(resp, ret, "cannot place %s '%s' (%s): %s; nothing was created", lay,
			   r->name, tsr_format_size(r->size, sz, sizeof(sz)), why);
		goto out;
	}
	for (made = 0; made < replicas; made++) {
		ret = copy_create(c, view_node(&v, pn[chosen[made]].id), r->name, copy_size, k, m,
				  unit, uuids[made], why, sizeof(why));
		if (ret) {
			admin_fail(resp, ret, "%s; nothing was created", why);
			goto undo;
		}
	}
	for (unsigned i = 0; i < replicas; i++)
		node_ids[i] = pn[chosen[i]].id;
	/* tests: a create held between its copies and its record (test-cluster-delete-late) */
	tsr_test_hold_file("TSR_TEST_CREATE_HOLD_FILE", true);
	cluster_fresh_record(&fresh, r->name, r->size, replicas, min_replicas, fd, k, m, unit,
			     r->region_size, node_ids);
	snprintf(key, sizeof(key), "vol/%s", r->name);
	ret = rec_put(c->meta, key, &fresh.rec.base, 0, 0, NULL);
	if (ret == -ECANCELED) {
		admin_fail(resp, -EEXIST, "volume '%s' was just created by someone else (tessera "
			   "volume show %s)", r->name, r->name);
		/* the copies of that name belong to it now on the nodes we share: keep them */
		goto out;
	}
	if (ret) {
		admin_fail(resp, ret, "cannot record volume '%s' in the metadata store: %s",
			   r->name, strerror(-ret));
		goto undo;
	}
	{
		char line[512];
		size_t pos = 0;

		for (unsigned i = 0; i < replicas && pos < sizeof(line); i++)
			pos += (size_t)snprintf(line + pos, sizeof(line) - pos, "%s%s",
						i ? " " : "", pn[chosen[i]].id);
		tsr_info("cluster: volume %s created (%s, %s by %s on %s)", r->name,
			 tsr_format_size(r->size, sz, sizeof(sz)), lay, tsr_failure_domain_name(fd),
			 line);
	}
	view_free(&v);
	cluster_volume_list(c, r->name, resp);
	return;
undo:
	/* each copy by the uuid it was made with: a late delete (its node slow)
	 * leaves alone a copy another create of the name makes there since */
	while (made--) {
		char msg[512];

		if (cluster_copy_delete_uuid(c, view_node(&v, pn[chosen[made]].id), r->name,
					     uuids[made], msg, sizeof(msg)))
			tsr_warn("cluster: undo create of %s: %s", r->name, msg);
	}
out:
	view_free(&v);
}

/* ---- delete, resize --------------------------------------------------- */

/*
 * A volume delete (cluster_volume_delete) while it calls the nodes of its
 * copies: each copy rec lists asked for its uuid while vol/<name> still lists
 * it (a copy walk, bounded by the peer timeout per call), then the record
 * deleted at the revision read (from here the copies are garbage, whatever
 * happens to them), then each copy deleted by the uuid asked (a walk
 * again): a delete by name that reached its node late (the sender timed
 * out, the node ran it later) removed whatever copy had that name by then:
 * the copy of a new volume of the name made there after the record's delete
 * and before its own record (session-19 revE M1, test-cluster-delete-late).
 * A copy whose node named no uuid (no answer, an error) is not deleted: its
 * node's leftover sweep removes it; one of an earlier build (no uuid) is
 * deleted by name.  Inside a client's request the other nodes are called
 * asynchronously and the reply comes later (admin_later), so one hung node
 * stalls no other admin request of this node (review s20-revK E); a second
 * delete of the name meanwhile is refused -EBUSY; tesserad's stop
 * (cluster_forward_stop) cancels it: before the record's delete nothing is
 * deleted (-ESHUTDOWN), after it the copies not reached are left to the
 * sweep.
 */
struct vol_delete {
	struct tsr_cluster *c;
	char name[80];
	uint64_t rev;                    /* vol/<name>'s, read */
	struct copy_walk walk;           /* nodes: rec's copies, in its order */
	bool deleting;                   /* the record is deleted: the copies' walk */
	struct admin_later *later;       /* the client's reply, when it comes later */
	Tessera__Admin__Response answer; /* an answer given later (error 0: deleted,
					  * its message naming the copies left) */
	char claim_kept[384];            /* target/<name> kept by a metadata error:
					  * why and what releases it, for the
					  * answer (else "") */
};

static void vol_delete_free(struct vol_delete *d)
{
	copy_walk_unlist(&d->walk);
	admin_response_free_built(&d->answer);
	free(d->walk.nodes);
	free(d);
}

/* What becomes of a copy no record lists: "the leftover sweep removes it
 * after its grace (--leftover-grace, 900 s)" (sweep.c; this node's grace:
 * the nodes of one cluster are started alike). */
static void sweep_says(const struct tsr_cluster *c, char *out, size_t len)
{
	if (c->o.leftover_grace_sec)
		snprintf(out, len, "the leftover sweep removes it after its grace "
			 "(--leftover-grace, %u s)", c->o.leftover_grace_sec);
	else
		snprintf(out, len, "delete it there by hand (the leftover sweep is off: "
			 "--leftover-grace 0)");
}

void copy_left_add(Tessera__Admin__Response *resp, const char *node, const char *why)
{
	Tessera__Admin__CopyLeft **v, *cl = malloc(sizeof(*cl));

	if (cl == NULL)
		return;
	tessera__admin__copy_left__init(cl);
	cl->node = strdup(node);
	cl->reason = strdup(why);
	v = realloc(resp->copies_left, (resp->n_copies_left + 1) * sizeof(*v));
	if (v)
		resp->copies_left = v;
	if (cl->node == NULL || cl->reason == NULL || v == NULL) {
		free(cl->node);
		free(cl->reason);
		free(cl);
		return;
	}
	v[resp->n_copies_left++] = cl;
}

void copies_left_move(Tessera__Admin__Response *to, Tessera__Admin__Response *from)
{
	to->copies_left = from->copies_left;
	to->n_copies_left = from->n_copies_left;
	from->copies_left = NULL;
	from->n_copies_left = 0;
}

/* The longest message admin_fail keeps (its buffer, less the NUL). */
#define DELETE_ANSWER_MAX 1023

/* The copies deleted or left and the answer in resp: error 0 (the volume
 * is gone), and, when a copy is left, a message naming each one, why, and
 * what removes it, and copies_left (each also logged).  The message names
 * the copies while they fit in what admin_fail keeps with its head and its
 * tail (the sweep's sentence), then counts the others: cut at 1023 bytes,
 * an ec volume's six copies left lost the last one and the sweep's sentence
 * (review s21-revP, test-cluster-delete-many-left). */
static void vol_delete_end(struct vol_delete *d, Tessera__Admin__Response *resp)
{
	char answer[DELETE_ANSWER_MAX + 1] = "", sweep[128];
	size_t pos = 0, room;
	unsigned left = 0, named = 0;

	sweep_says(d->c, sweep, sizeof(sweep));
	/* the head ("deleted volume 'NAME', but"), the tail ("; of each, "
	 * and the sweep's sentence), the count of those not named (up to
	 * 144 bytes with this node's id) and a claim kept ("; " and it)
	 * around the copies named */
	room = DELETE_ANSWER_MAX - strlen(d->name) - strlen(sweep) - 24 - 11 - 144 -
	       strlen(d->claim_kept) - 2;
	for (size_t i = 0; i < d->walk.n_nodes; i++) {
		const struct copy_walk_node *n = &d->walk.nodes[i];
		char msg[512], reply[256];
		const char *why = msg; /* the reply's */

		if (n->call && (n->asked == -ENOENT || (n->asked == 0 && n->deleted == 0)))
			continue;
		if (!n->call) {
			snprintf(msg, sizeof(msg), "unknown node");
		} else if (n->asked) {
			snprintf(
			    msg, sizeof(msg),
			    "%s did not name its copy's uuid when asked: %s; "
			    "not deleted by name, which could reach it late and remove a copy of "
			    "a new '%s' (its leftover sweep removes it)",
			    n->id, strerror(-n->asked), d->name);
			why = reply;
			snprintf(
			    reply, sizeof(reply),
			    "it named no uuid when asked: %s; not deleted "
			    "by name, which could remove a new volume's copy of that name there",
			    strerror(-n->asked));
		} else {
			snprintf(msg, sizeof(msg), "%s", n->msg);
		}
		tsr_warn("cluster: volume %s deleted, but its copy on %s was left behind (%s): "
			 "delete it on that node once it is back",
			 d->name, n->id, msg);
		copy_left_add(resp, n->id, why);
		if (named == left) { /* none counted yet: this one named if it fits */
			char entry[320];
			int len =
			    snprintf(entry, sizeof(entry), "%s its copy on %s is left (%.200s)",
				     named ? ";" : "", n->id, why);

			if (len > 0 && pos + (size_t)len <= room) {
				memcpy(answer + pos, entry, (size_t)len + 1);
				pos += (size_t)len;
				named++;
			}
		}
		left++;
	}
	tsr_info("cluster: volume %s deleted", d->name);
	if (left > named)
		snprintf(answer + pos, sizeof(answer) - pos,
			 "; %u more cop%s left, named in %s's "
			 "log (--json lists each under \"left\")",
			 left - named, left - named > 1 ? "ies" : "y", d->c->node_id);
	/* error 0 (the volume is gone), with the copies left named, and its
	 * DR claim when a metadata error kept it (review s22-revV: the log
	 * alone said so) */
	if (left)
		admin_fail(resp, 0, "deleted volume '%s', but%s%s %s%s%s", d->name, answer,
			   left > 1 ? "; of each," : ":", sweep, d->claim_kept[0] ? "; " : "",
			   d->claim_kept);
	else if (d->claim_kept[0])
		admin_fail(resp, 0, "deleted volume '%s', but %s", d->name, d->claim_kept);
}

/* target/<name>'s revision before the record's delete (repl_target_rev).
 * Tests only (test-cluster-delete-claim-kept): when $TSR_TEST_TARGET_READ_FAIL
 * names the volume, the read fails -EIO, as a metadata store's fault would. */
static int delete_target_rev(struct tsr_cluster *c, const char *name, uint64_t *rev)
{
	const char *fail = getenv("TSR_TEST_TARGET_READ_FAIL");

	if (fail == NULL || strcmp(fail, name) != 0)
		return repl_target_rev(c, name, rev);
	*rev = 0;
	tsr_warn("cluster: volume delete %s: test hook: the read of target/%s fails", name, name);
	return -EIO;
}

/* After the asks: the record deleted, then the copies.  0: answered in resp
 * (the end, or a failure); 1: the copies' walk runs (vol_delete_done ends). */
static int vol_delete_record(struct vol_delete *d, Tessera__Admin__Response *resp)
{
	struct cluster_view v;
	const char *attached;
	uint64_t target_rev;
	char key[96];
	int ret, target_ret;

	if (d->walk.stopped) {
		admin_fail(resp, -ESHUTDOWN,
			   "volume '%s' is not deleted: tesserad is shutting "
			   "down while it asks the nodes of its copies (retry volume delete %s)",
			   d->name, d->name);
		return 0;
	}
	/* attached while the nodes were asked (through any node, this one too
	 * now that its loop goes on): refused as at the start */
	ret = view_load(d->c->meta, &v);
	attached = ret ? NULL : view_attached(&v, d->name, NULL);
	if (attached)
		admin_fail(resp, -EBUSY,
			   "volume '%s' was attached on %s while its delete asked "
			   "the nodes of its copies: not deleted (tessera volume detach %s first)",
			   d->name, attached, d->name);
	if (ret == 0)
		view_free(&v);
	if (attached)
		return 0;
	/* Tests only: while the file $TSR_TEST_DELETE_RECORD_HOLD_FILE exists
	 * (30 s at most), the delete waits here, on the control loop, between
	 * its re-check and its record's delete (test-cluster-delete-attach-race) */
	tsr_test_hold_file("TSR_TEST_DELETE_RECORD_HOLD_FILE", true);
	/* target/<name>'s revision while the record stands (no DR create of
	 * the name claims it then): deleted at it below, so that a claim a
	 * create writes once the record is gone is kept */
	target_ret = delete_target_rev(d->c, d->name, &target_rev);
	/* the record first (at the revision whose copies were asked): from here
	 * the copies are garbage, whatever happens to them */
	snprintf(key, sizeof(key), "vol/%s", d->name);
	ret = tsr_meta_delete(d->c->meta, key, d->rev);
	if (ret == -ECANCELED) {
		char holder[64];

		/* an attach that wrote attach/<name> after the re-check above
		 * and then vol/<name> (its epoch) before this compare: the
		 * attach won, say so.  One whose vol/<name> write comes after
		 * this delete finds no record and fails (attach_prepare). */
		if (cluster_get_attach(d->c, d->name, holder, sizeof(holder), NULL, NULL) == 0) {
			admin_fail(resp, -EBUSY,
				   "volume '%s' was attached on %s while it was being deleted: "
				   "not deleted (tessera volume detach %s first)",
				   d->name, holder, d->name);
			return 0;
		}
	}
	if (ret == -ENOENT) {
		/* another delete of it (through another node: one here is
		 * refused while this one asks) deleted the record first; the
		 * copies are that delete's to remove */
		admin_fail(resp, ret,
			   "volume '%s' was deleted meanwhile by another volume delete: "
			   "nothing left to do here",
			   d->name);
		return 0;
	}
	if (ret) {
		admin_fail(resp, ret, "cannot delete volume '%s': %s%s", d->name, strerror(-ret),
			   ret == -ECANCELED ? " (it changed meanwhile: retry)" : "");
		return 0;
	}
	/* Tests only (test-cluster-delete-claim-race): while the file
	 * $TSR_TEST_DELETE_TARGET_HOLD_FILE exists (30 s at most), wait here,
	 * on the control loop, between the record's delete and target/<name>'s,
	 * so that a claim of the name lands in between */
	tsr_test_hold_file("TSR_TEST_DELETE_TARGET_HOLD_FILE", true);
	/* its DR target record with it, on the same turn of the loop: at the
	 * walk's end a create of the name served meanwhile (this node's loop
	 * goes on) could have claimed target/<name> again (review s20-revN A) */
	if (target_ret == 0)
		target_ret = repl_volume_deleted(d->c, d->name, target_rev);
	else /* unread: kept if there */
		snprintf(d->claim_kept, sizeof(d->claim_kept),
			 "target/%s could not be read (%s): "
			 "a DR stream's claim of the name there, if any, is kept: tessera volume "
			 "delete %s releases it",
			 d->name, strerror(-target_ret), d->name);
	if (target_ret && d->claim_kept[0] == '\0')
		snprintf(d->claim_kept, sizeof(d->claim_kept),
			 "target/%s, its DR claim, could "
			 "not be deleted (%s) and is kept: tessera volume delete %s releases it",
			 d->name, strerror(-target_ret), d->name);
	d->deleting = true;
	if (copy_walk_run(&d->walk, false, true))
		return 1;
	vol_delete_end(d, resp);
	return 0;
}

/* The walk's end (async): the next step, or the reply. */
static void vol_delete_done(void *arg)
{
	struct vol_delete *d = arg;

	if (d->deleting)
		vol_delete_end(d, &d->answer);
	else if (vol_delete_record(d, &d->answer))
		return; /* the copies' walk ends here again */
	copy_walk_unlist(&d->walk);
	admin_later_done(d->later);
}

/* The client's reply (admin_later): d's answer; d freed. */
static void vol_delete_reply(struct tsr_admin_server *srv, void *arg,
			     Tessera__Admin__Response *resp)
{
	struct vol_delete *d = arg;

	(void)srv;
	if (d->answer.error || (d->answer.message && d->answer.message[0]))
		admin_fail(resp, d->answer.error, "%s", d->answer.message);
	copies_left_move(resp, &d->answer); /* freed with resp */
	vol_delete_free(d);
}

/* A delete of name asking the nodes of its copies here (its record not
 * deleted yet): true.  The newest walk of name is found first
 * (copy_walk_list), and at most one still asks. */
static bool vol_delete_asking(struct tsr_cluster *c, const char *name)
{
	struct copy_walk *w = copy_walk_find(c, name, vol_delete_done);

	return w && !((const struct vol_delete *)w->done_arg)->deleting;
}

/* tesserad's stop: each delete waiting for a node ends now. */
static void vol_delete_stop(struct tsr_cluster *c)
{
	copy_walks_stop(c, vol_delete_done);
}

void cluster_volume_delete(struct tsr_cluster *c, const char *name,
			   Tessera__Admin__Response *resp)
{
	Tessera__Cluster__VolumeRecord *rec = NULL;
	struct tsr_admin_server *srv = admin_handling_server();
	struct vol_delete *d = NULL;
	struct cluster_view v;
	const char *attached;
	bool remote = false;
	uint64_t rev;
	int ret;

	ret = view_load(c->meta, &v);
	if (ret) {
		admin_fail(resp, ret, "cannot read the metadata store: %s", strerror(-ret));
		return;
	}
	attached = view_attached(&v, name, NULL);
	if (attached) {
		admin_fail(resp, -EBUSY, "volume '%s' is attached on %s (tessera volume detach %s "
			   "first)", name, attached, name);
		goto out;
	}
	/* one whose record is deleted (it deletes the copies) refuses nothing:
	 * the name is free again, as before (review s20-revN B) */
	if (vol_delete_asking(c, name)) {
		admin_fail(resp, -EBUSY,
			   "volume '%s' is being deleted here (another volume delete "
			   "%s, waiting for a node): retry once it has answered",
			   name, name);
		goto out;
	}
	ret = rec_volume_get(c->meta, name, &rec, &rev);
	if (ret == -ENOENT) {
		admin_fail(resp, ret, "volume '%s' not found (tessera volume list shows what "
			   "exists)", name);
		goto out;
	}
	if (ret) {
		admin_fail(resp, ret, "cannot read volume '%s': %s", name, strerror(-ret));
		goto out;
	}
	d = calloc(1, sizeof(*d));
	if (d)
		d->walk.nodes = calloc(rec->n_copies ? rec->n_copies : 1, sizeof(*d->walk.nodes));
	if (d == NULL || d->walk.nodes == NULL) {
		admin_fail(resp, -ENOMEM, "cannot delete volume '%s': out of memory", name);
		goto out;
	}
	d->c = c;
	snprintf(d->name, sizeof(d->name), "%s", name);
	d->rev = rev;
	d->answer = (Tessera__Admin__Response)TESSERA__ADMIN__RESPONSE__INIT;
	copy_walk_init(&d->walk, c, d->name, CLUSTER_COPY_TIMEOUT_MS, vol_delete_done, d);
	d->walk.size = rec_copy_size(rec);
	d->walk.n_nodes = rec->n_copies;
	for (size_t i = 0; i < rec->n_copies; i++) {
		const Tessera__Cluster__NodeRecord *node = view_node(&v, rec->copies[i]->node_id);
		struct copy_walk_node *n = &d->walk.nodes[i];

		snprintf(n->id, sizeof(n->id), "%s", rec->copies[i]->node_id);
		n->asked = -EHOSTDOWN; /* unknown node: not asked */
		if (node == NULL)
			continue;
		snprintf(n->address, sizeof(n->address), "%s", node->address);
		n->call = true;
		remote = remote || strcmp(n->id, c->node_id) != 0;
	}
	if (srv && c->o.loop && remote)
		d->later = admin_later_begin(srv, vol_delete_reply, d);
	d->walk.async = d->later != NULL;
	if (d->later) {
		copy_walk_list(&d->walk);
		if (copy_walk_run(&d->walk, true, false))
			goto out_later; /* vol_delete_done goes on */
		if (vol_delete_record(d, resp))
			goto out_later;
		admin_later_cancel(d->later); /* no call started: answered now */
		goto out;
	}
	copy_walk_run(&d->walk, true, false);
	vol_delete_record(d, resp);
out:
	if (d)
		vol_delete_free(d);
	if (rec)
		tessera__cluster__volume_record__free_unpacked(rec, NULL);
	view_free(&v);
	return;
out_later:
	tessera__cluster__volume_record__free_unpacked(rec, NULL);
	view_free(&v);
}

/* Step (a) of the coordinator's layout (attached here): 0, or -errno with
 * the reason in resp. */
static int layout_resize_check(const char *name, const char *attached, struct tsr_layout *layout,
			       uint64_t size, bool ec, Tessera__Admin__Response *resp)
{
	char msg[512];
	int ret;

	ret = tsr_layout_resize(layout, size, true, msg, sizeof(msg));
	if (ret == -EOPNOTSUPP)
		admin_fail(resp, ret, "volume '%s' is attached on %s: resizing an attached %s is "
			   "not supported yet (detach it, resize, attach again)", name, attached,
			   ec ? "erasure-coded volume" : "volume of this layout");
	else if (ret)
		admin_fail(resp, ret, "cannot resize '%s' now: %s; nothing changed", name, msg);
	return ret;
}

/* Tests only: while the file named by $TSR_TEST_RESIZE_FAIL_FILE exists, step
 * (e) fails on the coordinator (-EIO): a grow recorded but not reached by the
 * layout (test-cluster-resize-recovery.sh).  A file that starts with "once"
 * is removed when it fails a step: one failure (test-site-resize-dr-converge.sh). */
static int resize_test_fail(char *msg, size_t msg_len)
{
	const char *path = getenv("TSR_TEST_RESIZE_FAIL_FILE");
	char head[4] = "";
	FILE *f;

	if (path == NULL || path[0] == '\0' || access(path, F_OK) != 0)
		return 0;
	snprintf(msg, msg_len, "test: %s exists", path);
	f = fopen(path, "r");
	if (f) {
		if (fread(head, 1, sizeof(head), f) == sizeof(head) &&
		    memcmp(head, "once", sizeof(head)) == 0)
			unlink(path);
		fclose(f);
	}
	return -EIO;
}

/*
 * Resize (grow) a cluster volume, attached or not.  In order:
 *  (a) refusals that change nothing: a smaller size (-EINVAL), a copy's node
 *      away (-EHOSTUNREACH), attached: a layout that cannot grow now (copy
 *      not in sync, resync, rebuild, scrub, make-up or snapshot running:
 *      -EBUSY; a layout without the resize op: -EOPNOTSUPP), asked of the
 *      coordinator;
 *  (b) every copy's node asked whether its copy can grow (check_only: free
 *      space for the store's bitmap pages), before any grows: the first
 *      refusal is answered, naming the node;
 *  (c) every copy grown (its store);
 *  (d) vol/<name> gets the size (compare-and-set);
 *  (e) attached: the coordinator's layout grows (tsr_layout_resize: bitmaps,
 *      region count, size, on its home worker; ec: stripes and chunk size
 *      too); writes past the old end are accepted from here on;
 *  (f) the answer.
 * On the coordinator all of it runs here.  Elsewhere (b)-(d) run here and
 * the coordinator is asked for (a) (check_only) and (e) (the same request
 * once the record has the size): it calls no node for either.
 * Every call to another node (the coordinator's (a) and (e), each copy's (b)
 * and (c)) is asynchronous when the request came through the admin server
 * (admin_async_call; the reply is sent later, admin_later_begin): the steps
 * go on from the call's callback, and this node's loop serves other calls
 * meanwhile, so two resizes that cross (n2 resizing a volume coordinated by
 * n1 while n1 resizes one coordinated by n2, or calling each other's copies)
 * no longer wait on each other (session-13 review, finding 4).  A site
 * target's own resize (target_grow, no admin connection) makes the same
 * calls and answers through its done callback (cluster_volume_resize_async);
 * only a request with neither blocks.  Two resizes of one volume may now interleave on a
 * node: (d) is a compare-and-set (the second is refused "changed
 * meanwhile: retry"), copies larger than the record are harmless, and a
 * layout that became busy between (a) and (e) refuses (e) ("retry the same
 * resize").
 * Recovery (crash or failure between the steps): copies larger than the
 * record are harmless (the layout never goes past the record's size; a retry
 * of the same size finds them grown: the store's resize to its size is a
 * no-op); after (d) without (e) a retry of the same size runs (e) alone, and
 * an attach at the new size finds bitmaps naming the old one: a copy that
 * is not IN_SYNC is then resynced in full, compared by sums (mirror.c).
 * Nothing acknowledged is lost: nothing past the old end is accepted before
 * (e), and every copy holds what was acknowledged below it.
 * NBD connections opened before keep the size of their handshake.
 */
enum resize_step {
	RS_RETRY_E,     /* the record has the size: the coordinator's (e) alone, its answer ours */
	RS_CHECK_COORD, /* (a) asked of the coordinator */
	RS_CHECK_COPY,  /* (b), copy i */
	RS_GROW_COPY,   /* (c), copy i */
	RS_GROW_COORD,  /* (e) asked of the coordinator */
	RS_CHECK_HERE,  /* (a) asked of us, the coordinator: the DR's grow only */
};

struct resize_job {
	struct tsr_cluster *c;
	struct admin_later *later;    /* the reply comes later; NULL: see done_fn */
	cluster_resize_fn done_fn;    /* no later: the answer's callback; NULL: the calls block */
	void *done_arg;
	struct admin_async *call;     /* in flight; NULL once its callback ran */
	struct repl_grow *grow;       /* (b'): the DR's grow in flight; NULL once answered */
	struct resize_job *next;      /* resizes, while call or grow runs */
	bool in_handle, done;         /* inside cluster_volume_resize; the answer is built */
	Tessera__Admin__Response res; /* the answer (built at the end, moved into the reply) */
	char *name;
	uint64_t size, old_size, rev;
	struct cluster_view v;
	bool have_view;
	Tessera__Cluster__VolumeRecord *rec;
	const Tessera__Cluster__NodeRecord *nodes[TSR_LAYOUT_MAX_COPIES];
	const Tessera__Cluster__NodeRecord *coord; /* attached on another node: it */
	const char *attached;                      /* in v */
	bool local;                                /* attached here when it began */
	enum resize_step step;
	size_t i, grown;
};

static struct resize_job *resizes; /* main thread: resizes with a node call in flight */

static void resize_run(struct resize_job *j);

static void resize_free(struct resize_job *j)
{
	admin_response_free_built(&j->res);
	free(j->name);
	free(j);
}

/* Move j's answer into resp (the reply). */
static void resize_move(struct resize_job *j, Tessera__Admin__Response *resp)
{
	resp->error = j->res.error;
	if (j->res.message && j->res.message[0])
		admin_fail(resp, j->res.error, "%s", j->res.message);
	resp->volumes = j->res.volumes;
	resp->n_volumes = j->res.n_volumes;
	j->res.volumes = NULL;
	j->res.n_volumes = 0;
}

static void resize_later_reply(struct tsr_admin_server *srv, void *arg,
			       Tessera__Admin__Response *resp)
{
	struct resize_job *j = arg;

	(void)srv;
	resize_move(j, resp);
	resize_free(j);
}

/* The steps answer later (a node call or the DR's grow may wait). */
static bool resize_async(const struct resize_job *j)
{
	return j->later != NULL || j->done_fn != NULL;
}

static void resize_unlist(struct resize_job *j)
{
	for (struct resize_job **pp = &resizes; *pp; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			break;
		}
}

/* The answer is in j->res: free what the steps held, send it. */
static void resize_finish(struct resize_job *j)
{
	if (j->rec)
		tessera__cluster__volume_record__free_unpacked(j->rec, NULL);
	j->rec = NULL;
	if (j->have_view)
		view_free(&j->v);
	j->have_view = false;
	j->done = true;
	if (j->in_handle)
		return; /* cluster_volume_resize answers */
	if (j->later) {
		admin_later_done(j->later); /* resize_later_reply frees j */
	} else if (j->done_fn) {
		Tessera__Admin__Response resp = TESSERA__ADMIN__RESPONSE__INIT;

		resize_move(j, &resp);
		j->done_fn(j->done_arg, &resp);
		admin_response_free_built(&resp);
		resize_free(j);
	}
}

static void resize_fail(struct resize_job *j, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void resize_fail(struct resize_job *j, int err, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	admin_fail(&j->res, err, "%s", buf);
	resize_finish(j);
}

static void resize_step_done(struct resize_job *j, int status, Tessera__Admin__Response *r);

static void resize_call_done(void *arg, int status, Tessera__Admin__Response *r)
{
	struct resize_job *j = arg;

	j->call = NULL;
	resize_unlist(j);
	resize_step_done(j, status, r);
}

/* A VolumeResize of j's volume to node (the coordinator's form, or with
 * local_copy a copy's); its answer goes to resize_step_done. */
static void resize_call(struct resize_job *j, const Tessera__Cluster__NodeRecord *node,
			bool local_copy, uint64_t size, bool check_only, int timeout_ms)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeResize vr = TESSERA__ADMIN__VOLUME_RESIZE__INIT;
	Tessera__Admin__Response *r = NULL;
	int ret;

	vr.name = j->name;
	vr.size = size;
	vr.local_copy = local_copy;
	vr.check_only = check_only;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_RESIZE;
	req.volume_resize = &vr;
	if (!local_copy)
		req.via_node = j->c->node_id;
	if (resize_async(j)) {
		ret = admin_async_call(j->c->o.loop, node->address, j->c->token, &req, timeout_ms,
				       resize_call_done, j, &j->call);
		if (ret == 0) {
			j->next = resizes;
			resizes = j;
			return;
		}
	} else {
		ret = cluster_call_node(j->c, node->address, &req, timeout_ms, &r);
	}
	resize_step_done(j, ret, r);
}

static void resize_step_done(struct resize_job *j, int status, Tessera__Admin__Response *r)
{
	const Tessera__Cluster__NodeRecord *coord = j->coord;
	char msg[512], a[32], b[32];
	int ret;

	switch (j->step) {
	case RS_RETRY_E:
		cluster_forward_answer(coord->id, coord->address, status, r, &j->res);
		r = NULL; /* freed by it */
		resize_finish(j);
		break;
	case RS_CHECK_COORD:
		if (status == -ETIMEDOUT)
			resize_fail(j, status, "%s, the coordinator of '%s', did not answer in %d s; "
				    "nothing changed", coord->id, j->name,
				    CLUSTER_FORWARD_TIMEOUT_MS / 1000);
		else if (status)
			resize_fail(j, status, "cannot reach %s, the coordinator of '%s', at %s: %s "
				    "(is it alive? tessera node list); nothing changed", coord->id,
				    j->name, coord->address, strerror(-status));
		else if (r->error)
			resize_fail(j, r->error, "%s", r->message && r->message[0] ? r->message :
				    strerror(-r->error));
		else {
			j->step = RS_CHECK_COPY;
			j->i = 0;
			resize_run(j);
		}
		break;
	case RS_CHECK_COPY:
		ret = copy_resize_answer(j->nodes[j->i], j->name, status, r, msg, sizeof(msg));
		if (ret) {
			resize_fail(j, ret, "%s; nothing was grown", msg);
			break;
		}
		j->i++;
		resize_run(j);
		break;
	case RS_GROW_COPY:
		ret = copy_resize_answer(j->nodes[j->i], j->name, status, r, msg, sizeof(msg));
		if (ret) {
			resize_fail(j, ret, "%s; %zu of %zu copies were grown before, the volume "
				    "keeps its size %s (copies larger than it are harmless): retry "
				    "the same resize once %s can take it", msg, j->grown,
				    j->rec->n_copies, tsr_format_size(j->old_size, a, sizeof(a)),
				    j->nodes[j->i]->id);
			break;
		}
		j->i++;
		j->grown++;
		resize_run(j);
		break;
	case RS_CHECK_HERE:
		break; /* not a node call */
	case RS_GROW_COORD:
		if (status == 0) {
			ret = r->error;
			snprintf(msg, sizeof(msg), "%s", r->message ? r->message : "");
			cluster_forward_answer(coord->id, coord->address, 0, r, &j->res);
			r = NULL;
		} else {
			ret = status;
			if (status == -ETIMEDOUT)
				snprintf(msg, sizeof(msg), "no answer in %d s",
					 CLUSTER_FORWARD_TIMEOUT_MS / 1000);
			else
				snprintf(msg, sizeof(msg), "cannot reach it at %s: %s",
					 coord->address, strerror(-status));
		}
		/* the coordinator's own refusal says it all; not reaching it does not */
		if (ret && strstr(msg, "is recorded at") == NULL)
			admin_fail(&j->res, ret, "'%s' is recorded at %s and its copies were "
				   "grown, but its coordinator on %s did not grow: %s (retry the "
				   "same resize; until then writes past %s are refused)", j->name,
				   tsr_format_size(j->size, a, sizeof(a)), j->attached, msg,
				   tsr_format_size(j->old_size, b, sizeof(b)));
		resize_finish(j);
		break;
	}
	if (r)
		tessera__admin__response__free_unpacked(r, NULL);
}

/* The layout of j's volume, attached here when the resize began, or NULL
 * with the refusal answered (detached or being detached meanwhile). */
static struct tsr_layout *resize_layout(struct resize_job *j, const char *what)
{
	struct tsr_layout *layout = tsr_volset_layout(j->c->o.vols, j->name);

	if (layout == NULL)
		resize_fail(j, -EAGAIN, "volume '%s' was detached from %s during its resize: "
			    "retry; %s", j->name, j->c->node_id, what);
	return layout;
}

/* (b') answered (the DR's grow): on to (c), or the refusal; a check job
 * (resize_check_here) answers. */
static void resize_grow_done(void *arg, int status, const char *msg)
{
	struct resize_job *j = arg;

	j->grow = NULL;
	resize_unlist(j);
	if (status) {
		resize_fail(j, status, "cannot grow '%s' while attached: %s; nothing changed",
			    j->name, msg);
		return;
	}
	if (j->step == RS_CHECK_HERE) {
		resize_finish(j);
		return;
	}
	j->step = RS_GROW_COPY;
	j->i = 0;
	resize_run(j);
}

/* (b') for j: 1 done (nothing to grow, or grown: blocking), 0 the grow runs
 * (resize_grow_done goes on), or -errno with the refusal answered. */
static int resize_grow_dr(struct resize_job *j)
{
	char msg[1024];
	int ret;

	if (resize_async(j)) {
		ret = repl_grow_target_async(j->c, j->name, j->size, resize_grow_done, j, &j->grow,
					     msg, sizeof(msg));
		if (ret == 0) {
			j->next = resizes;
			resizes = j;
			return 0;
		}
	} else {
		ret = repl_grow_target(j->c, j->name, j->size, msg, sizeof(msg)) ?: 1;
	}
	if (ret < 0)
		resize_fail(j, ret, "cannot grow '%s' while attached: %s; nothing changed",
			    j->name, msg);
	return ret;
}

/* Steps (b) to (f) from j->step / j->i on, until a node call is in flight or
 * the answer is built. */
static void resize_run(struct resize_job *j)
{
	struct tsr_cluster *c = j->c;
	struct tsr_layout *layout;
	char key[80], msg[512], a[32], b[32];
	uint64_t copy_size = rec_copy_size(j->rec);
	int ret;

	if (j->step == RS_CHECK_COPY) {
		/* (b) */
		for (; j->i < j->rec->n_copies; j->i++) {
			if (strcmp(j->nodes[j->i]->id, c->node_id) != 0) {
				resize_call(j, j->nodes[j->i], true, copy_size, true,
					    CLUSTER_COPY_TIMEOUT_MS);
				return;
			}
			ret = copy_resize_local(c, j->name, copy_size, true, msg, sizeof(msg));
			if (ret) {
				resize_fail(j, ret, "%s; nothing was grown", msg);
				return;
			}
		}
		/* (b') attached and replicating to a site (here the coordinator;
		 * another node's coordinator did it in its step (a)): the site
		 * target grows first, so no write past the old end ships before it
		 * can take it (repl_grow_target_async; the loop serves other
		 * calls while it waits, resize_grow_done goes on).  Detached: the
		 * DR grows at the next attach's VOLUME_OPEN (site_open_volume). */
		if (j->local) {
			if (resize_layout(j, "nothing changed") == NULL)
				return;
			if (resize_grow_dr(j) <= 0)
				return;
		}
		j->step = RS_GROW_COPY;
		j->i = 0;
	}
	if (j->step == RS_GROW_COPY) {
		/* (c) ec: a chunk volume may already be large enough (same stripe count) */
		for (; j->i < j->rec->n_copies; j->i++, j->grown++) {
			if (strcmp(j->nodes[j->i]->id, c->node_id) != 0) {
				resize_call(j, j->nodes[j->i], true, copy_size, false,
					    CLUSTER_COPY_TIMEOUT_MS);
				return;
			}
			ret = copy_resize_local(c, j->name, copy_size, false, msg, sizeof(msg));
			if (ret) {
				resize_fail(j, ret, "%s; %zu of %zu copies were grown before, the "
					    "volume keeps its size %s (copies larger than it are "
					    "harmless): retry the same resize once %s can take it",
					    msg, j->grown, j->rec->n_copies,
					    tsr_format_size(j->old_size, a, sizeof(a)), c->node_id);
				return;
			}
		}
		/* (d) */
		snprintf(key, sizeof(key), "vol/%s", j->name);
		ret = rec_put(c->meta, key, &j->rec->base, j->rev, 0, NULL);
		if (ret) {
			resize_fail(j, ret, "cannot record the new size of '%s': %s (its copies "
				    "were grown; retry)", j->name, strerror(-ret));
			return;
		}
		tsr_info("cluster: volume %s resized from %s to %s%s", j->name,
			 tsr_format_size(j->old_size, b, sizeof(b)),
			 tsr_format_size(j->size, a, sizeof(a)), j->attached ?
			 " while attached (new NBD connections see the new size)" : "");
		/* (e) */
		if (j->coord) {
			j->step = RS_GROW_COORD;
			resize_call(j, j->coord, false, j->size, false, CLUSTER_FORWARD_TIMEOUT_MS);
			return;
		}
	}
	/* (e) here; the record has the size: a layout detached meanwhile gets it
	 * at its next attach */
	layout = j->local ? tsr_volset_layout(c->o.vols, j->name) : NULL;
	if (layout) {
		uint64_t now = tsr_layout_size(layout);

		ret = resize_test_fail(msg, sizeof(msg)) ?:
		      tsr_layout_resize(layout, j->size, false, msg, sizeof(msg));
		if (ret) {
			resize_fail(j, ret, "'%s' is recorded at %s and its copies were grown, but "
				    "its coordinator on %s did not grow: %s (retry the same resize; "
				    "until then writes past %s are refused)", j->name,
				    tsr_format_size(j->size, a, sizeof(a)), j->attached, msg,
				    tsr_format_size(now, b, sizeof(b)));
			return;
		}
	}
	/* (f) */
	cluster_volume_list(c, j->name, &j->res);
	resize_finish(j);
}

/* Step (a) and the choice of the first step (j's view and record loaded). */
static void resize_begin(struct resize_job *j)
{
	struct tsr_cluster *c = j->c;
	struct tsr_layout *layout = NULL;
	char a[32], b[32];

	j->attached = view_attached(&j->v, j->name, NULL);
	if (j->attached && strcmp(j->attached, c->node_id) != 0) {
		j->coord = view_node(&j->v, j->attached);
		if (j->coord == NULL) {
			resize_fail(j, -EHOSTUNREACH, "volume '%s' is attached on %s, whose address "
				    "is unknown", j->name, j->attached);
			return;
		}
	} else if (j->attached) {
		layout = tsr_volset_layout(c->o.vols, j->name);
		if (layout == NULL) {
			resize_fail(j, -EBUSY, "volume '%s' is being attached or detached on %s: "
				    "retry", j->name, j->attached);
			return;
		}
		j->local = true;
	}
	if (j->size < j->rec->size) {
		resize_fail(j, -EINVAL, "volume '%s' can only grow: it is %s, asked for %s",
			    j->name, tsr_format_size(j->rec->size, a, sizeof(a)),
			    tsr_format_size(j->size, b, sizeof(b)));
		return;
	}
	if (j->rec->n_copies > TSR_LAYOUT_MAX_COPIES) {
		resize_fail(j, -EINVAL, "volume '%s' has %zu copies, more than %u", j->name,
			    j->rec->n_copies, TSR_LAYOUT_MAX_COPIES);
		return;
	}
	j->old_size = j->rec->size;
	if (j->size == j->old_size && j->coord != NULL) {
		/* the record has it: the coordinator's layout may not (a retry) */
		j->step = RS_RETRY_E;
		resize_call(j, j->coord, false, j->size, false, CLUSTER_FORWARD_TIMEOUT_MS);
		return;
	}
	if (j->size == j->old_size) {
		/* after (d): (e) alone, whatever the copies' states (mirror_resize:
		 * every copy was grown before the record), when the layout lacks it */
		j->step = RS_GROW_COORD;
		if (layout == NULL || tsr_layout_size(layout) >= j->size) {
			cluster_volume_list(c, j->name, &j->res);
			resize_finish(j);
		} else {
			resize_run(j);
		}
		return;
	}
	/* (a) */
	for (size_t i = 0; i < j->rec->n_copies; i++) {
		const char *id = j->rec->copies[i]->node_id;

		j->nodes[i] = view_node(&j->v, id);
		if (j->nodes[i] == NULL || !view_alive(&j->v, id)) {
			resize_fail(j, -EHOSTUNREACH, "cannot resize '%s': node %s, which holds "
				    "copy %zu, is %s (bring it back, or tessera volume "
				    "replace-replica %s --node %s, then retry); nothing changed",
				    j->name, id, i, j->nodes[i] ? "away" : "unknown", j->name, id);
			return;
		}
	}
	if (layout && layout_resize_check(j->name, j->attached, layout, j->size,
					  j->rec->ec_k != 0, &j->res)) {
		resize_finish(j);
		return;
	}
	j->rec->size = j->size; /* rec_copy_size: what each copy grows to (ec: its chunk volume) */
	if (j->coord) {
		j->step = RS_CHECK_COORD;
		resize_call(j, j->coord, false, j->size, true, CLUSTER_FORWARD_TIMEOUT_MS);
		return;
	}
	j->step = RS_CHECK_COPY;
	j->i = 0;
	resize_run(j);
}

/* Step (a) asked of us, the coordinator, by another node's resize: calls no
 * node; the DR's grow (b') may wait (the answer comes later, j's). */
static void resize_check_here(struct resize_job *j)
{
	struct tsr_cluster *c = j->c;
	struct tsr_layout *layout = NULL;
	const char *attached;

	j->step = RS_CHECK_HERE;
	attached = view_attached(&j->v, j->name, NULL);
	if (attached && strcmp(attached, c->node_id) == 0)
		layout = tsr_volset_layout(c->o.vols, j->name);
	if (layout == NULL)
		resize_fail(j, -EAGAIN, "volume '%s' is not attached on %s any more: retry; "
			    "nothing changed", j->name, c->node_id);
	else if (layout_resize_check(j->name, attached, layout, j->size, j->rec->ec_k != 0,
				     &j->res))
		resize_finish(j);
	else if (resize_grow_dr(j) > 0)
		resize_finish(j);
}

/* The job of a resize of r (done_fn NULL: answered through the admin server
 * when it handles the request, else blocking); 1 with the answer in resp, 0
 * when it comes later. */
static int resize_start(struct tsr_cluster *c, const Tessera__Admin__VolumeResize *r,
			cluster_resize_fn done_fn, void *done_arg, Tessera__Admin__Response *resp)
{
	struct tsr_admin_server *srv;
	struct resize_job *j;
	int ret;

	j = calloc(1, sizeof(*j));
	if (j)
		j->name = strdup(r->name);
	if (j == NULL || j->name == NULL) {
		free(j);
		admin_fail(resp, -ENOMEM, "cannot resize '%s': out of memory", r->name);
		return 1;
	}
	j->c = c;
	j->size = r->size;
	j->res = (Tessera__Admin__Response)TESSERA__ADMIN__RESPONSE__INIT;
	j->in_handle = true;
	ret = view_load(c->meta, &j->v);
	if (ret) {
		admin_fail(resp, ret, "cannot read the metadata store: %s", strerror(-ret));
		resize_free(j);
		return 1;
	}
	j->have_view = true;
	ret = rec_volume_get(c->meta, r->name, &j->rec, &j->rev);
	if (ret) {
		admin_fail(&j->res, ret, ret == -ENOENT ? "volume '%s' not found (tessera volume "
			   "list shows what exists)" : "cannot read volume '%s'", r->name);
		resize_finish(j);
	} else {
		j->done_fn = done_fn;
		j->done_arg = done_arg;
		srv = done_fn ? NULL : admin_handling_server();
		if (srv)
			j->later = admin_later_begin(srv, resize_later_reply, j);
		if (r->check_only)
			resize_check_here(j);
		else
			resize_begin(j);
	}
	j->in_handle = false;
	if (!j->done)
		return 0; /* a node call or the DR's grow in flight: it answers */
	if (j->later)
		admin_later_cancel(j->later);
	resize_move(j, resp);
	resize_free(j);
	return 1;
}

void cluster_volume_resize(struct tsr_cluster *c, const Tessera__Admin__VolumeResize *r,
			   Tessera__Admin__Response *resp)
{
	resize_start(c, r, NULL, NULL, resp);
}

int cluster_volume_resize_async(struct tsr_cluster *c, const char *name, uint64_t size,
				cluster_resize_fn done_fn, void *done_arg,
				Tessera__Admin__Response *resp)
{
	Tessera__Admin__VolumeResize vr = TESSERA__ADMIN__VOLUME_RESIZE__INIT;

	vr.name = (char *)name;
	vr.size = size;
	return resize_start(c, &vr, done_fn, done_arg, resp);
}

static void resize_stop(struct tsr_cluster *c)
{
	/* each fails -ECANCELED at once (its callback unlists it and answers) */
	for (struct resize_job *j = resizes; j; j = resizes) {
		if (j->c != c)
			break;
		if (j->call) {
			admin_async_cancel(j->call);
			continue;
		}
		/* waiting for the DR's grow: its answer is dropped when it comes */
		resize_unlist(j);
		repl_grow_abandon(j->grow);
		j->grow = NULL;
		resize_fail(j, -ECANCELED, "cannot grow '%s': %s is stopping while its DR site "
			    "grows (the DR may end up larger: harmless); nothing changed here",
			    j->name, c->node_id);
	}
}

/* ---- replace-replica -------------------------------------------------- */

#define REPLACE_MISSED_MAX 1024u /* CopyRecord.missed_snaps entries, at most */

/*
 * The snapshots a brand-new copy of a mirror must get (every snapshot of the
 * volume, by cut order, as an IN_SYNC copy lists them: snaps, n_snaps, read
 * by replace_list_*) as missed CREATEs: cr's missed_snaps and *text ("c
 * NAME\n" lines, tsr_layout_copy.missed).  0 or -ENOMEM.  None: empty, and
 * an attached coordinator with an IN_SYNC copy of its own gives the copy that
 * one's.
 */
static int replace_missed(const char *name, char *const *snaps, size_t n_snaps,
			  Tessera__Cluster__CopyRecord *cr, char **text)
{
	size_t len = 1, n = 0;
	char **list = NULL;
	int ret = 0;

	for (size_t i = 0; i < n_snaps; i++)
		len += strlen(snaps[i]) + 3;
	*text = malloc(len);
	list = calloc(n_snaps + 1, sizeof(*list));
	if (*text == NULL || list == NULL) {
		ret = -ENOMEM;
		goto out;
	}
	(*text)[0] = '\0';
	len = 0;
	for (size_t i = 0; i < n_snaps; i++) {
		if (!tsr_valid_name(snaps[i]) || strlen(snaps[i]) > 63)
			continue;
		if (n == REPLACE_MISSED_MAX) { /* the record's bound (records.c), the mirror's */
			tsr_warn("cluster: volume %s: the new copy gets its first %u snapshots only "
				 "(of %zu)", name, REPLACE_MISSED_MAX, n_snaps);
			break;
		}
		if (asprintf(&list[n], "c %s", snaps[i]) < 0) {
			list[n] = NULL;
			ret = -ENOMEM;
			goto out;
		}
		len += (size_t)sprintf(*text + len, "%s\n", list[n]);
		n++;
	}
	for (size_t i = 0; i < cr->n_missed_snaps; i++)
		free(cr->missed_snaps[i]);
	free(cr->missed_snaps);
	cr->missed_snaps = list;
	cr->n_missed_snaps = n;
	list = NULL;
out:
	for (size_t i = 0; list != NULL && i < n; i++)
		free(list[i]);
	free(list);
	if (ret) {
		free(*text);
		*text = NULL;
	}
	return ret;
}

/*
 * A replace-replica's state, from its snapshot list (replace_list_*) to its
 * answer: struct replace_list.  For an admin request (later set) each call
 * the replace makes to another node, the new copy's snapshot list, the new
 * copy's create (and the delete of an unlisted copy met there, -EEXIST) and
 * the old copy's uuid, is made with admin_async_call and the replace goes on
 * in its callback (replace_step_done): this main loop serves other requests
 * meanwhile, and the reply is given later (admin_later_begin).  The tick's
 * automatic replace (--rebuild-after, no request to answer: done set,
 * cluster_replace_auto) makes the same calls the same way since session 17
 * (before, blocking on the loop: up to 30 s with a hung target) and reports
 * through its hook instead of a reply.  The list, the old copy's uuid and the
 * delete of an unlisted copy are bounded by the peer timeout
 * (replace_old_timeout_ms); the create by CLUSTER_COPY_TIMEOUT_MS (30 s,
 * replace_create_timeout_ms: a slow disk's create must fit; review 16a, F1),
 * which was a wait on the loop (session 15's note, contract s16 replcreate).  Nothing is written
 * to vol/<name> before the last call is answered (replace_finish): a create
 * that is not answered in time leaves the record as it was (it lists the old
 * copy), and a copy the node makes when it runs again is listed by no record:
 * a retry onto that node meets it (-EEXIST) and deletes it first
 * (replace_garbage), else the leftover sweep removes it after its grace.
 */
enum replace_step {
	REPLACE_LIST,    /* the new copy's snapshot list (replace_list_ask) */
	REPLACE_CREATE,  /* the new copy's create on new_node */
	REPLACE_GARBAGE, /* the delete of the unlisted copy new_node holds (-EEXIST) */
	REPLACE_UUID,    /* the old copy's uuid, asked of its node */
	REPLACE_UNDO,    /* the replace failed after the create: the new copy's delete */
	REPLACE_OLD_DELETE, /* recorded: the old copy's delete */
};

/* A snapshot operation through the coordinator here while a replace of its
 * volume waited (cluster_replace_note_snap), and its outcome
 * (cluster_replace_snap_done). */
struct replace_noted {
	char op;                         /* 'c' create, 'd' delete */
	/* running until cluster_replace_snap_done tells it: done (went
	 * through) or failed (a failed create: cut on no copy, undone) */
	enum { NOTED_RUNNING, NOTED_DONE, NOTED_FAILED } outcome;
	char snap[64];                   /* a valid name (tsr_valid_name) */
};

/* What a failed replace's answer says once its new copy's delete is answered. */
enum replace_undo_said {
	UNDO_SAID,   /* undo_msg, said before the delete */
	UNDO_RECORD, /* the record write's failure (undo_ret), whether the copy went */
};

struct replace_list {
	struct tsr_cluster *c;
	char name[64], old[64], to[64];
	struct {
		char id[64], address[256];
	} nodes[TSR_LAYOUT_MAX_COPIES]; /* to ask, in this order */
	size_t n_nodes, next;            /* next: the one asked now, or to ask */
	char failed[768];                /* "n2: Connection timed out; ..." */
	struct admin_later *later;       /* our reply, when answered later */
	cluster_replace_fn done;         /* the tick's replace (no request): its hook */
	unsigned slot;                   /* done's: the attachment's slot */
	struct admin_async *call;        /* until its callback fired */
	Tessera__Admin__Response answer; /* the reply, moved out by replace_list_reply */
	struct replace_list *next_list;  /* g_replace_lists, while call runs */
	/* the replace itself (replace_run and its steps), once the list is known */
	enum replace_step step;          /* what call runs (or ran last) */
	char **snaps;                    /* the list (n_snaps, owned): the new copy's missed */
	size_t n_snaps;
	/* snapshot operations through this coordinator while the replace
	 * waited, in their order (cluster_replace_note_snap, owned; at most
	 * REPLACE_MISSED_MAX): applied to the list (replace_noted_merge) */
	struct replace_noted *noted;
	size_t n_noted;
	bool view_loaded;                /* v holds the view read at the start */
	struct cluster_view v;           /* new_node points into it */
	Tessera__Cluster__VolumeRecord *rec; /* vol/<name> at rev, as read at the start */
	uint64_t rev;                    /* which the record write expects */
	size_t idx;                      /* the old copy's slot in rec */
	const Tessera__Cluster__NodeRecord *new_node; /* in v */
	int call_ms;                     /* the bound of the call that runs */
	char new_uuid[37], garbage[37], old_uuid[37];
	bool garbage_dropped;            /* an unlisted copy there deleted: no second time */
	bool old_unheard;                /* the old copy's node did not give its uuid */
	bool waited;                     /* a call answered later: the loop ran meanwhile */
	/* vol/<name>'s snap_gen before the list was read (replace_list_plan):
	 * a detached snapshot through another node raises it once done, and
	 * the list may lack that snapshot; replace_run refuses when it moved */
	uint64_t snap_gen;
	bool snap_gen_read;              /* snap_gen set (not the control path) */
	int undo_ret;                    /* REPLACE_UNDO: the replace's failure */
	enum replace_undo_said undo_said;
	bool undo_snap_gen;               /* UNDO_RECORD: snap_gen had moved */
	char undo_msg[1024];
};

static struct replace_list *g_replace_lists; /* main thread: calls running, answered later */

/* rl's calls to other nodes do not block the loop: an admin request's reply
 * is given later (later), or the tick's replace reports through done. */
static bool replace_async(const struct replace_list *rl)
{
	return rl->later != NULL || rl->done != NULL;
}

static void replace_list_unlist(struct replace_list *rl)
{
	for (struct replace_list **pp = &g_replace_lists; *pp; pp = &(*pp)->next_list)
		if (*pp == rl) {
			*pp = rl->next_list;
			break;
		}
}

/* A callback of rl's call fired (status, r): the call is over and rl
 * unlisted; true when it was cancelled (tsr_cluster_stop: replace_list_stop),
 * r then freed and rl's reply the caller's to give. */
static bool replace_call_over(struct replace_list *rl, int status, Tessera__Admin__Response *r)
{
	rl->call = NULL;
	replace_list_unlist(rl);
	if (status != -ECANCELED)
		return false;
	if (r)
		tessera__admin__response__free_unpacked(r, NULL);
	return true;
}

/* What the replace holds besides rl itself (rl reusable, or freed next). */
static void replace_job_clear(struct replace_list *rl)
{
	for (size_t i = 0; i < rl->n_snaps; i++)
		free(rl->snaps[i]);
	free(rl->snaps);
	rl->snaps = NULL;
	rl->n_snaps = 0;
	free(rl->noted);
	rl->noted = NULL;
	rl->n_noted = 0;
	if (rl->rec)
		tessera__cluster__volume_record__free_unpacked(rl->rec, NULL);
	rl->rec = NULL;
	rl->new_node = NULL;
	if (rl->view_loaded)
		view_free(&rl->v);
	rl->view_loaded = false;
}

/*
 * node refused the new copy of name with -EEXIST: it holds a copy of that
 * name (uuid garbage, as the refusal named it) that vol/<name> at rev (rec,
 * which lists no copy on node) does not list.  Either a copy left over (one
 * replaced away from node while node was down, whose delete did not reach
 * it, one it got back after a replace, or one a create not answered in time
 * made when the node ran again), or the fresh copy of a replace onto node of
 * the same volume running elsewhere, made and not recorded yet.  The second
 * must not be deleted while its replace can still record it, so the record is
 * first written again unchanged at rev (a compare-and-set): once that
 * succeeds, no replace that read rev can record its copy any more (its own
 * compare-and-set fails and it rolls back), and only then is the copy deleted
 * (replace_garbage), and only if it is still the one met (uuid).  The write
 * raises rec->replace_fence, its one change: a replace that lost its
 * compare-and-set to it must not take it for a snapshot's record of what its
 * old copy missed and write again (replace_missed_only_moved).  On success
 * *rev is the record's new revision, which our own record write must expect
 * (and rec the record at it).  0 or -errno with msg (-ECANCELED: the record
 * changed meanwhile: retry), rec then as it was.
 */
static int replace_garbage_mark(struct tsr_cluster *c, const Tessera__Cluster__NodeRecord *node,
				const char *name, Tessera__Cluster__VolumeRecord *rec,
				uint64_t *rev, const char *garbage, char *msg, size_t msg_len)
{
	char key[80];
	uint64_t new_rev = 0;
	int ret;

	if (garbage == NULL || garbage[0] == '\0') {
		snprintf(msg, msg_len, "node %s already holds a store copy of '%s' that vol/%s does "
			 "not list, and did not say which (a node older than this one?): delete it "
			 "there first (tessera volume delete with local_copy) and retry", node->id,
			 name, name);
		return -EEXIST;
	}
	snprintf(key, sizeof(key), "vol/%s", name);
	rec->replace_fence++;
	ret = rec_put(c->meta, key, &rec->base, *rev, 0, &new_rev);
	if (ret) {
		rec->replace_fence--;
		snprintf(msg, msg_len, ret == -ECANCELED ? "volume '%s' changed while its copy on %s "
			 "was being replaced (another replace onto %s?): tessera volume show %s; retry"
			 : "cannot write volume '%s' (its copy on %s, replace onto %s): %s; retry",
			 name, node->id, node->id, ret == -ECANCELED ? name : strerror(-ret));
		return ret;
	}
	*rev = new_rev;
	return 0;
}

/*
 * The bound of a replace's two calls to the old copy's node (its uuid, its
 * delete), which is usually the sick one: alive by its lease but hung (a stuck
 * disk, SIGSTOP) it cost up to CLUSTER_COPY_TIMEOUT_MS each on this main loop
 * (review 14, finding 6).  The peer timeout (--peer-timeout, 0: 5 s), at most
 * that.  Neither needs the answer: a uuid not heard in time means no delete
 * at all (a delete by name that the node runs late, once a replace back onto
 * it made a copy there and before that replace's record, would remove that
 * copy: review 13b, finding 3); a delete by uuid not answered in time is still
 * queued on the connection the node reads when it runs again, and removes that
 * copy only.  A copy left so is listed by no record: the leftover sweep
 * removes it after its grace (sweep.c).
 */
static int replace_old_timeout_ms(const struct tsr_cluster *c)
{
	const char *e = getenv("TSR_TEST_REPLACE_OLD_UNBOUNDED");

	/* tests only: the bound before (test-cluster-replace-old-frozen's control) */
	if (e && strcmp(e, "1") == 0)
		return CLUSTER_COPY_TIMEOUT_MS;
	return cluster_peer_call_ms(c);
}

/*
 * Test hook: while the file $TSR_TEST_REPLACE_UUID_HOLD_FILE exists (at most
 * 60 s), a replace waits after its view and its new copy, before it asks the
 * old node for its copy's uuid (test-cluster-replace-old-frozen freezes the
 * old node meanwhile: alive in the view, hung when asked).
 */
static void replace_uuid_test_hold(const char *name)
{
	const char *f = getenv("TSR_TEST_REPLACE_UUID_HOLD_FILE");

	if (f == NULL || access(f, F_OK) != 0)
		return;
	tsr_info("cluster: replace of %s: test hold (%s) before the old copy's uuid", name, f);
	for (int i = 0; i < 6000 && access(f, F_OK) == 0; i++)
		usleep(10 * 1000);
}

/*
 * Test hook: while the file $TSR_TEST_REPLACE_HOLD_FILE exists (at most 60 s),
 * a replace waits between the creation of its new copy and its record write
 * (on the control loop; test-cluster-replace-race holds that window open).
 */
static void replace_test_hold(const char *name)
{
	const char *f = getenv("TSR_TEST_REPLACE_HOLD_FILE");

	if (f == NULL || access(f, F_OK) != 0)
		return;
	tsr_info("cluster: replace of %s: test hold (%s) between the new copy and the record",
		 name, f);
	for (int i = 0; i < 6000 && access(f, F_OK) == 0; i++)
		usleep(10 * 1000);
}

/*
 * Test hook: when the file $TSR_TEST_REPLACE_FENCE_FILE exists as a replace
 * begins its record write, vol/<name> is written first as another replace's
 * garbage mark would: back unchanged, as a node of an earlier build does,
 * when the file reads "old", else with replace_fence raised
 * (test-cluster-replace-snap-fence: the write again after a snapshot's record
 * of what the old copy missed must not go over such a fence).
 */
static void replace_fence_test(struct tsr_cluster *c, const char *name)
{
	const char *f = getenv("TSR_TEST_REPLACE_FENCE_FILE");
	Tessera__Cluster__VolumeRecord *r = NULL;
	char key[80], mode[8] = "";
	uint64_t rev;
	FILE *fp;
	int ret;

	if (f == NULL || (fp = fopen(f, "r")) == NULL)
		return;
	if (fgets(mode, sizeof(mode), fp) == NULL)
		mode[0] = '\0';
	fclose(fp);
	ret = rec_volume_get(c->meta, name, &r, &rev);
	if (ret == 0) {
		if (strncmp(mode, "old", 3) != 0)
			r->replace_fence++;
		snprintf(key, sizeof(key), "vol/%s", name);
		ret = rec_put(c->meta, key, &r->base, rev, 0, NULL);
		tessera__cluster__volume_record__free_unpacked(r, NULL);
	}
	tsr_info("cluster: replace of %s: test hook (%s): vol/%s written as a garbage mark %s: %s",
		 name, f, name, strncmp(mode, "old", 3) == 0 ? "of an earlier build (unchanged)" :
		 "(replace_fence raised)", ret ? strerror(-ret) : "ok");
}

/*
 * Test hook: while the file $TSR_TEST_REPLACE_DELETE_HOLD_FILE exists (at
 * most 60 s), a replace waits between its record write and its delete of the
 * old copy (test-cluster-replace-late-delete holds that window open).
 */
static void replace_delete_test_hold(const char *name)
{
	const char *f = getenv("TSR_TEST_REPLACE_DELETE_HOLD_FILE");

	if (f == NULL || access(f, F_OK) != 0)
		return;
	tsr_info("cluster: replace of %s: test hold (%s) between the record and the old copy's "
		 "delete", name, f);
	for (int i = 0; i < 6000 && access(f, F_OK) == 0; i++)
		usleep(10 * 1000);
}

/*
 * Test hook: while the file $TSR_TEST_REPLACE_NO_CHECK_FILE exists, a replace
 * does not ask the coordinator before its record write (the order before
 * review 14c, A): the tests of replace_refused's undo, and of the crash that
 * check prevents, on the code before it.
 */
static bool replace_check_test_off(void)
{
	const char *f = getenv("TSR_TEST_REPLACE_NO_CHECK_FILE");

	return f != NULL && f[0] != '\0' && access(f, F_OK) == 0;
}

/*
 * Test hook: while the file $TSR_TEST_REPLACE_LAYOUT_HOLD_FILE exists (at
 * most 60 s), a replace of an attached volume waits between its record write
 * and the coordinator's answer (test-cluster-replace-refused: the layout's
 * old copy gets in sync meanwhile, its state is held for the undo).
 */
static void replace_layout_test_hold(const char *name)
{
	const char *f = getenv("TSR_TEST_REPLACE_LAYOUT_HOLD_FILE");

	if (f == NULL || access(f, F_OK) != 0)
		return;
	tsr_info("cluster: replace of %s: test hold (%s) between the record and the coordinator",
		 name, f);
	for (int i = 0; i < 6000 && access(f, F_OK) == 0; i++)
		usleep(10 * 1000);
}

/*
 * Test hook: while the file $TSR_TEST_REPLACE_TAKEN_HOLD_FILE exists (at most
 * 60 s), a replace of an attached volume waits between the coordinator taking
 * the new copy and the end of its pending state (replace_pending_end): the
 * window in which the new copy's first states name the old node (review 14c,
 * finding D; test-cluster-replace-first-state).
 */
static void replace_taken_test_hold(const char *name)
{
	const char *f = getenv("TSR_TEST_REPLACE_TAKEN_HOLD_FILE");

	if (f == NULL || access(f, F_OK) != 0)
		return;
	tsr_info("cluster: replace of %s: test hold (%s) between the coordinator taking the new "
		 "copy and the end of the pending replace", name, f);
	for (int i = 0; i < 6000 && access(f, F_OK) == 0; i++)
		usleep(10 * 1000);
}

/*
 * The undo of a replace-replica the coordinator refused (review 14b, finding
 * 1): vol/<name> gets back the old copy at idx (old: its CopyRecord as the
 * replace read it, packed), with the last state the layout asked for it
 * meanwhile (held by record_state: the slot listed the new node then).  By
 * compare-and-set from the record as it is now, and only while the slot
 * still lists our new node.
 */
struct replace_undo {
	struct tsr_cluster *c;
	const char *name, *new_node;
	unsigned idx;
	uint64_t epoch;             /* the coordinator's (ours) */
	const uint8_t *old;
	size_t old_len;
	bool gone;                  /* another coordinator, or the slot lists another node */
};

static int replace_undo_mutate(Tessera__Cluster__VolumeRecord *rec, void *arg)
{
	struct replace_undo *u = arg;
	Tessera__Cluster__CopyRecord *cr;
	struct attachment *a;
	bool held = false;
	enum tsr_copy_state st = TSR_COPY_OUT_OF_SYNC;
	char *missed = NULL;
	int ret = 0;

	/* a newer coordinator attached from the record listing the new copy:
	 * that copy is its own now (it rebuilds it), the slot is left alone */
	u->gone = rec->epoch != u->epoch || u->idx >= rec->n_copies ||
		  strcmp(rec->copies[u->idx]->node_id, u->new_node) != 0;
	if (u->gone)
		return 1;
	cr = tessera__cluster__copy_record__unpack(NULL, u->old_len, u->old);
	if (cr == NULL)
		return -ENOMEM;
	/* read after the record: a state held later rewrote it, so our write fails */
	pthread_mutex_lock(&u->c->lock);
	a = cluster_find_attachment(u->c, u->name);
	if (a && u->idx < a->n_copies) {
		held = a->copies[u->idx].held_set;
		st = a->copies[u->idx].held_state;
		if (a->copies[u->idx].held_missed &&
		    (missed = strdup(a->copies[u->idx].held_missed)) == NULL)
			ret = -ENOMEM;
	}
	pthread_mutex_unlock(&u->c->lock);
	if (held) {
		cr->state = rec_state_from_mirror(st);
		cr->since = cluster_now();
	}
	if (ret == 0 && missed)
		ret = cluster_missed_set(cr, missed);
	free(missed);
	if (ret) {
		tessera__cluster__copy_record__free_unpacked(cr, NULL);
		return ret;
	}
	tessera__cluster__copy_record__free_unpacked(rec->copies[u->idx], NULL);
	rec->copies[u->idx] = cr;
	return 0;
}

/* The slot's replace is over (taken or undone): states are recorded again. */
static void replace_pending_end(struct tsr_cluster *c, struct attachment *a, size_t idx,
				const char *node_id)
{
	pthread_mutex_lock(&c->lock);
	a->copies[idx].pending_new[0] = '\0';
	a->copies[idx].held_set = false;
	free(a->copies[idx].held_missed);
	a->copies[idx].held_missed = NULL;
	if (node_id)
		snprintf(a->copies[idx].node_id, sizeof(a->copies[idx].node_id), "%s", node_id);
	pthread_mutex_unlock(&c->lock);
}

/*
 * The coordinator (attached here) refused the new copy (-EBUSY: another
 * replace's rebuild runs; -EIO fenced or closing; ...) after vol/<name> was
 * written listing it: the record gets back the old copy (replace_undo_mutate)
 * and the new, empty copy is deleted (by its uuid, as the create's undo), so
 * the refusal changes nothing.  Before (review 14b, finding 1) the record kept
 * the new node while the layout kept the old copy, and that copy's in-sync
 * was written into the slot: the new copy, never written, counted in sync.
 * If the undo's write fails, the record still lists the new copy (out of sync,
 * rebuild): safe (no coordinator trusts it or the old one; the next attach
 * rebuilds it), and it is said.  Sets msg; ret is the layout's error.  True
 * when the record lists the old copy again: the caller deletes the new copy
 * (replace_undo_delete: by its uuid, bounded by the peer timeout, off the
 * loop since session 17; it was a blocking delete bounded by 30 s).
 */
static bool replace_refused(struct tsr_cluster *c, struct attachment *a, const char *name,
			    size_t idx, const char *old, const Tessera__Cluster__NodeRecord *new_node,
			    const uint8_t *old_cr, size_t old_len, int ret, char *msg, size_t msg_len)
{
	struct replace_undo u = { .c = c, .name = name, .new_node = new_node->id,
				  .idx = (unsigned)idx, .epoch = a->epoch, .old = old_cr,
				  .old_len = old_len };
	int r;

	r = rec_volume_update(c->meta, name, replace_undo_mutate, &u);
	replace_pending_end(c, a, idx, NULL);
	if (r || u.gone) {
		snprintf(msg, msg_len, "volume '%s': the coordinator refused the new copy on %s: %s, "
			 "and vol/%s could not be set back (%s): it lists %s's copy out of sync, "
			 "rebuilt at the next attach; tessera volume show %s", name, new_node->id,
			 strerror(-ret), name, r ? strerror(-r) : "another coordinator, or the slot "
			 "changed meanwhile",
			 new_node->id, name);
		tsr_warn("cluster: %s", msg);
		return false;
	}
	tsr_info("cluster: volume %s: replace of copy %s by %s refused by the coordinator (%s): "
		 "the record lists %s again, the new copy is deleted", name, old, new_node->id,
		 strerror(-ret), old);
	snprintf(msg, msg_len, "volume '%s': the coordinator refused the new copy: %s (retry "
		 "once the running rebuild is done); nothing changed", name, strerror(-ret));
	return true;
}

/* tests only: the new copy's create blocking on the loop for at most
 * CLUSTER_COPY_TIMEOUT_MS, as before (test-cluster-replace-create-frozen's
 * control) */
static bool replace_create_blocking(void)
{
	const char *e = getenv("TSR_TEST_REPLACE_CREATE_BLOCKING");

	return e && strcmp(e, "1") == 0;
}

static int replace_step(struct replace_list *rl, int status, Tessera__Admin__Response *r,
			char *msg, size_t msg_len);
static void replace_step_done(void *cb_arg, int status, Tessera__Admin__Response *r);

/*
 * Send req to node as rl's step (rl->step set), bounded by timeout_ms: for an
 * admin request or the tick's replace without blocking the loop
 * (-EINPROGRESS: replace_step_done goes on when it answers), else (blocking:
 * the tests' control) waiting here, then replace_step.  0 or -errno with msg:
 * the replace's outcome.
 */
static int replace_call(struct replace_list *rl, const Tessera__Cluster__NodeRecord *node,
			Tessera__Admin__Request *req, int timeout_ms, bool blocking, char *msg,
			size_t msg_len)
{
	Tessera__Admin__Response *r = NULL;
	int st;

	rl->call_ms = timeout_ms;
	if (replace_async(rl) && !blocking) {
		st = admin_async_call(rl->c->o.loop, node->address, rl->c->token, req, timeout_ms,
				      replace_step_done, rl, &rl->call);
		if (st == 0) {
			rl->waited = true;
			rl->next_list = g_replace_lists;
			g_replace_lists = rl;
			return -EINPROGRESS;
		}
	} else {
		st = cluster_call_node(rl->c, node->address, req, timeout_ms, &r);
		if (st && r) {
			tessera__admin__response__free_unpacked(r, NULL);
			r = NULL;
		}
	}
	return replace_step(rl, st, r, msg, msg_len);
}

/* After a failed call to the new copy's node (no answer, or the connection
 * lost): what the record holds and what a retry does, added to msg. */
static void replace_unrecorded(const struct replace_list *rl, char *msg, size_t msg_len)
{
	size_t len = strlen(msg);
	const char *n = rl->new_node->id;
	char sweep[128];

	sweep_says(rl->c, sweep, sizeof(sweep));
	if (rl->step == REPLACE_GARBAGE)
		snprintf(msg + len, msg_len - len, ": nothing recorded (vol/%s still lists the copy "
			 "on %s); %s's copy of '%s' that no record lists (uuid %s) may still be "
			 "deleted when %s runs the delete, else a retry onto %s deletes it first, "
			 "else %s; retry once %s answers, or replace-replica %s --node %s --to "
			 "another node", rl->name, rl->old, n, rl->name, rl->garbage, n, n, sweep, n,
			 rl->name, rl->old);
	else
		snprintf(msg + len, msg_len - len, ": nothing recorded (vol/%s still lists the copy "
			 "on %s); a copy %s makes when it runs the create is listed by no record (a "
			 "retry onto %s deletes it first, else %s); retry once %s answers, or "
			 "replace-replica %s --node %s --to another node", rl->name, rl->old, n, n,
			 sweep, n, rl->name, rl->old);
}

static int replace_finish(struct replace_list *rl, char *msg, size_t msg_len);
static int replace_old_deleted(struct replace_list *rl, int ret, const char *m2);
static int replace_old_delete(struct replace_list *rl, char *msg, size_t msg_len);
static int replace_undo_delete(struct replace_list *rl, int ret, enum replace_undo_said said,
			       char *msg, size_t msg_len);
static int replace_undo_done(struct replace_list *rl, int r2, const char *m2, char *msg,
			     size_t msg_len);

/*
 * The old copy's uuid, asked of its node when it is alive in the view (its
 * answer: replace_step), while the record (unchanged since rev, which our
 * write expects) still lists it: its delete (replace_finish) removes that
 * copy only, not one a replace back onto its node makes and records meanwhile
 * (review 13b, finding 3); unknown: by name (its node refuses while the
 * record lists a copy there: cluster.c copy_delete_check); unheard (no answer
 * within the peer timeout): no delete at all.
 */
static int replace_uuid(struct replace_list *rl, char *msg, size_t msg_len)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeResize vr = TESSERA__ADMIN__VOLUME_RESIZE__INIT;
	const Tessera__Cluster__NodeRecord *on = view_node(&rl->v, rl->old);

	rl->step = REPLACE_UUID;
	replace_uuid_test_hold(rl->name);
	if (on == NULL || !view_alive(&rl->v, rl->old))
		return replace_finish(rl, msg, msg_len);
	if (strcmp(on->id, rl->c->node_id) == 0) {
		rl->old_unheard = copy_uuid_get(rl->c, on, rl->name, rec_copy_size(rl->rec),
						replace_old_timeout_ms(rl->c), rl->old_uuid) != 0;
		return replace_finish(rl, msg, msg_len);
	}
	cluster_copy_uuid_req(rl->name, rec_copy_size(rl->rec), &req, &vr);
	return replace_call(rl, on, &req, replace_old_timeout_ms(rl->c), false, msg, msg_len);
}

static int replace_create(struct replace_list *rl, char *msg, size_t msg_len);

/* The unlisted copy on the new copy's node (rl->garbage) deleted or not
 * (ret, msg): then the create again. */
static int replace_garbage_done(struct replace_list *rl, int ret, char *msg, size_t msg_len)
{
	const char *n = rl->new_node->id;

	if (ret == -ESTALE) {
		snprintf(msg, msg_len, "node %s's copy of '%s' changed while it was being replaced "
			 "(another replace onto %s?): tessera volume show %s; retry", n, rl->name, n,
			 rl->name);
		return ret;
	}
	if (ret)
		return ret;
	tsr_warn("cluster: volume %s: node %s held a copy that vol/%s does not list (uuid %s: "
		 "left from a replace while it was away, or a concurrent replace's that can no "
		 "longer be recorded): deleted, a new one is made", rl->name, n, rl->name,
		 rl->garbage);
	rl->garbage_dropped = true;
	return replace_create(rl, msg, msg_len);
}

/* The new copy's node holds an unlisted copy (-EEXIST, its uuid rl->garbage):
 * the record marked (replace_garbage_mark), then that copy deleted. */
static int replace_garbage(struct replace_list *rl, char *msg, size_t msg_len)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeDelete vd = TESSERA__ADMIN__VOLUME_DELETE__INIT;
	int ret;

	rl->step = REPLACE_GARBAGE;
	ret = replace_garbage_mark(rl->c, rl->new_node, rl->name, rl->rec, &rl->rev, rl->garbage,
				   msg, msg_len);
	if (ret)
		return ret;
	if (strcmp(rl->new_node->id, rl->c->node_id) == 0) {
		ret = copy_delete_call(rl->c, rl->new_node, rl->name, rl->garbage,
				       replace_old_timeout_ms(rl->c), msg, msg_len);
		return replace_garbage_done(rl, ret, msg, msg_len);
	}
	cluster_copy_delete_req(rl->name, rl->garbage, &req, &vd);
	return replace_call(rl, rl->new_node, &req, replace_old_timeout_ms(rl->c), false, msg,
			    msg_len);
}

/* The new copy made or not (ret, msg; rl->new_uuid): on -EEXIST the unlisted
 * copy there is deleted first (once), else the old copy's uuid is next. */
static int replace_created(struct replace_list *rl, int ret, char *msg, size_t msg_len)
{
	if (ret == -EEXIST && !rl->garbage_dropped) {
		/* a copy on that node the record does not list: garbage once no
		 * replace can record it any more */
		snprintf(rl->garbage, sizeof(rl->garbage), "%s", rl->new_uuid);
		return replace_garbage(rl, msg, msg_len);
	}
	if (ret == -EEXIST) {
		/* after our delete of the unlisted copy, a copy again: another
		 * replace onto that node made it meanwhile */
		snprintf(msg, msg_len, "node %s holds a copy of '%s' again after the one no record "
			 "listed was deleted: another replace onto %s got there first; nothing "
			 "recorded (vol/%s still lists the copy on %s); tessera volume show %s, then "
			 "retry", rl->new_node->id, rl->name, rl->new_node->id, rl->name, rl->old,
			 rl->name);
		return ret;
	}
	if (ret)
		return ret;
	return replace_uuid(rl, msg, msg_len);
}

/*
 * The bound of the new copy's create (review 16a, F1): CLUSTER_COPY_TIMEOUT_MS
 * (30 s), as before 5066a18, not the peer timeout.  A store create is several
 * fsyncs (segment, crc, dirty, voldir, the catalogue's commit) and on a raw
 * device a zeroing of the extent: a healthy node with a slow disk takes
 * longer than the peer timeout (an I/O liveness bound), and a create bounded
 * by it never succeeded there (each retry deleted the late copy and timed out
 * again; the automatic replace churned create+delete).  An admin request's
 * create does not block the loop (admin_async_call), so the longer bound
 * costs only the CLI's wait.  Tests only: TSR_TEST_COPY_TIMEOUT_MS (ms,
 * 100..CLUSTER_COPY_TIMEOUT_MS), read once, shortens it (the frozen-target
 * tests, to keep the suite fast).
 */
static int replace_create_timeout_ms(void)
{
	static int ms;

	if (ms == 0) {
		const char *e = getenv("TSR_TEST_COPY_TIMEOUT_MS");
		long v = e ? strtol(e, NULL, 10) : 0;

		ms = v >= 100 && v <= CLUSTER_COPY_TIMEOUT_MS ? (int)v : CLUSTER_COPY_TIMEOUT_MS;
	}
	return ms;
}

/* The new copy's create on rl->new_node, bounded by replace_create_timeout_ms. */
static int replace_create(struct replace_list *rl, char *msg, size_t msg_len)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeCreate vc = TESSERA__ADMIN__VOLUME_CREATE__INIT;
	const Tessera__Cluster__VolumeRecord *rec = rl->rec;
	bool blocking = replace_create_blocking();
	char ec[16];
	int ret, ms = blocking ? CLUSTER_COPY_TIMEOUT_MS : replace_create_timeout_ms();

	rl->step = REPLACE_CREATE;
	/* a new chunk copy of an ec volume is marked as such, as at create */
	if (strcmp(rl->new_node->id, rl->c->node_id) == 0) {
		ret = copy_create_local(rl->c, rl->new_node, rl->name, rec_copy_size(rec),
					rec->ec_k, rec->stripe_unit, rl->new_uuid, msg, msg_len);
		return replace_created(rl, ret, msg, msg_len);
	}
	copy_create_req(rl->name, rec_copy_size(rec), rec->ec_k, rec->ec_m, rec->stripe_unit, &req,
			&vc, ec);
	tsr_info("cluster: replace of %s on %s: creating the new copy on %s (at most %d ms)",
		 rl->name, rl->old, rl->new_node->id, ms);
	return replace_call(rl, rl->new_node, &req, ms, blocking, msg, msg_len);
}

/* The answer (r, freed here) of rl's step's call, or its failure (status):
 * the replace goes on.  0 or -errno with msg, or -EINPROGRESS. */
static int replace_step(struct replace_list *rl, int status, Tessera__Admin__Response *r,
			char *msg, size_t msg_len)
{
	int ret;

	switch (rl->step) {
	case REPLACE_CREATE:
		ret = copy_create_answer(rl->new_node, rl->name, status, r, rl->call_ms,
					 rl->new_uuid, msg, msg_len);
		if (status)
			replace_unrecorded(rl, msg, msg_len);
		if (r)
			tessera__admin__response__free_unpacked(r, NULL);
		/* an admin request's failure is logged here; the tick's
		 * (rl->later NULL) once, by its hook (attach.c) */
		if (status && rl->later)
			tsr_warn("cluster: replace of %s on %s: %s", rl->name, rl->old, msg);
		return replace_created(rl, ret, msg, msg_len);
	case REPLACE_GARBAGE:
		ret = cluster_copy_delete_answer(rl->new_node, rl->name, status, r, rl->call_ms,
						 msg, msg_len);
		if (status)
			replace_unrecorded(rl, msg, msg_len);
		if (status && rl->later)
			tsr_warn("cluster: replace of %s on %s: %s", rl->name, rl->old, msg);
		if (r)
			tessera__admin__response__free_unpacked(r, NULL);
		return replace_garbage_done(rl, ret, msg, msg_len);
	case REPLACE_UUID:
		rl->old_unheard = status != 0;
		if (r) {
			cluster_copy_uuid_answer(r, rl->old_uuid);
			tessera__admin__response__free_unpacked(r, NULL);
		}
		return replace_finish(rl, msg, msg_len);
	case REPLACE_UNDO: {
		char m2[512];
		int r2 = cluster_copy_delete_answer(rl->new_node, rl->name, status, r,
						    rl->call_ms, m2, sizeof(m2));

		if (r)
			tessera__admin__response__free_unpacked(r, NULL);
		return replace_undo_done(rl, r2, m2, msg, msg_len);
	}
	case REPLACE_OLD_DELETE: {
		char m2[512];
		int r2 = cluster_copy_delete_answer(view_node(&rl->v, rl->old), rl->name,
						    status, r, rl->call_ms, m2, sizeof(m2));

		if (r)
			tessera__admin__response__free_unpacked(r, NULL);
		return replace_old_deleted(rl, r2, m2);
	}
	case REPLACE_LIST:
	default:
		break;
	}
	if (r)
		tessera__admin__response__free_unpacked(r, NULL);
	snprintf(msg, msg_len, "replace of '%s': internal error (step %d)", rl->name, rl->step);
	return -EINVAL;
}

/* rl's reply, once the replace is over (ret, msg): sent from the loop; the
 * tick's replace: its hook told, rl freed. */
static void replace_answer(struct replace_list *rl, int ret, const char *msg)
{
	if (rl->later == NULL) {
		rl->done(rl->c, rl->name, rl->old, rl->slot, ret, msg);
		replace_job_clear(rl);
		free(rl);
		return;
	}
	if (ret)
		admin_fail(&rl->answer, ret, "%s", msg);
	else
		cluster_volume_list(rl->c, rl->name, &rl->answer);
	admin_later_done(rl->later);
}

/*
 * rl cut short by tsr_cluster_stop (ret, msg): answered as replace_answer
 * does, but the tick's hook is told -ESHUTDOWN, not the -ECANCELED an admin
 * request gets: -ECANCELED is also a record write that met another change
 * of vol/<name> (a detach, an attach, another replace), after which the
 * tick retries (review 17a: auto_replace_done logged those "(stopping)").
 */
static void replace_answer_stopping(struct replace_list *rl, int ret, const char *msg)
{
	replace_answer(rl, rl->later == NULL && ret ? -ESHUTDOWN : ret, msg);
}

static void replace_step_done(void *cb_arg, int status, Tessera__Admin__Response *r)
{
	static const char *const waits[] = {
		[REPLACE_LIST] = "its snapshot list",
		[REPLACE_CREATE] = "the new copy's create",
		[REPLACE_GARBAGE] = "the delete of an unlisted copy",
		[REPLACE_UUID] = "the old copy's uuid",
		[REPLACE_UNDO] = "the new copy's delete",
		[REPLACE_OLD_DELETE] = "the old copy's delete",
	};
	struct replace_list *rl = cb_arg;
	char msg[1536];
	int ret;

	if (replace_call_over(rl, status, r)) {
		char sweep[128], left[320];

		sweep_says(rl->c, sweep, sizeof(sweep));
		if (rl->step == REPLACE_OLD_DELETE) {
			/* recorded: only the old copy's delete is cut short */
			tsr_warn("cluster: volume %s: %s is stopping while %s deletes its replaced "
				 "copy: the delete stays queued there (it runs when %s reads it), "
				 "else %s", rl->name, rl->c->node_id, rl->old, rl->old, sweep);
			replace_answer(rl, 0, "");
			return;
		}
		if (rl->step == REPLACE_UNDO) {
			snprintf(msg, sizeof(msg), "%s; %s is stopping while %s deletes the new copy "
				 "(uuid %s): the delete stays queued there, else %s",
				 rl->undo_said == UNDO_SAID ? rl->undo_msg : "nothing recorded",
				 rl->c->node_id, rl->new_node->id, rl->new_uuid, sweep);
			replace_answer_stopping(rl, rl->undo_ret, msg);
			return;
		}
		/* the new copy exists once its create answered (the uuid step);
		 * during the create it may be made late; during the garbage
		 * delete the unlisted copy met there may stay */
		if (rl->step == REPLACE_UUID)
			snprintf(left, sizeof(left), "the new copy on %s (uuid %s) is listed by no "
				 "record: %s", rl->new_node->id, rl->new_uuid, sweep);
		else if (rl->step == REPLACE_GARBAGE)
			snprintf(left, sizeof(left), "%s's copy that no record lists (uuid %s) is "
				 "deleted if %s runs the delete, else %s", rl->new_node->id,
				 rl->garbage, rl->new_node->id, sweep);
		else
			snprintf(left, sizeof(left), "a copy %s makes when it runs the create is "
				 "listed by no record: %s", rl->new_node->id, sweep);
		snprintf(msg, sizeof(msg), "volume '%s': %s is stopping while the replace of its "
			 "copy on %s waits for %s from %s: nothing recorded (vol/%s still lists the "
			 "copy on %s); %s", rl->name, rl->c->node_id, rl->old, waits[rl->step],
			 rl->step == REPLACE_UUID ? rl->old : rl->new_node->id, rl->name, rl->old,
			 left);
		replace_answer_stopping(rl, -ECANCELED, msg);
		return;
	}
	msg[0] = '\0';
	ret = replace_step(rl, status, r, msg, sizeof(msg));
	if (ret == -EINPROGRESS)
		return;
	replace_answer(rl, ret, msg);
}

static int replace_attached_meanwhile(struct tsr_cluster *c, const char *name, char *msg,
				      size_t msg_len);

/*
 * A replace drops the old copy at once (its new copy starts empty, out of
 * sync): when that copy is one the volume's data needs, the data is lost
 * (review 16a, P1: the only IN_SYNC copy of a detached volume whose other
 * copy came from an earlier detached replace and was never rebuilt; the next
 * attach found "fewer than min-replicas in-sync copies").  Refused -EBUSY,
 * whatever its node's liveness, when copy idx is IN_SYNC by the record and
 * the others IN_SYNC are fewer than the data needs (a mirror: one; an ec
 * volume: k), naming the other copies' states: attach the volume so they
 * resync first.  No override (the CLI has none for a replace).  0 or -EBUSY
 * with msg.
 */
static int replace_last_in_sync(const Tessera__Cluster__VolumeRecord *rec, size_t idx,
				char *msg, size_t msg_len)
{
	size_t need = rec->ec_k ? rec->ec_k : 1, others = 0, len;
	char states[512] = "";

	if (rec->copies[idx]->state != TESSERA__CLUSTER__COPY_STATE__IN_SYNC)
		return 0;
	for (size_t i = 0; i < rec->n_copies; i++) {
		if (i == idx)
			continue;
		if (rec->copies[i]->state == TESSERA__CLUSTER__COPY_STATE__IN_SYNC)
			others++;
		len = strlen(states);
		snprintf(states + len, sizeof(states) - len, "%s%s %s", len ? ", " : "",
			 rec->copies[i]->node_id, rec_state_name(rec->copies[i]->state));
	}
	if (others >= need)
		return 0;
	if (rec->n_copies == 1) /* nothing to rebuild the new copy from */
		snprintf(msg, msg_len, "volume '%s': its copy on %s is its only copy: a new copy "
			 "would start empty (replace-replica rebuilds from the other copies, it does "
			 "not move one); if %s is gone for good, the data went with it (tessera "
			 "volume delete %s, then create it again); nothing changed", rec->name,
			 rec->copies[idx]->node_id, rec->copies[idx]->node_id, rec->name);
	else if (rec->ec_k)
		snprintf(msg, msg_len, "volume '%s': its copy on %s is one of the last %zu in-sync "
			 "chunk copies its %u+%u data needs (the others: %s): replacing it would lose "
			 "the data; attach the volume (tessera volume attach %s) so the others "
			 "resync, then retry; nothing changed", rec->name, rec->copies[idx]->node_id,
			 others + 1, rec->ec_k, rec->ec_m, states[0] ? states : "none", rec->name);
	else
		snprintf(msg, msg_len, "volume '%s': its copy on %s is its last in-sync copy (the "
			 "others: %s): replacing it would lose the data; attach the volume (tessera "
			 "volume attach %s) so the others resync, then retry; nothing changed",
			 rec->name, rec->copies[idx]->node_id, states[0] ? states : "none",
			 rec->name);
	tsr_warn("cluster: replace of %s on %s refused: %s", rec->name, rec->copies[idx]->node_id,
		 msg);
	return -EBUSY;
}

/*
 * The replace itself, once the new copy's snapshot list is known (snaps,
 * n_snaps: replace_list_*, copied into rl): the new copy placed, the
 * coordinator asked, then the calls of replace_create, replace_uuid and the
 * record write (replace_finish).  0, or -errno with msg, or -EINPROGRESS
 * (rl->later or rl->done: answered by replace_step_done).  Main thread.
 */
/* Tests only: while the file named by $TSR_TEST_REPLACE_RECORD_HOLD_FILE
 * exists (30 s at most), a replace whose snapshot list was read waits, on
 * the loop, before it reads the record it will write (replace_run, before
 * its snap_gen check); FILE.held is made when it starts waiting
 * (test-cluster-replace-snap-othernode (c): a detached snapshot through
 * another node meanwhile). */
static void replace_record_test_hold(void)
{
	tsr_test_hold_file("TSR_TEST_REPLACE_RECORD_HOLD_FILE", true);
}

static int replace_run(struct replace_list *rl, char *const *snaps, size_t n_snaps, char *msg,
		       size_t msg_len)
{
	struct tsr_cluster *c = rl->c;
	const char *name = rl->name, *old = rl->old, *to = rl->to;
	Tessera__Cluster__VolumeRecord *rec;
	struct tsr_place_node pn[256];
	enum tsr_failure_domain fd = TSR_FD_NODE;
	struct attachment *a;
	unsigned chosen[1];
	char why[1024];
	size_t n, idx;
	int ret;

	rl->snaps = calloc(n_snaps + 1, sizeof(*rl->snaps));
	if (rl->snaps == NULL) {
		snprintf(msg, msg_len, "out of memory in tesserad");
		return -ENOMEM;
	}
	for (; rl->n_snaps < n_snaps; rl->n_snaps++)
		if ((rl->snaps[rl->n_snaps] = strdup(snaps[rl->n_snaps])) == NULL) {
			snprintf(msg, msg_len, "out of memory in tesserad");
			return -ENOMEM;
		}
	ret = view_load(c->meta, &rl->v);
	if (ret) {
		snprintf(msg, msg_len, "cannot read the metadata store: %s", strerror(-ret));
		return ret;
	}
	rl->view_loaded = true;
	replace_record_test_hold();
	ret = rec_volume_get(c->meta, name, &rl->rec, &rl->rev);
	if (ret) {
		rl->rec = NULL;
		snprintf(msg, msg_len, ret == -ENOENT ? "volume '%s' not found (tessera volume list)"
			 : "cannot read volume '%s'", name);
		return ret;
	}
	rec = rl->rec;
	/* a detached snapshot through another node finished since the list's
	 * start: the list may lack it (nothing made yet; the record write's
	 * compare-and-set at rl->rev covers the rest of the replace) */
	if (rl->snap_gen_read && rec->snap_gen != rl->snap_gen) {
		snprintf(msg, msg_len, "volume '%s': a snapshot of %s was created or deleted through "
			 "another node while this replace read its snapshot list: nothing recorded, "
			 "nothing made; run the replace again", name, name);
		tsr_warn("cluster: replace of %s on %s refused: %s (snapshot generation %llu, now "
			 "%llu)", name, old, msg, (unsigned long long)rl->snap_gen,
			 (unsigned long long)rec->snap_gen);
		return -ECANCELED;
	}
	for (idx = 0; idx < rec->n_copies; idx++)
		if (strcmp(rec->copies[idx]->node_id, old) == 0)
			break;
	if (idx == rec->n_copies) {
		snprintf(msg, msg_len, "volume '%s' has no copy on node %s (tessera volume show %s "
			 "lists its copies)", name, old, name);
		return -ENOENT;
	}
	rl->idx = idx;
	ret = replace_last_in_sync(rec, idx, msg, msg_len);
	if (ret)
		return ret;
	tsr_failure_domain_parse(rec->failure_domain, &fd);
	n = place_input(&rl->v, rec, pn, 256);
	/* the old copy's domain is free again */
	for (size_t i = 0; i < n; i++)
		if (strcmp(pn[i].id, old) == 0)
			pn[i].holds_copy = false, pn[i].alive = false;
	if (to[0]) {
		size_t i;

		for (i = 0; i < n && strcmp(pn[i].id, to); i++)
			;
		if (i == n) {
			snprintf(msg, msg_len, "node %s is not in the cluster (tessera node list)", to);
			return -ENOENT;
		}
		for (size_t j = 0; j < n; j++)
			if (j != i)
				pn[j].alive = false; /* only the given node is a candidate */
	}
	ret = tsr_cluster_place(pn, n, fd, 1, rec_copy_size(rec), chosen, why, sizeof(why));
	if (ret) {
		snprintf(msg, msg_len, "cannot place a new copy of '%s'%s%s: %s", name,
			 to[0] ? " on " : "", to, why);
		return ret;
	}
	rl->new_node = view_node(&rl->v, pn[chosen[0]].id);
	/* the coordinator here asked first (review 14c, A): a refusal it would
	 * give now (-EBUSY another replace's rebuild runs; -EIO fenced or
	 * closing) comes before the new copy and the record write, so it changes
	 * nothing, and no crash can leave the refused replace's record (the old
	 * copy unlisted).  Asked again after the calls when the loop ran
	 * meanwhile (replace_finish); a rarer refusal after that (fenced, an ec
	 * bitmap page write in flight) is undone (replace_refused) */
	a = cluster_find_attachment(c, name);
	if (a && a->layout && !a->fenced && idx < a->n_copies && !replace_check_test_off()) {
		ret = tsr_layout_replace_check(a->layout, (unsigned)idx);
		if (ret) {
			snprintf(msg, msg_len, "volume '%s': the coordinator refused the new copy on "
				 "%s: %s (%s); nothing changed", name, rl->new_node->id,
				 strerror(-ret), ret == -EBUSY ? "retry once the running rebuild is "
				 "done" : "tessera volume show");
			tsr_info("cluster: volume %s: replace of copy %s by %s refused by the "
				 "coordinator before the record write (%s): nothing changed", name,
				 old, rl->new_node->id, strerror(-ret));
			return ret;
		}
	}
	return replace_create(rl, msg, msg_len);
}

/* vol/<name>'s snap_gen is no longer rec's (read by the replace): a detached
 * snapshot through another node was recorded since (snapshot.c). */
static bool replace_snap_gen_moved(struct tsr_cluster *c, const char *name,
				   const Tessera__Cluster__VolumeRecord *rec)
{
	Tessera__Cluster__VolumeRecord *now = NULL;
	bool moved;

	if (rec_volume_get(c->meta, name, &now, NULL) != 0)
		return false;
	moved = strcmp(now->uuid, rec->uuid) == 0 && now->snap_gen != rec->snap_gen;
	tessera__cluster__volume_record__free_unpacked(now, NULL);
	return moved;
}

/* Where snap is in rl's list, or rl->n_snaps. */
static size_t replace_listed(const struct replace_list *rl, const char *snap)
{
	size_t k;

	for (k = 0; k < rl->n_snaps && strcmp(rl->snaps[k], snap) != 0; k++)
		;
	return k;
}

/*
 * The snapshot operations noted while rl waited (cluster_replace_note_snap)
 * applied to its list, in their order: a create not failed (done, or its
 * outcome not known yet: the new copy is given it, as the invariant of
 * cluster_replace_note_snap says) appended when not listed (one listed is
 * the same name to make up); a delete done takes the name off (a name
 * deleted and created again goes to the end, the place of its new cut:
 * review revB R5).  A failed create adds nothing (R4), a delete not done
 * (failed, or not known yet) takes nothing off (the make-up of a name none
 * holds is skipped).  0 or -ENOMEM (the replace fails then).
 */
static int replace_noted_merge(struct replace_list *rl)
{
	char **list;

	if (rl->n_noted == 0)
		return 0;
	list = realloc(rl->snaps, (rl->n_snaps + rl->n_noted + 1) * sizeof(*list));
	if (list == NULL)
		return -ENOMEM;
	rl->snaps = list;
	for (size_t i = 0; i < rl->n_noted; i++) {
		const struct replace_noted *n = &rl->noted[i];
		size_t k = replace_listed(rl, n->snap);

		if (n->op == 'd' && n->outcome == NOTED_DONE && k < rl->n_snaps) {
			free(rl->snaps[k]);
			memmove(&rl->snaps[k], &rl->snaps[k + 1],
				(rl->n_snaps - k - 1) * sizeof(*rl->snaps));
			rl->n_snaps--;
		} else if (n->op == 'c' && n->outcome != NOTED_FAILED && k == rl->n_snaps) {
			if ((rl->snaps[rl->n_snaps] = strdup(n->snap)) == NULL)
				return -ENOMEM;
			rl->n_snaps++;
		}
	}
	return 0;
}

/* a and b pack to the same bytes (unknown fields included). */
static bool rec_same_packed(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
	size_t la = protobuf_c_message_get_packed_size(a);
	uint8_t *pa, *pb;
	bool same = false;

	if (la != protobuf_c_message_get_packed_size(b))
		return false;
	pa = malloc(la ? la : 1);
	pb = malloc(la ? la : 1);
	if (pa && pb) {
		protobuf_c_message_pack(a, pa);
		protobuf_c_message_pack(b, pb);
		same = memcmp(pa, pb, la) == 0;
	}
	free(pa);
	free(pb);
	return same;
}

/*
 * The ops now (the old copy's missed_snaps in vol/<name> now) are those as
 * read (was) plus ops appended after them, at least one, each a delete or a
 * create of a snapshot rl gives its new copy (its list, the noted names
 * merged): a snapshot cut through this coordinator while rl waited, which
 * the new copy gets anyway.  NULL, or why not (for the log).
 */
static const char *replace_missed_added(const struct replace_list *rl,
					const Tessera__Cluster__CopyRecord *now,
					const Tessera__Cluster__CopyRecord *was)
{
	if (now->n_missed_snaps <= was->n_missed_snaps)
		return "its list of missed snapshots did not grow";
	for (size_t i = 0; i < was->n_missed_snaps; i++)
		if (strcmp(now->missed_snaps[i], was->missed_snaps[i]) != 0)
			return "its list of missed snapshots changed before its end";
	for (size_t i = was->n_missed_snaps; i < now->n_missed_snaps; i++) {
		const char *op = now->missed_snaps[i];
		bool given = false;

		if (strncmp(op, "d ", 2) == 0)
			continue; /* the new copy's make-up of a name none holds is skipped */
		if (strncmp(op, "c ", 2) != 0)
			return "an operation this build does not know";
		/* listed, or a noted create (one that failed, or was deleted
		 * again meanwhile, is not given: no copy keeps it); a noted delete
		 * of that name is not one (revF F2) */
		given = replace_listed(rl, op + 2) < rl->n_snaps;
		for (size_t k = 0; k < rl->n_noted && !given; k++)
			given = rl->noted[k].op == 'c' && strcmp(rl->noted[k].snap, op + 2) == 0;
		if (!given)
			return "a snapshot the new copy is not given (cut through another path)";
	}
	return NULL;
}

/*
 * vol/<name>'s changes from rl->rev (the record as the replace read it) to
 * rev (as read now), from the metadata store's history (tsr_meta_watch): one
 * that left the record's bytes as they were is a fence the contents at rev
 * cannot show, a garbage mark by a node of an earlier build (it writes the
 * record back unchanged and never raises replace_fence; review revF F1).
 * NULL: every change seen, each one changing something; else why not (for
 * the log): such a write, a delete, or a history that cannot tell (compacted
 * since rl->rev, unreadable).  Main thread (blocking calls to the store).
 */
static const char *replace_fenced_meanwhile(const struct replace_list *rl, uint64_t rev)
{
	const char *why = NULL;
	uint64_t since = rl->rev - 1, next = 0;
	uint8_t *prev = NULL;
	size_t prev_len = 0;
	bool first = true, seen = false;
	char key[80];

	snprintf(key, sizeof(key), "vol/%s", rl->name);
	while (why == NULL && !seen) {
		struct tsr_meta_kv *ev = NULL;
		size_t n = 0;
		int ret = tsr_meta_watch(rl->c->meta, key, since, 0, &ev, &n, &next);

		if (ret) {
			if (ret == -ECANCELED)
				why = "the store's history of its writes meanwhile is compacted (a "
				      "fence among them cannot be told)";
			else
				why = "the store's history of its writes meanwhile cannot be read";
			break;
		}
		for (size_t i = 0; i < n && why == NULL && !seen; i++) {
			if (strcmp(ev[i].key, key) != 0 || ev[i].mod_rev > rev)
				continue;
			if (first && ev[i].mod_rev != rl->rev)
				why = "the store's history does not hold the record as it was read";
			else if (ev[i].deleted)
				why = "it was deleted and written again";
			else if (!first && ev[i].value_len == prev_len &&
				 (prev_len == 0 || memcmp(ev[i].value, prev, prev_len) == 0))
				why = "it was also written back unchanged (a replace's fence by a "
				      "node of an earlier build)";
			first = false;
			seen = ev[i].mod_rev == rev;
			free(prev);
			prev = ev[i].value; /* kept: the next change is compared with it */
			prev_len = ev[i].value_len;
			ev[i].value = NULL;
		}
		tsr_meta_kv_free_array(ev, n);
		if (why == NULL && !seen && (n == 0 || next <= since))
			why = "the store's history of its writes meanwhile ends early";
		since = next;
	}
	free(prev);
	return why;
}

/*
 * rl's record write lost its compare-and-set at rl->rev (review revB R2):
 * did vol/<name> change only in what the old copy missed?  That is the
 * record of a snapshot cut through this coordinator while the replace waited
 * (the layout records the miss of its old copy, away: the automatic
 * replace's case), and the new copy is given that snapshot anyway
 * (cluster_replace_note_snap): before, every such snapshot failed the
 * attempt ("vol/V changed while this replace waited"), its new copy deleted.
 * Anything else changed refuses, as before: another replace, an attach or
 * detach, a detached snapshot's snap_gen, a copy's state, a field this build
 * does not know, and a garbage mark's fence, which changes nothing but
 * replace_fence (replace_garbage_mark; an earlier build's changes nothing at
 * all: the store's history shows it, replace_fenced_meanwhile).  True: rl->rev is the revision
 * read now and *old_cr / *old_len the old copy's entry now (for the undo of a
 * refusal); rec (as read, slot rl->idx already the new copy's) is to be
 * written as it is.  Main thread.
 */
static bool replace_missed_only_moved(struct replace_list *rl,
				      const Tessera__Cluster__VolumeRecord *rec, uint8_t **old_cr,
				      size_t *old_len)
{
	Tessera__Cluster__VolumeRecord *now = NULL, cmp;
	Tessera__Cluster__CopyRecord *was = NULL, *cr, cr_cmp;
	Tessera__Cluster__CopyRecord *copies[TSR_LAYOUT_MAX_COPIES];
	const char *why = NULL;
	size_t idx = rl->idx, len;
	uint8_t *buf;
	uint64_t rev;
	bool same = false;

	if (rec_volume_get(rl->c->meta, rl->name, &now, &rev) != 0)
		return false;
	if (now->n_copies != rec->n_copies || idx >= now->n_copies ||
	    now->n_copies > TSR_LAYOUT_MAX_COPIES ||
	    strcmp(now->copies[idx]->node_id, rl->old) != 0)
		goto out;
	was = tessera__cluster__copy_record__unpack(NULL, *old_len, *old_cr);
	if (was == NULL)
		goto out;
	/* the old copy's entry: the same but for its missed list */
	cr = now->copies[idx];
	cr_cmp = *cr;
	cr_cmp.n_missed_snaps = was->n_missed_snaps;
	cr_cmp.missed_snaps = was->missed_snaps;
	if (!rec_same_packed(&cr_cmp.base, &was->base))
		goto out;
	/* the rest of the record: the same, replace_fence included */
	cmp = *now;
	memcpy(copies, now->copies, now->n_copies * sizeof(*copies));
	copies[idx] = rec->copies[idx];
	cmp.copies = copies;
	if (!rec_same_packed(&cmp.base, &rec->base))
		goto out;
	why = replace_missed_added(rl, cr, was);
	if (why == NULL)
		why = replace_fenced_meanwhile(rl, rev);
	if (why) {
		tsr_info("cluster: replace of %s on %s: vol/%s changed while it waited only in what "
			 "the copy on %s missed, but %s: not written again", rl->name, rl->old,
			 rl->name, rl->old, why);
		goto out;
	}
	len = tessera__cluster__copy_record__get_packed_size(cr);
	buf = malloc(len ? len : 1);
	if (buf == NULL)
		goto out;
	tessera__cluster__copy_record__pack(cr, buf);
	free(*old_cr);
	*old_cr = buf;
	*old_len = len;
	rl->rev = rev;
	same = true;
	tsr_info("cluster: replace of %s on %s: vol/%s changed while it waited only in the "
		 "snapshots the copy on %s missed (%zu more operation%s, made meanwhile through "
		 "this coordinator, each create given to the new copy too): written again",
		 rl->name, rl->old, rl->name, rl->old, cr->n_missed_snaps - was->n_missed_snaps,
		 cr->n_missed_snaps - was->n_missed_snaps == 1 ? "" : "s");
out:
	if (was)
		tessera__cluster__copy_record__free_unpacked(was, NULL);
	tessera__cluster__volume_record__free_unpacked(now, NULL);
	return same;
}

/*
 * The end of a replace, its calls answered (the new copy made, rl->new_uuid;
 * the old copy's uuid, rl->old_uuid, or unheard): vol/<name> written listing
 * the new copy by compare-and-set at rl->rev, the coordinator here given it,
 * the old copy deleted (replace_old_delete).  0 or -errno with msg, or
 * -EINPROGRESS.  Main thread.  Its calls to other nodes (the old copy's
 * delete, an undo's delete of the new copy: replace_undo_delete) are bounded
 * by the peer timeout; since session 17 made like the others (replace_call:
 * off the loop for an admin request or the tick's replace), before blocking.
 */
static int replace_finish(struct replace_list *rl, char *msg, size_t msg_len)
{
	struct tsr_cluster *c = rl->c;
	const char *name = rl->name, *old = rl->old;
	Tessera__Cluster__VolumeRecord *rec = rl->rec;
	const Tessera__Cluster__NodeRecord *new_node = rl->new_node;
	struct attachment *a, *pending = NULL; /* pending: the coordinator here, its slot */
	uint8_t *old_cr = NULL; /* the old copy's CopyRecord as read, packed */
	size_t old_len = 0, idx = rl->idx;
	char key[80], *missed = NULL;
	int ret = 0;

	replace_test_hold(name);
	if (rl->waited) {
		/* the loop ran while the nodes answered: attached elsewhere, or a
		 * refusal the coordinator here would give now, changes nothing */
		ret = replace_attached_meanwhile(c, name, msg, msg_len);
		a = cluster_find_attachment(c, name);
		if (ret == 0 && a && a->layout && !a->fenced && idx < a->n_copies &&
		    !replace_check_test_off() &&
		    (ret = tsr_layout_replace_check(a->layout, (unsigned)idx)) != 0)
			snprintf(msg, msg_len, "volume '%s': the coordinator refused the new copy on "
				 "%s: %s (%s); nothing changed", name, new_node->id, strerror(-ret),
				 ret == -EBUSY ? "retry once the running rebuild is done" :
				 "tessera volume show");
		if (ret)
			return replace_undo_delete(rl, ret, UNDO_SAID, msg, msg_len);
	}
	/* the old copy's entry as read, for the undo of a refusal */
	old_len = tessera__cluster__copy_record__get_packed_size(rec->copies[idx]);
	old_cr = malloc(old_len ? old_len : 1);
	if (old_cr == NULL) {
		snprintf(msg, msg_len, "out of memory in tesserad");
		return replace_undo_delete(rl, -ENOMEM, UNDO_SAID, msg, msg_len);
	}
	tessera__cluster__copy_record__pack(rec->copies[idx], old_cr);
	free(rec->copies[idx]->node_id);
	rec->copies[idx]->node_id = strdup(new_node->id);
	if (rec->copies[idx]->node_id == NULL) {
		ret = -ENOMEM;
		snprintf(msg, msg_len, "out of memory in tesserad");
		goto out;
	}
	rec->copies[idx]->state = TESSERA__CLUSTER__COPY_STATE__OUT_OF_SYNC;
	rec->copies[idx]->since = cluster_now();
	rec->copies[idx]->rebuild = true; /* an old bitmap of that node is not this copy's */
	/* a new copy (a mirror's, or an ec volume's chunk copy) misses every
	 * snapshot, whoever rebuilds it */
	if (replace_noted_merge(rl) < 0 ||
	    replace_missed(name, rl->snaps, rl->n_snaps, rec->copies[idx], &missed) < 0) {
		free(old_cr);
		snprintf(msg, msg_len, "out of memory in tesserad");
		return replace_undo_delete(rl, -ENOMEM, UNDO_SAID, msg, msg_len);
	}
	snprintf(key, sizeof(key), "vol/%s", name);
	a = cluster_find_attachment(c, name);
	if (a && a->layout && !a->fenced && idx < a->n_copies) {
		/* from here the layout's copy's states are held, not written into
		 * the slot that lists the new node (record_state) */
		pthread_mutex_lock(&c->lock);
		snprintf(a->copies[idx].pending_new, sizeof(a->copies[idx].pending_new), "%s",
			 new_node->id);
		a->copies[idx].held_set = false;
		pthread_mutex_unlock(&c->lock);
		pending = a;
	}
	replace_fence_test(c, name);
	ret = rec_put(c->meta, key, &rec->base, rl->rev, 0, NULL);
	/* a snapshot cut meanwhile recorded what the old copy missed, the only
	 * change: written over (again, at most twice more: the layout may record
	 * once more in between) */
	for (int again = 0; again < 3 && ret == -ECANCELED; again++) {
		if (!replace_missed_only_moved(rl, rec, &old_cr, &old_len))
			break;
		ret = rec_put(c->meta, key, &rec->base, rl->rev, 0, NULL);
	}
	if (ret) {
		if (pending)
			replace_pending_end(c, pending, idx, NULL);
		free(missed);
		free(old_cr);
		/* ours only: another replace may have recorded its own copy there */
		rl->undo_snap_gen = ret == -ECANCELED && replace_snap_gen_moved(c, name, rec);
		return replace_undo_delete(rl, ret, UNDO_RECORD, msg, msg_len);
	}
	tsr_info("cluster: volume %s copy %s replaced by %s (out-of-sync, full rebuild)", name,
		 old, new_node->id);
	a = pending;
	if (a) {
		struct tsr_layout_copy cp = { .state = TSR_COPY_OUT_OF_SYNC, .full_resync = true,
					      .missed = missed };

		snprintf(cp.node_id, sizeof(cp.node_id), "%s", new_node->id);
		snprintf(cp.address, sizeof(cp.address), "%s", new_node->address);
		cp.local = strcmp(new_node->id, c->node_id) == 0;
		replace_layout_test_hold(name);
		ret = tsr_layout_replace_copy(a->layout, (unsigned)idx, &cp);
		if (ret) {
			bool undone = replace_refused(c, a, name, idx, old, new_node, old_cr,
						      old_len, ret, msg, msg_len);

			free(missed);
			free(old_cr);
			/* the record lists the old copy again: the new one is ours
			 * to delete (else it stays listed, out of sync) */
			return undone ? replace_undo_delete(rl, ret, UNDO_SAID, msg, msg_len) : ret;
		}
		replace_taken_test_hold(name);
		/* a state held meanwhile was the old copy's: the layout names
		 * each copy's own node (hooks.set_copy_state), so the new copy's
		 * states, even those asked before this, are recorded as asked */
		replace_pending_end(c, a, idx, new_node->id);
		a->copies[idx].dead_since = 0;
		a->copies[idx].next_return = 0;
		a->copies[idx].last_state = TSR_COPY_OUT_OF_SYNC;
	} else {
		/* no coordinator here: a bitmap or journal of the old copy left
		 * from when there was one is garbage (and a copy placed on that
		 * node again must not take it for its own) */
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s/%s.%s.bitmap", c->coord_dir, name, old);
		unlink(path);
		snprintf(path, sizeof(path), "%s/%s.%s.snaps", c->coord_dir, name, old);
		unlink(path);
	}
	free(missed);
	free(old_cr);
	replace_delete_test_hold(name);
	return replace_old_delete(rl, msg, msg_len);
out:
	free(missed);
	free(old_cr);
	return ret;
}

/* The old copy's delete answered or not (ret, m2): logged; the replace is
 * recorded whatever it says. */
static int replace_old_deleted(struct replace_list *rl, int ret, const char *m2)
{
	if (ret == -ESTALE)
		tsr_info("cluster: volume %s: the copy on %s is not the one replaced any more (a "
			 "replace back onto %s made another): left alone", rl->name, rl->old,
			 rl->old);
	else if (ret)
		tsr_warn("cluster: %s", m2);
	return 0;
}

/*
 * The old copy, if its node can hear us: garbage now (that copy only, by its
 * uuid), bounded by the peer timeout; for an admin request or the tick's
 * replace off the loop (step REPLACE_OLD_DELETE, answered after it), since
 * session 17.  Its uuid unheard (no answer in time): no delete by name,
 * which that node could run late, once a replace back onto it made a copy
 * there and has not recorded it yet (review 13b, finding 3): the leftover
 * sweep judges that copy against the record.  0 (the replace is recorded),
 * or -EINPROGRESS.
 */
static int replace_old_delete(struct replace_list *rl, char *msg, size_t msg_len)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeDelete vd = TESSERA__ADMIN__VOLUME_DELETE__INIT;
	const Tessera__Cluster__NodeRecord *on = view_node(&rl->v, rl->old);
	const char *uuid = rl->old_uuid[0] ? rl->old_uuid : NULL;
	char m2[512];

	rl->step = REPLACE_OLD_DELETE;
	if (rl->old_unheard)
		tsr_warn("cluster: volume %s: node %s did not give its old copy's uuid within %d ms: "
			 "that copy is left to the leftover sweep", rl->name, rl->old,
			 replace_old_timeout_ms(rl->c));
	if (on == NULL || !view_alive(&rl->v, rl->old) || rl->old_unheard)
		return 0;
	if (!replace_async(rl) || strcmp(on->id, rl->c->node_id) == 0)
		return replace_old_deleted(rl, copy_delete_call(rl->c, on, rl->name, uuid,
								replace_old_timeout_ms(rl->c), m2,
								sizeof(m2)), m2);
	cluster_copy_delete_req(rl->name, uuid, &req, &vd);
	return replace_call(rl, on, &req, replace_old_timeout_ms(rl->c), false, msg, msg_len);
}

/* Our new copy's undo delete answered or not (r2, m2): the replace's
 * failure (rl->undo_ret) with its message (said before, or the record
 * write's, which says whether the copy went). */
static int replace_undo_done(struct replace_list *rl, int r2, const char *m2, char *msg,
			     size_t msg_len)
{
	int ret = rl->undo_ret;

	if (rl->undo_said == UNDO_SAID) {
		if (r2)
			tsr_warn("cluster: volume %s: %s (left to the leftover sweep)", rl->name, m2);
		snprintf(msg, msg_len, "%s", rl->undo_msg);
		return ret;
	}
	if (r2)
		tsr_warn("cluster: volume %s: %s", rl->name, m2);
	if (ret == -ECANCELED && rl->undo_snap_gen)
		snprintf(msg, msg_len, "volume '%s': a snapshot of %s was created or deleted through "
			 "another node while this replace waited for the other nodes: nothing "
			 "recorded, the new copy on %s %s; run the replace again (its snapshot list "
			 "may lack that snapshot)", rl->name, rl->name, rl->new_node->id,
			 r2 ? "could not be deleted (the leftover sweep removes it)" : "deleted");
	else if (ret == -ECANCELED)
		snprintf(msg, msg_len, "vol/%s changed while this replace waited for the other nodes "
			 "(another replace, an attach or detach, a copy's state, or a snapshot a "
			 "copy missed): nothing recorded, the new copy on %s %s; tessera volume show "
			 "%s, then retry if the copy on %s is still to be replaced", rl->name,
			 rl->new_node->id,
			 r2 ? "could not be deleted (the leftover sweep removes it)" : "deleted",
			 rl->name, rl->old);
	else
		snprintf(msg, msg_len, "cannot record the new copy of '%s' on %s: %s; nothing "
			 "recorded, the new copy %s (retry)", rl->name, rl->new_node->id,
			 strerror(-ret), r2 ? "left to the leftover sweep" : "deleted");
	return ret;
}

/*
 * The replace failed (ret; msg says why, or UNDO_RECORD: the record write
 * failed, said once the delete is answered) after its new copy was made:
 * that copy deleted by its uuid (ours only: another replace may have
 * recorded its own copy there), bounded by the peer timeout; for an admin
 * request or the tick's replace off the loop (step REPLACE_UNDO) since
 * session 17.  A delete not answered is still queued on the connection; else
 * the leftover sweep.  ret (with msg), or -EINPROGRESS.
 */
static int replace_undo_delete(struct replace_list *rl, int ret, enum replace_undo_said said,
			       char *msg, size_t msg_len)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeDelete vd = TESSERA__ADMIN__VOLUME_DELETE__INIT;
	char m2[512];

	rl->step = REPLACE_UNDO;
	rl->undo_ret = ret;
	rl->undo_said = said;
	snprintf(rl->undo_msg, sizeof(rl->undo_msg), "%s", said == UNDO_SAID ? msg : "");
	if (!replace_async(rl) || strcmp(rl->new_node->id, rl->c->node_id) == 0)
		return replace_undo_done(rl, copy_delete_call(rl->c, rl->new_node, rl->name,
							      rl->new_uuid,
							      replace_old_timeout_ms(rl->c), m2,
							      sizeof(m2)), m2, msg, msg_len);
	cluster_copy_delete_req(rl->name, rl->new_uuid[0] ? rl->new_uuid : NULL, &req, &vd);
	return replace_call(rl, rl->new_node, &req, replace_old_timeout_ms(rl->c), false, msg,
			    msg_len);
}


/* ---- replace-replica: the new copy's snapshot list ----------------------- */

/*
 * The snapshot list a replace gives its new copy (replace_missed) comes from
 * this node's store when it holds an IN_SYNC copy, else from a node holding
 * one (session 15, contract replace2).  It used to be cluster_volume_snapshots:
 * a forward to the record's first IN_SYNC copy's node bounded by
 * CLUSTER_FORWARD_TIMEOUT_MS (120 s), waited for on this main loop, that node
 * often the replaced one (the sick one: frozen, it stopped the loop for 120 s,
 * then the new copy got an empty list).  Now the nodes holding an IN_SYNC
 * copy are asked in turn (the old copy's node last), each bounded by the peer
 * timeout (replace_old_timeout_ms); for an admin request without blocking the
 * loop (admin_async_call, the reply given later), and since session 17 the
 * same for the tick's automatic replace (--rebuild-after: its hook told).  None
 * answers: the replace is refused before anything is made (nothing to undo),
 * naming each node asked and its failure.  No node holding an IN_SYNC copy
 * alive: an empty list, as before.  The list is read before the new copy is
 * made (it was read after): nothing to undo on a refusal, and the window it
 * could miss a snapshot in is the same kind as before (the limits of
 * CopyRecord.missed_snaps, docs/ARCHITECTURE.md).
 */
/* tests only: the blocking 120 s forward of before (the control run) */
static bool replace_list_unbounded(void)
{
	const char *e = getenv("TSR_TEST_REPLACE_LIST_UNBOUNDED");

	return e && strcmp(e, "1") == 0;
}

/*
 * Where rl's list comes from: 0 and *local (*n_local entries, malloc'd) from
 * our store (we hold an IN_SYNC copy), or nothing to ask (no node holding an
 * IN_SYNC copy alive; or the record unreadable: replace_run says why); 1: ask
 * rl->nodes; -errno with msg: our store cannot list them.
 */
static int replace_list_plan(struct tsr_cluster *c, struct replace_list *rl,
			     struct tsr_snap_info **local, size_t *n_local, char *msg,
			     size_t msg_len)
{
	Tessera__Cluster__VolumeRecord *rec = NULL;
	struct cluster_view v;
	uint64_t rev;
	int ret = 0;

	*local = NULL;
	*n_local = 0;
	if (view_load(c->meta, &v))
		return 0;
	if (rec_volume_get(c->meta, rl->name, &rec, &rev)) {
		view_free(&v);
		return 0;
	}
	rl->snap_gen = rec->snap_gen; /* before any list is read (snapshot.c's record step) */
	rl->snap_gen_read = true;
	/* refused for a reason the record gives: before any node is asked
	 * (review 16d N3; replace_run checks again on the record it writes) */
	for (size_t i = 0; i < rec->n_copies; i++)
		if (strcmp(rec->copies[i]->node_id, rl->old) == 0) {
			ret = replace_last_in_sync(rec, i, msg, msg_len);
			if (ret)
				goto out;
			break;
		}
	for (size_t i = 0; i < rec->n_copies; i++)
		if (rec->copies[i]->state == TESSERA__CLUSTER__COPY_STATE__IN_SYNC &&
		    strcmp(rec->copies[i]->node_id, c->node_id) == 0) {
			ret = tsr_store_snap_list(c->o.store, rl->name, local, n_local);
			if (ret)
				snprintf(msg, msg_len, "volume '%s': cannot list its snapshots on %s "
					 "(its in-sync copy) for the new copy: %s; nothing changed",
					 rl->name, c->node_id, strerror(-ret));
			goto out;
		}
	/* the old copy's node last: the replace is often for its sake */
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < rec->n_copies && rl->n_nodes < TSR_LAYOUT_MAX_COPIES; i++) {
			const Tessera__Cluster__CopyRecord *cr = rec->copies[i];
			const Tessera__Cluster__NodeRecord *node;

			if ((strcmp(cr->node_id, rl->old) == 0) != (pass == 1) ||
			    cr->state != TESSERA__CLUSTER__COPY_STATE__IN_SYNC ||
			    !view_alive(&v, cr->node_id) ||
			    (node = view_node(&v, cr->node_id)) == NULL)
				continue;
			/* the node that forwarded this request waits for our answer */
			if (c->origin != NULL && strcmp(cr->node_id, c->origin) == 0)
				continue;
			snprintf(rl->nodes[rl->n_nodes].id, sizeof(rl->nodes[0].id), "%s", node->id);
			snprintf(rl->nodes[rl->n_nodes].address, sizeof(rl->nodes[0].address), "%s",
				 node->address);
			rl->n_nodes++;
		}
	ret = rl->n_nodes ? 1 : 0;
out:
	tessera__cluster__volume_record__free_unpacked(rec, NULL);
	view_free(&v);
	return ret;
}

/* The request asking a node for rl's list (its own store's, as an IN_SYNC
 * copy holds it); via_node: a node that forwards it does not ask us back. */
static void replace_list_req(struct replace_list *rl, Tessera__Admin__Request *req,
			     Tessera__Admin__SnapshotList *sl)
{
	sl->volume = rl->name;
	req->command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST;
	req->snapshot_list = sl;
	req->via_node = rl->c->node_id;
}

/* The answer of rl->nodes[rl->next]: true when it is the list (r kept);
 * else its failure is noted in rl->failed and r freed. */
static bool replace_list_take(struct replace_list *rl, int status, Tessera__Admin__Response *r)
{
	size_t len = strlen(rl->failed);
	const char *id = rl->nodes[rl->next].id;

	if (status == 0 && r->error == 0)
		return true;
	if (status == -ETIMEDOUT)
		snprintf(rl->failed + len, sizeof(rl->failed) - len, "%s%s: no answer in %d ms",
			 len ? "; " : "", id, replace_old_timeout_ms(rl->c));
	else
		snprintf(rl->failed + len, sizeof(rl->failed) - len, "%s%s: %s", len ? "; " : "",
			 id, status ? strerror(-status) : r->message && r->message[0] ?
			 r->message : strerror(-r->error));
	tsr_warn("cluster: volume %s: node %s did not give the snapshot list for the new copy "
		 "(%s)", rl->name, id, status ? strerror(-status) : "it refused");
	if (r)
		tessera__admin__response__free_unpacked(r, NULL);
	return false;
}

/* Every node asked failed: the replace is refused, nothing made. */
static int replace_list_refuse(struct replace_list *rl, char *msg, size_t msg_len)
{
	snprintf(msg, msg_len, "volume '%s': no node holding an in-sync copy gave its snapshot "
		 "list for the new copy (%s): nothing changed; retry once one of them answers",
		 rl->name, rl->failed);
	tsr_warn("cluster: replace of %s on %s refused: %s", rl->name, rl->old, msg);
	return -EHOSTUNREACH;
}

/* The replace with the list in r (a node's answer) or local: replace_run's
 * result (-EINPROGRESS: answered later; r and local are not kept). */
static int replace_list_run(struct replace_list *rl, const Tessera__Admin__Response *r,
			    const struct tsr_snap_info *local, size_t n_local, char *msg,
			    size_t msg_len)
{
	size_t n = r ? r->n_snapshots : n_local, k = 0;
	char **names = calloc(n + 1, sizeof(*names));
	int ret;

	if (names == NULL) {
		snprintf(msg, msg_len, "out of memory in tesserad");
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		if (r && !r->snapshots[i]->deleting && r->snapshots[i]->name)
			names[k++] = r->snapshots[i]->name;
		else if (!r && !local[i].deleting)
			names[k++] = (char *)local[i].name;
	}
	ret = replace_run(rl, names, k, msg, msg_len); /* copies names */
	free(names);
	return ret;
}

static void replace_list_reply(struct tsr_admin_server *srv, void *arg,
			       Tessera__Admin__Response *resp)
{
	struct replace_list *rl = arg;

	(void)srv;
	*resp = rl->answer; /* moved: built with the same allocators */
	replace_job_clear(rl);
	free(rl);
}

static void replace_list_done(void *cb_arg, int status, Tessera__Admin__Response *r);

/* Ask rl->nodes[rl->next], then the next ones until a call starts: 0 (its
 * callback fires), or -EHOSTUNREACH when none could be asked. */
static int replace_list_ask(struct replace_list *rl)
{
	for (; rl->next < rl->n_nodes; rl->next++) {
		Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
		Tessera__Admin__SnapshotList sl = TESSERA__ADMIN__SNAPSHOT_LIST__INIT;
		int ret;

		replace_list_req(rl, &req, &sl);
		ret = admin_async_call(rl->c->o.loop, rl->nodes[rl->next].address, rl->c->token,
				       &req, replace_old_timeout_ms(rl->c), replace_list_done, rl,
				       &rl->call);
		if (ret == 0) {
			tsr_info("cluster: replace of %s on %s: asking %s for the new copy's snapshot "
				 "list (at most %d ms)", rl->name, rl->old, rl->nodes[rl->next].id,
				 replace_old_timeout_ms(rl->c));
			rl->next_list = g_replace_lists;
			g_replace_lists = rl;
			return 0;
		}
		replace_list_take(rl, ret, NULL);
	}
	return -EHOSTUNREACH;
}

/*
 * After a wait for another node (the list, the new copy, the old copy's
 * uuid): 0, or -EBUSY with msg when the volume was
 * attached on another node meanwhile (its coordinator would not know the new
 * copy: the handler forwards a replace of an attached volume there, and
 * checked that before the wait).
 */
static int replace_attached_meanwhile(struct tsr_cluster *c, const char *name, char *msg,
				      size_t msg_len)
{
	Tessera__Cluster__AttachRecord *a;
	struct tsr_meta_kv kv = { 0 };
	char key[80];
	int ret = 0;

	snprintf(key, sizeof(key), "attach/%s", name);
	if (tsr_meta_get(c->meta, key, &kv) != 0)
		return 0; /* not attached (or unreadable: replace_run's reads say it) */
	a = rec_attach_decode(&kv);
	tsr_meta_kv_clear(&kv);
	if (a && strcmp(a->node_id, c->node_id) != 0) {
		snprintf(msg, msg_len, "volume '%s' was attached on %s while this replace waited for "
			 "another node: nothing changed; run the replace again (it goes to %s)",
			 name, a->node_id, a->node_id);
		ret = -EBUSY;
	}
	if (a)
		tessera__cluster__attach_record__free_unpacked(a, NULL);
	return ret;
}

static void replace_list_done(void *cb_arg, int status, Tessera__Admin__Response *r)
{
	struct replace_list *rl = cb_arg;
	char msg[1536];
	int ret;

	if (replace_call_over(rl, status, r)) {
		snprintf(msg, sizeof(msg), "volume '%s': %s is stopping while the replace of its "
			 "copy on %s waits for its snapshot list: nothing changed", rl->name,
			 rl->c->node_id, rl->old);
		replace_answer_stopping(rl, -ECANCELED, msg);
		return;
	}
	if (replace_list_take(rl, status, r)) {
		ret = replace_attached_meanwhile(rl->c, rl->name, msg, sizeof(msg));
		if (ret == 0)
			ret = replace_list_run(rl, r, NULL, 0, msg, sizeof(msg));
		tessera__admin__response__free_unpacked(r, NULL);
		if (ret == -EINPROGRESS) /* a call of the replace runs: replace_step_done */
			return;
	} else {
		rl->next++;
		if (replace_list_ask(rl) == 0)
			return;
		ret = replace_list_refuse(rl, msg, sizeof(msg));
	}
	replace_answer(rl, ret, msg);
}

const char *cluster_replace_waiting(const struct tsr_cluster *c, const char *name)
{
	for (const struct replace_list *rl = g_replace_lists; rl; rl = rl->next_list)
		if (rl->c == c && strcmp(rl->name, name) == 0)
			return rl->old;
	return NULL;
}

int cluster_replace_note_snap(struct tsr_cluster *c, const char *name, char op, const char *snap)
{
	if (!tsr_valid_name(snap))
		return 0; /* snap_change refuses it, naming why */
	for (struct replace_list *rl = g_replace_lists; rl; rl = rl->next_list) {
		struct replace_noted *list;

		if (rl->c != c || strcmp(rl->name, name) != 0)
			continue;
		if (rl->n_noted == REPLACE_MISSED_MAX) /* the new copy's list's bound */
			return -E2BIG;
		list = realloc(rl->noted, (rl->n_noted + 1) * sizeof(*list));
		if (list == NULL)
			return -ENOMEM;
		rl->noted = list;
		list[rl->n_noted].op = op;
		list[rl->n_noted].outcome = NOTED_RUNNING;
		snprintf(list[rl->n_noted].snap, sizeof(list[0].snap), "%s", snap);
		rl->n_noted++;
		if (op == 'c')
			tsr_info("cluster: replace of %s on %s: snapshot %s, created while it waits, "
				 "is given to the new copy too", name, rl->old, snap);
		else
			tsr_info("cluster: replace of %s on %s: snapshot %s, deleted while it waits, "
				 "is taken off the new copy's list once deleted", name, rl->old, snap);
	}
	return 0;
}

void cluster_replace_snap_done(struct tsr_cluster *c, const char *name, char op,
			       const char *snap, bool done)
{
	if (name == NULL || snap == NULL)
		return; /* never noted (cluster_replace_note_snap: invalid) */
	for (struct replace_list *rl = g_replace_lists; rl; rl = rl->next_list) {
		if (rl->c != c || strcmp(rl->name, name) != 0)
			continue;
		for (size_t i = 0; i < rl->n_noted; i++) {
			struct replace_noted *n = &rl->noted[i];

			if (n->op != op || n->outcome != NOTED_RUNNING || strcmp(n->snap, snap))
				continue;
			n->outcome = done ? NOTED_DONE : NOTED_FAILED;
			if (!done && op == 'c')
				tsr_info("cluster: replace of %s on %s: snapshot %s was not created: "
					 "not given to the new copy", name, rl->old, snap);
			break;
		}
	}
}

/* tsr_cluster_stop: each replace of c waiting for another node (its list, its
 * new copy, the old copy's uuid) answers -ECANCELED now. */
static void replace_list_stop(struct tsr_cluster *c)
{
	for (struct replace_list *rl = g_replace_lists; rl;) {
		if (rl->c != c) {
			rl = rl->next_list;
			continue;
		}
		admin_async_cancel(rl->call); /* its callback unlists it */
		rl = g_replace_lists;
	}
}

/* The old way (TSR_TEST_REPLACE_LIST_UNBOUNDED=1, tests' control only). */
static int replace_unbounded(struct tsr_cluster *c, const char *name, const char *old,
			     const char *to, char *msg, size_t msg_len)
{
	Tessera__Admin__Volume av = TESSERA__ADMIN__VOLUME__INIT;
	Tessera__Admin__Response r = TESSERA__ADMIN__RESPONSE__INIT;
	struct replace_list rl = { .c = c };
	int ret;

	snprintf(rl.name, sizeof(rl.name), "%s", name);
	snprintf(rl.old, sizeof(rl.old), "%s", old);
	snprintf(rl.to, sizeof(rl.to), "%s", to ? to : "");
	av.name = (char *)name;
	cluster_volume_snapshots(c, &av);
	r.snapshots = av.snapshots;
	r.n_snapshots = av.n_snapshots;
	ret = replace_list_run(&rl, &r, NULL, 0, msg, msg_len); /* blocking: rl.later NULL */
	replace_job_clear(&rl);
	for (size_t i = 0; i < av.n_snapshots; i++)
		admin_snapshot_free_built(av.snapshots[i]);
	free(av.snapshots);
	return ret;
}

/*
 * A replace from an admin request (srv: its reply given later), from the tick
 * (done: its hook, the same steps, asynchronous), or blocking (neither: the
 * tick's way before session 17, left for admin_later_begin's failure).
 */
static int replace_start(struct tsr_cluster *c, struct tsr_admin_server *srv,
			 cluster_replace_fn done, unsigned slot, const char *name,
			 const char *old, const char *to, char *msg, size_t msg_len)
{
	struct tsr_snap_info *local = NULL;
	struct replace_list *rl;
	size_t n_local = 0;
	int ret;

	if (replace_list_unbounded())
		return replace_unbounded(c, name, old, to, msg, msg_len);
	if (strlen(name) >= sizeof(rl->name)) {
		snprintf(msg, msg_len, "volume '%s' not found (tessera volume list)", name);
		return -ENOENT;
	}
	if (strlen(old) >= sizeof(rl->old)) {
		snprintf(msg, msg_len, "volume '%s' has no copy on node %s (tessera volume show %s "
			 "lists its copies)", name, old, name);
		return -ENOENT;
	}
	if (to && strlen(to) >= sizeof(rl->to)) {
		snprintf(msg, msg_len, "node %s is not in the cluster (tessera node list)", to);
		return -ENOENT;
	}
	/* a snapshot create/delete of it through this node still running: its
	 * cut may not be in the list the new copy is made from (review 16d N1;
	 * the other order is refused by cluster_snapshot_change) */
	if (cluster_snapshot_changing(c, name)) {
		snprintf(msg, msg_len, "volume '%s': a snapshot create or delete of it is running "
			 "through this node: retry the replace once it answers; nothing changed",
			 name);
		tsr_warn("cluster: replace of %s on %s refused: %s", name, old, msg);
		return -EBUSY;
	}
	rl = calloc(1, sizeof(*rl));
	if (rl == NULL) {
		snprintf(msg, msg_len, "out of memory in tesserad");
		return -ENOMEM;
	}
	rl->c = c;
	snprintf(rl->name, sizeof(rl->name), "%s", name);
	snprintf(rl->old, sizeof(rl->old), "%s", old);
	snprintf(rl->to, sizeof(rl->to), "%s", to ? to : "");
	tessera__admin__response__init(&rl->answer);
	ret = replace_list_plan(c, rl, &local, &n_local, msg, msg_len);
	if (ret < 0)
		goto out;
	/* an admin request, or the tick's replace: the loop goes on while the
	 * nodes answer (the list's, then the new copy's and the old copy's:
	 * replace_call) */
	rl->done = done;
	rl->slot = slot;
	if (done == NULL && srv)
		rl->later = admin_later_begin(srv, replace_list_reply, rl);
	if (replace_async(rl)) {
		if (ret == 0)
			ret = replace_list_run(rl, NULL, local, n_local, msg, msg_len);
		else if (replace_list_ask(rl) == 0)
			ret = -EINPROGRESS;
		else
			ret = replace_list_refuse(rl, msg, msg_len);
		if (ret == -EINPROGRESS) {
			free(local);
			if (rl->later)
				snprintf(msg, msg_len, "answered later");
			/* the reply is rl's (the caller's is dropped), or done's */
			return -EINPROGRESS;
		}
		if (rl->later)
			admin_later_cancel(rl->later);
		goto out;
	}
	if (ret == 0) {
		ret = replace_list_run(rl, NULL, local, n_local, msg, msg_len);
		goto out;
	}
	/* no request to answer later, no hook: blocking, bounded */
	for (; rl->next < rl->n_nodes; rl->next++) {
		Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
		Tessera__Admin__SnapshotList sl = TESSERA__ADMIN__SNAPSHOT_LIST__INIT;
		Tessera__Admin__Response *r = NULL;
		int st;

		replace_list_req(rl, &req, &sl);
		st = cluster_call_node(c, rl->nodes[rl->next].address, &req,
				       replace_old_timeout_ms(c), &r);
		if (replace_list_take(rl, st, r)) {
			ret = replace_list_run(rl, r, NULL, 0, msg, msg_len);
			tessera__admin__response__free_unpacked(r, NULL);
			goto out;
		}
	}
	ret = replace_list_refuse(rl, msg, msg_len);
out:
	free(local);
	replace_job_clear(rl);
	free(rl);
	return ret;
}

int cluster_replace_replica(struct tsr_cluster *c, const char *name, const char *old,
			    const char *to, char *msg, size_t msg_len)
{
	return replace_start(c, admin_handling_server(), NULL, 0, name, old, to, msg, msg_len);
}

int cluster_replace_auto(struct tsr_cluster *c, const char *name, const char *old, unsigned slot,
			 cluster_replace_fn done, char *msg, size_t msg_len)
{
	return replace_start(c, NULL, done, slot, name, old, NULL, msg, msg_len);
}
