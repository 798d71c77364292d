#!/usr/bin/env bash
# Where a local volume's time goes under one fio job: is the worker busy, the
# client, the disk, or nobody (wake-ups)?  One tesserad on a fresh data
# directory in /var/tmp, one volume, prefilled, then a fio job (nbd engine,
# unix socket) and, during BENCH_SAMPLE seconds of it:
#   IOPS         fio's figure for the whole job
#   threads      CPU of each tesserad thread busier than 1 % of a core
#                (/proc/PID/task/TID/schedstat) and of fio (utime + stime)
#   machine      user, sys, idle, softirq of both cores (/proc/stat)
#   disk         reads and writes completed, and the mean number in flight at
#                the disk (/proc/diskstats: weighted time in queue / wall time)
#   per I/O      ratios that hold under load (I/Os = fio's IOPS x BENCH_SAMPLE):
#                CPU and run-queue wait (us) of each busy tesserad thread and
#                of fio; disk writes, sectors and flushes; with perf
#                (BENCH_PERF=1, the default when perf is installed) system
#                calls and context switches of each thread (perf stat)
#
#   ./bench/where.sh                 4k randwrite QD32
#   BENCH_RW=randread ./bench/where.sh
#
# Knobs: BENCH_RW=randwrite (fio --rw), BENCH_QD=32, BENCH_BS=4k,
# BENCH_RUNTIME=10 (s of fio), BENCH_SAMPLE=5 (s measured, from 2 s in),
# BENCH_SIZE=1G, BENCH_ARGS (more tesserad arguments, e.g. "--workers 2"),
# BENCH_PERF=1|0 (per-I/O system calls), TSR_BUILD (default: build/).
# Every process it starts is stopped at exit.  The disk figures count every
# process's I/O on that disk: compare with raw fio run beside it.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_args "$0" "$@"
SRC=$(cd "$(dirname "$0")/.." && pwd)
B=${TSR_BUILD:-$SRC/build}
RW=${BENCH_RW:-randwrite}
QD=${BENCH_QD:-32}
BS=${BENCH_BS:-4k}
RUNTIME=${BENCH_RUNTIME:-10}
SAMPLE=${BENCH_SAMPLE:-5}
SIZE=${BENCH_SIZE:-1G}
for c in fio python3 "$B/tools/tesserad/tesserad" "$B/tools/tessera/tessera"; do
	command -v "$c" >/dev/null || { echo "$0: $c not found (build first: scripts/setup.sh)" >&2; exit 1; }
done
W=$(mktemp -d /var/tmp/tessera-where.XXXXXX)
P="" F=""
cleanup() {
	[ -n "$F" ] && kill "$F" 2>/dev/null
	[ -n "$P" ] && kill "$P" 2>/dev/null && wait "$P" 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/tsr"
# shellcheck disable=SC2086
"$B/tools/tesserad/tesserad" --data "$W/tsr" --io auto ${BENCH_ARGS:-} >"$W/tesserad.log" 2>&1 &
P=$!
for (( i=0; i<300; i++ )); do [ -S "$W/tsr/admin.sock" ] && [ -f "$W/tsr/tesserad.pid" ] && break; sleep 0.1; done
"$B/tools/tessera/tessera" --data "$W/tsr" volume create where --size "$SIZE" >/dev/null
U="nbd+unix:///where?socket=$W/tsr/nbd.sock"
fio --name=prefill --ioengine=nbd "--uri=$U" --rw=write --bs=1M --iodepth=16 "--size=$SIZE" >/dev/null 2>&1
fio --name=where --ioengine=nbd "--uri=$U" "--rw=$RW" "--bs=$BS" "--iodepth=$QD" "--size=$SIZE" \
	--time_based "--runtime=$RUNTIME" --output-format=json --output="$W/fio.json" >/dev/null 2>&1 &
F=$!
sleep 2
disk=$(df --output=source "$W" | tail -n1); disk=${disk#/dev/}; disk=${disk%%[0-9]*}
[ -e "/sys/block/$disk" ] || disk=""
threads() { for t in "/proc/$P"/task/*; do echo "$(cat "$t/comm") $(awk '{print $1}' "$t/schedstat")"; done; }
fio_pid=$(pgrep -n -x fio)
# comm:tid cpu_ns runq_ns of tesserad's threads and fio's, for the per-I/O lines
sched() { for t in "/proc/$P"/task/* "/proc/$fio_pid"/task/*; do echo "$(tr ' ' _ <"$t/comm"):${t##*/} $(cat "$t/schedstat")"; done | sort; }
PERF=${BENCH_PERF:-$(command -v perf >/dev/null && echo 1 || echo 0)}
threads >"$W/t1"; sched >"$W/s1"; read -r _ u1 n1 s1 i1 w1 q1 sq1 _ </proc/stat
f1=$(awk '{print $14 + $15}' "/proc/$fio_pid/stat")
[ -n "$disk" ] && d1=$(awk -v d="$disk" '$3 == d {print $4, $8, $14, $10, $20}' /proc/diskstats)
if [ "$PERF" = 1 ]; then
	perf stat -x, --per-thread -o "$W/perf" -p "$P,$fio_pid" \
		-e 'raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_readv,syscalls:sys_enter_sendmsg,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_poll,syscalls:sys_enter_pwrite64,context-switches' \
		-- sleep "$SAMPLE" 2>/dev/null || { echo "$0: perf stat failed: run with BENCH_PERF=0" >&2; PERF=0; }
else
	sleep "$SAMPLE"
fi
threads >"$W/t2"; sched >"$W/s2"; read -r _ u2 n2 s2 i2 w2 q2 sq2 _ </proc/stat
f2=$(awk '{print $14 + $15}' "/proc/$fio_pid/stat")
[ -n "$disk" ] && d2=$(awk -v d="$disk" '$3 == d {print $4, $8, $14, $10, $20}' /proc/diskstats)
wait "$F"; F=""
iops=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; print(j["read"]["iops"] + j["write"]["iops"])' "$W/fio.json")
echo "IOPS ${iops%.*} ($RW $BS QD$QD)"
paste "$W/t1" "$W/t2" | awk -v s="$SAMPLE" '{ d = ($4 - $2) / (s * 1e7); if (d > 1) printf "thread %-16s %3.0f %% of a core\n", $1, d }'
echo "thread fio              $(( (f2 - f1) * 100 / $(getconf CLK_TCK) / SAMPLE )) % of a core (ticks)"
t=$(( (u2 + n2 + s2 + i2 + w2 + q2 + sq2) - (u1 + n1 + s1 + i1 + w1 + q1 + sq1) ))
echo "machine user $(( (u2 + n2 - u1 - n1) * 100 / t )) % sys $(( (s2 - s1) * 100 / t )) % idle $(( (i2 + w2 - i1 - w1) * 100 / t )) % softirq $(( (sq2 - sq1) * 100 / t )) %"
if [ -n "$disk" ]; then
	echo "$d1 $d2" | awk -v s="$SAMPLE" -v d="$disk" '{ printf "disk %s: %d reads/s, %d writes/s, %.1f in flight on average\n", d, ($6 - $1) / s, ($7 - $2) / s, ($8 - $3) / (s * 1000) }'
fi
ios=$(awk -v i="$iops" -v s="$SAMPLE" 'BEGIN { printf "%d", i * s }')
[ "$ios" -gt 0 ] || exit 0
echo "per I/O ($ios I/Os in the $SAMPLE s sampled):"
join "$W/s1" "$W/s2" | awk -v n="$ios" '{ c = ($5 - $2) / 1000 / n; if (c >= 0.05) printf "  %-20s %6.2f us CPU, %6.2f us waiting for a CPU\n", $1, c, ($6 - $3) / 1000 / n }'
if [ -n "$disk" ]; then
	echo "$d1 $d2" | awk -v n="$ios" -v d="$disk" '{ printf "  disk %s: %.3f writes, %.2f sectors written, %.4f flushes\n", d, ($7 - $2) / n, ($9 - $4) / n, ($10 - $5) / n }'
fi
if [ "$PERF" = 1 ]; then
	awk -F, -v n="$ios" '/^#/ || NF < 4 { next } { sub(/^syscalls:sys_enter_/, "", $4); sub(/^raw_syscalls:sys_enter/, "all system calls", $4); if ($2 / n >= 0.005) printf "  %-20s %-18s %.3f\n", $1, $4, $2 / n }' "$W/perf"
fi
