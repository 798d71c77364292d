#!/usr/bin/env bash
# The snapshot operations through the coordinator while a replace of its
# volume waits are applied to the new copy's list in their order, and only
# those that went through (review revB R4, R5; cluster_replace_note_snap,
# cluster_replace_snap_done, replace_noted_merge).  The replace's record
# write is what a later coordinator replays for the new copy
# (CopyRecord.missed_snaps), so the test reads it there.
#   3 nodes; v (2 replicas, one on n1, min 1) attached on n1, in sync, with
#   snapshots s0 s1; the free node X frozen; replace-replica of the other
#   copy P --to X through n1 waits for X's create; through n1 meanwhile:
#   s0 deleted and created again (its place is now after s1), s2 created and
#   deleted (none holds it), s1 created again (refused: it exists, its place
#   kept); X thawed, n1 held after the
#   record write (TSR_TEST_REPLACE_LAYOUT_HOLD_FILE): vol/v lists "c s1,c s0"
#   for X; released: the replace answers 0, n1 and X hold "s1 s0".
# Before (f08520f): "FAIL: vol/v's missed snapshots as the replace recorded
# the copy on n3: got 'c s0,c s1,c s2', want 'c s1,c s0'" (s0 kept its old
# place, s2 a name no copy holds).  (An invalid name is refused by the CLI
# before n1 sees it: not testable here.)
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
cl_replace_waiting v hold
for s in s0 s1; do
	ctsr snapshot create v "$s" >/dev/null || fail "snapshot create v $s"
done
cl_replace_waiting_start v
for op in "delete s0" "create s0" "create s2" "delete s2"; do
	cl_timed "snapshot $op through n1 while the replace waits" 5 1 snapshot ${op% *} v "${op#* }"
	[ "$CL_RC" = 0 ] || fail "snapshot $op during the replace: status $CL_RC: $CL_OUT"
done
cl_timed "snapshot create s1 (it exists) through n1 while the replace waits" 5 1 \
	snapshot create v s1
[ "$CL_RC" != 0 ] || fail "snapshot create v s1 during the replace answered 0"
cl_replace_waiting_held v
assert_eq "$RECORDED" "c s1,c s0" "vol/v's missed snapshots as the replace recorded the copy on $X"
cl_replace_waiting_ok v "s1 s0"
cl_stop_all
log PASS
