#!/usr/bin/env bash
# Per-block CRC32C: a block corrupted on disk reads as EIO (never as data),
# is logged as "CRC mismatch", and its neighbours read fine.  Two ways in:
# corruption of a cleanly closed volume, and corruption of a block in a
# dirty region after a SIGKILL (the recovery scan must not "bless" it).
# Rewriting the block repairs it.
. "$(dirname "$0")/functions.sh"

require_tessera
require_cmd qemu-io nbdcopy

make_tmpdir D
start_tesserad "$D"
vol_create "$D" c 16M
U=$(nbd_uri "$D" c)
uuid=$(tsr "$D" --json volume show c | json_get 'j["uuid"]')
DATA=$D/volumes/$uuid.data
[ -f "$DATA" ] || fail "no data file $DATA"

# Blocks: 0..99 = 0x11, 100 = 0x22, 101..1023 = 0x33, 2048 = 0x44 (written later).
qemu-io -f raw -c 'write -P 0x11 0 409600' -c 'write -P 0x22 409600 4096' \
	-c 'write -P 0x33 413696 3780608' "$U" >/dev/null || fail "write known data"
stop_tesserad

# flip OFFSET COUNT: invert COUNT bytes of the data file at OFFSET.
flip() {
	"$PY" - "$DATA" "$1" "$2" <<'PYEOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
off, n = int(sys.argv[2]), int(sys.argv[3])
b = os.pread(fd, n, off)
assert len(b) == n, "short read of the data file"
os.pwrite(fd, bytes(x ^ 0xFF for x in b), off)
os.fsync(fd)
os.close(fd)
PYEOF
}
# Sanity: the store keeps volume bytes at their offset in the data file.
"$PY" -c 'import sys; d=open(sys.argv[1],"rb"); d.seek(409600); b=d.read(4096); sys.exit(b != b"\x22"*4096)' "$DATA" ||
	fail "block 100 is not at offset 409600 of $DATA: cannot corrupt it precisely"
flip $(( 409600 + 1234 )) 3

start_tesserad "$D"
out=$(qemu-io -f raw -c 'read 409600 4096' "$U" 2>&1) && fail "corrupt block 100 was returned as data: $out"
grep -qi 'Input/output error' <<<"$out" || fail "corrupt block: want EIO, got: $out"
log "corrupt block 100: $out"
grep -q 'CRC mismatch' "$D/tesserad.log" || fail "no 'CRC mismatch' in the tesserad log"
# A larger read that covers the block fails too (no partial data pretending to be whole).
qemu-io -f raw -c 'read 0 1M' "$U" >/dev/null 2>&1 && fail "1 MiB read over a corrupt block succeeded"
# Neighbours are fine.
qemu-io -f raw -c 'read -P 0x11 0 409600' -c 'read -P 0x33 413696 3780608' "$U" >/dev/null ||
	fail "blocks next to the corrupt one do not read back"
nbdcopy "$U" "$D/out.img" 2>/dev/null && fail "nbdcopy of a volume with a corrupt block succeeded"
assert_alive
# Rewriting the block repairs it.
qemu-io -f raw -c 'write -P 0x55 409600 4096' -c 'read -P 0x55 409600 4096' "$U" >/dev/null ||
	fail "rewritten block does not read back"

# Corruption inside a dirty region after a crash: write, SIGKILL, corrupt, restart.
qemu-io -f raw -c 'write -P 0x44 8388608 4096' "$U" >/dev/null || fail "write block 2048"
kill9_tesserad
flip $(( 8388608 + 10 )) 1
start_tesserad "$D" --io libaio
out=$(qemu-io -f raw -c 'read 8388608 4096' "$U" 2>&1) && fail "corrupt block 2048 (dirty region) returned as data"
grep -qi 'Input/output error' <<<"$out" || fail "corrupt block 2048: want EIO, got: $out"
qemu-io -f raw -c 'read -P 0x55 409600 4096' -c 'read -P 0x33 413696 4096' "$U" >/dev/null ||
	fail "other blocks after the crash"
# Still corrupt after a clean restart (the recovery scan did not accept it).
stop_tesserad
start_tesserad "$D"
qemu-io -f raw -c 'read 8388608 4096' "$U" >/dev/null 2>&1 && fail "corrupt block healed itself across a restart"
n=$(grep -c 'CRC mismatch' "$D/tesserad.log")
log "$n 'CRC mismatch' lines in the log"
stop_tesserad
