/*
 * admin_local_copy: send one node's admin socket an internal, node-to-node
 * command with local_copy set, as another node of the cluster does: it acts
 * on that node's store copy only (vol/<name> and the other copies are left
 * as they are).  Integration tests build with it what a cluster operation
 * cut short leaves behind, or send a late copy delete, directly instead of
 * from a race.  The request goes through the engine's admin client
 * (tsr_admin_connect_unix, tsr_admin_call) and the generated protobuf-c
 * messages of proto/admin.proto; the unix socket takes no token.
 *
 *   admin_local_copy [--timeout MS] DIR COMMAND ARGS...
 *
 * DIR is the node's data directory (its DIR/admin.sock), or the socket's
 * path itself.  Commands:
 *
 *   volume-resize VOLUME SIZE [--check-only]
 *       VolumeResize{local_copy, check_only}: only this copy grows (what a
 *       cluster resize stopped after its grow step leaves: copies larger
 *       than the record); --check-only changes nothing and answers with the
 *       copy (its uuid and size) when it could grow to SIZE.
 *   snapshot-create VOLUME SNAPSHOT [--size SIZE] [--epoch E]
 *       SnapshotCreate{local_copy[, size][, epoch]}: this copy's store cuts
 *       SNAPSHOT at its own size, or at SIZE (SnapshotCreate.size, what a
 *       detached cut sends: the record's size; larger than the copy:
 *       -EINVAL); --epoch: fenced by E (SnapshotCreate.epoch/epoch_set, what
 *       a detached cut sends: the record's epoch at its start; -ESTALE when
 *       the copy's epoch is past it).
 *   snapshot-delete VOLUME SNAPSHOT [--epoch E]
 *       SnapshotDelete{local_copy[, epoch]}.
 *   volume-delete VOLUME [--uuid UUID]
 *       VolumeDelete{local_copy[, uuid]}: delete this node's copy (by name,
 *       or only the copy of UUID).
 *   snapshot-create-via VOLUME SNAPSHOT NODE
 *       a client's SnapshotCreate (no local_copy) with Request.via_node =
 *       NODE, as a node forwarding the client's create sends it (the node
 *       asked must not call NODE back while it waits).
 *
 * SIZE takes the CLI's units (8M, 1G, or bytes).  Output, one line each:
 *
 *   <error> <message>                     the answer's error (0 or -errno)
 *                                         and message ("" when none)
 *   volume <name> <uuid> <size>           one per Response.volumes entry
 *
 * Exit status: 0 the node answered error 0; 1 it answered an error (printed
 * as above); 2 bad arguments, or no answer (connection or call failed; the
 * reason on stderr).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tessera/admin.h"
#include "tessera/common.h"

#define EXIT_ANSWER_ERROR 1
#define EXIT_USAGE        2

static const char usage_text[] =
    "usage: admin_local_copy [--timeout MS] DIR COMMAND ARGS...\n"
    "\n"
    "Send node DIR's admin socket (DIR/admin.sock, or DIR when it is the socket)\n"
    "the node-to-node (local_copy) form of a command: it acts on that node's\n"
    "store copy only, the cluster's record and the other copies unchanged.\n"
    "\n"
    "Commands:\n"
    "  volume-resize VOLUME SIZE [--check-only]  grow only this copy (SIZE: 8M, 1G,\n"
    "                                            bytes); --check-only: change nothing,\n"
    "                                            answer with the copy if it could grow\n"
    "  snapshot-create VOLUME SNAPSHOT [--size SIZE] [--epoch E]\n"
    "                                            cut SNAPSHOT on this copy (at its\n"
    "                                            size, or at SIZE: 8M, 1G, bytes)\n"
    "  snapshot-delete VOLUME SNAPSHOT [--epoch E]  delete SNAPSHOT of this copy\n"
    "                                            --epoch: fenced by epoch E (refused\n"
    "                                            -ESTALE when the copy's is past it)\n"
    "  volume-delete VOLUME [--uuid UUID]        delete this copy (by name, or only\n"
    "                                            the copy of UUID)\n"
    "  snapshot-create-via VOLUME SNAPSHOT NODE  a client's create (not local_copy),\n"
    "                                            via_node NODE (as forwarded by it)\n"
    "\n"
    "Options:\n"
    "  --timeout MS   wait at most MS for the answer (default 30000; 0: forever)\n"
    "  -h, --help     this text\n"
    "\n"
    "Prints '<error> <message>' (error 0 or -errno), then 'volume NAME UUID SIZE'\n"
    "for each volume in the answer.  Exit 0: answered 0; 1: answered an error;\n"
    "2: bad arguments or no answer.\n";

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "admin_local_copy: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n(admin_local_copy --help for usage)\n");
	return EXIT_USAGE;
}

/* The admin socket of DIR: DIR itself when it is a socket. */
static int socket_path(const char *dir, char *buf, size_t len)
{
	struct stat st;
	int n;

	if (stat(dir, &st) == 0 && S_ISSOCK(st.st_mode))
		n = snprintf(buf, len, "%s", dir);
	else
		n = snprintf(buf, len, "%s/admin.sock", dir);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int check_name(const char *what, const char *name)
{
	if (!tsr_valid_name(name)) {
		fprintf(stderr, "admin_local_copy: invalid %s name '%s'\n", what, name);
		return EXIT_USAGE;
	}
	return 0;
}

/* The request and the one command in it (req points into the others). */
struct local_request {
	Tessera__Admin__Request req;
	Tessera__Admin__VolumeResize resize;
	Tessera__Admin__VolumeDelete del;
	Tessera__Admin__SnapshotCreate snap_create;
	Tessera__Admin__SnapshotDelete snap_delete;
};

/*
 * Fill r (initialised by the caller) from the command's words, argv[0] the
 * command; the strings stay argv's.  0 or EXIT_USAGE (told on stderr).
 */

static int build_request(int argc, char **argv, struct local_request *r)
{
	const char *cmd = argv[0];
	uint64_t size;
	int ret;

	if (strcmp(cmd, "volume-resize") == 0) {
		bool check_only = false;

		if (argc == 4 && strcmp(argv[3], "--check-only") == 0)
			check_only = true;
		else if (argc != 3)
			return usage_error("%s takes VOLUME SIZE [--check-only]", cmd);
		ret = check_name("volume", argv[1]);
		if (ret)
			return ret;
		if (tsr_parse_size(argv[2], &size) != 0 || size == 0)
			return usage_error("invalid size '%s'", argv[2]);
		r->resize.name = argv[1];
		r->resize.size = size;
		r->resize.local_copy = true;
		r->resize.check_only = check_only;
		r->req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_RESIZE;
		r->req.volume_resize = &r->resize;
	} else if (strcmp(cmd, "volume-delete") == 0) {
		if (argc == 4 && strcmp(argv[2], "--uuid") == 0) {
			if (argv[3][0] == '\0' || !tsr_valid_uuid(argv[3]))
				return usage_error("invalid uuid '%s'", argv[3]);
			r->del.uuid = argv[3];
		} else if (argc != 2) {
			return usage_error("%s takes VOLUME [--uuid UUID]", cmd);
		}
		ret = check_name("volume", argv[1]);
		if (ret)
			return ret;
		r->del.name = argv[1];
		r->del.local_copy = true;
		r->req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DELETE;
		r->req.volume_delete = &r->del;
	} else if (strcmp(cmd, "snapshot-create-via") == 0) {
		if (argc != 4)
			return usage_error("%s takes VOLUME SNAPSHOT NODE", cmd);
		ret = check_name("volume", argv[1]);
		if (!ret)
			ret = check_name("snapshot", argv[2]);
		if (!ret)
			ret = check_name("node", argv[3]);
		if (ret)
			return ret;
		r->snap_create.volume = argv[1];
		r->snap_create.name = argv[2];
		r->req.via_node = argv[3];
		r->req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE;
		r->req.snapshot_create = &r->snap_create;
	} else if (strcmp(cmd, "snapshot-create") == 0 || strcmp(cmd, "snapshot-delete") == 0) {
		bool create = strcmp(cmd, "snapshot-create") == 0, epoch_set = false;
		unsigned long long epoch = 0;
		char *end;

		size = 0;
		if (argc % 2 == 0)
			argc = 0; /* the usage error below */
		for (int i = 3; i + 1 < argc; i += 2) {
			if (create && strcmp(argv[i], "--size") == 0) {
				if (tsr_parse_size(argv[i + 1], &size) != 0 || size == 0)
					return usage_error("invalid size '%s'", argv[i + 1]);
			} else if (strcmp(argv[i], "--epoch") == 0) {
				errno = 0;
				epoch = strtoull(argv[i + 1], &end, 10);
				if (errno || end == argv[i + 1] || *end != '\0')
					return usage_error("invalid epoch '%s'", argv[i + 1]);
				epoch_set = true;
			} else {
				argc = 0;
				break;
			}
		}
		if (argc < 3 || argc > (create ? 7 : 5)) {
			return usage_error(create ? "%s takes VOLUME SNAPSHOT [--size SIZE] "
						    "[--epoch E]"
						  : "%s takes VOLUME SNAPSHOT [--epoch E]",
					   cmd);
		}
		ret = check_name("volume", argv[1]);
		if (!ret)
			ret = check_name("snapshot", argv[2]);
		if (ret)
			return ret;
		if (create) {
			r->snap_create.volume = argv[1];
			r->snap_create.name = argv[2];
			r->snap_create.local_copy = true;
			r->snap_create.size = size;
			r->snap_create.epoch = epoch;
			r->snap_create.epoch_set = epoch_set;
			r->req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE;
			r->req.snapshot_create = &r->snap_create;
		} else {
			r->snap_delete.volume = argv[1];
			r->snap_delete.name = argv[2];
			r->snap_delete.local_copy = true;
			r->snap_delete.epoch = epoch;
			r->snap_delete.epoch_set = epoch_set;
			r->req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DELETE;
			r->req.snapshot_delete = &r->snap_delete;
		}
	} else {
		return usage_error("unknown command '%s'", cmd);
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {"timeout", required_argument, NULL, 't'},
	    {NULL, 0, NULL, 0},
	};
	struct local_request r;
	struct tsr_admin_client *c = NULL;
	Tessera__Admin__Response *resp = NULL;
	char path[4096], *end;
	long timeout_ms = 30000;
	int opt, ret;

	tessera__admin__request__init(&r.req);
	tessera__admin__volume_resize__init(&r.resize);
	tessera__admin__volume_delete__init(&r.del);
	tessera__admin__snapshot_create__init(&r.snap_create);
	tessera__admin__snapshot_delete__init(&r.snap_delete);

	/* "+": options stop at DIR, so the command's own --check-only/--uuid stay */
	while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		case 't':
			errno = 0;
			timeout_ms = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || timeout_ms < 0 ||
			    timeout_ms > 3600000)
				return usage_error(
				    "invalid --timeout '%s' (milliseconds, 0..3600000)", optarg);
			break;
		default:
			fprintf(stderr, "(admin_local_copy --help for usage)\n");
			return EXIT_USAGE;
		}
	}
	if (argc - optind < 2)
		return usage_error("%s", "DIR and COMMAND wanted");
	ret = build_request(argc - optind - 1, argv + optind + 1, &r);
	if (ret)
		return ret;
	if (socket_path(argv[optind], path, sizeof(path)) != 0)
		return usage_error("path too long: %s", argv[optind]);

	ret = tsr_admin_connect_unix(path, &c);
	if (ret) {
		fprintf(stderr, "admin_local_copy: connect %s: %s\n", path, strerror(-ret));
		return EXIT_USAGE;
	}
	ret = tsr_admin_call(c, &r.req, (int)timeout_ms, &resp);
	tsr_admin_close(c);
	if (ret) {
		fprintf(stderr, "admin_local_copy: %s to %s: %s\n", argv[optind + 1], path,
			strerror(-ret));
		return EXIT_USAGE;
	}
	printf("%d %s\n", resp->error, resp->message ? resp->message : "");
	for (size_t i = 0; i < resp->n_volumes; i++) {
		const Tessera__Admin__Volume *v = resp->volumes[i];

		printf("volume %s %s %" PRIu64 "\n", v->name, v->uuid[0] ? v->uuid : "-", v->size);
	}
	ret = resp->error == 0 ? 0 : EXIT_ANSWER_ERROR;
	tessera__admin__response__free_unpacked(resp, NULL);
	return ret;
}
