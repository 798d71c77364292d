#!/usr/bin/python3
"""Turn bench/ec.sh's raw results into bench/results/ec-*.json and .md.

usage: report_ec.py WORK_DIR REPEATS OUT_PREFIX "CODES" "CHUNKS" "PARTS"
WORK_DIR/ecbench/<code>.<chunk>.<r>.json: tessera-ecbench --json runs;
WORK_DIR/fio/<target>.<r>.json: fio runs; WORK_DIR/fio/skipped.txt: why part 2
did not run.  Medians over the repeats; every ratio is of two medians
measured in the same run.
"""
import json
import os
import statistics
import sys

ISSUE_CEPH_EC21_IOPS = 1000  # issue 4: Ceph RBD on an EC 2+1 pool, 4k randwrite QD32


def load(path):
    with open(path) as f:
        return json.load(f)


def median_or_none(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fio_figures(j):
    """Sum of IOPS and bandwidth (bytes/s) over reads and writes of all jobs."""
    iops = bw = 0.0
    for job in j["jobs"]:
        for d in ("read", "write"):
            iops += job[d]["iops"]
            bw += job[d]["bw_bytes"] if "bw_bytes" in job[d] else job[d]["bw"] * 1024
    return {"iops": iops, "bw": bw}


def codec_part(work, repeats, codes, chunks):
    res = {}
    for code in codes:
        for chunk in chunks:
            runs = []
            for r in range(1, repeats + 1):
                p = f"{work}/ecbench/{code}.{chunk}.{r}.json"
                if os.path.exists(p):
                    runs.append(load(p))
            if not runs:
                continue
            res[f"{code}/{chunk}"] = {
                "code": code, "chunk": chunk, "runs": len(runs),
                "bare_gbps": median_or_none([x["encode"]["bare_gbps"] for x in runs]),
                "engine_gbps": median_or_none([x["encode"]["engine_gbps"] for x in runs]),
                "ratio": median_or_none([x["encode"]["ratio"] for x in runs]),
                "decode_1_gbps": median_or_none([x["decode"]["missing_1_gbps"] for x in runs]),
                "decode_m_gbps": median_or_none([x["decode"]["missing_m_gbps"] for x in runs]),
                "m": runs[0]["m"],
            }
    return res


def volumes_part(work, repeats):
    fio = f"{work}/fio"
    skipped = f"{fio}/skipped.txt"
    if os.path.exists(skipped):
        with open(skipped) as f:
            return {"skipped": f.read().strip()}
    res = {}
    for target in ("raw-seq", "ec42-seq", "ec42-rw", "r3-rw", "ec21-rw", "ec42-rr", "ec42-rr-deg"):
        runs = []
        for r in range(1, repeats + 1):
            p = f"{fio}/{target}.{r}.json"
            if os.path.exists(p):
                runs.append(fio_figures(load(p)))
        if runs:
            res[target] = {"iops": median_or_none([x["iops"] for x in runs]),
                           "bw": median_or_none([x["bw"] for x in runs]), "runs": len(runs)}
    if not res:
        return None
    if os.path.exists(f"{fio}/victim.txt"):
        with open(f"{fio}/victim.txt") as f:
            res["victim"] = f.read().strip()
    for name in ("healthy", "degraded"):
        p = f"{fio}/status-{name}.json"
        try:
            res[f"status_{name}"] = load(p)
        except (FileNotFoundError, ValueError):
            pass
    return res


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt_ratio(v):
    return f"{v:.2f}x" if v is not None else "-"


def main():
    work, repeats, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    codes, chunks, parts = sys.argv[4].split(), sys.argv[5].split(), sys.argv[6].split()
    res = {"repeats": repeats}
    for name in ("before", "after"):
        try:
            with open(f"{work}/load-{name}.txt") as f:
                res[f"load_{name}"] = f.read().strip()
        except FileNotFoundError:
            pass
    lines = ["# Erasure-coding benchmark (bench/ec.sh)", "",
             f"Median of {repeats} runs per figure; ratios of medians measured side by side in "
             "this run.", ""]
    try:
        with open(f"{work}/params.txt") as f:
            res["params"] = f.read().strip()
        lines += [f"Parameters: `{res['params']}`", ""]
    except FileNotFoundError:
        pass
    if "load_before" in res:
        lines += [f"Machine load before: `{res['load_before']}`; after: `{res.get('load_after', '?')}`", ""]

    if "codec" in parts:
        c = codec_part(work, repeats, codes, chunks)
        res["codec"] = c
        lines += ["## Codec (tools/tessera-ecbench)", "",
                  "GB/s = 10^9 bytes of stripe data (k x chunk) per second. bare = ISA-L "
                  "`ec_encode_data` on fixed buffers; engine = `tsr_ec_encode` per stripe as the "
                  "layout calls it; target engine/bare >= 0.8.", "",
                  "| k+m | chunk | bare encode GB/s | engine encode GB/s | engine / bare | "
                  "decode 1 missing GB/s | decode m missing GB/s |",
                  "|---|---|---|---|---|---|---|"]
        for key, v in c.items():
            lines.append(f"| {v['code']} | {v['chunk']} | {v['bare_gbps']:.2f} | {v['engine_gbps']:.2f} | "
                         f"{fmt_ratio(v['ratio'])} | {v['decode_1_gbps']:.2f} | "
                         f"{v['decode_m_gbps']:.2f} (m={v['m']}) |")
        lines.append("")

    if "volumes" in parts:
        v = volumes_part(work, repeats)
        res["volumes"] = v
        lines += ["## Volumes (6-node loopback cluster, every chunk on this one disk)", ""]
        if v is None:
            lines += ["No results (part 2 did not produce fio output).", ""]
        elif "skipped" in v:
            lines += [f"Not run: {v['skipped']}", ""]
        else:
            mib = lambda b: f"{b / 2**20:.0f}" if b is not None else "-"
            iops = lambda t: f"{v[t]['iops']:.0f}" if t in v else "-"
            raw = v.get("raw-seq", {}).get("bw")
            limit = raw * 4 / 6 if raw else None
            seq = v.get("ec42-seq", {}).get("bw")
            rw42, rw3 = v.get("ec42-rw", {}).get("iops"), v.get("r3-rw", {}).get("iops")
            rw21 = v.get("ec21-rw", {}).get("iops")
            rr, rrd = v.get("ec42-rr", {}).get("iops"), v.get("ec42-rr-deg", {}).get("iops")
            res["ratios"] = {"ec42_seq_to_limit": ratio(seq, limit), "ec42_rw_to_r3": ratio(rw42, rw3),
                             "ec21_rw_to_issue_ceph": ratio(rw21, ISSUE_CEPH_EC21_IOPS),
                             "ec42_degraded_read_to_healthy": ratio(rrd, rr)}
            r = res["ratios"]
            lines += ["| measurement | figure | ratio | target |", "|---|---|---|---|",
                      f"| raw fio 1M write QD8 (file, io_uring, direct) | {mib(raw)} MiB/s | | |",
                      f"| disk-bound limit of 4+2 = raw x 4/6 | {mib(limit)} MiB/s | | |",
                      f"| 4+2 volume 1M write QD8 | {mib(seq)} MiB/s | {fmt_ratio(r['ec42_seq_to_limit'])} "
                      "of the limit | >= 0.7x |",
                      f"| 4+2 volume 4k randwrite QD32 | {iops('ec42-rw')} IOPS | "
                      f"{fmt_ratio(r['ec42_rw_to_r3'])} of 3-replica | report |",
                      f"| 3-replica volume 4k randwrite QD32 | {iops('r3-rw')} IOPS | | |",
                      f"| 2+1 volume 4k randwrite QD32 | {iops('ec21-rw')} IOPS | "
                      f"{fmt_ratio(r['ec21_rw_to_issue_ceph'])} the issue's Ceph EC 2+1 figure "
                      f"(~{ISSUE_CEPH_EC21_IOPS} IOPS, quoted, not measured here) | 8x |",
                      f"| 4+2 volume 4k randread QD32, healthy | {iops('ec42-rr')} IOPS | | |",
                      f"| 4+2 volume 4k randread QD32, {v.get('victim', 'one chunk node')} killed | "
                      f"{iops('ec42-rr-deg')} IOPS | {fmt_ratio(r['ec42_degraded_read_to_healthy'])} "
                      "of healthy | >= 0.5x |", ""]
            # `tessera --json volume status`: the counters at the top level
            for name in ("healthy", "degraded"):
                st = v.get(f"status_{name}")
                if not isinstance(st, dict):
                    continue
                extra = {k: st[k] for k in ("reads", "degraded_reads", "stripes_degraded",
                                            "stripes_rebuilding") if k in st}
                if extra:
                    lines += [f"ec42 status after the {name} runs: " +
                              ", ".join(f"{k} {val}" for k, val in extra.items()), ""]
    with open(out + ".json", "w") as f:
        json.dump(res, f, indent=2)
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
