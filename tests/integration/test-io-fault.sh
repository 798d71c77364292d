#!/usr/bin/env bash
# I/O faults under a real daemon (tesserad --io-fault, the fault-injecting
# backend): failed writes, reads and fsyncs reach the NBD client as EIO and
# change nothing; short transfers are resumed and the data is exact; a torn
# write is reported and a rewrite heals the block.  The daemon survives all of
# it and a restart without faults sees the right data.
. "$(dirname "$0")/functions.sh"

require_tessera
require_cmd qemu-io nbdcopy

make_tmpdir D
start_tesserad "$D"
vol_create "$D" f 16M
U=$(nbd_uri "$D" f)
qemu-io -f raw -c 'write -P 0x11 0 16M' "$U" >/dev/null || fail "fill"
stop_tesserad

qio() { qemu-io -f raw "$@" "$U" 2>&1; }

# Every write fails: EIO to the client, the old data stays.
start_tesserad "$D" --io-fault 'write:1+:fail=EIO'
out=$(qio -c 'write -P 0x22 4096 8192') && fail "write succeeded under write:1+:fail=EIO: $out"
grep -qi 'Input/output error' <<<"$out" || fail "failed write: want EIO, got: $out"
qio -c 'read -P 0x11 0 16M' >/dev/null || fail "data changed by a failed write"
assert_alive
stop_tesserad

# Every read fails: EIO, and the daemon keeps serving.
start_tesserad "$D" --io-fault 'read:1+:fail=EIO'
out=$(qio -c 'read 0 4096') && fail "read succeeded under read:1+:fail=EIO: $out"
grep -qi 'Input/output error' <<<"$out" || fail "failed read: want EIO, got: $out"
assert_alive
stop_tesserad

# Every fsync fails: FLUSH and FUA writes report EIO.
start_tesserad "$D" --io-fault 'fsync:1+:fail=EIO'
out=$(qio -c 'write -P 0x33 8192 4096' -c 'flush') && fail "flush succeeded under fsync:1+:fail=EIO: $out"
grep -qi 'Input/output error\|flush failed' <<<"$out" || fail "failed flush: want EIO, got: $out"
out=$(qio -c 'write -f -P 0x33 12288 4096') && fail "FUA write succeeded under fsync:1+:fail=EIO: $out"
assert_alive
stop_tesserad

# Short transfers everywhere: the core resumes them, data is exact.
start_tesserad "$D" --io-fault 'write:1+:short=1024,read:1+:short=512'
head -c 4M /dev/urandom >"$D/r.img"
qemu-img convert -n -f raw -O raw "$D/r.img" "$U" >/dev/null 2>&1 ||
	{ qemu-io -f raw -c 'write 0 4096' "$U"; fail "writes with short transfers failed"; }
nbdcopy "$U" "$D/back.img" || fail "reads with short transfers failed"
cmp -n 4194304 "$D/r.img" "$D/back.img" || fail "short transfers corrupted data"
stop_tesserad
start_tesserad "$D"
nbdcopy "$U" "$D/back2.img" || fail "read after restart"
cmp -n 4194304 "$D/r.img" "$D/back2.img" || fail "data written with short transfers differs after restart"
stop_tesserad

# A torn write: EIO to the client; the block may read as old, new or EIO,
# never as anything else; a rewrite heals it.
start_tesserad "$D" --io-fault 'write:1:tear=2048'
out=$(qio -c 'write -P 0x44 8M 4096') && fail "torn write reported success: $out"
qio -c 'read -P 0x11 12M 4096' >/dev/null || fail "read of another block after a torn write"
stop_tesserad
start_tesserad "$D"
out=$(qio -c 'read -v 8M 4096')
if grep -qi 'Input/output error' <<<"$out"; then
	log "torn block reads as EIO (never as torn data)"
else
	bytes=$(grep -E '^[0-9a-f]{8}:' <<<"$out" | cut -d: -f2 | cut -c1-48 | tr -s ' ' '\n' | sort -u | tr '\n' ' ')
	case "$bytes" in
	" 11 "|"11 "|" 44 "|"44 ") log "torn block reads as whole old or new data ($bytes)";;
	*) fail "torn block returned mixed data: $bytes";;
	esac
fi
qio -c 'write -P 0x55 8M 4096' -c 'read -P 0x55 8M 4096' >/dev/null || fail "rewrite of the torn block"
grep -iE 'AddressSanitizer|runtime error' "$D/tesserad.log" && fail "sanitizer report in the log"
stop_tesserad
