/*
 * Small helpers shared by every layer: CRC32C through ISA-L, aligned buffers,
 * size parsing and formatting, name validation, durable small-file replace,
 * condition variables timed on the monotonic clock.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <isa-l/crc.h>

#include "tessera/common.h"

uint32_t tsr_crc32c(uint32_t seed, const void *buf, size_t len)
{
	/* crc32_iscsi takes and returns the CRC without the final inversion */
	return ~crc32_iscsi((unsigned char *)buf, (int)len, ~seed);
}

void tsr_crc32c_blocks(const void *buf, size_t n, uint32_t *sums)
{
	for (size_t i = 0; i < n; i++)
		sums[i] = tsr_crc32c(0, (const uint8_t *)buf + i * TSR_BLOCK_SIZE, TSR_BLOCK_SIZE);
}

/*
 * CRC combination (zlib's crc32_combine, for CRC32C): appending len zero
 * bytes to a message multiplies its register by x^(8 len) mod P, a linear
 * map of the 32-bit CRC; crc(A || B) = shift_|B|(crc(A)) ^ crc(B), the pre-
 * and post-inversions cancelling.  g_block_shift is that map for one block,
 * as 32 columns (column i: the image of bit i), built once by squaring the
 * one-zero-bit map 15 times (2^15 bits = 4096 bytes).
 */
static uint32_t g_block_shift[32];
static pthread_once_t g_block_shift_once = PTHREAD_ONCE_INIT;

static uint32_t gf2_times(const uint32_t *mat, uint32_t vec)
{
	uint32_t sum = 0;

	for (; vec != 0; vec >>= 1, mat++)
		if (vec & 1)
			sum ^= *mat;
	return sum;
}

static void gf2_square(uint32_t *square, const uint32_t *mat)
{
	for (int i = 0; i < 32; i++)
		square[i] = gf2_times(mat, mat[i]);
}

static void block_shift_init(void)
{
	uint32_t a[32], b[32];
	unsigned bits = 1;

	a[0] = 0x82f63b78u; /* CRC32C's polynomial, reflected: one zero bit */
	for (int i = 1; i < 32; i++)
		a[i] = 1u << (i - 1);
	while (bits < 8u * TSR_BLOCK_SIZE) {
		gf2_square(b, a);
		memcpy(a, b, sizeof(a));
		bits *= 2;
	}
	memcpy(g_block_shift, a, sizeof(a));
}

uint32_t tsr_crc32c_join_blocks(const uint32_t *sums, size_t n)
{
	uint32_t crc;

	if (n == 0)
		return 0;
	crc = sums[0];
	if (n > 1)
		pthread_once(&g_block_shift_once, block_shift_init);
	for (size_t i = 1; i < n; i++)
		crc = gf2_times(g_block_shift, crc) ^ sums[i];
	return crc;
}

void *tsr_alloc_aligned(size_t len)
{
	void *p = NULL;

	if (len == 0)
		len = TSR_BLOCK_SIZE;
	if (posix_memalign(&p, TSR_BLOCK_SIZE, len) != 0)
		return NULL;
	return p;
}

void tsr_free_aligned(void *p)
{
	free(p);
}

int tsr_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (s == NULL || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -ERANGE;
	switch (toupper((unsigned char)*end)) {
	case '\0': break;
	case 'K': shift = 10; end++; break;
	case 'M': shift = 20; end++; break;
	case 'G': shift = 30; end++; break;
	case 'T': shift = 40; end++; break;
	case 'P': shift = 50; end++; break;
	default: return -EINVAL;
	}
	if (shift && (strcasecmp(end, "iB") == 0 || strcasecmp(end, "B") == 0))
		end += strlen(end);
	if (*end != '\0')
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

const char *tsr_format_size(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)bytes;
	int u = 0;

	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%" PRIu64 " B", bytes);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}

int tsr_valid_name(const char *name)
{
	size_t n;

	if (name == NULL || !isalnum((unsigned char)name[0]))
		return 0;
	for (n = 1; name[n]; n++) {
		unsigned char c = (unsigned char)name[n];
		if (!isalnum(c) && c != '.' && c != '_' && c != '-')
			return 0;
	}
	return n <= 63;
}

bool tsr_valid_uuid(const char *s)
{
	static const char pattern[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
	size_t i;

	if (s == NULL || s[0] == '\0')
		return true;
	for (i = 0; pattern[i]; i++) {
		if (pattern[i] == '-' ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
			return false;
	}
	return s[i] == '\0';
}

int tsr_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

/* fsync the directory that holds path (its entry changed). */
static int fsync_parent(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	return tsr_fsync_dir(dir);
}

int tsr_file_replace(const char *path, const void *buf, size_t len)
{
	char tmp[PATH_MAX];
	const char *p = buf;
	size_t done = 0;
	int fd, ret = 0;

	if (len == 0) {
		if (unlink(path) < 0)
			return errno == ENOENT ? 0 : -errno;
		return fsync_parent(path);
	}
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	while (done < len && ret == 0) {
		ssize_t n = write(fd, p + done, len - done);

		if (n > 0)
			done += (size_t)n;
		else if (n < 0 && errno != EINTR)
			ret = -errno;
	}
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	if (close(fd) < 0 && ret == 0)
		ret = -errno;
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
	if (ret < 0) {
		unlink(tmp);
		return ret;
	}
	return fsync_parent(path);
}

/* ---- timed waits on the monotonic clock (common.h) ---- */

int tsr_cond_init_mono(pthread_cond_t *cond)
{
	pthread_condattr_t ca;
	int ret;

	ret = pthread_condattr_init(&ca);
	if (ret)
		return -ret;
	ret = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (ret == 0)
		ret = pthread_cond_init(cond, &ca);
	pthread_condattr_destroy(&ca);
	return -ret;
}

int tsr_cond_wait_until_ms(pthread_cond_t *cond, pthread_mutex_t *lock, int64_t deadline_ms)
{
	struct timespec ts = {.tv_sec = (time_t)(deadline_ms / 1000),
			      .tv_nsec = (long)(deadline_ms % 1000) * 1000000};

	if (deadline_ms < 0)
		ts.tv_sec = ts.tv_nsec = 0;
	return pthread_cond_timedwait(cond, lock, &ts);
}
