#!/usr/bin/env bash
# A mirror make-up (mirror_snap.c replay) reading a missed snapshot from a
# remote IN_SYNC copy's snapshot session (rsrc, rhandle) while that source
# copy's connection goes away.  Before (session 15) the replay's pieces went
# on with rp->rsrc->client as it is now: NULL once the source copy
# disconnected (tsr_peer_sums/tsr_peer_read dereferenced it: the
# coordinator died of SIGSEGV), or another connection once it was back,
# where rhandle (a slot number) may name an unrelated session.  Now the
# replay keeps the source's session generation (rsrc_gen) and ends
# -ENOTCONN when it changed (replay_source_lost: no SUMS, READ or CLOSE on
# it); the copy's next return replays again from another in-sync copy.
#
# 4 nodes; v 64 MiB, 3 replicas, none on n1 (replace-replica moves it off),
# attached on n1 (no local copy: the replay reads a remote snapshot).  The
# record's first copy A is the make-up's source, B the target, D the third.
# Pattern 1 written; B killed; pattern 2 written (B's head differs from s1
# everywhere); s1 cut; B restarted: its replay of s1 begins ("replaying 1
# missed snapshot operations" in n1's log); B frozen (its head's SUMS
# wait, A's answers arrive); A killed (n1 drops A's connection); B thawed:
# its SUMS answers make the replay's pieces go on.  Asserted: n1 alive; A
# restarted, v in sync within 90 s; v@s1 identical on A, B, D and pattern
# 2's sha256; v reads back pattern 2.  About 12 s.
# On the code before (7894531, private worktree): n1 dies with exit status
# 139 (2 of 2 runs).
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
require_cmd nbdcopy qemu-io
cl_start 4
ctsr volume create v --size 64M --replicas 3 >/dev/null || fail create
order=$(ctsr --json volume show v | json_get '" ".join(c["node"] for c in j["copies"])')
log "copies (record order): $order"
case " $order " in # no copy on n1: the replay reads a remote snapshot
*" n1 "*) out=$(ctsr volume replace-replica v --node n1 --to n4 2>&1) || fail "replace: $out" ;;
esac
order=$(ctsr --json volume show v | json_get '" ".join(c["node"] for c in j["copies"])')
read -r A B D <<<"$order"
A=${A#n}; B=${B#n}; D=${D#n}; C=1
log "coordinator n$C, source n$A (first in sync), target n$B, third n$D"
make_tmpdir W
cl_pattern "$W/p1" 67108864 1; cl_pattern "$W/p2" 67108864 2
ctsr volume attach v --node n$C >/dev/null || fail attach
cl_wait_synced v 90
nbdcopy "$W/p1" "$(cl_nbd_uri $C v)" || fail w1
cl_kill $B
nbdcopy "$W/p2" "$(cl_nbd_uri $C v)" || fail w2
ctsr snapshot create v s1 >/dev/null || fail snap
log "s1 cut without n$B"
cl_start_node $B
for (( i=0; i<300; i++ )); do grep -q "replaying 1 missed" "$(cl_dir $C)/tesserad.log" && break; sleep 0.02; done
freeze_pids "${CL_PID[$B]}"
sleep 0.3
grep -q "snapshot s1 replayed" "$(cl_dir $C)/tesserad.log" && fail "replay done before the source was killed: case not built"
cl_kill $A
sleep 0.5
kill -CONT "${CL_PID[$B]}"
sleep 3
if ! kill -0 "${CL_PID[$C]}" 2>/dev/null; then
	rc=0; wait "${CL_PID[$C]}" || rc=$?
	CL_PID[$C]=
	fail "coordinator n$C died: exit status $rc"
fi
log "coordinator alive"
cl_start_node $A
cl_wait_synced v 90
h=$(cl_assert_snap_identical v s1 $A $B $D) || fail "v@s1 differs"
assert_eq "$h" "$(sha256 "$W/p2")" "v@s1"
assert_eq "$(cl_image_sha $C v)" "$(sha256 "$W/p2")" "v"
cl_stop_all
log ok
