/*
 * A consistency group's marker numbers at the source, persisted
 * (site_source.c's group_mark takes them; struct site_mark in
 * server_internal.h).
 *
 * The target takes a member's markers only strictly increasing (site_grp_marker,
 * -EILSEQ), across restarts of the source too.  Numbers come from a counter
 * whose reserve is written durably before any number under it is handed out:
 * the file holds "every number handed out is <= reserved"; a start goes on
 * from max(reserved + 1, the wall clock in microseconds) and writes a new
 * reserve (SITE_MARK_BATCH more) before its first number, so a clock stepped
 * back does not matter and one write + fsync covers SITE_MARK_BATCH markers.
 * The clock term only keeps numbers above those of a source that numbered by
 * the clock alone (before this file existed) or lost its file.
 *
 * File (24 bytes, little-endian):
 *   0  8  magic "TSRMARK1"
 *   8  8  reserved: the highest number that may have been handed out
 *  16  4  crc32c of bytes 0..15
 *  20  4  zero
 * A missing file starts from the clock; a damaged one too (logged), and is
 * rewritten.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "site/server_internal.h"
#include "tessera/common.h"

#define SITE_MARK_FILE_LEN 24
static const char site_mark_magic[8] = {'T', 'S', 'R', 'M', 'A', 'R', 'K', '1'};

static int mark_reserve(struct site_mark *m, uint64_t upto)
{
	uint8_t buf[SITE_MARK_FILE_LEN] = {0};
	int ret;

	memcpy(buf, site_mark_magic, 8);
	tsr_put_le64(buf + 8, upto);
	tsr_put_le32(buf + 16, tsr_crc32c(0, buf, 16));
	ret = tsr_file_replace(m->path, buf, sizeof(buf));
	if (ret) {
		if (ret != m->last_err) /* once per cause, not at every try */
			tsr_error("site: group markers: cannot write %s: %s (no marker until it "
				  "can be written)",
				  m->path, strerror(-ret));
		m->last_err = ret;
		return ret;
	}
	m->last_err = 0;
	m->reserved = upto;
	m->writes++;
	return 0;
}

/* The reserve in path: 0 and *out, -ENOENT, -EUCLEAN damaged, -errno. */
static int mark_read(const char *path, uint64_t *out)
{
	uint8_t buf[SITE_MARK_FILE_LEN + 1];
	ssize_t n;
	int fd, ret = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = pread(fd, buf, sizeof(buf), 0);
	if (n < 0)
		ret = -errno;
	else if (n != SITE_MARK_FILE_LEN || memcmp(buf, site_mark_magic, 8) != 0 ||
		 tsr_get_le32(buf + 16) != tsr_crc32c(0, buf, 16) || tsr_get_le32(buf + 20) != 0)
		ret = -EUCLEAN;
	else
		*out = tsr_get_le64(buf + 8);
	close(fd);
	return ret;
}

int site_mark_open(struct site_mark *m, const char *path, uint64_t now_us)
{
	uint64_t reserved = 0;
	int ret;

	memset(m, 0, sizeof(*m));
	if (path == NULL || path[0] == '\0') { /* no file: the clock alone */
		m->next = now_us;
		m->reserved = UINT64_MAX;
		return 0;
	}
	if (snprintf(m->path, sizeof(m->path), "%s", path) >= (int)sizeof(m->path))
		return -ENAMETOOLONG;
	ret = mark_read(path, &reserved);
	if (ret == -EUCLEAN)
		tsr_warn("site: group markers: %s is damaged: numbering from the clock", path);
	else if (ret && ret != -ENOENT)
		return ret;
	m->next = reserved + 1 > now_us ? reserved + 1 : now_us;
	if (m->next == 0)
		m->next = 1;
	return mark_reserve(m, m->next + SITE_MARK_BATCH - 1);
}

int site_mark_next(struct site_mark *m, uint64_t *n)
{
	int ret;

	if (m->next > m->reserved) {
		/* once per SITE_MARK_BATCH markers (the one file write on the
		 * group's worker: ARCHITECTURE.md) */
		ret = mark_reserve(m, m->next + SITE_MARK_BATCH - 1);
		if (ret)
			return ret;
	}
	*n = m->next++;
	return 0;
}
