/*
 * Types and helpers shared by every layer: the completion callback, logging,
 * CRC32C (ISA-L), aligned buffers, little-endian fields, the monotonic clock
 * and timed waits on it.
 * Implemented in engine/util/ (the last two inline, here).
 */
#ifndef TESSERA_COMMON_H
#define TESSERA_COMMON_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>
#include <time.h>

/* Completion of an asynchronous operation above the I/O layer: 0 or -errno. */
typedef void (*tsr_cb)(void *cb_arg, int status);

#define TSR_BLOCK_SIZE 4096u            /* store block, CRC unit, O_DIRECT unit */
#define TSR_MAX_IO (32u * 1024 * 1024)  /* largest single request (NBD payload limit) */

/*
 * Free lists on the data path (store ops, peer requests, mirror ops) keep a
 * finished object for the next one instead of freeing it.  Under
 * AddressSanitizer (-DTSR_SANITIZE=ON) they keep nothing: an object touched
 * after its callback ran (a late or second completion, a bug the async
 * contract forbids) is then a reported heap-use-after-free, not a silent
 * write into the next operation's object.  Release builds keep them.
 */
#if defined(__SANITIZE_ADDRESS__)
#define TSR_KEEP_FREED false
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TSR_KEEP_FREED false
#endif
#endif
#ifndef TSR_KEEP_FREED
#define TSR_KEEP_FREED true
#endif

/* An extent for block status: allocated data or a hole reading as zeros. */
struct tsr_extent {
	uint64_t offset;
	uint64_t length;
	uint32_t flags; /* TSR_EXTENT_HOLE | TSR_EXTENT_ZERO */
};
#define TSR_EXTENT_HOLE 0x1u
#define TSR_EXTENT_ZERO 0x2u

/* Logging: one line to stderr with time, level and thread name. */
enum tsr_log_level { TSR_LOG_DEBUG, TSR_LOG_INFO, TSR_LOG_WARN, TSR_LOG_ERROR };
void tsr_log(enum tsr_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void tsr_log_set_level(enum tsr_log_level level);
void tsr_log_set_thread_name(const char *name);
#define tsr_debug(...) tsr_log(TSR_LOG_DEBUG, __VA_ARGS__)
#define tsr_info(...)  tsr_log(TSR_LOG_INFO, __VA_ARGS__)
#define tsr_warn(...)  tsr_log(TSR_LOG_WARN, __VA_ARGS__)
#define tsr_error(...) tsr_log(TSR_LOG_ERROR, __VA_ARGS__)

/* CRC32C (Castagnoli) through ISA-L crc32_iscsi; seed 0 for a fresh CRC. */
uint32_t tsr_crc32c(uint32_t seed, const void *buf, size_t len);
/* sums[i] = tsr_crc32c(0, block i) for the n TSR_BLOCK_SIZE blocks of buf. */
void tsr_crc32c_blocks(const void *buf, size_t n, uint32_t *sums);
/*
 * The CRC32C of n consecutive TSR_BLOCK_SIZE blocks from their own CRCs
 * (sums as tsr_crc32c_blocks gives them): equal to tsr_crc32c(0, blocks,
 * n * TSR_BLOCK_SIZE) without reading the data again (a shift of the CRC so
 * far by one block, a 32x32 GF(2) product, then an XOR, per block).  So one
 * pass over a write's data gives both the store's per-block CRCs and the
 * peer frame's payload CRC.  n 0 gives 0.
 */
uint32_t tsr_crc32c_join_blocks(const uint32_t *sums, size_t n);

/* Aligned allocation for O_DIRECT buffers (TSR_BLOCK_SIZE); NULL on ENOMEM. */
void *tsr_alloc_aligned(size_t len);
void tsr_free_aligned(void *p);

/* Parse "10G", "4k", "512", "1T" (binary units) into bytes.  0 or -EINVAL/-ERANGE. */
int tsr_parse_size(const char *s, uint64_t *out);
/* Format bytes as "10 GiB" into buf. */
const char *tsr_format_size(uint64_t bytes, char *buf, size_t len);

/* A volume or snapshot name: [A-Za-z0-9][A-Za-z0-9._-]{0,62}. */
int tsr_valid_name(const char *name);
/* "" or a UUID as 8-4-4-4-12 hex digits (either case). */
bool tsr_valid_uuid(const char *s);

/* fsync the directory dir (an entry in it was made, renamed or removed).
 * 0 or -errno. */
int tsr_fsync_dir(const char *dir);

/*
 * Replace the file at path with len bytes of buf, atomically and durably: a
 * temporary file beside it ("PATH.tmp") written and fsynced, renamed over
 * path, then the directory fsynced.  len 0 removes path instead (absent is
 * fine).  A crash leaves the old file or the new one.  0 or -errno.
 */
int tsr_file_replace(const char *path, const void *buf, size_t len);

/*
 * Little-endian integers in the wire and on-disk formats, at any alignment
 * (the compiler makes each a single load or store where it can).
 */
static inline uint16_t tsr_get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t tsr_get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t tsr_get_le64(const uint8_t *p)
{
	return (uint64_t)tsr_get_le32(p) | (uint64_t)tsr_get_le32(p + 4) << 32;
}

static inline void tsr_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void tsr_put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static inline void tsr_put_le64(uint8_t *p, uint64_t v)
{
	tsr_put_le32(p, (uint32_t)v);
	tsr_put_le32(p + 4, (uint32_t)(v >> 32));
}

/*
 * The monotonic clock (CLOCK_MONOTONIC) in ns, us and ms, for deadlines,
 * timeouts and durations; wall time is CLOCK_REALTIME, as in tsr_log.  Signed
 * so that "deadline - now" may go below zero and -1 can mean "no deadline";
 * CLOCK_MONOTONIC counts from boot, far from overflowing 63 bits.  Inline: some
 * callers read it once per I/O.
 */
static inline int64_t tsr_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t tsr_mono_us(void)
{
	return tsr_mono_ns() / 1000;
}

static inline int64_t tsr_mono_ms(void)
{
	return tsr_mono_ns() / 1000000;
}

/*
 * Timed waits against the monotonic clock (engine/util/util.c).  A condition
 * variable made with pthread_cond_init(cond, NULL) measures a timed wait's
 * deadline on CLOCK_REALTIME: a deadline computed from the monotonic clock
 * then moves with every step of the wall clock (set back an hour, a wait of
 * a second lasts an hour and a second).  tsr_cond_init_mono makes cond count
 * on CLOCK_MONOTONIC (0 or -errno); tsr_cond_wait_until_ms waits on cond
 * (lock held, as pthread_cond_timedwait) until tsr_mono_ms() reaches
 * deadline_ms at most, for a cond made by tsr_cond_init_mono only.  Returns
 * 0 (signalled, or a spurious wake-up: callers loop on their condition) or
 * ETIMEDOUT, only once the deadline has passed.
 */
int tsr_cond_init_mono(pthread_cond_t *cond);
int tsr_cond_wait_until_ms(pthread_cond_t *cond, pthread_mutex_t *lock, int64_t deadline_ms);

#endif
