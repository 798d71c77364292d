/*
 * `tessera node list`, `tessera cluster status` and `tessera status`: what
 * the cluster and the node are made of and how they are doing.  Any node of
 * a cluster answers the first two (from the metadata store); `status` is
 * about the node this command talks to.
 */
#include <stdio.h>
#include <string.h>

#include "tessera.h"

static const char HELP_NODE[] =
"Usage: tessera node list\n"
"List the cluster's nodes: id, --listen address, zone and site (the failure\n"
"domains placement uses), whether it is alive (holds its liveness lease),\n"
"whether it holds the metadata store, its capacity, the space provisioned\n"
"for the copies placed on it and allocated on its disk, how many copies it\n"
"holds, how many volumes it coordinates (attached), and its data directory's\n"
"file system: size, space available and use (as df shows them; asked from\n"
"each alive node).  A WARNING line follows for each node whose data file\n"
"system is over 90% full or full: writes that need new blocks fail there.\n"
"\n"
"Example:\n"
"  tessera --cluster 127.0.0.1:7001 --token-file admin.token node list\n"
"  tessera --json node list\n";

static const char HELP_CLUSTER[] =
"Usage: tessera cluster status\n"
"The cluster at a glance: the metadata store (backend, node, revision), nodes\n"
"alive, volumes and how many are degraded (a copy not in sync), capacity and\n"
"space provisioned, the data file systems' size and space available (summed\n"
"over the nodes that answered); then the nodes, as tessera node list prints\n"
"them, with a WARNING line for each node whose data file system is over 90%\n"
"full or full.\n"
"\n"
"Example:\n"
"  tessera --data /var/lib/tessera cluster status\n"
"  tessera --json cluster status\n";

static const char HELP_STATUS[] =
"Usage: tessera status\n"
"Print the node's version, pid, node id and cluster address (in a cluster),\n"
"data directory, I/O backend, workers, NBD listeners, open NBD connections,\n"
"number of volumes, uptime, and the data directory's file system: size,\n"
"space available and use (as df shows them), with a WARNING line when it is\n"
"over 90% full or full.\n"
"\n"
"Example:\n"
"  tessera --data /var/lib/tessera status\n";

static int print_nodes(const struct cli *cli, const Tessera__Admin__Response *resp,
		       const void *arg)
{
	if (cli->json) {
		json_t *a = json_array();

		for (size_t i = 0; i < resp->n_nodes; i++)
			json_array_append_new(a, cli_node_json(resp->nodes[i]));
		return cli_print_json(json_pack("{s:o}", "nodes", a), false);
	}
	if (resp->n_nodes == 0) {
		printf("no nodes (is this node part of a cluster? tesserad --meta or --join)\n");
		return 0;
	}
	cli_print_nodes(resp->nodes, resp->n_nodes);
	return 0;
}

int cli_cmd_node(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__NodeList list = TESSERA__ADMIN__NODE_LIST__INIT;
	bool help;
	int ret;

	if (argc < 2)
		return cli_usage_error("node needs a verb: list (tessera node --help)");
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		fputs(HELP_NODE, stdout);
		return 0;
	}
	if (strcmp(argv[1], "list") != 0 && strcmp(argv[1], "ls") != 0)
		return cli_usage_error("unknown node verb '%s': use list (tessera node --help)",
				       argv[1]);
	ret = cli_parse(cli, argc - 2, argv + 2, NULL, NULL, HELP_NODE, "node list", &help);
	if (ret || help)
		return ret;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_NODE_LIST;
	req.node_list = &list;
	return cli_run(cli, &req, print_nodes, NULL);
}

/* Two requests on one connection: the summary, then the nodes. */
int cli_cmd_cluster(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__ClusterStatusGet get = TESSERA__ADMIN__CLUSTER_STATUS_GET__INIT;
	Tessera__Admin__NodeList list = TESSERA__ADMIN__NODE_LIST__INIT;
	Tessera__Admin__Response *summary = NULL, *nodes = NULL;
	struct tsr_admin_client *c = NULL;
	bool help;
	int ret;

	if (argc < 2)
		return cli_usage_error("cluster needs a verb: status (tessera cluster --help)");
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		fputs(HELP_CLUSTER, stdout);
		return 0;
	}
	if (strcmp(argv[1], "status") != 0)
		return cli_usage_error("unknown cluster verb '%s': use status (tessera cluster "
				       "--help)", argv[1]);
	ret = cli_parse(cli, argc - 2, argv + 2, NULL, NULL, HELP_CLUSTER, "cluster status",
			&help);
	if (ret || help)
		return ret;
	ret = cli_connect(cli, &c);
	if (ret)
		return ret;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_CLUSTER_STATUS;
	req.cluster_status = &get;
	ret = cli_call(cli, c, &req, &summary);
	if (ret == 0) {
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_NODE_LIST;
		req.node_list = &list;
		ret = cli_call(cli, c, &req, &nodes);
	}
	tsr_admin_close(c);
	if (ret == 0 && summary->cluster_status == NULL) {
		cli_error("tesserad sent no cluster status");
		ret = EXIT_FAIL;
	}
	if (ret == 0 && cli->json) {
		json_t *j = cli_cluster_json(summary->cluster_status, nodes->nodes, nodes->n_nodes);
		json_t *a = json_array();

		for (size_t i = 0; i < nodes->n_nodes; i++)
			json_array_append_new(a, cli_node_json(nodes->nodes[i]));
		if (j)
			json_object_set_new(j, "node_list", a);
		else
			json_decref(a);
		ret = cli_print_json(j, false);
	} else if (ret == 0) {
		cli_print_cluster(summary->cluster_status, nodes->nodes, nodes->n_nodes);
		if (nodes->n_nodes) {
			printf("\n");
			cli_print_nodes(nodes->nodes, nodes->n_nodes);
		}
	}
	if (summary)
		tessera__admin__response__free_unpacked(summary, NULL);
	if (nodes)
		tessera__admin__response__free_unpacked(nodes, NULL);
	if (fflush(stdout) != 0 && ret == 0) {
		cli_error("cannot write the output");
		ret = EXIT_FAIL;
	}
	return ret;
}

static int print_status_reply(const struct cli *cli, const Tessera__Admin__Response *resp,
			      const void *arg)
{
	if (resp->status == NULL) {
		cli_error("tesserad sent no status");
		return EXIT_FAIL;
	}
	if (cli->json)
		return cli_print_json(cli_status_json(resp->status), false);
	cli_print_status(resp->status);
	return 0;
}

int cli_cmd_status(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__StatusGet get = TESSERA__ADMIN__STATUS_GET__INIT;
	bool help;
	int ret;

	ret = cli_parse(cli, argc - 1, argv + 1, NULL, NULL, HELP_STATUS, "status", &help);
	if (ret || help)
		return ret;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_STATUS;
	req.status = &get;
	return cli_run(cli, &req, print_status_reply, NULL);
}
