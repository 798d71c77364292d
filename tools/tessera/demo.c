/*
 * `tessera demo`: the main job on one machine, end to end.
 *
 * By default a 3-node cluster on loopback: a demo directory on a real disk
 * (O_DIRECT does not work on tmpfs) with one data directory per node
 * (DIR/n1, DIR/n2, DIR/n3); three tesserad processes listening on free
 * 127.0.0.1 ports, in zones z1, z2, z3; n1 holds the embedded metadata store
 * (--meta) and the others --join it with its token (DIR/n1/admin.token).
 * Then a 3-replica volume placed across the zones, attached on n1 (its
 * coordinator, exported over NBD there), tessera-bench against it with its
 * live progress line, the figures, the volume's status and the cluster's, the
 * exact commands to reach the volume with nbdinfo, qemu-img and fio, and a
 * clean stop of the three nodes (the volume detached first).  With --keep the
 * nodes keep serving until Ctrl-C and the directory stays.
 *
 * --standalone runs the single-node demo instead: one tesserad on DIR, a
 * plain volume, the same benchmark and the node's status.
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
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <jansson.h>

#include "tessera.h"

static const char HELP_DEMO[] =
"Usage: tessera demo [--standalone] [--data DIR] [--keep] [--size SIZE] [--runtime SEC]\n"
"Run Tessera end to end on this machine: start a 3-node cluster on loopback\n"
"(three tesserad processes, zones z1 z2 z3, node n1 holding the metadata\n"
"store), create a 3-replica volume 'demo', attach it on n1, benchmark it over\n"
"NBD with tessera-bench (4k random writes, then 4k random reads, queue depth\n"
"32), print the figures, the volume's status (copies, epoch, resync), the\n"
"cluster's status and the commands to reach the volume, then detach it, stop\n"
"the three nodes cleanly and remove the directory.\n"
"\n"
"  --standalone   one tesserad, no cluster: the single-node demo\n"
"  --data DIR     use DIR (created if missing; kept if it existed before);\n"
"                 the nodes' data directories are DIR/n1, DIR/n2, DIR/n3\n"
"                 default: a new /var/tmp/tessera-demo.XXXXXX\n"
"  --keep         keep serving after the benchmark until Ctrl-C, and keep DIR\n"
"                 (try killing a node and watching its copy resync)\n"
"  --size SIZE    size of the volume (default 1G)\n"
"  --runtime SEC  benchmark time in seconds, split between the two jobs\n"
"                 (default 10)\n"
"\n"
"Example:\n"
"  tessera demo --keep\n"
"  tessera demo --standalone --runtime 4\n";

#define DEMO_NODES 3
#define DEMO_VOLUME "demo"
#define CLUSTER_WAIT_S 30 /* for the nodes to join and be alive */

static volatile sig_atomic_t g_stop; /* SIGINT/SIGTERM seen */

static void on_signal(int sig)
{
	g_stop = sig;
}

/* One tesserad of the demo. */
struct node {
	char id[8];             /* "n1"; "" standalone */
	char dir[PATH_MAX];     /* its --data */
	char listen[32];        /* "127.0.0.1:PORT"; "" standalone */
	char *argv[24];         /* its command line (strings in args) */
	char args[PATH_MAX * 3];
	pid_t pid;              /* 0 when not running */
	struct cli cli;         /* talks to dir/admin.sock */
};

struct demo {
	char dir[PATH_MAX];
	bool dir_created;       /* we made it: removed at the end unless --keep */
	bool keep;
	bool standalone;
	uint64_t size;
	unsigned runtime;
	char tesserad[PATH_MAX];
	char bench[PATH_MAX];   /* "" when not found */
	struct node nodes[DEMO_NODES];
	unsigned n_nodes;
	char uri[PATH_MAX + 64];
	bool attached;          /* we attached the volume: detach before stopping */
};

/* ---- finding binaries ------------------------------------------------- */

static bool executable(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

static bool found(char *out, size_t len)
{
	char real[PATH_MAX];

	if (!executable(out))
		return false;
	if (realpath(out, real) && strlen(real) < len)
		memcpy(out, real, strlen(real) + 1); /* no "tools/tessera/../" in what we print */
	return true;
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
			    found(out, len))
				return true;
			if ((size_t)snprintf(out, len, "%s/%s", self, name) < len && found(out, len))
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

/*
 * Ports for the nodes' --listen: those of an earlier run on this DIR (in
 * DIR/ports, so that restarted nodes keep the addresses the metadata store
 * knows), else free ones from the kernel (all bound at once, so distinct).
 */
static int pick_ports(struct demo *d, unsigned ports[DEMO_NODES])
{
	char path[PATH_MAX + 16];
	int fds[DEMO_NODES], ret = 0;
	unsigned i;
	FILE *f;

	snprintf(path, sizeof(path), "%s/ports", d->dir);
	f = fopen(path, "re");
	if (f) {
		bool ok = fscanf(f, "%u %u %u", &ports[0], &ports[1], &ports[2]) == 3;

		fclose(f);
		if (ok)
			return 0;
	}
	for (i = 0; i < DEMO_NODES; i++) {
		struct sockaddr_in sa = { .sin_family = AF_INET,
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		socklen_t len = sizeof(sa);

		fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&sa, sizeof(sa)) ||
		    getsockname(fds[i], (struct sockaddr *)&sa, &len)) {
			cli_error("cannot find a free TCP port on 127.0.0.1: %s", strerror(errno));
			ret = EXIT_FAIL;
			i++;
			break;
		}
		ports[i] = ntohs(sa.sin_port);
	}
	while (i > 0)
		if (fds[--i] >= 0)
			close(fds[i]);
	if (ret)
		return ret;
	f = fopen(path, "we");
	if (f) {
		fprintf(f, "%u %u %u\n", ports[0], ports[1], ports[2]);
		fclose(f);
	}
	return 0;
}

/* ---- the nodes -------------------------------------------------------- */

/* Append one argument to n's command line. */
static void node_arg(struct node *n, size_t *argc, size_t *off, const char *arg)
{
	size_t len = strlen(arg) + 1;

	if (*argc + 1 >= sizeof(n->argv) / sizeof(n->argv[0]) || *off + len > sizeof(n->args))
		return; /* cannot happen with the arguments below */
	memcpy(n->args + *off, arg, len);
	n->argv[(*argc)++] = n->args + *off;
	n->argv[*argc] = NULL;
	*off += len;
}

/* Fill in node i: its directory and command line. */
static int node_init(struct demo *d, unsigned i, const unsigned ports[DEMO_NODES])
{
	struct node *n = &d->nodes[i];
	size_t argc = 0, off = 0, len = strlen(d->dir);
	char buf[PATH_MAX + 32];

	if (len + sizeof(n->id) + 1 > sizeof(n->dir)) {
		cli_error("%s: the path is too long", d->dir);
		return EXIT_FAIL;
	}
	memcpy(n->dir, d->dir, len + 1);
	n->cli.data_dir = n->dir;
	node_arg(n, &argc, &off, "tesserad");
	if (d->standalone) {
		node_arg(n, &argc, &off, "--data");
		node_arg(n, &argc, &off, n->dir);
		return 0;
	}
	snprintf(n->id, sizeof(n->id), "n%u", i + 1);
	n->dir[len] = '/';
	memcpy(n->dir + len + 1, n->id, strlen(n->id) + 1);
	if (mkdir(n->dir, 0755) && errno != EEXIST) {
		cli_error("cannot create %s: %s", n->dir, strerror(errno));
		return EXIT_FAIL;
	}
	snprintf(n->listen, sizeof(n->listen), "127.0.0.1:%u", ports[i]);
	node_arg(n, &argc, &off, "--data");
	node_arg(n, &argc, &off, n->dir);
	node_arg(n, &argc, &off, "--listen");
	node_arg(n, &argc, &off, n->listen);
	node_arg(n, &argc, &off, "--node-id");
	node_arg(n, &argc, &off, n->id);
	node_arg(n, &argc, &off, "--zone");
	snprintf(buf, sizeof(buf), "z%u", i + 1);
	node_arg(n, &argc, &off, buf);
	if (i == 0) {
		node_arg(n, &argc, &off, "--meta");
		return 0;
	}
	node_arg(n, &argc, &off, "--join");
	node_arg(n, &argc, &off, d->nodes[0].listen);
	node_arg(n, &argc, &off, "--token-file");
	snprintf(buf, sizeof(buf), "%s/admin.token", d->nodes[0].dir);
	node_arg(n, &argc, &off, buf);
	return 0;
}

/* n's command line as a shell would take it (for "restart it with"). */
static void print_cmdline(FILE *out, const struct demo *d, const struct node *n)
{
	fputs(d->tesserad, out);
	for (size_t i = 1; n->argv[i]; i++)
		fprintf(out, " %s", n->argv[i]);
}

static const char *node_name(const struct node *n)
{
	return n->id[0] ? n->id : "tesserad";
}

static void show_log_tail(const struct node *n)
{
	char cmd[PATH_MAX + 64];

	fprintf(stderr, "----- last lines of %s/tesserad.log -----\n", n->dir);
	snprintf(cmd, sizeof(cmd), "tail -n 20 '%s/tesserad.log' >&2", n->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "(no log)\n");
}

static int start_node(const struct demo *d, struct node *n)
{
	char log[PATH_MAX + 32];
	pid_t pid;

	snprintf(log, sizeof(log), "%s/tesserad.log", n->dir);
	pid = fork();
	if (pid < 0) {
		cli_error("fork: %s", strerror(errno));
		return EXIT_FAIL;
	}
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

		/* own process group: Ctrl-C reaches us, and we stop the nodes in order */
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
		execv(d->tesserad, n->argv);
		fprintf(stderr, "exec %s: %s\n", d->tesserad, strerror(errno));
		_exit(127);
	}
	n->pid = pid;
	return 0;
}

static void describe_exit(char *buf, size_t len, int status)
{
	snprintf(buf, len, "%s %d", WIFEXITED(status) ? "status" : "signal",
		 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

/* Wait until the node has written its pid file and answers status. */
static int wait_ready(struct node *n)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__StatusGet get = TESSERA__ADMIN__STATUS_GET__INIT;
	char pidfile[PATH_MAX + 32], how[32];
	int i, status;

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_STATUS;
	req.status = &get;
	snprintf(pidfile, sizeof(pidfile), "%s/tesserad.pid", n->dir);
	for (i = 0; i < 300 && !g_stop; i++) {
		struct tsr_admin_client *c = NULL;
		Tessera__Admin__Response *resp = NULL;
		FILE *f;
		long pid = 0;

		if (waitpid(n->pid, &status, WNOHANG) == n->pid) {
			n->pid = 0;
			describe_exit(how, sizeof(how), status);
			cli_error("%s exited during start-up (%s)", node_name(n), how);
			show_log_tail(n);
			return EXIT_FAIL;
		}
		f = fopen(pidfile, "re");
		if (f) {
			if (fscanf(f, "%ld", &pid) != 1)
				pid = 0;
			fclose(f);
		}
		if (pid == n->pid) {
			char sock[PATH_MAX + 32];

			snprintf(sock, sizeof(sock), "%s/admin.sock", n->dir);
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
		cli_error("%s is not ready after 30 s", node_name(n));
		show_log_tail(n);
	}
	return EXIT_FAIL;
}

/* SIGTERM and wait (30 s, then SIGKILL).  0 when it exited 0. */
static int stop_node(struct node *n)
{
	int status = 0, i;
	char how[32];

	if (n->pid == 0)
		return 0;
	kill(n->pid, SIGTERM);
	for (i = 0; i < 300; i++) {
		pid_t r = waitpid(n->pid, &status, WNOHANG);

		if (r == n->pid)
			break;
		usleep(100 * 1000);
	}
	if (i == 300) {
		cli_error("%s did not stop within 30 s of SIGTERM: killing it", node_name(n));
		kill(n->pid, SIGKILL);
		waitpid(n->pid, &status, 0);
		n->pid = 0;
		return EXIT_FAIL;
	}
	n->pid = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		describe_exit(how, sizeof(how), status);
		cli_error("%s did not shut down cleanly (%s)", node_name(n), how);
		show_log_tail(n);
		return EXIT_FAIL;
	}
	return 0;
}

/* ---- requests to node 1 ----------------------------------------------- */

/*
 * One request to node 1 through its unix socket; errors printed.  0 with
 * *resp, or EXIT_FAIL.  quiet_err: a server error equal to it is returned as
 * a reply (the caller handles it), not printed.
 */
static int ask(struct demo *d, Tessera__Admin__Request *req, int quiet_err,
	       Tessera__Admin__Response **resp)
{
	struct tsr_admin_client *c = NULL;
	char why[512];
	int ret;

	*resp = NULL;
	ret = cli_connect(&d->nodes[0].cli, &c);
	if (ret)
		return ret;
	ret = cli_call_quiet(&d->nodes[0].cli, c, req, resp, why, sizeof(why));
	tsr_admin_close(c);
	if (ret) {
		cli_error("%s", why);
		return EXIT_FAIL;
	}
	if ((*resp)->error && (*resp)->error != quiet_err) {
		cli_error("%s", (*resp)->message[0] ? (*resp)->message :
			  strerror(-(*resp)->error));
		tessera__admin__response__free_unpacked(*resp, NULL);
		*resp = NULL;
		return EXIT_FAIL;
	}
	return 0;
}

/* Until node list shows every node alive. */
static int wait_cluster(struct demo *d)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__NodeList list = TESSERA__ADMIN__NODE_LIST__INIT;
	unsigned alive = 0;

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_NODE_LIST;
	req.node_list = &list;
	for (int i = 0; i < CLUSTER_WAIT_S * 5 && !g_stop; i++) {
		Tessera__Admin__Response *resp = NULL;

		if (ask(d, &req, 0, &resp))
			return EXIT_FAIL;
		alive = 0;
		for (size_t k = 0; k < resp->n_nodes; k++)
			alive += resp->nodes[k]->alive;
		tessera__admin__response__free_unpacked(resp, NULL);
		if (alive >= d->n_nodes)
			return 0;
		usleep(200 * 1000);
	}
	if (!g_stop) {
		cli_error("only %u of %u nodes alive after %d s", alive, d->n_nodes,
			  CLUSTER_WAIT_S);
		for (unsigned i = 1; i < d->n_nodes; i++)
			show_log_tail(&d->nodes[i]);
	}
	return EXIT_FAIL;
}

static int create_volume(struct demo *d)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeCreate create = TESSERA__ADMIN__VOLUME_CREATE__INIT;
	Tessera__Admin__Response *resp = NULL;
	char size[32];
	int ret;

	create.name = DEMO_VOLUME;
	create.size = d->size;
	if (!d->standalone) {
		create.replicas = DEMO_NODES;
		create.min_replicas = 2;
		create.failure_domain = "zone";
	}
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE;
	req.volume_create = &create;
	ret = ask(d, &req, -EEXIST, &resp);
	if (ret)
		return ret;
	if (resp->error == -EEXIST)
		printf("volume '%s' already exists in %s: using it\n", DEMO_VOLUME, d->dir);
	else if (d->standalone)
		printf("created volume '%s' (%s)\n", DEMO_VOLUME,
		       tsr_format_size(d->size, size, sizeof(size)));
	else
		printf("created volume '%s' (%s, 3 replicas in zones z1 z2 z3, writes need 2 in "
		       "sync)\n", DEMO_VOLUME, tsr_format_size(d->size, size, sizeof(size)));
	tessera__admin__response__free_unpacked(resp, NULL);
	return 0;
}

/* Attach on n1; the NBD URI comes from the reply (unix socket preferred). */
static int attach_volume(struct demo *d)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeAttach attach = TESSERA__ADMIN__VOLUME_ATTACH__INIT;
	Tessera__Admin__Response *resp = NULL;
	const Tessera__Admin__Volume *v = NULL;
	int ret;

	attach.name = DEMO_VOLUME;
	attach.node = d->nodes[0].id;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ATTACH;
	req.volume_attach = &attach;
	ret = ask(d, &req, 0, &resp);
	if (ret)
		return ret;
	d->attached = true;
	if (resp->n_volumes == 1)
		v = resp->volumes[0];
	for (size_t i = 0; v && i < v->n_nbd_uris; i++) {
		if (strncmp(v->nbd_uris[i], "nbd+unix:", 9) == 0) {
			snprintf(d->uri, sizeof(d->uri), "%s", v->nbd_uris[i]);
			break;
		}
	}
	if (v)
		printf("attached it on %s (its coordinator), epoch %" PRIu64 "\n",
		       d->nodes[0].id, v->epoch);
	else
		printf("attached it on %s (its coordinator)\n", d->nodes[0].id);
	tessera__admin__response__free_unpacked(resp, NULL);
	return 0;
}

static void detach_volume(struct demo *d)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeDetach detach = TESSERA__ADMIN__VOLUME_DETACH__INIT;
	Tessera__Admin__Response *resp = NULL;

	if (!d->attached || d->nodes[0].pid == 0)
		return;
	detach.name = DEMO_VOLUME;
	/* the demo ends: a client the user left connected is closed (its
	 * requests in flight answered) rather than the detach refused */
	detach.force = true;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DETACH;
	req.volume_detach = &detach;
	if (ask(d, &req, 0, &resp) == 0) {
		printf("\ndetached volume '%s'", DEMO_VOLUME);
		if (resp->clients_disconnected)
			printf(" (closed the connections of %u NBD client%s still connected)",
			       resp->clients_disconnected, resp->clients_disconnected == 1 ? "" : "s");
		printf("\n");
		tessera__admin__response__free_unpacked(resp, NULL);
	}
	d->attached = false;
}

/* What `tessera status` (standalone) or `volume status` + `cluster status` print. */
static int print_state(struct demo *d)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__StatusGet get = TESSERA__ADMIN__STATUS_GET__INIT;
	Tessera__Admin__VolumeStatusGet vget = TESSERA__ADMIN__VOLUME_STATUS_GET__INIT;
	Tessera__Admin__ClusterStatusGet cget = TESSERA__ADMIN__CLUSTER_STATUS_GET__INIT;
	Tessera__Admin__NodeList list = TESSERA__ADMIN__NODE_LIST__INIT;
	Tessera__Admin__Response *resp = NULL;
	int ret;

	if (d->standalone) {
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_STATUS;
		req.status = &get;
		ret = ask(d, &req, 0, &resp);
		if (ret)
			return ret;
		if (resp->status)
			cli_print_status(resp->status);
		tessera__admin__response__free_unpacked(resp, NULL);
		return 0;
	}
	printf("== tessera volume status %s\n", DEMO_VOLUME);
	vget.name = DEMO_VOLUME;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_STATUS;
	req.volume_status = &vget;
	ret = ask(d, &req, 0, &resp);
	if (ret)
		return ret;
	if (resp->volume_status)
		cli_print_volume_status(resp->volume_status);
	tessera__admin__response__free_unpacked(resp, NULL);

	printf("\n== tessera cluster status\n");
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_CLUSTER_STATUS;
	req.cluster_status = &cget;
	ret = ask(d, &req, 0, &resp);
	if (ret)
		return ret;
	if (resp->cluster_status)
		cli_print_cluster(resp->cluster_status, NULL, 0);
	tessera__admin__response__free_unpacked(resp, NULL);
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_NODE_LIST;
	req.node_list = &list;
	ret = ask(d, &req, 0, &resp);
	if (ret)
		return ret;
	printf("\n");
	cli_print_nodes(resp->nodes, resp->n_nodes);
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
	if (d->standalone) {
		printf("  tessera --data %s volume show %s\n", d->dir, DEMO_VOLUME);
		return;
	}
	printf("  export TESSERA_CLUSTER=%s TESSERA_TOKEN_FILE=%s/admin.token\n",
	       d->nodes[0].listen, d->nodes[0].dir);
	printf("  tessera volume status %s --watch\n", DEMO_VOLUME);
	printf("  tessera volume scrub %s\n", DEMO_VOLUME);
	printf("  tessera node list\n");
}

/* --keep: serve until Ctrl-C; a node that exits is reported, the others go on. */
static int keep_serving(struct demo *d)
{
	unsigned running = 0;
	int ret = 0;

	for (unsigned i = 0; i < d->n_nodes; i++)
		running += d->nodes[i].pid != 0;
	if (d->standalone) {
		printf("\ntesserad (pid %d) keeps serving %s.\n", (int)d->nodes[0].pid, d->dir);
	} else {
		printf("\nThe cluster keeps serving:");
		for (unsigned i = 0; i < d->n_nodes; i++)
			printf(" %s pid %d%s", d->nodes[i].id, (int)d->nodes[i].pid,
			       i + 1 < d->n_nodes ? "," : ".\n");
		printf("Try a node loss: kill -9 %d (n3), watch 'tessera volume status %s' "
		       "(with the exports above) as\nthe volume keeps serving on two copies, "
		       "then restart n3 and watch its copy resync:\n  ",
		       (int)d->nodes[d->n_nodes - 1].pid, DEMO_VOLUME);
		print_cmdline(stdout, d, &d->nodes[d->n_nodes - 1]);
		printf(" >>%s/tesserad.log 2>&1 &\n", d->nodes[d->n_nodes - 1].dir);
		printf("(a node you restart yourself is yours to stop: kill PID)\n");
	}
	printf("Press Ctrl-C to stop %s; the data stays in %s.\n",
	       d->standalone ? "it" : "the nodes", d->dir);
	fflush(stdout);
	while (!g_stop && running > 0) {
		int status;
		char how[32];
		pid_t r = waitpid(-1, &status, 0);

		if (r < 0) {
			if (errno == ECHILD)
				break;
			continue; /* EINTR: g_stop decides */
		}
		for (unsigned i = 0; i < d->n_nodes; i++) {
			struct node *n = &d->nodes[i];

			if (n->pid != r)
				continue;
			n->pid = 0;
			running--;
			describe_exit(how, sizeof(how), status);
			cli_error("%s exited on its own (%s)", node_name(n), how);
			if (!d->standalone && running > 0) {
				fprintf(stderr, "restart it with: ");
				print_cmdline(stderr, d, n);
				fprintf(stderr, " >>%s/tesserad.log 2>&1 &\n", n->dir);
			} else {
				show_log_tail(n);
				ret = EXIT_FAIL;
			}
		}
	}
	return ret;
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
		if (strcmp(arg, "--standalone") == 0) {
			d->standalone = true;
			continue;
		}
		if (strcmp(arg, "--json") == 0)
			continue; /* the demo is for people: text only */
		if (strncmp(arg, "--", 2) == 0 && strchr(arg, '=')) {
			value = strchr(arg, '=') + 1;
		} else if (strcmp(arg, "--data") == 0 || strcmp(arg, "--size") == 0 ||
			   strcmp(arg, "--runtime") == 0) {
			if (i + 1 >= argc)
				return cli_usage_error("%s needs a value (tessera demo --help)", arg);
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

			if (*end || s < 2 || s > 86400)
				return cli_usage_error("--runtime %s: give seconds, 2 or more", value);
			d->runtime = (unsigned)s;
		} else {
			return cli_usage_error("unknown demo argument '%s' (tessera demo --help)",
					       arg);
		}
	}
	if (tsr_parse_size(size_arg, &d->size) || d->size == 0 || d->size % TSR_BLOCK_SIZE) {
		cli_error("--size %s: give a non-zero multiple of 4 KiB, e.g. 1G", size_arg);
		return EXIT_FAIL;
	}
	return 0;
}

/* Start the nodes (n1 first: the others join it), wait until they are alive. */
static int start_nodes(struct demo *d)
{
	unsigned ports[DEMO_NODES] = { 0 };
	int ret;

	d->n_nodes = d->standalone ? 1 : DEMO_NODES;
	if (!d->standalone && (ret = pick_ports(d, ports)))
		return ret;
	for (unsigned i = 0; i < d->n_nodes; i++) {
		struct node *n = &d->nodes[i];

		ret = node_init(d, i, ports);
		if (ret)
			return ret;
		printf("starting ");
		print_cmdline(stdout, d, n);
		printf("\n");
		fflush(stdout);
		ret = start_node(d, n);
		if (ret)
			return ret;
		/* n1 must be up before the others join it (they read its token) */
		if (i == 0 || i + 1 == d->n_nodes) {
			for (unsigned k = i == 0 ? 0 : 1; k <= i; k++) {
				ret = wait_ready(&d->nodes[k]);
				if (ret)
					return ret;
			}
		}
	}
	if (d->standalone) {
		printf("tesserad is ready (pid %d, log: %s/tesserad.log)\n", (int)d->nodes[0].pid,
		       d->dir);
		return 0;
	}
	ret = wait_cluster(d);
	if (ret)
		return ret;
	printf("the 3 nodes are up and alive (logs: %s/nI/tesserad.log)\n", d->dir);
	return 0;
}

/* Detach, then stop the nodes, n1 (metadata) last.  0 when all stopped cleanly. */
static int stop_nodes(struct demo *d)
{
	int ret = 0;

	detach_volume(d);
	for (unsigned i = d->n_nodes; i-- > 0;)
		ret = stop_node(&d->nodes[i]) ?: ret;
	return ret;
}

int cli_demo(struct cli *cli, int argc, char **argv)
{
	struct demo *d = calloc(1, sizeof(*d));
	struct bench_result results[2] = {
		{ .label = "4k randwrite QD32" }, { .label = "4k randread QD32" },
	};
	struct sigaction sa = { .sa_handler = on_signal };
	const char *data = NULL;
	bool help = false, bench_ran = false, serving = false, started = false;
	int ret, stop_ret;

	if (d == NULL)
		return EXIT_FAIL;
	/* our lines and our children's errors interleave in the order they happen */
	setvbuf(stdout, NULL, _IOLBF, 0);
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
	printf("tessera demo%s: data directory %s\n",
	       d->standalone ? " (standalone)" : ", a 3-node cluster on 127.0.0.1", d->dir);
	fflush(stdout);

	started = true;
	ret = start_nodes(d);
	if (ret)
		goto out_stop;
	ret = create_volume(d);
	if (ret)
		goto out_stop;
	/* standalone: exported as soon as created; cluster: on the attach node */
	snprintf(d->uri, sizeof(d->uri), "nbd+unix:///%s?socket=%s/nbd.sock", DEMO_VOLUME,
		 d->nodes[0].dir);
	if (!d->standalone) {
		ret = attach_volume(d);
		if (ret)
			goto out_stop;
	}

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
	ret = print_state(d);
	if (ret)
		goto out_stop;
	print_reach(d);
	fflush(stdout);
	if (bench_ran && (!results[0].ok || !results[1].ok))
		ret = EXIT_FAIL;

	if (d->keep) {
		serving = true; /* from here Ctrl-C is the way to end, not an interruption */
		ret = keep_serving(d) ?: ret;
	}
out_stop:
	if (started) {
		stop_ret = stop_nodes(d);
		if (stop_ret == 0 && ret == 0)
			printf("%s stopped cleanly\n", d->standalone ? "\ntesserad" : "the 3 nodes");
		ret = ret ?: stop_ret;
	}
	if (g_stop && ret == 0 && !serving)
		ret = EXIT_INTERRUPTED;
	if (d->keep || !d->dir_created) {
		if (d->standalone)
			printf("data kept in %s (restart: tesserad --data %s)\n", d->dir, d->dir);
		else
			printf("data kept in %s (restart: tessera demo --data %s --keep)\n", d->dir,
			       d->dir);
	} else if (ret && ret != EXIT_INTERRUPTED) {
		printf("keeping %s for a look at the tesserad.log files (remove it with rm -rf "
		       "%s)\n", d->dir, d->dir);
	} else {
		remove_dir(d->dir);
		printf("removed %s\n", d->dir);
	}
out_free:
	free(d);
	return ret;
}
