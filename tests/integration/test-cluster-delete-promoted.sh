#!/usr/bin/env bash
# A "promoted" mark left on target/<name> after its volume's delete (a promote
# or failback on another node wrote it between the delete's read of
# target/<name> and its compare: the delete keeps what changed since its
# read) is deleted by `volume delete NAME` (vol/<name> absent), at the
# revision read, and the answer says so (review s22-revV, found 2).  Until
# then a new DR target of the name was taken for a promoted copy
# (repl_target_promoted: attach.c dr_was_promoted).
# 1 node, no site: the mark is written by the test hook TSR_TEST_CLAIM_FILE
# ("v promoted") as the delete of v begins (a real promote racing a delete
# needs two sites and a hold: tens of seconds).
# Before the fix: "FAIL: volume delete v did not delete the mark (status 1):
# tessera: volume 'v' not found (tessera volume list shows what exists)".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera

make_tmpdir T
export TSR_TEST_CLAIM_FILE=$T/claim
cl_start 1
unset TSR_TEST_CLAIM_FILE

echo "v promoted" >"$T/claim"
out=$(ctsr volume delete v 2>&1)
rc=$?
grep -q "test hook .*: target/v written claiming 'v' \"promoted\": ok" "$(cl_dir 1)/tesserad.log" ||
	fail "the hook did not write target/v \"promoted\": $out"
[ "$rc" = 0 ] && [[ $out == *'"promoted" mark'*'is deleted'* ]] ||
	fail "volume delete v did not delete the mark (status $rc): $out"
log "volume delete v: $out"
# the mark is gone: a second delete finds nothing at all
out=$(ctsr volume delete v 2>&1) && fail "a second volume delete v succeeded: $out"
[[ $out == *"volume 'v' not found"* ]] || fail "a second volume delete v: $out"
cl_stop_all
