#!/usr/bin/env bash
# A snapshot create through the coordinator that fails while a replace of its
# volume waits adds nothing to the new copy's list (review revB R4:
# cluster_replace_snap_done marks the noted create failed, replace_noted_merge
# skips it).  test-cluster-replace-snap-order's failed create is of a name
# already listed, so it passes without this rule (review revF).  Here the
# create fails because too few copies are in sync, which costs nothing to
# set up: the layout refuses it at once (mirror_snap.c snap_go).
#   3 nodes; v (2 replicas, one on n1, min 2) attached on n1, in sync, with
#   snapshot s0; the other copy's node P killed (its copy out of sync); the
#   free node X frozen; replace-replica of P --to X through n1 waits for X's
#   create; `snapshot create v s1` through n1 fails (1 copy in sync, 2
#   needed) and n1 logs that s1 is not given; X thawed, n1 held after the
#   record write (TSR_TEST_REPLACE_LAYOUT_HOLD_FILE): vol/v lists "c s0" for
#   X; released: the replace answers 0, v gets in sync, n1 and X hold "s0".
# With "a failed create adds nothing" turned off (replace_noted_merge
# appending a failed create too): "FAIL: vol/v's missed snapshots as the
# replace recorded the copy on n3: got 'c s0,c s1', want 'c s0'".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
cl_replace_waiting v hold 2
ctsr snapshot create v s0 >/dev/null || fail "snapshot create v s0"
cl_kill "${P#n}"
cl_wait_state v "$P" out-of-sync 10
cl_replace_waiting_start v
cl_timed "snapshot create v s1 through n1 (1 copy in sync, min 2) while the replace waits" \
	5 1 snapshot create v s1
[ "$CL_RC" != 0 ] || fail "snapshot create v s1 with one copy in sync of min 2 answered 0"
wait_log 1 "replace of v on $P: snapshot s1 was not created: not given to the new copy" 5
cl_replace_waiting_held v
assert_eq "$RECORDED" "c s0" "vol/v's missed snapshots as the replace recorded the copy on $X"
cl_replace_waiting_ok v "s0"
cl_stop_all
log PASS
