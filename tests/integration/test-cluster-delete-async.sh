#!/usr/bin/env bash
# A volume delete waiting for a hung node does not stall this node's other
# admin requests (review s20-revK, finding E).  3 nodes; v (3 replicas); n2
# and n3 frozen (SIGSTOP).  The delete through n1 asks each copy's node in
# turn for its copy's uuid: n2's and n3's asks each wait for the peer timeout
# (2 s; two frozen nodes because `node list` itself asks every alive node,
# in parallel, within that timeout: it answers after 2 s, the delete after
# 4 s).  Meanwhile `volume list` and `node list` through n1 answer before the
# delete has (n1's log has no "left behind" yet), and a second delete of v is
# refused (EBUSY).  The delete then answers (deleted): n1's copy deleted,
# n2's and n3's left to their leftover sweep (they named no uuid), which
# the reply says (it said only "deleted volume 'v'" before).  Before
# (the asks blocking on the control loop): the lists answered only after the
# delete had.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd ss

cl_start 3
ctsr volume create v --size 4M --replicas 3 >/dev/null || fail "volume create v"
for i in 1 2 3; do
	cl_copy_size "$i" v >/dev/null || fail "n$i holds no copy of v (the test's premise)"
done
N1LOG=$(cl_dir 1)/tesserad.log
LEFT="volume v deleted, but its copy on n[23] was left behind"

freeze_pids "${CL_PID[2]}" "${CL_PID[3]}" || fail "n2 and n3 did not stop"
on_exit "kill -CONT ${CL_PID[2]} ${CL_PID[3]} 2>/dev/null"
( ctsr --json volume delete v >"$CL_ROOT/delete.out" 2>&1; echo $? >"$CL_ROOT/delete.rc" ) &
DP=$!
# an ask in flight: a connection to a frozen node's port (its kernel accepts)
cl_wait_call "the delete did not ask them" 2 3

cl_timed "volume list during the delete" 30 1 volume list
[ "$CL_RC" = 0 ] || fail "volume list during the delete: $CL_OUT"
grep -qE "$LEFT" "$N1LOG" &&
	fail "volume list answered only once the delete had (the control loop was blocked)"
cl_timed "node list during the delete" 30 1 node list
[ "$CL_RC" = 0 ] || fail "node list during the delete: $CL_OUT"
grep -qE "$LEFT" "$N1LOG" &&
	fail "node list answered only once the delete had (the control loop was blocked)"
cl_timed "a second volume delete v" 30 1 volume delete v
[ "$CL_RC" != 0 ] && [[ $CL_OUT == *"is being deleted here"* ]] ||
	fail "a second volume delete v during the first was not refused busy: $CL_OUT"
log "volume list, node list answered and a second delete refused while the delete waited"

wait "$DP"
out=$(cat "$CL_ROOT/delete.out")
[ "$(cat "$CL_ROOT/delete.rc")" = 0 ] || fail "volume delete v: $out"
left=$(json_get '" ".join(c["node"] for c in j.get("left", []))' <<<"$out") ||
	fail "volume delete v --json: $out"
[ "$left" = "n2 n3" ] || fail "the delete's --json 'left' does not list n2 and n3: $out"
out=$(json_get 'j["message"]' <<<"$out") || fail "volume delete v --json has no message: $out"
# the reply names each copy left, why, and what removes it (exit status 0:
# the volume is gone): in --json, its message and "left" ([{node, reason}])
for i in 2 3; do
	[[ $out == *"its copy on n$i is left (it named no uuid when asked"* ]] ||
		fail "the delete's reply does not name n$i's copy left: $out"
done
[[ $out == *"the leftover sweep removes it after its grace (--leftover-grace, 900 s)"* ]] ||
	fail "the delete's reply does not say the leftover sweep removes the copies left: $out"
for i in 2 3; do
	grep -q "volume v deleted, but its copy on n$i was left behind (.*did not name its copy's uuid" \
		"$N1LOG" || fail "n1's log does not say n$i's copy of v was left: $(grep "volume v" "$N1LOG")"
done
kill -CONT "${CL_PID[2]}" "${CL_PID[3]}"
cl_copy_size 1 v >/dev/null && fail "n1's copy of v was not deleted"
cl_copy_size 2 v >/dev/null || fail "n2's copy of v was deleted, though n2 never answered"
cl_copy_size 3 v >/dev/null || fail "n3's copy of v was deleted, though n3 never answered"
expect_fail 1 "volume 'v' not found" ctsr volume show v
log "delete of v: n1's copy deleted, n2's and n3's left to their sweep: $out"
cl_stop_all
