#!/usr/bin/env bash
# `tessera node list` shows each node's ALLOCATED: the bytes its store's
# volumes have on disk (all their files: heads, snapshot layers, hidden
# volumes; tsr_store_allocated), asked from the node
# (its Status, field allocated; the node answering the list counts its own
# store).  Before, the column was always 0 B.
#   - 2 nodes, a 64 MiB 2-replica volume attached on n1, 8 MiB written
#     through NBD and flushed: in `--json node list` (asked through n1 and
#     through n2) each node's allocated is at least 8 MiB and below 64 MiB +
#     1 MiB, and equals what the node's own `--json status` reports; the
#     text table shows no "0 B" in the ALLOCATED column;
#   - a second volume written (4 MiB more): each node's allocated grows by
#     at least 4 MiB;
#   - a snapshot of the first, then its 8 MiB overwritten: each node's
#     allocated grows by at least 8 MiB more (the snapshot layer's copies:
#     ALLOCATED counts every file of the node's volumes, not only heads).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd qemu-io

MiB=1048576
cl_start 2

ctsr volume create a --size 64M --replicas 2 >/dev/null || fail "volume create a"
ctsr volume attach a --node n1 >/dev/null || fail "volume attach a"
qemu-io -f raw -c "write -P 0x5a 0 8M" -c flush "$(cl_nbd_uri 1 a)" >/dev/null ||
	fail "qemu-io write a"

# alloc_via I NODE: NODE's allocated in `--json node list` asked through node I
alloc_via() { ctsr_via "$1" --json node list | json_get "[n['allocated'] for n in j['nodes'] if n['id']=='$2'][0]"; }
# own I: node I's allocated from its own `--json status`
own() { tsr "$(cl_dir "$1")" --json status | json_get 'j["allocated"]'; }

declare -A first
for n in 1 2; do
	a1=$(alloc_via 1 "n$n") || fail "node list via n1"
	a2=$(alloc_via 2 "n$n") || fail "node list via n2"
	log "n$n: allocated $a1 (via n1), $a2 (via n2)"
	[ "$a1" -ge $((8 * MiB)) ] || fail "n$n: allocated $a1 < 8 MiB after 8 MiB written"
	[ "$a1" -lt $((65 * MiB)) ] || fail "n$n: allocated $a1 >= 65 MiB for a 64 MiB volume"
	o=$(own "$n") || fail "status of n$n"
	log "n$n: allocated $o in its own status"
	assert_eq "$a2" "$a1" "n$n: allocated via n2 and via n1"
	assert_eq "$o" "$a1" "n$n: allocated in node list and in its own status"
	first[$n]=$a1
done

# the text table: each node's ALLOCATED, the size after PROVISIONED's
table=$(ctsr node list) || fail "node list"
log "node list:"$'\n'"$table"
cells=$("$PY" - "$table" <<'EOF'
import re, sys
rows = sys.argv[1].splitlines()[1:]
size = r"[0-9.]+ [KMGTPE]?i?B"
for r in rows:
    m = re.search(r"(yes|NO)\s+(yes|-)\s+(%s)\s+(%s)\s+(%s|-)\s" % (size, size, size), r)
    print(r.split()[0], m.group(5) if m else "?")
EOF
) || fail "parse node list"
log "ALLOCATED: $(tr '\n' ' ' <<<"$cells")"
while read -r id cell; do
	case $cell in
	"?") fail "node list row of $id: no ALLOCATED size found: $table" ;;
	"0 B") fail "node list shows ALLOCATED 0 B for $id" ;;
	esac
done <<<"$cells"

# more data: both grow
ctsr volume create b --size 16M --replicas 2 >/dev/null || fail "volume create b"
ctsr volume attach b --node n2 >/dev/null || fail "volume attach b"
qemu-io -f raw -c "write -P 0xa5 0 4M" -c flush "$(cl_nbd_uri 2 b)" >/dev/null ||
	fail "qemu-io write b"
for n in 1 2; do
	a=$(alloc_via 1 "n$n") || fail "node list"
	log "n$n: allocated $a after 4 MiB more"
	[ "$a" -ge $((first[$n] + 4 * MiB)) ] || fail "n$n: allocated $a, want >= ${first[$n]} + 4 MiB"
	first[$n]=$a
done

# a snapshot of a, then a's 8 MiB overwritten: the old bytes are copied into
# the snapshot's layer on each node, which ALLOCATED counts (all of a node's
# volume files; before, only the heads' data, which stay the same)
ctsr snapshot create a s1 >/dev/null || fail "snapshot create a s1"
qemu-io -f raw -c "write -P 0x3c 0 8M" -c flush "$(cl_nbd_uri 1 a)" >/dev/null ||
	fail "qemu-io overwrite a"
for n in 1 2; do
	a=$(alloc_via 1 "n$n") || fail "node list"
	o=$(own "$n") || fail "status of n$n"
	log "n$n: allocated $a after a snapshot and 8 MiB overwritten (own status: $o)"
	[ "$a" -ge $((first[$n] + 8 * MiB)) ] ||
		fail "n$n: allocated $a, want >= ${first[$n]} + 8 MiB (the snapshot's layer)"
done
cl_stop_all
