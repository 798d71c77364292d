/*
 * Unit tests of VolumeRollback.epoch/epoch_set (proto/admin.proto, session
 * 15): a detached volume's rollback of one store copy fenced by the volume
 * record's epoch at the rollback's start (cluster/snapshot.c).  The parser
 * (admin_msg.c) takes an epoch with local_copy only; the server (admin_ops.c
 * admin_rollback_fenced) refuses -ESTALE, saying the volume was attached
 * meanwhile and that the copy is not rolled back, when the copy's epoch
 * (raised by an attach's OPEN) is past it, and leaves the copy as it was
 * (no unfinished-rollback mark: it still opens); at an epoch not below the
 * copy's, or without epoch_set (what a handling node of an earlier build
 * sends), it rolls back as before.  A copy below the fence is raised to it.
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

static void test_parse_epoch(void **state)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeRollback vr = TESSERA__ADMIN__VOLUME_ROLLBACK__INIT;
	const char *why = NULL;

	(void)state;
	vr.volume = "v";
	vr.snapshot = "s1";
	vr.local_copy = true;
	vr.epoch_set = true;
	vr.epoch = 0; /* a real epoch: a volume never attached */
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ROLLBACK;
	req.volume_rollback = &vr;
	assert_int_equal(admin_fixture_parse(&req, &why), 0);
	vr.local_copy = false; /* a client's rollback: no epoch */
	assert_int_equal(admin_fixture_parse(&req, &why), -EINVAL);
	assert_non_null(strstr(why, "internal"));
	vr.epoch_set = false;
	assert_int_equal(admin_fixture_parse(&req, &why), 0);
}

static int setup(void **state)
{
	return admin_fixture_setup(state, "admin_rollfence_ut");
}

/* The local_copy rollback of v to s0, fenced at epoch when set; the reply
 * (to free). */
static Tessera__Admin__Response *rollback(struct fixture *f, bool epoch_set, uint64_t epoch)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeRollback vr = TESSERA__ADMIN__VOLUME_ROLLBACK__INIT;

	vr.volume = "v";
	vr.snapshot = "s0";
	vr.local_copy = true;
	vr.epoch_set = epoch_set;
	vr.epoch = epoch;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ROLLBACK;
	req.volume_rollback = &vr;
	return admin_fixture_call(f, &req);
}

/* The copy still opens (no unfinished rollback) and its epoch is epoch. */
static void assert_copy(struct fixture *f, uint64_t epoch)
{
	struct tsr_svol *svol = NULL;

	assert_int_equal(tsr_store_vol_open(f->store, "v", &svol), 0);
	assert_int_equal(tsr_svol_epoch(svol), epoch);
	tsr_svol_put(svol);
}

static void test_fence(void **state)
{
	struct fixture *f = *state;
	Tessera__Admin__Response *r;

	assert_int_equal(tsr_store_vol_create(f->store, "v", 8 * MIB, NULL), 0);
	assert_int_equal(tsr_store_snap_create(f->store, "v", "s0", NULL), 0);
	/* a copy below the fence: rolled back, raised to it */
	assert_int_equal(tsr_store_vol_set_epoch(f->store, "v", 3), 0);
	r = rollback(f, true, 9);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_copy(f, 9);

	/* an attach raised it past the fence: refused, nothing done */
	assert_int_equal(tsr_store_vol_set_epoch(f->store, "v", 12), 0);
	r = rollback(f, true, 11);
	assert_int_equal(r->error, -ESTALE);
	assert_non_null(strstr(r->message, "attached meanwhile"));
	assert_non_null(strstr(r->message, "not rolled back"));
	tessera__admin__response__free_unpacked(r, NULL);
	assert_copy(f, 12);

	/* at the copy's epoch, above it, and unfenced: as before */
	r = rollback(f, true, 12);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_copy(f, 12);
	r = rollback(f, false, 0); /* no epoch_set: not checked (an earlier build) */
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_copy(f, 12);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_epoch),
	    cmocka_unit_test_setup_teardown(test_fence, setup, admin_fixture_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
