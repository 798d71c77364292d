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
# Cases 3 and 4 (review 17c D2, an operator's volume of a claimed name) and
# 5 (a live create's copies vs a second create of the stream), 6 (an undo
# with no uuid known: no delete by name), 7 (the record's compare-and-set
# lost to an operator's record), 8 (a lock this process left, taken over),
# 9 (a leftover not deleted once the lock is another's), 10 (a claim and a
# lock left, released by volume delete), 4b (a claim and a copy left: the
# release deletes the copy): below.
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

# enable_to_dr VOL: VOL replicates to dr as a replicas:1 target.
enable_to_dr() {
	local out
	out=$(stsr primary replication enable "$1" --to dr --target-layout replicas:1 2>&1) ||
		fail "replication enable $1: $out"
}
# streams_equal VOL: VOL streams, is caught up, and reads the same at both sites.
streams_equal() {
	rwait primary "$1" 'j["state"] == "streaming"' "streaming" 30
	repl_caught_up "$1" 30
	assert_eq "$(site_sha dr "$1")" "$(site_sha primary "$1")" "sha256 of $1 at the DR vs the source"
}
# hooked_stream MODE VOL BYTE: the hook armed with MODE, VOL (4M) written
# with BYTE over 64k at the primary and replicated to dr; it streams equal.
hooked_stream() {
	echo "$1" >"$HOOK"
	site_vol_create primary "$2" 4M
	site_qemu_io primary "$2" "write -P $3 0 64k" >/dev/null || fail "write $2"
	enable_to_dr "$2"
	streams_equal "$2"
}

site_vol_create primary cv 4M
site_qemu_io primary cv "write -P 0x5c 0 1M" "write -P 0x5d $((3 << 20)) 4k" >/dev/null ||
	fail "write cv"
enable_to_dr cv
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
streams_equal cv
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
enable_to_dr cw
streams_equal cw
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

# case 3 (ox, review 17c D2): an operator's `volume create ox` at the DR
# checked the name just before the create claimed it and recorded just after
# (the hook "operator": target/ox naming the stream, a copy here, vol/ox
# without the stream).  The stream must not adopt it: refused "was not
# created for that stream", and ox at the DR still reads as the operator
# made it (zeros).  Before the fix the stream attached ox as its target and
# overwrote it (ox streamed: "not refused ... within 10s").
echo operator >"$HOOK"
site_vol_create primary ox 4M
site_qemu_io primary ox "write -P 0x7a 0 1M" >/dev/null || fail "write ox"
enable_to_dr ox
for (( i=0; i<100; i++ )); do
	grep -q "asks for volume ox, stream [0-9a-f]*: vol/ox exists here but was not created for \
that stream" "$DLOG" && break
	sleep 0.1
done
grep -q "test hook .*: target/ox, a copy here and vol/ox listing dr-n1 alone written by an \
operator's volume create: ok" "$DLOG" || fail "the hook did not write ox: $(grep "volume ox" "$DLOG" | tail -3)"
line=$(grep -m1 "asks for volume ox, stream" "$DLOG") ||
	fail "the operator's ox not refused as the stream's target within 10s: $(rstat primary ox \
state) $(grep "volume ox" "$DLOG" | tail -2)"
log "refused: ${line#*WARN }"
# the way out names the source's restart: a target made again while the
# source runs on gets only what its log holds, not a whole copy
[[ $line == *"delete it (tessera volume delete ox) and restart its source at primary (tessera \
volume detach ox, then attach it, there)"* ]] || fail "the refusal of ox does not say to \
restart the source: ${line#*WARN }"
# the source is told why (its operator is the one to disable or rename);
# before: "the target cannot open it: File exists"
for (( i=0; i<50; i++ )); do
	grep -q "target refused seq 0: site dr: .*asks for volume ox, stream [0-9a-f]*: vol/ox \
exists here but was not created for that stream" "$(sdir primary)/tesserad.log" && break
	sleep 0.1
done
(( i < 50 )) || fail "the source was not told why ox is refused: \
$(grep "target refused seq 0" "$(sdir primary)/tesserad.log" | grep ox | tail -1)"
out=$(stsr primary replication disable ox 2>&1) || fail "replication disable ox: $out"
out=$(stsr dr volume attach ox 2>&1) || fail "volume attach ox at the DR: $out"
assert_eq "$(site_sha dr ox)" "$(head -c 4M /dev/zero | sha256sum | cut -d' ' -f1)" \
	"sha256 of the operator's ox at the DR (zeros, not the source's data)"

# case 4 (oy): a claim left by a create whose stream never came back (the hook
# "claim", then the source disabled).  `volume create oy` at the DR is refused
# naming the claim; `volume delete oy` releases it; then the create works.
# Before the fix the first create succeeded.
echo claim >"$HOOK"
site_vol_create primary oy 4M
enable_to_dr oy
for (( i=0; i<100; i++ )); do
	grep -q "test hook .*: target/oy written by another create: ok" "$DLOG" && break
	sleep 0.1
done
out=$(stsr primary replication disable oy 2>&1) || fail "replication disable oy: $out"
expect_fail 1 "is claimed by DR replication stream [0-9a-f]{16}.*tessera volume delete oy" \
	stsr dr volume create oy --size 4M --replicas 1
out=$(stsr dr volume delete oy 2>&1) || fail "volume delete oy (the claim alone): $out"
[[ $out == *"volume 'oy' was not recorded: its name's claim by DR stream "*" is released"* ]] ||
	fail "volume delete oy (the claim alone) did not say it released a claim: $out"
grep -q "target/oy, the claim of DR stream [0-9a-f]* on a volume not recorded, released" \
	"$DLOG" || fail "the claim of oy was not released: $out"
out=$(stsr dr volume create oy --size 4M --replicas 1 2>&1) ||
	fail "volume create oy after the release: $out"
# case 4b (oc, session 19): the same with the copy a create that died left
# here (the hook "claimcopy"): the release deletes it (it holds tcreate/oc
# meanwhile), so `volume create oc` works at once instead of "exists" until
# the leftover sweep (900 s).  Before: "volume create oc after the release:
# ... already exists".
echo claimcopy >"$HOOK"
site_vol_create primary oc 4M
enable_to_dr oc
for (( i=0; i<100; i++ )); do
	grep -q "test hook .*: target/oc written by another create, with a copy here: ok" "$DLOG" &&
		break
	sleep 0.1
done
(( i < 100 )) || fail "the hook did not run for oc: $(grep "volume oc" "$DLOG" | tail -3)"
out=$(stsr primary replication disable oc 2>&1) || fail "replication disable oc: $out"
out=$(stsr dr volume delete oc 2>&1) || fail "volume delete oc (a claim, a copy left): $out"
[[ $out == *"is released, and the copies its create left are deleted"* ]] ||
	fail "volume delete oc did not say it deleted the copies left: $out"
out=$(stsr dr volume create oc --size 4M --replicas 1 2>&1) ||
	fail "volume create oc after the release: $out"

# case 5 (lv): a second create of the stream that reads the claim after the
# first wrote it (the hook "live": target/lv naming the stream, the first
# create's copy here, tcreate/lv held by "dr-other" on a 1500 ms lease that
# is never renewed: a live create that dies 1.5 s later).  The create must
# not replace the live one's copy: it waits ("another create of it is live"),
# and only once the lease has lapsed does it resume and replace the copy (a
# dead create's leftover now); then lv streams.  Before the fix it was
# "resumed" at once and replaced the live create's copy.
hooked_stream live lv 0x4c
line=$(grep -m1 "test hook .*target/lv, a copy here (uuid " "$DLOG") ||
	fail "the hook did not run for lv: $(grep "volume lv" "$DLOG" | tail -3)"
[[ $line == *": ok" ]] || fail "the hook's writes for lv failed: $line"
uuid=${line#*"(uuid "}; uuid=${uuid%%)*}
left=$(grep -m1 -n "the copy on dr-n1 (uuid $uuid) is left over by a create" "$DLOG") ||
	fail "the live create's copy $uuid was never replaced: $(grep "volume lv" "$DLOG" | tail -3)"
live=$(grep -m1 -n "target volume lv (from .*): another create of it is live (tcreate/lv: \
dr-other pid 1): nothing done here" "$DLOG") ||
	fail "the live create's copy was replaced while its lock was held: ${left#*WARN }"
(( ${live%%:*} < ${left%%:*} )) || fail "the copy was replaced before the wait: ${left#*WARN }"
log "waited for the live create: ${live#*INFO }"

# case 6 (nv): a create about to record finds its lock gone (the hook
# "lapse": this node's lease lapsed meanwhile) with copies whose uuid it
# never learnt (the hook forgets them: nodes of an earlier build answered
# none).  It must not record, and its undo must not delete by name a copy
# it has no uuid of: left, with a WARN naming it; the stream's next create
# (resumed: the claim is kept) replaces it and nv streams.  Before the fix
# (finding 3) the undo deleted the copy by name, with no WARN.
hooked_stream lapse nv 0x6b
grep -q "test hook .*: the uuids of its 1 copy forgotten, tcreate/nv deleted: ok" "$DLOG" ||
	fail "the hook did not run for nv: $(grep "volume nv" "$DLOG" | tail -3)"
grep -q "target volume nv (replicas:1, from .*): tcreate/nv is no longer this create's" "$DLOG" ||
	fail "the create of nv did not stop at its lost lock: $(grep "volume nv" "$DLOG" | tail -3)"
line=$(grep -m1 "undo create of target nv: the copy on dr-n1 is left (its create answered \
no uuid" "$DLOG") || fail "the undo of nv did not leave its uuid-less copy: \
$(grep "target nv\|volume nv" "$DLOG" | grep -v "source nv" | tail -4)"
log "undo: ${line#*WARN }"

# case 7 (rx): tc_record's compare-and-set loses to an operator's vol/rx
# written after the create's copy (the hook "record": vol/rx listing dr-n1,
# without the stream).  The create fails "was just created by someone else",
# keeps the copy on dr-n1 (the record lists that node: the copy there is the
# record's), and, not resumed, deletes its own claim: the stream's next open
# is refused "no replication target".
echo record >"$HOOK"
site_vol_create primary rx 4M
enable_to_dr rx
for (( i=0; i<100; i++ )); do
	grep -q "asks for volume rx, which exists here and is no replication target" "$DLOG" && break
	sleep 0.1
done
grep -q "test hook .*: vol/rx listing dr-n1 written by an operator's volume create: ok" "$DLOG" ||
	fail "the hook did not write vol/rx: $(grep "volume rx" "$DLOG" | tail -3)"
grep -q "target volume rx (replicas:1, from .*): volume 'rx' was just created by someone else \
in this cluster; vol/rx is someone else's record: it and the copies it lists are kept" "$DLOG" ||
	fail "no ECANCELED refusal for rx: $(grep "volume rx" "$DLOG" | tail -3)"
grep -q "asks for volume rx, which exists here and is no replication target" "$DLOG" ||
	fail "target/rx not deleted (the stream's open of rx not refused)"
out=$(stsr primary replication disable rx 2>&1) || fail "replication disable rx: $out"
grep -q "delete: volume rx" "$DLOG" && fail "the copy of rx that vol/rx lists was deleted"
out=$(stsr dr volume attach rx 2>&1) || fail "volume attach rx at the DR (its copy): $out"

# case 8 (lk): tcreate/lk held by this DR process on its own lease, with no
# create of lk running (the hook "leak": what a create whose tc_unlock delete
# failed leaves).  The next create must take it over, not wait for a lease
# that a live node renews for ever.  Before the fix every VOLUME_OPEN was
# answered "another create of it is live (tcreate/lk: dr-n1 pid N)" until
# dr-n1 stopped: "site primary, lk: not streaming after 30s".
hooked_stream leak lk 0x1c
grep -q "test hook .*: tcreate/lk \"dr-n1 pid [0-9]*\" left on this node's lease: ok" "$DLOG" ||
	fail "the hook did not run for lk: $(grep "volume lk" "$DLOG" | tail -3)"
line=$(grep -m1 "target volume lk: tcreate/lk (dr-n1 pid [0-9]*) is this process's, left by \
an earlier create" "$DLOG") || fail "the leaked lock of lk was not taken over"
log "taken over: ${line#*WARN }"

# case 9 (tk): a resumed create (the hook "takeover": a dead create's
# target/tk and copy here) whose lock was taken by another create
# ("dr-other pid 2", 1500 ms lease) just before it deletes the copy it met:
# its node was frozen past its lease, and the copy may be the live one's.
# It must fail without deleting it ("is no longer this create's ... the copy
# met ... is not deleted"); after dr-other's lease lapsed, a create replaces
# it and tk streams.  Before the fix the create deleted the copy first
# (tc_record's check came after): "deleted while its lock was another's".
hooked_stream takeover tk 0x2d
line=$(grep -m1 "test hook .*: target/tk and a copy here (uuid .*) left by a dead create: ok" \
	"$DLOG") || fail "the hook did not run for tk: $(grep "volume tk" "$DLOG" | tail -3)"
uuid=${line#*"(uuid "}; uuid=${uuid%%)*}
grep -q "test hook .*: tcreate/tk taken by dr-other on a 1500 ms lease: ok" "$DLOG" ||
	fail "the takeover hook did not run for tk: $(grep "volume tk" "$DLOG" | tail -3)"
lost=$(grep -m1 -n "target volume tk (replicas:1, from .*): tcreate/tk is no longer this \
create's" "$DLOG") || fail "the create of tk did not stop at its lost lock: \
$(grep "volume tk" "$DLOG" | tail -3)"
left=$(grep -m1 -n "the copy on dr-n1 (uuid $uuid) is left over by a create" "$DLOG") ||
	fail "the dead create's copy $uuid of tk was never replaced"
(( ${lost%%:*} < ${left%%:*} )) ||
	fail "the copy of tk was deleted while its lock was another's: ${left#*WARN }"
log "stopped at the lost lock: ${lost#*WARN }"

# case 10 (ol): a claim left, and tcreate/ol left on dr-n1's lease by a
# create of ol whose lock delete failed (the hook "claimleak": the claim
# lost, the lock forgotten), the stream disabled: no create of ol will run
# again.  `volume delete ol` must release the name (the lock is this
# process's, no create of ol runs here), not answer "is being created" for
# as long as dr-n1 lives.  Before the fix: EBUSY "is being created as the
# target of DR stream ..." at every try.
echo claimleak >"$HOOK"
site_vol_create primary ol 4M
enable_to_dr ol
for (( i=0; i<100; i++ )); do
	grep -q "test hook .*: target/ol written by another create, this create's lock forgotten: \
ok" "$DLOG" && break
	sleep 0.1
done
(( i < 100 )) || fail "the hook did not run for ol: $(grep "volume ol" "$DLOG" | tail -3)"
out=$(stsr primary replication disable ol 2>&1) || fail "replication disable ol: $out"
out=$(stsr dr volume delete ol 2>&1) || fail "volume delete ol (a claim, a lock left): $out"
[[ $out == *"its name's claim by DR stream "*" is released"* ]] ||
	fail "volume delete ol did not release the claim: $out"
grep -q "cluster: tcreate/ol is this process's, left by an earlier create of ol here" "$DLOG" ||
	fail "the lock left on ol was not cleared by the delete"

# case 11 (sf): a target deleted at the DR leaves the site server's state
# file DIR/site/sf.state; an operator's `volume create sf` there (target/sf
# went with the delete) must not be adopted by the stream when it comes
# back, state file or not: refused, sf reads as the operator made it.
# Before the fix the state file let the stream attach and overwrite it.
site_vol_create primary sf 4M
site_qemu_io primary sf "write -P 0x3c 0 64k" >/dev/null || fail "write sf"
enable_to_dr sf
streams_equal sf
site_stop primary
site_stop dr # nothing holds sf open: the delete removes its copy
site_start dr
out=$(stsr dr volume delete sf 2>&1) || fail "volume delete sf at the DR: $out"
[ -e "$(sdir dr)/site/sf.state" ] || log "note: no state file of sf left at the DR"
out=$(stsr dr volume create sf --size 4M --replicas 1 2>&1) || fail "volume create sf: $out"
site_start primary
out=$(stsr primary volume attach sf 2>&1) || fail "volume attach sf at the primary: $out"
for (( i=0; i<100; i++ )); do
	grep -q "asks for volume sf, .*refused" "$DLOG" && break
	sleep 0.1
done
line=$(grep -m1 "asks for volume sf, .*refused" "$DLOG") ||
	fail "the operator's sf not refused as the stream's target within 10s: $(rstat primary sf \
state) $(grep "volume sf" "$DLOG" | tail -2)"
log "refused: ${line#*WARN }"
out=$(stsr primary replication disable sf 2>&1) || fail "replication disable sf: $out"
out=$(stsr dr volume attach sf 2>&1) || fail "volume attach sf at the DR: $out"
assert_eq "$(site_sha dr sf)" "$(head -c 4M /dev/zero | sha256sum | cut -d' ' -f1)" \
	"sha256 of the operator's sf at the DR (zeros, not the source's data)"

site_stop primary
site_stop dr
