/*
 * Private header of the tessera CLI (tools/tessera/), a section per file.
 *   tessera.c      main: global options, connecting, one request/reply, the
 *                  command-line parser every verb uses
 *   output.c       text and JSON renderings of the admin API's messages
 *   cmd_volume.c   `tessera volume ...` (also clones: create --from-*, rollback)
 *   cmd_snapshot.c `tessera snapshot ...`: create, list, show, delete, diff
 *   cmd_cluster.c  `tessera node list`, `tessera cluster status`, `tessera status`
 *   cmd_site.c     `tessera site ...`: add, list, remove (geo-replication peers)
 *   cmd_replication.c `tessera replication ...`: enable, disable, status,
 *                  promote, resync
 *   demo.c         `tessera demo`: a 3-node cluster (or one node) + a volume +
 *                  tessera-bench, end to end
 */
#ifndef TESSERA_CLI_H
#define TESSERA_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "tessera/admin.h"

/* Exit codes. */
#define EXIT_FAIL 1   /* the operation failed; a message says why */
#define EXIT_USAGE 2  /* the command line is wrong */
#define EXIT_INTERRUPTED 130 /* Ctrl-C while waiting */

#define CLI_TIMEOUT_MS 60000 /* longest wait for a tesserad reply */

/* Global options, before or after the command. */
struct cli {
	const char *data_dir;   /* --data, $TESSERA_DATA or /var/lib/tessera */
	bool data_explicit;     /* --data was given on the command line */
	const char *cluster;    /* --cluster HOST:PORT ($TESSERA_CLUSTER), or NULL: the unix
				   socket in data_dir */
	bool cluster_from_env;  /* cluster is $TESSERA_CLUSTER: --data on the command line
				   overrides it */
	const char *token;      /* --token, else $TESSERA_TOKEN */
	const char *token_file; /* --token-file, else $TESSERA_TOKEN_FILE */
	bool json;              /* --json: one JSON object on stdout */
};

/* ---- tessera.c ---------------------------------------------------------- */

/* Print "tessera: MESSAGE" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* cli_error, then return EXIT_USAGE. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Connect as the global options say; on failure print why and return EXIT_FAIL. */
int cli_connect(const struct cli *cli, struct tsr_admin_client **out);
/* The same without printing: why gets the message.  0 or EXIT_FAIL. */
int cli_connect_quiet(const struct cli *cli, struct tsr_admin_client **out, char *why,
		      size_t why_len);
/*
 * One request/reply; on a failed call or an error reply print the message and
 * return EXIT_FAIL (*resp NULL); else 0 with *resp to free with
 * tessera__admin__response__free_unpacked.
 */
int cli_call(const struct cli *cli, struct tsr_admin_client *c, Tessera__Admin__Request *req,
	     Tessera__Admin__Response **resp);
/*
 * The same without printing, for loops that retry: 0 with *resp (which may
 * carry a server error in resp->error; resp->message says what to do), or
 * -errno from tsr_admin_call with *resp NULL.  why gets a message for a
 * failed call.
 */
int cli_call_quiet(const struct cli *cli, struct tsr_admin_client *c,
		   Tessera__Admin__Request *req, Tessera__Admin__Response **resp,
		   char *why, size_t why_len);

/* Print a reply (the request's data in arg); returns the exit code. */
typedef int (*cli_printer)(const struct cli *cli, const Tessera__Admin__Response *resp,
			   const void *arg);
/* Connect, send req, print the reply with print_fn; returns the exit code. */
int cli_run(const struct cli *cli, Tessera__Admin__Request *req, cli_printer print_fn,
	    const void *arg);

/* One option of a verb, for cli_parse. */
struct cli_opt {
	const char *name;    /* "--size" */
	const char **value;  /* takes a value: where it goes (NULL for a flag) */
	bool *flag;          /* a flag: set to true (NULL when it takes a value) */
};

/*
 * Parse a verb's arguments argv[0..argc) (after the verb): positionals (up to
 * one, into *name when name is not NULL), the verb's options (opts, ended by
 * a NULL name; "--opt VALUE" and "--opt=VALUE"), --help/-h and the global
 * options.  On --help prints help and sets *help.  Returns 0 or EXIT_USAGE
 * (printed).  A required NAME that is missing is a usage error.
 */
int cli_parse(struct cli *cli, int argc, char **argv, const struct cli_opt *opts,
	      const char **name, const char *help, const char *cmd, bool *help_shown);

/*
 * cli_parse for verbs with several positionals: up to npos of them into
 * pos[0..*got), in order; the caller says which are required.  "--" ends the
 * options (a name that starts with '-' then reaches the name check, which
 * explains it, instead of being an unknown option).
 */
int cli_parse_args(struct cli *cli, int argc, char **argv, const struct cli_opt *opts,
		   const char **pos, int npos, int *got, const char *help, const char *cmd,
		   bool *help_shown);

/* Validate a volume name / a snapshot name / a --size value; print why and
 * return EXIT_FAIL. */
int cli_check_name(const char *name);
int cli_check_snap_name(const char *name);
/*
 * Split "VOL@SNAP" at the first '@': vol gets VOL (len bytes at most, with
 * the NUL), *snap points into arg after the '@'.  Without '@': vol = arg,
 * *snap = NULL.  Names are not checked here.  0, or EXIT_FAIL (printed) when
 * VOL does not fit.
 */
int cli_split_snap(const char *arg, char *vol, size_t len, const char **snap);
int cli_check_size(const char *arg, uint64_t *size);
/* Parse an unsigned number from lo to hi for option opt; EXIT_USAGE (printed) if not. */
int cli_parse_uint(const char *opt, const char *arg, unsigned long lo, unsigned long hi,
		   unsigned long *out);

/* Ctrl-C handling for commands that wait: sets the flag below, no SA_RESTART. */
extern volatile int g_cli_interrupted; /* the signal number, 0 if none */
void cli_catch_signals(void);

/* ---- output.c ------------------------------------------------------------ */

const char *cli_fmt_size(uint64_t bytes, char *buf, size_t len);     /* "10 GiB" */
/* "ec 4+2 (64 KiB unit)", "3 replicas", or "1 copy" (standalone). */
const char *cli_fmt_layout(const Tessera__Admin__Volume *v, char *buf, size_t len);
const char *cli_fmt_time(int64_t t, char *buf, size_t len);          /* "... UTC" or "-" */
const char *cli_fmt_iso(int64_t t, char *buf, size_t len);           /* ISO 8601 */
const char *cli_fmt_duration(uint64_t s, char *buf, size_t len);     /* "3 min 20 s" */
const char *cli_fmt_rate(double bytes_per_sec, char *buf, size_t len); /* "85.3 MiB/s" */
/* done of total as a percentage 0..100 (100 when total is 0), floored. */
unsigned cli_percent(uint64_t done, uint64_t total);
/* Every copy of v is "in-sync" (and there is at least one). */
bool cli_all_in_sync(const Tessera__Admin__Volume *v);
/* A cluster volume: the server filled in its cluster fields. */
bool cli_is_cluster_volume(const Tessera__Admin__Volume *v);

/* Print j on stdout, pretty (or on one line when compact), and take it. */
int cli_print_json(json_t *j, bool compact);
json_t *cli_volume_json(const Tessera__Admin__Volume *v);
json_t *cli_status_json(const Tessera__Admin__Status *s);
json_t *cli_volume_status_json(const Tessera__Admin__VolumeStatus *s);
json_t *cli_node_json(const Tessera__Admin__Node *n);
/* The summary, with "data_fs": the sum over the nodes (a node list reply)
 * whose figures are known ({"size", "free", "avail", "used_percent",
 * "nodes_known", "nodes"}). */
json_t *cli_cluster_json(const Tessera__Admin__ClusterStatus *s,
			 Tessera__Admin__Node *const *nodes, size_t n);

/* A volume with what only volume_show fills in (its snapshots, oldest first). */
json_t *cli_volume_detail_json(const Tessera__Admin__Volume *v);
json_t *cli_snapshot_json(const Tessera__Admin__Snapshot *s);
/* "deleting" (its delete is pending: the merge has not finished) or "ready". */
const char *cli_snapshot_state(const Tessera__Admin__Snapshot *s);
/* {"volume":..,"snapshots":[..],"deleting":[..]} as snapshot list --json
 * prints it: the snapshots whose delete is pending apart. */
json_t *cli_snapshot_list_json(const char *volume, Tessera__Admin__Snapshot *const *s,
			       size_t n);
/*
 * The changed extents from snapshot from to to (NULL: the volume's current
 * content, printed as "to": null): {"volume", "from", "to", "extents":
 * [{"offset", "length", "zero"}], "changed_bytes"}.  changed_bytes is
 * diff_bytes when the server sent it, else the sum of the lengths.
 */
json_t *cli_diff_json(const char *volume, const char *from, const char *to,
		      Tessera__Admin__Extent *const *e, size_t n, uint64_t diff_bytes);
/* The total a diff reply stands for (as in cli_diff_json). */
uint64_t cli_diff_bytes(Tessera__Admin__Extent *const *e, size_t n, uint64_t diff_bytes);

void cli_print_volume(const Tessera__Admin__Volume *v);
/* The snapshots table (name, state, created, allocated, exclusive, clones) on out. */
void cli_print_snapshots(FILE *out, Tessera__Admin__Snapshot *const *s, size_t n,
			 const char *indent);
void cli_print_snapshot(FILE *out, const Tessera__Admin__Snapshot *s);
/* The diff table (offset, length, zero) and its total on out. */
void cli_print_diff(FILE *out, const char *volume, const char *from, const char *to,
		    Tessera__Admin__Extent *const *e, size_t n, uint64_t diff_bytes);
void cli_print_volume_list(Tessera__Admin__Volume *const *v, size_t n);
void cli_print_copies(const Tessera__Admin__Volume *v, const char *indent);
void cli_print_status(const Tessera__Admin__Status *s);
void cli_print_volume_status(const Tessera__Admin__VolumeStatus *s);
/* The nodes table, then a WARNING line per node whose data file system is
 * nearly full or full (cli_fs_warning) and a line per alive node whose
 * figures are unknown. */
void cli_print_nodes(Tessera__Admin__Node *const *nodes, size_t n);
/* The summary; with nodes (a node list reply), a "data fs:" line summing
 * the data file systems whose figures are known (the warnings are the
 * nodes table's: cli_print_nodes). */
void cli_print_cluster(const Tessera__Admin__ClusterStatus *s,
		       Tessera__Admin__Node *const *nodes, size_t n);

/* A data file system (statvfs of a node's data dir).  Warned about when
 * over CLI_FS_WARN_PERCENT full (df's Use%) or full (nothing available). */
#define CLI_FS_WARN_PERCENT 90
/* df's Use%: used / (used + available), rounded up; used = size - free. */
unsigned cli_fs_used_percent(const Tessera__Admin__DataFs *fs);
/* The warning for fs (what is wrong, what to do) in buf, or NULL: no
 * warning (or its figures are unknown). */
const char *cli_fs_warning(const Tessera__Admin__DataFs *fs, char *buf, size_t len);
/* {"size", "free", "avail", "used_percent", "warning", "error"}: sizes in
 * bytes; warning and error null when there is none (error: the figures are
 * unknown, then the sizes are 0 and used_percent null). */
json_t *cli_data_fs_json(const Tessera__Admin__DataFs *fs);

/* Geo-replication.  JSON: the proto's field names, flat. */
json_t *cli_site_json(const Tessera__Admin__Site *s);
json_t *cli_replication_json(const Tessera__Admin__Replication *r);
/* {"replications": [..]} */
json_t *cli_replication_list_json(Tessera__Admin__Replication *const *r, size_t n);
/* The sites table (name, address, peer name, volumes, TLS files). */
void cli_print_sites(Tessera__Admin__Site *const *s, size_t n);
/* One replicated volume in detail: a source (lag, rate, ETA, dirty, sync
 * progress, counters) or a target (consistent, applied, promoted). */
void cli_print_replication(const Tessera__Admin__Replication *r);
/* One row per replicated volume. */
void cli_print_replications(Tessera__Admin__Replication *const *r, size_t n);

/* ---- cmd_volume.c, cmd_snapshot.c, cmd_cluster.c, cmd_site.c, cmd_replication.c, demo.c -- */

/* Each takes argv[0] = the command word and returns the exit code. */
int cli_cmd_volume(struct cli *cli, int argc, char **argv);
int cli_cmd_node(struct cli *cli, int argc, char **argv);
int cli_cmd_cluster(struct cli *cli, int argc, char **argv);
int cli_cmd_status(struct cli *cli, int argc, char **argv);
int cli_cmd_snapshot(struct cli *cli, int argc, char **argv);
int cli_cmd_site(struct cli *cli, int argc, char **argv);
int cli_cmd_replication(struct cli *cli, int argc, char **argv);
int cli_demo(struct cli *cli, int argc, char **argv);

#endif
