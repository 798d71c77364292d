#!/usr/bin/env bash
# A snapshot of a DETACHED volume cut on copies grown past the volume's
# record keeps the record's size (session 14, helper snapsize, follow-up of
# test-snap-cut-oversize-copies, which covers the attached cut).  A detached
# volume's snapshot create sends the local_copy SnapshotCreate to every
# copy's node (engine/cluster/snapshot.c); it now carries the record's size
# (SnapshotCreate.size; ec: the chunk volume's) and each store cuts that
# size.  Copies larger than vol/<name>'s size are what a cluster resize
# leaves when it stops after its grow step; here they are built directly:
# the internal local_copy VolumeResize (admin_local_copy volume-resize)
# grows only that node's store copy, the record keeps its size.
#  3 nodes.  Mirror: v 8 MiB, 3 replicas; attached on n1, 8 MiB written,
#  detached (clean); the copies on n1 and n2 grown to 16 MiB, n3's not.
#  `snapshot create v s1` through n2 (the copies' nodes asked at once,
#  n2's on its own store) and `snapshot create v s2` through n3.  Asserted:
#  v@s1 and v@s2 are 8 MiB in every copy's catalogue and every node's
#  v@s1 export (nbdinfo --size), each reads the 8 MiB written (sha256);
#  `snapshot show` 8 MiB.  A clone of v's current content (a temporary
#  snapshot cut the same way) has 8 MiB copies on every node and reads
#  back the image.  v attached again: scrub (heads and snapshots) clean.
#  Detached again, the sized local_copy cut sent straight to a node
#  (admin_local_copy snapshot-create --size): n1's 16 MiB copy at 8 MiB
#  gives an 8 MiB snapshot; n3's 8 MiB copy asked 16 MiB answers -EINVAL
#  ("this node's copy is 8.0 MiB") and has no such snapshot.
#  EC: e 2+1, 16 KiB unit, 4 MiB (2 MiB chunk volumes), written, detached,
#  the chunk copies on n1 and n2 grown to 4 MiB; s1 cut detached: e@s1 a
#  2 MiB chunk snapshot on every copy; attached again: e@s1's export is
#  4 MiB and reads back the image, scrub clean.
# Before (the local_copy create carried no size): v@s1 was 16 MiB on n1
# and n2 and 8 MiB on n3; e@s1 4 MiB on the grown chunk copies.
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
ADMIN_LOCAL_COPY=$TSR_BUILD/tests/admin_local_copy # admin_local_copy.c
require_tessera "$ADMIN_LOCAL_COPY"
require_cmd nbdcopy
require_cmd nbdinfo
M=$((1 << 20))
cl_start 3

snap_size() { # NODE VOL SNAP: the size of VOL@SNAP in node NODE's catalogue ("-": none)
	"$PY" - "$(cl_dir "$1")" "$2" "$3" <<'PYEOF'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}/store.db?mode=ro", uri=True)
r = db.execute("select s.size from snapshots s join volumes v on s.vol_uuid = v.uuid"
               " where v.name=? and s.name=? and (s.flags & 15) = 0",
               (sys.argv[2], sys.argv[3])).fetchone()
print(r[0] if r else "-")
PYEOF
}
grow_copy() { # NODE VOL SIZE: only NODE's store copy of VOL grows
	local out
	out=$("$ADMIN_LOCAL_COPY" "$(cl_dir "$1")" volume-resize "$2" "$3") ||
		fail "local_copy resize of $2 on n$1: $out"
	assert_eq "$(cl_copy_size "$1" "$2")" "$3" "n$1's copy of $2 after the local_copy resize"
}
check_mirror_snap() { # SNAP: v@SNAP has the record's size and the bytes written on every node
	local i s e h
	for i in 1 2 3; do
		s=$(snap_size $i v "$1")
		e=$(nbdinfo --size "$(cl_nbd_uri $i "v@$1")") || fail "nbdinfo v@$1 on n$i"
		h=$(cl_image_sha $i "v@$1") || fail "cannot read v@$1 through n$i"
		log "n$i: v@$1 catalogue $s, export $e, sha256 ${h:0:16} (copy $(cl_copy_size $i v))"
		assert_eq "$s" "$rec" "v@$1's size in n$i's catalogue"
		assert_eq "$e" "$rec" "v@$1's NBD export size on n$i"
		assert_eq "$h" "$want" "sha256 of v@$1 read through n$i"
	done
}

# ---- mirror ----
ctsr volume create v --size 8M --replicas 3 >/dev/null || fail "create v"
assert_eq "$(cl_copy_nodes v)" "n1,n2,n3" "v's copies"
ctsr volume attach v --node n1 >/dev/null || fail "attach v on n1"
cl_pattern "$CL_ROOT/img" $((8 * M)) 16
want=$(sha256 "$CL_ROOT/img")
nbdcopy "$CL_ROOT/img" "$(cl_nbd_uri 1 v)" || fail "write v"
ctsr volume detach v >/dev/null || fail "detach v"
grow_copy 1 v $((16 * M))
grow_copy 2 v $((16 * M))
rec=$(ctsr --json volume show v | json_get 'j["size"]')
assert_eq "$rec" $((8 * M)) "v's record after the local_copy grows"
log "v (detached): record $rec; copies n1=$(cl_copy_size 1 v) n2=$(cl_copy_size 2 v) n3=$(cl_copy_size 3 v)"
ctsr_via 2 snapshot create v s1 >/dev/null || fail "snapshot create v s1 (detached, through n2)"
check_mirror_snap s1
ctsr_via 3 snapshot create v s2 >/dev/null || fail "snapshot create v s2 (detached, through n3)"
check_mirror_snap s2
shown=$(ctsr --json snapshot show v s1 | json_get 'j["snapshots"][0]["size"] if "snapshots" in j else j["size"]') ||
	fail "snapshot show v s1"
assert_eq "$shown" "$rec" "snapshot show v s1: size"
# a clone of the detached volume's current content: made from a temporary
# snapshot cut the same way, so its copies have the record's size
out=$(ctsr volume create c --from-volume v 2>&1) || fail "clone c of detached v: $out"
for i in 1 2 3; do
	assert_eq "$(cl_copy_size $i c)" "$rec" "n$i's copy of the clone c"
done
ctsr volume attach c --node n3 >/dev/null || fail "attach c on n3"
assert_eq "$(nbdinfo --size "$(cl_nbd_uri 3 c)")" "$rec" "c's NBD export size"
cl_assert_image 3 c "$CL_ROOT/img" "clone c of detached v"
ctsr volume detach c >/dev/null || fail "detach c"
ctsr volume attach v --node n1 >/dev/null || fail "attach v on n1 again"
cl_scrub_clean v "mirror, after the detached s1, s2"
ctsr volume detach v >/dev/null || fail "detach v again"
# the sized local_copy cut end to end (SnapshotCreate.size through the admin
# socket, admin_local_copy --size): n1's 16 MiB copy cut at 8 MiB has an
# 8 MiB snapshot; n3's 8 MiB copy asked 16 MiB answers -EINVAL naming its
# copy's size and cuts nothing (a node that ignored the field would cut 8 MiB)
out=$("$ADMIN_LOCAL_COPY" "$(cl_dir 1)" snapshot-create v sized --size 8M) ||
	fail "local_copy cut of v@sized at 8 MiB on n1: $out"
assert_eq "$(snap_size 1 v sized)" $((8 * M)) "v@sized's size in n1's catalogue (its copy 16 MiB)"
out=$("$ADMIN_LOCAL_COPY" "$(cl_dir 1)" snapshot-delete v sized) ||
	fail "local_copy delete of v@sized on n1: $out"
rc=0
out=$("$ADMIN_LOCAL_COPY" "$(cl_dir 3)" snapshot-create v big --size 16M) || rc=$?
log "n3: local_copy cut of v@big at 16 MiB (copy $(cl_copy_size 3 v)): exit $rc, '$out'"
assert_eq "$rc" 1 "exit code of the local_copy cut of v@big at 16 MiB on n3 (an error answered)"
assert_eq "${out%% *}" "-22" "the answer's error to the 16 MiB cut on n3's 8 MiB copy"
case "$out" in
*"this node's copy is 8.0 MiB"*) ;;
*) fail "the refusal does not name n3's copy size: $out" ;;
esac
assert_eq "$(snap_size 3 v big)" "-" "v@big in n3's catalogue after the refused cut"

# ---- ec ----
ctsr volume create e --size 4M --ec 2+1 --stripe-unit 16K >/dev/null || fail "create e"
assert_eq "$(cl_copy_nodes e)" "n1,n2,n3" "e's chunk copies"
chunk=$(cl_copy_size 1 e)
assert_eq "$chunk" $((2 * M)) "e's chunk volume on n1"
ctsr volume attach e --node n1 >/dev/null || fail "attach e on n1"
cl_pattern "$CL_ROOT/eimg" $((4 * M)) 17
ewant=$(sha256 "$CL_ROOT/eimg")
nbdcopy "$CL_ROOT/eimg" "$(cl_nbd_uri 1 e)" || fail "write e"
ctsr volume detach e >/dev/null || fail "detach e"
grow_copy 1 e $((4 * M))
grow_copy 2 e $((4 * M))
ctsr snapshot create e s1 >/dev/null || fail "snapshot create e s1 (detached)"
for i in 1 2 3; do
	s=$(snap_size $i e s1)
	log "n$i: e@s1 chunk snapshot $s (chunk volume $(cl_copy_size $i e))"
	assert_eq "$s" "$chunk" "e@s1's chunk size in n$i's catalogue"
done
ctsr volume attach e --node n1 >/dev/null || fail "attach e on n1 again"
assert_eq "$(nbdinfo --size "$(cl_nbd_uri 1 e@s1)")" $((4 * M)) "e@s1's NBD export size (the image)"
assert_eq "$(cl_image_sha 1 e@s1)" "$ewant" "sha256 of e@s1"
cl_scrub_clean e "ec, after the detached s1"
cl_stop_all
