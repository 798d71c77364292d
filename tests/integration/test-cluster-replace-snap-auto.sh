#!/usr/bin/env bash
# A snapshot of an attached volume through its coordinator while the tick's
# automatic replace (--rebuild-after) of one of its copies waits for the new
# copy's node is taken, and the new copy gets it (review 17a F4).  Before, it
# was refused -EBUSY "replace-replica of v ... is running here: retry" for the
# whole attempt (up to the 30 s of the new copy's create): the refusal of
# review 16a F2 (test-cluster-replace-snap-busy, a detached volume: kept) was
# applied to attached volumes too.  Now the coordinator notes the snapshot in
# the waiting replace, which gives it to the new copy in its record
# (missed_snaps) as well as the snapshots listed before its wait.
#   3 nodes, --rebuild-after 1; v (2 replicas, min 1, one copy on n1)
#   written, s1 cut, attached on n1; the other copy's node O killed, the free
#   node X frozen once n1 sees O dead; while the automatic replace waits for
#   X's create: `snapshot create v s2` through n1 answers 0; X resumed: vol/v
#   lists X, in sync; both copies hold s1 s2.
# On 230067f: FAIL "snapshot create v s2 ... status 1: ... is running here".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy
export TSR_TEST_COPY_TIMEOUT_MS=8000

cl_start 3 --rebuild-after 1 --peer-timeout 8000
IMG=$CL_ROOT/img
cl_pattern "$IMG" $((8 << 20)) 29
ctsr volume create v --size 8M --replicas 2 --min-replicas 1 >/dev/null || fail "volume create v"
cl_move_onto_n1 v
cl_attach_fill v "$IMG"
ctsr snapshot create v s1 >/dev/null || fail "snapshot create v s1"
O=$(cl_rec_nodes v | tr ' ' '\n' | grep -v '^n1$')
X=$(cl_free_node v) || fail "no free node"
XPID=${CL_PID[${X#n}]}
on_exit "kill -CONT $XPID 2>/dev/null"
log "copies n1 $O, free $X: $O killed, $X frozen once n1 sees $O dead"
cl_kill "${O#n}"
wait_log 1 "volume v copy $O: node $O is not alive" 15
freeze_pids "$XPID" || fail "$X did not stop"
wait_log 1 "replace of v on $O: creating the new copy on $X" 5
sout=$(timeout 10 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
	snapshot create v s2 2>&1) && src=0 || src=$?
kill -CONT "$XPID"
log "snapshot create v s2 during the automatic replace: status $src: $sout"
[ "$src" = 0 ] || fail "snapshot create v s2 through its coordinator n1 while the automatic \
replace of its copy on $O waited for $X: status $src: $sout"
grepq "replace of v on $O: snapshot s2, created while it waits" <"$(cl_dir 1)/tesserad.log" ||
	fail "n1 did not note s2 for the waiting replace"
for (( i=0; i<150; i++ )); do
	case " $(cl_rec_nodes v) " in *" $X "*) break ;; esac
	sleep 0.1
done
[ "$(cl_rec_nodes v)" = "n1 $X" ] || [ "$(cl_rec_nodes v)" = "$X n1" ] ||
	fail "vol/v lists '$(cl_rec_nodes v)' 15 s after $X resumed, want n1 and $X"
cl_wait_synced v 30
ctsr volume detach v >/dev/null || fail "volume detach v"
for n in n1 "$X"; do
	got=$(cl_snaps_of "${n#n}" v)
	log "$n's copy of v holds snapshots '$got'"
	[ "$got" = "s1 s2" ] || fail "$n's copy of v holds snapshots '$got', want 's1 s2'"
done
cl_stop_all
log PASS
