/*
 * The target side of async geo-replication (include/tessera/site.h, "target
 * side: the site listener's sessions"): one session per TLS connection from
 * a source site, one stream per session.
 *
 * A session's life:
 *   1. accept (control thread): a worker is picked round robin and handed fd;
 *   2. on that worker: TLS handshake (any certificate chaining to the CA),
 *      HELLO both ways, the VOLUME_OPEN request parsed;
 *   3. control thread (an ev_async on opts.loop; the queue below): the state
 *      file is read and checked (stream, promoted, epoch), ops.open_volume
 *      gives the volume, the state is written "not clean" before anything
 *      is applied;
 *   4. back on the worker, the session moves to the volume's home worker
 *      (tsr_vol_home), which from then on reads, applies through
 *      tsr_site_target, flushes, writes the state file (O_DIRECT + FUA
 *      through its own tsr_io) and sends ACKs: after each BARRIER,
 *      SYNC_BEGIN and SYNC_END, and at least every SYNC_MS while applying;
 *      When the VOLUME_OPEN carried TSR_SITE_F_DIGEST, the volume is first
 *      read (DIG_READ at a time; a piece that block_status calls one hole
 *      is not read) and its region digests go out as DIGEST frames, then
 *      the end marker; no frame is read meanwhile;
 *   5. the end (peer's close_notify, a refused frame, server stop, promote):
 *      the frames in flight complete, the volume is flushed and the state
 *      written with the clean flag; the control thread forgets the session.
 * Pipelined apply: frames are read while tsr_site_target has room in its
 * window (32 frames, 16 MiB of payload by default) and go to the store at
 * once; the target keeps write order per block and moves applied only
 * through the contiguous prefix of completed frames.  Each WRITE is received
 * straight into its own block-aligned buffer from a small per-session pool
 * (tsr_site_rx_hold: the header first, then the payload into the buffer),
 * which stays with the frame until its callback.  When the window is full
 * the socket is not read (backpressure: TCP then holds the source back).
 * The state file records the contiguous applied seq, made durable by a
 * flush while later frames may be in the store; after a crash, frames past
 * it may be partly on disk, which the "not clean" flag (written before the
 * first frame of a session) covers: the next session replies with
 * TSR_SITE_F_REPLAY and the volume stays inconsistent until the source's
 * replay ends with SYNC_END.
 * Consistency groups (a VOLUME_OPEN naming one): the members' sessions run
 * on one worker (struct tgroup); each keeps reading but holds its frames
 * (struct held) and hands one to the target only once its seq is at or
 * before the member's release point, the newest marker every member of the
 * group has received (site_group.c).  A closing member leaves the group
 * first and applies what was released to it before its final state, so
 * every member stops at the same marker.
 * Sockets are watched edge triggered for in and out; every change of state
 * runs pump(), which does whatever can be done and stops at -EAGAIN.
 *
 * Locking policy (the only lock of this file): srv->lock guards the control
 * queue, the session list and each session's refs, w and worker_done, and
 * srv->live.  Taken on session events (accept, open, move, end), never per
 * frame.  Per-volume counters that list() reads while a worker applies are
 * C11 atomics in struct tvol.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "tessera/site.h"
#include "tessera/vol.h"
#include "tessera/worker.h"
#include "site/server_internal.h"
#include "site/site_target_int.h"

#define SYNC_MS 100 /* the longest a session applies without a durable ACK */
/* Handshake + HELLO + VOLUME_OPEN must be done within this many ticks (10 s):
 * an idle or stuck connection holds no session for ever (tests may shorten
 * it: TSR_TEST_SITE_EARLY_MS, srv->early_ticks). */
#define EARLY_TICKS 100

/* ---- the state file block ---- */

void site_state_pack(const struct site_state *st, uint8_t buf[SITE_STATE_SIZE])
{
	memset(buf, 0, SITE_STATE_SIZE);
	tsr_put_le32(buf, SITE_STATE_MAGIC);
	tsr_put_le32(buf + 4, st->target_id[0] ? SITE_STATE_VERSION_ID : SITE_STATE_VERSION);
	tsr_put_le64(buf + 8, st->stream);
	tsr_put_le64(buf + 16, st->epoch);
	tsr_put_le64(buf + 24, st->applied);
	tsr_put_le32(buf + 32, st->flags);
	strncpy((char *)buf + 36, st->site, 64);
	strncpy((char *)buf + 100, st->cluster, 64);
	strncpy((char *)buf + 164, st->volume, 64);
	tsr_put_le64(buf + 232, st->marker);
	strncpy((char *)buf + 240, st->group, 64);
	strncpy((char *)buf + 304, st->target_id, 64);
	tsr_put_le32(buf + SITE_STATE_SIZE - 4, tsr_crc32c(0, buf, SITE_STATE_SIZE - 4));
}

/* A 64-byte NUL-padded name field: a valid name, then only NULs. */
static int name_field(const uint8_t *p, char out[TSR_SITE_NAME_MAX + 1])
{
	size_t n = strnlen((const char *)p, 64);

	if (n == 64)
		return -EPROTO;
	for (size_t i = n; i < 64; i++)
		if (p[i])
			return -EPROTO;
	memcpy(out, p, n + 1);
	return tsr_valid_name(out) ? 0 : -EPROTO;
}

int site_state_parse(const uint8_t buf[SITE_STATE_SIZE], struct site_state *out)
{
	struct site_state st = {0};
	uint32_t version;
	size_t zero_from = 304;

	if (tsr_get_le32(buf) != SITE_STATE_MAGIC ||
	    tsr_get_le32(buf + SITE_STATE_SIZE - 4) != tsr_crc32c(0, buf, SITE_STATE_SIZE - 4))
		return -EBADMSG;
	version = tsr_get_le32(buf + 4);
	if (version != SITE_STATE_VERSION && version != SITE_STATE_VERSION_ID)
		return -EPROTONOSUPPORT;
	st.stream = tsr_get_le64(buf + 8);
	st.epoch = tsr_get_le64(buf + 16);
	st.applied = tsr_get_le64(buf + 24);
	st.flags = tsr_get_le32(buf + 32);
	if (st.stream == 0 || (st.flags & ~SITE_STATE_FLAGS))
		return -EPROTO;
	if (name_field(buf + 36, st.site) || name_field(buf + 100, st.cluster) ||
	    name_field(buf + 164, st.volume))
		return -EPROTO;
	if (tsr_get_le32(buf + 228) != 0)
		return -EPROTO;
	st.marker = tsr_get_le64(buf + 232);
	if (buf[240] != 0 && name_field(buf + 240, st.group))
		return -EPROTO;
	if (buf[240] == 0) { /* no group: no marker, and the field all zero */
		for (size_t i = 240; i < 304; i++)
			if (buf[i])
				return -EPROTO;
		if (st.marker)
			return -EPROTO;
	}
	if (version == SITE_STATE_VERSION_ID) {
		if (name_field(buf + 304, st.target_id))
			return -EPROTO;
		zero_from = 368;
	} else if (st.flags & SITE_STATE_FRESH) { /* set only with a target id */
		return -EPROTO;
	}
	for (size_t i = zero_from; i < SITE_STATE_SIZE - 4; i++)
		if (buf[i])
			return -EPROTO;
	*out = st;
	return 0;
}

static const char *state_err(int err)
{
	switch (err) {
	case -EBADMSG: return "bad magic or checksum (damaged or not a state file)";
	case -EPROTONOSUPPORT: return "unknown version";
	case -EPROTO: return "a field breaks its rule";
	case -ENODATA: return "shorter than its 4 KiB block";
	default: return strerror(-err);
	}
}

/* The errno's name for logs ("EILSEQ" says more than its strerror). */
static const char *err_name(int code)
{
	switch (code) {
	case EILSEQ: return "EILSEQ";
	case ESTALE: return "ESTALE";
	case EBADMSG: return "EBADMSG";
	case EEXIST: return "EEXIST";
	case EUCLEAN: return "EUCLEAN";
	case EPROTO: return "EPROTO";
	case EINVAL: return "EINVAL";
	case ENOSPC: return "ENOSPC";
	case EBUSY: return "EBUSY";
	case ESHUTDOWN: return "ESHUTDOWN";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case EIO: return "EIO";
	case ENOMEM: return "ENOMEM";
	case EPROTONOSUPPORT: return "EPROTONOSUPPORT";
	default: return strerror(code);
	}
}

/* ---- structures ---- */

/* One target volume known since start (control thread, except the atomics). */
struct tvol {
	char name[TSR_SITE_NAME_MAX + 1]; /* immutable */
	int state_fd;          /* its state file (O_DIRECT when the fs allows), -1: not open */
	struct tsr_vol *vol;   /* handle from ops.open_volume at VOLUME_OPEN, put when its
				* session ends (CTL_ENDED), at promote or at stop; NULL
				* between sessions */
	struct sess *sess;     /* the session that owns the stream now, or NULL */
	struct site_state st;  /* as written at the last open (names, stream) */
	/* written by the applying worker, read by list(): */
	_Atomic bool connected;          /* a session streams (from its arrival to its end) */
	_Atomic bool consistent;
	_Atomic uint64_t applied;
	_Atomic uint64_t epoch;
	_Atomic uint64_t bytes_applied;  /* WRITE payload bytes since start */
	_Atomic int64_t last_frame_ns;   /* CLOCK_MONOTONIC of the last applied frame, 0: none */
	_Atomic uint64_t marker;         /* consistency group: the durable marker */
	struct tgroup *grp;              /* its group since its first grouped session, or NULL */
	struct tvol *next;
};

/*
 * A consistency group at the target (site_group.c has the rule).  Its
 * member sessions all run on one worker (w: the cluster pins the group's
 * volumes to one home worker), so a release moves every member at once
 * without a message.  lock guards g and sess for the control thread's
 * readers (status, promote); the worker takes it on group events only
 * (arrival, end, SYNC_BEGIN / SYNC_END, MARKER), never per frame.
 */
struct tgroup {
	pthread_mutex_t lock;
	struct site_grp g;
	struct tsr_worker *w;                 /* the members' worker; NULL while none runs */
	struct sess *sess[TSR_SITE_GROUP_MAX]; /* member i's live session, or NULL */
	struct tgroup *next;                   /* srv->groups (control thread) */
};

/* A frame a grouped member received and may not apply yet (held queue). */
struct held {
	struct held *next;
	struct tsr_site_hdr h;  /* as received (a compressed WRITE already plain) */
	uint8_t *buf;           /* WRITE: its pool buffer, else NULL */
	uint32_t cap;
	uint64_t pos;           /* the seq it follows or takes: released when pos <= release */
	uint64_t marker;        /* MARKER: its number */
};

enum sess_phase {
	SESS_HANDSHAKE, /* TLS handshake on the accepting worker */
	SESS_HELLO,     /* waiting for the source's HELLO */
	SESS_OPEN,      /* waiting for VOLUME_OPEN */
	SESS_AT_CONTROL,/* VOLUME_OPEN served by the control thread (or moving) */
	SESS_STREAM,    /* applying on the volume's home worker */
	SESS_CLOSING,   /* ending: last apply, final state write, last sends */
	SESS_DONE,      /* torn down on its worker; the memory waits for refs */
};

enum ctl_kind { CTL_OPEN = 1, CTL_ENDED };

/* ---- WRITE payload buffers (session's worker) ---- */

#define FRAME_SLOTS TSR_SITE_TARGET_WINDOW   /* the target's window (default) */
#define DIG_READ (4u << 20)                  /* one digest-phase read (64 regions) */
#define POOL_CLASSES 11u                      /* 4 KiB << 0..10 = 4 MiB */
#define POOL_CACHE_BYTES TSR_SITE_TARGET_WINDOW_BYTES /* free buffers kept, at most */

/* A free pool buffer: the link lives in the buffer itself while it is free. */
struct pool_free {
	struct pool_free *next;
};

/* Block-aligned buffers in power-of-two sizes, 4 KiB .. TSR_SITE_MAX_DATA. */
struct pool {
	struct pool_free *free[POOL_CLASSES]; /* free buffers of 4 KiB << class */
	uint64_t cached;                      /* bytes on the free lists */
};

/* One frame in the target: the argument of its callback. */
struct pframe {
	struct sess *s;
	uint8_t *buf;           /* its pool buffer (WRITE), or NULL */
	uint32_t cap;           /* that buffer's capacity */
	uint32_t bytes;         /* WRITE payload bytes */
	uint8_t op;
	uint64_t marker;        /* MARKER: its number */
	struct pframe *next;    /* free list */
};

static unsigned pool_class(uint32_t len)
{
	unsigned c = 0;

	while (((uint32_t)TSR_BLOCK_SIZE << c) < len)
		c++;
	return c;
}

/* A buffer of at least len bytes (len <= TSR_SITE_MAX_DATA); NULL: no memory. */
static uint8_t *pool_get(struct pool *p, uint32_t len, uint32_t *cap)
{
	unsigned c = pool_class(len);
	struct pool_free *f = p->free[c];

	*cap = (uint32_t)TSR_BLOCK_SIZE << c;
	if (f) {
		p->free[c] = f->next;
		p->cached -= *cap;
		return (uint8_t *)f;
	}
	return tsr_alloc_aligned(*cap);
}

static void pool_put(struct pool *p, uint8_t *buf, uint32_t cap)
{
	unsigned c = pool_class(cap);
	struct pool_free *f = (struct pool_free *)(void *)buf;

	if (buf == NULL)
		return;
	if (p->cached + cap > POOL_CACHE_BYTES) {
		tsr_free_aligned(buf);
		return;
	}
	f->next = p->free[c];
	p->free[c] = f;
	p->cached += cap;
}

static void pool_fini(struct pool *p)
{
	for (unsigned c = 0; c < POOL_CLASSES; c++)
		while (p->free[c]) {
			struct pool_free *f = p->free[c];

			p->free[c] = f->next;
			tsr_free_aligned(f);
		}
	p->cached = 0;
}

struct sess {
	struct tsr_site_server *srv;
	int fd;                    /* owned; closed at teardown */
	/* srv->lock */
	struct tsr_worker *w;      /* the worker owning the session now */
	int refs;                  /* 1 worker side + 1 control side + messages in flight */
	bool worker_done;          /* teardown ran (srv->live counted it) */
	bool end_sent;             /* stop asked it to end */
	enum ctl_kind ctl;         /* what it asks while on the control queue */
	struct sess *next_ctl;     /* control queue link */
	struct sess *next_all;     /* srv->sessions link */
	/* the owning worker's (or the control thread's while SESS_AT_CONTROL) */
	enum sess_phase phase;
	bool watched;              /* fd watched on w */
	bool dead;                 /* the connection failed: send nothing more */
	bool end_requested;        /* stop / promote / a newer session asked us to end */
	bool unauth;               /* counted in srv->unauth: the TLS handshake has not
				    * ended (set at accept, cleared by unauth_end) */
	struct tsr_site_tls *tls;
	struct tsr_site_rx rx;
	bool rx_init;              /* rx holds its buffer (allocated after the handshake) */
	struct tsr_site_tx tx;
	bool tx_busy;              /* tx holds a frame being sent */
	bool rx_dry;               /* the last read found the socket empty and no fd
				    * event came since (edge triggered: one comes
				    * with the next byte): a pump from a completion
				    * skips the read, one recv returning EAGAIN
				    * less per completion pass */
	uint8_t tx_payload[TSR_SITE_ERROR_MAX + TSR_SITE_HELLO_MAX];
	bool err_pending;          /* err_hdr/err_msg go out next, then the session ends */
	bool err_sent;             /* the ERROR went out: nothing follows it (no late ACK) */
	struct tsr_site_hdr err_hdr;
	struct tsr_site_error err;
	bool ack_due;              /* an ACK of durable goes out when tx is free */
	struct tsr_site_hello from;        /* the source's HELLO */
	struct tsr_site_open open;         /* its VOLUME_OPEN */
	struct tsr_site_codec *codec;      /* open.compress's decompressor; NULL: none */
	struct tsr_site_hdr open_hdr;
	/* set by the control thread at open */
	int open_err;              /* 0, or the ERROR to send */
	char open_msg[TSR_SITE_ERRMSG_MAX + 1];
	struct tvol *tv;           /* the volume; its state_fd outlives the session */
	struct site_state st;      /* what the state file holds (updated at each write) */
	bool replay;               /* reply with TSR_SITE_F_REPLAY */
	bool fresh;                /* reply with TSR_SITE_F_FRESH: the state file was of a
				    * volume deleted since (its target id differs) */
	/* stream phase (home worker) */
	struct tsr_site_target *target;
	uint8_t *state_buf;        /* SITE_STATE_SIZE, aligned */
	struct iovec state_iov;
	int timer_fd;              /* SYNC_MS ticks from the start, -1 when none */
	bool timer_watched;        /* timer_fd watched on w */
	unsigned early_ticks;      /* ticks before the stream began (EARLY_TICKS) */
	unsigned inflight;         /* frames given to the target whose cb has not fired */
	struct pframe *frames;     /* FRAME_SLOTS cb arguments, allocated at arrival */
	struct pframe *free_frames;/* unused entries of frames */
	struct pool pool;          /* payload buffers of WRITEs */
	uint8_t *rx_buf;           /* pool buffer the frame being received goes into, or NULL */
	uint32_t rx_cap;           /* its capacity */
	bool broken;               /* a store error: frames past applied may be partial */
	bool syncing;              /* a flush / state write is in flight */
	bool sync_final;           /* that write carries the clean flag: the session ends */
	bool final_done;           /* the final state write was tried */
	bool sync_ack;             /* ACK once the write is done even if nothing moved */
	uint64_t sync_seq;         /* applied when the sync began */
	bool sync_consistent;      /* the target's consistent flag then (written with sync_seq) */
	bool sync_again;           /* an ordering point completed while a sync ran: sync again */
	uint64_t durable;          /* applied-through seq the state file holds */
	uint64_t acked;            /* the last ACK's seq */
	int64_t last_sync_ns;
	/* digest phase (a VOLUME_OPEN with TSR_SITE_F_DIGEST): right after the
	 * reply, before any frame is read, the volume is read DIG_READ bytes at
	 * a time (one read, then its DIGEST frame, then the next read) */
	bool digesting;            /* asked for, end marker not sent yet */
	bool dig_inflight;         /* a read is in the store (close waits for it) */
	bool dig_ready;            /* dig_out holds the digests of the last read, unsent */
	uint64_t dig_limit;        /* bytes to cover: the source's size (VOLUME_OPEN) */
	uint64_t dig_next;         /* next byte offset to read */
	uint64_t dig_out_off;      /* offset of dig_out's first region */
	uint32_t dig_out_len;      /* bytes in dig_out */
	uint8_t *dig_rbuf;         /* DIG_READ bytes, block aligned, or NULL */
	uint8_t *dig_out;          /* DIG_READ / TSR_SITE_DIGEST_REGION digests, or NULL */
	uint8_t dig_zero[TSR_SITE_DIGEST_LEN]; /* digest of a whole region of zeros */
	/* consistency group (a VOLUME_OPEN naming one): frames are held in
	 * arrival order and reach the target only through release_seq */
	struct tgroup *grp;        /* NULL: not grouped, every frame applies at once */
	unsigned gi;               /* our member index in grp->g */
	bool grp_free;             /* in a sync / replay: no hold (site_group.c) */
	bool grp_pump_queued;      /* a deferred pump (another member's release) is queued */
	bool grp_left;             /* closing: left the group (no more releases) */
	uint64_t release_seq;      /* cache of site_grp_release_seq (worker only) */
	uint64_t grp_rx_seq;       /* the last seq received (a BARRIER's place) */
	struct held *held_head, *held_tail;
	uint64_t held_bytes;       /* WRITE payload bytes in the held queue */
	unsigned held_count;
	uint64_t applied_marker;   /* newest MARKER the target applied */
	uint64_t sync_marker;      /* applied_marker when the running sync began */
	char label[2 * TSR_SITE_NAME_MAX + 32]; /* "volume V from site S", for logs */
};

/* Held frames past this (bytes or count) stop the reads: TCP backpressure.
 * A member's source has at most its 8 MiB window plus one interval (2 MiB,
 * or one host write of up to 32 MiB that crossed it) past its last released
 * marker in flight (site_source.c window_open), which must fit here or the
 * group would wait for a marker it does not read. */
#define HOLD_MAX_BYTES (48u << 20)
#define HOLD_MAX_FRAMES 16384u

struct tsr_site_server {
	struct tsr_site_tls_ctx *tls;
	struct tsr_worker **workers;     /* copy of the array */
	unsigned n_workers;
	unsigned next_worker;            /* round robin (control thread) */
	char *state_dir;
	char site[TSR_SITE_NAME_MAX + 1];
	char cluster[TSR_SITE_NAME_MAX + 1];
	struct tsr_site_server_ops ops;
	struct ev_loop *loop;
	ev_async wake;                   /* workers -> control thread */
	bool stopping;                   /* control thread */
	struct tvol *vols;               /* control thread */
	pthread_mutex_t lock;            /* see the locking policy */
	pthread_cond_t cond;             /* signalled when a session's worker side ends */
	struct sess *ctl_head, *ctl_tail;
	struct sess *sessions;
	unsigned live;                   /* sessions whose worker side has not ended */
	struct tgroup *groups;           /* consistency groups seen (srv->lock) */
	bool no_release_rule;            /* TSR_TEST_SITE_NO_GROUP_RULE: test only, holds nothing */
	unsigned early_ticks;            /* EARLY_TICKS, or TSR_TEST_SITE_EARLY_MS / SYNC_MS */
	/* sessions with unauth set: accept (control thread) adds, their
	 * worker takes away; at TSR_SITE_UNAUTH_MAX accept refuses */
	atomic_uint unauth;
	/* refusals past TSR_SITE_UNAUTH_MAX (control thread): the first is
	 * logged at once and starts refuse_timer (the deadline: one line per
	 * deadline at most); at its end the ones counted meanwhile are, and
	 * it starts again while there are */
	uint64_t refused;                /* refused, not logged yet */
	ev_timer refuse_timer;
};

static void state_path(const struct tsr_site_server *srv, const char *volume, char *out,
		       size_t len)
{
	snprintf(out, len, "%s/%s.state", srv->state_dir, volume);
}

/* ---- session references and the control queue ---- */

static void sess_free(struct sess *s)
{
	if (s->rx_init)
		tsr_site_rx_fini(&s->rx);
	tsr_free_aligned(s->rx_buf);
	pool_fini(&s->pool);
	free(s->frames);
	tsr_free_aligned(s->state_buf);
	tsr_free_aligned(s->dig_rbuf);
	free(s->dig_out);
	tsr_site_codec_destroy(s->codec);
	free(s);
}

static void sess_unref(struct sess *s)
{
	struct tsr_site_server *srv = s->srv;
	bool last;

	pthread_mutex_lock(&srv->lock);
	last = --s->refs == 0;
	if (last) {
		struct sess **pp = &srv->sessions;

		while (*pp != s)
			pp = &(*pp)->next_all;
		*pp = s->next_all;
		pthread_cond_broadcast(&srv->cond);
	}
	pthread_mutex_unlock(&srv->lock);
	if (last)
		sess_free(s);
}

/* Worker -> control thread.  Caller holds srv->lock. */
static void ctl_post_locked(struct sess *s, enum ctl_kind kind)
{
	struct tsr_site_server *srv = s->srv;

	s->ctl = kind;
	s->next_ctl = NULL;
	if (srv->ctl_tail)
		srv->ctl_tail->next_ctl = s;
	else
		srv->ctl_head = s;
	srv->ctl_tail = s;
	ev_async_send(srv->loop, &srv->wake);
}

/* Send fn(s) to the session's current worker, holding a reference. */
static int sess_send(struct sess *s, tsr_worker_msg_fn fn)
{
	struct tsr_site_server *srv = s->srv;
	int ret;

	pthread_mutex_lock(&srv->lock);
	s->refs++;
	ret = tsr_worker_send(s->w, fn, s);
	if (ret)
		s->refs--;
	pthread_mutex_unlock(&srv->lock);
	return ret;
}

/* ---- sending (session's worker) ---- */

static void pump(struct sess *s);
static void sess_begin_close(struct sess *s);

/* Refuse: log, send ERROR code about (stream, seq), then end the session. */
static void sess_error(struct sess *s, int code, uint64_t stream, uint64_t seq,
		       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void sess_error(struct sess *s, int code, uint64_t stream, uint64_t seq,
		       const char *fmt, ...)
{
	va_list ap;
	size_t i;

	if (code < 0)
		code = -code;
	if (code < 1 || code > 4095)
		code = EPROTO;
	va_start(ap, fmt);
	vsnprintf(s->err.msg, sizeof(s->err.msg), fmt, ap);
	va_end(ap);
	for (i = 0; s->err.msg[i]; i++) /* names are printable; strerror is ASCII */
		if (s->err.msg[i] < 0x20 || s->err.msg[i] > 0x7e)
			s->err.msg[i] = '?';
	s->err.code = code;
	/* EINPROGRESS is "being created / attached / grown here: retry", asked
	 * again every 200 ms while the target's copies open (review 17b F4):
	 * the source warns once, the target logs each at info */
	if (code == EINPROGRESS)
		tsr_info("site server: %s: refused with %s: %s", s->label, err_name(code),
			 s->err.msg);
	else
		tsr_warn("site server: %s: refused with %s: %s", s->label, err_name(code),
			 s->err.msg);
	s->err_hdr = (struct tsr_site_hdr){.opcode = TSR_SITE_ERROR, .stream = stream, .seq = seq};
	s->err_pending = true;
	sess_begin_close(s);
}

static int tx_start(struct sess *s, const struct tsr_site_hdr *h, const void *payload)
{
	int ret = tsr_site_tx_start(&s->tx, h, payload);

	if (ret) {
		tsr_error("site server: %s: cannot send %s: %s", s->label,
			  tsr_site_op_name(h->opcode), strerror(-ret));
		return ret;
	}
	s->tx_busy = true;
	return 0;
}

/* ---- the stream: apply, sync, ACK (home worker) ---- */

/* The sync ended (no pump: the caller's caller pumps). */
static void sync_ended(struct sess *s, int res)
{
	s->syncing = false;
	if (s->sync_final)
		s->final_done = true;
	if (res < 0) {
		tsr_error("site server: %s: flush or state file write: %s; the stream stops here",
			  s->label, strerror(-res));
		s->broken = true;
		if (s->phase != SESS_CLOSING)
			sess_error(s, EIO, s->open_hdr.stream, 0,
				   "volume %s: the target cannot make the stream durable: %s",
				   s->tv->name, strerror(-res));
	} else {
		s->durable = s->sync_seq;
		if (s->tv)
			atomic_store(&s->tv->marker, s->sync_marker);
		s->last_sync_ns = tsr_mono_ns();
		if (s->sync_ack || s->durable > s->acked)
			s->ack_due = true;
	}
	s->sync_ack = false;
}

static void sync_written(void *arg, int res)
{
	struct sess *s = arg;

	sync_ended(s, res);
	pump(s);
}

/* The state as of now into the file (the volume was just flushed). */
static void sync_write(struct sess *s)
{
	struct tsr_site_hdr ack;
	int ret;

	tsr_site_target_ack(s->target, &ack);
	s->st.applied = s->sync_seq;
	s->st.epoch = ack.epoch;
	s->st.flags = s->sync_consistent ? SITE_STATE_CONSISTENT : 0;
	if (s->fresh && s->sync_seq == 0) /* nothing of the whole copy landed yet */
		s->st.flags |= SITE_STATE_FRESH;
	s->st.marker = s->grp ? s->sync_marker : 0;
	if (s->sync_final && !s->broken)
		s->st.flags |= SITE_STATE_CLEAN;
	site_state_pack(&s->st, s->state_buf);
	s->state_iov = (struct iovec){.iov_base = s->state_buf, .iov_len = SITE_STATE_SIZE};
	ret = tsr_io_writev(tsr_worker_io(s->w), s->tv->state_fd, &s->state_iov, 1, 0,
			    TSR_IO_FUA, sync_written, s);
	if (ret)
		sync_ended(s, ret);
}

static void sync_flushed(void *arg, int status)
{
	struct sess *s = arg;

	if (status < 0) {
		tsr_error("site server: %s: flush: %s", s->label, strerror(-status));
		sync_ended(s, status);
	} else {
		sync_write(s);
	}
	pump(s);
}

/* Make applied durable and say so: flush (unless flushed), state, ACK.
 * Later frames may be in the store meanwhile: the flush covers every frame
 * through applied (all completed before it was issued), and the state
 * file names only those. */
static void sync_start(struct sess *s, bool flushed)
{
	int ret;

	s->syncing = true;
	s->sync_seq = tsr_site_target_applied(s->target);
	s->sync_consistent = tsr_site_target_consistent(s->target);
	s->sync_marker = s->applied_marker; /* every marker through sync_seq was applied */
	if (flushed) {
		sync_write(s);
		return;
	}
	ret = tsr_vol_flush(s->tv->vol, tsr_worker_io(s->w), sync_flushed, s);
	if (ret) {
		tsr_error("site server: %s: flush: %s", s->label, strerror(-ret));
		sync_ended(s, ret);
	}
}

static struct pframe *pframe_get(struct sess *s)
{
	struct pframe *pf = s->free_frames;

	if (pf)
		s->free_frames = pf->next;
	return pf;
}

static void pframe_put(struct sess *s, struct pframe *pf)
{
	pool_put(&s->pool, pf->buf, pf->cap);
	pf->buf = NULL;
	pf->next = s->free_frames;
	s->free_frames = pf;
}

/* A frame's callback: the target fires them in seq order, each once
 * applied includes it (0) or with the error that broke the stream. */
static void apply_done(void *arg, int status)
{
	struct pframe *pf = arg;
	struct sess *s = pf->s;
	struct tvol *tv = s->tv;
	uint8_t op = pf->op;
	uint32_t bytes = pf->bytes;
	uint64_t marker = pf->marker;
	int64_t now;

	pframe_put(s, pf);
	s->inflight--;
	if (status < 0) {
		bool first = !s->broken;

		s->broken = true;
		if (first && s->phase != SESS_CLOSING)
			sess_error(s, -status, s->open_hdr.stream,
				   tsr_site_target_applied(s->target) + 1,
				   "volume %s: the target's store failed applying %s: %s", tv->name,
				   tsr_site_op_name(op), strerror(-status));
		pump(s);
		return;
	}
	if (op == TSR_SITE_MARKER && marker > s->applied_marker)
		s->applied_marker = marker;
	atomic_store(&tv->applied, tsr_site_target_applied(s->target));
	atomic_store(&tv->consistent, tsr_site_target_consistent(s->target));
	atomic_fetch_add(&tv->bytes_applied, bytes);
	now = tsr_mono_ns();
	atomic_store(&tv->last_frame_ns, now);
	if (op == TSR_SITE_BARRIER || op == TSR_SITE_SYNC_BEGIN || op == TSR_SITE_SYNC_END) {
		if (op == TSR_SITE_BARRIER)
			s->sync_ack = true;
		if (s->syncing)
			s->sync_again = true; /* after the one running, with a flush of its own */
		else
			sync_start(s, true); /* the target flushed: applied is durable */
	} else if (!s->syncing && now - s->last_sync_ns >= (int64_t)SYNC_MS * 1000000) {
		sync_start(s, false);
	}
	pump(s);
}

/*
 * A compressed WRITE (its wire bytes in rx's own buffer, CRC checked by rx):
 * decompress into s->rx_buf, which must fill exactly the header's length,
 * and describe the plain frame in *plain (flag clear, data_crc of the plain
 * bytes, which tsr_site_target_apply checks as for any WRITE).  false: the
 * session was refused (EBADMSG), nothing reached the volume.
 */
static bool decompress_write(struct sess *s, const struct tsr_site_hdr *h,
			     struct tsr_site_hdr *plain)
{
	int ret;

	if (s->codec == NULL) {
		sess_error(s, EBADMSG, h->stream, h->seq, "volume %s: WRITE seq %llu is compressed "
			   "but the stream's VOLUME_OPEN announced no compression", s->tv->name,
			   (unsigned long long)h->seq);
		return false;
	}
	if (s->rx_buf == NULL || s->rx_cap < h->length) { /* give_payload_buf got one */
		sess_error(s, ENOMEM, h->stream, h->seq, "volume %s: no buffer for WRITE seq %llu",
			   s->tv->name, (unsigned long long)h->seq);
		return false;
	}
	ret = tsr_site_decompress(s->codec, s->rx.payload, h->wire_len, s->rx_buf, h->length);
	if (ret) {
		sess_error(s, ret, h->stream, h->seq, "volume %s: WRITE seq %llu: its %s payload "
			   "(%u bytes) does not decompress to its length of %u bytes",
			   s->tv->name, (unsigned long long)h->seq,
			   tsr_site_compress_name(s->open.compress), h->wire_len, h->length);
		return false;
	}
	*plain = *h;
	plain->flags &= (uint8_t)~TSR_SITE_F_COMPRESSED;
	plain->wire_len = 0;
	plain->payload_len = h->length;
	plain->data_crc = tsr_crc32c(0, s->rx_buf, h->length);
	return true;
}

/* Hand one frame to the target; buf (a pool buffer, or NULL) travels with
 * it until its callback. */
static void apply_frame(struct sess *s, const struct tsr_site_hdr *h, const uint8_t *payload,
			uint8_t *buf, uint32_t cap, uint64_t marker)
{
	struct pframe *pf = pframe_get(s);
	int ret;

	if (pf == NULL) { /* cannot be: the window has as many slots */
		pool_put(&s->pool, buf, cap);
		sess_error(s, EBUSY, h->stream, h->seq, "volume %s: no frame slot", s->tv->name);
		return;
	}
	*pf = (struct pframe){.s = s, .op = h->opcode, .buf = buf, .cap = cap, .marker = marker};
	if (h->opcode == TSR_SITE_WRITE)
		pf->bytes = h->payload_len;
	/* a WRITE's payload passed its CRC in tsr_site_rx_poll (or was
	 * decompressed into a buffer whose CRC h carries) and is not touched
	 * since: the target runs every other check */
	ret = tsr_site_target_apply_checked(s->target, h, payload, apply_done, pf);
	if (ret) {
		uint64_t applied = tsr_site_target_applied(s->target);

		pframe_put(s, pf);

		switch (ret) {
		case -EILSEQ:
			sess_error(s, ret, h->stream, h->seq, "volume %s: %s seq %llu out of order: "
				   "applied through %llu, expected %llu", s->tv->name,
				   tsr_site_op_name(h->opcode), (unsigned long long)h->seq,
				   (unsigned long long)applied, (unsigned long long)applied + 1);
			break;
		case -ESTALE:
			sess_error(s, ret, h->stream, h->seq, "volume %s: %s seq %llu has epoch %llu, "
				   "below the stream's", s->tv->name, tsr_site_op_name(h->opcode),
				   (unsigned long long)h->seq, (unsigned long long)h->epoch);
			break;
		case -EBADMSG:
			sess_error(s, ret, h->stream, h->seq, "volume %s: WRITE seq %llu: payload "
				   "checksum mismatch", s->tv->name, (unsigned long long)h->seq);
			break;
		case -ENOSPC:
			sess_error(s, ret, h->stream, h->seq, "volume %s: %s seq %llu past the "
				   "volume's end (%llu bytes)", s->tv->name,
				   tsr_site_op_name(h->opcode), (unsigned long long)h->seq,
				   (unsigned long long)tsr_vol_size(s->tv->vol));
			break;
		case -EOPNOTSUPP:
			sess_error(s, ret, h->stream, h->seq, "volume %s: %s seq %llu is not supported "
				   "by this target", s->tv->name, tsr_site_op_name(h->opcode),
				   (unsigned long long)h->seq);
			break;
		default:
			sess_error(s, ret, h->stream, h->seq, "volume %s: %s seq %llu refused: %s",
				   s->tv->name, tsr_site_op_name(h->opcode),
				   (unsigned long long)h->seq, strerror(-ret));
			break;
		}
		return;
	}
	s->inflight++;
}

/* ---- consistency groups: the held queue (home worker) ---- */

static void msg_grp_pump(struct tsr_worker *w, void *arg)
{
	struct sess *s = arg;

	(void)w;
	s->grp_pump_queued = false;
	if (s->phase == SESS_STREAM)
		pump(s);
	sess_unref(s);
}

/* Another member's release point moved: pump it once this loop pass ends
 * (not from inside our own pump). */
static void grp_wake(struct sess *o)
{
	if (o->grp_pump_queued || o->held_head == NULL)
		return;
	pthread_mutex_lock(&o->srv->lock);
	o->refs++;
	pthread_mutex_unlock(&o->srv->lock);
	if (tsr_worker_defer(o->w, msg_grp_pump, o) == 0)
		o->grp_pump_queued = true;
	else
		sess_unref(o);
}

/* After a group event (grp->lock held): every member's cached release
 * point; the others to wake go into wake[]. */
static unsigned grp_refresh_locked(struct sess *s, struct sess **wake)
{
	struct tgroup *grp = s->grp;
	unsigned n = 0;

	for (unsigned i = 0; i < grp->g.n; i++) {
		struct sess *o = grp->sess[i];
		uint64_t r = site_grp_release_seq(&grp->g, i);

		if (o == NULL || o->grp_left)
			continue;
		if (r != o->release_seq && o != s)
			wake[n++] = o;
		o->release_seq = r;
	}
	return n;
}

/* Apply what the release rule lets through, while the window has room. */
static void drain_held(struct sess *s)
{
	struct held *e;

	while ((e = s->held_head) != NULL &&
	       (s->phase == SESS_STREAM || s->phase == SESS_CLOSING) && !s->err_pending &&
	       !s->broken) {
		uint32_t bytes = e->h.opcode == TSR_SITE_WRITE ? e->h.payload_len : 0;

		if (!s->srv->no_release_rule && e->pos > s->release_seq)
			return;
		if (!tsr_site_target_room(s->target, bytes))
			return;
		s->held_head = e->next;
		if (s->held_head == NULL)
			s->held_tail = NULL;
		s->held_bytes -= bytes;
		s->held_count--;
		apply_frame(s, &e->h, e->buf, e->buf, e->cap, e->marker);
		free(e);
	}
}

static void held_drop(struct sess *s)
{
	while (s->held_head) {
		struct held *e = s->held_head;

		s->held_head = e->next;
		pool_put(&s->pool, e->buf, e->cap);
		free(e);
	}
	s->held_tail = NULL;
	s->held_bytes = 0;
	s->held_count = 0;
}

/* A grouped member received a frame: into the held queue, the group's
 * bookkeeping on MARKER / SYNC_BEGIN / SYNC_END, then apply what may go. */
static void grp_take(struct sess *s, const struct tsr_site_hdr *h, const uint8_t *payload,
		     uint8_t *own, uint32_t cap)
{
	struct tgroup *grp = s->grp;
	struct sess *wake[TSR_SITE_GROUP_MAX];
	unsigned nwake = 0, held_members = 0;
	struct held *e;
	int ret = 0;

	e = calloc(1, sizeof(*e));
	if (e == NULL) {
		pool_put(&s->pool, own, cap);
		sess_error(s, ENOMEM, h->stream, h->seq, "volume %s: the target is out of memory",
			   s->tv->name);
		return;
	}
	e->h = *h;
	if (h->opcode == TSR_SITE_WRITE) {
		if (own == NULL) { /* not in a pool buffer: one that outlives rx's */
			own = pool_get(&s->pool, h->payload_len, &cap);
			if (own)
				memcpy(own, payload, h->payload_len);
		}
		if (own == NULL) {
			free(e);
			sess_error(s, ENOMEM, h->stream, h->seq, "volume %s: the target is out of "
				   "memory", s->tv->name);
			return;
		}
		e->buf = own;
		e->cap = cap;
		s->held_bytes += h->payload_len;
	} else {
		pool_put(&s->pool, own, cap);
	}
	if (h->opcode == TSR_SITE_MARKER) {
		struct tsr_site_marker m;

		ret = tsr_site_marker_parse(payload, h->payload_len, &m);
		if (ret == 0 && strcmp(m.group, s->open.group) != 0)
			ret = -EPROTO;
		if (ret) {
			free(e);
			sess_error(s, ret < 0 ? -ret : ret, h->stream, h->seq, "volume %s: MARKER seq "
				   "%llu does not name this stream's group %s", s->tv->name,
				   (unsigned long long)h->seq, s->open.group);
			return;
		}
		e->marker = h->offset;
		held_members = m.members;
	}
	e->pos = h->opcode == TSR_SITE_BARRIER ? s->grp_rx_seq : h->seq;
	if (h->opcode != TSR_SITE_BARRIER)
		s->grp_rx_seq = h->seq;
	if (s->held_tail)
		s->held_tail->next = e;
	else
		s->held_head = e;
	s->held_tail = e;
	s->held_count++;

	if (h->opcode == TSR_SITE_MARKER || h->opcode == TSR_SITE_SYNC_BEGIN ||
	    (h->opcode == TSR_SITE_SYNC_END && s->grp_free)) {
		pthread_mutex_lock(&grp->lock);
		if (h->opcode == TSR_SITE_MARKER) {
			ret = site_grp_marker(&grp->g, s->gi, h->offset, h->seq);
			if (held_members > grp->g.members) /* a member enabled since */
				grp->g.members = held_members;
		} else {
			site_grp_received(&grp->g, s->gi, h->seq);
			site_grp_set_free(&grp->g, s->gi, h->opcode == TSR_SITE_SYNC_BEGIN);
			s->grp_free = h->opcode == TSR_SITE_SYNC_BEGIN;
		}
		if (ret == 0) {
			site_grp_release(&grp->g);
			nwake = grp_refresh_locked(s, wake);
		}
		pthread_mutex_unlock(&grp->lock);
		if (ret) {
			sess_error(s, ret == -EILSEQ ? EILSEQ : ENOMEM, h->stream, h->seq,
				   "volume %s: MARKER %llu at seq %llu is not after the group's "
				   "last marker of this stream", s->tv->name,
				   (unsigned long long)h->offset, (unsigned long long)h->seq);
			return;
		}
		for (unsigned i = 0; i < nwake; i++)
			grp_wake(wake[i]);
	}
	drain_held(s);
}

static void handle_stream_frame(struct sess *s)
{
	const struct tsr_site_hdr *h = &s->rx.hdr;
	const uint8_t *payload = s->rx.payload;
	struct tsr_site_hdr plain;
	uint8_t *own = NULL;
	uint32_t cap = 0;

	switch (h->opcode) {
	case TSR_SITE_WRITE:
	case TSR_SITE_ZERO:
	case TSR_SITE_SNAPSHOT:
	case TSR_SITE_MARKER:
	case TSR_SITE_BARRIER:
	case TSR_SITE_SYNC_BEGIN:
	case TSR_SITE_SYNC_END:
		break;
	case TSR_SITE_ERROR: {
		struct tsr_site_error e;

		if (tsr_site_error_parse(s->rx.payload, h->payload_len, &e) == 0)
			tsr_warn("site server: %s: the source ended the stream: %s (%s)", s->label,
				 e.msg, strerror(e.code));
		else
			tsr_warn("site server: %s: the source sent a malformed ERROR", s->label);
		sess_begin_close(s);
		return;
	}
	default:
		sess_error(s, EPROTO, h->stream, h->seq, "unexpected %s frame in a stream",
			   tsr_site_op_name(h->opcode));
		return;
	}
	if (h->opcode == TSR_SITE_MARKER && s->grp == NULL) {
		sess_error(s, EPROTO, h->stream, h->seq, "volume %s: MARKER seq %llu on a stream "
			   "whose VOLUME_OPEN named no consistency group", s->tv->name,
			   (unsigned long long)h->seq);
		return;
	}
	if (h->opcode == TSR_SITE_WRITE && (h->flags & TSR_SITE_F_COMPRESSED)) {
		if (!decompress_write(s, h, &plain))
			return;
		h = &plain;
		payload = s->rx_buf;
	}
	if (h->opcode == TSR_SITE_WRITE && s->rx_buf && payload == s->rx_buf) {
		own = s->rx_buf; /* the frame's own buffer until its cb */
		cap = s->rx_cap;
		s->rx_buf = NULL;
	}
	if (s->grp) {
		grp_take(s, h, payload, own, cap);
		return;
	}
	apply_frame(s, h, payload, own, cap, 0);
}

/* rx handed out a header (hold): name where its payload goes, once it fits
 * in the window (a WRITE into its own pool buffer).  false: wait. */
static bool give_payload_buf(struct sess *s)
{
	const struct tsr_site_hdr *h = &s->rx.hdr;

	if (s->phase != SESS_STREAM || h->opcode != TSR_SITE_WRITE) {
		tsr_site_rx_set_payload(&s->rx, NULL); /* small payloads: rx's own buffer */
		return true;
	}
	/* a compressed WRITE: its wire bytes go to rx's own buffer and are
	 * decompressed into the pool buffer (length bytes) once checked */
	if (s->grp ? s->held_bytes + h->length > HOLD_MAX_BYTES :
		     !tsr_site_target_room(s->target, h->length))
		return false;
	if (s->rx_buf == NULL || s->rx_cap < h->length) {
		pool_put(&s->pool, s->rx_buf, s->rx_cap);
		s->rx_buf = pool_get(&s->pool, h->length, &s->rx_cap);
	}
	if (s->rx_buf == NULL) {
		sess_error(s, ENOMEM, h->stream, h->seq, "volume %s: the target is out of memory",
			   s->tv->name);
		return false;
	}
	tsr_site_rx_set_payload(&s->rx, (h->flags & TSR_SITE_F_COMPRESSED) ? NULL : s->rx_buf);
	return true;
}

static void timer_cb(void *arg, uint32_t events)
{
	struct sess *s = arg;
	uint64_t ticks = 0;

	(void)events;
	if (read(s->timer_fd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
		return;
	s->rx_dry = false; /* read at least once a tick whatever the edges said */
	if (s->phase == SESS_HANDSHAKE || s->phase == SESS_HELLO || s->phase == SESS_OPEN) {
		/* the timer's expirations, not these calls: a worker held up
		 * meanwhile sees several at once (capped: no overflow) */
		s->early_ticks += ticks < EARLY_TICKS ? (unsigned)ticks : EARLY_TICKS;
		if (s->early_ticks > s->srv->early_ticks) {
			tsr_warn("site server: %s: no %s within %.1f s: closing", s->label,
				 s->phase == SESS_HANDSHAKE ? "TLS handshake" :
				 s->phase == SESS_HELLO ? "HELLO" : "VOLUME_OPEN",
				 s->srv->early_ticks * SYNC_MS / 1000.0);
			s->dead = true;
			sess_begin_close(s);
		}
	}
	if (s->phase == SESS_STREAM && !s->syncing && !s->err_pending &&
	    tsr_site_target_applied(s->target) > s->durable)
		sync_start(s, false);
	pump(s);
}

/* ---- handshake phase frames (accepting worker) ---- */

static void sess_at_control(struct sess *s);

static void handle_early_frame(struct sess *s)
{
	const struct tsr_site_hdr *h = &s->rx.hdr;
	int ret;

	if (s->phase == SESS_HELLO) {
		struct tsr_site_hello ours = {0};
		struct tsr_site_hdr r = {.opcode = TSR_SITE_HELLO, .flags = TSR_SITE_F_REPLY};

		if (h->opcode != TSR_SITE_HELLO || h->flags) {
			sess_error(s, EPROTO, 0, 0, "expected HELLO, got %s",
				   tsr_site_op_name(h->opcode));
			return;
		}
		ret = tsr_site_hello_parse(s->rx.payload, h->payload_len, &s->from);
		if (ret) {
			sess_error(s, ret, 0, 0, "malformed HELLO");
			return;
		}
		snprintf(s->label, sizeof(s->label), "site %s (cluster %s)", s->from.site,
			 s->from.cluster);
		snprintf(ours.site, sizeof(ours.site), "%s", s->srv->site);
		snprintf(ours.cluster, sizeof(ours.cluster), "%s", s->srv->cluster);
		ret = tsr_site_hello_pack(&ours, s->tx_payload);
		r.length = ret > 0 ? (uint32_t)ret : 0;
		if (ret < 0 || tx_start(s, &r, s->tx_payload)) {
			s->dead = true;
			sess_begin_close(s);
			return;
		}
		s->phase = SESS_OPEN;
		return;
	}
	/* SESS_OPEN */
	if (h->opcode != TSR_SITE_VOLUME_OPEN || (h->flags & ~TSR_SITE_F_DIGEST)) {
		sess_error(s, EPROTO, h->stream, h->seq, "expected VOLUME_OPEN, got %s",
			   tsr_site_op_name(h->opcode));
		return;
	}
	ret = tsr_site_open_parse(s->rx.payload, h->payload_len, &s->open);
	if (ret == -EPROTONOSUPPORT) {
		sess_error(s, ret, h->stream, 0, "VOLUME_OPEN asks for compression algorithm %u, "
			   "which this target does not support (known: none, lz4, zstd)",
			   (unsigned)s->rx.payload[2]);
		return;
	}
	if (ret) {
		sess_error(s, ret, h->stream, 0, "malformed VOLUME_OPEN (volume name or layout)");
		return;
	}
	if (s->open.compress != TSR_SITE_COMPRESS_NONE) {
		ret = tsr_site_codec_create(s->open.compress, &s->codec);
		if (ret) {
			sess_error(s, ret, h->stream, 0, "cannot set up %s decompression: %s",
				   tsr_site_compress_name(s->open.compress), strerror(-ret));
			return;
		}
	}
	s->open_hdr = *h;
	snprintf(s->label, sizeof(s->label), "volume %s from site %s", s->open.volume,
		 s->from.site);
	s->phase = SESS_AT_CONTROL;
	sess_at_control(s);
}

/* ---- the pump: everything a session can do now ---- */

static bool can_read(const struct sess *s)
{
	switch (s->phase) {
	case SESS_HELLO:
	case SESS_OPEN:
		return true;
	case SESS_STREAM: /* room for one more frame (rx holds a header until it fits) */
		if (s->grp) /* held frames wait for the release rule, not the window */
			return s->rx.need_buf || (s->held_bytes < HOLD_MAX_BYTES &&
						  s->held_count < HOLD_MAX_FRAMES);
		return s->rx.need_buf || tsr_site_target_room(s->target, 0);
	default:
		return false;
	}
}

static void sess_teardown(struct sess *s);

/* The handshake ended (or the session did): a slot for another
 * unauthenticated connection. */
static void unauth_end(struct sess *s)
{
	if (!s->unauth)
		return;
	s->unauth = false;
	atomic_fetch_sub(&s->srv->unauth, 1);
}

/* Let the target issue what waited for io queue room and complete what it
 * can.  Callbacks may run (and end the session): the caller's last act. */
static void target_kick(struct sess *s)
{
	if (s->target)
		tsr_site_target_kick(s->target);
}

/* Closing: wait for the frames in flight, write the final state, then end. */
static bool close_step(struct sess *s)
{
	if (s->grp && !s->grp_left) {
		/* leave the group now: from here it releases us nothing more,
		 * and what it released is applied before the final state (the
		 * other members may have applied their part of it already) */
		struct tgroup *grp = s->grp;

		pthread_mutex_lock(&grp->lock);
		site_grp_leave(&grp->g, s->gi);
		s->release_seq = site_grp_release_seq(&grp->g, s->gi);
		pthread_mutex_unlock(&grp->lock);
		s->grp_left = true;
	}
	if (s->held_head && !s->broken && !s->err_pending &&
	    (s->srv->no_release_rule || s->held_head->pos <= s->release_seq)) {
		drain_held(s);
		return false; /* completions pump again */
	}
	if (s->inflight || s->syncing || s->dig_inflight)
		return false;
	if (s->target && !s->final_done) {
		s->sync_final = true;
		sync_start(s, false);
		if (s->syncing)
			return false;
	}
	if (!s->dead)
		(void)tsr_site_tls_shutdown(s->tls); /* best effort: close_notify */
	sess_teardown(s);
	return true;
}

/* ---- digest phase (failback resync, a source restart) ---- */

static void dig_read_done(void *arg, int status)
{
	struct sess *s = arg;
	uint32_t len = (uint32_t)(s->dig_limit - s->dig_next < DIG_READ ?
				  s->dig_limit - s->dig_next : DIG_READ);
	uint32_t n = 0;

	s->dig_inflight = false;
	if (s->phase == SESS_STREAM && s->digesting) {
		if (status < 0) {
			sess_error(s, EIO, s->open_hdr.stream, 0, "volume %s: cannot read it for "
				   "the region digests at %llu: %s", s->tv->name,
				   (unsigned long long)s->dig_next, strerror(-status));
		} else {
			for (uint32_t pos = 0; pos < len; pos += TSR_SITE_DIGEST_REGION, n++)
				tsr_site_digest(s->dig_rbuf + pos, len - pos < TSR_SITE_DIGEST_REGION ?
						len - pos : TSR_SITE_DIGEST_REGION,
						s->dig_out + (size_t)n * TSR_SITE_DIGEST_LEN);
			s->dig_out_off = s->dig_next;
			s->dig_out_len = n * TSR_SITE_DIGEST_LEN;
			s->dig_ready = true;
			s->dig_next += len;
		}
	}
	pump(s);
}

/* [dig_next, +len) is one hole of the volume: its digests need no read. */
static bool dig_hole(struct sess *s, uint32_t len)
{
	struct tsr_extent ext[4];
	size_t n = 0;

	if (tsr_vol_block_status(s->tv->vol, s->dig_next, len, ext, 4, &n) < 0 || n == 0)
		return false;
	return (ext[0].flags & TSR_EXTENT_HOLE) && ext[0].offset <= s->dig_next &&
	       ext[0].offset + ext[0].length >= s->dig_next + len;
}

/* One step of the digest phase with tx free: send what is ready, or read
 * the next piece.  true: a frame went to tx (or an error is pending). */
static bool dig_step(struct sess *s)
{
	struct tsr_site_hdr h = {.opcode = TSR_SITE_DIGEST, .stream = s->st.stream,
				 .epoch = s->st.epoch};
	uint32_t len;
	int ret;

	len = (uint32_t)(s->dig_limit - s->dig_next < DIG_READ ? s->dig_limit - s->dig_next :
			 DIG_READ);
	if (!s->dig_ready && !s->dig_inflight && len && dig_hole(s, len)) {
		uint32_t n = 0;

		for (uint32_t pos = 0; pos < len; pos += TSR_SITE_DIGEST_REGION, n++) {
			uint8_t *d = s->dig_out + (size_t)n * TSR_SITE_DIGEST_LEN;

			if (len - pos >= TSR_SITE_DIGEST_REGION) {
				memcpy(d, s->dig_zero, TSR_SITE_DIGEST_LEN);
			} else { /* the volume's last, shorter region */
				memset(s->dig_rbuf, 0, len - pos);
				tsr_site_digest(s->dig_rbuf, len - pos, d);
			}
		}
		s->dig_out_off = s->dig_next;
		s->dig_out_len = n * TSR_SITE_DIGEST_LEN;
		s->dig_ready = true;
		s->dig_next += len;
	}
	if (s->dig_ready) {
		h.offset = s->dig_out_off;
		h.length = s->dig_out_len;
		s->dig_ready = false;
		if (tx_start(s, &h, s->dig_out))
			s->dead = true;
		return true;
	}
	if (s->dig_inflight)
		return false;
	if (s->dig_next >= s->dig_limit) { /* the end marker: offset = bytes covered */
		h.offset = (s->dig_limit + TSR_SITE_DIGEST_REGION - 1) /
			   TSR_SITE_DIGEST_REGION * TSR_SITE_DIGEST_REGION;
		s->digesting = false;
		tsr_info("site server: %s: region digests of %llu bytes sent", s->label,
			 (unsigned long long)s->dig_limit);
		if (tx_start(s, &h, NULL))
			s->dead = true;
		return true;
	}
	/* what is stored, as scrub reads it: not the page cache (a block good
	 * there and bad on the disk would digest equal and never be shipped) */
	ret = tsr_vol_read_direct(s->tv->vol, tsr_worker_io(s->w), s->dig_next, len, s->dig_rbuf,
				  dig_read_done, s);
	if (ret == -EAGAIN) /* the io queue is full: again at the next tick */
		return false;
	if (ret < 0) {
		sess_error(s, EIO, s->open_hdr.stream, 0, "volume %s: cannot read it for the "
			   "region digests: %s", s->tv->name, strerror(-ret));
		return true;
	}
	s->dig_inflight = true;
	return false;
}

static void pump(struct sess *s)
{
	int ret;

	if (s->phase == SESS_DONE || s->phase == SESS_AT_CONTROL)
		return;
	for (;;) {
		if (s->phase == SESS_HANDSHAKE) {
			ret = tsr_site_tls_handshake(s->tls);
			if (ret == -EAGAIN)
				return;
			unauth_end(s);
			if (ret == 0 && !s->rx_init) { /* an authenticated peer: its buffer now */
				ret = tsr_site_rx_init(&s->rx);
				s->rx_init = ret == 0;
				if (ret)
					tsr_error("site server: %s: %s", s->label, strerror(-ret));
			}
			if (ret < 0) { /* site_tls logged the cause */
				s->dead = true;
				sess_begin_close(s);
				continue;
			}
			s->phase = SESS_HELLO;
		}
		if (s->tx_busy) {
			ret = tsr_site_tx_poll(&s->tx, s->tls);
			if (ret == -EAGAIN && !(s->phase == SESS_CLOSING && s->end_requested))
				return;
			s->tx_busy = false;
			if (ret < 0) {
				s->dead = true;
				if (s->phase != SESS_CLOSING)
					sess_begin_close(s);
			}
			continue;
		}
		if (!s->dead && s->err_pending) {
			uint8_t *p = s->tx_payload;
			int n = tsr_site_error_pack(&s->err, p);

			s->err_pending = false;
			s->err_sent = true;
			s->err_hdr.length = n > 0 ? (uint32_t)n : 0;
			if (n < 0 || tx_start(s, &s->err_hdr, p))
				s->dead = true;
			continue;
		}
		/* an ERROR is the session's last frame: a sync that ends while
		 * the session closes after it (the final sync) sends no ACK */
		if (!s->dead && s->ack_due && s->target && !s->err_sent && !s->err_pending) {
			struct tsr_site_hdr ack;

			tsr_site_target_ack(s->target, &ack);
			ack.seq = s->durable;
			s->ack_due = false;
			s->acked = s->durable;
			if (tx_start(s, &ack, NULL))
				s->dead = true;
			continue;
		}
		if (s->phase == SESS_CLOSING) {
			if (!close_step(s))
				target_kick(s); /* last: s may be gone after it */
			return;
		}
		if (s->phase == SESS_STREAM && s->digesting && !s->dead && !s->err_pending) {
			if (dig_step(s))
				continue;
			return; /* the read's completion pumps again */
		}
		if (s->phase == SESS_STREAM && s->sync_again && !s->syncing) {
			s->sync_again = false;
			sync_start(s, false);
			continue;
		}
		if (s->phase == SESS_STREAM && s->held_head && !s->dead && !s->err_pending)
			drain_held(s);
		if (!can_read(s)) {
			target_kick(s);
			return;
		}
		if (s->rx_dry) {
			target_kick(s);
			return;
		}
		ret = tsr_site_rx_poll(&s->rx, s->tls);
		if (ret == -EAGAIN) {
			/* waiting for bytes (not for room to send a TLS
			 * reply): nothing to read until the fd's next edge */
			s->rx_dry = tsr_site_tls_want(s->tls) == POLLIN;
			target_kick(s);
			return;
		}
		if (ret == 2) { /* a header: its payload's buffer first */
			if (give_payload_buf(s) || s->phase != SESS_STREAM)
				continue; /* read on, or refused (closing) */
			target_kick(s); /* no room: a completion pumps again; s may be gone */
			return;
		}
		if (ret == 0) {
			tsr_info("site server: %s: closed by the source", s->label);
			sess_begin_close(s);
			continue;
		}
		if (ret == -EBADMSG && s->rx.got > TSR_SITE_HDR_SIZE &&
		    s->rx.got == TSR_SITE_HDR_SIZE + s->rx.hdr.payload_len) {
			/* a whole frame whose payload fails its CRC: still in step, say why */
			sess_error(s, EBADMSG, s->rx.hdr.stream, s->rx.hdr.seq, "%s seq %llu: payload "
				   "checksum mismatch; nothing applied",
				   tsr_site_op_name(s->rx.hdr.opcode),
				   (unsigned long long)s->rx.hdr.seq);
			continue;
		}
		if (ret < 0) {
			if (ret != -ECONNRESET)
				tsr_warn("site server: %s: bad frame from the source: %s; closing",
					 s->label, strerror(-ret));
			s->dead = ret == -ECONNRESET || ret == -EPROTO;
			sess_begin_close(s);
			continue;
		}
		if (s->phase == SESS_STREAM)
			handle_stream_frame(s);
		else
			handle_early_frame(s);
	}
}

static void fd_cb(void *arg, uint32_t events)
{
	struct sess *s = arg;

	/* bytes (or a hang-up) came: read again; an EPOLLOUT alone changes
	 * nothing for reads (rx_dry is never set waiting for POLLOUT) */
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		s->rx_dry = false;
	pump(s);
}

static void sess_begin_close(struct sess *s)
{
	if (s->phase == SESS_CLOSING || s->phase == SESS_DONE)
		return;
	s->phase = SESS_CLOSING; /* tv->connected stays until the final state is written */
}

static void sess_teardown(struct sess *s)
{
	struct tsr_site_server *srv = s->srv;

	if (s->watched)
		tsr_worker_unwatch(s->w, s->fd);
	s->watched = false;
	if (s->timer_watched)
		tsr_worker_unwatch(s->w, s->timer_fd);
	s->timer_watched = false;
	if (s->timer_fd >= 0)
		close(s->timer_fd);
	s->timer_fd = -1;
	tsr_site_tls_free(s->tls);
	s->tls = NULL;
	tsr_site_target_destroy(s->target);
	s->target = NULL;
	held_drop(s);
	if (s->grp) {
		struct tgroup *grp = s->grp;
		bool left = true;

		pthread_mutex_lock(&grp->lock);
		if (!s->grp_left)
			site_grp_leave(&grp->g, s->gi);
		/* normally what it released was applied before the final state;
		 * after a store error or a refusal it may be less */
		site_grp_settle(&grp->g, s->gi, atomic_load(&s->tv->marker), s->durable);
		grp->sess[s->gi] = NULL;
		for (unsigned i = 0; i < grp->g.n; i++)
			left = left && grp->sess[i] == NULL;
		if (left)
			grp->w = NULL;
		pthread_mutex_unlock(&grp->lock);
		s->grp = NULL;
	}
	close(s->fd);
	s->fd = -1;
	unauth_end(s);
	s->phase = SESS_DONE;
	if (s->tv) {
		atomic_store(&s->tv->connected, false);
		tsr_info("site server: %s: session ended at seq %llu (%s)", s->label,
			 (unsigned long long)s->durable,
			 s->final_done && !s->broken ? "clean" : "not clean");
	}
	pthread_mutex_lock(&srv->lock);
	s->worker_done = true;
	srv->live--;
	ctl_post_locked(s, CTL_ENDED);
	pthread_cond_broadcast(&srv->cond);
	s->refs--; /* the worker side's */
	pthread_mutex_unlock(&srv->lock);
	/* s may be freed by the control thread from here on */
}

/* ---- messages to workers ---- */

static int grp_arrive(struct sess *s, struct tsr_worker *w);

static void msg_start(struct tsr_worker *w, void *arg)
{
	struct sess *s = arg;
	int ret;

	struct itimerspec its = {.it_interval = {0, SYNC_MS * 1000000L},
				 .it_value = {0, SYNC_MS * 1000000L}};

	ret = tsr_site_tls_new(s->srv->tls, s->fd, NULL, &s->tls);
	if (ret == 0) {
		s->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
		if (s->timer_fd < 0 || timerfd_settime(s->timer_fd, 0, &its, NULL) < 0)
			ret = -errno;
	}
	if (ret == 0) {
		ret = tsr_worker_watch(w, s->timer_fd, EPOLLIN, timer_cb, s);
		s->timer_watched = ret == 0;
	}
	if (ret == 0) {
		ret = tsr_worker_watch(w, s->fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, fd_cb, s);
		s->watched = ret == 0;
	}
	if (ret) {
		tsr_error("site server: accepted connection: %s", strerror(-ret));
		s->dead = true;
		s->phase = SESS_CLOSING;
	}
	pump(s);
	sess_unref(s);
}

static void msg_end(struct tsr_worker *w, void *arg)
{
	struct sess *s = arg;
	struct tsr_worker *owner;

	pthread_mutex_lock(&s->srv->lock);
	owner = s->w;
	pthread_mutex_unlock(&s->srv->lock);
	if (owner != w) { /* moved meanwhile: follow it (after its arrival message) */
		if (sess_send(s, msg_end) == 0) {
			sess_unref(s);
			return;
		}
	}
	s->end_requested = true;
	if (s->phase != SESS_DONE && s->phase != SESS_AT_CONTROL) {
		sess_begin_close(s);
		pump(s);
	}
	sess_unref(s);
}

static void msg_arrive(struct tsr_worker *w, void *arg)
{
	struct sess *s = arg;
	struct tsr_site_target_opts o = {.vol = s->tv->vol, .io = tsr_worker_io(w),
					 .stream = s->st.stream, .epoch = s->st.epoch,
					 .applied = s->st.applied,
					 .consistent = (s->st.flags & SITE_STATE_CONSISTENT) != 0,
					 .window = FRAME_SLOTS};
	struct tsr_site_hdr r = {.opcode = TSR_SITE_VOLUME_OPEN, .flags = TSR_SITE_F_REPLY,
				 .stream = s->st.stream, .seq = s->st.applied,
				 .epoch = s->st.epoch};
	int ret;

	s->state_buf = tsr_alloc_aligned(SITE_STATE_SIZE);
	s->frames = calloc(FRAME_SLOTS, sizeof(*s->frames));
	for (unsigned i = 0; s->frames && i < FRAME_SLOTS; i++)
		pframe_put(s, &s->frames[i]);
	ret = s->state_buf && s->frames ? tsr_site_target_create(&o, &s->target) : -ENOMEM;
	if (ret == 0 && !s->timer_watched) { /* moved here from the accepting worker */
		ret = tsr_worker_watch(w, s->timer_fd, EPOLLIN, timer_cb, s);
		s->timer_watched = ret == 0;
	}
	if (ret == 0 && !s->watched) { /* moved here from the accepting worker */
		ret = tsr_worker_watch(w, s->fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, fd_cb,
				       s);
		s->watched = ret == 0;
	}
	if (ret) {
		tsr_error("site server: %s: cannot start the stream: %s", s->label, strerror(-ret));
		tsr_site_target_destroy(s->target);
		s->target = NULL;
		s->phase = SESS_OPEN; /* so that the error below is sent */
		sess_error(s, -ret, s->st.stream, 0, "volume %s: the target cannot start the "
			   "stream: %s", s->tv->name, strerror(-ret));
		pump(s);
		sess_unref(s);
		return;
	}
	if (s->replay)
		tsr_site_target_set_inconsistent(s->target);
	if (s->open.group[0] && grp_arrive(s, w)) {
		tsr_warn("site server: %s: %s", s->label, s->open_msg);
		tsr_site_target_destroy(s->target);
		s->target = NULL;
		s->phase = SESS_OPEN; /* so that the error below is sent */
		sess_error(s, s->open_err, s->st.stream, 0, "%s", s->open_msg);
		pump(s);
		sess_unref(s);
		return;
	}
	s->durable = s->acked = s->st.applied;
	s->last_sync_ns = tsr_mono_ns();
	atomic_store(&s->tv->applied, s->st.applied);
	atomic_store(&s->tv->epoch, s->st.epoch);
	atomic_store(&s->tv->consistent, tsr_site_target_consistent(s->target));
	atomic_store(&s->tv->connected, true);
	if (s->replay)
		r.flags |= TSR_SITE_F_REPLAY;
	if (s->fresh)
		r.flags |= TSR_SITE_F_FRESH;
	if (s->open_hdr.flags & TSR_SITE_F_DIGEST) {
		s->dig_rbuf = tsr_alloc_aligned(DIG_READ);
		s->dig_out = malloc(DIG_READ / TSR_SITE_DIGEST_REGION * TSR_SITE_DIGEST_LEN);
		if (s->dig_rbuf == NULL || s->dig_out == NULL) {
			s->phase = SESS_STREAM;
			sess_error(s, ENOMEM, s->st.stream, 0, "volume %s: the target is out of "
				   "memory for the region digests", s->tv->name);
			pump(s);
			sess_unref(s);
			return;
		}
		s->digesting = true;
		memset(s->dig_rbuf, 0, TSR_SITE_DIGEST_REGION);
		tsr_site_digest(s->dig_rbuf, TSR_SITE_DIGEST_REGION, s->dig_zero);
		s->dig_limit = s->open_hdr.offset; /* the source's size (<= ours) */
		s->dig_next = 0;
	}
	s->phase = SESS_STREAM;
	s->rx_dry = false; /* records may wait in the TLS buffer: read once */
	tsr_site_rx_hold(&s->rx, true); /* each WRITE into its own buffer */
	tsr_info("site server: %s: stream %llu resumes after seq %llu%s", s->label,
		 (unsigned long long)s->st.stream, (unsigned long long)s->st.applied,
		 s->replay ? " (replay: the last session did not end cleanly)" :
		 s->fresh ? " (a re-created target: the source copies it whole)" : "");
	if (tx_start(s, &r, NULL)) {
		s->dead = true;
		sess_begin_close(s);
	}
	pump(s);
	sess_unref(s);
}

static int open_fail(struct sess *s, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The group named in VOLUME_OPEN, found or made (any thread). */
static struct tgroup *grp_get(struct tsr_site_server *srv, const char *name, unsigned members)
{
	struct tgroup *grp;

	pthread_mutex_lock(&srv->lock);
	for (grp = srv->groups; grp; grp = grp->next)
		if (strcmp(grp->g.name, name) == 0)
			break;
	if (grp == NULL && (grp = calloc(1, sizeof(*grp))) != NULL) {
		pthread_mutex_init(&grp->lock, NULL);
		site_grp_init(&grp->g, name, members);
		grp->next = srv->groups;
		srv->groups = grp;
	}
	pthread_mutex_unlock(&srv->lock);
	return grp;
}

/*
 * The session joins its consistency group on worker w (its home).  0, or
 * an errno for ERROR with the sentence in s->open_msg.
 */
static int grp_arrive(struct sess *s, struct tsr_worker *w)
{
	struct tgroup *grp = grp_get(s->srv, s->open.group, s->open.members);
	uint64_t marker = strcmp(s->st.group, s->open.group) == 0 ? s->st.marker : 0;
	bool free_run = !tsr_site_target_consistent(s->target);
	int ret = 0, idx;
	bool idle;

	if (grp == NULL)
		return open_fail(s, ENOMEM, "the target is out of memory");
	pthread_mutex_lock(&grp->lock);
	idle = grp->w == NULL;
	/* A member enabled later announces more members: the group waits for
	 * them all (it never holds less than announced).  Fewer (a member was
	 * disabled) only while none of the group streams: it starts over. */
	if (s->open.members > grp->g.members) {
		grp->g.members = s->open.members;
	} else if (s->open.members < grp->g.members && idle) {
		char name[TSR_SITE_NAME_MAX + 1];

		snprintf(name, sizeof(name), "%s", grp->g.name);
		site_grp_fini(&grp->g);
		site_grp_init(&grp->g, name, s->open.members);
	}
	if (!idle && grp->w != w) {
		ret = open_fail(s, EXDEV, "volume %s runs on worker%u at the target, group %s's "
				"other members on worker%u: a group's volumes must share one "
				"home worker (detach and attach it at the target)", s->tv->name,
				tsr_worker_index(w), grp->g.name, tsr_worker_index(grp->w));
		goto out;
	}
	idx = site_grp_join(&grp->g, s->tv->name, marker, s->st.applied, free_run);
	if (idx < 0) {
		ret = open_fail(s, -idx, "volume %s: group %s %s", s->tv->name, grp->g.name,
				idx == -ENOSPC ? "has all its announced members already" :
				"member has a session already");
		goto out;
	}
	tsr_info("site server: %s: joins group %s as member %d of %u at marker %llu, seq %llu%s",
		 s->label, grp->g.name, idx, grp->g.members, (unsigned long long)marker,
		 (unsigned long long)s->st.applied, free_run ? " (not consistent: runs free "
		 "until its SYNC_END)" : "");
	grp->w = w;
	grp->sess[idx] = s;
	s->grp = grp;
	s->gi = (unsigned)idx;
	s->grp_free = free_run;
	s->release_seq = site_grp_release_seq(&grp->g, s->gi);
	s->grp_rx_seq = s->st.applied;
	s->applied_marker = s->sync_marker = marker;
	s->tv->grp = grp;
	atomic_store(&s->tv->marker, marker);
out:
	pthread_mutex_unlock(&grp->lock);
	return ret;
}

/* The control thread answered VOLUME_OPEN (on the accepting worker). */
static void msg_opened(struct tsr_worker *w, void *arg)
{
	struct sess *s = arg;
	struct tsr_worker *home;

	if (s->phase != SESS_AT_CONTROL) { /* ended meanwhile */
		sess_unref(s);
		return;
	}
	if (s->open_err == 0 && s->end_requested)
		open_fail(s, -ESHUTDOWN, "the target site is shutting down; retry later");
	if (s->open_err) {
		s->phase = SESS_OPEN;
		sess_error(s, s->open_err, s->open_hdr.stream, 0, "%s", s->open_msg);
		pump(s);
		sess_unref(s);
		return;
	}
	home = tsr_vol_home(s->tv->vol);
	if (home == NULL || home == w) {
		msg_arrive(w, s); /* drops the message's reference */
		return;
	}
	/* Move: the apply must run on the volume's home worker. */
	tsr_debug("site server: %s: moving from worker%u to its home worker%u", s->label,
		  tsr_worker_index(w), tsr_worker_index(home));
	if (s->watched)
		tsr_worker_unwatch(w, s->fd);
	s->watched = false;
	if (s->timer_watched)
		tsr_worker_unwatch(w, s->timer_fd);
	s->timer_watched = false;
	pthread_mutex_lock(&s->srv->lock);
	s->w = home;
	if (tsr_worker_send(home, msg_arrive, s)) { /* home stopping: end here */
		s->w = w;
		pthread_mutex_unlock(&s->srv->lock);
		s->phase = SESS_OPEN;
		s->dead = true;
		sess_begin_close(s);
		pump(s);
		sess_unref(s);
		return;
	}
	pthread_mutex_unlock(&s->srv->lock); /* the message's reference goes to msg_arrive */
}

/* ---- control thread: VOLUME_OPEN ---- */

static struct tvol *tvol_find(struct tsr_site_server *srv, const char *name)
{
	struct tvol *tv;

	for (tv = srv->vols; tv; tv = tv->next)
		if (strcmp(tv->name, name) == 0)
			return tv;
	return NULL;
}

static struct tvol *tvol_get(struct tsr_site_server *srv, const char *name)
{
	struct tvol *tv = tvol_find(srv, name);

	if (tv)
		return tv;
	tv = calloc(1, sizeof(*tv));
	if (tv == NULL)
		return NULL;
	snprintf(tv->name, sizeof(tv->name), "%s", name);
	tv->state_fd = -1;
	tv->next = srv->vols;
	srv->vols = tv;
	return tv;
}

/* Open volume's state file (O_DIRECT when the file system takes it).
 * -ENOENT when absent and !create. */
static int state_open(struct tsr_site_server *srv, const char *volume, bool create)
{
	char path[PATH_MAX];
	int flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0);
	int fd;

	state_path(srv, volume, path, sizeof(path));
	fd = open(path, flags | O_DIRECT, 0644);
	if (fd < 0 && errno == EINVAL) /* no O_DIRECT here (tmpfs): FUA writes still hold */
		fd = open(path, flags, 0644);
	if (fd < 0) {
		int ret = -errno;

		if (ret != -ENOENT || create)
			tsr_error("site server: state file %s: %s", path, strerror(-ret));
		return ret;
	}
	return fd;
}

/* Read and check the block of fd.  Logs a refusal unless quiet. */
static int state_read(struct tsr_site_server *srv, int fd, const char *volume,
		      struct site_state *out, bool quiet)
{
	uint8_t *buf = tsr_alloc_aligned(SITE_STATE_SIZE);
	char path[PATH_MAX];
	ssize_t n;
	int ret;

	if (buf == NULL)
		return -ENOMEM;
	n = pread(fd, buf, SITE_STATE_SIZE, 0);
	if (n < 0)
		ret = -errno;
	else if (n != SITE_STATE_SIZE)
		ret = -ENODATA;
	else
		ret = site_state_parse(buf, out);
	if (ret == 0 && strcmp(out->volume, volume) != 0)
		ret = -EPROTO;
	tsr_free_aligned(buf);
	if (ret && !quiet) {
		state_path(srv, volume, path, sizeof(path));
		tsr_error("site server: state file %s: %s; volume %s is not served as a "
			  "replication target until an operator checks it", path, state_err(ret),
			  volume);
	}
	return ret;
}

/* Write st durably from the control thread (blocking is fine here). */
static int state_write_sync(struct tsr_site_server *srv, int fd, const struct site_state *st)
{
	uint8_t *buf = tsr_alloc_aligned(SITE_STATE_SIZE);
	ssize_t n;
	int ret = 0;

	if (buf == NULL)
		return -ENOMEM;
	site_state_pack(st, buf);
	n = pwrite(fd, buf, SITE_STATE_SIZE, 0);
	if (n < 0)
		ret = -errno;
	else if (n != SITE_STATE_SIZE)
		ret = -EIO;
	else if (fdatasync(fd) < 0)
		ret = -errno;
	tsr_free_aligned(buf);
	if (ret)
		tsr_error("site server: writing the state of volume %s in %s: %s", st->volume,
			  srv->state_dir, strerror(-ret));
	return ret;
}

/* Refuse VOLUME_OPEN with err (its message: fmt).  ESTALE tells the source
 * "promoted" (it demotes itself), which only open_promoted says: an
 * -ESTALE of the state file's I/O (a file system on NFS) is sent as EIO. */
static int open_fail(struct sess *s, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->open_msg, sizeof(s->open_msg), fmt, ap);
	va_end(ap);
	s->open_err = err < 0 ? -err : err;
	if (s->open_err == ESTALE)
		s->open_err = EIO;
	return err;
}

/* Refuse VOLUME_OPEN of name as promoted at this site: ESTALE, the source
 * demotes itself.  Only to the stream the promoted volume received (a
 * promoted state file of it; target/<vol> "promoted" and the record made for
 * it, open_volume's -EKEYREVOKED). */
static int open_promoted(struct sess *s, const char *name)
{
	snprintf(s->open_msg, sizeof(s->open_msg), "volume %s was promoted at the target site "
		 "%s: this stream has ended; the source is demoted", name, s->srv->site);
	s->open_err = ESTALE;
	return -ESTALE;
}

static void request_end(struct sess *s)
{
	if (sess_send(s, msg_end))
		tsr_warn("site server: %s: cannot reach its worker to end it", s->label);
}

/*
 * Is the state st, read from volume's file, of a target deleted since?  1:
 * it names a target id (version 2) and ops.volume_id says the volume of that
 * name now is another one, or none (now: "").  0: it is this volume's, or
 * nobody can tell (a version 1 file, no op).  -errno: the lookup failed.
 */
static int state_check_id(struct tsr_site_server *srv, const char *volume,
			  const struct site_state *st, char now[TSR_SITE_NAME_MAX + 1])
{
	int ret;

	now[0] = '\0';
	if (st->target_id[0] == '\0' || srv->ops.volume_id == NULL)
		return 0;
	ret = srv->ops.volume_id(srv->ops.arg, volume, now);
	if (ret == -ENOENT) {
		now[0] = '\0';
		return 1;
	}
	if (ret == 0 && !tsr_valid_name(now))
		ret = -EPROTO;
	if (ret)
		return ret;
	return strcmp(now, st->target_id) != 0;
}

/* state_check_id's 1; false when it cannot tell (the lookup failed), as
 * before the op. */
static bool state_of_deleted(struct tsr_site_server *srv, const char *volume,
			     const struct site_state *st, char now[TSR_SITE_NAME_MAX + 1])
{
	return state_check_id(srv, volume, st, now) > 0;
}

/* Everything VOLUME_OPEN decides (control thread); s->open_err on refusal. */
static int ctl_open_volume(struct sess *s)
{
	struct tsr_site_server *srv = s->srv;
	const struct tsr_site_hdr *h = &s->open_hdr;
	const char *name = s->open.volume;
	struct site_state st = {0};
	struct tsr_vol *vol = NULL;
	struct tvol *tv;
	char why[TSR_SITE_ERRMSG_MAX + 1], id[TSR_SITE_NAME_MAX + 1] = "";
	bool created = false;
	int ret;

	if (srv->stopping)
		return open_fail(s, -ESHUTDOWN, "the target site is shutting down; retry later");
	tv = tvol_get(srv, name);
	if (tv == NULL)
		return open_fail(s, -ENOMEM, "the target is out of memory");
	if (tv->sess) {
		request_end(tv->sess);
		return open_fail(s, -EBUSY, "volume %s: an older session of this stream is still "
				 "open at the target; it is being closed, retry", name);
	}
	if (tv->state_fd < 0) {
		tv->state_fd = state_open(srv, name, false);
		if (tv->state_fd == -ENOENT)
			tv->state_fd = -1;
		else if (tv->state_fd < 0)
			return open_fail(s, tv->state_fd, "volume %s: cannot open its state file at "
					 "the target: %s", name, strerror(-tv->state_fd));
	}
	if (tv->state_fd >= 0) {
		ret = state_read(srv, tv->state_fd, name, &st, false);
		if (ret)
			return open_fail(s, -EUCLEAN, "volume %s: its replication state at the target "
					 "is damaged (%s); an operator must check it", name,
					 state_err(ret));
		ret = state_check_id(srv, name, &st, id);
		/* ESTALE below would demote the source for a state that may be
		 * of a target deleted since (dropped then, FRESH): no answer
		 * without the lookup (review revI) */
		if (ret < 0 && (st.flags & SITE_STATE_PROMOTED) && st.stream == h->stream)
			return open_fail(s, -EIO, "volume %s: cannot look up its id at the target "
					 "(%s), which decides whether its promoted state is of this "
					 "volume; retry", name, strerror(-ret));
		if (ret > 0) {
			/* before its stream and promoted flag: they are of the
			 * volume deleted, not of this one.  FRESH when this
			 * stream had something applied there (its source
			 * ACKed it and holds no log of it); another stream
			 * starts as on no state file */
			bool was_fed = st.stream == h->stream &&
				       (st.applied > 0 || (st.flags & SITE_STATE_FRESH));

			tsr_warn("site server: %s: volume %s is not the one its state file "
				 "describes (target %s of stream %016llx, applied through seq "
				 "%llu%s; now %s%s): that state is dropped%s", s->label, name,
				 st.target_id, (unsigned long long)st.stream,
				 (unsigned long long)st.applied,
				 (st.flags & SITE_STATE_PROMOTED) ? ", promoted" : "",
				 id[0] ? id : "none", id[0] ? ": deleted and created again" :
				 ": deleted", was_fed ? ", the source is told to copy it whole" : "");
			st = (struct site_state){.stream = h->stream,
						 .flags = SITE_STATE_CLEAN |
							  (was_fed ? SITE_STATE_FRESH : 0)};
		}
		id[0] = '\0'; /* open_volume's answer, below, is the id used */
		int take = st.stream != h->stream && srv->ops.may_replace != NULL ?
			   srv->ops.may_replace(srv->ops.arg, &s->from, name, h->stream) : 0;

		if (take < 0)
			return open_fail(s, -EBUSY, "volume %s is being failed back to site %s; "
					 "retry", name, s->from.site);
		if (take > 0) {
			/* failback: the cluster took this volume back as a target of
			 * the stream of the site that holds the primary role now */
			tsr_info("site server: volume %s: stream %016llx (%s) replaces stream %016llx "
				 "(%s%s)", name, (unsigned long long)h->stream, s->from.site,
				 (unsigned long long)st.stream, st.site,
				 (st.flags & SITE_STATE_PROMOTED) ? ", promoted" : "");
			st = (struct site_state){.stream = h->stream, .flags = SITE_STATE_CLEAN};
		} else if ((st.flags & SITE_STATE_PROMOTED) && st.stream == h->stream) {
			return open_promoted(s, name);
		} else if (st.flags & SITE_STATE_PROMOTED) {
			/* ESTALE demotes the source: only the promoted stream's
			 * own, as the cluster's check answers (a node without
			 * this file).  Another stream (another site's volume of
			 * that name, the old primary's stream enabled again, the
			 * primary's stream after a failback that this file,
			 * older, does not know) is refused, and retries */
			return open_fail(s, -EEXIST, "volume %s was promoted at the target site %s "
					 "(the target of stream %016llx from site %s) and is no target "
					 "of this stream: refused (tessera replication status %s there)",
					 name, srv->site, (unsigned long long)st.stream, st.site, name);
		}
		if (st.stream != h->stream)
			return open_fail(s, -EEXIST, "volume %s is the target of another stream "
					 "(from site %s)", name, st.site);
		s->replay = !(st.flags & SITE_STATE_CLEAN);
	} else {
		st.stream = h->stream;
		st.applied = 0;
		st.flags = 0; /* a new stream is no prefix of the history until its SYNC_END */
	}
	why[0] = '\0';
	ret = srv->ops.open_volume(srv->ops.arg, &s->from, &s->open, h->offset, h->stream, &vol,
				   id, why, sizeof(why));
	/* ESTALE to VOLUME_OPEN says "promoted" (the source demotes itself),
	 * which only the state file decides (above): open_volume's -ESTALE (a
	 * copy saw a newer coordinator at the target) is a failure to retry */
	if (ret == -ESTALE) {
		tsr_warn("site server: %s: open_volume answered %s: told to the source as an "
			 "I/O error", s->label, strerror(ESTALE));
		ret = -EIO;
	}
	/* promoted at this site, as the cluster knows it (this node's file
	 * may be another node's older one, or of a target deleted since) */
	if (ret == -EKEYREVOKED)
		return open_promoted(s, name);
	if (ret && why[0])
		return open_fail(s, ret, "%s", why);
	if (ret || vol == NULL)
		return open_fail(s, ret ? ret : -EIO, "volume %s: the target cannot open it: %s",
				 name, strerror(ret ? -ret : EIO));
	if (tv->vol)
		tsr_vol_put(tv->vol);
	tv->vol = vol;
	if (!tsr_valid_name(id))
		id[0] = '\0';
	if (tv->state_fd >= 0 && st.applied > 0 && st.target_id[0] && id[0] &&
	    strcmp(st.target_id, id) != 0) {
		/* the state is of a volume deleted since: this one holds nothing
		 * of the stream (and no log tail of the source could fill it) */
		tsr_warn("site server: %s: volume %s is not the one its state file describes "
			 "(target %s, applied through seq %llu; now %s: deleted and created "
			 "again): nothing applied here, the source is told to copy it whole",
			 s->label, name, st.target_id, (unsigned long long)st.applied, id);
		st.applied = 0;
		st.marker = 0;
		/* no prefix until the source's copy ends with SYNC_END; FRESH
		 * kept until a frame lands: a source built before the flag
		 * refuses the reply and asks again, and must not then be told
		 * "seq 0" alone (it would resend its log tail only) */
		st.flags = SITE_STATE_FRESH;
	}
	if (id[0])
		snprintf(st.target_id, sizeof(st.target_id), "%s", id);
	if (st.target_id[0] == '\0') /* the flag is of a version 2 file only */
		st.flags &= ~SITE_STATE_FRESH;
	if (st.flags & SITE_STATE_FRESH) {
		s->replay = false;
		s->fresh = true;
	}
	if (tv->state_fd < 0) {
		tv->state_fd = state_open(srv, name, true);
		if (tv->state_fd < 0) {
			ret = tv->state_fd;
			tv->state_fd = -1;
			return open_fail(s, ret, "volume %s: cannot create its state file at the "
					 "target: %s", name, strerror(-ret));
		}
		created = true;
	}
	/* An older source epoch is not refused here (ESTALE to VOLUME_OPEN means
	 * "promoted" to the source): its frames are, by the target (ESTALE). */
	if (h->epoch > st.epoch)
		st.epoch = h->epoch;
	if (s->replay)
		st.flags &= ~SITE_STATE_CONSISTENT;
	st.flags &= ~SITE_STATE_CLEAN; /* from here frames may land past applied */
	snprintf(st.site, sizeof(st.site), "%s", s->from.site);
	snprintf(st.cluster, sizeof(st.cluster), "%s", s->from.cluster);
	snprintf(st.volume, sizeof(st.volume), "%s", name);
	if (strcmp(st.group, s->open.group) != 0) { /* joined, left or changed its group */
		snprintf(st.group, sizeof(st.group), "%s", s->open.group);
		st.marker = 0;
	}
	ret = state_write_sync(srv, tv->state_fd, &st);
	if (ret == 0 && created)
		ret = tsr_fsync_dir(srv->state_dir);
	if (ret) {
		if (created) { /* leave no half-made binding behind */
			char path[PATH_MAX];

			state_path(srv, name, path, sizeof(path));
			unlink(path);
			close(tv->state_fd);
			tv->state_fd = -1;
		}
		return open_fail(s, ret, "volume %s: cannot write its state file at the target: %s",
				 name, strerror(-ret));
	}
	tv->st = st;
	tv->sess = s;
	s->tv = tv;
	s->st = st;
	s->durable = st.applied;
	return 0;
}

static void ctl_open(struct sess *s)
{
	if (ctl_open_volume(s) == 0)
		tsr_info("site server: %s: stream %llu opened", s->label,
			 (unsigned long long)s->open_hdr.stream);
	if (sess_send(s, msg_opened))
		tsr_error("site server: %s: its worker is gone", s->label);
}

static void ctl_drain(struct tsr_site_server *srv)
{
	for (;;) {
		struct sess *s;

		pthread_mutex_lock(&srv->lock);
		s = srv->ctl_head;
		if (s) {
			srv->ctl_head = s->next_ctl;
			if (srv->ctl_head == NULL)
				srv->ctl_tail = NULL;
		}
		pthread_mutex_unlock(&srv->lock);
		if (s == NULL)
			return;
		if (s->ctl == CTL_OPEN) {
			ctl_open(s);
			sess_unref(s); /* the queue's */
		} else {
			if (s->tv && s->tv->sess == s) {
				/* its worker side is torn down (no apply, flush or
				 * digest read in flight): the handle goes too, else it
				 * holds the volume against a detach (not clean) and
				 * its delete (the store copy busy, and a new stream of
				 * the name refused "File exists" until the leftover
				 * sweep); the next VOLUME_OPEN opens it again */
				tsr_vol_put(s->tv->vol);
				s->tv->vol = NULL;
				s->tv->sess = NULL;
			}
			sess_unref(s); /* the control side's */
		}
	}
}

static void wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	(void)loop;
	(void)revents;
	ctl_drain(w->data);
}

/* Worker: hand VOLUME_OPEN to the control thread. */
static void sess_at_control(struct sess *s)
{
	pthread_mutex_lock(&s->srv->lock);
	s->refs++; /* the queue's */
	ctl_post_locked(s, CTL_OPEN);
	pthread_mutex_unlock(&s->srv->lock);
}

/* ---- public API (control thread) ---- */

static int mkdir_p(const char *dir)
{
	char path[PATH_MAX];
	size_t n = strlen(dir);

	if (n == 0 || n >= sizeof(path))
		return -EINVAL;
	memcpy(path, dir, n + 1);
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static void refuse_timer_cb(struct ev_loop *loop, ev_timer *t, int revents);

int tsr_site_server_start(const struct tsr_site_server_opts *opts,
			  struct tsr_site_server **out)
{
	struct tsr_site_server *srv;
	int ret;

	if (opts == NULL || out == NULL || opts->tls == NULL || opts->workers == NULL ||
	    opts->n_workers == 0 || opts->state_dir == NULL || opts->loop == NULL ||
	    opts->ops.open_volume == NULL || !tsr_valid_name(opts->site) ||
	    !tsr_valid_name(opts->cluster))
		return -EINVAL;
	for (unsigned i = 0; i < opts->n_workers; i++)
		if (opts->workers[i] == NULL)
			return -EINVAL;
	ret = mkdir_p(opts->state_dir);
	if (ret) {
		tsr_error("site server: state directory %s: %s", opts->state_dir, strerror(-ret));
		return ret;
	}
	srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return -ENOMEM;
	srv->workers = calloc(opts->n_workers, sizeof(*srv->workers));
	srv->state_dir = strdup(opts->state_dir);
	/* on CLOCK_MONOTONIC: the stop's 50 ms polls (tsr_cond_wait_until_ms)
	 * neither stretch nor vanish with a step of the wall clock */
	ret = srv->workers == NULL || srv->state_dir == NULL ? -ENOMEM
							      : tsr_cond_init_mono(&srv->cond);
	if (ret) {
		free(srv->workers);
		free(srv->state_dir);
		free(srv);
		return ret;
	}
	memcpy(srv->workers, opts->workers, opts->n_workers * sizeof(*srv->workers));
	srv->n_workers = opts->n_workers;
	srv->tls = opts->tls;
	snprintf(srv->site, sizeof(srv->site), "%s", opts->site);
	snprintf(srv->cluster, sizeof(srv->cluster), "%s", opts->cluster);
	srv->ops = opts->ops;
	srv->loop = opts->loop;
	{ /* test only: groups are tracked but nothing is held (shows the checker fails) */
		const char *e = getenv("TSR_TEST_SITE_NO_GROUP_RULE");

		srv->no_release_rule = e && *e && strcmp(e, "0") != 0;
		if (srv->no_release_rule)
			tsr_warn("site server: TSR_TEST_SITE_NO_GROUP_RULE is set: consistency "
				 "groups are NOT held to one marker (test only)");
	}
	{ /* test only: a shorter deadline before VOLUME_OPEN (the idle-flood test) */
		const char *e = getenv("TSR_TEST_SITE_EARLY_MS");
		long ms = e ? strtol(e, NULL, 10) : 0;

		srv->early_ticks = ms >= 100 && ms <= EARLY_TICKS * SYNC_MS
					   ? (unsigned)(ms / SYNC_MS) : EARLY_TICKS;
	}
	atomic_init(&srv->unauth, 0);
	ev_timer_init(&srv->refuse_timer, refuse_timer_cb, 1.0, 0.0);
	srv->refuse_timer.data = srv;
	pthread_mutex_init(&srv->lock, NULL);
	ev_async_init(&srv->wake, wake_cb);
	srv->wake.data = srv;
	ev_async_start(srv->loop, &srv->wake);
	*out = srv;
	return 0;
}

/* "a connection from HOST:PORT" for logs until HELLO names the site: an
 * IPv6 peer as [ADDR]:PORT, an IPv4 one on a dual-stack listener
 * (v4-mapped) as IPv4. */
static void peer_label(int fd, char *out, size_t len)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "";

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
		ss.ss_family = AF_UNSPEC;
	if (ss.ss_family == AF_INET && inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host)))
		snprintf(out, len, "a connection from %s:%u", host, ntohs(in->sin_port));
	else if (ss.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) &&
		 inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], host, sizeof(host)))
		snprintf(out, len, "a connection from %s:%u", host, ntohs(in6->sin6_port));
	else if (ss.ss_family == AF_INET6 &&
		 inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host)))
		snprintf(out, len, "a connection from [%s]:%u", host, ntohs(in6->sin6_port));
	else
		snprintf(out, len, "a connection (fd %d)", fd);
}

/* The bound's reason, for the refusal lines. */
#define REFUSE_WHY "%u connections have not finished their TLS handshake (the most one " \
	"site listener holds; each is closed after %.1f s without one)"

/* The refusals counted since the last line, if any: one line.  Control thread. */
static void refused_log(struct tsr_site_server *srv)
{
	double window = srv->early_ticks * SYNC_MS / 1000.0;

	if (srv->refused == 0)
		return;
	tsr_warn("site server: refused %llu more connection%s in the last %.1f s: " REFUSE_WHY,
		 (unsigned long long)srv->refused, srv->refused == 1 ? "" : "s", window,
		 TSR_SITE_UNAUTH_MAX, window);
	srv->refused = 0;
}

/* A deadline after a refusal line: the ones since, and another deadline
 * while they come. */
static void refuse_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct tsr_site_server *srv = t->data;

	(void)revents;
	if (srv->refused == 0)
		return; /* quiet: the next refusal is logged at once */
	refused_log(srv);
	ev_timer_set(t, srv->early_ticks * SYNC_MS / 1000.0, 0.0);
	ev_timer_start(loop, t);
}

/* Close fd, which came while TSR_SITE_UNAUTH_MAX connections are in their
 * handshake: logged at once when no refusal was in the last deadline, else
 * counted for the line at its end (refuse_timer_cb). */
static void refuse_unauth(struct tsr_site_server *srv, int fd)
{
	double window = srv->early_ticks * SYNC_MS / 1000.0;
	char label[96];

	if (ev_is_active(&srv->refuse_timer)) {
		srv->refused++;
	} else {
		peer_label(fd, label, sizeof(label));
		tsr_warn("site server: refused %s: " REFUSE_WHY "; more refusals are counted, "
			 "one line per %.1f s", label, TSR_SITE_UNAUTH_MAX, window, window);
		ev_timer_set(&srv->refuse_timer, window, 0.0);
		ev_timer_start(srv->loop, &srv->refuse_timer);
	}
	close(fd);
}

int tsr_site_server_accept(struct tsr_site_server *srv, int fd)
{
	struct tsr_worker *w;
	struct sess *s;
	int ret, fl, one = 1;

	if (srv->stopping) {
		close(fd);
		return -ESHUTDOWN;
	}
	/* only accept adds to it, on this thread: the count cannot grow past */
	if (atomic_load(&srv->unauth) >= TSR_SITE_UNAUTH_MAX) {
		refuse_unauth(srv, fd);
		return -EBUSY;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		close(fd);
		return -ENOMEM;
	}
	s->srv = srv;
	s->fd = fd;
	/* Whatever the caller did: non-blocking, and ACKs not held back by Nagle
	 * (setsockopt fails harmlessly on a socket that is not TCP). */
	fl = fcntl(fd, F_GETFL);
	if (fl >= 0 && !(fl & O_NONBLOCK))
		(void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	s->timer_fd = -1;
	s->phase = SESS_HANDSHAKE;
	peer_label(fd, s->label, sizeof(s->label));
	w = srv->workers[srv->next_worker++ % srv->n_workers];
	pthread_mutex_lock(&srv->lock);
	s->w = w;
	s->refs = 3; /* worker side, control side, the start message */
	s->next_all = srv->sessions;
	srv->sessions = s;
	srv->live++;
	s->unauth = true;
	atomic_fetch_add(&srv->unauth, 1);
	ret = tsr_worker_send(w, msg_start, s);
	if (ret) {
		srv->sessions = s->next_all;
		srv->live--;
		unauth_end(s);
	}
	pthread_mutex_unlock(&srv->lock);
	if (ret) {
		close(fd);
		sess_free(s);
		return ret;
	}
	return 0;
}

/* Wait (control thread, blocking) until s's worker side ended. */
static void wait_worker_done(struct sess *s)
{
	struct tsr_site_server *srv = s->srv;

	pthread_mutex_lock(&srv->lock);
	while (!s->worker_done)
		pthread_cond_wait(&srv->cond, &srv->lock);
	pthread_mutex_unlock(&srv->lock);
}

void tsr_site_server_stop(struct tsr_site_server *srv)
{
	if (srv == NULL)
		return;
	srv->stopping = true;
	ctl_drain(srv); /* pending VOLUME_OPENs are refused */
	for (;;) {
		struct sess *s, *todo = NULL;

		pthread_mutex_lock(&srv->lock);
		for (s = srv->sessions; s; s = s->next_all)
			if (!s->worker_done && !s->end_sent) {
				todo = s;
				s->end_sent = true;
				break;
			}
		pthread_mutex_unlock(&srv->lock);
		if (todo == NULL)
			break;
		request_end(todo);
	}
	pthread_mutex_lock(&srv->lock);
	while (srv->live > 0 || srv->sessions) {
		pthread_mutex_unlock(&srv->lock);
		ctl_drain(srv); /* sessions that were at the control thread meanwhile */
		pthread_mutex_lock(&srv->lock);
		if (srv->live > 0 || srv->sessions)
			tsr_cond_wait_until_ms(&srv->cond, &srv->lock, tsr_mono_ms() + 50);
	}
	pthread_mutex_unlock(&srv->lock);
	ctl_drain(srv);
	ev_async_stop(srv->loop, &srv->wake);
	ev_timer_stop(srv->loop, &srv->refuse_timer);
	refused_log(srv); /* the last ones counted */
	while (srv->groups) {
		struct tgroup *grp = srv->groups;

		srv->groups = grp->next;
		site_grp_fini(&grp->g);
		pthread_mutex_destroy(&grp->lock);
		free(grp);
	}
	while (srv->vols) {
		struct tvol *tv = srv->vols;

		srv->vols = tv->next;
		tsr_vol_put(tv->vol);
		if (tv->state_fd >= 0)
			close(tv->state_fd);
		free(tv);
	}
	pthread_cond_destroy(&srv->cond);
	pthread_mutex_destroy(&srv->lock);
	free(srv->workers);
	free(srv->state_dir);
	free(srv);
}

/* A state file's info, or the live session's (list). */
static int info_of(struct tsr_site_server *srv, const char *name,
		   struct tsr_site_target_info *out)
{
	char now[TSR_SITE_NAME_MAX + 1];
	struct tvol *tv = tvol_find(srv, name);
	struct site_state st;
	int64_t last;
	int fd, ret;

	memset(out, 0, sizeof(*out));
	snprintf(out->volume, sizeof(out->volume), "%s", name);
	out->last_frame_age_sec = -1;
	if (tv && tv->sess) { /* its worker owns the file now: the counters say it */
		st = tv->st;
		out->connected = atomic_load(&tv->connected);
		out->applied = atomic_load(&tv->applied);
		out->epoch = atomic_load(&tv->epoch);
		out->consistent = atomic_load(&tv->consistent);
	} else {
		fd = tv && tv->state_fd >= 0 ? tv->state_fd : state_open(srv, name, false);
		if (fd < 0)
			return fd;
		ret = state_read(srv, fd, name, &st, true); /* list() is polled: no log flood */
		if (!(tv && tv->state_fd == fd))
			close(fd);
		if (ret)
			return ret;
		out->applied = st.applied;
		out->epoch = st.epoch;
		out->consistent = (st.flags & SITE_STATE_CONSISTENT) != 0;
		/* a promoted state of a target deleted since says nothing of the
		 * volume of that name now (the cluster marks target/<vol>
		 * "promoted" after promote --group from this); looked up for
		 * promoted files only, few */
		out->promoted = (st.flags & SITE_STATE_PROMOTED) != 0 &&
				!state_of_deleted(srv, name, &st, now);
	}
	snprintf(out->source_site, sizeof(out->source_site), "%s", st.site);
	snprintf(out->source_cluster, sizeof(out->source_cluster), "%s", st.cluster);
	out->stream = st.stream;
	snprintf(out->group, sizeof(out->group), "%s", st.group);
	out->marker = tv && tv->sess ? atomic_load(&tv->marker) : st.marker;
	if (tv && tv->grp && st.group[0]) {
		struct tgroup *grp = tv->grp;

		pthread_mutex_lock(&grp->lock);
		out->group_members = grp->g.members;
		out->group_reach = grp->g.reach;
		site_grp_blocker(&grp->g, out->group_blocker, sizeof(out->group_blocker));
		pthread_mutex_unlock(&grp->lock);
	}
	if (tv) {
		out->bytes_applied = atomic_load(&tv->bytes_applied);
		last = atomic_load(&tv->last_frame_ns);
		if (last)
			out->last_frame_age_sec = (double)(tsr_mono_ns() - last) / 1e9;
	}
	return 0;
}

size_t tsr_site_server_list(struct tsr_site_server *srv, struct tsr_site_target_info *out,
			    size_t max)
{
	DIR *d = opendir(srv->state_dir);
	struct dirent *e;
	size_t n = 0;

	if (d == NULL) {
		tsr_error("site server: state directory %s: %s", srv->state_dir, strerror(errno));
		return 0;
	}
	while ((e = readdir(d)) != NULL) {
		char name[TSR_SITE_NAME_MAX + 1];
		struct tsr_site_target_info info;
		size_t len = strlen(e->d_name);

		if (len <= 6 || len - 6 > TSR_SITE_NAME_MAX ||
		    strcmp(e->d_name + len - 6, ".state") != 0)
			continue;
		memcpy(name, e->d_name, len - 6);
		name[len - 6] = '\0';
		if (!tsr_valid_name(name) || info_of(srv, name, &info))
			continue;
		if (n < max)
			out[n] = info;
		n++;
	}
	closedir(d);
	return n;
}

int tsr_site_server_promote(struct tsr_site_server *srv, const char *volume, bool force)
{
	char now[TSR_SITE_NAME_MAX + 1];
	struct tvol *tv;
	struct site_state st;
	int fd, ret;

	if (srv == NULL || volume == NULL || !tsr_valid_name(volume))
		return -EINVAL;
	tv = tvol_find(srv, volume);
	if (tv && tv->sess) {
		struct sess *s = tv->sess;

		if (!force && atomic_load(&tv->connected) && !atomic_load(&tv->consistent)) {
			tsr_warn("site server: promote %s: not consistent (a resync is open); "
				 "force it to take the volume as it is", volume);
			return -EBUSY;
		}
		request_end(s);
		wait_worker_done(s);
		tv->sess = NULL; /* its CTL_ENDED finds it gone */
	}
	fd = tv && tv->state_fd >= 0 ? tv->state_fd : state_open(srv, volume, false);
	if (fd < 0)
		return fd == -ENOENT ? -ENOENT : fd;
	ret = state_read(srv, fd, volume, &st, false);
	if (ret == 0 && state_of_deleted(srv, volume, &st, now)) {
		/* the file is of a target deleted since: its applied point and
		 * consistency say nothing of the volume of that name now */
		tsr_warn("site server: promote %s: its state file describes target %s (stream "
			 "%016llx, applied through seq %llu), deleted since (now %s): nothing "
			 "promoted", volume, st.target_id, (unsigned long long)st.stream,
			 (unsigned long long)st.applied, now[0] ? now : "no such volume");
		ret = -EIDRM;
	}
	if (ret == 0 && (st.flags & SITE_STATE_PROMOTED))
		ret = -EALREADY;
	if (ret == 0 && !(st.flags & SITE_STATE_CONSISTENT) && !force) {
		tsr_warn("site server: promote %s: not consistent (a resync was open or a replay "
			 "is pending); force it to take the volume as it is", volume);
		ret = -EBUSY;
	}
	if (ret == 0) {
		st.flags |= SITE_STATE_PROMOTED;
		ret = state_write_sync(srv, fd, &st);
	}
	if (!(tv && tv->state_fd == fd))
		close(fd);
	if (ret == -EBADMSG || ret == -EPROTO || ret == -EPROTONOSUPPORT || ret == -ENODATA)
		ret = -EUCLEAN;
	if (ret)
		return ret;
	if (tv && tv->vol) {
		tsr_vol_set_write_fence(tv->vol, 0);
		/* a promoted volume is no target: the handle would hold it against
		 * a detach (not clean) and its delete (its store copy busy, left
		 * for the leftover sweep, and a new DR stream of that name refused
		 * "File exists" until then); a failback opens it again */
		tsr_vol_put(tv->vol);
		tv->vol = NULL;
	}
	tsr_info("site server: volume %s promoted at seq %llu%s: its stream from site %s has "
		 "ended, host writes are allowed", volume, (unsigned long long)st.applied,
		 (st.flags & SITE_STATE_CONSISTENT) ? "" : " (forced: not consistent)", st.site);
	return 0;
}

/* A member of a group being promoted (promote_group). */
struct grp_member {
	char name[TSR_SITE_NAME_MAX + 1];
	struct site_state st;
	bool deleted; /* the state is of a target deleted since (state_of_deleted) */
};

int tsr_site_server_promote_group(struct tsr_site_server *srv, const char *group, bool force,
				  uint64_t *marker, char *msg, size_t msg_len)
{
	struct grp_member *mem = NULL;
	struct tgroup *grp = NULL;
	char now[TSR_SITE_NAME_MAX + 1];
	unsigned n = 0, announced = 0, promoted = 0, skipped = 0, kept, i;
	struct dirent *e;
	DIR *d;
	int ret = 0;

	msg[0] = '\0';
	if (srv == NULL || group == NULL || !tsr_valid_name(group))
		return -EINVAL;
	/* 1. end every live member session: no member moves from here on */
	for (struct tvol *tv = srv->vols; tv; tv = tv->next) {
		if (tv->sess == NULL || strcmp(tv->st.group, group) != 0)
			continue;
		request_end(tv->sess);
		wait_worker_done(tv->sess);
		tv->sess = NULL; /* its CTL_ENDED finds it gone */
	}
	pthread_mutex_lock(&srv->lock);
	for (grp = srv->groups; grp; grp = grp->next)
		if (strcmp(grp->g.name, group) == 0)
			break;
	pthread_mutex_unlock(&srv->lock);
	if (grp) {
		pthread_mutex_lock(&grp->lock);
		announced = grp->g.members;
		pthread_mutex_unlock(&grp->lock);
	}
	/* 2. every member's durable state */
	mem = calloc(TSR_SITE_GROUP_MAX, sizeof(*mem));
	d = mem ? opendir(srv->state_dir) : NULL;
	if (d == NULL) {
		free(mem);
		return mem ? -errno : -ENOMEM;
	}
	while ((e = readdir(d)) != NULL && ret == 0) {
		char name[TSR_SITE_NAME_MAX + 1];
		struct site_state st;
		size_t len = strlen(e->d_name);
		int fd;

		if (len <= 6 || len - 6 > TSR_SITE_NAME_MAX ||
		    strcmp(e->d_name + len - 6, ".state") != 0)
			continue;
		memcpy(name, e->d_name, len - 6);
		name[len - 6] = '\0';
		if (!tsr_valid_name(name))
			continue;
		fd = state_open(srv, name, false);
		if (fd < 0)
			continue;
		if (state_read(srv, fd, name, &st, true) == 0 && strcmp(st.group, group) == 0) {
			if (n == TSR_SITE_GROUP_MAX)
				ret = -E2BIG;
			else
				mem[n++] = (struct grp_member){.st = st};
			if (ret == 0) {
				snprintf(mem[n - 1].name, sizeof(mem[n - 1].name), "%s", name);
				mem[n - 1].deleted = state_of_deleted(srv, name, &st, now);
			}
		}
		close(fd);
	}
	closedir(d);
	if (ret == 0 && n == 0)
		ret = -ENOENT;
	if (ret) {
		snprintf(msg, msg_len, "group %s: %s", group,
			 ret == -ENOENT ? "no volume of this group is a target here" :
			 strerror(-ret));
		free(mem);
		return ret;
	}
	/* 3. no member's state of a target deleted since (--force: such a
	 * member is left out, its file untouched), one marker, every member
	 * consistent, none missing */
	for (i = 0, kept = 0; i < n; i++) {
		if (!mem[i].deleted) {
			mem[kept++] = mem[i];
			continue;
		}
		if (!force) {
			snprintf(msg, msg_len, "group %s: the state file of member %s describes a "
				 "target deleted since (%s is another volume now, or none): nothing "
				 "promoted; --force promotes the others", group, mem[i].name,
				 mem[i].name);
			free(mem);
			tsr_warn("site server: promote %s", msg);
			return -EIDRM;
		}
		skipped++;
	}
	n = kept;
	if (n == 0) {
		snprintf(msg, msg_len, "group %s: no volume of this group is a target here (the "
			 "state files of its %u members describe targets deleted since)", group,
			 skipped);
		free(mem);
		return -ENOENT;
	}
	*marker = mem[0].st.marker;
	for (i = 0; i < n; i++)
		promoted += (mem[i].st.flags & SITE_STATE_PROMOTED) != 0;
	if (promoted == n) {
		snprintf(msg, msg_len, "group %s: every member is promoted already", group);
		free(mem);
		return -EALREADY;
	}
	for (i = 0; i < n && !force; i++) {
		const struct site_state *st = &mem[i].st;

		if (!(st->flags & SITE_STATE_CONSISTENT))
			snprintf(msg, msg_len, "group %s: member %s is not consistent (a resync or "
				 "replay is open); --force promotes every member as it is", group,
				 mem[i].name);
		else if (st->marker != *marker || st->marker == 0)
			snprintf(msg, msg_len, "group %s: member %s is at marker %llu, member %s at "
				 "%llu: not one point of the group's history; --force promotes every "
				 "member as it is", group, mem[i].name,
				 (unsigned long long)st->marker, mem[0].name,
				 (unsigned long long)*marker);
		else if (announced && n < announced)
			snprintf(msg, msg_len, "group %s: %u of its %u members are targets here; "
				 "--force promotes those", group, n, announced);
		else
			continue;
		ret = -EBUSY;
		break;
	}
	/* 4. promote each */
	for (i = 0; i < n && ret == 0; i++) {
		if (mem[i].st.flags & SITE_STATE_PROMOTED)
			continue;
		ret = tsr_site_server_promote(srv, mem[i].name, force);
		if (ret)
			snprintf(msg, msg_len, "group %s: promote %s: %s (%u of %u promoted before it)",
				 group, mem[i].name, strerror(-ret), i, n);
	}
	if (ret == 0) {
		snprintf(msg, msg_len, "group %s: %u members promoted at marker %llu%s%s", group,
			 n, (unsigned long long)*marker, force ? " (forced)" : "",
			 skipped ? " (and members whose targets were deleted left out)" : "");
		tsr_info("site server: %s", msg);
	} else {
		tsr_warn("site server: promote %s", msg);
	}
	free(mem);
	return ret;
}
