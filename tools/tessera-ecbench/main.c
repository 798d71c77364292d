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
 * Both use the same memory.  Decode (tsr_ec_decode, tables cached per
 * pattern) is measured with 1 and with m data chunks missing.  The four
 * measurements run in rotating slices, so a change of load on the machine
 * hits them alike, and each figure is GB/s (10^9 bytes) of stripe data
 * (k x chunk) per second of this thread's CPU time: time the thread spent
 * descheduled by other processes does not count (the wall-clock figures are
 * in the JSON output too).
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

#define SLICES    10u                 /* rounds of the four measurements */
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

/* One measurement: stripes processed, and the time they took. */
struct tally {
	uint64_t stripes;
	double cpu_seconds;  /* CPU time of the benchmark thread (the figure) */
	double wall_seconds; /* wall clock (differs when other processes load the CPU) */
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
		"Measurements (GB/s = 10^9 bytes of stripe data, K x chunk, per second of\n"
		"the benchmark thread's CPU time):\n"
		"  encode bare    ec_init_tables once, then ec_encode_data on the same buffers\n"
		"  encode engine  tsr_ec_encode per stripe as the EC layout calls it (K data\n"
		"                 pointers into one stripe buffer, M parity buffers); the\n"
		"                 ratio engine/bare is the overhead of the engine's path\n"
		"                 (issue 4 target: >= 0.8)\n"
		"  decode 1       tsr_ec_decode rebuilding data chunk 0 from K others\n"
		"  decode M       tsr_ec_decode rebuilding M chunks (data first) at once\n"
		"The four run in %u rotating slices so a load change on the machine hits\n"
		"them alike; CPU time leaves out time other processes took the CPU, but\n"
		"they still share caches and memory: prefer an idle machine.\n"
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

static double clock_s(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_s(void)
{
	return clock_s(CLOCK_MONOTONIC);
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
		memset(b->spare[j], 0, o->chunk);
	}
	/* Data that is not all zeros; its value does not change the speed. */
	for (size_t i = 0; i < k * o->chunk; i++)
		b->stripe[i] = (uint8_t)(i * 2654435761u >> 13);
	for (unsigned d = 0; d < k; d++)
		b->data_ptr[d] = b->stripe + d * o->chunk;
	/* The bare loop uses the same matrix as the engine (ec_codec.c). */
	gf_gen_cauchy1_matrix(b->matrix, (int)(k + m), (int)k);
	ec_init_tables((int)k, (int)m, b->matrix + k * k, b->tables);
	return tsr_ec_codec_create(k, m, &b->codec);
}

static void step_bare(struct bench *b)
{
	ec_encode_data((int)b->o->chunk, (int)b->o->k, (int)b->o->m, b->tables, b->data_ptr,
		       b->parity);
}

static void step_engine(struct bench *b)
{
	/* per stripe, as the layout does: pointers into the stripe buffer */
	const uint8_t *data[TSR_EC_MAX_K];

	for (unsigned d = 0; d < b->o->k; d++)
		data[d] = b->stripe + d * b->o->chunk;
	tsr_ec_encode(b->codec, b->o->chunk, data, b->parity);
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

static int step_decode(struct bench *b, uint32_t missing)
{
	uint32_t all = (1u << (b->o->k + b->o->m)) - 1;
	uint8_t *chunks[TSR_EC_MAX_K + TSR_EC_MAX_M];

	decode_chunks(b, missing, chunks);
	return tsr_ec_decode(b->codec, b->o->chunk, chunks, all & ~missing, missing);
}

/* After a decode of missing: 0 when the rebuilt chunks equal the originals
 * (the encode steps left the parity of the stripe in b->parity), else -EIO. */
static int check_decode(struct bench *b, uint32_t missing)
{
	uint8_t *chunks[TSR_EC_MAX_K + TSR_EC_MAX_M];

	decode_chunks(b, missing, chunks);
	for (unsigned p = 0; p < b->o->k + b->o->m; p++) {
		const uint8_t *orig;

		if (!(missing & (1u << p)))
			continue;
		orig = p < b->o->k ? b->stripe + p * b->o->chunk : b->parity[p - b->o->k];
		if (memcmp(chunks[p], orig, b->o->chunk) != 0)
			return -EIO;
	}
	return 0;
}

enum meas { M_BARE, M_ENGINE, M_DECODE_1, M_DECODE_M, M_COUNT };

/* Run measurement w until the wall clock reaches until (at least one step);
 * count its stripes and the CPU time of this thread it took. */
static int run_slice(struct bench *b, enum meas w, uint32_t missing_m, double until,
		     struct tally *t)
{
	double c0 = clock_s(CLOCK_THREAD_CPUTIME_ID), w0 = now_s(), w1;
	int ret = 0;

	do {
		switch (w) {
		case M_BARE:
			step_bare(b);
			break;
		case M_ENGINE:
			step_engine(b);
			break;
		case M_DECODE_1:
			ret = step_decode(b, 1u);
			break;
		default:
			ret = step_decode(b, missing_m);
			break;
		}
		if (ret)
			return ret;
		t->stripes++;
		w1 = now_s();
	} while (w1 < until);
	t->cpu_seconds += clock_s(CLOCK_THREAD_CPUTIME_ID) - c0;
	t->wall_seconds += w1 - w0;
	return 0;
}

static double gbps_of(const struct bench *b, uint64_t stripes, double seconds)
{
	return seconds > 0 ? (double)stripes * b->o->k * b->o->chunk / seconds / 1e9 : 0;
}

static double gbps(const struct bench *b, const struct tally *t)
{
	return gbps_of(b, t->stripes, t->cpu_seconds);
}

static double wall_gbps(const struct bench *b, const struct tally *t)
{
	return gbps_of(b, t->stripes, t->wall_seconds);
}

int main(int argc, char **argv)
{
	static const char *const names[M_COUNT] = {"encode_bare", "encode_engine", "decode_1",
						   "decode_m"};
	struct tally t[M_COUNT] = {{0}};
	struct options o;
	struct bench b;
	uint32_t missing_m = 0;
	unsigned n;
	int ret = 0;

	if (parse_options(argc, argv, &o) != 0)
		return 2;
	n = o.k + o.m;
	/* m missing: data chunks first (the costly case), parity when m > k */
	for (unsigned p = 0; p < n && p < o.m; p++)
		missing_m |= 1u << p;
	ret = bench_init(&b, &o);
	if (ret) {
		fprintf(stderr, "tessera-ecbench: setting up %u+%u with %zu-byte chunks: %s\n", o.k,
			o.m, o.chunk, strerror(-ret));
		bench_free(&b);
		return 1;
	}
	/* Warm every path once (page faults, decode tables); then the four
	 * measurements in SLICES rounds, each round starting with the next one,
	 * so a change of load on the machine hits them alike. */
	for (unsigned w = 0; w < M_COUNT && !ret; w++)
		ret = run_slice(&b, (enum meas)w, missing_m, 0, &(struct tally){0});
	for (unsigned s = 0; s < SLICES && !ret; s++) {
		for (unsigned i = 0; i < M_COUNT && !ret; i++) {
			enum meas w = (enum meas)((s + i) % M_COUNT);

			ret = run_slice(&b, w, missing_m, now_s() + o.seconds / SLICES, &t[w]);
		}
	}
	if (!ret) {
		step_engine(&b);
		step_decode(&b, 1u);
		ret = check_decode(&b, 1u);
		if (!ret)
			ret = step_decode(&b, missing_m);
		if (!ret)
			ret = check_decode(&b, missing_m);
	}
	if (ret) {
		fprintf(stderr, "tessera-ecbench: decode %u+%u: %s\n", o.k, o.m,
			ret == -EIO ? "rebuilt chunks differ from the originals (codec bug)"
				    : strerror(-ret));
		bench_free(&b);
		return 1;
	}

	if (o.json) {
		char ec[16];
		json_t *j, *wall;

		snprintf(ec, sizeof(ec), "%u+%u", o.k, o.m);
		j = json_pack(
		    "{s:s, s:i, s:i, s:I, s:f, s:{s:f, s:f, s:f, s:I, s:I}, "
		    "s:{s:f, s:i, s:f}}",
		    "ec", ec, "k", (int)o.k, "m", (int)o.m, "chunk", (json_int_t)o.chunk, "seconds",
		    o.seconds, "encode", "bare_gbps", gbps(&b, &t[M_BARE]), "engine_gbps",
		    gbps(&b, &t[M_ENGINE]), "ratio",
		    gbps(&b, &t[M_BARE]) > 0 ? gbps(&b, &t[M_ENGINE]) / gbps(&b, &t[M_BARE]) : 0.0,
		    "bare_stripes", (json_int_t)t[M_BARE].stripes, "engine_stripes",
		    (json_int_t)t[M_ENGINE].stripes, "decode", "missing_1_gbps",
		    gbps(&b, &t[M_DECODE_1]), "missing_m", (int)o.m, "missing_m_gbps",
		    gbps(&b, &t[M_DECODE_M]));
		wall = json_object();
		for (unsigned w = 0; j && wall && w < M_COUNT; w++)
			json_object_set_new(wall, names[w], json_real(wall_gbps(&b, &t[w])));
		if (!j || !wall || json_object_set_new(j, "wall_clock_gbps", wall) != 0) {
			fprintf(stderr, "tessera-ecbench: building the JSON report failed\n");
			json_decref(j);
			bench_free(&b);
			return 1;
		}
		json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		fputc('\n', stdout);
		json_decref(j);
	} else {
		char sz[32], label[40];
		double cpu = 0, wallt = 0;

		for (unsigned w = 0; w < M_COUNT; w++) {
			cpu += t[w].cpu_seconds;
			wallt += t[w].wall_seconds;
		}
		printf("tessera-ecbench: %u+%u, chunk %s, %.1f s per measurement; GB/s of stripe "
		       "data per CPU second\n",
		       o.k, o.m, tsr_format_size(o.chunk, sz, sizeof(sz)), o.seconds);
		snprintf(label, sizeof(label), "decode, m=%u missing", o.m);
		printf("  %-31s %8.2f GB/s\n", "encode bare   (ec_encode_data)",
		       gbps(&b, &t[M_BARE]));
		printf("  %-31s %8.2f GB/s   %.2fx bare\n", "encode engine (tsr_ec_encode)",
		       gbps(&b, &t[M_ENGINE]),
		       gbps(&b, &t[M_BARE]) > 0 ? gbps(&b, &t[M_ENGINE]) / gbps(&b, &t[M_BARE])
						: 0.0);
		printf("  %-31s %8.2f GB/s\n", "decode, 1 chunk missing", gbps(&b, &t[M_DECODE_1]));
		printf("  %-31s %8.2f GB/s\n", label, gbps(&b, &t[M_DECODE_M]));
		printf("  (this thread ran %.0f%% of the wall-clock time)\n",
		       wallt > 0 ? 100 * cpu / wallt : 0.0);
	}
	bench_free(&b);
	return 0;
}
