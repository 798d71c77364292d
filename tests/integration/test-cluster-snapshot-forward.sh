#!/usr/bin/env bash
# A snapshot command sent to a node that is not the volume's coordinator is
# forwarded without blocking that node's main loop (the async admin client,
# engine/admin/admin_async.c), and so is a detached volume's snapshot, cut
# on every copy's node at once.
#
# 3 nodes, a 3-replica volume attached on n1, a second one detached, a
# third attached on n3:
#  1. the coordinator's cut held (TSR_TEST_SNAP_HOLD_FILE, engine/vol/vol.c):
#     a create forwarded by n2 and a delete forwarded by n3 wait, and the
#     forwarding nodes answer status and node list meanwhile;
#     released, the replies carry the snapshot / succeed, every node lists
#     the same snapshots, the copies are identical;
#  1c. a clone of the attached volume's current content (its temporary
#     snapshot held), asked of n1, then of n2: each waits, the asked node
#     and n1 answer status meanwhile; released, both clones exist with
#     their parent noted and their temporary snapshots are gone;
#  2. detached volume, one copy's node stopped (SIGSTOP, within its lease):
#     a create asked of n1 waits for that node, n1 answers status meanwhile;
#     the node continued, the create succeeds on every copy;
#  3. bad input: an unknown volume forwarded; a duplicate name forwarded;
#     the coordinator of a volume killed: a create forwarded by n2 fails at
#     once with "cannot reach n3, the coordinator", and nothing changed.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy

export TSR_TEST_SNAP_HOLD_FILE=/var/tmp/tessera-snaphold-fwd.$$
HOLD=$TSR_TEST_SNAP_HOLD_FILE
rm -f "$HOLD"
on_exit "rm -f $HOLD"
cl_start 3
ctsr volume create db --size 16M --replicas 3 >/dev/null || fail "volume create db"
ctsr volume attach db --node n1 >/dev/null || fail "volume attach db"
ctsr volume create dv --size 16M --replicas 3 >/dev/null || fail "volume create dv"
ctsr volume create ev --size 16M --replicas 3 >/dev/null || fail "volume create ev"
ctsr volume attach ev --node n3 >/dev/null || fail "volume attach ev"

# snaps VIA VOL: the snapshot names node VIA lists, space-separated
snaps() { ctsr_via "$1" --json snapshot list "$2" | json_get '" ".join(s["name"] for s in j["snapshots"])'; }
snapname() { json_get 'j["snapshots"][0]["name"] if "snapshots" in j else j["name"]' <"$1"; }

# answers I WHAT PIDS: node I answers status and node list while every pid in
# PIDS still waits (no time bound: a loop blocked by the request could not
# answer before the hold ends, and the requests are checked to be waiting
# after the answers; the hold lasts until the test removes the file, at
# most 30 s, longer than the 10 s each answer may take)
answers() {
	local i=$1 what=$2 pids=$3 t0 t1 p
	t0=$(date +%s%N)
	timeout 10 "$TESSERA" --cluster "$(cl_addr "$i")" --token-file "$(cl_dir 1)/admin.token" \
		status >/dev/null || fail "$what: n$i did not answer status"
	timeout 10 "$TESSERA" --cluster "$(cl_addr "$i")" --token-file "$(cl_dir 1)/admin.token" \
		--json node list >"$CL_ROOT/nodes.json" || fail "$what: n$i did not answer node list"
	t1=$(date +%s%N)
	assert_eq "$(json_get 'len(j["nodes"])' <"$CL_ROOT/nodes.json")" 3 "$what: node list of n$i"
	for p in $pids; do
		kill -0 "$p" 2>/dev/null || fail "$what: a request returned while it should wait"
	done
	log "$what: n$i answered status and node list in $(( (t1 - t0) / 1000000 )) ms"
}

# ---- 1. forwarded creates and deletes while the coordinator's cut is held
ctsr snapshot create db base >/dev/null || fail "snapshot create db base"
: >"$HOLD"
ctsr_via 2 --json snapshot create db f1 >"$CL_ROOT/f1.json" 2>&1 &
p1=$!
track_pid "$p1"
sleep 1
answers 2 "create forwarded by n2" "$p1"
rm -f "$HOLD"
reap "$p1" || { cat "$CL_ROOT/f1.json" >&2; fail "snapshot create db f1 via n2"; }
assert_eq "$(snapname "$CL_ROOT/f1.json")" f1 "the forwarded create's reply"
grep -q "cluster: snapshot create 'db@f1': replied after" "$(cl_dir 2)/tesserad.log" ||
	fail "n2 did not answer the forwarded create later (no 'replied after' line)"
for i in 1 2 3; do
	assert_eq "$(snaps "$i" db)" "base f1" "snapshots of db listed by n$i"
done
cl_assert_snap_identical db f1 1 2 3 >/dev/null

: >"$HOLD"
ctsr_via 3 snapshot delete db base >"$CL_ROOT/d1.out" 2>&1 &
p1=$!
track_pid "$p1"
sleep 1
answers 3 "delete forwarded by n3" "$p1"
assert_eq "$(snaps 2 db)" "base f1" "snapshots while the delete waits"
rm -f "$HOLD"
reap "$p1" || { cat "$CL_ROOT/d1.out" >&2; fail "snapshot delete db base via n3"; }
for i in 1 2 3; do
	assert_eq "$(snaps "$i" db)" "f1" "snapshots of db listed by n$i after the delete"
done

# ---- 1c. clones of the current content wait for their temporary snapshot's cut
# (one at a time: two clones made at once from different nodes would each
# wait in copy_op_all for the other's loop, see the final report)
clone_held() {
	local i=$1 name=$2 p
	: >"$HOLD"
	ctsr_via "$i" --json volume create "$name" --from-volume db >"$CL_ROOT/$name.json" 2>&1 &
	p=$!
	track_pid "$p"
	sleep 1
	answers "$i" "clone $name asked of n$i" "$p"
	[ "$i" = 1 ] || answers 1 "clone $name asked of n$i (the coordinator)" "$p"
	rm -f "$HOLD"
	reap "$p" || { cat "$CL_ROOT/$name.json" >&2; fail "volume create $name --from-volume db via n$i"; }
}
clone_held 1 c1
clone_held 2 c2
for c in c1 c2; do
	assert_eq "$(json_get 'j["volumes"][0]["name"] if "volumes" in j else j["name"]' <"$CL_ROOT/$c.json")" \
		"$c" "the clone's reply"
	assert_eq "$(ctsr --json volume show $c | json_get 'j["parent_volume"] if "parent_volume" in j else j["volumes"][0]["parent_volume"]')" \
		db "clone $c's parent"
done
# the temporary snapshots are deleted without waiting: gone within a few seconds
for (( i = 0; i < 50; i++ )); do
	[ "$(snaps 1 db)" = "f1" ] && [ "$(snaps 3 db)" = "f1" ] && break
	sleep 0.2
done
assert_eq "$(snaps 1 db)" "f1" "snapshots of db after the clones (temporary ones gone)"
assert_eq "$(snaps 3 db)" "f1" "snapshots of db on n3 after the clones"

# ---- 2. a detached volume's create waits for a stopped copy node, not n1's loop
freeze_pids "${CL_PID[3]}" || fail "pid ${CL_PID[3]} not stopped"
on_exit "kill -CONT ${CL_PID[3]} 2>/dev/null"
ctsr --json snapshot create dv d1 >"$CL_ROOT/dv1.json" 2>&1 &
p1=$!
track_pid "$p1"
sleep 1
answers 1 "detached create waiting for n3" "$p1"
kill -CONT "${CL_PID[3]}"
reap "$p1" || { cat "$CL_ROOT/dv1.json" >&2; fail "snapshot create dv d1 (n3 stopped a while)"; }
assert_eq "$(snapname "$CL_ROOT/dv1.json")" d1 "the detached create's reply"
for i in 1 2 3; do
	assert_eq "$(snaps "$i" dv)" "d1" "snapshots of dv listed by n$i"
done
ctsr_via 2 snapshot delete dv d1 >/dev/null || fail "snapshot delete dv d1 via n2"
for i in 1 2 3; do
	assert_eq "$(snaps "$i" dv)" "" "snapshots of dv listed by n$i after the delete"
done

# ---- 3. bad input: clear errors, nothing changed
expect_fail 1 'not found' ctsr_via 2 snapshot create nosuchvol x
expect_fail 1 'already exists' ctsr_via 2 snapshot create db f1
expect_fail 1 'not found' ctsr_via 3 snapshot delete db nosuch
# the coordinator of ev (n3) killed: refused at once, "cannot reach n3, the
# coordinator" (on a slow machine its attachment may lapse with its lease
# first: then the detached path refuses, its copy there is not alive or its
# coordinator did not detach cleanly)
cl_kill 3
expect_fail 1 'cannot reach n3, the coordinator|n3 is not alive|did not detach cleanly' \
	ctsr_via 2 snapshot create ev e1
assert_eq "$(snaps 2 ev)" "" "snapshots of ev after the failed forward"
assert_eq "$(snaps 1 db)" "f1" "snapshots of db after the failed forward"
log "PASS"
