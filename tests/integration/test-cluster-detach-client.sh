#!/usr/bin/env bash
# A detach and the volume's NBD clients (engine/cluster/attach.c detach_admin).
#   1. a client holds the export and closes 0.5 s after the detach was sent
#      (an unmount and nbdfuse ending right before the CSI driver's detach):
#      the detach waits for it, is logged clean, no "still connected"
#      warning, and a snapshot delete (which needs a clean last detach)
#      succeeds;
#   2. a client that stays connected: the detach (sent through n2, which
#      forwards it to n1) is refused after the 2 s grace (--json: the
#      client's address "unix pid PID" in nbd_clients), the volume stays
#      attached, and the client writes and reads back after the refusal;
#   3. --force closes that client (it sees its connection end), answers
#      clients_disconnected 1, the detach is clean (logged "(clean)", and a
#      snapshot delete needing a clean last detach succeeds), and the write
#      the client had acknowledged is read back after a re-attach;
#   4. a delete of the attached volume is still refused;
#   5. --force while the client's write waits for n2 (SIGSTOP; the peer
#      timeout is 5 s here, volume d has min-replicas 2): n2 is dropped at
#      the peer timeout, the write stalls below min-replicas (until the 9 s
#      --write-wait), so the handles outlive the forced detach's wait (2 s +
#      the peer timeout): the detach is not clean, and its reply says so
#      (before: a plain "detached", as if clean); the write fails at the
#      write wait, then the client is closed;
#   6. --force while the client's write waits for n2 (SIGSTOP), n2 killed
#      1 s into the detach (volume e, min-replicas 1): the detached
#      coordinator records n2 out-of-sync before the detach records clean,
#      and the next attach resyncs n2: both copies hold the write (before:
#      "cannot record copy 1 (n2) out-of-sync: Stale file handle", n2 left
#      in sync without the write under a clean detach; a scrub found it);
#   7. --force while the client's write waits 3 s for n2 (SIGSTOP, then
#      SIGCONT: slow, within the 5 s peer timeout; volume f, min-replicas
#      1): the detach waits for the write (2 s + the peer timeout after a
#      forced close), so it is clean, the client saw its write acknowledged
#      (its read back after it may find the connection closed), and both
#      copies hold it (before: "detached 'f' not cleanly: ...
#      still in flight 2000 ms after the detach").
# (A standalone tesserad has no detach: the command is refused there.)
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera

cl_start 2 --peer-timeout 5000 --write-wait 9000
LOG1=$(cl_dir 1)/tesserad.log

ctsr volume create d --size 64M --replicas 2 >/dev/null || fail "volume create d"
ctsr volume attach d --node n1 >/dev/null || fail "volume attach d"
ctsr snapshot create d s1 >/dev/null || fail "snapshot create d s1"
ctsr snapshot create d s2 >/dev/null || fail "snapshot create d s2"

# hold FLAG [watch]: an NBD client on d (HOLD_VOL) through n1 until killed;
# waits for it
hold() {
	"$NBD_HOLD" "$(cl_nbd_uri 1 "${HOLD_VOL:-d}")" "$@" &
	HOLD=$!
	track_pid "$HOLD"
	for (( i=0; i<100; i++ )); do [ -f "$1" ] && break; sleep 0.1; done
	[ -f "$1" ] || fail "nbd_hold did not connect"
}

# ---- 1. the client closes while the detach runs
hold "$CL_ROOT/held1"
( sleep 0.5; kill -TERM "$HOLD" ) &
killer=$!
ctsr volume detach d >/dev/null || fail "volume detach d (1)"
reap "$killer" || true
reap "$HOLD" || true
wait_log 1 "detach d epoch [0-9]+ from n1 \(clean\)" 10
if grep -q "volume d detached with NBD clients still connected" "$LOG1"; then
	fail "1: the detach counted a client that had closed as still connected"
fi
ctsr snapshot delete d s1 >/dev/null ||
	fail "1: snapshot delete after the detach refused (the detach was not clean)"
log "1: detach clean after the client closed; snapshot s1 deleted"

# ---- 2. a client that stays: the detach is refused, nothing changes
ctsr volume attach d --node n1 >/dev/null || fail "volume attach d (2)"
hold "$CL_ROOT/held2" watch
# held_write N BYTE: the client's write N (SIGUSR1) acknowledged and read back
held_write() {
	kill -USR1 "$HOLD"
	for (( i=0; i<100; i++ )); do
		grep -q "^write $1 " "$CL_ROOT/held2.log" 2>/dev/null && break
		sleep 0.05
	done
	grep -q "^write $1 $2 ok" "$CL_ROOT/held2.log" ||
		fail "2: the client's write $1: $(tail -n1 "$CL_ROOT/held2.log" 2>&1)"
}
# stalled_write VOL STEP: VOL's client (nbd_hold watch, log held<STEP>.log) sends
# write 0 (0x41) of block 1 with n2 stopped: it reaches n1 and waits for n2
stalled_write() {
	HOLD_VOL=$1 hold "$CL_ROOT/held$2" watch
	kill -STOP "${CL_PID[2]}"
	kill -USR1 "$HOLD"
	sleep 0.3
}

# n2_block1_written VOL STEP: n2's copy of VOL holds 0x41 in block 1, as n1's
n2_block1_written() {
	assert_eq "$(dd if="$(cl_copy_file 2 "$1")" bs=4096 skip=1 count=1 2>/dev/null |
		od -An -tx1 | head -1 | tr -d ' ')" 41414141414141414141414141414141 \
		"$2: block 1 of n2's copy of $1"
	cl_assert_copies_identical "$1" 1 2
}

held_write 0 0x41
# through n2: forwarded to n1, the refusal's fields come back
out=$(ctsr_via 2 --json volume detach d 2>"$CL_ROOT/err2") &&
	fail "2: a detach with a client connected was not refused: $out"
grep -q "in use by 1 NBD client on n1 (unix pid $HOLD)" "$CL_ROOT/err2" ||
	fail "2: the refusal does not name the client: $(cat "$CL_ROOT/err2")"
grep -q "detach with --force" "$CL_ROOT/err2" || fail "2: the refusal says no way out"
assert_eq "$(printf '%s' "$out" | json_get 'j["nbd_clients"]')" "[\"unix pid $HOLD\"]" \
	"2: --json nbd_clients"
assert_eq "$(ctsr --json volume show d | json_get 'j["attached_node"]')" n1 \
	"2: the volume after the refused detach"
held_write 1 0x42
grep -q "volume d detached with NBD clients still connected" "$LOG1" &&
	fail "2: a detach went ahead with the client connected"
log "2: refused with the client named; it still writes"

# ---- 3. --force: the client is closed, the detach is clean
from=$(( $(log_lines 1) + 1 ))
out=$(ctsr --json volume detach d --force) || fail "3: volume detach d --force"
assert_eq "$(printf '%s' "$out" | json_get 'j["clients_disconnected"]')" 1 \
	"3: clients_disconnected"
wait_dead "$HOLD" 5 "3: nbd_hold after the forced detach"
grep -qx closed "$CL_ROOT/held2.log" || fail "3: the client did not see its connection end"
wait_log_from 1 "$from" "detach d epoch [0-9]+ from n1 \(clean\)"
ctsr snapshot delete d s2 >/dev/null || fail "3: snapshot delete after --force (not clean)"
cl_attach_retry d n1
cl_qemu_io 1 d "read -P 0x42 4096 4096" | grep -q "read 4096/4096" ||
	fail "3: the client's acknowledged write is not read back"
log "3: --force closed the client, detached cleanly; its write read back"

# ---- 4. a delete of the attached volume is still refused
expect_fail 1 "attached" ctsr volume delete d
ctsr volume detach d >/dev/null || fail "volume detach d (4)"

# ---- 5. --force while a write waits for n2: the reply says "not cleanly"
cl_attach_retry d n1
stalled_write d 5
ctsr volume detach d --force >"$CL_ROOT/out5" 2>&1 ||
	fail "5: volume detach d --force: $(cat "$CL_ROOT/out5")"
kill -CONT "${CL_PID[2]}"
grep -q "not cleanly" "$CL_ROOT/out5" ||
	fail "5: the reply of a detach that was not clean does not say so: $(cat "$CL_ROOT/out5")"
grep -q "volume d detached with NBD clients still connected" "$LOG1" ||
	fail "5: the detach was clean (the write did not wait for n2?)"
wait_dead "$HOLD" 10 "5: nbd_hold after its write's wait ended"
log "5: the forced detach with a write stuck at n2 says it was not clean (client:" \
	"$(tr '\n' ' ' <"$CL_ROOT/held5.log"))"

# ---- 6. a copy failing while --force drains: recorded, then resynced
ctsr volume create e --size 16M --replicas 2 --min-replicas 1 >/dev/null || fail "create e"
ctsr volume attach e --node n1 >/dev/null || fail "volume attach e"
stalled_write e 6
( sleep 1; kill -9 "${CL_PID[2]}" ) & killer=$!
track_pid "$killer"
ctsr volume detach e --force >/dev/null || fail "6: volume detach e --force"
reap "$killer" || true
kill9_tesserad "${CL_PID[2]}"
assert_eq "$(ctsr --json volume show e | json_get '[c["state"] for c in j["copies"]][1]')" \
	out-of-sync "6: n2's copy after it failed during the forced detach"
cl_start_node 2
cl_wait_nodes_alive 2
ctsr volume attach e --node n1 >/dev/null || fail "6: volume attach e again"
cl_wait_synced e 30
ctsr volume detach e >/dev/null || fail "6: volume detach e"
n2_block1_written e 6
log "6: n2 failing during the forced detach was recorded and resynced"

# ---- 7. --force while a write waits 3 s for a slow n2: the detach is clean
ctsr volume create f --size 16M --replicas 2 --min-replicas 1 >/dev/null || fail "create f"
ctsr volume attach f --node n1 >/dev/null || fail "volume attach f"
stalled_write f 7
( sleep 3; kill -CONT "${CL_PID[2]}" ) & waker=$!
track_pid "$waker"
from=$(( $(log_lines 1) + 1 ))
ctsr volume detach f --force >"$CL_ROOT/out7" 2>&1 ||
	fail "7: volume detach f --force: $(cat "$CL_ROOT/out7")"
reap "$waker" || true
kill -CONT "${CL_PID[2]}"
grep -q "not cleanly" "$CL_ROOT/out7" &&
	fail "7: the forced detach did not wait for the write n2 held 3 s: $(cat "$CL_ROOT/out7")"
wait_log_from 1 "$from" "detach f epoch [0-9]+ from n1 \(clean\)"
wait_dead "$HOLD" 5 "7: nbd_hold after the forced detach"
# acknowledged (its read back, sent after it, may find the connection closed)
grep -Eq "^write 0 (0x41 ok|failed: nbd_pread)" "$CL_ROOT/held7.log" ||
	fail "7: the client's write was not acknowledged: $(tr '\n' ' ' <"$CL_ROOT/held7.log")"
assert_eq "$(ctsr --json volume show f | json_get '[c["state"] for c in j["copies"]]')" \
	'["in-sync", "in-sync"]' "7: the copies of f after the forced detach"
n2_block1_written f 7
log "7: the forced detach waited for the write n2 held 3 s and was clean"
cl_stop_all
log "PASS"
