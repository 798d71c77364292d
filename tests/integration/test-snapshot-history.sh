#!/usr/bin/env bash
# Snapshots under load, checked against the write history (standalone node).
#
# crash_writer writes unique self-describing 4 KiB blocks (2 connections x
# QD 8, random blocks of a 64 MiB volume, some FUA and flushes) for a fixed
# time and logs each write's submit and acknowledgment times.  Meanwhile
# snapshots are cut at random moments.  Then:
#  - every snapshot, read through its read-only NBD export VOL@SNAP, is a
#    consistent cut of the history (crash_writer snapcheck: it holds every
#    write acknowledged before some instant P and none submitted after it);
#  - the volume holds every acknowledged write (crash_writer verify);
#  - `tessera snapshot diff` between consecutive snapshots, and from the
#    last one to the head, is exactly the set of blocks whose content differs
#    (each write has a unique value, so that is the set written between the
#    cuts);
#  - snapshots survive a restart, deleting a middle snapshot keeps its
#    neighbours' images, deleting all snapshots returns the data directory
#    to the volume's own files.
# Snapshot create latency under load is logged (not asserted).
#
# The writer runs TSR_SNAP_DURATION seconds (default 12; 60 with --long or
# TSR_LONG=1, which scripts/test.sh --long sets).
. "$(dirname "$0")/functions.sh"

duration=${TSR_SNAP_DURATION:-12}
if [ "${1:-}" = --long ] || [ "${TSR_LONG:-0}" = 1 ]; then
	duration=${TSR_SNAP_DURATION:-60}
fi

require_tessera "$CRASH_WRITER"
require_cmd nbdcopy

make_tmpdir D
WLOG=$D/acked.log
: >"$WLOG"

start_tesserad "$D"
vol_create "$D" hist 64M
uri=$(nbd_uri "$D" hist)

"$CRASH_WRITER" write "$uri" "$WLOG" --qd 8 --conns 2 --duration "$duration" \
	--seed $(( RANDOM * 65536 + RANDOM )) >"$D/writer.out" 2>&1 &
wpid=$!
track_pid "$wpid"

snaps=()
lat=()
end=$(( $(date +%s) + duration - 1 ))
i=0
sleep 0.5
while (( $(date +%s) < end )); do
	i=$(( i + 1 ))
	t0=$(date +%s%N)
	tsr "$D" snapshot create hist "s$i" >/dev/null || fail "snapshot create hist s$i under load"
	t1=$(date +%s%N)
	lat+=($(( (t1 - t0) / 1000000 )))
	snaps+=("s$i")
	# 0.2 .. 1.4 s
	sleep "$(( 2 + RANDOM % 13 ))e-1"
done
reap "$wpid" && wrc=0 || wrc=$?
[ "$wrc" = 0 ] || { cat "$D/writer.out" >&2; fail "crash_writer exited $wrc"; }
log "writer: $(tail -n1 "$D/writer.out")"
sorted=$(printf '%s\n' "${lat[@]}" | sort -n | tr '\n' ' ')
log "${#snaps[@]} snapshots cut under load; create latency ms (CLI round trip, sorted): $sorted"
(( ${#snaps[@]} >= 3 )) || fail "only ${#snaps[@]} snapshots taken"

check_cuts() {
	local s out
	for s in "${snaps[@]}"; do
		out=$("$CRASH_WRITER" snapcheck "$(nbd_uri "$D" "hist@$s")" "$WLOG" 2>&1) ||
			{ printf '%s\n' "$out" >&2; fail "snapshot $s ($1) is not a consistent cut"; }
		log "$1: $s: ${out##*$'\n'}"
	done
}
check_cuts "under load"
# Cuts of a served volume take the layer the store made ahead (spare.c): in
# the gate only the row's commit and the publish.  At least one of them: a
# cut right after another may find the next spare still in the making.
nspare=$(grep -c "snapshot: volume hist: created s[0-9]* .*on a spare layer" "$D/tesserad.log" || true)
(( nspare >= 1 )) || fail "no cut of ${#snaps[@]} took a spare layer (tesserad.log)"
log "$nspare of ${#snaps[@]} cuts under load took a spare layer"

out=$("$CRASH_WRITER" verify "$uri" "$WLOG" 2>&1) ||
	{ printf '%s\n' "$out" >&2; fail "acknowledged writes missing from the volume"; }
log "head: ${out##*$'\n'}"

# diff FROM TO: the CLI's extents must equal the blocks whose content differs.
check_diff() {
	local from=$1 to=$2 fa fb
	fa=$D/seqs.$from
	[ -e "$fa" ] || "$CRASH_WRITER" seqs "$(nbd_uri "$D" "hist@$from")" "$fa" || fail "read $from"
	if [ "$to" = --head ]; then
		fb=$D/seqs.head
		[ -e "$fb" ] || "$CRASH_WRITER" seqs "$uri" "$fb" || fail "read head"
		tsr "$D" --json snapshot diff hist "$from" --head >"$D/diff.json" ||
			fail "snapshot diff hist $from --head"
	else
		fb=$D/seqs.$to
		[ -e "$fb" ] || "$CRASH_WRITER" seqs "$(nbd_uri "$D" "hist@$to")" "$fb" || fail "read $to"
		tsr "$D" --json snapshot diff hist "$from" "$to" >"$D/diff.json" ||
			fail "snapshot diff hist $from $to"
	fi
	"$PY" - "$fa" "$fb" "$D/diff.json" <<'EOF' || fail "diff $from..$to differs from the blocks written between the cuts"
import json, sys
def load(p):
    d = {}
    for line in open(p):
        b, s = line.split()
        d[int(b)] = int(s)
    return d
a, b = load(sys.argv[1]), load(sys.argv[2])
changed = {k for k in set(a) | set(b) if a.get(k, 0) != b.get(k, 0)}
j = json.load(open(sys.argv[3]))
got = set()
for e in j["extents"]:
    assert e["offset"] % 4096 == 0 and e["length"] % 4096 == 0, e
    got.update(range(e["offset"] // 4096, (e["offset"] + e["length"]) // 4096))
if got != changed:
    print("diff reports %d blocks, %d changed; reported but unchanged: %s; changed but not reported: %s"
          % (len(got), len(changed), sorted(got - changed)[:10], sorted(changed - got)[:10]))
    sys.exit(1)
if j.get("changed_bytes") != 4096 * len(changed):
    print("changed_bytes %s, want %d" % (j.get("changed_bytes"), 4096 * len(changed)))
    sys.exit(1)
print("%d changed blocks" % len(changed))
EOF
}
for (( k=0; k+1<${#snaps[@]}; k++ )); do
	check_diff "${snaps[k]}" "${snaps[k+1]}"
done
check_diff "${snaps[0]}" --head
check_diff "${snaps[-1]}" --head
log "diffs equal the blocks written between the cuts"

# Snapshots survive a restart.
stop_tesserad
start_tesserad "$D"
check_cuts "after restart"

# Delete a middle snapshot: its blocks merge into the older neighbour, whose
# image must not change; the newer one must not change either.
mid=$(( ${#snaps[@]} / 2 ))
gone=${snaps[mid]}
before=${snaps[mid-1]}
after=${snaps[mid+1]}
h_before=$(nbdcopy "$(nbd_uri "$D" "hist@$before")" - | sha256sum)
h_after=$(nbdcopy "$(nbd_uri "$D" "hist@$after")" - | sha256sum)
tsr "$D" snapshot delete hist "$gone" >/dev/null || fail "snapshot delete hist $gone"
[ "$(nbdcopy "$(nbd_uri "$D" "hist@$before")" - | sha256sum)" = "$h_before" ] ||
	fail "deleting $gone changed the image of $before"
[ "$(nbdcopy "$(nbd_uri "$D" "hist@$after")" - | sha256sum)" = "$h_after" ] ||
	fail "deleting $gone changed the image of $after"
tsr "$D" --json snapshot list hist | json_get '[s["name"] for s in j["snapshots"]] if isinstance(j, dict) else [s["name"] for s in j]' >"$D/names"
grep -q "\"$gone\"" "$D/names" && fail "$gone still listed after delete"
unset 'snaps[mid]'
snaps=("${snaps[@]}")
check_diff "$before" "$after"
log "middle snapshot $gone deleted; $before and $after unchanged"

# Delete them all: only the volume's own files remain, the head is intact.
for s in "${snaps[@]}"; do
	tsr "$D" snapshot delete hist "$s" >/dev/null || fail "snapshot delete hist $s"
done
stop_tesserad
nfiles=$(find "$D/volumes" -type f | wc -l)
start_tesserad "$D"
vol_files=$(find "$D/volumes" -type f -name "$(tsr "$D" --json volume show hist | json_get 'j["uuid"]')*" | wc -l)
[ "$nfiles" = "$vol_files" ] || { ls -l "$D/volumes" >&2; fail "files left after deleting every snapshot: $nfiles, the volume has $vol_files"; }
out=$("$CRASH_WRITER" verify "$uri" "$WLOG" 2>&1) ||
	{ printf '%s\n' "$out" >&2; fail "head changed by snapshot deletes"; }
log "all snapshots deleted, $nfiles files left (the volume's own); head intact"
