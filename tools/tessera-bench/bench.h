/*
 * tessera-bench: a fio-style load generator for block targets (nbd:// and
 * nbd+unix:// URIs through libnbd, files and block devices through io_uring).
 *
 * Private header of tools/tessera-bench/, one section per source file.  The
 * parser, histogram, verify pattern, workload generator and reports form the
 * library tessera_bench_core (unit tested, no I/O); the engines, the job
 * loop and main() form the executable.
 */
#ifndef TESSERA_BENCH_H
#define TESSERA_BENCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define BENCH_VERSION "tessera-bench-0.1"
#define BENCH_MAX_IODEPTH 4096u
#define BENCH_MAX_NUMJOBS 256u
#define BENCH_MAX_BS (64u * 1024 * 1024)

enum bench_ddir { BENCH_READ = 0, BENCH_WRITE = 1, BENCH_NDDIR = 2 };

/* ---- options.c: option table, command line, job files, --help ---- */

enum bench_rw {
	BENCH_RW_READ,
	BENCH_RW_WRITE,
	BENCH_RW_RANDREAD,
	BENCH_RW_RANDWRITE,
	BENCH_RW_RW,       /* sequential mix, fio "readwrite" / "rw" */
	BENCH_RW_RANDRW,
};

enum bench_verify { BENCH_VERIFY_NONE, BENCH_VERIFY_CRC32C };
enum bench_format { BENCH_FMT_NORMAL, BENCH_FMT_JSON };
enum bench_eta { BENCH_ETA_AUTO, BENCH_ETA_ALWAYS, BENCH_ETA_NEVER };

/* One job's settings.  Plain values so a job is a struct copy of [global]. */
struct bench_opts {
	char name[128];         /* job name, reported as "jobname" */
	char filename[1024];    /* target: path or nbd URI; required */
	enum bench_rw rw;       /* default read, as fio */
	unsigned rwmixread;     /* % of reads in mixed workloads, 0..100 */
	uint64_t bs;            /* block size in bytes, > 0 */
	unsigned iodepth;       /* I/Os in flight per job, 1..BENCH_MAX_IODEPTH */
	unsigned numjobs;       /* clones of this job, one thread each */
	uint64_t size;          /* bytes of I/O and of the region; 0 = to end of target */
	unsigned size_pct;      /* size as % of the target when nonzero */
	uint64_t offset;        /* start of the region in bytes */
	unsigned offset_pct;    /* offset as % of the target when nonzero */
	uint64_t runtime_ns;    /* stop after this long; 0 = no limit */
	bool time_based;        /* keep looping over the region until runtime */
	uint64_t ramp_ns;       /* run this long before counting */
	enum bench_verify verify;
	bool do_verify;         /* read back and check after the writes (fio default 1) */
	bool direct;            /* accepted; files are always O_DIRECT */
	bool norandommap;       /* random offsets with replacement instead of a permutation */
	bool group_reporting;   /* merge every job into one report */
	uint64_t randseed;      /* seed of the offset generator */
	char ioengine[32];      /* "" = pick from the target; else io_uring or nbd */
};

/* What the command line and the job files produced. */
struct bench_config {
	struct bench_opts *jobs;   /* jobs in order, before numjobs expansion */
	size_t n_jobs;
	enum bench_format format;
	enum bench_eta eta;
	char output[1024];         /* --output file; "" = stdout */
	bool help;
	bool version;
};

/* Set cfg to defaults.  Never fails. */
void bench_config_init(struct bench_config *cfg);
void bench_config_free(struct bench_config *cfg);
/* Default settings of a job (fio's defaults). */
void bench_opts_defaults(struct bench_opts *o);

/*
 * Parse argv (fio style: --opt=value or --opt value; options before the
 * first --name are global; positional arguments are job files).  Returns 0,
 * or -EINVAL / -ENOENT / -ENOMEM with a message for the user in err.
 */
int bench_parse_args(struct bench_config *cfg, int argc, char **argv, char *err, size_t errlen);
/* Parse one job file's text (fio ini) on top of the global options *base.
 * path names the file in messages.  0 or -EINVAL/-ENOMEM with err set. */
int bench_parse_jobfile(struct bench_config *cfg, const struct bench_opts *base, const char *text,
			const char *path, char *err, size_t errlen);
/* Set one option by name on o ("bs", "4k").  Unknown name: -ENOENT; bad
 * value: -EINVAL; err says which. */
int bench_set_option(struct bench_opts *o, const char *key, const char *val, char *err,
		     size_t errlen);
/* Check one job's settings together.  0 or -EINVAL with err set. */
int bench_validate(const struct bench_opts *o, char *err, size_t errlen);

/* Value parsers, exposed for tests.  0 or -EINVAL/-ERANGE. */
int bench_parse_size(const char *s, uint64_t *bytes, unsigned *pct);
int bench_parse_time(const char *s, uint64_t *ns);
int bench_parse_bool(const char *s, bool *out);

/* Names for reports. */
const char *bench_rw_name(enum bench_rw rw);
bool bench_rw_is_random(enum bench_rw rw);
bool bench_rw_has(enum bench_rw rw, enum bench_ddir d);
bool bench_target_is_nbd(const char *filename);

void bench_print_help(FILE *f);

/* ---- histogram.c: log-linear latency histogram, ns ---- */

/* Values below 2^(BITS+1) have their own bucket; above, each power of two is
 * split into 2^BITS buckets, so a bucket is at most 1/128 (0.8%) wide. */
#define BENCH_HIST_BITS 7
#define BENCH_HIST_MAX_MSB 47 /* ~39 hours; longer latencies count in the last bucket */
#define BENCH_HIST_NBUCKETS ((BENCH_HIST_MAX_MSB - BENCH_HIST_BITS + 2) << BENCH_HIST_BITS)

struct bench_hist {
	uint64_t count;
	uint64_t min;       /* UINT64_MAX while empty */
	uint64_t max;
	double sum;         /* of values, for the mean */
	double sumsq;       /* of squared values, for the deviation */
	uint64_t buckets[BENCH_HIST_NBUCKETS];
};

void bench_hist_init(struct bench_hist *h);
void bench_hist_add(struct bench_hist *h, uint64_t v);
void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src);
unsigned bench_hist_index(uint64_t v);
uint64_t bench_hist_bucket_low(unsigned idx);
uint64_t bench_hist_bucket_width(unsigned idx);
/* Value at pct (0 < pct <= 100) of the samples; 0 when empty. */
uint64_t bench_hist_percentile(const struct bench_hist *h, double pct);
double bench_hist_mean(const struct bench_hist *h);
double bench_hist_stddev(const struct bench_hist *h);

/* The percentiles reported, as fio's defaults. */
extern const double bench_percentiles[];
extern const size_t bench_n_percentiles;

/* ---- verify.c: self-describing block pattern for --verify=crc32c ---- */

/*
 * Every bs-sized block written with --verify starts with this header
 * (little-endian), followed by the rest of the block:
 *   0  u32 magic   BENCH_VERIFY_MAGIC
 *   4  u32 crc     CRC32C of bytes [8, bs)
 *   8  u64 offset  byte offset of the block on the target
 *  16  u32 gen     write generation within the run (nonzero)
 *  20  u32 bs      block size the block was written with
 *  24  u64 seed    run seed, for telling runs apart in messages
 */
#define BENCH_VERIFY_MAGIC 0x31564254u /* "TBV1" */
#define BENCH_VERIFY_HDR 32u

/* Write the header for (offset, gen) into buf and seal it with the CRC. */
void bench_verify_fill(void *buf, uint32_t bs, uint64_t offset, uint32_t gen, uint64_t seed);
/* Check buf read from offset.  gen 0 = any generation.  0 if good; else
 * -EILSEQ and a description (offset, expected, actual) in msg. */
int bench_verify_check(const void *buf, uint32_t bs, uint64_t offset, uint32_t gen, char *msg,
		       size_t msglen);

/* ---- workload.c: offsets and directions ---- */

struct bench_rand {
	uint64_t s[2]; /* xoroshiro128+ state */
};
void bench_rand_seed(struct bench_rand *r, uint64_t seed);
uint64_t bench_rand_next(struct bench_rand *r);

/* A permutation of [0, n) walked one index at a time: every block once per
 * pass, a new order each pass (fio's random map, without the memory). */
struct bench_perm {
	uint64_t n;
	uint64_t mask;      /* 2^k - 1 >= n - 1 */
	unsigned shift;     /* k / 2, at least 1 */
	uint64_t key[3];    /* per-pass keys of the mixing function */
	uint64_t counter;   /* next input in [0, mask] */
	struct bench_rand rng;
};
void bench_perm_init(struct bench_perm *p, uint64_t n, uint64_t seed);
uint64_t bench_perm_next(struct bench_perm *p);

/* Picks the next (direction, block) of one job. */
struct bench_workload {
	enum bench_rw rw;
	unsigned rwmixread;
	uint64_t nblocks;          /* blocks in the region, >= 1 */
	bool norandommap;
	struct bench_rand rng;     /* directions, and offsets with norandommap */
	struct bench_perm perm;    /* random offsets */
	uint64_t seq_next[BENCH_NDDIR]; /* next block of sequential workloads */
};
void bench_workload_init(struct bench_workload *w, enum bench_rw rw, unsigned rwmixread,
			 uint64_t nblocks, bool norandommap, uint64_t seed);
void bench_workload_next(struct bench_workload *w, enum bench_ddir *ddir, uint64_t *block);

/* ---- report.c: fio-shaped normal and JSON reports ---- */

/* Bandwidth or IOPS samples taken every half second while the job runs. */
struct bench_samples {
	uint64_t n;
	double min, max, sum, sumsq;
};
void bench_samples_add(struct bench_samples *s, double v);

struct bench_dir_stats {
	uint64_t ios;
	uint64_t bytes;
	uint64_t runtime_ns;       /* time this direction ran, counted part only */
	struct bench_hist clat;    /* submit -> completion */
	struct bench_hist lat;     /* issue -> completion */
	struct bench_samples bw;   /* KiB/s */
	struct bench_samples iops;
};

/* One entry of "jobs": one job, or a merged group. */
struct bench_result {
	const struct bench_opts *opts;
	unsigned njobs;            /* jobs merged into this entry */
	int error;                 /* first errno that stopped a job, 0 if none */
	uint64_t verify_errors;
	uint64_t verified_blocks;
	uint64_t elapsed_ns;       /* wall time of the whole job including ramp and verify */
	double usr_cpu, sys_cpu;   /* % of elapsed */
	uint64_t ctx;              /* context switches */
	const char *engine;        /* "io_uring" or "nbd" */
	struct bench_dir_stats dir[BENCH_NDDIR];
};

void bench_result_merge(struct bench_result *dst, const struct bench_result *src);
/* "46.1k", "9855", "1.23M": fio's 4-significant-figure numbers. */
const char *bench_fmt_num(double v, char *buf, size_t len);
/* "180MiB/s" from bytes per second, binary units. */
const char *bench_fmt_bw(double bytes_per_s, bool si, char *buf, size_t len);
void bench_report_header(FILE *f, const struct bench_opts *o, const char *engine);
void bench_report_normal(FILE *f, const struct bench_result *r, size_t n);
void bench_report_json(FILE *f, const struct bench_result *r, size_t n, long long timestamp_ms);

/* ---- engine_uring.c, engine_nbd.c: targets ---- */

/* One I/O slot of a job; the engine owns it between queue and completion. */
struct bench_io {
	void *buf;                 /* bs bytes, aligned for O_DIRECT */
	uint64_t offset;
	uint32_t len;
	uint8_t ddir;              /* enum bench_ddir */
	uint8_t vmode;             /* 0 no check, 1 header, 2 header and gen */
	uint8_t counted;           /* issued after the ramp: goes into stats */
	uint8_t verify_phase;      /* read of the verify pass */
	uint32_t gen;              /* expected or written generation */
	uint32_t slot;             /* index in the job's slot array */
	uint64_t block;            /* block index in the region */
	uint64_t issue_ns;
	uint64_t submit_ns;
};

struct bench_target;
typedef void (*bench_complete_fn)(void *cb_arg, struct bench_io *io, int res);

/* A target backend.  One target per job thread; no function is thread-safe. */
struct bench_engine {
	const char *name;
	/* queue() itself sends the I/O (latency starts there), not submit() */
	bool queue_sends;
	/*
	 * Open filename for a job with depth slots whose buffers lie in
	 * [bufs, bufs + buf_len).  Sets *size to the target's size.  Files
	 * shorter than min_size are created or extended.  0 or -errno with a
	 * message in err.
	 */
	int (*open)(struct bench_target **t, const char *filename, unsigned depth, void *bufs,
		    size_t buf_len, uint64_t min_size, uint64_t *size, bench_complete_fn cb_fn,
		    void *cb_arg, char *err, size_t errlen);
	/* Async contract: returns 0 and cb_fn fires exactly once for io, from
	 * reap(); or returns -errno and cb_fn never fires for io. */
	int (*queue)(struct bench_target *t, struct bench_io *io);
	/* Send what queue() collected.  0 or -errno. */
	int (*submit)(struct bench_target *t);
	/* Wait until at least one I/O completes (if any is in flight) and run
	 * the completions that are ready.  0 or -errno. */
	int (*reap)(struct bench_target *t);
	/* Last error text of the engine for messages; may be NULL. */
	const char *(*strerror)(struct bench_target *t);
	void (*close)(struct bench_target *t);
};

extern const struct bench_engine bench_engine_uring;
extern const struct bench_engine bench_engine_nbd;

/* ---- job.c: one job's thread ---- */

struct bench_job {
	struct bench_opts opts;        /* settings, with this clone's region */
	unsigned index;                /* position among all jobs, 0-based */
	unsigned clone;                /* 0 .. opts.numjobs - 1 among its clones */
	const struct bench_engine *engine;
	uint64_t seed;
	/* Live counters: written by the job thread, read by the monitor. */
	_Atomic uint64_t live_ios[BENCH_NDDIR];
	_Atomic uint64_t live_bytes[BENCH_NDDIR];
	_Atomic uint64_t live_issued_bytes;  /* for progress of size-bound jobs */
	_Atomic uint64_t live_limit_bytes;   /* bytes the timed phase issues, set before start */
	_Atomic int state;             /* enum bench_job_state */
	_Atomic uint64_t count_start_ns; /* when counting started (after ramp); 0 before */
	/* Results, valid after the thread ends. */
	struct bench_result result;
	char errmsg[768];              /* why the job failed, "" if it did not */
	bool setup_failed;
};

enum bench_job_state {
	BENCH_JOB_SETUP,
	BENCH_JOB_RAMP,
	BENCH_JOB_RUNNING,
	BENCH_JOB_VERIFYING,
	BENCH_JOB_DONE,
};

/* Shared by all job threads and the monitor. */
struct bench_run {
	struct bench_job *jobs;
	size_t n_jobs;
	pthread_barrier_t *start;      /* all threads plus the monitor */
	_Atomic int abort;             /* a job failed to set up: nobody runs */
	_Atomic int stop;              /* SIGINT/SIGTERM: finish now */
};

/* Thread body: arg is a struct bench_job_arg. */
struct bench_job_arg {
	struct bench_run *run;
	struct bench_job *job;
};
void *bench_job_thread(void *arg);

#endif
