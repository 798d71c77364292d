#!/usr/bin/env bash
# Per-request cost of tesserad's worker threads on the NBD write path, for
# A/B comparisons of builds on a shared or loaded machine.
#
#   sudo ./bench/percall.sh BUILD_DIR [BUILD_DIR...]
#
# For each round and each build (interleaved: round -> build) it starts a
# tesserad from that build on a fresh data directory (--io auto, default
# workers), creates and prefills a volume, then runs counted fio jobs (nbd
# engine, unix socket, 4k randwrite) at QD32 and QD1 and prints, per request:
#   sys  system calls of the worker threads (perf stat raw_syscalls:sys_enter)
#   cs   their context switches (perf stat context-switches: sleeps, mostly)
#   cpu  their CPU time in us (/proc/PID/task/TID/schedstat, first field)
#   and the request rate (req/s) of the run.
# System calls and context switches per request hold under load; CPU time
# moves with it (each wake-up costs more on a busy paravirtual host); the
# request rate is the least robust. Report medians of the rounds.
#
# Knobs: PERCALL_ROUNDS=3, PERCALL_N=20000 (QD32 requests; QD1 runs N/4),
# PERCALL_SIZE=1G, PERCALL_NICE="nice -n -20" (prefix for tesserad and fio;
# set it to "" while other tests run on the machine, so as not to starve them).
# Needs fio (nbd engine) and perf. Every process it starts is stopped at exit.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_args --operands "$0" "$@"
[ $# -ge 1 ] || { echo "usage: $0 BUILD_DIR [BUILD_DIR...] (see $0 --help)" >&2; exit 2; }
ROUNDS=${PERCALL_ROUNDS:-3}
N=${PERCALL_N:-20000}
SIZE=${PERCALL_SIZE:-1G}
read -r -a NICE <<<"${PERCALL_NICE-nice -n -20}"
for c in fio perf python3; do command -v "$c" >/dev/null || { echo "$0: $c not found" >&2; exit 1; }; done
for b in "$@"; do
	if [ ! -x "$b/tools/tesserad/tesserad" ] || [ ! -x "$b/tools/tessera/tessera" ]; then
		echo "$0: $b: no tools/tesserad/tesserad or tools/tessera/tessera (build it first)" >&2
		exit 1
	fi
done

W=$(mktemp -d /var/tmp/tessera-percall.XXXXXX)
PID=""
PERF=""
cleanup() {
	[ -n "$PERF" ] && kill -INT "$PERF" 2>/dev/null && wait "$PERF" 2>/dev/null
	if [ -n "$PID" ]; then
		kill "$PID" 2>/dev/null || true
		wait "$PID" 2>/dev/null || true
	fi
	rm -rf "$W"
}
trap cleanup EXIT

# worker thread ids of PID, comma separated; their summed CPU ns
worker_tids() { local t; for t in /proc/"$1"/task/*; do grep -qs '^worker' "$t/comm" && basename "$t"; done | paste -sd, -; }
worker_ns() {
	local t s=0 v
	for t in /proc/"$1"/task/*; do
		grep -qs '^worker' "$t/comm" || continue
		v=$(cut -d' ' -f1 "$t/schedstat" 2>/dev/null) || continue
		s=$((s + v))
	done
	echo "$s"
}

start_tesserad() { # BUILD: fresh data dir, volume 'bench' prefilled
	local b=$1 d=$W/data k
	rm -rf "$d"
	mkdir -p "$d"
	"${NICE[@]}" "$b/tools/tesserad/tesserad" --data "$d" --io auto >"$W/tesserad.log" 2>&1 &
	PID=$!
	for ((k = 0; k < 300; k++)); do
		[ -S "$d/admin.sock" ] && [ -f "$d/tesserad.pid" ] && break
		kill -0 "$PID" 2>/dev/null || { echo "$0: tesserad exited: $(tail -3 "$W/tesserad.log")" >&2; exit 1; }
		sleep 0.1
	done
	"$b/tools/tessera/tessera" --data "$d" volume create bench --size "$SIZE" >/dev/null
	fio --name=prefill --rw=write --bs=1M --iodepth=16 "--size=$SIZE" --ioengine=nbd \
		"--uri=nbd+unix:///bench?socket=$d/nbd.sock" >/dev/null
}

stop_tesserad() {
	kill "$PID"
	wait "$PID" 2>/dev/null || true
	PID=""
}

for ((r = 1; r <= ROUNDS; r++)); do
	for b in "$@"; do
		start_tesserad "$b"
		line="round $r $b"
		for qd in 32 1; do
			n=$N
			[ "$qd" = 1 ] && n=$((N / 4))
			perf stat -x, -e raw_syscalls:sys_enter,context-switches -t "$(worker_tids "$PID")" \
				-o "$W/perf.txt" &
			PERF=$!
			sleep 0.3
			c0=$(worker_ns "$PID")
			t0=$(date +%s%N)
			"${NICE[@]}" fio --name=j --rw=randwrite --bs=4k "--iodepth=$qd" "--size=$SIZE" \
				"--number_ios=$n" --ioengine=nbd "--uri=nbd+unix:///bench?socket=$W/data/nbd.sock" \
				>/dev/null
			c1=$(worker_ns "$PID")
			t1=$(date +%s%N)
			kill -INT "$PERF"
			wait "$PERF" 2>/dev/null || true
			PERF=""
			line+=$(python3 - "$W/perf.txt" "$n" "$((c1 - c0))" "$((t1 - t0))" "$qd" <<'EOF'
import sys
path, n, cpu_ns, wall_ns, qd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
cnt = {}
for l in open(path):
    f = l.strip().split(',')
    if len(f) > 2 and f[0].replace('.', '').isdigit():
        cnt[f[2]] = float(f[0])
sc = cnt.get('raw_syscalls:sys_enter', float('nan'))
cs = cnt.get('context-switches', float('nan'))
print(' | qd%s sys %.2f cs %.2f cpu %.1f us %.0f req/s' % (qd, sc / n, cs / n, cpu_ns / n / 1000, n * 1e9 / wall_ns), end='')
EOF
)
		done
		stop_tesserad
		echo "$line | load $(cut -d' ' -f1 /proc/loadavg)"
	done
done
