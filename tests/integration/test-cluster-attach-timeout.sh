#!/usr/bin/env bash
# A mirror attach that fails because replicas time out or are down leaves the
# copy states the metadata store records as they were, and the volume stays
# attachable once the replicas are back.
#
# Before the fix (engine/layout/mirror.c), a copy whose OPEN timed out or was
# refused during an attach was recorded out of sync at once (the peer client's
# on_fail runs before the OPEN's callback: copy_on_fail -> mirror_copy_failed
# -> hook), even when the attach then failed for lack of min-replicas copies:
# with 2 of 3 copies recorded out of sync, every later attach was refused
# ("fewer than min-replicas in-sync copies"), though no copy had missed a
# write.  (The mirror version of test-ec-attach-timeout.)
#
# 3 nodes, every one with --peer-timeout 1000; a 16 MiB 3-replica volume with
# min-replicas 2, coordinator n1 (the metadata node, holding a copy).
#  1. attach on n1, write a pattern through its NBD export, detach;
#  2. n2 and n3 frozen (SIGSTOP): their connections are accepted by the
#     kernel and never answered, so the OPENs time out: the attach is refused
#     and `volume show` still lists three copies in sync (also a second
#     later); the nodes resumed, the attach succeeds, three in sync, the
#     pattern reads back; detach;
#  3. n3 killed (its OPEN refused) and n2 frozen: the attach is refused, the
#     states are unchanged; n2 resumed (n3 still down): the attach succeeds
#     with n1 and n2 and records n3 out of sync; a write; n3 restarted: it
#     resyncs, the pattern with the write reads back, scrub --no-repair finds
#     nothing.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy
require_cmd qemu-io

SIZE=$(( 16 << 20 ))
copy_states() {
	ctsr --json volume show ma | json_get '",".join(c["node"] + "=" + c["state"] for c in j["copies"])'
}
state_of() { copy_states | tr ',' '\n' | grep "^$1=" | cut -d= -f2; }
ALL_IN_SYNC="in-sync,in-sync,in-sync"
states_only() { ctsr --json volume show ma | json_get '",".join(c["state"] for c in j["copies"])'; }

# refused_attach WHAT: the attach on n1 is refused after an OPEN timeout,
# and the recorded copy states are those of before.
refused_attach() {
	local before t0 ms
	before=$(copy_states)
	t0=$(date +%s%N)
	expect_fail 1 "fewer than min-replicas|cannot attach" ctsr volume attach ma --node n1
	ms=$(( ($(date +%s%N) - t0) / 1000000 ))
	(( ms >= 900 )) || fail "$1: the attach was refused in $ms ms: the OPENs did not time out"
	assert_eq "$(copy_states)" "$before" "$1: copy states right after the refused attach"
	sleep 1
	assert_eq "$(copy_states)" "$before" "$1: copy states a second after the refused attach"
}

cl_start 3 --peer-timeout 1000
ctsr volume create ma --size 16M --replicas 3 --min-replicas 2 >/dev/null || fail "create"

# ---- 1. data
ctsr volume attach ma --node n1 >/dev/null || fail "attach on n1"
EXP=$CL_ROOT/expected.img
cl_pattern "$EXP" "$SIZE" 13
nbdcopy "$EXP" "$(cl_nbd_uri 1 ma)" || fail "write the pattern"
ctsr volume detach ma >/dev/null || fail "detach"
assert_eq "$(states_only)" "$ALL_IN_SYNC" "copy states after the clean detach"

# ---- 2. n2 and n3 frozen: both OPENs time out
frozen=("${CL_PID[2]}" "${CL_PID[3]}")
freeze_pids "${frozen[@]}" || fail "pid ${frozen[*]} not stopped"
on_exit "kill -CONT ${frozen[*]} 2>/dev/null"
log "frozen: n2 n3 (pids ${frozen[*]})"
refused_attach "n2, n3 frozen"
grep -q "open: .*timed out\|connection failed: Connection timed out" "$(cl_dir 1)/tesserad.log" ||
	fail "n1 logged no OPEN timeout"
assert_eq "$(states_only)" "$ALL_IN_SYNC" "n2, n3 frozen: copy states"
kill -CONT "${frozen[@]}"
cl_wait_nodes_alive 3
cl_attach_retry ma n1
cl_wait_synced ma 60
assert_eq "$(vstatus ma 'j["in_sync"]')" 3 "copies in sync after the resume"
nbdcopy "$(cl_nbd_uri 1 ma)" "$CL_ROOT/got.img" || fail "read back"
cmp -s "$CL_ROOT/got.img" "$EXP" || fail "the pattern does not read back after the resume"
ctsr volume detach ma >/dev/null || fail "detach"

# ---- 3. n3 down (OPEN refused), n2 frozen (OPEN times out)
cl_kill 3
freeze_pids "${CL_PID[2]}" || fail "pid ${CL_PID[2]} not stopped"
log "n3 killed, n2 frozen (pid ${CL_PID[2]})"
refused_attach "n3 down, n2 frozen"
assert_eq "$(states_only)" "$ALL_IN_SYNC" "n3 down, n2 frozen: copy states"
kill -CONT "${CL_PID[2]}"
cl_attach_retry ma n1
assert_eq "$(state_of n1),$(state_of n2),$(state_of n3)" "in-sync,in-sync,out-of-sync" \
	"copy states after the attach without n3"
cl_qemu_io 1 ma "write -P 0x5a 1M 64k" >/dev/null || fail "write with n3 down"
cl_patch "$EXP" $(( 1 << 20 )) 65536 0x5a
cl_start_node 3
cl_wait_synced ma 60
assert_eq "$(vstatus ma 'j["in_sync"]')" 3 "copies in sync after n3 returned"
nbdcopy "$(cl_nbd_uri 1 ma)" "$CL_ROOT/got.img" || fail "read back"
cmp -s "$CL_ROOT/got.img" "$EXP" || fail "the pattern does not read back after n3's resync"
cl_scrub_clean ma "after the refused attaches"
ctsr volume detach ma >/dev/null || fail "detach"
cl_stop_all
cl_assert_copies_identical ma 1 2 3
