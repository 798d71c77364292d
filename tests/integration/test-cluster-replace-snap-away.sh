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
cl_replace_waiting_away v
cl_replace_waiting_start v
cl_timed "snapshot create v s1 through n1 while the replace waits for $X" 5 1 snapshot create v s1
[ "$CL_RC" = 0 ] || fail "snapshot create v s1 during the replace: status $CL_RC: $CL_OUT"
cl_wait_recorded_missed v "c s0,c s1"
kill -CONT "$XPID"
cl_replace_waiting_end
cl_replace_waiting_ok v "s0 s1"
wait_log 1 "replace of v on $P: vol/v changed while it waited only in the snapshots" 1
[ "$(cl_rec_nodes v | tr ' ' '\n' | sort | xargs)" = "$(printf '%s\n' n1 "$X" | sort | xargs)" ] ||
	fail "vol/v lists '$(cl_rec_nodes v)', want n1 and $X"
cl_stop_all
log PASS
