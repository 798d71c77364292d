/*
 * Unit tests of the mirror layout with a dirty-region size over the largest
 * single request (TSR_MAX_IO, 32 MiB for READ/WRITE and a store read; 64 MiB
 * for a peer SUMS): a 128 MiB region, a 160 MiB volume (region 0 is 128 MiB,
 * region 1 32 MiB).  The resync's region copies, its compare (full resync,
 * a replaced copy) and the make-up of missed snapshots must go in pieces;
 * before they did, a copy that came back stayed out of sync (every piece of
 * work failed -EINVAL, the SUMS -EINVAL / -EMSGSIZE).  Same harness as
 * mirror_ut.c (mirror_env.h): three nodes, real stores, peer servers on
 * 127.0.0.1.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mirror_env.h"

#define MiB    (1024ull * 1024)
#define VOL    (160 * MiB)
#define REGION (128u << 20)

static int setup(void **state)
{
	return env_setup(
	    state, &(struct env_sizes){.vol = VOL, .model = VOL, .file = VOL, .buf = 8 * MiB});
}

static int teardown(void **state)
{
	return env_teardown(state);
}

static void opts_init(struct env *e, struct tsr_mirror_opts *o, bool local)
{
	env_mirror_opts(e, o, VOL, local);
	o->region_size = REGION;
}

/* Data in both regions, beyond 32 and 64 MiB into region 0. */
static void write_pattern(struct env *e, uint64_t seed)
{
	assert_int_equal(lwrite(e, 0, 2 * MiB, seed, 0), 0);
	assert_int_equal(lwrite(e, 40 * MiB, MiB, seed + 1, 0), 0);
	assert_int_equal(lwrite(e, 100 * MiB, 3 * MiB, seed + 2, 0), 0);
	assert_int_equal(lwrite(e, 150 * MiB, MiB, seed + 3, 0), 0);
}

static void scrub_clean(struct env *e)
{
	struct tsr_layout_status s;

	scrub_clean_status(e, &s);
	/* the resync's copy buffers (since the layout opened): one piece
	 * (MIRROR_IO_PIECE, 32 MiB) at most, not a 128 MiB region; one copy in
	 * flight at a time (a region over the in-flight bound goes alone) */
	assert_true(s.copy_buf_bytes_max > 0);
	assert_true(s.copy_buf_bytes_max <= 32 * MiB);
}

/*
 * A copy away while a snapshot is cut and region 0 is written: on its return
 * the snapshot is made up (sums of a 128 MiB region) and the dirty regions
 * copied; every copy then holds the snapshot's image and the head.
 */
static void missed_snapshot(void **state, bool local)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	uint8_t *at_away = malloc(VOL);

	opts_init(e, &o, local);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	write_pattern(e, 1);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s1"), 0);
	node_stop(&e->nodes[2]);
	write_pattern(e, 10);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "away"), 0);
	memcpy(at_away, e->model, VOL);
	assert_int_equal(lwrite(e, 90 * MiB, 2 * MiB, 20, 0), 0); /* after the cut */
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);

	node_run(&e->nodes[2], 12);
	tsr_layout_copy_returned(e->l, 2, e->nodes[2].address);
	assert_true(wait_status(e, all_in_sync, 60000));
	for (unsigned n = 0; n < 3; n++)
		assert_store_snap_equals(e, e->nodes[n].store, e->nodes[n].node_id, "away", at_away,
					 VOL);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	for (unsigned n = 0; n < 3; n++)
		assert_file_equals(&e->nodes[n], e->file, e->model, VOL);
	scrub_clean(e);
	free(at_away);
}

static void test_missed_snapshot_local(void **state)
{
	missed_snapshot(state, true);
}

static void test_missed_snapshot_remote(void **state)
{
	missed_snapshot(state, false);
}

/*
 * A copy replaced (coordinator with no copy, snapshots read from remote
 * sessions): the new copy's snapshots made up, then its head compared
 * (head_imaged: SUMS of 128 MiB regions) and only what differs copied.
 */
static void test_replace_compare(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_copy nc = {.state = TSR_COPY_OUT_OF_SYNC, .full_resync = true};
	uint8_t *at_s1 = malloc(VOL);
	struct node n3;

	opts_init(e, &o, false);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	write_pattern(e, 1);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s1"), 0);
	memcpy(at_s1, e->model, VOL);
	assert_int_equal(lwrite(e, 70 * MiB, MiB, 2, 0), 0);
	node_stop(&e->nodes[2]);

	assert_int_equal(node_init(&n3, 3, VOL), 0);
	snprintf(nc.node_id, sizeof(nc.node_id), "%s", n3.node_id);
	snprintf(nc.address, sizeof(nc.address), "%s", n3.address);
	nc.missed = "c s1\n";
	assert_int_equal(tsr_layout_replace_copy(e->l, 2, &nc), 0);
	assert_true(wait_status(e, all_in_sync, 60000));
	assert_store_snap_equals(e, n3.store, "node3", "s1", at_s1, VOL);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	assert_file_equals(&n3, e->file, e->model, VOL);
	scrub_clean(e);
	tsr_layout_destroy(e->l);
	e->l = NULL;
	node_fini(&n3);
	free(at_s1);
}

/* An existing copy with every region dirty (lost bitmap): compared at create. */
static void test_full_resync_compare(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;

	opts_init(e, &o, true);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	write_pattern(e, 1);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	tsr_layout_destroy(e->l);
	e->l = NULL;
	/* copy 2 differs in a block 100 MiB in, behind the layout */
	fill(e->buf, BS, 99, 0);
	assert_int_equal(node_store_write(&e->nodes[2], 101 * MiB, BS, e->buf), 0);

	opts_init(e, &o, true);
	o.epoch = 2;
	o.copies[2].state = TSR_COPY_OUT_OF_SYNC;
	o.copies[2].full_resync = true;
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_true(wait_status(e, all_in_sync, 60000));
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	for (unsigned n = 0; n < 3; n++)
		assert_file_equals(&e->nodes[n], e->file, e->model, VOL);
	scrub_clean(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_missed_snapshot_local, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_missed_snapshot_remote, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_replace_compare, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_full_resync_compare, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
