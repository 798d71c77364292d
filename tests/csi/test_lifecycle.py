"""A volume's whole life through tessera-csi with real filesystems and block
devices (root, /dev/fuse, loop devices):

  CreateVolume (3 replicas) -> NodeStageVolume (mkfs, real mount) ->
  NodePublishVolume (+ a read-only publish) -> write files -> CreateSnapshot
  -> CreateVolume from it -> stage + publish the clone -> same checksums ->
  ControllerExpandVolume + NodeExpandVolume (statvfs shows the new size) ->
  NodeGetVolumeStats -> unpublish, unstage, delete everything.

for ext4, and for xfs when mkfs.xfs exists; then a raw block volume: the
published path is a block device of the volume's size, data written there
reads back after unstage + stage, and while another NBD client holds it
NodeUnstageVolume fails FAILED_PRECONDITION naming that client (tesserad
refuses the detach; the volume stays attached; the CO retries).  Each
node call is made twice.  At the end
nothing is mounted under the test directory and no loop device is backed by
a file there (the wrapper also checks for processes left behind).

Run by tests/integration/test-csi-lifecycle.sh; CSI_TMP is the scratch dir
(staging and target paths live there), CSI_FS lists the filesystems to try.
"""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import time

from csilib import MiB, C, Checks, Client, Runner, block_cap, cluster_volumes, create_req, mount_cap, pb, tessera

R = Runner("test_lifecycle")
cli = Client(timeout=180)
X = Checks(cli, R)
TMP = os.environ["CSI_TMP"]
STATE = os.environ.get("CSI_STATE_DIR", "")
P3 = {"replicas": "3", "failureDomain": "zone"}
SIZE = 320 * MiB      # xfs wants at least 300 MB


def _has_cap(bit):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    return False


# Growing a mounted ext4 (EXT4_IOC_RESIZE_FS) needs CAP_SYS_RESOURCE; some
# containers drop it.  Without it the df check of ext4 growth cannot pass
# here, whatever the driver does: it is logged and left out.
CAN_GROW_EXT4 = _has_cap(24)
GROWN = 640 * MiB


def mounts():
    """(mount point, fs type, options) of this mount namespace."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            a, b = line.split(" - ")
            fields = a.split()
            mp = fields[4].replace("\\040", " ")
            out.append((mp, b.split()[0], fields[5]))
    return out


def mount_of(path):
    m = [x for x in mounts() if x[0] == os.path.realpath(path)]
    return m[-1] if m else None


def tree_sums(root):
    sums = {}
    for d, _, files in os.walk(root):
        for n in files:
            p = os.path.join(d, n)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            with open(p, "rb") as f:
                sums[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return sums


def write_files(root):
    os.makedirs(os.path.join(root, "dir/sub"), exist_ok=True)
    for i, size in enumerate((1, 4096, 65537, 3 * MiB, 17 * MiB)):
        with open(os.path.join(root, f"f{i}"), "wb") as f:
            f.write(os.urandom(size))
    for i in range(100):
        with open(os.path.join(root, f"dir/sub/s{i}"), "wb") as f:
            f.write(os.urandom(i * 131 + 1))
    with open(os.path.join(root, "sparse"), "wb") as f:
        f.truncate(64 * MiB)
        f.seek(40 * MiB)
        f.write(b"middle")
    os.symlink("f1", os.path.join(root, "link"))
    fd = os.open(root, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    os.sync()


# What a test set up, torn down best-effort by cleanup() when it stops early,
# so that the next test starts clean and test_nothing_left judges the driver.
SETUP = {"published": [], "staged": [], "snapshots": [], "volumes": []}


def cleanup():
    for vid, path in reversed(SETUP["published"]):
        cli.call("node.NodeUnpublishVolume", pb.NodeUnpublishVolumeRequest(volume_id=vid, target_path=path))
    for vid, path in reversed(SETUP["staged"]):
        cli.call("node.NodeUnstageVolume", pb.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=path))
    for sid in SETUP["snapshots"]:
        cli.call("controller.DeleteSnapshot", pb.DeleteSnapshotRequest(snapshot_id=sid))
    for vid in reversed(SETUP["volumes"]):
        cli.call("controller.DeleteVolume", pb.DeleteVolumeRequest(volume_id=vid))
    for k in SETUP:
        SETUP[k].clear()


def created(vid):
    SETUP["volumes"].append(vid)
    return vid


def expand(vid, size, cap, tg, st):
    """ControllerExpandVolume then NodeExpandVolume, each twice; False if refused."""
    req = pb.ControllerExpandVolumeRequest(volume_id=vid, capacity_range=pb.CapacityRange(required_bytes=size),
                                           volume_capability=cap)
    caps = []
    for i in (1, 2):
        e, code, det = cli.call("controller.ControllerExpandVolume", req)
        if not R.check(code == C.OK, f"ControllerExpandVolume {vid} to {size} while published "
                       f"(ONLINE expansion advertised) #{i}: {code.name} {det!r}"):
            return False
        caps.append(e.capacity_bytes)
        R.check(e.capacity_bytes >= size, f"ControllerExpandVolume gave {e.capacity_bytes}, want >= {size}")
        R.check(e.node_expansion_required or cap.HasField("block"),
                "a mounted filesystem needs NodeExpandVolume (node_expansion_required false)")
    R.check(caps[0] == caps[1], f"ControllerExpandVolume twice: {caps}")
    return node_expand(vid, size, cap, tg, st)


def node_expand(vid, size, cap, tg, st):
    """NodeExpandVolume twice; False when this machine cannot grow the filesystem."""
    req = pb.NodeExpandVolumeRequest(volume_id=vid, volume_path=tg, staging_target_path=st, volume_capability=cap,
                                     capacity_range=pb.CapacityRange(required_bytes=size))
    if cap.HasField("mount") and cap.mount.fs_type == "ext4" and not CAN_GROW_EXT4:
        _, code, det = cli.call("node.NodeExpandVolume", req)
        if code != C.OK and "resize2fs" in det:
            R.log(f"ext4 growth not checked: this process lacks CAP_SYS_RESOURCE, which growing a mounted "
                  f"ext4 needs (NodeExpandVolume said {code.name} {det[:120]!r})")
            return False
    X.twice_ok("node.NodeExpandVolume", req, f"{vid}", same=lambda r: 0)
    return True


def stage(vid, path, cap, what):
    os.makedirs(path, exist_ok=True)
    SETUP["staged"].append((vid, path))
    X.twice_ok("node.NodeStageVolume", pb.NodeStageVolumeRequest(
        volume_id=vid, staging_target_path=path, volume_capability=cap), what)


def unstage(vid, path, what):
    X.twice_ok("node.NodeUnstageVolume", pb.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=path), what)


def publish(vid, staging, target, cap, what, readonly=False):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    SETUP["published"].append((vid, target))
    X.twice_ok("node.NodePublishVolume", pb.NodePublishVolumeRequest(
        volume_id=vid, staging_target_path=staging, target_path=target, volume_capability=cap,
        readonly=readonly), what)


def unpublish(vid, target, what):
    X.twice_ok("node.NodeUnpublishVolume", pb.NodeUnpublishVolumeRequest(volume_id=vid, target_path=target), what)
    R.check(not os.path.ismount(target), f"{target} still mounted after NodeUnpublishVolume")


def stats(vid, path):
    r = X.ok("node.NodeGetVolumeStats", pb.NodeGetVolumeStatsRequest(volume_id=vid, volume_path=path))
    u = {x.unit: x for x in r.usage}
    B, I = pb.VolumeUsage.BYTES, pb.VolumeUsage.INODES
    R.check(B in u and I in u, f"NodeGetVolumeStats {vid}: usage {list(r.usage)} lacks bytes or inodes")
    R.check(not r.volume_condition.abnormal, f"{vid}: abnormal condition {r.volume_condition}")
    return u.get(B), u.get(I)


def fs_lifecycle(fs):
    vid, clone, snap = f"life-{fs}", f"life-{fs}-clone", f"life-{fs}-snap"
    cap = mount_cap(fs)
    st, st2 = os.path.join(TMP, "stage", vid), os.path.join(TMP, "stage", clone)
    tg = os.path.join(TMP, "pods/p1/volumes", vid)
    tg_ro = os.path.join(TMP, "pods/p2/volumes", vid)
    tg2 = os.path.join(TMP, "pods/p3/volumes", clone)

    X.ok("controller.CreateVolume", create_req(created(vid), SIZE, P3, caps=[cap]), vid)
    stage(vid, st, cap, f"{vid} {fs}")
    m = mount_of(st)
    R.need(m is not None, f"{st} is not a mount point after NodeStageVolume")
    R.check(m[1] == fs, f"staged {vid} is {m[1]}, want {fs}")
    other = mount_cap("xfs" if fs == "ext4" else "ext4")
    X.code("node.NodeStageVolume", pb.NodeStageVolumeRequest(volume_id=vid, staging_target_path=st,
                                                              volume_capability=other),
           C.ALREADY_EXISTS, f"staged as {fs}, asked as {other.mount.fs_type}")
    R.check(mount_of(st) is not None and mount_of(st)[1] == fs, f"{st} changed by a refused NodeStageVolume")
    X.code("controller.DeleteVolume", pb.DeleteVolumeRequest(volume_id=vid), C.FAILED_PRECONDITION,
           "of a staged volume (in use)")
    R.check(vid in cluster_volumes(), f"DeleteVolume removed the staged volume {vid}")
    publish(vid, st, tg, cap, f"{vid} rw")
    R.need(os.path.ismount(tg), f"{tg} is not a mount point after NodePublishVolume")
    publish(vid, st, tg_ro, cap, f"{vid} ro", readonly=True)
    R.check("ro" in (mount_of(tg_ro) or ("", "", ""))[2].split(","), f"read-only publish is mounted {mount_of(tg_ro)}")
    try:
        open(os.path.join(tg_ro, "nope"), "w").close()
        R.check(False, "a read-only published volume accepted a new file")
    except OSError:
        pass
    # same target, other capability: ALREADY_EXISTS (spec: published but incompatible)
    X.code("node.NodePublishVolume", pb.NodePublishVolumeRequest(
        volume_id=vid, staging_target_path=st, target_path=tg, volume_capability=cap, readonly=True),
        C.ALREADY_EXISTS, "same target, now read-only")
    write_files(tg)
    sums = tree_sums(tg)
    R.check(tree_sums(tg_ro) == sums, "the read-only publish does not show the same files")
    b0, i0 = stats(vid, tg)
    if b0:
        R.check(b0.used >= 20 * MiB and b0.total >= SIZE * 0.8, f"bytes usage after writing ~21 MiB: {b0}")

    # snapshot (frozen for a clean cut) and a clone from it
    if shutil.which("fsfreeze"):
        subprocess.run(["fsfreeze", "-f", st], check=True)
    try:
        s = X.ok("controller.CreateSnapshot", pb.CreateSnapshotRequest(source_volume_id=vid, name=snap)).snapshot
        SETUP["snapshots"].append(s.snapshot_id)
    finally:
        if shutil.which("fsfreeze"):
            subprocess.run(["fsfreeze", "-u", st], check=True)
    c = X.ok("controller.CreateVolume", create_req(created(clone), SIZE, P3, caps=[cap], snap=s.snapshot_id)).volume
    R.check(c.content_source.snapshot.snapshot_id == s.snapshot_id, f"clone content_source {c.content_source}")
    # writes after the snapshot must not show in the clone
    with open(os.path.join(tg, "after-snapshot"), "wb") as f:
        f.write(b"later")
    stage(clone, st2, cap, f"{clone}")
    publish(clone, st2, tg2, cap, f"{clone}")
    got = tree_sums(tg2)
    R.check(got == sums, f"clone differs from the snapshot: {len(got)} vs {len(sums)} files; "
            f"different: {[k for k in sums if got.get(k) != sums[k]][:5]}, extra: {[k for k in got if k not in sums][:5]}")
    R.check(os.readlink(os.path.join(tg2, "link")) == "f1", "symlink lost in the clone")

    # online expansion
    before = os.statvfs(tg)
    online = expand(vid, GROWN, cap, tg, st)
    if online:
        after = os.statvfs(tg)
        old, new = before.f_blocks * before.f_frsize, after.f_blocks * after.f_frsize
        R.log(f"{fs}: df size {old >> 20} MiB -> {new >> 20} MiB")
        R.check(new >= old + (GROWN - SIZE) * 0.9, f"{fs}: df shows {new} bytes after growing to {GROWN} (was {old})")
        b1, _ = stats(vid, tg)
        if b1:
            R.check(b1.total >= new * 0.9, f"NodeGetVolumeStats total {b1.total} after expansion (df {new})")
        R.check(tree_sums(tg).items() >= sums.items(), "files changed by the expansion")

    # tear down, each call twice
    for vol_id, target in ((clone, tg2), (vid, tg_ro), (vid, tg)):
        unpublish(vol_id, target, vol_id)
    unstage(clone, st2, clone)
    unstage(vid, st, vid)
    R.check(not os.path.ismount(st) and not os.path.ismount(st2), "staging paths still mounted after NodeUnstage")
    # offline expansion (the volume staged nowhere), then staged again: the
    # filesystem (not made again) has the files and NodeExpandVolume grows it
    target = GROWN + 64 * MiB if online else GROWN
    e = X.twice_ok("controller.ControllerExpandVolume", pb.ControllerExpandVolumeRequest(
        volume_id=vid, capacity_range=pb.CapacityRange(required_bytes=target), volume_capability=cap),
        f"{vid} offline", same=lambda r: r.capacity_bytes)
    R.check(e.capacity_bytes >= target, f"offline ControllerExpandVolume gave {e.capacity_bytes}")
    stage(vid, st, cap, f"{vid} again")
    publish(vid, st, tg, cap, f"{vid} again")
    before = os.statvfs(tg)
    if node_expand(vid, target, cap, tg, st):
        after = os.statvfs(tg)
        old, new = before.f_blocks * before.f_frsize, after.f_blocks * after.f_frsize
        R.log(f"{fs}: offline expansion to {target >> 20} MiB: df size {old >> 20} MiB -> {new >> 20} MiB")
        R.check(new >= target * 0.85, f"{fs}: df shows {new} bytes after expansion to {target}")
    R.check(tree_sums(tg).items() >= sums.items(), "files lost after unstage + stage (was the volume formatted again?)")
    unpublish(vid, tg, vid)
    unstage(vid, st, vid)
    for vol_id in (clone,):
        X.twice_ok("controller.DeleteVolume", pb.DeleteVolumeRequest(volume_id=vol_id))
    X.twice_ok("controller.DeleteSnapshot", pb.DeleteSnapshotRequest(snapshot_id=s.snapshot_id))
    X.twice_ok("controller.DeleteVolume", pb.DeleteVolumeRequest(volume_id=vid))
    left = [x for x in cluster_volumes() if x.startswith(vid)]
    R.check(not left, f"volumes left: {left}")


def test_ext4():
    try:
        fs_lifecycle("ext4")
    finally:
        cleanup()


def test_xfs():
    if "xfs" not in os.environ.get("CSI_FS", "").split(","):
        R.log("xfs: mkfs.xfs not installed, not tried")
        return
    try:
        fs_lifecycle("xfs")
    finally:
        cleanup()


def test_block():
    try:
        block_lifecycle()
    finally:
        cleanup()


def block_lifecycle():
    vid, size = "life-blk", 96 * MiB
    cap = block_cap()
    st = os.path.join(TMP, "stage", vid)
    tg = os.path.join(TMP, "pods/p4/volumeDevices", vid)
    X.ok("controller.CreateVolume", create_req(created(vid), size, P3, caps=[cap]))
    stage(vid, st, cap, vid)
    publish(vid, st, tg, cap, vid)
    R.need(os.path.exists(tg), f"block publish: {tg} does not exist")
    R.need(stat.S_ISBLK(os.stat(tg).st_mode), f"block publish: {tg} is not a block device ({oct(os.stat(tg).st_mode)})")
    got = int(subprocess.run(["blockdev", "--getsize64", tg], check=True, capture_output=True, text=True).stdout)
    R.check(got == size, f"blockdev --getsize64 {tg} = {got}, want {size}")
    pattern = os.urandom(MiB)
    fd = os.open(tg, os.O_WRONLY)
    os.pwrite(fd, pattern, 5 * MiB)
    os.pwrite(fd, pattern, size - MiB)
    os.fsync(fd)
    os.close(fd)
    # the stage path must not be a filesystem mount for a block volume
    m = mount_of(st)
    R.check(m is None or m[1] not in ("ext4", "xfs"), f"block volume staged as a filesystem: {m}")
    # NodeGetVolumeStats on a block device: the bytes total, when given, is the size
    r = X.ok("node.NodeGetVolumeStats", pb.NodeGetVolumeStatsRequest(volume_id=vid, volume_path=tg))
    byts = [u for u in r.usage if u.unit == pb.VolumeUsage.BYTES]
    R.check(not byts or byts[0].total == size, f"block NodeGetVolumeStats {list(r.usage)}")
    # expansion of a published raw block volume
    if expand(vid, 2 * size, cap, tg, st):
        got = int(subprocess.run(["blockdev", "--getsize64", tg], check=True, capture_output=True, text=True).stdout)
        R.check(got == 2 * size, f"after expansion blockdev --getsize64 = {got}, want {2 * size}")
    unpublish(vid, tg, vid)
    R.check(not os.path.exists(tg) or not stat.S_ISBLK(os.stat(tg).st_mode), f"{tg} still a block device")
    unstage(vid, st, vid)
    # staged again: the data is there
    stage(vid, st, cap, vid + " again")
    publish(vid, st, tg, cap, vid + " again")
    fd = os.open(tg, os.O_RDONLY)
    a, b = os.pread(fd, MiB, 5 * MiB), os.pread(fd, MiB, size - MiB)
    os.close(fd)
    R.check(a == pattern and b == pattern, "data written through the block device did not read back after restage")
    unpublish(vid, tg, vid)
    held_unstage(vid, st)
    unstage(vid, st, vid)
    X.twice_ok("controller.DeleteVolume", pb.DeleteVolumeRequest(volume_id=vid))


def held_unstage(vid, st):
    """Another NBD client holds the volume: NodeUnstageVolume fails FAILED_PRECONDITION naming it (the
    detach is refused, the CO retries) and the volume stays attached; the caller's unstage then succeeds."""
    show = json.loads(tessera("--json", "volume", "show", vid))
    uri = next(u for u in show["nbd_uris"] if u.startswith("nbd+unix:"))
    ready = os.path.join(TMP, "held-" + vid)
    hold = subprocess.Popen([os.environ["NBD_HOLD"], uri, ready])
    try:
        for _ in range(100):
            if os.path.exists(ready):
                break
            time.sleep(0.1)
        R.need(os.path.exists(ready), "nbd_hold did not connect")
        _, det = X.code("node.NodeUnstageVolume", pb.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=st),
                        C.FAILED_PRECONDITION, vid + " held by another NBD client")
        R.check(f"unix pid {hold.pid}" in det, f"the refused unstage does not name the client: {det!r}")
        show = json.loads(tessera("--json", "volume", "show", vid))
        R.check(show.get("attached_node") == "n1", f"{vid} after the refused unstage: attached to "
                f"{show.get('attached_node')!r}, want n1")
    finally:
        hold.terminate()
        hold.wait()


def test_nothing_left():
    roots = [os.path.realpath(TMP)] + ([os.path.realpath(STATE)] if STATE else [])
    left = [m for m in mounts() if any(m[0] == r or m[0].startswith(r + "/") for r in roots)]
    R.check(not left, f"mounts left under the test dirs: {left}")
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    loops = [ln for ln in out.splitlines() if any(r in ln for r in roots)]
    R.check(not loops, f"loop devices left: {loops}")


TESTS = [test_ext4, test_xfs, test_block, test_nothing_left]

if __name__ == "__main__":
    only = os.environ.get("CSI_ONLY")
    raise SystemExit(R.run([t for t in TESTS if not only or t.__name__ in only.split(",")]))
