#!/usr/bin/python3
"""Summarise bench/site.sh's raw results: report_site.py DIR REPEATS OUT_PREFIX.

DIR holds fio JSON files {on,off}.{qd32,qd1}.R.json with {...}.R.cpu beside
them ("wall0 src0 dr0 wall1 src1 dr1 clk_tck": ns, clock ticks of the primary
and DR tesserad) and {...}.R.mach (two lines of bench/machine_mark.py: the
whole machine before and after the run), dr_store.txt ("VOLUMES DIR", each
"ram" or "disk": where the DR kept them), lag.txt (one lag_sec per line, sampled during the QD32 runs
of "on"), dr_limit.txt, catchup.json and initial.json; a part that did not
run (BENCH_PARTS) has no files and is left out.
Writes OUT_PREFIX.json and OUT_PREFIX.md.
"""
import json
import os
import statistics
import sys


def cpu_use(path, iops):
    """CPU of the primary and DR tesserad during one fio run: cores busy and
    microseconds per host write (fio's IOPS over the whole wall time)."""
    try:
        with open(path) as f:
            w0, s0, d0, w1, s1, d1, tck = (float(x) for x in f.read().split())
    except (FileNotFoundError, ValueError):
        return None
    wall = (w1 - w0) / 1e9
    src, dr = (s1 - s0) / tck / wall, (d1 - d0) / tck / wall
    per = 1e6 / iops if iops else 0
    return {"src_cores": src, "dr_cores": dr, "src_us_per_write": src * per,
            "dr_us_per_write": dr * per}


def machine_use(path, iops, fio_cores):
    """The whole machine during one fio run, per host write (us): busy CPU of
    all cores, the kernel threads' share, context switches of each tesserad's
    worker threads; "rest" is busy minus the two tesserads, fio and the
    kernel threads: other processes on the machine, interrupts, the marks."""
    try:
        with open(path) as f:
            m0, m1 = (json.loads(x) for x in f.read().splitlines()[:2])
    except (FileNotFoundError, ValueError):
        return None
    wall = (m1["wall_ns"] - m0["wall_ns"]) / 1e9
    tck = m1["clk_tck"]
    per = 1e6 / iops if iops else 0

    def cores(ticks):
        return ticks / tck / wall if wall > 0 else 0

    out = {"cpus": m1["cpus"], "mach_cores": cores(m1["busy"] - m0["busy"]),
           "idle_cores": cores((m1["total"] - m0["total"]) - (m1["busy"] - m0["busy"]))}
    for k in m1["kthreads"]:
        out[f"{k}_cores"] = cores(m1["kthreads"][k] - m0["kthreads"].get(k, 0))
    kth = sum(out[f"{k}_cores"] for k in m1["kthreads"])
    procs = sum(cores(m1["procs"][p]["ticks"] - m0["procs"][p]["ticks"]) for p in m1["procs"])
    out["rest_cores"] = out["mach_cores"] - kth - procs - fio_cores
    for k in list(out):
        if k.endswith("_cores"):
            out[k[:-6] + "_us_per_write"] = out[k] * per
    writes = iops * wall
    for p in m1["procs"]:
        for c in ("worker_vol", "worker_nonvol"):
            n = m1["procs"][p][c] - m0["procs"][p][c]
            out[f"{p}_{c}_per_write"] = n / writes if writes else 0
    return out


def add_fio_cpu(run):
    """fio's own CPU (its usr + sys over the measured time) per host write."""
    if run["cpu"] is not None:
        run["cpu"]["fio_cores"] = run["fio_cores"]
        run["cpu"]["fio_us_per_write"] = run["fio_cores"] * 1e6 / run["iops"] if run["iops"] else 0


def fio_write(path):
    with open(path) as f:
        j = json.load(f)
    w = j["jobs"][0]["write"]
    pct = w.get("clat_ns", {}).get("percentile", {})
    job = j["jobs"][0]
    return {"iops": w["iops"], "p50_us": pct.get("50.000000", 0) / 1000.0,
            "p99_us": pct.get("99.000000", 0) / 1000.0,
            "fio_cores": (job.get("usr_cpu", 0) + job.get("sys_cpu", 0)) / 100.0}


# More than this many cores of "rest" (the machine's busy CPU that is not
# this bench's: other users' processes, interrupts) in a QD32 run: the
# report says the run was not quiet.
NOISY_CORES = 0.3


def per_run(res, key, cells):
    """Table rows "| on qd32 | cells(res["on_qd32"][key]) |", for each of the
    four runs that has key."""
    return [f"| {v} {job} | {cells(res[f'{v}_{job}'][key])} |"
            for v in ("on", "off") for job in ("qd32", "qd1") if res[f"{v}_{job}"].get(key)]


def quantile(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    d, repeats, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    res = {"repeats": repeats}
    for v in ("on", "off"):
        for job in ("qd32", "qd1"):
            runs = [fio_write(f"{d}/{v}.{job}.{r}.json") for r in range(1, repeats + 1)]
            for r, run in enumerate(runs, 1):
                run["cpu"] = cpu_use(f"{d}/{v}.{job}.{r}.cpu", run["iops"])
                add_fio_cpu(run)
                run["machine"] = machine_use(f"{d}/{v}.{job}.{r}.mach", run["iops"],
                                             run["fio_cores"])
            res[f"{v}_{job}"] = {
                "iops": statistics.median(r["iops"] for r in runs),
                "p50_us": statistics.median(r["p50_us"] for r in runs),
                "p99_us": statistics.median(r["p99_us"] for r in runs),
                "runs": runs,
            }
            cpus = [r["cpu"] for r in runs if r["cpu"]]
            if cpus:
                res[f"{v}_{job}"]["cpu"] = {k: statistics.median(c[k] for c in cpus)
                                            for k in cpus[0]}
            machs = [r["machine"] for r in runs if r["machine"]]
            if machs:
                res[f"{v}_{job}"]["machine"] = {k: statistics.median(m[k] for m in machs)
                                                for k in machs[0]}
    lags = []
    try:
        with open(f"{d}/lag.txt") as f:
            lags = [float(x) for x in f.read().split() if x]
    except FileNotFoundError:
        pass
    res["rpo"] = {"samples": len(lags), "p50_s": quantile(lags, 0.50),
                  "p99_s": quantile(lags, 0.99), "max_s": max(lags) if lags else None}
    try:
        with open(f"{d}/dr_limit.txt") as f:
            res["dr_limit"] = f.read().strip()
    except FileNotFoundError:
        res["dr_limit"] = ""
    try:
        with open(f"{d}/dr_store.txt") as f:
            res["dr_volumes"], res["dr_dir"] = f.read().split()
    except (FileNotFoundError, ValueError):
        res["dr_volumes"] = res["dr_dir"] = "?"
    c = i = None
    if os.path.exists(f"{d}/catchup.json"):
        with open(f"{d}/catchup.json") as f:
            res["catchup"] = c = json.load(f)
        c["rate_bps"] = c["shipped"] / c["seconds"] if c["seconds"] > 0 else 0
        c["ratio_of_cap"] = c["rate_bps"] / c["cap_bps"] if c["cap_bps"] else 0
    if os.path.exists(f"{d}/initial.json"):
        with open(f"{d}/initial.json") as f:
            res["initial"] = i = json.load(f)
        i["shipped_over_allocated"] = i["shipped"] / i["allocated"] if i["allocated"] else 0
    iops_ratio = res["on_qd32"]["iops"] / res["off_qd32"]["iops"]
    lat_ratio = res["on_qd1"]["p50_us"] / res["off_qd1"]["p50_us"] if res["off_qd1"]["p50_us"] else 0
    res["ratios"] = {"qd32_iops_on_over_off": iops_ratio, "qd1_p50_on_over_off": lat_ratio}
    with open(out + ".json", "w") as f:
        json.dump(res, f, indent=1)

    def verdict(ok):
        return "met" if ok else "MISSED"

    rpo = res["rpo"]
    lines = [
        "# Geo-replication benchmark (bench/site.sh)",
        "",
        f"Two single-node clusters on loopback, one disk, 2 cores; medians of {repeats} runs.",
        "DR CPU: " + {"": "shared (both sites and fio on both cores)",
                      "pin": "pinned (primary on CPU 0; DR and fio on CPU 1)"}.get(
            res["dr_limit"], f"cgroup cpu quota {res['dr_limit'].split(':')[-1]} % of one CPU"),
        f"DR store: volumes on {res['dr_volumes']}, data directory on {res['dr_dir']} "
        "(BENCH_DR_RAM, BENCH_DR_DIR_RAM).",
    ]
    rest = max((res[k]["machine"]["rest_cores"] for k in ("on_qd32", "off_qd32")
                if res[k].get("machine")), default=None)
    if rest is not None and rest > NOISY_CORES:
        lines.append(f"**Not a quiet run:** other processes used up to {rest:.2f} cores during the "
                     "QD32 runs (\"rest\" below); the ratios are not comparable with a quiet run's.")
    lines += [
        "",
        "| measurement | replication on | replication off | ratio | target |",
        "| --- | --- | --- | --- | --- |",
        f"| 4k randwrite QD32 IOPS | {res['on_qd32']['iops']:.0f} | {res['off_qd32']['iops']:.0f} | "
        f"{iops_ratio:.2f}x | >= 0.9x: {verdict(iops_ratio >= 0.9)} |",
        f"| 4k randwrite QD1 p50 latency (us) | {res['on_qd1']['p50_us']:.0f} | "
        f"{res['off_qd1']['p50_us']:.0f} | {lat_ratio:.2f}x | <= 1.1x: {verdict(lat_ratio <= 1.1)} |",
        "",
        "| RPO during QD32 | value | target |",
        "| --- | --- | --- |",
    ]
    if rpo["samples"]:
        lines += [
            f"| lag p50 | {rpo['p50_s']:.3f} s | |",
            f"| lag p99 | {rpo['p99_s']:.3f} s | < 1 s: {verdict(rpo['p99_s'] < 1)} |",
            f"| lag max | {rpo['max_s']:.3f} s | |",
            f"| samples | {rpo['samples']} | |",
        ]
    else:
        lines.append("| lag | no samples | MISSED |")
    lines += ["", "| CPU during the run (tesserad, all threads; fio) | source cores | source us/write "
              "| DR cores | DR us/write | fio cores | fio us/write |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += per_run(res, "cpu", lambda cu: (
        f"{cu['src_cores']:.2f} | {cu['src_us_per_write']:.1f} "
        f"| {cu['dr_cores']:.2f} | {cu['dr_us_per_write']:.1f} "
        f"| {cu.get('fio_cores', 0):.2f} | {cu.get('fio_us_per_write', 0):.1f}"))
    if per_run(res, "machine", str):
        lines += ["", "Whole machine during the run (/proc/stat, all CPUs), us of CPU per host write: "
                  "busy; kernel threads (ksoftirqd, kworker, other); rest = busy minus both "
                  "tesserads, fio and kernel threads (other processes, interrupts). Context "
                  "switches per host write of each tesserad's worker threads: voluntary / "
                  "involuntary (preempted).",
                  "",
                  "| run | busy cores | idle cores | busy us/write | ksoftirqd | kworker | other kthreads "
                  "| rest | source worker cs/write | DR worker cs/write |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        lines += per_run(res, "machine", lambda m: (
            f"{m['mach_cores']:.2f} of {m['cpus']} | {m['idle_cores']:.2f} "
            f"| {m['mach_us_per_write']:.1f} | {m['ksoftirqd_us_per_write']:.1f} "
            f"| {m['kworker_us_per_write']:.1f} | {m['other_us_per_write']:.1f} "
            f"| {m['rest_us_per_write']:.1f} "
            f"| {m['src_worker_vol_per_write']:.3f} / {m['src_worker_nonvol_per_write']:.3f} "
            f"| {m['dr_worker_vol_per_write']:.3f} / {m['dr_worker_nonvol_per_write']:.3f}"))
    lines += ["", "| run | on QD32 IOPS | off QD32 IOPS | on QD1 p50 us | off QD1 p50 us |",
              "| --- | --- | --- | --- | --- |"]
    for r in range(repeats):
        lines.append(f"| {r + 1} | {res['on_qd32']['runs'][r]['iops']:.0f} | "
                     f"{res['off_qd32']['runs'][r]['iops']:.0f} | "
                     f"{res['on_qd1']['runs'][r]['p50_us']:.0f} | "
                     f"{res['off_qd1']['runs'][r]['p50_us']:.0f} |")
    if c is not None:
        lines += [
        "",
        "| catch-up after the outage | value |",
        "| --- | --- |",
        f"| link cap | {c['cap_bps'] / 1e6:.1f} MB/s ({'tc htb' if c['tc'] else 'proxy throttle'}) |",
        f"| state when the link returned | {c['state_before']} |",
        f"| behind (log + dirty regions) | {c['behind_bytes'] / 1e6:.1f} MB |",
        f"| shipped to catch up | {c['shipped'] / 1e6:.1f} MB in {c['seconds']:.1f} s |",
        f"| rate | {c['rate_bps'] / 1e6:.1f} MB/s = {c['ratio_of_cap']:.2f}x the cap "
        f"(target >= 0.7x: {verdict(c['ratio_of_cap'] >= 0.7)}) |",
        ]
    if i is not None:
        lines += [
        "",
        "| initial copy | value |",
        "| --- | --- |",
        f"| volume | {i['volume_size']} |",
        f"| allocated | {i['allocated'] / 2**30:.2f} GiB |",
        f"| shipped | {i['shipped'] / 2**30:.2f} GiB ({i['shipped_over_allocated']:.2f}x allocated) |",
        f"| time | {i['seconds']:.1f} s |",
        "",
    ]
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
