/*
 * Unit tests of the store on a full file system (engine/store/blockmeta.c,
 * "Full file systems", and data.c's write step 0).  The crc table and the
 * dirty-region bitmap are stored to through shared mappings, and a store
 * into a hole of a full file system is a SIGBUS, so:
 *   - the bitmap file is allocated whole at create and stays allocated when
 *     it is cleared; the crc table stays sparse, and a write allocates the
 *     table page it changes (checked on the scratch disk, any user);
 *   - on a file system that really is full (a 4 MiB tmpfs in a private mount
 *     namespace: root only, else skipped) a write to a fresh 2 MiB of the
 *     volume fails with -ENOSPC and changes nothing, an overwrite of
 *     allocated blocks succeeds, the bitmap is cleared and set again without
 *     a signal, the store reopens and a volume delete commits (the
 *     catalogue's WAL keeps its blocks across a clean close), a volume whose
 *     bitmap has holes (older stores punched it) opens and refuses writes
 *     with -ENOSPC, and once space is freed the refused writes succeed.
 * Before the fix the full-file-system test dies of SIGBUS.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sched.h>
#include <sys/mount.h>

#include <cmocka.h>

#include "store/internal.h"
#include "store_test.h"

#define MiB (1ull << 20)

static char g_small_fs[64]; /* the 4 MiB tmpfs (private mount), "" if none */

static uint64_t allocated(const char *dir, const char *uuid, const char *ext)
{
	char path[PATH_MAX];
	struct stat st;

	vol_file(dir, uuid, ext, path);
	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

static uint64_t file_size(const char *dir, const char *uuid, const char *ext)
{
	char path[PATH_MAX];
	struct stat st;

	vol_file(dir, uuid, ext, path);
	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

/* On the scratch disk: what is allocated when. */
static void test_allocation(void **state)
{
	struct tsr_store *store;
	struct tsr_svol *v;
	struct tsr_vol_info info;
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
	uint8_t *buf = tsr_alloc_aligned(BS);
	char dir[512];
	uint64_t crc_before;

	(void)state;
	assert_non_null(io);
	assert_non_null(buf);
	assert_int_equal(scratch_dir(dir, sizeof(dir)), 0);
	assert_int_equal(tsr_store_open(dir, NULL, &store), 0);
	assert_int_equal(tsr_store_vol_create(store, "v", 1024 * MiB, &info), 0);
	/* bitmap whole, crc table nothing */
	assert_true(allocated(dir, info.uuid, "dirty") >= file_size(dir, info.uuid, "dirty"));
	assert_int_equal(allocated(dir, info.uuid, "crc"), 0);

	assert_int_equal(tsr_store_vol_open(store, "v", &v), 0);
	fill(buf, BS, 1, 600 * MiB);
	assert_int_equal(swrite(v, io, 600 * MiB, BS, buf, 0), 0);
	/* the page of that entry, not the table (2 MiB of crc) */
	crc_before = allocated(dir, info.uuid, "crc");
	assert_true(crc_before >= STORE_PAGE);
	assert_true(crc_before <= 16 * STORE_PAGE);
	fill(buf, BS, 2, 600 * MiB + BS);
	assert_int_equal(swrite(v, io, 600 * MiB + BS, BS, buf, 0), 0);
	assert_int_equal(allocated(dir, info.uuid, "crc"), crc_before);
	/* cleared bitmap: zeroed in place, still allocated */
	assert_int_equal(sflush(v, io), 0);
	assert_int_equal(blockmeta_clear_dirty(&v->meta, 1024 * MiB), 0);
	assert_int_equal(count_dirty_bits(dir, info.uuid), 0);
	assert_true(allocated(dir, info.uuid, "dirty") >= file_size(dir, info.uuid, "dirty"));
	tsr_svol_put(v);
	assert_true(allocated(dir, info.uuid, "dirty") >= file_size(dir, info.uuid, "dirty"));

	tsr_store_close(store);
	tsr_io_destroy(io);
	tsr_free_aligned(buf);
	rm_rf(dir);
}

/* Fill the file system of dir with one file; returns its path in out. */
static void fill_fs(const char *dir, char *out, size_t len)
{
	static const char chunk[64 * 1024] = {1};
	int fd;

	snprintf(out, len, "%s/filler", dir);
	fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	while (write(fd, chunk, sizeof(chunk)) > 0)
		;
	while (write(fd, chunk, 512) > 0) /* the last bytes */
		;
	assert_int_equal(errno, ENOSPC);
	close(fd);
}

static void test_full_fs(void **state)
{
	struct tsr_store *store;
	struct tsr_svol *v;
	struct tsr_io *io;
	uint8_t *buf, *back;
	char dir[512], filler[600];
	const uint64_t size = 64 * MiB;
	int ret;

	(void)state;
	if (!g_small_fs[0])
		skip(); /* needs root: a private mount namespace with a small tmpfs */
	snprintf(dir, sizeof(dir), "%s/store", g_small_fs);
	assert_int_equal(mkdir(dir, 0700), 0);
	if (tsr_store_open(dir, NULL, &store)) {
		rm_rf(dir);
		skip(); /* O_DIRECT on tmpfs needs Linux 6.6 */
	}
	io = make_io(TSR_IO_AUTO, NULL);
	buf = tsr_alloc_aligned(MiB);
	back = tsr_alloc_aligned(MiB);
	assert_non_null(io);
	assert_non_null(buf);
	assert_non_null(back);
	assert_int_equal(tsr_store_vol_create(store, "v", size, NULL), 0);
	assert_int_equal(tsr_store_vol_create(store, "w", size, NULL), 0);
	assert_int_equal(tsr_store_vol_open(store, "v", &v), 0);
	fill(buf, MiB, 1, 0);
	assert_int_equal(swrite(v, io, 0, MiB, buf, 0), 0);
	assert_int_equal(sflush(v, io), 0);
	fill_fs(g_small_fs, filler, sizeof(filler));

	/* a fresh 2 MiB (crc page 16): refused before anything changed */
	fill(buf, BS, 2, 32 * MiB);
	assert_int_equal(swrite(v, io, 32 * MiB, BS, buf, 0), -ENOSPC);
	/* (not read back here: a read fault on a hole of a tmpfs allocates a
	 * page, SIGBUS on a full one; ext4 and xfs read holes without
	 * allocating; test-disk-full reads them on a full ext4) */
	/* allocated blocks can be overwritten; the old data is all there */
	fill(buf, BS, 4, 8 * BS);
	assert_int_equal(swrite(v, io, 8 * BS, BS, buf, TSR_WRITE_FUA), 0);
	assert_int_equal(sread(v, io, 8 * BS, BS, back), 0);
	assert_true(is_filled(back, BS, 4, 8 * BS));
	assert_int_equal(sread(v, io, 0, 8 * BS, back), 0);
	assert_true(is_filled(back, 8 * BS, 1, 0));
	/* the bitmap cleared and set again on the full file system */
	assert_int_equal(sflush(v, io), 0);
	assert_int_equal(blockmeta_clear_dirty(&v->meta, size), 0);
	fill(buf, BS, 5, 9 * BS);
	assert_int_equal(swrite(v, io, 9 * BS, BS, buf, 0), 0);
	tsr_svol_put(v);
	/* the store closed and reopened on the full file system: a delete, the
	 * way to free space, still commits (the catalogue's WAL kept its blocks) */
	tsr_store_close(store);
	assert_int_equal(tsr_store_open(dir, NULL, &store), 0);
	assert_int_equal(tsr_store_vol_delete(store, "w"), 0);
	assert_int_equal(tsr_store_vol_open(store, "v", &v), 0);
	assert_int_equal(sread(v, io, 9 * BS, BS, back), 0);
	assert_true(is_filled(back, BS, 5, 9 * BS));
	/* a data hole under an allocated crc page: the data write fails (last:
	 * it leaves dirty regions, and the recovery at the next open reads
	 * entries of whole groups of regions, which a tmpfs allocates on a read
	 * fault: SIGBUS on a full one; ext4 and xfs read holes without
	 * allocating) */
	fill(buf, BS, 3, MiB + 4 * BS);
	ret = swrite(v, io, MiB + 4 * BS, BS, buf, 0);
	assert_true(ret == -ENOSPC || ret == 0); /* 0: the tmpfs had a page left */

	/* a bitmap with holes (as a store before this change left it: a clear
	 * punched it): the volume opens, reads go on, a write that has to set a
	 * bit is -ENOSPC instead of a SIGBUS */
	tsr_svol_put(v);
	{
		char path[PATH_MAX];
		struct tsr_vol_info info;
		int fd;

		assert_int_equal(tsr_store_vol_info(store, "v", &info), 0);
		vol_file(dir, info.uuid, "dirty", path);
		fd = open(path, O_RDWR);
		assert_true(fd >= 0);
		assert_int_equal(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
					   (off_t)file_size(dir, info.uuid, "dirty")),
				 0);
		close(fd);
		assert_int_equal(allocated(dir, info.uuid, "dirty"), 0);
	}
	fill_fs(g_small_fs, filler, sizeof(filler)); /* the punched page too */
	assert_int_equal(tsr_store_vol_open(store, "v", &v), 0);
	assert_int_equal(sread(v, io, 0, 8 * BS, back), 0);
	assert_true(is_filled(back, 8 * BS, 1, 0));
	fill(buf, BS, 6, 10 * BS);
	assert_int_equal(swrite(v, io, 10 * BS, BS, buf, 0), -ENOSPC);

	/* space freed: the refused writes go through */
	assert_int_equal(unlink(filler), 0);
	assert_int_equal(swrite(v, io, 10 * BS, BS, buf, 0), 0);
	assert_int_equal(sread(v, io, 10 * BS, BS, back), 0);
	assert_true(is_filled(back, BS, 6, 10 * BS));
	fill(buf, BS, 2, 32 * MiB);
	assert_int_equal(sread(v, io, 32 * MiB, BS, back), 0);
	assert_true(is_zero(back, BS)); /* the refused write changed nothing */
	assert_int_equal(swrite(v, io, 32 * MiB, BS, buf, 0), 0);
	assert_int_equal(sread(v, io, 32 * MiB, BS, back), 0);
	assert_true(is_filled(back, BS, 2, 32 * MiB));

	tsr_svol_put(v);
	tsr_store_close(store);
	tsr_io_destroy(io);
	tsr_free_aligned(buf);
	tsr_free_aligned(back);
	rm_rf(dir);
}

/* A 4 MiB tmpfs on a fresh directory, seen by this process only (a private
 * mount namespace: it goes away with the process).  Only root can; anyone
 * else runs without it.  Before any thread exists (unshare(CLONE_NEWNS)). */
static void small_fs_setup(void)
{
	snprintf(g_small_fs, sizeof(g_small_fs), "/var/tmp/tsr-fullfs-XXXXXX");
	if (geteuid() != 0 || mkdtemp(g_small_fs) == NULL) {
		g_small_fs[0] = 0;
		return;
	}
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tsr-fullfs", g_small_fs, "tmpfs", 0, "size=4m,mode=0700") < 0) {
		rmdir(g_small_fs);
		g_small_fs[0] = 0;
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_allocation),
	    cmocka_unit_test(test_full_fs),
	};
	int ret;

	small_fs_setup();
	ret = cmocka_run_group_tests(tests, NULL, NULL);
	if (g_small_fs[0]) {
		umount2(g_small_fs, MNT_DETACH);
		rmdir(g_small_fs);
	}
	return ret;
}
