/*
 * TEMPORARY: weak stand-ins for the site source (include/tessera/site.h;
 * engine/site/site_source.c is being written in parallel) so that the
 * cluster wiring links before it lands.  Each refuses with -ENOSYS.
 * Deleted as soon as the real ones are in.
 */
#include <errno.h>
#include <string.h>

#include "tessera/site.h"

__attribute__((weak)) const char *tsr_site_state_name(enum tsr_site_state st)
{
	(void)st;
	return "unknown";
}

__attribute__((weak)) int tsr_site_source_start(const struct tsr_site_source_opts *opts,
						struct tsr_site_source **out)
{
	(void)opts;
	(void)out;
	return -ENOSYS;
}

__attribute__((weak)) void tsr_site_source_stop(struct tsr_site_source *s)
{
	(void)s;
}

__attribute__((weak)) void tsr_site_source_stats(struct tsr_site_source *s,
						 struct tsr_site_source_stats *out)
{
	(void)s;
	memset(out, 0, sizeof(*out));
}
