/*
 * CSI Controller service: volumes and snapshots through tesserad's admin
 * API.  Volume id = Tessera volume name (csi_volume_name of the CO's name);
 * snapshot id = "VOLUME@SNAPSHOT".  CreateVolume and CreateSnapshot hold a
 * per-name key lock, so concurrent calls with one name create one object,
 * and compare an existing object with the request (same -> it is returned,
 * different -> ALREADY_EXISTS).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tessera/common.h"
#include "tessera/ec.h"

typedef Tessera__Admin__Response AResp;

/* ---- admin helpers ----------------------------------------------------- */

/* VolumeShow: GRPC_OK with *out, or NOT_FOUND (message set) or another code. */
static int volume_show(struct csi_call *c, const char *name, AResp **out)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeShow vs = TESSERA__ADMIN__VOLUME_SHOW__INIT;
	int code;

	if (!tsr_valid_name(name))
		return csi_fail(c, GRPC_NOT_FOUND, "volume %s does not exist", name);
	vs.name = (char *)name;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SHOW;
	req.volume_show = &vs;
	code = csi_admin_ok(c, &req, "volume show", out);
	if (code == GRPC_OK && (*out)->n_volumes != 1) {
		tessera__admin__response__free_unpacked(*out, NULL);
		return csi_fail(c, GRPC_INTERNAL, "volume show %s: tesserad answered no volume",
				name);
	}
	if (code == GRPC_NOT_FOUND)
		csi_fail(c, GRPC_NOT_FOUND, "volume %s does not exist", name);
	return code;
}

static int volume_list(struct csi_call *c, AResp **out)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeList vl = TESSERA__ADMIN__VOLUME_LIST__INIT;

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_LIST;
	req.volume_list = &vl;
	return csi_admin_ok(c, &req, "volume list", out);
}

static int snapshot_list(struct csi_call *c, const char *volume, AResp **out)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotList sl = TESSERA__ADMIN__SNAPSHOT_LIST__INIT;

	sl.volume = (char *)volume;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST;
	req.snapshot_list = &sl;
	return csi_admin_ok(c, &req, "snapshot list", out);
}

static int snapshot_show(struct csi_call *c, const char *volume, const char *name, AResp **out)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotShow ss = TESSERA__ADMIN__SNAPSHOT_SHOW__INIT;
	int code;

	ss.volume = (char *)volume;
	ss.name = (char *)name;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_SHOW;
	req.snapshot_show = &ss;
	code = csi_admin_ok(c, &req, "snapshot show", out);
	if (code == GRPC_OK && (*out)->n_snapshots != 1) {
		tessera__admin__response__free_unpacked(*out, NULL);
		return csi_fail(c, GRPC_NOT_FOUND, "snapshot %s@%s does not exist", volume, name);
	}
	if (code == GRPC_NOT_FOUND)
		csi_fail(c, GRPC_NOT_FOUND, "snapshot %s@%s does not exist", volume, name);
	return code;
}

/* ---- topology ---------------------------------------------------------- */

struct topo {
	char zone[64];
	char site[64];
};

/* Distinct (zone, site) of the cluster's nodes; one entry (ours) when tesserad is standalone. */
static size_t cluster_topologies(struct csi_call *c, struct topo **out)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__NodeList nl = TESSERA__ADMIN__NODE_LIST__INIT;
	AResp *r = NULL;
	struct topo *t;
	size_t n = 0, i, j;
	char saved[sizeof(c->message)];
	int saved_code = c->code;

	memcpy(saved, c->message, sizeof(saved));
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_NODE_LIST;
	req.node_list = &nl;
	if (csi_admin_ok(c, &req, "node list", &r) != GRPC_OK || r->n_nodes == 0) {
		if (r)
			tessera__admin__response__free_unpacked(r, NULL);
		c->code = saved_code;
		memcpy(c->message, saved, sizeof(saved));
		t = csi_alloc(c, sizeof(*t));
		snprintf(t->zone, sizeof(t->zone), "%s", c->plugin->zone ? c->plugin->zone : "");
		snprintf(t->site, sizeof(t->site), "%s", c->plugin->site ? c->plugin->site : "");
		*out = t;
		return 1;
	}
	t = csi_alloc(c, r->n_nodes * sizeof(*t));
	for (i = 0; i < r->n_nodes; i++) {
		const char *z = r->nodes[i]->zone[0] ? r->nodes[i]->zone : "default";
		const char *s = r->nodes[i]->site[0] ? r->nodes[i]->site : "default";

		for (j = 0; j < n; j++)
			if (strcmp(t[j].zone, z) == 0 && strcmp(t[j].site, s) == 0)
				break;
		if (j < n)
			continue;
		snprintf(t[n].zone, sizeof(t[n].zone), "%s", z);
		snprintf(t[n].site, sizeof(t[n].site), "%s", s);
		n++;
	}
	tessera__admin__response__free_unpacked(r, NULL);
	*out = t;
	return n;
}

/* Does topology req (a CO's segments) admit t?  Unknown keys never match. */
static bool topo_match(const Csi__V1__Topology *req, const struct topo *t)
{
	size_t i;

	for (i = 0; i < req->n_segments; i++) {
		const char *k = req->segments[i]->key, *v = req->segments[i]->value;
		const char *z = t->zone[0] ? t->zone : "default",
			   *s = t->site[0] ? t->site : "default";

		if (strcmp(k, CSI_TOPO_ZONE) == 0) {
			if (strcmp(v, z))
				return false;
		} else if (strcmp(k, CSI_TOPO_SITE) == 0) {
			if (strcmp(v, s))
				return false;
		} else {
			return false;
		}
	}
	return true;
}

/* ---- building replies -------------------------------------------------- */

static void fill_volume(struct csi_call *c, const Tessera__Admin__Volume *v, Csi__V1__Volume *out,
			const struct topo *topo, size_t ntopo)
{
	size_t i;

	csi__v1__volume__init(out);
	out->capacity_bytes = (int64_t)v->size;
	out->volume_id = csi_strdup(c, v->name);
	if (ntopo) {
		out->accessible_topology = csi_alloc(c, ntopo * sizeof(*out->accessible_topology));
		for (i = 0; i < ntopo; i++)
			out->accessible_topology[i] =
			    csi_topology_new(c, topo[i].zone, topo[i].site);
		out->n_accessible_topology = ntopo;
	}
}

/* Volume condition from the copies' states in a Volume record. */
static Csi__V1__VolumeCondition *condition_of(struct csi_call *c, const Tessera__Admin__Volume *v,
					      const Tessera__Admin__VolumeStatus *st)
{
	Csi__V1__VolumeCondition *cond = csi_alloc(c, sizeof(*cond));
	char msg[512] = "";
	size_t i, o = 0;

	csi__v1__volume_condition__init(cond);
	for (i = 0; i < v->n_copies; i++) {
		const Tessera__Admin__Copy *cp = v->copies[i];

		if (strcmp(cp->state, "in-sync") == 0)
			continue;
		cond->abnormal = 1;
		o += (size_t)snprintf(msg + o, o < sizeof(msg) ? sizeof(msg) - o : 0,
				      "%scopy on %s is %s (%llu bytes to copy)", o ? "; " : "",
				      cp->node, cp->state, (unsigned long long)cp->dirty_bytes);
		if (o >= sizeof(msg))
			break;
	}
	if (st && st->stripes_degraded && o < sizeof(msg)) {
		cond->abnormal = 1;
		o += (size_t)snprintf(msg + o, sizeof(msg) - o, "%s%llu stripes degraded",
				      o ? "; " : "", (unsigned long long)st->stripes_degraded);
	}
	if (st && st->resync_running && o < sizeof(msg)) {
		cond->abnormal = 1;
		snprintf(msg + o, sizeof(msg) - o, "%sresync running: %llu of %llu bytes done",
			 o ? "; " : "", (unsigned long long)st->resync_done_bytes,
			 (unsigned long long)st->resync_total_bytes);
	}
	cond->message = csi_strdup(c, cond->abnormal ? msg : "all copies in sync");
	return cond;
}

/* ---- capabilities ------------------------------------------------------ */

const char *csi_capability_check(const Csi__V1__VolumeCapability *cap)
{
	if (cap == NULL)
		return "volume capability missing";
	if (cap->access_type_case == CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE__NOT_SET)
		return "volume capability without access type (block or mount)";
	if (cap->access_mode == NULL)
		return "volume capability without access mode";
	switch (cap->access_mode->mode) {
	case CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__MODE__SINGLE_NODE_WRITER:
	case CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__MODE__SINGLE_NODE_READER_ONLY:
	case CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__MODE__SINGLE_NODE_SINGLE_WRITER:
	case CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__MODE__SINGLE_NODE_MULTI_WRITER:
		break;
	case CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__MODE__UNKNOWN:
		return "access mode UNKNOWN";
	default:
		return "multi-node access modes are not supported: a Tessera volume has one "
		       "writer (its coordinator) and is used on one node at a time";
	}
	if (cap->access_type_case == CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_MOUNT) {
		const char *fs = cap->mount ? cap->mount->fs_type : "";

		if (fs && fs[0] && strcmp(fs, "ext4") && strcmp(fs, "xfs"))
			return "fs_type not supported: use ext4 or xfs";
	}
	return NULL;
}

static int check_caps(struct csi_call *c, size_t n, Csi__V1__VolumeCapability **caps)
{
	size_t i;

	if (n == 0)
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_capabilities is required");
	for (i = 0; i < n; i++) {
		const char *why = csi_capability_check(caps[i]);

		if (why)
			return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_capabilities[%zu]: %s", i,
					why);
	}
	return GRPC_OK;
}

/* ---- CreateVolume ------------------------------------------------------ */

/* Does the existing volume v match what the request asks?  NULL, or what differs. */
static const char *volume_differs(const Tessera__Admin__Volume *v, const struct csi_params *p,
				  int64_t required, int64_t limit, const char *from_vol,
				  const char *from_snap, char *buf, size_t len)
{
	unsigned k = 0, m = 0;

	if (required > 0 && v->size < (uint64_t)required)
		snprintf(buf, len, "size %llu bytes is below required_bytes %lld",
			 (unsigned long long)v->size, (long long)required);
	else if (limit > 0 && v->size > (uint64_t)limit)
		snprintf(buf, len, "size %llu bytes is above limit_bytes %lld",
			 (unsigned long long)v->size, (long long)limit);
	else if (p->replicas && v->ec_k == 0 && v->replicas != p->replicas)
		snprintf(buf, len, "it has %u replicas, not %u", v->replicas, p->replicas);
	else if (p->ec[0] && (tsr_ec_parse(p->ec, &k, &m) || v->ec_k != k || v->ec_m != m))
		snprintf(buf, len, "its layout is not ec %s", p->ec);
	else if (!p->ec[0] && v->ec_k)
		snprintf(buf, len, "it is erasure-coded %u+%u", v->ec_k, v->ec_m);
	else if (p->replicas && v->ec_k)
		snprintf(buf, len, "it is erasure-coded %u+%u, not mirrored", v->ec_k, v->ec_m);
	else if (p->failure_domain[0] && v->failure_domain[0] &&
		 strcmp(p->failure_domain, v->failure_domain))
		snprintf(buf, len, "its failure domain is %s, not %s", v->failure_domain,
			 p->failure_domain);
	else if (p->min_replicas && v->min_replicas && p->min_replicas != v->min_replicas)
		snprintf(buf, len, "its minReplicas is %u, not %u", v->min_replicas,
			 p->min_replicas);
	else if (from_vol[0] && strcmp(v->parent_volume, from_vol))
		snprintf(buf, len, "it was not made from volume %s", from_vol);
	else if (from_snap[0] && strcmp(v->parent_snapshot, from_snap))
		snprintf(buf, len, "it was not made from snapshot %s@%s", from_vol, from_snap);
	else if (!from_vol[0] && v->parent_volume[0])
		snprintf(buf, len, "it is a clone of %s", v->parent_volume);
	else
		return NULL;
	return buf;
}

int csi_create_volume(struct csi_call *c, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
	const Csi__V1__CreateVolumeRequest *req = (const void *)m;
	Csi__V1__CreateVolumeResponse *r;
	Tessera__Admin__Request areq = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeCreate vc = TESSERA__ADMIN__VOLUME_CREATE__INIT;
	struct csi_params p;
	char name[CSI_NAME_MAX], from_vol[CSI_NAME_MAX] = "", from_snap[CSI_NAME_MAX] = "";
	char why[256], key[CSI_NAME_MAX + 8];
	int64_t required = 0, limit = 0;
	uint64_t size = 0, src_size = 0;
	struct topo *topo, *chosen;
	size_t ntopo, nchosen = 0, i, j;
	AResp *ar = NULL;
	int code, ret;

	if (req->name == NULL || req->name[0] == '\0')
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "name is required");
	if (csi_volume_name(req->name, name))
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "name contains control characters");
	snprintf(c->volume, sizeof(c->volume), "%s", name);
	code = check_caps(c, req->n_volume_capabilities, req->volume_capabilities);
	if (code)
		return code;
	{
		char **keys = csi_alloc(c, (req->n_parameters + 1) * sizeof(char *));
		char **vals = csi_alloc(c, (req->n_parameters + 1) * sizeof(char *));

		for (i = 0; i < req->n_parameters; i++) {
			keys[i] = req->parameters[i]->key;
			vals[i] = req->parameters[i]->value;
		}
		if (csi_params_parse(req->n_parameters, keys, vals, &p, why, sizeof(why)))
			return csi_fail(c, GRPC_INVALID_ARGUMENT, "%s", why);
	}
	if (req->capacity_range) {
		required = req->capacity_range->required_bytes;
		limit = req->capacity_range->limit_bytes;
	}
	ret = csi_capacity(required, limit, CSI_DEFAULT_SIZE, &size);
	if (ret == -EINVAL)
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "capacity_range: negative bytes");
	if (ret == -EFBIG)
		return csi_fail(c, GRPC_OUT_OF_RANGE,
				"capacity_range: %lld bytes is more than a "
				"Tessera volume can hold (1 PiB)",
				(long long)required);
	if (ret)
		return csi_fail(c, GRPC_OUT_OF_RANGE,
				"capacity_range [%lld, %lld]: no size in it "
				"is a multiple of 4096 bytes",
				(long long)required, (long long)limit);

	/* content source */
	if (req->volume_content_source) {
		const Csi__V1__VolumeContentSource *src = req->volume_content_source;

		if (src->type_case == CSI__V1__VOLUME_CONTENT_SOURCE__TYPE_SNAPSHOT) {
			if (src->snapshot == NULL ||
			    csi_snapshot_id_parse(src->snapshot->snapshot_id, from_vol, from_snap))
				return csi_fail(c, GRPC_NOT_FOUND,
						"source snapshot %s does not exist",
						src->snapshot ? src->snapshot->snapshot_id : "");
			code = snapshot_show(c, from_vol, from_snap, &ar);
			if (code)
				return code;
			src_size = ar->snapshots[0]->size;
		} else if (src->type_case == CSI__V1__VOLUME_CONTENT_SOURCE__TYPE_VOLUME) {
			const char *sv = src->volume ? src->volume->volume_id : "";

			code = volume_show(c, sv, &ar);
			if (code)
				return code == GRPC_NOT_FOUND
					   ? csi_fail(c, code, "source volume %s does not exist",
						      sv)
					   : code;
			snprintf(from_vol, sizeof(from_vol), "%s", sv);
			src_size = ar->volumes[0]->size;
		} else {
			return csi_fail(c, GRPC_INVALID_ARGUMENT,
					"volume_content_source without a "
					"snapshot or volume");
		}
		tessera__admin__response__free_unpacked(ar, NULL);
		ar = NULL;
		if (required == 0 && (limit == 0 || (uint64_t)limit >= src_size))
			size = src_size; /* no size asked: the source's */
		if (size < src_size)
			return csi_fail(c, GRPC_OUT_OF_RANGE,
					"capacity %llu bytes is smaller than "
					"the source (%llu bytes)",
					(unsigned long long)size, (unsigned long long)src_size);
	}

	/* topology */
	ntopo = cluster_topologies(c, &topo);
	chosen = csi_alloc(c, ntopo * sizeof(*chosen));
	if (req->accessibility_requirements && (req->accessibility_requirements->n_requisite ||
						req->accessibility_requirements->n_preferred)) {
		const Csi__V1__TopologyRequirement *tr = req->accessibility_requirements;

		for (j = 0; j < ntopo; j++) {
			bool ok = tr->n_requisite == 0;

			for (i = 0; i < tr->n_requisite && !ok; i++)
				ok = topo_match(tr->requisite[i], &topo[j]);
			if (ok)
				chosen[nchosen++] = topo[j];
		}
		if (nchosen == 0)
			return csi_fail(c, GRPC_RESOURCE_EXHAUSTED,
					"no Tessera node is in the "
					"requisite topologies (keys %s and %s)",
					CSI_TOPO_ZONE, CSI_TOPO_SITE);
	} else {
		memcpy(chosen, topo, ntopo * sizeof(*topo));
		nchosen = ntopo;
	}

	snprintf(key, sizeof(key), "vol:%s", name);
	csi_key_lock(c->plugin, key);
	code = volume_show(c, name, &ar);
	if (code == GRPC_OK) {
		const char *diff = volume_differs(ar->volumes[0], &p, required, limit, from_vol,
						  from_snap, why, sizeof(why));

		if (diff) {
			code = csi_fail(c, GRPC_ALREADY_EXISTS,
					"volume %s (for name \"%s\") exists "
					"with other parameters: %s",
					name, req->name, diff);
			goto out;
		}
	} else if (code == GRPC_NOT_FOUND) {
		c->code = GRPC_OK;
		vc.name = name;
		/* a clone without a size asked: 0 = tesserad's choice, the source's size */
		vc.size = src_size && size == src_size && required == 0 ? 0 : size;
		vc.replicas = p.replicas;
		vc.min_replicas = p.min_replicas;
		vc.failure_domain = p.failure_domain;
		vc.ec = p.ec;
		vc.stripe_unit = p.stripe_unit;
		vc.from_volume = from_vol;
		vc.from_snapshot = from_snap;
		areq.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE;
		areq.volume_create = &vc;
		code = csi_admin_ok(c, &areq, "volume create", &ar);
		if (code)
			goto out;
		if (ar->n_volumes != 1) {
			code = csi_fail(c, GRPC_INTERNAL,
					"volume create %s: no volume in the reply", name);
			goto out;
		}
	} else {
		goto out;
	}
	r = csi_alloc(c, sizeof(*r));
	csi__v1__create_volume_response__init(r);
	r->volume = csi_alloc(c, sizeof(*r->volume));
	fill_volume(c, ar->volumes[0], r->volume, chosen, nchosen);
	if (req->volume_content_source) {
		/* echo the source, as the spec asks */
		Csi__V1__VolumeContentSource *cs = csi_alloc(c, sizeof(*cs));

		csi__v1__volume_content_source__init(cs);
		cs->type_case = req->volume_content_source->type_case;
		if (cs->type_case == CSI__V1__VOLUME_CONTENT_SOURCE__TYPE_SNAPSHOT) {
			cs->snapshot = csi_alloc(c, sizeof(*cs->snapshot));
			csi__v1__volume_content_source__snapshot_source__init(cs->snapshot);
			cs->snapshot->snapshot_id =
			    csi_strdup(c, req->volume_content_source->snapshot->snapshot_id);
		} else {
			cs->volume = csi_alloc(c, sizeof(*cs->volume));
			csi__v1__volume_content_source__volume_source__init(cs->volume);
			cs->volume->volume_id =
			    csi_strdup(c, req->volume_content_source->volume->volume_id);
		}
		r->volume->content_source = cs;
	}
	*resp = &r->base;
	code = GRPC_OK;
out:
	csi_key_unlock(c->plugin, key);
	if (ar)
		tessera__admin__response__free_unpacked(ar, NULL);
	return code;
}

/* ---- DeleteVolume, ValidateVolumeCapabilities -------------------------- */

int csi_delete_volume(struct csi_call *c, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
	const Csi__V1__DeleteVolumeRequest *req = (const void *)m;
	Csi__V1__DeleteVolumeResponse *r;
	Tessera__Admin__Request areq = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeDelete vd = TESSERA__ADMIN__VOLUME_DELETE__INIT;
	char key[CSI_NAME_MAX + 8];
	AResp *ar = NULL;
	int code = GRPC_OK;

	if (req->volume_id == NULL || req->volume_id[0] == '\0')
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_id is required");
	snprintf(c->volume, sizeof(c->volume), "%s", req->volume_id);
	if (tsr_valid_name(req->volume_id)) {
		snprintf(key, sizeof(key), "vol:%s", req->volume_id);
		csi_key_lock(c->plugin, key);
		vd.name = req->volume_id;
		areq.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DELETE;
		areq.volume_delete = &vd;
		code = csi_admin_ok(c, &areq, "volume delete", &ar);
		csi_key_unlock(c->plugin, key);
		if (ar)
			tessera__admin__response__free_unpacked(ar, NULL);
		if (code == GRPC_NOT_FOUND) /* already gone: success per the spec */
			code = c->code = GRPC_OK;
		if (code == GRPC_FAILED_PRECONDITION)
			csi_fail(c, code,
				 "volume %s is in use (attached on a node, or it has "
				 "snapshots or clones): %s",
				 req->volume_id, c->message);
		if (code)
			return code;
	}
	r = csi_alloc(c, sizeof(*r));
	csi__v1__delete_volume_response__init(r);
	*resp = &r->base;
	return GRPC_OK;
}

int csi_validate_volume_capabilities(struct csi_call *c, const ProtobufCMessage *m,
				     ProtobufCMessage **resp)
{
	const Csi__V1__ValidateVolumeCapabilitiesRequest *req = (const void *)m;
	Csi__V1__ValidateVolumeCapabilitiesResponse *r;
	AResp *ar = NULL;
	const char *why = NULL;
	size_t i;
	int code;

	if (req->volume_id == NULL || req->volume_id[0] == '\0')
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_id is required");
	snprintf(c->volume, sizeof(c->volume), "%s", req->volume_id);
	if (req->n_volume_capabilities == 0)
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_capabilities is required");
	code = volume_show(c, req->volume_id, &ar);
	if (code)
		return code;
	tessera__admin__response__free_unpacked(ar, NULL);
	for (i = 0; i < req->n_volume_capabilities && !why; i++)
		why = csi_capability_check(req->volume_capabilities[i]);
	if (!why && req->n_parameters) {
		struct csi_params p;
		char **keys = csi_alloc(c, req->n_parameters * sizeof(char *));
		char **vals = csi_alloc(c, req->n_parameters * sizeof(char *));
		char buf[256];

		for (i = 0; i < req->n_parameters; i++) {
			keys[i] = req->parameters[i]->key;
			vals[i] = req->parameters[i]->value;
		}
		if (csi_params_parse(req->n_parameters, keys, vals, &p, buf, sizeof(buf)))
			why = csi_strdup(c, buf);
	}
	r = csi_alloc(c, sizeof(*r));
	csi__v1__validate_volume_capabilities_response__init(r);
	if (why) {
		r->message = csi_strdup(c, why);
	} else {
		Csi__V1__ValidateVolumeCapabilitiesResponse__Confirmed *cf =
		    csi_alloc(c, sizeof(*cf));

		csi__v1__validate_volume_capabilities_response__confirmed__init(cf);
		/* the request's capabilities, parameters and context, as validated */
		cf->n_volume_capabilities = req->n_volume_capabilities;
		cf->volume_capabilities = (Csi__V1__VolumeCapability **)req->volume_capabilities;
		cf->n_parameters = req->n_parameters;
		cf->parameters = (void *)req->parameters;
		cf->n_volume_context = req->n_volume_context;
		cf->volume_context = (void *)req->volume_context;
		r->confirmed = cf;
	}
	*resp = &r->base;
	return GRPC_OK;
}

/* ---- ListVolumes, GetCapacity, capabilities ---------------------------- */

static int cmp_volume(const void *a, const void *b)
{
	const Tessera__Admin__Volume *const *x = a, *const *y = b;

	return strcmp((*x)->name, (*y)->name);
}

int csi_list_volumes(struct csi_call *c, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
	const Csi__V1__ListVolumesRequest *req = (const void *)m;
	Csi__V1__ListVolumesResponse *r;
	AResp *ar = NULL;
	struct topo *topo;
	size_t ntopo, start, end, i;
	char tok[CSI_ID_MAX + 16], after[CSI_ID_MAX];
	int code;

	if (req->max_entries < 0)
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "max_entries must not be negative");
	code = volume_list(c, &ar);
	if (code)
		return code;
	if (ar->n_volumes > 1) /* none: volumes is NULL, which qsort must not get */
		qsort(ar->volumes, ar->n_volumes, sizeof(*ar->volumes), cmp_volume);
	if (csi_token_parse(req->starting_token, after, sizeof(after)) == 0) {
		for (start = 0; start < ar->n_volumes && after[0] &&
				strcmp(ar->volumes[start]->name, after) <= 0;
		     start++)
			;
	} else {
		tessera__admin__response__free_unpacked(ar, NULL);
		return csi_fail(c, GRPC_ABORTED,
				"starting_token \"%.64s\" is not a next_token "
				"this plugin gave: start the listing again without one",
				req->starting_token);
	}
	end = ar->n_volumes;
	if (req->max_entries > 0 && end - start > (size_t)req->max_entries)
		end = start + (size_t)req->max_entries;
	ntopo = cluster_topologies(c, &topo);
	r = csi_alloc(c, sizeof(*r));
	csi__v1__list_volumes_response__init(r);
	r->entries = csi_alloc(c, (end - start + 1) * sizeof(*r->entries));
	for (i = start; i < end; i++) {
		Csi__V1__ListVolumesResponse__Entry *e = csi_alloc(c, sizeof(*e));
		Csi__V1__ListVolumesResponse__VolumeStatus *st = csi_alloc(c, sizeof(*st));

		csi__v1__list_volumes_response__entry__init(e);
		csi__v1__list_volumes_response__volume_status__init(st);
		e->volume = csi_alloc(c, sizeof(*e->volume));
		fill_volume(c, ar->volumes[i], e->volume, topo, ntopo);
		st->volume_condition = condition_of(c, ar->volumes[i], NULL);
		e->status = st;
		r->entries[r->n_entries++] = e;
	}
	if (end < ar->n_volumes) {
		csi_token_format(ar->volumes[end - 1]->name, tok, sizeof(tok));
		r->next_token = csi_strdup(c, tok);
	}
	tessera__admin__response__free_unpacked(ar, NULL);
	*resp = &r->base;
	return GRPC_OK;
}

int csi_get_capacity(struct csi_call *c, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
	const Csi__V1__GetCapacityRequest *req = (const void *)m;
	Csi__V1__GetCapacityResponse *r;
	Tessera__Admin__Request areq = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__ClusterStatusGet cs = TESSERA__ADMIN__CLUSTER_STATUS_GET__INIT;
	struct csi_params p = {0};
	AResp *ar = NULL;
	uint64_t avail;
	unsigned k, mm;
	size_t i;
	int code;

	for (i = 0; i < req->n_volume_capabilities; i++) {
		const char *why = csi_capability_check(req->volume_capabilities[i]);

		if (why)
			return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_capabilities[%zu]: %s", i,
					why);
	}
	if (req->n_parameters) {
		char **keys = csi_alloc(c, req->n_parameters * sizeof(char *));
		char **vals = csi_alloc(c, req->n_parameters * sizeof(char *));
		char why[256];

		for (i = 0; i < req->n_parameters; i++) {
			keys[i] = req->parameters[i]->key;
			vals[i] = req->parameters[i]->value;
		}
		if (csi_params_parse(req->n_parameters, keys, vals, &p, why, sizeof(why)))
			return csi_fail(c, GRPC_INVALID_ARGUMENT, "%s", why);
	}
	if (req->accessible_topology && req->accessible_topology->n_segments) {
		/* the free space of the nodes in that topology */
		Tessera__Admin__NodeList nl = TESSERA__ADMIN__NODE_LIST__INIT;

		areq.command_case = TESSERA__ADMIN__REQUEST__COMMAND_NODE_LIST;
		areq.node_list = &nl;
		code = csi_admin_ok(c, &areq, "node list", &ar);
		if (code)
			return code;
		avail = 0;
		for (i = 0; i < ar->n_nodes; i++) {
			const Tessera__Admin__Node *n = ar->nodes[i];
			struct topo t;

			snprintf(t.zone, sizeof(t.zone), "%s", n->zone);
			snprintf(t.site, sizeof(t.site), "%s", n->site);
			if (n->alive && topo_match(req->accessible_topology, &t) &&
			    n->capacity > n->provisioned)
				avail += n->capacity - n->provisioned;
		}
	} else {
		areq.command_case = TESSERA__ADMIN__REQUEST__COMMAND_CLUSTER_STATUS;
		areq.cluster_status = &cs;
		code = csi_admin_ok(c, &areq, "cluster status", &ar);
		if (code)
			return code;
		avail = ar->cluster_status->capacity > ar->cluster_status->provisioned
			    ? ar->cluster_status->capacity - ar->cluster_status->provisioned
			    : 0;
	}
	tessera__admin__response__free_unpacked(ar, NULL);
	if (p.ec[0] && tsr_ec_parse(p.ec, &k, &mm) == 0)
		avail = avail / (k + mm) * k;
	else
		avail /= p.replicas ? p.replicas : 3;
	avail = avail / TSR_BLOCK_SIZE * TSR_BLOCK_SIZE;
	r = csi_alloc(c, sizeof(*r));
	csi__v1__get_capacity_response__init(r);
	r->available_capacity = (int64_t)(avail > INT64_MAX ? INT64_MAX : avail);
	r->maximum_volume_size = csi_alloc(c, sizeof(*r->maximum_volume_size));
	google__protobuf__int64_value__init(r->maximum_volume_size);
	r->maximum_volume_size->value = (int64_t)CSI_MAX_SIZE;
	*resp = &r->base;
	return GRPC_OK;
}

int csi_controller_get_capabilities(struct csi_call *c, const ProtobufCMessage *m,
				    ProtobufCMessage **resp)
{
	static const Csi__V1__ControllerServiceCapability__RPC__Type types[] = {
	    CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__CREATE_DELETE_VOLUME,
	    CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__LIST_VOLUMES,
	    CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__GET_CAPACITY,
	    CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__CREATE_DELETE_SNAPSHOT,
	    CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__LIST_SNAPSHOTS,
	    CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__CLONE_VOLUME,
	    CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__EXPAND_VOLUME,
	    CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__VOLUME_CONDITION,
	    CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__GET_VOLUME,
	};
	size_t n = sizeof(types) / sizeof(types[0]), i;
	Csi__V1__ControllerGetCapabilitiesResponse *r = csi_alloc(c, sizeof(*r));

	csi__v1__controller_get_capabilities_response__init(r);
	r->capabilities = csi_alloc(c, n * sizeof(*r->capabilities));
	for (i = 0; i < n; i++) {
		Csi__V1__ControllerServiceCapability *cap = csi_alloc(c, sizeof(*cap));
		Csi__V1__ControllerServiceCapability__RPC *rpc = csi_alloc(c, sizeof(*rpc));

		csi__v1__controller_service_capability__init(cap);
		csi__v1__controller_service_capability__rpc__init(rpc);
		rpc->type = types[i];
		cap->type_case = CSI__V1__CONTROLLER_SERVICE_CAPABILITY__TYPE_RPC;
		cap->rpc = rpc;
		r->capabilities[i] = cap;
	}
	r->n_capabilities = n;
	*resp = &r->base;
	return GRPC_OK;
}

/* ---- snapshots --------------------------------------------------------- */

static Csi__V1__Snapshot *snapshot_new(struct csi_call *c, const Tessera__Admin__Snapshot *s)
{
	Csi__V1__Snapshot *o = csi_alloc(c, sizeof(*o));
	Google__Protobuf__Timestamp *ts = csi_alloc(c, sizeof(*ts));

	csi__v1__snapshot__init(o);
	google__protobuf__timestamp__init(ts);
	ts->seconds = s->created;
	o->size_bytes = (int64_t)s->size;
	o->snapshot_id = csi_printf(c, "%s@%s", s->volume, s->name);
	o->source_volume_id = csi_strdup(c, s->volume);
	o->creation_time = ts;
	o->ready_to_use = 1; /* the cut is complete when tesserad answers */
	return o;
}

int csi_create_snapshot(struct csi_call *c, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
	const Csi__V1__CreateSnapshotRequest *req = (const void *)m;
	Csi__V1__CreateSnapshotResponse *r;
	Tessera__Admin__Request areq = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotCreate sc = TESSERA__ADMIN__SNAPSHOT_CREATE__INIT;
	char name[CSI_NAME_MAX], key[CSI_NAME_MAX + 8];
	AResp *ar = NULL, *vl = NULL;
	size_t i, j;
	int code;

	if (req->source_volume_id == NULL || req->source_volume_id[0] == '\0')
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "source_volume_id is required");
	if (req->name == NULL || req->name[0] == '\0')
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "name is required");
	if (csi_volume_name(req->name, name))
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "name contains control characters");
	snprintf(c->volume, sizeof(c->volume), "%s@%s", req->source_volume_id, name);
	if (req->n_parameters)
		return csi_fail(c, GRPC_INVALID_ARGUMENT,
				"unknown parameter \"%s\": snapshots take "
				"no parameters",
				req->parameters[0]->key);
	snprintf(key, sizeof(key), "snap:%s", name);
	csi_key_lock(c->plugin, key);
	code = volume_show(c, req->source_volume_id, &ar);
	if (code)
		goto out;
	for (i = 0; i < ar->volumes[0]->n_snapshots; i++) {
		if (strcmp(ar->volumes[0]->snapshots[i]->name, name) == 0) {
			r = csi_alloc(c, sizeof(*r));
			csi__v1__create_snapshot_response__init(r);
			r->snapshot = snapshot_new(c, ar->volumes[0]->snapshots[i]);
			*resp = &r->base;
			goto out; /* already cut: idempotent */
		}
	}
	tessera__admin__response__free_unpacked(ar, NULL);
	ar = NULL;
	/* the name must not be taken on another volume (CSI snapshot names are global) */
	code = volume_list(c, &vl);
	if (code)
		goto out;
	for (i = 0; i < vl->n_volumes; i++) {
		AResp *sl = NULL;

		if (strcmp(vl->volumes[i]->name, req->source_volume_id) == 0)
			continue;
		if (snapshot_list(c, vl->volumes[i]->name, &sl) != GRPC_OK) {
			c->code = GRPC_OK; /* a volume deleted meanwhile */
			continue;
		}
		for (j = 0; j < sl->n_snapshots; j++)
			if (strcmp(sl->snapshots[j]->name, name) == 0)
				break;
		if (j < sl->n_snapshots) {
			code = csi_fail(c, GRPC_ALREADY_EXISTS,
					"snapshot name \"%s\" is already used "
					"for a snapshot of volume %s",
					req->name, vl->volumes[i]->name);
			tessera__admin__response__free_unpacked(sl, NULL);
			goto out;
		}
		tessera__admin__response__free_unpacked(sl, NULL);
	}
	csi_node_sync(c->plugin, req->source_volume_id);
	sc.volume = req->source_volume_id;
	sc.name = name;
	areq.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE;
	areq.snapshot_create = &sc;
	code = csi_admin_ok(c, &areq, "snapshot create", &ar);
	if (code)
		goto out;
	if (ar->n_snapshots != 1) {
		code = csi_fail(c, GRPC_INTERNAL, "snapshot create: no snapshot in the reply");
		goto out;
	}
	r = csi_alloc(c, sizeof(*r));
	csi__v1__create_snapshot_response__init(r);
	r->snapshot = snapshot_new(c, ar->snapshots[0]);
	*resp = &r->base;
out:
	csi_key_unlock(c->plugin, key);
	if (ar)
		tessera__admin__response__free_unpacked(ar, NULL);
	if (vl)
		tessera__admin__response__free_unpacked(vl, NULL);
	return code;
}

int csi_delete_snapshot(struct csi_call *c, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
	const Csi__V1__DeleteSnapshotRequest *req = (const void *)m;
	Csi__V1__DeleteSnapshotResponse *r;
	Tessera__Admin__Request areq = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotDelete sd = TESSERA__ADMIN__SNAPSHOT_DELETE__INIT;
	char vol[CSI_NAME_MAX], snap[CSI_NAME_MAX];
	AResp *ar = NULL;
	int code;

	if (req->snapshot_id == NULL || req->snapshot_id[0] == '\0')
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "snapshot_id is required");
	snprintf(c->volume, sizeof(c->volume), "%s", req->snapshot_id);
	if (csi_snapshot_id_parse(req->snapshot_id, vol, snap) == 0) {
		sd.volume = vol;
		sd.name = snap;
		areq.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DELETE;
		areq.snapshot_delete = &sd;
		code = csi_admin_ok(c, &areq, "snapshot delete", &ar);
		if (ar)
			tessera__admin__response__free_unpacked(ar, NULL);
		if (code == GRPC_NOT_FOUND)
			code = c->code = GRPC_OK;
		if (code)
			return code;
	}
	r = csi_alloc(c, sizeof(*r));
	csi__v1__delete_snapshot_response__init(r);
	*resp = &r->base;
	return GRPC_OK;
}

struct snap_ref {
	char id[CSI_ID_MAX]; /* "VOL@SNAP", the sort key */
	const Tessera__Admin__Snapshot *snap;
};

static int cmp_snapshot(const void *a, const void *b)
{
	const struct snap_ref *x = a, *y = b;

	return strcmp(x->id, y->id);
}

int csi_list_snapshots(struct csi_call *c, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
	const Csi__V1__ListSnapshotsRequest *req = (const void *)m;
	Csi__V1__ListSnapshotsResponse *r;
	struct snap_ref *all = NULL;
	AResp **held = NULL;
	size_t nall = 0, nheld = 0, i, j, start, end;
	char vol[CSI_NAME_MAX], snap[CSI_NAME_MAX], tok[CSI_ID_MAX + 16], after[CSI_ID_MAX];
	int code = GRPC_OK;

	if (req->max_entries < 0)
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "max_entries must not be negative");
	r = csi_alloc(c, sizeof(*r));
	csi__v1__list_snapshots_response__init(r);
	if (req->snapshot_id && req->snapshot_id[0]) {
		AResp *ar = NULL;

		if (csi_snapshot_id_parse(req->snapshot_id, vol, snap) ||
		    (req->source_volume_id && req->source_volume_id[0] &&
		     strcmp(req->source_volume_id, vol)) ||
		    snapshot_show(c, vol, snap, &ar) != GRPC_OK) {
			c->code = GRPC_OK; /* no such snapshot: an empty list */
			*resp = &r->base;
			return GRPC_OK;
		}
		r->entries = csi_alloc(c, sizeof(*r->entries));
		r->entries[0] = csi_alloc(c, sizeof(*r->entries[0]));
		csi__v1__list_snapshots_response__entry__init(r->entries[0]);
		r->entries[0]->snapshot = snapshot_new(c, ar->snapshots[0]);
		r->n_entries = 1;
		tessera__admin__response__free_unpacked(ar, NULL);
		*resp = &r->base;
		return GRPC_OK;
	}
	if (req->source_volume_id && req->source_volume_id[0]) {
		AResp *ar = NULL;

		held = csi_alloc(c, sizeof(*held));
		if (!tsr_valid_name(req->source_volume_id) ||
		    snapshot_list(c, req->source_volume_id, &ar) != GRPC_OK) {
			c->code = GRPC_OK;
			*resp = &r->base;
			return GRPC_OK;
		}
		held[nheld++] = ar;
	} else {
		AResp *vl = NULL;

		code = volume_list(c, &vl);
		if (code)
			return code;
		held = csi_alloc(c, (vl->n_volumes + 1) * sizeof(*held));
		for (i = 0; i < vl->n_volumes; i++) {
			AResp *ar = NULL;

			if (snapshot_list(c, vl->volumes[i]->name, &ar) == GRPC_OK)
				held[nheld++] = ar;
			c->code = GRPC_OK;
		}
		tessera__admin__response__free_unpacked(vl, NULL);
	}
	for (i = 0; i < nheld; i++)
		nall += held[i]->n_snapshots;
	all = csi_alloc(c, (nall + 1) * sizeof(*all));
	nall = 0;
	for (i = 0; i < nheld; i++) {
		for (j = 0; j < held[i]->n_snapshots; j++, nall++) {
			all[nall].snap = held[i]->snapshots[j];
			snprintf(all[nall].id, sizeof(all[nall].id), "%s@%s",
				 held[i]->snapshots[j]->volume, held[i]->snapshots[j]->name);
		}
	}
	qsort(all, nall, sizeof(*all), cmp_snapshot);
	if (csi_token_parse(req->starting_token, after, sizeof(after)) == 0) {
		for (start = 0; start < nall && after[0] && strcmp(all[start].id, after) <= 0;
		     start++)
			;
	} else {
		code = csi_fail(c, GRPC_ABORTED,
				"starting_token \"%.64s\" is not a next_token "
				"this plugin gave: start the listing again without one",
				req->starting_token);
		goto out;
	}
	end = nall;
	if (req->max_entries > 0 && end - start > (size_t)req->max_entries)
		end = start + (size_t)req->max_entries;
	r->entries = csi_alloc(c, (end - start + 1) * sizeof(*r->entries));
	for (i = start; i < end; i++) {
		Csi__V1__ListSnapshotsResponse__Entry *e = csi_alloc(c, sizeof(*e));

		csi__v1__list_snapshots_response__entry__init(e);
		e->snapshot = snapshot_new(c, all[i].snap);
		r->entries[r->n_entries++] = e;
	}
	if (end < nall) {
		csi_token_format(all[end - 1].id, tok, sizeof(tok));
		r->next_token = csi_strdup(c, tok);
	}
	*resp = &r->base;
out:
	for (i = 0; i < nheld; i++)
		tessera__admin__response__free_unpacked(held[i], NULL);
	return code;
}

/* ---- expansion, volume condition --------------------------------------- */

int csi_controller_expand_volume(struct csi_call *c, const ProtobufCMessage *m,
				 ProtobufCMessage **resp)
{
	const Csi__V1__ControllerExpandVolumeRequest *req = (const void *)m;
	Csi__V1__ControllerExpandVolumeResponse *r;
	Tessera__Admin__Request areq = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeResize vr = TESSERA__ADMIN__VOLUME_RESIZE__INIT;
	char key[CSI_NAME_MAX + 8];
	AResp *ar = NULL;
	uint64_t size, cur;
	bool attached;
	int code, ret;

	if (req->volume_id == NULL || req->volume_id[0] == '\0')
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_id is required");
	snprintf(c->volume, sizeof(c->volume), "%s", req->volume_id);
	if (req->capacity_range == NULL)
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "capacity_range is required");
	ret = csi_capacity(req->capacity_range->required_bytes, req->capacity_range->limit_bytes,
			   CSI_DEFAULT_SIZE, &size);
	if (ret == -EINVAL)
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "capacity_range: negative bytes");
	if (ret == -EFBIG)
		return csi_fail(c, GRPC_OUT_OF_RANGE,
				"capacity_range: %lld bytes is more than a "
				"Tessera volume can hold (1 PiB)",
				(long long)req->capacity_range->required_bytes);
	if (ret)
		return csi_fail(c, GRPC_OUT_OF_RANGE, "capacity_range has no 4096-byte multiple");
	if (req->volume_capability && csi_capability_check(req->volume_capability))
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_capability: %s",
				csi_capability_check(req->volume_capability));
	snprintf(key, sizeof(key), "vol:%s", req->volume_id);
	csi_key_lock(c->plugin, key);
	code = volume_show(c, req->volume_id, &ar);
	if (code)
		goto out;
	cur = ar->volumes[0]->size;
	attached = ar->volumes[0]->attached_node[0] != '\0';
	tessera__admin__response__free_unpacked(ar, NULL);
	ar = NULL;
	if (req->capacity_range->limit_bytes > 0 &&
	    cur > (uint64_t)req->capacity_range->limit_bytes) {
		code = csi_fail(c, GRPC_OUT_OF_RANGE,
				"volume is already %llu bytes, above "
				"limit_bytes (volumes do not shrink)",
				(unsigned long long)cur);
		goto out;
	}
	if (size > cur && attached) {
		/*
		 * tesserad grows an attached volume in place (its
		 * coordinator); the node step is still required, even for a
		 * block volume: the NBD client keeps the size of its handshake
		 * until NodeExpandVolume reconnects it (and grows the file
		 * system).  A volume tesserad cannot grow while attached
		 * (-EOPNOTSUPP: a layout without online growth) is grown by
		 * NodeExpandVolume instead, which restarts the device chain
		 * (detach, resize, attach).
		 */
		vr.name = req->volume_id;
		vr.size = size;
		areq.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_RESIZE;
		areq.volume_resize = &vr;
		code = csi_admin(c, &areq, &ar);
		if (code)
			goto out;
		if (ar->error && ar->error != -EOPNOTSUPP) {
			code = csi_fail(c, csi_admin_code(ar->error), "volume resize: %s",
					ar->message && ar->message[0] ? ar->message :
					strerror(-ar->error));
			goto out;
		}
		r = csi_alloc(c, sizeof(*r));
		csi__v1__controller_expand_volume_response__init(r);
		r->capacity_bytes = (int64_t)size;
		r->node_expansion_required = 1;
		*resp = &r->base;
		goto out;
	}
	if (size > cur) {
		vr.name = req->volume_id;
		vr.size = size;
		areq.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_RESIZE;
		areq.volume_resize = &vr;
		code = csi_admin_ok(c, &areq, "volume resize", &ar);
		if (code)
			goto out;
		cur = ar->n_volumes ? ar->volumes[0]->size : size;
	}
	r = csi_alloc(c, sizeof(*r));
	csi__v1__controller_expand_volume_response__init(r);
	r->capacity_bytes = (int64_t)cur;
	r->node_expansion_required =
	    !(req->volume_capability && req->volume_capability->access_type_case ==
					    CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_BLOCK);
	*resp = &r->base;
out:
	csi_key_unlock(c->plugin, key);
	if (ar)
		tessera__admin__response__free_unpacked(ar, NULL);
	return code;
}

int csi_controller_get_volume(struct csi_call *c, const ProtobufCMessage *m,
			      ProtobufCMessage **resp)
{
	const Csi__V1__ControllerGetVolumeRequest *req = (const void *)m;
	Csi__V1__ControllerGetVolumeResponse *r;
	Csi__V1__ControllerGetVolumeResponse__VolumeStatus *st;
	Tessera__Admin__Request areq = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeStatusGet vs = TESSERA__ADMIN__VOLUME_STATUS_GET__INIT;
	AResp *ar = NULL, *sr = NULL;
	struct topo *topo;
	size_t ntopo;
	int code;

	if (req->volume_id == NULL || req->volume_id[0] == '\0')
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_id is required");
	snprintf(c->volume, sizeof(c->volume), "%s", req->volume_id);
	code = volume_show(c, req->volume_id, &ar);
	if (code)
		return code;
	/* live status from the attach node; a detached volume has only its records */
	vs.name = req->volume_id;
	areq.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_STATUS;
	areq.volume_status = &vs;
	if (ar->volumes[0]->attached_node[0] &&
	    csi_admin_ok(c, &areq, "volume status", &sr) != GRPC_OK) {
		sr = NULL;
		c->code = GRPC_OK;
	}
	ntopo = cluster_topologies(c, &topo);
	r = csi_alloc(c, sizeof(*r));
	csi__v1__controller_get_volume_response__init(r);
	r->volume = csi_alloc(c, sizeof(*r->volume));
	fill_volume(c, ar->volumes[0], r->volume, topo, ntopo);
	st = csi_alloc(c, sizeof(*st));
	csi__v1__controller_get_volume_response__volume_status__init(st);
	st->volume_condition = condition_of(c,
					    sr && sr->volume_status && sr->volume_status->volume
						? sr->volume_status->volume
						: ar->volumes[0],
					    sr ? sr->volume_status : NULL);
	r->status = st;
	if (sr)
		tessera__admin__response__free_unpacked(sr, NULL);
	tessera__admin__response__free_unpacked(ar, NULL);
	*resp = &r->base;
	return GRPC_OK;
}
