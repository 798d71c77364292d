/*
 * TEMPORARY: weak stand-ins for the site source and site server
 * (include/tessera/site.h, engine/site/site_source.c and site_server.c are
 * being written in parallel) so that the cluster wiring links before they
 * land.  Each refuses with -ENOSYS.  Deleted as soon as the real ones are in.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

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

__attribute__((weak)) int tsr_site_server_start(const struct tsr_site_server_opts *opts,
						struct tsr_site_server **out)
{
	(void)opts;
	(void)out;
	return -ENOSYS;
}

__attribute__((weak)) void tsr_site_server_stop(struct tsr_site_server *s)
{
	(void)s;
}

__attribute__((weak)) int tsr_site_server_accept(struct tsr_site_server *s, int fd)
{
	(void)s;
	close(fd); /* ours from here, also on error */
	return -ENOSYS;
}

__attribute__((weak)) size_t tsr_site_server_list(struct tsr_site_server *s,
						  struct tsr_site_target_info *out, size_t max)
{
	(void)s;
	(void)out;
	(void)max;
	return 0;
}

__attribute__((weak)) int tsr_site_server_promote(struct tsr_site_server *s, const char *volume,
						  bool force)
{
	(void)s;
	(void)volume;
	(void)force;
	return -ENOSYS;
}
