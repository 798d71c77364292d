#!/usr/bin/env bash
# A volume delete that keeps target/<name> (a DR stream's claim of the name)
# because the metadata store failed to read or delete it says so in its
# answer, text and --json, with what releases it (review s22-revV, found 1).
# Before, only tesserad's log said so: the answer was "deleted volume 'v'".
# 1 node: the read of target/v fails -EIO (test hook
# TSR_TEST_TARGET_READ_FAIL=v in the delete's caller, volume.c).
# Before the fix: "FAIL: volume delete v does not say the claim is kept:
# deleted volume 'v'".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera

export TSR_TEST_TARGET_READ_FAIL=v
cl_start 1
unset TSR_TEST_TARGET_READ_FAIL

kept="target/v could not be read (Input/output error)*is kept: tessera volume delete v releases it"
ctsr volume create v --size 1M --replicas 1 >/dev/null || fail "volume create v"
out=$(ctsr volume delete v 2>&1) || fail "volume delete v: $out"
[[ $out == "deleted volume 'v', but "*$kept* ]] ||
	fail "volume delete v does not say the claim is kept: $out"
log "volume delete v: $out"
ctsr volume create v --size 1M --replicas 1 >/dev/null || fail "volume create v (again)"
out=$(ctsr --json volume delete v 2>&1) || fail "volume delete v --json: $out"
msg=$(json_get 'j["message"]' <<<"$out") || fail "volume delete v --json has no message: $out"
[[ $msg == *$kept* ]] || fail "volume delete v --json does not say the claim is kept: $out"
log "volume delete v --json: $out"
cl_stop_all
