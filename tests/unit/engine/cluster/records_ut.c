/*
 * Unit tests of the record decoders (engine/cluster/records.c): a value read
 * back from the metadata store becomes a record only when every field the
 * cluster code uses later is in range.  Valid node, volume (mirror, ec) and
 * attach records decode; each corrupt variant gives NULL: garbage bytes, a
 * bad name, a UUID the admin reply parser would refuse, a size past the
 * store's 1 PiB (rec_copy_size would wrap), an invalid coordinator, two
 * copies on one node, a broken erasure-coding geometry, a copy state out of
 * range, min_replicas past the copies, a copy's missed snapshot operation
 * that is not "c NAME" / "d NAME" or more than 1024 of them.  Replication records
 * (replication.c repl_record_decode): valid ones decode (an unknown
 * compression too: the source refuses it at start with a message); a
 * resync_from that is not a site name, or text with control bytes, does not.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/internal.h"
#include "tessera/ec.h"

#define UUID "0f8e2a6c-1b3d-4c5e-8f70-9a1b2c3d4e5f"

/* Pack msg into kv (malloc'd value). */
static void pack(const ProtobufCMessage *msg, struct tsr_meta_kv *kv, const char *key)
{
	size_t len = protobuf_c_message_get_packed_size(msg);

	memset(kv, 0, sizeof(*kv));
	kv->key = (char *)key;
	kv->value = malloc(len ? len : 1);
	assert_non_null(kv->value);
	kv->value_len = protobuf_c_message_pack(msg, kv->value);
}

struct vol {
	Tessera__Cluster__VolumeRecord rec;
	Tessera__Cluster__CopyRecord copy[6];
	Tessera__Cluster__CopyRecord *copies[6];
	char node[6][8];
};

/* A valid mirror record of 3 copies on n1..n3 (ec: 4+2 on n1..n6). */
static void vol_init(struct vol *v, bool ec)
{
	unsigned n = ec ? 6 : 3;

	memset(v, 0, sizeof(*v));
	tessera__cluster__volume_record__init(&v->rec);
	v->rec.name = "v1";
	v->rec.uuid = UUID;
	v->rec.size = 1ull << 30;
	v->rec.replicas = n;
	v->rec.min_replicas = ec ? 4 : 2;
	v->rec.failure_domain = "node";
	v->rec.coordinator = "n1";
	for (unsigned i = 0; i < n; i++) {
		tessera__cluster__copy_record__init(&v->copy[i]);
		snprintf(v->node[i], sizeof(v->node[i]), "n%u", i + 1);
		v->copy[i].node_id = v->node[i];
		v->copies[i] = &v->copy[i];
	}
	v->rec.n_copies = n;
	v->rec.copies = v->copies;
	if (ec) {
		v->rec.ec_k = 4;
		v->rec.ec_m = 2;
		v->rec.stripe_unit = TSR_EC_DEFAULT_UNIT;
	}
}

/* Does v decode?  (The decoded record is checked against v when it does.) */
static bool vol_decodes(const struct vol *v)
{
	Tessera__Cluster__VolumeRecord *r;
	struct tsr_meta_kv kv;

	pack(&v->rec.base, &kv, "vol/v1");
	r = rec_volume_decode(&kv);
	free(kv.value);
	if (r == NULL)
		return false;
	assert_string_equal(r->name, v->rec.name);
	assert_int_equal(r->size, v->rec.size);
	assert_int_equal(r->n_copies, v->rec.n_copies);
	for (size_t i = 0; i < r->n_copies; i++)
		assert_string_equal(r->copies[i]->node_id, v->rec.copies[i]->node_id);
	tessera__cluster__volume_record__free_unpacked(r, NULL);
	return true;
}

static void test_volume_valid(void **state)
{
	struct vol v;

	(void)state;
	vol_init(&v, false);
	assert_true(vol_decodes(&v));
	v.rec.uuid = "";
	v.rec.coordinator = "";
	assert_true(vol_decodes(&v)); /* no uuid yet, never attached */
	v.rec.size = 1ull << 50;
	assert_true(vol_decodes(&v)); /* the store's largest */
	vol_init(&v, true);
	assert_true(vol_decodes(&v));
}

static void test_volume_garbage(void **state)
{
	uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x01};
	struct tsr_meta_kv kv = {.key = "vol/x", .value = junk, .value_len = sizeof(junk)};

	(void)state;
	assert_null(rec_volume_decode(&kv));
	assert_null(rec_node_decode(&kv));
	assert_null(rec_attach_decode(&kv));
}

static void test_volume_bad_uuid(void **state)
{
	static const char *bad[] = {
	    "not-a-uuid",
	    UUID "0",
	    "0f8e2a6c-1b3d-4c5e-8f70-9a1b2c3d4e5", /* one short */
	    "0f8e2a6c+1b3d-4c5e-8f70-9a1b2c3d4e5f",
	    "0f8e2a6c-1b3d-4c5e-8f70-9a1b2c3d4e5g",
	};
	struct vol v;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		vol_init(&v, false);
		v.rec.uuid = (char *)bad[i];
		assert_false(vol_decodes(&v));
	}
}

static void test_volume_too_large(void **state)
{
	struct vol v;

	(void)state;
	vol_init(&v, true);
	/* tsr_ec_chunk_volume_size would wrap to a tiny chunk volume */
	v.rec.size = UINT64_MAX - 4095;
	assert_false(vol_decodes(&v));
	v.rec.size = (1ull << 50) + 4096;
	assert_false(vol_decodes(&v));
	vol_init(&v, false);
	v.rec.size = (1ull << 50) + 4096;
	assert_false(vol_decodes(&v));
}

static void test_volume_bad_coordinator(void **state)
{
	struct vol v;

	(void)state;
	vol_init(&v, false);
	v.rec.coordinator = "-n1";
	assert_false(vol_decodes(&v));
	v.rec.coordinator = "n1\x01";
	assert_false(vol_decodes(&v));
}

static void test_volume_copies_distinct(void **state)
{
	struct vol v;

	(void)state;
	vol_init(&v, false);
	v.copy[2].node_id = v.node[0];
	assert_false(vol_decodes(&v));
	vol_init(&v, true);
	v.copy[5].node_id = v.node[3];
	assert_false(vol_decodes(&v)); /* two chunk positions on one node */
}

static void test_volume_bad_fields(void **state)
{
	struct vol v;

	(void)state;
	vol_init(&v, false);
	v.rec.name = "";
	assert_false(vol_decodes(&v));
	vol_init(&v, false);
	v.rec.min_replicas = 4;
	assert_false(vol_decodes(&v));
	vol_init(&v, false);
	v.copy[1].state = (Tessera__Cluster__CopyState)7;
	assert_false(vol_decodes(&v));
	vol_init(&v, false);
	v.rec.size = 4097;
	assert_false(vol_decodes(&v));
	vol_init(&v, false);
	v.rec.failure_domain = "rack";
	assert_false(vol_decodes(&v));
	vol_init(&v, true);
	v.rec.ec_m = 3; /* k+m != copies */
	assert_false(vol_decodes(&v));
	vol_init(&v, true);
	v.rec.stripe_unit = 3000;
	assert_false(vol_decodes(&v));
	vol_init(&v, true);
	v.rec.min_replicas = 3; /* fewer than k */
	assert_false(vol_decodes(&v));
	vol_init(&v, false);
	v.rec.stripe_unit = 4096; /* a mirror with an ec field */
	assert_false(vol_decodes(&v));
}

/* CopyRecord.missed_snaps: "c NAME" / "d NAME", valid names, at most 1024. */
static void test_volume_missed_snaps(void **state)
{
	static char *ok[] = {"c s1", "d s1", "c s1", "c a.b-c_9"};
	static char *bad[][1] = {{"x s1"}, {"c"}, {"c "}, {"cs1"}, {"c -s1"}, {"c s1\n"},
				 {"c s 1"}, {"d s1\x01"}};
	char longname[80], *lng[1] = {longname};
	char **many;
	struct vol v;

	(void)state;
	vol_init(&v, false);
	v.copy[2].state = TESSERA__CLUSTER__COPY_STATE__OUT_OF_SYNC;
	v.copy[2].missed_snaps = ok;
	v.copy[2].n_missed_snaps = 4;
	assert_true(vol_decodes(&v));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v.copy[2].missed_snaps = bad[i];
		v.copy[2].n_missed_snaps = 1;
		assert_false(vol_decodes(&v));
	}
	/* a name of 63 bytes is a snapshot name, 64 is not */
	memset(longname, 'a', sizeof(longname));
	longname[0] = 'c';
	longname[1] = ' ';
	longname[2 + 63] = '\0';
	v.copy[2].missed_snaps = lng;
	assert_true(vol_decodes(&v));
	longname[2 + 63] = 'a';
	longname[2 + 64] = '\0';
	assert_false(vol_decodes(&v));
	many = calloc(1025, sizeof(*many));
	assert_non_null(many);
	for (size_t i = 0; i < 1025; i++)
		many[i] = "d s1";
	v.copy[2].missed_snaps = many;
	v.copy[2].n_missed_snaps = 1024;
	assert_true(vol_decodes(&v));
	v.copy[2].n_missed_snaps = 1025;
	assert_false(vol_decodes(&v));
	free(many);
}

static void test_replication(void **state)
{
	Tessera__Cluster__ReplicationRecord r = TESSERA__CLUSTER__REPLICATION_RECORD__INIT, *got;
	struct tsr_meta_kv kv;

	(void)state;
	r.volume = "db";
	r.site = "dr";
	r.target_volume = "db";
	r.target_layout = "ec:4+2";
	r.stream = 42;
	r.resync_from = "dr";
	r.compress = "lz4";
	pack(&r.base, &kv, "repl/db");
	got = repl_record_decode(&kv);
	assert_non_null(got);
	assert_string_equal(got->resync_from, "dr");
	tessera__cluster__replication_record__free_unpacked(got, NULL);
	free(kv.value);
	r.compress = "brotli"; /* a newer build's: kept, refused at the source's start */
	pack(&r.base, &kv, "repl/db");
	got = repl_record_decode(&kv);
	assert_non_null(got);
	tessera__cluster__replication_record__free_unpacked(got, NULL);
	free(kv.value);
	r.compress = "lz\x1b[2J";
	pack(&r.base, &kv, "repl/db");
	assert_null(repl_record_decode(&kv));
	free(kv.value);
	r.compress = "";
	r.resync_from = "dr\nsite";
	pack(&r.base, &kv, "repl/db");
	assert_null(repl_record_decode(&kv));
	free(kv.value);
	r.resync_from = "";
	r.stream = 0;
	pack(&r.base, &kv, "repl/db");
	assert_null(repl_record_decode(&kv));
	free(kv.value);
}

static void test_node_and_attach(void **state)
{
	Tessera__Cluster__NodeRecord n = TESSERA__CLUSTER__NODE_RECORD__INIT, *rn;
	Tessera__Cluster__AttachRecord a = TESSERA__CLUSTER__ATTACH_RECORD__INIT, *ra;
	char *listeners[] = {"tcp:127.0.0.1:10809"};
	struct tsr_meta_kv kv;

	(void)state;
	n.id = "n1";
	n.address = "127.0.0.1:7000";
	n.n_nbd_listeners = 1;
	n.nbd_listeners = listeners;
	pack(&n.base, &kv, "node/n1");
	rn = rec_node_decode(&kv);
	free(kv.value);
	assert_non_null(rn);
	assert_string_equal(rn->address, "127.0.0.1:7000");
	tessera__cluster__node_record__free_unpacked(rn, NULL);
	n.address = "";
	pack(&n.base, &kv, "node/n1");
	assert_null(rec_node_decode(&kv));
	free(kv.value);

	a.node_id = "n2";
	pack(&a.base, &kv, "attach/v1");
	ra = rec_attach_decode(&kv);
	free(kv.value);
	assert_non_null(ra);
	assert_string_equal(ra->node_id, "n2");
	tessera__cluster__attach_record__free_unpacked(ra, NULL);
	a.node_id = "";
	pack(&a.base, &kv, "attach/v1");
	assert_null(rec_attach_decode(&kv));
	free(kv.value);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_volume_valid),
	    cmocka_unit_test(test_volume_garbage),
	    cmocka_unit_test(test_volume_bad_uuid),
	    cmocka_unit_test(test_volume_too_large),
	    cmocka_unit_test(test_volume_bad_coordinator),
	    cmocka_unit_test(test_volume_copies_distinct),
	    cmocka_unit_test(test_volume_bad_fields),
	    cmocka_unit_test(test_volume_missed_snaps),
	    cmocka_unit_test(test_node_and_attach),
	    cmocka_unit_test(test_replication),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
