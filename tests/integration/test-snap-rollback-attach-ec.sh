#!/usr/bin/env bash
# An ec volume's detached rollback with an attach meanwhile (session 15,
# VolumeRecord.rollback_snapshot).  The fence and the clean_detach mark of
# test-snap-rollback-attach make a mirror consistent (the attach's converge
# picks one copy); an ec 2+1 volume's converge scrub cannot repair a stripe
# whose chunks come from two images (some columns rolled back, others not:
# fewer than k+2 chunks), so the attach must not happen while a rollback
# runs or was cut short: vol/v's rollback_snapshot refuses it.
#
# 3 nodes with TSR_TEST_ROLLBACK_LOCAL_HOLD_FILE=H; e 2+1, 16 KiB unit,
# 4 MiB: 0x11 written, s1 cut (detached), 0x22 written, detached.
# `volume rollback e s1` through n1, n1's part held, n2's and n3's done;
# `volume attach e --node n2` answers "unfinished rollback" (exit 1); H
# removed: the rollback exits 0; e attached on n2 reads 0x11 over its 4 MiB
# and a scrub --no-repair is clean.
# Fails on e4b68a2 (no refusal): the attach answers 0.  What then follows
# (a manual run): the rollback fails "attached meanwhile", the attach's
# converge scrub leaves 128 of 128 stripes mismatched and unrepaired, and e
# reads 0x11 (2.8 MB) and 0x22 (1.4 MB) mixed.
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
. ./snapops.sh
require_cmd nbdcopy qemu-io timeout

hold_cl_start TSR_TEST_ROLLBACK_LOCAL_HOLD_FILE 3

ctsr volume create e --size 4M --ec 2+1 --stripe-unit 16K >/dev/null || fail "volume create e"
ctsr volume attach e --node n1 >/dev/null || fail "attach e on n1"
qemu-io -f raw -c 'write -P 0x11 0 4M' "$(cl_nbd_uri 1 e)" >/dev/null || fail "write e 0x11"
ctsr volume detach e >/dev/null || fail "detach e"
ctsr snapshot create e s1 >/dev/null || fail "snapshot create e s1"
ctsr volume attach e --node n1 >/dev/null || fail "attach e on n1 again"
qemu-io -f raw -c 'write -P 0x22 0 4M' "$(cl_nbd_uri 1 e)" >/dev/null || fail "write e 0x22"
ctsr volume detach e >/dev/null || fail "detach e again"

held_start "$HOLD" "$HOLD_DIR/op.out" "n1's rollback of e" ctsr volume rollback e s1
pid=$HELD_PID
wait_log 2 "rollback: volume e is s1 again" 20
wait_log 3 "rollback: volume e is s1 again" 20
rc=0
out=$(ctsr_within 30 2 volume attach e --node n2 2>&1) || rc=$?
log "attach e on n2 while n1's rollback is held: exit $rc: $out"
case "$rc $out" in
"1 "*"unfinished rollback"*) ;;
*) fail "attach e on n2 during the rollback: exit $rc (want 1, 'unfinished rollback'): $out" ;;
esac
rm -f "$HOLD"
rc=0
reap "$pid" || rc=$?
[ "$rc" = 0 ] || fail "volume rollback e s1: exit $rc: $(cat "$HOLD_DIR/op.out")"
ctsr volume attach e --node n2 >/dev/null || fail "attach e on n2 after the rollback"
got=$(nbdcopy "$(cl_nbd_uri 2 e)" - | od -v -An -tx1 | tr -s ' \n' '\n' | sort -u | tr -d '\n')
assert_eq "$got" "11" "e's bytes after the rollback (s1: 0x11)"
cl_scrub_clean e "e after the rollback"
ctsr volume detach e >/dev/null || fail "detach e"

cl_stop_all
log ok
