#!/usr/bin/env bash
# A snapshot create or delete of a volume through the node where a replace of
# that volume waits for another node is refused -EBUSY "replace-replica of V
# ... is running here: retry" (review 16a, F2).  The replace's snapshot list
# (its new copy's missed snapshots) is read before its waits, and a detached
# volume's snapshot cuts the copies vol/V lists then: a snapshot answered 0
# during the wait was missing from the new copy for good (the loop served it
# since 5066a18; before, the blocked loop ran it after the record write).
#   4 nodes, v (2 replicas) written with snapshot s1, detached, its copies O P
#   moved off n1; the free node X frozen; replace O --to X through n1 waits for
#   X's create; meanwhile `snapshot create v s2` and `snapshot delete v s1`
#   through n1 are refused non-zero with that message; X thawed, the replace
#   answers 0; once attached and in sync, every copy vol/v lists holds s1 (the
#   new copy got it), and a snapshot s2 cut then is on every copy.
# On b8ab404: the snapshot create during the wait answers 0 (the FAIL says so).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy

cl_start 4
IMG=$CL_ROOT/img
cl_pattern "$IMG" $((8 << 20)) 47
ctsr volume create v --size 8M --replicas 2 --min-replicas 1 >/dev/null || fail "volume create v"
nodes() { cl_rec_nodes v; }
free1() { cl_free_node v; }
cl_move_off_n1 v
cl_attach_fill v "$IMG"
ctsr snapshot create v s1 >/dev/null || fail "snapshot create v s1"
ctsr volume detach v >/dev/null || fail "volume detach v"
read -r O P <<<"$(nodes)"
X=$(free1)
XPID=${CL_PID[${X#n}]}
on_exit "kill -CONT $XPID 2>/dev/null"
log "copies $O $P, target $X frozen; replace $O --to $X through n1"
freeze_pids "$XPID" || fail "$X did not stop"
( timeout 60 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
	volume replace-replica v --node "$O" --to "$X" >"$CL_ROOT/r.out" 2>&1
  echo $? >"$CL_ROOT/r.rc" ) &
RP=$!
wait_log 1 "replace of v on $O: creating the new copy on $X" 10
sout=$(timeout 10 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
	snapshot create v s2 2>&1) && src=0 || src=$?
dout=$(timeout 10 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
	snapshot delete v s1 2>&1) && drc=0 || drc=$?
kill -CONT "$XPID"
wait "$RP"
log "snapshot create v s2 during the replace: status $src: $sout"
log "snapshot delete v s1 during the replace: status $drc: $dout"
log "replace: status $(cat "$CL_ROOT/r.rc"): $(cat "$CL_ROOT/r.out")"
[ "$src" != 0 ] || fail "snapshot create v s2 through n1 while its replace of v waited answered 0 \
(the new copy on $X misses it: vol/v lists $(nodes))"
[ "$src" != 124 ] || fail "snapshot create v s2 got no answer in 10 s"
printf '%s' "$sout" | grepq "replace-replica of v (its copy on $O) is running here: retry" ||
	fail "the snapshot create's refusal does not name the replace: $sout"
[ "$drc" != 0 ] && [ "$drc" != 124 ] || fail "snapshot delete v s1 through n1 while its replace \
waited: status $drc, want a refusal: $dout"
printf '%s' "$dout" | grepq "is running here: retry" ||
	fail "the snapshot delete's refusal does not name the replace: $dout"
[ "$(cat "$CL_ROOT/r.rc")" = 0 ] || fail "the replace did not succeed: $(cat "$CL_ROOT/r.out")"
[ "$(nodes)" = "$X $P" ] || fail "vol/v lists '$(nodes)', want '$X $P'"
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v after the replace"
cl_wait_synced v
ctsr snapshot create v s2 >/dev/null || fail "snapshot create v s2 after the replace"
ctsr volume detach v >/dev/null || fail "volume detach v"
for n in $(nodes); do
	got=$(cl_snaps_of "${n#n}" v)
	log "$n's copy of v holds snapshots '$got'"
	[ "$got" = "s1 s2" ] || fail "$n's copy of v holds snapshots '$got', want 's1 s2'"
done
cl_stop_all
log PASS
