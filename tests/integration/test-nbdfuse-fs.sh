#!/usr/bin/env bash
# A real filesystem on a Tessera volume: nbdfuse exposes the volume as a file,
# losetup turns it into a block device, mkfs.ext4 + mount, files with known
# sha256 copied in; everything unmounted, tesserad restarted (cleanly, then
# after a SIGKILL following sync + unmount), mounted again and the checksums
# and e2fsck checked.  Needs root, /dev/fuse and loop devices.
. "$(dirname "$0")/functions.sh"

require_tessera
require_root
require_cmd nbdfuse fusermount3 losetup mkfs.ext4 e2fsck mount umount mountpoint sha256sum
[ -c /dev/fuse ] || skip "no /dev/fuse"
[ -e /dev/loop-control ] || skip "no loop devices (/dev/loop-control missing)"
losetup -f >/dev/null 2>&1 || skip "no free loop device"

make_tmpdir D
MNT=$D/fuse
FS=$D/fs
mkdir -p "$MNT" "$FS"
start_tesserad "$D"
vol_create "$D" fsvol 512M
U=$(nbd_uri "$D" fsvol)

# Cleanup of whatever a failure leaves behind, in order (on_exit runs newest
# first): umount, detach loop, unmount fuse, kill nbdfuse; tesserad (registered
# earlier) goes last.
FUSE_PID=
on_exit '[ -n "$FUSE_PID" ] && _kill_tracked "$FUSE_PID"'
on_exit "mountpoint -q '$MNT' && fusermount3 -u -z '$MNT'"
on_exit "losetup -j '$MNT/disk' -n -O NAME | xargs -r -n1 losetup -d"
on_exit "mountpoint -q '$FS' && umount -l '$FS'"

# attach: nbdfuse -> loop -> (optional mkfs) -> mount.  Sets LOOP, FUSE_PID.
attach() {
	local i
	rm -f "$D/nbdfuse.pid"
	nbdfuse -P "$D/nbdfuse.pid" "$MNT/disk" "$U" 2>>"$D/nbdfuse.log" &
	FUSE_PID=$!
	_live_pids[$FUSE_PID]=1 # killed by the on_exit above, after the unmounts
	for (( i=0; i<100; i++ )); do
		[ -s "$D/nbdfuse.pid" ] && [ -f "$MNT/disk" ] && break
		kill -0 "$FUSE_PID" 2>/dev/null || { cat "$D/nbdfuse.log" >&2; fail "nbdfuse exited"; }
		sleep 0.1
	done
	[ -f "$MNT/disk" ] || fail "nbdfuse did not expose $MNT/disk"
	assert_eq "$(stat -c %s "$MNT/disk")" 536870912 "size of the nbdfuse file"
	LOOP=$(losetup --sector-size 4096 -f --show "$MNT/disk" 2>/dev/null) ||
		LOOP=$(losetup -f --show "$MNT/disk") || fail "losetup $MNT/disk"
	log "attached $U -> $MNT/disk -> $LOOP"
}
detach() {
	if mountpoint -q "$FS"; then umount "$FS" || fail "umount $FS"; fi
	losetup -d "$LOOP" || fail "losetup -d $LOOP"
	# The loop device lets go of the file asynchronously.
	for (( i=0; i<50; i++ )); do
		[ -z "$(losetup -j "$MNT/disk" -n -O NAME)" ] && break
		sleep 0.1
	done
	fusermount3 -u "$MNT" || fail "fusermount3 -u $MNT"
	reap "$FUSE_PID" || fail "nbdfuse exited with an error"
}

attach
mkfs.ext4 -q -F -b 4096 -E nodiscard "$LOOP" || fail "mkfs.ext4 on $LOOP"
mount "$LOOP" "$FS" || fail "mount $LOOP"
# Files: three large random ones, a tree of small ones, a sparse one.
for i in 1 2 3; do head -c $(( i * 7 ))M /dev/urandom >"$FS/big$i"; done
mkdir -p "$FS/tree/a/b"
for i in $(seq 1 200); do head -c $(( (i * 997) % 20000 + 1 )) /dev/urandom >"$FS/tree/a/b/f$i"; done
truncate -s 100M "$FS/sparse"
printf 'tail' | dd of="$FS/sparse" bs=1 seek=$(( 100 * 1024 * 1024 - 4 )) conv=notrunc status=none
(cd "$FS" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$D/sums"
log "$(wc -l <"$D/sums") files written, $(du -sh "$FS" | cut -f1)"
detach

# Clean restart of tesserad, with the other backend.
stop_tesserad
start_tesserad "$D" --io libaio
attach
e2fsck -fn "$LOOP" >"$D/fsck.out" 2>&1 || { cat "$D/fsck.out" >&2; fail "e2fsck after a clean restart"; }
mount "$LOOP" "$FS" || fail "mount after restart"
(cd "$FS" && sha256sum --quiet -c "$D/sums") || fail "checksums after a clean restart"
# More writes, then sync + unmount + SIGKILL: what the kernel flushed must survive.
head -c 20M /dev/urandom >"$FS/after"
rm "$FS/big2"
(cd "$FS" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$D/sums2"
sync -f "$FS/after"
detach
kill9_tesserad
start_tesserad "$D"
attach
e2fsck -fn "$LOOP" >"$D/fsck.out" 2>&1 || { cat "$D/fsck.out" >&2; fail "e2fsck after SIGKILL"; }
mount "$LOOP" "$FS" || fail "mount after SIGKILL"
(cd "$FS" && sha256sum --quiet -c "$D/sums2") || fail "checksums after SIGKILL"
[ -e "$FS/big2" ] && fail "deleted file is back"
log "$(wc -l <"$D/sums2") files verified after a SIGKILL restart"
detach
stop_tesserad
