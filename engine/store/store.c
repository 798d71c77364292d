/*
 * The local store (DESIGN.md layer 5): a data directory holding a catalogue
 * of volumes and, per volume, its data, its per-block CRC table and its
 * write-intent bitmap.  This file: open/close of the store, the control
 * functions (create, delete, resize, info, list) and volume handles.
 * The data path is in data.c, the catalogue in catalog.c, the CRC table and
 * bitmap in blockmeta.c, crash recovery in recovery.c.
 *
 * On-disk layout of DIR:
 *   store.lock               flock'd (LOCK_EX) by the process that has the store open
 *   store.db (+ -wal, -shm)  SQLite catalogue, see catalog.c for the schema and row CRC
 *   clean                    present only while the store is closed cleanly;
 *                            removed (and the removal fsync'd) at open
 *   volumes/<uuid>.data      file mode: bytes [0, 8 TiB) of the volume, sparse,
 *   volumes/<uuid>.data.N    bytes [N*8 TiB, (N+1)*8 TiB) (ext4 caps a file at
 *                            16 TiB - 4 KiB, so large volumes span segment files);
 *                            each exactly min(8 TiB, size - N*8 TiB) bytes
 *   volumes/<uuid>.crc       per-block CRC table, see blockmeta.c
 *   volumes/<uuid>.dirty     write-intent bitmap, see blockmeta.c
 * Device mode (opts->device): the volume's bytes are the extent
 * [dev_offset, dev_offset+size) of the raw device (first fit at create,
 * zeroed at create and on grow); the catalogue, crc and dirty files stay in DIR.
 *
 * Crash safety of control operations: create makes the files, fsyncs the
 * directory, then inserts the row; delete removes the row, then the files;
 * resize extends the files, then updates the row.  Files without a row are
 * leftovers of a crash and are removed at open; a file longer than its row
 * says is harmless (the extension is a hole).
 *
 * Lock policy: store->lock (a mutex) serialises every control function, the
 * open-volume list and svol refcounts, and the growth of an open volume's
 * files and mappings; the one exception is a rollback's data copy, which
 * runs without it (snap.c tsr_store_vol_rollback: the volume's other
 * changing calls answer -EBUSY meanwhile).  The data path never takes it;
 * see internal.h for the rest of the policy.  Control functions block (SQLite, fsync) and belong on
 * the control thread; tsr_svol_put of the last reference flushes the volume
 * and so blocks too.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "store/internal.h"

void store_seg_path(const struct tsr_store *store, const char *uuid, unsigned seg, char *buf)
{
	if (seg == 0)
		snprintf(buf, PATH_MAX, "%s/volumes/%s.data", store->dir, uuid);
	else
		snprintf(buf, PATH_MAX, "%s/volumes/%s.data.%u", store->dir, uuid, seg);
}

void store_meta_path(const struct tsr_store *store, const char *uuid, const char *ext, char *buf)
{
	snprintf(buf, PATH_MAX, "%s/volumes/%s.%s", store->dir, uuid, ext);
}

static unsigned seg_count(uint64_t size)
{
	return (unsigned)((size + STORE_SEG_SIZE - 1) >> STORE_SEG_SHIFT);
}

static uint64_t seg_len(uint64_t size, unsigned seg)
{
	uint64_t start = (uint64_t)seg << STORE_SEG_SHIFT;

	return size - start < STORE_SEG_SIZE ? size - start : STORE_SEG_SIZE;
}

static int fsync_voldir(const struct tsr_store *store)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/volumes", store->dir);
	return tsr_fsync_dir(path);
}

int store_fsync_voldir(const struct tsr_store *store)
{
	return fsync_voldir(store);
}

void store_log_step(int err, const char *fmt, ...)
{
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (err == -EAGAIN)
		tsr_debug("%s: io queue full, issued again", what);
	else
		tsr_error("%s: %s", what, strerror(-err));
}

static void make_uuid(char out[37]);

void store_make_uuid(char out[37])
{
	make_uuid(out);
}

static void make_uuid(char out[37])
{
	uint8_t b[16];
	size_t got = 0;

	while (got < sizeof(b)) {
		ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
		if (n > 0)
			got += (size_t)n;
	}
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
}

/* ---- volume handles ---- */

void store_svol_free(struct tsr_svol *svol)
{
	unsigned i;

	if (svol == NULL)
		return;
	stage_close(svol);
	snap_detach(svol);
	rowmap_close(svol->rowmap);
	own_bits_close(&svol->own);
	pthread_mutex_destroy(&svol->cow_lock);
	blockmeta_close(&svol->meta);
	if (svol->dev_offset < 0) {
		for (i = 0; i < STORE_MAX_SEGS; i++) {
			int fd = atomic_load(&svol->seg_fd[i]);
			if (fd >= 0)
				close(fd);
			fd = atomic_load(&svol->cseg_fd[i]);
			if (fd >= 0)
				close(fd);
		}
	}
	free(svol);
}

static int open_segment(struct tsr_store *store, const char *uuid, unsigned seg, int flags)
{
	char path[PATH_MAX];
	int fd;

	store_seg_path(store, uuid, seg, path);
	fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC | flags, 0600);
	if (fd < 0) {
		int ret = -errno;

		if (ret == -EINVAL)
			tsr_error("open: %s: O_DIRECT not supported by this file system (tmpfs?); "
				  "put the data directory on a disk file system",
				  path);
		else
			tsr_error("open: %s: %s", path, strerror(-ret));
		return ret;
	}
	return fd;
}

/* The buffered read fd of segment seg (svol->cseg_fd), or -1: without the
 * read cache, or when it cannot be opened (warned; reads of the segment then
 * use its O_DIRECT fd, which is just as correct). */
static int open_cached_segment(struct tsr_store *store, const char *uuid, unsigned seg)
{
	char path[PATH_MAX];
	int fd;

	if (!store->read_cache)
		return -1;
	store_seg_path(store, uuid, seg, path);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		tsr_warn("open: %s for cached reads: %s; its reads stay O_DIRECT", path,
			 strerror(errno));
	return fd;
}

int store_svol_load(struct tsr_store *store, const struct vol_row *row, struct tsr_svol **out)
{
	char crc_path[PATH_MAX], dirty_path[PATH_MAX];
	struct tsr_svol *svol = calloc(1, sizeof(*svol));
	unsigned i;
	int ret;

	if (svol == NULL)
		return -ENOMEM;
	svol->meta.crc_fd = svol->meta.dirty_fd = -1;
	svol->own.fd = -1;
	pthread_mutex_init(&svol->cow_lock, NULL);
	for (i = 0; i < STORE_MAX_SEGS; i++) {
		atomic_init(&svol->seg_fd[i], -1);
		atomic_init(&svol->cseg_fd[i], -1);
	}
	svol->store = store;
	snprintf(svol->name, sizeof(svol->name), "%s", row->name);
	snprintf(svol->uuid, sizeof(svol->uuid), "%s", row->uuid);
	atomic_init(&svol->size, row->size);
	atomic_init(&svol->epoch, row->epoch);
	svol->dev_offset = row->dev_offset;
	if (row->dev_offset < 0) {
		for (i = 0; i < seg_count(row->size); i++) {
			ret = open_segment(store, row->uuid, i, 0);
			if (ret < 0)
				goto err;
			atomic_store(&svol->seg_fd[i], ret);
			atomic_store(&svol->cseg_fd[i], open_cached_segment(store, row->uuid, i));
		}
	} else if (store->dev_fd < 0) {
		tsr_error("open: volume %s lives on a raw device but the store has none",
			  row->name);
		ret = -EINVAL;
		goto err;
	}
	store_meta_path(store, row->uuid, "crc", crc_path);
	store_meta_path(store, row->uuid, "dirty", dirty_path);
	ret = blockmeta_open(&svol->meta, crc_path, dirty_path, row->size);
	if (ret)
		goto err;
	if (row->unit && row->dev_offset < 0) {
		ret = rowmap_unit_shift(row->unit);
		if (ret < 0) {
			tsr_error("open: volume %s: its catalogue row has stripe unit %u, not a "
				  "power of 2 from 4 KiB to 1 MiB: catalogue damaged",
				  row->name, row->unit);
			ret = -EUCLEAN;
			goto err;
		}
		store_meta_path(store, row->uuid, "map", crc_path);
		store_meta_path(store, row->uuid, "row", dirty_path);
		ret = rowmap_open(crc_path, dirty_path, row->size, (unsigned)ret, store->read_cache,
				  &svol->rowmap);
		if (ret)
			goto err;
	}
	*out = svol;
	return 0;
err:
	store_svol_free(svol);
	/* the volume exists: a missing or damaged file is not "no such volume" */
	return ret == -ENOENT ? -EIO : ret;
}

/* Last reference gone: make everything durable, clear the bitmap, free. */
static void svol_close(struct tsr_svol *svol)
{
	unsigned i;
	bool ok = true;

	if (svol->dev_offset < 0) {
		for (i = 0; i < STORE_MAX_SEGS; i++) {
			int fd = atomic_load(&svol->seg_fd[i]);
			if (fd >= 0 && fdatasync(fd) < 0) {
				tsr_error("close: volume %s: sync data: %s", svol->name,
					  strerror(errno));
				ok = false;
			}
		}
	} else if (fsync(svol->store->dev_fd) < 0) {
		tsr_error("close: volume %s: sync device: %s", svol->name, strerror(errno));
		ok = false;
	}
	if (blockmeta_sync(&svol->meta))
		ok = false;
	if (svol->rowmap && rowmap_sync(svol->rowmap))
		ok = false;
	if (svol->is_clone && fdatasync(svol->own.fd) < 0) {
		tsr_error("close: volume %s: sync clone bitmap: %s", svol->name, strerror(errno));
		ok = false;
	}
	if (chain_sync_present(svol)) /* the bits of copies: rebuilt from the bitmap else */
		ok = false;
	/* the bitmap may only be cleared once data and entries are durable, and
	 * not after a failed write: the next open normalizes those entries */
	if (ok && atomic_load(&svol->write_failed))
		tsr_warn("close: volume %s had failed writes; its dirty regions are checked at "
			 "the next open",
			 svol->name);
	else if (ok)
		blockmeta_clear_dirty(&svol->meta, atomic_load(&svol->size));
	store_svol_free(svol);
}

struct tsr_svol *store_find_open_uuid(struct tsr_store *store, const char *uuid)
{
	struct tsr_svol *svol;

	for (svol = store->open_vols; svol; svol = svol->next)
		if (strcmp(svol->uuid, uuid) == 0)
			return svol;
	return NULL;
}

int store_rollback_busy(struct tsr_store *store, const struct vol_row *row, const char *op)
{
	struct tsr_svol *svol = store_find_open_uuid(store, row->uuid);

	if (svol == NULL || !svol->rollback_running)
		return 0;
	/* expected (a caller's retry, a listing's probe): not an ERROR */
	tsr_warn("%s: volume %s: a rollback is running: try again when it ends", op, row->name);
	return -EBUSY;
}

/* Load a head with its snapshots and parent and list it (store->lock held). */
static int svol_load_listed(struct tsr_store *store, const struct vol_row *row,
			    struct tsr_svol **out)
{
	struct tsr_svol *svol;
	int ret = store_svol_load(store, row, &svol);

	if (ret)
		return ret;
	ret = snap_attach(svol, row);
	if (ret == 0)
		ret = stage_open(svol); /* after the layers: roll forward copies on write */
	if (ret) {
		store_svol_free(svol);
		return ret;
	}
	svol->refs = 1;
	svol->next = store->open_vols;
	store->open_vols = svol;
	*out = svol;
	return 0;
}

int store_svol_get_uuid(struct tsr_store *store, const char *uuid, struct tsr_svol **out)
{
	struct tsr_svol *svol = store_find_open_uuid(store, uuid);
	struct vol_row row;
	int ret;

	if (svol) {
		svol->refs++;
		*out = svol;
		return 0;
	}
	ret = catalog_get_uuid(store->db, uuid, &row);
	if (ret)
		return ret == -ENOENT ? -EIO : ret;
	return svol_load_listed(store, &row, out);
}

void store_svol_unref(struct tsr_svol *svol)
{
	struct tsr_store *store = svol->store;
	struct tsr_svol **pp;

	if (--svol->refs)
		return;
	for (pp = &store->open_vols; *pp; pp = &(*pp)->next) {
		if (*pp == svol) {
			*pp = svol->next;
			break;
		}
	}
	svol_close(svol);
}

int tsr_store_vol_open(struct tsr_store *store, const char *name, struct tsr_svol **out)
{
	struct tsr_svol *svol;
	struct vol_row row;
	int ret;

	pthread_mutex_lock(&store->lock);
	ret = catalog_get(store->db, name, &row);
	if (ret == 0)
		ret = store_rollback_busy(store, &row, "open");
	if (ret == 0 && (row.flags & VOL_ROLLBACK)) {
		tsr_error("open: volume %s: a rollback was interrupted; run it again to finish it",
			  name);
		ret = -EAGAIN;
	}
	if (ret)
		goto out;
	svol = store_find_open_uuid(store, row.uuid);
	if (svol) {
		svol->refs++;
	} else {
		ret = svol_load_listed(store, &row, &svol);
		if (ret)
			goto out;
	}
	svol->opens++;
	*out = svol;
out:
	pthread_mutex_unlock(&store->lock);
	return ret;
}

void tsr_svol_put(struct tsr_svol *svol)
{
	struct tsr_store *store;

	if (svol == NULL)
		return;
	store = svol->store;
	pthread_mutex_lock(&store->lock);
	if (svol->ro_layer) {
		struct tsr_svol *base = svol->base;

		svol->ro_layer = NULL;
		svol->base = NULL;
		if (--base->ro_handles == 0 && base->opens == 0)
			pthread_cond_broadcast(&store->svol_closed);
		store_svol_unref(base);
		pthread_mutex_destroy(&svol->cow_lock);
		free(svol);
	} else {
		if (--svol->opens == 0 && svol->ro_handles == 0)
			pthread_cond_broadcast(&store->svol_closed);
		store_svol_unref(svol);
	}
	pthread_mutex_unlock(&store->lock);
}

uint64_t tsr_svol_size(const struct tsr_svol *svol)
{
	return atomic_load_explicit(&((struct tsr_svol *)svol)->size, memory_order_acquire);
}

static struct tsr_svol *find_open(struct tsr_store *store, const char *name)
{
	struct tsr_svol *svol;

	for (svol = store->open_vols; svol; svol = svol->next)
		if (strcmp(svol->name, name) == 0)
			return svol;
	return NULL;
}

uint64_t tsr_svol_epoch(const struct tsr_svol *svol)
{
	return atomic_load_explicit(&((struct tsr_svol *)svol)->epoch, memory_order_acquire);
}

/* The catalogue row first (SQLite synchronous=FULL: durable at commit), then
 * the open handle, so a fenced writer can never see the new epoch in memory
 * while a crash would lose it.  store->lock orders concurrent raises. */
int tsr_store_vol_set_epoch(struct tsr_store *store, const char *name, uint64_t epoch)
{
	struct tsr_svol *svol;
	struct vol_row row;
	int ret;

	pthread_mutex_lock(&store->lock);
	ret = catalog_get(store->db, name, &row);
	if (ret)
		goto out;
	if (epoch < row.epoch) {
		ret = -ESTALE;
		goto out;
	}
	if (epoch > row.epoch) {
		/* only a raise is refused during a rollback: the same epoch is a
		 * fence check (admin_rollback_fenced's second one, review 16b R1) */
		ret = store_rollback_busy(store, &row, "set epoch");
		if (ret)
			goto out;
		row.epoch = epoch;
		ret = catalog_update_epoch(store->db, &row);
		if (ret)
			goto out;
	}
	svol = find_open(store, name);
	if (svol != NULL)
		atomic_store_explicit(&svol->epoch, row.epoch, memory_order_release);
out:
	pthread_mutex_unlock(&store->lock);
	if (ret && ret != -ESTALE && ret != -ENOENT && ret != -EBUSY) /* -EBUSY: logged */
		tsr_error("set epoch: volume %s: %s", name, strerror(-ret));
	return ret;
}

/* ---- control functions ---- */

static int check_size(const char *op, const char *name, uint64_t size)
{
	if (size == 0 || size % TSR_BLOCK_SIZE || size > STORE_MAX_VOL_SIZE) {
		tsr_error("%s: volume %s: size %llu must be a non-zero multiple of 4096 and at "
			  "most 1 PiB",
			  op, name, (unsigned long long)size);
		return -EINVAL;
	}
	return 0;
}

static void row_to_info(struct tsr_store *store, const struct vol_row *row,
			struct tsr_vol_info *info)
{
	struct tsr_svol *svol;
	char path[PATH_MAX];
	struct stat st;
	unsigned i;

	memset(info, 0, sizeof(*info));
	snprintf(info->name, sizeof(info->name), "%s", row->name);
	snprintf(info->uuid, sizeof(info->uuid), "%s", row->uuid);
	info->size = row->size;
	info->created = row->created;
	svol = store_find_open_uuid(store, row->uuid);
	if (svol)
		info->sessions = (unsigned)svol->opens; /* not its snapshots' readers */
	if (row->dev_offset >= 0) {
		info->allocated = row->size; /* a device extent is fully provisioned */
		return;
	}
	for (i = 0; i < seg_count(row->size); i++) {
		store_seg_path(store, row->uuid, i, path);
		if (stat(path, &st) == 0)
			info->allocated += (uint64_t)st.st_blocks * 512;
	}
}

int store_create_head_files(struct tsr_store *store, const char *uuid, uint64_t size, bool clone)
{
	char crc_path[PATH_MAX], dirty_path[PATH_MAX];
	unsigned i;
	int fd, ret;

	for (i = 0; i < seg_count(size); i++) {
		fd = open_segment(store, uuid, i, O_CREAT | O_EXCL);
		if (fd < 0)
			return fd;
		if (ftruncate(fd, (off_t)seg_len(size, i)) < 0 || fsync(fd) < 0) {
			ret = -errno;
			tsr_error("create: %s: size data file: %s", uuid, strerror(-ret));
			close(fd);
			return ret;
		}
		close(fd);
	}
	store_meta_path(store, uuid, "crc", crc_path);
	store_meta_path(store, uuid, "dirty", dirty_path);
	ret = blockmeta_create_files(crc_path, dirty_path, size);
	if (ret || !clone)
		return ret;
	store_meta_path(store, uuid, "present", crc_path);
	fd = open(crc_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)present_file_size(size)) < 0 || fsync(fd) < 0) {
		ret = -errno;
		tsr_error("create: %s: %s", crc_path, strerror(-ret));
	}
	if (fd >= 0)
		close(fd);
	return ret;
}

/* First fit for size bytes on the device (store->lock held).  -ENOSPC. */
static int device_first_fit(struct tsr_store *store, uint64_t size, int64_t *offset)
{
	struct vol_row *rows;
	uint64_t pos = 0;
	size_t n, i;
	int ret;

	ret = catalog_list(store->db, true, &rows, &n);
	if (ret)
		return ret;
	for (i = 0; i < n; i++) {
		if ((uint64_t)rows[i].dev_offset >= pos + size)
			break;
		if ((uint64_t)rows[i].dev_offset + rows[i].size > pos)
			pos = (uint64_t)rows[i].dev_offset + rows[i].size;
	}
	free(rows);
	if (pos + size > store->dev_size)
		return -ENOSPC;
	*offset = (int64_t)pos;
	return 0;
}

int tsr_store_vol_create(struct tsr_store *store, const char *name, uint64_t size,
			 struct tsr_vol_info *info_out)
{
	return tsr_store_vol_create_flags(store, name, size, 0, 0, info_out);
}

int tsr_store_vol_create_flags(struct tsr_store *store, const char *name, uint64_t size,
			       unsigned flags, uint32_t unit, struct tsr_vol_info *info_out)
{
	char crc_path[PATH_MAX], dirty_path[PATH_MAX];
	struct vol_row row;
	int ret, fd, shift = 0;
	unsigned i;

	if (flags & ~TSR_VOL_EC_CHUNK) {
		tsr_error("create: volume %s: unknown flags 0x%x", name ? name : "(null)", flags);
		return -EINVAL;
	}
	if (unit && (!(flags & TSR_VOL_EC_CHUNK) || (shift = rowmap_unit_shift(unit)) < 0)) {
		tsr_error("create: volume %s: stripe unit %u: %s", name ? name : "(null)", unit,
			  (flags & TSR_VOL_EC_CHUNK) ? "not a power of 2 from 4 KiB to 1 MiB"
						     : "only an ec chunk copy has one");
		return -EINVAL;
	}
	if (!tsr_valid_name(name)) {
		tsr_error("create: invalid volume name '%s': use 1-63 of [A-Za-z0-9._-], "
			  "starting with a letter or digit",
			  name ? name : "(null)");
		return -EINVAL;
	}
	ret = check_size("create", name, size);
	if (ret)
		return ret;
	memset(&row, 0, sizeof(row));
	snprintf(row.name, sizeof(row.name), "%s", name);
	make_uuid(row.uuid);
	row.size = size;
	row.created = (int64_t)time(NULL);
	row.dev_offset = -1;
	if (flags & TSR_VOL_EC_CHUNK)
		row.flags |= VOL_EC_CHUNK;
	/* a copy made with 2^31 granules or more is made without a map, as
	 * every chunk copy was before maps (its full-stripe writes take the
	 * journal path): a map would cover only its first 2^31 - 1 granules
	 * (rowmap_covered; 8 GiB of map at G = 4 KiB), which only a copy grown
	 * past them gets; device mode has none either */
	if (unit && rowmap_chunks(size, (unsigned)shift) >= ROWMAP_ROW_BASE) {
		tsr_info("create: volume %s: %llu granules of %u bytes, more than a redirect "
			 "map holds (2^31): made without one",
			 name, (unsigned long long)rowmap_chunks(size, (unsigned)shift), unit);
		unit = 0;
	}
	row.unit = store->dev_fd < 0 ? unit : 0;

	pthread_mutex_lock(&store->lock);
	ret = catalog_get(store->db, name, &(struct vol_row){0});
	if (ret != -ENOENT) {
		ret = ret ? ret : -EEXIST;
		goto out;
	}
	if (store->dev_fd >= 0) {
		ret = device_first_fit(store, size, &row.dev_offset);
		if (ret == -ENOSPC)
			tsr_error("create: volume %s: no free extent of %llu bytes on %s", name,
				  (unsigned long long)size, store->device);
		if (ret)
			goto out;
		ret = store_dev_zero(store->dev_fd, (uint64_t)row.dev_offset, size);
		if (ret)
			goto out;
	} else {
		for (i = 0; i < seg_count(size); i++) {
			fd = open_segment(store, row.uuid, i, O_CREAT | O_EXCL);
			if (fd < 0) {
				ret = fd;
				goto err_files;
			}
			if (ftruncate(fd, (off_t)seg_len(size, i)) < 0 || fsync(fd) < 0) {
				ret = -errno;
				tsr_error("create: volume %s: size data file: %s", name,
					  strerror(-ret));
				close(fd);
				goto err_files;
			}
			close(fd);
		}
	}
	store_meta_path(store, row.uuid, "crc", crc_path);
	store_meta_path(store, row.uuid, "dirty", dirty_path);
	ret = blockmeta_create_files(crc_path, dirty_path, size);
	if (ret)
		goto err_files;
	if (row.unit) {
		store_meta_path(store, row.uuid, "map", crc_path);
		store_meta_path(store, row.uuid, "row", dirty_path);
		ret = rowmap_create_files(crc_path, dirty_path, size, (unsigned)shift);
		if (ret)
			goto err_files;
	}
	ret = fsync_voldir(store);
	if (ret)
		goto err_files;
	ret = catalog_insert(store->db, &row);
	if (ret)
		goto err_files;
	if (info_out)
		row_to_info(store, &row, info_out);
	tsr_info("create: volume %s (%s), %llu bytes%s%s%s", name, row.uuid,
		 (unsigned long long)size, store->dev_fd >= 0 ? " on device" : "",
		 (row.flags & VOL_EC_CHUNK) ? ", ec chunk copy" : "",
		 row.unit ? " with a redirect map" : "");
	goto out;
err_files:
	store_remove_files(store, row.uuid, size);
out:
	pthread_mutex_unlock(&store->lock);
	return ret;
}

int tsr_store_vol_delete(struct tsr_store *store, const char *name)
{
	struct tsr_svol *svol;
	struct vol_row row;
	int ret;

	pthread_mutex_lock(&store->lock);
	ret = catalog_get(store->db, name, &row);
	if (ret == 0)
		ret = store_rollback_busy(store, &row, "delete");
	if (ret)
		goto out;
	svol = store_find_open_uuid(store, row.uuid);
	if (svol && (svol->opens > 0 || svol->ro_handles > 0)) {
		tsr_error("delete: volume %s is open (or one of its snapshots is); detach it first",
			  name);
		ret = -EBUSY;
		goto out;
	}
	if (row.dev_offset < 0) { /* snapshots, clones: snap.c */
		ret = snap_volume_delete(store, &row);
		goto out;
	}
	ret = catalog_delete(store->db, name);
	if (ret)
		goto out;
	store_remove_files(store, row.uuid, row.size);
	fsync_voldir(store);
	tsr_info("delete: volume %s (%s)", name, row.uuid);
out:
	pthread_mutex_unlock(&store->lock);
	return ret;
}

/* Grow the files of a closed volume (store->lock held). */
static int grow_closed_meta(struct tsr_store *store, const struct vol_row *row, uint64_t new_size)
{
	char path[PATH_MAX];
	int fd, ret = 0;

	store_meta_path(store, row->uuid, "crc", path);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)blockmeta_crc_file_size(new_size)) < 0 || fsync(fd) < 0)
		goto err;
	close(fd);
	store_meta_path(store, row->uuid, "dirty", path);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)blockmeta_dirty_file_size(new_size)) < 0 ||
	    fsync(fd) < 0)
		goto err;
	close(fd);
	return 0;
err:
	ret = -errno;
	tsr_error("resize: volume %s: %s: %s", row->name, path, strerror(-ret));
	if (fd >= 0)
		close(fd);
	return ret;
}

/* Grow the redirect map of a chunk volume (store->lock held): through the
 * open svol's, else opened for it.  New chunks are at home (identity). */
static int grow_rowmap(struct tsr_store *store, struct tsr_svol *svol, const struct vol_row *row,
		       uint64_t new_size)
{
	char map_path[PATH_MAX], row_path[PATH_MAX];
	struct rowmap *m;
	int ret;

	if (svol)
		return rowmap_grow(svol->rowmap, new_size);
	store_meta_path(store, row->uuid, "map", map_path);
	store_meta_path(store, row->uuid, "row", row_path);
	ret = rowmap_open(map_path, row_path, row->size, (unsigned)rowmap_unit_shift(row->unit),
			  false, &m);
	if (ret)
		return ret;
	ret = rowmap_grow(m, new_size);
	rowmap_close(m);
	return ret;
}

/*
 * Before a file-mode volume grows: the blocks of its dirty-region bitmap at
 * the new size (one bit per 1 MiB region; a page more per 32 GiB), which
 * must exist (it is stored to through a mapping; blockmeta_open).  Without
 * them the grow was accepted on a full file system and the volume's next
 * open found holes in its bitmap: every write to it, even over blocks it
 * has, then failed with -ENOSPC until space was freed.  So the blocks are
 * taken first (fallocate, KEEP_SIZE: the file's size is unchanged until the
 * grow extends it over them), and a file system without them refuses the
 * resize before anything changed (what a failed fallocate took is given
 * back).  The data and crc files grow sparse: their blocks come with the
 * writes.  0, -ENOSPC (logged, naming the file system) or -errno.
 */
static int grow_dirty_blocks(struct tsr_store *store, const struct vol_row *row,
			     uint64_t new_size)
{
	uint64_t old_len = blockmeta_dirty_file_size(row->size);
	uint64_t new_len = blockmeta_dirty_file_size(new_size);
	char path[PATH_MAX], want[32];
	int fd, ret = 0;

	if (new_len <= old_len)
		return 0; /* the bitmap's pages cover the new size already */
	store_meta_path(store, row->uuid, "dirty", path);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		tsr_error("resize: volume %s: %s: %s", row->name, path, strerror(-ret));
		return ret;
	}
	if (fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)old_len, (off_t)(new_len - old_len)) < 0 &&
	    errno != EOPNOTSUPP) {
		ret = errno == EDQUOT ? -ENOSPC : -errno;
		/* give back what it took past the file's end */
		fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)old_len,
			  (off_t)(new_len - old_len));
		if (ret == -ENOSPC)
			tsr_error("resize: volume %s: no space on the file system of %s for the "
				  "%llu more bytes of its dirty-region bitmap at %s: refused, "
				  "nothing changed (delete volumes or snapshots, or free space on it)",
				  row->name, store->dir, (unsigned long long)(new_len - old_len),
				  tsr_format_size(new_size, want, sizeof(want)));
		else
			tsr_error("resize: volume %s: allocate %s: %s", row->name, path,
				  strerror(-ret));
	}
	close(fd);
	return ret;
}

static int grow_device_extent(struct tsr_store *store, const struct vol_row *row, uint64_t new_size)
{
	uint64_t end = (uint64_t)row->dev_offset + new_size;
	struct vol_row *rows;
	size_t n, i;
	int ret;

	if (end > store->dev_size)
		goto nospc;
	ret = catalog_list(store->db, true, &rows, &n);
	if (ret)
		return ret;
	for (i = 0; i < n; i++) {
		if (rows[i].dev_offset > row->dev_offset && (uint64_t)rows[i].dev_offset < end) {
			free(rows);
			goto nospc;
		}
	}
	free(rows);
	return store_dev_zero(store->dev_fd, (uint64_t)row->dev_offset + row->size,
			      new_size - row->size);
nospc:
	tsr_error("resize: volume %s: the device space after its extent is not free", row->name);
	return -ENOSPC;
}

int tsr_store_vol_resize_check(struct tsr_store *store, const char *name, uint64_t new_size)
{
	struct vol_row row, *rows = NULL;
	struct statvfs vfs;
	uint64_t need, end;
	size_t n;
	int ret;

	ret = check_size("resize", name, new_size);
	if (ret)
		return ret;
	pthread_mutex_lock(&store->lock);
	ret = catalog_get(store->db, name, &row);
	if (ret == 0)
		ret = store_rollback_busy(store, &row, "resize");
	if (ret || new_size <= row.size) {
		if (ret == 0 && new_size < row.size)
			ret = -EINVAL;
		goto out;
	}
	if (row.dev_offset >= 0) {
		/* grow_device_extent's rule, without zeroing anything */
		end = (uint64_t)row.dev_offset + new_size;
		if (end > store->dev_size) {
			ret = -ENOSPC;
			goto out;
		}
		ret = catalog_list(store->db, true, &rows, &n);
		for (size_t i = 0; ret == 0 && i < n; i++)
			if (rows[i].dev_offset > row.dev_offset && (uint64_t)rows[i].dev_offset < end)
				ret = -ENOSPC;
		free(rows);
		goto out;
	}
	/* grow_dirty_blocks' need: the bitmap's new pages (data grows sparse) */
	need = blockmeta_dirty_file_size(new_size) - blockmeta_dirty_file_size(row.size);
	if (need > 0 && statvfs(store->dir, &vfs) == 0 &&
	    (uint64_t)vfs.f_bavail * vfs.f_frsize < need)
		ret = -ENOSPC;
out:
	pthread_mutex_unlock(&store->lock);
	if (ret == -ENOSPC)
		tsr_info("resize check: volume %s: no space to grow it to %llu bytes", name,
			 (unsigned long long)new_size);
	return ret;
}

int tsr_store_vol_resize(struct tsr_store *store, const char *name, uint64_t new_size)
{
	struct tsr_svol *svol;
	struct vol_row row;
	unsigned i;
	int ret, fd;

	ret = check_size("resize", name, new_size);
	if (ret)
		return ret;
	pthread_mutex_lock(&store->lock);
	ret = catalog_get(store->db, name, &row);
	if (ret == 0)
		ret = store_rollback_busy(store, &row, "resize");
	if (ret)
		goto out;
	if (new_size < row.size) {
		tsr_error("resize: volume %s: cannot shrink from %llu to %llu bytes (volumes "
			  "only grow)",
			  name, (unsigned long long)row.size, (unsigned long long)new_size);
		ret = -EINVAL;
		goto out;
	}
	if (new_size == row.size)
		goto out;
	svol = find_open(store, name);
	ret = grow_dirty_blocks(store, &row, new_size);
	if (ret)
		goto out;
	if (row.dev_offset >= 0) {
		ret = grow_device_extent(store, &row, new_size);
		if (ret)
			goto out;
	} else {
		for (i = 0; i < seg_count(new_size); i++) {
			bool opened = false;

			fd = svol ? atomic_load(&svol->seg_fd[i]) : -1;
			if (fd < 0) {
				fd = open_segment(store, row.uuid, i, O_CREAT);
				if (fd < 0) {
					ret = fd;
					goto out;
				}
				opened = true;
			}
			if (ftruncate(fd, (off_t)seg_len(new_size, i)) < 0 || fsync(fd) < 0) {
				ret = -errno;
				tsr_error("resize: volume %s: extend data: %s", name,
					  strerror(-ret));
				if (opened)
					close(fd);
				goto out;
			}
			if (opened && svol) {
				/* the buffered fd first: a reader that finds the
				 * segment (past the old size: only once the size
				 * is raised below) finds both */
				atomic_store(&svol->cseg_fd[i],
					     open_cached_segment(store, row.uuid, i));
				atomic_store(&svol->seg_fd[i], fd);
			} else if (opened)
				close(fd);
		}
	}
	if (svol)
		ret = blockmeta_grow(&svol->meta, row.size, new_size);
	else
		ret = grow_closed_meta(store, &row, new_size);
	if (ret == 0 && row.unit && row.dev_offset < 0)
		ret = grow_rowmap(store, svol, &row, new_size);
	if (ret)
		goto out;
	if (svol && svol->is_clone) { /* a clone's own bits cover its whole size */
		ret = own_bits_grow(&svol->own, new_size);
	} else if (row.parent[0]) {
		char path[PATH_MAX];

		store_meta_path(store, row.uuid, "present", path);
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0 || ftruncate(fd, (off_t)present_file_size(new_size)) < 0 ||
		    fsync(fd) < 0)
			ret = -errno;
		if (fd >= 0)
			close(fd);
	}
	if (ret)
		goto out;
	ret = fsync_voldir(store);
	if (ret)
		goto out;
	row.size = new_size;
	ret = catalog_update_size(store->db, &row);
	if (ret)
		goto out;
	/* publish last: the data path may now touch the new blocks */
	if (svol)
		atomic_store_explicit(&svol->size, new_size, memory_order_release);
	tsr_info("resize: volume %s: %llu bytes", name, (unsigned long long)new_size);
out:
	pthread_mutex_unlock(&store->lock);
	return ret;
}

int tsr_store_vol_info(struct tsr_store *store, const char *name, struct tsr_vol_info *out)
{
	struct vol_row row;
	int ret;

	pthread_mutex_lock(&store->lock);
	ret = catalog_get(store->db, name, &row);
	if (ret == 0)
		row_to_info(store, &row, out);
	pthread_mutex_unlock(&store->lock);
	return ret;
}

/* A clone's chain of parents is short (one level per clone of a clone); the
 * bound only stops a corrupt catalogue's loop. */
#define EC_CHUNK_MAX_DEPTH 64

int tsr_store_vol_ec_chunk(struct tsr_store *store, const char *name, bool *out)
{
	struct snap_row snap;
	struct vol_row row;
	char parent[37];
	int ret, depth;

	*out = false;
	pthread_mutex_lock(&store->lock);
	ret = catalog_get(store->db, name, &row);
	for (depth = 0; ret == 0 && depth < EC_CHUNK_MAX_DEPTH; depth++) {
		if (row.flags & VOL_EC_CHUNK) {
			*out = true;
			break;
		}
		if (row.parent[0] == '\0')
			break;
		/* a clone: the volume its parent snapshot was cut from decides */
		memcpy(parent, row.parent, sizeof(parent));
		ret = catalog_snap_get(store->db, parent, &snap);
		if (ret == 0)
			ret = catalog_get_uuid(store->db, snap.vol_uuid, &row);
		if (ret == -ENOENT) {
			tsr_warn("store: volume %s: parent layer %s or its volume is missing from "
				 "the catalogue; taken as not an ec chunk copy", name, parent);
			ret = 0;
			break;
		}
	}
	pthread_mutex_unlock(&store->lock);
	return ret;
}

int tsr_store_vol_list(struct tsr_store *store, struct tsr_vol_info **out, size_t *count)
{
	struct tsr_vol_info *infos;
	struct vol_row *rows;
	size_t n, i, j;
	int ret;

	pthread_mutex_lock(&store->lock);
	ret = catalog_list(store->db, false, &rows, &n);
	if (ret)
		goto out;
	infos = calloc(n ? n : 1, sizeof(*infos));
	if (infos == NULL) {
		free(rows);
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0, j = 0; i < n; i++)
		if (!(rows[i].flags & VOL_HIDDEN))
			row_to_info(store, &rows[i], &infos[j++]);
	free(rows);
	*out = infos;
	*count = j;
out:
	pthread_mutex_unlock(&store->lock);
	return ret;
}

int tsr_store_allocated(struct tsr_store *store, uint64_t *out)
{
	char path[PATH_MAX];
	struct vol_row *rows;
	struct dirent *de;
	uint64_t total = 0;
	size_t n, i;
	DIR *d;
	int ret;

	*out = 0;
	pthread_mutex_lock(&store->lock);
	ret = catalog_list(store->db, false, &rows, &n);
	if (ret)
		goto out;
	for (i = 0; i < n; i++) /* hidden ones too */
		if (rows[i].dev_offset >= 0)
			total += rows[i].size; /* a device extent is fully provisioned */
	free(rows);
	snprintf(path, sizeof(path), "%s/volumes", store->dir);
	d = opendir(path);
	if (d == NULL) {
		ret = -errno;
		goto out;
	}
	while ((de = readdir(d))) {
		struct stat st;

		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode))
			total += (uint64_t)st.st_blocks * 512;
	}
	closedir(d);
	*out = total;
out:
	pthread_mutex_unlock(&store->lock);
	return ret;
}

/* ---- open and close ---- */

/* Remove files in DIR/volumes that belong to no catalogue row (crash leftovers). */
static void remove_leftovers(struct tsr_store *store)
{
	char path[PATH_MAX];
	struct snap_row *srows;
	struct vol_row *rows;
	struct dirent *de;
	size_t n, i, sn;
	DIR *d;

	if (catalog_list(store->db, false, &rows, &n))
		return;
	if (catalog_snap_list(store->db, NULL, &srows, &sn)) {
		free(rows);
		return;
	}
	snprintf(path, sizeof(path), "%s/volumes", store->dir);
	d = opendir(path);
	if (d == NULL) {
		free(rows);
		free(srows);
		return;
	}
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		for (i = 0; i < n; i++)
			if (strncmp(de->d_name, rows[i].uuid, 36) == 0 && de->d_name[36] == '.')
				break;
		if (i < n)
			continue;
		for (i = 0; i < sn; i++) /* a snapshot layer's files */
			if (strncmp(de->d_name, srows[i].uuid, 36) == 0 && de->d_name[36] == '.')
				break;
		if (i < sn)
			continue;
		store_remove_leftover(store, de->d_name);
	}
	closedir(d);
	free(rows);
	free(srows);
}

static void recover_all(struct tsr_store *store, bool clean)
{
	struct recovery_stats st, total = {0};
	struct tsr_svol *svol;
	struct vol_row *rows;
	size_t n, i;

	if (catalog_list(store->db, false, &rows, &n))
		return;
	for (i = 0; i < n; i++) {
		if (store_svol_load(store, &rows[i], &svol)) {
			tsr_error("open: volume %s cannot be opened; it stays unavailable",
				  rows[i].name);
			continue;
		}
		memset(&st, 0, sizeof(st));
		snap_recover_present(store, svol); /* before recovery_run clears the bitmap */
		recovery_run(svol, &st);
		total.regions += st.regions;
		total.fixed += st.fixed;
		total.corrupt += st.corrupt;
		store_svol_free(svol);
	}
	free(rows);
	if (!clean || total.regions)
		tsr_info("open: %s: recovery after %s shutdown: %zu volumes, %llu dirty regions "
			 "scanned, %llu blocks fixed, %llu corrupt blocks",
			 store->dir, clean ? "a clean" : "an unclean", n,
			 (unsigned long long)total.regions, (unsigned long long)total.fixed,
			 (unsigned long long)total.corrupt);
}

static int open_device(struct tsr_store *store, const char *device)
{
	struct stat st;
	uint64_t size;
	int ret;

	store->dev_fd = open(device, O_RDWR | O_DIRECT | O_EXCL | O_CLOEXEC);
	if (store->dev_fd < 0) {
		ret = -errno;
		tsr_error("open: device %s: %s", device, strerror(-ret));
		return ret == -ENOENT || ret == -EACCES || ret == -EBUSY ? ret : -EINVAL;
	}
	if (fstat(store->dev_fd, &st) < 0 || !S_ISBLK(st.st_mode)) {
		tsr_error("open: %s is not a block device", device);
		return -EINVAL;
	}
	if (ioctl(store->dev_fd, BLKGETSIZE64, &size) < 0 || size < TSR_BLOCK_SIZE) {
		tsr_error("open: device %s: cannot read its size", device);
		return -EINVAL;
	}
	store->dev_size = size & ~(uint64_t)(TSR_BLOCK_SIZE - 1);
	store->device = strdup(device);
	return store->device ? 0 : -ENOMEM;
}

static void store_free(struct tsr_store *store)
{
	stage_store_free(store);
	if (store->db)
		catalog_close(store->db);
	if (store->dev_fd >= 0)
		close(store->dev_fd);
	if (store->trampoline_fd >= 0)
		close(store->trampoline_fd);
	if (store->lock_fd >= 0)
		close(store->lock_fd); /* releases the flock */
	pthread_mutex_destroy(&store->lock);
	pthread_cond_destroy(&store->rollback_end);
	pthread_cond_destroy(&store->svol_closed);
	free(store->device);
	free(store->dir);
	free(store);
}

int tsr_store_open(const char *dir, const struct tsr_store_opts *opts, struct tsr_store **out)
{
	char path[PATH_MAX];
	struct tsr_store *store;
	bool clean, fresh;
	int ret;

	store = calloc(1, sizeof(*store));
	if (store == NULL)
		return -ENOMEM;
	store->dev_fd = store->lock_fd = store->trampoline_fd = -1;
	store->dirty_clear_ns = 30ll * 1000000000;
	store->read_cache = !(opts && opts->read_cache_off);
	if (getenv("TSR_STORE_DIRTY_CLEAR_MS")) /* tests */
		store->dirty_clear_ns = atoll(getenv("TSR_STORE_DIRTY_CLEAR_MS")) * 1000000;
	pthread_mutex_init(&store->lock, NULL);
	ret = tsr_cond_init_mono(&store->rollback_end); /* snap.c's bounded wait */
	if (ret) {
		pthread_mutex_destroy(&store->lock);
		free(store);
		return ret;
	}
	ret = tsr_cond_init_mono(&store->svol_closed); /* snap.c's wait for a close */
	if (ret) {
		pthread_cond_destroy(&store->rollback_end);
		pthread_mutex_destroy(&store->lock);
		free(store);
		return ret;
	}
	store->dir = strdup(dir);
	if (store->dir == NULL) {
		ret = -ENOMEM;
		goto err;
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		ret = -errno;
		tsr_error("open: store directory %s: %s", dir, strerror(-ret));
		goto err;
	}
	snprintf(path, sizeof(path), "%s/store.lock", dir);
	store->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (store->lock_fd < 0) {
		ret = -errno;
		tsr_error("open: %s: %s", path, strerror(-ret));
		goto err;
	}
	if (flock(store->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		ret = errno == EWOULDBLOCK ? -EBUSY : -errno;
		tsr_error("open: store %s is in use by another process (%s)", dir, strerror(errno));
		goto err;
	}
	snprintf(path, sizeof(path), "%s/volumes", dir);
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		ret = -errno;
		tsr_error("open: %s: %s", path, strerror(-ret));
		goto err;
	}
	if (opts && opts->device) {
		ret = open_device(store, opts->device);
		if (ret)
			goto err;
	}
	store->trampoline_fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	if (store->trampoline_fd < 0) {
		ret = -errno;
		tsr_error("open: /dev/zero: %s", strerror(-ret));
		goto err;
	}
	snprintf(path, sizeof(path), "%s/store.db", dir);
	fresh = access(path, F_OK) < 0;
	ret = catalog_open(dir, store->device, &store->db);
	if (ret)
		goto err;

	snprintf(path, sizeof(path), "%s/clean", dir);
	clean = access(path, F_OK) == 0;
	if (clean) {
		/* from now on a crash must be seen as unclean */
		if (unlink(path) < 0 || (ret = tsr_fsync_dir(dir)) < 0) {
			ret = ret ? ret : -errno;
			tsr_error("open: remove %s: %s", path, strerror(-ret));
			goto err;
		}
	}
	store->unclean = !clean && !fresh; /* stage.c rolls journals forward then */
	remove_leftovers(store);
	recover_all(store, clean || fresh);
	snap_recover(store);
	*out = store;
	return 0;
err:
	store_free(store);
	return ret;
}

void tsr_store_closing(struct tsr_store *store)
{
	if (store == NULL)
		return;
	pthread_mutex_lock(&store->lock);
	store->closing = true;
	pthread_cond_broadcast(&store->rollback_end); /* snap.c's waiting retries */
	pthread_cond_broadcast(&store->svol_closed);  /* and waits for a close */
	pthread_mutex_unlock(&store->lock);
}

void tsr_store_close(struct tsr_store *store)
{
	char path[PATH_MAX];
	bool clean = true;
	int fd;

	if (store == NULL)
		return;
	tsr_store_closing(store); /* waiting rollback retries give up now */
	merge_stop(store); /* merge.c: finishes queued deletes, drops their references */
	pthread_mutex_lock(&store->lock);
	/* a rollback's data copy runs without store->lock: wait for its end
	 * (every caller joins its threads first; this keeps a new one safe) */
	if (store->rollbacks)
		tsr_warn("close: store %s: waiting for %u rollback(s) to end", store->dir,
			 store->rollbacks);
	while (store->rollbacks)
		pthread_cond_wait(&store->rollback_end, &store->lock);
	if (store->open_vols) {
		tsr_error("close: store %s still has open volumes (%s...); not marking it clean",
			  store->dir, store->open_vols->name);
		clean = false;
	}
	pthread_mutex_unlock(&store->lock);
	spare_stop(store); /* spare.c: the thread, parked layers' files */
	catalog_close(store->db);
	store->db = NULL;
	if (clean) {
		snprintf(path, sizeof(path), "%s/clean", store->dir);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0 || fsync(fd) < 0 || tsr_fsync_dir(store->dir) < 0)
			tsr_error("close: write %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
	}
	store_free(store);
}
