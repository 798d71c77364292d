/*
 * libFuzzer harness for the EC stage journal read at volume open
 * (engine/store/stage.c, stage_open and its scan; the format is at the top
 * of stage.c: a 4 KiB GEN header "TSSJ" at byte 0, then 4 KiB record
 * headers, STAGE ones followed by their data).
 * Fixture, built once per process: a store in /var/tmp/tsr-fuzz-stage-XXXXXX
 * (O_DIRECT: a disk file system; TSR_TEST_DIR overrides /var/tmp; removed at
 * exit) with one open 1 MiB volume.  Each input is the journal file: the
 * volume's journal is closed, the input written as volumes/<uuid>.stage, and
 * opened again as at the first load after a crash (committed records are
 * written in place again).  Twice: as it is (a bit flip almost always
 * breaks a CRC), and with the CRCs recomputed (every 4 KiB block that starts
 * with the magic gets its hdr_crc, a STAGE one first its data_crc when its
 * data is in the file) so the fuzzer reaches the records' fields.
 * Checks (a torn or corrupt journal gives the documented recovery, never a
 * failed open or a crash): stage_open returns 0 (-ENOMEM aside); the index
 * holds at most TSR_STAGE_MAX_ENTRIES entries, each STAGED or COMMITTED,
 * with a distinct txn and stripe, participants, a length of 4 KiB..1 MiB in
 * 4 KiB units and a range inside the volume without wrapping; the tail is
 * past the header and 4 KiB aligned; tsr_svol_stage_list gives the same
 * entries sorted by txn, and packed as a STAGE_LIST reply they parse
 * (tsr_peer_stage_list_parse: what the coordinator accepts).  With the
 * CRCs recomputed, a record staged after the open (a new txn, a free
 * stripe) is durable: it is listed again after the journal is reopened.
 * An input that starts with 'C' is a compact journal instead (expand(),
 * below): 72 bytes per header, the data made up, the CRCs good unless asked
 * otherwise; the fuzzer then spends its mutations on the fields.
 * Built with -DTSR_FUZZ=ON and clang-14; run:
 *   fuzz_stage_journal -max_total_time=60 tests/fuzz/corpus/fuzz_stage_journal
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/internal.h"
#include "tessera/peer.h"

#define HDR     4096u
#define MAGIC   0x4a535354u /* "TSSJ" */
#define MAX_LEN (1024u * 1024)
#define VSIZE   (1ull << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dir[64];
static struct tsr_store *g_store;
static struct tsr_svol *g_vol;
static struct tsr_io *g_io;
static uint8_t *g_buf; /* one block of data for the appended record, aligned */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void teardown(void)
{
	tsr_svol_put(g_vol);
	tsr_io_destroy(g_io);
	tsr_store_close(g_store);
	nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void setup(void)
{
	const char *base = getenv("TSR_TEST_DIR");
	struct tsr_io_opts o = {.kind = TSR_IO_AUTO, .queue_depth = 8};
	struct tsr_vol_info info;

	tsr_log_set_level(TSR_LOG_ERROR);
	snprintf(g_dir, sizeof(g_dir), "%s/tsr-fuzz-stage-XXXXXX", base ? base : "/var/tmp");
	if (mkdtemp(g_dir) == NULL || tsr_store_open(g_dir, NULL, &g_store) != 0 ||
	    tsr_store_vol_create(g_store, "v", VSIZE, &info) != 0 ||
	    tsr_store_vol_open(g_store, "v", &g_vol) != 0 || tsr_io_create(&o, &g_io) != 0 ||
	    (g_buf = tsr_alloc_aligned(TSR_BLOCK_SIZE)) == NULL) {
		fprintf(stderr, "fuzz_stage_journal: cannot set up a store in %s\n", g_dir);
		abort();
	}
	memset(g_buf, 0x5a, TSR_BLOCK_SIZE);
	atexit(teardown);
}

/* Close the volume's journal, make data its file, open it again. */
static int reopen(const uint8_t *data, size_t size, bool replace, bool after_crash)
{
	char path[PATH_MAX];
	int ret;

	pthread_mutex_lock(&g_store->lock);
	stage_close(g_vol);
	if (replace) {
		int fd;

		store_meta_path(g_store, g_vol->uuid, "stage", path);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
			abort();
		close(fd);
	}
	g_store->unclean = after_crash;
	stage_store_free(g_store); /* the next open is the first since the crash */
	ret = stage_open(g_vol);
	pthread_mutex_unlock(&g_store->lock);
	return ret;
}

static void check_index(void)
{
	struct stage_journal *j = g_vol->stage;
	struct tsr_stage_entry *list = NULL;
	size_t n = 0;
	uint8_t *wire;

	if (j == NULL || j->n > TSR_STAGE_MAX_ENTRIES || j->tail < HDR || j->tail % HDR)
		abort();
	for (size_t i = 0; i < j->n; i++) {
		const struct tsr_stage_entry *e = &j->ents[i].e;

		if ((e->state != TSR_STAGE_STAGED && e->state != TSR_STAGE_COMMITTED) ||
		    e->participants == 0 || e->length == 0 || e->length > MAX_LEN ||
		    e->length % TSR_BLOCK_SIZE || e->offset % TSR_BLOCK_SIZE || e->offset > VSIZE ||
		    e->length > VSIZE - e->offset)
			abort();
		for (size_t k = 0; k < i; k++)
			if (j->ents[k].e.txn == e->txn || j->ents[k].e.stripe == e->stripe)
				abort();
	}
	if (tsr_svol_stage_list(g_vol, &list, &n) != 0) {
		return; /* -ENOMEM */
	}
	if (n != j->n)
		abort();
	wire = malloc(n ? n * TSR_PEER_STAGE_ENTRY : 1);
	if (wire == NULL)
		abort();
	tsr_peer_stage_list_pack(list, n, wire);
	{
		struct tsr_stage_entry *back = malloc((n ? n : 1) * sizeof(*back));
		size_t m = 0;

		if (back == NULL ||
		    tsr_peer_stage_list_parse(wire, (uint32_t)(n * TSR_PEER_STAGE_ENTRY), back, n,
					      &m) != 0 ||
		    m != n)
			abort();
		for (size_t i = 0; i < n; i++)
			if (back[i].txn != list[i].txn || back[i].stripe != list[i].stripe ||
			    back[i].offset != list[i].offset || back[i].length != list[i].length ||
			    back[i].participants != list[i].participants ||
			    back[i].state != list[i].state)
				abort();
		free(back);
	}
	free(wire);
	free(list);
}

struct done {
	int calls, status;
};

static void done_cb(void *cb_arg, int status)
{
	struct done *d = cb_arg;

	d->calls++;
	d->status = status;
}

/* Stage one more record after the open; it must be there after a reopen. */
static void check_append(void)
{
	struct stage_journal *j = g_vol->stage;
	struct tsr_stage_entry e = {
	    .txn = 1, .offset = 0, .length = TSR_BLOCK_SIZE, .participants = 1};
	struct tsr_stage_entry *list = NULL;
	struct done d = {0};
	size_t n = 0;
	bool found = false, taken = true;
	int ret;

	for (size_t i = 0; i < j->n; i++)
		if (j->ents[i].e.txn >= e.txn)
			e.txn = j->ents[i].e.txn + 1;
	if (e.txn == 0 || j->n >= TSR_STAGE_MAX_ENTRIES)
		return; /* no new txn above them all, or no room */
	for (e.stripe = 0; taken; e.stripe++) {
		taken = false;
		for (size_t i = 0; i < j->n; i++)
			taken |= j->ents[i].e.stripe == e.stripe;
		if (!taken)
			break;
	}
	ret = tsr_svol_stage(g_vol, g_io, &e, g_buf, done_cb, &d);
	while (ret == 0 && d.calls == 0)
		if (tsr_io_submit(g_io) < 0 || tsr_io_poll(g_io, 0, tsr_io_inflight(g_io) > 0) < 0)
			abort();
	if (ret == -ENOMEM || (ret == 0 && d.status == -ENOMEM))
		return;
	if (ret != 0 || d.status != 0)
		abort();
	ret = reopen(NULL, 0, false, false);
	if (ret == -ENOMEM)
		return;
	if (ret != 0)
		abort();
	check_index();
	if (tsr_svol_stage_list(g_vol, &list, &n) != 0)
		return;
	for (size_t i = 0; i < n; i++)
		if (list[i].txn == e.txn && list[i].stripe == e.stripe && list[i].offset == 0 &&
		    list[i].length == TSR_BLOCK_SIZE && list[i].state == TSR_STAGE_STAGED)
			found = true;
	free(list);
	if (!found)
		abort(); /* an acknowledged stage lost at the reopen */
}

static void run(const uint8_t *data, size_t size, bool append)
{
	int ret = reopen(data, size, true, true);

	if (ret == -ENOMEM)
		return;
	if (ret != 0)
		abort();
	check_index();
	if (append)
		check_append();
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

/* Recompute the CRCs of whatever looks like a header (little endian host). */
static void fix_crcs(uint8_t *f, size_t size)
{
	for (size_t p = 0; p + HDR <= size;) {
		uint32_t crc, len = get32(f + p + 56);

		if (get32(f + p) != MAGIC) {
			p += HDR;
			continue;
		}
		if (f[p + 6] == 2 && f[p + 7] == 0 && len && len <= MAX_LEN &&
		    len % TSR_BLOCK_SIZE == 0 && p + HDR + len <= size) {
			crc = tsr_crc32c(0, f + p + HDR, len);
			memcpy(f + p + 64, &crc, 4);
			crc = tsr_crc32c(0, f + p, HDR - 4);
			memcpy(f + p + HDR - 4, &crc, 4);
			p += HDR + len;
			continue;
		}
		crc = tsr_crc32c(0, f + p, HDR - 4);
		memcpy(f + p + HDR - 4, &crc, 4);
		p += HDR;
	}
}

/*
 * Compact input: 'C', then 72-byte pieces, each the first 72 bytes of a
 * 4 KiB header (the first one the GEN header); the file gets each header
 * (the rest zero) and, after a STAGE one with a valid length, that many
 * bytes of data.  The CRCs are made good and every record gets the magic,
 * version, generation and salt of the GEN piece, except where the piece's
 * reserved word (offset 68, ignored by the scan) says otherwise: bit 0 a bad
 * hdr_crc, bit 1 a bad data_crc, bit 2 the data cut short (the file ends
 * there: a torn write), bit 3 its own generation and salt, bit 4 its own
 * magic and version.  So every mutation is a journal the scan must take.
 */
#define PIECE 72u

static uint8_t *expand(const uint8_t *in, size_t n, size_t *out_len)
{
	size_t pieces = n / PIECE, cap = 0, len = 0;
	uint8_t *f = NULL;

	for (size_t i = 0; i < pieces && len < (2u << 20); i++) {
		const uint8_t *p = in + i * PIECE;
		uint32_t flags = get32(p + 68), dlen = get32(p + 56), crc;
		bool stage = i > 0 && p[6] == 2 && p[7] == 0 && dlen && dlen <= MAX_LEN &&
			     dlen % TSR_BLOCK_SIZE == 0;
		size_t need = len + HDR + (stage ? dlen : 0);
		uint8_t *h;

		if (need > cap) {
			uint8_t *nf = realloc(f, need);

			if (nf == NULL) {
				free(f);
				return NULL;
			}
			f = nf;
			cap = need;
		}
		h = f + len;
		memset(h, 0, HDR);
		memcpy(h, p, PIECE);
		if (i > 0 && !(flags & 16)) {
			memcpy(h, f, 8);         /* magic, version, type of the GEN piece... */
			memcpy(h + 6, p + 6, 2); /* ...but its own type */
		}
		if (i > 0 && !(flags & 8))
			memcpy(h + 8, f + 8, 16);
		if (stage) {
			for (uint32_t k = 0; k < dlen; k++)
				h[HDR + k] = (uint8_t)(k * 7 + i);
			crc = tsr_crc32c(0, h + HDR, dlen) ^ (flags & 2 ? 1u : 0u);
			memcpy(h + 64, &crc, 4);
		}
		crc = tsr_crc32c(0, h, HDR - 4) ^ (flags & 1 ? 1u : 0u);
		memcpy(h + HDR - 4, &crc, 4);
		len = need;
		if (stage && (flags & 4)) {
			len -= dlen / 2 + 1; /* torn: the file ends inside the data */
			break;
		}
	}
	*out_len = len;
	return f ? f : calloc(1, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	uint8_t *fixed;

	if (!ready) {
		setup();
		ready = true;
	}
	if (size > (8u << 20))
		return 0;
	if (size > 0 && data[0] == 'C') {
		size_t len = 0;

		fixed = expand(data + 1, size - 1, &len);
		if (fixed == NULL)
			return 0;
		run(fixed, len, true);
		free(fixed);
		return 0;
	}
	run(data, size, false);
	fixed = malloc(size ? size : 1);
	if (fixed == NULL)
		abort();
	memcpy(fixed, data, size);
	fix_crcs(fixed, size);
	run(fixed, size, true);
	free(fixed);
	return 0;
}
