#!/usr/bin/env bash
# Replication benchmark (issue 3), one go, same machine, side by side.
#
#   ./bench/cluster.sh
#
# Targets, measured in the same run:
#   raw-limit   the physical limit when three copies share one disk: fio with
#               3 jobs on 3 files (io_uring, direct), total IOPS / 3
#   raw-1       fio on one file (the QD1 latency reference)
#   tessera-r3  a 3-replica volume of a 3-node loopback cluster, attached on
#               node 1, fio's nbd engine over its unix socket
# Jobs: 4k randwrite QD32, 4k randwrite QD1 (p50/p99), 1M write QD8.
# Then: resync of BENCH_RESYNC (default 1G) of changed regions vs the raw
# file's sequential write bandwidth (1M QD8), and the RSS of one tesserad
# with BENCH_MEMVOLS (default 100) attached 10 GiB volumes.
# Median of BENCH_REPEATS (3) runs of BENCH_RUNTIME (10) s, interleaved.
# BENCH_PHASES (default "jobs resync memory") picks the parts to run, e.g.
# BENCH_PHASES=resync for the resync measurement alone (the cluster, the
# prefill and the raw file are set up either way).  BENCH_JOBS picks jobs
# of the jobs phase (default all three), e.g. BENCH_JOBS=4k_randwrite_qd1
# for the QD1 latency alone (A/B runs).
# BENCH_CEPH=1 first runs ../shared/peers/ceph-rbd.sh (PHASES=rep: a throw-away
# 3-OSD Ceph cluster, a size=3 RBD image, the same fio jobs; about 7 minutes)
# and puts its figures beside Tessera's.
# Results: bench/results/cluster-<timestamp>.json and .md.
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
RESYNC=${BENCH_RESYNC:-1G}
MEMVOLS=${BENCH_MEMVOLS:-100}
PHASES=" ${BENCH_PHASES:-jobs resync memory} "
PY=/usr/bin/python3
TESSERAD=$TSR_BUILD/tools/tesserad/tesserad
TESSERA=$TSR_BUILD/tools/tessera/tessera

T0=$(date +%s)
log() { printf '[%s +%4ss] %s\n' "$(date +%T)" "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
for c in fio "$PY" "$TESSERAD" "$TESSERA"; do command -v "$c" >/dev/null || [ -x "$c" ] || die "$c not found (build first: ./scripts/setup.sh)"; done

W=$(mktemp -d /var/tmp/tessera-bench-cluster.XXXXXX)
declare -a PIDS=()
cleanup() {
	local p
	if [ -n "${TRACE_DIR:-}" ]; then echo 0 >"$TRACE_DIR/tracing_on"; rmdir "$TRACE_DIR" || true; fi
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
mkdir -p "$W/fio"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_node I ROLE...: tesserad for node I in $W/nI, waits for its pid file.
declare -a PORT=()
start_node() {
	local i=$1 d=$W/n$1 k
	shift
	mkdir -p "$d"
	"$TESSERAD" --data "$d" --listen "127.0.0.1:${PORT[$i]}" --node-id "n$i" --zone "z$i" \
		--capacity 4T "$@" \
		>"$d/tesserad.log" 2>&1 &
	PIDS+=($!)
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

declare -A JOB_ARGS=(
	[4k_randwrite_qd32]="--rw=randwrite --bs=4k --iodepth=32"
	[4k_randwrite_qd1]="--rw=randwrite --bs=4k --iodepth=1"
	[1m_write_qd8]="--rw=write --bs=1M --iodepth=8"
)
JOBS=${BENCH_JOBS:-4k_randwrite_qd32 4k_randwrite_qd1 1m_write_qd8}
for job in $JOBS; do
	[ -n "${JOB_ARGS[$job]:-}" ] || die "BENCH_JOBS: unknown job \"$job\" (jobs: ${!JOB_ARGS[*]})"
done
phase() { [[ "$PHASES" == *" $1 "* ]]; }
phase jobs || JOBS=
COMMON=(--direct=1 --time_based "--runtime=$RUNTIME" --ramp_time=1 "--size=$SIZE" --group_reporting)

# ---- Ceph RBD, 3 replicas (optional), alone on the machine before ours
if [ "${BENCH_CEPH:-0}" = 1 ] && phase jobs; then
	CEPH_SH=$SRC/../shared/peers/ceph-rbd.sh
	[ -f "$CEPH_SH" ] || die "BENCH_CEPH=1 but $CEPH_SH is missing"
	log "ceph: running $CEPH_SH (PHASES=rep, about 7 minutes)"
	if RESULTS="$W/ceph" PHASES=rep RUNTIME=$(( RUNTIME < 8 ? 8 : RUNTIME )) bash "$CEPH_SH" \
		>"$W/ceph.log" 2>&1; then
		for job in $JOBS; do
			for f in "$W/ceph/rep3_$job.json" "$W/ceph/rep_$job.json"; do
				[ -f "$f" ] && cp "$f" "$W/fio/ceph-r3.$job.json" && break
			done
		done
	else
		log "ceph run failed (see $W/ceph.log, kept with BENCH_KEEP=1); no Ceph column"
	fi
fi

# ---- the cluster
for i in 1 2 3; do PORT[$i]=$(free_port); done
start_node 1 --meta
start_node 2 --join "127.0.0.1:${PORT[1]}" --token-file "$W/n1/admin.token"
start_node 3 --join "127.0.0.1:${PORT[1]}" --token-file "$W/n1/admin.token"
for k in $(seq 100); do
	n=$(ctsr --json node list 2>/dev/null | "$PY" -c 'import json,sys; print(sum(1 for n in json.load(sys.stdin)["nodes"] if n.get("alive")))' 2>/dev/null || echo 0)
	[ "$n" = 3 ] && break
	sleep 0.2
done
ctsr volume create benchvol --size "$SIZE" --replicas 3 >/dev/null || die "volume create"
ctsr volume attach benchvol --node n1 >/dev/null || die "volume attach"
URI="nbd+unix:///benchvol?socket=$W/n1/nbd.sock"
log "3-node cluster up; prefilling"
fio --name=prefill --ioengine=nbd "--uri=$URI" --rw=write --bs=1M --iodepth=8 "--size=$SIZE" >/dev/null
mkdir -p "$W/raw"
raw_files="1 2 3"
phase jobs || raw_files=1
for f in $raw_files; do
	fio --name=prefill --ioengine=io_uring --direct=1 --filename="$W/raw/f$f" --rw=write --bs=1M \
		--iodepth=8 "--size=$SIZE" >/dev/null
done

for (( r=1; r<=REPEATS; r++ )); do
	for job in $JOBS; do
		# shellcheck disable=SC2086
		read -r -a ja <<<"${JOB_ARGS[$job]}"
		log "repeat $r/$REPEATS $job"
		fio_json "raw-limit.$job.$r" --ioengine=io_uring "${COMMON[@]}" "${ja[@]}" \
			--name=a --filename="$W/raw/f1" --name=b --filename="$W/raw/f2" --name=c --filename="$W/raw/f3"
		fio_json "raw-1.$job.$r" --ioengine=io_uring "${COMMON[@]}" "${ja[@]}" --name=a --filename="$W/raw/f1"
		fio_json "tessera-r3.$job.$r" --ioengine=nbd "--uri=$URI" "${COMMON[@]}" "${ja[@]}" --name=a
	done
done

# ---- resync bandwidth: n3 away while RESYNC bytes are written, then back
# BENCH_TRACE=1 (root, tracefs): who caused the disk's cache flushes during
# the resync.  A tracefs instance of our own records fsync/fdatasync/msync/
# sync_file_range calls, io_uring FSYNC/SYNC_FILE_RANGE submissions, ext4
# fsyncs, jbd2 commits and every bio carrying a PREFLUSH or FUA flag (this
# disk has no FUA: each FUA write costs a flush), with the thread that issued
# it; $W/fio/flush-trace.txt keeps the summary (per process and thread).
TRACE_DIR=
trace_start() {
	[ "${BENCH_TRACE:-0}" = 1 ] || return 0
	local t=/sys/kernel/tracing ev
	[ -d "$t/instances" ] || { log "BENCH_TRACE=1: no tracefs at $t; not tracing"; return 0; }
	TRACE_DIR=$t/instances/tsr-bench-$$
	mkdir "$TRACE_DIR" || { TRACE_DIR=; log "BENCH_TRACE=1: cannot make a tracefs instance"; return 0; }
	echo 16384 >"$TRACE_DIR/buffer_size_kb"
	for ev in syscalls/sys_enter_fsync syscalls/sys_enter_fdatasync syscalls/sys_enter_msync \
		syscalls/sys_exit_fsync syscalls/sys_exit_fdatasync syscalls/sys_exit_msync \
		syscalls/sys_enter_sync_file_range ext4/ext4_sync_file_enter jbd2/jbd2_start_commit \
		block/block_bio_queue block/block_rq_issue; do
		echo 1 >"$TRACE_DIR/events/$ev/enable"
	done
	echo 'opcode == 3 || opcode == 8' >"$TRACE_DIR/events/io_uring/io_uring_submit_req/filter"
	echo 1 >"$TRACE_DIR/events/io_uring/io_uring_submit_req/enable"
	echo 1 >"$TRACE_DIR/tracing_on"
}
trace_stop() {
	[ -n "$TRACE_DIR" ] || return 0
	echo 0 >"$TRACE_DIR/tracing_on"
	cat "$TRACE_DIR/trace" >"$W/trace.raw"
	rmdir "$TRACE_DIR" 2>/dev/null || log "could not remove $TRACE_DIR"
	TRACE_DIR=
	find "$W" -xdev -printf '%i %P\n' >"$W/trace.inodes" 2>/dev/null || true
	"$PY" - "$W/trace.raw" "$W/trace.inodes" "${PIDS[0]}" "${PIDS[-1]}" >"$W/fio/flush-trace.txt" <<'PYEOF'
import collections, re, sys
raw, inodes, n1, n3 = sys.argv[1:5]
files = dict(l.rstrip("\n").split(" ", 1) for l in open(inodes) if " " in l)
def owner(pid):
    try:
        tgid = [l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("Tgid:")][0]
    except OSError:
        return "gone"
    return {n1: "n1", n3: "n3"}.get(tgid, "other")
count, by_file, disk = collections.Counter(), collections.Counter(), collections.Counter()
entered, blocked = {}, collections.defaultdict(list)
for line in open(raw):
    # "comm-tid [cpu] flags time: event: args", syscalls as "sys_NAME(args)"
    # on entry and "sys_NAME -> ret" on exit
    m = re.match(r"\s*(.+?)-(\d+)\s+\[\d+\]\s+\S+\s+([\d.]+):\s+([a-z0-9_]+)(: |\(| -> )(.*)", line)
    if not m:
        continue
    comm, pid, t, ev, sep, rest = m.groups()
    if sep == " -> ":
        t0 = entered.pop((pid, ev), None)
        if t0 is not None:
            blocked[(owner(pid), re.sub(r"^(kworker|iou-wrk).*", r"\1", comm), ev[4:])].append(float(t) - t0)
        continue
    if sep == "(":
        entered[(pid, ev)] = float(t)
    comm = re.sub(r"^(kworker|iou-wrk).*", r"\1", comm)
    if ev in ("block_bio_queue", "block_rq_issue"):
        rwbs = rest.split()[1]
        if ev == "block_rq_issue":
            disk["flush requests issued to the disk" if rwbs.startswith("F") and "W" not in rwbs
                 else "other requests issued to the disk"] += 1
            continue
        if "F" not in rwbs:
            continue
        ev = "bio " + "+".join(f for f, c in (("PREFLUSH", rwbs.startswith("F")), ("FUA", "F" in rwbs[1:])) if c)
    elif ev == "io_uring_submit_req":
        ev += " " + re.search(r"opcode (\S+),", rest).group(1)
    elif ev == "ext4_sync_file_enter":
        ino = re.search(r"ino (\d+)", rest).group(1)
        by_file[(owner(pid), comm, files.get(ino, "ino " + ino))] += 1
    count[(owner(pid), comm, ev)] += 1
print("Disk requests during the resync (tracefs block_rq_issue):")
for k, n in sorted(disk.items()):
    print(f"{n:7d}  {k}")
print("\nfsyncs reaching ext4 (each one costs the disk a cache flush), by file"
      " (kworker: completion of an O_DIRECT write with RWF_DSYNC, which this"
      " FUA-less disk turns into an fsync):")
for (who, comm, f), n in sorted(by_file.items(), key=lambda kv: (-kv[1], kv[0])):
    print(f"{n:7d}  {who:5s} {comm:10s} {f}")
print("\nThreads blocked in sync calls (count, total, longest):")
for (who, comm, call), ds in sorted(blocked.items(), key=lambda kv: -sum(kv[1])):
    print(f"{len(ds):7d}  {who:5s} {comm:10s} {call:10s} {sum(ds) * 1000:8.1f} ms  max {max(ds) * 1000:6.1f} ms")
print("\nEvents by process (n1 = coordinator, n3 = the resyncing node, other = the"
      " rest of the machine) and thread:")
for (who, comm, ev), n in sorted(count.items(), key=lambda kv: (-kv[1], kv[0])):
    print(f"{n:7d}  {who:5s} {comm:10s} {ev}")
PYEOF
	log "flush sources during the resync (BENCH_TRACE=1):"
	head -40 "$W/fio/flush-trace.txt" >&2
}
if phase resync; then
log "resync: stopping n3, writing $RESYNC, restarting n3"
kill -TERM "${PIDS[2]}"; wait "${PIDS[2]}" 2>/dev/null || true
fio --name=dirty --ioengine=nbd "--uri=$URI" --rw=write --bs=1M --iodepth=8 "--size=$RESYNC" >/dev/null
before=$(ctsr --json volume status benchvol | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["resync_bytes_copied"])')
lines_before=$(wc -l <"$W/n1/tesserad.log")
# Disk counters around the resync (the device holding $W; other processes on
# the machine count too): reads, sectors read, writes, sectors written,
# flushes completed, ms spent flushing (/proc/diskstats fields 4, 6, 8, 10,
# 19, 20 counting major, minor and name as 1-3; field 20 is a time, not a
# count: it used to be reported as the flush count).
DEV=$(basename "$(df --output=source "$W" | tail -1)")
disk_counters() { awk -v d="$DEV" '$3 == d { print $4, $6, $8, $10, ($19 == "" ? 0 : $19), ($20 == "" ? 0 : $20); f = 1 } END { if (!f) print "0 0 0 0 0 0" }' /proc/diskstats; }
disk_before=$(disk_counters)
# CPU seconds (user + system, all threads) of a process so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0; }
cpu_n1_before=$(cpu_s "${PIDS[0]}")
trace_start
t_start=$(date +%s.%N)
start_node 3 --join "127.0.0.1:${PORT[1]}" --token-file "$W/n1/admin.token"
perf_pid=
if [ "${BENCH_PERF:-0}" = 1 ]; then # call graphs of the coordinator and n3 during the resync
	perf record -q -g -p "${PIDS[0]},${PIDS[-1]}" -o "$W/perf.data" >/dev/null 2>&1 &
	perf_pid=$!
elif [ "${BENCH_PERF:-0}" = trace ]; then
	# perf trace -s of both: syscalls per thread with their time and errors
	# (where each event loop waits: epoll_wait, sendmsg EAGAIN, msync...)
	perf trace -s -p "${PIDS[0]},${PIDS[-1]}" -o "$W/fio/perf-trace-s.txt" >/dev/null 2>&1 &
	perf_pid=$!
fi
# The coordinator logs the start of the copy ("resync of copy I (n3): N bytes
# to copy") and its end ("copy I (n3) in sync again"), with ms timestamps: the
# copy phase is timed from those, and the wait polls the log with grep only
# (a CLI + python status poll every 50 ms took a good part of a core from the
# copy it was timing).
for (( k=0; k<6000; k++ )); do
	tail -n "+$((lines_before + 1))" "$W/n1/tesserad.log" | grepq "(n3) in sync again" && break
	sleep 0.1
done
t_end=$(date +%s.%N)
disk_after=$(disk_counters)
cpu_n1=$("$PY" -c "print(round($(cpu_s "${PIDS[0]}") - $cpu_n1_before, 2))")
cpu_n3=$(cpu_s "${PIDS[-1]}") # started in the window: all of it
trace_stop
if [ -n "$perf_pid" ]; then
	kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
	if [ "${BENCH_PERF:-0}" = trace ]; then
		log "perf trace -s of n1 and n3 in $W/fio/perf-trace-s.txt (BENCH_KEEP=1 keeps it)"
	else
		log "perf data in $W/perf.data (BENCH_KEEP=1 keeps it)"
	fi
fi
tail -n "+$((lines_before + 1))" "$W/n1/tesserad.log" | grepq "(n3) in sync again" ||
	die "n3 not in sync after 600 s: $(tail -3 "$W/n1/tesserad.log")"
after=$(ctsr --json volume status benchvol | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["resync_bytes_copied"])')
tail -n "+$((lines_before + 1))" "$W/n1/tesserad.log" >"$W/fio/resync.log"
"$PY" - "$after" "$before" "$t_start" "$t_end" "$W/fio/resync.log" "$disk_before" "$disk_after" "$cpu_n1" "$cpu_n3" \
	>"$W/fio/resync.json" <<'PYEOF'
import datetime, json, re, sys
after, before, t_start, t_end, log = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
d0, d1 = [int(x) for x in sys.argv[6].split()], [int(x) for x in sys.argv[7].split()]
disk = dict(zip(("reads", "read_sectors", "writes", "write_sectors", "flushes", "flush_ms"), (b - a for a, b in zip(d0, d1))))
def ts(pat):
    for line in open(log):
        if re.search(pat, line):
            return datetime.datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc).timestamp()
    return None
t0, t1 = ts(r"resync of copy \d+ \(n3\): \d+ bytes to copy"), ts(r"\(n3\) in sync again")
print(json.dumps({"copied": after - before, "seconds": (t1 or t_end) - t_start,
                  "cpu_s": {"n1": float(sys.argv[8]), "n3": float(sys.argv[9])},
                  "copy_seconds": (t1 - t0) if t0 and t1 else None, "disk": disk}))
PYEOF
fio_json "raw-seqwrite" --ioengine=io_uring --direct=1 --rw=write --bs=1M --iodepth=8 "--size=$RESYNC" \
	--name=a --filename="$W/raw/f1"
# The same disk work as the resync without Tessera: read one file and write
# another at once, 2M blocks, 6 in flight each (the pipeline's shape).  All
# three copies share one disk here, so a resync costs two transfers per byte.
fio --name=prefill --ioengine=io_uring --direct=1 --filename="$W/raw/copy-dst" --rw=write --bs=1M \
	--iodepth=8 "--size=$RESYNC" >/dev/null
fio_json "raw-copy" --ioengine=io_uring --direct=1 --bs=2M --iodepth=6 "--size=$RESYNC" \
	--name=src --rw=read --filename="$W/raw/f1" --name=dst --rw=write --filename="$W/raw/copy-dst"
fi

# ---- memory: one node with MEMVOLS attached 10 GiB volumes (3 replicas each)
if phase memory; then
log "memory: $MEMVOLS attached 10 GiB volumes"
for (( v=1; v<=MEMVOLS; v++ )); do
	ctsr volume create "mem$v" --size 10G --replicas 3 >/dev/null || die "create mem$v"
	ctsr volume attach "mem$v" --node n2 >/dev/null || die "attach mem$v"
done
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/${PIDS[1]}/status")
echo "{\"volumes\": $MEMVOLS, \"rss_kb\": $rss_kb}" >"$W/fio/memory.json"
fi

mkdir -p "$SRC/bench/results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
"$PY" "$HERE/report_cluster.py" "$W/fio" "$REPEATS" "$SRC/bench/results/cluster-$stamp" "$JOBS"
log "wrote bench/results/cluster-$stamp.{json,md}"
cat "$SRC/bench/results/cluster-$stamp.md"
