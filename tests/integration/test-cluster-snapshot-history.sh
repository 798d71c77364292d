#!/usr/bin/env bash
# Snapshots of a 3-replica volume under load: one cut on every copy.
#
# 3 nodes, a 64 MiB 3-replica volume attached on n1.  crash_writer writes
# unique self-describing blocks through n1 for a fixed time (every write's
# submit and acknowledgment times logged) while snapshots are cut at random
# moments through the cluster CLI.  Then, for every snapshot:
#  - on every node, the read-only export VOL@SNAP of that node's copy is a
#    consistent cut of the history (crash_writer snapcheck);
#  - the three copies of the snapshot are byte-identical (invariant 3 for
#    snapshots: every copy cut at the same position of the write order).
# Then a copy node is killed, writes go on and a snapshot is cut while it is
# away; it comes back, is resynced, and its copy of that snapshot equals the
# others (a returning copy carries the snapshots it missed).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

duration=${TSR_SNAP_DURATION:-10}

require_tessera "$CRASH_WRITER"
require_cmd nbdcopy

cl_start 3
ctsr volume create hist --size 64M --replicas 3 >/dev/null || fail "volume create"
ctsr volume attach hist --node n1 >/dev/null || fail "volume attach"
WLOG=$CL_ROOT/acked.log
: >"$WLOG"

"$CRASH_WRITER" write "$(cl_nbd_uri 1 hist)" "$WLOG" --qd 8 --conns 2 --duration "$duration" \
	--seed $(( RANDOM * 65536 + RANDOM )) >"$CL_ROOT/writer.out" 2>&1 &
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
	ctsr snapshot create hist "s$i" >/dev/null || fail "snapshot create hist s$i under load"
	lat+=($(( ($(date +%s%N) - t0) / 1000000 )))
	snaps+=("s$i")
	sleep "$(( 2 + RANDOM % 13 ))e-1"
done
reap "$wpid" && wrc=0 || wrc=$?
[ "$wrc" = 0 ] || { cat "$CL_ROOT/writer.out" >&2; fail "crash_writer exited $wrc"; }
log "writer: $(tail -n1 "$CL_ROOT/writer.out")"
log "${#snaps[@]} snapshots cut under load; create latency ms (sorted): $(printf '%s\n' "${lat[@]}" | sort -n | tr '\n' ' ')"
(( ${#snaps[@]} >= 3 )) || fail "only ${#snaps[@]} snapshots taken"

# check_snap SNAP NODES...: consistent cut on each node, identical on all.
check_snap() {
	local s=$1 n out h first=
	shift
	for n in "$@"; do
		out=$("$CRASH_WRITER" snapcheck "$(cl_nbd_uri "$n" "hist@$s")" "$WLOG" 2>&1) ||
			{ printf '%s\n' "$out" >&2; fail "snapshot $s on n$n is not a consistent cut"; }
		h=$(nbdcopy "$(cl_nbd_uri "$n" "hist@$s")" - | sha256sum)
		if [ -z "$first" ]; then
			first=$h
			log "$s: ${out##*$'\n'}"
		else
			[ "$h" = "$first" ] || fail "snapshot $s differs between n1 and n$n"
		fi
	done
}
for s in "${snaps[@]}"; do check_snap "$s" 1 2 3; done
out=$("$CRASH_WRITER" verify "$(cl_nbd_uri 1 hist)" "$WLOG" 2>&1) ||
	{ printf '%s\n' "$out" >&2; fail "acknowledged writes missing from the volume"; }
log "every snapshot is the same consistent cut on all three copies; head: ${out##*$'\n'}"

# A copy away while a snapshot is cut.
cl_kill 3
"$CRASH_WRITER" write "$(cl_nbd_uri 1 hist)" "$WLOG" --qd 8 --conns 2 --duration 3 \
	--seq-base 1000000000 --seed 11 >"$CL_ROOT/writer2.out" 2>&1 ||
	{ cat "$CL_ROOT/writer2.out" >&2; fail "writer with n3 down"; }
ctsr snapshot create hist away >/dev/null || fail "snapshot create while n3 is down"
"$CRASH_WRITER" write "$(cl_nbd_uri 1 hist)" "$WLOG" --qd 8 --conns 2 --duration 2 \
	--seq-base 2000000000 --seed 12 >"$CL_ROOT/writer3.out" 2>&1 ||
	{ cat "$CL_ROOT/writer3.out" >&2; fail "writer after the cut"; }
cl_start_node 3
cl_wait_synced hist 120
check_snap away 1 2 3
for s in "${snaps[@]}"; do check_snap "$s" 1 2 3; done
cl_assert_copies_identical hist 1 2 3
log "n3 came back: resynced, carries snapshot 'away' and keeps the older ones"
