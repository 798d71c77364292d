#!/usr/bin/env bash
# The tick's automatic replace (--rebuild-after, asynchronous since session 17)
# outlives the attachment that started it (review 17a): while its create waits
# for a frozen target, v is detached and attached again on n1 (a new
# attachment: the hook finds it by name) and w is detached and deleted (the
# hook finds none).  Each attempt's record write then meets the changed
# vol/<name> (-ECANCELED) and undoes its new copy.  Asserted:
#   - both failures are logged "(retrying later)", not "(stopping)": before
#     the fix auto_replace_done took every -ECANCELED for tsr_cluster_stop's
#     (a record write that met a detach, an attach or another replace is
#     -ECANCELED too), and the operator read that n1 was stopping;
#   - v: the slot's mark is not left set, a later attempt records the copy on
#     X, both copies in sync, v reads back as written;
#   - w: X holds no copy of w afterwards (the undo delete ran), n1 alive.
# On 3007240: FAIL "the failed attempt for v is logged as '(stopping)'".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy
export TSR_TEST_COPY_TIMEOUT_MS=8000

cl_start 3 --rebuild-after 1 --peer-timeout 8000
SIZE=$((8 << 20))
IMG=$CL_ROOT/img
cl_pattern "$IMG" "$SIZE" 73
for vol in v w; do
	ctsr volume create $vol --size 8M --replicas 2 --min-replicas 1 >/dev/null ||
		fail "volume create $vol"
	cl_move_onto_n1 $vol
done
O=$(cl_rec_nodes v | tr ' ' '\n' | grep -v '^n1$')
# w's other copy on O too (both replaces then wait for the same X)
WO=$(cl_rec_nodes w | tr ' ' '\n' | grep -v '^n1$')
if [ "$WO" != "$O" ]; then
	out=$(ctsr volume replace-replica w --node "$WO" --to "$O" 2>&1) || fail "move w onto $O: $out"
fi
[ "$(cl_rec_nodes w | tr ' ' '\n' | grep -v '^n1$')" = "$O" ] || fail "w's copies: $(cl_rec_nodes w)"
for vol in v w; do
	cl_attach_fill $vol "$IMG"
done
cl_autorepl_freeze v "$O"
for vol in v w; do
	wait_log 1 "replace of $vol on $O: creating the new copy on $X \(at most 8000 ms\)" 5
done
ctsr volume detach v >/dev/null || fail "detach v while its automatic replace waits"
ctsr volume attach v --node n1 >/dev/null || fail "attach v again on n1"
ctsr volume detach w >/dev/null || fail "detach w while its automatic replace waits"
ctsr volume delete w >/dev/null || fail "delete w while its automatic replace waits"
log "v detached and attached again, w detached and deleted, while both replaces wait"
kill -CONT "$XPID"
wait_log 1 "automatic replace of v on $O: vol/v changed" 15
wait_log 1 "automatic replace of w on $O: vol/w changed" 15
for vol in v w; do
	line=$(grep "automatic replace of $vol on $O: vol/$vol changed" "$LOG" | head -1)
	case $line in
	*"(retrying later)") ;;
	*) fail "the failed attempt for $vol is logged as '${line##*(}' (want 'retrying later'): $line" ;;
	esac
done
cl_autorepl_landed v "$O" "$IMG" " (the slot's mark left set?)"
cl_wait_no_copy "${X#n}" w "$X still holds a copy of deleted w 10 s after it thawed"
kill -0 "${CL_PID[1]}" 2>/dev/null || fail "n1 died"
cl_stop_all
log PASS
