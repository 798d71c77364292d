/*
 * tesserad: the Tessera node daemon.  Serves the volumes of one data
 * directory (or raw device) over NBD and answers the admin API.
 *
 * Threads: the main thread runs a libev loop that accepts NBD connections on
 * every listener and hands each to a worker round-robin (tsr_worker_send ->
 * tsr_nbd_conn_start), serves the admin API (engine/admin) and catches
 * SIGTERM/SIGINT through a signalfd; N workers (engine/worker) run the data
 * path.  Start-up order: the fd limit (soft raised to hard), store (its
 * lock makes DIR ours), token, volume set, workers, NBD server, listeners,
 * cluster (cluster mode), admin server, the cluster port, the site listener
 * (--site-listen: a geo-replication target, its accepted connections handed
 * to the site server), then DIR/tesserad.pid and the "tesserad ready" log
 * line.  Shutdown undoes it in reverse (the site server before the cluster,
 * which detaches its target volumes, and both before the workers); the store
 * is closed cleanly, so the next start needs no recovery.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "cluster_listen.h"
#include "tessera/admin.h"
#include "tessera/cluster.h"
#include "tessera/common.h"
#include "tessera/meta.h"
#include "tessera/peer.h"
#include "tessera/site.h"
#include "tessera/io.h"
#include "tessera/nbd.h"
#include "tessera/store.h"
#include "tessera/vol.h"
#include "tessera/worker.h"

#define MAX_LISTENERS 16
#define MAX_WORKERS 256

/*
 * A listening socket on the main loop (--nbd-listen, --site-listen): accepts
 * until EAGAIN and hands each connection to on_accept.
 */
struct listener {
	struct tesserad *d;
	ev_io watcher;
	ev_timer pause;      /* out of file descriptors: accept again a little later */
	int fd;              /* -1 when closed */
	bool tcp;            /* TCP_NODELAY on each accepted socket */
	const char *what;    /* "nbd" or "site": the prefix of its log lines */
	/* owns fd (closes it also on failure); runs on the main loop */
	void (*on_accept)(struct listener *l, int fd);
	char *unix_path;     /* unlinked at shutdown; NULL for TCP */
	char name[320];      /* "unix:PATH" or "tcp:HOST:PORT" (actual port) */
};

struct tesserad {
	/* options */
	char *dir;                  /* absolute path of the data directory */
	const char *device;
	const char *nbd_specs[MAX_LISTENERS];
	unsigned n_nbd_specs;
	const char *admin_listen;   /* "HOST:PORT" or NULL */
	unsigned n_workers;
	struct tsr_io_opts io_opts;
	bool read_cache_off;        /* --read-cache off */
	/* cluster options (cluster mode = meta or join) */
	const char *listen;         /* --listen HOST:PORT */
	bool meta;
	const char *join;
	const char *token_file;
	const char *node_id_opt, *zone, *site;
	uint64_t capacity;          /* 0: the size of DIR's filesystem */
	unsigned peer_timeout_ms;
	unsigned write_wait_ms;
	unsigned rebuild_after_sec;
	unsigned leftover_grace_sec;
	uint64_t resync_rate;
	bool site_pump_worker;      /* --site-pump-worker */
	/* geo-replication target (cluster mode): all four or none */
	const char *site_listen;    /* --site-listen HOST:PORT */
	const char *site_ca, *site_cert, *site_key;
	/* state, in start-up order */
	struct tsr_store *store;
	char token[TSR_ADMIN_TOKEN_LEN + 1];
	struct tsr_volset *vols;
	struct tsr_worker *workers[MAX_WORKERS];
	unsigned workers_started;
	char io_name[64];
	bool read_cache;            /* the store's read cache: not --read-cache off, no
				     * --device, and worker0's io reads buffered fds
				     * asynchronously (query_io_name) */
	struct tsr_nbd_server *nbd;
	struct listener listeners[MAX_LISTENERS]; /* --nbd-listen */
	unsigned n_listeners;
	unsigned next_worker;       /* round-robin cursor (main thread) */
	unsigned next_peer_worker;  /* the same for peer connections (listen thread) */
	struct tsr_admin_server *admin;
	/* cluster mode */
	char node_id[64];
	bool node_id_refused; /* check_node_id refused the start (told on stderr) */
	struct cluster_listener cl;
	struct tsr_peer_server *peer;
	struct tsr_cluster *cluster;
	struct tsr_admin_cluster admin_hooks;
	/* site listener (--site-listen) */
	struct tsr_site_tls_ctx *site_tls;
	struct tsr_site_server *site_srv;
	struct listener sl;        /* TLS connections from source sites */
	struct ev_loop *loop;
	int sig_fd;
	ev_io sig_watcher;
	bool pid_written;
};

static void usage(FILE *f)
{
	fprintf(f,
"Usage: tesserad --data DIR [OPTION]...\n"
"Serve the volumes of DIR over NBD and answer the admin API (tessera CLI).\n"
"\n"
"  --data DIR             data directory (created if missing): catalogue, volumes,\n"
"                         sockets, admin.token, tesserad.pid\n"
"  --device DEV           keep volume data on raw block device DEV instead of\n"
"                         sparse files in DIR\n"
"  --nbd-listen ADDR      unix:PATH or tcp:HOST:PORT; repeatable\n"
"                         (default: unix:DIR/nbd.sock)\n"
"  --admin-listen tcp:HOST:PORT\n"
"                         also serve the admin API over TCP; clients must send\n"
"                         the token in DIR/admin.token (traffic is not encrypted)\n"
"  --workers N            data path threads (default 2)\n"
"  --io auto|io_uring|libaio\n"
"                         I/O backend (default auto: io_uring, else libaio)\n"
"  --io-fault SPEC        inject I/O faults, e.g. write:3:fail=EIO (tests only)\n"
"  --read-cache on|off    host reads of volumes kept in files go through the\n"
"                         kernel's page cache (default on): hot blocks are read\n"
"                         from memory; writes stay O_DIRECT (acknowledged means\n"
"                         stored) and every read is still CRC-checked; scrub\n"
"                         always reads the disk.  Turn it off on nodes short of\n"
"                         memory, or when the guests cache themselves (a second\n"
"                         copy in the host's cache is wasted).  Always off with\n"
"                         --io libaio (it would block on buffered reads) and\n"
"                         with --device\n"
"  --log-level debug|info|warn|error\n"
"  --help, --version\n"
"\n"
"Cluster mode (replicated volumes; --meta or --join):\n"
"  --listen HOST:PORT     this node's cluster address: peer protocol, metadata\n"
"                         service (on the --meta node) and admin API (token)\n"
"  --meta                 hold the cluster's metadata store (DIR/meta.db); the\n"
"                         cluster token is this node's DIR/admin.token\n"
"  --join HOST:PORT       join the cluster whose --meta node listens there\n"
"  --token-file F         cluster token (the meta node's DIR/admin.token): needed\n"
"                         on the first join, then kept in DIR/admin.token\n"
"  --node-id ID           default: kept in DIR/node.id, first \"<hostname>-<port>\"\n"
"  --zone Z, --site S     failure-domain labels (default: zone = node id, site1);\n"
"                         S is also this cluster's name on geo-replication links\n"
"                         (default there: site-<node id>)\n"
"  --capacity SIZE        space offered for copies (default: DIR's filesystem)\n"
"  --peer-timeout MS      a copy that does not answer this long is out of sync\n"
"                         (default 5000)\n"
"  --write-wait MS        with fewer than min-replicas copies in sync, writes wait\n"
"                         this long for one to return, then fail (default 30000)\n"
"  --rebuild-after SEC    rebuild elsewhere a copy whose node stays dead this\n"
"                         long (default 600, 0 = never)\n"
"  --resync-rate SIZE     resync/rebuild bandwidth per volume, per second\n"
"                         (default 0 = unlimited)\n"
"  --site-pump-worker     geo-replication source: ship each volume's stream\n"
"                         (TLS, sends) from the worker after the volume's own\n"
"                         (default: from the volume's worker; issue 7,\n"
"                         docs/ARCHITECTURE.md \"pump worker\")\n"
"  --leftover-grace SEC   remove a store copy that no volume record lists for\n"
"                         this node (replaced or deleted while it was down)\n"
"                         once it is this old (default 900: longer than a\n"
"                         create takes to record its copies; 0 = never)\n"
"\n"
"Geo-replication target (cluster mode; tessera replication --help):\n"
"  --site-listen HOST:PORT  accept replication streams from other sites here\n"
"                         (mutual TLS 1.3; target volumes are created, attached\n"
"                         on this node and read-only until promoted; stream\n"
"                         state in DIR/site)\n"
"  --site-ca F            PEM: the CA the source sites' certificates chain to\n"
"  --site-cert F, --site-key F\n"
"                         PEM: this site's certificate and its key\n"
"\n"
"The admin API is always on DIR/admin.sock (mode 0600).  SIGTERM or SIGINT\n"
"shuts down cleanly.\n"
"\n"
"Example:\n"
"  tesserad --data /var/lib/tessera --nbd-listen unix:/run/tessera.sock \\\n"
"           --nbd-listen tcp:127.0.0.1:10809\n"
"  tessera --data /var/lib/tessera volume create db --size 10G\n"
"\n"
"A 3-node cluster on one machine (each node its own directory and ports):\n"
"  tesserad --data /var/tmp/n1 --listen 127.0.0.1:7101 --meta \\\n"
"           --nbd-listen tcp:127.0.0.1:10901 &\n"
"  tesserad --data /var/tmp/n2 --listen 127.0.0.1:7102 --join 127.0.0.1:7101 \\\n"
"           --token-file /var/tmp/n1/admin.token --nbd-listen tcp:127.0.0.1:10902 &\n"
"  tesserad --data /var/tmp/n3 --listen 127.0.0.1:7103 --join 127.0.0.1:7101 \\\n"
"           --token-file /var/tmp/n1/admin.token --nbd-listen tcp:127.0.0.1:10903 &\n"
"  tessera --cluster 127.0.0.1:7101 --token-file /var/tmp/n1/admin.token \\\n"
"          volume create db --size 1G --replicas 3\n"
"  tessera --cluster 127.0.0.1:7101 --token-file /var/tmp/n1/admin.token \\\n"
"          volume attach db --node 127.0.0.1-7101   # then nbd://127.0.0.1:10901/db\n");
}

static void die_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "tesserad: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (tesserad --help)\n");
	exit(2);
}

/* --site-listen and its three files: all or none, cluster mode, files readable. */
static void check_site_args(const struct tesserad *d)
{
	const char *names[3] = { "--site-ca", "--site-cert", "--site-key" };
	const char *files[3] = { d->site_ca, d->site_cert, d->site_key };
	char buf[600];

	if (d->site_listen == NULL) {
		for (int i = 0; i < 3; i++)
			if (files[i])
				die_usage("%s goes with --site-listen HOST:PORT (the site listener's "
					  "certificate)", names[i]);
		return;
	}
	if (!d->meta && !d->join)
		die_usage("--site-listen is for cluster mode: add --listen HOST:PORT and --meta or "
			  "--join HOST:PORT%s", "");
	for (int i = 0; i < 3; i++) {
		if (files[i] == NULL)
			die_usage("--site-listen needs --site-ca F, --site-cert F and --site-key F "
				  "(missing: %s)", names[i]);
		if (access(files[i], R_OK) != 0) {
			snprintf(buf, sizeof(buf), "%s %s: cannot read it: %s", names[i], files[i],
				 strerror(errno));
			die_usage("%s", buf);
		}
	}
}

static void parse_args(struct tesserad *d, int argc, char **argv)
{
	enum { O_DATA = 256, O_DEVICE, O_NBD, O_ADMIN, O_WORKERS, O_IO, O_FAULT, O_LOG,
	       O_HELP, O_VERSION, O_LISTEN, O_META, O_JOIN, O_TOKEN, O_NODE, O_ZONE, O_SITE,
	       O_CAPACITY, O_PEER_TIMEOUT, O_REBUILD, O_RESYNC, O_WRITE_WAIT, O_SITE_LISTEN, O_SITE_PUMP,
	       O_SITE_CA, O_SITE_CERT, O_SITE_KEY, O_LEFTOVER, O_READ_CACHE };
	static const struct option opts[] = {
		{ "data", required_argument, NULL, O_DATA },
		{ "device", required_argument, NULL, O_DEVICE },
		{ "nbd-listen", required_argument, NULL, O_NBD },
		{ "admin-listen", required_argument, NULL, O_ADMIN },
		{ "workers", required_argument, NULL, O_WORKERS },
		{ "io", required_argument, NULL, O_IO },
		{ "io-fault", required_argument, NULL, O_FAULT },
		{ "read-cache", required_argument, NULL, O_READ_CACHE },
		{ "log-level", required_argument, NULL, O_LOG },
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "meta", no_argument, NULL, O_META },
		{ "join", required_argument, NULL, O_JOIN },
		{ "token-file", required_argument, NULL, O_TOKEN },
		{ "node-id", required_argument, NULL, O_NODE },
		{ "zone", required_argument, NULL, O_ZONE },
		{ "site", required_argument, NULL, O_SITE },
		{ "capacity", required_argument, NULL, O_CAPACITY },
		{ "peer-timeout", required_argument, NULL, O_PEER_TIMEOUT },
		{ "rebuild-after", required_argument, NULL, O_REBUILD },
		{ "leftover-grace", required_argument, NULL, O_LEFTOVER },
		{ "write-wait", required_argument, NULL, O_WRITE_WAIT },
		{ "resync-rate", required_argument, NULL, O_RESYNC },
		{ "site-pump-worker", no_argument, NULL, O_SITE_PUMP },
		{ "site-listen", required_argument, NULL, O_SITE_LISTEN },
		{ "site-ca", required_argument, NULL, O_SITE_CA },
		{ "site-cert", required_argument, NULL, O_SITE_CERT },
		{ "site-key", required_argument, NULL, O_SITE_KEY },
		{ "help", no_argument, NULL, O_HELP },
		{ "version", no_argument, NULL, O_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	const char *data = NULL;
	char *end;
	long n;
	int c;

	d->n_workers = 2;
	d->peer_timeout_ms = 5000;
	d->rebuild_after_sec = 600;
	d->leftover_grace_sec = 900;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		switch (c) {
		case O_DATA:
			data = optarg;
			break;
		case O_DEVICE:
			d->device = optarg;
			break;
		case O_NBD:
			if (d->n_nbd_specs == MAX_LISTENERS)
				die_usage("at most 16 --nbd-listen%s", "");
			if (strncmp(optarg, "unix:", 5) && strncmp(optarg, "tcp:", 4))
				die_usage("--nbd-listen %s: use unix:PATH or tcp:HOST:PORT", optarg);
			d->nbd_specs[d->n_nbd_specs++] = optarg;
			break;
		case O_ADMIN:
			if (strncmp(optarg, "tcp:", 4))
				die_usage("--admin-listen %s: use tcp:HOST:PORT", optarg);
			d->admin_listen = optarg + 4;
			break;
		case O_WORKERS:
			errno = 0;
			n = strtol(optarg, &end, 10);
			if (errno || *end || n < 1 || n > MAX_WORKERS)
				die_usage("--workers %s: give a number from 1 to 256", optarg);
			d->n_workers = (unsigned)n;
			break;
		case O_IO:
			if (strcmp(optarg, "auto") == 0)
				d->io_opts.kind = TSR_IO_AUTO;
			else if (strcmp(optarg, "io_uring") == 0)
				d->io_opts.kind = TSR_IO_URING;
			else if (strcmp(optarg, "libaio") == 0)
				d->io_opts.kind = TSR_IO_AIO;
			else
				die_usage("--io %s: use auto, io_uring or libaio", optarg);
			break;
		case O_FAULT:
			d->io_opts.fault_spec = optarg;
			break;
		case O_READ_CACHE:
			if (strcmp(optarg, "on") == 0)
				d->read_cache_off = false;
			else if (strcmp(optarg, "off") == 0)
				d->read_cache_off = true;
			else
				die_usage("--read-cache %s: use on or off", optarg);
			break;
		case O_LOG:
			if (strcmp(optarg, "debug") == 0)
				tsr_log_set_level(TSR_LOG_DEBUG);
			else if (strcmp(optarg, "info") == 0)
				tsr_log_set_level(TSR_LOG_INFO);
			else if (strcmp(optarg, "warn") == 0)
				tsr_log_set_level(TSR_LOG_WARN);
			else if (strcmp(optarg, "error") == 0)
				tsr_log_set_level(TSR_LOG_ERROR);
			else
				die_usage("--log-level %s: use debug, info, warn or error", optarg);
			break;
		case O_LISTEN:
			if (strncmp(optarg, "tcp:", 4) == 0)
				optarg += 4;
			if (strchr(optarg, ':') == NULL)
				die_usage("--listen %s: use HOST:PORT", optarg);
			d->listen = optarg;
			break;
		case O_META:
			d->meta = true;
			break;
		case O_JOIN:
			if (strchr(optarg, ':') == NULL)
				die_usage("--join %s: use HOST:PORT (the --listen of the --meta node)",
					  optarg);
			d->join = optarg;
			break;
		case O_TOKEN:
			d->token_file = optarg;
			break;
		case O_NODE:
			if (!tsr_valid_name(optarg))
				die_usage("--node-id %s: use 1 to 63 of A-Z a-z 0-9 . _ -", optarg);
			d->node_id_opt = optarg;
			break;
		case O_ZONE:
		case O_SITE:
			if (!tsr_valid_name(optarg))
				die_usage("--zone/--site %s: use 1 to 63 of A-Z a-z 0-9 . _ -", optarg);
			if (c == O_ZONE)
				d->zone = optarg;
			else
				d->site = optarg;
			break;
		case O_CAPACITY:
			if (tsr_parse_size(optarg, &d->capacity) || d->capacity == 0)
				die_usage("--capacity %s: give a size such as 100G", optarg);
			break;
		case O_RESYNC:
			if (tsr_parse_size(optarg, &d->resync_rate))
				die_usage("--resync-rate %s: give bytes per second such as 200M", optarg);
			break;
		case O_SITE_PUMP:
			d->site_pump_worker = true;
			break;
		case O_LEFTOVER:
			errno = 0;
			n = strtol(optarg, &end, 10);
			if (errno || *end || end == optarg || n < 0 || n > 100000000)
				die_usage("--leftover-grace %s: give seconds (0 = never)", optarg);
			d->leftover_grace_sec = (unsigned)n;
			break;
		case O_PEER_TIMEOUT:
		case O_REBUILD:
		case O_WRITE_WAIT:
			errno = 0;
			n = strtol(optarg, &end, 10);
			if (errno || *end || n < (c == O_REBUILD ? 0 : 100) || n > 100000000)
				die_usage(c == O_REBUILD ? "--rebuild-after %s: give seconds (0 = never)"
					  : "--peer-timeout/--write-wait %s: give milliseconds (>= 100)",
					  optarg);
			if (c == O_REBUILD)
				d->rebuild_after_sec = (unsigned)n;
			else if (c == O_WRITE_WAIT)
				d->write_wait_ms = (unsigned)n;
			else
				d->peer_timeout_ms = (unsigned)n;
			break;
		case O_SITE_LISTEN:
			if (strncmp(optarg, "tcp:", 4) == 0)
				optarg += 4;
			if (strchr(optarg, ':') == NULL)
				die_usage("--site-listen %s: use HOST:PORT", optarg);
			d->site_listen = optarg;
			break;
		case O_SITE_CA:
			d->site_ca = optarg;
			break;
		case O_SITE_CERT:
			d->site_cert = optarg;
			break;
		case O_SITE_KEY:
			d->site_key = optarg;
			break;
		case O_HELP:
			usage(stdout);
			exit(0);
		case O_VERSION:
			printf("tesserad %s\n", TSR_VERSION);
			exit(0);
		case ':':
			die_usage("%s needs a value", argv[optind - 1]);
			break;
		default:
			die_usage("unknown option %s", argv[optind - 1]);
		}
	}
	if (optind < argc)
		die_usage("unexpected argument '%s'", argv[optind]);
	if (data == NULL)
		die_usage("--data DIR is required%s", "");
	if (d->meta && d->join)
		die_usage("--meta and --join exclude each other: the meta node is the one the "
			  "others join%s", "");
	if ((d->meta || d->join) && d->listen == NULL)
		die_usage("cluster mode (--meta/--join) needs --listen HOST:PORT%s", "");
	if (!d->meta && !d->join && (d->listen || d->token_file || d->node_id_opt))
		die_usage("--listen, --token-file and --node-id are for cluster mode: add --meta "
			  "or --join HOST:PORT%s", "");
	check_site_args(d);
	d->dir = (char *)data;
}

static bool cluster_mode(const struct tesserad *d)
{
	return d->meta || d->join;
}

/* mkdir -p */
static int make_dirs(const char *path)
{
	char buf[PATH_MAX];
	size_t i;

	if (strlen(path) >= sizeof(buf))
		return -ENAMETOOLONG;
	strcpy(buf, path);
	for (i = 1; buf[i]; i++) {
		if (buf[i] != '/')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, 0755) && errno != EEXIST)
			return -errno;
		buf[i] = '/';
	}
	if (mkdir(buf, 0755) && errno != EEXIST)
		return -errno;
	return 0;
}

static char *dir_file(const struct tesserad *d, const char *name)
{
	char *p;

	if (asprintf(&p, "%s/%s", d->dir, name) < 0) {
		fprintf(stderr, "tesserad: out of memory\n");
		exit(1);
	}
	return p;
}

/* DIR/admin.token: read it, or create it with 32 random bytes in hex, mode 0600. */
static int load_token(struct tesserad *d)
{
	char *path = dir_file(d, "admin.token");
	unsigned char raw[TSR_ADMIN_TOKEN_LEN / 2];
	char hex[TSR_ADMIN_TOKEN_LEN + 2];
	int fd, ret = 0;
	size_t i;

	ret = tsr_admin_read_token(path, d->token, sizeof(d->token));
	if (ret == 0)
		goto out;
	if (ret != -ENOENT) {
		tsr_error("token: %s: %s (delete it to get a new token)", path, strerror(-ret));
		goto out;
	}
	if (RAND_bytes(raw, sizeof(raw)) != 1) {
		tsr_error("token: RAND_bytes failed");
		ret = -EIO;
		goto out;
	}
	for (i = 0; i < sizeof(raw); i++)
		snprintf(hex + 2 * i, 3, "%02x", raw[i]);
	hex[TSR_ADMIN_TOKEN_LEN] = '\n';
	hex[TSR_ADMIN_TOKEN_LEN + 1] = '\0';
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, hex, TSR_ADMIN_TOKEN_LEN + 1) != TSR_ADMIN_TOKEN_LEN + 1 ||
	    fsync(fd)) {
		ret = -errno;
		tsr_error("token: create %s: %s", path, strerror(-ret));
		if (fd >= 0) {
			close(fd);
			unlink(path);
		}
		goto out;
	}
	close(fd);
	ret = 0;
	memcpy(d->token, hex, TSR_ADMIN_TOKEN_LEN);
	d->token[TSR_ADMIN_TOKEN_LEN] = '\0';
	tsr_info("created %s", path);
out:
	OPENSSL_cleanse(raw, sizeof(raw));
	OPENSSL_cleanse(hex, sizeof(hex));
	free(path);
	return ret;
}

/* Write text to path atomically, mode 0600.  0 or -errno (logged). */
static int write_small_file(const char *path, const char *text)
{
	char tmp[PATH_MAX];
	size_t len = strlen(text);
	int fd, ret = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, text, len) != (ssize_t)len || fsync(fd) || rename(tmp, path))
		ret = -errno;
	if (fd >= 0)
		close(fd);
	if (ret) {
		tsr_error("write %s: %s", path, strerror(-ret));
		unlink(tmp);
	}
	return ret;
}

/*
 * Joining node: the cluster token comes from --token-file (then kept in
 * DIR/admin.token so that restarts need no option) or from DIR/admin.token.
 */
static int load_join_token(struct tesserad *d)
{
	char *path = dir_file(d, "admin.token");
	char line[TSR_ADMIN_TOKEN_LEN + 2];
	const char *from = d->token_file ? d->token_file : path;
	int ret;

	ret = tsr_admin_read_token(from, d->token, sizeof(d->token));
	if (ret == -ENOENT && d->token_file == NULL) {
		tsr_error("token: %s does not exist: the first --join needs --token-file F (F: "
			  "admin.token in the data directory of the --meta node)", path);
		goto out;
	}
	if (ret == 0 && strlen(d->token) != TSR_ADMIN_TOKEN_LEN)
		ret = -EINVAL;
	if (ret) {
		tsr_error("token: %s: %s (it must hold the %u hex characters of the meta node's "
			  "admin.token)", from, strerror(-ret), TSR_ADMIN_TOKEN_LEN);
		goto out;
	}
	if (d->token_file) {
		char cur[TSR_ADMIN_TOKEN_LEN + 2];

		if (tsr_admin_read_token(path, cur, sizeof(cur)) != 0 || strcmp(cur, d->token)) {
			snprintf(line, sizeof(line), "%s\n", d->token);
			ret = write_small_file(path, line);
			OPENSSL_cleanse(line, sizeof(line));
		}
		OPENSSL_cleanse(cur, sizeof(cur));
	}
out:
	free(path);
	return ret;
}

/*
 * A data dir that already has a node id keeps it: --node-id must name it.
 * The cluster's records (vol/<name> copies, attach/<name>, nodes/<id>) list
 * this dir's copies under that id; run under another one, the node would
 * look new and empty and its copies unlisted (leftovers to the sweep).  No
 * rename option: renaming would mean rewriting those records while volumes
 * may be attached; moving the copies (replace-replica onto a new node with an
 * empty dir) does the same thing safely.  Read-only, so it runs before the
 * store is opened: a refused start changes nothing in DIR.  0 or -EPERM
 * (told on stderr, d->node_id_refused set).
 */
static int check_node_id(struct tesserad *d)
{
	char *path, buf[128];
	int ret;

	if (!cluster_mode(d) || d->node_id_opt == NULL)
		return 0;
	path = dir_file(d, "node.id");
	ret = tsr_admin_read_token(path, buf, sizeof(buf));
	if (ret == -ENOENT || ret == -EINVAL || (ret == 0 && !tsr_valid_name(buf)) ||
	    (ret == 0 && strcmp(buf, d->node_id_opt) == 0)) {
		free(path); /* none (an empty or invalid one is replaced), or the same */
		return 0;
	}
	if (ret)
		fprintf(stderr, "tesserad: cannot read %s: %s: the node id of this data "
			"directory is unknown, refusing to start as %s (nothing changed)\n",
			path, strerror(-ret), d->node_id_opt);
	else
		fprintf(stderr, "tesserad: %s holds node %s's data (%s), not %s's "
			"(--node-id %s): the cluster's records list this directory's copies "
			"under %s. Start it with --node-id %s (or without --node-id). To run "
			"a node named %s, give it an empty data directory and move the copies "
			"onto it (tessera volume replace-replica VOL --node %s --to %s). "
			"Nothing changed.\n", d->dir, buf, path, d->node_id_opt,
			d->node_id_opt, buf, buf, d->node_id_opt, buf, d->node_id_opt);
	free(path);
	d->node_id_refused = true;
	return -EPERM;
}

/* --node-id, else DIR/node.id, else "<hostname>-<port>" kept in DIR/node.id. */
static int load_node_id(struct tesserad *d)
{
	char *path = dir_file(d, "node.id");
	char buf[128], host[64] = "node", line[80];
	const char *port = strrchr(d->listen, ':');
	int ret = 0;

	if (d->node_id_opt) {
		snprintf(d->node_id, sizeof(d->node_id), "%s", d->node_id_opt);
	} else if (tsr_admin_read_token(path, buf, sizeof(buf)) == 0 && tsr_valid_name(buf)) {
		snprintf(d->node_id, sizeof(d->node_id), "%.63s", buf);
		goto out;
	} else {
		gethostname(host, sizeof(host) - 1);
		for (char *p = host; *p; p++)
			if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			      (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_'))
				*p = '-';
		snprintf(d->node_id, sizeof(d->node_id), "%.40s-%s", host, port ? port + 1 : "0");
		if (!tsr_valid_name(d->node_id))
			snprintf(d->node_id, sizeof(d->node_id), "node-%s", port ? port + 1 : "0");
	}
	snprintf(line, sizeof(line), "%s\n", d->node_id);
	if (tsr_admin_read_token(path, buf, sizeof(buf)) != 0 || strcmp(buf, d->node_id))
		ret = write_small_file(path, line);
out:
	free(path);
	return ret;
}

/* Write "PID\n" over the start of fd (no O_TRUNC: its blocks are reused). */
static int overwrite_pid(int fd, const char *text, size_t len)
{
	if (pwrite(fd, text, len, 0) != (ssize_t)len || ftruncate(fd, (off_t)len))
		return -errno;
	return 0;
}

/*
 * DIR/tesserad.pid, written last at start-up (scripts wait for it as the
 * "ready" mark).  On a data file system with not one block free a new file
 * cannot be written, and the operator could not start tesserad to delete a
 * volume.  So the pid file never needs a new block when an old one exists:
 *   - tesserad.pid.tmp is written without O_TRUNC and renamed over
 *     tesserad.pid; a clean stop renames tesserad.pid back to
 *     tesserad.pid.tmp (instead of unlinking it), so the next start reuses
 *     its block;
 *   - on ENOSPC/EDQUOT, an existing tesserad.pid (left by a crash) is
 *     rewritten in place;
 *   - with neither (a file system filled while no pid file existed), the
 *     daemon serves without a pid file, with an error saying what to do: a
 *     stale tesserad.pid is removed so it never names another process.
 * Returns 0, or -errno for other errors (start-up fails).
 */
static int write_pid_file(struct tesserad *d)
{
	char *path = dir_file(d, "tesserad.pid");
	char *tmp = dir_file(d, "tesserad.pid.tmp");
	char text[32];
	size_t len = (size_t)snprintf(text, sizeof(text), "%d\n", (int)getpid());
	int fd, ret;

	fd = open(tmp, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	ret = fd < 0 ? -errno : overwrite_pid(fd, text, len);
	if (fd >= 0 && close(fd) && ret == 0)
		ret = -errno;
	if (ret == 0) {
		if (rename(tmp, path) == 0)
			goto out;
		ret = -errno;
		tsr_error("pid file: rename %s to %s: %s", tmp, path, strerror(-ret));
	} else {
		tsr_error("pid file: %s: %s", tmp, strerror(-ret));
	}
	if (ret != -ENOSPC && ret != -EDQUOT)
		goto out;
	/* full: the old pid file (a crash left it) has a block */
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		ret = overwrite_pid(fd, text, len);
		if (close(fd) && ret == 0)
			ret = -errno;
		if (ret == 0) {
			tsr_warn("pid file: no space left on the file system of %s: rewrote the "
				 "existing %s in place", d->dir, path);
			unlink(tmp);
			goto out;
		}
	}
	unlink(tmp);
	unlink(path);
	tsr_error("pid file: not one block free on the file system of %s: serving WITHOUT %s. "
		  "Free space now: delete a volume or snapshot (tessera volume delete, "
		  "tessera snapshot delete) or trim data, or free space on that file system "
		  "outside tessera; never delete files under volumes/ by hand", d->dir, path);
	ret = 0;
out:
	free(path);
	free(tmp);
	return ret;
}

/* ---- listening sockets ------------------------------------------------ */

static void resume_accept_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct listener *l = t->data;

	ev_io_start(loop, &l->watcher);
}

static void accept_cb(struct ev_loop *loop, ev_io *watcher, int revents)
{
	struct listener *l = watcher->data;
	int fd, one = 1;

	for (;;) {
		fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			       errno == ENOMEM)) {
			/* the pending client stays queued; a level-triggered retry would spin */
			tsr_warn("%s: accept on %s: %s; pausing for a second", l->what, l->name,
				 strerror(errno));
			ev_io_stop(loop, &l->watcher);
			ev_timer_set(&l->pause, 1.0, 0.0);
			ev_timer_start(loop, &l->pause);
			return;
		}
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
			    errno != ECONNABORTED)
				tsr_warn("%s: accept on %s: %s", l->what, l->name, strerror(errno));
			return;
		}
		if (l->tcp)
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		l->on_accept(l, fd);
	}
}

/* l->fd is listening: watch it on the main loop. */
static void listener_watch(struct listener *l)
{
	ev_io_init(&l->watcher, accept_cb, l->fd, EV_READ);
	l->watcher.data = l;
	ev_timer_init(&l->pause, resume_accept_cb, 1.0, 0.0);
	l->pause.data = l;
	ev_io_start(l->d->loop, &l->watcher);
}

/* Stops watching, closes the socket and removes a UNIX socket's path. */
static void listener_close(struct listener *l)
{
	if (l->fd >= 0) {
		ev_io_stop(l->d->loop, &l->watcher);
		ev_timer_stop(l->d->loop, &l->pause);
		close(l->fd);
		l->fd = -1;
		if (l->unix_path)
			unlink(l->unix_path);
	}
	free(l->unix_path);
	l->unix_path = NULL;
}

/* ---- NBD accept and hand-off ------------------------------------------ */

struct conn_handoff {
	struct tsr_nbd_server *nbd;
	int fd;
};

static void handoff_on_worker(struct tsr_worker *w, void *arg)
{
	struct conn_handoff *h = arg;

	tsr_nbd_conn_start(h->nbd, w, h->fd);
	free(h);
}

static void nbd_on_accept(struct listener *l, int fd)
{
	struct tesserad *d = l->d;
	struct conn_handoff *h;
	struct tsr_worker *w;
	int ret;

	h = malloc(sizeof(*h));
	if (h == NULL) {
		close(fd);
		return;
	}
	h->nbd = d->nbd;
	h->fd = fd;
	w = d->workers[d->next_worker++ % d->workers_started];
	ret = tsr_worker_send(w, handoff_on_worker, h);
	if (ret) {
		tsr_warn("nbd: hand connection to worker%u: %s", tsr_worker_index(w),
			 strerror(-ret));
		close(fd);
		free(h);
	}
}

static int start_nbd_listener(struct tesserad *d, const char *spec)
{
	struct listener *l = &d->listeners[d->n_listeners];
	int ret;

	l->d = d;
	l->fd = -1;
	l->what = "nbd";
	l->on_accept = nbd_on_accept;
	if (strncmp(spec, "unix:", 5) == 0) {
		char cwd[PATH_MAX];

		/* absolute, so that the URIs given out work from any directory */
		if (spec[5] != '/' && getcwd(cwd, sizeof(cwd)) != NULL) {
			if (asprintf(&l->unix_path, "%s/%s", cwd, spec + 5) < 0)
				l->unix_path = NULL;
		} else {
			l->unix_path = strdup(spec + 5);
		}
		if (l->unix_path == NULL)
			return -ENOMEM;
		d->n_listeners++;
		ret = tsr_admin_listen_unix(l->unix_path, &l->fd);
		snprintf(l->name, sizeof(l->name), "unix:%s", l->unix_path);
	} else {
		d->n_listeners++;
		l->tcp = true;
		ret = tsr_admin_listen_tcp(spec + 4, &l->fd, l->name, sizeof(l->name));
	}
	if (ret)
		return ret;
	listener_watch(l);
	return 0;
}

static void stop_nbd_listeners(struct tesserad *d)
{
	unsigned i;

	for (i = 0; i < d->n_listeners; i++)
		listener_close(&d->listeners[i]);
	d->n_listeners = 0;
}

/* ---- the cluster port ------------------------------------------------- */

struct peer_handoff {
	struct tsr_peer_server *peer;
	int fd;
};

static void peer_on_worker(struct tsr_worker *w, void *arg)
{
	struct peer_handoff *h = arg;

	tsr_peer_conn_start(h->peer, w, h->fd);
	free(h);
}

static void cluster_on_peer(void *arg, int fd)
{
	struct tesserad *d = arg;
	struct peer_handoff *h = malloc(sizeof(*h));
	struct tsr_worker *w;

	if (h == NULL) {
		close(fd);
		return;
	}
	h->peer = d->peer;
	h->fd = fd;
	w = d->workers[d->next_peer_worker++ % d->workers_started];
	if (tsr_worker_send(w, peer_on_worker, h)) {
		close(fd);
		free(h);
	}
}

static void cluster_on_meta(void *arg, int fd)
{
	struct tesserad *d = arg;

	tsr_meta_server_adopt(tsr_cluster_meta_server(d->cluster), fd);
}

static void cluster_on_admin(void *arg, int fd)
{
	struct tesserad *d = arg;

	tsr_admin_server_adopt(d->admin, fd);
}

static uint64_t cluster_leftovers(void *arg)
{
	return tsr_cluster_leftovers_removed(arg);
}

static void cluster_copy_delete_lock(void *arg, bool lock)
{
	tsr_cluster_copy_delete_lock(arg, lock);
}

static bool cluster_admin_handle(void *arg, const Tessera__Admin__Request *req,
				 Tessera__Admin__Response *resp)
{
	return tsr_cluster_admin_handle(arg, req, resp);
}

/* Size of the filesystem holding DIR: the default --capacity. */
static uint64_t dir_capacity(const char *dir)
{
	struct statvfs sv;

	if (statvfs(dir, &sv))
		return 0;
	return (uint64_t)sv.f_blocks * sv.f_frsize;
}

static int start_cluster(struct tesserad *d, const char *const *nbd_names)
{
	struct tsr_cluster_opts co = { 0 };
	struct tsr_peer_server_opts po = { 0 };
	int ret;

	ret = cluster_listener_bind(&d->cl, d->listen);
	if (ret)
		return ret;
	po.store = d->store;
	po.token = d->token;
	po.node_id = d->node_id;
	ret = tsr_peer_server_create(&po, &d->peer);
	if (ret) {
		tsr_error("peer server: %s", strerror(-ret));
		return ret;
	}
	co.loop = d->loop;
	co.store = d->store;
	co.vols = d->vols;
	co.workers = d->workers;
	co.n_workers = d->workers_started;
	co.dir = d->dir;
	co.address = d->cl.name + 4; /* "tcp:" */
	co.meta = d->meta;
	co.join = d->join;
	co.token = d->token;
	co.node_id = d->node_id;
	co.zone = d->zone;
	co.site = d->site;
	co.capacity = d->capacity ? d->capacity : dir_capacity(d->dir);
	co.peer_timeout_ms = d->peer_timeout_ms;
	co.write_wait_ms = d->write_wait_ms;
	co.rebuild_after_sec = d->rebuild_after_sec;
	co.leftover_grace_sec = d->leftover_grace_sec;
	co.resync_rate = d->resync_rate;
	co.site_pump_worker = d->site_pump_worker;
	co.nbd_listeners = nbd_names;
	co.n_nbd_listeners = d->n_listeners;
	co.repl_site = d->site; /* NULL: site-<node id> */
	ret = tsr_cluster_start(&co, &d->cluster);
	if (ret)
		return ret;
	d->admin_hooks.handle = cluster_admin_handle;
	d->admin_hooks.leftovers_removed = cluster_leftovers;
	d->admin_hooks.copy_delete_lock = cluster_copy_delete_lock;
	d->admin_hooks.arg = d->cluster;
	d->admin_hooks.node_id = d->node_id;
	d->admin_hooks.address = d->cl.name + 4;
	return 0;
}

/* ---- the site listener (--site-listen) --------------------------------- */

static void site_on_accept(struct listener *l, int fd)
{
	int ret;

	ret = tsr_site_server_accept(l->d->site_srv, fd); /* owns fd, also on error */
	if (ret && ret != -EBUSY) /* -EBUSY: the server logged it (rate-limited) */
		tsr_warn("site: connection on %s: %s", l->name, strerror(-ret));
}

/*
 * The geo-replication target: TLS context, site server (state in DIR/site,
 * open_volume by the cluster), then the listening socket on the main loop.
 */
static int start_site(struct tesserad *d)
{
	struct tsr_site_tls_opts to = { 0 };
	struct tsr_site_server_opts so = { 0 };
	char *state_dir = dir_file(d, "site");
	int ret;

	to.ca_file = d->site_ca;
	to.cert_file = d->site_cert;
	to.key_file = d->site_key;
	to.server = true;
	ret = tsr_site_tls_ctx_create(&to, &d->site_tls);
	if (ret) {
		tsr_error("site: --site-ca/--site-cert/--site-key do not load: %s%s", strerror(-ret),
			  ret == -EKEYREJECTED ? " (is each file PEM, and is the key the "
			  "certificate's?)" : "");
		goto out;
	}
	so.tls = d->site_tls;
	so.workers = d->workers;
	so.n_workers = d->workers_started;
	so.state_dir = state_dir;
	so.site = tsr_cluster_repl_site(d->cluster);
	so.cluster = tsr_cluster_id(d->cluster);
	tsr_cluster_site_ops(d->cluster, &so.ops);
	so.loop = d->loop;
	ret = tsr_site_server_start(&so, &d->site_srv);
	if (ret) {
		tsr_error("site: cannot start the site server (state in %s): %s", state_dir,
			  strerror(-ret));
		goto out;
	}
	tsr_cluster_set_site_server(d->cluster, d->site_srv);
	d->sl.d = d;
	d->sl.tcp = true;
	d->sl.what = "site";
	d->sl.on_accept = site_on_accept;
	ret = tsr_admin_listen_tcp(d->site_listen, &d->sl.fd, d->sl.name, sizeof(d->sl.name));
	if (ret) {
		d->sl.fd = -1;
		tsr_error("site: cannot listen on %s: %s", d->site_listen, strerror(-ret));
		goto out;
	}
	listener_watch(&d->sl);
	tsr_info("site: %s listening on %s for cluster %s (state in %s)", so.site, d->sl.name,
		 so.cluster, state_dir);
out:
	free(state_dir);
	return ret;
}

/* Before the cluster stops (sessions hold target volumes) and the workers. */
static void stop_site(struct tesserad *d)
{
	listener_close(&d->sl);
	if (d->cluster)
		tsr_cluster_set_site_server(d->cluster, NULL);
	if (d->site_srv)
		tsr_site_server_stop(d->site_srv);
	d->site_srv = NULL;
	tsr_site_tls_ctx_destroy(d->site_tls);
	d->site_tls = NULL;
}

/* ---- worker 0's backend name, for status ------------------------------ */

struct io_name_query {
	char name[64];
	bool buffered_reads_async;
	sem_t done;
};

static void io_name_on_worker(struct tsr_worker *w, void *arg)
{
	struct io_name_query *q = arg;

	snprintf(q->name, sizeof(q->name), "%s", tsr_io_name(tsr_worker_io(w)));
	q->buffered_reads_async = tsr_io_buffered_reads_async(tsr_worker_io(w));
	sem_post(&q->done);
}

static void query_io_name(struct tesserad *d)
{
	struct io_name_query *q = calloc(1, sizeof(*q));
	struct timespec deadline;
	int ret = -1;

	snprintf(d->io_name, sizeof(d->io_name), "unknown");
	/* no answer: the cache stays on, the store checks each read's io */
	d->read_cache = !d->read_cache_off;
	if (q == NULL)
		return;
	sem_init(&q->done, 0, 0);
	if (tsr_worker_send(d->workers[0], io_name_on_worker, q) == 0) {
		/* on the monotonic clock: a step of the wall clock neither
		 * cuts the 10 s short nor stretches them */
		clock_gettime(CLOCK_MONOTONIC, &deadline);
		deadline.tv_sec += 10;
		while ((ret = sem_clockwait(&q->done, CLOCK_MONOTONIC, &deadline)) && errno == EINTR)
			;
	}
	if (ret) {
		/* the message may still run: leave q to it rather than free it under its feet */
		tsr_warn("worker0 did not answer within 10 s");
		return;
	}
	snprintf(d->io_name, sizeof(d->io_name), "%s", q->name);
	/* the store opens with the cache only where worker0's io can use it
	 * (--io auto falling back to libaio included): no buffered descriptor
	 * per segment that no read would use.  It still checks each read's io */
	d->read_cache = !d->read_cache_off && !d->device && q->buffered_reads_async;
	if (d->read_cache_off)
		tsr_info("read cache: off (--read-cache off): host reads use O_DIRECT");
	else if (d->device)
		tsr_info("read cache: off: volumes on --device %s are read with O_DIRECT",
			 d->device);
	else if (!q->buffered_reads_async)
		tsr_warn("read cache: off: the %s backend blocks its worker on buffered reads; "
			 "host reads use O_DIRECT (use --io io_uring for the cache)",
			 q->name);
	else
		tsr_info("read cache: on: host reads go through the page cache");
	sem_destroy(&q->done);
	free(q);
}

/* ---- signals ---------------------------------------------------------- */

static void signal_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct signalfd_siginfo si;

	if (read(w->fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		tsr_info("%s received: shutting down", strsignal((int)si.ssi_signo));
	ev_break(loop, EVBREAK_ALL);
}

/* Block SIGTERM/SIGINT in every thread (workers inherit the mask) and read them from a signalfd. */
static int setup_signals(struct tesserad *d)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (sigprocmask(SIG_BLOCK, &set, NULL))
		return -errno;
	d->sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (d->sig_fd < 0)
		return -errno;
	ev_io_init(&d->sig_watcher, signal_cb, d->sig_fd, EV_READ);
	ev_io_start(d->loop, &d->sig_watcher);
	return 0;
}

/* ---- start and stop --------------------------------------------------- */

static void report_busy(struct tesserad *d)
{
	char *path = dir_file(d, "tesserad.pid");
	char pid[32] = "unknown";
	FILE *f = fopen(path, "re");

	if (f) {
		if (fgets(pid, sizeof(pid), f))
			pid[strcspn(pid, "\n")] = '\0';
		fclose(f);
	}
	fprintf(stderr, "tesserad: %s is in use by another tesserad (pid %s)\n", d->dir, pid);
	free(path);
}

static void shutdown_daemon(struct tesserad *d)
{
	unsigned i;

	/* first: a rollback retry waiting for the same rollback's end answers
	 * -ESHUTDOWN now, so that the joins below (cluster_snapshot_stop's,
	 * the admin server's copy-rollback threads, tsr_store_close) wait for
	 * running copies only, not for a retry's wait plus its own copy
	 * (review 16d N4) */
	tsr_store_closing(d->store);
	stop_nbd_listeners(d);
	cluster_listener_stop(&d->cl);
	stop_site(d);
	/* detaches what this node coordinates (workers still run their I/O) */
	tsr_cluster_stop(d->cluster);
	d->cluster = NULL;
	tsr_admin_server_destroy(d->admin);
	d->admin = NULL;
	/* stopping a worker closes the NBD connections it owns */
	for (i = 0; i < d->workers_started; i++)
		tsr_worker_stop(d->workers[i]);
	d->workers_started = 0;
	tsr_nbd_server_destroy(d->nbd);
	d->nbd = NULL;
	tsr_peer_server_destroy(d->peer);
	d->peer = NULL;
	tsr_volset_destroy(d->vols);
	d->vols = NULL;
	tsr_store_close(d->store);
	d->store = NULL;
	if (d->pid_written) {
		/* kept as tesserad.pid.tmp: the next start reuses its block */
		char *path = dir_file(d, "tesserad.pid");
		char *tmp = dir_file(d, "tesserad.pid.tmp");

		if (rename(path, tmp))
			unlink(path);
		free(path);
		free(tmp);
	}
	OPENSSL_cleanse(d->token, sizeof(d->token));
}

/*
 * Every open volume holds several descriptors (a data segment per 8 TiB and,
 * with the read cache, its buffered twin; the crc table, the dirty bitmap,
 * its parked snapshot spare's three, three per snapshot layer: 7 for a volume
 * without snapshots, 6 with --read-cache off or --io libaio) and every NBD
 * connection a socket: the usual soft limit of 1024 is met by a node with
 * ~125 volumes.  Raise the soft limit to the hard one, as the kernel lets any
 * process do, and log both.  A failure is a warning: the daemon runs with
 * what it has.
 */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	rlim_t was;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		tsr_warn("fd limit: getrlimit: %s", strerror(errno));
		return;
	}
	was = rl.rlim_cur;
	if (rl.rlim_cur != rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
			tsr_warn("fd limit: raise the soft limit from %llu to %llu: %s; "
				 "serving with %llu descriptors",
				 (unsigned long long)was, (unsigned long long)rl.rlim_max,
				 strerror(errno), (unsigned long long)was);
			return;
		}
	}
	tsr_info("fd limit: %llu open files (soft limit was %llu, hard %llu)",
		 (unsigned long long)rl.rlim_cur, (unsigned long long)was,
		 (unsigned long long)rl.rlim_max);
}

static int start_daemon(struct tesserad *d)
{
	struct tsr_store_opts store_opts = { .device = d->device };
	struct tsr_nbd_server_opts nbd_opts = { 0 };
	struct tsr_admin_server_opts admin_opts = { 0 };
	const char *nbd_names[MAX_LISTENERS];
	char *admin_path, ready[2048];
	unsigned i;
	size_t n, k;
	int ret;

	raise_fd_limit();
	ret = check_node_id(d);
	if (ret)
		return ret;
	/* the workers before the store: which io they got (--io auto may fall
	 * back to libaio) decides the store's read cache */
	for (i = 0; i < d->n_workers; i++) {
		ret = tsr_worker_start(i, &d->io_opts, &d->workers[i]);
		if (ret) {
			tsr_error("start worker%u: %s%s", i, strerror(-ret),
				  d->io_opts.fault_spec ? " (check --io-fault)" : "");
			return ret;
		}
		d->workers_started++;
	}
	query_io_name(d);
	store_opts.read_cache_off = !d->read_cache;
	ret = tsr_store_open(d->dir, &store_opts, &d->store);
	if (ret == -EBUSY) {
		report_busy(d);
		return ret;
	}
	if (ret) {
		fprintf(stderr, "tesserad: cannot open the store in %s: %s%s\n", d->dir,
			strerror(-ret), ret == -EUCLEAN ? " (the catalogue failed its checksum; "
			"see the log above)" : "");
		return ret;
	}
	ret = d->join ? load_join_token(d) : load_token(d);
	if (ret)
		return ret;
	if (cluster_mode(d)) {
		ret = load_node_id(d);
		if (ret)
			return ret;
	}
	ret = tsr_volset_create(d->store, &d->vols);
	if (ret) {
		tsr_error("volume set: %s", strerror(-ret));
		return ret;
	}
	if (cluster_mode(d)) /* NBD serves only the volumes attached here */
		tsr_volset_set_cluster_mode(d->vols, true);
	/* each local volume's I/O (and its snapshot gate) runs on one home worker */
	tsr_volset_set_workers(d->vols, d->workers, d->workers_started);
	nbd_opts.vols = d->vols;
	nbd_opts.store = d->store;
	ret = tsr_nbd_server_create(&nbd_opts, &d->nbd);
	if (ret) {
		tsr_error("nbd server: %s", strerror(-ret));
		return ret;
	}
	if (d->n_nbd_specs == 0) {
		static char def[PATH_MAX + 8];

		snprintf(def, sizeof(def), "unix:%s/nbd.sock", d->dir);
		d->nbd_specs[d->n_nbd_specs++] = def;
	}
	for (i = 0; i < d->n_nbd_specs; i++) {
		ret = start_nbd_listener(d, d->nbd_specs[i]);
		if (ret)
			return ret;
		nbd_names[i] = d->listeners[i].name;
	}

	if (cluster_mode(d)) {
		ret = start_cluster(d, nbd_names);
		if (ret)
			return ret;
	}

	admin_path = dir_file(d, "admin.sock");
	admin_opts.loop = d->loop;
	admin_opts.store = d->store;
	admin_opts.vols = d->vols;
	admin_opts.nbd = d->nbd;
	admin_opts.unix_path = admin_path;
	admin_opts.tcp_listen = d->admin_listen;
	admin_opts.token = d->token;
	admin_opts.node.data_dir = d->dir;
	admin_opts.node.device = d->device;
	admin_opts.node.io_backend = d->io_name;
	admin_opts.node.workers = d->workers_started;
	admin_opts.node.nbd_listeners = nbd_names;
	admin_opts.node.n_nbd_listeners = d->n_listeners;
	admin_opts.node.started = time(NULL);
	admin_opts.cluster = d->cluster ? &d->admin_hooks : NULL;
	ret = tsr_admin_server_create(&admin_opts, &d->admin);
	free(admin_path);
	if (ret)
		return ret;
	if (d->cluster) {
		d->cl.on_peer = cluster_on_peer;
		d->cl.on_meta = d->meta ? cluster_on_meta : NULL;
		d->cl.on_admin = cluster_on_admin;
		d->cl.arg = d;
		ret = cluster_listener_start(&d->cl, d->loop);
		if (ret) {
			tsr_error("cluster: listen thread: %s", strerror(-ret));
			return ret;
		}
	}
	if (d->site_listen) {
		ret = start_site(d);
		if (ret)
			return ret;
	}

	ret = write_pid_file(d);
	if (ret)
		return ret;
	d->pid_written = true;

	n = (size_t)snprintf(ready, sizeof(ready), "tesserad ready: nbd");
	for (i = 0; i < d->n_listeners && n < sizeof(ready); i++)
		n += (size_t)snprintf(ready + n, sizeof(ready) - n, " %s", d->listeners[i].name);
	if (n < sizeof(ready))
		n += (size_t)snprintf(ready + n, sizeof(ready) - n, " admin");
	for (k = 0; tsr_admin_server_listener(d->admin, k) && n < sizeof(ready); k++)
		n += (size_t)snprintf(ready + n, sizeof(ready) - n, " %s",
				      tsr_admin_server_listener(d->admin, k));
	if (d->cluster && n < sizeof(ready))
		n += (size_t)snprintf(ready + n, sizeof(ready) - n, " cluster %s node %s",
				      d->cl.name, d->node_id);
	if (d->sl.fd >= 0 && n < sizeof(ready))
		n += (size_t)snprintf(ready + n, sizeof(ready) - n, " site %s", d->sl.name);
	tsr_info("%s (workers %u, io %s, version %s, pid %d)", ready, d->workers_started,
		 d->io_name, TSR_VERSION, (int)getpid());
	return 0;
}

int main(int argc, char **argv)
{
	struct tesserad d = { .sig_fd = -1, .cl = { .fd = -1 }, .sl = { .fd = -1 } };
	char *abs;
	int ret;

	parse_args(&d, argc, argv);
	ret = make_dirs(d.dir);
	if (ret) {
		fprintf(stderr, "tesserad: cannot create data directory %s: %s\n", d.dir,
			strerror(-ret));
		return 1;
	}
	abs = realpath(d.dir, NULL);
	if (abs == NULL) {
		fprintf(stderr, "tesserad: %s: %s\n", d.dir, strerror(errno));
		return 1;
	}
	d.dir = abs;
	d.loop = ev_default_loop(EVFLAG_AUTO);
	if (d.loop == NULL) {
		fprintf(stderr, "tesserad: cannot initialise libev\n");
		return 1;
	}
	ret = setup_signals(&d);
	if (ret) {
		fprintf(stderr, "tesserad: signals: %s\n", strerror(-ret));
		return 1;
	}
	ret = start_daemon(&d);
	if (ret == 0)
		ev_run(d.loop, 0);
	shutdown_daemon(&d);
	if (ret == 0)
		tsr_info("tesserad stopped cleanly");
	else if (ret != -EBUSY && !d.node_id_refused) /* both told on stderr already */
		fprintf(stderr, "tesserad: start-up failed: %s (see the log above)\n",
			strerror(-ret));
	ev_io_stop(d.loop, &d.sig_watcher);
	close(d.sig_fd);
	free(d.dir);
	return ret ? 1 : 0;
}
