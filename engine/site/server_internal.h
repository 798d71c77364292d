/*
 * Private to engine/site/: what site_server.c offers the rest of the folder
 * and its fuzz harness (tests/fuzz/fuzz_site_state.c).
 *
 * site_server.c: the target's per-volume stream state file, one 4 KiB block
 * (byte layout in include/tessera/site.h, "target side: the site listener's
 * sessions"), packed and parsed here and nowhere else.
 */
#ifndef TSR_SITE_SERVER_INTERNAL_H
#define TSR_SITE_SERVER_INTERNAL_H

#include <stdint.h>

#include "tessera/site.h"

#define SITE_STATE_SIZE 4096u
#define SITE_STATE_MAGIC 0x54535354u /* little endian "TSST" */
#define SITE_STATE_VERSION 1u

#define SITE_STATE_CONSISTENT 0x1u /* the volume equals a prefix of the history */
#define SITE_STATE_CLEAN 0x2u      /* the last session closed cleanly: nothing past applied */
#define SITE_STATE_PROMOTED 0x4u   /* failed over: the stream ended for good */
#define SITE_STATE_FLAGS (SITE_STATE_CONSISTENT | SITE_STATE_CLEAN | SITE_STATE_PROMOTED)

struct site_state {
	uint64_t stream;  /* non-zero: the only stream this volume takes */
	uint64_t epoch;   /* highest source epoch seen */
	uint64_t applied; /* applied and durable through this seq */
	uint32_t flags;   /* SITE_STATE_* only */
	char site[TSR_SITE_NAME_MAX + 1];    /* source site, tsr_valid_name */
	char cluster[TSR_SITE_NAME_MAX + 1]; /* source cluster id, tsr_valid_name */
	char volume[TSR_SITE_NAME_MAX + 1];  /* target volume, tsr_valid_name */
};

/*
 * Check and decode one state block.  Errors: -EBADMSG bad magic or CRC32C,
 * -EPROTONOSUPPORT another version, -EPROTO a field breaks its rule (stream
 * 0, unknown flag, a name not NUL padded or not a valid name, a reserved or
 * padding byte not 0).
 */
int site_state_parse(const uint8_t buf[SITE_STATE_SIZE], struct site_state *out);
/* Encode st (not validated) with its CRC32C into the whole block. */
void site_state_pack(const struct site_state *st, uint8_t buf[SITE_STATE_SIZE]);

#endif
