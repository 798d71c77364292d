#!/usr/bin/env bash
# A replace-replica whose new copy's snapshot list would come from a frozen
# (SIGSTOP) node answers within the peer timeout, and the handling node's
# control loop serves other calls meanwhile (contract s15-replace2, item 1).
# The list (every snapshot of the volume, the new copy's missed CREATEs) was
# read with cluster_volume_snapshots: a blocking forward bounded by 120 s to
# the record's first in-sync copy's node, on the main loop.  Now every node
# holding an in-sync copy is asked in turn (the old copy's node last), each
# bounded by the peer timeout (2000 ms here), asynchronously for an admin
# request (engine/cluster/volume.c replace_list_*).
#   5 nodes; v (3 replicas, min 1) written, snapshots s1 s2, detached, its
#   copies moved off n1 (the meta node, which handles every replace here and
#   is never frozen).  Record order F, M, L; the free node X.
#   (a) F frozen (not the copy replaced): replace L --to X through n1 answers
#       0 under `timeout 25` (before: 124), n1 answers `volume list` under
#       `timeout 3` while it waits (before: 124), n1 logs that F did not give
#       the list.  F thawed.
#   (b) the record's first copy frozen and replaced (the old copy's node is
#       asked last): answers 0 under `timeout 25` (before: 124).
#   Both: vol/v lists the new copy; attached on n1 (no copy there: the new
#   copy's snapshots come from the list in its record), v reads back as
#   written, every listed node's copy holds s1 s2, scrub clean.
#   (c) every in-sync copy's node but one dead and that one frozen: replace
#       --to n1 refused under `timeout 25`, naming the frozen node, nothing
#       made (vol/v unchanged, no copy on n1).
#   (d) F frozen, a replace through a node without a copy waiting for F's
#       list, that node stopped (SIGTERM): it exits 0 (the wait cancelled,
#       volume.c replace_list_stop), nothing made.
# Control: TSR_TEST_REPLACE_LIST_UNBOUNDED=1 (the old call, volume.c) in n1's
# environment makes (a) fail with "status 124".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy

cl_start 5
SIZE=$((8 << 20))
IMG=$CL_ROOT/img
cl_pattern "$IMG" "$SIZE" 73
ctsr volume create v --size 8M --replicas 3 --min-replicas 1 >/dev/null || fail "volume create v"
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v"
nbdcopy "$IMG" "$(cl_nbd_uri 1 v)" || fail "nbdcopy into v"
ctsr volume detach v >/dev/null || fail "volume detach v"
ctsr snapshot create v s1 >/dev/null || fail "snapshot create v s1"
ctsr snapshot create v s2 >/dev/null || fail "snapshot create v s2"

# the copies in record order (volume show lists them so)
rec_nodes() { cl_rec_nodes v; }
free_node() { cl_free_node v; }
cl_move_off_n1 v synced

# replace-replica v --node OLD --to NEW through n1, bounded by `timeout 25`;
# sets RC and OUT
replace_timed() {
	local t0=$SECONDS
	OUT=$(timeout 25 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
		volume replace-replica v --node "$1" --to "$2" 2>&1) && RC=0 || RC=$?
	log "replace-replica v --node $1 --to $2: status $RC in $(( SECONDS - t0 )) s: $OUT"
}
# after a replace onto $1: v synced by n1 (no copy there: the new copy's
# snapshots come from the list in its record) and checked
check_after() {
	local new=$1 n
	case " $(rec_nodes) " in *" $new "*) ;; *) fail "vol/v does not list $new: $(rec_nodes)" ;; esac
	ctsr volume attach v --node n1 >/dev/null || fail "volume attach v (after $new)"
	cl_wait_synced v
	cl_assert_image 1 v "$IMG" "after the replace onto $new"
	cl_scrub_clean v "after the replace onto $new"
	ctsr volume detach v >/dev/null || fail "volume detach v (after $new)"
	for n in $(rec_nodes); do
		[ "$(cl_snaps_of "${n#n}" v)" = "s1 s2" ] ||
			fail "$n's copy of v holds snapshots '$(cl_snaps_of "${n#n}" v)', want 's1 s2'"
	done
}

# (a) the first in-sync copy's node frozen, another copy replaced
read -r F M L <<<"$(rec_nodes)"
X=$(free_node) || fail "no free node"
log "(a) copies F=$F M=$M L=$L, free $X: $F frozen, replace $L --to $X"
FPID=${CL_PID[${F#n}]}
on_exit "kill -CONT $FPID 2>/dev/null"
freeze_pids "$FPID" || fail "$F did not stop"
( replace_timed "$L" "$X"; echo "$RC" >"$CL_ROOT/a.rc"; echo "$OUT" >"$CL_ROOT/a.out" ) &
RP=$!
sleep 0.5
cl_timed "(a) n1's volume list while the replace waits for $F" 3 1 volume list
lrc=$CL_RC lout=$CL_OUT
wait "$RP"
RC=$(cat "$CL_ROOT/a.rc")
[ "$RC" = 0 ] || fail "(a) replace-replica v --node $L --to $X with $F frozen: status $RC \
(124: no answer in 25 s): $(cat "$CL_ROOT/a.out")"
[ "$lrc" = 0 ] || fail "(a) n1's volume list while its replace waited for frozen $F: status \
$lrc (124: no answer in 3 s): $lout"
grep -q "volume v: node $F did not give the snapshot list for the new copy" \
	"$(cl_dir 1)/tesserad.log" || fail "(a) n1's log does not say $F did not give the list"
kill -CONT "$FPID"
cl_wait_nodes_alive 5 30
check_after "$X"

# (b) the first in-sync copy's node frozen and replaced: asked last
read -r F M L <<<"$(rec_nodes)"
X=$(free_node) || fail "no free node"
log "(b) copies F=$F M=$M L=$L, free $X: $F frozen and replaced --to $X"
FPID=${CL_PID[${F#n}]}
on_exit "kill -CONT $FPID 2>/dev/null"
freeze_pids "$FPID" || fail "$F did not stop"
replace_timed "$F" "$X"
[ "$RC" = 0 ] || fail "(b) replace-replica v --node $F --to $X with $F frozen: status $RC \
(124: no answer in 25 s): $OUT"
kill -CONT "$FPID"
cl_wait_nodes_alive 5 30
check_after "$X"

# (c) the only in-sync copy's node alive is frozen: refused, naming it
read -r F M L <<<"$(rec_nodes)"
X=n1 # holds no copy of v (the free one may hold (b)'s leftover)
log "(c) copies F=$F M=$M L=$L: $M and $L stopped, $F frozen, replace $L --to $X"
cl_stop "${M#n}"
cl_stop "${L#n}"
cl_wait_nodes_alive 3 60
before=$(rec_nodes)
FPID=${CL_PID[${F#n}]}
freeze_pids "$FPID" || fail "$F did not stop"
replace_timed "$L" "$X"
kill -CONT "$FPID"
[ "$RC" != 0 ] && [ "$RC" != 124 ] || fail "(c) replace-replica v --node $L with only frozen \
$F in sync and alive: status $RC, want a refusal: $OUT"
printf '%s' "$OUT" | grepq "$F: no answer in 2000 ms" ||
	fail "(c) the refusal does not name $F: $OUT"
printf '%s' "$OUT" | grepq "nothing changed" || fail "(c) the refusal does not say nothing changed: $OUT"
[ "$(rec_nodes)" = "$before" ] || fail "(c) vol/v lists '$(rec_nodes)', want '$before'"
cl_copy_size "${X#n}" v >/dev/null && fail "(c) $X holds a copy of v after the refusal"
cl_start_node "${M#n}"
cl_start_node "${L#n}"
cl_wait_nodes_alive 5 60
check_after "$F"

# (d) the handling node stopped while its replace waits for a frozen node's
# list: it exits 0 at once (the wait cancelled), nothing made
read -r F M L <<<"$(rec_nodes)"
H=$(free_node) || fail "no free node"
log "(d) copies F=$F M=$M L=$L: $F frozen, replace $L --to n1 through $H, $H stopped meanwhile"
before=$(rec_nodes)
FPID=${CL_PID[${F#n}]}
freeze_pids "$FPID" || fail "$F did not stop"
( timeout 25 "$TESSERA" --cluster "$(cl_addr "${H#n}")" --token-file "$(cl_dir 1)/admin.token" \
	volume replace-replica v --node "$L" --to n1 >"$CL_ROOT/d.out" 2>&1
  echo $? >"$CL_ROOT/d.rc" ) &
RP=$!
wait_log "${H#n}" "replace of v on $L: asking $F for the new copy's snapshot list" 20
cl_stop "${H#n}" # fails the test unless it exits 0 on SIGTERM
wait "$RP"
kill -CONT "$FPID"
log "(d) the replace through $H: status $(cat "$CL_ROOT/d.rc"): $(cat "$CL_ROOT/d.out")"
[ "$(cat "$CL_ROOT/d.rc")" != 0 ] || fail "(d) the replace through stopped $H answered 0"
[ "$(rec_nodes)" = "$before" ] || fail "(d) vol/v lists '$(rec_nodes)', want '$before'"
cl_copy_size 1 v >/dev/null && fail "(d) n1 holds a copy of v after the cancelled replace"
cl_stop_all
