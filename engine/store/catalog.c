/*
 * The store's catalogue: which volumes exist, in DIR/store.db (SQLite, WAL
 * journal, synchronous=FULL, so a committed change survives power loss).
 *
 * Schema (format 1):
 *   meta(key TEXT PRIMARY KEY, value TEXT)
 *     'format' = '1'; 'device' = raw device path the store was created with, or ''.
 *   volumes(name TEXT PRIMARY KEY, uuid TEXT NOT NULL, size INTEGER NOT NULL,
 *           created INTEGER NOT NULL, dev_offset INTEGER NOT NULL, crc INTEGER NOT NULL,
 *           epoch INTEGER NOT NULL DEFAULT 0)
 *     dev_offset: byte offset of the volume's extent on the raw device, -1 in
 *     file mode.  crc: CRC32C (tsr_crc32c, seed 0) over this byte string:
 *       +0            name, its bytes and a terminating NUL (len(name)+1 bytes)
 *       +n            uuid, 36 ASCII characters and a NUL (37 bytes)
 *       +n+37         size, u64 little endian
 *       +n+45         created, i64 little endian
 *       +n+53         dev_offset, i64 little endian
 *       +n+61         epoch, u64 little endian, ONLY when epoch != 0
 *     (n = len(name)+1; 61+len(name) bytes in all, 69+len(name) with an
 *     epoch), stored as an unsigned value.
 *     epoch: the highest coordinator epoch accepted for the volume (peer
 *     protocol fencing).  Stores made before the column existed get it with
 *     ALTER TABLE at open (value 0); leaving a zero epoch out of the CRC keeps
 *     their rows' checksums valid unchanged.
 *   volumes, columns added for snapshots (ALTER TABLE on older stores):
 *     parent TEXT NOT NULL DEFAULT ''   clone: uuid of the snapshot layer it reads through
 *     flags INTEGER NOT NULL DEFAULT 0  1 hidden (deleted, kept for clones), 2 rollback running,
 *                                       4 ec chunk (one chunk column of an erasure-coded
 *                                       cluster volume, set at create; stores made before
 *                                       it have no such rows: their snapshots are served
 *                                       as images as before)
 *     orig TEXT NOT NULL DEFAULT ''     hidden: the name before delete (name is ".h-<uuid>")
 *     When any of them is set the CRC covers the "extended" string instead:
 *       +0 .. +n+61   as above (epoch always included, even 0)
 *       +n+69         parent: 36 characters and a NUL, or 37 zero bytes
 *       +n+106        flags, u32 little endian
 *       +n+110        orig, its bytes and a NUL
 *       then          unit, u32 little endian, ONLY when unit != 0
 *     unit INTEGER NOT NULL DEFAULT 0   ec chunk volume: the EC stripe unit G in bytes (a
 *                                       power of 2, 4 KiB..1 MiB) its redirect-on-write
 *                                       map (rowmap.c) is cut in; 0: no map (every
 *                                       other volume, and chunk volumes made before the
 *                                       column existed, which get it by ALTER TABLE)
 *   snapshots(uuid TEXT PRIMARY KEY, vol_uuid TEXT NOT NULL, name TEXT NOT NULL,
 *             seq INTEGER NOT NULL, created INTEGER NOT NULL, size INTEGER NOT NULL,
 *             flags INTEGER NOT NULL, crc INTEGER NOT NULL)
 *     one row per snapshot layer (flags: 1 hidden, 2 deleting, 4 made for a
 *     from-volume clone); crc: CRC32C over
 *       +0    uuid, 36 characters and a NUL
 *       +37   vol_uuid, 36 characters and a NUL
 *       +74   name, its bytes and a NUL (m = len(name)+1)
 *       +74+m seq u64 LE; +82+m created i64 LE; +90+m size u64 LE; +98+m flags u32 LE
 *
 * Every row read is checked; a mismatch is -EUCLEAN with a log line naming
 * the volume.  Callers hold store->lock (the sqlite handle is not shared).
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "store/internal.h"

uint32_t catalog_row_crc(const struct vol_row *row)
{
	uint8_t buf[64 + 37 + 32 + 41 + 64 + 4];
	size_t n = strnlen(row->name, sizeof(row->name) - 1) + 1;
	uint64_t v;

	memcpy(buf, row->name, n - 1);
	buf[n - 1] = 0;
	memcpy(buf + n, row->uuid, 36);
	buf[n + 36] = 0;
	v = htole64(row->size);
	memcpy(buf + n + 37, &v, 8);
	v = htole64((uint64_t)row->created);
	memcpy(buf + n + 45, &v, 8);
	v = htole64((uint64_t)row->dev_offset);
	memcpy(buf + n + 53, &v, 8);
	bool ext = row->parent[0] || row->flags || row->orig[0] || row->unit;
	uint8_t *x = buf + n + 69;
	uint32_t f;
	size_t on;

	if (row->epoch == 0 && !ext)
		return tsr_crc32c(0, buf, n + 61);
	v = htole64(row->epoch);
	memcpy(buf + n + 61, &v, 8);
	if (!ext)
		return tsr_crc32c(0, buf, n + 69);
	memset(x, 0, 37);
	if (row->parent[0])
		memcpy(x, row->parent, 36);
	f = htole32(row->flags);
	memcpy(x + 37, &f, 4);
	on = strnlen(row->orig, sizeof(row->orig) - 1);
	memcpy(x + 41, row->orig, on);
	x[41 + on] = 0;
	if (row->unit == 0)
		return tsr_crc32c(0, buf, n + 69 + 41 + on + 1);
	f = htole32(row->unit);
	memcpy(x + 41 + on + 1, &f, 4);
	return tsr_crc32c(0, buf, n + 69 + 41 + on + 1 + 4);
}

uint32_t catalog_snap_crc(const struct snap_row *row)
{
	uint8_t buf[37 + 37 + 64 + 28];
	size_t m = strnlen(row->name, sizeof(row->name) - 1) + 1;
	uint64_t v;
	uint32_t f;

	memcpy(buf, row->uuid, 36);
	buf[36] = 0;
	memcpy(buf + 37, row->vol_uuid, 36);
	buf[73] = 0;
	memcpy(buf + 74, row->name, m - 1);
	buf[74 + m - 1] = 0;
	v = htole64(row->seq);
	memcpy(buf + 74 + m, &v, 8);
	v = htole64((uint64_t)row->created);
	memcpy(buf + 82 + m, &v, 8);
	v = htole64(row->size);
	memcpy(buf + 90 + m, &v, 8);
	f = htole32(row->flags);
	memcpy(buf + 98 + m, &f, 4);
	return tsr_crc32c(0, buf, 102 + m);
}

/* -errno for a failed SQLite call: -ENOSPC when the file system is full. */
static int sql_errno(int rc)
{
	return (rc & 0xff) == SQLITE_FULL ? -ENOSPC : -EIO;
}

static int db_exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK) {
		tsr_error("catalogue: %s: %s", sql, msg ? msg : "?");
		sqlite3_free(msg);
		return sql_errno(rc);
	}
	return 0;
}

static int meta_get(sqlite3 *db, const char *key, char *val, size_t len)
{
	sqlite3_stmt *st;
	int rc, ret = -ENOENT;

	if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = ?", -1, &st, NULL))
		return -EIO;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *v = (const char *)sqlite3_column_text(st, 0);
		snprintf(val, len, "%s", v ? v : "");
		ret = 0;
	} else if (rc != SQLITE_DONE) {
		ret = -EIO;
	}
	sqlite3_finalize(st);
	return ret;
}

static int meta_set(sqlite3 *db, const char *key, const char *val)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", -1, &st,
			       NULL))
		return -EIO;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, val, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -EIO;
}

/* Fill row from a SELECT name, uuid, size, created, dev_offset, crc; check the CRC. */
static int row_from_stmt(sqlite3_stmt *st, struct vol_row *row)
{
	const char *name = (const char *)sqlite3_column_text(st, 0);
	const char *uuid = (const char *)sqlite3_column_text(st, 1);
	uint32_t stored;

	memset(row, 0, sizeof(*row));
	snprintf(row->name, sizeof(row->name), "%s", name ? name : "");
	snprintf(row->uuid, sizeof(row->uuid), "%s", uuid ? uuid : "");
	row->size = (uint64_t)sqlite3_column_int64(st, 2);
	row->created = sqlite3_column_int64(st, 3);
	row->dev_offset = sqlite3_column_int64(st, 4);
	stored = (uint32_t)sqlite3_column_int64(st, 5);
	row->epoch = (uint64_t)sqlite3_column_int64(st, 6);
	{
		const char *parent = (const char *)sqlite3_column_text(st, 7);
		const char *orig = (const char *)sqlite3_column_text(st, 9);

		snprintf(row->parent, sizeof(row->parent), "%s", parent ? parent : "");
		row->flags = (uint32_t)sqlite3_column_int64(st, 8);
		snprintf(row->orig, sizeof(row->orig), "%s", orig ? orig : "");
		row->unit = (uint32_t)sqlite3_column_int64(st, 10);
	}
	if (name == NULL || strlen(name) >= sizeof(row->name) || uuid == NULL ||
	    strlen(uuid) != 36 || stored != catalog_row_crc(row)) {
		tsr_error("catalogue: volume %s: row checksum mismatch (stored %08x, computed "
			  "%08x); the catalogue was modified outside tessera or is damaged",
			  row->name, stored, catalog_row_crc(row));
		return -EUCLEAN;
	}
	return 0;
}

/* Stores created before a column existed: add it (every row reads its
 * default).  A new catalogue is created with every column (schema_exec), so
 * this logs only on an upgrade. */
static int add_column(sqlite3 *db, const char *name, const char *alter)
{
	sqlite3_stmt *st;
	bool found = false;
	int rc;

	if (sqlite3_prepare_v2(db, "PRAGMA table_info(volumes)", -1, &st, NULL))
		return -EIO;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *col = (const char *)sqlite3_column_text(st, 1);

		if (col != NULL && strcmp(col, name) == 0)
			found = true;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return -EIO;
	if (found)
		return 0;
	tsr_info("catalogue: adding the %s column (older store)", name);
	return db_exec(db, alter);
}

static int add_epoch_column(sqlite3 *db)
{
	int ret = add_column(db, "epoch",
			     "ALTER TABLE volumes ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0");

	if (ret == 0)
		ret = add_column(db, "parent",
				 "ALTER TABLE volumes ADD COLUMN parent TEXT NOT NULL DEFAULT ''");
	if (ret == 0)
		ret = add_column(db, "flags",
				 "ALTER TABLE volumes ADD COLUMN flags INTEGER NOT NULL DEFAULT 0");
	if (ret == 0)
		ret = add_column(db, "orig",
				 "ALTER TABLE volumes ADD COLUMN orig TEXT NOT NULL DEFAULT ''");
	if (ret == 0)
		ret = add_column(db, "unit",
				 "ALTER TABLE volumes ADD COLUMN unit INTEGER NOT NULL DEFAULT 0");
	return ret;
}

/* Blocks for the first CATALOG_WAL_RESERVE bytes of DIR/store.db-wal
 * (KEEP_SIZE: SQLite's writes past its end land in them).  Made before SQLite
 * opens the file (an empty WAL is a valid, empty log).  Best effort: on a
 * full file system the WAL keeps the blocks it has. */
#define CATALOG_WAL_RESERVE (1u << 20)
static void reserve_wal(const char *db_path)
{
	char path[PATH_MAX + 8];
	int fd;

	snprintf(path, sizeof(path), "%s-wal", db_path);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0 ||
	    (fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, CATALOG_WAL_RESERVE) < 0 && errno != EOPNOTSUPP))
		tsr_warn("catalogue: reserve %u bytes for %s: %s", CATALOG_WAL_RESERVE, path,
			 strerror(errno));
	if (fd >= 0)
		close(fd);
}

/*
 * The first statements of an open.  The first connection of a WAL database
 * truncates store.db-shm (to 3 bytes) and grows it again, one block per 4
 * KiB page: on a file system with not one block free that fails
 * (SQLITE_IOERR_SHMSIZE, "disk I/O error") when the blocks the truncation
 * freed are not reusable yet (ext4 frees them at the journal's next commit).
 * So on a failure, commit the file system (syncfs) and try once more.
 */
static int schema_exec(sqlite3 *db)
{
	return db_exec(db,
		       "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
		       "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);"
		       "CREATE TABLE IF NOT EXISTS volumes(name TEXT PRIMARY KEY,"
		       " uuid TEXT NOT NULL, size INTEGER NOT NULL, created INTEGER NOT NULL,"
		       " dev_offset INTEGER NOT NULL, crc INTEGER NOT NULL,"
		       " epoch INTEGER NOT NULL DEFAULT 0, parent TEXT NOT NULL DEFAULT '',"
		       " flags INTEGER NOT NULL DEFAULT 0, orig TEXT NOT NULL DEFAULT '',"
		       " unit INTEGER NOT NULL DEFAULT 0);"
		       "CREATE TABLE IF NOT EXISTS snapshots(uuid TEXT PRIMARY KEY,"
		       " vol_uuid TEXT NOT NULL, name TEXT NOT NULL, seq INTEGER NOT NULL,"
		       " created INTEGER NOT NULL, size INTEGER NOT NULL, flags INTEGER NOT NULL,"
		       " crc INTEGER NOT NULL);");
}

/*
 * The -shm file on a full file system.  The first connection of the
 * process to a WAL database truncates store.db-shm to 3 bytes and grows it
 * again with a one-byte write per 4 KiB page (32 KiB: the first wal-index
 * region).  The 7 blocks the truncation frees are not enough: ext4 reuses
 * them only after its journal's next commit, and the file, regrown page by
 * page into scattered blocks, can need an extent block too.  With not one
 * block free the open failed in 6 of 93 starts (SQLITE_IOERR_SHMSIZE,
 * ENOSPC on the last page's write; the syncfs retry of open_schema did not
 * help, the 7 blocks were there but one more was needed).
 *
 * So DIR/store.reserve holds CATALOG_SPACE_RESERVE bytes of blocks, taken
 * whenever an open finds it short and there is space.  The first connection
 * of an open on a nearly full file system (under CATALOG_SPACE_LOW
 * available) gives them back (truncate to 0) and commits the file system
 * (syncfs) before SQLite's first statement, then takes them again once the
 * open is done (after a second syncfs, which makes the blocks of SQLite's
 * truncation reusable: the reserve shrinks by what the -shm file kept).
 * Nothing else runs in the store while it opens, so no other writer takes
 * the given blocks.
 */
#define CATALOG_SPACE_RESERVE (256u << 10)
#define CATALOG_SPACE_LOW (4ull << 20)

/* The catalogue connections this process has open, by file: only the
 * first one's open truncates the -shm file (SQLite shares one mapping per
 * file within a process).  The spare thread's connection is a second one. */
#define CATALOG_MAX_CONNS 64
static pthread_mutex_t g_conns_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	sqlite3 *db; /* NULL: a free slot */
	dev_t dev;
	ino_t ino;
} g_conns[CATALOG_MAX_CONNS];

/* Record db, a connection to path.  true: the first of this process to
 * that file (also when the table is full or path cannot be stat'ed: then
 * db is not recorded and the reserve is only given when space is low). */
static bool conn_register(sqlite3 *db, const char *path)
{
	struct stat st;
	bool first = true;
	int i, slot = -1;

	if (stat(path, &st) < 0)
		return true;
	pthread_mutex_lock(&g_conns_lock);
	for (i = 0; i < CATALOG_MAX_CONNS; i++) {
		if (g_conns[i].db == NULL) {
			if (slot < 0)
				slot = i;
		} else if (g_conns[i].dev == st.st_dev && g_conns[i].ino == st.st_ino) {
			first = false;
		}
	}
	if (slot >= 0) {
		g_conns[slot].db = db;
		g_conns[slot].dev = st.st_dev;
		g_conns[slot].ino = st.st_ino;
	}
	pthread_mutex_unlock(&g_conns_lock);
	return first;
}

static void conn_forget(sqlite3 *db)
{
	pthread_mutex_lock(&g_conns_lock);
	for (int i = 0; i < CATALOG_MAX_CONNS; i++)
		if (g_conns[i].db == db)
			g_conns[i].db = NULL;
	pthread_mutex_unlock(&g_conns_lock);
}

static void syncfs_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		syncfs(fd);
		close(fd);
	}
}

/* Give store.reserve's blocks back if DIR's file system is nearly full
 * (and commit, so that they can be reused at once).  true: given. */
static bool space_give(const char *dir)
{
	char path[PATH_MAX];
	struct statvfs vfs;
	struct stat st;

	if (statvfs(dir, &vfs) < 0 ||
	    (uint64_t)vfs.f_bavail * vfs.f_frsize >= CATALOG_SPACE_LOW)
		return false;
	snprintf(path, sizeof(path), "%s/store.reserve", dir);
	if (stat(path, &st) < 0 || st.st_blocks == 0 || truncate(path, 0) < 0)
		return false;
	syncfs_dir(dir);
	return true;
}

/* Take store.reserve's blocks again (any it lacks), best effort; after
 * space_give, first commit the blocks SQLite's truncation freed. */
static void space_take(const char *dir, bool gave)
{
	char path[PATH_MAX];
	struct stat st;
	int fd;

	snprintf(path, sizeof(path), "%s/store.reserve", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	if (fstat(fd, &st) == 0 && (uint64_t)st.st_blocks * 512 < CATALOG_SPACE_RESERVE) {
		if (gave)
			syncfs_dir(dir);
		/* on ENOSPC ext4 keeps what it allocated: the next open takes the rest */
		if (fallocate(fd, 0, 0, CATALOG_SPACE_RESERVE) < 0 && errno != EOPNOTSUPP)
			tsr_warn("catalogue: reserve %u bytes for the next open on a full file "
				 "system (%s): %s", CATALOG_SPACE_RESERVE, path, strerror(errno));
	}
	if (gave)
		tsr_info("catalogue: the file system of %s is nearly full: %s gave its blocks "
			 "to the open (store.db-shm is regrown at each start)", dir, path);
	close(fd);
}

static int open_schema(sqlite3 *db, const char *dir)
{
	int ret = schema_exec(db), fd;

	if (ret == 0)
		return 0;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		syncfs(fd);
		close(fd);
	}
	ret = schema_exec(db);
	if (ret == 0)
		tsr_warn("catalogue: opened on the second try, after a syncfs (a full file "
			 "system: store.db-shm's blocks freed by SQLite were not reusable yet)");
	return ret;
}

int catalog_open(const char *dir, const char *device, sqlite3 **out)
{
	char path[4096], val[4096];
	sqlite3 *db = NULL;
	struct vol_row *rows = NULL;
	bool first, gave;
	size_t n;
	int ret;

	snprintf(path, sizeof(path), "%s/store.db", dir);
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
	    SQLITE_OK) {
		tsr_error("catalogue: open %s: %s", path, db ? sqlite3_errmsg(db) : "no memory");
		ret = -EIO;
		goto err;
	}
	sqlite3_busy_timeout(db, 5000);
	/* A full file system: the -wal and -shm files stay across a clean close,
	 * with their blocks (SQLite writes the WAL from its start again after a
	 * checkpoint), and the WAL has CATALOG_WAL_RESERVE bytes of blocks from
	 * the start, so that a volume delete, the way to free space, can still
	 * commit when not one block is free.  The -shm file is truncated by
	 * the first connection and grown again: store.reserve's blocks are
	 * given back for it first when the file system is nearly full. */
	sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &(int){1});
	reserve_wal(path);
	first = conn_register(db, path);
	gave = first && space_give(dir);
	ret = open_schema(db, dir);
	if (first)
		space_take(dir, gave);
	if (ret)
		goto err;
	ret = add_epoch_column(db);
	if (ret)
		goto err;
	ret = meta_get(db, "format", val, sizeof(val));
	if (ret == -ENOENT) {
		char fmt[16];

		snprintf(fmt, sizeof(fmt), "%d", STORE_FORMAT_VERSION);
		ret = db_exec(db, "BEGIN IMMEDIATE");
		if (ret == 0)
			ret = meta_set(db, "format", fmt);
		if (ret == 0)
			ret = meta_set(db, "device", device ? device : "");
		if (ret == 0)
			ret = db_exec(db, "COMMIT");
		else
			db_exec(db, "ROLLBACK");
		if (ret)
			goto err;
	} else if (ret) {
		goto err;
	} else if (atoi(val) != STORE_FORMAT_VERSION) {
		tsr_error("catalogue: %s has format %s, this tessera reads format %d", path, val,
			  STORE_FORMAT_VERSION);
		ret = -EINVAL;
		goto err;
	} else {
		ret = meta_get(db, "device", val, sizeof(val));
		if (ret)
			goto err;
		if (strcmp(val, device ? device : "") != 0) {
			tsr_error("catalogue: store %s was created %s%s, opened %s%s; use the "
				  "same --device",
				  dir, val[0] ? "on device " : "with data files", val,
				  device ? "with device " : "without a device",
				  device ? device : "");
			ret = -EINVAL;
			goto err;
		}
	}
	/* verify every row now: a damaged catalogue must stop the open */
	ret = catalog_list(db, false, &rows, &n);
	free(rows);
	if (ret)
		goto err;
	{
		struct snap_row *srows = NULL;

		ret = catalog_snap_list(db, NULL, &srows, &n);
		free(srows);
		if (ret)
			goto err;
	}
	*out = db;
	return 0;
err:
	conn_forget(db);
	sqlite3_close(db);
	return ret;
}

void catalog_close(sqlite3 *db)
{
	conn_forget(db);
	sqlite3_close(db);
}

#define ROW_COLUMNS "name, uuid, size, created, dev_offset, crc, epoch, parent, flags, orig, unit"

static int get_by(sqlite3 *db, const char *sql, const char *key, struct vol_row *row)
{
	sqlite3_stmt *st;
	int rc, ret;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL))
		return -EIO;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		ret = row_from_stmt(st, row);
	else if (rc == SQLITE_DONE)
		ret = -ENOENT;
	else
		ret = -EIO;
	sqlite3_finalize(st);
	return ret;
}

/* Hidden rows are not found by name (their names are internal). */
int catalog_get(sqlite3 *db, const char *name, struct vol_row *row)
{
	int ret = get_by(db, "SELECT " ROW_COLUMNS " FROM volumes WHERE name = ?", name, row);

	if (ret == 0 && (row->flags & VOL_HIDDEN))
		ret = -ENOENT;
	return ret;
}

int catalog_get_uuid(sqlite3 *db, const char *uuid, struct vol_row *row)
{
	return get_by(db, "SELECT " ROW_COLUMNS " FROM volumes WHERE uuid = ?", uuid, row);
}

/* Decoders of one result row into an element of a row array (collect_rows). */
typedef int (*row_decode_fn)(sqlite3_stmt *st, void *elem);

static int decode_vol(sqlite3_stmt *st, void *elem)
{
	return row_from_stmt(st, elem);
}

/*
 * Step prepared statement st to the end, decoding each row into a growing
 * array of elements of elem_size bytes.  Finalizes st.  0 with *rows_out
 * malloc'd (NULL when empty), or -ENOMEM/-EIO/the decoder's error.
 */
static int collect_rows(sqlite3_stmt *st, size_t elem_size, row_decode_fn decode,
			void **rows_out, size_t *count)
{
	char *rows = NULL, *tmp;
	size_t n = 0, cap = 0;
	int rc, ret = 0;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			tmp = realloc(rows, cap * elem_size);
			if (tmp == NULL) {
				ret = -ENOMEM;
				break;
			}
			rows = tmp;
		}
		ret = decode(st, rows + n * elem_size);
		if (ret)
			break;
		n++;
	}
	if (ret == 0 && rc != SQLITE_DONE)
		ret = -EIO;
	sqlite3_finalize(st);
	if (ret) {
		free(rows);
		return ret;
	}
	*rows_out = rows;
	*count = n;
	return 0;
}

int catalog_list(sqlite3 *db, bool by_extent, struct vol_row **rows_out, size_t *count)
{
	const char *sql = by_extent ? "SELECT " ROW_COLUMNS " FROM volumes ORDER BY dev_offset"
				    : "SELECT " ROW_COLUMNS " FROM volumes ORDER BY name";
	sqlite3_stmt *st;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL))
		return -EIO;
	return collect_rows(st, sizeof(**rows_out), decode_vol, (void **)rows_out, count);
}

int catalog_insert(sqlite3 *db, const struct vol_row *row)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(
		db, "INSERT INTO volumes(" ROW_COLUMNS ") VALUES (?,?,?,?,?,?,?,?,?,?,?)", -1, &st,
		NULL))
		return -EIO;
	sqlite3_bind_text(st, 1, row->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, row->uuid, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)row->size);
	sqlite3_bind_int64(st, 4, row->created);
	sqlite3_bind_int64(st, 5, row->dev_offset);
	sqlite3_bind_int64(st, 6, catalog_row_crc(row));
	sqlite3_bind_int64(st, 7, (sqlite3_int64)row->epoch);
	sqlite3_bind_text(st, 8, row->parent, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 9, row->flags);
	sqlite3_bind_text(st, 10, row->orig, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 11, row->unit);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc == SQLITE_CONSTRAINT)
		return -EEXIST;
	if (rc != SQLITE_DONE) {
		tsr_error("catalogue: insert volume %s: %s", row->name, sqlite3_errmsg(db));
		return -EIO;
	}
	return 0;
}

int catalog_delete(sqlite3 *db, const char *name)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db, "DELETE FROM volumes WHERE name = ?", -1, &st, NULL))
		return -EIO;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		tsr_error("catalogue: delete volume %s: %s", name, sqlite3_errmsg(db));
		return sql_errno(rc);
	}
	return sqlite3_changes(db) == 1 ? 0 : -ENOENT;
}

int catalog_update_size(sqlite3 *db, const struct vol_row *row)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db, "UPDATE volumes SET size = ?, crc = ? WHERE name = ?", -1, &st,
			       NULL))
		return -EIO;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)row->size);
	sqlite3_bind_int64(st, 2, catalog_row_crc(row));
	sqlite3_bind_text(st, 3, row->name, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		tsr_error("catalogue: resize volume %s: %s", row->name, sqlite3_errmsg(db));
		return -EIO;
	}
	return sqlite3_changes(db) == 1 ? 0 : -ENOENT;
}

int catalog_update_epoch(sqlite3 *db, const struct vol_row *row)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db, "UPDATE volumes SET epoch = ?, crc = ? WHERE name = ?", -1, &st,
			       NULL))
		return -EIO;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)row->epoch);
	sqlite3_bind_int64(st, 2, catalog_row_crc(row));
	sqlite3_bind_text(st, 3, row->name, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		tsr_error("catalogue: set epoch of volume %s: %s", row->name, sqlite3_errmsg(db));
		return -EIO;
	}
	return sqlite3_changes(db) == 1 ? 0 : -ENOENT;
}

int catalog_update_row(sqlite3 *db, const char *old_name, const struct vol_row *row)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db,
			       "UPDATE volumes SET name = ?, parent = ?, flags = ?, orig = ?, crc = ? "
			       "WHERE name = ?",
			       -1, &st, NULL))
		return -EIO;
	sqlite3_bind_text(st, 1, row->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, row->parent, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, row->flags);
	sqlite3_bind_text(st, 4, row->orig, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, catalog_row_crc(row));
	sqlite3_bind_text(st, 6, old_name, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		tsr_error("catalogue: update volume %s: %s", row->name, sqlite3_errmsg(db));
		return -EIO;
	}
	return sqlite3_changes(db) == 1 ? 0 : -ENOENT;
}

int catalog_begin(sqlite3 *db)
{
	return db_exec(db, "BEGIN IMMEDIATE");
}

int catalog_commit(sqlite3 *db)
{
	int ret = db_exec(db, "COMMIT");

	if (ret)
		db_exec(db, "ROLLBACK");
	return ret;
}

void catalog_rollback(sqlite3 *db)
{
	db_exec(db, "ROLLBACK");
}

#define SNAP_COLUMNS "uuid, vol_uuid, name, seq, created, size, flags, crc"

static int snap_from_stmt(sqlite3_stmt *st, struct snap_row *row)
{
	const char *uuid = (const char *)sqlite3_column_text(st, 0);
	const char *vu = (const char *)sqlite3_column_text(st, 1);
	const char *name = (const char *)sqlite3_column_text(st, 2);
	uint32_t stored;

	memset(row, 0, sizeof(*row));
	snprintf(row->uuid, sizeof(row->uuid), "%s", uuid ? uuid : "");
	snprintf(row->vol_uuid, sizeof(row->vol_uuid), "%s", vu ? vu : "");
	snprintf(row->name, sizeof(row->name), "%s", name ? name : "");
	row->seq = (uint64_t)sqlite3_column_int64(st, 3);
	row->created = sqlite3_column_int64(st, 4);
	row->size = (uint64_t)sqlite3_column_int64(st, 5);
	row->flags = (uint32_t)sqlite3_column_int64(st, 6);
	stored = (uint32_t)sqlite3_column_int64(st, 7);
	if (uuid == NULL || strlen(uuid) != 36 || vu == NULL || strlen(vu) != 36 ||
	    name == NULL || strlen(name) >= sizeof(row->name) ||
	    stored != catalog_snap_crc(row)) {
		tsr_error("catalogue: snapshot %s (%s): row checksum mismatch (stored %08x, "
			  "computed %08x); the catalogue was modified outside tessera or is damaged",
			  row->name, row->uuid, stored, catalog_snap_crc(row));
		return -EUCLEAN;
	}
	return 0;
}

static int decode_snap(sqlite3_stmt *st, void *elem)
{
	return snap_from_stmt(st, elem);
}

int catalog_snap_list(sqlite3 *db, const char *vol_uuid, struct snap_row **rows_out,
		      size_t *count)
{
	const char *sql = vol_uuid ? "SELECT " SNAP_COLUMNS " FROM snapshots WHERE vol_uuid = ? "
				     "ORDER BY seq"
				   : "SELECT " SNAP_COLUMNS " FROM snapshots ORDER BY vol_uuid, seq";
	sqlite3_stmt *st;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL))
		return -EIO;
	if (vol_uuid)
		sqlite3_bind_text(st, 1, vol_uuid, -1, SQLITE_STATIC);
	return collect_rows(st, sizeof(**rows_out), decode_snap, (void **)rows_out, count);
}

int catalog_snap_get(sqlite3 *db, const char *uuid, struct snap_row *row)
{
	sqlite3_stmt *st;
	int rc, ret;

	if (sqlite3_prepare_v2(db, "SELECT " SNAP_COLUMNS " FROM snapshots WHERE uuid = ?", -1,
			       &st, NULL))
		return -EIO;
	sqlite3_bind_text(st, 1, uuid, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		ret = snap_from_stmt(st, row);
	else if (rc == SQLITE_DONE)
		ret = -ENOENT;
	else
		ret = -EIO;
	sqlite3_finalize(st);
	return ret;
}

int catalog_snap_insert(sqlite3 *db, const struct snap_row *row)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db, "INSERT INTO snapshots(" SNAP_COLUMNS ") VALUES (?,?,?,?,?,?,?,?)",
			       -1, &st, NULL))
		return -EIO;
	sqlite3_bind_text(st, 1, row->uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, row->vol_uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, row->name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)row->seq);
	sqlite3_bind_int64(st, 5, row->created);
	sqlite3_bind_int64(st, 6, (sqlite3_int64)row->size);
	sqlite3_bind_int64(st, 7, row->flags);
	sqlite3_bind_int64(st, 8, catalog_snap_crc(row));
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		tsr_error("catalogue: insert snapshot %s: %s", row->name, sqlite3_errmsg(db));
		return rc == SQLITE_CONSTRAINT ? -EEXIST : -EIO;
	}
	return 0;
}

int catalog_snap_update_flags(sqlite3 *db, const struct snap_row *row)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db, "UPDATE snapshots SET flags = ?, crc = ? WHERE uuid = ?", -1,
			       &st, NULL))
		return -EIO;
	sqlite3_bind_int64(st, 1, row->flags);
	sqlite3_bind_int64(st, 2, catalog_snap_crc(row));
	sqlite3_bind_text(st, 3, row->uuid, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		tsr_error("catalogue: update snapshot %s: %s", row->name, sqlite3_errmsg(db));
		return -EIO;
	}
	return sqlite3_changes(db) == 1 ? 0 : -ENOENT;
}

int catalog_snap_finalize(sqlite3 *db, const struct snap_row *row)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db, "UPDATE snapshots SET name = ?, seq = ?, created = ?, "
				   "flags = ?, crc = ? WHERE uuid = ? AND vol_uuid = ?",
			       -1, &st, NULL))
		return -EIO;
	sqlite3_bind_text(st, 1, row->name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)row->seq);
	sqlite3_bind_int64(st, 3, row->created);
	sqlite3_bind_int64(st, 4, row->flags);
	sqlite3_bind_int64(st, 5, catalog_snap_crc(row));
	sqlite3_bind_text(st, 6, row->uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 7, row->vol_uuid, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		tsr_error("catalogue: finish snapshot %s (%s): %s", row->name, row->uuid,
			  sqlite3_errmsg(db));
		return -EIO;
	}
	return sqlite3_changes(db) == 1 ? 0 : -ENOENT;
}

int catalog_snap_delete(sqlite3 *db, const char *uuid)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db, "DELETE FROM snapshots WHERE uuid = ?", -1, &st, NULL))
		return -EIO;
	sqlite3_bind_text(st, 1, uuid, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		tsr_error("catalogue: delete snapshot %s: %s", uuid, sqlite3_errmsg(db));
		return -EIO;
	}
	return 0;
}

int catalog_clone_count(sqlite3 *db, const char *snap_uuid, uint32_t *count)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db, "SELECT count(*) FROM volumes WHERE parent = ?", -1, &st,
			       NULL))
		return -EIO;
	sqlite3_bind_text(st, 1, snap_uuid, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	*count = rc == SQLITE_ROW ? (uint32_t)sqlite3_column_int64(st, 0) : 0;
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : -EIO;
}
