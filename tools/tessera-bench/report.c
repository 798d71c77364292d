/*
 * Reports in fio's two main shapes.  Normal: the human report fio prints
 * (IOPS/BW line, clat/lat lines, percentile table, run status group).
 * JSON: fio's --output-format=json layout, so that scripts written for fio
 * (jq '.jobs[0].write.iops', '.jobs[0].read.clat_ns.percentile["99.000000"]')
 * read tessera-bench's output unchanged.
 */
#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

static const char *const g_ddir_name[BENCH_NDDIR] = { "read", "write" };
static const char *const g_ddir_upper[BENCH_NDDIR] = { "READ", "WRITE" };

void bench_samples_add(struct bench_samples *s, double v)
{
	if (s->n == 0 || v < s->min)
		s->min = v;
	if (s->n == 0 || v > s->max)
		s->max = v;
	s->n++;
	s->sum += v;
	s->sumsq += v * v;
}

static double samples_mean(const struct bench_samples *s)
{
	return s->n ? s->sum / (double)s->n : 0.0;
}

static double samples_stddev(const struct bench_samples *s)
{
	double mean, var;

	if (s->n < 2)
		return 0.0;
	mean = s->sum / (double)s->n;
	var = (s->sumsq - mean * s->sum) / (double)(s->n - 1);
	return var > 0 ? sqrt(var) : 0.0;
}

void bench_result_merge(struct bench_result *dst, const struct bench_result *src)
{
	dst->njobs += src->njobs;
	if (dst->error == 0)
		dst->error = src->error;
	dst->verify_errors += src->verify_errors;
	dst->verified_blocks += src->verified_blocks;
	if (src->elapsed_ns > dst->elapsed_ns)
		dst->elapsed_ns = src->elapsed_ns;
	dst->usr_cpu += src->usr_cpu;
	dst->sys_cpu += src->sys_cpu;
	dst->ctx += src->ctx;
	for (int d = 0; d < BENCH_NDDIR; d++) {
		struct bench_dir_stats *a = &dst->dir[d];
		const struct bench_dir_stats *b = &src->dir[d];

		a->ios += b->ios;
		a->bytes += b->bytes;
		if (b->runtime_ns > a->runtime_ns)
			a->runtime_ns = b->runtime_ns;
		bench_hist_merge(&a->clat, &b->clat);
		bench_hist_merge(&a->lat, &b->lat);
	}
}

const char *bench_fmt_num(double v, char *buf, size_t len)
{
	static const char units[] = { '\0', 'k', 'M', 'G', 'T', 'P' };
	int u = 0;

	if (v < 0)
		v = 0;
	/* four significant figures at most, like fio: 9855, 46.1k, 101k, 1.23M */
	while (v >= 9999.5 && u < 5) {
		v /= 1000.0;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%.0f", v);
	else if (v < 9.995)
		snprintf(buf, len, "%.2f%c", v, units[u]);
	else if (v < 99.95)
		snprintf(buf, len, "%.1f%c", v, units[u]);
	else
		snprintf(buf, len, "%.0f%c", v, units[u]);
	return buf;
}

const char *bench_fmt_bw(double bps, bool si, char *buf, size_t len)
{
	static const char *const bin[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	static const char *const dec[] = { "B", "kB", "MB", "GB", "TB" };
	double base = si ? 1000.0 : 1024.0;
	int u = 0;

	if (bps < 0)
		bps = 0;
	while (bps >= 9999.5 && u < 4) {
		bps /= base;
		u++;
	}
	if (u == 0 || bps >= 99.95)
		snprintf(buf, len, "%.0f%s", bps, si ? dec[u] : bin[u]);
	else if (bps < 9.995)
		snprintf(buf, len, "%.2f%s", bps, si ? dec[u] : bin[u]);
	else
		snprintf(buf, len, "%.1f%s", bps, si ? dec[u] : bin[u]);
	return buf;
}

void bench_report_header(FILE *f, const struct bench_opts *o, const char *engine)
{
	fprintf(f,
		"%s: (g=0): rw=%s, bs=(R) %" PRIu64 "B-%" PRIu64 "B, (W) %" PRIu64 "B-%" PRIu64
		"B, (T) %" PRIu64 "B-%" PRIu64 "B, ioengine=%s, iodepth=%u\n",
		o->name, bench_rw_name(o->rw), o->bs, o->bs, o->bs, o->bs, o->bs, o->bs, engine,
		o->iodepth);
}

static double dir_bw_bytes(const struct bench_dir_stats *s)
{
	return s->runtime_ns ? (double)s->bytes * 1e9 / (double)s->runtime_ns : 0.0;
}

static double dir_iops(const struct bench_dir_stats *s)
{
	return s->runtime_ns ? (double)s->ios * 1e9 / (double)s->runtime_ns : 0.0;
}

/* fio shows nsec, and switches to usec (msec) when every figure is above 1000. */
static void print_lat_line(FILE *f, const char *label, const struct bench_hist *h)
{
	double min = (double)h->min, max = (double)h->max, mean = bench_hist_mean(h);
	double dev = bench_hist_stddev(h);
	const char *unit = "nsec";

	if (min > 1000 && max > 1000 && mean > 1000 && dev > 1000) {
		min /= 1000, max /= 1000, mean /= 1000, dev /= 1000;
		unit = "usec";
		if (min > 1000 && max > 1000 && mean > 1000 && dev > 1000) {
			min /= 1000, max /= 1000, mean /= 1000, dev /= 1000;
			unit = "msec";
		}
	}
	fprintf(f, "%s (%s): min=%.0f, max=%.0f, avg=%.2f, stdev=%.2f\n", label, unit, min, max,
		mean, dev);
}

static void print_percentiles(FILE *f, const struct bench_hist *h)
{
	const char *unit = "nsec";
	uint64_t div = 1;
	unsigned width = 1;
	uint64_t vals[32];

	if (h->min > 1000000) {
		unit = "msec";
		div = 1000000;
	} else if (h->min > 1000) {
		unit = "usec";
		div = 1000;
	}
	for (size_t i = 0; i < bench_n_percentiles; i++) {
		char tmp[32];

		vals[i] = (bench_hist_percentile(h, bench_percentiles[i]) + div / 2) / div;
		if ((unsigned)snprintf(tmp, sizeof(tmp), "%" PRIu64, vals[i]) > width)
			width = (unsigned)strlen(tmp);
	}
	if (width < 5)
		width = 5;
	fprintf(f, "    clat percentiles (%s):\n", unit);
	for (size_t i = 0; i < bench_n_percentiles; i++) {
		if (i % 4 == 0)
			fprintf(f, "     |");
		fprintf(f, " %5.2fth=[%*" PRIu64 "]%s", bench_percentiles[i], (int)width, vals[i],
			i + 1 == bench_n_percentiles ? "\n" : (i % 4 == 3 ? ",\n" : ","));
	}
}

static void print_dir_normal(FILE *f, const struct bench_result *r, int d)
{
	const struct bench_dir_stats *s = &r->dir[d];
	char iops[32], bw[32], bwsi[32], io[32];
	double bps = dir_bw_bytes(s);

	fprintf(f, "  %s: IOPS=%s, BW=%s/s (%s/s)(%s/%" PRIu64 "msec)\n", g_ddir_name[d],
		bench_fmt_num(dir_iops(s), iops, sizeof(iops)), bench_fmt_bw(bps, false, bw, sizeof(bw)),
		bench_fmt_bw(bps, true, bwsi, sizeof(bwsi)),
		bench_fmt_bw((double)s->bytes, false, io, sizeof(io)), s->runtime_ns / 1000000);
	print_lat_line(f, "    clat", &s->clat);
	print_lat_line(f, "     lat", &s->lat);
	print_percentiles(f, &s->clat);
	if (s->bw.n) {
		fprintf(f,
			"   bw (  KiB/s): min=%.0f, max=%.0f, avg=%.2f, stdev=%.2f, samples=%" PRIu64
			"\n", s->bw.min, s->bw.max, samples_mean(&s->bw), samples_stddev(&s->bw),
			s->bw.n);
		fprintf(f,
			"   iops        : min=%.0f, max=%.0f, avg=%.2f, stdev=%.2f, samples=%" PRIu64
			"\n", s->iops.min, s->iops.max, samples_mean(&s->iops),
			samples_stddev(&s->iops), s->iops.n);
	}
}

void bench_report_normal(FILE *f, const struct bench_result *r, size_t n)
{
	char date[64];
	time_t now = time(NULL);
	struct tm tm;

	strftime(date, sizeof(date), "%a %b %e %H:%M:%S %Y", localtime_r(&now, &tm));
	for (size_t i = 0; i < n; i++) {
		fprintf(f, "\n%s: (groupid=0, jobs=%u): err=%2d: pid=%d: %s\n", r[i].opts->name,
			r[i].njobs, r[i].error, (int)getpid(), date);
		for (int d = 0; d < BENCH_NDDIR; d++)
			if (r[i].dir[d].ios)
				print_dir_normal(f, &r[i], d);
		if (r[i].opts->verify != BENCH_VERIFY_NONE)
			fprintf(f, "  verify       : crc32c, blocks checked=%" PRIu64 ", errors=%" PRIu64
				"\n", r[i].verified_blocks, r[i].verify_errors);
		fprintf(f, "  cpu          : usr=%.2f%%, sys=%.2f%%, ctx=%" PRIu64 "\n", r[i].usr_cpu,
			r[i].sys_cpu, r[i].ctx);
	}
	fprintf(f, "\nRun status group 0 (all jobs):\n");
	for (int d = 0; d < BENCH_NDDIR; d++) {
		uint64_t bytes = 0, rmin = UINT64_MAX, rmax = 0;
		double bwmin = 0, bwmax = 0, agg;
		bool any = false;
		char a[32], b[32], c[32], e[32], g[32], h[32], io[32], iosi[32];

		for (size_t i = 0; i < n; i++) {
			const struct bench_dir_stats *s = &r[i].dir[d];
			double bps = dir_bw_bytes(s);

			if (s->ios == 0)
				continue;
			bytes += s->bytes;
			if (s->runtime_ns < rmin)
				rmin = s->runtime_ns;
			if (s->runtime_ns > rmax)
				rmax = s->runtime_ns;
			if (!any || bps < bwmin)
				bwmin = bps;
			if (!any || bps > bwmax)
				bwmax = bps;
			any = true;
		}
		if (!any)
			continue;
		agg = rmax ? (double)bytes * 1e9 / (double)rmax : 0.0;
		fprintf(f,
			"  %5s: bw=%s/s (%s/s), %s/s-%s/s (%s/s-%s/s), io=%s (%s), run=%" PRIu64
			"-%" PRIu64 "msec\n", g_ddir_upper[d], bench_fmt_bw(agg, false, a, sizeof(a)),
			bench_fmt_bw(agg, true, b, sizeof(b)),
			bench_fmt_bw(bwmin, false, c, sizeof(c)),
			bench_fmt_bw(bwmax, false, e, sizeof(e)),
			bench_fmt_bw(bwmin, true, g, sizeof(g)), bench_fmt_bw(bwmax, true, h, sizeof(h)),
			bench_fmt_bw((double)bytes, false, io, sizeof(io)),
			bench_fmt_bw((double)bytes, true, iosi, sizeof(iosi)), rmin / 1000000,
			rmax / 1000000);
	}
}

/* ---- JSON ---- */

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void json_lat(FILE *f, const char *key, const struct bench_hist *h, bool percentiles,
		     bool last)
{
	fprintf(f,
		"        \"%s\" : {\n"
		"          \"min\" : %" PRIu64 ",\n"
		"          \"max\" : %" PRIu64 ",\n"
		"          \"mean\" : %f,\n"
		"          \"stddev\" : %f,\n"
		"          \"N\" : %" PRIu64 "%s\n",
		key, h->count ? h->min : 0, h->max, bench_hist_mean(h), bench_hist_stddev(h),
		h->count, percentiles && h->count ? "," : "");
	if (percentiles && h->count) {
		fprintf(f, "          \"percentile\" : {\n");
		for (size_t i = 0; i < bench_n_percentiles; i++)
			fprintf(f, "            \"%f\" : %" PRIu64 "%s\n", bench_percentiles[i],
				bench_hist_percentile(h, bench_percentiles[i]),
				i + 1 == bench_n_percentiles ? "" : ",");
		fprintf(f, "          }\n");
	}
	fprintf(f, "        }%s\n", last ? "" : ",");
}

static void json_dir(FILE *f, const char *key, const struct bench_dir_stats *s)
{
	double bps = dir_bw_bytes(s);
	struct bench_hist empty;

	bench_hist_init(&empty);
	fprintf(f,
		"      \"%s\" : {\n"
		"        \"io_bytes\" : %" PRIu64 ",\n"
		"        \"io_kbytes\" : %" PRIu64 ",\n"
		"        \"bw_bytes\" : %" PRIu64 ",\n"
		"        \"bw\" : %" PRIu64 ",\n"
		"        \"iops\" : %f,\n"
		"        \"runtime\" : %" PRIu64 ",\n"
		"        \"total_ios\" : %" PRIu64 ",\n"
		"        \"short_ios\" : 0,\n"
		"        \"drop_ios\" : 0,\n",
		key, s->bytes, s->bytes / 1024, (uint64_t)bps, (uint64_t)(bps / 1024), dir_iops(s),
		s->runtime_ns / 1000000, s->ios);
	json_lat(f, "slat_ns", &empty, false, false);
	json_lat(f, "clat_ns", &s->clat, true, false);
	json_lat(f, "lat_ns", &s->lat, false, false);
	fprintf(f,
		"        \"bw_min\" : %.0f,\n"
		"        \"bw_max\" : %.0f,\n"
		"        \"bw_agg\" : %f,\n"
		"        \"bw_mean\" : %f,\n"
		"        \"bw_dev\" : %f,\n"
		"        \"bw_samples\" : %" PRIu64 ",\n"
		"        \"iops_min\" : %.0f,\n"
		"        \"iops_max\" : %.0f,\n"
		"        \"iops_mean\" : %f,\n"
		"        \"iops_stddev\" : %f,\n"
		"        \"iops_samples\" : %" PRIu64 "\n"
		"      },\n",
		s->bw.min, s->bw.max, s->bw.n ? 100.0 : 0.0, samples_mean(&s->bw),
		samples_stddev(&s->bw), s->bw.n, s->iops.min, s->iops.max, samples_mean(&s->iops),
		samples_stddev(&s->iops), s->iops.n);
}

void bench_report_json(FILE *f, const struct bench_result *r, size_t n, long long timestamp_ms)
{
	char date[64];
	time_t now = (time_t)(timestamp_ms / 1000);
	struct tm tm;
	struct bench_dir_stats none;

	memset(&none, 0, sizeof(none));
	bench_hist_init(&none.clat);
	bench_hist_init(&none.lat);
	strftime(date, sizeof(date), "%a %b %e %H:%M:%S %Y", localtime_r(&now, &tm));
	fprintf(f, "{\n  \"fio version\" : \"%s\",\n  \"timestamp\" : %lld,\n"
		"  \"timestamp_ms\" : %lld,\n  \"time\" : \"%s\",\n  \"jobs\" : [\n",
		BENCH_VERSION, timestamp_ms / 1000, timestamp_ms, date);
	for (size_t i = 0; i < n; i++) {
		const struct bench_opts *o = r[i].opts;
		uint64_t job_runtime = r[i].dir[0].runtime_ns > r[i].dir[1].runtime_ns ?
					       r[i].dir[0].runtime_ns : r[i].dir[1].runtime_ns;

		fprintf(f, "    {\n      \"jobname\" : ");
		json_str(f, o->name);
		fprintf(f, ",\n      \"groupid\" : 0,\n      \"error\" : %d,\n      \"eta\" : 0,\n"
			"      \"elapsed\" : %" PRIu64 ",\n      \"job options\" : {\n"
			"        \"name\" : ", r[i].error, (r[i].elapsed_ns + 999999999) / 1000000000);
		json_str(f, o->name);
		fprintf(f, ",\n        \"filename\" : ");
		json_str(f, o->filename);
		fprintf(f, ",\n        \"rw\" : \"%s\",\n        \"bs\" : \"%" PRIu64 "\",\n"
			"        \"iodepth\" : \"%u\",\n        \"numjobs\" : \"%u\",\n"
			"        \"ioengine\" : \"%s\"",
			bench_rw_name(o->rw), o->bs, o->iodepth, o->numjobs, r[i].engine);
		if (o->rw == BENCH_RW_RW || o->rw == BENCH_RW_RANDRW)
			fprintf(f, ",\n        \"rwmixread\" : \"%u\"", o->rwmixread);
		if (o->size)
			fprintf(f, ",\n        \"size\" : \"%" PRIu64 "\"", o->size);
		if (o->runtime_ns)
			fprintf(f, ",\n        \"runtime\" : \"%" PRIu64 "ms\"", o->runtime_ns / 1000000);
		if (o->time_based)
			fprintf(f, ",\n        \"time_based\" : \"1\"");
		if (o->ramp_ns)
			fprintf(f, ",\n        \"ramp_time\" : \"%" PRIu64 "ms\"", o->ramp_ns / 1000000);
		if (o->verify != BENCH_VERIFY_NONE)
			fprintf(f, ",\n        \"verify\" : \"crc32c\"");
		fprintf(f, "\n      },\n");
		json_dir(f, "read", &r[i].dir[BENCH_READ]);
		json_dir(f, "write", &r[i].dir[BENCH_WRITE]);
		json_dir(f, "trim", &none);
		fprintf(f,
			"      \"job_runtime\" : %" PRIu64 ",\n"
			"      \"usr_cpu\" : %f,\n"
			"      \"sys_cpu\" : %f,\n"
			"      \"ctx\" : %" PRIu64 ",\n"
			"      \"majf\" : 0,\n"
			"      \"minf\" : 0,\n"
			"      \"verify_errors\" : %" PRIu64 ",\n"
			"      \"verified_blocks\" : %" PRIu64 "\n"
			"    }%s\n",
			job_runtime / 1000000, r[i].usr_cpu, r[i].sys_cpu, r[i].ctx,
			r[i].verify_errors, r[i].verified_blocks, i + 1 == n ? "" : ",");
	}
	fprintf(f, "  ],\n  \"disk_util\" : [\n  ]\n}\n");
}
