/*
 * Unit tests of spare snapshot layers (engine/store/spare.c and their use by
 * snap.c): a create takes the layer the background thread made ahead (its
 * files are the snapshot's), images read back byte for byte; a spare made
 * for an older size is dropped; closing, deleting and store close leave no
 * file; and a crash at each new point (while a spare is made, after a create
 * took it, after its row, after copies into it) leaves the snapshot whole or
 * absent with no file behind.  The create whose row is made final after the
 * gate reopened (tsr_store_snap_create_async, the local layout with a home
 * post): a write through the reopened gate completes while the row is held
 * back; a crash at each of its points, and after a write acknowledged with
 * the row still pending, leaves the snapshot whole or absent, the older
 * snapshot and the head whole; two creates in a row; a delete racing it.
 */
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "store_test.h"
#include "tessera/layout.h"

/* test hooks of engine/store/snap.c and spare.c */
extern int store_test_crash_at;
unsigned store_test_spares_idle(struct tsr_store *store);
extern _Atomic int store_test_commit_hold;
extern _Atomic unsigned store_test_rows_after_cut;
unsigned store_test_spares_made(struct tsr_store *store);
extern _Atomic int store_test_reap_hold;
extern _Atomic unsigned store_test_reaps_left_at_made;
unsigned store_test_wal_settled(struct tsr_store *store);
extern _Atomic int store_test_spare_linger_ms;
extern _Atomic unsigned store_test_spares_built;
extern _Atomic int store_test_make_hold;
extern _Atomic int store_test_make_held;

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
	atomic_store(&store_test_spare_linger_ms, -1);
	atomic_store(&store_test_make_hold, 0);
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
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 3); /* head + the spare */
	for (i = 1; i <= 3; i++) {
		write_all(e, v, (uint16_t)i);
		snprintf(sname, sizeof(sname), "s%d", i);
		list_files(e->dir, before, sizeof(before));
		assert_int_equal(tsr_store_snap_create(e->store, "v", sname, &info), 0);
		/* the layer is the spare made before the create: its files existed */
		snprintf(path, sizeof(path), "%s.present ", info.uuid);
		assert_non_null(strstr(before, path));
		assert_int_equal(store_test_spares_idle(e->store), made + (unsigned)i);
		assert_int_equal(store_files_count(e->dir, NULL), 3 + 3 * i + 3);
	}
	write_all(e, v, 9); /* copies into s3, the last spare used */
	check_filled(e, v, VSIZE, 9);
	tsr_svol_put(v);
	check_snap(e, "s1", 1);
	check_snap(e, "s2", 2);
	check_snap(e, "s3", 3);
	/* a reopen keeps the snapshots; the spare of a closed store is gone */
	tsr_store_close(e->store);
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 9);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	check_snap(e, "s3", 3);
	check_head(e, 9);
	/* a duplicate name takes no spare, and changes nothing */
	assert_int_equal(tsr_store_snap_spare(e->store, "v", true), 0);
	store_test_spares_idle(e->store);
	assert_int_equal(tsr_store_snap_create(e->store, "v", "s1", NULL), -EEXIST);
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 9 + 3);
	/* let go (the layout closes the volume), its linger over: the thread
	 * removes its files */
	atomic_store(&store_test_spare_linger_ms, 0);
	assert_int_equal(tsr_store_snap_spare(e->store, "v", false), 0);
	store_test_spares_idle(e->store);
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 9);
	/* delete of the volume drops a spare too */
	assert_int_equal(tsr_store_snap_spare(e->store, "v", true), 0);
	store_test_spares_idle(e->store);
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 9 + 3);
	assert_int_equal(tsr_store_vol_delete(e->store, "v"), 0);
	assert_int_equal(store_files_count(e->dir, NULL), 0);
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
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 3 + 3);
	assert_int_equal(tsr_store_snap_delete(e->store, "v", "big"), 0);
	store_test_spares_idle(e->store); /* the thread removes the deleted layer's files */
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 3);
	assert_int_equal(tsr_store_vol_delete(e->store, "v"), 0);
	assert_int_equal(store_files_count(e->dir, NULL), 0);
}

/*
 * Close the store, run fn(e, a, b) in a child that exits with its result
 * without closing anything (a crash, as far as the store can tell; crash
 * points end it with 99), reopen the store: the child's exit code.
 */
static int in_child(struct env *e, int (*fn)(struct env *e, int a, int b), int a, int b)
{
	pid_t pid;
	int st;

	tsr_store_close(e->store);
	e->store = NULL;
	pid = fork();
	if (pid == 0)
		_exit(fn(e, a, b));
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	return WEXITSTATUS(st);
}

/*
 * Crash points (in_child).  op 0: the background thread makes a spare and the process
 * dies at its step-th crash point (files created, directory synced, layer
 * mapped).  op 1: a spare is parked first, then a create dies at its step-th
 * point (spare taken, row committed), or finishes, copies into the layer and
 * the process dies without closing (step past the create's points).
 * Returns the child's exit code: 99 = died at the point, 0 = went through.
 */
static int crash_run(struct env *e, int op, int step)
{
	struct tsr_store *s;
	struct tsr_svol *v;
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);

	if (io == NULL || tsr_store_open(e->dir, NULL, &s) || tsr_store_vol_open(s, "v", &v))
		return 1;
	if (op == 0) {
		store_test_crash_at = step;
		if (tsr_store_snap_spare(s, "v", true))
			return 2;
		store_test_spares_idle(s);
		return 0;
	}
	if (tsr_store_snap_spare(s, "v", true) || store_test_spares_idle(s) != 1)
		return 3;
	store_test_crash_at = step;
	if (tsr_store_snap_create(s, "v", "new", NULL))
		return 4;
	/* the create went through (the next spare may be in the making:
	 * its points are counted too, and may end the process first) */
	fill(e->buf, VSIZE, 8, 0);
	if (swrite(v, io, 0, (uint32_t)VSIZE, e->buf, 0))
		return 5;
	return 0; /* no close: the bits of the copies are in the page cache */
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

	/* while the spare is made: files without a row, or with a pending row:
	 * removed (the pending row too) */
	for (step = 1; step <= 5; step++) {
		rc = in_child(e, crash_run, 0, step);
		assert_true(rc == 99 || rc == 0);
		died += rc == 99;
		assert_int_equal(tsr_store_snap_info(e->store, "v", "new", &info), -ENOENT);
		assert_int_equal(store_files_count(e->dir, NULL), 3 + 3);
		check_snap(e, "old", 1);
		check_head(e, 2);
	}
	assert_int_equal(died, 4); /* files created, directory synced, row, mapped */

	/* a create on a spare: absent (spare taken, row not committed) or whole
	 * (row committed; copies into it after), never anything in between */
	for (step = 1; step <= 4; step++) {
		rc = in_child(e, crash_run, 1, step);
		assert_true(rc == 99 || rc == 0);
		if (tsr_store_snap_info(e->store, "v", "new", &info) == 0) {
			whole++;
			assert_string_equal(info.name, "new");
			check_snap(e, "new", 2);
			assert_int_equal(store_files_count(e->dir, NULL), 3 + 6);
			if (step <= 2) /* died inside the create */
				check_head(e, 2);
			else /* the write after the cut (copies into new) may have landed */
				check_head_either(e, 2, 8);
			assert_int_equal(tsr_store_snap_delete(e->store, "v", "new"), 0);
			/* the head back to seed 2 for the next step: a child that went
			 * through wrote 8, and the next cut would hold 8 (this check
			 * failed so 1 run in 25-30 under load: step 3 went through, the
			 * next spare's points left uncounted, and step 4's "new" read 8
			 * in all 64 blocks, its cut, not a lost copy) */
			assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
			write_all(e, v, 2);
			tsr_svol_put(v);
		} else {
			absent++;
			check_head(e, 2);
		}
		check_snap(e, "old", 1);
		assert_int_equal(store_files_count(e->dir, NULL), 3 + 3);
		assert_int_equal(store_files_count(e->dir, vu), 3);
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
static int reap_run(struct env *e, int step, int unused)
{
	struct tsr_store *s;

	(void)unused;
	if (tsr_store_open(e->dir, NULL, &s) || tsr_store_snap_spare(s, "v", true))
		return 1;
	store_test_spares_idle(s);
	store_test_crash_at = step;
	if (tsr_store_snap_delete(s, "v", "b"))
		return 2;
	store_test_spares_idle(s); /* the removal, which may be the crash point */
	return 0;
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
		rc = in_child(e, reap_run, step, 0);
		assert_int_equal(rc, step <= 4 ? 99 : 0);
		check_snap(e, "a", 1);
		check_head(e, 3);
		if (tsr_store_snap_info(e->store, "v", "b", &(struct tsr_snap_info){0}) == 0) {
			check_snap(e, "b", 2);
			assert_int_equal(store_files_count(e->dir, NULL), 3 + 6);
		} else {
			absent++;
			assert_int_equal(store_files_count(e->dir, NULL), 3 + 3);
		}
		assert_int_equal(tsr_store_vol_delete(e->store, "v"), 0);
		assert_int_equal(store_files_count(e->dir, NULL), 0);
	}
	/* marked: the open finishes the delete; so from every point on */
	assert_int_equal(absent, 5);
}

/* Image of snapshot snap (head: NULL) is seed a over the first half, b over the second. */
static void check_halves(struct env *e, const char *snap, uint16_t a, uint16_t b)
{
	struct tsr_svol *h;
	uint64_t half = VSIZE / 2;

	if (snap)
		assert_int_equal(tsr_store_snap_open(e->store, "v", snap, &h), 0);
	else
		assert_int_equal(tsr_store_vol_open(e->store, "v", &h), 0);
	memset(e->buf, 0xa5, VSIZE);
	assert_int_equal(sread(h, e->io, 0, (uint32_t)VSIZE, e->buf), 0);
	if (!is_filled(e->buf, half, a, 0))
		fprintf(stderr, "check_halves %s: word0 %016llx want seed %u\n", snap ? snap : "head", (unsigned long long)*(uint64_t *)e->buf, a);
	assert_true(is_filled(e->buf, half, a, 0));
	assert_true(is_filled(e->buf + half, half, b, half));
	tsr_svol_put(h);
}

/* v: seed 1 everywhere, snapshot "old", then seed 2 over the first half
 * only (so "old" holds the first half; its second half is the head's). */
static void make_old(struct env *e)
{
	struct tsr_svol *v;

	assert_int_equal(tsr_store_vol_create(e->store, "v", VSIZE, NULL), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	write_all(e, v, 1);
	assert_int_equal(tsr_store_snap_create(e->store, "v", "old", NULL), 0);
	fill(e->buf, VSIZE / 2, 2, 0);
	assert_int_equal(swrite(v, e->io, 0, (uint32_t)(VSIZE / 2), e->buf, 0), 0);
	tsr_svol_put(v);
}

struct async_done {
	pthread_mutex_t lock;
	int calls, status;
};

static void async_done_cb(void *arg, int status)
{
	struct async_done *d = arg;

	pthread_mutex_lock(&d->lock);
	d->calls++;
	d->status = status;
	pthread_mutex_unlock(&d->lock);
}

static int async_calls(struct async_done *d)
{
	int n;

	pthread_mutex_lock(&d->lock);
	n = d->calls;
	pthread_mutex_unlock(&d->lock);
	return n;
}

/* Wait (bounded by a count, not a time) for d's callback; its status. */
static int async_wait(struct async_done *d)
{
	int i;

	for (i = 0; i < 60000 && async_calls(d) == 0; i++)
		usleep(500);
	assert_int_equal(async_calls(d), 1);
	return d->status;
}

/*
 * A create whose row the thread makes final.  step > 0: the child dies at
 * its step-th crash point from the create on (spare taken; published; the
 * thread about to commit; committed, not yet reported; later points are the
 * next spare's).  step 0: the row is held back, a write of seed 8 over the
 * whole volume is acknowledged (it copies the cut into the new layer), and
 * the child dies with the row still pending.  With step > 0 the same write
 * runs while the row is held, then the row is let go.  99: died at a point;
 * 98: died on purpose with the row pending; 0: went through.
 */
static int async_child(struct env *e, int step)
{
	pid_t pid;
	int st;

	tsr_store_close(e->store);
	e->store = NULL;
	pid = fork();
	if (pid == 0) {
		struct async_done d = {PTHREAD_MUTEX_INITIALIZER, 0, 0};
		struct tsr_store *s;
		struct tsr_svol *v;
		struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);

		if (io == NULL || tsr_store_open(e->dir, NULL, &s) ||
		    tsr_store_vol_open(s, "v", &v))
			_exit(1);
		if (tsr_store_snap_spare(s, "v", true) || store_test_spares_idle(s) != 1)
			_exit(3);
		atomic_store(&store_test_commit_hold, 1);
		store_test_crash_at = step;
		if (tsr_store_snap_create_async(s, "v", "new", async_done_cb, &d) != 0)
			_exit(4);
		fill(e->buf, VSIZE, 8, 0);
		if (swrite(v, io, 0, (uint32_t)VSIZE, e->buf, 0))
			_exit(5);
		if (async_calls(&d) != 0)
			_exit(6); /* reported before the row could be durable */
		if (step == 0)
			_exit(98); /* the write is acknowledged, the row pending */
		atomic_store(&store_test_commit_hold, 0);
		if (async_wait(&d) != 0)
			_exit(7);
		store_test_spares_idle(s);
		_exit(0);
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	return WEXITSTATUS(st);
}

static void test_async_crash_points(void **state)
{
	struct env *e = *state;
	struct tsr_snap_info info;
	char vu[37];
	int step, rc, whole = 0, absent = 0;

	make_old(e);
	vol_uuid(e, vu);
	for (step = 0; step <= 6; step++) {
		rc = async_child(e, step);
		if (step == 0)
			assert_int_equal(rc, 98);
		else
			assert_true(rc == 99 || rc == 0);
		/* "old" keeps its cut: its second half came from the new layer,
		 * which the open merged into it when it dropped the pending row */
		check_halves(e, "old", 1, 1);
		if (tsr_store_snap_info(e->store, "v", "new", &info) == 0) {
			whole++;
			check_halves(e, "new", 2, 1);
			assert_int_equal(store_files_count(e->dir, NULL), 3 + 6);
			assert_int_equal(tsr_store_snap_delete(e->store, "v", "new"), 0);
		} else {
			absent++;
		}
		/* the write after the cut was acknowledged before any crash
		 * point of the create's own (steps 1, 2 die before it: seed 2/1) */
		if (step == 1 || step == 2)
			check_halves(e, NULL, 2, 1);
		else
			check_halves(e, NULL, 8, 8);
		store_test_spares_idle(e->store);
		assert_int_equal(store_files_count(e->dir, NULL), 3 + 3);
		assert_int_equal(store_files_count(e->dir, vu), 3);
		/* back to the start: head = seed 2 / 1 */
		{
			struct tsr_svol *v;

			assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
			fill(e->buf, VSIZE, 2, 0);
			assert_int_equal(swrite(v, e->io, 0, (uint32_t)(VSIZE / 2), e->buf, 0), 0);
			fill(e->buf, VSIZE, 1, 0);
			assert_int_equal(swrite(v, e->io, VSIZE / 2, (uint32_t)(VSIZE / 2),
					        e->buf + VSIZE / 2, 0),
					 0);
			tsr_svol_put(v);
		}
	}
	/* absent: died before the row (step 0 and points 1-3); whole: after */
	assert_int_equal(absent, 4);
	assert_int_equal(whole, 3);
}

/* Let the held row go a little later, from another thread (the test's own
 * thread is then waiting inside the gate). */
static void *release_later(void *arg)
{
	(void)arg;
	usleep(200000);
	atomic_store(&store_test_commit_hold, 0);
	return NULL;
}

/* The local layout's home post for the test: one slot, run by the test. */
struct post_box {
	pthread_mutex_t lock;
	void (*fn)(void *arg);
	void *arg;
	int posts;
};

static int test_post(void *post_arg, void (*fn)(void *arg), void *arg)
{
	struct post_box *b = post_arg;

	pthread_mutex_lock(&b->lock);
	b->fn = fn;
	b->arg = arg;
	b->posts++;
	pthread_mutex_unlock(&b->lock);
	return 0;
}

/* Run the posted function once it arrives (bounded by a count). */
static void run_post(struct post_box *b)
{
	void (*fn)(void *arg) = NULL;
	void *arg = NULL;
	int i;

	for (i = 0; i < 60000 && fn == NULL; i++) {
		pthread_mutex_lock(&b->lock);
		fn = b->fn;
		arg = b->arg;
		b->fn = NULL;
		pthread_mutex_unlock(&b->lock);
		if (fn == NULL)
			usleep(500);
	}
	assert_non_null(fn);
	fn(arg);
}

static void layout_write(struct env *e, struct tsr_layout *l, uint16_t s, struct done *d)
{
	fill(e->buf, VSIZE, s, 0);
	d->calls = 0;
	assert_int_equal(tsr_layout_write(l, e->io, 0, (uint32_t)VSIZE, e->buf, 0, done_cb, d), 0);
}

/*
 * The row's commit is out of the gate: with the commit held back by the
 * test hook, the create's request is not called back, yet a write through
 * the same layout completes (a gate still closed would hold it, and
 * wait_done would give up).  Then two creates in a row, and a delete of an
 * older snapshot between a create and its row.
 */
static void test_commit_outside_gate(void **state)
{
	struct env *e = *state;
	struct post_box box = {PTHREAD_MUTEX_INITIALIZER, NULL, NULL, 0};
	struct tsr_snap_req req = {.op = TSR_SNAP_CREATE};
	struct tsr_snap_info info;
	struct tsr_layout *l;
	struct done d, c1 = {0, 0}, c2 = {0, 0};
	unsigned after = atomic_load(&store_test_rows_after_cut);

	make_old(e);
	assert_int_equal(tsr_layout_local_create(e->store, "v", &l), 0);
	tsr_layout_set_home(l, test_post, &box);
	assert_int_equal(store_test_spares_idle(e->store), 1);

	atomic_store(&store_test_commit_hold, 1);
	snprintf(req.snap, sizeof(req.snap), "g1");
	assert_int_equal(tsr_layout_snap(l, &req, done_cb, &c1), 0);
	layout_write(e, l, 8, &d);
	assert_int_equal(wait_done(e->io, &d), 0); /* through the reopened gate */
	assert_int_equal(c1.calls, 0);             /* not durable: no reply yet */
	assert_int_equal(tsr_store_snap_info(e->store, "v", "g1", &info), -ENOENT);
	/* the name is taken meanwhile: a second create of it is refused */
	assert_int_equal(tsr_store_snap_create(e->store, "v", "g1", NULL), -EEXIST);
	atomic_store(&store_test_commit_hold, 0);
	run_post(&box);
	assert_int_equal(c1.calls, 1);
	assert_int_equal(c1.status, 0);
	assert_int_equal(atomic_load(&store_test_rows_after_cut), after + 1);
	assert_int_equal(tsr_store_snap_info(e->store, "v", "g1", &info), 0);
	check_halves(e, "g1", 2, 1);
	check_halves(e, "old", 1, 1);

	/* two creates in a row: the second one's cut comes while the first
	 * one's row is held.  No spare is ready for it (the thread is held on
	 * g2's row), so g3 is cut in the gate and waits there for g2's row
	 * first: a thread lets the row go meanwhile.  Both are called back in
	 * the order they came, g2's reply still waiting for its post. */
	assert_int_equal(store_test_spares_idle(e->store), 2);
	atomic_store(&store_test_commit_hold, 1);
	snprintf(req.snap, sizeof(req.snap), "g2");
	c1.calls = 0;
	assert_int_equal(tsr_layout_snap(l, &req, done_cb, &c1), 0);
	layout_write(e, l, 9, &d);
	assert_int_equal(wait_done(e->io, &d), 0);
	{
		pthread_t t;

		assert_int_equal(pthread_create(&t, NULL, release_later, NULL), 0);
		snprintf(req.snap, sizeof(req.snap), "g3");
		assert_int_equal(tsr_layout_snap(l, &req, done_cb, &c2), 0);
		pthread_join(t, NULL);
	}
	assert_int_equal(c2.calls, 0); /* behind g2 */
	run_post(&box);
	assert_int_equal(c1.calls, 1);
	assert_int_equal(c1.status, 0);
	assert_int_equal(c2.calls, 1);
	assert_int_equal(c2.status, 0);
	check_halves(e, "g2", 8, 8);
	check_halves(e, "g3", 9, 9);
	{
		struct tsr_snap_info *list;
		size_t n;

		assert_int_equal(tsr_store_snap_list(e->store, "v", &list, &n), 0);
		assert_int_equal(n, 4);
		assert_string_equal(list[2].name, "g2");
		assert_string_equal(list[3].name, "g3");
		free(list);
	}

	/* a delete racing a create: with g4's row held, g4 cannot be deleted
	 * yet (not created), an older snapshot can; then g4's row is final */
	assert_int_equal(store_test_spares_idle(e->store), 3);
	atomic_store(&store_test_commit_hold, 1);
	snprintf(req.snap, sizeof(req.snap), "g4");
	c1.calls = 0;
	assert_int_equal(tsr_layout_snap(l, &req, done_cb, &c1), 0);
	layout_write(e, l, 10, &d);
	assert_int_equal(wait_done(e->io, &d), 0);
	assert_int_equal(tsr_store_snap_delete(e->store, "v", "g4"), -ENOENT);
	assert_int_equal(tsr_store_snap_delete(e->store, "v", "g1"), 0);
	atomic_store(&store_test_commit_hold, 0);
	run_post(&box);
	assert_int_equal(c1.calls, 1);
	assert_int_equal(c1.status, 0);
	assert_int_equal(atomic_load(&store_test_rows_after_cut), after + 3);
	store_test_spares_idle(e->store);
	check_halves(e, "old", 1, 1);
	check_halves(e, "g2", 8, 8);
	check_halves(e, "g3", 9, 9);
	check_halves(e, "g4", 9, 9);
	tsr_layout_destroy(l);
	/* all of it survives a reopen; no file beyond the head's, the
	 * snapshots' and (none: the layout let it go) the spare's */
	tsr_store_close(e->store);
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 4 * 3);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	check_halves(e, "g4", 9, 9);
	check_halves(e, "old", 1, 1);
	check_halves(e, NULL, 10, 10);
}

/* Volume w of the reap test: WN blocks, written in VSIZE pieces. */
#define WN    1024u /* 4 MiB */
#define WSIZE ((uint64_t)WN * BS)

static void write_w(struct env *e, struct tsr_svol *w, uint16_t s)
{
	uint64_t off;

	for (off = 0; off < WSIZE; off += VSIZE) {
		fill(e->buf, VSIZE, s, off);
		assert_int_equal(swrite(w, e->io, off, (uint32_t)VSIZE, e->buf, 0), 0);
	}
}

static void check_w(struct env *e, uint16_t s)
{
	struct tsr_svol *w;
	uint64_t off;

	assert_int_equal(tsr_store_vol_open(e->store, "w", &w), 0);
	for (off = 0; off < WSIZE; off += VSIZE) {
		memset(e->buf, 0xa5, VSIZE);
		assert_int_equal(sread(w, e->io, off, (uint32_t)VSIZE, e->buf), 0);
		assert_true(is_filled(e->buf, VSIZE, s, off));
	}
	tsr_svol_put(w);
}

/* Wait (bounded by a count, not a time) until n spares were parked. */
static unsigned wait_made(struct env *e, unsigned n)
{
	unsigned made = 0;
	int i;

	for (i = 0; i < 20000 && (made = store_test_spares_made(e->store)) < n; i++)
		usleep(500);
	return made;
}

/*
 * A spare never waits for the removal of deleted layers' files: with the
 * reaper held inside the removal of the first of three deleted snapshots of
 * w (4 MiB each, every block copied on write), two creates on v each take
 * the parked spare and the next spare is made, every time with all three
 * removals still queued; an async create's row is made final meanwhile too.
 * Let go, the removals finish, no file of the deleted layers is left, and
 * every image reads back, also after a reopen.  With the removals on the
 * spare thread (before 9d8532c), the second spare would never be parked
 * while the removal is held.
 */
static void test_spare_before_reaps(void **state)
{
	struct env *e = *state;
	struct async_done d = {PTHREAD_MUTEX_INITIALIZER, 0, 0};
	struct tsr_svol *v, *w;
	char wu[37];
	int i;

	assert_int_equal(tsr_store_vol_create(e->store, "w", WSIZE, NULL), 0);
	{
		struct tsr_vol_info info;

		assert_int_equal(tsr_store_vol_info(e->store, "w", &info), 0);
		memcpy(wu, info.uuid, 37);
	}
	assert_int_equal(tsr_store_vol_open(e->store, "w", &w), 0);
	for (i = 1; i <= 3; i++) { /* s1..s3, each then rewritten: every block copied */
		char name[8];

		write_w(e, w, (uint16_t)i);
		snprintf(name, sizeof(name), "s%d", i);
		assert_int_equal(tsr_store_snap_create(e->store, "w", name, NULL), 0);
	}
	write_w(e, w, 4);
	tsr_svol_put(w); /* closed: its deletes finish in the caller, files to the reaper */
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 9);

	assert_int_equal(tsr_store_vol_create(e->store, "v", VSIZE, NULL), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	write_all(e, v, 1);
	assert_int_equal(tsr_store_snap_spare(e->store, "v", true), 0);
	assert_int_equal(store_test_spares_idle(e->store), 1);

	/* the reaper held in the first removal, the other two queued behind */
	atomic_store(&store_test_reap_hold, 1);
	assert_int_equal(tsr_store_snap_delete(e->store, "w", "s3"), 0);
	assert_int_equal(tsr_store_snap_delete(e->store, "w", "s2"), 0);
	assert_int_equal(tsr_store_snap_delete(e->store, "w", "s1"), 0);
	atomic_store(&store_test_reaps_left_at_made, 999);

	/* a create takes the spare; the next one is made anyway */
	assert_int_equal(tsr_store_snap_create(e->store, "v", "c1", NULL), 0);
	assert_int_equal(wait_made(e, 2), 2);
	assert_int_equal(atomic_load(&store_test_reaps_left_at_made), 3);
	/* a create whose row the thread makes final, then its next spare */
	write_all(e, v, 2);
	assert_int_equal(tsr_store_snap_create_async(e->store, "v", "c2", async_done_cb, &d), 0);
	assert_int_equal(async_wait(&d), 0);
	assert_int_equal(wait_made(e, 3), 3);
	assert_int_equal(atomic_load(&store_test_reaps_left_at_made), 3);
	/* the deleted layers' files are all still there */
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 9 + 3 + 3 + 3 + 3);

	atomic_store(&store_test_reap_hold, 0);
	assert_int_equal(store_test_spares_idle(e->store), 3);
	/* only w's head, v's head, c1, c2 and the spare are left */
	assert_int_equal(store_files_count(e->dir, wu), 3);
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 3 + 3 + 3 + 3);
	check_w(e, 4);
	check_snap(e, "c1", 1);
	check_snap(e, "c2", 2);
	write_all(e, v, 3);
	check_filled(e, v, VSIZE, 3);
	tsr_svol_put(v);
	tsr_store_close(e->store);
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 3 + 3 + 3);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	check_snap(e, "c1", 1);
	check_snap(e, "c2", 2);
	check_head(e, 3);
	check_w(e, 4);
}

/* Size of the store's catalogue WAL (store.db-wal) and, in *salt, its
 * header's salt-1 (bytes 16-19: SQLite changes it at every WAL restart). */
static off_t wal_state(struct env *e, uint32_t *salt)
{
	char path[PATH_MAX];
	uint8_t hdr[32];
	struct stat st;
	int fd;

	snprintf(path, sizeof(path), "%s/store.db-wal", e->dir);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(pread(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	close(fd);
	memcpy(salt, hdr + 16, 4);
	return st.st_size;
}

/* A create's callback that reads the WAL's state (size, salt-1) when it
 * runs: on the spare thread, right after the row's commit and before the
 * thread goes on to the next spare, whose pending row restarts the WAL. */
struct wal_probe {
	struct async_done d;
	const char *dir;
	off_t size;    /* -1: could not read */
	uint32_t salt;
};

static void wal_probe_cb(void *arg, int status)
{
	struct wal_probe *p = arg;
	char path[PATH_MAX];
	uint8_t hdr[32];
	struct stat st;
	int fd;

	p->size = -1;
	snprintf(path, sizeof(path), "%s/store.db-wal", p->dir);
	fd = open(path, O_RDONLY);
	if (fd >= 0) {
		if (fstat(fd, &st) == 0 && pread(fd, hdr, sizeof(hdr), 0) == (ssize_t)sizeof(hdr)) {
			memcpy(&p->salt, hdr + 16, 4);
			p->size = st.st_size;
		}
		close(fd);
	}
	async_done_cb(&p->d, status);
}

/*
 * The WAL is checkpointed while the spare is prepared, before the cut, so
 * the row's commit on the reply path rewrites blocks store.db-wal already
 * has: three creates on a spare, each after its spare was parked; before
 * each, a checkpoint that copied every frame back has run (the counter grows
 * by one per spare), and the row's commit neither grows the WAL (its frames
 * land in blocks the file has) nor starts it over (the WAL header's salt is
 * the same: the restart and its extra sync were the pending row's, before
 * the cut).  The rows are durable:
 * after a reopen each snapshot reads back what was written before its cut,
 * the head what was written last.  Without wal_settle the counter stays 0
 * and every commit grows the WAL.  The WAL after the commit is read in the
 * create's callback (wal_probe_cb): read after it, the thread may already
 * have restarted the WAL for the next spare (1 of 30 runs failed so under
 * load, salt 0xab4774ab != 0xaa4774ab).
 */
static void test_row_commit_rewrites_wal(void **state)
{
	struct env *e = *state;
	struct tsr_svol *v;
	char sname[64];
	unsigned settled;
	uint32_t salt;
	off_t before;
	int i;

	assert_int_equal(tsr_store_vol_create(e->store, "v", VSIZE, NULL), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	assert_int_equal(tsr_store_snap_spare(e->store, "v", true), 0);
	assert_int_equal(store_test_spares_idle(e->store), 1);
	for (i = 1; i <= 3; i++) {
		struct wal_probe p = {{PTHREAD_MUTEX_INITIALIZER, 0, 0}, e->dir, -1, 0};

		settled = store_test_wal_settled(e->store);
		assert_int_equal(settled, (unsigned)i); /* one per spare made, before the cut */
		write_all(e, v, (uint16_t)i);
		before = wal_state(e, &salt);
		assert_true(before > 0);
		snprintf(sname, sizeof(sname), "s%d", i);
		assert_int_equal(
		    tsr_store_snap_create_async(e->store, "v", sname, wal_probe_cb, &p), 0);
		assert_int_equal(async_wait(&p.d), 0);
		/* the commit wrote inside the file, after the pending row's frames */
		assert_int_equal(p.size, before);
		assert_int_equal(p.salt, salt);
		/* the next spare, and its checkpoint */
		assert_int_equal(store_test_spares_idle(e->store), (unsigned)i + 1);
	}
	write_all(e, v, 9);
	tsr_svol_put(v);
	tsr_store_close(e->store);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	check_snap(e, "s1", 1);
	check_snap(e, "s2", 2);
	check_snap(e, "s3", 3);
	check_head(e, 9);
}

/*
 * Closes and reopens of a volume in a row (fio's nbd engine connects for the
 * size, closes, and connects again for the job; nbdinfo asks NBD_OPT_INFO
 * before NBD_OPT_GO) make one spare: the close leaves it parked (its linger,
 * set to an hour here so that nothing depends on time) and the reopen takes
 * it; a create on the reopened volume cuts it.  Before, each open made one
 * and each close dropped it.  A spare parked before the volume grew (while
 * closed) is replaced at the reopen; with the linger over the thread drops it.
 */
static void test_reopen_one_spare(void **state)
{
	struct env *e = *state;
	unsigned built = atomic_load(&store_test_spares_built);
	char before[4096], path[PATH_MAX];
	struct tsr_snap_info info;
	struct tsr_layout *lay;
	int i;

	assert_int_equal(tsr_store_vol_create(e->store, "v", VSIZE, NULL), 0);
	atomic_store(&store_test_spare_linger_ms, 3600 * 1000);
	for (i = 0; i < 3; i++) {
		assert_int_equal(tsr_layout_local_create(e->store, "v", &lay), 0);
		assert_int_equal(store_test_spares_idle(e->store), 1);
		tsr_layout_destroy(lay);
		assert_int_equal(store_test_spares_idle(e->store), 1);
		assert_int_equal(store_files_count(e->dir, NULL), 3 + 3); /* head + the spare */
	}
	assert_int_equal(atomic_load(&store_test_spares_built) - built, 1);
	/* the create on the reopened volume cuts that spare; then the next one */
	list_files(e->dir, before, sizeof(before));
	assert_int_equal(tsr_layout_local_create(e->store, "v", &lay), 0);
	assert_int_equal(tsr_store_snap_create(e->store, "v", "s1", &info), 0);
	snprintf(path, sizeof(path), "%s.present ", info.uuid);
	assert_non_null(strstr(before, path));
	assert_int_equal(store_test_spares_idle(e->store), 2);
	assert_int_equal(atomic_load(&store_test_spares_built) - built, 2);
	tsr_layout_destroy(lay);
	/* grown while closed: the reopen drops the parked spare, makes one of the
	 * new size, and the create cuts that */
	assert_int_equal(tsr_store_vol_resize(e->store, "v", 2 * VSIZE), 0);
	assert_int_equal(tsr_layout_local_create(e->store, "v", &lay), 0);
	assert_int_equal(store_test_spares_idle(e->store), 3);
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 3 + 3); /* head, s1, the spare */
	list_files(e->dir, before, sizeof(before));
	assert_int_equal(tsr_store_snap_create(e->store, "v", "s2", &info), 0);
	assert_int_equal(info.size, 2 * VSIZE);
	snprintf(path, sizeof(path), "%s.present ", info.uuid);
	assert_non_null(strstr(before, path));
	assert_int_equal(store_test_spares_idle(e->store), 4);
	/* the linger over: the thread drops the parked spare */
	atomic_store(&store_test_spare_linger_ms, 0);
	tsr_layout_destroy(lay);
	assert_int_equal(store_test_spares_idle(e->store), 4);
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 6); /* head, s1, s2 */
	assert_int_equal(atomic_load(&store_test_spares_built) - built, 4);
}

/*
 * A request for a spare while the thread makes one for the volume (a close
 * and a reopen, or a create that found none) waits for that one: one layer
 * made, parked, none thrown away.  Before, the request queued a second one,
 * which the thread made and then removed because the first was parked.
 */
static void test_one_spare_while_making(void **state)
{
	struct env *e = *state;
	unsigned built = atomic_load(&store_test_spares_built);
	struct tsr_snap_info info;

	assert_int_equal(tsr_store_vol_create(e->store, "v", VSIZE, NULL), 0);
	atomic_store(&store_test_make_hold, 1);
	assert_int_equal(tsr_store_snap_spare(e->store, "v", true), 0);
	while (!atomic_load(&store_test_make_held))
		usleep(1000);
	assert_int_equal(tsr_store_snap_spare(e->store, "v", false), 0);
	assert_int_equal(tsr_store_snap_spare(e->store, "v", true), 0);
	atomic_store(&store_test_make_hold, 0);
	assert_int_equal(store_test_spares_idle(e->store), 1);
	assert_int_equal(atomic_load(&store_test_spares_built) - built, 1);
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 3);
	/* a create takes it; the next create comes while the thread makes the
	 * one after: it makes its own files, and its request adds none */
	assert_int_equal(tsr_store_snap_create(e->store, "v", "s1", NULL), 0);
	atomic_store(&store_test_make_hold, 1);
	while (!atomic_load(&store_test_make_held))
		usleep(1000);
	assert_int_equal(tsr_store_snap_create(e->store, "v", "s2", &info), 0);
	atomic_store(&store_test_make_hold, 0);
	assert_int_equal(store_test_spares_idle(e->store), 2);
	assert_int_equal(atomic_load(&store_test_spares_built) - built, 2);
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 6 + 3); /* head, s1, s2, spare */
	assert_int_equal(tsr_store_snap_spare(e->store, "v", false), 0);
}

/* In a child (in_child): a spare made, let go, still parked; no close. */
static int linger_run(struct env *e, int a, int b)
{
	struct tsr_store *s;

	(void)a;
	(void)b;
	if (tsr_store_open(e->dir, NULL, &s) || tsr_store_snap_spare(s, "v", true))
		return 1;
	store_test_spares_idle(s);
	if (tsr_store_snap_spare(s, "v", false))
		return 2;
	store_test_spares_idle(s);
	return store_files_count(e->dir, NULL) == 3 + 3 ? 0 : 3;
}

/*
 * A spare left parked by a close is a parked spare like any other: a crash
 * with it lingering leaves its files and pending row, which the next open
 * removes (no snapshot appears); a store close and a volume delete remove
 * it at once.
 */
static void test_linger_crash(void **state)
{
	struct env *e = *state;
	struct tsr_snap_info *infos;
	size_t n;

	assert_int_equal(tsr_store_vol_create(e->store, "v", VSIZE, NULL), 0);
	atomic_store(&store_test_spare_linger_ms, 3600 * 1000);
	assert_int_equal(in_child(e, linger_run, 0, 0), 0);
	assert_int_equal(store_files_count(e->dir, NULL), 3);
	assert_int_equal(tsr_store_snap_list(e->store, "v", &infos, &n), 0);
	free(infos);
	assert_int_equal(n, 0);
	/* store close */
	assert_int_equal(tsr_store_snap_spare(e->store, "v", true), 0);
	store_test_spares_idle(e->store);
	assert_int_equal(tsr_store_snap_spare(e->store, "v", false), 0);
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 3);
	tsr_store_close(e->store);
	assert_int_equal(store_files_count(e->dir, NULL), 3);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	/* volume delete */
	assert_int_equal(tsr_store_snap_spare(e->store, "v", true), 0);
	store_test_spares_idle(e->store);
	assert_int_equal(tsr_store_snap_spare(e->store, "v", false), 0);
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 3);
	assert_int_equal(tsr_store_vol_delete(e->store, "v"), 0);
	assert_int_equal(store_files_count(e->dir, NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_spare_used, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_spare_resized, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_spare_crash_points, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_delete_reaped, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_async_crash_points, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_commit_outside_gate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_spare_before_reaps, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_row_commit_rewrites_wal, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reopen_one_spare, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_one_spare_while_making, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_linger_crash, setup, teardown),
	};

	tsr_log_set_level(TSR_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
