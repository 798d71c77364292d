/*
 * Unit tests of the store's raw device mode: volumes as extents of a block
 * device (a loop device over a file under /var/tmp).  Skipped (77) unless
 * running as root with /dev/loop-control and losetup.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "store_test.h"

#define MiB      (1ull << 20)
#define DEV_SIZE (64 * MiB)

static char g_dir[512], g_backing[600], g_loop[64];

static int run(const char *cmd, char *out, size_t len)
{
	FILE *p = popen(cmd, "r");
	int st;

	if (p == NULL)
		return -1;
	if (out) {
		if (fgets(out, (int)len, p) == NULL)
			out[0] = 0;
		out[strcspn(out, "\n")] = 0;
	}
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int setup_loop(void)
{
	char cmd[800], garbage[65536];
	int fd;
	uint64_t off;

	if (geteuid() != 0 || access("/dev/loop-control", F_OK) != 0)
		return 77;
	if (scratch_dir(g_dir, sizeof(g_dir)))
		return -1;
	snprintf(g_backing, sizeof(g_backing), "%s/disk", g_dir);
	fd = open(g_backing, O_CREAT | O_WRONLY, 0600);
	if (fd < 0)
		return -1;
	/* old contents a new volume must never show */
	memset(garbage, 0xab, sizeof(garbage));
	for (off = 0; off < DEV_SIZE; off += sizeof(garbage))
		if (pwrite(fd, garbage, sizeof(garbage), (off_t)off) != sizeof(garbage))
			return -1;
	close(fd);
	snprintf(cmd, sizeof(cmd), "losetup -f --show %s 2>/dev/null", g_backing);
	if (run(cmd, g_loop, sizeof(g_loop)) != 0 || g_loop[0] == 0)
		return 77;
	return 0;
}

static void teardown_loop(void)
{
	char cmd[128];

	if (g_loop[0]) {
		snprintf(cmd, sizeof(cmd), "losetup -d %s", g_loop);
		run(cmd, NULL, 0);
	}
	rm_rf(g_dir);
}

static void test_device_volumes(void **state)
{
	struct tsr_store_opts opts = {.device = g_loop};
	char sdir[600], path[700];
	struct tsr_store *s = NULL;
	struct tsr_svol *v1, *v2;
	struct tsr_extent ext[4];
	struct tsr_vol_info info;
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
	uint8_t *buf = tsr_alloc_aligned(4 * MiB);
	size_t n;
	int fd;

	assert_non_null(io);
	assert_non_null(buf);
	snprintf(sdir, sizeof(sdir), "%s/store", g_dir);
	assert_int_equal(tsr_store_open(sdir, &opts, &s), 0);
	assert_int_equal(tsr_store_vol_create(s, "v1", 16 * MiB, NULL), 0);
	assert_int_equal(tsr_store_vol_create(s, "v2", 16 * MiB, &info), 0);
	assert_int_equal(info.allocated, 16 * MiB); /* an extent is fully provisioned */
	assert_int_equal(tsr_store_vol_create(s, "big", 40 * MiB, NULL), -ENOSPC);
	assert_int_equal(tsr_store_vol_open(s, "v1", &v1), 0);
	assert_int_equal(tsr_store_vol_open(s, "v2", &v2), 0);

	/* new volumes read zeros, not the device's old contents */
	assert_int_equal(sread(v2, io, 0, 4 * MiB, buf), 0);
	assert_true(is_zero(buf, 4 * MiB));
	fill(buf, 2 * MiB, 1, 0);
	assert_int_equal(swrite(v1, io, 0, 2 * MiB, buf, 0), 0);
	fill(buf, 2 * MiB, 2, 14 * MiB);
	assert_int_equal(swrite(v2, io, 14 * MiB, 2 * MiB, buf, TSR_WRITE_FUA), 0);
	assert_int_equal(sflush(v1, io), 0);
	assert_int_equal(sread(v1, io, 0, 2 * MiB, buf), 0);
	assert_true(is_filled(buf, 2 * MiB, 1, 0));
	assert_int_equal(sread(v2, io, 14 * MiB, 2 * MiB, buf), 0);
	assert_true(is_filled(buf, 2 * MiB, 2, 14 * MiB));

	/* trim reads zeros afterwards */
	assert_int_equal(strim(v1, io, MiB, MiB), 0);
	assert_int_equal(sread(v1, io, 0, 2 * MiB, buf), 0);
	assert_true(is_filled(buf, MiB, 1, 0));
	assert_true(is_zero(buf + MiB, MiB));
	assert_int_equal(szeroes(v1, io, 0, 4096, TSR_WRITE_NO_HOLE), 0);
	assert_int_equal(sread(v1, io, 0, 4096, buf), 0);
	assert_true(is_zero(buf, 4096));
	assert_int_equal(tsr_svol_block_status(v1, 0, 16 * MiB, ext, 4, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(ext[0].length, 16 * MiB);

	/* grow: only into free space after the extent */
	assert_int_equal(tsr_store_vol_resize(s, "v1", 20 * MiB), -ENOSPC);
	assert_int_equal(tsr_store_vol_resize(s, "v2", 48 * MiB), 0);
	assert_int_equal(tsr_svol_size(v2), 48 * MiB);
	assert_int_equal(sread(v2, io, 16 * MiB, 4 * MiB, buf), 0);
	assert_true(is_zero(buf, 4 * MiB)); /* the grown part was zeroed */
	assert_int_equal(tsr_store_vol_resize(s, "v2", 64 * MiB), -ENOSPC);
	tsr_svol_put(v1);
	tsr_svol_put(v2);

	/* first fit reuses the hole left by a delete */
	assert_int_equal(tsr_store_vol_delete(s, "v1"), 0);
	assert_int_equal(tsr_store_vol_create(s, "v3", 8 * MiB, NULL), 0);
	assert_int_equal(tsr_store_vol_open(s, "v3", &v1), 0);
	assert_int_equal(sread(v1, io, 0, 4 * MiB, buf), 0);
	assert_true(is_zero(buf, 4 * MiB)); /* v1's old data is gone */
	fill(buf, 4096, 3, 0);
	assert_int_equal(swrite(v1, io, 0, 4096, buf, TSR_WRITE_FUA), 0);
	tsr_svol_put(v1);
	tsr_store_close(s);

	/* v3 sits at device offset 0 */
	fd = open(g_backing, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, 4096, 0), 4096);
	close(fd);
	assert_true(is_filled(buf, 4096, 3, 0));

	/* the store remembers its device */
	assert_int_equal(tsr_store_open(sdir, NULL, &s), -EINVAL);
	snprintf(path, sizeof(path), "%s", g_backing);
	opts.device = path; /* not a block device */
	assert_int_equal(tsr_store_open(sdir, &opts, &s), -EINVAL);
	opts.device = g_loop;
	assert_int_equal(tsr_store_open(sdir, &opts, &s), 0);
	assert_int_equal(tsr_store_vol_info(s, "v2", &info), 0);
	assert_int_equal(info.size, 48 * MiB);
	tsr_store_close(s);
	tsr_io_destroy(io);
	tsr_free_aligned(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_device_volumes),
	};
	int ret = setup_loop();

	if (ret == 77) {
		fprintf(stderr, "skip: needs root, /dev/loop-control and losetup\n");
		teardown_loop();
		return 77;
	}
	if (ret) {
		teardown_loop();
		return 1;
	}
	ret = cmocka_run_group_tests(tests, NULL, NULL);
	teardown_loop();
	return ret;
}
