#!/usr/bin/env bash
# tessera-csi benchmark (issue 6's figures), one go on this machine:
#
#   sudo TSR_BUILD=build ./bench/csi.sh
#
# A 3-node tesserad cluster on loopback (the test helpers' cluster.sh) and
# tessera-csi --mode all on a unix socket; bench/csi.py drives it:
#  1. CreateVolume + DeleteVolume round trip, BENCH_ROUNDS (100) rounds, 3
#     replicas and 1 replica: p50 / p99 / max   (target: p50 < 50 ms)
#  2. BENCH_PARALLEL (100) volumes created at once, counted in `tessera
#     volume list`, then deleted at once; BENCH_REPEATS (3) runs, medians
#     (target: no errors)
#  3. NodeStageVolume of a fresh 10 GiB volume with mkfs.ext4 (root, /dev/fuse),
#     BENCH_REPEATS runs, median   (target: < 5 s)
# Writes bench/results/csi-<UTC timestamp>.md and .json.
set -uo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_args "$0" "$@"
HERE=$(cd "$(dirname "$0")" && pwd)
TSR_SRC=$(cd "$HERE/.." && pwd)
export TSR_SRC
export TSR_BUILD=${TSR_BUILD:-$TSR_SRC/build}
[ "${TSR_BUILD#/}" = "$TSR_BUILD" ] && TSR_BUILD=$TSR_SRC/$TSR_BUILD
. "$TSR_SRC/tests/integration/functions.sh"
. "$TSR_SRC/tests/integration/cluster.sh"
. "$TSR_SRC/tests/csi/csi.sh"
# shellcheck disable=SC2034  # read by functions.sh log()
TEST_NAME=bench-csi

require_csi
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$TSR_SRC/bench/results/csi-$STAMP
mkdir -p "$TSR_SRC/bench/results"

cl_start 3
csi_cli_env 1
on_exit "csi_node_cleanup '$CL_ROOT'"
export CSI_TMP=$CL_ROOT/scratch
mkdir -p "$CSI_TMP"
start_csi "$CL_ROOT/csi" --node-id n1 --mode all --tesserad "unix:$(cl_dir 1)/admin.sock" \
	--state-dir "$CL_ROOT/csi/state" --zone z1 --site site1
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
"$PY" "$HERE/csi.py" >"$OUT.json" || fail "bench/csi.py failed"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
stop_csi

BUILT="$(git -C "$TSR_SRC" rev-parse --short HEAD) (tree HEAD; tessera-csi built $(date -u -r "$TESSERA_CSI" +%H:%M:%SZ), tesserad $(date -u -r "$TESSERAD" +%H:%M:%SZ))"
"$PY" - "$OUT.json" "$LOAD_BEFORE" "$LOAD_AFTER" "$BUILT" >"$OUT.md" <<'PYEOF'
import json, statistics, sys, os
j = json.load(open(sys.argv[1]))
med = lambda xs: statistics.median(xs) if xs else float("nan")
print(f"# tessera-csi benchmark, {os.path.basename(sys.argv[1])[4:-5]}\n")
print(f"Commit {sys.argv[4]}; {os.cpu_count()} CPUs; load average before {sys.argv[2]}, after {sys.argv[3]}.")
print("3 tesserad nodes on 127.0.0.1 (one machine), tessera-csi --mode all on a unix socket, "
      "Python gRPC client (Debian python3-grpcio), one call at a time unless said.\n")
print("## CreateVolume + DeleteVolume round trip (1 GiB thin volume)\n")
print("| layout | rounds | round trip p50 | p99 | max | CreateVolume p50 | DeleteVolume p50 |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for k, name in (("round_trip_3_replicas", "3 replicas"), ("round_trip_1_replica", "1 replica")):
    r = j[k]
    print(f"| {name} | {r['round_trip']['n']} | {r['round_trip']['p50_ms']} ms | {r['round_trip']['p99_ms']} ms | "
          f"{r['round_trip']['max_ms']} ms | {r['create']['p50_ms']} ms | {r['delete']['p50_ms']} ms |")
b = j["cli_round_trip_3_replicas"]
print(f"| CLI baseline, 3 replicas (`tessera volume create` + `delete`, a process each) | {b['n']} | "
      f"{b['p50_ms']} ms | {b['p99_ms']} ms | {b['max_ms']} ms | | |")
p50 = j["round_trip_3_replicas"]["round_trip"]["p50_ms"]
print(f"\nTarget p50 < 50 ms: {'met' if p50 < 50 else 'NOT met'} ({p50} ms, 3 replicas).\n")
runs = j["parallel_runs"]
print(f"## {j['parallel']} volumes created in parallel (3 replicas), {len(runs)} runs\n")
print("| run | create wall | errors | volumes counted | create call p50 / p99 | delete wall | delete errors | left |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for i, r in enumerate(runs):
    print(f"| {i + 1} | {r['create_wall_s']} s | {r['create_errors']} | {r['volumes_counted']} | "
          f"{r['create_call']['p50_ms']} / {r['create_call']['p99_ms']} ms | {r['delete_wall_s']} s | "
          f"{r['delete_errors']} | {r['left_after_delete']} |")
print(f"\nMedian create wall time {med([r['create_wall_s'] for r in runs])} s, "
      f"delete {med([r['delete_wall_s'] for r in runs])} s; errors in all runs: "
      f"{sum(r['create_errors'] + r['delete_errors'] for r in runs)}.")
for r in runs:
    if r["first_errors"]:
        print(f"First errors: {r['first_errors']}")
if "stage_10g_runs" in j:
    s = j["stage_10g_runs"]
    m = med([x["stage_s"] for x in s])
    print(f"\n## NodeStageVolume of a fresh 10 GiB volume (mkfs.ext4 + mount), {len(s)} runs\n")
    print("| run | NodeStage | NodeUnstage |\n| --- | --- | --- |")
    for i, x in enumerate(s):
        print(f"| {i + 1} | {x['stage_s']} s | {x['unstage_s']} s |")
    print(f"\nMedian {m} s; target < 5 s: {'met' if m < 5 else 'NOT met'}.")
else:
    print("\nNodeStageVolume not measured (needs root and /dev/fuse).")
PYEOF
cat "$OUT.md"
log "wrote $OUT.md and $OUT.json"
