"""Shared pieces of the tessera-csi tests (tests/csi/test_*.py) and of
bench/csi.py: a gRPC client generated at run time from proto/csi.proto
(grpc_tools.protoc into a temp dir, Debian's python3-grpcio), call helpers
that return (response, status code) instead of raising, a tiny test runner
that records failures and goes on, and the tessera CLI as the judge of what
exists in the cluster.

Environment (set by tests/integration/test-csi-*.sh):
  CSI_ENDPOINT   path of tessera-csi's unix socket
  TSR_SRC        source tree (proto/csi.proto)
  TESSERA_CLI    the tessera CLI command line for the cluster, as a JSON list
"""
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

import grpc
from grpc_tools import protoc

_gen_dir = None


def load_proto(src=None):
    """Generate csi_pb2 / csi_pb2_grpc from proto/csi.proto; returns (pb, pb_grpc)."""
    global _gen_dir
    src = src or os.environ.get("TSR_SRC") or os.path.join(os.path.dirname(__file__), "..", "..")
    proto_dir = os.path.join(src, "proto")
    if not os.path.exists(os.path.join(proto_dir, "csi.proto")):
        raise SystemExit(f"{proto_dir}/csi.proto not found")
    _gen_dir = tempfile.mkdtemp(prefix="tessera-csi-pb-")
    atexit.register(shutil.rmtree, _gen_dir, True)
    wkt = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(["grpc_tools.protoc", f"-I{proto_dir}", f"-I{wkt}",
                      f"--python_out={_gen_dir}", f"--grpc_python_out={_gen_dir}",
                      os.path.join(proto_dir, "csi.proto")])
    if rc != 0:
        raise SystemExit(f"grpc_tools.protoc failed on {proto_dir}/csi.proto (exit {rc})")
    sys.path.insert(0, _gen_dir)
    import csi_pb2  # noqa: E402
    import csi_pb2_grpc  # noqa: E402
    return csi_pb2, csi_pb2_grpc


pb, pbg = load_proto()
C = grpc.StatusCode
MiB = 1 << 20
GiB = 1 << 30


class Client:
    """Stubs of the three services on one channel to a unix socket."""

    def __init__(self, path=None, timeout=60):
        self.path = path or os.environ["CSI_ENDPOINT"]
        self.timeout = timeout
        self.channel = grpc.insecure_channel(
            "unix://" + self.path,
            options=[("grpc.max_send_message_length", 64 * MiB),
                     ("grpc.max_receive_message_length", 64 * MiB),
                     ("grpc.enable_retries", 0)])
        self.identity = pbg.IdentityStub(self.channel)
        self.controller = pbg.ControllerStub(self.channel)
        self.node = pbg.NodeStub(self.channel)

    def call(self, method, req, timeout=None):
        """Call METHOD (e.g. "controller.CreateVolume"); returns (resp, code, details)."""
        svc, name = method.split(".")
        fn = getattr(getattr(self, svc), name)
        try:
            resp = fn(req, timeout=timeout or self.timeout)
            return resp, C.OK, ""
        except grpc.RpcError as e:
            return None, e.code(), e.details() or ""

    def close(self):
        self.channel.close()


# ------------------------------------------------------------------ requests
def mount_cap(fs="ext4", mode=None, flags=()):
    return pb.VolumeCapability(
        mount=pb.VolumeCapability.MountVolume(fs_type=fs, mount_flags=list(flags)),
        access_mode=pb.VolumeCapability.AccessMode(
            mode=mode or pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))


def block_cap(mode=None):
    return pb.VolumeCapability(
        block=pb.VolumeCapability.BlockVolume(),
        access_mode=pb.VolumeCapability.AccessMode(
            mode=mode or pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))


def create_req(name, size=64 * MiB, params=None, caps=None, limit=0, snap=None, vol=None, topo=None):
    req = pb.CreateVolumeRequest(
        name=name,
        capacity_range=pb.CapacityRange(required_bytes=size, limit_bytes=limit),
        volume_capabilities=caps if caps is not None else [mount_cap()],
        parameters=params or {})
    if snap:
        req.volume_content_source.snapshot.snapshot_id = snap
    if vol:
        req.volume_content_source.volume.volume_id = vol
    if topo is not None:
        req.accessibility_requirements.CopyFrom(topo)
    return req


def topology(requisite=(), preferred=()):
    return pb.TopologyRequirement(
        requisite=[pb.Topology(segments=s) for s in requisite],
        preferred=[pb.Topology(segments=s) for s in preferred])


# ------------------------------------------------------------------ the CLI
def tessera(*args, check=True):
    """Run the tessera CLI against the test cluster; returns its stdout."""
    cmd = json.loads(os.environ["TESSERA_CLI"]) + list(args)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def cluster_volumes():
    """Names of the volumes the cluster has, from `tessera --json volume list`."""
    j = json.loads(tessera("--json", "volume", "list"))
    vols = j["volumes"] if isinstance(j, dict) else j
    return [v["name"] for v in vols]


def cluster_snapshots(vol):
    j = json.loads(tessera("--json", "snapshot", "list", vol))
    snaps = j["snapshots"] if isinstance(j, dict) else j
    return [s["name"] for s in snaps]


# ------------------------------------------------------------------ runner
class Failure(AssertionError):
    pass


class Runner:
    """Runs test functions in order; a failed check fails its test and the
    run, the next test still runs.  check() records and goes on, need()
    stops the current test."""

    def __init__(self, name):
        self.name = name
        self.failed = []
        self.current = None
        self.t0 = time.monotonic()

    def log(self, msg):
        print(f"[{time.strftime('%H:%M:%S')} +{time.monotonic() - self.t0:.1f}s] {self.name}: {msg}",
              file=sys.stderr, flush=True)

    def check(self, cond, msg):
        if not cond:
            self.log(f"FAIL [{self.current}]: {msg}")
            self.failed.append(f"{self.current}: {msg}")
        return bool(cond)

    def need(self, cond, msg):
        if not self.check(cond, msg):
            raise Failure(msg)

    def run(self, tests):
        for fn in tests:
            self.current = fn.__name__
            n = len(self.failed)
            t = time.monotonic()
            try:
                fn()
            except Failure:
                pass
            except Exception as e:  # a bug in the test or an unexpected reply: a failure
                self.log(f"FAIL [{self.current}]: {type(e).__name__}: {e}")
                traceback.print_exc()
                self.failed.append(f"{self.current}: {type(e).__name__}: {e}")
            verdict = "ok" if len(self.failed) == n else "FAILED"
            self.log(f"{verdict}: {fn.__name__} ({time.monotonic() - t:.1f}s)")
        if self.failed:
            self.log(f"{len(self.failed)} failure(s):")
            for f in self.failed:
                print("  " + f, file=sys.stderr)
            return 1
        self.log(f"all {len(tests)} tests passed")
        return 0


class Checks:
    """Call helpers bound to a client and a runner."""

    def __init__(self, client, runner):
        self.c = client
        self.r = runner

    def ok(self, method, req, what=""):
        """The call must succeed; returns the response."""
        resp, code, det = self.c.call(method, req)
        self.r.need(code == C.OK, f"{method} {what}: {code.name} {det!r}, want OK")
        return resp

    def code(self, method, req, want, what=""):
        """The call must fail with WANT (a StatusCode or a tuple of them), and a message."""
        wants = want if isinstance(want, tuple) else (want,)
        resp, code, det = self.c.call(method, req)
        names = "/".join(w.name for w in wants)
        if self.r.check(code in wants, f"{method} {what}: got {code.name} {det!r}, want {names}"):
            self.r.check(det.strip() != "", f"{method} {what}: {code.name} without a message")
        return code, det

    def twice_ok(self, method, req, what="", same=None):
        """Succeeds twice; SAME(resp) (default: the whole response) equal both times."""
        a = self.ok(method, req, what + " (1st)")
        b = self.ok(method, req, what + " (2nd)")
        key = same or (lambda x: x.SerializeToString(deterministic=True))
        self.r.check(key(a) == key(b), f"{method} {what}: second reply differs: {a} vs {b}")
        return a

    def twice_code(self, method, req, want, what=""):
        self.code(method, req, want, what + " (1st)")
        return self.code(method, req, want, what + " (2nd)")
