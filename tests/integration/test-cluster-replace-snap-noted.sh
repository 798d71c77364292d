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
cl_replace_waiting v hold
cl_replace_waiting_start v
cl_timed "snapshot create v s1 through n1 while the replace waits for $X" 5 1 snapshot create v s1
[ "$CL_RC" = 0 ] || fail "snapshot create v s1 during the replace: status $CL_RC: $CL_OUT"
wait_log 1 "replace of v on $P: snapshot s1, created while it waits" 5
cl_replace_waiting_held v
assert_eq "$RECORDED" "c s1" "vol/v's missed snapshots as the replace recorded the copy on $X"
cl_replace_waiting_ok v "s1"
cl_stop_all
log PASS
