/*
 * Inside the site module only: the site server's way into the target
 * (site_target.c) for frames whose payload CRC it has already checked.
 */
#ifndef TSR_SITE_TARGET_INT_H
#define TSR_SITE_TARGET_INT_H

#include "tessera/site.h"

/*
 * tsr_site_target_apply for a frame whose WRITE payload the caller has
 * already checked against hdr->data_crc (tsr_site_rx_poll does, before it
 * hands a frame out) and has not changed since: every other check runs as
 * in tsr_site_target_apply, with the same results, and the payload's CRC32C
 * is not computed a second time (one pass over each replicated byte less on
 * the DR).
 */
int tsr_site_target_apply_checked(struct tsr_site_target *t, const struct tsr_site_hdr *hdr,
				  const void *payload, tsr_cb cb_fn, void *cb_arg);

#endif
