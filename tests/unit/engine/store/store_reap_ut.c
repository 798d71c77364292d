/*
 * Unit tests of the reaper's paced removal (engine/store/spare.c,
 * reap_file): a deleted layer's large files are freed in steps of about
 * the step's allocated bytes (holes punched front to back) before the
 * unlink, so that one unlink does not discard every extent at once.  A
 * layer holding N MiB is freed in at least N / step pieces and its files
 * and their space are gone after; a process that dies in the middle leaves
 * a partly punched file (its blocks partly freed, its size whole), and the
 * next open removes it without an error, the volume unchanged.
 */
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "store_test.h"

/* test hooks of engine/store/spare.c */
unsigned store_test_spares_idle(struct tsr_store *store);
uint64_t store_test_reap_steps(struct tsr_store *store);
extern _Atomic uint64_t store_test_reap_step;
extern _Atomic unsigned store_test_reap_exit_after;
extern _Atomic int store_test_reap_hold;

#define NB    2048u /* blocks of the test volume: 8 MiB */
#define VSIZE ((uint64_t)NB * BS)
#define PIECE (256u * BS) /* written in 1 MiB pieces */
#define STEP  (1ull << 20)

struct env {
	char dir[512];
	struct tsr_store *store;
	struct tsr_io *io;
	uint8_t *buf; /* PIECE, aligned */
};

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	if (e == NULL || scratch_dir(e->dir, sizeof(e->dir)))
		return -1;
	if (tsr_store_open(e->dir, NULL, &e->store))
		return -1;
	e->io = make_io(TSR_IO_AUTO, NULL);
	e->buf = tsr_alloc_aligned(PIECE);
	if (e->io == NULL || e->buf == NULL)
		return -1;
	atomic_store(&store_test_reap_step, STEP);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	atomic_store(&store_test_reap_step, 0);
	tsr_io_destroy(e->io);
	if (e->store)
		tsr_store_close(e->store);
	tsr_free_aligned(e->buf);
	rm_rf(e->dir);
	free(e);
	return 0;
}

/* Files in volumes/ whose name starts with prefix (NULL: all). */
static int count_files(const char *dir, const char *prefix)
{
	char path[600];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "%s/volumes", dir);
	d = opendir(path);
	assert_non_null(d);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.' &&
		    (prefix == NULL || strncmp(de->d_name, prefix, strlen(prefix)) == 0))
			n++;
	closedir(d);
	return n;
}

static void write_v(struct env *e, uint16_t s)
{
	struct tsr_svol *v;
	uint64_t off;

	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	for (off = 0; off < VSIZE; off += PIECE) {
		fill(e->buf, PIECE, s, off);
		assert_int_equal(swrite(v, e->io, off, PIECE, e->buf, 0), 0);
	}
	tsr_svol_put(v);
}

static void check_v(struct env *e, uint16_t s)
{
	struct tsr_svol *v;
	uint64_t off;

	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	for (off = 0; off < VSIZE; off += PIECE) {
		memset(e->buf, 0xa5, PIECE);
		assert_int_equal(sread(v, e->io, off, PIECE, e->buf), 0);
		assert_true(is_filled(e->buf, PIECE, s, off));
	}
	tsr_svol_put(v);
}

/* Blocks (512-byte units) and size of the layer's data file; -1: none. */
static long long data_blocks(struct env *e, const char *uuid, off_t *size)
{
	char path[700];
	struct stat st;

	snprintf(path, sizeof(path), "%s/volumes/%s.data", e->dir, uuid);
	if (stat(path, &st) < 0)
		return -1;
	if (size)
		*size = st.st_size;
	return (long long)st.st_blocks;
}

/* v written with 1, snapshot s, rewritten with 2 (every block copied into
 * s's layer); s's uuid in uuid.  The layer's data file holds >= 8 MiB. */
static void make_layer(struct env *e, char uuid[37])
{
	struct tsr_snap_info si;

	assert_int_equal(tsr_store_vol_create(e->store, "v", VSIZE, NULL), 0);
	write_v(e, 1);
	assert_int_equal(tsr_store_snap_create(e->store, "v", "s", NULL), 0);
	write_v(e, 2);
	assert_int_equal(tsr_store_snap_info(e->store, "v", "s", &si), 0);
	memcpy(uuid, si.uuid, 37);
	assert_true(data_blocks(e, uuid, NULL) * 512 >= (long long)VSIZE);
}

/*
 * The deleted layer's 8 MiB are freed in >= 8 steps of 1 MiB before the
 * unlink (the reaper's counter), its files are gone after and the head
 * reads back.  Held before the removal, the file still holds its blocks;
 * the step counter does not move for the small files (crc, present).
 */
static void test_reap_in_steps(void **state)
{
	struct env *e = *state;
	char uuid[37];
	uint64_t before;

	make_layer(e, uuid);
	assert_int_equal(tsr_store_snap_spare(e->store, "v", true), 0); /* starts the reaper */
	store_test_spares_idle(e->store);
	before = store_test_reap_steps(e->store);
	assert_int_equal(count_files(e->dir, uuid), 3);

	atomic_store(&store_test_reap_hold, 1);
	assert_int_equal(tsr_store_snap_delete(e->store, "v", "s"), 0);
	assert_true(data_blocks(e, uuid, NULL) * 512 >= (long long)VSIZE); /* not yet */
	atomic_store(&store_test_reap_hold, 0);
	store_test_spares_idle(e->store);

	assert_true(store_test_reap_steps(e->store) - before >= VSIZE / STEP);
	assert_true(store_test_reap_steps(e->store) - before <= VSIZE / STEP + 2);
	assert_int_equal(count_files(e->dir, uuid), 0);
	check_v(e, 2);
}

/*
 * A process dies after the reaper freed 3 of the layer's pieces: the data
 * file is left with its size and 3 MiB less on disk (and more than 0).  The
 * row is gone, so the next open removes the file without an error; the
 * volume reads back, the snapshot is absent, and only the head's files and
 * nothing of the layer is left.
 */
static void test_reap_interrupted(void **state)
{
	struct env *e = *state;
	struct tsr_snap_info si;
	char uuid[37];
	long long blocks_before, blocks;
	off_t size = 0;
	pid_t pid;
	int st;

	make_layer(e, uuid);
	blocks_before = data_blocks(e, uuid, NULL);
	tsr_store_close(e->store);
	e->store = NULL;
	pid = fork();
	if (pid == 0) {
		struct tsr_store *s;

		if (tsr_store_open(e->dir, NULL, &s) || tsr_store_snap_spare(s, "v", true))
			_exit(1);
		store_test_spares_idle(s);
		atomic_store(&store_test_reap_exit_after, 3);
		if (tsr_store_snap_delete(s, "v", "s"))
			_exit(2);
		store_test_spares_idle(s); /* the removal: _exit(99) at its 3rd piece */
		_exit(0);
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 99);

	blocks = data_blocks(e, uuid, &size);
	assert_true(blocks > 0);
	assert_int_equal(size, (off_t)VSIZE);
	assert_true(blocks * 512 <= blocks_before * 512 - (long long)(3 * STEP));

	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	assert_int_equal(data_blocks(e, uuid, NULL), -1);
	assert_int_equal(count_files(e->dir, uuid), 0);
	assert_int_equal(tsr_store_snap_info(e->store, "v", "s", &si), -ENOENT);
	check_v(e, 2);
	assert_int_equal(count_files(e->dir, NULL), 3); /* the head's data, crc, dirty */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_reap_in_steps, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reap_interrupted, setup, teardown),
	};

	tsr_log_set_level(TSR_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
