/*
 * crash_writer: the client side of test-crash-loop.sh.
 *
 *   crash_writer write  URI LOG [--qd N] [--conns C] [--seq-base S] [--seed X]
 *   crash_writer verify URI LOG
 *
 * write: opens C (default 2) libnbd connections, one thread each, and keeps
 * N (default 8) 4 KiB writes in flight on each at random block offsets of the
 * whole export, never two at once on the same block (connection i owns the
 * blocks b with b % C == i).  Each block is self-describing (struct block_hdr: magic, offset,
 * sequence number, CRC32C of the block) and its filler is derived from
 * (offset, seq), so any block read back can be told apart from garbage.
 * One write in 8 carries FUA, one in 64 is followed by a FLUSH.  When a write
 * is ACKNOWLEDGED (completion callback with no error) the line "offset seq\n"
 * is appended to LOG with one write(2) (O_APPEND), so the log survives the
 * writer being killed.  Runs until the connection dies (the test kills
 * tesserad with SIGKILL), then exits 3.  Sequence numbers start at --seq-base
 * so that they grow across rounds.
 *
 * verify: reads the whole export and checks every block:
 *   - a block named in LOG holds a valid block for its offset whose seq is at
 *     least the LAST acknowledged seq for that offset (a later seq is a write
 *     that was in flight at the crash: allowed);
 *   - any other block is all zeros or a valid block for its offset;
 *   - no read error.
 * Exit 0 when all is well, 1 with one line per bad block (the first 20).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <pthread.h>
#include <stdatomic.h>

#include <libnbd.h>

#include "tessera/common.h"

#define BLK 4096u
#define HDR_MAGIC 0x5453524352415348ull /* "TSRCRASH" */

/* Block layout: the header, then filler derived from (offset, seq). */
struct block_hdr {
	uint64_t magic;  /* HDR_MAGIC */
	uint64_t offset; /* byte offset this block was written to */
	uint64_t seq;    /* the writer's sequence number */
	uint32_t crc;    /* CRC32C of the whole block with this field zero */
	uint32_t pad;
};

/* One in-flight write. */
struct slot {
	uint64_t offset;
	uint64_t seq;
	bool busy;
	unsigned char *buf; /* BLK bytes */
};

static int g_log_fd = -1;
static _Atomic uint64_t g_seq;      /* last sequence number handed out */
static _Atomic uint64_t g_acked;
static _Atomic uint64_t g_failed;
static unsigned char *g_inflight; /* one byte per block: a write is in flight */

/* One writer connection: its own libnbd handle and the blocks b with
 * b % nconns == index, so no two connections ever race on a block. */
struct writer {
	const char *uri;
	unsigned index, nconns, qd;
	uint64_t seed;
	pthread_t thread;
	struct nbd_handle *h;
	struct slot *slots; /* qd of them, freed by do_write */
	char error[256];
};

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64* */
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}

static void fill_block(unsigned char *buf, uint64_t offset, uint64_t seq)
{
	struct block_hdr h = { .magic = HDR_MAGIC, .offset = offset, .seq = seq };
	uint64_t s = (offset * 0x9E3779B97F4A7C15ull) ^ seq ^ 0xA5A5A5A5ull;
	size_t i;

	if (!s)
		s = 1;
	for (i = sizeof(h); i < BLK; i += 8) {
		uint64_t v = rng_next(&s);

		memcpy(buf + i, &v, 8);
	}
	memcpy(buf, &h, sizeof(h));
	h.crc = tsr_crc32c(0, buf, BLK);
	memcpy(buf, &h, sizeof(h));
}

/*
 * Check a block read back at offset.  Returns 0 and sets *seq (0 for an
 * all-zero block) or -1 with a reason in why.
 */
static int check_block(const unsigned char *buf, uint64_t offset, uint64_t *seq,
		       char *why, size_t why_len)
{
	static unsigned char expect[BLK];
	struct block_hdr h;
	size_t i;

	for (i = 0; i < BLK && !buf[i]; i++)
		;
	if (i == BLK) {
		*seq = 0;
		return 0;
	}
	memcpy(&h, buf, sizeof(h));
	if (h.magic != HDR_MAGIC) {
		snprintf(why, why_len, "garbage (magic %016" PRIx64 ")", h.magic);
		return -1;
	}
	if (h.offset != offset) {
		snprintf(why, why_len, "block of offset %" PRIu64 " (seq %" PRIu64 ")",
			 h.offset, h.seq);
		return -1;
	}
	fill_block(expect, offset, h.seq);
	if (memcmp(expect, buf, BLK)) {
		snprintf(why, why_len, "torn or corrupt block (header seq %" PRIu64 ")", h.seq);
		return -1;
	}
	*seq = h.seq;
	return 0;
}

static int write_done(void *user_data, int *error)
{
	struct slot *s = user_data;
	char line[64];
	int n;

	s->busy = false;
	g_inflight[s->offset / BLK] = 0;
	if (*error) {
		atomic_fetch_add(&g_failed, 1);
		return 1;
	}
	n = snprintf(line, sizeof(line), "%" PRIu64 " %" PRIu64 "\n", s->offset, s->seq);
	if (write(g_log_fd, line, n) != n) {
		perror("crash_writer: write log");
		exit(1);
	}
	atomic_fetch_add(&g_acked, 1);
	return 1;
}

static int flush_done(void *user_data, int *error)
{
	return 1;
}

static void *writer_run(void *arg)
{
	struct writer *w = arg;
	struct nbd_handle *h;
	struct slot *slots;
	uint64_t nblocks, mine, writes = 0;
	int64_t size;
	bool fua;
	unsigned i;

	h = nbd_create();
	w->h = h;
	if (!h || nbd_connect_uri(h, w->uri) < 0)
		goto dead;
	size = nbd_get_size(h);
	nblocks = size / BLK;
	mine = (nblocks - w->index + w->nconns - 1) / w->nconns;
	if (size < (int64_t)(BLK * w->nconns) || mine < w->qd) {
		snprintf(w->error, sizeof(w->error), "export too small (%" PRId64 " bytes)", size);
		return NULL;
	}
	fua = nbd_can_fua(h) == 1;
	slots = calloc(w->qd, sizeof(*slots));
	if (!slots)
		abort();
	w->slots = slots;
	for (i = 0; i < w->qd; i++)
		slots[i].buf = tsr_alloc_aligned(BLK);

	for (;;) {
		for (i = 0; i < w->qd; i++) {
			struct slot *s = &slots[i];
			uint64_t b;
			uint32_t flags = 0;

			if (s->busy)
				continue;
			do
				b = (rng_next(&w->seed) % mine) * w->nconns + w->index;
			while (g_inflight[b]);
			s->offset = b * BLK;
			s->seq = atomic_fetch_add(&g_seq, 1) + 1;
			fill_block(s->buf, s->offset, s->seq);
			if (fua && rng_next(&w->seed) % 8 == 0)
				flags |= LIBNBD_CMD_FLAG_FUA;
			if (nbd_aio_pwrite(h, s->buf, BLK, s->offset,
					   (nbd_completion_callback){ .callback = write_done,
								      .user_data = s },
					   flags) < 0)
				goto dead;
			s->busy = true;
			g_inflight[b] = 1;
			if (++writes % 64 == 0 &&
			    nbd_aio_flush(h, (nbd_completion_callback){ .callback = flush_done },
					  0) < 0)
				goto dead;
		}
		if (nbd_poll(h, -1) < 0 || atomic_load(&g_failed))
			goto dead;
	}
dead:
	/* The server is gone; the log is already written.  Handles are closed by
	 * do_write after every thread has stopped. */
	snprintf(w->error, sizeof(w->error), "%s", nbd_get_error() ? nbd_get_error() : "write failed");
	return NULL;
}

static int do_write(const char *uri, const char *logpath, unsigned qd, unsigned nconns,
		    uint64_t seq, uint64_t seed)
{
	struct writer *w;
	struct nbd_handle *h;
	int64_t size;
	unsigned i;

	g_log_fd = open(logpath, O_WRONLY | O_APPEND | O_CREAT, 0644);
	if (g_log_fd < 0) {
		perror(logpath);
		return 1;
	}
	/* One probe connection for the size (and to fail early). */
	h = nbd_create();
	if (!h || nbd_connect_uri(h, uri) < 0) {
		fprintf(stderr, "crash_writer: connect %s: %s\n", uri, nbd_get_error());
		return 2;
	}
	size = nbd_get_size(h);
	nbd_shutdown(h, 0);
	nbd_close(h);
	if (size < (int64_t)BLK) {
		fprintf(stderr, "crash_writer: bad export size %" PRId64 "\n", size);
		return 2;
	}
	g_inflight = calloc(size / BLK, 1);
	w = calloc(nconns, sizeof(*w));
	if (!g_inflight || !w)
		return 2;
	atomic_store(&g_seq, seq);
	printf("crash_writer: %" PRId64 " blocks, %u connections, qd %u each\n", size / BLK,
	       nconns, qd);
	fflush(stdout);
	for (i = 0; i < nconns; i++) {
		w[i] = (struct writer){ .uri = uri, .index = i, .nconns = nconns, .qd = qd,
					.seed = seed + i * 0x9E3779B97F4A7C15ull };
		if (pthread_create(&w[i].thread, NULL, writer_run, &w[i]))
			return 2;
	}
	for (i = 0; i < nconns; i++)
		pthread_join(w[i].thread, NULL);
	fprintf(stderr, "crash_writer: stopped after %" PRIu64 " acknowledged writes "
		"(%" PRIu64 " failed): %s\n", atomic_load(&g_acked), atomic_load(&g_failed),
		w[0].error);
	close(g_log_fd);
	/* Free everything so that sanitizer builds see no leak. */
	for (i = 0; i < nconns; i++) {
		unsigned j;

		if (w[i].h)
			nbd_close(w[i].h); /* retires in-flight commands */
		for (j = 0; w[i].slots && j < qd; j++)
			tsr_free_aligned(w[i].slots[j].buf);
		free(w[i].slots);
	}
	free(w);
	free(g_inflight);
	return 3;
}

static int do_verify(const char *uri, const char *logpath)
{
	struct nbd_handle *h;
	uint64_t *last_seq, nblocks, off, logged = 0, lines = 0, zero = 0, newer = 0;
	unsigned char *buf;
	const size_t chunk = 1024 * 1024;
	int64_t size;
	FILE *f;
	int bad = 0;
	char why[160];
	bool read_err[1024 * 1024 / BLK];

	h = nbd_create();
	if (!h || nbd_connect_uri(h, uri) < 0) {
		fprintf(stderr, "verify: connect %s: %s\n", uri, nbd_get_error());
		return 2;
	}
	size = nbd_get_size(h);
	if (size < (int64_t)BLK) {
		fprintf(stderr, "verify: bad export size %" PRId64 "\n", size);
		return 2;
	}
	nblocks = size / BLK;
	last_seq = calloc(nblocks, sizeof(*last_seq));
	buf = tsr_alloc_aligned(chunk);
	if (!last_seq || !buf)
		return 2;

	f = fopen(logpath, "r");
	if (f) {
		uint64_t o, s;

		while (fscanf(f, "%" SCNu64 " %" SCNu64, &o, &s) == 2) {
			lines++;
			if (o % BLK || o / BLK >= nblocks) {
				fprintf(stderr, "verify: bad log line %" PRIu64 " %" PRIu64 "\n", o, s);
				return 2;
			}
			if (s > last_seq[o / BLK])
				last_seq[o / BLK] = s;
		}
		fclose(f);
	}

	for (off = 0; off < (uint64_t)size; off += chunk) {
		size_t len = (uint64_t)size - off < chunk ? (size_t)((uint64_t)size - off) : chunk;
		size_t i;

		memset(read_err, 0, sizeof(read_err));
		if (nbd_pread(h, buf, len, off, 0) < 0) {
			/* Find the failing block(s) one by one. */
			for (i = 0; i < len; i += BLK) {
				if (nbd_pread(h, buf + i, BLK, off + i, 0) < 0) {
					if (bad++ < 20)
						printf("BAD offset %" PRIu64 ": read error: %s\n",
						       off + i, nbd_get_error());
					read_err[i / BLK] = true;
				}
			}
		}
		for (i = 0; i < len; i += BLK) {
			uint64_t b = (off + i) / BLK, seq;

			if (read_err[i / BLK])
				continue;
			if (check_block(buf + i, off + i, &seq, why, sizeof(why)) < 0) {
				if (bad++ < 20)
					printf("BAD offset %" PRIu64 ": %s, last acked seq %" PRIu64 "\n",
					       off + i, why, last_seq[b]);
				continue;
			}
			if (!last_seq[b]) {
				zero += seq == 0;
				continue;
			}
			logged++;
			if (seq < last_seq[b]) {
				if (bad++ < 20)
					printf("BAD offset %" PRIu64 ": seq %" PRIu64 "%s is older than the "
					       "last acknowledged seq %" PRIu64 "\n", off + i, seq,
					       seq ? "" : " (zeros)", last_seq[b]);
			} else if (seq > last_seq[b]) {
				newer++;
			}
		}
	}
	nbd_shutdown(h, 0);
	nbd_close(h);
	free(last_seq);
	tsr_free_aligned(buf);
	printf("verify: %" PRIu64 " log lines, %" PRIu64 " written blocks checked "
	       "(%" PRIu64 " hold an unacknowledged later write), %" PRIu64
	       " never-written blocks zero, %d bad\n", lines, logged, newer, zero, bad);
	return bad ? 1 : 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: crash_writer write URI LOG [--qd N] [--conns N] [--seq-base S] "
			"[--seed X]\n"
			"       crash_writer verify URI LOG\n");
	exit(2);
}

int main(int argc, char **argv)
{
	uint64_t seq_base = 0, seed = 0;
	unsigned qd = 8, conns = 2;
	int i;

	if (argc < 4)
		usage();
	for (i = 4; i < argc; i++) {
		if (!strcmp(argv[i], "--qd") && i + 1 < argc)
			qd = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--conns") && i + 1 < argc)
			conns = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--seq-base") && i + 1 < argc)
			seq_base = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 0);
		else
			usage();
	}
	if (!seed)
		seed = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ 0x1234567ull;
	if (!qd)
		qd = 1;
	if (!conns)
		conns = 1;
	if (!strcmp(argv[1], "write"))
		return do_write(argv[2], argv[3], qd, conns, seq_base, seed);
	if (!strcmp(argv[1], "verify"))
		return do_verify(argv[2], argv[3]);
	usage();
	return 2;
}
