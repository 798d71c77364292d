/*
 * libFuzzer harness: the site target's stream state file (the 4 KiB block
 * of include/tessera/site.h, "State file"; site_state_parse in
 * engine/site/site_server.c).  The input is laid into a block (zero padded,
 * or cut at 4 KiB) in its own heap allocation, then parsed twice: as it is
 * (the checksum almost always rejects it), and with its CRC32C recomputed so
 * the fuzzer reaches the field checks.
 * Checks: no crash; only the documented errnos; an accepted block keeps
 * its rules (stream non-zero, known flags, valid NUL-terminated names; a
 * consistency group name valid or empty, and no marker without a group; a
 * target id valid or empty, and the fresh flag only with one) and packs
 * back to the same bytes (version 2 exactly when it has a target id).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "site/server_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const uint8_t *block)
{
	uint8_t *again;
	struct site_state st;
	int ret = site_state_parse(block, &st);

	if (ret != 0) {
		if (ret != -EBADMSG && ret != -EPROTO && ret != -EPROTONOSUPPORT)
			abort();
		return;
	}
	if (st.stream == 0 || (st.flags & ~SITE_STATE_FLAGS) || !tsr_valid_name(st.site) ||
	    !tsr_valid_name(st.cluster) || !tsr_valid_name(st.volume) ||
	    (st.group[0] != '\0' && !tsr_valid_name(st.group)) ||
	    (st.group[0] == '\0' && st.marker != 0) ||
	    (st.target_id[0] != '\0' && !tsr_valid_name(st.target_id)) ||
	    ((st.flags & SITE_STATE_FRESH) && st.target_id[0] == '\0'))
		abort();
	again = malloc(SITE_STATE_SIZE);
	if (again == NULL)
		return;
	site_state_pack(&st, again);
	if (memcmp(again, block, SITE_STATE_SIZE) != 0)
		abort();
	free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *block = calloc(1, SITE_STATE_SIZE);
	uint32_t crc;

	if (block == NULL)
		return 0;
	memcpy(block, data, size < SITE_STATE_SIZE ? size : SITE_STATE_SIZE);
	check(block);
	crc = tsr_crc32c(0, block, SITE_STATE_SIZE - 4);
	for (int i = 0; i < 4; i++)
		block[SITE_STATE_SIZE - 4 + i] = (uint8_t)(crc >> (8 * i));
	check(block);
	free(block);
	return 0;
}
