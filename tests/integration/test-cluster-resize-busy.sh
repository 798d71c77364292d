#!/usr/bin/env bash
# Online resize refused while a scrub runs or a snapshot is being cut, with
# nothing changed (cluster_volume_resize step (a): the coordinator's layout
# says it cannot grow now).  3 nodes, db 16 MiB, 3 replicas, attached on n1,
# a pattern written:
#  1. a scrub of db held on n3 (SIGSTOP, shorter than the peer timeout):
#     `volume resize db --size 32M` refused "a scrub of 'db' is running";
#     n3 continued: the scrub ends clean;
#  2. a snapshot cut held on the coordinator's home worker
#     (TSR_TEST_SNAP_HOLD_FILE, engine/vol/vol.c): the resize, queued behind
#     it, refused "a snapshot of 'db' is being cut"; the snapshot is made;
#  after each: the record, every copy's store and a new NBD connection say
#  16 MiB, the image reads back; then the resize goes through (32 MiB).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdinfo nbdcopy

export TSR_TEST_SNAP_HOLD_FILE=/var/tmp/tessera-snaphold-resize.$$
HOLD=$TSR_TEST_SNAP_HOLD_FILE
rm -f "$HOLD"
on_exit "rm -f $HOLD"
cl_start 3
M=$((1 << 20))
ctsr volume create db --size 16M --replicas 3 >/dev/null || fail "volume create"
ctsr volume attach db --node n1 >/dev/null || fail "volume attach"
URI=$(cl_nbd_uri 1 db)
EXP=$CL_ROOT/expected.img
cl_pattern "$EXP" $((16 * M)) 11
nbdcopy "$EXP" "$URI" || fail "write the pattern"

unchanged() {
	local what=$1 i
	assert_eq "$(ctsr --json volume show db | json_get 'j["size"]')" $((16 * M)) "$what: record"
	for i in 1 2 3; do
		assert_eq "$(cl_copy_size "$i" db)" $((16 * M)) "$what: n$i's copy"
	done
	assert_eq "$(nbdinfo --size "$URI")" $((16 * M)) "$what: a new connection's size"
	cl_assert_image 1 db "$EXP" "$what: image"
}

# ---- 1. a scrub running
freeze_pids "${CL_PID[3]}" || fail "pid ${CL_PID[3]} not stopped"
ctsr --json volume scrub db >"$CL_ROOT/scrub.json" 2>"$CL_ROOT/scrub.err" &
spid=$!
track_pid "$spid"
sleep 0.3
expect_fail 1 "a scrub of 'db' is running.*nothing changed" ctsr volume resize db --size 32M
kill -CONT "${CL_PID[3]}"
reap "$spid" || { cat "$CL_ROOT/scrub.json" >&2; fail "the scrub failed"; }
assert_eq "$(json_get '"%s %s %s" % (j["scrub_mismatches"], j["scrub_repaired"], j["scrub_unrepaired"])' \
	<"$CL_ROOT/scrub.json")" "0 0 0" "the held scrub's counts"
unchanged "scrub running"

# ---- 2. a snapshot being cut
: >"$HOLD"
ctsr snapshot create db s1 >"$CL_ROOT/snap.out" 2>&1 &
snpid=$!
track_pid "$snpid"
sleep 0.5
ctsr volume resize db --size 32M >"$CL_ROOT/resize.out" 2>&1 &
rpid=$!
track_pid "$rpid"
sleep 0.5
rm -f "$HOLD"
reap "$rpid" && fail "the resize during the cut was accepted: $(cat "$CL_ROOT/resize.out")"
grep -q "a snapshot of 'db' is being cut or deleted.*nothing changed" "$CL_ROOT/resize.out" ||
	fail "the resize during the cut: $(cat "$CL_ROOT/resize.out")"
log "refused during the cut: $(head -n1 "$CL_ROOT/resize.out")"
reap "$snpid" || fail "snapshot create db s1: $(cat "$CL_ROOT/snap.out")"
unchanged "snapshot being cut"
cl_snaps_of 1 db | grepq -w s1 || fail "s1 not made"

# ---- then it grows
ctsr volume resize db --size 32M >/dev/null || fail "resize once idle"
assert_eq "$(nbdinfo --size "$URI")" $((32 * M)) "a new connection's size after the resize"
cl_scrub_clean db "after the resize"
cl_stop_all
