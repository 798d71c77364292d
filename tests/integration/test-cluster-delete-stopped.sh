#!/usr/bin/env bash
# tesserad stopped while a volume delete, or a claim's release, waits for a
# node (s20-revN's two log nits).  4 nodes.
#  A. A claim's release (TSR_TEST_CLAIM_FILE: target/xv claims xv, no volume
#     xv) through n4 with n2 and n3 frozen: n2's ask times out (peer timeout
#     2 s), then n4 stops while n3's ask waits.  The claim is kept (the
#     answer says so, as before) and n4's log must still say what n2 left:
#     the lines of the nodes done were logged only at the release's end,
#     which the stop skipped.  n4 restarted, n2 and n3 thawed.
#  B. v (3 replicas); X and Y its last two copies off n1, in the record's
#     order.  Y frozen: the delete through n1 waits for Y's ask; X frozen once
#     Y is asked (X answered its ask), so after the record's delete the walk
#     waits for X's copy delete (up to 30 s).  n1 stopped then: its log must
#     say X's delete was sent and not answered, and the delete's reply
#     (status 0: v is gone) names X's and Y's copies left.
# Before: A "n4's log does not say n2's copy of xv was left"; B "its copy on
# nX was left behind (not called: tesserad stopped meanwhile)".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd ss

make_tmpdir T
export TSR_TEST_CLAIM_FILE=$T/claim
cl_start 4
unset TSR_TEST_CLAIM_FILE

# ---- A: the claim's release stopped
on_exit "kill -CONT ${CL_PID[2]} ${CL_PID[3]} 2>/dev/null"
freeze_pids "${CL_PID[2]}" "${CL_PID[3]}" || fail "n2 and n3 did not stop"
echo xv >"$T/claim"
( ctsr_via 4 volume delete xv >"$T/release.out" 2>&1; echo $? >"$T/release.rc" ) &
RP=$!
cl_wait_call "the release of xv's claim did not call n3 (after n2's ask)" 3
cl_stop 4
wait "$RP"
log "the stopped release answered: $(cat "$T/release.out")"
grep -q "claim of DR stream 00000000000000d1 is kept" "$T/release.out" ||
	fail "the stopped release does not say the claim is kept: $(cat "$T/release.out")"
line=$(grep "volume delete xv (the claim alone): a copy of it left on n2 is not deleted" \
	"$(cl_dir 4)/tesserad.log") || fail "n4's log does not say n2's copy of xv was left"
log "n4: $line"
grep -q "volume delete xv (the claim alone): a copy of it left on n3" "$(cl_dir 4)/tesserad.log" &&
	fail "n4's log says n3 left a copy of xv, though its ask was not answered yet"
kill -CONT "${CL_PID[2]}" "${CL_PID[3]}"
cl_start_node 4
cl_wait_nodes_alive 4

# ---- B: the volume delete stopped
ctsr volume create v --size 4M --replicas 3 >/dev/null || fail "volume create v"
cl_delete_waiting v
N1LOG=$(cl_dir 1)/tesserad.log
cl_stop 1
wait "$CL_DELETE_PID"
out=$(cat "$CL_ROOT/delete.out")
log "the delete's reply: $out"
[ "$(cat "$CL_ROOT/delete.rc")" = 0 ] || fail "volume delete v: $out"
line=$(grep "volume v deleted, but its copy on n$X was left behind" "$N1LOG") ||
	fail "n1's log does not say n$X's copy was left: $(grep "volume v" "$N1LOG")"
log "n1: $line"
[[ $line == *"its delete was sent, but tesserad stopped before n$X answered"* ]] ||
	fail "n1's log does not say n$X's delete was sent and not answered: $line"
[[ $out == *"its copy on n$X is left (its delete was sent"* ]] &&
	[[ $out == *"its copy on n$Y is left (it named no uuid"* ]] ||
	fail "the delete's reply does not name n$X's and n$Y's copies left: $out"
kill -CONT "${CL_PID[$X]}" "${CL_PID[$Y]}"
cl_stop_all
