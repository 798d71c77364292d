#!/usr/bin/env bash
# Two creates of one DR stream on two DR nodes (the source reached both, an
# address that moved) may both read target/<vol> absent before either writes
# it (review 17c D1).  The claim was written with no compare: the second
# write succeeded too, and when the first create recorded vol/<vol> first,
# the second's undo (not resumed: it deletes the claim it wrote) deleted the
# winner's claim, and the recorded volume was refused "exists here and is no
# replication target" at every VOLUME_OPEN after.  Now the claim is written
# by compare-and-set at the revision read; the create that loses it does
# nothing and answers "being created: retry".
# DR: dr-n1 alone, started with the hook TSR_TEST_TC_CLAIM_RACE_FILE: between
# the create's read of target/cv and its claim, the hook does what the other
# create that won would have done (target/cv, the copy of cv here, vol/cv
# listing dr-n1, replicas 1).  Asserted: the create's claim lost (logged),
# the source's next VOLUME_OPEN attaches that record, cv streams and its
# sha256 is equal at both sites, with no "no replication target" refusal.
# Before the fix: "site primary, cv: not streaming after 30s", and dr-n1's
# log has "exists here and is no replication target".
# Case 2 (cw): the hook writes target/cw alone (the create that won has not
# recorded yet).  The create whose claim lost answers "being created (by
# another create of it): retry" for TSR_TEST_TC_LOST_CLAIM_MS (2 s here;
# TARGET_CREATE_KEEP_MS, 10 s, otherwise) before it creates again, resumed,
# so that it does not meet the winner's copies before the winner's record.
# Asserted: at least 3 such answers before its "creating target volume cw
# ... (again", then cw streams, sha256 equal.  With no wait the source's
# first retry (100 ms) created at once: 1 answer.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"

require_tessera
sites_setup
HOOK=$SITE_ROOT/claim-race
touch "$HOOK"
TSR_TEST_TC_CLAIM_RACE_FILE=$HOOK TSR_TEST_TC_LOST_CLAIM_MS=2000 site_start dr
site_start primary
site_add_dr primary dr dr "127.0.0.1:${SITE_LISTEN[dr]}"
DLOG=$(sdir dr)/tesserad.log

site_vol_create primary cv 4M
site_qemu_io primary cv "write -P 0x5c 0 1M" "write -P 0x5d $((3 << 20)) 4k" >/dev/null ||
	fail "write cv"
out=$(stsr primary replication enable cv --to dr --target-layout replicas:1 2>&1) ||
	fail "replication enable cv: $out"
for (( i=0; i<100; i++ )); do
	grep -q "test hook .*: target/cv, a copy here and vol/cv listing dr-n1 alone written" \
		"$DLOG" && break
	sleep 0.1
done
line=$(grep -m1 "test hook .*target/cv, a copy here" "$DLOG") ||
	fail "the hook did not run: $(grep "target volume cv" "$DLOG" | tail -3)"
log "hook: $line"
[[ $line == *": ok" ]] || fail "the hook's writes failed: $line"
[ ! -e "$HOOK" ] || fail "the hook file is still there"
rwait primary cv 'j["state"] == "streaming"' "streaming" 30
repl_caught_up cv 30
assert_eq "$(site_sha dr cv)" "$(site_sha primary cv)" "sha256 of cv at the DR vs the source"
grep -q "target volume cv (from .*): target/cv was written by another create of it since \
this one read it (absent): nothing done here" "$DLOG" ||
	fail "the create did not log that its claim lost: $(grep "target volume cv" "$DLOG" | tail -3)"
if grep -m1 "no replication target" "$DLOG"; then
	fail "the DR refused cv as no replication target"
fi

# case 2: the winner claimed, not recorded yet
echo claim >"$HOOK"
site_vol_create primary cw 4M
site_qemu_io primary cw "write -P 0x6e 0 1M" >/dev/null || fail "write cw"
out=$(stsr primary replication enable cw --to dr --target-layout replicas:1 2>&1) ||
	fail "replication enable cw: $out"
rwait primary cw 'j["state"] == "streaming"' "streaming" 30
repl_caught_up cw 30
assert_eq "$(site_sha dr cw)" "$(site_sha primary cw)" "sha256 of cw at the DR vs the source"
grep -q "test hook .*: target/cw written by another create: ok" "$DLOG" ||
	fail "the hook did not write target/cw: $(grep "target volume cw" "$DLOG" | tail -3)"
grep -q "target volume cw (from .*): target/cw was written by another create of it since \
this one read it (absent): nothing done here" "$DLOG" ||
	fail "the create of cw did not log that its claim lost"
line=$(grep -m1 -n "creating target volume cw " "$DLOG") ||
	fail "no create of cw after the wait: $(grep "target volume cw" "$DLOG" | tail -3)"
log "create after the wait: ${line#*INFO }"
[[ $line == *"(again: an earlier create of this stream did not finish)"* ]] ||
	fail "the create of cw after the wait was not resumed: $line"
n=$(head -n "${line%%:*}" "$DLOG" | grep -c "target cw is being created (by another create of it): retry")
log "the source was answered 'being created (by another create of it)' $n times before it"
[ "$n" -ge 3 ] || fail "the create whose claim lost created again after $n 'being created' \
answers (no wait for the winner's record)"

site_stop primary
site_stop dr
