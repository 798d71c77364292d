#!/usr/bin/env bash
# tessera-csi with real filesystems (tests/csi/test_lifecycle.py): a
# 3-replica volume staged (mkfs ext4, then xfs when mkfs.xfs exists), published
# (read-write and read-only), written, snapshotted, cloned, the clone staged
# and compared by checksums, expanded online (df shows it), torn down; a raw
# block volume published as a block device of its size, and its unstage
# refused FAILED_PRECONDITION while an nbd_hold client holds it.  Afterwards: no
# mounts under the test dir, no loop devices backed by its files, and once
# the driver and the cluster are stopped, no nbdfuse or tesserad process of
# this test left.  Needs root, /dev/fuse and loop devices.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$TSR_SRC/tests/csi/csi.sh"

require_csi
require_tessera "$NBD_HOLD"
require_root
require_cmd nbdfuse fusermount3 losetup mkfs.ext4 resize2fs blockdev mount umount
[ -c /dev/fuse ] || skip "no /dev/fuse"
[ -e /dev/loop-control ] || skip "no loop devices (/dev/loop-control missing)"
losetup -f >/dev/null 2>&1 || skip "no free loop device"

cl_start 3
csi_cli_env 1
# runs after tessera-csi is killed and before the cluster is (on_exit: newest first)
on_exit "csi_node_cleanup '$CL_ROOT'"
CSI_FS=ext4
if command -v mkfs.xfs >/dev/null && command -v xfs_growfs >/dev/null; then CSI_FS=ext4,xfs; fi
export CSI_FS CSI_TMP=$CL_ROOT/scratch CSI_STATE_DIR=$CL_ROOT/csi/state
mkdir -p "$CSI_TMP"
start_csi "$CL_ROOT/csi" --node-id n1 --mode all --tesserad "unix:$(cl_dir 1)/admin.sock" \
	--state-dir "$CSI_STATE_DIR" --zone z1 --site site1

export NBD_HOLD
"$PY" "$TSR_SRC/tests/csi/test_lifecycle.py" || fail "test_lifecycle.py reported failures"

csi_assert_alive
stop_csi
left=$(mounts_under "$CL_ROOT")
[ -z "$left" ] || fail "mounts left after the driver stopped: $left"
left=$(loops_under "$CL_ROOT")
[ -z "$left" ] || fail "loop devices left: $left"
left=$(procs_under "$CL_ROOT" | grep -v ' tesserad: ')
[ -z "$left" ] || fail "processes left after the driver stopped: $left"
cl_stop_all
left=$(procs_under "$CL_ROOT")
[ -z "$left" ] || fail "processes left after the cluster stopped: $left"
log "no mounts, loop devices or processes left"
