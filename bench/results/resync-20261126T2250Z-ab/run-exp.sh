#!/bin/bash
# Interleaved after/exp resync runs: exp = after + 16 copies / 32 MiB in flight, 48 MiB replica receive pool, 16 cached copy buffers.
cd /work/main
for round in 1 2 3; do
  for b in after exp; do
    echo "=== $(date -u +%T) round $round build $b load $(cut -d' ' -f1-3 /proc/loadavg)"
    TSR_BUILD=/var/tmp/resync-ab/$b-build BENCH_PHASES=resync nice -n -20 bash bench/cluster.sh 2>&1 | grep -E "wrote|Resync:|FATAL"
  done
done
