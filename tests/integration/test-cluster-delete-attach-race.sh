#!/usr/bin/env bash
# An attach and a volume delete of the same volume racing (s20-revN's "an
# attach that has checked the volume but not yet written attach/<name>").
# Exactly one wins, the other answers why, and no copy is deleted under an
# attached volume.  3 nodes; every tesserad has both hold hooks (a hook waits
# only while its file exists).
#  A. The attach (through X, a node holding no copy of v) held between its
#     checks and its record writes (TSR_TEST_ATTACH_RECORD_HOLD_FILE); the
#     delete through a copy's node runs meanwhile and wins; released, the
#     attach must say the volume was deleted meanwhile and leave nothing
#     recorded (v is created again and attached elsewhere).
#  B. The delete (through D, a node holding no copy of v) held between its
#     re-check of attach/v and its record's delete
#     (TSR_TEST_DELETE_RECORD_HOLD_FILE); v is attached through a copy's node
#     meanwhile and written through NBD; released, the delete must say v was
#     attached meanwhile, and v reads back as written.
#  C. Two deletes of v (through D and through a copy's node) both held as in
#     B and released together: one deletes v, the other must say v was
#     deleted meanwhile by another delete (review s21-revP; before: "cannot
#     delete volume 'v': No such file or directory").
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy

make_tmpdir HOLDS
export TSR_TEST_ATTACH_RECORD_HOLD_FILE=$HOLDS/attach.hold
export TSR_TEST_DELETE_RECORD_HOLD_FILE=$HOLDS/delete.hold
cl_start 3
unset TSR_TEST_ATTACH_RECORD_HOLD_FILE TSR_TEST_DELETE_RECORD_HOLD_FILE
on_exit "rm -f '$HOLDS/attach.hold' '$HOLDS/delete.hold'" # before the stops: no wait

# held_run HOLD WHAT I ARG...: touch HOLD, run the CLI through node I in the
# background, return once its call is held (HOLD.held, 10 s).
held_run() {
	local hold=$1 what=$2 i=$3 t
	shift 3
	touch "$hold"
	( ctsr_via "$i" "$@" >"$hold.out" 2>&1; echo $? >"$hold.rc" ) &
	HELD_PID=$!
	for (( t=0; t<100; t++ )); do
		[ -e "$hold.held" ] && return 0
		sleep 0.1
	done
	fail "$what was not held in 10 s: $(cat "$hold.out")"
}
# held_lost HOLD WHAT PATTERN: release the held call; it must fail (it lost
# the race) saying PATTERN.
held_lost() {
	local out
	rm -f "$1"
	wait "$HELD_PID"
	out=$(cat "$1.out")
	log "$2 answered (status $(cat "$1.rc")): $out"
	[ "$(cat "$1.rc")" != 0 ] || fail "$2 succeeded: it should have lost the race"
	[[ $out == *"$3"* ]] || fail "$2 does not say why it lost ('$3'): $out"
}
# copy_of VOL: the first node listed with a copy of VOL ("n2").
copy_of() { cl_rec_nodes "$1" | cut -d' ' -f1; }

# ---- A: the attach held before its record writes; the delete wins
ctsr volume create v --size 4M --replicas 2 >/dev/null || fail "volume create v"
X=$(cl_free_node v 1) || fail "every node holds a copy of v (the test's premise)"
C=$(copy_of v)
held_run "$HOLDS/attach.hold" "the attach of v on $X" "${X#n}" volume attach v --node "$X"
cl_timed "volume delete v through $C (the attach held)" 30 "${C#n}" volume delete v
[ "$CL_RC" = 0 ] || fail "volume delete v while the attach was held: $CL_OUT"
held_lost "$HOLDS/attach.hold" "the held attach of v on $X" \
	"volume 'v' was deleted while this attach was being recorded"
expect_fail 1 "volume 'v' not found" ctsr volume show v
for i in 1 2 3; do
	cl_copy_size "$i" v >/dev/null && fail "n$i's copy of v was not deleted"
done
# nothing of the lost attach is left recorded (an attach/v would refuse this)
ctsr volume create v --size 4M --replicas 2 >/dev/null || fail "volume create v again"
A=$(copy_of v)
ctsr volume attach v --node "$A" >/dev/null || fail "attach of the new v on $A"
ctsr volume detach v >/dev/null || fail "detach of the new v"
log "A: the delete won, the attach answered why; the name is free of it"

# ---- B: the delete held before its record's delete; the attach wins
D=$(cl_free_node v 1) || fail "every node holds a copy of the new v (the test's premise)"
cl_pattern "$CL_ROOT/img" $(( 4 << 20 )) 21
held_run "$HOLDS/delete.hold" "the delete of v through $D" "${D#n}" volume delete v
ctsr_via "${A#n}" volume attach v --node "$A" >/dev/null || fail "attach v on $A (delete held)"
nbdcopy "$CL_ROOT/img" "$(cl_nbd_uri "${A#n}" v)" || fail "nbdcopy into v on $A"
held_lost "$HOLDS/delete.hold" "the held delete of v through $D" \
	"volume 'v' was attached on $A while it was being deleted"
cl_assert_image "${A#n}" v "$CL_ROOT/img" "B: after the lost delete"
for n in $(cl_rec_nodes v); do
	cl_copy_size "${n#n}" v >/dev/null || fail "$n's copy of v was deleted under the attach"
done
ctsr volume detach v >/dev/null || fail "volume detach v"
log "B: the attach won, the delete answered why; v reads back as written"

# ---- C: two deletes of v, through D and through A, both held before their
# record's delete (the hooks share the file), released together: one deletes
# v, the other must say that it was deleted meanwhile by another delete
H=$HOLDS/delete.hold
touch "$H"
rm -f "$H.held"
PIDS=()
for n in "$D" "$A"; do
	( ctsr_via "${n#n}" volume delete v >"$H.$n.out" 2>&1; echo $? >"$H.$n.rc" ) &
	PIDS+=($!)
	for (( t=0; t<100; t++ )); do
		[ -e "$H.held" ] && break
		sleep 0.1
	done
	[ -e "$H.held" ] || fail "the delete of v through $n was not held in 10 s: $(cat "$H.$n.out")"
	rm -f "$H.held"
done
rm -f "$H"
wait "${PIDS[@]}"
won=0
for n in "$D" "$A"; do
	out=$(cat "$H.$n.out")
	log "C: the delete of v through $n answered (status $(cat "$H.$n.rc")): $out"
	if [ "$(cat "$H.$n.rc")" = 0 ]; then
		won=$(( won + 1 ))
	elif [[ $out != *"volume 'v' was deleted meanwhile by another volume delete"* ]]; then
		fail "the delete of v through $n that lost does not say why: $out"
	fi
done
(( won == 1 )) || fail "$won of the two deletes of v succeeded, not 1"
expect_fail 1 "volume 'v' not found" ctsr volume show v
log "C: one delete won, the other answered that v was deleted meanwhile"
cl_stop_all
