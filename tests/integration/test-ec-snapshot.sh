#!/usr/bin/env bash
# Snapshots of an erasure-coded volume read back and diffed (issues 4 and 5):
# the coordinator node serves VOL@SNAP read-only, each data chunk read from
# its copy's snapshot (peer sessions on "VOL@SNAP", or this node's store) and
# decoded from k others when a chunk node is down; `snapshot diff` is the
# union of the chunk copies' diffs mapped back to volume offsets.
#
# 6 nodes (zones z1..z6); a 4+2 volume of 8 MiB with a 16 KiB unit (64 KiB
# stripes), attached on n1.
#  1. pattern A over the whole volume; snapshot s1; writes that each stay
#     inside one data chunk or cover whole chunks (so the stripe path writes
#     exactly those blocks): 8 KiB inside a chunk of stripe 1, a full stripe
#     plus the next stripe's first chunk at 1 MiB, the last 4 KiB block;
#     snapshot s2.
#  2. v@s1 read whole through the coordinator's NBD socket equals A (not
#     the head, nbdcopy and qemu-img compare); v@s2 and v equal B; `snapshot
#     show` gives the coordinator's URI; a write to v@s1 is refused; a
#     chunk node's own v@s1 is refused (nbdinfo, nbdcopy), and so is a
#     snapshot of a clone of v on a chunk node.
#  3. diff s1 --head and s1 s2 are exactly the three written ranges (offsets,
#     lengths, data); s2 --head is empty; bad input: an unknown snapshot,
#     snapshots in the wrong order.
#  4. one chunk node (not the coordinator) killed: v@s1 still equals A
#     (decoded); the diff still covers every written range and reports
#     nothing outside the stripes written (the dead copy's chunks counted
#     from the parity chunks' diffs).  A second chunk node killed (m = 2):
#     v@s1 still equals A; a third would leave fewer than k.  Once v is
#     detached, the former coordinator refuses v@s1 too.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy nbdinfo qemu-io qemu-img

image_sha() { nbdcopy "$(cl_nbd_uri "$1" "$2")" - | sha256sum | cut -d' ' -f1; }
assert_image() {
	local got
	got=$(image_sha "$1" "$2") || fail "$4: cannot read $2 through n$1"
	[ "$got" = "$(sha256 "$3")" ] || fail "$4: $2 read through n$1 differs from the expected image"
	log "$4: $2 reads back as expected"
}
copies_of() { ctsr --json volume show "$1" | json_get '" ".join(c["node"] for c in j["copies"])'; }
# diff_pairs ARGS...: `snapshot diff ARGS --json` as "offset:length:zero ...".
diff_pairs() {
	ctsr --json snapshot diff "$@" |
		json_get '" ".join("%d:%d:%s" % (e["offset"], e["length"], "z" if e["zero"] else "d") for e in j["extents"])'
}

KiB=1024
MiB=$(( 1024 * 1024 ))
SIZE=$(( 8 * MiB ))
WIDTH=$(( 64 * KiB ))

cl_start 6
ctsr volume create v --size 8M --ec 4+2 --stripe-unit 16K --failure-domain zone >/dev/null ||
	fail "create"
# attached on n1 (the meta node, never killed); the chunk nodes killed in 4
# are the other copies' nodes
coord=1
ctsr volume attach v --node n1 >/dev/null || fail "attach"
read -r -a OTHERS <<<"$(copies_of v | tr ' ' '\n' | grep -vx n1 | tr '\n' ' ')"
[ "${#OTHERS[@]}" = 5 ] || fail "expected 5 chunk copies besides n1: ${OTHERS[*]}"

# ---- 1. A, s1, the writes, s2
A=$CL_ROOT/a.img
B=$CL_ROOT/b.img
cl_pattern "$A" "$SIZE" 7
nbdcopy "$A" "$(cl_nbd_uri "$coord" v)" || fail "write A"
ctsr snapshot create v s1 >/dev/null || fail "snapshot create s1"
cp "$A" "$B"
# stripe 1, data chunk 2 (96..112 KiB), columns 4..12 KiB
W1_OFF=$(( 100 * KiB )); W1_LEN=$(( 8 * KiB ))
# stripe 16 whole and stripe 17's chunk 0
W2_OFF=$(( 1 * MiB )); W2_LEN=$(( WIDTH + 16 * KiB ))
# the last block
W3_OFF=$(( SIZE - 4 * KiB )); W3_LEN=$(( 4 * KiB ))
cl_qemu_io "$coord" v "write -P 0x5b $W1_OFF $W1_LEN" "write -P 0x6c $W2_OFF $W2_LEN" \
	"write -P 0x7d $W3_OFF $W3_LEN" >/dev/null || fail "writes after s1"
cl_patch "$B" "$W1_OFF" "$W1_LEN" 0x5b
cl_patch "$B" "$W2_OFF" "$W2_LEN" 0x6c
cl_patch "$B" "$W3_OFF" "$W3_LEN" 0x7d
ctsr snapshot create v s2 >/dev/null || fail "snapshot create s2"
cmp -s "$A" "$B" && fail "the test's own images are equal"

# ---- 2. the images
assert_image "$coord" v@s1 "$A" "snapshot s1 (the cut, not the head)"
assert_image "$coord" v@s2 "$B" "snapshot s2"
assert_image "$coord" v "$B" "the head"
# `snapshot show` names the coordinator's export; read through that URI
uri=$(ctsr --json snapshot show v s1 | json_get 'j["nbd_uris"][0]') || fail "snapshot show v s1"
assert_eq "$uri" "$(cl_nbd_uri "$coord" v@s1)" "snapshot show v s1: NBD URI"
assert_eq "$(nbdcopy "$uri" - | sha256sum | cut -d' ' -f1)" "$(sha256 "$A")" "v@s1 through its URI"
qemu-img compare -f raw -F raw "$A" "$(qemu_nbd_spec "$(cl_dir "$coord")" v@s1)" >/dev/null ||
	fail "qemu-img compare: v@s1 differs from the data at the cut"
info=$(nbdinfo --json "$(cl_nbd_uri "$coord" v@s1)") || fail "nbdinfo v@s1"
assert_eq "$(json_get 'j["exports"][0]["export-size"]' <<<"$info")" "$SIZE" "v@s1 size"
assert_eq "$(json_get 'j["exports"][0]["is_read_only"]' <<<"$info")" true "v@s1 is_read_only"
qemu-io -f raw -c 'write -P 0x66 0 4k' "$(cl_nbd_uri "$coord" v@s1)" >"$CL_ROOT/ro.out" 2>&1 &&
	fail "qemu-io write to v@s1 succeeded: $(cat "$CL_ROOT/ro.out")"
log "write to v@s1 refused: $(head -n1 "$CL_ROOT/ro.out")"
assert_image "$coord" v@s1 "$A" "snapshot s1 after the refused write"
# another node's store holds one chunk column of v, not the image: its
# v@s1 export is refused (the store copy is flagged an ec chunk at create)
other=${OTHERS[0]#n}
nbdinfo "$(cl_nbd_uri "$other" v@s1)" >"$CL_ROOT/other.out" 2>&1 &&
	fail "nbdinfo of v@s1 on chunk node n$other succeeded: $(cat "$CL_ROOT/other.out")"
nbdcopy "$(cl_nbd_uri "$other" v@s1)" - >/dev/null 2>&1 &&
	fail "nbdcopy of v@s1 on chunk node n$other succeeded"
wait_log "$other" "export v@s1 refused: this node holds one chunk of erasure-coded volume v.*attached" 5
log "v@s1 on chunk node n$other refused"
# a clone of an ec volume is ec too: its copies' snapshots are chunk columns
ctsr volume create vc --from-snapshot v@s1 >/dev/null || fail "clone vc of v@s1"
ctsr snapshot create vc cs >/dev/null || fail "snapshot create vc cs"
nbdinfo "$(cl_nbd_uri "$other" vc@cs)" >/dev/null 2>&1 &&
	fail "nbdinfo of vc@cs (clone of an ec volume) on n$other succeeded"
wait_log "$other" "export vc@cs refused: this node holds one chunk of erasure-coded volume vc" 5
log "vc@cs (an ec clone's snapshot) on n$other refused"
ctsr volume delete vc >/dev/null || fail "delete vc"

# ---- 3. diffs
WANT="$W1_OFF:$W1_LEN:d $W2_OFF:$W2_LEN:d $W3_OFF:$W3_LEN:d"
assert_eq "$(diff_pairs v s1 --head)" "$WANT" "diff s1 --head"
assert_eq "$(diff_pairs v s1 s2)" "$WANT" "diff s1 s2"
assert_eq "$(diff_pairs v s2 --head)" "" "diff s2 --head"
assert_eq "$(ctsr --json snapshot diff v s1 s2 | json_get 'j["changed_bytes"]')" \
	$(( W1_LEN + W2_LEN + W3_LEN )) "changed_bytes s1 s2"
expect_fail 1 'not found' ctsr snapshot diff v nosuch
expect_fail 1 'not found' ctsr snapshot diff v s1 nosuch
expect_fail 1 'older' ctsr snapshot diff v s2 s1

# ---- 4. degraded
# covers WANT and stays inside the stripes written: the check for a diff
# made while chunk copies are away
check_degraded_diff() {
	ctsr --json snapshot diff v s1 --head >"$CL_ROOT/diff.json" || fail "$1: diff"
	"$PY" - "$CL_ROOT/diff.json" "$WANT" "$WIDTH" "$1" <<'EOF' || fail "$1: diff check"
import json, sys
ext = json.load(open(sys.argv[1]))["extents"]
want = [tuple(int(x) for x in p.split(":")[:2]) for p in sys.argv[2].split()]
width = int(sys.argv[3])
def covered(off, ln):
    for e in ext:
        if e["offset"] <= off and off + ln <= e["offset"] + e["length"]:
            return True
    return False
stripes = set()
for off, ln in want:
    if not covered(off, ln):
        sys.exit("%s: %d+%d not in the diff %s" % (sys.argv[4], off, ln, ext))
    stripes.update(range(off // width, (off + ln - 1) // width + 1))
for e in ext:
    for s in range(e["offset"] // width, (e["offset"] + e["length"] - 1) // width + 1):
        if s not in stripes:
            sys.exit("%s: extent %s reaches stripe %d, which was not written" % (sys.argv[4], e, s))
print("%s: %d extents cover the %d written ranges, all in the written stripes" % (sys.argv[4], len(ext), len(want)))
EOF
}
cl_kill "${OTHERS[0]#n}"
log "chunk node ${OTHERS[0]} killed"
assert_image "$coord" v@s1 "$A" "snapshot s1, one chunk node dead"
# the dead copy's chunks were decoded, not read
wait_log "$coord" "ec snapshot v@s1: copy [0-9]+ \\(${OTHERS[0]}\\).*decoded from the others" 5
assert_image "$coord" v@s2 "$B" "snapshot s2, one chunk node dead"
check_degraded_diff "diff with ${OTHERS[0]} dead"
cl_kill "${OTHERS[1]#n}"
log "chunk node ${OTHERS[1]} killed"
assert_image "$coord" v@s1 "$A" "snapshot s1, two chunk nodes dead"
check_degraded_diff "diff with ${OTHERS[0]} and ${OTHERS[1]} dead"
cl_kill "${OTHERS[2]#n}"
log "chunk node ${OTHERS[2]} killed (fewer than k left)"
nbdcopy "$(cl_nbd_uri "$coord" v@s1)" - >/dev/null 2>&1 && fail "v@s1 read with 3 of 6 chunk copies"
expect_fail 1 'chunk copies could give their diff' ctsr snapshot diff v s1 --head
# detached: no node exports the image (a store's own v@s1 is a chunk column)
ctsr volume detach v >/dev/null || fail "detach"
assert_eq "$(ctsr --json snapshot show v s1 | json_get 'len(j["nbd_uris"])')" 0 \
	"snapshot show of a detached ec volume: no NBD URI"
# ... and the former coordinator's own v@s1 is a chunk column too: refused
nbdinfo "$(cl_nbd_uri "$coord" v@s1)" >"$CL_ROOT/coord.out" 2>&1 &&
	fail "nbdinfo of v@s1 on n$coord after detach succeeded: $(cat "$CL_ROOT/coord.out")"
wait_log "$coord" "export v@s1 refused: this node holds one chunk of erasure-coded volume v.*attached" 5
log "v@s1 on n$coord after detach refused"
log "ok"
