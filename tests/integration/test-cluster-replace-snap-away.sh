#!/usr/bin/env bash
# A snapshot cut through the coordinator while a replace of a copy that is
# away waits for another node does not waste the replace (review revB R2).
# The cut records the old copy's miss in vol/v (CopyRecord.missed_snaps of
# its slot), which made the replace's record write lose its compare-and-set:
# the new copy deleted, "vol/v changed while this replace waited".  The
# automatic replace (--rebuild-after) always replaces a copy that is away, so
# every snapshot during its wait cost an attempt.  Now the write is made again
# when that list is the only change and every create it adds is one the new
# copy is given (replace_missed_only_moved, volume.c); a garbage mark's
# unchanged write (a fence) raises VolumeRecord.replace_fence and is never
# written over.
#   3 nodes; v (2 replicas, one on n1, min 1) attached on n1, in sync; the
#   other copy's node P killed; `snapshot create v s0` through n1 marks P's
#   copy out of sync and records "c s0" for it; the free node X frozen;
#   replace-replica of P --to X through n1 waits for X's create; `snapshot
#   create v s1` through n1 answers 0 and vol/v records "c s0,c s1" for P; X
#   thawed: the replace answers 0, v in sync on n1 and X, both holding s0 s1.
# Before the fix: the replace answered status 1, "vol/v changed while this
# replace waited for the other nodes ... the new copy on n3 deleted".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
export TSR_TEST_COPY_TIMEOUT_MS=8000

cl_start 3
ctsr volume create v --size 8M --replicas 2 --min-replicas 1 >/dev/null || fail "volume create v"
cl_move_onto_n1 v
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v"
cl_wait_synced v
P=$(cl_rec_nodes v | tr ' ' '\n' | grep -v '^n1$')
X=$(cl_free_node v) || fail "no free node"
XPID=${CL_PID[${X#n}]}
on_exit "kill -CONT $XPID 2>/dev/null"
cl_kill "${P#n}"
cl_timed "snapshot create v s0 through n1 with $P away" 20 1 snapshot create v s0
[ "$CL_RC" = 0 ] || fail "snapshot create v s0: status $CL_RC: $CL_OUT"
cl_wait_state v "$P" out-of-sync 10
for (( i=0; i<50; i++ )); do
	[ "$(cl_recorded_missed v)" = "c s0" ] && break
	sleep 0.1
done
assert_eq "$(cl_recorded_missed v)" "c s0" "vol/v's missed snapshots after s0 with $P away"
log "copies n1 $P ($P killed); $X frozen; replace $P --to $X through n1"
freeze_pids "$XPID" || fail "$X did not stop"
( OUT=$(timeout 30 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
	volume replace-replica v --node "$P" --to "$X" 2>&1) && RC=0 || RC=$?
  echo "$RC" >"$CL_ROOT/r.rc"; echo "$OUT" >"$CL_ROOT/r.out" ) &
RP=$!
track_pid "$RP"
wait_log 1 "replace of v on $P: creating the new copy on $X" 10
cl_timed "snapshot create v s1 through n1 while the replace waits for $X" 5 1 snapshot create v s1
[ "$CL_RC" = 0 ] || fail "snapshot create v s1 during the replace: status $CL_RC: $CL_OUT"
for (( i=0; i<50; i++ )); do
	[ "$(cl_recorded_missed v)" = "c s0,c s1" ] && break
	sleep 0.1
done
assert_eq "$(cl_recorded_missed v)" "c s0,c s1" "vol/v's missed snapshots while the replace waits"
kill -CONT "$XPID"
reap "$RP" || true
log "replace: status $(cat "$CL_ROOT/r.rc"): $(cat "$CL_ROOT/r.out")"
[ "$(cat "$CL_ROOT/r.rc")" = 0 ] || fail "the replace did not succeed: $(cat "$CL_ROOT/r.out")"
wait_log 1 "replace of v on $P: vol/v changed while it waited only in the snapshots" 1
[ "$(cl_rec_nodes v | tr ' ' '\n' | sort | xargs)" = "$(printf '%s\n' n1 "$X" | sort | xargs)" ] ||
	fail "vol/v lists '$(cl_rec_nodes v)', want n1 and $X"
cl_wait_synced v 30
for n in n1 "$X"; do
	[ "$(cl_snaps_of "${n#n}" v)" = "s0 s1" ] ||
		fail "$n's copy of v holds snapshots '$(cl_snaps_of "${n#n}" v)', want 's0 s1'"
done
cl_stop_all
log PASS
