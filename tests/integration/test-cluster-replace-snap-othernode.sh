#!/usr/bin/env bash
# A snapshot of a detached volume taken through ANOTHER node while a replace of
# that volume waits must not go missing from the replace's new copy (session
# 17; the same-node case is refused -EBUSY: test-cluster-replace-snap-busy).
# The replace gives its new copy the snapshot list it read before its waits;
# a detached snapshot cuts the copies vol/V listed at its start.  Now every
# detached snapshot create/delete bumps VolumeRecord.snap_gen by
# compare-and-set once its copies answered, giving the op as missed to a copy
# the record lists that it did not cut; the replace checks snap_gen against
# its start and writes its record at the revision it read.
#   4 nodes, v (2 replicas) written, s1, detached, copies O P off n1.
#   (a) X (free) frozen, replace O --to X through n1 waits for X's create;
#       `snapshot create v s2` through P answers 0; X thawed: the replace is
#       refused naming the snapshot ("nothing recorded"), vol/v unchanged, and
#       run again it answers 0 (or, accepted, the new copy must hold s2).
#   (b) F (free) frozen, replace P --to F through n1 waits; `snapshot create v
#       s3` through X is held after its cuts, before its record step
#       (TSR_TEST_SNAP_GEN_HOLD_FILE on X); F thawed: the replace answers 0
#       (it recorded F first); released, the snapshot answers 0 and gives s3
#       to F's copy as missed.
#   (c) replace O --to T through n1 held after its list answered, before it
#       reads the record it writes (TSR_TEST_REPLACE_RECORD_HOLD_FILE on n1);
#       `snapshot create v s4` through P answers 0 meanwhile; released: the
#       replace is refused by replace_run's snap_gen check ("while this replace
#       read its snapshot list", "nothing recorded, nothing made"), vol/v
#       unchanged; run again it answers 0.
#   After each: attached on n1, synced, detached: every copy vol/v lists holds
#   every snapshot, and s2 / s3 / s4 read back on each as the image written.
# On da9680e: (a) "n4's copy of v holds snapshots 's1', want 's1 s2'";
# CASES=b alone (the hold hook absent there, unheld): "n4's copy of v holds
# snapshots 's1', want 's1 s3'".  (c) with replace_run's check disabled
# (`if (0 && ...)`): "FAIL: (c) the replace whose list came before snapshot s4
# answered 0 (vol/v lists 'n4 n2')".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/snapops.sh"

require_tessera
require_cmd nbdcopy
CASES=${CASES:-abc}

make_tmpdir RHOLD_DIR
RHOLD=$RHOLD_DIR/hold
export TSR_TEST_REPLACE_RECORD_HOLD_FILE=$RHOLD
hold_cl_start TSR_TEST_SNAP_GEN_HOLD_FILE 4
on_exit "rm -f '$RHOLD'"
IMG=$CL_ROOT/img
cl_pattern "$IMG" $((8 << 20)) 53
want=$(sha256sum <"$IMG" | cut -d' ' -f1)
ctsr volume create v --size 8M --replicas 2 --min-replicas 1 >/dev/null || fail "volume create v"
nodes() { cl_rec_nodes v; }
cl_move_off_n1 v
cl_attach_fill v "$IMG"
ctsr snapshot create v s1 >/dev/null || fail "snapshot create v s1"
ctsr volume detach v >/dev/null || fail "volume detach v"
for (( i=2; i<=4; i++ )); do on_exit "kill -CONT ${CL_PID[$i]} 2>/dev/null"; done

# replace_held OLD NEW: NEW frozen, `replace-replica v --node OLD --to NEW`
# through n1 in the background (RP; status in r.rc) until n1 waits for NEW.
replace_held() {
	RPID=${CL_PID[${2#n}]}
	freeze_pids "$RPID" || fail "$2 did not stop"
	( timeout 60 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
		volume replace-replica v --node "$1" --to "$2" >"$CL_ROOT/r.out" 2>&1
	  echo $? >"$CL_ROOT/r.rc" ) &
	RP=$!
	wait_log 1 "replace of v on $1: creating the new copy on $2" 10
}

# check_all SNAPS...: v attached on n1, synced, detached; every listed copy
# holds exactly SNAPS; the later ones read back as the image on each copy.
check_all() {
	local n got s
	ctsr volume attach v --node n1 >/dev/null || fail "volume attach v"
	cl_wait_synced v
	ctsr volume detach v >/dev/null || fail "volume detach v"
	for n in $(nodes); do
		got=$(cl_snaps_of "${n#n}" v)
		log "$n's copy of v holds snapshots '$got'"
		[ "$got" = "$*" ] || fail "$n's copy of v holds snapshots '$got', want '$*'"
		for s in "${@:2}"; do
			[ "$(cl_image_sha "${n#n}" "v@$s")" = "$want" ] ||
				fail "v@$s read on $n differs from the image written"
		done
	done
}

read -r O P <<<"$(nodes)"
snaps="s1"
if [[ $CASES == *a* ]]; then
	X=$(cl_free_node v)
	log "(a) copies $O $P; replace $O --to $X through n1, $X frozen; snapshot s2 through $P"
	replace_held "$O" "$X"
	out=$(ctsr_within 20 "${P#n}" snapshot create v s2 2>&1) ||
		fail "(a) snapshot create v s2 through $P during the replace: $out"
	kill -CONT "$RPID"
	wait "$RP"
	rc=$(cat "$CL_ROOT/r.rc")
	log "(a) replace: status $rc: $(cat "$CL_ROOT/r.out")"
	if [ "$rc" != 0 ]; then
		[ "$rc" != 124 ] || fail "(a) the replace got no answer in 60 s"
		grep -q "snapshot of v was created or deleted through another node" "$CL_ROOT/r.out" &&
			grep -q "nothing recorded" "$CL_ROOT/r.out" ||
			fail "(a) the replace's refusal does not name the snapshot: $(cat "$CL_ROOT/r.out")"
		[ "$(nodes)" = "$O $P" ] || fail "(a) refused, but vol/v lists '$(nodes)'"
		out=$(ctsr volume replace-replica v --node "$O" --to "$X" 2>&1) ||
			fail "(a) the replace run again: $out"
	fi
	[ "$(nodes)" = "$X $P" ] || fail "(a) vol/v lists '$(nodes)', want '$X $P'"
	snaps="s1 s2"
	check_all s1 s2
	O=$X
fi
if [[ $CASES == *b* ]]; then
	F=$(cl_free_node v)
	log "(b) copies $O $P; replace $P --to $F through n1, $F frozen; snapshot s3 through $O" \
		"held before its record step"
	replace_held "$P" "$F"
	rm -f "$HOLD.held"
	touch "$HOLD"
	ctsr_within 40 "${O#n}" snapshot create v s3 >"$CL_ROOT/s.out" 2>&1 &
	SP=$!
	track_pid "$SP"
	for (( i=0; i<150; i++ )); do
		[ -e "$HOLD.held" ] && break
		kill -0 "$SP" 2>/dev/null || break
		sleep 0.1
	done
	[ -e "$HOLD.held" ] || log "(b) snapshot s3 not held (a build without the hook?)"
	kill -CONT "$RPID"
	wait "$RP"
	rc=$(cat "$CL_ROOT/r.rc")
	log "(b) replace: status $rc: $(cat "$CL_ROOT/r.out")"
	rm -f "$HOLD"
	reap "$SP" || fail "(b) snapshot create v s3 through $O: $(cat "$CL_ROOT/s.out")"
	[ "$rc" = 0 ] || fail "(b) the replace recorded before the snapshot's step: status $rc"
	[ "$(nodes)" = "$O $F" ] || fail "(b) vol/v lists '$(nodes)', want '$O $F'"
	check_all $snaps s3
	grep -q "snapshot create v@s3: given as missed to the copies on $F" \
		"$(cl_dir "${O#n}")/tesserad.log" ||
		fail "(b) $O's log does not say s3 was given to $F's copy as missed"
	snaps="$snaps s3"
	P=$F
fi
if [[ $CASES == *c* ]]; then
	T=$(cl_free_node v)
	log "(c) copies $O $P; replace $O --to $T through n1 held after its list, before its" \
		"record read; snapshot s4 through $P"
	held_start "$RHOLD" "$CL_ROOT/c.out" "(c) replace-replica v --node $O --to $T" \
		ctsr_within 60 1 volume replace-replica v --node "$O" --to "$T"
	out=$(ctsr_within 20 "${P#n}" snapshot create v s4 2>&1) ||
		fail "(c) snapshot create v s4 through $P while the replace is held: $out"
	rm -f "$RHOLD"
	rc=0
	reap "$HELD_PID" || rc=$?
	log "(c) replace: status $rc: $(cat "$CL_ROOT/c.out")"
	[ "$rc" != 0 ] || fail "(c) the replace whose list came before snapshot s4 answered 0" \
		"(vol/v lists '$(nodes)')"
	grep -q "snapshot of v was created or deleted through another node while this replace read" \
		"$CL_ROOT/c.out" && grep -q "nothing recorded, nothing made" "$CL_ROOT/c.out" ||
		fail "(c) the replace's refusal does not name the snapshot: $(cat "$CL_ROOT/c.out")"
	[ "$(nodes)" = "$O $P" ] || fail "(c) refused, but vol/v lists '$(nodes)'"
	out=$(ctsr volume replace-replica v --node "$O" --to "$T" 2>&1) ||
		fail "(c) the replace run again: $out"
	[ "$(nodes)" = "$T $P" ] || fail "(c) vol/v lists '$(nodes)', want '$T $P'"
	check_all $snaps s4
fi
cl_stop_all
log PASS
