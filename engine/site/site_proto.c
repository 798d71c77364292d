/*
 * Site protocol frames (include/tessera/site.h has the wire format with its
 * byte offsets): the header decoder that checks every field (the fuzz
 * target of tests/fuzz/fuzz_site_hdr.c), one parser per payload, and the
 * encoders.  Everything explicit little endian; no alignment assumed.
 */
#include <errno.h>
#include <string.h>

#include <openssl/evp.h>

#include "tessera/site.h"

#define HDR_CRC_OFF 60u
#define WIRE_LEN_OFF 48u
#define RESERVED_OFF 52u
#define MAX_ERRNO 4095u

const char *tsr_site_op_name(uint8_t op)
{
	switch (op) {
	case TSR_SITE_HELLO: return "hello";
	case TSR_SITE_VOLUME_OPEN: return "volume-open";
	case TSR_SITE_WRITE: return "write";
	case TSR_SITE_ZERO: return "zero";
	case TSR_SITE_SNAPSHOT: return "snapshot";
	case TSR_SITE_BARRIER: return "barrier";
	case TSR_SITE_ACK: return "ack";
	case TSR_SITE_ERROR: return "error";
	case TSR_SITE_SYNC_BEGIN: return "sync-begin";
	case TSR_SITE_SYNC_END: return "sync-end";
	case TSR_SITE_DIGEST: return "digest";
	case TSR_SITE_MARKER: return "marker";
	default: return "unknown";
	}
}

/* Field rules per opcode (site.h); h->payload_len is set on success. */
static int check_fields(struct tsr_site_hdr *h)
{
	bool reply = h->flags & TSR_SITE_F_REPLY;

	if (reply && h->opcode != TSR_SITE_HELLO && h->opcode != TSR_SITE_VOLUME_OPEN)
		return -EPROTO;
	if ((h->flags & (TSR_SITE_F_REPLAY | TSR_SITE_F_FRESH)) &&
	    !(reply && h->opcode == TSR_SITE_VOLUME_OPEN))
		return -EPROTO;
	if ((h->flags & TSR_SITE_F_DIGEST) && (reply || h->opcode != TSR_SITE_VOLUME_OPEN))
		return -EPROTO;
	if (!(h->flags & TSR_SITE_F_COMPRESSED) && h->wire_len != 0)
		return -EPROTO;
	if ((h->flags & TSR_SITE_F_COMPRESSED) && h->opcode != TSR_SITE_WRITE)
		return -EPROTO;
	if (h->opcode != TSR_SITE_HELLO && h->opcode != TSR_SITE_ERROR && h->stream == 0)
		return -EPROTO;
	h->payload_len = 0;
	switch (h->opcode) {
	case TSR_SITE_HELLO:
		if (h->stream || h->seq || h->offset || h->epoch)
			return -EPROTO;
		if (h->length > TSR_SITE_HELLO_MAX)
			return -EMSGSIZE;
		if (h->length < 4 + 2)
			return -EPROTO;
		h->payload_len = h->length;
		break;
	case TSR_SITE_VOLUME_OPEN:
		if (reply) {
			if (h->offset || h->length)
				return -EPROTO;
			break;
		}
		if (h->seq || h->offset == 0 || h->offset % TSR_BLOCK_SIZE)
			return -EPROTO;
		if (h->length > TSR_SITE_OPEN_MAX)
			return -EMSGSIZE;
		if (h->length < 4 + 2)
			return -EPROTO;
		h->payload_len = h->length;
		break;
	case TSR_SITE_WRITE:
		if (h->length > TSR_SITE_MAX_DATA)
			return -EMSGSIZE;
		/* fall through */
	case TSR_SITE_ZERO:
		if (h->seq == 0 || h->length == 0 || h->length % TSR_BLOCK_SIZE ||
		    h->offset % TSR_BLOCK_SIZE || h->offset > UINT64_MAX - h->length)
			return -EPROTO;
		if (h->opcode != TSR_SITE_WRITE)
			break;
		h->payload_len = h->length;
		if (h->flags & TSR_SITE_F_COMPRESSED) { /* only when it is smaller */
			if (h->wire_len == 0 || h->wire_len >= h->length)
				return -EPROTO;
			h->payload_len = h->wire_len;
		}
		break;
	case TSR_SITE_SNAPSHOT:
		if (h->seq == 0 || h->offset)
			return -EPROTO;
		if (h->length > TSR_SITE_SNAP_MAX)
			return -EMSGSIZE;
		if (h->length < 2)
			return -EPROTO;
		h->payload_len = h->length;
		break;
	case TSR_SITE_MARKER:
		if (h->seq == 0 || h->offset == 0)
			return -EPROTO;
		if (h->length > TSR_SITE_MARKER_MAX)
			return -EMSGSIZE;
		if (h->length < 4 + 1)
			return -EPROTO;
		h->payload_len = h->length;
		break;
	case TSR_SITE_SYNC_BEGIN:
	case TSR_SITE_SYNC_END:
		if (h->seq == 0)
			return -EPROTO;
		/* fall through */
	case TSR_SITE_BARRIER:
	case TSR_SITE_ACK:
		if (h->offset || h->length)
			return -EPROTO;
		break;
	case TSR_SITE_DIGEST:
		if (h->seq || h->offset % TSR_SITE_DIGEST_REGION)
			return -EPROTO;
		if (h->length > TSR_SITE_MAX_DATA)
			return -EMSGSIZE;
		if (h->length % TSR_SITE_DIGEST_LEN ||
		    h->offset > UINT64_MAX - (uint64_t)(h->length / TSR_SITE_DIGEST_LEN) *
						 TSR_SITE_DIGEST_REGION)
			return -EPROTO;
		h->payload_len = h->length;
		break;
	case TSR_SITE_ERROR:
		if (h->offset)
			return -EPROTO;
		if (h->length > TSR_SITE_ERROR_MAX)
			return -EMSGSIZE;
		if (h->length < 8)
			return -EPROTO;
		h->payload_len = h->length;
		break;
	default:
		return -EPROTO;
	}
	if (h->payload_len == 0 && h->data_crc != 0)
		return -EPROTO;
	return 0;
}

int tsr_site_hdr_parse(const uint8_t buf[TSR_SITE_HDR_SIZE], struct tsr_site_hdr *out)
{
	struct tsr_site_hdr h;
	unsigned i;
	int ret;

	if (tsr_get_le32(buf) != TSR_SITE_MAGIC)
		return -EBADMSG;
	if (tsr_get_le32(buf + HDR_CRC_OFF) != tsr_crc32c(0, buf, HDR_CRC_OFF))
		return -EBADMSG;
	if (buf[4] != TSR_SITE_VERSION)
		return -EPROTONOSUPPORT;
	if (buf[7] != 0)
		return -EPROTO;
	for (i = RESERVED_OFF; i < HDR_CRC_OFF; i++)
		if (buf[i] != 0)
			return -EPROTO;
	memset(&h, 0, sizeof(h));
	h.opcode = buf[5];
	h.flags = buf[6];
	h.stream = tsr_get_le64(buf + 8);
	h.seq = tsr_get_le64(buf + 16);
	h.offset = tsr_get_le64(buf + 24);
	h.epoch = tsr_get_le64(buf + 32);
	h.length = tsr_get_le32(buf + 40);
	h.data_crc = tsr_get_le32(buf + 44);
	h.wire_len = tsr_get_le32(buf + WIRE_LEN_OFF);
	if (h.flags & ~(TSR_SITE_F_REPLY | TSR_SITE_F_REPLAY | TSR_SITE_F_DIGEST |
			TSR_SITE_F_COMPRESSED | TSR_SITE_F_FRESH))
		return -EPROTO;
	ret = check_fields(&h);
	if (ret)
		return ret;
	*out = h;
	return 0;
}

void tsr_site_hdr_pack(const struct tsr_site_hdr *h, uint8_t buf[TSR_SITE_HDR_SIZE])
{
	memset(buf, 0, TSR_SITE_HDR_SIZE);
	tsr_put_le32(buf, TSR_SITE_MAGIC);
	buf[4] = TSR_SITE_VERSION;
	buf[5] = h->opcode;
	buf[6] = h->flags;
	tsr_put_le64(buf + 8, h->stream);
	tsr_put_le64(buf + 16, h->seq);
	tsr_put_le64(buf + 24, h->offset);
	tsr_put_le64(buf + 32, h->epoch);
	tsr_put_le32(buf + 40, h->length);
	tsr_put_le32(buf + 44, h->data_crc);
	tsr_put_le32(buf + WIRE_LEN_OFF, h->wire_len);
	tsr_put_le32(buf + HDR_CRC_OFF, tsr_crc32c(0, buf, HDR_CRC_OFF));
}

int tsr_site_data_check(const struct tsr_site_hdr *hdr, const void *payload)
{
	if (hdr->payload_len == 0)
		return hdr->data_crc == 0 ? 0 : -EBADMSG;
	return tsr_crc32c(0, payload, hdr->payload_len) == hdr->data_crc ? 0 : -EBADMSG;
}

/* n bytes at p as a NUL-terminated name in out (n <= TSR_SITE_NAME_MAX). */
static int get_name(const uint8_t *p, uint32_t n, char out[TSR_SITE_NAME_MAX + 1])
{
	if (n == 0 || n > TSR_SITE_NAME_MAX)
		return -EPROTO;
	memcpy(out, p, n);
	out[n] = '\0';
	return strlen(out) == n && tsr_valid_name(out) ? 0 : -EINVAL;
}

/* Length of a name we are about to send, or -EINVAL. */
static int name_len(const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1);

	return n >= 1 && n <= max ? (int)n : -EINVAL;
}

int tsr_site_hello_parse(const uint8_t *p, uint32_t len, struct tsr_site_hello *out)
{
	struct tsr_site_hello h;
	uint32_t s, c;
	int ret;

	if (len < 4 || len > TSR_SITE_HELLO_MAX)
		return -EPROTO;
	s = p[0];
	c = p[1];
	if (tsr_get_le16(p + 2) != 0 || s == 0 || c == 0 || s > TSR_SITE_NAME_MAX ||
	    c > TSR_SITE_NAME_MAX || len != 4 + s + c)
		return -EPROTO;
	ret = get_name(p + 4, s, h.site);
	if (ret == 0)
		ret = get_name(p + 4 + s, c, h.cluster);
	if (ret)
		return ret;
	*out = h;
	return 0;
}

int tsr_site_hello_pack(const struct tsr_site_hello *h, uint8_t buf[TSR_SITE_HELLO_MAX])
{
	int s = name_len(h->site, TSR_SITE_NAME_MAX);
	int c = name_len(h->cluster, TSR_SITE_NAME_MAX);
	struct tsr_site_hello check;
	uint32_t len;

	if (s < 0 || c < 0)
		return -EINVAL;
	buf[0] = (uint8_t)s;
	buf[1] = (uint8_t)c;
	tsr_put_le16(buf + 2, 0);
	memcpy(buf + 4, h->site, (size_t)s);
	memcpy(buf + 4 + s, h->cluster, (size_t)c);
	len = 4u + (uint32_t)s + (uint32_t)c;
	return tsr_site_hello_parse(buf, len, &check) == 0 ? (int)len : -EINVAL;
}

/* Decimal in [min, max], no sign, no leading zero; *end past it. */
static int get_num(const char *s, unsigned min, unsigned max, const char **end)
{
	unsigned v = 0;
	const char *p = s;

	if (*p < '1' || *p > '9')
		return -EINVAL;
	while (*p >= '0' && *p <= '9') {
		v = v * 10 + (unsigned)(*p - '0');
		if (v > max)
			return -EINVAL;
		p++;
	}
	if (v < min)
		return -EINVAL;
	*end = p;
	return (int)v;
}

int tsr_site_layout_parse(const char *s, struct tsr_site_layout *out)
{
	struct tsr_site_layout l = {0};
	const char *p;
	int v;

	if (strncmp(s, "replicas:", 9) == 0) {
		v = get_num(s + 9, 1, 8, &p);
		if (v < 0 || *p != '\0')
			return -EINVAL;
		l.replicas = (unsigned)v;
	} else if (strncmp(s, "ec:", 3) == 0) {
		v = get_num(s + 3, 1, 16, &p);
		if (v < 0 || *p != '+')
			return -EINVAL;
		l.ec_k = (unsigned)v;
		v = get_num(p + 1, 1, 4, &p);
		if (v < 0 || *p != '\0')
			return -EINVAL;
		l.ec_m = (unsigned)v;
	} else {
		return -EINVAL;
	}
	*out = l;
	return 0;
}

int tsr_site_open_parse(const uint8_t *p, uint32_t len, struct tsr_site_open *out)
{
	struct tsr_site_open o;
	uint32_t n, l, g;
	int ret;

	if (len < 4 || len > TSR_SITE_OPEN_MAX)
		return -EPROTO;
	n = p[0];
	l = p[1];
	g = p[3];
	if (n == 0 || l == 0 || n > TSR_SITE_NAME_MAX || l > TSR_SITE_LAYOUT_MAX ||
	    g > TSR_SITE_NAME_MAX || len != 4 + n + l + (g ? 2 + g : 0))
		return -EPROTO;
	if (p[2] > TSR_SITE_COMPRESS_MAX)
		return -EPROTONOSUPPORT;
	memset(&o, 0, sizeof(o));
	o.compress = p[2];
	ret = get_name(p + 4, n, o.volume);
	if (ret)
		return ret;
	if (g) {
		o.members = tsr_get_le16(p + 4 + n + l);
		if (o.members == 0 || o.members > TSR_SITE_GROUP_MAX)
			return -EINVAL;
		ret = get_name(p + 4 + n + l + 2, g, o.group);
		if (ret)
			return ret;
	}
	memcpy(o.layout, p + 4 + n, l);
	o.layout[l] = '\0';
	if (strlen(o.layout) != l || tsr_site_layout_parse(o.layout, &o.parsed) < 0)
		return -EINVAL;
	*out = o;
	return 0;
}

int tsr_site_open_pack(const struct tsr_site_open *o, uint8_t buf[TSR_SITE_OPEN_MAX])
{
	int n = name_len(o->volume, TSR_SITE_NAME_MAX);
	int l = name_len(o->layout, TSR_SITE_LAYOUT_MAX);
	int g = o->group[0] ? name_len(o->group, TSR_SITE_NAME_MAX) : 0;
	struct tsr_site_open check;
	uint32_t len;

	if (n < 0 || l < 0 || g < 0 || o->members > 0xffff)
		return -EINVAL;
	buf[0] = (uint8_t)n;
	buf[1] = (uint8_t)l;
	buf[2] = o->compress;
	buf[3] = (uint8_t)g;
	memcpy(buf + 4, o->volume, (size_t)n);
	memcpy(buf + 4 + n, o->layout, (size_t)l);
	len = 4u + (uint32_t)n + (uint32_t)l;
	if (g) {
		tsr_put_le16(buf + len, (uint16_t)o->members);
		memcpy(buf + len + 2, o->group, (size_t)g);
		len += 2u + (uint32_t)g;
	}
	return tsr_site_open_parse(buf, len, &check) == 0 ? (int)len : -EINVAL;
}

int tsr_site_marker_parse(const uint8_t *p, uint32_t len, struct tsr_site_marker *out)
{
	struct tsr_site_marker m;
	int ret;

	if (len < 5 || len > TSR_SITE_MARKER_MAX || p[0] != len - 4 || p[1] != 0)
		return -EPROTO;
	memset(&m, 0, sizeof(m));
	m.members = tsr_get_le16(p + 2);
	if (m.members == 0 || m.members > TSR_SITE_GROUP_MAX)
		return -EINVAL;
	ret = get_name(p + 4, p[0], m.group);
	if (ret)
		return ret;
	*out = m;
	return 0;
}

int tsr_site_marker_pack(const struct tsr_site_marker *m, uint8_t buf[TSR_SITE_MARKER_MAX])
{
	int n = name_len(m->group, TSR_SITE_NAME_MAX);
	struct tsr_site_marker check;

	if (n < 0 || m->members > 0xffff)
		return -EINVAL;
	buf[0] = (uint8_t)n;
	buf[1] = 0;
	tsr_put_le16(buf + 2, (uint16_t)m->members);
	memcpy(buf + 4, m->group, (size_t)n);
	return tsr_site_marker_parse(buf, 4u + (uint32_t)n, &check) == 0 ? 4 + n : -EINVAL;
}

int tsr_site_snap_parse(const uint8_t *p, uint32_t len, char name[TSR_SITE_NAME_MAX + 1])
{
	char n[TSR_SITE_NAME_MAX + 1];
	int ret;

	if (len < 2 || len > TSR_SITE_SNAP_MAX || p[0] != len - 1)
		return -EPROTO;
	ret = get_name(p + 1, p[0], n);
	if (ret)
		return ret;
	memcpy(name, n, sizeof(n));
	return 0;
}

int tsr_site_snap_pack(const char *name, uint8_t buf[TSR_SITE_SNAP_MAX])
{
	int n = name_len(name, TSR_SITE_NAME_MAX);
	char check[TSR_SITE_NAME_MAX + 1];

	if (n < 0)
		return -EINVAL;
	buf[0] = (uint8_t)n;
	memcpy(buf + 1, name, (size_t)n);
	return tsr_site_snap_parse(buf, 1u + (uint32_t)n, check) == 0 ? 1 + n : -EINVAL;
}

int tsr_site_error_parse(const uint8_t *p, uint32_t len, struct tsr_site_error *out)
{
	struct tsr_site_error e;
	uint32_t code, m, i;

	if (len < 8 || len > TSR_SITE_ERROR_MAX)
		return -EPROTO;
	code = tsr_get_le32(p);
	m = tsr_get_le16(p + 4);
	if (tsr_get_le16(p + 6) != 0 || m > TSR_SITE_ERRMSG_MAX || len != 8 + m)
		return -EPROTO;
	if (code == 0 || code > MAX_ERRNO)
		return -EINVAL;
	for (i = 0; i < m; i++) {
		if (p[8 + i] < 0x20 || p[8 + i] > 0x7e)
			return -EINVAL;
		e.msg[i] = (char)p[8 + i];
	}
	e.msg[m] = '\0';
	e.code = (int)code;
	*out = e;
	return 0;
}

int tsr_site_error_pack(const struct tsr_site_error *e, uint8_t buf[TSR_SITE_ERROR_MAX])
{
	size_t m = strnlen(e->msg, sizeof(e->msg));
	struct tsr_site_error check;

	if (m > TSR_SITE_ERRMSG_MAX || e->code <= 0 || e->code > (int)MAX_ERRNO)
		return -EINVAL;
	tsr_put_le32(buf, (uint32_t)e->code);
	tsr_put_le16(buf + 4, (uint16_t)m);
	tsr_put_le16(buf + 6, 0);
	memcpy(buf + 8, e->msg, m);
	return tsr_site_error_parse(buf, 8u + (uint32_t)m, &check) == 0 ? (int)(8 + m) : -EINVAL;
}

void tsr_site_digest(const void *buf, size_t len, uint8_t out[TSR_SITE_DIGEST_LEN])
{
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;

	if (!EVP_Digest(buf, len, md, &md_len, EVP_sha256(), NULL) || md_len < TSR_SITE_DIGEST_LEN)
		memset(md, 0xff, TSR_SITE_DIGEST_LEN); /* never equal to a real one by chance */
	memcpy(out, md, TSR_SITE_DIGEST_LEN);
}
