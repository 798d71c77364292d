#!/usr/bin/env bash
# An attach whose node loses its lease while the layout opens its copies
# (off the control loop since c0807cd) is fenced as soon as it is applied
# (attach_apply: a->fenced, set by fence_all, checked under c->lock): it
# takes no write.  It answered "attached 'v' on n2 (epoch E)" all the same
# (review 16c N4); now it answers the fact: "cannot attach 'v': this node's
# lease lapsed while its copies were being opened, so it is fenced ...".
#   3 nodes (n1 the metadata node), --peer-timeout 30000; v (replicas 2,
#   min-replicas 1) with its copies on n2 and n3 (n1's moved off), attached
#   once and detached (in sync).  n3 frozen; `volume attach v` through n2 in
#   the background; once n2 logs "attaching v", n1 frozen until n2 logs
#   that v is fenced (its lease lapsed), then n1 and n3 resumed: the attach
#   must fail saying the lease lapsed, and n2's log says it was fenced.
# Before (436f022): the attach answered 0 "attached".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
cl_start 3 --peer-timeout 30000
ctsr volume create v --size 8M --replicas 2 --min-replicas 1 >/dev/null ||
	fail "volume create v"
cl_move_off_n1 v
ctsr volume attach v --node n2 >/dev/null || fail "volume attach v (1)"
cl_wait_synced v
assert_eq "$(cl_copy_nodes v)" "n2,n3" "v's copies"
ctsr volume detach v >/dev/null || fail "volume detach v"
N2LOG=$(cl_dir 2)/tesserad.log
N1PID=${CL_PID[1]} N3PID=${CL_PID[3]}
on_exit "kill -CONT $N1PID $N3PID 2>/dev/null"
freeze_pids "$N3PID" || fail "n3 not stopped"
from=$(( $(wc -l <"$N2LOG") + 1 ))
( out=$(ctsr_via 2 volume attach v --node n2 2>&1); echo "rc $? $out" >"$CL_ROOT/attach.out" ) &
apid=$!
track_pid "$apid"
for (( i=0; i<300; i++ )); do
	tail -n +"$from" "$N2LOG" | grep -q "cluster: attaching v epoch" && break
	sleep 0.1
done
tail -n +"$from" "$N2LOG" | grep -q "cluster: attaching v epoch" ||
	fail "n2 did not start attaching v in 30 s"
freeze_pids "$N1PID" || fail "n1 not stopped"
log "n2 attaches v (n3 frozen): n1, the metadata node, frozen"
for (( i=0; i<300; i++ )); do
	tail -n +"$from" "$N2LOG" | grep -q "cluster: volume v fenced" && break
	sleep 0.1
done
kill -CONT "$N1PID"
tail -n +"$from" "$N2LOG" | grep -q "cluster: volume v fenced" ||
	fail "n2 did not fence v in 30 s with n1 frozen (its lease did not lapse)"
log "n2 fenced v: $(tail -n +"$from" "$N2LOG" | grep -m1 "cluster: volume v fenced" | cut -c1-140)"
kill -CONT "$N3PID"
log "n1 and n3 resumed"
reap "$apid" || true
out=$(cat "$CL_ROOT/attach.out")
log "the attach: $out"
case $out in
"rc 0 "*) fail "the attach whose lease lapsed during its open answered 0: '$out'" ;;
*"lease lapsed while its copies were being opened"*) ;;
*) fail "the attach: want 'lease lapsed while its copies were being opened', got '$out'" ;;
esac
cl_stop_all
