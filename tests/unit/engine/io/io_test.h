/*
 * Helpers shared by the I/O backend unit tests (io_ut.c, io_lazy_ut.c): the
 * scratch directory, which must be on a file system that accepts O_DIRECT
 * (tmpfs does not), and the removal of a test's scratch file.
 */
#ifndef TSR_IO_TEST_H
#define TSR_IO_TEST_H

#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tessera/common.h"

/*
 * io_test_find_direct_dir: the first of TSR_TEST_DIR, TMPDIR, /var/tmp, .
 * and /tmp where a file opened with O_DIRECT takes an aligned 4 KiB write;
 * its path goes to out (len bytes).  Returns 0, or -1 when none does (the
 * caller skips: exit 77).
 */
static __attribute__((unused)) int io_test_find_direct_dir(char *out, size_t len)
{
	const size_t bs = 4096;
	const char *candidates[] = { getenv("TSR_TEST_DIR"), getenv("TMPDIR"), "/var/tmp", ".",
				     "/tmp" };

	for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
		char path[PATH_MAX];
		void *buf;
		int fd;
		bool ok;

		if (candidates[i] == NULL)
			continue;
		snprintf(path, sizeof(path), "%s/tsr-io-probe-XXXXXX", candidates[i]);
		fd = mkostemp(path, O_DIRECT);
		if (fd < 0)
			continue;
		buf = tsr_alloc_aligned(bs);
		ok = buf != NULL && memset(buf, 0, bs) && pwrite(fd, buf, bs, 0) == (ssize_t)bs;
		tsr_free_aligned(buf);
		close(fd);
		unlink(path);
		if (ok) {
			snprintf(out, len, "%s", candidates[i]);
			return 0;
		}
	}
	return -1;
}

/*
 * io_test_file_remove: a test's teardown of its scratch file (made with
 * mkostemp in the directory above): fd closed and path unlinked; fd < 0
 * (setup made none, or failed before) does nothing.
 */
static __attribute__((unused)) void io_test_file_remove(int fd, const char *path)
{
	if (fd < 0)
		return;
	close(fd);
	unlink(path);
}

#endif
