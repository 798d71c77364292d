/*
 * Metadata records (proto/cluster.proto): one decoding function per record
 * type, which checks what the code after it relies on (valid names, bounded
 * strings, copy counts, the erasure-coding geometry), and the cluster view: node/, alive/, vol/ and
 * attach/ read in one go for a command.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/internal.h"
#include "tessera/ec.h"

#define MAX_TEXT 255
#define REC_MISSED_MAX 1024 /* a copy's missed snapshot operations (mirror_snap.c) */
/* The store's largest volume (STORE_MAX_VOL_SIZE, 1 PiB): no copy of a larger
 * one can exist, and the bound keeps rec_copy_size and its sums from wrapping. */
#define MAX_VOLUME_SIZE (1ull << 50)

static bool text_ok(const char *s, bool allow_empty)
{
	size_t n;

	if (s == NULL)
		return false;
	for (n = 0; s[n]; n++)
		if (n >= MAX_TEXT || (unsigned char)s[n] < 0x20 || s[n] == 0x7f)
			return false;
	return n > 0 || allow_empty;
}

Tessera__Cluster__NodeRecord *rec_node_decode(const struct tsr_meta_kv *kv)
{
	Tessera__Cluster__NodeRecord *r;

	r = tessera__cluster__node_record__unpack(NULL, kv->value_len, kv->value);
	if (r == NULL)
		goto bad;
	if (!tsr_valid_name(r->id) || !text_ok(r->address, false) || !text_ok(r->zone, true) ||
	    !text_ok(r->site, true) || r->n_nbd_listeners > 64)
		goto bad;
	for (size_t i = 0; i < r->n_nbd_listeners; i++)
		if (!text_ok(r->nbd_listeners[i], false))
			goto bad;
	return r;
bad:
	tsr_warn("cluster: malformed record %s: ignored", kv->key);
	if (r)
		tessera__cluster__node_record__free_unpacked(r, NULL);
	return NULL;
}

/*
 * The erasure-coding fields: all zero (a mirror), or k 1..16, m 1..4, a
 * valid stripe unit, k+m copies and at least k of them needed in sync (a
 * stripe cannot be written or read with fewer).
 */
static bool rec_ec_ok(const Tessera__Cluster__VolumeRecord *r)
{
	if (r->ec_k == 0 && r->ec_m == 0 && r->stripe_unit == 0)
		return true;
	return r->ec_k >= 1 && r->ec_k <= TSR_EC_MAX_K && r->ec_m >= 1 &&
	       r->ec_m <= TSR_EC_MAX_M && tsr_ec_unit_valid(r->stripe_unit) &&
	       r->n_copies == (size_t)r->ec_k + r->ec_m && r->min_replicas >= r->ec_k;
}

/* Copies on distinct nodes (placement never puts two on one): two copies of
 * one node would be one store volume and one bitmap file. */
static bool copies_distinct(const Tessera__Cluster__VolumeRecord *r)
{
	for (size_t i = 0; i < r->n_copies; i++)
		for (size_t k = 0; k < i; k++)
			if (strcmp(r->copies[i]->node_id, r->copies[k]->node_id) == 0)
				return false;
	return true;
}

/*
 * A copy's missed snapshot operations: at most REC_MISSED_MAX entries, each
 * "c NAME" or "d NAME" with a valid snapshot name (the mirror replays them
 * on the copy by name, and parses them again: mirror_missed_parse).
 */
static bool missed_ok(const Tessera__Cluster__CopyRecord *cr)
{
	if (cr->n_missed_snaps > REC_MISSED_MAX)
		return false;
	for (size_t i = 0; i < cr->n_missed_snaps; i++) {
		const char *e = cr->missed_snaps[i];

		if (e == NULL || (e[0] != 'c' && e[0] != 'd') || e[1] != ' ' ||
		    strlen(e + 2) > TSR_SNAP_NAME_MAX || !tsr_valid_name(e + 2))
			return false;
	}
	return true;
}

uint64_t rec_copy_size(const Tessera__Cluster__VolumeRecord *r)
{
	return r->ec_k ? tsr_ec_chunk_volume_size(r->size, r->ec_k, r->stripe_unit) : r->size;
}

Tessera__Cluster__VolumeRecord *rec_volume_decode(const struct tsr_meta_kv *kv)
{
	Tessera__Cluster__VolumeRecord *r;
	enum tsr_failure_domain fd;

	r = tessera__cluster__volume_record__unpack(NULL, kv->value_len, kv->value);
	if (r == NULL)
		goto bad;
	if (!tsr_valid_name(r->name) || !tsr_valid_uuid(r->uuid) || r->size == 0 ||
	    r->size % TSR_BLOCK_SIZE || r->size > MAX_VOLUME_SIZE || r->n_copies == 0 ||
	    r->n_copies > (r->ec_k ? TSR_LAYOUT_MAX_COPIES : TSR_MIRROR_MAX_COPIES) ||
	    r->min_replicas == 0 || r->min_replicas > r->n_copies ||
	    tsr_failure_domain_parse(r->failure_domain, &fd) || !rec_ec_ok(r))
		goto bad;
	if ((r->parent_volume[0] && !tsr_valid_name(r->parent_volume)) ||
	    (r->parent_snapshot[0] && !tsr_valid_name(r->parent_snapshot)) ||
	    (r->coordinator[0] && !tsr_valid_name(r->coordinator)))
		goto bad;
	for (size_t i = 0; i < r->n_copies; i++)
		if (!tsr_valid_name(r->copies[i]->node_id) ||
		    (unsigned)r->copies[i]->state > TESSERA__CLUSTER__COPY_STATE__RESYNCING ||
		    !missed_ok(r->copies[i]))
			goto bad;
	if (!copies_distinct(r))
		goto bad;
	return r;
bad:
	tsr_warn("cluster: malformed record %s: ignored", kv->key);
	if (r)
		tessera__cluster__volume_record__free_unpacked(r, NULL);
	return NULL;
}

Tessera__Cluster__AttachRecord *rec_attach_decode(const struct tsr_meta_kv *kv)
{
	Tessera__Cluster__AttachRecord *r;

	r = tessera__cluster__attach_record__unpack(NULL, kv->value_len, kv->value);
	if (r && tsr_valid_name(r->node_id))
		return r;
	tsr_warn("cluster: malformed record %s: ignored", kv->key);
	if (r)
		tessera__cluster__attach_record__free_unpacked(r, NULL);
	return NULL;
}

int rec_node_get(struct tsr_meta *m, const char *id, Tessera__Cluster__NodeRecord **out)
{
	struct tsr_meta_kv kv = { 0 };
	char key[80];
	int ret;

	snprintf(key, sizeof(key), "node/%s", id);
	ret = tsr_meta_get(m, key, &kv);
	if (ret)
		return ret;
	*out = rec_node_decode(&kv);
	tsr_meta_kv_clear(&kv);
	return *out ? 0 : -EUCLEAN;
}

int rec_volume_get(struct tsr_meta *m, const char *name, Tessera__Cluster__VolumeRecord **out,
		   uint64_t *rev)
{
	struct tsr_meta_kv kv = { 0 };
	char key[80];
	int ret;

	snprintf(key, sizeof(key), "vol/%s", name);
	ret = tsr_meta_get(m, key, &kv);
	if (ret)
		return ret;
	*out = rec_volume_decode(&kv);
	if (rev)
		*rev = kv.mod_rev;
	tsr_meta_kv_clear(&kv);
	return *out ? 0 : -EUCLEAN;
}

int rec_put(struct tsr_meta *m, const char *key, const ProtobufCMessage *msg,
	    uint64_t expect_rev, uint64_t lease, uint64_t *new_rev)
{
	size_t len = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf;
	int ret;

	if (len > TSR_META_MAX_VALUE)
		return -EMSGSIZE;
	buf = malloc(len ? len : 1);
	if (buf == NULL)
		return -ENOMEM;
	protobuf_c_message_pack(msg, buf);
	ret = tsr_meta_cas(m, key, expect_rev, buf, len, lease, new_rev);
	free(buf);
	return ret;
}

int rec_update(struct tsr_meta *m, const char *key, rec_decode_fn decode, rec_mutator fn,
	       void *arg)
{
	struct tsr_meta_kv kv = { 0 };
	ProtobufCMessage *msg;
	uint64_t rev;
	int ret = -ECANCELED;

	for (int tries = 0; tries < REC_UPDATE_TRIES && ret == -ECANCELED; tries++) {
		ret = tsr_meta_get(m, key, &kv);
		if (ret)
			break;
		rev = kv.mod_rev;
		msg = decode(&kv);
		tsr_meta_kv_clear(&kv);
		if (msg == NULL) {
			ret = -EUCLEAN;
			break;
		}
		ret = fn(msg, arg);
		if (ret == 0)
			ret = rec_put(m, key, msg, rev, 0, NULL);
		else if (ret == 1)
			ret = 0; /* nothing to write */
		protobuf_c_message_free_unpacked(msg, NULL);
	}
	return ret;
}

static ProtobufCMessage *volume_decode_msg(const struct tsr_meta_kv *kv)
{
	Tessera__Cluster__VolumeRecord *r = rec_volume_decode(kv);

	return r ? &r->base : NULL;
}

/* rec_volume_update's mutator and its argument, through rec_update. */
struct volume_update {
	rec_volume_mutator fn;
	void *arg;
};

static int volume_mutate(ProtobufCMessage *msg, void *arg)
{
	struct volume_update *u = arg;

	return u->fn((Tessera__Cluster__VolumeRecord *)msg, u->arg);
}

int rec_volume_update(struct tsr_meta *m, const char *name, rec_volume_mutator fn, void *arg)
{
	struct volume_update u = { .fn = fn, .arg = arg };
	char key[80];

	snprintf(key, sizeof(key), "vol/%s", name);
	return rec_update(m, key, volume_decode_msg, volume_mutate, &u);
}

const char *rec_state_name(Tessera__Cluster__CopyState st)
{
	return tsr_copy_state_name(rec_state_to_mirror(st));
}

enum tsr_copy_state rec_state_to_mirror(Tessera__Cluster__CopyState st)
{
	switch (st) {
	case TESSERA__CLUSTER__COPY_STATE__OUT_OF_SYNC:
		return TSR_COPY_OUT_OF_SYNC;
	case TESSERA__CLUSTER__COPY_STATE__RESYNCING:
		return TSR_COPY_RESYNCING;
	default:
		return TSR_COPY_IN_SYNC;
	}
}

Tessera__Cluster__CopyState rec_state_from_mirror(enum tsr_copy_state st)
{
	switch (st) {
	case TSR_COPY_OUT_OF_SYNC:
		return TESSERA__CLUSTER__COPY_STATE__OUT_OF_SYNC;
	case TSR_COPY_RESYNCING:
		return TESSERA__CLUSTER__COPY_STATE__RESYNCING;
	default:
		return TESSERA__CLUSTER__COPY_STATE__IN_SYNC;
	}
}

/* ---- the view ----------------------------------------------------------- */

int view_load(struct tsr_meta *m, struct cluster_view *v)
{
	int ret;

	memset(v, 0, sizeof(*v));
	ret = tsr_meta_range(m, "node/", &v->node_kvs, &v->n_node_kvs, &v->rev);
	if (ret == 0)
		ret = tsr_meta_range(m, "alive/", &v->alive_kvs, &v->n_alive_kvs, NULL);
	if (ret == 0)
		ret = tsr_meta_range(m, "vol/", &v->vol_kvs, &v->n_vol_kvs, NULL);
	if (ret == 0)
		ret = tsr_meta_range(m, "attach/", &v->attach_kvs, &v->n_attach_kvs, NULL);
	if (ret)
		goto err;
	v->nodes = calloc(v->n_node_kvs + 1, sizeof(*v->nodes));
	v->vols = calloc(v->n_vol_kvs + 1, sizeof(*v->vols));
	if (v->nodes == NULL || v->vols == NULL) {
		ret = -ENOMEM;
		goto err;
	}
	for (size_t i = 0; i < v->n_node_kvs; i++)
		if ((v->nodes[v->n_nodes] = rec_node_decode(&v->node_kvs[i])) != NULL)
			v->n_nodes++;
	for (size_t i = 0; i < v->n_vol_kvs; i++)
		if ((v->vols[v->n_vols] = rec_volume_decode(&v->vol_kvs[i])) != NULL)
			v->n_vols++;
	return 0;
err:
	view_free(v);
	return ret;
}

void view_free(struct cluster_view *v)
{
	for (size_t i = 0; i < v->n_nodes; i++)
		tessera__cluster__node_record__free_unpacked(v->nodes[i], NULL);
	for (size_t i = 0; i < v->n_vols; i++)
		tessera__cluster__volume_record__free_unpacked(v->vols[i], NULL);
	free(v->nodes);
	free(v->vols);
	tsr_meta_kv_free_array(v->node_kvs, v->n_node_kvs);
	tsr_meta_kv_free_array(v->alive_kvs, v->n_alive_kvs);
	tsr_meta_kv_free_array(v->vol_kvs, v->n_vol_kvs);
	tsr_meta_kv_free_array(v->attach_kvs, v->n_attach_kvs);
	memset(v, 0, sizeof(*v));
}

bool view_alive(const struct cluster_view *v, const char *node_id)
{
	for (size_t i = 0; i < v->n_alive_kvs; i++)
		if (strcmp(v->alive_kvs[i].key + strlen("alive/"), node_id) == 0)
			return true;
	return false;
}

const Tessera__Cluster__NodeRecord *view_node(const struct cluster_view *v, const char *id)
{
	for (size_t i = 0; i < v->n_nodes; i++)
		if (strcmp(v->nodes[i]->id, id) == 0)
			return v->nodes[i];
	return NULL;
}

const char *view_attached(const struct cluster_view *v, const char *vol, uint64_t *epoch)
{
	static __thread char node[64]; /* main thread only; valid until the next call */

	for (size_t i = 0; i < v->n_attach_kvs; i++) {
		Tessera__Cluster__AttachRecord *a;

		if (strcmp(v->attach_kvs[i].key + strlen("attach/"), vol))
			continue;
		a = rec_attach_decode(&v->attach_kvs[i]);
		if (a == NULL)
			return NULL;
		snprintf(node, sizeof(node), "%s", a->node_id);
		tessera__cluster__attach_record__free_unpacked(a, NULL);
		if (epoch)
			*epoch = v->attach_kvs[i].mod_rev;
		return node;
	}
	return NULL;
}

uint64_t view_provisioned(const struct cluster_view *v, const char *node_id, uint32_t *copies)
{
	uint64_t sum = 0;
	uint32_t n = 0;

	for (size_t i = 0; i < v->n_vols; i++)
		for (size_t k = 0; k < v->vols[i]->n_copies; k++)
			if (strcmp(v->vols[i]->copies[k]->node_id, node_id) == 0) {
				sum += rec_copy_size(v->vols[i]);
				n++;
			}
	if (copies)
		*copies = n;
	return sum;
}
