#!/usr/bin/env bash
# A node's store answers other requests while a rollback on it is in the
# middle of its data copy (review 15b, finding F2; session 16): the store's
# rollback holds store->lock only to start and to end, not across the copy.
# Before, the rollback held the lock for its whole run, and every request of
# that node touching the store waited for it (`volume list`, `node list`,
# `volume show`, other volumes' attaches: 1.0-1.7 s for a 1 GiB volume).
#
# 2 nodes, started with TSR_TEST_STORE_ROLLBACK_HOLD_FILE=H (a store's
# rollback waits while H exists, after it started: row marked, the volume
# busy; since session 16 without the store's lock, before with it).
# v 8 MiB, 2 replicas: 0x11, s1 cut, 0x22 over [0,6M), detached.  w 8 MiB,
# 2 replicas, detached.
# H made; `volume rollback v s1` through n1 in the background; both nodes'
# stores log the test hold.  Under `timeout 20`, while the rollback has not
# answered: `volume list` through n1 and n2 (lists v and w), `node list` (2
# alive), `volume show w`, `volume attach w --node n1`, w written (0x33 over
# [0,1M)) and read back; `volume attach v` is refused (the rollback's mark).
# H removed: the rollback exits 0; v attached on n2 reads s1's image; w reads
# back.
# On 7a32c7c (the store's hold inside the lock): "FAIL: n1's volume list while
# the store's rollback is held: status 124".  The same with
# TSR_TEST_STORELOCK_LOCKED=1 (A/B: the nodes also get
# TSR_TEST_STORE_ROLLBACK_LOCKED_HOLD_FILE=H, a hold with store->lock held,
# as before s16).  timeout 20 is no time asserted: the hold lasts up to 30 s
# (tsr_test_hold_file), so a call waiting for the lock still fails, and a
# loaded machine has 20 s for each call (review 16b T2; it was 3).
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
. ./snapops.sh
require_cmd qemu-io timeout

make_tmpdir HOLD_DIR
HOLD=$HOLD_DIR/hold
export TSR_TEST_STORE_ROLLBACK_HOLD_FILE=$HOLD
[ "${TSR_TEST_STORELOCK_LOCKED:-0}" = 1 ] && export TSR_TEST_STORE_ROLLBACK_LOCKED_HOLD_FILE=$HOLD
cl_start 2
on_exit "rm -f '$HOLD'" # before the nodes are killed

ctsr volume create v --size 8M --replicas 2 >/dev/null || fail "volume create v"
ctsr volume create w --size 8M --replicas 2 >/dev/null || fail "volume create w"
v_at_s1 6M

# since_mark N: node N's log lines since the rollback started
store_rollback_held "$HOLD_DIR/rb.out" 1 2
rb_pid=$RB_PID
log "both stores' rollbacks of v held; asking n1 and n2 meanwhile"

# VIA[N]: the CLI through node N, as a command (timeout runs it; no netns here)
declare -A VIA
for n in 1 2; do VIA[$n]="$TESSERA --cluster $(cl_addr $n) --token-file $(cl_dir 1)/admin.token"; done
# tb WHAT CMD...: CMD under timeout 20 (a bound under the 30 s hold), its
# output in $out
tb() {
	local what=$1 rc=0
	shift
	out=$(timeout 20 "$@" 2>&1) || rc=$?
	[ "$rc" = 0 ] || fail "$what while the store's rollback is held: status $rc: $out"
}
for n in 1 2; do
	tb "n$n's volume list" ${VIA[$n]} volume list
	case "$out" in *v*w*|*w*v*) ;; *) fail "n$n's volume list lacks v or w: $out" ;; esac
done
tb "n1's node list" ${VIA[1]} node list
[ "$(grep -cE '^n[12] +[^ ]+ +[^ ]+ +[^ ]+ +yes ' <<<"$out")" = 2 ] || fail "n1's node list: not 2 alive: $out"
tb "n1's volume show w" ${VIA[1]} volume show w
tb "attach w on n1" ${VIA[1]} volume attach w --node n1
tb "write w" qemu-io -f raw -c 'write -P 0x33 0 1M' "$(cl_nbd_uri 1 w)"
case "$out" in *rror*) fail "write w during the rollback: $out" ;; esac
tb "read w" qemu-io -f raw -c 'read -P 0x33 0 1M' -c 'read -P 0 1M 7M' "$(cl_nbd_uri 1 w)"
case "$out" in *"verification failed"*|*rror*) fail "w during the rollback: $out" ;; esac
rc=0
out=$(timeout 20 ${VIA[1]} volume attach v --node n1 2>&1) || rc=$?
[ "$rc" = 1 ] || fail "attach v during its rollback: status $rc (want 1, refused): $out"
grepq "unfinished rollback" <<<"$out" || fail "attach v during its rollback: $out"
kill -0 "$rb_pid" 2>/dev/null || fail "the rollback answered while held: $(cat "$HOLD_DIR/rb.out")"
log "while held: volume list (n1, n2), node list, volume show w, attach w, w written and read: all answered; attach v refused"

rm -f "$HOLD"
rc=0
reap "$rb_pid" || rc=$?
[ "$rc" = 0 ] || fail "volume rollback v s1: exit $rc: $(cat "$HOLD_DIR/rb.out")"
for n in 1 2; do
	since_mark $n | grep -q "rollback: volume v is s1 again" || fail "n$n's store did not log the rollback's end"
done
out=$(timeout 30 qemu-io -f raw -c 'read -P 0x33 0 1M' -c 'read -P 0 1M 7M' "$(cl_nbd_uri 1 w)" 2>&1) ||
	fail "read w after the rollback: status $?: $out"
case "$out" in *"verification failed"*|*rror*) fail "w after the rollback: $out" ;; esac
ctsr volume detach w >/dev/null || fail "detach w"
ctsr volume attach v --node n2 >/dev/null || fail "attach v on n2 after the rollback"
assert_eq "$(cl_image_sha 2 v)" "$s1" "v read through n2 after the rollback (s1's image)"
ctsr volume detach v >/dev/null || fail "detach v"
cl_stop_all
log ok
