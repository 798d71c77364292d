/*
 * tessera-bench main: parse options, start one thread per job (numjobs
 * clones included), watch them from the main thread (bandwidth samples every
 * half second, the live progress line every second on a terminal), then
 * print the report and exit 0, or 1 on any error or verify failure.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "tessera/common.h"
#include "bench.h"

#define SAMPLE_NS 500000000ull
#define PROGRESS_NS 1000000000ull

static volatile sig_atomic_t g_signalled;

static void on_signal(int sig)
{
	(void)sig;
	g_signalled = 1;
}

/* What the monitor remembers of a job between two bandwidth samples. */
struct job_sampler {
	bool started;
	uint64_t t;
	uint64_t ios[BENCH_NDDIR];
	uint64_t bytes[BENCH_NDDIR];
};

struct monitor {
	struct bench_run *run;
	struct job_sampler *samplers;
	struct bench_samples group_bw[BENCH_NDDIR];
	struct bench_samples group_iops[BENCH_NDDIR];
	bool progress;             /* print the live line */
	bool line_shown;
	uint64_t last_bytes[BENCH_NDDIR];
	uint64_t last_ios[BENCH_NDDIR];
	uint64_t last_t;
};

static void take_samples(struct monitor *m, uint64_t now)
{
	double gbw[BENCH_NDDIR] = { 0 }, giops[BENCH_NDDIR] = { 0 };
	bool any[BENCH_NDDIR] = { false };

	for (size_t i = 0; i < m->run->n_jobs; i++) {
		struct bench_job *j = &m->run->jobs[i];
		struct job_sampler *s = &m->samplers[i];

		if (atomic_load(&j->state) != BENCH_JOB_RUNNING) {
			s->started = false;
			continue;
		}
		if (!s->started) {
			s->started = true;
			s->t = now;
			for (int d = 0; d < BENCH_NDDIR; d++) {
				s->ios[d] = atomic_load_explicit(&j->live_ios[d], memory_order_relaxed);
				s->bytes[d] = atomic_load_explicit(&j->live_bytes[d],
								   memory_order_relaxed);
			}
			continue;
		}
		for (int d = 0; d < BENCH_NDDIR; d++) {
			uint64_t ios = atomic_load_explicit(&j->live_ios[d], memory_order_relaxed);
			uint64_t bytes = atomic_load_explicit(&j->live_bytes[d], memory_order_relaxed);
			double dt = (double)(now - s->t) / 1e9;

			if (bench_rw_has(j->opts.rw, (enum bench_ddir)d) && dt > 0) {
				double bw = (double)(bytes - s->bytes[d]) / 1024.0 / dt;
				double iops = (double)(ios - s->ios[d]) / dt;

				bench_samples_add(&j->result.dir[d].bw, bw);
				bench_samples_add(&j->result.dir[d].iops, iops);
				gbw[d] += bw;
				giops[d] += iops;
				any[d] = true;
			}
			s->ios[d] = ios;
			s->bytes[d] = bytes;
		}
		s->t = now;
	}
	for (int d = 0; d < BENCH_NDDIR; d++) {
		if (any[d]) {
			bench_samples_add(&m->group_bw[d], gbw[d]);
			bench_samples_add(&m->group_iops[d], giops[d]);
		}
	}
}

static char state_char(const struct bench_job *j)
{
	static const char running[] = { [BENCH_RW_READ] = 'R',     [BENCH_RW_WRITE] = 'W',
					 [BENCH_RW_RANDREAD] = 'r', [BENCH_RW_RANDWRITE] = 'w',
					 [BENCH_RW_RW] = 'M',       [BENCH_RW_RANDRW] = 'm' };

	switch (atomic_load(&j->state)) {
	case BENCH_JOB_SETUP:
		return 'P';
	case BENCH_JOB_RAMP:
		return '/';
	case BENCH_JOB_RUNNING:
		return running[j->opts.rw];
	case BENCH_JOB_VERIFYING:
		return 'V';
	default:
		return '_';
	}
}

/* Fraction done and seconds left of one job. */
static void job_progress(const struct bench_job *j, uint64_t now, double *frac, double *eta)
{
	const struct bench_opts *o = &j->opts;
	int st = atomic_load(&j->state);
	uint64_t cs = atomic_load(&j->count_start_ns);

	*frac = 0;
	*eta = (double)(o->ramp_ns + o->runtime_ns) / 1e9;
	if (st == BENCH_JOB_DONE || st == BENCH_JOB_VERIFYING) {
		*frac = 1;
		*eta = 0;
		return;
	}
	if (st != BENCH_JOB_RUNNING || cs == 0)
		return;
	{
		double el = (double)(now - cs) / 1e9, rt = (double)o->runtime_ns / 1e9;
		double f_time = rt > 0 ? el / rt : 0, f_bytes = 0;
		uint64_t lim = atomic_load(&j->live_limit_bytes);
		uint64_t iss = atomic_load(&j->live_issued_bytes);

		if (!o->time_based && lim)
			f_bytes = (double)iss / (double)lim;
		*frac = o->time_based ? f_time : (f_time > f_bytes ? f_time : f_bytes);
		if (*frac > 1)
			*frac = 1;
		if (o->time_based)
			*eta = rt - el;
		else if (*frac > 0)
			*eta = el / *frac - el;
		if (rt > 0 && rt - el < *eta)
			*eta = rt - el;
		if (*eta < 0)
			*eta = 0;
	}
}

static void print_progress(struct monitor *m, uint64_t now)
{
	char line[512], status[256] = "", rates[128], iops[128];
	size_t n = 0, running = 0;
	double frac = 0, eta = 0, dt = (double)(now - m->last_t) / 1e9;
	uint64_t bytes[BENCH_NDDIR] = { 0 }, ios[BENCH_NDDIR] = { 0 };
	char prev = 0;
	unsigned runlen = 0;
	int len;

	for (size_t i = 0; i <= m->run->n_jobs; i++) {
		char c = i < m->run->n_jobs ? state_char(&m->run->jobs[i]) : 0;

		if (c == prev) {
			runlen++;
			continue;
		}
		if (prev)
			n += (size_t)snprintf(status + n, sizeof(status) - n, "%s%c(%u)",
					      n ? "," : "", prev, runlen);
		if (n >= sizeof(status))
			n = sizeof(status) - 1;
		prev = c;
		runlen = 1;
	}
	for (size_t i = 0; i < m->run->n_jobs; i++) {
		struct bench_job *j = &m->run->jobs[i];
		double f, e;

		if (atomic_load(&j->state) != BENCH_JOB_DONE)
			running++;
		job_progress(j, now, &f, &e);
		frac += f;
		if (e > eta)
			eta = e;
		for (int d = 0; d < BENCH_NDDIR; d++) {
			bytes[d] += atomic_load_explicit(&j->live_bytes[d], memory_order_relaxed);
			ios[d] += atomic_load_explicit(&j->live_ios[d], memory_order_relaxed);
		}
	}
	frac /= (double)m->run->n_jobs;
	{
		char rb[32], wb[32], ri[32], wi[32];
		double r_bw = 0, w_bw = 0, r_io = 0, w_io = 0;

		/* counters restart at the end of a ramp: a drop is not a negative rate */
		if (dt > 0 && bytes[0] >= m->last_bytes[0] && bytes[1] >= m->last_bytes[1]) {
			r_bw = (double)(bytes[0] - m->last_bytes[0]) / dt;
			w_bw = (double)(bytes[1] - m->last_bytes[1]) / dt;
			r_io = (double)(ios[0] - m->last_ios[0]) / dt;
			w_io = (double)(ios[1] - m->last_ios[1]) / dt;
		}
		bool has_r = false, has_w = false;

		/* like fio, name only the directions some job does */
		for (size_t i = 0; i < m->run->n_jobs; i++) {
			has_r |= bench_rw_has(m->run->jobs[i].opts.rw, BENCH_READ) ||
				 (m->run->jobs[i].opts.verify && m->run->jobs[i].opts.do_verify);
			has_w |= bench_rw_has(m->run->jobs[i].opts.rw, BENCH_WRITE);
		}
		bench_fmt_bw(r_bw, false, rb, sizeof(rb));
		bench_fmt_bw(w_bw, false, wb, sizeof(wb));
		bench_fmt_num(r_io, ri, sizeof(ri));
		bench_fmt_num(w_io, wi, sizeof(wi));
		if (has_r && has_w) {
			snprintf(rates, sizeof(rates), "r=%s/s,w=%s/s", rb, wb);
			snprintf(iops, sizeof(iops), "r=%s,w=%s IOPS", ri, wi);
		} else if (has_w) {
			snprintf(rates, sizeof(rates), "w=%s/s", wb);
			snprintf(iops, sizeof(iops), "w=%s IOPS", wi);
		} else {
			snprintf(rates, sizeof(rates), "r=%s/s", rb);
			snprintf(iops, sizeof(iops), "r=%s IOPS", ri);
		}
	}
	for (int d = 0; d < BENCH_NDDIR; d++) {
		m->last_bytes[d] = bytes[d];
		m->last_ios[d] = ios[d];
	}
	m->last_t = now;
	{
		unsigned e = (unsigned)(eta + 0.5);

		if (e >= 3600)
			len = snprintf(line, sizeof(line),
				       "Jobs: %zu (f=%zu): [%s][%.1f%%][%s][%s][eta %02uh:%02um:%02us]",
				       running, running, status, frac * 100, rates, iops, e / 3600,
				       e / 60 % 60, e % 60);
		else
			len = snprintf(line, sizeof(line),
				       "Jobs: %zu (f=%zu): [%s][%.1f%%][%s][%s][eta %02um:%02us]",
				       running, running, status, frac * 100, rates, iops, e / 60,
				       e % 60);
	}
	fprintf(stderr, "\r%s\033[K", line);
	(void)len;
	m->line_shown = true;
}

static bool all_done(const struct bench_run *run)
{
	for (size_t i = 0; i < run->n_jobs; i++)
		if (atomic_load(&run->jobs[i].state) != BENCH_JOB_DONE)
			return false;
	return true;
}

static void monitor_run(struct monitor *m)
{
	uint64_t start = tsr_mono_ns(), next_sample = start + SAMPLE_NS;
	uint64_t next_progress = start + PROGRESS_NS;

	m->last_t = start;
	take_samples(m, start);
	while (!all_done(m->run)) {
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		uint64_t now;

		nanosleep(&ts, NULL);
		if (g_signalled)
			atomic_store(&m->run->stop, 1);
		now = tsr_mono_ns();
		if (now >= next_sample) {
			take_samples(m, now);
			next_sample += SAMPLE_NS;
			if (next_sample < now)
				next_sample = now + SAMPLE_NS;
		}
		if (m->progress && now >= next_progress) {
			print_progress(m, now);
			next_progress += PROGRESS_NS;
			if (next_progress < now)
				next_progress = now + PROGRESS_NS;
		}
	}
	if (m->line_shown)
		fprintf(stderr, "\r\033[K");
}

static void print_errors(const struct bench_run *run)
{
	for (size_t i = 0; i < run->n_jobs; i++) {
		const char *msg = run->jobs[i].errmsg;
		bool dup = false;

		if (msg[0] == '\0')
			continue;
		for (size_t k = 0; k < i && !dup; k++)
			dup = strcmp(run->jobs[k].errmsg, msg) == 0;
		if (!dup)
			fprintf(stderr, "tessera-bench: %s\n", msg);
	}
}

static int init_jobs(struct bench_run *run, const struct bench_config *cfg)
{
	size_t total = 0, k = 0;

	for (size_t i = 0; i < cfg->n_jobs; i++)
		total += cfg->jobs[i].numjobs;
	run->jobs = calloc(total, sizeof(*run->jobs));
	if (run->jobs == NULL)
		return -ENOMEM;
	run->n_jobs = total;
	for (size_t i = 0; i < cfg->n_jobs; i++) {
		for (unsigned c = 0; c < cfg->jobs[i].numjobs; c++, k++) {
			struct bench_job *j = &run->jobs[k];

			j->opts = cfg->jobs[i];
			j->index = (unsigned)k;
			j->clone = c;
			j->engine = bench_target_is_nbd(j->opts.filename) ? &bench_engine_nbd :
									   &bench_engine_uring;
			j->seed = j->opts.randseed + 0x9e3779b97f4a7c15ull * k;
			j->result.opts = &j->opts;
			j->result.njobs = 1;
			j->result.engine = j->engine->name;
			for (int d = 0; d < BENCH_NDDIR; d++) {
				bench_hist_init(&j->result.dir[d].clat);
				bench_hist_init(&j->result.dir[d].lat);
			}
			atomic_init(&j->state, BENCH_JOB_SETUP);
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct bench_config cfg;
	struct bench_run run;
	struct monitor mon;
	struct bench_job_arg *args = NULL;
	struct bench_result *results = NULL;
	pthread_t *threads = NULL;
	pthread_barrier_t barrier;
	sigset_t block, old;
	struct sigaction sa;
	struct timeval tv;
	FILE *out = stdout;
	char err[1024];
	size_t n_results, started = 0;
	bool grouped = false;
	int status = 0;

	bench_config_init(&cfg);
	if (bench_parse_args(&cfg, argc, argv, err, sizeof(err))) {
		fprintf(stderr, "tessera-bench: %s\n", err);
		bench_config_free(&cfg);
		return 1;
	}
	if (cfg.help) {
		bench_print_help(stdout);
		bench_config_free(&cfg);
		return 0;
	}
	if (cfg.version) {
		printf("%s\n", BENCH_VERSION);
		bench_config_free(&cfg);
		return 0;
	}
	memset(&run, 0, sizeof(run));
	memset(&mon, 0, sizeof(mon));
	if (init_jobs(&run, &cfg)) {
		fprintf(stderr, "tessera-bench: out of memory\n");
		return 1;
	}
	if (cfg.output[0]) {
		out = fopen(cfg.output, "w");
		if (out == NULL) {
			fprintf(stderr, "tessera-bench: cannot write %s: %s\n", cfg.output,
				strerror(errno));
			return 1;
		}
	}
	for (size_t i = 0; i < run.n_jobs; i++)
		grouped |= run.jobs[i].opts.group_reporting;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* job threads never take the signals: their waits are not interrupted */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &block, &old);

	threads = calloc(run.n_jobs, sizeof(*threads));
	args = calloc(run.n_jobs, sizeof(*args));
	mon.samplers = calloc(run.n_jobs, sizeof(*mon.samplers));
	if (!threads || !args || !mon.samplers) {
		fprintf(stderr, "tessera-bench: out of memory\n");
		return 1;
	}
	pthread_barrier_init(&barrier, NULL, (unsigned)run.n_jobs + 1);
	run.start = &barrier;
	for (size_t i = 0; i < run.n_jobs; i++) {
		int ret;

		args[i].run = &run;
		args[i].job = &run.jobs[i];
		ret = pthread_create(&threads[i], NULL, bench_job_thread, &args[i]);
		if (ret) {
			/* the barrier cannot be met any more: leave at once */
			fprintf(stderr, "tessera-bench: cannot start thread %zu of %zu: %s\n", i + 1,
				run.n_jobs, strerror(ret));
			_exit(1);
		}
		started++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_barrier_wait(&barrier);
	if (atomic_load(&run.abort)) {
		for (size_t i = 0; i < started; i++)
			pthread_join(threads[i], NULL);
		print_errors(&run);
		status = 1;
		goto out;
	}
	/* targets are open: say what runs, as fio does */
	if (cfg.format == BENCH_FMT_NORMAL) {
		for (size_t i = 0; i < cfg.n_jobs; i++)
			bench_report_header(out, &cfg.jobs[i],
					    bench_target_is_nbd(cfg.jobs[i].filename) ? "nbd" :
											"io_uring");
		fprintf(out, "%s\nStarting %zu thread%s\n", BENCH_VERSION, run.n_jobs,
			run.n_jobs == 1 ? "" : "s");
		fflush(out);
	}
	mon.run = &run;
	mon.progress = cfg.eta == BENCH_ETA_ALWAYS ||
		       (cfg.eta == BENCH_ETA_AUTO && isatty(STDERR_FILENO));
	monitor_run(&mon);
	for (size_t i = 0; i < started; i++)
		pthread_join(threads[i], NULL);

	n_results = grouped ? 1 : run.n_jobs;
	results = calloc(n_results, sizeof(*results));
	if (results == NULL) {
		fprintf(stderr, "tessera-bench: out of memory\n");
		status = 1;
		goto out;
	}
	if (grouped) {
		results[0] = run.jobs[0].result;
		for (size_t i = 1; i < run.n_jobs; i++)
			bench_result_merge(&results[0], &run.jobs[i].result);
		for (int d = 0; d < BENCH_NDDIR; d++) {
			results[0].dir[d].bw = mon.group_bw[d];
			results[0].dir[d].iops = mon.group_iops[d];
		}
	} else {
		for (size_t i = 0; i < run.n_jobs; i++)
			results[i] = run.jobs[i].result;
	}
	gettimeofday(&tv, NULL);
	if (cfg.format == BENCH_FMT_JSON)
		bench_report_json(out, results, n_results,
				  (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000);
	else
		bench_report_normal(out, results, n_results);
	fflush(out);
	if (ferror(out)) {
		fprintf(stderr, "tessera-bench: cannot write the report: %s\n", strerror(errno));
		status = 1;
	}
	print_errors(&run);
	for (size_t i = 0; i < run.n_jobs; i++) {
		if (run.jobs[i].result.error)
			status = 1;
		if (run.jobs[i].result.verify_errors) {
			fprintf(stderr, "tessera-bench: job %s: %" PRIu64 " of %" PRIu64
				" blocks failed verification\n", run.jobs[i].opts.name,
				run.jobs[i].result.verify_errors, run.jobs[i].result.verified_blocks);
			status = 1;
		}
	}
	if (g_signalled) {
		fprintf(stderr, "tessera-bench: interrupted; the figures cover the time run\n");
		status = 1;
	}
out:
	if (out != stdout && fclose(out) != 0) {
		fprintf(stderr, "tessera-bench: cannot write %s: %s\n", cfg.output, strerror(errno));
		status = 1;
	}
	pthread_barrier_destroy(&barrier);
	free(results);
	free(mon.samplers);
	free(args);
	free(threads);
	free(run.jobs);
	bench_config_free(&cfg);
	return status;
}
