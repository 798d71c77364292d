#!/usr/bin/env bash
# An NBD open of an erasure-coded snapshot VOL@NAME whose chunk copies must be
# asked (ec_snapread.c snap_exists) stalls nothing else on its node while a
# chunk node is frozen (SIGSTOP) and the question waits for the peer timeout.
#
# 3 nodes (zones z1..z3), one worker each (--workers 1: every NBD connection
# and every coordinator of a node on the same worker), --peer-timeout 6000;
# a 2+1 volume v with a snapshot s, and a one-replica volume w, both attached
# on X, the node holding w's copy; Y, another node, frozen (SIGSTOP).
#  1. client A opens v@nosuch through X (X's chunk lacks it: the copies are
#     asked; Y does not answer for 6 s); client B does the same and is
#     killed while its question is out (its connection is freed once the
#     question ended: X's open NBD connections go to 0 after A's refusal);
#     meanwhile a third client's 100 reads of w through X all
#     complete with what was written, and a fourth client's open of w (the
#     volume set's lock) succeeds, all while A's open is still pending
#     (before: the handshake waited for the probe on the only worker, under
#     the volume set's lock: the reads and the open of w came after the
#     refusal).  A is then refused (libnbd: "No such file or directory").
#  2. Y thawed and v in sync again; Z, the third node, frozen; client C asks
#     for v@nosuch and X is stopped (SIGTERM) while the copies are asked: X
#     exits 0 once the question ended (the ASan build: nothing leaked, no use
#     after free; each probe left its connection and worker).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdinfo nbdcopy qemu-io

SIZE=4M
# debug: the probe's worker says "worker900: running" when the asking starts
cl_start 3 --workers 1 --peer-timeout 6000 --log-level debug
ctsr volume create v --size "$SIZE" --ec 2+1 --stripe-unit 16K --failure-domain zone >/dev/null ||
	fail "create v"
ctsr volume create w --size "$SIZE" --replicas 1 >/dev/null || fail "create w"
X=$(cl_copy_nodes w | tr -d n)
[ -n "$X" ] || fail "no copy node for w"
Y=$(( X % 3 + 1 ))
log "w's copy on n$X; v and w attached there; n$Y will be frozen"
ctsr volume attach v --node "n$X" >/dev/null || fail "attach v"
ctsr volume attach w --node "n$X" >/dev/null || fail "attach w"
cl_qemu_io "$X" w "write -P 0xa5 0 1M" >/dev/null || fail "write w"
cl_qemu_io "$X" v "write -P 0x5a 0 1M" >/dev/null || fail "write v"
ctsr snapshot create v s >/dev/null || fail "snapshot create v s"

LOGX=$(cl_dir "$X")/tesserad.log
probes() { grep -c "worker900: running" "$LOGX"; }
# wait_probes N: until X's log shows N probe workers started (30 s bound).
wait_probes() {
	local i
	for (( i=0; i<300; i++ )); do
		[ "$(probes)" -ge "$1" ] && return 0
		sleep 0.1
	done
	fail "X never started probe $1 (log shows $(probes))"
}
conns_open() { tsr "$(cl_dir "$X")" --json status | json_get 'j["nbd_connections_open"]'; }

freeze_pids "${CL_PID[$Y]}" || fail "SIGSTOP n$Y"
on_exit "kill -CONT ${CL_PID[$Y]} 2>/dev/null"
log "n$Y frozen"

# ---- 1. other I/O and opens go on while the copies are asked --------------
T=$CL_ROOT/t
mkdir -p "$T"
n0=$(probes)
nbdinfo "$(cl_nbd_uri "$X" v@nosuch)" >"$T/a.out" 2>&1 &
A_PID=$!
track_pid "$A_PID"
wait_probes $(( n0 + 1 ))
bg nbdinfo "$(cl_nbd_uri "$X" v@nosuch)"
B_PID=$BG_PID
wait_probes $(( n0 + 2 ))
kill -9 "$B_PID" || fail "client B gone before it was killed"
reap "$B_PID"
reads=()
for (( i=0; i<100; i++ )); do reads+=("read -P 0xa5 $(( i * 4096 )) 4k"); done
cl_qemu_io "$X" w "${reads[@]}" >"$T/reads.out" 2>&1
done_reads=$(grep -c "^read 4096/4096 bytes" "$T/reads.out")
nbdinfo --size "$(cl_nbd_uri "$X" w)" >"$T/w.size" 2>&1
w_open=$?
# the order: all of it came back while A's open still waits
kill -0 "$A_PID" 2>/dev/null ||
	fail "the open of v@nosuch ended before the 100 reads of w and the open of w did (the worker or the volume set's lock was held by the probe): $(cat "$T/a.out")"
assert_eq "$done_reads" 100 "reads of w completed while v@nosuch was pending ($(grep -m1 -v '^read' "$T/reads.out"))"
grep -q "Pattern verification failed" "$T/reads.out" && fail "w read back wrong data"
assert_eq "$w_open" 0 "nbdinfo w while v@nosuch was pending ($(cat "$T/w.size"))"
assert_eq "$(cat "$T/w.size")" 4194304 "w's size"
log "100 reads of w and an open of w done while v@nosuch was pending"
reap "$A_PID" && fail "v@nosuch opened with n$Y frozen and the other copy lacking it: $(cat "$T/a.out")"
grep -q "No such file or directory" "$T/a.out" || fail "A's refusal: $(cat "$T/a.out")"
log "A refused once the question ended"
assert_eq "$(conns_open)" 0 "X's open NBD connections after A (B killed mid-open)"
cl_assert_image "$X" w <(head -c 1M /dev/zero | tr '\0' '\245'; head -c 3M /dev/zero) "w after"

# ---- 2. X stopped while the copies are asked -------------------------------
kill -CONT "${CL_PID[$Y]}"
log "n$Y thawed"
cl_wait_synced v 120
Z=$(( Y % 3 + 1 ))
[ "$Z" = "$X" ] && Z=$(( Z % 3 + 1 ))
freeze_pids "${CL_PID[$Z]}" || fail "SIGSTOP n$Z"
on_exit "kill -CONT ${CL_PID[$Z]} 2>/dev/null"
log "n$Z frozen"
n0=$(probes)
bg nbdinfo "$(cl_nbd_uri "$X" v@nosuch)"
C_PID=$BG_PID
wait_probes $(( n0 + 1 ))
kill -0 "$C_PID" 2>/dev/null || fail "C's open ended before the stop"
cl_stop "$X"
reap "$C_PID" && fail "v@nosuch opened while X stopped"
grep -q "ERROR.*leak" "$LOGX" && fail "X: $(grep -m1 'ERROR.*leak' "$LOGX")"
log "X stopped cleanly with an open pending"
kill -CONT "${CL_PID[$Z]}"
cl_stop_all
log "ok"
