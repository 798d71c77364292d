/*
 * tessera node list / cluster status: answered from the metadata store
 * (node records, alive keys, volume records, attachments); node list adds
 * each node's data file system (size, free), asked from the node itself (its
 * Status: statvfs of its data dir), since it changes with every write.
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
};

static void *fs_ask_main(void *arg)
{
	struct fs_ask *a = arg;
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__StatusGet sg = TESSERA__ADMIN__STATUS_GET__INIT;
	Tessera__Admin__Response *resp = NULL;
	struct tsr_admin_client *cl = NULL;
	int64_t left = a->deadline - tsr_mono_ms();
	char why[256];
	int ret;

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_STATUS;
	req.status = &sg;
	ret = left > 0 ? admin_connect_tcp_timeout(a->address, a->c->token, (int)left, &cl)
		       : -ETIMEDOUT;
	left = a->deadline - tsr_mono_ms();
	if (ret == 0)
		ret = left > 0 ? tsr_admin_call(cl, &req, (int)left, &resp) : -ETIMEDOUT;
	tsr_admin_close(cl);
	if (ret == 0 && resp->error)
		ret = resp->error;
	if (ret == 0 && (resp->status == NULL || resp->status->data_fs == NULL))
		ret = -EPROTO; /* a node older than the field */
	if (ret) {
		snprintf(why, sizeof(why), "no answer from %s: %s", a->address,
			 ret == -EPROTO ? "its tesserad does not report it" : strerror(-ret));
		a->fs = admin_data_fs_unknown(why);
	} else {
		a->fs = admin_data_fs_unknown(resp->status->data_fs->error);
		if (a->fs) {
			a->fs->size = resp->status->data_fs->size;
			a->fs->free = resp->status->data_fs->free;
			a->fs->avail = resp->status->data_fs->avail;
		}
	}
	if (resp)
		tessera__admin__response__free_unpacked(resp, NULL);
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
		asks[i] = (struct fs_ask){ .c = c, .address = r->address, .deadline = deadline };
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
	if (nodes_data_fs(c, &v, resp->nodes))
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
