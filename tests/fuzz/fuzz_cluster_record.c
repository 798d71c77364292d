/*
 * libFuzzer harness for the cluster's record decoders
 * (engine/cluster/records.c: rec_node_decode, rec_volume_decode,
 * rec_attach_decode; replication.c: repl_site_decode, repl_record_decode),
 * which turn a value read back from the metadata store
 * (proto/cluster.proto) into a record.  The input is the value, in its own
 * heap copy (ASan sees overreads), given to all five decoders.
 * Checks: no crash, no leak; an accepted record holds what the cluster code
 * uses later without checking again:
 *   node    id a valid name, address non-empty, at most 64 NBD listeners,
 *           each non-empty, every string printable;
 *   volume  name valid, UUID "" or 8-4-4-4-12 hex (the admin reply parser
 *           refuses anything else), size a 4 KiB multiple in 1..1 PiB,
 *           1..8 copies (ec: k+m of at most 20), min_replicas 1..copies
 *           (ec: at least k), a known failure domain, an erasure-coding
 *           geometry all zero or k 1..16, m 1..4, valid stripe unit, copies
 *           on distinct valid node ids in a known state, parent and
 *           coordinator "" or valid names, and rec_copy_size neither zero
 *           nor wrapped (k chunk volumes hold the volume);
 *   attach  node id a valid name;
 *   site    (replication.c repl_site_decode) name valid, address, CA,
 *           certificate, key and peer name non-empty printable text;
 *   repl    (repl_record_decode) volume, site and target volume valid
 *           names, target layout one tsr_site_layout_parse takes, group and
 *           resync_from "" or valid names, stream non-zero, the reason and
 *           the compression printable text.
 * An accepted record packs and decodes again (fuzz_pb.h says when not).
 * Built with -DTSR_FUZZ=ON and clang-14; run:
 *   fuzz_cluster_record -max_total_time=60 tests/fuzz/corpus/fuzz_cluster_record
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/internal.h"
#include "fuzz_pb.h"
#include "tessera/ec.h"
#include "tessera/site.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_opt_name(const char *s)
{
	if (s[0] != '\0' && !tsr_valid_name(s))
		abort();
}

/* Pack r and decode it again with decode: it must be accepted again. */
static void round_trip(const ProtobufCMessage *r, void *(*decode)(const struct tsr_meta_kv *),
		       void (*release)(void *))
{
	struct tsr_meta_kv kv = {.key = "fuzz/again"};
	size_t len;
	void *again;

	if (pb_has_unknown(r))
		return;
	len = protobuf_c_message_get_packed_size(r);
	kv.value = malloc(len ? len : 1);
	if (kv.value == NULL)
		return;
	kv.value_len = protobuf_c_message_pack(r, kv.value);
	again = decode(&kv);
	if (again == NULL)
		abort();
	release(again);
	free(kv.value);
}

static void *node_decode(const struct tsr_meta_kv *kv)
{
	return rec_node_decode(kv);
}
static void node_free(void *r)
{
	tessera__cluster__node_record__free_unpacked(r, NULL);
}
static void *volume_decode(const struct tsr_meta_kv *kv)
{
	return rec_volume_decode(kv);
}
static void volume_free(void *r)
{
	tessera__cluster__volume_record__free_unpacked(r, NULL);
}
static void *attach_decode(const struct tsr_meta_kv *kv)
{
	return rec_attach_decode(kv);
}
static void attach_free(void *r)
{
	tessera__cluster__attach_record__free_unpacked(r, NULL);
}

static void *site_decode(const struct tsr_meta_kv *kv)
{
	return repl_site_decode(kv);
}
static void site_free(void *r)
{
	tessera__cluster__site_record__free_unpacked(r, NULL);
}
static void *repl_decode(const struct tsr_meta_kv *kv)
{
	return repl_record_decode(kv);
}
static void repl_free(void *r)
{
	tessera__cluster__replication_record__free_unpacked(r, NULL);
}

static void check_site(const Tessera__Cluster__SiteRecord *r)
{
	if (!tsr_valid_name(r->name))
		abort();
	fz_check_text(r->address, 4095, false);
	fz_check_text(r->ca, 4095, false);
	fz_check_text(r->cert, 4095, false);
	fz_check_text(r->key, 4095, false);
	fz_check_text(r->peer_name, 4095, false);
}

static void check_repl(const Tessera__Cluster__ReplicationRecord *r)
{
	struct tsr_site_layout lay;

	if (!tsr_valid_name(r->volume) || !tsr_valid_name(r->site) ||
	    !tsr_valid_name(r->target_volume) || tsr_site_layout_parse(r->target_layout, &lay) ||
	    r->stream == 0)
		abort();
	check_opt_name(r->group);
	check_opt_name(r->resync_from);
	fz_check_text(r->demoted_why, 4095, true);
	fz_check_text(r->compress, 4095, true);
}

static void check_node(const Tessera__Cluster__NodeRecord *r)
{
	if (!tsr_valid_name(r->id) || r->n_nbd_listeners > 64)
		abort();
	fz_check_text(r->address, 255, false);
	fz_check_text(r->zone, 255, true);
	fz_check_text(r->site, 255, true);
	for (size_t i = 0; i < r->n_nbd_listeners; i++)
		fz_check_text(r->nbd_listeners[i], 255, false);
}

static void check_volume(const Tessera__Cluster__VolumeRecord *r)
{
	enum tsr_failure_domain fd;
	uint64_t copy_size;

	if (!tsr_valid_name(r->name) || r->size == 0 || r->size % TSR_BLOCK_SIZE ||
	    r->size > (1ull << 50) || r->n_copies == 0 || r->min_replicas == 0 ||
	    r->min_replicas > r->n_copies || tsr_failure_domain_parse(r->failure_domain, &fd))
		abort();
	fz_check_uuid(r->uuid);
	check_opt_name(r->parent_volume);
	check_opt_name(r->parent_snapshot);
	check_opt_name(r->coordinator);
	if (r->ec_k == 0) {
		if (r->ec_m || r->stripe_unit || r->n_copies > TSR_MIRROR_MAX_COPIES)
			abort();
	} else if (r->ec_k > TSR_EC_MAX_K || r->ec_m < 1 || r->ec_m > TSR_EC_MAX_M ||
		   !tsr_ec_unit_valid(r->stripe_unit) || r->n_copies != (size_t)r->ec_k + r->ec_m ||
		   r->min_replicas < r->ec_k || r->n_copies > TSR_LAYOUT_MAX_COPIES) {
		abort();
	}
	for (size_t i = 0; i < r->n_copies; i++) {
		if (!tsr_valid_name(r->copies[i]->node_id) ||
		    (unsigned)r->copies[i]->state > TESSERA__CLUSTER__COPY_STATE__RESYNCING ||
		    rec_state_name(r->copies[i]->state) == NULL)
			abort();
		for (size_t k = 0; k < i; k++)
			if (strcmp(r->copies[i]->node_id, r->copies[k]->node_id) == 0)
				abort();
	}
	/* one store copy: the volume (mirror), or (ec) a chunk volume of one unit
	 * per stripe, the stripes counted without wrapping */
	copy_size = rec_copy_size(r);
	if (r->ec_k == 0) {
		if (copy_size != r->size)
			abort();
	} else {
		uint64_t width = (uint64_t)r->ec_k * r->stripe_unit;
		uint64_t stripes = r->size / width + (r->size % width != 0);

		if (copy_size == 0 || copy_size != stripes * r->stripe_unit)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool quiet;
	struct tsr_meta_kv kv = {.key = "fuzz/record"};
	Tessera__Cluster__NodeRecord *n;
	Tessera__Cluster__VolumeRecord *v;
	Tessera__Cluster__AttachRecord *a;
	Tessera__Cluster__SiteRecord *st;
	Tessera__Cluster__ReplicationRecord *rp;

	if (!quiet) {
		tsr_log_set_level(TSR_LOG_ERROR); /* "malformed record: ignored" each run */
		quiet = true;
	}
	kv.value = malloc(size ? size : 1);
	if (kv.value == NULL)
		return 0;
	memcpy(kv.value, data, size);
	kv.value_len = size;
	if ((n = rec_node_decode(&kv)) != NULL) {
		check_node(n);
		round_trip(&n->base, node_decode, node_free);
		node_free(n);
	}
	if ((v = rec_volume_decode(&kv)) != NULL) {
		check_volume(v);
		round_trip(&v->base, volume_decode, volume_free);
		volume_free(v);
	}
	if ((a = rec_attach_decode(&kv)) != NULL) {
		if (!tsr_valid_name(a->node_id))
			abort();
		round_trip(&a->base, attach_decode, attach_free);
		attach_free(a);
	}
	if ((st = repl_site_decode(&kv)) != NULL) {
		check_site(st);
		round_trip(&st->base, site_decode, site_free);
		site_free(st);
	}
	if ((rp = repl_record_decode(&kv)) != NULL) {
		check_repl(rp);
		round_trip(&rp->base, repl_decode, repl_free);
		repl_free(rp);
	}
	free(kv.value);
	return 0;
}
