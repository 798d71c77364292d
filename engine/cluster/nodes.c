/*
 * tessera node list / cluster status: answered from the metadata store
 * (node records, alive keys, volume records, attachments); node list adds
 * each node's data file system (size, free) and the bytes its store's
 * volumes have on disk (allocated), asked from the node itself (its Status:
 * statvfs of its data dir, the sum of its volumes' allocated), since they
 * change with every write.  A node that does not answer shows them unknown
 * (data_fs.error set, allocated 0).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_internal.h"
#include "cluster/internal.h"

/* How long node list waits for the other nodes' figures (asked all at once):
 * a node that does not answer in time (frozen, cut off) is shown unknown. */
#define NODE_FS_TIMEOUT_MS 2000

/* One alive node's figures, asked on a thread of its own. */
struct fs_ask {
	struct tsr_cluster *c;
	const char *address;
	int64_t deadline;	    /* tsr_mono_ms */
	Tessera__Admin__DataFs *fs; /* the answer, or unknown with why; NULL: ENOMEM */
	Tessera__Admin__Node *node; /* its allocated and leftovers_removed: the answer's */
};

/* The DataFs of a node at address from its Status reply (ret 0) or the
 * failure ret, and node's allocated and leftovers_removed (0 when unknown);
 * resp (may be NULL) is freed.  NULL on ENOMEM. */
static Tessera__Admin__DataFs *fs_from_status(const char *address, int ret,
					      Tessera__Admin__Response *resp,
					      Tessera__Admin__Node *node)
{
	Tessera__Admin__DataFs *fs;
	char why[256];

	if (ret == 0 && resp->error)
		ret = resp->error;
	if (ret == 0 && (resp->status == NULL || resp->status->data_fs == NULL))
		ret = -EPROTO; /* a node older than the field */
	if (ret) {
		snprintf(why, sizeof(why), "no answer from %s: %s", address,
			 ret == -EPROTO ? "its tesserad does not report it" : strerror(-ret));
		fs = admin_data_fs_unknown(why);
		node->allocated = 0;
		node->leftovers_removed = 0;
	} else {
		fs = admin_data_fs_unknown(resp->status->data_fs->error);
		node->allocated = resp->status->allocated;
		node->leftovers_removed = resp->status->leftovers_removed;
		if (fs) {
			fs->size = resp->status->data_fs->size;
			fs->free = resp->status->data_fs->free;
			fs->avail = resp->status->data_fs->avail;
		}
	}
	if (resp)
		tessera__admin__response__free_unpacked(resp, NULL);
	return fs;
}

static void *fs_ask_main(void *arg)
{
	struct fs_ask *a = arg;
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__StatusGet sg = TESSERA__ADMIN__STATUS_GET__INIT;
	Tessera__Admin__Response *resp = NULL;
	struct tsr_admin_client *cl = NULL;
	int64_t left = a->deadline - tsr_mono_ms();
	int ret;

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_STATUS;
	req.status = &sg;
	ret = left > 0 ? admin_connect_tcp_timeout(a->address, a->c->token, (int)left, &cl)
		       : -ETIMEDOUT;
	left = a->deadline - tsr_mono_ms();
	if (ret == 0)
		ret = left > 0 ? tsr_admin_call(cl, &req, (int)left, &resp) : -ETIMEDOUT;
	tsr_admin_close(cl);
	a->fs = fs_from_status(a->address, ret, resp, a->node);
	return NULL;
}

/* nodes[i]->data_fs for every node of v: ours from statvfs, each alive
 * node's from its Status (all asked at once, NODE_FS_TIMEOUT_MS in all),
 * else unknown with the reason.  0 or -ENOMEM. */
static int nodes_data_fs(struct tsr_cluster *c, const struct cluster_view *v,
			 Tessera__Admin__Node **nodes)
{
	struct fs_ask *asks = calloc(v->n_nodes + 1, sizeof(*asks));
	pthread_t *threads = calloc(v->n_nodes + 1, sizeof(*threads));
	bool *started = calloc(v->n_nodes + 1, sizeof(*started));
	int64_t deadline = tsr_mono_ms() + NODE_FS_TIMEOUT_MS;
	int ret = 0;

	if (asks == NULL || threads == NULL || started == NULL) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < v->n_nodes; i++) {
		const Tessera__Cluster__NodeRecord *r = v->nodes[i];

		if (strcmp(r->id, c->node_id) == 0) {
			asks[i].fs = admin_data_fs(c->dir);
			continue;
		}
		if (!nodes[i]->alive) {
			asks[i].fs = admin_data_fs_unknown("not alive");
			continue;
		}
		asks[i] = (struct fs_ask){ .c = c, .address = r->address, .deadline = deadline,
					   .node = nodes[i] };
		started[i] = pthread_create(&threads[i], NULL, fs_ask_main, &asks[i]) == 0;
		if (!started[i])
			fs_ask_main(&asks[i]);
	}
	for (size_t i = 0; i < v->n_nodes; i++) {
		if (started[i])
			pthread_join(threads[i], NULL);
		nodes[i]->data_fs = asks[i].fs;
		if (asks[i].fs == NULL)
			ret = -ENOMEM;
	}
out:
	free(asks);
	free(threads);
	free(started);
	return ret;
}

static Tessera__Admin__Node *build_node(const struct cluster_view *v,
					const Tessera__Cluster__NodeRecord *r)
{
	Tessera__Admin__Node *n = calloc(1, sizeof(*n));

	if (n == NULL)
		return NULL;
	tessera__admin__node__init(n);
	n->id = admin_strdup(r->id);
	n->address = admin_strdup(r->address);
	n->zone = admin_strdup(r->zone);
	n->site = admin_strdup(r->site);
	n->alive = view_alive(v, r->id);
	n->meta = r->meta;
	n->capacity = r->capacity;
	n->provisioned = view_provisioned(v, r->id, &n->copies);
	for (size_t i = 0; i < v->n_attach_kvs; i++) {
		Tessera__Cluster__AttachRecord *a = rec_attach_decode(&v->attach_kvs[i]);

		if (a && strcmp(a->node_id, r->id) == 0)
			n->attached++;
		if (a)
			tessera__cluster__attach_record__free_unpacked(a, NULL);
	}
	n->nbd_listeners = calloc(r->n_nbd_listeners + 1, sizeof(char *));
	if (!n->id || !n->address || !n->zone || !n->site || !n->nbd_listeners)
		goto err;
	for (size_t i = 0; i < r->n_nbd_listeners; i++) {
		n->nbd_listeners[i] = admin_strdup(r->nbd_listeners[i]);
		if (n->nbd_listeners[i] == NULL)
			goto err;
		n->n_nbd_listeners++;
	}
	return n;
err:
	admin_node_free_built(n);
	return NULL;
}

/*
 * node list inside a request of tesserad's admin server: the reply comes
 * later (admin_later), once every alive node's Status is in, each asked
 * with the loop's async client (admin_async_call), so the main loop goes on
 * serving meanwhile (two nodes listing at once answer each other's Status).
 */
struct nodes_later {
	struct admin_later *later;
	Tessera__Admin__Node **nodes; /* the reply's, moved into it by nodes_later_reply */
	size_t n_nodes;
	size_t pending;		      /* Status calls not answered yet (loop only) */
	struct nodes_later_ask {
		struct nodes_later *nl;
		size_t i;
		char address[128];
	} *asks;
	bool nomem;
};

static void nodes_later_reply(struct tsr_admin_server *srv, void *arg,
			      Tessera__Admin__Response *resp)
{
	struct nodes_later *nl = arg;

	(void)srv;
	if (nl->nomem) {
		for (size_t i = 0; i < nl->n_nodes; i++)
			admin_node_free_built(nl->nodes[i]);
		free(nl->nodes);
		admin_fail(resp, -ENOMEM, "out of memory in tesserad");
	} else {
		resp->nodes = nl->nodes;
		resp->n_nodes = nl->n_nodes;
	}
	free(nl->asks);
	free(nl);
}

static void nodes_later_answer(void *cb_arg, int status, Tessera__Admin__Response *r)
{
	struct nodes_later_ask *a = cb_arg;
	struct nodes_later *nl = a->nl;

	nl->nodes[a->i]->data_fs =
		fs_from_status(a->address, status, r, nl->nodes[a->i]);
	if (nl->nodes[a->i]->data_fs == NULL)
		nl->nomem = true;
	if (--nl->pending == 0)
		admin_later_done(nl->later);
}

/* Ask the alive nodes of v (nodes[i] built for v->nodes[i]) asynchronously
 * and move the nodes into the later reply: true.  false: not inside an
 * admin request or out of memory: nothing taken, the caller goes on. */
static bool nodes_data_fs_later(struct tsr_cluster *c, const struct cluster_view *v,
				Tessera__Admin__Response *resp)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__StatusGet sg = TESSERA__ADMIN__STATUS_GET__INIT;
	struct tsr_admin_server *srv = admin_handling_server();
	Tessera__Admin__Node **nodes = resp->nodes;
	struct nodes_later *nl;
	size_t remote = 0;

	if (srv == NULL || c->o.loop == NULL)
		return false;
	for (size_t i = 0; i < v->n_nodes; i++)
		if (nodes[i]->alive && strcmp(v->nodes[i]->id, c->node_id) != 0)
			remote++;
	if (remote == 0)
		return false; /* nothing to wait for */
	nl = calloc(1, sizeof(*nl));
	if (nl == NULL || (nl->asks = calloc(v->n_nodes, sizeof(*nl->asks))) == NULL) {
		free(nl);
		return false;
	}
	nl->later = admin_later_begin(srv, nodes_later_reply, nl);
	if (nl->later == NULL) {
		free(nl->asks);
		free(nl);
		return false;
	}
	/* the nodes are the later reply's from here on */
	nl->nodes = nodes;
	nl->n_nodes = resp->n_nodes;
	resp->nodes = NULL;
	resp->n_nodes = 0;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_STATUS;
	req.status = &sg;
	nl->pending = 1; /* this function's own hold, dropped at the end */
	for (size_t i = 0; i < v->n_nodes; i++) {
		const Tessera__Cluster__NodeRecord *r = v->nodes[i];
		struct nodes_later_ask *a = &nl->asks[i];
		int ret;

		if (strcmp(r->id, c->node_id) == 0)
			nodes[i]->data_fs = admin_data_fs(c->dir);
		else if (!nodes[i]->alive)
			nodes[i]->data_fs = admin_data_fs_unknown("not alive");
		if (nodes[i]->data_fs || !nodes[i]->alive || strcmp(r->id, c->node_id) == 0) {
			if (nodes[i]->data_fs == NULL)
				nl->nomem = true;
			continue;
		}
		a->nl = nl;
		a->i = i;
		snprintf(a->address, sizeof(a->address), "%s", r->address);
		nl->pending++;
		ret = admin_async_call(c->o.loop, r->address, c->token, &req, NODE_FS_TIMEOUT_MS,
				       nodes_later_answer, a, NULL);
		if (ret) {
			nl->pending--;
			nodes[i]->data_fs = fs_from_status(r->address, ret, NULL, nodes[i]);
			if (nodes[i]->data_fs == NULL)
				nl->nomem = true;
		}
	}
	if (nl->pending > 1) {
		nl->pending--; /* the last answer sends the reply */
		return true;
	}
	/* every call failed at once: reply now after all */
	admin_later_cancel(nl->later);
	nodes_later_reply(srv, nl, resp);
	return true;
}

void cluster_node_list(struct tsr_cluster *c, Tessera__Admin__Response *resp)
{
	struct cluster_view v;
	int ret;

	ret = view_load(c->meta, &v);
	if (ret) {
		admin_fail(resp, ret, "cannot read the metadata store: %s (is the meta node "
			   "reachable?)", strerror(-ret));
		return;
	}
	resp->nodes = calloc(v.n_nodes + 1, sizeof(*resp->nodes));
	if (resp->nodes == NULL)
		goto nomem;
	for (size_t i = 0; i < v.n_nodes; i++) {
		resp->nodes[i] = build_node(&v, v.nodes[i]);
		if (resp->nodes[i] == NULL)
			goto nomem;
		resp->n_nodes++;
	}
	/* ours from our store and sweep (the others' come with their Status) */
	for (size_t i = 0; i < v.n_nodes; i++) {
		if (strcmp(v.nodes[i]->id, c->node_id) != 0)
			continue;
		if (c->o.store != NULL &&
		    admin_store_allocated(c->o.store, &resp->nodes[i]->allocated) != 0)
			resp->nodes[i]->allocated = 0;
		resp->nodes[i]->leftovers_removed = tsr_cluster_leftovers_removed(c);
	}
	/* on the admin loop: asked asynchronously, the reply comes later;
	 * elsewhere: on threads, waited for here */
	if (!nodes_data_fs_later(c, &v, resp) && nodes_data_fs(c, &v, resp->nodes))
		goto nomem;
	view_free(&v);
	return;
nomem:
	view_free(&v);
	admin_fail(resp, -ENOMEM, "out of memory in tesserad");
}

void cluster_status(struct tsr_cluster *c, Tessera__Admin__Response *resp)
{
	Tessera__Admin__ClusterStatus *s;
	struct cluster_view v;
	const char *meta_node = "";
	int ret;

	ret = view_load(c->meta, &v);
	if (ret) {
		admin_fail(resp, ret, "cannot read the metadata store: %s (is the meta node "
			   "reachable?)", strerror(-ret));
		return;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		goto nomem;
	tessera__admin__cluster_status__init(s);
	resp->cluster_status = s;
	for (size_t i = 0; i < v.n_nodes; i++) {
		s->nodes++;
		if (view_alive(&v, v.nodes[i]->id)) {
			s->nodes_alive++;
			s->capacity += v.nodes[i]->capacity;
		}
		if (v.nodes[i]->meta)
			meta_node = v.nodes[i]->id;
	}
	for (size_t i = 0; i < v.n_vols; i++) {
		bool degraded = false;

		s->volumes++;
		s->provisioned += v.vols[i]->size * v.vols[i]->n_copies;
		for (size_t k = 0; k < v.vols[i]->n_copies; k++)
			if (v.vols[i]->copies[k]->state != TESSERA__CLUSTER__COPY_STATE__IN_SYNC)
				degraded = true;
		s->volumes_degraded += degraded;
	}
	/* the store behind the service, not how we reach it */
	s->meta_backend = admin_strdup(c->o.meta ? tsr_meta_backend(c->meta) : "sqlite");
	s->meta_node = admin_strdup(meta_node);
	s->meta_revision = v.rev;
	if (s->meta_backend == NULL || s->meta_node == NULL)
		goto nomem;
	view_free(&v);
	return;
nomem:
	view_free(&v);
	admin_fail(resp, -ENOMEM, "out of memory in tesserad");
}
