/*
 * Renderings of the admin API's messages for the tessera CLI: text for
 * people (aligned tables, sizes in binary units, durations) and JSON for
 * scripts (jansson; sizes in bytes, times in unix seconds plus ISO 8601).
 * JSON keys follow the proto field names, so a script can read either.
 * Cluster fields appear only for volumes that have them (a cluster volume);
 * a standalone node's output is unchanged.  Snapshots, clones and diffs:
 * the snapshots table is the same in `volume show` and `snapshot list`; a
 * diff is offset/length pairs in bytes (JSON) or a table with a total (text).
 * Geo-replication: sites as a table; a replicated volume as a detailed view
 * (state, RPO lag, throughput, ETA, sync progress) or one row per volume.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "tessera.h"

/* ---- formatting ------------------------------------------------------- */

const char *cli_fmt_size(uint64_t bytes, char *buf, size_t len)
{
	return tsr_format_size(bytes, buf, len);
}

/*
 * The UTC calendar date and time of t, for 1970 to 9999 (false outside):
 * days to year/month/day by the civil-from-days method (H. Hinnant, "chrono-
 * compatible low-level date algorithms").  Not gmtime_r: glibc's first
 * gmtime_r or strftime loads /etc/localtime (tzset), a file read on every CLI
 * run for a zone these UTC renderings never use.  Outside that range the
 * callers fall back to gmtime_r + strftime, so every output is unchanged.
 */
static bool utc_fields(int64_t t, int *year, int *mon, int *day, int *hour, int *min, int *sec)
{
	int64_t days, z, era, doe, yoe, doy, mp;

	if (t < 0 || t >= INT64_C(253402300800)) /* 10000-01-01T00:00:00Z */
		return false;
	days = t / 86400;
	*hour = (int)(t % 86400 / 3600);
	*min = (int)(t % 3600 / 60);
	*sec = (int)(t % 60);
	z = days + 719468;             /* days since 0000-03-01 */
	era = z / 146097;              /* 400-year eras */
	doe = z - era * 146097;        /* day of the era, 0..146096 */
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100); /* from March 1st */
	mp = (5 * doy + 2) / 153;      /* month from March, 0..11 */
	*day = (int)(doy - (153 * mp + 2) / 5 + 1);
	*mon = (int)(mp < 10 ? mp + 3 : mp - 9);
	*year = (int)(yoe + era * 400 + (*mon <= 2));
	return true;
}

const char *cli_fmt_time(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;
	int y, mo, d, h, mi, s;

	if (t > 0 && utc_fields(t, &y, &mo, &d, &h, &mi, &s))
		snprintf(buf, len, "%04d-%02d-%02d %02d:%02d:%02d UTC", y, mo, d, h, mi, s);
	else if (t <= 0 || gmtime_r(&tt, &tm) == NULL)
		snprintf(buf, len, "-");
	else
		strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
	return buf;
}

const char *cli_fmt_iso(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;
	int y, mo, d, h, mi, s;

	if (utc_fields(t, &y, &mo, &d, &h, &mi, &s))
		snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02dZ", y, mo, d, h, mi, s);
	else if (gmtime_r(&tt, &tm) == NULL)
		snprintf(buf, len, "%" PRId64, t);
	else
		strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return buf;
}

const char *cli_fmt_duration(uint64_t s, char *buf, size_t len)
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

const char *cli_fmt_rate(double bps, char *buf, size_t len)
{
	static const char *const unit[] = { "B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s" };
	unsigned u = 0;

	if (!(bps > 0)) /* also NaN */
		bps = 0;
	while (bps >= 1024 && u < sizeof(unit) / sizeof(unit[0]) - 1) {
		bps /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%.0f %s", bps, unit[u]);
	else
		snprintf(buf, len, "%.1f %s", bps, unit[u]);
	return buf;
}

unsigned cli_percent(uint64_t done, uint64_t total)
{
	unsigned __int128 p; /* done * 100 does not fit 64 bits for large volumes */

	if (total == 0)
		return 100;
	p = (unsigned __int128)done * 100 / total;
	return p > UINT_MAX ? UINT_MAX : (unsigned)p;
}

bool cli_all_in_sync(const Tessera__Admin__Volume *v)
{
	if (v == NULL || v->n_copies == 0)
		return false;
	for (size_t i = 0; i < v->n_copies; i++)
		if (strcmp(v->copies[i]->state, "in-sync") != 0)
			return false;
	return true;
}

bool cli_is_cluster_volume(const Tessera__Admin__Volume *v)
{
	return v->replicas > 0 || v->n_copies > 0;
}

static unsigned copies_in_sync(const Tessera__Admin__Volume *v)
{
	unsigned n = 0;

	for (size_t i = 0; i < v->n_copies; i++)
		n += strcmp(v->copies[i]->state, "in-sync") == 0;
	return n;
}

const char *cli_fmt_layout(const Tessera__Admin__Volume *v, char *buf, size_t len)
{
	/* units are powers of 2 from 4 KiB to 1 MiB: whole KiB or MiB */
	if (v->ec_k && v->stripe_unit >= (1u << 20) && v->stripe_unit % (1u << 20) == 0)
		snprintf(buf, len, "ec %u+%u (%u MiB unit)", v->ec_k, v->ec_m,
			 v->stripe_unit >> 20);
	else if (v->ec_k)
		snprintf(buf, len, "ec %u+%u (%u KiB unit)", v->ec_k, v->ec_m,
			 v->stripe_unit >> 10);
	else if (cli_is_cluster_volume(v))
		snprintf(buf, len, "%u replica%s", v->replicas, v->replicas == 1 ? "" : "s");
	else
		snprintf(buf, len, "1 copy");
	return buf;
}

/* ---- JSON ------------------------------------------------------------- */

int cli_print_json(json_t *j, bool compact)
{
	if (j == NULL) {
		cli_error("internal error: cannot build the JSON output");
		return EXIT_FAIL;
	}
	json_dumpf(j, stdout, (compact ? JSON_COMPACT : JSON_INDENT(2)) | JSON_PRESERVE_ORDER);
	fputc('\n', stdout);
	json_decref(j);
	return 0;
}

static json_t *json_strings(char **v, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static json_t *copy_json(const Tessera__Admin__Copy *c)
{
	return json_pack("{s:s, s:s, s:b, s:I}", "node", c->node, "state", c->state,
			 "connected", (int)c->connected, "dirty_bytes",
			 (json_int_t)c->dirty_bytes);
}

json_t *cli_volume_json(const Tessera__Admin__Volume *v)
{
	char iso[64];
	json_t *j, *copies;

	/* parent_*: null unless a clone (a script tests j["parent_volume"] is None) */
	j = json_pack("{s:s, s:s, s:I, s:I, s:I, s:s?, s:s?, s:I, s:s, s:b, s:o}",
		      "name", v->name, "uuid", v->uuid, "size", (json_int_t)v->size,
		      "allocated", (json_int_t)v->allocated,
		      "exclusive", (json_int_t)v->exclusive,
		      "parent_volume", v->parent_volume[0] ? v->parent_volume : NULL,
		      "parent_snapshot", v->parent_snapshot[0] ? v->parent_snapshot : NULL,
		      "created", (json_int_t)v->created,
		      "created_iso", cli_fmt_iso(v->created, iso, sizeof(iso)),
		      "in_use", (int)v->in_use,
		      "nbd_uris", json_strings(v->nbd_uris, v->n_nbd_uris));
	if (j == NULL || !cli_is_cluster_volume(v))
		return j;
	copies = json_array();
	for (size_t i = 0; i < v->n_copies; i++)
		json_array_append_new(copies, copy_json(v->copies[i]));
	json_object_update_new(j, json_pack("{s:i, s:i, s:s, s:s?, s:I, s:o}",
		"replicas", (int)v->replicas, "min_replicas", (int)v->min_replicas,
		"failure_domain", v->failure_domain,
		"attached_node", v->attached_node[0] ? v->attached_node : NULL,
		"epoch", (json_int_t)v->epoch, "copies", copies));
	{
		char lay[64];

		/* ec_k 0: a mirror of "replicas" copies */
		json_object_update_new(j, json_pack("{s:s, s:i, s:i, s:i}", "layout",
			cli_fmt_layout(v, lay, sizeof(lay)), "ec_k", (int)v->ec_k, "ec_m",
			(int)v->ec_m, "stripe_unit", (int)v->stripe_unit));
		/* bytes; ec: chunk-volume bytes; 0: a node from before the field answered */
		json_object_set_new(j, "region_size", json_integer((json_int_t)v->region_size));
	}
	/* its attach on attached_node still opens the copies (volume status) */
	json_object_set_new(j, "attaching", json_boolean(v->attaching));
	if (v->target_stream) { /* hex, as the stream elsewhere (a JSON integer is signed) */
		char stream[24];

		snprintf(stream, sizeof(stream), "%016" PRIx64, v->target_stream);
		json_object_set_new(j, "target_stream", json_string(stream));
	} else {
		json_object_set_new(j, "target_stream", json_null());
	}
	return j;
}

const char *cli_snapshot_state(const Tessera__Admin__Snapshot *s)
{
	return s->deleting ? "deleting" : "ready";
}

json_t *cli_snapshot_json(const Tessera__Admin__Snapshot *s)
{
	char iso[64];

	return json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:I, s:I, s:I, s:I, s:i, s:o}",
			 "volume", s->volume, "name", s->name, "uuid", s->uuid,
			 "state", cli_snapshot_state(s), "created", (json_int_t)s->created,
			 "created_iso", cli_fmt_iso(s->created, iso, sizeof(iso)),
			 "seq", (json_int_t)s->seq, "size", (json_int_t)s->size,
			 "allocated", (json_int_t)s->allocated,
			 "exclusive", (json_int_t)s->exclusive, "clones", (int)s->clones,
			 "nbd_uris", json_strings(s->nbd_uris, s->n_nbd_uris));
}

/* The snapshots of s[0..n) that are (deleting true) or are not being deleted. */
static json_t *snapshots_json(Tessera__Admin__Snapshot *const *s, size_t n, bool deleting)
{
	json_t *a = json_array();

	for (size_t i = 0; i < n; i++)
		if (s[i]->deleting == deleting)
			json_array_append_new(a, cli_snapshot_json(s[i]));
	return a;
}

/* "snapshots" keeps only the snapshots that exist (scripts read and clone
 * them); those whose delete is pending are under "deleting". */
json_t *cli_snapshot_list_json(const char *volume, Tessera__Admin__Snapshot *const *s,
			       size_t n)
{
	return json_pack("{s:s, s:o, s:o}", "volume", volume, "snapshots",
			 snapshots_json(s, n, false), "deleting", snapshots_json(s, n, true));
}

json_t *cli_volume_detail_json(const Tessera__Admin__Volume *v)
{
	json_t *j = cli_volume_json(v);

	if (j)
		json_object_set_new(j, "snapshots",
				    snapshots_json(v->snapshots, v->n_snapshots, false));
	return j;
}

uint64_t cli_diff_bytes(Tessera__Admin__Extent *const *e, size_t n, uint64_t diff_bytes)
{
	uint64_t sum = 0;

	if (diff_bytes)
		return diff_bytes;
	for (size_t i = 0; i < n; i++)
		sum += e[i]->length;
	return sum;
}

json_t *cli_diff_json(const char *volume, const char *from, const char *to,
		      Tessera__Admin__Extent *const *e, size_t n, uint64_t diff_bytes)
{
	json_t *a = json_array();

	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_pack("{s:I, s:I, s:b}",
						   "offset", (json_int_t)e[i]->offset,
						   "length", (json_int_t)e[i]->length,
						   "zero", (int)e[i]->zero));
	return json_pack("{s:s, s:s, s:s?, s:o, s:I}", "volume", volume, "from", from, "to",
			 to && to[0] ? to : NULL, "extents", a, "changed_bytes",
			 (json_int_t)cli_diff_bytes(e, n, diff_bytes));
}

unsigned cli_fs_used_percent(const Tessera__Admin__DataFs *fs)
{
	uint64_t used = fs->size > fs->free ? fs->size - fs->free : 0;
	unsigned __int128 total = (unsigned __int128)used + fs->avail;

	if (total == 0)
		return 0;
	return (unsigned)(((unsigned __int128)used * 100 + total - 1) / total);
}

const char *cli_fs_warning(const Tessera__Admin__DataFs *fs, char *buf, size_t len)
{
	char avail[32], size[32];
	unsigned pct;

	if (fs == NULL || fs->error[0] || fs->size == 0)
		return NULL;
	pct = cli_fs_used_percent(fs);
	if (fs->avail != 0 && pct <= CLI_FS_WARN_PERCENT)
		return NULL;
	cli_fmt_size(fs->avail, avail, sizeof(avail));
	cli_fmt_size(fs->size, size, sizeof(size));
	if (fs->avail == 0)
		snprintf(buf, len, "data file system FULL (%s available of %s): writes to "
			 "blocks not yet allocated fail (No space left on device); delete volumes "
			 "or snapshots, trim, or grow the file system", avail, size);
	else
		snprintf(buf, len, "data file system %u%% full (%s available of %s): free space "
			 "before it fills (delete volumes or snapshots, trim) or grow the file "
			 "system", pct, avail, size);
	return buf;
}

json_t *cli_data_fs_json(const Tessera__Admin__DataFs *fs)
{
	char warn[512];
	const char *w;

	if (fs == NULL)
		return json_null();
	if (fs->error[0])
		return json_pack("{s:i, s:i, s:i, s:n, s:n, s:s}", "size", 0, "free", 0, "avail", 0,
				 "used_percent", "warning", "error", fs->error);
	w = cli_fs_warning(fs, warn, sizeof(warn));
	return json_pack("{s:I, s:I, s:I, s:i, s:s?, s:n}", "size", (json_int_t)fs->size,
			 "free", (json_int_t)fs->free, "avail", (json_int_t)fs->avail,
			 "used_percent", (int)cli_fs_used_percent(fs), "warning", w, "error");
}

json_t *cli_status_json(const Tessera__Admin__Status *s)
{
	json_t *j;

	j = json_pack("{s:s, s:i, s:s, s:s?, s:s, s:i, s:o, s:o, s:I, s:I, s:i, s:I, s:I, s:I}",
		      "version", s->version, "pid", (int)s->pid, "data_dir", s->data_dir,
		      "device", s->device[0] ? s->device : NULL,
		      "io_backend", s->io_backend, "workers", (int)s->workers,
		      "nbd_listeners", json_strings(s->nbd_listeners, s->n_nbd_listeners),
		      "admin_listeners", json_strings(s->admin_listeners, s->n_admin_listeners),
		      "nbd_connections_open", (json_int_t)s->nbd_connections_open,
		      "nbd_connections_total", (json_int_t)s->nbd_connections_total,
		      "volumes", (int)s->volumes, "uptime_sec", (json_int_t)s->uptime_sec,
		      "started", (json_int_t)s->started, "allocated", (json_int_t)s->allocated);
	if (j && (s->node_id[0] || s->cluster_address[0]))
		json_object_update_new(j, json_pack("{s:s, s:s, s:I}", "node_id", s->node_id,
						    "cluster_address", s->cluster_address,
						    "leftovers_removed",
						    (json_int_t)s->leftovers_removed));
	if (j)
		json_object_set_new(j, "data_fs", cli_data_fs_json(s->data_fs));
	return j;
}

/* A counter (uint64) as JSON: an integer up to INT64_MAX, above it (jansson's
 * integers are signed: it printed negative, review F8) a number that keeps
 * its magnitude (a double: the last digits rounded). */
static json_t *json_counter(uint64_t v)
{
	return v <= INT64_MAX ? json_integer((json_int_t)v) : json_real((double)v);
}

/* Flat, with the proto's field names (scripts read j["resync_bytes_copied"]). */
/* Why copy c's counters are not in the totals (status text and JSON). */
static const char *copy_not_counted_why(const Tessera__Admin__Copy *c)
{
	if (c->coordinator_has[0] != '\0')
		return "a new copy the coordinator has not taken yet (it still has the old one "
		       "in its place: the replace is under way)";
	return c->counters_unsupported ? "its node's build does not serve peer STATS"
				       : "no answer from its node yet";
}

/* volume status --json: the counters of every copy (see the caller). */
static void status_counters_json(json_t *j, const Tessera__Admin__VolumeStatus *s)
{
	const Tessera__Admin__Volume *v = s->volume;
	json_t *copies = j ? json_object_get(json_object_get(j, "volume"), "copies") : NULL;
	json_t *missing = json_array();
	/* no live figures without a running coordinator (the record's view) */
	const char *no_coordinator =
	    v == NULL || v->attached_node[0] == '\0' ? "no coordinator (the volume is detached)"
	    : v->attaching ? "no coordinator yet (its attach is opening the copies)"
			   : NULL;

	json_object_set_new(j, "crc_errors_coordinator", json_counter(s->crc_errors));
	json_object_set_new(j, "crc_errors",
			    json_counter(s->counters_per_copy ? s->crc_errors_all : s->crc_errors));
	json_object_set_new(j, "cached_reads_all",
			    s->counters_per_copy ? json_counter(s->cached_reads_all) : json_null());
	json_object_set_new(j, "copies_counted", json_integer((json_int_t)s->copies_counted));
	for (size_t i = 0; v != NULL && i < v->n_copies; i++) {
		const Tessera__Admin__Copy *c = v->copies[i];
		json_t *cj = json_array_get(copies, i);
		bool known = s->counters_per_copy && c->counters_known;

		if (cj != NULL) {
			json_object_set_new(cj, "crc_errors",
					    known ? json_counter(c->crc_errors) : json_null());
			json_object_set_new(cj, "cached_reads",
					    known ? json_counter(c->cached_reads) : json_null());
		}
		if (!known)
			json_array_append_new(
			    missing, json_pack("{s:s, s:s}", "node", c->node, "why",
					       s->counters_per_copy ? copy_not_counted_why(c)
					       : no_coordinator     ? no_coordinator
								    : "an earlier tesserad "
								      "coordinates the volume"));
	}
	json_object_set_new(j, "copies_not_counted", missing);
}

json_t *cli_volume_status_json(const Tessera__Admin__VolumeStatus *s)
{
	json_t *vol = s->volume ? cli_volume_json(s->volume) : json_null();
	json_t *j;

	j = json_pack("{s:o, s:b, s:b, s:i, s:b,"
			 " s:b, s:I, s:I, s:f, s:I, s:I, s:I,"
			 " s:b, s:b, s:I, s:I, s:I, s:I, s:I,"
			 " s:I, s:I, s:I}",
			 "volume", vol, "ready", (int)s->ready, "fenced", (int)s->fenced,
			 "in_sync", (int)s->in_sync,
			 "all_in_sync", (int)cli_all_in_sync(s->volume),
			 "resync_running", (int)s->resync_running,
			 "resync_total_bytes", (json_int_t)s->resync_total_bytes,
			 "resync_done_bytes", (json_int_t)s->resync_done_bytes,
			 "resync_rate_bps", s->resync_rate_bps,
			 "resync_eta_sec", (json_int_t)s->resync_eta_sec,
			 "resync_bytes_copied", (json_int_t)s->resync_bytes_copied,
			 "resync_regions_copied", (json_int_t)s->resync_regions_copied,
			 "scrub_running", (int)s->scrub_running, "scrub_done", (int)s->scrub_done,
			 "scrub_total_bytes", (json_int_t)s->scrub_total_bytes,
			 "scrub_done_bytes", (json_int_t)s->scrub_done_bytes,
			 "scrub_mismatches", (json_int_t)s->scrub_mismatches,
			 "scrub_repaired", (json_int_t)s->scrub_repaired,
			 "scrub_unrepaired", (json_int_t)s->scrub_unrepaired,
			 "writes", (json_int_t)s->writes, "reads", (json_int_t)s->reads,
			 "copy_failures", (json_int_t)s->copy_failures);
	/* its attach still opens the copies: no coordinator, no live figures
	 * (volume.attaching too) */
	if (j)
		json_object_set_new(j, "attaching",
				    json_boolean(s->volume && s->volume->attaching));
	/* reads of the coordinator's own copies through its page cache */
	if (j)
		json_object_set_new(j, "cached_reads", json_counter(s->cached_reads));
	/* blocks that failed their CRC on read: crc_errors over every copy
	 * counted (copies_not_counted names the others), each copy's in
	 * volume.copies[] (null: not counted); an earlier tesserad fills only
	 * the coordinator's */
	if (j)
		status_counters_json(j, s);
	/* erasure coding (0 for a mirror) */
	if (j)
		json_object_update_new(j, json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}",
			"stripes_total", (json_int_t)s->stripes_total,
			"stripes_degraded", (json_int_t)s->stripes_degraded,
			"stripes_rebuilding", (json_int_t)s->stripes_rebuilding,
			"degraded_reads", (json_int_t)s->degraded_reads,
			"txn_rolled_forward", (json_int_t)s->txn_rolled_forward,
			"txn_rolled_back", (json_int_t)s->txn_rolled_back));
	if (j)
		json_object_set_new(j, "stripes_unrebuilt",
				    json_integer((json_int_t)s->stripes_unrebuilt));
	return j;
}

json_t *cli_node_json(const Tessera__Admin__Node *n)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:b, s:b, s:I, s:I, s:I, s:I, s:i, s:i, s:o, s:o}",
			 "id", n->id, "address", n->address, "zone", n->zone, "site", n->site,
			 "alive", (int)n->alive, "meta", (int)n->meta,
			 "capacity", (json_int_t)n->capacity,
			 "provisioned", (json_int_t)n->provisioned,
			 "allocated", (json_int_t)n->allocated,
			 "leftovers_removed", (json_int_t)n->leftovers_removed,
			 "copies", (int)n->copies,
			 "attached", (int)n->attached,
			 "nbd_listeners", json_strings(n->nbd_listeners, n->n_nbd_listeners),
			 "data_fs", cli_data_fs_json(n->data_fs));
}

/* The sum of the known data file systems of nodes[0..n); *known: how many. */
static void fs_sum(Tessera__Admin__Node *const *nodes, size_t n, Tessera__Admin__DataFs *sum,
		   size_t *known)
{
	*known = 0;
	for (size_t i = 0; i < n; i++) {
		const Tessera__Admin__DataFs *fs = nodes[i]->data_fs;

		if (fs == NULL || fs->error[0])
			continue;
		(*known)++;
		sum->size += fs->size;
		sum->free += fs->free;
		sum->avail += fs->avail;
	}
}

json_t *cli_cluster_json(const Tessera__Admin__ClusterStatus *s,
			 Tessera__Admin__Node *const *nodes, size_t n)
{
	Tessera__Admin__DataFs sum = TESSERA__ADMIN__DATA_FS__INIT;
	size_t known;
	json_t *j = json_pack("{s:s, s:s, s:I, s:i, s:i, s:i, s:i, s:I, s:I}",
			      "meta_backend", s->meta_backend, "meta_node", s->meta_node,
			      "meta_revision", (json_int_t)s->meta_revision, "nodes", (int)s->nodes,
			      "nodes_alive", (int)s->nodes_alive, "volumes", (int)s->volumes,
			      "volumes_degraded", (int)s->volumes_degraded,
			      "capacity", (json_int_t)s->capacity,
			      "provisioned", (json_int_t)s->provisioned);

	fs_sum(nodes, n, &sum, &known);
	if (j)
		json_object_set_new(j, "data_fs",
				    json_pack("{s:I, s:I, s:I, s:i, s:i, s:i}", "size",
					      (json_int_t)sum.size, "free", (json_int_t)sum.free,
					      "avail", (json_int_t)sum.avail, "used_percent",
					      (int)cli_fs_used_percent(&sum), "nodes_known",
					      (int)known, "nodes", (int)n));
	return j;
}

/* ---- text ------------------------------------------------------------- */

static int max_width(int w, const char *s)
{
	int n = (int)strlen(s);

	return n > w ? n : w;
}

/* The copies as a table; status adds the columns only a status reply fills in. */
static void print_copies(const Tessera__Admin__Volume *v, const char *indent, bool status)
{
	int w = 4;
	char dirty[32];

	for (size_t i = 0; i < v->n_copies; i++)
		w = max_width(w, v->copies[i]->node);
	if (status)
		printf("%s%-*s  %-11s  %-9s  %s\n", indent, w, "NODE", "STATE", "CONNECTED",
		       "DIRTY");
	else
		printf("%s%-*s  %s\n", indent, w, "NODE", "STATE");
	for (size_t i = 0; i < v->n_copies; i++) {
		const Tessera__Admin__Copy *c = v->copies[i];
		bool coord = v->attached_node[0] && strcmp(c->node, v->attached_node) == 0;

		if (status)
			printf("%s%-*s  %-11s  %-9s  %s%s\n", indent, w, c->node, c->state,
			       c->connected ? "yes" : "no",
			       cli_fmt_size(c->dirty_bytes, dirty, sizeof(dirty)),
			       coord ? "  (coordinator)" : "");
		else
			printf("%s%-*s  %s%s\n", indent, w, c->node, c->state,
			       coord ? "  (coordinator)" : "");
	}
}

/* volume status: CRC errors over every copy counted, each copy's counters,
 * the copies not counted and why. */
static void print_copy_counters(const Tessera__Admin__VolumeStatus *s)
{
	const Tessera__Admin__Volume *v = s->volume;
	size_t n = v ? v->n_copies : 0;

	if (!s->counters_per_copy) {
		printf("crc errors: %" PRIu64 " on the coordinator's copies (an earlier tesserad: "
		       "other copies not counted)\n",
		       s->crc_errors);
		return;
	}
	if (s->crc_errors_all == 0 && s->copies_counted == n) { /* the usual case: one line */
		printf("crc errors: 0 on all %zu copies\n", n);
		return;
	}
	printf("crc errors: %" PRIu64 " on %s%u of %zu copies (%" PRIu64 " on the coordinator's)\n",
	       s->crc_errors_all, s->copies_counted == n ? "all " : "", s->copies_counted, n,
	       s->crc_errors);
	for (size_t i = 0; i < n; i++) {
		const Tessera__Admin__Copy *c = v->copies[i];

		if (c->counters_known)
			printf("            %s: %" PRIu64 " CRC errors, %" PRIu64 " cached reads\n",
			       c->node, c->crc_errors, c->cached_reads);
		else
			printf("            %s: not counted (%s)\n", c->node,
			       copy_not_counted_why(c));
	}
}

void cli_print_copies(const Tessera__Admin__Volume *v, const char *indent)
{
	print_copies(v, indent, false);
}

/* "3 (writes need 2 in sync), failure domain zone" */
static void print_replication(const Tessera__Admin__Volume *v)
{
	char lay[64];

	if (v->ec_k)
		printf("layout:     %s: %u data + %u parity chunks per stripe on %zu nodes, "
		       "survives %u lost (writes need %u in sync), failure domain %s\n",
		       cli_fmt_layout(v, lay, sizeof(lay)), v->ec_k, v->ec_m, v->n_copies, v->ec_m,
		       v->min_replicas, v->failure_domain[0] ? v->failure_domain : "node");
	else
		printf("layout:     %s (writes need %u in sync), failure domain %s\n",
		       cli_fmt_layout(v, lay, sizeof(lay)), v->min_replicas,
		       v->failure_domain[0] ? v->failure_domain : "node");
	if (v->region_size) { /* 0: a node from before the field answered */
		/* a power of 2 from 64 KiB to 2 GiB: whole KiB, MiB or GiB */
		unsigned sh = v->region_size >= (1u << 30) ? 30 : v->region_size >= (1u << 20) ? 20 : 10;

		printf("region:     %u %s (a copy away resyncs whole regions of it%s)\n",
		       v->region_size >> sh, sh == 30 ? "GiB" : sh == 20 ? "MiB" : "KiB",
		       v->ec_k ? "; bytes of each chunk copy" : "");
	}
	if (v->target_stream)
		printf("dr target:  of DR replication stream %016" PRIx64 " (created for it, or "
		       "taken back for it at a failback; tessera replication status says whether "
		       "it receives it now)\n", v->target_stream);
	if (v->attached_node[0] && v->attaching)
		printf("attached:   being attached on node %s, epoch %" PRIu64 " (its copies are "
		       "being opened)\n", v->attached_node, v->epoch);
	else if (v->attached_node[0])
		printf("attached:   node %s, epoch %" PRIu64 "\n", v->attached_node, v->epoch);
	else
		printf("attached:   no (tessera volume attach %s --node ID exports it)\n",
		       v->name);
}

void cli_print_volume(const Tessera__Admin__Volume *v)
{
	char size[32], alloc[32], excl[32], created[64];

	printf("name:       %s\n", v->name);
	printf("uuid:       %s\n", v->uuid);
	printf("size:       %s (%" PRIu64 " bytes) provisioned\n",
	       cli_fmt_size(v->size, size, sizeof(size)), v->size);
	printf("allocated:  %s on disk\n", cli_fmt_size(v->allocated, alloc, sizeof(alloc)));
	printf("exclusive:  %s (blocks no snapshot or clone shares)\n",
	       cli_fmt_size(v->exclusive, excl, sizeof(excl)));
	if (v->parent_volume[0])
		printf("parent:     %s%s%s (a clone: it shares the blocks it has not written)\n",
		       v->parent_volume, v->parent_snapshot[0] ? "@" : "", v->parent_snapshot);
	printf("created:    %s\n", cli_fmt_time(v->created, created, sizeof(created)));
	printf("in use:     %s\n", v->in_use ? "yes (an NBD client has it open)" : "no");
	if (cli_is_cluster_volume(v)) {
		print_replication(v);
		if (v->n_copies) {
			printf("copies:     %u of %zu in sync\n", copies_in_sync(v), v->n_copies);
			print_copies(v, "  ", false);
		}
	}
	for (size_t i = 0; i < v->n_nbd_uris; i++)
		printf("%s%s\n", i ? "            " : "nbd:        ", v->nbd_uris[i]);
	if (v->n_snapshots == 0) {
		printf("snapshots:  none (tessera snapshot create %s NAME)\n", v->name);
		return;
	}
	printf("snapshots:  %zu, oldest first\n", v->n_snapshots);
	cli_print_snapshots(stdout, v->snapshots, v->n_snapshots, "  ");
}

void cli_print_snapshots(FILE *out, Tessera__Admin__Snapshot *const *s, size_t n,
			 const char *indent)
{
	int w = 4;
	size_t i;

	for (i = 0; i < n; i++)
		w = max_width(w, s[i]->name);
	fprintf(out, "%s%-*s  %-8s  %-23s  %10s  %10s  %6s\n", indent, w, "NAME", "STATE",
		"CREATED", "ALLOCATED", "EXCLUSIVE", "CLONES");
	for (i = 0; i < n; i++) {
		char created[64], alloc[32], excl[32];

		fprintf(out, "%s%-*s  %-8s  %-23s  %10s  %10s  %6u\n", indent, w, s[i]->name,
			cli_snapshot_state(s[i]), cli_fmt_time(s[i]->created, created, sizeof(created)),
			cli_fmt_size(s[i]->allocated, alloc, sizeof(alloc)),
			cli_fmt_size(s[i]->exclusive, excl, sizeof(excl)), s[i]->clones);
	}
}

void cli_print_snapshot(FILE *out, const Tessera__Admin__Snapshot *s)
{
	char size[32], alloc[32], excl[32], created[64];

	fprintf(out, "snapshot:   %s@%s\n", s->volume, s->name);
	fprintf(out, "uuid:       %s\n", s->uuid);
	fprintf(out, "created:    %s (cut %" PRIu64 " of the volume)\n",
		cli_fmt_time(s->created, created, sizeof(created)), s->seq);
	fprintf(out, "size:       %s (%" PRIu64 " bytes), the volume's at the cut\n",
		cli_fmt_size(s->size, size, sizeof(size)), s->size);
	fprintf(out, "allocated:  %s held by this snapshot\n",
		cli_fmt_size(s->allocated, alloc, sizeof(alloc)));
	fprintf(out, "exclusive:  %s (deleting it frees this)\n",
		cli_fmt_size(s->exclusive, excl, sizeof(excl)));
	fprintf(out, "clones:     %u%s\n", s->clones,
		s->clones ? " (they keep its blocks after it is deleted)" : "");
	for (size_t i = 0; i < s->n_nbd_uris; i++)
		fprintf(out, "%s%s\n", i ? "            " : "nbd (ro):   ", s->nbd_uris[i]);
}

void cli_print_diff(FILE *out, const char *volume, const char *from, const char *to,
		    Tessera__Admin__Extent *const *e, size_t n, uint64_t diff_bytes)
{
	uint64_t total = cli_diff_bytes(e, n, diff_bytes);
	char size[32], a[32];
	int wo = 6, wl = 6;
	size_t i;

	/* widths from the largest numbers, so the columns line up for any volume */
	for (i = 0; i < n; i++) {
		wo = max_width(wo, (snprintf(a, sizeof(a), "%" PRIu64, e[i]->offset), a));
		wl = max_width(wl, (snprintf(a, sizeof(a), "%" PRIu64, e[i]->length), a));
	}
	if (n) {
		fprintf(out, "%*s  %*s  %10s  %s\n", wo, "OFFSET", wl, "LENGTH", "SIZE", "ZERO");
		for (i = 0; i < n; i++)
			fprintf(out, "%*" PRIu64 "  %*" PRIu64 "  %10s  %s\n", wo, e[i]->offset, wl,
				e[i]->length, cli_fmt_size(e[i]->length, size, sizeof(size)),
				e[i]->zero ? "yes" : "no");
	}
	fprintf(out, "%s@%s -> %s%s%s: %zu extent%s, %s (%" PRIu64 " bytes) changed\n", volume,
		from, to && to[0] ? volume : "", to && to[0] ? "@" : "",
		to && to[0] ? to : "head (current content)", n, n == 1 ? "" : "s",
		cli_fmt_size(total, size, sizeof(size)), total);
}

/* volume list's ATTACHED: "-", the node, or "n1 (attaching)" while its
 * attach opens the copies (review F9). */
static const char *fmt_attached(const Tessera__Admin__Volume *v, char *buf, size_t len)
{
	if (v->attached_node[0] == '\0')
		return "-";
	snprintf(buf, len, "%s%s", v->attached_node, v->attaching ? " (attaching)" : "");
	return buf;
}

void cli_print_volume_list(Tessera__Admin__Volume *const *vols, size_t n)
{
	bool cluster = false;
	int w = 4, wa = 8, wl = 6;
	size_t i;

	for (i = 0; i < n; i++) {
		char att[96];

		w = max_width(w, vols[i]->name);
		wa = max_width(wa, fmt_attached(vols[i], att, sizeof(att)));
		cluster |= cli_is_cluster_volume(vols[i]);
	}
	printf("%-*s  %10s  %10s", w, "NAME", "SIZE", "ALLOCATED");
	for (i = 0; cluster && i < n; i++) {
		char lay[64];

		wl = max_width(wl, cli_fmt_layout(vols[i], lay, sizeof(lay)));
	}
	if (cluster)
		printf("  %-*s  %-7s  %-*s", wl, "LAYOUT", "IN SYNC", wa, "ATTACHED");
	printf("  %-23s  %s\n", "CREATED", "IN USE");
	for (i = 0; i < n; i++) {
		const Tessera__Admin__Volume *v = vols[i];
		char size[32], alloc[32], created[64], sync[32], lay[64], att[96];

		printf("%-*s  %10s  %10s", w, v->name, cli_fmt_size(v->size, size, sizeof(size)),
		       cli_fmt_size(v->allocated, alloc, sizeof(alloc)));
		if (cluster) {
			if (cli_is_cluster_volume(v))
				snprintf(sync, sizeof(sync), "%u/%zu", copies_in_sync(v),
					 v->n_copies);
			else
				snprintf(sync, sizeof(sync), "-");
			printf("  %-*s  %-7s  %-*s", wl,
			       cli_is_cluster_volume(v) ? cli_fmt_layout(v, lay, sizeof(lay)) : "-",
			       sync, wa, fmt_attached(v, att, sizeof(att)));
		}
		printf("  %-23s  %s\n", cli_fmt_time(v->created, created, sizeof(created)),
		       v->in_use ? "yes" : "no");
	}
}

void cli_print_status(const Tessera__Admin__Status *s)
{
	char up[64], started[64], alloc[32];

	printf("tesserad:     %s, pid %d\n", s->version, (int)s->pid);
	if (s->node_id[0])
		printf("node:         %s%s%s\n", s->node_id,
		       s->cluster_address[0] ? ", cluster address " : "", s->cluster_address);
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
	printf("allocated:    %s on disk (all the volumes' files: heads, snapshots, metadata)\n",
	       cli_fmt_size(s->allocated, alloc, sizeof(alloc)));
	printf("uptime:       %s (since %s)\n", cli_fmt_duration(s->uptime_sec, up, sizeof(up)),
	       cli_fmt_time(s->started, started, sizeof(started)));
	if (s->data_fs) {
		const Tessera__Admin__DataFs *fs = s->data_fs;
		char size[32], avail[32], warn[512];

		if (fs->error[0])
			printf("data fs:      unknown (%s)\n", fs->error);
		else
			printf("data fs:      %s, %s available (%u%% used)\n",
			       cli_fmt_size(fs->size, size, sizeof(size)),
			       cli_fmt_size(fs->avail, avail, sizeof(avail)), cli_fs_used_percent(fs));
		if (cli_fs_warning(fs, warn, sizeof(warn)))
			printf("WARNING: %s\n", warn);
	}
}

void cli_print_volume_status(const Tessera__Admin__VolumeStatus *s)
{
	const Tessera__Admin__Volume *v = s->volume;
	char a[32], b[32], c[32], d[64];

	if (v) {
		printf("volume:     %s, %s, uuid %s\n", v->name, cli_fmt_size(v->size, a, sizeof(a)),
		       v->uuid);
		print_replication(v);
	}
	if (v && v->attached_node[0] && v->attaching) {
		/* the record's view: the coordinator is not running yet */
		printf("state:      attaching on node %s (its copies are being opened: up to the "
		       "peer timeout for a node that does not answer; reads and writes once the "
		       "attach answers), %u of %zu copies in sync when it began\n",
		       v->attached_node, s->in_sync, v->n_copies);
		if (v->n_copies)
			print_copies(v, "  ", false);
		return;
	}
	printf("state:      %s, %u of %zu copies in sync\n",
	       v && v->attached_node[0] == '\0' ? "detached (no coordinator: nothing reads or writes)" :
	       s->fenced ? "FENCED (a newer epoch took over: this coordinator no longer writes)" :
	       s->ready ? "ready (serving reads and writes)" :
	       "not ready (writes wait: too few copies in sync)",
	       s->in_sync, v ? v->n_copies : (size_t)0);
	if (v && v->attached_node[0] == '\0') {
		/* no coordinator: the metadata store's view, no live figures */
		if (v->n_copies)
			print_copies(v, "  ", false);
		return;
	}
	if (v && v->n_copies)
		print_copies(v, "  ", true);

	if (s->resync_running) {
		printf("resync:     running, %s of %s (%u%%), %s, ETA %s\n",
		       cli_fmt_size(s->resync_done_bytes, a, sizeof(a)),
		       cli_fmt_size(s->resync_total_bytes, b, sizeof(b)),
		       cli_percent(s->resync_done_bytes, s->resync_total_bytes),
		       cli_fmt_rate(s->resync_rate_bps, c, sizeof(c)),
		       s->resync_rate_bps > 0 ? cli_fmt_duration(s->resync_eta_sec, d, sizeof(d)) :
		       "unknown");
	} else {
		printf("resync:     idle\n");
	}
	printf("            %s copied in %" PRIu64 " regions since attach\n",
	       cli_fmt_size(s->resync_bytes_copied, a, sizeof(a)), s->resync_regions_copied);

	if (s->scrub_running)
		printf("scrub:      running, %s of %s (%u%%): %" PRIu64 " mismatches, %" PRIu64
		       " repaired, %" PRIu64 " unrepaired so far\n",
		       cli_fmt_size(s->scrub_done_bytes, a, sizeof(a)),
		       cli_fmt_size(s->scrub_total_bytes, b, sizeof(b)),
		       cli_percent(s->scrub_done_bytes, s->scrub_total_bytes),
		       s->scrub_mismatches, s->scrub_repaired, s->scrub_unrepaired);
	else if (s->scrub_done)
		printf("scrub:      last one done, %s compared: %" PRIu64 " mismatches, %" PRIu64
		       " repaired, %" PRIu64 " unrepaired\n",
		       cli_fmt_size(s->scrub_total_bytes, a, sizeof(a)), s->scrub_mismatches,
		       s->scrub_repaired, s->scrub_unrepaired);
	else
		printf("scrub:      none since attach (tessera volume scrub %s)\n",
		       v ? v->name : "NAME");
	printf("counters:   %" PRIu64 " writes, %" PRIu64 " reads (%" PRIu64 " through the "
	       "coordinator's page cache), %" PRIu64 " copy failures\n",
	       s->writes, s->reads, s->cached_reads, s->copy_failures);
	print_copy_counters(s);
	if (v && v->ec_k) {
		printf("stripes:    %" PRIu64 " total, %" PRIu64 " degraded%s, %" PRIu64
		       " rebuilding", s->stripes_total, s->stripes_degraded,
		       s->stripes_degraded ? " (a chunk's copy not in sync: its reads are decoded)" :
		       "", s->stripes_rebuilding);
		if (s->stripes_rebuilding && s->resync_total_bytes)
			printf(" (%u%% done)",
			       cli_percent(s->resync_done_bytes, s->resync_total_bytes));
		printf("\n");
		if (s->stripes_unrebuilt)
			printf("            %" PRIu64 " stripes could not be rebuilt (fewer than %u "
			       "other chunks read: a CRC error or a copy away; their blocks read as "
			       "errors): rewrite those bytes (the coordinator's log names the "
			       "stripes and offsets) or bring back the copies away; retried every "
			       "minute at most\n", s->stripes_unrebuilt, v->ec_k);
		printf("            %" PRIu64 " degraded reads (decoded from %u chunks) since "
		       "attach\n", s->degraded_reads, v->ec_k);
		printf("recovery:   %" PRIu64 " partial-stripe writes rolled forward, %" PRIu64
		       " rolled back at attach\n", s->txn_rolled_forward, s->txn_rolled_back);
	}
}

/* A WARNING line per node whose data file system is nearly full or full,
 * a line per alive node whose figures are unknown. */
static void print_fs_warnings(Tessera__Admin__Node *const *nodes, size_t n)
{
	char warn[512];

	for (size_t i = 0; i < n; i++) {
		const Tessera__Admin__DataFs *fs = nodes[i]->data_fs;

		if (fs && fs->error[0] && nodes[i]->alive)
			printf("node %s: data file system unknown: %s\n", nodes[i]->id, fs->error);
		if (cli_fs_warning(fs, warn, sizeof(warn)))
			printf("WARNING: node %s: %s\n", nodes[i]->id, warn);
	}
}

void cli_print_nodes(Tessera__Admin__Node *const *nodes, size_t n)
{
	int wi = 2, wa = 7, wz = 4, ws = 4;
	size_t i;

	for (i = 0; i < n; i++) {
		wi = max_width(wi, nodes[i]->id);
		wa = max_width(wa, nodes[i]->address);
		wz = max_width(wz, nodes[i]->zone);
		ws = max_width(ws, nodes[i]->site);
	}
	printf("%-*s  %-*s  %-*s  %-*s  %-5s  %-4s  %10s  %11s  %10s  %6s  %8s  %10s  %10s  %6s\n",
	       wi, "ID", wa, "ADDRESS", wz, "ZONE", ws, "SITE", "ALIVE", "META", "CAPACITY",
	       "PROVISIONED", "ALLOCATED", "COPIES", "ATTACHED", "FS SIZE", "FS AVAIL", "FS USE");
	for (i = 0; i < n; i++) {
		const Tessera__Admin__Node *nd = nodes[i];
		const Tessera__Admin__DataFs *fs = nd->data_fs;
		bool known = fs && !fs->error[0];
		char cap[32], prov[32], alloc[32], fsize[32], favail[32], fuse[16];

		snprintf(fuse, sizeof(fuse), "%u%%", known ? cli_fs_used_percent(fs) : 0);
		printf("%-*s  %-*s  %-*s  %-*s  %-5s  %-4s  %10s  %11s  %10s  %6u  %8u  %10s  %10s  "
		       "%6s\n", wi, nd->id,
		       wa, nd->address, wz, nd->zone[0] ? nd->zone : "-", ws,
		       nd->site[0] ? nd->site : "-", nd->alive ? "yes" : "NO",
		       nd->meta ? "yes" : "-", cli_fmt_size(nd->capacity, cap, sizeof(cap)),
		       cli_fmt_size(nd->provisioned, prov, sizeof(prov)),
		       known ? cli_fmt_size(nd->allocated, alloc, sizeof(alloc)) : "-", nd->copies,
		       nd->attached, known ? cli_fmt_size(fs->size, fsize, sizeof(fsize)) : "-",
		       known ? cli_fmt_size(fs->avail, favail, sizeof(favail)) : "-",
		       known ? fuse : "-");
	}
	print_fs_warnings(nodes, n);
}

void cli_print_cluster(const Tessera__Admin__ClusterStatus *s,
		       Tessera__Admin__Node *const *nodes, size_t n)
{
	char cap[32], prov[32];

	printf("metadata:   %s on node %s, revision %" PRIu64 "\n",
	       s->meta_backend[0] ? s->meta_backend : "?", s->meta_node[0] ? s->meta_node : "?",
	       s->meta_revision);
	printf("nodes:      %u, %u alive%s\n", s->nodes, s->nodes_alive,
	       s->nodes_alive < s->nodes ? " (tessera node list shows which are not)" : "");
	printf("volumes:    %u, %u degraded%s\n", s->volumes, s->volumes_degraded,
	       s->volumes_degraded ? " (a copy not in sync: tessera volume status NAME)" : "");
	printf("capacity:   %s, %s provisioned (%u%%)\n",
	       cli_fmt_size(s->capacity, cap, sizeof(cap)),
	       cli_fmt_size(s->provisioned, prov, sizeof(prov)),
	       s->capacity ? cli_percent(s->provisioned, s->capacity) : 0);
	if (n) {
		Tessera__Admin__DataFs sum = TESSERA__ADMIN__DATA_FS__INIT;
		char size[32], avail[32];
		size_t known;

		fs_sum(nodes, n, &sum, &known);
		printf("data fs:    %s, %s available (%u%% used) on %zu of %zu nodes%s\n",
		       cli_fmt_size(sum.size, size, sizeof(size)),
		       cli_fmt_size(sum.avail, avail, sizeof(avail)), cli_fs_used_percent(&sum),
		       known, n, known < n ? " (the nodes below say why)" : "");
	}
}

/* ---- geo-replication: sites and replicated volumes -------------------- */

json_t *cli_site_json(const Tessera__Admin__Site *s)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i}", "name", s->name,
			 "address", s->address, "ca", s->ca, "cert", s->cert, "key", s->key,
			 "peer_name", s->peer_name, "volumes", (int)s->volumes);
}

/* Flat, every field of the proto's Replication under its own name; stream
 * as 16 hex digits. */
json_t *cli_replication_json(const Tessera__Admin__Replication *r)
{
	char stream[24];
	json_t *j;

	/* a random 64-bit id: hex, as in the logs (a JSON integer would be signed) */
	snprintf(stream, sizeof(stream), "%016" PRIx64, r->stream);
	j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I}",
		      "volume", r->volume, "role", r->role, "site", r->site, "state", r->state,
		      "target_volume", r->target_volume, "target_layout", r->target_layout,
		      "group", r->group, "stream", stream,
		      "epoch", (json_int_t)r->epoch, "acked_seq", (json_int_t)r->acked_seq,
		      "next_seq", (json_int_t)r->next_seq,
		      "applied_seq", (json_int_t)r->applied_seq);
	if (j)
		json_object_update_new(j, json_pack("{s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I,"
						    " s:I, s:f, s:f, s:s, s:b, s:b, s:s}",
			"lag_sec", r->lag_sec, "lag_bytes", (json_int_t)r->lag_bytes,
			"dirty_bytes", (json_int_t)r->dirty_bytes,
			"sync_total_bytes", (json_int_t)r->sync_total_bytes,
			"sync_done_bytes", (json_int_t)r->sync_done_bytes,
			"bytes_shipped", (json_int_t)r->bytes_shipped,
			"region_bytes_shipped", (json_int_t)r->region_bytes_shipped,
			"overflows", (json_int_t)r->overflows,
			"reconnects", (json_int_t)r->reconnects, "rate_bps", r->rate_bps,
			"eta_sec", r->eta_sec, "last_error", r->last_error,
			"consistent", (int)r->consistent, "demoted", (int)r->demoted,
			"node", r->node));
	if (j) /* consistency groups (issue 7): the group's marker */
		json_object_update_new(j, json_pack("{s:I, s:i, s:s}", "group_marker",
						    (json_int_t)r->group_marker, "group_members",
						    (int)r->group_members, "group_held_by",
						    r->group_held_by ? r->group_held_by : ""));
	if (j) /* the source's log memory (session 21, geomem: given back when idle) */
		json_object_update_new(j, json_pack("{s:I, s:I}", "log_slab_bytes",
						    (json_int_t)r->log_slab_bytes, "log_pool_bytes",
						    (json_int_t)r->log_pool_bytes));
	if (j) /* failback (issue 7): region digests */
		json_object_update_new(j, json_pack("{s:I, s:b, s:s}", "region_bytes_same",
						    (json_int_t)r->region_bytes_same,
						    "regions_compared", (int)r->regions_compared,
						    "resync_from", r->resync_from));
	if (j) /* stream compression (issue 7): ratio = bytes before / bytes on the wire */
		json_object_update_new(j, json_pack("{s:s, s:I, s:I, s:I, s:f}", "compression",
			r->compression[0] ? r->compression : "none",
			"compress_in_bytes", (json_int_t)r->compress_in_bytes,
			"compress_out_bytes", (json_int_t)r->compress_out_bytes,
			"frames_compressed", (json_int_t)r->frames_compressed,
			"compress_ratio", r->compress_out_bytes ?
			(double)r->compress_in_bytes / (double)r->compress_out_bytes : 0.0));
	return j;
}

json_t *cli_replication_list_json(Tessera__Admin__Replication *const *r, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, cli_replication_json(r[i]));
	return json_pack("{s:o}", "replications", a);
}

void cli_print_sites(Tessera__Admin__Site *const *s, size_t n)
{
	int wn = 4, wa = 7, wp = 9;
	size_t i;

	for (i = 0; i < n; i++) {
		wn = max_width(wn, s[i]->name);
		wa = max_width(wa, s[i]->address);
		wp = max_width(wp, s[i]->peer_name[0] ? s[i]->peer_name : "-");
	}
	printf("%-*s  %-*s  %-*s  %7s  %s\n", wn, "NAME", wa, "ADDRESS", wp, "PEER NAME",
	       "VOLUMES", "CA / CERT / KEY");
	for (i = 0; i < n; i++)
		printf("%-*s  %-*s  %-*s  %7u  %s %s %s\n", wn, s[i]->name, wa, s[i]->address, wp,
		       s[i]->peer_name[0] ? s[i]->peer_name : "-", s[i]->volumes, s[i]->ca,
		       s[i]->cert, s[i]->key);
}

/* What a state means, for the detailed view. */
static const char *repl_state_text(const Tessera__Admin__Replication *r)
{
	static const struct {
		const char *state, *text;
	} texts[] = {
		{ "connecting", "no session with the target site yet (retrying every second)" },
		{ "syncing", "copying regions (initial copy or delta): the target is not "
			     "consistent until it ends" },
		{ "streaming", "writes ship in acknowledgment order" },
		{ "behind", "the log overflowed: writes mark dirty regions, shipped when the "
			    "link keeps up" },
		{ "paused", "shipping paused: writes are logged, then marked" },
		{ "split", "the target site promoted its copy: this volume no longer ships" },
		{ "detached", "the source volume is not attached: nothing ships" },
		{ "receiving", "a source is connected and writes are applied" },
		{ "idle", "no source connected" },
		{ "promoted", "failed over: the volume is writable here and takes no stream" },
	};

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
		if (strcmp(r->state, texts[i].state) == 0)
			return texts[i].text;
	return "";
}

static bool repl_is_target(const Tessera__Admin__Replication *r)
{
	return strcmp(r->role, "target") == 0;
}

/* "0.4 s" or "-" when lag_sec is not a number >= 0. */
static const char *fmt_seconds(double s, char *buf, size_t len)
{
	if (!(s >= 0))
		snprintf(buf, len, "-");
	else if (s < 10)
		snprintf(buf, len, "%.1f s", s);
	else
		cli_fmt_duration((uint64_t)s, buf, len);
	return buf;
}

void cli_print_replication(const Tessera__Admin__Replication *r)
{
	char a[32], b[32], c[64];
	const char *text = repl_state_text(r);

	if (repl_is_target(r)) {
		printf("volume:      %s (target), from site %s%s%s\n", r->volume, r->site,
		       r->group[0] ? ", group " : "", r->group);
		printf("state:       %s%s%s\n", r->state, text[0] ? ": " : "", text);
		printf("consistent:  %s\n", r->consistent ?
		       "yes (equals a prefix of the source's write history)" :
		       "NO (a region copy is open, or a replay after a crash: promote needs "
		       "--force)");
		printf("applied:     through seq %" PRIu64 ", %s applied since start\n",
		       r->applied_seq, cli_fmt_size(r->bytes_shipped, a, sizeof(a)));
		if (r->target_layout[0])
			printf("layout:      %s\n", r->target_layout);
		if (r->group[0])
			printf("group:       %s, at marker %" PRIu64 "%s%s\n", r->group,
			       r->group_marker, r->group_held_by[0] ? "; held back by " : "",
			       r->group_held_by);
	} else {
		printf("volume:      %s (source), to site %s as %s%s%s%s\n", r->volume, r->site,
		       r->target_volume[0] ? r->target_volume : r->volume,
		       r->target_layout[0] ? " (" : "", r->target_layout,
		       r->target_layout[0] ? ")" : "");
		if (r->group[0])
			printf("group:       %s, last marker sent %" PRIu64 "\n", r->group,
			       r->group_marker);
		if (r->demoted)
			printf("state:       DEMOTED (%s): the target site promoted its copy; host "
			       "writes here are refused (failback: tessera replication resync %s "
			       "--from %s)\n", r->state, r->volume, r->site);
		else
			printf("state:       %s%s%s\n", r->state, text[0] ? ": " : "", text);
		printf("lag (RPO):   %s, %s acknowledged here and not yet at %s\n",
		       fmt_seconds(r->lag_sec, c, sizeof(c)),
		       cli_fmt_size(r->lag_bytes, a, sizeof(a)), r->site);
		printf("throughput:  %s", cli_fmt_rate(r->rate_bps, a, sizeof(a)));
		if (r->eta_sec > 0)
			printf(", ETA to catch up %s", fmt_seconds(r->eta_sec, c, sizeof(c)));
		else if (r->lag_bytes == 0 && r->dirty_bytes == 0)
			printf(", caught up");
		printf("\n");
		printf("dirty:       %s in marked regions still to ship\n",
		       cli_fmt_size(r->dirty_bytes, a, sizeof(a)));
		if (r->sync_total_bytes)
			printf("sync:        %s of %s (%u%%)\n",
			       cli_fmt_size(r->sync_done_bytes, a, sizeof(a)),
			       cli_fmt_size(r->sync_total_bytes, b, sizeof(b)),
			       cli_percent(r->sync_done_bytes, r->sync_total_bytes));
		printf("shipped:     %s since start, of which %s region copies\n",
		       cli_fmt_size(r->bytes_shipped, a, sizeof(a)),
		       cli_fmt_size(r->region_bytes_shipped, b, sizeof(b)));
		if (r->region_bytes_same)
			printf("same:        %s of regions equal at the target, not shipped\n",
			       cli_fmt_size(r->region_bytes_same, a, sizeof(a)));
		if (r->compression[0] && strcmp(r->compression, "none") != 0) {
			printf("compression: %s, %s of writes took %s on the wire", r->compression,
			       cli_fmt_size(r->compress_in_bytes, a, sizeof(a)),
			       cli_fmt_size(r->compress_out_bytes, b, sizeof(b)));
			if (r->compress_out_bytes)
				printf(" (ratio %.2f, %" PRIu64 " frames compressed)",
				       (double)r->compress_in_bytes / (double)r->compress_out_bytes,
				       r->frames_compressed);
			printf("\n");
		}
		printf("seq:         acked through %" PRIu64 ", next %" PRIu64 "\n", r->acked_seq,
		       r->next_seq);
		printf("link:        %" PRIu64 " reconnect%s, %" PRIu64 " log overflow%s\n",
		       r->reconnects, r->reconnects == 1 ? "" : "s", r->overflows,
		       r->overflows == 1 ? "" : "s");
	}
	printf("stream:      %016" PRIx64 ", epoch %" PRIu64 "%s%s\n", r->stream, r->epoch,
	       r->node[0] ? ", on node " : "", r->node);
	if (r->last_error[0])
		printf("last error:  %s\n", r->last_error);
}

void cli_print_replications(Tessera__Admin__Replication *const *r, size_t n)
{
	int wv = 6, ws = 4, wst = 5;
	size_t i;

	for (i = 0; i < n; i++) {
		wv = max_width(wv, r[i]->volume);
		ws = max_width(ws, r[i]->site);
		wst = max_width(wst, r[i]->demoted ? "DEMOTED" : r[i]->state);
	}
	printf("%-*s  %-6s  %-*s  %-*s  %8s  %10s  %10s  %11s  %5s  %s\n", wv, "VOLUME", "ROLE",
	       ws, "SITE", wst, "STATE", "LAG", "LAG BYTES", "DIRTY", "RATE", "SYNC",
	       "CONSISTENT");
	for (i = 0; i < n; i++) {
		const Tessera__Admin__Replication *x = r[i];
		char lag[32], lagb[32], dirty[32], rate[32], sync[16];
		bool target = repl_is_target(x);

		if (x->sync_total_bytes)
			snprintf(sync, sizeof(sync), "%u%%",
				 cli_percent(x->sync_done_bytes, x->sync_total_bytes));
		else
			snprintf(sync, sizeof(sync), "-");
		printf("%-*s  %-6s  %-*s  %-*s  %8s  %10s  %10s  %11s  %5s  %s\n", wv, x->volume,
		       x->role, ws, x->site, wst, x->demoted ? "DEMOTED" : x->state,
		       target ? "-" : fmt_seconds(x->lag_sec, lag, sizeof(lag)),
		       target ? "-" : cli_fmt_size(x->lag_bytes, lagb, sizeof(lagb)),
		       target ? "-" : cli_fmt_size(x->dirty_bytes, dirty, sizeof(dirty)),
		       cli_fmt_rate(x->rate_bps, rate, sizeof(rate)), sync,
		       target ? (x->consistent ? "yes" : "NO") : "-");
	}
	/* consistency groups: each member's marker (one number over a group
	 * whose targets sit at one point of its history) */
	for (i = 0; i < n; i++) {
		const Tessera__Admin__Replication *x = r[i];

		if (!x->group[0])
			continue;
		printf("  group %s: %s (%s) %s %" PRIu64 "%s%s\n", x->group, x->volume, x->role,
		       repl_is_target(x) ? "at marker" : "last marker sent", x->group_marker,
		       x->group_held_by[0] ? "; held back by " : "", x->group_held_by);
	}
}
