/*
 * tessera: the command-line client of tesserad's admin API.
 *
 *   tessera [--data DIR | --cluster HOST:PORT [--token T | --token-file F]] [--json]
 *           COMMAND ...
 *
 * Global options may also follow the command.  Every command prints text for
 * people or, with --json, exactly one JSON object on stdout (built with
 * jansson; `volume status --watch --json` prints one per line).  Errors: one
 * line on stderr saying what to do, exit 1; a wrong command line exits 2.
 *
 * This file: main, the global options, connecting, one request/reply and the
 * argument parser every verb uses.  The verbs are in cmd_*.c, renderings in
 * output.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera.h"

static const char HELP_MAIN[] =
"Usage: tessera [GLOBAL OPTIONS] COMMAND [ARGS]\n"
"Manage the volumes, snapshots and geo-replication of a tesserad node or of a\n"
"Tessera cluster.\n"
"\n"
"Commands:\n"
"  volume create NAME --size SIZE [--replicas N] [--min-replicas M]\n"
"                [--failure-domain node|zone|site]   create a thin volume\n"
"  volume list                      list the volumes\n"
"  volume show NAME                 details, snapshots and the NBD URIs of a volume\n"
"  volume resize NAME --size SIZE   grow a volume\n"
"  volume delete NAME               delete a volume (no NBD client may hold it)\n"
"  volume attach NAME [--node ID]   export a volume on a node (its coordinator)\n"
"  volume detach NAME [--force]    stop exporting it (refused while NBD clients\n"
"                                   are connected; --force closes them first)\n"
"  volume status NAME [--watch]     copies, epoch, resync and scrub progress\n"
"  volume scrub NAME [--no-repair]  compare every copy, repair mismatches\n"
"  volume replace-replica NAME --node OLD [--to NEW]   rebuild a copy elsewhere\n"
"  volume create NEW --from-snapshot VOL@SNAP [--size SIZE]\n"
"                                   clone a snapshot (writable, shares its blocks)\n"
"  volume create NEW --from-volume VOL [--size SIZE]   clone a volume as it is now\n"
"  volume rollback VOL SNAP         make VOL's content equal SNAP again\n"
"  snapshot create VOL SNAP         cut a snapshot (also VOL@SNAP everywhere)\n"
"  snapshot list VOL                VOL's snapshots: created, allocated, exclusive, clones\n"
"  snapshot show VOL SNAP           details and the read-only NBD URI of a snapshot\n"
"  snapshot delete VOL SNAP         delete a snapshot (its clones keep working)\n"
"  snapshot diff VOL SNAP1 [SNAP2|--head]   byte ranges changed since SNAP1\n"
"  node list                        the nodes: domains, capacity, health\n"
"  cluster status                   the cluster at a glance\n"
"  status                           what the node runs and serves\n"
"  site add NAME --address HOST:PORT --ca CA.pem --cert NODE.pem --key NODE.key\n"
"                [--peer-name N]    a remote site (mutual TLS) to replicate to\n"
"  site list | site remove NAME     the remote sites / forget one\n"
"  replication enable VOL --to SITE [--target-layout ec:4+2|replicas:2]\n"
"                [--target-volume NAME] [--group APP] [--max-rate RATE]\n"
"                [--log-size SIZE]  ship VOL's writes to SITE in order, async\n"
"  replication disable VOL          stop shipping VOL\n"
"  replication status [VOL|--group G] [--watch]   state, lag (RPO), rate, ETA\n"
"  replication promote VOL|--group G [--force]    failover: DR copy writable\n"
"  replication resync VOL --from SITE             failback: get changes back\n"
"  demo                             start a 3-node cluster, create a volume, benchmark it\n"
"\n"
"Global options (before or after the command):\n"
"  --data DIR           the node's data directory; talks to DIR/admin.sock\n"
"                       (default: $TESSERA_DATA, else /var/lib/tessera)\n"
"  --cluster HOST:PORT  talk to a tesserad over TCP: a cluster node's --listen\n"
"                       address, or a node's --admin-listen (default: $TESSERA_CLUSTER)\n"
"  --token TOKEN        the admin token (default: $TESSERA_TOKEN)\n"
"  --token-file FILE    read the token from FILE, a copy of DIR/admin.token of the\n"
"                       node (in a cluster: of the node started with --meta)\n"
"                       (default: $TESSERA_TOKEN_FILE)\n"
"  --json               print one JSON object on stdout\n"
"  --help, --version\n"
"\n"
"Sizes take binary units: 4k, 512M, 10G, 2T.\n"
"Run 'tessera COMMAND --help' for more, e.g. tessera volume create --help\n"
"\n"
"Example:\n"
"  tessera demo\n"
"  tessera --data /var/lib/tessera volume create db --size 10G\n"
"  tessera snapshot create db@before-upgrade\n"
"  tessera volume create db-test --from-snapshot db@before-upgrade\n"
"  tessera --cluster 10.0.0.1:7001 --token-file admin.token volume status db\n"
"  tessera replication enable db --to dr && tessera replication status db --watch\n";

/* ---- errors and connection -------------------------------------------- */

static void cli_verror(const char *fmt, va_list ap)
{
	fputs("tessera: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void cli_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	cli_verror(fmt, ap);
	va_end(ap);
}

int cli_usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	cli_verror(fmt, ap);
	va_end(ap);
	return EXIT_USAGE;
}

volatile int g_cli_interrupted;

static void on_signal(int sig)
{
	g_cli_interrupted = sig;
}

void cli_catch_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };

	/* no SA_RESTART: a signal interrupts the waits */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

static char *admin_sock_path(const struct cli *cli)
{
	char *p;

	if (asprintf(&p, "%s/admin.sock", cli->data_dir) < 0)
		return NULL;
	return p;
}

int cli_connect_quiet(const struct cli *cli, struct tsr_admin_client **out, char *why,
		      size_t why_len)
{
	char token[256];
	const char *tok = cli->token, *file = cli->token_file;
	int ret;

	if (cli->cluster == NULL) {
		char *path = admin_sock_path(cli);

		if (path == NULL) {
			snprintf(why, why_len, "out of memory");
			return EXIT_FAIL;
		}
		ret = tsr_admin_connect_unix(path, out);
		if (ret == -EACCES)
			snprintf(why, why_len, "cannot reach tesserad at %s: %s (run as the user "
				 "tesserad runs as, e.g. root)", path, strerror(-ret));
		else if (ret)
			snprintf(why, why_len, "cannot reach tesserad at %s: %s (is tesserad "
				 "running? start it with: tesserad --data %s)", path, strerror(-ret),
				 cli->data_dir);
		free(path);
		return ret ? EXIT_FAIL : 0;
	}
	/* --token, --token-file, $TESSERA_TOKEN, $TESSERA_TOKEN_FILE: the first given */
	if (tok == NULL && file == NULL) {
		tok = getenv("TESSERA_TOKEN");
		if (tok == NULL || tok[0] == '\0') {
			tok = NULL;
			file = getenv("TESSERA_TOKEN_FILE");
		}
	}
	if (tok == NULL && file && file[0]) {
		ret = tsr_admin_read_token(file, token, sizeof(token));
		if (ret) {
			snprintf(why, why_len, "cannot read the token from %s: %s", file,
				 ret == -EINVAL ? "the file is empty" : strerror(-ret));
			return EXIT_FAIL;
		}
		tok = token;
	}
	if (tok == NULL || tok[0] == '\0') {
		snprintf(why, why_len, "--cluster needs the admin token: --token-file FILE (a copy "
			 "of DIR/admin.token of the node; in a cluster, of the node started with "
			 "--meta), --token TOKEN, $TESSERA_TOKEN_FILE or $TESSERA_TOKEN");
		return EXIT_FAIL;
	}
	ret = tsr_admin_connect_tcp(cli->cluster, tok, out);
	explicit_bzero(token, sizeof(token));
	if (ret == -EINVAL)
		snprintf(why, why_len, "--cluster %s: give HOST:PORT, e.g. 127.0.0.1:7001",
			 cli->cluster);
	else if (ret)
		snprintf(why, why_len, "cannot reach tesserad at %s: %s (is it running, with "
			 "--listen %s in a cluster or --admin-listen tcp:%s?)", cli->cluster,
			 strerror(-ret), cli->cluster, cli->cluster);
	return ret ? EXIT_FAIL : 0;
}

int cli_connect(const struct cli *cli, struct tsr_admin_client **out)
{
	char why[1024];
	int ret = cli_connect_quiet(cli, out, why, sizeof(why));

	if (ret)
		cli_error("%s", why);
	return ret;
}

int cli_call_quiet(const struct cli *cli, struct tsr_admin_client *c,
		   Tessera__Admin__Request *req, Tessera__Admin__Response **resp,
		   char *why, size_t why_len)
{
	const char *where = cli->cluster ? cli->cluster : cli->data_dir;
	int ret;

	ret = tsr_admin_call(c, req, CLI_TIMEOUT_MS, resp);
	if (ret == -ETIMEDOUT)
		snprintf(why, why_len, "tesserad (%s) did not answer within %d s (see its log)",
			 where, CLI_TIMEOUT_MS / 1000);
	else if (ret == -EPROTO)
		snprintf(why, why_len, "tesserad (%s) sent an invalid reply (is it the same "
			 "version as this tessera, %s?)", where, TSR_VERSION);
	else if (ret)
		snprintf(why, why_len, "lost the connection to tesserad (%s): %s", where,
			 strerror(-ret));
	return ret;
}

int cli_call(const struct cli *cli, struct tsr_admin_client *c, Tessera__Admin__Request *req,
	     Tessera__Admin__Response **resp)
{
	char why[512];

	if (cli_call_quiet(cli, c, req, resp, why, sizeof(why))) {
		cli_error("%s", why);
		return EXIT_FAIL;
	}
	if ((*resp)->error) {
		/* the server's message says what failed and what to do: print it as is */
		if ((*resp)->message[0])
			cli_error("%s", (*resp)->message);
		else
			cli_error("tesserad: %s", strerror(-(*resp)->error));
		tessera__admin__response__free_unpacked(*resp, NULL);
		*resp = NULL;
		return EXIT_FAIL;
	}
	return 0;
}

int cli_run(const struct cli *cli, Tessera__Admin__Request *req, cli_printer print_fn,
	    const void *arg)
{
	struct tsr_admin_client *c = NULL;
	Tessera__Admin__Response *resp = NULL;
	int ret;

	ret = cli_connect(cli, &c);
	if (ret)
		return ret;
	ret = cli_call(cli, c, req, &resp);
	tsr_admin_close(c);
	if (ret)
		return ret;
	ret = print_fn(cli, resp, arg);
	tessera__admin__response__free_unpacked(resp, NULL);
	if (fflush(stdout) != 0) {
		cli_error("cannot write the output: %s", strerror(errno));
		return EXIT_FAIL;
	}
	return ret;
}

/* ---- command line ----------------------------------------------------- */

/*
 * If argv[*i] is a global option, take it (and its value) and return 1;
 * return 0 if it is not one; EXIT_USAGE (printed) when its value is missing.
 */
static int take_global(struct cli *cli, int argc, char **argv, int *i)
{
	static const char *const with_value[] = { "--data", "--cluster", "--token",
						  "--token-file" };
	const char *arg = argv[*i], *value = NULL;
	size_t k, n;

	if (strcmp(arg, "--json") == 0) {
		cli->json = true;
		return 1;
	}
	for (k = 0; k < sizeof(with_value) / sizeof(with_value[0]); k++) {
		n = strlen(with_value[k]);
		if (strncmp(arg, with_value[k], n) == 0 && arg[n] == '=') {
			value = arg + n + 1;
			break;
		}
		if (strcmp(arg, with_value[k]) == 0) {
			if (*i + 1 >= argc)
				return cli_usage_error("%s needs a value (tessera --help)", arg);
			value = argv[++*i];
			break;
		}
	}
	if (value == NULL)
		return 0;
	switch (k) {
	case 0: cli->data_dir = value; cli->data_explicit = true; break;
	case 1: cli->cluster = value; cli->cluster_from_env = false; break;
	case 2: cli->token = value; break;
	case 3: cli->token_file = value; break;
	}
	return 1;
}

/* If arg is one of opts, take it (and its value): 1; 0 if not; EXIT_USAGE. */
static int take_opt(const struct cli_opt *opts, int argc, char **argv, int *i, const char *cmd)
{
	const char *arg = argv[*i];

	for (const struct cli_opt *o = opts; o && o->name; o++) {
		size_t n = strlen(o->name);

		if (strncmp(arg, o->name, n) != 0 || (arg[n] != '\0' && arg[n] != '='))
			continue;
		if (o->flag) {
			if (arg[n] == '=')
				return cli_usage_error("%s takes no value (tessera %s --help)",
						       o->name, cmd);
			*o->flag = true;
			return 1;
		}
		if (arg[n] == '=') {
			*o->value = arg + n + 1;
			return 1;
		}
		if (*i + 1 >= argc)
			return cli_usage_error("%s needs a value (tessera %s --help)", o->name, cmd);
		*o->value = argv[++*i];
		return 1;
	}
	return 0;
}

int cli_parse_args(struct cli *cli, int argc, char **argv, const struct cli_opt *opts,
		   const char **pos, int npos, int *got, const char *help, const char *cmd,
		   bool *help_shown)
{
	bool only_positionals = false;
	int i, ret;

	*help_shown = false;
	*got = 0;
	for (i = 0; i < argc; i++) {
		const char *arg = argv[i];

		if (!only_positionals) {
			if (strcmp(arg, "--") == 0) {
				only_positionals = true; /* a name that starts with '-' */
				continue;
			}
			if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
				fputs(help, stdout);
				*help_shown = true;
				return 0;
			}
			ret = take_global(cli, argc, argv, &i);
			if (ret == 0)
				ret = take_opt(opts, argc, argv, &i, cmd);
			if (ret == 1)
				continue;
			if (ret)
				return ret;
			if (arg[0] == '-' && arg[1] != '\0')
				return cli_usage_error("unknown option %s (tessera %s --help)", arg,
						       cmd);
		}
		if (*got >= npos)
			return cli_usage_error("unexpected argument '%s' (tessera %s --help)", arg,
					       cmd);
		pos[(*got)++] = arg;
	}
	if (cli->cluster_from_env && cli->data_explicit) {
		cli->cluster = NULL; /* --data on the command line beats $TESSERA_CLUSTER */
		cli->cluster_from_env = false;
	}
	if (cli->cluster && cli->data_explicit)
		return cli_usage_error("give either --data or --cluster, not both");
	return 0;
}

int cli_parse(struct cli *cli, int argc, char **argv, const struct cli_opt *opts,
	      const char **name, const char *help, const char *cmd, bool *help_shown)
{
	const char *pos[1] = { NULL };
	int got, ret;

	ret = cli_parse_args(cli, argc, argv, opts, pos, name ? 1 : 0, &got, help, cmd,
			     help_shown);
	if (ret || *help_shown)
		return ret;
	if (name && got == 0)
		return cli_usage_error("missing the volume NAME (tessera %s --help)", cmd);
	if (name)
		*name = pos[0];
	return 0;
}

int cli_check_name(const char *name)
{
	if (tsr_valid_name(name))
		return 0;
	cli_error("invalid volume name '%s': use 1 to 63 of A-Z a-z 0-9 . _ - starting with a "
		  "letter or digit", name);
	return EXIT_FAIL;
}

int cli_check_snap_name(const char *name)
{
	if (tsr_valid_name(name))
		return 0;
	cli_error("invalid snapshot name '%s': use 1 to 63 of A-Z a-z 0-9 . _ - starting with a "
		  "letter or digit (no '@': VOL@SNAP separates a volume from its snapshot)", name);
	return EXIT_FAIL;
}

int cli_split_snap(const char *arg, char *vol, size_t len, const char **snap)
{
	const char *at = strchr(arg, '@');

	*snap = NULL;
	if (at == NULL) {
		snprintf(vol, len, "%s", arg);
		return 0;
	}
	if ((size_t)(at - arg) >= len) {
		cli_error("invalid volume name in '%s': use 1 to 63 of A-Z a-z 0-9 . _ - starting "
			  "with a letter or digit", arg);
		return EXIT_FAIL;
	}
	memcpy(vol, arg, (size_t)(at - arg));
	vol[at - arg] = '\0';
	*snap = at + 1;
	return 0;
}

int cli_check_size(const char *arg, uint64_t *size)
{
	int ret = tsr_parse_size(arg, size);

	if (ret) {
		cli_error("invalid size '%s': give bytes or a number with a binary unit, e.g. "
			  "512M, 10G, 2T", arg);
		return EXIT_FAIL;
	}
	if (*size == 0) {
		cli_error("invalid size '%s': a volume cannot be of size zero", arg);
		return EXIT_FAIL;
	}
	if (*size % TSR_BLOCK_SIZE) {
		uint64_t up = (*size / TSR_BLOCK_SIZE + 1) * TSR_BLOCK_SIZE;

		cli_error("invalid size '%s': it must be a multiple of 4 KiB (4096 bytes); "
			  "the next one up is %" PRIu64, arg, up);
		return EXIT_FAIL;
	}
	return 0;
}

int cli_parse_uint(const char *opt, const char *arg, unsigned long lo, unsigned long hi,
		   unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(arg, &end, 10);
	if (arg[0] == '\0' || arg[0] == '-' || *end || errno || v < lo || v > hi)
		return cli_usage_error("%s %s: give a whole number from %lu to %lu", opt, arg, lo,
				       hi);
	*out = v;
	return 0;
}

/* ---- main ------------------------------------------------------------- */

int main(int argc, char **argv)
{
	struct cli cli = { 0 };
	const char *cmd, *env;
	int i, ret;

	cli.data_dir = getenv("TESSERA_DATA");
	if (cli.data_dir == NULL || cli.data_dir[0] == '\0')
		cli.data_dir = "/var/lib/tessera";

	for (i = 1; i < argc; i++) {
		const char *arg = argv[i];

		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			fputs(HELP_MAIN, stdout);
			return 0;
		}
		if (strcmp(arg, "--version") == 0) {
			printf("tessera %s\n", TSR_VERSION);
			return 0;
		}
		if (strcmp(arg, "--") == 0) {
			i++;
			break;
		}
		if (arg[0] != '-' || arg[1] == '\0')
			break;
		ret = take_global(&cli, argc, argv, &i);
		if (ret == 0)
			return cli_usage_error("unknown option %s (tessera --help)", arg);
		if (ret != 1)
			return ret;
	}
	if (i >= argc) {
		fputs(HELP_MAIN, stderr);
		return cli_usage_error("no command given (tessera --help)");
	}
	cmd = argv[i];
	argc -= i;
	argv += i;
	/*
	 * The environment fills what the command line left out; --data on the
	 * command line, before or after the verb, wins over $TESSERA_CLUSTER.
	 * The token variables are read by cli_connect, after the verb's options.
	 */
	env = getenv("TESSERA_CLUSTER");
	if (cli.cluster == NULL && env && env[0] && !cli.data_explicit) {
		cli.cluster = env;
		cli.cluster_from_env = true;
	}

	if (strcmp(cmd, "volume") == 0 || strcmp(cmd, "volumes") == 0)
		ret = cli_cmd_volume(&cli, argc, argv);
	else if (strcmp(cmd, "snapshot") == 0 || strcmp(cmd, "snapshots") == 0 ||
		 strcmp(cmd, "snap") == 0)
		ret = cli_cmd_snapshot(&cli, argc, argv);
	else if (strcmp(cmd, "node") == 0 || strcmp(cmd, "nodes") == 0)
		ret = cli_cmd_node(&cli, argc, argv);
	else if (strcmp(cmd, "cluster") == 0)
		ret = cli_cmd_cluster(&cli, argc, argv);
	else if (strcmp(cmd, "status") == 0)
		ret = cli_cmd_status(&cli, argc, argv);
	else if (strcmp(cmd, "site") == 0 || strcmp(cmd, "sites") == 0)
		ret = cli_cmd_site(&cli, argc, argv);
	else if (strcmp(cmd, "replication") == 0 || strcmp(cmd, "repl") == 0)
		ret = cli_cmd_replication(&cli, argc, argv);
	else if (strcmp(cmd, "demo") == 0)
		ret = cli_demo(&cli, argc, argv);
	else if (strcmp(cmd, "version") == 0) {
		printf("tessera %s\n", TSR_VERSION);
		ret = 0;
	} else if (strcmp(cmd, "help") == 0) {
		if (argc > 1) {
			char *sub[] = { argv[1], (char *)"--help", NULL };

			return strcmp(argv[1], "volume") == 0 ? cli_cmd_volume(&cli, 2, sub) :
			       strcmp(argv[1], "snapshot") == 0 ? cli_cmd_snapshot(&cli, 2, sub) :
			       strcmp(argv[1], "node") == 0 ? cli_cmd_node(&cli, 2, sub) :
			       strcmp(argv[1], "cluster") == 0 ? cli_cmd_cluster(&cli, 2, sub) :
			       strcmp(argv[1], "status") == 0 ? cli_cmd_status(&cli, 2, sub) :
			       strcmp(argv[1], "site") == 0 ? cli_cmd_site(&cli, 2, sub) :
			       strcmp(argv[1], "replication") == 0 ? cli_cmd_replication(&cli, 2, sub) :
			       strcmp(argv[1], "demo") == 0 ? cli_demo(&cli, 2, sub) :
			       (fputs(HELP_MAIN, stdout), 0);
		}
		fputs(HELP_MAIN, stdout);
		ret = 0;
	} else {
		ret = cli_usage_error("unknown command '%s': use volume, snapshot, node, cluster, "
				      "status, site, replication or demo (tessera --help)", cmd);
	}
	return ret;
}
