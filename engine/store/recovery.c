/*
 * Crash recovery of one volume, at store open, before any I/O: for every
 * 1 MiB region whose dirty bit is set (blockmeta.c), read the region
 * (synchronous pread) and, block by block:
 *   crc(data) == cur or prev  ->  entry = {that, that} (normalized);
 *   neither                   ->  genuinely corrupt: logged and left as it is,
 *                                 so reads of the block keep failing with EIO.
 * Then the crc table is synced and the bitmap cleared.  A region that cannot
 * be read keeps the whole bitmap (the next open tries again).
 *
 * Why: after a crash an entry can be {new, old} while the disk holds old (the
 * data write never happened).  Left so, the next write would store
 * {newer, new} and a crash during it would make the block unreadable.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/internal.h"

#define REGION_SIZE (1u << STORE_REGION_SHIFT)

static int read_region(struct tsr_svol *svol, uint64_t offset, uint64_t len, uint8_t *buf)
{
	struct svol_piece p[2];
	uint64_t at = offset, left = len;
	int i, n;

	while (left) {
		n = svol_map(svol, at, left, p, 2);
		for (i = 0; i < n; i++) {
			uint64_t done = 0;

			at += p[i].len;
			left -= p[i].len;
			while (done < p[i].len) {
				ssize_t r = pread(p[i].fd, buf + (p[i].vol_offset - offset) + done,
						  p[i].len - done, (off_t)(p[i].fd_offset + done));
				if (r <= 0) {
					int ret = r < 0 ? -errno : -EIO;

					tsr_error("recovery: volume %s: read region at %llu: %s",
						  svol->name, (unsigned long long)offset,
						  strerror(-ret));
					return ret;
				}
				done += (uint64_t)r;
			}
		}
	}
	return 0;
}

static void fix_region(struct tsr_svol *svol, uint64_t offset, uint64_t len, const uint8_t *buf,
		       struct recovery_stats *st)
{
	uint64_t *map = blockmeta_entries(&svol->meta);
	uint64_t first = offset >> STORE_BLOCK_SHIFT, i, nblk = len >> STORE_BLOCK_SHIFT;
	uint32_t z = blockmeta_zero_crc();

	for (i = 0; i < nblk; i++) {
		uint32_t c = blockmeta_block_crc(buf + (i << STORE_BLOCK_SHIFT));
		uint64_t e = entry_load(&map[first + i]);

		if (c == entry_cur(e) || c == entry_prev(e)) {
			if (entry_cur(e) != entry_prev(e)) {
				entry_store(&map[first + i], entry_make(c, c));
				st->fixed++;
			}
			continue;
		}
		st->corrupt++;
		tsr_error("recovery: volume %s block %llu: data matches neither CRC (stored "
			  "%08x/%08x, computed %08x); reads of it will fail with EIO",
			  svol->name, (unsigned long long)(first + i), entry_cur(e) ^ z,
			  entry_prev(e) ^ z, c ^ z);
	}
}

int recovery_run(struct tsr_svol *svol, struct recovery_stats *st)
{
	uint64_t size = atomic_load(&svol->size);
	uint64_t regions = (size + REGION_SIZE - 1) >> STORE_REGION_SHIFT, r;
	const uint8_t *bits = svol->meta.dirty_map;
	uint8_t *buf = NULL;
	int ret = 0;

	for (r = 0; r < regions; r++) {
		uint64_t off, len;

		if ((r % 64) == 0 && r + 64 <= regions) {
			uint64_t w;

			memcpy(&w, bits + r / 8, sizeof(w));
			if (w == 0) { /* skip 64 clean regions at once */
				r += 63;
				continue;
			}
		}
		if (!(bits[r / 8] & (1u << (r % 8))))
			continue;
		if (buf == NULL) {
			buf = tsr_alloc_aligned(REGION_SIZE);
			if (buf == NULL)
				return -ENOMEM;
		}
		off = r << STORE_REGION_SHIFT;
		len = size - off < REGION_SIZE ? size - off : REGION_SIZE;
		st->regions++;
		ret = read_region(svol, off, len, buf);
		if (ret)
			break;
		fix_region(svol, off, len, buf, st);
	}
	tsr_free_aligned(buf);
	if (st->regions == 0 && ret == 0)
		return 0;
	if (ret == 0)
		ret = blockmeta_sync(&svol->meta);
	if (ret == 0)
		ret = blockmeta_clear_dirty(&svol->meta, size);
	tsr_info("recovery: volume %s: %llu dirty regions scanned, %llu blocks fixed, %llu "
		 "corrupt%s",
		 svol->name, (unsigned long long)st->regions, (unsigned long long)st->fixed,
		 (unsigned long long)st->corrupt,
		 ret ? "; the bitmap is kept for the next open" : "");
	return ret;
}
