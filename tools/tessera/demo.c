/*
 * `tessera demo`: the main job on one machine, end to end.  Creates a data
 * directory on a real disk (O_DIRECT does not work on tmpfs), starts tesserad
 * on it, creates a volume, runs tessera-bench against the volume over NBD
 * with its live progress line, prints the figures, the node's status and the
 * exact commands to reach the volume with nbdinfo, qemu-img and fio, then
 * stops tesserad cleanly and removes the directory; with --keep it keeps
 * serving until Ctrl-C and keeps the directory.
 *
 * tesserad and tessera-bench are found next to this binary: the build tree
 * (tools/tessera/../tesserad/tesserad) or an install (same directory), else
 * on $PATH.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "tessera.h"

static const char HELP_DEMO[] =
"Usage: tessera demo [--data DIR] [--keep] [--size SIZE] [--runtime SEC]\n"
"Run Tessera end to end on this machine: start tesserad on a fresh data\n"
"directory, create a volume 'demo', benchmark it over NBD with tessera-bench\n"
"(4k random writes, then 4k random reads, queue depth 32), print the figures,\n"
"the node's status and the commands to reach the volume, then stop tesserad\n"
"cleanly and remove the directory.\n"
"\n"
"  --data DIR     use DIR (created if missing; kept if it existed before)\n"
"                 default: a new /var/tmp/tessera-demo.XXXXXX\n"
"  --keep         keep serving after the benchmark until Ctrl-C, and keep DIR\n"
"  --size SIZE    size of the volume (default 1G)\n"
"  --runtime SEC  benchmark time in seconds, split between the two jobs\n"
"                 (default 10)\n"
"\n"
"Example:\n"
"  tessera demo --keep\n";

static volatile sig_atomic_t g_stop; /* SIGINT/SIGTERM seen */

static void on_signal(int sig)
{
	g_stop = sig;
}

struct demo {
	char dir[PATH_MAX];
	bool dir_created;       /* we made it: removed at the end unless --keep */
	bool keep;
	uint64_t size;
	unsigned runtime;
	char tesserad[PATH_MAX];
	char bench[PATH_MAX];   /* "" when not found */
	pid_t tesserad_pid;     /* 0 when not running */
	char uri[PATH_MAX + 64];
	struct cli cli;         /* talks to DIR/admin.sock */
};

/* ---- finding binaries ------------------------------------------------- */

static bool executable(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* Look for name in the build tree beside us, then our own dir, then $PATH. */
static bool find_tool(const char *name, char *out, size_t len)
{
	char self[PATH_MAX], *slash;
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	const char *path_env;

	if (n > 0) {
		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			if ((size_t)snprintf(out, len, "%s/../%s/%s", self, name, name) < len &&
			    executable(out))
				return true;
			if ((size_t)snprintf(out, len, "%s/%s", self, name) < len && executable(out))
				return true;
		}
	}
	path_env = getenv("PATH");
	while (path_env && *path_env) {
		size_t seg = strcspn(path_env, ":");

		if (seg && (size_t)snprintf(out, len, "%.*s/%s", (int)seg, path_env, name) < len &&
		    executable(out))
			return true;
		path_env += seg + (path_env[seg] == ':');
	}
	out[0] = '\0';
	return false;
}

/* ---- the data directory ----------------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	if (remove(path))
		fprintf(stderr, "tessera: remove %s: %s\n", path, strerror(errno));
	return 0;
}

static void remove_dir(const char *dir)
{
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

static int make_dir(struct demo *d, const char *want)
{
	struct stat st;

	if (want == NULL) {
		snprintf(d->dir, sizeof(d->dir), "/var/tmp/tessera-demo.XXXXXX");
		if (mkdtemp(d->dir) == NULL) {
			cli_error("cannot create a data directory under /var/tmp: %s (choose one "
				  "with --data DIR, on a disk, not tmpfs)", strerror(errno));
			return EXIT_FAIL;
		}
		d->dir_created = true;
		return 0;
	}
	if (stat(want, &st) == 0) {
		if (!S_ISDIR(st.st_mode)) {
			cli_error("--data %s: not a directory", want);
			return EXIT_FAIL;
		}
	} else if (mkdir(want, 0755) == 0) {
		d->dir_created = true;
	} else {
		cli_error("cannot create %s: %s", want, strerror(errno));
		return EXIT_FAIL;
	}
	if (realpath(want, d->dir) == NULL) {
		cli_error("%s: %s", want, strerror(errno));
		return EXIT_FAIL;
	}
	return 0;
}

/* ---- tesserad --------------------------------------------------------- */

static void show_log_tail(const struct demo *d)
{
	char cmd[PATH_MAX + 64];

	fprintf(stderr, "----- last lines of %s/tesserad.log -----\n", d->dir);
	snprintf(cmd, sizeof(cmd), "tail -n 20 '%s/tesserad.log' >&2", d->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "(no log)\n");
}

static int start_tesserad(struct demo *d)
{
	char log[PATH_MAX + 32];
	pid_t pid;

	snprintf(log, sizeof(log), "%s/tesserad.log", d->dir);
	pid = fork();
	if (pid < 0) {
		cli_error("fork: %s", strerror(errno));
		return EXIT_FAIL;
	}
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

		/* own process group: Ctrl-C reaches us, and we stop tesserad in order */
		setpgid(0, 0);
		/* never outlive the demo, even if it is killed */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (null >= 0)
			dup2(null, 0);
		execl(d->tesserad, "tesserad", "--data", d->dir, (char *)NULL);
		fprintf(stderr, "exec %s: %s\n", d->tesserad, strerror(errno));
		_exit(127);
	}
	d->tesserad_pid = pid;
	return 0;
}

/* Wait until tesserad has written its pid file and answers status. */
static int wait_ready(struct demo *d)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__StatusGet get = TESSERA__ADMIN__STATUS_GET__INIT;
	char pidfile[PATH_MAX + 32];
	int i, status;

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_STATUS;
	req.status = &get;
	snprintf(pidfile, sizeof(pidfile), "%s/tesserad.pid", d->dir);
	for (i = 0; i < 300 && !g_stop; i++) {
		struct tsr_admin_client *c = NULL;
		Tessera__Admin__Response *resp = NULL;
		FILE *f;
		long pid = 0;

		if (waitpid(d->tesserad_pid, &status, WNOHANG) == d->tesserad_pid) {
			d->tesserad_pid = 0;
			cli_error("tesserad exited during start-up (%s %d)",
				  WIFEXITED(status) ? "status" : "signal",
				  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
			show_log_tail(d);
			return EXIT_FAIL;
		}
		f = fopen(pidfile, "re");
		if (f) {
			if (fscanf(f, "%ld", &pid) != 1)
				pid = 0;
			fclose(f);
		}
		if (pid == d->tesserad_pid) {
			char sock[PATH_MAX + 32];

			snprintf(sock, sizeof(sock), "%s/admin.sock", d->dir);
			if (tsr_admin_connect_unix(sock, &c) == 0 &&
			    tsr_admin_call(c, &req, 5000, &resp) == 0 && resp->error == 0) {
				tessera__admin__response__free_unpacked(resp, NULL);
				tsr_admin_close(c);
				return 0;
			}
			if (resp)
				tessera__admin__response__free_unpacked(resp, NULL);
			tsr_admin_close(c);
		}
		usleep(100 * 1000);
	}
	if (!g_stop) {
		cli_error("tesserad is not ready after 30 s");
		show_log_tail(d);
	}
	return EXIT_FAIL;
}

/* SIGTERM and wait (30 s, then SIGKILL).  0 when it exited 0. */
static int stop_tesserad(struct demo *d)
{
	int status = 0, i;

	if (d->tesserad_pid == 0)
		return 0;
	kill(d->tesserad_pid, SIGTERM);
	for (i = 0; i < 300; i++) {
		pid_t r = waitpid(d->tesserad_pid, &status, WNOHANG);

		if (r == d->tesserad_pid)
			break;
		usleep(100 * 1000);
	}
	if (i == 300) {
		cli_error("tesserad did not stop within 30 s of SIGTERM: killing it");
		kill(d->tesserad_pid, SIGKILL);
		waitpid(d->tesserad_pid, &status, 0);
		d->tesserad_pid = 0;
		return EXIT_FAIL;
	}
	d->tesserad_pid = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		cli_error("tesserad did not shut down cleanly (%s %d)",
			  WIFEXITED(status) ? "status" : "signal",
			  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
		show_log_tail(d);
		return EXIT_FAIL;
	}
	return 0;
}

/* ---- the volume and the status ---------------------------------------- */

static int create_volume(struct demo *d)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeCreate create = TESSERA__ADMIN__VOLUME_CREATE__INIT;
	Tessera__Admin__Response *resp = NULL;
	struct tsr_admin_client *c = NULL;
	char size[32];
	int ret;

	ret = cli_connect(&d->cli, &c);
	if (ret)
		return ret;
	create.name = "demo";
	create.size = d->size;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE;
	req.volume_create = &create;
	ret = tsr_admin_call(c, &req, CLI_TIMEOUT_MS, &resp);
	tsr_admin_close(c);
	if (ret) {
		cli_error("create volume demo: %s", strerror(-ret));
		return EXIT_FAIL;
	}
	if (resp->error == -EEXIST) {
		printf("volume 'demo' already exists in %s: using it\n", d->dir);
	} else if (resp->error) {
		cli_error("%s", resp->message);
		tessera__admin__response__free_unpacked(resp, NULL);
		return EXIT_FAIL;
	} else {
		printf("created volume 'demo' (%s)\n", tsr_format_size(d->size, size, sizeof(size)));
	}
	tessera__admin__response__free_unpacked(resp, NULL);
	return 0;
}

static int print_status(struct demo *d)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__StatusGet get = TESSERA__ADMIN__STATUS_GET__INIT;
	Tessera__Admin__Response *resp = NULL;
	struct tsr_admin_client *c = NULL;
	int ret;

	ret = cli_connect(&d->cli, &c);
	if (ret)
		return ret;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_STATUS;
	req.status = &get;
	ret = cli_call(&d->cli, c, &req, &resp);
	tsr_admin_close(c);
	if (ret)
		return ret;
	if (resp->status)
		cli_print_status(resp->status);
	tessera__admin__response__free_unpacked(resp, NULL);
	return 0;
}

/* ---- the benchmark ---------------------------------------------------- */

struct bench_result {
	const char *label;
	bool ok;
	double iops, bw_mib, lat_mean_us, p50_us, p99_us, p999_us;
};

/* Run tessera-bench with args, stderr inherited (progress line), stdout captured. */
static int run_bench(const struct demo *d, char *const args[], char **out)
{
	size_t cap = 65536, len = 0;
	char *buf = malloc(cap);
	int pipefd[2], status;
	pid_t pid;
	ssize_t n;

	*out = NULL;
	if (buf == NULL || pipe2(pipefd, O_CLOEXEC)) {
		free(buf);
		return -errno;
	}
	pid = fork();
	if (pid < 0) {
		free(buf);
		close(pipefd[0]);
		close(pipefd[1]);
		return -errno;
	}
	if (pid == 0) {
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		dup2(pipefd[1], 1);
		execv(d->bench, args);
		fprintf(stderr, "exec %s: %s\n", d->bench, strerror(errno));
		_exit(127);
	}
	close(pipefd[1]);
	for (;;) {
		if (len + 1 >= cap) {
			char *bigger = realloc(buf, cap * 2);

			if (bigger == NULL)
				break;
			buf = bigger;
			cap *= 2;
		}
		n = read(pipefd[0], buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR) {
			if (g_stop)
				kill(pid, SIGINT);
			continue;
		}
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(pipefd[0]);
	buf[len] = '\0';
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		free(buf);
		return -ECHILD;
	}
	*out = buf;
	return 0;
}

static double json_num(json_t *j)
{
	return json_is_number(j) ? json_number_value(j) : 0.0;
}

/* Pick a job's figures out of fio-shaped JSON: jobs[0].<rw>. */
static bool parse_bench(const char *text, const char *rw, struct bench_result *r)
{
	json_error_t err;
	json_t *root = json_loads(text, 0, &err), *side, *clat, *pct;

	if (root == NULL)
		return false;
	side = json_object_get(json_array_get(json_object_get(root, "jobs"), 0), rw);
	if (!json_is_object(side)) {
		json_decref(root);
		return false;
	}
	r->iops = json_num(json_object_get(side, "iops"));
	r->bw_mib = json_num(json_object_get(side, "bw")) / 1024.0; /* fio: KiB/s */
	clat = json_object_get(side, "clat_ns");
	pct = json_object_get(clat, "percentile");
	r->lat_mean_us = json_num(json_object_get(clat, "mean")) / 1000.0;
	r->p50_us = json_num(json_object_get(pct, "50.000000")) / 1000.0;
	r->p99_us = json_num(json_object_get(pct, "99.000000")) / 1000.0;
	r->p999_us = json_num(json_object_get(pct, "99.900000")) / 1000.0;
	json_decref(root);
	return true;
}

static void bench_job(const struct demo *d, const char *rw, unsigned seconds,
		      struct bench_result *r)
{
	char filename[PATH_MAX + 80], runtime[32], *out = NULL;
	char *const args[] = {
		"tessera-bench", "--name=demo", filename, (char *)"--rw", (char *)rw,
		"--bs=4k", "--iodepth=32", runtime, "--time_based", "--output-format=json", NULL,
	};
	int ret;

	snprintf(filename, sizeof(filename), "--filename=%s", d->uri);
	snprintf(runtime, sizeof(runtime), "--runtime=%u", seconds);
	printf("\n== %s: tessera-bench --rw=%s --bs=4k --iodepth=32 --runtime=%u --time_based "
	       "--filename='%s'\n", r->label, rw, seconds, d->uri);
	fflush(stdout);
	ret = run_bench(d, args, &out);
	if (ret) {
		if (!g_stop)
			cli_error("tessera-bench %s failed (see its message above)", rw);
		return;
	}
	r->ok = parse_bench(out, strncmp(rw, "rand", 4) == 0 ? rw + 4 : rw, r);
	if (!r->ok)
		cli_error("could not read tessera-bench's JSON output for %s", rw);
	free(out);
}

static void print_lat(double us)
{
	if (us >= 1000.0)
		printf(" %9.2f ms", us / 1000.0);
	else
		printf(" %9.1f us", us);
}

static void print_figures(const struct bench_result *r, size_t n)
{
	printf("\n%-20s %10s %9s %12s %12s %12s %12s\n", "job", "IOPS", "MiB/s", "lat mean",
	       "p50", "p99", "p99.9");
	for (size_t i = 0; i < n; i++) {
		if (!r[i].ok) {
			printf("%-20s %10s\n", r[i].label, "(failed)");
			continue;
		}
		printf("%-20s %10.0f %9.1f ", r[i].label, r[i].iops, r[i].bw_mib);
		print_lat(r[i].lat_mean_us);
		print_lat(r[i].p50_us);
		print_lat(r[i].p99_us);
		print_lat(r[i].p999_us);
		printf("\n");
	}
}

/* ---- the demo --------------------------------------------------------- */

static void print_reach(const struct demo *d)
{
	printf("\nReach the volume with any NBD client:\n");
	printf("  nbdinfo '%s'\n", d->uri);
	printf("  qemu-img info '%s'\n", d->uri);
	printf("  fio --name=t --ioengine=nbd --uri='%s' --rw=randread --bs=4k --iodepth=32 "
	       "--runtime=10 --time_based\n", d->uri);
	printf("Manage it:\n");
	printf("  tessera --data %s volume show demo\n", d->dir);
}

static int parse_demo_args(struct demo *d, struct cli *cli, int argc, char **argv,
			   const char **data, bool *help)
{
	const char *size_arg = "1G";
	int i;

	*data = cli->data_explicit ? cli->data_dir : NULL;
	d->runtime = 10;
	for (i = 1; i < argc; i++) {
		const char *arg = argv[i], *value = NULL;

		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			fputs(HELP_DEMO, stdout);
			*help = true;
			return 0;
		}
		if (strcmp(arg, "--keep") == 0) {
			d->keep = true;
			continue;
		}
		if (strcmp(arg, "--json") == 0)
			continue; /* the demo is for people: text only */
		if (strncmp(arg, "--", 2) == 0 && strchr(arg, '=')) {
			value = strchr(arg, '=') + 1;
		} else if (strcmp(arg, "--data") == 0 || strcmp(arg, "--size") == 0 ||
			   strcmp(arg, "--runtime") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "tessera: %s needs a value (tessera demo --help)\n",
					arg);
				return EXIT_USAGE;
			}
			value = argv[++i];
		}
		if (value && strncmp(arg, "--data", 6) == 0 && (arg[6] == '\0' || arg[6] == '=')) {
			*data = value;
		} else if (value && strncmp(arg, "--size", 6) == 0 &&
			   (arg[6] == '\0' || arg[6] == '=')) {
			size_arg = value;
		} else if (value && strncmp(arg, "--runtime", 9) == 0 &&
			   (arg[9] == '\0' || arg[9] == '=')) {
			char *end;
			long s = strtol(value, &end, 10);

			if (*end || s < 2 || s > 86400) {
				fprintf(stderr, "tessera: --runtime %s: give seconds, 2 or more\n",
					value);
				return EXIT_USAGE;
			}
			d->runtime = (unsigned)s;
		} else {
			fprintf(stderr, "tessera: unknown demo argument '%s' (tessera demo --help)\n",
				arg);
			return EXIT_USAGE;
		}
	}
	if (tsr_parse_size(size_arg, &d->size) || d->size == 0 || d->size % TSR_BLOCK_SIZE) {
		cli_error("--size %s: give a non-zero multiple of 4 KiB, e.g. 1G", size_arg);
		return EXIT_FAIL;
	}
	return 0;
}

int cli_demo(struct cli *cli, int argc, char **argv)
{
	struct demo *d = calloc(1, sizeof(*d));
	struct bench_result results[2] = {
		{ .label = "4k randwrite QD32" }, { .label = "4k randread QD32" },
	};
	struct sigaction sa = { .sa_handler = on_signal };
	const char *data = NULL;
	bool help = false, bench_ran = false, serving = false;
	int ret, stop_ret;

	if (d == NULL)
		return EXIT_FAIL;
	ret = parse_demo_args(d, cli, argc, argv, &data, &help);
	if (ret || help)
		goto out_free;
	if (!find_tool("tesserad", d->tesserad, sizeof(d->tesserad))) {
		cli_error("tesserad not found next to tessera or on $PATH (build it: cmake "
			  "--build build)");
		ret = EXIT_FAIL;
		goto out_free;
	}
	find_tool("tessera-bench", d->bench, sizeof(d->bench));

	/* no SA_RESTART: a signal interrupts the waits below */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	ret = make_dir(d, data);
	if (ret)
		goto out_free;
	d->cli.data_dir = d->dir;
	snprintf(d->uri, sizeof(d->uri), "nbd+unix:///demo?socket=%s/nbd.sock", d->dir);
	printf("tessera demo: data directory %s\n", d->dir);
	printf("starting %s --data %s (log: %s/tesserad.log)\n", d->tesserad, d->dir, d->dir);
	fflush(stdout);

	ret = start_tesserad(d);
	if (ret)
		goto out_dir;
	ret = wait_ready(d);
	if (ret)
		goto out_stop;
	printf("tesserad is ready (pid %d)\n", (int)d->tesserad_pid);
	ret = create_volume(d);
	if (ret)
		goto out_stop;

	if (d->bench[0] == '\0') {
		printf("\ntessera-bench not found next to tessera or on $PATH: skipping the "
		       "benchmark (build it: cmake --build build)\n");
	} else {
		unsigned half = d->runtime / 2;

		bench_job(d, "randwrite", half, &results[0]);
		if (!g_stop)
			bench_job(d, "randread", d->runtime - half, &results[1]);
		bench_ran = true;
	}
	if (g_stop)
		goto out_stop;
	if (bench_ran)
		print_figures(results, 2);
	printf("\n");
	ret = print_status(d);
	if (ret)
		goto out_stop;
	print_reach(d);
	fflush(stdout);
	if (bench_ran && (!results[0].ok || !results[1].ok))
		ret = EXIT_FAIL;

	if (d->keep) {
		int status;

		printf("\ntesserad (pid %d) keeps serving %s. Press Ctrl-C to stop it; the data "
		       "stays in %s.\n", (int)d->tesserad_pid, d->dir, d->dir);
		fflush(stdout);
		serving = true; /* from here Ctrl-C is the way to end, not an interruption */
		while (!g_stop) {
			pid_t r = waitpid(d->tesserad_pid, &status, 0);

			if (r == d->tesserad_pid) {
				d->tesserad_pid = 0;
				cli_error("tesserad exited on its own");
				show_log_tail(d);
				ret = EXIT_FAIL;
				break;
			}
		}
	}
out_stop:
	stop_ret = stop_tesserad(d);
	if (stop_ret == 0 && d->tesserad_pid == 0 && ret == 0)
		printf("\ntesserad stopped cleanly\n");
	ret = ret ?: stop_ret;
	if (g_stop && ret == 0 && !serving)
		ret = 130;
out_dir:
	if (d->keep || !d->dir_created) {
		printf("data kept in %s (restart: tesserad --data %s)\n", d->dir, d->dir);
	} else if (ret && ret != 130) {
		printf("keeping %s for a look at tesserad.log (remove it with rm -rf %s)\n",
		       d->dir, d->dir);
	} else {
		remove_dir(d->dir);
		printf("removed %s\n", d->dir);
	}
out_free:
	free(d);
	return ret;
}
