#!/usr/bin/env bash
# A snapshot created or deleted through the coordinator while a replace,
# its record written, waits for the old copy's delete (step
# REPLACE_OLD_DELETE) reaches the new copy.  The replace's job is still
# listed then, so cluster_snapshot_change notes the operation
# (cluster_replace_note_snap); the note is never merged (the record is
# written), and is not needed: the coordinator's layout already holds the
# new copy, out of sync, so the cut goes through it like any other and the
# new copy's miss is recorded in its CopyRecord.missed_snaps (mirror_snap.c),
# then made up by its rebuild.
#   3 nodes, --peer-timeout 8000; v (2 replicas, one on n1, min 1) attached
#   on n1, in sync, with snapshot s0; replace-replica of the other copy P
#   --to the free node X through n1, held after its record write
#   (TSR_TEST_REPLACE_LAYOUT_HOLD_FILE); P and X frozen, the hold released:
#   the layout takes X's copy (it cannot reach X: out of sync) and n1 waits
#   for P's delete.  Through n1 meanwhile: `snapshot create v s1` and
#   `snapshot delete v s0` answer 0 and are noted by the replace; vol/v
#   records "c s1,d s0" as X's missed list.  P and X thawed: the replace
#   answers 0, v gets in sync, n1 and X hold "s1".
# Before (docs said so): "refused -EBUSY"; with the layout's record of the
# new copy's miss taken away (mirror_snap.c snap_decided skipping it),
# "FAIL: vol/v's missed snapshots: got 'c s0', want 'c s1,d s0'".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
cl_replace_waiting v hold 1 --peer-timeout 8000
ctsr snapshot create v s0 >/dev/null || fail "snapshot create v s0"
PPID_P=${CL_PID[${P#n}]}
on_exit "kill -CONT $PPID_P 2>/dev/null"
touch "$HOLD"
log "copies n1 $P; replace $P --to $X through n1, held after its record write"
cl_replace_bg v
wait_log 1 "replace of v: test hold .* between the record and the coordinator" 15
freeze_pids "$XPID" "$PPID_P" || fail "$X and $P did not stop"
from=$(( $(log_lines 1) + 1 ))
rm -f "$HOLD"
for op in "create s1" "delete s0"; do
	cl_timed "snapshot $op through n1 while the replace deletes the old copy" 5 1 \
		snapshot "${op% *}" v "${op#* }"
	[ "$CL_RC" = 0 ] || fail "snapshot $op during the old copy's delete: status $CL_RC: $CL_OUT"
done
# (the replace was still running: its job noted both)
wait_log_from 1 "$from" "replace of v on $P: snapshot s0, deleted while it waits"
cl_wait_recorded_missed v "c s1,d s0"
kill -CONT "$XPID" "$PPID_P"
cl_replace_waiting_end
cl_replace_waiting_ok v "s1"
cl_wait_recorded_missed v ""
cl_stop_all
log PASS
