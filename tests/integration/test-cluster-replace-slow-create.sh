#!/usr/bin/env bash
# A replace-replica onto a node that is healthy (alive by its lease) but whose
# disk is slow succeeds (review 16a, F1).  The target's fsync/fdatasync calls
# are each delayed 0.7 s (strace fault injection), so a store copy's create
# takes a few seconds, longer than the peer timeout (2000 ms here).  Since
# 5066a18 the new copy's create was bounded by the peer timeout: every try
# answered "did not answer in 2000 ms to create the copy", and the retry
# deleted the late copy and timed out again.  The create is bounded by
# CLUSTER_COPY_TIMEOUT_MS (30 s) again (engine/cluster/volume.c
# replace_create_timeout_ms), still without blocking the loop.
#   4 nodes, v (2 replicas, min 1) detached, its copies moved off n1 (and in
#   sync: attached once, so that neither is the last in-sync copy): the
#   replace O --to X through n1 answers 0 at the first try (3 tries allowed
#   before failing, as the reviewer's reproducer), vol/v lists X.
# On b8ab404 (the peer-timeout bound): 3 tries out of 3 refused.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd strace
DELAY_US=700000

cl_start 4
ctsr volume create v --size 8M --replicas 2 --min-replicas 1 >/dev/null || fail "volume create v"
rec_nodes() { cl_rec_nodes v; }
free_node() { cl_free_node v; }
cl_move_off_n1 v synced
read -r O P <<<"$(rec_nodes)"
X=$(free_node) || fail "no free node"
XPID=${CL_PID[${X#n}]}
log "copies $O $P, target $X (pid $XPID): its fsyncs delayed ${DELAY_US} us"
strace -f -qq -o /dev/null -p "$XPID" -e trace=fsync,fdatasync \
	-e inject=fsync,fdatasync:delay_enter="$DELAY_US" &
SPID=$!
on_exit "kill $SPID 2>/dev/null"
sleep 1
ok=
for (( i=1; i<=3; i++ )); do
	t0=$SECONDS
	out=$(timeout 60 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
		volume replace-replica v --node "$O" --to "$X" 2>&1) && rc=0 || rc=$?
	log "try $i: replace-replica v --node $O --to $X (slow disk): status $rc in \
$(( SECONDS - t0 )) s: $out"
	if [ "$rc" = 0 ]; then ok=1; break; fi
	sleep 3 # the late create (or delete) lands meanwhile
done
kill "$SPID" 2>/dev/null
wait "$SPID" 2>/dev/null
[ -n "$ok" ] || fail "replace-replica onto $X, a healthy node with a slow disk, refused 3 times \
(its copy's create bounded shorter than it takes)"
[ "$(rec_nodes)" = "$X $P" ] || fail "vol/v lists '$(rec_nodes)', want '$X $P'"
cl_copy_size "${X#n}" v >/dev/null || fail "$X holds no copy of v"
cl_stop_all
log PASS
