#!/usr/bin/env bash
# A store call that holds the store's lock for longer than the lease TTL (a
# rollback rewriting a big volume) does not make its node lose its lease
# (review 15b, finding F4).  The leftover sweep lists the store's volumes
# under that lock; it ran on the lease's thread right after each renewal, so
# a sweep pass falling inside a long rollback kept the lease from being
# renewed: the node "left the cluster" and every volume it coordinated was
# fenced (host I/O EIO).  The sweep now has a thread of its own.
#
# 2 nodes, --leftover-grace 4 (a sweep pass every second, so passes fall
# inside the hold for certain), started with
# TSR_TEST_STORE_ROLLBACK_LOCKED_HOLD_FILE=H (a store's rollback waits while H
# exists at the end of its step 1, store->lock held).  Since s16 a rollback's
# data copy runs without the lock (TSR_TEST_STORE_ROLLBACK_HOLD_FILE holds
# there, unlocked, and this test could not fail with it: review 16b T1); the
# locked hold stands for any store call holding the lock that long.
# v 8 MiB, 2 replicas: 0x11, s1 cut, 0x22 over [0,6M), detached.  w 8 MiB,
# 2 replicas, attached on n1, 0x33 over [0,1M).
# H made; `volume rollback v s1` through n1 in the background: both nodes'
# stores hold their lock (the log's test hold line); 5 s (> the 3 s TTL)
# later w is written (0x44 over [1M,2M)); H removed: the rollback exits 0;
# w written again (0x55 over [2M,3M)) and read back (all three patterns);
# no node's log says its lease expired or was not renewed, nor that a
# volume was fenced; v attached on n2 reads s1's image.
# With TSR_TEST_SWEEP_ON_LEASE_THREAD=1 (the sweep on the lease's thread,
# as before) it fails: "n1: lease lost while the rollback held the store's
# lock" (and w's write after it fails: EIO).
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
. ./snapops.sh
require_cmd nbdcopy qemu-io timeout

make_tmpdir HOLD_DIR
HOLD=$HOLD_DIR/hold
export TSR_TEST_STORE_ROLLBACK_LOCKED_HOLD_FILE=$HOLD
cl_start 2 --leftover-grace 4
on_exit "rm -f '$HOLD'" # before the nodes are killed

ctsr volume create v --size 8M --replicas 2 >/dev/null || fail "volume create v"
ctsr volume create w --size 8M --replicas 2 >/dev/null || fail "volume create w"
v_at_s1 6M
ctsr volume attach w --node n1 >/dev/null || fail "attach w on n1"
qemu-io -f raw -c 'write -P 0x33 0 1M' "$(cl_nbd_uri 1 w)" >/dev/null || fail "write w 0x33"

# since_mark N: node N's log lines since the rollback started
store_rollback_held "$HOLD_DIR/rb.out" 1 2
rb_pid=$RB_PID
log "both stores hold their lock in v's rollback; waiting 5 s (lease TTL 3 s, a sweep pass a second)"
sleep 5
out=$(timeout 30 qemu-io -f raw -c 'write -P 0x44 1M 1M' "$(cl_nbd_uri 1 w)" 2>&1) ||
	fail "write to w while the rollback holds the stores' lock: status $?: $out"
kill -0 "$rb_pid" 2>/dev/null || fail "the rollback answered while held: $(cat "$HOLD_DIR/rb.out")"
rm -f "$HOLD"
rc=0
reap "$rb_pid" || rc=$?
[ "$rc" = 0 ] || fail "volume rollback v s1: exit $rc: $(cat "$HOLD_DIR/rb.out")"
log "rollback exit 0: $(tr '\n' ' ' <"$HOLD_DIR/rb.out")"
sleep 1.5 # a renewal after the hold: a lapsed lease is seen by now
for n in 1 2; do
	bad=$(since_mark $n | grep -E "lease .*(expired|lapsed)|lease not renewed|fenced" | grep -v "meta: lease .* lapsed" | head -5)
	[ -z "$bad" ] || fail "n$n: lease lost while the rollback held the store's lock: $bad"
done
out=$(timeout 30 qemu-io -f raw -c 'write -P 0x55 2M 1M' "$(cl_nbd_uri 1 w)" 2>&1) ||
	fail "write to w after the rollback: status $?: $out"
case "$out" in *rror*) fail "write to w after the rollback: $out" ;; esac
out=$(timeout 30 qemu-io -f raw -c 'read -P 0x33 0 1M' -c 'read -P 0x44 1M 1M' -c 'read -P 0x55 2M 1M' \
	-c 'read -P 0 3M 5M' "$(cl_nbd_uri 1 w)" 2>&1) || fail "read w back: status $?: $out"
case "$out" in
*"verification failed"*|*rror*) fail "w does not read back what was written: $out" ;;
esac
log "w written during and after the held rollback, read back; no lease lost, nothing fenced"
ctsr volume detach w >/dev/null || fail "detach w"
ctsr volume attach v --node n2 >/dev/null || fail "attach v on n2 after the rollback"
assert_eq "$(cl_image_sha 2 v)" "$s1" "v read through n2 after the rollback (s1's image)"
ctsr volume detach v >/dev/null || fail "detach v"
cl_stop_all
log ok
