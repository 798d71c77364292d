#!/bin/bash
# ab.sh N: N interleaved pairs base, new; log in /var/tmp/perfdr-ab/ab.log
for i in $(seq 1 $1); do
  for b in base new; do
    echo "=== $b pair $i $(date -u +%T) $(uptime)" >> /var/tmp/perfdr-ab/ab.log
    cd /var/tmp/perfdr-ab/$b && nice -n -20 env TSR_BUILD=/var/tmp/perfdr-ab/$b/build BENCH_PARTS=overhead BENCH_RUNTIME=5 BENCH_REPEATS=3 BENCH_SIZE=256M bash bench/site.sh > /var/tmp/perfdr-ab/run.$b.$i.txt 2>&1
    echo "=== $b pair $i done $(date -u +%T) rc=$? $(ls -t bench/results/site-*.md | head -1)" >> /var/tmp/perfdr-ab/ab.log
  done
done
