/*
 * tessera-bench option parsing: fio option names on the command line
 * (--opt=value and --opt value), job files ([global] + [job] sections),
 * value parsers, and the errors that name a bad option.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "bench.h"

static int parse(struct bench_config *cfg, char *err, size_t errlen, ...)
{
	char *argv[64];
	int argc = 0;
	va_list ap;
	const char *a;

	argv[argc++] = "tessera-bench";
	va_start(ap, errlen);
	while ((a = va_arg(ap, const char *)) != NULL)
		argv[argc++] = (char *)a;
	va_end(ap);
	argv[argc] = NULL;
	bench_config_init(cfg);
	return bench_parse_args(cfg, argc, argv, err, errlen);
}

static void test_cli_both_forms(void **state)
{
	struct bench_config cfg;
	char err[512] = "";

	(void)state;
	assert_int_equal(parse(&cfg, err, sizeof(err), "--name=a", "--filename", "/var/tmp/x",
			       "--rw=randrw", "--rwmixread", "70", "--bs=64k", "--iodepth", "32",
			       "--numjobs=2", "--size=1g", "--offset=4k", "--runtime=1m",
			       "--time_based", "--ramp_time=500ms", "--verify=crc32c",
			       "--output-format=json", "--direct=1", "--ioengine=io_uring",
			       "--group_reporting", NULL),
			 0);
	assert_int_equal(cfg.n_jobs, 1);
	assert_string_equal(cfg.jobs[0].name, "a");
	assert_string_equal(cfg.jobs[0].filename, "/var/tmp/x");
	assert_int_equal(cfg.jobs[0].rw, BENCH_RW_RANDRW);
	assert_int_equal(cfg.jobs[0].rwmixread, 70);
	assert_int_equal(cfg.jobs[0].bs, 65536);
	assert_int_equal(cfg.jobs[0].iodepth, 32);
	assert_int_equal(cfg.jobs[0].numjobs, 2);
	assert_int_equal(cfg.jobs[0].size, 1ull << 30);
	assert_int_equal(cfg.jobs[0].offset, 4096);
	assert_int_equal(cfg.jobs[0].runtime_ns, 60000000000ull);
	assert_true(cfg.jobs[0].time_based);
	assert_int_equal(cfg.jobs[0].ramp_ns, 500000000ull);
	assert_int_equal(cfg.jobs[0].verify, BENCH_VERIFY_CRC32C);
	assert_true(cfg.jobs[0].do_verify);
	assert_true(cfg.jobs[0].group_reporting);
	assert_int_equal(cfg.format, BENCH_FMT_JSON);
	bench_config_free(&cfg);
}

static void test_cli_globals_and_jobs(void **state)
{
	struct bench_config cfg;
	char err[512] = "";

	(void)state;
	/* options before the first --name are shared; each --name starts a job */
	assert_int_equal(parse(&cfg, err, sizeof(err), "--filename=nbd://127.0.0.1/x",
			       "--bs=8k", "--name=one", "--rw=write", "--name=two",
			       "--rw=readwrite", "--rwmixwrite=30", NULL),
			 0);
	assert_int_equal(cfg.n_jobs, 2);
	assert_string_equal(cfg.jobs[0].name, "one");
	assert_int_equal(cfg.jobs[0].rw, BENCH_RW_WRITE);
	assert_int_equal(cfg.jobs[0].bs, 8192);
	assert_string_equal(cfg.jobs[1].name, "two");
	assert_int_equal(cfg.jobs[1].rw, BENCH_RW_RW);
	assert_int_equal(cfg.jobs[1].rwmixread, 70);
	assert_string_equal(cfg.jobs[1].filename, "nbd://127.0.0.1/x");
	bench_config_free(&cfg);
}

static void test_cli_unknown_option(void **state)
{
	struct bench_config cfg;
	char err[512] = "";

	(void)state;
	assert_int_not_equal(parse(&cfg, err, sizeof(err), "--filename=/x", "--iodeph=4", NULL), 0);
	assert_non_null(strstr(err, "iodeph"));
	bench_config_free(&cfg);
	assert_int_not_equal(parse(&cfg, err, sizeof(err), "-x", NULL), 0);
	assert_non_null(strstr(err, "-x"));
	bench_config_free(&cfg);
}

static void test_cli_bad_values(void **state)
{
	struct bench_config cfg;
	char err[512] = "";

	(void)state;
	assert_int_not_equal(parse(&cfg, err, sizeof(err), "--filename=/x", "--rw=sideways", NULL),
			     0);
	assert_non_null(strstr(err, "sideways"));
	bench_config_free(&cfg);
	assert_int_not_equal(parse(&cfg, err, sizeof(err), "--filename=/x", "--iodepth=0", NULL), 0);
	assert_non_null(strstr(err, "iodepth"));
	bench_config_free(&cfg);
	assert_int_not_equal(parse(&cfg, err, sizeof(err), "--filename=/x", "--bs", NULL), 0);
	assert_non_null(strstr(err, "needs a value"));
	bench_config_free(&cfg);
	assert_int_not_equal(parse(&cfg, err, sizeof(err), "--filename=/x", "--bs=1000", NULL), 0);
	assert_non_null(strstr(err, "512"));
	bench_config_free(&cfg);
	assert_int_not_equal(parse(&cfg, err, sizeof(err), "--filename=/x", "--time_based", NULL),
			     0);
	assert_non_null(strstr(err, "runtime"));
	bench_config_free(&cfg);
	assert_int_not_equal(parse(&cfg, err, sizeof(err), "--filename=/x", "--ioengine=libaio",
				   NULL), 0);
	assert_non_null(strstr(err, "libaio"));
	bench_config_free(&cfg);
	assert_int_not_equal(parse(&cfg, err, sizeof(err), "--rw=read", NULL), 0);
	assert_non_null(strstr(err, "no target"));
	bench_config_free(&cfg);
}

static void test_cli_help(void **state)
{
	struct bench_config cfg;
	char err[512] = "";

	(void)state;
	assert_int_equal(parse(&cfg, err, sizeof(err), "--help", NULL), 0);
	assert_true(cfg.help);
	bench_config_free(&cfg);
}

static void test_jobfile(void **state)
{
	struct bench_config cfg;
	struct bench_opts base;
	char err[512] = "";
	const char *text = "; a comment\n"
			   "# another\n"
			   "[global]\n"
			   "filename = nbd+unix:///v?socket=/tmp/s\n"
			   "iodepth=16\n"
			   "time_based\n"
			   "runtime=10\n"
			   "\n"
			   "[reader]\n"
			   "rw=randread\n"
			   "[writer]\n"
			   "rw=write\n"
			   "bs=1m\n"
			   "iodepth=8\n";

	(void)state;
	bench_config_init(&cfg);
	bench_opts_defaults(&base);
	base.bs = 8192; /* a command-line global the file builds on */
	assert_int_equal(bench_parse_jobfile(&cfg, &base, text, "t.fio", err, sizeof(err)), 0);
	assert_int_equal(cfg.n_jobs, 2);
	assert_string_equal(cfg.jobs[0].name, "reader");
	assert_int_equal(cfg.jobs[0].rw, BENCH_RW_RANDREAD);
	assert_int_equal(cfg.jobs[0].iodepth, 16);
	assert_int_equal(cfg.jobs[0].bs, 8192);
	assert_true(cfg.jobs[0].time_based);
	assert_int_equal(cfg.jobs[0].runtime_ns, 10000000000ull);
	assert_string_equal(cfg.jobs[0].filename, "nbd+unix:///v?socket=/tmp/s");
	assert_string_equal(cfg.jobs[1].name, "writer");
	assert_int_equal(cfg.jobs[1].bs, 1 << 20);
	assert_int_equal(cfg.jobs[1].iodepth, 8);
	bench_config_free(&cfg);
}

static void test_jobfile_errors(void **state)
{
	struct bench_config cfg;
	struct bench_opts base;
	char err[512] = "";

	(void)state;
	bench_opts_defaults(&base);
	bench_config_init(&cfg);
	assert_int_not_equal(bench_parse_jobfile(&cfg, &base, "[j]\nrw=read\nbogus=1\n", "b.fio",
						 err, sizeof(err)), 0);
	assert_non_null(strstr(err, "b.fio:3"));
	assert_non_null(strstr(err, "bogus"));
	bench_config_free(&cfg);
	bench_config_init(&cfg);
	assert_int_not_equal(bench_parse_jobfile(&cfg, &base, "rw=read\n", "c.fio", err,
						 sizeof(err)), 0);
	assert_non_null(strstr(err, "outside a section"));
	bench_config_free(&cfg);
	bench_config_init(&cfg);
	assert_int_not_equal(bench_parse_jobfile(&cfg, &base, "[j\n", "d.fio", err, sizeof(err)),
			     0);
	assert_non_null(strstr(err, "section"));
	bench_config_free(&cfg);
	bench_config_init(&cfg);
	assert_int_not_equal(bench_parse_jobfile(&cfg, &base, "[j]\noutput-format=json\n", "e.fio",
						 err, sizeof(err)), 0);
	assert_non_null(strstr(err, "command line"));
	bench_config_free(&cfg);
}

static void test_jobfile_from_argv(void **state)
{
	struct bench_config cfg;
	char err[512] = "";
	char path[] = "/tmp/bench_options_XXXXXX";
	int fd = mkstemp(path);
	const char *text = "[global]\nfilename=/var/tmp/x\n[j1]\nrw=randwrite\n";

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	assert_int_equal(parse(&cfg, err, sizeof(err), "--iodepth=4", path, NULL), 0);
	assert_int_equal(cfg.n_jobs, 1);
	assert_string_equal(cfg.jobs[0].name, "j1");
	assert_int_equal(cfg.jobs[0].iodepth, 4);
	assert_int_equal(cfg.jobs[0].rw, BENCH_RW_RANDWRITE);
	bench_config_free(&cfg);
	unlink(path);
	assert_int_not_equal(parse(&cfg, err, sizeof(err), "/nonexistent/job.fio", NULL), 0);
	assert_non_null(strstr(err, "/nonexistent/job.fio"));
	bench_config_free(&cfg);
}

static void test_value_parsers(void **state)
{
	uint64_t v;
	unsigned pct;
	bool b;

	(void)state;
	assert_int_equal(bench_parse_size("4k", &v, &pct), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(pct, 0);
	assert_int_equal(bench_parse_size("1M", &v, &pct), 0);
	assert_int_equal(v, 1 << 20);
	assert_int_equal(bench_parse_size("2GiB", &v, &pct), 0);
	assert_int_equal(v, 2ull << 30);
	assert_int_equal(bench_parse_size("50%", &v, &pct), 0);
	assert_int_equal(pct, 50);
	assert_int_not_equal(bench_parse_size("101%", &v, &pct), 0);
	assert_int_not_equal(bench_parse_size("4q", &v, &pct), 0);
	assert_int_equal(bench_parse_time("30", &v), 0);
	assert_int_equal(v, 30000000000ull);
	assert_int_equal(bench_parse_time("10s", &v), 0);
	assert_int_equal(v, 10000000000ull);
	assert_int_equal(bench_parse_time("250ms", &v), 0);
	assert_int_equal(v, 250000000ull);
	assert_int_equal(bench_parse_time("2m", &v), 0);
	assert_int_equal(v, 120000000000ull);
	assert_int_not_equal(bench_parse_time("5x", &v), 0);
	assert_int_not_equal(bench_parse_time("-1", &v), 0);
	assert_int_equal(bench_parse_bool(NULL, &b), 0);
	assert_true(b);
	assert_int_equal(bench_parse_bool("0", &b), 0);
	assert_false(b);
	assert_int_not_equal(bench_parse_bool("2", &b), 0);
	assert_true(bench_target_is_nbd("nbd+unix:///x?socket=/s"));
	assert_true(bench_target_is_nbd("nbd://h/e"));
	assert_false(bench_target_is_nbd("/dev/nbd0"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cli_both_forms),
		cmocka_unit_test(test_cli_globals_and_jobs),
		cmocka_unit_test(test_cli_unknown_option),
		cmocka_unit_test(test_cli_bad_values),
		cmocka_unit_test(test_cli_help),
		cmocka_unit_test(test_jobfile),
		cmocka_unit_test(test_jobfile_errors),
		cmocka_unit_test(test_jobfile_from_argv),
		cmocka_unit_test(test_value_parsers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
