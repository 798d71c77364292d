/*
 * libFuzzer harness for the admin API reply parser (engine/admin/admin_msg.c,
 * tsr_admin_response_parse): what the tessera CLI, tesserad's forwarding of
 * a command to another node and tessera-csi read from tesserad.  Whatever
 * the bytes, the parser rejects them (-EINVAL or -EMSGSIZE with a reason,
 * nothing handed back) or returns a reply whose fields the printers in
 * tools/tessera/ and the cluster code rely on: error in [-4095, 0];
 * volumes with valid names, a UUID or "", 4 KiB multiple sizes, at most
 * TSR_LAYOUT_MAX_COPIES copies each naming a node, and an erasure-coding
 * geometry that is all zero or k 1..16, m 1..4, a valid stripe unit and
 * k+m copies when it lists any; snapshots and extents 4 KiB aligned, an
 * extent non-empty and not wrapping past 2^64; nodes with an id; sites and
 * replications named; a status with pid >= 0; at most
 * TSR_LAYOUT_MAX_COPIES copies left (a volume delete's), each naming a
 * node of 1..64 bytes and a reason of at most 4096.  The input is parsed from
 * its own heap copy (ASan sees overreads), with a why and without (the
 * CLI passes NULL).  An accepted reply packs and parses again (fuzz_pb.h
 * says when not).
 * Built with -DTSR_FUZZ=ON and clang-14; run:
 *   fuzz_admin_response -max_total_time=60 tests/fuzz/corpus/fuzz_admin_response
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_internal.h"
#include "fuzz_pb.h"
#include "tessera/ec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_snapshot(const Tessera__Admin__Snapshot *s)
{
	if (!tsr_valid_name(s->volume) || !tsr_valid_name(s->name) || s->size % TSR_BLOCK_SIZE)
		abort();
	fz_check_uuid(s->uuid);
}

static void check_volume(const Tessera__Admin__Volume *v)
{
	if (!tsr_valid_name(v->name) || v->size % TSR_BLOCK_SIZE ||
	    v->n_copies > TSR_LAYOUT_MAX_COPIES)
		abort();
	fz_check_uuid(v->uuid);
	if (v->ec_k || v->ec_m || v->stripe_unit) {
		if (v->ec_k < 1 || v->ec_k > TSR_EC_MAX_K || v->ec_m < 1 ||
		    v->ec_m > TSR_EC_MAX_M || !tsr_ec_unit_valid(v->stripe_unit) ||
		    (v->n_copies && v->n_copies != (size_t)v->ec_k + v->ec_m))
			abort();
	}
	for (size_t i = 0; i < v->n_copies; i++)
		fz_check_text(v->copies[i]->node, SIZE_MAX, false);
	for (size_t i = 0; i < v->n_snapshots; i++)
		check_snapshot(v->snapshots[i]);
}

static void check(const Tessera__Admin__Response *resp)
{
	if (resp->error > 0 || resp->error < -4095)
		abort();
	fz_check_text(resp->message, SIZE_MAX, true);
	for (size_t i = 0; i < resp->n_volumes; i++)
		check_volume(resp->volumes[i]);
	for (size_t i = 0; i < resp->n_nodes; i++)
		fz_check_text(resp->nodes[i]->id, SIZE_MAX, false);
	for (size_t i = 0; i < resp->n_snapshots; i++)
		check_snapshot(resp->snapshots[i]);
	for (size_t i = 0; i < resp->n_extents; i++) {
		const Tessera__Admin__Extent *e = resp->extents[i];

		if (e->length == 0 || e->offset % TSR_BLOCK_SIZE || e->length % TSR_BLOCK_SIZE ||
		    e->offset > UINT64_MAX - e->length)
			abort();
	}
	for (size_t i = 0; i < resp->n_sites; i++)
		if (!tsr_valid_name(resp->sites[i]->name))
			abort();
	for (size_t i = 0; i < resp->n_replications; i++)
		if (!tsr_valid_name(resp->replications[i]->volume))
			abort();
	if (resp->volume_status)
		check_volume(resp->volume_status->volume);
	if (resp->status && resp->status->pid < 0)
		abort();
	/* a delete's copies left: print_deleted packs each node and reason */
	if (resp->n_copies_left > TSR_LAYOUT_MAX_COPIES)
		abort();
	for (size_t i = 0; i < resp->n_copies_left; i++) {
		fz_check_text(resp->copies_left[i]->node, 64, false);
		fz_check_text(resp->copies_left[i]->reason, 4096, true);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Tessera__Admin__Response *resp = NULL, *again = NULL;
	uint8_t *copy = malloc(size ? size : 1);
	uint8_t *frame = NULL;
	const char *why = NULL;
	size_t len = 0;
	int ret;

	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	ret = tsr_admin_response_parse(copy, size, &resp, &why);
	if (ret != 0) {
		/* a rejection says why and hands nothing back */
		if (resp != NULL || why == NULL || (ret != -EINVAL && ret != -EMSGSIZE))
			abort();
		if (tsr_admin_response_parse(copy, size, &resp, NULL) != ret || resp != NULL)
			abort();
		free(copy);
		return 0;
	}
	/* valid_volume in admin_msg.c: a volume_status carries its volume */
	if (resp->volume_status && resp->volume_status->volume == NULL)
		abort();
	check(resp);
	if (tsr_admin_response_parse(copy, size, &again, NULL) != 0)
		abort();
	tessera__admin__response__free_unpacked(again, NULL);
	again = NULL;
	if (pb_has_unknown(&resp->base))
		goto out;
	if (admin_frame_pack(&resp->base, &frame, &len) != 0)
		goto out; /* -ENOMEM */
	if (admin_frame_len(frame) != len - 4 ||
	    tsr_admin_response_parse(frame + 4, len - 4, &again, &why) != 0 ||
	    again->error != resp->error || again->n_volumes != resp->n_volumes ||
	    again->n_extents != resp->n_extents || again->n_nodes != resp->n_nodes ||
	    again->n_copies_left != resp->n_copies_left ||
	    strcmp(again->message, resp->message) != 0)
		abort();
	tessera__admin__response__free_unpacked(again, NULL);
	free(frame);
out:
	tessera__admin__response__free_unpacked(resp, NULL);
	free(copy);
	return 0;
}
