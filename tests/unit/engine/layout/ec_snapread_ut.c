/*
 * tsr_ec_diff_map (engine/layout/ec_snapread.c): chunk copies' diffs mapped
 * back to volume extents.  A model writes random volume blocks (some
 * reading as zeros), derives each copy's chunk-volume diff the way the ec
 * layout lays chunks out (data chunk p of stripe s on copy (p+s) mod (k+m)
 * at chunk offset s*unit + column; every parity chunk's same column), and
 * the mapped result must equal, extent for extent:
 *  - with every copy's diff: exactly the written blocks, flags kept;
 *  - with up to m copies missing: the written blocks of the answering
 *    copies, plus, for the missing copies' data chunks, every column a
 *    parity chunk of that stripe changed (flags 0);
 * more than m missing is -EHOSTUNREACH; bad geometry -EINVAL; extents past
 * the volume's size (a last, partial stripe) are clipped.
 *
 * And the read-only layout over a snapshot (tsr_layout_ec_snap_create), on
 * six in-process nodes (store + peer server each; copy 0 in the
 * coordinator's own store): the image read back equals the volume at the
 * cut, not the head; on a home worker whose io queue holds 4 operations, so
 * local chunk reads meet -EAGAIN and wait; with two chunk nodes stopped the
 * same bytes come back decoded; writes are -EROFS; a snapshot no copy holds
 * reads -EIO; bad arguments are -EINVAL.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mirror_test.h"
#include "tessera/ec.h"

#define BLK  4096u
#define NMAX (TSR_EC_MAX_K + TSR_EC_MAX_M)

static uint64_t g_rng = 0x243f6a8885a308d3ull;

static uint64_t rnd(uint64_t n)
{
	g_rng ^= g_rng << 13;
	g_rng ^= g_rng >> 7;
	g_rng ^= g_rng << 17;
	return g_rng % n;
}

/* Block states: 0 unchanged, 1 data, 2 zero. */
enum { UNCH = 0, DATA = 1, ZERO = 2 };

/* Runs of equal non-zero states as extents (flags: ZERO -> HOLE|ZERO). */
static struct tsr_extent *runs(const uint8_t *st, size_t nblk, size_t *n)
{
	struct tsr_extent *v = calloc(nblk + 1, sizeof(*v));
	size_t cnt = 0;

	assert_non_null(v);
	for (size_t b = 0; b < nblk;) {
		size_t e = b;

		if (st[b] == UNCH) {
			b++;
			continue;
		}
		while (e < nblk && st[e] == st[b])
			e++;
		v[cnt++] = (struct tsr_extent){ .offset = (uint64_t)b * BLK,
						.length = (uint64_t)(e - b) * BLK,
						.flags = st[b] == ZERO ?
							 TSR_EXTENT_HOLE | TSR_EXTENT_ZERO : 0 };
		b = e;
	}
	*n = cnt;
	return v;
}

struct model {
	unsigned k, m, n;
	uint32_t unit;
	uint64_t size, nstripes, chunk_size;
	size_t vblk, cblk;       /* volume blocks, chunk-volume blocks */
	uint8_t *vol;            /* vblk states */
	uint8_t *chunk[NMAX];    /* per copy, cblk states */
};

static void model_init(struct model *md, unsigned k, unsigned m, uint32_t unit, uint64_t size)
{
	memset(md, 0, sizeof(*md));
	md->k = k;
	md->m = m;
	md->n = k + m;
	md->unit = unit;
	md->size = size;
	md->nstripes = tsr_ec_stripes(size, k, unit);
	md->chunk_size = tsr_ec_chunk_volume_size(size, k, unit);
	md->vblk = size / BLK;
	md->cblk = md->chunk_size / BLK;
	md->vol = calloc(md->vblk, 1);
	assert_non_null(md->vol);
	for (unsigned c = 0; c < md->n; c++) {
		md->chunk[c] = calloc(md->cblk, 1);
		assert_non_null(md->chunk[c]);
	}
}

static void model_free(struct model *md)
{
	free(md->vol);
	for (unsigned c = 0; c < md->n; c++)
		free(md->chunk[c]);
}

/* Volume block b written (state st): its data chunk and every parity chunk
 * of the same stripe column change on their copies. */
static void model_write(struct model *md, size_t b, uint8_t st)
{
	uint64_t off = (uint64_t)b * BLK, u = off / md->unit;
	uint64_t stripe = u / md->k, col = off % md->unit;
	unsigned pos = (unsigned)(u % md->k);
	size_t cb = (size_t)((stripe * md->unit + col) / BLK);

	md->vol[b] = st;
	md->chunk[tsr_ec_copy_of(stripe, pos, md->k, md->m)][cb] = st;
	for (unsigned j = 0; j < md->m; j++)
		md->chunk[tsr_ec_copy_of(stripe, md->k + j, md->k, md->m)][cb] = DATA;
}

static void random_writes(struct model *md, unsigned count)
{
	for (unsigned i = 0; i < count; i++) {
		size_t b = (size_t)rnd(md->vblk), len = 1 + (size_t)rnd(md->unit / BLK * 3);
		uint8_t st = rnd(4) == 0 ? ZERO : DATA;

		for (size_t j = b; j < b + len && j < md->vblk; j++)
			model_write(md, j, st);
	}
}

/* What the map must give when the copies in missing_mask gave no diff. */
static uint8_t *expected(const struct model *md, uint32_t missing_mask)
{
	uint8_t *st = calloc(md->vblk, 1);

	assert_non_null(st);
	for (size_t b = 0; b < md->vblk; b++) {
		uint64_t off = (uint64_t)b * BLK, u = off / md->unit;
		uint64_t stripe = u / md->k, col = off % md->unit;
		unsigned pos = (unsigned)(u % md->k);
		size_t cb = (size_t)((stripe * md->unit + col) / BLK);

		if (!(missing_mask & (1u << tsr_ec_copy_of(stripe, pos, md->k, md->m)))) {
			st[b] = md->vol[b];
			continue;
		}
		for (unsigned j = 0; j < md->m; j++) {
			unsigned pc = tsr_ec_copy_of(stripe, md->k + j, md->k, md->m);

			if (!(missing_mask & (1u << pc)) && md->chunk[pc][cb] != UNCH)
				st[b] = DATA;
		}
	}
	return st;
}

static void check_map(const struct model *md, uint32_t missing_mask)
{
	struct tsr_ec_chunk_diff diffs[NMAX];
	struct tsr_extent *cext[NMAX], *out = NULL, *want;
	uint8_t *st = expected(md, missing_mask);
	size_t nwant, count = 0;

	for (unsigned c = 0; c < md->n; c++) {
		size_t cn;

		cext[c] = runs(md->chunk[c], md->cblk, &cn);
		diffs[c] = (struct tsr_ec_chunk_diff){ .ext = cext[c], .n = cn,
						       .have = !(missing_mask & (1u << c)) };
	}
	want = runs(st, md->vblk, &nwant);
	assert_int_equal(tsr_ec_diff_map(md->k, md->m, md->unit, md->size, diffs, &out, &count), 0);
	assert_int_equal(count, nwant);
	for (size_t i = 0; i < count; i++) {
		assert_int_equal(out[i].offset, want[i].offset);
		assert_int_equal(out[i].length, want[i].length);
		assert_int_equal(out[i].flags, want[i].flags);
	}
	free(out);
	free(want);
	free(st);
	for (unsigned c = 0; c < md->n; c++)
		free(cext[c]);
}

static void run_code(unsigned k, unsigned m, uint32_t unit, bool partial_last)
{
	uint64_t width = (uint64_t)k * unit;
	uint64_t size = 12 * width - (partial_last ? unit : 0);
	struct model md;

	for (unsigned round = 0; round < 6; round++) {
		model_init(&md, k, m, unit, size);
		random_writes(&md, 1 + round * 4);
		check_map(&md, 0);
		/* every single missing copy, and random sets of up to m */
		for (unsigned c = 0; c < md.n; c++)
			check_map(&md, 1u << c);
		for (unsigned t = 0; t < 8; t++) {
			uint32_t mask = 0;

			for (unsigned i = 0; i < m; i++)
				mask |= 1u << rnd(md.n);
			check_map(&md, mask);
		}
		model_free(&md);
	}
}

static void test_map_2_1(void **state)
{
	(void)state;
	run_code(2, 1, 4096, false);
	run_code(2, 1, 8192, true);
}

static void test_map_4_2(void **state)
{
	(void)state;
	run_code(4, 2, 16384, false);
	run_code(4, 2, 16384, true);
}

static void test_map_8_3(void **state)
{
	(void)state;
	run_code(8, 3, 65536, true);
}

static void test_map_empty(void **state)
{
	struct tsr_ec_chunk_diff diffs[6] = { 0 };
	struct tsr_extent *out = (void *)1;
	size_t count = 99;

	(void)state;
	for (unsigned c = 0; c < 6; c++)
		diffs[c].have = true;
	assert_int_equal(tsr_ec_diff_map(4, 2, 16384, 1 << 20, diffs, &out, &count), 0);
	assert_int_equal(count, 0);
	free(out);
}

/* One chunk extent crossing several stripes maps to one extent per stripe
 * (not contiguous in the volume), and the last stripe is clipped. */
static void test_map_crossing_and_clip(void **state)
{
	/* 2+1, 4 KiB unit: copy 0 holds position 0 of stripe 0, 2 of stripe 1
	 * (parity), 1 of stripe 2 */
	struct tsr_extent e0 = { .offset = 0, .length = 3 * 4096, .flags = 0 };
	struct tsr_ec_chunk_diff diffs[3] = {
		{ .ext = &e0, .n = 1, .have = true },
		{ .ext = NULL, .n = 0, .have = true },
		{ .ext = NULL, .n = 0, .have = true },
	};
	struct tsr_extent *out = NULL;
	size_t count = 0;

	(void)state;
	/* volume of 5 blocks: stripe 2 holds volume blocks 4 and 5, 5 past the end */
	assert_int_equal(tsr_ec_diff_map(2, 1, 4096, 5 * 4096, diffs, &out, &count), 0);
	assert_int_equal(count, 1);
	assert_int_equal(out[0].offset, 0);
	assert_int_equal(out[0].length, 4096); /* stripe 0 position 0; stripe 2 position 1 is block 5: clipped */
	free(out);
	assert_int_equal(tsr_ec_diff_map(2, 1, 4096, 6 * 4096, diffs, &out, &count), 0);
	assert_int_equal(count, 2);
	assert_int_equal(out[1].offset, 5 * 4096);
	assert_int_equal(out[1].length, 4096);
	free(out);
}

static void test_map_errors(void **state)
{
	struct tsr_ec_chunk_diff diffs[6] = { 0 };
	struct tsr_extent *out = NULL;
	size_t count = 0;

	(void)state;
	for (unsigned c = 0; c < 6; c++)
		diffs[c].have = c >= 3; /* 3 missing of 4+2 */
	assert_int_equal(tsr_ec_diff_map(4, 2, 16384, 1 << 20, diffs, &out, &count),
			 -EHOSTUNREACH);
	diffs[0].have = true;
	assert_int_equal(tsr_ec_diff_map(4, 2, 16384, 1 << 20, diffs, &out, &count), 0);
	free(out);
	assert_int_equal(tsr_ec_diff_map(0, 2, 16384, 1 << 20, diffs, &out, &count), -EINVAL);
	assert_int_equal(tsr_ec_diff_map(4, 5, 16384, 1 << 20, diffs, &out, &count), -EINVAL);
	assert_int_equal(tsr_ec_diff_map(4, 2, 12288, 1 << 20, diffs, &out, &count), -EINVAL);
	assert_int_equal(tsr_ec_diff_map(4, 2, 16384, 1 << 20, NULL, &out, &count), -EINVAL);
	assert_int_equal(tsr_ec_diff_map(4, 2, 16384, 1 << 20, diffs, NULL, &count), -EINVAL);
}


/* ---- the read-only layout over a snapshot ---------------------------------- */

#define RK    4u
#define RM    2u
#define RN    (RK + RM)
#define RUNIT (16u * 1024)
#define RVOL  (4ull * 1024 * 1024)

struct renv {
	struct node nodes[RN];
	struct tsr_worker *home;
	char state_dir[512];
	struct tsr_layout *l;
	uint8_t *at_cut, *head, *buf;
};

static int renv_setup(void **state)
{
	struct renv *e = calloc(1, sizeof(*e));
	struct tsr_io_opts io = {.kind = TSR_IO_AUTO, .queue_depth = 4};
	uint64_t chunk_size = tsr_ec_chunk_volume_size(RVOL, RK, RUNIT);
	int ret;

	for (unsigned i = 0; i < RN; i++)
		if (node_init(&e->nodes[i], i, chunk_size) < 0)
			return -1;
	ret = tsr_worker_start(1, &io, &e->home);
	if (ret == -ENOSYS || ret == -EPERM)
		exit(77);
	if (ret != 0 || scratch_dir(e->state_dir, sizeof(e->state_dir)) < 0)
		return -1;
	e->at_cut = malloc(RVOL);
	e->head = malloc(RVOL);
	e->buf = tsr_alloc_aligned(RVOL);
	*state = e;
	return 0;
}

static int renv_teardown(void **state)
{
	struct renv *e = *state;

	tsr_layout_destroy(e->l);
	hooks_settle();
	tsr_worker_stop(e->home);
	for (unsigned i = 0; i < RN; i++)
		node_fini(&e->nodes[i]);
	rm_rf(e->state_dir);
	free(e->at_cut);
	free(e->head);
	tsr_free_aligned(e->buf);
	free(e);
	return 0;
}

static int rcreate(struct renv *e)
{
	struct tsr_ec_opts o;

	memset(&o, 0, sizeof(o));
	o.name = VOLNAME;
	o.size = RVOL;
	o.k = RK;
	o.m = RM;
	o.stripe_unit = RUNIT;
	o.epoch = 1;
	o.store = e->nodes[0].store;
	o.state_dir = e->state_dir;
	o.home = e->home;
	o.node_id = "node0";
	o.token = TOKEN;
	o.n_copies = RN;
	o.peer_timeout_ms = 60000; /* a stopped node resets its connections at once */
	o.hooks.set_copy_state = test_set_copy_state;
	for (unsigned i = 0; i < RN; i++) {
		struct tsr_layout_copy *c = &o.copies[i];

		snprintf(c->node_id, sizeof(c->node_id), "%s", e->nodes[i].node_id);
		snprintf(c->address, sizeof(c->address), "%s", e->nodes[i].address);
		c->local = i == 0;
		c->state = TSR_COPY_IN_SYNC;
	}
	return tsr_layout_ec_create(&o, &e->l);
}

static int rsnap_create(struct renv *e, const char *name)
{
	return layout_snap(e->home, e->l, TSR_SNAP_CREATE, name);
}

/* The snapshot layout of name; its image read whole into e->buf. */
static int read_snapshot(struct renv *e, const char *name, struct tsr_layout **out)
{
	struct tsr_worker *home = NULL;
	struct tsr_layout *sl = NULL;
	int ret = tsr_layout_ec_snap_create(e->l, name, &sl, &home);

	if (ret)
		return ret;
	assert_ptr_equal(home, e->home);
	assert_true(tsr_layout_is_ec_snapshot(sl));
	assert_int_equal(tsr_layout_size(sl), RVOL);
	memset(e->buf, 0xee, RVOL);
	ret = ldo(e->home, sl, D_READ, 0, RVOL, e->buf, 0);
	if (out)
		*out = sl;
	else
		tsr_layout_destroy(sl);
	return ret;
}

static void test_snapshot_read(void **state)
{
	struct renv *e = *state;
	struct tsr_layout *sl = NULL;
	struct tsr_worker *home = NULL;

	assert_int_equal(rcreate(e), 0);
	/* the image at the cut: the whole volume written */
	fill(e->at_cut, RVOL, 11, 0);
	memcpy(e->buf, e->at_cut, RVOL);
	assert_int_equal(ldo(e->home, e->l, D_WRITE, 0, RVOL, e->buf, 0), 0);
	assert_int_equal(rsnap_create(e, "s1"), 0);
	/* the head moves on: partial and full stripes */
	memcpy(e->head, e->at_cut, RVOL);
	fill(e->head + 100 * 1024, 8 * 1024, 12, 100 * 1024);
	fill(e->head + 1024 * 1024, 80 * 1024, 13, 1024 * 1024);
	memcpy(e->buf, e->head + 100 * 1024, 8 * 1024);
	assert_int_equal(ldo(e->home, e->l, D_WRITE, 100 * 1024, 8 * 1024, e->buf, 0), 0);
	memcpy(e->buf, e->head + 1024 * 1024, 80 * 1024);
	assert_int_equal(ldo(e->home, e->l, D_WRITE, 1024 * 1024, 80 * 1024, e->buf, 0), 0);

	/* every copy there: the cut, read in one request (a piece per chunk,
	 * more local reads than the io queue holds) */
	assert_int_equal(read_snapshot(e, "s1", &sl), 0);
	assert_memory_equal(e->buf, e->at_cut, RVOL);
	/* small reads at odd places: inside a chunk, across chunks and stripes */
	{
		static const uint64_t offs[] = {0, 4096, 12 * 1024, 60 * 1024, 100 * 1024, RVOL - 4096};
		static const uint32_t lens[] = {4096, 8192, 8192, 12 * 1024, 64 * 1024 + 4096, 4096};

		for (unsigned i = 0; i < 6; i++) {
			assert_int_equal(ldo(e->home, sl, D_READ, offs[i], lens[i], e->buf, 0), 0);
			assert_memory_equal(e->buf, e->at_cut + offs[i], lens[i]);
		}
	}
	/* read-only */
	assert_int_equal(ldo(e->home, sl, D_WRITE, 0, 4096, e->buf, 0), -EROFS);
	assert_int_equal(ldo(e->home, sl, D_TRIM, 0, 4096, NULL, 0), -EROFS);
	assert_int_equal(ldo(e->home, sl, D_ZEROES, 0, 4096, NULL, 0), -EROFS);
	assert_int_equal(ldo(e->home, sl, D_FLUSH, 0, 0, NULL, 0), 0);
	tsr_layout_destroy(sl); /* from this thread: the home worker tears it down */
	sl = NULL;
	/* the head is the head */
	assert_int_equal(ldo(e->home, e->l, D_READ, 0, RVOL, e->buf, 0), 0);
	assert_memory_equal(e->buf, e->head, RVOL);

	/* a snapshot this node's chunk copy lacks (copy 0, in the coordinator's
	 * store): the other copies are asked at create, five hold it: decoded */
	assert_int_equal(rsnap_create(e, "s2"), 0);
	assert_int_equal(tsr_store_snap_delete(e->nodes[0].store, VOLNAME, "s2"), 0);
	assert_int_equal(read_snapshot(e, "s2", NULL), 0);
	assert_memory_equal(e->buf, e->head, RVOL);

	/* two chunk nodes gone (m = 2): decoded */
	node_stop(&e->nodes[2]);
	node_stop(&e->nodes[4]);
	assert_int_equal(read_snapshot(e, "s1", NULL), 0);
	assert_memory_equal(e->buf, e->at_cut, RVOL);
	/* s2 now on 3 reachable copies, 4 needed, 2 cannot be asked: refused
	 * at create (before: created, every read -EIO) */
	assert_int_equal(read_snapshot(e, "s2", NULL), -EHOSTUNREACH);

	/* a snapshot no copy holds: refused at create (before: -EIO at every
	 * read), bad arguments */
	assert_int_equal(read_snapshot(e, "nosuch", NULL), -ENOENT);
	/* a name only copy 0 holds while it is no source (a DELETE of it noted
	 * as missed: an old snapshot): refused, not opened to fail every read */
	{
		char path[1024];
		FILE *f;

		assert_int_equal(tsr_store_snap_create(e->nodes[0].store, VOLNAME, "old", NULL), 0);
		snprintf(path, sizeof(path), "%s/%s.%s.snaps", e->state_dir, VOLNAME,
			 e->nodes[0].node_id);
		f = fopen(path, "w");
		assert_non_null(f);
		fputs("d old\n", f);
		fclose(f);
		assert_int_equal(read_snapshot(e, "old", NULL), -ENOENT);
		unlink(path);
		assert_int_equal(tsr_store_snap_delete(e->nodes[0].store, VOLNAME, "old"), 0);
	}
	assert_int_equal(tsr_layout_ec_snap_create(e->l, "bad name", &sl, &home), -EINVAL);
	assert_int_equal(tsr_layout_ec_snap_create(NULL, "s1", &sl, &home), -EINVAL);
	/* created and destroyed before its start ran */
	assert_int_equal(tsr_layout_ec_snap_create(e->l, "s1", &sl, &home), 0);
	tsr_layout_destroy(sl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_map_2_1),
	    cmocka_unit_test(test_map_4_2),
	    cmocka_unit_test(test_map_8_3),
	    cmocka_unit_test(test_map_empty),
	    cmocka_unit_test(test_map_crossing_and_clip),
	    cmocka_unit_test(test_map_errors),
	    cmocka_unit_test_setup_teardown(test_snapshot_read, renv_setup, renv_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
