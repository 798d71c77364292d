/*
 * Peer protocol frames (include/tessera/peer.h has the wire format with its
 * byte offsets): the one function that decodes and checks a received
 * header, which is also the fuzz target (tests/fuzz/fuzz_peer_hdr.c), and
 * the encoder.  Everything explicit little endian; no alignment assumed.
 */
#include <errno.h>
#include <string.h>

#include "tessera/peer.h"
#include "peer/internal.h"

const char *peer_op_name(uint8_t op)
{
	switch (op) {
	case TSR_PEER_HELLO: return "hello";
	case TSR_PEER_OPEN: return "open";
	case TSR_PEER_CLOSE: return "close";
	case TSR_PEER_READ: return "read";
	case TSR_PEER_WRITE: return "write";
	case TSR_PEER_FLUSH: return "flush";
	case TSR_PEER_TRIM: return "trim";
	case TSR_PEER_WRITE_ZEROES: return "write-zeroes";
	case TSR_PEER_SUMS: return "sums";
	case TSR_PEER_PING: return "ping";
	case TSR_PEER_SNAP: return "snap";
	case TSR_PEER_STAGE: return "stage";
	case TSR_PEER_COMMIT: return "commit";
	case TSR_PEER_RELEASE: return "release";
	case TSR_PEER_STAGE_LIST: return "stage-list";
	case TSR_PEER_SNAP_LIST: return "snap-list";
	case TSR_PEER_STATS: return "stats";
	default: return "unknown";
	}
}

uint32_t peer_payload_len(const struct tsr_peer_hdr *h)
{
	bool reply = h->flags & TSR_PEER_F_REPLY;

	switch (h->opcode) {
	case TSR_PEER_HELLO:
	case TSR_PEER_OPEN:
	case TSR_PEER_SNAP:
	case TSR_PEER_WRITE:
		return reply ? 0 : h->length;
	case TSR_PEER_READ:
		return reply && h->status == 0 ? h->length : 0;
	case TSR_PEER_SUMS:
		return reply && h->status == 0 ? h->length / TSR_BLOCK_SIZE * 4 : 0;
	case TSR_PEER_STAGE:
		return reply ? 0 : TSR_PEER_STAGE_PREFIX + h->length;
	case TSR_PEER_STAGE_LIST:
	case TSR_PEER_SNAP_LIST:
	case TSR_PEER_STATS:
		return reply && h->status == 0 ? h->length : 0;
	default:
		return 0;
	}
}

/* Flags each opcode may carry besides TSR_PEER_F_REPLY. */
static uint8_t op_flags(uint8_t op)
{
	switch (op) {
	case TSR_PEER_READ:
		return TSR_PEER_F_DIRECT;
	case TSR_PEER_WRITE:
		return TSR_PEER_F_FUA | TSR_PEER_F_REPAIR;
	case TSR_PEER_TRIM:
		return TSR_PEER_F_FUA;
	case TSR_PEER_WRITE_ZEROES:
		return TSR_PEER_F_FUA | TSR_PEER_F_NO_HOLE;
	case TSR_PEER_SNAP:
		return TSR_PEER_F_MISSING_OK;
	default:
		return 0;
	}
}

/* Bounds of offset/length by opcode; see peer.h. */
static int check_range(const struct tsr_peer_hdr *h)
{
	bool reply = h->flags & TSR_PEER_F_REPLY;

	switch (h->opcode) {
	case TSR_PEER_HELLO:
		if (h->offset != 0 || h->handle != 0)
			return -EPROTO;
		if (reply)
			return h->length == 0 ? 0 : -EPROTO;
		if (h->length > PEER_HELLO_MAX)
			return -EMSGSIZE;
		return h->length >= PEER_HELLO_MIN ? 0 : -EPROTO;
	case TSR_PEER_OPEN:
		if (h->handle != 0 && !reply)
			return -EPROTO;
		if (reply) /* offset: the volume's size */
			return h->length == 0 ? 0 : -EPROTO;
		if (h->offset != 0)
			return -EPROTO;
		if (h->length > PEER_OPEN_MAX)
			return -EMSGSIZE;
		return h->length >= 1 ? 0 : -EPROTO;
	case TSR_PEER_SNAP:
		if (h->offset != 0)
			return -EPROTO;
		if (reply)
			return h->length == 0 ? 0 : -EPROTO;
		if (h->length > TSR_PEER_SNAP_MAX)
			return -EMSGSIZE;
		return h->length >= TSR_PEER_SNAP_MIN ? 0 : -EPROTO;
	case TSR_PEER_READ:
	case TSR_PEER_WRITE:
		if (h->length > TSR_MAX_IO)
			return -EMSGSIZE;
		break;
	case TSR_PEER_SUMS:
		if (h->length > TSR_PEER_MAX_SUMS_RANGE)
			return -EMSGSIZE;
		break;
	case TSR_PEER_TRIM:
	case TSR_PEER_WRITE_ZEROES:
		break; /* any 4 KiB multiple a u32 holds */
	case TSR_PEER_STAGE:
		if (h->offset % TSR_BLOCK_SIZE)
			return -EPROTO;
		if (reply) /* the request's offset, no length */
			return h->length == 0 ? 0 : -EPROTO;
		if (h->length > PEER_STAGE_MAX_LEN)
			return -EMSGSIZE;
		break;
	case TSR_PEER_COMMIT:
	case TSR_PEER_RELEASE: /* offset: the txn (bound) */
		return h->length == 0 ? 0 : -EPROTO;
	case TSR_PEER_STAGE_LIST:
		if (h->offset != 0)
			return -EPROTO;
		if (!reply || h->status != 0)
			return h->length == 0 ? 0 : -EPROTO;
		if (h->length > TSR_PEER_STAGE_ENTRY * TSR_STAGE_MAX_ENTRIES)
			return -EMSGSIZE;
		return h->length % TSR_PEER_STAGE_ENTRY == 0 ? 0 : -EPROTO;
	case TSR_PEER_SNAP_LIST:
		if (h->offset != 0)
			return -EPROTO;
		if (!reply || h->status != 0)
			return h->length == 0 ? 0 : -EPROTO;
		if (h->length > TSR_PEER_SNAP_ENTRY * TSR_PEER_SNAP_LIST_MAX)
			return -EMSGSIZE;
		return h->length % TSR_PEER_SNAP_ENTRY == 0 ? 0 : -EPROTO;
	case TSR_PEER_STATS:
		if (h->offset != 0)
			return -EPROTO;
		if (!reply || h->status != 0)
			return h->length == 0 ? 0 : -EPROTO;
		if (h->length > TSR_PEER_STATS_MAX)
			return -EMSGSIZE;
		return h->length >= TSR_PEER_STATS_MIN && h->length % 8 == 0 ? 0 : -EPROTO;
	default: /* CLOSE, FLUSH, PING */
		return h->offset == 0 && h->length == 0 ? 0 : -EPROTO;
	}
	if (h->length == 0 || h->length % TSR_BLOCK_SIZE || h->offset % TSR_BLOCK_SIZE ||
	    h->offset > UINT64_MAX - h->length)
		return -EPROTO;
	return 0;
}

int tsr_peer_hdr_parse(const uint8_t buf[TSR_PEER_HDR_SIZE], struct tsr_peer_hdr *out)
{
	struct tsr_peer_hdr h;
	int ret;

	if (tsr_get_le32(buf) != TSR_PEER_MAGIC)
		return -EBADMSG;
	if (tsr_get_le32(buf + 52) != tsr_crc32c(0, buf, 52))
		return -EBADMSG;
	memset(&h, 0, sizeof(h));
	h.opcode = buf[4];
	h.flags = buf[5];
	h.handle = tsr_get_le64(buf + 8);
	h.offset = tsr_get_le64(buf + 16);
	h.length = tsr_get_le32(buf + 24);
	h.status = (int32_t)tsr_get_le32(buf + 28);
	h.epoch = tsr_get_le64(buf + 32);
	h.seq = tsr_get_le64(buf + 40);
	h.data_crc = tsr_get_le32(buf + 48);
	if (h.opcode < TSR_PEER_HELLO || h.opcode > TSR_PEER_STATS)
		return -EPROTO;
	if (buf[6] != 0 || buf[7] != 0)
		return -EPROTO;
	if (h.flags & ~(TSR_PEER_F_REPLY | op_flags(h.opcode)))
		return -EPROTO;
	if ((h.flags & TSR_PEER_F_REPLY) && (h.flags & TSR_PEER_F_DIRECT))
		return -EPROTO; /* a request's choice: never in a reply */
	if (h.status > 0 || h.status < -PEER_MAX_ERRNO)
		return -EPROTO;
	if (!(h.flags & TSR_PEER_F_REPLY) && h.status != 0)
		return -EPROTO;
	ret = check_range(&h);
	if (ret)
		return ret;
	h.payload_len = peer_payload_len(&h);
	if (h.payload_len == 0 && h.data_crc != 0)
		return -EPROTO;
	*out = h;
	return 0;
}

void tsr_peer_hdr_pack(const struct tsr_peer_hdr *h, uint8_t buf[TSR_PEER_HDR_SIZE])
{
	tsr_put_le32(buf, TSR_PEER_MAGIC);
	buf[4] = h->opcode;
	buf[5] = h->flags;
	buf[6] = buf[7] = 0;
	tsr_put_le64(buf + 8, h->handle);
	tsr_put_le64(buf + 16, h->offset);
	tsr_put_le32(buf + 24, h->length);
	tsr_put_le32(buf + 28, (uint32_t)h->status);
	tsr_put_le64(buf + 32, h->epoch);
	tsr_put_le64(buf + 40, h->seq);
	tsr_put_le32(buf + 48, h->data_crc);
	tsr_put_le32(buf + 52, tsr_crc32c(0, buf, 52));
}

/* One name of a SNAP payload: n bytes at p, NUL-terminated into out. */
static int snap_name(const uint8_t *p, uint32_t n, char out[64])
{
	memcpy(out, p, n);
	out[n] = '\0';
	if (n == 0)
		return 0;
	return strlen(out) == n && tsr_valid_name(out) ? 0 : -EINVAL;
}

int tsr_peer_snap_parse(const uint8_t *p, uint32_t len, struct tsr_snap_req *out)
{
	struct tsr_snap_req r;
	uint32_t s, c;

	if (len < TSR_PEER_SNAP_MIN || len > TSR_PEER_SNAP_MAX)
		return -EPROTO;
	s = p[1];
	c = p[2];
	if (s > TSR_SNAP_NAME_MAX || c > TSR_SNAP_NAME_MAX ||
	    (len != TSR_PEER_SNAP_MIN + s + c &&
	     len != TSR_PEER_SNAP_MIN + s + c + TSR_PEER_SNAP_SIZE))
		return -EPROTO;
	memset(&r, 0, sizeof(r));
	if (len == TSR_PEER_SNAP_MIN + s + c + TSR_PEER_SNAP_SIZE) {
		r.size = tsr_get_le64(p + TSR_PEER_SNAP_MIN + s + c);
		if (p[0] != TSR_SNAP_CREATE || r.size == 0 || r.size % TSR_BLOCK_SIZE != 0)
			return -EINVAL;
	}
	switch (p[0]) {
	case TSR_SNAP_CREATE:
	case TSR_SNAP_DELETE:
		if (s == 0 || c != 0)
			return -EINVAL;
		break;
	case TSR_SNAP_CLONE:
		if (c == 0)
			return -EINVAL;
		break;
	default:
		return -EINVAL;
	}
	r.op = (enum tsr_snap_op)p[0];
	if (snap_name(p + TSR_PEER_SNAP_MIN, s, r.snap) < 0 ||
	    snap_name(p + TSR_PEER_SNAP_MIN + s, c, r.clone) < 0)
		return -EINVAL;
	*out = r;
	return 0;
}

int tsr_peer_snap_pack(const struct tsr_snap_req *req, uint8_t buf[TSR_PEER_SNAP_MAX])
{
	size_t s = strnlen(req->snap, sizeof(req->snap));
	size_t c = strnlen(req->clone, sizeof(req->clone));
	struct tsr_snap_req check;
	int len;

	if (s > TSR_SNAP_NAME_MAX || c > TSR_SNAP_NAME_MAX)
		return -EINVAL;
	buf[0] = (uint8_t)req->op;
	buf[1] = (uint8_t)s;
	buf[2] = (uint8_t)c;
	memcpy(buf + TSR_PEER_SNAP_MIN, req->snap, s);
	memcpy(buf + TSR_PEER_SNAP_MIN + s, req->clone, c);
	len = (int)(TSR_PEER_SNAP_MIN + s + c);
	if (req->size != 0) {
		/* a size goes with a CREATE only (one name: it fits); checked
		 * before the write, which could otherwise pass the buffer */
		if (req->op != TSR_SNAP_CREATE ||
		    (size_t)len + TSR_PEER_SNAP_SIZE > TSR_PEER_SNAP_MAX)
			return -EINVAL;
		tsr_put_le64(buf + len, req->size);
		len += (int)TSR_PEER_SNAP_SIZE;
	}
	return tsr_peer_snap_parse(buf, (uint32_t)len, &check) == 0 ? len : -EINVAL;
}

bool peer_open_name_ok(const char *name)
{
	char vol[PEER_NAME_MAX + 1];
	const char *at = strchr(name, '@');
	size_t n;

	if (at == NULL)
		return strlen(name) <= PEER_NAME_MAX && tsr_valid_name(name);
	n = (size_t)(at - name);
	if (n == 0 || n > PEER_NAME_MAX || strlen(at + 1) > PEER_NAME_MAX)
		return false;
	memcpy(vol, name, n);
	vol[n] = '\0';
	return tsr_valid_name(vol) && tsr_valid_name(at + 1);
}

/* ---- snapshot list ---- */

int tsr_peer_snap_list_parse(const uint8_t *p, uint32_t len, struct tsr_peer_snap_entry *out,
			     size_t max, size_t *n)
{
	size_t i, count = len / TSR_PEER_SNAP_ENTRY;

	if (len % TSR_PEER_SNAP_ENTRY || count > max || count > TSR_PEER_SNAP_LIST_MAX)
		return -EPROTO;
	for (i = 0; i < count; i++) {
		const uint8_t *e = p + i * TSR_PEER_SNAP_ENTRY;
		const char *name = (const char *)e + 8;
		size_t l = strnlen(name, 64);

		if (l == 0 || l > TSR_SNAP_NAME_MAX)
			return -EPROTO;
		for (size_t k = l; k < 64; k++)
			if (name[k] != '\0')
				return -EPROTO;
		memcpy(out[i].name, name, 64);
		if (!tsr_valid_name(out[i].name))
			return -EPROTO;
		out[i].size = tsr_get_le64(e);
	}
	*n = count;
	return 0;
}

void tsr_peer_snap_list_pack(const struct tsr_peer_snap_entry *e, size_t n, uint8_t *out)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t *o = out + i * TSR_PEER_SNAP_ENTRY;

		tsr_put_le64(o, e[i].size);
		memset(o + 8, 0, 64);
		memcpy(o + 8, e[i].name, strnlen(e[i].name, TSR_SNAP_NAME_MAX));
	}
}

/* ---- staged chunk writes ---- */

int tsr_peer_stage_parse(const struct tsr_peer_hdr *hdr, const uint8_t *prefix,
			 struct tsr_stage_entry *e)
{
	uint32_t parts = tsr_get_le32(prefix + 16);
	unsigned i;

	for (i = 20; i < TSR_PEER_STAGE_PREFIX; i++)
		if (prefix[i] != 0)
			return -EPROTO;
	if (parts == 0 || parts >= 1u << PEER_STAGE_MAX_POSITIONS)
		return -EINVAL;
	memset(e, 0, sizeof(*e));
	e->txn = tsr_get_le64(prefix);
	e->stripe = tsr_get_le64(prefix + 8);
	e->offset = hdr->offset;
	e->length = hdr->length;
	e->participants = parts;
	e->state = TSR_STAGE_STAGED;
	return 0;
}

void tsr_peer_stage_pack(const struct tsr_stage_entry *e, uint8_t prefix[TSR_PEER_STAGE_PREFIX])
{
	memset(prefix, 0, TSR_PEER_STAGE_PREFIX);
	tsr_put_le64(prefix, e->txn);
	tsr_put_le64(prefix + 8, e->stripe);
	tsr_put_le32(prefix + 16, e->participants);
}

int tsr_peer_stage_list_parse(const uint8_t *p, uint32_t len, struct tsr_stage_entry *out,
			      size_t max, size_t *n)
{
	size_t i, count;

	if (len % TSR_PEER_STAGE_ENTRY)
		return -EPROTO;
	count = len / TSR_PEER_STAGE_ENTRY;
	if (count > max)
		return -EMSGSIZE;
	for (i = 0; i < count; i++, p += TSR_PEER_STAGE_ENTRY) {
		struct tsr_stage_entry e;
		uint32_t state = tsr_get_le32(p + 32);

		e.txn = tsr_get_le64(p);
		e.stripe = tsr_get_le64(p + 8);
		e.offset = tsr_get_le64(p + 16);
		e.length = tsr_get_le32(p + 24);
		e.participants = tsr_get_le32(p + 28);
		if (tsr_get_le32(p + 36) != 0)
			return -EPROTO;
		if (state != TSR_STAGE_STAGED && state != TSR_STAGE_COMMITTED)
			return -EPROTO;
		e.state = (enum tsr_stage_state)state;
		if (e.offset % TSR_BLOCK_SIZE || e.length == 0 || e.length % TSR_BLOCK_SIZE ||
		    e.length > PEER_STAGE_MAX_LEN || e.offset > UINT64_MAX - e.length)
			return -EPROTO;
		if (i > 0 && e.txn <= out[i - 1].txn)
			return -EPROTO;
		out[i] = e;
	}
	*n = count;
	return 0;
}

void tsr_peer_stage_list_pack(const struct tsr_stage_entry *e, size_t n, uint8_t *out)
{
	size_t i;

	for (i = 0; i < n; i++, out += TSR_PEER_STAGE_ENTRY) {
		tsr_put_le64(out, e[i].txn);
		tsr_put_le64(out + 8, e[i].stripe);
		tsr_put_le64(out + 16, e[i].offset);
		tsr_put_le32(out + 24, e[i].length);
		tsr_put_le32(out + 28, e[i].participants);
		tsr_put_le32(out + 32, (uint32_t)e[i].state);
		tsr_put_le32(out + 36, 0);
	}
}

int tsr_peer_stats_parse(const uint8_t *p, uint32_t len, struct tsr_peer_stats *out)
{
	if (len < TSR_PEER_STATS_MIN || len > TSR_PEER_STATS_MAX || len % 8 != 0)
		return -EPROTO;
	/* later counters (len > 16): a newer build's, not known here */
	out->crc_errors = tsr_get_le64(p);
	out->cached_reads = tsr_get_le64(p + 8);
	return 0;
}

uint32_t tsr_peer_stats_pack(const struct tsr_peer_stats *st, uint8_t buf[TSR_PEER_STATS_MAX])
{
	tsr_put_le64(buf, st->crc_errors);
	tsr_put_le64(buf + 8, st->cached_reads);
	return TSR_PEER_STATS_MIN;
}
