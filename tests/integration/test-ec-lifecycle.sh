#!/usr/bin/env bash
# The rest of an erasure-coded volume's life in a cluster: snapshots, clones,
# rollback, resize and the rebuild of a chunk copy on another node
# (replace-replica), each checked on the data read back.
#
# 4 nodes (zones z1..z4); a 2+1 volume of 8 MiB with a 16 KiB unit on 3 of
# them, attached on its first copy node.
#  1. pattern A written; snapshot s1 cut through the coordinator's gate;
#     `snapshot list` shows it at the volume's size (not a chunk's) and with
#     the coordinator's NBD export only; `snapshot diff` to the head is empty.
#  2. pattern B over the first 3 MiB; clone c1 of v@s1 and clone c2 of v as
#     it is: both ec 2+1 with the same unit and chunk copies on the same
#     nodes in the same order; c1 reads A, c2 reads B over A.
#  3. detach, rollback to s1, attach: v reads A again.
#  4. detach, resize to 12 MiB (every chunk volume grows to 6 MiB; a shrink is
#     refused), attach: the first 8 MiB read A, the rest zeros; a write at the
#     end reads back.
#  5. a chunk node other than the coordinator is killed; replace-replica moves
#     its copy to the fourth node, rebuilt from the other two (each chunk
#     decoded); in sync; with another chunk node killed the volume still
#     reads back (the rebuilt chunks are right).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy qemu-io

copies_of() { ctsr --json volume show "$1" | json_get '" ".join(c["node"] for c in j["copies"])'; }

cl_start 4
ctsr volume create v --size 8M --ec 2+1 --stripe-unit 16K --failure-domain zone >/dev/null ||
	fail "create"
read -r -a C <<<"$(copies_of v)"
coord=${C[0]#n}
ctsr volume attach v --node "n$coord" >/dev/null || fail "attach"
A=$CL_ROOT/a.img
cl_pattern "$A" $(( 8 << 20 )) 1
nbdcopy "$A" "$(cl_nbd_uri "$coord" v)" || fail "write A"

# ---- 1. snapshot through the gate
ctsr snapshot create v s1 >/dev/null || fail "snapshot create (attached)"
list=$(ctsr --json snapshot list v) || fail "snapshot list"
assert_eq "$(printf '%s' "$list" | json_get '[(s["name"], s["size"]) for s in j["snapshots"]]')" \
	'[["s1", 8388608]]' "snapshot list of an ec volume"
# its export is the coordinator's (the decoded image; test-ec-snapshot reads it)
assert_eq "$(printf '%s' "$list" | json_get 'j["snapshots"][0]["nbd_uris"]')" \
	"[\"$(cl_nbd_uri "$coord" v@s1)\"]" "snapshot list of an ec volume: NBD URI"
assert_eq "$(ctsr --json snapshot diff v s1 --head | json_get 'j["extents"]')" '[]' \
	"diff of the ec volume right after its snapshot (test-ec-snapshot has the rest)"

# ---- 2. clones
B=$CL_ROOT/b.img
cp "$A" "$B"
cl_qemu_io "$coord" v "write -P 0x5b 0 3M" >/dev/null || fail "write B"
cl_patch "$B" 0 $(( 3 << 20 )) 0x5b
ctsr volume create c1 --from-snapshot v@s1 >/dev/null || fail "clone of v@s1"
ctsr volume create c2 --from-volume v >/dev/null || fail "clone of v"
for c in c1 c2; do
	j=$(ctsr --json volume show "$c") || fail "show $c"
	assert_eq "$(printf '%s' "$j" | json_get '[j["ec_k"], j["ec_m"], j["stripe_unit"], j["layout"]]')" \
		'[2, 1, 16384, "ec 2+1 (16 KiB unit)"]' "$c geometry"
	assert_eq "$(copies_of "$c")" "${C[*]}" "$c chunk copies (nodes and order)"
done
expect_fail 1 'has its ec 2\+1 layout' ctsr volume create c3 --from-volume v --ec 4+2
ctsr volume attach c1 --node n2 >/dev/null || fail "attach c1"
ctsr volume attach c2 --node n3 >/dev/null || fail "attach c2"
cl_assert_image 2 c1 "$A" "clone of the snapshot"
cl_assert_image 3 c2 "$B" "clone of the volume"
for c in c1 c2; do
	ctsr volume detach "$c" >/dev/null || fail "detach $c"
	ctsr volume delete "$c" >/dev/null || fail "delete $c"
done

# ---- 3. rollback
ctsr volume detach v >/dev/null || fail "detach for rollback"
ctsr volume rollback v s1 >/dev/null || fail "rollback"
ctsr volume attach v --node "n$coord" >/dev/null || fail "attach after rollback"
cl_assert_image "$coord" v "$A" "after rollback"

# ---- 4. resize
ctsr volume detach v >/dev/null || fail "detach for resize"
expect_fail 1 'can only grow' ctsr volume resize v --size 4M
ctsr volume resize v --size 12M >/dev/null || fail "resize"
for n in "${C[@]}"; do
	assert_eq "$(cl_copy_size "${n#n}" v)" $(( 6 << 20 )) "chunk volume of v on $n after resize"
done
ctsr volume attach v --node "n$coord" >/dev/null || fail "attach after resize"
head -c $(( 4 << 20 )) /dev/zero >>"$A"
cl_assert_image "$coord" v "$A" "after resize"
cl_qemu_io "$coord" v "write -P 0x7e 12517376 65536" >/dev/null || fail "write at the new end"
cl_patch "$A" 12517376 65536 0x7e
cl_assert_image "$coord" v "$A" "written at the new end"

# ---- 5. rebuild a chunk copy elsewhere
spare=
for (( i=1; i<=4; i++ )); do [[ " ${C[*]} " == *" n$i "* ]] || spare=$i; done
victim=${C[1]#n}
cl_kill "$victim"
cl_wait_state v "n$victim" out-of-sync 20
ctsr volume replace-replica v --node "n$victim" --to "n$spare" >/dev/null || fail "replace-replica"
cl_wait_synced v 120
read -r -a C2 <<<"$(copies_of v)"
assert_eq "${C2[1]}" "n$spare" "the replaced copy keeps its chunk position"
assert_eq "$(cl_copy_size "$spare" v)" $(( 6 << 20 )) "rebuilt chunk volume size"
cl_assert_image "$coord" v "$A" "after the rebuild"
other=${C[2]#n}
cl_kill "$other"
cl_assert_image "$coord" v "$A" "decoded with the rebuilt chunk copy"
cl_start_node "$other"
cl_start_node "$victim"
cl_wait_synced v 120
ctsr volume detach v >/dev/null || fail "detach"
