/*
 * The embedded metadata backend ("sqlite"): one SQLite file (WAL journal,
 * synchronous=FULL, so a committed change survives power loss), used by the
 * meta node's own threads and, through engine/meta/meta_server.c, by every
 * other node.  A mutex serialises callers; a condition variable wakes
 * watchers when the revision moves.
 *
 * Schema (format 1):
 *   meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)
 *     'format' = 1; 'rev' = the store's revision (the last change's, 0 when
 *     nothing ever changed); 'compacted' = history holds every change with a
 *     revision above it.
 *   kv(key TEXT PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
 *      mod_rev INTEGER NOT NULL, lease INTEGER NOT NULL, crc INTEGER NOT NULL)
 *   leases(id INTEGER PRIMARY KEY, ttl_ms INTEGER NOT NULL)
 *   history(rev INTEGER PRIMARY KEY, key TEXT NOT NULL, value BLOB NOT NULL,
 *           create_rev INTEGER NOT NULL, lease INTEGER NOT NULL,
 *           deleted INTEGER NOT NULL, crc INTEGER NOT NULL)
 *     one row per change (puts and deletes, each its own revision), the
 *     last `history` of them (META_HISTORY_DEFAULT); the rest is compacted.
 *   crc: CRC32C (tsr_crc32c, seed 0) over this byte string, stored unsigned:
 *       +0        key, its bytes and a terminating NUL (k = len(key)+1 bytes)
 *       +k        value length, u32 little endian
 *       +k+4      value bytes (v of them)
 *       +k+4+v    create_rev, u64 little endian
 *       +k+12+v   mod_rev (history: rev), u64 little endian
 *       +k+20+v   lease, u64 little endian
 *       +k+28+v   deleted, 1 byte (0 in kv)
 *   Every row read is checked; a mismatch is -EUCLEAN with a log line.
 *
 * Every change (put, delete, each key deleted by a lease ending) takes the
 * next revision; one call's changes commit in one transaction together with
 * the 'rev' row.  Lease deadlines live in memory (CLOCK_MONOTONIC): each
 * lease in the file gets its full TTL again at open; lapsed leases are
 * reaped at the start of every call and while a watch waits.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "meta/internal.h"

#define FORMAT_VERSION 1
#define WAIT_SLICE_MS 20 /* a waiting watch checks leases this often */

struct lease {
	uint64_t id;
	uint32_t ttl_ms;
	int64_t deadline; /* tsr_mono_ms() after which the lease has lapsed */
	int end_err;      /* lapsed and its end failed with this (-errno), 0: not yet tried or
			   * ok; reap retries at every call, logging only a change of it */
	unsigned end_tries; /* failed ends since end_err was last logged */
};

struct sqlite_meta {
	sqlite3 *db;
	char *path;
	pthread_mutex_t lock;     /* held by every op: one caller at a time */
	pthread_cond_t changed;   /* broadcast when rev moves (CLOCK_MONOTONIC) */
	uint64_t rev;             /* committed revision */
	uint64_t compacted;       /* history holds every change after it */
	uint64_t txn_rev;         /* inside a transaction: revision of its last change */
	unsigned history;         /* changes kept for watch */
	struct lease *leases;     /* live leases, unordered */
	size_t n_leases, cap_leases;
	bool quiet;               /* a lapsed lease's end retried with its failure logged
				   * already: write_failed and meta_space_spend log at debug */
	bool full;                /* a statement met SQLITE_FULL: spend the reserve
				   * at the rollback (meta_space_spend) */
};

struct row {
	const char *key;
	const void *value;
	size_t value_len;
	uint64_t create_rev, mod_rev, lease;
	int deleted;
};

static uint32_t row_crc(const struct row *r)
{
	uint8_t buf[28];
	uint32_t crc, v32 = htole32((uint32_t)r->value_len);
	uint64_t v;

	crc = tsr_crc32c(0, r->key, strlen(r->key) + 1);
	crc = tsr_crc32c(crc, &v32, 4);
	if (r->value_len)
		crc = tsr_crc32c(crc, r->value, r->value_len);
	v = htole64(r->create_rev);
	memcpy(buf, &v, 8);
	v = htole64(r->mod_rev);
	memcpy(buf + 8, &v, 8);
	v = htole64(r->lease);
	memcpy(buf + 16, &v, 8);
	buf[24] = r->deleted ? 1 : 0;
	return tsr_crc32c(crc, buf, 25);
}

/* ---- SQL helpers --------------------------------------------------------- */

/*
 * A write statement failed with rc: log it, return -errno.  SQLITE_FULL (a
 * commit, or a change inside a transaction, needed blocks its file system
 * does not have: once the WAL's reserve is used up because a checkpoint could
 * not grow meta.db, see "A full file system" below) is -ENOSPC with what to
 * do; the transaction is rolled back by the caller, nothing of it is kept.
 * Anything else is -EIO.
 */
static int write_failed(struct sqlite_meta *s, const char *what, int rc, const char *msg)
{
	if ((rc & 0xff) == SQLITE_FULL) {
		s->full = true;
		if (s->quiet) {
			tsr_debug("meta: %s: %s: the file system is still full", what, s->path);
			return -ENOSPC;
		}
		tsr_error("meta: %s: %s: the file system is full (free space on it: delete "
			  "volumes or snapshots); nothing of the change was kept",
			  what, s->path);
		return -ENOSPC;
	}
	if (s->quiet)
		tsr_debug("meta: %s: %s: %s", what, s->path, msg ? msg : "?");
	else
		tsr_error("meta: %s: %s: %s", what, s->path, msg ? msg : "?");
	return -EIO;
}

static int db_exec(struct sqlite_meta *s, const char *what, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK) {
		int ret = write_failed(s, what, rc, msg);

		sqlite3_free(msg);
		return ret;
	}
	return 0;
}

static int prep(struct sqlite_meta *s, const char *sql, sqlite3_stmt **st)
{
	if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK) {
		tsr_error("meta: %s: prepare \"%s\": %s", s->path, sql, sqlite3_errmsg(s->db));
		*st = NULL;
		return -EIO;
	}
	return 0;
}

/* Run a statement that returns no row; finalizes it.  0, -ENOSPC or -EIO
 * (logged). */
static int step_done(struct sqlite_meta *s, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);

	if (rc != SQLITE_DONE) {
		int ret = write_failed(s, what, rc, sqlite3_errmsg(s->db));

		sqlite3_finalize(st);
		return ret;
	}
	sqlite3_finalize(st);
	return 0;
}

static void bind_value(sqlite3_stmt *st, int col, const void *value, size_t len)
{
	/* a NULL pointer would bind SQL NULL; "" binds an empty blob */
	sqlite3_bind_blob(st, col, len ? value : "", (int)len, SQLITE_STATIC);
}

static int meta_row_get(struct sqlite_meta *s, const char *key, uint64_t *val)
{
	sqlite3_stmt *st;
	int rc, ret;

	ret = prep(s, "SELECT value FROM meta WHERE key = ?", &st);
	if (ret)
		return ret;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*val = (uint64_t)sqlite3_column_int64(st, 0);
		ret = 0;
	} else {
		ret = rc == SQLITE_DONE ? -ENOENT : -EIO;
	}
	sqlite3_finalize(st);
	return ret;
}

static int meta_row_set(struct sqlite_meta *s, const char *key, uint64_t val)
{
	sqlite3_stmt *st;
	int ret;

	ret = prep(s, "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", &st);
	if (ret)
		return ret;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)val);
	return step_done(s, st, "write revision");
}

/* ---- transactions ------------------------------------------------------- */

static int txn_begin(struct sqlite_meta *s)
{
	int ret = db_exec(s, "begin transaction", "BEGIN IMMEDIATE");

	s->txn_rev = s->rev;
	return ret;
}

static void meta_space_spend(struct sqlite_meta *s);

static void txn_rollback(struct sqlite_meta *s)
{
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	s->txn_rev = s->rev;
	if (s->full) {
		s->full = false;
		meta_space_spend(s); /* for the next commit: this one stays refused */
	}
}

/* Persist the new revision, trim the history, commit; rolls back on error. */
static int txn_commit(struct sqlite_meta *s)
{
	uint64_t floor = s->compacted;
	int ret = 0;

	if (s->txn_rev != s->rev) {
		ret = meta_row_set(s, "rev", s->txn_rev);
		if (ret == 0 && s->txn_rev - s->compacted > s->history) {
			sqlite3_stmt *st;

			floor = s->txn_rev - s->history;
			ret = prep(s, "DELETE FROM history WHERE rev <= ?", &st);
			if (ret == 0) {
				sqlite3_bind_int64(st, 1, (sqlite3_int64)floor);
				ret = step_done(s, st, "compact history");
			}
			if (ret == 0)
				ret = meta_row_set(s, "compacted", floor);
		}
	}
	if (ret == 0)
		ret = db_exec(s, "commit", "COMMIT");
	if (ret) {
		txn_rollback(s);
		return ret;
	}
	if (s->txn_rev != s->rev) {
		s->rev = s->txn_rev;
		s->compacted = floor;
		pthread_cond_broadcast(&s->changed);
	}
	return 0;
}

/* Inside a transaction: record one change in the history; *rev its revision. */
static int record_change(struct sqlite_meta *s, struct row *r)
{
	sqlite3_stmt *st;
	int ret;

	r->mod_rev = s->txn_rev + 1;
	ret = prep(s, "INSERT INTO history(rev, key, value, create_rev, lease, deleted, crc) "
		      "VALUES (?,?,?,?,?,?,?)", &st);
	if (ret)
		return ret;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)r->mod_rev);
	sqlite3_bind_text(st, 2, r->key, -1, SQLITE_STATIC);
	bind_value(st, 3, r->value, r->value_len);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)r->create_rev);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)r->lease);
	sqlite3_bind_int(st, 6, r->deleted);
	sqlite3_bind_int64(st, 7, row_crc(r));
	ret = step_done(s, st, "record change");
	if (ret == 0)
		s->txn_rev = r->mod_rev;
	return ret;
}

/* ---- rows --------------------------------------------------------------- */

#define KV_COLUMNS "key, value, create_rev, mod_rev, lease, crc"

/* Check the row at st (KV_COLUMNS) and copy it into kv. */
static int kv_from_stmt(struct sqlite_meta *s, sqlite3_stmt *st, struct tsr_meta_kv *kv)
{
	struct row r = {
		.create_rev = (uint64_t)sqlite3_column_int64(st, 2),
		.mod_rev = (uint64_t)sqlite3_column_int64(st, 3),
		.lease = (uint64_t)sqlite3_column_int64(st, 4),
	};
	uint32_t stored = (uint32_t)sqlite3_column_int64(st, 5);

	/* pointer first, then its length (SQLite's rule; initialisers are unordered) */
	r.key = (const char *)sqlite3_column_text(st, 0);
	r.value = sqlite3_column_blob(st, 1);
	r.value_len = (size_t)sqlite3_column_bytes(st, 1);

	if (r.key == NULL || (r.value == NULL && r.value_len) || r.value_len > TSR_META_MAX_VALUE ||
	    stored != row_crc(&r)) {
		tsr_error("meta: key %s in %s: row checksum mismatch; the file was modified "
			  "outside tessera or is damaged (restore it, or delete the key)",
			  r.key ? r.key : "(null)", s->path);
		return -EUCLEAN;
	}
	return meta_kv_set(kv, r.key, r.value, r.value_len, r.create_rev, r.mod_rev, r.lease, 0);
}

/* The row of key, checked; -ENOENT when there is none. */
static int kv_read(struct sqlite_meta *s, const char *key, struct tsr_meta_kv *kv)
{
	sqlite3_stmt *st;
	int rc, ret;

	ret = prep(s, "SELECT " KV_COLUMNS " FROM kv WHERE key = ?", &st);
	if (ret)
		return ret;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		ret = kv_from_stmt(s, st, kv);
	} else if (rc == SQLITE_DONE) {
		ret = -ENOENT;
	} else {
		tsr_error("meta: read key %s: %s: %s", key, s->path, sqlite3_errmsg(s->db));
		ret = -EIO;
	}
	sqlite3_finalize(st);
	return ret;
}

/* Inside a transaction: delete key (its create_rev and lease given) as a change. */
static int kv_remove(struct sqlite_meta *s, const char *key, uint64_t create_rev,
		     uint64_t lease)
{
	struct row r = { .key = key, .create_rev = create_rev, .lease = lease, .deleted = 1 };
	sqlite3_stmt *st;
	int ret;

	ret = prep(s, "DELETE FROM kv WHERE key = ?", &st);
	if (ret)
		return ret;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	ret = step_done(s, st, "delete key");
	return ret ?: record_change(s, &r);
}

/* ---- leases ------------------------------------------------------------- */

static struct lease *lease_find(struct sqlite_meta *s, uint64_t id)
{
	for (size_t i = 0; i < s->n_leases; i++)
		if (s->leases[i].id == id)
			return &s->leases[i];
	return NULL;
}

static int lease_add(struct sqlite_meta *s, uint64_t id, uint32_t ttl_ms)
{
	if (s->n_leases == s->cap_leases) {
		size_t cap = s->cap_leases ? s->cap_leases * 2 : 16;
		struct lease *l = realloc(s->leases, cap * sizeof(*l));

		if (l == NULL)
			return -ENOMEM;
		s->leases = l;
		s->cap_leases = cap;
	}
	s->leases[s->n_leases++] = (struct lease){ .id = id, .ttl_ms = ttl_ms,
						   .deadline = tsr_mono_ms() + ttl_ms };
	return 0;
}

/* End lease l: delete its keys (each a change) and its row, in one transaction.
 * lapsed: reap's (a failure is retried: logged once per cause), else a revoke. */
static int lease_end(struct sqlite_meta *s, struct lease *l, bool lapsed)
{
	struct tsr_meta_kv *keys = NULL;
	size_t n = 0, cap = 0;
	sqlite3_stmt *st;
	uint64_t id = l->id;
	int rc, ret;

	ret = txn_begin(s);
	if (ret)
		return ret;
	ret = prep(s, "SELECT key, create_rev FROM kv WHERE lease = ? ORDER BY key", &st);
	if (ret)
		goto out;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *key = (const char *)sqlite3_column_text(st, 0);

		if (n == cap) {
			struct tsr_meta_kv *tmp;

			cap = cap ? cap * 2 : 8;
			tmp = realloc(keys, cap * sizeof(*keys));
			if (tmp == NULL) {
				ret = -ENOMEM;
				break;
			}
			keys = tmp;
		}
		ret = meta_kv_set(&keys[n], key ? key : "", NULL, 0,
				  (uint64_t)sqlite3_column_int64(st, 1), 0, id, 1);
		if (ret)
			break;
		n++;
	}
	if (ret == 0 && rc != SQLITE_DONE)
		ret = -EIO;
	sqlite3_finalize(st);
	for (size_t i = 0; ret == 0 && i < n; i++)
		ret = kv_remove(s, keys[i].key, keys[i].create_rev, id);
	if (ret == 0)
		ret = prep(s, "DELETE FROM leases WHERE id = ?", &st);
	if (ret == 0) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
		ret = step_done(s, st, "delete lease");
	}
out:
	if (ret == 0)
		ret = txn_commit(s);
	else
		txn_rollback(s);
	if (ret == 0) {
		if (l->end_err)
			tsr_info("meta: lease %016llx ended after all, %zu keys deleted (recovered: "
				 "its end had failed with '%s', %u retries not logged)",
				 (unsigned long long)id, n, strerror(-l->end_err), l->end_tries);
		else
			tsr_debug("meta: lease %016llx ended, %zu keys deleted",
				  (unsigned long long)id, n);
		*l = s->leases[--s->n_leases]; /* l points into the array */
	} else if (!lapsed || ret != l->end_err) {
		/* a revoke, or a lapse's first failure or a new cause: said once */
		tsr_error("meta: end lease %016llx: %s%s", (unsigned long long)id, strerror(-ret),
			  lapsed ? " (retried at every metadata call; logged again once it "
			  "succeeds or fails otherwise)" : "");
		if (lapsed) {
			l->end_err = ret;
			l->end_tries = 0;
		}
	} else {
		l->end_tries++;
		tsr_debug("meta: end lease %016llx: %s (again)", (unsigned long long)id,
			  strerror(-ret));
	}
	tsr_meta_kv_free_array(keys, n);
	return ret;
}

/*
 * Delete the keys of every lapsed lease.  A failure (a full file system) is
 * retried at the next call and logged once: ERROR at the first, then only a
 * different cause, and INFO "ended after all" once it succeeds.
 */
static void reap(struct sqlite_meta *s)
{
	int64_t now = tsr_mono_ms();

	for (size_t i = 0; i < s->n_leases;) {
		if (s->leases[i].deadline <= now) {
			int ret;

			if (s->leases[i].end_err == 0)
				tsr_info("meta: lease %016llx lapsed (TTL %u ms); deleting its keys",
					 (unsigned long long)s->leases[i].id, s->leases[i].ttl_ms);
			/* a retry whose failure was logged: only a change is */
			s->quiet = s->leases[i].end_err != 0;
			ret = lease_end(s, &s->leases[i], true);
			s->quiet = false;
			if (ret == 0)
				continue; /* the last lease moved into slot i */
		}
		i++;
	}
}

/* ---- ops -------------------------------------------------------------- */

static int sqlite_get(void *ctx, const char *key, struct tsr_meta_kv *out)
{
	struct sqlite_meta *s = ctx;
	int ret;

	pthread_mutex_lock(&s->lock);
	reap(s);
	ret = kv_read(s, key, out);
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static int sqlite_range(void *ctx, const char *prefix, struct tsr_meta_kv **out, size_t *n,
			uint64_t *rev)
{
	struct sqlite_meta *s = ctx;
	size_t plen = strlen(prefix), cap = 0;
	struct tsr_meta_kv *kvs = NULL;
	sqlite3_stmt *st;
	int rc = SQLITE_DONE, ret;

	*n = 0;
	pthread_mutex_lock(&s->lock);
	reap(s);
	ret = prep(s, "SELECT " KV_COLUMNS " FROM kv WHERE key >= ? ORDER BY key", &st);
	if (ret)
		goto out;
	sqlite3_bind_text(st, 1, prefix, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *key = (const char *)sqlite3_column_text(st, 0);

		if (key == NULL || strncmp(key, prefix, plen) != 0)
			break; /* sorted: past the prefix */
		if (*n == cap) {
			struct tsr_meta_kv *tmp;

			cap = cap ? cap * 2 : 16;
			tmp = realloc(kvs, cap * sizeof(*kvs));
			if (tmp == NULL) {
				ret = -ENOMEM;
				break;
			}
			kvs = tmp;
		}
		ret = kv_from_stmt(s, st, &kvs[*n]);
		if (ret)
			break;
		(*n)++;
	}
	if (ret == 0 && rc != SQLITE_DONE && rc != SQLITE_ROW) {
		tsr_error("meta: range %s: %s: %s", prefix, s->path, sqlite3_errmsg(s->db));
		ret = -EIO;
	}
	sqlite3_finalize(st);
	*rev = s->rev;
out:
	pthread_mutex_unlock(&s->lock);
	*out = kvs;
	return ret;
}

static int sqlite_cas(void *ctx, const char *key, uint64_t expect_rev, const void *value,
		      size_t value_len, uint64_t lease, uint64_t *new_rev)
{
	struct sqlite_meta *s = ctx;
	struct tsr_meta_kv old = { 0 };
	struct row r = { .key = key, .value = value, .value_len = value_len, .lease = lease };
	sqlite3_stmt *st;
	bool exists;
	int ret;

	pthread_mutex_lock(&s->lock);
	reap(s);
	if (lease && lease_find(s, lease) == NULL) {
		ret = -ENOENT;
		goto unlock;
	}
	ret = txn_begin(s);
	if (ret)
		goto unlock;
	ret = kv_read(s, key, &old);
	if (ret && ret != -ENOENT)
		goto out;
	exists = ret == 0;
	ret = 0;
	if (expect_rev != TSR_META_ANY_REV && (exists ? old.mod_rev : 0) != expect_rev) {
		ret = -ECANCELED;
		goto out;
	}
	/* the history row first: it assigns the revision */
	r.create_rev = exists ? old.create_rev : s->txn_rev + 1;
	ret = record_change(s, &r);
	if (ret)
		goto out;
	ret = prep(s, "INSERT OR REPLACE INTO kv(" KV_COLUMNS ") VALUES (?,?,?,?,?,?)", &st);
	if (ret)
		goto out;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	bind_value(st, 2, value, value_len);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)r.create_rev);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)r.mod_rev);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)lease);
	sqlite3_bind_int64(st, 6, row_crc(&r));
	ret = step_done(s, st, "put key");
out:
	if (ret == 0)
		ret = txn_commit(s);
	else
		txn_rollback(s);
	if (ret == 0)
		*new_rev = r.mod_rev;
unlock:
	pthread_mutex_unlock(&s->lock);
	tsr_meta_kv_clear(&old);
	return ret;
}

static int sqlite_del(void *ctx, const char *key, uint64_t expect_rev)
{
	struct sqlite_meta *s = ctx;
	struct tsr_meta_kv old = { 0 };
	int ret;

	pthread_mutex_lock(&s->lock);
	reap(s);
	ret = txn_begin(s);
	if (ret)
		goto unlock;
	ret = kv_read(s, key, &old);
	if (ret == 0 && expect_rev != TSR_META_ANY_REV && old.mod_rev != expect_rev)
		ret = -ECANCELED;
	if (ret == 0)
		ret = kv_remove(s, key, old.create_rev, old.lease);
	if (ret == 0)
		ret = txn_commit(s);
	else
		txn_rollback(s);
unlock:
	pthread_mutex_unlock(&s->lock);
	tsr_meta_kv_clear(&old);
	return ret;
}

/* A history row (rev, key, value, create_rev, lease, deleted, crc), checked. */
static int event_from_stmt(struct sqlite_meta *s, sqlite3_stmt *st, struct tsr_meta_kv *kv)
{
	struct row r = {
		.mod_rev = (uint64_t)sqlite3_column_int64(st, 0),
		.create_rev = (uint64_t)sqlite3_column_int64(st, 3),
		.lease = (uint64_t)sqlite3_column_int64(st, 4),
		.deleted = sqlite3_column_int(st, 5) ? 1 : 0,
	};
	uint32_t stored = (uint32_t)sqlite3_column_int64(st, 6);

	r.key = (const char *)sqlite3_column_text(st, 1);
	r.value = sqlite3_column_blob(st, 2);
	r.value_len = (size_t)sqlite3_column_bytes(st, 2);

	if (r.key == NULL || (r.value == NULL && r.value_len) || r.value_len > TSR_META_MAX_VALUE ||
	    stored != row_crc(&r)) {
		tsr_error("meta: change %llu in %s: history row checksum mismatch; the file was "
			  "modified outside tessera or is damaged",
			  (unsigned long long)r.mod_rev, s->path);
		return -EUCLEAN;
	}
	return meta_kv_set(kv, r.key, r.value, r.value_len, r.create_rev, r.mod_rev, r.lease,
			   r.deleted);
}

static int sqlite_watch(void *ctx, const char *prefix, uint64_t since_rev,
			struct tsr_meta_kv **events, size_t *n, uint64_t *rev)
{
	struct sqlite_meta *s = ctx;
	size_t plen = strlen(prefix), cap = 0, bytes = 0;
	struct tsr_meta_kv *evs = NULL;
	bool truncated = false;
	sqlite3_stmt *st;
	int rc = SQLITE_DONE, ret;

	*n = 0;
	pthread_mutex_lock(&s->lock);
	reap(s);
	if (since_rev < s->compacted) {
		ret = -ECANCELED;
		goto out;
	}
	ret = prep(s, "SELECT rev, key, value, create_rev, lease, deleted, crc FROM history "
		      "WHERE rev > ? ORDER BY rev", &st);
	if (ret)
		goto out;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)since_rev);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *key = (const char *)sqlite3_column_text(st, 1);

		if (key == NULL || strncmp(key, prefix, plen) != 0)
			continue;
		if (*n > 0 && bytes + (size_t)sqlite3_column_bytes(st, 2) > META_REPLY_BUDGET) {
			truncated = true; /* one reply's worth; the caller continues from *rev */
			break;
		}
		if (*n == cap) {
			struct tsr_meta_kv *tmp;

			cap = cap ? cap * 2 : 16;
			tmp = realloc(evs, cap * sizeof(*evs));
			if (tmp == NULL) {
				ret = -ENOMEM;
				break;
			}
			evs = tmp;
		}
		ret = event_from_stmt(s, st, &evs[*n]);
		if (ret)
			break;
		bytes += evs[*n].value_len + strlen(evs[*n].key) + 64;
		(*n)++;
	}
	if (ret == 0 && rc != SQLITE_DONE && rc != SQLITE_ROW) {
		tsr_error("meta: watch %s: %s: %s", prefix, s->path, sqlite3_errmsg(s->db));
		ret = -EIO;
	}
	sqlite3_finalize(st);
	if (truncated)
		*rev = evs[*n - 1].mod_rev;
	else
		*rev = s->rev > since_rev ? s->rev : since_rev;
out:
	pthread_mutex_unlock(&s->lock);
	*events = evs;
	return ret;
}

static int sqlite_wait(void *ctx, uint64_t rev, int timeout_ms)
{
	struct sqlite_meta *s = ctx;
	int64_t deadline = tsr_mono_ms() + timeout_ms;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		int64_t now = tsr_mono_ms(), until;
		struct timespec ts;

		reap(s); /* a lapsing lease is a change too */
		if (s->rev > rev || now >= deadline)
			break;
		until = deadline < now + WAIT_SLICE_MS ? deadline : now + WAIT_SLICE_MS;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (until - now) / 1000;
		ts.tv_nsec += ((until - now) % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&s->changed, &s->lock, &ts);
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static int sqlite_lease_grant(void *ctx, uint32_t ttl_ms, uint64_t *id)
{
	struct sqlite_meta *s = ctx;
	sqlite3_stmt *st;
	uint64_t v = 0;
	int ret;

	pthread_mutex_lock(&s->lock);
	reap(s);
	/* random ids: a holder of a lease from an older store cannot renew a new one */
	do {
		if (getrandom(&v, sizeof(v), 0) != sizeof(v))
			v = (uint64_t)tsr_mono_ms() * 0x9e3779b97f4a7c15ull;
		v &= INT64_MAX; /* SQLite integers are signed */
	} while (v == 0 || lease_find(s, v));
	ret = prep(s, "INSERT INTO leases(id, ttl_ms) VALUES (?, ?)", &st);
	if (ret)
		goto out;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)v);
	sqlite3_bind_int64(st, 2, ttl_ms);
	ret = step_done(s, st, "grant lease");
	if (ret)
		goto out;
	ret = lease_add(s, v, ttl_ms);
	if (ret) {
		/* leave the row: it gets reaped after its TTL at the next open */
		goto out;
	}
	*id = v;
out:
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static int sqlite_lease_keepalive(void *ctx, uint64_t id)
{
	struct sqlite_meta *s = ctx;
	struct lease *l;
	int ret = -ENOENT;

	pthread_mutex_lock(&s->lock);
	reap(s);
	l = lease_find(s, id);
	if (l) {
		l->deadline = tsr_mono_ms() + l->ttl_ms;
		ret = 0;
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static int sqlite_lease_revoke(void *ctx, uint64_t id)
{
	struct sqlite_meta *s = ctx;
	struct lease *l;
	int ret = -ENOENT;

	pthread_mutex_lock(&s->lock);
	reap(s);
	l = lease_find(s, id);
	if (l)
		ret = lease_end(s, l, false);
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static void sqlite_close(void *ctx)
{
	struct sqlite_meta *s = ctx;

	if (s == NULL)
		return;
	if (s->db)
		sqlite3_close_v2(s->db);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->changed);
	free(s->leases);
	free(s->path);
	free(s);
}

static const struct tsr_meta_ops sqlite_ops = {
	.name = "sqlite",
	.get = sqlite_get,
	.range = sqlite_range,
	.cas = sqlite_cas,
	.del = sqlite_del,
	.watch = sqlite_watch,
	.wait = sqlite_wait,
	.lease_grant = sqlite_lease_grant,
	.lease_keepalive = sqlite_lease_keepalive,
	.lease_revoke = sqlite_lease_revoke,
	.close = sqlite_close,
};

/* ---- open --------------------------------------------------------------- */

/* -errno for a failed open or first statement. */
static int open_error(sqlite3 *db, int rc)
{
	int err = db ? sqlite3_system_errno(db) : 0;

	switch (rc & 0xff) {
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_NOTADB:
	case SQLITE_CORRUPT:
		return -EUCLEAN;
	case SQLITE_CANTOPEN:
	case SQLITE_PERM:
	case SQLITE_READONLY:
		return err == ENOENT || err == ENOTDIR ? -ENOENT : err == EACCES ||
		       err == EPERM || (rc & 0xff) != SQLITE_CANTOPEN ? -EACCES : -EIO;
	default:
		return -EIO;
	}
}

static int load_leases(struct sqlite_meta *s)
{
	sqlite3_stmt *st;
	int rc, ret;

	ret = prep(s, "SELECT id, ttl_ms FROM leases", &st);
	if (ret)
		return ret;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t ttl = sqlite3_column_int64(st, 1);

		ret = lease_add(s, (uint64_t)sqlite3_column_int64(st, 0),
				ttl < 100 || ttl > UINT32_MAX ? 100 : (uint32_t)ttl);
		if (ret)
			break;
	}
	if (ret == 0 && rc != SQLITE_DONE)
		ret = -EIO;
	sqlite3_finalize(st);
	return ret;
}

/*
 * A full file system (the meta node's data dir; the store's catalogue does
 * the same in engine/store/catalog.c, "The -shm file on a full file
 * system").  Without this a meta node whose data file system was full could
 * not start: its first commit (the node's lease) needed new WAL blocks
 * ("meta: grant lease: ...: database or disk is full").  So:
 *  - the -wal and -shm files stay across a close (SQLITE_FCNTL_PERSIST_WAL)
 *    and the WAL has META_WAL_RESERVE bytes of blocks from each open
 *    (fallocate KEEP_SIZE), and it is checkpointed every META_WAL_PAGES
 *    pages, well inside them (SQLite writes it from its start again after a
 *    checkpoint): a commit never needs a new WAL block;
 *  - PATH.reserve holds META_SPACE_RESERVE bytes of blocks, given back
 *    (truncate, syncfs) before the first statement when under
 *    META_SPACE_LOW is available, for SQLite's regrowth of the -shm file it
 *    truncates at the process's first connection and for a checkpoint of
 *    the WAL into meta.db right after, and taken again after;
 *  - the WAL's reserve can still be used up: a checkpoint must grow meta.db
 *    for new pages, and when it cannot, the WAL grows to its reserve and
 *    then a commit fails (SQLITE_FULL, -ENOSPC to the caller).  A meta node
 *    in that state did not start any more (its registration is a commit:
 *    "cluster: register node/n1: No space left on device"), and a volume
 *    delete, the way out, could not commit either.  So at the first
 *    SQLITE_FULL, the reserve's META_WAL_RESERVE part (what a checkpoint of
 *    a full WAL can need) is given back and the WAL checkpointed into
 *    meta.db (meta_space_spend): the refused change stays refused, the next
 *    ones commit from the start of the WAL again.  The META_SHM_RESERVE part
 *    stays for the next start; an open on a nearly full file system gives
 *    back all of it and checkpoints too.
 * Best effort: a file system without fallocate keeps the old behaviour.
 */
#define META_WAL_RESERVE (1u << 20)
#define META_WAL_PAGES 128
#define META_SHM_RESERVE (256u << 10)
#define META_SPACE_RESERVE (META_SHM_RESERVE + META_WAL_RESERVE)
#define META_SPACE_LOW (4ull << 20)

static void meta_syncfs(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		syncfs(fd);
		close(fd);
	}
}

static void reserve_meta_wal(const char *path)
{
	char wal[PATH_MAX + 8];
	int fd;

	snprintf(wal, sizeof(wal), "%s-wal", path);
	fd = open(wal, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0 ||
	    (fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, META_WAL_RESERVE) < 0 && errno != EOPNOTSUPP))
		tsr_warn("meta: reserve %u bytes for %s: %s", META_WAL_RESERVE, wal,
			 strerror(errno));
	if (fd >= 0)
		close(fd);
}

/* Give PATH.reserve's blocks back when the file system is nearly full;
 * true: given (and committed). */
static bool meta_space_give(const char *path, const char *dir_file)
{
	char res[PATH_MAX + 16];
	struct statvfs vfs;
	struct stat st;

	if (statvfs(dir_file, &vfs) < 0 ||
	    (uint64_t)vfs.f_bavail * vfs.f_frsize >= META_SPACE_LOW)
		return false;
	snprintf(res, sizeof(res), "%s.reserve", path);
	if (stat(res, &st) < 0 || st.st_blocks == 0 || truncate(res, 0) < 0)
		return false;
	meta_syncfs(dir_file);
	return true;
}

/* Checkpoint the WAL into meta.db: frames copied, or -1 (logged at debug). */
static int meta_checkpoint(sqlite3 *db)
{
	int log = 0, done = 0;
	int rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);

	if (rc != SQLITE_OK) {
		tsr_debug("meta: checkpoint: %s", sqlite3_errmsg(db));
		return -1;
	}
	return done;
}

/* A commit met a full file system: give back the reserve's WAL part and
 * checkpoint, so the next commits find the WAL's start free again. */
static void meta_space_spend(struct sqlite_meta *s)
{
	char res[PATH_MAX + 16];
	struct stat st;
	int done;

	snprintf(res, sizeof(res), "%s.reserve", s->path);
	if (stat(res, &st) < 0 || (uint64_t)st.st_blocks * 512 <= META_SHM_RESERVE ||
	    truncate(res, META_SHM_RESERVE) < 0) {
		if (s->quiet) {
			tsr_debug("meta: the file system of %s is still full", s->path);
			return;
		}
		tsr_warn("meta: the file system of %s is full and the reserve's %u KiB for a "
			 "checkpoint are spent: changes are refused until space is freed on it",
			 s->path, META_WAL_RESERVE >> 10);
		return;
	}
	meta_syncfs(s->path);
	done = meta_checkpoint(s->db);
	if (done < 0 && s->quiet)
		tsr_debug("meta: the file system of %s is still full: %s gave %u KiB, the "
			  "checkpoint failed", s->path, res, META_WAL_RESERVE >> 10);
	else if (done < 0)
		tsr_warn("meta: the file system of %s is full: %s gave %u KiB, but the checkpoint "
			 "into meta.db failed: free space on it (delete volumes or snapshots)",
			 s->path, res, META_WAL_RESERVE >> 10);
	else
		tsr_warn("meta: the file system of %s is full: %s gave %u KiB to a checkpoint "
			 "into meta.db (%d WAL frames), so changes commit again for a while; free "
			 "space on it (delete volumes or snapshots)",
			 s->path, res, META_WAL_RESERVE >> 10, done);
}

static void meta_space_take(const char *path, bool gave)
{
	char res[PATH_MAX + 16];
	struct stat st;
	int fd;

	snprintf(res, sizeof(res), "%s.reserve", path);
	fd = open(res, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	if (fstat(fd, &st) == 0 && (uint64_t)st.st_blocks * 512 < META_SPACE_RESERVE) {
		if (gave)
			meta_syncfs(path);
		if (fallocate(fd, 0, 0, META_SPACE_RESERVE) < 0 && errno != EOPNOTSUPP)
			tsr_warn("meta: reserve %u bytes for the next open on a full file system "
				 "(%s): %s", META_SPACE_RESERVE, res, strerror(errno));
	}
	if (gave)
		tsr_info("meta: the file system of %s is nearly full: %s gave its blocks to the "
			 "open (the -shm file is regrown at each start)", path, res);
	close(fd);
}

int meta_sqlite_open(const char *path, unsigned history, struct tsr_meta **out)
{
	struct sqlite_meta *s = calloc(1, sizeof(*s));
	pthread_condattr_t ca;
	uint64_t format = 0;
	char *msg = NULL;
	int rc, ret = -ENOMEM;

	if (s == NULL)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->changed, &ca);
	pthread_condattr_destroy(&ca);
	s->history = history ? history : 1;
	s->path = strdup(path);
	if (s->path == NULL)
		goto err;
	rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	if (rc == SQLITE_OK) {
		bool gave;

		sqlite3_extended_result_codes(s->db, 1);
		sqlite3_busy_timeout(s->db, 5000);
		sqlite3_file_control(s->db, "main", SQLITE_FCNTL_PERSIST_WAL, &(int){1});
		reserve_meta_wal(path);
		gave = meta_space_give(path, path);
		rc = sqlite3_exec(s->db,
				  "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
				  "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY,"
				  " value INTEGER NOT NULL);"
				  "CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY,"
				  " value BLOB NOT NULL, create_rev INTEGER NOT NULL,"
				  " mod_rev INTEGER NOT NULL, lease INTEGER NOT NULL,"
				  " crc INTEGER NOT NULL);"
				  "CREATE INDEX IF NOT EXISTS kv_lease ON kv(lease) WHERE lease != 0;"
				  "CREATE TABLE IF NOT EXISTS leases(id INTEGER PRIMARY KEY,"
				  " ttl_ms INTEGER NOT NULL);"
				  "CREATE TABLE IF NOT EXISTS history(rev INTEGER PRIMARY KEY,"
				  " key TEXT NOT NULL, value BLOB NOT NULL,"
				  " create_rev INTEGER NOT NULL, lease INTEGER NOT NULL,"
				  " deleted INTEGER NOT NULL, crc INTEGER NOT NULL);"
				  "INSERT OR IGNORE INTO meta(key, value) VALUES ('format', 1),"
				  " ('rev', 0), ('compacted', 0);",
				  NULL, NULL, &msg);
		/* a WAL left full by a checkpoint that could not grow meta.db:
		 * copied in now, with the reserve's blocks */
		if (rc == SQLITE_OK && gave)
			meta_checkpoint(s->db);
		meta_space_take(path, gave);
		if (rc == SQLITE_OK)
			sqlite3_wal_autocheckpoint(s->db, META_WAL_PAGES);
	}
	if (rc != SQLITE_OK) {
		ret = open_error(s->db, rc);
		tsr_error("meta: open %s: %s", path,
			  msg ? msg : s->db ? sqlite3_errmsg(s->db) : strerror(-ret));
		sqlite3_free(msg);
		goto err;
	}
	ret = meta_row_get(s, "format", &format);
	if (ret == 0 && format != FORMAT_VERSION) {
		tsr_error("meta: %s has format %llu, this tessera reads format %d", path,
			  (unsigned long long)format, FORMAT_VERSION);
		ret = -EINVAL;
	}
	if (ret == 0)
		ret = meta_row_get(s, "rev", &s->rev);
	if (ret == 0)
		ret = meta_row_get(s, "compacted", &s->compacted);
	if (ret == 0 && s->compacted > s->rev) {
		tsr_error("meta: %s: compacted revision %llu above the store's %llu; damaged file",
			  path, (unsigned long long)s->compacted, (unsigned long long)s->rev);
		ret = -EUCLEAN;
	}
	if (ret == 0)
		ret = load_leases(s);
	if (ret) {
		if (ret == -ENOENT || ret == -EIO) {
			tsr_error("meta: open %s: unreadable meta table", path);
			ret = -EUCLEAN;
		}
		goto err;
	}
	s->txn_rev = s->rev;
	tsr_info("meta: opened %s at revision %llu, %zu leases (each given its full TTL)", path,
		 (unsigned long long)s->rev, s->n_leases);
	return tsr_meta_new(&sqlite_ops, s, out);
err:
	sqlite_close(s);
	return ret;
}

int tsr_meta_open_sqlite(const char *path, struct tsr_meta **out)
{
	if (path == NULL || out == NULL)
		return -EINVAL;
	return meta_sqlite_open(path, META_HISTORY_DEFAULT, out);
}
