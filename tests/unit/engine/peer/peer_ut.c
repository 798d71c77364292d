/*
 * Unit tests of the peer protocol end to end (engine/peer/peer_server.c,
 * peer_client.c): a replica worker serving a real store and a coordinator
 * worker with real clients, over 127.0.0.1 TCP in one process, plus raw
 * sockets that craft frames the client never would.  Covers HELLO and its
 * token, OPEN, every data op with the data read back, pipelining, epoch
 * fencing, payload and header corruption, timeouts and a replica that dies,
 * SNAP (create, delete, clone on the replica's store; fenced; malformed),
 * staged writes (STAGE, COMMIT, RELEASE, STAGE_LIST on the replica's store
 * journal; fenced; a snapshot session refuses them; payload corruption and
 * malformed prefixes), STATS (the store's counters, a CRC error counted;
 * fenced; none sent to a replica of an earlier build).
 */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tessera/peer.h"
#include "tessera/worker.h"
#include "../store/store_test.h"
#include "peer_harness.h"

#define BADTOK "f123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define VOL_SIZE (16u * 1024 * 1024)

/* ---- a STAGE that meets a full io queue after it was accepted ----
 *
 * peer_ut links with -Wl,--wrap=tsr_svol_stage (tests/CMakeLists.txt).
 * While g_stage_late_eagain is above 0, a STAGE is accepted and then
 * completes with -EAGAIN from the io, nothing of it done: what the store's
 * journal does when queueing its record after waiting for a generation header
 * finds the queue full (engine/store/stage.c stage_try).  The fault injector
 * cannot get there (it frees a slot before each callback). */
int __real_tsr_svol_stage(struct tsr_svol *svol, struct tsr_io *io,
			  const struct tsr_stage_entry *e, const void *buf, tsr_cb cb_fn,
			  void *cb_arg);
int __wrap_tsr_svol_stage(struct tsr_svol *svol, struct tsr_io *io,
			  const struct tsr_stage_entry *e, const void *buf, tsr_cb cb_fn,
			  void *cb_arg);

static _Atomic int g_stage_late_eagain;

struct late_stage {
	tsr_cb cb_fn;
	void *cb_arg;
	void *scratch; /* the no-op read's buffer */
};

static void late_stage_done(void *arg, int status)
{
	struct late_stage *l = arg;
	tsr_cb cb_fn = l->cb_fn;
	void *cb_arg = l->cb_arg;

	(void)status;
	tsr_free_aligned(l->scratch);
	free(l);
	cb_fn(cb_arg, -EAGAIN);
}

int __wrap_tsr_svol_stage(struct tsr_svol *svol, struct tsr_io *io,
			  const struct tsr_stage_entry *e, const void *buf, tsr_cb cb_fn,
			  void *cb_arg)
{
	struct late_stage *l;
	int ret;

	if (atomic_load(&g_stage_late_eagain) <= 0)
		return __real_tsr_svol_stage(svol, io, e, buf, cb_fn, cb_arg);
	l = calloc(1, sizeof(*l));
	if (l == NULL || (l->scratch = tsr_alloc_aligned(TSR_BLOCK_SIZE)) == NULL) {
		free(l);
		return -ENOMEM;
	}
	l->cb_fn = cb_fn;
	l->cb_arg = cb_arg;
	/* the callback comes from the io, as the store's would */
	ret = tsr_svol_read(svol, io, 0, TSR_BLOCK_SIZE, l->scratch, late_stage_done, l);
	if (ret) {
		tsr_free_aligned(l->scratch);
		free(l);
		return ret;
	}
	atomic_fetch_sub(&g_stage_late_eagain, 1);
	return 0;
}

/* ---- setups (the harness: peer_harness.h) ---- */

static int setup_fault(void **state, const char *fault)
{
	struct env *e = calloc(1, sizeof(*e));

	if (e == NULL || scratch_dir(e->dir, sizeof(e->dir)))
		return -1;
	if (tsr_store_open(e->dir, &(struct tsr_store_opts){0}, &e->store))
		return -1;
	if (tsr_store_vol_create(e->store, "v", VOL_SIZE, NULL))
		return -1;
	if (peer_env_start(e, fault))
		return -1;
	*state = e;
	return 0;
}

static int setup(void **state)
{
	return setup_fault(state, NULL);
}

/* The server worker's writes take 3 s: a request stays in flight. */
static int setup_slow_writes(void **state)
{
	return setup_fault(state, "write:1+:delay=3000");
}

/* The server worker's first write and first read complete with -EAGAIN (a
 * full io queue met by a step the store queued later, a copy on write). */
static int setup_late_eagain(void **state)
{
	return setup_fault(state, "write:1:fail=EAGAIN,read:1:fail=EAGAIN");
}

/* For test_stage_late_eagain: on the server worker, write 1 is the stage
 * journal's generation header, 2 the STAGE record, 3 the COMMIT record and
 * 4 the commit's in-place write, which completes with -EAGAIN (its copy on
 * write met a full queue); the first fdatasync is the RELEASE's data flush,
 * which completes with -EAGAIN too. */
static int setup_stage_late_eagain(void **state)
{
	return setup_fault(state, "write:4:fail=EAGAIN,fdatasync:1:fail=EAGAIN");
}

static int teardown(void **state)
{
	peer_env_stop(*state);
	return 0;
}

/* ---- a client and synchronous requests from the test thread ---- */

struct cli {
	struct tsr_peer_client *c;
	const char *token;
	char address[64];
	unsigned timeout_ms;
	int create_ret;
	int fails, fail_err;
};

static void on_fail(void *arg, int err)
{
	struct cli *k = arg;

	k->fails++;
	k->fail_err = err;
}

static void cli_create_fn(void *arg)
{
	struct cli *k = arg;
	struct tsr_peer_client_opts o = { .address = k->address, .token = k->token,
					  .node_id = "coord", .timeout_ms = k->timeout_ms };

	k->create_ret = tsr_peer_client_create(g_env->cw, &o, on_fail, k, &k->c);
}

static void cli_destroy_fn(void *arg)
{
	struct cli *k = arg;

	tsr_peer_client_destroy(k->c);
	k->c = NULL;
}

static void cli_make(struct env *e, struct cli *k, const char *token, int port, unsigned tmo)
{
	memset(k, 0, sizeof(*k));
	k->token = token;
	k->timeout_ms = tmo;
	snprintf(k->address, sizeof(k->address), "127.0.0.1:%d", port);
	on_client(e, cli_create_fn, k);
	assert_int_equal(k->create_ret, 0);
}

static void cli_free(struct env *e, struct cli *k)
{
	on_client(e, cli_destroy_fn, k);
}

enum kind {
	K_OPEN,
	K_READ,
	K_WRITE,
	K_FLUSH,
	K_TRIM,
	K_ZEROES,
	K_SUMS,
	K_SNAP,
	K_CLOSE,
	K_STAGE,
	K_COMMIT,
	K_RELEASE,
	K_LIST,
	K_REPAIR,      /* WRITE with TSR_PEER_F_REPAIR (tsr_peer_snap_repair) */
	K_SLIST,       /* SNAP_LIST */
	K_READ_DIRECT, /* READ with TSR_PEER_F_DIRECT; size: the client's feature bits,
			* offset of op: as K_READ; flags: the fallback count after */
	K_STATS,       /* STATS: offset = crc_errors, size = cached_reads of the answer */
	K_WRITE_SUMS   /* tsr_peer_write_sums with op.sums */
};

struct op {
	struct cli *k;
	enum kind kind;
	const char *name;
	uint64_t handle, epoch, offset, size;
	uint32_t len;
	unsigned flags;
	void *buf;
	const struct tsr_snap_req *snap;
	const struct tsr_stage_entry *stage; /* K_STAGE */
	const uint32_t *sums;                /* K_WRITE_SUMS */
	struct tsr_stage_entry list[8];      /* K_LIST: the first entries */
	size_t nlist;                        /* K_LIST: how many the replica has */
	struct tsr_peer_snap_entry slist[4]; /* K_SLIST: the first entries */
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

	o->handle = handle;
	o->size = size;
	op_cb(arg, status);
}

static void op_list_cb(void *arg, int status, const struct tsr_stage_entry *e, size_t n)
{
	struct op *o = arg;
	size_t i;

	o->nlist = n;
	for (i = 0; i < n && i < 8; i++)
		o->list[i] = e[i];
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

static void op_stats_cb(void *arg, int status, const struct tsr_peer_stats *st)
{
	struct op *o = arg;

	if (st != NULL) {
		o->offset = st->crc_errors;
		o->size = st->cached_reads;
	}
	assert_true((status == 0) == (st != NULL));
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
	case K_READ_DIRECT:
		o->size = tsr_peer_client_features(c);
		o->ret = tsr_peer_read_direct(c, o->handle, o->epoch, o->offset, o->len, o->buf,
					      op_cb, o);
		o->flags = (unsigned)tsr_peer_client_direct_fallbacks(c);
		break;
	case K_WRITE:
		o->ret = tsr_peer_write(c, o->handle, o->epoch, o->offset, o->len, o->buf,
					o->flags, op_cb, o);
		break;
	case K_WRITE_SUMS:
		o->ret = tsr_peer_write_sums(c, o->handle, o->epoch, o->offset, o->len, o->buf,
					     o->sums, o->flags, op_cb, o);
		break;
	case K_FLUSH:
		o->ret = tsr_peer_flush(c, o->handle, o->epoch, op_cb, o);
		break;
	case K_TRIM:
		o->ret = tsr_peer_trim(c, o->handle, o->epoch, o->offset, o->len, op_cb, o);
		break;
	case K_ZEROES:
		o->ret = tsr_peer_write_zeroes(c, o->handle, o->epoch, o->offset, o->len, o->flags,
					       op_cb, o);
		break;
	case K_SUMS:
		o->ret = tsr_peer_sums(c, o->handle, o->epoch, o->offset, o->len, o->buf, op_cb,
				       o);
		break;
	case K_SNAP:
		o->ret = tsr_peer_snap(c, o->handle, o->epoch, o->snap, op_cb, o);
		break;
	case K_CLOSE:
		o->ret = tsr_peer_close(c, o->handle, o->epoch, op_cb, o);
		break;
	case K_STAGE:
		o->ret = tsr_peer_stage(c, o->handle, o->epoch, o->stage, o->buf, op_cb, o);
		break;
	case K_COMMIT:
		o->ret = tsr_peer_commit(c, o->handle, o->epoch, o->offset, op_cb, o);
		break;
	case K_RELEASE:
		o->ret = tsr_peer_release(c, o->handle, o->epoch, o->offset, op_cb, o);
		break;
	case K_LIST:
		o->ret = tsr_peer_stage_list(c, o->handle, o->epoch, op_list_cb, o);
		break;
	case K_REPAIR:
		o->ret = tsr_peer_snap_repair(c, o->handle, o->epoch, o->offset, o->len, o->buf,
					      op_cb, o);
		break;
	case K_SLIST:
		o->ret = tsr_peer_snap_list(c, o->handle, o->epoch, op_slist_cb, o);
		break;
	case K_STATS:
		o->ret = tsr_peer_stats(c, o->handle, o->epoch, op_stats_cb, o);
		break;
	}
	if (o->ret < 0)
		sem_post(&o->done);
}

/* Issue and wait: the call's error, or the completion status. */
static int op_run(struct env *e, struct op *o)
{
	sem_init(&o->done, 0, 0);
	on_client(e, op_issue, o);
	assert_int_equal(sem_wait_ms(&o->done, 20000), 0);
	sem_destroy(&o->done);
	if (o->ret < 0) {
		assert_int_equal(o->calls, 0); /* -errno: cb never fires */
		return o->ret;
	}
	return o->status;
}

static int p_open(struct env *e, struct cli *k, const char *name, uint64_t epoch,
		  uint64_t *handle)
{
	struct op o = { .k = k, .kind = K_OPEN, .name = name, .epoch = epoch };
	int ret = op_run(e, &o);

	*handle = o.handle;
	if (ret == 0)
		assert_int_equal(o.size, VOL_SIZE);
	return ret;
}

static int p_io(struct env *e, struct cli *k, enum kind kind, uint64_t h, uint64_t epoch,
		uint64_t off, uint32_t len, void *buf, unsigned flags)
{
	struct op o = { .k = k, .kind = kind, .handle = h, .epoch = epoch, .offset = off,
			.len = len, .buf = buf, .flags = flags };

	return op_run(e, &o);
}

/* Read v straight from the store (the replica's copy). */
static void store_read(struct env *e, uint64_t off, uint32_t len, void *buf)
{
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
	struct tsr_svol *v;

	assert_non_null(io);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	assert_int_equal(sread(v, io, off, len, buf), 0);
	tsr_svol_put(v);
	tsr_io_destroy(io);
}

/* ---- tests ---- */

static void test_bad_token(void **state)
{
	struct env *e = *state;
	struct cli k;
	uint64_t h;
	int ret;

	cli_make(e, &k, BADTOK, e->port, 0);
	/* refused by the replica: the open completes with -EACCES, or, when the
	 * refusal arrived before the open was queued, the call finds the client
	 * failed already (-ENOTCONN); either way on_fail saw -EACCES once */
	ret = p_open(e, &k, "v", 1, &h);
	assert_true(ret == -EACCES || ret == -ENOTCONN);
	assert_int_equal(k.fails, 1);
	assert_int_equal(k.fail_err, -EACCES);
	/* later calls: -ENOTCONN, no callback */
	assert_int_equal(p_open(e, &k, "v", 1, &h), -ENOTCONN);
	cli_free(e, &k);
	assert_int_equal(k.fails, 1);
}

static void test_open_unknown(void **state)
{
	struct env *e = *state;
	struct cli k;
	uint64_t h;

	cli_make(e, &k, TOKEN, e->port, 0);
	assert_int_equal(p_open(e, &k, "nope", 1, &h), -ENOENT);
	assert_int_equal(p_open(e, &k, "v", 1, &h), 0); /* the connection is fine */
	assert_true(h > 0);
	/* a handle never opened */
	assert_int_equal(p_io(e, &k, K_FLUSH, h + 7, 1, 0, 0, NULL, 0), -EBADF);
	assert_int_equal(k.fails, 0);
	cli_free(e, &k);
	assert_int_equal(k.fails, 0);
}

/* A request whose io completes with -EAGAIN runs again on the replica: the
 * coordinator sees the write and the read succeed (on the code before, both
 * failed with -EAGAIN and a coordinator put the copy out of sync). */
static void test_late_eagain_retried(void **state)
{
	struct env *e = *state;
	uint8_t *w = tsr_alloc_aligned(8192), *r = tsr_alloc_aligned(8192);
	struct cli k;
	uint64_t h;

	cli_make(e, &k, TOKEN, e->port, 0);
	assert_int_equal(p_open(e, &k, "v", 1, &h), 0);
	fill(w, 8192, 7, 4096);
	assert_int_equal(p_io(e, &k, K_WRITE, h, 1, 4096, 8192, w, 0), 0);
	memset(r, 0, 8192);
	assert_int_equal(p_io(e, &k, K_READ, h, 1, 4096, 8192, r, 0), 0);
	assert_true(is_filled(r, 8192, 7, 4096));
	memset(r, 0, 8192);
	store_read(e, 4096, 8192, r);
	assert_true(is_filled(r, 8192, 7, 4096));
	assert_int_equal(k.fails, 0);
	cli_free(e, &k);
	tsr_free_aligned(w);
	tsr_free_aligned(r);
}

/*
 * tsr_peer_write_sums: the frame's data_crc joined from the caller's block
 * CRCs is the payload's (the replica accepts it, and stores its blocks with
 * the CRCs it checked: the data reads back through the store's CRC check),
 * for one block and for several; a wrong sum makes a data_crc that is not
 * the payload's, refused with -EBADMSG, nothing stored.
 */
static void test_write_sums(void **state)
{
	struct env *e = *state;
	uint8_t *w = tsr_alloc_aligned(5 * BS), *r = tsr_alloc_aligned(5 * BS);
	uint32_t sums[5];
	struct cli k;
	uint64_t h;
	struct op o = {.k = &k, .kind = K_WRITE_SUMS, .epoch = 1, .buf = w, .sums = sums};

	cli_make(e, &k, TOKEN, e->port, 0);
	assert_int_equal(p_open(e, &k, "v", 1, &h), 0);
	o.handle = h;
	for (uint32_t n = 1; n <= 5; n += 4) {
		fill(w, n * BS, 20 + n, 8 * BS);
		tsr_crc32c_blocks(w, n, sums);
		o.offset = 8 * BS;
		o.len = n * BS;
		o.calls = 0;
		assert_int_equal(op_run(e, &o), 0);
		memset(r, 0, n * BS);
		store_read(e, 8 * BS, n * BS, r);
		assert_true(is_filled(r, n * BS, 20 + n, 8 * BS));
	}
	fill(w, 5 * BS, 30, 8 * BS);
	tsr_crc32c_blocks(w, 5, sums);
	sums[2] ^= 1;
	o.calls = 0;
	assert_int_equal(op_run(e, &o), -EBADMSG);
	store_read(e, 8 * BS, 5 * BS, r);
	assert_true(is_filled(r, 5 * BS, 25, 8 * BS)); /* still the last good write */
	cli_free(e, &k);
	tsr_free_aligned(w);
	tsr_free_aligned(r);
}

static void test_round_trip(void **state)
{
	struct env *e = *state;
	uint8_t *w = tsr_alloc_aligned(1 << 20), *r = tsr_alloc_aligned(1 << 20);
	uint32_t sums[256], big_sums[516];
	struct tsr_peer_server_stats st;
	struct cli k;
	uint64_t h;
	unsigned i;

	cli_make(e, &k, TOKEN, e->port, 0);
	assert_int_equal(p_open(e, &k, "v", 1, &h), 0);
	/* write + read back, small and large (payload beyond the receive buffer) */
	fill(w, 8192, 1, 4096);
	assert_int_equal(p_io(e, &k, K_WRITE, h, 1, 4096, 8192, w, 0), 0);
	assert_int_equal(p_io(e, &k, K_READ, h, 1, 4096, 8192, r, 0), 0);
	assert_true(is_filled(r, 8192, 1, 4096));
	fill(w, 1 << 20, 2, 1 << 20);
	assert_int_equal(p_io(e, &k, K_WRITE, h, 1, 1 << 20, 1 << 20, w, TSR_WRITE_FUA), 0);
	memset(r, 0, 1 << 20);
	assert_int_equal(p_io(e, &k, K_READ, h, 1, 1 << 20, 1 << 20, r, 0), 0);
	assert_true(is_filled(r, 1 << 20, 2, 1 << 20));
	assert_int_equal(p_io(e, &k, K_FLUSH, h, 1, 0, 0, NULL, 0), 0);
	/* the replica's store has it */
	memset(r, 0, 1 << 20);
	store_read(e, 1 << 20, 1 << 20, r);
	assert_true(is_filled(r, 1 << 20, 2, 1 << 20));

	/* sums: CRC32C of each block as written; a hole sums as zeros */
	assert_int_equal(p_io(e, &k, K_SUMS, h, 1, 1 << 20, 1 << 20, sums, 0), 0);
	for (i = 0; i < 256; i++)
		assert_int_equal(sums[i], tsr_crc32c(0, w + (size_t)i * BS, BS));
	assert_int_equal(p_io(e, &k, K_SUMS, h, 1, 8 << 20, 4 * BS, sums, 0), 0);
	memset(r, 0, BS);
	for (i = 0; i < 4; i++)
		assert_int_equal(sums[i], tsr_crc32c(0, r, BS));
	/* a range the replica reads in several 1 MiB pieces */
	assert_int_equal(p_io(e, &k, K_SUMS, h, 1, 1 << 20, (2 << 20) + 4 * BS, big_sums, 0), 0);
	for (i = 0; i < 256; i++)
		assert_int_equal(big_sums[i], tsr_crc32c(0, w + (size_t)i * BS, BS));
	for (; i < 516; i++)
		assert_int_equal(big_sums[i], tsr_crc32c(0, r, BS));

	/* trim, with FUA: reads zeros */
	assert_int_equal(p_io(e, &k, K_TRIM, h, 1, 1 << 20, 64 * BS, NULL, 0), 0);
	assert_int_equal(p_io(e, &k, K_READ, h, 1, 1 << 20, 1 << 20, r, 0), 0);
	assert_true(is_zero(r, 64 * BS));
	assert_true(is_filled(r + 64 * BS, (1 << 20) - 64 * BS, 2, (1 << 20) + 64 * BS));
	assert_int_equal(p_io(e, &k, K_TRIM, h, 1, 1 << 20, BS, NULL, 0), 0);
	/* write zeroes, FUA and NO_HOLE */
	assert_int_equal(p_io(e, &k, K_ZEROES, h, 1, (1 << 20) + 64 * BS, 16 * BS, NULL,
			      TSR_WRITE_FUA | TSR_WRITE_NO_HOLE), 0);
	assert_int_equal(p_io(e, &k, K_READ, h, 1, 1 << 20, 1 << 20, r, 0), 0);
	assert_true(is_zero(r, 80 * BS));
	assert_true(is_filled(r + 80 * BS, BS, 2, (1 << 20) + 80 * BS));

	/* past the end: the store's error, the connection stays */
	assert_int_equal(p_io(e, &k, K_READ, h, 1, VOL_SIZE, BS, r, 0), -ENOSPC);
	/* bad arguments never reach the wire */
	assert_int_equal(p_io(e, &k, K_READ, h, 1, 100, BS, r, 0), -EINVAL);
	assert_int_equal(p_io(e, &k, K_WRITE, h, 1, 0, 100, w, 0), -EINVAL);
	assert_int_equal(p_io(e, &k, K_SUMS, h, 1, 0, TSR_PEER_MAX_SUMS_RANGE + BS, sums, 0),
			 -EINVAL);
	assert_int_equal(p_io(e, &k, K_FLUSH, h, 1, 0, 0, NULL, 0), 0);

	tsr_peer_server_get_stats(e->srv, &st);
	assert_int_equal(st.connections_open, 1);
	assert_int_equal(st.bytes_written, 8192 + (1 << 20));
	assert_int_equal(st.bad_frames, 0);
	assert_true(st.frames >= 15);
	cli_free(e, &k);
	assert_int_equal(k.fails, 0);
	tsr_free_aligned(w);
	tsr_free_aligned(r);
}

/* 64 writes queued in one loop pass, then 64 reads. */
struct batch {
	struct cli *k;
	uint64_t h;
	uint8_t *buf;
	bool read;
	int done, errors, issue_errors;
	sem_t all;
};

static void batch_cb(void *arg, int status)
{
	struct batch *b = arg;

	if (status != 0)
		b->errors++;
	if (++b->done == 64)
		sem_post(&b->all);
}

static void batch_issue(void *arg)
{
	struct batch *b = arg;
	unsigned i;

	for (i = 0; i < 64; i++) {
		uint64_t off = (uint64_t)i * 3 * BS;
		int ret = b->read ? tsr_peer_read(b->k->c, b->h, 1, off, 2 * BS,
						  b->buf + (size_t)i * 2 * BS, batch_cb, b)
				  : tsr_peer_write(b->k->c, b->h, 1, off, 2 * BS,
						   b->buf + (size_t)i * 2 * BS, 0, batch_cb, b);
		if (ret < 0)
			b->issue_errors++;
	}
}

/* cached_reads of the replica's volume v (store stats): reads through its page cache */
static uint64_t v_cached_reads(struct env *e)
{
	struct tsr_svol_stats st;
	struct tsr_svol *v;

	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	tsr_svol_get_stats(v, &st);
	tsr_svol_put(v);
	return st.cached_reads;
}

/*
 * READ with TSR_PEER_F_DIRECT (a scrub's read of a remote chunk): served by
 * tsr_svol_read_direct, not the replica's page cache; the HELLO reply named
 * the feature.  A replica answering HELLO as an earlier build (feature bits
 * 0) gets a plain READ (it would close the connection on the flag), counted.
 */
static void test_read_direct(void **state)
{
	struct env *e = *state;
	uint8_t *w = tsr_alloc_aligned(8 * BS), *r = tsr_alloc_aligned(8 * BS);
	struct op o;
	struct cli k;
	uint64_t h, before;

	cli_make(e, &k, TOKEN, e->port, 0);
	assert_int_equal(p_open(e, &k, "v", 1, &h), 0);
	fill(w, 8 * BS, 7, 0);
	assert_int_equal(p_io(e, &k, K_WRITE, h, 1, 0, 8 * BS, w, 0), 0);
	/* a plain READ goes through the replica's cache (the store's default) */
	before = v_cached_reads(e);
	assert_int_equal(p_io(e, &k, K_READ, h, 1, 0, 8 * BS, r, 0), 0);
	assert_true(is_filled(r, 8 * BS, 7, 0));
	assert_true(v_cached_reads(e) > before);
	/* a direct one does not, and returns the same data */
	memset(r, 0, 8 * BS);
	before = v_cached_reads(e);
	o = (struct op){ .k = &k, .kind = K_READ_DIRECT, .handle = h, .epoch = 1, .len = 8 * BS,
			 .buf = r };
	assert_int_equal(op_run(e, &o), 0);
	assert_int_equal(o.size, TSR_PEER_FEATURES);
	assert_true(o.size & TSR_PEER_FEAT_READ_DIRECT);
	assert_int_equal(o.flags, 0);
	assert_true(is_filled(r, 8 * BS, 7, 0));
	assert_int_equal(v_cached_reads(e), before);
	cli_free(e, &k);

	/* a replica of an earlier build: plain READ, counted, the data all the same */
	setenv("TSR_TEST_PEER_NO_FEATURES", "1", 1);
	cli_make(e, &k, TOKEN, e->port, 0);
	assert_int_equal(p_open(e, &k, "v", 1, &h), 0);
	unsetenv("TSR_TEST_PEER_NO_FEATURES");
	memset(r, 0, 8 * BS);
	before = v_cached_reads(e);
	o = (struct op){ .k = &k, .kind = K_READ_DIRECT, .handle = h, .epoch = 1, .len = 8 * BS,
			 .buf = r };
	assert_int_equal(op_run(e, &o), 0);
	assert_int_equal(o.size, 0);
	assert_int_equal(o.flags, 1);
	assert_true(is_filled(r, 8 * BS, 7, 0));
	assert_true(v_cached_reads(e) > before);
	cli_free(e, &k);
	tsr_free_aligned(w);
	tsr_free_aligned(r);
}

/* v's counters straight from the replica's store. */
static void v_stats(struct env *e, struct tsr_svol_stats *st)
{
	struct tsr_svol *v;

	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	tsr_svol_get_stats(v, st);
	tsr_svol_put(v);
}

/*
 * STATS: the replica answers the session volume's store counters (a block
 * that failed its CRC on a read there counts in crc_errors, a read through
 * its cache in cached_reads); its epoch is checked like a data op's; an
 * unknown handle is -EBADF.  A replica answering HELLO as an earlier build
 * (no TSR_PEER_FEAT_STATS) is sent nothing: -EOPNOTSUPP at the call, and
 * the connection still serves.
 */
static void test_stats(void **state)
{
	struct env *e = *state;
	uint8_t *w = tsr_alloc_aligned(8 * BS), *r = tsr_alloc_aligned(8 * BS);
	char path[PATH_MAX];
	struct tsr_vol_info vi;
	struct tsr_svol_stats st;
	struct op o;
	struct cli k;
	uint64_t h;
	int fd;

	cli_make(e, &k, TOKEN, e->port, 0);
	assert_int_equal(p_open(e, &k, "v", 3, &h), 0);
	fill(w, 8 * BS, 9, 0);
	assert_int_equal(p_io(e, &k, K_WRITE, h, 3, 0, 8 * BS, w, 0), 0);
	assert_int_equal(p_io(e, &k, K_READ, h, 3, 0, 8 * BS, r, 0), 0);
	o = (struct op){.k = &k, .kind = K_STATS, .handle = h, .epoch = 3};
	assert_int_equal(op_run(e, &o), 0);
	v_stats(e, &st);
	assert_true(st.cached_reads >= 1);
	assert_int_equal(o.size, st.cached_reads);
	assert_int_equal(o.offset, 0);
	/* block 2 damaged under its CRC: a read fails, the replica counts it */
	assert_int_equal(tsr_store_vol_info(e->store, "v", &vi), 0);
	vol_file(e->dir, vi.uuid, "data", path);
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	memset(w, 0x5a, BS);
	assert_int_equal(pwrite(fd, w, BS, 2 * BS), (ssize_t)BS);
	assert_int_equal(fsync(fd), 0);
	close(fd);
	assert_int_equal(p_io(e, &k, K_SUMS, h, 3, 0, 8 * BS, r, 0), -EIO);
	o = (struct op){.k = &k, .kind = K_STATS, .handle = h, .epoch = 3};
	assert_int_equal(op_run(e, &o), 0);
	v_stats(e, &st);
	assert_true(o.offset >= 1);
	assert_int_equal(o.offset, st.crc_errors);
	assert_int_equal(o.size, st.cached_reads);
	/* a stale epoch, an unknown handle */
	o = (struct op){.k = &k, .kind = K_STATS, .handle = h, .epoch = 2};
	assert_int_equal(op_run(e, &o), -ESTALE);
	o = (struct op){.k = &k, .kind = K_STATS, .handle = h + 7, .epoch = 3};
	assert_int_equal(op_run(e, &o), -EBADF);
	cli_free(e, &k);

	/* a replica of an earlier build: nothing sent, the session goes on */
	setenv("TSR_TEST_PEER_NO_FEATURES", "1", 1);
	cli_make(e, &k, TOKEN, e->port, 0);
	assert_int_equal(p_open(e, &k, "v", 3, &h), 0);
	unsetenv("TSR_TEST_PEER_NO_FEATURES");
	o = (struct op){.k = &k, .kind = K_STATS, .handle = h, .epoch = 3};
	assert_int_equal(op_run(e, &o), -EOPNOTSUPP);
	assert_int_equal(p_io(e, &k, K_READ, h, 3, 4 * BS, 4 * BS, r, 0), 0);
	assert_int_equal(k.fails, 0);
	cli_free(e, &k);
	tsr_free_aligned(w);
	tsr_free_aligned(r);
}

static void test_pipelined(void **state)
{
	struct env *e = *state;
	struct batch b = {0};
	struct cli k;
	unsigned i;

	cli_make(e, &k, TOKEN, e->port, 0);
	assert_int_equal(p_open(e, &k, "v", 1, &b.h), 0);
	b.k = &k;
	b.buf = tsr_alloc_aligned(64 * 2 * BS);
	for (i = 0; i < 64; i++)
		fill(b.buf + (size_t)i * 2 * BS, 2 * BS, 5, (uint64_t)i * 3 * BS);
	sem_init(&b.all, 0, 0);
	on_client(e, batch_issue, &b);
	assert_int_equal(b.issue_errors, 0);
	assert_int_equal(sem_wait_ms(&b.all, 20000), 0);
	assert_int_equal(b.errors, 0);

	memset(b.buf, 0, 64 * 2 * BS);
	b.read = true;
	b.done = 0;
	on_client(e, batch_issue, &b);
	assert_int_equal(b.issue_errors, 0);
	assert_int_equal(sem_wait_ms(&b.all, 20000), 0);
	assert_int_equal(b.errors, 0);
	for (i = 0; i < 64; i++)
		assert_true(is_filled(b.buf + (size_t)i * 2 * BS, 2 * BS, 5, (uint64_t)i * 3 * BS));
	sem_destroy(&b.all);
	tsr_free_aligned(b.buf);
	cli_free(e, &k);
}

static void test_epoch_fencing(void **state)
{
	struct env *e = *state;
	uint8_t *buf = tsr_alloc_aligned(BS), *r = tsr_alloc_aligned(BS);
	struct tsr_peer_server_stats st0, st;
	struct cli k1, k2;
	uint64_t h1, h2, hx;

	tsr_peer_server_get_stats(e->srv, &st0);
	cli_make(e, &k1, TOKEN, e->port, 0);
	cli_make(e, &k2, TOKEN, e->port, 0);
	assert_int_equal(p_open(e, &k1, "v", 5, &h1), 0);
	fill(buf, BS, 7, 0);
	assert_int_equal(p_io(e, &k1, K_WRITE, h1, 5, 0, BS, buf, 0), 0);
	assert_int_equal(p_open(e, &k2, "v", 7, &h2), 0);
	/* the old coordinator is fenced */
	fill(buf, BS, 8, 0);
	assert_int_equal(p_io(e, &k1, K_WRITE, h1, 5, 0, BS, buf, 0), -ESTALE);
	assert_int_equal(p_io(e, &k1, K_READ, h1, 5, 0, BS, r, 0), -ESTALE);
	assert_int_equal(p_open(e, &k1, "v", 6, &hx), -ESTALE);
	tsr_peer_server_get_stats(e->srv, &st);
	assert_int_equal(st.stale_epoch - st0.stale_epoch, 3);
	/* the new one writes; the data is the epoch-5 write, then its own */
	assert_int_equal(p_io(e, &k2, K_READ, h2, 7, 0, BS, r, 0), 0);
	assert_true(is_filled(r, BS, 7, 0));
	assert_int_equal(p_io(e, &k2, K_WRITE, h2, 7, 0, BS, buf, 0), 0);
	assert_int_equal(p_io(e, &k2, K_READ, h2, 7, 0, BS, r, 0), 0);
	assert_true(is_filled(r, BS, 8, 0));
	/* and it is durable in the store's catalogue */
	assert_int_equal(tsr_store_vol_set_epoch(e->store, "v", 6), -ESTALE);
	assert_int_equal(k1.fails, 0); /* fencing is an answer, not a failure */
	cli_free(e, &k1);
	cli_free(e, &k2);
	tsr_free_aligned(buf);
	tsr_free_aligned(r);
}

/* ---- raw frames ---- */

static int raw_connect(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { .tv_sec = 10 };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static void raw_send(int fd, struct tsr_peer_hdr *h, const void *payload, uint32_t plen)
{
	uint8_t hb[TSR_PEER_HDR_SIZE];

	tsr_peer_hdr_pack(h, hb);
	assert_int_equal(send(fd, hb, sizeof(hb), MSG_NOSIGNAL), sizeof(hb));
	if (plen > 0)
		assert_int_equal(send(fd, payload, plen, MSG_NOSIGNAL), plen);
}

static int recv_all(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = recv(fd, (uint8_t *)buf + got, len - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? 0 : -errno;
		got += (size_t)n;
	}
	return 1;
}

/* Receive one reply (payload into buf); its status. */
static int raw_reply(int fd, struct tsr_peer_hdr *h, void *buf)
{
	uint8_t hb[TSR_PEER_HDR_SIZE];

	assert_int_equal(recv_all(fd, hb, sizeof(hb)), 1);
	assert_int_equal(tsr_peer_hdr_parse(hb, h), 0);
	assert_true(h->flags & TSR_PEER_F_REPLY);
	if (h->payload_len)
		assert_int_equal(recv_all(fd, buf, h->payload_len), 1);
	return h->status;
}

/* HELLO + OPEN of "v" at epoch 1 on a raw socket; returns the handle. */
static uint64_t raw_hello_open(int fd)
{
	uint8_t hello[65];
	struct tsr_peer_hdr h = { .opcode = TSR_PEER_HELLO, .length = 65, .seq = 1 };

	memcpy(hello, TOKEN, 64);
	hello[64] = 0;
	h.data_crc = tsr_crc32c(0, hello, 65);
	raw_send(fd, &h, hello, 65);
	assert_int_equal(raw_reply(fd, &h, NULL), 0);
	h = (struct tsr_peer_hdr){ .opcode = TSR_PEER_OPEN, .length = 1, .epoch = 1, .seq = 2,
				   .data_crc = tsr_crc32c(0, "v", 1) };
	raw_send(fd, &h, "v", 1);
	assert_int_equal(raw_reply(fd, &h, NULL), 0);
	assert_int_equal(h.seq, 2);
	assert_int_equal(h.offset, VOL_SIZE);
	return h.handle;
}

static int p_snap(struct env *e, struct cli *k, uint64_t h, uint64_t epoch,
		  enum tsr_snap_op op, const char *snap, const char *clone)
{
	struct tsr_snap_req req = { .op = op };
	struct op o = { .k = k, .kind = K_SNAP, .handle = h, .epoch = epoch, .snap = &req };

	snprintf(req.snap, sizeof(req.snap), "%s", snap);
	snprintf(req.clone, sizeof(req.clone), "%s", clone);
	return op_run(e, &o);
}

/* Read BS bytes at off of the replica store's snapshot v@snap. */
static void snap_read(struct env *e, const char *snap, uint64_t off, void *buf)
{
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
	struct tsr_svol *v;

	assert_non_null(io);
	assert_int_equal(tsr_store_snap_open(e->store, "v", snap, &v), 0);
	assert_int_equal(sread(v, io, off, BS, buf), 0);
	tsr_svol_put(v);
	tsr_io_destroy(io);
}

/* The merges of deleted snapshots of v are done (none listed deleting). */
static void wait_no_deleting(struct env *e)
{
	for (int tries = 0;; tries++) {
		struct tsr_snap_info *si = NULL;
		size_t n = 0;
		bool busy = false;

		assert_int_equal(tsr_store_snap_list_all(e->store, "v", &si, &n), 0);
		for (size_t i = 0; i < n; i++)
			busy |= si[i].deleting;
		free(si);
		if (!busy)
			return;
		assert_true(tries < 2000); /* 20 s */
		usleep(10000);
	}
}

static void test_snap(void **state)
{
	struct env *e = *state;
	uint8_t *buf = tsr_alloc_aligned(BS), *r = tsr_alloc_aligned(BS);
	struct tsr_snap_info si;
	char pv[64], ps[64];
	struct cli k, k2;
	uint64_t h, h2;

	cli_make(e, &k, TOKEN, e->port, 0);
	assert_int_equal(p_open(e, &k, "v", 3, &h), 0);
	fill(buf, BS, 1, 0);
	assert_int_equal(p_io(e, &k, K_WRITE, h, 3, BS, BS, buf, TSR_WRITE_FUA), 0);
	assert_int_equal(p_snap(e, &k, h, 3, TSR_SNAP_CREATE, "s1", ""), 0);
	fill(buf, BS, 2, 0);
	assert_int_equal(p_io(e, &k, K_WRITE, h, 3, BS, BS, buf, TSR_WRITE_FUA), 0);
	/* the replica's store holds the cut: s1 reads the first write */
	assert_int_equal(tsr_store_snap_info(e->store, "v", "s1", &si), 0);
	snap_read(e, "s1", BS, r);
	assert_true(is_filled(r, BS, 1, 0));
	/* the store's answers come back as they are */
	assert_int_equal(p_snap(e, &k, h, 3, TSR_SNAP_CREATE, "s1", ""), -EEXIST);
	assert_int_equal(p_snap(e, &k, h, 3, TSR_SNAP_DELETE, "nope", ""), -ENOENT);
	/* a make-up's cut at the snapshot's size (2 blocks, the volume larger),
	 * and its replayed delete (missing_ok: still -ENOENT when missing) */
	{
		struct tsr_snap_req req = { .op = TSR_SNAP_CREATE, .size = 2 * BS };
		struct op o = { .k = &k, .kind = K_SNAP, .handle = h, .epoch = 3, .snap = &req };

		snprintf(req.snap, sizeof(req.snap), "sz");
		assert_int_equal(op_run(e, &o), 0);
		assert_int_equal(tsr_store_snap_info(e->store, "v", "sz", &si), 0);
		assert_int_equal(si.size, 2 * BS);
		req = (struct tsr_snap_req){ .op = TSR_SNAP_DELETE, .missing_ok = true };
		snprintf(req.snap, sizeof(req.snap), "nope");
		o = (struct op){ .k = &k, .kind = K_SNAP, .handle = h, .epoch = 3, .snap = &req };
		assert_int_equal(op_run(e, &o), -ENOENT);
		snprintf(req.snap, sizeof(req.snap), "sz");
		o = (struct op){ .k = &k, .kind = K_SNAP, .handle = h, .epoch = 3, .snap = &req };
		assert_int_equal(op_run(e, &o), 0);
		assert_int_equal(tsr_store_snap_info(e->store, "v", "sz", &si), -ENOENT);
	}
	/* clone of s1 on the replica */
	assert_int_equal(p_snap(e, &k, h, 3, TSR_SNAP_CLONE, "s1", "c1"), 0);
	assert_int_equal(tsr_store_vol_parent(e->store, "c1", pv, ps), 0);
	assert_string_equal(pv, "v");
	assert_string_equal(ps, "s1");
	/* bad requests never reach the wire */
	assert_int_equal(p_snap(e, &k, h, 3, TSR_SNAP_CREATE, "", ""), -EINVAL);
	assert_int_equal(p_snap(e, &k, h, 3, TSR_SNAP_CREATE, "a b", ""), -EINVAL);
	/* a newer coordinator fences the old one's SNAP like its writes */
	cli_make(e, &k2, TOKEN, e->port, 0);
	assert_int_equal(p_open(e, &k2, "v", 4, &h2), 0);
	assert_int_equal(p_snap(e, &k, h, 3, TSR_SNAP_CREATE, "s2", ""), -ESTALE);
	assert_int_equal(tsr_store_snap_info(e->store, "v", "s2", &si), -ENOENT);
	assert_int_equal(p_snap(e, &k2, h2, 4, TSR_SNAP_CREATE, "s2", ""), 0);
	assert_int_equal(p_snap(e, &k2, h2, 4, TSR_SNAP_DELETE, "s2", ""), 0);
	assert_int_equal(tsr_store_snap_info(e->store, "v", "s2", &si), -ENOENT);
	/* an unknown handle */
	assert_int_equal(p_snap(e, &k2, h2 + 5, 4, TSR_SNAP_CREATE, "s3", ""), -EBADF);
	/* a read-only session on v@s1: reads the cut, refuses writes, closes */
	{
		struct op o = { .k = &k2, .kind = K_OPEN, .name = "v@s1", .epoch = 4 };
		uint64_t hs;

		assert_int_equal(op_run(e, &o), 0);
		hs = o.handle;
		assert_int_equal(o.size, VOL_SIZE);
		assert_int_equal(p_io(e, &k2, K_READ, hs, 4, BS, BS, r, 0), 0);
		assert_true(is_filled(r, BS, 1, 0));
		assert_true(p_io(e, &k2, K_WRITE, hs, 4, BS, BS, buf, 0) < 0);
		/* the scrub's repair of the snapshot's image: a WRITE flagged
		 * REPAIR; the head keeps its bytes; a stale epoch and a head
		 * session are refused.  First s2's delete (merged into s1 in
		 * the background) ends: meanwhile a repair of s1 is -EBUSY */
		wait_no_deleting(e);
		fill(buf, BS, 9, 0);
		assert_int_equal(p_io(e, &k2, K_REPAIR, hs, 4, BS, BS, buf, 0), 0);
		assert_int_equal(p_io(e, &k2, K_READ, hs, 4, BS, BS, r, 0), 0);
		assert_true(is_filled(r, BS, 9, 0));
		snap_read(e, "s1", BS, r);
		assert_true(is_filled(r, BS, 9, 0));
		store_read(e, BS, BS, r);
		assert_true(is_filled(r, BS, 2, 0));
		/* the repair's store call runs off the server's worker: held in
		 * its thread (test hook), a READ sent after it on the same
		 * connection is answered first; then the repair answers */
		{
			char hold[600];
			struct op o1 = {.k = &k2, .kind = K_REPAIR, .handle = hs, .epoch = 4,
					.offset = 2 * BS, .len = BS, .buf = buf};
			int fd;

			snprintf(hold, sizeof(hold), "%s/repair-hold", e->dir);
			fd = open(hold, O_CREAT | O_WRONLY, 0644);
			assert_true(fd >= 0);
			close(fd);
			setenv("TSR_TEST_PEER_REPAIR_HOLD_FILE", hold, 1);
			sem_init(&o1.done, 0, 0);
			on_client(e, op_issue, &o1);
			assert_int_equal(p_io(e, &k2, K_READ, hs, 4, BS, BS, r, 0), 0);
			assert_true(is_filled(r, BS, 9, 0));
			assert_int_equal(sem_trywait(&o1.done), -1); /* the repair: not yet */
			unlink(hold);
			assert_int_equal(sem_wait_ms(&o1.done, 20000), 0);
			sem_destroy(&o1.done);
			unsetenv("TSR_TEST_PEER_REPAIR_HOLD_FILE");
			assert_int_equal(o1.ret, 0);
			assert_int_equal(o1.status, 0);
			snap_read(e, "s1", 2 * BS, r);
			assert_true(is_filled(r, BS, 9, 0));

			/* the connection closes while a repair is held: its
			 * answer finds the connection closed and goes with the
			 * request (ASan: nothing leaked or used after free); the
			 * repair itself is done */
			struct tsr_peer_server_stats st0, st;
			struct cli k3;
			struct op o3 = {.kind = K_OPEN, .name = "v@s1", .epoch = 4};

			tsr_peer_server_get_stats(e->srv, &st0);
			cli_make(e, &k3, TOKEN, e->port, 0);
			o3.k = &k3;
			assert_int_equal(op_run(e, &o3), 0);
			fd = open(hold, O_CREAT | O_WRONLY, 0644);
			assert_true(fd >= 0);
			close(fd);
			setenv("TSR_TEST_PEER_REPAIR_HOLD_FILE", hold, 1);
			tsr_peer_server_get_stats(e->srv, &st);
			o1 = (struct op){.k = &k3, .kind = K_REPAIR, .handle = o3.handle, .epoch = 4,
					 .offset = 3 * BS, .len = BS, .buf = buf};
			sem_init(&o1.done, 0, 0);
			on_client(e, op_issue, &o1);
			for (int i = 0;; i++) { /* the server has it (held in its thread) */
				struct tsr_peer_server_stats s2;

				tsr_peer_server_get_stats(e->srv, &s2);
				if (s2.frames > st.frames)
					break;
				assert_true(i < 2000);
				usleep(10000);
			}
			usleep(50000);
			cli_free(e, &k3);
			assert_int_equal(sem_wait_ms(&o1.done, 20000), 0);
			sem_destroy(&o1.done);
			assert_true(o1.ret < 0 || o1.status < 0); /* cancelled with the client */
			unlink(hold);
			unsetenv("TSR_TEST_PEER_REPAIR_HOLD_FILE");
			for (int i = 0;; i++) { /* the connection freed once the repair answered */
				tsr_peer_server_get_stats(e->srv, &st);
				if (st.connections_open == st0.connections_open)
					break;
				assert_true(i < 2000);
				usleep(10000);
			}
			snap_read(e, "s1", 3 * BS, r);
			assert_true(is_filled(r, BS, 9, 0));
		}
		fill(buf, BS, 10, 0);
		assert_int_equal(p_io(e, &k2, K_REPAIR, hs, 3, BS, BS, buf, 0), -ESTALE);
		assert_int_equal(p_io(e, &k2, K_REPAIR, h2, 4, BS, BS, buf, 0), -EINVAL);
		assert_int_equal(p_io(e, &k2, K_REPAIR, hs, 4, 0, 100, buf, 0), -EINVAL);
		snap_read(e, "s1", BS, r);
		assert_true(is_filled(r, BS, 9, 0));
		store_read(e, BS, BS, r);
		assert_true(is_filled(r, BS, 2, 0));
		/* the volume's snapshots, on the head session only */
		o = (struct op){.k = &k2, .kind = K_SLIST, .handle = h2, .epoch = 4};
		assert_int_equal(op_run(e, &o), 0);
		assert_int_equal(o.nlist, 1);
		assert_string_equal(o.slist[0].name, "s1");
		assert_int_equal(o.slist[0].size, VOL_SIZE);
		o = (struct op){.k = &k2, .kind = K_SLIST, .handle = hs, .epoch = 4};
		assert_int_equal(op_run(e, &o), -EINVAL);
		o = (struct op){.k = &k2, .kind = K_SLIST, .handle = h2, .epoch = 3};
		assert_int_equal(op_run(e, &o), -ESTALE);
		assert_int_equal(p_io(e, &k2, K_CLOSE, hs, 4, 0, 0, NULL, 0), 0);
		assert_int_equal(p_io(e, &k2, K_READ, hs, 4, BS, BS, r, 0), -EBADF);
		o = (struct op){ .k = &k2, .kind = K_OPEN, .name = "v@nope", .epoch = 4 };
		assert_int_equal(op_run(e, &o), -ENOENT);
		o = (struct op){ .k = &k2, .kind = K_OPEN, .name = "v@", .epoch = 4 };
		assert_int_equal(op_run(e, &o), -EINVAL);
	}
	assert_int_equal(k.fails + k2.fails, 0);
	cli_free(e, &k);
	cli_free(e, &k2);
	tsr_free_aligned(buf);
	tsr_free_aligned(r);
}

static void *unlink_later(void *arg)
{
	usleep(300000);
	unlink(arg);
	return NULL;
}

/* The server's worker stops while a REPAIR runs in its thread: the stop
 * waits for it, the answer finds the worker stopping and the connection
 * closed and goes with the request (ASan: nothing leaked, no use after
 * free); the repair itself is done. */
static void test_repair_at_stop(void **state)
{
	struct env *e = *state;
	uint8_t *buf = tsr_alloc_aligned(BS), *r = tsr_alloc_aligned(BS);
	struct tsr_peer_server_stats st, s2;
	struct op o = {.kind = K_OPEN, .name = "v@s1", .epoch = 1};
	char hold[600];
	pthread_t t;
	struct cli k;
	uint64_t h;
	int fd;

	cli_make(e, &k, TOKEN, e->port, 0);
	assert_int_equal(p_open(e, &k, "v", 1, &h), 0);
	assert_int_equal(p_snap(e, &k, h, 1, TSR_SNAP_CREATE, "s1", ""), 0);
	o.k = &k;
	assert_int_equal(op_run(e, &o), 0);
	snprintf(hold, sizeof(hold), "%s/repair-hold", e->dir);
	fd = open(hold, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	close(fd);
	setenv("TSR_TEST_PEER_REPAIR_HOLD_FILE", hold, 1);
	fill(buf, BS, 7, 0);
	tsr_peer_server_get_stats(e->srv, &st);
	o = (struct op){.k = &k, .kind = K_REPAIR, .handle = o.handle, .epoch = 1, .offset = BS,
			.len = BS, .buf = buf};
	sem_init(&o.done, 0, 0);
	on_client(e, op_issue, &o);
	for (int i = 0;; i++) { /* the server has it (held in its thread) */
		tsr_peer_server_get_stats(e->srv, &s2);
		if (s2.frames > st.frames)
			break;
		assert_true(i < 2000);
		usleep(10000);
	}
	usleep(50000);
	assert_int_equal(pthread_create(&t, NULL, unlink_later, hold), 0);
	tsr_worker_stop(e->sw); /* returns once the held repair is done */
	e->sw = NULL;
	pthread_join(t, NULL);
	unsetenv("TSR_TEST_PEER_REPAIR_HOLD_FILE");
	assert_int_equal(sem_wait_ms(&o.done, 20000), 0); /* the connection went */
	sem_destroy(&o.done);
	assert_true(o.ret < 0 || o.status < 0);
	tsr_peer_server_get_stats(e->srv, &s2);
	assert_int_equal(s2.connections_open, 0);
	snap_read(e, "s1", BS, r);
	assert_true(is_filled(r, BS, 7, 0));
	cli_free(e, &k);
	tsr_free_aligned(buf);
	tsr_free_aligned(r);
}

/* Send a raw SNAP request with payload p (len bytes); the reply's status. */
static int raw_snap(int fd, uint64_t handle, uint64_t seq, const uint8_t *p, uint32_t len,
		    uint32_t crc_xor)
{
	struct tsr_peer_hdr h = { .opcode = TSR_PEER_SNAP, .handle = handle, .epoch = 1,
				  .length = len, .seq = seq,
				  .data_crc = tsr_crc32c(0, p, len) ^ crc_xor };
	int status;

	raw_send(fd, &h, p, len);
	status = raw_reply(fd, &h, NULL);
	assert_int_equal(h.seq, seq);
	assert_int_equal(h.opcode, TSR_PEER_SNAP);
	return status;
}

/* SNAP frames the client never sends: the replica answers, the connection lives. */
static void test_snap_malformed(void **state)
{
	struct env *e = *state;
	struct tsr_snap_info si;
	uint8_t p[TSR_PEER_SNAP_MAX];
	uint64_t handle;
	int fd = raw_connect(e->port);

	handle = raw_hello_open(fd);
	/* a bad payload checksum */
	memcpy(p, "\x01\x02\x00s1", 5);
	assert_int_equal(raw_snap(fd, handle, 3, p, 5, 1), -EBADMSG);
	/* lengths that do not add up, an unknown op, a name with a NUL, a bad name */
	p[1] = 3;
	assert_int_equal(raw_snap(fd, handle, 4, p, 5, 0), -EPROTO);
	memcpy(p, "\x07\x02\x00s1", 5);
	assert_int_equal(raw_snap(fd, handle, 5, p, 5, 0), -EINVAL);
	memcpy(p, "\x01\x02\x00s\0", 5);
	assert_int_equal(raw_snap(fd, handle, 6, p, 5, 0), -EINVAL);
	memcpy(p, "\x01\x02\x00s/", 5);
	assert_int_equal(raw_snap(fd, handle, 7, p, 5, 0), -EINVAL);
	/* a handle never opened */
	memcpy(p, "\x01\x02\x00s1", 5);
	assert_int_equal(raw_snap(fd, handle + 3, 8, p, 5, 0), -EBADF);
	/* nothing was cut; a good one still works on the same connection */
	assert_int_equal(tsr_store_snap_info(e->store, "v", "s1", &si), -ENOENT);
	assert_int_equal(raw_snap(fd, handle, 9, p, 5, 0), 0);
	assert_int_equal(tsr_store_snap_info(e->store, "v", "s1", &si), 0);
	close(fd);
}

/* ---- staged writes ---- */

static int p_stage(struct env *e, struct cli *k, uint64_t h, uint64_t epoch,
		   const struct tsr_stage_entry *x, void *buf)
{
	struct op o = {.k = k, .kind = K_STAGE, .handle = h, .epoch = epoch, .stage = x, .buf = buf};

	return op_run(e, &o);
}

/* COMMIT (K_COMMIT) or RELEASE (K_RELEASE) of txn. */
static int p_txn(struct env *e, struct cli *k, enum kind kind, uint64_t h, uint64_t epoch,
		 uint64_t txn)
{
	struct op o = {.k = k, .kind = kind, .handle = h, .epoch = epoch, .offset = txn};

	return op_run(e, &o);
}

static int p_list(struct env *e, struct cli *k, uint64_t h, uint64_t epoch, struct op *o)
{
	*o = (struct op){.k = k, .kind = K_LIST, .handle = h, .epoch = epoch};
	return op_run(e, o);
}

static void test_stage(void **state)
{
	struct env *e = *state;
	uint8_t *buf = tsr_alloc_aligned(1u << 20), *r = tsr_alloc_aligned(1u << 20);
	struct tsr_stage_entry x = {.txn = (3ull << 32) | 1, .stripe = 2, .offset = 8 * BS,
				    .length = 2 * BS, .participants = 0x3f},
			       y;
	struct cli k, k2;
	struct op o;
	uint64_t h, h2, hs;

	cli_make(e, &k, TOKEN, e->port, 0);
	assert_int_equal(p_open(e, &k, "v", 3, &h), 0);
	fill(buf, 2 * BS, 1, 8 * BS);
	assert_int_equal(p_stage(e, &k, h, 3, &x, buf), 0);
	assert_int_equal(p_list(e, &k, h, 3, &o), 0);
	assert_int_equal(o.nlist, 1);
	assert_int_equal(o.list[0].txn, x.txn);
	assert_int_equal(o.list[0].stripe, 2);
	assert_int_equal(o.list[0].offset, 8 * BS);
	assert_int_equal(o.list[0].length, 2 * BS);
	assert_int_equal(o.list[0].participants, 0x3f);
	assert_int_equal(o.list[0].state, TSR_STAGE_STAGED);
	/* staged: not in place on the replica */
	store_read(e, 8 * BS, 2 * BS, r);
	assert_true(is_zero(r, 2 * BS));
	/* the replica's store answers come back as they are */
	y = x;
	y.length = BS;
	assert_int_equal(p_stage(e, &k, h, 3, &y, buf), -EEXIST);
	assert_int_equal(p_txn(e, &k, K_COMMIT, h, 3, x.txn + 1), -ENOENT);
	assert_int_equal(p_txn(e, &k, K_COMMIT, h, 3, x.txn), 0);
	store_read(e, 8 * BS, 2 * BS, r);
	assert_true(is_filled(r, 2 * BS, 1, 8 * BS));
	assert_int_equal(p_list(e, &k, h, 3, &o), 0);
	assert_int_equal(o.nlist, 1);
	assert_int_equal(o.list[0].state, TSR_STAGE_COMMITTED);

	/* the largest chunk, then two entries listed in txn order */
	y = (struct tsr_stage_entry){.txn = x.txn + 5, .stripe = 7, .offset = 1u << 20,
				     .length = 1u << 20, .participants = 1};
	fill(buf, 1u << 20, 2, 1u << 20);
	assert_int_equal(p_stage(e, &k, h, 3, &y, buf), 0);
	assert_int_equal(p_list(e, &k, h, 3, &o), 0);
	assert_int_equal(o.nlist, 2);
	assert_int_equal(o.list[0].txn, x.txn);
	assert_int_equal(o.list[1].txn, y.txn);
	assert_int_equal(p_txn(e, &k, K_COMMIT, h, 3, y.txn), 0);
	store_read(e, 1u << 20, 1u << 20, r);
	assert_true(is_filled(r, 1u << 20, 2, 1u << 20));
	/* release by bound */
	assert_int_equal(p_txn(e, &k, K_RELEASE, h, 3, x.txn), 0);
	assert_int_equal(p_list(e, &k, h, 3, &o), 0);
	assert_int_equal(o.nlist, 1);
	assert_int_equal(o.list[0].txn, y.txn);
	assert_int_equal(p_txn(e, &k, K_COMMIT, h, 3, x.txn), -ENOENT);

	/* bad requests never reach the wire */
	y = x;
	y.length = 0;
	assert_int_equal(p_stage(e, &k, h, 3, &y, buf), -EINVAL);
	y = x;
	y.length = (1u << 20) + BS;
	assert_int_equal(p_stage(e, &k, h, 3, &y, buf), -EINVAL);
	y = x;
	y.offset = 100;
	assert_int_equal(p_stage(e, &k, h, 3, &y, buf), -EINVAL);
	y = x;
	y.participants = 0;
	assert_int_equal(p_stage(e, &k, h, 3, &y, buf), -EINVAL);
	y.participants = 1u << 20;
	assert_int_equal(p_stage(e, &k, h, 3, &y, buf), -EINVAL);
	/* past the end of the volume: the store says so */
	y = x;
	y.txn = x.txn + 9;
	y.offset = VOL_SIZE;
	y.length = BS;
	assert_int_equal(p_stage(e, &k, h, 3, &y, buf), -EINVAL);

	/* a newer coordinator fences every staged-write call of the old one */
	cli_make(e, &k2, TOKEN, e->port, 0);
	assert_int_equal(p_open(e, &k2, "v", 4, &h2), 0);
	x.txn = (3ull << 32) | 20;
	assert_int_equal(p_stage(e, &k, h, 3, &x, buf), -ESTALE);
	assert_int_equal(p_txn(e, &k, K_COMMIT, h, 3, y.txn), -ESTALE);
	assert_int_equal(p_txn(e, &k, K_RELEASE, h, 3, UINT64_MAX), -ESTALE);
	assert_int_equal(p_list(e, &k, h, 3, &o), -ESTALE);
	assert_int_equal(p_list(e, &k2, h2, 4, &o), 0);
	assert_int_equal(o.nlist, 1); /* nothing the stale one sent changed it */
	assert_int_equal(p_txn(e, &k2, K_RELEASE, h2, 4, UINT64_MAX), 0);
	assert_int_equal(p_list(e, &k2, h2, 4, &o), 0);
	assert_int_equal(o.nlist, 0);

	/* a read-only snapshot session refuses them */
	assert_int_equal(tsr_store_snap_create(e->store, "v", "s1", NULL), 0);
	o = (struct op){.k = &k2, .kind = K_OPEN, .name = "v@s1", .epoch = 4};
	assert_int_equal(op_run(e, &o), 0);
	hs = o.handle;
	x.txn = (4ull << 32) | 1;
	assert_int_equal(p_stage(e, &k2, hs, 4, &x, buf), -EROFS);
	assert_int_equal(p_txn(e, &k2, K_COMMIT, hs, 4, 1), -EROFS);
	assert_int_equal(p_txn(e, &k2, K_RELEASE, hs, 4, 1), -EROFS);
	assert_int_equal(p_list(e, &k2, hs, 4, &o), -EROFS);
	/* the connection goes on */
	assert_int_equal(p_stage(e, &k2, h2, 4, &x, buf), 0);
	assert_int_equal(k.fails + k2.fails, 0);
	cli_free(e, &k);
	cli_free(e, &k2);
	tsr_free_aligned(buf);
	tsr_free_aligned(r);
}

/* Size of v's stage journal file (the one volume of the store). */
static long long journal_size(struct env *e)
{
	char pat[600];
	glob_t g;
	struct stat st;
	long long size = -1;

	snprintf(pat, sizeof(pat), "%s/volumes/*.stage", e->dir);
	if (glob(pat, 0, NULL, &g) == 0) {
		if (g.gl_pathc == 1 && stat(g.gl_pathv[0], &st) == 0)
			size = (long long)st.st_size;
		globfree(&g);
	}
	return size;
}

/* A STAGE, COMMIT or RELEASE whose store call completes with -EAGAIN (a full
 * io queue met after the request was accepted) runs again on the replica, as
 * the block operations do: the coordinator sees each succeed (on the code
 * before, each answered -EAGAIN and the coordinator put the copy out of
 * sync); the STAGE run again appended one record, the COMMIT's in-place
 * write was made from the journal, the RELEASE forgot the txn. */
static void test_stage_late_eagain(void **state)
{
	struct env *e = *state;
	uint8_t *buf = tsr_alloc_aligned(2 * BS), *r = tsr_alloc_aligned(2 * BS);
	struct tsr_stage_entry x = {.txn = (3ull << 32) | 1, .stripe = 2, .offset = 8 * BS,
				    .length = 2 * BS, .participants = 0x3f};
	struct cli k;
	struct op o;
	uint64_t h;

	cli_make(e, &k, TOKEN, e->port, 0);
	assert_int_equal(p_open(e, &k, "v", 3, &h), 0);
	fill(buf, 2 * BS, 4, 8 * BS);
	atomic_store(&g_stage_late_eagain, 1);
	assert_int_equal(p_stage(e, &k, h, 3, &x, buf), 0);
	assert_int_equal(atomic_load(&g_stage_late_eagain), 0); /* it did meet it */
	assert_int_equal(p_list(e, &k, h, 3, &o), 0);
	assert_int_equal(o.nlist, 1);
	assert_int_equal(o.list[0].txn, x.txn);
	assert_int_equal(o.list[0].state, TSR_STAGE_STAGED);
	/* generation header and one STAGE record: appended once */
	assert_int_equal(journal_size(e), BS + BS + 2 * BS);

	/* the in-place write fails late; run again, from the journal */
	assert_int_equal(p_txn(e, &k, K_COMMIT, h, 3, x.txn), 0);
	store_read(e, 8 * BS, 2 * BS, r);
	assert_true(is_filled(r, 2 * BS, 4, 8 * BS));
	/* both COMMIT records: the first one's in-place write failed */
	assert_int_equal(journal_size(e), BS + BS + 2 * BS + 2 * BS);
	assert_int_equal(p_list(e, &k, h, 3, &o), 0);
	assert_int_equal(o.nlist, 1);
	assert_int_equal(o.list[0].state, TSR_STAGE_COMMITTED);

	/* the release's flush fails late; run again */
	assert_int_equal(p_txn(e, &k, K_RELEASE, h, 3, x.txn), 0);
	assert_int_equal(p_list(e, &k, h, 3, &o), 0);
	assert_int_equal(o.nlist, 0);
	assert_int_equal(journal_size(e), BS + BS + 2 * BS + 3 * BS);
	store_read(e, 8 * BS, 2 * BS, r);
	assert_true(is_filled(r, 2 * BS, 4, 8 * BS));
	assert_int_equal(k.fails, 0);
	cli_free(e, &k);
	tsr_free_aligned(buf);
	tsr_free_aligned(r);
}

/* Send a raw STAGE of data (len bytes) with prefix p; the reply's status. */
static int raw_stage(int fd, uint64_t handle, uint64_t seq, uint64_t offset, const uint8_t *p,
		     const uint8_t *data, uint32_t len, uint32_t crc_xor)
{
	struct tsr_peer_hdr h = {.opcode = TSR_PEER_STAGE, .handle = handle, .epoch = 1,
				 .offset = offset, .length = len, .seq = seq};
	int status;

	h.data_crc = tsr_crc32c(tsr_crc32c(0, p, TSR_PEER_STAGE_PREFIX), data, len) ^ crc_xor;
	raw_send(fd, &h, p, TSR_PEER_STAGE_PREFIX);
	assert_int_equal(send(fd, data, len, MSG_NOSIGNAL), len);
	status = raw_reply(fd, &h, NULL);
	assert_int_equal(h.seq, seq);
	assert_int_equal(h.opcode, TSR_PEER_STAGE);
	assert_int_equal(h.length, 0);
	return status;
}

/* STAGE frames the client never sends: the replica answers, the connection lives. */
static void test_stage_malformed(void **state)
{
	struct env *e = *state;
	uint8_t *data = tsr_alloc_aligned(4 * BS), *r = tsr_alloc_aligned(4 * BS);
	uint8_t p[TSR_PEER_STAGE_PREFIX], lp[2 * TSR_PEER_STAGE_ENTRY];
	struct tsr_stage_entry x = {.txn = 77, .stripe = 1, .participants = 3}, out[2];
	struct tsr_peer_hdr h;
	uint64_t handle;
	size_t n;
	int fd = raw_connect(e->port);

	handle = raw_hello_open(fd);
	fill(data, 4 * BS, 5, 0);
	tsr_peer_stage_pack(&x, p);
	/* a good frame (its data differs from the next one's by one bit) */
	data[3 * BS + 7] ^= 1;
	assert_int_equal(raw_stage(fd, handle, 3, 0, p, data, 4 * BS, 0), 0);
	data[3 * BS + 7] ^= 1;
	/* data_crc disagreeing with the payload */
	assert_int_equal(raw_stage(fd, handle, 4, 0, p, data, 4 * BS, 0x100), -EBADMSG);
	/* reserved bytes of the prefix, participants 0 */
	p[31] = 1;
	assert_int_equal(raw_stage(fd, handle, 5, 0, p, data, 4 * BS, 0), -EPROTO);
	x.participants = 0;
	tsr_peer_stage_pack(&x, p);
	assert_int_equal(raw_stage(fd, handle, 6, 0, p, data, 4 * BS, 0), -EINVAL);
	/* a handle never opened */
	x.participants = 3;
	tsr_peer_stage_pack(&x, p);
	assert_int_equal(raw_stage(fd, handle + 3, 7, 0, p, data, 4 * BS, 0), -EBADF);
	/* only the first one counts: the list has it, and its bytes go in place */
	h = (struct tsr_peer_hdr){.opcode = TSR_PEER_STAGE_LIST, .handle = handle, .epoch = 1,
				  .seq = 8};
	raw_send(fd, &h, NULL, 0);
	assert_int_equal(raw_reply(fd, &h, lp), 0);
	assert_int_equal(h.length, TSR_PEER_STAGE_ENTRY);
	assert_int_equal(h.data_crc, tsr_crc32c(0, lp, TSR_PEER_STAGE_ENTRY));
	assert_int_equal(tsr_peer_stage_list_parse(lp, h.length, out, 2, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(out[0].txn, 77);
	assert_int_equal(out[0].length, 4 * BS);
	h = (struct tsr_peer_hdr){
	    .opcode = TSR_PEER_COMMIT, .handle = handle, .epoch = 1, .offset = 77, .seq = 9};
	raw_send(fd, &h, NULL, 0);
	assert_int_equal(raw_reply(fd, &h, NULL), 0);
	store_read(e, 0, 4 * BS, r);
	data[3 * BS + 7] ^= 1;
	assert_memory_equal(r, data, 4 * BS);
	h = (struct tsr_peer_hdr){
	    .opcode = TSR_PEER_RELEASE, .handle = handle, .epoch = 1, .offset = 77, .seq = 10};
	raw_send(fd, &h, NULL, 0);
	assert_int_equal(raw_reply(fd, &h, NULL), 0);
	h = (struct tsr_peer_hdr){.opcode = TSR_PEER_STAGE_LIST, .handle = handle, .epoch = 1,
				  .seq = 11};
	raw_send(fd, &h, NULL, 0);
	assert_int_equal(raw_reply(fd, &h, lp), 0);
	assert_int_equal(h.length, 0);
	close(fd);
	tsr_free_aligned(data);
	tsr_free_aligned(r);
}

static void test_bad_write_crc(void **state)
{
	struct env *e = *state;
	uint8_t *buf = tsr_alloc_aligned(2 * BS), *r = tsr_alloc_aligned(2 * BS);
	struct tsr_peer_hdr h;
	uint64_t handle;
	int fd = raw_connect(e->port);

	handle = raw_hello_open(fd);
	fill(buf, 2 * BS, 9, 0);
	h = (struct tsr_peer_hdr){ .opcode = TSR_PEER_WRITE, .handle = handle, .offset = 0,
				   .length = 2 * BS, .epoch = 1, .seq = 3,
				   .data_crc = tsr_crc32c(0, buf, 2 * BS) };
	raw_send(fd, &h, buf, 2 * BS);
	assert_int_equal(raw_reply(fd, &h, NULL), 0);
	/* the same frame with one payload bit flipped */
	h = (struct tsr_peer_hdr){ .opcode = TSR_PEER_WRITE, .handle = handle, .offset = 0,
				   .length = 2 * BS, .epoch = 1, .seq = 4,
				   .data_crc = tsr_crc32c(0, buf, 2 * BS) };
	buf[5000] ^= 1;
	raw_send(fd, &h, buf, 2 * BS);
	assert_int_equal(raw_reply(fd, &h, NULL), -EBADMSG);
	assert_int_equal(h.seq, 4);
	/* the connection still works, and the data is the first write's */
	h = (struct tsr_peer_hdr){ .opcode = TSR_PEER_READ, .handle = handle, .length = 2 * BS,
				   .epoch = 1, .seq = 5 };
	raw_send(fd, &h, NULL, 0);
	assert_int_equal(raw_reply(fd, &h, r), 0);
	assert_int_equal(h.seq, 5);
	assert_int_equal(h.data_crc, tsr_crc32c(0, r, 2 * BS));
	assert_true(is_filled(r, 2 * BS, 9, 0));
	store_read(e, 0, 2 * BS, r);
	assert_true(is_filled(r, 2 * BS, 9, 0));
	close(fd);
	tsr_free_aligned(buf);
	tsr_free_aligned(r);
}

static void test_garbage_header(void **state)
{
	struct env *e = *state;
	uint8_t junk[TSR_PEER_HDR_SIZE], *r = tsr_alloc_aligned(BS);
	struct tsr_peer_server_stats st0, st;
	struct tsr_peer_hdr h;
	struct cli k;
	uint64_t hk;
	int fd = raw_connect(e->port);

	tsr_peer_server_get_stats(e->srv, &st0);
	cli_make(e, &k, TOKEN, e->port, 0);
	assert_int_equal(p_open(e, &k, "v", 1, &hk), 0);
	raw_hello_open(fd);
	memset(junk, 0x5a, sizeof(junk));
	memcpy(junk, "TSRP", 4); /* right magic, wrong everything else */
	assert_int_equal(send(fd, junk, sizeof(junk), MSG_NOSIGNAL), sizeof(junk));
	assert_int_equal(recv_all(fd, &h, 1), 0); /* the server closed it */
	close(fd);
	tsr_peer_server_get_stats(e->srv, &st);
	assert_int_equal(st.bad_frames - st0.bad_frames, 1);
	/* other connections are unaffected */
	assert_int_equal(p_io(e, &k, K_READ, hk, 1, 0, BS, r, 0), 0);
	assert_int_equal(k.fails, 0);

	/* a data op before HELLO: -EACCES, then closed */
	fd = raw_connect(e->port);
	h = (struct tsr_peer_hdr){ .opcode = TSR_PEER_FLUSH, .handle = 1, .epoch = 1, .seq = 9 };
	raw_send(fd, &h, NULL, 0);
	assert_int_equal(raw_reply(fd, &h, NULL), -EACCES);
	assert_int_equal(recv_all(fd, &h, 1), 0);
	close(fd);
	cli_free(e, &k);
	tsr_free_aligned(r);
}

static void test_timeout(void **state)
{
	struct env *e = *state;
	int port, lfd = listen_any(&port); /* accepts (backlog) but never answers */
	struct cli k;
	uint64_t h, t0;

	cli_make(e, &k, TOKEN, port, 300);
	t0 = tsr_mono_ms();
	assert_int_equal(p_open(e, &k, "v", 1, &h), -ETIMEDOUT);
	assert_true(tsr_mono_ms() - t0 >= 250);
	assert_true(tsr_mono_ms() - t0 < 3000);
	assert_int_equal(k.fails, 1);
	assert_int_equal(k.fail_err, -ETIMEDOUT);
	assert_int_equal(p_open(e, &k, "v", 1, &h), -ENOTCONN);
	cli_free(e, &k);
	assert_int_equal(k.fails, 1);
	close(lfd);
}

static void test_refused(void **state)
{
	struct env *e = *state;
	int port, lfd = listen_any(&port), ret;
	struct cli k;
	uint64_t h;

	close(lfd); /* nobody listens there now */
	cli_make(e, &k, TOKEN, port, 0);
	/* queued before the refusal arrives, or called after it */
	ret = p_open(e, &k, "v", 1, &h);
	assert_true(ret == -ECONNREFUSED || ret == -ENOTCONN);
	assert_int_equal(k.fails, 1);
	assert_int_equal(k.fail_err, -ECONNREFUSED);
	cli_free(e, &k);
}

/* A write in flight on the replica when its worker stops. */
static void test_server_killed(void **state)
{
	struct env *e = *state;
	uint8_t *buf = tsr_alloc_aligned(BS);
	struct op o = { .kind = K_WRITE, .epoch = 1, .len = BS };
	struct cli k;
	uint64_t h;

	cli_make(e, &k, TOKEN, e->port, 10000);
	assert_int_equal(p_open(e, &k, "v", 1, &h), 0);
	fill(buf, BS, 4, 0);
	o.k = &k;
	o.handle = h;
	o.buf = buf;
	sem_init(&o.done, 0, 0);
	on_client(e, op_issue, &o);
	assert_int_equal(o.ret, 0);
	usleep(200 * 1000); /* the write reaches the replica's disk queue */
	assert_int_equal(o.calls, 0);
	tsr_worker_stop(e->sw); /* closes its connections, waits for the write */
	e->sw = start_worker(0, NULL);
	assert_int_equal(sem_wait_ms(&o.done, 10000), 0);
	assert_int_equal(o.status, -ECONNRESET);
	assert_int_equal(k.fails, 1);
	assert_int_equal(k.fail_err, -ECONNRESET);
	sem_destroy(&o.done);
	cli_free(e, &k);
	/* a new client reaches the restarted worker */
	cli_make(e, &k, TOKEN, e->port, 0);
	assert_int_equal(p_open(e, &k, "v", 1, &h), 0);
	cli_free(e, &k);
	tsr_free_aligned(buf);
}

/* destroy with a request in flight: -ECANCELED before it returns. */
static void test_destroy_cancels(void **state)
{
	struct env *e = *state;
	int port, lfd = listen_any(&port);
	struct op o = { .kind = K_OPEN, .name = "v", .epoch = 1 };
	struct cli k;

	cli_make(e, &k, TOKEN, port, 0);
	o.k = &k;
	sem_init(&o.done, 0, 0);
	on_client(e, op_issue, &o);
	assert_int_equal(o.ret, 0);
	cli_free(e, &k);
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.status, -ECANCELED);
	assert_int_equal(k.fails, 0);
	sem_destroy(&o.done);
	close(lfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_bad_token, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_unknown, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_sums, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_late_eagain_retried, setup_late_eagain, teardown),
	    cmocka_unit_test_setup_teardown(test_stage_late_eagain, setup_stage_late_eagain,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_read_direct, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pipelined, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_epoch_fencing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_repair_at_stop, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snap_malformed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stage, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stage_malformed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_write_crc, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_garbage_header, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stats, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_server_killed, setup_slow_writes, teardown),
	    cmocka_unit_test_setup_teardown(test_destroy_cancels, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
