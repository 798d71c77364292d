/*
 * EC layout: scrub (placeholder until the parity check lands).
 */
#include <errno.h>

#include "layout/ec_internal.h"

int ec_scrub_begin(struct ec *e, bool repair, void (*done)(void *arg, int status), void *arg)
{
	(void)e;
	(void)repair;
	(void)done;
	(void)arg;
	return -EOPNOTSUPP;
}

void ec_scrub_abort(struct ec *e)
{
	(void)e;
}
