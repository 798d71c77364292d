#!/bin/bash
# sched.sh LABEL=BIN ...: under fio 4k randwrite QD32, record the scheduler
# (perf sched, system-wide) while each build runs `status` and `snapshot
# create`, then split each CLI process's life: CPU (run), runqueue (sch
# delay) and asleep (waiting for tesserad's reply, or I/O).
set -u
N=${N:-10}; ROUNDS=${ROUNDS:-2}
TESSERAD=${TESSERAD:-/work/main/build-cli/perf/tesserad}
W=$(mktemp -d /var/tmp/tsr-cli-sched.XXXXXX)
PID= FIO=
cleanup() { [ -n "$FIO" ] && kill "$FIO" 2>/dev/null; wait "$FIO" 2>/dev/null
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/tsr"
"$TESSERAD" --data "$W/tsr" >"$W/tesserad.log" 2>&1 & PID=$!
for (( i=0; i<300; i++ )); do [ -S "$W/tsr/admin.sock" ] && [ -f "$W/tsr/tesserad.pid" ] && break; sleep 0.1; done
first=${1#*=}
"$first" --data "$W/tsr" volume create v --size 1G >/dev/null || exit 1
fio --name=load --rw=randwrite --bs=4k --iodepth=32 --ioengine=nbd --uri="nbd+unix:///v?socket=$W/tsr/nbd.sock" \
  --size=1G --time_based --runtime=3600 >/dev/null 2>&1 & FIO=$!
sleep 3
: >"$W/pids"
perf sched record -a -o "$W/sched.data" >/dev/null 2>&1 & REC=$!
sleep 1
snap=0
for (( r=1; r<=ROUNDS; r++ )); do
  for lb in "$@"; do
    l=${lb%%=*} b=${lb#*=}
    for (( k=0; k<N; k++ )); do
      t0=$EPOCHREALTIME; "$b" --data "$W/tsr" status >/dev/null & p=$!; wait $p; t1=$EPOCHREALTIME
      echo "$p $l status $(( ${t1/./} - ${t0/./} ))" >>"$W/pids"
      snap=$((snap+1))
      t0=$EPOCHREALTIME; "$b" --data "$W/tsr" snapshot create v "s$snap" >/dev/null & p=$!; wait $p; t1=$EPOCHREALTIME
      echo "$p $l create $(( ${t1/./} - ${t0/./} ))" >>"$W/pids"
      sleep 0.2
    done
  done
done
kill -INT $REC; wait $REC
perf sched timehist --state -i "$W/sched.data" 2>/dev/null >"$W/timehist.txt"
python3 - "$W/pids" "$W/timehist.txt" <<'PY'
import sys, re, statistics as st
pids = {}
for line in open(sys.argv[1]):
    p, l, what, us = line.split()
    pids[int(p)] = (l, what, int(us) / 1000)
# run, runqueue (sch delay after a wakeup + the wait after a preemption),
# asleep (the wait after blocking: tesserad's reply, I/O)
acc = {p: [0.0, 0.0, 0.0] for p in pids}
last = {}
rx = re.compile(r'^\s*[\d.]+\s+\[\d+\]\s+(.*?)\[(\d+)(?:/\d+)?\]\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\S+)')
for line in open(sys.argv[2]):
    m = rx.match(line)
    if not m:
        continue
    tid = int(m.group(2))
    if tid in acc:
        wait, delay, run = float(m.group(3)), float(m.group(4)), float(m.group(5))
        acc[tid][0] += run
        acc[tid][1] += delay
        acc[tid][1 if last.get(tid) == "R" else 2] += wait
        last[tid] = m.group(6)
groups = {}
for p, (l, what, wall) in pids.items():
    groups.setdefault((l, what), []).append((wall, *acc[p]))
def pct(v, q):
    v = sorted(v); return v[min(len(v) - 1, max(0, (len(v) * q + 99) // 100 - 1))]
print("%-8s %-7s %4s  %-15s %-15s %-15s %-15s" % ("build", "command", "n", "wall p50/p99", "CPU p50/p99", "runq p50/p99", "asleep p50/p99"))
for (l, what), rows in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    cols = list(zip(*rows))
    print("%-8s %-7s %4d  %-15s %-15s %-15s %-15s" % (l, what, len(rows), *["%.1f / %.1f" % (pct(c, 50), pct(c, 99)) for c in cols]))
PY
grep -o "snapshot create 'v@s[0-9]*': replied after [0-9.]* ms" "$W/tesserad.log" | awk '{print $(NF-1)}' | sort -n | awk '{a[NR]=$1} END{if(NR) printf "tesserad request->reply for the cuts (n=%d): p50 %s ms, p99 %s ms\n", NR, a[int((NR*50+99)/100)], a[int((NR*99+99)/100)]}'
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
