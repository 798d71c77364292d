/*
 * Unit tests of SnapshotCreate.size (proto/admin.proto): the node-to-node
 * (local_copy) cut of one store copy at the volume record's size, which
 * engine/cluster/snapshot.c sends every copy of a detached volume, so that a
 * copy grown past the record still cuts that size.  The parser
 * (admin_msg.c) takes a size with local_copy only, in whole 4 KiB blocks;
 * the server (admin_ops.c) cuts the store copy at that size, refuses a size
 * larger than the copy with a message naming the copy's size, and cuts at
 * the copy's size when the size is 0 (what a coordinator of an earlier
 * build sends).  A real store in a temporary directory under /var/tmp, the
 * server's libev loop on a thread of its own, the blocking client here.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "admin_fixture.h"

#include "admin/admin_internal.h"
#include "tessera/vol.h"

#define MIB (1024ull * 1024)

/* ---- the parser ---------------------------------------------------------- */

static int parse_create(const Tessera__Admin__SnapshotCreate *sc, uint64_t *size_out,
			const char **why)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT, *out = NULL;
	uint8_t *frame;
	size_t len;
	int ret;

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE;
	req.snapshot_create = (Tessera__Admin__SnapshotCreate *)sc;
	assert_int_equal(admin_frame_pack(&req.base, &frame, &len), 0);
	ret = tsr_admin_request_parse(frame + 4, len - 4, &out, why);
	free(frame);
	if (ret == 0) {
		*size_out = out->snapshot_create->size;
		tessera__admin__request__free_unpacked(out, NULL);
	} else {
		assert_null(out);
	}
	return ret;
}

static void test_parse_size(void **state)
{
	Tessera__Admin__SnapshotCreate sc = TESSERA__ADMIN__SNAPSHOT_CREATE__INIT;
	const char *why = NULL;
	uint64_t size = 1;

	(void)state;
	sc.volume = "v";
	sc.name = "s1";
	sc.local_copy = true;
	sc.size = 8 * MIB;
	assert_int_equal(parse_create(&sc, &size, &why), 0);
	assert_int_equal(size, 8 * MIB);
	sc.size = 0; /* the copy's own size, as before the field */
	assert_int_equal(parse_create(&sc, &size, &why), 0);
	assert_int_equal(size, 0);
	sc.size = 8 * MIB + 512; /* not whole blocks */
	assert_int_equal(parse_create(&sc, &size, &why), -EINVAL);
	assert_non_null(strstr(why, "multiple of 4 KiB"));
	sc.local_copy = false; /* a client's create: a snapshot has its volume's size */
	sc.size = 8 * MIB;
	assert_int_equal(parse_create(&sc, &size, &why), -EINVAL);
	assert_non_null(strstr(why, "internal"));
}

/* ---- the server ---------------------------------------------------------- */

static int setup(void **state)
{
	return admin_fixture_setup(state, "admin_snapsize_ut");
}

/* The local_copy SnapshotCreate of v@snap at size; the reply (to free). */
static Tessera__Admin__Response *cut(struct fixture *f, const char *snap, uint64_t size)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotCreate sc = TESSERA__ADMIN__SNAPSHOT_CREATE__INIT;
	Tessera__Admin__Response *resp = NULL;
	struct tsr_admin_client *c = NULL;

	sc.volume = "v";
	sc.name = (char *)snap;
	sc.local_copy = true;
	sc.size = size;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE;
	req.snapshot_create = &sc;
	assert_int_equal(tsr_admin_connect_unix(f->sock, &c), 0);
	assert_int_equal(tsr_admin_call(c, &req, 10000, &resp), 0);
	assert_non_null(resp);
	tsr_admin_close(c);
	return resp;
}

/* A copy of 16 MiB whose record says 8 MiB: the cut has 8 MiB. */
static void test_cut_sized(void **state)
{
	struct fixture *f = *state;
	struct tsr_snap_info si;
	Tessera__Admin__Response *r;

	assert_int_equal(tsr_store_vol_create(f->store, "v", 16 * MIB, NULL), 0);
	r = cut(f, "s1", 8 * MIB);
	assert_int_equal(r->error, 0);
	assert_int_equal(r->n_snapshots, 1);
	assert_int_equal(r->snapshots[0]->size, 8 * MIB);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s1", &si), 0);
	assert_int_equal(si.size, 8 * MIB);

	/* 0: the copy's own size (a coordinator of an earlier build) */
	r = cut(f, "s2", 0);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s2", &si), 0);
	assert_int_equal(si.size, 16 * MIB);

	/* the copy's size exactly */
	r = cut(f, "s3", 16 * MIB);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s3", &si), 0);
	assert_int_equal(si.size, 16 * MIB);
}

/* A size larger than the copy: refused, the message says the copy's size,
 * nothing cut. */
static void test_cut_larger_than_copy(void **state)
{
	struct fixture *f = *state;
	struct tsr_snap_info si;
	Tessera__Admin__Response *r;

	assert_int_equal(tsr_store_vol_create(f->store, "v", 8 * MIB, NULL), 0);
	r = cut(f, "big", 16 * MIB);
	assert_int_equal(r->error, -EINVAL);
	assert_non_null(strstr(r->message, "this node's copy is 8.0 MiB"));
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "big", &si), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_size),
	    cmocka_unit_test_setup_teardown(test_cut_sized, setup, admin_fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_cut_larger_than_copy, setup, admin_fixture_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
