#!/bin/bash
# Interleaved before/after resync runs (helper resync, issue 3).
cd /work/main
for round in 1 2; do
  for b in before after; do
    echo "=== $(date -u +%T) round $round build $b load $(cut -d' ' -f1-3 /proc/loadavg)"
    TSR_BUILD=/var/tmp/resync-ab/$b-build BENCH_PHASES=resync nice -n -20 bash bench/cluster.sh 2>&1 | grep -E "wrote|Resync:|FATAL"
  done
done
for b in before after; do
  echo "=== $(date -u +%T) trace build $b load $(cut -d' ' -f1-3 /proc/loadavg)"
  TSR_BUILD=/var/tmp/resync-ab/$b-build BENCH_PHASES=resync BENCH_TRACE=1 BENCH_KEEP=1 nice -n -20 bash bench/cluster.sh 2>&1 | grep -v "ino 1" | grep -E -v "^\s+[0-9]+  (gone|other)"
done
