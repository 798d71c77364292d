/*
 * Erasure-coding codec (include/tessera/ec.h): a thin wrapper over ISA-L's
 * Reed-Solomon over GF(2^8), and the "K+M" / stripe-unit checks.
 *
 * Matrix: ISA-L's Cauchy matrix (gf_gen_cauchy1_matrix), identity on top
 * (data chunks are stored as they are) and 1/(i ^ j) below.  Every square
 * submatrix of it is invertible, so any k of the k+m chunks decode, for
 * every k <= 16, m <= 4, by construction.  (ISA-L's Vandermonde
 * gf_gen_rs_matrix is not invertible for every pattern in general; it does
 * pass tests/unit/engine/layout/ec_codec_ut.c at m <= 4, but Cauchy needs no
 * such check and costs the same.)  The parity bytes on disk are a function
 * of this matrix: changing it is an on-disk format change.
 *
 * Decode: the k x k submatrix of the rows of the chosen k present chunks is
 * inverted; a wanted data chunk's row is the matching row of the inverse, a
 * wanted parity chunk's row is its encode row times the inverse; ISA-L
 * expands the rows into tables and computes all wanted chunks in one pass.
 * A layout with a node down decodes the same pattern over and over, so the
 * tables are cached per (sources, wanted) pattern in a small LRU.
 *
 * Update (parity delta): parity is linear in each data chunk, so the new
 * parity is the old one plus the encode of (old ^ new) in that column
 * (ec_encode_data_update with the encode tables).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l/erasure_code.h>

#include "tessera/ec.h"

#define N_MAX                (TSR_EC_MAX_K + TSR_EC_MAX_M)
#define DECODE_CACHE         16u
#define TABLE_BYTES(k, rows) (32u * (k) * (rows))

/* Decode tables for one pattern. */
struct decode_entry {
	uint32_t sources;          /* the k positions read (bitmask); 0: entry unused */
	uint32_t outputs;          /* the positions computed (bitmask), disjoint from sources */
	uint64_t last_use;         /* codec->tick at the last lookup that hit or filled it */
	unsigned n_out;            /* popcount(outputs), 1..m */
	uint8_t src[TSR_EC_MAX_K]; /* sources in increasing order (k of them) */
	uint8_t out[TSR_EC_MAX_M]; /* outputs in increasing order (n_out of them) */
	uint8_t tables[TABLE_BYTES(TSR_EC_MAX_K, TSR_EC_MAX_M)]; /* ec_init_tables(k, n_out) */
};

struct tsr_ec_codec {
	unsigned k, m;                        /* 1..TSR_EC_MAX_K, 1..TSR_EC_MAX_M */
	uint8_t matrix[N_MAX * TSR_EC_MAX_K]; /* (k+m) x k encode matrix, row-major */
	uint8_t enc_tables[TABLE_BYTES(TSR_EC_MAX_K, TSR_EC_MAX_M)]; /* rows k..k+m-1 */
	uint64_t tick;                       /* lookups so far (LRU clock) */
	uint64_t decode_hits, decode_misses; /* cache counters (tests, debugging) */
	struct decode_entry cache[DECODE_CACHE];
};

/* ---- "K+M" and the stripe unit ---------------------------------------------- */

/* Decimal digits at *p up to the first non-digit, at most `max`; -1 when none or too big. */
static long parse_small(const char **p, long max)
{
	const char *s = *p;
	long v = 0;

	if (*s < '0' || *s > '9')
		return -1;
	while (*s >= '0' && *s <= '9') {
		v = v * 10 + (*s - '0');
		if (v > max)
			return -1; /* also stops overflow on long digit strings */
		s++;
	}
	*p = s;
	return v;
}

int tsr_ec_parse(const char *s, unsigned *k, unsigned *m)
{
	long kv, mv;

	if (!s)
		return -EINVAL;
	kv = parse_small(&s, TSR_EC_MAX_K);
	if (kv < 1 || *s != '+')
		return -EINVAL;
	s++;
	mv = parse_small(&s, TSR_EC_MAX_M);
	if (mv < 1 || *s != '\0')
		return -EINVAL;
	*k = (unsigned)kv;
	*m = (unsigned)mv;
	return 0;
}

bool tsr_ec_unit_valid(uint32_t unit)
{
	return unit >= TSR_EC_MIN_UNIT && unit <= TSR_EC_MAX_UNIT && (unit & (unit - 1)) == 0;
}

/* ---- codec ------------------------------------------------------------------ */

int tsr_ec_codec_create(unsigned k, unsigned m, struct tsr_ec_codec **out)
{
	struct tsr_ec_codec *c;

	if (k < 1 || k > TSR_EC_MAX_K || m < 1 || m > TSR_EC_MAX_M)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->k = k;
	c->m = m;
	gf_gen_cauchy1_matrix(c->matrix, (int)(k + m), (int)k);
	ec_init_tables((int)k, (int)m, c->matrix + k * k, c->enc_tables);
	*out = c;
	return 0;
}

void tsr_ec_codec_destroy(struct tsr_ec_codec *c)
{
	free(c);
}

void tsr_ec_encode(struct tsr_ec_codec *c, size_t len, const uint8_t *const *data,
		   uint8_t *const *parity)
{
	/* ISA-L only reads the sources and writes through the parity pointers;
	 * its prototype just lacks the const. */
	ec_encode_data((int)len, (int)c->k, (int)c->m, c->enc_tables, (unsigned char **)data,
		       (unsigned char **)parity);
}

/* Build the decode tables of e (sources and outputs set).  0, or -EIO when
 * the submatrix is singular (cannot happen with a Cauchy matrix). */
static int decode_entry_fill(struct tsr_ec_codec *c, struct decode_entry *e)
{
	uint8_t sub[TSR_EC_MAX_K * TSR_EC_MAX_K], inv[TSR_EC_MAX_K * TSR_EC_MAX_K];
	uint8_t rows[TSR_EC_MAX_M * TSR_EC_MAX_K];
	unsigned k = c->k;

	for (unsigned i = 0; i < k; i++)
		memcpy(sub + i * k, c->matrix + e->src[i] * k, k);
	if (gf_invert_matrix(sub, inv, (int)k) != 0)
		return -EIO;
	for (unsigned o = 0; o < e->n_out; o++) {
		unsigned p = e->out[o];
		uint8_t *row = rows + o * k;

		if (p < k) {
			memcpy(row, inv + p * k, k);
			continue;
		}
		/* parity p = E[p] . data = E[p] . inv . sources */
		for (unsigned j = 0; j < k; j++) {
			uint8_t s = 0;

			for (unsigned i = 0; i < k; i++)
				s ^= gf_mul(c->matrix[p * k + i], inv[i * k + j]);
			row[j] = s;
		}
	}
	ec_init_tables((int)k, (int)e->n_out, rows, e->tables);
	return 0;
}

/* Cached tables for (sources, outputs), building them on a miss into the
 * least recently used entry.  NULL only if the matrix were singular. */
static struct decode_entry *decode_lookup(struct tsr_ec_codec *c, uint32_t sources,
					  uint32_t outputs)
{
	struct decode_entry *e, *victim = &c->cache[0];
	unsigned n = c->k + c->m, ns = 0, no = 0;

	c->tick++;
	for (unsigned i = 0; i < DECODE_CACHE; i++) {
		e = &c->cache[i];
		if (e->sources == sources && e->outputs == outputs) {
			e->last_use = c->tick;
			c->decode_hits++;
			return e;
		}
		if (e->last_use < victim->last_use)
			victim = e;
	}
	c->decode_misses++;
	e = victim;
	e->sources = sources;
	e->outputs = outputs;
	e->last_use = c->tick;
	for (unsigned p = 0; p < n; p++) {
		if (sources & (1u << p))
			e->src[ns++] = (uint8_t)p;
		else if (outputs & (1u << p))
			e->out[no++] = (uint8_t)p;
	}
	e->n_out = no;
	if (decode_entry_fill(c, e) != 0) {
		e->sources = e->outputs = 0;
		e->last_use = 0;
		return NULL;
	}
	return e;
}

int tsr_ec_decode(struct tsr_ec_codec *c, size_t len, uint8_t *const *chunks, uint32_t present,
		  uint32_t want)
{
	unsigned n = c->k + c->m, picked = 0;
	uint32_t all = (n >= 32) ? UINT32_MAX : ((1u << n) - 1), sources = 0, outputs;
	uint8_t *src[TSR_EC_MAX_K], *out[TSR_EC_MAX_M];
	struct decode_entry *e;

	if ((present & ~all) || (want & ~all) || (unsigned)__builtin_popcount(present) < c->k)
		return -EINVAL;
	outputs = want & ~present;
	if (!outputs)
		return 0;
	/* The first k present positions: data chunks first, so a stripe with
	 * only parity missing reads exactly its data. */
	for (unsigned p = 0; p < n && picked < c->k; p++) {
		if (present & (1u << p)) {
			sources |= 1u << p;
			picked++;
		}
	}
	e = decode_lookup(c, sources, outputs);
	if (!e)
		return -EIO;
	for (unsigned i = 0; i < c->k; i++)
		src[i] = chunks[e->src[i]];
	for (unsigned o = 0; o < e->n_out; o++)
		out[o] = chunks[e->out[o]];
	ec_encode_data((int)len, (int)c->k, (int)e->n_out, e->tables, src, out);
	return 0;
}

void tsr_ec_update(struct tsr_ec_codec *c, size_t len, unsigned d, const uint8_t *old_data,
		   const uint8_t *new_data, uint8_t *const *parity, uint8_t *scratch)
{
	size_t i = 0;

	/* memcpy keeps the 64-bit loads legal at any alignment; compilers turn
	 * it into plain (vector) loads. */
	for (; i + 8 <= len; i += 8) {
		uint64_t a, b;

		memcpy(&a, old_data + i, 8);
		memcpy(&b, new_data + i, 8);
		a ^= b;
		memcpy(scratch + i, &a, 8);
	}
	for (; i < len; i++)
		scratch[i] = old_data[i] ^ new_data[i];
	ec_encode_data_update((int)len, (int)c->k, (int)c->m, (int)d, c->enc_tables, scratch,
			      (unsigned char **)parity);
}
