#!/usr/bin/env bash
# interleaved A/B of the resync phase: base, new, base, new ...  $1 = pairs, $2 = out dir
cd /var/tmp/resync-bench
out=$2
for (( i=1; i<=$1; i++ )); do
  for who in ${ARMS:-base new}; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    before=$(ls bench/results/*.json 2>/dev/null | wc -l)
    TSR_BUILD=/var/tmp/resync-$who/build BENCH_PHASES=resync timeout 900 bash bench/cluster.sh > $out/$who-$i.out 2>&1
    j=$(ls -t bench/results/*.json | head -1)
    python3 - "$j" "$who" "$i" "$load" <<'PY' | tee -a $out/summary.txt
import json,sys
r=json.load(open(sys.argv[1]))["resync"]
c=r["copy_seconds"]; bw=r["copied"]/c
print(f'{sys.argv[2]:4s} {sys.argv[3]} load {sys.argv[4]:5s} copy {c:.3f} s {bw/2**20:6.0f} MiB/s raw {r["raw_seq_bw"]/2**20:6.0f} ratio_raw {bw/r["raw_seq_bw"]:.3f} fio_copy {r["raw_copy_bw"]/2**20:6.0f} ratio_copy {bw/r["raw_copy_bw"]:.3f} flushes {r["disk"]["flushes"]} cpu_n3 {r["cpu_s"]["n3"]}')
PY
  done
done
