#!/usr/bin/env bash
# volume scrub compares (and repairs) a mirrored volume's snapshots when the
# coordinator's node holds no copy: the list of snapshots comes from a copy
# (peer SNAP_LIST, mirror_scrub.c snaps_start); before, such a scrub logged
# "scrub: snapshots not compared" and checked the heads only.
#
# 4 nodes: an 8 MiB 3-replica volume v on n1..n3, attached on n4 (no copy):
# 0x11 everywhere, s1, 0x22 over [2M, 3M), s2.  n2's s2 image gets wrong bytes
# at block 600 (offset 2M + 352K: s2's head block on n2, so the wrong bytes
# go into a new entry of s2's layer, written behind the store's back with a
# valid CRC entry and its present bit).
#  1. scrub --no-repair: 1 mismatch, 0 repaired, 1 unrepaired, n4's log
#     names snapshot s2 block 600; no "snapshots not compared".
#  2. scrub: exits 0, 1 1 0; then scrub --no-repair clean; v@s1 and v@s2 have
#     one sha256 each on n1 n2 n3; v@s2 on n2 reads 0x22 at the block again.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy qemu-io

cl_start 3
ctsr volume create v --size 8M --replicas 3 >/dev/null || fail "volume create"
CL_PORT[4]=$(free_port)
cl_start_node 4
CL_N=4
cl_wait_nodes_alive 4
ctsr volume attach v --node n4 >/dev/null || fail "attach v on n4"
assert_eq "$(cl_copy_nodes v)" "n1,n2,n3" "the copies of v"
qw() { qemu-io -f raw "${@:2}" "$(cl_nbd_uri "$1" v)" >/dev/null || fail "qemu-io on v through n$1: ${*:2}"; }
qw 4 -c 'write -P 0x11 0 8M'
ctsr snapshot create v s1 >/dev/null || fail "snapshot s1"
qw 4 -c 'write -P 0x22 2M 1M'
ctsr snapshot create v s2 >/dev/null || fail "snapshot s2"
cl_scrub_clean v "before the plant"

# wrong bytes for s2's block 600 on n2: s2's layer does not hold it (the head
# serves it), so the entry, the data and the present bit are all written
"$PY" - "$(cl_dir 2)" <<'EOF' || fail "cannot plant a block in n2's s2 layer"
import sqlite3, struct, sys
d = sys.argv[1]
db = sqlite3.connect(f"file:{d}/store.db?mode=ro", uri=True)
uuid = db.execute("select s.uuid from snapshots s join volumes v on s.vol_uuid = v.uuid"
                  " where v.name = 'v' and s.name = 's2'").fetchone()[0]
def crc32c(data, crc=0):
    crc ^= 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82f63b78 & -(crc & 1))
    return crc ^ 0xffffffff
Z = crc32c(bytes(4096))
blk, data = 600, b"\x99" * 4096
with open(f"{d}/volumes/{uuid}.present", "r+b") as f:
    f.seek(blk // 64 * 8)
    w, = struct.unpack("<Q", f.read(8))
    assert not w & (1 << (blk % 64)), "s2's layer holds block 600 already"
with open(f"{d}/volumes/{uuid}.data", "r+b") as f:
    f.seek(blk * 4096)
    f.write(data)
c = crc32c(data) ^ Z
with open(f"{d}/volumes/{uuid}.crc", "r+b") as f:
    f.seek(8 * blk)
    f.write(struct.pack("<II", c, c))
with open(f"{d}/volumes/{uuid}.present", "r+b") as f:
    f.seek(blk // 64 * 8)
    f.write(struct.pack("<Q", w | (1 << (blk % 64))))
EOF
qemu-io -f raw -r -c 'read -P 0x99 2400k 4k' "$(cl_nbd_uri 2 v@s2)" >/dev/null ||
	fail "v@s2 on n2 does not read the planted block"

# ---- 1. found without a copy on the coordinator's node
cl_wait_scrub_idle v
out=$(ctsr --json volume scrub v --no-repair) && fail "scrub --no-repair exited 0: $out"
got=$(printf '%s' "$out" |
	json_get '"%s %s %s" % (j["scrub_mismatches"], j["scrub_repaired"], j["scrub_unrepaired"])')
assert_eq "$got" "1 0 1" "scrub --no-repair of v, coordinator without a copy (mismatches repaired unrepaired)"
grep -q "scrub: snapshots not compared" "$(cl_dir 4)/tesserad.log" &&
	fail "n4 did not compare the snapshots"
grep -q "scrub: snapshot s2 block 600 differs on copies 0x2" "$(cl_dir 4)/tesserad.log" ||
	fail "n4's log does not name s2's block 600 on copy 1 (n2)"

# ---- 2. repaired
out=$(ctsr --json volume scrub v) || fail "scrub (repair) exited non-zero: $out"
got=$(printf '%s' "$out" |
	json_get '"%s %s %s" % (j["scrub_mismatches"], j["scrub_repaired"], j["scrub_unrepaired"])')
assert_eq "$got" "1 1 0" "scrub (repair) of v (mismatches repaired unrepaired)"
qemu-io -f raw -r -c 'read -P 0x22 2M 1M' "$(cl_nbd_uri 2 v@s2)" >/dev/null ||
	fail "v@s2 on n2 does not read 0x22 after the repair"
qemu-io -f raw -r -c 'read -P 0x11 0 8M' "$(cl_nbd_uri 2 v@s1)" >/dev/null ||
	fail "v@s1 on n2 changed with s2's repair"
cl_scrub_clean v "after the repair"
h1=$(cl_assert_snap_identical v s1 1 2 3)
h2=$(cl_assert_snap_identical v s2 1 2 3)
[ "$h1" != "$h2" ] || fail "v@s1 and v@s2 read the same"
log "v@s1 identical on n1 n2 n3 (sha256 ${h1:0:16}), v@s2 too (${h2:0:16})"
ctsr volume detach v >/dev/null || fail "detach"
cl_stop_all
log "ok"
