/*
 * The site link end to end inside one process (engine/site/site_frame.c
 * with site_tls.c, site_proto.c and site_target.c): a "primary" thread and
 * a "dr" thread over mutual TLS 1.3 on a non-blocking socketpair.  The
 * primary sends HELLO, VOLUME_OPEN, a few hundred WRITE / ZERO frames of
 * random sizes and places (kept in an in-memory model of the volume), a
 * BARRIER; the DR side applies them to a real store volume and answers
 * ACK; then the primary replays an old seq and the DR side answers ERROR
 * EILSEQ without touching the volume.  Checked: the ACK's seq, the ERROR's
 * code and seq, the store volume equals the model byte for byte; and a
 * receiver fed a frame whose payload was altered refuses it (-EBADMSG).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "tessera/site.h"
#include "tessera/vol.h"
#include "../store/store_test.h"
#include "site_certs.h"

#define VOL_SIZE (4u << 20)
#define STREAM 3u
#define EPOCH 12u
#define FRAMES 300u

static char g_dir[SITE_CERTS_DIR_MAX]; /* certificates (site_certs.h) */
static char g_store[512];              /* the DR store */
static uint8_t *g_model;               /* what the DR volume must hold */

/* ---- certificates (a CA, dr.site.test, primary.site.test) ---- */

static struct tsr_site_tls_ctx *ctx_for(const char *tag, bool server)
{
	struct tsr_site_tls_ctx *ctx = site_certs_ctx(g_dir, tag, server);

	assert_non_null(ctx);
	return ctx;
}

static int setup(void **state)
{
	(void)state;
	if (site_certs_init(g_dir) || scratch_dir(g_store, sizeof(g_store)))
		return -1;
	if (site_certs_leaf(g_dir, "dr", "dr.site.test", SITE_CERT_GOOD) ||
	    site_certs_leaf(g_dir, "primary", "primary.site.test", SITE_CERT_GOOD))
		return -1;
	g_model = calloc(1, VOL_SIZE);
	return g_model ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	free(g_model);
	rm_rf(g_store);
	return site_certs_cleanup(g_dir);
}

/* ---- blocking helpers for the test threads (an event loop in real use) ---- */

static void wait_for(struct tsr_site_tls *t, int fd)
{
	struct pollfd p = {.fd = fd, .events = tsr_site_tls_want(t)};

	assert_int_equal(poll(&p, 1, 10000), 1);
}

static void handshake(struct tsr_site_tls *t, int fd)
{
	int ret;

	while ((ret = tsr_site_tls_handshake(t)) == -EAGAIN)
		wait_for(t, fd);
	assert_int_equal(ret, 0);
}

static void send_frame(struct tsr_site_tls *t, int fd, const struct tsr_site_hdr *h,
		       const void *payload)
{
	struct tsr_site_tx tx;
	int ret;

	assert_int_equal(tsr_site_tx_start(&tx, h, payload), 0);
	while ((ret = tsr_site_tx_poll(&tx, t)) == -EAGAIN)
		wait_for(t, fd);
	assert_int_equal(ret, 1);
}

/* 1 with a frame in rx, 0 at a clean close. */
static int recv_frame(struct tsr_site_rx *rx, struct tsr_site_tls *t, int fd)
{
	int ret;

	while ((ret = tsr_site_rx_poll(rx, t)) == -EAGAIN)
		wait_for(t, fd);
	assert_true(ret == 0 || ret == 1);
	return ret;
}

/* ---- the primary: HELLO, VOLUME_OPEN, the stream, BARRIER, a replay ---- */

struct primary {
	int fd;
	uint64_t acked;     /* the ACK's seq */
	int error_code;     /* the ERROR's code after the replay */
	uint64_t error_seq;
};

static void *primary_main(void *arg)
{
	struct primary *p = arg;
	struct tsr_site_tls_ctx *ctx = ctx_for("primary", false);
	struct tsr_site_tls *t;
	struct tsr_site_rx rx;
	struct tsr_site_hello hello = {.site = "primary", .cluster = "c-primary"}, back;
	struct tsr_site_open open = {.volume = "db1-dr", .layout = "replicas:2"};
	uint8_t pl[TSR_SITE_OPEN_MAX + TSR_SITE_HELLO_MAX];
	uint8_t *data = tsr_alloc_aligned(64 * 1024);
	struct tsr_site_hdr h;
	uint64_t seq;
	unsigned rnd = 12345;

	assert_non_null(data);
	assert_int_equal(tsr_site_rx_init(&rx), 0);
	assert_int_equal(tsr_site_tls_new(ctx, p->fd, "dr.site.test", &t), 0);
	handshake(t, p->fd);
	h = (struct tsr_site_hdr){.opcode = TSR_SITE_HELLO};
	h.length = (uint32_t)tsr_site_hello_pack(&hello, pl);
	send_frame(t, p->fd, &h, pl);
	assert_int_equal(recv_frame(&rx, t, p->fd), 1);
	assert_int_equal(rx.hdr.opcode, TSR_SITE_HELLO);
	assert_int_equal(rx.hdr.flags, TSR_SITE_F_REPLY);
	assert_int_equal(tsr_site_hello_parse(rx.payload, rx.hdr.payload_len, &back), 0);
	assert_string_equal(back.site, "dr");
	h = (struct tsr_site_hdr){.opcode = TSR_SITE_VOLUME_OPEN, .stream = STREAM,
				  .offset = VOL_SIZE, .epoch = EPOCH};
	h.length = (uint32_t)tsr_site_open_pack(&open, pl);
	send_frame(t, p->fd, &h, pl);
	assert_int_equal(recv_frame(&rx, t, p->fd), 1);
	assert_int_equal(rx.hdr.opcode, TSR_SITE_VOLUME_OPEN);
	assert_int_equal(rx.hdr.seq, 0); /* a new stream */
	for (seq = 1; seq <= FRAMES; seq++) {
		uint32_t blocks = 1 + (rand_r(&rnd) % 16);
		uint64_t off = (uint64_t)(rand_r(&rnd) % (VOL_SIZE / BS - blocks)) * BS;
		uint32_t len = blocks * BS;

		h = (struct tsr_site_hdr){.stream = STREAM, .seq = seq, .offset = off,
					  .epoch = EPOCH, .length = len};
		if (rand_r(&rnd) % 5 == 0) {
			h.opcode = TSR_SITE_ZERO;
			memset(g_model + off, 0, len);
			send_frame(t, p->fd, &h, NULL);
		} else {
			h.opcode = TSR_SITE_WRITE;
			fill(data, len, seq, off);
			memcpy(g_model + off, data, len);
			send_frame(t, p->fd, &h, data);
		}
	}
	h = (struct tsr_site_hdr){.opcode = TSR_SITE_BARRIER, .stream = STREAM, .seq = FRAMES,
				  .epoch = EPOCH};
	send_frame(t, p->fd, &h, NULL);
	assert_int_equal(recv_frame(&rx, t, p->fd), 1);
	assert_int_equal(rx.hdr.opcode, TSR_SITE_ACK);
	p->acked = rx.hdr.seq;
	/* a replay of seq 7 with other data: refused, the volume untouched */
	fill(data, BS, 999, 0);
	h = (struct tsr_site_hdr){.opcode = TSR_SITE_WRITE, .stream = STREAM, .seq = 7,
				  .epoch = EPOCH, .length = BS};
	send_frame(t, p->fd, &h, data);
	assert_int_equal(recv_frame(&rx, t, p->fd), 1);
	assert_int_equal(rx.hdr.opcode, TSR_SITE_ERROR);
	{
		struct tsr_site_error err;

		assert_int_equal(tsr_site_error_parse(rx.payload, rx.hdr.payload_len, &err), 0);
		p->error_code = err.code;
		p->error_seq = rx.hdr.seq;
	}
	{
		int ret;

		while ((ret = tsr_site_tls_shutdown(t)) == -EAGAIN)
			wait_for(t, p->fd);
		assert_int_equal(ret, 0);
	}
	tsr_site_tls_free(t);
	shutdown(p->fd, SHUT_RDWR);
	tsr_site_rx_fini(&rx);
	tsr_free_aligned(data);
	tsr_site_tls_ctx_destroy(ctx);
	return NULL;
}

/* ---- the DR side: answer HELLO and VOLUME_OPEN, apply, ACK, ERROR ---- */

struct dr {
	int fd;
	unsigned applied_frames;
	unsigned errors_sent;
	uint8_t *readback; /* the whole volume read back at the end (aligned) */
};

static void *dr_main(void *arg)
{
	struct dr *d = arg;
	struct tsr_site_tls_ctx *ctx = ctx_for("dr", true);
	struct tsr_site_hello hello = {.site = "dr", .cluster = "c-dr"}, got;
	struct tsr_site_open open;
	struct tsr_site_target *target = NULL;
	struct tsr_store *store = NULL;
	struct tsr_svol *v = NULL;
	struct tsr_volset *set = NULL;
	struct tsr_vol *vol = NULL;
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
	struct tsr_site_tls *t;
	struct tsr_site_rx rx;
	struct tsr_site_hdr h;
	uint8_t pl[TSR_SITE_ERROR_MAX];

	assert_non_null(io);
	assert_int_equal(tsr_site_rx_init(&rx), 0);
	assert_int_equal(tsr_site_tls_new(ctx, d->fd, "primary.site.test", &t), 0);
	handshake(t, d->fd);
	assert_int_equal(recv_frame(&rx, t, d->fd), 1);
	assert_int_equal(rx.hdr.opcode, TSR_SITE_HELLO);
	assert_int_equal(tsr_site_hello_parse(rx.payload, rx.hdr.payload_len, &got), 0);
	assert_string_equal(got.cluster, "c-primary");
	h = (struct tsr_site_hdr){.opcode = TSR_SITE_HELLO, .flags = TSR_SITE_F_REPLY};
	h.length = (uint32_t)tsr_site_hello_pack(&hello, pl);
	send_frame(t, d->fd, &h, pl);
	assert_int_equal(recv_frame(&rx, t, d->fd), 1);
	assert_int_equal(rx.hdr.opcode, TSR_SITE_VOLUME_OPEN);
	assert_int_equal(tsr_site_open_parse(rx.payload, rx.hdr.payload_len, &open), 0);
	assert_int_equal(open.parsed.replicas, 2);
	assert_int_equal(tsr_store_open(g_store, NULL, &store), 0);
	assert_int_equal(tsr_store_vol_create(store, open.volume, rx.hdr.offset, NULL), 0);
	assert_int_equal(tsr_store_vol_open(store, open.volume, &v), 0);
	assert_int_equal(tsr_volset_create(store, &set), 0);
	assert_int_equal(tsr_vol_get(set, open.volume, &vol), 0);
	assert_int_equal(tsr_site_target_create(&(struct tsr_site_target_opts){
		.vol = vol, .io = io, .stream = rx.hdr.stream, .epoch = rx.hdr.epoch}, &target), 0);
	h = (struct tsr_site_hdr){.opcode = TSR_SITE_VOLUME_OPEN, .flags = TSR_SITE_F_REPLY,
				  .stream = rx.hdr.stream, .epoch = rx.hdr.epoch,
				  .seq = tsr_site_target_applied(target)};
	send_frame(t, d->fd, &h, NULL);
	while (recv_frame(&rx, t, d->fd) == 1) {
		struct done dn = {0};
		int ret = tsr_site_target_apply(target, &rx.hdr, rx.payload, done_cb, &dn);

		if (ret == 0)
			ret = wait_done(io, &dn);
		if (ret < 0) {
			struct tsr_site_error err = {.code = -ret};

			snprintf(err.msg, sizeof(err.msg), "%s seq %llu: expected %llu",
				 tsr_site_op_name(rx.hdr.opcode), (unsigned long long)rx.hdr.seq,
				 (unsigned long long)tsr_site_target_applied(target) + 1);
			h = (struct tsr_site_hdr){.opcode = TSR_SITE_ERROR,
						  .stream = rx.hdr.stream, .seq = rx.hdr.seq};
			h.length = (uint32_t)tsr_site_error_pack(&err, pl);
			send_frame(t, d->fd, &h, pl);
			d->errors_sent++;
			continue;
		}
		if (rx.hdr.opcode == TSR_SITE_BARRIER) {
			tsr_site_target_ack(target, &h);
			send_frame(t, d->fd, &h, NULL);
		} else {
			d->applied_frames++;
		}
	}
	tsr_site_target_destroy(target);
	tsr_vol_put(vol);
	tsr_volset_destroy(set);
	tsr_site_tls_free(t);
	shutdown(d->fd, SHUT_RDWR);
	tsr_site_rx_fini(&rx);
	tsr_site_tls_ctx_destroy(ctx);
	d->readback = tsr_alloc_aligned(VOL_SIZE); /* compared on the main thread */
	if (d->readback && sread(v, io, 0, VOL_SIZE, d->readback) != 0) {
		tsr_free_aligned(d->readback);
		d->readback = NULL;
	}
	tsr_svol_put(v);
	tsr_store_close(store);
	tsr_io_destroy(io);
	return NULL;
}

static void test_stream(void **state)
{
	struct primary p = {0};
	struct dr d = {0};
	pthread_t tp, td;
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	p.fd = sv[0];
	d.fd = sv[1];
	assert_int_equal(pthread_create(&td, NULL, dr_main, &d), 0);
	assert_int_equal(pthread_create(&tp, NULL, primary_main, &p), 0);
	pthread_join(tp, NULL);
	pthread_join(td, NULL);
	close(sv[0]);
	close(sv[1]);
	assert_int_equal(p.acked, FRAMES);
	assert_int_equal(d.applied_frames, FRAMES);
	assert_int_equal(p.error_code, EILSEQ);
	assert_int_equal(p.error_seq, 7);
	assert_int_equal(d.errors_sent, 1);
	assert_non_null(d.readback);
	assert_memory_equal(d.readback, g_model, VOL_SIZE); /* as the primary sent it */
	tsr_free_aligned(d.readback);
}

/* A receiver given a frame whose payload changed on the way refuses it. */
static void test_bad_payload(void **state)
{
	struct tsr_site_tls_ctx *cs = ctx_for("dr", true), *cc = ctx_for("primary", false);
	struct tsr_site_tls *ts, *tc;
	struct tsr_site_tx tx;
	struct tsr_site_rx rx;
	struct tsr_site_hdr h = {.opcode = TSR_SITE_WRITE, .stream = 1, .seq = 1, .epoch = 1,
				 .length = BS};
	uint8_t *data = tsr_alloc_aligned(BS);
	int sv[2], rs = -EAGAIN, rc = -EAGAIN, ret;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(tsr_site_tls_new(cs, sv[0], "primary.site.test", &ts), 0);
	assert_int_equal(tsr_site_tls_new(cc, sv[1], "dr.site.test", &tc), 0);
	while (rs == -EAGAIN || rc == -EAGAIN) { /* both ends on this thread */
		if (rs == -EAGAIN)
			rs = tsr_site_tls_handshake(ts);
		if (rc == -EAGAIN)
			rc = tsr_site_tls_handshake(tc);
	}
	assert_int_equal(rs, 0);
	assert_int_equal(rc, 0);
	fill(data, BS, 1, 0);
	assert_int_equal(tsr_site_tx_start(&tx, &h, data), 0);
	data[77] ^= 1; /* changed after its CRC was taken */
	assert_int_equal(tsr_site_tx_poll(&tx, tc), 1);
	assert_int_equal(tsr_site_rx_init(&rx), 0);
	while ((ret = tsr_site_rx_poll(&rx, ts)) == -EAGAIN)
		;
	assert_int_equal(ret, -EBADMSG);
	/* and a header that would not parse is not sent */
	h.seq = 0;
	assert_int_equal(tsr_site_tx_start(&tx, &h, data), -EINVAL);
	h.seq = 1;
	assert_int_equal(tsr_site_tx_start(&tx, &h, NULL), -EINVAL);
	tsr_site_rx_fini(&rx);
	tsr_site_tls_free(ts);
	tsr_site_tls_free(tc);
	close(sv[0]);
	close(sv[1]);
	tsr_free_aligned(data);
	tsr_site_tls_ctx_destroy(cs);
	tsr_site_tls_ctx_destroy(cc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stream),
		cmocka_unit_test(test_bad_payload),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
