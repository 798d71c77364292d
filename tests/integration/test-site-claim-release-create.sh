#!/usr/bin/env bash
# A DR create of a name whose claim is being released on the same node must
# wait for the release (review s20-revK, finding A).  The release
# (`volume delete NAME` of a name with only a claim) holds tcreate/<name>,
# written as a create writes it ("NODE pid PID", this process), while it asks
# the other nodes without blocking the loop (struct claim_release).  A DR
# create of the name reaching this node meanwhile (the source's VOLUME_OPEN)
# took that lock for one an earlier create of this process had left, deleted
# it and went on to the claim, while the release still deleted copies.
# DR: dr-n1 and dr-n2; dr-n1 writes target/xv for DR stream d1 as the delete
# begins (TSR_TEST_CLAIM_FILE); dr-n2 frozen, so the release waits for its
# answer (peer timeout 2 s); meanwhile `replication enable xv` at the primary.
# Asserted: dr-n1's create of xv says "tcreate/xv is held by a volume delete
# of it here", never "... is this process's ... deleted, taken again"; the
# release answers "released"; then (lost-claim wait 500 ms here) the source's
# next VOLUME_OPEN creates xv and it streams.
# Before the fix: "FAIL: the DR create of xv took over the release's lock"
# (the create went on and rewrote target/xv for its stream; the release's
# delete of target/xv at the revision it read then failed "changed
# meanwhile: retry", and a retried volume delete deletes the new target).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/site.sh"

require_tessera
sites_setup
CLAIM_FILE=$SITE_ROOT/claim
TSR_TEST_CLAIM_FILE=$CLAIM_FILE TSR_TEST_TC_LOST_CLAIM_MS=500 site_start dr
dr2_start
site_start primary
proxy_start
site_add_dr primary dr
DLOG=$(sdir dr)/tesserad.log
site_vol_create primary xv 4M

echo xv >"$CLAIM_FILE"
freeze_pids "$D2PID" || fail "pid $D2PID not stopped"
on_exit "kill -CONT $D2PID 2>/dev/null"
( stsr dr volume delete xv >"$SITE_ROOT/release.out" 2>&1; echo $? >"$SITE_ROOT/release.rc" ) &
RP=$!
file_wait "$DLOG" "test hook .*: target/xv written claiming 'xv'.*: ok" 50 ||
	fail "the hook did not claim xv: $(cat "$SITE_ROOT/release.out")"
[ -e "$SITE_ROOT/release.rc" ] && fail "the release answered before the create (dr-n2 frozen)"
out=$(stsr primary replication enable xv --to dr --target-layout replicas:1 2>&1) ||
	fail "replication enable xv: $out"
file_wait "$DLOG" "tcreate/xv .*taken again\|tcreate/xv is held by a volume delete of it here" 30 ||
	fail "the DR did not try to create xv: $(grep 'volume xv' "$DLOG" | tail -3)"
[ -e "$SITE_ROOT/release.rc" ] && log "note: the release answered before the create's lock"
grep -q "tcreate/xv .*taken again" "$DLOG" &&
	fail "the DR create of xv took over the release's lock: $(grep -m1 'tcreate/xv' "$DLOG")"
log "create while the release runs: $(grep -m1 'tcreate/xv is held' "$DLOG")"
kill -CONT "$D2PID"
wait $RP
out=$(cat "$SITE_ROOT/release.out")
[ "$(cat "$SITE_ROOT/release.rc")" = 0 ] || fail "volume delete xv (the claim alone): $out"
[[ $out == *"its name's claim by DR stream 00000000000000d1 is released"* ]] ||
	fail "volume delete xv did not release the claim: $out"
log "release: $out"
# the source's next VOLUME_OPEN creates xv (its claim now the stream's)
rwait primary xv 'j["state"] == "streaming"' "streaming" 30
grep -q "site: target volume xv created (replicas:1)" "$DLOG" || fail "the DR's log: xv not created"
site_stop primary
stop_tesserad "$D2PID"
site_stop dr
