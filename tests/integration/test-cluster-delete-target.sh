#!/usr/bin/env bash
# A volume delete waiting for a node after the record's delete must not
# delete a DR claim (target/<name>) written meanwhile (review s20-revN A).
# Its node's loop goes on while the delete calls the nodes of its copies
# (test-cluster-delete-async), and target/<name> was deleted (at any
# revision) only at the delete's end.  5 nodes; v (3 replicas); X and Y its
# last two copies but n1's, in the record's order.  Y frozen: the delete
# through n1 waits for Y's ask (peer timeout 2 s); X frozen once Y is asked
# (X answered its ask), so after the record's delete the walk waits for X's
# copy delete.  Then through Z (not X, Y) `volume delete v` answers not found
# and the claim hook (TSR_TEST_CLAIM_FILE) writes target/v for DR stream d1;
# its release waits for W (frozen now, peer timeout).  X thawed: n1's delete
# answers; W and Y thawed: the release must say the claim is released.
# Also, once the record is deleted, another `volume delete v` through n1
# answers "not found" (as before), not busy (review s20-revN B); and while
# the release waits, one through n1 says a claim release of v is running
# (review s20-revK D).
# Before the fix: "FAIL: the release of v's claim failed: ... cannot release
# target/v ..." (n1's delete had deleted the claim at its end).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd ss

make_tmpdir T
CLAIM=$T/claim
export TSR_TEST_CLAIM_FILE=$CLAIM
cl_start 5
unset TSR_TEST_CLAIM_FILE
ctsr volume create v --size 4M --replicas 3 >/dev/null || fail "volume create v"
cl_delete_waiting v
others=()
for i in 2 3 4 5; do
	[ "$i" != "$X" ] && [ "$i" != "$Y" ] && others+=("$i")
done
Z=${others[0]} W=${others[1]}
log "X n$X, Y n$Y (frozen, the delete waits for X); through n$Z, W n$W"
on_exit "kill -CONT ${CL_PID[$W]} 2>/dev/null"
# v is no longer recorded: a delete of v through n1 says so, as before,
# not "being deleted here" (review s20-revN B)
expect_fail 1 "volume 'v' not found" ctsr volume delete v

freeze_pids "${CL_PID[$W]}" || fail "n$W did not stop"
echo v >"$CLAIM"
( ctsr_via "$Z" volume delete v >"$T/release.out" 2>&1; echo $? >"$T/release.rc" ) &
RP=$!
wait_log "$Z" "test hook .*: target/v written claiming 'v'.*: ok" 10 ||
	fail "the hook did not claim v: $(cat "$T/release.out")"
kill -CONT "${CL_PID[$X]}"
wait "$CL_DELETE_PID"
[ "$(cat "$CL_ROOT/delete.rc")" = 0 ] || fail "volume delete v: $(cat "$CL_ROOT/delete.out")"
[ -e "$T/release.rc" ] && log "note: the release answered before the delete"
# the release holds tcreate/v while it calls the nodes (n1's delete calls
# neither Y any more nor W): a delete of v through n1 meanwhile names the
# release (review s20-revK D: it said "is being created as the target of DR
# stream ...")
if [ ! -e "$T/release.rc" ]; then
	cl_wait_call "the release of v's claim did not call them" "$Y" "$W"
	expect_fail 1 "a claim release of 'v' is running \(tcreate/v: n$Z pid [0-9]+ claim release" \
		ctsr volume delete v
else
	log "note: the release answered before the delete: its lock's message not checked"
fi
kill -CONT "${CL_PID[$W]}" "${CL_PID[$Y]}"
wait "$RP"
out=$(cat "$T/release.out")
[ "$(cat "$T/release.rc")" = 0 ] && [[ $out == *"claim by DR stream 00000000000000d1 is released"* ]] ||
	fail "the release of v's claim failed: $out"
log "release after the delete: $out"
cl_stop_all
