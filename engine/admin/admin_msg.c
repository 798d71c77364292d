/*
 * Admin API messages: framing (proto/admin.proto explains the format) and the
 * one parsing function per message type that everything read from a socket
 * goes through.  protobuf-c checks the wire format; these functions check
 * what the code after them relies on: one command, valid names, sane sizes,
 * bounded printable strings.  tests/fuzz/fuzz_admin_request.c targets them.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_internal.h"
#include "tessera/ec.h"
#include "tessera/pbmsg.h"
#include "tessera/site.h"
#include "tessera/vol.h"

#define MAX_STRING 4096      /* any string field in a reply */
#define MAX_VOLUMES 100000   /* volumes in one reply */
#define MAX_URIS 64          /* NBD URIs of one volume, listeners of a node */
#define MAX_SNAPSHOTS 100000 /* snapshots in one reply */
#define MAX_EXTENTS (1u << 20) /* diff extents in one reply (the frame limit comes first) */

uint32_t admin_frame_len(const uint8_t hdr[4])
{
	return tsr_pb_frame_len(hdr);
}

int admin_frame_pack(const ProtobufCMessage *msg, uint8_t **frame, size_t *len)
{
	return tsr_pb_frame_pack(msg, TSR_ADMIN_MAX_FRAME, frame, len);
}

char *admin_strdup(const char *s)
{
	return strdup(s ? s : "");
}

static void free_string(char *s)
{
	if (s != protobuf_c_empty_string)
		free(s);
}

static void free_strings(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free_string(v[i]);
	free(v);
}

static void copy_free_built(Tessera__Admin__Copy *cp)
{
	if (cp == NULL)
		return;
	free_string(cp->node);
	free_string(cp->state);
	free_string(cp->coordinator_has);
	free(cp);
}

void admin_snapshot_free_built(Tessera__Admin__Snapshot *s)
{
	if (s == NULL)
		return;
	free_string(s->volume);
	free_string(s->name);
	free_string(s->uuid);
	free_strings(s->nbd_uris, s->n_nbd_uris);
	free(s);
}

void admin_volume_free_built(Tessera__Admin__Volume *v)
{
	if (v == NULL)
		return;
	free_string(v->name);
	free_string(v->uuid);
	free_strings(v->nbd_uris, v->n_nbd_uris);
	free_string(v->failure_domain);
	free_string(v->attached_node);
	for (size_t i = 0; i < v->n_copies; i++)
		copy_free_built(v->copies[i]);
	free(v->copies);
	free_string(v->parent_volume);
	free_string(v->parent_snapshot);
	for (size_t i = 0; i < v->n_snapshots; i++)
		admin_snapshot_free_built(v->snapshots[i]);
	free(v->snapshots);
	free(v);
}

void admin_data_fs_free_built(Tessera__Admin__DataFs *fs)
{
	if (fs == NULL)
		return;
	free_string(fs->error);
	free(fs);
}

void admin_node_free_built(Tessera__Admin__Node *n)
{
	if (n == NULL)
		return;
	free_string(n->id);
	free_string(n->address);
	free_string(n->zone);
	free_string(n->site);
	free_strings(n->nbd_listeners, n->n_nbd_listeners);
	admin_data_fs_free_built(n->data_fs);
	free(n);
}

void admin_site_free_built(Tessera__Admin__Site *s)
{
	if (s == NULL)
		return;
	free_string(s->name);
	free_string(s->address);
	free_string(s->ca);
	free_string(s->cert);
	free_string(s->key);
	free_string(s->peer_name);
	free(s);
}

void admin_replication_free_built(Tessera__Admin__Replication *r)
{
	if (r == NULL)
		return;
	free_string(r->volume);
	free_string(r->role);
	free_string(r->site);
	free_string(r->state);
	free_string(r->target_volume);
	free_string(r->target_layout);
	free_string(r->group);
	free_string(r->last_error);
	free_string(r->node);
	free_string(r->resync_from);
	free_string(r->compression);
	free_string(r->group_held_by);
	free(r);
}

void admin_response_free_built(Tessera__Admin__Response *resp)
{
	if (resp == NULL)
		return;
	free_string(resp->message);
	resp->message = (char *)protobuf_c_empty_string;
	for (size_t i = 0; i < resp->n_volumes; i++)
		admin_volume_free_built(resp->volumes[i]);
	free(resp->volumes);
	resp->volumes = NULL;
	resp->n_volumes = 0;
	if (resp->status) {
		Tessera__Admin__Status *s = resp->status;

		free_string(s->version);
		free_string(s->data_dir);
		free_string(s->io_backend);
		free_string(s->device);
		free_strings(s->nbd_listeners, s->n_nbd_listeners);
		free_strings(s->admin_listeners, s->n_admin_listeners);
		free_string(s->node_id);
		free_string(s->cluster_address);
		admin_data_fs_free_built(s->data_fs);
		free(s);
		resp->status = NULL;
	}
	for (size_t i = 0; i < resp->n_nodes; i++)
		admin_node_free_built(resp->nodes[i]);
	free(resp->nodes);
	resp->nodes = NULL;
	resp->n_nodes = 0;
	if (resp->volume_status) {
		admin_volume_free_built(resp->volume_status->volume);
		free(resp->volume_status);
		resp->volume_status = NULL;
	}
	if (resp->cluster_status) {
		free_string(resp->cluster_status->meta_backend);
		free_string(resp->cluster_status->meta_node);
		free(resp->cluster_status);
		resp->cluster_status = NULL;
	}
	for (size_t i = 0; i < resp->n_snapshots; i++)
		admin_snapshot_free_built(resp->snapshots[i]);
	free(resp->snapshots);
	resp->snapshots = NULL;
	resp->n_snapshots = 0;
	for (size_t i = 0; i < resp->n_extents; i++)
		free(resp->extents[i]);
	free(resp->extents);
	resp->extents = NULL;
	resp->n_extents = 0;
	for (size_t i = 0; i < resp->n_sites; i++)
		admin_site_free_built(resp->sites[i]);
	free(resp->sites);
	resp->sites = NULL;
	resp->n_sites = 0;
	for (size_t i = 0; i < resp->n_replications; i++)
		admin_replication_free_built(resp->replications[i]);
	free(resp->replications);
	resp->replications = NULL;
	resp->n_replications = 0;
	for (size_t i = 0; i < resp->n_copies_left; i++) {
		free_string(resp->copies_left[i]->node);
		free_string(resp->copies_left[i]->reason);
		free(resp->copies_left[i]);
	}
	free(resp->copies_left);
	resp->copies_left = NULL;
	resp->n_copies_left = 0;
	free_strings(resp->nbd_clients, resp->n_nbd_clients);
	resp->nbd_clients = NULL;
	resp->n_nbd_clients = 0;
}

void admin_fail(Tessera__Admin__Response *resp, int err, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	resp->error = err;
	if (resp->message != protobuf_c_empty_string)
		free(resp->message);
	resp->message = strdup(buf);
	if (resp->message == NULL)
		resp->message = (char *)protobuf_c_empty_string;
}

/* A bounded string of printable characters (UTF-8 bytes allowed, no controls). */
static bool valid_text(const char *s, size_t max, bool allow_empty)
{
	size_t n;

	if (s == NULL)
		return allow_empty;
	for (n = 0; s[n]; n++) {
		unsigned char c = (unsigned char)s[n];

		if (n >= max || c < 0x20 || c == 0x7f)
			return false;
	}
	return n > 0 || allow_empty;
}

static int check_size(uint64_t size, const char **why)
{
	if (size == 0) {
		*why = "size must not be zero";
		return -EINVAL;
	}
	if (size % TSR_BLOCK_SIZE) {
		*why = "size must be a multiple of 4 KiB (4096 bytes)";
		return -EINVAL;
	}
	return 0;
}

static int check_name(const char *name, const char **why)
{
	if (!tsr_valid_name(name)) {
		*why = "invalid volume name: use 1 to 63 of A-Z a-z 0-9 . _ - starting with a "
		       "letter or digit";
		return -EINVAL;
	}
	return 0;
}

/* A node id: the same rule as volume names; "" allowed where optional. */
static int check_node(const char *id, bool optional, const char **why)
{
	if (optional && id != NULL && id[0] == '\0')
		return 0;
	if (!tsr_valid_name(id)) {
		*why = "invalid node id: use 1 to 63 of A-Z a-z 0-9 . _ - starting with a letter "
		       "or digit (tessera node list shows them)";
		return -EINVAL;
	}
	return 0;
}

static int check_snap_name(const char *name, const char **why)
{
	if (!tsr_valid_name(name)) {
		*why = "invalid snapshot name: use 1 to 63 of A-Z a-z 0-9 . _ - starting with a "
		       "letter or digit";
		return -EINVAL;
	}
	return 0;
}

/*
 * A snapshot named by volume and name, or by volume "VOL@SNAP" and an empty
 * name (the export-name form).
 */
static int check_snap_ref(const char *volume, const char *name, const char **why)
{
	char vol[64];

	if (volume != NULL && name != NULL && name[0] == '\0' && strchr(volume, '@') != NULL) {
		const char *at = strchr(volume, '@');

		if ((size_t)(at - volume) >= sizeof(vol)) {
			*why = "invalid volume name: use 1 to 63 of A-Z a-z 0-9 . _ - starting with "
			       "a letter or digit";
			return -EINVAL;
		}
		memcpy(vol, volume, (size_t)(at - volume));
		vol[at - volume] = '\0';
		return check_name(vol, why) ?: check_snap_name(at + 1, why);
	}
	return check_name(volume, why) ?: check_snap_name(name, why);
}

/* A clone's source: from_volume (or "VOL@SNAP"), from_snapshot optional. */
static int check_clone(const Tessera__Admin__VolumeCreate *c, const char **why)
{
	if (c->from_volume == NULL || c->from_volume[0] == '\0') {
		if (c->from_snapshot != NULL && c->from_snapshot[0] != '\0') {
			*why = "from_snapshot needs from_volume: a snapshot is named by its volume";
			return -EINVAL;
		}
		return check_size(c->size, why);
	}
	if (strchr(c->from_volume, '@') != NULL) {
		if (c->from_snapshot != NULL && c->from_snapshot[0] != '\0') {
			*why = "give the source as from_volume VOL@SNAP or as from_volume VOL and "
			       "from_snapshot SNAP, not both";
			return -EINVAL;
		}
		if (check_snap_ref(c->from_volume, "", why))
			return -EINVAL;
	} else if (check_name(c->from_volume, why) ||
		   (c->from_snapshot != NULL && c->from_snapshot[0] != '\0' &&
		    check_snap_name(c->from_snapshot, why))) {
		return -EINVAL;
	}
	/* size 0: the source's size; else a larger size grows the clone */
	if (c->size % TSR_BLOCK_SIZE) {
		*why = "size must be a multiple of 4 KiB (4096 bytes)";
		return -EINVAL;
	}
	return 0;
}

static int check_domain(const Tessera__Admin__VolumeCreate *c, const char **why)
{
	if (!valid_text(c->failure_domain, 16, true) ||
	    (c->failure_domain[0] && strcmp(c->failure_domain, "node") &&
	     strcmp(c->failure_domain, "zone") && strcmp(c->failure_domain, "site"))) {
		*why = "failure domain must be node, zone or site";
		return -EINVAL;
	}
	return 0;
}

/*
 * Erasure coding: ec "K+M" excludes replicas; min_replicas (in-sync chunk
 * copies for writes) K..K+M; a stripe unit only with ec, a power of 2 in
 * 4 KiB..1 MiB.
 */
static int check_ec(const Tessera__Admin__VolumeCreate *c, const char **why)
{
	unsigned k, m;

	if (c->ec == NULL || c->ec[0] == '\0') {
		if (c->stripe_unit) {
			*why = "stripe_unit goes with ec (an erasure-coded volume): give ec K+M too";
			return -EINVAL;
		}
		return 0;
	}
	if (!valid_text(c->ec, 16, false) || tsr_ec_parse(c->ec, &k, &m)) {
		*why = "ec must be K+M with K data chunks 1 to 16 and M parity chunks 1 to 4, "
		       "e.g. 4+2";
		return -EINVAL;
	}
	if (c->replicas) {
		*why = "ec and replicas exclude each other: an ec K+M volume has K+M chunk copies";
		return -EINVAL;
	}
	if (c->stripe_unit && !tsr_ec_unit_valid(c->stripe_unit)) {
		*why = "stripe_unit must be a power of 2 from 4 KiB to 1 MiB (0: 64 KiB)";
		return -EINVAL;
	}
	if (c->min_replicas && (c->min_replicas < k || c->min_replicas > k + m)) {
		*why = "min-replicas of an ec K+M volume must be K to K+M (a stripe needs K "
		       "chunks in sync to be written)";
		return -EINVAL;
	}
	return 0;
}

/*
 * region_size (the dirty-bitmap region): 0 (1 MiB) or a power of 2 in
 * 64 KiB..2 GiB; with ec at least the stripe unit (0: 64 KiB).
 */
static int check_region(const Tessera__Admin__VolumeCreate *c, const char **why)
{
	uint32_t rs = c->region_size;
	bool ec = c->ec != NULL && c->ec[0] != '\0';

	if (rs == 0)
		return 0;
	if (rs < (64u << 10) || rs > (1u << 31) || (rs & (rs - 1))) {
		*why = "region_size must be a power of 2 from 64 KiB to 2 GiB (0: 1 MiB)";
		return -EINVAL;
	}
	if (ec && rs < (c->stripe_unit ? c->stripe_unit : TSR_EC_DEFAULT_UNIT)) {
		*why = "region_size of an ec volume must be at least its stripe unit (it counts "
		       "chunk-volume bytes), up to 2 GiB";
		return -EINVAL;
	}
	return 0;
}

static int check_replication(const Tessera__Admin__VolumeCreate *c, const char **why)
{
	unsigned replicas = c->replicas ? c->replicas : 3;

	if (check_region(c, why))
		return -EINVAL;
	if (c->ec != NULL && c->ec[0] != '\0')
		return check_ec(c, why) ?: check_domain(c, why);
	if (check_ec(c, why))
		return -EINVAL;
	if (c->replicas > 8) {
		*why = "replicas must be 1 to 8";
		return -EINVAL;
	}
	if (c->min_replicas > replicas) {
		*why = "min-replicas must not exceed replicas";
		return -EINVAL;
	}
	return check_domain(c, why);
}

/* ---- geo-replication requests ---- */

#define MAX_PATH_TEXT 4096 /* a PEM path in SiteAdd */
#define MAX_HOST_TEXT 253  /* a DNS name */
#define MIN_LOG_BYTES (1u << 20)

static int check_site_name(const char *name, const char **why)
{
	if (!tsr_valid_name(name)) {
		*why = "invalid site name: use 1 to 63 of A-Z a-z 0-9 . _ - starting with a letter "
		       "or digit";
		return -EINVAL;
	}
	return 0;
}

/* "" or a valid name (what says which field). */
static int check_opt_name(const char *s, const char *what, const char **why)
{
	if (s == NULL || s[0] == '\0' || tsr_valid_name(s))
		return 0;
	*why = what;
	return -EINVAL;
}

/* HOST:PORT with a non-empty host and a port 1..65535. */
static int check_hostport(const char *addr, const char **why)
{
	char host[MAX_HOST_TEXT + 3], port[16];
	char *end;
	long n;

	*why = "address must be HOST:PORT (the other site's --site-listen), e.g. "
	       "dr.example.com:7500";
	if (!valid_text(addr, MAX_HOST_TEXT + 8, false) || strchr(addr, ' ') != NULL ||
	    tsr_admin_split_hostport(addr, host, sizeof(host), port, sizeof(port)) ||
	    host[0] == '\0' || port[0] < '0' || port[0] > '9')
		return -EINVAL;
	n = strtol(port, &end, 10);
	if (*end != '\0' || n < 1 || n > 65535)
		return -EINVAL;
	return 0;
}

/* A host name the other site's certificate must carry: "" (the address's host) or text. */
static int check_peer_name(const char *s, const char **why)
{
	if (s == NULL || s[0] == '\0')
		return 0;
	if (!valid_text(s, MAX_HOST_TEXT, false) || strchr(s, ' ') != NULL) {
		*why = "peer_name must be the host name the other site's certificate carries "
		       "(up to 253 characters, no spaces)";
		return -EINVAL;
	}
	return 0;
}

static int check_site_add(const Tessera__Admin__SiteAdd *a, const char **why)
{
	if (check_site_name(a->name, why) || check_hostport(a->address, why) ||
	    check_peer_name(a->peer_name, why))
		return -EINVAL;
	if (!valid_text(a->ca, MAX_PATH_TEXT, false) || !valid_text(a->cert, MAX_PATH_TEXT, false) ||
	    !valid_text(a->key, MAX_PATH_TEXT, false)) {
		*why = "a site needs ca, cert and key: the PEM files of the CA the other site's "
		       "certificate chains to, and of this cluster's certificate and key";
		return -EINVAL;
	}
	return 0;
}

static int check_repl_enable(const Tessera__Admin__ReplicationEnable *e, const char **why)
{
	struct tsr_site_layout lay;

	if (check_name(e->volume, why) || check_site_name(e->site, why) ||
	    check_opt_name(e->target_volume, "invalid target volume name: use 1 to 63 of A-Z a-z "
			   "0-9 . _ - starting with a letter or digit", why) ||
	    check_opt_name(e->group, "invalid consistency group name: use 1 to 63 of A-Z a-z "
			   "0-9 . _ - starting with a letter or digit", why))
		return -EINVAL;
	if (e->target_layout != NULL && e->target_layout[0] != '\0' &&
	    (!valid_text(e->target_layout, TSR_SITE_LAYOUT_MAX, false) ||
	     tsr_site_layout_parse(e->target_layout, &lay))) {
		*why = "target layout must be replicas:R (R 1 to 8) or ec:K+M (K 1 to 16, M 1 to 4)";
		return -EINVAL;
	}
	if (e->log_max_bytes != 0 && e->log_max_bytes < MIN_LOG_BYTES) {
		*why = "log_max_bytes must be 0 (256 MiB) or at least 1 MiB";
		return -EINVAL;
	}
	return 0;
}

/* At most one of a volume and a group; with need_one exactly one. */
static int check_vol_or_group(const char *volume, const char *group, bool need_one,
			      const char **why)
{
	bool has_vol = volume != NULL && volume[0] != '\0';
	bool has_group = group != NULL && group[0] != '\0';

	if (has_vol && has_group) {
		*why = "give a volume or a consistency group, not both";
		return -EINVAL;
	}
	if (need_one && !has_vol && !has_group) {
		*why = "give a volume or a consistency group";
		return -EINVAL;
	}
	if (has_vol)
		return check_name(volume, why);
	return check_opt_name(group, "invalid consistency group name: use 1 to 63 of A-Z a-z "
			      "0-9 . _ - starting with a letter or digit", why);
}

static int check_request(const Tessera__Admin__Request *req, const char **why)
{
	if (!valid_text(req->token, TSR_ADMIN_TOKEN_LEN, true)) {
		*why = "malformed token";
		return -EINVAL;
	}
	if (req->via_node[0] != '\0' && !tsr_valid_name(req->via_node)) {
		*why = "malformed via_node";
		return -EINVAL;
	}
	switch (req->command_case) {
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE:
		if (req->volume_create == NULL)
			break;
		return check_name(req->volume_create->name, why) ?:
		       check_clone(req->volume_create, why) ?:
		       check_replication(req->volume_create, why);
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_LIST:
		if (req->volume_list == NULL)
			break;
		return 0;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SHOW:
		if (req->volume_show == NULL)
			break;
		return check_name(req->volume_show->name, why);
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_RESIZE:
		if (req->volume_resize == NULL)
			break;
		/* size 0 with local_copy and check_only: a cluster asking for the
		 * copy's uuid, whatever its size (admin_ops.c op_volume_resize) */
		if (req->volume_resize->local_copy && req->volume_resize->check_only &&
		    req->volume_resize->size == 0)
			return check_name(req->volume_resize->name, why);
		return check_name(req->volume_resize->name, why) ?:
		       check_size(req->volume_resize->size, why);
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DELETE:
		if (req->volume_delete == NULL)
			break;
		return check_name(req->volume_delete->name, why);
	case TESSERA__ADMIN__REQUEST__COMMAND_STATUS:
		if (req->status == NULL)
			break;
		return 0;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ATTACH:
		if (req->volume_attach == NULL)
			break;
		return check_name(req->volume_attach->name, why) ?:
		       check_node(req->volume_attach->node, true, why);
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DETACH:
		if (req->volume_detach == NULL)
			break;
		return check_name(req->volume_detach->name, why);
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_STATUS:
		if (req->volume_status == NULL)
			break;
		return check_name(req->volume_status->name, why);
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SCRUB:
		if (req->volume_scrub == NULL)
			break;
		return check_name(req->volume_scrub->name, why);
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_REPLACE_REPLICA:
		if (req->volume_replace_replica == NULL)
			break;
		return check_name(req->volume_replace_replica->name, why) ?:
		       check_node(req->volume_replace_replica->node, false, why) ?:
		       check_node(req->volume_replace_replica->to, true, why);
	case TESSERA__ADMIN__REQUEST__COMMAND_NODE_LIST:
		if (req->node_list == NULL)
			break;
		return 0;
	case TESSERA__ADMIN__REQUEST__COMMAND_CLUSTER_STATUS:
		if (req->cluster_status == NULL)
			break;
		return 0;
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE:
		if (req->snapshot_create == NULL)
			break;
		/* size: a copy's cut at the record's size, node to node only */
		if (req->snapshot_create->size != 0 && !req->snapshot_create->local_copy) {
			*why = "size is internal (node to node, with local_copy): a snapshot has "
			       "its volume's size";
			return -EINVAL;
		}
		if (req->snapshot_create->epoch_set && !req->snapshot_create->local_copy) {
			*why = "epoch is internal (node to node, with local_copy)";
			return -EINVAL;
		}
		if (req->snapshot_create->size % TSR_BLOCK_SIZE) {
			*why = "size must be a multiple of 4 KiB (4096 bytes)";
			return -EINVAL;
		}
		return check_snap_ref(req->snapshot_create->volume, req->snapshot_create->name, why);
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DELETE:
		if (req->snapshot_delete == NULL)
			break;
		if (req->snapshot_delete->epoch_set && !req->snapshot_delete->local_copy) {
			*why = "epoch is internal (node to node, with local_copy)";
			return -EINVAL;
		}
		return check_snap_ref(req->snapshot_delete->volume, req->snapshot_delete->name, why);
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST:
		if (req->snapshot_list == NULL)
			break;
		return check_name(req->snapshot_list->volume, why);
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_SHOW:
		if (req->snapshot_show == NULL)
			break;
		return check_snap_ref(req->snapshot_show->volume, req->snapshot_show->name, why);
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DIFF: {
		const Tessera__Admin__SnapshotDiff *d = req->snapshot_diff;

		if (d == NULL)
			break;
		if (check_snap_ref(d->volume, d->from, why))
			return -EINVAL;
		if (d->to != NULL && d->to[0] != '\0' && check_snap_name(d->to, why))
			return -EINVAL;
		return 0;
	}
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ROLLBACK:
		if (req->volume_rollback == NULL)
			break;
		if (req->volume_rollback->epoch_set && !req->volume_rollback->local_copy) {
			*why = "epoch is internal (node to node, with local_copy)";
			return -EINVAL;
		}
		return check_snap_ref(req->volume_rollback->volume, req->volume_rollback->snapshot,
				      why);
	case TESSERA__ADMIN__REQUEST__COMMAND_SITE_ADD:
		if (req->site_add == NULL)
			break;
		return check_site_add(req->site_add, why);
	case TESSERA__ADMIN__REQUEST__COMMAND_SITE_REMOVE:
		if (req->site_remove == NULL)
			break;
		return check_site_name(req->site_remove->name, why);
	case TESSERA__ADMIN__REQUEST__COMMAND_SITE_LIST:
		if (req->site_list == NULL)
			break;
		return 0;
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_ENABLE:
		if (req->replication_enable == NULL)
			break;
		return check_repl_enable(req->replication_enable, why);
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_DISABLE:
		if (req->replication_disable == NULL)
			break;
		return check_name(req->replication_disable->volume, why);
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_STATUS:
		if (req->replication_status == NULL)
			break;
		return check_vol_or_group(req->replication_status->volume,
					  req->replication_status->group, false, why);
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_PROMOTE:
		if (req->replication_promote == NULL)
			break;
		return check_vol_or_group(req->replication_promote->volume,
					  req->replication_promote->group, true, why);
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_RESYNC:
		if (req->replication_resync == NULL)
			break;
		return check_name(req->replication_resync->volume, why) ?:
		       check_site_name(req->replication_resync->from_site, why);
	default:
		*why = "no command, or a command this tesserad does not know (version mismatch?)";
		return -EINVAL;
	}
	*why = "malformed command";
	return -EINVAL;
}

static int check_request_msg(const ProtobufCMessage *msg, const char **why)
{
	return check_request((const Tessera__Admin__Request *)msg, why);
}

int tsr_admin_request_parse(const uint8_t *buf, size_t len, Tessera__Admin__Request **out,
			    const char **why)
{
	return tsr_pb_parse(&tessera__admin__request__descriptor, buf, len, TSR_ADMIN_MAX_FRAME,
			    "request", "an admin.proto Request", check_request_msg,
			    (ProtobufCMessage **)out, why);
}

static bool valid_strings(char **v, size_t n)
{
	if (n > MAX_URIS)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!valid_text(v[i], MAX_STRING, false))
			return false;
	return true;
}

static bool valid_snapshot(const Tessera__Admin__Snapshot *s)
{
	return s && tsr_valid_name(s->volume) && tsr_valid_name(s->name) && tsr_valid_uuid(s->uuid) &&
	       s->size % TSR_BLOCK_SIZE == 0 && valid_strings(s->nbd_uris, s->n_nbd_uris);
}

static bool valid_volume(const Tessera__Admin__Volume *v)
{
	if (v == NULL || !tsr_valid_name(v->name) || !tsr_valid_uuid(v->uuid) ||
	    v->size % TSR_BLOCK_SIZE || !valid_strings(v->nbd_uris, v->n_nbd_uris) ||
	    !valid_text(v->failure_domain, 16, true) || !valid_text(v->attached_node, 64, true) ||
	    v->n_copies > TSR_LAYOUT_MAX_COPIES || !valid_text(v->parent_volume, 64, true) ||
	    !valid_text(v->parent_snapshot, 64, true) || v->n_snapshots > MAX_SNAPSHOTS)
		return false;
	/* ec: k+m chunk copies of a valid geometry (all zero for a mirror) */
	if ((v->ec_k || v->ec_m || v->stripe_unit) &&
	    (v->ec_k < 1 || v->ec_k > TSR_EC_MAX_K || v->ec_m < 1 || v->ec_m > TSR_EC_MAX_M ||
	     !tsr_ec_unit_valid(v->stripe_unit) ||
	     (v->n_copies && v->n_copies != (size_t)v->ec_k + v->ec_m)))
		return false;
	/* region_size: 0 (standalone) or a power of 2 in 64 KiB..2 GiB */
	if (v->region_size && (v->region_size < (64u << 10) || v->region_size > (1u << 31) ||
			       (v->region_size & (v->region_size - 1))))
		return false;
	for (size_t i = 0; i < v->n_snapshots; i++)
		if (!valid_snapshot(v->snapshots[i]))
			return false;
	for (size_t i = 0; i < v->n_copies; i++) {
		const Tessera__Admin__Copy *cp = v->copies[i];

		if (cp == NULL || !valid_text(cp->node, 64, false) || !valid_text(cp->state, 32, true))
			return false;
	}
	return true;
}

static bool valid_node(const Tessera__Admin__Node *n)
{
	return n && valid_text(n->id, 64, false) && valid_text(n->address, MAX_STRING, true) &&
	       valid_text(n->zone, MAX_STRING, true) && valid_text(n->site, MAX_STRING, true) &&
	       valid_strings(n->nbd_listeners, n->n_nbd_listeners);
}

static bool valid_site(const Tessera__Admin__Site *s)
{
	return s && tsr_valid_name(s->name) && valid_text(s->address, MAX_STRING, false) &&
	       valid_text(s->ca, MAX_STRING, true) && valid_text(s->cert, MAX_STRING, true) &&
	       valid_text(s->key, MAX_STRING, true) && valid_text(s->peer_name, MAX_STRING, true);
}

static bool valid_replication(const Tessera__Admin__Replication *r)
{
	return r && tsr_valid_name(r->volume) && valid_text(r->role, 16, false) &&
	       valid_text(r->site, 64, true) && valid_text(r->state, 32, true) &&
	       valid_text(r->target_volume, 64, true) && valid_text(r->target_layout, 32, true) &&
	       valid_text(r->group, 64, true) && valid_text(r->last_error, MAX_STRING, true) &&
	       valid_text(r->node, 64, true) && valid_text(r->group_held_by, 256, true);
}

static int check_response(const Tessera__Admin__Response *resp, const char **why)
{
	if (resp->error > 0 || resp->error < -4095) {
		*why = "error code out of range";
		return -EINVAL;
	}
	if (!valid_text(resp->message, MAX_STRING, true)) {
		*why = "malformed message text";
		return -EINVAL;
	}
	if (resp->n_volumes > MAX_VOLUMES) {
		*why = "too many volumes";
		return -EINVAL;
	}
	for (size_t i = 0; i < resp->n_volumes; i++) {
		if (!valid_volume(resp->volumes[i])) {
			*why = "malformed volume";
			return -EINVAL;
		}
	}
	if (resp->n_nodes > MAX_VOLUMES) {
		*why = "too many nodes";
		return -EINVAL;
	}
	for (size_t i = 0; i < resp->n_nodes; i++) {
		if (!valid_node(resp->nodes[i])) {
			*why = "malformed node";
			return -EINVAL;
		}
	}
	if (resp->n_snapshots > MAX_SNAPSHOTS) {
		*why = "too many snapshots";
		return -EINVAL;
	}
	for (size_t i = 0; i < resp->n_snapshots; i++) {
		if (!valid_snapshot(resp->snapshots[i])) {
			*why = "malformed snapshot";
			return -EINVAL;
		}
	}
	if (resp->n_extents > MAX_EXTENTS) {
		*why = "too many extents";
		return -EINVAL;
	}
	for (size_t i = 0; i < resp->n_extents; i++) {
		const Tessera__Admin__Extent *e = resp->extents[i];

		if (e == NULL || e->length == 0 || e->offset % TSR_BLOCK_SIZE ||
		    e->length % TSR_BLOCK_SIZE || e->offset + e->length < e->offset) {
			*why = "malformed extent";
			return -EINVAL;
		}
	}
	if (resp->n_sites > MAX_VOLUMES || resp->n_replications > MAX_VOLUMES) {
		*why = "too many sites or replications";
		return -EINVAL;
	}
	for (size_t i = 0; i < resp->n_sites; i++) {
		if (!valid_site(resp->sites[i])) {
			*why = "malformed site";
			return -EINVAL;
		}
	}
	for (size_t i = 0; i < resp->n_replications; i++) {
		if (!valid_replication(resp->replications[i])) {
			*why = "malformed replication";
			return -EINVAL;
		}
	}
	if (resp->n_nbd_clients > TSR_DETACH_CLIENTS_LISTED ||
	    resp->n_nbd_clients > resp->nbd_clients_total) {
		*why = "too many NBD clients listed";
		return -EINVAL;
	}
	for (size_t i = 0; i < resp->n_nbd_clients; i++) {
		if (!valid_text(resp->nbd_clients[i], TSR_PEER_ADDR_MAX - 1, false)) {
			*why = "malformed NBD client address";
			return -EINVAL;
		}
	}
	if (resp->n_copies_left > TSR_LAYOUT_MAX_COPIES) {
		*why = "too many copies left";
		return -EINVAL;
	}
	for (size_t i = 0; i < resp->n_copies_left; i++) {
		const Tessera__Admin__CopyLeft *cl = resp->copies_left[i];

		if (cl == NULL || !valid_text(cl->node, 64, false) ||
		    !valid_text(cl->reason, MAX_STRING, true)) {
			*why = "malformed copy left";
			return -EINVAL;
		}
	}
	if (resp->volume_status && !valid_volume(resp->volume_status->volume)) {
		*why = "malformed volume status";
		return -EINVAL;
	}
	if (resp->cluster_status && (!valid_text(resp->cluster_status->meta_backend, 64, true) ||
				     !valid_text(resp->cluster_status->meta_node, 64, true))) {
		*why = "malformed cluster status";
		return -EINVAL;
	}
	if (resp->status) {
		const Tessera__Admin__Status *s = resp->status;

		if (!valid_text(s->version, 64, true) || !valid_text(s->data_dir, MAX_STRING, true) ||
		    !valid_text(s->io_backend, 64, true) || !valid_text(s->device, MAX_STRING, true) ||
		    !valid_strings(s->nbd_listeners, s->n_nbd_listeners) ||
		    !valid_strings(s->admin_listeners, s->n_admin_listeners) || s->pid < 0 ||
		    !valid_text(s->node_id, 64, true) ||
		    !valid_text(s->cluster_address, MAX_STRING, true)) {
			*why = "malformed status";
			return -EINVAL;
		}
	}
	return 0;
}

static int check_response_msg(const ProtobufCMessage *msg, const char **why)
{
	return check_response((const Tessera__Admin__Response *)msg, why);
}

int tsr_admin_response_parse(const uint8_t *buf, size_t len, Tessera__Admin__Response **out,
			     const char **why)
{
	return tsr_pb_parse(&tessera__admin__response__descriptor, buf, len, TSR_ADMIN_MAX_FRAME,
			    "response", "an admin.proto Response", check_response_msg,
			    (ProtobufCMessage **)out, why);
}
