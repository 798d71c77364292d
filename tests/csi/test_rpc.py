"""Every RPC of tessera-csi against a real 3-node tesserad cluster: success
and error paths with the CSI spec's codes, each call made twice
(idempotency), pagination, capacity, topology, and the volume condition of
an attached 3-replica volume after one of its nodes is killed.

Run by tests/integration/test-csi-rpc.sh, which sets, besides csilib's:
  CSI_NODE_ID, CSI_ZONE, CSI_SITE, CSI_MAX_VOLUMES   what tessera-csi was started with
  CSI_ZONES        the cluster's zones, comma-separated
  CSI_TMP          a scratch directory (staging / target paths)
  TSR_VICTIM_PID   pid of the tesserad to SIGKILL in the last test
  TSR_VICTIM_NODE  its node id;  TSR_ATTACH_NODE: the node to attach on
  NBD_SOCK         that node's NBD socket (to write to the attached volume)
"""
import json
import os
import signal
import subprocess
import time

from csilib import (GiB, MiB, C, Checks, Client, Runner, block_cap, cluster_snapshots,
                    cluster_volumes, create_req, mount_cap, pb, tessera, topology)

R = Runner("test_rpc")
cli = Client()
X = Checks(cli, R)
ZONE_KEY = "topology.tessera.io/zone"
SITE_KEY = "topology.tessera.io/site"
ZONES = set(os.environ.get("CSI_ZONES", "").split(","))
TMP = os.environ["CSI_TMP"]
P3 = {"replicas": "3", "failureDomain": "zone"}
AM = pb.VolumeCapability.AccessMode
CCAP = pb.ControllerServiceCapability.RPC
NCAP = pb.NodeServiceCapability.RPC


def vol_key(resp):
    v = resp.volume
    return (v.volume_id, v.capacity_bytes, dict(v.volume_context),
            v.content_source.SerializeToString(deterministic=True))


def create(name, **kw):
    return X.ok("controller.CreateVolume", create_req(name, **kw), name).volume


# ------------------------------------------------------------------ identity
def test_identity():
    info = X.twice_ok("identity.GetPluginInfo", pb.GetPluginInfoRequest())
    R.check(info.name == "csi.tessera.io", f"plugin name {info.name!r}")
    R.check(info.vendor_version != "", "vendor_version is empty (REQUIRED)")
    caps = X.twice_ok("identity.GetPluginCapabilities", pb.GetPluginCapabilitiesRequest())
    svc = {c.service.type for c in caps.capabilities if c.WhichOneof("type") == "service"}
    exp = {c.volume_expansion.type for c in caps.capabilities if c.WhichOneof("type") == "volume_expansion"}
    S = pb.PluginCapability.Service
    R.check(S.CONTROLLER_SERVICE in svc, "no CONTROLLER_SERVICE plugin capability")
    R.check(S.VOLUME_ACCESSIBILITY_CONSTRAINTS in svc, "no VOLUME_ACCESSIBILITY_CONSTRAINTS")
    R.check(pb.PluginCapability.VolumeExpansion.ONLINE in exp, "no ONLINE volume expansion capability")
    probe = X.twice_ok("identity.Probe", pb.ProbeRequest())
    R.check(not probe.HasField("ready") or probe.ready.value, "Probe: not ready with tesserad up")


def test_capabilities():
    caps = X.twice_ok("controller.ControllerGetCapabilities", pb.ControllerGetCapabilitiesRequest())
    have = {c.rpc.type for c in caps.capabilities}
    for want in ("CREATE_DELETE_VOLUME", "LIST_VOLUMES", "GET_CAPACITY", "CREATE_DELETE_SNAPSHOT",
                 "LIST_SNAPSHOTS", "CLONE_VOLUME", "EXPAND_VOLUME", "VOLUME_CONDITION", "GET_VOLUME"):
        R.check(getattr(CCAP, want) in have, f"controller capability {want} missing")
    R.check(CCAP.PUBLISH_UNPUBLISH_VOLUME not in have,
            "PUBLISH_UNPUBLISH_VOLUME advertised, but the CSIDriver says attachRequired: false")
    ncaps = X.twice_ok("node.NodeGetCapabilities", pb.NodeGetCapabilitiesRequest())
    nhave = {c.rpc.type for c in ncaps.capabilities}
    for want in ("STAGE_UNSTAGE_VOLUME", "EXPAND_VOLUME", "GET_VOLUME_STATS", "VOLUME_CONDITION"):
        R.check(getattr(NCAP, want) in nhave, f"node capability {want} missing")


def test_node_info():
    info = X.twice_ok("node.NodeGetInfo", pb.NodeGetInfoRequest())
    R.check(info.node_id == os.environ["CSI_NODE_ID"], f"node_id {info.node_id!r}")
    R.check(info.max_volumes_per_node == int(os.environ["CSI_MAX_VOLUMES"]),
            f"max_volumes_per_node {info.max_volumes_per_node}")
    seg = dict(info.accessible_topology.segments)
    R.check(seg.get(ZONE_KEY) == os.environ["CSI_ZONE"], f"NodeGetInfo topology {seg}: zone")
    R.check(seg.get(SITE_KEY) == os.environ["CSI_SITE"], f"NodeGetInfo topology {seg}: site")


# ------------------------------------------------------------------ CreateVolume / DeleteVolume
def test_create_volume():
    req = create_req("rpc-a", 64 * MiB, P3)
    a = X.twice_ok("controller.CreateVolume", req, "rpc-a", same=vol_key)
    v = a.volume
    R.check(v.volume_id == "rpc-a", f"volume id {v.volume_id!r}, want the Tessera volume name rpc-a")
    R.check(v.capacity_bytes >= 64 * MiB, f"capacity {v.capacity_bytes} < required {64 * MiB}")
    R.check(cluster_volumes().count("rpc-a") == 1, "rpc-a not in `tessera volume list` once")
    # capacity range honoured: limit = required -> exactly that size
    b = create("rpc-exact", size=48 * MiB, limit=48 * MiB, params=P3)
    R.check(b.capacity_bytes == 48 * MiB, f"required=limit=48MiB gave {b.capacity_bytes}")
    # no capacity range: the plugin picks a size
    req = pb.CreateVolumeRequest(name="rpc-nosize", volume_capabilities=[mount_cap()], parameters=P3)
    c = X.twice_ok("controller.CreateVolume", req, "without capacity_range", same=vol_key)
    R.check(c.volume.capacity_bytes > 0, "no capacity returned for a volume without a capacity range")
    # a block volume and a 1-replica volume
    create("rpc-block", caps=[block_cap()], params={"replicas": "1"})
    # topology: every returned segment is a zone of the cluster
    for t in v.accessible_topology:
        R.check(dict(t.segments).get(ZONE_KEY) in ZONES, f"accessible_topology {dict(t.segments)}")
    R.check(len(v.accessible_topology) > 0, "no accessible_topology in CreateVolume's reply")


def test_storageclass_parameters():
    """The StorageClasses of deploy/kubernetes, parameters as the provisioner
    passes them (csi.storage.k8s.io/* keys stripped): accepted by the driver.
    On this 3-node cluster a layout that needs more failure domains may be
    refused for room (RESOURCE_EXHAUSTED), never as a bad parameter."""
    import yaml
    path = os.path.join(os.environ["TSR_SRC"], "deploy/kubernetes/60-storageclasses.yaml")
    with open(path) as f:
        classes = [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "StorageClass"]
    R.need(classes, f"no StorageClass in {path}")
    for sc in classes:
        name = sc["metadata"]["name"]
        params = {k: str(v) for k, v in (sc.get("parameters") or {}).items()
                  if not k.startswith("csi.storage.k8s.io/")}
        fs = (sc.get("parameters") or {}).get("csi.storage.k8s.io/fstype", "ext4")
        X.ok("controller.GetCapacity", pb.GetCapacityRequest(volume_capabilities=[mount_cap(fs)],
                                                             parameters=params), f"StorageClass {name}")
        vid = f"rpc-sc-{name}"
        resp, code, det = cli.call("controller.CreateVolume", create_req(vid, 64 * MiB, params, caps=[mount_cap(fs)]))
        R.check(code in (C.OK, C.RESOURCE_EXHAUSTED),
                f"StorageClass {name} parameters {params}: CreateVolume {code.name} {det!r}")
        R.log(f"StorageClass {name}: CreateVolume {code.name} {det[:100]!r}")
        if code == C.OK:
            show = json.loads(tessera("--json", "volume", "show", vid))
            vol = show.get("volume", show)
            if "replicas" in params:
                R.check(int(vol.get("replicas", 0)) == int(params["replicas"]),
                        f"{vid}: replicas {vol.get('replicas')}, StorageClass says {params['replicas']}")
            if "failureDomain" in params:
                R.check(vol.get("failure_domain") == params["failureDomain"],
                        f"{vid}: failure domain {vol.get('failure_domain')}, StorageClass says {params['failureDomain']}")
            if "ec" in params:
                R.check(f"{vol.get('ec_k')}+{vol.get('ec_m')}" == params["ec"], f"{vid}: ec {vol}")
            X.ok("controller.DeleteVolume", pb.DeleteVolumeRequest(volume_id=vid))
    # an EC layout that fits three zones is created as one
    v = create("rpc-ec21", size=64 * MiB, params={"ec": "2+1", "failureDomain": "zone", "stripeUnit": "64K"})
    vol = json.loads(tessera("--json", "volume", "show", "rpc-ec21"))
    vol = vol.get("volume", vol)
    R.check((vol.get("ec_k"), vol.get("ec_m"), vol.get("stripe_unit")) == (2, 1, 65536),
            f"ec 2+1 volume shows {vol.get('ec_k')}+{vol.get('ec_m')} unit {vol.get('stripe_unit')}")
    R.check(v.capacity_bytes >= 64 * MiB, f"ec volume capacity {v.capacity_bytes}")
    X.twice_code("controller.CreateVolume", create_req("rpc-ec-bad", 64 * MiB, {"ec": "4+"}), C.INVALID_ARGUMENT,
                 "ec=4+")
    X.twice_code("controller.CreateVolume", create_req("rpc-min", 64 * MiB, {"replicas": "2", "minReplicas": "3"}),
                 C.INVALID_ARGUMENT, "minReplicas > replicas")
    X.twice_code("controller.CreateVolume", create_req("rpc-unit", 64 * MiB, {"ec": "2+1", "stripeUnit": "3000"}),
                 C.INVALID_ARGUMENT, "stripeUnit 3000")
    X.ok("controller.DeleteVolume", pb.DeleteVolumeRequest(volume_id="rpc-ec21"))


def test_create_volume_idempotency_conflicts():
    X.ok("controller.CreateVolume", create_req("rpc-conf", 64 * MiB, P3))
    X.twice_code("controller.CreateVolume", create_req("rpc-conf", 128 * MiB, P3), C.ALREADY_EXISTS,
                 "same name, other size")
    X.twice_code("controller.CreateVolume", create_req("rpc-conf", 64 * MiB, {"replicas": "2"}),
                 C.ALREADY_EXISTS, "same name, other replicas")
    R.check(cluster_volumes().count("rpc-conf") == 1, "rpc-conf should exist exactly once")


def test_create_volume_errors():
    X.twice_code("controller.CreateVolume", create_req("", 64 * MiB, P3), C.INVALID_ARGUMENT, "no name")
    X.twice_code("controller.CreateVolume", create_req("rpc-nocaps", 64 * MiB, P3, caps=[]),
                 C.INVALID_ARGUMENT, "no volume_capabilities")
    X.twice_code("controller.CreateVolume",
                 create_req("rpc-noaccess", caps=[pb.VolumeCapability(mount=pb.VolumeCapability.MountVolume())]),
                 C.INVALID_ARGUMENT, "capability without access_mode")
    X.twice_code("controller.CreateVolume", create_req("rpc-neg", -1, P3), C.INVALID_ARGUMENT,
                 "negative required_bytes")
    # larger than the cluster could ever hold: OUT_OF_RANGE (size not allowed) or
    # RESOURCE_EXHAUSTED (no room for it) both describe it
    X.twice_code("controller.CreateVolume", create_req("rpc-huge", 1 << 62, P3),
                 (C.OUT_OF_RANGE, C.RESOURCE_EXHAUSTED), "4 EiB")
    X.twice_code("controller.CreateVolume", create_req("rpc-tiny", 0, P3, limit=512), C.OUT_OF_RANGE,
                 "limit_bytes 512")
    X.twice_code("controller.CreateVolume", create_req("rpc-badparam", 64 * MiB, {"replicas": "three"}),
                 C.INVALID_ARGUMENT, "replicas=three")
    X.twice_code("controller.CreateVolume", create_req("rpc-unkparam", 64 * MiB, {"colour": "blue"}),
                 C.INVALID_ARGUMENT, "unknown parameter")
    X.twice_code("controller.CreateVolume",
                 create_req("rpc-bothlayouts", 64 * MiB, {"replicas": "3", "ec": "4+2"}),
                 C.INVALID_ARGUMENT, "replicas and ec")
    X.twice_code("controller.CreateVolume", create_req("rpc-fd", 64 * MiB, {"failureDomain": "planet"}),
                 C.INVALID_ARGUMENT, "failureDomain=planet")
    X.twice_code("controller.CreateVolume", create_req("rpc-mnw", 64 * MiB, P3,
                                                       caps=[mount_cap(mode=AM.MULTI_NODE_MULTI_WRITER)]),
                 C.INVALID_ARGUMENT, "MULTI_NODE_MULTI_WRITER on a filesystem")
    X.twice_code("controller.CreateVolume", create_req("rpc-nosnap", 64 * MiB, P3, snap="rpc-a@nope"),
                 C.NOT_FOUND, "unknown source snapshot")
    X.twice_code("controller.CreateVolume", create_req("rpc-novol", 64 * MiB, P3, vol="rpc-nope"),
                 C.NOT_FOUND, "unknown source volume")
    # more replicas than failure domains: the cluster cannot place them
    X.twice_code("controller.CreateVolume", create_req("rpc-r5", 64 * MiB, {"replicas": "5", "failureDomain": "zone"}),
                 (C.RESOURCE_EXHAUSTED, C.OUT_OF_RANGE, C.INVALID_ARGUMENT), "5 replicas on 3 zones")
    # requisite topology nobody satisfies
    X.twice_code("controller.CreateVolume",
                 create_req("rpc-nowhere", 64 * MiB, {"replicas": "1"}, topo=topology([{ZONE_KEY: "nowhere"}])),
                 C.RESOURCE_EXHAUSTED, "requisite zone nowhere")
    left = [v for v in cluster_volumes() if v in ("rpc-nocaps", "rpc-neg", "rpc-huge", "rpc-tiny",
                                                  "rpc-badparam", "rpc-unkparam", "rpc-nosnap",
                                                  "rpc-novol", "rpc-r5", "rpc-nowhere", "rpc-fd",
                                                  "rpc-mnw", "rpc-bothlayouts")]
    R.check(not left, f"failed CreateVolume calls left volumes behind: {left}")


def test_create_volume_topology():
    z = sorted(ZONES)[0]
    req = create_req("rpc-topo", 64 * MiB, {"replicas": "1"},
                     topo=topology([{ZONE_KEY: z}], [{ZONE_KEY: z}]))
    v = X.twice_ok("controller.CreateVolume", req, "requisite one zone", same=vol_key).volume
    segs = [dict(t.segments) for t in v.accessible_topology]
    R.check(segs and all(s.get(ZONE_KEY) == z for s in segs),
            f"requisite zone {z}: accessible_topology {segs}")


def test_delete_volume():
    create("rpc-del", params={"replicas": "2"})
    X.twice_ok("controller.DeleteVolume", pb.DeleteVolumeRequest(volume_id="rpc-del"))
    R.check("rpc-del" not in cluster_volumes(), "rpc-del still exists after DeleteVolume")
    X.twice_ok("controller.DeleteVolume", pb.DeleteVolumeRequest(volume_id="rpc-never-existed"), "unknown id")
    X.twice_code("controller.DeleteVolume", pb.DeleteVolumeRequest(), C.INVALID_ARGUMENT, "no volume_id")


# ------------------------------------------------------------------ validate, list, capacity, get
def test_validate():
    caps = [mount_cap(), block_cap()]
    r = X.twice_ok("controller.ValidateVolumeCapabilities",
                   pb.ValidateVolumeCapabilitiesRequest(volume_id="rpc-a", volume_capabilities=caps))
    R.check(r.HasField("confirmed") and len(r.confirmed.volume_capabilities) == 2,
            f"supported capabilities not confirmed: {r}")
    r = X.twice_ok("controller.ValidateVolumeCapabilities",
                   pb.ValidateVolumeCapabilitiesRequest(
                       volume_id="rpc-a", volume_capabilities=[mount_cap(mode=AM.MULTI_NODE_MULTI_WRITER)]))
    R.check(not r.HasField("confirmed"), "MULTI_NODE_MULTI_WRITER on a filesystem confirmed")
    X.twice_code("controller.ValidateVolumeCapabilities",
                 pb.ValidateVolumeCapabilitiesRequest(volume_id="rpc-nope", volume_capabilities=caps),
                 C.NOT_FOUND, "unknown volume")
    X.twice_code("controller.ValidateVolumeCapabilities",
                 pb.ValidateVolumeCapabilitiesRequest(volume_capabilities=caps), C.INVALID_ARGUMENT, "no id")
    X.twice_code("controller.ValidateVolumeCapabilities",
                 pb.ValidateVolumeCapabilitiesRequest(volume_id="rpc-a"), C.INVALID_ARGUMENT, "no capabilities")


def walk(method, mk, max_entries):
    """All entries of a paginated list, page by page; asserts pages are bounded."""
    out, token, pages = [], "", 0
    while True:
        r = X.ok(method, mk(max_entries, token), f"page {pages} token={token!r}")
        R.check(max_entries == 0 or len(r.entries) <= max_entries,
                f"{method}: {len(r.entries)} entries in a page of max {max_entries}")
        out += list(r.entries)
        pages += 1
        R.need(pages < 1000, f"{method}: pagination does not end")
        if not r.next_token:
            return out, pages
        token = r.next_token


def test_list_volumes():
    names = [f"rpc-list-{i}" for i in range(7)]
    for n in names:
        create(n, size=16 * MiB, params={"replicas": "1"})
    def mk(m, t):
        return pb.ListVolumesRequest(max_entries=m, starting_token=t)
    everything, _ = walk("controller.ListVolumes", mk, 0)
    all_ids = [e.volume.volume_id for e in everything]
    R.check(sorted(all_ids) == sorted(cluster_volumes()),
            f"ListVolumes {sorted(all_ids)} != tessera volume list {sorted(cluster_volumes())}")
    for m in (1, 2, 3, 100):
        entries, pages = walk("controller.ListVolumes", mk, m)
        ids = [e.volume.volume_id for e in entries]
        R.check(sorted(ids) == sorted(all_ids), f"max_entries={m}: walked {ids}, want each of {all_ids} once")
        R.check(m >= len(all_ids) or pages > 1, f"max_entries={m}: one page for {len(all_ids)} volumes")
    for e in everything:
        if e.volume.volume_id in names:
            R.check(e.volume.capacity_bytes == 16 * MiB, f"{e.volume.volume_id}: capacity {e.volume.capacity_bytes}")
    X.twice_code("controller.ListVolumes", mk(2, "not-a-token-%%"), C.ABORTED, "bad starting_token")
    X.twice_code("controller.ListVolumes", mk(-1, ""), C.INVALID_ARGUMENT, "max_entries -1")
    for n in names:
        X.ok("controller.DeleteVolume", pb.DeleteVolumeRequest(volume_id=n))


def test_get_capacity():
    r = X.twice_ok("controller.GetCapacity", pb.GetCapacityRequest(
        volume_capabilities=[mount_cap()], parameters=P3))
    R.check(r.available_capacity > 0, f"available_capacity {r.available_capacity}")
    r1 = X.ok("controller.GetCapacity", pb.GetCapacityRequest(parameters={"replicas": "1"}))
    R.check(r1.available_capacity >= r.available_capacity,
            f"1 replica has less room ({r1.available_capacity}) than 3 ({r.available_capacity})")
    z = sorted(ZONES)[0]
    rz = X.ok("controller.GetCapacity", pb.GetCapacityRequest(
        parameters={"replicas": "1"}, accessible_topology=pb.Topology(segments={ZONE_KEY: z})))
    R.check(0 < rz.available_capacity <= r1.available_capacity, f"capacity in zone {z}: {rz.available_capacity}")
    X.code("controller.GetCapacity", pb.GetCapacityRequest(parameters={"replicas": "x"}), C.INVALID_ARGUMENT,
           "bad parameters")


def test_controller_get_volume():
    r = X.twice_ok("controller.ControllerGetVolume", pb.ControllerGetVolumeRequest(volume_id="rpc-a"))
    R.check(r.volume.volume_id == "rpc-a" and r.volume.capacity_bytes >= 64 * MiB, f"{r.volume}")
    R.check(r.status.HasField("volume_condition") and not r.status.volume_condition.abnormal,
            f"healthy volume reported {r.status.volume_condition}")
    X.twice_code("controller.ControllerGetVolume", pb.ControllerGetVolumeRequest(volume_id="rpc-nope"),
                 C.NOT_FOUND, "unknown volume")
    X.twice_code("controller.ControllerGetVolume", pb.ControllerGetVolumeRequest(), C.INVALID_ARGUMENT, "no id")


# ------------------------------------------------------------------ snapshots, clones
def snap_key(resp):
    s = resp.snapshot
    return (s.snapshot_id, s.source_volume_id, s.size_bytes, s.creation_time.seconds,
            s.creation_time.nanos, s.ready_to_use)


def test_snapshots():
    req = pb.CreateSnapshotRequest(source_volume_id="rpc-a", name="s1")
    s = X.twice_ok("controller.CreateSnapshot", req, "s1", same=snap_key).snapshot
    R.check(s.snapshot_id == "rpc-a@s1", f"snapshot id {s.snapshot_id!r}, want rpc-a@s1")
    R.check(s.source_volume_id == "rpc-a", f"source_volume_id {s.source_volume_id!r}")
    R.check(s.ready_to_use, "snapshot not ready_to_use")
    R.check(s.size_bytes >= 0 and s.creation_time.seconds > 1.6e9, f"size/creation_time: {s}")
    R.check(cluster_snapshots("rpc-a").count("s1") == 1, "s1 not in `tessera snapshot list rpc-a`")
    # the same name for another source: ALREADY_EXISTS
    X.twice_code("controller.CreateSnapshot", pb.CreateSnapshotRequest(source_volume_id="rpc-exact", name="s1"),
                 C.ALREADY_EXISTS, "same name, other volume")
    X.twice_code("controller.CreateSnapshot", pb.CreateSnapshotRequest(source_volume_id="rpc-a"),
                 C.INVALID_ARGUMENT, "no name")
    X.twice_code("controller.CreateSnapshot", pb.CreateSnapshotRequest(name="s9"), C.INVALID_ARGUMENT,
                 "no source_volume_id")
    X.twice_code("controller.CreateSnapshot", pb.CreateSnapshotRequest(source_volume_id="rpc-nope", name="s9"),
                 C.NOT_FOUND, "unknown source volume")
    # clone from the snapshot and from the volume
    c = X.twice_ok("controller.CreateVolume", create_req("rpc-clone", 64 * MiB, P3, snap="rpc-a@s1"),
                   "clone of rpc-a@s1", same=vol_key).volume
    R.check(c.content_source.snapshot.snapshot_id == "rpc-a@s1", f"clone content_source {c.content_source}")
    R.check(c.capacity_bytes >= 64 * MiB, f"clone capacity {c.capacity_bytes}")
    c2 = X.twice_ok("controller.CreateVolume", create_req("rpc-vclone", 64 * MiB, P3, vol="rpc-a"),
                    "clone of rpc-a", same=vol_key).volume
    R.check(c2.content_source.volume.volume_id == "rpc-a", f"volume clone content_source {c2.content_source}")
    X.twice_code("controller.CreateVolume", create_req("rpc-clone", 64 * MiB, P3, vol="rpc-exact"),
                 (C.ALREADY_EXISTS,), "same clone name, other source")
    X.code("controller.CreateVolume", create_req("rpc-small-clone", 16 * MiB, P3, limit=16 * MiB, snap="rpc-a@s1"),
           (C.OUT_OF_RANGE, C.INVALID_ARGUMENT), "clone smaller than its snapshot")
    # a snapshot in use by a clone, then deletion
    for v in ("rpc-clone", "rpc-vclone"):
        X.ok("controller.DeleteVolume", pb.DeleteVolumeRequest(volume_id=v))
    X.twice_ok("controller.DeleteSnapshot", pb.DeleteSnapshotRequest(snapshot_id="rpc-a@s1"))
    R.check("s1" not in cluster_snapshots("rpc-a"), "s1 still listed after DeleteSnapshot")
    X.twice_ok("controller.DeleteSnapshot", pb.DeleteSnapshotRequest(snapshot_id="rpc-a@never"), "unknown id")
    X.twice_ok("controller.DeleteSnapshot", pb.DeleteSnapshotRequest(snapshot_id="no-such-vol@x"), "unknown volume")
    X.twice_code("controller.DeleteSnapshot", pb.DeleteSnapshotRequest(), C.INVALID_ARGUMENT, "no id")


def test_list_snapshots():
    mine = []
    for vol, n in (("rpc-a", 4), ("rpc-exact", 2)):
        for i in range(n):
            s = X.ok("controller.CreateSnapshot", pb.CreateSnapshotRequest(source_volume_id=vol, name=f"ls-{vol}-{i}")).snapshot
            mine.append(s.snapshot_id)

    def mk(m, t, **kw):
        return pb.ListSnapshotsRequest(max_entries=m, starting_token=t, **kw)
    everything, _ = walk("controller.ListSnapshots", mk, 0)
    all_ids = [e.snapshot.snapshot_id for e in everything]
    R.check(all(i in all_ids for i in mine), f"ListSnapshots {all_ids} lacks some of {mine}")
    R.check(len(set(all_ids)) == len(all_ids), f"ListSnapshots repeats entries: {all_ids}")
    for m in (1, 2, 5):
        entries, pages = walk("controller.ListSnapshots", mk, m)
        ids = [e.snapshot.snapshot_id for e in entries]
        R.check(sorted(ids) == sorted(all_ids), f"max_entries={m}: walked {ids}, want {all_ids}")
        R.check(pages > 1, f"max_entries={m}: one page for {len(all_ids)} snapshots")
    by_vol, _ = walk("controller.ListSnapshots", lambda m, t: mk(m, t, source_volume_id="rpc-a"), 3)
    ids = sorted(e.snapshot.snapshot_id for e in by_vol)
    R.check(ids == sorted(i for i in all_ids if i.startswith("rpc-a@")),
            f"source_volume_id=rpc-a filter: {ids}")
    r = X.twice_ok("controller.ListSnapshots", mk(0, "", snapshot_id="rpc-exact@ls-rpc-exact-1"))
    R.check([e.snapshot.snapshot_id for e in r.entries] == ["rpc-exact@ls-rpc-exact-1"], f"snapshot_id filter: {r}")
    R.check(all(e.snapshot.source_volume_id == "rpc-exact" for e in r.entries), "source_volume_id of rpc-exact@ls-rpc-exact-1")
    for what, kw in (("unknown snapshot", {"snapshot_id": "rpc-a@none"}),
                     ("snapshot of an unknown volume", {"snapshot_id": "rpc-nope@x"}),
                     ("unknown source volume", {"source_volume_id": "rpc-nope"})):
        r = X.twice_ok("controller.ListSnapshots", mk(0, "", **kw), what)
        R.check(len(r.entries) == 0, f"{what}: {len(r.entries)} entries, want none")
    X.twice_code("controller.ListSnapshots", mk(2, "garbage-token"), C.ABORTED, "bad starting_token")
    X.twice_code("controller.ListSnapshots", mk(-5, ""), C.INVALID_ARGUMENT, "max_entries -5")
    for sid in mine:
        X.ok("controller.DeleteSnapshot", pb.DeleteSnapshotRequest(snapshot_id=sid))


# ------------------------------------------------------------------ expansion
def test_controller_expand():
    def req(vid, size, limit=0):
        return pb.ControllerExpandVolumeRequest(
            volume_id=vid, capacity_range=pb.CapacityRange(required_bytes=size, limit_bytes=limit),
            volume_capability=mount_cap())
    r = X.twice_ok("controller.ControllerExpandVolume", req("rpc-exact", 96 * MiB), "grow to 96 MiB")
    R.check(r.capacity_bytes >= 96 * MiB, f"expanded capacity {r.capacity_bytes}")
    R.check(r.node_expansion_required, "a filesystem volume must need NodeExpandVolume after growing")
    g = X.ok("controller.ControllerGetVolume", pb.ControllerGetVolumeRequest(volume_id="rpc-exact"))
    R.check(g.volume.capacity_bytes == r.capacity_bytes, f"ControllerGetVolume after expand: {g.volume.capacity_bytes}")
    X.twice_code("controller.ControllerExpandVolume", req("rpc-nope", 96 * MiB), C.NOT_FOUND, "unknown volume")
    X.twice_code("controller.ControllerExpandVolume", req("", 96 * MiB), C.INVALID_ARGUMENT, "no volume_id")
    X.twice_code("controller.ControllerExpandVolume", pb.ControllerExpandVolumeRequest(volume_id="rpc-exact"),
                 C.INVALID_ARGUMENT, "no capacity_range")
    X.twice_code("controller.ControllerExpandVolume", req("rpc-exact", 1 << 62),
                 (C.OUT_OF_RANGE, C.RESOURCE_EXHAUSTED), "4 EiB")
    b = X.ok("controller.ControllerExpandVolume", pb.ControllerExpandVolumeRequest(
        volume_id="rpc-block", capacity_range=pb.CapacityRange(required_bytes=32 * MiB),
        volume_capability=block_cap()))
    R.check(b.capacity_bytes >= 32 * MiB, f"block expand {b.capacity_bytes}")


# ------------------------------------------------------------------ node error paths (no mounts)
def test_node_errors():
    st = os.path.join(TMP, "stage-x")
    tg = os.path.join(TMP, "target-x")
    os.makedirs(st, exist_ok=True)
    cap = mount_cap()
    N = pb.NodeStageVolumeRequest
    X.twice_code("node.NodeStageVolume", N(staging_target_path=st, volume_capability=cap), C.INVALID_ARGUMENT, "no id")
    X.twice_code("node.NodeStageVolume", N(volume_id="rpc-a", volume_capability=cap), C.INVALID_ARGUMENT, "no path")
    X.twice_code("node.NodeStageVolume", N(volume_id="rpc-a", staging_target_path=st), C.INVALID_ARGUMENT, "no cap")
    X.twice_code("node.NodeStageVolume", N(volume_id="rpc-nope", staging_target_path=st, volume_capability=cap),
                 C.NOT_FOUND, "unknown volume")
    U = pb.NodeUnstageVolumeRequest
    X.twice_code("node.NodeUnstageVolume", U(staging_target_path=st), C.INVALID_ARGUMENT, "no id")
    X.twice_code("node.NodeUnstageVolume", U(volume_id="rpc-a"), C.INVALID_ARGUMENT, "no path")
    X.twice_ok("node.NodeUnstageVolume", U(volume_id="rpc-a", staging_target_path=st), "not staged")
    P = pb.NodePublishVolumeRequest
    X.twice_code("node.NodePublishVolume", P(staging_target_path=st, target_path=tg, volume_capability=cap),
                 C.INVALID_ARGUMENT, "no id")
    X.twice_code("node.NodePublishVolume", P(volume_id="rpc-a", staging_target_path=st, volume_capability=cap),
                 C.INVALID_ARGUMENT, "no target_path")
    X.twice_code("node.NodePublishVolume", P(volume_id="rpc-a", staging_target_path=st, target_path=tg),
                 C.INVALID_ARGUMENT, "no capability")
    X.twice_code("node.NodePublishVolume", P(volume_id="rpc-a", target_path=tg, volume_capability=cap),
                 C.FAILED_PRECONDITION, "no staging_target_path (STAGE_UNSTAGE_VOLUME advertised)")
    X.twice_code("node.NodePublishVolume", P(volume_id="rpc-nope", staging_target_path=st, target_path=tg,
                                             volume_capability=cap), C.NOT_FOUND, "unknown volume")
    _, code, _ = X.c.call("node.NodePublishVolume", P(volume_id="rpc-a", staging_target_path=st, target_path=tg,
                                                      volume_capability=cap))
    R.check(code != C.OK, "NodePublishVolume of a volume that is not staged succeeded")
    R.check(not os.path.ismount(tg), f"{tg} is mounted after a refused NodePublishVolume")
    Q = pb.NodeUnpublishVolumeRequest
    X.twice_code("node.NodeUnpublishVolume", Q(target_path=tg), C.INVALID_ARGUMENT, "no id")
    X.twice_code("node.NodeUnpublishVolume", Q(volume_id="rpc-a"), C.INVALID_ARGUMENT, "no target_path")
    X.twice_ok("node.NodeUnpublishVolume", Q(volume_id="rpc-a", target_path=tg), "not published")
    X.twice_code("node.NodeUnpublishVolume", Q(volume_id="rpc-nope", target_path=tg), C.NOT_FOUND, "unknown volume")
    S = pb.NodeGetVolumeStatsRequest
    X.twice_code("node.NodeGetVolumeStats", S(volume_path=tg), C.INVALID_ARGUMENT, "no id")
    X.twice_code("node.NodeGetVolumeStats", S(volume_id="rpc-a"), C.INVALID_ARGUMENT, "no path")
    X.twice_code("node.NodeGetVolumeStats", S(volume_id="rpc-nope", volume_path=tg), C.NOT_FOUND, "unknown volume")
    X.twice_code("node.NodeGetVolumeStats", S(volume_id="rpc-a", volume_path=os.path.join(TMP, "nothing-here")),
                 C.NOT_FOUND, "path that does not exist")
    E = pb.NodeExpandVolumeRequest
    X.twice_code("node.NodeExpandVolume", E(volume_path=tg), C.INVALID_ARGUMENT, "no id")
    X.twice_code("node.NodeExpandVolume", E(volume_id="rpc-a"), C.INVALID_ARGUMENT, "no path")
    X.twice_code("node.NodeExpandVolume", E(volume_id="rpc-nope", volume_path=tg), C.NOT_FOUND, "unknown volume")


# ------------------------------------------------------------------ condition after a node loss (last)
def test_volume_condition_after_node_loss():
    victim_pid = int(os.environ["TSR_VICTIM_PID"])
    victim = os.environ["TSR_VICTIM_NODE"]
    create("rpc-cond", size=64 * MiB, params=P3)
    tessera("volume", "attach", "rpc-cond", "--node", os.environ["TSR_ATTACH_NODE"])
    g = X.ok("controller.ControllerGetVolume", pb.ControllerGetVolumeRequest(volume_id="rpc-cond"))
    R.check(not g.status.volume_condition.abnormal, f"attached healthy volume abnormal: {g.status}")
    R.log(f"SIGKILL {victim} (pid {victim_pid})")
    os.kill(victim_pid, signal.SIGKILL)
    uri = f"nbd+unix:///rpc-cond?socket={os.environ['NBD_SOCK']}"
    blob = os.path.join(TMP, "blob")
    with open(blob, "wb") as f:
        f.write(os.urandom(MiB))
    cond, deadline = None, time.monotonic() + 30
    while time.monotonic() < deadline:
        # writes make the coordinator notice the missing copy
        subprocess.run(["nbdcopy", blob, uri], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20)
        g = X.ok("controller.ControllerGetVolume", pb.ControllerGetVolumeRequest(volume_id="rpc-cond"))
        cond = g.status.volume_condition
        if cond.abnormal:
            break
        time.sleep(0.5)
    R.check(cond is not None and cond.abnormal, f"volume with a dead copy still normal after 30 s: {cond}")
    if cond and cond.abnormal:
        R.log(f"volume condition: {cond.message!r}")
        R.check(cond.message.strip() != "", "abnormal without a message")
        R.check(victim in cond.message or "sync" in cond.message or "degraded" in cond.message,
                f"message does not say what is wrong (node {victim}, degraded/out of sync): {cond.message!r}")
    lst, _ = walk("controller.ListVolumes", lambda m, t: pb.ListVolumesRequest(max_entries=m, starting_token=t), 0)
    for e in lst:
        if e.volume.volume_id == "rpc-cond" and e.HasField("status"):
            R.check(e.status.volume_condition.abnormal, f"ListVolumes reports rpc-cond normal: {e.status}")
    p = X.ok("identity.Probe", pb.ProbeRequest())
    R.check(not p.HasField("ready") or p.ready.value, "Probe not ready while the local tesserad is up")


def test_probe_at_end():
    X.twice_ok("identity.Probe", pb.ProbeRequest())


TESTS = [test_identity, test_capabilities, test_node_info, test_create_volume, test_storageclass_parameters,
         test_create_volume_idempotency_conflicts, test_create_volume_errors, test_create_volume_topology,
         test_delete_volume, test_validate, test_list_volumes, test_get_capacity, test_controller_get_volume,
         test_snapshots, test_list_snapshots, test_controller_expand, test_node_errors,
         test_volume_condition_after_node_loss, test_probe_at_end]

if __name__ == "__main__":
    only = os.environ.get("CSI_ONLY")
    tests = [t for t in TESTS if not only or t.__name__ in only.split(",")]
    raise SystemExit(R.run(tests))
