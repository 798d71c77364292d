#!/usr/bin/env bash
# An attach that fails after an unclean coordinator leaves the volume record as
# it was: the next attach still knows which node was the unclean coordinator
# (its copy may hold writes the others never got) and converges.
#
# Before the fix (engine/cluster/attach.c), the failed attach had already
# written itself into vol/<name> as coordinator: the next attach took that
# node for the unclean coordinator, so the dead coordinator's copy, away, was
# recorded out of sync with an empty bitmap instead of a full resync, and its
# blocks of unacknowledged writes were never compared when it came back.
#
# 3 nodes, --peer-timeout 1000; a 16 MiB 3-replica volume, min-replicas 2,
# copies on n1 (metadata node), n2, n3.
#  1. attached on n2; crash_writer writes through n2; n2 is SIGKILLed (an
#     unclean coordinator);
#  2. n3 frozen (SIGSTOP): the attach on n1 is refused (only n1's copy
#     reachable);
#  3. n3 resumed (n2 still down): the attach on n1 succeeds, and n2's copy is
#     to be resynced in full: its dirty bytes are the whole volume (the
#     assertion that fails before the fix: 0);
#  4. every acknowledged write reads back through n1; a pattern write; n2
#     restarted: it resyncs; the writes read back, scrub --no-repair is
#     clean, the copies are identical after the stop.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera "$CRASH_WRITER"
require_cmd qemu-io

SIZE=$(( 16 << 20 ))
cl_start 3 --peer-timeout 1000
ctsr volume create fa --size 16M --replicas 3 --min-replicas 2 >/dev/null || fail "create"
nodes=$(cl_copy_nodes fa)
assert_eq "$nodes" "n1,n2,n3" "copy nodes"
WLOG=$CL_ROOT/acked.log
: >"$WLOG"

# ---- 1. the coordinator n2 dies while writing
ctsr volume attach fa --node n2 >/dev/null || fail "attach on n2"
"$CRASH_WRITER" write "$(cl_nbd_uri 2 fa)" "$WLOG" --qd 8 --conns 2 --seq-base 1000000000 \
	--seed 11 >"$CL_ROOT/writer.out" 2>&1 &
wpid=$!
track_pid "$wpid"
wait_acked "$WLOG" 5000 "$wpid"
log "killing the coordinator n2"
cl_kill 2
reap "$wpid" && wrc=0 || wrc=$?
[ "$wrc" = 3 ] || { cat "$CL_ROOT/writer.out" >&2; fail "crash_writer exited $wrc, want 3"; }
log "$(grep -o '[0-9]* acknowledged' "$CL_ROOT/writer.out")"

# ---- 2. n3 frozen: the attach on n1 fails (once n2's attachment lease lapsed)
freeze_pids "${CL_PID[3]}" || fail "pid ${CL_PID[3]} not stopped"
on_exit "kill -CONT ${CL_PID[3]} 2>/dev/null"
log "n3 frozen (pid ${CL_PID[3]})"
for (( i=0; i<100; i++ )); do
	out=$(ctsr volume attach fa --node n1 2>&1) && fail "attach on n1 with n2 down, n3 frozen succeeded: $out"
	printf '%s' "$out" | grepq "is attached on n2" || break
	sleep 0.2
done
printf '%s' "$out" | grepq "fewer than min-replicas" || fail "attach on n1 refused for another reason: $out"
log "attach on n1 refused: $out"

# ---- 3. n3 resumed: the attach on n1 converges n1, n3 and resyncs n2 in full
kill -CONT "${CL_PID[3]}"
for (( i=0; i<20; i++ )); do
	out=$(ctsr volume attach fa --node n1 2>&1) && break
	log "attach refused (try $i): $out"
	sleep 0.5
done
[ "$i" -lt 20 ] || fail "the volume cannot be attached on n1 any more: $out"
cl_wait_scrub_idle fa 60
grep -q "attaching fa epoch .*converging" "$(cl_dir 1)/tesserad.log" ||
	fail "the attach on n1 did not converge"
assert_eq "$(cl_copy_dirty fa n2)" "$SIZE" "dirty bytes of n2's copy (the unclean coordinator's) after the attach on n1"
out=$("$CRASH_WRITER" verify "$(cl_nbd_uri 1 fa)" "$WLOG" 2>&1) ||
	{ printf '%s\n' "$out" >&2; fail "acknowledged writes lost after the attach on n1"; }
log "verify through n1: ${out##*$'\n'}"

# ---- 4. n2 returns and resyncs
cl_qemu_io 1 fa "write -P 0x6b 4M 64k" >/dev/null || fail "write with n2 down"
cl_start_node 2
cl_wait_synced fa 120
cl_qemu_io 1 fa "read -P 0x6b 4M 64k" >/dev/null || fail "the write with n2 down does not read back"
cl_scrub_clean fa "after n2's resync"
ctsr volume detach fa >/dev/null || fail "detach"
cl_stop_all
cl_assert_copies_identical fa 1 2 3
