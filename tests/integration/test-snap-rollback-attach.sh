#!/usr/bin/env bash
# A detached volume's rollback fenced against an attach (session 15).  The
# rollback runs the local_copy form on every copy's node at once; nothing
# stopped `volume attach` from landing between the copies' rollbacks.  The
# attach then served copies that differed (some rolled back, some not) and,
# the record saying "detached cleanly", did not compare them; a copy rolled
# back after that attach wrote it ended different again.  Now vol/v is
# marked "not detached cleanly" before any copy is touched (an attach from
# then on converges the copies before it serves), and every copy's rollback
# carries the record's epoch: a copy an attach reached refuses (-ESTALE).
#
# 3 nodes, started with TSR_TEST_ROLLBACK_LOCAL_HOLD_FILE=H (n1's own
# copy's rollback waits while H exists).  v 8 MiB, 3 replicas: 0x11 written,
# s1 cut (detached), 0x22 written over it, detached.
#  1. H made; `volume rollback v s1` through n1 in the background; n1's
#     rollback held while n2's and n3's are done (their logs); v attached on
#     n2, 0x33 written over [0,1M) and flushed, v detached; H removed.
#     Sound: the rollback fails naming the attach, or succeeds; either way
#     the copies are identical afterwards (each node's copy cut alone as
#     v@chk by the local_copy create and read through that node's v@chk
#     export: one sha256), and their first MiB is 0x33.  (With the attach
#     refused while a rollback runs, /var/tmp/helpers/snapfence-attach.patch:
#     the attach answers "unfinished rollback", the rollback succeeds, the
#     copies are identical and s1's image.)
#  2. `volume rollback v s1` again with nothing in between: exit 0; every
#     copy is s1's image (0x11); attached on n1, v reads back 0x11 and the
#     attach is "clean" (the rollback cleared its mark).  0x55 written.
#  3. crash after the mark: `volume rollback v s1` through n2 with n2's own
#     rollback held; n2 killed (-9), restarted.  vol/v keeps the mark (a
#     detached snapshot create is refused "did not detach cleanly"); the
#     rollback run again through n1 is accepted (an unclean record does not
#     stop a rollback), exits 0, the copies are identical and s1's image,
#     and the next attach (n3) is clean.
# With TSR_TEST_ROLLBACK_UNFENCED=1 (the nodes' environment: no mark, no
# epoch, as before) step 1 fails: n1's copy differs from n2's and n3's.
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
. ./snapops.sh
ADMIN_LOCAL_COPY=$TSR_BUILD/tests/admin_local_copy # admin_local_copy.c
require_tessera "$ADMIN_LOCAL_COPY"
require_cmd nbdcopy qemu-io timeout

hold_cl_start TSR_TEST_ROLLBACK_LOCAL_HOLD_FILE 3

ctsr volume create v --size 8M --replicas 3 >/dev/null || fail "volume create v"
v_at_s1 8M

# ---- 1. an attach and writes while n1's rollback is held
held_start "$HOLD" "$HOLD_DIR/op.out" "n1's rollback of v" ctsr volume rollback v s1
pid=$HELD_PID
wait_log 2 "rollback: volume v is s1 again" 20
wait_log 3 "rollback: volume v is s1 again" 20
log "n1's rollback held, n2's and n3's done; attaching v on n2 and writing 0x33 over [0,1M)"
attached=1
out=$(ctsr_within 30 2 volume attach v --node n2 2>&1) || attached=0
if [ "$attached" = 1 ]; then
	qemu-io -f raw -c 'write -P 0x33 0 1M' -c flush "$(cl_nbd_uri 2 v)" >/dev/null ||
		fail "write v through n2"
	ctsr_within 30 2 volume detach v >/dev/null || fail "detach v on n2"
else
	# a build whose attach waits for the rollback (VolumeRecord.rollback_snapshot)
	case "$out" in
	*"unfinished rollback"*) log "the attach on n2 was refused while the rollback ran: $out" ;;
	*) fail "attach v on n2 while n1's rollback is held: $out" ;;
	esac
fi
rm -f "$HOLD"
rc=0
reap "$pid" || rc=$?
out=$(tr '\n' ' ' <"$HOLD_DIR/op.out")
log "volume rollback v s1: exit $rc: $out"
if [ "$rc" != 0 ]; then
	case "$out" in
	*"attached meanwhile"*) ;;
	*) fail "the refused rollback of v does not say v was attached meanwhile: $out" ;;
	esac
fi
read -r h1 h2 h3 <<<"$(copies_sha v chk1)"
log "v's copies after step 1: n1=${h1:0:16} n2=${h2:0:16} n3=${h3:0:16}"
[ "$h1" = "$h2" ] && [ "$h1" = "$h3" ] ||
	fail "v's copies differ after a rollback with an attach meanwhile (n1=${h1:0:16} n2=${h2:0:16} n3=${h3:0:16})"
[ "$attached" = 1 ] && want_first=33 || want_first=11
for n in 1 2 3; do
	"$ADMIN_LOCAL_COPY" "$(cl_dir $n)" snapshot-create v chk >/dev/null || fail "n$n: cut v@chk"
	assert_eq "$(first_mib $n v@chk)" "$want_first" "n$n's copy's first MiB"
	"$ADMIN_LOCAL_COPY" "$(cl_dir $n)" snapshot-delete v chk >/dev/null || fail "n$n: delete v@chk"
done
[ "$attached" = 1 ] || [ "$rc" = 0 ] || fail "the rollback failed though the attach was refused: $out"
log "step 1: rollback exit $rc; the copies are identical (attach $([ "$attached" = 1 ] && echo "made, n2's write in" || echo refused))"

# ---- 2. nothing in between: the rollback completes and leaves v clean
out=$(ctsr volume rollback v s1 2>&1) || fail "volume rollback v s1 with nothing in between: $out"
read -r h1 h2 h3 <<<"$(copies_sha v chk2)"
for h in "$h2" "$h3"; do
	[ "$h" = "$h1" ] || fail "v's copies differ after a plain rollback"
done
ctsr volume attach v --node n1 >/dev/null || fail "attach v on n1 after the rollback"
assert_eq "$(cl_image_sha 1 v)" "$s1" "v read through n1 after the rollback (s1's image)"
assert_attach_clean 1 v "the attach after a completed rollback is not clean"
qemu-io -f raw -c 'write -P 0x55 0 8M' "$(cl_nbd_uri 1 v)" >/dev/null || fail "write v 0x55"
ctsr volume detach v >/dev/null || fail "detach v"
log "step 2: rolled back on every copy, v is s1 and attaches clean"

# ---- 3. the handling node dies after the mark: a rollback run again finishes
held_start "$HOLD" "$HOLD_DIR/op3.out" "n2's rollback of v" ctsr_via 2 volume rollback v s1
pid=$HELD_PID
cl_kill 2
reap "$pid" || true
rm -f "$HOLD"
log "n2 killed while its own copy's rollback was held (after vol/v was marked)"
cl_start_node 2
cl_wait_nodes_alive 3
# the mark is there: a detached snapshot of v is refused meanwhile
rc=0
out=$(ctsr snapshot create v x 2>&1) || rc=$?
case "$rc $out" in
"1 "*"did not detach cleanly"*) ;;
*) fail "snapshot create v x with vol/v marked by the dead rollback: exit $rc: $out" ;;
esac
out=$(ctsr volume rollback v s1 2>&1) || fail "volume rollback v s1 after the handling node died: $out"
read -r h1 h2 h3 <<<"$(copies_sha v chk3)"
[ "$h1" = "$h2" ] && [ "$h1" = "$h3" ] || fail "v's copies differ after the rollback run again"
ctsr volume attach v --node n3 >/dev/null || fail "attach v on n3 after the rollback run again"
assert_eq "$(cl_image_sha 3 v)" "$s1" "v read through n3 after the rollback run again (s1's image)"
assert_attach_clean 3 v "the attach after the rollback run again is not clean"
ctsr volume detach v >/dev/null || fail "detach v"
log "step 3: the rollback run again after its handling node died finished it; v attaches clean"

cl_stop_all
log ok
