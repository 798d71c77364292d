#!/usr/bin/env bash
# The leftover sweep never judges a data dir run under another node id
# (engine/cluster/sweep.c): DIR/cluster.joined names the cluster AND the node
# id the dir joined as; a run with another --node-id turns the sweep off with
# a WARN (the records list the dir's copies under the old id: every one would
# look unlisted).  Before: the first pass after such a restart deleted every
# copy of the dir, data files included (session-13 review, finding 1).
#   3 nodes, --leftover-grace 2; v (3 replicas) written; n3 restarted on the
#   same dir with --node-id n3-renamed: the WARN, no copy removed after several
#   sweep intervals past the grace, n3's store still holds v; n3 restarted as
#   n3 again: the sweep is on (listed copies left alone), v reads back as
#   written, scrub clean (n3's copy compared with the others).
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
cl_start_node 3
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
LINES=$(wc -l <"$(cl_dir 3)/tesserad.log")
cl_start_node 3
cl_wait_synced v
sleep $((3 * G + 2))
tail -n +"$((LINES + 1))" "$(cl_dir 3)/tesserad.log" | grep -q "leftover sweep off" &&
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
