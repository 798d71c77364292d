/*
 * Unit tests of the target-side ordered apply (engine/site/site_target.c)
 * on a real local store (scratch directory, O_DIRECT, the io backend the
 * machine has): WRITE and ZERO frames applied in order and read back; a
 * duplicate, a replay, a gap, a bad checksum, a stale epoch, another
 * stream, past the end, a frame past the window: each refused with its
 * errno, its callback never called, and every byte of the volume
 * unchanged; BARRIER and the ACK it yields; resuming at a given seq; a store
 * write error breaks the stream; SYNC_BEGIN / SYNC_END (in sequence) clear
 * and set consistent, and set_inconsistent holds until a SYNC_END.
 * Pipelining (the io fault injector delays or fails chosen writes): many
 * frames in the store at once with callbacks in seq order; a frame done
 * before an earlier slow one keeps applied at the contiguous prefix;
 * overlapping frames land in seq order (read back); a BARRIER / SYNC_END
 * waits for every earlier frame; a store error mid-window: the frames
 * before it applied, it and all later ones -EIO, every callback once.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tessera/site.h"
#include "tessera/vol.h"
#include "../store/store_test.h"

#define VOL_SIZE (1u << 20) /* 256 blocks */
#define STREAM 9u

struct env {
	char dir[512];
	struct tsr_store *store;
	struct tsr_io *io;
	struct tsr_svol *v;
	struct tsr_volset *set;
	struct tsr_vol *vol;     /* the target writes through the volume layer */
	struct tsr_site_target *t;
	uint8_t *data;   /* 64 KiB aligned: frames' payloads */
	uint8_t *before; /* the whole volume, as read before a refused frame */
	uint8_t *after;
};

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	struct tsr_site_target_opts o = {.stream = STREAM, .epoch = 5};

	if (e == NULL || scratch_dir(e->dir, sizeof(e->dir)))
		return -1;
	if (tsr_store_open(e->dir, NULL, &e->store) ||
	    tsr_store_vol_create(e->store, "dr-vol", VOL_SIZE, NULL) ||
	    tsr_store_vol_open(e->store, "dr-vol", &e->v) ||
	    tsr_volset_create(e->store, &e->set) || tsr_vol_get(e->set, "dr-vol", &e->vol))
		return -1;
	e->io = make_io(TSR_IO_AUTO, NULL);
	e->data = tsr_alloc_aligned(64 * 1024);
	e->before = tsr_alloc_aligned(VOL_SIZE);
	e->after = tsr_alloc_aligned(VOL_SIZE);
	if (e->io == NULL || e->data == NULL || e->before == NULL || e->after == NULL)
		return -1;
	o.vol = e->vol;
	o.io = e->io;
	if (tsr_site_target_create(&o, &e->t))
		return -1;
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	tsr_site_target_destroy(e->t);
	tsr_vol_put(e->vol);
	tsr_volset_destroy(e->set);
	tsr_svol_put(e->v);
	tsr_io_destroy(e->io);
	tsr_store_close(e->store);
	rm_rf(e->dir);
	tsr_free_aligned(e->data);
	tsr_free_aligned(e->before);
	tsr_free_aligned(e->after);
	free(e);
	return 0;
}

/* A WRITE frame of len bytes at off, payload filled with seed; as parsed. */
static struct tsr_site_hdr write_frame(struct env *e, uint64_t seq, uint64_t epoch,
				       uint64_t off, uint32_t len, uint64_t seed)
{
	struct tsr_site_hdr h = {.opcode = TSR_SITE_WRITE, .stream = STREAM, .seq = seq,
				 .offset = off, .epoch = epoch, .length = len};
	uint8_t buf[TSR_SITE_HDR_SIZE];

	fill(e->data, len, seed, off);
	h.data_crc = tsr_crc32c(0, e->data, len);
	tsr_site_hdr_pack(&h, buf);
	assert_int_equal(tsr_site_hdr_parse(buf, &h), 0);
	return h;
}

static struct tsr_site_hdr frame(uint8_t op, uint64_t seq, uint64_t epoch, uint64_t off,
				 uint32_t len)
{
	struct tsr_site_hdr h = {.opcode = op, .stream = STREAM, .seq = seq, .offset = off,
				 .epoch = epoch, .length = len};
	uint8_t buf[TSR_SITE_HDR_SIZE];

	tsr_site_hdr_pack(&h, buf);
	assert_int_equal(tsr_site_hdr_parse(buf, &h), 0);
	return h;
}

/* Apply and wait: the call's error, or the completion's status. */
static int apply(struct env *e, const struct tsr_site_hdr *h, const void *payload)
{
	struct done d = {0};
	int ret = tsr_site_target_apply(e->t, h, payload, done_cb, &d);

	if (ret) {
		assert_int_equal(d.calls, 0);
		return ret;
	}
	return wait_done(e->io, &d);
}

/* Refused before any I/O: errno want, no callback, no byte changed. */
static void refused(struct env *e, const struct tsr_site_hdr *h, const void *payload, int want)
{
	uint64_t applied = tsr_site_target_applied(e->t);
	struct tsr_svol_stats s0, s1;

	assert_int_equal(sread(e->v, e->io, 0, VOL_SIZE, e->before), 0);
	tsr_svol_get_stats(e->v, &s0);
	assert_int_equal(apply(e, h, payload), want);
	tsr_svol_get_stats(e->v, &s1);
	assert_int_equal(s1.writes, s0.writes);
	assert_int_equal(s1.bytes_written, s0.bytes_written);
	assert_int_equal(sread(e->v, e->io, 0, VOL_SIZE, e->after), 0);
	assert_memory_equal(e->before, e->after, VOL_SIZE);
	assert_int_equal(tsr_site_target_applied(e->t), applied);
}

static void test_in_order(void **state)
{
	struct env *e = *state;
	struct tsr_site_hdr h, ack;

	h = write_frame(e, 1, 5, 0, 16 * BS, 1);
	assert_int_equal(apply(e, &h, e->data), 0);
	h = write_frame(e, 2, 5, 8 * BS, 4 * BS, 2);
	assert_int_equal(apply(e, &h, e->data), 0);
	h = frame(TSR_SITE_ZERO, 3, 5, 2 * BS, 2 * BS);
	assert_int_equal(apply(e, &h, NULL), 0);
	assert_int_equal(tsr_site_target_applied(e->t), 3);
	h = frame(TSR_SITE_BARRIER, 3, 5, 0, 0);
	assert_int_equal(apply(e, &h, NULL), 0);
	tsr_site_target_ack(e->t, &ack);
	assert_int_equal(ack.opcode, TSR_SITE_ACK);
	assert_int_equal(ack.stream, STREAM);
	assert_int_equal(ack.seq, 3);
	assert_int_equal(ack.epoch, 5);
	{ /* the ACK is a valid frame */
		uint8_t buf[TSR_SITE_HDR_SIZE];
		struct tsr_site_hdr back;

		tsr_site_hdr_pack(&ack, buf);
		assert_int_equal(tsr_site_hdr_parse(buf, &back), 0);
	}
	/* read back: blocks 0-1 seed 1, 2-3 zero, 4-7 seed 1, 8-11 seed 2, 12-15 seed 1 */
	assert_int_equal(sread(e->v, e->io, 0, VOL_SIZE, e->after), 0);
	assert_true(is_filled(e->after, 2 * BS, 1, 0));
	assert_true(is_zero(e->after + 2 * BS, 2 * BS));
	assert_true(is_filled(e->after + 4 * BS, 4 * BS, 1, 4 * BS));
	assert_true(is_filled(e->after + 8 * BS, 4 * BS, 2, 8 * BS));
	assert_true(is_filled(e->after + 12 * BS, 4 * BS, 1, 12 * BS));
	assert_true(is_zero(e->after + 16 * BS, VOL_SIZE - 16 * BS));
}

static void test_refused(void **state)
{
	struct env *e = *state;
	struct tsr_site_hdr h;

	h = write_frame(e, 1, 5, 0, 4 * BS, 1);
	assert_int_equal(apply(e, &h, e->data), 0);
	h = write_frame(e, 2, 5, 4 * BS, 4 * BS, 2);
	assert_int_equal(apply(e, &h, e->data), 0);
	/* duplicate of seq 2 with other data, a replay of seq 1, a gap */
	h = write_frame(e, 2, 5, 4 * BS, 4 * BS, 66);
	refused(e, &h, e->data, -EILSEQ);
	h = write_frame(e, 1, 5, 0, 4 * BS, 77);
	refused(e, &h, e->data, -EILSEQ);
	h = write_frame(e, 4, 5, 0, 4 * BS, 88);
	refused(e, &h, e->data, -EILSEQ);
	h = frame(TSR_SITE_ZERO, 2, 5, 0, 4 * BS);
	refused(e, &h, NULL, -EILSEQ);
	h = frame(TSR_SITE_ZERO, 9, 5, 0, 4 * BS);
	refused(e, &h, NULL, -EILSEQ);
	/* bad checksum: one flipped byte of the payload */
	h = write_frame(e, 3, 5, 0, 4 * BS, 3);
	e->data[100] ^= 0x40;
	refused(e, &h, e->data, -EBADMSG);
	refused(e, &h, NULL, -EBADMSG);
	/* stale epoch, another stream, not a data frame */
	h = write_frame(e, 3, 4, 0, 4 * BS, 3);
	refused(e, &h, e->data, -ESTALE);
	h = write_frame(e, 3, 5, 0, 4 * BS, 3);
	h.stream = STREAM + 1;
	refused(e, &h, e->data, -EPROTO);
	h = frame(TSR_SITE_ACK, 3, 5, 0, 0);
	refused(e, &h, NULL, -EPROTO);
	/* past the end */
	h = write_frame(e, 3, 5, VOL_SIZE - 2 * BS, 4 * BS, 3);
	refused(e, &h, e->data, -ENOSPC);
	h = frame(TSR_SITE_ZERO, 3, 5, VOL_SIZE, BS);
	refused(e, &h, NULL, -ENOSPC);
	/* payload not block aligned */
	h = write_frame(e, 3, 5, 0, BS, 3);
	memmove(e->data + 8, e->data, BS);
	refused(e, &h, e->data + 8, -EINVAL);
	/* barrier beyond what is applied; snapshot markers not built yet */
	h = frame(TSR_SITE_BARRIER, 3, 5, 0, 0);
	refused(e, &h, NULL, -EILSEQ);
	{
		struct tsr_site_hdr s = {.opcode = TSR_SITE_SNAPSHOT, .stream = STREAM, .seq = 3,
					 .epoch = 5, .length = 2, .payload_len = 2};

		refused(e, &s, "\1a", -EOPNOTSUPP);
	}
	/* and the stream goes on at seq 3 */
	h = write_frame(e, 3, 5, 0, 4 * BS, 3);
	assert_int_equal(apply(e, &h, e->data), 0);
	assert_int_equal(tsr_site_target_applied(e->t), 3);
	assert_int_equal(sread(e->v, e->io, 0, 8 * BS, e->after), 0);
	assert_true(is_filled(e->after, 4 * BS, 3, 0));
	assert_true(is_filled(e->after + 4 * BS, 4 * BS, 2, 4 * BS));
}

/* A newer epoch raises the stream's; the older one is stale afterwards. */
static void test_epoch_raise(void **state)
{
	struct env *e = *state;
	struct tsr_site_hdr h;

	h = write_frame(e, 1, 7, 0, BS, 1);
	assert_int_equal(apply(e, &h, e->data), 0);
	h = write_frame(e, 2, 5, BS, BS, 2);
	refused(e, &h, e->data, -ESTALE);
	h = write_frame(e, 2, 7, BS, BS, 2);
	assert_int_equal(apply(e, &h, e->data), 0);
}

/* ---- pipelined apply ---- */

/* Callbacks recorded in firing order, with applied as each one saw it. */
struct rec {
	struct tsr_site_target **t;
	int n;                  /* callbacks so far */
	int id[64];             /* the frame's index, in firing order */
	int status[64];
	uint64_t applied_at[64];
	int calls[64];          /* per frame index */
};

struct rcb {
	struct rec *r;
	int id;
};

static void rec_cb(void *arg, int status)
{
	struct rcb *c = arg;
	struct rec *r = c->r;

	assert_true(r->n < 64);
	r->id[r->n] = c->id;
	r->status[r->n] = status;
	r->applied_at[r->n] = tsr_site_target_applied(*r->t);
	r->n++;
	r->calls[c->id]++;
}

/* Run io until r has n callbacks (30 s at most), then a little more:
 * no callback may fire twice. */
static void rec_wait(struct tsr_io *io, struct rec *r, int n)
{
	/* bounded by time, not by a count of polls (store_test.h, test_poll_on):
	 * a poll that does not wait is over in nanoseconds, a completion on a
	 * loaded machine can take tens of milliseconds */
	for (uint64_t start = test_now_ns(); r->n < n;) {
		assert_true(test_poll_on(start));
		assert_true(tsr_io_submit(io) >= 0);
		assert_true(tsr_io_poll(io, 0, tsr_io_inflight(io) > 0) >= 0);
	}
	for (int i = 0; i < 100; i++) {
		tsr_io_submit(io);
		tsr_io_poll(io, 0, false);
	}
	assert_int_equal(r->n, n);
}

/* Poll io for ms milliseconds without waiting for anything in particular. */
static void spin_ms(struct tsr_io *io, unsigned ms)
{
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		tsr_io_submit(io);
		tsr_io_poll(io, 0, false);
		usleep(1000);
		clock_gettime(CLOCK_MONOTONIC, &t1);
	} while ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < ms);
}

/* A target on its own io (fault spec or NULL) with the given window. */
static struct tsr_site_target *target_on(struct env *e, struct tsr_io *io, unsigned window,
					 uint64_t window_bytes)
{
	struct tsr_site_target_opts o = {.vol = e->vol, .io = io, .stream = STREAM, .epoch = 5,
					 .window = window, .window_bytes = window_bytes};
	struct tsr_site_target *t = NULL;

	assert_int_equal(tsr_site_target_create(&o, &t), 0);
	return t;
}

/* Payload buffers of their own: several frames are in flight at once. */
static uint8_t *payload(struct env *e, uint8_t *bufs, int i, struct tsr_site_hdr *h, uint64_t seq,
			uint64_t off, uint32_t len, uint64_t seed)
{
	uint8_t *p = bufs + (size_t)i * 64 * 1024;

	*h = write_frame(e, seq, 5, off, len, seed);
	memcpy(p, e->data, len);
	return p;
}

/* Many frames in the store at once; callbacks in seq order, each once;
 * the window refuses (EBUSY) a frame past its count or its bytes. */
static void test_window(void **state)
{
	struct env *e = *state;
	uint8_t *bufs = tsr_alloc_aligned(16 * 64 * 1024);
	struct tsr_site_target *t = target_on(e, e->io, 16, 0);
	struct rec r = {.t = &t};
	struct rcb c[20];
	struct tsr_site_hdr h;
	struct done d = {0};

	assert_non_null(bufs);
	/* the volume's region marked on disk first (a zero block where frame 1
	 * goes): otherwise the first write waits for the fsync of that mark and
	 * the others queue behind it in the store, not on the io */
	memset(bufs, 0, BS);
	assert_int_equal(swrite(e->v, e->io, 0, BS, bufs, 0), 0);
	for (int i = 0; i < 16; i++) {
		uint8_t *p = payload(e, bufs, i, &h, (uint64_t)i + 1, (uint64_t)i * 16 * BS,
				     16 * BS, (uint64_t)i + 1);

		c[i] = (struct rcb){.r = &r, .id = i};
		assert_true(tsr_site_target_room(t, 16 * BS));
		assert_int_equal(tsr_site_target_apply(t, &h, p, rec_cb, &c[i]), 0);
		assert_int_equal(tsr_site_target_inflight(t), (unsigned)i + 1);
	}
	/* the window is full: refused, no callback, nothing accepted */
	assert_false(tsr_site_target_room(t, 0));
	h = frame(TSR_SITE_ZERO, 17, 5, 0, BS);
	assert_int_equal(tsr_site_target_apply(t, &h, NULL, done_cb, &d), -EBUSY);
	assert_int_equal(r.n, 0); /* never from inside apply */
	assert_true(tsr_io_inflight(e->io) >= 16); /* all of them in the store */
	rec_wait(e->io, &r, 16);
	for (int i = 0; i < 16; i++) {
		assert_int_equal(r.id[i], i);
		assert_int_equal(r.status[i], 0);
		assert_int_equal(r.calls[i], 1);
		assert_int_equal(r.applied_at[i], (uint64_t)i + 1);
	}
	assert_int_equal(d.calls, 0);
	assert_int_equal(tsr_site_target_inflight(t), 0);
	assert_int_equal(tsr_site_target_applied(t), 16);
	assert_int_equal(sread(e->v, e->io, 0, VOL_SIZE, e->after), 0);
	for (int i = 0; i < 16; i++)
		assert_true(is_filled(e->after + (size_t)i * 16 * BS, 16 * BS, (uint64_t)i + 1,
				      (uint64_t)i * 16 * BS));
	/* the ZERO refused above goes now */
	assert_int_equal(tsr_site_target_apply(t, &h, NULL, done_cb, &d), 0);
	assert_int_equal(wait_done(e->io, &d), 0);
	tsr_site_target_destroy(t);

	/* bytes: window_bytes is at least TSR_SITE_MAX_DATA (4 MiB): four 1 MiB
	 * WRITEs fit, a fifth does not, a ZERO (no payload) does */
	t = target_on(e, e->io, 8, 1);
	r = (struct rec){.t = &t};
	{
		uint8_t *big = tsr_alloc_aligned(VOL_SIZE);
		struct tsr_site_hdr b = {.opcode = TSR_SITE_WRITE, .stream = STREAM, .epoch = 5,
					 .length = VOL_SIZE};
		uint8_t raw[TSR_SITE_HDR_SIZE];

		assert_non_null(big);
		fill(big, VOL_SIZE, 7, 0);
		b.data_crc = tsr_crc32c(0, big, VOL_SIZE);
		for (int i = 0; i < 5; i++) {
			struct tsr_site_hdr hb = b;

			hb.seq = (uint64_t)i + 1;
			tsr_site_hdr_pack(&hb, raw);
			assert_int_equal(tsr_site_hdr_parse(raw, &hb), 0);
			c[i] = (struct rcb){.r = &r, .id = i};
			assert_int_equal(tsr_site_target_apply(t, &hb, big, rec_cb, &c[i]),
					 i < 4 ? 0 : -EBUSY);
		}
		assert_false(tsr_site_target_room(t, BS));
		assert_true(tsr_site_target_room(t, 0));
		h = frame(TSR_SITE_ZERO, 5, 5, 0, BS);
		c[5] = (struct rcb){.r = &r, .id = 5};
		assert_int_equal(tsr_site_target_apply(t, &h, NULL, rec_cb, &c[5]), 0);
		rec_wait(e->io, &r, 5);
		assert_int_equal(r.id[4], 5);
		assert_int_equal(tsr_site_target_applied(t), 5);
		tsr_free_aligned(big);
	}
	tsr_site_target_destroy(t);
	tsr_free_aligned(bufs);
}

/* A frame that completes before an earlier one waits: applied stays the
 * contiguous prefix and the callbacks fire in seq order. */
static void test_out_of_order(void **state)
{
	struct env *e = *state;
	uint8_t *bufs = tsr_alloc_aligned(4 * 64 * 1024);
	struct tsr_io *slow = make_io(TSR_IO_AUTO, "write:1:delay=400");
	struct tsr_site_target *t;
	struct rec r = {.t = &t};
	struct rcb c[4];
	struct tsr_site_hdr h;

	assert_non_null(bufs);
	assert_non_null(slow);
	t = target_on(e, slow, 0, 0);
	for (int i = 0; i < 4; i++) {
		uint8_t *p = payload(e, bufs, i, &h, (uint64_t)i + 1, (uint64_t)i * 32 * BS,
				     4 * BS, (uint64_t)i + 1);

		c[i] = (struct rcb){.r = &r, .id = i};
		assert_int_equal(tsr_site_target_apply(t, &h, p, rec_cb, &c[i]), 0);
	}
	/* seq 2..4 reach the disk while seq 1 is held by the injector */
	spin_ms(slow, 150);
	assert_int_equal(sread(e->v, e->io, 0, VOL_SIZE, e->after), 0);
	for (int i = 1; i < 4; i++)
		assert_true(is_filled(e->after + (size_t)i * 32 * BS, 4 * BS, (uint64_t)i + 1,
				      (uint64_t)i * 32 * BS));
	assert_int_equal(r.n, 0);
	assert_int_equal(tsr_site_target_applied(t), 0);
	assert_int_equal(tsr_site_target_inflight(t), 4);
	rec_wait(slow, &r, 4);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(r.id[i], i);
		assert_int_equal(r.status[i], 0);
		assert_int_equal(r.applied_at[i], (uint64_t)i + 1);
	}
	assert_int_equal(tsr_site_target_applied(t), 4);
	tsr_site_target_destroy(t);
	tsr_io_destroy(slow);
	tsr_free_aligned(bufs);
}

/* Frames that overlap go to the store one after the other: the later
 * write of a block lands last even when the earlier one is slow. */
static void test_overlap(void **state)
{
	struct env *e = *state;
	uint8_t *bufs = tsr_alloc_aligned(4 * 64 * 1024);
	struct tsr_io *slow = make_io(TSR_IO_AUTO, "write:1:delay=300");
	struct tsr_site_target *t;
	struct rec r = {.t = &t};
	struct rcb c[4];
	struct tsr_site_hdr h;
	uint8_t *p;

	assert_non_null(bufs);
	assert_non_null(slow);
	t = target_on(e, slow, 0, 0);
	/* 1: blocks 0-3 (slow), 2: block 2 again, 3: a ZERO over block 3, 4: block 40 */
	p = payload(e, bufs, 0, &h, 1, 0, 4 * BS, 1);
	c[0] = (struct rcb){.r = &r, .id = 0};
	assert_int_equal(tsr_site_target_apply(t, &h, p, rec_cb, &c[0]), 0);
	p = payload(e, bufs, 1, &h, 2, 2 * BS, BS, 2);
	c[1] = (struct rcb){.r = &r, .id = 1};
	assert_int_equal(tsr_site_target_apply(t, &h, p, rec_cb, &c[1]), 0);
	h = frame(TSR_SITE_ZERO, 3, 5, 3 * BS, BS);
	c[2] = (struct rcb){.r = &r, .id = 2};
	assert_int_equal(tsr_site_target_apply(t, &h, NULL, rec_cb, &c[2]), 0);
	p = payload(e, bufs, 3, &h, 4, 40 * BS, BS, 4);
	c[3] = (struct rcb){.r = &r, .id = 3};
	assert_int_equal(tsr_site_target_apply(t, &h, p, rec_cb, &c[3]), 0);
	rec_wait(slow, &r, 4);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(r.id[i], i);
		assert_int_equal(r.status[i], 0);
	}
	assert_int_equal(sread(e->v, e->io, 0, VOL_SIZE, e->after), 0);
	assert_true(is_filled(e->after, 2 * BS, 1, 0));
	assert_true(is_filled(e->after + 2 * BS, BS, 2, 2 * BS)); /* seq 2 over seq 1 */
	assert_true(is_zero(e->after + 3 * BS, BS));              /* seq 3 over seq 1 */
	assert_true(is_filled(e->after + 40 * BS, BS, 4, 40 * BS));
	tsr_site_target_destroy(t);
	tsr_io_destroy(slow);
	tsr_free_aligned(bufs);
}

/* A BARRIER (and a SYNC_END) waits for every earlier frame, even one
 * that is slow: its callback comes after theirs, applied covers them. */
static void test_barrier_waits(void **state)
{
	struct env *e = *state;
	uint8_t *bufs = tsr_alloc_aligned(4 * 64 * 1024);
	struct tsr_io *slow = make_io(TSR_IO_AUTO, "write:1:delay=300");
	struct tsr_site_target *t;
	struct rec r = {.t = &t};
	struct rcb c[6];
	struct tsr_site_hdr h;
	uint8_t *p;

	assert_non_null(bufs);
	assert_non_null(slow);
	t = target_on(e, slow, 0, 0);
	p = payload(e, bufs, 0, &h, 1, 0, BS, 1);
	c[0] = (struct rcb){.r = &r, .id = 0};
	assert_int_equal(tsr_site_target_apply(t, &h, p, rec_cb, &c[0]), 0);
	p = payload(e, bufs, 1, &h, 2, 8 * BS, BS, 2);
	c[1] = (struct rcb){.r = &r, .id = 1};
	assert_int_equal(tsr_site_target_apply(t, &h, p, rec_cb, &c[1]), 0);
	h = frame(TSR_SITE_BARRIER, 2, 5, 0, 0); /* seq 2: received, not applied */
	c[2] = (struct rcb){.r = &r, .id = 2};
	assert_int_equal(tsr_site_target_apply(t, &h, NULL, rec_cb, &c[2]), 0);
	h = frame(TSR_SITE_BARRIER, 3, 5, 0, 0); /* past what was received */
	assert_int_equal(tsr_site_target_apply(t, &h, NULL, rec_cb, &c[5]), -EILSEQ);
	p = payload(e, bufs, 2, &h, 3, 16 * BS, BS, 3);
	c[3] = (struct rcb){.r = &r, .id = 3};
	assert_int_equal(tsr_site_target_apply(t, &h, p, rec_cb, &c[3]), 0);
	h = frame(TSR_SITE_SYNC_END, 4, 5, 0, 0);
	c[4] = (struct rcb){.r = &r, .id = 4};
	assert_int_equal(tsr_site_target_apply(t, &h, NULL, rec_cb, &c[4]), 0);
	spin_ms(slow, 100);
	assert_int_equal(r.n, 0); /* seq 1 is still held: nothing retires */
	rec_wait(slow, &r, 5);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(r.id[i], i);
		assert_int_equal(r.status[i], 0);
	}
	assert_int_equal(r.applied_at[2], 2); /* the barrier saw 1 and 2 applied */
	assert_int_equal(r.applied_at[4], 4);
	assert_true(tsr_site_target_consistent(t));
	tsr_site_target_destroy(t);
	tsr_io_destroy(slow);
	tsr_free_aligned(bufs);
}

/* A store error in the middle of a window: frames before it are applied,
 * it and every later one complete with an error, each callback once, and
 * the stream is broken (-EIO) afterwards. */
static void test_error_mid_window(void **state)
{
	struct env *e = *state;
	uint8_t *bufs = tsr_alloc_aligned(8 * 64 * 1024);
	struct tsr_io *bad = make_io(TSR_IO_AUTO, "write:3:fail=EIO,write:1:delay=200");
	struct tsr_site_target *t;
	struct rec r = {.t = &t};
	struct rcb c[8];
	struct tsr_site_hdr h;
	struct done d = {0};
	uint8_t *p;
	int first_err = -1;

	assert_non_null(bufs);
	assert_non_null(bad);
	t = target_on(e, bad, 0, 0);
	for (int i = 0; i < 6; i++) {
		p = payload(e, bufs, i, &h, (uint64_t)i + 1, (uint64_t)i * 16 * BS, BS,
			    (uint64_t)i + 1);
		c[i] = (struct rcb){.r = &r, .id = i};
		assert_int_equal(tsr_site_target_apply(t, &h, p, rec_cb, &c[i]), 0);
	}
	/* queued behind the writes, never issued once the stream broke */
	h = frame(TSR_SITE_BARRIER, 6, 5, 0, 0);
	c[6] = (struct rcb){.r = &r, .id = 6};
	assert_int_equal(tsr_site_target_apply(t, &h, NULL, rec_cb, &c[6]), 0);
	h = frame(TSR_SITE_ZERO, 7, 5, 0, BS);
	c[7] = (struct rcb){.r = &r, .id = 7};
	assert_int_equal(tsr_site_target_apply(t, &h, NULL, rec_cb, &c[7]), 0);
	rec_wait(bad, &r, 8);
	for (int i = 0; i < 8; i++) {
		assert_int_equal(r.id[i], i);
		assert_int_equal(r.calls[i], 1);
		if (first_err < 0 && r.status[i] != 0)
			first_err = i;
		if (first_err >= 0)
			assert_int_equal(r.status[i], -EIO);
	}
	assert_int_equal(first_err, 2); /* the third write failed */
	assert_int_equal(tsr_site_target_applied(t), 2);
	assert_int_equal(tsr_site_target_inflight(t), 0);
	h = write_frame(e, 9, 5, 0, BS, 9);
	assert_int_equal(tsr_site_target_apply(t, &h, e->data, done_cb, &d), -EIO);
	assert_int_equal(d.calls, 0);
	/* seq 1 (slow) and 2 landed; the ZERO was never issued */
	assert_int_equal(sread(e->v, e->io, 0, 32 * BS, e->after), 0);
	assert_true(is_filled(e->after, BS, 1, 0));
	assert_true(is_filled(e->after + 16 * BS, BS, 2, 16 * BS));
	tsr_site_target_destroy(t);
	tsr_io_destroy(bad);
	tsr_free_aligned(bufs);
}

/* A target resumed at seq 10 takes 11 and nothing before it. */
static void test_resume(void **state)
{
	struct env *e = *state;
	struct tsr_site_target_opts o = {.vol = e->vol, .io = e->io, .stream = STREAM,
					 .epoch = 5, .applied = 10};
	struct tsr_site_hdr h;

	tsr_site_target_destroy(e->t);
	assert_int_equal(tsr_site_target_create(&o, &e->t), 0);
	h = write_frame(e, 1, 5, 0, BS, 1);
	refused(e, &h, e->data, -EILSEQ);
	h = write_frame(e, 10, 5, 0, BS, 1);
	refused(e, &h, e->data, -EILSEQ);
	h = write_frame(e, 11, 5, 0, BS, 11);
	assert_int_equal(apply(e, &h, e->data), 0);
	assert_int_equal(tsr_site_target_applied(e->t), 11);
	o.stream = 0;
	assert_int_equal(tsr_site_target_create(&o, &(struct tsr_site_target *){NULL}), -EINVAL);
}

/* A store write error completes the frame with it and stops the stream. */
static void test_io_error(void **state)
{
	struct env *e = *state;
	struct tsr_site_target_opts o = {.vol = e->vol, .stream = STREAM, .epoch = 5};
	struct tsr_io *bad = make_io(TSR_IO_AUTO, "write:1+:fail=EIO");
	struct tsr_site_target *t = NULL;
	struct tsr_site_hdr h;
	struct done d = {0};

	assert_non_null(bad);
	o.io = bad;
	assert_int_equal(tsr_site_target_create(&o, &t), 0);
	h = write_frame(e, 1, 5, 0, BS, 1);
	assert_int_equal(tsr_site_target_apply(t, &h, e->data, done_cb, &d), 0);
	assert_int_equal(wait_done(bad, &d), -EIO);
	assert_int_equal(tsr_site_target_applied(t), 0);
	h = write_frame(e, 1, 5, 0, BS, 1);
	assert_int_equal(tsr_site_target_apply(t, &h, e->data, done_cb, &d), -EIO);
	h = write_frame(e, 2, 5, 0, BS, 1);
	assert_int_equal(tsr_site_target_apply(t, &h, e->data, done_cb, &d), -EIO);
	assert_int_equal(d.calls, 1);
	tsr_site_target_destroy(t);
	tsr_io_destroy(bad);
}

/* A store operation that completes with -EAGAIN (a copy on write on a target
 * that keeps snapshots met a full io queue) is issued again: frames 1..3,
 * the second one's write completing -EAGAIN, all apply in order and read
 * back; on the code before the stream broke (-EAGAIN, then -EIO). */
static void test_late_eagain(void **state)
{
	struct env *e = *state;
	struct tsr_io *io = make_io(TSR_IO_AUTO, "write:2:fail=EAGAIN");
	uint8_t *bufs = tsr_alloc_aligned(3 * 64 * 1024);
	struct tsr_site_target *t;
	struct rec r;
	struct rcb c[3];
	struct tsr_site_hdr h;

	assert_non_null(io);
	assert_non_null(bufs);
	t = target_on(e, io, 8, 0);
	r = (struct rec){.t = &t};
	for (int i = 0; i < 3; i++) {
		uint8_t *p = payload(e, bufs, i, &h, (uint64_t)i + 1, (uint64_t)i * 4 * BS, 4 * BS,
				     (uint64_t)i + 11);

		c[i] = (struct rcb){.r = &r, .id = i};
		assert_int_equal(tsr_site_target_apply(t, &h, p, rec_cb, &c[i]), 0);
	}
	rec_wait(io, &r, 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(r.id[i], i);
		assert_int_equal(r.status[i], 0);
		assert_int_equal(r.calls[i], 1);
	}
	assert_int_equal(tsr_site_target_applied(t), 3);
	assert_int_equal(sread(e->v, e->io, 0, 12 * BS, e->after), 0);
	for (int i = 0; i < 3; i++)
		assert_true(is_filled(e->after + (size_t)i * 4 * BS, 4 * BS, (uint64_t)i + 11,
				      (uint64_t)i * 4 * BS));
	tsr_site_target_destroy(t);
	tsr_io_destroy(io);
	tsr_free_aligned(bufs);
}

/* SYNC_BEGIN clears consistent and SYNC_END sets it, each in sequence and
 * after a flush; set_inconsistent holds until the next SYNC_END. */
static void test_sync(void **state)
{
	struct env *e = *state;
	struct tsr_site_target_opts o = {.vol = e->vol, .io = e->io, .stream = STREAM,
					 .epoch = 5, .consistent = true};
	struct tsr_site_hdr h, ack;
	struct tsr_svol_stats s0, s1;

	tsr_site_target_destroy(e->t);
	assert_int_equal(tsr_site_target_create(&o, &e->t), 0);
	assert_true(tsr_site_target_consistent(e->t));
	h = frame(TSR_SITE_SYNC_BEGIN, 2, 5, 0, 0); /* a gap */
	refused(e, &h, NULL, -EILSEQ);
	assert_true(tsr_site_target_consistent(e->t));
	h = frame(TSR_SITE_SYNC_BEGIN, 1, 4, 0, 0); /* stale */
	refused(e, &h, NULL, -ESTALE);
	tsr_svol_get_stats(e->v, &s0);
	h = frame(TSR_SITE_SYNC_BEGIN, 1, 5, 0, 0);
	assert_int_equal(apply(e, &h, NULL), 0);
	tsr_svol_get_stats(e->v, &s1);
	assert_false(tsr_site_target_consistent(e->t));
	assert_int_equal(tsr_site_target_applied(e->t), 1);
	assert_int_equal(s1.writes, s0.writes); /* a marker: no data written */
	h = write_frame(e, 2, 5, 0, 4 * BS, 2);
	assert_int_equal(apply(e, &h, e->data), 0);
	assert_false(tsr_site_target_consistent(e->t));
	h = frame(TSR_SITE_SYNC_END, 2, 5, 0, 0); /* a duplicate seq */
	refused(e, &h, NULL, -EILSEQ);
	assert_false(tsr_site_target_consistent(e->t));
	h = frame(TSR_SITE_SYNC_END, 3, 5, 0, 0);
	assert_int_equal(apply(e, &h, NULL), 0);
	assert_true(tsr_site_target_consistent(e->t));
	assert_int_equal(tsr_site_target_applied(e->t), 3);
	tsr_site_target_ack(e->t, &ack);
	assert_int_equal(ack.seq, 3);
	/* a replay pending: not consistent until the next SYNC_END */
	tsr_site_target_set_inconsistent(e->t);
	assert_false(tsr_site_target_consistent(e->t));
	h = write_frame(e, 4, 5, 4 * BS, BS, 4);
	assert_int_equal(apply(e, &h, e->data), 0);
	h = frame(TSR_SITE_BARRIER, 4, 5, 0, 0);
	assert_int_equal(apply(e, &h, NULL), 0);
	assert_false(tsr_site_target_consistent(e->t));
	h = frame(TSR_SITE_SYNC_END, 5, 5, 0, 0);
	assert_int_equal(apply(e, &h, NULL), 0);
	assert_true(tsr_site_target_consistent(e->t));
	assert_int_equal(sread(e->v, e->io, 0, 8 * BS, e->after), 0);
	assert_true(is_filled(e->after, 4 * BS, 2, 0));
	assert_true(is_filled(e->after + 4 * BS, BS, 4, 4 * BS));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_epoch_raise, setup, teardown),
		cmocka_unit_test_setup_teardown(test_window, setup, teardown),
		cmocka_unit_test_setup_teardown(test_out_of_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_overlap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_barrier_waits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_mid_window, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resume, setup, teardown),
		cmocka_unit_test_setup_teardown(test_io_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_late_eagain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sync, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
