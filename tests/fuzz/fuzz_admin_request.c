/*
 * libFuzzer harness for the admin API request parser (engine/admin/admin_msg.c):
 * whatever bytes arrive in a frame, tsr_admin_request_parse either rejects them
 * or returns a request whose every field the command handlers rely on is valid.
 * Built with -DTSR_FUZZ=ON and clang-14; run: fuzz_admin_request -max_total_time=60
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_internal.h"
#include "tessera/ec.h"
#include "tessera/site.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* "" or a valid name */
static int opt_name_ok(const char *s)
{
	return s[0] == '\0' || tsr_valid_name(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Tessera__Admin__Request *req = NULL;
	const char *why = NULL;
	const char *name = NULL;
	uint64_t vol_size = 4096;

	if (tsr_admin_request_parse(data, size, &req, &why) != 0) {
		if (req != NULL || why == NULL)
			abort(); /* a rejection must say why and hand nothing back */
		return 0;
	}
	if (strlen(req->token) > TSR_ADMIN_TOKEN_LEN)
		abort();
	switch (req->command_case) {
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE:
		name = req->volume_create->name;
		/* a clone (from_volume) may give size 0: the source's size */
		vol_size = req->volume_create->from_volume[0] && req->volume_create->size == 0
				   ? 4096 : req->volume_create->size;
		if (req->volume_create->ec[0] != '\0') {
			/* erasure coded: K+M valid, no replicas, min in-sync K..K+M */
			unsigned k, m;

			if (tsr_ec_parse(req->volume_create->ec, &k, &m) != 0 ||
			    req->volume_create->replicas != 0 ||
			    (req->volume_create->min_replicas != 0 &&
			     (req->volume_create->min_replicas < k ||
			      req->volume_create->min_replicas > k + m)) ||
			    (req->volume_create->stripe_unit != 0 &&
			     !tsr_ec_unit_valid(req->volume_create->stripe_unit)))
				abort();
		} else if (req->volume_create->replicas > 8 ||
			   req->volume_create->stripe_unit != 0 ||
			   req->volume_create->min_replicas >
				   (req->volume_create->replicas ? req->volume_create->replicas : 3)) {
			abort();
		}
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SHOW:
		name = req->volume_show->name;
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_RESIZE:
		name = req->volume_resize->name;
		/* size 0 passes only as a node's uuid query: local_copy and
		 * check_only (session 20, admin_msg.c) */
		if (req->volume_resize->size == 0 &&
		    !(req->volume_resize->local_copy && req->volume_resize->check_only))
			abort();
		vol_size = req->volume_resize->size ? req->volume_resize->size : TSR_BLOCK_SIZE;
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DELETE:
		name = req->volume_delete->name;
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_LIST:
		if (req->volume_list == NULL)
			abort();
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_STATUS:
		if (req->status == NULL)
			abort();
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ATTACH:
		name = req->volume_attach->name;
		if (req->volume_attach->node[0] && !tsr_valid_name(req->volume_attach->node))
			abort();
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DETACH:
		name = req->volume_detach->name;
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_STATUS:
		name = req->volume_status->name;
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SCRUB:
		name = req->volume_scrub->name;
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_REPLACE_REPLICA:
		name = req->volume_replace_replica->name;
		if (!tsr_valid_name(req->volume_replace_replica->node) ||
		    (req->volume_replace_replica->to[0] &&
		     !tsr_valid_name(req->volume_replace_replica->to)))
			abort();
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_NODE_LIST:
		if (req->node_list == NULL)
			abort();
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_CLUSTER_STATUS:
		if (req->cluster_status == NULL)
			abort();
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE:
		if (req->snapshot_create == NULL)
			abort();
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DELETE:
		if (req->snapshot_delete == NULL)
			abort();
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST:
		name = req->snapshot_list->volume;
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_SHOW:
		if (req->snapshot_show == NULL)
			abort();
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DIFF:
		if (req->snapshot_diff == NULL)
			abort();
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ROLLBACK:
		if (req->volume_rollback == NULL)
			abort();
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_SITE_ADD: {
		const Tessera__Admin__SiteAdd *a = req->site_add;

		/* a name, HOST:PORT, three PEM paths, a peer name without spaces */
		if (!tsr_valid_name(a->name) || strchr(a->address, ':') == NULL ||
		    a->address[0] == ':' || a->ca[0] == '\0' || a->cert[0] == '\0' ||
		    a->key[0] == '\0' || strchr(a->peer_name, ' ') != NULL)
			abort();
		break;
	}
	case TESSERA__ADMIN__REQUEST__COMMAND_SITE_REMOVE:
		if (!tsr_valid_name(req->site_remove->name))
			abort();
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_SITE_LIST:
		if (req->site_list == NULL)
			abort();
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_ENABLE: {
		const Tessera__Admin__ReplicationEnable *e = req->replication_enable;
		struct tsr_site_layout lay;

		name = e->volume;
		if (!tsr_valid_name(e->site) || !opt_name_ok(e->target_volume) ||
		    !opt_name_ok(e->group) ||
		    (e->target_layout[0] && tsr_site_layout_parse(e->target_layout, &lay)) ||
		    (e->log_max_bytes != 0 && e->log_max_bytes < (1u << 20)))
			abort();
		break;
	}
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_DISABLE:
		name = req->replication_disable->volume;
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_STATUS: {
		const Tessera__Admin__ReplicationStatusGet *g = req->replication_status;

		/* at most one of volume and group, each "" or valid */
		if (!opt_name_ok(g->volume) || !opt_name_ok(g->group) ||
		    (g->volume[0] && g->group[0]))
			abort();
		break;
	}
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_PROMOTE: {
		const Tessera__Admin__ReplicationPromote *p = req->replication_promote;

		/* exactly one of volume and group */
		if (!opt_name_ok(p->volume) || !opt_name_ok(p->group) ||
		    !p->volume[0] == !p->group[0])
			abort();
		break;
	}
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_RESYNC:
		name = req->replication_resync->volume;
		if (!tsr_valid_name(req->replication_resync->from_site))
			abort();
		break;
	default:
		abort(); /* the parser lets no other case through */
	}
	if (name && !tsr_valid_name(name))
		abort();
	if (vol_size == 0 || vol_size % TSR_BLOCK_SIZE)
		abort();
	tessera__admin__request__free_unpacked(req, NULL);
	return 0;
}
