/*
 * Whole site-protocol frames over a site TLS connection (site.h, "framing"):
 * a resumable receiver that parses the header as soon as it is in and
 * checks the payload's CRC32C before handing the frame out (its payload into
 * rx's own buffer, or, with tsr_site_rx_hold, into one the caller names once
 * it has seen the header: a pipelined target receives each WRITE straight
 * into the buffer that stays with the frame until the store wrote it), and a
 * resumable sender.  Both suit a non-blocking event loop: -EAGAIN means
 * "wait for tsr_site_tls_want and call again".
 */
#include <errno.h>
#include <string.h>

#include "tessera/site.h"

int tsr_site_rx_init(struct tsr_site_rx *rx)
{
	memset(rx, 0, sizeof(*rx));
	rx->own = tsr_alloc_aligned(TSR_SITE_MAX_DATA);
	rx->payload = rx->own;
	return rx->own ? 0 : -ENOMEM;
}

void tsr_site_rx_fini(struct tsr_site_rx *rx)
{
	tsr_free_aligned(rx->own);
	rx->own = NULL;
	rx->payload = NULL;
}

void tsr_site_rx_hold(struct tsr_site_rx *rx, bool on)
{
	rx->hold = on;
}

void tsr_site_rx_set_payload(struct tsr_site_rx *rx, uint8_t *buf)
{
	rx->payload = buf ? buf : rx->own;
	rx->need_buf = false;
}

int tsr_site_rx_poll(struct tsr_site_rx *rx, struct tsr_site_tls *t)
{
	ssize_t n;
	int ret;

	if (rx->need_buf) /* the caller has not said where the payload goes yet */
		return 2;
	if (rx->got >= TSR_SITE_HDR_SIZE + rx->hdr.payload_len) { /* the last one was handed out */
		rx->got = 0;
		rx->payload = rx->own;
	}
	while (rx->got < TSR_SITE_HDR_SIZE) {
		n = tsr_site_tls_read(t, rx->hdr_buf + rx->got, TSR_SITE_HDR_SIZE - rx->got);
		if (n == 0)
			return rx->got == 0 ? 0 : -ECONNRESET;
		if (n < 0)
			return (int)n;
		rx->got += (size_t)n;
		if (rx->got == TSR_SITE_HDR_SIZE) {
			ret = tsr_site_hdr_parse(rx->hdr_buf, &rx->hdr);
			if (ret < 0) {
				tsr_error("site: received a bad frame header: %s", strerror(-ret));
				return ret;
			}
			if (rx->hold && rx->hdr.payload_len > 0) {
				rx->need_buf = true;
				return 2;
			}
		}
	}
	while (rx->got < TSR_SITE_HDR_SIZE + rx->hdr.payload_len) {
		size_t off = rx->got - TSR_SITE_HDR_SIZE;

		n = tsr_site_tls_read(t, rx->payload + off, rx->hdr.payload_len - off);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0)
			return (int)n;
		rx->got += (size_t)n;
	}
	if (tsr_site_data_check(&rx->hdr, rx->payload) < 0) {
		tsr_error("site: %s frame, stream %llu seq %llu: payload checksum mismatch",
			  tsr_site_op_name(rx->hdr.opcode), (unsigned long long)rx->hdr.stream,
			  (unsigned long long)rx->hdr.seq);
		return -EBADMSG;
	}
	return 1;
}

int tsr_site_tx_start(struct tsr_site_tx *tx, const struct tsr_site_hdr *h,
		      const void *payload)
{
	struct tsr_site_hdr check, with_crc = *h;

	with_crc.data_crc = 0;
	tsr_site_hdr_pack(&with_crc, tx->hdr_buf);
	/* the payload length as the receiver will derive it */
	if (tsr_site_hdr_parse(tx->hdr_buf, &check) < 0 ||
	    (check.payload_len > 0 && payload == NULL))
		return -EINVAL;
	if (check.payload_len > 0)
		with_crc.data_crc = tsr_crc32c(0, payload, check.payload_len);
	tsr_site_hdr_pack(&with_crc, tx->hdr_buf);
	tx->payload = payload;
	tx->payload_len = check.payload_len;
	tx->sent = 0;
	return 0;
}

int tsr_site_tx_poll(struct tsr_site_tx *tx, struct tsr_site_tls *t)
{
	ssize_t n;

	while (tx->sent < TSR_SITE_HDR_SIZE + tx->payload_len) {
		if (tx->sent < TSR_SITE_HDR_SIZE)
			n = tsr_site_tls_write(t, tx->hdr_buf + tx->sent,
					       TSR_SITE_HDR_SIZE - tx->sent);
		else
			n = tsr_site_tls_write(t, tx->payload + (tx->sent - TSR_SITE_HDR_SIZE),
					       TSR_SITE_HDR_SIZE + tx->payload_len - tx->sent);
		if (n < 0)
			return (int)n;
		tx->sent += (size_t)n;
	}
	return 1;
}
