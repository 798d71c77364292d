/*
 * libFuzzer harness for the dirty-region bitmap file of a mirror or EC copy
 * (engine/layout/mirror_bitmap.c, mbm_open with load; the format is in
 * engine/layout/mirror_internal.h: page 0 the header, then the bits).
 * The input is written as the file, in a directory made once per process
 * (TSR_TEST_DIR, else /dev/shm, else /var/tmp; tsr-fuzz-mbm-XXXXXX, removed
 * at exit), and opened as the coordinator does at attach.  On tmpfs the
 * open takes its no-O_DIRECT branch and fdatasync costs nothing: some
 * thousand runs a second instead of a hundred on this disk; what is parsed
 * is the same.  The geometry (region size, volume size) is
 * the header's own when it is plausible (a power of two region of 4 KiB to
 * 1 GiB, a 4 KiB multiple size of at most 4 bitmap pages of regions), else
 * a default one (65 regions of 1 MiB).  Each input is opened twice: as it
 * is (a bit flip in the header almost always breaks its CRC), and with the
 * header CRC recomputed so the fuzzer reaches the rest.
 * Checks (the documented recovery: a file whose header does not match, or
 * cut short, means every region dirty): mbm_open returns 1 exactly when
 * the header page is the one of this geometry and the file holds every
 * bitmap page, and then the bits are the file's; else 0 and every region
 * is set; bits past the last region are clear either way; nset counts the
 * set bits and mbm_next visits exactly them; the file afterwards holds the
 * header and the bits as they are in memory.
 * Built with -DTSR_FUZZ=ON and clang-14; run:
 *   fuzz_mirror_bitmap -max_total_time=60 tests/fuzz/corpus/fuzz_mirror_bitmap
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layout/mirror_internal.h"

#define PAGE          4096u
#define BITS_PER_PAGE (PAGE * 8ull)
#define MAX_PAGES     4u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dir[64];
static char g_path[128];

static void remove_dir(void)
{
	unlink(g_path);
	rmdir(g_dir);
}

static void setup(void)
{
	const char *base = getenv("TSR_TEST_DIR");

	if (base == NULL)
		base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/var/tmp";
	snprintf(g_dir, sizeof(g_dir), "%s/tsr-fuzz-mbm-XXXXXX", base);
	if (mkdtemp(g_dir) == NULL)
		abort();
	snprintf(g_path, sizeof(g_path), "%s/v.n1.bitmap", g_dir);
	atexit(remove_dir);
	tsr_log_set_level(TSR_LOG_ERROR); /* "not ours: full resync" each run */
}

static uint64_t le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	while (n-- > 0)
		v = (v << 8) | p[n];
	return v;
}

/* The header mbm_open writes for this geometry (mirror_internal.h). */
static void header(uint8_t *p, uint32_t region_size, uint64_t vol_size)
{
	uint32_t crc;

	memset(p, 0, PAGE);
	memcpy(p, "TSRMBMAP", 8);
	p[8] = 1;
	memcpy(p + 12, &region_size, 4);
	memcpy(p + 16, &vol_size, 8);
	crc = tsr_crc32c(0, p, 24);
	memcpy(p + 24, &crc, 4);
}

static void write_file(const uint8_t *data, size_t size)
{
	int fd = open(g_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
		abort();
	close(fd);
}

static void check(const uint8_t *data, size_t size)
{
	static struct mirror *m;
	uint8_t want[PAGE], *back;
	struct mbitmap bm;
	uint64_t npages, bytes, count = 0;
	bool match;
	int ret;

	if (m == NULL && (m = calloc(1, sizeof(*m))) == NULL)
		abort();
	snprintf(m->name, sizeof(m->name), "fuzz");
	m->region_size = 1u << 20;
	m->size = 65ull << 20;
	if (size >= 24) {
		uint32_t rs = (uint32_t)le(data + 12, 4);
		uint64_t vs = le(data + 16, 8);

		if (rs >= PAGE && rs <= (1u << 30) && (rs & (rs - 1)) == 0 && vs > 0 &&
		    vs % PAGE == 0 && (vs - 1) / rs < MAX_PAGES * BITS_PER_PAGE) {
			m->region_size = rs;
			m->size = vs;
		}
	}
	m->region_shift = (unsigned)__builtin_ctz(m->region_size);
	m->nregions = (m->size + m->region_size - 1) >> m->region_shift;
	npages = (m->nregions + BITS_PER_PAGE - 1) / BITS_PER_PAGE;
	bytes = npages * PAGE;
	header(want, m->region_size, m->size);
	match = size >= PAGE + bytes && memcmp(data, want, PAGE) == 0;

	write_file(data, size);
	ret = mbm_open(&bm, m, g_path, true, false);
	if (ret == -ENOMEM) {
		mbm_close(&bm, false);
		return;
	}
	if (ret != (match ? 1 : 0) || bm.nregions != m->nregions || bm.npages != npages)
		abort();
	for (uint64_t r = 0; r < npages * BITS_PER_PAGE; r++) {
		bool set = mbm_test(&bm, r);
		bool file = match && (data[PAGE + (r >> 3)] >> (r & 7)) & 1;

		if (r >= m->nregions ? set : set != (match ? file : true))
			abort();
		count += set;
	}
	if (count != bm.nset)
		abort();
	count = 0;
	for (uint64_t r = mbm_next(&bm, 0); r < m->nregions; r = mbm_next(&bm, r + 1)) {
		if (!mbm_test(&bm, r))
			abort();
		count++;
	}
	if (count != bm.nset)
		abort();
	/* what the next open reads: this geometry's header and these bits */
	back = malloc(PAGE + bytes);
	if (back == NULL)
		abort();
	{
		int fd = open(g_path, O_RDONLY | O_CLOEXEC);

		if (fd < 0 || pread(fd, back, PAGE + bytes, 0) != (ssize_t)(PAGE + bytes))
			abort();
		close(fd);
	}
	if (memcmp(back, want, PAGE) != 0 || memcmp(back + PAGE, bm.bits, bytes) != 0)
		abort();
	free(back);
	mbm_close(&bm, false);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	uint8_t *fixed;
	uint32_t crc;

	if (!ready) {
		setup();
		ready = true;
	}
	if (size > PAGE + MAX_PAGES * PAGE + PAGE)
		return 0; /* past the largest bitmap of a plausible geometry */
	check(data, size);
	if (size < 28)
		return 0;
	fixed = malloc(size);
	if (fixed == NULL)
		abort();
	memcpy(fixed, data, size);
	crc = tsr_crc32c(0, fixed, 24);
	memcpy(fixed + 24, &crc, 4);
	check(fixed, size);
	free(fixed);
	return 0;
}
