/*
 * Unit tests of crash recovery (engine/store/recovery.c): a forked child
 * opens the store, writes, and _exit()s without closing (the page cache
 * survives, as it does when tesserad is SIGKILLed); the parent reopens and
 * checks entries, bitmap and data.  Torn cases use the fault injector to
 * leave an entry updated while its data write never happened (fail=EIO,
 * the child exits before the failure is reaped) or happened but was never
 * acknowledged (delay=).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "store_test.h"

#define MiB (1ull << 20)

struct env {
	char dir[512];
	char uuid[37];
	uint8_t *buf;
};

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	struct tsr_store *s;
	struct tsr_vol_info info;

	if (e == NULL || scratch_dir(e->dir, sizeof(e->dir)))
		return -1;
	e->buf = tsr_alloc_aligned(4 * MiB);
	if (e->buf == NULL || tsr_store_open(e->dir, NULL, &s))
		return -1;
	if (tsr_store_vol_create(s, "v", 8 * MiB, &info))
		return -1;
	memcpy(e->uuid, info.uuid, sizeof(e->uuid));
	tsr_store_close(s);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	rm_rf(e->dir);
	tsr_free_aligned(e->buf);
	free(e);
	return 0;
}

static bool exists(const struct env *e, const char *name)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", e->dir, name);
	return access(path, F_OK) == 0;
}

/* Number of set bits in the volume's dirty bitmap file. */
static int dirty_bits(const struct env *e)
{
	char path[PATH_MAX];
	uint8_t b[4096];
	ssize_t n, i;
	int fd, bits = 0;

	vol_file(e->dir, e->uuid, "dirty", path);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	while ((n = read(fd, b, sizeof(b))) > 0)
		for (i = 0; i < n; i++)
			bits += __builtin_popcount(b[i]);
	close(fd);
	return bits;
}

/* Write seed's pattern at [off, off+len) with a plain store open, cleanly closed. */
static void write_clean(struct env *e, uint64_t off, uint32_t len, uint64_t seed)
{
	struct tsr_store *s;
	struct tsr_svol *v;
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);

	assert_non_null(io);
	assert_int_equal(tsr_store_open(e->dir, NULL, &s), 0);
	assert_int_equal(tsr_store_vol_open(s, "v", &v), 0);
	fill(e->buf, len, seed, off);
	assert_int_equal(swrite(v, io, off, len, e->buf, 0), 0);
	tsr_svol_put(v);
	tsr_store_close(s);
	tsr_io_destroy(io);
	assert_true(exists(e, "clean"));
	assert_int_equal(dirty_bits(e), 0);
}

/*
 * In a child: open, write [off, off+len) with seed through an io with fault
 * spec (may be NULL); wait for completion only when wait; _exit without close.
 */
static void child_write(struct env *e, uint64_t off, uint32_t len, uint64_t seed, const char *fault,
			bool wait)
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		struct tsr_store *s;
		struct tsr_svol *v;
		struct tsr_io *io = make_io(TSR_IO_AUTO, fault);
		struct done d = {0};

		if (io == NULL || tsr_store_open(e->dir, NULL, &s) ||
		    tsr_store_vol_open(s, "v", &v))
			_exit(2);
		fill(e->buf, len, seed, off);
		if (tsr_svol_write(v, io, off, len, e->buf, 0, done_cb, &d))
			_exit(3);
		if (tsr_io_submit(io) < 0)
			_exit(4);
		if (wait && wait_done(io, &d))
			_exit(5);
		/* not waiting: a first write into a clean region is queued only
		 * once the fsync of its dirty bit completed (data.c): reap that
		 * one, never the faulted write it then queues */
		while (!wait && tsr_io_fault_count(io) == 0) {
			if (tsr_io_poll(io, 1, true) < 0 || tsr_io_submit(io) < 0)
				_exit(6);
		}
		/* not waiting: the completion is held by the fault, but the write
		 * itself must have reached the disk before the crash, or it could
		 * land after the parent's recovery (the kernel finishes a dead
		 * process's io_uring writes on its own) and desync the block's CRC */
		if (!wait)
			usleep(300 * 1000);
		_exit(0); /* crash: no put, no close */
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void reopen_read(struct env *e, uint64_t off, uint32_t len, int expect)
{
	struct tsr_store *s;
	struct tsr_svol *v;
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);

	assert_non_null(io);
	assert_int_equal(tsr_store_open(e->dir, NULL, &s), 0);
	assert_false(exists(e, "clean"));   /* removed while open */
	assert_int_equal(dirty_bits(e), 0); /* recovery cleared it */
	assert_int_equal(tsr_store_vol_open(s, "v", &v), 0);
	memset(e->buf, 0xee, len);
	assert_int_equal(sread(v, io, off, len, e->buf), expect);
	tsr_svol_put(v);
	tsr_store_close(s);
	tsr_io_destroy(io);
}

static void test_crash_after_writes(void **state)
{
	struct env *e = *state;
	uint32_t cur, prev;

	write_clean(e, 0, 3 * MiB, 1);
	/* overwrite across 3 regions, acknowledged, then crash */
	child_write(e, MiB - 8192, 2 * MiB, 2, NULL, true);
	assert_false(exists(e, "clean"));
	assert_int_equal(dirty_bits(e), 64); /* regions are marked 64 at a time */
	read_entry(e->dir, e->uuid, 256, &cur, &prev);
	assert_true(cur != prev); /* {new, old} before recovery */

	reopen_read(e, MiB - 8192, 2 * MiB, 0);
	assert_true(is_filled(e->buf, 2 * MiB, 2, MiB - 8192));
	read_entry(e->dir, e->uuid, 256, &cur, &prev);
	assert_int_equal(cur, prev); /* normalized */
	reopen_read(e, 0, BS, 0);
	assert_true(is_filled(e->buf, BS, 1, 0));
}

static void test_torn_entry_without_data(void **state)
{
	struct env *e = *state;
	uint8_t old[BS], new[BS];
	uint32_t cur, prev;

	write_clean(e, 4 * MiB, BS, 3);
	/* the entry is updated, the data write fails and is never reaped */
	child_write(e, 4 * MiB, BS, 4, "write:1:fail=EIO", false);
	fill(old, BS, 3, 4 * MiB);
	fill(new, BS, 4, 4 * MiB);
	read_entry(e->dir, e->uuid, 1024, &cur, &prev);
	assert_int_equal(cur, stored_crc(new));
	assert_int_equal(prev, stored_crc(old));

	reopen_read(e, 4 * MiB, BS, 0);
	assert_true(is_filled(e->buf, BS, 3, 4 * MiB)); /* the old data, not EIO */
	read_entry(e->dir, e->uuid, 1024, &cur, &prev);
	assert_int_equal(cur, stored_crc(old));
	assert_int_equal(prev, stored_crc(old));
}

static void test_torn_data_without_ack(void **state)
{
	struct env *e = *state;
	uint8_t new[BS];
	uint32_t cur, prev;

	write_clean(e, 5 * MiB, BS, 5);
	/* the data reaches the disk but the completion is held past the crash */
	child_write(e, 5 * MiB, BS, 6, "write:1:delay=600000", false);
	reopen_read(e, 5 * MiB, BS, 0);
	assert_true(is_filled(e->buf, BS, 6, 5 * MiB));
	fill(new, BS, 6, 5 * MiB);
	read_entry(e->dir, e->uuid, 1280, &cur, &prev);
	assert_int_equal(cur, stored_crc(new));
	assert_int_equal(prev, stored_crc(new));
}

static void test_recovery_keeps_corruption(void **state)
{
	struct env *e = *state;
	char path[PATH_MAX], garbage[BS];
	uint8_t bit = 1u << 6; /* region 6 */
	int fd;

	write_clean(e, 6 * MiB, 2 * BS, 7);
	memset(garbage, 0x33, sizeof(garbage));
	vol_file(e->dir, e->uuid, "data", path);
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, garbage, BS, 6 * MiB), BS);
	close(fd);
	vol_file(e->dir, e->uuid, "dirty", path);
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, &bit, 1, 0), 1);
	close(fd);
	snprintf(path, sizeof(path), "%s/clean", e->dir);
	assert_int_equal(unlink(path), 0);

	reopen_read(e, 6 * MiB, BS, -EIO);   /* still corrupt */
	reopen_read(e, 6 * MiB + BS, BS, 0); /* its neighbour is fine */
	assert_true(is_filled(e->buf, BS, 7, 6 * MiB + BS));
}

static void test_clean_close_marker(void **state)
{
	struct env *e = *state;
	struct tsr_store *s;

	assert_true(exists(e, "clean"));
	assert_int_equal(tsr_store_open(e->dir, NULL, &s), 0);
	assert_false(exists(e, "clean"));
	tsr_store_close(s);
	assert_true(exists(e, "clean"));
}

static void test_failed_write_checked_at_next_open(void **state)
{
	struct env *e = *state;
	struct tsr_store *s;
	struct tsr_svol *v;
	struct tsr_io *io = make_io(TSR_IO_AUTO, "write:1:fail=EIO");
	uint8_t old[BS];
	uint32_t cur, prev;

	write_clean(e, 7 * MiB, BS, 8);
	assert_non_null(io);
	assert_int_equal(tsr_store_open(e->dir, NULL, &s), 0);
	assert_int_equal(tsr_store_vol_open(s, "v", &v), 0);
	fill(e->buf, BS, 9, 7 * MiB);
	assert_int_equal(swrite(v, io, 7 * MiB, BS, e->buf, 0), -EIO);
	tsr_svol_put(v);
	tsr_store_close(s);
	tsr_io_destroy(io);
	assert_int_equal(dirty_bits(e), 64); /* kept for the next open */
	fill(old, BS, 8, 7 * MiB);
	read_entry(e->dir, e->uuid, 7 * 256, &cur, &prev);
	assert_int_equal(cur, stored_crc(old));
	assert_int_equal(prev, stored_crc(e->buf));

	reopen_read(e, 7 * MiB, BS, 0);
	assert_true(is_filled(e->buf, BS, 8, 7 * MiB));
	read_entry(e->dir, e->uuid, 7 * 256, &cur, &prev);
	assert_int_equal(cur, stored_crc(old));
	assert_int_equal(prev, stored_crc(old));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_crash_after_writes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_torn_entry_without_data, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_torn_data_without_ack, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_recovery_keeps_corruption, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_clean_close_marker, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_failed_write_checked_at_next_open, setup,
					    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
