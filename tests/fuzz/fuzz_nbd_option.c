/*
 * libFuzzer harness: the NBD handshake.  The input is a client byte stream
 * (client flags, then options) fed to the option state machine
 * (engine/nbd/nbd_handshake.c) in pieces whose sizes come from the input,
 * against a table of two exports; the option data parsers
 * (nbd_parse_opt_info, nbd_parse_opt_meta) also get the raw bytes.  The
 * first byte's high bit opens exports the connection's way (ops->open_start:
 * the machine waits in NBD_HS_OPENING, the result is handed in with
 * nbd_hs_open_done before the next piece), its low 7 bits give the pieces.
 * Checks: no crash or leak, consumption never exceeds what was offered and
 * is 0 while an open is out, every export opened is closed again.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nbd/internal.h"

static int g_open;

static int fz_open(void *arg, const char *name, struct nbd_export *out)
{
	static const char *const names[] = { "disk", "big" };
	static const uint64_t sizes[] = { 1 << 20, 16ull << 40 };

	for (int i = 0; i < 2; i++) {
		if (strcmp(name, names[i]) == 0 || (name[0] == '\0' && i == 0)) {
			g_open++;
			out->handle = (void *)names[i];
			out->size = sizes[i];
			out->name = names[i];
			return 0;
		}
	}
	return -ENOENT;
}

static void fz_close(void *arg, void *handle)
{
	g_open--;
}

static int fz_list(void *arg, int (*emit)(void *, const char *), void *emit_arg)
{
	int ret = emit(emit_arg, "disk");

	return ret ? ret : emit(emit_arg, "big");
}

static const struct nbd_export_ops fz_ops = {
	.open = fz_open,
	.close = fz_close,
	.list = fz_list,
	.open_start = NULL,
};

static char g_pending[4097]; /* the name open_start was given */

static int fz_open_start(void *arg, const char *name)
{
	if (strcmp(name, "later-fails") == 0)
		return -EAGAIN; /* no opener thread: answered at once */
	snprintf(g_pending, sizeof(g_pending), "%s", name);
	return 0;
}

static const struct nbd_export_ops fz_async_ops = {
	.open = NULL,
	.close = fz_close,
	.list = fz_list,
	.open_start = fz_open_start,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nbd_opt_info oi;
	struct nbd_opt_meta m;
	struct nbd_hs hs;
	size_t off = 0, pending = 0, step;
	bool async;

	if (size > 0 && size <= UINT32_MAX) {
		if (nbd_parse_opt_info(data, (uint32_t)size, &oi) == 0 &&
		    oi.name_len + 6u + 2u * oi.nr_requests != size)
			abort();
		if (nbd_parse_opt_meta(data, (uint32_t)size, &m) == 0) {
			const uint8_t *q;
			uint32_t pos = 0, qlen, n = 0;

			while (nbd_meta_next(&m, &pos, &q, &qlen)) {
				nbd_meta_match(q, qlen);
				n++;
			}
			if (n != m.nr_queries)
				abort();
		}
	}

	/* First byte: async opens (bit 7), piece size (0 = everything at once). */
	async = size && (data[0] & 0x80);
	step = size ? data[0] & 0x7f : 0;
	if (size) {
		data++;
		size--;
	}
	g_open = 0;
	if (nbd_hs_init(&hs, async ? &fz_async_ops : &fz_ops, NULL) < 0)
		return 0;
	while (off < size && (hs.state == NBD_HS_CLIENT_FLAGS || hs.state == NBD_HS_OPTIONS)) {
		size_t offer;
		ssize_t used;

		pending += step ? step : size;
		if (pending > size - off)
			pending = size - off;
		offer = pending;
		used = nbd_hs_feed(&hs, data + off, offer);
		if (used < 0)
			break;
		if ((size_t)used > offer)
			abort();
		off += (size_t)used;
		pending -= (size_t)used;
		if (hs.state == NBD_HS_OPENING) {
			struct nbd_export exp = { 0 };
			int status;

			if (nbd_hs_feed(&hs, data + off, size - off) != 0)
				abort(); /* nothing consumed while the open is out */
			/* every other one is given up on: fini with the open out */
			if ((off & 1) && off < size)
				break;
			status = fz_open(NULL, g_pending, &exp);
			if (nbd_hs_open_done(&hs, status, &exp) < 0)
				break;
			if (hs.state == NBD_HS_OPENING)
				abort();
			hs.out.len = 0;
			continue;
		}
		if (used == 0 && offer == size - off)
			break; /* needs bytes we do not have */
		hs.out.len = 0; /* "sent" */
	}
	nbd_hs_fini(&hs);
	if (g_open != 0)
		abort();
	return 0;
}
