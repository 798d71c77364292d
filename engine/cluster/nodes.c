/*
 * tessera node list / cluster status: answered from the metadata store
 * (node records, alive keys, volume records, attachments).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_internal.h"
#include "cluster/internal.h"

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
