"""tessera-csi benchmark driver (run by bench/csi.sh; one JSON document on stdout).

  1. CreateVolume + DeleteVolume round trips, one at a time (ROUNDS, after 5
     warm-up rounds), for 3 replicas and for 1: p50 / p99 / max of the round
     trip and of each call; and 20 rounds of the same through the tessera CLI
     (3 replicas) as the baseline of what the cluster itself takes.
  2. PARALLEL volumes created at once (one thread and connection each), then
     deleted at once: errors counted, volumes counted with `tessera volume
     list`, wall time; REPEATS times.
  3. NodeStageVolume of a fresh 10 GiB volume with mkfs.ext4 (root only):
     REPEATS times, each on a new volume, then unstaged and deleted.
Environment: csilib's, plus BENCH_ROUNDS, BENCH_PARALLEL, BENCH_REPEATS, CSI_TMP.
"""
import json
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.environ["TSR_SRC"], "tests", "csi"))
from csilib import GiB, MiB, C, Client, cluster_volumes, create_req, mount_cap, pb, tessera  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "100"))
PARALLEL = int(os.environ.get("BENCH_PARALLEL", "100"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
cli = Client(timeout=120)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] csi.py: {msg}", file=sys.stderr, flush=True)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def ms(xs):
    return {"p50_ms": round(pct(xs, 50) * 1e3, 2), "p99_ms": round(pct(xs, 99) * 1e3, 2),
            "max_ms": round(max(xs) * 1e3, 2), "n": len(xs)}


def must(method, req):
    resp, code, det = cli.call(method, req)
    if code != C.OK:
        raise SystemExit(f"{method}: {code.name} {det}")
    return resp


def round_trips(params, tag):
    for i in range(5):
        must("controller.CreateVolume", create_req(f"bw-{tag}-{i}", GiB, params))
        must("controller.DeleteVolume", pb.DeleteVolumeRequest(volume_id=f"bw-{tag}-{i}"))
    rt, cr, de = [], [], []
    for i in range(ROUNDS):
        name = f"b-{tag}-{i}"
        t0 = time.perf_counter()
        must("controller.CreateVolume", create_req(name, GiB, params))
        t1 = time.perf_counter()
        must("controller.DeleteVolume", pb.DeleteVolumeRequest(volume_id=name))
        t2 = time.perf_counter()
        rt.append(t2 - t0)
        cr.append(t1 - t0)
        de.append(t2 - t1)
    r = {"round_trip": ms(rt), "create": ms(cr), "delete": ms(de)}
    log(f"round trip {tag}: {r['round_trip']}")
    return r


def cli_baseline(n=20):
    """The same create + delete through the tessera CLI (a process per call,
    admin API straight to tesserad): what the cluster itself costs."""
    rt = []
    for i in range(n):
        t0 = time.perf_counter()
        tessera("volume", "create", f"cli-{i}", "--size", "1G", "--replicas", "3")
        tessera("volume", "delete", f"cli-{i}")
        rt.append(time.perf_counter() - t0)
    r = ms(rt)
    log(f"CLI baseline: {r}")
    return r


def parallel(rep):
    names = [f"p{rep}-{i}" for i in range(PARALLEL)]
    res = [None] * PARALLEL
    barrier = threading.Barrier(PARALLEL)

    def one(i, method, req):
        c = Client(timeout=300)
        barrier.wait()
        t = time.perf_counter()
        _, code, det = c.call(method, req)
        res[i] = (code, det, time.perf_counter() - t)
        c.close()

    def run(method, mk):
        th = [threading.Thread(target=one, args=(i, method, mk(n))) for i, n in enumerate(names)]
        t0 = time.perf_counter()
        for t in th:
            t.start()
        for t in th:
            t.join()
        return time.perf_counter() - t0, list(res)

    wall_c, rc = run("controller.CreateVolume", lambda n: create_req(n, GiB, {"replicas": "3"}))
    have = sum(1 for v in cluster_volumes() if v in names)
    wall_d, rd = run("controller.DeleteVolume", lambda n: pb.DeleteVolumeRequest(volume_id=n))
    left = sum(1 for v in cluster_volumes() if v in names)
    errs = [f"{c.name}: {d}" for c, d, _ in rc if c != C.OK]
    out = {"create_wall_s": round(wall_c, 3), "create_errors": len(errs), "volumes_counted": have,
           "create_call": ms([x[2] for x in rc]), "delete_wall_s": round(wall_d, 3),
           "delete_errors": sum(1 for c, _, _ in rd if c != C.OK), "left_after_delete": left,
           "first_errors": errs[:3]}
    log(f"parallel #{rep}: {out}")
    return out


def stage_10g(rep):
    tmp = os.environ["CSI_TMP"]
    name = f"stage10g-{rep}"
    st = os.path.join(tmp, "stage", name)
    os.makedirs(st, exist_ok=True)
    cap = mount_cap("ext4")
    must("controller.CreateVolume", create_req(name, 10 * GiB, {"replicas": "3"}, caps=[cap]))
    t0 = time.perf_counter()
    must("node.NodeStageVolume", pb.NodeStageVolumeRequest(volume_id=name, staging_target_path=st,
                                                            volume_capability=cap))
    dt = time.perf_counter() - t0
    size = os.statvfs(st)
    t1 = time.perf_counter()
    must("node.NodeUnstageVolume", pb.NodeUnstageVolumeRequest(volume_id=name, staging_target_path=st))
    du = time.perf_counter() - t1
    must("controller.DeleteVolume", pb.DeleteVolumeRequest(volume_id=name))
    log(f"NodeStage 10 GiB #{rep}: {dt:.2f} s (fs {size.f_blocks * size.f_frsize >> 20} MiB), unstage {du:.2f} s")
    return {"stage_s": round(dt, 3), "unstage_s": round(du, 3)}


def main():
    out = {"rounds": ROUNDS, "parallel": PARALLEL, "repeats": REPEATS}
    out["round_trip_3_replicas"] = round_trips({"replicas": "3"}, "r3")
    out["round_trip_1_replica"] = round_trips({"replicas": "1"}, "r1")
    out["cli_round_trip_3_replicas"] = cli_baseline()
    out["parallel_runs"] = [parallel(r) for r in range(REPEATS)]
    if os.geteuid() == 0 and os.path.exists("/dev/fuse"):
        out["stage_10g_runs"] = [stage_10g(r) for r in range(REPEATS)]
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
