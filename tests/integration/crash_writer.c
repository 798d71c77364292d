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
 *
 *   crash_writer write URI LOG --duration SEC ...
 *   crash_writer snapcheck URI LOG
 *   crash_writer seqs URI OUT
 *
 * Log lines are "offset seq submit_ns ack_ns" (CLOCK_MONOTONIC of the
 * writer); verify reads the first two fields only.  --duration stops
 * submitting after SEC seconds, waits for the writes in flight and exits 0.
 *
 * snapcheck: URI is a point-in-time image (a snapshot) taken while the
 * writer ran with --duration (so every write it made is in LOG).  Checks
 * that the image is a consistent cut of the write history: every block
 * holds zeros or a write from LOG for that offset, and there is one instant
 * P with every write in the image submitted before P and every later write
 * of the same blocks (not in the image) acknowledged after P, i.e.
 * max(submit of the writes the image holds) < min(ack of the writes it
 * lacks).  Since the writer never has two writes in flight on one block,
 * seq order is time order per block.  This is DESIGN.md's "every copy cuts
 * at the same position in the write order" seen from the client.
 *
 * seqs: writes "block seq" for every non-zero block of URI to OUT (a block
 * that is not a valid block for its offset is an error), for diff checks.
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
	uint64_t submit_ns;
	bool busy;
	unsigned char *buf; /* BLK bytes */
};

static int g_log_fd = -1;
static _Atomic uint64_t g_seq;      /* last sequence number handed out */
static _Atomic uint64_t g_acked;
static _Atomic uint64_t g_failed;
static unsigned char *g_inflight; /* one byte per block: a write is in flight */
static uint64_t g_deadline_ns;    /* --duration: stop submitting then (0: never) */

/* One writer connection: its own libnbd handle and the blocks b with
 * b % nconns == index, so no two connections ever race on a block. */
struct writer {
	const char *uri;
	unsigned index, nconns, qd;
	uint64_t seed;
	pthread_t thread;
	struct nbd_handle *h;
	struct slot *slots; /* qd of them, freed by do_write */
	bool done;          /* --duration reached, every write completed */
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
	char line[128];
	uint64_t ack_ns = tsr_mono_ns();
	int n;

	s->busy = false;
	g_inflight[s->offset / BLK] = 0;
	if (*error) {
		atomic_fetch_add(&g_failed, 1);
		return 1;
	}
	n = snprintf(line, sizeof(line), "%" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
		     s->offset, s->seq, s->submit_ns, ack_ns);
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
		bool stopping = g_deadline_ns && (uint64_t)tsr_mono_ns() >= g_deadline_ns;
		unsigned busy = 0;

		for (i = 0; i < w->qd; i++) {
			struct slot *s = &slots[i];
			uint64_t b;
			uint32_t flags = 0;

			if (s->busy || stopping) {
				busy += s->busy;
				continue;
			}
			do
				b = (rng_next(&w->seed) % mine) * w->nconns + w->index;
			while (g_inflight[b]);
			s->offset = b * BLK;
			s->seq = atomic_fetch_add(&g_seq, 1) + 1;
			fill_block(s->buf, s->offset, s->seq);
			if (fua && rng_next(&w->seed) % 8 == 0)
				flags |= LIBNBD_CMD_FLAG_FUA;
			s->submit_ns = tsr_mono_ns();
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
		if (stopping && !busy) {
			w->done = true;
			return NULL;
		}
		if (nbd_poll(h, stopping ? 100 : -1) < 0 || atomic_load(&g_failed))
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
	bool clean;

	g_log_fd = open(logpath, O_WRONLY | O_APPEND | O_CREAT, 0644);
	if (g_log_fd < 0) {
		perror(logpath);
		return 1;
	}
	/* One probe connection for the size (and to fail early). */
	h = nbd_create();
	if (!h || nbd_connect_uri(h, uri) < 0) {
		fprintf(stderr, "crash_writer: connect %s: %s\n", uri, nbd_get_error());
		if (h)
			nbd_close(h);
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
	for (i = 0; i < nconns && w[i].done; i++)
		;
	clean = i == nconns && !atomic_load(&g_failed);
	if (clean)
		snprintf(w[0].error, sizeof(w[0].error), "duration reached");
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
	return clean ? 0 : 3;
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
		if (h)
			nbd_close(h);
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
		char line[160];

		while (fgets(line, sizeof(line), f) &&
		       sscanf(line, "%" SCNu64 " %" SCNu64, &o, &s) == 2) {
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

/* One acknowledged write from LOG. */
struct logged {
	uint64_t block, seq, submit_ns, ack_ns;
};

static int logged_cmp(const void *a, const void *b)
{
	const struct logged *x = a, *y = b;

	if (x->block != y->block)
		return x->block < y->block ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Read the whole export into one seq per block (0 = zeros); -1 on error. */
static int read_seqs(const char *uri, uint64_t **seqs_out, uint64_t *nblocks_out)
{
	struct nbd_handle *h = nbd_create();
	const size_t chunk = 1024 * 1024;
	unsigned char *buf;
	uint64_t *seqs, off;
	int64_t size;
	int bad = 0;
	char why[160];

	if (!h || nbd_connect_uri(h, uri) < 0) {
		fprintf(stderr, "connect %s: %s\n", uri, nbd_get_error());
		if (h)
			nbd_close(h);
		return -1;
	}
	size = nbd_get_size(h);
	if (size < (int64_t)BLK) {
		fprintf(stderr, "bad export size %" PRId64 "\n", size);
		nbd_close(h);
		return -1;
	}
	seqs = calloc(size / BLK, sizeof(*seqs));
	buf = tsr_alloc_aligned(chunk);
	if (!seqs || !buf)
		abort();
	for (off = 0; off < (uint64_t)size; off += chunk) {
		size_t len = (uint64_t)size - off < chunk ? (size_t)((uint64_t)size - off) : chunk;
		size_t i;

		if (nbd_pread(h, buf, len, off, 0) < 0) {
			fprintf(stderr, "read %s at %" PRIu64 ": %s\n", uri, off, nbd_get_error());
			bad = 1;
			break;
		}
		for (i = 0; i < len; i += BLK) {
			if (check_block(buf + i, off + i, &seqs[(off + i) / BLK], why, sizeof(why)) < 0) {
				if (bad++ < 20)
					printf("BAD offset %" PRIu64 ": %s\n", off + i, why);
			}
		}
	}
	nbd_shutdown(h, 0);
	nbd_close(h);
	tsr_free_aligned(buf);
	if (bad) {
		free(seqs);
		return -1;
	}
	*seqs_out = seqs;
	*nblocks_out = (uint64_t)size / BLK;
	return 0;
}

static int do_seqs(const char *uri, const char *outpath)
{
	uint64_t *seqs, n, b;
	FILE *f;

	if (read_seqs(uri, &seqs, &n) < 0)
		return 1;
	f = fopen(outpath, "w");
	if (!f) {
		perror(outpath);
		return 2;
	}
	for (b = 0; b < n; b++)
		if (seqs[b])
			fprintf(f, "%" PRIu64 " %" PRIu64 "\n", b, seqs[b]);
	fclose(f);
	free(seqs);
	return 0;
}

static int do_snapcheck(const char *uri, const char *logpath)
{
	uint64_t *seqs, nblocks, n = 0, cap = 1 << 16, i, held = 0, lacked = 0;
	uint64_t max_submit = 0, min_ack = UINT64_MAX, max_submit_seq = 0, min_ack_seq = 0;
	struct logged *ent = malloc(cap * sizeof(*ent));
	char line[160];
	FILE *f;
	int bad = 0;

	if (!ent)
		abort();
	if (read_seqs(uri, &seqs, &nblocks) < 0)
		return 1;
	f = fopen(logpath, "r");
	if (!f) {
		perror(logpath);
		return 2;
	}
	while (fgets(line, sizeof(line), f)) {
		struct logged e;
		uint64_t o;

		if (sscanf(line, "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64, &o, &e.seq,
			   &e.submit_ns, &e.ack_ns) != 4 || o % BLK) {
			fprintf(stderr, "snapcheck: bad log line: %s", line);
			return 2;
		}
		e.block = o / BLK;
		if (n == cap && !(ent = realloc(ent, (cap *= 2) * sizeof(*ent))))
			abort();
		ent[n++] = e;
	}
	fclose(f);
	qsort(ent, n, sizeof(*ent), logged_cmp);

	/* Per block: the write the image holds must be in the log; the ones after
	 * it are the writes the image lacks. */
	for (i = 0; i < n;) {
		uint64_t b = ent[i].block, j = i;
		bool found = seqs[b] == 0;

		if (b >= nblocks) {
			fprintf(stderr, "snapcheck: log block %" PRIu64 " past the image\n", b);
			return 2;
		}
		for (; j < n && ent[j].block == b; j++) {
			if (ent[j].seq == seqs[b]) {
				found = true;
				held++;
				if (ent[j].submit_ns > max_submit) {
					max_submit = ent[j].submit_ns;
					max_submit_seq = ent[j].seq;
				}
			} else if (ent[j].seq > seqs[b]) {
				lacked++;
				if (ent[j].ack_ns < min_ack) {
					min_ack = ent[j].ack_ns;
					min_ack_seq = ent[j].seq;
				}
			}
		}
		if (!found && bad++ < 20)
			printf("BAD block %" PRIu64 ": holds seq %" PRIu64 ", which the log does not "
			       "have for it\n", b, seqs[b]);
		seqs[b] = 0; /* accounted for */
		i = j;
	}
	for (i = 0; i < nblocks; i++)
		if (seqs[i] && bad++ < 20)
			printf("BAD block %" PRIu64 ": holds seq %" PRIu64 " but the log never wrote it\n",
			       i, seqs[i]);
	if (lacked && held && max_submit >= min_ack) {
		bad++;
		printf("BAD cut: the image holds seq %" PRIu64 " (submitted at %" PRIu64 " ns) but "
		       "lacks seq %" PRIu64 " (acknowledged at %" PRIu64 " ns, earlier): no single "
		       "point of the write order\n", max_submit_seq, max_submit, min_ack_seq, min_ack);
	}
	printf("snapcheck: %" PRIu64 " log lines, image holds %" PRIu64 " of them and lacks %" PRIu64
	       " later ones; %s\n", n, held, lacked, bad ? "NOT a consistent cut" : "consistent cut");
	free(ent);
	free(seqs);
	return bad ? 1 : 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: crash_writer write URI LOG [--qd N] [--conns N] [--seq-base S] "
			"[--seed X] [--duration SEC]\n"
			"       crash_writer verify URI LOG\n"
			"       crash_writer snapcheck URI LOG\n"
			"       crash_writer seqs URI OUT\n");
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
		else if (!strcmp(argv[i], "--duration") && i + 1 < argc)
			g_deadline_ns = tsr_mono_ns() + strtoull(argv[++i], NULL, 0) * 1000000000ull;
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
	if (!strcmp(argv[1], "snapcheck"))
		return do_snapcheck(argv[2], argv[3]);
	if (!strcmp(argv[1], "seqs"))
		return do_seqs(argv[2], argv[3]);
	usage();
	return 2;
}
