/*
 * tessera-csi: the CSI plugin binary.  Parses the command line, checks what
 * it can before serving (state directory, tesserad address, token), then
 * runs the gRPC server (grpc_server.c) until SIGTERM.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"
#include "tessera/admin.h"
#include "tessera/common.h"

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "Usage: tessera-csi --endpoint unix:///csi/csi.sock --node-id ID [options]\n"
	    "\n"
	    "The CSI driver %s: Kubernetes' sidecars (csi-provisioner, csi-snapshotter,\n"
	    "csi-resizer, node-driver-registrar) call it over gRPC on a unix socket; it\n"
	    "turns their calls into tesserad admin requests and, on nodes, into block\n"
	    "devices (nbdfuse + loop) and mounts.\n"
	    "\n"
	    "  --endpoint unix:///PATH   gRPC socket to serve (also unix:/PATH or /PATH);\n"
	    "                            the CSI_ENDPOINT environment variable is the default\n"
	    "  --node-id ID              this node's id: the CSI node id and the tesserad\n"
	    "                            node (--node-id of tesserad) volumes attach to\n"
	    "  --mode all|controller|node  services to serve besides Identity (default all):\n"
	    "                            controller in the Deployment, node in the DaemonSet\n"
	    "  --tesserad unix:PATH      tesserad admin socket (default\n"
	    "                            unix:/var/lib/tessera/admin.sock)\n"
	    "  --tesserad HOST:PORT      or its TCP admin listener, with --token-file\n"
	    "  --token-file FILE         the admin token (tesserad's DATA/admin.token)\n"
	    "  --state-dir DIR           node state: one file per staged volume and the\n"
	    "                            nbdfuse mounts (default /var/lib/tessera-csi)\n"
	    "  --max-volumes N           NodeGetInfo max_volumes_per_node (default 0: no limit)\n"
	    "  --zone Z --site S         topology of this node (topology.tessera.io/zone and\n"
	    "                            /site); default: what tesserad's node list says\n"
	    "  --workers N               RPC worker threads (default 8)\n"
	    "  --admin-timeout-ms MS     timeout of one tesserad request (default 120000)\n"
	    "  -v, --verbose             debug logging\n"
	    "  -V, --version             print the version and exit\n"
	    "  -h, --help                this text\n"
	    "\n"
	    "Every RPC is logged with its method, volume, result and duration.\n"
	    "Example (node plugin next to a tesserad started with --data /var/lib/tessera):\n"
	    "  tessera-csi --endpoint unix:///csi/csi.sock --node-id n1 --mode node\n",
	    CSI_DRIVER_NAME);
}

static int parse_endpoint(const char *ep, char *path, size_t len)
{
	if (strncmp(ep, "unix://", 7) == 0)
		ep += 7;
	else if (strncmp(ep, "unix:", 5) == 0)
		ep += 5;
	if (ep[0] != '/' || strlen(ep) >= len)
		return -EINVAL;
	snprintf(path, len, "%s", ep);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"endpoint", required_argument, NULL, 'e'},
	    {"node-id", required_argument, NULL, 'n'},
	    {"mode", required_argument, NULL, 'm'},
	    {"tesserad", required_argument, NULL, 't'},
	    {"token-file", required_argument, NULL, 'T'},
	    {"state-dir", required_argument, NULL, 's'},
	    {"max-volumes", required_argument, NULL, 'x'},
	    {"zone", required_argument, NULL, 'z'},
	    {"site", required_argument, NULL, 'S'},
	    {"workers", required_argument, NULL, 'w'},
	    {"admin-timeout-ms", required_argument, NULL, 'a'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	static pthread_mutex_t keys_lock = PTHREAD_MUTEX_INITIALIZER;
	static pthread_cond_t keys_cond = PTHREAD_COND_INITIALIZER;
	struct csi_plugin p = {
	    .mode = CSI_MODE_ALL,
	    .state_dir = "/var/lib/tessera-csi",
	    .admin_timeout_ms = 120000,
	    .keys_lock = &keys_lock,
	    .keys_cond = &keys_cond,
	};
	const char *endpoint = getenv("CSI_ENDPOINT"),
		   *tesserad = "unix:/var/lib/tessera/admin.sock";
	const char *token_file = NULL;
	char path[108];
	unsigned workers = 8;
	struct csi_server *srv;
	char *end;
	int c, ret;

	while ((c = getopt_long(argc, argv, "vVh", opts, NULL)) != -1) {
		switch (c) {
		case 'e':
			endpoint = optarg;
			break;
		case 'n':
			p.node_id = optarg;
			break;
		case 'm':
			if (strcmp(optarg, "all") == 0)
				p.mode = CSI_MODE_ALL;
			else if (strcmp(optarg, "controller") == 0)
				p.mode = CSI_MODE_CONTROLLER;
			else if (strcmp(optarg, "node") == 0)
				p.mode = CSI_MODE_NODE;
			else {
				fprintf(stderr,
					"tessera-csi: --mode %s: expected all, controller or "
					"node\n",
					optarg);
				return 2;
			}
			break;
		case 't':
			tesserad = optarg;
			break;
		case 'T':
			token_file = optarg;
			break;
		case 's':
			p.state_dir = optarg;
			break;
		case 'x':
			errno = 0;
			p.max_volumes = strtoll(optarg, &end, 10);
			if (errno || *end || p.max_volumes < 0) {
				fprintf(stderr,
					"tessera-csi: --max-volumes %s: expected a number >= 0\n",
					optarg);
				return 2;
			}
			break;
		case 'z':
			p.zone = optarg;
			break;
		case 'S':
			p.site = optarg;
			break;
		case 'w':
			workers = (unsigned)strtoul(optarg, &end, 10);
			if (*end || workers < 1 || workers > 256) {
				fprintf(stderr, "tessera-csi: --workers %s: expected 1..256\n",
					optarg);
				return 2;
			}
			break;
		case 'a':
			p.admin_timeout_ms = atoi(optarg);
			if (p.admin_timeout_ms < 100) {
				fprintf(stderr,
					"tessera-csi: --admin-timeout-ms %s: at least 100\n",
					optarg);
				return 2;
			}
			break;
		case 'v':
			tsr_log_set_level(TSR_LOG_DEBUG);
			break;
		case 'V':
			printf("tessera-csi %s (%s)\n", TSR_VERSION, CSI_DRIVER_NAME);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "tessera-csi: unexpected argument '%s' (see --help)\n",
			argv[optind]);
		return 2;
	}
	if (endpoint == NULL || parse_endpoint(endpoint, path, sizeof(path))) {
		fprintf(stderr,
			"tessera-csi: --endpoint %s: expected unix:///ABSOLUTE/PATH (at "
			"most %zu bytes of path)\n",
			endpoint ? endpoint : "(missing)", sizeof(path) - 1);
		return 2;
	}
	if (p.node_id == NULL || !tsr_valid_name(p.node_id)) {
		fprintf(stderr,
			"tessera-csi: --node-id %s: expected the node's id "
			"([A-Za-z0-9][A-Za-z0-9._-]{0,62}, as given to tesserad --node-id)\n",
			p.node_id ? p.node_id : "(missing)");
		return 2;
	}
	if (strncmp(tesserad, "unix:", 5) == 0) {
		p.tesserad_unix = tesserad + 5;
		if (p.tesserad_unix[0] != '/') {
			fprintf(stderr,
				"tessera-csi: --tesserad %s: expected unix:/ABSOLUTE/PATH\n",
				tesserad);
			return 2;
		}
	} else {
		char host[256], port[16];

		if (tsr_admin_split_hostport(tesserad, host, sizeof(host), port, sizeof(port))) {
			fprintf(stderr,
				"tessera-csi: --tesserad %s: expected unix:PATH or "
				"HOST:PORT\n",
				tesserad);
			return 2;
		}
		if (token_file == NULL) {
			fprintf(stderr,
				"tessera-csi: --tesserad %s is TCP: give --token-file "
				"(tesserad's DATA/admin.token)\n",
				tesserad);
			return 2;
		}
		p.tesserad_tcp = tesserad;
		p.token = calloc(1, TSR_ADMIN_TOKEN_LEN + 2);
		if (p.token == NULL)
			return 1;
		ret = tsr_admin_read_token(token_file, p.token, TSR_ADMIN_TOKEN_LEN + 2);
		if (ret) {
			fprintf(stderr, "tessera-csi: --token-file %s: %s\n", token_file,
				ret == -EINVAL ? "empty" : strerror(-ret));
			free(p.token);
			return 2;
		}
	}
	if (p.mode != CSI_MODE_CONTROLLER && mkdir(p.state_dir, 0700) && errno != EEXIST) {
		fprintf(stderr, "tessera-csi: --state-dir %s: %s\n", p.state_dir, strerror(errno));
		free(p.token);
		return 1;
	}
	tsr_log_set_thread_name("csi");
	ret = csi_server_start(&p, path, workers, &srv);
	if (ret) {
		free(p.token);
		return 1;
	}
	tsr_info("csi: %s %s serving %s on %s (node %s, tesserad %s)", CSI_DRIVER_NAME, TSR_VERSION,
		 p.mode == CSI_MODE_ALL          ? "identity+controller+node"
		 : p.mode == CSI_MODE_CONTROLLER ? "identity+controller"
						 : "identity+node",
		 path, p.node_id, tesserad);
	csi_server_run(srv);
	free(p.token);
	return 0;
}
