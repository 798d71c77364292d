/*
 * Where the next I/O of a job goes.  Random workloads walk a keyed
 * permutation of the region's blocks (every block once per pass, like fio's
 * random map, in O(1) memory): a bijective mix of a counter over the next
 * power of two, skipping values past the end (cycle walking).
 */
#include "bench.h"

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void bench_rand_seed(struct bench_rand *r, uint64_t seed)
{
	r->s[0] = splitmix64(&seed);
	r->s[1] = splitmix64(&seed);
	if ((r->s[0] | r->s[1]) == 0)
		r->s[1] = 1;
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t bench_rand_next(struct bench_rand *r)
{
	uint64_t s0 = r->s[0], s1 = r->s[1], res = s0 + s1;

	s1 ^= s0;
	r->s[0] = rotl(s0, 24) ^ s1 ^ (s1 << 16);
	r->s[1] = rotl(s1, 37);
	return res;
}

static void perm_rekey(struct bench_perm *p)
{
	p->key[0] = bench_rand_next(&p->rng);
	p->key[1] = bench_rand_next(&p->rng) | 1; /* odd: multiplication is a bijection */
	p->key[2] = bench_rand_next(&p->rng) | 1;
}

void bench_perm_init(struct bench_perm *p, uint64_t n, uint64_t seed)
{
	unsigned bits = 0;

	/* at most 2^63 blocks, so mask + 1 never overflows */
	p->n = n ? (n > (1ull << 63) ? 1ull << 63 : n) : 1;
	while (bits < 63 && (1ull << bits) < p->n)
		bits++;
	p->mask = (1ull << bits) - 1;
	p->shift = bits / 2 ? bits / 2 : 1;
	p->counter = 0;
	bench_rand_seed(&p->rng, seed);
	perm_rekey(p);
}

/* Each step is a bijection of [0, mask]: xor, odd multiply, xorshift. */
static uint64_t perm_mix(const struct bench_perm *p, uint64_t x)
{
	x = (x ^ p->key[0]) & p->mask;
	x = (x * p->key[1]) & p->mask;
	x ^= x >> p->shift;
	x = (x * p->key[2]) & p->mask;
	x ^= x >> p->shift;
	return x;
}

uint64_t bench_perm_next(struct bench_perm *p)
{
	for (;;) {
		uint64_t x;

		if (p->counter > p->mask) {
			p->counter = 0;
			perm_rekey(p);
		}
		x = perm_mix(p, p->counter++);
		if (x < p->n)
			return x;
	}
}

void bench_workload_init(struct bench_workload *w, enum bench_rw rw, unsigned rwmixread,
			 uint64_t nblocks, bool norandommap, uint64_t seed)
{
	w->rw = rw;
	w->rwmixread = rwmixread;
	w->nblocks = nblocks ? nblocks : 1;
	w->norandommap = norandommap;
	bench_rand_seed(&w->rng, seed ^ 0x5eed);
	bench_perm_init(&w->perm, w->nblocks, seed);
	w->seq_next[BENCH_READ] = 0;
	w->seq_next[BENCH_WRITE] = 0;
}

void bench_workload_next(struct bench_workload *w, enum bench_ddir *ddir, uint64_t *block)
{
	enum bench_ddir d;

	switch (w->rw) {
	case BENCH_RW_READ:
	case BENCH_RW_RANDREAD:
		d = BENCH_READ;
		break;
	case BENCH_RW_WRITE:
	case BENCH_RW_RANDWRITE:
		d = BENCH_WRITE;
		break;
	default:
		d = bench_rand_next(&w->rng) % 100 < w->rwmixread ? BENCH_READ : BENCH_WRITE;
		break;
	}
	*ddir = d;
	if (!bench_rw_is_random(w->rw)) {
		*block = w->seq_next[d];
		w->seq_next[d] = *block + 1 >= w->nblocks ? 0 : *block + 1;
	} else if (w->norandommap) {
		*block = (uint64_t)(((unsigned __int128)bench_rand_next(&w->rng) * w->nblocks) >> 64);
	} else {
		*block = bench_perm_next(&w->perm);
	}
}
