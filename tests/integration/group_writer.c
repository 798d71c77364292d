/*
 * group_writer: one sequential writer over several NBD volumes, for the
 * consistency group test (tests/integration/test-site-group.sh).
 *
 *   group_writer write LOG SECONDS BLOCKS SEED BASE URI...
 *       Writes 4 KiB blocks, one at a time (each acknowledged before the
 *       next is issued, so the writes of all volumes form one total order),
 *       to a random volume and a random block among the first BLOCKS, for
 *       SECONDS.  Write number c (BASE+1, BASE+2, ...: the global counter) carries
 *       "TSRGRP01", c, the volume index and the block, and a pattern made
 *       from c, so a block read back names the one write it holds or is
 *       torn.  After each acknowledgment "c vol block" goes to LOG (flushed).
 *   group_writer read URI OUT
 *       Reads the volume and writes "block c" to OUT for every block that
 *       holds a write (zero blocks are left out).  Exit 3 when a block is
 *       neither zero nor one whole write.
 * Exit 0, 1 on an NBD error, 2 on bad usage.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#include "tessera/common.h"

#define BS 4096u
#define MAGIC "TSRGRP01"

static void fill(uint8_t *b, uint64_t c, uint32_t vol, uint32_t block)
{
	memcpy(b, MAGIC, 8);
	memcpy(b + 8, &c, 8);
	memcpy(b + 16, &vol, 4);
	memcpy(b + 20, &block, 4);
	for (unsigned i = 24; i < BS; i++)
		b[i] = (uint8_t)(c * 31u + i);
}

/* The write c a block holds: 0 zero block, -1 torn or foreign. */
static int64_t parse(const uint8_t *b, uint32_t block)
{
	uint8_t want[BS];
	uint64_t c;
	uint32_t vol, blk;
	unsigned i;

	for (i = 0; i < BS && b[i] == 0; i++)
		;
	if (i == BS)
		return 0;
	if (memcmp(b, MAGIC, 8) != 0)
		return -1;
	memcpy(&c, b + 8, 8);
	memcpy(&vol, b + 16, 4);
	memcpy(&blk, b + 20, 4);
	if (blk != block || c == 0 || c > INT64_MAX)
		return -1;
	fill(want, c, vol, blk);
	return memcmp(want, b, BS) == 0 ? (int64_t)c : -1;
}

static int do_write(int argc, char **argv)
{
	unsigned n = (unsigned)(argc - 7), blocks = (unsigned)strtoul(argv[4], NULL, 10);
	double end = (double)tsr_mono_ns() / 1e9 + strtod(argv[3], NULL);
	uint64_t rnd = strtoull(argv[5], NULL, 10) * 2654435761u + 1;
	uint64_t base = strtoull(argv[6], NULL, 10), c = base;
	struct nbd_handle **h = calloc(n, sizeof(*h));
	FILE *log = fopen(argv[2], "w");
	static uint8_t buf[BS];

	if (h == NULL || log == NULL || blocks == 0) {
		fprintf(stderr, "group_writer: cannot start (%s)\n", argv[2]);
		return 2;
	}
	for (unsigned i = 0; i < n; i++) {
		h[i] = nbd_create();
		if (h[i] == NULL || nbd_connect_uri(h[i], argv[7 + i]) < 0 ||
		    (uint64_t)nbd_get_size(h[i]) < (uint64_t)blocks * BS) {
			fprintf(stderr, "group_writer: %s: %s\n", argv[7 + i], nbd_get_error());
			return 1;
		}
	}
	while ((double)tsr_mono_ns() / 1e9 < end) {
		uint32_t vol, block;

		rnd ^= rnd << 13;
		rnd ^= rnd >> 7;
		rnd ^= rnd << 17;
		vol = (uint32_t)(rnd % n);
		block = (uint32_t)((rnd >> 20) % blocks);
		fill(buf, ++c, vol, block);
		if (nbd_pwrite(h[vol], buf, BS, (uint64_t)block * BS, 0) < 0) {
			fprintf(stderr, "group_writer: write %" PRIu64 ": %s\n", c, nbd_get_error());
			return 1;
		}
		fprintf(log, "%" PRIu64 " %u %u\n", c, vol, block);
		fflush(log);
	}
	fclose(log);
	for (unsigned i = 0; i < n; i++) {
		nbd_shutdown(h[i], 0);
		nbd_close(h[i]);
	}
	printf("group_writer: %" PRIu64 " acknowledged writes over %u volumes (counters %" PRIu64
	       "..%" PRIu64 ")\n", c - base, n, base + 1, c);
	free(h);
	return 0;
}

static int do_read(char **argv)
{
	struct nbd_handle *h = nbd_create();
	static uint8_t buf[1u << 20];
	FILE *out = fopen(argv[3], "w");
	int64_t size;
	int ret = 0;

	if (h == NULL || out == NULL || nbd_connect_uri(h, argv[2]) < 0 ||
	    (size = nbd_get_size(h)) < 0) {
		fprintf(stderr, "group_writer: %s: %s\n", argv[2], nbd_get_error());
		return 1;
	}
	for (int64_t off = 0; off < size; off += (int64_t)sizeof(buf)) {
		size_t len = size - off < (int64_t)sizeof(buf) ? (size_t)(size - off) : sizeof(buf);

		if (nbd_pread(h, buf, len, (uint64_t)off, 0) < 0) {
			fprintf(stderr, "group_writer: read: %s\n", nbd_get_error());
			return 1;
		}
		for (size_t b = 0; b < len / BS; b++) {
			uint32_t block = (uint32_t)(off / BS + (int64_t)b);
			int64_t c = parse(buf + b * BS, block);

			if (c < 0) {
				fprintf(stderr, "group_writer: block %u is neither zero nor one whole "
					"write\n", block);
				ret = 3;
			} else if (c > 0) {
				fprintf(out, "%u %" PRId64 "\n", block, c);
			}
		}
	}
	fclose(out);
	nbd_shutdown(h, 0);
	nbd_close(h);
	return ret;
}

int main(int argc, char **argv)
{
	if (argc >= 8 && strcmp(argv[1], "write") == 0)
		return do_write(argc, argv);
	if (argc == 4 && strcmp(argv[1], "read") == 0)
		return do_read(argv);
	fprintf(stderr, "usage: group_writer write LOG SECONDS BLOCKS SEED BASE URI...\n"
			"       group_writer read URI OUT\n");
	return 2;
}
