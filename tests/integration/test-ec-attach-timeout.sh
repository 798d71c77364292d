#!/usr/bin/env bash
# An EC attach whose chunk opens time out fails without changing the copy
# states the metadata store records, and the volume stays attachable.
#
# Before the fix (engine/layout/ec.c), a copy whose OPEN timed out during an
# attach was recorded out of sync at once (copy_on_fail -> ec_copy_failed),
# even when the attach then failed for lack of k copies: with 3 of a 4+2
# volume's copies recorded out of sync, every later attach was refused
# ("fewer than min-replicas in-sync copies"), though no copy had missed a
# write.
#
# 7 nodes (zones z1..z7); a 16 MiB 4+2 volume on n1..n6; n7 holds no chunk
# and is the coordinator, with --peer-timeout 1000.
#  1. attach on n7, write a pattern through its NBD export, detach;
#  2. three chunk nodes other than n1 (the metadata node) frozen (SIGSTOP):
#     their connections are accepted by the kernel, never answered, so the
#     attach's OPENs time out: the attach is refused, and `volume show`
#     still lists all six copies in sync (also a second later);
#  3. the nodes resumed: the attach on n7 succeeds (retried while a node
#     that just woke up answers slowly), all six copies are in sync, the
#     pattern reads back, scrub --no-repair finds nothing.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy

SIZE=$(( 16 << 20 ))
copy_states() {
	ctsr --json volume show wh | json_get '",".join(c["state"] for c in j["copies"])'
}
ALL_IN_SYNC="in-sync,in-sync,in-sync,in-sync,in-sync,in-sync"

cl_start 6
ctsr volume create wh --size 16M --ec 4+2 --failure-domain zone >/dev/null || fail "create"
read -r -a C <<<"$(ctsr --json volume show wh | json_get '" ".join(c["node"] for c in j["copies"])')"
CL_PORT[7]=$(free_port)
CL_N=7
cl_start_node 7 --peer-timeout 1000
cl_wait_nodes_alive 7
log "wh: chunks on ${C[*]}; coordinator n7 (peer timeout 1000 ms)"

# ---- 1. data
ctsr volume attach wh --node n7 >/dev/null || fail "attach on n7"
EXP=$CL_ROOT/expected.img
cl_pattern "$EXP" "$SIZE" 11
nbdcopy "$EXP" "$(cl_nbd_uri 7 wh)" || fail "write the pattern"
ctsr volume detach wh >/dev/null || fail "detach"
assert_eq "$(copy_states)" "$ALL_IN_SYNC" "copy states after the clean detach"

# ---- 2. three chunk nodes frozen: the attach's OPENs time out
frozen=()
for n in "${C[@]}"; do
	[ "$n" = n1 ] && continue
	frozen+=("${CL_PID[${n#n}]}")
	[ ${#frozen[@]} = 3 ] && break
done
freeze_pids "${frozen[@]}" || fail "pid ${frozen[*]} not stopped"
on_exit "kill -CONT ${frozen[*]}"
log "frozen: pids ${frozen[*]}"
t0=$(date +%s%N)
expect_fail 1 "fewer than min-replicas|cannot attach" ctsr volume attach wh --node n7
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
(( ms >= 900 )) || fail "the attach was refused in $ms ms: the OPENs did not time out"
grep -q "open: .*timed out\|connection failed: Connection timed out" "$(cl_dir 7)/tesserad.log" ||
	fail "n7 logged no OPEN timeout"
assert_eq "$(copy_states)" "$ALL_IN_SYNC" "copy states right after the refused attach"
sleep 1
assert_eq "$(copy_states)" "$ALL_IN_SYNC" "copy states a second after the refused attach"
kill -CONT "${frozen[@]}"
cl_wait_nodes_alive 7

# ---- 3. attachable again, nothing lost
ok=
for (( i=0; i<20; i++ )); do
	out=$(ctsr volume attach wh --node n7 2>&1) && { ok=1; break; }
	log "attach after the resume refused (try $i): $out"
	sleep 0.5
done
[ -n "$ok" ] || fail "the volume cannot be attached any more: $out"
cl_wait_synced wh 120
assert_eq "$(vstatus wh 'j["in_sync"]')" 6 "copies in sync after the attach"
nbdcopy "$(cl_nbd_uri 7 wh)" "$CL_ROOT/got.img" || fail "read back"
cmp -s "$CL_ROOT/got.img" "$EXP" || fail "the pattern does not read back"
cl_scrub_clean wh "after the refused attach"
ctsr volume detach wh >/dev/null || fail "detach"
cl_stop_all
