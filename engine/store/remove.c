/*
 * Removing the files of a deleted volume or snapshot layer, once its
 * catalogue row is gone (snap.c drop_volume and reap_files, store.c
 * remove_leftovers at open, the reaper thread of spare.c).
 *
 * An unlink costs the file's extents, not its bytes: the file system frees
 * them one by one, and ext4 without a journal mounted with discard (the test
 * machines) issues one synchronous discard per extent inside the unlink
 * (ext4_free_blocks -> blkdev_issue_discard -> submit_bio_wait).  The head
 * of test-snapshot-cli's 480 MiB volume, written by 60000 scattered 4 KiB
 * writes, holds 60000 extents: its unlink alone took 18-41 s at load 2-4
 * (52 s at load 14.7 in session 21), inside `volume delete`, with
 * store->lock and the admin loop held all along.  Hence:
 *
 * - store_remove_deleted: the files of a uuid that hold at most
 *   STORE_REMOVE_PIECE extents in all (counted with FIEMAP, which stops
 *   counting past that) are removed in the call, as before: a delete on a
 *   full file system still frees its space before it answers.  Larger ones
 *   go to the store's reaper thread (spare.c, started if need be) and the
 *   call returns: their row is gone already, so nothing can open, list or
 *   name them any more; a volume made under the same name has a new uuid.
 * - store_remove_pieces (the reaper, for those queued that way: a volume's,
 *   a leftover's): a file of more than STORE_REMOVE_PIECE extents is cut
 *   down from its end, at most STORE_REMOVE_PIECE extents per ftruncate,
 *   then closed and unlinked.  The total work is the unlink's (measured:
 *   spare.c); the pieces only let a store close stop between two of them
 *   (spare_stop gives those removals REAP_CLOSE_MS) instead of waiting up to
 *   a minute for one unlink, which no signal interrupts.  The file keeps its
 *   name while it is cut: a file unlinked while still open, lost at a power
 *   loss, would be an orphan that ext4 without a journal leaves to fsck; a
 *   named file without a row is removed by the next open.  A deleted
 *   layer's files queued by spare_reap are unlinked whole, as before.
 *
 * Crash points (process crash or power loss), every one after the commit
 * that deleted the rows: the files are files without a row, a file perhaps
 * shorter than it was (cut pieces) or gone; the next open's remove_leftovers
 * removes them, the large ones again through the reaper.  A store close that
 * stopped the reaper leaves the same state (and logs what it left).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "store/internal.h"

/* Extents per piece: ~0.1 s of discards on a quiet test machine, ~1 s at
 * load 14. */
#define STORE_REMOVE_PIECE 1024u

/* A file system with less free space than this keeps every removal in the
 * call (space_short): STORE_REMOVE_SPACE_PCT % of its size, at most
 * STORE_REMOVE_SPACE_MAX. */
#define STORE_REMOVE_SPACE_PCT 5u
#define STORE_REMOVE_SPACE_MAX (16ull << 30)

_Atomic unsigned store_test_remove_piece;
_Atomic uint64_t store_test_remove_space_min;
_Atomic unsigned store_test_remove_cuts;
_Atomic unsigned store_test_removes_queued;

unsigned store_remove_piece(void)
{
	unsigned t = atomic_load(&store_test_remove_piece);

	return t ? t : STORE_REMOVE_PIECE;
}

static const char *const meta_exts[] = {"crc", "dirty", "present", "stage", "map", "row"};

/* Path of the k-th file a uuid may have (data segments, then the metadata
 * files); false past the last. */
static bool file_path(const struct tsr_store *store, const char *uuid, uint64_t size, unsigned k,
		      char *path)
{
	unsigned nseg = (unsigned)((size + STORE_SEG_SIZE - 1) >> STORE_SEG_SHIFT);

	if (nseg == 0)
		nseg = 1;
	if (k < nseg) {
		store_seg_path(store, uuid, k, path);
		return true;
	}
	k -= nseg;
	if (k >= sizeof(meta_exts) / sizeof(meta_exts[0]))
		return false;
	store_meta_path(store, uuid, meta_exts[k], path);
	return true;
}

void store_remove_files(struct tsr_store *store, const char *uuid, uint64_t size)
{
	char path[PATH_MAX];
	unsigned k;

	for (k = 0; file_path(store, uuid, size, k, path); k++)
		unlink(path);
}

/*
 * Extents of the file at path, counted up to limit + 1 (FIEMAP stops there,
 * so a file of millions costs no more than one of limit + 1).  A file that
 * does not exist, or a file system without FIEMAP (tmpfs), counts 0: it is
 * removed in the call, as before.
 */
static uint64_t file_extents(const char *path, unsigned limit, struct fiemap *fm)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	uint64_t n = 0;

	if (fd < 0)
		return 0;
	memset(fm, 0, sizeof(*fm));
	fm->fm_length = FIEMAP_MAX_OFFSET;
	fm->fm_extent_count = limit + 1;
	if (ioctl(fd, FS_IOC_FIEMAP, fm) == 0)
		n = fm->fm_mapped_extents;
	close(fd);
	return n;
}

static struct fiemap *fiemap_alloc(unsigned extents)
{
	return malloc(sizeof(struct fiemap) + (size_t)extents * sizeof(struct fiemap_extent));
}

/* True when the files of uuid hold more than limit extents in all. */
static bool files_over(const struct tsr_store *store, const char *uuid, uint64_t size,
		       unsigned limit)
{
	struct fiemap *fm = fiemap_alloc(limit + 1);
	char path[PATH_MAX];
	uint64_t total = 0;
	unsigned k;

	if (fm == NULL)
		return false; /* removed in the call, as before */
	for (k = 0; total <= limit && file_path(store, uuid, size, k, path); k++)
		total += file_extents(path, limit, fm);
	free(fm);
	return total > limit;
}

/*
 * True when the store's file system is short of space: less free than
 * STORE_REMOVE_SPACE_PCT % of it, at most STORE_REMOVE_SPACE_MAX (tests:
 * store_test_remove_space_min when non-zero).  A delete there is how the
 * operator gets space back (test-disk-full: "delete a volume"), and every
 * writer of another volume, a create, a resize or a snapshot waits for it:
 * left to the reaper, they would fail with ENOSPC for the seconds to a
 * minute its removal takes.  So the files of what (a uuid, or a leftover's
 * path; op: "delete" or "open") are removed in the call then, whatever their
 * extents cost (logged).
 * statvfs failing: false.
 */
static bool space_short(const struct tsr_store *store, const char *op, const char *what)
{
	uint64_t min = atomic_load(&store_test_remove_space_min), avail;
	struct statvfs vfs;
	char have[32];

	if (statvfs(store->dir, &vfs) < 0)
		return false;
	avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	if (min == 0) {
		min = (uint64_t)vfs.f_blocks * vfs.f_frsize / 100 * STORE_REMOVE_SPACE_PCT;
		if (min > STORE_REMOVE_SPACE_MAX)
			min = STORE_REMOVE_SPACE_MAX;
	}
	if (avail >= min)
		return false;
	tsr_warn("%s: %s: files of many extents removed now, not in the background: the file "
		 "system of %s has only %s free, and its space is wanted back at once",
		 op, what, store->dir, tsr_format_size(avail, have, sizeof(have)));
	return true;
}

bool store_remove_deleted(struct tsr_store *store, const char *uuid, uint64_t size, bool may_stay)
{
	int ret;

	if (files_over(store, uuid, size, store_remove_piece()) &&
	    !space_short(store, "delete", uuid)) {
		ret = spare_reap_start(store, uuid, size, may_stay);
		if (ret == 0) {
			atomic_fetch_add(&store_test_removes_queued, 1);
			return true;
		}
		tsr_warn("delete: %s: no reaper thread (%s): its files are removed now", uuid,
			 strerror(-ret));
	}
	store_remove_files(store, uuid, size);
	return false;
}

void store_remove_leftover(struct tsr_store *store, const char *name)
{
	unsigned limit = store_remove_piece();
	struct fiemap *fm = fiemap_alloc(limit + 1);
	char path[PATH_MAX], uuid[37];
	unsigned long seg = 0;
	bool over;
	int ret;

	snprintf(path, sizeof(path), "%s/volumes/%s", store->dir, name);
	over = fm != NULL && strlen(name) > 36 && name[36] == '.' &&
	       file_extents(path, limit, fm) > limit && !space_short(store, "open", path);
	free(fm);
	if (over) {
		/* "<uuid>.data.N": the reap's size covers segment N (and those below,
		 * leftovers too: the uuid has no row) */
		if (sscanf(name + 36, ".data.%lu", &seg) != 1)
			seg = 0;
		memcpy(uuid, name, 36);
		uuid[36] = 0;
		ret = spare_reap_start(store, uuid, ((uint64_t)seg << STORE_SEG_SHIFT) + 1, true);
		if (ret == 0) {
			atomic_fetch_add(&store_test_removes_queued, 1);
			tsr_warn("open: removing %s in the background: it belongs to no volume "
				 "(left by an interrupted create or delete, or by a close)",
				 path);
			return;
		}
	}
	tsr_warn("open: removing %s: it belongs to no volume (left by an interrupted create or "
		 "delete)",
		 path);
	unlink(path);
}

/*
 * Offsets to cut the file of fd down to, from its end: the logical start of
 * extents 0, piece, 2 * piece, ...  *cuts malloc'd.  0 or -errno (no FIEMAP:
 * the caller unlinks the file whole).
 */
static int cut_points(int fd, unsigned piece, uint64_t **cuts, size_t *ncuts)
{
	struct fiemap *fm = fiemap_alloc(piece);
	uint64_t start = 0, *c = NULL, *grown;
	size_t n = 0, cap = 0;
	int ret = 0;

	if (fm == NULL)
		return -ENOMEM;
	for (;;) {
		const struct fiemap_extent *last;

		memset(fm, 0, sizeof(*fm));
		fm->fm_start = start;
		fm->fm_length = FIEMAP_MAX_OFFSET - start;
		fm->fm_extent_count = piece;
		if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0) {
			ret = -errno;
			break;
		}
		if (fm->fm_mapped_extents == 0)
			break;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			grown = realloc(c, cap * sizeof(*c));
			if (grown == NULL) {
				ret = -ENOMEM;
				break;
			}
			c = grown;
		}
		c[n++] = fm->fm_extents[0].fe_logical;
		last = &fm->fm_extents[fm->fm_mapped_extents - 1];
		if ((last->fe_flags & FIEMAP_EXTENT_LAST) || fm->fm_mapped_extents < piece)
			break;
		start = last->fe_logical + last->fe_length;
	}
	free(fm);
	if (ret) {
		free(c);
		return ret;
	}
	*cuts = c;
	*ncuts = n;
	return 0;
}

/* Cut the file at path down from its end in pieces, then unlink it.  0,
 * -EINTR (stop said so before a cut: the file stays, shorter), -errno. */
static int remove_file_pieces(const char *path, unsigned piece, bool (*stop)(void *arg),
			      void *arg)
{
	uint64_t *cuts = NULL;
	size_t ncuts = 0, i;
	int fd, ret = 0;

	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (cut_points(fd, piece, &cuts, &ncuts) == 0) {
		/* the first piece goes with the unlink */
		for (i = ncuts; ret == 0 && i-- > 1;) {
			if (stop && stop(arg)) {
				ret = -EINTR;
				break;
			}
			if (ftruncate(fd, (off_t)cuts[i]) < 0) {
				ret = -errno;
				tsr_error("delete: cut %s to %llu bytes: %s", path,
					  (unsigned long long)cuts[i], strerror(-ret));
				break;
			}
			atomic_fetch_add(&store_test_remove_cuts, 1);
			store_crash_point();
		}
		free(cuts);
	}
	close(fd);
	if (ret == 0 && unlink(path) < 0 && errno != ENOENT) {
		ret = -errno;
		tsr_error("delete: remove %s: %s", path, strerror(-ret));
	}
	return ret;
}

int store_remove_pieces(struct tsr_store *store, const char *uuid, uint64_t size,
			bool (*stop)(void *arg), void *arg)
{
	unsigned piece = store_remove_piece(), k;
	char path[PATH_MAX];
	int ret = 0, r;

	for (k = 0; file_path(store, uuid, size, k, path); k++) {
		r = remove_file_pieces(path, piece, stop, arg);
		if (r == -EINTR)
			return r;
		if (r && ret == 0)
			ret = r; /* logged; the other files still go */
	}
	return ret;
}
