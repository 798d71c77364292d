/*
 * Target side of a geo-replication stream (include/tessera/site.h, "target
 * side"): applies the source's WRITE and ZERO frames to a local store
 * volume strictly in sequence order, one at a time, so that the volume
 * always equals a prefix of the source's write history.  Every check runs
 * before the store sees the frame: a refused frame changes nothing.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/site.h"
#include "tessera/vol.h"

struct tsr_site_target {
	struct tsr_vol *vol;    /* the target volume (the caller's handle) */
	struct tsr_io *io;      /* the owning thread's io */
	uint64_t stream;        /* the only stream accepted */
	uint64_t epoch;         /* highest source epoch seen; lower ones are stale */
	uint64_t applied;       /* every frame up to this seq completed on the store */
	uint64_t inflight_seq;  /* seq of the frame in the store now (0: none; BARRIER: 0) */
	bool consistent;        /* the volume equals a prefix of the history */
	uint8_t inflight_op;    /* opcode of the frame in flight */
	bool busy;              /* a frame is being applied */
	bool broken;            /* a store error: the extent may be half written */
	tsr_cb cb_fn;           /* the in-flight frame's callback */
	void *cb_arg;
};

int tsr_site_target_create(const struct tsr_site_target_opts *opts,
			   struct tsr_site_target **out)
{
	struct tsr_site_target *t;

	if (opts == NULL || opts->vol == NULL || opts->io == NULL || opts->stream == 0 ||
	    out == NULL)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	t->vol = opts->vol;
	t->consistent = opts->consistent;
	t->io = opts->io;
	t->stream = opts->stream;
	t->epoch = opts->epoch;
	t->applied = opts->applied;
	*out = t;
	return 0;
}

void tsr_site_target_destroy(struct tsr_site_target *t)
{
	free(t);
}

static void applied_cb(void *arg, int status)
{
	struct tsr_site_target *t = arg;
	tsr_cb cb_fn = t->cb_fn;

	if (status == 0) {
		if (t->inflight_seq)
			t->applied = t->inflight_seq;
		if (t->inflight_op == TSR_SITE_SYNC_BEGIN)
			t->consistent = false;
		else if (t->inflight_op == TSR_SITE_SYNC_END)
			t->consistent = true;
	} else if (t->inflight_seq) {
		tsr_error("site target: stream %llu seq %llu: %s; the stream stops here",
			  (unsigned long long)t->stream, (unsigned long long)t->inflight_seq,
			  strerror(-status));
		t->broken = true;
	}
	t->busy = false;
	t->inflight_seq = 0;
	cb_fn(t->cb_arg, status);
}

/* Every rule a frame must meet before the store sees it (site.h). */
static int check(const struct tsr_site_target *t, const struct tsr_site_hdr *h,
		 const void *payload)
{
	if (t->broken)
		return -EIO;
	if (t->busy)
		return -EBUSY;
	if (h->stream != t->stream)
		return -EPROTO;
	switch (h->opcode) {
	case TSR_SITE_WRITE:
	case TSR_SITE_ZERO:
	case TSR_SITE_SNAPSHOT:
	case TSR_SITE_SYNC_BEGIN:
	case TSR_SITE_SYNC_END:
		if (h->seq != t->applied + 1)
			return -EILSEQ;
		break;
	case TSR_SITE_BARRIER:
		if (h->seq > t->applied)
			return -EILSEQ;
		break;
	default:
		return -EPROTO;
	}
	if (h->epoch < t->epoch)
		return -ESTALE;
	if (h->opcode == TSR_SITE_SNAPSHOT)
		return -EOPNOTSUPP;
	if (h->opcode == TSR_SITE_WRITE) {
		if (payload == NULL || h->payload_len != h->length ||
		    tsr_site_data_check(h, payload) < 0)
			return -EBADMSG;
		if ((uintptr_t)payload % TSR_BLOCK_SIZE)
			return -EINVAL;
	}
	if ((h->opcode == TSR_SITE_WRITE || h->opcode == TSR_SITE_ZERO) &&
	    (h->offset > tsr_vol_size(t->vol) ||
	     h->length > tsr_vol_size(t->vol) - h->offset))
		return -ENOSPC;
	return 0;
}

int tsr_site_target_apply(struct tsr_site_target *t, const struct tsr_site_hdr *hdr,
			  const void *payload, tsr_cb cb_fn, void *cb_arg)
{
	int ret = check(t, hdr, payload);

	if (ret)
		return ret;
	t->busy = true;
	t->cb_fn = cb_fn;
	t->cb_arg = cb_arg;
	t->inflight_seq = hdr->opcode == TSR_SITE_BARRIER ? 0 : hdr->seq;
	t->inflight_op = hdr->opcode;
	switch (hdr->opcode) {
	case TSR_SITE_WRITE:
		ret = tsr_vol_write(t->vol, t->io, hdr->offset, hdr->length, payload,
				    TSR_WRITE_REPL, applied_cb, t);
		break;
	case TSR_SITE_ZERO:
		ret = tsr_vol_write_zeroes(t->vol, t->io, hdr->offset, hdr->length,
					   TSR_WRITE_REPL, applied_cb, t);
		break;
	default: /* BARRIER, SYNC_*: what is applied becomes durable */
		ret = tsr_vol_flush(t->vol, t->io, applied_cb, t);
		break;
	}
	if (ret) { /* the store refused before doing anything: cb never fires */
		t->busy = false;
		t->inflight_seq = 0;
		return ret;
	}
	if (hdr->epoch > t->epoch)
		t->epoch = hdr->epoch;
	return 0;
}

uint64_t tsr_site_target_applied(const struct tsr_site_target *t)
{
	return t->applied;
}

bool tsr_site_target_consistent(const struct tsr_site_target *t)
{
	return t->consistent;
}

void tsr_site_target_set_inconsistent(struct tsr_site_target *t)
{
	t->consistent = false;
}

void tsr_site_target_ack(const struct tsr_site_target *t, struct tsr_site_hdr *out)
{
	memset(out, 0, sizeof(*out));
	out->opcode = TSR_SITE_ACK;
	out->stream = t->stream;
	out->seq = t->applied;
	out->epoch = t->epoch;
}
