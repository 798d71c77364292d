#!/usr/bin/env bash
# A replica that is away while an attach converges the copies after an
# unclean coordinator is resynced in full when it returns: it may hold blocks
# of the dead coordinator's unacknowledged writes that the converge made
# different on the others (DESIGN invariant 3: in-sync copies identical).
#
# Before the fix (engine/layout/mirror.c), such a copy was recorded out of
# sync with an empty bitmap: its resync copied only what was written after
# the attach, its blocks of unacknowledged writes stayed, and scrub found them.
#
# 3 nodes, --peer-timeout 1000; a 16 MiB 3-replica volume, min-replicas 2,
# copies on n1 (metadata node), n2, n3.
#  1. attached on n2; crash_writer writes through n2 (2 connections, 8 deep);
#     n1 is frozen (SIGSTOP): the writes in flight from then on reach n2 and
#     n3, and stay unprocessed in n1's sockets; n2 and n3 are SIGKILLed, then
#     n1 (what its sockets held is lost): n2's and n3's copies hold blocks of
#     unacknowledged writes that n1's does not;
#  2. n1 and n2 restarted (n3 stays down); the attach on n1 converges n1 and
#     n2 (n1's blocks win: the local copy on a tie) and records n3 out of
#     sync with the whole volume to resync: its dirty bytes are 16 MiB (0
#     before the fix); every acknowledged write reads back;
#  3. a write; n3 restarted: it resyncs; scrub --no-repair is clean (before
#     the fix: the unacknowledged writes' blocks mismatch), the write reads
#     back, the copies are identical after the stop.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera "$CRASH_WRITER"
require_cmd qemu-io

SIZE=$(( 16 << 20 ))
cl_start 3 --peer-timeout 1000
ctsr volume create cv --size 16M --replicas 3 --min-replicas 2 >/dev/null || fail "create"
nodes=$(cl_copy_nodes cv)
assert_eq "$nodes" "n1,n2,n3" "copy nodes"
WLOG=$CL_ROOT/acked.log
: >"$WLOG"

# ---- 1. writes in flight on n2 and n3, not on n1; all three die
ctsr volume attach cv --node n2 >/dev/null || fail "attach on n2"
"$CRASH_WRITER" write "$(cl_nbd_uri 2 cv)" "$WLOG" --qd 8 --conns 2 --seq-base 1000000000 \
	--seed 17 >"$CL_ROOT/writer.out" 2>&1 &
wpid=$!
track_pid "$wpid"
wait_acked "$WLOG" 5000 "$wpid"
p1=${CL_PID[1]}
freeze_pids "$p1" || fail "pid $p1 not stopped"
on_exit "kill -CONT $p1 2>/dev/null"
log "n1 frozen (pid $p1)"
sleep 0.5
acked=$(wc -l <"$WLOG")
cl_kill 2
cl_kill 3
kill -9 "$p1"
kill -CONT "$p1" 2>/dev/null
cl_kill 1
reap "$wpid" && wrc=0 || wrc=$?
[ "$wrc" = 3 ] || { cat "$CL_ROOT/writer.out" >&2; fail "crash_writer exited $wrc, want 3"; }
assert_eq "$(wc -l <"$WLOG")" "$acked" "writes acknowledged with n1 frozen"
log "all three killed: $acked writes acknowledged"

# ---- 2. n1, n2 back; the attach on n1 converges them, n3 away
cl_start_node 1
cl_start_node 2
for (( i=0; i<100; i++ )); do
	out=$(ctsr volume attach cv --node n1 2>&1) && break
	sleep 0.3
done
[ "$i" -lt 100 ] || fail "cannot attach cv on n1: $out"
log "attached on n1 (try $i)"
grep -q "attaching cv epoch .*converging" "$(cl_dir 1)/tesserad.log" ||
	fail "the attach on n1 did not converge"
cl_wait_scrub_idle cv 60
assert_eq "$(vstatus cv "[c['state'] for c in j['volume']['copies'] if c['node']=='n3'][0]")" \
	out-of-sync "n3's copy after the attach"
assert_eq "$(cl_copy_dirty cv n3)" "$SIZE" "dirty bytes of n3's copy (away during the converge)"
out=$("$CRASH_WRITER" verify "$(cl_nbd_uri 1 cv)" "$WLOG" 2>&1) ||
	{ printf '%s\n' "$out" >&2; fail "acknowledged writes lost after the attach on n1"; }
log "verify through n1: ${out##*$'\n'}"

# ---- 3. n3 returns and resyncs
cl_qemu_io 1 cv "write -P 0x3c 8M 64k" >/dev/null || fail "write with n3 down"
cl_start_node 3
cl_wait_synced cv 120
log "n3 resynced: $(vstatus cv '"%d bytes in %d regions copied (converge and resyncs)" % (j["resync_bytes_copied"], j["resync_regions_copied"])')"
cl_qemu_io 1 cv "read -P 0x3c 8M 64k" >/dev/null || fail "the write with n3 down does not read back"
cl_scrub_clean cv "after n3's resync"
ctsr volume detach cv >/dev/null || fail "detach"
cl_stop_all
cl_assert_copies_identical cv 1 2 3
