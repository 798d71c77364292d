/*
 * Unit tests of the peer server's store calls off its event loop
 * (engine/peer/peer_server.c, off_catalog_call / off_main; session 14):
 * a replica worker serving a real store, a coordinator worker with real
 * clients, over 127.0.0.1 TCP in one process.
 *  - test_snap_off_loop: a SNAP held in its thread (test hook
 *    $TSR_TEST_PEER_SNAP_HOLD_FILE): another connection's WRITE and READ of
 *    another volume are answered meanwhile, and so is a READ of that other
 *    volume on the SNAP's own connection; a WRITE of the SNAP's volume sent
 *    after it on its connection waits: it is answered after the SNAP, and
 *    the snapshot does not hold it.  A SNAP_LIST held the same way.
 *    With $TSR_TEST_PEER_SNAP_INLINE=1 (the store calls on the loop, as
 *    before) it fails: the other connection is not answered.
 *  - test_snap_epoch_recheck: a SNAP CREATE (epoch 1) held in its thread
 *    after the loop's epoch check; meanwhile a newer coordinator opens the
 *    volume at epoch 2 on another connection and writes.  Released, the
 *    SNAP answers -ESTALE and no snapshot is cut (review 14, finding 5: the
 *    store call now checks the epoch again under the store's lock; before,
 *    it cut s1, holding the newer coordinator's write).  The same for a
 *    held DELETE and CLONE.
 *  - test_answer_enomem: the answer of an offloaded call meets an
 *    out-of-memory tsr_worker_send 1200 times (about 1.2 s, test hook
 *    $TSR_TEST_PEER_OFF_SEND_ENOMEM): it is still answered while the worker
 *    runs (review 13b, finding 4: after 1000 tries it was parked until the
 *    worker stopped).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tessera/peer.h"
#include "tessera/worker.h"
#include "../store/store_test.h"
#include "peer_harness.h"

#define VOL_SIZE (4u * 1024 * 1024)

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	if (e == NULL || scratch_dir(e->dir, sizeof(e->dir)))
		return -1;
	snprintf(e->hold, sizeof(e->hold), "%s/snap-hold", e->dir);
	if (tsr_store_open(e->dir, &(struct tsr_store_opts){0}, &e->store))
		return -1;
	if (tsr_store_vol_create(e->store, "v", VOL_SIZE, NULL) ||
	    tsr_store_vol_create(e->store, "w", VOL_SIZE, NULL))
		return -1;
	if (peer_env_start(e, NULL))
		return -1;
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	unlink(e->hold);
	unsetenv("TSR_TEST_PEER_SNAP_HOLD_FILE");
	unsetenv("TSR_TEST_PEER_OFF_SEND_ENOMEM");
	peer_env_stop(e);
	return 0;
}

struct cli {
	struct tsr_peer_client *c;
	char address[64];
	int create_ret;
	int fails;
};

static void on_fail(void *arg, int err)
{
	struct cli *k = arg;

	(void)err;
	k->fails++;
}

static void cli_create_fn(void *arg)
{
	struct cli *k = arg;
	struct tsr_peer_client_opts o = { .address = k->address, .token = TOKEN,
					  .node_id = "coord", .timeout_ms = 60000 };

	k->create_ret = tsr_peer_client_create(g_env->cw, &o, on_fail, k, &k->c);
}

static void cli_destroy_fn(void *arg)
{
	struct cli *k = arg;

	tsr_peer_client_destroy(k->c);
	k->c = NULL;
}

static void cli_make(struct env *e, struct cli *k)
{
	memset(k, 0, sizeof(*k));
	snprintf(k->address, sizeof(k->address), "127.0.0.1:%d", e->port);
	on_client(e, cli_create_fn, k);
	assert_int_equal(k->create_ret, 0);
}

static void cli_free(struct env *e, struct cli *k)
{
	on_client(e, cli_destroy_fn, k);
}

enum kind { K_OPEN, K_READ, K_WRITE, K_SNAP, K_SLIST };

struct op {
	struct cli *k;
	enum kind kind;
	const char *name;
	uint64_t handle, epoch, offset;
	uint32_t len;
	void *buf;
	struct tsr_snap_req snap;
	struct tsr_peer_snap_entry slist[4];
	size_t nlist;
	int ret, status, calls;
	sem_t done;
};

static void op_cb(void *arg, int status)
{
	struct op *o = arg;

	o->status = status;
	if (++o->calls == 1)
		sem_post(&o->done);
}

static void op_open_cb(void *arg, int status, uint64_t handle, uint64_t size)
{
	struct op *o = arg;

	(void)size;
	o->handle = handle;
	op_cb(arg, status);
}

static void op_slist_cb(void *arg, int status, const struct tsr_peer_snap_entry *e, size_t n)
{
	struct op *o = arg;

	o->nlist = n;
	for (size_t i = 0; i < n && i < 4; i++)
		o->slist[i] = e[i];
	op_cb(arg, status);
}

static void op_issue(void *arg)
{
	struct op *o = arg;
	struct tsr_peer_client *c = o->k->c;

	switch (o->kind) {
	case K_OPEN:
		o->ret = tsr_peer_open(c, o->name, o->epoch, op_open_cb, o);
		break;
	case K_READ:
		o->ret = tsr_peer_read(c, o->handle, o->epoch, o->offset, o->len, o->buf, op_cb, o);
		break;
	case K_WRITE:
		o->ret = tsr_peer_write(c, o->handle, o->epoch, o->offset, o->len, o->buf,
					TSR_WRITE_FUA, op_cb, o);
		break;
	case K_SNAP:
		o->ret = tsr_peer_snap(c, o->handle, o->epoch, &o->snap, op_cb, o);
		break;
	case K_SLIST:
		o->ret = tsr_peer_snap_list(c, o->handle, o->epoch, op_slist_cb, o);
		break;
	}
	if (o->ret < 0)
		sem_post(&o->done);
}

/* Issue o without waiting (op_wait collects it). */
static void op_start(struct env *e, struct op *o)
{
	sem_init(&o->done, 0, 0);
	on_client(e, op_issue, o);
}

/* Wait up to ms for o: its call's error or its status; -ETIMEDOUT when it
 * has not answered by then (then it is still in flight). */
static int op_wait(struct op *o, unsigned ms)
{
	if (sem_wait_ms(&o->done, ms) != 0)
		return -ETIMEDOUT;
	sem_destroy(&o->done);
	if (o->ret < 0) {
		assert_int_equal(o->calls, 0);
		return o->ret;
	}
	return o->status;
}

static bool op_answered(struct op *o)
{
	if (sem_trywait(&o->done) != 0)
		return false;
	sem_post(&o->done);
	return true;
}

static int op_run(struct env *e, struct op *o)
{
	op_start(e, o);
	return op_wait(o, 20000);
}

static uint64_t p_open(struct env *e, struct cli *k, const char *name)
{
	struct op o = { .k = k, .kind = K_OPEN, .name = name, .epoch = 1 };

	assert_int_equal(op_run(e, &o), 0);
	return o.handle;
}

static int p_io(struct env *e, struct cli *k, enum kind kind, uint64_t h, uint64_t off, void *buf)
{
	struct op o = { .k = k, .kind = kind, .handle = h, .epoch = 1, .offset = off, .len = BS,
			.buf = buf };

	return op_run(e, &o);
}

/* Until the server has parsed `more` frames beyond *base. */
static void wait_frames(struct env *e, const struct tsr_peer_server_stats *base, uint64_t more)
{
	struct tsr_peer_server_stats st;

	for (int i = 0;; i++) {
		tsr_peer_server_get_stats(e->srv, &st);
		if (st.frames >= base->frames + more)
			break;
		assert_true(i < 2000);
		usleep(10000);
	}
	usleep(50000); /* the SNAP's thread has reached the hold */
}

static void hold_on(struct env *e)
{
	int fd = open(e->hold, O_CREAT | O_WRONLY, 0644);

	assert_true(fd >= 0);
	close(fd);
	setenv("TSR_TEST_PEER_SNAP_HOLD_FILE", e->hold, 1);
}

static void store_read(struct env *e, const char *vol, const char *snap, uint64_t off, void *buf)
{
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
	struct tsr_svol *v;

	assert_non_null(io);
	if (snap != NULL)
		assert_int_equal(tsr_store_snap_open(e->store, vol, snap, &v), 0);
	else
		assert_int_equal(tsr_store_vol_open(e->store, vol, &v), 0);
	assert_int_equal(sread(v, io, off, BS, buf), 0);
	tsr_svol_put(v);
	tsr_io_destroy(io);
}

/* ---- tests ---- */

static void test_snap_off_loop(void **state)
{
	struct env *e = *state;
	uint8_t *buf = tsr_alloc_aligned(BS), *r = tsr_alloc_aligned(BS);
	struct tsr_peer_server_stats st;
	struct cli a, b;
	uint64_t av, aw, bw;
	struct op snap = { .kind = K_SNAP, .epoch = 1 }, late = { .kind = K_WRITE, .epoch = 1 };
	struct op list = { .kind = K_SLIST, .epoch = 1 };
	int ret;

	cli_make(e, &a); /* the coordinator of v (and of w, on the same connection) */
	cli_make(e, &b); /* another coordinator of w: another connection */
	av = p_open(e, &a, "v");
	aw = p_open(e, &a, "w");
	bw = p_open(e, &b, "w");
	fill(buf, BS, 1, 0);
	assert_int_equal(p_io(e, &a, K_WRITE, av, 0, buf), 0);

	/* a SNAP of v held in its thread */
	hold_on(e);
	tsr_peer_server_get_stats(e->srv, &st);
	snap.k = &a;
	snap.handle = av;
	snap.snap.op = TSR_SNAP_CREATE;
	snprintf(snap.snap.snap, sizeof(snap.snap.snap), "s1");
	op_start(e, &snap);
	wait_frames(e, &st, 1);
	/* another connection's writes and reads of w go on meanwhile (before:
	 * the whole worker waited for the SNAP's store call) */
	fill(buf, BS, 2, 0);
	ret = p_io(e, &b, K_WRITE, bw, BS, buf);
	assert_int_equal(ret, 0);
	assert_int_equal(p_io(e, &b, K_READ, bw, BS, r), 0);
	assert_true(is_filled(r, BS, 2, 0));
	/* and on the SNAP's own connection, a READ of w */
	assert_int_equal(p_io(e, &a, K_READ, aw, BS, r), 0);
	assert_true(is_filled(r, BS, 2, 0));
	assert_false(op_answered(&snap)); /* the SNAP: still held */
	/* a WRITE of v after the SNAP on its connection waits for it */
	fill(buf, BS, 3, 0);
	late.k = &a;
	late.handle = av;
	late.len = BS;
	late.buf = buf;
	op_start(e, &late);
	assert_int_equal(op_wait(&late, 300), -ETIMEDOUT);
	assert_false(op_answered(&snap));
	unlink(e->hold);
	assert_int_equal(op_wait(&snap, 20000), 0);
	assert_int_equal(op_wait(&late, 20000), 0);
	/* the cut holds what was written before the SNAP, not the WRITE after */
	store_read(e, "v", "s1", 0, r);
	assert_true(is_filled(r, BS, 1, 0));
	store_read(e, "v", NULL, 0, r);
	assert_true(is_filled(r, BS, 3, 0));

	/* a SNAP_LIST held the same way; w's I/O goes on */
	hold_on(e);
	tsr_peer_server_get_stats(e->srv, &st);
	list.k = &a;
	list.handle = av;
	op_start(e, &list);
	wait_frames(e, &st, 1);
	assert_int_equal(p_io(e, &b, K_READ, bw, BS, r), 0);
	assert_true(is_filled(r, BS, 2, 0));
	assert_false(op_answered(&list));
	unlink(e->hold);
	assert_int_equal(op_wait(&list, 20000), 0);
	assert_int_equal(list.nlist, 1);
	assert_string_equal(list.slist[0].name, "s1");
	assert_int_equal(list.slist[0].size, VOL_SIZE);
	unsetenv("TSR_TEST_PEER_SNAP_HOLD_FILE");

	/* not held: DELETE, CLONE and the errors come back as the store gives them */
	snap = (struct op){ .k = &a, .kind = K_SNAP, .handle = av, .epoch = 1 };
	snap.snap.op = TSR_SNAP_CREATE;
	snprintf(snap.snap.snap, sizeof(snap.snap.snap), "s1");
	assert_int_equal(op_run(e, &snap), -EEXIST);
	snap = (struct op){ .k = &a, .kind = K_SNAP, .handle = av, .epoch = 1 };
	snap.snap.op = TSR_SNAP_CLONE;
	snprintf(snap.snap.snap, sizeof(snap.snap.snap), "s1");
	snprintf(snap.snap.clone, sizeof(snap.snap.clone), "c1");
	assert_int_equal(op_run(e, &snap), 0);
	store_read(e, "c1", NULL, 0, r);
	assert_true(is_filled(r, BS, 1, 0));
	snap = (struct op){ .k = &a, .kind = K_SNAP, .handle = av, .epoch = 1 };
	snap.snap.op = TSR_SNAP_DELETE;
	snprintf(snap.snap.snap, sizeof(snap.snap.snap), "nope");
	assert_int_equal(op_run(e, &snap), -ENOENT);
	assert_int_equal(a.fails + b.fails, 0);
	cli_free(e, &a);
	cli_free(e, &b);
	tsr_free_aligned(buf);
	tsr_free_aligned(r);
}

static void test_snap_epoch_recheck(void **state)
{
	struct env *e = *state;
	uint8_t *buf = tsr_alloc_aligned(BS), *r = tsr_alloc_aligned(BS);
	struct tsr_peer_server_stats st;
	struct tsr_snap_info si;
	struct tsr_vol_info vi;
	struct op snap, open2 = { .kind = K_OPEN, .name = "v", .epoch = 2 };
	struct cli a, b;
	uint64_t av;

	cli_make(e, &a); /* the old coordinator of v */
	cli_make(e, &b); /* the new one, after a failover: another connection */
	av = p_open(e, &a, "v");
	fill(buf, BS, 1, 0);
	assert_int_equal(p_io(e, &a, K_WRITE, av, 0, buf), 0);
	/* s0 for the DELETE and CLONE below (epoch 1 is current) */
	snap = (struct op){ .k = &a, .kind = K_SNAP, .handle = av, .epoch = 1 };
	snap.snap.op = TSR_SNAP_CREATE;
	snprintf(snap.snap.snap, sizeof(snap.snap.snap), "s0");
	assert_int_equal(op_run(e, &snap), 0);

	/* the old coordinator's CREATE of s1 passes the loop's check, then is
	 * held in its thread */
	hold_on(e);
	tsr_peer_server_get_stats(e->srv, &st);
	snap = (struct op){ .k = &a, .kind = K_SNAP, .handle = av, .epoch = 1 };
	snap.snap.op = TSR_SNAP_CREATE;
	snprintf(snap.snap.snap, sizeof(snap.snap.snap), "s1");
	op_start(e, &snap);
	wait_frames(e, &st, 1);
	/* the new coordinator opens v at epoch 2 and writes */
	open2.k = &b;
	assert_int_equal(op_run(e, &open2), 0);
	fill(buf, BS, 2, 0);
	{
		struct op w = { .k = &b, .kind = K_WRITE, .handle = open2.handle, .epoch = 2,
				.offset = 0, .len = BS, .buf = buf };

		assert_int_equal(op_run(e, &w), 0);
	}
	assert_false(op_answered(&snap)); /* still held */
	unlink(e->hold);
	assert_int_equal(op_wait(&snap, 20000), -ESTALE);
	assert_int_equal(tsr_store_snap_info(e->store, "v", "s1", &si), -ENOENT);

	/* a DELETE held the same way: a's DELETE of w@t0 at epoch 1, while c
	 * opens w at epoch 2 */
	{
		struct cli c;
		uint64_t cw;
		struct op del, clo, open3 = { .kind = K_OPEN, .name = "w", .epoch = 2 };

		cli_make(e, &c);
		cw = p_open(e, &a, "w");
		snap = (struct op){ .k = &a, .kind = K_SNAP, .handle = cw, .epoch = 1 };
		snap.snap.op = TSR_SNAP_CREATE;
		snprintf(snap.snap.snap, sizeof(snap.snap.snap), "t0");
		assert_int_equal(op_run(e, &snap), 0);
		hold_on(e);
		tsr_peer_server_get_stats(e->srv, &st);
		del = (struct op){ .k = &a, .kind = K_SNAP, .handle = cw, .epoch = 1 };
		del.snap.op = TSR_SNAP_DELETE;
		snprintf(del.snap.snap, sizeof(del.snap.snap), "t0");
		op_start(e, &del);
		wait_frames(e, &st, 1);
		open3.k = &c;
		assert_int_equal(op_run(e, &open3), 0);
		unlink(e->hold);
		assert_int_equal(op_wait(&del, 20000), -ESTALE);
		assert_int_equal(tsr_store_snap_info(e->store, "w", "t0", &si), 0);

		/* and a CLONE: b's (epoch 2) of v@s0, while v is raised to 3 (a
		 * third coordinator's OPEN, straight through the store) */
		hold_on(e);
		tsr_peer_server_get_stats(e->srv, &st);
		clo = (struct op){ .k = &b, .kind = K_SNAP, .handle = open2.handle, .epoch = 2 };
		clo.snap.op = TSR_SNAP_CLONE;
		snprintf(clo.snap.snap, sizeof(clo.snap.snap), "s0");
		snprintf(clo.snap.clone, sizeof(clo.snap.clone), "c0");
		op_start(e, &clo);
		wait_frames(e, &st, 1);
		assert_int_equal(tsr_store_vol_set_epoch(e->store, "v", 3), 0);
		unlink(e->hold);
		assert_int_equal(op_wait(&clo, 20000), -ESTALE);
		assert_int_equal(tsr_store_vol_info(e->store, "c0", &vi), -ENOENT);
		cli_free(e, &c);
	}
	unsetenv("TSR_TEST_PEER_SNAP_HOLD_FILE");
	/* the new coordinator's write is in the head, and s0 still holds the old */
	store_read(e, "v", NULL, 0, r);
	assert_true(is_filled(r, BS, 2, 0));
	store_read(e, "v", "s0", 0, r);
	assert_true(is_filled(r, BS, 1, 0));
	assert_int_equal(a.fails + b.fails, 0);
	cli_free(e, &a);
	cli_free(e, &b);
	tsr_free_aligned(buf);
	tsr_free_aligned(r);
}

static void test_answer_enomem(void **state)
{
	struct env *e = *state;
	struct tsr_snap_info si;
	struct op snap = { .kind = K_SNAP, .epoch = 1 };
	struct cli a;

	cli_make(e, &a);
	snap.k = &a;
	snap.handle = p_open(e, &a, "v");
	snap.snap.op = TSR_SNAP_CREATE;
	snprintf(snap.snap.snap, sizeof(snap.snap.snap), "s2");
	setenv("TSR_TEST_PEER_OFF_SEND_ENOMEM", "1200", 1);
	/* before: parked after 1000 tries until the worker stops (never, here) */
	assert_int_equal(op_run(e, &snap), 0);
	unsetenv("TSR_TEST_PEER_OFF_SEND_ENOMEM");
	assert_int_equal(tsr_store_snap_info(e->store, "v", "s2", &si), 0);
	assert_int_equal(a.fails, 0);
	cli_free(e, &a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_snap_off_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snap_epoch_recheck, setup, teardown),
		cmocka_unit_test_setup_teardown(test_answer_enomem, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
