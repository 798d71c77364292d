#!/usr/bin/env bash
# A client's retry of a cluster rollback (same snapshot, same node) that meets
# the first rollback still running in one copy's store (review 16b R2).
# The store's data copy runs without store->lock since 6337aa5; on b8ab404 the
# retry's calls on that copy answered -EBUSY at once (its fence check, then
# the rollback), R1's DONE cleared the mark first, R2's FAILED then wrote
# "s1/failed": every copy at s1, yet the next attach refused ("unfinished
# rollback ... it failed") until a third rollback.  Now a store rollback to
# the same snapshot waits for the running one's end and runs again, and a
# fence check at an unchanged epoch answers 0: R1 and R2 exit 0, the attach is
# clean, v reads s1's image.
#
# 2 nodes, each with its own store rollback hold (TSR_TEST_STORE_ROLLBACK_
# HOLD_FILE: H1 on n1, H2 on n2).  R1 = rollback v s1 through n1: held on
# both; H1 released (n1's copy done), H1 made again; R2 = the same rollback
# through n1: held on n1 (its own copy); on n2 it waits (before: refused);
# H2 released: R1 ends; H1 released: R2 ends.  Adopted from review 16b's
# test-review16b-retry-mark.sh.  On b8ab404: "FAIL: attach v after R1 (exit 0)
# and its retry R2 ended, every copy at s1: status 1: ... (it failed)".
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
. ./snapops.sh
require_tessera
require_cmd qemu-io timeout

make_tmpdir HOLD_DIR
H1=$HOLD_DIR/h1
H2=$HOLD_DIR/h2
on_exit "rm -f '$H1' '$H2'"
# cl_start 2, each node with its own hold file
make_tmpdir CL_ROOT
CL_N=2
i=1
while read -r port; do CL_PORT[$i]=$port; i=$(( i + 1 )); done < <(free_ports 2)
TSR_TEST_STORE_ROLLBACK_HOLD_FILE=$H1 cl_start_node 1
TSR_TEST_STORE_ROLLBACK_HOLD_FILE=$H2 cl_start_node 2
cl_wait_nodes_alive 2

ctsr volume create v --size 8M --replicas 2 >/dev/null || fail "volume create v"
v_at_s1 6M

log_mark 1 2
holds() { since_mark "$1" | grep -c "rollback: volume v: test hold"; }
wait_holds() { # N COUNT
	for (( i=0; i<300; i++ )); do
		[ "$(holds "$1")" -ge "$2" ] && return 0
		sleep 0.1
	done
	fail "n$1: store rollback hold #$2 not reached"
}

touch "$H1" "$H2"
ctsr volume rollback v s1 >"$HOLD_DIR/r1.out" 2>&1 &
r1=$!
track_pid "$r1"
wait_holds 1 1
wait_holds 2 1
log "R1 held on both copies"
rm -f "$H1"
for (( i=0; i<300; i++ )); do
	since_mark 1 | grep -q "rollback: volume v is s1 again" && break
	sleep 0.1
done
since_mark 1 | grep -q "rollback: volume v is s1 again" || fail "R1 did not end on n1's copy"
touch "$H1"
log "R1 done on n1's copy, still held on n2's"
ctsr volume rollback v s1 >"$HOLD_DIR/r2.out" 2>&1 &
r2=$!
track_pid "$r2"
wait_holds 1 2
log "R2 held on n1's copy"
# R2's call on n2 reached n2's store: it waits (now) or was refused (b8ab404)
for (( i=0; i<300; i++ )); do
	since_mark 2 | grep -q "the same rollback is running: waiting\|volume v: a rollback is running" && break
	sleep 0.1
done
since_mark 2 | grep -q "the same rollback is running: waiting\|volume v: a rollback is running" ||
	fail "R2's rollback of n2's copy did not reach n2's store"
rm -f "$H2"
rc1=0; reap "$r1" || rc1=$?
log "R1 exit $rc1: $(cat "$HOLD_DIR/r1.out")"
rm -f "$H1"
rc2=0; reap "$r2" || rc2=$?
log "R2 exit $rc2: $(cat "$HOLD_DIR/r2.out")"
rc=0
out=$(ctsr volume attach v --node n2 2>&1) || rc=$?
[ "$rc" = 0 ] || fail "attach v after R1 (exit $rc1) and its retry R2 (exit $rc2) ended, every copy at s1: status $rc: $out"
assert_eq "$rc1" 0 "R1's exit status"
assert_eq "$rc2" 0 "R2's exit status (the retry: $(cat "$HOLD_DIR/r2.out"))"
assert_eq "$(cl_image_sha 2 v)" "$s1" "v after the two rollbacks"
ctsr volume detach v >/dev/null || fail "detach v"
cl_stop_all
log ok
