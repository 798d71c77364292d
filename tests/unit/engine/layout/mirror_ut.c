/*
 * Unit tests of the mirror layout (engine/layout/mirror*.c) against real
 * replicas in one process (mirror_test.h): three nodes, each a store served
 * by a peer server over 127.0.0.1 TCP, the layout on its own home worker.
 * Every test reads the copies back from the nodes' data files (snapshots:
 * from the nodes' stores).
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

#include "layout/copyset_internal.h" /* copyset_stats_take, copyset_stats_fill */
#include "layout/mirror_internal.h" /* MIRROR_RESYNC_IO, _INFLIGHT_BYTES, _DEPTH */
#include "mirror_env.h"

#define MiB    (1024ull * 1024)
#define VOL    (16 * MiB)
#define REGION (1u << 20)

static int setup(void **state)
{
	return env_setup(
	    state, &(struct env_sizes){.vol = VOL, .model = VOL, .file = VOL, .buf = 8 * MiB});
}

static int teardown(void **state)
{
	return env_teardown(state);
}

/* Options: copy 0 local on node0 (when local), the others remote. */
static void opts_init(struct env *e, struct tsr_mirror_opts *o, bool local, unsigned min,
		      uint64_t epoch)
{
	env_mirror_opts(e, o, VOL, local);
	o->epoch = epoch;
	o->min_replicas = min;
	o->peer_timeout_ms = 2000;
	o->region_size = REGION;
}

/* Every node's data file equals the model. */
static void assert_copies_equal_model(struct env *e)
{
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(node_read_all(&e->nodes[i], e->file, VOL), 0);
		if (memcmp(e->file, e->model, VOL) != 0) {
			for (uint64_t b = 0; b < VOL / BS; b++)
				if (memcmp(e->file + b * BS, e->model + b * BS, BS) != 0) {
					print_message("node%u differs at block %llu\n", i,
						      (unsigned long long)b);
					break;
				}
			fail();
		}
	}
}

static void get_status(struct env *e, struct tsr_layout_status *s)
{
	tsr_layout_get_status(e->l, s);
}

/* ---- round trips ---- */

static void round_trip(struct env *e)
{
	struct tsr_layout_status s;

	assert_int_equal(lwrite(e, 0, 64 * 1024, 1, 0), 0);
	assert_int_equal(lwrite(e, 3 * MiB + 8192, 2 * MiB, 2, TSR_WRITE_FUA), 0);
	assert_int_equal(lwrite(e, VOL - 8 * MiB, 8 * MiB, 3, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	/* trim and write_zeroes read back as zeros on every copy */
	assert_int_equal(ldo(e->home, e->l, D_TRIM, VOL - 8 * MiB, 1 * MiB, NULL, 0), 0);
	memset(e->model + VOL - 8 * MiB, 0, MiB);
	assert_int_equal(ldo(e->home, e->l, D_ZEROES, 3 * MiB + 8192, 64 * 1024, NULL, 0), 0);
	memset(e->model + 3 * MiB + 8192, 0, 64 * 1024);
	/* overwrite part of a write: the last one wins everywhere */
	assert_int_equal(lwrite(e, 3 * MiB, 16384, 4, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);

	for (uint64_t off = 0; off < VOL; off += 4 * MiB) {
		assert_int_equal(ldo(e->home, e->l, D_READ, off, 4 * MiB, e->buf, 0), 0);
		assert_memory_equal(e->buf, e->model + off, 4 * MiB);
	}
	assert_copies_equal_model(e);
	get_status(e, &s);
	assert_int_equal(s.in_sync, 3);
	assert_int_equal(s.copy_failures, 0);
	assert_false(s.fenced);
}

static void test_round_trip_local(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;

	opts_init(e, &o, true, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_true(tsr_layout_is_mirror(e->l));
	assert_int_equal(tsr_layout_size(e->l), VOL);
	round_trip(e);
	/* block status is the local copy's: the trimmed MiB is a hole */
	{
		struct tsr_extent ext[4];
		size_t n = 0;

		assert_int_equal(tsr_layout_block_status(e->l, VOL - 8 * MiB, MiB, ext, 4, &n), 0);
		assert_true(n >= 1);
		assert_true(ext[0].flags & TSR_EXTENT_HOLE);
	}
	/* a data call from another thread's io is refused */
	{
		struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);

		assert_int_equal(tsr_layout_read(e->l, io, 0, BS, e->buf, done_cb, NULL), -EINVAL);
		tsr_io_destroy(io);
	}
}

/* ---- reads from the disk (tsr_layout_read_direct) ---- */

static uint64_t g_want_reads;

static bool reads_published(const struct tsr_layout_status *s)
{
	return s->reads >= g_want_reads;
}

/* The status once it counts n reads (published every 20 ms). */
static void status_after_reads(struct env *e, uint64_t n, struct tsr_layout_status *s)
{
	g_want_reads = n;
	assert_true(wait_status(e, reads_published, 5000));
	get_status(e, s);
}


/* A read through the local copy goes through its page cache (the store's
 * cached_reads, published as the status's); a direct read returns the same
 * data from the disk and is not counted there (the site server's failback
 * digests read so, as scrub does). */
static void test_read_direct_local(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;
	uint64_t cached;

	opts_init(e, &o, true, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, MiB, MiB, 7, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	status_after_reads(e, 0, &s);
	assert_int_equal(s.cached_reads, 0);

	memset(e->buf, 0, MiB);
	assert_int_equal(ldo(e->home, e->l, D_READ, MiB, MiB, e->buf, 0), 0);
	assert_memory_equal(e->buf, e->model + MiB, MiB);
	layout_status_after_cached(e->l, 1, &s);
	cached = s.cached_reads;

	memset(e->buf, 0, MiB);
	assert_int_equal(ldo(e->home, e->l, D_READ_DIRECT, MiB, MiB, e->buf, 0), 0);
	assert_memory_equal(e->buf, e->model + MiB, MiB);
	/* a cached read after it: once that one is counted, the direct one has
	 * completed too, and it must not have added to the figure */
	assert_int_equal(ldo(e->home, e->l, D_READ, MiB, BS, e->buf, 0), 0);
	layout_status_after_cached(e->l, cached + 1, &s);
	assert_int_equal(s.cached_reads, cached + 1);
}

/* With every copy remote the direct read is a READ with TSR_PEER_F_DIRECT:
 * the same data. */
static void test_read_direct_remote(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;

	opts_init(e, &o, false, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 2 * MiB, MiB, 8, 0), 0);
	memset(e->buf, 0, MiB);
	assert_int_equal(ldo(e->home, e->l, D_READ_DIRECT, 2 * MiB, MiB, e->buf, 0), 0);
	assert_memory_equal(e->buf, e->model + 2 * MiB, MiB);
}

/* ---- snapshots (mirror_snap.c, through layout.c's gate) ---- */

/* Node n's image of VOLNAME@snap equals want (VOL bytes). */
static void assert_snap_equals(struct env *e, unsigned n, const char *snap, const uint8_t *want)
{
	char who[16];

	snprintf(who, sizeof(who), "node%u", n);
	assert_store_snap_equals(e, e->nodes[n].store, who, snap, want, VOL);
}

static bool has_snap(struct env *e, unsigned n, const char *snap)
{
	struct tsr_snap_info si;

	return tsr_store_snap_info(e->nodes[n].store, VOLNAME, snap, &si) == 0;
}

/* A cut taken between writes is the same image on every copy; the head goes on. */
static void test_snap_all_copies(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;
	uint8_t *at_s1 = malloc(VOL);

	opts_init(e, &o, true, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, 2 * MiB, 1, 0), 0);
	assert_int_equal(lwrite(e, 9 * MiB + 4096, 64 * 1024, 2, TSR_WRITE_FUA), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s1"), 0);
	memcpy(at_s1, e->model, VOL);
	/* overwrite what s1 holds, and more */
	assert_int_equal(lwrite(e, MiB, 2 * MiB, 3, 0), 0);
	assert_int_equal(lwrite(e, 9 * MiB, 64 * 1024, 4, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_TRIM, 0, 256 * 1024, NULL, 0), 0);
	memset(e->model, 0, 256 * 1024);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	for (unsigned n = 0; n < 3; n++)
		assert_snap_equals(e, n, "s1", at_s1);
	/* the head: read through the layout and on every node's store */
	for (uint64_t off = 0; off < VOL; off += 4 * MiB) {
		assert_int_equal(ldo(e->home, e->l, D_READ, off, 4 * MiB, e->buf, 0), 0);
		assert_memory_equal(e->buf, e->model + off, 4 * MiB);
		for (unsigned n = 0; n < 3; n++) {
			assert_int_equal(node_store_read(&e->nodes[n], off, 4 * MiB, e->buf), 0);
			assert_memory_equal(e->buf, e->model + off, 4 * MiB);
		}
	}
	/* a name taken on every copy: the store's answer, nothing marked */
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s1"), -EEXIST);
	/* delete reaches every copy */
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s2"), 0);
	for (unsigned n = 0; n < 3; n++)
		assert_true(has_snap(e, n, "s2"));
	assert_int_equal(lsnap(e, TSR_SNAP_DELETE, "s2"), 0);
	for (unsigned n = 0; n < 3; n++)
		assert_false(has_snap(e, n, "s2"));
	assert_int_equal(lsnap(e, TSR_SNAP_DELETE, "s2"), -ENOENT);
	get_status(e, &s);
	assert_int_equal(s.in_sync, 3);
	assert_int_equal(s.copy_failures, 0);
	free(at_s1);
}

/* Snapshots cut while writes are in flight: the gate drains them first, so
 * every copy's image holds the same writes. */
static void test_snap_under_writes(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct dcall d[8];
	uint8_t *bufs = tsr_alloc_aligned(8 * 256 * 1024), *first = tsr_alloc_aligned(VOL);

	opts_init(e, &o, false, 3, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	for (unsigned i = 0; i < 8; i++) {
		d[i] = (struct dcall){.l = e->l,
				      .kind = D_WRITE,
				      .off = i * 2 * MiB,
				      .len = 256 * 1024,
				      .buf = bufs + i * 256 * 1024};
		fill(d[i].buf, 256 * 1024, 40 + i, d[i].off);
		dcall_start(e->home, &d[i]);
	}
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "cut"), 0);
	for (unsigned i = 0; i < 8; i++)
		assert_int_equal(dcall_wait(&d[i], 20000), 0);
	/* whichever writes made it into the cut, all copies agree */
	{
		struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
		struct tsr_svol *v = NULL;

		assert_int_equal(tsr_store_snap_open(e->nodes[0].store, VOLNAME, "cut", &v), 0);
		for (uint64_t off = 0; off < VOL; off += 4 * MiB)
			assert_int_equal(sread(v, io, off, 4 * MiB, first + off), 0);
		tsr_svol_put(v);
		tsr_io_destroy(io);
	}
	for (unsigned n = 1; n < 3; n++)
		assert_snap_equals(e, n, "cut", first);
	tsr_free_aligned(bufs);
	tsr_free_aligned(first);
}

/* A copy away at the cut lacks the snapshot; one that fails the cut is
 * marked out of sync before the snap is acknowledged; too few: undone. */
static void test_snap_copy_failures(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	unsigned hook_oos = 0;
	uint8_t *at_x = malloc(VOL);

	opts_init(e, &o, true, 2, 1);
	/* the write below min 2 (node1 and node2 away) is refused after this
	 * wait: 300 ms, as test_below_min_replicas, not the 5 s default */
	o.write_wait_ms = 300;
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, MiB, 1, 0), 0);
	/* node1 holds a snapshot "x" already (behind the layout's back), cut
	 * before the next write: a stale image of that name */
	assert_int_equal(tsr_store_snap_create(e->nodes[1].store, VOLNAME, "x", NULL), 0);
	assert_int_equal(lwrite(e, 4 * MiB, 128 * 1024, 5, 0), 0);
	memcpy(at_x, e->model, VOL);
	log_reset();
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "x"), 0); /* node0, node2: 2 >= min 2 */
	pthread_mutex_lock(&g_log.lock);
	for (unsigned i = 0; i < g_log.n; i++)
		if (g_log.ev[i].kind == EV_HOOK && g_log.ev[i].idx == 1 &&
		    g_log.ev[i].st == TSR_COPY_OUT_OF_SYNC)
			hook_oos++;
	pthread_mutex_unlock(&g_log.lock);
	assert_int_equal(hook_oos, 1); /* recorded before the snap returned */
	assert_int_equal(g_log.state[1], TSR_COPY_OUT_OF_SYNC);
	assert_true(has_snap(e, 0, "x") && has_snap(e, 2, "x"));

	/* node2 away too: one copy in sync, below min 2: refused, nothing cut */
	node_stop(&e->nodes[2]);
	assert_int_equal(lwrite(e, 2 * MiB, 64 * 1024, 2, 0), -EIO);
	memset(e->model + 2 * MiB, 0, 64 * 1024); /* not acknowledged */
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "y"), -EIO);
	assert_false(has_snap(e, 0, "y"));
	/* both back: resynced, in sync */
	node_run(&e->nodes[2], 12);
	tsr_layout_copy_returned(e->l, 2, e->nodes[2].address);
	tsr_layout_copy_returned(e->l, 1, e->nodes[1].address);
	assert_true(wait_status(e, all_in_sync, 20000));
	/* node1's stale "x" was replaced by the real cut on its return */
	for (unsigned n = 0; n < 3; n++)
		assert_snap_equals(e, n, "x", at_x);

	/* node1 and node2 hold "z": only the local copy could cut it, below
	 * min 2: the snap fails with their answer and the local cut is undone */
	assert_int_equal(tsr_store_snap_create(e->nodes[1].store, VOLNAME, "z", NULL), 0);
	assert_int_equal(tsr_store_snap_create(e->nodes[2].store, VOLNAME, "z", NULL), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "z"), -EEXIST);
	assert_false(has_snap(e, 0, "z"));
	/* and the copies were left in sync: nobody missed a write */
	{
		struct tsr_layout_status s;

		usleep(100 * 1000);
		get_status(e, &s);
		assert_int_equal(s.in_sync, 3);
	}
	free(at_x);
}

static bool journal_exists(struct env *e, const char *node_id)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s.%s.snaps", e->state_dir, VOLNAME, node_id);
	return access(path, F_OK) == 0;
}

/* A copy away while snapshots are cut and deleted gets them on its return,
 * the same images as the others', before it counts as in sync again. */
static void snap_missed_replay(void **state, bool local)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	uint8_t *at_away = malloc(VOL), *at_s1 = malloc(VOL);

	opts_init(e, &o, local, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, 3 * MiB, 1, 0), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s1"), 0);
	memcpy(at_s1, e->model, VOL);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "gone"), 0);

	node_stop(&e->nodes[2]);
	assert_int_equal(lwrite(e, 2 * MiB, 64 * 1024, 2, 0), 0); /* node2 misses it */
	assert_int_equal(lwrite(e, 5 * MiB, 2 * MiB, 3, TSR_WRITE_FUA), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "away"), 0);
	memcpy(at_away, e->model, VOL);
	assert_true(journal_exists(e, "node2"));
	assert_false(journal_exists(e, "node1"));
	assert_int_equal(lwrite(e, 5 * MiB + 4096, 8192, 4, 0), 0); /* after the cut */
	assert_int_equal(lwrite(e, 12 * MiB, MiB, 5, 0), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_DELETE, "gone"), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "later"), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_DELETE, "later"), 0); /* cut and gone while away */
	assert_true(has_snap(e, 2, "gone"));

	node_run(&e->nodes[2], 12);
	tsr_layout_copy_returned(e->l, 2, e->nodes[2].address);
	assert_true(wait_status(e, all_in_sync, 20000));
	for (unsigned n = 0; n < 3; n++) {
		assert_snap_equals(e, n, "away", at_away);
		assert_snap_equals(e, n, "s1", at_s1);
		assert_false(has_snap(e, n, "gone"));
		assert_false(has_snap(e, n, "later"));
	}
	assert_false(journal_exists(e, "node2"));
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	assert_copies_equal_model(e);
	free(at_away);
	free(at_s1);
}

/*
 * The make-up of a missed snapshot on a home worker whose io queue holds 4
 * operations (19dfc74): its pipeline starts up to 8 pieces at once (1 MiB
 * regions), each with a local read of the snapshot; the 5th finds the queue
 * full (-EAGAIN at submit) while the first 4 are in flight, is held and
 * started again once one of them is done.  Every read is held 20 ms by the
 * fault wrapper so the queue stays full while the pieces start.  The copy
 * gets in sync, its made-up snapshot holds the source's image and nothing
 * counts as a copy failure; before 19dfc74 the held piece failed the replay
 * (-EAGAIN) at every return of the copy and it never got in sync.
 */
static void test_snap_makeup_full_queue(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;
	struct tsr_io_opts io = {
	    .kind = TSR_IO_AUTO, .queue_depth = 4, .fault_spec = "read:1+:delay=20"};
	struct tsr_worker *small = NULL, *home = e->home;
	uint8_t *at_away = malloc(VOL);
	uint64_t failures;

	assert_int_equal(tsr_worker_start(6, &io, &small), 0);
	e->home = small; /* lwrite, lsnap, ldo on e->home */
	opts_init(e, &o, true, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, 8 * MiB, 1, 0), 0);
	assert_int_equal(lwrite(e, 8 * MiB, 8 * MiB, 2, 0), 0);
	node_stop(&e->nodes[2]);
	/* 12 regions dirty for node2: 12 pieces, more than the queue holds */
	for (unsigned r = 0; r < 12; r++)
		assert_int_equal(lwrite(e, r * MiB + 4096 * r, 64 * 1024, 10 + r, 0), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "away"), 0);
	memcpy(at_away, e->model, VOL);
	assert_int_equal(lwrite(e, 3 * MiB, 64 * 1024, 30, 0), 0); /* after the cut */
	get_status(e, &s);
	failures = s.copy_failures; /* node2's, while it was away */

	node_run(&e->nodes[2], 12);
	tsr_layout_copy_returned(e->l, 2, e->nodes[2].address);
	assert_true(wait_status(e, all_in_sync, 30000));
	get_status(e, &s);
	assert_int_equal(s.copy_failures, failures);
	for (unsigned n = 0; n < 3; n++)
		assert_snap_equals(e, n, "away", at_away);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	assert_copies_equal_model(e);
	env_layout_close(e);
	e->home = home;
	tsr_worker_stop(small);
	free(at_away);
}

/* ---- the record of missed operations (hooks.set_copy_missed) ---- */

/* What the "metadata store" holds per copy: recorded in call order on the
 * calling thread (cheap), answered from a helper thread after 10 ms. */
static struct {
	pthread_mutex_t lock;
	char ops[3][1024];
	unsigned calls, answered;
	int status; /* what the hook answers */
} g_missed = {.lock = PTHREAD_MUTEX_INITIALIZER};

struct missed_answer {
	void (*done)(void *, int);
	void *done_arg;
};

static void *missed_answer_thread(void *arg)
{
	struct missed_answer *a = arg;
	int status;

	usleep(10 * 1000);
	pthread_mutex_lock(&g_missed.lock);
	g_missed.answered++;
	status = g_missed.status;
	pthread_mutex_unlock(&g_missed.lock);
	a->done(a->done_arg, status);
	__atomic_fetch_sub(&g_log.hooks_inflight, 1, __ATOMIC_SEQ_CST);
	free(a);
	return NULL;
}

static void test_set_copy_missed(void *arg, const char *vol, unsigned idx, const char *node_id,
				 const char *ops, void (*done)(void *, int), void *done_arg)
{
	struct missed_answer *a = malloc(sizeof(*a));
	pthread_t t;

	(void)arg;
	(void)vol;
	(void)node_id;
	pthread_mutex_lock(&g_missed.lock);
	if (idx < 3 && g_missed.status == 0)
		snprintf(g_missed.ops[idx], sizeof(g_missed.ops[idx]), "%s", ops);
	g_missed.calls++;
	pthread_mutex_unlock(&g_missed.lock);
	a->done = done;
	a->done_arg = done_arg;
	__atomic_fetch_add(&g_log.hooks_inflight, 1, __ATOMIC_SEQ_CST);
	pthread_create(&t, NULL, missed_answer_thread, a);
	pthread_detach(t);
}

static void missed_ops(unsigned idx, char *out, size_t len)
{
	pthread_mutex_lock(&g_missed.lock);
	snprintf(out, len, "%s", g_missed.ops[idx]);
	pthread_mutex_unlock(&g_missed.lock);
}

/*
 * A copy away under one coordinator returns under another (its own state
 * dir: no journal, no bitmap) that knows what it missed only from the
 * record: a snapshot cut while it was away, and one deleted and cut again
 * under the same name (the copy holds the old image of that name).  The
 * record is made before each snap returns; the new coordinator replays it:
 * the copy ends with the same images as the others, the record empty.
 */
static void test_snap_missed_other_coordinator(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	uint8_t *at_s2 = malloc(VOL), *at_s1 = malloc(VOL), *old_s1 = malloc(VOL);
	char ops[1024], dir2[512];
	unsigned calls, answered;

	memset(&g_missed, 0, sizeof(g_missed));
	pthread_mutex_init(&g_missed.lock, NULL);
	opts_init(e, &o, true, 2, 1);
	o.hooks.set_copy_missed = test_set_copy_missed;
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, 3 * MiB, 1, 0), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s1"), 0);
	memcpy(old_s1, e->model, VOL);

	node_stop(&e->nodes[2]);
	assert_int_equal(lwrite(e, 2 * MiB, MiB, 2, 0), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s2"), 0);
	memcpy(at_s2, e->model, VOL);
	assert_int_equal(lsnap(e, TSR_SNAP_DELETE, "s1"), 0);
	assert_int_equal(lwrite(e, 0, 64 * 1024, 3, 0), 0);
	assert_int_equal(lwrite(e, 9 * MiB, 64 * 1024, 4, 0), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s1"), 0);
	memcpy(at_s1, e->model, VOL);
	pthread_mutex_lock(&g_missed.lock);
	calls = g_missed.calls;
	answered = g_missed.answered;
	pthread_mutex_unlock(&g_missed.lock);
	assert_int_equal(calls, 3);
	assert_int_equal(answered, 3); /* each answered before its snap returned */
	missed_ops(2, ops, sizeof(ops));
	assert_string_equal(ops, "c s2\nd s1\nc s1\n");
	assert_int_equal(lwrite(e, 12 * MiB, MiB, 5, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);

	/* the coordinator goes; another one, on a node without its files */
	env_layout_close(e);
	assert_int_equal(scratch_dir(dir2, sizeof(dir2)), 0);
	opts_init(e, &o, true, 2, 2);
	o.state_dir = dir2;
	o.hooks.set_copy_missed = test_set_copy_missed;
	o.copies[2].state = TSR_COPY_OUT_OF_SYNC;
	o.copies[2].full_resync = true;
	o.copies[2].missed = ops;
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	node_run(&e->nodes[2], 12);
	tsr_layout_copy_returned(e->l, 2, e->nodes[2].address);
	assert_true(wait_status(e, all_in_sync, 20000));
	for (unsigned n = 0; n < 3; n++) {
		assert_snap_equals(e, n, "s2", at_s2);
		assert_snap_equals(e, n, "s1", at_s1);
	}
	assert_true(memcmp(at_s1, old_s1, VOL) != 0);
	hooks_settle();
	missed_ops(2, ops, sizeof(ops));
	assert_string_equal(ops, ""); /* emptied as the replay went */
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	assert_copies_equal_model(e);
	env_layout_close(e);
	rm_rf(dir2);
	free(at_s2);
	free(at_s1);
	free(old_s1);
}

/*
 * The metadata store cannot record what a copy missed: the snapshot
 * operation fails (-EIO) and a CREATE is undone on the copies that cut it, as
 * when a copy's state cannot be recorded; once it can, the next one goes.  A
 * replay's progress that cannot be recorded is recorded again by the tick.
 */
static void test_snap_missed_record_fails(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	char ops[1024];

	memset(&g_missed, 0, sizeof(g_missed));
	pthread_mutex_init(&g_missed.lock, NULL);
	opts_init(e, &o, true, 2, 1);
	o.hooks.set_copy_missed = test_set_copy_missed;
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, MiB, 1, 0), 0);
	node_stop(&e->nodes[2]);
	assert_int_equal(lwrite(e, 0, MiB, 2, 0), 0);
	g_missed.status = -EIO;
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s1"), -EIO);
	assert_false(has_snap(e, 0, "s1"));
	assert_false(has_snap(e, 1, "s1"));
	g_missed.status = 0;
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s2"), 0);
	assert_true(has_snap(e, 0, "s2") && has_snap(e, 1, "s2"));
	missed_ops(2, ops, sizeof(ops));
	/* the undone s1 stays listed: its replay finds no s1 and skips it */
	assert_string_equal(ops, "c s1\nc s2\n");
	/* the replay's progress cannot be recorded either: the record keeps
	 * listing both until the store answers again, then the tick records it */
	g_missed.status = -EIO;
	node_run(&e->nodes[2], 12);
	tsr_layout_copy_returned(e->l, 2, e->nodes[2].address);
	assert_true(wait_status(e, all_in_sync, 20000));
	assert_true(has_snap(e, 2, "s2"));
	assert_false(has_snap(e, 2, "s1"));
	hooks_settle();
	missed_ops(2, ops, sizeof(ops));
	assert_string_equal(ops, "c s1\nc s2\n");
	g_missed.status = 0;
	for (unsigned t = 0; t < 300; t++) {
		missed_ops(2, ops, sizeof(ops));
		if (ops[0] == '\0')
			break;
		usleep(10 * 1000);
	}
	assert_string_equal(ops, "");
}

static bool copy1_resyncing(const struct tsr_layout_status *s)
{
	return s->copies[1].state == TSR_COPY_RESYNCING;
}

static bool copy1_out_of_sync(const struct tsr_layout_status *s)
{
	return s->copies[1].state == TSR_COPY_OUT_OF_SYNC;
}

/* A cut while a copy is resyncing: that copy goes back to out of sync (every
 * region dirty: its bitmap lost the regions already copied) and, once back,
 * holds the same image of the snapshot as the others. */
static void test_snap_during_resync(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	uint8_t *at_cut = malloc(VOL);

	opts_init(e, &o, true, 2, 1);
	o.resync_rate = 2 * MiB; /* 8 regions: about 4 s */
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, 8 * MiB, 1, 0), 0); /* e->buf holds 8 MiB */
	assert_int_equal(lwrite(e, 8 * MiB, 8 * MiB, 2, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	node_stop(&e->nodes[1]);
	for (unsigned r = 0; r < 8; r++)
		assert_int_equal(lwrite(e, r * 2 * MiB, MiB, 40 + r, 0), 0);
	node_run(&e->nodes[1], 11);
	tsr_layout_copy_returned(e->l, 1, e->nodes[1].address);
	assert_true(wait_status(e, copy1_resyncing, 10000));
	usleep(600 * 1000); /* some regions copied (and cleared) already */
	assert_int_equal(lwrite(e, 3 * MiB, 64 * 1024, 60, 0), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "mid"), 0);
	memcpy(at_cut, e->model, VOL);
	assert_int_equal(lwrite(e, 3 * MiB, 64 * 1024, 61, 0), 0);
	assert_true(wait_status(e, copy1_out_of_sync, 10000));
	assert_false(has_snap(e, 1, "mid"));
	tsr_layout_copy_returned(e->l, 1, e->nodes[1].address); /* the cluster's tick does this */
	assert_true(wait_status(e, all_in_sync, 30000));
	for (unsigned n = 0; n < 3; n++)
		assert_snap_equals(e, n, "mid", at_cut);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	assert_copies_equal_model(e);
	free(at_cut);
}

/* The snapshots read from the coordinator's local copy. */
static void test_snap_missed_replay(void **state)
{
	snap_missed_replay(state, true);
}

/* No local copy: read through a remote copy's read-only "VOL@SNAP" session. */
static void test_snap_missed_replay_remote(void **state)
{
	snap_missed_replay(state, false);
}

static void test_round_trip_remote(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;

	opts_init(e, &o, false, 3, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	round_trip(e);
}

/* ---- a replica goes away and comes back ---- */

static int bitmap_regions(struct env *e, const char *node_id, uint64_t *out, int max)
{
	char path[PATH_MAX];
	uint8_t page[BS];
	int fd, n = 0;

	snprintf(path, sizeof(path), "%s/%s.%s.bitmap", e->state_dir, VOLNAME, node_id);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -errno;
	if (pread(fd, page, BS, BS) != BS) {
		close(fd);
		return -EIO;
	}
	close(fd);
	for (uint64_t r = 0; r < BS * 8; r++)
		if (page[r / 8] & (1u << (r % 8)))
			if (n < max)
				out[n++] = r;
	return n;
}

static void test_replica_down_resync(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;
	uint64_t regions[32];
	unsigned first_ack = UINT32_MAX, hook_oos = UINT32_MAX;

	opts_init(e, &o, true, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	for (unsigned r = 0; r < 4; r++)
		assert_int_equal(lwrite(e, r * MiB, 256 * 1024, 10 + r, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);

	/* the metadata store answers slowly: the first write must wait for it */
	g_log.hook_delay_ms = 200;
	node_stop(&e->nodes[2]);
	/* writes go on (2 copies in sync >= min 2), 3 regions while node2 is away */
	{
		uint64_t offs[3] = {5 * MiB + 4096, 7 * MiB, 9 * MiB + 512 * 1024};

		for (unsigned i = 0; i < 3; i++) {
			struct dcall d = {.l = e->l,
					  .kind = D_WRITE,
					  .off = offs[i],
					  .len = 128 * 1024,
					  .buf = e->buf,
					  .log_ack = true};

			fill(e->buf, 128 * 1024, 20 + i, offs[i]);
			memcpy(e->model + offs[i], e->buf, 128 * 1024);
			dcall_start(e->home, &d);
			assert_int_equal(dcall_wait(&d, 10000), 0);
		}
	}
	/* the hook recorded node2 OUT_OF_SYNC before the first write was acked */
	pthread_mutex_lock(&g_log.lock);
	for (unsigned i = 0; i < g_log.n; i++) {
		if (g_log.ev[i].kind == EV_ACK && first_ack == UINT32_MAX)
			first_ack = i;
		if (g_log.ev[i].kind == EV_HOOK && g_log.ev[i].idx == 2 &&
		    g_log.ev[i].st == TSR_COPY_OUT_OF_SYNC && hook_oos == UINT32_MAX)
			hook_oos = i;
	}
	pthread_mutex_unlock(&g_log.lock);
	assert_true(hook_oos != UINT32_MAX);
	assert_true(first_ack != UINT32_MAX);
	assert_true(hook_oos < first_ack);

	/* the bitmap file holds exactly the regions written while away */
	assert_int_equal(bitmap_regions(e, "node2", regions, 32), 3);
	assert_int_equal(regions[0], 5);
	assert_int_equal(regions[1], 7);
	assert_int_equal(regions[2], 9);
	assert_int_equal(bitmap_regions(e, "node1", regions, 32), 0);
	usleep(100 * 1000); /* the status is refreshed every 20 ms */
	get_status(e, &s);
	assert_int_equal(s.copies[2].state, TSR_COPY_OUT_OF_SYNC);
	assert_int_equal(s.copies[2].dirty_bytes, 3 * REGION);
	assert_int_equal(s.copy_failures, 1);

	/* back, on a new port: only the 3 regions move */
	node_run(&e->nodes[2], 12);
	tsr_layout_copy_returned(e->l, 2, e->nodes[2].address);
	assert_true(wait_status(e, all_in_sync, 20000));
	get_status(e, &s);
	assert_int_equal(s.resync_regions_copied, 3);
	assert_int_equal(s.resync_bytes_copied, 3 * REGION);
	assert_int_equal(s.copies[2].dirty_bytes, 0);
	assert_int_equal(s.copies[2].state, TSR_COPY_IN_SYNC);
	assert_int_equal(g_log.state[2], TSR_COPY_IN_SYNC);
	assert_int_equal(bitmap_regions(e, "node2", regions, 32), 0);

	/* and it takes writes again */
	assert_int_equal(lwrite(e, 11 * MiB, 64 * 1024, 30, TSR_WRITE_FUA), 0);
	assert_copies_equal_model(e);
}

/*
 * Node2 away while 12 regions are written: 0-9 (contiguous) and 12, 14.
 * Flushed before it goes, so no region is dirty for want of a flush.
 */
static void write_twelve_regions_away(struct env *e)
{
	uint64_t regions[32];

	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	node_stop(&e->nodes[2]);
	for (unsigned r = 0; r < 10; r++)
		assert_int_equal(lwrite(e, r * MiB, REGION, 50 + r, 0), 0);
	assert_int_equal(lwrite(e, 12 * MiB, REGION, 62, 0), 0);
	assert_int_equal(lwrite(e, 14 * MiB + 8192, 64 * 1024, 64, 0), 0);
	assert_int_equal(bitmap_regions(e, "node2", regions, 32), 12);
}

/*
 * The resync is a pipeline: contiguous dirty regions go as one copy of up
 * to MIRROR_RESYNC_IO, the copies are in flight together (within
 * MIRROR_RESYNC_DEPTH and _INFLIGHT_BYTES), written without FUA, and one
 * flush of the target makes them durable before their regions are cleared.
 * Per-region copies one at a time, or a FUA write per region, fail the
 * counts here.
 */
static void test_resync_pipelined(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;
	uint64_t regions[32];
	/* the runs: 0-9 cut into copies of per_copy regions, then 12 and 14 */
	unsigned per_copy = MIRROR_RESYNC_IO / REGION, copies = (10 + per_copy - 1) / per_copy + 2;
	unsigned at_once = 0;
	uint64_t bytes = 0, bitmap_writes;

	/* started at once: in order while the byte and count limits allow */
	for (unsigned i = 0; i < copies && at_once < MIRROR_RESYNC_DEPTH; i++) {
		uint64_t len = i < copies - 2 ? (i + 1 < copies - 2 ? per_copy : 10 - i * per_copy) * REGION
					      : REGION;

		if (at_once > 0 && bytes + len > MIRROR_RESYNC_INFLIGHT_BYTES)
			break;
		bytes += len;
		at_once++;
	}
	assert_true(copies < 12);
	assert_true(at_once > 1);

	opts_init(e, &o, true, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	write_twelve_regions_away(e);
	usleep(100 * 1000); /* the status is refreshed every 20 ms */
	get_status(e, &s);
	bitmap_writes = s.bitmap_writes;

	node_run(&e->nodes[2], 13);
	tsr_layout_copy_returned(e->l, 2, e->nodes[2].address);
	assert_true(wait_status(e, all_in_sync, 20000));
	usleep(100 * 1000);
	get_status(e, &s);
	assert_int_equal(s.resync_regions_copied, 12);
	assert_int_equal(s.resync_bytes_copied, 12 * REGION); /* whole regions */
	/* with 2 MiB copies: 0-1, 2-3, 4-5, 6-7, 8-9, 12, 14, all started at once */
	assert_int_equal(s.resync_copies, copies);
	assert_int_equal(s.resync_max_inflight, at_once);
	/* one flush of node2 for the whole batch, no FUA per copy */
	assert_int_equal(s.resync_flushes, 1);
	/* and one write of the bitmap page holding the 12 bits after it, not one
	 * per copy of the batch (each one a FUA write: a disk cache flush) */
	assert_int_equal(s.bitmap_writes - bitmap_writes, 1);
	assert_int_equal(bitmap_regions(e, "node2", regions, 32), 0);
	assert_int_equal(s.copies[2].dirty_bytes, 0);
	assert_copies_equal_model(e);
}

/*
 * A region is clean only once its copy is durable on the target: the
 * returning node's first fdatasync (the resync's flush) fails, so the copies
 * it covered were written but may not be durable (the fsync that marks its
 * store's dirty regions before the first copy, a full fsync, succeeds).  The copy goes out of sync
 * again with all 12 regions still dirty, in memory and in the bitmap file,
 * and the next return copies all 12 again.
 */
static void test_resync_flush_fails(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;
	uint64_t regions[32];

	opts_init(e, &o, true, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	write_twelve_regions_away(e);

	node_run_faulty(&e->nodes[2], "fdatasync:1:fail=EIO");
	tsr_layout_copy_returned(e->l, 2, e->nodes[2].address);
	/* out of sync again (the metadata hook answers from a helper thread a
	 * little later): its failure is counted, the first was going away */
	for (unsigned i = 0; i < 500; i++) {
		get_status(e, &s);
		if (s.copy_failures == 2 && s.copies[2].state == TSR_COPY_OUT_OF_SYNC &&
		    !s.resync_running &&
		    __atomic_load_n(&g_log.state[2], __ATOMIC_SEQ_CST) == TSR_COPY_OUT_OF_SYNC)
			break;
		usleep(10000);
	}
	assert_int_equal(s.copy_failures, 2);
	assert_int_equal(s.copies[2].state, TSR_COPY_OUT_OF_SYNC);
	assert_int_equal(s.resync_regions_copied, 12); /* written... */
	assert_int_equal(s.resync_flushes, 1);         /* ...the flush failed */
	assert_int_equal(s.copies[2].dirty_bytes, 12 * REGION);
	usleep(100 * 1000); /* any bitmap page write in flight lands */
	assert_int_equal(bitmap_regions(e, "node2", regions, 32), 12);
	assert_int_equal(g_log.state[2], TSR_COPY_OUT_OF_SYNC);

	/* the next return (its fsyncs succeed now) copies all 12 again */
	tsr_layout_copy_returned(e->l, 2, e->nodes[2].address);
	assert_true(wait_status(e, all_in_sync, 20000));
	get_status(e, &s);
	assert_int_equal(s.resync_regions_copied, 24);
	assert_int_equal(s.resync_flushes, 2);
	assert_int_equal(bitmap_regions(e, "node2", regions, 32), 0);
	assert_copies_equal_model(e);
}

/* ---- below min_replicas ---- */

static void test_below_min_replicas(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;
	struct dcall d = {.kind = D_WRITE, .off = 0, .len = 64 * 1024, .log_ack = true};
	uint64_t t0;

	opts_init(e, &o, true, 2, 1);
	o.write_wait_ms = 300;
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, 64 * 1024, 1, 0), 0);
	node_stop(&e->nodes[1]);
	node_stop(&e->nodes[2]);
	log_reset();
	d.l = e->l;
	d.buf = e->buf;
	fill(e->buf, 64 * 1024, 2, 0);
	t0 = mono_ms();
	dcall_start(e->home, &d);
	assert_int_equal(dcall_wait(&d, 10000), -EIO);
	assert_true(mono_ms() - t0 >= 290);
	assert_int_equal(d.calls, 1);
	/* a second write, and a flush: the same */
	d.off = 128 * 1024;
	dcall_start(e->home, &d);
	assert_int_equal(dcall_wait(&d, 10000), -EIO);
	pthread_mutex_lock(&g_log.lock);
	for (unsigned i = 0; i < g_log.n; i++)
		if (g_log.ev[i].kind == EV_ACK)
			assert_int_equal(g_log.ev[i].status, -EIO);
	pthread_mutex_unlock(&g_log.lock);
	usleep(100 * 1000); /* the status is refreshed every 20 ms */
	get_status(e, &s);
	assert_int_equal(s.in_sync, 1);
	assert_true(s.write_errors >= 2);
	/* reads still work from the local copy */
	assert_int_equal(ldo(e->home, e->l, D_READ, 0, 64 * 1024, e->buf, 0), 0);
	assert_true(is_filled(e->buf, 64 * 1024, 1, 0) || is_filled(e->buf, 64 * 1024, 2, 0));
}

/* ---- fencing ---- */

static void test_fencing(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;
	struct tsr_layout *l2 = NULL, *l3 = NULL;
	struct tsr_worker *home2 = start_worker_or_skip(2);
	char dir2[512];

	opts_init(e, &o, true, 2, 5);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, 64 * 1024, 1, 0), 0);

	/* a newer coordinator elsewhere (all copies remote to it) */
	assert_int_equal(scratch_dir(dir2, sizeof(dir2)), 0);
	opts_init(e, &o, false, 2, 6);
	o.home = home2;
	o.state_dir = dir2;
	o.node_id = "node9";
	assert_int_equal(tsr_layout_mirror_create(&o, &l2), 0);

	/* the old one can no longer write, on any copy */
	fill(e->buf, 64 * 1024, 2, 0);
	assert_int_equal(ldo(e->home, e->l, D_WRITE, 0, 64 * 1024, e->buf, 0), -EIO);
	get_status(e, &s);
	assert_true(s.fenced);
	assert_int_equal(ldo(e->home, e->l, D_WRITE, MiB, 64 * 1024, e->buf, 0), -EIO);
	assert_int_equal(ldo(e->home, e->l, D_READ, 0, 64 * 1024, e->buf, 0), -EIO);
	/* the new one can */
	assert_int_equal(ldo(home2, l2, D_WRITE, 0, 64 * 1024, e->buf, 0), 0);
	memcpy(e->model, e->buf, 64 * 1024);
	/* and an older one cannot even open */
	o.epoch = 4;
	assert_int_equal(tsr_layout_mirror_create(&o, &l3), -ESTALE);
	tsr_layout_destroy(l2);
	hooks_settle();
	tsr_worker_stop(home2);
	rm_rf(dir2);
	assert_copies_equal_model(e);
}

struct destroy_call {
	struct tsr_layout *l;
	sem_t done;
};

static void destroy_msg(struct tsr_worker *w, void *arg)
{
	struct destroy_call *dc = arg;

	(void)w;
	tsr_layout_destroy(dc->l);
	sem_post(&dc->done);
}

/* tsr_layout_fence: the lease is lost */
static void test_fence_call(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;

	opts_init(e, &o, true, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, BS, 1, 0), 0);
	assert_int_equal(tsr_layout_replace_check(e->l, 1), 0);
	tsr_layout_fence(e->l);
	/* a replace would be refused now: the check says so, and changes nothing */
	assert_int_equal(tsr_layout_replace_check(e->l, 1), -EIO);
	assert_int_equal(ldo(e->home, e->l, D_WRITE, 0, BS, e->buf, 0), -EIO);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), -EIO);
	/* destroyed on its home worker itself: torn down there, freed once idle */
	{
		struct destroy_call dc = {.l = e->l};

		sem_init(&dc.done, 0, 0);
		assert_int_equal(tsr_worker_send(e->home, destroy_msg, &dc), 0);
		assert_int_equal(sem_wait_ms(&dc.done, 10000), 0);
		sem_destroy(&dc.done);
		e->l = NULL;
	}
}

/* ---- converge and scrub ---- */

static void store_fill(struct env *e, unsigned node, uint64_t off, uint32_t len, uint64_t seed)
{
	fill(e->buf, len, seed, off);
	assert_int_equal(node_store_write(&e->nodes[node], off, len, e->buf), 0);
}

static void test_converge(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;

	/* the copies agree on 1 MiB, then each differs somewhere */
	for (unsigned i = 0; i < 3; i++)
		store_fill(e, i, 0, MiB, 1);
	fill(e->model, MiB, 1, 0);
	store_fill(e, 1, 3 * BS, BS, 2); /* node1 alone */
	store_fill(e, 2, 7 * BS, BS, 3); /* node2 alone */
	store_fill(e, 0, 9 * BS, BS, 4); /* the local copy alone: it wins */
	fill(e->model + 9 * BS, BS, 4, 9 * BS);
	store_fill(e, 2, 5 * MiB, BS, 5); /* written on node2 only, elsewhere a hole */

	opts_init(e, &o, true, 2, 1);
	o.converge = true;
	o.copies[2].full_resync = true; /* node2 was the last coordinator */
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_copies_equal_model(e);
	usleep(100 * 1000);
	get_status(e, &s);
	assert_int_equal(s.in_sync, 3);
	assert_int_equal(s.copies[2].dirty_bytes, 0); /* compared by converge: clean */
	/* blocks 3 and 7: one copy each; block 9: two copies; the block at
	 * 5 MiB is a hole on the source: trimmed on node2, not copied */
	assert_int_equal(s.resync_bytes_copied, 4 * BS);
}

static void test_scrub(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;

	opts_init(e, &o, true, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, 2 * MiB, 1, 0), 0);
	assert_int_equal(lwrite(e, 10 * MiB, MiB, 2, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	/* nothing to find yet */
	assert_int_equal(tsr_layout_scrub_start(e->l, true), 0);
	assert_true(wait_status(e, scrub_finished, 20000));
	get_status(e, &s);
	assert_int_equal(s.scrub_mismatches, 0);
	assert_int_equal(s.scrub_done_bytes, VOL);

	/* 3 mismatches behind the layout's back: one per copy, each a minority */
	store_fill(e, 1, 3 * BS, BS, 7);
	store_fill(e, 2, 10 * MiB + 7 * BS, BS, 7);
	store_fill(e, 0, 9 * BS, BS, 7);
	assert_int_equal(tsr_layout_scrub_start(e->l, true), 0);
	assert_true(wait_status(e, scrub_finished, 20000));
	get_status(e, &s);
	assert_int_equal(s.scrub_mismatches, 3);
	assert_int_equal(s.scrub_repaired, 3);
	assert_int_equal(s.scrub_unrepaired, 0);
	assert_copies_equal_model(e);

	/* without repair: found, left alone */
	store_fill(e, 1, 4 * BS, BS, 8);
	assert_int_equal(tsr_layout_scrub_start(e->l, false), 0);
	assert_true(wait_status(e, scrub_finished, 20000));
	get_status(e, &s);
	assert_int_equal(s.scrub_mismatches, 1);
	assert_int_equal(s.scrub_repaired, 0);
	assert_int_equal(node_read_all(&e->nodes[1], e->file, VOL), 0);
	assert_true(is_filled(e->file + 4 * BS, BS, 8, 4 * BS));
}

/* A block failing its CRC on the local copy: the read is served from another
 * copy and the bad block rewritten. */
static void test_read_repair(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_vol_info info;
	char path[PATH_MAX], garbage[BS];
	int fd;

	opts_init(e, &o, true, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, 4 * BS, 1, TSR_WRITE_FUA), 0);

	assert_int_equal(tsr_store_vol_info(e->nodes[0].store, VOLNAME, &info), 0);
	vol_file(e->nodes[0].dir, info.uuid, "data", path);
	memset(garbage, 0x5a, sizeof(garbage));
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, garbage, BS, 2 * BS), BS);
	assert_int_equal(fsync(fd), 0);
	close(fd);
	assert_int_equal(node_store_read(&e->nodes[0], 2 * BS, BS, e->buf), -EIO);

	assert_int_equal(ldo(e->home, e->l, D_READ, 0, 4 * BS, e->buf, 0), 0);
	assert_memory_equal(e->buf, e->model, 4 * BS);
	/* the repair runs after the read's answer */
	for (int i = 0; i < 200; i++) {
		if (node_store_read(&e->nodes[0], 2 * BS, BS, e->buf) == 0)
			break;
		usleep(10000);
	}
	assert_int_equal(node_store_read(&e->nodes[0], 2 * BS, BS, e->buf), 0);
	assert_true(is_filled(e->buf, BS, 1, 2 * BS));
	assert_copies_equal_model(e);
}

/* The metadata store cannot record a failed copy: the writes that missed it
 * fail, never acked. */
static void test_hook_failure(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;

	opts_init(e, &o, true, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, 64 * 1024, 1, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	pthread_mutex_lock(&g_log.lock);
	g_log.hook_status = -EIO;
	pthread_mutex_unlock(&g_log.lock);
	node_stop(&e->nodes[2]);
	fill(e->buf, 64 * 1024, 2, MiB);
	assert_int_equal(ldo(e->home, e->l, D_WRITE, MiB, 64 * 1024, e->buf, 0), -EIO);
	/* the metadata store works again: the next write goes through */
	pthread_mutex_lock(&g_log.lock);
	g_log.hook_status = 0;
	pthread_mutex_unlock(&g_log.lock);
	assert_int_equal(lwrite(e, 2 * MiB, 64 * 1024, 3, 0), 0);
	assert_int_equal(g_log.state[2], TSR_COPY_OUT_OF_SYNC);
	usleep(100 * 1000);
	get_status(e, &s);
	assert_int_equal(s.in_sync, 2);
	assert_int_equal(s.copies[2].dirty_bytes, 2 * REGION);
}

/* Resync while the host keeps writing (overlapping writes, several in
 * flight, into the regions being copied): all copies end identical. */
static void test_resync_under_load(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;
	static struct batch b;
	unsigned round;

	opts_init(e, &o, false, 2, 1);
	o.resync_rate = 8 * MiB; /* 8 regions: about a second */
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	node_stop(&e->nodes[1]);
	for (unsigned r = 0; r < 8; r++)
		assert_int_equal(lwrite(e, r * MiB, MiB, 40 + r, 0), 0);
	node_run(&e->nodes[1], 11);
	tsr_layout_copy_returned(e->l, 1, e->nodes[1].address);

	memset(&b, 0, sizeof(b));
	b.l = e->l;
	b.n = 16;
	for (unsigned i = 0; i < b.n; i++)
		b.buf[i] = tsr_alloc_aligned(256 * 1024);
	for (round = 0; round < 20; round++) {
		for (unsigned i = 0; i < b.n; i++) {
			/* pairs of writes overlap: the later must win everywhere */
			b.off[i] =
			    ((uint64_t)((round * 7 + i / 2) % 8) * MiB) + (i % 2) * 64 * 1024;
			b.len[i] = 128 * 1024;
			fill(b.buf[i], b.len[i], 100 + round * 16 + i, b.off[i]);
		}
		assert_int_equal(batch_run(e->home, &b), 0);
		for (unsigned i = 0; i < b.n; i++)
			memcpy(e->model + b.off[i], b.buf[i], b.len[i]);
		usleep(20 * 1000);
	}
	assert_true(wait_status(e, all_in_sync, 20000));
	get_status(e, &s);
	assert_int_equal(s.resync_regions_copied, 8);
	assert_int_equal(s.resync_total_bytes, 8 * MiB);
	assert_int_equal(s.resync_done_bytes, 8 * MiB);
	assert_false(s.resync_running);
	for (unsigned i = 0; i < b.n; i++)
		tsr_free_aligned(b.buf[i]);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	assert_copies_equal_model(e);
}

/* Replace copy 2 by a new node: full resync onto it, the old bitmap goes. */
static void test_replace(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;
	struct tsr_layout_copy nc = {.state = TSR_COPY_OUT_OF_SYNC};
	struct node n3;
	char path[PATH_MAX];

	opts_init(e, &o, true, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, 2 * MiB, 1, 0), 0);
	assert_int_equal(lwrite(e, 12 * MiB, MiB, 2, 0), 0);
	node_stop(&e->nodes[2]);
	assert_int_equal(lwrite(e, 4 * MiB, MiB, 3, 0), 0);

	assert_int_equal(node_init(&n3, 3, VOL), 0);
	snprintf(nc.node_id, sizeof(nc.node_id), "%s", n3.node_id);
	snprintf(nc.address, sizeof(nc.address), "%s", n3.address);
	/* the check (no replace running) changes nothing: node2 stays in slot 2 */
	assert_int_equal(tsr_layout_replace_check(e->l, 2), 0);
	assert_int_equal(tsr_layout_replace_check(e->l, 7), -EINVAL);
	get_status(e, &s);
	assert_string_equal(s.copies[2].node_id, "node2");
	assert_int_equal(tsr_layout_replace_copy(e->l, 2, &nc), 0);
	snprintf(path, sizeof(path), "%s/%s.node2.bitmap", e->state_dir, VOLNAME);
	assert_int_equal(access(path, F_OK), -1);
	assert_true(wait_status(e, all_in_sync, 20000));
	/* the replace's rebuild is done: another would be taken */
	assert_int_equal(tsr_layout_replace_check(e->l, 2), 0);
	get_status(e, &s);
	assert_string_equal(s.copies[2].node_id, "node3");
	assert_int_equal(s.copies[2].state, TSR_COPY_IN_SYNC);
	/* every region, but the holes of the source are trimmed, not copied:
	 * regions 0, 1, 4 and 12 hold data */
	assert_int_equal(s.resync_regions_copied, VOL / REGION);
	assert_int_equal(s.resync_bytes_copied, 4 * REGION);
	assert_int_equal(g_log.state[2], TSR_COPY_IN_SYNC);
	assert_int_equal(lwrite(e, 5 * MiB, 64 * 1024, 4, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	assert_int_equal(node_read_all(&n3, e->file, VOL), 0);
	assert_memory_equal(e->file, e->model, VOL);
	tsr_layout_destroy(e->l);
	e->l = NULL;
	node_fini(&n3);
}

static bool copy2_unsupported(const struct tsr_layout_status *s)
{
	return s->copies[2].counters_unsupported;
}

static bool copy2_counted(const struct tsr_layout_status *s)
{
	return s->copies[2].counters_known && strcmp(s->copies[2].node_id, "node3") == 0;
}

/*
 * Review F6: a replace's new copy inherits nothing of the old copy's
 * counters.  Slot 2's node answers HELLO as an earlier build (no STATS:
 * counters_unsupported); replaced by node3, which serves STATS, the status
 * right after the replace says nothing of node2's build (before: still
 * "unsupported" until the next ask, up to 1 s later) and node3 is counted
 * soon after.
 */
static void test_replace_counters_fresh(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;
	struct tsr_layout_copy nc = {.state = TSR_COPY_OUT_OF_SYNC};
	struct node n3;

	setenv("TSR_TEST_PEER_NO_FEATURES", "1", 1); /* read by the servers at HELLO */
	opts_init(e, &o, true, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_true(wait_status(e, copy2_unsupported, 5000));
	node_stop(&e->nodes[2]);
	unsetenv("TSR_TEST_PEER_NO_FEATURES");
	assert_int_equal(node_init(&n3, 3, VOL), 0);
	snprintf(nc.node_id, sizeof(nc.node_id), "%s", n3.node_id);
	snprintf(nc.address, sizeof(nc.address), "%s", n3.address);
	assert_int_equal(tsr_layout_replace_copy(e->l, 2, &nc), 0);
	get_status(e, &s);
	assert_string_equal(s.copies[2].node_id, "node3");
	if (s.copies[2].counters_unsupported)
		print_message("node3's copy said unsupported (node2's flag) after the replace\n");
	assert_false(s.copies[2].counters_unsupported);
	assert_true(wait_status(e, copy2_counted, 5000));
	assert_true(wait_status(e, all_in_sync, 20000));
	tsr_layout_destroy(e->l);
	e->l = NULL;
	node_fini(&n3);
}

/*
 * Review F8: a remote copy's counters never go down while the layout runs.
 * Its node's answer lower than the last (the node restarted: its counters
 * began again at 0) keeps what was counted before; a new copy in the slot
 * (copyset_stats_forget) starts from nothing.
 */
static void test_counters_monotonic(void **state)
{
	struct copyset_copy c;
	struct tsr_layout_copy_status out;
	struct tsr_layout_status s;

	(void)state;
	memset(&c, 0, sizeof(c));
	memset(&s, 0, sizeof(s));
	copyset_stats_take(&c, &(struct tsr_peer_stats){.crc_errors = 5, .cached_reads = 10});
	copyset_stats_take(&c, &(struct tsr_peer_stats){.crc_errors = 7, .cached_reads = 12});
	copyset_stats_fill(&c, &out, &s);
	assert_true(out.counters_known);
	assert_int_equal(out.crc_errors, 7);
	assert_int_equal(out.cached_reads, 12);
	/* the node restarted: 1 and 0 since */
	copyset_stats_take(&c, &(struct tsr_peer_stats){.crc_errors = 1, .cached_reads = 0});
	memset(&s, 0, sizeof(s));
	copyset_stats_fill(&c, &out, &s);
	assert_int_equal(out.crc_errors, 8);
	assert_int_equal(out.cached_reads, 12);
	assert_int_equal(s.crc_errors_all, 8);
	copyset_stats_take(&c, &(struct tsr_peer_stats){.crc_errors = 3, .cached_reads = 4});
	copyset_stats_fill(&c, &out, &s);
	assert_int_equal(out.crc_errors, 10);
	assert_int_equal(out.cached_reads, 16);
	/* past 2^63: kept as unsigned */
	copyset_stats_take(
	    &c, &(struct tsr_peer_stats){.crc_errors = UINT64_C(1) << 63, .cached_reads = 4});
	copyset_stats_fill(&c, &out, &s);
	assert_true(out.crc_errors == (UINT64_C(1) << 63) + 7);
	/* a new copy in the slot: nothing of the old one */
	copyset_stats_forget(&c);
	copyset_stats_fill(&c, &out, &s);
	assert_false(out.counters_known);
	copyset_stats_take(&c, &(struct tsr_peer_stats){.crc_errors = 2, .cached_reads = 1});
	copyset_stats_fill(&c, &out, &s);
	assert_int_equal(out.crc_errors, 2);
	assert_int_equal(out.cached_reads, 1);
}

/*
 * A replace onto the coordinator (a new LOCAL copy) whose store holds a
 * volume smaller than the mirror's is refused (-EINVAL, "local copy is N
 * bytes, M needed"), as at create: the old copy keeps its slot and the
 * mirror goes on.  Before, the replace took it and the rebuild wrote past
 * its end.
 */
static void test_replace_local_too_small(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;
	struct tsr_layout_copy nc = {.state = TSR_COPY_OUT_OF_SYNC, .local = true};
	struct node n3;

	/* n3's store: the coordinator's, its VOLNAME half the mirror's size */
	assert_int_equal(node_init(&n3, 3, VOL / 2), 0);
	opts_init(e, &o, false, 2, 1);
	o.store = n3.store;
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, MiB, 1, 0), 0);
	snprintf(nc.node_id, sizeof(nc.node_id), "%s", n3.node_id);
	assert_int_equal(tsr_layout_replace_copy(e->l, 2, &nc), -EINVAL);
	get_status(e, &s);
	assert_string_equal(s.copies[2].node_id, "node2");
	assert_int_equal(s.copies[2].state, TSR_COPY_IN_SYNC);
	assert_int_equal(lwrite(e, 2 * MiB, MiB, 2, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	assert_copies_equal_model(e);
	tsr_layout_destroy(e->l);
	e->l = NULL;
	node_fini(&n3);
}

/*
 * A copy replaced with no copy on the coordinator: the new copy gets the
 * snapshots of the list it is given (read elsewhere, before the replace) and
 * those cut since (the list lacks s2 here), each the others' image.
 */
static void test_replace_given_snapshots(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_copy nc = {.state = TSR_COPY_OUT_OF_SYNC, .full_resync = true};
	uint8_t *at_s1 = malloc(VOL), *at_s2 = malloc(VOL);
	struct node n3;
	char path[PATH_MAX];
	struct tsr_layout_status st;
	uint64_t copied0;

	opts_init(e, &o, false, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, 2 * MiB, 1, 0), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s1"), 0);
	memcpy(at_s1, e->model, VOL);
	assert_int_equal(lwrite(e, MiB, 2 * MiB, 2, 0), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s2"), 0);
	memcpy(at_s2, e->model, VOL);
	assert_int_equal(lwrite(e, 12 * MiB, MiB, 3, 0), 0);
	/* copy 2 away with a journal (it missed "gone"), then replaced */
	node_stop(&e->nodes[2]);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "gone"), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_DELETE, "gone"), 0);
	snprintf(path, sizeof(path), "%s/%s.node2.snaps", e->state_dir, VOLNAME);
	assert_int_equal(access(path, F_OK), 0);

	assert_int_equal(node_init(&n3, 3, VOL), 0);
	snprintf(nc.node_id, sizeof(nc.node_id), "%s", n3.node_id);
	snprintf(nc.address, sizeof(nc.address), "%s", n3.address);
	nc.missed = "c s1\n"; /* read before s2 was cut */
	get_status(e, &st);
	copied0 = st.resync_bytes_copied;
	assert_int_equal(tsr_layout_replace_copy(e->l, 2, &nc), 0);
	assert_int_equal(access(path, F_OK), -1); /* the old copy's journal went */
	assert_true(wait_status(e, all_in_sync, 20000));
	/* what differs only: s1's 2 MiB of data, s2's 2 MiB changed since s1, the
	 * head's 1 MiB since s2 (each whole image, 16 + 16 + 4 MiB, before) */
	get_status(e, &st);
	assert_int_equal(st.resync_bytes_copied - copied0, 5 * MiB);
	for (unsigned n = 0; n < 2; n++) {
		assert_snap_equals(e, n, "s1", at_s1);
		assert_snap_equals(e, n, "s2", at_s2);
	}
	assert_store_snap_equals(e, n3.store, "node3", "s1", at_s1, VOL);
	assert_store_snap_equals(e, n3.store, "node3", "s2", at_s2, VOL);
	{
		struct tsr_snap_info si;

		assert_int_equal(tsr_store_snap_info(n3.store, VOLNAME, "gone", &si), -ENOENT);
	}
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	assert_int_equal(node_read_all(&n3, e->file, VOL), 0);
	assert_memory_equal(e->file, e->model, VOL);
	tsr_layout_destroy(e->l);
	e->l = NULL;
	node_fini(&n3);
	free(at_s1);
	free(at_s2);
}

/* Below min_replicas a write waits; a copy that comes back (its resync
 * copying the very region the write waits on) lets it through, acked once. */
static void test_stalled_write_resumes(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct dcall d = {.kind = D_WRITE, .off = 3 * MiB, .len = 64 * 1024};

	opts_init(e, &o, true, 2, 1);
	o.write_wait_ms = 15000;
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	/* node2 away: region 3 dirty in its bitmap */
	node_stop(&e->nodes[2]);
	assert_int_equal(lwrite(e, 3 * MiB, 256 * 1024, 1, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	/* node1 away too: a write to region 3 waits */
	node_stop(&e->nodes[1]);
	usleep(50 * 1000);
	d.l = e->l;
	d.buf = tsr_alloc_aligned(64 * 1024);
	fill(d.buf, 64 * 1024, 2, 3 * MiB);
	dcall_start(e->home, &d);
	usleep(300 * 1000);
	assert_int_equal(d.calls, 0);
	/* node2 back: resyncing region 3 must not wait for the waiting write */
	node_run(&e->nodes[2], 12);
	tsr_layout_copy_returned(e->l, 2, e->nodes[2].address);
	assert_int_equal(dcall_wait(&d, 10000), 0);
	assert_int_equal(d.calls, 1);
	memcpy(e->model + 3 * MiB, d.buf, 64 * 1024);
	tsr_free_aligned(d.buf);
	node_run(&e->nodes[1], 11);
	tsr_layout_copy_returned(e->l, 1, e->nodes[1].address);
	assert_true(wait_status(e, all_in_sync, 20000));
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	assert_copies_equal_model(e);
}

/* Scrub: blocks failing their CRC (unreadable) on the local copy and on a
 * replica are rewritten from a good copy. */
static void corrupt_block(struct node *n, uint64_t block)
{
	struct tsr_vol_info info;
	char path[PATH_MAX], garbage[BS];
	int fd;

	assert_int_equal(tsr_store_vol_info(n->store, VOLNAME, &info), 0);
	vol_file(n->dir, info.uuid, "data", path);
	memset(garbage, 0x5a, sizeof(garbage));
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, garbage, BS, (off_t)(block * BS)), BS);
	assert_int_equal(fsync(fd), 0);
	close(fd);
}

static void test_scrub_unreadable(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;

	opts_init(e, &o, true, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, MiB, 1, TSR_WRITE_FUA), 0);
	corrupt_block(&e->nodes[0], 5);
	corrupt_block(&e->nodes[1], 17);
	assert_int_equal(node_store_read(&e->nodes[0], 5 * BS, BS, e->buf), -EIO);
	assert_int_equal(node_store_read(&e->nodes[1], 17 * BS, BS, e->buf), -EIO);
	assert_int_equal(tsr_layout_scrub_start(e->l, true), 0);
	assert_true(wait_status(e, scrub_finished, 20000));
	get_status(e, &s);
	assert_int_equal(s.scrub_mismatches, 2);
	assert_int_equal(s.scrub_repaired, 2);
	assert_int_equal(s.scrub_unrepaired, 0);
	assert_int_equal(node_store_read(&e->nodes[0], 5 * BS, BS, e->buf), 0);
	assert_true(is_filled(e->buf, BS, 1, 5 * BS));
	assert_int_equal(node_store_read(&e->nodes[1], 17 * BS, BS, e->buf), 0);
	assert_copies_equal_model(e);
}

/* Scrub compares the snapshots too (report only): equal images are clean; a
 * copy lacking one (deleted behind the layout's back) counts every block of
 * it, unrepaired, while the heads stay clean. */
static void test_scrub_snapshots(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;

	opts_init(e, &o, true, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, MiB, 1, TSR_WRITE_FUA), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s1"), 0);
	assert_int_equal(lwrite(e, 0, 64 * 1024, 2, TSR_WRITE_FUA), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s2"), 0);
	assert_int_equal(tsr_layout_scrub_start(e->l, false), 0);
	assert_true(wait_status(e, scrub_finished, 20000));
	get_status(e, &s);
	assert_int_equal(s.scrub_mismatches, 0);
	assert_int_equal(s.scrub_unrepaired, 0);
	/* progress: the head and both snapshots (VOL each), all of it done */
	assert_int_equal(s.scrub_total_bytes, 3 * (uint64_t)VOL);
	assert_int_equal(s.scrub_done_bytes, s.scrub_total_bytes);
	/* block 3 of s1's layer on node1 fails its CRC: that block only counts
	 * (asked block by block), the rest of its 4 MiB chunk is compared */
	{
		struct tsr_snap_info si;
		char path[PATH_MAX], garbage[BS];
		int fd;

		assert_int_equal(tsr_store_snap_info(e->nodes[1].store, VOLNAME, "s1", &si), 0);
		vol_file(e->nodes[1].dir, si.uuid, "data", path);
		memset(garbage, 0x5a, sizeof(garbage));
		fd = open(path, O_WRONLY);
		assert_true(fd >= 0);
		assert_int_equal(pwrite(fd, garbage, BS, (off_t)(3 * BS)), BS);
		assert_int_equal(fsync(fd), 0);
		close(fd);
	}
	assert_int_equal(tsr_layout_scrub_start(e->l, false), 0);
	assert_true(wait_status(e, scrub_finished, 20000));
	get_status(e, &s);
	assert_int_equal(s.scrub_mismatches, 1);
	assert_int_equal(s.scrub_unrepaired, 1);
	/* s1 gone from node2's copy only (node1's block 3 still counts) */
	assert_int_equal(tsr_store_snap_delete(e->nodes[2].store, VOLNAME, "s1"), 0);
	assert_int_equal(tsr_layout_scrub_start(e->l, false), 0);
	assert_true(wait_status(e, scrub_finished, 20000));
	get_status(e, &s);
	assert_int_equal(s.scrub_mismatches, VOL / BS);
	assert_int_equal(s.scrub_repaired, 0);
	assert_int_equal(s.scrub_unrepaired, VOL / BS);
	/* a snapshot delete while the snapshots are compared goes through on
	 * every copy (no session open across chunks: no -EBUSY) */
	assert_int_equal(tsr_layout_scrub_start(e->l, false), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_DELETE, "s2"), 0);
	assert_true(wait_status(e, scrub_finished, 20000));
	get_status(e, &s);
	/* a snapshot deleted meanwhile counts as passed over: done reaches total */
	assert_true(s.scrub_total_bytes >= 2 * (uint64_t)VOL);
	assert_int_equal(s.scrub_done_bytes, s.scrub_total_bytes);
	assert_int_equal(s.n_copies, 3);
	for (unsigned n = 0; n < 3; n++)
		assert_int_equal(s.copies[n].state, TSR_COPY_IN_SYNC);
	for (unsigned n = 0; n < 3; n++) {
		struct tsr_snap_info si;

		assert_int_equal(tsr_store_snap_info(e->nodes[n].store, VOLNAME, "s2", &si),
				 -ENOENT);
	}
	assert_copies_equal_model(e);
}

/* Wrong bytes with a valid CRC in node n's image of snap (the case no read
 * detects), planted through the store's own repair call. */
static void plant_snap_block(struct env *e, unsigned n, const char *snap, uint64_t b, uint64_t seed)
{
	struct tsr_svol *v = NULL;

	assert_int_equal(tsr_store_snap_open(e->nodes[n].store, VOLNAME, snap, &v), 0);
	fill(e->buf, BS, seed, b * BS);
	assert_int_equal(tsr_svol_snap_repair(v, 1, b * BS, BS, e->buf), 0); /* epoch 1 */
	tsr_svol_put(v);
}

/*
 * Scrub with repair rewrites a differing snapshot block on the copy outside
 * the majority: a block failing its CRC on node1 (remote target, local
 * winner), wrong bytes on node2 (remote target) and on node0, the local copy
 * (written locally from a remote winner's bytes).  A second scrub is clean
 * and every copy's images equal what was cut.  With a copy lacking the
 * snapshot, its blocks stay unrepaired (replace-replica rebuilds it).
 */
static void scrub_snapshots_repair(void **state, bool local)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;
	uint8_t *at_s1 = malloc(VOL), *at_s2 = malloc(VOL);

	opts_init(e, &o, local, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, 2 * MiB, 1, TSR_WRITE_FUA), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s1"), 0);
	memcpy(at_s1, e->model, VOL);
	assert_int_equal(lwrite(e, 0, 64 * 1024, 2, TSR_WRITE_FUA), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s2"), 0);
	memcpy(at_s2, e->model, VOL);
	assert_int_equal(lwrite(e, 0, 8 * 1024, 3, TSR_WRITE_FUA), 0);
	{ /* block 3 of s1's layer on node1 fails its CRC */
		struct tsr_snap_info si;
		char path[PATH_MAX], garbage[BS];
		int fd;

		assert_int_equal(tsr_store_snap_info(e->nodes[1].store, VOLNAME, "s1", &si), 0);
		vol_file(e->nodes[1].dir, si.uuid, "data", path);
		memset(garbage, 0x5a, sizeof(garbage));
		fd = open(path, O_WRONLY);
		assert_true(fd >= 0);
		assert_int_equal(pwrite(fd, garbage, BS, (off_t)(3 * BS)), BS);
		assert_int_equal(fsync(fd), 0);
		close(fd);
	}
	plant_snap_block(e, 2, "s2", 20, 77);      /* held by the head there */
	plant_snap_block(e, 0, "s1", 5 * 256, 78); /* past the data: zeros elsewhere */
	plant_snap_block(e, 0, "s2", 2 * 256 - 1, 79);
	assert_int_equal(tsr_layout_scrub_start(e->l, true), 0);
	assert_true(wait_status(e, scrub_finished, 20000));
	get_status(e, &s);
	assert_int_equal(s.scrub_mismatches, 4);
	assert_int_equal(s.scrub_repaired, 4);
	assert_int_equal(s.scrub_unrepaired, 0);
	/* progress: the head, s1 and s2 (VOL each), all of it done */
	assert_int_equal(s.scrub_total_bytes, 3 * (uint64_t)VOL);
	assert_int_equal(s.scrub_done_bytes, s.scrub_total_bytes);
	assert_int_equal(tsr_layout_scrub_start(e->l, false), 0);
	assert_true(wait_status(e, scrub_finished, 20000));
	get_status(e, &s);
	assert_int_equal(s.scrub_mismatches, 0);
	for (unsigned n = 0; n < 3; n++) {
		assert_snap_equals(e, n, "s1", at_s1);
		assert_snap_equals(e, n, "s2", at_s2);
	}
	assert_copies_equal_model(e);
	/* s2 gone from node2: its blocks differ there and stay unrepaired */
	assert_int_equal(tsr_store_snap_delete(e->nodes[2].store, VOLNAME, "s2"), 0);
	assert_int_equal(tsr_layout_scrub_start(e->l, true), 0);
	assert_true(wait_status(e, scrub_finished, 20000));
	get_status(e, &s);
	assert_int_equal(s.scrub_mismatches, VOL / BS);
	assert_int_equal(s.scrub_repaired, 0);
	assert_int_equal(s.scrub_unrepaired, VOL / BS);
	assert_int_equal(s.scrub_total_bytes, 3 * (uint64_t)VOL);
	assert_int_equal(s.scrub_done_bytes, s.scrub_total_bytes);
	free(at_s1);
	free(at_s2);
}

static void test_scrub_snapshots_repair(void **state)
{
	scrub_snapshots_repair(state, true);
}

/* The coordinator holds no copy: the list comes from a copy (SNAP_LIST). */
static void test_scrub_snapshots_repair_remote(void **state)
{
	scrub_snapshots_repair(state, false);
}

/* A replica dies while writes are in flight: none fails (min 2), and the
 * resync afterwards moves only regions, not the volume. */
struct stopper {
	struct node *n;
	unsigned delay_ms;
};

static void *stopper_main(void *arg)
{
	struct stopper *st = arg;

	usleep(st->delay_ms * 1000);
	node_stop(st->n);
	return NULL;
}

static void test_replica_dies_mid_workload(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;
	struct stopper st = {.n = &e->nodes[2], .delay_ms = 100};
	static struct batch b;
	pthread_t t;

	opts_init(e, &o, true, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	memset(&b, 0, sizeof(b));
	b.l = e->l;
	b.n = 16;
	for (unsigned i = 0; i < b.n; i++)
		b.buf[i] = tsr_alloc_aligned(64 * 1024);
	pthread_create(&t, NULL, stopper_main, &st);
	for (unsigned round = 0; round < 40; round++) {
		for (unsigned i = 0; i < b.n; i++) {
			/* rounds 0..9 in regions 0-3, later ones in 8-11 */
			b.off[i] = (round < 10 ? 0 : 8 * MiB) + (uint64_t)(i % 4) * MiB +
				   (uint64_t)((round * 3 + i) % 8) * 128 * 1024;
			b.len[i] = 64 * 1024;
			fill(b.buf[i], b.len[i], 1000 + round * 16 + i, b.off[i]);
		}
		assert_int_equal(batch_run(e->home, &b), 0);
		for (unsigned i = 0; i < b.n; i++)
			memcpy(e->model + b.off[i], b.buf[i], b.len[i]);
		usleep(5 * 1000);
	}
	pthread_join(t, NULL);
	for (unsigned i = 0; i < b.n; i++)
		tsr_free_aligned(b.buf[i]);
	usleep(100 * 1000);
	get_status(e, &s);
	assert_int_equal(s.copies[2].state, TSR_COPY_OUT_OF_SYNC);
	assert_int_equal(s.write_errors, 0);
	assert_true(s.copies[2].dirty_bytes >= 4 * REGION); /* regions 8-11 at least */
	assert_true(s.copies[2].dirty_bytes <= 8 * REGION); /* never more than written */

	node_run(&e->nodes[2], 12);
	tsr_layout_copy_returned(e->l, 2, e->nodes[2].address);
	assert_true(wait_status(e, all_in_sync, 20000));
	get_status(e, &s);
	assert_true(s.resync_bytes_copied <= 8 * REGION);
	assert_int_equal(s.resync_bytes_copied, s.resync_regions_copied * REGION);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	assert_copies_equal_model(e);
}

/* The next coordinator (same node, next epoch) finds the bitmap file of a
 * copy recorded OUT_OF_SYNC and resyncs exactly its regions at create. */
static void test_resync_at_create(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;

	opts_init(e, &o, true, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, MiB, 1, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	node_stop(&e->nodes[2]);
	assert_int_equal(lwrite(e, 5 * MiB, 64 * 1024, 2, 0), 0);
	assert_int_equal(lwrite(e, 7 * MiB, 64 * 1024, 3, TSR_WRITE_FUA), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	env_layout_close(e);
	assert_int_equal(g_log.state[2], TSR_COPY_OUT_OF_SYNC);

	node_run(&e->nodes[2], 12);
	opts_init(e, &o, true, 2, 2);
	o.copies[2].state = g_log.state[2];
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_true(wait_status(e, all_in_sync, 20000));
	get_status(e, &s);
	assert_int_equal(s.resync_regions_copied, 2);
	assert_int_equal(s.resync_bytes_copied, 2 * REGION);
	assert_copies_equal_model(e);

	/* a copy recorded OUT_OF_SYNC with no usable bitmap (its node was the
	 * last coordinator: it holds a write nobody acknowledged): every region
	 * compared, only the differing block copied */
	env_layout_close(e);
	store_fill(e, 1, 3 * BS, BS, 99);
	store_fill(e, 1, 6 * MiB + 3 * BS, BS, 99); /* a hole elsewhere: trimmed, 0 bytes */
	opts_init(e, &o, true, 2, 3);
	o.copies[1].state = TSR_COPY_OUT_OF_SYNC;
	o.copies[1].full_resync = true;
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_true(wait_status(e, all_in_sync, 20000));
	get_status(e, &s);
	assert_int_equal(s.resync_regions_copied, VOL / REGION);
	assert_int_equal(s.resync_bytes_copied, BS);
	assert_copies_equal_model(e);
}

/* The local disk fails a write: the local copy goes out of sync, reads go to
 * the replicas, and a few seconds later (MIRROR_LOCAL_RETRY_NS, 5 s; 1 s
 * here, TSR_TEST_MIRROR_LOCAL_RETRY_MS for this layout only) it is resynced
 * automatically. */
static void test_local_copy_fails(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;
	struct tsr_io_opts io = {.kind = TSR_IO_AUTO, .fault_spec = "write:3:fail=EIO"};
	struct tsr_worker *faulty = NULL;

	assert_int_equal(tsr_worker_start(5, &io, &faulty), 0);
	opts_init(e, &o, true, 2, 1);
	o.home = faulty;
	setenv("TSR_TEST_MIRROR_LOCAL_RETRY_MS", "1000", 1); /* read at create */
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	unsetenv("TSR_TEST_MIRROR_LOCAL_RETRY_MS");
	for (unsigned i = 0; i < 3; i++) {
		fill(e->buf, 64 * 1024, 1 + i, i * MiB);
		memcpy(e->model + i * MiB, e->buf, 64 * 1024);
		/* FUA: nothing unflushed, so only the failed write's region is dirty */
		assert_int_equal(
		    ldo(faulty, e->l, D_WRITE, i * MiB, 64 * 1024, e->buf, TSR_WRITE_FUA), 0);
	}
	usleep(100 * 1000);
	get_status(e, &s);
	assert_int_equal(s.copies[0].state, TSR_COPY_OUT_OF_SYNC);
	assert_int_equal(s.copy_failures, 1);
	assert_int_equal(ldo(faulty, e->l, D_READ, 2 * MiB, 64 * 1024, e->buf, 0), 0);
	assert_true(is_filled(e->buf, 64 * 1024, 3, 2 * MiB));
	assert_true(wait_status(e, all_in_sync, 20000));
	get_status(e, &s);
	assert_int_equal(s.resync_regions_copied, 1);
	assert_int_equal(ldo(faulty, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	assert_copies_equal_model(e);
	env_layout_close(e);
	tsr_worker_stop(faulty);
}

/* The local store completes a write with -EAGAIN (it met a full io queue in
 * a step it ran after accepting the write, such as a copy on write into a
 * snapshot): the write goes again, the local copy stays in sync and nothing
 * counts as a copy failure (before: out of sync, copy_failures 1). */
static void test_local_late_eagain(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;
	struct tsr_io_opts io = {.kind = TSR_IO_AUTO, .fault_spec = "write:3:fail=EAGAIN"};
	struct tsr_worker *faulty = NULL;

	assert_int_equal(tsr_worker_start(5, &io, &faulty), 0);
	opts_init(e, &o, true, 2, 1);
	o.home = faulty;
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	for (unsigned i = 0; i < 3; i++) {
		fill(e->buf, 64 * 1024, 1 + i, i * MiB);
		memcpy(e->model + i * MiB, e->buf, 64 * 1024);
		assert_int_equal(
		    ldo(faulty, e->l, D_WRITE, i * MiB, 64 * 1024, e->buf, TSR_WRITE_FUA), 0);
	}
	get_status(e, &s);
	assert_int_equal(s.copies[0].state, TSR_COPY_IN_SYNC);
	assert_int_equal(s.copy_failures, 0);
	assert_int_equal(ldo(faulty, e->l, D_READ, 2 * MiB, 64 * 1024, e->buf, 0), 0);
	assert_true(is_filled(e->buf, 64 * 1024, 3, 2 * MiB));
	assert_int_equal(ldo(faulty, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	assert_copies_equal_model(e);
	env_layout_close(e);
	tsr_worker_stop(faulty);
}

/* The cluster fences while holding the lock its hook takes on the home
 * worker, which is blocked in that hook: tsr_layout_fence must not wait. */
static void *fence_thread(void *arg)
{
	void **a = arg;

	tsr_layout_fence(a[0]);
	sem_post(a[1]);
	return NULL;
}

static void test_fence_under_hook_lock(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;
	pthread_t t;
	sem_t done;
	void *args[2];
	int ret;

	opts_init(e, &o, true, 2, 1);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, BS, 1, 0), 0);
	pthread_mutex_lock(&g_log.caller_lock);
	node_stop(&e->nodes[2]); /* the home worker calls the hook: blocks on the lock */
	usleep(100 * 1000);
	sem_init(&done, 0, 0);
	args[0] = e->l;
	args[1] = &done;
	pthread_create(&t, NULL, fence_thread, args);
	ret = sem_wait_ms(&done, 5000); /* returned while the lock is still held */
	pthread_mutex_unlock(&g_log.caller_lock);
	pthread_join(t, NULL);
	sem_destroy(&done);
	assert_int_equal(ret, 0);
	assert_int_equal(ldo(e->home, e->l, D_WRITE, 0, BS, e->buf, 0), -EIO);
	usleep(100 * 1000);
	get_status(e, &s);
	assert_true(s.fenced);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_round_trip_local, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_direct_local, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_direct_remote, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_round_trip_remote, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snap_all_copies, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snap_under_writes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snap_copy_failures, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snap_missed_replay, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snap_missed_replay_remote, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snap_makeup_full_queue, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snap_missed_other_coordinator, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snap_missed_record_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snap_during_resync, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_replica_down_resync, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resync_pipelined, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resync_flush_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_below_min_replicas, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fencing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fence_call, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_converge, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_scrub, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_repair, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hook_failure, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resync_under_load, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_replace, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_replace_counters_fresh, setup, teardown),
	    cmocka_unit_test(test_counters_monotonic),
	    cmocka_unit_test_setup_teardown(test_replace_local_too_small, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_replace_given_snapshots, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stalled_write_resumes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_scrub_unreadable, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_scrub_snapshots, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_scrub_snapshots_repair, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_scrub_snapshots_repair_remote, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_replica_dies_mid_workload, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resync_at_create, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_local_copy_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_local_late_eagain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fence_under_hook_lock, setup, teardown),
	};

	/* MIRROR_UT_FILTER=test_replace* runs only those (cmocka's pattern) */
	if (getenv("MIRROR_UT_FILTER"))
		cmocka_set_test_filter(getenv("MIRROR_UT_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
