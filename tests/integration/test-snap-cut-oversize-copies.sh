#!/usr/bin/env bash
# A snapshot cut on copies grown past the volume's record keeps the record's
# size (session 14, helper snapsize).  Copies larger than vol/<name>'s size
# are what a cluster resize leaves when it stops after its grow step (c): a
# failure before the record is written, or the loser of two resizes that
# crossed (ARCHITECTURE.md "Online resize").  Here they are built directly:
# the internal local_copy VolumeResize (admin_local_copy volume-resize, a
# helper program built from admin_local_copy.c) sent to a copy's node grows
# only that store copy; the record keeps its size.
#  3 nodes; n3 plays a node of an earlier build (TSR_TEST_PEER_SNAP_UNSIZED:
#  a sized SNAP CREATE refused -EPROTO): the coordinator cuts there again
#  without the size (logged), so a mixed-version cluster still cuts
#  snapshots.  Mirror: v 8 MiB, 3 replicas; the copies on n1 (the
#  coordinator: its local copy) and n2 grown to 16 MiB, n3's not; attached
#  on n1, 8 MiB written, s1 cut.  Asserted: v@s1 is 8 MiB in every copy's catalogue and
#  through every copy node's NBD export (nbdinfo --size), each export reads
#  the 8 MiB written (sha256, the same on every node), `snapshot show` says
#  8 MiB, scrub (heads and snapshots) clean.
#  EC: e 2+1, 16 KiB unit, 4 MiB (2 MiB chunk volumes); the chunk copies
#  on n1 and n2 grown to 4 MiB; attached on n1, written, s1 cut.  Asserted: e@s1 is a
#  2 MiB chunk snapshot on every copy, e@s1 reads back the 4 MiB image (its
#  export 4 MiB), scrub clean.
# Before (the coordinator sent CREATE without a size): v@s1 was 16 MiB on n1
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
# n3 plays a node of an earlier build: it refuses a sized SNAP CREATE
# (-EPROTO) as builds before the size field (f7e535e) did; the coordinator
# then cuts there without the size (its copy's size, right as n3's copies
# are not grown here) and says so
cl_stop 3
TSR_TEST_PEER_SNAP_UNSIZED=1 cl_start_node 3
cl_wait_nodes_alive 3

snap_size() { # NODE VOL: the size of VOL@s1 in node NODE's catalogue ("-": none)
	"$PY" - "$(cl_dir "$1")" "$2" <<'PYEOF'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}/store.db?mode=ro", uri=True)
r = db.execute("select s.size from snapshots s join volumes v on s.vol_uuid = v.uuid"
               " where v.name=? and s.name='s1' and (s.flags & 15) = 0", (sys.argv[2],)).fetchone()
print(r[0] if r else "-")
PYEOF
}
grow_copy() { # NODE VOL SIZE: only NODE's store copy of VOL grows
	local out
	out=$("$ADMIN_LOCAL_COPY" "$(cl_dir "$1")" volume-resize "$2" "$3") ||
		fail "local_copy resize of $2 on n$1: $out"
	assert_eq "$(cl_copy_size "$1" "$2")" "$3" "n$1's copy of $2 after the local_copy resize"
}

# ---- mirror ----
ctsr volume create v --size 8M --replicas 3 >/dev/null || fail "create v"
assert_eq "$(cl_copy_nodes v)" "n1,n2,n3" "v's copies"
grow_copy 1 v $((16 * M))
grow_copy 2 v $((16 * M))
rec=$(ctsr --json volume show v | json_get 'j["size"]')
assert_eq "$rec" $((8 * M)) "v's record after the local_copy grows"
log "v: record $rec; copies n1=$(cl_copy_size 1 v) n2=$(cl_copy_size 2 v) n3=$(cl_copy_size 3 v)"
ctsr volume attach v --node n1 >/dev/null || fail "attach v on n1"
cl_pattern "$CL_ROOT/img" $((8 * M)) 14
want=$(sha256 "$CL_ROOT/img")
nbdcopy "$CL_ROOT/img" "$(cl_nbd_uri 1 v)" || fail "write v"
ctsr snapshot create v s1 >/dev/null || fail "snapshot create v s1"
for i in 1 2 3; do
	s=$(snap_size $i v)
	e=$(nbdinfo --size "$(cl_nbd_uri $i v@s1)") || fail "nbdinfo v@s1 on n$i"
	h=$(cl_image_sha $i v@s1) || fail "cannot read v@s1 through n$i"
	log "n$i: v@s1 catalogue $s, export $e, sha256 ${h:0:16}"
	assert_eq "$s" "$rec" "v@s1's size in n$i's catalogue"
	assert_eq "$e" "$rec" "v@s1's NBD export size on n$i"
	assert_eq "$h" "$want" "sha256 of v@s1 read through n$i"
done
shown=$(ctsr --json snapshot show v s1 | json_get 'j["snapshots"][0]["size"] if "snapshots" in j else j["size"]') ||
	fail "snapshot show v s1"
assert_eq "$shown" "$rec" "snapshot show v s1: size"
wait_log 1 "copy [0-9] \(n3\) refused the sized snapshot create of s1" 5
cl_scrub_clean v "mirror, after s1"

# ---- ec ----
ctsr volume create e --size 4M --ec 2+1 --stripe-unit 16K >/dev/null || fail "create e"
copies=$(cl_copy_nodes e)
assert_eq "$copies" "n1,n2,n3" "e's chunk copies"
chunk=$(cl_copy_size 1 e)
assert_eq "$chunk" $((2 * M)) "e's chunk volume on n1"
grow_copy 1 e $((4 * M))
grow_copy 2 e $((4 * M))
ctsr volume attach e --node n1 >/dev/null || fail "attach e on n1"
cl_pattern "$CL_ROOT/eimg" $((4 * M)) 15
ewant=$(sha256 "$CL_ROOT/eimg")
nbdcopy "$CL_ROOT/eimg" "$(cl_nbd_uri 1 e)" || fail "write e"
ctsr snapshot create e s1 >/dev/null || fail "snapshot create e s1"
for i in 1 2 3; do
	s=$(snap_size $i e)
	log "n$i: e@s1 chunk snapshot $s (chunk volume $(cl_copy_size $i e))"
	assert_eq "$s" "$chunk" "e@s1's chunk size in n$i's catalogue"
done
e=$(nbdinfo --size "$(cl_nbd_uri 1 e@s1)") || fail "nbdinfo e@s1 on n1"
assert_eq "$e" $((4 * M)) "e@s1's NBD export size (the image)"
assert_eq "$(cl_image_sha 1 e@s1)" "$ewant" "sha256 of e@s1"
wait_log 1 "ec e: copy [0-9] \(n3\) refused the sized snapshot create of s1" 5
cl_scrub_clean e "ec, after s1"
cl_stop_all
