#!/usr/bin/env bash
# Side-by-side benchmark, one go, same machine.
#
#   sudo ./bench/run.sh
#
# The standard job set (4k randwrite QD32, 4k randread QD32, 4k randwrite QD1,
# 1M write QD8, 4k randrw 70/30 QD32) against:
#   raw            fio, io_uring, direct=1, a file in a temp dir on the same disk
#                  (the physical limit)
#   nbdkit-memory  nbdkit memory plugin, unix socket, fio's nbd engine
#                  (the ceiling of the NBD transport itself)
#   nbdkit-file    nbdkit file plugin with its defaults, unix socket, fio nbd
#                  (the peer NBD server)
#   tessera        tesserad over NBD (unix socket), fio's nbd engine
#   tessera-bench  the same tessera volume measured by tessera-bench
#   ceph-rep3      optional (BENCH_CEPH=1): ../shared/peers/ceph-rbd.sh, 3 replicas
# Every target is prefilled (sequential 1M writes) first.  Jobs run
# interleaved (repeat -> job -> target) so drift hits every target alike; the
# median of the repeats is reported.  Writes bench/results/<timestamp>.json
# and .md (figures, ratios tessera/raw and tessera/nbdkit-file, QD1 p50 delta).
#
# Knobs: BENCH_RUNTIME=10 (s per run), BENCH_REPEATS=3, BENCH_SIZE=1G,
# BENCH_RAMP=1 (s), BENCH_TARGETS="raw nbdkit-memory nbdkit-file tessera tessera-bench",
# BENCH_JOBS (subset of job names), BENCH_CEPH=0, BENCH_WORKERS (tesserad --workers),
# BENCH_IO=auto (tesserad --io), BENCH_READ_CACHE=on|off (tesserad --read-cache;
# unset: tesserad's default, on), TSR_BUILD (default: build/), BENCH_KEEP=1 (keep
# the temp dir with every fio JSON and log).
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
RAMP=${BENCH_RAMP:-1}
TARGETS=${BENCH_TARGETS:-"raw nbdkit-memory nbdkit-file tessera tessera-bench"}
CEPH=${BENCH_CEPH:-0}
PY=/usr/bin/python3

declare -A JOB_ARGS=(
	[4k_randwrite_qd32]="--rw=randwrite --bs=4k --iodepth=32"
	[4k_randread_qd32]="--rw=randread --bs=4k --iodepth=32"
	[4k_randwrite_qd1]="--rw=randwrite --bs=4k --iodepth=1"
	[1m_write_qd8]="--rw=write --bs=1M --iodepth=8"
	[4k_randrw70_qd32]="--rw=randrw --rwmixread=70 --bs=4k --iodepth=32"
)
JOBS=${BENCH_JOBS:-"4k_randwrite_qd32 4k_randread_qd32 4k_randwrite_qd1 1m_write_qd8 4k_randrw70_qd32"}

T0=$(date +%s)
log() { printf '[%s +%4ss] %s\n' "$(date +%T)" "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

for c in fio nbdkit "$PY"; do command -v "$c" >/dev/null || die "$c not found (run ./scripts/setup.sh)"; done
if [[ " $TARGETS " == *" tessera"* ]] && [ ! -x "$TSR_BUILD/tools/tesserad/tesserad" ]; then
	log "building Tessera (scripts/setup.sh)"
	BUILD_DIR=$TSR_BUILD "$SRC/scripts/setup.sh" >/dev/null
fi
TESSERAD=$TSR_BUILD/tools/tesserad/tesserad
TESSERA=$TSR_BUILD/tools/tessera/tessera
TESSERA_BENCH=$TSR_BUILD/tools/tessera-bench/tessera-bench

W=$(mktemp -d /var/tmp/tessera-bench.XXXXXX)
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
mkdir -p "$W/fio" "$W/log"

size_bytes=$("$PY" -c 'import sys
s = sys.argv[1].upper().rstrip("B").rstrip("I")
m = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
print(int(s[:-1]) * m[s[-1]] if s[-1] in m else int(s))' "$SIZE")

# ------------------------------------------------------------------ targets
has_target() { case " $TARGETS " in *" $1 "*) return 0 ;; esac; return 1; }
declare -A FIO_TARGET=()   # target -> fio args that select it

if has_target raw; then
	fallocate -l "$size_bytes" "$W/raw.img" 2>/dev/null || truncate -s "$size_bytes" "$W/raw.img"
	FIO_TARGET[raw]="--ioengine=io_uring --direct=1 --filename=$W/raw.img"
fi
start_nbdkit() {  # NAME PLUGIN ARGS...
	local name=$1 i
	shift
	nbdkit -f -U "$W/$name.sock" "$@" >"$W/log/$name.log" 2>&1 &
	PIDS+=($!)
	for (( i=0; i<100; i++ )); do [ -S "$W/$name.sock" ] && return 0; sleep 0.1; done
	die "nbdkit $name did not start (see $W/log/$name.log)"
}
if has_target nbdkit-memory; then
	start_nbdkit nbdkit-memory memory "$size_bytes"
	FIO_TARGET[nbdkit-memory]="--ioengine=nbd --uri=nbd+unix:///?socket=$W/nbdkit-memory.sock"
fi
if has_target nbdkit-file; then
	truncate -s "$size_bytes" "$W/nbdkit-file.img"
	start_nbdkit nbdkit-file file "$W/nbdkit-file.img"
	FIO_TARGET[nbdkit-file]="--ioengine=nbd --uri=nbd+unix:///?socket=$W/nbdkit-file.sock"
fi
TSR_URI="nbd+unix:///bench?socket=$W/tsr/nbd.sock"
if has_target tessera || has_target tessera-bench; then
	[ -x "$TESSERAD" ] || die "not built: $TESSERAD"
	mkdir -p "$W/tsr"
	targs=(--data "$W/tsr" --io "${BENCH_IO:-auto}")
	[ -n "${BENCH_WORKERS:-}" ] && targs+=(--workers "$BENCH_WORKERS")
	[ -n "${BENCH_READ_CACHE:-}" ] && targs+=(--read-cache "$BENCH_READ_CACHE")
	"$TESSERAD" "${targs[@]}" >"$W/log/tesserad.log" 2>&1 &
	PIDS+=($!)
	for (( i=0; i<300; i++ )); do [ -S "$W/tsr/admin.sock" ] && [ -f "$W/tsr/tesserad.pid" ] && break; sleep 0.1; done
	"$TESSERA" --data "$W/tsr" volume create bench --size "$size_bytes" >/dev/null ||
		die "cannot create the tessera volume (see $W/log/tesserad.log)"
	has_target tessera && FIO_TARGET[tessera]="--ioengine=nbd --uri=$TSR_URI"
fi
if has_target tessera-bench; then
	[ -x "$TESSERA_BENCH" ] || die "not built: $TESSERA_BENCH"
fi

# ------------------------------------------------------------------ prefill
for t in "${!FIO_TARGET[@]}"; do
	log "prefill $t ($SIZE, sequential 1M writes)"
	# shellcheck disable=SC2086
	fio --name=prefill --rw=write --bs=1M --iodepth=16 --size="$size_bytes" \
		--output-format=json --output="$W/fio/prefill-$t.json" ${FIO_TARGET[$t]} \
		>"$W/log/prefill-$t.log" 2>&1 || die "prefill of $t failed (see $W/log/prefill-$t.log)"
done
if has_target tessera-bench && ! has_target tessera; then
	"$TESSERA_BENCH" --rw=write --bs=1M --iodepth=16 --size="$size_bytes" \
		--filename="$TSR_URI" >/dev/null || die "prefill via tessera-bench failed"
fi

# ------------------------------------------------------------------ runs
common=(--time_based --runtime="$RUNTIME" --ramp_time="$RAMP" --size="$size_bytes"
	--numjobs=1 --output-format=json)
for (( r=1; r<=REPEATS; r++ )); do
	for job in $JOBS; do
		[ -n "${JOB_ARGS[$job]:-}" ] || die "unknown job $job"
		for t in $TARGETS; do
			out="$W/fio/$t@$job@$r.json"
			# shellcheck disable=SC2086
			if [ "$t" = tessera-bench ]; then
				"$TESSERA_BENCH" ${JOB_ARGS[$job]} "${common[@]}" --filename="$TSR_URI" \
					>"$out" 2>"$W/log/$t-$job-$r.err" ||
					{ log "$t $job run $r failed: $(tail -n1 "$W/log/$t-$job-$r.err")"; rm -f "$out"; continue; }
			else
				fio --name="$job" ${JOB_ARGS[$job]} "${common[@]}" ${FIO_TARGET[$t]} \
					--output="$out" >"$W/log/$t-$job-$r.err" 2>&1 ||
					{ log "$t $job run $r failed: $(tail -n1 "$W/log/$t-$job-$r.err")"; rm -f "$out"; continue; }
			fi
			log "run $r/$REPEATS $job $t: $("$PY" "$HERE/report.py" --one "$out")"
		done
	done
done

# ------------------------------------------------------------------ ceph (optional)
if [ "$CEPH" = 1 ]; then
	CEPH_SH=$SRC/../shared/peers/ceph-rbd.sh
	[ -x "$CEPH_SH" ] || [ -f "$CEPH_SH" ] || die "BENCH_CEPH=1 but $CEPH_SH is missing"
	log "ceph: running $CEPH_SH (PHASES=rep, about 7 minutes)"
	if RESULTS="$W/ceph" PHASES=rep RUNTIME=$(( RUNTIME < 8 ? 8 : RUNTIME )) bash "$CEPH_SH" \
		>"$W/log/ceph.log" 2>&1; then
		for job in $JOBS; do
			# the peer script names its files rep3_<job>.json (rep_<job> in older copies)
			for f in "$W/ceph/rep3_$job.json" "$W/ceph/rep_$job.json"; do
				[ -f "$f" ] && cp "$f" "$W/fio/ceph-rep3@$job@1.json" && break
			done
		done
		TARGETS="$TARGETS ceph-rep3"
	else
		log "ceph run failed (see $W/log/ceph.log); no Ceph row"
	fi
fi

# ------------------------------------------------------------------ report
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$HERE/results"
"$PY" "$HERE/report.py" --dir "$W/fio" --targets "$TARGETS" --jobs "$JOBS" \
	--json "$HERE/results/$stamp.json" --md "$HERE/results/$stamp.md" \
	--meta runtime="$RUNTIME" repeats="$REPEATS" size="$SIZE" ramp="$RAMP" \
	kernel="$(uname -r)" cpus="$(nproc)" fio="$(fio --version)" \
	commit="$(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
	tesserad_io="${BENCH_IO:-auto}" tesserad_read_cache="${BENCH_READ_CACHE:-default}" disk="$(df --output=source "$W" | tail -n1)"
cat "$HERE/results/$stamp.md"
log "wrote bench/results/$stamp.json and .md"
