/*
 * tessera-bench options: one table of fio option names drives the command
 * line, the job files (fio ini: [global] and [job] sections) and --help.
 * Anything not in the table is an error naming the option, never ignored.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tessera/common.h"
#include "bench.h"

enum opt_type {
	OPT_STR,      /* char array of size len */
	OPT_RW,
	OPT_UINT,     /* unsigned in [lo, hi] */
	OPT_BS,       /* size, no percent */
	OPT_SIZE,     /* size or percent: pct field at off2 */
	OPT_TIME,     /* duration, default unit seconds */
	OPT_BOOL,     /* no value = true */
	OPT_VERIFY,
	OPT_ENGINE,
	OPT_RWMIXWRITE,
	OPT_U64,
	OPT_IGNORED,  /* accepted for fio compatibility, no effect (see help) */
};

struct bench_option {
	const char *name;
	const char *alias;   /* may be NULL */
	enum opt_type type;
	size_t off;          /* field in struct bench_opts */
	size_t off2;         /* OPT_SIZE: the percent field */
	size_t len;          /* OPT_STR: size of the array */
	uint64_t lo, hi;     /* OPT_UINT bounds */
	const char *arg;     /* value placeholder for --help */
	const char *help;
};

#define F(field) offsetof(struct bench_opts, field)

static const struct bench_option g_options[] = {
	{ "name", NULL, OPT_STR, F(name), 0, sizeof(((struct bench_opts *)0)->name), 0, 0, "NAME",
	  "name of the job; on the command line each --name starts a new job" },
	{ "filename", "uri", OPT_STR, F(filename), 0, sizeof(((struct bench_opts *)0)->filename),
	  0, 0, "TARGET",
	  "file, block device, nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH" },
	{ "rw", "readwrite", OPT_RW, F(rw), 0, 0, 0, 0, "MODE",
	  "read|write|randread|randwrite|rw (readwrite)|randrw (default read)" },
	{ "rwmixread", NULL, OPT_UINT, F(rwmixread), 0, 0, 0, 100, "PCT",
	  "percentage of reads in rw/randrw (default 50)" },
	{ "rwmixwrite", NULL, OPT_RWMIXWRITE, F(rwmixread), 0, 0, 0, 100, "PCT",
	  "percentage of writes in rw/randrw (100 - rwmixread)" },
	{ "bs", "blocksize", OPT_BS, F(bs), 0, 0, 0, 0, "SIZE",
	  "size of each I/O, k/m suffixes are binary (default 4k)" },
	{ "iodepth", NULL, OPT_UINT, F(iodepth), 0, 0, 1, BENCH_MAX_IODEPTH, "N",
	  "I/Os kept in flight per job (default 1)" },
	{ "numjobs", NULL, OPT_UINT, F(numjobs), 0, 0, 1, BENCH_MAX_NUMJOBS, "N",
	  "clones of the job, one thread and one connection or ring each (default 1)" },
	{ "size", NULL, OPT_SIZE, F(size), F(size_pct), 0, 0, 0, "SIZE|PCT%",
	  "bytes to transfer and length of the region (default: to the end of the target)" },
	{ "offset", NULL, OPT_SIZE, F(offset), F(offset_pct), 0, 0, 0, "SIZE|PCT%",
	  "start of the region on the target (default 0)" },
	{ "runtime", "timeout", OPT_TIME, F(runtime_ns), 0, 0, 0, 0, "TIME",
	  "stop after this long: 30 = 30s, or 500ms, 10s, 2m, 1h" },
	{ "time_based", NULL, OPT_BOOL, F(time_based), 0, 0, 0, 0, NULL,
	  "run for the whole --runtime, looping over the region" },
	{ "ramp_time", NULL, OPT_TIME, F(ramp_ns), 0, 0, 0, 0, "TIME",
	  "run this long before counting (not part of runtime)" },
	{ "verify", NULL, OPT_VERIFY, F(verify), 0, 0, 0, 0, "crc32c|0",
	  "write blocks with an offset+generation header and CRC32C, check them on read" },
	{ "do_verify", NULL, OPT_BOOL, F(do_verify), 0, 0, 0, 0, "BOOL",
	  "with --verify, read every written block back after the run (default 1)" },
	{ "direct", NULL, OPT_BOOL, F(direct), 0, 0, 0, 0, "BOOL",
	  "accepted for fio compatibility: files are always opened with O_DIRECT" },
	{ "ioengine", NULL, OPT_ENGINE, F(ioengine), 0, 0, 0, 0, "ENGINE",
	  "io_uring (files, block devices) or nbd (nbd URIs); picked from the target if unset" },
	{ "norandommap", NULL, OPT_BOOL, F(norandommap), 0, 0, 0, 0, NULL,
	  "random offsets may repeat (default: each block once per pass)" },
	{ "randseed", NULL, OPT_U64, F(randseed), 0, 0, 0, 0, "N",
	  "seed of the random offsets (default fixed, so runs repeat)" },
	{ "group_reporting", NULL, OPT_BOOL, F(group_reporting), 0, 0, 0, 0, NULL,
	  "report all jobs together instead of one entry per job" },
	{ "thread", NULL, OPT_IGNORED, 0, 0, 0, 0, 0, NULL,
	  "accepted for fio compatibility: jobs are always threads" },
};
#define N_OPTIONS (sizeof(g_options) / sizeof(g_options[0]))

/* Options that only the command line takes (they shape the run, not a job). */
static const struct {
	const char *name;
	const char *arg;
	const char *help;
} g_cli_options[] = {
	{ "output-format", "normal|json", "report format (default normal)" },
	{ "output", "FILE", "write the report to FILE instead of stdout" },
	{ "eta", "auto|always|never", "live progress line on stderr (auto: when it is a terminal)" },
	{ "help", NULL, "this text" },
	{ "version", NULL, "print the version" },
};
#define N_CLI_OPTIONS (sizeof(g_cli_options) / sizeof(g_cli_options[0]))

void bench_opts_defaults(struct bench_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->rw = BENCH_RW_READ;
	o->rwmixread = 50;
	o->bs = 4096;
	o->iodepth = 1;
	o->numjobs = 1;
	o->do_verify = true;
	o->randseed = 0x7e55e4a;
}

void bench_config_init(struct bench_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->format = BENCH_FMT_NORMAL;
	cfg->eta = BENCH_ETA_AUTO;
}

void bench_config_free(struct bench_config *cfg)
{
	free(cfg->jobs);
	cfg->jobs = NULL;
	cfg->n_jobs = 0;
}

static const char *const g_rw_names[] = {
	[BENCH_RW_READ] = "read",         [BENCH_RW_WRITE] = "write",
	[BENCH_RW_RANDREAD] = "randread", [BENCH_RW_RANDWRITE] = "randwrite",
	[BENCH_RW_RW] = "rw",             [BENCH_RW_RANDRW] = "randrw",
};

const char *bench_rw_name(enum bench_rw rw)
{
	return g_rw_names[rw];
}

bool bench_rw_is_random(enum bench_rw rw)
{
	return rw == BENCH_RW_RANDREAD || rw == BENCH_RW_RANDWRITE || rw == BENCH_RW_RANDRW;
}

bool bench_rw_has(enum bench_rw rw, enum bench_ddir d)
{
	if (rw == BENCH_RW_RW || rw == BENCH_RW_RANDRW)
		return true;
	if (d == BENCH_READ)
		return rw == BENCH_RW_READ || rw == BENCH_RW_RANDREAD;
	return rw == BENCH_RW_WRITE || rw == BENCH_RW_RANDWRITE;
}

bool bench_target_is_nbd(const char *filename)
{
	return strncmp(filename, "nbd://", 6) == 0 || strncmp(filename, "nbds://", 7) == 0 ||
	       strncmp(filename, "nbd+unix://", 11) == 0 ||
	       strncmp(filename, "nbds+unix://", 12) == 0 ||
	       strncmp(filename, "nbd+vsock://", 12) == 0;
}

int bench_parse_bool(const char *s, bool *out)
{
	if (s == NULL || *s == '\0' || strcmp(s, "1") == 0 || strcasecmp(s, "true") == 0 ||
	    strcasecmp(s, "yes") == 0 || strcasecmp(s, "on") == 0) {
		*out = true;
		return 0;
	}
	if (strcmp(s, "0") == 0 || strcasecmp(s, "false") == 0 || strcasecmp(s, "no") == 0 ||
	    strcasecmp(s, "off") == 0) {
		*out = false;
		return 0;
	}
	return -EINVAL;
}

int bench_parse_size(const char *s, uint64_t *bytes, unsigned *pct)
{
	size_t n = strlen(s);

	if (n > 1 && s[n - 1] == '%') {
		char *end;
		unsigned long v;

		if (pct == NULL || !isdigit((unsigned char)s[0]))
			return -EINVAL;
		errno = 0;
		v = strtoul(s, &end, 10);
		if (errno || *end != '%' || v == 0 || v > 100)
			return -EINVAL;
		*pct = (unsigned)v;
		*bytes = 0;
		return 0;
	}
	if (pct)
		*pct = 0;
	return tsr_parse_size(s, bytes);
}

int bench_parse_time(const char *s, uint64_t *ns)
{
	static const struct {
		const char *unit;
		uint64_t ns;
	} units[] = {
		{ "", 1000000000ull },   { "s", 1000000000ull },  { "sec", 1000000000ull },
		{ "ms", 1000000ull },    { "msec", 1000000ull },  { "us", 1000ull },
		{ "usec", 1000ull },     { "m", 60000000000ull }, { "min", 60000000000ull },
		{ "h", 3600000000000ull }, { "d", 86400000000000ull },
	};
	char *end;
	unsigned long long v;

	if (s == NULL || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -ERANGE;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(end, units[i].unit) == 0) {
			if (v > UINT64_MAX / units[i].ns)
				return -ERANGE;
			*ns = v * units[i].ns;
			return 0;
		}
	}
	return -EINVAL;
}

/* fio spells options with '_' and its command-line-only ones with '-'. */
static bool name_eq(const char *a, const char *b)
{
	for (; *a && *b; a++, b++) {
		char ca = *a == '-' ? '_' : *a, cb = *b == '-' ? '_' : *b;
		if (ca != cb)
			return false;
	}
	return *a == *b;
}

static const struct bench_option *find_option(const char *key)
{
	for (size_t i = 0; i < N_OPTIONS; i++) {
		if (name_eq(key, g_options[i].name) ||
		    (g_options[i].alias && name_eq(key, g_options[i].alias)))
			return &g_options[i];
	}
	return NULL;
}

static bool is_cli_option(const char *key)
{
	for (size_t i = 0; i < N_CLI_OPTIONS; i++)
		if (name_eq(key, g_cli_options[i].name))
			return true;
	return false;
}

int bench_set_option(struct bench_opts *o, const char *key, const char *val, char *err,
		     size_t errlen)
{
	const struct bench_option *opt = find_option(key);
	char *field;
	uint64_t u;
	bool b;
	int ret = 0;

	if (opt == NULL) {
		snprintf(err, errlen, "unknown option '%s' (see --help)", key);
		return -ENOENT;
	}
	field = (char *)o + opt->off;
	if (val == NULL && opt->type != OPT_BOOL && opt->type != OPT_IGNORED) {
		snprintf(err, errlen, "option '%s' needs a value (%s=%s)", opt->name, opt->name,
			 opt->arg);
		return -EINVAL;
	}
	switch (opt->type) {
	case OPT_STR:
		if (*val == '\0' || strlen(val) >= opt->len) {
			snprintf(err, errlen, "option '%s': value must be 1 to %zu characters",
				 opt->name, opt->len - 1);
			return -EINVAL;
		}
		memcpy(field, val, strlen(val) + 1);
		return 0;
	case OPT_RW:
		for (size_t i = 0; i < sizeof(g_rw_names) / sizeof(g_rw_names[0]); i++) {
			if (strcmp(val, g_rw_names[i]) == 0) {
				*(enum bench_rw *)field = (enum bench_rw)i;
				return 0;
			}
		}
		if (strcmp(val, "readwrite") == 0) {
			*(enum bench_rw *)field = BENCH_RW_RW;
			return 0;
		}
		snprintf(err, errlen,
			 "option 'rw': '%s' is not one of read, write, randread, randwrite, "
			 "rw, readwrite, randrw", val);
		return -EINVAL;
	case OPT_UINT:
	case OPT_RWMIXWRITE:
	case OPT_U64: {
		char *end;
		unsigned long long v;

		errno = 0;
		v = strtoull(val, &end, 0);
		if (!isdigit((unsigned char)*val) || *end != '\0' || errno ||
		    (opt->type != OPT_U64 && (v < opt->lo || v > opt->hi))) {
			if (opt->type == OPT_U64)
				snprintf(err, errlen, "option '%s': '%s' is not a number",
					 opt->name, val);
			else
				snprintf(err, errlen,
					 "option '%s': '%s' is not a number from %" PRIu64
					 " to %" PRIu64, opt->name, val, opt->lo, opt->hi);
			return -EINVAL;
		}
		if (opt->type == OPT_U64)
			*(uint64_t *)field = v;
		else if (opt->type == OPT_RWMIXWRITE)
			*(unsigned *)field = 100 - (unsigned)v;
		else
			*(unsigned *)field = (unsigned)v;
		return 0;
	}
	case OPT_BS:
		ret = bench_parse_size(val, &u, NULL);
		if (ret == 0 && (u == 0 || u > BENCH_MAX_BS))
			ret = -ERANGE;
		if (ret) {
			snprintf(err, errlen,
				 "option '%s': '%s' is not a block size from 1 to 64m (e.g. 4k, "
				 "128k, 1m)", opt->name, val);
			return -EINVAL;
		}
		*(uint64_t *)field = u;
		return 0;
	case OPT_SIZE:
		ret = bench_parse_size(val, &u, (unsigned *)((char *)o + opt->off2));
		if (ret) {
			snprintf(err, errlen,
				 "option '%s': '%s' is not a size (e.g. 512m, 10g, 4096) or a "
				 "percentage (e.g. 50%%)", opt->name, val);
			return -EINVAL;
		}
		*(uint64_t *)field = u;
		return 0;
	case OPT_TIME:
		ret = bench_parse_time(val, &u);
		if (ret) {
			snprintf(err, errlen,
				 "option '%s': '%s' is not a duration (e.g. 30, 500ms, 10s, 2m)",
				 opt->name, val);
			return -EINVAL;
		}
		*(uint64_t *)field = u;
		return 0;
	case OPT_BOOL:
		if (bench_parse_bool(val, &b)) {
			snprintf(err, errlen, "option '%s': '%s' is not 0 or 1", opt->name, val);
			return -EINVAL;
		}
		*(bool *)field = b;
		return 0;
	case OPT_VERIFY:
		if (strcmp(val, "crc32c") == 0 || strcmp(val, "crc32c-intel") == 0) {
			*(enum bench_verify *)field = BENCH_VERIFY_CRC32C;
			return 0;
		}
		if (strcmp(val, "0") == 0 || strcmp(val, "none") == 0) {
			*(enum bench_verify *)field = BENCH_VERIFY_NONE;
			return 0;
		}
		snprintf(err, errlen, "option 'verify': '%s' is not supported (crc32c or 0)", val);
		return -EINVAL;
	case OPT_ENGINE:
		if (strcmp(val, "io_uring") == 0 || strcmp(val, "nbd") == 0) {
			snprintf(field, sizeof(o->ioengine), "%s", val);
			return 0;
		}
		snprintf(err, errlen,
			 "option 'ioengine': '%s' is not supported: tessera-bench uses io_uring "
			 "for files and block devices and nbd (libnbd) for nbd URIs", val);
		return -EINVAL;
	case OPT_IGNORED:
		return 0;
	}
	return -EINVAL;
}

static int set_cli_option(struct bench_config *cfg, const char *key, const char *val, char *err,
			  size_t errlen)
{
	if (name_eq(key, "help")) {
		cfg->help = true;
	} else if (name_eq(key, "version")) {
		cfg->version = true;
	} else if (name_eq(key, "output-format")) {
		if (strcmp(val, "normal") == 0)
			cfg->format = BENCH_FMT_NORMAL;
		else if (strcmp(val, "json") == 0)
			cfg->format = BENCH_FMT_JSON;
		else {
			snprintf(err, errlen, "option 'output-format': '%s' is not normal or json",
				 val);
			return -EINVAL;
		}
	} else if (name_eq(key, "output")) {
		if (*val == '\0' || strlen(val) >= sizeof(cfg->output)) {
			snprintf(err, errlen, "option 'output': bad file name");
			return -EINVAL;
		}
		snprintf(cfg->output, sizeof(cfg->output), "%s", val);
	} else if (name_eq(key, "eta")) {
		if (strcmp(val, "auto") == 0)
			cfg->eta = BENCH_ETA_AUTO;
		else if (strcmp(val, "always") == 0)
			cfg->eta = BENCH_ETA_ALWAYS;
		else if (strcmp(val, "never") == 0)
			cfg->eta = BENCH_ETA_NEVER;
		else {
			snprintf(err, errlen, "option 'eta': '%s' is not auto, always or never",
				 val);
			return -EINVAL;
		}
	}
	return 0;
}

static bool cli_option_takes_value(const char *key)
{
	return !name_eq(key, "help") && !name_eq(key, "version");
}

static int add_job(struct bench_config *cfg, const struct bench_opts *o)
{
	struct bench_opts *jobs = realloc(cfg->jobs, (cfg->n_jobs + 1) * sizeof(*jobs));

	if (jobs == NULL)
		return -ENOMEM;
	cfg->jobs = jobs;
	cfg->jobs[cfg->n_jobs++] = *o;
	return 0;
}

static int read_file(const char *path, char **text, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;
	int ret;

	if (f == NULL) {
		ret = -errno;
		snprintf(err, errlen, "cannot open job file %s: %s", path, strerror(errno));
		return ret;
	}
	for (;;) {
		if (len + 4096 + 1 > cap) {
			char *nb;

			cap = cap ? cap * 2 : 8192;
			if (cap > 16 * 1024 * 1024) {
				snprintf(err, errlen, "job file %s is too large", path);
				ret = -EFBIG;
				goto err;
			}
			nb = realloc(buf, cap);
			if (nb == NULL) {
				ret = -ENOMEM;
				snprintf(err, errlen, "out of memory");
				goto err;
			}
			buf = nb;
		}
		n = fread(buf + len, 1, 4096, f);
		len += n;
		if (n < 4096)
			break;
	}
	if (ferror(f)) {
		ret = -EIO;
		snprintf(err, errlen, "cannot read job file %s", path);
		goto err;
	}
	buf[len] = '\0';
	fclose(f);
	*text = buf;
	return 0;
err:
	free(buf);
	fclose(f);
	return ret;
}

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

int bench_parse_jobfile(struct bench_config *cfg, const struct bench_opts *base, const char *text,
			const char *path, char *err, size_t errlen)
{
	struct bench_opts global = *base, job;
	bool in_job = false, in_section = false;
	char *copy = strdup(text), *line, *save = NULL;
	unsigned lineno = 0;
	int ret = 0;

	if (copy == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	/* strtok_r would merge empty lines and break line numbers: walk by hand */
	for (line = copy; line != NULL; line = save) {
		char *nl = strchr(line, '\n'), *s, *eq, *key, *val;
		char msg[512];

		save = nl ? nl + 1 : NULL;
		if (nl)
			*nl = '\0';
		lineno++;
		s = trim(line);
		if (*s == '\0' || *s == ';' || *s == '#')
			continue;
		if (*s == '[') {
			char *close = strchr(s, ']');

			if (close == NULL || trim(close + 1)[0] != '\0' || close == s + 1) {
				snprintf(err, errlen, "%s:%u: bad section header '%s'", path,
					 lineno, s);
				ret = -EINVAL;
				goto out;
			}
			*close = '\0';
			if (in_job) {
				ret = add_job(cfg, &job);
				if (ret)
					goto nomem;
			}
			in_section = true;
			if (strcmp(s + 1, "global") == 0) {
				in_job = false;
				continue;
			}
			job = global;
			in_job = true;
			if (strlen(s + 1) >= sizeof(job.name)) {
				snprintf(err, errlen, "%s:%u: job name too long", path, lineno);
				ret = -EINVAL;
				goto out;
			}
			snprintf(job.name, sizeof(job.name), "%s", s + 1);
			continue;
		}
		if (!in_section) {
			snprintf(err, errlen, "%s:%u: option outside a section ([global] or [name])",
				 path, lineno);
			ret = -EINVAL;
			goto out;
		}
		eq = strchr(s, '=');
		if (eq) {
			*eq = '\0';
			key = trim(s);
			val = trim(eq + 1);
		} else {
			key = s;
			val = NULL;
		}
		if (is_cli_option(key)) {
			snprintf(err, errlen,
				 "%s:%u: option '%s' is only valid on the command line", path,
				 lineno, key);
			ret = -EINVAL;
			goto out;
		}
		ret = bench_set_option(in_job ? &job : &global, key, val, msg, sizeof(msg));
		if (ret) {
			snprintf(err, errlen, "%s:%u: %s", path, lineno, msg);
			ret = -EINVAL;
			goto out;
		}
	}
	if (in_job) {
		ret = add_job(cfg, &job);
		if (ret)
			goto nomem;
	}
	goto out;
nomem:
	snprintf(err, errlen, "out of memory");
out:
	free(copy);
	return ret;
}

int bench_validate(const struct bench_opts *o, char *err, size_t errlen)
{
	bool nbd = bench_target_is_nbd(o->filename);

	if (o->filename[0] == '\0') {
		snprintf(err, errlen,
			 "job '%s': no target; give --filename=PATH, nbd://HOST/EXPORT or "
			 "'nbd+unix:///EXPORT?socket=PATH'", o->name);
		return -EINVAL;
	}
	if (o->ioengine[0]) {
		if (nbd && strcmp(o->ioengine, "nbd") != 0) {
			snprintf(err, errlen, "job '%s': ioengine=%s cannot reach %s; use "
				 "ioengine=nbd or leave it unset", o->name, o->ioengine, o->filename);
			return -EINVAL;
		}
		if (!nbd && strcmp(o->ioengine, "io_uring") != 0) {
			snprintf(err, errlen, "job '%s': ioengine=nbd needs an nbd:// or "
				 "nbd+unix:// URI as filename (--uri=...), not %s", o->name,
				 o->filename);
			return -EINVAL;
		}
	}
	if (!nbd && o->bs % 512 != 0) {
		snprintf(err, errlen,
			 "job '%s': bs=%" PRIu64 " must be a multiple of 512 for O_DIRECT files",
			 o->name, o->bs);
		return -EINVAL;
	}
	if (!nbd && o->offset % 512 != 0) {
		snprintf(err, errlen,
			 "job '%s': offset=%" PRIu64 " must be a multiple of 512 for O_DIRECT "
			 "files", o->name, o->offset);
		return -EINVAL;
	}
	if (o->verify != BENCH_VERIFY_NONE && o->bs < BENCH_VERIFY_HDR) {
		snprintf(err, errlen, "job '%s': verify needs bs of at least %u bytes", o->name,
			 BENCH_VERIFY_HDR);
		return -EINVAL;
	}
	if (o->time_based && o->runtime_ns == 0) {
		snprintf(err, errlen, "job '%s': time_based needs --runtime (e.g. --runtime=10s)",
			 o->name);
		return -EINVAL;
	}
	if (o->size && o->size < o->bs) {
		snprintf(err, errlen, "job '%s': size=%" PRIu64 " is smaller than bs=%" PRIu64,
			 o->name, o->size, o->bs);
		return -EINVAL;
	}
	return 0;
}

int bench_parse_args(struct bench_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
	struct bench_opts global, job;
	bool in_job = false;
	const char **jobfiles = NULL;
	size_t n_jobfiles = 0;
	int ret = 0;

	bench_opts_defaults(&global);
	jobfiles = calloc((size_t)argc + 1, sizeof(*jobfiles));
	if (jobfiles == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		char key[128];
		const char *val = NULL, *eq;
		size_t klen;

		if (strcmp(a, "-h") == 0) {
			cfg->help = true;
			continue;
		}
		if (a[0] != '-' || a[1] == '\0') {
			jobfiles[n_jobfiles++] = a;
			continue;
		}
		if (a[1] != '-') {
			snprintf(err, errlen, "unknown option '%s' (options are --name=value; see "
				 "--help)", a);
			ret = -EINVAL;
			goto out;
		}
		a += 2;
		eq = strchr(a, '=');
		klen = eq ? (size_t)(eq - a) : strlen(a);
		if (klen == 0 || klen >= sizeof(key)) {
			snprintf(err, errlen, "unknown option '%s'", argv[i]);
			ret = -EINVAL;
			goto out;
		}
		memcpy(key, a, klen);
		key[klen] = '\0';
		if (eq)
			val = eq + 1;
		if (is_cli_option(key)) {
			if (val == NULL && cli_option_takes_value(key)) {
				if (i + 1 >= argc) {
					snprintf(err, errlen, "option '--%s' needs a value", key);
					ret = -EINVAL;
					goto out;
				}
				val = argv[++i];
			}
			ret = set_cli_option(cfg, key, val, err, errlen);
			if (ret)
				goto out;
			continue;
		}
		if (find_option(key) == NULL) {
			snprintf(err, errlen, "unknown option '--%s' (see --help)", key);
			ret = -EINVAL;
			goto out;
		}
		/* booleans take a value only as --opt=value, as in fio */
		if (val == NULL && find_option(key)->type != OPT_BOOL &&
		    find_option(key)->type != OPT_IGNORED) {
			if (i + 1 >= argc) {
				snprintf(err, errlen, "option '--%s' needs a value", key);
				ret = -EINVAL;
				goto out;
			}
			val = argv[++i];
		}
		if (name_eq(key, "name")) {
			if (in_job) {
				ret = add_job(cfg, &job);
				if (ret)
					goto nomem;
			}
			job = global;
			in_job = true;
		}
		ret = bench_set_option(in_job ? &job : &global, key, val, err, errlen);
		if (ret) {
			ret = -EINVAL;
			goto out;
		}
	}
	if (cfg->help || cfg->version)
		goto out;
	if (in_job) {
		ret = add_job(cfg, &job);
		if (ret)
			goto nomem;
	}
	for (size_t j = 0; j < n_jobfiles; j++) {
		char *text = NULL;

		ret = read_file(jobfiles[j], &text, err, errlen);
		if (ret)
			goto out;
		ret = bench_parse_jobfile(cfg, &global, text, jobfiles[j], err, errlen);
		free(text);
		if (ret)
			goto out;
	}
	/* fio wants --name; a lone set of options is one job named after the tool */
	if (cfg->n_jobs == 0) {
		if (n_jobfiles) {
			snprintf(err, errlen, "no job defined in the job file(s)");
			ret = -EINVAL;
			goto out;
		}
		snprintf(global.name, sizeof(global.name), "tessera-bench");
		ret = add_job(cfg, &global);
		if (ret)
			goto nomem;
	}
	for (size_t j = 0; j < cfg->n_jobs; j++) {
		ret = bench_validate(&cfg->jobs[j], err, errlen);
		if (ret)
			goto out;
	}
	goto out;
nomem:
	snprintf(err, errlen, "out of memory");
out:
	free(jobfiles);
	return ret;
}

void bench_print_help(FILE *f)
{
	fprintf(f,
		"Usage: tessera-bench [--OPTION=VALUE | --OPTION VALUE]... [JOBFILE]...\n"
		"\n"
		"Measure a block target the way fio does: IOPS, bandwidth and completion latency\n"
		"percentiles.  Option names, job files and the JSON report follow fio, so fio\n"
		"command lines and scripts that read fio's JSON work with tessera-bench.\n"
		"\n"
		"Targets (--filename):\n"
		"  nbd://HOST[:PORT]/EXPORT              NBD over TCP (libnbd, async)\n"
		"  'nbd+unix:///EXPORT?socket=PATH'      NBD over a unix socket\n"
		"  /path/to/file or /dev/BLOCKDEV        io_uring, O_DIRECT (a missing file is\n"
		"                                        created with --size)\n"
		"\n"
		"Job options (command line or job file):\n");
	for (size_t i = 0; i < N_OPTIONS; i++) {
		const struct bench_option *o = &g_options[i];
		char left[64];

		snprintf(left, sizeof(left), "--%s%s%s", o->name, o->arg ? "=" : "",
			 o->arg ? o->arg : "");
		fprintf(f, "  %-26s %s\n", left, o->help);
		if (o->alias) {
			snprintf(left, sizeof(left), "--%s%s%s", o->alias, o->arg ? "=" : "",
				 o->arg ? o->arg : "");
			fprintf(f, "  %-26s same as --%s\n", left, o->name);
		}
	}
	fprintf(f, "\nRun options (command line only):\n");
	for (size_t i = 0; i < N_CLI_OPTIONS; i++) {
		char left[64];

		snprintf(left, sizeof(left), "--%s%s%s", g_cli_options[i].name,
			 g_cli_options[i].arg ? "=" : "",
			 g_cli_options[i].arg ? g_cli_options[i].arg : "");
		fprintf(f, "  %-26s %s\n", left, g_cli_options[i].help);
	}
	fprintf(f,
		"\n"
		"Options before the first --name apply to every job; each --name starts a job.\n"
		"Sizes take binary suffixes (4k = 4096, 1m, 10g); durations default to seconds.\n"
		"With --verify, --numjobs clones of a job each take a disjoint slice of the region.\n"
		"\n"
		"Job files use fio's ini syntax: [global] sets defaults for the jobs after it,\n"
		"each other [section] is a job named after it, key=value or a bare flag per line,\n"
		"comments start with ; or #.  Jobs run at the same time.\n"
		"\n"
		"  ; randrw.fio\n"
		"  [global]\n"
		"  filename=nbd+unix:///vol?socket=/run/tessera/nbd.sock\n"
		"  bs=4k\n"
		"  iodepth=32\n"
		"  runtime=30s\n"
		"  time_based\n"
		"  [mixed]\n"
		"  rw=randrw\n"
		"  rwmixread=70\n"
		"\n"
		"Examples:\n"
		"  tessera-bench --name=rw --filename=/var/tmp/t.img --size=1g --rw=randwrite \\\n"
		"      --bs=4k --iodepth=32 --runtime=10s --time_based\n"
		"  tessera-bench --name=v --filename='nbd+unix:///vol?socket=/tmp/nbd.sock' \\\n"
		"      --rw=randwrite --size=256m --verify=crc32c --output-format=json\n"
		"  tessera-bench randrw.fio --output-format=json | jq '.jobs[0].read.iops'\n"
		"\n"
		"Exit status: 0 on success; 1 on a bad option, an I/O error or a verify failure.\n");
}
