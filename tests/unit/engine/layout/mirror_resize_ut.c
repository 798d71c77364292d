/*
 * Unit tests of the mirror layout's online growth (tsr_layout_resize,
 * engine/layout/mirror.c mirror_resize): a 3-copy layout of 8 MiB grown to
 * 24 MiB while in use.  Same harness as mirror_ut.c (mirror_env.h): three
 * nodes, real stores, peer servers on 127.0.0.1.
 *  - test_grow: refused past the old end before the grow, accepted after;
 *    the bitmap files' headers name the new size; a copy away while the new
 *    range is written is resynced with what changed only; every copy holds
 *    the model, scrub clean;
 *  - test_grow_refused: a shrink (-EINVAL); a copy away (-EBUSY naming it);
 *    nothing changed (size, bitmap headers);
 *  - test_grow_missed_bitmap: the recovery rule of a grow recorded but not
 *    reached (crash between the record and the layout): a copy that is not
 *    in sync, whose bitmap header names the old size, is resynced in full
 *    comparing sums (a block that differs behind the layout is found, and
 *    far less than the volume is copied).
 *  - test_grow_page_write_in_flight: a grow that reallocates a copy's bitmap
 *    page array (2 GiB + 64 KiB with 64 KiB regions) while a page write is in
 *    flight (held 300 ms by a fault spec); under ASan a use-after-free of the
 *    write's iovec when it lived in the array.
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

#define MiB (1024ull * 1024)
#define OLD (8 * MiB)
#define NEW (24 * MiB)
#define BIG (2048 * MiB + 64 * 1024) /* with 64 KiB regions: a second bitmap page */

/* slow: every write of the home worker's io (the bitmap pages' among them)
 * completes 300 ms late, so a page write is in flight that long */
static int setup_env(void **state, bool slow, uint64_t max)
{
	return env_setup(state,
			 &(struct env_sizes){.vol = OLD,
					     .model = max,
					     .file = NEW,
					     .buf = 4 * MiB,
					     .home_fault = slow ? "write:1+:delay=300" : NULL});
}

static int setup(void **state)
{
	return setup_env(state, false, NEW);
}

static int setup_slow(void **state)
{
	return setup_env(state, true, BIG);
}

static int teardown(void **state)
{
	return env_teardown(state);
}

static void opts_init(struct env *e, struct tsr_mirror_opts *o, uint64_t size)
{
	env_mirror_opts(e, o, size, true);
}

static bool copy2_away(const struct tsr_layout_status *s)
{
	return s->copies[2].state != TSR_COPY_IN_SYNC;
}

static void scrub_clean(struct env *e)
{
	struct tsr_layout_status s;

	scrub_clean_status(e, &s);
	assert_int_equal(s.scrub_total_bytes, tsr_layout_size(e->l));
}

/* The volume size in the header of node idx's bitmap file (offset 16). */
static uint64_t bitmap_header_size(struct env *e, unsigned idx)
{
	char path[PATH_MAX];
	uint64_t size = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/%s.%s.bitmap", e->state_dir, VOLNAME,
		 e->nodes[idx].node_id);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &size, 8, 16), 8);
	close(fd);
	return size;
}

static void grow_stores(struct env *e, uint64_t size)
{
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(tsr_store_vol_resize(e->nodes[i].store, VOLNAME, size), 0);
}

static void test_grow(void **state)
{
	struct env *e = *state;
	struct tsr_layout_status s;
	struct tsr_mirror_opts o;
	uint64_t before;
	char why[256];

	opts_init(e, &o, OLD);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, MiB, 1, 0), 0);
	assert_int_equal(lwrite(e, OLD - MiB, MiB, 2, 0), 0);
	/* past the old end: refused before the grow */
	fill(e->buf, BS, 3, OLD);
	assert_int_equal(ldo(e->home, e->l, D_WRITE, OLD, BS, e->buf, 0), -ENOSPC);
	assert_int_equal(tsr_layout_resize(e->l, NEW, true, why, sizeof(why)), 0);
	assert_int_equal(tsr_layout_size(e->l), OLD);

	grow_stores(e, NEW);
	assert_int_equal(tsr_layout_resize(e->l, NEW, false, why, sizeof(why)), 0);
	assert_int_equal(tsr_layout_size(e->l), NEW);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(bitmap_header_size(e, i), NEW);
	/* a second call to the same size changes nothing */
	assert_int_equal(tsr_layout_resize(e->l, NEW, false, why, sizeof(why)), 0);
	assert_int_equal(lwrite(e, OLD, MiB, 4, 0), 0);
	assert_int_equal(lwrite(e, NEW - MiB, MiB, 5, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_READ, NEW - MiB, MiB, e->buf, 0), 0);
	assert_memory_equal(e->buf, e->model + NEW - MiB, MiB);

	/* copy 2 away while the grown range (and the old one) is written; the
	 * flush first: regions written since the last flush go into the bitmap
	 * of a copy that fails too (mirror.c mark_unflushed) */
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	node_stop(&e->nodes[2]);
	assert_int_equal(lwrite(e, 12 * MiB, 2 * MiB, 6, 0), 0);
	assert_int_equal(lwrite(e, 2 * MiB, MiB, 7, 0), 0);
	assert_true(wait_status(e, copy2_away, 10000));
	tsr_layout_get_status(e->l, &s);
	before = s.resync_bytes_copied;
	node_run(&e->nodes[2], 12);
	tsr_layout_copy_returned(e->l, 2, e->nodes[2].address);
	assert_true(wait_status(e, all_in_sync, 60000));
	tsr_layout_get_status(e->l, &s);
	/* the 3 regions written while away, not the volume */
	assert_true(s.resync_bytes_copied - before >= 3 * MiB);
	assert_true(s.resync_bytes_copied - before <= 3 * MiB);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	for (unsigned n = 0; n < 3; n++)
		assert_file_equals(&e->nodes[n], e->file, e->model, NEW);
	scrub_clean(e);
}

static void test_grow_refused(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	char why[256];

	opts_init(e, &o, OLD);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, MiB, 1, 0), 0);
	assert_int_equal(tsr_layout_resize(e->l, OLD - MiB, true, why, sizeof(why)), -EINVAL);
	assert_int_equal(tsr_layout_resize(e->l, OLD + 1, false, why, sizeof(why)), -EINVAL);
	node_stop(&e->nodes[2]);
	assert_int_equal(lwrite(e, MiB, MiB, 2, 0), 0);
	assert_true(wait_status(e, copy2_away, 10000));
	grow_stores(e, NEW);
	assert_int_equal(tsr_layout_resize(e->l, NEW, true, why, sizeof(why)), -EBUSY);
	assert_non_null(strstr(why, "node2"));
	assert_int_equal(tsr_layout_resize(e->l, NEW, false, why, sizeof(why)), -EBUSY);
	assert_non_null(strstr(why, "node2"));
	assert_int_equal(tsr_layout_size(e->l), OLD);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(bitmap_header_size(e, i), OLD);
	fill(e->buf, BS, 3, OLD);
	assert_int_equal(ldo(e->home, e->l, D_WRITE, OLD, BS, e->buf, 0), -ENOSPC);
	/* back: the grow goes through */
	node_run(&e->nodes[2], 12);
	tsr_layout_copy_returned(e->l, 2, e->nodes[2].address);
	assert_true(wait_status(e, all_in_sync, 60000));
	assert_int_equal(tsr_layout_resize(e->l, NEW, false, why, sizeof(why)), 0);
	assert_int_equal(lwrite(e, OLD, MiB, 4, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	for (unsigned n = 0; n < 3; n++)
		assert_file_equals(&e->nodes[n], e->file, e->model, NEW);
}

static void test_grow_missed_bitmap(void **state)
{
	struct env *e = *state;
	struct tsr_layout_status s;
	struct tsr_mirror_opts o;

	opts_init(e, &o, OLD);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	for (uint64_t off = 0; off < OLD; off += 2 * MiB)
		assert_int_equal(lwrite(e, off, 2 * MiB, 1 + off, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	tsr_layout_destroy(e->l);
	e->l = NULL;
	/* the copies and the record grew, the layout (bitmap files) did not */
	grow_stores(e, NEW);
	/* copy 2 differs in one block behind the layout, below the old end */
	fill(e->buf, BS, 99, 0);
	assert_int_equal(node_store_write(&e->nodes[2], 5 * MiB, BS, e->buf), 0);

	opts_init(e, &o, NEW);
	o.epoch = 2;
	o.copies[2].state = TSR_COPY_OUT_OF_SYNC;
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_true(wait_status(e, all_in_sync, 60000));
	tsr_layout_get_status(e->l, &s);
	/* compared by sums: the one differing block's piece, not 24 MiB */
	print_message("resync copied %llu bytes\n", (unsigned long long)s.resync_bytes_copied);
	assert_true(s.resync_bytes_copied > 0);
	assert_true(s.resync_bytes_copied < 2 * MiB);
	assert_int_equal(bitmap_header_size(e, 2), NEW);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	for (unsigned n = 0; n < 3; n++)
		assert_file_equals(&e->nodes[n], e->file, e->model, NEW);
	scrub_clean(e);
}

/*
 * The grow reallocates a copy's bitmap page array while one of its page
 * writes is in flight (held 300 ms by the fault spec): the write's iovec
 * must not live in that array (the io layer reads it until completion).
 * Fails under ASan (heap-use-after-free in io.c's iovec walk) when it did.
 */
static void test_grow_page_write_in_flight(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	char why[256];

	grow_stores(e, BIG); /* copies larger than the layout: harmless */
	opts_init(e, &o, OLD);
	o.region_size = 64 << 10;
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, MiB, 1, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	/* copy 2 away over a write (its bits set), back: the resync clears them
	 * with page writes no one waits for */
	node_stop(&e->nodes[2]);
	assert_int_equal(lwrite(e, 2 * MiB, MiB, 2, 0), 0);
	assert_true(wait_status(e, copy2_away, 10000));
	node_run(&e->nodes[2], 12);
	tsr_layout_copy_returned(e->l, 2, e->nodes[2].address);
	assert_true(wait_status(e, all_in_sync, 60000));
	/* at once: copy 2's page array goes from 1 to 2 pages */
	assert_int_equal(tsr_layout_resize(e->l, BIG, false, why, sizeof(why)), 0);
	usleep(1000 * 1000); /* the held page writes complete */
	assert_int_equal(lwrite(e, BIG - MiB, MiB, 3, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_READ, BIG - MiB, MiB, e->buf, 0), 0);
	assert_memory_equal(e->buf, e->model + BIG - MiB, MiB);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_grow, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_grow_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_grow_missed_bitmap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_grow_page_write_in_flight, setup_slow, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
