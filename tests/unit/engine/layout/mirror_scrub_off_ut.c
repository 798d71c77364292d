/*
 * The mirror scrub's rewrite of the local copy's snapshot block
 * (tsr_svol_snap_repair: the store lock, the layer's writes, fdatasyncs)
 * runs in a thread of its own, not on the volume's home worker: another
 * volume of that worker keeps its I/O while the repair is held
 * ($TSR_TEST_MIRROR_SNAP_REPAIR_HOLD_FILE), the repair then lands, and the
 * volume's close while it is held waits for it safely.  With
 * $TSR_TEST_MIRROR_SNAP_REPAIR_INLINE set (the call on the home worker, as
 * before) test_repair_off_home fails: the other volume's write is not
 * answered while the repair is held.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mirror_env.h"

#define MiB   (1024ull * 1024)
#define VOL   (8 * MiB)
#define WVOL  (4 * MiB)
#define WNAME "w"

struct fix {
	struct env *e;
	struct tsr_layout *w; /* the other volume, same home worker */
	char dir[512];        /* the hold file's */
	char hold[600], held[640];
	uint8_t *at_s1;
};

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	void *es;

	if (env_setup(&es, &(struct env_sizes){
			       .vol = VOL, .model = VOL, .file = VOL, .buf = 4 * MiB}) != 0)
		return -1;
	f->e = es;
	for (unsigned i = 0; i < 3; i++)
		if (tsr_store_vol_create(f->e->nodes[i].store, WNAME, WVOL, NULL) < 0)
			return -1;
	if (scratch_dir(f->dir, sizeof(f->dir)) < 0)
		return -1;
	snprintf(f->hold, sizeof(f->hold), "%s/hold", f->dir);
	snprintf(f->held, sizeof(f->held), "%s/hold.held", f->dir);
	setenv("TSR_TEST_MIRROR_SNAP_REPAIR_HOLD_FILE", f->hold, 1);
	f->at_s1 = malloc(VOL);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fix *f = *state;
	void *es = f->e;

	unlink(f->hold);
	unsetenv("TSR_TEST_MIRROR_SNAP_REPAIR_HOLD_FILE");
	tsr_layout_destroy(f->w);
	env_teardown(&es);
	rm_rf(f->dir);
	free(f->at_s1);
	free(f);
	return 0;
}

/* Wrong bytes with a valid CRC in node n's image of snap (what a scrub finds
 * and no read detects), planted through the store's own repair call. */
static void plant_snap_block(struct env *e, unsigned n, const char *snap, uint64_t b, uint64_t seed)
{
	struct tsr_svol *v = NULL;

	assert_int_equal(tsr_store_snap_open(e->nodes[n].store, VOLNAME, snap, &v), 0);
	fill(e->buf, BS, seed, b * BS);
	assert_int_equal(tsr_svol_snap_repair(v, 1, b * BS, BS, e->buf), 0); /* epoch 1 */
	tsr_svol_put(v);
}

static bool file_exists(const char *path)
{
	return access(path, F_OK) == 0;
}

static bool wait_file(const char *path, unsigned ms)
{
	uint64_t end = mono_ms() + ms;

	while (!file_exists(path)) {
		if (mono_ms() >= end)
			return false;
		usleep(5000);
	}
	return true;
}

/* v (local copy on node0) written, s1 cut, a block of node0's s1 made
 * wrong; w (4 MiB, local copy on node0) on the same home worker. */
static void build(struct fix *f)
{
	struct env *e = f->e;
	struct tsr_mirror_opts o;

	env_mirror_opts(e, &o, VOL, true);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	env_mirror_opts(e, &o, WVOL, true);
	o.name = WNAME;
	assert_int_equal(tsr_layout_mirror_create(&o, &f->w), 0);
	assert_int_equal(lwrite(e, 0, 4 * MiB, 1, TSR_WRITE_FUA), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s1"), 0);
	memcpy(f->at_s1, e->model, VOL);
	assert_int_equal(lwrite(e, 0, 64 * 1024, 2, TSR_WRITE_FUA), 0);
	plant_snap_block(e, 0, "s1", 300, 77); /* the local copy loses its vote */
}

/* The scrub with repair started, its local rewrite held in its store call. */
static void scrub_held(struct fix *f)
{
	int fd = open(f->hold, O_WRONLY | O_CREAT, 0600);

	assert_true(fd >= 0);
	close(fd);
	unlink(f->held);
	assert_int_equal(tsr_layout_scrub_start(f->e->l, true), 0);
	if (!wait_file(f->held, 20000)) {
		print_message("the local snapshot repair never started\n");
		fail();
	}
}

static struct dcall wcall; /* not on the stack: it may outlive a failed wait */

/* A call on w through the home worker; -ETIMEDOUT after ms (then it is
 * waited for again, the hold released first, so that it ends here). */
static int wdo(struct fix *f, enum dkind kind, uint64_t off, uint32_t len, void *buf, unsigned ms)
{
	int ret;

	memset(&wcall, 0, sizeof(wcall));
	wcall.l = f->w;
	wcall.kind = kind;
	wcall.off = off;
	wcall.len = len;
	wcall.buf = buf;
	wcall.flags = kind == D_WRITE ? TSR_WRITE_FUA : 0;
	dcall_start(f->e->home, &wcall);
	ret = dcall_wait(&wcall, ms);
	if (ret == -ETIMEDOUT) {
		unlink(f->hold);
		(void)dcall_wait(&wcall, 40000);
	}
	return ret;
}

/* While the local copy's snapshot repair is held, w on the same home
 * worker writes and reads back; the scrub of v is still running (its
 * repair unanswered).  Released: the repair lands (node0's s1 equals what
 * was cut), counted repaired; a second scrub is clean. */
static void test_repair_off_home(void **state)
{
	struct fix *f = *state;
	struct env *e = f->e;
	struct tsr_layout_status s;
	uint8_t *wbuf = tsr_alloc_aligned(64 * 1024), *rbuf = tsr_alloc_aligned(64 * 1024);
	uint64_t t0, t;
	int ret;

	build(f);
	scrub_held(f);
	for (unsigned i = 0; i < 8; i++) {
		fill(wbuf, 64 * 1024, 100 + i, i * 64 * 1024);
		t0 = mono_ms();
		ret = wdo(f, D_WRITE, i * 64 * 1024, 64 * 1024, wbuf, 5000);
		t = mono_ms() - t0;
		if (ret != 0) {
			print_message("w's write %u while v's local snapshot repair is held: %d "
				      "(%s) after %llu ms\n",
				      i, ret, strerror(-ret), (unsigned long long)t);
			fail();
		}
		assert_int_equal(wdo(f, D_READ, i * 64 * 1024, 64 * 1024, rbuf, 5000), 0);
		assert_memory_equal(rbuf, wbuf, 64 * 1024);
	}
	assert_true(file_exists(f->hold)); /* still held: nothing above waited it out */
	tsr_layout_get_status(e->l, &s);
	assert_true(s.scrub_running);
	assert_int_equal(s.scrub_repaired, 0);
	unlink(f->hold);
	assert_true(wait_status(e, scrub_finished, 30000));
	tsr_layout_get_status(e->l, &s);
	assert_int_equal(s.scrub_mismatches, 1);
	assert_int_equal(s.scrub_repaired, 1);
	assert_int_equal(s.scrub_unrepaired, 0);
	for (unsigned n = 0; n < 3; n++)
		assert_store_snap_equals(e, e->nodes[n].store, e->nodes[n].node_id, "s1", f->at_s1,
					 VOL);
	scrub_clean_status(e, &s);
	tsr_free_aligned(wbuf);
	tsr_free_aligned(rbuf);
}

static void *release_later(void *arg)
{
	struct fix *f = arg;

	usleep(300 * 1000);
	unlink(f->hold);
	return NULL;
}

/* v closed while its local snapshot repair is held: the close waits for
 * the repair's answer (the scrub ends -ECANCELED with it), nothing is
 * touched after it is freed (ASan), the repair landed, w goes on. */
static void test_close_while_held(void **state)
{
	struct fix *f = *state;
	struct env *e = f->e;
	pthread_t t;
	uint64_t t0;

	build(f);
	scrub_held(f);
	assert_int_equal(pthread_create(&t, NULL, release_later, f), 0);
	t0 = mono_ms();
	env_layout_close(e);
	print_message("v closed %llu ms after the close began (the repair held 300 ms)\n",
		      (unsigned long long)(mono_ms() - t0));
	pthread_join(t, NULL);
	assert_false(file_exists(f->hold));
	assert_store_snap_equals(e, e->nodes[0].store, "node0", "s1", f->at_s1, VOL);
	fill(e->buf, 4096, 9, 0);
	assert_int_equal(wdo(f, D_WRITE, 0, 4096, e->buf, 20000), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_repair_off_home, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_while_held, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
