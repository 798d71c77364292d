/*
 * The snapshot gate of engine/layout/layout.c (tsr_layout_snap): writes,
 * trims and write-zeroes that arrive while a snapshot is pending are held and
 * released in arrival order; reads, flushes and block status pass; the snap
 * op runs only once the writes in flight completed, so the cut holds exactly
 * the writes completed before it; errors reach the right callback.
 *
 * Most tests drive a scripted layout (a struct tsr_layout_ops whose
 * operations park their callbacks until the test completes them); the last
 * one runs the local layout over a real store and reads the cut back through
 * a "VOL@SNAP" layout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "tessera/layout_module.h"
#include "../store/store_test.h"

/* ---- a scripted layout ---- */

#define MAX_OPS 64

enum op_kind { K_READ, K_WRITE, K_FLUSH, K_TRIM, K_ZEROES, K_SNAP };

struct op {
	enum op_kind kind;
	uint64_t offset;
	tsr_cb cb_fn;
	void *cb_arg;
	bool done;
};

struct fake {
	struct op ops[MAX_OPS]; /* every call that reached the layout, in order */
	unsigned n;
	int fail_next;          /* returned (synchronously) by the next write-type op */
	int snap_ret;           /* snap op's return value */
	bool snap_sync;         /* snap op calls back at once with snap_status */
	int snap_status;
	uint64_t seen[MAX_OPS]; /* offsets of the writes completed when the snap ran */
	unsigned n_seen;
	struct tsr_snap_req last_req;
};

static struct op *record(struct fake *f, enum op_kind kind, uint64_t offset, tsr_cb cb_fn,
			 void *cb_arg)
{
	struct op *o;

	assert_true(f->n < MAX_OPS);
	o = &f->ops[f->n++];
	o->kind = kind;
	o->offset = offset;
	o->cb_fn = cb_fn;
	o->cb_arg = cb_arg;
	return o;
}

static uint64_t fake_size(void *ctx)
{
	return 1 << 20;
}

static int fake_read(void *ctx, struct tsr_io *io, uint64_t offset, uint32_t len, void *buf,
		     tsr_cb cb_fn, void *cb_arg)
{
	record(ctx, K_READ, offset, cb_fn, cb_arg);
	return 0;
}

static int write_type(struct fake *f, enum op_kind kind, uint64_t offset, tsr_cb cb_fn,
		      void *cb_arg)
{
	if (f->fail_next) {
		int ret = f->fail_next;

		f->fail_next = 0;
		return ret;
	}
	record(f, kind, offset, cb_fn, cb_arg);
	return 0;
}

static int fake_write(void *ctx, struct tsr_io *io, uint64_t offset, uint32_t len,
		      const void *buf, unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	return write_type(ctx, K_WRITE, offset, cb_fn, cb_arg);
}

static int fake_flush(void *ctx, struct tsr_io *io, tsr_cb cb_fn, void *cb_arg)
{
	record(ctx, K_FLUSH, 0, cb_fn, cb_arg);
	return 0;
}

static int fake_trim(void *ctx, struct tsr_io *io, uint64_t offset, uint64_t len, tsr_cb cb_fn,
		     void *cb_arg)
{
	return write_type(ctx, K_TRIM, offset, cb_fn, cb_arg);
}

static int fake_zeroes(void *ctx, struct tsr_io *io, uint64_t offset, uint64_t len,
		       unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	return write_type(ctx, K_ZEROES, offset, cb_fn, cb_arg);
}

static int fake_snap(void *ctx, const struct tsr_snap_req *req, tsr_cb cb_fn, void *cb_arg)
{
	struct fake *f = ctx;
	unsigned i;

	/* the cut: which write-type ops have completed by now, and none in flight */
	f->n_seen = 0;
	for (i = 0; i < f->n; i++) {
		if (f->ops[i].kind == K_READ || f->ops[i].kind == K_FLUSH ||
		    f->ops[i].kind == K_SNAP)
			continue;
		assert_true(f->ops[i].done); /* nothing in flight at the cut */
		f->seen[f->n_seen++] = f->ops[i].offset;
	}
	f->last_req = *req;
	if (f->snap_ret)
		return f->snap_ret;
	if (f->snap_sync) {
		record(f, K_SNAP, 0, NULL, NULL)->done = true;
		cb_fn(cb_arg, f->snap_status);
		return 0;
	}
	record(f, K_SNAP, 0, cb_fn, cb_arg);
	return 0;
}

static void fake_destroy(void *ctx)
{
}

static const struct tsr_layout_ops fake_ops = {
	.name = "fake",
	.size = fake_size,
	.read = fake_read,
	.write = fake_write,
	.flush = fake_flush,
	.trim = fake_trim,
	.write_zeroes = fake_zeroes,
	.snap = fake_snap,
	.destroy = fake_destroy,
};

static const struct tsr_layout_ops nosnap_ops = {
	.name = "nosnap",
	.size = fake_size,
	.read = fake_read,
	.write = fake_write,
	.flush = fake_flush,
	.trim = fake_trim,
	.write_zeroes = fake_zeroes,
	.destroy = fake_destroy,
};

/* Complete the layout's op i with status. */
static void complete(struct fake *f, unsigned i, int status)
{
	assert_true(i < f->n);
	assert_false(f->ops[i].done);
	f->ops[i].done = true;
	f->ops[i].cb_fn(f->ops[i].cb_arg, status);
}

/* Callback log of the caller's side: which request (by tag) finished how. */
struct calls {
	int tag[MAX_OPS];
	int status[MAX_OPS];
	unsigned n;
};
struct tagged {
	struct calls *c;
	int tag;
};

static void tagged_cb(void *arg, int status)
{
	struct tagged *t = arg;

	t->c->tag[t->c->n] = t->tag;
	t->c->status[t->c->n] = status;
	t->c->n++;
}

static struct tsr_snap_req snap_req(const char *name)
{
	struct tsr_snap_req r = { .op = TSR_SNAP_CREATE };

	snprintf(r.snap, sizeof(r.snap), "%s", name);
	return r;
}

/* ---- tests ---- */

static void test_held_in_order_reads_pass(void **state)
{
	struct fake f = { 0 };
	struct tsr_layout *l;
	struct calls c = { 0 };
	struct tagged t[8];
	struct tsr_snap_req req = snap_req("s1");
	char buf[BS];
	unsigned i;

	for (i = 0; i < 8; i++)
		t[i] = (struct tagged){ &c, (int)i };
	assert_int_equal(tsr_layout_new(&fake_ops, &f, &l), 0);
	/* W0 and W1 in flight when the snapshot is asked for */
	assert_int_equal(tsr_layout_write(l, NULL, 0, BS, buf, 0, tagged_cb, &t[0]), 0);
	assert_int_equal(tsr_layout_write(l, NULL, BS, BS, buf, 0, tagged_cb, &t[1]), 0);
	assert_int_equal(tsr_layout_snap(l, &req, tagged_cb, &t[7]), 0);
	assert_int_equal(f.n, 2); /* the snap waits for W0 and W1 */
	/* held: write, trim, write-zeroes; passing: read, flush, block status */
	assert_int_equal(tsr_layout_write(l, NULL, 2 * BS, BS, buf, 0, tagged_cb, &t[2]), 0);
	assert_int_equal(tsr_layout_trim(l, NULL, 3 * BS, BS, tagged_cb, &t[3]), 0);
	assert_int_equal(tsr_layout_write_zeroes(l, NULL, 4 * BS, BS, 0, tagged_cb, &t[4]), 0);
	assert_int_equal(tsr_layout_read(l, NULL, 0, BS, buf, tagged_cb, &t[5]), 0);
	assert_int_equal(tsr_layout_flush(l, NULL, tagged_cb, &t[6]), 0);
	assert_int_equal(f.n, 4);
	assert_int_equal(f.ops[2].kind, K_READ);
	assert_int_equal(f.ops[3].kind, K_FLUSH);
	{
		struct tsr_extent ext[1];
		size_t count = 0;

		assert_int_equal(tsr_layout_block_status(l, 0, BS, ext, 1, &count), 0);
		assert_int_equal(count, 1);
	}
	complete(&f, 2, 0); /* the read finishes while writes are held */
	complete(&f, 3, 0);
	complete(&f, 1, 0);
	assert_int_equal(f.n, 4); /* W0 still in flight: no cut yet */
	complete(&f, 0, 0);
	/* the cut ran, saw W0 and W1 only, and is waiting for its own completion */
	assert_int_equal(f.n, 5);
	assert_int_equal(f.ops[4].kind, K_SNAP);
	assert_int_equal(f.n_seen, 2);
	assert_string_equal(f.last_req.snap, "s1");
	complete(&f, 4, 0);
	/* the snapshot's callback, then the held ones passed in arrival order */
	assert_int_equal(f.n, 8);
	assert_int_equal(f.ops[5].kind, K_WRITE);
	assert_int_equal(f.ops[5].offset, 2 * BS);
	assert_int_equal(f.ops[6].kind, K_TRIM);
	assert_int_equal(f.ops[6].offset, 3 * BS);
	assert_int_equal(f.ops[7].kind, K_ZEROES);
	assert_int_equal(f.ops[7].offset, 4 * BS);
	complete(&f, 5, 0);
	complete(&f, 6, 0);
	complete(&f, 7, 0);
	/* caller callbacks: read 5, flush 6, W1, W0, snap 7, then 2, 3, 4 */
	{
		int want[] = { 5, 6, 1, 0, 7, 2, 3, 4 };

		assert_int_equal(c.n, 8);
		for (i = 0; i < 8; i++) {
			assert_int_equal(c.tag[i], want[i]);
			assert_int_equal(c.status[i], 0);
		}
	}
	/* the gate is open: a write goes straight through */
	assert_int_equal(tsr_layout_write(l, NULL, 0, BS, buf, 0, tagged_cb, &t[0]), 0);
	assert_int_equal(f.n, 9);
	complete(&f, 8, 0);
	tsr_layout_destroy(l);
}

static void test_idle_snap_runs_at_once(void **state)
{
	struct fake f = { .snap_sync = true };
	struct tsr_layout *l;
	struct calls c = { 0 };
	struct tagged t = { &c, 1 };
	struct tsr_snap_req req = { .op = TSR_SNAP_CLONE };
	char buf[BS];

	snprintf(req.clone, sizeof(req.clone), "c1");
	assert_int_equal(tsr_layout_new(&fake_ops, &f, &l), 0);
	assert_int_equal(tsr_layout_snap(l, &req, tagged_cb, &t), 0);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.status[0], 0);
	assert_int_equal(f.last_req.op, TSR_SNAP_CLONE);
	assert_string_equal(f.last_req.clone, "c1");
	assert_int_equal(f.n_seen, 0);
	assert_int_equal(tsr_layout_write(l, NULL, 0, BS, buf, 0, tagged_cb, &t), 0);
	assert_int_equal(f.n, 2);
	complete(&f, 1, 0);
	assert_int_equal(c.n, 2);
	tsr_layout_destroy(l);
}

/* A second snapshot waits behind the first and cuts after the writes between. */
static void test_second_snap_waits(void **state)
{
	struct fake f = { 0 };
	struct tsr_layout *l;
	struct calls c = { 0 };
	struct tagged t[6];
	struct tsr_snap_req r1 = snap_req("s1"), r2 = snap_req("s2");
	char buf[BS];
	unsigned i;

	for (i = 0; i < 6; i++)
		t[i] = (struct tagged){ &c, (int)i };
	assert_int_equal(tsr_layout_new(&fake_ops, &f, &l), 0);
	assert_int_equal(tsr_layout_write(l, NULL, 0, BS, buf, 0, tagged_cb, &t[0]), 0); /* op 0 */
	assert_int_equal(tsr_layout_snap(l, &r1, tagged_cb, &t[1]), 0);
	assert_int_equal(tsr_layout_write(l, NULL, BS, BS, buf, 0, tagged_cb, &t[2]), 0);
	assert_int_equal(tsr_layout_snap(l, &r2, tagged_cb, &t[3]), 0);
	assert_int_equal(tsr_layout_write(l, NULL, 2 * BS, BS, buf, 0, tagged_cb, &t[4]), 0);
	assert_int_equal(f.n, 1);
	complete(&f, 0, 0);
	assert_int_equal(f.n, 2); /* s1 running */
	assert_string_equal(f.last_req.snap, "s1");
	assert_int_equal(f.n_seen, 1);
	complete(&f, 1, 0);
	/* s1 done: the write between the two passes, s2 waits for it, the last is held */
	assert_int_equal(f.n, 3);
	assert_int_equal(f.ops[2].kind, K_WRITE);
	assert_int_equal(f.ops[2].offset, BS);
	complete(&f, 2, 0);
	assert_int_equal(f.n, 4); /* s2 running */
	assert_string_equal(f.last_req.snap, "s2");
	assert_int_equal(f.n_seen, 2);
	assert_int_equal(f.seen[1], BS);
	complete(&f, 3, 0);
	assert_int_equal(f.n, 5);
	assert_int_equal(f.ops[4].offset, 2 * BS);
	complete(&f, 4, 0);
	{
		int want[] = { 0, 1, 2, 3, 4 };

		assert_int_equal(c.n, 5);
		for (i = 0; i < 5; i++)
			assert_int_equal(c.tag[i], want[i]);
	}
	tsr_layout_destroy(l);
}

static void test_errors(void **state)
{
	struct fake f = { 0 };
	struct tsr_layout *l;
	struct calls c = { 0 };
	struct tagged t[4];
	struct tsr_snap_req req = snap_req("s1");
	char buf[BS];
	unsigned i;

	for (i = 0; i < 4; i++)
		t[i] = (struct tagged){ &c, (int)i };
	/* a layout without snapshots */
	assert_int_equal(tsr_layout_new(&nosnap_ops, &f, &l), 0);
	assert_int_equal(tsr_layout_snap(l, &req, tagged_cb, &t[0]), -EOPNOTSUPP);
	tsr_layout_destroy(l);
	assert_int_equal(c.n, 0);

	/* the snap op refuses at once: the callback gets its error, writes go on */
	assert_int_equal(tsr_layout_new(&fake_ops, &f, &l), 0);
	f.snap_ret = -EIO;
	assert_int_equal(tsr_layout_write(l, NULL, 0, BS, buf, 0, tagged_cb, &t[0]), 0);
	assert_int_equal(tsr_layout_snap(l, &req, tagged_cb, &t[1]), 0);
	assert_int_equal(tsr_layout_write(l, NULL, BS, BS, buf, 0, tagged_cb, &t[2]), 0);
	assert_int_equal(f.n, 1);
	complete(&f, 0, -ENOSPC); /* a failed write still leaves the flight */
	assert_int_equal(c.n, 2);
	assert_int_equal(c.tag[0], 0);
	assert_int_equal(c.status[0], -ENOSPC);
	assert_int_equal(c.tag[1], 1);
	assert_int_equal(c.status[1], -EIO);
	assert_int_equal(f.n, 2); /* the held write passed */
	complete(&f, 1, 0);
	assert_int_equal(c.n, 3);

	/* the snap op fails later: same */
	f.snap_ret = 0;
	assert_int_equal(tsr_layout_snap(l, &req, tagged_cb, &t[3]), 0);
	assert_int_equal(f.ops[f.n - 1].kind, K_SNAP);
	complete(&f, f.n - 1, -EEXIST);
	assert_int_equal(c.n, 4);
	assert_int_equal(c.tag[3], 3);
	assert_int_equal(c.status[3], -EEXIST);

	/* a held write the layout refuses when released: its own callback says so */
	c.n = 0;
	f.snap_sync = false;
	assert_int_equal(tsr_layout_write(l, NULL, 0, BS, buf, 0, tagged_cb, &t[0]), 0);
	assert_int_equal(tsr_layout_snap(l, &req, tagged_cb, &t[1]), 0);
	assert_int_equal(tsr_layout_write(l, NULL, BS, BS, buf, 0, tagged_cb, &t[2]), 0);
	complete(&f, f.n - 1, 0);       /* the write: the snap runs */
	f.fail_next = -EINVAL;
	complete(&f, f.n - 1, 0);       /* the snap: the held write is refused */
	assert_int_equal(c.n, 3);
	assert_int_equal(c.tag[2], 2);
	assert_int_equal(c.status[2], -EINVAL);
	/* range checks still come first, and are synchronous */
	assert_int_equal(tsr_layout_write(l, NULL, 1 << 20, BS, buf, 0, tagged_cb, &t[0]),
			 -ENOSPC);
	tsr_layout_destroy(l);
}

/* A held write that meets a full I/O queue on release is retried, in order. */
static void test_replay_queue_full(void **state)
{
	struct fake f = { 0 };
	struct tsr_layout *l;
	struct calls c = { 0 };
	struct tagged t[5];
	struct tsr_snap_req req = snap_req("s1");
	char buf[BS];
	unsigned i;

	for (i = 0; i < 5; i++)
		t[i] = (struct tagged){ &c, (int)i };
	assert_int_equal(tsr_layout_new(&fake_ops, &f, &l), 0);
	assert_int_equal(tsr_layout_write(l, NULL, 0, BS, buf, 0, tagged_cb, &t[0]), 0);
	assert_int_equal(tsr_layout_snap(l, &req, tagged_cb, &t[1]), 0);
	assert_int_equal(tsr_layout_write(l, NULL, BS, BS, buf, 0, tagged_cb, &t[2]), 0);
	assert_int_equal(tsr_layout_write(l, NULL, 2 * BS, BS, buf, 0, tagged_cb, &t[3]), 0);
	complete(&f, 0, 0);
	f.fail_next = -EAGAIN;
	complete(&f, 1, 0); /* the snap: the first held write finds the queue full */
	assert_int_equal(f.n, 2);
	/* a new write keeps its place behind the held ones */
	assert_int_equal(tsr_layout_write(l, NULL, 3 * BS, BS, buf, 0, tagged_cb, &t[4]), 0);
	assert_int_equal(f.n, 5);
	assert_int_equal(f.ops[2].offset, BS);
	assert_int_equal(f.ops[3].offset, 2 * BS);
	assert_int_equal(f.ops[4].offset, 3 * BS);
	for (i = 2; i < 5; i++)
		complete(&f, i, 0);
	assert_int_equal(c.n, 5);
	for (i = 0; i < 5; i++)
		assert_int_equal(c.status[i], 0);
	tsr_layout_destroy(l);
}

/* ---- the local layout over a real store ---- */

static int lwait(struct tsr_io *io, struct done *d)
{
	return wait_done(io, d);
}

static int lwrite(struct tsr_layout *l, struct tsr_io *io, uint64_t off, void *buf)
{
	struct done d = { 0 };
	int ret = tsr_layout_write(l, io, off, BS, buf, 0, done_cb, &d);

	return ret ? ret : lwait(io, &d);
}

static int lread(struct tsr_layout *l, struct tsr_io *io, uint64_t off, void *buf)
{
	struct done d = { 0 };
	int ret = tsr_layout_read(l, io, off, BS, buf, done_cb, &d);

	return ret ? ret : lwait(io, &d);
}

static void test_local_snapshot_cut(void **state)
{
	struct tsr_io_opts io_opts = { .kind = TSR_IO_AUTO };
	struct tsr_store_opts sopts = { 0 };
	struct tsr_store *store = NULL;
	struct tsr_layout *l = NULL, *snap = NULL;
	struct tsr_io *io = NULL;
	struct done d = { 0 }, w1 = { 0 };
	struct tsr_snap_req req = snap_req("cut");
	char dir[PATH_MAX];
	uint8_t *a = tsr_alloc_aligned(BS), *b = tsr_alloc_aligned(BS), *r = tsr_alloc_aligned(BS);
	int ret;

	assert_int_equal(scratch_dir(dir, sizeof(dir)), 0);
	assert_int_equal(tsr_store_open(dir, &sopts, &store), 0);
	assert_int_equal(tsr_store_vol_create(store, "v", 1 << 20, NULL), 0);
	assert_int_equal(tsr_io_create(&io_opts, &io), 0);
	assert_int_equal(tsr_layout_local_create(store, "v", &l), 0);
	fill(a, BS, 1, 0);
	fill(b, BS, 2, 0);
	assert_int_equal(lwrite(l, io, 0, a), 0);
	/* a write in flight (queued, not submitted) when the cut is asked for */
	assert_int_equal(tsr_layout_write(l, io, BS, BS, a, 0, done_cb, &w1), 0);
	ret = tsr_layout_snap(l, &req, done_cb, &d);
	assert_int_equal(ret, 0);
	/* held behind the cut: must not be in the snapshot */
	{
		struct done w2 = { 0 };

		assert_int_equal(tsr_layout_write(l, io, 0, BS, b, 0, done_cb, &w2), 0);
		assert_int_equal(lwait(io, &w2), 0);
	}
	assert_int_equal(w1.calls, 1);
	assert_int_equal(d.calls, 1);
	if (d.status == -EOPNOTSUPP) {
		/* the store's snapshots are not in this build yet */
		tsr_layout_destroy(l);
		tsr_io_destroy(io);
		tsr_store_close(store);
		rm_rf(dir);
		tsr_free_aligned(a);
		tsr_free_aligned(b);
		tsr_free_aligned(r);
		skip();
	}
	assert_int_equal(d.status, 0);
	assert_int_equal(tsr_layout_local_create(store, "v@cut", &snap), 0);
	assert_int_equal(tsr_layout_size(snap), 1 << 20);
	assert_int_equal(lread(snap, io, 0, r), 0);
	assert_true(is_filled(r, BS, 1, 0));     /* the cut: before the held write */
	assert_int_equal(lread(snap, io, BS, r), 0);
	assert_true(is_filled(r, BS, 1, 0));     /* the in-flight write completed first */
	assert_int_equal(lread(l, io, 0, r), 0);
	assert_true(is_filled(r, BS, 2, 0));     /* the head has the held write */
	/* read-only: a write to the snapshot fails, the snap op is refused */
	{
		struct done wd = { 0 };

		ret = tsr_layout_write(snap, io, 0, BS, b, 0, done_cb, &wd);
		if (ret == 0)
			ret = lwait(io, &wd);
		assert_int_equal(ret, -EROFS);
		d.calls = 0;
		ret = tsr_layout_snap(snap, &req, done_cb, &d);
		assert_int_equal(ret, 0);
		assert_int_equal(d.calls, 1);
		assert_int_equal(d.status, -EROFS);
	}
	/* a second cut of the same name: the store's -EEXIST reaches the caller */
	d.calls = 0;
	assert_int_equal(tsr_layout_snap(l, &req, done_cb, &d), 0);
	assert_int_equal(d.status, -EEXIST);
	tsr_layout_destroy(snap);
	tsr_layout_destroy(l);
	tsr_io_destroy(io);
	tsr_store_close(store);
	rm_rf(dir);
	tsr_free_aligned(a);
	tsr_free_aligned(b);
	tsr_free_aligned(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_held_in_order_reads_pass),
		cmocka_unit_test(test_idle_snap_runs_at_once),
		cmocka_unit_test(test_second_snap_waits),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_replay_queue_full),
		cmocka_unit_test(test_local_snapshot_cut),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
