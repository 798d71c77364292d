#!/usr/bin/env bash
# A data dir keeps its node id (tools/tesserad/tesserad.c check_node_id), and
# the leftover sweep never judges a data dir run under another node id
# (engine/cluster/sweep.c).
# 1. tesserad refuses to start a data dir whose DIR/node.id names another node
#    than --node-id: exit status 1, a message naming both ids and what to do,
#    nothing in the dir changed (node.id still the old id).  Before, it
#    rewrote node.id silently and ran as a new, empty node (session-13 review,
#    finding 1, "better still").
# 2. DIR/cluster.joined names the cluster AND the node id the dir joined as;
#    a run under another id (the one way left: DIR/node.id removed by hand)
#    turns the sweep off with a WARN (the records list the dir's copies under
#    the old id: every one would look unlisted).  Before: the first pass after
#    such a restart deleted every copy of the dir, data files included.
#   3 nodes, --leftover-grace 2; v (3 replicas) written; n3 stopped and started
#   on its dir with --node-id n3-renamed: refused, the dir untouched; node.id
#   removed, started as n3-renamed: the WARN, no copy removed after several
#   sweep intervals past the grace, n3's store still holds v; n3 restarted as
#   n3 again (node.id put back): the sweep is on (listed copies left alone), v
#   reads back as written, scrub clean (n3's copy compared with the others).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy

G=2
cl_start 3 --leftover-grace "$G"
SIZE=$((8 << 20))
IMG=$CL_ROOT/img
cl_pattern "$IMG" "$SIZE" 53
ctsr volume create v --size 8M --replicas 3 >/dev/null || fail "volume create v"
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v"
nbdcopy "$IMG" "$(cl_nbd_uri 1 v)" || fail "nbdcopy into v"
ctsr volume detach v >/dev/null || fail "volume detach v"
grep -q " n3 " "$(cl_dir 3)/cluster.joined" ||
	fail "cluster.joined names no node id: $(cat "$(cl_dir 3)/cluster.joined")"
sleep $((G + 1)) # v's copies older than the grace

# ---- the same data dir under another node id
cl_stop 3
ARGS3=${CL_ARGS[3]}
CL_ARGS[3]=${ARGS3/--node-id n3 /--node-id n3-renamed }
[ "${CL_ARGS[3]}" != "$ARGS3" ] || fail "cannot rename n3 in: $ARGS3"
D3=$(cl_dir 3)
[ "$(cat "$D3/node.id")" = n3 ] || fail "n3's node.id holds '$(cat "$D3/node.id")'"
BEFORE=$(cd "$D3" && find . -printf '%p %s %T@ %m\n' | sort)
OUT=$CL_ROOT/renamed.out
# shellcheck disable=SC2086
"$TESSERAD" --data "$D3" ${CL_ARGS[3]} >"$OUT" 2>&1 &
RPID=$!
track_pid "$RPID"
for (( i=0; i<150; i++ )); do
	kill -0 "$RPID" 2>/dev/null || break
	sleep 0.1
done
if kill -0 "$RPID" 2>/dev/null; then
	kill -TERM "$RPID"
	reap "$RPID" || :
	tail -n 5 "$OUT"
	fail "tesserad started n3's data dir as n3-renamed (still running after 15 s)"
fi
reap "$RPID" && RC=0 || RC=$?
cat "$OUT"
[ "$RC" = 1 ] || fail "the start as n3-renamed exited with status $RC, want 1"
grep -q "holds node n3's data .*not n3-renamed's (--node-id n3-renamed)" "$OUT" ||
	fail "the refusal does not name both ids"
grep -q "Start it with --node-id n3 " "$OUT" || fail "the refusal does not say to use --node-id n3"
grep -q "Nothing changed" "$OUT" || fail "the refusal does not say nothing changed"
[ "$(cat "$D3/node.id")" = n3 ] || fail "node.id rewritten: '$(cat "$D3/node.id")'"
AFTER=$(cd "$D3" && find . -printf '%p %s %T@ %m\n' | sort)
[ "$BEFORE" = "$AFTER" ] || { diff <(echo "$BEFORE") <(echo "$AFTER"); fail "the refused start changed n3's dir"; }
log "start as n3-renamed refused (status 1, both ids named), n3's dir untouched"

# the one way left to run it under another id: node.id removed by hand
rm "$D3/node.id"
cl_start_node 3
[ "$(cat "$D3/node.id")" = n3-renamed ] || fail "node.id not written as n3-renamed"
wait_log 3 "as node n3 .*this run is node n3-renamed.*leftover sweep off" 20
sleep $((3 * G + 2)) # several sweep intervals (G/4, at least 1 s) past the grace
if grep -q "leftover copy v removed" "$(cl_dir 3)/tesserad.log"; then
	grep "leftover copy" "$(cl_dir 3)/tesserad.log"
	fail "n3 run as n3-renamed deleted its copy of v, which vol/v lists under n3"
fi
cl_copy_size 3 v >/dev/null || fail "n3's store lost its copy of v (run as n3-renamed)"
[ "$(grep -c "leftover sweep off" "$(cl_dir 3)/tesserad.log")" = 1 ] ||
	fail "the sweep-off WARN not logged exactly once"
log "run as n3-renamed: sweep off (WARN once), v's copy kept"

# ---- the right id again
cl_stop 3
CL_ARGS[3]=$ARGS3
echo n3 >"$D3/node.id" # (with n3-renamed there, --node-id n3 is refused)
LINES=$(wc -l <"$(cl_dir 3)/tesserad.log")
cl_start_node 3
cl_wait_synced v
sleep $((3 * G + 2))
tail -n +"$((LINES + 1))" "$(cl_dir 3)/tesserad.log" | grepq "leftover sweep off" &&
	fail "the sweep is still off with the right node id"
grep -q "leftover copy v removed" "$(cl_dir 3)/tesserad.log" &&
	fail "n3 deleted its listed copy of v"
cl_copy_size 3 v >/dev/null || fail "n3's store lost its copy of v"
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v"
cl_wait_synced v
cl_assert_image 1 v "$IMG" "after n3's restarts"
cl_scrub_clean v "after n3's restarts"
ctsr volume detach v >/dev/null || fail "volume detach v"
log "back as n3: v's copy intact, v reads back as written, scrub clean"
cl_stop_all
