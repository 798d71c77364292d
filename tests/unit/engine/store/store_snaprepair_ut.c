/*
 * tsr_svol_snap_repair (engine/store/repair.c): a block of a snapshot's
 * image rewritten changes that image only; older snapshots that read the
 * block through the repaired layer, newer ones and the head keep their
 * bytes; the repair survives a reopen and a delete of the repaired snapshot
 * (its blocks merged into the older layer); bad calls are refused.
 *
 * The history used (16 blocks of data, volume of 1 MiB):
 *   A over blocks 0..15, cut s1; B over 0..7, cut s2; C over 4..5.
 *   s1 layer holds 0..7 (A), s2 layer holds 4..5 (B).
 *   images: s1 = A 0..15; s2 = B 0..7, A 8..15; head = B 0..3, C 4..5,
 *   B 6..7, A 8..15.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "store_test.h"

#define VOLSZ (1024 * 1024)

struct env {
	struct store_env se;
	struct tsr_io *io;
	uint8_t *buf;
};

static int setup(void **state)
{
	struct store_env *se;
	struct env *e = calloc(1, sizeof(*e));

	if (e == NULL || store_env_setup((void **)&se) != 0)
		return -1;
	e->se = *se;
	free(se);
	e->io = make_io(TSR_IO_AUTO, NULL);
	e->buf = tsr_alloc_aligned(16 * BS);
	if (e->io == NULL || e->buf == NULL)
		return -1;
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	tsr_io_destroy(e->io);
	tsr_free_aligned(e->buf);
	tsr_store_close(e->se.store);
	rm_rf(e->se.dir);
	free(e);
	return 0;
}

static void history(struct env *e)
{
	struct tsr_svol *v = NULL;

	assert_int_equal(tsr_store_vol_create(e->se.store, "v", VOLSZ, NULL), 0);
	assert_int_equal(tsr_store_vol_open(e->se.store, "v", &v), 0);
	fill(e->buf, 16 * BS, 'A', 0);
	assert_int_equal(swrite(v, e->io, 0, 16 * BS, e->buf, TSR_WRITE_FUA), 0);
	assert_int_equal(tsr_store_snap_create(e->se.store, "v", "s1", NULL), 0);
	fill(e->buf, 8 * BS, 'B', 0);
	assert_int_equal(swrite(v, e->io, 0, 8 * BS, e->buf, TSR_WRITE_FUA), 0);
	assert_int_equal(tsr_store_snap_create(e->se.store, "v", "s2", NULL), 0);
	fill(e->buf, 2 * BS, 'C', 4 * BS);
	assert_int_equal(swrite(v, e->io, 4 * BS, 2 * BS, e->buf, TSR_WRITE_FUA), 0);
	assert_int_equal(sflush(v, e->io), 0);
	tsr_svol_put(v);
}

/* Block b of the image of v@snap (NULL: the head) is filled with seed (as
 * written at offset off_seed), or with the repair pattern x when seed is 0. */
static void assert_block(struct env *e, const char *snap, uint64_t b, uint64_t seed,
			 uint64_t off_seed)
{
	struct tsr_svol *v = NULL;

	if (snap)
		assert_int_equal(tsr_store_snap_open(e->se.store, "v", snap, &v), 0);
	else
		assert_int_equal(tsr_store_vol_open(e->se.store, "v", &v), 0);
	assert_int_equal(sread(v, e->io, b * BS, BS, e->buf), 0);
	if (!is_filled(e->buf, BS, seed, off_seed)) {
		print_message("v@%s block %llu: not pattern %llu\n", snap ? snap : "head",
			      (unsigned long long)b, (unsigned long long)seed);
		fail();
	}
	tsr_svol_put(v);
}

/* The bytes of every image at block b: s1, s2 and the head. */
static void assert_images(struct env *e, uint64_t b, uint64_t s1, uint64_t s2, uint64_t head)
{
	assert_block(e, "s1", b, s1, b * BS);
	assert_block(e, "s2", b, s2, b * BS);
	assert_block(e, NULL, b, head, b * BS);
}

static int repair(struct env *e, const char *snap, uint64_t b, uint32_t n, uint64_t seed)
{
	struct tsr_svol *v = NULL;
	int ret;

	assert_int_equal(tsr_store_snap_open(e->se.store, "v", snap, &v), 0);
	fill(e->buf, n * BS, seed, b * BS);
	ret = tsr_svol_snap_repair(v, 0, b * BS, n * BS, e->buf);
	tsr_svol_put(v);
	return ret;
}

static void test_repair_rule(void **state)
{
	struct env *e = *state;

	history(e);
	assert_images(e, 10, 'A', 'A', 'A');
	assert_images(e, 4, 'A', 'B', 'C');

	/* s2 block 10: read from the head by s2 and s1 alike; s1 keeps A (pinned) */
	assert_int_equal(repair(e, "s2", 10, 1, 'X'), 0);
	assert_images(e, 10, 'A', 'X', 'A');
	/* s2 block 4: held by s2 (B), s1 holds its own (A) */
	assert_int_equal(repair(e, "s2", 4, 1, 'X'), 0);
	assert_images(e, 4, 'A', 'X', 'C');
	/* s2 block 1: s2 reads the head (B), s1 holds its own: no pin needed */
	assert_int_equal(repair(e, "s2", 1, 1, 'X'), 0);
	assert_images(e, 1, 'A', 'X', 'B');
	/* s1 block 2: held by s1, the oldest */
	assert_int_equal(repair(e, "s1", 2, 1, 'Y'), 0);
	assert_images(e, 2, 'Y', 'B', 'B');
	/* s1 block 12: the head serves it to both: s2 and the head keep A */
	assert_int_equal(repair(e, "s1", 12, 2, 'Y'), 0);
	assert_images(e, 12, 'Y', 'A', 'A');
	assert_images(e, 13, 'Y', 'A', 'A');
	/* a range of blocks some of which read those bytes already */
	fill(e->buf, BS, 'A', 8 * BS);
	{
		struct tsr_svol *v = NULL;

		assert_int_equal(tsr_store_snap_open(e->se.store, "v", "s2", &v), 0);
		fill(e->buf, 2 * BS, 'A', 8 * BS);  /* block 8: A, as now */
		fill(e->buf + BS, BS, 'Z', 9 * BS); /* block 9: Z */
		assert_int_equal(tsr_svol_snap_repair(v, 0, 8 * BS, 2 * BS, e->buf), 0);
		tsr_svol_put(v);
	}
	assert_images(e, 8, 'A', 'A', 'A');
	assert_images(e, 9, 'A', 'Z', 'A');
	/* untouched neighbours */
	assert_images(e, 11, 'A', 'A', 'A');
	assert_images(e, 5, 'A', 'B', 'C');

	/* durable: the same after a reopen */
	tsr_store_close(e->se.store);
	assert_int_equal(tsr_store_open(e->se.dir, &(struct tsr_store_opts){0}, &e->se.store), 0);
	assert_images(e, 10, 'A', 'X', 'A');
	assert_images(e, 4, 'A', 'X', 'C');
	assert_images(e, 1, 'A', 'X', 'B');
	assert_images(e, 2, 'Y', 'B', 'B');
	assert_images(e, 12, 'Y', 'A', 'A');
	assert_images(e, 9, 'A', 'Z', 'A');

	/* s2 deleted: its blocks merge into s1 where s1 lacks them; s1 keeps
	 * its image (A at 10 pinned, Y at 12) */
	assert_int_equal(tsr_store_snap_delete(e->se.store, "v", "s2"), 0);
	assert_block(e, "s1", 10, 'A', 10 * BS);
	assert_block(e, "s1", 9, 'A', 9 * BS);
	assert_block(e, "s1", 12, 'Y', 12 * BS);
	assert_block(e, "s1", 4, 'A', 4 * BS);
	assert_block(e, NULL, 10, 'A', 10 * BS);
	assert_block(e, NULL, 4, 'C', 4 * BS);
	/* and the head's writes still copy on write into s1 */
	{
		struct tsr_svol *v = NULL;

		assert_int_equal(tsr_store_vol_open(e->se.store, "v", &v), 0);
		fill(e->buf, BS, 'D', 14 * BS);
		assert_int_equal(swrite(v, e->io, 14 * BS, BS, e->buf, TSR_WRITE_FUA), 0);
		tsr_svol_put(v);
	}
	assert_block(e, "s1", 14, 'A', 14 * BS);
	assert_block(e, NULL, 14, 'D', 14 * BS);
}

static void test_repair_refused(void **state)
{
	struct env *e = *state;
	struct tsr_svol *v = NULL;

	history(e);
	assert_int_equal(tsr_store_vol_open(e->se.store, "v", &v), 0);
	assert_int_equal(tsr_svol_snap_repair(v, 0, 0, BS, e->buf), -EROFS);
	tsr_svol_put(v);
	assert_int_equal(tsr_store_snap_open(e->se.store, "v", "s1", &v), 0);
	assert_int_equal(tsr_svol_snap_repair(v, 0, 512, BS, e->buf), -EINVAL);
	assert_int_equal(tsr_svol_snap_repair(v, 0, 0, 100, e->buf), -EINVAL);
	assert_int_equal(tsr_svol_snap_repair(v, 0, 0, 0, e->buf), -EINVAL);
	assert_int_equal(tsr_svol_snap_repair(v, 0, VOLSZ, BS, e->buf), -ENOSPC);
	assert_int_equal(tsr_svol_snap_repair(v, 0, 0, BS, NULL), -EINVAL);
	tsr_svol_put(v);
	/* a writer below the volume's epoch: refused, nothing changed */
	assert_int_equal(tsr_store_vol_set_epoch(e->se.store, "v", 5), 0);
	assert_int_equal(tsr_store_snap_open(e->se.store, "v", "s1", &v), 0);
	fill(e->buf, BS, 'X', 0);
	assert_int_equal(tsr_svol_snap_repair(v, 4, 0, BS, e->buf), -ESTALE);
	tsr_svol_put(v);
	assert_images(e, 0, 'A', 'B', 'B');
}

/* A zero block as the good bytes: stored as the zero mark, reads zeros. */
static void test_repair_zero(void **state)
{
	struct env *e = *state;
	struct tsr_svol *v = NULL;

	history(e);
	assert_int_equal(tsr_store_snap_open(e->se.store, "v", "s2", &v), 0);
	memset(e->buf, 0, BS);
	assert_int_equal(tsr_svol_snap_repair(v, 0, 3 * BS, BS, e->buf), 0);
	memset(e->buf, 1, BS);
	assert_int_equal(sread(v, e->io, 3 * BS, BS, e->buf), 0);
	assert_true(is_zero(e->buf, BS));
	tsr_svol_put(v);
	assert_block(e, "s1", 3, 'A', 3 * BS);
	assert_block(e, NULL, 3, 'B', 3 * BS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_repair_rule, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_repair_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_repair_zero, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
