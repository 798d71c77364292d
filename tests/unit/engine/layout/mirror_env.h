/*
 * The environment of a mirror layout test (mirror_ut, mirror_region_ut,
 * mirror_resize_ut, mirror_attach_ut), on mirror_test.h's harness: three
 * nodes (node0..node2, each a store holding VOLNAME), the layout's home
 * worker, a scratch state dir, the model of what the volume must contain,
 * buffers, the layout under test, and the calls every such test makes on it.
 * One copy of what each of these tests used to carry itself.
 */
#ifndef TSR_MIRROR_ENV_H
#define TSR_MIRROR_ENV_H

#include "mirror_test.h"

struct env {
	struct node nodes[3];
	struct tsr_worker *home;
	char state_dir[512];
	uint8_t *model; /* what the volume must contain (NULL: none) */
	uint8_t *file;  /* a node's data file */
	uint8_t *buf;   /* aligned, for one call's data */
	struct tsr_layout *l;
	int holes[3]; /* black-hole listeners (peer_black_hole), -1: none */
};

/* The sizes of an environment: the volume each node's store holds, the
 * model (0: none), the file and buffer; home_fault: the home worker's io
 * under a fault spec (tsr_io_opts grammar), NULL: a plain one. */
struct env_sizes {
	uint64_t vol, model, file, buf;
	const char *home_fault;
};

static UNUSED int env_setup(void **state, const struct env_sizes *z)
{
	struct env *e = calloc(1, sizeof(*e));

	for (unsigned i = 0; i < 3; i++) {
		if (node_init(&e->nodes[i], i, z->vol) < 0)
			return -1;
		e->holes[i] = -1;
	}
	if (z->home_fault != NULL) {
		struct tsr_io_opts io = {.kind = TSR_IO_AUTO, .fault_spec = z->home_fault};

		if (tsr_worker_start(1, &io, &e->home) != 0)
			return -1;
	} else {
		e->home = start_worker_or_skip(1);
	}
	if (scratch_dir(e->state_dir, sizeof(e->state_dir)) < 0)
		return -1;
	e->model = z->model ? calloc(1, z->model) : NULL;
	e->file = malloc(z->file);
	e->buf = tsr_alloc_aligned(z->buf);
	log_reset();
	*state = e;
	return 0;
}

static UNUSED int env_teardown(void **state)
{
	struct env *e = *state;

	tsr_layout_destroy(e->l);
	hooks_settle(); /* answered from helper threads: all done before the worker goes */
	tsr_worker_stop(e->home);
	for (unsigned i = 0; i < 3; i++) {
		node_fini(&e->nodes[i]);
		if (e->holes[i] >= 0)
			close(e->holes[i]);
	}
	rm_rf(e->state_dir);
	free(e->model);
	free(e->file);
	tsr_free_aligned(e->buf);
	free(e);
	return 0;
}

/* The layout destroyed within a test (e->l NULL), its hooks answered. */
static UNUSED void env_layout_close(struct env *e)
{
	tsr_layout_destroy(e->l);
	e->l = NULL;
	hooks_settle();
}

/* Options of a 3-copy mirror of size bytes on the three nodes: copy 0 local
 * on node0 (when local), the others remote, all in sync; epoch 1,
 * min_replicas 2, peer timeout and write wait 5 s, the default region size.
 * A test sets what it needs otherwise afterwards. */
static UNUSED void env_mirror_opts(struct env *e, struct tsr_mirror_opts *o, uint64_t size,
				   bool local)
{
	memset(o, 0, sizeof(*o));
	o->name = VOLNAME;
	o->size = size;
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
	o->hooks.set_copy_state = test_set_copy_state;
	for (unsigned i = 0; i < 3; i++) {
		struct tsr_layout_copy *c = &o->copies[i];

		snprintf(c->node_id, sizeof(c->node_id), "%s", e->nodes[i].node_id);
		snprintf(c->address, sizeof(c->address), "%s", e->nodes[i].address);
		c->local = local && i == 0;
		c->state = TSR_COPY_IN_SYNC;
	}
}

/* Write len bytes of pattern seed at off through the layout (and the model). */
static UNUSED int lwrite(struct env *e, uint64_t off, uint32_t len, uint64_t seed, unsigned flags)
{
	fill(e->buf, len, seed, off);
	memcpy(e->model + off, e->buf, len);
	return ldo(e->home, e->l, D_WRITE, off, len, e->buf, flags);
}

/* Poll the layout's status (refreshed every 20 ms) until pred holds. */
static UNUSED bool wait_status(struct env *e, bool (*pred)(const struct tsr_layout_status *),
			       unsigned ms)
{
	return layout_wait(e->l, pred, ms);
}

/* Run a snapshot operation through the layout on its home worker. */
static UNUSED int lsnap(struct env *e, enum tsr_snap_op op, const char *snap)
{
	return layout_snap(e->home, e->l, op, snap);
}

/* The first size bytes of node n's data file (its head) equal want. */
static UNUSED void assert_file_equals(struct node *n, uint8_t *file, const uint8_t *want,
				      uint64_t size)
{
	assert_int_equal(node_read_all(n, file, size), 0);
	for (uint64_t b = 0; b < size / BS; b++)
		if (memcmp(file + b * BS, want + b * BS, BS) != 0) {
			print_message("%s differs at block %llu\n", n->node_id,
				      (unsigned long long)b);
			fail();
		}
}

/* The image of VOLNAME@snap in store (node who) equals want (size bytes, a
 * multiple of 4 MiB; e->buf holds 4 MiB at least). */
static UNUSED void assert_store_snap_equals(struct env *e, struct tsr_store *store, const char *who,
					    const char *snap, const uint8_t *want, uint64_t size)
{
	const uint32_t piece = 4u << 20;
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
	struct tsr_svol *v = NULL;

	assert_non_null(io);
	assert_int_equal(tsr_store_snap_open(store, VOLNAME, snap, &v), 0);
	for (uint64_t off = 0; off < size; off += piece) {
		assert_int_equal(sread(v, io, off, piece, e->buf), 0);
		if (memcmp(e->buf, want + off, piece) != 0) {
			print_message("%s: %s@%s differs in [%llu, +4 MiB)\n", who, VOLNAME, snap,
				      (unsigned long long)off);
			fail();
		}
	}
	tsr_svol_put(v);
	tsr_io_destroy(io);
}

/* A scrub (no repair) from start to end: its status; no mismatch, nothing
 * unrepaired. */
static UNUSED void scrub_clean_status(struct env *e, struct tsr_layout_status *s)
{
	assert_int_equal(tsr_layout_scrub_start(e->l, false), 0);
	assert_true(wait_status(e, scrub_finished, 60000));
	tsr_layout_get_status(e->l, s);
	assert_int_equal(s->scrub_mismatches, 0);
	assert_int_equal(s->scrub_unrepaired, 0);
}

#endif
