#!/usr/bin/env bash
# A clone of a detached volume's current content is made from a temporary
# snapshot (clone-src.XXXX) cut on every copy, deleted afterwards without
# waiting (snapshot.c snap_delete_nowait).  The handling node deleted its
# own store's copy of it inline on its admin loop (the store lock, the
# catalogue, a merge's start): every admin call to that node waited
# meanwhile.  Now that delete runs in a thread of its own ("snap-tmpdel",
# counted in local_running like the detached cut and its undo).
#
# 3 nodes, started with TSR_TEST_SNAP_TMP_DELETE_HOLD_FILE=H (the handling
# node's delete of a clone's temporary snapshot waits while H exists and
# makes H.held).  v 8 MiB, 3 replicas, written, detached.
#  1. H made; `volume create c --from-volume v` through n1 in the background;
#     H.held appears; n1 answers `volume list` (bounded to 20 s) and the
#     clone command ends with exit 0 while the delete is still held; n1's
#     catalogue still lists v's clone-src snapshot, n2's and n3's do not.
#  2. H removed: n1's catalogue drops it too (polled); `snapshot list v`
#     shows none; c attached on n2 reads back v's bytes.
# With TSR_TEST_SNAP_LOCAL_CUT_INLINE=1 (that delete on n1's admin loop, as
# before) step 1 fails: n1's `volume list` waits for the held delete.
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
. ./snapops.sh
require_cmd nbdcopy qemu-io timeout

hold_cl_start TSR_TEST_SNAP_TMP_DELETE_HOLD_FILE 3

ctsr volume create v --size 8M --replicas 3 >/dev/null || fail "volume create v"
ctsr volume attach v --node n1 >/dev/null || fail "attach v on n1"
qemu-io -f raw -c 'write -P 0x11 0 8M' -c 'write -P 0x44 3M 1M' "$(cl_nbd_uri 1 v)" >/dev/null ||
	fail "write v"
want=$(cl_image_sha 1 v) || fail "read v"
ctsr volume detach v >/dev/null || fail "detach v"

tmp_snaps() { # I: v's clone-src snapshots in node I's catalogue
	cl_snaps_of "$1" v | tr ' ' '\n' | grep -c '^clone-src\.' || true
}

# ---- 1. the clone, n1's delete of its temporary snapshot held (not held_start:
# the clone may answer before the delete begins to wait)
rm -f "$HOLD.held"
touch "$HOLD"
ctsr volume create c --from-volume v >"$HOLD_DIR/op.out" 2>&1 &
pid=$!
track_pid "$pid"
for (( i=0; i<300; i++ )); do [ -e "$HOLD.held" ] && break; sleep 0.1; done
[ -e "$HOLD.held" ] || fail "n1's delete of the temporary snapshot not held: $(cat "$HOLD_DIR/op.out")"
log "n1's delete of v's temporary snapshot is held"
ctsr_within 20 1 volume list >/dev/null || fail "n1's volume list while the temporary snapshot's delete is held: status $?"
for (( i=0; i<200; i++ )); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "the clone did not answer while n1's delete was held"
rc=0
reap "$pid" || rc=$?
[ "$rc" = 0 ] || fail "volume create c --from-volume v: exit $rc: $(cat "$HOLD_DIR/op.out")"
[ -e "$HOLD" ] || fail "the hold ended before n1 answered"
assert_eq "$(tmp_snaps 1)" 1 "n1: v's temporary snapshots while its delete is held"
for (( i=0; i<100; i++ )); do
	[ "$(tmp_snaps 2)$(tmp_snaps 3)" = 00 ] && break
	sleep 0.1
done
assert_eq "$(tmp_snaps 2)$(tmp_snaps 3)" 00 "n2, n3: v's temporary snapshots (deleted there)"
log "step 1: n1 answered volume list and the clone while its delete was held"

# ---- 2. released: gone everywhere, the clone reads back v
rm -f "$HOLD"
for (( i=0; i<100; i++ )); do [ "$(tmp_snaps 1)" = 0 ] && break; sleep 0.1; done
assert_eq "$(tmp_snaps 1)" 0 "n1: v's temporary snapshots after the hold"
out=$(ctsr snapshot list v 2>&1) || fail "snapshot list v: $out"
case "$out" in *clone-src*) fail "snapshot list v still shows the temporary snapshot: $out" ;; esac
ctsr volume attach c --node n2 >/dev/null || fail "attach c on n2"
assert_eq "$(cl_image_sha 2 c)" "$want" "clone c read through n2 (v's bytes)"
ctsr volume detach c >/dev/null || fail "detach c"
log "step 2: the temporary snapshot is gone from every copy; c is v's image"

cl_stop_all
log ok
