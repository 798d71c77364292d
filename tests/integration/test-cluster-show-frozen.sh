#!/usr/bin/env bash
# volume show through a node holding no in-sync copy of the volume answers
# within the peer timeout with the snapshot list when one node holding an
# in-sync copy is frozen (SIGSTOP), and the node's control loop serves other
# calls meanwhile (contract s15-show).  The list was read with
# cluster_volume_snapshots: a blocking forward bounded by 120 s to the
# record's first in-sync copy's node, on the main loop.  Now the alive nodes
# holding an in-sync copy are asked in turn, each bounded by the peer timeout
# (2000 ms here), asynchronously (engine/cluster/snapshot.c show_list_*).
#   4 nodes; v (3 replicas, min 1), snapshots s1 s2, detached, its copies
#   moved off n1 (so on n2 n3 n4).
#   (a) the record's first copy's node frozen: volume show v through n1
#       answers under `timeout 10` (before: 124) listing s1 s2, n1 answers
#       `volume list` under `timeout 3` while the show waits (before: 124).
#   (b) every copy's node frozen: the show answers (status 0) under
#       `timeout 20`, without the list, saying "snapshots not listed".
# Control: TSR_TEST_SHOW_LIST_UNBOUNDED=1 and TSR_TEST_SNAP_READ_UNBOUNDED=1
# (the old calls) in n1's environment make (a) fail with "status 124".  The
# first alone no longer does since fe3fb90: the old call it restores,
# cluster_volume_snapshots, reads through cluster_snapshot_read, bounded
# since then (it makes (b) fail instead).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera

cl_start 4
ctsr volume create v --size 8M --replicas 3 --min-replicas 1 >/dev/null || fail "volume create v"
ctsr snapshot create v s1 >/dev/null || fail "snapshot create v s1"
ctsr snapshot create v s2 >/dev/null || fail "snapshot create v s2"

rec_nodes() { cl_rec_nodes v; }
cl_move_off_n1 v synced
case " $(rec_nodes) " in *" n1 "*) fail "v still has a copy on n1: $(rec_nodes)" ;; esac
[ "$(ctsr --json volume show v | json_get '" ".join(s["name"] for s in j["snapshots"])')" = \
	"s1 s2" ] || fail "volume show v does not list s1 s2 with every node running"

# volume show v --json through n1 under `timeout $1`; sets RC and OUT, ERR
show_timed() {
	local t0=$SECONDS
	OUT=$(timeout "$1" "$TESSERA" --json --cluster "$(cl_addr 1)" \
		--token-file "$(cl_dir 1)/admin.token" volume show v 2>"$CL_ROOT/show.err") &&
		RC=0 || RC=$?
	ERR=$(cat "$CL_ROOT/show.err")
	log "volume show v: status $RC in $(( SECONDS - t0 )) s: $ERR"
}

# (a) the record's first copy's node frozen (the one the old call asked)
read -r F M L <<<"$(rec_nodes)"
log "(a) copies F=$F M=$M L=$L: $F frozen, volume show v through n1"
FPID=${CL_PID[${F#n}]}
on_exit "kill -CONT $FPID 2>/dev/null"
freeze_pids "$FPID" || fail "$F did not stop"
( show_timed 10; echo "$RC" >"$CL_ROOT/a.rc"; echo "$OUT" >"$CL_ROOT/a.out" ) &
SP=$!
sleep 0.5
cl_timed "(a) n1's volume list while the show waits for $F" 3 1 volume list
lrc=$CL_RC lout=$CL_OUT
wait "$SP"
RC=$(cat "$CL_ROOT/a.rc")
[ "$RC" = 0 ] || fail "(a) volume show v with $F frozen: status $RC (124: no answer in 10 s)"
[ "$lrc" = 0 ] || fail "(a) n1's volume list while its show waited for frozen $F: status \
$lrc (124: no answer in 3 s): $lout"
snaps=$(json_get '" ".join(s["name"] for s in j["snapshots"])' <"$CL_ROOT/a.out")
[ "$snaps" = "s1 s2" ] || fail "(a) volume show v with $F frozen lists snapshots '$snaps', want 's1 s2'"
kill -CONT "$FPID"
cl_wait_nodes_alive 4 30

# (b) every copy's node frozen: answered without the list, saying so
log "(b) $F $M $L frozen, volume show v through n1"
PIDS="${CL_PID[${F#n}]} ${CL_PID[${M#n}]} ${CL_PID[${L#n}]}"
on_exit "kill -CONT $PIDS 2>/dev/null"
# shellcheck disable=SC2086
freeze_pids $PIDS || fail "$F $M $L did not stop"
show_timed 20
# shellcheck disable=SC2086
kill -CONT $PIDS
[ "$RC" = 0 ] || fail "(b) volume show v with every copy's node frozen: status $RC: $ERR"
printf '%s' "$ERR" | grepq "snapshots not listed" ||
	fail "(b) the show does not say the snapshots are not listed: $ERR"
[ "$(printf '%s' "$OUT" | json_get 'j["name"]')" = v ] || fail "(b) the show lacks v: $OUT"
cl_wait_nodes_alive 4 30
cl_stop_all
