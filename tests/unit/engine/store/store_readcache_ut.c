/*
 * Unit tests of the store's page-cache reads (engine/store/data.c read_go,
 * tsr_store_opts.read_cache_off, tsr_svol_read_direct): host reads of a
 * file-mode head go through a buffered fd when the store's read cache is on
 * and the io reads buffered fds asynchronously (io_uring), and stay O_DIRECT
 * otherwise; whatever a read is served from, it sees the last completed
 * write, trim, zeroes, rollback or resize, and a block damaged on disk is
 * -EIO.
 *
 * What was read through the cache is told two ways: the store's counter
 * (cached_reads) and the kernel's own (mincore on a mapping of the segment
 * file: a page of the file is resident in the page cache).  O_DIRECT writes
 * drop the range's pages, so right after a write nothing of it is resident,
 * and only a buffered read brings it in.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "store_test.h"

#define MiB (1ull << 20)

struct env {
	char dir[512];
	struct tsr_store *store;
	struct tsr_io *io;
	struct tsr_svol *v;
	char uuid[37];
	uint8_t *buf, *buf2; /* TSR_MAX_IO each, aligned */
};

static int env_open(struct env *e, bool cache_off, enum tsr_io_kind kind)
{
	struct tsr_store_opts o = {.read_cache_off = cache_off};

	e->io = make_io(kind, NULL);
	if (e->io == NULL)
		return 0; /* the test skips (vol) */
	if (scratch_dir(e->dir, sizeof(e->dir)))
		return -1;
	if (tsr_store_open(e->dir, &o, &e->store))
		return -1;
	e->buf = tsr_alloc_aligned(TSR_MAX_IO);
	e->buf2 = tsr_alloc_aligned(TSR_MAX_IO);
	return e->buf && e->buf2 ? 0 : -1;
}

static int setup_env(void **state, bool cache_off, enum tsr_io_kind kind)
{
	struct env *e = calloc(1, sizeof(*e));

	if (e == NULL)
		return -1;
	*state = e;
	return env_open(e, cache_off, kind);
}

static int setup_on(void **state)
{
	return setup_env(state, false, TSR_IO_URING);
}

static int setup_off(void **state)
{
	return setup_env(state, true, TSR_IO_URING);
}

static int setup_aio(void **state)
{
	return setup_env(state, false, TSR_IO_AIO);
}

static int teardown(void **state)
{
	struct env *e = *state;

	if (e->v)
		tsr_svol_put(e->v);
	tsr_store_close(e->store);
	tsr_io_destroy(e->io);
	if (e->dir[0])
		rm_rf(e->dir);
	tsr_free_aligned(e->buf);
	tsr_free_aligned(e->buf2);
	free(e);
	return 0;
}

static void vol(struct env *e, const char *name, uint64_t size)
{
	struct tsr_vol_info info;

	if (e->io == NULL) {
		print_message("skip: the io backend cannot be set up here\n");
		skip();
	}
	assert_int_equal(tsr_store_vol_create(e->store, name, size, &info), 0);
	memcpy(e->uuid, info.uuid, sizeof(e->uuid));
	assert_int_equal(tsr_store_vol_open(e->store, name, &e->v), 0);
}

static uint64_t cached_reads(struct tsr_svol *v)
{
	struct tsr_svol_stats st;

	tsr_svol_get_stats(v, &st);
	return st.cached_reads;
}

/* Pages of [off, off+len) of file path resident in the page cache (mincore). */
static unsigned resident(const char *path, uint64_t off, uint64_t len)
{
	unsigned char vec[256];
	unsigned n = 0, i;
	void *p;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_true(len / BS <= sizeof(vec));
	p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, (off_t)off);
	assert_true(p != MAP_FAILED);
	assert_int_equal(mincore(p, len, vec), 0);
	for (i = 0; i < len / BS; i++)
		n += vec[i] & 1;
	munmap(p, len);
	close(fd);
	return n;
}

static unsigned head_resident(struct env *e, uint64_t off, uint64_t len)
{
	char path[PATH_MAX];

	vol_file(e->dir, e->uuid, "data", path);
	return resident(path, off, len);
}

/* Write seed at off (4 blocks), read it back through the store. */
static void put(struct env *e, uint64_t off, uint64_t seed)
{
	fill(e->buf, 4 * BS, seed, off);
	assert_int_equal(swrite(e->v, e->io, off, 4 * BS, e->buf, 0), 0);
}

static void expect(struct env *e, uint64_t off, uint64_t seed)
{
	memset(e->buf2, 0xee, 4 * BS);
	assert_int_equal(sread(e->v, e->io, off, 4 * BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, 4 * BS, seed, off));
}

static void expect_zero(struct env *e, uint64_t off)
{
	memset(e->buf2, 0xee, 4 * BS);
	assert_int_equal(sread(e->v, e->io, off, 4 * BS, e->buf2), 0);
	assert_true(is_zero(e->buf2, 4 * BS));
}

/* Host reads go through the cache, and see every later write, trim and
 * zeroes (which reach the file with O_DIRECT and fallocate). */
static void test_cached_and_coherent(void **state)
{
	struct env *e = *state;
	uint64_t off = 1 * MiB;

	vol(e, "v", 8 * MiB);
	put(e, off, 1);
	assert_int_equal(head_resident(e, off, 4 * BS), 0); /* O_DIRECT: not cached */
	expect(e, off, 1);
	assert_int_equal(cached_reads(e->v), 1);
	assert_int_equal(head_resident(e, off, 4 * BS), 4); /* the read cached it */
	expect(e, off, 1);                                  /* from the cache */
	assert_int_equal(cached_reads(e->v), 2);

	put(e, off, 2); /* O_DIRECT over cached pages: dropped */
	assert_int_equal(head_resident(e, off, 4 * BS), 0);
	expect(e, off, 2);

	fill(e->buf, 4 * BS, 3, off); /* FUA write too */
	assert_int_equal(swrite(e->v, e->io, off, 4 * BS, e->buf, TSR_WRITE_FUA), 0);
	expect(e, off, 3);

	assert_int_equal(strim(e->v, e->io, off, 4 * BS), 0);
	expect_zero(e, off);
	put(e, off, 4);
	expect(e, off, 4);
	assert_int_equal(szeroes(e->v, e->io, off, 4 * BS, 0), 0);
	expect_zero(e, off);
	put(e, off, 5);
	expect(e, off, 5);
	assert_int_equal(szeroes(e->v, e->io, off, 4 * BS, TSR_WRITE_NO_HOLE), 0);
	expect_zero(e, off);
	/* one block of the cached range rewritten: the others stay cached */
	put(e, off, 6);
	expect(e, off, 6);
	fill(e->buf, BS, 7, off + BS);
	assert_int_equal(swrite(e->v, e->io, off + BS, BS, e->buf, 0), 0);
	assert_int_equal(sread(e->v, e->io, off, 4 * BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, BS, 6, off));
	assert_true(is_filled(e->buf2 + BS, BS, 7, off + BS));
	assert_true(is_filled(e->buf2 + 2 * BS, 2 * BS, 6, off + 2 * BS));
}

/* --read-cache off: O_DIRECT reads, nothing cached, nothing counted. */
static void test_off_reads_direct(void **state)
{
	struct env *e = *state;

	vol(e, "v", 8 * MiB);
	put(e, 0, 1);
	expect(e, 0, 1);
	expect(e, 0, 1);
	assert_int_equal(cached_reads(e->v), 0);
	assert_int_equal(head_resident(e, 0, 4 * BS), 0);
}

/* libaio would block its thread on a buffered read: its reads stay O_DIRECT
 * even with the cache on. */
static void test_libaio_reads_direct(void **state)
{
	struct env *e = *state;

	vol(e, "v", 8 * MiB);
	assert_false(tsr_io_buffered_reads_async(e->io));
	put(e, 0, 1);
	expect(e, 0, 1);
	assert_int_equal(cached_reads(e->v), 0);
	assert_int_equal(head_resident(e, 0, 4 * BS), 0);
}

/* The fault injector around io_uring reads buffered fds as io_uring does,
 * and still injects its read faults on them. */
static void test_fault_backend(void **state)
{
	struct env *e = *state;
	struct tsr_io *fio = make_io(TSR_IO_URING, "read:2:fail=EIO");

	vol(e, "v", 8 * MiB);
	assert_non_null(fio);
	assert_true(tsr_io_buffered_reads_async(fio));
	put(e, 0, 1);
	assert_int_equal(sread(e->v, fio, 0, 4 * BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, 4 * BS, 1, 0));
	assert_int_equal(sread(e->v, fio, 0, 4 * BS, e->buf2), -EIO); /* the 2nd read */
	assert_int_equal(sread(e->v, fio, 0, 4 * BS, e->buf2), 0);
	assert_int_equal(tsr_io_fault_count(fio), 1);
	assert_int_equal(cached_reads(e->v), 2);
	tsr_io_destroy(fio);
}

/* tsr_svol_read_direct reads the disk: it neither counts as cached nor
 * brings a page into the cache, with the cache on. */
static void test_direct_api(void **state)
{
	struct env *e = *state;
	struct done d = {0};

	vol(e, "v", 8 * MiB);
	put(e, 0, 1);
	assert_int_equal(tsr_svol_read_direct(e->v, e->io, 0, 4 * BS, e->buf2, done_cb, &d), 0);
	assert_int_equal(wait_done(e->io, &d), 0);
	assert_true(is_filled(e->buf2, 4 * BS, 1, 0));
	assert_int_equal(cached_reads(e->v), 0);
	assert_int_equal(head_resident(e, 0, 4 * BS), 0);
	expect(e, 0, 1);
	assert_int_equal(cached_reads(e->v), 1);
	assert_int_equal(head_resident(e, 0, 4 * BS), 4);
}

/* A block damaged on disk under a cached one is -EIO on the next read,
 * whether the damage came with O_DIRECT (drops the cached page) or through
 * the cache (a buffered write: the cache holds the damage). */
static void test_corruption_under_cache(void **state)
{
	struct env *e = *state;
	struct tsr_svol_stats st;
	char path[PATH_MAX];
	uint8_t *garbage = tsr_alloc_aligned(BS);
	int fd;

	vol(e, "v", 8 * MiB);
	assert_non_null(garbage);
	memset(garbage, 0x5a, BS);
	put(e, 0, 1);
	expect(e, 0, 1); /* cached */
	vol_file(e->dir, e->uuid, "data", path);
	fd = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, garbage, BS, BS), BS);
	close(fd);
	assert_int_equal(sread(e->v, e->io, 0, 4 * BS, e->buf2), -EIO);
	tsr_svol_get_stats(e->v, &st);
	assert_int_equal(st.crc_errors, 1);

	put(e, 0, 2);
	expect(e, 0, 2); /* cached again */
	fd = open(path, O_WRONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, garbage, BS, 2 * BS), BS);
	close(fd);
	assert_int_equal(sread(e->v, e->io, 2 * BS, BS, e->buf2), -EIO);
	tsr_svol_get_stats(e->v, &st);
	assert_int_equal(st.crc_errors, 2);
	assert_int_equal(sread(e->v, e->io, 3 * BS, BS, e->buf2), 0);
	tsr_free_aligned(garbage);
}

/* Rollback rewrites the head (O_DIRECT writes and trims) while it is closed;
 * its pages cached before are dropped: the reopened head reads the snapshot. */
static void test_rollback(void **state)
{
	struct env *e = *state;

	vol(e, "v", 8 * MiB);
	put(e, 0, 1);
	put(e, 2 * MiB, 2);
	assert_int_equal(tsr_store_snap_create(e->store, "v", "s", NULL), 0);
	put(e, 0, 3);
	put(e, 4 * MiB, 4); /* not in the snapshot: zeros after the rollback */
	expect(e, 0, 3);
	expect(e, 2 * MiB, 2);
	expect(e, 4 * MiB, 4);
	assert_int_equal(head_resident(e, 4 * MiB, 4 * BS), 4);
	tsr_svol_put(e->v);
	e->v = NULL;
	assert_int_equal(tsr_store_vol_rollback(e->store, "v", "s"), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &e->v), 0);
	expect(e, 0, 1);
	expect(e, 2 * MiB, 2);
	expect_zero(e, 4 * MiB);
	assert_true(cached_reads(e->v) > 0);
}

/* A grow opens no new segment below 8 TiB, but the old pages and the new
 * range both read right; a grow past 8 TiB adds a segment whose reads are
 * cached too (its buffered fd opened by the resize). */
static void test_resize(void **state)
{
	struct env *e = *state;
	uint64_t seg = 8ull << 40, before;

	vol(e, "v", 8 * MiB);
	put(e, 8 * MiB - 4 * BS, 1);
	expect(e, 8 * MiB - 4 * BS, 1);
	assert_int_equal(tsr_store_vol_resize(e->store, "v", 16 * MiB), 0);
	expect(e, 8 * MiB - 4 * BS, 1);
	expect_zero(e, 8 * MiB);
	put(e, 8 * MiB, 2);
	expect(e, 8 * MiB, 2);

	assert_int_equal(tsr_store_vol_resize(e->store, "v", seg + 16 * MiB), 0);
	put(e, seg + MiB, 3);
	before = cached_reads(e->v);
	expect(e, seg + MiB, 3);
	assert_int_equal(cached_reads(e->v), before + 1);
	{
		char path[PATH_MAX];

		vol_file(e->dir, e->uuid, "data.1", path);
		assert_int_equal(resident(path, MiB, 4 * BS), 4);
	}
	/* a read across the segment boundary: two pieces, both cached */
	fill(e->buf, 4 * BS, 5, seg - 2 * BS);
	assert_int_equal(swrite(e->v, e->io, seg - 2 * BS, 4 * BS, e->buf, 0), 0);
	expect(e, seg - 2 * BS, 5);
	put(e, seg - 2 * BS, 6);
	expect(e, seg - 2 * BS, 6);
}

/* A clone reads the blocks it does not own from its parent's layers
 * (O_DIRECT, image_read) and its own from its head, cached; both follow
 * writes to the clone. */
static void test_clone(void **state)
{
	struct env *e = *state;
	struct tsr_svol *c;
	uint64_t before;

	vol(e, "v", 8 * MiB);
	put(e, 0, 1);
	put(e, MiB, 2);
	assert_int_equal(tsr_store_snap_create(e->store, "v", "s", NULL), 0);
	assert_int_equal(tsr_store_vol_clone(e->store, "c", "v", "s", NULL), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "c", &c), 0);
	put(e, 0, 3); /* the source moves on */
	assert_int_equal(sread(c, e->io, 0, 4 * BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, 4 * BS, 1, 0));
	assert_int_equal(cached_reads(c), 0); /* not its own: through the image */
	fill(e->buf, 4 * BS, 4, MiB);
	assert_int_equal(swrite(c, e->io, MiB, 4 * BS, e->buf, 0), 0);
	before = cached_reads(c);
	assert_int_equal(sread(c, e->io, MiB, 4 * BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, 4 * BS, 4, MiB));
	assert_int_equal(cached_reads(c), before + 1);
	fill(e->buf, 4 * BS, 5, MiB);
	assert_int_equal(swrite(c, e->io, MiB, 4 * BS, e->buf, 0), 0);
	assert_int_equal(sread(c, e->io, MiB, 4 * BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, 4 * BS, 5, MiB));
	expect(e, MiB, 2); /* the source's own block is untouched */
	tsr_svol_put(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_cached_and_coherent, setup_on, teardown),
	    cmocka_unit_test_setup_teardown(test_off_reads_direct, setup_off, teardown),
	    cmocka_unit_test_setup_teardown(test_libaio_reads_direct, setup_aio, teardown),
	    cmocka_unit_test_setup_teardown(test_fault_backend, setup_on, teardown),
	    cmocka_unit_test_setup_teardown(test_direct_api, setup_on, teardown),
	    cmocka_unit_test_setup_teardown(test_corruption_under_cache, setup_on, teardown),
	    cmocka_unit_test_setup_teardown(test_rollback, setup_on, teardown),
	    cmocka_unit_test_setup_teardown(test_resize, setup_on, teardown),
	    cmocka_unit_test_setup_teardown(test_clone, setup_on, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
