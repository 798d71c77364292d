#!/bin/bash
# ab.sh LAST FIRST: rounds FIRST..LAST rounds base, w64, sb64; log in /var/tmp/perfdr2-ab/ab.log
D=/var/tmp/perfdr2-ab
for i in $(seq $2 $1); do
  for b in base w64 sb64; do
    echo "=== $b round $i $(date -u +%T) $(uptime)" >> $D/ab.log
    cd $D/$b && nice -n -20 env TSR_BUILD=$D/$b/build BENCH_PARTS=overhead BENCH_RUNTIME=5 BENCH_REPEATS=3 BENCH_SIZE=256M bash bench/site.sh > $D/run.$b.$i.txt 2>&1
    echo "=== $b round $i done $(date -u +%T) rc=$? $(ls -t bench/results/site-*.md | head -1)" >> $D/ab.log
  done
done
