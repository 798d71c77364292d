#!/usr/bin/env bash
# A replaced mirror copy of a volume with snapshots is made up with what
# differs only: the first snapshot's non-zero blocks, then for each next
# snapshot the blocks that changed since the previous one, then the head's
# changes since the last snapshot (mirror_snap.c replay_copy, compares() in
# mirror_resync.c).  Before, each snapshot's whole image was written into
# the new copy's head, then the head's whole image (N+1 full writes, each
# after the first also copied on write into the snapshot layer cut before).
#
# 5 nodes, a 3-replica volume v of SIZE_MIB (default 32) on n1..n3 attached
# on n1: a pattern over the whole volume, s1, then 1 MiB rewritten and a
# snapshot, three times (s2 s3 s4), then 1 MiB more.
#  1. replace-replica of n2's copy onto n4 (the coordinator reads the
#     snapshots from its own copy): n4's tesserad writes (/proc/PID/io
#     write_bytes) less than 2 x SIZE while it is made up; every snapshot and
#     the head equal on the three copies.
#  2. replace-replica of n1's copy (the coordinator's own) onto n5: the
#     snapshots are read from a remote copy (SUMS on VOL@SNAP sessions); same
#     checks.
# Prints "replace N: ms=... written_mib=..." (a benchmark: BENCH=1 checks
# no bound on the bytes).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy qemu-io

MIB=${SIZE_MIB:-32}
SIZE=$(( MIB * 1024 * 1024 ))
cl_start 3
ctsr volume create v --size "${MIB}M" --replicas 3 >/dev/null || fail "volume create"
CL_PORT[4]=$(free_port)
CL_PORT[5]=$(free_port)
cl_start_node 4
cl_start_node 5
CL_N=5
cl_wait_nodes_alive 5
assert_eq "$(cl_copy_nodes v)" "n1,n2,n3" "v's copies"
ctsr volume attach v --node n1 >/dev/null || fail "attach v on n1"

qw() { qemu-io -f raw "${@:2}" "$(cl_nbd_uri "$1" v)" >/dev/null || fail "write to v through n$1: ${*:2}"; }
wbytes() { awk '/^write_bytes/ { print $2 }' "/proc/${CL_PID[$1]}/io"; }

cl_pattern "$CL_ROOT/p" "$SIZE" 7
nbdcopy "$CL_ROOT/p" "$(cl_nbd_uri 1 v)" || fail "pattern"
ctsr snapshot create v s1 >/dev/null || fail "snapshot s1"
for s in 2 3 4; do
	qw 1 -c "write -P 0x$s$s $(( (s * 5) % MIB ))M 1M"
	ctsr snapshot create v "s$s" >/dev/null || fail "snapshot s$s"
done
qw 1 -c "write -P 0x55 $(( 1 % MIB ))M 1M"

# replace NAME FROM TO: replace FROM's copy onto TO, wait, print the cost,
# check the images on the copies C...
replace() {
	local name=$1 from=$2 to=$3 a b w0 w1 s ref
	shift 3
	sync
	w0=$(wbytes "$to")
	a=$(date +%s%N)
	ctsr volume replace-replica v --node "n$from" --to "n$to" >/dev/null ||
		fail "replace-replica n$from -> n$to"
	cl_wait_synced v 600
	b=$(date +%s%N)
	w1=$(wbytes "$to")
	WRITTEN=$(( w1 - w0 ))
	echo "replace $name: ms=$(( (b - a) / 1000000 )) written_mib=$(( WRITTEN / 1048576 ))" \
	     "load=$(cut -d' ' -f1-3 /proc/loadavg)"
	for s in s1 s2 s3 s4; do
		ref=$(cl_assert_snap_identical v "$s" "$@")
		[ "$s" = s1 ] || [ "$ref" != "$prev" ] || fail "$s equals the snapshot before it"
		prev=$ref
	done
}

# ---- 1. a copy replaced, the coordinator reads from its own copy
replace "local-source" 2 4 1 3 4
[ -n "${BENCH:-}" ] || (( WRITTEN < 2 * SIZE )) ||
	fail "the new copy's node wrote $WRITTEN bytes for a ${MIB} MiB volume with 4 snapshots" \
	     "that differ by 1 MiB each (want < $(( 2 * SIZE )))"
h=$(nbdcopy "$(cl_nbd_uri 1 v)" - | sha256sum | cut -d' ' -f1)

# ---- 2. the coordinator's own copy replaced: snapshots read from remote copies
replace "remote-source" 1 5 3 4 5
[ -n "${BENCH:-}" ] || (( WRITTEN < 2 * SIZE )) ||
	fail "(remote source) the new copy's node wrote $WRITTEN bytes (want < $(( 2 * SIZE )))"
qw 1 -c "read -P 0x55 1M 1M" -c "read -P 0x44 $(( 20 % MIB ))M 1M"
assert_eq "$(nbdcopy "$(cl_nbd_uri 1 v)" - | sha256sum | cut -d' ' -f1)" "$h" "the head after part 2"
cl_scrub_clean v "after the replaces"
ctsr volume detach v >/dev/null || fail "detach"
cl_stop_all
log "ok"
