#!/bin/bash
# attach perf trace -s to n1 and the restarted n3 of the newest bench dir
sleep 3
W=$(ls -dt /var/tmp/tessera-bench-cluster.* | head -1)
n1=$(cat $W/n1/tesserad.pid)
old3=$(cat $W/n3/tesserad.pid)
for i in $(seq 600); do
  n3=$(cat $W/n3/tesserad.pid 2>/dev/null)
  [ -n "$n3" ] && [ "$n3" != "$old3" ] && kill -0 $n3 2>/dev/null && break
  sleep 0.05
done
echo "W=$W n1=$n1 n3=$n3"
timeout -s INT 3 perf trace -s -p $n1,$n3 -o /var/tmp/resync-ab/perftrace.txt 2>&1 | tail -3
