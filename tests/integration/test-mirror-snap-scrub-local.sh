#!/usr/bin/env bash
# volume scrub repairs a wrong snapshot block in the COORDINATOR's own copy
# (the node the volume is attached on), inside tesserad: the local rewrite
# (mirror_scrub.c srep_local_start: tsr_svol_snap_repair in a thread of its
# own, the answer posted to the home worker, dd04fa7), and another volume on
# the same node and home worker answers I/O while that rewrite is held.
# test-mirror-snap-scrub plants the block on a remote copy (the peer's
# REPAIR path); mirror_scrub_off_ut drives the same local path in-process.
#
# 3 nodes, each with one worker (--workers 1: every volume a node attaches
# has the same home worker), started with
# TSR_TEST_MIRROR_SNAP_REPAIR_HOLD_FILE=H (the local repair waits while H
# exists, makes H.held when it starts waiting).  v 8 MiB 3 replicas and w
# 4 MiB 3 replicas, both attached on n1.  v: 0x11 everywhere, s1, 0x22 over
# [2M, 3M) (s1's layer then holds those blocks on every copy), s2.
#  1. n1's s1 layer, block 512 (offset 2M), rewritten behind the store's back
#     with 0x99 bytes and their CRC entry: v@s1 on n1 reads 0x99 there, n2
#     and n3 0x11.
#  2. H made; `volume scrub v` (repair) started in the background; H.held
#     appears (n1's local rewrite is waiting).  Meanwhile w on n1 takes
#     writes of 0x5a (4 x 64 KiB, flushed) and reads them back, each
#     qemu-io bounded to 20 s (the hold lasts 30 s at most); the scrub has
#     not ended and v's status still says scrub_running.
#  3. H removed: the scrub exits 0 with 1 mismatch, 1 repaired, 0
#     unrepaired; n1's log says it rewrites block 512 from the majority and
#     the store's 'snapshot repair: v@s1 block 512 rewritten'; v@s1 on n1
#     reads 0x11 at 2M; v@s2 still reads 0x22 there; a second scrub
#     --no-repair is clean; v@s1 and v@s2 have the same sha256 on n1, n2,
#     n3.
# With TSR_TEST_MIRROR_SNAP_REPAIR_INLINE=1 in the environment (the rewrite
# on the home worker, as before dd04fa7) step 2 fails: w's I/O waits for the
# held rewrite.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy qemu-io timeout

make_tmpdir HOLD_DIR
HOLD=$HOLD_DIR/hold
export TSR_TEST_MIRROR_SNAP_REPAIR_HOLD_FILE=$HOLD
cl_start 3 --workers 1
# the hold ends with the test whatever happens (before the nodes are killed)
on_exit "rm -f '$HOLD'"
ctsr volume create v --size 8M --replicas 3 >/dev/null || fail "volume create v"
ctsr volume create w --size 4M --replicas 3 >/dev/null || fail "volume create w"
ctsr volume attach v --node n1 >/dev/null || fail "attach v on n1"
ctsr volume attach w --node n1 >/dev/null || fail "attach w on n1"
qw() { qemu-io -f raw "${@:2}" "$(cl_nbd_uri "$1" v)" >/dev/null || fail "qemu-io on v through n$1: ${*:2}"; }
qw 1 -c 'write -P 0x11 0 8M'
ctsr snapshot create v s1 >/dev/null || fail "snapshot s1"
qw 1 -c 'write -P 0x22 2M 1M'
ctsr snapshot create v s2 >/dev/null || fail "snapshot s2"
qemu-io -f raw -c 'write -P 0x33 0 4M' "$(cl_nbd_uri 1 w)" >/dev/null || fail "w's first write"
cl_scrub_clean v "before the plant"

# ---- 1. a wrong block in n1's (the coordinator's) s1 layer, with a valid CRC entry
"$PY" - "$(cl_dir 1)" <<'EOF' || fail "cannot plant a block in n1's s1 layer"
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
qemu-io -f raw -r -c 'read -P 0x99 2M 4k' -c 'read -P 0x11 0 2M' "$(cl_nbd_uri 1 v@s1)" >/dev/null ||
	fail "v@s1 on n1 does not read the planted block"
for n in 2 3; do
	qemu-io -f raw -r -c 'read -P 0x11 2M 4k' "$(cl_nbd_uri $n v@s1)" >/dev/null ||
		fail "v@s1 on n$n changed"
done
log "n1's v@s1 block 512 planted (0x99, valid CRC)"

# ---- 2. the scrub's local rewrite held; w on the same node and worker answers
cl_wait_scrub_idle v
touch "$HOLD"
SCRUB_OUT=$HOLD_DIR/scrub.json
ctsr --json volume scrub v >"$SCRUB_OUT" 2>"$SCRUB_OUT.err" &
SCRUB_PID=$!
track_pid "$SCRUB_PID"
for (( i=0; i<300; i++ )); do
	[ -e "$HOLD.held" ] && break
	kill -0 "$SCRUB_PID" 2>/dev/null ||
		fail "the scrub ended before n1's local rewrite was held: $(cat "$SCRUB_OUT" "$SCRUB_OUT.err")"
	sleep 0.1
done
[ -e "$HOLD.held" ] || fail "n1's local snapshot rewrite not held after 30 s ($HOLD.held missing)"
log "n1's local rewrite of v@s1 is held"
for k in 0 1 2 3; do
	off=$(( k * 1024 * 1024 ))
	timeout 20 qemu-io -f raw -c "write -P 0x5a $off 64k" -c flush -c "read -P 0x5a $off 64k" \
		"$(cl_nbd_uri 1 w)" >/dev/null ||
		fail "w's write+read at $off on n1 while v's local snapshot rewrite is held: qemu-io status $?"
done
timeout 20 qemu-io -f raw -r -c 'read -P 0x5a 0 64k' -c 'read -P 0x33 64k 960k' \
	-c 'read -P 0x5a 3M 64k' "$(cl_nbd_uri 1 w)" >/dev/null ||
	fail "w does not read back its writes made while v's rewrite was held"
[ -e "$HOLD.held" ] && [ -e "$HOLD" ] || fail "the hold ended before w's I/O was done"
kill -0 "$SCRUB_PID" 2>/dev/null || fail "the scrub ended while its local rewrite was held: $(cat "$SCRUB_OUT")"
r=$(vstatus v 'j["scrub_running"]') || fail "status of v while held"
assert_eq "$r" true "v's scrub_running while its local rewrite is held"
log "w answered 4 writes and reads on n1 while v's local rewrite was held; v's scrub still runs"

# ---- 3. released: repaired from the majority
rm -f "$HOLD"
reap "$SCRUB_PID" || fail "scrub (repair) exited non-zero: $(cat "$SCRUB_OUT" "$SCRUB_OUT.err")"
got=$(json_get '"%s %s %s" % (j["scrub_mismatches"], j["scrub_repaired"], j["scrub_unrepaired"])' <"$SCRUB_OUT")
assert_eq "$got" "1 1 0" "scrub (repair) of v with a wrong s1 block on n1 (mismatches repaired unrepaired)"
grep -q "scrub: snapshot s1 block 512 differs on copies .* (majority: copy .*); rewriting" \
	"$(cl_dir 1)/tesserad.log" || fail "n1's log does not say it rewrites s1's block 512"
grep -q "snapshot repair: v@s1 block 512 rewritten" "$(cl_dir 1)/tesserad.log" ||
	fail "n1's log does not name its own repaired block"
for n in 2 3; do
	! grep -q "snapshot repair: v@s1" "$(cl_dir $n)/tesserad.log" ||
		fail "n$n rewrote a block of its v@s1 (only n1's was wrong)"
done
qemu-io -f raw -r -c 'read -P 0x11 0 2M' -c 'read -P 0x11 2M 4k' "$(cl_nbd_uri 1 v@s1)" >/dev/null ||
	fail "v@s1 on n1 does not read 0x11 at 2M after the repair"
qemu-io -f raw -r -c 'read -P 0x22 2M 1M' "$(cl_nbd_uri 1 v@s2)" >/dev/null ||
	fail "v@s2 on n1 changed with s1's repair"
cl_scrub_clean v "after the repair"
h1=$(cl_assert_snap_identical v s1 1 2 3)
h2=$(cl_assert_snap_identical v s2 1 2 3)
[ "$h1" != "$h2" ] || fail "v@s1 and v@s2 read the same"
log "v@s1 identical on n1 n2 n3 (sha256 ${h1:0:16}), v@s2 too (${h2:0:16})"
cl_scrub_clean w "w after its writes"
ctsr volume detach w >/dev/null || fail "detach w"
ctsr volume detach v >/dev/null || fail "detach v"
cl_stop_all
log "ok"
