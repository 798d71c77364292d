/*
 * Staged chunk writes (store.h "staged chunk writes", ec.h rules): a
 * per-volume journal, volumes/<uuid>.stage, that keeps the new bytes of an
 * EC transaction durable until the coordinator commits them in place.
 *
 * On-disk format (little endian), in 4 KiB units, O_DIRECT:
 *   [0, 4096)        generation header (type GEN)
 *   [4096, tail)     records appended in reservation order; each is a
 *                    4096-byte header, followed for STAGE by length data bytes
 * Header (GEN and records alike):
 *   off  size  field
 *    0    4    magic        STAGE_MAGIC ("TSSJ")
 *    4    2    version      1
 *    6    2    type         1 GEN, 2 STAGE, 3 COMMIT, 4 RELEASE
 *    8    8    generation   records count only with the GEN header's value
 *   16    8    salt         random per generation; records count only with it
 *   24    8    seq          record order (replay order), increasing, < 2^63; GEN: 0
 *   32    8    txn          STAGE/COMMIT: the txn; RELEASE: txn_upto
 *   40    8    stripe       STAGE/COMMIT
 *   48    8    offset       STAGE: volume bytes, 4 KiB aligned
 *   56    4    length       STAGE: data bytes (4 KiB multiple, <= 1 MiB)
 *   60    4    participants STAGE
 *   64    4    data_crc     STAGE: CRC32C of the data bytes
 *   68 4024    zero
 * 4092    4    hdr_crc      CRC32C of bytes 0..4091
 * A record counts only with a valid hdr_crc, the generation's number and
 * salt, and (STAGE) a valid data_crc.  Records are written concurrently
 * (FUA writes at reserved offsets; the records of one io batched into one
 * write, see "group commit"), so a torn record may sit before a good one:
 * the scan at open steps over an invalid 4 KiB header and goes on to the
 * end of the file; a record with a good header but bad data is skipped
 * whole.  Valid records are replayed in seq order:
 *   STAGE   the stripe's (and the txn's) older entry is forgotten, the new
 *           one is STAGED (a forgotten COMMITTED one stays due for replay);
 *   COMMIT  the txn's entry becomes COMMITTED;
 *   RELEASE every entry with txn <= txn_upto is forgotten, superseded
 *           committed ones too.
 * A commit's in-place write is not FUA: until a release covers it, its
 * bytes are durable only in the journal.  So at the first load of the
 * volume after an unclean store open (a crash), every committed record no
 * release covered -- live, or superseded by a newer STAGE of its stripe --
 * is written in place again through tsr_svol_write (copy-on-write as any
 * write), in the order of their COMMIT records, so for the same blocks the
 * newer bytes end up in place.  After a clean shutdown they are not: close
 * synced every in-place write, and a replay would undo plain writes made
 * since over a committed range that was not released yet.  A release
 * flushes the volume's data (tsr_svol_flush) before its record is written,
 * so no record stops counting before the bytes it covered are durable
 * (a new generation likewise).  The flush covers the commits that called
 * back before the release was called: a caller must not release a txn
 * whose commit is still running.
 *
 * New generation: a release that leaves no live entry, with no record write
 * or commit read in flight and the file past STAGE_ROLL_BYTES, writes a new
 * GEN header (generation + 1, new salt; FUA) instead of a RELEASE record:
 * every older record stops counting, and a torn header makes the journal
 * empty, which is what it is then.  Appends wait (retrying through a no-op
 * read on their own io) while the header is in flight.  A missing or invalid
 * header (rolled back volume) is rewritten before the first append; the file
 * itself is created by a volume's first stage (a blocking open on that
 * thread, once; the directory is then synced through the io), so volumes
 * that never stage have none.
 *
 * Durability order: STAGE's cb fires once its record is durable; COMMIT's
 * record is durable before the in-place write is issued, and its cb fires
 * once that write completed (visible, not yet durable in place).  The bytes
 * written in place are a copy made at the stage and kept with the entry
 * (store_stage_hold_bytes per journal; a stage past the cap keeps none), or,
 * without one (over the cap, after a reopen, a second commit of the txn),
 * read back from the journal in parallel with the record and checked
 * against data_crc.  Recovery never uses a copy: it reads the file.
 * RELEASE: data flush, then its record (or new header) durable, then cb.
 * A caller must not release a txn whose commit has not called back: the
 * release's flush would not cover its in-place write (the EC layout
 * releases finished txns only).
 *
 * Concurrency: the in-memory index (live entries, tail, seq) is guarded by
 * svol->stage->lock, held for a few microseconds per call (the record's
 * offset and seq are reserved and its write queued under it, so a queueing
 * failure such as -EAGAIN changes nothing), never across I/O completion; the
 * ordinary data path never takes it.  A failed journal write makes the
 * journal refuse every later call (-EIO) until the volume is reopened and
 * the journal replayed from disk.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/internal.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "stage.c writes its headers in host order: little endian hosts only"
#endif

#define STAGE_MAGIC   0x4a535354u /* "TSSJ" */
#define STAGE_VERSION 1u
#define STAGE_HDR     4096u
#define STAGE_MAX_LEN (1024u * 1024)
/* A record's seq is below this (one per ns would take 292 years): a larger
 * one does not count, so the seqs of the records appended after it cannot
 * wrap to 0 and replay before older records (which could forget them). */
#define STAGE_MAX_SEQ (1ull << 63)

enum { REC_GEN = 1, REC_STAGE = 2, REC_COMMIT = 3, REC_RELEASE = 4 };

struct stage_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	uint64_t gen;
	uint64_t salt;
	uint64_t seq;
	uint64_t txn;
	uint64_t stripe;
	uint64_t offset;
	uint32_t length;
	uint32_t participants;
	uint32_t data_crc;
	uint32_t reserved;
	uint8_t zero[STAGE_HDR - 72 - 4];
	uint32_t hdr_crc;
};
_Static_assert(sizeof(struct stage_hdr) == STAGE_HDR, "stage header is 4 KiB");

uint64_t store_stage_roll_bytes = 4ull << 20;
/* Staged bytes kept in memory per journal for their commit: the EC layout
 * admits at most 6 MiB of stripe bytes across all its copies at a time, so a
 * chunk volume rarely has more than one or two MiB staged and uncommitted. */
uint64_t store_stage_hold_bytes = 8ull << 20;

/* ---- index (j->lock held) ---- */

static struct stage_ent *find_txn(struct stage_journal *j, uint64_t txn)
{
	size_t i;

	for (i = 0; i < j->n; i++)
		if (j->ents[i].e.txn == txn)
			return &j->ents[i];
	return NULL;
}

static struct stage_ent *find_stripe(struct stage_journal *j, uint64_t stripe)
{
	size_t i;

	for (i = 0; i < j->n; i++)
		if (j->ents[i].e.stripe == stripe)
			return &j->ents[i];
	return NULL;
}

/* Drop the entry's held copy (superseded, released, or over the cap). */
static void held_free(struct stage_journal *j, struct stage_ent *x)
{
	if (x->held == NULL)
		return;
	j->held_bytes -= x->e.length;
	tsr_free_aligned(x->held);
	x->held = NULL;
}

static void forget(struct stage_journal *j, struct stage_ent *x)
{
	held_free(j, x);
	*x = j->ents[--j->n];
}

static void release_upto(struct stage_journal *j, uint64_t upto)
{
	size_t i = 0;

	while (i < j->n) {
		if (j->ents[i].e.txn <= upto)
			forget(j, &j->ents[i]);
		else
			i++;
	}
}

/* Apply a STAGE (x->e.txn new or its own entry) to the index: older entry of
 * the stripe and of the txn forgotten, x added.  Caller checked the room. */
static void index_stage(struct stage_journal *j, const struct stage_ent *x)
{
	struct stage_ent *o;

	if ((o = find_txn(j, x->e.txn)) != NULL)
		forget(j, o);
	if ((o = find_stripe(j, x->e.stripe)) != NULL)
		forget(j, o);
	j->ents[j->n++] = *x;
}

static void hdr_fill(struct stage_journal *j, struct stage_hdr *h, unsigned type, uint64_t seq)
{
	memset(h, 0, sizeof(*h));
	h->magic = STAGE_MAGIC;
	h->version = STAGE_VERSION;
	h->type = (uint16_t)type;
	h->gen = j->gen;
	h->salt = j->salt;
	h->seq = seq;
}

static void hdr_seal(struct stage_hdr *h)
{
	h->hdr_crc = tsr_crc32c(0, h, offsetof(struct stage_hdr, hdr_crc));
}

static bool hdr_valid(const struct stage_hdr *h)
{
	return h->magic == STAGE_MAGIC && h->version == STAGE_VERSION &&
	       h->hdr_crc == tsr_crc32c(0, h, offsetof(struct stage_hdr, hdr_crc));
}

static uint64_t new_salt(void)
{
	uint64_t s = 0;

	if (getrandom(&s, sizeof(s), 0) != sizeof(s))
		s = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&s;
	return s | 1;
}

/* ---- operations in flight ---- */

enum stage_kind { OP_STAGE, OP_COMMIT, OP_RELEASE };

struct stage_op {
	struct tsr_svol *svol;
	struct tsr_io *io;
	enum stage_kind kind;
	struct stage_ent ent;  /* STAGE: the entry; COMMIT: the txn's, as found */
	uint64_t upto;         /* RELEASE */
	const void *buf;       /* STAGE: the caller's data */
	uint8_t *data;         /* COMMIT: its bytes, the entry's held copy or read back
				* from the journal; owned */
	struct stage_hdr *hdr; /* the record (aligned) */
	struct iovec iov[2];
	struct iovec tramp; /* waiting for a new generation header */
	bool async;         /* a completion may have run: errors go to cb */
	bool pinned;        /* COMMIT: counted in j->readers while it reads the journal */
	bool flushed;       /* RELEASE: the data flush before its record is done */
	int dirfd;          /* generation header of a new file: volumes/, else -1 */
	bool read_later;    /* COMMIT: the read waits for the record's completion */
	bool from_memory;   /* COMMIT: data is the entry's held copy (no read, no CRC check) */
	int pending;        /* COMMIT: record write and data read in flight */
	uint64_t pos, size;  /* STAGE/COMMIT: the record's reserved place in the file */
	tsr_io_cb rec_done;  /* STAGE/COMMIT: the record's completion */
	struct stage_op *next; /* a lane's queue or batch in flight */
	int status;
	tsr_cb cb_fn;
	void *cb_arg;
};

static void op_free(struct stage_op *op)
{
	tsr_free_aligned(op->ent.held); /* STAGE: a copy the index did not take */
	tsr_free_aligned(op->hdr);
	tsr_free_aligned(op->data);
	free(op);
}

static struct stage_op *op_new(struct tsr_svol *svol, struct tsr_io *io, enum stage_kind kind,
			       uint32_t data_len, tsr_cb cb_fn, void *cb_arg)
{
	struct stage_op *op = calloc(1, sizeof(*op));

	if (op == NULL)
		return NULL;
	op->hdr = tsr_alloc_aligned(STAGE_HDR);
	op->data = data_len ? tsr_alloc_aligned(data_len) : NULL;
	if (op->hdr == NULL || (data_len && op->data == NULL)) {
		op_free(op);
		return NULL;
	}
	op->dirfd = -1;
	op->svol = svol;
	op->io = io;
	op->kind = kind;
	op->cb_fn = cb_fn;
	op->cb_arg = cb_arg;
	return op;
}

/* The op is over: cb when async, else the caller's return value. */
static int op_end(struct stage_op *op, int err)
{
	tsr_cb cb_fn = op->cb_fn;
	void *cb_arg = op->cb_arg;
	bool async = op->async;

	op_free(op);
	if (async) {
		cb_fn(cb_arg, err);
		return 0;
	}
	return err;
}

static int check_journal(struct tsr_svol *svol)
{
	if (svol->ro_layer)
		return -EROFS;
	if (svol->dev_offset >= 0)
		return -EOPNOTSUPP;
	if (svol->stage == NULL)
		return -EIO;
	return 0;
}

static void record_failed(struct stage_journal *j, const char *vol, const char *what, int err)
{
	pthread_mutex_lock(&j->lock);
	if (!j->failed)
		tsr_error("stage journal: volume %s: %s: %s; staged writes refused until the "
			  "volume is reopened",
			  vol, what, strerror(-err));
	j->failed = true;
	pthread_mutex_unlock(&j->lock);
}

/* The generation is in place (header durable, and for a new file its
 * directory entry): appends may go on. */
static void roll_finish(struct stage_op *op, int err)
{
	struct stage_journal *j = op->svol->stage;

	if (err)
		record_failed(j, op->svol->name, "write generation header", err);
	pthread_mutex_lock(&j->lock);
	if (err == 0 && op->dirfd >= 0)
		j->dir_unsynced = false;
	j->rolling = false;
	pthread_mutex_unlock(&j->lock);
	if (op->dirfd >= 0)
		close(op->dirfd);
	op->dirfd = -1;
	if (op->kind == OP_RELEASE) {
		op->async = true;
		op_end(op, err);
		return;
	}
	/* an append that had to roll first retries through its trampoline */
	op_free(op);
}

static void commit_read_done(void *cb_arg, int res);

static void roll_dir_synced(void *cb_arg, int res)
{
	roll_finish(cb_arg, res < 0 ? res : 0);
}

/* New generation header written (j->rolling set by its issuer). */
static void roll_done(void *cb_arg, int res)
{
	struct stage_op *op = cb_arg;
	int ret;

	if (res >= 0 && op->dirfd >= 0) {
		/* the file was created for it: its name durable too */
		ret = tsr_io_fsync(op->io, op->dirfd, false, roll_dir_synced, op);
		if (ret == 0)
			return;
		res = ret;
	}
	roll_finish(op, res < 0 ? res : 0);
}

/* First record of a volume: create its journal file (lock held).  A rare
 * blocking open on the caller's thread, once per volume; the directory is
 * synced asynchronously after the header (op->dirfd). */
static int journal_create(struct stage_op *op)
{
	struct stage_journal *j = op->svol->stage;
	char path[PATH_MAX];
	int ret;

	if (j->fd < 0) {
		store_meta_path(op->svol->store, op->svol->uuid, "stage", path);
		j->fd = open(path, O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
		if (j->fd < 0)
			goto err;
		j->dir_unsynced = true;
	}
	if (j->dir_unsynced) {
		snprintf(path, sizeof(path), "%s/volumes", op->svol->store->dir);
		op->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (op->dirfd < 0)
			goto err;
	}
	return 0;
err:
	ret = -errno;
	tsr_error("stage journal: volume %s: create %s: %s", op->svol->name, path, strerror(-ret));
	return ret;
}

/* Start a new generation (lock held, nothing live or in flight): queue its
 * header on op's io.  0 (j->rolling set), or -errno with nothing changed. */
static int roll_start(struct stage_journal *j, struct stage_op *op)
{
	uint64_t gen = j->gen, salt = j->salt, tail = j->tail;
	bool need = j->need_roll;
	int ret;

	if ((j->fd < 0 || j->dir_unsynced) && (ret = journal_create(op)) != 0)
		return ret;
	j->gen++;
	j->salt = new_salt();
	j->tail = STAGE_HDR;
	j->need_roll = false;
	j->rolling = true;
	hdr_fill(j, op->hdr, REC_GEN, 0);
	hdr_seal(op->hdr);
	op->iov[0].iov_base = op->hdr;
	op->iov[0].iov_len = STAGE_HDR;
	ret = tsr_io_writev(op->io, j->fd, op->iov, 1, 0, TSR_IO_FUA, roll_done, op);
	if (ret == 0) {
		j->writes++;
		j->records++;
	}
	if (ret) {
		j->gen = gen;
		j->salt = salt;
		j->tail = tail;
		j->need_roll = need;
		j->rolling = false;
		if (op->dirfd >= 0)
			close(op->dirfd);
		op->dirfd = -1;
	}
	return ret;
}

static int stage_try(struct stage_op *op);

static int release_try(struct stage_op *op);

static void stage_retry(void *cb_arg, int res)
{
	struct stage_op *op = cb_arg;

	(void)res;
	op->async = true;
	if (op->kind == OP_RELEASE)
		release_try(op);
	else
		stage_try(op);
}

/* Wait for the generation header in flight: no-op read on op's io. */
static int wait_roll(struct stage_op *op)
{
	int ret = data_trampoline(op->svol->store, op->io, &op->tramp, stage_retry, op);

	return ret ? op_end(op, ret) : 0;
}

/* ---- group commit ----
 *
 * STAGE and COMMIT records of one io are written in batches: the first
 * record reserved while the io's lane is idle arms a no-op read on that io
 * (it completes in the loop pass after the submit that carried it); every
 * record reserved on the same io meanwhile joins the lane's queue; at the
 * read's completion the queue goes out as one FUA write (one writev per
 * contiguous run of reservations, STAGE_BATCH_MAX records at most).
 * Records reserved while that write is in flight go out as the next batch
 * the moment it completes, so under load a batch holds what arrived during
 * one journal write (classic group commit), and an idle lane costs one
 * no-op read.  Each record's completion (and its caller's callback) runs
 * on its own io, as before.  A lane belongs to one io while it has work;
 * with every lane busy on other ios a record is written alone. */
#define STAGE_LANES       8
#define STAGE_BATCH_MAX   32
#define STAGE_BATCH_BYTES (8u << 20)

struct stage_lane {
	struct stage_journal *j;
	struct tsr_svol *svol;
	struct tsr_io *io;             /* owner while busy (queued, armed, writing); NULL: free */
	struct stage_op *head, *tail;  /* reserved, not yet written, in reservation order */
	struct stage_op *batch;        /* the batch in flight (list by next) */
	bool armed;                    /* the no-op read is in flight */
	bool writing;                  /* a batch write is in flight */
	struct iovec tramp;            /* the no-op read's buffer */
	struct iovec iov[2 * STAGE_BATCH_MAX]; /* the batch write's, live until it completes */
};

static void lane_written(void *cb_arg, int res);

/* Ops' record completions, outside the lock. */
static void lane_finish(struct stage_op *list, int res)
{
	while (list) {
		struct stage_op *op = list;

		list = op->next;
		op->next = NULL;
		op->rec_done(op, res);
	}
}

static void lane_armed(void *cb_arg, int res);

/* Issue the queued head run as one write (lock held).  Returns the ops to
 * fail (the write could not be queued; *err why), else NULL. */
static struct stage_op *lane_issue(struct stage_lane *l, int *err)
{
	struct stage_journal *j = l->j;
	struct stage_op *op, *last = NULL, *list;
	uint64_t pos, end, bytes = 0;
	int n = 0, recs = 0, ret;

	if (l->writing || l->armed)
		return NULL;
	if (l->head == NULL) {
		l->io = NULL; /* idle: free for any io */
		return NULL;
	}
	pos = end = l->head->pos;
	for (op = l->head; op && recs < STAGE_BATCH_MAX && op->pos == end &&
			   (recs == 0 || bytes + op->size <= STAGE_BATCH_BYTES);
	     op = op->next) {
		l->iov[n].iov_base = op->hdr;
		l->iov[n++].iov_len = STAGE_HDR;
		if (op->kind == OP_STAGE) {
			l->iov[n].iov_base = (void *)op->buf;
			l->iov[n++].iov_len = op->ent.e.length;
		}
		end += op->size;
		bytes += op->size;
		recs++;
		last = op;
	}
	ret = tsr_io_writev(l->io, j->fd, l->iov, n, pos, TSR_IO_FUA, lane_written, l);
	if (ret) {
		/* a completion just ran, so a slot was free: rare; go again
		 * from the next completion, else fail the lot */
		if (data_trampoline(l->svol->store, l->io, &l->tramp, lane_armed, l) == 0) {
			l->armed = true;
			return NULL;
		}
		list = l->head;
		l->head = l->tail = NULL;
		l->io = NULL;
		*err = ret;
		return list;
	}
	list = l->head;
	l->head = last->next;
	if (l->head == NULL)
		l->tail = NULL;
	last->next = NULL;
	l->batch = list;
	l->writing = true;
	j->writes++;
	j->records += (uint64_t)recs;
	return NULL;
}

static void lane_armed(void *cb_arg, int res)
{
	struct stage_lane *l = cb_arg;
	struct stage_journal *j = l->j;
	struct stage_op *failed;
	int err = 0;

	(void)res;
	pthread_mutex_lock(&j->lock);
	l->armed = false;
	failed = lane_issue(l, &err);
	pthread_mutex_unlock(&j->lock);
	lane_finish(failed, err);
}

static void lane_written(void *cb_arg, int res)
{
	struct stage_lane *l = cb_arg;
	struct stage_journal *j = l->j;
	struct stage_op *done, *failed;
	int err = 0;

	pthread_mutex_lock(&j->lock);
	done = l->batch;
	l->batch = NULL;
	l->writing = false;
	failed = lane_issue(l, &err); /* what arrived meanwhile goes now */
	pthread_mutex_unlock(&j->lock);
	lane_finish(done, res < 0 ? res : 0);
	lane_finish(failed, err);
}

/* Queue op's record (op->hdr, for STAGE op->buf; reserved at op->pos,
 * op->size bytes) on its io's lane, or write it alone when every lane is
 * busy elsewhere.  Lock held; 0, or -errno with nothing queued. */
static int record_queue(struct stage_journal *j, struct stage_op *op)
{
	struct stage_lane *l = NULL, *spare = NULL;
	unsigned i;
	int ret;

	for (i = 0; i < STAGE_LANES && l == NULL; i++) {
		if (j->lanes[i].io == op->io)
			l = &j->lanes[i];
		else if (j->lanes[i].io == NULL && spare == NULL)
			spare = &j->lanes[i];
	}
	if (l == NULL && spare == NULL) {
		op->iov[0].iov_base = op->hdr;
		op->iov[0].iov_len = STAGE_HDR;
		op->iov[1].iov_base = (void *)op->buf;
		op->iov[1].iov_len = op->kind == OP_STAGE ? op->ent.e.length : 0;
		ret = tsr_io_writev(op->io, j->fd, op->iov, op->kind == OP_STAGE ? 2 : 1, op->pos,
				    TSR_IO_FUA, op->rec_done, op);
		if (ret == 0) {
			j->writes++;
			j->records++;
		}
		return ret;
	}
	if (l == NULL) {
		l = spare;
		l->j = j;
		l->svol = op->svol;
		l->io = op->io;
	}
	if (!l->armed && !l->writing && l->head == NULL) {
		ret = data_trampoline(op->svol->store, op->io, &l->tramp, lane_armed, l);
		if (ret) {
			l->io = NULL;
			return ret;
		}
		l->armed = true;
	}
	op->next = NULL;
	if (l->tail)
		l->tail->next = op;
	else
		l->head = op;
	l->tail = op;
	return 0;
}

static void append_done(void *cb_arg, int res)
{
	struct stage_op *op = cb_arg;
	struct stage_journal *j = op->svol->stage;
	int err = res < 0 ? res : 0;

	pthread_mutex_lock(&j->lock);
	j->appends--;
	pthread_mutex_unlock(&j->lock);
	if (err)
		record_failed(j, op->svol->name, "write stage record", err);
	op->async = true;
	op_end(op, err);
}

/* STAGE: check, reserve, queue, index (all under the lock, so a queueing
 * failure leaves nothing changed).  Retried after a generation header. */
static int stage_try(struct stage_op *op)
{
	struct stage_journal *j = op->svol->stage;
	struct stage_ent *o;
	struct stage_op *roll;
	uint8_t *over = NULL;
	uint64_t pos;
	int ret;

	pthread_mutex_lock(&j->lock);
	if (j->failed) {
		pthread_mutex_unlock(&j->lock);
		return op_end(op, -EIO);
	}
	o = find_txn(j, op->ent.e.txn);
	if (o && (o->e.stripe != op->ent.e.stripe || o->e.offset != op->ent.e.offset ||
		  o->e.length != op->ent.e.length || o->e.state != TSR_STAGE_STAGED)) {
		pthread_mutex_unlock(&j->lock);
		return op_end(op, -EEXIST);
	}
	if (o == NULL && find_stripe(j, op->ent.e.stripe) == NULL &&
	    j->n >= TSR_STAGE_MAX_ENTRIES) {
		pthread_mutex_unlock(&j->lock);
		return op_end(op, -ENOSPC);
	}
	if (j->rolling || j->need_roll) {
		if (!j->rolling && j->appends == 0 && j->readers == 0) {
			roll = op_new(op->svol, op->io, OP_STAGE, 0, NULL, NULL);
			ret = roll ? roll_start(j, roll) : -ENOMEM;
			if (ret) {
				pthread_mutex_unlock(&j->lock);
				if (roll)
					op_free(roll);
				return op_end(op, ret);
			}
		}
		pthread_mutex_unlock(&j->lock);
		return wait_roll(op);
	}
	pos = j->tail;
	op->ent.jpos = pos + STAGE_HDR;
	hdr_fill(j, op->hdr, REC_STAGE, j->seq + 1);
	op->hdr->txn = op->ent.e.txn;
	op->hdr->stripe = op->ent.e.stripe;
	op->hdr->offset = op->ent.e.offset;
	op->hdr->length = op->ent.e.length;
	op->hdr->participants = op->ent.e.participants;
	op->hdr->data_crc = op->ent.dcrc;
	hdr_seal(op->hdr);
	op->pos = pos;
	op->size = STAGE_HDR + op->ent.e.length;
	op->rec_done = append_done;
	ret = record_queue(j, op);
	if (ret) {
		pthread_mutex_unlock(&j->lock);
		return op_end(op, ret);
	}
	j->tail += STAGE_HDR + op->ent.e.length;
	j->seq++;
	index_stage(j, &op->ent);
	op->ent.held = NULL; /* the index owns the copy now */
	o = &j->ents[j->n - 1];
	if (o->held && j->held_bytes + o->e.length > store_stage_hold_bytes) {
		over = o->held; /* the cap: this one's commit reads the file */
		o->held = NULL;
	} else if (o->held) {
		j->held_bytes += o->e.length;
	}
	j->appends++;
	pthread_mutex_unlock(&j->lock);
	tsr_free_aligned(over);
	return 0;
}

int tsr_svol_stage(struct tsr_svol *svol, struct tsr_io *io, const struct tsr_stage_entry *e,
		   const void *buf, tsr_cb cb_fn, void *cb_arg)
{
	struct stage_op *op;
	bool hold;
	int ret = check_journal(svol);

	if (ret)
		return ret;
	if (e == NULL || buf == NULL || cb_fn == NULL || e->length == 0 ||
	    e->length > STAGE_MAX_LEN || e->length % TSR_BLOCK_SIZE || e->offset % TSR_BLOCK_SIZE ||
	    e->offset > tsr_svol_size(svol) || e->length > tsr_svol_size(svol) - e->offset ||
	    e->participants == 0 || (uintptr_t)buf % TSR_BLOCK_SIZE)
		return -EINVAL;
	op = op_new(svol, io, OP_STAGE, 0, cb_fn, cb_arg);
	if (op == NULL)
		return -ENOMEM;
	op->ent.e = *e;
	op->ent.e.state = TSR_STAGE_STAGED;
	op->ent.dcrc = tsr_crc32c(0, buf, e->length);
	op->buf = buf;
	/* a copy for the commit, so it need not read the bytes back from the
	 * file; the cap is checked again when the entry is indexed */
	pthread_mutex_lock(&svol->stage->lock);
	hold = svol->stage->held_bytes + e->length <= store_stage_hold_bytes;
	pthread_mutex_unlock(&svol->stage->lock);
	if (hold && (op->ent.held = tsr_alloc_aligned(e->length)) != NULL)
		memcpy(op->ent.held, buf, e->length);
	return stage_try(op);
}

/* ---- commit ---- */

static void commit_written(void *cb_arg, int status)
{
	struct stage_op *op = cb_arg;

	if (status)
		store_log_step(status, "stage commit: volume %s txn %llu: write in place",
			       op->svol->name, (unsigned long long)op->ent.e.txn);
	op->async = true;
	op_end(op, status);
}

static void commit_unpin(struct stage_op *op)
{
	struct stage_journal *j = op->svol->stage;

	if (!op->pinned)
		return;
	op->pinned = false;
	pthread_mutex_lock(&j->lock);
	j->readers--;
	pthread_mutex_unlock(&j->lock);
}

static void commit_write(struct stage_op *op);

static void commit_write_retry(void *cb_arg, int res)
{
	(void)res;
	commit_write(cb_arg);
}

/* The bytes in place through the normal write path, without FUA: the
 * journal keeps them durable (STAGE data + COMMIT record) until a release,
 * which flushes the data files first, and an unclean open replays every
 * committed, unreleased record.  A full io queue is waited out through a
 * no-op read (it takes one slot; a completion that just ran freed one). */
static void commit_write(struct stage_op *op)
{
	int ret = tsr_svol_write(op->svol, op->io, op->ent.e.offset, op->ent.e.length, op->data,
				 0, commit_written, op);

	if (ret == -EAGAIN)
		ret = data_trampoline(op->svol->store, op->io, &op->tramp, commit_write_retry, op);
	if (ret)
		commit_written(op, ret);
}

/* Record write and data read both done: write the bytes in place. */
static void commit_step(struct stage_op *op)
{
	int ret;

	if (--op->pending)
		return;
	if (op->read_later && op->status == 0) {
		/* the read found the queue full: the record's completion made room */
		op->read_later = false;
		op->pending = 1;
		ret = tsr_io_readv(op->io, op->svol->stage->fd, &op->iov[1], 1, op->ent.jpos,
				   commit_read_done, op);
		if (ret == 0)
			return;
		op->pending = 0;
		op->status = ret;
	}
	commit_unpin(op); /* the journal is not read any more */
	op->async = true;
	if (op->status == 0 && !op->from_memory &&
	    tsr_crc32c(0, op->data, op->ent.e.length) != op->ent.dcrc) {
		tsr_error("stage commit: volume %s txn %llu: staged bytes fail their CRC32C",
			  op->svol->name, (unsigned long long)op->ent.e.txn);
		op->status = -EIO;
	}
	if (op->status) {
		op_end(op, op->status);
		return;
	}
	commit_write(op);
}

static void commit_record_done(void *cb_arg, int res)
{
	struct stage_op *op = cb_arg;
	struct stage_journal *j = op->svol->stage;

	pthread_mutex_lock(&j->lock);
	j->appends--;
	pthread_mutex_unlock(&j->lock);
	if (res < 0) {
		record_failed(j, op->svol->name, "write commit record", res);
		op->status = res;
	}
	commit_step(op);
}

static void commit_read_done(void *cb_arg, int res)
{
	struct stage_op *op = cb_arg;

	if (res < 0) {
		tsr_error("stage commit: volume %s txn %llu: read staged bytes: %s", op->svol->name,
			  (unsigned long long)op->ent.e.txn, strerror(-res));
		if (op->status == 0)
			op->status = res;
	}
	commit_step(op);
}

int tsr_svol_stage_commit(struct tsr_svol *svol, struct tsr_io *io, uint64_t txn, tsr_cb cb_fn,
			  void *cb_arg)
{
	struct stage_journal *j;
	struct stage_ent *x;
	struct stage_op *op;
	uint8_t *unused = NULL;
	uint32_t len;
	bool held;
	int ret = check_journal(svol);

	if (ret)
		return ret;
	if (cb_fn == NULL)
		return -EINVAL;
	j = svol->stage;
	/* the bytes come from the entry's held copy when it has one; else a
	 * read-back buffer sized to the entry (a 1 MiB one per commit was an
	 * mmap + munmap each): peek, allocate unlocked */
	pthread_mutex_lock(&j->lock);
	x = find_txn(j, txn);
	len = x ? x->e.length : TSR_BLOCK_SIZE;
	held = x && x->held;
	pthread_mutex_unlock(&j->lock);
	op = op_new(svol, io, OP_COMMIT, held ? 0 : len, cb_fn, cb_arg);
	if (op == NULL)
		return -ENOMEM;
	pthread_mutex_lock(&j->lock);
	/* rolling or need_roll only with no live entry: txn is unknown */
	x = j->failed || j->rolling || j->need_roll ? NULL : find_txn(j, txn);
	if (x == NULL || (x->held == NULL && (op->data == NULL || x->e.length > len))) {
		/* released, or restaged meanwhile (bigger, or without a copy) */
		ret = j->failed ? -EIO : x ? -EAGAIN : -ENOENT;
		pthread_mutex_unlock(&j->lock);
		op_free(op);
		return ret;
	}
	op->ent = *x;
	op->ent.held = NULL;
	hdr_fill(j, op->hdr, REC_COMMIT, j->seq + 1);
	op->hdr->txn = txn;
	op->hdr->stripe = x->e.stripe;
	hdr_seal(op->hdr);
	op->pos = j->tail;
	op->size = STAGE_HDR;
	op->rec_done = commit_record_done;
	ret = record_queue(j, op);
	if (ret) {
		pthread_mutex_unlock(&j->lock);
		op_free(op);
		return ret;
	}
	j->tail += STAGE_HDR;
	j->seq++;
	x->e.state = TSR_STAGE_COMMITTED;
	j->appends++;
	if (x->held) {
		/* the bytes that came with the stage: the commit takes them, no
		 * read; the in-place write still waits for the record */
		unused = op->data;
		op->data = x->held;
		x->held = NULL;
		j->held_bytes -= x->e.length;
		j->commits_held++;
		op->from_memory = true;
		op->pending = 1;
		pthread_mutex_unlock(&j->lock);
		tsr_free_aligned(unused);
		return 0;
	}
	j->commits_read++;
	j->readers++;
	op->pinned = true;
	op->pending = 2;
	/* the record and the read of the staged bytes go in parallel */
	op->iov[1].iov_base = op->data;
	op->iov[1].iov_len = x->e.length;
	if (tsr_io_readv(io, j->fd, &op->iov[1], 1, op->ent.jpos, commit_read_done, op)) {
		op->read_later = true;
		op->pending = 1;
	}
	pthread_mutex_unlock(&j->lock);
	return 0;
}

/* ---- release and list ---- */

static void release_noop(void *cb_arg, int res)
{
	struct stage_op *op = cb_arg;

	(void)res;
	op->async = true;
	op_end(op, 0);
}

static void release_flushed(void *cb_arg, int status)
{
	struct stage_op *op = cb_arg;

	op->async = true;
	if (status) {
		store_log_step(status, "stage release: volume %s: flush data before the release",
			       op->svol->name);
		op_end(op, status);
		return;
	}
	op->flushed = true;
	release_try(op);
}

/* RELEASE: first the volume's data flushed (commits write in place without
 * FUA: a released record is never replayed, so the bytes it covered must be
 * durable before it is), then a record (or a new generation header),
 * queued under the lock, then the index forgets.  Retried after a
 * generation header. */
static int release_try(struct stage_op *op)
{
	struct stage_journal *j = op->svol->stage;
	size_t i, left = 0;
	int ret;

	pthread_mutex_lock(&j->lock);
	if (j->failed) {
		pthread_mutex_unlock(&j->lock);
		return op_end(op, -EIO);
	}
	if (j->rolling) {
		pthread_mutex_unlock(&j->lock);
		return wait_roll(op);
	}
	if (j->need_roll) {
		/* no header on disk (no file yet, or dropped), so no entry:
		 * nothing to release; complete from the io all the same */
		pthread_mutex_unlock(&j->lock);
		ret = data_trampoline(op->svol->store, op->io, &op->tramp, release_noop, op);
		return ret ? op_end(op, ret) : 0;
	}
	if (!op->flushed) {
		/* covers every in-place write ended so far: every commit that
		 * called back before this release was called */
		pthread_mutex_unlock(&j->lock);
		ret = tsr_svol_flush(op->svol, op->io, release_flushed, op);
		return ret ? op_end(op, ret) : 0;
	}
	for (i = 0; i < j->n; i++)
		left += j->ents[i].e.txn > op->upto;
	/* a new generation forgets every record, superseded committed ones
	 * too; left == 0 after the flush makes that safe: a commit whose
	 * in-place write the flush may have missed was still running when
	 * this release was called, so its txn is > upto (a caller never
	 * releases a running commit) and live, or superseded by a live one */
	if (left == 0 && j->appends == 0 && j->readers == 0 && j->tail > store_stage_roll_bytes) {
		ret = roll_start(j, op);
		if (ret == 0)
			release_upto(j, op->upto);
		pthread_mutex_unlock(&j->lock);
		return ret ? op_end(op, ret) : 0;
	}
	hdr_fill(j, op->hdr, REC_RELEASE, j->seq + 1);
	op->hdr->txn = op->upto;
	hdr_seal(op->hdr);
	op->iov[0].iov_base = op->hdr;
	op->iov[0].iov_len = STAGE_HDR;
	ret = tsr_io_writev(op->io, j->fd, op->iov, 1, j->tail, TSR_IO_FUA, append_done, op);
	if (ret) {
		pthread_mutex_unlock(&j->lock);
		return op_end(op, ret);
	}
	j->writes++;
	j->records++;
	j->tail += STAGE_HDR;
	j->seq++;
	j->appends++;
	release_upto(j, op->upto);
	pthread_mutex_unlock(&j->lock);
	return 0;
}

int tsr_svol_stage_release(struct tsr_svol *svol, struct tsr_io *io, uint64_t txn_upto,
			   tsr_cb cb_fn, void *cb_arg)
{
	struct stage_op *op;
	int ret = check_journal(svol);

	if (ret)
		return ret;
	if (cb_fn == NULL)
		return -EINVAL;
	op = op_new(svol, io, OP_RELEASE, 0, cb_fn, cb_arg);
	if (op == NULL)
		return -ENOMEM;
	op->upto = txn_upto;
	return release_try(op);
}

static int cmp_txn(const void *a, const void *b)
{
	const struct tsr_stage_entry *x = a, *y = b;

	return x->txn < y->txn ? -1 : x->txn > y->txn;
}

int tsr_svol_stage_list(struct tsr_svol *svol, struct tsr_stage_entry **out, size_t *count)
{
	struct stage_journal *j;
	struct tsr_stage_entry *v = NULL;
	size_t i, n;
	int ret = check_journal(svol);

	if (ret)
		return ret;
	j = svol->stage;
	*out = NULL;
	*count = 0;
	pthread_mutex_lock(&j->lock);
	n = j->n;
	if (n) {
		v = malloc(n * sizeof(*v));
		if (v == NULL) {
			pthread_mutex_unlock(&j->lock);
			return -ENOMEM;
		}
		for (i = 0; i < n; i++)
			v[i] = j->ents[i].e;
	}
	pthread_mutex_unlock(&j->lock);
	if (n)
		qsort(v, n, sizeof(*v), cmp_txn);
	*out = v;
	*count = n;
	return 0;
}

/* ---- open: scan, replay, roll forward ---- */

struct scan_rec {
	struct stage_ent ent;
	unsigned type;
	uint64_t seq;
};

static int cmp_seq(const void *a, const void *b)
{
	const struct scan_rec *x = a, *y = b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA;
		done += (size_t)n;
	}
	return 0;
}

static void sync_done(void *cb_arg, int status)
{
	int *st = cb_arg;

	*st = status;
}

static int cmp_cseq(const void *a, const void *b)
{
	const struct stage_ent *x = a, *y = b;

	return x->cseq < y->cseq ? -1 : x->cseq > y->cseq;
}

/* Write the committed, unreleased records' bytes in place again, rep[0..n)
 * sorted by commit order (blocking: volume open). */
static int roll_forward(struct tsr_svol *svol, uint8_t *data, const struct stage_ent *rep,
			size_t n)
{
	struct tsr_io_opts o = {.kind = TSR_IO_AUTO, .queue_depth = 8};
	struct stage_journal *j = svol->stage;
	struct tsr_io *io = NULL;
	size_t i;
	int ret = 0;

	for (i = 0; i < n && ret == 0; i++) {
		const struct stage_ent *x = &rep[i];
		int st = 1;

		if (io == NULL && (ret = tsr_io_create(&o, &io)) != 0)
			break;
		ret = pread_full(j->fd, data, x->e.length, x->jpos);
		if (ret == 0 && tsr_crc32c(0, data, x->e.length) != x->dcrc)
			ret = -EIO;
		if (ret == 0)
			ret = tsr_svol_write(svol, io, x->e.offset, x->e.length, data,
					     TSR_WRITE_FUA, sync_done, &st);
		while (ret == 0 && st == 1) {
			if (tsr_io_submit(io) < 0 ||
			    tsr_io_poll(io, 0, tsr_io_inflight(io) > 0) < 0)
				ret = -EIO;
		}
		if (ret == 0)
			ret = st;
		if (ret)
			tsr_error("open: volume %s: stage journal: roll forward of txn %llu: %s",
				  svol->name, (unsigned long long)x->e.txn, strerror(-ret));
		else
			tsr_info("open: volume %s: committed txn %llu (stripe %llu) written in "
				 "place again",
				 svol->name, (unsigned long long)x->e.txn,
				 (unsigned long long)x->e.stripe);
	}
	tsr_io_destroy(io);
	return ret;
}

/* Add a copy of x to the replay list *v (n used, cap room). */
static int rep_push(struct stage_ent **v, size_t *n, size_t *cap, const struct stage_ent *x)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 16;
		struct stage_ent *nv = realloc(*v, c * sizeof(**v));

		if (nv == NULL)
			return -ENOMEM;
		*v = nv;
		*cap = c;
	}
	(*v)[(*n)++] = *x;
	return 0;
}

/* Scan the current generation's records into the index.  *sup (malloc'd,
 * *nsup entries) gets the committed records that a newer STAGE superseded
 * and no RELEASE covered: their in-place write may be lost (it is not FUA),
 * so an unclean open replays them too, in commit order with the live ones. */
static int scan(struct tsr_svol *svol, struct stage_hdr *h, uint8_t *data, uint64_t size,
		struct stage_ent **sup, size_t *nsup, size_t *scap)
{
	struct stage_journal *j = svol->stage;
	struct scan_rec *recs = NULL, *r;
	size_t n = 0, cap = 0, i, k;
	uint64_t p;
	int ret;

	for (p = STAGE_HDR; p + STAGE_HDR <= size;) {
		ret = pread_full(j->fd, h, STAGE_HDR, p);
		if (ret)
			goto out;
		if (!hdr_valid(h) || h->gen != j->gen || h->salt != j->salt ||
		    h->type < REC_STAGE || h->type > REC_RELEASE || h->seq >= STAGE_MAX_SEQ ||
		    (h->type == REC_STAGE &&
		     (h->length == 0 || h->length > STAGE_MAX_LEN || h->length % TSR_BLOCK_SIZE ||
		      h->offset % TSR_BLOCK_SIZE))) {
			p += STAGE_HDR; /* torn or stale: look at the next 4 KiB */
			continue;
		}
		if (h->seq > j->seq)
			j->seq = h->seq;
		if (h->type == REC_STAGE) {
			bool ok = p + STAGE_HDR + h->length <= size &&
				  pread_full(j->fd, data, h->length, p + STAGE_HDR) == 0 &&
				  tsr_crc32c(0, data, h->length) == h->data_crc;
			uint64_t end = p + STAGE_HDR + h->length;

			if (end > j->tail)
				j->tail = end;
			if (!ok) {
				p = end; /* header good, data torn: the record does not count */
				continue;
			}
		} else if (p + STAGE_HDR > j->tail) {
			j->tail = p + STAGE_HDR;
		}
		if (n == cap) {
			struct scan_rec *nr;

			cap = cap ? cap * 2 : 64;
			nr = realloc(recs, cap * sizeof(*recs));
			if (nr == NULL) {
				ret = -ENOMEM;
				goto out;
			}
			recs = nr;
		}
		r = &recs[n++];
		memset(r, 0, sizeof(*r));
		r->type = h->type;
		r->seq = h->seq;
		r->ent.e.txn = h->txn;
		r->ent.e.stripe = h->stripe;
		r->ent.e.offset = h->offset;
		r->ent.e.length = h->length;
		r->ent.e.participants = h->participants;
		r->ent.e.state = TSR_STAGE_STAGED;
		r->ent.jpos = p + STAGE_HDR;
		r->ent.dcrc = h->data_crc;
		p += STAGE_HDR + (h->type == REC_STAGE ? h->length : 0);
	}
	if (n)
		qsort(recs, n, sizeof(*recs), cmp_seq);
	for (i = 0; i < n; i++) {
		struct stage_ent *x;

		struct stage_ent *y;

		r = &recs[i];
		switch (r->type) {
		case REC_STAGE:
			/* cannot be (tsr_svol_stage refuses them) unless the file
			 * is corrupt; the sum could wrap, and a roll forward of
			 * such a record would fail the open */
			if (r->ent.e.participants == 0 ||
			    r->ent.e.offset > tsr_svol_size(svol) ||
			    r->ent.e.length > tsr_svol_size(svol) - r->ent.e.offset)
				break;
			x = find_txn(j, r->ent.e.txn);
			y = find_stripe(j, r->ent.e.stripe);
			if (x == NULL && y == NULL && j->n >= TSR_STAGE_MAX_ENTRIES)
				break;
			/* committed entries this one supersedes stay due for replay */
			ret = 0;
			if (x && x->e.state == TSR_STAGE_COMMITTED)
				ret = rep_push(sup, nsup, scap, x);
			if (ret == 0 && y && y != x && y->e.state == TSR_STAGE_COMMITTED)
				ret = rep_push(sup, nsup, scap, y);
			if (ret)
				goto out;
			index_stage(j, &r->ent);
			break;
		case REC_COMMIT:
			x = find_txn(j, r->ent.e.txn);
			if (x) {
				x->e.state = TSR_STAGE_COMMITTED;
				x->cseq = r->seq;
			}
			break;
		default:
			release_upto(j, r->ent.e.txn);
			for (k = 0; k < *nsup;) {
				if ((*sup)[k].e.txn <= r->ent.e.txn)
					(*sup)[k] = (*sup)[--*nsup];
				else
					k++;
			}
			break;
		}
	}
	ret = 0;
out:
	free(recs);
	return ret;
}

/* A volume's journal, rolled forward since the store was opened. */
struct stage_replayed {
	char uuid[37];
	struct stage_replayed *next;
};

/* Roll forward only at the first load after an unclean store open: after a
 * clean shutdown every commit's in-place write completed (it is FUA and the
 * close syncs), and a replay would undo plain writes made since over a
 * committed, not yet released range.  store->lock held. */
static bool replay_due(struct tsr_svol *svol)
{
	struct tsr_store *store = svol->store;
	struct stage_replayed *r;

	if (!store->unclean)
		return false;
	for (r = store->stage_replayed; r; r = r->next)
		if (strcmp(r->uuid, svol->uuid) == 0)
			return false;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return true; /* replay again next time rather than never */
	snprintf(r->uuid, sizeof(r->uuid), "%s", svol->uuid);
	r->next = store->stage_replayed;
	store->stage_replayed = r;
	return true;
}

void stage_store_free(struct tsr_store *store)
{
	while (store->stage_replayed) {
		struct stage_replayed *r = store->stage_replayed;

		store->stage_replayed = r->next;
		free(r);
	}
}

int stage_open(struct tsr_svol *svol)
{
	char path[PATH_MAX];
	struct stage_journal *j;
	struct stage_hdr *h = NULL;
	struct stage_ent *rep = NULL;
	uint8_t *data = NULL;
	struct stat st;
	size_t i, committed = 0, nrep = 0, nsup = 0, rcap = 0;
	bool replay;
	int ret;

	if (svol->dev_offset >= 0 || svol->ro_layer)
		return 0;
	replay = replay_due(svol); /* recorded even when there is nothing to replay */
	j = calloc(1, sizeof(*j));
	if (j == NULL)
		return -ENOMEM;
	pthread_mutex_init(&j->lock, NULL);
	j->tail = STAGE_HDR;
	j->fd = -1;
	svol->stage = j;
	j->ents = malloc(TSR_STAGE_MAX_ENTRIES * sizeof(*j->ents));
	j->lanes = calloc(STAGE_LANES, sizeof(*j->lanes));
	h = tsr_alloc_aligned(STAGE_HDR);
	data = tsr_alloc_aligned(STAGE_MAX_LEN);
	if (j->ents == NULL || j->lanes == NULL || h == NULL || data == NULL) {
		ret = -ENOMEM;
		goto err;
	}
	store_meta_path(svol->store, svol->uuid, "stage", path);
	j->need_roll = true;
	j->fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (j->fd < 0 && errno == ENOENT) /* created by the first stage */
		goto done;
	if (j->fd < 0) {
		ret = -errno;
		goto err_log;
	}
	if (fstat(j->fd, &st) < 0) {
		ret = -errno;
		goto err_log;
	}
	/* a file without a valid header may be one whose name is not durable
	 * yet (created by this process): sync the directory with the header */
	j->dir_unsynced = true;
	if ((uint64_t)st.st_size >= STAGE_HDR) {
		ret = pread_full(j->fd, h, STAGE_HDR, 0);
		if (ret)
			goto err_log;
		if (hdr_valid(h) && h->type == REC_GEN) {
			j->gen = h->gen;
			j->salt = h->salt;
			j->need_roll = false;
			j->dir_unsynced = false;
			ret = scan(svol, h, data, (uint64_t)st.st_size, &rep, &nrep, &rcap);
			if (ret)
				goto err_log;
		}
	}
	nsup = nrep;
	for (i = 0; i < j->n; i++) {
		if (j->ents[i].e.state != TSR_STAGE_COMMITTED)
			continue;
		committed++;
		if (replay && (ret = rep_push(&rep, &nrep, &rcap, &j->ents[i])) != 0)
			goto err_log;
	}
	if (j->n || nsup)
		tsr_info("open: volume %s: stage journal has %zu live entries (%zu committed), "
			 "%zu superseded committed",
			 svol->name, j->n, committed, nsup);
	if (nrep && replay) {
		/* in commit order: for the same blocks the newer record wins */
		qsort(rep, nrep, sizeof(*rep), cmp_cseq);
		ret = roll_forward(svol, data, rep, nrep);
		if (ret)
			goto err;
	}
done:
	free(rep);
	tsr_free_aligned(h);
	tsr_free_aligned(data);
	return 0;
err_log:
	tsr_error("open: volume %s: stage journal %s: %s", svol->name, path, strerror(-ret));
err:
	free(rep);
	tsr_free_aligned(h);
	tsr_free_aligned(data);
	stage_close(svol);
	return ret;
}

void stage_close(struct tsr_svol *svol)
{
	struct stage_journal *j = svol->stage;
	size_t i;

	if (j == NULL)
		return;
	svol->stage = NULL;
	if (j->fd >= 0)
		close(j->fd);
	for (i = 0; j->ents && i < j->n; i++)
		held_free(j, &j->ents[i]);
	pthread_mutex_destroy(&j->lock);
	free(j->ents);
	free(j->lanes);
	free(j);
}

int stage_drop(struct tsr_svol *svol)
{
	struct stage_journal *j = svol->stage;
	size_t i;
	int ret = 0;

	if (j == NULL)
		return 0;
	pthread_mutex_lock(&j->lock);
	for (i = 0; i < j->n; i++)
		held_free(j, &j->ents[i]);
	j->n = 0;
	j->tail = STAGE_HDR;
	j->need_roll = true;
	j->failed = false;
	/* no header: the journal is empty at the next open */
	if (j->fd >= 0 && (ftruncate(j->fd, 0) < 0 || fsync(j->fd) < 0))
		ret = -errno;
	pthread_mutex_unlock(&j->lock);
	if (ret)
		tsr_error("stage journal: volume %s: drop: %s", svol->name, strerror(-ret));
	return ret;
}

void stage_counters(struct tsr_svol *svol, uint64_t *writes, uint64_t *records)
{
	struct stage_journal *j = svol->stage;

	*writes = *records = 0;
	if (j == NULL)
		return;
	pthread_mutex_lock(&j->lock);
	*writes = j->writes;
	*records = j->records;
	pthread_mutex_unlock(&j->lock);
}

void stage_commit_counters(struct tsr_svol *svol, uint64_t *from_memory, uint64_t *read_back)
{
	struct stage_journal *j = svol->stage;

	*from_memory = *read_back = 0;
	if (j == NULL)
		return;
	pthread_mutex_lock(&j->lock);
	*from_memory = j->commits_held;
	*read_back = j->commits_read;
	pthread_mutex_unlock(&j->lock);
}
