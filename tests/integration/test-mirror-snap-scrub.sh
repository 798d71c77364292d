#!/usr/bin/env bash
# volume scrub compares the snapshots of a mirrored volume too, not only the
# heads (mirror_scrub.c, snapshot pass): a snapshot block with wrong bytes on
# one copy (a valid CRC: the wrong-bytes case, which no read detects) is
# reported as a mismatch; with repair, rewritten from the majority (a WRITE
# with TSR_PEER_F_REPAIR on the copy's VOL@SNAP session, the store's
# tsr_svol_snap_repair).
#
# 3 nodes, an 8 MiB 3-replica volume v attached on n1: 0x11 everywhere, s1,
# 0x22 over [2M, 3M) (s1's layer then holds those blocks on every copy), s2.
#  1. scrub --no-repair: clean (the snapshots compared equal).
#  2. n3's s1 layer, block 512 (offset 2M), rewritten behind the store's back
#     with 0x99 bytes and their CRC entry: v@s1 on n3 reads 0x99 there, the
#     others 0x11; scrub --no-repair: 1 mismatch, 0 repaired, 1 unrepaired,
#     n1's log names snapshot s1 block 512; the heads are equal.
#  3. scrub (repair): exits 0 (nothing left unrepaired, the heads'
#     convention), 1 mismatch, 1 repaired, 0 unrepaired; v@s1 on n3 reads
#     0x11 at 2M again; a second scrub --no-repair is clean; v@s1 and v@s2
#     have the same sha256 on n1, n2, n3, and v@s2 still reads 0x22 at 2M
#     (s1's repair changed s1's image only).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy qemu-io

cl_start 3
ctsr volume create v --size 8M --replicas 3 >/dev/null || fail "volume create"
ctsr volume attach v --node n1 >/dev/null || fail "attach v on n1"
qw() { qemu-io -f raw "${@:2}" "$(cl_nbd_uri "$1" v)" >/dev/null || fail "qemu-io on v through n$1: ${*:2}"; }
qw 1 -c 'write -P 0x11 0 8M'
ctsr snapshot create v s1 >/dev/null || fail "snapshot s1"
qw 1 -c 'write -P 0x22 2M 1M'
ctsr snapshot create v s2 >/dev/null || fail "snapshot s2"

# ---- 1. clean
cl_scrub_clean v "before the plant"
grep -q "scrub: snapshots not compared" "$(cl_dir 1)/tesserad.log" &&
	fail "n1 did not compare the snapshots"

# ---- 2. a wrong block in n3's s1 layer, with a valid CRC entry
"$PY" - "$(cl_dir 3)" <<'EOF' || fail "cannot plant a block in n3's s1 layer"
import sqlite3, struct, sys
d = sys.argv[1]
db = sqlite3.connect(f"file:{d}/store.db?mode=ro", uri=True)
uuid = db.execute("select s.uuid from snapshots s join volumes v on s.vol_uuid = v.uuid"
                  " where v.name = 'v' and s.name = 's1'").fetchone()[0]
def crc32c(data, crc=0):
    crc ^= 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82f63b78 & -(crc & 1))
    return crc ^ 0xffffffff
Z = crc32c(bytes(4096))
assert Z == 0x98f94189, hex(Z)
blk, data = 512, b"\x99" * 4096
with open(f"{d}/volumes/{uuid}.data", "r+b") as f:
    f.seek(blk * 4096)
    old = f.read(4096)
    assert old == b"\x11" * 4096, "s1's layer does not hold block 512 as 0x11"
    f.seek(blk * 4096)
    f.write(data)
c = crc32c(data) ^ Z
with open(f"{d}/volumes/{uuid}.crc", "r+b") as f:
    f.seek(8 * blk)
    f.write(struct.pack("<II", c, c))
EOF
qemu-io -f raw -r -c 'read -P 0x99 2M 4k' -c 'read -P 0x11 0 2M' "$(cl_nbd_uri 3 v@s1)" >/dev/null ||
	fail "v@s1 on n3 does not read the planted block"
qemu-io -f raw -r -c 'read -P 0x11 2M 4k' "$(cl_nbd_uri 2 v@s1)" >/dev/null ||
	fail "v@s1 on n2 changed"
cl_wait_scrub_idle v
# exits non-zero (mismatches it could not repair): the JSON says what it found
out=$(ctsr --json volume scrub v --no-repair) && fail "scrub --no-repair exited 0: $out"
got=$(printf '%s' "$out" |
	json_get '"%s %s %s" % (j["scrub_mismatches"], j["scrub_repaired"], j["scrub_unrepaired"])')
assert_eq "$got" "1 0 1" "scrub of v with a wrong s1 block on n3 (mismatches repaired unrepaired)"
grep -q "scrub: snapshot s1 block 512 differs on copies" "$(cl_dir 1)/tesserad.log" ||
	fail "n1's log does not name s1's block 512"
grep "scrub: snapshot s1 block 512" "$(cl_dir 1)/tesserad.log" | tail -1 | sed 's/^/  /'

# ---- 3. repaired from the majority
out=$(ctsr --json volume scrub v) || fail "scrub (repair) exited non-zero: $out"
got=$(printf '%s' "$out" |
	json_get '"%s %s %s" % (j["scrub_mismatches"], j["scrub_repaired"], j["scrub_unrepaired"])')
assert_eq "$got" "1 1 0" "scrub (repair) of v with a wrong s1 block on n3 (mismatches repaired unrepaired)"
grep -q "scrub: snapshot s1 block 512 differs on copies 0x4 (majority: copy .*); rewriting" \
	"$(cl_dir 1)/tesserad.log" || fail "n1's log does not say it rewrites s1's block 512"
grep -q "snapshot repair: v@s1 block 512 rewritten" "$(cl_dir 3)/tesserad.log" ||
	fail "n3's log does not name the repaired block"
qemu-io -f raw -r -c 'read -P 0x11 0 2M' -c 'read -P 0x11 2M 4k' "$(cl_nbd_uri 3 v@s1)" >/dev/null ||
	fail "v@s1 on n3 does not read 0x11 at 2M after the repair"
qemu-io -f raw -r -c 'read -P 0x22 2M 1M' "$(cl_nbd_uri 3 v@s2)" >/dev/null ||
	fail "v@s2 on n3 changed with s1's repair"
cl_scrub_clean v "after the repair"
h1=$(cl_assert_snap_identical v s1 1 2 3)
h2=$(cl_assert_snap_identical v s2 1 2 3)
[ "$h1" != "$h2" ] || fail "v@s1 and v@s2 read the same"
log "v@s1 identical on n1 n2 n3 (sha256 ${h1:0:16}), v@s2 too (${h2:0:16})"
ctsr volume detach v >/dev/null || fail "detach"
cl_stop_all
log "ok"
