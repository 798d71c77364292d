/*
 * Unit tests of the mirror layout's online growth (tsr_layout_resize,
 * engine/layout/mirror.c mirror_resize): a 3-copy layout of 8 MiB grown to
 * 24 MiB while in use.  Same harness as mirror_ut.c (mirror_test.h): three
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

#include "mirror_test.h"

#define MiB (1024ull * 1024)
#define OLD (8 * MiB)
#define NEW (24 * MiB)
#define BIG (2048 * MiB + 64 * 1024) /* with 64 KiB regions: a second bitmap page */

struct env {
	struct node nodes[3];
	struct tsr_worker *home;
	char state_dir[512];
	uint8_t *model; /* what the volume must contain (NEW bytes) */
	uint8_t *file;  /* a node's data file */
	uint8_t *buf;
	struct tsr_layout *l;
};

/* slow: every write of the home worker's io (the bitmap pages' among them)
 * completes 300 ms late, so a page write is in flight that long */
static int setup_env(void **state, bool slow, uint64_t max)
{
	struct env *e = calloc(1, sizeof(*e));

	for (unsigned i = 0; i < 3; i++)
		if (node_init(&e->nodes[i], i, OLD) < 0)
			return -1;
	if (slow) {
		struct tsr_io_opts io = {.kind = TSR_IO_AUTO, .fault_spec = "write:1+:delay=300"};

		if (tsr_worker_start(1, &io, &e->home) != 0)
			return -1;
	} else {
		e->home = start_worker_or_skip(1);
	}
	if (scratch_dir(e->state_dir, sizeof(e->state_dir)) < 0)
		return -1;
	e->model = calloc(1, max);
	e->file = malloc(NEW);
	e->buf = tsr_alloc_aligned(4 * MiB);
	log_reset();
	*state = e;
	return 0;
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
	struct env *e = *state;

	tsr_layout_destroy(e->l);
	while (__atomic_load_n(&g_log.hooks_inflight, __ATOMIC_SEQ_CST) > 0)
		usleep(1000);
	tsr_worker_stop(e->home);
	for (unsigned i = 0; i < 3; i++)
		node_fini(&e->nodes[i]);
	rm_rf(e->state_dir);
	free(e->model);
	free(e->file);
	tsr_free_aligned(e->buf);
	free(e);
	return 0;
}

static void opts_init(struct env *e, struct tsr_mirror_opts *o, uint64_t size)
{
	memset(o, 0, sizeof(*o));
	o->name = VOLNAME;
	o->size = size;
	o->epoch = 1;
	o->store = e->nodes[0].store;
	o->state_dir = e->state_dir;
	o->home = e->home;
	o->node_id = "node0";
	o->token = TOKEN;
	o->n_copies = 3;
	o->min_replicas = 2;
	o->peer_timeout_ms = 5000;
	o->write_wait_ms = 5000;
	o->hooks.set_copy_state = test_set_copy_state;
	for (unsigned i = 0; i < 3; i++) {
		struct tsr_layout_copy *c = &o->copies[i];

		snprintf(c->node_id, sizeof(c->node_id), "%s", e->nodes[i].node_id);
		snprintf(c->address, sizeof(c->address), "%s", e->nodes[i].address);
		c->local = i == 0;
		c->state = TSR_COPY_IN_SYNC;
	}
}

static int lwrite(struct env *e, uint64_t off, uint32_t len, uint64_t seed)
{
	fill(e->buf, len, seed, off);
	memcpy(e->model + off, e->buf, len);
	return ldo(e->home, e->l, D_WRITE, off, len, e->buf, 0);
}

static void assert_file_equals(struct node *n, uint8_t *file, const uint8_t *want, uint64_t size)
{
	assert_int_equal(node_read_all(n, file, size), 0);
	for (uint64_t b = 0; b < size / BS; b++)
		if (memcmp(file + b * BS, want + b * BS, BS) != 0) {
			print_message("%s differs at block %llu\n", n->node_id,
				      (unsigned long long)b);
			fail();
		}
}

static bool wait_status(struct env *e, bool (*pred)(const struct tsr_layout_status *), unsigned ms)
{
	struct tsr_layout_status s;
	uint64_t end = mono_ms() + ms;

	do {
		tsr_layout_get_status(e->l, &s);
		if (pred(&s))
			return true;
		usleep(10000);
	} while (mono_ms() < end);
	return false;
}

static bool copy2_away(const struct tsr_layout_status *s)
{
	return s->copies[2].state != TSR_COPY_IN_SYNC;
}

static void scrub_clean(struct env *e)
{
	struct tsr_layout_status s;

	assert_int_equal(tsr_layout_scrub_start(e->l, false), 0);
	assert_true(wait_status(e, scrub_finished, 60000));
	tsr_layout_get_status(e->l, &s);
	assert_int_equal(s.scrub_mismatches, 0);
	assert_int_equal(s.scrub_unrepaired, 0);
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
	assert_int_equal(lwrite(e, 0, MiB, 1), 0);
	assert_int_equal(lwrite(e, OLD - MiB, MiB, 2), 0);
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
	assert_int_equal(lwrite(e, OLD, MiB, 4), 0);
	assert_int_equal(lwrite(e, NEW - MiB, MiB, 5), 0);
	assert_int_equal(ldo(e->home, e->l, D_READ, NEW - MiB, MiB, e->buf, 0), 0);
	assert_memory_equal(e->buf, e->model + NEW - MiB, MiB);

	/* copy 2 away while the grown range (and the old one) is written; the
	 * flush first: regions written since the last flush go into the bitmap
	 * of a copy that fails too (mirror.c mark_unflushed) */
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	node_stop(&e->nodes[2]);
	assert_int_equal(lwrite(e, 12 * MiB, 2 * MiB, 6), 0);
	assert_int_equal(lwrite(e, 2 * MiB, MiB, 7), 0);
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
	assert_int_equal(lwrite(e, 0, MiB, 1), 0);
	assert_int_equal(tsr_layout_resize(e->l, OLD - MiB, true, why, sizeof(why)), -EINVAL);
	assert_int_equal(tsr_layout_resize(e->l, OLD + 1, false, why, sizeof(why)), -EINVAL);
	node_stop(&e->nodes[2]);
	assert_int_equal(lwrite(e, MiB, MiB, 2), 0);
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
	assert_int_equal(lwrite(e, OLD, MiB, 4), 0);
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
		assert_int_equal(lwrite(e, off, 2 * MiB, 1 + off), 0);
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
	assert_int_equal(lwrite(e, 0, MiB, 1), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	/* copy 2 away over a write (its bits set), back: the resync clears them
	 * with page writes no one waits for */
	node_stop(&e->nodes[2]);
	assert_int_equal(lwrite(e, 2 * MiB, MiB, 2), 0);
	assert_true(wait_status(e, copy2_away, 10000));
	node_run(&e->nodes[2], 12);
	tsr_layout_copy_returned(e->l, 2, e->nodes[2].address);
	assert_true(wait_status(e, all_in_sync, 60000));
	/* at once: copy 2's page array goes from 1 to 2 pages */
	assert_int_equal(tsr_layout_resize(e->l, BIG, false, why, sizeof(why)), 0);
	usleep(1000 * 1000); /* the held page writes complete */
	assert_int_equal(lwrite(e, BIG - MiB, MiB, 3), 0);
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
