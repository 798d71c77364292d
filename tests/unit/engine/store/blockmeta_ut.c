/*
 * Unit tests of the dirty-region mark (engine/store/blockmeta.c,
 * blockmeta_mark_dirty_async, and its use by data.c's write): a first write
 * into a clean region sets the region's bit and queues an fsync of the
 * bitmap on the writer's io, and changes entries and data only once that
 * fsync completed.  Held open with the fault injector's delays, so the
 * order is seen, not hoped for: while the mark is in flight the write's
 * entries and data are untouched and only the fsync is on the io; a failed
 * mark fails the write and changes nothing; writes into the same group on
 * the same io share one fsync; a full io at the mark's completion does the
 * rest of the write on the spot instead of failing it; and after a crash
 * whose write reached the disk the region is marked in the file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "store/internal.h"
#include "store_test.h"

#define MiB (1ull << 20)

struct env {
	char dir[512];
	struct tsr_store *store;
	struct tsr_svol *v;
	struct tsr_io *io; /* no faults */
	char uuid[37];
	uint8_t *buf;
	uint8_t *buf2;
};

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	struct tsr_vol_info info;

	if (e == NULL || scratch_dir(e->dir, sizeof(e->dir)))
		return -1;
	*state = e;
	e->io = make_io(TSR_IO_AUTO, NULL);
	e->buf = tsr_alloc_aligned(MiB);
	e->buf2 = tsr_alloc_aligned(MiB);
	if (e->io == NULL || e->buf == NULL || e->buf2 == NULL)
		return -1;
	if (tsr_store_open(e->dir, NULL, &e->store) ||
	    tsr_store_vol_create(e->store, "v", 256 * MiB, &info) ||
	    tsr_store_vol_open(e->store, "v", &e->v))
		return -1;
	memcpy(e->uuid, info.uuid, sizeof(e->uuid));
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	if (e->v)
		tsr_svol_put(e->v);
	tsr_store_close(e->store);
	tsr_io_destroy(e->io);
	rm_rf(e->dir);
	tsr_free_aligned(e->buf);
	tsr_free_aligned(e->buf2);
	free(e);
	return 0;
}

/* The data file's bytes at off, read past the store (page cache included). */
static void raw_read(struct env *e, uint64_t off, void *out, size_t len)
{
	char path[PATH_MAX];
	int fd;

	vol_file(e->dir, e->uuid, "data", path);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, out, len, (off_t)off), (ssize_t)len);
	close(fd);
}

/* For a forked child (no cmocka asserts): poll the data file until
 * [off, off + len) holds want, reaping io meanwhile (a held completion stays
 * held).  0 once it does, -1 after 60 s. */
static int wait_file_holds(struct env *e, uint64_t off, const void *want, size_t len,
			   struct tsr_io *io)
{
	char path[PATH_MAX];
	char *got = malloc(len);
	int64_t t0 = tsr_mono_ms();
	int fd, ret = -1;

	vol_file(e->dir, e->uuid, "data", path);
	fd = open(path, O_RDONLY);
	if (fd < 0 || got == NULL)
		goto out;
	while (tsr_mono_ms() - t0 < 60000) {
		if (pread(fd, got, len, (off_t)off) == (ssize_t)len && memcmp(got, want, len) == 0) {
			ret = 0;
			break;
		}
		if (tsr_io_poll(io, 0, false) < 0)
			break;
		usleep(1000);
	}
out:
	if (fd >= 0)
		close(fd);
	free(got);
	return ret;
}

/* While the mark's fsync is held (delay), a first write into a clean region
 * has changed neither its entries nor its data, and only the fsync is on the
 * io; a second write into the same group joins it; both land after it. */
static void test_write_waits_for_mark(void **state)
{
	struct env *e = *state;
	struct tsr_io *io = make_io(TSR_IO_AUTO, "fsync:1:delay=300");
	struct blockmeta *bm = &e->v->meta;
	struct done d1 = {0}, d2 = {0}, d3 = {0};
	uint32_t cur, prev;

	assert_non_null(io);
	assert_int_equal(count_dirty_bits(e->dir, e->uuid), 0);
	fill(e->buf, BS, 1, MiB);
	fill(e->buf2, BS, 2, 2 * MiB);
	assert_int_equal(tsr_svol_write(e->v, io, MiB, BS, e->buf, 0, done_cb, &d1), 0);
	assert_int_equal(tsr_svol_write(e->v, io, 2 * MiB, BS, e->buf2, 0, done_cb, &d2), 0);
	assert_true(tsr_io_submit(io) >= 0);
	usleep(100 * 1000); /* the fsync itself is done; its completion is held */
	assert_int_equal(tsr_io_poll(io, 0, false), 0);

	assert_int_equal(tsr_io_inflight(io), 1); /* the mark's fsync, no data write */
	assert_int_equal(atomic_load(&bm->mark_fsyncs), 1);
	assert_int_equal(atomic_load(&bm->mark_joins), 1);
	assert_int_equal(d1.calls + d2.calls, 0);
	read_entry(e->dir, e->uuid, MiB / BS, &cur, &prev);
	assert_int_equal(cur, 0);
	assert_int_equal(prev, 0);
	read_entry(e->dir, e->uuid, 2 * MiB / BS, &cur, &prev);
	assert_int_equal(cur, 0);
	raw_read(e, MiB, e->buf2 + BS, BS);
	assert_true(is_zero(e->buf2 + BS, BS));
	assert_int_equal(count_dirty_bits(e->dir, e->uuid), 64); /* set, being synced */

	assert_int_equal(wait_done(io, &d1), 0);
	assert_int_equal(wait_done(io, &d2), 0);
	read_entry(e->dir, e->uuid, MiB / BS, &cur, &prev);
	assert_int_equal(cur, stored_crc(e->buf));
	assert_int_equal(sread(e->v, e->io, MiB, BS, e->buf2 + BS), 0);
	assert_true(is_filled(e->buf2 + BS, BS, 1, MiB));
	assert_int_equal(sread(e->v, e->io, 2 * MiB, BS, e->buf2 + BS), 0);
	assert_true(is_filled(e->buf2 + BS, BS, 2, 2 * MiB));

	/* the group is durable now: the next write goes straight to the data */
	fill(e->buf, BS, 3, 3 * MiB);
	assert_int_equal(tsr_svol_write(e->v, io, 3 * MiB, BS, e->buf, 0, done_cb, &d3), 0);
	assert_int_equal(tsr_io_inflight(io), 1);
	assert_int_equal(wait_done(io, &d3), 0);
	assert_int_equal(atomic_load(&bm->mark_fsyncs), 1);
	assert_int_equal(atomic_load(&bm->mark_msyncs), 0);
	assert_int_equal(tsr_io_fault_count(io), 1);
	tsr_io_destroy(io);
}

/* A failed mark fails the write and changes nothing; a later write marks
 * the region again and lands. */
static void test_mark_fails(void **state)
{
	struct env *e = *state;
	struct tsr_io *io = make_io(TSR_IO_AUTO, "fsync:1:fail=EIO");
	struct tsr_svol_stats st;
	uint32_t cur, prev;

	assert_non_null(io);
	fill(e->buf, 2 * BS, 4, 64 * MiB);
	assert_int_equal(swrite(e->v, io, 64 * MiB, 2 * BS, e->buf, 0), -EIO);
	assert_int_equal(tsr_io_fault_count(io), 1);
	read_entry(e->dir, e->uuid, 64 * MiB / BS, &cur, &prev);
	assert_int_equal(cur, 0);
	assert_int_equal(prev, 0);
	raw_read(e, 64 * MiB, e->buf2, 2 * BS);
	assert_true(is_zero(e->buf2, 2 * BS));
	assert_int_equal(sread(e->v, e->io, 64 * MiB, 2 * BS, e->buf2), 0);
	assert_true(is_zero(e->buf2, 2 * BS));
	tsr_svol_get_stats(e->v, &st);
	assert_int_equal(st.writes, 0);
	assert_int_equal(st.crc_errors, 0);

	/* the same io, its fsyncs fine now */
	assert_int_equal(swrite(e->v, io, 64 * MiB, 2 * BS, e->buf, 0), 0);
	assert_int_equal(sread(e->v, e->io, 64 * MiB, 2 * BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, 2 * BS, 4, 64 * MiB));
	assert_int_equal(atomic_load(&e->v->meta.mark_fsyncs), 2);
	tsr_io_destroy(io);
}

/* "fdatasync:" rules pass the mark (a full fsync) by: the write lands, the
 * flush after it fails. */
static void test_fdatasync_rule(void **state)
{
	struct env *e = *state;
	struct tsr_io *io = make_io(TSR_IO_AUTO, "fdatasync:1+:fail=EIO");

	assert_non_null(io);
	fill(e->buf, BS, 5, 128 * MiB);
	assert_int_equal(swrite(e->v, io, 128 * MiB, BS, e->buf, 0), 0);
	assert_int_equal(tsr_io_fault_count(io), 0);
	assert_int_equal(sflush(e->v, io), -EIO);
	assert_true(tsr_io_fault_count(io) >= 1);
	assert_int_equal(sread(e->v, e->io, 128 * MiB, BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, BS, 5, 128 * MiB));
	tsr_io_destroy(io);
}

/* The io filled up while the mark was in flight: the FUA write's crc sync
 * cannot be queued when the mark completes, and is done on the spot (the
 * caller was told 0 long ago: -EAGAIN is no answer any more). */
static void test_full_io_after_mark(void **state)
{
	struct env *e = *state;
	struct tsr_io_opts o = {.kind = TSR_IO_AUTO,
				.queue_depth = 2,
				.fault_spec = "fsync:1:delay=200,read:1:delay=400"};
	struct done dw = {0}, dr = {0};
	struct tsr_io *io;
	uint32_t cur, prev;

	assert_int_equal(tsr_io_create(&o, &io), 0);
	fill(e->buf, BS, 6, 192 * MiB);
	assert_int_equal(
	    tsr_svol_write(e->v, io, 192 * MiB, BS, e->buf, TSR_WRITE_FUA, done_cb, &dw), 0);
	assert_int_equal(tsr_svol_read(e->v, io, 0, BS, e->buf2, done_cb, &dr), 0);
	assert_int_equal(tsr_io_inflight(io), 2); /* full: the mark and the read */
	assert_int_equal(wait_done(io, &dw), 0);
	assert_int_equal(dr.calls, 0); /* the read still holds its slot */
	assert_int_equal(wait_done(io, &dr), 0);
	read_entry(e->dir, e->uuid, 192 * MiB / BS, &cur, &prev);
	assert_int_equal(cur, stored_crc(e->buf));
	assert_int_equal(sread(e->v, e->io, 192 * MiB, BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, BS, 6, 192 * MiB));
	tsr_io_destroy(io);
}

/* A crash after the write reached the disk but before it was acknowledged
 * (its completion held): the region is marked in the file, and the next
 * open's recovery finds the new data and normalizes its entry. */
static void test_crash_after_write(void **state)
{
	struct env *e = *state;
	uint32_t cur, prev;
	pid_t pid;
	int status;

	tsr_svol_put(e->v);
	e->v = NULL;
	tsr_store_close(e->store); /* clean: the bitmap is empty */
	e->store = NULL;
	assert_int_equal(count_dirty_bits(e->dir, e->uuid), 0);
	fill(e->buf, BS, 7, 5 * MiB);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct tsr_io *io = make_io(TSR_IO_AUTO, "write:1:delay=600000");
		struct tsr_store *s;
		struct tsr_svol *v;
		struct done d = {0};

		if (io == NULL || tsr_store_open(e->dir, NULL, &s) ||
		    tsr_store_vol_open(s, "v", &v))
			_exit(2);
		if (tsr_svol_write(v, io, 5 * MiB, BS, e->buf, 0, done_cb, &d))
			_exit(3);
		/* reap the mark; the data write it then queues is held */
		while (tsr_io_fault_count(io) == 0)
			if (tsr_io_submit(io) < 0 || tsr_io_poll(io, 1, true) < 0)
				_exit(4);
		if (tsr_io_submit(io) < 0 || d.calls != 0)
			_exit(5);
		/* the write itself reaches the file (its completion stays held):
		 * waited for by reading the file, not a fixed sleep (a loaded
		 * machine may run the write later than any sleep) */
		if (wait_file_holds(e, 5 * MiB, e->buf, BS, io) != 0)
			_exit(6);
		if (d.calls != 0)
			_exit(7);
		_exit(0); /* crash: no put, no close */
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(count_dirty_bits(e->dir, e->uuid), 64);

	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &e->v), 0);
	assert_int_equal(count_dirty_bits(e->dir, e->uuid), 0); /* recovered */
	read_entry(e->dir, e->uuid, 5 * MiB / BS, &cur, &prev);
	assert_int_equal(cur, stored_crc(e->buf));
	assert_int_equal(prev, stored_crc(e->buf));
	assert_int_equal(sread(e->v, e->io, 5 * MiB, BS, e->buf2), 0);
	assert_true(is_filled(e->buf2, BS, 7, 5 * MiB));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_write_waits_for_mark, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mark_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fdatasync_rule, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_full_io_after_mark, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_crash_after_write, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
