#!/usr/bin/env bash
# A chunk copy of an erasure-coded volume rebuilt on a new node
# (replace-replica) gets its chunks of every snapshot, not only of the head.
#
# 4 nodes (zones z1..z4); a 2+1 volume of 4 MiB, 16 KiB unit, on 3 of them,
# attached on its first copy node C0.
#  1. image A, snapshot s1; image B, snapshot s2; image D (the head).
#  2. C1 killed; snapshot s3 (of D) noted as missed by C1; its copy moved to
#     the spare node by replace-replica, rebuilt; in sync.  The new copy's
#     chunk volume lists s1 s2 s3 (its catalogue); no file of missed
#     operations is left (C1's removed with its slot).
#  3. C2 killed: every stripe now needs the rebuilt copy's chunk (2 of the 3
#     left, k = 2): v@s1 reads A, v@s2 reads B, v@s3 and v read D through C0.
#  4. C2 back: every node's snapshot list has s1 s2 s3; scrub clean.
#  5. C1 back (it holds no copy now), v attached there: v@s1, v@s2 and v read
#     back (every chunk from the copies), v@nosuch refused at the handshake.
#  6. a fifth node started; C2's copy replaced onto it while C1, which
#     holds no in-sync chunk copy to list the snapshots, coordinates: the
#     list cluster/volume.c gives (every snapshot) is made up there: its
#     catalogue lists s1 s2 s3; with C0 (or the spare, if C0 is the metadata
#     node n1) killed, v@s1, v@s2, v@s3 and v read back through C1 (each
#     stripe needs n5's new chunk).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy nbdinfo

MiB=$(( 1024 * 1024 ))
SIZE=$(( 4 * MiB ))

copies_of() { ctsr --json volume show "$1" | json_get '" ".join(c["node"] for c in j["copies"])'; }

cl_start 4
ctsr volume create v --size 4M --ec 2+1 --stripe-unit 16K --failure-domain zone >/dev/null ||
	fail "create"
read -r -a C <<<"$(copies_of v)"
c0=${C[0]#n} c1=${C[1]#n} c2=${C[2]#n}
spare=
for (( i=1; i<=4; i++ )); do [[ " ${C[*]} " == *" n$i "* ]] || spare=$i; done
ctsr volume attach v --node "n$c0" >/dev/null || fail "attach"
log "copies on n$c0 n$c1 n$c2, spare n$spare"

# ---- 1. two snapshots and a head
cl_pattern "$CL_ROOT/A" "$SIZE" 1
cl_pattern "$CL_ROOT/B" "$SIZE" 2
cl_pattern "$CL_ROOT/D" "$SIZE" 4
nbdcopy "$CL_ROOT/A" "$(cl_nbd_uri "$c0" v)" || fail "write A"
ctsr snapshot create v s1 >/dev/null || fail "snapshot create s1"
nbdcopy "$CL_ROOT/B" "$(cl_nbd_uri "$c0" v)" || fail "write B"
ctsr snapshot create v s2 >/dev/null || fail "snapshot create s2"
nbdcopy "$CL_ROOT/D" "$(cl_nbd_uri "$c0" v)" || fail "write D"

# ---- 2. C1's copy rebuilt on the spare node
cl_kill "$c1"
cl_wait_state v "n$c1" out-of-sync 30
# a snapshot C1 misses (noted in the coordinator's file for it)
ctsr snapshot create v s3 >/dev/null || fail "snapshot create s3 with n$c1 away"
[ -e "$(cl_dir "$c0")/coord/v.n$c1.snaps" ] || fail "n$c1's missed s3 not noted"
ctsr volume replace-replica v --node "n$c1" --to "n$spare" >/dev/null || fail "replace-replica"
cl_wait_synced v 120
read -r -a C2 <<<"$(copies_of v)"
assert_eq "${C2[1]}" "n$spare" "the replaced copy keeps its chunk position"
assert_eq "$(cl_snaps_of "$spare" v)" "s1 s2 s3" "the rebuilt copy's snapshots (n$spare)"
# the replaced node's file of missed operations goes with its slot, the new
# node's once its snapshots are made up
left=$(find "$(cl_dir "$c0")/coord" -name 'v.*.snaps')
[ -z "$left" ] || fail "files of missed snapshot operations left: $left"

# ---- 3. reads that need the rebuilt copy
cl_kill "$c2"
cl_wait_state v "n$c2" out-of-sync 30
cl_assert_image "$c0" v@s1 "$CL_ROOT/A" "s1 with n$c2 down (rebuilt n$spare's chunks)"
cl_assert_image "$c0" v@s2 "$CL_ROOT/B" "s2 with n$c2 down (rebuilt n$spare's chunks)"
cl_assert_image "$c0" v@s3 "$CL_ROOT/D" "s3 with n$c2 down (rebuilt n$spare's chunks)"
cl_assert_image "$c0" v "$CL_ROOT/D" "head with n$c2 down"

# ---- 4. all back
cl_start_node "$c2"
cl_wait_synced v 120
for i in "$c0" "$c2" "$spare"; do
	assert_eq "$(ctsr_via "$i" --json snapshot list v | json_get '" ".join(s["name"] for s in j["snapshots"])')" \
		"s1 s2 s3" "snapshot list through n$i"
done
cl_scrub_clean v

# ---- 5. a coordinator that holds no chunk copy (C1's node, replaced away):
# every VOL@SNAP is checked with the copies (none here) and decoded
cl_start_node "$c1"
cl_wait_nodes_alive 4
ctsr volume detach v >/dev/null || fail "detach"
cl_attach_retry v "n$c1"
cl_wait_synced v 60
cl_assert_image "$c1" v@s1 "$CL_ROOT/A" "s1 through n$c1 (no chunk copy there)"
cl_assert_image "$c1" v@s2 "$CL_ROOT/B" "s2 through n$c1 (no chunk copy there)"
cl_assert_image "$c1" v "$CL_ROOT/D" "head through n$c1"
if out=$(nbdinfo "$(cl_nbd_uri "$c1" v@nosuch)" 2>&1); then
	fail "nbdinfo opened v@nosuch through n$c1 (no chunk copy there)"
fi
echo "$out" | grepq "No such file or directory for export" ||
	fail "v@nosuch through n$c1 refused without 'unknown export': $out"
log "v@nosuch refused through n$c1 (no chunk copy there)"

# ---- 6. a replace on a coordinator that holds no in-sync chunk copy: the
# new copy gets the list the cluster gives it (every snapshot of the volume,
# tsr_layout_copy.missed; before, for ec: none, and a warning).  A fifth node
# takes it (n$c1 still holds its old copy's store volume, never deleted).
CL_N=5
CL_PORT[5]=$(free_port)
cl_start_node 5
cl_wait_nodes_alive 5
out=$(ctsr_via "$c1" volume replace-replica v --node "n$c2" --to n5 2>&1) ||
	fail "replace-replica of n$c2's copy onto n5 (coordinator n$c1): $out"
cl_wait_synced v 120
assert_eq "$(cl_snaps_of 5 v)" "s1 s2 s3" "the copy rebuilt on n5 (coordinator n$c1 holds no chunk copy)"
if grep -q "gets none of the volume's snapshots" "$(cl_dir "$c1")/tesserad.log"; then
	fail "n$c1 gave the new copy no snapshot"
fi
# with one other copy down every stripe needs n5's new chunks
victim=$c0
[ "$c0" != 1 ] || victim=$spare
cl_kill "$victim"
cl_wait_state v "n$victim" out-of-sync 30
cl_assert_image "$c1" v@s1 "$CL_ROOT/A" "s1 with n$victim down (n5's made-up chunks)"
cl_assert_image "$c1" v@s2 "$CL_ROOT/B" "s2 with n$victim down"
cl_assert_image "$c1" v@s3 "$CL_ROOT/D" "s3 with n$victim down"
cl_assert_image "$c1" v "$CL_ROOT/D" "head with n$victim down"
cl_stop_all
log "ok"
