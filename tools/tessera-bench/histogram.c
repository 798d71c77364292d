/*
 * Log-linear latency histogram (fio's and HdrHistogram's scheme): values
 * below 2^(BITS+1) ns are exact, above that every power of two is cut into
 * 2^BITS buckets.  Adding a sample is a few instructions and no allocation,
 * so the job loop can record every I/O.
 */
#include <math.h>
#include <string.h>

#include "bench.h"

#define HIST_VAL (1u << BENCH_HIST_BITS)

const double bench_percentiles[] = { 1.0,  5.0,  10.0, 20.0, 30.0,  40.0,  50.0,  60.0, 70.0,
				     80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99 };
const size_t bench_n_percentiles = sizeof(bench_percentiles) / sizeof(bench_percentiles[0]);

void bench_hist_init(struct bench_hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

unsigned bench_hist_index(uint64_t v)
{
	unsigned msb, eb;

	if (v < 2u * HIST_VAL)
		return (unsigned)v;
	msb = 63u - (unsigned)__builtin_clzll(v);
	if (msb > BENCH_HIST_MAX_MSB)
		return BENCH_HIST_NBUCKETS - 1;
	eb = msb - BENCH_HIST_BITS;
	return ((eb + 1) << BENCH_HIST_BITS) + (unsigned)((v >> eb) & (HIST_VAL - 1));
}

uint64_t bench_hist_bucket_low(unsigned idx)
{
	unsigned eb;

	if (idx < 2u * HIST_VAL)
		return idx;
	eb = (idx >> BENCH_HIST_BITS) - 1;
	return (uint64_t)((idx & (HIST_VAL - 1)) | HIST_VAL) << eb;
}

uint64_t bench_hist_bucket_width(unsigned idx)
{
	if (idx < 2u * HIST_VAL)
		return 1;
	return 1ull << ((idx >> BENCH_HIST_BITS) - 1);
}

void bench_hist_add(struct bench_hist *h, uint64_t v)
{
	double d = (double)v;

	h->buckets[bench_hist_index(v)]++;
	h->count++;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
	h->sum += d;
	h->sumsq += d * d;
}

void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src)
{
	if (src->count == 0)
		return;
	for (unsigned i = 0; i < BENCH_HIST_NBUCKETS; i++)
		dst->buckets[i] += src->buckets[i];
	dst->count += src->count;
	dst->sum += src->sum;
	dst->sumsq += src->sumsq;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
}

uint64_t bench_hist_percentile(const struct bench_hist *h, double pct)
{
	uint64_t want, seen = 0;

	if (h->count == 0)
		return 0;
	want = (uint64_t)ceil(pct / 100.0 * (double)h->count);
	if (want < 1)
		want = 1;
	if (want >= h->count)
		return h->max;
	for (unsigned i = 0; i < BENCH_HIST_NBUCKETS; i++) {
		seen += h->buckets[i];
		if (seen >= want) {
			/* the middle of the bucket, inside what was really seen */
			uint64_t v = bench_hist_bucket_low(i) + (bench_hist_bucket_width(i) - 1) / 2;

			if (v < h->min)
				v = h->min;
			if (v > h->max)
				v = h->max;
			return v;
		}
	}
	return h->max;
}

double bench_hist_mean(const struct bench_hist *h)
{
	return h->count ? h->sum / (double)h->count : 0.0;
}

double bench_hist_stddev(const struct bench_hist *h)
{
	double mean, var;

	if (h->count < 2)
		return 0.0;
	mean = h->sum / (double)h->count;
	var = (h->sumsq - mean * h->sum) / (double)(h->count - 1);
	return var > 0 ? sqrt(var) : 0.0;
}
