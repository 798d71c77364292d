#!/usr/bin/env bash
# Two rollbacks of one detached volume to the SAME snapshot (a client retrying
# while the first runs) (review 15c).
#  A: both run; the first to end clears the mark.  The second must then answer
#     0 and leave the record clean: every copy is at that snapshot.  Before,
#     it found the mark gone, wrote "s1/failed", answered EBUSY "another
#     rollback ... through another node", and the next attach was refused.
#  B: an attach gets in between the two answers (the first cleared the mark)
#     and writes; the second's held copy then answers ESTALE.  The second must
#     not write its mark into the attached volume's record: after a detach the
#     volume attaches again and what the attachment wrote reads back.  Before,
#     the mark went into the attached record and the only way back was a
#     rollback that threw away those writes.
# 3 nodes; n2 started with TSR_TEST_ROLLBACK_LOCAL_HOLD_FILE=H (its own copy's
# rollback, as the handling node, waits while H exists); mirror v 8 MiB,
# 3 replicas: 0x11, s1, 0x22, detached.  CASES="A B" (default) picks cases.
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
require_tessera
require_cmd qemu-io timeout
make_tmpdir HOLD_DIR
HOLD=$HOLD_DIR/hold
on_exit "rm -f '$HOLD'"
cl_start 3
cl_stop 2
TSR_TEST_ROLLBACK_LOCAL_HOLD_FILE=$HOLD cl_start_node 2
cl_wait_nodes_alive 3
ctsr volume create v --size 8M --replicas 3 >/dev/null || fail "create"
for p in 11 22; do
	ctsr volume attach v --node n1 >/dev/null || fail "attach ($p)"
	qemu-io -f raw -c "write -P 0x$p 0 8M" "$(cl_nbd_uri 1 v)" >/dev/null || fail "write 0x$p"
	ctsr volume detach v >/dev/null || fail "detach ($p)"
	[ "$p" = 22 ] || ctsr snapshot create v s1 >/dev/null || fail "snapshot s1"
done

hold_rollback_via_n2() { # OUT: starts R2 through n2 and waits until it is held
	rm -f "$HOLD.held"
	touch "$HOLD"
	ctsr_via 2 volume rollback v s1 >"$1" 2>&1 &
	R2=$!
	track_pid "$R2"
	for (( i = 0; i < 150; i++ )); do [ -e "$HOLD.held" ] && return 0; sleep 0.1; done
	fail "n2's rollback of v was not held"
}

CASES=${CASES:-"A B"}
# A: two rollbacks to s1
if [[ " $CASES " == *" A "* ]]; then
hold_rollback_via_n2 "$HOLD_DIR/r2a.out"
out=$(ctsr volume rollback v s1 2>&1) || fail "A: the rollback through n1 while n2's runs: $out"
rm -f "$HOLD"
rc=0; reap "$R2" || rc=$?
[ "$rc" = 0 ] || fail "A: the second rollback to the same snapshot answered $rc: $(tr '\n' ' ' <"$HOLD_DIR/r2a.out")"
out=$(ctsr volume attach v --node n1 2>&1) || fail "A: attach after both rollbacks refused: $out"
qemu-io -f raw -c "read -P 0x11 0 8M" "$(cl_nbd_uri 1 v)" >/dev/null || fail "A: v does not read s1's data"
ctsr volume detach v >/dev/null || fail "A: detach"
log "A: both rollbacks to s1 answered 0; attach clean; v reads s1"
fi

# B: an attach between the two answers
if [[ " $CASES " == *" B "* ]]; then
hold_rollback_via_n2 "$HOLD_DIR/r2b.out"
out=$(ctsr volume rollback v s1 2>&1) || fail "B: the rollback through n1: $out"
out=$(ctsr volume attach v --node n1 2>&1) || fail "B: attach after the first rollback ended: $out"
qemu-io -f raw -c "write -P 0x44 0 1M" "$(cl_nbd_uri 1 v)" >/dev/null || fail "B: write 0x44"
rm -f "$HOLD"
rc=0; reap "$R2" || rc=$?
log "B: the held rollback answered $rc: $(tr '\n' ' ' <"$HOLD_DIR/r2b.out")"
ctsr volume detach v >/dev/null || fail "B: detach"
out=$(ctsr volume attach v --node n1 2>&1) || fail "B: attach after the detach refused: $out"
qemu-io -f raw -c "read -P 0x44 0 1M" -c "read -P 0x11 1M 7M" "$(cl_nbd_uri 1 v)" >/dev/null ||
	fail "B: what the attachment wrote (0x44) or s1's data around it does not read back"
ctsr volume detach v >/dev/null || fail "B: final detach"
log "B: the attachment's record kept clean; its write reads back"
fi
cl_stop_all
log "PASS"
