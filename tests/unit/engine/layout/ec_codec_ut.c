/*
 * The erasure-coding codec of engine/layout/ec_codec.c and the geometry
 * helpers of include/tessera/ec.h: every k+m the engine supports
 * (k 1..16, m 1..4) decodes every pattern of up to m lost chunks back to
 * the original bytes; parity delta equals a full re-encode; bad input is
 * -EINVAL; "K+M" and the stripe unit are checked; parity rotates evenly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/ec.h"

#define NMAX   (TSR_EC_MAX_K + TSR_EC_MAX_M)
#define POISON 0xa5

/* Deterministic bytes (xorshift), so a failure reproduces. */
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static void fill_random(uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		g_rng ^= g_rng << 13;
		g_rng ^= g_rng >> 7;
		g_rng ^= g_rng << 17;
		p[i] = (uint8_t)g_rng;
	}
}

/* One stripe: k data + m parity chunks of len bytes (orig), and a working
 * copy (work) the decode runs on.  off shifts every chunk off alignment. */
struct stripe {
	unsigned k, m, n;
	size_t len;
	uint8_t *orig_mem, *work_mem;
	uint8_t *orig[NMAX], *work[NMAX];
};

static void stripe_init(struct stripe *s, struct tsr_ec_codec *c, unsigned k, unsigned m,
			size_t len, size_t off)
{
	size_t pitch = len + 64;

	s->k = k;
	s->m = m;
	s->n = k + m;
	s->len = len;
	s->orig_mem = malloc(pitch * s->n + off);
	s->work_mem = malloc(pitch * s->n + off);
	assert_non_null(s->orig_mem);
	assert_non_null(s->work_mem);
	for (unsigned p = 0; p < s->n; p++) {
		s->orig[p] = s->orig_mem + off + p * pitch;
		s->work[p] = s->work_mem + off + p * pitch;
	}
	for (unsigned d = 0; d < k; d++)
		fill_random(s->orig[d], len);
	tsr_ec_encode(c, len, (const uint8_t *const *)s->orig, s->orig + k);
}

static void stripe_fini(struct stripe *s)
{
	free(s->orig_mem);
	free(s->work_mem);
}

/* work = orig, with the chunks in lost overwritten by POISON. */
static void stripe_lose(struct stripe *s, uint32_t lost)
{
	for (unsigned p = 0; p < s->n; p++) {
		if (lost & (1u << p))
			memset(s->work[p], POISON, s->len);
		else
			memcpy(s->work[p], s->orig[p], s->len);
	}
}

static bool all_poison(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != POISON)
			return false;
	return true;
}

/* Every pattern of 1..m lost chunks of one k+m: decode all of them and
 * compare; decode only the lowest one and check the others stay untouched;
 * want bits on present chunks are ignored. */
static unsigned check_all_patterns(unsigned k, unsigned m, size_t len, size_t off)
{
	struct tsr_ec_codec *c = NULL;
	struct stripe s;
	unsigned n = k + m, patterns = 0;
	uint32_t all = (1u << n) - 1;

	assert_int_equal(tsr_ec_codec_create(k, m, &c), 0);
	stripe_init(&s, c, k, m, len, off);
	for (uint32_t lost = 1; lost <= all; lost++) {
		unsigned nlost = (unsigned)__builtin_popcount(lost);
		uint32_t lowest = lost & -lost;

		if (nlost > m)
			continue;
		patterns++;
		/* all lost chunks wanted, plus present ones (ignored) */
		stripe_lose(&s, lost);
		assert_int_equal(tsr_ec_decode(c, len, s.work, all & ~lost, all), 0);
		for (unsigned p = 0; p < n; p++)
			if (memcmp(s.work[p], s.orig[p], len) != 0)
				fail_msg("%u+%u lost 0x%x: chunk %u differs", k, m, lost, p);
		/* only the lowest lost chunk wanted */
		stripe_lose(&s, lost);
		assert_int_equal(tsr_ec_decode(c, len, s.work, all & ~lost, lowest), 0);
		for (unsigned p = 0; p < n; p++) {
			if (p == (unsigned)__builtin_ctz(lowest) || !(lost & (1u << p))) {
				if (memcmp(s.work[p], s.orig[p], len) != 0)
					fail_msg("%u+%u lost 0x%x want 0x%x: chunk %u differs", k,
						 m, lost, lowest, p);
			} else if (!all_poison(s.work[p], len)) {
				fail_msg("%u+%u lost 0x%x: unwanted chunk %u written", k, m, lost,
					 p);
			}
		}
	}
	/* nothing lost, nothing wanted: 0 and nothing written */
	stripe_lose(&s, 0);
	assert_int_equal(tsr_ec_decode(c, len, s.work, all, all), 0);
	assert_int_equal(tsr_ec_decode(c, len, s.work, all, 0), 0);
	for (unsigned p = 0; p < n; p++)
		assert_memory_equal(s.work[p], s.orig[p], len);
	stripe_fini(&s);
	tsr_ec_codec_destroy(c);
	return patterns;
}

static unsigned binom(unsigned n, unsigned r)
{
	unsigned long v = 1;

	for (unsigned i = 1; i <= r; i++)
		v = v * (n - r + i) / i;
	return (unsigned)v;
}

static void test_round_trip_every_k_m(void **state)
{
	for (unsigned k = 1; k <= TSR_EC_MAX_K; k++) {
		for (unsigned m = 1; m <= TSR_EC_MAX_M; m++) {
			unsigned expect = 0;

			for (unsigned r = 1; r <= m; r++)
				expect += binom(k + m, r);
			assert_int_equal(check_all_patterns(k, m, 64, 0), expect);
		}
	}
}

/* Longer chunks (the SIMD main loop, not only its first vectors), chunks
 * off alignment, and the engine's 4 KiB multiples. */
static void test_round_trip_lengths_and_alignment(void **state)
{
	check_all_patterns(4, 2, 4096, 0);
	check_all_patterns(4, 2, 128, 1);
	check_all_patterns(8, 3, 192, 7);
	check_all_patterns(2, 1, 64 * 1024, 0);
	check_all_patterns(16, 4, 128, 3);
}

/* More patterns than the decode-table cache holds, revisited in turns:
 * entries are evicted and rebuilt, hits return the right tables. */
static void test_decode_cache_cycles(void **state)
{
	const unsigned k = 4, m = 2, n = 6;
	uint32_t patterns[32], all = (1u << n) - 1;
	struct tsr_ec_codec *c = NULL;
	unsigned np = 0;
	struct stripe s;

	for (uint32_t lost = 1; lost <= all; lost++)
		if (__builtin_popcount(lost) <= (int)m)
			patterns[np++] = lost;
	assert_int_equal(np, 21); /* > 16 cache entries */
	assert_int_equal(tsr_ec_codec_create(k, m, &c), 0);
	stripe_init(&s, c, k, m, 256, 0);
	for (unsigned round = 0; round < 4; round++) {
		for (unsigned i = 0; i < np; i++) {
			/* forwards, then backwards: hits and misses both */
			uint32_t lost = (round & 1) ? patterns[np - 1 - i] : patterns[i];

			stripe_lose(&s, lost);
			assert_int_equal(tsr_ec_decode(c, s.len, s.work, all & ~lost, lost), 0);
			for (unsigned p = 0; p < n; p++)
				assert_memory_equal(s.work[p], s.orig[p], s.len);
			/* the same pattern again right away: a cache hit */
			stripe_lose(&s, lost);
			assert_int_equal(tsr_ec_decode(c, s.len, s.work, all & ~lost, lost), 0);
			for (unsigned p = 0; p < n; p++)
				assert_memory_equal(s.work[p], s.orig[p], s.len);
		}
	}
	stripe_fini(&s);
	tsr_ec_codec_destroy(c);
}

/* Two codecs of one k+m produce the same parity (the matrix is fixed: the
 * parity on disk must not depend on which node computed it). */
static void test_encode_deterministic(void **state)
{
	struct tsr_ec_codec *a = NULL, *b = NULL;
	uint8_t pb[4][128];
	uint8_t *par_b[4] = {pb[0], pb[1], pb[2], pb[3]};
	struct stripe s;

	assert_int_equal(tsr_ec_codec_create(8, 4, &a), 0);
	assert_int_equal(tsr_ec_codec_create(8, 4, &b), 0);
	stripe_init(&s, a, 8, 4, 128, 0);
	tsr_ec_encode(b, 128, (const uint8_t *const *)s.orig, par_b);
	for (unsigned j = 0; j < 4; j++)
		assert_memory_equal(par_b[j], s.orig[8 + j], 128);
	stripe_fini(&s);
	tsr_ec_codec_destroy(a);
	tsr_ec_codec_destroy(b);
}

/* Parity delta for every data position equals the full re-encode. */
static void check_update(unsigned k, unsigned m, size_t len, size_t off)
{
	struct tsr_ec_codec *c = NULL;
	uint8_t *fresh_mem, *fresh[TSR_EC_MAX_M], *newd, *scratch;
	struct stripe s;

	assert_int_equal(tsr_ec_codec_create(k, m, &c), 0);
	stripe_init(&s, c, k, m, len, off);
	fresh_mem = malloc(m * len);
	newd = malloc(len + off);
	scratch = malloc(len + off);
	assert_non_null(fresh_mem);
	assert_non_null(newd);
	assert_non_null(scratch);
	for (unsigned j = 0; j < m; j++)
		fresh[j] = fresh_mem + j * len;
	for (unsigned d = 0; d < k; d++) {
		fill_random(newd + off, len);
		/* only a few bytes change in odd positions: the usual small write */
		if (d & 1) {
			memcpy(newd + off, s.orig[d], len);
			newd[off + len / 2] ^= 0x5a;
		}
		tsr_ec_update(c, len, d, s.orig[d], newd + off, s.orig + k, scratch + off);
		memcpy(s.orig[d], newd + off, len);
		tsr_ec_encode(c, len, (const uint8_t *const *)s.orig, fresh);
		for (unsigned j = 0; j < m; j++)
			if (memcmp(fresh[j], s.orig[k + j], len) != 0)
				fail_msg("%u+%u update of data %u: parity %u differs", k, m, d, j);
	}
	/* and the updated stripe still decodes with the data lost */
	{
		uint32_t all = (1u << (k + m)) - 1, lost = (1u << (m < k ? m : k)) - 1;

		stripe_lose(&s, lost);
		assert_int_equal(tsr_ec_decode(c, len, s.work, all & ~lost, lost), 0);
		for (unsigned p = 0; p < k + m; p++)
			assert_memory_equal(s.work[p], s.orig[p], len);
	}
	free(fresh_mem);
	free(newd);
	free(scratch);
	stripe_fini(&s);
	tsr_ec_codec_destroy(c);
}

static void test_update_equals_encode(void **state)
{
	check_update(1, 1, 64, 0);
	check_update(2, 1, 4096, 0);
	check_update(4, 2, 4096, 0);
	check_update(4, 2, 128, 5);
	check_update(8, 3, 64 * 1024, 0);
	check_update(3, 4, 192, 0);
	check_update(16, 4, 4096, 1);
}

static void test_decode_errors(void **state)
{
	const unsigned k = 4, m = 2, n = 6;
	struct tsr_ec_codec *c = NULL;
	uint32_t all = (1u << n) - 1;
	struct stripe s;

	assert_int_equal(tsr_ec_codec_create(k, m, &c), 0);
	stripe_init(&s, c, k, m, 128, 0);
	/* fewer than k present: -EINVAL and nothing written */
	stripe_lose(&s, 0x7);
	assert_int_equal(tsr_ec_decode(c, s.len, s.work, all & ~0x7u, 0x7), -EINVAL);
	for (unsigned p = 0; p < 3; p++)
		assert_true(all_poison(s.work[p], s.len));
	assert_int_equal(tsr_ec_decode(c, s.len, s.work, 0, 0x1), -EINVAL);
	assert_int_equal(tsr_ec_decode(c, s.len, s.work, 0x7, 0x8), -EINVAL);
	/* bits beyond k+m, in present or in want */
	stripe_lose(&s, 0x1);
	assert_int_equal(tsr_ec_decode(c, s.len, s.work, (all & ~1u) | (1u << n), 0x1), -EINVAL);
	assert_int_equal(tsr_ec_decode(c, s.len, s.work, all & ~1u, 0x1 | (1u << 31)), -EINVAL);
	assert_true(all_poison(s.work[0], s.len));
	/* the codec still works afterwards */
	assert_int_equal(tsr_ec_decode(c, s.len, s.work, all & ~1u, 0x1), 0);
	assert_memory_equal(s.work[0], s.orig[0], s.len);
	stripe_fini(&s);
	tsr_ec_codec_destroy(c);
}

static void test_codec_create_errors(void **state)
{
	static const unsigned bad[][2] = {{0, 1}, {17, 1}, {4, 0}, {4, 5}, {0, 0}, {100, 100}};
	struct tsr_ec_codec *c = (struct tsr_ec_codec *)&g_rng; /* sentinel: must stay */

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(tsr_ec_codec_create(bad[i][0], bad[i][1], &c), -EINVAL);
		assert_ptr_equal(c, (struct tsr_ec_codec *)&g_rng);
	}
	tsr_ec_codec_destroy(NULL);
}

static void test_parse(void **state)
{
	static const struct {
		const char *s;
		unsigned k, m;
	} good[] = {{"2+1", 2, 1}, {"4+2", 4, 2},   {"8+3", 8, 3}, {"16+4", 16, 4},
		    {"1+1", 1, 1}, {"16+1", 16, 1}, {"1+4", 1, 4}};
	static const char *const bad[] = {
	    "0+1",
	    "17+1",
	    "4+0",
	    "4+5",
	    "4+2x",
	    "",
	    "+",
	    "4 + 2",
	    "4+",
	    "+2",
	    "4",
	    "4+2+1",
	    " 4+2",
	    "4+2 ",
	    "-4+2",
	    "4+-2",
	    "+4+2",
	    "4++2",
	    "4-2",
	    "4x2",
	    "a+b",
	    "99999999999999999999999+1",
	    "4+99999999999999999999999",
	    "18446744073709551620+2",
	    "4294967300+2",
	    "4+4294967298",
	};
	unsigned k, m;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		k = m = 99;
		assert_int_equal(tsr_ec_parse(good[i].s, &k, &m), 0);
		assert_int_equal(k, good[i].k);
		assert_int_equal(m, good[i].m);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		k = m = 99;
		if (tsr_ec_parse(bad[i], &k, &m) != -EINVAL)
			fail_msg("\"%s\" accepted", bad[i]);
		assert_int_equal(k, 99);
		assert_int_equal(m, 99);
	}
	assert_int_equal(tsr_ec_parse(NULL, &k, &m), -EINVAL);
}

static void test_unit_valid(void **state)
{
	static const uint32_t good[] = {4096, 8192, 16384, 65536, 512 * 1024, 1024 * 1024};
	static const uint32_t bad[] = {0,
				       1,
				       512,
				       2048,
				       4095,
				       4097,
				       12288,
				       3 * 65536,
				       1024 * 1024 + 4096,
				       2 * 1024 * 1024,
				       UINT32_MAX,
				       1u << 31};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_true(tsr_ec_unit_valid(good[i]));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (tsr_ec_unit_valid(bad[i]))
			fail_msg("unit %u accepted", bad[i]);
}

/* tsr_ec_copy_of / tsr_ec_position_of are inverse; over any k+m consecutive
 * stripes every copy holds every position exactly once (parity rotates, no
 * copy is a parity hot spot); sizes round up to whole stripes. */
static void test_geometry(void **state)
{
	static const unsigned km[][2] = {{1, 1}, {2, 1}, {4, 2}, {8, 3}, {16, 4}, {3, 4}};
	static const uint64_t starts[] = {0, 5, 1000003, UINT64_MAX - 64};

	for (size_t t = 0; t < sizeof(km) / sizeof(km[0]); t++) {
		unsigned k = km[t][0], m = km[t][1], n = k + m;

		for (size_t si = 0; si < sizeof(starts) / sizeof(starts[0]); si++) {
			unsigned count[NMAX][NMAX];
			unsigned parity_count[NMAX];

			memset(count, 0, sizeof(count));
			memset(parity_count, 0, sizeof(parity_count));
			for (uint64_t s = starts[si]; s < starts[si] + n; s++) {
				bool seen[NMAX] = {false};

				for (unsigned p = 0; p < n; p++) {
					unsigned c = tsr_ec_copy_of(s, p, k, m);

					assert_true(c < n);
					assert_false(
					    seen[c]); /* a stripe's positions on distinct copies */
					seen[c] = true;
					assert_int_equal(tsr_ec_position_of(s, c, k, m), p);
					count[c][p]++;
					if (p >= k)
						parity_count[c]++;
				}
				for (unsigned c = 0; c < n; c++)
					assert_int_equal(
					    tsr_ec_copy_of(s, tsr_ec_position_of(s, c, k, m), k, m),
					    c);
			}
			for (unsigned c = 0; c < n; c++) {
				assert_int_equal(parity_count[c], m);
				for (unsigned p = 0; p < n; p++)
					assert_int_equal(count[c][p], 1);
			}
		}
	}
	assert_int_equal(tsr_ec_stripes(0, 4, 65536), 0);
	assert_int_equal(tsr_ec_stripes(1, 4, 65536), 1);
	assert_int_equal(tsr_ec_stripes(4 * 65536, 4, 65536), 1);
	assert_int_equal(tsr_ec_stripes(4 * 65536 + 4096, 4, 65536), 2);
	assert_int_equal(tsr_ec_chunk_volume_size(4 * 65536 + 4096, 4, 65536), 2 * 65536);
	assert_int_equal(tsr_ec_chunk_volume_size(1ull << 40, 4, 65536), (1ull << 40) / 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip_every_k_m),
	    cmocka_unit_test(test_round_trip_lengths_and_alignment),
	    cmocka_unit_test(test_decode_cache_cycles),
	    cmocka_unit_test(test_encode_deterministic),
	    cmocka_unit_test(test_update_equals_encode),
	    cmocka_unit_test(test_decode_errors),
	    cmocka_unit_test(test_codec_create_errors),
	    cmocka_unit_test(test_parse),
	    cmocka_unit_test(test_unit_valid),
	    cmocka_unit_test(test_geometry),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
