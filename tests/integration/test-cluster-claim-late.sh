#!/usr/bin/env bash
# The release of a DR claim (`volume delete NAME` of a name with only a claim)
# deletes the copies a create of it left by their uuid, asked first; a node
# with no copy gets no delete (session-19 revE, finding M1).  Before, it sent
# every live node a delete by name: one that reached its node late (the
# sender timed out at the peer timeout; the node ran it later) removed the
# copy a new create of the name had made there meanwhile, before its record.
# 3 nodes, no site: target/x written by the test hook TSR_TEST_CLAIM_FILE as
# the delete begins (a claim a DR create left); n2 and n3 defer the local_copy
# deletes they receive (TSR_TEST_COPY_DELETE_DEFER_FILE: answered "timed out"
# at once, run once the file is gone).  x is created again through n3, held
# between its copies and its record (TSR_TEST_CREATE_HOLD_FILE); then the
# deferred deletes may run.  Before: "n2: the deferred delete of the copy of
# 'x' (by name) ran: deleted", the new copy gone; now n2 is sent no delete.
#   the claim released; the new x written and read back; every copy identical.
# Then y (below): the release does not block the control loop while it waits
# for a node (admin_async_call, the reply later).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy

make_tmpdir T
DEFER=$T/defer HOLD=$T/hold CLAIM=$T/claim
export TSR_TEST_COPY_DELETE_DEFER_FILE=$DEFER TSR_TEST_CREATE_HOLD_FILE=$HOLD \
	TSR_TEST_CLAIM_FILE=$CLAIM
cl_start 3
unset TSR_TEST_COPY_DELETE_DEFER_FILE TSR_TEST_CREATE_HOLD_FILE TSR_TEST_CLAIM_FILE
IMG=$CL_ROOT/img
cl_pattern "$IMG" $((4 << 20)) 67

# ---- the release, n2's and n3's deletes (if any) deferred
echo x >"$CLAIM"
touch "$DEFER"
out=$(ctsr volume delete x 2>&1) || fail "volume delete x (the claim alone): $out"
grep -q "test hook .*: target/x written claiming 'x'.*: ok" "$(cl_dir 1)/tesserad.log" ||
	fail "the hook did not claim x: $out"
[[ $out == *"its name's claim by DR stream 00000000000000d1 is released"* ]] ||
	fail "volume delete x did not release the claim: $out"
log "release: $out"
deferred=$(grep -c "the delete of the copy of 'x' .* is deferred" "$(cl_dir 2)/tesserad.log")

# ---- x again, through n3, held between its copies and its record
cl_create_held 3 "$HOLD" x --size 4M --replicas 3
new=$(cl_copy_file 2 x) || fail "n2 holds no copy of x while the create is held"

# ---- a late delete (if the release sent n2 one) runs now
rm -f "$DEFER"
[ "$deferred" = 0 ] || cl_deferred_ran 2 x
[ "$(cl_copy_file 2 x 2>/dev/null)" = "$new" ] ||
	fail "the release's late delete removed the new copy of x on n2 ($new)"
cl_create_held_end "$HOLD" x

# ---- the new x holds its data on every copy
cl_write_all x "$IMG" "the new x"

# ---- y: copies on n1..n3 left by a create through n3 that died before its
# record; n3 frozen.  The release deletes n1's and n2's (by uuid) and, while
# it waits for n3's answer (the peer timeout, 2 s), the control loop answers
# others: `volume list` answers before the release does.  Before (blocking):
# the list waited for the release.  n3's copy stays (no answer: no delete),
# named in the reply's message and its --json "left".
cl_create_held 3 "$HOLD" y --size 4M --replicas 3
cl_kill 3
rm -f "$HOLD"
wait "$CL_CREATE_HELD_PID" || true
cl_start_node 3
cl_wait_nodes_alive 3
for i in 1 2 3; do
	cl_copy_size "$i" y >/dev/null || fail "n$i holds no copy of y (the test's premise)"
done
echo y >"$CLAIM"
kill -STOP "${CL_PID[3]}"
on_exit "kill -CONT ${CL_PID[3]} 2>/dev/null"
( ctsr --json volume delete y >"$CL_ROOT/release.out" 2>&1; echo $? >"$CL_ROOT/release.rc" ) &
RP=$!
cl_wait_no_copy 2 y "the release did not delete n2's copy of y"
out=$(ctsr volume list 2>&1) || fail "volume list during the release: $out"
[ -e "$CL_ROOT/release.rc" ] &&
	fail "volume list answered only once the release had (the control loop was blocked)"
log "volume list answered while the release waited for n3"
wait $RP
out=$(cat "$CL_ROOT/release.out")
[ "$(cat "$CL_ROOT/release.rc")" = 0 ] || fail "volume delete y (the claim alone): $out"
# --json "left" lists n3's copy, as a volume delete's (review s21-revP)
left=$(json_get '" ".join(c["node"] for c in j.get("left", []))' <<<"$out") ||
	fail "volume delete y --json: $out"
[ "$left" = n3 ] || fail "the release's --json 'left' is '$left', not n3: $out"
out=$(json_get 'j["message"]' <<<"$out") || fail "volume delete y --json has no message: $out"
[[ $out == *"is released; a copy it may have left on n3 is not deleted"* ]] ||
	fail "volume delete y did not name n3's copy as left: $out"
kill -CONT "${CL_PID[3]}"
cl_copy_size 1 y >/dev/null && fail "n1's copy of y was not deleted"
cl_copy_size 3 y >/dev/null || fail "n3's copy of y was deleted, though n3 never answered"
log "release of y: n1's and n2's copies deleted, n3's left: $out"
cl_stop_all
