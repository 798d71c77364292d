/*
 * libFuzzer harness: tessera-bench's fio job files (tools/tessera-bench,
 * bench_parse_jobfile) and its command line (bench_parse_args).
 *
 * The input is read two ways:
 *  - as the text of one job file (bytes after the first NUL are dropped, as
 *    read_file's text ends at one): every job it yields goes through
 *    bench_validate;
 *  - split at NUL bytes into at most 32 arguments, as argv[1..] of
 *    tessera-bench.  An argument that does not start with '-' is a job file
 *    to the parser (or the value of "--opt value"): it is put under a
 *    directory that does not exist, so no file (/dev/stdin, /dev/zero) is
 *    ever opened and read; job file text is reached through the first way.
 * Checks: no crash, no leak (ASan); only the documented errnos (the job
 * file's open adds -ENOENT/-ENAMETOOLONG); on an error the message is a
 * non-empty string inside err; on success every job has a name that fits
 * its field (NUL-terminated).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ARGS 32

static void check_err(int ret, const char *err, size_t errlen)
{
	if (ret == 0)
		return;
	if (ret != -EINVAL && ret != -ENOMEM && ret != -ENOENT && ret != -ENAMETOOLONG)
		abort();
	if (memchr(err, '\0', errlen) == NULL || err[0] == '\0')
		abort();
}

static void check_jobs(const struct bench_config *cfg)
{
	for (size_t j = 0; j < cfg->n_jobs; j++)
		if (memchr(cfg->jobs[j].name, '\0', sizeof(cfg->jobs[j].name)) == NULL)
			abort();
}

static void fuzz_jobfile(const char *text)
{
	struct bench_config cfg;
	struct bench_opts base;
	char err[512];
	int ret;

	bench_config_init(&cfg);
	bench_opts_defaults(&base);
	memset(err, 0x55, sizeof(err));
	ret = bench_parse_jobfile(&cfg, &base, text, "fuzz.fio", err, sizeof(err));
	check_err(ret, err, sizeof(err));
	if (ret == 0) {
		check_jobs(&cfg);
		for (size_t j = 0; j < cfg.n_jobs; j++) {
			memset(err, 0x55, sizeof(err));
			check_err(bench_validate(&cfg.jobs[j], err, sizeof(err)), err,
				  sizeof(err));
		}
	}
	bench_config_free(&cfg);
}

#define NO_DIR "/nonexistent-tessera-fuzz/"

static void fuzz_args(const char *buf, size_t size)
{
	struct bench_config cfg;
	char *argv[MAX_ARGS + 2];
	char err[512];
	int argc = 1, ret;
	size_t i = 0;

	argv[0] = "tessera-bench";
	while (i < size && argc <= MAX_ARGS) {
		const char *a = buf + i;
		size_t len = strlen(a);
		bool file = a[0] != '-' || a[1] == '\0';
		char *c = malloc(len + sizeof(NO_DIR));

		if (c == NULL)
			break;
		snprintf(c, len + sizeof(NO_DIR), "%s%s", file ? NO_DIR : "", a);
		argv[argc++] = c;
		i += len + 1;
	}
	argv[argc] = NULL;
	bench_config_init(&cfg);
	memset(err, 0x55, sizeof(err));
	ret = bench_parse_args(&cfg, argc, argv, err, sizeof(err));
	check_err(ret, err, sizeof(err));
	if (ret == 0)
		check_jobs(&cfg);
	bench_config_free(&cfg);
	for (int a = 1; a < argc; a++)
		free(argv[a]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf;

	if (size > 64 * 1024)
		return 0;
	/* one more NUL so the last argument and the text always end */
	buf = malloc(size + 1);
	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	fuzz_jobfile(buf);
	fuzz_args(buf, size);
	free(buf);
	return 0;
}
