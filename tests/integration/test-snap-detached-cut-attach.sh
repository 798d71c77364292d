#!/usr/bin/env bash
# A detached volume's snapshot create fenced by the volume record's epoch
# (review 14b finding 2): every copy's cut carries vol/v's epoch at the
# request's start (ours: tsr_store_snap_create_epoch; the other nodes:
# SnapshotCreate.epoch with epoch_set), so an attach between the copies'
# cuts (whose OPEN raises each copy's store epoch before that copy takes a
# write) makes the late cuts -ESTALE: the create fails ("attached
# meanwhile: retry") and the cuts made are deleted again.  Before the fence,
# n1's v@s1 held the writes made through n2 meanwhile while n2's and n3's
# did not, and the create answered 0.
#
# 3 nodes, started with TSR_TEST_SNAP_LOCAL_CUT_HOLD_FILE=H (n1's own cut
# waits while H exists).  v 8 MiB, 3 replicas, written 0x11 through n1,
# detached.
#  1. H made; `snapshot create v s1` through n1 in the background; n1's cut
#     held; v attached on n2, 0x33 written over [0,1M) and flushed, v
#     detached; H removed.  Sound: the create fails naming the attach and
#     v@s1 is in no node's catalogue (undone), or it succeeded and v@s1 is
#     the same image on n1, n2, n3.
#  2. the other nodes' side: n3's copy, its epoch raised by step 1's attach,
#     refuses a local_copy create with epoch 0 (admin_local_copy --epoch 0:
#     -ESTALE, -116) and the same delete; without an epoch it cuts (and
#     deletes) as before.
#  3. `snapshot create v s2` with nothing in between: exits 0, v@s2 the
#     same on n1, n2, n3 and has 0x33 over [0,1M) (the fence refuses no
#     create whose copies nobody opened).
#  4. a detached delete is not fenced (review 14c finding B): H made;
#     `snapshot delete v s2` through n1 in the background; n1's own delete
#     held while n2's and n3's are done; v attached on n2 (raising n1's
#     copy's epoch); H removed.  The delete exits 0 and no copy holds v@s2
#     (a fenced delete left n1 [s2], n2 [], n3 [] on 3 in-sync copies and
#     failed "deleted on some copies only").
# Fails before the fence (HEAD 7b4128e): step 1's create exits 0 and
# n1's v@s1 differs from n2's.  Fails with the delete fenced (341b73a to
# 436b2b3): step 4's delete exits 1 and n1 keeps v@s2.
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
. ./snapops.sh
ADMIN_LOCAL_COPY=$TSR_BUILD/tests/admin_local_copy # admin_local_copy.c
require_tessera "$ADMIN_LOCAL_COPY"
require_cmd nbdcopy qemu-io timeout

hold_cl_start TSR_TEST_SNAP_LOCAL_CUT_HOLD_FILE 3

ctsr volume create v --size 8M --replicas 3 >/dev/null || fail "volume create v"
ctsr volume attach v --node n1 >/dev/null || fail "attach v on n1"
qemu-io -f raw -c 'write -P 0x11 0 8M' "$(cl_nbd_uri 1 v)" >/dev/null || fail "write v"
want=$(cl_image_sha 1 v) || fail "read v"
ctsr volume detach v >/dev/null || fail "detach v"

# ---- 1. an attach and writes while n1's cut is held
held_start "$HOLD" "$HOLD_DIR/op.out" "n1's cut of v@s1" ctsr snapshot create v s1
pid=$HELD_PID
log "n1's cut of v@s1 held; attaching v on n2 and writing 0x33 over [0,1M)"
ctsr_within 30 2 volume attach v --node n2 >/dev/null || fail "attach v on n2 while n1's cut is held"
qemu-io -f raw -c 'write -P 0x33 0 1M' -c flush "$(cl_nbd_uri 2 v)" >/dev/null ||
	fail "write v through n2"
ctsr_within 30 2 volume detach v >/dev/null || fail "detach v on n2"
rm -f "$HOLD"
rc=0
reap "$pid" || rc=$?
out=$(tr '\n' ' ' <"$HOLD_DIR/op.out")
log "snapshot create v s1: exit $rc: $out"
if [ "$rc" != 0 ]; then
	case "$out" in
	*"attached meanwhile"*) ;;
	*) fail "the refused create of v@s1 does not say v was attached meanwhile: $out" ;;
	esac
	for (( i=0; i<100; i++ )); do
		[ "$(snaps_all v s1)" = "n1:no n2:no n3:no" ] && break
		sleep 0.1
	done
	assert_eq "$(snaps_all v s1)" "n1:no n2:no n3:no" "v@s1 in the catalogues after the refused create (undone)"
	log "step 1: the create was refused and undone on every copy"
else
	for n in 1 2 3; do
		h[$n]=$(cl_image_sha $n v@s1) || fail "read v@s1 on n$n"
	done
	log "v@s1 sha256: n1=${h[1]:0:16} n2=${h[2]:0:16} n3=${h[3]:0:16} (before the attach: ${want:0:16})"
	[ "${h[1]}" = "${h[2]}" ] && [ "${h[1]}" = "${h[3]}" ] ||
		fail "v@s1 differs across copies after a create that reported success"
	log "step 1: the create succeeded, v@s1 identical on every copy"
fi

# ---- 2. the other nodes' side of the fence: n3 refuses an old epoch
rc=0
out=$("$ADMIN_LOCAL_COPY" "$(cl_dir 3)" snapshot-create v f0 --epoch 0 2>&1) || rc=$?
[ "$rc" = 1 ] || fail "n3: local_copy create of v@f0 at epoch 0 after an attach: exit $rc ($out)"
case "$out" in
"-116 "*"attached meanwhile"*) ;;
*) fail "n3: local_copy create of v@f0 at epoch 0 not refused -ESTALE: $out" ;;
esac
assert_eq "$(snaps_all v f0)" "n1:no n2:no n3:no" "v@f0 after the fenced local_copy create"
out=$("$ADMIN_LOCAL_COPY" "$(cl_dir 3)" snapshot-create v f0) ||
	fail "n3: local_copy create of v@f0 without an epoch: $out"
assert_eq "$(snaps_all v f0)" "n1:no n2:no n3:yes" "v@f0 after the unfenced local_copy create"
rc=0
out=$("$ADMIN_LOCAL_COPY" "$(cl_dir 3)" snapshot-delete v f0 --epoch 0 2>&1) || rc=$?
case "$rc $out" in
"1 -116 "*) ;;
*) fail "n3: local_copy delete of v@f0 at epoch 0 not refused -ESTALE: exit $rc: $out" ;;
esac
assert_eq "$(snaps_all v f0)" "n1:no n2:no n3:yes" "v@f0 after the fenced local_copy delete"
out=$("$ADMIN_LOCAL_COPY" "$(cl_dir 3)" snapshot-delete v f0) ||
	fail "n3: local_copy delete of v@f0 without an epoch: $out"
assert_eq "$(snaps_all v f0)" "n1:no n2:no n3:no" "v@f0 after the unfenced local_copy delete"
log "step 2: n3 refuses a local_copy create and delete at an epoch below its copy's (-ESTALE)"

# ---- 3. nothing in between: the fenced create cuts every copy
ctsr snapshot create v s2 >/dev/null || fail "snapshot create v s2 with nothing in between"
assert_eq "$(snaps_all v s2)" "n1:yes n2:yes n3:yes" "v@s2 in the catalogues"
cl_assert_snap_identical v s2 1 2 3 >/dev/null || fail "v@s2 differs across copies"
assert_eq "$(first_mib 1 v@s2)" "33" "v@s2's first MiB (written 0x33 through n2)"
log "step 3: v@s2 cut on every copy, identical, with n2's write"

# ---- 4. a detached delete with an attach meanwhile: not fenced, done everywhere
held_start "$HOLD" "$HOLD_DIR/op4.out" "n1's delete of v@s2" ctsr snapshot delete v s2
pid=$HELD_PID
for (( i=0; i<100; i++ )); do
	[ "$(snaps_all v s2)" = "n1:yes n2:no n3:no" ] && break
	sleep 0.1
done
assert_eq "$(snaps_all v s2)" "n1:yes n2:no n3:no" "v@s2 while n1's delete is held"
log "n1's delete of v@s2 held (n2's and n3's done); attaching v on n2"
ctsr_within 30 2 volume attach v --node n2 >/dev/null || fail "attach v on n2 while n1's delete is held"
rm -f "$HOLD"
rc=0
reap "$pid" || rc=$?
out=$(tr '\n' ' ' <"$HOLD_DIR/op4.out")
log "snapshot delete v s2: exit $rc: $out"
[ "$rc" = 0 ] || fail "the detached delete of v@s2 with an attach meanwhile: exit $rc: $out"
assert_eq "$(snaps_all v s2)" "n1:no n2:no n3:no" "v@s2 in the catalogues after the delete"
ctsr snapshot list v >"$HOLD_DIR/list.out" 2>&1 || fail "snapshot list v: $(cat "$HOLD_DIR/list.out")"
grep -qw s2 "$HOLD_DIR/list.out" && fail "snapshot list v (attached on n2) still shows s2"
log "step 4: the delete completed on every copy though v was attached meanwhile"

cl_stop_all
log ok
