/*
 * Unit tests of the removal of a deleted volume's files (engine/store/
 * remove.c, the reaper of spare.c): the cost of an unlink is the file's
 * extents (ext4 with discard: one synchronous discard each), so a volume
 * delete removes in the call only files of at most store_remove_piece()
 * extents, queues the others to the reaper, which cuts them down in pieces
 * a store close can stop; files left by a crash at any point, or by a close
 * that stopped the reaper, are removed at the next open.  The piece is set
 * to 16 extents here (store_test_remove_piece), so 128 scattered 4 KiB
 * writes make a "large" head.
 */
#include <dirent.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "store_test.h"

/* test hooks of engine/store (remove.c, spare.c, snap.c) */
extern int store_test_crash_at;
extern _Atomic unsigned store_test_remove_piece;
extern _Atomic unsigned store_test_remove_cuts;
extern _Atomic unsigned store_test_removes_queued;
extern _Atomic uint64_t store_test_remove_space_min;
extern _Atomic int store_test_reap_hold;
extern _Atomic int store_test_reap_close_ms;
unsigned store_test_spares_idle(struct tsr_store *store);

#define PIECE  16u
#define NB     256u /* blocks of the volume: 1 MiB */
#define VSIZE  ((uint64_t)NB * BS)
#define NWRITE (NB / 2) /* every other block: 128 extents */

struct env {
	char dir[512];
	struct tsr_store *store;
	struct tsr_io *io;
	uint8_t *buf; /* BS, aligned */
};

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	if (e == NULL || scratch_dir(e->dir, sizeof(e->dir)))
		return -1;
	atomic_store(&store_test_remove_piece, PIECE);
	atomic_store(&store_test_reap_hold, 0);
	atomic_store(&store_test_reap_close_ms, -1);
	if (tsr_store_open(e->dir, NULL, &e->store))
		return -1;
	e->io = make_io(TSR_IO_AUTO, NULL);
	e->buf = tsr_alloc_aligned(BS);
	if (e->io == NULL || e->buf == NULL)
		return -1;
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	atomic_store(&store_test_reap_hold, 0);
	tsr_io_destroy(e->io);
	tsr_store_close(e->store);
	tsr_free_aligned(e->buf);
	rm_rf(e->dir);
	free(e);
	atomic_store(&store_test_remove_piece, 0);
	atomic_store(&store_test_remove_space_min, 0);
	return 0;
}

/* Extents of a file (FIEMAP), -1 if it is missing or the file system has no
 * FIEMAP. */
static long extents(const char *path)
{
	struct fiemap fm = {.fm_length = FIEMAP_MAX_OFFSET};
	int fd = open(path, O_RDONLY);
	long n = -1;

	if (fd < 0)
		return -1;
	if (ioctl(fd, FS_IOC_FIEMAP, &fm) == 0)
		n = (long)fm.fm_mapped_extents;
	close(fd);
	return n;
}

static bool exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* Volume name with snapshot p0, then `writes` 4 KiB blocks of seed at every
 * other block from 0, then snapshot p1 (test-snapshot-cli's volume, small);
 * its uuid into uuid. */
static void make_vol(struct env *e, const char *name, unsigned writes, uint16_t seed,
		     char uuid[37])
{
	struct tsr_vol_info info;
	struct tsr_svol *v;
	unsigned i;

	assert_int_equal(tsr_store_vol_create(e->store, name, VSIZE, &info), 0);
	memcpy(uuid, info.uuid, 37);
	assert_int_equal(tsr_store_vol_open(e->store, name, &v), 0);
	assert_int_equal(tsr_store_snap_create(e->store, name, "p0", NULL), 0);
	for (i = 0; i < writes; i++) {
		fill(e->buf, BS, seed, (uint64_t)i * 2 * BS);
		assert_int_equal(swrite(v, e->io, (uint64_t)i * 2 * BS, BS, e->buf, 0), 0);
	}
	assert_int_equal(sflush(v, e->io), 0);
	assert_int_equal(tsr_store_snap_create(e->store, name, "p1", NULL), 0);
	tsr_svol_put(v);
}

/* Volume name reads back what make_vol wrote with seed. */
static void check_vol(struct env *e, const char *name, unsigned writes, uint16_t seed)
{
	struct tsr_svol *v;
	unsigned b;

	assert_int_equal(tsr_store_vol_open(e->store, name, &v), 0);
	for (b = 0; b < NB; b++) {
		assert_int_equal(sread(v, e->io, (uint64_t)b * BS, BS, e->buf), 0);
		if (b % 2 == 0 && b / 2 < writes)
			assert_true(is_filled(e->buf, BS, seed, (uint64_t)b * BS));
		else
			assert_true(is_zero(e->buf, BS));
	}
	tsr_svol_put(v);
}

/* The head's data file of uuid, and its extents (the test skips on a file
 * system without FIEMAP). */
static long head_extents(struct env *e, const char *uuid, char *path)
{
	long n;

	vol_file(e->dir, uuid, "data", path);
	n = extents(path);
	if (n < 0)
		skip();
	return n;
}

/*
 * A delete of a volume whose head holds 128 extents (> the piece, 16) returns
 * with its files queued: with the reaper held, the row is gone, the name is
 * free (a new volume of it reads zeros), the head's data file is still there;
 * once released, the reaper cuts it down in pieces of 16 extents (cuts =
 * pieces - 1: the first goes with the unlink) and no file of it is left.  A
 * volume of 8 extents (<= the piece) is removed in the call, as before: its
 * space is free when the delete answers.
 */
static void test_delete_queues_large(void **state)
{
	struct env *e = *state;
	char uuid[37], small[37], again[37], path[PATH_MAX];
	unsigned cuts0, queued0;
	long n;

	make_vol(e, "big", NWRITE, 1, uuid);
	make_vol(e, "small", PIECE / 2, 2, small);
	make_vol(e, "other", 4, 3, again);
	n = head_extents(e, uuid, path);
	assert_true(n > PIECE);

	atomic_store(&store_test_reap_hold, 1);
	queued0 = atomic_load(&store_test_removes_queued);
	cuts0 = atomic_load(&store_test_remove_cuts);
	assert_int_equal(tsr_store_vol_delete(e->store, "big"), 0);
	/* the call did not free the head's extents: the reaper will */
	if (!exists(path))
		fail_msg("the delete removed a head of %ld extents in the call", n);
	assert_int_equal(atomic_load(&store_test_removes_queued), queued0 + 1);
	assert_int_equal(tsr_store_vol_info(e->store, "big", &(struct tsr_vol_info){0}), -ENOENT);
	assert_int_equal(tsr_store_vol_create(e->store, "big", VSIZE, NULL), 0);
	check_vol(e, "big", 0, 0);

	/* few extents: in the call, whatever the reaper does */
	assert_int_equal(tsr_store_vol_delete(e->store, "small"), 0);
	assert_int_equal(store_files_count(e->dir, small), 0);
	assert_int_equal(atomic_load(&store_test_removes_queued), queued0 + 1);

	atomic_store(&store_test_reap_hold, 0);
	store_test_spares_idle(e->store);
	assert_int_equal(store_files_count(e->dir, uuid), 0);
	assert_int_equal(atomic_load(&store_test_remove_cuts) - cuts0,
			 (unsigned)((n + PIECE - 1) / PIECE - 1));
	check_vol(e, "other", 4, 3);
}

/*
 * A store close while removals are queued, its time over (0 ms here): the
 * volume's is dropped before its first piece and the close returns with its
 * files (no row) still there; a deleted snapshot's layer queued before it
 * (128 extents of copies) is removed by the close all the same, as before
 * this change (a clean stop after snapshot deletes leaves no file of
 * theirs).  The next open queues the head again (more than the piece) and
 * the reaper removes it; the other volumes are untouched.
 */
static void test_close_leaves_rest(void **state)
{
	struct env *e = *state;
	char uuid[37], other[37], lay[37], path[PATH_MAX];
	struct tsr_snap_info s1;
	struct tsr_svol *v;
	unsigned queued0, i;

	make_vol(e, "big", NWRITE, 1, uuid);
	make_vol(e, "other", 4, 3, other);
	assert_true(head_extents(e, uuid, path) > PIECE);
	/* "lay": snapshot s1 holds copies of 128 scattered blocks */
	make_vol(e, "lay", NWRITE, 4, lay);
	assert_int_equal(tsr_store_snap_create(e->store, "lay", "s1", &s1), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "lay", &v), 0);
	for (i = 0; i < NWRITE; i++) {
		fill(e->buf, BS, 5, (uint64_t)i * 2 * BS);
		assert_int_equal(swrite(v, e->io, (uint64_t)i * 2 * BS, BS, e->buf, 0), 0);
	}
	assert_int_equal(sflush(v, e->io), 0);
	tsr_svol_put(v);
	assert_true(extents((vol_file(e->dir, s1.uuid, "data", path), path)) > PIECE);

	/* the reaper runs (big's delete started it): s1's layer goes to it */
	atomic_store(&store_test_reap_hold, 1);
	assert_int_equal(tsr_store_vol_delete(e->store, "big"), 0);
	assert_int_equal(tsr_store_snap_delete(e->store, "lay", "s1"), 0);
	assert_int_equal(store_files_count(e->dir, s1.uuid), 3);
	atomic_store(&store_test_reap_close_ms, 0);
	tsr_store_close(e->store); /* the hold ends with the close's time */
	e->store = NULL;
	atomic_store(&store_test_reap_hold, 0);
	atomic_store(&store_test_reap_close_ms, -1);
	assert_int_equal(store_files_count(e->dir, s1.uuid), 0);
	vol_file(e->dir, uuid, "data", path);
	assert_true(exists(path));

	queued0 = atomic_load(&store_test_removes_queued);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	assert_int_equal(atomic_load(&store_test_removes_queued), queued0 + 1);
	store_test_spares_idle(e->store);
	assert_int_equal(store_files_count(e->dir, uuid), 0);
	assert_int_equal(tsr_store_vol_info(e->store, "big", &(struct tsr_vol_info){0}), -ENOENT);
	check_vol(e, "other", 4, 3);
	check_vol(e, "lay", NWRITE, 5);
}

/* The child of test_crash_points: deletes "big" and dies at its step-th
 * crash point (99), or finishes (0). */
static int crash_child(struct env *e, int step)
{
	struct tsr_store *s;

	if (tsr_store_open(e->dir, NULL, &s))
		return 1;
	store_test_crash_at = step;
	if (tsr_store_vol_delete(s, "big"))
		return 2;
	store_test_spares_idle(s); /* the reaper's removal, its points */
	return 0;
}

/*
 * A child dies at every crash point of the delete of a large volume: after
 * the rows' commit, in the reaper before the removal, and after each of its
 * cuts (the file shorter each time).  Every reopen: no volume "big", the
 * other volume whole, and once the reaper is idle no file of big's head or
 * layers is left.  The last step goes through (exit 0).
 */
static void test_crash_points(void **state)
{
	struct env *e = *state;
	char uuid[37], other[37], path[PATH_MAX];
	int step, rc, crashed = 0, shorter = 0, base;
	struct stat sb;
	pid_t pid;
	int st;

	make_vol(e, "other", 4, 3, other);
	base = store_files_count(e->dir, NULL); /* other's head and layers */
	for (step = 1;; step++) {
		make_vol(e, "big", NWRITE, 1, uuid);
		assert_true(head_extents(e, uuid, path) > PIECE);
		tsr_store_close(e->store);
		e->store = NULL;
		pid = fork();
		if (pid == 0)
			_exit(crash_child(e, step));
		assert_true(pid > 0);
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFEXITED(st));
		rc = WEXITSTATUS(st);
		assert_true(rc == 99 || rc == 0);
		if (rc == 99 && stat(path, &sb) == 0 && (uint64_t)sb.st_size < VSIZE)
			shorter++; /* died after a cut */
		assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
		store_test_spares_idle(e->store);
		assert_int_equal(tsr_store_vol_info(e->store, "big", &(struct tsr_vol_info){0}),
				 -ENOENT);
		assert_int_equal(store_files_count(e->dir, NULL), base);
		check_vol(e, "other", 4, 3);
		if (rc == 0)
			break;
		crashed++;
		assert_true(step < 64);
	}
	/* the commit, the reaper's start, and the cuts: 128 extents in pieces
	 * of 16 make 7 */
	assert_true(crashed >= 3);
	assert_int_equal(shorter, crashed - 2);
}

/*
 * On a file system short of space (its bound set above any free space) the
 * same large delete removes its files in the call, the reaper held: the
 * operator deletes to get space back, and writers of other volumes need it
 * before the answer, not in the background.
 */
static void test_short_space_in_call(void **state)
{
	struct env *e = *state;
	char uuid[37], path[PATH_MAX];
	unsigned queued0;
	long n;

	make_vol(e, "big", NWRITE, 1, uuid);
	n = head_extents(e, uuid, path);
	assert_true(n > PIECE);
	atomic_store(&store_test_reap_hold, 1);
	atomic_store(&store_test_remove_space_min, UINT64_MAX);
	queued0 = atomic_load(&store_test_removes_queued);
	assert_int_equal(tsr_store_vol_delete(e->store, "big"), 0);
	if (exists(path))
		fail_msg("a full file system: the delete left a head of %ld extents to the "
			 "reaper",
			 n);
	assert_int_equal(store_files_count(e->dir, uuid), 0);
	assert_int_equal(atomic_load(&store_test_removes_queued), queued0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_delete_queues_large, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_leaves_rest, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_crash_points, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_short_space_in_call, setup, teardown),
	};

	tsr_log_set_level(TSR_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
