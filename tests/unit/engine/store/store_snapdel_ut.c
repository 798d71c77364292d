/*
 * Unit tests of a snapshot delete whose merge runs outside the caller
 * (engine/store/merge.c, snap.c snap_merge_job, cow.c's copy target): a
 * delete of an open volume's layer returns once the row is marked and the
 * layer flagged, and the thread merges it afterwards.  A test hook stalls
 * the merge; meanwhile writes, trims and write-zeroes run through the real
 * io path, and every remaining snapshot and the head are read back block by
 * block against a model, while stalled, after the merge and after a reopen.
 * Deleting the newest, a middle and the oldest layer, and a layer whose
 * clone goes later; a child process killed at every crash point of the
 * background delete (with writes during the merge) must reopen with every
 * image whole and no file left over.
 */
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "store_test.h"

/* test hooks of engine/store/snap.c and merge.c */
extern int store_test_crash_at;
unsigned store_test_merges_idle(struct tsr_store *store);
extern void (*store_test_merge_hook)(void *arg);
extern void *store_test_merge_arg;

#define NB    256u /* blocks of the test volume: 1 MiB */
#define VSIZE ((uint64_t)NB * BS)
#define NSNAP 3

struct env {
	char dir[512];
	struct tsr_store *store;
	struct tsr_io *io;
	uint8_t *buf; /* VSIZE, aligned */
};

/* Content of an image: per block the seed of fill(), 0 = zeros. */
struct model {
	uint16_t seed[NB];
};

/* The stall: the merge thread waits in the hook until released. */
struct stall {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t caller;  /* the thread that called the delete */
	bool entered;      /* the merge thread is in the hook */
	bool release;      /* let it go on */
	bool in_caller;    /* the hook ran on the caller's thread: merge not moved out */
	unsigned calls;
};

static struct stall g_stall = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void stall_hook(void *arg)
{
	struct stall *s = arg;

	pthread_mutex_lock(&s->lock);
	s->calls++;
	if (pthread_equal(pthread_self(), s->caller)) {
		/* the merge runs inside the delete call: do not wait for ourselves */
		s->in_caller = true;
		pthread_mutex_unlock(&s->lock);
		return;
	}
	s->entered = true;
	pthread_cond_broadcast(&s->cond);
	while (!s->release)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

static void stall_arm(void)
{
	pthread_mutex_lock(&g_stall.lock);
	g_stall.caller = pthread_self();
	g_stall.entered = g_stall.release = g_stall.in_caller = false;
	g_stall.calls = 0;
	pthread_mutex_unlock(&g_stall.lock);
	store_test_merge_arg = &g_stall;
	store_test_merge_hook = stall_hook;
}

/* After the delete returned: the merge must be stalled on another thread. */
static void stall_wait_entered(void)
{
	pthread_mutex_lock(&g_stall.lock);
	if (g_stall.in_caller) {
		pthread_mutex_unlock(&g_stall.lock);
		fail_msg("the merge ran inside tsr_store_snap_delete (in the gate)");
	}
	while (!g_stall.entered)
		pthread_cond_wait(&g_stall.cond, &g_stall.lock);
	pthread_mutex_unlock(&g_stall.lock);
}

static void stall_release(void)
{
	pthread_mutex_lock(&g_stall.lock);
	g_stall.release = true;
	pthread_cond_broadcast(&g_stall.cond);
	pthread_mutex_unlock(&g_stall.lock);
}

static void stall_disarm(void)
{
	store_test_merge_hook = NULL;
	store_test_merge_arg = NULL;
}

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	g_rng ^= g_rng << 13;
	g_rng ^= g_rng >> 7;
	g_rng ^= g_rng << 17;
	return g_rng;
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	if (e == NULL || scratch_dir(e->dir, sizeof(e->dir)))
		return -1;
	if (tsr_store_open(e->dir, NULL, &e->store))
		return -1;
	e->io = make_io(TSR_IO_AUTO, NULL);
	e->buf = tsr_alloc_aligned(VSIZE);
	if (e->io == NULL || e->buf == NULL)
		return -1;
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	stall_disarm();
	tsr_io_destroy(e->io);
	tsr_store_close(e->store);
	tsr_free_aligned(e->buf);
	rm_rf(e->dir);
	free(e);
	return 0;
}

/* Write blocks [b, b+n) with seed s through v (the real io path), in the model too. */
static void mwrite(struct env *e, struct tsr_svol *v, struct model *m, uint64_t b, uint64_t n,
		   uint16_t s)
{
	uint64_t i;

	fill(e->buf, n * BS, s, b * BS);
	assert_int_equal(swrite(v, e->io, b * BS, (uint32_t)(n * BS), e->buf, 0), 0);
	for (i = 0; i < n; i++)
		m->seed[b + i] = s;
}

static void mtrim(struct env *e, struct tsr_svol *v, struct model *m, uint64_t b, uint64_t n,
		  bool zeroes)
{
	uint64_t i;

	if (zeroes)
		assert_int_equal(szeroes(v, e->io, b * BS, n * BS, TSR_WRITE_NO_HOLE), 0);
	else
		assert_int_equal(strim(v, e->io, b * BS, n * BS), 0);
	for (i = 0; i < n; i++)
		m->seed[b + i] = 0;
}

static void check_image(struct env *e, struct tsr_svol *v, const struct model *m, const char *what)
{
	uint64_t b;

	memset(e->buf, 0xa5, VSIZE);
	assert_int_equal(sread(v, e->io, 0, (uint32_t)VSIZE, e->buf), 0);
	for (b = 0; b < NB; b++) {
		const uint8_t *p = e->buf + b * BS;
		bool ok = m->seed[b] ? is_filled(p, BS, m->seed[b], b * BS) : is_zero(p, BS);

		if (!ok)
			fail_msg("%s: block %llu differs from the model (seed %u)", what,
				 (unsigned long long)b, m->seed[b]);
	}
}

static void check_snap(struct env *e, const char *snap, const struct model *m)
{
	struct tsr_svol *s;
	char what[64];

	snprintf(what, sizeof(what), "v@%s", snap);
	assert_int_equal(tsr_store_snap_open(e->store, "v", snap, &s), 0);
	check_image(e, s, m, what);
	tsr_svol_put(s);
}

/* The snapshots that remain (gone[i]: s<i+1> deleted) and the head. */
static void check_all(struct env *e, struct tsr_svol *v, const struct model *snaps,
		      const bool *gone, const struct model *head)
{
	char name[8];
	int i;

	for (i = 0; i < NSNAP; i++) {
		snprintf(name, sizeof(name), "s%d", i + 1);
		if (gone[i]) {
			assert_int_equal(tsr_store_snap_info(e->store, "v", name,
							     &(struct tsr_snap_info){0}),
					 -ENOENT);
			continue;
		}
		check_snap(e, name, &snaps[i]);
	}
	if (v)
		check_image(e, v, head, "head");
}

/*
 * v with s1, s2, s3: every block written (seed 1), then
 *   s1, 0..63 rewritten   (s1 holds 0..63)
 *   s2, 32..127 rewritten (s2 holds 32..127)
 *   s3, 96..191 rewritten (s3 holds 96..191)
 * so each layer holds blocks its older neighbour lacks, and some it has.
 */
static void make_chain(struct env *e, struct tsr_svol **vout, struct model *snaps,
		       struct model *head)
{
	static const uint64_t first[NSNAP] = {0, 32, 96}, count[NSNAP] = {64, 96, 96};
	struct tsr_svol *v;
	char name[8];
	int i;

	memset(head, 0, sizeof(*head));
	assert_int_equal(tsr_store_vol_create(e->store, "v", VSIZE, NULL), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	mwrite(e, v, head, 0, NB, 1);
	for (i = 0; i < NSNAP; i++) {
		snprintf(name, sizeof(name), "s%d", i + 1);
		assert_int_equal(tsr_store_snap_create(e->store, "v", name, NULL), 0);
		snaps[i] = *head;
		mwrite(e, v, head, first[i], count[i], (uint16_t)(2 + i));
	}
	mtrim(e, v, head, 250, 2, false); /* s3 holds two blocks of seed 1 more */
	*vout = v;
}

/* Writes while the merge is stalled: blocks the deleted layer holds (no copy
 * needed then), blocks only the target holds, blocks nobody holds (copied
 * into the target now), trims and write-zeroes over all of those, and a
 * few random ones. */
static void writes_during_merge(struct env *e, struct tsr_svol *v, struct model *head,
				uint16_t seed)
{
	int k;

	mwrite(e, v, head, 120, 16, seed);          /* s2 holds 120..127, s3 128..135 */
	mwrite(e, v, head, 200, 16, seed + 1);      /* no layer holds 192.. */
	mwrite(e, v, head, 10, 4, seed + 2);        /* s1 */
	mtrim(e, v, head, 140, 4, false);           /* s3 holds them */
	mtrim(e, v, head, 220, 4, true);            /* nobody */
	mwrite(e, v, head, 60, 8, seed + 3);        /* s1 60..63, s2 64..67 */
	for (k = 0; k < 24; k++) {
		uint64_t b = rnd() % NB, n = 1 + rnd() % 6;

		if (b + n > NB)
			n = NB - b;
		if (k % 5 == 4)
			mtrim(e, v, head, b, n, k % 2);
		else
			mwrite(e, v, head, b, n, (uint16_t)(seed + 10 + k));
	}
}

/* Delete s<del> of an open volume with the merge stalled, write, check,
 * let the merge go, check, reopen, check. */
static void delete_case(struct env *e, int del)
{
	struct model snaps[NSNAP], head;
	bool gone[NSNAP] = {false};
	struct tsr_svol *v;
	char name[8];
	unsigned before;

	make_chain(e, &v, snaps, &head);
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 3 * NSNAP);
	before = store_test_merges_idle(e->store);
	snprintf(name, sizeof(name), "s%d", del);
	stall_arm();
	assert_int_equal(tsr_store_snap_delete(e->store, "v", name), 0);
	gone[del - 1] = true;
	/* the delete returned; its merge waits on the thread */
	stall_wait_entered();
	/* the snapshot is gone from the catalogue's view, its layer still read */
	check_all(e, v, snaps, gone, &head);
	writes_during_merge(e, v, &head, (uint16_t)(100 * del));
	assert_int_equal(sflush(v, e->io), 0);
	/* every write above completed while the merge had not finished */
	pthread_mutex_lock(&g_stall.lock);
	assert_true(g_stall.entered && !g_stall.release && !g_stall.in_caller);
	pthread_mutex_unlock(&g_stall.lock);
	check_all(e, v, snaps, gone, &head);
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 3 * NSNAP); /* nothing removed yet */

	stall_release();
	assert_int_equal(store_test_merges_idle(e->store), before + 1);
	assert_int_equal(g_stall.calls, 1);
	stall_disarm();
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 3 * (NSNAP - 1));
	check_all(e, v, snaps, gone, &head);
	/* writes after the merge copy into the target as usual */
	mwrite(e, v, &head, 0, NB, (uint16_t)(100 * del + 50));
	check_all(e, v, snaps, gone, &head);
	assert_int_equal(sflush(v, e->io), 0);
	tsr_svol_put(v);

	tsr_store_close(e->store);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 3 * (NSNAP - 1));
	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	check_all(e, v, snaps, gone, &head);
	tsr_svol_put(v);
	assert_int_equal(tsr_store_vol_delete(e->store, "v"), 0);
	assert_int_equal(store_files_count(e->dir, NULL), 0);
}

static void test_delete_newest(void **state)
{
	delete_case(*state, 3);
}

static void test_delete_middle(void **state)
{
	delete_case(*state, 2);
}

static void test_delete_oldest(void **state)
{
	delete_case(*state, 1);
}

/* Two deletes queued back to back (newest, then its target), writes while
 * the first merge is stalled; then a layer with a clone: hidden at delete
 * (no merge), merged by the thread when its clone goes, v still open. */
static void test_queued_and_clone(void **state)
{
	struct env *e = *state;
	struct model snaps[NSNAP], head, clone_m;
	bool gone[NSNAP] = {false};
	struct tsr_svol *v, *cl;
	unsigned before;

	make_chain(e, &v, snaps, &head);
	assert_int_equal(tsr_store_vol_clone(e->store, "cl", "v", "s1", NULL), 0);
	clone_m = snaps[0];
	before = store_test_merges_idle(e->store);

	stall_arm();
	assert_int_equal(tsr_store_snap_delete(e->store, "v", "s3"), 0);
	gone[2] = true;
	stall_wait_entered();
	/* s2 is the copy target now and is deleted too: s1 becomes it */
	assert_int_equal(tsr_store_snap_delete(e->store, "v", "s2"), 0);
	gone[1] = true;
	writes_during_merge(e, v, &head, 300);
	check_all(e, v, snaps, gone, &head);
	/* s1 has a clone: hidden, its layer stays */
	assert_int_equal(tsr_store_snap_delete(e->store, "v", "s1"), 0);
	gone[0] = true;
	writes_during_merge(e, v, &head, 400);
	stall_release();
	assert_int_equal(store_test_merges_idle(e->store), before + 2);
	stall_disarm();
	check_all(e, v, snaps, gone, &head);
	assert_int_equal(tsr_store_vol_open(e->store, "cl", &cl), 0);
	check_image(e, cl, &clone_m, "cl");
	tsr_svol_put(cl);
	/* head + hidden s1 + the clone's data, crc, dirty, present */
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 3 + 4);

	/* the clone goes: s1's delete is finished by the thread (v is open) */
	assert_int_equal(tsr_store_vol_delete(e->store, "cl"), 0);
	store_test_merges_idle(e->store);
	assert_int_equal(store_files_count(e->dir, NULL), 3);
	mwrite(e, v, &head, 0, NB, 500); /* no snapshot: the plain path */
	check_image(e, v, &head, "head");
	tsr_svol_put(v);
	assert_int_equal(tsr_store_vol_delete(e->store, "v"), 0);
	assert_int_equal(store_files_count(e->dir, NULL), 0);
}

/* A clone of the head (its layer hidden and SNAP_AUTO) deleted while a write
 * to the source is in flight, as a served volume always has: the layer goes
 * through the merge thread at once (cow.c: writes may flow), not at the next
 * open; the code before left it (and every later copy on write into it) to
 * the next open.  Every image stays whole. */
static void test_clone_of_head_deleted_under_write(void **state)
{
	struct env *e = *state;
	struct model snaps[NSNAP], head, clone_m;
	bool gone[NSNAP] = {false};
	struct tsr_io *slow = make_io(TSR_IO_AUTO, "write:1:delay=1000");
	struct tsr_svol *v, *cl;
	struct done d = {0};
	unsigned before;
	int files, i;

	assert_non_null(slow);
	make_chain(e, &v, snaps, &head);
	files = store_files_count(e->dir, NULL); /* the head and s1..s3 */
	assert_int_equal(tsr_store_vol_clone(e->store, "cl", "v", NULL, NULL), 0);
	clone_m = head;
	mwrite(e, v, &head, 0, 16, 20); /* copies into the clone's hidden layer */
	assert_int_equal(tsr_store_vol_open(e->store, "cl", &cl), 0);
	check_image(e, cl, &clone_m, "cl");
	tsr_svol_put(cl);
	/* + hidden layer, clone */
	assert_int_equal(store_files_count(e->dir, NULL), files + 3 + 4);
	before = store_test_merges_idle(e->store);

	/* a write in flight (a copy on write into the layer, then the head;
	 * the first write's completion held 1 s) while the clone goes */
	fill(e->buf, 4 * BS, 21, 100 * BS);
	assert_int_equal(tsr_svol_write(v, slow, 100 * BS, 4 * BS, e->buf, 0, done_cb, &d), 0);
	assert_true(tsr_io_submit(slow) >= 0);
	assert_int_equal(tsr_store_vol_delete(e->store, "cl"), 0);
	assert_int_equal(d.calls, 0); /* still in flight */
	assert_int_equal(wait_done(slow, &d), 0);
	for (i = 0; i < 4; i++)
		head.seed[100 + i] = 21;
	assert_int_equal(store_test_merges_idle(e->store), before + 1);
	/* the hidden layer's files went */
	assert_int_equal(store_files_count(e->dir, NULL), files);
	check_all(e, v, snaps, gone, &head);
	mwrite(e, v, &head, 150, 8, 22);
	check_all(e, v, snaps, gone, &head);
	tsr_svol_put(v);
	tsr_io_destroy(slow);
}

extern unsigned store_test_chain_hold_us;
extern _Atomic int store_test_chain_held;

struct held_write {
	struct tsr_svol *v;
	uint8_t *buf;
	int status;
};

/* On its own thread and io: one 4-block write whose copy-on-write check
 * sleeps inside its look at the chain (store_test_chain_hold_us). */
static void *held_write_main(void *arg)
{
	struct held_write *w = arg;
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
	struct done d = {0};

	w->status = -ENOMEM;
	if (io == NULL)
		return NULL;
	w->status = tsr_svol_write(w->v, io, 40 * BS, 4 * BS, w->buf, 0, done_cb, &d);
	if (w->status == 0)
		w->status = wait_done(io, &d);
	if (w->status == 0)
		w->status = d.status;
	tsr_io_destroy(io);
	return NULL;
}

/*
 * A write's copy-on-write check reads the bits of the layers in the chain it
 * loaded, without store->lock.  A delete of the newest snapshot whose merge
 * ends meanwhile drops that layer from the chain: it must not be closed
 * before the check is done (it was: the merge thread unmapped s3's bits
 * under the check, SIGSEGV in held_word; found by test-admin-concurrency).
 */
static void test_delete_under_cow_check(void **state)
{
	struct env *e = *state;
	struct model snaps[NSNAP], head;
	bool gone[NSNAP] = {false, false, true};
	struct held_write w;
	struct tsr_svol *v;
	pthread_t t;
	unsigned before;
	int i;

	make_chain(e, &v, snaps, &head);
	w = (struct held_write){.v = v, .buf = tsr_alloc_aligned(4 * BS)};
	assert_non_null(w.buf);
	fill(w.buf, 4 * BS, 31, 40 * BS);
	before = store_test_merges_idle(e->store);
	atomic_store(&store_test_chain_held, 0);
	store_test_chain_hold_us = 300000;
	assert_int_equal(pthread_create(&t, NULL, held_write_main, &w), 0);
	while (!atomic_load(&store_test_chain_held))
		usleep(1000);
	/* the check holds s3 in its chain for 300 ms: delete s3 now */
	assert_int_equal(tsr_store_snap_delete(e->store, "v", "s3"), 0);
	store_test_chain_hold_us = 0;
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(w.status, 0);
	assert_true(store_test_merges_idle(e->store) >= before);
	for (i = 0; i < 4; i++)
		head.seed[40 + i] = 31;
	check_all(e, v, snaps, gone, &head);
	mwrite(e, v, &head, 90, 8, 32);
	check_all(e, v, snaps, gone, &head);
	tsr_free_aligned(w.buf);
	tsr_svol_put(v);
}

/* A volume deleted while its snapshot's merge is queued: hidden until the
 * merge is done, then gone. */
static void test_volume_deleted_during_merge(void **state)
{
	struct env *e = *state;
	struct model snaps[NSNAP], head;
	struct tsr_svol *v;

	make_chain(e, &v, snaps, &head);
	stall_arm();
	assert_int_equal(tsr_store_snap_delete(e->store, "v", "s3"), 0);
	stall_wait_entered();
	tsr_svol_put(v);
	assert_int_equal(tsr_store_vol_delete(e->store, "v"), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), -ENOENT);
	stall_release();
	store_test_merges_idle(e->store);
	stall_disarm();
	assert_int_equal(store_files_count(e->dir, NULL), 0);
	/* the name is free */
	assert_int_equal(tsr_store_vol_create(e->store, "v", VSIZE, NULL), 0);
	assert_int_equal(tsr_store_vol_delete(e->store, "v"), 0);
}

/*
 * Crash points of a delete of an open volume's newest layer, with writes
 * while its merge is stalled: a child does it and dies
 *   - step 0: after the writes, the merge not started;
 *   - step k > 0: at the k-th crash point counted from the release (the
 *     merge's data and entries synced, the row gone);
 *   - step -1, -2: at the points in the delete call itself (the row
 *     marked; the layer switched and the job queued).
 * After the reopen s3 is gone, s1 and s2 read as at their cuts, the head
 * as written, and only the files of v, s1 and s2 are left.
 */
static int crash_child(struct env *e, int step, const struct model *head_in,
		       struct model *head_out)
{
	pid_t pid;
	int st, fds[2];

	assert_int_equal(pipe(fds), 0);
	tsr_store_close(e->store);
	e->store = NULL;
	pid = fork();
	if (pid == 0) {
		struct tsr_store *s;
		struct tsr_svol *v;
		struct model head = *head_in;
		struct env ce = *e;
		ssize_t w;

		close(fds[0]);
		ce.io = make_io(TSR_IO_AUTO, NULL);
		if (ce.io == NULL || tsr_store_open(e->dir, NULL, &s) ||
		    tsr_store_vol_open(s, "v", &v))
			_exit(1);
		ce.store = s;
		stall_arm();
		if (step < 0)
			store_test_crash_at = -step;
		if (tsr_store_snap_delete(s, "v", "s3"))
			_exit(2);
		stall_wait_entered();
		writes_during_merge(&ce, v, &head, 700);
		if (sflush(v, ce.io))
			_exit(3);
		w = write(fds[1], &head, sizeof(head));
		if (w != (ssize_t)sizeof(head))
			_exit(4);
		if (step == 0)
			_exit(99);
		store_test_crash_at = step;
		stall_release();
		store_test_merges_idle(s);
		_exit(0);
	}
	close(fds[1]);
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	if (read(fds[0], head_out, sizeof(*head_out)) != (ssize_t)sizeof(*head_out))
		*head_out = *head_in; /* died before the writes */
	close(fds[0]);
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	return WEXITSTATUS(st);
}

static void test_crash_points(void **state)
{
	struct env *e = *state;
	struct model snaps[NSNAP], head, after;
	bool gone[NSNAP] = {false, false, true};
	struct tsr_svol *v;
	int step, rc, died = 0;

	for (step = -2; step < 10; step++) {
		make_chain(e, &v, snaps, &head);
		assert_int_equal(sflush(v, e->io), 0);
		tsr_svol_put(v);
		rc = crash_child(e, step, &head, &after);
		if (rc == 0)
			break;
		assert_int_equal(rc, 99);
		died++;
		/* the open finished the marked delete */
		assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
		check_all(e, v, snaps, gone, &after);
		tsr_svol_put(v);
		assert_int_equal(store_files_count(e->dir, NULL), 3 + 3 * (NSNAP - 1));
		assert_int_equal(tsr_store_vol_delete(e->store, "v"), 0);
		assert_int_equal(store_files_count(e->dir, NULL), 0);
	}
	/* the mark and the switch in the call, no merge, merge synced, row gone */
	assert_int_equal(died, 5);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	check_all(e, v, snaps, gone, &after);
	tsr_svol_put(v);
	assert_int_equal(store_files_count(e->dir, NULL), 3 + 3 * (NSNAP - 1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_delete_newest, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_delete_middle, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_delete_oldest, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_queued_and_clone, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_delete_under_cow_check, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_clone_of_head_deleted_under_write, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_volume_deleted_during_merge, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_crash_points, setup, teardown),
	};

	tsr_log_set_level(TSR_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
