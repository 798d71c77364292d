#!/usr/bin/env bash
# `tessera volume resize` on a full data file system (engine/store/store.c
# grow_dirty_blocks).  A grow whose dirty-region bitmap needs more pages (one
# bit per 1 MiB: a page more per 32 GiB) needs blocks for them: the bitmap is
# stored to through a mapping, so its blocks must exist.  Before, the resize
# was accepted anyway (B closed: its bitmap was only truncated longer), and
# B's next open found holes in it: every write to B, even over blocks it has,
# failed with ENOSPC.  Now:
#   - standalone tesserad, data dir on a 48 MiB ext4 (loop device), B 64 MiB
#     with 4 MiB written, the file system filled (df: 0 available); an
#     overwrite of B's blocks works;
#   - resize B to 64 GiB (bitmap 1 -> 2 pages): exit 1, "no space to grow
#     volume 'B' to 64.0 GiB: the file system of DIR is full", B still 64 MiB,
#     its .dirty file still 4096 bytes; the same with B held open (NBD);
#   - resize B to 128 MiB (same bitmap page): accepted, as thin provisioning
#     (the data and crc files grow sparse);
#   - B is overwritten and read back, also after a restart on the full disk
#     (no "allocate the dirty-region bitmap" warning in the log);
#   - the ballast removed, resize B to 64 GiB is accepted and its last block
#     is written and read back;
#   - a cluster of 2, n2's data dir on a full 48 MiB ext4: resizing a
#     2-replica volume to 64 GiB is refused with n2's reason ("node n2: no
#     space to grow volume 'R' to 64.0 GiB: the file system of DIR is full"),
#     its size unchanged, neither copy grown (every node is asked before
#     any copy grows); accepted once n2 has space.
# Needs root and loop devices (for the small file system).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/fullfs.sh"

require_tessera "$NBD_HOLD"
fullfs_require
require_cmd qemu-io

fullfs_mount M 48M
D=$M/d
start_tesserad "$D"
vol_create "$D" B 64M
qemu_io "$D" B "write -P 0x5a 0 4M" >/dev/null || fail "write 4 MiB to B"
uuid=$(tsr "$D" --json volume show B | json_get 'j["uuid"]')
fill_fs "$M/ballast"
qemu_io "$D" B "write -P 0xa5 0 1M" >/dev/null || fail "overwrite of B on the full disk"

size_of() { tsr "$D" --json volume show "$1" | json_get 'j["size"]'; }
dirty_size() { stat -c %s "$D/volumes/$uuid.dirty"; }

# refused, nothing changed
assert_eq "$(dirty_size)" 4096 "B's .dirty file before"
expect_fail 1 "no space to grow volume 'B' to 64.0 GiB: the file system of $D is full" \
	tsr "$D" volume resize B --size 64G
assert_eq "$(size_of B)" 67108864 "B's size after the refused resize"
assert_eq "$(dirty_size)" 4096 "B's .dirty file after the refused resize"
grep -q "resize: volume B: no space on the file system of $D for the 4096 more bytes of its dirty-region bitmap" \
	"$D/tesserad.log" || fail "the log does not say why the resize was refused"

# the same with B open
"$NBD_HOLD" "$(nbd_uri "$D" B)" "$D/held" &
hold=$!
track_pid "$hold"
for (( i=0; i<100; i++ )); do [ -f "$D/held" ] && break; sleep 0.1; done
[ -f "$D/held" ] || fail "nbd_hold did not connect"
expect_fail 1 "no space to grow volume 'B'" tsr "$D" volume resize B --size 64G
assert_eq "$(size_of B)" 67108864 "B's size after the refused resize (open)"
assert_eq "$(dirty_size)" 4096 "B's .dirty file after the refused resize (open)"
qemu_io "$D" B "write -P 0x3c 1M 1M" "read -P 0xa5 0 1M" "read -P 0x3c 1M 1M" >/dev/null ||
	fail "B overwritten and read back while held open"
kill "$hold"
reap "$hold" || true

# a grow within the bitmap's page needs no block: accepted
tsr "$D" volume resize B --size 128M >/dev/null || fail "resize B to 128 MiB on the full disk"
assert_eq "$(size_of B)" 134217728 "B's size after the 128 MiB resize"
assert_eq "$(dirty_size)" 4096 "B's .dirty file after the 128 MiB resize"

# B writable, also after a restart on the still full disk
qemu_io "$D" B "write -P 0x71 2M 1M" "read -P 0xa5 0 1M" "read -P 0x3c 1M 1M" \
	"read -P 0x71 2M 1M" "read -P 0x5a 3M 1M" >/dev/null || fail "B after the resizes"
stop_tesserad
assert_eq "$(fs_avail_kib)" 0 "KiB free before the restart"
start_tesserad "$D"
qemu_io "$D" B "write -P 0x72 2M 1M" "read -P 0xa5 0 1M" "read -P 0x3c 1M 1M" \
	"read -P 0x72 2M 1M" "read -P 0x5a 3M 1M" >/dev/null || fail "B after a restart on the full disk"
if grep -n "allocate the dirty-region bitmap" "$D/tesserad.log"; then
	fail "B's bitmap has holes after the restart (above)"
fi

# space back: the grow goes through
rm -f "$M/ballast"
sync
tsr "$D" volume resize B --size 64G >/dev/null || fail "resize B to 64 GiB with space"
assert_eq "$(size_of B)" 68719476736 "B's size after the 64 GiB resize"
assert_eq "$(dirty_size)" 8192 "B's .dirty file at 64 GiB"
qemu_io "$D" B "write -P 0x33 68719472640 4096" "read -P 0x33 68719472640 4096" \
	"read -P 0xa5 0 1M" >/dev/null || fail "B's last block at 64 GiB"
stop_tesserad

# ---------------------------------------------------------------- a cluster
make_tmpdir CL_ROOT
CL_N=2
for i in 1 2; do CL_PORT[$i]=$(free_port); done
fullfs_mount N2 48M "$(cl_dir 2)"
for i in 1 2; do cl_start_node "$i"; done
cl_wait_nodes_alive 2
ctsr volume create R --size 16M --replicas 2 >/dev/null || fail "create R (2 replicas)"
fill_fs "$N2/ballast"
expect_fail 1 "node n2: no space to grow volume 'R' to 64.0 GiB: the file system of $(cl_dir 2) is full" \
	ctsr volume resize R --size 64G
assert_eq "$(ctsr --json volume show R | json_get 'j["size"]')" 16777216 "R's size after the refusal"
# nothing grown: n1's copy would have been grown before n2 refused (before
# 75b9bab: n1's copy 64 GiB, the record 16 MiB)
for i in 1 2; do
	assert_eq "$(cl_copy_size "$i" R)" 16777216 "n$i's copy of R after the refusal"
done
rm -f "$N2/ballast"
sync
ctsr volume resize R --size 64G >/dev/null || fail "resize R to 64 GiB once n2 has space"
assert_eq "$(ctsr --json volume show R | json_get 'j["size"]')" 68719476736 "R's size after the resize"
cl_stop_all
