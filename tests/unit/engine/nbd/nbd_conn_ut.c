/*
 * Unit tests for engine/nbd/nbd_conn.c: a whole server (store in a scratch
 * directory, volume set, one worker) spoken to over a socketpair by a raw
 * client written here, so that every byte the server sends is checked and
 * the bad inputs real clients never send can be sent: bad magic, unknown
 * commands, writes past the end or over 32 MiB (payload skipped, stream
 * still in step), unaligned requests, and a client that vanishes with I/O
 * in flight (held open with the fault injector's delay).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tessera/layout_module.h"
#include "tessera/nbd.h"
#include "nbd/internal.h"

#define VOL_SIZE (64ull << 20)

struct env {
	char dir[256];
	struct tsr_store *store;
	struct tsr_volset *vols;
	struct tsr_nbd_server *srv;
	struct tsr_worker *w;
};

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void env_start(struct env *e, const char *fault)
{
	struct tsr_nbd_server_opts so = { 0 };
	struct tsr_io_opts io = { .kind = TSR_IO_AUTO, .fault_spec = fault };
	const char *base = getenv("TSR_TEST_DIR");
	int ret;

	memset(e, 0, sizeof(*e));
	/* O_DIRECT needs a disk file system, not tmpfs */
	snprintf(e->dir, sizeof(e->dir), "%s/tsr-nbd-XXXXXX", base ? base : "/var/tmp");
	assert_non_null(mkdtemp(e->dir));
	assert_int_equal(tsr_store_open(e->dir, NULL, &e->store), 0);
	assert_int_equal(tsr_store_vol_create(e->store, "vol", VOL_SIZE, NULL), 0);
	assert_int_equal(tsr_volset_create(e->store, &e->vols), 0);
	so.vols = e->vols;
	so.store = e->store;
	so.default_export = "vol";
	assert_int_equal(tsr_nbd_server_create(&so, &e->srv), 0);
	ret = tsr_worker_start(0, &io, &e->w);
	if (ret == -ENOSYS || ret == -EPERM) {
		print_message("no I/O backend: %s\n", strerror(-ret));
		exit(77);
	}
	assert_int_equal(ret, 0);
}

static void env_stop(struct env *e)
{
	struct tsr_nbd_stats st;

	tsr_worker_stop(e->w);
	tsr_nbd_server_get_stats(e->srv, &st);
	/* every connection freed itself once its I/O finished */
	assert_int_equal(st.connections_open, 0);
	tsr_nbd_server_destroy(e->srv);
	tsr_volset_destroy(e->vols);
	tsr_store_close(e->store);
	nftw(e->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

struct handoff {
	struct tsr_nbd_server *srv;
	int fd;
};

static void msg_start_conn(struct tsr_worker *w, void *arg)
{
	struct handoff *h = arg;

	tsr_nbd_conn_start(h->srv, w, h->fd);
	free(h);
}

/* A connected client socket (blocking, 10 s timeout). */
static int client(struct env *e)
{
	struct timeval tv = { .tv_sec = 10 };
	struct handoff *h = malloc(sizeof(*h));
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	h->srv = e->srv;
	h->fd = sv[1];
	assert_int_equal(tsr_worker_send(e->w, msg_start_conn, h), 0);
	return sv[0];
}

static void send_all(int fd, const void *p, size_t len)
{
	const uint8_t *b = p;

	while (len > 0) {
		ssize_t n = send(fd, b, len, MSG_NOSIGNAL);

		assert_true(n > 0);
		b += n;
		len -= (size_t)n;
	}
}

static void recv_all(int fd, void *p, size_t len)
{
	uint8_t *b = p;

	while (len > 0) {
		ssize_t n = recv(fd, b, len, 0);

		if (n < 0 && errno == EINTR) /* SO_RCVTIMEO: not restarted */
			continue;
		if (n <= 0)
			fail_msg("server closed or timed out (%zd: %s)", n, strerror(errno));
		b += n;
		len -= (size_t)n;
	}
}

/* True when the server closed the connection. */
static bool closed(int fd)
{
	uint8_t b;
	ssize_t n;

	do
		n = recv(fd, &b, 1, 0);
	while (n < 0 && errno == EINTR);
	return n <= 0;
}

static void send_opt(int fd, uint32_t opt, const void *data, uint32_t len)
{
	uint8_t h[16];

	nbd_put64(h, NBD_OPTS_MAGIC);
	nbd_put32(h + 8, opt);
	nbd_put32(h + 12, len);
	send_all(fd, h, 16);
	if (len)
		send_all(fd, data, len);
}

/* Read one option reply; returns its type, data copied into buf. */
static uint32_t recv_opt_reply(int fd, uint8_t *buf, uint32_t *len)
{
	uint8_t h[20];

	recv_all(fd, h, 20);
	assert_true(nbd_get64(h) == NBD_REP_MAGIC);
	*len = nbd_get32(h + 16);
	assert_true(*len <= 4096);
	recv_all(fd, buf, *len);
	return nbd_get32(h + 12);
}

/* Handshake to transmission on "vol"; returns the export size. */
static uint64_t handshake(int fd, bool structured)
{
	uint8_t greet[18], buf[4096], d[64];
	uint32_t len, type;
	uint64_t size = 0;

	recv_all(fd, greet, 18);
	assert_true(nbd_get64(greet) == NBD_MAGIC);
	assert_int_equal(nbd_get16(greet + 16), 3);
	nbd_put32(d, 3);
	send_all(fd, d, 4);
	if (structured) {
		static const char q[] = "base:allocation";

		send_opt(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
		assert_int_equal(recv_opt_reply(fd, buf, &len), NBD_REP_ACK);
		nbd_put32(d, 3);
		memcpy(d + 4, "vol", 3);
		nbd_put32(d + 7, 1);
		nbd_put32(d + 11, 15);
		memcpy(d + 15, q, 15);
		send_opt(fd, NBD_OPT_SET_META_CONTEXT, d, 30);
		assert_int_equal(recv_opt_reply(fd, buf, &len), NBD_REP_META_CONTEXT);
		assert_int_equal(nbd_get32(buf), NBD_META_ID_BASE_ALLOCATION);
		assert_int_equal(recv_opt_reply(fd, buf, &len), NBD_REP_ACK);
	}
	/* an unknown export first: an error, and the session goes on */
	nbd_put32(d, 4);
	memcpy(d + 4, "nope", 4);
	nbd_put16(d + 8, 0);
	send_opt(fd, NBD_OPT_GO, d, 10);
	assert_int_equal(recv_opt_reply(fd, buf, &len), NBD_REP_ERR_UNKNOWN);
	nbd_put32(d, 3);
	memcpy(d + 4, "vol", 3);
	nbd_put16(d + 7, 0);
	send_opt(fd, NBD_OPT_GO, d, 9);
	while ((type = recv_opt_reply(fd, buf, &len)) == NBD_REP_INFO) {
		if (nbd_get16(buf) == NBD_INFO_EXPORT)
			size = nbd_get64(buf + 2);
	}
	assert_int_equal(type, NBD_REP_ACK);
	assert_true(size == VOL_SIZE);
	return size;
}

static void send_req(int fd, uint16_t type, uint16_t flags, uint64_t handle, uint64_t off,
		     uint32_t len)
{
	uint8_t r[28];

	nbd_put32(r, NBD_REQUEST_MAGIC);
	nbd_put16(r + 4, flags);
	nbd_put16(r + 6, type);
	nbd_put64(r + 8, handle);
	nbd_put64(r + 16, off);
	nbd_put32(r + 24, len);
	send_all(fd, r, 28);
}

/* A simple reply; returns its error, checks the handle. */
static uint32_t recv_simple(int fd, uint64_t handle)
{
	uint8_t r[16];

	recv_all(fd, r, 16);
	assert_int_equal(nbd_get32(r), NBD_SIMPLE_REPLY_MAGIC);
	assert_true(nbd_get64(r + 8) == handle);
	return nbd_get32(r + 4);
}

static void test_simple_replies_and_bad_input(void **state)
{
	static uint8_t data[4096], back[4096];
	uint8_t *big;
	struct env e;
	int fd;

	env_start(&e, NULL);
	fd = client(&e);
	handshake(fd, false);
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + 1);

	/* write, read back */
	send_req(fd, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 1, 8192, 4096);
	send_all(fd, data, 4096);
	assert_int_equal(recv_simple(fd, 1), 0);
	send_req(fd, NBD_CMD_READ, 0, 2, 8192, 4096);
	assert_int_equal(recv_simple(fd, 2), 0);
	recv_all(fd, back, 4096);
	assert_memory_equal(back, data, 4096);

	/* past the end: ENOSPC for a write (payload skipped), EINVAL for a read */
	send_req(fd, NBD_CMD_WRITE, 0, 3, VOL_SIZE, 4096);
	send_all(fd, data, 4096);
	assert_int_equal(recv_simple(fd, 3), NBD_ENOSPC);
	send_req(fd, NBD_CMD_READ, 0, 4, VOL_SIZE - 4096, 8192);
	assert_int_equal(recv_simple(fd, 4), NBD_EINVAL);
	/* unaligned, unknown command, unknown flag */
	send_req(fd, NBD_CMD_WRITE, 0, 5, 512, 512);
	send_all(fd, data, 512);
	assert_int_equal(recv_simple(fd, 5), NBD_EINVAL);
	send_req(fd, 42, 0, 6, 0, 0);
	assert_int_equal(recv_simple(fd, 6), NBD_EINVAL);
	send_req(fd, NBD_CMD_READ, 0x100, 7, 0, 4096);
	assert_int_equal(recv_simple(fd, 7), NBD_EINVAL);
	/* BLOCK_STATUS without a meta context */
	send_req(fd, NBD_CMD_BLOCK_STATUS, 0, 8, 0, 4096);
	assert_int_equal(recv_simple(fd, 8), NBD_EINVAL);

	/* a write over 32 MiB: EINVAL after its payload is read and dropped */
	big = calloc(1, NBD_MAX_BLOCK + 4096);
	send_req(fd, NBD_CMD_WRITE, 0, 9, 0, NBD_MAX_BLOCK + 4096);
	send_all(fd, big, NBD_MAX_BLOCK + 4096);
	assert_int_equal(recv_simple(fd, 9), NBD_EINVAL);
	free(big);
	/* ... and the stream is still in step: the data is unchanged */
	send_req(fd, NBD_CMD_READ, 0, 10, 8192, 4096);
	assert_int_equal(recv_simple(fd, 10), 0);
	recv_all(fd, back, 4096);
	assert_memory_equal(back, data, 4096);

	/* TRIM (over the 32 MiB block size, with FUA) reads back zeroes */
	send_req(fd, NBD_CMD_TRIM, NBD_CMD_FLAG_FUA, 11, 0, 48u << 20);
	assert_int_equal(recv_simple(fd, 11), 0);
	send_req(fd, NBD_CMD_READ, 0, 12, 8192, 4096);
	assert_int_equal(recv_simple(fd, 12), 0);
	recv_all(fd, back, 4096);
	memset(data, 0, sizeof(data));
	assert_memory_equal(back, data, 4096);
	send_req(fd, NBD_CMD_FLUSH, 0, 13, 0, 0);
	assert_int_equal(recv_simple(fd, 13), 0);

	/* bad magic: the server hangs up */
	memset(data, 0xee, 28);
	send_all(fd, data, 28);
	assert_true(closed(fd));
	close(fd);
	env_stop(&e);
}

/* Many pipelined writes in one send: every handle answered once. */
static void test_pipelined(void **state)
{
	enum { N = 200 };
	static uint8_t buf[N * (28 + 4096)];
	bool seen[N] = { false };
	struct env e;
	size_t off = 0;
	int fd, i;

	env_start(&e, NULL);
	fd = client(&e);
	handshake(fd, false);
	for (i = 0; i < N; i++) {
		nbd_put32(buf + off, NBD_REQUEST_MAGIC);
		nbd_put16(buf + off + 4, 0);
		nbd_put16(buf + off + 6, NBD_CMD_WRITE);
		nbd_put64(buf + off + 8, (uint64_t)i);
		nbd_put64(buf + off + 16, (uint64_t)i * 4096);
		nbd_put32(buf + off + 24, 4096);
		memset(buf + off + 28, i, 4096);
		off += 28 + 4096;
	}
	send_all(fd, buf, off);
	for (i = 0; i < N; i++) {
		uint8_t r[16];
		uint64_t h;

		recv_all(fd, r, 16);
		assert_int_equal(nbd_get32(r + 4), 0);
		h = nbd_get64(r + 8);
		assert_true(h < N && !seen[h]);
		seen[h] = true;
	}
	/* spot-check one block */
	send_req(fd, NBD_CMD_READ, 0, 1000, 77 * 4096, 4096);
	assert_int_equal(recv_simple(fd, 1000), 0);
	recv_all(fd, buf, 4096);
	assert_int_equal(buf[0], 77);
	assert_int_equal(buf[4095], 77);
	/* soft disconnect */
	send_req(fd, NBD_CMD_DISC, 0, 1001, 0, 0);
	assert_true(closed(fd));
	close(fd);
	env_stop(&e);
}

/* A request whose I/O completes with -EAGAIN (the store queues later steps
 * of a copy on write or a layered read after the request was taken, and the
 * I/O queue can be full by then) is tried again, like one the queue had no
 * room for at submit; the code before answered EIO (a host write to a volume
 * failed while a snapshot of it was being read).  The fault injector fails
 * the first write and the first read with EAGAIN at completion. */
static void test_late_eagain_retried(void **state)
{
	static uint8_t buf[4096];
	struct env e;
	int fd;

	env_start(&e, "write:1:fail=EAGAIN,read:1:fail=EAGAIN");
	fd = client(&e);
	handshake(fd, false);
	memset(buf, 0x5a, sizeof(buf));
	send_req(fd, NBD_CMD_WRITE, 0, 1, 5 * 4096, 4096);
	send_all(fd, buf, sizeof(buf));
	assert_int_equal(recv_simple(fd, 1), 0);
	memset(buf, 0, sizeof(buf));
	send_req(fd, NBD_CMD_READ, 0, 2, 5 * 4096, 4096);
	assert_int_equal(recv_simple(fd, 2), 0);
	recv_all(fd, buf, sizeof(buf));
	assert_int_equal(buf[0], 0x5a);
	assert_int_equal(buf[4095], 0x5a);
	send_req(fd, NBD_CMD_DISC, 0, 3, 0, 0);
	assert_true(closed(fd));
	close(fd);
	env_stop(&e);
}

/* Structured replies: holes in reads, BLOCK_STATUS, error chunks. */
static void test_structured(void **state)
{
	static uint8_t data[4096];
	uint8_t h[20], p[600];
	uint64_t covered = 0, off;
	struct env e;
	int fd, chunks = 0;

	env_start(&e, NULL);
	fd = client(&e);
	handshake(fd, true);
	memset(data, 0xab, sizeof(data));
	send_req(fd, NBD_CMD_WRITE, 0, 1, 1 << 20, 4096);
	send_all(fd, data, 4096);
	assert_int_equal(recv_simple(fd, 1), 0);

	/* 1 MiB read around the block: hole, data, hole (chunks cover it all) */
	send_req(fd, NBD_CMD_READ, 0, 2, 512 << 10, 1 << 20);
	for (;;) {
		uint32_t len, type;

		recv_all(fd, h, 20);
		assert_int_equal(nbd_get32(h), NBD_STRUCTURED_REPLY_MAGIC);
		assert_true(nbd_get64(h + 8) == 2);
		type = nbd_get16(h + 6);
		len = nbd_get32(h + 16);
		chunks++;
		if (type == NBD_REPLY_TYPE_OFFSET_HOLE) {
			assert_int_equal(len, 12);
			recv_all(fd, p, 12);
			covered += nbd_get32(p + 8);
		} else {
			assert_int_equal(type, NBD_REPLY_TYPE_OFFSET_DATA);
			recv_all(fd, p, 8);
			off = nbd_get64(p);
			assert_true(off == 1 << 20);
			assert_int_equal(len - 8, 4096);
			recv_all(fd, data, 4096);
			assert_int_equal(data[0], 0xab);
			covered += len - 8;
		}
		if (nbd_get16(h + 4) & NBD_REPLY_FLAG_DONE)
			break;
	}
	assert_true(covered == 1 << 20);
	assert_int_equal(chunks, 3);

	/* BLOCK_STATUS over 4 MiB: data at 1 MiB, holes reading as zero around */
	send_req(fd, NBD_CMD_BLOCK_STATUS, 0, 3, 0, 4 << 20);
	recv_all(fd, h, 20);
	assert_int_equal(nbd_get16(h + 6), NBD_REPLY_TYPE_BLOCK_STATUS);
	assert_int_equal(nbd_get16(h + 4), NBD_REPLY_FLAG_DONE);
	assert_true(nbd_get32(h + 16) >= 12 && nbd_get32(h + 16) <= sizeof(p));
	recv_all(fd, p, nbd_get32(h + 16));
	assert_int_equal(nbd_get32(p), NBD_META_ID_BASE_ALLOCATION);
	assert_int_equal(nbd_get32(p + 4), 1 << 20);                     /* hole */
	assert_int_equal(nbd_get32(p + 8), NBD_STATE_HOLE | NBD_STATE_ZERO);
	assert_int_equal(nbd_get32(p + 16), 0);                          /* data */
	/* REQ_ONE: exactly one descriptor */
	send_req(fd, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 4, 1 << 20, 4 << 20);
	recv_all(fd, h, 20);
	assert_int_equal(nbd_get32(h + 16), 12);
	recv_all(fd, p, 12);
	assert_int_equal(nbd_get32(p + 8), 0);

	/* a read past the end: one error chunk, no data */
	send_req(fd, NBD_CMD_READ, 0, 5, VOL_SIZE, 4096);
	recv_all(fd, h, 20);
	assert_int_equal(nbd_get16(h + 6), NBD_REPLY_TYPE_ERROR);
	assert_int_equal(nbd_get16(h + 4), NBD_REPLY_FLAG_DONE);
	assert_true(nbd_get32(h + 16) >= 6 && nbd_get32(h + 16) <= sizeof(p));
	recv_all(fd, p, nbd_get32(h + 16));
	assert_int_equal(nbd_get32(p), NBD_EINVAL);
	assert_int_equal(nbd_get16(p + 4), nbd_get32(h + 16) - 6);

	send_req(fd, NBD_CMD_DISC, 0, 6, 0, 0);
	assert_true(closed(fd));
	close(fd);
	env_stop(&e);
}

/* Clients that hang up with writes in flight (each delayed 50 ms), and one
 * still connected when the worker stops: no crash, nothing left open. */
static void test_vanishing_clients(void **state)
{
	static uint8_t buf[32 * (28 + 4096)];
	struct tsr_nbd_stats st;
	struct env e;
	size_t off = 0;
	int fd, i, k, replies = 0;

	env_start(&e, "write:1+:delay=50");
	for (i = 0; i < 32; i++) {
		nbd_put32(buf + off, NBD_REQUEST_MAGIC);
		nbd_put16(buf + off + 4, NBD_CMD_FLAG_FUA);
		nbd_put16(buf + off + 6, NBD_CMD_WRITE);
		nbd_put64(buf + off + 8, (uint64_t)i);
		nbd_put64(buf + off + 16, (uint64_t)i * 4096);
		nbd_put32(buf + off + 24, 4096);
		off += 28 + 4096;
	}
	for (k = 0; k < 4; k++) {
		fd = client(&e);
		handshake(fd, k & 1);
		send_all(fd, buf, off);
		send_req(fd, NBD_CMD_WRITE, 0, 99, 0, 1 << 20); /* payload never comes */
		usleep(10000);
		close(fd);
	}
	/* Stop with writes in flight: they finish and are answered first.
	 * The FLUSH behind them (not delayed) proves they were all parsed. */
	fd = client(&e);
	handshake(fd, false);
	send_all(fd, buf, off);
	send_req(fd, NBD_CMD_FLUSH, 0, 500, 0, 0);
	for (;;) {
		uint8_t r[16];

		recv_all(fd, r, 16);
		assert_int_equal(nbd_get32(r + 4), 0);
		if (nbd_get64(r + 8) == 500)
			break;
		replies++;
	}
	tsr_nbd_server_get_stats(e.srv, &st);
	assert_true(st.connections_total == 5);
	env_stop(&e); /* asserts connections_open == 0 */
	for (;;) {
		uint8_t r[16];
		ssize_t n = recv(fd, r, 16, MSG_WAITALL);

		if (n < 0 && errno == EINTR)
			continue; /* nothing consumed: a partial read returns its count */
		if (n == 0)
			break;
		assert_int_equal(n, 16);
		assert_int_equal(nbd_get32(r + 4), 0);
		replies++;
	}
	assert_int_equal(replies, 32);
	close(fd);
}

/*
 * A cluster node: the export is a registered coordinator whose home is a
 * second worker.  The connection starts on worker 0 and must be moved: the
 * layout below sees every I/O, and counts those not on the home worker's io.
 */
struct home_layout {
	struct tsr_layout *inner;
	struct tsr_io *home_io;
	unsigned ios, wrong_thread;
};

static uint64_t hl_size(void *ctx)
{
	return tsr_layout_size(((struct home_layout *)ctx)->inner);
}

static void hl_check(struct home_layout *hl, struct tsr_io *io)
{
	hl->ios++;
	if (io != hl->home_io)
		hl->wrong_thread++;
}

static int hl_read(void *ctx, struct tsr_io *io, uint64_t off, uint32_t len, void *buf,
		   tsr_cb cb, void *arg)
{
	struct home_layout *hl = ctx;

	hl_check(hl, io);
	return tsr_layout_read(hl->inner, io, off, len, buf, cb, arg);
}

static int hl_write(void *ctx, struct tsr_io *io, uint64_t off, uint32_t len, const void *buf,
		    unsigned flags, tsr_cb cb, void *arg)
{
	struct home_layout *hl = ctx;

	hl_check(hl, io);
	return tsr_layout_write(hl->inner, io, off, len, buf, flags, cb, arg);
}

static int hl_flush(void *ctx, struct tsr_io *io, tsr_cb cb, void *arg)
{
	struct home_layout *hl = ctx;

	hl_check(hl, io);
	return tsr_layout_flush(hl->inner, io, cb, arg);
}

static int hl_trim(void *ctx, struct tsr_io *io, uint64_t off, uint64_t len, tsr_cb cb,
		   void *arg)
{
	struct home_layout *hl = ctx;

	hl_check(hl, io);
	return tsr_layout_trim(hl->inner, io, off, len, cb, arg);
}

static int hl_zeroes(void *ctx, struct tsr_io *io, uint64_t off, uint64_t len, unsigned flags,
		     tsr_cb cb, void *arg)
{
	struct home_layout *hl = ctx;

	hl_check(hl, io);
	return tsr_layout_write_zeroes(hl->inner, io, off, len, flags, cb, arg);
}

static void hl_destroy(void *ctx)
{
	tsr_layout_destroy(((struct home_layout *)ctx)->inner);
}

static const struct tsr_layout_ops home_layout_ops = {
	.name = "test-home",
	.size = hl_size,
	.read = hl_read,
	.write = hl_write,
	.flush = hl_flush,
	.trim = hl_trim,
	.write_zeroes = hl_zeroes,
	.destroy = hl_destroy,
};

static void msg_get_io(struct tsr_worker *w, void *arg)
{
	struct home_layout *hl = arg;

	hl->home_io = tsr_worker_io(w);
}

static void test_moves_to_home_worker(void **state)
{
	struct tsr_io_opts io = { .kind = TSR_IO_AUTO };
	static struct home_layout hl;
	struct tsr_worker *home;
	struct tsr_layout *l;
	static uint8_t buf[4096];
	struct env e;
	int fd, i;

	env_start(&e, NULL);
	assert_int_equal(tsr_worker_start(1, &io, &home), 0);
	assert_int_equal(tsr_worker_send(home, msg_get_io, &hl), 0);
	while (__atomic_load_n(&hl.home_io, __ATOMIC_ACQUIRE) == NULL)
		usleep(1000);
	assert_int_equal(tsr_layout_local_create(e.store, "vol", &hl.inner), 0);
	assert_int_equal(tsr_layout_new(&home_layout_ops, &hl, &l), 0);
	tsr_volset_set_cluster_mode(e.vols, true);
	assert_int_equal(tsr_volset_attach(e.vols, "vol", l, home), 0);
	assert_int_equal(tsr_volset_attach(e.vols, "vol", l, home), -EEXIST);

	fd = client(&e); /* starts on worker 0 */
	handshake(fd, false);
	for (i = 0; i < 50; i++) {
		memset(buf, i, sizeof(buf));
		send_req(fd, NBD_CMD_WRITE, 0, (uint64_t)i, (uint64_t)i * 4096, 4096);
		send_all(fd, buf, sizeof(buf));
	}
	for (i = 0; i < 50; i++) {
		uint8_t r[16];

		recv_all(fd, r, 16);
		assert_int_equal(nbd_get32(r + 4), 0);
	}
	send_req(fd, NBD_CMD_READ, 0, 99, 7 * 4096, 4096);
	assert_int_equal(recv_simple(fd, 99), 0);
	recv_all(fd, buf, 4096);
	assert_int_equal(buf[0], 7);
	send_req(fd, NBD_CMD_FLUSH, 0, 100, 0, 0);
	assert_int_equal(recv_simple(fd, 100), 0);
	assert_int_equal(hl.ios, 52);
	assert_int_equal(hl.wrong_thread, 0);
	send_req(fd, NBD_CMD_DISC, 0, 101, 0, 0);
	assert_true(closed(fd));
	close(fd);

	/* detached: new clients cannot open it; the store's copy is not served */
	assert_int_equal(tsr_volset_detach(e.vols, "vol"), 0);
	assert_int_equal(tsr_volset_detach(e.vols, "vol"), -ENOENT);
	assert_null(tsr_volset_layout(e.vols, "vol"));

	/* registered fenced (a DR target): fenced from the first handle on,
	 * no window between the registration and the fence (review 16c N4) */
	{
		struct tsr_layout *fl;
		struct tsr_vol *v;

		assert_int_equal(tsr_layout_local_create(e.store, "vol", &fl), 0);
		assert_int_equal(tsr_volset_attach_fenced(e.vols, "vol", fl, NULL, -EROFS), 0);
		assert_int_equal(tsr_vol_get(e.vols, "vol", &v), 0);
		assert_int_equal(tsr_vol_write_fence(v), -EROFS);
		tsr_vol_put(v);
		assert_int_equal(tsr_volset_detach(e.vols, "vol"), 0);
	}
	tsr_worker_stop(home);
	env_stop(&e);
}

/* tsr_vol_read from the test thread (a snapshot export has no home). */
struct sync_done {
	int calls, status;
};

static void sync_cb(void *arg, int status)
{
	struct sync_done *d = arg;

	d->status = status;
	d->calls++;
}

static int vol_read_sync(struct tsr_vol *v, struct tsr_io *io, uint64_t off, void *buf)
{
	struct sync_done d = { 0 };
	int ret = tsr_vol_read(v, io, off, 4096, buf, sync_cb, &d);

	while (ret == 0 && d.calls == 0) {
		tsr_io_submit(io);
		tsr_io_poll(io, 0, true);
	}
	return ret ? ret : d.status;
}

/*
 * A standalone node's local volume gets a home worker at first open
 * (tsr_volset_set_workers) and its connection moves there; a snapshot cut
 * through tsr_volset_snap while writes stream in holds exactly a prefix of
 * them in arrival order, and "vol@s1" reads it back read-only.
 */
static void test_local_home_and_snapshot(void **state)
{
	struct tsr_io_opts io_opts = { .kind = TSR_IO_AUTO };
	struct tsr_snap_req req = { .op = TSR_SNAP_CREATE, .snap = "s1" };
	struct tsr_worker *home, *workers[1];
	struct tsr_vol *v, *snap;
	struct tsr_io *io;
	uint8_t *buf = tsr_alloc_aligned(4096);
	struct env e;
	int fd, i, k, ret;

	env_start(&e, NULL);
	assert_int_equal(tsr_worker_start(1, &io_opts, &home), 0);
	workers[0] = home;
	tsr_volset_set_workers(e.vols, workers, 1);
	/* no handle yet: the admin layer would cut on the store directly */
	assert_int_equal(tsr_volset_snap(e.vols, "vol", &req), -ENOENT);

	fd = client(&e); /* starts on worker 0, moves to worker 1 */
	handshake(fd, false);
	assert_int_equal(tsr_vol_get(e.vols, "vol", &v), 0);
	assert_ptr_equal(tsr_vol_home(v), home);
	tsr_vol_put(v);
	/* 32 writes, 16 of them acknowledged, the cut, then 32 more */
	for (i = 0; i < 64; i++) {
		uint8_t r[16];

		if (i == 32) {
			int j;

			for (j = 0; j < 16; j++) {
				recv_all(fd, r, 16);
				assert_int_equal(nbd_get32(r + 4), 0);
			}
			assert_int_equal(tsr_volset_snap(e.vols, "vol", &req), 0);
		}
		memset(buf, i + 1, 4096);
		send_req(fd, NBD_CMD_WRITE, 0, (uint64_t)i, (uint64_t)i * 4096, 4096);
		send_all(fd, buf, 4096);
	}
	for (i = 16; i < 64; i++) {
		uint8_t r[16];

		recv_all(fd, r, 16);
		assert_int_equal(nbd_get32(r + 4), 0);
	}
	/* the same name again: the store's answer comes back through the gate */
	assert_int_equal(tsr_volset_snap(e.vols, "vol", &req), -EEXIST);
	/* a snapshot name is not a volume with a gate */
	assert_int_equal(tsr_volset_snap(e.vols, "vol@s1", &req), -ENOENT);

	assert_int_equal(tsr_io_create(&io_opts, &io), 0);
	assert_int_equal(tsr_vol_get(e.vols, "vol@s1", &snap), 0);
	assert_null(tsr_vol_home(snap));
	assert_int_equal(tsr_vol_size(snap), VOL_SIZE);
	/* blocks 0..k-1 hold their writes, k..63 are still zero: a prefix */
	for (k = 0; k < 64; k++) {
		assert_int_equal(vol_read_sync(snap, io, (uint64_t)k * 4096, buf), 0);
		if (buf[0] == 0)
			break;
		assert_int_equal(buf[0], k + 1);
		assert_int_equal(buf[4095], k + 1);
	}
	for (i = k; i < 64; i++) {
		assert_int_equal(vol_read_sync(snap, io, (uint64_t)i * 4096, buf), 0);
		assert_int_equal(buf[0], 0);
	}
	print_message("the cut holds the first %d of 64 writes\n", k);
	/* the acknowledged ones are in, the ones sent after the cut are not */
	assert_true(k >= 16 && k <= 32);
	memset(buf, 0xee, 4096);
	{
		struct sync_done d = { 0 };

		ret = tsr_vol_write(snap, io, 0, 4096, buf, 0, sync_cb, &d);
		while (ret == 0 && d.calls == 0) {
			tsr_io_submit(io);
			tsr_io_poll(io, 0, true);
		}
		assert_int_equal(ret ? ret : d.status, -EROFS);
	}
	tsr_vol_put(snap);
	tsr_io_destroy(io);
	assert_int_equal(tsr_vol_get(e.vols, "vol@nosuch", &snap), -ENOENT);
	assert_int_equal(tsr_vol_get(e.vols, "@s1", &snap), -ENOENT);
	assert_int_equal(tsr_vol_get(e.vols, "vol@s1@x", &snap), -ENOENT);

	send_req(fd, NBD_CMD_DISC, 0, 101, 0, 0);
	assert_true(closed(fd));
	close(fd);
	tsr_worker_stop(home);
	env_stop(&e);
	tsr_free_aligned(buf);
}

/* ---- export opens off the worker ---- */

static char g_hold[300]; /* $TSR_TEST_NBD_OPEN_HOLD_FILE */

static void hold(bool on)
{
	if (on) {
		int fd = open(g_hold, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);

		assert_true(fd >= 0);
		close(fd);
	} else {
		unlink(g_hold);
	}
}

/* Greeting read, flags sent, GO "vol" sent: the answer not read. */
static void go_sent(int fd)
{
	uint8_t greet[18], d[16];

	recv_all(fd, greet, 18);
	nbd_put32(d, 3);
	send_all(fd, d, 4);
	nbd_put32(d, 3);
	memcpy(d + 4, "vol", 3);
	nbd_put16(d + 7, 0);
	send_opt(fd, NBD_OPT_GO, d, 9);
}

/* True when fd has nothing to read for ms milliseconds. */
static bool quiet_for(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int n;

	for (int i = 0; i < ms; i++) { /* 1 ms steps: a signal only shortens one */
		n = poll(&p, 1, 1);
		if (n > 0)
			return false;
		if (n < 0 && errno != EINTR)
			fail_msg("poll: %s", strerror(errno));
	}
	return true;
}

static void *unhold_later(void *arg)
{
	(void)arg;
	usleep(200 * 1000);
	hold(false);
	return NULL;
}

/*
 * An open that waits (held after tsr_vol_get on the opener thread, as an ec
 * snapshot's question to a frozen copy would) leaves the one worker free:
 * another client's options are answered meanwhile and the GO answered after,
 * with the pipelined request behind it; a client gone mid-open leaves no
 * handle once its open ended; the worker stopped mid-open ends the
 * connection, closes the export the open took, and frees everything.
 */
static void test_open_off_worker(void **state)
{
	uint8_t buf[4096], greet[18], d[4];
	uint32_t len, type;
	struct env e;
	pthread_t t;
	int a, b, c, n;

	snprintf(g_hold, sizeof(g_hold), "/var/tmp/tsr-nbd-hold-%d", (int)getpid());
	setenv("TSR_TEST_NBD_OPEN_HOLD_FILE", g_hold, 1);
	env_start(&e, NULL);
	hold(true);
	a = client(&e);
	go_sent(a);
	send_req(a, NBD_CMD_READ, 0, 7, 0, 4096); /* pipelined behind the GO */
	b = client(&e);
	go_sent(b);
	close(b); /* gone while its open is out */
	assert_true(quiet_for(a, 100));
	/* the same worker answers another client meanwhile */
	c = client(&e);
	recv_all(c, greet, 18);
	nbd_put32(d, 3);
	send_all(c, d, 4);
	send_opt(c, NBD_OPT_LIST, NULL, 0);
	for (n = 0; (type = recv_opt_reply(c, buf, &len)) == NBD_REP_SERVER; n++)
		;
	assert_int_equal(type, NBD_REP_ACK);
	assert_int_equal(n, 1);
	assert_true(quiet_for(a, 10)); /* and a still waits */
	assert_true(tsr_volset_in_use(e.vols, "vol")); /* the opens hold it */
	hold(false);
	while ((type = recv_opt_reply(a, buf, &len)) == NBD_REP_INFO)
		;
	assert_int_equal(type, NBD_REP_ACK);
	recv_all(a, buf, 16);
	assert_int_equal(nbd_get32(buf), NBD_SIMPLE_REPLY_MAGIC);
	assert_int_equal(nbd_get32(buf + 4), 0);
	assert_true(nbd_get64(buf + 8) == 7);
	recv_all(a, buf, 4096);
	close(a);
	close(c);
	/* b's handle went with its open's result, a's with a: none left */
	for (n = 0; n < 1000 && tsr_volset_in_use(e.vols, "vol"); n++)
		usleep(10000);
	assert_false(tsr_volset_in_use(e.vols, "vol"));

	/* the worker stops while an open is out: the stop waits for it */
	hold(true);
	a = client(&e);
	go_sent(a);
	assert_true(quiet_for(a, 100));
	assert_int_equal(pthread_create(&t, NULL, unhold_later, NULL), 0);
	tsr_worker_stop(e.w);
	e.w = NULL;
	pthread_join(t, NULL);
	assert_true(closed(a));
	close(a);
	assert_false(tsr_volset_in_use(e.vols, "vol")); /* its export closed */
	env_stop(&e); /* asserts connections_open == 0 */
	unsetenv("TSR_TEST_NBD_OPEN_HOLD_FILE");
}

/*
 * The clients of an export, as a detach sees them (tsr_volset_client_ops,
 * nbd_server.c): listed with their peer ("unix pid N" over a socketpair)
 * once in transmission; tsr_volset_disconnect (detach --force) drains them:
 * writes in flight (held by the fault injector's delay) are answered, then
 * the connection ends, and the list empties once the I/O is done.  Another
 * export's name finds nobody.
 */
static void test_disconnect_by_name(void **state)
{
	static uint8_t data[4096];
	char peers[2][TSR_PEER_ADDR_MAX], want[TSR_PEER_ADDR_MAX];
	unsigned writes = 0, n;
	bool read_seen = false;
	struct env e;
	int a, i;

	env_start(&e, "write:1+:delay=300");
	a = client(&e);
	handshake(a, false);
	assert_int_equal(tsr_volset_clients(e.vols, "vol", peers, 2), 1);
	snprintf(want, sizeof(want), "unix pid %d", (int)getpid());
	assert_string_equal(peers[0], want);
	assert_int_equal(tsr_volset_clients(e.vols, "other", NULL, 0), 0);
	assert_int_equal(tsr_volset_disconnect(e.vols, "other"), 0);
	for (i = 0; i < 4; i++) {
		send_req(a, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, (uint64_t)i, (uint64_t)i * 4096, 4096);
		send_all(a, data, sizeof(data));
	}
	/* a read behind them (not delayed) answered: the writes were all parsed */
	send_req(a, NBD_CMD_READ, 0, 100, 1 << 20, 4096);
	while (!read_seen) {
		uint8_t r[16];

		recv_all(a, r, 16);
		assert_int_equal(nbd_get32(r + 4), 0);
		if (nbd_get64(r + 8) == 100) {
			recv_all(a, data, sizeof(data));
			read_seen = true;
		} else {
			writes++;
		}
	}
	assert_int_equal(tsr_volset_disconnect(e.vols, "vol"), 1);
	while (writes < 4) {
		uint8_t r[16];

		recv_all(a, r, 16);
		assert_int_equal(nbd_get32(r + 4), 0);
		assert_true(nbd_get64(r + 8) < 4);
		writes++;
	}
	assert_true(closed(a));
	for (n = 0; n < 1000 && tsr_volset_clients(e.vols, "vol", NULL, 0) > 0; n++)
		usleep(1000);
	assert_int_equal(tsr_volset_clients(e.vols, "vol", NULL, 0), 0);
	assert_false(tsr_volset_in_use(e.vols, "vol"));
	close(a);
	env_stop(&e);
}

/*
 * detach --force against a client that takes no reply (stopped, hung: the
 * case --force is for): the connection is closed all the same, not left
 * draining into a full socket forever (holding the volume, the detach then
 * unclean).  16 reads of 1 MiB fill the socket; the client reads nothing
 * until the list is empty, then finds the connection ended.
 */
static void test_disconnect_slow_reader(void **state)
{
	static uint8_t buf[1 << 16];
	struct env e;
	int a, i, n, queued = 0;

	env_start(&e, NULL);
	a = client(&e);
	handshake(a, false);
	for (i = 0; i < 16; i++)
		send_req(a, NBD_CMD_READ, 0, (uint64_t)i, (uint64_t)i << 20, 1 << 20);
	/* the replies back up: the server's socket is full */
	for (n = 0; n < 2000 && queued < (128 << 10); n++) {
		usleep(1000);
		assert_int_equal(ioctl(a, FIONREAD, &queued), 0);
	}
	assert_true(queued >= (128 << 10));
	assert_int_equal(tsr_volset_disconnect(e.vols, "vol"), 1);
	for (n = 0; n < 2000 && tsr_volset_clients(e.vols, "vol", NULL, 0) > 0; n++)
		usleep(1000);
	assert_int_equal(tsr_volset_clients(e.vols, "vol", NULL, 0), 0);
	while (recv(a, buf, sizeof(buf), 0) > 0) /* what was sent, then the end */
		;
	close(a);
	env_stop(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple_replies_and_bad_input),
		cmocka_unit_test(test_pipelined),
		cmocka_unit_test(test_late_eagain_retried),
		cmocka_unit_test(test_structured),
		cmocka_unit_test(test_vanishing_clients),
		cmocka_unit_test(test_moves_to_home_worker),
		cmocka_unit_test(test_local_home_and_snapshot),
		cmocka_unit_test(test_open_off_worker),
		cmocka_unit_test(test_disconnect_by_name),
		cmocka_unit_test(test_disconnect_slow_reader),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
