#!/usr/bin/env bash
# A DR claim (target/<name>) written between a volume delete's record delete
# and its delete of target/<name> must survive that delete: the delete removes
# target/<name> only at the revision it read while the record stood (absent:
# nothing to remove).  Before, it deleted it at any revision, and a DR create
# of the name on another node in that instant lost its claim.
# 3 nodes.  The delete of v through n1 held right after its record's delete
# (TSR_TEST_DELETE_TARGET_HOLD_FILE, on n1's control loop); meanwhile through
# n2 `volume delete v` answers not found and the claim hook
# (TSR_TEST_CLAIM_FILE) writes target/v for DR stream d1 there; its release
# then asks n1, which answers once released, after its own target/v delete.
# Asserted: the release says the claim is released (so the claim was still
# there, at the revision it wrote); n1's delete of v succeeded.
# Before the fix: "FAIL: the release of v's claim failed: ... cannot release
# target/v (the claim of DR stream 00000000000000d1): No such file or
# directory" (n1 had deleted the claim).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera

make_tmpdir T
HOLD=$T/target.hold
export TSR_TEST_CLAIM_FILE=$T/claim TSR_TEST_DELETE_TARGET_HOLD_FILE=$HOLD
cl_start 3
unset TSR_TEST_CLAIM_FILE TSR_TEST_DELETE_TARGET_HOLD_FILE
on_exit "rm -f '$HOLD'" # before the stops: no wait

ctsr volume create v --size 4M --replicas 2 >/dev/null || fail "volume create v"
touch "$HOLD"
( ctsr_via 1 volume delete v >"$T/delete.out" 2>&1; echo $? >"$T/delete.rc" ) &
DP=$!
for (( t=0; t<100; t++ )); do
	[ -e "$HOLD.held" ] && break
	sleep 0.1
done
[ -e "$HOLD.held" ] || fail "the delete of v was not held in 10 s: $(cat "$T/delete.out")"

echo v >"$T/claim"
( ctsr_via 2 volume delete v >"$T/release.out" 2>&1; echo $? >"$T/release.rc" ) &
RP=$!
wait_log 2 "test hook .*: target/v written claiming 'v'.*: ok" 10
rm -f "$HOLD"
wait "$DP"
[ "$(cat "$T/delete.rc")" = 0 ] || fail "volume delete v through n1: $(cat "$T/delete.out")"
wait "$RP"
out=$(cat "$T/release.out")
log "the release through n2 answered (status $(cat "$T/release.rc")): $out"
[ "$(cat "$T/release.rc")" = 0 ] && [[ $out == *"claim by DR stream 00000000000000d1 is released"* ]] ||
	fail "the release of v's claim failed: $out"
cl_stop_all
