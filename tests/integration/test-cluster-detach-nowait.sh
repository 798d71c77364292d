#!/usr/bin/env bash
# A detach that waits for an NBD client still connected (up to 2 s, then it
# is refused, the volume left attached) does not hold tesserad's control loop meanwhile: another
# admin call sent while the detach waits is answered before the detach is.
# Before, the wait slept on the loop (attach.c clients_gone), so every admin
# call, the CSI plugin's and the cluster tick stalled behind it.
#   1. a client holds d through n1; the detach of d is sent in the background;
#      once n1 logs that the detach waits (or the detach has already
#      answered), `volume list` and `node list` are sent: both answer before
#      the detach (the order of completions is asserted, never a time);
#   2. a second detach and an attach of d during the wait are refused (EBUSY)
#      rather than racing the first;
#   3. the client goes: the detach answers, d is detached, and attaches again;
#   4. the detach sent through n2 (which forwards it to n1, the coordinator):
#      a volume list through n2 answers before it (n2 waits for n1's answer
#      without holding its loop either).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera

cl_start 2
LOG1=$(cl_dir 1)/tesserad.log
ORDER=$CL_ROOT/order

ctsr volume create d --size 64M --replicas 2 >/dev/null || fail "volume create d"
ctsr volume attach d --node n1 >/dev/null || fail "volume attach d"

"$NBD_HOLD" "$(cl_nbd_uri 1 d)" "$CL_ROOT/held" &
HOLD=$!
track_pid "$HOLD"
for (( i=0; i<100; i++ )); do [ -f "$CL_ROOT/held" ] && break; sleep 0.1; done
[ -f "$CL_ROOT/held" ] || fail "nbd_hold did not connect"

# ---- 1. the detach waits; other admin calls answer first
: >"$ORDER"
( ctsr volume detach d >"$CL_ROOT/detach.out" 2>&1; echo "detach $?" >>"$ORDER" ) &
DETACH=$!
track_pid "$DETACH"
# until the detach waits for the client, or has already answered (the old code)
for (( i=0; i<300; i++ )); do
	grep -qE "detach d: waiting up to [0-9]+ ms for its NBD clients" "$LOG1" && break
	grep -q '^detach' "$ORDER" && break
	sleep 0.1
done
ctsr volume list >/dev/null || fail "1: volume list during the detach"
echo "list" >>"$ORDER"
ctsr_via 1 node list >/dev/null || fail "1: node list during the detach"
echo "nodes" >>"$ORDER"
# ---- 2. a second detach and an attach while it waits: refused, not raced
if ! grep -q '^detach' "$ORDER"; then
	out=$(ctsr volume detach d 2>&1) && fail "2: a second detach during the wait succeeded"
	echo "$out" | grepq "being detached" || fail "2: second detach: unexpected error: $out"
	out=$(ctsr volume attach d --node n1 2>&1) && fail "2: an attach during the wait succeeded"
	echo "$out" | grepq "being detached" || fail "2: attach: unexpected error: $out"
	log "2: a second detach and an attach during the wait are refused: $out"
fi
kill -TERM "$HOLD"
reap "$HOLD" || true
reap "$DETACH" || true
order=$(tr '\n' ' ' <"$ORDER")
[ "$order" = "list nodes detach 0 " ] ||
	fail "1: completions in order '$order', want 'list nodes detach 0' (the detach held the loop)"
log "1: volume list and node list answered while the detach waited for its client"

# ---- 3. the detach happened; d attaches again
wait_log 1 "detach d epoch [0-9]+ from n1" 10
out=$(ctsr volume detach d 2>&1) && fail "3: d still attached after the detach"
echo "$out" | grepq "not attached" || fail "3: detach after detach: unexpected: $out"
cl_attach_retry d n1

# ---- 4. the same detach sent through n2, which forwards it to n1: n2's
# loop does not wait for n1's answer either
"$NBD_HOLD" "$(cl_nbd_uri 1 d)" "$CL_ROOT/held4" &
HOLD=$!
track_pid "$HOLD"
for (( i=0; i<100; i++ )); do [ -f "$CL_ROOT/held4" ] && break; sleep 0.1; done
[ -f "$CL_ROOT/held4" ] || fail "nbd_hold did not connect (4)"
waits=$(grep -cE "detach d: waiting up to [0-9]+ ms for its NBD clients" "$LOG1")
: >"$ORDER"
( ctsr_via 2 volume detach d >"$CL_ROOT/detach4.out" 2>&1; echo "detach $?" >>"$ORDER" ) &
DETACH=$!
track_pid "$DETACH"
for (( i=0; i<300; i++ )); do
	(( $(grep -cE "detach d: waiting up to [0-9]+ ms for its NBD clients" "$LOG1") > waits )) && break
	grep -q '^detach' "$ORDER" && break
	sleep 0.1
done
ctsr_via 2 volume list >/dev/null || fail "4: volume list through n2 during the detach"
echo "list" >>"$ORDER"
kill -TERM "$HOLD"
reap "$HOLD" || true
reap "$DETACH" || true
order=$(tr '\n' ' ' <"$ORDER")
[ "$order" = "list detach 0 " ] ||
	fail "4: completions through n2 in order '$order', want 'list detach 0' ($(cat "$CL_ROOT/detach4.out"))"
log "4: n2 answered volume list while the detach it forwarded to n1 waited"
out=$(ctsr volume detach d 2>&1) && fail "4: d still attached after the forwarded detach"
echo "$out" | grepq "not attached" || fail "4: detach after detach: unexpected: $out"

cl_attach_retry d n1
ctsr volume detach d >/dev/null || fail "3: volume detach d (no client)"
wait_log 1 "detach d epoch [0-9]+ from n1 \(clean\)" 10
cl_stop_all
log "PASS"
