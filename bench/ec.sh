#!/usr/bin/env bash
# Erasure-coding benchmark (issue 4), one go, same machine, side by side.
#
#   ./bench/ec.sh                      # both parts
#   BENCH_PARTS=codec ./bench/ec.sh    # part 1 only (seconds, no cluster)
#
# Part 1, codec (tools/tessera-ecbench): for 2+1, 4+2 and 8+3 at 64 KiB and
# 1 MiB chunks, the engine's stripe path (tsr_ec_encode as the EC layout
# calls it) against the bare ISA-L ec_encode_data loop in the same process,
# alternating; ratio engine/bare (target >= 0.8).  Decode with 1 and with m
# chunks missing beside it.
#
# Part 2, volumes: a 6-node loopback cluster (zones z1..z6, all data
# directories on this file system, so every chunk shares one disk), volumes
# ec42 (--ec 4+2), ec21 (--ec 2+1) and r3 (--replicas 3), all attached on
# n1 and written once sequentially; fio's nbd engine over n1's unix socket.
# Interleaved, BENCH_REPEATS times:
#   raw-seq      fio 1M write QD8 on a file here (io_uring, direct): the
#                disk-bound limit of a k+m volume is this x k/(k+m)
#   ec42-seq     1M write QD8 on ec42                (target >= 0.7x limit)
#   ec42-rw      4k randwrite QD32 on ec42
#   r3-rw        4k randwrite QD32 on r3             (ec42 / r3 ratio)
#   ec21-rw      4k randwrite QD32 on ec21  (issue: Ceph RBD on an EC 2+1
#                pool does ~1k IOPS on this kind of machine; aim 8x)
#   ec42-rr      4k randread QD32 on ec42, healthy
# then one chunk node of ec42 (not n1) is killed with SIGKILL and
#   ec42-rr-deg  4k randread QD32 on ec42, degraded  (target >= 0.5x healthy)
# runs BENCH_REPEATS times (after all healthy runs: a killed node cannot be
# brought back between runs without a resync running beside the reads).
# Part 2 needs `tessera volume create --ec` and the EC layout; when creating
# or attaching an EC volume fails, the report says why and has part 1 only.
#
# Results: bench/results/ec-<UTC timestamp>.md and .json (medians).  For the
# write jobs the report also gives the nodes' storage bytes read and written
# (/proc/PID/io), their CPU time per MiB written (/proc/PID/stat; does not
# depend on how fast a loaded machine let the run go) and each node's worker
# threads' run time and run-queue wait per second (/proc/PID/task/*/schedstat:
# a wait near or above the run time means the machine's other load sets the pace).
# Knobs: BENCH_RUNTIME=10 (s per fio run), BENCH_REPEATS=3, BENCH_SIZE=1G (per
# volume), BENCH_UNIT (stripe unit, default the CLI's), BENCH_EC_SECONDS=1
# (per tessera-ecbench measurement), BENCH_PARTS="codec volumes",
# TSR_BUILD (default build/), BENCH_KEEP=1 (keep the work directory),
# BENCH_JOBS (default all: "raw-seq ec42-seq ec42-rw r3-rw ec21-rw ec42-rr
# ec42-rr-deg"; a subset runs only those, e.g. for a short A/B of two builds;
# without ec42-rr-deg no node is killed), BENCH_LABEL (names the build in the
# report instead of the source tree's git HEAD, for a TSR_BUILD built elsewhere),
# BENCH_OUT (directory of the results, default bench/results).
# BENCH_PERF=trace: perf trace -s of n1 (coordinator) and n2 (a chunk node)
# during each ec42-seq run, in $W/fio/perf-trace-s.<run>.txt (with BENCH_KEEP=1);
# BENCH_PERF=record: perf record -g of the same, in $W/fio/perf.<run>.data.
# Do not run it while other heavy processes load the machine (see uptime).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_args "$0" "$@"
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
TSR_BUILD=${TSR_BUILD:-$SRC/build}
RUNTIME=${BENCH_RUNTIME:-10}
REPEATS=${BENCH_REPEATS:-3}
SIZE=${BENCH_SIZE:-1G}
UNIT=${BENCH_UNIT:-}
EC_SECONDS=${BENCH_EC_SECONDS:-1}
PARTS=${BENCH_PARTS:-codec volumes}
JOBS=${BENCH_JOBS:-raw-seq ec42-seq ec42-rw r3-rw ec21-rw ec42-rr ec42-rr-deg}
for j in $JOBS; do
	case " raw-seq ec42-seq ec42-rw r3-rw ec21-rw ec42-rr ec42-rr-deg " in
	*" $j "*) ;;
	*) echo "bench/ec.sh: unknown job '$j' in BENCH_JOBS" >&2; exit 2 ;;
	esac
done
PY=/usr/bin/python3
TESSERAD=$TSR_BUILD/tools/tesserad/tesserad
TESSERA=$TSR_BUILD/tools/tessera/tessera
ECBENCH=$TSR_BUILD/tools/tessera-ecbench/tessera-ecbench
NODES=6

T0=$(date +%s)
log() { printf '[%s +%4ss] %s\n' "$(date +%T)" "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
want_part() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
want_job() { case " $JOBS " in *" $1 "*) return 0 ;; esac; return 1; }

for c in "$PY" "$ECBENCH"; do command -v "$c" >/dev/null || [ -x "$c" ] || die "$c not found (build first: ./scripts/setup.sh, or set TSR_BUILD)"; done
if want_part volumes; then
	for c in fio "$TESSERAD" "$TESSERA"; do command -v "$c" >/dev/null || [ -x "$c" ] || die "$c not found"; done
fi
log "load before the run: $(uptime)"

W=$(mktemp -d /var/tmp/tessera-bench-ec.XXXXXX)
declare -a PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; fi; done
	for p in "${PIDS[@]}"; do if [ -n "$p" ]; then wait "$p" 2>/dev/null || true; fi; done
	if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
mkdir -p "$W/ecbench" "$W/fio"
uptime >"$W/load-before.txt"
echo "BENCH_SIZE=$SIZE BENCH_RUNTIME=$RUNTIME BENCH_REPEATS=$REPEATS BENCH_UNIT=${UNIT:-default} BENCH_EC_SECONDS=$EC_SECONDS BENCH_JOBS=\"$JOBS\" build ${BENCH_LABEL:-$(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo ?)}" >"$W/params.txt"

# ---- part 1: the codec -----------------------------------------------------
CODES="2+1 4+2 8+3"
CHUNKS="64K 1M"
if want_part codec; then
	for (( r=1; r<=REPEATS; r++ )); do
		for ec in $CODES; do
			for chunk in $CHUNKS; do
				log "codec repeat $r/$REPEATS: $ec chunk $chunk"
				"$ECBENCH" --ec "$ec" --chunk "$chunk" --seconds "$EC_SECONDS" --json \
					>"$W/ecbench/$ec.$chunk.$r.json" || die "tessera-ecbench --ec $ec --chunk $chunk failed"
			done
		done
	done
fi

# ---- part 2: volumes on a loopback cluster ---------------------------------
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

declare -a PORT=()
# start_node I ROLE...: tesserad for node I in $W/nI, waits for its pid file.
start_node() {
	local i=$1 d=$W/n$1 k
	shift
	mkdir -p "$d"
	"$TESSERAD" --data "$d" --listen "127.0.0.1:${PORT[$i]}" --node-id "n$i" --zone "z$i" \
		--capacity 4T --peer-timeout 2000 "$@" >"$d/tesserad.log" 2>&1 &
	PIDS[i]=$!
	for (( k=0; k<300; k++ )); do
		[ -f "$d/tesserad.pid" ] && [ -S "$d/admin.sock" ] && return 0
		sleep 0.1
	done
	die "node $i did not start: $(tail -5 "$d/tesserad.log")"
}
ctsr() { "$TESSERA" --cluster "127.0.0.1:${PORT[1]}" --token-file "$W/n1/admin.token" "$@"; }

fio_json() { # NAME ARGS...: run fio, JSON into $W/fio/NAME.json
	local name=$1
	shift
	fio --output-format=json --output="$W/fio/$name.json" "$@" >/dev/null 2>"$W/fio/$name.err" ||
		die "fio $name failed: $(tail -3 "$W/fio/$name.err")"
}
uri() { echo "nbd+unix:///$1?socket=$W/n1/nbd.sock"; }
# Bytes the cluster's tesserad processes read from / wrote to storage so far
# (/proc/PID/io read_bytes, write_bytes; O_DIRECT I/O counts) and the CPU
# time they used (/proc/PID/stat utime + stime, clock ticks), n1's alone and
# all nodes': "R W CPU_N1 CPU_ALL".
nodes_io() {
	local i p r=0 w=0 a b t c1=0 ca=0
	for i in "${!PIDS[@]}"; do
		p=${PIDS[$i]}
		[ -n "$p" ] && [ -r "/proc/$p/io" ] || continue
		a=$(awk '/^read_bytes/ {print $2}' "/proc/$p/io")
		b=$(awk '/^write_bytes/ {print $2}' "/proc/$p/io")
		t=$(awk '{print $14 + $15}' "/proc/$p/stat")
		r=$(( r + ${a:-0} )) w=$(( w + ${b:-0} )) ca=$(( ca + ${t:-0} ))
		[ "$i" != 1 ] || c1=${t:-0}
	done
	echo "$r $w $c1 $ca"
}
# Per node, its worker threads' CPU time and run-queue wait so far
# (/proc/PID/task/TID/schedstat, ns): "nI RUN WAIT" lines.
nodes_sched() {
	local i p t run wait rest tr tw
	for i in "${!PIDS[@]}"; do
		p=${PIDS[$i]}
		[ -n "$p" ] && [ -d "/proc/$p/task" ] || continue
		tr=0 tw=0
		for t in /proc/"$p"/task/*; do
			case "$(cat "$t/comm" 2>/dev/null)" in worker*) ;; *) continue ;; esac
			read -r run wait rest <"$t/schedstat" 2>/dev/null || continue
			tr=$(( tr + run )) tw=$(( tw + wait ))
		done
		echo "n$i $tr $tw"
	done
}
# fio_nodes NAME ARGS...: fio_json, and the nodes' storage bytes read and
# written and CPU ticks used during it appended to $W/fio/nodeio.txt as
# "NAME READ WRITTEN CPU_N1 CPU_ALL".
fio_nodes() {
	local name=$1 before after perf_pid= t0 t1
	before=$(nodes_io)
	nodes_sched >"$W/fio/sched-before.txt"
	t0=$(date +%s%N)
	if [ "${BENCH_PERF:-0}" = trace ] && [ "${name%%.*}" = ec42-seq ]; then
		perf trace -s -p "${PIDS[1]},${PIDS[2]}" -o "$W/fio/perf-trace-s.$name.txt" >/dev/null 2>&1 &
		perf_pid=$!
	elif [ "${BENCH_PERF:-0}" = record ] && [ "${name%%.*}" = ec42-seq ]; then
		perf record -q -g -p "${PIDS[1]},${PIDS[2]}" -o "$W/fio/perf.$name.data" >/dev/null 2>&1 &
		perf_pid=$!
	fi
	fio_json "$@"
	if [ -n "$perf_pid" ]; then kill -INT "$perf_pid" 2>/dev/null || true; wait "$perf_pid" 2>/dev/null || true; fi
	after=$(nodes_io)
	t1=$(date +%s%N)
	nodes_sched | while read -r n r w; do
		read -r _ r0 w0 < <(grep "^$n " "$W/fio/sched-before.txt")
		echo "$name $n $(( (r - r0) * 1000 / (t1 - t0) )) $(( (w - w0) * 1000 / (t1 - t0) ))"
	done >>"$W/fio/sched.txt"
	set -- $before $after
	echo "$name $(( $5 - $1 )) $(( $6 - $2 )) $(( $7 - $3 )) $(( $8 - $4 ))" >>"$W/fio/nodeio.txt"
}
COMMON=(--direct=1 --time_based "--runtime=$RUNTIME" --ramp_time=1 "--size=$SIZE" --group_reporting)
SEQ=(--rw=write --bs=1M --iodepth=8)
RANDW=(--rw=randwrite --bs=4k --iodepth=32)
RANDR=(--rw=randread --bs=4k --iodepth=32)

# skip_volumes REASON: part 2 cannot run; the report says why.
skip_volumes() {
	log "part 2 not run: $*"
	printf '%s\n' "$*" >"$W/fio/skipped.txt"
}

run_volumes() {
	local i k n ec_args=() unit_args=() victim
	[ -n "$UNIT" ] && unit_args=(--stripe-unit "$UNIT")
	for (( i=1; i<=NODES; i++ )); do PORT[i]=$(free_port); done
	start_node 1 --meta
	for (( i=2; i<=NODES; i++ )); do
		start_node "$i" --join "127.0.0.1:${PORT[1]}" --token-file "$W/n1/admin.token"
	done
	for k in $(seq 150); do
		n=$(ctsr --json node list 2>/dev/null | "$PY" -c 'import json,sys; print(sum(1 for n in json.load(sys.stdin)["nodes"] if n.get("alive")))' 2>/dev/null || echo 0)
		[ "$n" = "$NODES" ] && break
		sleep 0.2
	done
	[ "$n" = "$NODES" ] || die "only $n of $NODES nodes alive"
	log "$NODES-node cluster up"
	for v in ec42:4+2 ec21:2+1; do
		ec_args=(--ec "${v#*:}" "${unit_args[@]}")
		if ! ctsr volume create "${v%%:*}" --size "$SIZE" "${ec_args[@]}" >"$W/create-${v%%:*}.out" 2>&1; then
			skip_volumes "tessera volume create ${v%%:*} --ec ${v#*:} failed: $(tail -2 "$W/create-${v%%:*}.out" | tr '\n' ' ')"
			return 0
		fi
		if ! ctsr volume attach "${v%%:*}" --node n1 >"$W/attach-${v%%:*}.out" 2>&1; then
			skip_volumes "tessera volume attach ${v%%:*} (--ec ${v#*:}) failed: $(tail -2 "$W/attach-${v%%:*}.out" | tr '\n' ' ')"
			return 0
		fi
	done
	ctsr volume create r3 --size "$SIZE" --replicas 3 >/dev/null || die "volume create r3"
	ctsr volume attach r3 --node n1 >/dev/null || die "volume attach r3"
	log "volumes ec42, ec21, r3 attached on n1; prefilling"
	for v in ec42 ec21 r3; do
		fio --name=prefill --ioengine=nbd "--uri=$(uri $v)" "${SEQ[@]}" "--size=$SIZE" \
			>"$W/fio/prefill-$v.out" 2>&1 || die "prefill $v: $(tail -3 "$W/fio/prefill-$v.out")"
	done
	mkdir -p "$W/raw"
	fio --name=prefill --ioengine=io_uring --direct=1 --filename="$W/raw/f1" "${SEQ[@]}" \
		"--size=$SIZE" >/dev/null || die "prefill raw file"

	for (( r=1; r<=REPEATS; r++ )); do
		log "volumes repeat $r/$REPEATS"
		! want_job raw-seq || fio_json "raw-seq.$r" --ioengine=io_uring "${COMMON[@]}" "${SEQ[@]}" --name=a --filename="$W/raw/f1"
		! want_job ec42-seq || fio_nodes "ec42-seq.$r" --ioengine=nbd "--uri=$(uri ec42)" "${COMMON[@]}" "${SEQ[@]}" --name=a
		! want_job ec42-rw || fio_nodes "ec42-rw.$r" --ioengine=nbd "--uri=$(uri ec42)" "${COMMON[@]}" "${RANDW[@]}" --name=a
		! want_job r3-rw || fio_json "r3-rw.$r" --ioengine=nbd "--uri=$(uri r3)" "${COMMON[@]}" "${RANDW[@]}" --name=a
		! want_job ec21-rw || fio_nodes "ec21-rw.$r" --ioengine=nbd "--uri=$(uri ec21)" "${COMMON[@]}" "${RANDW[@]}" --name=a
		! want_job ec42-rr || fio_json "ec42-rr.$r" --ioengine=nbd "--uri=$(uri ec42)" "${COMMON[@]}" "${RANDR[@]}" --name=a
	done
	ctsr --json volume status ec42 >"$W/fio/status-healthy.json" 2>&1 || true
	want_job ec42-rr-deg || return 0

	# a chunk node of ec42 that is not the attach node
	victim=$(ctsr --json volume show ec42 | "$PY" -c 'import json,sys
j = json.load(sys.stdin)
j = j.get("volume", j)
print(next(c["node"] for c in j["copies"] if c["node"] != "n1"))') || die "no chunk node of ec42 found"
	i=${victim#n}
	log "killing $victim (SIGKILL), a chunk node of ec42"
	kill -KILL "${PIDS[$i]}"
	wait "${PIDS[$i]}" 2>/dev/null || true
	PIDS[i]=
	echo "$victim" >"$W/fio/victim.txt"
	# let the coordinator find out (first reads to it fail over to decode)
	fio --name=warm --ioengine=nbd "--uri=$(uri ec42)" --direct=1 --time_based --runtime=3 \
		"--size=$SIZE" "${RANDR[@]}" >/dev/null 2>&1 || die "degraded warm-up read failed"
	for (( r=1; r<=REPEATS; r++ )); do
		log "degraded repeat $r/$REPEATS"
		fio_json "ec42-rr-deg.$r" --ioengine=nbd "--uri=$(uri ec42)" "${COMMON[@]}" "${RANDR[@]}" --name=a
	done
	ctsr --json volume status ec42 >"$W/fio/status-degraded.json" 2>&1 || true
}

if want_part volumes; then
	run_volumes
fi
uptime >"$W/load-after.txt"

OUT=${BENCH_OUT:-$SRC/bench/results}
mkdir -p "$OUT"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
"$PY" "$HERE/report_ec.py" "$W" "$REPEATS" "$OUT/ec-$stamp" "$CODES" "$CHUNKS" "$PARTS"
if [ -s "$W/fio/nodeio.txt" ]; then
	"$PY" - "$W/fio/nodeio.txt" >>"$OUT/ec-$stamp.md" <<'PYEOF'
import os, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    rows.setdefault(f[0].rsplit(".", 1)[0], []).append(tuple(int(x) for x in f[1:]))
hz = os.sysconf("SC_CLK_TCK")
print("\n## Storage I/O and CPU of the tesserad processes during the write jobs (/proc/PID/io, /proc/PID/stat)\n")
print("Read and written by all nodes from the job's start to its end (ramp included); "
      "median of the runs. Reads while writing are old-data reads of partial stripes and "
      "anything read back from a stage journal. CPU: utime + stime over the same window, "
      "per MiB written to storage (so it does not depend on how fast the run went; n1 is "
      "the coordinator and holds one chunk).\n")
print("| job | MiB read | MiB written | read / written | CPU ms per MiB written, n1 | all nodes |")
print("|---|---|---|---|---|---|")
for name, v in rows.items():
    rd = statistics.median(x[0] for x in v) / 2**20
    wr = statistics.median(x[1] for x in v) / 2**20
    ratio = statistics.median(x[0] / x[1] for x in v if x[1]) if any(x[1] for x in v) else 0
    cpu = [x for x in v if len(x) >= 4 and x[1]]
    c1 = statistics.median(1000 * x[2] / hz / (x[1] / 2**20) for x in cpu) if cpu else 0
    ca = statistics.median(1000 * x[3] / hz / (x[1] / 2**20) for x in cpu) if cpu else 0
    print(f"| {name} | {rd:.1f} | {wr:.1f} | {ratio:.3f} | {c1:.3f} | {ca:.3f} |")
PYEOF
fi
if [ -s "$W/fio/sched.txt" ]; then
	"$PY" - "$W/fio/sched.txt" >>"$OUT/ec-$stamp.md" <<'PYEOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    run, node, r, w = line.split()
    rows.setdefault((run.rsplit(".", 1)[0], node), []).append((int(r), int(w)))
print("\n## Worker threads of each node during the write jobs (/proc/PID/task/TID/schedstat)\n")
print("Milliseconds per second of the job (ramp included) that the node's worker threads "
      "ran, and that they were runnable but waiting for a CPU (run-queue wait); median of "
      "the runs. Wait near or above run means the machine's other load, not this job's own "
      "work, sets the pace. n1 is the coordinator.\n")
print("| job | node | run ms/s | run-queue wait ms/s |")
print("|---|---|---|---|")
for (job, node), v in sorted(rows.items(), key=lambda kv: (kv[0][0], int(kv[0][1][1:]))):
    print(f"| {job} | {node} | {statistics.median(x[0] for x in v):.0f} | "
          f"{statistics.median(x[1] for x in v):.0f} |")
PYEOF
fi
log "wrote $OUT/ec-$stamp.{json,md}"
cat "$OUT/ec-$stamp.md"
