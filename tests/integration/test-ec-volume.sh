#!/usr/bin/env bash
# Erasure-coded volumes end to end (issue 4; DESIGN.md invariants 1, 3, 5, 6):
# create, attach, degraded reads and writes with m chunk nodes dead, resync,
# scrub, and the errors of bad layouts.
#
#  1. 4 nodes (zones z1..z4).  Bad input, each a clear error and nothing
#     created: --ec 0+1, 17+1, 4+5, 4x2, --ec with --replicas, --stripe-unit
#     3K and 2M (CLI, exit 2); 4+2 on 4 zones (tesserad: "needs 6 nodes in
#     distinct zones, the cluster has 4", exit 1, no copy on any node).
#  2. 2+1 round trip on 3 of them: each copy is a chunk volume of half the
#     size; a pattern written through NBD reads back; show/list print the
#     layout.
#  3. two more nodes (6 zones).  A 4+2 volume, 48 MiB, 64 KiB unit, attached
#     on n1: a seeded pattern over the whole volume; two chunk nodes (n5, n6,
#     not the coordinator) are killed with SIGKILL; the whole volume reads
#     back unchanged (sha256); partial- and full-stripe writes go on while
#     degraded; status: stripes_degraded > 0, degraded_reads > 0; every byte
#     still as expected.
#  4. n5 and n6 restart; the copies resync; stripes_degraded returns to 0;
#     scrub --no-repair finds 0 mismatches, 0 unrepaired; data as expected.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy qemu-io

# no_copy_anywhere VOL: no node's store holds a copy of VOL.
no_copy_anywhere() {
	local i
	for (( i=1; i<=CL_N; i++ )); do
		cl_copy_size "$i" "$1" >/dev/null 2>&1 && fail "n$i holds a copy of '$1' after a refused create"
	done
	ctsr --json volume list | json_get '[v["name"] for v in j["volumes"]]' | grepq "\"$1\"" &&
		fail "volume '$1' is listed after a refused create"
	return 0
}

# --peer-timeout 5000 (tesserad's default; cluster.sh's 2000 otherwise): a
# chunk node slower than 2 s to answer an attach's OPEN on a loaded machine
# fails that attach (fewer than 4 of a 4+2 volume's copies open), and the
# attaches here are not retried.  (Until 9f91ed4 such a copy was also
# recorded out of sync, and no later attach could succeed.)  No step here
# waits for the timeout (nodes are killed, not frozen).
cl_start 4 --peer-timeout 5000

# ---- 1. bad input
expect_fail 2 'K \(data chunks per stripe\) must be 1 to 16' ctsr volume create bad --size 16M --ec 0+1
expect_fail 2 'K \(data chunks per stripe\) must be 1 to 16' ctsr volume create bad --size 16M --ec 17+1
expect_fail 2 'M \(parity chunks.*\) must be 1 to 4' ctsr volume create bad --size 16M --ec 4+5
expect_fail 2 'give K\+M.*e\.g\. --ec 4\+2' ctsr volume create bad --size 16M --ec 4x2
expect_fail 2 'give K\+M' ctsr volume create bad --size 16M --ec 4+
expect_fail 2 'exclude each other' ctsr volume create bad --size 16M --ec 2+1 --replicas 3
expect_fail 2 'power of 2 from 4K to 1M' ctsr volume create bad --size 16M --ec 2+1 --stripe-unit 3K
expect_fail 2 'power of 2 from 4K to 1M' ctsr volume create bad --size 16M --ec 2+1 --stripe-unit 2M
expect_fail 2 'goes with --ec' ctsr volume create bad --size 16M --stripe-unit 64K
expect_fail 2 'min-replicas 1 with --ec 2\+1: give 2 to 3' \
	ctsr volume create bad --size 16M --ec 2+1 --min-replicas 1
expect_fail 1 'ec 4\+2 needs 6 nodes in distinct zones, the cluster has 4' \
	ctsr volume create bad --size 16M --ec 4+2 --failure-domain zone
expect_fail 1 'ec 4\+2 needs 6 distinct nodes, the cluster has 4' \
	ctsr volume create bad --size 16M --ec 4+2
no_copy_anywhere bad
grep -q -- '--ec K+M' <<<"$(ctsr volume create --help)" || fail "volume create --help does not teach --ec"

# ---- 2. 2+1 round trip
ctsr volume create small --size 8M --ec 2+1 --stripe-unit 16K --failure-domain zone >/dev/null ||
	fail "create 2+1"
show=$(ctsr volume show small) || fail "show small"
printf '%s\n' "$show" | grepq 'ec 2+1 (16 KiB unit)' || fail "show does not print the layout: $show"
ctsr volume list | grep -E '^small .*ec 2\+1 \(16 KiB unit\)' >/dev/null ||
	fail "list does not print the layout: $(ctsr volume list)"
json=$(ctsr --json volume show small) || fail "show --json"
assert_eq "$(printf '%s' "$json" | json_get '[j["ec_k"], j["ec_m"], j["stripe_unit"], len(j["copies"])]')" \
	"[2, 1, 16384, 3]" "show --json geometry"
read -r -a SC <<<"$(printf '%s' "$json" | json_get '" ".join(c["node"] for c in j["copies"])')"
for n in "${SC[@]}"; do
	assert_eq "$(cl_copy_size "${n#n}" small)" $(( 4 << 20 )) "chunk volume of small on $n"
done
ctsr volume attach small --node "${SC[0]}" >/dev/null || fail "attach small"
cl_pattern "$CL_ROOT/small.img" $(( 8 << 20 )) 21
nbdcopy "$CL_ROOT/small.img" "$(cl_nbd_uri "${SC[0]#n}" small)" || fail "write small"
cl_assert_image "${SC[0]#n}" small "$CL_ROOT/small.img" "2+1"
ctsr volume detach small >/dev/null || fail "detach small"
ctsr volume delete small >/dev/null || fail "delete small"
no_copy_anywhere small

# ---- 3. 4+2 on 6 zones, two chunk nodes killed
for i in 5 6; do
	CL_PORT[$i]=$(free_port)
	cl_start_node "$i" --peer-timeout 5000
done
CL_N=6
cl_wait_nodes_alive 6
SIZE=$(( 48 << 20 ))
ctsr volume create ev --size 48M --ec 4+2 --failure-domain zone >/dev/null || fail "create 4+2"
read -r -a C <<<"$(ctsr --json volume show ev | json_get '" ".join(c["node"] for c in j["copies"])')"
[ "${#C[@]}" = 6 ] || fail "want 6 chunk copies, got: ${C[*]}"
for n in "${C[@]}"; do
	assert_eq "$(cl_copy_size "${n#n}" ev)" $(( 12 << 20 )) "chunk volume of ev on $n"
done
ctsr volume attach ev --node n1 >/dev/null || fail "attach ev"
cl_pattern "$CL_ROOT/ev.img" "$SIZE" 42
nbdcopy "$CL_ROOT/ev.img" "$(cl_nbd_uri 1 ev)" || fail "write the pattern"
cl_assert_image 1 ev "$CL_ROOT/ev.img" "healthy"

log "killing n5 and n6 (SIGKILL): two of six chunk nodes"
cl_kill 5
cl_kill 6
cl_assert_image 1 ev "$CL_ROOT/ev.img" "degraded read"
# partial stripe (4 KiB in the middle of a chunk), a chunk, full stripes, a range across stripes
cl_qemu_io 1 ev "write -P 0xa1 1052672 4k" "write -P 0xb2 4194304 64k" \
	"write -P 0xc3 8388608 1M" "write -P 0xd4 20971520 300k" >/dev/null ||
	fail "writes while degraded"
cl_patch "$CL_ROOT/ev.img" 1052672 4096 0xa1
cl_patch "$CL_ROOT/ev.img" 4194304 65536 0xb2
cl_patch "$CL_ROOT/ev.img" 8388608 1048576 0xc3
cl_patch "$CL_ROOT/ev.img" 20971520 307200 0xd4
cl_wait_state ev n5 out-of-sync 15
cl_wait_state ev n6 out-of-sync 15
cl_assert_image 1 ev "$CL_ROOT/ev.img" "read after degraded writes"
st=$(ctsr --json volume status ev) || fail "status"
deg=$(printf '%s' "$st" | json_get 'j["stripes_degraded"]')
dreads=$(printf '%s' "$st" | json_get 'j["degraded_reads"]')
total=$(printf '%s' "$st" | json_get 'j["stripes_total"]')
log "degraded: $deg of $total stripes, $dreads degraded reads"
assert_eq "$total" $(( SIZE / (4 * 65536) )) "stripes_total"
[ "$deg" -gt 0 ] || fail "stripes_degraded is $deg with two chunk nodes dead: $st"
[ "$dreads" -gt 0 ] || fail "degraded_reads is $dreads after reading with two chunk nodes dead"
ctsr volume status ev | grep -E '^stripes: +[0-9]+ total, [1-9][0-9]* degraded' >/dev/null ||
	fail "status text lacks the stripes line: $(ctsr volume status ev)"

# ---- 4. the nodes return
cl_start_node 5
cl_start_node 6
cl_wait_synced ev 120
st=$(ctsr --json volume status ev) || fail "status after resync"
assert_eq "$(printf '%s' "$st" | json_get 'j["stripes_degraded"]')" 0 "stripes_degraded after resync"
assert_eq "$(printf '%s' "$st" | json_get 'j["stripes_rebuilding"]')" 0 "stripes_rebuilding after resync"
cl_scrub_clean ev "after the resync"
ctsr volume scrub ev --no-repair 2>/dev/null | grepq 'stripes of ec 4+2 checked' ||
	fail "scrub text does not speak of stripes"
cl_assert_image 1 ev "$CL_ROOT/ev.img" "after resync"
# the returned nodes' chunks are right on their own: read with two others dead
cl_kill 2
cl_kill 3
cl_assert_image 1 ev "$CL_ROOT/ev.img" "decoded from n1, n4, n5, n6"
cl_start_node 2
cl_start_node 3
cl_wait_synced ev 120
ctsr volume detach ev >/dev/null || fail "detach ev"
