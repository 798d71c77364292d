/*
 * Unit tests of the staging journal (engine/store/stage.c, store.h "staged
 * chunk writes"): stage/commit/list/release round trips with the bytes read
 * back, bytes in place only after commit, supersede, every call error,
 * crash recovery at reopen (committed entries written in place again after a
 * torn in-place write, staged ones kept, released ones gone, torn records
 * ignored), copy-on-write into a snapshot, rollback and delete dropping the
 * journal, generations keeping the file small, journal write faults, and
 * commits served from the copy kept since the stage (or, past the cap and
 * after a reopen, read back from the file).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "store_test.h"

/* test hooks of engine/store/stage.c */
extern uint64_t store_stage_roll_bytes;
extern uint64_t store_stage_hold_bytes;
void stage_counters(struct tsr_svol *svol, uint64_t *writes, uint64_t *records);
void stage_commit_counters(struct tsr_svol *svol, uint64_t *from_memory, uint64_t *read_back);

#define NB    256u /* blocks of the test volume: 1 MiB */
#define VSIZE ((uint64_t)NB * BS)

struct env {
	char dir[512];
	struct tsr_store *store;
	struct tsr_io *io;
	struct tsr_svol *v;
	struct tsr_vol_info info;
	uint8_t *buf; /* 2 MiB, aligned */
};

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	if (e == NULL || scratch_dir(e->dir, sizeof(e->dir)))
		return -1;
	if (tsr_store_open(e->dir, NULL, &e->store))
		return -1;
	e->io = make_io(TSR_IO_AUTO, NULL);
	e->buf = tsr_alloc_aligned(2u << 20);
	if (e->io == NULL || e->buf == NULL)
		return -1;
	if (tsr_store_vol_create(e->store, "v", VSIZE, &e->info))
		return -1;
	if (tsr_store_vol_open(e->store, "v", &e->v))
		return -1;
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	tsr_svol_put(e->v);
	tsr_io_destroy(e->io);
	tsr_store_close(e->store);
	tsr_free_aligned(e->buf);
	rm_rf(e->dir);
	free(e);
	return 0;
}

/* Close everything without releasing anything, open the store and "v" again. */
static void reopen(struct env *e)
{
	tsr_svol_put(e->v);
	e->v = NULL;
	tsr_store_close(e->store);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &e->v), 0);
}

/* As after a crash: the store is not marked clean, so the first load of
 * "v" rolls its committed entries forward. */
static void crash_reopen(struct env *e)
{
	char path[PATH_MAX];

	tsr_svol_put(e->v);
	e->v = NULL;
	tsr_store_close(e->store);
	snprintf(path, sizeof(path), "%s/clean", e->dir);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &e->v), 0);
}

static struct tsr_stage_entry ent(uint64_t txn, uint64_t stripe, uint64_t block, uint32_t nblk)
{
	struct tsr_stage_entry x = {.txn = txn,
				    .stripe = stripe,
				    .offset = block * BS,
				    .length = nblk * BS,
				    .participants = 0x7};

	return x;
}

static int sstage_io(struct tsr_svol *v, struct tsr_io *io, const struct tsr_stage_entry *x,
		     const void *buf)
{
	struct done d = {0};
	int ret = tsr_svol_stage(v, io, x, buf, done_cb, &d);

	return ret ? ret : wait_done(io, &d);
}

/* Stage x with fill(seed) data. */
static int sstage(struct env *e, const struct tsr_stage_entry *x, uint64_t seed)
{
	fill(e->buf, x->length, seed, x->offset);
	return sstage_io(e->v, e->io, x, e->buf);
}

static int scommit(struct env *e, uint64_t txn)
{
	struct done d = {0};
	int ret = tsr_svol_stage_commit(e->v, e->io, txn, done_cb, &d);

	return ret ? ret : wait_done(e->io, &d);
}

static int srelease(struct env *e, uint64_t upto)
{
	struct done d = {0};
	int ret = tsr_svol_stage_release(e->v, e->io, upto, done_cb, &d);

	return ret ? ret : wait_done(e->io, &d);
}

/* Blocks [b, b+n) of v read as fill(seed) (seed 0: zeros). */
static bool reads_as(struct env *e, struct tsr_svol *v, uint64_t b, uint32_t n, uint64_t seed)
{
	memset(e->buf, 0xa5, (size_t)n * BS);
	assert_int_equal(sread(v, e->io, b * BS, n * BS, e->buf), 0);
	return seed ? is_filled(e->buf, (size_t)n * BS, seed, b * BS)
		    : is_zero(e->buf, (size_t)n * BS);
}

/* The live entries; returns their count, fills out[0..max-1]. */
static size_t list(struct env *e, struct tsr_stage_entry *out, size_t max)
{
	struct tsr_stage_entry *v;
	size_t n, i;

	assert_int_equal(tsr_svol_stage_list(e->v, &v, &n), 0);
	if (n == 0)
		assert_null(v);
	for (i = 0; i < n && i < max; i++)
		out[i] = v[i];
	for (i = 1; i < n; i++)
		assert_true(v[i - 1].txn < v[i].txn);
	free(v);
	return n;
}

static void stage_path(struct env *e, char *out)
{
	vol_file(e->dir, e->info.uuid, "stage", out);
}

static void test_round_trip(void **state)
{
	struct env *e = *state;
	struct tsr_stage_entry x = ent(100, 3, 8, 4), l[4];

	assert_int_equal(sstage(e, &x, 11), 0);
	assert_int_equal(list(e, l, 4), 1);
	assert_int_equal(l[0].txn, 100);
	assert_int_equal(l[0].stripe, 3);
	assert_int_equal(l[0].offset, 8 * BS);
	assert_int_equal(l[0].length, 4 * BS);
	assert_int_equal(l[0].participants, 0x7);
	assert_int_equal(l[0].state, TSR_STAGE_STAGED);
	/* nothing in place before the commit */
	assert_true(reads_as(e, e->v, 8, 4, 0));

	assert_int_equal(scommit(e, 100), 0);
	assert_true(reads_as(e, e->v, 8, 4, 11));
	assert_true(reads_as(e, e->v, 0, 8, 0)); /* neighbours untouched */
	assert_true(reads_as(e, e->v, 12, 8, 0));
	assert_int_equal(list(e, l, 4), 1);
	assert_int_equal(l[0].state, TSR_STAGE_COMMITTED);
	/* committing again writes the same bytes again */
	assert_int_equal(scommit(e, 100), 0);
	assert_true(reads_as(e, e->v, 8, 4, 11));

	assert_int_equal(srelease(e, 100), 0);
	assert_int_equal(list(e, l, 4), 0);
	assert_int_equal(scommit(e, 100), -ENOENT);
	assert_true(reads_as(e, e->v, 8, 4, 11));
}

static void test_retry_and_supersede(void **state)
{
	struct env *e = *state;
	struct tsr_stage_entry a = ent(1, 5, 0, 2), b = ent(2, 5, 0, 2), c = ent(3, 6, 4, 1), l[4];

	/* staging a txn again with the same range replaces its bytes */
	assert_int_equal(sstage(e, &a, 1), 0);
	assert_int_equal(sstage(e, &a, 2), 0);
	assert_int_equal(list(e, l, 4), 1);
	/* a newer txn for the same stripe forgets the older one */
	assert_int_equal(sstage(e, &c, 9), 0);
	assert_int_equal(sstage(e, &b, 3), 0);
	assert_int_equal(list(e, l, 4), 2);
	assert_int_equal(l[0].txn, 2);
	assert_int_equal(l[1].txn, 3);
	assert_int_equal(scommit(e, 1), -ENOENT);
	assert_true(reads_as(e, e->v, 0, 2, 0));
	assert_int_equal(scommit(e, 2), 0);
	assert_true(reads_as(e, e->v, 0, 2, 3));

	/* release by upper bound: 2 goes, 3 stays (STAGED: never in place) */
	assert_int_equal(srelease(e, 2), 0);
	assert_int_equal(list(e, l, 4), 1);
	assert_int_equal(l[0].txn, 3);
	assert_int_equal(srelease(e, 3), 0);
	assert_int_equal(list(e, l, 4), 0);
	assert_true(reads_as(e, e->v, 4, 1, 0));

	/* retry of the first txn after a commit: refused */
	a = ent(7, 9, 16, 1);
	assert_int_equal(sstage(e, &a, 4), 0);
	assert_int_equal(scommit(e, 7), 0);
	assert_int_equal(sstage(e, &a, 5), -EEXIST);
	assert_true(reads_as(e, e->v, 16, 1, 4));
}

static void test_errors(void **state)
{
	struct env *e = *state;
	struct tsr_stage_entry x = ent(1, 0, 0, 1), y;
	struct done d = {0};
	struct tsr_svol *ro;

	y = x;
	y.length = 0;
	assert_int_equal(sstage(e, &y, 1), -EINVAL);
	y = x;
	y.length = 100;
	assert_int_equal(sstage(e, &y, 1), -EINVAL);
	y = x;
	y.length = (1u << 20) + BS;
	assert_int_equal(sstage(e, &y, 1), -EINVAL);
	y = x;
	y.offset = 512;
	assert_int_equal(sstage(e, &y, 1), -EINVAL);
	y = x;
	y.offset = VSIZE - BS;
	y.length = 2 * BS;
	assert_int_equal(sstage(e, &y, 1), -EINVAL);
	y = x;
	y.offset = VSIZE;
	assert_int_equal(sstage(e, &y, 1), -EINVAL);
	y = x;
	y.participants = 0;
	assert_int_equal(sstage(e, &y, 1), -EINVAL);
	assert_int_equal(tsr_svol_stage(e->v, e->io, &x, e->buf + 8, done_cb, &d), -EINVAL);
	assert_int_equal(d.calls, 0);

	/* the txn known with another range or stripe */
	assert_int_equal(sstage(e, &x, 1), 0);
	y = x;
	y.length = 2 * BS;
	assert_int_equal(sstage(e, &y, 1), -EEXIST);
	y = x;
	y.stripe = 1;
	assert_int_equal(sstage(e, &y, 1), -EEXIST);
	y = x;
	y.offset = BS;
	assert_int_equal(sstage(e, &y, 1), -EEXIST);

	assert_int_equal(scommit(e, 2), -ENOENT);
	assert_int_equal(tsr_svol_stage_commit(e->v, e->io, 2, done_cb, &d), -ENOENT);
	assert_int_equal(d.calls, 0);

	/* a read-only snapshot handle */
	assert_int_equal(tsr_store_snap_create(e->store, "v", "s", NULL), 0);
	assert_int_equal(tsr_store_snap_open(e->store, "v", "s", &ro), 0);
	assert_int_equal(tsr_svol_stage(ro, e->io, &x, e->buf, done_cb, &d), -EROFS);
	assert_int_equal(tsr_svol_stage_commit(ro, e->io, 1, done_cb, &d), -EROFS);
	assert_int_equal(tsr_svol_stage_release(ro, e->io, 1, done_cb, &d), -EROFS);
	assert_int_equal(d.calls, 0);
	tsr_svol_put(ro);
}

#define INFLIGHT 32

static void test_full(void **state)
{
	struct env *e = *state;
	struct tsr_stage_entry x[INFLIGHT], y, l[1];
	struct done d[INFLIGHT];
	uint64_t i, k;

	fill(e->buf, BS, 1, 0);
	for (i = 0; i < TSR_STAGE_MAX_ENTRIES; i += INFLIGHT) {
		for (k = 0; k < INFLIGHT; k++) {
			memset(&d[k], 0, sizeof(d[k]));
			x[k] = ent(1000 + i + k, i + k, (i + k) % NB, 1);
			assert_int_equal(tsr_svol_stage(e->v, e->io, &x[k], e->buf, done_cb, &d[k]),
					 0);
		}
		for (k = 0; k < INFLIGHT; k++)
			assert_int_equal(wait_done(e->io, &d[k]), 0);
	}
	assert_int_equal(list(e, l, 1), TSR_STAGE_MAX_ENTRIES);
	y = ent(99999, TSR_STAGE_MAX_ENTRIES, 0, 1);
	assert_int_equal(sstage(e, &y, 1), -ENOSPC);
	/* a new txn for a stripe already there takes its place */
	y = ent(99999, 7, 7, 1);
	assert_int_equal(sstage(e, &y, 2), 0);
	assert_int_equal(list(e, l, 1), TSR_STAGE_MAX_ENTRIES);
	/* the index comes back whole from disk */
	reopen(e);
	assert_int_equal(list(e, l, 1), TSR_STAGE_MAX_ENTRIES);
	assert_int_equal(l[0].txn, 1000);
	assert_int_equal(srelease(e, 1000 + TSR_STAGE_MAX_ENTRIES / 2 - 1), 0);
	assert_int_equal(list(e, l, 1), TSR_STAGE_MAX_ENTRIES / 2 + 1); /* + txn 99999 */
	y = ent(100000, TSR_STAGE_MAX_ENTRIES, 0, 1);
	assert_int_equal(sstage(e, &y, 1), 0);
}

/* Overwrite blocks [b, b+n) in place with seed s (a torn or foreign write). */
static void clobber(struct env *e, uint64_t b, uint32_t n, uint64_t s)
{
	fill(e->buf, (size_t)n * BS, s, b * BS);
	assert_int_equal(swrite(e->v, e->io, b * BS, n * BS, e->buf, 0), 0);
}

static void test_recovery(void **state)
{
	struct env *e = *state;
	struct tsr_stage_entry rel = ent(10, 0, 0, 2), com = ent(20, 1, 8, 3),
			       stg = ent(30, 2, 16, 2), l[4];

	/* released: staged, committed, released */
	assert_int_equal(sstage(e, &rel, 1), 0);
	assert_int_equal(scommit(e, 10), 0);
	assert_int_equal(srelease(e, 10), 0);
	/* committed, then its in-place bytes torn */
	assert_int_equal(sstage(e, &com, 2), 0);
	assert_int_equal(scommit(e, 20), 0);
	/* staged only */
	assert_int_equal(sstage(e, &stg, 3), 0);
	clobber(e, 0, 2, 7); /* the released txn's blocks, written since */
	clobber(e, 9, 1, 8); /* one block of the committed txn torn */
	assert_true(reads_as(e, e->v, 9, 1, 8));

	/* a clean shutdown leaves the in-place data alone (every commit's
	 * write had completed; a plain write since is not undone) */
	reopen(e);
	assert_int_equal(list(e, l, 4), 2);
	assert_true(reads_as(e, e->v, 9, 1, 8));

	crash_reopen(e);
	assert_int_equal(list(e, l, 4), 2);
	assert_int_equal(l[0].txn, 20);
	assert_int_equal(l[0].state, TSR_STAGE_COMMITTED);
	assert_int_equal(l[1].txn, 30);
	assert_int_equal(l[1].state, TSR_STAGE_STAGED);
	assert_int_equal(l[1].offset, 16 * BS);
	assert_int_equal(l[1].length, 2 * BS);
	assert_true(reads_as(e, e->v, 8, 3, 2)); /* written in place again */
	/* once per crash: a second load in the same run does not replay */
	clobber(e, 9, 1, 9);
	tsr_svol_put(e->v);
	e->v = NULL;
	assert_int_equal(tsr_store_vol_open(e->store, "v", &e->v), 0);
	assert_true(reads_as(e, e->v, 9, 1, 9));
	clobber(e, 9, 1, 2);
	assert_true(reads_as(e, e->v, 16, 2, 0)); /* staged: not in place */
	assert_true(reads_as(e, e->v, 0, 2, 7));  /* released: never replayed */

	/* the staged one can still be committed after the reopen */
	assert_int_equal(scommit(e, 30), 0);
	assert_true(reads_as(e, e->v, 16, 2, 3));
	assert_int_equal(srelease(e, 30), 0);
	crash_reopen(e);
	assert_int_equal(list(e, l, 4), 0);
	assert_true(reads_as(e, e->v, 0, 2, 7));
	assert_true(reads_as(e, e->v, 8, 3, 2));
	assert_true(reads_as(e, e->v, 16, 2, 3));
}

/* Flip one byte of the journal file at off. */
static void corrupt(struct env *e, uint64_t off)
{
	char path[PATH_MAX];
	uint8_t c;
	int fd;

	stage_path(e, path);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &c, 1, (off_t)off), 1);
	c ^= 0x5a;
	assert_int_equal(pwrite(fd, &c, 1, (off_t)off), 1);
	assert_int_equal(fsync(fd), 0);
	close(fd);
}

static void test_torn_records(void **state)
{
	struct env *e = *state;
	struct tsr_stage_entry a = ent(1, 0, 0, 1), b = ent(2, 1, 1, 2), c = ent(3, 2, 4, 1), l[4];
	char path[PATH_MAX];
	struct stat st;
	uint8_t junk[BS];
	int fd;

	/* layout: GEN header, then a (hdr + 4 KiB), b (hdr + 8 KiB), c (hdr + 4 KiB) */
	assert_int_equal(sstage(e, &a, 1), 0);
	assert_int_equal(sstage(e, &b, 2), 0);
	assert_int_equal(sstage(e, &c, 3), 0);
	tsr_svol_put(e->v);
	e->v = NULL;
	tsr_store_close(e->store);
	e->store = NULL;
	corrupt(e, 4096 + 100);             /* a's header: torn */
	corrupt(e, 3 * 4096 + 4096 + 4000); /* b's data: torn */
	/* a half-written record at the tail */
	stage_path(e, path);
	assert_int_equal(stat(path, &st), 0);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	memset(junk, 0x33, sizeof(junk));
	assert_int_equal(pwrite(fd, junk, sizeof(junk), st.st_size), (ssize_t)sizeof(junk));
	close(fd);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &e->v), 0);
	/* the good record after the torn ones still counts */
	assert_int_equal(list(e, l, 4), 1);
	assert_int_equal(l[0].txn, 3);
	assert_int_equal(scommit(e, 1), -ENOENT);
	assert_int_equal(scommit(e, 2), -ENOENT);
	assert_int_equal(scommit(e, 3), 0);
	assert_true(reads_as(e, e->v, 4, 1, 3));
	/* new records go after everything seen, and survive a reopen */
	a = ent(4, 0, 0, 1);
	assert_int_equal(sstage(e, &a, 4), 0);
	reopen(e);
	assert_int_equal(list(e, l, 4), 2);
	assert_int_equal(l[0].txn, 3);
	assert_int_equal(l[0].state, TSR_STAGE_COMMITTED);
	assert_int_equal(l[1].txn, 4);
}

static void test_snapshot_cow(void **state)
{
	struct env *e = *state;
	struct tsr_stage_entry x = ent(5, 0, 0, 4), l[2];
	struct tsr_svol *s;

	clobber(e, 0, 4, 1);
	assert_int_equal(tsr_store_snap_create(e->store, "v", "s1", NULL), 0);
	assert_int_equal(sstage(e, &x, 2), 0);
	assert_int_equal(scommit(e, 5), 0);
	assert_true(reads_as(e, e->v, 0, 4, 2));
	assert_int_equal(tsr_store_snap_open(e->store, "v", "s1", &s), 0);
	assert_true(reads_as(e, s, 0, 4, 1)); /* the snapshot kept the old bytes */
	tsr_svol_put(s);

	/* rollback drops the journal: entries gone, content the snapshot's */
	x = ent(6, 1, 8, 1);
	assert_int_equal(sstage(e, &x, 3), 0);
	tsr_svol_put(e->v);
	e->v = NULL;
	assert_int_equal(tsr_store_vol_rollback(e->store, "v", "s1"), 0);
	reopen(e);
	assert_int_equal(list(e, l, 2), 0);
	assert_true(reads_as(e, e->v, 0, 4, 1));
	assert_int_equal(scommit(e, 5), -ENOENT);
	/* and works afterwards */
	x = ent(7, 1, 8, 1);
	assert_int_equal(sstage(e, &x, 4), 0);
	assert_int_equal(scommit(e, 7), 0);
	assert_true(reads_as(e, e->v, 8, 1, 4));
	reopen(e);
	assert_int_equal(list(e, l, 2), 1);
	assert_true(reads_as(e, e->v, 8, 1, 4));
}

static void test_generations(void **state)
{
	struct env *e = *state;
	struct tsr_stage_entry x, l[2];
	char path[PATH_MAX];
	struct stat st;
	uint64_t i, saved = store_stage_roll_bytes;

	store_stage_roll_bytes = 64 * 1024;
	for (i = 1; i <= 60; i++) {
		x = ent(i, i % 4, (i % 4) * 4, 4);
		assert_int_equal(sstage(e, &x, i), 0);
		assert_int_equal(scommit(e, i), 0);
		assert_int_equal(srelease(e, i), 0);
	}
	store_stage_roll_bytes = saved;
	stage_path(e, path);
	assert_int_equal(stat(path, &st), 0);
	/* 60 records of 24 KiB would be 1.4 MiB without new generations */
	assert_true(st.st_size <= 128 * 1024);
	x = ent(61, 0, 0, 1);
	assert_int_equal(sstage(e, &x, 61), 0);
	reopen(e);
	assert_int_equal(list(e, l, 2), 1);
	assert_int_equal(l[0].txn, 61);
	for (i = 57; i <= 60; i++)
		assert_true(reads_as(e, e->v, (i % 4) * 4, 4, i));

	/* delete removes the journal */
	tsr_svol_put(e->v);
	e->v = NULL;
	assert_int_equal(tsr_store_vol_delete(e->store, "v"), 0);
	assert_int_equal(stat(path, &st), -1);
	assert_int_equal(tsr_store_vol_create(e->store, "v", VSIZE, &e->info), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &e->v), 0);
	assert_int_equal(list(e, l, 2), 0);
}

static void test_write_fault(void **state)
{
	struct env *e = *state;
	struct tsr_stage_entry x = ent(1, 0, 0, 1), l[2];
	struct tsr_io *bad = make_io(TSR_IO_AUTO, "write:1+:fail=EIO");
	struct done d = {0};

	assert_non_null(bad);
	fill(e->buf, BS, 1, 0);
	assert_int_equal(sstage_io(e->v, bad, &x, e->buf), -EIO);
	assert_true(tsr_io_fault_count(bad) >= 1);
	/* the journal refuses everything until the volume is reopened */
	x = ent(2, 1, 1, 1);
	assert_int_equal(sstage(e, &x, 2), -EIO);
	assert_int_equal(tsr_svol_stage_release(e->v, e->io, 5, done_cb, &d), -EIO);
	assert_int_equal(d.calls, 0);
	tsr_io_destroy(bad);
	reopen(e);
	/* the failed record never became durable */
	assert_int_equal(list(e, l, 2), 0);
	assert_int_equal(sstage(e, &x, 2), 0);
	assert_int_equal(scommit(e, 2), 0);
	assert_true(reads_as(e, e->v, 1, 1, 2));
}

/* A full io queue refuses the call and changes nothing (the caller
 * retries); records of one io wait in its lane for the batch write, so a
 * commit whose read finds the queue full waits for a completion. */
static void test_queue_full(void **state)
{
	struct env *e = *state;
	struct tsr_io_opts o = {.kind = TSR_IO_AUTO, .queue_depth = 2};
	struct tsr_stage_entry x = ent(1, 0, 0, 1), y = ent(2, 1, 1, 1), z = ent(3, 2, 2, 1),
			       w = ent(4, 3, 3, 1), l[4];
	struct done d1 = {0}, d2 = {0}, d3 = {0}, r1 = {0}, r2 = {0};
	struct tsr_io *io = NULL;
	uint8_t *b2 = e->buf + BS, *b3 = e->buf + 2 * BS, *rb = e->buf + 8 * BS;

	assert_int_equal(tsr_io_create(&o, &io), 0);
	assert_int_equal(sstage(e, &x, 1), 0); /* the journal file and header exist */
	fill(b2, BS, 2, BS);
	fill(b3, BS, 3, 2 * BS);
	/* both slots taken: stage, commit and release are refused */
	assert_int_equal(tsr_svol_read(e->v, io, 0, BS, rb, done_cb, &r1), 0);
	assert_int_equal(tsr_svol_read(e->v, io, BS, BS, rb + BS, done_cb, &r2), 0);
	assert_int_equal(tsr_svol_stage(e->v, io, &y, b2, done_cb, &d1), -EAGAIN);
	assert_int_equal(tsr_svol_stage_commit(e->v, io, 1, done_cb, &d3), -EAGAIN);
	assert_int_equal(tsr_svol_stage_release(e->v, io, 1, done_cb, &d2), -EAGAIN);
	assert_int_equal(wait_done(io, &r1), 0);
	assert_int_equal(wait_done(io, &r2), 0);
	assert_int_equal(d1.calls + d2.calls + d3.calls, 0);
	assert_int_equal(list(e, l, 4), 1);
	assert_int_equal(l[0].state, TSR_STAGE_STAGED); /* the refused commit changed nothing */

	/* one slot taken by a read, the other by the lane's no-op read: y and
	 * z and the commit's record join the lane, the commit's read of the
	 * staged bytes finds the queue full and goes once the record is done */
	memset(&r1, 0, sizeof(r1));
	assert_int_equal(tsr_svol_read(e->v, io, 0, BS, rb, done_cb, &r1), 0);
	assert_int_equal(tsr_svol_stage(e->v, io, &y, b2, done_cb, &d1), 0);
	assert_int_equal(tsr_svol_stage(e->v, io, &z, b3, done_cb, &d2), 0);
	assert_int_equal(tsr_svol_stage_commit(e->v, io, 1, done_cb, &d3), 0);
	assert_int_equal(wait_done(io, &d1), 0);
	assert_int_equal(wait_done(io, &d2), 0);
	assert_int_equal(wait_done(io, &d3), 0);
	assert_int_equal(wait_done(io, &r1), 0);
	assert_true(reads_as(e, e->v, 0, 1, 1));
	memset(&d1, 0, sizeof(d1));
	fill(b2, BS, 4, 3 * BS);
	assert_int_equal(tsr_svol_stage(e->v, io, &w, b2, done_cb, &d1), 0);
	assert_int_equal(wait_done(io, &d1), 0);
	tsr_io_destroy(io);
	reopen(e);
	assert_int_equal(list(e, l, 4), 4);
	assert_int_equal(l[0].state, TSR_STAGE_COMMITTED);
	assert_int_equal(l[1].state, TSR_STAGE_STAGED);
	assert_int_equal(l[2].state, TSR_STAGE_STAGED);
	assert_int_equal(scommit(e, 3), 0);
	assert_int_equal(scommit(e, 4), 0);
	assert_true(reads_as(e, e->v, 2, 1, 3));
	assert_true(reads_as(e, e->v, 3, 1, 4));
}

/* The in-place write of a commit is not FUA: a crash may lose it, and the
 * journal redoes it.  Here "lost" is a plain write of other bytes over the
 * range (what the disk holds when the in-place write never got there).
 * Every committed, unreleased record is replayed in commit order, those a
 * newer STAGE of the same stripe superseded too: */
static void test_replay_lost_inplace(void **state)
{
	struct env *e = *state;
	struct tsr_stage_entry t1 = ent(1, 3, 24, 2), t2 = ent(2, 3, 24, 1), t3 = ent(3, 0, 0, 4),
			       t4 = ent(4, 0, 2, 2), t5 = ent(5, 1, 8, 4), t6 = ent(6, 1, 8, 4),
			       t7 = ent(7, 2, 16, 2), t8 = ent(8, 2, 16, 1), l[8];

	/* stripe 3: t1 committed, superseded by t2 (staged), then released up
	 * to 1: the release flushed t1's in-place bytes; never replayed */
	assert_int_equal(sstage(e, &t1, 1), 0);
	assert_int_equal(scommit(e, 1), 0);
	assert_int_equal(sstage(e, &t2, 2), 0);
	assert_int_equal(srelease(e, 1), 0);
	/* stripe 0: t3 committed, then t4 (blocks 2-3) staged only: t3's
	 * record is superseded in the index but its bytes must come back */
	assert_int_equal(sstage(e, &t3, 3), 0);
	assert_int_equal(scommit(e, 3), 0);
	assert_int_equal(sstage(e, &t4, 4), 0);
	/* stripe 1: two committed txns for the same blocks: the newer wins */
	assert_int_equal(sstage(e, &t5, 5), 0);
	assert_int_equal(scommit(e, 5), 0);
	assert_int_equal(sstage(e, &t6, 6), 0);
	assert_int_equal(scommit(e, 6), 0);
	/* stripe 2: t7 committed, superseded by t8 (committed, block 16 only):
	 * block 17 stays t7's, block 16 is t8's */
	assert_int_equal(sstage(e, &t7, 7), 0);
	assert_int_equal(scommit(e, 7), 0);
	assert_int_equal(sstage(e, &t8, 8), 0);
	assert_int_equal(scommit(e, 8), 0);
	assert_true(reads_as(e, e->v, 0, 4, 3));
	assert_true(reads_as(e, e->v, 8, 4, 6));
	assert_int_equal(list(e, l, 8), 4); /* t2, t4, t6, t8 */
	/* the in-place writes "lost" */
	clobber(e, 0, 4, 90);
	clobber(e, 8, 4, 91);
	clobber(e, 16, 2, 92);
	clobber(e, 24, 2, 93); /* written since the release: stays */

	crash_reopen(e);
	assert_int_equal(list(e, l, 8), 4);
	assert_int_equal(l[0].txn, 2);
	assert_int_equal(l[0].state, TSR_STAGE_STAGED);
	assert_int_equal(l[1].txn, 4);
	assert_int_equal(l[1].state, TSR_STAGE_STAGED);
	assert_int_equal(l[2].txn, 6);
	assert_int_equal(l[2].state, TSR_STAGE_COMMITTED);
	assert_int_equal(l[3].txn, 8);
	assert_int_equal(l[3].state, TSR_STAGE_COMMITTED);
	assert_true(reads_as(e, e->v, 0, 4, 3));   /* t3 redone; t4 not in place */
	assert_true(reads_as(e, e->v, 8, 4, 6));   /* t5 then t6: the newer data */
	assert_true(reads_as(e, e->v, 16, 1, 8));  /* t7 then t8 */
	assert_true(reads_as(e, e->v, 17, 1, 7));  /* t7's, t8 did not cover it */
	assert_true(reads_as(e, e->v, 24, 2, 93)); /* released: not replayed */

	/* releasing everything ends the replays */
	assert_int_equal(srelease(e, 8), 0);
	clobber(e, 0, 4, 94);
	crash_reopen(e);
	assert_int_equal(list(e, l, 8), 0);
	assert_true(reads_as(e, e->v, 0, 4, 94));
}

/* A release flushes the volume's data before its record: when the flush
 * fails, nothing is released (the entries stay, a later release works). */
static void test_release_flushes(void **state)
{
	struct env *e = *state;
	struct tsr_stage_entry x = ent(1, 0, 0, 2), l[2];
	struct tsr_io *bad = make_io(TSR_IO_AUTO, "fsync:1+:fail=EIO");
	struct done d = {0};
	int ret;

	assert_non_null(bad);
	assert_int_equal(sstage(e, &x, 1), 0);
	assert_int_equal(scommit(e, 1), 0);
	ret = tsr_svol_stage_release(e->v, bad, 1, done_cb, &d);
	if (ret == 0)
		ret = wait_done(bad, &d);
	assert_int_equal(ret, -EIO);
	assert_true(tsr_io_fault_count(bad) >= 1);
	tsr_io_destroy(bad);
	assert_int_equal(list(e, l, 2), 1);
	assert_int_equal(l[0].state, TSR_STAGE_COMMITTED);
	assert_int_equal(srelease(e, 1), 0);
	assert_int_equal(list(e, l, 2), 0);
	crash_reopen(e);
	assert_int_equal(list(e, l, 2), 0);
	assert_true(reads_as(e, e->v, 0, 2, 1));
}

/* Run the store's log into a temporary file (stderr caught) until
 * log_end(), which returns what was logged (also echoed to stderr). */
static FILE *g_log_file;
static int g_log_saved = -1;

static void log_begin(void)
{
	g_log_file = tmpfile();
	assert_non_null(g_log_file);
	fflush(stderr);
	g_log_saved = dup(STDERR_FILENO);
	assert_true(g_log_saved >= 0);
	assert_true(dup2(fileno(g_log_file), STDERR_FILENO) >= 0);
	tsr_log_set_level(TSR_LOG_DEBUG);
}

static char *log_end(void)
{
	long n;
	char *log;

	fflush(stderr);
	tsr_log_set_level(TSR_LOG_INFO);
	assert_true(dup2(g_log_saved, STDERR_FILENO) >= 0);
	close(g_log_saved);
	n = ftell(g_log_file);
	assert_true(n >= 0);
	log = calloc(1, (size_t)n + 1);
	assert_non_null(log);
	rewind(g_log_file);
	assert_int_equal(fread(log, 1, (size_t)n, g_log_file), (size_t)n);
	fclose(g_log_file);
	fputs(log, stderr);
	return log;
}

/* A step met a full io queue after the call was accepted (a late -EAGAIN:
 * here the fault injector completes it so): the callback gets -EAGAIN, every
 * caller issues the call again, and it succeeds.  No ERROR line for it: the
 * log says "io queue full, issued again" (debug); a real failure (EIO) is
 * still an ERROR.  Ops on bad: write 1 the journal's generation header, 2
 * the STAGE record, 3 the COMMIT record, 4 the commit's in-place write; the
 * first fdatasync is the release's data flush. */
static void test_late_eagain_logged(void **state)
{
	struct env *e = *state;
	struct tsr_stage_entry x = ent(1, 0, 4, 2), l[2];
	struct tsr_io *bad = make_io(TSR_IO_AUTO, "write:4:fail=EAGAIN,fdatasync:1:fail=EAGAIN");
	struct tsr_io *bad2 = make_io(TSR_IO_AUTO, "write:1:fail=EAGAIN,fdatasync:1:fail=EAGAIN");
	struct tsr_io *eio = make_io(TSR_IO_AUTO, "fsync:1+:fail=EIO");
	struct done d = {0};
	char *log;

	assert_non_null(bad);
	assert_non_null(bad2);
	assert_non_null(eio);
	log_begin();
	assert_int_equal(sstage_io(e->v, bad, &x, (fill(e->buf, x.length, 7, x.offset), e->buf)),
			 0);
	/* COMMIT: its in-place write completes with -EAGAIN; issued again */
	assert_int_equal(tsr_svol_stage_commit(e->v, bad, 1, done_cb, &d), 0);
	assert_int_equal(wait_done(bad, &d), -EAGAIN);
	memset(&d, 0, sizeof(d));
	assert_int_equal(tsr_svol_stage_commit(e->v, bad, 1, done_cb, &d), 0);
	assert_int_equal(wait_done(bad, &d), 0);
	/* RELEASE: its data flush completes with -EAGAIN; issued again */
	memset(&d, 0, sizeof(d));
	assert_int_equal(tsr_svol_stage_release(e->v, bad, 1, done_cb, &d), 0);
	assert_int_equal(wait_done(bad, &d), -EAGAIN);
	assert_int_equal(list(e, l, 2), 1);
	memset(&d, 0, sizeof(d));
	assert_int_equal(tsr_svol_stage_release(e->v, bad, 1, done_cb, &d), 0);
	assert_int_equal(wait_done(bad, &d), 0);
	assert_int_equal(list(e, l, 2), 0);
	assert_int_equal(tsr_io_fault_count(bad), 2);
	/* a plain write and a flush (bad2: its first write and fdatasync) */
	fill(e->buf, BS, 8, 0);
	assert_int_equal(swrite(e->v, bad2, 0, BS, e->buf, 0), -EAGAIN);
	assert_int_equal(swrite(e->v, bad2, 0, BS, e->buf, 0), 0);
	assert_int_equal(sflush(e->v, bad2), -EAGAIN);
	assert_int_equal(sflush(e->v, bad2), 0);
	assert_int_equal(tsr_io_fault_count(bad2), 2);
	log = log_end();
	assert_null(strstr(log, " ERROR "));
	assert_non_null(strstr(log, "stage commit: volume v txn 1: write in place: io queue full, "
				    "issued again"));
	assert_non_null(strstr(log, "stage release: volume v: flush data before the release: io "
				    "queue full, issued again"));
	assert_non_null(strstr(log, "write: volume v offset 0 length 4096: io queue full, issued "
				    "again"));
	assert_non_null(strstr(log, "flush: volume v: io queue full, issued again"));
	free(log);
	assert_true(reads_as(e, e->v, 0, 1, 8));
	assert_true(reads_as(e, e->v, 4, 2, 7));

	/* a real failure is an ERROR still */
	log_begin();
	assert_int_equal(sflush(e->v, eio), -EIO);
	log = log_end();
	assert_non_null(strstr(log, " ERROR "));
	assert_non_null(strstr(log, "flush: volume v: Input/output error"));
	free(log);
	tsr_io_destroy(bad);
	tsr_io_destroy(bad2);
	tsr_io_destroy(eio);
}

/* Group commit: stages (and commits) of many transactions issued on one io
 * in one loop pass go out in one journal write; a reopen finds them all. */
static void test_group_commit(void **state)
{
	struct env *e = *state;
	enum { N = 24 };
	struct tsr_stage_entry x[N], l[N + 1];
	struct done d[N];
	uint64_t w0, r0, w1, r1;
	int i;

	assert_int_equal(sstage(e, &(struct tsr_stage_entry){.txn = 1000, .stripe = 1000,
							     .offset = 200 * BS, .length = BS,
							     .participants = 1},
				 1000),
			 0); /* file and header exist */
	memset(d, 0, sizeof(d));
	stage_counters(e->v, &w0, &r0);
	for (i = 0; i < N; i++) {
		x[i] = ent((uint64_t)i + 1, (uint64_t)i, (uint64_t)i * 4, 2);
		fill(e->buf + (size_t)i * 2 * BS, 2 * BS, (uint64_t)i + 1, x[i].offset);
		assert_int_equal(tsr_svol_stage(e->v, e->io, &x[i], e->buf + (size_t)i * 2 * BS,
						done_cb, &d[i]),
				 0);
	}
	for (i = 0; i < N; i++)
		assert_int_equal(wait_done(e->io, &d[i]), 0);
	stage_counters(e->v, &w1, &r1);
	assert_int_equal(r1 - r0, N);
	assert_true(w1 - w0 >= 1);
	assert_true(w1 - w0 <= 2); /* one batch (STAGE_BATCH_MAX 32) */

	/* the commits' records likewise */
	memset(d, 0, sizeof(d));
	for (i = 0; i < N; i++)
		assert_int_equal(tsr_svol_stage_commit(e->v, e->io, (uint64_t)i + 1, done_cb, &d[i]),
				 0);
	for (i = 0; i < N; i++)
		assert_int_equal(wait_done(e->io, &d[i]), 0);
	stage_counters(e->v, &w0, &r0);
	assert_int_equal(r0 - r1, N);
	assert_true(w0 - w1 <= 2);
	for (i = 0; i < N; i++)
		assert_true(reads_as(e, e->v, (uint64_t)i * 4, 2, (uint64_t)i + 1));

	/* every record of the batches counts after a crash */
	for (i = 0; i < N; i++)
		clobber(e, (uint64_t)i * 4, 2, 500);
	crash_reopen(e);
	assert_int_equal(list(e, l, N + 1), N + 1);
	for (i = 0; i < N; i++) {
		assert_int_equal(l[i].txn, (uint64_t)i + 1);
		assert_int_equal(l[i].state, TSR_STAGE_COMMITTED);
		assert_true(reads_as(e, e->v, (uint64_t)i * 4, 2, (uint64_t)i + 1));
	}
	assert_int_equal(l[N].state, TSR_STAGE_STAGED);
}

/* Two threads, each with its own io, on one volume: appends, commits and
 * releases interleave, and releases that empty the journal start new
 * generations while the other thread stages (it waits on its own io). */
struct worker_arg {
	struct env *e;
	bool high; /* txns above every txn of the other thread */
	int rounds;
	int errors;       /* unexpected results */
	int lost_commits; /* commits that found their txn released by the other */
	uint64_t last_seed[4];
};

static void *stage_worker(void *p)
{
	struct worker_arg *a = p;
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
	uint8_t *buf = tsr_alloc_aligned(4 * BS);
	int i, ret;

	if (io == NULL || buf == NULL) {
		a->errors++;
		goto out;
	}
	for (i = 1; i <= a->rounds; i++) {
		uint64_t txn = (a->high ? 1ull << 40 : 0) + (uint64_t)i;
		uint64_t stripe = (a->high ? 100 : 0) + (uint64_t)(i % 4);
		uint64_t block = (a->high ? 128 : 0) + (uint64_t)(i % 4) * 4;
		struct tsr_stage_entry x = ent(txn, stripe, block, 4);
		struct done d = {0};
		uint64_t seed = (a->high ? 1000 : 0) + (uint64_t)i;

		fill(buf, 4 * BS, seed, block * BS);
		if (sstage_io(a->e->v, io, &x, buf) != 0) {
			a->errors++;
			continue;
		}
		ret = tsr_svol_stage_commit(a->e->v, io, txn, done_cb, &d);
		if (ret == 0)
			ret = wait_done(io, &d);
		if (ret == -ENOENT && !a->high) {
			a->lost_commits++;
			continue;
		}
		if (ret) {
			a->errors++;
			continue;
		}
		a->last_seed[i % 4] = seed;
		memset(&d, 0, sizeof(d));
		ret = tsr_svol_stage_release(a->e->v, io, txn, done_cb, &d);
		if (ret == 0)
			ret = wait_done(io, &d);
		if (ret)
			a->errors++;
	}
out:
	tsr_free_aligned(buf);
	tsr_io_destroy(io);
	return NULL;
}

static void test_threads(void **state)
{
	struct env *e = *state;
	struct worker_arg a = {.e = e, .high = false, .rounds = 150},
			  b = {.e = e, .high = true, .rounds = 150};
	struct tsr_stage_entry l[2];
	pthread_t ta, tb;
	uint64_t saved = store_stage_roll_bytes, k;

	store_stage_roll_bytes = 32 * 1024;
	assert_int_equal(pthread_create(&ta, NULL, stage_worker, &a), 0);
	assert_int_equal(pthread_create(&tb, NULL, stage_worker, &b), 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	store_stage_roll_bytes = saved;
	{
		char path[PATH_MAX];
		struct stat st;

		stage_path(e, path);
		assert_int_equal(stat(path, &st), 0);
		/* 900 records, 8.4 MiB without new generations */
		assert_true(st.st_size < 6 * 1024 * 1024);
	}
	assert_int_equal(a.errors, 0);
	assert_int_equal(b.errors, 0);
	assert_int_equal(list(e, l, 2), 0);
	for (k = 0; k < 4; k++) {
		assert_true(reads_as(e, e->v, 128 + k * 4, 4, b.last_seed[k]));
		if (a.lost_commits == 0)
			assert_true(reads_as(e, e->v, k * 4, 4, a.last_seed[k]));
	}
	crash_reopen(e);
	assert_int_equal(list(e, l, 2), 0);
	for (k = 0; k < 4; k++)
		assert_true(reads_as(e, e->v, 128 + k * 4, 4, b.last_seed[k]));
}

/* Commits served from memory / read back since the volume was loaded. */
static void commit_counts(struct env *e, uint64_t *mem, uint64_t *rd)
{
	stage_commit_counters(e->v, mem, rd);
}

/* A commit writes the copy kept since the stage: not the caller's buffer
 * (reused at once), not the journal file (its data is damaged here, which a
 * read-back would refuse with -EIO). */
static void test_commit_from_memory(void **state)
{
	struct env *e = *state;
	struct tsr_stage_entry x = ent(100, 3, 8, 4), a = ent(1, 5, 0, 2), b = ent(2, 5, 0, 2);
	uint64_t mem, rd;

	/* the volume's first stage: GEN header at 0, its header at 4096,
	 * its data at 8192 */
	assert_int_equal(sstage(e, &x, 11), 0);
	memset(e->buf, 0x77, 4 * BS); /* the caller's buffer reused */
	corrupt(e, 2 * 4096 + 100);
	assert_int_equal(scommit(e, 100), 0);
	assert_true(reads_as(e, e->v, 8, 4, 11));
	assert_true(reads_as(e, e->v, 0, 8, 0));
	commit_counts(e, &mem, &rd);
	assert_int_equal(mem, 1);
	assert_int_equal(rd, 0);
	/* the copy went with that commit: a second commit of the txn reads
	 * the file, whose damaged data fails its CRC32C */
	assert_int_equal(scommit(e, 100), -EIO);
	commit_counts(e, &mem, &rd);
	assert_int_equal(mem, 1);
	assert_int_equal(rd, 1);
	reopen(e); /* a failed commit leaves the journal usable; a reopen anyway */
	assert_int_equal(srelease(e, 100), 0);

	/* staged again with new bytes / superseded: the newest copy is used */
	assert_int_equal(sstage(e, &a, 1), 0);
	assert_int_equal(sstage(e, &a, 2), 0);
	assert_int_equal(sstage(e, &b, 3), 0);
	assert_int_equal(scommit(e, 2), 0);
	assert_true(reads_as(e, e->v, 0, 2, 3));
	commit_counts(e, &mem, &rd);
	assert_int_equal(mem, 1);
	assert_int_equal(rd, 0);
}

/* Past the per-journal cap a stage keeps no copy and its commit reads the
 * bytes back from the file; copies are given back to the cap when their
 * entry is committed, released or superseded; after a reopen every commit
 * reads the file. */
static void test_commit_fallback(void **state)
{
	struct env *e = *state;
	struct tsr_stage_entry x1 = ent(1, 0, 0, 4), x2 = ent(2, 1, 8, 2), x3 = ent(3, 2, 16, 4),
			       x4 = ent(4, 3, 24, 4), x5 = ent(5, 4, 32, 1);
	uint64_t saved = store_stage_hold_bytes, mem, rd;

	store_stage_hold_bytes = 4 * BS;
	assert_int_equal(sstage(e, &x1, 1), 0); /* 16 KiB held: the cap */
	assert_int_equal(sstage(e, &x2, 2), 0); /* over: no copy */
	assert_int_equal(scommit(e, 2), 0);
	commit_counts(e, &mem, &rd);
	assert_int_equal(mem, 0);
	assert_int_equal(rd, 1);
	assert_true(reads_as(e, e->v, 8, 2, 2));
	assert_int_equal(scommit(e, 1), 0); /* its copy goes back to the cap */
	commit_counts(e, &mem, &rd);
	assert_int_equal(mem, 1);
	assert_int_equal(rd, 1);
	assert_true(reads_as(e, e->v, 0, 4, 1));

	/* a released (never committed) entry gives its copy back */
	assert_int_equal(sstage(e, &x3, 3), 0);
	assert_int_equal(srelease(e, 3), 0);
	assert_int_equal(sstage(e, &x4, 4), 0);
	assert_int_equal(scommit(e, 4), 0);
	commit_counts(e, &mem, &rd);
	assert_int_equal(mem, 2);
	assert_int_equal(rd, 1);
	assert_true(reads_as(e, e->v, 16, 4, 0));
	assert_true(reads_as(e, e->v, 24, 4, 4));

	/* no copy survives a reopen: the commit reads the file */
	store_stage_hold_bytes = saved;
	assert_int_equal(sstage(e, &x5, 5), 0);
	reopen(e);
	assert_int_equal(scommit(e, 5), 0);
	commit_counts(e, &mem, &rd);
	assert_int_equal(mem, 0);
	assert_int_equal(rd, 1);
	assert_true(reads_as(e, e->v, 32, 1, 5));
}

/* Device mode: no journal, every call -EOPNOTSUPP (needs root and a loop device). */
static void test_device_mode(void **state)
{
	struct env *e = *state;
	char backing[600], cmd[1400], loop[64] = "", dir[600];
	struct tsr_store_opts o = {0};
	struct tsr_stage_entry x = ent(1, 0, 0, 1), *l;
	struct tsr_store *st;
	struct tsr_svol *v;
	struct done d = {0};
	size_t n;
	FILE *f;
	int fd, ret;

	if (geteuid() != 0 || access("/dev/loop-control", F_OK) != 0)
		skip(); /* needs root and loop devices */
	snprintf(backing, sizeof(backing), "%s/backing", e->dir);
	fd = open(backing, O_RDWR | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 16 << 20), 0);
	close(fd);
	snprintf(cmd, sizeof(cmd), "losetup -f --show %s 2>/dev/null", backing);
	f = popen(cmd, "r");
	if (f == NULL || fgets(loop, sizeof(loop), f) == NULL) {
		if (f)
			pclose(f);
		skip();
	}
	pclose(f);
	loop[strcspn(loop, "\n")] = 0;
	snprintf(dir, sizeof(dir), "%s/devstore", e->dir);
	o.device = loop;
	ret = tsr_store_open(dir, &o, &st);
	if (ret == 0) {
		assert_int_equal(tsr_store_vol_create(st, "d", VSIZE, NULL), 0);
		assert_int_equal(tsr_store_vol_open(st, "d", &v), 0);
		fill(e->buf, BS, 1, 0);
		assert_int_equal(tsr_svol_stage(v, e->io, &x, e->buf, done_cb, &d), -EOPNOTSUPP);
		assert_int_equal(tsr_svol_stage_commit(v, e->io, 1, done_cb, &d), -EOPNOTSUPP);
		assert_int_equal(tsr_svol_stage_release(v, e->io, 1, done_cb, &d), -EOPNOTSUPP);
		assert_int_equal(tsr_svol_stage_list(v, &l, &n), -EOPNOTSUPP);
		assert_int_equal(d.calls, 0);
		/* the ordinary data path is untouched */
		assert_int_equal(swrite(v, e->io, 0, BS, e->buf, TSR_WRITE_FUA), 0);
		tsr_svol_put(v);
		assert_int_equal(tsr_store_vol_delete(st, "d"), 0);
		tsr_store_close(st);
	}
	snprintf(cmd, sizeof(cmd), "losetup -d %s", loop);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(ret, 0); /* the store opened on the device */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_retry_and_supersede, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_full, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_recovery, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_torn_records, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_cow, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_generations, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_fault, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_queue_full, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_replay_lost_inplace, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_release_flushes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_late_eagain_logged, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_device_mode, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_commit_from_memory, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_commit_fallback, setup, teardown),
	};

	tsr_log_set_level(TSR_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
