/*
 * The redirect-on-write map of an EC chunk volume (docs/ARCHITECTURE.md,
 * "Issue 4: full-stripe writes without the journal's second data write"):
 * which physical slot of G bytes (G = the EC stripe unit) holds each
 * granule ("chunk") of the volume, and which slots are free.  Steps 1-2 of
 * that design: the files, svol_map's resolution through the map (data.c),
 * the allocator and its limbo.  Nothing flips the map yet (step 3: stage.c),
 * so every map is the identity and every I/O lands where it did before.
 *
 * volumes/<uuid>.map (little endian; created with the chunk volume, mmap'd
 * MAP_SHARED like .crc, made durable by an fdatasync of its fd):
 *
 *   off   size  field          rule
 *   0     4     magic          "TSRM"
 *   4     2     version        1
 *   6     2     granule_shift  log2 G, 12..20
 *   8     8     chunks         N = min(C, 2^31 - 1), C = ceil(volume size / G): the
 *                              chunks the map covers; grows with the volume
 *   16    4     reserve        R, slots in .row: 32 MiB / G, at least 32; C / 8 when
 *                              that is less, at least min(32, 2 MiB / G) (fixed at
 *                              create; open accepts min(32, 2 MiB / G)..max)
 *   20    4072  zero           (checked: a byte set is -EUCLEAN)
 *   4092  4     hdr_crc        CRC32C (seed 0) of bytes 0..4091 (a tear of a
 *                              grow's rewrite is accepted and repaired: grow_torn)
 *   4096+4c 4   slot[c]        chunk c's physical slot P as P + 1; 0 = its home
 *                              (P = c; a flip back home writes 0)
 *
 * Physical slot P < 2^31 is the volume's own data at byte P x G (its
 * segment files, as today); P >= 2^31 is volumes/<uuid>.row at byte
 * (P - 2^31) x G.  A volume of C >= 2^31 chunks (8 TiB at G = 4 KiB; a grow
 * can make one) has a map of the first N = 2^31 - 1 only: chunk c >= N has
 * no word and is always at home, at .data byte c x G (svol_map resolves it
 * so without reading the map), its home is never a slot the allocator
 * hands out, and step 3 must not stage it by redirect (such a STAGE takes
 * the journal path).  .row is R x G bytes written with zeros once at creation
 * (no write into it is ever an allocating one).  A fresh map is all zeros:
 * the identity.  Every physical slot holds exactly one chunk or is free;
 * the free ones are those no slot[c] names (and, from step 3 on, no live
 * journal entry reserves): the free bitmap is rebuilt at open.
 *
 * Allocation is next-fit (a sequential stream gets contiguous slots, so its
 * later reads stay one I/O per run).  A freed slot waits in a limbo until
 * every read that may still have mapped it completed: reads count in one of
 * two read epochs (rowmap_read_begin at their svol_map, rowmap_read_end at
 * completion); a slot freed in epoch e is handed out once every read of
 * epochs <= e completed, i.e. once the epoch is e + 2.  The epoch moves on
 * (under the allocator lock) only when the reads of the epoch before the
 * current one are all done, so reads are only ever counted in two.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/internal.h"

#define MAP_MAGIC   0x4d525354u /* "TSRM" little endian */
#define MAP_VERSION 1u
#define HDR_CRC_OFF 4092u
/* what a user does about a map or .row that is lost or damaged */
#define REBUILD "rebuild this copy: tessera volume replace-replica VOLUME --node THIS-NODE"

static uint64_t round_page(uint64_t v)
{
	return (v + STORE_PAGE - 1) / STORE_PAGE * STORE_PAGE;
}

uint32_t rowmap_reserve_max(unsigned shift)
{
	uint64_t r = ROWMAP_RESERVE_BYTES >> shift;

	return r < ROWMAP_RESERVE_MIN_SLOTS ? ROWMAP_RESERVE_MIN_SLOTS : (uint32_t)r;
}

uint32_t rowmap_reserve_min(unsigned shift)
{
	uint64_t r = ROWMAP_RESERVE_MIN_BYTES >> shift;

	/* fewer slots only send more STAGEs to the journal path: 2 MiB of .row
	 * is enough for a small copy at any G, and never more than before */
	if (r > ROWMAP_RESERVE_MIN_SLOTS)
		return ROWMAP_RESERVE_MIN_SLOTS;
	return r ? (uint32_t)r : 1;
}

uint32_t rowmap_reserve_slots(unsigned shift, uint64_t chunks)
{
	uint32_t max = rowmap_reserve_max(shift), min = rowmap_reserve_min(shift);

	if (chunks / 8 >= max)
		return max;
	return chunks / 8 < min ? min : (uint32_t)(chunks / 8);
}

uint64_t rowmap_chunks(uint64_t size, unsigned shift)
{
	return (size + (1ull << shift) - 1) >> shift;
}

uint64_t rowmap_covered(uint64_t size, unsigned shift)
{
	uint64_t c = rowmap_chunks(size, shift);

	return c < ROWMAP_MAX_CHUNKS ? c : ROWMAP_MAX_CHUNKS;
}

uint64_t rowmap_file_size(uint64_t chunks)
{
	return round_page(ROWMAP_HDR + chunks * 4);
}

int rowmap_unit_shift(uint32_t unit)
{
	unsigned s;

	for (s = ROWMAP_MIN_SHIFT; s <= ROWMAP_MAX_SHIFT; s++)
		if (unit == 1u << s)
			return (int)s;
	return -EINVAL;
}

void rowmap_hdr_pack(uint8_t hdr[ROWMAP_HDR], unsigned shift, uint64_t chunks, uint32_t reserve)
{
	uint32_t v32;
	uint16_t v16;
	uint64_t v64;

	memset(hdr, 0, ROWMAP_HDR);
	v32 = htole32(MAP_MAGIC);
	memcpy(hdr, &v32, 4);
	v16 = htole16(MAP_VERSION);
	memcpy(hdr + 4, &v16, 2);
	v16 = htole16((uint16_t)shift);
	memcpy(hdr + 6, &v16, 2);
	v64 = htole64(chunks);
	memcpy(hdr + 8, &v64, 8);
	v32 = htole32(reserve);
	memcpy(hdr + 16, &v32, 4);
	v32 = htole32(tsr_crc32c(0, hdr, HDR_CRC_OFF));
	memcpy(hdr + HDR_CRC_OFF, &v32, 4);
}

/* Set bit b of a bitmap; false when it was set already. */
static bool bit_claim(uint64_t *map, uint64_t b)
{
	if (map[b / 64] & (1ull << (b % 64)))
		return false;
	map[b / 64] |= 1ull << (b % 64);
	return true;
}

/*
 * A grow rewrites the header in place: chunks (offset 8, sector 0) and
 * hdr_crc (4092, sector 7) change, in different 512-byte sectors, and a
 * device that writes only sectors atomically may keep one of them old at a
 * power cut.  Both tears are known by the catalogue's C (durable only after
 * the map's fdatasync): sector 0 new, hdr_crc old: hdr_crc is that of the
 * header with C in place of its chunks; sector 0 old: its chunks is C (and
 * every other field is checked against the catalogue and .row's size anyway).
 */
static bool grow_torn(const uint8_t *buf, uint64_t n, uint64_t chunks, uint32_t stored)
{
	uint8_t h[HDR_CRC_OFF];
	uint64_t v = htole64(chunks);

	if (n == chunks)
		return true;
	if (n < chunks)
		return false;
	memcpy(h, buf, sizeof(h));
	memcpy(h + 8, &v, 8);
	return tsr_crc32c(0, h, sizeof(h)) == stored;
}

int rowmap_parse(const uint8_t *buf, size_t len, unsigned shift, uint64_t chunks, const char *path,
		 struct rowmap_hdr *hdr, uint64_t *home_used, uint64_t *row_used)
{
	uint32_t magic, crc, stored, reserve;
	uint16_t version, gshift;
	uint64_t c, n;

	if (len < ROWMAP_HDR) {
		tsr_error("open: %s: %zu bytes, shorter than its 4 KiB header: redirect map "
			  "damaged (the volume cannot be opened: " REBUILD ")",
			  path, len);
		return -EUCLEAN;
	}
	memcpy(&magic, buf, 4);
	memcpy(&version, buf + 4, 2);
	memcpy(&gshift, buf + 6, 2);
	memcpy(&n, buf + 8, 8);
	memcpy(&reserve, buf + 16, 4);
	memcpy(&stored, buf + HDR_CRC_OFF, 4);
	magic = le32toh(magic);
	version = le16toh(version);
	gshift = le16toh(gshift);
	n = le64toh(n);
	reserve = le32toh(reserve);
	stored = le32toh(stored);
	crc = tsr_crc32c(0, buf, HDR_CRC_OFF);
	hdr->torn = magic == MAP_MAGIC && crc != stored && grow_torn(buf, n, chunks, stored);
	if (magic != MAP_MAGIC || (crc != stored && !hdr->torn)) {
		tsr_error("open: %s: redirect map header damaged (magic %08x, hdr_crc stored %08x, "
			  "computed %08x); the volume cannot be opened: " REBUILD,
			  path, magic, stored, crc);
		return -EUCLEAN;
	}
	if (version != MAP_VERSION || gshift != shift || n < chunks || n > ROWMAP_MAX_CHUNKS ||
	    reserve < rowmap_reserve_min(shift) || reserve > rowmap_reserve_max(shift) ||
	    len < ROWMAP_HDR + chunks * 4) {
		tsr_error(
		    "open: %s: redirect map header says version %u, granule 2^%u, %llu chunks, "
		    "%u reserve slots in %zu bytes; the catalogue wants version %u, 2^%u, "
		    "%llu..%llu chunks, %u..%u slots: the volume cannot be opened (" REBUILD ")",
		    path, version, gshift, (unsigned long long)n, reserve, len, MAP_VERSION, shift,
		    (unsigned long long)chunks, (unsigned long long)ROWMAP_MAX_CHUNKS,
		    rowmap_reserve_min(shift), rowmap_reserve_max(shift));
		return -EUCLEAN;
	}
	for (c = 20; c < HDR_CRC_OFF && buf[c] == 0; c++)
		;
	if (c < HDR_CRC_OFF) {
		tsr_error("open: %s: redirect map header byte %llu is %u, not 0 as version %u "
			  "says (written by a later tesserad?): the volume cannot be opened (run "
			  "the tesserad that wrote it, or " REBUILD ")",
			  path, (unsigned long long)c, buf[c], MAP_VERSION);
		return -EUCLEAN;
	}
	hdr->shift = shift;
	hdr->chunks = n;
	hdr->reserve = reserve;
	memset(home_used, 0, (chunks + 63) / 64 * 8);
	memset(row_used, 0, ((uint64_t)reserve + 63) / 64 * 8);
	for (c = 0; c < chunks; c++) {
		uint32_t v;
		uint64_t p;
		bool ok;

		memcpy(&v, buf + ROWMAP_HDR + c * 4, 4);
		v = le32toh(v);
		p = v ? (uint64_t)v - 1 : c;
		if (p < chunks)
			ok = bit_claim(home_used, p);
		else if (p >= ROWMAP_ROW_BASE && p - ROWMAP_ROW_BASE < reserve)
			ok = bit_claim(row_used, p - ROWMAP_ROW_BASE);
		else
			ok = false;
		if (!ok) {
			tsr_error("open: %s: redirect map entry of chunk %llu names slot %llu, %s: "
				  "map damaged, the volume cannot be opened (" REBUILD ")",
				  path, (unsigned long long)c, (unsigned long long)p,
				  p < chunks ||
					  (p >= ROWMAP_ROW_BASE && p - ROWMAP_ROW_BASE < reserve)
				      ? "which another chunk holds"
				      : "which does not exist");
			return -EUCLEAN;
		}
	}
	return 0;
}

/* Write R x G zero bytes into a new .row file (fd O_DIRECT), then fsync. */
static int row_fill(int fd, const char *path, uint64_t len)
{
	const size_t step = 1u << 20;
	uint8_t *zero = tsr_alloc_aligned(step);
	uint64_t off;
	int ret = 0;

	if (zero == NULL)
		return -ENOMEM;
	memset(zero, 0, step);
	for (off = 0; off < len; off += step) {
		size_t l = len - off < step ? (size_t)(len - off) : step;
		ssize_t n = pwrite(fd, zero, l, (off_t)off);

		if (n != (ssize_t)l) {
			ret = n < 0 ? -errno : -EIO;
			break;
		}
	}
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	if (ret)
		tsr_error("create: %s: write its %llu zero bytes: %s", path,
			  (unsigned long long)len, strerror(-ret));
	free(zero);
	return ret;
}

int rowmap_create_files(const char *map_path, const char *row_path, uint64_t size, unsigned shift)
{
	uint64_t chunks = rowmap_covered(size, shift);
	uint32_t reserve = rowmap_reserve_slots(shift, chunks);
	uint8_t hdr[ROWMAP_HDR];
	const char *path = map_path;
	int fd, ret = 0;

	fd = open(map_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		goto err_errno;
	rowmap_hdr_pack(hdr, shift, chunks, reserve);
	if (ftruncate(fd, (off_t)rowmap_file_size(chunks)) < 0 ||
	    pwrite(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr))
		goto err_errno;
	/* stored to through a mapping: its blocks must exist (blockmeta.c) */
	ret = blockmeta_alloc_file(fd, rowmap_file_size(chunks));
	if (ret)
		goto err;
	if (fsync(fd) < 0)
		goto err_errno;
	close(fd);
	path = row_path;
	fd = open(row_path, O_RDWR | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC, 0600);
	if (fd < 0)
		goto err_errno;
	ret = row_fill(fd, row_path, (uint64_t)reserve << shift);
	close(fd);
	return ret;
err_errno:
	ret = errno ? -errno : -EIO;
err:
	tsr_error("create: %s: %s", path, strerror(-ret));
	if (fd >= 0)
		close(fd);
	return ret;
}

/* Bytes of address space to reserve for a map file of len bytes (it grows
 * in place while the reservation lasts, like the crc table's). */
static size_t map_reserve(uint64_t len)
{
	uint64_t want = len * 2;

	if (want < (64ull << 20))
		want = 64ull << 20;
	return (size_t)round_page(want);
}

void rowmap_close(struct rowmap *m)
{
	struct retired_map *r;

	if (m == NULL)
		return;
	if (m->map_addr)
		munmap(m->map_addr, m->map_len);
	while ((r = m->retired)) {
		m->retired = r->next;
		munmap(r->addr, r->len);
		free(r);
	}
	if (m->fd >= 0)
		close(m->fd);
	if (m->row_fd >= 0)
		close(m->row_fd);
	if (m->row_cfd >= 0)
		close(m->row_cfd);
	pthread_mutex_destroy(&m->lock);
	free(m->home_free);
	free(m->row_free);
	free(m->limbo);
	free(m);
}

int rowmap_open(const char *map_path, const char *row_path, uint64_t size, unsigned shift,
		bool cached, struct rowmap **out)
{
	uint64_t chunks = rowmap_covered(size, shift), w;
	struct rowmap *m = calloc(1, sizeof(*m));
	struct rowmap_hdr hdr;
	const char *path = map_path;
	struct stat st;
	void *p;
	int ret;

	if (m == NULL)
		return -ENOMEM;
	m->fd = m->row_fd = m->row_cfd = -1;
	pthread_mutex_init(&m->lock, NULL);
	m->shift = shift;
	m->fd = open(map_path, O_RDWR | O_CLOEXEC);
	if (m->fd < 0 || fstat(m->fd, &st) < 0)
		goto err_errno;
	m->map_len = map_reserve((uint64_t)st.st_size);
	p = mmap(NULL, m->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, m->fd, 0);
	if (p == MAP_FAILED)
		goto err_errno;
	m->map_addr = p;
	m->home_words = (chunks + 63) / 64;
	m->home_free = calloc(m->home_words ? m->home_words : 1, 8);
	m->row_free = calloc((rowmap_reserve_max(shift) + 63) / 64, 8);
	if (m->home_free == NULL || m->row_free == NULL) {
		ret = -ENOMEM;
		goto err;
	}
	/* parse into the free bitmaps as "used" bits, then invert them */
	ret = rowmap_parse(p, (size_t)st.st_size, shift, chunks, map_path, &hdr, m->home_free,
			   m->row_free);
	if (ret)
		goto err;
	m->reserve = hdr.reserve;
	for (w = 0; w < m->home_words; w++)
		m->home_free[w] = ~m->home_free[w];
	if (chunks % 64)
		m->home_free[chunks / 64] &= (1ull << (chunks % 64)) - 1;
	for (w = 0; w < (m->reserve + 63) / 64; w++)
		m->row_free[w] = ~m->row_free[w];
	if (m->reserve % 64)
		m->row_free[m->reserve / 64] &= (1ull << (m->reserve % 64)) - 1;
	for (w = 0; w < m->home_words; w++)
		m->nfree += (uint64_t)__builtin_popcountll(m->home_free[w]);
	for (w = 0; w < (m->reserve + 63) / 64; w++)
		m->nfree += (uint64_t)__builtin_popcountll(m->row_free[w]);
	atomic_init(&m->chunks, chunks);
	atomic_init(&m->slot, (uint32_t *)((uint8_t *)p + ROWMAP_HDR));
	m->cursor = ROWMAP_ROW_BASE;
	path = row_path;
	m->row_fd = open(row_path, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (m->row_fd < 0 || fstat(m->row_fd, &st) < 0)
		goto err_errno;
	if ((uint64_t)st.st_size != (uint64_t)m->reserve << shift) {
		tsr_error("open: %s is %lld bytes, expected %llu (%u slots of 2^%u): redirect "
			  "slots damaged; the volume cannot be opened (" REBUILD ")",
			  row_path, (long long)st.st_size,
			  (unsigned long long)((uint64_t)m->reserve << shift), m->reserve, shift);
		ret = -EUCLEAN;
		goto err;
	}
	if (hdr.torn) { /* only now: .row's size vouches for R too */
		uint8_t h[ROWMAP_HDR];

		tsr_warn("open: %s: redirect map header torn by a grow cut short (hdr_crc does "
			 "not match; its fields agree with the catalogue): rewritten whole",
			 map_path);
		rowmap_hdr_pack(h, shift, hdr.chunks, hdr.reserve);
		memcpy(p, h, sizeof(h));
		path = map_path;
		if (fdatasync(m->fd) < 0)
			goto err_errno;
	}
	if (cached) {
		m->row_cfd = open(row_path, O_RDONLY | O_CLOEXEC);
		if (m->row_cfd < 0)
			tsr_warn("open: %s for cached reads: %s; its reads stay O_DIRECT", row_path,
				 strerror(errno));
	}
	*out = m;
	return 0;
err_errno:
	ret = -errno;
	if (ret == -ENOENT) /* the catalogue says the volume has one */
		tsr_error("open: %s: missing (the catalogue says this ec chunk copy has a "
			  "redirect map): the volume cannot be opened (" REBUILD ")",
			  path);
	else
		tsr_error("open: %s: %s", path, strerror(-ret));
err:
	rowmap_close(m);
	return ret == -ENOENT ? -EIO : ret;
}

int rowmap_grow(struct rowmap *m, uint64_t new_size)
{
	/* chunks past the map's coverage stay at home: no word, nothing to do */
	uint64_t chunks = rowmap_covered(new_size, m->shift);
	uint64_t old = atomic_load(&m->chunks), len = rowmap_file_size(chunks);
	size_t words = (chunks + 63) / 64;
	uint8_t hdr[ROWMAP_HDR];
	int ret;

	if (chunks <= old)
		return 0;
	/* the new entries read as zeros: identity (their home slots, used) */
	if (ftruncate(m->fd, (off_t)len) < 0)
		goto err_errno;
	ret = blockmeta_alloc_range(m->fd, rowmap_file_size(old), len - rowmap_file_size(old));
	if (ret)
		goto err;
	if (len > m->map_len) {
		struct retired_map *r = malloc(sizeof(*r));
		size_t want = map_reserve(len);
		void *p;

		if (r == NULL)
			return -ENOMEM;
		p = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, m->fd, 0);
		if (p == MAP_FAILED) {
			free(r);
			goto err_errno;
		}
		/* readers may hold the old mapping: kept until close */
		r->addr = m->map_addr;
		r->len = m->map_len;
		r->next = m->retired;
		m->retired = r;
		m->map_addr = p;
		m->map_len = want;
		atomic_store_explicit(&m->slot, (uint32_t *)((uint8_t *)p + ROWMAP_HDR),
				      memory_order_release);
	}
	pthread_mutex_lock(&m->lock);
	if (words > m->home_words) {
		uint64_t *h = realloc(m->home_free, words * 8);

		if (h == NULL) {
			pthread_mutex_unlock(&m->lock);
			return -ENOMEM;
		}
		memset(h + m->home_words, 0, (words - m->home_words) * 8);
		m->home_free = h;
		m->home_words = words;
	}
	pthread_mutex_unlock(&m->lock);
	rowmap_hdr_pack(hdr, m->shift, chunks, m->reserve);
	memcpy(m->map_addr, hdr, sizeof(hdr));
	if (fdatasync(m->fd) < 0)
		goto err_errno;
	atomic_store_explicit(&m->chunks, chunks, memory_order_release);
	return 0;
err_errno:
	ret = -errno;
err:
	tsr_error("resize: extend redirect map: %s", strerror(-ret));
	return ret;
}

/* ---- the allocator ---- */

static bool slot_free_test(const struct rowmap *m, uint64_t p)
{
	if (p >= ROWMAP_ROW_BASE)
		return m->row_free[(p - ROWMAP_ROW_BASE) / 64] &
		       (1ull << ((p - ROWMAP_ROW_BASE) % 64));
	return m->home_free[p / 64] & (1ull << (p % 64));
}

static void slot_free_set(struct rowmap *m, uint64_t p, bool is_free)
{
	uint64_t *w, bit;

	if (p >= ROWMAP_ROW_BASE) {
		w = &m->row_free[(p - ROWMAP_ROW_BASE) / 64];
		bit = 1ull << ((p - ROWMAP_ROW_BASE) % 64);
	} else {
		w = &m->home_free[p / 64];
		bit = 1ull << (p % 64);
	}
	if (is_free)
		*w |= bit;
	else
		*w &= ~bit;
}

/* The physical slot after p in next-fit order: home 0..C-1, then .row
 * 2^31..2^31+R-1, then home 0 again. */
static uint64_t slot_after(const struct rowmap *m, uint64_t p, uint64_t chunks)
{
	if (p < ROWMAP_ROW_BASE)
		return p + 1 < chunks ? p + 1 : ROWMAP_ROW_BASE;
	if (p + 1 < ROWMAP_ROW_BASE + m->reserve)
		return p + 1;
	return chunks ? 0 : ROWMAP_ROW_BASE;
}

/* Move the read epoch on while the reads of the epoch before the current
 * one are done; then hand the limbo's slots whose epoch is old enough back
 * to the free bitmap (m->lock held). */
static void limbo_reclaim(struct rowmap *m)
{
	uint64_t e;
	size_t i, k;
	int step;

	/* two steps at most: a slot freed in the current epoch e is free at e + 2 */
	for (step = 0; step < 2; step++) {
		e = atomic_load(&m->epoch);
		if (atomic_load(&m->readers[(e + 1) & 1]) != 0) /* reads of epoch e - 1 */
			break;
		atomic_store(&m->epoch, e + 1);
	}
	e = atomic_load(&m->epoch);
	for (i = k = 0; i < m->nlimbo; i++) {
		if (m->limbo[i].epoch + 2 <= e) {
			slot_free_set(m, m->limbo[i].slot, true);
			m->nfree++;
		} else {
			m->limbo[k++] = m->limbo[i];
		}
	}
	m->nlimbo = k;
}

int rowmap_alloc(struct rowmap *m, uint32_t n, uint32_t *slots)
{
	uint64_t chunks = atomic_load(&m->chunks), p, start;
	uint32_t got = 0;

	pthread_mutex_lock(&m->lock);
	limbo_reclaim(m);
	if (n == 0 || m->nfree < n) {
		pthread_mutex_unlock(&m->lock);
		return -ENOSPC;
	}
	p = start = m->cursor;
	if (p < ROWMAP_ROW_BASE ? p >= chunks : p >= ROWMAP_ROW_BASE + m->reserve)
		p = start = ROWMAP_ROW_BASE;
	do {
		if (slot_free_test(m, p)) {
			slot_free_set(m, p, false);
			slots[got++] = (uint32_t)p;
		}
		p = slot_after(m, p, chunks);
	} while (got < n && p != start);
	m->nfree -= got;
	m->cursor = (uint32_t)p;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

int rowmap_free(struct rowmap *m, const uint32_t *slots, uint32_t n)
{
	uint64_t e;
	uint32_t i;

	pthread_mutex_lock(&m->lock);
	if (m->nlimbo + n > m->limbo_cap) {
		size_t cap = m->limbo_cap ? m->limbo_cap * 2 : 64;
		struct rowmap_limbo *l;

		while (cap < m->nlimbo + n)
			cap *= 2;
		l = realloc(m->limbo, cap * sizeof(*l));
		if (l == NULL) {
			pthread_mutex_unlock(&m->lock);
			return -ENOMEM;
		}
		m->limbo = l;
		m->limbo_cap = cap;
	}
	/* after the caller's map change: a read that maps the slot from now on
	 * cannot find it, one that did is counted in this epoch or the one before */
	e = atomic_load(&m->epoch);
	for (i = 0; i < n; i++) {
		m->limbo[m->nlimbo].slot = slots[i];
		m->limbo[m->nlimbo].epoch = e;
		m->nlimbo++;
	}
	pthread_mutex_unlock(&m->lock);
	return 0;
}

int rowmap_take(struct rowmap *m, const uint32_t *slots, uint32_t n)
{
	uint64_t chunks = atomic_load(&m->chunks);
	uint32_t i;

	pthread_mutex_lock(&m->lock);
	for (i = 0; i < n; i++) {
		uint64_t p = slots[i];

		if ((p < ROWMAP_ROW_BASE ? p >= chunks : p - ROWMAP_ROW_BASE >= m->reserve) ||
		    !slot_free_test(m, p)) {
			while (i--) /* give back what this call took */
				slot_free_set(m, slots[i], true);
			pthread_mutex_unlock(&m->lock);
			return -EEXIST;
		}
		slot_free_set(m, p, false); /* a slot named twice in slots[] fails here */
	}
	m->nfree -= n;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

uint32_t rowmap_slot(struct rowmap *m, uint64_t c)
{
	uint32_t v = le32toh(__atomic_load_n(&atomic_load(&m->slot)[c], __ATOMIC_ACQUIRE));

	return v ? v - 1 : (uint32_t)c;
}

int rowmap_flip(struct rowmap *m, uint64_t first, uint32_t n, const uint32_t *old,
		const uint32_t *new_slots)
{
	uint32_t *slot = atomic_load(&m->slot), i;

	pthread_mutex_lock(&m->lock);
	if (first + n > atomic_load(&m->chunks)) {
		tsr_error("redirect map: chunks %llu..%llu: past the %llu the map covers (they "
			  "stay at home): nothing flipped",
			  (unsigned long long)first, (unsigned long long)(first + n - 1),
			  (unsigned long long)atomic_load(&m->chunks));
		pthread_mutex_unlock(&m->lock);
		return -EIO;
	}
	for (i = 0; old && i < n; i++) {
		if (rowmap_slot(m, first + i) != old[i]) {
			tsr_error("redirect map: chunk %llu is in slot %u, not %u as its flip "
				  "expects: nothing flipped",
				  (unsigned long long)(first + i), rowmap_slot(m, first + i),
				  old[i]);
			pthread_mutex_unlock(&m->lock);
			return -EIO;
		}
	}
	for (i = 0; i < n; i++) {
		uint32_t v = new_slots[i] == first + i ? 0 : new_slots[i] + 1; /* home: 0 */

		__atomic_store_n(&slot[first + i], htole32(v), __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&m->lock);
	return 0;
}

unsigned rowmap_read_begin(struct rowmap *m)
{
	for (;;) {
		uint64_t e = atomic_load(&m->epoch);

		atomic_fetch_add(&m->readers[e & 1], 1);
		/* counted while the epoch was still e: an advance past e + 1 waits for us */
		if (atomic_load(&m->epoch) == e)
			return (unsigned)(e & 1);
		atomic_fetch_sub(&m->readers[e & 1], 1);
	}
}

void rowmap_read_end(struct rowmap *m, unsigned token)
{
	atomic_fetch_sub_explicit(&m->readers[token], 1, memory_order_release);
}

uint64_t rowmap_free_slots(struct rowmap *m)
{
	uint64_t n;

	pthread_mutex_lock(&m->lock);
	limbo_reclaim(m);
	n = m->nfree;
	pthread_mutex_unlock(&m->lock);
	return n;
}

int rowmap_sync(struct rowmap *m)
{
	if (fdatasync(m->fd) < 0 || fdatasync(m->row_fd) < 0) {
		int ret = -errno;

		tsr_error("sync: redirect map or slots: %s", strerror(-ret));
		return ret;
	}
	return 0;
}
