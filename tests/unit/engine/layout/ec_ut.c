/*
 * Unit tests of the erasure-coded layout (engine/layout/ec*.c) against real
 * chunk copies in one process (mirror_test.h): k+m nodes, each a store
 * served by a peer server over 127.0.0.1 TCP, the layout on its own home
 * worker.  Every test checks what the layout reads back against a model of
 * the volume, and the chunk volumes themselves, read straight from the
 * nodes' data files: every stripe's data chunks equal the model and every
 * choice of k chunks decodes to the same stripe.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "mirror_test.h"
#include "tessera/ec.h"

#define KiB  1024ull
#define MiB  (1024ull * 1024)
#define VOL  (4 * MiB)
#define MAXN 7

/* Internal knobs (engine/store/stage.c, engine/layout/ec_io.c): small
 * thresholds so the journal test rolls generations within seconds. */
extern uint64_t store_stage_roll_bytes;
void stage_commit_counters(struct tsr_svol *svol, uint64_t *from_memory, uint64_t *read_back);
extern uint64_t ec_drain_txns;

struct env {
	struct node nodes[MAXN];
	unsigned k, m, n;
	uint32_t unit;
	uint64_t chunk_size;
	struct tsr_worker *home;
	char state_dir[512];
	uint8_t *model; /* what the volume must contain */
	uint8_t *buf;
	uint8_t *chunkvols[MAXN]; /* nodes' chunk volumes, read back */
	struct tsr_layout *l;
	struct tsr_ec_codec *codec;
	uint64_t rng;
};

static uint64_t rnd(struct env *e)
{
	e->rng ^= e->rng << 13;
	e->rng ^= e->rng >> 7;
	e->rng ^= e->rng << 17;
	return e->rng;
}

static int env_setup(void **state, unsigned k, unsigned m, uint32_t unit)
{
	struct env *e = calloc(1, sizeof(*e));

	e->k = k;
	e->m = m;
	e->n = k + m;
	e->unit = unit;
	e->chunk_size = tsr_ec_chunk_volume_size(VOL, k, unit);
	e->rng = 0x9e3779b97f4a7c15ull;
	for (unsigned i = 0; i < e->n; i++)
		if (node_init(&e->nodes[i], i, e->chunk_size) < 0)
			return -1;
	e->home = start_worker_or_skip(1);
	if (scratch_dir(e->state_dir, sizeof(e->state_dir)) < 0)
		return -1;
	e->model = calloc(1, VOL);
	e->buf = tsr_alloc_aligned(VOL);
	for (unsigned i = 0; i < e->n; i++)
		e->chunkvols[i] = malloc(e->chunk_size);
	if (tsr_ec_codec_create(k, m, &e->codec) < 0)
		return -1;
	log_reset();
	*state = e;
	return 0;
}

static int setup_2p1(void **state)
{
	return env_setup(state, 2, 1, 16 * KiB);
}

static int setup_4p2(void **state)
{
	return env_setup(state, 4, 2, 64 * KiB);
}

static int teardown(void **state)
{
	struct env *e = *state;

	tsr_layout_destroy(e->l);
	hooks_settle();
	tsr_worker_stop(e->home);
	for (unsigned i = 0; i < e->n; i++) {
		node_fini(&e->nodes[i]);
		free(e->chunkvols[i]);
	}
	rm_rf(e->state_dir);
	free(e->model);
	tsr_free_aligned(e->buf);
	tsr_ec_codec_destroy(e->codec);
	free(e);
	return 0;
}

/* Options: copy i on node i; copy 0 local when local. */
static void opts_init(struct env *e, struct tsr_ec_opts *o, bool local, uint64_t epoch)
{
	memset(o, 0, sizeof(*o));
	o->name = VOLNAME;
	o->size = VOL;
	o->k = e->k;
	o->m = e->m;
	o->stripe_unit = e->unit;
	o->epoch = epoch;
	o->store = e->nodes[0].store;
	o->state_dir = e->state_dir;
	o->home = e->home;
	o->node_id = "node0";
	o->token = TOKEN;
	o->n_copies = e->n;
	o->peer_timeout_ms = 10000; /* a stopped node resets its connections at once */
	o->write_wait_ms = 3000;
	o->region_size = e->unit; /* one stripe per dirty region */
	o->hooks.set_copy_state = test_set_copy_state;
	for (unsigned i = 0; i < e->n; i++) {
		struct tsr_layout_copy *c = &o->copies[i];

		snprintf(c->node_id, sizeof(c->node_id), "%s", e->nodes[i].node_id);
		snprintf(c->address, sizeof(c->address), "%s", e->nodes[i].address);
		c->local = local && i == 0;
		c->state = TSR_COPY_IN_SYNC;
	}
}

static int create(struct env *e, bool local, uint64_t epoch)
{
	struct tsr_ec_opts o;

	opts_init(e, &o, local, epoch);
	return tsr_layout_ec_create(&o, &e->l);
}

static int lwrite(struct env *e, uint64_t off, uint32_t len, uint64_t seed)
{
	fill(e->buf, len, seed, off);
	memcpy(e->model + off, e->buf, len);
	return ldo(e->home, e->l, D_WRITE, off, len, e->buf, 0);
}

/* Random writes: full stripes, partial ones, several stripes, unaligned to stripes. */
static void random_writes(struct env *e, unsigned count, uint64_t seed)
{
	uint64_t width = (uint64_t)e->k * e->unit;

	for (unsigned i = 0; i < count; i++) {
		uint64_t off, len;

		switch (rnd(e) % 4) {
		case 0: /* full stripes */
			off = (rnd(e) % (VOL / width)) * width;
			len = width * (1 + rnd(e) % 3);
			break;
		case 1: /* inside one chunk */
			off = (rnd(e) % (VOL / BS)) * BS;
			len = BS * (1 + rnd(e) % (e->unit / BS));
			break;
		default: /* anything */
			off = (rnd(e) % (VOL / BS)) * BS;
			len = BS * (1 + rnd(e) % 96);
			break;
		}
		if (off >= VOL)
			off = VOL - BS;
		if (off + len > VOL)
			len = VOL - off;
		assert_int_equal(lwrite(e, off, (uint32_t)len, seed + i), 0);
	}
}

static void assert_reads_equal_model(struct env *e)
{
	for (uint64_t off = 0; off < VOL; off += MiB) {
		memset(e->buf, 0xee, MiB);
		assert_int_equal(ldo(e->home, e->l, D_READ, off, MiB, e->buf, 0), 0);
		if (memcmp(e->buf, e->model + off, MiB) != 0) {
			for (uint64_t b = 0; b < MiB / BS; b++)
				if (memcmp(e->buf + b * BS, e->model + off + b * BS, BS) != 0) {
					print_message("read differs at volume block %llu\n",
						      (unsigned long long)((off + b * BS) / BS));
					break;
				}
			fail();
		}
	}
}

static void load_chunkvols(struct env *e)
{
	for (unsigned i = 0; i < e->n; i++)
		assert_int_equal(node_read_all(&e->nodes[i], e->chunkvols[i], e->chunk_size), 0);
}

/* Stripe s's chunk p, from the chunk volume of the copy that holds it. */
static uint8_t *chunk(struct env *e, uint64_t s, unsigned p)
{
	return e->chunkvols[tsr_ec_copy_of(s, p, e->k, e->m)] + s * e->unit;
}

/*
 * Every stripe: data chunks equal the model (want_model) and every choice
 * of k chunks decodes to the same k+m chunks.  Returns stripes checked.
 */
static void assert_stripes_consistent(struct env *e, bool want_model)
{
	uint64_t stripes = tsr_ec_stripes(VOL, e->k, e->unit);
	uint64_t width = (uint64_t)e->k * e->unit;
	uint8_t *scratch = tsr_alloc_aligned((size_t)e->n * e->unit);
	uint8_t *ptr[MAXN];

	load_chunkvols(e);
	for (unsigned p = 0; p < e->n; p++)
		ptr[p] = scratch + (size_t)p * e->unit;
	for (uint64_t s = 0; s < stripes; s++) {
		if (want_model)
			for (unsigned d = 0; d < e->k; d++) {
				uint64_t voff = s * width + (uint64_t)d * e->unit;

				if (voff >= VOL)
					continue;
				if (memcmp(chunk(e, s, d), e->model + voff, e->unit) != 0) {
					print_message(
					    "stripe %llu data chunk %u (copy %u) != model\n",
					    (unsigned long long)s, d,
					    tsr_ec_copy_of(s, d, e->k, e->m));
					fail();
				}
			}
		/* every subset of k present chunks */
		for (uint32_t present = 0; present < (1u << e->n); present++) {
			uint32_t want = ((1u << e->n) - 1) & ~present;

			if ((unsigned)__builtin_popcount(present) != e->k)
				continue;
			for (unsigned p = 0; p < e->n; p++) {
				if (present & (1u << p))
					memcpy(ptr[p], chunk(e, s, p), e->unit);
				else
					memset(ptr[p], 0x5a, e->unit);
			}
			assert_int_equal(tsr_ec_decode(e->codec, e->unit, ptr, present, want), 0);
			for (unsigned p = 0; p < e->n; p++)
				if (memcmp(ptr[p], chunk(e, s, p), e->unit) != 0) {
					print_message(
					    "stripe %llu: chunk %u decoded from %#x differs\n",
					    (unsigned long long)s, p, present);
					fail();
				}
		}
	}
	tsr_free_aligned(scratch);
}

/* The status after what the test just did (published on the 20 ms tick). */
static void get_status(struct env *e, struct tsr_layout_status *s)
{
	usleep(60 * 1000);
	tsr_layout_get_status(e->l, s);
}

static bool wait_status(struct env *e, bool (*pred)(const struct tsr_layout_status *), unsigned ms)
{
	return layout_wait(e->l, pred, ms);
}

/*
 * Copy idx's node is back: tell the layout (tsr_layout_copy_returned), and
 * tell it again every second while that copy is out of sync and not
 * connected, as the cluster's tick does (CLUSTER_RETURN_BACKOFF_SEC): one
 * reconnect that timed out under load (300 ms peer timeouts here; CI run
 * 17c, test_attach_fails_after_roll_forward) is not the end of the return.
 * True once every copy is in sync within ms.
 */
static bool returned_in_sync(struct env *e, unsigned idx, unsigned ms)
{
	uint64_t end = mono_ms() + ms, next = 0;
	struct tsr_layout_status s;

	do {
		tsr_layout_get_status(e->l, &s);
		if (all_in_sync(&s))
			return true;
		if (mono_ms() >= next && idx < s.n_copies &&
		    s.copies[idx].state == TSR_COPY_OUT_OF_SYNC && !s.copies[idx].connected) {
			tsr_layout_copy_returned(e->l, idx, e->nodes[idx].address);
			next = mono_ms() + 1000;
		}
		usleep(10000);
	} while (mono_ms() < end);
	return false;
}

static size_t node_stage_count(struct node *n);

/*
 * Let the layout's batched RELEASE go out (EC_RELEASE_MS after the last
 * txn): 400 ms as before, but done as soon as no running node holds a
 * staged txn any more (a write is acknowledged at stage, its commit and
 * release follow).  With a copy away the others keep their stages (they
 * rebuild it later): then the full 400 ms, as the tests' expectations of
 * what the next create finds were written for.
 */
static bool wait_released(struct env *e, unsigned ms)
{
	uint64_t end = mono_ms() + ms;

	do {
		size_t staged = 0;

		for (unsigned i = 0; i < e->n; i++)
			if (e->nodes[i].running && e->nodes[i].store != NULL)
				staged += node_stage_count(&e->nodes[i]);
		if (staged == 0)
			return true;
		usleep(10000);
	} while (mono_ms() < end);
	return false;
}

static void settle(struct env *e)
{
	wait_released(e, 400);
}

static bool one_in_sync(const struct tsr_layout_status *s)
{
	return s->in_sync <= 1;
}

/* ---- round trips ---- */

static void round_trip(struct env *e, bool local)
{
	struct tsr_layout_status s;
	uint64_t width = (uint64_t)e->k * e->unit;

	assert_int_equal(create(e, local, 1), 0);
	assert_true(tsr_layout_is_ec(e->l));
	random_writes(e, 60, 100);
	/* a large write over many stripes, unaligned at both ends */
	assert_int_equal(lwrite(e, width / 2 + BS, (uint32_t)(2 * MiB + 3 * BS), 7), 0);
	/* write_zeroes = writes of zeros; trim accepted and ignored */
	assert_int_equal(ldo(e->home, e->l, D_ZEROES, 3 * BS, 5 * BS, NULL, 0), 0);
	memset(e->model + 3 * BS, 0, 5 * BS);
	assert_int_equal(ldo(e->home, e->l, D_TRIM, 0, MiB, NULL, 0), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	assert_reads_equal_model(e);
	assert_stripes_consistent(e, true);
	get_status(e, &s);
	assert_int_equal(s.in_sync, e->n);
	assert_int_equal(s.ec_k, e->k);
	assert_int_equal(s.ec_m, e->m);
	assert_int_equal(s.stripe_unit, e->unit);
	assert_int_equal(s.stripes_total, tsr_ec_stripes(VOL, e->k, e->unit));
	assert_int_equal(s.stripes_degraded, 0);
	assert_int_equal(s.degraded_reads, 0);
	assert_int_equal(s.copy_failures, 0);
	assert_int_equal(s.txn_rolled_forward + s.txn_rolled_back, 0);
	assert_true(s.writes >= 62);
	assert_false(s.fenced);
}

static void test_round_trip_2p1_local(void **state)
{
	round_trip(*state, true);
}

static void test_round_trip_4p2_remote(void **state)
{
	round_trip(*state, false);
}

static uint64_t g_want_reads;

static bool reads_published(const struct tsr_layout_status *s)
{
	return s->reads >= g_want_reads;
}

/* The status once it counts n reads (published by the tick). */
static void status_after_reads(struct env *e, uint64_t n, struct tsr_layout_status *s)
{
	g_want_reads = n;
	assert_true(wait_status(e, reads_published, 5000));
	get_status(e, s);
}

/* Reads of the local copy's chunks go through its page cache (cached_reads,
 * published as the status's); tsr_layout_read_direct returns the same data
 * from the disks (ecopy_read_direct) and is not counted there (the site
 * server's failback digests read so). */
static void test_read_direct_2p1_local(void **state)
{
	struct env *e = *state;
	struct tsr_layout_status s;
	uint32_t len = 8 * (uint32_t)(e->k * e->unit); /* 8 stripes: chunks on every copy */
	struct tsr_svol_stats ss;
	struct tsr_svol *v;
	uint64_t cached;

	assert_int_equal(create(e, true, 1), 0);
	assert_int_equal(lwrite(e, 0, len, 9), 0);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	status_after_reads(e, 0, &s);
	assert_int_equal(s.cached_reads, 0);

	memset(e->buf, 0, len);
	assert_int_equal(ldo(e->home, e->l, D_READ, 0, len, e->buf, 0), 0);
	assert_memory_equal(e->buf, e->model, len);
	layout_status_after_cached(e->l, 1, &s);
	/* the layout's figure is published by the tick; node 0's store (the
	 * local copy) counts at once: the read has completed, so it is final */
	assert_int_equal(tsr_store_vol_open(e->nodes[0].store, VOLNAME, &v), 0);
	tsr_svol_get_stats(v, &ss);
	cached = ss.cached_reads;
	assert_true(cached >= 1);

	memset(e->buf, 0, len);
	assert_int_equal(ldo(e->home, e->l, D_READ_DIRECT, 0, len, e->buf, 0), 0);
	assert_memory_equal(e->buf, e->model, len);
	tsr_svol_get_stats(v, &ss);
	tsr_svol_put(v);
	assert_int_equal(ss.cached_reads, cached);
	status_after_reads(e, 2, &s);
	assert_int_equal(s.degraded_reads, 0);
}

/* Overlapping writes issued together land in arrival order on every chunk. */
static void test_overlapping_batch(void **state)
{
	struct env *e = *state;
	struct batch *b = calloc(1, sizeof(*b));

	assert_int_equal(create(e, true, 1), 0);
	b->l = e->l;
	b->n = 24;
	for (unsigned i = 0; i < b->n; i++) {
		b->off[i] = (rnd(e) % 64) * BS;
		b->len[i] = (uint32_t)(BS * (1 + rnd(e) % 40));
		b->buf[i] = tsr_alloc_aligned(b->len[i]);
		fill(b->buf[i], b->len[i], 500 + i, b->off[i]);
		memcpy(e->model + b->off[i], b->buf[i], b->len[i]);
	}
	assert_int_equal(batch_run(e->home, b), 0);
	assert_reads_equal_model(e);
	assert_stripes_consistent(e, true);
	for (unsigned i = 0; i < b->n; i++)
		tsr_free_aligned(b->buf[i]);
	free(b);
}

/* More local operations than the home io queue holds: they wait for room. */
static void test_io_queue_full(void **state)
{
	struct env *e = *state;
	struct batch *b = calloc(1, sizeof(*b));
	struct tsr_ec_opts o;

	/* a deep queue at the replicas too: no peer timeout on a slow (sanitizer) build */
	opts_init(e, &o, true, 1);
	o.peer_timeout_ms = 60000;
	assert_int_equal(tsr_layout_ec_create(&o, &e->l), 0);
	b->l = e->l;
	b->n = 64;
	for (unsigned i = 0; i < b->n; i++) {
		b->off[i] = (uint64_t)i * 48 * KiB;
		b->len[i] = (uint32_t)(512 * KiB);
		if (b->off[i] + b->len[i] > VOL)
			b->off[i] = VOL - b->len[i];
		b->buf[i] = tsr_alloc_aligned(b->len[i]);
		fill(b->buf[i], b->len[i], 1000 + i, b->off[i]);
		memcpy(e->model + b->off[i], b->buf[i], b->len[i]);
	}
	assert_int_equal(batch_run(e->home, b), 0);
	/* one read of the whole volume: a piece per chunk, all at once */
	memset(e->buf, 0, VOL);
	assert_int_equal(ldo(e->home, e->l, D_READ, 0, VOL, e->buf, 0), 0);
	assert_memory_equal(e->buf, e->model, VOL);
	assert_stripes_consistent(e, true);
	{
		struct tsr_layout_status s;

		get_status(e, &s);
		assert_int_equal(s.copy_failures, 0);
		assert_int_equal(s.in_sync, e->n);
	}
	for (unsigned i = 0; i < b->n; i++)
		tsr_free_aligned(b->buf[i]);
	free(b);
}

/* ---- the stage journal stays bounded under continuous load ---- */

#define STREAM_DEPTH 12

/* Writes issued from the home worker, a new one from each completion, so
 * some host write is in flight from the first to the last. */
struct stream {
	struct env *e;
	struct tsr_layout *l;
	unsigned total, issued, done, failed, inflight, min_inflight;
	uint64_t off[STREAM_DEPTH];
	uint8_t *buf[STREAM_DEPTH];
	sem_t finished;
};

struct stream_slot {
	struct stream *st;
	unsigned slot;
};

static void stream_issue(struct stream *st, struct tsr_io *io, unsigned slot);

static void stream_cb(void *arg, int status)
{
	struct stream_slot *ss = arg;
	struct stream *st = ss->st;
	unsigned slot = ss->slot;

	free(ss);
	if (status != 0)
		st->failed++;
	st->done++;
	st->inflight--;
	if (st->issued < st->total)
		stream_issue(st, tsr_worker_io(st->e->home), slot);
	else if (st->done == st->total)
		sem_post(&st->finished);
	/* counted only while more writes are still to come */
	if (st->issued < st->total && st->inflight < st->min_inflight)
		st->min_inflight = st->inflight;
}

/* Slot's next write: 4 KiB somewhere in a random stripe (a partial-stripe
 * txn: old data read, 2 participants), the model updated at issue (no two
 * slots write the same block at once: slot-owned block columns). */
static void stream_issue(struct stream *st, struct tsr_io *io, unsigned slot)
{
	struct env *e = st->e;
	struct stream_slot *ss = malloc(sizeof(*ss));
	uint64_t blocks = VOL / BS, off;
	int ret;

	off = ((rnd(e) % (blocks / STREAM_DEPTH)) * STREAM_DEPTH + slot) * BS;
	st->off[slot] = off;
	fill(st->buf[slot], BS, 7000 + st->issued, off);
	memcpy(e->model + off, st->buf[slot], BS);
	ss->st = st;
	ss->slot = slot;
	st->issued++;
	st->inflight++;
	ret = tsr_layout_write(st->l, io, off, BS, st->buf[slot], 0, stream_cb, ss);
	if (ret != 0) {
		free(ss);
		st->failed++;
		st->done++;
		st->inflight--;
		if (st->done == st->total)
			sem_post(&st->finished);
	}
}

static void stream_start(struct tsr_worker *w, void *arg)
{
	struct stream *st = arg;

	for (unsigned i = 0; i < STREAM_DEPTH && st->issued < st->total; i++)
		stream_issue(st, tsr_worker_io(w), i);
}

/* Size of the biggest volumes/<uuid>.stage file in a node's store. */
static uint64_t stage_file_size(const struct node *n)
{
	char path[1024];
	uint64_t biggest = 0;
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/volumes", n->dir);
	d = opendir(path);
	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);
		struct stat st;

		if (len < 6 || strcmp(de->d_name + len - 6, ".stage") != 0)
			continue;
		snprintf(path, sizeof(path), "%s/volumes/%s", n->dir, de->d_name);
		assert_int_equal(stat(path, &st), 0);
		if ((uint64_t)st.st_size > biggest)
			biggest = (uint64_t)st.st_size;
	}
	closedir(d);
	return biggest;
}

/*
 * Many partial-stripe transactions with host writes always in flight: the
 * coordinator's periodic release never finds the journal empty, so only the
 * drain (every ec_drain_txns txns) lets the stores start new generations.
 * Without it each copy's journal would take ~12 KiB per txn it is part of
 * (2000 txns: ~16 MiB); with it the file stays near the roll size plus one
 * drain interval.  Everything reads back as written.
 */
static void test_journal_bounded(void **state)
{
	struct env *e = *state;
	struct stream *st = calloc(1, sizeof(*st));
	uint64_t saved_roll = store_stage_roll_bytes, saved_drain = ec_drain_txns;
	struct tsr_layout_status s;

	store_stage_roll_bytes = 256 * KiB;
	ec_drain_txns = 64;
	assert_int_equal(create(e, true, 1), 0);
	st->e = e;
	st->l = e->l;
	st->total = 2000;
	st->min_inflight = STREAM_DEPTH;
	for (unsigned i = 0; i < STREAM_DEPTH; i++)
		st->buf[i] = tsr_alloc_aligned(BS);
	sem_init(&st->finished, 0, 0);
	assert_int_equal(tsr_worker_send(e->home, stream_start, st), 0);
	assert_int_equal(sem_wait_ms(&st->finished, 300000), 0);
	assert_int_equal(st->failed, 0);
	assert_int_equal(st->done, st->total);
	/* host writes never all finished before the last was issued */
	assert_true(st->min_inflight >= STREAM_DEPTH - 1);
	for (unsigned i = 0; i < e->n; i++) {
		uint64_t sz = stage_file_size(&e->nodes[i]);

		struct tsr_svol *v;
		uint64_t mem, rd;

		print_message("node %u: stage journal %llu KiB\n", i, (unsigned long long)(sz / KiB));
		assert_true(sz > 0);
		assert_true(sz <= 3 * MiB);
		/* the commits wrote the bytes kept since the stage, local copy
		 * and remote ones alike (a re-issued commit may read the file) */
		assert_int_equal(tsr_store_vol_open(e->nodes[i].store, VOLNAME, &v), 0);
		stage_commit_counters(v, &mem, &rd);
		tsr_svol_put(v);
		print_message("node %u: commits from memory %llu, read back %llu\n", i,
			      (unsigned long long)mem, (unsigned long long)rd);
		assert_true(mem > 0);
		assert_true(rd < mem);
	}
	assert_reads_equal_model(e);
	assert_stripes_consistent(e, true);
	get_status(e, &s);
	assert_int_equal(s.copy_failures, 0);
	assert_int_equal(s.in_sync, e->n);
	store_stage_roll_bytes = saved_roll;
	ec_drain_txns = saved_drain;
	sem_destroy(&st->finished);
	for (unsigned i = 0; i < STREAM_DEPTH; i++)
		tsr_free_aligned(st->buf[i]);
	free(st);
}

/* ---- degraded reads ---- */

static bool degraded(const struct tsr_layout_status *s)
{
	return s->in_sync < s->n_copies;
}

static void test_degraded_reads(void **state)
{
	struct env *e = *state;
	struct tsr_layout_status s;

	assert_int_equal(create(e, false, 1), 0);
	random_writes(e, 40, 200);
	/* one copy away */
	node_stop(&e->nodes[1]);
	assert_reads_equal_model(e);
	assert_true(wait_status(e, degraded, 5000));
	get_status(e, &s);
	assert_int_equal(s.in_sync, e->n - 1);
	assert_true(s.degraded_reads > 0);
	assert_int_equal(s.stripes_degraded, s.stripes_total);
	/* m copies away: still every byte */
	node_stop(&e->nodes[4]);
	assert_reads_equal_model(e);
	get_status(e, &s);
	assert_int_equal(s.in_sync, e->n - 2);
	assert_int_equal(s.copy_failures, 2);
	/* a read error on a chunk (not the connection): decoded, copy stays in sync */
}

/* ---- degraded writes, return, resync ---- */

/* Stripes where copy c holds a chunk one of the writes changes (data chunk
 * touched, or parity). */
static uint64_t missed_chunks(struct env *e, const uint64_t *off, const uint64_t *len, unsigned n,
			      unsigned c)
{
	uint64_t width = (uint64_t)e->k * e->unit, stripes = tsr_ec_stripes(VOL, e->k, e->unit);
	uint8_t *hit = calloc(stripes, 1);
	uint64_t count = 0;

	for (unsigned i = 0; i < n; i++)
		for (uint64_t b = off[i]; b < off[i] + len[i]; b += BS) {
			uint64_t s = b / width;
			unsigned d = (unsigned)((b % width) / e->unit);
			unsigned p = tsr_ec_position_of(s, c, e->k, e->m);

			if (p == d || p >= e->k)
				hit[s] = 1;
		}
	for (uint64_t s = 0; s < stripes; s++)
		count += hit[s];
	free(hit);
	return count;
}

static void test_degraded_writes_resync(void **state)
{
	struct env *e = *state;
	struct tsr_layout_status s;
	uint64_t before;

	assert_int_equal(create(e, true, 1), 0);
	random_writes(e, 30, 300);
	settle(e); /* acknowledged at stage: let the last commits land before the copies go */
	node_stop(&e->nodes[2]);
	node_stop(&e->nodes[5]);
	/* writes go on with k+m-2 = k copies: partial and full stripes (7 stripes) */
	assert_int_equal(lwrite(e, 256 * KiB, 256 * KiB, 30), 0); /* stripe 1, whole */
	assert_int_equal(lwrite(e, 64 * KiB, 256 * KiB, 31), 0);  /* stripes 0 and 1 */
	assert_int_equal(lwrite(e, 1 * MiB + 8 * KiB, 12 * KiB, 32), 0);
	assert_int_equal(lwrite(e, 3 * MiB - 4 * KiB, 12 * KiB, 33), 0);
	assert_int_equal(lwrite(e, 2 * MiB + 68 * KiB, 4 * KiB, 34), 0);
	assert_reads_equal_model(e);
	get_status(e, &s);
	assert_int_equal(s.in_sync, e->n - 2);
	assert_int_equal(g_log.state[2], TSR_COPY_OUT_OF_SYNC);
	assert_int_equal(g_log.state[5], TSR_COPY_OUT_OF_SYNC);
	assert_true(s.copies[2].dirty_bytes > 0);
	assert_true(s.copies[2].dirty_bytes < e->chunk_size);
	before = s.resync_bytes_copied;
	/* they come back: resync only the stripes written meanwhile */
	node_run(&e->nodes[2], 0);
	node_run(&e->nodes[5], 0);
	tsr_layout_copy_returned(e->l, 2, e->nodes[2].address);
	assert_true(returned_in_sync(e, 5, 20000));
	get_status(e, &s);
	assert_true(s.resync_bytes_copied > before);
	/* invariant 7: only the chunks the writes while away changed on those copies */
	{
		uint64_t w_off[] = {256 * KiB, 64 * KiB, 1 * MiB + 8 * KiB, 3 * MiB - 4 * KiB,
				    2 * MiB + 68 * KiB};
		uint64_t w_len[] = {256 * KiB, 256 * KiB, 12 * KiB, 12 * KiB, 4 * KiB};

		assert_int_equal(
		    s.resync_bytes_copied - before,
		    (missed_chunks(e, w_off, w_len, 5, 2) + missed_chunks(e, w_off, w_len, 5, 5)) *
			e->unit);
	}
	assert_int_equal(s.stripes_rebuilding, 0);
	assert_int_equal(s.stripes_degraded, 0);
	assert_int_equal(g_log.state[2], TSR_COPY_IN_SYNC);
	assert_int_equal(g_log.state[5], TSR_COPY_IN_SYNC);
	/* every chunk volume consistent again, and writes reach all copies */
	assert_stripes_consistent(e, true);
	random_writes(e, 10, 400);
	assert_reads_equal_model(e);
	assert_stripes_consistent(e, true);
}

/* A copy recorded out of sync at attach: its bitmap file is loaded and only
 * the chunks written while it was away are rebuilt. */
static void test_resync_at_create(void **state)
{
	struct env *e = *state;
	struct tsr_ec_opts o;
	struct tsr_layout_status s;
	uint64_t w_off[] = {8 * KiB, 1 * MiB, 2 * MiB + 300 * KiB};
	uint64_t w_len[] = {4 * KiB, 256 * KiB, 12 * KiB};

	assert_int_equal(create(e, true, 1), 0);
	random_writes(e, 20, 110);
	settle(e); /* released everywhere: an older txn left on a copy is rebuilt */
	node_stop(&e->nodes[4]);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(lwrite(e, w_off[i], (uint32_t)w_len[i], 111 + i), 0);
	settle(e);
	tsr_layout_destroy(e->l);
	e->l = NULL;
	node_run(&e->nodes[4], 0);
	opts_init(e, &o, true, 2);
	o.copies[4].state = TSR_COPY_OUT_OF_SYNC; /* as the metadata store has it */
	assert_int_equal(tsr_layout_ec_create(&o, &e->l), 0);
	assert_true(wait_status(e, all_in_sync, 20000));
	get_status(e, &s);
	assert_int_equal(s.resync_bytes_copied, missed_chunks(e, w_off, w_len, 3, 4) * e->unit);
	assert_int_equal(g_log.state[4], TSR_COPY_IN_SYNC);
	assert_stripes_consistent(e, true);
	assert_reads_equal_model(e);
}

/* Below min_in_sync: the write waits write_wait_ms, then -EIO. */
static void test_below_min_in_sync(void **state)
{
	struct env *e = *state;
	uint64_t t0;
	int ret;

	assert_int_equal(create(e, true, 1), 0);
	assert_int_equal(lwrite(e, 0, 64 * KiB, 1), 0);
	node_stop(&e->nodes[1]);
	node_stop(&e->nodes[2]);
	assert_true(wait_status(e, one_in_sync, 5000));
	t0 = mono_ms();
	fill(e->buf, 8 * KiB, 2, 0);
	ret = ldo(e->home, e->l, D_WRITE, 0, 8 * KiB, e->buf, 0);
	assert_int_equal(ret, -EIO);
	assert_true(mono_ms() - t0 >= 2000);
	/* reads of the local data chunks still work where they can */
}

/* The metadata store cannot record a failed copy: the writes that missed it fail. */
static void test_hook_failure(void **state)
{
	struct env *e = *state;
	uint64_t width = (uint64_t)e->k * e->unit;
	struct tsr_layout_status s;

	assert_int_equal(create(e, true, 1), 0);
	assert_int_equal(lwrite(e, 0, (uint32_t)width, 1), 0);
	pthread_mutex_lock(&g_log.lock);
	g_log.hook_status = -EIO;
	pthread_mutex_unlock(&g_log.lock);
	node_stop(&e->nodes[2]);
	/* a full stripe touches every chunk, copy 2's too: not acknowledged */
	fill(e->buf, (uint32_t)width, 2, 0);
	assert_int_equal(ldo(e->home, e->l, D_WRITE, 0, width, e->buf, 0), -EIO);
	get_status(e, &s);
	assert_true(s.write_errors >= 1);
	/* once the store answers again, writes are acknowledged */
	pthread_mutex_lock(&g_log.lock);
	g_log.hook_status = 0;
	pthread_mutex_unlock(&g_log.lock);
	assert_int_equal(lwrite(e, width, (uint32_t)width, 3), 0);
	assert_int_equal(g_log.state[2], TSR_COPY_OUT_OF_SYNC);
	/* the failed write may or may not have landed: the model takes what reads back */
	assert_int_equal(ldo(e->home, e->l, D_READ, 0, width, e->buf, 0), 0);
	assert_true(memcmp(e->buf, e->model, width) == 0 || is_filled(e->buf, width, 2, 0));
}

/* ---- an attach whose opens fail or time out ---- */

/* Hooks recorded since log_reset, OUT_OF_SYNC ones for copy idx (or any: -1). */
static unsigned hooks_out_of_sync(int idx)
{
	unsigned n = 0;

	hooks_settle();
	pthread_mutex_lock(&g_log.lock);
	for (unsigned i = 0; i < g_log.n; i++)
		if (g_log.ev[i].kind == EV_HOOK && g_log.ev[i].st == TSR_COPY_OUT_OF_SYNC &&
		    (idx < 0 || g_log.ev[i].idx == (unsigned)idx))
			n++;
	pthread_mutex_unlock(&g_log.lock);
	return n;
}

/*
 * An attach that cannot open k copies fails, and records nothing: copies
 * whose OPEN timed out (or was refused) never took a write of this epoch,
 * so marking them OUT_OF_SYNC would shrink the in-sync set for good (every
 * later attach refused: fewer than k in sync).  Copies 3 and 4 never
 * answer (timeout), copy 5's node is down (refused); once they are back,
 * the next attach, with the states as recorded, succeeds with all six in
 * sync and the data reads back.  An attach that does succeed with copies
 * away records them OUT_OF_SYNC (they miss its writes).
 */
static void test_attach_timeout_records_nothing(void **state)
{
	struct env *e = *state;
	struct tsr_ec_opts o;
	struct tsr_layout_status s;
	int holes[MAXN];
	uint64_t t0;

	pthread_mutex_lock(&g_log.lock);
	memset(g_log.state, 0, sizeof(g_log.state)); /* every copy recorded IN_SYNC */
	pthread_mutex_unlock(&g_log.lock);
	assert_int_equal(create(e, true, 1), 0);
	random_writes(e, 30, 700);
	settle(e);
	tsr_layout_destroy(e->l);
	e->l = NULL;
	log_reset();

	/* epoch 2: copies 3, 4 time out, copy 5 refused: 3 of 6 open, 4 needed */
	opts_init(e, &o, true, 2);
	o.peer_timeout_ms = 300;
	for (unsigned i = 3; i <= 4; i++)
		holes[i] = peer_black_hole(o.copies[i].address, sizeof(o.copies[i].address));
	node_stop(&e->nodes[5]);
	t0 = mono_ms();
	assert_int_equal(tsr_layout_ec_create(&o, &e->l), -EIO);
	assert_null(e->l);
	assert_true(mono_ms() - t0 >= 250); /* the timeout path was taken */
	assert_int_equal(hooks_out_of_sync(-1), 0);
	for (unsigned i = 0; i < e->n; i++)
		assert_int_equal(g_log.state[i], TSR_COPY_IN_SYNC);
	for (unsigned i = 3; i <= 4; i++)
		close(holes[i]);
	node_run(&e->nodes[5], 0);

	/* epoch 3, states as recorded: everyone back, all in sync, data intact */
	opts_init(e, &o, true, 3);
	for (unsigned i = 0; i < e->n; i++)
		o.copies[i].state = g_log.state[i];
	assert_int_equal(tsr_layout_ec_create(&o, &e->l), 0);
	get_status(e, &s);
	assert_int_equal(s.in_sync, e->n);
	assert_int_equal(s.copy_failures, 0);
	assert_reads_equal_model(e);
	random_writes(e, 10, 720);
	settle(e);
	assert_reads_equal_model(e);
	assert_stripes_consistent(e, true);
	tsr_layout_destroy(e->l);
	e->l = NULL;

	/* epoch 4: copy 4 times out, but 5 of 6 open: the attach succeeds and
	 * records copy 4 OUT_OF_SYNC (it misses this epoch's writes) */
	log_reset();
	opts_init(e, &o, true, 4);
	o.peer_timeout_ms = 300;
	holes[4] = peer_black_hole(o.copies[4].address, sizeof(o.copies[4].address));
	assert_int_equal(tsr_layout_ec_create(&o, &e->l), 0);
	assert_int_equal(lwrite(e, 0, 64 * KiB, 730), 0);
	assert_int_equal(hooks_out_of_sync(4), 1);
	assert_int_equal(hooks_out_of_sync(-1), 1);
	assert_int_equal(g_log.state[4], TSR_COPY_OUT_OF_SYNC);
	get_status(e, &s);
	assert_int_equal(s.in_sync, e->n - 1);
	assert_reads_equal_model(e);
	tsr_layout_destroy(e->l);
	e->l = NULL;
	close(holes[4]);
}

/* ---- the write hole: a coordinator that died at each step ---- */

static int node_stage(struct node *n, const struct tsr_stage_entry *en, const void *buf)
{
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
	struct tsr_svol *v = NULL;
	struct done d = {0};
	int ret;

	ret = tsr_store_vol_open(n->store, VOLNAME, &v);
	if (ret == 0)
		ret = tsr_svol_stage(v, io, en, buf, done_cb, &d);
	if (ret == 0)
		ret = wait_done(io, &d);
	if (v != NULL)
		tsr_svol_put(v);
	tsr_io_destroy(io);
	return ret;
}

static int node_commit(struct node *n, uint64_t txn)
{
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
	struct tsr_svol *v = NULL;
	struct done d = {0};
	int ret;

	ret = tsr_store_vol_open(n->store, VOLNAME, &v);
	if (ret == 0)
		ret = tsr_svol_stage_commit(v, io, txn, done_cb, &d);
	if (ret == 0)
		ret = wait_done(io, &d);
	if (v != NULL)
		tsr_svol_put(v);
	tsr_io_destroy(io);
	return ret;
}

static size_t node_stage_count(struct node *n)
{
	struct tsr_svol *v = NULL;
	struct tsr_stage_entry *list = NULL;
	size_t count = 0;

	assert_int_equal(tsr_store_vol_open(n->store, VOLNAME, &v), 0);
	assert_int_equal(tsr_svol_stage_list(v, &list, &count), 0);
	free(list);
	tsr_svol_put(v);
	return count;
}

/*
 * Simulate a coordinator (epoch old_epoch) that died in a partial write of
 * stripe s, data chunk d, column [col, col+len): its participants (chunk d
 * and the m parities, in position order) staged on the first `staged`,
 * committed on the first `committed`.  Returns the new stripe content in
 * newdata (the volume bytes of the stripe).
 */
static void crashed_txn(struct env *e, uint64_t old_epoch, uint64_t txn_no, uint64_t s, unsigned d,
			uint32_t col, uint32_t len, unsigned staged, unsigned committed,
			uint8_t *newstripe)
{
	uint64_t width = (uint64_t)e->k * e->unit;
	uint8_t *bufs = tsr_alloc_aligned((size_t)e->n * len);
	const uint8_t *data[TSR_EC_MAX_K];
	uint8_t *parity[TSR_EC_MAX_M];
	unsigned parts[TSR_EC_MAX_M + 1], np = 0;
	struct tsr_stage_entry en = {0};

	memcpy(newstripe, e->model + s * width, width);
	fill(newstripe + (uint64_t)d * e->unit + col, len, 900 + txn_no,
	     s * width + (uint64_t)d * e->unit + col);
	for (unsigned i = 0; i < e->k; i++) {
		memcpy(bufs + (size_t)i * len, newstripe + (uint64_t)i * e->unit + col, len);
		data[i] = bufs + (size_t)i * len;
	}
	for (unsigned j = 0; j < e->m; j++)
		parity[j] = bufs + (size_t)(e->k + j) * len;
	tsr_ec_encode(e->codec, len, data, parity);
	parts[np++] = d;
	for (unsigned j = 0; j < e->m; j++)
		parts[np++] = e->k + j;
	en.txn = (old_epoch << 32) | txn_no;
	en.stripe = s;
	en.offset = s * e->unit + col;
	en.length = len;
	for (unsigned i = 0; i < np; i++)
		en.participants |= 1u << parts[i];
	for (unsigned i = 0; i < staged && i < np; i++)
		assert_int_equal(node_stage(&e->nodes[tsr_ec_copy_of(s, parts[i], e->k, e->m)], &en,
					    bufs + (size_t)parts[i] * len),
				 0);
	for (unsigned i = 0; i < committed && i < np; i++)
		assert_int_equal(
		    node_commit(&e->nodes[tsr_ec_copy_of(s, parts[i], e->k, e->m)], en.txn), 0);
	tsr_free_aligned(bufs);
}

static void test_write_hole_recovery(void **state)
{
	struct env *e = *state;
	uint64_t width = (uint64_t)e->k * e->unit;
	uint8_t *newstripe = malloc(width);
	struct tsr_layout_status s;
	uint64_t epoch = 1;
	unsigned np = 1 + e->m;
	struct {
		unsigned staged, committed;
		bool forward;
	} cases[] = {
	    {0, 0, false}, {1, 0, false}, {np - 1, 0, false},
	    {np, 0, true}, {np, 1, true}, {np, np, true},
	};

	assert_int_equal(create(e, true, epoch), 0);
	random_writes(e, 30, 600);
	for (uint64_t off = 0; off < VOL; off += width) /* every stripe written */
		assert_int_equal(lwrite(e, off, (uint32_t)width, 700 + off / width), 0);
	settle(e);
	tsr_layout_destroy(e->l);
	e->l = NULL;
	for (unsigned c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		uint64_t stripe = 3 + c * 2;
		unsigned d = c % e->k;

		print_message("case %u: staged on %u of %u participants, committed on %u\n", c,
			      cases[c].staged, np, cases[c].committed);
		crashed_txn(e, epoch, 0x10000000u + c, stripe, d, 2 * BS, 2 * BS, cases[c].staged,
			    cases[c].committed, newstripe);
		epoch++;
		assert_int_equal(create(e, c % 2 == 0, epoch), 0);
		get_status(e, &s);
		assert_int_equal(s.txn_rolled_forward, cases[c].forward && cases[c].staged ? 1 : 0);
		assert_int_equal(s.txn_rolled_back, !cases[c].forward && cases[c].staged ? 1 : 0);
		if (cases[c].forward)
			memcpy(e->model + stripe * width, newstripe, width);
		/* the stripe reads as old or new (the rule's choice), nothing else moved */
		assert_reads_equal_model(e);
		assert_stripes_consistent(e, true);
		/* every older txn released on every copy */
		for (unsigned i = 0; i < e->n; i++)
			assert_int_equal(node_stage_count(&e->nodes[i]), 0);
		/* and the volume goes on */
		assert_int_equal(lwrite(e, stripe * width + BS, 3 * BS, 800 + c), 0);
		assert_reads_equal_model(e);
		settle(e);
		tsr_layout_destroy(e->l);
		e->l = NULL;
	}
	assert_stripes_consistent(e, true);
	free(newstripe);
}

/* A copy unreachable during recovery gets the stripe rebuilt when it returns. */
static void test_recovery_copy_away(void **state)
{
	struct env *e = *state;
	uint64_t width = (uint64_t)e->k * e->unit;
	uint8_t *newstripe = malloc(width);
	uint64_t stripe = 5;
	unsigned away;
	struct tsr_layout_status s;

	assert_int_equal(create(e, true, 1), 0);
	for (uint64_t off = 0; off < VOL; off += width)
		assert_int_equal(lwrite(e, off, (uint32_t)width, 50 + off / width), 0);
	settle(e);
	tsr_layout_destroy(e->l);
	e->l = NULL;
	/* committed on the first participant only (data chunk 1), then its node goes */
	crashed_txn(e, 1, 0x10000000u, stripe, 1, BS, BS, 1 + e->m, 1, newstripe);
	memcpy(e->model + stripe * width, newstripe, width);
	away = tsr_ec_copy_of(stripe, e->k, e->k, e->m); /* the first parity's copy */
	if (away == 0)
		away = tsr_ec_copy_of(stripe, e->k + 1, e->k, e->m);
	node_stop(&e->nodes[away]);
	assert_int_equal(create(e, true, 2), 0);
	get_status(e, &s);
	assert_int_equal(s.txn_rolled_forward, 1);
	assert_int_equal(s.in_sync, e->n - 1);
	assert_reads_equal_model(e);
	node_run(&e->nodes[away], 0);
	assert_true(returned_in_sync(e, away, 20000));
	assert_int_equal(node_stage_count(&e->nodes[away]), 0);
	assert_stripes_consistent(e, true);
	free(newstripe);
}

/*
 * Staged on every participant, committed nowhere (the host was acknowledged:
 * the coordinator acks once all staged), and a participant's node is away at
 * the recovery: the txn must roll forward over the reachable participants
 * (else an acknowledged write would be lost), and the returning node gets
 * the stripe rebuilt to the new content.
 */
static void test_recovery_acked_copy_away(void **state)
{
	struct env *e = *state;
	uint64_t width = (uint64_t)e->k * e->unit;
	uint8_t *newstripe = malloc(width);
	uint64_t stripe = 6;
	unsigned away;
	struct tsr_layout_status s;

	assert_int_equal(create(e, true, 1), 0);
	for (uint64_t off = 0; off < VOL; off += width)
		assert_int_equal(lwrite(e, off, (uint32_t)width, 60 + off / width), 0);
	settle(e);
	tsr_layout_destroy(e->l);
	e->l = NULL;
	crashed_txn(e, 1, 0x10000000u, stripe, 2, BS, 2 * BS, 1 + e->m, 0, newstripe);
	memcpy(e->model + stripe * width, newstripe, width);
	away = tsr_ec_copy_of(stripe, e->k + e->m - 1, e->k, e->m); /* the last parity's copy */
	if (away == 0)
		away = tsr_ec_copy_of(stripe, e->k, e->k, e->m);
	node_stop(&e->nodes[away]);
	assert_int_equal(create(e, true, 2), 0);
	get_status(e, &s);
	assert_int_equal(s.txn_rolled_forward, 1);
	assert_int_equal(s.txn_rolled_back, 0);
	assert_reads_equal_model(e);
	node_run(&e->nodes[away], 0);
	assert_true(returned_in_sync(e, away, 20000));
	assert_int_equal(node_stage_count(&e->nodes[away]), 0);
	assert_reads_equal_model(e);
	assert_stripes_consistent(e, true);
	free(newstripe);
}

/*
 * The dead last coordinator's own chunk copy (be0ec7d): attach.c marks it
 * full_resync when the next attach runs on another node, though it is
 * recorded IN_SYNC.  A 2+1 volume whose coordinator (copy 0) died while
 * copy 1 was rebuilt has the copies [IN_SYNC + full_resync, OUT_OF_SYNC +
 * full_resync, IN_SYNC]: the attach must succeed with copies 0 and 2 in
 * sync (k = 2), copy 0's bitmap clean (never recorded out of sync), its
 * staged txns decided with copy 2's (one staged on both: forward; one
 * staged on copy 0 only: back), and only copy 1 rebuilt (its whole chunk
 * volume, garbage before).  Before the fix copy 0 was taken for out of
 * sync (bitmap all set, not counted), so the create failed: 1 in sync.
 */
static void test_dead_coordinator_copy_in_sync(void **state)
{
	struct env *e = *state;
	uint64_t width = (uint64_t)e->k * e->unit;
	uint64_t stripes = tsr_ec_stripes(VOL, e->k, e->unit), sfwd = 0, sback = 0;
	uint8_t *newstripe = malloc(width), *junk = tsr_alloc_aligned(e->chunk_size);
	unsigned dfwd = 0, dback = 0, found = 0;
	struct tsr_ec_opts o;
	struct tsr_layout_status s;
	char hold[PATH_MAX];
	int fd;

	assert_int_equal(e->k, 2);
	assert_int_equal(e->m, 1);
	assert_int_equal(create(e, false, 1), 0);
	for (uint64_t off = 0; off < VOL; off += width)
		assert_int_equal(lwrite(e, off, (uint32_t)width, 70 + off / width), 0);
	settle(e);
	tsr_layout_destroy(e->l);
	e->l = NULL;
	/* two stripes (from 3 on) whose txn touches only copies 0 (data) and 2 (parity) */
	for (uint64_t st = 3; st < stripes && found < 2; st++)
		for (unsigned d = 0; d < e->k && found < 2; d++) {
			if (tsr_ec_copy_of(st, d, e->k, e->m) != 0 ||
			    tsr_ec_copy_of(st, e->k, e->k, e->m) != 2)
				continue;
			if (found++ == 0) {
				sfwd = st;
				dfwd = d;
			} else {
				sback = st;
				dback = d;
			}
			break;
		}
	assert_int_equal(found, 2);
	/* staged on both participants, committed nowhere: acknowledged, forward */
	crashed_txn(e, 1, 0x10000000u, sfwd, dfwd, BS, 2 * BS, 2, 0, newstripe);
	memcpy(e->model + sfwd * width, newstripe, width);
	/* staged on copy 0 only (the coordinator's own chunk): back */
	crashed_txn(e, 1, 0x10000001u, sback, dback, 0, BS, 1, 0, newstripe);
	assert_int_equal(node_stage_count(&e->nodes[0]), 2);
	assert_int_equal(node_stage_count(&e->nodes[2]), 1);
	/* copy 1, the one being rebuilt: garbage where it was not rebuilt yet */
	memset(junk, 0xa5, e->chunk_size);
	assert_int_equal(node_store_write(&e->nodes[1], 0, (uint32_t)e->chunk_size, junk), 0);

	/* the rebuild held after its first region, so the in-sync set can be seen */
	snprintf(hold, sizeof(hold), "%s/resync-hold", e->state_dir);
	fd = open(hold, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	setenv("TSR_TEST_EC_RESYNC_HOLD_FILE", hold, 1);
	log_reset();
	opts_init(e, &o, false, 2);
	o.copies[0].full_resync = true; /* attach.c's mark of the dead coordinator's copy */
	o.copies[1].state = TSR_COPY_OUT_OF_SYNC;
	o.copies[1].full_resync = true;
	assert_int_equal(tsr_layout_ec_create(&o, &e->l), 0);
	get_status(e, &s);
	assert_int_equal(s.in_sync, 2);
	assert_int_equal(s.txn_rolled_forward, 1);
	assert_int_equal(s.txn_rolled_back, 1);
	assert_int_equal(s.copies[0].dirty_bytes, 0); /* before the fix: all set */
	assert_int_equal(s.copies[2].dirty_bytes, 0);
	assert_true(s.copies[1].dirty_bytes > 0);
	assert_int_equal(hooks_out_of_sync(0), 0);
	assert_int_equal(g_log.state[0], TSR_COPY_IN_SYNC);
	/* reads decode from copies 0 and 2: the rolled-forward txn, the other stripe old */
	assert_reads_equal_model(e);
	assert_int_equal(unlink(hold), 0);
	assert_true(wait_status(e, all_in_sync, 20000));
	unsetenv("TSR_TEST_EC_RESYNC_HOLD_FILE"); /* no walk reads it any more */
	get_status(e, &s);
	/* copy 1's chunk volume, and only it, moved */
	assert_int_equal(s.resync_bytes_copied, e->chunk_size);
	assert_int_equal(hooks_out_of_sync(0), 0);
	assert_int_equal(g_log.state[1], TSR_COPY_IN_SYNC);
	for (unsigned i = 0; i < e->n; i++)
		assert_int_equal(node_stage_count(&e->nodes[i]), 0);
	assert_stripes_consistent(e, true);
	assert_int_equal(lwrite(e, sback * width, (uint32_t)width, 75), 0);
	assert_reads_equal_model(e);
	settle(e);
	assert_stripes_consistent(e, true);
	tsr_free_aligned(junk);
	free(newstripe);
}

/*
 * A failed attach that rolled a txn forward releases nothing: stripe s's
 * txn (data chunk 1 and both parities) is staged on its three participants
 * and committed on the first; at epoch 2 the last parity's copy never
 * answers and two other copies are away, so 3 of 6 open: the recovery
 * commits the txn on the open participants, then the attach fails with
 * their journals intact and nothing recorded.  At epoch 3, with everyone
 * back, the txn is still listed COMMITTED, so it rolls forward on the copy
 * that missed it too: every stripe decodes to the model.  (Releasing before
 * the in-sync check would have left that copy's chunk old and listed only
 * there, STAGED: rolled back, the stripe inconsistent.)  At epoch 4 the
 * same copy is away again but 5 of 6 open: it is recorded OUT_OF_SYNC
 * (before the release) and rebuilt when it returns.
 */
static void test_attach_fails_after_roll_forward(void **state)
{
	struct env *e = *state;
	uint64_t width = (uint64_t)e->k * e->unit;
	uint8_t *newstripe = malloc(width);
	struct tsr_ec_opts o;
	struct tsr_layout_status s;
	unsigned missed, first, second, away[2], na = 0;
	uint64_t stripe = 0;
	int holes[MAXN];

	pthread_mutex_lock(&g_log.lock);
	memset(g_log.state, 0, sizeof(g_log.state));
	pthread_mutex_unlock(&g_log.lock);
	/* a stripe whose participants and two non-participants are all remote */
	for (;; stripe++) {
		na = 0;
		missed = tsr_ec_copy_of(stripe, e->k + e->m - 1, e->k, e->m);
		first = tsr_ec_copy_of(stripe, 1, e->k, e->m);
		second = tsr_ec_copy_of(stripe, e->k, e->k, e->m);
		for (unsigned p = 0; p < e->k && na < 2; p++)
			if (p != 1 && tsr_ec_copy_of(stripe, p, e->k, e->m) != 0)
				away[na++] = tsr_ec_copy_of(stripe, p, e->k, e->m);
		if (missed != 0 && first != 0 && second != 0 && na == 2)
			break;
	}
	assert_int_equal(create(e, true, 1), 0);
	for (uint64_t off = 0; off < VOL; off += width)
		assert_int_equal(lwrite(e, off, (uint32_t)width, 80 + off / width), 0);
	settle(e);
	tsr_layout_destroy(e->l);
	e->l = NULL;
	crashed_txn(e, 1, 0x10000000u, stripe, 1, BS, 2 * BS, 1 + e->m, 1, newstripe);
	memcpy(e->model + stripe * width, newstripe, width);
	log_reset();

	/* epoch 2: the missed copy times out, two others refused: 3 open */
	opts_init(e, &o, true, 2);
	o.peer_timeout_ms = 300;
	holes[missed] = peer_black_hole(o.copies[missed].address, sizeof(o.copies[missed].address));
	node_stop(&e->nodes[away[0]]);
	node_stop(&e->nodes[away[1]]);
	assert_int_equal(tsr_layout_ec_create(&o, &e->l), -EIO);
	assert_int_equal(hooks_out_of_sync(-1), 0);
	/* rolled forward where it could, released nowhere */
	assert_int_equal(node_stage_count(&e->nodes[first]), 1);
	assert_int_equal(node_stage_count(&e->nodes[second]), 1);
	assert_int_equal(node_stage_count(&e->nodes[missed]), 1);
	close(holes[missed]);
	node_run(&e->nodes[away[0]], 0);
	node_run(&e->nodes[away[1]], 0);

	/* epoch 3: all back, states as recorded */
	opts_init(e, &o, true, 3);
	for (unsigned i = 0; i < e->n; i++)
		o.copies[i].state = g_log.state[i];
	assert_int_equal(tsr_layout_ec_create(&o, &e->l), 0);
	get_status(e, &s);
	assert_int_equal(s.in_sync, e->n);
	assert_int_equal(s.txn_rolled_forward, 1);
	settle(e);
	assert_int_equal(node_stage_count(&e->nodes[missed]), 0);
	assert_reads_equal_model(e);
	assert_stripes_consistent(e, true);
	tsr_layout_destroy(e->l);
	e->l = NULL;

	/* epoch 4: the same txn again, its last parity's copy away, 5 open */
	crashed_txn(e, 3, 0x10000000u, stripe, 1, 3 * BS, BS, 1 + e->m, 1, newstripe);
	memcpy(e->model + stripe * width, newstripe, width);
	log_reset();
	opts_init(e, &o, true, 4);
	o.peer_timeout_ms = 300;
	holes[missed] = peer_black_hole(o.copies[missed].address, sizeof(o.copies[missed].address));
	assert_int_equal(tsr_layout_ec_create(&o, &e->l), 0);
	assert_int_equal(hooks_out_of_sync(-1), 1);
	assert_int_equal(g_log.state[missed], TSR_COPY_OUT_OF_SYNC);
	get_status(e, &s);
	assert_int_equal(s.txn_rolled_forward, 1);
	assert_int_equal(s.in_sync, e->n - 1);
	assert_reads_equal_model(e);
	close(holes[missed]);
	assert_true(returned_in_sync(e, missed, 20000));
	assert_int_equal(g_log.state[missed], TSR_COPY_IN_SYNC);
	settle(e);
	assert_reads_equal_model(e);
	assert_stripes_consistent(e, true);
	free(newstripe);
}

/*
 * The RELEASE of an attach waits for the records of step 3b: a txn staged on
 * its three participants, committed nowhere, rolls forward with the last
 * parity's node down; that copy's chunk stays old and, once the others
 * forgot the txn, only its record says so, so it is recorded OUT_OF_SYNC
 * before the RELEASE.  While the metadata store refuses the record the
 * attach fails and nothing is released (the reachable participants keep the
 * txn, now committed); once it answers, the attach succeeds with the copy
 * recorded out of sync, and the copy is rebuilt when it returns: every
 * stripe decodes to the model.
 */
static void test_attach_release_waits_for_record(void **state)
{
	struct env *e = *state;
	uint64_t width = (uint64_t)e->k * e->unit;
	uint8_t *newstripe = malloc(width);
	struct tsr_ec_opts o;
	struct tsr_layout_status s;
	unsigned away, other;
	uint64_t stripe = 0;

	pthread_mutex_lock(&g_log.lock);
	memset(g_log.state, 0, sizeof(g_log.state));
	pthread_mutex_unlock(&g_log.lock);
	while (tsr_ec_copy_of(stripe, e->k + e->m - 1, e->k, e->m) == 0)
		stripe++;
	away = tsr_ec_copy_of(stripe, e->k + e->m - 1, e->k, e->m);
	other = tsr_ec_copy_of(stripe, e->k, e->k, e->m); /* parity 0: reachable */
	assert_int_equal(create(e, true, 1), 0);
	for (uint64_t off = 0; off < VOL; off += width)
		assert_int_equal(lwrite(e, off, (uint32_t)width, 90 + off / width), 0);
	settle(e);
	tsr_layout_destroy(e->l);
	e->l = NULL;
	crashed_txn(e, 1, 0x10000000u, stripe, 1, BS, BS, 1 + e->m, 0, newstripe);
	memcpy(e->model + stripe * width, newstripe, width);
	node_stop(&e->nodes[away]);
	log_reset();
	pthread_mutex_lock(&g_log.lock);
	g_log.hook_status = -EIO;
	pthread_mutex_unlock(&g_log.lock);
	opts_init(e, &o, true, 2);
	assert_int_equal(tsr_layout_ec_create(&o, &e->l), -EIO);
	assert_null(e->l);
	assert_int_equal(node_stage_count(&e->nodes[other]), 1);
	pthread_mutex_lock(&g_log.lock);
	g_log.hook_status = 0;
	pthread_mutex_unlock(&g_log.lock);

	opts_init(e, &o, true, 3);
	assert_int_equal(tsr_layout_ec_create(&o, &e->l), 0);
	assert_int_equal(g_log.state[away], TSR_COPY_OUT_OF_SYNC);
	get_status(e, &s);
	assert_int_equal(s.txn_rolled_forward, 1);
	assert_int_equal(s.in_sync, e->n - 1);
	settle(e);
	assert_int_equal(node_stage_count(&e->nodes[other]), 0);
	assert_reads_equal_model(e);
	node_run(&e->nodes[away], 0);
	assert_true(returned_in_sync(e, away, 20000));
	assert_int_equal(g_log.state[away], TSR_COPY_IN_SYNC);
	settle(e);
	assert_reads_equal_model(e);
	assert_stripes_consistent(e, true);
	free(newstripe);
}

/* ---- epochs ---- */

static void test_stale_epoch_fences(void **state)
{
	struct env *e = *state;
	struct tsr_layout *l1;
	struct tsr_layout_status s;

	assert_int_equal(create(e, true, 5), 0);
	assert_int_equal(lwrite(e, 0, 16 * KiB, 1), 0);
	l1 = e->l;
	e->l = NULL;
	/* an older coordinator cannot start */
	assert_int_equal(create(e, true, 4), -ESTALE);
	assert_null(e->l);
	/* a newer one fences the running one */
	assert_int_equal(create(e, false, 6), 0);
	fill(e->buf, 16 * KiB, 2, 0);
	assert_int_equal(ldo(e->home, l1, D_WRITE, 0, 16 * KiB, e->buf, 0), -EIO);
	tsr_layout_get_status(l1, &s);
	assert_true(s.fenced);
	assert_int_equal(ldo(e->home, l1, D_READ, 0, 16 * KiB, e->buf, 0), -EIO);
	tsr_layout_destroy(l1);
	/* the new one has the old content */
	assert_reads_equal_model(e);
	/* and tsr_layout_fence fences it too */
	assert_int_equal(tsr_layout_replace_check(e->l, 1), 0);
	assert_int_equal(tsr_layout_replace_check(e->l, 9), -EINVAL);
	tsr_layout_fence(e->l);
	assert_int_equal(ldo(e->home, e->l, D_WRITE, 0, 16 * KiB, e->buf, 0), -EIO);
	/* a replace would be refused now: the check says so */
	assert_int_equal(tsr_layout_replace_check(e->l, 1), -EIO);
}

static void test_bad_opts(void **state)
{
	struct env *e = *state;
	struct tsr_ec_opts o;
	struct tsr_layout *l = NULL;

	opts_init(e, &o, true, 1);
	o.k = 0;
	assert_int_equal(tsr_layout_ec_create(&o, &l), -EINVAL);
	opts_init(e, &o, true, 1);
	o.stripe_unit = 12288;
	assert_int_equal(tsr_layout_ec_create(&o, &l), -EINVAL);
	opts_init(e, &o, true, 1);
	o.n_copies = e->n - 1;
	assert_int_equal(tsr_layout_ec_create(&o, &l), -EINVAL);
	opts_init(e, &o, true, 1);
	o.min_in_sync = e->k - 1;
	assert_int_equal(tsr_layout_ec_create(&o, &l), -EINVAL);
	/* chunk volume too small for this size */
	opts_init(e, &o, true, 1);
	o.size = 2 * VOL;
	assert_int_equal(tsr_layout_ec_create(&o, &l), -EINVAL);
	assert_null(l);
}

/* ---- scrub ---- */

/* Overwrite stripe s's chunk p behind the layout's back (valid CRCs). */
static void corrupt_chunk(struct env *e, uint64_t s, unsigned p, uint32_t off, uint32_t len)
{
	uint8_t *b = tsr_alloc_aligned(len);

	memset(b, 0xa5, len);
	assert_int_equal(node_store_write(&e->nodes[tsr_ec_copy_of(s, p, e->k, e->m)],
					  s * e->unit + off, len, b),
			 0);
	tsr_free_aligned(b);
}

static void test_scrub_repairs(void **state)
{
	struct env *e = *state;
	struct tsr_layout_status s;

	assert_int_equal(create(e, true, 1), 0);
	for (uint64_t off = 0; off < VOL; off += (uint64_t)e->k * e->unit)
		assert_int_equal(lwrite(e, off, (uint32_t)(e->k * e->unit), 40 + off), 0);
	/* clean: nothing found */
	assert_int_equal(tsr_layout_scrub_start(e->l, false), 0);
	assert_true(wait_status(e, scrub_finished, 20000));
	get_status(e, &s);
	assert_int_equal(s.scrub_mismatches, 0);
	/* a parity chunk and a data chunk silently wrong (in two stripes) */
	corrupt_chunk(e, 2, e->k, BS, BS);
	corrupt_chunk(e, 7, 1, 0, 2 * BS);
	assert_int_equal(tsr_layout_scrub_start(e->l, false), 0);
	assert_true(wait_status(e, scrub_finished, 20000));
	get_status(e, &s);
	assert_int_equal(s.scrub_mismatches, 2);
	assert_int_equal(s.scrub_repaired, 0);
	/* repair: the chunk that disagrees with the others is rewritten */
	assert_int_equal(tsr_layout_scrub_start(e->l, true), 0);
	assert_true(wait_status(e, scrub_finished, 20000));
	get_status(e, &s);
	assert_int_equal(s.scrub_mismatches, 2);
	assert_int_equal(s.scrub_repaired, 2);
	assert_int_equal(s.scrub_unrepaired, 0);
	assert_int_equal(s.scrub_done_bytes, VOL);
	assert_stripes_consistent(e, true);
	assert_reads_equal_model(e);
}

/* m = 1: a wrong chunk is found but cannot be told apart. */
static void test_scrub_m1_unrepaired(void **state)
{
	struct env *e = *state;
	struct tsr_layout_status s;

	assert_int_equal(create(e, true, 1), 0);
	random_writes(e, 10, 41);
	corrupt_chunk(e, 3, 0, 0, BS);
	assert_int_equal(tsr_layout_scrub_start(e->l, true), 0);
	assert_true(wait_status(e, scrub_finished, 20000));
	get_status(e, &s);
	assert_int_equal(s.scrub_mismatches, 1);
	assert_int_equal(s.scrub_repaired, 0);
	assert_int_equal(s.scrub_unrepaired, 1);
}

/* converge at create (the last coordinator died): the repairing scrub runs first */
static void test_converge(void **state)
{
	struct env *e = *state;
	struct tsr_ec_opts o;
	struct tsr_layout_status s;

	assert_int_equal(create(e, true, 1), 0);
	for (uint64_t off = 0; off < VOL; off += (uint64_t)e->k * e->unit)
		assert_int_equal(lwrite(e, off, (uint32_t)(e->k * e->unit), 90 + off), 0);
	settle(e);
	tsr_layout_destroy(e->l);
	e->l = NULL;
	corrupt_chunk(e, 9, e->k + 1, 0, BS);
	opts_init(e, &o, true, 2);
	o.converge = true;
	assert_int_equal(tsr_layout_ec_create(&o, &e->l), 0);
	get_status(e, &s);
	assert_true(s.scrub_done);
	assert_int_equal(s.scrub_mismatches, 1);
	assert_int_equal(s.scrub_repaired, 1);
	assert_stripes_consistent(e, true);
	assert_reads_equal_model(e);
}

/* ---- a chunk failing its CRC is decoded on read, and scrub rewrites it ---- */

static void break_crc(struct env *e, uint64_t s, unsigned p)
{
	struct node *n = &e->nodes[tsr_ec_copy_of(s, p, e->k, e->m)];
	struct tsr_vol_info info;
	char path[PATH_MAX];
	uint8_t junk[64];
	int fd;

	memset(junk, 0x3c, sizeof(junk));
	assert_int_equal(tsr_store_vol_info(n->store, VOLNAME, &info), 0);
	vol_file(n->dir, info.uuid, "data", path);
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, junk, sizeof(junk), (off_t)(s * e->unit + 100)),
			 (ssize_t)sizeof(junk));
	close(fd);
}

static void test_crc_error_read(void **state)
{
	struct env *e = *state;
	struct tsr_layout_status s;

	assert_int_equal(create(e, false, 1), 0);
	for (uint64_t off = 0; off < VOL; off += (uint64_t)e->k * e->unit)
		assert_int_equal(lwrite(e, off, (uint32_t)(e->k * e->unit), 60 + off), 0);
	/* the page cache must not hide the damage: the store reads O_DIRECT */
	break_crc(e, 4, 2);
	assert_reads_equal_model(e);
	get_status(e, &s);
	assert_true(s.degraded_reads >= 1);
	assert_int_equal(s.in_sync, e->n); /* a bad block is not a failed copy */
	assert_int_equal(tsr_layout_scrub_start(e->l, true), 0);
	assert_true(wait_status(e, scrub_finished, 20000));
	get_status(e, &s);
	assert_int_equal(s.scrub_mismatches, 1);
	assert_int_equal(s.scrub_repaired, 1);
	assert_stripes_consistent(e, true);
}

/* ---- replace: rebuild every stripe's chunk on a new node ---- */

static int lsnap(struct env *e, enum tsr_snap_op op, const char *snap);

/* A copy replaced on a spare node is rebuilt from k others, and gets every
 * snapshot (ec_missed_note_all: made up before the head): its chunk volume's
 * r1 holds copy 1's chunks at the cut. */
static void test_replace(void **state)
{
	struct env *e = *state;
	struct node *nn = &e->nodes[e->n]; /* a spare */
	struct tsr_layout_copy nc = {0};
	struct tsr_layout_status s;
	uint8_t *at_cut = malloc(e->chunk_size), *img = tsr_alloc_aligned(e->chunk_size);
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);

	assert_int_equal(node_init(nn, e->n, e->chunk_size), 0);
	assert_int_equal(create(e, true, 1), 0);
	random_writes(e, 40, 70);
	settle(e);
	load_chunkvols(e);
	memcpy(at_cut, e->chunkvols[1], e->chunk_size);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "r1"), 0);
	random_writes(e, 20, 73);
	node_stop(&e->nodes[1]);
	assert_int_equal(lwrite(e, 5 * BS, 3 * BS, 71), 0);
	snprintf(nc.node_id, sizeof(nc.node_id), "%s", nn->node_id);
	snprintf(nc.address, sizeof(nc.address), "%s", nn->address);
	nc.state = TSR_COPY_OUT_OF_SYNC;
	assert_int_equal(tsr_layout_replace_copy(e->l, 1, &nc), 0);
	assert_true(wait_status(e, all_in_sync, 30000));
	get_status(e, &s);
	assert_string_equal(s.copies[1].node_id, nn->node_id);
	assert_int_equal(s.resync_bytes_copied, e->chunk_size); /* every stripe's chunk */
	{
		struct tsr_svol *v = NULL;

		assert_int_equal(tsr_store_snap_open(nn->store, VOLNAME, "r1", &v), 0);
		assert_int_equal(sread(v, io, 0, (uint32_t)e->chunk_size, img), 0);
		assert_memory_equal(img, at_cut, e->chunk_size);
		tsr_svol_put(v);
	}
	/* the new node stands in for node 1 */
	{
		struct node tmp = e->nodes[1];

		e->nodes[1] = *nn;
		*nn = tmp;
	}
	assert_stripes_consistent(e, true);
	random_writes(e, 10, 72);
	assert_reads_equal_model(e);
	assert_stripes_consistent(e, true);
	node_fini(nn);
	tsr_io_destroy(io);
	tsr_free_aligned(img);
	free(at_cut);
}

/* ---- snapshots: a cut on every chunk volume ---- */

static int lsnap(struct env *e, enum tsr_snap_op op, const char *snap)
{
	return layout_snap(e->home, e->l, op, snap);
}

static void test_snapshot(void **state)
{
	struct env *e = *state;
	uint8_t *before = malloc(e->n * e->chunk_size);
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
	uint8_t *img = tsr_alloc_aligned(e->chunk_size);

	assert_int_equal(create(e, true, 1), 0);
	random_writes(e, 30, 80);
	settle(e); /* acknowledged at stage: the last commits land in place */
	load_chunkvols(e);
	for (unsigned i = 0; i < e->n; i++)
		memcpy(before + i * e->chunk_size, e->chunkvols[i], e->chunk_size);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s1"), 0);
	random_writes(e, 30, 81);
	assert_reads_equal_model(e);
	/* every chunk volume has s1, holding the chunks as they were at the cut */
	for (unsigned i = 0; i < e->n; i++) {
		struct tsr_svol *v = NULL;

		assert_int_equal(tsr_store_snap_open(e->nodes[i].store, VOLNAME, "s1", &v), 0);
		assert_int_equal(sread(v, io, 0, (uint32_t)e->chunk_size, img), 0);
		assert_memory_equal(img, before + i * e->chunk_size, e->chunk_size);
		tsr_svol_put(v);
	}
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s1"), -EEXIST);
	assert_int_equal(lsnap(e, TSR_SNAP_DELETE, "s1"), 0);
	/* a name taken on m+1 copies: fewer than k could cut it, so it is undone */
	for (unsigned i = 1; i <= e->m + 1; i++)
		assert_int_equal(tsr_store_snap_create(e->nodes[i].store, VOLNAME, "dup", NULL), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "dup"), -EEXIST);
	{
		struct tsr_snap_info si;

		assert_int_equal(tsr_store_snap_info(e->nodes[0].store, VOLNAME, "dup", &si),
				 -ENOENT);
		assert_int_equal(tsr_store_snap_info(e->nodes[e->m + 2].store, VOLNAME, "dup", &si),
				 -ENOENT);
	}
	for (unsigned i = 1; i <= e->m + 1; i++)
		assert_int_equal(tsr_store_snap_delete(e->nodes[i].store, VOLNAME, "dup"), 0);
	/* a cut while a repairing scrub runs: it pauses, nobody falls out of sync */
	corrupt_chunk(e, 1, e->k, 0, BS);
	assert_int_equal(tsr_layout_scrub_start(e->l, true), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s2"), 0);
	assert_true(wait_status(e, scrub_finished, 20000));
	{
		struct tsr_layout_status s;

		get_status(e, &s);
		assert_int_equal(s.copy_failures, 0);
		assert_int_equal(s.scrub_repaired, 1);
		assert_int_equal(s.in_sync, e->n);
	}
	for (unsigned i = 0; i < e->n; i++) {
		struct tsr_snap_info si;

		assert_int_equal(tsr_store_snap_info(e->nodes[i].store, VOLNAME, "s2", &si), 0);
	}
	tsr_free_aligned(img);
	tsr_io_destroy(io);
	free(before);
}

static unsigned snaps_files(const struct env *e)
{
	DIR *d = opendir(e->state_dir);
	struct dirent *de;
	unsigned n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);

		n += len > 6 && strcmp(de->d_name + len - 6, ".snaps") == 0;
	}
	closedir(d);
	return n;
}

/*
 * A DELETE that a copy answers -ENOENT (it lacks the snapshot: it missed
 * the CREATE under another coordinator) is done there when another copy had
 * it (ec_snap.c esnap_dec, 800e0f7): every copy stays IN_SYNC, nothing is
 * noted as missed.  Without the rule that copy was made OUT_OF_SYNC and its
 * DELETE noted in its file of missed operations.  A name no copy has (and a
 * CREATE of a name taken): the operation fails, nobody falls out of sync,
 * nothing is noted (note_missed).
 */
static void test_snapshot_delete_enoent(void **state)
{
	struct env *e = *state;
	struct tsr_layout_status s;

	assert_int_equal(create(e, true, 1), 0);
	random_writes(e, 20, 90);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s1"), 0);
	/* copy 1 lacks s1 (as if it missed the CREATE) */
	assert_int_equal(tsr_store_snap_delete(e->nodes[1].store, VOLNAME, "s1"), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_DELETE, "s1"), 0);
	get_status(e, &s);
	assert_int_equal(s.copy_failures, 0);
	assert_int_equal(s.in_sync, e->n);
	for (unsigned i = 0; i < e->n; i++) {
		struct tsr_snap_info si;

		assert_int_equal(tsr_store_snap_info(e->nodes[i].store, VOLNAME, "s1", &si),
				 -ENOENT);
		assert_int_equal(s.copies[i].state, TSR_COPY_IN_SYNC);
	}
	assert_int_equal(snaps_files(e), 0);
	/* no copy has it: refused, nobody out of sync, nothing noted as missed
	 * (before: 'd nosuch' noted for every copy, none a snapshot source) */
	assert_int_equal(lsnap(e, TSR_SNAP_DELETE, "nosuch"), -ENOENT);
	get_status(e, &s);
	assert_int_equal(s.copy_failures, 0);
	assert_int_equal(s.in_sync, e->n);
	assert_int_equal(snaps_files(e), 0);
	/* a name taken on every copy: refused the same way */
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s2"), 0);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s2"), -EEXIST);
	get_status(e, &s);
	assert_int_equal(s.copy_failures, 0);
	assert_int_equal(s.in_sync, e->n);
	assert_int_equal(snaps_files(e), 0);
	/* the volume still reads and writes */
	random_writes(e, 10, 91);
	assert_reads_equal_model(e);
}

/*
 * A replace when the coordinator holds no chunk copy (all remote here): the
 * new copy gets the snapshots the caller read from the metadata store
 * (tsr_layout_copy.missed), made up by the rebuild in runs of stripes (8 a
 * dirty region here).  gone: the list also names a snapshot deleted since
 * (r0) and one never cut (gone), as a detached snapshot's record step or a
 * clone's temporary snapshot deleted in the background leave it (review 17a
 * F5): each is skipped (the copy lacks it), the others made up, and the
 * copy ends IN_SYNC with its list emptied, as mirror_snap skips it.
 */
static void replace_recorded(struct env *e, bool gone)
{
	struct node *nn = &e->nodes[e->n]; /* a spare */
	struct tsr_layout_copy nc = {0};
	uint8_t *at_cut = malloc(e->chunk_size), *img = tsr_alloc_aligned(e->chunk_size);
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
	struct tsr_svol *v = NULL;
	struct tsr_snap_info si;

	assert_int_equal(node_init(nn, e->n, e->chunk_size), 0);
	{
		struct tsr_ec_opts o;

		opts_init(e, &o, false, 1);
		o.region_size = 8 * e->unit; /* the make-up's runs: 8 stripes */
		assert_int_equal(tsr_layout_ec_create(&o, &e->l), 0);
	}
	random_writes(e, 30, 95);
	settle(e);
	if (gone) {
		assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "r0"), 0);
		assert_int_equal(lsnap(e, TSR_SNAP_DELETE, "r0"), 0);
	}
	load_chunkvols(e);
	memcpy(at_cut, e->chunkvols[1], e->chunk_size);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "r1"), 0);
	random_writes(e, 10, 96);
	node_stop(&e->nodes[1]);
	snprintf(nc.node_id, sizeof(nc.node_id), "%s", nn->node_id);
	snprintf(nc.address, sizeof(nc.address), "%s", nn->address);
	nc.state = TSR_COPY_OUT_OF_SYNC;
	nc.missed = gone ? "c r0\nc gone\nc r1\n" : "c r1\n";
	assert_int_equal(tsr_layout_replace_copy(e->l, 1, &nc), 0);
	assert_true(wait_status(e, all_in_sync, 30000));
	assert_int_equal(tsr_store_snap_open(nn->store, VOLNAME, "r1", &v), 0);
	assert_int_equal(sread(v, io, 0, (uint32_t)e->chunk_size, img), 0);
	assert_memory_equal(img, at_cut, e->chunk_size);
	tsr_svol_put(v);
	assert_int_equal(tsr_store_snap_info(nn->store, VOLNAME, "r0", &si), -ENOENT);
	assert_int_equal(tsr_store_snap_info(nn->store, VOLNAME, "gone", &si), -ENOENT);
	assert_int_equal(snaps_files(e), 0);
	{
		struct node tmp = e->nodes[1];

		e->nodes[1] = *nn;
		*nn = tmp;
	}
	assert_reads_equal_model(e);
	assert_stripes_consistent(e, true);
	node_fini(nn);
	tsr_io_destroy(io);
	tsr_free_aligned(img);
	free(at_cut);
}

static void test_replace_recorded(void **state)
{
	replace_recorded(*state, false);
}

static void test_replace_recorded_source_gone(void **state)
{
	replace_recorded(*state, true);
}

/* ---- the fault switch: a coordinator process killed mid-write ---- */

#define CRASH_STRIPE 2
#define CRASH_OFF    (CRASH_STRIPE * 2 * 16 * KiB + 16 * KiB + 4 * KiB) /* 2+1, unit 16K */
#define CRASH_LEN    (8 * KiB)

/* hooks.set_copy_missed: the last list asked per copy, answered g_rec_status. */
static pthread_mutex_t g_rec_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_rec[MAXN][512];
static unsigned g_rec_calls[MAXN];
static int g_rec_status;

static void rec_set_copy_missed(void *arg, const char *vol, unsigned idx, const char *node_id,
				const char *ops, void (*done)(void *done_arg, int status),
				void *done_arg)
{
	int status;

	(void)arg;
	(void)vol;
	(void)node_id;
	pthread_mutex_lock(&g_rec_lock);
	status = g_rec_status;
	if (status == 0 && idx < MAXN) {
		snprintf(g_rec[idx], sizeof(g_rec[idx]), "%s", ops);
		g_rec_calls[idx]++;
	}
	pthread_mutex_unlock(&g_rec_lock);
	done(done_arg, status);
}

static void rec_get(unsigned idx, char *out, size_t len)
{
	pthread_mutex_lock(&g_rec_lock);
	snprintf(out, len, "%s", g_rec[idx]);
	pthread_mutex_unlock(&g_rec_lock);
}

/*
 * What a copy missed is recorded through hooks.set_copy_missed before the
 * operation is answered (a record refused: the CREATE is undone, -EIO), and
 * a coordinator without this node's file (another node, attach.c removed a
 * stale one) takes the recorded list at create: the copy back is given the
 * snapshot it missed (made up), and the record emptied by the replay.
 * Without ec_missed_adopt node2 lacks m2 (fails at line 1912, -ENOENT).
 */
static void test_snapshot_missed_recorded(void **state)
{
	struct env *e = *state;
	struct tsr_ec_opts o;
	struct tsr_svol *v = NULL;
	struct tsr_snap_info si;
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
	uint8_t *at_cut = malloc(e->chunk_size), *img = tsr_alloc_aligned(e->chunk_size);
	char rec[512];

	memset(g_rec, 0, sizeof(g_rec));
	memset(g_rec_calls, 0, sizeof(g_rec_calls));
	g_rec_status = 0;
	opts_init(e, &o, true, 1);
	o.hooks.set_copy_missed = rec_set_copy_missed;
	assert_int_equal(tsr_layout_ec_create(&o, &e->l), 0);
	random_writes(e, 20, 120);
	settle(e);
	node_stop(&e->nodes[2]);
	/* the record refused: the create is undone on the copies that cut it */
	pthread_mutex_lock(&g_rec_lock);
	g_rec_status = -EIO;
	pthread_mutex_unlock(&g_rec_lock);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "m1"), -EIO);
	for (unsigned i = 0; i < 2; i++)
		assert_int_equal(tsr_store_snap_info(e->nodes[i].store, VOLNAME, "m1", &si),
				 -ENOENT);
	pthread_mutex_lock(&g_rec_lock);
	g_rec_status = 0;
	pthread_mutex_unlock(&g_rec_lock);
	random_writes(e, 10, 121);
	settle(e);
	{
		/* node2's chunk volume at the cut, from the model (it is away) */
		uint64_t width = (uint64_t)e->k * e->unit, nstripes = e->chunk_size / e->unit;

		memset(at_cut, 0, e->chunk_size);
		for (uint64_t st = 0; st < nstripes && (st + 1) * width <= VOL; st++) {
			unsigned pos2 = tsr_ec_position_of(st, 2, e->k, e->m);
			const uint8_t *data[TSR_EC_MAX_K] = {e->model + st * width,
							     e->model + st * width + e->unit};
			uint8_t *parity[TSR_EC_MAX_M] = {at_cut + st * e->unit};

			if (pos2 < e->k)
				memcpy(at_cut + st * e->unit, data[pos2], e->unit);
			else
				tsr_ec_encode(e->codec, e->unit, data, parity);
		}
	}
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "m2"), 0);
	rec_get(2, rec, sizeof(rec));
	assert_string_equal(rec, "c m1\nc m2\n"); /* recorded by the time it was answered */
	random_writes(e, 10, 122);
	settle(e);
	/* a new coordinator elsewhere: no file of ours, the record's list */
	tsr_layout_destroy(e->l);
	e->l = NULL;
	{
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s/%s.%s.snaps", e->state_dir, VOLNAME,
			 e->nodes[2].node_id);
		assert_int_equal(access(path, F_OK), 0);
		assert_int_equal(unlink(path), 0);
	}
	node_run(&e->nodes[2], 0);
	opts_init(e, &o, true, 2);
	o.hooks.set_copy_missed = rec_set_copy_missed;
	o.copies[2].state = TSR_COPY_OUT_OF_SYNC;
	o.copies[2].full_resync = true;
	o.copies[2].missed = rec;
	assert_int_equal(tsr_layout_ec_create(&o, &e->l), 0);
	assert_true(wait_status(e, all_in_sync, 30000));
	assert_int_equal(tsr_store_snap_open(e->nodes[2].store, VOLNAME, "m2", &v), 0);
	assert_int_equal(sread(v, io, 0, (uint32_t)e->chunk_size, img), 0);
	assert_memory_equal(img, at_cut, e->chunk_size);
	tsr_svol_put(v);
	assert_int_equal(tsr_store_snap_info(e->nodes[2].store, VOLNAME, "m1", &si), -ENOENT);
	assert_int_equal(snaps_files(e), 0);
	for (int i = 0; i < 1000; i++) { /* the replay's progress: recorded without waiting */
		rec_get(2, rec, sizeof(rec));
		if (rec[0] == '\0')
			break;
		usleep(10000);
	}
	assert_string_equal(rec, "");
	assert_reads_equal_model(e);
	tsr_io_destroy(io);
	tsr_free_aligned(img);
	free(at_cut);
}

static int node_init_at(struct node *n, unsigned index, const char *dir, uint64_t vol_size)
{
	struct tsr_peer_server_opts so = {.token = TOKEN};
	int ret;

	memset(n, 0, sizeof(*n));
	n->lfd = -1;
	snprintf(n->node_id, sizeof(n->node_id), "node%u", index);
	snprintf(n->dir, sizeof(n->dir), "%s", dir);
	ret = tsr_store_open(n->dir, &(struct tsr_store_opts){0}, &n->store);
	if (ret < 0)
		return ret;
	if (vol_size) {
		ret = tsr_store_vol_create(n->store, VOLNAME, vol_size, NULL);
		if (ret < 0)
			return ret;
	}
	so.store = n->store;
	so.node_id = n->node_id;
	ret = tsr_peer_server_create(&so, &n->srv);
	if (ret < 0)
		return ret;
	node_run(n, 10 + index);
	return 0;
}

static void crash_model(struct env *e, bool with_new)
{
	uint64_t width = (uint64_t)e->k * e->unit;

	for (uint64_t off = 0; off < VOL; off += width)
		fill(e->model + off, width, 700 + off / width, off);
	if (with_new)
		fill(e->model + CRASH_OFF, CRASH_LEN, 999, CRASH_OFF);
}

/* A crash child's start (crash_child, missed_child): nodes on the given
 * dirs, a 2+1 layout, the base content written in full stripes and its
 * batched release gone out.  0, or the child's exit code for what failed. */
static int crash_child_base(const char *dirs, struct env **out)
{
	struct env *e = calloc(1, sizeof(*e));
	char d[3][512];

	*out = e;
	if (sscanf(dirs, "%511[^:]:%511[^:]:%511s", d[0], d[1], d[2]) != 3)
		return 2;
	e->k = 2;
	e->m = 1;
	e->n = 3;
	e->unit = 16 * KiB;
	e->chunk_size = tsr_ec_chunk_volume_size(VOL, 2, 16 * KiB);
	for (unsigned i = 0; i < 3; i++)
		if (node_init_at(&e->nodes[i], i, d[i], e->chunk_size) < 0)
			return 3;
	e->home = start_worker_or_skip(1);
	snprintf(e->state_dir, sizeof(e->state_dir), "%s", d[0]); /* removed with the node */
	e->model = calloc(1, VOL);
	e->buf = tsr_alloc_aligned(VOL);
	if (create(e, false, 1) < 0)
		return 5;
	crash_model(e, false);
	if (ldo(e->home, e->l, D_WRITE, 0, VOL, e->model, 0) != 0) /* full stripes only */
		return 6;
	/* the batched release goes out: else the recovery finds these txns
	 * staged too and rolls them forward with the crashed one (a fixed
	 * 300 ms sleep here was too short on a loaded machine: 33 rolled
	 * forward instead of 1) */
	if (!wait_released(e, 20000))
		return 8;
	return 0;
}

/* The child: the base, then the partial write that trips the switch.
 * Exit codes say what went wrong. */
static int crash_child(const char *dirs)
{
	struct env *e;
	int ret = crash_child_base(dirs, &e);

	if (ret)
		return ret;
	fill(e->buf, CRASH_LEN, 999, CRASH_OFF);
	ldo(e->home, e->l, D_WRITE, CRASH_OFF, CRASH_LEN, e->buf, 0);
	/* acknowledged at stage: committed:N fires after the ack; the switch
	 * kills this process, so waiting long costs nothing when it fires */
	for (int i = 0; i < 200; i++)
		usleep(100 * 1000);
	return 7; /* the switch did not fire */
}

/*
 * Run this binary again as a child with child_env set to three fresh store
 * directories (and TESSERA_EC_CRASH_POINT to point, if any); the child must
 * die by SIGKILL (a crash switch or its own killer).  Then a new coordinator
 * opens over the same stores: nodes re-initialized there, the layout created
 * at epoch 2.
 */
static void crash_child_then_reopen(struct env *e, const char *child_env, const char *point)
{
	char dirs[3][512], arg[1600], self[PATH_MAX];
	ssize_t n;
	pid_t pid;
	int wst;

	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(scratch_dir(dirs[i], sizeof(dirs[i])), 0);
	snprintf(arg, sizeof(arg), "%s:%s:%s", dirs[0], dirs[1], dirs[2]);
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	assert_true(n > 0);
	self[n] = '\0';
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		setenv(child_env, arg, 1);
		if (point)
			setenv("TESSERA_EC_CRASH_POINT", point, 1);
		execl(self, self, (char *)NULL);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &wst, 0), pid);
	if (!WIFSIGNALED(wst))
		print_message("child exited %d\n", WIFEXITED(wst) ? WEXITSTATUS(wst) : -1);
	assert_true(WIFSIGNALED(wst));
	assert_int_equal(WTERMSIG(wst), SIGKILL);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(node_init_at(&e->nodes[i], i, dirs[i], 0), 0);
	assert_int_equal(create(e, false, 2), 0);
}

static void crash_case(void **state, const char *point, int expect /* 0 old, 1 new, -1 either */)
{
	struct env *e = *state;
	struct tsr_layout_status s;

	crash_child_then_reopen(e, "EC_UT_CRASH_CHILD", point);
	get_status(e, &s);
	print_message("%s: rolled forward %llu, back %llu\n", point,
		      (unsigned long long)s.txn_rolled_forward,
		      (unsigned long long)s.txn_rolled_back);
	if (expect == -1)
		expect = s.txn_rolled_forward == 1;
	if (expect == 1)
		assert_int_equal(s.txn_rolled_forward, 1);
	else
		assert_int_equal(s.txn_rolled_forward, 0);
	crash_model(e, expect == 1);
	assert_reads_equal_model(e);
	assert_stripes_consistent(e, true);
}

static int setup_crash(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	e->k = 2;
	e->m = 1;
	e->n = 3;
	e->unit = 16 * KiB;
	e->chunk_size = tsr_ec_chunk_volume_size(VOL, 2, 16 * KiB);
	e->home = start_worker_or_skip(1);
	if (scratch_dir(e->state_dir, sizeof(e->state_dir)) < 0)
		return -1;
	e->model = calloc(1, VOL);
	e->buf = tsr_alloc_aligned(VOL);
	for (unsigned i = 0; i < e->n; i++)
		e->chunkvols[i] = malloc(e->chunk_size);
	if (tsr_ec_codec_create(2, 1, &e->codec) < 0)
		return -1;
	log_reset();
	*state = e;
	return 0;
}

/*
 * A missed chunk (its copy failed, the OUT_OF_SYNC record not yet landed) and
 * the coordinator dies: the missed position is not in the entry's
 * participants, so were the STAGEs out, the next recovery (the copy back and
 * still recorded IN_SYNC) would roll the txn forward and leave that chunk
 * stale.  The child: data chunk 1's copy of the stripe stopped and failed,
 * records held 3 s, the partial write (touching data chunk 1 and the parity),
 * SIGKILL 1 s later.  The STAGEs must wait for the record: nothing staged,
 * the old content everywhere, every stripe consistent.
 */
static unsigned g_missed_copy;

static bool missed_copy_failed(const struct tsr_layout_status *s)
{
	return s->copies[g_missed_copy].state != TSR_COPY_IN_SYNC;
}

static void *missed_killer(void *arg)
{
	(void)arg;
	usleep(1000 * 1000);
	raise(SIGKILL);
	return NULL;
}

static int missed_child(const char *dirs)
{
	struct env *e;
	pthread_t t;
	uint64_t stripe, off;
	int ret = crash_child_base(dirs, &e);

	if (ret)
		return ret;
	/* a stripe whose data chunk 1 is not on copy 0 (the state dir's node) */
	for (stripe = CRASH_STRIPE; tsr_ec_copy_of(stripe, 1, 2, 1) == 0; stripe++)
		;
	g_missed_copy = tsr_ec_copy_of(stripe, 1, 2, 1);
	off = stripe * 2 * 16 * KiB + 16 * KiB + 4 * KiB;
	pthread_mutex_lock(&g_log.lock);
	g_log.hook_delay_ms = 3000;
	pthread_mutex_unlock(&g_log.lock);
	node_stop(&e->nodes[g_missed_copy]);
	ldo(e->home, e->l, D_READ, 0, VOL, e->buf, 0); /* fails the copy */
	if (!wait_status(e, missed_copy_failed, 5000))
		return 10;
	if (pthread_create(&t, NULL, missed_killer, NULL) != 0)
		return 11;
	fill(e->buf, CRASH_LEN, 999, off);
	ldo(e->home, e->l, D_WRITE, off, CRASH_LEN, e->buf, 0);
	for (int i = 0; i < 100; i++)
		usleep(100 * 1000);
	return 7;
}

static void test_missed_before_record(void **state)
{
	struct env *e = *state;
	struct tsr_layout_status s;

	/* a new coordinator; every copy back and recorded IN_SYNC (the record
	 * never landed) */
	crash_child_then_reopen(e, "EC_UT_MISSED_CHILD", NULL);
	get_status(e, &s);
	print_message("missed: rolled forward %llu, back %llu\n",
		      (unsigned long long)s.txn_rolled_forward,
		      (unsigned long long)s.txn_rolled_back);
	crash_model(e, false);
	assert_stripes_consistent(e, false);
	assert_int_equal(s.txn_rolled_forward, 0);
	assert_reads_equal_model(e);
}

static void test_crash_staged_0(void **state)
{
	crash_case(state, "staged:0", 0);
}

static void test_crash_staged_1(void **state)
{
	crash_case(state, "staged:1", -1); /* the second stage may have landed too */
}

static void test_crash_committed_0(void **state)
{
	crash_case(state, "committed:0", 1);
}

static void test_crash_committed_1(void **state)
{
	crash_case(state, "committed:1", 1);
}

int main(void)
{
	const char *child = getenv("EC_UT_CRASH_CHILD");

	if (child != NULL)
		return crash_child(child);
	child = getenv("EC_UT_MISSED_CHILD");
	if (child != NULL)
		return missed_child(child);

	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_round_trip_2p1_local, setup_2p1, teardown),
	    cmocka_unit_test_setup_teardown(test_read_direct_2p1_local, setup_2p1, teardown),
	    cmocka_unit_test_setup_teardown(test_round_trip_4p2_remote, setup_4p2, teardown),
	    cmocka_unit_test_setup_teardown(test_overlapping_batch, setup_2p1, teardown),
	    cmocka_unit_test_setup_teardown(test_io_queue_full, setup_2p1, teardown),
	    cmocka_unit_test_setup_teardown(test_journal_bounded, setup_2p1, teardown),
	    cmocka_unit_test_setup_teardown(test_degraded_reads, setup_4p2, teardown),
	    cmocka_unit_test_setup_teardown(test_degraded_writes_resync, setup_4p2, teardown),
	    cmocka_unit_test_setup_teardown(test_resync_at_create, setup_4p2, teardown),
	    cmocka_unit_test_setup_teardown(test_below_min_in_sync, setup_2p1, teardown),
	    cmocka_unit_test_setup_teardown(test_hook_failure, setup_2p1, teardown),
	    cmocka_unit_test_setup_teardown(test_attach_timeout_records_nothing, setup_4p2,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_write_hole_recovery, setup_4p2, teardown),
	    cmocka_unit_test_setup_teardown(test_write_hole_recovery, setup_2p1, teardown),
	    cmocka_unit_test_setup_teardown(test_recovery_copy_away, setup_4p2, teardown),
	    cmocka_unit_test_setup_teardown(test_recovery_acked_copy_away, setup_4p2, teardown),
	    cmocka_unit_test_setup_teardown(test_dead_coordinator_copy_in_sync, setup_2p1,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_attach_fails_after_roll_forward, setup_4p2,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_attach_release_waits_for_record, setup_4p2,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_stale_epoch_fences, setup_2p1, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_opts, setup_2p1, teardown),
	    cmocka_unit_test_setup_teardown(test_scrub_repairs, setup_4p2, teardown),
	    cmocka_unit_test_setup_teardown(test_scrub_m1_unrepaired, setup_2p1, teardown),
	    cmocka_unit_test_setup_teardown(test_crc_error_read, setup_4p2, teardown),
	    cmocka_unit_test_setup_teardown(test_converge, setup_4p2, teardown),
	    cmocka_unit_test_setup_teardown(test_replace, setup_2p1, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot, setup_4p2, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_delete_enoent, setup_2p1, teardown),
	    cmocka_unit_test_setup_teardown(test_replace_recorded, setup_2p1, teardown),
	    cmocka_unit_test_setup_teardown(test_replace_recorded_source_gone, setup_2p1,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_missed_recorded, setup_2p1, teardown),
	    cmocka_unit_test_setup_teardown(test_crash_staged_0, setup_crash, teardown),
	    cmocka_unit_test_setup_teardown(test_crash_staged_1, setup_crash, teardown),
	    cmocka_unit_test_setup_teardown(test_crash_committed_0, setup_crash, teardown),
	    cmocka_unit_test_setup_teardown(test_crash_committed_1, setup_crash, teardown),
	    cmocka_unit_test_setup_teardown(test_missed_before_record, setup_crash, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
