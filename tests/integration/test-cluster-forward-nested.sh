#!/usr/bin/env bash
# A request forwarded from node A to the coordinator B must not make B call
# back A: A's control loop waits for B's answer.  replace-replica sent to a
# node that holds the volume's first in-sync copy, while the volume is
# attached on a node with no copy: the coordinator reads the snapshot list
# the new copy must get from a node with an in-sync copy, and before the fix
# picked the forwarding node (the first in the record), which could not
# answer: the command failed after the 60 s forward timeout ("did not answer
# within 60 s").  Now the forwarded request names the node it came through
# (Request.via_node) and the coordinator asks another copy's node.
#   3-replica v on n1..n3, attached on n4 (no copy), snapshot s1;
#   `replace-replica v --node n3 --to n5` sent to n1: it succeeds, n5's copy
#   holds s1 once in sync, and reads back the volume's image; a snapshot
#   list asked through n4 works as before.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd qemu-io

cl_start 3
ctsr volume create v --size 8M --replicas 3 >/dev/null || fail "volume create"
CL_PORT[4]=$(free_port)
CL_PORT[5]=$(free_port)
cl_start_node 4
cl_start_node 5
CL_N=5
cl_wait_nodes_alive 5
assert_eq "$(cl_copy_nodes v)" "n1,n2,n3" "v's copies"
first=$(ctsr --json volume show v | json_get 'j["copies"][0]["node"]')
log "first copy in the record: $first"
ctsr volume attach v --node n4 >/dev/null || fail "attach v on n4"
qemu-io -f raw -c "write -P 0x3c 0 8M" -c flush "$(cl_nbd_uri 4 v)" >/dev/null ||
	fail "write v"
ctsr snapshot create v s1 >/dev/null || fail "snapshot create v s1"
sha_v=$(cl_image_sha 4 v) || fail "read v"

# sent to the first copy's node: it forwards to n4, which must not ask it back
victim=n3
[ "$first" = n3 ] && victim=n2
n=${first#n}
out=$(ctsr_via "$n" volume replace-replica v --node "$victim" --to n5 2>&1) ||
	fail "replace-replica sent to $first: $out"
log "replace-replica $victim -> n5 through $first: accepted"
cl_wait_synced v 60
snaps=$(cl_snaps_of 5 v) || fail "n5's catalogue"
assert_eq "$snaps" "s1" "snapshots n5's new copy holds"
assert_eq "$(cl_image_sha 4 v)" "$sha_v" "v after the replace"
ctsr_via 4 snapshot list v >/dev/null || fail "snapshot list through n4"
cl_stop_all
log "PASS"
