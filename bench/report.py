#!/usr/bin/python3
"""Aggregate fio-shaped JSON results of bench/run.sh into JSON and markdown.

  report.py --one FILE
      one line summary of one fio/tessera-bench JSON (for the progress log)
  report.py --dir DIR --targets "T..." --jobs "J..." --json OUT --md OUT [--meta k=v ...]
      DIR holds TARGET@JOB@REPEAT.json files; reports the median over repeats
      of IOPS, MB/s and completion latency p50/p99 per target and job, and the
      ratios tessera/raw and tessera/nbdkit-file (IOPS), and the 4k QD1 p50
      latency delta of tessera vs raw in microseconds.
"""
import argparse
import glob
import json
import os
import statistics
import sys

# Which direction's latency a job is judged by.
READ_JOBS = ("randread", "randrw")


def load(path):
    with open(path) as f:
        text = f.read()
    # fio may print notes before the JSON document.
    return json.loads(text[text.index("{"):])


def pct(clat, key):
    p = clat.get("percentile") or {}
    for k in (key, key.rstrip("0").rstrip(".")):
        if k in p:
            return p[k] / 1000.0
    return None


def metrics(doc, job):
    """IOPS, MB/s (both directions), p50/p99 completion latency in us."""
    jobs = doc.get("jobs") or []
    if not jobs:
        raise ValueError("no jobs[] in the result")
    iops = bw = 0.0
    lat_dir = "read" if any(r in job for r in READ_JOBS) else "write"
    lat = {}
    for d in ("read", "write"):
        s = jobs[0].get(d) or {}
        iops += s.get("iops", 0) or 0
        if "bw_bytes" in s:
            bw += s["bw_bytes"]
        else:
            bw += (s.get("bw", 0) or 0) * 1024
        if d == lat_dir:
            clat = s.get("clat_ns") or {}
            lat = {"p50_us": pct(clat, "50.000000"), "p99_us": pct(clat, "99.000000"),
                   "mean_us": (clat.get("mean") or 0) / 1000.0}
    return dict(iops=iops, mbps=bw / 1e6, **lat)


def one(path):
    name = os.path.basename(path)
    job = name.split("@")[1] if "@" in name else name
    m = metrics(load(path), job)
    p50 = "%.0f" % m["p50_us"] if m.get("p50_us") is not None else "?"
    p99 = "%.0f" % m["p99_us"] if m.get("p99_us") is not None else "?"
    return "%.0f IOPS, %.1f MB/s, clat p50 %s us p99 %s us" % (m["iops"], m["mbps"], p50, p99)


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, spec="%.0f"):
    return "-" if v is None else spec % v


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--one")
    ap.add_argument("--dir")
    ap.add_argument("--targets", default="")
    ap.add_argument("--jobs", default="")
    ap.add_argument("--json")
    ap.add_argument("--md")
    ap.add_argument("--meta", nargs="*", default=[])
    a = ap.parse_args()
    if a.one:
        try:
            print(one(a.one))
        except Exception as e:  # a progress line must not stop the run
            print("unreadable result: %s" % e)
        return 0

    targets, jobs = a.targets.split(), a.jobs.split()
    meta = dict(kv.split("=", 1) for kv in a.meta)
    results = {}
    for t in targets:
        for j in jobs:
            runs = []
            for path in sorted(glob.glob(os.path.join(a.dir, "%s@%s@*.json" % (t, j)))):
                try:
                    runs.append(metrics(load(path), j))
                except Exception as e:
                    print("report: skipping %s: %s" % (path, e), file=sys.stderr)
            if not runs:
                continue
            results.setdefault(t, {})[j] = {
                "runs": len(runs),
                "iops": median(r["iops"] for r in runs),
                "mbps": median(r["mbps"] for r in runs),
                "p50_us": median(r.get("p50_us") for r in runs),
                "p99_us": median(r.get("p99_us") for r in runs),
                "all_iops": [round(r["iops"]) for r in runs],
            }

    def get(t, j, k):
        return results.get(t, {}).get(j, {}).get(k)

    ratios = {}
    for j in jobs:
        ratios[j] = {
            "tessera/raw": ratio(get("tessera", j, "iops"), get("raw", j, "iops")),
            "tessera/nbdkit-file": ratio(get("tessera", j, "iops"), get("nbdkit-file", j, "iops")),
            "tessera/nbdkit-memory": ratio(get("tessera", j, "iops"), get("nbdkit-memory", j, "iops")),
            "tessera-bench/tessera": ratio(get("tessera-bench", j, "iops"), get("tessera", j, "iops")),
        }
    qd1 = "4k_randwrite_qd1"
    delta = None
    if get("tessera", qd1, "p50_us") is not None and get("raw", qd1, "p50_us") is not None:
        delta = get("tessera", qd1, "p50_us") - get("raw", qd1, "p50_us")

    doc = {"meta": meta, "results": results, "ratios": ratios, "qd1_p50_delta_us": delta}
    with open(a.json, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)

    lines = ["# Tessera bench %s" % meta.get("commit", ""), ""]
    lines.append("Same machine, one run of bench/run.sh: %s s per run (ramp %s s), median of %s, "
                 "%s per target; kernel %s, %s CPUs, %s; tesserad --io %s; disk %s." % (
                     meta.get("runtime"), meta.get("ramp"), meta.get("repeats"), meta.get("size"),
                     meta.get("kernel"), meta.get("cpus"), meta.get("fio"), meta.get("tesserad_io"),
                     meta.get("disk")))
    lines.append("")
    lines.append("| job | target | IOPS | MB/s | clat p50 (us) | clat p99 (us) |")
    lines.append("|---|---|---:|---:|---:|---:|")
    for j in jobs:
        for t in targets:
            if j not in results.get(t, {}):
                continue
            r = results[t][j]
            lines.append("| %s | %s | %s | %s | %s | %s |" % (
                j, t, fmt(r["iops"]), fmt(r["mbps"], "%.1f"), fmt(r["p50_us"]), fmt(r["p99_us"])))
    lines.append("")
    lines.append("Latency is the read direction for randread and randrw jobs, the write direction "
                 "otherwise. Ratios are IOPS ratios.")
    lines.append("")
    lines.append("| job | tessera/raw | tessera/nbdkit-file | tessera/nbdkit-memory | tessera-bench/fio |")
    lines.append("|---|---:|---:|---:|---:|")
    for j in jobs:
        r = ratios[j]
        lines.append("| %s | %s | %s | %s | %s |" % (
            j, fmt(r["tessera/raw"], "%.2fx"), fmt(r["tessera/nbdkit-file"], "%.2fx"),
            fmt(r["tessera/nbdkit-memory"], "%.2fx"), fmt(r["tessera-bench/tessera"], "%.2fx")))
    lines.append("")
    lines.append("4k randwrite QD1 p50: tessera %s us, raw %s us, delta %s us." % (
        fmt(get("tessera", qd1, "p50_us"), "%.1f"), fmt(get("raw", qd1, "p50_us"), "%.1f"),
        fmt(delta, "%+.1f")))
    with open(a.md, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
