#!/usr/bin/env bash
# Online resize: a grow that reaches the metadata record but not the
# coordinator's layout (step (e) of cluster_volume_resize fails: the test hook
# TSR_TEST_RESIZE_FAIL_FILE), and what follows (engine/cluster/volume.c and
# engine/layout/mirror.c, "recovery rule").
#  1. db 16 MiB, 3 replicas, attached on n1, a pattern written; with the hook
#     armed `resize db --size 32M` fails saying the coordinator did not grow;
#     the record and every copy are 32 MiB, the layout still 16 MiB (a new
#     connection sees 16 MiB, a write past 16 MiB is refused);
#  2. n3 away while db is written below 16 MiB (its bitmap on n1 marked, the
#     header naming 16 MiB); clean detach; n3 back; attach on n1 at the
#     recorded 32 MiB: n3's bitmap header disagrees with the record, so its
#     copy is resynced in full comparing sums (n1's log says so), copying
#     about what differs (<= 4 MiB, not 32); in sync, scrub 0, the image is the
#     pattern plus the writes; 32 MiB seen, written past 16 MiB;
#  3. armed again, `resize db --size 48M` through n2 fails at (e) again; the
#     same request, hook disarmed, through n2: the coordinator grows (record
#     already 48 MiB): 48 MiB seen, written and read past 32 MiB, scrub 0.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdinfo nbdcopy qemu-io
make_tmpdir HOOK
export TSR_TEST_RESIZE_FAIL_FILE=$HOOK/fail-layout
cl_start 3
M=$((1 << 20))
ctsr volume create db --size 16M --replicas 3 >/dev/null || fail "volume create"
ctsr volume attach db --node n1 >/dev/null || fail "attach"
URI=$(cl_nbd_uri 1 db)
EXP=$CL_ROOT/expected.img
cl_pattern "$EXP" $((16 * M)) 5
nbdcopy "$EXP" "$URI" || fail "write the pattern"
sizes() { local i s=""; for i in 1 2 3; do s+="$(cl_copy_size "$i" db) "; done; echo "${s% }"; }
rec_size() { ctsr --json volume show db | json_get 'j["size"]'; }

# ---- 1. the layout does not grow
touch "$TSR_TEST_RESIZE_FAIL_FILE"
expect_fail 1 "recorded at 32.0 MiB and its copies were grown, but its coordinator on n1 did not grow" \
	ctsr volume resize db --size 32M
assert_eq "$(rec_size)" $((32 * M)) "recorded size"
assert_eq "$(sizes)" "$((32 * M)) $((32 * M)) $((32 * M))" "copies' sizes"
assert_eq "$(nbdinfo --size "$URI")" $((16 * M)) "size seen by a new connection (layout not grown)"
if cl_qemu_io 1 db "write -P 0x11 20M 64K" >/dev/null 2>&1; then
	fail "a write past the layout's 16 MiB was accepted"
fi

# ---- 2. a copy away, clean detach, attach at the recorded size
cl_stop 3
cl_qemu_io 1 db "write -P 0x44 2M 1M" >/dev/null || fail "write with n3 away"
cl_patch "$EXP" $((2 * M)) "$M" 0x44
cl_wait_state db n3 out-of-sync 10
ctsr volume detach db >/dev/null || fail "detach"
cl_start_node 3
cl_wait_nodes_alive 3
cl_attach_retry db n1
wait_log 1 "copy 2 \(n3\): its bitmap is for another size than the volume's $((32 * M)) bytes: full resync, compared by sums" 10
cl_wait_synced db 120
moved=$(vstatus db 'j["resync_bytes_copied"]')
log "n3's compared resync copied $moved bytes"
[ "$moved" -gt 0 ] || fail "n3's resync copied nothing (it missed 1 MiB)"
[ "$moved" -le $((4 * M)) ] || fail "n3's resync copied $moved bytes: not compared"
assert_eq "$(nbdinfo --size "$URI")" $((32 * M)) "size after the attach"
truncate -s $((32 * M)) "$EXP"
cl_assert_image 1 db "$EXP" "after the attach at 32 MiB"
cl_scrub_clean db "after n3's compared resync"
cl_qemu_io 1 db "write -P 0x55 24M 1M" "read -P 0x55 24M 1M" >/dev/null || fail "past 16 MiB"

# ---- 3. a retry of the same size through another node finishes the grow
expect_fail 1 "did not grow" ctsr_via 2 volume resize db --size 48M
assert_eq "$(nbdinfo --size "$URI")" $((32 * M)) "size while the layout has not grown"
rm -f "$TSR_TEST_RESIZE_FAIL_FILE"
ctsr_via 2 volume resize db --size 48M >/dev/null || fail "the retry"
assert_eq "$(nbdinfo --size "$URI")" $((48 * M)) "size after the retry"
cl_qemu_io 1 db "write -P 0x66 40M 1M" "read -P 0x66 40M 1M" "read -P 0x55 24M 1M" \
	"read -P 0x44 2M 1M" >/dev/null || fail "past 32 MiB after the retry"
grep -q "mirror db: grown online from $((32 * M)) to $((48 * M)) bytes" "$(cl_dir 1)/tesserad.log" ||
	fail "n1's log does not show the grow of the retry"
cl_scrub_clean db "after the retry"
ctsr volume detach db >/dev/null || fail "final detach"
cl_stop_all
