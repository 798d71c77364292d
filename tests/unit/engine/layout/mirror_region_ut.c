/*
 * Unit tests of the mirror layout with a dirty-region size over the largest
 * single request (TSR_MAX_IO, 32 MiB for READ/WRITE and a store read; 64 MiB
 * for a peer SUMS): a 128 MiB region, a 160 MiB volume (region 0 is 128 MiB,
 * region 1 32 MiB).  The resync's region copies, its compare (full resync,
 * a replaced copy) and the make-up of missed snapshots must go in pieces;
 * before they did, a copy that came back stayed out of sync (every piece of
 * work failed -EINVAL, the SUMS -EINVAL / -EMSGSIZE).  Same harness as
 * mirror_ut.c (mirror_test.h): three nodes, real stores, peer servers on
 * 127.0.0.1.
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

#include "mirror_test.h"

#define MiB    (1024ull * 1024)
#define VOL    (160 * MiB)
#define REGION (128u << 20)

struct env {
	struct node nodes[3];
	struct tsr_worker *home;
	char state_dir[512];
	uint8_t *model; /* what the volume must contain */
	uint8_t *file;  /* a node's data file */
	uint8_t *buf;
	struct tsr_layout *l;
};

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	for (unsigned i = 0; i < 3; i++)
		if (node_init(&e->nodes[i], i, VOL) < 0)
			return -1;
	e->home = start_worker_or_skip(1);
	if (scratch_dir(e->state_dir, sizeof(e->state_dir)) < 0)
		return -1;
	e->model = calloc(1, VOL);
	e->file = malloc(VOL);
	e->buf = tsr_alloc_aligned(8 * MiB);
	log_reset();
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	tsr_layout_destroy(e->l);
	while (__atomic_load_n(&g_log.hooks_inflight, __ATOMIC_SEQ_CST) > 0)
		usleep(1000);
	tsr_worker_stop(e->home);
	for (unsigned i = 0; i < 3; i++)
		node_fini(&e->nodes[i]);
	rm_rf(e->state_dir);
	free(e->model);
	free(e->file);
	tsr_free_aligned(e->buf);
	free(e);
	return 0;
}

static void opts_init(struct env *e, struct tsr_mirror_opts *o, bool local)
{
	memset(o, 0, sizeof(*o));
	o->name = VOLNAME;
	o->size = VOL;
	o->epoch = 1;
	o->store = e->nodes[0].store;
	o->state_dir = e->state_dir;
	o->home = e->home;
	o->node_id = "node0";
	o->token = TOKEN;
	o->n_copies = 3;
	o->min_replicas = 2;
	o->peer_timeout_ms = 5000;
	o->write_wait_ms = 5000;
	o->region_size = REGION;
	o->hooks.set_copy_state = test_set_copy_state;
	for (unsigned i = 0; i < 3; i++) {
		struct tsr_layout_copy *c = &o->copies[i];

		snprintf(c->node_id, sizeof(c->node_id), "%s", e->nodes[i].node_id);
		snprintf(c->address, sizeof(c->address), "%s", e->nodes[i].address);
		c->local = local && i == 0;
		c->state = TSR_COPY_IN_SYNC;
	}
}

static int lwrite(struct env *e, uint64_t off, uint32_t len, uint64_t seed, unsigned flags)
{
	fill(e->buf, len, seed, off);
	memcpy(e->model + off, e->buf, len);
	return ldo(e->home, e->l, D_WRITE, off, len, e->buf, flags);
}

/* A node's data file (its head) equals want. */
static void assert_file_equals(struct node *n, uint8_t *file, const uint8_t *want)
{
	assert_int_equal(node_read_all(n, file, VOL), 0);
	for (uint64_t b = 0; b < VOL / BS; b++)
		if (memcmp(file + b * BS, want + b * BS, BS) != 0) {
			print_message("%s differs at block %llu\n", n->node_id,
				      (unsigned long long)b);
			fail();
		}
}

static bool wait_status(struct env *e, bool (*pred)(const struct tsr_layout_status *), unsigned ms)
{
	struct tsr_layout_status s;
	uint64_t end = mono_ms() + ms;

	do {
		tsr_layout_get_status(e->l, &s);
		if (pred(&s))
			return true;
		usleep(10000);
	} while (mono_ms() < end);
	return false;
}

struct scall {
	struct tsr_layout *l;
	struct tsr_snap_req req;
	int ret, status;
	sem_t done;
};

static void scall_cb(void *arg, int status)
{
	struct scall *c = arg;

	c->status = status;
	sem_post(&c->done);
}

static void scall_msg(struct tsr_worker *w, void *arg)
{
	struct scall *c = arg;

	(void)w;
	int ret = tsr_layout_snap(c->l, &c->req, scall_cb, c);

	if (ret != 0) {
		c->ret = ret;
		sem_post(&c->done);
	}
}

static int lsnap(struct env *e, enum tsr_snap_op op, const char *snap)
{
	struct scall c = {.l = e->l, .req = {.op = op}};

	snprintf(c.req.snap, sizeof(c.req.snap), "%s", snap);
	sem_init(&c.done, 0, 0);
	if (tsr_worker_send(e->home, scall_msg, &c) != 0)
		abort();
	if (sem_wait_ms(&c.done, 20000) != 0)
		return -ETIMEDOUT;
	sem_destroy(&c.done);
	return c.ret != 0 ? c.ret : c.status;
}

/* The image of VOLNAME@snap in store equals want (VOL bytes). */
static void assert_snap_equals(struct env *e, struct tsr_store *store, const char *who,
			       const char *snap, const uint8_t *want)
{
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
	struct tsr_svol *v = NULL;

	assert_non_null(io);
	assert_int_equal(tsr_store_snap_open(store, VOLNAME, snap, &v), 0);
	for (uint64_t off = 0; off < VOL; off += 8 * MiB) {
		assert_int_equal(sread(v, io, off, 8 * MiB, e->buf), 0);
		if (memcmp(e->buf, want + off, 8 * MiB) != 0) {
			print_message("%s: %s@%s differs in [%llu, +8 MiB)\n", who, VOLNAME, snap,
				      (unsigned long long)off);
			fail();
		}
	}
	tsr_svol_put(v);
	tsr_io_destroy(io);
}

/* Data in both regions, beyond 32 and 64 MiB into region 0. */
static void write_pattern(struct env *e, uint64_t seed)
{
	assert_int_equal(lwrite(e, 0, 2 * MiB, seed, 0), 0);
	assert_int_equal(lwrite(e, 40 * MiB, MiB, seed + 1, 0), 0);
	assert_int_equal(lwrite(e, 100 * MiB, 3 * MiB, seed + 2, 0), 0);
	assert_int_equal(lwrite(e, 150 * MiB, MiB, seed + 3, 0), 0);
}

static void scrub_clean(struct env *e)
{
	struct tsr_layout_status s;

	assert_int_equal(tsr_layout_scrub_start(e->l, false), 0);
	assert_true(wait_status(e, scrub_finished, 60000));
	tsr_layout_get_status(e->l, &s);
	assert_int_equal(s.scrub_mismatches, 0);
	assert_int_equal(s.scrub_unrepaired, 0);
	/* the resync's copy buffers (since the layout opened): one piece
	 * (MIRROR_IO_PIECE, 32 MiB) at most, not a 128 MiB region; one copy in
	 * flight at a time (a region over the in-flight bound goes alone) */
	assert_true(s.copy_buf_bytes_max > 0);
	assert_true(s.copy_buf_bytes_max <= 32 * MiB);
}

/*
 * A copy away while a snapshot is cut and region 0 is written: on its return
 * the snapshot is made up (sums of a 128 MiB region) and the dirty regions
 * copied; every copy then holds the snapshot's image and the head.
 */
static void missed_snapshot(void **state, bool local)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	uint8_t *at_away = malloc(VOL);

	opts_init(e, &o, local);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	write_pattern(e, 1);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s1"), 0);
	node_stop(&e->nodes[2]);
	write_pattern(e, 10);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "away"), 0);
	memcpy(at_away, e->model, VOL);
	assert_int_equal(lwrite(e, 90 * MiB, 2 * MiB, 20, 0), 0); /* after the cut */
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);

	node_run(&e->nodes[2], 12);
	tsr_layout_copy_returned(e->l, 2, e->nodes[2].address);
	assert_true(wait_status(e, all_in_sync, 60000));
	for (unsigned n = 0; n < 3; n++)
		assert_snap_equals(e, e->nodes[n].store, e->nodes[n].node_id, "away", at_away);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	for (unsigned n = 0; n < 3; n++)
		assert_file_equals(&e->nodes[n], e->file, e->model);
	scrub_clean(e);
	free(at_away);
}

static void test_missed_snapshot_local(void **state)
{
	missed_snapshot(state, true);
}

static void test_missed_snapshot_remote(void **state)
{
	missed_snapshot(state, false);
}

/*
 * A copy replaced (coordinator with no copy, snapshots read from remote
 * sessions): the new copy's snapshots made up, then its head compared
 * (head_imaged: SUMS of 128 MiB regions) and only what differs copied.
 */
static void test_replace_compare(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_copy nc = {.state = TSR_COPY_OUT_OF_SYNC, .full_resync = true};
	uint8_t *at_s1 = malloc(VOL);
	struct node n3;

	opts_init(e, &o, false);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	write_pattern(e, 1);
	assert_int_equal(lsnap(e, TSR_SNAP_CREATE, "s1"), 0);
	memcpy(at_s1, e->model, VOL);
	assert_int_equal(lwrite(e, 70 * MiB, MiB, 2, 0), 0);
	node_stop(&e->nodes[2]);

	assert_int_equal(node_init(&n3, 3, VOL), 0);
	snprintf(nc.node_id, sizeof(nc.node_id), "%s", n3.node_id);
	snprintf(nc.address, sizeof(nc.address), "%s", n3.address);
	nc.missed = "c s1\n";
	assert_int_equal(tsr_layout_replace_copy(e->l, 2, &nc), 0);
	assert_true(wait_status(e, all_in_sync, 60000));
	assert_snap_equals(e, n3.store, "node3", "s1", at_s1);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	assert_file_equals(&n3, e->file, e->model);
	scrub_clean(e);
	tsr_layout_destroy(e->l);
	e->l = NULL;
	node_fini(&n3);
	free(at_s1);
}

/* An existing copy with every region dirty (lost bitmap): compared at create. */
static void test_full_resync_compare(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;

	opts_init(e, &o, true);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	write_pattern(e, 1);
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	tsr_layout_destroy(e->l);
	e->l = NULL;
	/* copy 2 differs in a block 100 MiB in, behind the layout */
	fill(e->buf, BS, 99, 0);
	assert_int_equal(node_store_write(&e->nodes[2], 101 * MiB, BS, e->buf), 0);

	opts_init(e, &o, true);
	o.epoch = 2;
	o.copies[2].state = TSR_COPY_OUT_OF_SYNC;
	o.copies[2].full_resync = true;
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_true(wait_status(e, all_in_sync, 60000));
	assert_int_equal(ldo(e->home, e->l, D_FLUSH, 0, 0, NULL, 0), 0);
	for (unsigned n = 0; n < 3; n++)
		assert_file_equals(&e->nodes[n], e->file, e->model);
	scrub_clean(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_missed_snapshot_local, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_missed_snapshot_remote, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_replace_compare, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_full_resync_compare, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
