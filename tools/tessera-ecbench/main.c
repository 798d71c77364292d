/*
 * tessera-ecbench: erasure-coding throughput of the engine's codec against
 * the bare ISA-L loop, side by side in one run (issue 4: the engine's
 * stripe path must reach >= 0.8x the bare ec_encode_data loop).
 *
 * bare    ec_init_tables once, then ec_encode_data over the same k data and
 *         m parity buffers again and again;
 * engine  per stripe what the EC layout does: k data pointers into one
 *         contiguous stripe buffer (chunk d at d * chunk), m parity buffers,
 *         tsr_ec_encode through a struct tsr_ec_codec.
 * Both use the same memory, and run in alternating slices so that load from
 * other processes hits both alike.  Decode (tsr_ec_decode, tables cached per
 * pattern) is measured with 1 and with m data chunks missing.  Every figure
 * is GB/s (10^9 bytes/s) of stripe data (k x chunk) per second.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <isa-l/erasure_code.h>
#include <jansson.h>

#include "tessera/common.h"
#include "tessera/ec.h"

#define SLICES    10u                 /* alternations of bare and engine */
#define MAX_CHUNK (64u * 1024 * 1024) /* bytes per chunk, ISA-L takes an int length */

struct options {
	unsigned k, m;  /* tsr_ec_parse */
	size_t chunk;   /* bytes per chunk: multiple of 64, <= MAX_CHUNK */
	double seconds; /* per measurement, > 0 */
	bool json;
};

/* Buffers shared by every measurement. */
struct bench {
	const struct options *o;
	uint8_t *stripe;                 /* k * chunk: the data, contiguous */
	uint8_t *parity[TSR_EC_MAX_M];   /* m chunks */
	uint8_t *spare[TSR_EC_MAX_M];    /* m chunks: decode output */
	uint8_t *data_ptr[TSR_EC_MAX_K]; /* stripe + d * chunk (the bare loop's array) */
	uint8_t matrix[(TSR_EC_MAX_K + TSR_EC_MAX_M) * TSR_EC_MAX_K];
	uint8_t tables[32 * TSR_EC_MAX_K * TSR_EC_MAX_M]; /* bare loop's tables */
	struct tsr_ec_codec *codec;
};

/* One measurement: bytes of stripe data processed and seconds spent. */
struct tally {
	uint64_t stripes;
	double seconds;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: tessera-ecbench [--ec K+M] [--chunk SIZE] [--seconds S] [--json]\n"
		"\n"
		"Erasure-coding throughput on this CPU: the engine's stripe path against\n"
		"the bare ISA-L loop, measured side by side in one run.\n"
		"\n"
		"  --ec K+M       code to measure: 1 <= K <= %u data chunks, 1 <= M <= %u\n"
		"                 parity chunks (default 4+2)\n"
		"  --chunk SIZE   bytes per chunk, the volume's stripe unit; k/m suffixes are\n"
		"                 binary, a multiple of 64 up to 64m (default 64k)\n"
		"  --seconds S    time spent on each of the four measurements (default 1)\n"
		"  --json         one JSON object on stdout instead of the table\n"
		"  -h, --help     this text\n"
		"\n"
		"Measurements (each GB/s = 10^9 bytes of stripe data, K x chunk, per second):\n"
		"  encode bare    ec_init_tables once, then ec_encode_data on the same buffers\n"
		"  encode engine  tsr_ec_encode per stripe as the EC layout calls it (K data\n"
		"                 pointers into one stripe buffer, M parity buffers); the\n"
		"                 ratio engine/bare is the overhead of the engine's path\n"
		"                 (issue 4 target: >= 0.8)\n"
		"  decode 1       tsr_ec_decode rebuilding data chunk 0 from K others\n"
		"  decode M       tsr_ec_decode rebuilding M chunks (data first) at once\n"
		"Bare and engine run in %u alternating slices so a load change on the\n"
		"machine hits both alike; run it on an idle machine for absolute figures.\n"
		"\n"
		"Examples:\n"
		"  tessera-ecbench --ec 8+3 --chunk 1m\n"
		"  tessera-ecbench --ec 4+2 --seconds 3 --json | jq .encode.ratio\n"
		"\n"
		"Exit status: 0, 1 on a decode that does not match the data, 2 on bad options.\n",
		TSR_EC_MAX_K, TSR_EC_MAX_M, SLICES);
}

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
	    {"ec", required_argument, NULL, 'e'},      {"chunk", required_argument, NULL, 'c'},
	    {"seconds", required_argument, NULL, 's'}, {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
	};
	uint64_t size;
	char *end;
	int opt;

	*o = (struct options){.k = 4, .m = 2, .chunk = 64 * 1024, .seconds = 1.0};
	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'e':
			if (tsr_ec_parse(optarg, &o->k, &o->m) != 0) {
				fprintf(
				    stderr,
				    "tessera-ecbench: --ec '%s': want K+M with 1 <= K <= %u and "
				    "1 <= M <= %u, e.g. 4+2\n",
				    optarg, TSR_EC_MAX_K, TSR_EC_MAX_M);
				return -EINVAL;
			}
			break;
		case 'c':
			if (tsr_parse_size(optarg, &size) != 0 || size == 0 || size % 64 ||
			    size > MAX_CHUNK) {
				fprintf(
				    stderr,
				    "tessera-ecbench: --chunk '%s': want a multiple of 64 bytes "
				    "up to 64m, e.g. 64k or 1m\n",
				    optarg);
				return -EINVAL;
			}
			o->chunk = (size_t)size;
			break;
		case 's':
			errno = 0;
			o->seconds = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(o->seconds > 0) ||
			    o->seconds > 3600) {
				fprintf(stderr,
					"tessera-ecbench: --seconds '%s': want a number of seconds "
					"in (0, 3600]\n",
					optarg);
				return -EINVAL;
			}
			break;
		case 'j':
			o->json = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			fprintf(stderr, "tessera-ecbench: see --help\n");
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "tessera-ecbench: unexpected argument '%s' (see --help)\n",
			argv[optind]);
		return -EINVAL;
	}
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bench_free(struct bench *b)
{
	tsr_free_aligned(b->stripe);
	for (unsigned j = 0; j < TSR_EC_MAX_M; j++) {
		tsr_free_aligned(b->parity[j]);
		tsr_free_aligned(b->spare[j]);
	}
	tsr_ec_codec_destroy(b->codec);
}

static int bench_init(struct bench *b, const struct options *o)
{
	unsigned k = o->k, m = o->m;
	int ret;

	memset(b, 0, sizeof(*b));
	b->o = o;
	b->stripe = tsr_alloc_aligned(k * o->chunk);
	if (!b->stripe)
		return -ENOMEM;
	for (unsigned j = 0; j < m; j++) {
		b->parity[j] = tsr_alloc_aligned(o->chunk);
		b->spare[j] = tsr_alloc_aligned(o->chunk);
		if (!b->parity[j] || !b->spare[j])
			return -ENOMEM;
		memset(b->parity[j], 0, o->chunk);
	}
	/* Data that is not all zeros; its value does not change the speed. */
	for (size_t i = 0; i < k * o->chunk; i++)
		b->stripe[i] = (uint8_t)(i * 2654435761u >> 13);
	for (unsigned d = 0; d < k; d++)
		b->data_ptr[d] = b->stripe + d * o->chunk;
	/* The bare loop uses the same matrix as the engine (ec_codec.c). */
	gf_gen_cauchy1_matrix(b->matrix, (int)(k + m), (int)k);
	ec_init_tables((int)k, (int)m, b->matrix + k * k, b->tables);
	ret = tsr_ec_codec_create(k, m, &b->codec);
	return ret;
}

static void run_bare(struct bench *b, double until, struct tally *t)
{
	double t0 = now_s(), t1;

	do {
		ec_encode_data((int)b->o->chunk, (int)b->o->k, (int)b->o->m, b->tables, b->data_ptr,
			       b->parity);
		t->stripes++;
		t1 = now_s();
	} while (t1 < until);
	t->seconds += t1 - t0;
}

static void run_engine(struct bench *b, double until, struct tally *t)
{
	double t0 = now_s(), t1;

	do {
		/* per stripe, as the layout does: pointers into the stripe buffer */
		const uint8_t *data[TSR_EC_MAX_K];

		for (unsigned d = 0; d < b->o->k; d++)
			data[d] = b->stripe + d * b->o->chunk;
		tsr_ec_encode(b->codec, b->o->chunk, data, b->parity);
		t->stripes++;
		t1 = now_s();
	} while (t1 < until);
	t->seconds += t1 - t0;
}

/* chunks[] for a decode: data in the stripe, parity, and the missing ones
 * pointed at spare buffers.  missing: bitmask, at most m bits. */
static void decode_chunks(struct bench *b, uint32_t missing, uint8_t **chunks)
{
	unsigned n = b->o->k + b->o->m, s = 0;

	for (unsigned p = 0; p < n; p++) {
		if (missing & (1u << p))
			chunks[p] = b->spare[s++];
		else
			chunks[p] =
			    p < b->o->k ? b->stripe + p * b->o->chunk : b->parity[p - b->o->k];
	}
}

/* Rebuild the chunks in missing for seconds; -EIO when they do not match. */
static int run_decode(struct bench *b, uint32_t missing, double seconds, struct tally *t)
{
	unsigned n = b->o->k + b->o->m;
	uint32_t all = (1u << n) - 1;
	uint8_t *chunks[TSR_EC_MAX_K + TSR_EC_MAX_M];
	double t0, t1, until;
	int ret;

	decode_chunks(b, missing, chunks);
	t0 = now_s();
	until = t0 + seconds;
	do {
		ret = tsr_ec_decode(b->codec, b->o->chunk, chunks, all & ~missing, missing);
		if (ret)
			return ret;
		t->stripes++;
		t1 = now_s();
	} while (t1 < until);
	t->seconds += t1 - t0;
	/* the rebuilt chunks must equal what they replace */
	for (unsigned p = 0; p < n; p++) {
		const uint8_t *orig;

		if (!(missing & (1u << p)))
			continue;
		orig = p < b->o->k ? b->stripe + p * b->o->chunk : b->parity[p - b->o->k];
		if (memcmp(chunks[p], orig, b->o->chunk) != 0)
			return -EIO;
	}
	return 0;
}

static double gbps(const struct bench *b, const struct tally *t)
{
	return t->seconds > 0 ? (double)t->stripes * b->o->k * b->o->chunk / t->seconds / 1e9 : 0;
}

int main(int argc, char **argv)
{
	struct tally bare = {0}, engine = {0}, dec1 = {0}, decm = {0};
	struct options o;
	struct bench b;
	uint32_t missing_m = 0;
	unsigned n;
	int ret;

	if (parse_options(argc, argv, &o) != 0)
		return 2;
	n = o.k + o.m;
	ret = bench_init(&b, &o);
	if (ret) {
		fprintf(stderr, "tessera-ecbench: setting up %u+%u with %zu-byte chunks: %s\n", o.k,
			o.m, o.chunk, strerror(-ret));
		bench_free(&b);
		return 1;
	}
	/* Warm both paths once (page faults, table cache), then alternate. */
	run_bare(&b, 0, &(struct tally){0});
	run_engine(&b, 0, &(struct tally){0});
	for (unsigned s = 0; s < SLICES; s++) {
		double slice = o.seconds / SLICES;

		if (s & 1) {
			run_engine(&b, now_s() + slice, &engine);
			run_bare(&b, now_s() + slice, &bare);
		} else {
			run_bare(&b, now_s() + slice, &bare);
			run_engine(&b, now_s() + slice, &engine);
		}
	}
	/* m missing: data chunks first (the costly case), parity if m > k */
	for (unsigned p = 0, c = 0; p < n && c < o.m; p++, c++)
		missing_m |= 1u << p;
	ret = run_decode(&b, 1u, o.seconds, &dec1);
	if (!ret)
		ret = run_decode(&b, missing_m, o.seconds, &decm);
	if (ret) {
		fprintf(stderr, "tessera-ecbench: decode %u+%u: %s\n", o.k, o.m,
			ret == -EIO ? "rebuilt chunks differ from the originals (codec bug)"
				    : strerror(-ret));
		bench_free(&b);
		return 1;
	}

	if (o.json) {
		char ec[16];
		json_t *j;

		snprintf(ec, sizeof(ec), "%u+%u", o.k, o.m);
		j = json_pack("{s:s, s:i, s:i, s:I, s:f, s:{s:f, s:f, s:f, s:I, s:I}, "
			      "s:{s:f, s:i, s:f}}",
			      "ec", ec, "k", (int)o.k, "m", (int)o.m, "chunk", (json_int_t)o.chunk,
			      "seconds", o.seconds, "encode", "bare_gbps", gbps(&b, &bare),
			      "engine_gbps", gbps(&b, &engine), "ratio",
			      gbps(&b, &bare) > 0 ? gbps(&b, &engine) / gbps(&b, &bare) : 0.0,
			      "bare_stripes", (json_int_t)bare.stripes, "engine_stripes",
			      (json_int_t)engine.stripes, "decode", "missing_1_gbps",
			      gbps(&b, &dec1), "missing_m", (int)o.m, "missing_m_gbps",
			      gbps(&b, &decm));
		if (!j) {
			fprintf(stderr, "tessera-ecbench: building the JSON report failed\n");
			bench_free(&b);
			return 1;
		}
		json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		fputc('\n', stdout);
		json_decref(j);
	} else {
		char sz[32];

		printf("tessera-ecbench: %u+%u, chunk %s, %.1f s per measurement\n", o.k, o.m,
		       tsr_format_size(o.chunk, sz, sizeof(sz)), o.seconds);
		printf("  encode bare   (ec_encode_data)  %8.2f GB/s\n", gbps(&b, &bare));
		printf("  encode engine (tsr_ec_encode)   %8.2f GB/s   %.2fx bare\n",
		       gbps(&b, &engine),
		       gbps(&b, &bare) > 0 ? gbps(&b, &engine) / gbps(&b, &bare) : 0.0);
		printf("  decode, 1 chunk missing         %8.2f GB/s\n", gbps(&b, &dec1));
		printf("  decode, %u chunk%s missing        %8.2f GB/s\n", o.m, o.m > 1 ? "s" : " ",
		       gbps(&b, &decm));
	}
	bench_free(&b);
	return 0;
}
