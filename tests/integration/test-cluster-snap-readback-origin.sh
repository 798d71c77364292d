#!/usr/bin/env bash
# A snapshot create through a node that holds no in-sync copy reads the new
# snapshot's description back from another node's copy (snap_show_start,
# engine/cluster/snapshot.c), skipping the node that forwarded the create
# (Request.via_node): that node waits for this answer.  When skipping it
# leaves no node to ask, the create answered through the blocking read
# (snapshot_reply), which runs where c->origin is unset and so asked the
# forwarding node after all, on the control loop, up to the peer timeout
# (review 16c N2).  Now it answers at once: the snapshot cut, its
# description not read, "none to ask but n2, which waits for this answer".
#   3 nodes; v (replicas 2, min-replicas 1) with its copies on n2 and n3
#   (n1's copy moved off), attached on n1; n3 stopped: n2 holds the only
#   alive in-sync copy.  admin_local_copy sends n1 a client's SnapshotCreate
#   with via_node n2 (as n2 forwarding it would): it must answer 0 saying
#   the description was not read, none to ask but n2; `snapshot list v`
#   lists s1.
# Before (436f022): the answer carried the description read from n2 (the
# origin asked): "want 'none to ask but n2', got '0 '".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
ADMIN_LOCAL_COPY=$TSR_BUILD/tests/admin_local_copy # admin_local_copy.c

require_tessera "$ADMIN_LOCAL_COPY"
cl_start 3
ctsr volume create v --size 8M --replicas 2 --min-replicas 1 >/dev/null ||
	fail "volume create v"
cl_move_off_n1 v
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v"
cl_wait_synced v
copies=$(cl_copy_nodes v)
assert_eq "$copies" "n2,n3" "v's copies"
cl_stop 3
for (( i=0; i<100; i++ )); do
	alive=$(ctsr --json node list 2>/dev/null |
		json_get '" ".join(sorted(n["id"] for n in j["nodes"] if n.get("alive")))' 2>/dev/null)
	[ "$alive" = "n1 n2" ] && break
	sleep 0.2
done
assert_eq "$alive" "n1 n2" "alive nodes after n3 stopped"
out=$("$ADMIN_LOCAL_COPY" --timeout 20000 "$(cl_dir 1)" snapshot-create-via v s1 n2 2>&1) ||
	fail "create v@s1 at n1 via n2: $out"
log "create v@s1 at n1, via n2: $out"
[ "${out%% *}" = 0 ] || fail "create v@s1 answered: $out"
case $out in
*"none to ask but n2"*) ;;
*) fail "the create's read-back: want 'none to ask but n2', got '$out'" ;;
esac
snaps=$(cl_snaps_of 2 v)
case " $snaps " in *" s1 "*) ;; *) fail "n2's store has no v@s1: '$snaps'" ;; esac
log "v@s1 in n2's store: $snaps"
cl_stop_all
