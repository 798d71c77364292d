#!/usr/bin/python3
"""One JSON line of machine-wide counters, for bench/site.sh around each fio run.

    machine_mark.py NAME=PID...

Two marks (before and after a run) give, by difference, what the whole
machine spent during it, not only the processes the bench started:
  wall_ns      CLOCK_REALTIME in ns
  clk_tck      clock ticks per second
  cpus         CPUs counted in /proc/stat
  busy, total  ticks of all CPUs (/proc/stat "cpu"): busy = user + nice +
               system + irq + softirq + steal; total = busy + idle + iowait
  kthreads     utime + stime ticks of kernel threads (PF_KTHREAD), summed by
               kind: "ksoftirqd", "kworker" (workqueues: a RAM loop device's
               writes run there), "other"; a thread that exited during the
               window is missing from the second mark (its time is lost, so
               the figure is a floor), one that started counts from zero
  procs        per NAME=PID: "ticks" (utime + stime, all threads) and the
               context switches of its threads named worker* (the event-loop
               threads): "worker_vol" voluntary (the thread slept: waits for
               an event), "worker_nonvol" involuntary (it was preempted)
"""
import json
import os
import sys
import time

PF_KTHREAD = 0x00200000


def stat_fields(path):
    """(comm, fields from state on) of a /proc/.../stat file; comm may hold
    spaces and parentheses, so split at the last ')'."""
    with open(path) as f:
        s = f.read()
    return s[s.index("(") + 1:s.rindex(")")], s[s.rindex(")") + 2:].split()


def kthread_kind(comm):
    for k in ("ksoftirqd", "kworker"):
        if comm.startswith(k):
            return k
    return "other"


def kthreads():
    out = {"ksoftirqd": 0, "kworker": 0, "other": 0}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            comm, f = stat_fields(f"/proc/{pid}/stat")
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(f[6]) & PF_KTHREAD:
            out[kthread_kind(comm)] += int(f[11]) + int(f[12])
    return out


def proc(pid):
    out = {"ticks": 0, "worker_vol": 0, "worker_nonvol": 0}
    try:
        _, f = stat_fields(f"/proc/{pid}/stat")
        out["ticks"] = int(f[11]) + int(f[12])
        tasks = os.listdir(f"/proc/{pid}/task")
    except (OSError, ValueError):
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as st:
                status = dict(line.split(":", 1) for line in st if ":" in line)
        except OSError:
            continue
        if status.get("Name", "").strip().startswith("worker"):
            out["worker_vol"] += int(status["voluntary_ctxt_switches"])
            out["worker_nonvol"] += int(status["nonvoluntary_ctxt_switches"])
    return out


def main():
    with open("/proc/stat") as f:
        lines = f.read().splitlines()
    cpu = [int(x) for x in lines[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = cpu[:7]
    steal = cpu[7] if len(cpu) > 7 else 0
    busy = user + nice + system + irq + softirq + steal
    mark = {
        "wall_ns": time.time_ns(),
        "clk_tck": os.sysconf("SC_CLK_TCK"),
        "cpus": sum(1 for x in lines if x.startswith("cpu") and x[3:4].isdigit()),
        "busy": busy,
        "total": busy + idle + iowait,
        "kthreads": kthreads(),
        "procs": {},
    }
    for arg in sys.argv[1:]:
        name, _, pid = arg.partition("=")
        mark["procs"][name] = proc(pid)
    print(json.dumps(mark))


if __name__ == "__main__":
    main()
