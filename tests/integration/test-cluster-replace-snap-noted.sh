#!/usr/bin/env bash
# A snapshot cut through the coordinator while a replace of its volume waits
# for another node is in the new copy's record (session 18 review revB of
# 17a F4, cluster_replace_note_snap / replace_noted_merge).  The replace's
# record write is the only place where the new copy's CopyRecord.missed_snaps
# (what a later coordinator replays) lists it: the layout's own journal of the
# new copy is recorded after that write, and a coordinator that dies in
# between leaves the record's list as the replace wrote it.
# test-cluster-rebuild-after-frozen does not show this: there the snapshot's
# missed record for the dead copy rewrites vol/v, the first attempt fails its
# compare-and-set and a later one reads a list that has the snapshot already.
#   3 nodes; v (2 replicas, one on n1, min 1) attached on n1 and in sync; the
#   free node X frozen; replace-replica of the other copy P --to X through n1
#   waits for X's create; `snapshot create v s1` through n1 answers 0 (both
#   copies cut it: nothing written to vol/v); X thawed, the replace's record
#   written and n1 held before its layout takes the new copy
#   (TSR_TEST_REPLACE_LAYOUT_HOLD_FILE): vol/v's record lists "c s1" for X;
#   released: the replace answers 0, both copies hold s1.
# With replace_noted_merge disabled: the record lists '' at the hold.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
HOLD=$(mktemp -u /tmp/tessera-snap-noted-hold.XXXXXX)
on_exit "rm -f '$HOLD'"
export TSR_TEST_REPLACE_LAYOUT_HOLD_FILE=$HOLD
export TSR_TEST_COPY_TIMEOUT_MS=8000

cl_start 3
ctsr volume create v --size 8M --replicas 2 --min-replicas 1 >/dev/null || fail "volume create v"
cl_move_onto_n1 v
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v"
cl_wait_synced v
P=$(cl_rec_nodes v | tr ' ' '\n' | grep -v '^n1$')
X=$(cl_free_node v) || fail "no free node"
XPID=${CL_PID[${X#n}]}
on_exit "kill -CONT $XPID 2>/dev/null"
log "copies n1 $P; $X frozen; replace $P --to $X through n1"
freeze_pids "$XPID" || fail "$X did not stop"
( OUT=$(timeout 30 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
	volume replace-replica v --node "$P" --to "$X" 2>&1) && RC=0 || RC=$?
  echo "$RC" >"$CL_ROOT/r.rc"; echo "$OUT" >"$CL_ROOT/r.out" ) &
RP=$!
track_pid "$RP"
wait_log 1 "replace of v on $P: creating the new copy on $X" 10
cl_timed "snapshot create v s1 through n1 while the replace waits for $X" 5 1 snapshot create v s1
[ "$CL_RC" = 0 ] || fail "snapshot create v s1 during the replace: status $CL_RC: $CL_OUT"
wait_log 1 "replace of v on $P: snapshot s1, created while it waits" 5
touch "$HOLD"
kill -CONT "$XPID"
wait_log 1 "replace of v: test hold .* between the record and the coordinator" 15
got=$(cl_recorded_missed v)
rm -f "$HOLD"
reap "$RP" || true
log "replace: status $(cat "$CL_ROOT/r.rc"): $(cat "$CL_ROOT/r.out")"
assert_eq "$got" "c s1" "vol/v's missed snapshots as the replace recorded the copy on $X"
[ "$(cat "$CL_ROOT/r.rc")" = 0 ] || fail "the replace did not succeed: $(cat "$CL_ROOT/r.out")"
cl_wait_synced v
for n in n1 "$X"; do
	[ "$(cl_snaps_of "${n#n}" v)" = s1 ] ||
		fail "$n's copy of v holds snapshots '$(cl_snaps_of "${n#n}" v)', want 's1'"
done
cl_stop_all
log PASS
