/*
 * Unit tests of the redirect-on-write map of ec chunk volumes
 * (engine/store/rowmap.c, svol_map in data.c; steps 1-2 of "Issue 4:
 * full-stripe writes without the journal's second data write" in
 * docs/ARCHITECTURE.md): a chunk volume made with a stripe unit has
 * volumes/<uuid>.map (identity) and .row; a map set by hand (as step 3's
 * flips will leave it) sends writes and reads to the right file and offset,
 * merging contiguous slots into one piece; flush syncs the map and .row;
 * grow keeps the map and maps new chunks home; delete removes both files;
 * a damaged header or a slot named twice is refused at open.  The
 * allocator: next-fit gives a stream contiguous slots; a slot freed while
 * a read that mapped it is in flight is not handed out until that read
 * completed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "../site/log_capture.h"
#include "store/internal.h"
#include "store_test.h"

#define G     (64u * 1024) /* the stripe unit of these tests */
#define SHIFT 16u
#define ROW(i) ((uint32_t)(ROWMAP_ROW_BASE + (i)))

struct env {
	struct store_env s;
	struct tsr_io *io;
	char uuid[37];
};

static int setup(void **state)
{
	struct store_env *se;
	struct env *e;

	if (store_env_setup((void **)&se))
		return -1;
	e = calloc(1, sizeof(*e));
	e->s = *se;
	free(se);
	e->io = make_io(TSR_IO_URING, NULL);
	if (e->io == NULL)
		e->io = make_io(TSR_IO_AIO, NULL);
	*state = e;
	return e->io ? 0 : -1;
}

static int teardown(void **state)
{
	struct env *e = *state;

	log_capture_abort(); /* a failed assertion inside a capture */
	tsr_io_destroy(e->io);
	tsr_store_close(e->s.store);
	rm_rf(e->s.dir);
	free(e);
	return 0;
}

/* A chunk volume "c" of chunks granules of G bytes, with a map. */
static void make_chunk_vol(struct env *e, uint64_t chunks)
{
	struct tsr_vol_info info;

	assert_int_equal(tsr_store_vol_create_flags(e->s.store, "c", chunks * G, TSR_VOL_EC_CHUNK,
						    G, &info),
			 0);
	snprintf(e->uuid, sizeof(e->uuid), "%s", info.uuid);
}

/* Set slot[c] = v in the map file of the volume (not open). */
static void set_slot(struct env *e, uint64_t c, uint32_t v)
{
	char path[PATH_MAX];
	int fd;

	vol_file(e->s.dir, e->uuid, "map", path);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, &v, 4, (off_t)(ROWMAP_HDR + c * 4)), 4);
	close(fd);
}

/* len bytes of the volume's file ext at off. */
static void read_file(struct env *e, const char *ext, uint64_t off, void *buf, size_t len)
{
	char path[PATH_MAX];
	int fd;

	vol_file(e->s.dir, e->uuid, ext, path);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, len, (off_t)off), (ssize_t)len);
	close(fd);
}

static bool file_exists(struct env *e, const char *ext)
{
	char path[PATH_MAX];

	vol_file(e->s.dir, e->uuid, ext, path);
	return access(path, F_OK) == 0;
}

/* Chunk c of the volume (written with fill(seed, offset)) is at ext:off. */
static void assert_chunk_at(struct env *e, uint64_t c, uint64_t seed, const char *ext,
			    uint64_t off)
{
	uint8_t *b = malloc(G);

	read_file(e, ext, off, b, G);
	if (!is_filled(b, G, seed, c * G))
		fail_msg("chunk %llu is not at %s offset %llu", (unsigned long long)c, ext,
			 (unsigned long long)off);
	free(b);
}

/* A fresh chunk volume: an identity map with the design's header, .row of
 * R x G zero bytes; a plain volume and a chunk volume without a unit have
 * neither. */
static void test_create_identity(void **state)
{
	struct env *e = *state;
	uint8_t hdr[ROWMAP_HDR], want[ROWMAP_HDR];
	struct tsr_vol_info info;
	struct stat st;
	char path[PATH_MAX];
	struct tsr_svol *v;
	uint8_t *buf = tsr_alloc_aligned(8 * G), *zero = calloc(1, 8 * G);

	make_chunk_vol(e, 8);
	read_file(e, "map", 0, hdr, sizeof(hdr));
	assert_memory_equal(hdr, "TSRM\x01\x00\x10\x00\x08\x00\x00\x00\x00\x00\x00\x00", 16);
	assert_int_equal(hdr[16] | hdr[17] << 8, 32); /* R = C / 8, at least 32 */
	rowmap_hdr_pack(want, SHIFT, 8, 32);
	assert_memory_equal(hdr, want, sizeof(hdr));
	assert_int_equal(*(uint32_t *)(hdr + 4092), tsr_crc32c(0, hdr, 4092));
	vol_file(e->s.dir, e->uuid, "row", path);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 32ll * G);
	assert_true(st.st_blocks * 512 >= st.st_size); /* written: no allocating write later */

	/* identity: the data lands at home */
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	assert_non_null(v->rowmap);
	fill(buf, 8 * G, 1, 0);
	assert_int_equal(swrite(v, e->io, 0, 8 * G, buf, 0), 0);
	assert_chunk_at(e, 5, 1, "data", 5 * G);
	read_file(e, "row", 0, zero, 8 * G);
	assert_true(is_zero(zero, 8 * G));
	assert_int_equal(rowmap_free_slots(v->rowmap), 32);
	tsr_svol_put(v);

	/* R: C / 8 between 32 and the design's 32 MiB / G */
	assert_int_equal(rowmap_reserve_slots(SHIFT, 100), 32);
	assert_int_equal(rowmap_reserve_slots(SHIFT, 1000), 125);
	assert_int_equal(rowmap_reserve_slots(SHIFT, 4096), 512);
	assert_int_equal(rowmap_reserve_slots(SHIFT, 1ull << 30), 512);
	assert_int_equal(rowmap_reserve_slots(20, 1000), 32);
	assert_int_equal(rowmap_reserve_slots(12, 1ull << 20), 8192);
	assert_int_equal(tsr_store_vol_create_flags(e->s.store, "big", 4096ull * G,
						    TSR_VOL_EC_CHUNK, G, &info),
			 0);
	vol_file(e->s.dir, info.uuid, "row", path);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 512ll * G); /* 32 MiB */

	/* no unit, or not a chunk: no map */
	assert_int_equal(tsr_store_vol_create_flags(e->s.store, "n", G, TSR_VOL_EC_CHUNK, 0, &info),
			 0);
	vol_file(e->s.dir, info.uuid, "map", path);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(tsr_store_vol_create_flags(e->s.store, "p", G, 0, G, NULL), -EINVAL);
	assert_int_equal(tsr_store_vol_create_flags(e->s.store, "p", G, TSR_VOL_EC_CHUNK, 3 * BS,
						    NULL),
			 -EINVAL);
	/* the unit survives a reopen of the store (catalogue column unit) */
	tsr_store_close(e->s.store);
	assert_int_equal(tsr_store_open(e->s.dir, &(struct tsr_store_opts){0}, &e->s.store), 0);
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	assert_non_null(v->rowmap);
	assert_int_equal(v->rowmap->shift, SHIFT);
	assert_int_equal(sread(v, e->io, 0, 8 * G, buf), 0);
	assert_true(is_filled(buf, 8 * G, 1, 0));
	tsr_svol_put(v);
	assert_int_equal(tsr_store_vol_open(e->s.store, "n", &v), 0);
	assert_null(v->rowmap);
	tsr_svol_put(v);
	free(zero);
	free(buf);
}

/*
 * A permutation set by hand: chunks 0 and 1 swapped, 2 and 3 in .row slots 5
 * and 6 (contiguous: one piece), 4 in chunk 2's home, 5-7 at home.  Writes
 * and reads land there; the free slots are homes 3 and 4 and the other 30
 * slots of .row.
 */
static void test_permutation(void **state)
{
	struct env *e = *state;
	struct svol_piece p[8];
	uint8_t *buf = tsr_alloc_aligned(8 * G);
	struct tsr_svol *v;

	make_chunk_vol(e, 8);
	set_slot(e, 0, 1 + 1);
	set_slot(e, 1, 0 + 1);
	set_slot(e, 2, ROW(5) + 1);
	set_slot(e, 3, ROW(6) + 1);
	set_slot(e, 4, 2 + 1);
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	assert_int_equal(rowmap_free_slots(v->rowmap), 2 + 30);

	/* pieces: home 1 | home 0 | row 5-6 | home 2 | home 5-7 */
	assert_int_equal(svol_map(v, 0, 8 * G, p, 8), 5);
	assert_int_equal(p[0].fd_offset, 1 * G);
	assert_int_equal(p[1].fd_offset, 0);
	assert_int_equal(p[2].fd, v->rowmap->row_fd);
	assert_int_equal(p[2].fd_offset, 5 * G);
	assert_int_equal(p[2].len, 2 * G);
	assert_int_equal(p[3].fd_offset, 2 * G);
	assert_int_equal(p[4].fd_offset, 5 * G);
	assert_int_equal(p[4].len, 3 * G);
	/* a range inside one granule, and one that starts inside a merged run */
	assert_int_equal(svol_map(v, 3 * G + BS, BS, p, 8), 1);
	assert_int_equal(p[0].fd_offset, 6 * G + BS);
	assert_int_equal(svol_map(v, 2 * G + BS, G, p, 8), 1);
	assert_int_equal(p[0].fd_offset, 5 * G + BS);
	/* too few pieces: a prefix */
	assert_int_equal(svol_map(v, 0, 8 * G, p, 2), 2);
	assert_int_equal(p[1].vol_offset + p[1].len, 2 * G);

	fill(buf, 8 * G, 2, 0);
	assert_int_equal(swrite(v, e->io, 0, 8 * G, buf, TSR_WRITE_FUA), 0);
	assert_chunk_at(e, 0, 2, "data", 1 * G);
	assert_chunk_at(e, 1, 2, "data", 0);
	assert_chunk_at(e, 2, 2, "row", 5 * G);
	assert_chunk_at(e, 3, 2, "row", 6 * G);
	assert_chunk_at(e, 4, 2, "data", 2 * G);
	assert_chunk_at(e, 7, 2, "data", 7 * G);
	memset(buf, 0, 8 * G);
	assert_int_equal(sread(v, e->io, 0, 8 * G, buf), 0);
	assert_true(is_filled(buf, 8 * G, 2, 0));
	/* a 4 KiB write inside a redirected granule */
	fill(buf, BS, 3, 3 * G + 2 * BS);
	assert_int_equal(swrite(v, e->io, 3 * G + 2 * BS, BS, buf, 0), 0);
	read_file(e, "row", 6 * G + 2 * BS, buf + BS, BS);
	assert_true(is_filled(buf + BS, BS, 3, 3 * G + 2 * BS));
	tsr_svol_put(v);

	/* the same map after the store's reopen, with the page cache reads */
	tsr_store_close(e->s.store);
	assert_int_equal(tsr_store_open(e->s.dir, &(struct tsr_store_opts){0}, &e->s.store), 0);
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	assert_int_equal(sread(v, e->io, 2 * G, 2 * G, buf), 0);
	assert_true(is_filled(buf, G, 2, 2 * G));
	assert_true(is_filled(buf + G, 2 * BS, 2, 3 * G));
	assert_true(is_filled(buf + G + 2 * BS, BS, 3, 3 * G + 2 * BS));
	tsr_svol_put(v);
	free(buf);
}

/* An identity map of a chunk volume over two 8 TiB segment files (G = 1
 * MiB): contiguous homes still split at the segment's end, and the bytes
 * land in .data and .data.1; a granule moved across the boundary too. */
static void test_segment_boundary(void **state)
{
	struct env *e = *state;
	const uint64_t seg = 1ull << 43, mib = 1u << 20;
	uint8_t *buf = tsr_alloc_aligned(2 * mib);
	struct tsr_vol_info info;
	struct svol_piece p[4];
	struct tsr_svol *v;

	assert_int_equal(tsr_store_vol_create_flags(e->s.store, "c", seg + 2 * mib,
						    TSR_VOL_EC_CHUNK, mib, &info),
			 0);
	snprintf(e->uuid, sizeof(e->uuid), "%s", info.uuid);
	/* chunk 2^23 + 1 (the second of segment 1) lives in chunk 2^23 - 2's home */
	set_slot(e, (seg >> 20) + 1, (uint32_t)((seg >> 20) - 2) + 1);
	set_slot(e, (seg >> 20) - 2, (uint32_t)((seg >> 20) + 1) + 1);
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	assert_int_equal(svol_map(v, seg - mib, 2 * mib, p, 4), 2);
	assert_int_equal(p[0].fd_offset, seg - mib);
	assert_int_equal(p[0].len, mib);
	assert_int_equal(p[1].fd_offset, 0);
	assert_true(p[1].fd != p[0].fd);
	fill(buf, 2 * mib, 9, seg - mib);
	assert_int_equal(swrite(v, e->io, seg - mib, 2 * mib, buf, 0), 0);
	read_file(e, "data", seg - mib, buf, BS);
	assert_true(is_filled(buf, BS, 9, seg - mib));
	read_file(e, "data.1", 0, buf, BS);
	assert_true(is_filled(buf, BS, 9, seg));
	fill(buf, mib, 10, seg + mib);
	assert_int_equal(swrite(v, e->io, seg + mib, mib, buf, 0), 0);
	read_file(e, "data", seg - 2 * mib, buf, BS);
	assert_true(is_filled(buf, BS, 10, seg + mib));
	tsr_svol_put(v);
	free(buf);
}

/* Every granule elsewhere (reversed: no two contiguous): 16 pieces, more
 * than an op's own iovecs; write, read, trim and block_status cover them all. */
static void test_many_pieces(void **state)
{
	struct env *e = *state;
	uint8_t *buf = tsr_alloc_aligned(16 * G);
	struct tsr_extent ext[32];
	struct svol_piece p[16];
	struct tsr_svol *v;
	size_t n;
	uint64_t c;

	make_chunk_vol(e, 16);
	for (c = 0; c < 16; c++)
		set_slot(e, c, (uint32_t)(15 - c) + 1);
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	assert_int_equal(svol_map(v, 0, 16 * G, p, 16), 16);
	fill(buf, 16 * G, 4, 0);
	assert_int_equal(swrite(v, e->io, 0, 16 * G, buf, 0), 0);
	for (c = 0; c < 16; c++)
		assert_chunk_at(e, c, 4, "data", (15 - c) * G);
	memset(buf, 0, 16 * G);
	assert_int_equal(sread(v, e->io, 0, 16 * G, buf), 0);
	assert_true(is_filled(buf, 16 * G, 4, 0));
	/* trim chunks 1..2 punches homes 14 and 13: they read as zeros */
	assert_int_equal(strim(v, e->io, G, 2 * G), 0);
	read_file(e, "data", 13 * G, buf, 2 * G);
	assert_true(is_zero(buf, 2 * G));
	assert_chunk_at(e, 0, 4, "data", 15 * G);
	assert_chunk_at(e, 3, 4, "data", 12 * G);
	assert_int_equal(tsr_svol_block_status(v, 0, 16 * G, ext, 32, &n), 0);
	assert_true(n >= 3);
	assert_int_equal(ext[0].offset, 0);
	assert_int_equal(ext[0].length, G);
	assert_int_equal(ext[0].flags, 0);
	assert_int_equal(ext[1].offset, G);
	assert_int_equal(ext[1].length, 2 * G);
	assert_true(ext[1].flags & TSR_EXTENT_HOLE);
	tsr_svol_put(v);
	free(buf);
}

/* Flush syncs the map and .row besides the data and crc files: 4 fsyncs
 * for one segment (counted by a fault injector that delays each by 0 ms). */
static void test_flush_syncs_map(void **state)
{
	struct env *e = *state;
	struct tsr_io *io = make_io(TSR_IO_URING, "fsync:1+:delay=0");
	struct tsr_svol *v;

	if (io == NULL)
		io = make_io(TSR_IO_AIO, "fsync:1+:delay=0");
	assert_non_null(io);
	make_chunk_vol(e, 4);
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	assert_int_equal(sflush(v, io), 0);
	assert_int_equal(tsr_io_fault_count(io), 4); /* data, .row, .map, .crc */
	tsr_svol_put(v);
	tsr_io_destroy(io);
}

/* Grow: the hand-set entries stay, the new chunks are at home, the header
 * says the new C (open volume, then closed). */
static void test_grow(void **state)
{
	struct env *e = *state;
	uint8_t hdr[ROWMAP_HDR], want[ROWMAP_HDR];
	uint8_t *buf = tsr_alloc_aligned(4 * G);
	struct tsr_svol *v;

	make_chunk_vol(e, 4);
	set_slot(e, 1, ROW(0) + 1);
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	assert_int_equal(tsr_store_vol_resize(e->s.store, "c", 6 * G), 0);
	read_file(e, "map", 0, hdr, sizeof(hdr));
	rowmap_hdr_pack(want, SHIFT, 6, 32); /* R stays as created */
	assert_memory_equal(hdr, want, sizeof(hdr));
	fill(buf, 4 * G, 5, 2 * G);
	assert_int_equal(swrite(v, e->io, 2 * G, 4 * G, buf, 0), 0);
	assert_chunk_at(e, 5, 5, "data", 5 * G);
	fill(buf, G, 5, G);
	assert_int_equal(swrite(v, e->io, G, G, buf, 0), 0);
	assert_chunk_at(e, 1, 5, "row", 0);
	/* home 1 is free; the new homes 4 and 5 are not */
	assert_int_equal(rowmap_free_slots(v->rowmap), 1 + 31);
	tsr_svol_put(v);

	/* closed: grown through a map opened for it */
	tsr_store_close(e->s.store);
	assert_int_equal(tsr_store_open(e->s.dir, &(struct tsr_store_opts){0}, &e->s.store), 0);
	assert_int_equal(tsr_store_vol_resize(e->s.store, "c", 9 * G), 0);
	read_file(e, "map", 0, hdr, sizeof(hdr));
	rowmap_hdr_pack(want, SHIFT, 9, 32);
	assert_memory_equal(hdr, want, sizeof(hdr));
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	assert_int_equal(sread(v, e->io, G, G, buf), 0);
	assert_true(is_filled(buf, G, 5, G));
	fill(buf, G, 6, 8 * G);
	assert_int_equal(swrite(v, e->io, 8 * G, G, buf, 0), 0);
	assert_chunk_at(e, 8, 6, "data", 8 * G);
	tsr_svol_put(v);
	free(buf);
}

/* Delete removes .map and .row with the volume. */
static void test_delete(void **state)
{
	struct env *e = *state;

	make_chunk_vol(e, 2);
	assert_true(file_exists(e, "map"));
	assert_true(file_exists(e, "row"));
	assert_int_equal(tsr_store_vol_delete(e->s.store, "c"), 0);
	assert_false(file_exists(e, "map"));
	assert_false(file_exists(e, "row"));
	assert_false(file_exists(e, "data"));
}

/* A chunk copy of 2^31 granules or more (8 TiB at G = 4 KiB: a 4+2 volume
 * of 32 TiB) is more than a map holds: it is made without one, as before
 * maps, never refused (sparse: its files hold no data). */
static void test_too_large_for_map(void **state)
{
	struct env *e = *state;
	struct tsr_vol_info info;
	struct tsr_svol *v;

	assert_int_equal(tsr_store_vol_create_flags(e->s.store, "c", 1ull << 43,
						    TSR_VOL_EC_CHUNK, 4096, &info),
			 0);
	snprintf(e->uuid, sizeof(e->uuid), "%s", info.uuid);
	assert_false(file_exists(e, "map"));
	assert_false(file_exists(e, "row"));
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	assert_null(v->rowmap);
	tsr_svol_put(v);
}

/*
 * A chunk copy with a map grown from below to above 2^31 granules (G = 4
 * KiB: 8 TiB, also the 8 TiB segment boundary), as before maps: the map
 * covers the first 2^31 - 1 chunks (its header says so), the rest are at
 * home without a map word.  A write across the map's end lands at home in
 * .data and .data.1 (read directly) and reads back; no home past the map is
 * ever a free slot; a flip there is refused; a second grow leaves the map.
 * Sparse: the map file's 8 GiB are allocated (fallocate), not written.
 */
static void test_grow_past_map(void **state)
{
	struct env *e = *state;
	const uint64_t g = 4096, end = ROWMAP_ROW_BASE - 1; /* the first chunk past the map */
	uint8_t hdr[ROWMAP_HDR], want[ROWMAP_HDR];
	uint8_t *buf = tsr_alloc_aligned(3 * g);
	uint32_t row0 = ROW(0);
	struct tsr_vol_info info;
	struct svol_piece p[4];
	struct tsr_svol *v;

	assert_int_equal(tsr_store_vol_create_flags(e->s.store, "c", 64 * g, TSR_VOL_EC_CHUNK, g,
						    &info),
			 0);
	snprintf(e->uuid, sizeof(e->uuid), "%s", info.uuid);
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	assert_int_equal(tsr_store_vol_resize(e->s.store, "c", (ROWMAP_ROW_BASE + 2) * g), 0);
	read_file(e, "map", 0, hdr, sizeof(hdr));
	rowmap_hdr_pack(want, 12, end, 32); /* R stays as created */
	assert_memory_equal(hdr, want, sizeof(hdr));

	/* chunk 2^31 - 2 (mapped), 2^31 - 1 (past the map), 2^31 (segment 1) */
	assert_int_equal(svol_map(v, (end - 1) * g, 3 * g, p, 4), 2);
	assert_int_equal(p[0].fd_offset, (end - 1) * g);
	assert_int_equal(p[0].len, 2 * g);
	assert_int_equal(p[1].fd_offset, 0);
	assert_int_equal(p[1].len, g);
	fill(buf, 3 * g, 7, (end - 1) * g);
	assert_int_equal(swrite(v, e->io, (end - 1) * g, 3 * g, buf, 0), 0);
	memset(buf, 0, 3 * g);
	assert_int_equal(sread(v, e->io, (end - 1) * g, 3 * g, buf), 0);
	assert_true(is_filled(buf, 3 * g, 7, (end - 1) * g));
	read_file(e, "data", (end - 1) * g, buf, 2 * g);
	assert_true(is_filled(buf, 2 * g, 7, (end - 1) * g));
	read_file(e, "data.1", 0, buf, g);
	assert_true(is_filled(buf, g, 7, ROWMAP_ROW_BASE * g));
	read_file(e, "row", 0, buf, g);
	assert_true(is_zero(buf, g));

	/* the free slots are .row's: no home, and none past the map */
	assert_int_equal(rowmap_free_slots(v->rowmap), 32);
	assert_int_equal(rowmap_flip(v->rowmap, end, 1, NULL, &row0), -EIO);
	assert_int_equal(rowmap_flip(v->rowmap, end - 1, 2, NULL, (uint32_t[]){row0, row0 + 1}),
			 -EIO);
	assert_int_equal(rowmap_free_slots(v->rowmap), 32);

	/* grown again: the map is already as large as it gets (open, not
	 * closed: an open parses all 8 GiB of map words, ~50 s on this VM) */
	assert_int_equal(tsr_store_vol_resize(e->s.store, "c", (ROWMAP_ROW_BASE + 4) * g), 0);
	read_file(e, "map", 0, hdr, sizeof(hdr));
	assert_memory_equal(hdr, want, sizeof(hdr));
	tsr_svol_put(v);
	free(buf);
}

/*
 * R's floor is 2 MiB of .row when 32 slots are more (G > 64 KiB): a chunk
 * copy of 12 MiB at G = 1 MiB (a 48 MiB 4+2 volume) has a .row of 2 slots,
 * not 32 (32 MiB); it opens with 2 free slots.  A map made by the rule
 * before (R = 32 at 1 MiB) still opens; R below the floor does not.
 */
static void test_small_row(void **state)
{
	struct env *e = *state;
	const uint64_t mib = 1u << 20;
	uint8_t hdr[ROWMAP_HDR];
	struct tsr_vol_info info;
	char path[PATH_MAX];
	struct tsr_svol *v;
	struct stat st;
	int fd;

	assert_int_equal(tsr_store_vol_create_flags(e->s.store, "c", 12 * mib, TSR_VOL_EC_CHUNK,
						    (uint32_t)mib, &info),
			 0);
	snprintf(e->uuid, sizeof(e->uuid), "%s", info.uuid);
	vol_file(e->s.dir, e->uuid, "row", path);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 2 * mib);
	read_file(e, "map", 0, hdr, sizeof(hdr));
	assert_int_equal(hdr[16] | hdr[17] << 8, 2);
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	assert_int_equal(rowmap_free_slots(v->rowmap), 2);
	tsr_svol_put(v);
	assert_int_equal(rowmap_reserve_slots(20, 12), 2);
	assert_int_equal(rowmap_reserve_slots(20, 1ull << 20), 32);
	assert_int_equal(rowmap_reserve_slots(17, 12), 16);  /* 2 MiB at 128 KiB */
	assert_int_equal(rowmap_reserve_slots(17, 200), 25); /* C / 8 */
	assert_int_equal(rowmap_reserve_slots(12, 12), 32);  /* 32 slots: below 2 MiB */

	/* the rule before: 32 slots at 1 MiB (sparse here: open checks the size) */
	vol_file(e->s.dir, e->uuid, "map", path);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	rowmap_hdr_pack(hdr, 20, 12, 32);
	assert_int_equal(pwrite(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	vol_file(e->s.dir, e->uuid, "row", path);
	assert_int_equal(truncate(path, 32 * mib), 0);
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	assert_int_equal(rowmap_free_slots(v->rowmap), 32);
	tsr_svol_put(v);
	/* below the floor */
	rowmap_hdr_pack(hdr, 20, 12, 1);
	assert_int_equal(pwrite(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	assert_int_equal(truncate(path, mib), 0);
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), -EUCLEAN);
	close(fd);
}

/* A lost .row, then a lost .map: the volume does not open (-EIO) and the
 * log says which file is missing and how to rebuild the copy. */
static void test_lost_files_say_rebuild(void **state)
{
	static const char *const ext[] = {"row", "map"};
	struct env *e = *state;
	char path[PATH_MAX], logpath[PATH_MAX], log[4096];
	struct log_capture lc;
	struct tsr_svol *v;
	unsigned i;

	make_chunk_vol(e, 4);
	snprintf(logpath, sizeof(logpath), "%s/test.log", e->s.dir);
	for (i = 0; i < 2; i++) {
		vol_file(e->s.dir, e->uuid, ext[i], path);
		assert_int_equal(unlink(path), 0);
		log_begin(&lc, logpath);
		assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), -EIO);
		log_end(&lc, log, sizeof(log));
		assert_non_null(strstr(log, path));
		assert_non_null(strstr(log, "missing"));
		assert_non_null(strstr(log, "tessera volume replace-replica"));
	}
}

/* A damaged header, a slot named twice, a slot that does not exist, a
 * short .row: the open fails -EUCLEAN (never a silent identity map). */
static void test_damage_refused(void **state)
{
	struct env *e = *state;
	uint8_t hdr[ROWMAP_HDR];
	char path[PATH_MAX];
	struct tsr_svol *v;
	uint8_t b = 0x11;
	uint32_t crc;
	int fd;

	make_chunk_vol(e, 4);
	vol_file(e->s.dir, e->uuid, "map", path);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, &b, 1, 100), 1); /* in the zero area: hdr_crc fails */
	b = 0;
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), -EUCLEAN);
	assert_int_equal(pwrite(fd, &b, 1, 100), 1);
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	tsr_svol_put(v);
	/* a well-formed header whose reserve is out of 32..32 MiB / G, or
	 * whose granule is not the catalogue's unit */
	rowmap_hdr_pack(hdr, SHIFT, 4, 31);
	assert_int_equal(pwrite(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), -EUCLEAN);
	rowmap_hdr_pack(hdr, SHIFT, 4, 513);
	assert_int_equal(pwrite(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), -EUCLEAN);
	rowmap_hdr_pack(hdr, SHIFT + 1, 4, 32);
	assert_int_equal(pwrite(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), -EUCLEAN);
	rowmap_hdr_pack(hdr, SHIFT, 3, 32); /* fewer chunks than the volume has */
	assert_int_equal(pwrite(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), -EUCLEAN);
	/* a byte of the zero area set, hdr_crc right (a later format's field) */
	rowmap_hdr_pack(hdr, SHIFT, 4, 32);
	hdr[100] = 1;
	crc = htole32(tsr_crc32c(0, hdr, ROWMAP_HDR - 4));
	memcpy(hdr + ROWMAP_HDR - 4, &crc, 4);
	assert_int_equal(pwrite(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), -EUCLEAN);
	/* more chunks than the volume (a grow that crashed before its row): kept */
	rowmap_hdr_pack(hdr, SHIFT, 9, 32);
	assert_int_equal(pwrite(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	tsr_svol_put(v);
	rowmap_hdr_pack(hdr, SHIFT, 4, 32);
	assert_int_equal(pwrite(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	close(fd);

	set_slot(e, 0, 2 + 1); /* chunk 0 in home 2, which chunk 2 holds */
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), -EUCLEAN);
	set_slot(e, 0, 4 + 1); /* home 4: past C */
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), -EUCLEAN);
	set_slot(e, 0, ROW(32) + 1); /* past R */
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), -EUCLEAN);
	set_slot(e, 0, ROW(31) + 1);
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	tsr_svol_put(v);

	vol_file(e->s.dir, e->uuid, "row", path);
	assert_int_equal(truncate(path, 31ll * G), 0);
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), -EUCLEAN);
}

/* A grow rewrites the header in place (chunks at offset 8, hdr_crc at
 * 4092: different 512-byte sectors); a power cut may tear that write.
 * Both tears open (the catalogue's C vouches for the header), the first is
 * rewritten whole; a header torn any other way is still refused. */
static void test_torn_grow_header(void **state)
{
	struct env *e = *state;
	uint8_t old[ROWMAP_HDR], grown[ROWMAP_HDR], torn[ROWMAP_HDR], hdr[ROWMAP_HDR];
	char path[PATH_MAX];
	struct tsr_svol *v;
	int fd;

	make_chunk_vol(e, 4);
	vol_file(e->s.dir, e->uuid, "map", path);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	rowmap_hdr_pack(old, SHIFT, 4, 32);
	rowmap_hdr_pack(grown, SHIFT, 9, 32); /* the grow to 9 chunks that was cut */
	memcpy(torn, grown, 512); /* sector 0 new, hdr_crc old */
	memcpy(torn + 512, old + 512, ROWMAP_HDR - 512);
	assert_int_equal(pwrite(fd, torn, sizeof(torn), 0), (ssize_t)sizeof(torn));
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	tsr_svol_put(v);
	read_file(e, "map", 0, hdr, sizeof(hdr));
	assert_memory_equal(hdr, grown, sizeof(hdr)); /* rewritten whole */
	memcpy(torn, old, 512); /* sector 0 old, hdr_crc new */
	memcpy(torn + 512, grown + 512, ROWMAP_HDR - 512);
	assert_int_equal(pwrite(fd, torn, sizeof(torn), 0), (ssize_t)sizeof(torn));
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	tsr_svol_put(v);
	/* chunks 5 with the hdr_crc of 9: no tear of a grow explains it */
	rowmap_hdr_pack(torn, SHIFT, 5, 32);
	memcpy(torn + 512, grown + 512, ROWMAP_HDR - 512);
	assert_int_equal(pwrite(fd, torn, sizeof(torn), 0), (ssize_t)sizeof(torn));
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), -EUCLEAN);
	/* C right but R 33 (hdr_crc of 32): .row's size refuses it, kept as is */
	rowmap_hdr_pack(torn, SHIFT, 4, 33);
	memcpy(torn + 512, old + 512, ROWMAP_HDR - 512);
	assert_int_equal(pwrite(fd, torn, sizeof(torn), 0), (ssize_t)sizeof(torn));
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), -EUCLEAN);
	read_file(e, "map", 0, hdr, sizeof(hdr));
	assert_memory_equal(hdr, torn, sizeof(hdr));
	close(fd);
}

/* Next-fit: a stream of allocations gets contiguous slots (here .row's,
 * the only free ones of an identity map), and wraps past the end. */
static void test_alloc_stream(void **state)
{
	struct env *e = *state;
	uint32_t s[16], i, k;
	struct tsr_svol *v;

	make_chunk_vol(e, 4);
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	for (k = 0; k < 4; k++) {
		assert_int_equal(rowmap_alloc(v->rowmap, 4, s + 4 * k), 0);
		for (i = 0; i < 4; i++)
			assert_int_equal(s[4 * k + i], ROW(4 * k + i));
	}
	/* give 0..15 back: free only after two read epochs, none in flight here */
	assert_int_equal(rowmap_free(v->rowmap, s, 16), 0);
	assert_int_equal(rowmap_free_slots(v->rowmap), 32);
	/* the cursor goes on after 15, not back to 0 */
	assert_int_equal(rowmap_alloc(v->rowmap, 2, s), 0);
	assert_int_equal(s[0], ROW(16));
	assert_int_equal(s[1], ROW(17));
	/* more than is free: nothing taken */
	assert_int_equal(rowmap_alloc(v->rowmap, 31, s), -ENOSPC);
	assert_int_equal(rowmap_free_slots(v->rowmap), 30);
	tsr_svol_put(v);
}

/* A second io, whose completions run only when the test polls it. */
static struct tsr_io *second_io(void)
{
	struct tsr_io *io = make_io(TSR_IO_URING, NULL);

	if (io == NULL)
		io = make_io(TSR_IO_AIO, NULL);
	assert_non_null(io);
	return io;
}

/* Volume "c" of 2 chunks, chunk 0 in .row slot 0 holding fill(seed). */
static struct tsr_svol *chunk0_in_row0(struct env *e, uint64_t seed)
{
	uint8_t *buf = tsr_alloc_aligned(G);
	struct tsr_svol *v;

	make_chunk_vol(e, 2);
	set_slot(e, 0, ROW(0) + 1);
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	fill(buf, G, seed, 0);
	assert_int_equal(swrite(v, e->io, 0, G, buf, 0), 0);
	free(buf);
	return v;
}

/* Step 3's commit and release of chunk 0, by hand: flipped to a new slot,
 * .row slot 0 freed, which must wait in the limbo (the free count does not
 * grow).  The free count before the free. */
static uint64_t flip_chunk0_free_row0(struct tsr_svol *v)
{
	uint32_t s, old = ROW(0);
	uint64_t nfree;

	assert_int_equal(rowmap_alloc(v->rowmap, 1, &s), 0);
	assert_int_not_equal(s, old);
	assert_int_equal(rowmap_flip(v->rowmap, 0, 1, &old, &s), 0);
	nfree = rowmap_free_slots(v->rowmap);
	assert_int_equal(rowmap_free(v->rowmap, &old, 1), 0);
	assert_int_equal(rowmap_free_slots(v->rowmap), nfree); /* in the limbo */
	return nfree;
}

/*
 * A slot freed while a read that mapped it is in flight is not handed out
 * until that read completed: chunk 0 lives in .row slot 0; a read of it is
 * issued on a second io and not polled (in flight); chunk 0 is "flipped" to
 * another slot as step 3's commit will, and slot 0 freed.  Every slot
 * allocated meanwhile is another one; once the read completed (with the
 * old bytes) slot 0 is the one left to hand out.
 */
static void test_freed_slot_waits_for_read(void **state)
{
	struct env *e = *state;
	struct tsr_io *io2 = second_io();
	uint8_t *rbuf = tsr_alloc_aligned(G);
	uint32_t *all = malloc(512 * sizeof(*all)), s;
	struct tsr_svol *v = chunk0_in_row0(e, 7);
	struct done d = {0};
	uint64_t nfree, i;

	assert_int_equal(tsr_svol_read(v, io2, 0, G, rbuf, done_cb, &d), 0);
	assert_true(tsr_io_submit(io2) >= 0);
	nfree = flip_chunk0_free_row0(v);
	assert_int_equal(rowmap_alloc(v->rowmap, (uint32_t)nfree, all), 0);
	for (i = 0; i < nfree; i++)
		assert_int_not_equal(all[i], ROW(0));
	assert_int_equal(rowmap_alloc(v->rowmap, 1, &s), -ENOSPC);

	assert_int_equal(wait_done(io2, &d), 0);
	assert_true(is_filled(rbuf, G, 7, 0)); /* the old slot's bytes */
	assert_int_equal(rowmap_free_slots(v->rowmap), 1);
	assert_int_equal(rowmap_alloc(v->rowmap, 1, &s), 0);
	assert_int_equal(s, ROW(0));
	tsr_svol_put(v);
	tsr_io_destroy(io2);
	free(all);
	free(rbuf);
}

/* The same for a snapshot image's read of blocks still in the head
 * (image.c): its head's slots stay until the read completed. */
static void test_snapshot_read_holds_slot(void **state)
{
	struct env *e = *state;
	struct tsr_io *io2 = second_io();
	uint8_t *rbuf = tsr_alloc_aligned(G);
	struct tsr_svol *v = chunk0_in_row0(e, 8), *snap;
	struct done d = {0};
	uint64_t nfree;

	assert_int_equal(tsr_store_snap_create(e->s.store, "c", "s", NULL), 0);
	assert_int_equal(tsr_store_snap_open(e->s.store, "c", "s", &snap), 0);
	assert_int_equal(tsr_svol_read(snap, io2, 0, G, rbuf, done_cb, &d), 0);
	assert_true(tsr_io_submit(io2) >= 0);
	nfree = flip_chunk0_free_row0(v);
	assert_int_equal(wait_done(io2, &d), 0);
	assert_true(is_filled(rbuf, G, 8, 0));
	assert_int_equal(rowmap_free_slots(v->rowmap), nfree + 1);
	tsr_svol_put(snap);
	tsr_svol_put(v);
	tsr_io_destroy(io2);
	free(rbuf);
}

/* rowmap_slot, rowmap_flip (checked: a chunk not where the caller thinks
 * is -EIO with nothing changed; home stored as 0) and rowmap_take. */
static void test_flip_and_take(void **state)
{
	struct env *e = *state;
	uint32_t old[2] = {2, ROW(3)}, to[2] = {ROW(7), 3}, w;
	struct tsr_svol *v;

	make_chunk_vol(e, 4);
	set_slot(e, 3, ROW(3) + 1);
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	assert_int_equal(rowmap_slot(v->rowmap, 2), 2);
	assert_int_equal(rowmap_slot(v->rowmap, 3), ROW(3));
	/* step 3's open reserves the new slots of staged entries */
	assert_int_equal(rowmap_take(v->rowmap, &to[0], 1), 0);
	assert_int_equal(rowmap_take(v->rowmap, &to[0], 1), -EEXIST);
	assert_int_equal(rowmap_take(v->rowmap, (uint32_t[]){ROW(8), ROW(8)}, 2), -EEXIST);
	assert_int_equal(rowmap_take(v->rowmap, (uint32_t[]){4}, 1), -EEXIST); /* past C */
	assert_int_equal(rowmap_free_slots(v->rowmap), 1 + 30); /* home 3; not ROW(3), ROW(7) */
	/* a wrong old slot: nothing flipped */
	assert_int_equal(rowmap_flip(v->rowmap, 2, 2, (uint32_t[]){2, ROW(4)}, to), -EIO);
	assert_int_equal(rowmap_slot(v->rowmap, 2), 2);
	assert_int_equal(rowmap_flip(v->rowmap, 2, 2, old, to), 0);
	assert_int_equal(rowmap_slot(v->rowmap, 2), ROW(7));
	assert_int_equal(rowmap_slot(v->rowmap, 3), 3);
	read_file(e, "map", ROWMAP_HDR + 2 * 4, &w, 4);
	assert_int_equal(w, ROW(7) + 1);
	read_file(e, "map", ROWMAP_HDR + 3 * 4, &w, 4);
	assert_int_equal(w, 0); /* home */
	tsr_svol_put(v);
	/* reopened: the flipped map, the free slots rebuilt from it */
	assert_int_equal(tsr_store_vol_open(e->s.store, "c", &v), 0);
	assert_int_equal(rowmap_slot(v->rowmap, 2), ROW(7));
	assert_int_equal(rowmap_free_slots(v->rowmap), 1 + 31); /* home 2, and ROW(3) */
	tsr_svol_put(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_identity, setup, teardown),
		cmocka_unit_test_setup_teardown(test_permutation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_pieces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segment_boundary, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flush_syncs_map, setup, teardown),
		cmocka_unit_test_setup_teardown(test_grow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_large_for_map, setup, teardown),
		cmocka_unit_test_setup_teardown(test_grow_past_map, setup, teardown),
		cmocka_unit_test_setup_teardown(test_small_row, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lost_files_say_rebuild, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damage_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_grow_header, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alloc_stream, setup, teardown),
		cmocka_unit_test_setup_teardown(test_freed_slot_waits_for_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_read_holds_slot, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flip_and_take, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
