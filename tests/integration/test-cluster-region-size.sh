#!/usr/bin/env bash
# Per-volume dirty-bitmap region (`tessera volume create --region-size`,
# VolumeRecord.region_size): a copy that was away resyncs whole regions of
# the volume's size, mirror and ec alike; a bad size is refused at create with
# nothing created; `volume show` (text and --json) prints it; a clone has its
# source's.
#
# Before the option existed every cluster volume had 1 MiB regions (attach.c
# set neither mo.region_size nor eo.region_size) and the create below fails.
#
# 3 nodes; a 512 MiB 3-replica volume m and a 512 MiB ec 2+1 volume e (chunk
# copies of 256 MiB), both --region-size 128M, attached on n1.
#  1. bad sizes refused (not a power of 2, below 64K, above 2G, an ec region
#     below its stripe unit): exit 2 with the range, nothing created; show
#     prints 128 MiB for m and e, 1 MiB for a volume made without the option;
#  2. n3 stopped (its copies out of sync); four 4 KiB writes per volume at
#     1M, 2M, 300M and 300M+64K (mirror regions 0, 0, 2, 2; ec stripes 8, 16,
#     2400 (both data chunks): chunk offsets 512K, 1M, 150M, regions 0, 0, 1;
#     every chunk copy of stripe 2400 is written, and of stripes 8 and 16
#     together, so n3's copy has both regions dirty wherever its chunk is in
#     the rotation); n3 back, resynced: 2 regions each; the
#     mirror walks each region whole, copying its 32 MiB pieces with data
#     (64 MiB) and trimming the holes; ec rebuilds every stripe of each region
#     (256 MiB of n3's chunk copy).  With 1 MiB regions (the code before, or
#     attach.c not passing the record's size): mirror 3 regions, 3 MiB; ec 2
#     or 3 regions (as n3's chunk position), 2 or 3 MiB;
#  3. the writes read back, also with n2 stopped (from n3's resynced copy;
#     ec: decoded with n3's chunks); scrub clean;
#  4. a clone of m has 128 MiB regions; one asking another size is refused.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd qemu-io

RS_ARG=128M
RS=$(( 128 << 20 ))

cl_start 3
ctsr volume create m --size 512M --replicas 3 --region-size "$RS_ARG" >/dev/null ||
	fail "create m --region-size $RS_ARG"
ctsr volume create e --size 512M --ec 2+1 --region-size "$RS_ARG" >/dev/null ||
	fail "create e --ec 2+1 --region-size $RS_ARG"
ctsr volume create plain --size 64M --replicas 2 >/dev/null || fail "create plain"

# ---- 1. bad sizes refused, nothing created; show prints the region
expect_fail 2 "--region-size 96K: a power of 2 from 64K to 2G" \
	ctsr volume create bad --size 64M --region-size 96K
expect_fail 2 "--region-size 32K: a power of 2 from 64K to 2G" \
	ctsr volume create bad --size 64M --region-size 32K
expect_fail 2 "--region-size 4G: a power of 2 from 64K to 2G" \
	ctsr volume create bad --size 64M --region-size 4G
expect_fail 2 "--region-size 256K: a power of 2 from 512K to 2G.*at least the stripe unit" \
	ctsr volume create bad --size 64M --ec 2+1 --stripe-unit 512K --region-size 256K
names=$(ctsr --json volume list | json_get '",".join(sorted(v["name"] for v in j["volumes"]))')
assert_eq "$names" "e,m,plain" "volumes after the refused creates"
for v in m e; do
	assert_eq "$(ctsr --json volume show $v | json_get 'j["region_size"]')" "$RS" \
		"region_size of $v in volume show --json"
	ctsr volume show $v | grepq '^region: *128 MiB' ||
		fail "volume show $v: no 'region: 128 MiB' line: $(ctsr volume show $v)"
done
assert_eq "$(ctsr --json volume show plain | json_get 'j["region_size"]')" $(( 1 << 20 )) \
	"region_size of a volume made without --region-size"
ctsr volume show plain | grepq '^region: *1 MiB' || fail "volume show plain: no 'region: 1 MiB'"
log "refusals and show ok"

# ---- 2. n3 away while three 4 KiB writes land; back: whole regions resynced
ctsr volume attach m --node n1 >/dev/null || fail "attach m"
ctsr volume attach e --node n1 >/dev/null || fail "attach e"
cl_stop 3
cl_wait_state m n3 out-of-sync 30
cl_wait_state e n3 out-of-sync 30
for v in m e; do
	cl_qemu_io 1 $v "write -P 0x5a 1M 4k" "write -P 0x5b 2M 4k" "write -P 0x5c 300M 4k" \
		"write -P 0x5d $(( (300 << 20) + (64 << 10) )) 4k" >/dev/null || fail "writes to $v with n3 away"
done
cl_start_node 3
cl_wait_synced m 120
cl_wait_synced e 120
got_m=$(vstatus m '"%d %d" % (j["resync_regions_copied"], j["resync_bytes_copied"])')
got_e=$(vstatus e '"%d %d" % (j["resync_regions_copied"], j["resync_bytes_copied"])')
log "resync of n3 (regions, bytes copied): m $got_m, e $got_e"
# the mirror walks each dirty region whole in pieces of 32 MiB (TSR_MAX_IO):
# a piece that is a hole on the source is trimmed on n3, not counted, so one
# piece with data per dirty region; ec rebuilds every stripe of a dirty
# region (a stripe unit of n3's chunk each): the whole region
assert_eq "m $got_m, e $got_e" "m 2 $(( 2 * (32 << 20) )), e 2 $(( 2 * RS ))" \
	"regions and bytes the resync of n3 copied"

# ---- 3. data read back, from n3's copy too; scrub clean
check_reads() {
	local v
	for v in m e; do
		cl_qemu_io 1 $v "read -P 0x5a 1M 4k" "read -P 0x5b 2M 4k" "read -P 0x5c 300M 4k" \
			"read -P 0x5d $(( (300 << 20) + (64 << 10) )) 4k" "read -P 0 1028k 4k" "read -P 0 299M 4k" | grepq "Pattern verification failed" &&
			fail "$v reads back wrong ($1)"
	done
	return 0
}
check_reads "all copies in sync"
for v in m e; do
	cl_scrub_clean $v "after n3's resync"
done
cl_stop 2
cl_wait_state m n2 out-of-sync 30
cl_wait_state e n2 out-of-sync 30
check_reads "n2 down: from n1 and n3"
cl_start_node 2
cl_wait_synced m 120
cl_wait_synced e 120

# ---- 4. a clone has its source's region size
ctsr volume create mc --from-volume m >/dev/null || fail "clone m"
assert_eq "$(ctsr --json volume show mc | json_get 'j["region_size"]')" "$RS" "region_size of m's clone"
expect_fail 1 "region size \(128 MiB\)" ctsr volume create mc2 --from-volume m --region-size 1M
ctsr volume detach m >/dev/null || fail "detach m"
ctsr volume detach e >/dev/null || fail "detach e"
cl_stop_all
