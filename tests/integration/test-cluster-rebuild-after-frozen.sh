#!/usr/bin/env bash
# The tick's automatic replace (--rebuild-after) does not block the control
# loop (contract s17-autorepl): its calls to other nodes (the new copy's
# snapshot list, its create, the old copy's uuid) are asynchronous, as an
# admin replace-replica's since session 16, one attempt per copy slot at a
# time (attach.c tick_one's `replacing` mark; the result logged by
# auto_replace_done).  Before, the tick called the blocking replace: a target
# alive by its lease but hung stopped the node's whole loop for the create's
# bound (30 s; here 8 s by the tests-only TSR_TEST_COPY_TIMEOUT_MS).
#   3 nodes, --rebuild-after 1; v (2 replicas, min 1) attached on n1, which
#   holds a copy, written; the other copy's node O killed (SIGKILL); once n1
#   sees O dead, the only free node X frozen (SIGSTOP; alive by its lease for
#   2 s more), so the automatic replace's create on X hangs.  While it hangs:
#   n1 answers `volume list` and `node list` under `timeout 3`; a snapshot
#   create of v through n1 answers 0 and n1 notes it for the waiting replace
#   (session 18, review 17a F4: it was refused -EBUSY "replace-replica of v
#   (its copy on O) is running here" for the whole attempt, session 16's
#   rule for a detached volume); n1's log has exactly one attempt (no second
#   one while the first waits).  X thawed: the replace completes (at once, or
#   a later attempt), vol/v lists n1 and X, both in sync, v reads back as
#   written through n1, both copies hold s1.  (The cut records s1 as missed
#   by O's copy in vol/v; the waiting attempt's record write meets that
#   change, the only one, and writes again, replace_missed_only_moved, since
#   session 19: checked here, n1 logs it and no attempt fails "vol/v changed
#   while this replace waited"; before, that one failed and a later attempt
#   read a list that had s1.  test-cluster-replace-snap-noted shows the noted
#   snapshot in the new copy's record.)
# (b) The old copy's delete after the record write is off the loop too (an
#   admin replace's and the tick's): O restarted; `replace-replica v --node X
#   --to O` through n1 held after its record write (test hook
#   TSR_TEST_REPLACE_DELETE_HOLD_FILE), X frozen meanwhile, the hold
#   released: while the delete of X's copy waits for X (the peer timeout,
#   8000 ms here), n1 answers `volume list` under `timeout 3`; X thawed: the
#   replace answers 0, vol/v lists n1 and O, X's copy is deleted (the delete
#   queued there ran), O gets in sync, v reads back as written.
# On da9680e (the tick's replace blocking): (a) `volume list` status 124; on
# 786f3d7 (only (a) done): (b) `volume list` status 124.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy
# the new copy's create bound (30 s) shortened for this run (tests only)
export TSR_TEST_COPY_TIMEOUT_MS=8000
HOLD=$(mktemp -u /tmp/tessera-autorepl-hold.XXXXXX)
on_exit "rm -f '$HOLD'"
export TSR_TEST_REPLACE_DELETE_HOLD_FILE=$HOLD

# --peer-timeout 8000: (b)'s delete of the old copy waits that long for X
cl_start 3 --rebuild-after 1 --peer-timeout 8000
SIZE=$((8 << 20))
IMG=$CL_ROOT/img
cl_pattern "$IMG" "$SIZE" 71
ctsr volume create v --size 8M --replicas 2 --min-replicas 1 >/dev/null || fail "volume create v"
cl_move_onto_n1 v
cl_attach_fill v "$IMG"
O=$(cl_rec_nodes v | tr ' ' '\n' | grep -v '^n1$')
cl_autorepl_freeze v "$O"
wait_log 1 "replace of v on $O: creating the new copy on $X \(at most 8000 ms\)" 5
sleep 0.5
cl_timed "n1's volume list while the automatic replace waits for $X" 3 1 volume list
lrc=$CL_RC lout=$CL_OUT
cl_timed "n1's node list while the automatic replace waits for $X" 3 1 node list
nrc=$CL_RC nout=$CL_OUT
cl_timed "snapshot create v s1 through n1 while the automatic replace waits" 3 1 \
	snapshot create v s1
src=$CL_RC sout=$CL_OUT
starts=$(grep -c "volume v copy $O dead for 1 s: rebuilding elsewhere" "$LOG")
ended=$(grep -c "automatic replace of v on $O: " "$LOG")
kill -CONT "$XPID"
[ "$lrc" = 0 ] || fail "n1's volume list while its automatic replace waited for frozen $X: \
status $lrc (124: no answer in 3 s): $lout"
[ "$nrc" = 0 ] || fail "n1's node list while its automatic replace waited for frozen $X: \
status $nrc (124: no answer in 3 s): $nout"
[ "$src" = 0 ] || fail "snapshot create v s1 through its coordinator n1 while the automatic \
replace waited: status $src (124: no answer in 3 s): $sout"
grepq "replace of v on $O: snapshot s1, created while it waits" <"$LOG" ||
	fail "n1 did not note s1 for the waiting replace"
[ "$starts" = 1 ] && [ "$ended" = 0 ] || fail "while the first attempt waited for $X: \
$starts attempts started, $ended ended (want 1 and 0)"
log "while the create waited: list, node list answered, snapshot taken, 1 attempt"

# thawed: this attempt (or a later one) records the copy on X
cl_autorepl_landed v "$O" "$IMG" ""
log "the automatic replace: $(grep -c "rebuilding elsewhere" "$LOG") attempt(s), \
$(grep -c "automatic replace of v on $O: .*(retrying later)" "$LOG") failed"
# the attempt that waited records its copy: s1's record for O's copy, the
# only change of vol/v meanwhile, does not refuse it (review revB R2)
! grepq "automatic replace of v on $O: vol/v changed while this replace waited" <"$LOG" ||
	fail "the automatic replace that waited while s1 was cut was refused by vol/v's \
compare-and-set (s1 recorded as missed by $O's copy is the only change)"
grepq "replace of v on $O: vol/v changed while it waited only in the snapshots" <"$LOG" ||
	fail "n1 did not write the automatic replace's record again over s1's record for $O's copy"
for n in n1 "$X"; do
	[ "$(cl_snaps_of "${n#n}" v)" = s1 ] ||
		fail "$n's copy of v holds snapshots '$(cl_snaps_of "${n#n}" v)', want 's1'"
done

# (b) the old copy's delete after the record write, its node frozen
cl_start_node "${O#n}"
cl_wait_nodes_alive 3
touch "$HOLD"
log "(b) replace-replica v --node $X --to $O through n1, held before the old copy's delete"
( OUT=$(timeout 30 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
	volume replace-replica v --node "$X" --to "$O" 2>&1) && RC=0 || RC=$?
  echo "$RC" >"$CL_ROOT/b.rc"; echo "$OUT" >"$CL_ROOT/b.out" ) &
RP=$!
wait_log 1 "replace of v: test hold .* between the record and the old copy's delete" 20
freeze_pids "$XPID" || fail "(b) $X did not stop"
rm -f "$HOLD"
sleep 0.5
cl_timed "(b) n1's volume list while the old copy's delete waits for $X" 3 1 volume list
lrc=$CL_RC lout=$CL_OUT
kill -CONT "$XPID"
wait "$RP"
RC=$(cat "$CL_ROOT/b.rc") OUT=$(cat "$CL_ROOT/b.out")
log "(b) replace-replica v --node $X --to $O: status $RC"
[ "$lrc" = 0 ] || fail "(b) n1's volume list while the old copy's delete waited for frozen \
$X: status $lrc (124: no answer in 3 s): $lout"
[ "$RC" = 0 ] || fail "(b) replace-replica v --node $X --to $O: status $RC: $OUT"
[ "$(cl_copy_nodes v)" = "n1,$O" ] || fail "(b) vol/v lists '$(cl_copy_nodes v)', want 'n1,$O'"
cl_wait_no_copy "${X#n}" v "(b) $X still holds its replaced copy of v 10 s after it was \
thawed (the delete did not run)"
cl_wait_synced v 60
cl_assert_image 1 v "$IMG" "(b) after the replace onto $O"
cl_stop_all
log PASS
