/*
 * Unit tests of the store's control functions (engine/store/store.c,
 * catalog.c): create, list, info, resize, delete, their errors, the store
 * lock, the catalogue checksum, the removal of crash leftovers, and the
 * store's allocated bytes (every file of its volumes).
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "store_test.h"

static void test_create_list_info_delete(void **state)
{
	struct store_env *e = *state;
	struct tsr_vol_info info, *list;
	char path[PATH_MAX];
	struct stat st;
	size_t n;

	assert_int_equal(tsr_store_vol_create(e->store, "b-vol", 1 << 20, &info), 0);
	assert_string_equal(info.name, "b-vol");
	assert_int_equal(strlen(info.uuid), 36);
	assert_int_equal(info.size, 1 << 20);
	assert_true(info.created > 0);
	assert_int_equal(tsr_store_vol_create(e->store, "a.vol_1", 64 * BS, NULL), 0);

	assert_int_equal(tsr_store_vol_list(e->store, &list, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(list[0].name, "a.vol_1"); /* sorted by name */
	assert_string_equal(list[1].name, "b-vol");
	assert_int_equal(list[0].size, 64 * BS);
	free(list);

	/* files: sparse data of exactly size, crc table 8 bytes per block */
	vol_file(e->dir, info.uuid, "data", path);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 1 << 20);
	assert_int_equal(st.st_blocks, 0);
	vol_file(e->dir, info.uuid, "crc", path);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 8 * 256);

	assert_int_equal(tsr_store_vol_info(e->store, "b-vol", &info), 0);
	assert_int_equal(info.size, 1 << 20);
	assert_int_equal(info.allocated, 0);

	vol_file(e->dir, info.uuid, "data", path);
	assert_int_equal(tsr_store_vol_delete(e->store, "b-vol"), 0);
	assert_int_equal(tsr_store_vol_info(e->store, "b-vol", &info), -ENOENT);
	assert_int_equal(access(path, F_OK), -1); /* files gone */
	assert_int_equal(tsr_store_vol_list(e->store, &list, &n), 0);
	assert_int_equal(n, 1);
	free(list);

	/* survives a reopen */
	tsr_store_close(e->store);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	assert_int_equal(tsr_store_vol_info(e->store, "a.vol_1", &info), 0);
	assert_int_equal(info.size, 64 * BS);
	assert_int_equal(tsr_store_vol_info(e->store, "b-vol", &info), -ENOENT);
}

static void test_errors(void **state)
{
	struct store_env *e = *state;
	struct tsr_svol *v;

	assert_int_equal(tsr_store_vol_create(e->store, "v", 1 << 20, NULL), 0);
	assert_int_equal(tsr_store_vol_create(e->store, "v", 1 << 20, NULL), -EEXIST);
	assert_int_equal(tsr_store_vol_create(e->store, "", 1 << 20, NULL), -EINVAL);
	assert_int_equal(tsr_store_vol_create(e->store, "-x", 1 << 20, NULL), -EINVAL);
	assert_int_equal(tsr_store_vol_create(e->store, "a/b", 1 << 20, NULL), -EINVAL);
	assert_int_equal(tsr_store_vol_create(e->store, "w", 0, NULL), -EINVAL);
	assert_int_equal(tsr_store_vol_create(e->store, "w", 4097, NULL), -EINVAL);
	assert_int_equal(tsr_store_vol_create(e->store, "w", (1ull << 50) + BS, NULL), -EINVAL);
	assert_int_equal(tsr_store_vol_info(e->store, "w", &(struct tsr_vol_info){0}), -ENOENT);
	assert_int_equal(tsr_store_vol_delete(e->store, "nope"), -ENOENT);
	assert_int_equal(tsr_store_vol_resize(e->store, "nope", 1 << 21), -ENOENT);
	assert_int_equal(tsr_store_vol_open(e->store, "nope", &v), -ENOENT);
	assert_int_equal(tsr_store_vol_resize(e->store, "v", 1 << 19), -EINVAL); /* shrink */
	assert_int_equal(tsr_store_vol_resize(e->store, "v", (1 << 20) + 100), -EINVAL);

	/* delete while open */
	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	assert_int_equal(tsr_store_vol_delete(e->store, "v"), -EBUSY);
	tsr_svol_put(v);
	assert_int_equal(tsr_store_vol_delete(e->store, "v"), 0);
}

static void test_handles_refcounted(void **state)
{
	struct store_env *e = *state;
	struct tsr_vol_info info;
	struct tsr_svol *a, *b;

	assert_int_equal(tsr_store_vol_create(e->store, "v", 1 << 20, NULL), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &a), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &b), 0);
	assert_ptr_equal(a, b);
	/* the open sessions a detach waits for (cluster/closewait.c) */
	assert_int_equal(tsr_store_vol_info(e->store, "v", &info), 0);
	assert_int_equal(info.sessions, 2);
	tsr_svol_put(a);
	assert_int_equal(tsr_store_vol_delete(e->store, "v"), -EBUSY);
	assert_int_equal(tsr_store_vol_info(e->store, "v", &info), 0);
	assert_int_equal(info.sessions, 1);
	tsr_svol_put(b);
	assert_int_equal(tsr_store_vol_info(e->store, "v", &info), 0);
	assert_int_equal(info.sessions, 0);
	assert_int_equal(tsr_store_vol_delete(e->store, "v"), 0);
}

static void test_resize(void **state)
{
	struct store_env *e = *state;
	struct tsr_vol_info info;
	struct tsr_svol *v;

	assert_int_equal(tsr_store_vol_create(e->store, "v", 1 << 20, NULL), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	assert_int_equal(tsr_svol_size(v), 1 << 20);
	assert_int_equal(tsr_store_vol_resize(e->store, "v", 5 << 20), 0);
	assert_int_equal(tsr_svol_size(v), 5 << 20); /* the open handle sees it */
	assert_int_equal(tsr_store_vol_resize(e->store, "v", 5 << 20), 0); /* no-op */
	assert_int_equal(tsr_store_vol_resize(e->store, "v", 4 << 20), -EINVAL);
	assert_int_equal(tsr_store_vol_info(e->store, "v", &info), 0);
	assert_int_equal(info.size, 5 << 20);
	tsr_svol_put(v);
	/* closed volumes grow too */
	assert_int_equal(tsr_store_vol_resize(e->store, "v", 1ull << 40), 0);
	tsr_store_close(e->store);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	assert_int_equal(tsr_store_vol_info(e->store, "v", &info), 0);
	assert_int_equal(info.size, 1ull << 40);
}

static void test_store_lock(void **state)
{
	struct store_env *e = *state;
	struct tsr_store *other = NULL;
	pid_t pid;
	int status;

	/* flock is per open file: a second open, even from this process, conflicts */
	assert_int_equal(tsr_store_open(e->dir, NULL, &other), -EBUSY);
	assert_null(other);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct tsr_store *s = NULL;
		_exit(tsr_store_open(e->dir, NULL, &s) == -EBUSY ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	/* released at close */
	tsr_store_close(e->store);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
}

static void test_catalogue_tampered(void **state)
{
	struct store_env *e = *state;

	assert_int_equal(tsr_store_vol_create(e->store, "victim", 1 << 20, NULL), 0);
	tsr_store_close(e->store);
	e->store = NULL;

	assert_int_equal(store_sql(e->dir, "UPDATE volumes SET size = 2097152 WHERE name = 'victim'"),
			 0);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), -EUCLEAN);
	assert_null(e->store);

	/* put it back: the store opens again */
	assert_int_equal(store_sql(e->dir, "UPDATE volumes SET size = 1048576 WHERE name = 'victim'"),
			 0);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
}

static void test_leftovers_removed(void **state)
{
	struct store_env *e = *state;
	char path[PATH_MAX];
	struct tsr_vol_info info;
	int fd;

	assert_int_equal(tsr_store_vol_create(e->store, "keep", 1 << 20, &info), 0);
	tsr_store_close(e->store);
	/* files of a create that crashed before its row was inserted */
	vol_file(e->dir, "01234567-89ab-4def-8123-456789abcdef", "data", path);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	assert_int_equal(access(path, F_OK), -1);
	vol_file(e->dir, info.uuid, "data", path);
	assert_int_equal(access(path, F_OK), 0);
}

static void test_damaged_volume_files(void **state)
{
	struct store_env *e = *state;
	struct tsr_vol_info info;
	struct tsr_svol *v;
	char path[PATH_MAX];

	assert_int_equal(tsr_store_vol_create(e->store, "gone", 1 << 20, &info), 0);
	assert_int_equal(tsr_store_vol_create(e->store, "short", 1 << 20, NULL), 0);
	vol_file(e->dir, info.uuid, "crc", path);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "gone", &v), -EIO);
	assert_int_equal(tsr_store_vol_info(e->store, "short", &info), 0);
	vol_file(e->dir, info.uuid, "crc", path);
	assert_int_equal(truncate(path, 8), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "short", &v), -EUCLEAN);
	/* the store itself still opens; the other volumes stay usable */
	assert_int_equal(tsr_store_vol_create(e->store, "fine", 1 << 20, NULL), 0);
	tsr_store_close(e->store);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "fine", &v), 0);
	tsr_svol_put(v);
	assert_int_equal(tsr_store_vol_delete(e->store, "gone"), 0);
}

static void test_bad_dir(void **state)
{
	struct tsr_store *s = NULL;

	assert_int_equal(tsr_store_open("/nonexistent-dir/sub/store", NULL, &s), -ENOENT);
	assert_null(s);
	tsr_store_close(NULL);
}

/* Sum of st_blocks * 512 of the regular files under DIR/volumes. */
static uint64_t du_volumes(const char *dir)
{
	char path[PATH_MAX];
	struct dirent *de;
	uint64_t total = 0;
	DIR *d;

	snprintf(path, sizeof(path), "%s/volumes", dir);
	d = opendir(path);
	assert_non_null(d);
	while ((de = readdir(d))) {
		struct stat st;

		if (fstatat(dirfd(d), de->d_name, &st, 0) == 0 && S_ISREG(st.st_mode))
			total += (uint64_t)st.st_blocks * 512;
	}
	closedir(d);
	return total;
}

/* Sum of the allocated bytes tsr_store_vol_list gives (heads' data). */
static uint64_t listed_allocated(struct tsr_store *store)
{
	struct tsr_vol_info *list;
	uint64_t total = 0;
	size_t n, i;

	assert_int_equal(tsr_store_vol_list(store, &list, &n), 0);
	for (i = 0; i < n; i++)
		total += list[i].allocated;
	free(list);
	return total;
}

/* tsr_store_allocated counts every file of the volumes (node list's and
 * status's ALLOCATED): a snapshot layer's copies and a hidden volume too,
 * which the heads' figures of volume list leave out. */
static void test_store_allocated(void **state)
{
	struct store_env *e = *state;
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
	uint8_t *buf = tsr_alloc_aligned(1u << 20);
	uint64_t heads, all, all2;
	struct tsr_svol *v;

	assert_non_null(io);
	assert_non_null(buf);
	assert_int_equal(tsr_store_allocated(e->store, &all), 0);
	assert_int_equal(all, du_volumes(e->dir)); /* nothing yet: 0 */
	assert_int_equal(tsr_store_vol_create(e->store, "v", 4u << 20, NULL), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	fill(buf, 1u << 20, 1, 0);
	assert_int_equal(swrite(v, io, 0, 1u << 20, buf, 0), 0);
	assert_int_equal(sflush(v, io), 0);
	heads = listed_allocated(e->store);
	assert_true(heads >= 1u << 20);
	assert_int_equal(tsr_store_allocated(e->store, &all), 0);
	assert_int_equal(all, du_volumes(e->dir));
	assert_true(all > heads); /* the head's .crc page at least */

	/* a snapshot, then the same MiB overwritten: its old bytes are copied
	 * into the snapshot's layer, the head's figure does not change */
	assert_int_equal(tsr_store_snap_create(e->store, "v", "s", NULL), 0);
	fill(buf, 1u << 20, 2, 0);
	assert_int_equal(swrite(v, io, 0, 1u << 20, buf, 0), 0);
	assert_int_equal(sflush(v, io), 0);
	tsr_svol_put(v);
	assert_int_equal(listed_allocated(e->store), heads);
	assert_int_equal(tsr_store_allocated(e->store, &all2), 0);
	assert_int_equal(all2, du_volumes(e->dir));
	assert_true(all2 >= all + (1u << 20));

	/* a clone of s, then v deleted: v stays, hidden, for the clone */
	assert_int_equal(tsr_store_vol_clone(e->store, "c", "v", "s", NULL), 0);
	assert_int_equal(tsr_store_vol_delete(e->store, "v"), 0);
	assert_true(listed_allocated(e->store) < 1u << 20); /* c's head: nothing written */
	assert_int_equal(tsr_store_allocated(e->store, &all), 0);
	assert_int_equal(all, du_volumes(e->dir));
	assert_true(all >= 1u << 20); /* s's layer at least */

	/* the last one gone: 0 */
	assert_int_equal(tsr_store_vol_delete(e->store, "c"), 0);
	assert_int_equal(tsr_store_allocated(e->store, &all), 0);
	assert_int_equal(all, 0);
	tsr_io_destroy(io);
	tsr_free_aligned(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_create_list_info_delete, store_env_setup, store_env_teardown),
	    cmocka_unit_test_setup_teardown(test_errors, store_env_setup, store_env_teardown),
	    cmocka_unit_test_setup_teardown(test_handles_refcounted, store_env_setup, store_env_teardown),
	    cmocka_unit_test_setup_teardown(test_resize, store_env_setup, store_env_teardown),
	    cmocka_unit_test_setup_teardown(test_store_lock, store_env_setup, store_env_teardown),
	    cmocka_unit_test_setup_teardown(test_catalogue_tampered, store_env_setup, store_env_teardown),
	    cmocka_unit_test_setup_teardown(test_leftovers_removed, store_env_setup, store_env_teardown),
	    cmocka_unit_test_setup_teardown(test_damaged_volume_files, store_env_setup, store_env_teardown),
	    cmocka_unit_test_setup_teardown(test_store_allocated, store_env_setup, store_env_teardown),
	    cmocka_unit_test(test_bad_dir),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
