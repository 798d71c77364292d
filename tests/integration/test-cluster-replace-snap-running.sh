#!/usr/bin/env bash
# A replace-replica through a node where a snapshot create of the same
# volume is still running is refused -EBUSY, and succeeds once the snapshot
# answered; the new copy then holds that snapshot (review 16d N1, the other
# order of review 16a F2 / test-cluster-replace-snap-busy).  Before the fix
# the replace read the new copy's snapshot list from n1's store while n1's
# own cut was still running, recorded the new copy without s2, the snapshot
# answered 0, and after the rebuild the new copy lacked the acknowledged s2.
#   3 nodes; v (2 replicas, one on n1) written, s1 cut, detached; n1's own
#   cut of s2 held (TSR_TEST_SNAP_LOCAL_CUT_HOLD_FILE; the other copy P has
#   cut it); replace P --to X through n1: refused naming the running
#   snapshot, nothing changed; the hold released: s2 answers 0; the replace
#   again: 0; attach, sync: every copy holds s1 s2 and the image.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy
HOLD=/var/tmp/tsr-replace-snap-running-hold.$$
export TSR_TEST_SNAP_LOCAL_CUT_HOLD_FILE=$HOLD
on_exit "rm -f $HOLD $HOLD.held"
cl_start 3
IMG=$CL_ROOT/img
cl_pattern "$IMG" $((8 << 20)) 47
ctsr volume create v --size 8M --replicas 2 --min-replicas 1 >/dev/null || fail "volume create v"
nodes() { ctsr --json volume show v | json_get '" ".join(c["node"] for c in j["copies"])'; }
case " $(nodes) " in
*" n1 "*) ;;
*) read -r A _ <<<"$(nodes)"
   out=$(ctsr volume replace-replica v --node "$A" --to n1 2>&1) || fail "move onto n1: $out" ;;
esac
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v"
cl_wait_synced v
nbdcopy "$IMG" "$(cl_nbd_uri 1 v)" || fail "nbdcopy into v"
cl_wait_synced v
ctsr snapshot create v s1 >/dev/null || fail "snapshot create v s1"
ctsr volume detach v >/dev/null || fail "volume detach v"
P=
for n in $(nodes); do [ "$n" = n1 ] || P=$n; done
X=
for n in n2 n3; do case " $(nodes) " in *" $n "*) ;; *) X=$n ;; esac; done
[ -n "$P" ] && [ -n "$X" ] || fail "copies $(nodes): no P or X"
log "copies $(nodes); n1's cut of s2 held; replace $P --to $X through n1 meanwhile"
touch "$HOLD"
( timeout 60 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
	snapshot create v s2 >"$CL_ROOT/s.out" 2>&1; echo $? >"$CL_ROOT/s.rc" ) &
SP=$!
track_pid "$SP"
for (( i=0; i<100; i++ )); do [ -e "$HOLD.held" ] && break; sleep 0.1; done
[ -e "$HOLD.held" ] || fail "n1's cut of s2 never held"
before=$(nodes)
out=$(timeout 30 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
	volume replace-replica v --node "$P" --to "$X" 2>&1) && rc=0 || rc=$?
[ "$rc" != 0 ] || fail "the replace during the running snapshot answered 0: $out"
printf '%s' "$out" | grepq "snapshot create or delete of it is running" ||
	fail "the refusal does not name the running snapshot: $out"
assert_eq "$(nodes)" "$before" "v's copies after the refused replace"
log "refused while s2 runs: $out"
rm -f "$HOLD"
reap "$SP" || true
assert_eq "$(cat "$CL_ROOT/s.rc")" 0 "snapshot create v s2 ($(cat "$CL_ROOT/s.out"))"
out=$(ctsr volume replace-replica v --node "$P" --to "$X" 2>&1) || fail "the replace after s2: $out"
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v after the replace"
cl_wait_synced v
cl_assert_image 1 v "$IMG" "after the replace"
ctsr volume detach v >/dev/null || fail "volume detach v"
for n in $(nodes); do
	got=$(cl_snaps_of "${n#n}" v | xargs)
	assert_eq "$got" "s1 s2" "snapshots of $n's copy of v"
done
log "every copy ($(nodes)) holds s1 s2"
cl_stop_all
log ok
