/*
 * `tessera site VERB`: add, list and remove the remote sites this cluster
 * ships geo-replicated volumes to (include/tessera/site.h).  A site is the
 * other cluster's site listener (tesserad --site-listen) plus the TLS files
 * our nodes present to it and check it with.  The paths are read by the node
 * that ships (each replicated volume's coordinator), so they are sent as
 * absolute paths; when the CLI runs on the same machine (--data) a missing
 * file is caught here, before any round trip.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tessera.h"

static const char HELP_SITE[] =
"Usage: tessera site VERB ...\n"
"  add NAME --address HOST:PORT --ca CA.pem --cert NODE.pem --key NODE.key\n"
"      [--peer-name NAME]       register a remote site to replicate to\n"
"  list                         the sites, their addresses and TLS files\n"
"  remove NAME                  forget a site (no volume may replicate to it)\n"
"Then: tessera replication enable VOL --to NAME (tessera replication --help).\n"
"Run 'tessera site VERB --help' for one of them.\n";

static const char HELP_ADD[] =
"Usage: tessera site add NAME --address HOST:PORT --ca CA.pem --cert NODE.pem\n"
"                        --key NODE.key [--peer-name NAME]\n"
"Register a remote site: another Tessera cluster whose tesserad runs with\n"
"--site-listen HOST:PORT.  The two sites trust each other through mutual\n"
"TLS 1.3: our nodes present NODE.pem (with its key NODE.key) and accept the\n"
"remote site only if its certificate chains to CA.pem, is within its dates\n"
"and carries the expected name.  Nothing crosses between sites in clear text.\n"
"\n"
"  NAME              the site's name (1 to 63 of A-Z a-z 0-9 . _ -)\n"
"  --address H:P     the remote site's listener (its tesserad --site-listen)\n"
"  --ca FILE         PEM: the CA the remote site's certificate must chain to\n"
"  --cert FILE       PEM: our certificate, signed by a CA the remote site trusts\n"
"  --key FILE        PEM: its private key\n"
"  --peer-name NAME  the name (DNS SAN or CN) the remote certificate must carry\n"
"                    (default: HOST of --address)\n"
"The files are read by the node that ships each volume (its coordinator):\n"
"they must exist at the same absolute path on every node that may ship.\n"
"\n"
"Example:\n"
"  tessera site add dr --address dr1.example.net:7400 \\\n"
"      --ca /etc/tessera/dr-ca.pem --cert /etc/tessera/node.pem \\\n"
"      --key /etc/tessera/node.key\n"
"  tessera replication enable db --to dr\n"
"\n"
"When replication later does not connect, tessera replication status VOL\n"
"shows the last error and the remote tesserad's log says why it refused\n"
"(unknown CA, expired certificate, wrong name).\n";

static const char HELP_LIST[] =
"Usage: tessera site list\n"
"List the remote sites: name, address, the name their certificate must\n"
"carry, how many volumes replicate to each, and the TLS files.\n"
"\n"
"Example:\n"
"  tessera site list\n"
"  tessera --json site list | jq -r '.sites[].name'\n";

static const char HELP_REMOVE[] =
"Usage: tessera site remove NAME\n"
"Forget a remote site.  Refused while a volume replicates to it: stop those\n"
"first with tessera replication disable VOL (tessera site list shows how many\n"
"there are; tessera replication status lists them).  The remote site's\n"
"volumes are not touched.\n"
"\n"
"Example:\n"
"  tessera site remove dr\n";

static int check_site_name(const char *name)
{
	if (tsr_valid_name(name))
		return 0;
	cli_error("invalid site name '%s': use 1 to 63 of A-Z a-z 0-9 . _ - starting with a "
		  "letter or digit", name);
	return EXIT_FAIL;
}

/* HOST:PORT with a port 1..65535 (an IPv6 host in brackets). */
static int check_address(const char *addr)
{
	const char *colon = strrchr(addr, ':');
	unsigned long port;
	char *end;

	if (colon == NULL || colon == addr || colon[1] == '\0')
		goto bad;
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (*end || errno || port == 0 || port > 65535 || colon[1] == '-' || colon[1] == '+')
		goto bad;
	return 0;
bad:
	cli_error("--address %s: give HOST:PORT of the remote site's tesserad --site-listen, "
		  "e.g. 10.1.0.5:7400", addr);
	return EXIT_FAIL;
}

/*
 * The path the shipping node will read: realpath when the file is here; an
 * absolute path as given when it is not here but the CLI talks to a remote
 * node (the file may be there); otherwise an error that says what to do.
 */
static int resolve_file(const struct cli *cli, const char *opt, const char *path, char *out,
			size_t len)
{
	char *real = realpath(path, NULL);

	if (real) {
		int err = access(real, R_OK) == 0 ? 0 : errno;

		snprintf(out, len, "%s", real);
		free(real);
		if (err && cli->cluster == NULL) {
			cli_error("%s %s: cannot read it: %s (tesserad reads it: make it readable "
				  "by the user it runs as)", opt, path, strerror(err));
			return EXIT_FAIL;
		}
		return 0;
	}
	if (path[0] == '/' && cli->cluster) {
		snprintf(out, len, "%s", path); /* on the remote node, maybe */
		return 0;
	}
	cli_error("%s %s: %s (give the path of a PEM file%s)", opt, path, strerror(errno),
		  path[0] == '/' ? "" : "; with --cluster, an absolute path on the nodes");
	return EXIT_FAIL;
}

/* ---- printers --------------------------------------------------------- */

static int print_added(const struct cli *cli, const Tessera__Admin__Response *resp,
		       const void *arg)
{
	const Tessera__Admin__Site *s;

	if (resp->n_sites != 1) {
		cli_error("tesserad sent %zu sites where one was expected (is it the same version "
			  "as this tessera, %s?)", resp->n_sites, TSR_VERSION);
		return EXIT_FAIL;
	}
	s = resp->sites[0];
	if (cli->json)
		return cli_print_json(cli_site_json(s), false);
	printf("added site '%s' at %s (its certificate must name %s)\n", s->name, s->address,
	       s->peer_name[0] ? s->peer_name : "the host of the address");
	printf("replicate a volume to it: tessera replication enable VOL --to %s\n", s->name);
	return 0;
}

static int print_list(const struct cli *cli, const Tessera__Admin__Response *resp,
		      const void *arg)
{
	if (cli->json) {
		json_t *a = json_array();

		for (size_t i = 0; i < resp->n_sites; i++)
			json_array_append_new(a, cli_site_json(resp->sites[i]));
		return cli_print_json(json_pack("{s:o}", "sites", a), false);
	}
	if (resp->n_sites == 0) {
		printf("no sites (add one: tessera site add NAME --address HOST:PORT --ca CA.pem "
		       "--cert NODE.pem --key NODE.key)\n");
		return 0;
	}
	cli_print_sites(resp->sites, resp->n_sites);
	return 0;
}

static int print_removed(const struct cli *cli, const Tessera__Admin__Response *resp,
			 const void *arg)
{
	if (cli->json)
		return cli_print_json(json_pack("{s:s}", "removed", (const char *)arg), false);
	printf("removed site '%s'\n", (const char *)arg);
	return 0;
}

/* ---- the verbs -------------------------------------------------------- */

static int site_add(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SiteAdd add = TESSERA__ADMIN__SITE_ADD__INIT;
	const char *name = NULL, *address = NULL, *ca = NULL, *cert = NULL, *key = NULL;
	const char *peer = NULL;
	const struct cli_opt opts[] = {
		{ "--address", &address, NULL },
		{ "--ca", &ca, NULL },
		{ "--cert", &cert, NULL },
		{ "--key", &key, NULL },
		{ "--peer-name", &peer, NULL },
		{ NULL, NULL, NULL },
	};
	char ca_path[PATH_MAX], cert_path[PATH_MAX], key_path[PATH_MAX];
	const char *pos[1];
	int got, ret;
	bool help;

	ret = cli_parse_args(cli, argc, argv, opts, pos, 1, &got, HELP_ADD, "site add", &help);
	if (ret || help)
		return ret;
	if (got == 0)
		return cli_usage_error("missing the site NAME (tessera site add --help)");
	name = pos[0];
	if (address == NULL || ca == NULL || cert == NULL || key == NULL)
		return cli_usage_error("site add needs --address, --ca, --cert and --key (tessera "
				       "site add --help)");
	ret = check_site_name(name);
	if (ret == 0)
		ret = check_address(address);
	if (ret == 0 && peer && peer[0] == '\0')
		ret = cli_usage_error("--peer-name is empty: leave it out to use the host of "
				      "--address");
	if (ret == 0)
		ret = resolve_file(cli, "--ca", ca, ca_path, sizeof(ca_path));
	if (ret == 0)
		ret = resolve_file(cli, "--cert", cert, cert_path, sizeof(cert_path));
	if (ret == 0)
		ret = resolve_file(cli, "--key", key, key_path, sizeof(key_path));
	if (ret)
		return ret;
	add.name = (char *)name;
	add.address = (char *)address;
	add.ca = ca_path;
	add.cert = cert_path;
	add.key = key_path;
	add.peer_name = (char *)(peer ? peer : "");
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SITE_ADD;
	req.site_add = &add;
	return cli_run(cli, &req, print_added, NULL);
}

static int site_list(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SiteList list = TESSERA__ADMIN__SITE_LIST__INIT;
	bool help;
	int ret;

	ret = cli_parse(cli, argc, argv, NULL, NULL, HELP_LIST, "site list", &help);
	if (ret || help)
		return ret;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SITE_LIST;
	req.site_list = &list;
	return cli_run(cli, &req, print_list, NULL);
}

static int site_remove(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SiteRemove rm = TESSERA__ADMIN__SITE_REMOVE__INIT;
	const char *pos[1];
	int got, ret;
	bool help;

	ret = cli_parse_args(cli, argc, argv, NULL, pos, 1, &got, HELP_REMOVE, "site remove",
			     &help);
	if (ret || help)
		return ret;
	if (got == 0)
		return cli_usage_error("missing the site NAME (tessera site remove --help)");
	ret = check_site_name(pos[0]);
	if (ret)
		return ret;
	rm.name = (char *)pos[0];
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SITE_REMOVE;
	req.site_remove = &rm;
	return cli_run(cli, &req, print_removed, pos[0]);
}

int cli_cmd_site(struct cli *cli, int argc, char **argv)
{
	const char *verb;

	if (argc < 2)
		return cli_usage_error("site needs a verb: add, list or remove (tessera site "
				       "--help)");
	verb = argv[1];
	if (strcmp(verb, "--help") == 0 || strcmp(verb, "-h") == 0 || strcmp(verb, "help") == 0) {
		fputs(HELP_SITE, stdout);
		return 0;
	}
	argc -= 2;
	argv += 2;
	if (strcmp(verb, "add") == 0)
		return site_add(cli, argc, argv);
	if (strcmp(verb, "list") == 0 || strcmp(verb, "ls") == 0)
		return site_list(cli, argc, argv);
	if (strcmp(verb, "remove") == 0 || strcmp(verb, "rm") == 0 ||
	    strcmp(verb, "delete") == 0)
		return site_remove(cli, argc, argv);
	return cli_usage_error("unknown site verb '%s': use add, list or remove (tessera site "
			       "--help)", verb);
}
