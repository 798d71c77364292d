#!/usr/bin/env bash
# Online resize of an attached 3-replica volume (engine/cluster/volume.c
# cluster_volume_resize, engine/layout/mirror.c mirror_resize).
#
# 3 nodes; n3's data dir on a 256 MiB ext4 (loop device) when we may make one
# (root), so that a grow it cannot take is refused.  Volume db, 32 MiB, 3
# replicas, attached on n1, a pattern written over NBD.
#  1. fio --verify=crc32c writes [16M, 32M) through n1's export; meanwhile
#     `volume resize db --size 64M` is sent to n2 (forwarded to n1, the
#     coordinator): accepted; fio passes; [0, 16M) still reads as written;
#  2. every copy's store volume is 64 MiB, the record too; a NEW NBD
#     connection sees 64 MiB (nbdinfo --size) and writes and reads past the old
#     end (qemu-io); the coordinator's bitmap files name the new size;
#  3. n3 stopped, writes past the old end and below it, n3 started: resync
#     brings it back, the resync copied what was written while it was away
#     (not the volume), scrub 0, the image reads back as expected;
#  4. detach, the three copies' files are identical; attach on n2: 64 MiB,
#     the image reads back;
#  5. refusals, nothing changed (the record's and every copy's size): n3
#     away (stopped); a shrink; n3's file system full (resize to 64 GiB needs
#     a page more of its store's dirty bitmap): "node n3: no space", nothing
#     grown on n1 and n2 either; then with space: accepted while attached;
#  6. an attached ec 2+1 volume whose size ends mid-stripe grows too (through
#     n3): record, chunk volumes (10 MiB each), a new connection's size; written
#     past the old end, the old last stripe's other half reads zeros, scrub 0;
#     n3 away over writes in the grown range, back: in sync, scrub 0, image
#     equal; attached on n2: image equal.
# On the code before (refused while attached) step 1 fails: "resizing an
# attached volume is not supported yet".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/fullfs.sh"

require_tessera
require_cmd fio nbdinfo nbdcopy qemu-io

FULL=0
if [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null && [ -e /dev/loop-control ] &&
	losetup -f >/dev/null 2>&1; then
	FULL=1
fi

make_tmpdir CL_ROOT
CL_N=3
i=1
while read -r port; do CL_PORT[$i]=$port; i=$(( i + 1 )); done < <(free_ports 3)
(( i == 4 )) || fail "cannot find 3 free TCP ports"
if [ "$FULL" = 1 ]; then
	fullfs_mount N3 256M "$(cl_dir 3)"
else
	log "not root or no loop device: the full file system refusal (step 5) is skipped"
fi
for i in 1 2 3; do cl_start_node "$i"; done
cl_wait_nodes_alive 3

M=$((1 << 20))
OLD=$((32 * M))
NEW=$((64 * M))
ctsr volume create db --size 32M --replicas 3 >/dev/null || fail "volume create"
ctsr volume attach db --node n1 >/dev/null || fail "volume attach"
URI=$(cl_nbd_uri 1 db)
EXP=$CL_ROOT/expected.img
cl_pattern "$EXP" "$OLD" 7
nbdcopy "$EXP" "$URI" || fail "write the pattern through n1"
cl_assert_image 1 db "$EXP" "pattern written"

rec_size() { ctsr --json volume show db | json_get 'j["size"]'; }
sizes() { local i s=""; for i in 1 2 3; do s+="$(cl_copy_size "$i" db) "; done; echo "${s% }"; }

# ---- 1. resize while a verified writer runs on the old size
fio --name=w --ioengine=nbd "--uri=$URI" --bs=4k --direct=1 --rw=randwrite --offset=16M \
	--size=16M --iodepth=8 --verify=crc32c --verify_fatal=1 --do_verify=1 --randseed=3 \
	--verify_state_save=0 --output="$CL_ROOT/fio.txt" &
fpid=$!
track_pid "$fpid"
sleep 0.5
out=$(ctsr_via 2 volume resize db --size 64M 2>&1) || fail "resize of attached db (through n2): $out"
kill -0 "$fpid" 2>/dev/null && running=yes || running=no
log "resize answered (fio still running: $running): $(printf '%s' "$out" | head -n1)"
reap "$fpid" || { cat "$CL_ROOT/fio.txt" >&2; fail "fio --verify failed across the resize"; }
grep -q "err= 0" "$CL_ROOT/fio.txt" || { cat "$CL_ROOT/fio.txt" >&2; fail "fio reported errors"; }
head -c $((16 * M)) "$EXP" > "$CL_ROOT/low.img"
got=$(nbdcopy "$URI" - | headc $((16 * M)) | sha256sum | cut -d' ' -f1) || fail "read db's first 16 MiB"
assert_eq "$got" "$(sha256 "$CL_ROOT/low.img")" "[0, 16M) after the resize"
# what fio left in [16M, 32M) is what it verified: the expected image from here
nbdcopy "$URI" "$CL_ROOT/now.img" || fail "read db"
assert_eq "$(stat -c %s "$CL_ROOT/now.img")" "$NEW" "bytes read by a new connection"
mv "$CL_ROOT/now.img" "$EXP"

# ---- 2. sizes, a new connection past the old end, bitmaps
assert_eq "$(rec_size)" "$NEW" "db's recorded size"
assert_eq "$(sizes)" "$NEW $NEW $NEW" "copies' sizes (n1 n2 n3)"
assert_eq "$(nbdinfo --size "$URI")" "$NEW" "nbdinfo --size of a new connection"
cl_qemu_io 1 db "write -P 0x77 40M 1M" "read -P 0x77 40M 1M" >/dev/null ||
	fail "write and read past the old end"
cl_patch "$EXP" $((40 * M)) "$M" 0x77
for b in "$(cl_dir 1)"/coord/db.*.bitmap; do
	[ -f "$b" ] || continue
	sz=$("$PY" -c 'import struct,sys; print(struct.unpack_from("<Q", open(sys.argv[1],"rb").read(24), 16)[0])' "$b")
	assert_eq "$sz" "$NEW" "volume size in the header of $b"
	nb=$(( ${nb:-0} + 1 ))
done
assert_eq "${nb:-0}" 3 "bitmap files found on n1"
grep -q "mirror db: grown online from $OLD to $NEW bytes" "$(cl_dir 1)/tesserad.log" ||
	fail "n1's log does not show the online grow"

# ---- 3. a copy away, writes past the old end, its return
# (a flush first: what was written since the last one goes into the bitmap
# of a copy that fails too, and the bound below is for what it missed)
cl_qemu_io 1 db "flush" >/dev/null || fail "flush db"
cl_stop 3
cl_qemu_io 1 db "write -P 0x88 48M 2M" "write -P 0x99 4M 1M" >/dev/null ||
	fail "writes while n3 is away"
cl_patch "$EXP" $((48 * M)) $((2 * M)) 0x88
cl_patch "$EXP" $((4 * M)) "$M" 0x99
cl_wait_state db n3 out-of-sync 10
before=$(vstatus db 'j["resync_bytes_copied"]')
cl_start_node 3
cl_wait_synced db 120
moved=$(( $(vstatus db 'j["resync_bytes_copied"]') - before ))
log "resync of n3 copied $moved bytes"
[ "$moved" -ge $((3 * M)) ] || fail "resync copied $moved bytes, less than the 3 MiB written"
[ "$moved" -le $((8 * M)) ] || fail "resync copied $moved bytes: more than what changed"
cl_scrub_clean db "after n3's return"
cl_assert_image 1 db "$EXP" "after n3's return"

# ---- 4. detach, identical copies, attach elsewhere
ctsr volume detach db >/dev/null || fail "detach"
cl_assert_copies_identical db 1 2 3
cl_attach_retry db n2
URI=$(cl_nbd_uri 2 db)
assert_eq "$(nbdinfo --size "$URI")" "$NEW" "size after attach on n2"
cl_assert_image 2 db "$EXP" "attached on n2"

# ---- 5. refusals
expect_fail 1 "can only grow" ctsr volume resize db --size 48M
cl_stop 3
expect_fail 1 "n3.*(away|not in sync|cannot reach)|(away|not in sync|cannot reach).*n3" \
	ctsr volume resize db --size 96M
assert_eq "$(rec_size)" "$NEW" "recorded size after the refusal (n3 away)"
assert_eq "$(cl_copy_size 1 db) $(cl_copy_size 2 db) $(cl_copy_size 3 db)" "$NEW $NEW $NEW" \
	"copies' sizes after the refusal (n3 away)"
cl_start_node 3
cl_wait_synced db 120
if [ "$FULL" = 1 ]; then
	fill_fs "$N3/ballast"
	expect_fail 1 "node n3: no space to grow volume 'db' to 64.0 GiB.*nothing was grown" \
		ctsr volume resize db --size 64G
	assert_eq "$(rec_size)" "$NEW" "recorded size after the refusal (n3 full)"
	assert_eq "$(sizes)" "$NEW $NEW $NEW" "copies' sizes after the refusal (n3 full)"
	assert_eq "$(nbdinfo --size "$URI")" "$NEW" "size seen after the refusal (n3 full)"
	rm -f "$N3/ballast"
	sync
	ctsr volume resize db --size 64G >/dev/null || fail "resize to 64 GiB once n3 has space"
	G=$((64 << 30))
	assert_eq "$(rec_size)" "$G" "recorded size after the 64 GiB resize"
	assert_eq "$(sizes)" "$G $G $G" "copies' sizes after the 64 GiB resize"
	assert_eq "$(nbdinfo --size "$URI")" "$G" "a new connection's size at 64 GiB"
	cl_qemu_io 2 db "write -P 0x42 $((G - 4096)) 4096" "read -P 0x42 $((G - 4096)) 4096" \
		"read -P 0x77 40M 1M" >/dev/null || fail "the last block at 64 GiB"
fi
ctsr volume detach db >/dev/null || fail "final detach"
ctsr volume delete db >/dev/null || fail "delete db" # its 64 GiB fill n3's capacity

# ---- 6. an attached erasure-coded volume (2+1, stripe unit 64K) grows too.
# Its old size, 8256 KiB, ends in the middle of a stripe: the stripe's other
# half becomes part of the volume (zeros, parity still right).
K=1024
ctsr volume create E --size 8256K --ec 2+1 --stripe-unit 64K --failure-domain zone >/dev/null ||
	fail "create E (ec 2+1)"
ctsr volume attach E --node n1 >/dev/null || fail "attach E"
EURI=$(cl_nbd_uri 1 E)
EEXP=$CL_ROOT/e-expected.img
cl_pattern "$EEXP" $((8256 * K)) 11
nbdcopy "$EEXP" "$EURI" || fail "write E's pattern"
ctsr_via 3 volume resize E --size 20M >/dev/null || fail "resize of attached E (through n3)"
assert_eq "$(ctsr --json volume show E | json_get 'j["size"]')" $((20 * M)) "E's recorded size"
assert_eq "$(nbdinfo --size "$EURI")" $((20 * M)) "E's size seen by a new connection"
for i in 1 2 3; do
	assert_eq "$(cl_copy_size "$i" E)" $((10 * M)) "E's chunk volume on n$i (20 MiB / k 2)"
done
truncate -s $((20 * M)) "$EEXP"
cl_qemu_io 1 E "write -P 0x31 16M 1M" "read -P 0x31 16M 1M" "read -P 0 8256K 64K" >/dev/null ||
	fail "E: write and read past the old end, the old last stripe's other half reads zeros"
cl_patch "$EEXP" $((16 * M)) "$M" 0x31
grep -q "ec E: grown online from $((8256 * K)) to $((20 * M)) bytes" "$(cl_dir 1)/tesserad.log" ||
	fail "n1's log does not show E's online grow"
cl_scrub_clean E "E after its grow"
cl_stop 3
cl_qemu_io 1 E "write -P 0x32 12M 2M" "write -P 0x33 8M 128K" >/dev/null || fail "E: writes with n3 away"
cl_patch "$EEXP" $((12 * M)) $((2 * M)) 0x32
cl_patch "$EEXP" $((8 * M)) $((128 * K)) 0x33
cl_start_node 3
cl_wait_synced E 120
cl_scrub_clean E "E after n3's return"
cl_assert_image 1 E "$EEXP" "E after n3's return"
ctsr volume detach E >/dev/null || fail "detach E"
cl_attach_retry E n2
cl_assert_image 2 E "$EEXP" "E attached on n2"
expect_fail 1 "can only grow" ctsr volume resize E --size 16M
ctsr volume detach E >/dev/null || fail "detach E (end)"
cl_stop_all
