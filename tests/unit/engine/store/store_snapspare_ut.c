/*
 * Unit tests of spare snapshot layers (engine/store/spare.c and their use by
 * snap.c): a create takes the layer the background thread made ahead (its
 * files are the snapshot's), images read back byte for byte; a spare made
 * for an older size is dropped; closing, deleting and store close leave no
 * file; and a crash at each new point (while a spare is made, after a create
 * took it, after its row, after copies into it) leaves the snapshot whole or
 * absent with no file behind.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "store_test.h"

/* test hooks of engine/store/snap.c and spare.c */
extern int store_test_crash_at;
unsigned store_test_spares_idle(struct tsr_store *store);

#define NB    64u /* blocks of the test volume */
#define VSIZE ((uint64_t)NB * BS)

struct env {
	char dir[512];
	struct tsr_store *store;
	struct tsr_io *io;
	uint8_t *buf; /* 2 * VSIZE, aligned */
};

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	if (e == NULL || scratch_dir(e->dir, sizeof(e->dir)))
		return -1;
	if (tsr_store_open(e->dir, NULL, &e->store))
		return -1;
	e->io = make_io(TSR_IO_AUTO, NULL);
	e->buf = tsr_alloc_aligned(VSIZE * 2);
	if (e->io == NULL || e->buf == NULL)
		return -1;
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	tsr_io_destroy(e->io);
	tsr_store_close(e->store);
	tsr_free_aligned(e->buf);
	rm_rf(e->dir);
	free(e);
	return 0;
}

/* Files in volumes/; with prefix set, only those whose name starts with it. */
static int count_files(const char *dir, const char *prefix)
{
	char path[PATH_MAX];
	struct dirent *de;
	int n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "%s/volumes", dir);
	d = opendir(path);
	if (d == NULL)
		return -1;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.' &&
		    (prefix == NULL || strncmp(de->d_name, prefix, strlen(prefix)) == 0))
			n++;
	closedir(d);
	return n;
}

/* The names of the files in volumes/, one string. */
static void list_files(const char *dir, char *out, size_t len)
{
	char path[PATH_MAX];
	struct dirent *de;
	size_t n = 0;
	DIR *d;

	out[0] = 0;
	snprintf(path, sizeof(path), "%s/volumes", dir);
	d = opendir(path);
	assert_non_null(d);
	while ((de = readdir(d)))
		n += (size_t)snprintf(out + n, n < len ? len - n : 0, "%s ", de->d_name);
	closedir(d);
	assert_true(n < len);
}

/* Every block of v := seed s. */
static void write_all(struct env *e, struct tsr_svol *v, uint16_t s)
{
	fill(e->buf, VSIZE, s, 0);
	assert_int_equal(swrite(v, e->io, 0, (uint32_t)VSIZE, e->buf, 0), 0);
}

/* Image of v (a head or snapshot handle) is seed s over [0, len). */
static void check_filled(struct env *e, struct tsr_svol *v, uint64_t len, uint16_t s)
{
	memset(e->buf, 0xa5, len);
	assert_int_equal(sread(v, e->io, 0, (uint32_t)len, e->buf), 0);
	assert_true(is_filled(e->buf, len, s, 0));
}

static void check_snap(struct env *e, const char *snap, uint16_t s)
{
	struct tsr_svol *h;

	assert_int_equal(tsr_store_snap_open(e->store, "v", snap, &h), 0);
	check_filled(e, h, tsr_svol_size(h), s);
	tsr_svol_put(h);
}

static void check_head(struct env *e, uint16_t s)
{
	struct tsr_svol *v;

	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	check_filled(e, v, VSIZE, s);
	tsr_svol_put(v);
}

static void check_head_either(struct env *e, uint16_t s, uint16_t t)
{
	struct tsr_svol *v;

	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	assert_int_equal(sread(v, e->io, 0, (uint32_t)VSIZE, e->buf), 0);
	assert_true(is_filled(e->buf, VSIZE, s, 0) || is_filled(e->buf, VSIZE, t, 0));
	tsr_svol_put(v);
}

static const char *vol_uuid(struct env *e, char out[37])
{
	struct tsr_vol_info info;

	assert_int_equal(tsr_store_vol_info(e->store, "v", &info), 0);
	memcpy(out, info.uuid, 37);
	return out;
}

/* The spare's files become the snapshot's; the next spare is made after. */
static void test_spare_used(void **state)
{
	struct env *e = *state;
	struct tsr_snap_info info;
	struct tsr_svol *v;
	char vu[37], sname[64], path[PATH_MAX], before[4096];
	unsigned made;
	int i;

	assert_int_equal(tsr_store_vol_create(e->store, "v", VSIZE, NULL), 0);
	vol_uuid(e, vu);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	assert_int_equal(tsr_store_snap_spare(e->store, "v", true), 0);
	made = store_test_spares_idle(e->store);
	assert_int_equal(made, 1);
	assert_int_equal(count_files(e->dir, NULL), 3 + 3); /* head + the spare */
	for (i = 1; i <= 3; i++) {
		write_all(e, v, (uint16_t)i);
		snprintf(sname, sizeof(sname), "s%d", i);
		list_files(e->dir, before, sizeof(before));
		assert_int_equal(tsr_store_snap_create(e->store, "v", sname, &info), 0);
		/* the layer is the spare made before the create: its files existed */
		snprintf(path, sizeof(path), "%s.present ", info.uuid);
		assert_non_null(strstr(before, path));
		assert_int_equal(store_test_spares_idle(e->store), made + (unsigned)i);
		assert_int_equal(count_files(e->dir, NULL), 3 + 3 * i + 3);
	}
	write_all(e, v, 9); /* copies into s3, the last spare used */
	check_filled(e, v, VSIZE, 9);
	tsr_svol_put(v);
	check_snap(e, "s1", 1);
	check_snap(e, "s2", 2);
	check_snap(e, "s3", 3);
	/* a reopen keeps the snapshots; the spare of a closed store is gone */
	tsr_store_close(e->store);
	assert_int_equal(count_files(e->dir, NULL), 3 + 9);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	check_snap(e, "s3", 3);
	check_head(e, 9);
	/* a duplicate name takes no spare, and changes nothing */
	assert_int_equal(tsr_store_snap_spare(e->store, "v", true), 0);
	store_test_spares_idle(e->store);
	assert_int_equal(tsr_store_snap_create(e->store, "v", "s1", NULL), -EEXIST);
	assert_int_equal(count_files(e->dir, NULL), 3 + 9 + 3);
	/* let go (the layout closes the volume): its files go */
	assert_int_equal(tsr_store_snap_spare(e->store, "v", false), 0);
	assert_int_equal(count_files(e->dir, NULL), 3 + 9);
	/* delete of the volume drops a spare too */
	assert_int_equal(tsr_store_snap_spare(e->store, "v", true), 0);
	store_test_spares_idle(e->store);
	assert_int_equal(count_files(e->dir, NULL), 3 + 9 + 3);
	assert_int_equal(tsr_store_vol_delete(e->store, "v"), 0);
	assert_int_equal(count_files(e->dir, NULL), 0);
	/* bad input */
	assert_int_equal(tsr_store_snap_spare(e->store, "nosuch", true), -ENOENT);
	assert_int_equal(tsr_store_snap_spare(e->store, "bad/name", true), -ENOENT);
	assert_int_equal(tsr_store_snap_spare(e->store, NULL, true), -ENOENT);
}

/* A spare made before the volume grew is dropped; the snapshot has the new size. */
static void test_spare_resized(void **state)
{
	struct env *e = *state;
	struct tsr_snap_info info;
	struct tsr_svol *v;

	assert_int_equal(tsr_store_vol_create(e->store, "v", VSIZE, NULL), 0);
	assert_int_equal(tsr_store_snap_spare(e->store, "v", true), 0);
	assert_int_equal(store_test_spares_idle(e->store), 1);
	assert_int_equal(tsr_store_vol_resize(e->store, "v", 2 * VSIZE), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	fill(e->buf, 2 * VSIZE, 4, 0);
	assert_int_equal(swrite(v, e->io, 0, (uint32_t)(2 * VSIZE), e->buf, 0), 0);
	assert_int_equal(tsr_store_snap_create(e->store, "v", "big", &info), 0);
	assert_int_equal(info.size, 2 * VSIZE);
	fill(e->buf, 2 * VSIZE, 5, 0);
	assert_int_equal(swrite(v, e->io, 0, (uint32_t)(2 * VSIZE), e->buf, 0), 0);
	tsr_svol_put(v);
	check_snap(e, "big", 4);
	/* the old spare's files went, the next one is sized for 2 * VSIZE */
	assert_int_equal(store_test_spares_idle(e->store), 2);
	assert_int_equal(count_files(e->dir, NULL), 3 + 3 + 3);
	assert_int_equal(tsr_store_snap_delete(e->store, "v", "big"), 0);
	store_test_spares_idle(e->store); /* the thread removes the deleted layer's files */
	assert_int_equal(count_files(e->dir, NULL), 3 + 3);
	assert_int_equal(tsr_store_vol_delete(e->store, "v"), 0);
	assert_int_equal(count_files(e->dir, NULL), 0);
}

/*
 * Crash points.  op 0: the background thread makes a spare and the process
 * dies at its step-th crash point (files created, directory synced, layer
 * mapped).  op 1: a spare is parked first, then a create dies at its step-th
 * point (spare taken, row committed), or finishes, copies into the layer and
 * the process dies without closing (step past the create's points).
 * Returns the child's exit code: 99 = died at the point, 0 = went through.
 */
static int crash_child(struct env *e, int op, int step)
{
	pid_t pid;
	int st;

	tsr_store_close(e->store);
	e->store = NULL;
	pid = fork();
	if (pid == 0) {
		struct tsr_store *s;
		struct tsr_svol *v;
		struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);

		if (io == NULL || tsr_store_open(e->dir, NULL, &s) ||
		    tsr_store_vol_open(s, "v", &v))
			_exit(1);
		if (op == 0) {
			store_test_crash_at = step;
			if (tsr_store_snap_spare(s, "v", true))
				_exit(2);
			store_test_spares_idle(s);
			_exit(0);
		}
		if (tsr_store_snap_spare(s, "v", true) || store_test_spares_idle(s) != 1)
			_exit(3);
		store_test_crash_at = step;
		if (tsr_store_snap_create(s, "v", "new", NULL))
			_exit(4);
		/* the create went through (the next spare may be in the making:
		 * its points are counted too, and may end the process first) */
		fill(e->buf, VSIZE, 8, 0);
		if (swrite(v, io, 0, (uint32_t)VSIZE, e->buf, 0))
			_exit(5);
		_exit(0); /* no close: the bits of the copies are in the page cache */
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	return WEXITSTATUS(st);
}

static void test_spare_crash_points(void **state)
{
	struct env *e = *state;
	struct tsr_snap_info info;
	struct tsr_svol *v;
	char vu[37];
	int step, rc, died = 0, whole = 0, absent = 0;

	assert_int_equal(tsr_store_vol_create(e->store, "v", VSIZE, NULL), 0);
	vol_uuid(e, vu);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	write_all(e, v, 1);
	tsr_svol_put(v);
	assert_int_equal(tsr_store_snap_create(e->store, "v", "old", NULL), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	write_all(e, v, 2);
	tsr_svol_put(v);

	/* while the spare is made: nothing but files without a row, removed */
	for (step = 1; step <= 4; step++) {
		rc = crash_child(e, 0, step);
		assert_true(rc == 99 || rc == 0);
		died += rc == 99;
		assert_int_equal(tsr_store_snap_info(e->store, "v", "new", &info), -ENOENT);
		assert_int_equal(count_files(e->dir, NULL), 3 + 3);
		check_snap(e, "old", 1);
		check_head(e, 2);
	}
	assert_int_equal(died, 3); /* files created, directory synced, mapped */

	/* a create on a spare: absent (spare taken, row not committed) or whole
	 * (row committed; copies into it after), never anything in between */
	for (step = 1; step <= 4; step++) {
		rc = crash_child(e, 1, step);
		assert_true(rc == 99 || rc == 0);
		if (tsr_store_snap_info(e->store, "v", "new", &info) == 0) {
			whole++;
			assert_string_equal(info.name, "new");
			check_snap(e, "new", 2);
			assert_int_equal(count_files(e->dir, NULL), 3 + 6);
			if (step <= 2) /* died inside the create */
				check_head(e, 2);
			else /* the write after the cut (copies into new) may have landed */
				check_head_either(e, 2, 8);
			assert_int_equal(tsr_store_snap_delete(e->store, "v", "new"), 0);
		} else {
			absent++;
			check_head(e, 2);
		}
		check_snap(e, "old", 1);
		assert_int_equal(count_files(e->dir, NULL), 3 + 3);
		assert_int_equal(count_files(e->dir, vu), 3);
	}
	assert_int_equal(absent, 1); /* died with the spare taken, before its row */
	assert_int_equal(whole, 3);
}

/*
 * A delete while the spare thread runs: the row goes in the caller (inside
 * the gate), the files are removed by the thread.  A child dies at each
 * point: row marked, merge synced, row deleted, the thread about to remove
 * the files; or goes through (waiting for the thread).  After the reopen the
 * snapshot is whole or absent, the older one and the head unchanged, and
 * only their files are left.
 */
static int reap_child(struct env *e, int step)
{
	pid_t pid;
	int st;

	tsr_store_close(e->store);
	e->store = NULL;
	pid = fork();
	if (pid == 0) {
		struct tsr_store *s;

		if (tsr_store_open(e->dir, NULL, &s) || tsr_store_snap_spare(s, "v", true))
			_exit(1);
		store_test_spares_idle(s);
		store_test_crash_at = step;
		if (tsr_store_snap_delete(s, "v", "b"))
			_exit(2);
		store_test_spares_idle(s); /* the removal, which may be the crash point */
		_exit(0);
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	return WEXITSTATUS(st);
}

static void test_delete_reaped(void **state)
{
	struct env *e = *state;
	struct tsr_svol *v;
	int step, rc, absent = 0;

	for (step = 1; step <= 5; step++) {
		assert_int_equal(tsr_store_vol_create(e->store, "v", VSIZE, NULL), 0);
		assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
		write_all(e, v, 1);
		assert_int_equal(tsr_store_snap_create(e->store, "v", "a", NULL), 0);
		write_all(e, v, 2);
		assert_int_equal(tsr_store_snap_create(e->store, "v", "b", NULL), 0);
		write_all(e, v, 3); /* copies into b */
		tsr_svol_put(v);
		rc = reap_child(e, step);
		assert_int_equal(rc, step <= 4 ? 99 : 0);
		check_snap(e, "a", 1);
		check_head(e, 3);
		if (tsr_store_snap_info(e->store, "v", "b", &(struct tsr_snap_info){0}) == 0) {
			check_snap(e, "b", 2);
			assert_int_equal(count_files(e->dir, NULL), 3 + 6);
		} else {
			absent++;
			assert_int_equal(count_files(e->dir, NULL), 3 + 3);
		}
		assert_int_equal(tsr_store_vol_delete(e->store, "v"), 0);
		assert_int_equal(count_files(e->dir, NULL), 0);
	}
	/* marked: the open finishes the delete; so from every point on */
	assert_int_equal(absent, 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_spare_used, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_spare_resized, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_spare_crash_points, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_delete_reaped, setup, teardown),
	};

	tsr_log_set_level(TSR_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
