#!/usr/bin/env bash
# An EC resync that meets a stripe it cannot rebuild because *another* copy's
# chunk fails its CRC (CI run 21a, test-ec-scrub-crash: n1 out of sync,
# n2's chunk of stripe 15 damaged; n2 failed n1 for it, n1 came back and
# resynced into the same stripe, every 2 s for 120 s).  The returning copy is
# not to blame: it must not be failed (no loop); the stripe is reported, its
# region stays dirty, the copy stays resyncing; once the stripe is rewritten
# the kept regions' retry (5 s after the stop) finishes the resync, with no
# detach and attach (s21-revS: before, the copy stayed resyncing for ever).
# Three nodes, an ec 2+1 4 MiB volume (16 KiB unit, 1 MiB regions) attached
# on n1, written (0x61); n3 stopped; stripe 0 rewritten (0x62, n3's region 0
# dirty); one 4 KiB block of n2's chunk of stripe 1 overwritten with 0x5a
# (O_DIRECT); n3 back:
#  - n1 says stripe 1 (volume bytes 32768-65535) cannot be rebuilt and the
#    resync stopped; n3 is resyncing, and n1 never failed it (no "(n3)
#    failed" line); volume status counts 1 stripe not rebuilt (s21-revS);
#  - stripe 1 rewritten by the host (0x63, a full stripe): n3 in sync by
#    itself (the retry), the data reads back, a scrub is clean.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd qemu-io dd

cl_start 3
cl_ec21_on_n1 ed 0x61
cl_stop 3
cl_qemu_io 1 ed "write -P 0x62 0 32K" >/dev/null || fail "write stripe 0 with n3 away"
cl_wait_state ed n3 out-of-sync 10
# stripe 1's chunk on n2: chunk offset 16 KiB, file block 4
"$PY" -c 'import sys; sys.stdout.buffer.write(b"\x5a" * 4096)' >"$CL_ROOT/damage.blk"
dd if="$CL_ROOT/damage.blk" of="$(cl_copy_file 2 ed)" bs=4096 seek=4 count=1 oflag=direct \
	conv=notrunc status=none || fail "cannot damage n2's chunk file"
from=$(( $(log_lines 1) + 1 ))
cl_start_node 3
cl_wait_nodes_alive 3
wait_log_from 1 "$from" "copy [0-9]+ \(n3\): resync stopped: 1 stripes could not be rebuilt"
grepq -E "copy [0-9]+ \(n3\): resync: stripe 1 \(volume bytes 32768-65535\): its chunk cannot be rebuilt" \
	"$(cl_dir 1)/tesserad.log" || fail "n1 does not name stripe 1 (and its bytes) as the one not rebuilt"
n=$(tail -n +"$from" "$(cl_dir 1)/tesserad.log" | grep -c "(n3) failed")
assert_eq "$n" 0 "lines of n1's log failing n3 after its return"
cl_wait_state ed n3 resyncing 10
assert_eq "$(vstatus ed 'j.get("stripes_unrebuilt")')" 1 "volume status stripes_unrebuilt"
ctsr volume status ed | grepq "1 stripes could not be rebuilt" || fail "volume status does not say a stripe could not be rebuilt"
log "n3 kept resyncing, stripe 1 reported, n3 not failed"

cl_qemu_io 1 ed "write -P 0x63 32K 32K" >/dev/null || fail "rewrite stripe 1"
cl_wait_synced ed 20
assert_eq "$(vstatus ed 'j.get("stripes_unrebuilt")')" 0 "volume status stripes_unrebuilt once in sync"
out=$(cl_qemu_io 1 ed "read -P 0x62 0 32K" "read -P 0x63 32K 32K" "read -P 0x61 64K 4032K" 2>&1) ||
	fail "read ed back: $out"
echo "$out" | grepq "Pattern verification failed" && fail "ed reads back wrong: $out"
cl_scrub_clean ed "after the retried resync"
ctsr volume detach ed >/dev/null || fail "detach ed"
cl_stop_all
log ok
