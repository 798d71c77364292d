#!/usr/bin/env bash
# The write again of a replace's record after a snapshot's record of what the
# old copy missed (replace_missed_only_moved, review revB R2) never goes over
# another replace's garbage mark, the fence that must make it fail (review
# revF F1).  An earlier build's mark writes vol/v back unchanged (it knows no
# replace_fence): only the store's history shows it; this build's raises
# replace_fence.  n1's test hook TSR_TEST_REPLACE_FENCE_FILE makes the mark
# just before the replace's record write ("old": unchanged, "new": raised).
#   cl_replace_waiting (3 nodes, v attached on n1); its other copy's node P
#   killed, s0 cut ("c s0" recorded for P); per round: the free node X
#   frozen, replace of P --to X through n1 waits, a snapshot cut through n1
#   (its miss recorded for P), the fence file written, X thawed: the replace
#   is refused "vol/v changed while this replace waited", vol/v still lists
#   n1 and P.  Round 1: "old", n1 logs why it did not write again.
#   Round 2: "new" (the fence's own case, untested before).
# Before the fix, round 1: the replace answered 0 ("written again"), vol/v
# listing X, over the fence.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
FENCE=$(mktemp -u /tmp/tessera-replace-fence.XXXXXX)
on_exit "rm -f '$FENCE'"
export TSR_TEST_REPLACE_FENCE_FILE=$FENCE
cl_replace_waiting_away v
want="c s0"
for mode in old new; do
	snap=s-$mode
	want="$want,c $snap"
	rm -f "$FENCE"
	cl_replace_waiting_start v
	cl_timed "snapshot create v $snap through n1 while the replace waits" 5 1 snapshot create v "$snap"
	[ "$CL_RC" = 0 ] || fail "snapshot create v $snap during the replace: status $CL_RC: $CL_OUT"
	wait_log 1 "replace of v on $P: snapshot $snap, created while it waits, is given" 1
	cl_wait_recorded_missed v "$want"
	echo "$mode" >"$FENCE"
	kill -CONT "$XPID"
	cl_replace_waiting_end
	[ "$(cat "$CL_ROOT/r.rc")" != 0 ] ||
		fail "$mode fence: the replace answered 0, written over the fence (vol/v lists $(cl_rec_nodes v))"
	grepq "vol/v changed while this replace waited" <"$CL_ROOT/r.out" ||
		fail "$mode fence: the refusal does not say vol/v changed: $(cat "$CL_ROOT/r.out")"
	[ "$(cl_copy_nodes v)" = "$(printf '%s\n' n1 "$P" | sort | paste -sd,)" ] ||
		fail "$mode fence: vol/v lists '$(cl_copy_nodes v)', want n1 and $P"
	[ "$mode" = new ] ||
		wait_log 1 "replace of v on $P: vol/v changed while it waited only in what the copy on $P missed, but it was also written back unchanged" 1
	cl_wait_no_copy "${X#n}" v "$X still holds the refused replace's new copy of v"
done
rm -f "$FENCE"
cl_stop_all
log PASS
