#!/usr/bin/env bash
# Two rollbacks of one detached volume to different snapshots through two
# nodes do not end with the copies split and the record clean (review 15b
# F3).  The rollback mark (VolumeRecord.rollback_snapshot) is cleared only
# while it still names the rollback's own snapshot, and a rollback whose mark
# replaced another snapshot's (running through another node, or cut short)
# keeps it at its end: both answer an error naming `tessera volume rollback v
# SNAP` run once more, the attach is refused until then, and that rollback,
# run alone, makes every copy the snapshot's image and clears the mark.
# Before, whichever finished first cleared the other's mark, both answered 0,
# and the copies stayed at different snapshots with the record clean (a
# mirror's reads depended on the copy read).
#
# 3 nodes, n2 started with TSR_TEST_ROLLBACK_LOCAL_HOLD_FILE=H (its own copy's
# rollback waits while H exists); mirror v 8 MiB, 3 replicas: 0x11, s1, 0x22,
# s2, 0x33, detached.  H made; R2 = `volume rollback v s2` through n2 in the
# background (n2's copy held); R1 = `volume rollback v s1` through n1: not 0,
# naming a rollback run once more; H removed: R2 not 0 either.  The attach is
# refused ("unfinished rollback").  The rollback the messages name, run again
# through n1: 0.  Every copy (each node's own, cut as v@chk) has that
# snapshot's image; v attached on n1 reads it, and the attach is clean.
# TSR_TEST_ROLLBACK_MARK_UNCHECKED=1 (the nodes: the clearing as before): the
# test fails (both answer 0, copies split): its A/B.
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
ADMIN_LOCAL_COPY=$TSR_BUILD/tests/admin_local_copy # admin_local_copy.c
# a test binary of this build: missing is a failure (not built), not a skip
require_tessera "$ADMIN_LOCAL_COPY"
require_cmd qemu-io timeout nbdcopy
make_tmpdir HOLD_DIR
HOLD=$HOLD_DIR/hold
cl_start_held 3 2 TSR_TEST_ROLLBACK_LOCAL_HOLD_FILE "$HOLD"
ctsr volume create v --size 8M --replicas 3 >/dev/null || fail create
for p in 11 22 33; do
	ctsr volume attach v --node n1 >/dev/null || fail attach
	qemu-io -f raw -c "write -P 0x$p 0 8M" "$(cl_nbd_uri 1 v)" >/dev/null || fail write
	ctsr volume detach v >/dev/null || fail detach
	[ $p = 33 ] || ctsr snapshot create v s$((p/11)) >/dev/null || fail snap
done
head -c 8M /dev/zero | tr '\0' '\021' >"$HOLD_DIR/s1.img" # 0x11
head -c 8M /dev/zero | tr '\0' '\042' >"$HOLD_DIR/s2.img" # 0x22

touch "$HOLD"
ctsr_via 2 volume rollback v s2 >"$HOLD_DIR/r2.out" 2>&1 & r2=$!; track_pid $r2
for (( i=0; i<100; i++ )); do [ -e "$HOLD.held" ] && break; sleep 0.1; done
[ -e "$HOLD.held" ] || fail "n2's rollback not held"
out=$(ctsr volume rollback v s1 2>&1); rc1=$?
log "R1 (s1 via n1) while R2 (s2 via n2) held: rc $rc1: $out"
rm -f "$HOLD"
rc2=0; reap $r2 || rc2=$?
r2out=$(tr '\n' ' ' <"$HOLD_DIR/r2.out")
log "R2 (s2 via n2): rc $rc2: $r2out"
[ $rc1 != 0 ] || [ $rc2 != 0 ] || fail "both rollbacks answered 0"
[ $rc1 != 0 ] || fail "R1 answered 0 though its mark replaced R2's"
printf '%s' "$out" | grepq "tessera volume rollback v s[12]" || fail "R1's error names no rollback to run"

out=$(ctsr volume attach v --node n1 2>&1) && fail "attach accepted after two rollbacks: $out"
log "attach refused: $out"
snap=$(printf '%s' "$out" | sed -n "s/.*unfinished rollback to snapshot '\\(s[12]\\)'.*/\\1/p")
[ -n "$snap" ] || fail "the attach refusal names no rollback"
out=$(ctsr volume rollback v "$snap" 2>&1) || fail "rollback v $snap run again: $out"
log "rollback v $snap run again alone: ok"

want=$(sha256 "$HOLD_DIR/$snap.img")
for n in 1 2 3; do
	"$ADMIN_LOCAL_COPY" "$(cl_dir $n)" snapshot-create v chk >/dev/null 2>&1 || fail "chk n$n"
	h=$(cl_image_sha $n v@chk) || fail "read v@chk on n$n"
	"$ADMIN_LOCAL_COPY" "$(cl_dir $n)" snapshot-delete v chk >/dev/null 2>&1
	[ "$h" = "$want" ] || fail "n$n's copy is not $snap's image (sha ${h:0:12}, want ${want:0:12})"
done
log "every copy has $snap's image"
cl_attach_retry v n1 20
cl_assert_image 1 v "$HOLD_DIR/$snap.img" "after the rollback to $snap"
line=$(grep -E "attaching v epoch" "$(cl_dir 1)/tesserad.log" | tail -1)
printf '%s' "$line" | grepq ", clean)" || fail "the attach after the rollback is not clean: $line"
ctsr volume detach v >/dev/null || fail detach
cl_stop_all
log ok
