/*
 * Private to engine/site/: what site_server.c offers the rest of the folder
 * and its fuzz harness (tests/fuzz/fuzz_site_state.c).
 *
 * site_server.c: the target's per-volume stream state file, one 4 KiB block
 * (byte layout in include/tessera/site.h, "target side: the site listener's
 * sessions"), packed and parsed here and nowhere else.
 *
 * site_group.c: the release rule of one consistency group at the target
 * (struct site_grp below): which frames of each member may reach its volume.
 *
 * site_marker.c: a group's marker numbers at the source (struct site_mark
 * below), persisted so they keep growing across restarts whatever the clock.
 */
#ifndef TSR_SITE_SERVER_INTERNAL_H
#define TSR_SITE_SERVER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tessera/site.h"

#define SITE_STATE_SIZE 4096u
#define SITE_STATE_MAGIC 0x54535354u /* little endian "TSST" */
#define SITE_STATE_VERSION 1u    /* written without a target id */
#define SITE_STATE_VERSION_ID 2u /* written with one (bytes 304..367) */

#define SITE_STATE_CONSISTENT 0x1u /* the volume equals a prefix of the history */
#define SITE_STATE_CLEAN 0x2u      /* the last session closed cleanly: nothing past applied */
#define SITE_STATE_PROMOTED 0x4u   /* failed over: the stream ended for good */
#define SITE_STATE_FRESH 0x8u      /* a re-created target, nothing applied yet: each
				    * VOLUME_OPEN replies TSR_SITE_F_FRESH (version 2) */
#define SITE_STATE_FLAGS (SITE_STATE_CONSISTENT | SITE_STATE_CLEAN | SITE_STATE_PROMOTED | \
			  SITE_STATE_FRESH)

struct site_state {
	uint64_t stream;  /* non-zero: the only stream this volume takes */
	uint64_t epoch;   /* highest source epoch seen */
	uint64_t applied; /* applied and durable through this seq */
	uint32_t flags;   /* SITE_STATE_* only */
	char site[TSR_SITE_NAME_MAX + 1];    /* source site, tsr_valid_name */
	char cluster[TSR_SITE_NAME_MAX + 1]; /* source cluster id, tsr_valid_name */
	char volume[TSR_SITE_NAME_MAX + 1];  /* target volume, tsr_valid_name */
	uint64_t marker;  /* consistency group: the newest MARKER applied through applied
			   * (0: none); 0 when group is "" */
	char group[TSR_SITE_NAME_MAX + 1];   /* consistency group, tsr_valid_name or "" */
	char target_id[TSR_SITE_NAME_MAX + 1]; /* the identity of the volume this state
						* is about (open_volume's id), tsr_valid_name;
						* "" unknown (version 1) */
};

/*
 * State block layout past the names (site.h has the rest): 228 u32 reserved
 * 0, 232 u64 marker, 240 64-byte group name (NUL padded, may be empty: then
 * marker is 0), version 2 only: 304 64-byte target id (NUL padded, not
 * empty), then zero up to 4091.  Packed as version 2 when target_id is set,
 * else as version 1 (byte-identical to a build before the id).
 *
 * Check and decode one state block.  Errors: -EBADMSG bad magic or CRC32C,
 * -EPROTONOSUPPORT another version, -EPROTO a field breaks its rule (stream
 * 0, unknown flag, a name not NUL padded or not a valid name, a reserved or
 * padding byte not 0).
 */
int site_state_parse(const uint8_t buf[SITE_STATE_SIZE], struct site_state *out);
/* Encode st (not validated) with its CRC32C into the whole block. */
void site_state_pack(const struct site_state *st, uint8_t buf[SITE_STATE_SIZE]);

/* ---- site_group.c ---- */

/* A marker a held member received and has not released yet. */
struct site_grp_mark {
	uint64_t n;   /* marker number */
	uint64_t seq; /* its stream seq: the member's release point once released */
};

struct site_grp_member {
	char volume[TSR_SITE_NAME_MAX + 1]; /* the member's target volume */
	bool connected;          /* a session streams it now */
	bool free_run;           /* inside a sync or a replay: released as received,
				  * not counted in the group's reach */
	uint64_t high;           /* newest marker received whole (or released) */
	uint64_t released_marker;/* newest marker at or before release_seq */
	uint64_t release_seq;    /* frames through this seq may reach the volume */
	uint64_t received_seq;   /* the last seq received */
	struct site_grp_mark *pend; /* markers received past release_seq, oldest first */
	unsigned npend, cap;
};

struct site_grp {
	char name[TSR_SITE_NAME_MAX + 1];
	unsigned members;        /* member count the sources announced (VOLUME_OPEN) */
	unsigned n;              /* members seen so far (m[0..n-1]) */
	uint64_t reach;          /* the last R computed: every held member's newest marker */
	struct site_grp_member m[TSR_SITE_GROUP_MAX];
};

void site_grp_init(struct site_grp *g, const char *name, unsigned members);
void site_grp_fini(struct site_grp *g);
/*
 * A member's session starts: its durable marker and applied seq (state
 * file), free_run when it is not consistent (a replay or sync pending).
 * Returns its index.  Errors: -ENOSPC more members than announced, -EBUSY
 * it has a session already.
 */
int site_grp_join(struct site_grp *g, const char *volume, uint64_t marker, uint64_t applied,
		  bool free_run);
/* Its session ended: what it held is dropped; it holds the group where it is. */
void site_grp_leave(struct site_grp *g, unsigned i);
/* After leave, the session's end made marker (applied through seq) durable:
 * the member holds the group there until it joins again. */
void site_grp_settle(struct site_grp *g, unsigned i, uint64_t marker, uint64_t seq);
/* Member i received (whole) a frame taking seq (free runs release it at once). */
void site_grp_received(struct site_grp *g, unsigned i, uint64_t seq);
/* Member i enters (SYNC_BEGIN received) or leaves (SYNC_END received) a free run. */
void site_grp_set_free(struct site_grp *g, unsigned i, bool on);
/* Member i received marker n whole at stream seq.  Errors: -EILSEQ n not
 * after its newest or seq not past its release point, -ENOMEM. */
int site_grp_marker(struct site_grp *g, unsigned i, uint64_t n, uint64_t seq);
/* Recompute the release points; true when one moved (pump the members). */
bool site_grp_release(struct site_grp *g);
/* Frames of member i through this seq may reach the volume (UINT64_MAX: all). */
uint64_t site_grp_release_seq(const struct site_grp *g, unsigned i);
/* Which member holds the group back, as a sentence in buf. */
const char *site_grp_blocker(const struct site_grp *g, char *buf, size_t len);

/* ---- site_marker.c ---- */

#define SITE_MARK_BATCH 65536 /* numbers reserved per write of the file */

/* A group's marker counter (the group's worker after open). */
struct site_mark {
	char path[4096];   /* the counter's file; "" none (numbers from the clock) */
	uint64_t next;     /* the next number handed out */
	uint64_t reserved; /* numbers <= this are reserved in the file */
	uint64_t writes;   /* reserves written (tests) */
	int last_err;      /* the last write's error (logged once), 0 */
};
/*
 * Open the counter of path (created; NULL or "": no file, numbers from
 * now_us on, not persisted), going on above every number handed out before
 * and at least at now_us (the wall clock in microseconds, the numbering
 * before this counter), and reserve the next SITE_MARK_BATCH durably.
 * Blocking.  Errors: the file's I/O errors, -ENAMETOOLONG.
 */
int site_mark_open(struct site_mark *m, const char *path, uint64_t now_us);
/* The next number into *n (strictly above every one before, also across
 * opens); writes the next reserve first when this one is used up.  Errors:
 * the file's I/O errors (then no number is handed out). */
int site_mark_next(struct site_mark *m, uint64_t *n);

#endif
