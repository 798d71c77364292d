#!/usr/bin/env bash
# A replace-replica whose old node is alive by its lease but hung (frozen:
# SIGSTOP) answers within a few seconds: its two calls to that node (the old
# copy's uuid, e3dfcc6, and the old copy's delete) are bounded by the peer
# timeout (engine/cluster/volume.c replace_old_timeout_ms; review 14,
# finding 6), not CLUSTER_COPY_TIMEOUT_MS (30 s each, on the control loop).
# The uuid unheard, the old copy is not deleted (a delete by name that the
# node runs late could remove a copy a replace back onto it made meanwhile):
# the leftover sweep removes it; the record lists only copies that exist.
#   3 nodes; v (2 replicas, min 1) written, detached, its copies moved off n1
#   (the meta node, never held or frozen): copies on O (old) and P.  P runs
#   the replace of O's copy and is held (TSR_TEST_REPLACE_UUID_HOLD_FILE)
#   after its view (O alive) and new copy, before the uuid read; O frozen;
#   released: the replace answers 0 within 25 s (before: 30 s for the uuid
#   read alone; `timeout 25` gives 124), and says that O's copy is left to
#   the leftover sweep (its uuid unheard: no delete by name).  O thawed:
#   vol/v lists n1 and P, both hold v, O still holds its unlisted copy; v
#   attached reads back as written, scrub clean.
# Control: TSR_TEST_REPLACE_OLD_UNBOUNDED=1 (the bound before, volume.c) set
# for P makes the test fail at "replace ... status 124".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy

cl_start 3
SIZE=$((8 << 20))
IMG=$CL_ROOT/img
cl_pattern "$IMG" "$SIZE" 61
ctsr volume create v --size 8M --replicas 2 --min-replicas 1 >/dev/null || fail "volume create v"
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v"
nbdcopy "$IMG" "$(cl_nbd_uri 1 v)" || fail "nbdcopy into v"
ctsr volume detach v >/dev/null || fail "volume detach v"
cl_move_off_n1 v synced
copies=$(cl_copy_nodes v)
[ "$copies" = "n2,n3" ] || fail "copies of v on '$copies', want n2,n3"
O=2 P=3
log "copies of v on $copies: replace n$O's copy through n$P"

HOLD=$CL_ROOT/hold-uuid
on_exit "rm -f '$HOLD'"
cl_stop "$P"
export TSR_TEST_REPLACE_UUID_HOLD_FILE=$HOLD
cl_start_node "$P"
unset TSR_TEST_REPLACE_UUID_HOLD_FILE
cl_wait_nodes_alive 3
touch "$HOLD"

( timeout 25 "$TESSERA" --cluster "$(cl_addr "$P")" --token-file "$(cl_dir 1)/admin.token" \
	volume replace-replica v --node "n$O" >"$CL_ROOT/r.out" 2>&1
  echo $? >"$CL_ROOT/r.rc" ) &
RP=$!
wait_log "$P" "replace of v: test hold .* before the old copy's uuid" 30
OPID=${CL_PID[$O]}
on_exit "kill -CONT $OPID 2>/dev/null"
freeze_pids "$OPID" || fail "n$O did not stop"
log "n$O frozen (alive in the replace's view); replace released"
rm -f "$HOLD"
wait $RP
rc=$(cat "$CL_ROOT/r.rc")
[ "$rc" = 0 ] || fail "replace-replica v --node n$O with n$O frozen: status $rc (124: no answer \
in 25 s): $(cat "$CL_ROOT/r.out")"
log "replace answered 0 with n$O frozen: $(cat "$CL_ROOT/r.out")"
grep -q "node n$O did not give its old copy's uuid within 2000 ms: that copy is left to the \
leftover sweep" "$(cl_dir "$P")/tesserad.log" ||
	fail "n$P's log does not say the old copy on n$O is left to the sweep"
kill -CONT "$OPID"
cl_wait_nodes_alive 3 30

listed=$(cl_copy_nodes v)
[ "$listed" = "n1,n$P" ] || fail "vol/v lists '$listed', want n1,n$P"
for n in ${listed//,/ }; do
	cl_copy_size "${n#n}" v >/dev/null ||
		fail "vol/v lists a copy on $n (copies $listed) that $n's store does not hold"
done
# the old copy, its uuid unheard: no delete by name that n$O could run late
# (after a replace back onto it made a copy there, before its record): left
# to the leftover sweep (grace 900 s here)
sleep 2
cl_copy_size "$O" v >/dev/null ||
	fail "n$O's old copy of v was deleted although its uuid was never heard"
log "n$O still holds its unlisted old copy of v (the leftover sweep's)"
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v (to rebuild)"
cl_wait_synced v
cl_assert_image 1 v "$IMG" "after the replace with n$O frozen"
cl_scrub_clean v "after the replace with n$O frozen"
ctsr volume detach v >/dev/null || fail "volume detach v"
cl_stop_all
