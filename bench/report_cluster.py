#!/usr/bin/python3
"""Turn bench/cluster.sh's fio JSON into bench/results/cluster-*.json and .md.

usage: report_cluster.py FIO_DIR REPEATS OUT_PREFIX "JOB ..."
Medians over the repeats; ratios against the physical limit (raw-limit: the
total of 3 jobs on 3 files, divided by 3) and the raw file's QD1 latency.
"""
import json
import statistics
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def fio_figures(j):
    """Sum of IOPS/bandwidth over all jobs; latency percentiles of the first."""
    iops = bw = 0.0
    p50 = p99 = None
    for job in j["jobs"]:
        for d in ("read", "write"):
            iops += job[d]["iops"]
            bw += job[d]["bw_bytes"] if "bw_bytes" in job[d] else job[d]["bw"] * 1024
        if p50 is None and job["write"]["iops"] > 0:
            pct = job["write"]["clat_ns"].get("percentile", {})
            p50 = pct.get("50.000000")
            p99 = pct.get("99.000000")
    return {"iops": iops, "bw": bw, "p50_ns": p50, "p99_ns": p99}


def main():
    fio_dir, repeats, out, jobs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split()
    res = {"jobs": {}, "repeats": repeats}
    for job in jobs:
        res["jobs"][job] = {}
        for target in ("raw-limit", "raw-1", "tessera-r3"):
            runs = [fio_figures(load(f"{fio_dir}/{target}.{job}.{r}.json")) for r in range(1, repeats + 1)]
            med = {}
            for k in ("iops", "bw", "p50_ns", "p99_ns"):
                vals = [x[k] for x in runs if x[k] is not None]
                med[k] = statistics.median(vals) if vals else None
            if target == "raw-limit":
                med["iops"] /= 3
                med["bw"] /= 3
            res["jobs"][job][target] = med
        try:
            res["jobs"][job]["ceph-r3"] = fio_figures(load(f"{fio_dir}/ceph-r3.{job}.json"))
        except FileNotFoundError:
            pass
    try:
        rs = load(f"{fio_dir}/resync.json")
        raw = fio_figures(load(f"{fio_dir}/raw-seqwrite.json"))
        rs["bw"] = rs["copied"] / rs["seconds"] if rs["seconds"] > 0 else 0
        rs["raw_seq_bw"] = raw["bw"]
        try:
            # read one file and write another at once: the resync's disk work
            cp = load(f"{fio_dir}/raw-copy.json")
            secs = max(job["job_runtime"] for job in cp["jobs"]) / 1000
            rs["raw_copy_bw"] = rs["copied"] / secs if secs > 0 else None
        except (FileNotFoundError, KeyError):
            pass
        res["resync"] = rs
    except FileNotFoundError:
        pass
    try:
        res["memory"] = load(f"{fio_dir}/memory.json")
    except FileNotFoundError:
        pass
    with open(out + ".json", "w") as f:
        json.dump(res, f, indent=2)

    lines = ["# Replication benchmark (bench/cluster.sh)", ""]
    if jobs:
        lines += [f"Median of {repeats} runs. raw-limit = fio 3 jobs on 3 files / 3 "
                  "(three copies share one disk); raw-1 = fio on one file.", "",
                  "| job | raw-limit IOPS | raw-1 IOPS | tessera-r3 IOPS | r3 / limit | raw-1 p50 us | r3 p50 us | r3 p99 us | r3 p50 / raw p50 |",
                  "|---|---|---|---|---|---|---|---|---|"]
    for job in jobs:
        j = res["jobs"][job]
        lim, r1, t = j["raw-limit"], j["raw-1"], j["tessera-r3"]
        ratio = t["iops"] / lim["iops"] if lim["iops"] else 0
        us = lambda v: f"{v / 1000:.1f}" if v else "-"
        lat = (t["p50_ns"] / r1["p50_ns"]) if t["p50_ns"] and r1["p50_ns"] else 0
        lines.append(f"| {job} | {lim['iops']:.0f} | {r1['iops']:.0f} | {t['iops']:.0f} | {ratio:.2f}x | "
                     f"{us(r1['p50_ns'])} | {us(t['p50_ns'])} | {us(t['p99_ns'])} | {lat:.2f}x |")
    if "resync" in res:
        rs = res["resync"]
        raw = rs["raw_seq_bw"] or 1
        line = (f"Resync: {rs['copied'] / 2**20:.0f} MiB copied; from the node's restart to in-sync "
                f"{rs['seconds']:.1f} s = {rs['bw'] / 2**20:.0f} MiB/s ({rs['bw'] / raw:.2f}x raw sequential "
                f"write {raw / 2**20:.0f} MiB/s)")
        if rs.get("copy_seconds"):
            cbw = rs["copied"] / rs["copy_seconds"]
            rs["copy_bw"] = cbw
            line += (f"; the copy phase alone (resyncing to in-sync) {rs['copy_seconds']:.1f} s = "
                     f"{cbw / 2**20:.0f} MiB/s ({cbw / raw:.2f}x). The copy reads the source copy and "
                     "writes the target on the same disk.")
            if rs.get("raw_copy_bw"):
                line += (f" The same disk work by fio (one file read while another is written, 2M QD6 "
                         f"each): {rs['raw_copy_bw'] / 2**20:.0f} MiB/s; the copy phase is "
                         f"{cbw / rs['raw_copy_bw']:.2f}x of that.")
        d = rs.get("disk")
        if d:
            kib = lambda sec, n: f"{sec * 512 / n / 1024:.0f} KiB" if n else "-"
            line += (f" Disk during the resync (whole machine): {d['reads']} reads of {kib(d['read_sectors'], d['reads'])} "
                     f"on average, {d['writes']} writes of {kib(d['write_sectors'], d['writes'])}, "
                     f"{d['flushes']} flushes" + (f" ({d['flush_ms']} ms spent flushing)." if "flush_ms" in d else "."))
        cpu = rs.get("cpu_s")
        if cpu:
            line += (f" CPU from the node's restart to in-sync: coordinator n1 {cpu['n1']:.2f} s, "
                     f"resyncing n3 {cpu['n3']:.2f} s (its start included), over {rs['seconds']:.1f} s "
                     "on 2 vCPUs shared with the rest of the machine.")
        lines += ["", line]
    if "memory" in res:
        m = res["memory"]
        lines += ["", f"Memory: one tesserad coordinating {m['volumes']} attached 10 GiB 3-replica volumes: "
                  f"RSS {m['rss_kb'] / 1024:.0f} MiB"]
    if any("ceph-r3" in res["jobs"][j] for j in jobs):
        lines += ["", "Ceph RBD 16.2, size 3, 3 BlueStore OSDs on this machine (../shared/peers/ceph-rbd.sh, "
                  "one run of its own, same fio jobs, run just before ours):", "",
                  "| job | ceph-r3 IOPS | ceph p50 us | ceph p99 us | tessera-r3 / ceph |", "|---|---|---|---|---|"]
        for job in jobs:
            c = res["jobs"][job].get("ceph-r3")
            if not c:
                continue
            t = res["jobs"][job]["tessera-r3"]
            us = lambda v: f"{v / 1000:.1f}" if v else "-"
            lines.append(f"| {job} | {c['iops']:.0f} | {us(c['p50_ns'])} | {us(c['p99_ns'])} | "
                         f"{t['iops'] / c['iops']:.1f}x |" if c["iops"] else f"| {job} | 0 | - | - | - |")
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
