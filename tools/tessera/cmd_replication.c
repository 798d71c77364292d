/*
 * `tessera replication VERB`: async geo-replication of volumes to a remote
 * site (include/tessera/site.h, GitHub issue 7).  At the source site:
 * enable, disable, status; at the target site: status, promote (failover);
 * at a former source that was demoted: resync (failback).  As in the other
 * cmd_*.c files, each verb checks its arguments locally, sends one request
 * and prints the reply through output.c; status --watch polls every second
 * on a connection that survives a tesserad restart.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tessera.h"
#include "tessera/site.h"

static const char HELP_REPL[] =
"Usage: tessera replication VERB ...\n"
"  enable VOL --to SITE [--target-layout ec:K+M|replicas:R]\n"
"         [--target-volume NAME] [--group APP] [--max-rate RATE] [--log-size S]\n"
"         [--compress lz4|zstd|none]\n"
"                                 ship VOL's writes to SITE in order, seconds behind\n"
"  disable VOL                    stop shipping (the target keeps what it has)\n"
"  status [VOL | --group G] [--watch]   state, lag (RPO), throughput, ETA\n"
"  promote VOL | --group G [--force]    failover: the target(s) writable here\n"
"  resync VOL --from SITE         failback: receive what changed back from SITE\n"
"A site is added first: tessera site add (tessera site --help).\n"
"Run 'tessera replication VERB --help' for one of them.\n";

static const char HELP_ENABLE[] =
"Usage: tessera replication enable VOL --to SITE [--target-layout LAYOUT]\n"
"           [--target-volume NAME] [--group APP] [--max-rate RATE]\n"
"           [--log-size SIZE] [--compress lz4|zstd|none]\n"
"Start async geo-replication of VOL to SITE (added with tessera site add).\n"
"The remote cluster creates the target volume with its own layout and\n"
"receives an initial copy of VOL's allocated extents only, while VOL keeps\n"
"serving writes; then every write, in the order VOL acknowledged them.  Local\n"
"writes do not wait for SITE.  The target equals a prefix of VOL's write\n"
"history whenever no region copy is running (crash-consistent).\n"
"\n"
"  --to SITE              the remote site\n"
"  --target-layout L      the target volume's layout there: ec:K+M (e.g. ec:4+2)\n"
"                         or replicas:R (default: the same as VOL's)\n"
"  --target-volume NAME   the target volume's name (default: VOL)\n"
"  --group APP            a consistency group: volumes of one application that\n"
"                         fail over together (promote --group APP)\n"
"  --max-rate RATE        cap the shipping bandwidth, bytes/s with a binary unit,\n"
"                         e.g. 50M (default: no cap)\n"
"  --log-size SIZE        memory for the ordered log of writes not yet ACKed,\n"
"                         e.g. 64M (default 256M); past it writes mark dirty\n"
"                         regions instead, shipped when the link keeps up\n"
"  --compress ALGO        compress each write on the link: lz4 (fast), zstd\n"
"                         (level 1, smaller) or none (default); a write that\n"
"                         does not get smaller goes as it is.  status shows\n"
"                         the bytes before and after (ratio).  The target\n"
"                         site must run a Tessera that knows ALGO\n"
"\n"
"Example:\n"
"  tessera replication enable db --to dr --target-layout ec:4+2 --group shop\n"
"  tessera replication status db --watch\n"
"\n"
"Usual errors: 'no site ...': add it first (tessera site add); the state stays\n"
"'connecting' with a TLS error in status: check the files given to site add\n"
"and the remote tesserad's log, which says why it refused the certificate.\n";

static const char HELP_DISABLE[] =
"Usage: tessera replication disable VOL\n"
"Stop shipping VOL's writes.  The target volume at the remote site is left as\n"
"it is (a prefix of VOL's history if no region copy was running); delete it\n"
"there when it is no longer needed.  Enabling again starts a new initial copy.\n"
"\n"
"Example:\n"
"  tessera replication disable db\n"
"\n"
"Usual errors: 'does not replicate': nothing to stop here (tessera replication\n"
"status lists what does; at the target site, promote or delete the volume).\n";

static const char HELP_STATUS[] =
"Usage: tessera replication status [VOL | --group G] [--watch]\n"
"How the replicated volumes known here are doing (all of them, one, or one\n"
"consistency group).  At the source: the state (connecting, syncing,\n"
"streaming, behind, paused, split), the lag as RPO (age of the oldest write\n"
"the target has not confirmed, and its bytes), the shipping rate, the time to\n"
"catch up, the dirty regions left and a region copy's progress.  At the\n"
"target: receiving, idle or promoted, the sequence applied and whether the\n"
"volume is consistent (a prefix of the source's history).  A source demoted\n"
"by a promote at the target says DEMOTED: it refuses host writes.\n"
"\n"
"  --group G   only the volumes of consistency group G\n"
"  --watch     refresh every second until Ctrl-C (with --json: one JSON\n"
"              object per line)\n"
"\n"
"With --json: for VOL, one object with the fields of the admin API's\n"
"Replication message (volume, role, site, state, lag_sec, lag_bytes,\n"
"dirty_bytes, sync_total_bytes, sync_done_bytes, bytes_shipped,\n"
"region_bytes_shipped, overflows, rate_bps, eta_sec, consistent, demoted,\n"
"log_slab_bytes, log_pool_bytes, ...); otherwise {\"replications\": [...]} of such objects.\n"
"\n"
"Example:\n"
"  tessera replication status\n"
"  tessera replication status db --watch\n"
"  tessera --json replication status db | jq .lag_sec\n"
"\n"
"Usual errors: 'not replicated': no replication of VOL here (at the source,\n"
"tessera replication enable; at the target, it appears with the source's\n"
"first connection).  A source that stays 'connecting' shows why in its last\n"
"error: a TLS refusal is explained in the log of the side that refused.\n";

static const char HELP_PROMOTE[] =
"Usage: tessera replication promote VOL | --group G [--force]\n"
"Failover, run at the target site: end the stream from the source and make\n"
"the target volume writable here, at its newest consistent point (with\n"
"--group: every target volume of the group, at one point of their shared\n"
"order).  When the old source comes back it is refused as stale: it is\n"
"demoted and no longer accepts host writes for the volume.\n"
"\n"
"  --group G   every target volume of consistency group G\n"
"  --force     promote also when the target is not consistent (a region\n"
"              copy was open when the link or the source was lost: the\n"
"              volume is then as the copy left it) or the source still\n"
"              answers\n"
"\n"
"Example:\n"
"  tessera replication promote db\n"
"  tessera replication promote --group shop --force\n"
"\n"
"Usual errors: 'not consistent' (busy): a region copy was open; wait for it\n"
"if the source still ships (replication status), else use --force.\n";

static const char HELP_RESYNC[] =
"Usage: tessera replication resync VOL --from SITE\n"
"Failback, run at the former source after a promote at SITE demoted it: VOL\n"
"becomes the target of SITE's volume and receives only the regions that\n"
"changed on either side since the last common point (a full copy only when\n"
"there is none).  When it is consistent, promote it here to switch roles\n"
"back.\n"
"\n"
"  --from SITE   the site whose promoted volume is now the newest\n"
"\n"
"Example:\n"
"  tessera replication resync db --from dr\n"
"  tessera replication status db --watch\n"
"  tessera replication promote db      # once it is consistent\n"
"\n"
"How: this node needs a site listener (tesserad --site-listen) and SITE must\n"
"ship the volume here: at SITE, tessera site add <this site> ... and\n"
"tessera replication enable VOL --to <this site>.  Before each region is sent\n"
"this site sends a digest of every 64 KiB region; only regions that differ\n"
"are sent (status: region_bytes_shipped, region_bytes_same).  Stop writes at\n"
"SITE before the promote here: what SITE acknowledged after that is lost.\n"
"\n"
"Usual errors: 'not demoted' (invalid): the volume is the primary here;\n"
"'no site listener' (not supported): run it on the node with --site-listen.\n";

/* ---- printers --------------------------------------------------------- */

static int print_repls(const struct cli *cli, const Tessera__Admin__Response *resp,
		       bool one, bool compact)
{
	if (cli->json) {
		if (one && resp->n_replications == 1)
			return cli_print_json(cli_replication_json(resp->replications[0]),
					      compact);
		return cli_print_json(cli_replication_list_json(resp->replications,
								 resp->n_replications), compact);
	}
	if (resp->n_replications == 1) {
		cli_print_replication(resp->replications[0]);
		return 0;
	}
	if (resp->n_replications == 0) {
		printf("no replicated volumes here (tessera replication enable VOL --to SITE)\n");
		return 0;
	}
	cli_print_replications(resp->replications, resp->n_replications);
	return 0;
}

static int print_enabled(const struct cli *cli, const Tessera__Admin__Response *resp,
			 const void *arg)
{
	const char *volume = arg;

	if (cli->json || resp->n_replications != 1)
		return print_repls(cli, resp, true, false);
	printf("replicating '%s' to site %s: the initial copy of its allocated extents runs, "
	       "then every write ships in order\n", volume, resp->replications[0]->site);
	printf("follow it: tessera replication status %s --watch\n", volume);
	return 0;
}

static int print_disabled(const struct cli *cli, const Tessera__Admin__Response *resp,
			  const void *arg)
{
	if (cli->json)
		return cli_print_json(json_pack("{s:s}", "disabled", (const char *)arg), false);
	printf("stopped replicating '%s' (the target volume at the remote site is left as it "
	       "is)\n", (const char *)arg);
	return 0;
}

static int print_promoted(const struct cli *cli, const Tessera__Admin__Response *resp,
			  const void *arg)
{
	if (cli->json)
		return print_repls(cli, resp, arg != NULL, false);
	for (size_t i = 0; i < resp->n_replications; i++) {
		const Tessera__Admin__Replication *r = resp->replications[i];

		printf("promoted '%s': writable here, at seq %" PRIu64 "%s\n", r->volume,
		       r->applied_seq, r->consistent ? " (consistent)" :
		       " (NOT consistent: forced while a region copy was open)");
	}
	if (resp->n_replications == 0)
		printf("promoted\n");
	return 0;
}

static int print_resync(const struct cli *cli, const Tessera__Admin__Response *resp,
			const void *arg)
{
	const char *volume = arg;

	if (cli->json)
		return print_repls(cli, resp, true, false);
	printf("'%s' is now the target of its copy at the remote site: it receives the regions "
	       "changed since the last common point\n", volume);
	printf("follow it: tessera replication status %s --watch; then switch roles back with "
	       "tessera replication promote %s\n", volume, volume);
	return 0;
}

static int print_status(const struct cli *cli, const Tessera__Admin__Response *resp,
			const void *arg)
{
	return print_repls(cli, resp, arg != NULL, false);
}

/* ---- arguments -------------------------------------------------------- */

static int check_site(const char *opt, const char *name)
{
	if (tsr_valid_name(name))
		return 0;
	cli_error("%s %s: not a site name (1 to 63 of A-Z a-z 0-9 . _ -); tessera site list "
		  "shows the sites", opt, name);
	return EXIT_FAIL;
}

static int check_group(const char *name)
{
	if (tsr_valid_name(name))
		return 0;
	cli_error("--group %s: use 1 to 63 of A-Z a-z 0-9 . _ - starting with a letter or digit",
		  name);
	return EXIT_FAIL;
}

/* "50M", "50MiB/s", "1G/s": bytes per second, > 0. */
static int parse_rate(const char *arg, uint64_t *out)
{
	char buf[64];
	size_t n = strlen(arg);

	if (n >= sizeof(buf))
		goto bad;
	memcpy(buf, arg, n + 1);
	if (n > 2 && strcmp(buf + n - 2, "/s") == 0)
		buf[n - 2] = '\0';
	if (tsr_parse_size(buf, out) == 0 && *out > 0)
		return 0;
bad:
	return cli_usage_error("--max-rate %s: give bytes per second with a binary unit, e.g. "
			       "50M (50 MiB/s) or 1G", arg);
}

/* ---- the verbs -------------------------------------------------------- */

static int repl_enable(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__ReplicationEnable en = TESSERA__ADMIN__REPLICATION_ENABLE__INIT;
	const char *volume = NULL, *to = NULL, *layout = NULL, *tvol = NULL, *group = NULL;
	const char *rate = NULL, *log_size = NULL, *compress = NULL;
	const struct cli_opt opts[] = {
		{ "--to", &to, NULL },
		{ "--target-layout", &layout, NULL },
		{ "--target-volume", &tvol, NULL },
		{ "--group", &group, NULL },
		{ "--max-rate", &rate, NULL },
		{ "--log-size", &log_size, NULL },
		{ "--compress", &compress, NULL },
		{ NULL, NULL, NULL },
	};
	uint64_t max_bps = 0, log_max = 0;
	bool help;
	int ret;

	ret = cli_parse(cli, argc, argv, opts, &volume, HELP_ENABLE, "replication enable", &help);
	if (ret || help)
		return ret;
	if (to == NULL)
		return cli_usage_error("replication enable needs --to SITE (tessera site list shows "
				       "the sites; tessera replication enable --help)");
	ret = cli_check_name(volume);
	if (ret == 0)
		ret = check_site("--to", to);
	if (ret == 0 && tvol)
		ret = cli_check_name(tvol);
	if (ret == 0 && group)
		ret = check_group(group);
	if (ret)
		return ret;
	if (layout) {
		struct tsr_site_layout l;

		if (tsr_site_layout_parse(layout, &l))
			return cli_usage_error("--target-layout %s: give ec:K+M (K 1..16, M 1..4, "
					       "e.g. ec:4+2) or replicas:R (R 1..8)", layout);
	}
	if (rate) {
		ret = parse_rate(rate, &max_bps);
		if (ret)
			return ret;
	}
	if (log_size) {
		if (tsr_parse_size(log_size, &log_max) || log_max < TSR_BLOCK_SIZE)
			return cli_usage_error("--log-size %s: give a size of at least 4k with a "
					       "binary unit, e.g. 64M", log_size);
	}
	if (compress) {
		uint8_t algo;

		if (tsr_site_compress_parse(compress, &algo))
			return cli_usage_error("--compress %s: give lz4, zstd or none", compress);
	}
	en.compress = (char *)(compress ? compress : "none");
	en.volume = (char *)volume;
	en.site = (char *)to;
	en.target_layout = (char *)(layout ? layout : "");
	en.target_volume = (char *)(tvol ? tvol : "");
	en.group = (char *)(group ? group : "");
	en.max_bps = max_bps;
	en.log_max_bytes = log_max;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_ENABLE;
	req.replication_enable = &en;
	return cli_run(cli, &req, print_enabled, volume);
}

static int repl_disable(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__ReplicationDisable dis = TESSERA__ADMIN__REPLICATION_DISABLE__INIT;
	const char *volume = NULL;
	bool help;
	int ret;

	ret = cli_parse(cli, argc, argv, NULL, &volume, HELP_DISABLE, "replication disable",
			&help);
	if (ret || help)
		return ret;
	ret = cli_check_name(volume);
	if (ret)
		return ret;
	dis.volume = (char *)volume;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_DISABLE;
	req.replication_disable = &dis;
	return cli_run(cli, &req, print_disabled, volume);
}

/* Sleep ms, cut short by a signal. */
static void nap(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* status --watch: one request a second; a lost connection is retried. */
static int status_watch(const struct cli *cli, Tessera__Admin__Request *req, const char *what)
{
	struct tsr_admin_client *c = NULL;
	bool tty = isatty(STDOUT_FILENO) && !cli->json;
	int ret = 0;

	cli_catch_signals();
	while (!g_cli_interrupted) {
		Tessera__Admin__Response *resp = NULL;
		char why[512] = "", clock[16];
		time_t now = time(NULL);
		struct tm tm;
		int err = 0;

		localtime_r(&now, &tm);
		strftime(clock, sizeof(clock), "%H:%M:%S", &tm);
		if (c == NULL && cli_connect_quiet(cli, &c, why, sizeof(why)))
			err = -ECONNREFUSED;
		if (err == 0) {
			err = cli_call_quiet(cli, c, req, &resp, why, sizeof(why));
			if (err) {
				tsr_admin_close(c);
				c = NULL;
			} else if (resp->error) {
				err = resp->error;
				snprintf(why, sizeof(why), "%s", resp->message[0] ? resp->message :
					 strerror(-err));
			}
		}
		if (err == -ENOENT || err == -EINVAL || err == -EOPNOTSUPP || err == -ENOSYS) {
			/* waiting will not cure these */
			cli_error("%s", why);
			if (resp)
				tessera__admin__response__free_unpacked(resp, NULL);
			ret = EXIT_FAIL;
			break;
		}
		if (tty)
			printf("\033[H\033[2J");
		if (!cli->json)
			printf("%s tessera replication status%s%s (every 1 s, Ctrl-C to stop)\n\n",
			       clock, what[0] ? " " : "", what);
		if (err == 0)
			print_repls(cli, resp, req->replication_status->volume[0] != '\0', true);
		else if (!cli->json)
			printf("(no answer: %s; trying again)\n", why);
		if (!tty && !cli->json)
			printf("\n");
		fflush(stdout);
		if (resp)
			tessera__admin__response__free_unpacked(resp, NULL);
		nap(1000);
	}
	tsr_admin_close(c);
	fflush(stdout);
	return ret;
}

static int repl_status(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__ReplicationStatusGet get = TESSERA__ADMIN__REPLICATION_STATUS_GET__INIT;
	const char *group = NULL, *pos[1] = { NULL };
	bool watch = false, help;
	const struct cli_opt opts[] = {
		{ "--group", &group, NULL },
		{ "--watch", NULL, &watch },
		{ NULL, NULL, NULL },
	};
	char what[160];
	int got, ret;

	ret = cli_parse_args(cli, argc, argv, opts, pos, 1, &got, HELP_STATUS,
			     "replication status", &help);
	if (ret || help)
		return ret;
	if (got && group)
		return cli_usage_error("give VOL or --group G, not both (tessera replication "
				       "status --help)");
	if (got)
		ret = cli_check_name(pos[0]);
	else if (group)
		ret = check_group(group);
	if (ret)
		return ret;
	get.volume = (char *)(got ? pos[0] : "");
	get.group = (char *)(group ? group : "");
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_STATUS;
	req.replication_status = &get;
	snprintf(what, sizeof(what), "%s%s", group ? "--group " : "", got ? pos[0] :
		 group ? group : "");
	if (watch)
		return status_watch(cli, &req, what);
	return cli_run(cli, &req, print_status, got ? pos[0] : NULL);
}

static int repl_promote(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__ReplicationPromote pr = TESSERA__ADMIN__REPLICATION_PROMOTE__INIT;
	const char *group = NULL, *pos[1] = { NULL };
	bool force = false, help;
	const struct cli_opt opts[] = {
		{ "--group", &group, NULL },
		{ "--force", NULL, &force },
		{ NULL, NULL, NULL },
	};
	int got, ret;

	ret = cli_parse_args(cli, argc, argv, opts, pos, 1, &got, HELP_PROMOTE,
			     "replication promote", &help);
	if (ret || help)
		return ret;
	if (got && group)
		return cli_usage_error("give VOL or --group G, not both (tessera replication "
				       "promote --help)");
	if (!got && !group)
		return cli_usage_error("replication promote needs VOL or --group G (tessera "
				       "replication promote --help)");
	ret = got ? cli_check_name(pos[0]) : check_group(group);
	if (ret)
		return ret;
	pr.volume = (char *)(got ? pos[0] : "");
	pr.group = (char *)(group ? group : "");
	pr.force = force;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_PROMOTE;
	req.replication_promote = &pr;
	return cli_run(cli, &req, print_promoted, got ? pos[0] : NULL);
}

static int repl_resync(struct cli *cli, int argc, char **argv)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__ReplicationResync rs = TESSERA__ADMIN__REPLICATION_RESYNC__INIT;
	const char *volume = NULL, *from = NULL;
	const struct cli_opt opts[] = {
		{ "--from", &from, NULL },
		{ NULL, NULL, NULL },
	};
	bool help;
	int ret;

	ret = cli_parse(cli, argc, argv, opts, &volume, HELP_RESYNC, "replication resync", &help);
	if (ret || help)
		return ret;
	if (from == NULL)
		return cli_usage_error("replication resync needs --from SITE, the site that "
				       "promoted the volume (tessera replication resync --help)");
	ret = cli_check_name(volume);
	if (ret == 0)
		ret = check_site("--from", from);
	if (ret)
		return ret;
	rs.volume = (char *)volume;
	rs.from_site = (char *)from;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_RESYNC;
	req.replication_resync = &rs;
	return cli_run(cli, &req, print_resync, volume);
}

int cli_cmd_replication(struct cli *cli, int argc, char **argv)
{
	const char *verb;

	if (argc < 2)
		return cli_usage_error("replication needs a verb: enable, disable, status, promote "
				       "or resync (tessera replication --help)");
	verb = argv[1];
	if (strcmp(verb, "--help") == 0 || strcmp(verb, "-h") == 0 || strcmp(verb, "help") == 0) {
		fputs(HELP_REPL, stdout);
		return 0;
	}
	argc -= 2;
	argv += 2;
	if (strcmp(verb, "enable") == 0)
		return repl_enable(cli, argc, argv);
	if (strcmp(verb, "disable") == 0)
		return repl_disable(cli, argc, argv);
	if (strcmp(verb, "status") == 0)
		return repl_status(cli, argc, argv);
	if (strcmp(verb, "promote") == 0)
		return repl_promote(cli, argc, argv);
	if (strcmp(verb, "resync") == 0)
		return repl_resync(cli, argc, argv);
	return cli_usage_error("unknown replication verb '%s': use enable, disable, status, "
			       "promote or resync (tessera replication --help)", verb);
}
