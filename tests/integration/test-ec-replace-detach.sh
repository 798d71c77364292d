#!/usr/bin/env bash
# An EC chunk copy replaced while the volume is attached, then the volume
# detached (and attached again on the same node) before the new copy's
# make-up of snapshots ends: the new copy must still get every snapshot.
# Found by review (session 12): the attach after the detach unlinks the
# coordinator's file of the new copy's missed CREATEs (the copy is new:
# CopyRecord.rebuild), and the record's list was empty for EC volumes, so the
# rebuilt copy went IN_SYNC with no snapshot and, one more chunk node lost,
# v@s1 read EIO ("rebuilt copy lists: ''").  Fixed by 23cbaa2 (an EC replace
# records the snapshot list too).  The detach may come after the make-up has
# ended (then the check holds anyway): the log says which.
#   2+1 volume on 3 of 4 nodes, A, s1, B, s2, D; replace-replica of one copy
#   onto the spare, detach at once, attach again; in sync: the spare's copy
#   lists s1 s2; a third chunk node killed: v@s1 reads A.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy nbdinfo
MiB=$(( 1024 * 1024 ))
SIZE=$(( 64 * MiB ))
copies_of() { ctsr --json volume show "$1" | json_get '" ".join(c["node"] for c in j["copies"])'; }
cl_start 4
ctsr volume create v --size 64M --ec 2+1 --stripe-unit 16K --failure-domain zone >/dev/null || fail create
read -r -a C <<<"$(copies_of v)"
# the coordinator is n1 when it holds a copy: the node killed at the end must
# not be n1, the metadata node
for (( i=1; i<3; i++ )); do
	[ "${C[$i]}" = n1 ] && { C[$i]=${C[0]}; C[0]=n1; }
done
c0=${C[0]#n} c1=${C[1]#n} c2=${C[2]#n}
spare=
for (( i=1; i<=4; i++ )); do [[ " ${C[*]} " == *" n$i "* ]] || spare=$i; done
ctsr volume attach v --node "n$c0" >/dev/null || fail attach
cl_pattern "$CL_ROOT/A" "$SIZE" 1
cl_pattern "$CL_ROOT/B" "$SIZE" 2
cl_pattern "$CL_ROOT/D" "$SIZE" 4
nbdcopy "$CL_ROOT/A" "$(cl_nbd_uri "$c0" v)" || fail "write A"
ctsr snapshot create v s1 >/dev/null || fail s1
nbdcopy "$CL_ROOT/B" "$(cl_nbd_uri "$c0" v)" || fail "write B"
ctsr snapshot create v s2 >/dev/null || fail s2
nbdcopy "$CL_ROOT/D" "$(cl_nbd_uri "$c0" v)" || fail "write D"
ctsr volume replace-replica v --node "n$c1" --to "n$spare" >/dev/null || fail replace
ctsr volume detach v >/dev/null || fail "detach mid make-up"
if [ -f "$(cl_dir "$c0")/coord/v.n$spare.snaps" ]; then
	log "detached before the make-up ended: $(tr '\n' ' ' <"$(cl_dir "$c0")/coord/v.n$spare.snaps")"
else
	log "the make-up had ended before the detach"
fi

cl_wait_nodes_alive 4
cl_attach_retry v "n$c0"
cl_wait_synced v 120
got=$(cl_snaps_of "$spare" v)
log "rebuilt copy n$spare lists: '$got'"
cl_kill "$c2"
cl_wait_state v "n$c2" out-of-sync 30
cl_assert_image "$c0" v@s1 "$CL_ROOT/A" "s1 with n$c2 down"
assert_eq "$got" "s1 s2" "the rebuilt copy's snapshots (n$spare)"
cl_stop_all
log "PASS"
