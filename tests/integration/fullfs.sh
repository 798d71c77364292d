# shellcheck shell=bash
# A small ext4 on a loop device for the tests of a full data file system
# (test-disk-full.sh, test-full-start.sh, test-cli-space.sh).  Sourced after
# functions.sh:
#   fullfs_mount VAR SIZE [DIR]
#                           mount a fresh SIZE ext4 (4 KiB blocks, no root
#                           reserve) on DIR (made if missing; default: in a
#                           new temp dir, which also holds the image); VAR =
#                           the mount point; unmounted and detached at exit
#   fill_fs BALLAST         take every free block of $FULLFS_MNT (the last
#                           mount) with the file BALLAST (and maybe a few
#                           blocks in BALLAST.N); asserts 0 KiB free
#   fs_avail_kib            df's free KiB of $FULLFS_MNT
# Needs root, losetup, mkfs.ext4 and loop devices (skips without them).

fullfs_require() {
	require_root
	require_cmd losetup mkfs.ext4 mount umount mountpoint
	[ -e /dev/loop-control ] || skip "no loop devices (/dev/loop-control missing)"
	losetup -f >/dev/null 2>&1 || skip "no free loop device"
}

fullfs_mount() { # VAR SIZE [DIR]
	local var=$1 size=$2 dir img loop mnt
	make_tmpdir dir
	img=$dir/fs.img
	mnt=${3:-$dir/mnt}
	mkdir -p "$mnt"
	truncate -s "$size" "$img"
	mkfs.ext4 -q -F -b 4096 -m 0 "$img" || fail "mkfs.ext4 $img"
	loop=$(losetup -f --show "$img") || fail "losetup $img"
	on_exit "losetup -d '$loop'"
	mount "$loop" "$mnt" || fail "mount $loop $mnt"
	on_exit "mountpoint -q '$mnt' && umount -l '$mnt'"
	FULLFS_MNT=$mnt
	FULLFS_LOOP=$loop
	printf -v "$var" '%s' "$mnt"
}

fs_avail_kib() { df --output=avail "$FULLFS_MNT" | tail -n1 | xargs; }

# Buffered appends until ENOSPC, then a sync, until df shows 0 available
# (the first pass stops when delayed allocation's reservations run out; a
# process just killed may give back preallocated blocks a moment later).
# From the third pass on, what is left goes into a new file BALLAST.N.  Seen
# in about 1 run of test-meta-full in 10 under load (tesserad's files
# fragment the free space): 4 KiB stayed free through 20 appends to the
# ballast, which had 4 extents, all an inode holds; a block that continues
# none of them needs a fifth extent and so an extent tree block, which the
# append apparently cannot get.  A new file takes it in its inode.
# BALLAST.N and BALLAST.probeN hold a few blocks at most; `rm -f BALLAST*` removes them too.
fill_fs() { # BALLAST
	local i f
	for (( i=0; i<8; i++ )); do
		f=$1
		if (( i >= 2 )); then
			f=$1.$i
			log "fill_fs: $(fs_avail_kib) KiB left after $i passes: into $f"
		fi
		dd if=/dev/zero of="$f" bs=4k oflag=append conv=notrunc status=none 2>/dev/null
		sync
		[ "$(fs_avail_kib)" = 0 ] && (( i >= 1 )) && break
		sleep 0.2
	done
	# df may still count a block no file can get (seen: 4 KiB in CI run 13a, at
	# +2 s, with tesserad's files open on the file system): a new file's
	# synchronous 4 KiB write decides. It takes the block (then it is ballast
	# too) or fails with ENOSPC, and then the file system is full for our
	# purpose: no write can get a block.
	for (( i=0; i<4; i++ )); do
		[ "$(fs_avail_kib)" = 0 ] && break
		f=$1.probe$i
		if ! dd if=/dev/zero of="$f" bs=4k count=1 oflag=sync status=none 2>/dev/null; then
			sync
			log "fill_fs: df shows $(fs_avail_kib) KiB free, but a new 4 KiB file gets no block: full"
			return 0
		fi
		sync
	done
	if [ "$(fs_avail_kib)" != 0 ]; then
		echo "fill_fs: $(fs_avail_kib) KiB free after $i passes; files on $FULLFS_MNT:" >&2
		ls -laRs "$FULLFS_MNT" >&2
		command -v filefrag >/dev/null && filefrag "$1"* >&2
	fi
	assert_eq "$(fs_avail_kib)" 0 "KiB free after the ballast $1"
}
