/*
 * Helpers shared by the store unit tests: a scratch directory on a disk file
 * system (O_DIRECT does not work on tmpfs), the one-open-store fixture, SQL on
 * the catalogue behind the store's back, synchronous wrappers around the
 * asynchronous data path, and deterministic block contents.
 */
#ifndef TSR_STORE_TEST_H
#define TSR_STORE_TEST_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "tessera/common.h"
#include "tessera/io.h"
#include "tessera/store.h"

#define BS     4096u
#define UNUSED __attribute__((unused))

/* Parent of scratch directories: TSR_TEST_DIR or /var/tmp (disk, not tmpfs). */
static UNUSED int scratch_dir(char *out, size_t len)
{
	const char *base = getenv("TSR_TEST_DIR");

	snprintf(out, len, "%s/tsr-store-XXXXXX", base ? base : "/var/tmp");
	return mkdtemp(out) ? 0 : -errno;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static UNUSED void rm_rf(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The fixture of tests that need one store, open, in a scratch directory:
 * cmocka setup and teardown, *state is a struct store_env. */
struct store_env {
	char dir[512];           /* the scratch directory, removed by the teardown */
	struct tsr_store *store; /* open; a test that closes it sets NULL or reopens */
};

static UNUSED int store_env_setup(void **state)
{
	struct store_env *e = calloc(1, sizeof(*e));

	if (e == NULL)
		return -1;
	if (scratch_dir(e->dir, sizeof(e->dir))) {
		free(e);
		return -1;
	}
	if (tsr_store_open(e->dir, &(struct tsr_store_opts){0}, &e->store)) {
		rm_rf(e->dir);
		free(e);
		return -1;
	}
	*state = e;
	return 0;
}

static UNUSED int store_env_teardown(void **state)
{
	struct store_env *e = *state;

	tsr_store_close(e->store);
	rm_rf(e->dir);
	free(e);
	return 0;
}

/* Run STMT on DIR's catalogue (DIR/store.db) with the store closed, as damage
 * or an older version would leave it: 0, or -1 if SQLite refused. */
static UNUSED int store_sql(const char *dir, const char *stmt)
{
	char path[PATH_MAX];
	sqlite3 *db;
	int rc;

	snprintf(path, sizeof(path), "%s/store.db", dir);
	if (sqlite3_open(path, &db) != SQLITE_OK) {
		sqlite3_close(db);
		return -1;
	}
	rc = sqlite3_exec(db, stmt, NULL, NULL, NULL);
	sqlite3_close(db);
	return rc == SQLITE_OK ? 0 : -1;
}

struct done {
	int calls;
	int status;
};

static UNUSED void done_cb(void *cb_arg, int status)
{
	struct done *d = cb_arg;

	d->calls++;
	d->status = status;
}

/*
 * How long a test polls for a completion before it gives up: a guard against
 * a hang, never a time the test asserts.  Polling loops are bounded by time,
 * not by a count of polls: a poll that does not wait costs 10-30 ns with
 * io_uring (no system call), so a million of them were over in 10-30 ms,
 * less than one fdatasync on a busy disk, and store_snap_ut failed under
 * load (8 of 28 runs at load 5-8: completions took 4-60 ms there), with
 * every request still on its way.
 */
#define TEST_POLL_LIMIT_NS (60ull * 1000000000ull)

static UNUSED uint64_t test_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* True while a polling loop started at START (test_now_ns) may go on. */
static UNUSED bool test_poll_on(uint64_t start)
{
	return test_now_ns() - start < TEST_POLL_LIMIT_NS;
}

/* Run io until d has been called back (or fail with -ETIMEDOUT after
 * TEST_POLL_LIMIT_NS). */
static UNUSED int wait_done(struct tsr_io *io, struct done *d)
{
	uint64_t start = test_now_ns();

	while (d->calls == 0) {
		if (tsr_io_submit(io) < 0)
			return -EIO;
		if (tsr_io_poll(io, 0, tsr_io_inflight(io) > 0) < 0)
			return -EIO;
		if (!test_poll_on(start))
			return -ETIMEDOUT;
	}
	/* never twice */
	tsr_io_submit(io);
	tsr_io_poll(io, 0, false);
	return d->calls == 1 ? d->status : -EPROTO;
}

static UNUSED int sread(struct tsr_svol *v, struct tsr_io *io, uint64_t off, uint32_t len,
			void *buf)
{
	struct done d = {0};
	int ret = tsr_svol_read(v, io, off, len, buf, done_cb, &d);

	return ret ? ret : wait_done(io, &d);
}

static UNUSED int swrite(struct tsr_svol *v, struct tsr_io *io, uint64_t off, uint32_t len,
			 const void *buf, unsigned flags)
{
	struct done d = {0};
	int ret = tsr_svol_write(v, io, off, len, buf, flags, done_cb, &d);

	return ret ? ret : wait_done(io, &d);
}

static UNUSED int sflush(struct tsr_svol *v, struct tsr_io *io)
{
	struct done d = {0};
	int ret = tsr_svol_flush(v, io, done_cb, &d);

	return ret ? ret : wait_done(io, &d);
}

static UNUSED int strim(struct tsr_svol *v, struct tsr_io *io, uint64_t off, uint64_t len)
{
	struct done d = {0};
	int ret = tsr_svol_trim(v, io, off, len, done_cb, &d);

	return ret ? ret : wait_done(io, &d);
}

static UNUSED int szeroes(struct tsr_svol *v, struct tsr_io *io, uint64_t off, uint64_t len,
			  unsigned flags)
{
	struct done d = {0};
	int ret = tsr_svol_write_zeroes(v, io, off, len, flags, done_cb, &d);

	return ret ? ret : wait_done(io, &d);
}

/* Every 8-byte word names the seed and the volume offset it was written at. */
static UNUSED void fill(void *buf, size_t len, uint64_t seed, uint64_t offset)
{
	uint64_t *w = buf;
	size_t i;

	for (i = 0; i < len / 8; i++)
		w[i] = (seed << 48) ^ (offset + i * 8);
}

static UNUSED bool is_filled(const void *buf, size_t len, uint64_t seed, uint64_t offset)
{
	const uint64_t *w = buf;
	size_t i;

	for (i = 0; i < len / 8; i++)
		if (w[i] != ((seed << 48) ^ (offset + i * 8)))
			return false;
	return true;
}

static UNUSED bool is_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/* An io of the given kind, optionally with a fault spec; NULL if unavailable. */
static UNUSED struct tsr_io *make_io(enum tsr_io_kind kind, const char *fault)
{
	struct tsr_io_opts o = {.kind = kind, .queue_depth = 64, .fault_spec = fault};
	struct tsr_io *io = NULL;

	if (tsr_io_create(&o, &io))
		return NULL;
	return io;
}

/* Files in DIR/volumes/; with prefix set, only those whose name starts with
 * it (a uuid: that volume's or layer's files); -1 if the directory cannot be
 * read. */
static UNUSED int store_files_count(const char *dir, const char *prefix)
{
	char path[PATH_MAX];
	struct dirent *de;
	int n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "%s/volumes", dir);
	d = opendir(path);
	if (d == NULL)
		return -1;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.' &&
		    (prefix == NULL || strncmp(de->d_name, prefix, strlen(prefix)) == 0))
			n++;
	closedir(d);
	return n;
}

/* Path of a volume file: DIR/volumes/<uuid>.<ext>. */
static UNUSED void vol_file(const char *dir, const char *uuid, const char *ext, char *out)
{
	snprintf(out, PATH_MAX, "%s/volumes/%s.%s", dir, uuid, ext);
}

/* Read entry {cur, prev} of block b straight from the crc file. */
static UNUSED void read_entry(const char *dir, const char *uuid, uint64_t b, uint32_t *cur,
			      uint32_t *prev)
{
	char path[PATH_MAX];
	uint32_t e[2] = {0xdead, 0xdead};
	int fd;

	vol_file(dir, uuid, "crc", path);
	fd = open(path, O_RDONLY);
	if (fd >= 0) {
		if (pread(fd, e, 8, (off_t)(b * 8)) != 8)
			e[0] = e[1] = 0xdead;
		close(fd);
	}
	*cur = e[0];
	*prev = e[1];
}

/* Number of set bits in a volume's dirty bitmap file, -1 on error. */
static UNUSED int count_dirty_bits(const char *dir, const char *uuid)
{
	char path[PATH_MAX];
	uint8_t b[4096];
	ssize_t n, i;
	int fd, bits = 0;

	vol_file(dir, uuid, "dirty", path);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	while ((n = read(fd, b, sizeof(b))) > 0)
		for (i = 0; i < n; i++)
			bits += __builtin_popcount(b[i]);
	close(fd);
	return bits;
}

/* crc32c(block) ^ Z, the stored form of an entry. */
static UNUSED uint32_t stored_crc(const void *block)
{
	static uint8_t zero[BS];

	return tsr_crc32c(0, block, BS) ^ tsr_crc32c(0, zero, BS);
}

#endif
