#!/usr/bin/env bash
# An EC chunk copy that is away while an attach recovers the stripe
# transactions of a coordinator that died with writes in flight: when it
# returns, its resync leaves every stripe consistent (parity matches data) and
# every acknowledged write reads back, also degraded (decoded with its chunks).
#
# The mirror had this gap (e87adb0, test-cluster-converge-away): a copy away
# at a converging attach was recorded out of sync with an empty bitmap.  The
# EC layout changes chunks in place only by COMMIT of a staged txn (and resync
# or scrub repair of a copy that is not in sync), so what the away copy may
# hold is in its stage journal: the recovery marks the stripe of every txn the
# others list in its bitmap (ec.c step 3), and its resync lists its own
# journal when it returns and marks those stripes too (ec_resync.c step 1).
# This test is the evidence for that (it passes on the code as it is).  With
# both markings disabled (ec.c step 3 for copies not open, ec_resync.c step 1)
# it fails: scrub --no-repair after n3's resync finds 16 stripes that do not
# decode consistently (n3's chunks of txns rolled forward without it).
#
# 7 nodes (zones z1..z7); a 128 MiB 4+2 (32 dirty regions per chunk) volume on n1..n6; n7 holds no chunk.
#  1. attached on n7; crash_writer writes through n7 (2 connections, 8 deep,
#     partial-stripe writes); n3 is frozen (SIGSTOP, shorter than the peer
#     timeout: not failed): the txns touching n3's chunk from then on stay in
#     flight (staged on some participants, n3's STAGEs or COMMITs unread in
#     its sockets); n7 is SIGKILLed, then n3 and every other chunk node;
#  2. n1, n2, n4, n5, n6 restarted (their journals replayed), n3 stays down;
#     the attach on n1 recovers (rolls the listed txns forward or back,
#     releases them) and converges; n3 is recorded out of sync; every
#     acknowledged write reads back;
#  3. the image read whole; a 4 KiB write; n3 restarted: it lists its own
#     journal (entries of the dead coordinator), resyncs; `scrub --no-repair`
#     finds 0 mismatches; the image reads as before plus the write, also with
#     n4 and n5 stopped (every stripe then decoded from n1, n2, n3, n6), and
#     every acknowledged write of step 1 reads back.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera "$CRASH_WRITER"
require_cmd nbdcopy qemu-io

X=3 # the chunk node away at the recovering attach
cl_start 6
ctsr volume create ca --size 128M --ec 4+2 --failure-domain zone >/dev/null || fail "create"
nodes=$(cl_copy_nodes ca)
assert_eq "$nodes" "n1,n2,n3,n4,n5,n6" "chunk nodes"
# n7 joins after the create: it holds no chunk
CL_PORT[7]=$(free_port)
CL_N=7
cl_start_node 7
cl_wait_nodes_alive 7
WLOG=$CL_ROOT/acked.log
: >"$WLOG"
state_of() { vstatus ca "[c['state'] for c in j['volume']['copies'] if c['node']=='n$1'][0]"; }

# ---- 1. writes in flight, n3 frozen; the coordinator and every chunk node die
cl_attach_retry ca n7 30
"$CRASH_WRITER" write "$(cl_nbd_uri 7 ca)" "$WLOG" --qd 8 --conns 2 --seq-base 1000000000 \
	--seed 23 >"$CL_ROOT/writer.out" 2>&1 &
wpid=$!
track_pid "$wpid"
wait_acked "$WLOG" 5000 "$wpid"
px=${CL_PID[$X]}
freeze_pids "$px" || fail "pid $px not stopped"
on_exit "kill -CONT $px 2>/dev/null"
log "n$X frozen (pid $px)"
sleep 0.5
acked=$(wc -l <"$WLOG")
cl_kill 7
for i in 1 2 4 5 6; do
	cl_kill "$i"
done
kill -9 "$px"
kill -CONT "$px" 2>/dev/null
cl_kill "$X"
reap "$wpid" && wrc=0 || wrc=$?
[ "$wrc" = 3 ] || { cat "$CL_ROOT/writer.out" >&2; fail "crash_writer exited $wrc, want 3"; }
[ "$acked" -gt 0 ] || fail "no write acknowledged before n$X froze"
log "all killed: $(wc -l <"$WLOG") writes acknowledged ($acked when n$X froze)"
grep -q "copy .* (n$X) failed" "$(cl_dir 7)/tesserad.log" &&
	fail "n7 failed n$X's copy while it was frozen (the freeze must stay below the peer timeout)"

# ---- 2. all chunk nodes but n3 back; the attach on n1 recovers without it
for i in 1 2 4 5 6; do
	cl_start_node "$i"
done
cl_attach_retry ca n1 30
log "attached on n1"
grep -q "attaching ca epoch .*converging" "$(cl_dir 1)/tesserad.log" ||
	fail "the attach on n1 did not converge"
recov=$(grep -c "ec ca: txn .*roll \(forward\|back\)" "$(cl_dir 1)/tesserad.log")
log "recovery on n1: $recov txn decisions ($(vstatus ca '"%d forward, %d back" % (j["txn_rolled_forward"], j["txn_rolled_back"])'))"
cl_wait_scrub_idle ca 60
assert_eq "$(state_of $X)" out-of-sync "n$X's copy after the attach"
out=$("$CRASH_WRITER" verify "$(cl_nbd_uri 1 ca)" "$WLOG" 2>&1) ||
	{ printf '%s\n' "$out" >&2; fail "acknowledged writes lost after the attach on n1"; }
log "verify through n1 (n$X away): ${out##*$'\n'}"

# ---- 3. a write; n3 returns and resyncs; everything reads back, also degraded
# (a qemu-io write of one block, not crash_writer's writes all over the volume:
# n3's bitmap must hold little besides what the recovery and its own journal
# marked, or the check below could not fail)
EXP=$CL_ROOT/expected.img
nbdcopy "$(cl_nbd_uri 1 ca)" "$EXP" || fail "read the whole volume with n$X away"
cl_qemu_io 1 ca "write -P 0x5d 40M 4k" >/dev/null || fail "write with n$X away"
cl_patch "$EXP" $(( 40 << 20 )) 4096 0x5d
cl_start_node "$X"
cl_wait_synced ca 120
older=$(grep -o "copy [0-9]* (n$X): [0-9]* entries of an older coordinator" "$(cl_dir 1)/tesserad.log" |
	tail -1)
log "n$X resynced: ${older:-no entries of an older coordinator in its journal}; $(vstatus ca '"%d bytes in %d regions copied" % (j["resync_bytes_copied"], j["resync_regions_copied"])')"
cl_scrub_clean ca "after n$X's resync"
nbdcopy "$(cl_nbd_uri 1 ca)" "$CL_ROOT/got.img" || fail "read the whole volume"
cmp -s "$CL_ROOT/got.img" "$EXP" ||
	fail "the volume reads differently after n$X's resync: $(cmp "$CL_ROOT/got.img" "$EXP" | head -1)"
cl_stop 4
cl_stop 5
cl_wait_state ca n4 out-of-sync 30
cl_wait_state ca n5 out-of-sync 30
nbdcopy "$(cl_nbd_uri 1 ca)" "$CL_ROOT/degraded.img" || fail "read the whole volume with n4, n5 down"
cmp -s "$CL_ROOT/degraded.img" "$EXP" ||
	fail "the volume reads differently with n4, n5 down (decoded with n$X's chunks): $(cmp "$CL_ROOT/degraded.img" "$EXP" | head -1)"
out=$("$CRASH_WRITER" verify "$(cl_nbd_uri 1 ca)" "$WLOG" 2>&1)
bad=$(printf '%s\n' "$out" | sed -n 's/.*, \([0-9]*\) bad$/\1/p')
# the one block written over by qemu-io is crash_writer's "bad" at most
[ -n "$bad" ] && [ "$bad" -le 1 ] ||
	{ printf '%s\n' "$out" >&2; fail "acknowledged writes wrong with n4, n5 down"; }
log "degraded read (n4, n5 down): same image; ${out##*$'\n'}"
ctsr volume detach ca >/dev/null || fail "detach"
cl_stop_all
