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
touch "$HOLD"
( ctsr_via 3 volume create x --size 4M --replicas 3 >"$CL_ROOT/create.out" 2>&1
  echo $? >"$CL_ROOT/create.rc" ) &
CP=$!
for (( i=0; i<100; i++ )); do
	[ -e "$HOLD.held" ] && break
	sleep 0.1
done
[ -e "$HOLD.held" ] || fail "the create of x was not held: $(cat "$CL_ROOT/create.out")"
new=$(cl_copy_file 2 x) || fail "n2 holds no copy of x while the create is held"

# ---- a late delete (if the release sent n2 one) runs now
rm -f "$DEFER"
if [ "$deferred" != 0 ]; then
	wait_log 2 "test hook .*: the deferred delete of the copy of 'x' .* ran" 10
	log "n2: $(grep -o "the deferred delete of the copy of 'x' .* ran: .*" \
		"$(cl_dir 2)/tesserad.log" | tail -1)"
fi
[ "$(cl_copy_file 2 x 2>/dev/null)" = "$new" ] ||
	fail "the release's late delete removed the new copy of x on n2 ($new)"
rm -f "$HOLD"
wait $CP
[ "$(cat "$CL_ROOT/create.rc")" = 0 ] || fail "volume create x: $(cat "$CL_ROOT/create.out")"

# ---- the new x holds its data on every copy
ctsr volume attach x --node n1 >/dev/null || fail "volume attach x"
nbdcopy "$IMG" "$(cl_nbd_uri 1 x)" || fail "nbdcopy into x"
cl_assert_image 1 x "$IMG" "the new x"
ctsr volume detach x >/dev/null || fail "volume detach x"
cl_assert_copies_identical x 1 2 3
cl_stop_all
