/*
 * Unit tests of the store's data path (engine/store/data.c): every test runs
 * on io_uring and on libaio (skipped with the reason where a backend cannot
 * be set up), on real O_DIRECT files under /var/tmp (or TSR_TEST_DIR).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "store_test.h"

extern _Atomic unsigned store_test_entry_pwrites; /* engine/store/data.c */

#define MiB (1ull << 20)
#define TiB (1ull << 40)

struct backend {
	enum tsr_io_kind kind;
	const char *name;
};

struct env {
	const struct backend *be;
	char dir[512];
	struct tsr_store *store;
	struct tsr_io *io;
	struct tsr_svol *v;
	char uuid[37];
	uint8_t *buf;  /* 32 MiB, aligned */
	uint8_t *buf2; /* 32 MiB, aligned */
};

static const struct backend g_uring = {TSR_IO_URING, "io_uring"};
static const struct backend g_aio = {TSR_IO_AIO, "libaio"};

static int setup(void **state)
{
	const struct backend *be = *state;
	struct env *e = calloc(1, sizeof(*e));

	if (e == NULL)
		return -1;
	e->be = be;
	*state = e;
	e->io = make_io(be->kind, NULL);
	if (e->io == NULL)
		return 0; /* the test skips */
	if (scratch_dir(e->dir, sizeof(e->dir)))
		return -1;
	if (tsr_store_open(e->dir, NULL, &e->store))
		return -1;
	e->buf = tsr_alloc_aligned(TSR_MAX_IO);
	e->buf2 = tsr_alloc_aligned(TSR_MAX_IO);
	return e->buf && e->buf2 ? 0 : -1;
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

/* Create and open volume "v" of size bytes; skip when the backend is missing. */
static void vol(struct env *e, uint64_t size)
{
	struct tsr_vol_info info;

	if (e->io == NULL) {
		print_message("skip: %s backend cannot be set up here\n", e->be->name);
		skip();
	}
	assert_int_equal(tsr_store_vol_create(e->store, "v", size, &info), 0);
	memcpy(e->uuid, info.uuid, sizeof(e->uuid));
	assert_int_equal(tsr_store_vol_open(e->store, "v", &e->v), 0);
}

static void test_roundtrip(void **state)
{
	struct env *e = *state;
	struct tsr_svol_stats st;
	uint32_t cur, prev;

	vol(e, 64 * MiB);
	assert_string_equal(tsr_io_name(e->io), e->be->name);
	fill(e->buf, BS, 1, 0);
	assert_int_equal(swrite(e->v, e->io, 0, BS, e->buf, 0), 0);
	read_entry(e->dir, e->uuid, 0, &cur, &prev);
	assert_int_equal(cur, stored_crc(e->buf));
	assert_int_equal(prev, 0); /* a zero block before */

	/* crossing a 1 MiB region, FUA */
	fill(e->buf, 16 * BS, 2, MiB - 8 * BS);
	assert_int_equal(swrite(e->v, e->io, MiB - 8 * BS, 16 * BS, e->buf, TSR_WRITE_FUA), 0);
	/* the largest request */
	fill(e->buf, TSR_MAX_IO, 3, 16 * MiB);
	assert_int_equal(swrite(e->v, e->io, 16 * MiB, TSR_MAX_IO, e->buf, 0), 0);
	assert_int_equal(sflush(e->v, e->io), 0);

	assert_int_equal(sread(e->v, e->io, 0, BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, BS, 1, 0));
	assert_int_equal(sread(e->v, e->io, MiB - 8 * BS, 16 * BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, 16 * BS, 2, MiB - 8 * BS));
	assert_int_equal(sread(e->v, e->io, 16 * MiB, TSR_MAX_IO, e->buf2), 0);
	assert_true(is_filled(e->buf2, TSR_MAX_IO, 3, 16 * MiB));
	/* never written: zeros */
	assert_int_equal(sread(e->v, e->io, 8 * MiB, 4 * BS, e->buf2), 0);
	assert_true(is_zero(e->buf2, 4 * BS));

	/* overwrite: {new, old} */
	{
		uint8_t old[BS];

		fill(old, BS, 1, 0);
		fill(e->buf, BS, 4, 0);
		assert_int_equal(swrite(e->v, e->io, 0, BS, e->buf, 0), 0);
		read_entry(e->dir, e->uuid, 0, &cur, &prev);
		assert_int_equal(cur, stored_crc(e->buf));
		assert_int_equal(prev, stored_crc(old));
		assert_int_equal(sread(e->v, e->io, 0, BS, e->buf2), 0);
		assert_true(is_filled(e->buf2, BS, 4, 0));
	}

	tsr_svol_get_stats(e->v, &st);
	assert_int_equal(st.writes, 4);
	assert_int_equal(st.bytes_written, BS + 16 * BS + TSR_MAX_IO + BS);
	assert_int_equal(st.reads, 5);
	assert_int_equal(st.flushes, 1);
	assert_int_equal(st.crc_errors, 0);
}

static void test_bounds(void **state)
{
	struct env *e = *state;
	struct done d = {0};

	vol(e, MiB);
	assert_int_equal(tsr_svol_read(e->v, e->io, 1, BS, e->buf, done_cb, &d), -EINVAL);
	assert_int_equal(tsr_svol_read(e->v, e->io, 0, 0, e->buf, done_cb, &d), -EINVAL);
	assert_int_equal(tsr_svol_read(e->v, e->io, 0, 100, e->buf, done_cb, &d), -EINVAL);
	assert_int_equal(tsr_svol_read(e->v, e->io, 0, BS, e->buf + 1, done_cb, &d), -EINVAL);
	assert_int_equal(tsr_svol_read(e->v, e->io, 0, TSR_MAX_IO + BS, e->buf, done_cb, &d),
			 -EINVAL);
	assert_int_equal(tsr_svol_read(e->v, e->io, MiB, BS, e->buf, done_cb, &d), -ENOSPC);
	assert_int_equal(tsr_svol_write(e->v, e->io, MiB - BS, 2 * BS, e->buf, 0, done_cb, &d),
			 -ENOSPC);
	assert_int_equal(tsr_svol_trim(e->v, e->io, MiB, BS, done_cb, &d), -ENOSPC);
	assert_int_equal(tsr_svol_write_zeroes(e->v, e->io, 3, BS, 0, done_cb, &d), -EINVAL);
	tsr_io_submit(e->io);
	tsr_io_poll(e->io, 0, false);
	assert_int_equal(d.calls, 0); /* an error return never calls back */
}

static void test_16tib(void **state)
{
	struct env *e = *state;
	struct tsr_vol_info info;
	struct tsr_extent ext[8];
	uint64_t last = 16 * TiB - BS;
	size_t n;

	vol(e, 16 * TiB);
	fill(e->buf, BS, 5, last);
	assert_int_equal(swrite(e->v, e->io, last, BS, e->buf, 0), 0);
	fill(e->buf, BS, 6, 8 * TiB);
	assert_int_equal(swrite(e->v, e->io, 8 * TiB, BS, e->buf, 0), 0);
	/* a write across the two 8 TiB segment files */
	fill(e->buf, 4 * BS, 7, 8 * TiB - 2 * BS);
	assert_int_equal(swrite(e->v, e->io, 8 * TiB - 2 * BS, 4 * BS, e->buf, TSR_WRITE_FUA), 0);
	assert_int_equal(sflush(e->v, e->io), 0);

	assert_int_equal(sread(e->v, e->io, last, BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, BS, 5, last));
	assert_int_equal(sread(e->v, e->io, 8 * TiB - 2 * BS, 4 * BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, 4 * BS, 7, 8 * TiB - 2 * BS));
	assert_int_equal(sread(e->v, e->io, 8 * TiB + 2 * BS, BS, e->buf2), 0);
	assert_true(is_zero(e->buf2, BS));

	assert_int_equal(tsr_store_vol_info(e->store, "v", &info), 0);
	assert_int_equal(info.size, 16 * TiB);
	assert_true(info.allocated >= 5 * BS);
	assert_true(info.allocated < MiB);

	/* allocation map around the segment boundary */
	assert_int_equal(tsr_svol_block_status(e->v, 8 * TiB - MiB, 2 * MiB, ext, 8, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(ext[0].offset, 8 * TiB - MiB);
	assert_int_equal(ext[0].length, MiB - 2 * BS);
	assert_int_equal(ext[0].flags, TSR_EXTENT_HOLE | TSR_EXTENT_ZERO);
	assert_int_equal(ext[1].offset, 8 * TiB - 2 * BS);
	assert_int_equal(ext[1].length, 4 * BS);
	assert_int_equal(ext[1].flags, 0);
	assert_int_equal(ext[2].length, MiB - 2 * BS);
	/* max extents honoured */
	assert_int_equal(tsr_svol_block_status(e->v, 8 * TiB - MiB, 2 * MiB, ext, 2, &n), 0);
	assert_int_equal(n, 2);

	/* a trim of the whole volume skips the unwritten crc table and leaves only holes */
	assert_int_equal(strim(e->v, e->io, 0, 16 * TiB), 0);
	assert_int_equal(tsr_svol_block_status(e->v, 0, 16 * TiB, ext, 8, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(ext[0].length, 16 * TiB);
	assert_int_equal(sread(e->v, e->io, last, BS, e->buf2), 0);
	assert_true(is_zero(e->buf2, BS));
}

static void test_corruption(void **state)
{
	struct env *e = *state;
	struct tsr_svol_stats st;
	char path[PATH_MAX];
	char garbage[BS];
	int fd;

	vol(e, MiB);
	fill(e->buf, 3 * BS, 8, 0);
	assert_int_equal(swrite(e->v, e->io, 0, 3 * BS, e->buf, 0), 0);
	/* behind the store's back */
	memset(garbage, 0x5a, sizeof(garbage));
	vol_file(e->dir, e->uuid, "data", path);
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, garbage, BS, BS), BS);
	assert_int_equal(fsync(fd), 0);
	close(fd);

	assert_int_equal(sread(e->v, e->io, BS, BS, e->buf2), -EIO);
	tsr_svol_get_stats(e->v, &st);
	assert_int_equal(st.crc_errors, 1);
	assert_int_equal(sread(e->v, e->io, 0, BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, BS, 8, 0));
	assert_int_equal(sread(e->v, e->io, 2 * BS, BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, BS, 8, 2 * BS));
	assert_int_equal(sread(e->v, e->io, 0, 3 * BS, e->buf2), -EIO);
	tsr_svol_get_stats(e->v, &st);
	assert_int_equal(st.crc_errors, 2);
	assert_int_equal(st.reads, 2);
	/* rewriting the block heals it */
	fill(e->buf, BS, 9, BS);
	assert_int_equal(swrite(e->v, e->io, BS, BS, e->buf, 0), 0);
	assert_int_equal(sread(e->v, e->io, BS, BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, BS, 9, BS));
}

static void test_trim_and_zeroes(void **state)
{
	struct env *e = *state;
	struct tsr_svol_stats st;
	struct tsr_extent ext[8];
	struct tsr_vol_info info;
	uint32_t cur, prev;
	size_t n;

	vol(e, 64 * MiB);
	fill(e->buf, 4 * BS, 10, 0);
	assert_int_equal(swrite(e->v, e->io, 0, 4 * BS, e->buf, 0), 0);
	assert_int_equal(strim(e->v, e->io, BS, 2 * BS), 0);
	read_entry(e->dir, e->uuid, 1, &cur, &prev);
	assert_int_equal(cur, 0);
	assert_int_equal(prev, stored_crc(e->buf + BS));
	assert_int_equal(sread(e->v, e->io, 0, 4 * BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, BS, 10, 0));
	assert_true(is_zero(e->buf2 + BS, 2 * BS));
	assert_true(is_filled(e->buf2 + 3 * BS, BS, 10, 3 * BS));
	assert_int_equal(tsr_svol_block_status(e->v, 0, 64 * MiB, ext, 8, &n), 0);
	assert_int_equal(n, 4);
	assert_int_equal(ext[0].flags, 0);
	assert_int_equal(ext[0].length, BS);
	assert_int_equal(ext[1].flags, TSR_EXTENT_HOLE | TSR_EXTENT_ZERO);
	assert_int_equal(ext[1].offset, BS);
	assert_int_equal(ext[1].length, 2 * BS);
	assert_int_equal(ext[2].flags, 0);
	assert_int_equal(ext[3].offset, 4 * BS);
	assert_int_equal(ext[3].flags, TSR_EXTENT_HOLE | TSR_EXTENT_ZERO);

	/* write_zeroes without NO_HOLE punches */
	assert_int_equal(szeroes(e->v, e->io, 0, BS, 0), 0);
	assert_int_equal(tsr_svol_block_status(e->v, 0, 4 * BS, ext, 8, &n), 0);
	assert_int_equal(ext[0].flags, TSR_EXTENT_HOLE | TSR_EXTENT_ZERO);
	assert_int_equal(ext[0].length, 3 * BS);

	/* NO_HOLE allocates zeros: 20 MiB over data and holes, in chunks, with FUA */
	fill(e->buf, MiB, 11, 8 * MiB);
	assert_int_equal(swrite(e->v, e->io, 8 * MiB, MiB, e->buf, 0), 0);
	assert_int_equal(szeroes(e->v, e->io, 4 * MiB, 20 * MiB, TSR_WRITE_NO_HOLE | TSR_WRITE_FUA),
			 0);
	assert_int_equal(sread(e->v, e->io, 4 * MiB, 20 * MiB, e->buf2), 0);
	assert_true(is_zero(e->buf2, 20 * MiB));
	assert_int_equal(tsr_svol_block_status(e->v, 4 * MiB, 20 * MiB, ext, 8, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(ext[0].flags, 0);
	assert_int_equal(tsr_store_vol_info(e->store, "v", &info), 0);
	assert_true(info.allocated >= 20 * MiB);

	tsr_svol_get_stats(e->v, &st);
	assert_int_equal(st.trims, 2);
	assert_int_equal(st.crc_errors, 0);
}

static void test_resize_reads_zeros(void **state)
{
	struct env *e = *state;

	vol(e, MiB);
	fill(e->buf, MiB, 12, 0);
	assert_int_equal(swrite(e->v, e->io, 0, MiB, e->buf, 0), 0);
	assert_int_equal(sread(e->v, e->io, MiB, BS, e->buf2), -ENOSPC);
	assert_int_equal(tsr_store_vol_resize(e->store, "v", 3 * MiB), 0);
	assert_int_equal(sread(e->v, e->io, MiB, 2 * MiB, e->buf2), 0);
	assert_true(is_zero(e->buf2, 2 * MiB));
	fill(e->buf, BS, 13, 3 * MiB - BS);
	assert_int_equal(swrite(e->v, e->io, 3 * MiB - BS, BS, e->buf, 0), 0);
	assert_int_equal(sread(e->v, e->io, 0, 3 * MiB, e->buf2), 0);
	assert_true(is_filled(e->buf2, MiB, 12, 0));
	assert_true(is_filled(e->buf2 + 3 * MiB - BS, BS, 13, 3 * MiB - BS));
	/* grow far enough to need a new crc mapping while the handle is open */
	assert_int_equal(tsr_store_vol_resize(e->store, "v", 1ull << 47), 0);
	fill(e->buf, BS, 14, (1ull << 47) - BS);
	assert_int_equal(swrite(e->v, e->io, (1ull << 47) - BS, BS, e->buf, 0), 0);
	assert_int_equal(sread(e->v, e->io, (1ull << 47) - BS, BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, BS, 14, (1ull << 47) - BS));
	assert_int_equal(sread(e->v, e->io, 0, MiB, e->buf2), 0);
	assert_true(is_filled(e->buf2, MiB, 12, 0));
}

static void test_failed_write_changes_nothing(void **state)
{
	struct env *e = *state;
	struct tsr_svol_stats st;
	struct tsr_io *fio;
	uint32_t cur, prev;

	vol(e, MiB);
	fill(e->buf, 2 * BS, 15, 0);
	assert_int_equal(swrite(e->v, e->io, 0, 2 * BS, e->buf, 0), 0);
	fio = make_io(e->be->kind, "write:1:fail=EIO");
	assert_non_null(fio);
	fill(e->buf, 2 * BS, 16, 0);
	assert_int_equal(swrite(e->v, fio, 0, 2 * BS, e->buf, 0), -EIO);
	tsr_io_destroy(fio);

	/* {old, new}: the old data reads back; the new would too, had it landed */
	read_entry(e->dir, e->uuid, 1, &cur, &prev);
	assert_int_equal(prev, stored_crc(e->buf + BS));
	fill(e->buf, 2 * BS, 15, 0);
	assert_int_equal(cur, stored_crc(e->buf + BS));
	assert_int_equal(sread(e->v, e->io, 0, 2 * BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, 2 * BS, 15, 0));
	tsr_svol_get_stats(e->v, &st);
	assert_int_equal(st.writes, 1);
	assert_int_equal(st.crc_errors, 0);

	/* a failed read is an error, not a CRC error */
	fio = make_io(e->be->kind, "read:1:fail=EIO");
	assert_non_null(fio);
	assert_int_equal(sread(e->v, fio, 0, BS, e->buf2), -EIO);
	tsr_io_destroy(fio);
	tsr_svol_get_stats(e->v, &st);
	assert_int_equal(st.crc_errors, 0);
	/* a failed FUA sync fails the write */
	fio = make_io(e->be->kind, "fsync:1:fail=EIO");
	assert_non_null(fio);
	fill(e->buf, BS, 17, 0);
	assert_int_equal(swrite(e->v, fio, 0, BS, e->buf, TSR_WRITE_FUA), -EIO);
	assert_int_equal(sflush(e->v, fio), 0);
	tsr_io_destroy(fio);
	/* the data did reach the disk: it reads back, no CRC error */
	assert_int_equal(sread(e->v, e->io, 0, BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, BS, 17, 0));
}

/* Several threads, each with its own io, write and read one handle at once;
 * they race on first writes into the same clean regions. */
struct writer {
	struct env *e;
	unsigned id;
	int failures;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct tsr_io *io = make_io(w->e->be->kind, NULL);
	uint8_t *buf = tsr_alloc_aligned(2 * BS);
	unsigned i;

	if (io == NULL || buf == NULL) {
		w->failures++;
		goto out;
	}
	/* thread id owns block id of every 4-block group: regions are shared */
	for (i = 0; i < 512; i++) {
		uint64_t off = ((uint64_t)i * 4 + w->id) * BS;

		fill(buf, BS, 20 + w->id, off);
		if (swrite(w->e->v, io, off, BS, buf, i % 64 == 0 ? TSR_WRITE_FUA : 0))
			w->failures++;
		/* flushes that race with the others' writes to clear the bitmap */
		if (i % 32 == 31 && sflush(w->e->v, io))
			w->failures++;
		if (sread(w->e->v, io, off, BS, buf + BS) ||
		    !is_filled(buf + BS, BS, 20 + w->id, off))
			w->failures++;
	}
out:
	tsr_io_destroy(io);
	tsr_free_aligned(buf);
	return NULL;
}

static void test_threads_share_a_handle(void **state)
{
	struct env *e = *state;
	struct writer w[4];
	pthread_t t[4];
	struct tsr_svol_stats st;
	unsigned i;

	if (e->io) {
		setenv("TSR_STORE_DIRTY_CLEAR_MS", "0", 1);
		tsr_store_close(e->store);
		assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
		unsetenv("TSR_STORE_DIRTY_CLEAR_MS");
	}
	vol(e, 8 * MiB);
	for (i = 0; i < 4; i++) {
		w[i] = (struct writer){.e = e, .id = i};
		assert_int_equal(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].failures, 0);
	}
	assert_int_equal(sread(e->v, e->io, 0, 8 * MiB, e->buf2), 0);
	for (i = 0; i < 2048; i++)
		assert_true(
		    is_filled(e->buf2 + (uint64_t)i * BS, BS, 20 + i % 4, (uint64_t)i * BS));
	tsr_svol_get_stats(e->v, &st);
	assert_int_equal(st.writes, 2048);
	assert_int_equal(st.reads, 2049);
	assert_int_equal(st.crc_errors, 0);
}

static void test_queue_full(void **state)
{
	struct env *e = *state;
	struct tsr_io_opts o = {.kind = e->be->kind, .queue_depth = 1};
	struct done d1 = {0}, d2 = {0};
	char path[PATH_MAX];
	struct tsr_io *qio;
	uint32_t cur, prev;
	uint8_t bits[4096];
	int fd;

	vol(e, MiB);
	assert_int_equal(tsr_io_create(&o, &qio), 0);
	fill(e->buf, BS, 30, 0);
	assert_int_equal(swrite(e->v, e->io, 0, BS, e->buf, 0), 0);
	assert_int_equal(tsr_svol_read(e->v, qio, 0, BS, e->buf2, done_cb, &d1), 0);
	fill(e->buf, BS, 31, 0);
	assert_int_equal(tsr_svol_write(e->v, qio, 0, BS, e->buf, 0, done_cb, &d2), -EAGAIN);
	assert_int_equal(wait_done(qio, &d1), 0);
	assert_int_equal(d2.calls, 0);
	assert_true(is_filled(e->buf2, BS, 30, 0));
	fill(e->buf, BS, 30, 0);
	read_entry(e->dir, e->uuid, 0, &cur, &prev);
	assert_int_equal(cur, stored_crc(e->buf));
	tsr_io_destroy(qio);
	/* backpressure is not a failed write: the bitmap is cleared at close */
	tsr_svol_put(e->v);
	e->v = NULL;
	vol_file(e->dir, e->uuid, "dirty", path);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, bits, sizeof(bits), 0), sizeof(bits));
	close(fd);
	assert_true(is_zero(bits, sizeof(bits)));
}

/* A flush with no write in flight or started clears the dirty bitmap, so a
 * later crash scans only regions written after it. */
static void test_quiet_flush_clears_dirty(void **state)
{
	struct env *e = *state;
	struct done dw = {0}, df = {0};

	if (e->io) {
		setenv("TSR_STORE_DIRTY_CLEAR_MS", "0", 1);
		tsr_store_close(e->store);
		assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
		unsetenv("TSR_STORE_DIRTY_CLEAR_MS");
	}
	vol(e, 8 * MiB);
	fill(e->buf, BS, 40, 0);
	assert_int_equal(swrite(e->v, e->io, 0, BS, e->buf, 0), 0);
	fill(e->buf2, BS, 41, 3 * MiB);
	assert_int_equal(swrite(e->v, e->io, 3 * MiB, BS, e->buf2, 0), 0);
	assert_int_equal(count_dirty_bits(e->dir, e->uuid), 64); /* one group of 64 regions */

	/* a write in flight when the flush is queued: nothing is cleared */
	fill(e->buf2, BS, 42, 5 * MiB);
	assert_int_equal(tsr_svol_write(e->v, e->io, 5 * MiB, BS, e->buf2, 0, done_cb, &dw), 0);
	assert_int_equal(tsr_svol_flush(e->v, e->io, done_cb, &df), 0);
	assert_int_equal(wait_done(e->io, &dw), 0);
	assert_int_equal(wait_done(e->io, &df), 0);
	assert_int_equal(count_dirty_bits(e->dir, e->uuid), 64);

	/* quiet: cleared */
	assert_int_equal(sflush(e->v, e->io), 0);
	assert_int_equal(count_dirty_bits(e->dir, e->uuid), 0);
	/* the next write into a region marks it again, on disk */
	fill(e->buf, BS, 43, BS);
	assert_int_equal(swrite(e->v, e->io, BS, BS, e->buf, 0), 0);
	assert_int_equal(count_dirty_bits(e->dir, e->uuid), 64);
	assert_int_equal(sread(e->v, e->io, 0, 2 * BS, e->buf), 0);
	assert_true(is_filled(e->buf, BS, 40, 0));
	assert_true(is_filled(e->buf + BS, BS, 43, BS));
	assert_int_equal(sread(e->v, e->io, 5 * MiB, BS, e->buf), 0);
	assert_true(is_filled(e->buf, BS, 42, 5 * MiB));
}

/*
 * After a flush the crc table's pages are write-protected by the writeback,
 * so entries of the next writes go in with pwrite (entries_put): they must
 * land exactly as the stores would ({new, old} per block, runs longer than
 * one pwrite batch of 64 entries included), read back, and survive a reopen.
 */
static void test_entries_after_flush(void **state)
{
	struct env *e = *state;
	unsigned before;
	uint32_t cur, prev;
	uint8_t old[BS];

	vol(e, 8 * MiB);
	before = atomic_load(&store_test_entry_pwrites);
	fill(e->buf, 80 * BS, 50, 0);
	assert_int_equal(swrite(e->v, e->io, 0, 80 * BS, e->buf, 0), 0);
	assert_int_equal(atomic_load(&store_test_entry_pwrites), before); /* no sync yet: stores */
	assert_int_equal(sflush(e->v, e->io), 0);
	fill(e->buf, 80 * BS, 51, 0);
	assert_int_equal(swrite(e->v, e->io, 0, 80 * BS, e->buf, 0), 0); /* 64 + 16 entries */
	assert_int_equal(atomic_load(&store_test_entry_pwrites), before + 2);
	fill(e->buf2, BS, 52, 6 * MiB);
	assert_int_equal(swrite(e->v, e->io, 6 * MiB, BS, e->buf2, 0), 0);
	assert_int_equal(atomic_load(&store_test_entry_pwrites), before + 3);
	for (uint64_t b = 0; b < 80; b += 79) {
		fill(old, BS, 50, b * BS);
		read_entry(e->dir, e->uuid, b, &cur, &prev);
		assert_int_equal(cur, stored_crc(e->buf + b * BS));
		assert_int_equal(prev, stored_crc(old));
	}
	assert_int_equal(sread(e->v, e->io, 0, 80 * BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, 80 * BS, 51, 0));
	tsr_svol_put(e->v);
	e->v = NULL;
	tsr_store_close(e->store);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &e->v), 0);
	assert_int_equal(sread(e->v, e->io, 0, 80 * BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, 80 * BS, 51, 0));
	assert_int_equal(sread(e->v, e->io, 6 * MiB, BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, BS, 52, 6 * MiB));
}

/*
 * Between two syncs a page of the crc table takes its first two runs of
 * entries by pwrite and the later ones by stores (one page_mkwrite fault,
 * then none until the next sync: a DR target applies thousands of writes
 * per 100 ms flush).  The entries are the same either way ({new, old}, old
 * being the previous write's whichever way it went in), and the next sync
 * starts the count again.
 */
static void test_entries_hot_page_stores(void **state)
{
	struct env *e = *state;
	unsigned before;
	uint32_t cur, prev;
	uint8_t old[BS];

	vol(e, 8 * MiB);
	assert_int_equal(sflush(e->v, e->io), 0);
	before = atomic_load(&store_test_entry_pwrites);
	for (uint64_t b = 0; b < 6; b++) { /* blocks 0, 2, .. 10: all in page 0 */
		fill(e->buf, BS, 60, 2 * b * BS);
		assert_int_equal(swrite(e->v, e->io, 2 * b * BS, BS, e->buf, 0), 0);
	}
	assert_int_equal(atomic_load(&store_test_entry_pwrites), before + 2);
	fill(e->buf, BS, 61, 0); /* block 0 again: its entry went in by pwrite */
	assert_int_equal(swrite(e->v, e->io, 0, BS, e->buf, 0), 0);
	fill(e->buf, BS, 61, 10 * BS); /* block 10 again: by a store */
	assert_int_equal(swrite(e->v, e->io, 10 * BS, BS, e->buf, 0), 0);
	fill(e->buf, BS, 62, 4 * MiB); /* another page: pwrite */
	assert_int_equal(swrite(e->v, e->io, 4 * MiB, BS, e->buf, 0), 0);
	assert_int_equal(atomic_load(&store_test_entry_pwrites), before + 3);
	for (uint64_t b = 0; b <= 10; b += 10) {
		fill(e->buf, BS, 61, b * BS);
		fill(old, BS, 60, b * BS);
		read_entry(e->dir, e->uuid, b, &cur, &prev);
		assert_int_equal(cur, stored_crc(e->buf));
		assert_int_equal(prev, stored_crc(old));
	}
	assert_int_equal(sflush(e->v, e->io), 0);
	fill(e->buf, BS, 63, 4 * BS); /* page 0 after the next sync: pwrite again */
	assert_int_equal(swrite(e->v, e->io, 4 * BS, BS, e->buf, 0), 0);
	assert_int_equal(atomic_load(&store_test_entry_pwrites), before + 4);
	tsr_svol_put(e->v);
	e->v = NULL;
	tsr_store_close(e->store);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &e->v), 0);
	for (uint64_t b = 0; b < 6; b++) {
		uint8_t want = b == 0 || b == 5 ? 61 : b == 2 ? 63 : 60;

		assert_int_equal(sread(e->v, e->io, 2 * b * BS, BS, e->buf2), 0);
		assert_true(is_filled(e->buf2, BS, want, 2 * b * BS));
	}
	assert_int_equal(sread(e->v, e->io, 4 * MiB, BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, BS, 62, 4 * MiB));
}

/*
 * tsr_svol_write_sums: the entries are the caller's CRCs in the stored form
 * (crc ^ Z), the data reads back, and the sums given are what is used: a
 * wrong one lands in its entry as given (the caller vouches for them), so
 * its block then fails its read with -EIO.
 */
static void test_write_with_sums(void **state)
{
	struct env *e = *state;
	uint32_t sums[3], cur, prev;

	vol(e, MiB);
	fill(e->buf, 3 * BS, 60, 0);
	tsr_crc32c_blocks(e->buf, 3, sums);
	{
		struct done d = {0};
		int ret =
		    tsr_svol_write_sums(e->v, e->io, BS, 3 * BS, e->buf, sums, 0, done_cb, &d);

		assert_int_equal(ret ? ret : wait_done(e->io, &d), 0);
	}
	for (unsigned i = 0; i < 3; i++) {
		read_entry(e->dir, e->uuid, 1 + i, &cur, &prev);
		assert_int_equal(cur, stored_crc(e->buf + i * BS));
	}
	assert_int_equal(sread(e->v, e->io, BS, 3 * BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, 3 * BS, 60, 0));

	fill(e->buf, 3 * BS, 61, 0); /* new data (prev keeps the old block's CRC) */
	tsr_crc32c_blocks(e->buf, 3, sums);
	sums[1] ^= 1; /* not the block's: stored as given */
	{
		struct done d = {0};
		int ret =
		    tsr_svol_write_sums(e->v, e->io, BS, 3 * BS, e->buf, sums, 0, done_cb, &d);

		assert_int_equal(ret ? ret : wait_done(e->io, &d), 0);
	}
	read_entry(e->dir, e->uuid, 2, &cur, &prev);
	assert_int_equal(cur, stored_crc(e->buf + BS) ^ 1);
	assert_int_equal(sread(e->v, e->io, 2 * BS, BS, e->buf2), -EIO);
	assert_int_equal(sread(e->v, e->io, BS, BS, e->buf2), 0);
}

#define BOTH(t)                                                                                    \
	cmocka_unit_test_prestate_setup_teardown(t, setup, teardown, (void *)&g_uring),            \
	    cmocka_unit_test_prestate_setup_teardown(t, setup, teardown, (void *)&g_aio)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    BOTH(test_roundtrip),
	    BOTH(test_bounds),
	    BOTH(test_16tib),
	    BOTH(test_corruption),
	    BOTH(test_trim_and_zeroes),
	    BOTH(test_resize_reads_zeros),
	    BOTH(test_failed_write_changes_nothing),
	    BOTH(test_threads_share_a_handle),
	    BOTH(test_queue_full),
	    BOTH(test_quiet_flush_clears_dirty),
	    BOTH(test_entries_after_flush),
	    BOTH(test_entries_hot_page_stores),
	    BOTH(test_write_with_sums),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
