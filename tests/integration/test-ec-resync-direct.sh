#!/usr/bin/env bash
# An EC resync or rebuild reads its source chunks from disk, not through the
# source nodes' page caches: ec_col_read(EC_COL_DIRECT) -> ecopy_read_direct
# (a local chunk tsr_svol_read_direct, a remote one a peer READ with
# TSR_PEER_F_DIRECT, a plain READ to a replica of a build without it).  Host
# reads (degraded ones too) still go through the cache.
# Three nodes, an ec 2+1 4 MiB volume (16 KiB unit) attached on n1:
#  A. n3 stopped, 4 MiB written (0x61), n3 back: after its resync neither
#     n1's nor n2's chunk file has a byte in the page cache (through the
#     cache: each source's chunks of the stripes n3 was missing); the data
#     reads back and a scrub is clean;
#  B. n2 restarted as a build without the flag (TSR_TEST_PEER_NO_FEATURES),
#     n3 stopped, 4 MiB written (0x62), n3 back: the resync completes with
#     plain READs to n2 (n1 says so once in its log; n2's chunk file is then
#     in its page cache), the data reads back and a scrub is clean; n1's own
#     chunk file is still not cached.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd qemu-io fincore

# resident FILE: bytes of FILE in the page cache
resident() { fincore --bytes --noheadings --output RES "$1" | xargs; }
readback() {
	local out
	out=$(cl_qemu_io 1 ev "read -P $1 0 4M" 2>&1) || fail "$2: read ev back: $out"
	echo "$out" | grepq "Pattern verification failed" && fail "$2: ev: $out"
	return 0
}

cl_start 3
cl_ec21_on_n1 ev
F1=$(cl_copy_file 1 ev)
F2=$(cl_copy_file 2 ev)
F3=$(cl_copy_file 3 ev)

# A
cl_stop 3
cl_qemu_io 1 ev "write -P 0x61 0 4M" >/dev/null || fail "A: write ev"
for i in 1 2; do
	f=F$i
	assert_eq "$(resident "${!f}")" 0 "A: n$i's chunk file bytes cached after the write (O_DIRECT)"
done
cl_start_node 3
cl_wait_nodes_alive 3
cl_wait_synced ev
log "A: after the resync: cached n1 $(resident "$F1"), n2 $(resident "$F2"), n3 (target) $(resident "$F3") bytes"
for i in 1 2; do
	f=F$i
	assert_eq "$(resident "${!f}")" 0 "A: n$i's (a source's) chunk file bytes cached after the resync"
done
cl_scrub_clean ev "A: after the resync"
readback 0x61 A

# B: n2 an earlier build, served plain READs
cl_stop 2
TSR_TEST_PEER_NO_FEATURES=1 cl_start_node 2
cl_wait_nodes_alive 3
cl_wait_synced ev
cl_stop 3
cl_qemu_io 1 ev "write -P 0x62 0 4M" >/dev/null || fail "B: write ev"
cl_start_node 3
cl_wait_nodes_alive 3
cl_wait_synced ev
log "B: after the resync: cached n1 $(resident "$F1"), n2 (earlier build) $(resident "$F2") bytes"
assert_eq "$(resident "$F1")" 0 "B: n1's chunk file bytes cached after the resync"
(( $(resident "$F2") > 0 )) ||
	fail "B: n2's chunk file not cached: the resync did not read it with plain READs"
n=$(grep -c "does not serve direct reads" "$(cl_dir 1)/tesserad.log")
assert_eq "$n" 1 "B: n1's log lines saying n2 serves no direct reads"
cl_scrub_clean ev "B: after the resync"
readback 0x62 B
ctsr volume detach ev >/dev/null || fail "detach ev"
cl_stop_all
log ok
