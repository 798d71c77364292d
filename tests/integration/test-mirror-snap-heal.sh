#!/usr/bin/env bash
# Snapshots of a mirrored volume survive the replacement of a copy and a
# change of coordinator (DESIGN.md invariants 1-3 for snapshots: a snapshot
# is the same image on every copy that holds it, and a copy never holds a
# wrong image under a snapshot's name).
#
# 5 nodes, an 8 MiB 3-replica volume v on n1..n3, attached on n1: a pattern,
# snapshot s1, a write, snapshot s2, a write.  Every image below is read
# through a node's own NBD export VOL@SNAP, which reads that node's copy.
#  1. replace-replica of n1's copy (the coordinator's own: afterwards it holds
#     no in-sync copy) onto n4: once in sync, n4's copy lists s1 s2 and its
#     images of them are the others'.
#  2. n3 killed; while it is away a write, snapshot s3, s1 deleted, a write,
#     s1 cut again (other content: n3 still holds the old s1); the volume
#     detached from n1 and attached on n2 (the coordinator moves, n1's journal
#     of what n3 missed stays behind); a write; n3 restarted and resynced by
#     n2: its copy lists s2 s3 s1 and holds the new s1 and s3, as the others.
#  2b. attached on n5 (no copy), n4 killed, snapshot s4, n5 killed (the
#     coordinator dies with n4's journal), attached on n2 (converging), n4
#     restarted: its copy holds s2 s3 s1 s4 as the others.
#  3. with the volume detached, replace-replica of n3's copy onto n1 (no
#     coordinator to rebuild it: the next attach does): attached on n4, n1's
#     rebuilt copy holds s2 s3 s1 s4 as the others.
#  4. detached, n2's copy replaced onto n3 and back onto n2 (n4, the last
#     coordinator, holds the bitmap of n2's old copy, no bit set): attached on
#     n4, n2's new copy is rebuilt in full (scrub clean) and holds s2 s3 s1 s4.
#  Then scrub clean, the heads identical after the stop.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy qemu-io

cl_start 3
ctsr volume create v --size 8M --replicas 3 >/dev/null || fail "volume create"
CL_PORT[4]=$(free_port)
CL_PORT[5]=$(free_port)
cl_start_node 4
cl_start_node 5
CL_N=5
cl_wait_nodes_alive 5
assert_eq "$(cl_copy_nodes v)" "n1,n2,n3" "v's copies"
ctsr volume attach v --node n1 >/dev/null || fail "attach v on n1"

# qw I CMD...: qemu-io write commands on v through node I
qw() { qemu-io -f raw "${@:2}" "$(cl_nbd_uri "$1" v)" >/dev/null || fail "write to v through n$1: ${*:2}"; }
# snap_sha I SNAP: sha256 of v@SNAP on node I's copy ("none" if it cannot be read)
snap_sha() { cl_image_sha "$1" "v@$2" 2>/dev/null | grep -E '^[0-9a-f]{64}$' || echo none; }
# check_copy I WHAT SNAP...: node I's copy lists exactly SNAP... and each image
# equals REF[SNAP]
check_copy() {
	local n=$1 what=$2 s got
	shift 2
	assert_eq "$(cl_snaps_of "$n" v)" "$*" "$what: snapshots n$n's copy holds"
	for s in "$@"; do
		got=$(snap_sha "$n" "$s")
		[ "$got" = "${REF[$s]}" ] ||
			fail "$what: v@$s on n$n's copy: sha256 ${got:0:16}, the others' ${REF[$s]:0:16}"
	done
	log "$what: n$n's copy holds $* with the others' images"
}

declare -A REF=()
qw 1 -c 'write -P 0x11 0 8M'
ctsr snapshot create v s1 >/dev/null || fail "snapshot s1"
qw 1 -c 'write -P 0x22 1M 2M'
ctsr snapshot create v s2 >/dev/null || fail "snapshot s2"
qw 1 -c 'write -P 0x33 3M 1M'
REF[s1]=$(cl_assert_snap_identical v s1 1 2 3)
REF[s2]=$(cl_assert_snap_identical v s2 1 2 3)
[ "${REF[s1]}" != "${REF[s2]}" ] || fail "s1 and s2 are the same image"

# ---- 1. the coordinator's own copy replaced
ctsr volume replace-replica v --node n1 --to n4 >/dev/null || fail "replace-replica n1 -> n4"
assert_eq "$(cl_copy_nodes v)" "n2,n3,n4" "v's copies after the replace"
cl_wait_synced v 60
check_copy 4 "replaced copy (coordinator without a copy)" s1 s2
qw 1 -c 'read -P 0x33 3M 1M' -c 'read -P 0x22 1M 2M'

# ---- 2. a copy away under one coordinator, back under another
cl_kill 3
qw 1 -c 'write -P 0x44 5M 1M'
ctsr snapshot create v s3 >/dev/null || fail "snapshot s3 with n3 away"
ctsr snapshot delete v s1 >/dev/null || fail "snapshot delete s1 with n3 away"
qw 1 -c 'write -P 0x55 0 1M'
ctsr snapshot create v s1 >/dev/null || fail "snapshot s1 again with n3 away"
assert_eq "$(cl_recorded_missed v)" "c s3,d s1,c s1" "vol/v's record of what n3 missed"
REF[s3]=$(cl_assert_snap_identical v s3 2 4)
REF[s1]=$(cl_assert_snap_identical v s1 2 4)
ctsr volume detach v >/dev/null || fail "detach v from n1"
cl_attach_retry v n2
qw 2 -c 'write -P 0x66 6M 1M'
cl_start_node 3
cl_wait_synced v 60
check_copy 3 "copy back under a new coordinator" s2 s3 s1
check_copy 2 "n2" s2 s3 s1
check_copy 4 "n4" s2 s3 s1
assert_eq "$(cl_recorded_missed v)" "" "vol/v's record of missed operations once n3 is back"
cl_scrub_clean v "after n3's return"

# ---- 2b. a copy away when its coordinator dies
ctsr volume detach v >/dev/null || fail "detach v from n2"
ctsr volume attach v --node n5 >/dev/null || fail "attach v on n5"
cl_kill 4
qw 5 -c 'write -P 0x77 7M 1M'
ctsr snapshot create v s4 >/dev/null || fail "snapshot s4 with n4 away"
REF[s4]=$(cl_assert_snap_identical v s4 2 3)
cl_kill 5
cl_attach_retry v n2
cl_start_node 4
cl_wait_synced v 60
check_copy 4 "copy back after its coordinator died" s2 s3 s1 s4
check_copy 3 "n3" s2 s3 s1 s4
qw 2 -c 'read -P 0x77 7M 1M'

# ---- 3. replaced while detached: rebuilt by the next attach
ctsr volume detach v >/dev/null || fail "detach v from n2"
ctsr volume replace-replica v --node n3 --to n1 >/dev/null || fail "replace-replica n3 -> n1 (detached)"
assert_eq "$(cl_copy_nodes v)" "n1,n2,n4" "v's copies after the second replace"
cl_attach_retry v n4
cl_wait_synced v 60
check_copy 1 "copy replaced while detached" s2 s3 s1 s4
qw 4 -c 'read -P 0x66 6M 1M' -c 'read -P 0x55 0 1M' -c 'read -P 0x44 5M 1M'
cl_scrub_clean v "after the rebuild at attach"

# ---- 4. a node gets a new copy again while n4, the last coordinator, still
# holds the bitmap of its old one (in sync: no bit set)
ctsr volume detach v >/dev/null || fail "detach v from n4"
[ -e "$(cl_dir 4)/coord/v.n2.bitmap" ] || fail "n4 holds no bitmap of n2's copy: the case is not set up"
ctsr volume replace-replica v --node n2 --to n3 >/dev/null || fail "replace-replica n2 -> n3 (detached)"
ctsr volume replace-replica v --node n3 --to n2 >/dev/null || fail "replace-replica n3 -> n2 (detached)"
assert_eq "$(cl_copy_nodes v)" "n1,n2,n4" "v's copies after n2's copy went and came back"
cl_attach_retry v n4
cl_wait_synced v 60
check_copy 2 "a new copy on a node whose old bitmap the coordinator holds" s2 s3 s1 s4
cl_scrub_clean v "after n2's new copy was rebuilt"
ctsr volume detach v >/dev/null || fail "detach v from n4"
cl_stop_all
cl_assert_copies_identical v 1 2 4
for n in 1 2 4; do
	[ ! -e "$(cl_dir "$n")/coord/v.n1.snaps" ] && [ ! -e "$(cl_dir "$n")/coord/v.n3.snaps" ] ||
		fail "a journal of missed snapshots is left on n$n: $(ls "$(cl_dir "$n")/coord")"
done
log "snapshots of a mirrored volume survive copy replacement and a coordinator move"
