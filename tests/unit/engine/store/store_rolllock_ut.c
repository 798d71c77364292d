/*
 * A rollback runs its data copy without store->lock (review 15b F2, session
 * 16): while it is held in the middle of that copy (store_test_rollback_chunk,
 * after its first chunk), another thread lists volumes, reads the rolling
 * volume's row and snapshot list, opens, reads, writes and snapshots another
 * volume, and gets every answer before the rollback ends; every call that
 * would open or change the rolling volume answers -EBUSY.  Then the
 * rollback's result is checked block by block (the head is the snapshot's
 * image, the later snapshot's image unchanged).  A second case: a delete's
 * merge, queued before the rollback, publishes its chain (dropping a layer
 * the rollback reads) while the rollback is held.
 * Review 16b's findings (session 16, s16-rollfix):
 * - R1: a rollback's second fence check (admin_rollback_fenced: set_epoch E,
 *   rollback, set_epoch E) answers 0 while a retry of that rollback runs: only
 *   an epoch raise is refused during a rollback.  On b8ab404: -EBUSY.
 * - R2: a second rollback of a to the same snapshot while one runs waits for
 *   its end (store_test_rollback_wait) and then runs again: both answer 0, a
 *   is s1's image; to another snapshot it answers -EBUSY at once.  On b8ab404
 *   (plus the hook's definition only): "the retry of the same rollback
 *   answered -16 while the first ran".
 * - I2: a fenced rollback (tsr_store_vol_rollback_epoch) whose fence is below
 *   the row's epoch (a newer coordinator's OPEN after the caller's own
 *   check) answers -ESTALE and changes nothing.  With the check removed:
 *   "a rollback fenced at epoch 3 ran after epoch 4 was accepted".
 * - L1: a layer a merge dropped during the rollback (retired, still mapped)
 *   is closed at the rollback's end when nothing reads it, although another
 *   merge job's ref keeps a's head loaded.  On b8ab404: "s2's layer is still
 *   open after the rollback ended: N descriptors".
 *
 * Before the change the first call of the other thread waits on store->lock
 * until the rollback ends: the hold gives up after HOLD_LIMIT_S (a guard
 * against a deadlock, never a time the test asserts), the rollback finishes,
 * and the test fails on "the rollback had not ended when ... answered" and on
 * the hold having timed out.
 */
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>

#include <cmocka.h>

#include "store_test.h"

extern void (*store_test_rollback_chunk)(void *arg);
extern void *store_test_rollback_arg;
extern void (*store_test_rollback_wait)(void *arg);
extern void *store_test_rollback_wait_arg;
extern int64_t store_test_rollback_wait_ms;
extern void (*store_test_merge_hook)(void *arg);
extern void *store_test_merge_arg;
unsigned store_test_merges_idle(struct tsr_store *store);

#define MiB        (1024u * 1024u)
#define VOL_SIZE   (8 * MiB) /* 2048 blocks: 8 chunks of the rollback; [4M,8M) unchanged
			    * after s1, so no layer holds it */
#define HOLD_LIMIT_S 20

/* A hold: the held thread says it arrived, then waits for release (at most
 * HOLD_LIMIT_S; timed_out then). */
struct hold {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool arrived, released, timed_out;
	int passes; /* how many times the hook ran */
};

static void hold_init(struct hold *h)
{
	memset(h, 0, sizeof(*h));
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
}

static void hold_here(void *arg)
{
	struct hold *h = arg;
	struct timespec dl;
	int rc = 0;

	pthread_mutex_lock(&h->lock);
	if (h->passes++ > 0) { /* the first pass only */
		pthread_mutex_unlock(&h->lock);
		return;
	}
	h->arrived = true;
	pthread_cond_broadcast(&h->cond);
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += HOLD_LIMIT_S;
	while (!h->released && rc == 0)
		rc = pthread_cond_timedwait(&h->cond, &h->lock, &dl);
	if (!h->released)
		h->timed_out = true;
	pthread_mutex_unlock(&h->lock);
}

/* Wait (bounded by 2 * HOLD_LIMIT_S) until the held thread arrived. */
static bool hold_wait_arrived(struct hold *h)
{
	struct timespec dl;
	int rc = 0;
	bool ok;

	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 2 * HOLD_LIMIT_S;
	pthread_mutex_lock(&h->lock);
	while (!h->arrived && rc == 0)
		rc = pthread_cond_timedwait(&h->cond, &h->lock, &dl);
	ok = h->arrived;
	pthread_mutex_unlock(&h->lock);
	return ok;
}

static void hold_release(struct hold *h)
{
	pthread_mutex_lock(&h->lock);
	h->released = true;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
}

struct rb {
	struct tsr_store *store;
	const char *vol, *snap;
	int ret;
	atomic_bool done;
};

static void *rb_main(void *arg)
{
	struct rb *r = arg;

	r->ret = tsr_store_vol_rollback(r->store, r->vol, r->snap);
	atomic_store(&r->done, true);
	return NULL;
}

struct env {
	struct store_env se;
	struct tsr_io *io;
	uint8_t *buf;
};

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	void *se = NULL;

	if (e == NULL || store_env_setup(&se))
		return -1;
	e->se = *(struct store_env *)se;
	free(se);
	e->io = make_io(TSR_IO_AUTO, NULL);
	e->buf = tsr_alloc_aligned(VOL_SIZE);
	if (e->io == NULL || e->buf == NULL)
		return -1;
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	store_test_rollback_chunk = NULL;
	store_test_rollback_wait = NULL;
	store_test_rollback_wait_ms = 0;
	store_test_merge_hook = NULL;
	tsr_io_destroy(e->io);
	tsr_free_aligned(e->buf);
	tsr_store_close(e->se.store);
	rm_rf(e->se.dir);
	free(e);
	return 0;
}

/* Write seed over [off, off+len) of vol (opened and put here). */
static void put_data(struct env *e, const char *vol, uint64_t off, uint32_t len, uint64_t seed)
{
	struct tsr_svol *v;

	assert_int_equal(tsr_store_vol_open(e->se.store, vol, &v), 0);
	fill(e->buf, len, seed, off);
	assert_int_equal(swrite(v, e->io, off, len, e->buf, 0), 0);
	assert_int_equal(sflush(v, e->io), 0);
	tsr_svol_put(v);
}

/* Block by block: want[b] = the seed of block b, 0 = zeros. */
static void check_image(struct env *e, struct tsr_svol *v, const uint64_t *want)
{
	uint64_t b;

	assert_int_equal(sread(v, e->io, 0, VOL_SIZE, e->buf), 0);
	for (b = 0; b < VOL_SIZE / BS; b++) {
		const uint8_t *p = e->buf + b * BS;
		bool ok = want[b] ? is_filled(p, BS, want[b], b * BS) : is_zero(p, BS);

		if (!ok)
			fail_msg("block %llu: expected %s %llu", (unsigned long long)b,
				 want[b] ? "seed" : "zeros", (unsigned long long)want[b]);
	}
}

/* vol's head (snap NULL), or its snapshot snap, reads as want. */
static void check_vol(struct env *e, const char *vol, const char *snap, const uint64_t *want)
{
	struct tsr_svol *v;

	if (snap)
		assert_int_equal(tsr_store_snap_open(e->se.store, vol, snap, &v), 0);
	else
		assert_int_equal(tsr_store_vol_open(e->se.store, vol, &v), 0);
	check_image(e, v, want);
	tsr_svol_put(v);
}

static void set_range(uint64_t *m, uint64_t off, uint64_t len, uint64_t seed)
{
	for (uint64_t b = off / BS; b < (off + len) / BS; b++)
		m[b] = seed;
}

/*
 * Volume a: seed 1 everywhere, s1; seed 2 over [0,2M), [3M,4M) trimmed, s2;
 * seed 3 over [1M,3M).  Models of s1 and s2 in m1, m2.
 */
static void make_a(struct env *e, uint64_t *m1, uint64_t *m2)
{
	struct tsr_store *st = e->se.store;
	struct tsr_svol *v;

	assert_int_equal(tsr_store_vol_create(st, "a", VOL_SIZE, NULL), 0);
	put_data(e, "a", 0, VOL_SIZE, 1);
	set_range(m1, 0, VOL_SIZE, 1);
	assert_int_equal(tsr_store_snap_create(st, "a", "s1", NULL), 0);
	put_data(e, "a", 0, 2 * MiB, 2);
	assert_int_equal(tsr_store_vol_open(st, "a", &v), 0);
	assert_int_equal(strim(v, e->io, 3 * MiB, MiB), 0);
	tsr_svol_put(v);
	memcpy(m2, m1, (VOL_SIZE / BS) * sizeof(*m2));
	set_range(m2, 0, 2 * MiB, 2);
	set_range(m2, 3 * MiB, MiB, 0);
	assert_int_equal(tsr_store_snap_create(st, "a", "s2", NULL), 0);
	put_data(e, "a", MiB, 2 * MiB, 3);
}

static bool listed(struct tsr_vol_info *l, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(l[i].name, name) == 0)
			return true;
	return false;
}

/* Not done yet: the answer came while the rollback was held. */
#define BEFORE_END(r, what)                                                                        \
	do {                                                                                       \
		if (atomic_load(&(r)->done))                                                       \
			fail_msg("the rollback had not ended when %s answered: it had", what);    \
	} while (0)

static void test_rollback_unlocked(void **state)
{
	struct env *e = *state;
	struct tsr_store *st = e->se.store;
	static uint64_t m1[VOL_SIZE / BS], m2[VOL_SIZE / BS], mb[VOL_SIZE / BS];
	struct tsr_vol_info *vl = NULL, info;
	struct tsr_snap_info *sl = NULL;
	struct tsr_extent *ext = NULL;
	struct tsr_svol *v, *b;
	struct rb r = {.store = st, .vol = "a", .snap = "s1"};
	uint64_t alloc, excl, epoch;
	struct hold h;
	pthread_t t;
	size_t n;

	make_a(e, m1, m2);
	assert_int_equal(tsr_store_vol_create(st, "b", VOL_SIZE, NULL), 0);
	put_data(e, "b", 0, VOL_SIZE, 7);
	set_range(mb, 0, VOL_SIZE, 7);
	epoch = 3;
	assert_int_equal(tsr_store_vol_set_epoch(st, "a", epoch), 0);

	hold_init(&h);
	store_test_rollback_arg = &h;
	store_test_rollback_chunk = hold_here;
	assert_int_equal(pthread_create(&t, NULL, rb_main, &r), 0);
	assert_true(hold_wait_arrived(&h)); /* the rollback is in its data copy */

	/* catalogue reads, of every volume and of a */
	assert_int_equal(tsr_store_vol_list(st, &vl, &n), 0);
	BEFORE_END(&r, "volume list");
	assert_true(listed(vl, n, "a") && listed(vl, n, "b"));
	free(vl);
	assert_int_equal(tsr_store_vol_info(st, "a", &info), 0);
	assert_int_equal(info.size, VOL_SIZE);
	assert_int_equal(tsr_store_snap_list(st, "a", &sl, &n), 0);
	assert_int_equal(n, 2);
	free(sl);
	assert_int_equal(tsr_store_vol_space(st, "b", &alloc, &excl), 0);
	assert_int_equal(tsr_store_allocated(st, &alloc), 0);
	BEFORE_END(&r, "volume info, snapshot list, space");

	/* another volume: open, read, write, snapshot */
	assert_int_equal(tsr_store_vol_open(st, "b", &b), 0);
	BEFORE_END(&r, "the open of b");
	check_image(e, b, mb);
	fill(e->buf, MiB, 8, MiB);
	assert_int_equal(swrite(b, e->io, MiB, MiB, e->buf, TSR_WRITE_FUA), 0);
	set_range(mb, MiB, MiB, 8);
	check_image(e, b, mb);
	tsr_svol_put(b);
	assert_int_equal(tsr_store_snap_create(st, "b", "b1", NULL), 0);
	BEFORE_END(&r, "b's write and snapshot");

	/* a itself: everything that would open or change it is refused */
	assert_true(tsr_store_vol_rollback_running(st, "a"));
	assert_false(tsr_store_vol_rollback_running(st, "b"));
	assert_int_equal(tsr_store_vol_open(st, "a", &v), -EBUSY);
	assert_int_equal(tsr_store_snap_open(st, "a", "s2", &v), -EBUSY);
	assert_int_equal(tsr_store_snap_create(st, "a", "x", NULL), -EBUSY);
	assert_int_equal(tsr_store_snap_delete(st, "a", "s2"), -EBUSY);
	assert_int_equal(tsr_store_vol_delete(st, "a"), -EBUSY);
	assert_int_equal(tsr_store_vol_resize_check(st, "a", 2 * VOL_SIZE), -EBUSY);
	assert_int_equal(tsr_store_vol_resize(st, "a", 2 * VOL_SIZE), -EBUSY);
	assert_int_equal(tsr_store_vol_rollback(st, "a", "s2"), -EBUSY); /* another snapshot */
	/* (to s1, the same one, it would wait: test_rollback_retry_waits) */
	assert_int_equal(tsr_store_vol_set_epoch(st, "a", epoch + 5), -EBUSY);
	assert_int_equal(tsr_store_vol_set_epoch(st, "a", epoch), 0); /* no raise: a check */
	assert_int_equal(tsr_store_vol_set_epoch(st, "a", epoch - 1), -ESTALE);
	assert_int_equal(tsr_store_vol_clone(st, "c", "a", "s1", NULL), -EBUSY);
	assert_int_equal(tsr_store_snap_spare(st, "a", true), -EBUSY);
	assert_int_equal(tsr_store_snap_diff(st, "a", "s1", NULL, &ext, &n), -EBUSY);
	BEFORE_END(&r, "the calls on a");

	hold_release(&h);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_false(h.timed_out);
	assert_int_equal(r.ret, 0);
	assert_true(h.passes >= 2); /* it went on after the hold: in its middle */
	assert_false(tsr_store_vol_rollback_running(st, "a"));

	/* the result: a is s1 block by block, s2 unchanged, nothing else came in */
	assert_int_equal(tsr_store_vol_open(st, "a", &v), 0);
	check_image(e, v, m1);
	assert_int_equal(tsr_svol_epoch(v), epoch); /* the raise was refused */
	tsr_svol_put(v);
	check_vol(e, "a", "s2", m2);
	check_vol(e, "a", "s1", m1);
	assert_int_equal(tsr_store_snap_list(st, "a", &sl, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(sl[0].name, "s1");
	assert_string_equal(sl[1].name, "s2");
	free(sl);
	assert_int_equal(tsr_store_vol_info(st, "a", &info), 0);
	assert_int_equal(info.size, VOL_SIZE);
	assert_int_equal(tsr_store_vol_info(st, "c", &info), -ENOENT);
	/* b: its write and its snapshot */
	check_vol(e, "b", NULL, mb);
	/* a works as before: rollback to s2 (unheld), then its image */
	store_test_rollback_chunk = NULL;
	assert_int_equal(tsr_store_vol_rollback(st, "a", "s2"), 0);
	check_vol(e, "a", NULL, m2);
}

/*
 * A delete of s2, queued to the merge thread while a was open (held by
 * store_test_merge_hook), finishes while the rollback of a to s1 is held in
 * its middle: the merge publishes a's chain without s2, a layer the rollback
 * loaded (its bits say which blocks to rewrite).  The layer must stay mapped
 * until the rollback ends (chain_publish retires it); the rollback's result
 * is s1's image, and s3's image is unchanged.
 */
static void test_rollback_merge_publish(void **state)
{
	struct env *e = *state;
	struct tsr_store *st = e->se.store;
	static uint64_t m1[VOL_SIZE / BS], m2[VOL_SIZE / BS], m3[VOL_SIZE / BS];
	struct rb r = {.store = st, .vol = "a", .snap = "s1"};
	struct tsr_snap_info *sl = NULL;
	struct hold hr, hm;
	struct tsr_svol *v;
	pthread_t t;
	size_t n;

	make_a(e, m1, m2);
	/* the head is now m2 with [1M,3M) seed 3: cut s3 there, write again */
	memcpy(m3, m2, sizeof(m3));
	set_range(m3, MiB, 2 * MiB, 3);
	assert_int_equal(tsr_store_snap_create(st, "a", "s3", NULL), 0);
	put_data(e, "a", 2 * MiB, MiB, 4);

	hold_init(&hm);
	store_test_merge_arg = &hm;
	store_test_merge_hook = hold_here;
	assert_int_equal(tsr_store_vol_open(st, "a", &v), 0);
	assert_int_equal(tsr_store_snap_delete(st, "a", "s2"), 0); /* queued: a is open */
	tsr_svol_put(v); /* closed; the merge job keeps a's head */
	assert_true(hold_wait_arrived(&hm)); /* s2's blocks copied into s1, no bit yet */

	hold_init(&hr);
	store_test_rollback_arg = &hr;
	store_test_rollback_chunk = hold_here;
	assert_int_equal(pthread_create(&t, NULL, rb_main, &r), 0);
	assert_true(hold_wait_arrived(&hr));

	hold_release(&hm); /* the merge ends and drops s2 from a's chain */
	store_test_merges_idle(st);
	BEFORE_END(&r, "the merge");
	assert_false(hm.timed_out);
	/* the layer's memory is touched again by the rollback from here */
	hold_release(&hr);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_false(hr.timed_out);
	assert_int_equal(r.ret, 0);
	store_test_merge_hook = NULL;

	check_vol(e, "a", NULL, m1);
	check_vol(e, "a", "s3", m3);
	check_vol(e, "a", "s1", m1);
	assert_int_equal(tsr_store_snap_list(st, "a", &sl, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(sl[0].name, "s1");
	assert_string_equal(sl[1].name, "s3");
	free(sl);
}

/*
 * R1 (review 16b): admin_rollback_fenced of R1 = set_epoch(E), rollback,
 * set_epoch(E).  A retry R2 of the same rollback starts between R1's store
 * call and its second fence check and is held in its data copy: that check
 * (the epoch unchanged) answers 0, not -EBUSY (a finished copy reported as
 * failed, "run the rollback again").
 */
static void test_fence_check_during_retry(void **state)
{
	struct env *e = *state;
	struct tsr_store *st = e->se.store;
	static uint64_t m1[VOL_SIZE / BS], m2[VOL_SIZE / BS];
	struct rb r2 = {.store = st, .vol = "a", .snap = "s1"};
	const uint64_t epoch = 3;
	struct tsr_svol *v;
	struct hold h;
	pthread_t t;
	int second;

	make_a(e, m1, m2);
	assert_int_equal(tsr_store_vol_set_epoch(st, "a", epoch), 0);

	/* R1's first two calls */
	assert_int_equal(tsr_store_vol_set_epoch(st, "a", epoch), 0);
	assert_int_equal(tsr_store_vol_rollback(st, "a", "s1"), 0);

	/* R2, the client's retry, held in its data copy */
	hold_init(&h);
	store_test_rollback_arg = &h;
	store_test_rollback_chunk = hold_here;
	assert_int_equal(pthread_create(&t, NULL, rb_main, &r2), 0);
	assert_true(hold_wait_arrived(&h));

	second = tsr_store_vol_set_epoch(st, "a", epoch); /* R1's last call */
	BEFORE_END(&r2, "R1's second fence check");
	hold_release(&h);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_false(h.timed_out);
	assert_int_equal(r2.ret, 0);
	store_test_rollback_chunk = NULL;
	if (second != 0)
		fail_msg("R1's second fence check (set_epoch %llu, epoch unchanged) answered %d "
			 "(%s) while R2 ran",
			 (unsigned long long)epoch, second, strerror(-second));
	assert_int_equal(tsr_store_vol_open(st, "a", &v), 0);
	check_image(e, v, m1);
	assert_int_equal(tsr_svol_epoch(v), epoch);
	tsr_svol_put(v);
}

/* store_test_rollback_wait: a rollback began waiting for another one */
static atomic_int waiters;

static void note_wait(void *arg)
{
	(void)arg;
	atomic_fetch_add(&waiters, 1);
}

/*
 * R2 (review 16b): R1 = rollback(a, s1) held in its data copy.  R2 =
 * rollback(a, s1) (a client's retry, on another thread) waits for R1's end
 * instead of answering -EBUSY; meanwhile rollback(a, s2) answers -EBUSY at
 * once.  Released: R1 and R2 both answer 0 and a is s1's image, s2's
 * unchanged, the row's VOL_ROLLBACK cleared (a opens).
 */
static void test_rollback_retry_waits(void **state)
{
	struct env *e = *state;
	struct tsr_store *st = e->se.store;
	static uint64_t m1[VOL_SIZE / BS], m2[VOL_SIZE / BS];
	struct rb r1 = {.store = st, .vol = "a", .snap = "s1"};
	struct rb r2 = {.store = st, .vol = "a", .snap = "s1"};
	const struct timespec ms = {.tv_nsec = 1000000};
	struct tsr_svol *v;
	struct hold h;
	pthread_t t1, t2;
	int i;

	make_a(e, m1, m2);
	hold_init(&h);
	store_test_rollback_arg = &h;
	store_test_rollback_chunk = hold_here;
	atomic_store(&waiters, 0);
	store_test_rollback_wait = note_wait;
	assert_int_equal(pthread_create(&t1, NULL, rb_main, &r1), 0);
	assert_true(hold_wait_arrived(&h)); /* R1 in its data copy */

	assert_int_equal(pthread_create(&t2, NULL, rb_main, &r2), 0);
	/* R2 answers or starts waiting (bounded, a guard only) */
	for (i = 0; i < 2 * HOLD_LIMIT_S * 1000; i++) {
		if (atomic_load(&r2.done) || atomic_load(&waiters) > 0)
			break;
		nanosleep(&ms, NULL);
	}
	if (atomic_load(&r2.done))
		fail_msg("the retry of the same rollback answered %d (%s) while the first ran "
			 "(want: it waits for its end)",
			 r2.ret, strerror(-r2.ret));
	assert_int_equal(atomic_load(&waiters), 1);
	BEFORE_END(&r1, "R2's wait");
	/* to another snapshot: refused at once, not waiting */
	assert_int_equal(tsr_store_vol_rollback(st, "a", "s2"), -EBUSY);
	assert_int_equal(atomic_load(&waiters), 1);
	BEFORE_END(&r1, "the rollback to s2");
	if (atomic_load(&r2.done))
		fail_msg("the retry answered %d before the first rollback ended", r2.ret);

	hold_release(&h);
	assert_int_equal(pthread_join(t1, NULL), 0);
	assert_int_equal(pthread_join(t2, NULL), 0);
	assert_false(h.timed_out);
	assert_int_equal(r1.ret, 0);
	assert_int_equal(r2.ret, 0);
	assert_true(h.passes >= 2);
	store_test_rollback_chunk = NULL;
	store_test_rollback_wait = NULL;
	assert_false(tsr_store_vol_rollback_running(st, "a"));

	assert_int_equal(tsr_store_vol_open(st, "a", &v), 0); /* VOL_ROLLBACK cleared */
	check_image(e, v, m1);
	tsr_svol_put(v);
	check_vol(e, "a", "s2", m2);
}

struct closer {
	struct tsr_store *store;
	atomic_bool done;
};

static void *close_main(void *arg)
{
	struct closer *c = arg;

	tsr_store_close(c->store);
	atomic_store(&c->done, true);
	return NULL;
}

/* Wait (bounded by 2 * HOLD_LIMIT_S, a guard only) until *flag is set. */
static bool wait_flag(atomic_bool *flag)
{
	const struct timespec ms = {.tv_nsec = 1000000};
	int i;

	for (i = 0; i < 2 * HOLD_LIMIT_S * 1000 && !atomic_load(flag); i++)
		nanosleep(&ms, NULL);
	return atomic_load(flag);
}

/*
 * N4 (review 16d): R1 = rollback(a, s1) held in its data copy, R2 = its
 * retry waiting for R1's end.  tsr_store_close starts (another thread): R2
 * answers -ESHUTDOWN at once, while R1 still runs and the close still
 * waits for it; released, R1 answers 0 and the close completes.  The store
 * opened again: a is s1's image.  With the closing check disabled (the
 * d9da35e behaviour) R2 answers only after R1's hold gives up (HOLD_LIMIT_S)
 * and R1 ends: "the rollback had not ended when R2's answer to the close
 * answered: it had".
 */
static void test_rollback_wait_closing(void **state)
{
	struct env *e = *state;
	struct tsr_store *st = e->se.store;
	static uint64_t m1[VOL_SIZE / BS], m2[VOL_SIZE / BS];
	struct rb r1 = {.store = st, .vol = "a", .snap = "s1"};
	struct rb r2 = {.store = st, .vol = "a", .snap = "s1"};
	struct closer c = {.store = st};
	const struct timespec ms = {.tv_nsec = 1000000};
	struct tsr_svol *v;
	struct hold h;
	pthread_t t1, t2, tc;
	int i;

	make_a(e, m1, m2);
	hold_init(&h);
	store_test_rollback_arg = &h;
	store_test_rollback_chunk = hold_here;
	atomic_store(&waiters, 0);
	store_test_rollback_wait = note_wait;
	assert_int_equal(pthread_create(&t1, NULL, rb_main, &r1), 0);
	assert_true(hold_wait_arrived(&h)); /* R1 in its data copy */
	assert_int_equal(pthread_create(&t2, NULL, rb_main, &r2), 0);
	for (i = 0; i < 2 * HOLD_LIMIT_S * 1000 && atomic_load(&waiters) == 0 &&
		    !atomic_load(&r2.done); i++)
		nanosleep(&ms, NULL);
	assert_int_equal(atomic_load(&waiters), 1); /* R2 waits */
	assert_false(atomic_load(&r2.done));

	e->se.store = NULL; /* closed here, not by teardown */
	assert_int_equal(pthread_create(&tc, NULL, close_main, &c), 0);
	if (!wait_flag(&r2.done))
		fail_msg("the waiting retry did not answer when the store started closing");
	BEFORE_END(&r1, "R2's answer to the close");
	assert_int_equal(r2.ret, -ESHUTDOWN);
	assert_false(atomic_load(&c.done)); /* the close waits for R1's copy */

	hold_release(&h);
	assert_int_equal(pthread_join(t1, NULL), 0);
	assert_int_equal(pthread_join(t2, NULL), 0);
	assert_int_equal(pthread_join(tc, NULL), 0);
	assert_true(atomic_load(&c.done));
	assert_false(h.timed_out);
	assert_int_equal(r1.ret, 0);
	store_test_rollback_chunk = NULL;
	store_test_rollback_wait = NULL;

	assert_int_equal(tsr_store_open(e->se.dir, &(struct tsr_store_opts){0}, &e->se.store), 0);
	assert_int_equal(tsr_store_vol_open(e->se.store, "a", &v), 0); /* VOL_ROLLBACK cleared */
	check_image(e, v, m1);
	tsr_svol_put(v);
	check_vol(e, "a", "s2", m2);
}

/*
 * N5 (review 16d): while R1 = rollback(a, s1) is held in its data copy,
 * tsr_store_vol_rollback_nowait(a, s1) and the fenced one answer -EBUSY at
 * once and never wait (store_test_rollback_wait not called).  d9da35e has
 * no such entry point; with the no-wait flag ignored (its waiting call) the
 * call blocks until R1's hold gives up, then runs: "0 != 0xfffffffffffffff0"
 * (0, not -EBUSY).
 */
static void test_rollback_nowait_busy(void **state)
{
	struct env *e = *state;
	struct tsr_store *st = e->se.store;
	static uint64_t m1[VOL_SIZE / BS], m2[VOL_SIZE / BS];
	struct rb r1 = {.store = st, .vol = "a", .snap = "s1"};
	struct tsr_svol *v;
	struct hold h;
	pthread_t t1;

	make_a(e, m1, m2);
	hold_init(&h);
	store_test_rollback_arg = &h;
	store_test_rollback_chunk = hold_here;
	atomic_store(&waiters, 0);
	store_test_rollback_wait = note_wait;
	assert_int_equal(pthread_create(&t1, NULL, rb_main, &r1), 0);
	assert_true(hold_wait_arrived(&h));

	assert_int_equal(tsr_store_vol_rollback_nowait(st, "a", "s1"), -EBUSY);
	BEFORE_END(&r1, "the no-wait rollback");
	assert_int_equal(tsr_store_vol_rollback_epoch_nowait(st, "a", "s1", 0), -EBUSY);
	BEFORE_END(&r1, "the fenced no-wait rollback");
	assert_int_equal(atomic_load(&waiters), 0);

	hold_release(&h);
	assert_int_equal(pthread_join(t1, NULL), 0);
	assert_false(h.timed_out);
	assert_int_equal(r1.ret, 0);
	store_test_rollback_chunk = NULL;
	store_test_rollback_wait = NULL;
	/* nothing runs now: the no-wait one runs (idempotent) */
	assert_int_equal(tsr_store_vol_rollback_nowait(st, "a", "s1"), 0);
	assert_int_equal(tsr_store_vol_open(st, "a", &v), 0);
	check_image(e, v, m1);
	tsr_svol_put(v);
}

/*
 * Session 17 (item 5): the -EBUSY of a rollback's retry to the SAME snapshot
 * is not "another rollback (to another snapshot)".  While R1 = rollback(a, s1)
 * is held: the no-wait retry (a loop's caller) -EBUSY, classified SAME, its
 * sentence says the call did not wait; rollback(a, s2) -EBUSY, OTHER, "another
 * snapshot"; the waiting retry with the wait's bound lowered to 50 ms
 * (store_test_rollback_wait_ms; 30 min otherwise) -EBUSY once the bound
 * passed, SAME, "still runs after this call waited".  Released: NONE, no
 * sentence.  Before (the callers' tsr_store_vol_rollback_running alone), all
 * three said "another rollback ... (to another snapshot)".
 */
static void test_rollback_busy_msg(void **state)
{
	struct env *e = *state;
	struct tsr_store *st = e->se.store;
	static uint64_t m1[VOL_SIZE / BS], m2[VOL_SIZE / BS];
	struct rb r1 = {.store = st, .vol = "a", .snap = "s1"};
	char msg[512];
	struct hold h;
	pthread_t t1;

	make_a(e, m1, m2);
	hold_init(&h);
	store_test_rollback_arg = &h;
	store_test_rollback_chunk = hold_here;
	assert_int_equal(pthread_create(&t1, NULL, rb_main, &r1), 0);
	assert_true(hold_wait_arrived(&h)); /* R1 in its data copy */

	/* the same snapshot, no wait (the loop's callers) */
	assert_int_equal(tsr_store_vol_rollback_nowait(st, "a", "s1"), -EBUSY);
	assert_int_equal(tsr_store_vol_rollback_busy(st, "a", "s1"), TSR_ROLLBACK_BUSY_SAME);
	assert_true(tsr_store_rollback_busy_msg(st, "a", "s1", true, msg, sizeof(msg)));
	if (strstr(msg, "another snapshot") || !strstr(msg, "same snapshot 's1'") ||
	    !strstr(msg, "does not wait"))
		fail_msg("the no-wait retry's -EBUSY reads: %s", msg);
	/* another snapshot */
	assert_int_equal(tsr_store_vol_rollback(st, "a", "s2"), -EBUSY);
	assert_int_equal(tsr_store_vol_rollback_busy(st, "a", "s2"), TSR_ROLLBACK_BUSY_OTHER);
	assert_true(tsr_store_rollback_busy_msg(st, "a", "s2", false, msg, sizeof(msg)));
	if (!strstr(msg, "another rollback of this copy (to another snapshot)"))
		fail_msg("the rollback to s2's -EBUSY reads: %s", msg);
	/* the same snapshot, waiting past the bound */
	store_test_rollback_wait_ms = 50;
	assert_int_equal(tsr_store_vol_rollback(st, "a", "s1"), -EBUSY);
	BEFORE_END(&r1, "the bounded wait");
	assert_true(tsr_store_rollback_busy_msg(st, "a", "s1", false, msg, sizeof(msg)));
	if (strstr(msg, "another snapshot") || !strstr(msg, "same snapshot 's1'") ||
	    !strstr(msg, "still runs after this call waited"))
		fail_msg("the retry's -EBUSY past the wait's bound reads: %s", msg);

	hold_release(&h);
	assert_int_equal(pthread_join(t1, NULL), 0);
	assert_false(h.timed_out);
	assert_int_equal(r1.ret, 0);
	store_test_rollback_chunk = NULL;
	assert_int_equal(tsr_store_vol_rollback_busy(st, "a", "s1"), TSR_ROLLBACK_BUSY_NONE);
	msg[0] = '\0';
	assert_false(tsr_store_rollback_busy_msg(st, "a", "s1", true, msg, sizeof(msg)));
	assert_string_equal(msg, "");
	check_vol(e, "a", NULL, m1);
}

/* The process's open descriptors whose path names uuid (a layer's files). */
static int fds_naming(const char *uuid)
{
	char path[PATH_MAX], link[PATH_MAX];
	struct dirent *d;
	DIR *dir = opendir("/proc/self/fd");
	int n = 0;
	ssize_t len;

	assert_non_null(dir);
	while ((d = readdir(dir))) {
		snprintf(path, sizeof(path), "/proc/self/fd/%s", d->d_name);
		len = readlink(path, link, sizeof(link) - 1);
		if (len <= 0)
			continue;
		link[len] = '\0';
		if (strstr(link, uuid))
			n++;
	}
	closedir(dir);
	return n;
}

/* store_test_merge_hook: the first two passes held, on h[0] then h[1] */
struct holds2 {
	struct hold *h[2];
	atomic_int n;
};

static void hold_nth(void *arg)
{
	struct holds2 *m = arg;
	int i = atomic_fetch_add(&m->n, 1);

	if (i < 2)
		hold_here(m->h[i]);
}

/*
 * L1 (review 16b): deletes of s2 and s3 queued while a is open (two merge
 * jobs, each holding a ref on a's head); job 1 held, then the rollback of a
 * to s1 held in its copy; job 1 released: it drops s2 from a's chain, retired
 * (rollback_running); job 2 held.  The rollback then ends while job 2 still
 * holds its ref: s2's layer must be closed by then (no descriptor of it left),
 * not kept until a's last ref goes.  Then a is s1's image.
 */
static void test_rollback_retired_closed(void **state)
{
	struct env *e = *state;
	struct tsr_store *st = e->se.store;
	static uint64_t m1[VOL_SIZE / BS], m2[VOL_SIZE / BS];
	struct rb r = {.store = st, .vol = "a", .snap = "s1"};
	struct tsr_snap_info *sl = NULL;
	struct holds2 mh = {0};
	struct hold hr, hm1, hm2;
	char s2uuid[37];
	struct tsr_svol *v;
	pthread_t t;
	size_t n;
	int left;

	make_a(e, m1, m2);
	assert_int_equal(tsr_store_snap_create(st, "a", "s3", NULL), 0);
	put_data(e, "a", 2 * MiB, MiB, 4);
	assert_int_equal(tsr_store_snap_list(st, "a", &sl, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(sl[1].name, "s2");
	snprintf(s2uuid, sizeof(s2uuid), "%s", sl[1].uuid);
	free(sl);

	hold_init(&hm1);
	hold_init(&hm2);
	mh.h[0] = &hm1;
	mh.h[1] = &hm2;
	store_test_merge_arg = &mh;
	store_test_merge_hook = hold_nth;
	assert_int_equal(tsr_store_vol_open(st, "a", &v), 0);
	assert_int_equal(tsr_store_snap_delete(st, "a", "s2"), 0); /* job 1 */
	assert_int_equal(tsr_store_snap_delete(st, "a", "s3"), 0); /* job 2 */
	tsr_svol_put(v);
	assert_true(hold_wait_arrived(&hm1));

	hold_init(&hr);
	store_test_rollback_arg = &hr;
	store_test_rollback_chunk = hold_here;
	assert_int_equal(pthread_create(&t, NULL, rb_main, &r), 0);
	assert_true(hold_wait_arrived(&hr));
	hold_release(&hm1);                   /* job 1 publishes a's chain without s2 */
	assert_true(hold_wait_arrived(&hm2)); /* job 2 (its ref on a) held */
	BEFORE_END(&r, "job 1's publish");
	assert_true(fds_naming(s2uuid) > 0); /* retired, still open: the rollback reads it */

	hold_release(&hr);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_false(hr.timed_out);
	assert_int_equal(r.ret, 0);
	left = fds_naming(s2uuid);
	hold_release(&hm2);
	store_test_merges_idle(st);
	assert_false(hm1.timed_out);
	assert_false(hm2.timed_out);
	store_test_merge_hook = NULL;
	store_test_rollback_chunk = NULL;
	if (left)
		fail_msg("s2's layer is still open after the rollback ended: %d descriptors", left);

	check_vol(e, "a", NULL, m1);
	assert_int_equal(tsr_store_snap_list(st, "a", &sl, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(sl[0].name, "s1");
	free(sl);
	check_vol(e, "a", "s1", m1);
}

/*
 * I2 (review 16b): admin_rollback_fenced checks its fence (set_epoch E), then
 * starts the rollback; a newer coordinator's OPEN raising the epoch in
 * between must make the rollback refuse at its start: -ESTALE, a unchanged.
 */
static void test_rollback_epoch_fenced(void **state)
{
	struct env *e = *state;
	struct tsr_store *st = e->se.store;
	static uint64_t m1[VOL_SIZE / BS], m2[VOL_SIZE / BS], mh[VOL_SIZE / BS];
	struct tsr_svol *v;
	int ret;

	make_a(e, m1, m2);
	memcpy(mh, m2, sizeof(mh));
	set_range(mh, MiB, 2 * MiB, 3); /* the head: make_a's last write */
	assert_int_equal(tsr_store_vol_set_epoch(st, "a", 3), 0); /* the fence check */
	assert_int_equal(tsr_store_vol_set_epoch(st, "a", 4), 0); /* a newer OPEN */
	ret = tsr_store_vol_rollback_epoch(st, "a", "s1", 3);
	if (ret != -ESTALE)
		fail_msg("a rollback fenced at epoch 3 ran after epoch 4 was accepted: %d", ret);
	assert_int_equal(tsr_store_vol_open(st, "a", &v), 0); /* no VOL_ROLLBACK left */
	check_image(e, v, mh);
	tsr_svol_put(v);
	/* at the row's epoch (or without a fence) it runs */
	assert_int_equal(tsr_store_vol_rollback_epoch(st, "a", "s1", 4), 0);
	assert_int_equal(tsr_store_vol_open(st, "a", &v), 0);
	check_image(e, v, m1);
	assert_int_equal(tsr_svol_epoch(v), 4);
	tsr_svol_put(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_rollback_unlocked, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rollback_merge_publish, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fence_check_during_retry, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rollback_retry_waits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rollback_retired_closed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rollback_epoch_fenced, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rollback_wait_closing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rollback_nowait_busy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rollback_busy_msg, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
