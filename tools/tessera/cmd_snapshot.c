/*
 * `tessera snapshot VERB`: create, list, show, delete and diff the
 * snapshots of a volume.  A snapshot is named VOL SNAP or VOL@SNAP (the form
 * its read-only NBD export takes); both spellings work everywhere.  As in
 * cmd_volume.c, each verb checks names locally (a typo costs no round trip),
 * sends one request, prints the reply with output.c, and prints tesserad's
 * errors as they come.  Clones and rollback are volume verbs (cmd_volume.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera.h"

static const char HELP_SNAPSHOT[] =
"Usage: tessera snapshot VERB ...\n"
"  create VOL SNAP              cut a snapshot of VOL now (also VOL@SNAP)\n"
"  list VOL                     VOL's snapshots, oldest first\n"
"  show VOL SNAP                one snapshot's details and read-only NBD URI\n"
"  delete VOL SNAP              delete a snapshot (clones made from it keep working)\n"
"  diff VOL SNAP1 [SNAP2|--head]   the byte ranges changed from SNAP1 to SNAP2\n"
"                               (default: to the volume's current content)\n"
"Clones and rollback are volume verbs:\n"
"  tessera volume create NEW --from-snapshot VOL@SNAP\n"
"  tessera volume create NEW --from-volume VOL\n"
"  tessera volume rollback VOL SNAP\n"
"Run 'tessera snapshot VERB --help' for one of them.\n";

static const char HELP_CREATE[] =
"Usage: tessera snapshot create VOL SNAP\n"
"       tessera snapshot create VOL@SNAP\n"
"Cut a snapshot: a read-only image of VOL as it is now.  It takes a few\n"
"milliseconds whatever the volume's size, and no space at first: blocks are\n"
"kept in it as the volume overwrites them.  Writes in flight are finished\n"
"first (crash-consistent, like pulling the plug); flush or freeze a\n"
"filesystem on the volume for a clean image.  In a cluster, every copy is\n"
"cut at the same point.\n"
"\n"
"  SNAP   1 to 63 of A-Z a-z 0-9 . _ - starting with a letter or digit,\n"
"         unique among VOL's snapshots\n"
"\n"
"Example:\n"
"  tessera snapshot create db before-upgrade\n"
"  tessera snapshot create db@nightly-2026-11-26\n"
"  nbdcopy 'nbd+unix:///db@before-upgrade?socket=/var/lib/tessera/nbd.sock' db.img\n"
"(tessera snapshot show db before-upgrade prints the URIs to read it.)\n";

static const char HELP_LIST[] =
"Usage: tessera snapshot list VOL\n"
"List VOL's snapshots, oldest first: name, state, when it was cut, the\n"
"space it holds (allocated), the space deleting it would free (exclusive)\n"
"and the number of clones made from it.\n"
"\n"
"STATE is ready, or deleting: the delete was accepted (the name is free\n"
"again) but the snapshot's blocks are still being merged into the older\n"
"snapshot, in the background, or that merge waits for space on a full file\n"
"system; its space is freed when the merge is done.  --json lists those\n"
"under \"deleting\", apart from \"snapshots\".\n"
"\n"
"Example:\n"
"  tessera snapshot list db\n"
"  tessera --json snapshot list db | jq -r '.snapshots[].name'\n";

static const char HELP_SHOW[] =
"Usage: tessera snapshot show VOL SNAP\n"
"       tessera snapshot show VOL@SNAP\n"
"Print a snapshot's name, uuid, creation time, the volume's size at the cut,\n"
"its allocated and exclusive space, its clones and the NBD URIs of its\n"
"read-only export (export name VOL@SNAP).\n"
"\n"
"Example:\n"
"  tessera snapshot show db before-upgrade\n"
"  tessera --json snapshot show db@before-upgrade\n";

static const char HELP_DELETE[] =
"Usage: tessera snapshot delete VOL SNAP\n"
"       tessera snapshot delete VOL@SNAP\n"
"Delete a snapshot and free its exclusive space.  The volume and its other\n"
"snapshots are unchanged.  Clones made from it keep working: the blocks\n"
"they share stay on disk, hidden, until the last such clone is deleted.\n"
"\n"
"Example:\n"
"  tessera snapshot delete db before-upgrade\n";

static const char HELP_DIFF[] =
"Usage: tessera snapshot diff VOL SNAP1 [SNAP2 | --head]\n"
"       tessera snapshot diff VOL@SNAP1 [SNAP2 | --head]\n"
"The byte ranges of VOL that changed between snapshot SNAP1 and the later\n"
"snapshot SNAP2, or the volume's current content (--head, the default):\n"
"what an incremental backup or a replica must copy.  Computed from the\n"
"snapshots' block maps, without reading data.  Ranges are in bytes,\n"
"4 KiB-aligned, in order, adjacent ones merged; ZERO yes means the range\n"
"reads as zeros at the later point (trimmed or zeroed): a backup can punch\n"
"a hole there instead of copying.\n"
"\n"
"  --head   diff against the volume's current content (the default)\n"
"\n"
"With --json: {\"volume\": VOL, \"from\": SNAP1, \"to\": SNAP2 or null for the\n"
"current content, \"extents\": [{\"offset\": N, \"length\": N, \"zero\": BOOL}],\n"
"\"changed_bytes\": N}.\n"
"\n"
"Example:\n"
"  tessera snapshot diff db monday tuesday\n"
"  tessera --json snapshot diff db monday --head |\n"
"    jq -r '.extents[] | \"\\(.offset) \\(.length)\"'\n";

/* VOL and SNAP of a command line given as "VOL SNAP" or "VOL@SNAP". */
struct snap_ref {
	char volume[64];
	const char *name;
};

/*
 * Take the snapshot reference at pos[0] (and pos[1] when pos[0] has no '@');
 * *used says how many positionals it took.  Checks both names.  0,
 * EXIT_USAGE or EXIT_FAIL (printed).
 */
static int take_ref(const char *const *pos, int got, struct snap_ref *r, int *used,
		    const char *cmd)
{
	int ret;

	if (got == 0)
		return cli_usage_error("missing VOL SNAP, e.g. db nightly or db@nightly (tessera "
				       "%s --help)", cmd);
	ret = cli_split_snap(pos[0], r->volume, sizeof(r->volume), &r->name);
	if (ret)
		return ret;
	*used = 1;
	if (r->name == NULL) {
		if (got < 2)
			return cli_usage_error("missing the snapshot name: %s %s SNAP or %s@SNAP "
					       "(tessera %s --help)", cmd, pos[0], pos[0], cmd);
		r->name = pos[1];
		*used = 2;
	}
	return cli_check_name(r->volume) ?: cli_check_snap_name(r->name);
}

static int one_snapshot(const Tessera__Admin__Response *resp)
{
	if (resp->n_snapshots != 1) {
		cli_error("tesserad sent %zu snapshots where one was expected (is it the same "
			  "version as this tessera, %s?)", resp->n_snapshots, TSR_VERSION);
		return EXIT_FAIL;
	}
	return 0;
}

/* ---- printers --------------------------------------------------------- */

static int print_created(const struct cli *cli, const Tessera__Admin__Response *resp,
			 const void *arg)
{
	const struct snap_ref *r = arg;
	const Tessera__Admin__Snapshot *s;
	char size[32];

	if (resp->n_snapshots == 0 && resp->message && resp->message[0]) {
		/* a cluster node cut it but no node holding an in-sync copy
		 * gave its description back in time: created all the same */
		if (cli->json)
			return cli_print_json(json_pack("{s:s, s:s, s:s}", "volume", r->volume,
							"name", r->name, "message", resp->message),
					      false);
		printf("created snapshot '%s@%s'\n", r->volume, r->name);
		fprintf(stderr, "tessera: %s\n", resp->message);
		return 0;
	}
	if (one_snapshot(resp))
		return EXIT_FAIL;
	s = resp->snapshots[0];
	if (cli->json)
		return cli_print_json(cli_snapshot_json(s), false);
	printf("created snapshot '%s@%s' of %s (cut %" PRIu64 " of the volume)\n", s->volume,
	       s->name, cli_fmt_size(s->size, size, sizeof(size)), s->seq);
	if (s->n_nbd_uris)
		printf("read it (read-only) over NBD:\n");
	for (size_t i = 0; i < s->n_nbd_uris; i++)
		printf("  %s\n", s->nbd_uris[i]);
	printf("clone it:        tessera volume create NEW --from-snapshot %s@%s\n", s->volume,
	       s->name);
	printf("roll back to it: tessera volume rollback %s %s\n", s->volume, s->name);
	return 0;
}

static int print_list(const struct cli *cli, const Tessera__Admin__Response *resp,
		      const void *arg)
{
	const char *volume = arg;

	if (cli->json)
		return cli_print_json(cli_snapshot_list_json(volume, resp->snapshots,
							     resp->n_snapshots), false);
	if (resp->n_snapshots == 0) {
		printf("volume '%s' has no snapshots (cut one: tessera snapshot create %s NAME)\n",
		       volume, volume);
		return 0;
	}
	cli_print_snapshots(stdout, resp->snapshots, resp->n_snapshots, "");
	for (size_t i = 0; i < resp->n_snapshots; i++)
		if (resp->snapshots[i]->deleting) {
			printf("(deleting: the delete was accepted and the name is free; the "
			       "snapshot's space is freed once its blocks are merged into the older "
			       "snapshot)\n");
			break;
		}
	return 0;
}

static int print_show(const struct cli *cli, const Tessera__Admin__Response *resp,
		      const void *arg)
{
	if (one_snapshot(resp))
		return EXIT_FAIL;
	if (cli->json)
		return cli_print_json(cli_snapshot_json(resp->snapshots[0]), false);
	cli_print_snapshot(stdout, resp->snapshots[0]);
	return 0;
}

static int print_deleted(const struct cli *cli, const Tessera__Admin__Response *resp,
			 const void *arg)
{
	const struct snap_ref *r = arg;

	if (cli->json)
		return cli_print_json(json_pack("{s:s, s:s}", "volume", r->volume, "deleted",
						r->name), false);
	printf("deleted snapshot '%s@%s'\n", r->volume, r->name);
	return 0;
}

struct diff_arg {
	const struct snap_ref *from;
	const char *to; /* NULL: the head */
};

static int print_diff(const struct cli *cli, const Tessera__Admin__Response *resp,
		      const void *arg)
{
	const struct diff_arg *d = arg;

	if (cli->json)
		return cli_print_json(cli_diff_json(d->from->volume, d->from->name, d->to,
						    resp->extents, resp->n_extents,
						    resp->diff_bytes), false);
	cli_print_diff(stdout, d->from->volume, d->from->name, d->to, resp->extents,
		       resp->n_extents, resp->diff_bytes);
	return 0;
}

/*
 * Send a SnapshotDiff page by page (diff_next) over one connection and print
 * the whole list once, as one reply would have been.
 */
static int run_diff(struct cli *cli, Tessera__Admin__Request *req, const struct diff_arg *d)
{
	Tessera__Admin__Response all = TESSERA__ADMIN__RESPONSE__INIT;
	Tessera__Admin__Extent *ext = NULL;
	struct tsr_admin_client *c = NULL;
	size_t n = 0;
	int ret;

	ret = cli_connect(cli, &c);
	if (ret)
		return ret;
	req->snapshot_diff->start = 0;
	do {
		Tessera__Admin__Response *resp = NULL;
		Tessera__Admin__Extent *grown;

		ret = cli_call(cli, c, req, &resp);
		if (ret)
			break;
		if (resp->diff_next != 0 && resp->diff_next <= req->snapshot_diff->start) {
			cli_error("the server's diff page from offset %" PRIu64 " does not advance "
				  "(next %" PRIu64 ")", req->snapshot_diff->start, resp->diff_next);
			ret = EXIT_FAIL;
		} else if ((grown = realloc(ext, (n + resp->n_extents + 1) *
					    sizeof(*ext))) == NULL) {
			cli_error("out of memory");
			ret = EXIT_FAIL;
		} else {
			ext = grown;
			for (size_t i = 0; i < resp->n_extents; i++) {
				tessera__admin__extent__init(&ext[n]);
				ext[n].offset = resp->extents[i]->offset;
				ext[n].length = resp->extents[i]->length;
				ext[n].zero = resp->extents[i]->zero;
				all.diff_bytes += ext[n].length;
				n++;
			}
			req->snapshot_diff->start = resp->diff_next;
		}
		tessera__admin__response__free_unpacked(resp, NULL);
	} while (ret == 0 && req->snapshot_diff->start != 0);
	tsr_admin_close(c);
	if (ret == 0 && (all.extents = calloc(n + 1, sizeof(*all.extents))) == NULL) {
		cli_error("out of memory");
		ret = EXIT_FAIL;
	}
	if (ret == 0) {
		for (size_t i = 0; i < n; i++)
			all.extents[i] = &ext[i];
		all.n_extents = n;
		ret = print_diff(cli, &all, d);
		if (fflush(stdout) != 0) {
			cli_error("cannot write the output: %s", strerror(errno));
			ret = EXIT_FAIL;
		}
	}
	free(all.extents);
	free(ext);
	return ret;
}

/* ---- the verbs -------------------------------------------------------- */

/* create, show, delete: VOL SNAP or VOL@SNAP, no options. */
static int snapshot_one(struct cli *cli, const char *verb, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotCreate create = TESSERA__ADMIN__SNAPSHOT_CREATE__INIT;
	Tessera__Admin__SnapshotShow show = TESSERA__ADMIN__SNAPSHOT_SHOW__INIT;
	Tessera__Admin__SnapshotDelete del = TESSERA__ADMIN__SNAPSHOT_DELETE__INIT;
	const char *help_text = strcmp(verb, "create") == 0 ? HELP_CREATE :
				strcmp(verb, "show") == 0 ? HELP_SHOW : HELP_DELETE;
	const char *pos[3];
	struct snap_ref r;
	char cmd[32];
	int got, used, ret;
	bool help;

	snprintf(cmd, sizeof(cmd), "snapshot %s", verb);
	ret = cli_parse_args(cli, argc, argv, NULL, pos, 3, &got, help_text, cmd, &help);
	if (ret || help)
		return ret;
	ret = take_ref(pos, got, &r, &used, cmd);
	if (ret)
		return ret;
	if (got > used)
		return cli_usage_error("unexpected argument '%s' (tessera %s --help)", pos[used],
				       cmd);
	if (strcmp(verb, "create") == 0) {
		create.volume = r.volume;
		create.name = (char *)r.name;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE;
		req.snapshot_create = &create;
		return cli_run(cli, &req, print_created, &r);
	}
	if (strcmp(verb, "show") == 0) {
		show.volume = r.volume;
		show.name = (char *)r.name;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_SHOW;
		req.snapshot_show = &show;
		return cli_run(cli, &req, print_show, &r);
	}
	del.volume = r.volume;
	del.name = (char *)r.name;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DELETE;
	req.snapshot_delete = &del;
	return cli_run(cli, &req, print_deleted, &r);
}

static int snapshot_list(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotList list = TESSERA__ADMIN__SNAPSHOT_LIST__INIT;
	const char *volume = NULL;
	bool help;
	int ret;

	ret = cli_parse(cli, argc, argv, NULL, &volume, HELP_LIST, "snapshot list", &help);
	if (ret || help)
		return ret;
	if (strchr(volume, '@'))
		return cli_usage_error("snapshot list takes a volume, not '%s' (tessera snapshot "
				       "show %s for one snapshot)", volume, volume);
	ret = cli_check_name(volume);
	if (ret)
		return ret;
	list.volume = (char *)volume;
	list.with_deleting = true;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST;
	req.snapshot_list = &list;
	return cli_run(cli, &req, print_list, volume);
}

static int snapshot_diff(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotDiff diff = TESSERA__ADMIN__SNAPSHOT_DIFF__INIT;
	bool head = false, help;
	const struct cli_opt opts[] = {
		{ "--head", NULL, &head },
		{ NULL, NULL, NULL },
	};
	const char *pos[4];
	struct snap_ref from;
	struct diff_arg d = { .from = &from };
	int got, used, ret;

	ret = cli_parse_args(cli, argc, argv, opts, pos, 4, &got, HELP_DIFF, "snapshot diff",
			     &help);
	if (ret || help)
		return ret;
	ret = take_ref(pos, got, &from, &used, "snapshot diff");
	if (ret)
		return ret;
	if (got > used + 1)
		return cli_usage_error("unexpected argument '%s' (tessera snapshot diff --help)",
				       pos[used + 1]);
	if (got == used + 1) {
		if (head)
			return cli_usage_error("give SNAP2 or --head, not both (tessera snapshot "
					       "diff --help)");
		d.to = pos[used];
		/* "db@b" as SNAP2 is fine when it names the same volume */
		if (strchr(d.to, '@')) {
			char vol2[64];

			ret = cli_split_snap(d.to, vol2, sizeof(vol2), &d.to);
			if (ret)
				return ret;
			if (strcmp(vol2, from.volume) != 0)
				return cli_usage_error("SNAP2 %s is not a snapshot of '%s': a diff "
						       "is between two points of one volume",
						       pos[used], from.volume);
		}
		ret = cli_check_snap_name(d.to);
		if (ret)
			return ret;
		if (strcmp(d.to, from.name) == 0)
			return cli_usage_error("SNAP1 and SNAP2 are both '%s': nothing to compare",
					       d.to);
	}
	diff.volume = from.volume;
	diff.from = (char *)from.name;
	diff.to = (char *)(d.to ? d.to : "");
	diff.paged = true;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DIFF;
	req.snapshot_diff = &diff;
	return run_diff(cli, &req, &d);
}

int cli_cmd_snapshot(struct cli *cli, int argc, char **argv)
{
	const char *verb;

	if (argc < 2)
		return cli_usage_error("snapshot needs a verb: create, list, show, delete or diff "
				       "(tessera snapshot --help)");
	verb = argv[1];
	if (strcmp(verb, "--help") == 0 || strcmp(verb, "-h") == 0 || strcmp(verb, "help") == 0) {
		fputs(HELP_SNAPSHOT, stdout);
		return 0;
	}
	if (strcmp(verb, "ls") == 0)
		verb = "list";
	else if (strcmp(verb, "rm") == 0)
		verb = "delete";
	argc -= 2;
	argv += 2;
	if (strcmp(verb, "create") == 0 || strcmp(verb, "show") == 0 ||
	    strcmp(verb, "delete") == 0)
		return snapshot_one(cli, verb, argc, argv);
	if (strcmp(verb, "list") == 0)
		return snapshot_list(cli, argc, argv);
	if (strcmp(verb, "diff") == 0)
		return snapshot_diff(cli, argc, argv);
	return cli_usage_error("unknown snapshot verb '%s': use create, list, show, delete or "
			       "diff (tessera snapshot --help)", verb);
}
