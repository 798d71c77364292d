/*
 * Unit tests of SnapshotCreate.epoch/epoch_set and SnapshotDelete.epoch/
 * epoch_set (proto/admin.proto): a detached volume's cut (or delete) on one
 * store copy fenced by the volume record's epoch at the request's start
 * (cluster/snapshot.c).  The parser (admin_msg.c) takes an epoch with
 * local_copy only; the server (admin_ops.c) refuses -ESTALE, with a message
 * saying the volume was attached meanwhile, when the copy's epoch (raised
 * by an attach's OPEN) is past it, cuts nothing then, and cuts as before at
 * an epoch not below the copy's or without epoch_set (what a handling node
 * of an earlier build sends).
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

static void test_parse_epoch(void **state)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotCreate sc = TESSERA__ADMIN__SNAPSHOT_CREATE__INIT;
	Tessera__Admin__SnapshotDelete sd = TESSERA__ADMIN__SNAPSHOT_DELETE__INIT;
	const char *why = NULL;

	(void)state;
	sc.volume = "v";
	sc.name = "s1";
	sc.local_copy = true;
	sc.epoch_set = true;
	sc.epoch = 0; /* a real epoch: a volume never attached */
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE;
	req.snapshot_create = &sc;
	assert_int_equal(admin_fixture_parse(&req, &why), 0);
	sc.local_copy = false; /* a client's create: no epoch */
	assert_int_equal(admin_fixture_parse(&req, &why), -EINVAL);
	assert_non_null(strstr(why, "internal"));
	sd.volume = "v";
	sd.name = "s1";
	sd.local_copy = true;
	sd.epoch_set = true;
	sd.epoch = 7;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DELETE;
	req.snapshot_delete = &sd;
	assert_int_equal(admin_fixture_parse(&req, &why), 0);
	sd.local_copy = false;
	assert_int_equal(admin_fixture_parse(&req, &why), -EINVAL);
	assert_non_null(strstr(why, "internal"));
}

/* ---- the server ---------------------------------------------------------- */

static int setup(void **state)
{
	return admin_fixture_setup(state, "admin_cutfence_ut");
}

/* The local_copy create (or delete) of v@snap, fenced at epoch when set;
 * the reply (to free). */
static Tessera__Admin__Response *call(struct fixture *f, bool create, const char *snap,
				      bool epoch_set, uint64_t epoch)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotCreate sc = TESSERA__ADMIN__SNAPSHOT_CREATE__INIT;
	Tessera__Admin__SnapshotDelete sd = TESSERA__ADMIN__SNAPSHOT_DELETE__INIT;

	if (create) {
		sc.volume = "v";
		sc.name = (char *)snap;
		sc.local_copy = true;
		sc.epoch_set = epoch_set;
		sc.epoch = epoch;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE;
		req.snapshot_create = &sc;
	} else {
		sd.volume = "v";
		sd.name = (char *)snap;
		sd.local_copy = true;
		sd.epoch_set = epoch_set;
		sd.epoch = epoch;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DELETE;
		req.snapshot_delete = &sd;
	}
	return admin_fixture_call(f, &req);
}

/* A copy opened at epoch 12 (an attach meanwhile): a create or delete
 * fenced below it is refused, nothing changed; at 12 or above, or unfenced,
 * it acts. */
static void test_fence(void **state)
{
	struct fixture *f = *state;
	struct tsr_snap_info si;
	Tessera__Admin__Response *r;

	assert_int_equal(tsr_store_vol_create(f->store, "v", 8 * MIB, NULL), 0);
	/* never opened: epoch 0 passes */
	r = call(f, true, "s0", true, 0);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s0", &si), 0);

	assert_int_equal(tsr_store_vol_set_epoch(f->store, "v", 12), 0);
	r = call(f, true, "s1", true, 11);
	assert_int_equal(r->error, -ESTALE);
	assert_non_null(strstr(r->message, "attached meanwhile"));
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s1", &si), -ENOENT);
	r = call(f, true, "s1", true, 12);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s1", &si), 0);
	r = call(f, true, "s2", false, 0); /* no epoch_set: not checked (an earlier build) */
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s2", &si), 0);

	r = call(f, false, "s0", true, 11);
	assert_int_equal(r->error, -ESTALE);
	assert_non_null(strstr(r->message, "attached meanwhile"));
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s0", &si), 0);
	r = call(f, false, "s0", true, 13);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s0", &si), -ENOENT);
	r = call(f, false, "s1", false, 0);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s1", &si), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_epoch),
	    cmocka_unit_test_setup_teardown(test_fence, setup, admin_fixture_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
