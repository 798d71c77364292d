#!/usr/bin/env bash
# EC scrub reads every chunk from its disk, remote ones too (peer READ with
# TSR_PEER_F_DIRECT, served by tsr_svol_read_direct; review 15, finding 1).
# Before, the coordinator's own chunk was read O_DIRECT but the other nodes
# served theirs through their page cache: a damaged block under a cached page
# went unseen, and the scrub itself brought every remote chunk file into its
# node's cache (so later scrubs checked RAM).
# Three nodes, n2's data dir on a small ext4 on a loop device (so a block can
# be damaged under the file system while its page stays cached), an ec 2+1
# 4 MiB volume attached on n1, written with 0x61:
#  A. one `volume scrub --no-repair` leaves none of n2's and n3's chunk files
#     in their page cache (a scrub through the cache left 2 MiB each);
#  B. n2's chunk file cached (a buffered read), one block overwritten on the
#     loop device: the cache holds the good block, the disk 0x5a; scrub finds
#     and repairs it (through the cache: 0 repaired), the volume reads back
#     0x61 and the next scrub is clean;
#  C. n2 restarted as a build without the flag (TSR_TEST_PEER_NO_FEATURES:
#     its HELLO reply names no feature, as an earlier build's): n1 sends it
#     plain READs (an earlier build would close the connection on the unknown
#     flag bit) and says so once in its log; the scrub still completes.
# EC_SCRUB_DIRECT_OFF=1 starts n2 and n3 that way from the start: A then fails
# (the code before this test's fix, for showing that the test can fail).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/fullfs.sh"

require_tessera
require_cmd qemu-io fincore filefrag dd
fullfs_require

# resident FILE: bytes of FILE in the page cache
resident() { fincore --bytes --noheadings --output RES "$1" | xargs; }
# phys_off FILE OFF: byte offset on the loop device of byte OFF of FILE
phys_off() {
	filefrag -s -v -b4096 "$1" | "$PY" -c '
import re, sys
want = int(sys.argv[1]) // 4096
for line in sys.stdin:
    m = re.match(r"\s*\d+:\s*(\d+)\.\.\s*(\d+):\s*(\d+)\.\.", line)
    if m and int(m.group(1)) <= want <= int(m.group(2)):
        print((int(m.group(3)) + want - int(m.group(1))) * 4096)
        sys.exit(0)
sys.exit("no extent holds block %d" % want)' "$2"
}
# block FILE OFF [direct]: first byte (hex) of the 4 KiB block at OFF
block() {
	dd if="$1" bs=4096 skip=$(( $2 / 4096 )) count=1 ${3:+iflag=direct} status=none |
		od -An -tx1 -N1 | xargs
}
# damage FILE OFF: overwrite that block with 0x5a on the loop device, under
# the file system; checks the cache kept the good block and the disk has 5a
damage() {
	local f=$1 off=$2 p good
	good=$(block "$f" "$off")
	[ "$good" != 5a ] || fail "block at $off of $f already reads 5a"
	p=$(phys_off "$f" "$off") || fail "no physical offset of $f at $off"
	"$PY" -c 'import sys; sys.stdout.buffer.write(b"\x5a" * 4096)' |
		dd of="$FULLFS_LOOP" bs=4096 seek=$(( p / 4096 )) count=1 oflag=direct conv=notrunc \
			status=none || fail "write the loop device"
	assert_eq "$(block "$f" "$off")" "$good" "n2's block at $off through the page cache"
	assert_eq "$(block "$f" "$off" direct)" 5a "n2's block at $off with O_DIRECT"
}
# scrub_json [ARGS]: one scrub of ev, its JSON
scrub_json() { ctsr --json volume scrub ev "$@" || fail "scrub $* exited non-zero"; }
field() { printf '%s' "$1" | json_get "j[\"$2\"]"; }
start_n2() {
	if [ "${EC_SCRUB_DIRECT_OFF:-}" = 1 ] || [ "${1:-}" = old ]; then
		TSR_TEST_PEER_NO_FEATURES=1 cl_start_node 2
	else
		cl_start_node 2
	fi
}

cl_start 3
cl_stop 2
mv "$(cl_dir 2)" "$CL_ROOT/n2.orig"
fullfs_mount N2 256M "$(cl_dir 2)"
cp -a "$CL_ROOT/n2.orig/." "$N2/" || fail "copy n2's data dir"
start_n2
if [ "${EC_SCRUB_DIRECT_OFF:-}" = 1 ]; then
	cl_stop 3
	TSR_TEST_PEER_NO_FEATURES=1 cl_start_node 3
fi
cl_wait_nodes_alive 3
cl_ec21_on_n1 ev 0x61
F1=$(cl_copy_file 1 ev)
F2=$(cl_copy_file 2 ev)
F3=$(cl_copy_file 3 ev)
case "$F2" in "$N2"/*) ;; *) fail "n2's chunk file $F2 is not on the loop device's fs $N2" ;; esac

# A. a scrub caches nothing on any node
for i in 1 2 3; do
	f=F$i
	assert_eq "$(resident "${!f}")" 0 "n$i's chunk file bytes cached after the write (O_DIRECT)"
done
out=$(scrub_json --no-repair)
assert_eq "$(field "$out" scrub_mismatches)" 0 "A: mismatches of a clean volume"
for i in 1 2 3; do
	f=F$i
	assert_eq "$(resident "${!f}")" 0 "A: n$i's chunk file bytes cached after one scrub"
done
log "A: one scrub of $(field "$out" scrub_total_bytes) bytes left no chunk file cached"

# B. cache good, disk bad on n2: the scrub reads the disk
cat "$F2" >/dev/null
(( $(resident "$F2") >= 2097152 )) || fail "n2's chunk file is not in the page cache"
damage "$F2" $(( 1 << 20 ))
out=$(scrub_json)
log "B: scrub with n2's damaged block cached: $(field "$out" scrub_mismatches) mismatch(es), $(field "$out" scrub_repaired) repaired"
(( $(field "$out" scrub_repaired) >= 1 )) ||
	fail "B: scrub repaired nothing while n2's damaged block was cached: it read n2's cache, not its disk"
assert_eq "$(block "$F2" $(( 1 << 20 )) direct)" "$(block "$F2" $(( 1 << 20 )))" \
	"B: n2's repaired block on disk vs in the cache"
out=$(cl_qemu_io 1 ev "read -P 0x61 0 4M" 2>&1) || fail "B: read ev back: $out"
echo "$out" | grepq "Pattern verification failed" && fail "B: ev after the repair: $out"
cl_scrub_clean ev "B: after the repair"
grep -q "does not serve direct reads" "$(cl_dir 1)/tesserad.log" &&
	fail "B: n1 fell back to plain READs with every node of this build"

# C. n2 answers as an earlier build: plain READs, said once
cl_stop 2
start_n2 old
cl_wait_nodes_alive 3
cl_wait_synced ev
cl_wait_scrub_idle ev
cat "$F2" >/dev/null
damage "$F2" $(( 1 << 19 ))
for k in 1 2; do
	out=$(scrub_json --no-repair)
	log "C: scrub $k with n2 an earlier build: $(field "$out" scrub_mismatches) mismatch(es) (its cache read)"
done
n=$(grep -c "does not serve direct reads" "$(cl_dir 1)/tesserad.log")
assert_eq "$n" 1 "C: n1's log lines saying a node serves no direct reads"
log "C: n1 says: $(grep -o 'peer: .*does not serve direct reads.*' "$(cl_dir 1)/tesserad.log")"
cl_stop 2
start_n2
cl_wait_nodes_alive 3
cl_wait_synced ev
cl_wait_scrub_idle ev
out=$(scrub_json)
(( $(field "$out" scrub_repaired) >= 1 )) || fail "C: n2 of this build again: the damage left in C was not repaired"
cl_scrub_clean ev "C: n2 back"
ctsr volume detach ev >/dev/null || fail "detach ev"
cl_stop_all
log ok
