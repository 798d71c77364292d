/*
 * tessera: the command-line client of tesserad's admin API.
 *
 *   tessera [--data DIR | --cluster HOST:PORT [--token T | --token-file F]] [--json]
 *           COMMAND ...
 *
 * Global options may also follow the command.  Every command prints text for
 * people or, with --json, exactly one JSON object on stdout (built with
 * jansson).  Errors: one line on stderr saying what to do, exit 1; a wrong
 * command line exits 2.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "tessera.h"

/* ---- help texts ------------------------------------------------------- */

static const char HELP_MAIN[] =
"Usage: tessera [GLOBAL OPTIONS] COMMAND [ARGS]\n"
"Manage the volumes of a tesserad node.\n"
"\n"
"Commands:\n"
"  volume create NAME --size SIZE   create a thin volume\n"
"  volume list                      list the volumes\n"
"  volume show NAME                 details and the NBD URIs to reach a volume\n"
"  volume resize NAME --size SIZE   grow a volume\n"
"  volume delete NAME               delete a volume (no NBD client may hold it)\n"
"  status                           what the node runs and serves\n"
"  demo                             start tesserad, create a volume, benchmark it\n"
"\n"
"Global options (before or after the command):\n"
"  --data DIR           the node's data directory; talks to DIR/admin.sock\n"
"                       (default: $TESSERA_DATA, else /var/lib/tessera)\n"
"  --cluster HOST:PORT  talk to a tesserad started with --admin-listen tcp:HOST:PORT\n"
"  --token TOKEN        the node's admin token (DIR/admin.token on the node)\n"
"  --token-file FILE    read the token from FILE (default: $TESSERA_TOKEN)\n"
"  --json               print one JSON object on stdout\n"
"  --help, --version\n"
"\n"
"Sizes take binary units: 4k, 512M, 10G, 2T.\n"
"Run 'tessera COMMAND --help' for more, e.g. tessera volume create --help\n"
"\n"
"Example:\n"
"  tessera demo\n"
"  tessera --data /var/lib/tessera volume create db --size 10G\n";

static const char HELP_VOLUME[] =
"Usage: tessera volume create|list|show|resize|delete ...\n"
"  volume create NAME --size SIZE   create a thin volume\n"
"  volume list                      list the volumes\n"
"  volume show NAME                 details and the NBD URIs to reach a volume\n"
"  volume resize NAME --size SIZE   grow a volume\n"
"  volume delete NAME               delete a volume\n"
"Run 'tessera volume VERB --help' for one of them.\n";

static const char HELP_CREATE[] =
"Usage: tessera volume create NAME --size SIZE\n"
"Create a thin volume: it takes disk space only as it is written.\n"
"\n"
"  NAME         1 to 63 of A-Z a-z 0-9 . _ - starting with a letter or digit\n"
"  --size SIZE  bytes, or with a binary unit: 4k, 512M, 10G, 16T;\n"
"               a multiple of 4 KiB\n"
"\n"
"Example:\n"
"  tessera volume create db --size 10G\n"
"  nbdinfo 'nbd+unix:///db?socket=/var/lib/tessera/nbd.sock'\n"
"(tessera volume show db prints the URIs to reach it.)\n";

static const char HELP_LIST[] =
"Usage: tessera volume list\n"
"List the volumes: name, size, space allocated, creation time, whether an NBD\n"
"client has it open.\n"
"\n"
"Example:\n"
"  tessera --json volume list\n";

static const char HELP_SHOW[] =
"Usage: tessera volume show NAME\n"
"Print a volume's name, uuid, size, allocated space, creation time and the NBD\n"
"URIs to reach it.\n"
"\n"
"Example:\n"
"  tessera volume show db\n";

static const char HELP_RESIZE[] =
"Usage: tessera volume resize NAME --size SIZE\n"
"Grow a volume to SIZE (volumes never shrink).  NBD clients that connect\n"
"afterwards see the new size.\n"
"\n"
"Example:\n"
"  tessera volume resize db --size 20G\n";

static const char HELP_DELETE[] =
"Usage: tessera volume delete NAME\n"
"Delete a volume and its data.  Refused while an NBD client has it open.\n"
"\n"
"Example:\n"
"  tessera volume delete db\n";

static const char HELP_STATUS[] =
"Usage: tessera status\n"
"Print the node's version, pid, data directory, I/O backend, workers, NBD\n"
"listeners, open NBD connections, number of volumes and uptime.\n"
"\n"
"Example:\n"
"  tessera --data /var/lib/tessera status\n";

/* ---- errors and connection -------------------------------------------- */

void cli_error(const char *fmt, ...)
{
	va_list ap;

	fputs("tessera: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("tessera: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_USAGE;
}

static char *admin_sock_path(const struct cli *cli)
{
	char *p;

	if (asprintf(&p, "%s/admin.sock", cli->data_dir) < 0)
		return NULL;
	return p;
}

int cli_connect(const struct cli *cli, struct tsr_admin_client **out)
{
	char token[256];
	const char *tok = cli->token;
	int ret;

	if (cli->cluster == NULL) {
		char *path = admin_sock_path(cli);

		if (path == NULL)
			return EXIT_FAIL;
		ret = tsr_admin_connect_unix(path, out);
		if (ret == -EACCES)
			cli_error("cannot reach tesserad at %s: %s (run as the user tesserad runs "
				  "as, e.g. root)", path, strerror(-ret));
		else if (ret)
			cli_error("cannot reach tesserad at %s: %s (is tesserad running? start it "
				  "with: tesserad --data %s)", path, strerror(-ret), cli->data_dir);
		free(path);
		return ret ? EXIT_FAIL : 0;
	}
	if (tok == NULL && cli->token_file == NULL)
		tok = getenv("TESSERA_TOKEN");
	if (tok == NULL && cli->token_file) {
		ret = tsr_admin_read_token(cli->token_file, token, sizeof(token));
		if (ret) {
			cli_error("cannot read the token from %s: %s", cli->token_file,
				  ret == -EINVAL ? "the file is empty" : strerror(-ret));
			return EXIT_FAIL;
		}
		tok = token;
	}
	if (tok == NULL || tok[0] == '\0') {
		cli_error("--cluster needs the node's admin token: --token-file FILE (a copy of "
			  "DIR/admin.token on the node), --token TOKEN or $TESSERA_TOKEN");
		return EXIT_FAIL;
	}
	ret = tsr_admin_connect_tcp(cli->cluster, tok, out);
	if (ret == -EINVAL)
		cli_error("--cluster %s: give HOST:PORT, e.g. 127.0.0.1:7070", cli->cluster);
	else if (ret)
		cli_error("cannot reach tesserad at %s: %s (is it running with --admin-listen "
			  "tcp:%s?)", cli->cluster, strerror(-ret), cli->cluster);
	return ret ? EXIT_FAIL : 0;
}

int cli_call(const struct cli *cli, struct tsr_admin_client *c, Tessera__Admin__Request *req,
	     Tessera__Admin__Response **resp)
{
	const char *where = cli->cluster ? cli->cluster : cli->data_dir;
	int ret;

	ret = tsr_admin_call(c, req, CLI_TIMEOUT_MS, resp);
	if (ret == -ETIMEDOUT) {
		cli_error("tesserad (%s) did not answer within %d s (see its log)", where,
			  CLI_TIMEOUT_MS / 1000);
		return EXIT_FAIL;
	}
	if (ret == -EPROTO) {
		cli_error("tesserad (%s) sent an invalid reply (is it the same version as this "
			  "tessera, %s?)", where, TSR_VERSION);
		return EXIT_FAIL;
	}
	if (ret) {
		cli_error("lost the connection to tesserad (%s): %s", where, strerror(-ret));
		return EXIT_FAIL;
	}
	if ((*resp)->error) {
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

/* ---- output ----------------------------------------------------------- */

static const char *fmt_size(uint64_t bytes, char *buf, size_t len)
{
	return tsr_format_size(bytes, buf, len);
}

static const char *fmt_time(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t <= 0 || gmtime_r(&tt, &tm) == NULL)
		snprintf(buf, len, "-");
	else
		strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
	return buf;
}

static const char *fmt_iso(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL)
		snprintf(buf, len, "%" PRId64, t);
	else
		strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return buf;
}

static const char *fmt_duration(uint64_t s, char *buf, size_t len)
{
	if (s < 60)
		snprintf(buf, len, "%" PRIu64 " s", s);
	else if (s < 3600)
		snprintf(buf, len, "%" PRIu64 " min %" PRIu64 " s", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, len, "%" PRIu64 " h %" PRIu64 " min", s / 3600, s / 60 % 60);
	else
		snprintf(buf, len, "%" PRIu64 " d %" PRIu64 " h", s / 86400, s / 3600 % 24);
	return buf;
}

static json_t *json_strings(char **v, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static json_t *volume_json(const Tessera__Admin__Volume *v)
{
	char iso[64];

	return json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:b, s:o}",
			 "name", v->name, "uuid", v->uuid, "size", (json_int_t)v->size,
			 "allocated", (json_int_t)v->allocated, "created", (json_int_t)v->created,
			 "created_iso", fmt_iso(v->created, iso, sizeof(iso)),
			 "in_use", (int)v->in_use,
			 "nbd_uris", json_strings(v->nbd_uris, v->n_nbd_uris));
}

static json_t *status_json(const Tessera__Admin__Status *s)
{
	return json_pack("{s:s, s:i, s:s, s:s?, s:s, s:i, s:o, s:o, s:I, s:I, s:i, s:I, s:I}",
			 "version", s->version, "pid", (int)s->pid, "data_dir", s->data_dir,
			 "device", s->device[0] ? s->device : NULL,
			 "io_backend", s->io_backend, "workers", (int)s->workers,
			 "nbd_listeners", json_strings(s->nbd_listeners, s->n_nbd_listeners),
			 "admin_listeners", json_strings(s->admin_listeners, s->n_admin_listeners),
			 "nbd_connections_open", (json_int_t)s->nbd_connections_open,
			 "nbd_connections_total", (json_int_t)s->nbd_connections_total,
			 "volumes", (int)s->volumes, "uptime_sec", (json_int_t)s->uptime_sec,
			 "started", (json_int_t)s->started);
}

/* Print j on stdout (and take it).  EXIT_FAIL if it could not be built. */
static int print_json(json_t *j)
{
	if (j == NULL) {
		cli_error("internal error: cannot build the JSON output");
		return EXIT_FAIL;
	}
	json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	fputc('\n', stdout);
	json_decref(j);
	return 0;
}

static void print_volume(const Tessera__Admin__Volume *v)
{
	char size[32], alloc[32], created[64];

	printf("name:       %s\n", v->name);
	printf("uuid:       %s\n", v->uuid);
	printf("size:       %s (%" PRIu64 " bytes)\n", fmt_size(v->size, size, sizeof(size)),
	       v->size);
	printf("allocated:  %s\n", fmt_size(v->allocated, alloc, sizeof(alloc)));
	printf("created:    %s\n", fmt_time(v->created, created, sizeof(created)));
	printf("in use:     %s\n", v->in_use ? "yes (an NBD client has it open)" : "no");
	for (size_t i = 0; i < v->n_nbd_uris; i++)
		printf("%s%s\n", i ? "            " : "nbd:        ", v->nbd_uris[i]);
}

void cli_print_status(const Tessera__Admin__Status *s)
{
	char up[64], started[64];

	printf("tesserad:     %s, pid %d\n", s->version, (int)s->pid);
	printf("data dir:     %s\n", s->data_dir);
	if (s->device[0])
		printf("device:       %s\n", s->device);
	printf("io backend:   %s\n", s->io_backend);
	printf("workers:      %u\n", s->workers);
	for (size_t i = 0; i < s->n_nbd_listeners; i++)
		printf("%s%s\n", i ? "              " : "nbd listen:   ", s->nbd_listeners[i]);
	for (size_t i = 0; i < s->n_admin_listeners; i++)
		printf("%s%s\n", i ? "              " : "admin listen: ", s->admin_listeners[i]);
	printf("nbd clients:  %" PRIu64 " open, %" PRIu64 " since start\n",
	       s->nbd_connections_open, s->nbd_connections_total);
	printf("volumes:      %u\n", s->volumes);
	printf("uptime:       %s (since %s)\n", fmt_duration(s->uptime_sec, up, sizeof(up)),
	       fmt_time(s->started, started, sizeof(started)));
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
				return usage_error("%s needs a value (tessera --help)", arg);
			value = argv[++*i];
			break;
		}
	}
	if (value == NULL)
		return 0;
	switch (k) {
	case 0: cli->data_dir = value; cli->data_explicit = true; break;
	case 1: cli->cluster = value; break;
	case 2: cli->token = value; break;
	case 3: cli->token_file = value; break;
	}
	return 1;
}

/* What a volume/status command takes besides the global options. */
struct cmd_args {
	const char *name;     /* the positional NAME */
	const char *size_arg; /* --size */
	bool help;
};

/*
 * Parse argv[0..argc) (after the verb): positionals, --size, --help and
 * global options.  want_name/want_size: what the command needs.
 */
static int parse_cmd(struct cli *cli, int argc, char **argv, bool want_name, bool want_size,
		     const char *help, const char *cmd, struct cmd_args *a)
{
	int i, ret;

	memset(a, 0, sizeof(*a));
	for (i = 0; i < argc; i++) {
		const char *arg = argv[i];

		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			fputs(help, stdout);
			a->help = true;
			return 0;
		}
		ret = take_global(cli, argc, argv, &i);
		if (ret == 1)
			continue;
		if (ret)
			return ret;
		if (want_size && strncmp(arg, "--size=", 7) == 0) {
			a->size_arg = arg + 7;
		} else if (want_size && strcmp(arg, "--size") == 0) {
			if (i + 1 >= argc)
				return usage_error("--size needs a value, e.g. --size 10G (tessera %s "
						   "--help)", cmd);
			a->size_arg = argv[++i];
		} else if (arg[0] == '-' && arg[1] != '\0') {
			return usage_error("unknown option %s (tessera %s --help)", arg, cmd);
		} else if (want_name && a->name == NULL) {
			a->name = arg;
		} else {
			return usage_error("unexpected argument '%s' (tessera %s --help)", arg, cmd);
		}
	}
	if (want_name && a->name == NULL)
		return usage_error("missing the volume NAME (tessera %s --help)", cmd);
	if (want_size && a->size_arg == NULL)
		return usage_error("missing --size SIZE, e.g. --size 10G (tessera %s --help)", cmd);
	if (cli->cluster && cli->data_explicit)
		return usage_error("give either --data or --cluster, not both");
	return 0;
}

static int check_name(const char *name)
{
	if (tsr_valid_name(name))
		return 0;
	cli_error("invalid volume name '%s': use 1 to 63 of A-Z a-z 0-9 . _ - starting with a "
		  "letter or digit", name);
	return EXIT_FAIL;
}

static int check_size(const char *arg, uint64_t *size)
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

/* Connect, send req, print the reply with print_fn; returns the exit code. */
typedef int (*reply_printer)(const struct cli *cli, const Tessera__Admin__Response *resp,
			     const void *arg);

static int run(const struct cli *cli, Tessera__Admin__Request *req, reply_printer print_fn,
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

static int one_volume(const Tessera__Admin__Response *resp)
{
	if (resp->n_volumes != 1) {
		cli_error("tesserad sent %zu volumes where one was expected", resp->n_volumes);
		return EXIT_FAIL;
	}
	return 0;
}

static int print_created(const struct cli *cli, const Tessera__Admin__Response *resp,
			 const void *arg)
{
	const Tessera__Admin__Volume *v;
	char size[32];

	if (one_volume(resp))
		return EXIT_FAIL;
	v = resp->volumes[0];
	if (cli->json)
		return print_json(volume_json(v));
	printf("%s volume '%s': %s, uuid %s\n", (const char *)arg, v->name,
	       fmt_size(v->size, size, sizeof(size)), v->uuid);
	for (size_t i = 0; i < v->n_nbd_uris; i++)
		printf("  %s\n", v->nbd_uris[i]);
	return 0;
}

static int print_show(const struct cli *cli, const Tessera__Admin__Response *resp,
		      const void *arg)
{
	if (one_volume(resp))
		return EXIT_FAIL;
	if (cli->json)
		return print_json(volume_json(resp->volumes[0]));
	print_volume(resp->volumes[0]);
	return 0;
}

static int print_list(const struct cli *cli, const Tessera__Admin__Response *resp,
		      const void *arg)
{
	size_t i, w = 4;

	if (cli->json) {
		json_t *a = json_array();

		for (i = 0; i < resp->n_volumes; i++)
			json_array_append_new(a, volume_json(resp->volumes[i]));
		return print_json(json_pack("{s:o}", "volumes", a));
	}
	if (resp->n_volumes == 0) {
		printf("no volumes (create one: tessera volume create NAME --size 10G)\n");
		return 0;
	}
	for (i = 0; i < resp->n_volumes; i++)
		if (strlen(resp->volumes[i]->name) > w)
			w = strlen(resp->volumes[i]->name);
	printf("%-*s  %10s  %10s  %-23s  %s\n", (int)w, "NAME", "SIZE", "ALLOCATED", "CREATED",
	       "IN USE");
	for (i = 0; i < resp->n_volumes; i++) {
		const Tessera__Admin__Volume *v = resp->volumes[i];
		char size[32], alloc[32], created[64];

		printf("%-*s  %10s  %10s  %-23s  %s\n", (int)w, v->name,
		       fmt_size(v->size, size, sizeof(size)),
		       fmt_size(v->allocated, alloc, sizeof(alloc)),
		       fmt_time(v->created, created, sizeof(created)), v->in_use ? "yes" : "no");
	}
	return 0;
}

static int print_deleted(const struct cli *cli, const Tessera__Admin__Response *resp,
			 const void *arg)
{
	if (cli->json)
		return print_json(json_pack("{s:s}", "deleted", (const char *)arg));
	printf("deleted volume '%s'\n", (const char *)arg);
	return 0;
}

static int print_status_reply(const struct cli *cli, const Tessera__Admin__Response *resp,
			      const void *arg)
{
	if (resp->status == NULL) {
		cli_error("tesserad sent no status");
		return EXIT_FAIL;
	}
	if (cli->json)
		return print_json(status_json(resp->status));
	cli_print_status(resp->status);
	return 0;
}

static int cmd_volume(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeCreate create = TESSERA__ADMIN__VOLUME_CREATE__INIT;
	Tessera__Admin__VolumeList list = TESSERA__ADMIN__VOLUME_LIST__INIT;
	Tessera__Admin__VolumeShow show = TESSERA__ADMIN__VOLUME_SHOW__INIT;
	Tessera__Admin__VolumeResize resize = TESSERA__ADMIN__VOLUME_RESIZE__INIT;
	Tessera__Admin__VolumeDelete del = TESSERA__ADMIN__VOLUME_DELETE__INIT;
	struct cmd_args a;
	const char *verb;
	uint64_t size = 0;
	int ret;

	if (argc < 2)
		return usage_error("volume needs a verb: create, list, show, resize or delete "
				   "(tessera volume --help)");
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		fputs(HELP_VOLUME, stdout);
		return 0;
	}
	verb = argv[1];
	argc -= 2;
	argv += 2;
	if (strcmp(verb, "create") == 0) {
		ret = parse_cmd(cli, argc, argv, true, true, HELP_CREATE, "volume create", &a);
		if (ret || a.help)
			return ret;
		ret = check_name(a.name) ?: check_size(a.size_arg, &size);
		if (ret)
			return ret;
		create.name = (char *)a.name;
		create.size = size;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE;
		req.volume_create = &create;
		return run(cli, &req, print_created, "created");
	}
	if (strcmp(verb, "list") == 0 || strcmp(verb, "ls") == 0) {
		ret = parse_cmd(cli, argc, argv, false, false, HELP_LIST, "volume list", &a);
		if (ret || a.help)
			return ret;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_LIST;
		req.volume_list = &list;
		return run(cli, &req, print_list, NULL);
	}
	if (strcmp(verb, "show") == 0) {
		ret = parse_cmd(cli, argc, argv, true, false, HELP_SHOW, "volume show", &a);
		if (ret || a.help)
			return ret;
		ret = check_name(a.name);
		if (ret)
			return ret;
		show.name = (char *)a.name;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SHOW;
		req.volume_show = &show;
		return run(cli, &req, print_show, NULL);
	}
	if (strcmp(verb, "resize") == 0) {
		ret = parse_cmd(cli, argc, argv, true, true, HELP_RESIZE, "volume resize", &a);
		if (ret || a.help)
			return ret;
		ret = check_name(a.name) ?: check_size(a.size_arg, &size);
		if (ret)
			return ret;
		resize.name = (char *)a.name;
		resize.size = size;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_RESIZE;
		req.volume_resize = &resize;
		return run(cli, &req, print_created, "resized");
	}
	if (strcmp(verb, "delete") == 0 || strcmp(verb, "rm") == 0) {
		ret = parse_cmd(cli, argc, argv, true, false, HELP_DELETE, "volume delete", &a);
		if (ret || a.help)
			return ret;
		ret = check_name(a.name);
		if (ret)
			return ret;
		del.name = (char *)a.name;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DELETE;
		req.volume_delete = &del;
		return run(cli, &req, print_deleted, a.name);
	}
	return usage_error("unknown volume verb '%s': use create, list, show, resize or delete "
			   "(tessera volume --help)", verb);
}

static int cmd_status(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__StatusGet get = TESSERA__ADMIN__STATUS_GET__INIT;
	struct cmd_args a;
	int ret;

	ret = parse_cmd(cli, argc - 1, argv + 1, false, false, HELP_STATUS, "status", &a);
	if (ret || a.help)
		return ret;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_STATUS;
	req.status = &get;
	return run(cli, &req, print_status_reply, NULL);
}

int main(int argc, char **argv)
{
	struct cli cli = { 0 };
	const char *cmd;
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
			return usage_error("unknown option %s (tessera --help)", arg);
		if (ret != 1)
			return ret;
	}
	if (i >= argc) {
		fputs(HELP_MAIN, stderr);
		return usage_error("no command given (tessera --help)");
	}
	cmd = argv[i];
	argc -= i;
	argv += i;
	if (strcmp(cmd, "volume") == 0 || strcmp(cmd, "volumes") == 0)
		return cmd_volume(&cli, argc, argv);
	if (strcmp(cmd, "status") == 0)
		return cmd_status(&cli, argc, argv);
	if (strcmp(cmd, "demo") == 0)
		return cli_demo(&cli, argc, argv);
	if (strcmp(cmd, "version") == 0) {
		printf("tessera %s\n", TSR_VERSION);
		return 0;
	}
	if (strcmp(cmd, "help") == 0) {
		if (argc > 1 && strcmp(argv[1], "volume") == 0)
			fputs(HELP_VOLUME, stdout);
		else
			fputs(HELP_MAIN, stdout);
		return 0;
	}
	return usage_error("unknown command '%s': use volume, status or demo (tessera --help)",
			   cmd);
}
