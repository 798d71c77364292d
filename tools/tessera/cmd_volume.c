/*
 * `tessera volume VERB`: create (also clones: --from-snapshot, --from-volume),
 * list, show, resize, delete, rollback (any node), and in a cluster attach,
 * detach, status (with --watch / --until-synced), scrub (polls the status
 * until the scrub ends) and replace-replica.  Each verb
 * parses its options with cli_parse, checks what it can locally (names,
 * sizes, ranges) so that a typo costs no round trip, sends one request and
 * prints the reply with output.c.  Errors from tesserad are printed as they
 * come: they say what to do.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tessera.h"
#include "tessera/ec.h"

static const char HELP_VOLUME[] =
"Usage: tessera volume VERB ...\n"
"  create NAME --size SIZE [--replicas N] [--min-replicas M]\n"
"              [--failure-domain node|zone|site] [--region-size R]\n"
"                                create a thin volume\n"
"  create NAME --size SIZE --ec K+M [--stripe-unit U] [--min-replicas M]\n"
"              [--failure-domain node|zone|site] [--region-size R]\n"
"                                an erasure-coded one\n"
"  create NAME --from-snapshot VOL@SNAP [--size SIZE]   clone a snapshot\n"
"  create NAME --from-volume VOL [--size SIZE]   clone a volume as it is now\n"
"  list                          list the volumes\n"
"  show NAME                     details, snapshots and the NBD URIs of a volume\n"
"  resize NAME --size SIZE       grow a volume\n"
"  delete NAME                   delete a volume\n"
"  rollback NAME SNAP            make the volume's content equal snapshot SNAP\n"
"  attach NAME [--node ID]       make node ID the volume's coordinator and export it\n"
"  detach NAME [--force]         stop exporting it (--force: close its NBD clients)\n"
"  status NAME [--watch] [--until-synced [--timeout SEC]]\n"
"                                copies, epoch, resync and scrub progress, counters\n"
"  scrub NAME [--no-repair]      compare all copies, repair mismatches\n"
"  replace-replica NAME --node OLD [--to NEW]   rebuild a copy on another node\n"
"Run 'tessera volume VERB --help' for one of them.\n";

static const char HELP_CREATE[] =
"Usage: tessera volume create NAME --size SIZE [--replicas N] [--min-replicas M]\n"
"                             [--failure-domain node|zone|site]\n"
"                             [--region-size R]\n"
"       tessera volume create NAME --size SIZE --ec K+M [--stripe-unit U]\n"
"                             [--min-replicas M] [--failure-domain node|zone|site]\n"
"                             [--region-size R]\n"
"       tessera volume create NAME --from-snapshot VOL@SNAP [--size SIZE]\n"
"       tessera volume create NAME --from-volume VOL [--size SIZE]\n"
"Create a thin volume: it takes disk space only as it is written.  In a\n"
"cluster, its N copies are placed on nodes in N distinct failure domains,\n"
"balancing capacity; then attach it to a node to use it.\n"
"\n"
"Erasure coding (--ec K+M) stores each stripe as K data chunks and M parity\n"
"chunks on K+M nodes in distinct failure domains: the volume survives the\n"
"loss of any M of them and takes (K+M)/K times its size on disk, where N\n"
"replicas take N times (4+2: 1.5x and any 2 nodes lost; 3 replicas: 3x and\n"
"2 lost).  Reads of a lost chunk are decoded from K others; writes go on\n"
"while at least --min-replicas chunk copies (default K) are in sync.\n"
"Parity rotates over the nodes stripe by stripe: no node is a parity hot spot.\n"
"\n"
"A clone starts with the content of a snapshot (--from-snapshot) or of a\n"
"volume as it is now (--from-volume, which may be in use) and is an ordinary\n"
"writable volume from then on.  It is made at once, whatever the size: it\n"
"shares the blocks it has not written with its source, and keeps them when\n"
"the source snapshot or volume is deleted.  A clone has its source's layout\n"
"(replicas or ec K+M) on the same nodes.\n"
"\n"
"  NAME                 1 to 63 of A-Z a-z 0-9 . _ - starting with a letter or digit\n"
"  --size SIZE          bytes, or with a binary unit: 4k, 512M, 10G, 16T;\n"
"                       a multiple of 4 KiB (for a clone: default the source's\n"
"                       size; a larger one grows the clone)\n"
"  --from-snapshot VOL@SNAP   clone snapshot SNAP of volume VOL (also\n"
"                       --from-volume VOL --from-snapshot SNAP)\n"
"  --from-volume VOL    clone VOL's current content\n"
"  --replicas N         copies, 1 to 8 (default: 3 in a cluster, 1 on a\n"
"                       standalone node, which has only one)\n"
"  --ec K+M             erasure coding instead of replicas: K data chunks\n"
"                       (1 to 16) and M parity chunks (1 to 4) per stripe, e.g.\n"
"                       2+1, 4+2, 8+3; needs K+M nodes in distinct failure\n"
"                       domains (cluster only; excludes --replicas)\n"
"  --stripe-unit U      with --ec: bytes of each chunk of a stripe, a power of 2\n"
"                       from 4K to 1M (default 64K); a stripe holds K*U bytes of\n"
"                       data, writes smaller than that update parity in place\n"
"  --min-replicas M     copies that must be in sync for a write to be\n"
"                       acknowledged; below that, writes wait, then fail\n"
"                       (default: 2, or N when N < 2; with --ec: K, and K to\n"
"                       K+M)\n"
"  --failure-domain D   what two copies (or two chunks of a stripe) never\n"
"                       share: node, zone or site (default: node; zones and\n"
"                       sites come from tesserad's --zone and --site)\n"
"  --region-size R      cluster: the unit a copy that was away (node down,\n"
"                       replaced, restarted) is brought back by: each region\n"
"                       written while it was away is copied whole.  A power\n"
"                       of 2 from 64K to 2G (default 1M); with --ec, bytes of\n"
"                       each chunk copy and at least the stripe unit.  Larger:\n"
"                       a smaller dirty bitmap per away copy (one bit per\n"
"                       region, DIR/coord/VOL.NODE.bitmap) but more bytes\n"
"                       moved per scattered write (a 4K write dirties a whole\n"
"                       region); smaller: a resync of scattered writes moves\n"
"                       less, the bitmap is larger.  Fixed at create; a clone\n"
"                       has its source's\n"
"\n"
"Example:\n"
"  tessera volume create db --size 10G --replicas 3 --failure-domain zone\n"
"  tessera volume attach db --node n1\n"
"  tessera volume create logs --size 100G --ec 4+2 --failure-domain zone\n"
"  tessera volume create scratch --size 1G --ec 2+1 --stripe-unit 16K\n"
"On a standalone node:\n"
"  tessera volume create db --size 10G\n"
"  nbdinfo 'nbd+unix:///db?socket=/var/lib/tessera/nbd.sock'\n"
"(tessera volume show db prints the URIs to reach it.)\n"
"Clones:\n"
"  tessera snapshot create db nightly\n"
"  tessera volume create db-test --from-snapshot db@nightly\n"
"  tessera volume create db-big --from-volume db --size 20G\n";

static const char HELP_LIST[] =
"Usage: tessera volume list\n"
"List the volumes: name, size, space allocated, creation time, whether an NBD\n"
"client has it open; in a cluster also its layout (\"3 replicas\" or\n"
"\"ec 4+2 (64 KiB unit)\"), how many copies are in sync and the node it is\n"
"attached to.\n"
"\n"
"Example:\n"
"  tessera --json volume list\n";

static const char HELP_SHOW[] =
"Usage: tessera volume show NAME\n"
"Print a volume's name, uuid, size (provisioned), space allocated on disk,\n"
"exclusive space (shared with no snapshot or clone), creation time, its\n"
"parent when it is a clone, and the NBD URIs to reach it; in a cluster also\n"
"its layout (replicas, or ec K+M with the stripe unit), failure domain,\n"
"the node it is attached to, the epoch and where its copies are (for ec, in\n"
"chunk order: copy c holds position c of stripe 0, parity rotates); then\n"
"its snapshots (name, created, allocated, exclusive, clones), oldest first.\n"
"\n"
"Example:\n"
"  tessera volume show db\n";

static const char HELP_RESIZE[] =
"Usage: tessera volume resize NAME --size SIZE\n"
"Grow a volume to SIZE (volumes never shrink).  NBD clients that connect\n"
"afterwards see the new size; a connection open already keeps the size of its\n"
"handshake (NBD has no resize notice: reconnect, e.g. the CSI node expansion).\n"
"\n"
"In a cluster a volume (mirror or ec) grows while attached too (its\n"
"coordinator grows it).  Refused, with nothing changed, while a copy is not\n"
"in sync or its node is away, while a resync, rebuild, scrub or snapshot\n"
"runs, and when a copy's node lacks the space (every node is asked before any\n"
"copy grows).  A volume that replicates to another site has its target grown\n"
"there first (the stream reopens announcing SIZE); refused, with nothing\n"
"changed, while the link is down or when the target cannot grow.  Detached,\n"
"the target grows when the volume is attached again.\n"
"\n"
"Example:\n"
"  tessera volume resize db --size 20G\n";

static const char HELP_DELETE[] =
"Usage: tessera volume delete NAME\n"
"Delete a volume and its data (every copy, in a cluster).  Refused while an\n"
"NBD client has it open, or in a cluster while it is attached (detach it first).\n"
"A copy that could not be deleted (its node down or not answering, unknown, or\n"
"its delete refused) is named in the reply (--json: \"left\") and left to that\n"
"node's leftover sweep (--leftover-grace; by hand when the sweep is off); the\n"
"volume is deleted all the same (exit status 0).\n"
"\n"
"Example:\n"
"  tessera volume delete db\n";

static const char HELP_ROLLBACK[] =
"Usage: tessera volume rollback NAME SNAP\n"
"       tessera volume rollback NAME@SNAP\n"
"Make the volume's content equal snapshot SNAP again: what was written since\n"
"SNAP is lost (cut another snapshot first to keep it).  The snapshots, SNAP\n"
"and newer ones, are kept.  Only the blocks changed since SNAP are copied.\n"
"It does not ask: the volume must not be in use (no NBD client; in a cluster,\n"
"detached), and tesserad refuses it otherwise.  An interrupted rollback is\n"
"finished by running it again; until then the volume cannot be opened.\n"
"\n"
"Example:\n"
"  tessera volume detach db            # in a cluster\n"
"  tessera volume rollback db before-upgrade\n"
"  tessera snapshot diff db before-upgrade   # nothing changed since\n";

static const char HELP_ATTACH[] =
"Usage: tessera volume attach NAME [--node ID]\n"
"Make node ID the volume's coordinator: the one node that accepts its writes\n"
"(fenced by a new epoch from the metadata store, so a former coordinator can\n"
"no longer write) and exports it over NBD.  Re-attaching on another node\n"
"after the first one died is how a volume moves.\n"
"\n"
"  --node ID   the node (tessera node list shows the ids); default: the node\n"
"              this command talks to\n"
"\n"
"Example:\n"
"  tessera volume attach db --node n2\n"
"  tessera volume show db      # the NBD URIs on n2\n";

static const char HELP_DETACH[] =
"Usage: tessera volume detach NAME [--force]\n"
"Stop the volume's coordinator: it finishes in-flight writes, stops the NBD\n"
"export and gives up its epoch.  The copies stay where they are.\n"
"\n"
"Refused while NBD clients stay connected to the volume (2 s after the\n"
"detach is asked): the error names how many and their addresses (--json:\n"
"\"nbd_clients\"), and nothing changes: the volume stays attached and the\n"
"clients keep reading and writing.  Disconnect them (unmount, nbd-client -d,\n"
"end nbdfuse or qemu), or:\n"
"\n"
"  --force   close the clients' connections first: their requests in flight\n"
"            are answered, no new one is read (they see the connection end),\n"
"            then the volume detaches cleanly.  Prints how many it closed\n"
"            (--json: \"clients_disconnected\").  A client that takes no\n"
"            reply (stopped, hung) is closed without its answers.  Requests\n"
"            still unanswered 2 s plus the peer timeout later (a copy's\n"
"            node away while the volume has fewer than min-replicas in\n"
"            sync) make the detach not clean: it says so, and the next\n"
"            attach converges the copies.\n"
"\n"
"Example:\n"
"  tessera volume detach db\n"
"  tessera volume detach db --force\n";

static const char HELP_STATUS[] =
"Usage: tessera volume status NAME [--watch] [--until-synced [--timeout SEC]]\n"
"Ask the volume's coordinator how its copies are: for each copy its node,\n"
"state (in-sync, out-of-sync, resyncing), whether the coordinator is\n"
"connected to it and how much it still has to receive; the epoch and the\n"
"attach node; a running resync's progress, rate and ETA; the last scrub's\n"
"results; write/read counters.  For an erasure-coded volume also its\n"
"stripes: total, degraded (a chunk on a copy not in sync: reads decoded from\n"
"K others), being rebuilt, the reads answered by decoding, and the partial-\n"
"stripe writes the attach rolled forward or back after a crash.\n"
"\n"
"  --watch          refresh every second until Ctrl-C (with --json: one JSON\n"
"                   object per line)\n"
"  --until-synced   wait until every copy is in sync, print the status and exit\n"
"                   0; for scripts.  Progress lines go to stderr.\n"
"  --timeout SEC    with --until-synced: give up after SEC seconds, exit 1\n"
"                   (default: wait as long as it takes)\n"
"\n"
"Example:\n"
"  tessera volume status db --watch\n"
"  tessera volume status db --until-synced --timeout 600 && echo synced\n";

static const char HELP_SCRUB[] =
"Usage: tessera volume scrub NAME [--no-repair]\n"
"Compare the checksums of every block on every copy of the volume (the\n"
"coordinator does it, while the volume serves), and rewrite a block that\n"
"differs from a good copy.  For an erasure-coded volume, recompute every\n"
"stripe's parity from its data and compare; a stripe that disagrees is\n"
"repaired from K good chunks.  A replicated volume's snapshots are compared\n"
"too, after its head: a snapshot block that differs is rewritten from the\n"
"majority of the copies (a tie: the coordinator's own copy, if any) in each\n"
"copy that holds the snapshot, changing that snapshot's image only; a copy\n"
"that lacks the snapshot is left unrepaired (replace-replica rebuilds it\n"
"with its snapshots).  Prints progress (the head, then every snapshot), then\n"
"the number of mismatches found, repaired and left unrepaired.  Ctrl-C\n"
"stops watching, not the scrub.\n"
"\n"
"  --no-repair   report mismatches only (head and snapshots), rewrite\n"
"                nothing\n"
"\n"
"Exit status: 0 when nothing is left unrepaired (with --no-repair: when no\n"
"mismatch was found), 1 otherwise.\n"
"\n"
"Example:\n"
"  tessera volume scrub db\n"
"  tessera --json volume scrub db --no-repair\n";

static const char HELP_REPLACE[] =
"Usage: tessera volume replace-replica NAME --node OLD [--to NEW]\n"
"Rebuild the volume's copy that lives on node OLD onto node NEW, in full,\n"
"while the volume serves: for a node that is gone for good or is to be\n"
"emptied.  The copy on OLD is dropped once the new one is in sync.  The\n"
"new copy gets every snapshot of the volume too (each one's image first,\n"
"then the head), so the snapshots keep as many copies as the volume.  A\n"
"detached volume's copy is rebuilt by whichever node attaches it next.\n"
"\n"
"  --node OLD  the node holding the copy to replace\n"
"  --to NEW    where to rebuild it (default: placement picks a node in a\n"
"              failure domain the other copies do not use)\n"
"\n"
"Example:\n"
"  tessera volume replace-replica db --node n3\n"
"  tessera volume status db --until-synced\n";

/* ---- simple replies --------------------------------------------------- */

/* The volume of a reply that should hold one, or NULL. */
static const Tessera__Admin__Volume *reply_volume(const Tessera__Admin__Response *resp)
{
	if (resp->n_volumes == 1)
		return resp->volumes[0];
	if (resp->volume_status && resp->volume_status->volume)
		return resp->volume_status->volume;
	return NULL;
}

static int one_volume(const Tessera__Admin__Response *resp)
{
	if (resp->n_volumes != 1) {
		cli_error("tesserad sent %zu volumes where one was expected", resp->n_volumes);
		return EXIT_FAIL;
	}
	return 0;
}

static void print_uris(const Tessera__Admin__Volume *v)
{
	for (size_t i = 0; i < v->n_nbd_uris; i++)
		printf("  %s\n", v->nbd_uris[i]);
}

/* --region-size of the create being printed (0: not given) */
static uint32_t g_region_asked;

static int print_created(const struct cli *cli, const Tessera__Admin__Response *resp,
			 const void *arg)
{
	const Tessera__Admin__Volume *v;
	char size[32];

	if (one_volume(resp))
		return EXIT_FAIL;
	v = resp->volumes[0];
	/* a node from before VolumeCreate.region_size ignores it (1 MiB regions);
	 * a standalone node has no copies to resync */
	if (g_region_asked && !cli_is_cluster_volume(v))
		cli_error("warning: --region-size is for cluster volumes: a standalone node "
			  "ignores it");
	else if (g_region_asked && v->region_size != g_region_asked)
		cli_error("warning: --region-size %" PRIu32 " not applied: the node that made "
			  "'%s' %s (tessera volume show %s)", g_region_asked, v->name,
			  v->region_size ? "recorded another size" :
			  "predates the option and uses 1 MiB regions", v->name);
	if (cli->json)
		return cli_print_json(cli_volume_json(v), false);
	printf("%s volume '%s': %s, uuid %s\n", (const char *)arg, v->name,
	       cli_fmt_size(v->size, size, sizeof(size)), v->uuid);
	if (v->parent_volume[0])
		printf("  a clone of %s%s%s: it shares the blocks it has not written\n",
		       v->parent_volume, v->parent_snapshot[0] ? "@" : "", v->parent_snapshot);
	if (cli_is_cluster_volume(v)) {
		char lay[64];

		printf("  %s (writes need %u in sync), failure domain %s\n",
		       cli_fmt_layout(v, lay, sizeof(lay)), v->min_replicas,
		       v->failure_domain[0] ? v->failure_domain : "node");
		if (v->n_copies)
			cli_print_copies(v, "  ");
		if (v->attached_node[0] == '\0' && strcmp((const char *)arg, "created") == 0)
			printf("use it: tessera volume attach %s --node ID\n", v->name);
	}
	print_uris(v);
	return 0;
}

static int print_show(const struct cli *cli, const Tessera__Admin__Response *resp,
		      const void *arg)
{
	json_t *o;

	if (one_volume(resp))
		return EXIT_FAIL;
	if (cli->json) {
		o = cli_volume_detail_json(resp->volumes[0]);
		/* a cluster node's show that could not list the snapshots says
		 * why (also on stderr): "snapshots not listed: n3: ..." */
		if (o && resp->message && resp->message[0])
			json_object_set_new(o, "snapshots_not_listed", json_string(resp->message));
		return cli_print_json(o, false);
	}
	cli_print_volume(resp->volumes[0]);
	return 0;
}

static int print_list(const struct cli *cli, const Tessera__Admin__Response *resp,
		      const void *arg)
{
	if (cli->json) {
		json_t *a = json_array();

		for (size_t i = 0; i < resp->n_volumes; i++)
			json_array_append_new(a, cli_volume_json(resp->volumes[i]));
		return cli_print_json(json_pack("{s:o}", "volumes", a), false);
	}
	if (resp->n_volumes == 0) {
		printf("no volumes (create one: tessera volume create NAME --size 10G)\n");
		return 0;
	}
	cli_print_volume_list(resp->volumes, resp->n_volumes);
	return 0;
}

/* A delete that found no volume but released a DR stream's claim of its
 * name answers with a message saying so (repl_claim_release): shown instead
 * of "deleted volume", which would not be true. */
static int print_deleted(const struct cli *cli, const Tessera__Admin__Response *resp,
			 const void *arg)
{
	bool said = resp->message && resp->message[0];

	if (cli->json) {
		json_t *j = said ? json_pack("{s:s, s:s}", "deleted", (const char *)arg, "message",
					     resp->message) :
				   json_pack("{s:s}", "deleted", (const char *)arg);

		/* the copies left to their nodes' leftover sweep, when any */
		if (j && resp->n_copies_left) {
			json_t *a = json_array();

			for (size_t i = 0; i < resp->n_copies_left; i++)
				json_array_append_new(a, json_pack("{s:s, s:s}", "node",
								   resp->copies_left[i]->node,
								   "reason",
								   resp->copies_left[i]->reason));
			json_object_set_new(j, "left", a);
		}
		return cli_print_json(j, false);
	}
	if (said)
		printf("%s\n", resp->message);
	else
		printf("deleted volume '%s'\n", (const char *)arg);
	return 0;
}

struct attach_arg {
	const char *name;
	const char *node; /* as asked, "" for the receiving node */
};

static int print_attached(const struct cli *cli, const Tessera__Admin__Response *resp,
			  const void *arg)
{
	const struct attach_arg *a = arg;
	const Tessera__Admin__Volume *v = reply_volume(resp);

	if (cli->json)
		return cli_print_json(v ? cli_volume_json(v) :
				      json_pack("{s:s, s:s}", "name", a->name, "attached_node",
						a->node), false);
	if (v == NULL) {
		printf("attached volume '%s'%s%s\n", a->name, a->node[0] ? " on node " : "",
		       a->node);
		return 0;
	}
	printf("attached volume '%s' on node %s, epoch %" PRIu64 "\n", v->name,
	       v->attached_node[0] ? v->attached_node : (a->node[0] ? a->node : "?"), v->epoch);
	if (v->n_nbd_uris)
		printf("reach it over NBD:\n");
	print_uris(v);
	return 0;
}

/* A detach whose copies were not all closed on their nodes within the
 * peer timeout answers with a message saying which (cluster/closewait.c):
 * shown on stderr after the usual line (--json: "message"). */
static int print_detached(const struct cli *cli, const Tessera__Admin__Response *resp,
			  const void *arg)
{
	const Tessera__Admin__Volume *v = reply_volume(resp);
	bool said = resp->message && resp->message[0];
	json_t *j;

	if (cli->json) {
		j = v ? cli_volume_json(v) : json_pack("{s:s}", "detached", (const char *)arg);
		if (j && !v && said)
			json_object_set_new(j, "message", json_string(resp->message));
		if (j && !v)
			json_object_set_new(j, "clients_disconnected",
					    json_integer(resp->clients_disconnected));
		return cli_print_json(j, false);
	}
	printf("detached volume '%s'", (const char *)arg);
	if (resp->clients_disconnected)
		printf(" (closed the connections of %u NBD client%s)", resp->clients_disconnected,
		       resp->clients_disconnected == 1 ? "" : "s");
	printf("\n");
	if (said)
		fprintf(stderr, "tessera: %s\n", resp->message);
	return 0;
}

/*
 * volume detach: a refusal because NBD clients are connected prints its
 * message, and with --json also {"error", "nbd_clients", "nbd_clients_total"}
 * on stdout (a script learns who holds the volume).
 */
static int volume_detach(const struct cli *cli, Tessera__Admin__Request *req, const char *name)
{
	struct tsr_admin_client *c = NULL;
	Tessera__Admin__Response *resp = NULL;
	char why[512];
	int ret;

	if (!cli->json)
		return cli_run(cli, req, print_detached, name);
	ret = cli_connect(cli, &c);
	if (ret)
		return ret;
	ret = cli_call_quiet(cli, c, req, &resp, why, sizeof(why));
	tsr_admin_close(c);
	if (ret) {
		cli_error("%s", why);
		return EXIT_FAIL;
	}
	if (resp->error && resp->nbd_clients_total) {
		json_t *a = json_array();

		for (size_t i = 0; a && i < resp->n_nbd_clients; i++)
			json_array_append_new(a, json_string(resp->nbd_clients[i]));
		cli_error("%s", resp->message);
		ret = cli_print_json(json_pack("{s:s, s:s, s:o, s:I}", "volume", name, "error",
					       resp->message, "nbd_clients", a ? a : json_array(),
					       "nbd_clients_total",
					       (json_int_t)resp->nbd_clients_total), false);
		ret = ret ? ret : EXIT_FAIL;
	} else if (resp->error) {
		cli_error("%s", resp->message[0] ? resp->message : strerror(-resp->error));
		ret = EXIT_FAIL;
	} else {
		ret = print_detached(cli, resp, name);
	}
	tessera__admin__response__free_unpacked(resp, NULL);
	return ret;
}

struct replace_arg {
	const char *name;
	const char *old_node;
	const char *to;
};

static int print_replaced(const struct cli *cli, const Tessera__Admin__Response *resp,
			  const void *arg)
{
	const struct replace_arg *a = arg;
	const Tessera__Admin__Volume *v = reply_volume(resp);

	if (cli->json)
		return cli_print_json(v ? cli_volume_json(v) :
				      json_pack("{s:s, s:s, s:s}", "name", a->name, "node",
						a->old_node, "to", a->to), false);
	printf("replacing the copy of '%s' on node %s%s%s\n", a->name, a->old_node,
	       a->to[0] ? " with one on node " : "", a->to);
	if (v && v->n_copies)
		cli_print_copies(v, "  ");
	printf("follow the rebuild: tessera volume status %s --watch\n", a->name);
	return 0;
}

/* ---- status, --watch, --until-synced ---------------------------------- */

/* Sleep ms, cut short by a signal. */
static void nap(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* Errors that waiting will not cure: stop at once. */
static bool fatal_error(int err)
{
	return err == -ENOENT || err == -EINVAL || err == -EACCES || err == -EPERM ||
	       err == -EOPNOTSUPP || err == -ENOTSUP || err == -ENOSYS;
}

/*
 * A connection that survives failed calls: the next poll reconnects.  Used
 * by the loops that wait (status --watch/--until-synced, scrub), through
 * which a node may restart.
 */
struct poller {
	const struct cli *cli;
	struct tsr_admin_client *c;
	char why[512];            /* the last failure, for the user */
};

/*
 * One VolumeStatusGet.  0 with *resp (no server error), or -errno with why
 * set: the server's error, or a connection problem (-ECONNREFUSED etc.).
 */
static int poll_status(struct poller *p, const char *name, Tessera__Admin__Response **resp)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeStatusGet get = TESSERA__ADMIN__VOLUME_STATUS_GET__INIT;
	int ret;

	*resp = NULL;
	if (p->c == NULL && cli_connect_quiet(p->cli, &p->c, p->why, sizeof(p->why)))
		return -ECONNREFUSED; /* the loop prints p->why when it matters */
	get.name = (char *)name;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_STATUS;
	req.volume_status = &get;
	ret = cli_call_quiet(p->cli, p->c, &req, resp, p->why, sizeof(p->why));
	if (ret) {
		tsr_admin_close(p->c);
		p->c = NULL;
		return ret;
	}
	if ((*resp)->error) {
		ret = (*resp)->error;
		snprintf(p->why, sizeof(p->why), "%s", (*resp)->message[0] ? (*resp)->message :
			 strerror(-ret));
		tessera__admin__response__free_unpacked(*resp, NULL);
		*resp = NULL;
		return ret;
	}
	if ((*resp)->volume_status == NULL) {
		snprintf(p->why, sizeof(p->why), "tesserad sent no volume status");
		tessera__admin__response__free_unpacked(*resp, NULL);
		*resp = NULL;
		return -EPROTO;
	}
	return 0;
}

static void print_one_status(const struct cli *cli, const Tessera__Admin__VolumeStatus *s,
			     bool compact)
{
	if (cli->json)
		cli_print_json(cli_volume_status_json(s), compact);
	else
		cli_print_volume_status(s);
}

/* "n3 resyncing, 120 MiB to go; n2 out-of-sync" for progress lines. */
static void copies_line(const Tessera__Admin__VolumeStatus *s, char *buf, size_t len)
{
	const Tessera__Admin__Volume *v = s->volume;
	size_t off = 0;
	char dirty[32];

	buf[0] = '\0';
	for (size_t i = 0; v && i < v->n_copies && off < len; i++) {
		const Tessera__Admin__Copy *c = v->copies[i];

		if (strcmp(c->state, "in-sync") == 0)
			continue;
		off += (size_t)snprintf(buf + off, len - off, "%s%s %s, %s to go",
					off ? "; " : "", c->node, c->state,
					cli_fmt_size(c->dirty_bytes, dirty, sizeof(dirty)));
	}
	if (s->resync_running && off < len) {
		char rate[32], eta[32];

		snprintf(buf + off, len - off, " (resync %u%%, %s, ETA %s)",
			 cli_percent(s->resync_done_bytes, s->resync_total_bytes),
			 cli_fmt_rate(s->resync_rate_bps, rate, sizeof(rate)),
			 s->resync_rate_bps > 0 ?
			 cli_fmt_duration(s->resync_eta_sec, eta, sizeof(eta)) : "unknown");
	}
}

struct status_opts {
	const char *name;
	bool watch;
	bool until_synced;
	unsigned long timeout; /* seconds, 0: none */
};

static int status_loop(const struct cli *cli, const struct status_opts *o)
{
	struct poller p = { .cli = cli };
	bool tty = isatty(STDOUT_FILENO) && !cli->json;
	double start = tsr_mono_ns() / 1e9;
	char last_line[1024] = "", line[1024];
	int ret = 0, err;

	cli_catch_signals();
	for (;;) {
		Tessera__Admin__Response *resp = NULL;
		bool synced = false;
		time_t now = time(NULL);
		struct tm tm;
		char clock[16];

		localtime_r(&now, &tm);
		strftime(clock, sizeof(clock), "%H:%M:%S", &tm);
		err = poll_status(&p, o->name, &resp);
		if (err && fatal_error(err)) {
			cli_error("%s", p.why);
			ret = EXIT_FAIL;
			break;
		}
		if (resp)
			synced = cli_all_in_sync(resp->volume_status->volume);
		if (o->watch) {
			if (tty)
				printf("\033[H\033[2J");
			if (!cli->json)
				printf("%s tessera volume status %s (every 1 s, Ctrl-C to stop)\n\n",
				       clock, o->name);
			if (resp)
				print_one_status(cli, resp->volume_status, true);
			else if (!cli->json)
				printf("(no answer: %s; trying again)\n", p.why);
			if (!tty && !cli->json)
				printf("\n");
			fflush(stdout);
		} else if (o->until_synced) {
			/* progress on stderr, one line per change */
			if (resp)
				copies_line(resp->volume_status, line, sizeof(line));
			else
				snprintf(line, sizeof(line), "no answer: %s", p.why);
			if (!synced && strcmp(line, last_line) != 0) {
				fprintf(stderr, "%s %s: %s\n", clock, o->name, line);
				snprintf(last_line, sizeof(last_line), "%s", line);
			}
		}
		if (o->until_synced && synced) {
			if (!o->watch)
				print_one_status(cli, resp->volume_status, false);
			tessera__admin__response__free_unpacked(resp, NULL);
			break;
		}
		if (o->until_synced && o->timeout && tsr_mono_ns() / 1e9 - start >= (double)o->timeout) {
			if (resp && !o->watch)
				print_one_status(cli, resp->volume_status, false);
			cli_error("volume %s: not every copy is in sync after %lu s (%s)", o->name,
				  o->timeout, resp ? line : p.why);
			if (resp)
				tessera__admin__response__free_unpacked(resp, NULL);
			ret = EXIT_FAIL;
			break;
		}
		if (resp)
			tessera__admin__response__free_unpacked(resp, NULL);
		nap(1000);
		if (g_cli_interrupted) {
			/* --watch ends this way; --until-synced was cut short */
			ret = o->until_synced ? EXIT_INTERRUPTED : 0;
			break;
		}
	}
	tsr_admin_close(p.c);
	fflush(stdout);
	return ret;
}

static int print_status_reply(const struct cli *cli, const Tessera__Admin__Response *resp,
			      const void *arg)
{
	if (resp->volume_status == NULL) {
		cli_error("tesserad sent no volume status");
		return EXIT_FAIL;
	}
	print_one_status(cli, resp->volume_status, false);
	return 0;
}

static int volume_status(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeStatusGet get = TESSERA__ADMIN__VOLUME_STATUS_GET__INIT;
	struct status_opts o = { 0 };
	const char *timeout = NULL;
	const struct cli_opt opts[] = {
		{ "--watch", NULL, &o.watch },
		{ "--until-synced", NULL, &o.until_synced },
		{ "--timeout", &timeout, NULL },
		{ NULL, NULL, NULL },
	};
	bool help;
	int ret;

	ret = cli_parse(cli, argc, argv, opts, &o.name, HELP_STATUS, "volume status", &help);
	if (ret || help)
		return ret;
	if (timeout) {
		if (!o.until_synced)
			return cli_usage_error("--timeout goes with --until-synced (tessera volume "
					       "status --help)");
		ret = cli_parse_uint("--timeout", timeout, 1, 86400 * 365, &o.timeout);
		if (ret)
			return ret;
	}
	ret = cli_check_name(o.name);
	if (ret)
		return ret;
	if (o.watch || o.until_synced)
		return status_loop(cli, &o);
	get.name = (char *)o.name;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_STATUS;
	req.volume_status = &get;
	return cli_run(cli, &req, print_status_reply, NULL);
}

/* ---- scrub ------------------------------------------------------------ */

#define SCRUB_POLL_MS 200
#define SCRUB_START_GRACE_MS 5000 /* a scrub not seen running by then has stopped */

static void scrub_progress(const Tessera__Admin__VolumeStatus *s, const char *name, bool tty,
			   unsigned *last_decile)
{
	unsigned pct = cli_percent(s->scrub_done_bytes, s->scrub_total_bytes);
	char done[32], total[32];

	if (!tty && pct / 10 == *last_decile)
		return; /* plain lines: one per 10 % */
	*last_decile = pct / 10;
	fprintf(stderr, "%sscrub %s: %3u%% (%s of %s), %" PRIu64 " mismatches, %" PRIu64
		" repaired, %" PRIu64 " unrepaired%s", tty ? "\r" : "", name, pct,
		cli_fmt_size(s->scrub_done_bytes, done, sizeof(done)),
		cli_fmt_size(s->scrub_total_bytes, total, sizeof(total)), s->scrub_mismatches,
		s->scrub_repaired, s->scrub_unrepaired, tty ? "\033[K" : "\n");
}

static int scrub_result(const struct cli *cli, const char *name, bool no_repair,
			const Tessera__Admin__VolumeStatus *s)
{
	const Tessera__Admin__Volume *v = s->volume;
	bool ok = s->scrub_unrepaired == 0 && !(no_repair && s->scrub_mismatches);
	char total[32];

	if (cli->json) {
		/* the status' own field names, as in volume status --json */
		cli_print_json(json_pack("{s:s, s:b, s:i, s:I, s:I, s:I, s:I, s:b, s:i, s:i, s:I}",
					 "volume", name,
					 "no_repair", (int)no_repair, "copies",
					 v ? (int)v->n_copies : 0, "scrub_total_bytes",
					 (json_int_t)s->scrub_total_bytes, "scrub_mismatches",
					 (json_int_t)s->scrub_mismatches, "scrub_repaired",
					 (json_int_t)s->scrub_repaired, "scrub_unrepaired",
					 (json_int_t)s->scrub_unrepaired, "ok", (int)ok,
					 "ec_k", v ? (int)v->ec_k : 0, "ec_m", v ? (int)v->ec_m : 0,
					 "stripes_total", (json_int_t)s->stripes_total),
			       false);
	} else if (v && v->ec_k) {
		printf("scrub of '%s' done: %s in %" PRIu64 " stripes of ec %u+%u checked (parity "
		       "recomputed from data on %zu chunk copies): %" PRIu64 " mismatches, %" PRIu64
		       " repaired, %" PRIu64 " unrepaired\n", name,
		       cli_fmt_size(s->scrub_total_bytes, total, sizeof(total)), s->stripes_total,
		       v->ec_k, v->ec_m, v->n_copies, s->scrub_mismatches, s->scrub_repaired,
		       s->scrub_unrepaired);
	} else {
		printf("scrub of '%s' done: %s compared on %zu copies: %" PRIu64 " mismatches, %"
		       PRIu64 " repaired, %" PRIu64 " unrepaired\n", name,
		       cli_fmt_size(s->scrub_total_bytes, total, sizeof(total)),
		       v ? v->n_copies : (size_t)0, s->scrub_mismatches, s->scrub_repaired,
		       s->scrub_unrepaired);
	}
	if (s->scrub_unrepaired)
		cli_error("%" PRIu64 " mismatches of '%s' could not be repaired (the "
			  "coordinator's log, on node %s, says where and why)",
			  s->scrub_unrepaired, name, v && v->attached_node[0] ?
			  v->attached_node : "?");
	else if (no_repair && s->scrub_mismatches)
		cli_error("%" PRIu64 " mismatches in '%s', not repaired (--no-repair): run "
			  "'tessera volume scrub %s' to repair them", s->scrub_mismatches, name, name);
	fflush(stdout);
	return ok ? 0 : EXIT_FAIL;
}

static int volume_scrub(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeScrub scrub = TESSERA__ADMIN__VOLUME_SCRUB__INIT;
	Tessera__Admin__Response *resp = NULL;
	struct poller p = { .cli = cli };
	const char *name = NULL;
	bool no_repair = false, help, seen_running = false;
	const struct cli_opt opts[] = {
		{ "--no-repair", NULL, &no_repair },
		{ NULL, NULL, NULL },
	};
	bool tty = isatty(STDERR_FILENO);
	unsigned last_decile = ~0u, waited_ms = 0, failures = 0;
	int ret;

	ret = cli_parse(cli, argc, argv, opts, &name, HELP_SCRUB, "volume scrub", &help);
	if (ret || help)
		return ret;
	ret = cli_check_name(name);
	if (ret)
		return ret;
	ret = cli_connect(cli, &p.c);
	if (ret)
		return ret;
	scrub.name = (char *)name;
	scrub.no_repair = no_repair;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SCRUB;
	req.volume_scrub = &scrub;
	ret = cli_call(cli, p.c, &req, &resp);
	if (ret) {
		tsr_admin_close(p.c);
		return ret;
	}
	tessera__admin__response__free_unpacked(resp, NULL);
	if (!cli->json && !tty)
		printf("scrub of '%s' started%s\n", name, no_repair ? " (no repair)" : "");
	fflush(stdout);

	cli_catch_signals();
	for (;;) {
		const Tessera__Admin__VolumeStatus *s;

		nap(SCRUB_POLL_MS);
		if (g_cli_interrupted) {
			if (tty)
				fputs("\n", stderr);
			cli_error("stopped watching; the scrub of '%s' goes on (tessera volume "
				  "status %s shows its progress)", name, name);
			ret = EXIT_INTERRUPTED;
			break;
		}
		ret = poll_status(&p, name, &resp);
		if (ret) {
			/* a node restarting costs a few polls; a refusal ends it */
			if (fatal_error(ret) || ++failures > 50) {
				if (tty)
					fputs("\n", stderr);
				cli_error("%s", p.why);
				ret = EXIT_FAIL;
				break;
			}
			continue;
		}
		failures = 0;
		s = resp->volume_status;
		if (s->scrub_running) {
			seen_running = true;
			scrub_progress(s, name, tty, &last_decile);
		} else if (s->scrub_done) {
			last_decile = ~0u;
			scrub_progress(s, name, tty, &last_decile);
			if (tty)
				fputs("\n", stderr);
			ret = scrub_result(cli, name, no_repair, s);
			tessera__admin__response__free_unpacked(resp, NULL);
			break;
		} else if (seen_running || (waited_ms += SCRUB_POLL_MS) >= SCRUB_START_GRACE_MS) {
			if (tty)
				fputs("\n", stderr);
			cli_error("the scrub of '%s' stopped before the end (was the volume "
				  "detached, or its coordinator restarted? tessera volume status %s)",
				  name, name);
			tessera__admin__response__free_unpacked(resp, NULL);
			ret = EXIT_FAIL;
			break;
		}
		tessera__admin__response__free_unpacked(resp, NULL);
	}
	tsr_admin_close(p.c);
	return ret;
}

/* ---- the verbs -------------------------------------------------------- */

/*
 * --ec K+M with what goes with it: --stripe-unit (into *unit, 0: the
 * default), --min-replicas K..K+M, no --replicas.  0 or EXIT_USAGE, with a
 * message that says which part is wrong.
 */
static int check_ec(const char *ec, const char *replicas, const char *unit_arg,
		    const char *min, uint32_t *unit)
{
	unsigned k, m;

	if (replicas)
		return cli_usage_error("--ec %s and --replicas %s exclude each other: an ec K+M "
				       "volume keeps K+M chunk copies, not replicas (tessera volume "
				       "create --help)", ec, replicas);
	if (tsr_ec_parse(ec, &k, &m)) {
		unsigned long a, b;
		int used = 0;

		if (sscanf(ec, "%lu+%lu%n", &a, &b, &used) != 2 || ec[used] != '\0' ||
		    !isdigit((unsigned char)ec[0]))
			return cli_usage_error("--ec %s: give K+M, K data chunks and M parity chunks, "
					       "e.g. --ec 4+2 (tessera volume create --help)", ec);
		if (a < 1 || a > TSR_EC_MAX_K)
			return cli_usage_error("--ec %s: K (data chunks per stripe) must be 1 to %u",
					       ec, TSR_EC_MAX_K);
		if (b < 1 || b > TSR_EC_MAX_M)
			return cli_usage_error("--ec %s: M (parity chunks per stripe, the nodes it "
					       "can lose) must be 1 to %u", ec, TSR_EC_MAX_M);
		return cli_usage_error("--ec %s: give K+M, e.g. --ec 4+2", ec);
	}
	if (unit_arg) {
		uint64_t u;

		if (tsr_parse_size(unit_arg, &u) || u > UINT32_MAX ||
		    !tsr_ec_unit_valid((uint32_t)u))
			return cli_usage_error("--stripe-unit %s: a power of 2 from 4K to 1M, e.g. "
					       "--stripe-unit 64K", unit_arg);
		*unit = (uint32_t)u;
	}
	if (min) {
		unsigned long n;

		if (cli_parse_uint("--min-replicas", min, 1, TSR_EC_MAX_K + TSR_EC_MAX_M, &n))
			return EXIT_USAGE;
		if (n < k || n > k + m)
			return cli_usage_error("--min-replicas %lu with --ec %u+%u: give %u to %u (a "
					       "stripe needs its %u data chunks' worth in sync to be "
					       "written)", n, k, m, k, k + m, k);
	}
	return 0;
}

/*
 * --region-size R: a power of 2 from 64K to 2G; with --ec at least the stripe
 * unit (unit, 0: 64K).  0 with *region, or EXIT_USAGE.
 */
static int check_region(const char *arg, bool ec, uint32_t unit, uint32_t *region)
{
	uint32_t min = ec && unit > (64u << 10) ? unit : (64u << 10);
	uint64_t r;

	if (tsr_parse_size(arg, &r) || r < min || r > (1ull << 31) || (r & (r - 1)))
		return cli_usage_error("--region-size %s: a power of 2 from %uK to 2G, e.g. "
				       "--region-size 4M (default 1M%s; tessera volume create "
				       "--help)", arg, min >> 10,
				       ec ? "; with --ec at least the stripe unit" : "");
	*region = (uint32_t)r;
	return 0;
}

static int volume_create(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeCreate create = TESSERA__ADMIN__VOLUME_CREATE__INIT;
	const char *name = NULL, *size_arg = NULL, *replicas = NULL, *min = NULL,
		   *domain = NULL, *from_volume = NULL, *from_snapshot = NULL, *snap = NULL,
		   *ec = NULL, *unit_arg = NULL, *region_arg = NULL;
	const struct cli_opt opts[] = {
		{ "--size", &size_arg, NULL },
		{ "--replicas", &replicas, NULL },
		{ "--ec", &ec, NULL },
		{ "--stripe-unit", &unit_arg, NULL },
		{ "--region-size", &region_arg, NULL },
		{ "--min-replicas", &min, NULL },
		{ "--failure-domain", &domain, NULL },
		{ "--from-volume", &from_volume, NULL },
		{ "--from-snapshot", &from_snapshot, NULL },
		{ NULL, NULL, NULL },
	};
	unsigned long n = 0, m = 0;
	uint64_t size = 0;
	uint32_t unit = 0, region = 0;
	char source[64] = "";
	bool help;
	int ret;

	ret = cli_parse(cli, argc, argv, opts, &name, HELP_CREATE, "volume create", &help);
	if (ret || help)
		return ret;
	if (from_snapshot) {
		/* VOL@SNAP, or SNAP with --from-volume VOL */
		ret = cli_split_snap(from_snapshot, source, sizeof(source), &snap);
		if (ret)
			return ret;
		if (snap == NULL) {
			if (from_volume == NULL)
				return cli_usage_error("--from-snapshot %s: give VOL@SNAP, e.g. "
						       "--from-snapshot db@nightly (tessera volume "
						       "create --help)", from_snapshot);
			snap = from_snapshot;
			snprintf(source, sizeof(source), "%s", from_volume);
		} else if (from_volume && strcmp(from_volume, source) != 0) {
			return cli_usage_error("--from-volume %s and --from-snapshot %s name two "
					       "volumes: give --from-snapshot VOL@SNAP alone",
					       from_volume, from_snapshot);
		}
		ret = cli_check_name(source) ?: cli_check_snap_name(snap);
		if (ret)
			return ret;
	} else if (from_volume) {
		ret = cli_check_name(from_volume);
		if (ret)
			return ret;
		snprintf(source, sizeof(source), "%s", from_volume);
	}
	if (size_arg == NULL && source[0] == '\0')
		return cli_usage_error("missing --size SIZE, e.g. --size 10G (tessera volume "
				       "create --help)");
	if (replicas && (ret = cli_parse_uint("--replicas", replicas, 1, 8, &n)))
		return ret;
	if (ec && (ret = check_ec(ec, replicas, unit_arg, min, &unit)))
		return ret;
	if (!ec && unit_arg)
		return cli_usage_error("--stripe-unit goes with --ec K+M (an erasure-coded volume; "
				       "tessera volume create --help)");
	if (min && (ret = cli_parse_uint("--min-replicas", min, 1, ec ? 20 : 8, &m)))
		return ret;
	if (replicas && min && m > n)
		return cli_usage_error("--min-replicas %lu is more than --replicas %lu: writes "
				       "could never be acknowledged", m, n);
	if (region_arg && (ret = check_region(region_arg, ec != NULL, unit, &region)))
		return ret;
	if (domain && strcmp(domain, "node") && strcmp(domain, "zone") && strcmp(domain, "site"))
		return cli_usage_error("--failure-domain %s: use node, zone or site", domain);
	ret = cli_check_name(name) ?: (size_arg ? cli_check_size(size_arg, &size) : 0);
	if (ret)
		return ret;
	if (source[0] && strcmp(source, name) == 0)
		return cli_usage_error("a clone needs a new name: '%s' is its source", name);
	create.name = (char *)name;
	create.size = size; /* 0 for a clone: the source's size */
	create.from_volume = source;
	create.from_snapshot = (char *)(snap ? snap : "");
	create.replicas = (uint32_t)n;
	create.min_replicas = (uint32_t)m;
	create.failure_domain = (char *)(domain ? domain : "");
	create.ec = (char *)(ec ? ec : "");
	create.stripe_unit = unit;
	create.region_size = region;
	g_region_asked = region;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE;
	req.volume_create = &create;
	return cli_run(cli, &req, print_created, source[0] ? "cloned" : "created");
}

struct rollback_arg {
	char volume[64];
	const char *snapshot;
};

static int print_rolled_back(const struct cli *cli, const Tessera__Admin__Response *resp,
			     const void *arg)
{
	const struct rollback_arg *a = arg;
	const Tessera__Admin__Volume *v = reply_volume(resp);

	if (cli->json) {
		json_t *j = v ? cli_volume_json(v) : json_pack("{s:s}", "name", a->volume);

		if (j)
			json_object_set_new(j, "rolled_back_to", json_string(a->snapshot));
		return cli_print_json(j, false);
	}
	printf("rolled back volume '%s' to snapshot '%s'\n", a->volume, a->snapshot);
	return 0;
}

static int volume_rollback(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeRollback rb = TESSERA__ADMIN__VOLUME_ROLLBACK__INIT;
	struct rollback_arg a;
	const char *pos[3];
	int got, used = 1, ret;
	bool help;

	ret = cli_parse_args(cli, argc, argv, NULL, pos, 3, &got, HELP_ROLLBACK,
			     "volume rollback", &help);
	if (ret || help)
		return ret;
	if (got == 0)
		return cli_usage_error("missing NAME SNAP, e.g. db nightly (tessera volume "
				       "rollback --help)");
	ret = cli_split_snap(pos[0], a.volume, sizeof(a.volume), &a.snapshot);
	if (ret)
		return ret;
	if (a.snapshot == NULL) {
		if (got < 2)
			return cli_usage_error("missing the snapshot: tessera volume rollback %s "
					       "SNAP (tessera snapshot list %s shows them)", pos[0],
					       pos[0]);
		a.snapshot = pos[1];
		used = 2;
	}
	if (got > used)
		return cli_usage_error("unexpected argument '%s' (tessera volume rollback --help)",
				       pos[used]);
	ret = cli_check_name(a.volume) ?: cli_check_snap_name(a.snapshot);
	if (ret)
		return ret;
	rb.volume = a.volume;
	rb.snapshot = (char *)a.snapshot;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ROLLBACK;
	req.volume_rollback = &rb;
	return cli_run(cli, &req, print_rolled_back, &a);
}

/*
 * VolumeShow, and when its reply lists no snapshots, SnapshotList on the same
 * connection: a cluster node's VolumeShow answers from the metadata store,
 * which does not carry them.  A failed SnapshotList (an older tesserad)
 * leaves the reply as it is.
 */
static int volume_show(const struct cli *cli, const char *name)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeShow show = TESSERA__ADMIN__VOLUME_SHOW__INIT;
	Tessera__Admin__SnapshotList list = TESSERA__ADMIN__SNAPSHOT_LIST__INIT;
	Tessera__Admin__Response *resp = NULL, *snaps = NULL;
	Tessera__Admin__Volume *v = NULL;
	struct tsr_admin_client *c = NULL;
	char why[512];
	int ret;

	ret = cli_connect(cli, &c);
	if (ret)
		return ret;
	show.name = (char *)name;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SHOW;
	req.volume_show = &show;
	ret = cli_call(cli, c, &req, &resp) ?: one_volume(resp);
	if (ret)
		goto out;
	v = resp->volumes[0];
	/* the server could not list them (each node holding an in-sync copy was
	 * asked, bounded): asking again would wait on the same nodes */
	if (resp->message && resp->message[0])
		fprintf(stderr, "tessera: volume '%s': %s\n", name, resp->message);
	else if (v->n_snapshots == 0) {
		list.volume = (char *)name;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST;
		req.snapshot_list = &list;
		if (cli_call_quiet(cli, c, &req, &snaps, why, sizeof(why)) == 0 &&
		    snaps->error == 0 && snaps->n_snapshots) {
			/* lent to v for printing, given back before either is freed */
			v->n_snapshots = snaps->n_snapshots;
			v->snapshots = snaps->snapshots;
		}
	}
	ret = print_show(cli, resp, NULL);
	if (snaps && v->snapshots == snaps->snapshots) {
		v->n_snapshots = 0;
		v->snapshots = NULL;
	}
	if (fflush(stdout) != 0) {
		cli_error("cannot write the output: %s", strerror(errno));
		ret = EXIT_FAIL;
	}
out:
	if (snaps)
		tessera__admin__response__free_unpacked(snaps, NULL);
	if (resp)
		tessera__admin__response__free_unpacked(resp, NULL);
	tsr_admin_close(c);
	return ret;
}

/* list, show, resize, delete, detach: NAME (or nothing) and at most --size
 * (resize) or --force (detach). */
static int volume_simple(struct cli *cli, const char *verb, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeList list = TESSERA__ADMIN__VOLUME_LIST__INIT;
	Tessera__Admin__VolumeResize resize = TESSERA__ADMIN__VOLUME_RESIZE__INIT;
	Tessera__Admin__VolumeDelete del = TESSERA__ADMIN__VOLUME_DELETE__INIT;
	Tessera__Admin__VolumeDetach detach = TESSERA__ADMIN__VOLUME_DETACH__INIT;
	const char *name = NULL, *size_arg = NULL;
	bool force = false;
	const struct cli_opt size_opts[] = {
		{ "--size", &size_arg, NULL },
		{ NULL, NULL, NULL },
	};
	const struct cli_opt detach_opts[] = {
		{ "--force", NULL, &force },
		{ NULL, NULL, NULL },
	};
	bool is_list = strcmp(verb, "list") == 0, is_resize = strcmp(verb, "resize") == 0;
	bool is_detach = strcmp(verb, "detach") == 0;
	const char *help_text = is_list ? HELP_LIST : is_resize ? HELP_RESIZE :
				strcmp(verb, "show") == 0 ? HELP_SHOW :
				strcmp(verb, "delete") == 0 ? HELP_DELETE : HELP_DETACH;
	char cmd[32];
	uint64_t size = 0;
	bool help;
	int ret;

	snprintf(cmd, sizeof(cmd), "volume %s", verb);
	ret = cli_parse(cli, argc, argv, is_resize ? size_opts : is_detach ? detach_opts : NULL,
			is_list ? NULL : &name, help_text, cmd, &help);
	if (ret || help)
		return ret;
	if (is_list) {
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_LIST;
		req.volume_list = &list;
		return cli_run(cli, &req, print_list, NULL);
	}
	if (is_resize && size_arg == NULL)
		return cli_usage_error("missing --size SIZE, e.g. --size 10G (tessera volume "
				       "resize --help)");
	ret = cli_check_name(name) ?: (is_resize ? cli_check_size(size_arg, &size) : 0);
	if (ret)
		return ret;
	if (strcmp(verb, "show") == 0)
		return volume_show(cli, name);
	if (is_resize) {
		resize.name = (char *)name;
		resize.size = size;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_RESIZE;
		req.volume_resize = &resize;
		return cli_run(cli, &req, print_created, "resized");
	}
	if (strcmp(verb, "delete") == 0) {
		del.name = (char *)name;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DELETE;
		req.volume_delete = &del;
		return cli_run(cli, &req, print_deleted, name);
	}
	detach.name = (char *)name;
	detach.force = force;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DETACH;
	req.volume_detach = &detach;
	return volume_detach(cli, &req, name);
}

static int volume_attach(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeAttach attach = TESSERA__ADMIN__VOLUME_ATTACH__INIT;
	struct attach_arg a = { .node = "" };
	const struct cli_opt opts[] = {
		{ "--node", &a.node, NULL },
		{ NULL, NULL, NULL },
	};
	bool help;
	int ret;

	ret = cli_parse(cli, argc, argv, opts, &a.name, HELP_ATTACH, "volume attach", &help);
	if (ret || help)
		return ret;
	ret = cli_check_name(a.name);
	if (ret)
		return ret;
	attach.name = (char *)a.name;
	attach.node = (char *)a.node;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ATTACH;
	req.volume_attach = &attach;
	return cli_run(cli, &req, print_attached, &a);
}

static int volume_replace(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeReplaceReplica rr = TESSERA__ADMIN__VOLUME_REPLACE_REPLICA__INIT;
	struct replace_arg a = { .to = "" };
	const struct cli_opt opts[] = {
		{ "--node", &a.old_node, NULL },
		{ "--to", &a.to, NULL },
		{ NULL, NULL, NULL },
	};
	bool help;
	int ret;

	ret = cli_parse(cli, argc, argv, opts, &a.name, HELP_REPLACE, "volume replace-replica",
			&help);
	if (ret || help)
		return ret;
	if (a.old_node == NULL || a.old_node[0] == '\0')
		return cli_usage_error("missing --node OLD: the node whose copy to replace "
				       "(tessera volume show %s lists them)", a.name);
	if (strcmp(a.old_node, a.to) == 0)
		return cli_usage_error("--to %s is the node being replaced: give another node, or "
				       "leave --to out", a.to);
	ret = cli_check_name(a.name);
	if (ret)
		return ret;
	rr.name = (char *)a.name;
	rr.node = (char *)a.old_node;
	rr.to = (char *)a.to;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_REPLACE_REPLICA;
	req.volume_replace_replica = &rr;
	return cli_run(cli, &req, print_replaced, &a);
}

int cli_cmd_volume(struct cli *cli, int argc, char **argv)
{
	static const char *const simple[] = { "list", "show", "resize", "delete", "detach" };
	const char *verb;

	if (argc < 2)
		return cli_usage_error("volume needs a verb: create, list, show, resize, delete, "
				       "rollback, attach, detach, status, scrub or replace-replica "
				       "(tessera volume --help)");
	verb = argv[1];
	if (strcmp(verb, "--help") == 0 || strcmp(verb, "-h") == 0 || strcmp(verb, "help") == 0) {
		fputs(HELP_VOLUME, stdout);
		return 0;
	}
	if (strcmp(verb, "ls") == 0)
		verb = "list";
	else if (strcmp(verb, "rm") == 0)
		verb = "delete";
	argc -= 2;
	argv += 2;
	if (strcmp(verb, "create") == 0)
		return volume_create(cli, argc, argv);
	for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++)
		if (strcmp(verb, simple[i]) == 0)
			return volume_simple(cli, simple[i], argc, argv);
	if (strcmp(verb, "attach") == 0)
		return volume_attach(cli, argc, argv);
	if (strcmp(verb, "status") == 0)
		return volume_status(cli, argc, argv);
	if (strcmp(verb, "scrub") == 0)
		return volume_scrub(cli, argc, argv);
	if (strcmp(verb, "replace-replica") == 0)
		return volume_replace(cli, argc, argv);
	if (strcmp(verb, "rollback") == 0)
		return volume_rollback(cli, argc, argv);
	return cli_usage_error("unknown volume verb '%s': use create, list, show, resize, "
			       "delete, rollback, attach, detach, status, scrub or replace-replica "
			       "(tessera volume --help)", verb);
}
