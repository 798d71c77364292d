#!/usr/bin/env bash
# Snapshot benchmark, one go, same machine (issue 5's figures).
#
#   sudo ./bench/snapshot.sh
#
# One standalone tesserad, fio's nbd engine over the unix socket:
#  1. 4k randwrite QD32 on a volume with no snapshot ("nosnap") and on one
#     with 10 snapshots ("snap10"; after the 10th cut the volume is rewritten
#     once sequentially, so every block has been copied on write: the steady
#     state).  Runs interleaved, median of BENCH_REPEATS; ratio snap10/nosnap.
#  2. Copy-on-write cost: a snapshot is cut on snap10 and the same job runs at
#     once; most of its writes are first writes after the cut and pay the
#     copy.  Reported with the share of first writes (diff size / writes).
#  3. Snapshot create latency under load: fio 4k randwrite QD32 runs while
#     BENCH_SNAPS snapshots are cut one per second; the CLI round trip is
#     measured (p50, p99, max), and from tesserad's log: the snapshot create
#     latency (request to reply inside tesserad, the issue's figure: no CLI
#     process start), the time host writes were held by the volume's gate
#     (drain of the writes in flight + the cut itself), how many cuts found
#     their layer made ahead (a spare), and how long the store's reaper thread
#     took to remove the files of each deleted layer (the steady part deletes
#     three 1 GiB copy-on-write layers just before).
#  4. diff of a 1 TiB thin volume with 1% changed: a snapshot, then 1 MiB
#     written at every 100th MiB (10 GiB), then `tessera snapshot diff --head`
#     timed (median of 5).
#  5. ("delete", not in the default parts) Snapshot delete under load: fio 4k
#     randwrite QD32 on nosnap while BENCH_DEL_SNAPS (8) snapshots are cut 1 s
#     apart, then deleted newest first, 1 s after the previous one's merge
#     ended.  Per delete: the writes held by the gate (tesserad's gate line),
#     the merge time (the store's "finished outside the gate" line; a build
#     that merges in the gate: the gate's local op) and fio's largest write
#     latency from the delete request to the merge's end (fio's clat log, max
#     per 100 ms).  Written to bench/results/snapshot-delete-<timestamp>.md and
#     .json (delete_part below).
# Writes bench/results/snapshot-<timestamp>.md and .json.
#
# Knobs: BENCH_RUNTIME=10, BENCH_REPEATS=3, BENCH_SIZE=1G, BENCH_SNAPS=20,
# BENCH_DIFF_SIZE=1T, TSR_BUILD (default build/), BENCH_KEEP=1,
# BENCH_PARTS=steady,latency,diff (the parts to run: steady = 1 and 2; a part
# left out reports 0; "cow" alone is a quick form of 2: BENCH_REPEATS pairs of
# a run on a volume with no snapshot and a run on one just cut, no snap10;
# "delete" is 5), BENCH_DEL_SNAPS=8, BENCH_LABEL (names the build in part 5's
# report; default: git describe of this tree).
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
NSNAPS=${BENCH_SNAPS:-20}
DIFF_SIZE=${BENCH_DIFF_SIZE:-1T}
PY=/usr/bin/python3
PARTS=,${BENCH_PARTS:-steady,latency,diff},
part() { [[ $PARTS == *,$1,* ]]; }

T0=$(date +%s)
log() { printf '[%s +%4ss] %s\n' "$(date +%T)" "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

for c in fio qemu-io "$PY"; do command -v "$c" >/dev/null || die "$c not found (run ./scripts/setup.sh)"; done
if [ ! -x "$TSR_BUILD/tools/tesserad/tesserad" ]; then
	log "building Tessera (scripts/setup.sh)"
	BUILD_DIR=$TSR_BUILD "$SRC/scripts/setup.sh" >/dev/null
fi
TESSERAD=$TSR_BUILD/tools/tesserad/tesserad
TESSERA=$TSR_BUILD/tools/tessera/tessera

W=$(mktemp -d /var/tmp/tsr-bench-snap.XXXXXX)
PID=
cleanup() {
	[ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
	if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
mkdir -p "$W/tsr" "$W/fio" "$W/log"
tsr() { "$TESSERA" --data "$W/tsr" "$@"; }
uri() { echo "nbd+unix:///$1?socket=$W/tsr/nbd.sock"; }

"$TESSERAD" --data "$W/tsr" >"$W/log/tesserad.log" 2>&1 &
PID=$!
for (( i=0; i<300; i++ )); do [ -S "$W/tsr/admin.sock" ] && [ -f "$W/tsr/tesserad.pid" ] && break; sleep 0.1; done
VOLS=nosnap
part steady && VOLS="nosnap snap10"
part cow && VOLS="nosnap cowv"
for v in $VOLS; do
	tsr volume create "$v" --size "$SIZE" >/dev/null || die "volume create $v"
	log "prefill $v ($SIZE, sequential 1M writes)"
	fio --name=prefill --rw=write --bs=1M --iodepth=16 --ioengine=nbd --uri="$(uri "$v")" \
		--size="$SIZE" >"$W/log/prefill-$v.log" 2>&1 || die "prefill $v"
done

randwrite() { # VOLUME OUT.json [extra fio args]
	local v=$1 out=$2
	shift 2
	fio --name=rw --rw=randwrite --bs=4k --iodepth=32 --ioengine=nbd --uri="$(uri "$v")" \
		--size="$SIZE" --time_based --runtime="$RUNTIME" --numjobs=1 --output-format=json \
		--output="$out" "$@" >/dev/null 2>&1 || die "fio on $v (see $out)"
}
iops() { "$PY" -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["jobs"][0]["write"]["iops"]))' "$1"; }
writes() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["write"]["total_ios"])' "$1"; }

declare -a A B C F L D S
if part steady; then
log "snap10: 10 snapshots, 2 s of random writes between cuts, then one full rewrite"
for (( s=1; s<=10; s++ )); do
	tsr snapshot create snap10 "s$s" >/dev/null || die "snapshot create snap10 s$s"
	fio --name=between --rw=randwrite --bs=4k --iodepth=32 --ioengine=nbd --uri="$(uri snap10)" \
		--size="$SIZE" --time_based --runtime=2 >/dev/null 2>&1 || die "fio between cuts"
done
fio --name=rewrite --rw=write --bs=1M --iodepth=16 --ioengine=nbd --uri="$(uri snap10)" \
	--size="$SIZE" >/dev/null 2>&1 || die "rewrite of snap10"

for (( r=1; r<=REPEATS; r++ )); do
	randwrite nosnap "$W/fio/nosnap-$r.json"
	A+=("$(iops "$W/fio/nosnap-$r.json")")
	randwrite snap10 "$W/fio/snap10-$r.json"
	B+=("$(iops "$W/fio/snap10-$r.json")")
	tsr snapshot create snap10 "cow$r" >/dev/null || die "snapshot create cow$r"
	randwrite snap10 "$W/fio/cow-$r.json"
	C+=("$(iops "$W/fio/cow-$r.json")")
	first=$(tsr --json snapshot diff snap10 "cow$r" --head | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["changed_bytes"] // 4096)')
	F+=("$(( 100 * first / $(writes "$W/fio/cow-$r.json") ))")
	log "run $r/$REPEATS: nosnap ${A[-1]} IOPS, snap10 ${B[-1]} IOPS, right after a cut ${C[-1]} IOPS (${F[-1]}% first writes)"
	# Back to 10 snapshots; the copies made since the cut merge into s10.
	tsr snapshot delete snap10 "cow$r" >/dev/null || die "snapshot delete cow$r"
done
elif part cow; then
	B=(0)
	for (( r=1; r<=REPEATS; r++ )); do
		randwrite nosnap "$W/fio/nosnap-$r.json"
		A+=("$(iops "$W/fio/nosnap-$r.json")")
		tsr snapshot create cowv "cow$r" >/dev/null || die "snapshot create cowv cow$r"
		randwrite cowv "$W/fio/cow-$r.json"
		C+=("$(iops "$W/fio/cow-$r.json")")
		first=$(tsr --json snapshot diff cowv "cow$r" --head | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["changed_bytes"] // 4096)')
		F+=("$(( 100 * first / $(writes "$W/fio/cow-$r.json") ))")
		log "run $r/$REPEATS: nosnap ${A[-1]} IOPS, right after a cut ${C[-1]} IOPS (${F[-1]}% first writes)"
	done
else
	A=(0) B=(0) C=(0) F=(0)
fi

LOAD_IOPS=0 H= R= G= P= RP= SPARE=0
if part latency; then
log "create latency: $NSNAPS cuts under 4k randwrite QD32"
fio --name=load --rw=randwrite --bs=4k --iodepth=32 --ioengine=nbd --uri="$(uri nosnap)" \
	--size="$SIZE" --time_based --runtime=$(( 2 * NSNAPS + 5 )) --output-format=json \
	--output="$W/fio/load.json" >/dev/null 2>&1 &
FIO=$!
sleep 2
for (( s=1; s<=NSNAPS; s++ )); do
	t0=$(date +%s%N)
	tsr snapshot create nosnap "l$s" >/dev/null || die "snapshot create under load"
	L+=("$(( ($(date +%s%N) - t0) / 1000 ))")
	# the CLI's own floor under the same load: a command that cuts nothing
	t0=$(date +%s%N)
	tsr status >/dev/null || die "status under load"
	S+=("$(( ($(date +%s%N) - t0) / 1000 ))")
	sleep 1
done
wait "$FIO" || die "fio load"
LOAD_IOPS=$(iops "$W/fio/load.json")
# The server's side of each cut: how long host writes were held (layout gate).
H=$({ grep -o "snapshot gate: create 'l[0-9]*': writes held [0-9.]*" "$W/log/tesserad.log" ||
	true; } | awk '{printf "%d ", $NF * 1000}')
# ... split into the drain of the writes in flight and the layout's snap op
G=$({ grep -o "snapshot gate: create 'l[0-9]*': writes held [0-9.]* ms (drain [0-9.]* ms, [a-z]* op [0-9.]*" \
	"$W/log/tesserad.log" || true; } | awk '{printf "%d:%d ", $10 * 1000, $NF * 1000}')
# ... and from the request to the reply (admin API; builds after 94a6352)
R=$({ grep -o "snapshot create 'nosnap@l[0-9]*': replied after [0-9.]*" "$W/log/tesserad.log" ||
	true; } | awk '{printf "%d ", $NF * 1000}')
# ... and how many of the cuts found their layer's files made ahead (spare.c)
SPARE=$({ grep -c "snapshot: volume nosnap: created l[0-9]* .*on a spare layer" \
	"$W/log/tesserad.log" || true; } | head -1)
# ... and, for cuts whose catalogue row was made durable after the gate
# reopened (the store's thread; builds with the row out of the gate), how long
# after the cut the row was durable
P=$({ grep -o "snapshot: volume nosnap: created l[0-9]* .*row durable [0-9.]*" \
	"$W/log/tesserad.log" || true; } | awk '{printf "%d ", $NF * 1000}')
# ... and the reaper thread's removals of deleted layers' files over the whole
# run (builds after aba5747: one line per layer)
RP=$({ grep -o "files removed in [0-9.]* ms" "$W/log/tesserad.log" || true; } |
	awk '{printf "%d ", $4 * 1000}')
else
	L=(0) S=(0)
fi

DIFF_BYTES=0 DIFF_EXT=0
if part diff; then
log "diff: $DIFF_SIZE thin volume, 1% changed"
tsr volume create thin --size "$DIFF_SIZE" >/dev/null || die "volume create thin"
tsr snapshot create thin base >/dev/null || die "snapshot create thin base"
mib=$("$PY" -c 'import sys; s=sys.argv[1]; m={"G":1<<10,"T":1<<20}; print(int(s[:-1])*m[s[-1]])' "$DIFF_SIZE")
cmds=()
for (( o=0; o<mib; o+=100 )); do cmds+=(-c "write -P 7 ${o}M 1M"); done
qemu-io -f raw "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"nbd\",\"export\":\"thin\",\"server\":{\"type\":\"unix\",\"path\":\"$W/tsr/nbd.sock\"}}}" \
	"${cmds[@]}" >/dev/null || die "writes to thin"
for (( r=1; r<=5; r++ )); do
	t0=$(date +%s%N)
	tsr --json snapshot diff thin base --head >"$W/diff.json" || die "snapshot diff"
	D+=("$(( ($(date +%s%N) - t0) / 1000 ))")
done
DIFF_BYTES=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["changed_bytes"])' "$W/diff.json")
DIFF_EXT=$("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["extents"]))' "$W/diff.json")
else
	D=(0)
fi

# Part 5 ("delete"): host writes held and fio's latency while snapshots are
# deleted under load (see the header).
delete_part() {
	local v=nosnap n=${BENCH_DEL_SNAPS:-8} s k t0 t1 fstart fio_pid inside=1
	local times=$W/del-times.txt
	# a build whose merge runs on the store's thread logs this line
	grep -qa "finished outside the gate" "$TESSERAD" && inside=0
	log "delete: $n snapshots cut under 4k randwrite QD32, then deleted newest first" \
		"(merge $([ $inside = 1 ] && echo 'in the gate' || echo 'on the store thread'))"
	: >"$times"
	fstart=$(date +%s%3N)
	fio --name=del --rw=randwrite --bs=4k --iodepth=32 --ioengine=nbd --uri="$(uri "$v")" \
		--size="$SIZE" --time_based --runtime=900 --write_lat_log="$W/fio/del" \
		--log_avg_msec=100 --log_max_value=1 --output-format=json \
		--output="$W/fio/del.json" >/dev/null 2>&1 &
	fio_pid=$!
	sleep 2
	for (( s=1; s<=n; s++ )); do
		tsr snapshot create "$v" "d$s" >/dev/null || die "snapshot create $v d$s"
		sleep 1
	done
	for (( s=n; s>=1; s-- )); do
		t0=$(date +%s%3N)
		tsr snapshot delete "$v" "d$s" >/dev/null || die "snapshot delete $v d$s"
		t1=$(date +%s%3N)
		if [ $inside = 0 ]; then
			for (( k=0; k<3000; k++ )); do
				grep -q "delete of d$s (" "$W/log/tesserad.log" && break
				sleep 0.1
			done
		fi
		echo "d$s $t0 $t1" >>"$times"
		log "deleted d$s (CLI $(( t1 - t0 )) ms)"
		sleep 1
	done
	kill -INT "$fio_pid" 2>/dev/null || true
	wait "$fio_pid" || true
	mkdir -p "$HERE/results"
	"$PY" - "$HERE/results/snapshot-delete-$(date -u +%Y%m%dT%H%M%SZ)" "$W/log/tesserad.log" \
		"$times" "$W/fio/del_clat.1.log" "$fstart" "$inside" "$SIZE" \
		"${BENCH_LABEL:-$(git -C "$SRC" describe --always --dirty 2>/dev/null || echo unknown)}" <<'PYDEL'
import datetime, json, re, sys
out, logf, timesf, clatf, fstart, inside, size, rev = sys.argv[1:9]
fstart, inside = int(fstart), inside == "1"
def ts_ms(line):
    t = datetime.datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f")
    return int(t.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)
gate, merge = {}, {}
for line in open(logf, errors="replace"):
    m = re.search(r"snapshot gate: delete '(d\d+)': writes held ([0-9.]+) ms "
                  r"\(drain ([0-9.]+) ms, [a-z]+ op ([0-9.]+) ms\)", line)
    if m:
        gate[m[1]] = (float(m[2]), float(m[3]), float(m[4]))
    m = re.search(r"delete of (d\d+) \(.*finished outside the gate: merge (\d+) ms "
                  r"\((\d+) blocks", line)
    if m:
        merge[m[1]] = (ts_ms(line), int(m[2]), int(m[3]))
clat = []
for line in open(clatf):
    f = line.split(",")
    if len(f) >= 2:
        clat.append((int(f[0]), int(f[1])))
rows = []
for line in open(timesf):
    name, t0, t1 = line.split()
    t0, t1 = int(t0), int(t1)
    held, drain, op = gate.get(name, (None, None, None))
    if inside:
        end, mms, blocks = t1, op, None
    else:
        end, mms, blocks = merge.get(name, (t1, None, None))
    # fio logs the max of each 100 ms at its end: the entries that overlap [t0, end]
    lo, hi = t0 - fstart, end - fstart + 100
    win = [v for t, v in clat if lo <= t <= hi]
    rows.append({"snap": name, "held_ms": held, "drain_ms": drain, "gate_op_ms": op,
                 "merge_ms": mms, "merge_blocks": blocks, "request_to_merge_end_ms": end - t0,
                 "fio_max_clat_ms": round(max(win) / 1e6, 1) if win else None})
r = {"size": size, "rev": rev, "merge_in_gate": inside, "deletes": rows}
json.dump(r, open(out + ".json", "w"), indent=1)
f = lambda x: "-" if x is None else (f"{x:.1f}" if isinstance(x, float) else str(x))
md = [f"# Snapshot delete under 4k randwrite QD32 ({size} volume, {rev}, merge "
      f"{'in the gate' if inside else 'on the store thread'})", "",
      "| snapshot | writes held (gate) ms | drain ms | gate op ms | merge ms | blocks | request to merge end ms | fio max clat ms |",
      "|---|---|---|---|---|---|---|---|"]
for x in rows:
    md.append(f"| {x['snap']} | {f(x['held_ms'])} | {f(x['drain_ms'])} | {f(x['gate_op_ms'])} | "
              f"{f(x['merge_ms'])} | {f(x['merge_blocks'])} | {x['request_to_merge_end_ms']} | "
              f"{f(x['fio_max_clat_ms'])} |")
open(out + ".md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PYDEL
	log "wrote $(ls -t "$HERE"/results/snapshot-delete-*.md | head -1)"
}
if part delete; then
	delete_part
	# delete alone: its own report is the whole result
	[ "$PARTS" = ",delete," ] && exit 0
fi

mkdir -p "$HERE/results"
ts=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$HERE/results/snapshot-$ts
"$PY" - "$OUT" "$SIZE" "$RUNTIME" "$DIFF_SIZE" "$LOAD_IOPS" "$DIFF_BYTES" "$DIFF_EXT" \
	"${A[*]}" "${B[*]}" "${C[*]}" "${F[*]}" "${L[*]}" "${D[*]}" "$H" "${S[*]}" "$R" "$G" "${SPARE:-0}" "$P" \
	"$RP" <<'EOF'
import json, statistics, subprocess, sys
out, size, runtime, dsize, load_iops, dbytes, dext = sys.argv[1:8]
A, B, C, F, L, D, H, S, R = ([int(x) for x in a.split()] for a in sys.argv[8:17])
G = [tuple(int(y) for y in x.split(":")) for x in sys.argv[17].split()]
spare = int(sys.argv[18] or 0)
P = [int(x) for x in sys.argv[19].split()]
RP = [int(x) for x in sys.argv[20].split()]
GD, GO = [g[0] for g in G], [g[1] for g in G]
med = statistics.median
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
r = {
    "size": size, "runtime_s": int(runtime),
    "randwrite_qd32_iops": {"nosnap": A, "snap10": B, "after_cut": C, "after_cut_first_write_pct": F},
    "median": {"nosnap": med(A), "snap10": med(B), "after_cut": med(C)},
    "ratio_snap10_nosnap": round(med(B) / med(A), 3) if med(A) else 0,
    "ratio_after_cut_nosnap": round(med(C) / med(A), 3) if med(A) else 0,
    "create_latency_us": L, "create_p50_ms": pct(L, 50) / 1000, "create_p99_ms": pct(L, 99) / 1000,
    "create_max_ms": max(L) / 1000, "load_iops": int(load_iops),
    "status_us": S, "status_p50_ms": pct(S, 50) / 1000, "status_p99_ms": pct(S, 99) / 1000,
    "writes_held_us": H, "held_p50_ms": pct(H, 50) / 1000 if H else None,
    "held_p99_ms": pct(H, 99) / 1000 if H else None,
    "drain_us": GD, "op_us": GO,
    "drain_p50_ms": pct(GD, 50) / 1000 if GD else None, "drain_p99_ms": pct(GD, 99) / 1000 if GD else None,
    "op_p50_ms": pct(GO, 50) / 1000 if GO else None, "op_p99_ms": pct(GO, 99) / 1000 if GO else None,
    "cuts_on_spare": spare,
    "rows_after_gate": len(P), "row_durable_us": P,
    "row_durable_p50_ms": pct(P, 50) / 1000 if P else None,
    "row_durable_p99_ms": pct(P, 99) / 1000 if P else None,
    "replied_us": R, "replied_p50_ms": pct(R, 50) / 1000 if R else None,
    "replied_p99_ms": pct(R, 99) / 1000 if R else None,
    "replied_max_ms": max(R) / 1000 if R else None,
    "cuts": len(L) if H else 0,
    "reaps": len(RP), "reap_us": RP, "reap_total_ms": sum(RP) / 1000,
    "reap_longest_ms": max(RP) / 1000 if RP else None,
    "diff_volume": dsize, "diff_bytes": int(dbytes), "diff_extents": int(dext),
    "diff_us": D, "diff_median_s": med(D) / 1e6,
    "kernel": subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip(),
}
json.dump(r, open(out + ".json", "w"), indent=1)
md = f"""# Snapshot benchmark ({size} volumes, {runtime} s runs, medians of {len(A)})

| figure | value | target |
|---|---|---|
| 4k randwrite QD32, no snapshot | {med(A):.0f} IOPS | |
| 4k randwrite QD32, 10 snapshots (steady) | {med(B):.0f} IOPS = **{r['ratio_snap10_nosnap']:.2f}x** | >= 0.8x |
| same, right after a cut (copy on write; {med(F):.0f}% first writes) | {med(C):.0f} IOPS = {r['ratio_after_cut_nosnap']:.2f}x | reported |
| **snapshot create latency** under load (tesserad, request to reply; {r['cuts']} cuts, fio {int(load_iops)} IOPS; **{spare} of {r['cuts']} cuts on a spare layer**) | p50 {r['replied_p50_ms'] or 0:.1f} ms, p99 {r['replied_p99_ms'] or 0:.1f} ms, max {r['replied_max_ms'] or 0:.1f} ms | p99 < 50 ms |
| ... the same creates as a CLI round trip (incl. process start) | p50 {r['create_p50_ms']:.1f} ms, p99 {r['create_p99_ms']:.1f} ms, max {r['create_max_ms']:.1f} ms | |
| `tessera status` round trip, same load (the CLI's own floor) | p50 {r['status_p50_ms']:.1f} ms, p99 {r['status_p99_ms']:.1f} ms | |
| host writes held by the cut (server side, tesserad log) | p50 {r['held_p50_ms'] or 0:.1f} ms, p99 {r['held_p99_ms'] or 0:.1f} ms | "a few ms" |
| ... of which the drain of writes in flight / the snap op | p50 {r['drain_p50_ms'] or 0:.1f} / {r['op_p50_ms'] or 0:.1f} ms, p99 {r['drain_p99_ms'] or 0:.1f} / {r['op_p99_ms'] or 0:.1f} ms | |
| rows made durable after the gate reopened ({len(P)} of {len(L) if H else 0} cuts), cut to row durable | p50 {r['row_durable_p50_ms'] or 0:.1f} ms, p99 {r['row_durable_p99_ms'] or 0:.1f} ms | |
| files of deleted layers removed by the reaper thread (whole run; none logged before aba5747) | {len(RP)} layers, {r['reap_total_ms']:.0f} ms in all, longest {r['reap_longest_ms'] or 0:.1f} ms | |
| diff of a {dsize} thin volume, 1% changed ({int(dbytes) >> 20} MiB in {dext} extents) | {r['diff_median_s']:.3f} s (median of {len(D)}) | < 1 s |
"""
open(out + ".md", "w").write(md)
print(md)
EOF
log "wrote $OUT.md and $OUT.json"
