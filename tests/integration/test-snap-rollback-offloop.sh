#!/usr/bin/env bash
# A detached volume's rollback does not hold the handling node's admin loop
# (session 15, snapshot.c rollback_later_start): the other copies' nodes are
# asked with async calls, the node's own store rollback runs in a thread of
# its own ("snap-rollback", counted in local_running like the detached cut),
# and the reply (the fence's mark cleared first) is built on the loop once
# every copy answered.  Before, the whole rollback ran on the loop: every
# other admin request, metadata watch and forwarded call of that node waited
# for the store's rollback (seconds for a big volume).
#
# 3 nodes, started with TSR_TEST_ROLLBACK_LOCAL_HOLD_FILE=H (a node's own
# copy's rollback waits while H exists and makes H.held).  v 8 MiB, 3
# replicas: 0x11 written with 0x44 over [3M,4M), s1 cut detached, 0x22
# written over [0,6M), s2 cut, detached.
#  1. H made; `volume rollback v s1` through n1 in the background; H.held
#     (n1's own rollback is waiting) and n2's and n3's done (their logs); n1
#     answers `volume list` (listing v) and `node list` (3 alive) under
#     `timeout 3`, and refuses `volume rollback v s2` ("being rolled back to
#     snapshot 's1'": two rollbacks to different snapshots at once could run
#     in a different order on each copy); the rollback has not answered.  H removed: it exits 0;
#     every copy (each node's own, cut alone as v@chk and read through that
#     node's export) has s1's sha256; v attached on n2 reads s1's image and
#     that attach is clean (the mark cleared by the later reply); detached.
#  2. a copy's failure through the async path: n3's copy loses v@s2
#     (admin_local_copy snapshot-delete); `volume rollback v s2` exits 1
#     naming n3 and saying to run it again; the mark stays (a detached
#     snapshot create is refused "did not detach cleanly", an attach
#     "unfinished rollback to snapshot 's2'", naming a rollback to another
#     snapshot as a way out); `volume rollback v s1` then exits 0 and every
#     copy is s1's image again.
#  3. n1 stopped (SIGTERM) while its own rollback is held, released 1 s
#     later: n1 exits 0 (its stop waits for the rollback's thread), the
#     client gets an answer; n1 restarted, the rollback run again exits 0,
#     every copy is s1's image.
#  4. v written again (0x66 over [0,2M)); started with
#     TSR_TEST_ROLLBACK_COPY_HOLD_FILE=H2 too (a local_copy rollback, the
#     other copies' part, waits while H2 exists): `volume rollback v s1`
#     through n1 with H2 made: n2 answers `volume list` and `node list`, n1
#     `node list` (which asks n2 and n3 for their data file systems), each
#     under `timeout 3`, while n2's and n3's copies' rollbacks are held; the
#     rollback has not answered.  H2 removed: exit 0, n2's log has the
#     "copy-rollback" thread, every copy is s1's image.
# With TSR_TEST_SNAP_LOCAL_CUT_INLINE=1 (the rollbacks on the admin loops,
# as before) step 1 fails: "n1's volume list while its rollback is held:
# status 124" (CASE4_ONLY=1 skips to step 4's check: "n2's volume list
# while its copy's rollback is held: status 124").
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
. ./snapops.sh
ADMIN_LOCAL_COPY=$TSR_BUILD/tests/admin_local_copy # admin_local_copy.c
require_tessera "$ADMIN_LOCAL_COPY"
require_cmd nbdcopy qemu-io timeout

make_tmpdir HOLD_DIR
HOLD=$HOLD_DIR/hold
HOLD2=$HOLD_DIR/hold-copy
export TSR_TEST_ROLLBACK_LOCAL_HOLD_FILE=$HOLD TSR_TEST_ROLLBACK_COPY_HOLD_FILE=$HOLD2
cl_start 3
on_exit "rm -f '$HOLD' '$HOLD2'" # before the nodes are killed

n1tsr() { ctsr_within 3 1 "$@"; } # the admin command through n1, bounded to 3 s
n2tsr() { ctsr_within 3 2 "$@"; } # the admin command through n2, bounded to 3 s

# assert_copies_s1 WHAT: every copy of v is s1's image
assert_copies_s1() {
	local h1 h2 h3
	read -r h1 h2 h3 <<<"$(copies_sha v "chk$RANDOM")"
	[ "$h1" = "$s1" ] && [ "$h2" = "$s1" ] && [ "$h3" = "$s1" ] ||
		fail "$1: v's copies are not s1's image (s1=${s1:0:16} n1=${h1:0:16} n2=${h2:0:16} n3=${h3:0:16})"
	log "$1: every copy of v is s1's image (${s1:0:16})"
}

ctsr volume create v --size 8M --replicas 3 >/dev/null || fail "volume create v"
ctsr volume attach v --node n1 >/dev/null || fail "attach v on n1"
qemu-io -f raw -c 'write -P 0x11 0 8M' -c 'write -P 0x44 3M 1M' "$(cl_nbd_uri 1 v)" >/dev/null ||
	fail "write v 0x11"
s1=$(cl_image_sha 1 v) || fail "read v"
ctsr volume detach v >/dev/null || fail "detach v"
ctsr snapshot create v s1 >/dev/null || fail "snapshot create v s1"
ctsr volume attach v --node n1 >/dev/null || fail "attach v on n1 again"
qemu-io -f raw -c 'write -P 0x22 0 6M' "$(cl_nbd_uri 1 v)" >/dev/null || fail "write v 0x22"
s2=$(cl_image_sha 1 v) || fail "read v again"
[ "$s1" != "$s2" ] || fail "the second write did not change v"
ctsr volume detach v >/dev/null || fail "detach v again"
ctsr snapshot create v s2 >/dev/null || fail "snapshot create v s2"

# held_rollback OUT SNAP: `volume rollback v SNAP` through n1 in the
# background (pid in $rb_pid) with n1's own rollback held
held_rollback() {
	held_start "$HOLD" "$1" "n1's own rollback of v" ctsr volume rollback v "$2"
	rb_pid=$HELD_PID
}

if [ "${CASE4_ONLY:-0}" != 1 ]; then
# ---- 1. n1 answers while its own rollback is held
n2_done=$(grep -c "rollback: volume v is s1 again" "$(cl_dir 2)/tesserad.log")
held_rollback "$HOLD_DIR/op1.out" s1
wait_log 2 "rollback: volume v is s1 again" 20
wait_log 3 "rollback: volume v is s1 again" 20
log "n1's own rollback held, n2's and n3's done"
out=$(n1tsr volume list) || fail "n1's volume list while its rollback is held: status $?"
case "$out" in *v*) ;; *) fail "n1's volume list while its rollback is held does not list v: $out" ;; esac
out=$(n1tsr --json node list) || fail "n1's node list while its rollback is held: status $?"
assert_eq "$(printf '%s' "$out" | json_get 'sum(1 for n in j["nodes"] if n.get("alive"))')" 3 \
	"alive nodes in n1's node list while its rollback is held"
rc=0
out=$(n1tsr volume rollback v s2 2>&1) || rc=$?
[ "$rc" != 0 ] || fail "a rollback of v to s2 was accepted while the one to s1 runs"
case "$out" in
*"being rolled back to snapshot 's1'"*) ;;
*) fail "n1's rollback of v to s2 while the one to s1 is held: status $rc: $out" ;;
esac
[ -e "$HOLD" ] || fail "the hold ended before n1 answered"
kill -0 "$rb_pid" 2>/dev/null || fail "the rollback answered while n1's own was held: $(cat "$HOLD_DIR/op1.out")"
log "step 1: n1 answered volume list, node list and a rollback to s2 (refused: $out) while its rollback was held"
rm -f "$HOLD"
rc=0
reap "$rb_pid" || rc=$?
[ "$rc" = 0 ] || fail "volume rollback v s1: exit $rc: $(cat "$HOLD_DIR/op1.out")"
[ "$n2_done" = 0 ] || fail "n2's log had a rollback before step 1"
grep -q "snap-rollback" "$(cl_dir 1)/tesserad.log" ||
	fail "n1's log has no line of its rollback's thread (snap-rollback)"
assert_copies_s1 "step 1"
ctsr volume attach v --node n2 >/dev/null || fail "attach v on n2 after the rollback"
assert_eq "$(cl_image_sha 2 v)" "$s1" "v read through n2 after the rollback (s1's image)"
assert_attach_clean 2 v "the attach after a completed rollback is not clean (the mark not cleared)"
ctsr volume detach v >/dev/null || fail "detach v after step 1"

# ---- 2. a copy's failure through the async calls: reported, mark kept
out=$("$ADMIN_LOCAL_COPY" "$(cl_dir 3)" snapshot-delete v s2 2>&1) || fail "n3: local_copy delete of v@s2: $out"
rc=0
out=$(ctsr volume rollback v s2 2>&1) || rc=$?
[ "$rc" != 0 ] || fail "volume rollback v s2 succeeded though n3's copy lacks v@s2"
case "$out" in
*"node n3"*"run the rollback again"*) ;;
*) fail "the failed rollback to s2 does not name n3 and say to run it again: $out" ;;
esac
log "step 2: rollback to s2 refused: $out"
rc=0
out=$(ctsr snapshot create v x 2>&1) || rc=$?
[ "$rc" != 0 ] || fail "a detached snapshot create succeeded after a failed rollback (the mark is gone)"
case "$out" in *"did not detach cleanly"*) ;; *) fail "snapshot create v x after a failed rollback: $out" ;; esac
rc=0
out=$(ctsr volume attach v --node n2 2>&1) || rc=$?
[ "$rc" != 0 ] || fail "v attached after a failed rollback (half rolled back)"
case "$out" in
*"unfinished rollback to snapshot 's2'"*"another snapshot"*) ;;
*) fail "attach v after the failed rollback to s2: $out" ;;
esac
out=$(ctsr volume rollback v s1 2>&1) || fail "volume rollback v s1 after the failed one: $out"
assert_copies_s1 "step 2"

# ---- 3. n1 stopped while its own rollback is held
n1_done=$(grep -c "rollback: volume v is s1 again" "$(cl_dir 1)/tesserad.log")
held_rollback "$HOLD_DIR/op3.out" s1
( sleep 1; rm -f "$HOLD" ) &
track_pid $!
cl_stop 1
rc=0
reap "$rb_pid" || rc=$?
log "n1 stopped (exit 0) while its rollback was held; the client: exit $rc, $(tr '\n' ' ' <"$HOLD_DIR/op3.out")"
[ -e "$HOLD" ] && fail "n1 stopped before the hold ended (its stop did not wait for the rollback's thread)"
assert_eq "$(grep -c "rollback: volume v is s1 again" "$(cl_dir 1)/tesserad.log")" $(( n1_done + 1 )) \
	"n1's own rollbacks done (its stop waited for the held one)"
cl_start_node 1
cl_wait_nodes_alive 3
out=$(ctsr volume rollback v s1 2>&1) || fail "volume rollback v s1 after n1's restart: $out"
assert_copies_s1 "step 3"
fi

# ---- 4. another copy's node answers while its copy's rollback is held
ctsr volume attach v --node n1 >/dev/null || fail "attach v on n1 for step 4"
qemu-io -f raw -c 'write -P 0x66 0 2M' "$(cl_nbd_uri 1 v)" >/dev/null || fail "write v 0x66"
ctsr volume detach v >/dev/null || fail "detach v for step 4"
held_start "$HOLD2" "$HOLD_DIR/op4.out" "n2's or n3's copy's rollback of v" ctsr volume rollback v s1
rb_pid=$HELD_PID
out=$(n2tsr volume list) || fail "n2's volume list while its copy's rollback is held: status $?"
out=$(n2tsr --json node list) || fail "n2's node list while its copy's rollback is held: status $?"
out=$(n1tsr --json node list) || fail "n1's node list while n2's and n3's copies' rollbacks are held: status $?"
assert_eq "$(printf '%s' "$out" | json_get 'sum(1 for n in j["nodes"] if n.get("alive"))')" 3 \
	"alive nodes in n1's node list while the copies' rollbacks are held"
kill -0 "$rb_pid" 2>/dev/null || fail "the rollback answered while n2's and n3's copies were held: $(cat "$HOLD_DIR/op4.out")"
log "step 4: n2 and n1 answered while the other copies' rollbacks were held"
rm -f "$HOLD2"
rc=0
reap "$rb_pid" || rc=$?
[ "$rc" = 0 ] || fail "volume rollback v s1 (step 4): exit $rc: $(cat "$HOLD_DIR/op4.out")"
grep -q "copy-rollback" "$(cl_dir 2)/tesserad.log" ||
	fail "n2's log has no line of its copy's rollback thread (copy-rollback)"
assert_copies_s1 "step 4"

cl_stop_all
log ok
