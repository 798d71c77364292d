#!/bin/bash
# measure.sh LABEL=BIN [LABEL=BIN ...]: idle and loaded (fio 4k randwrite QD32)
# latency of `tessera status` and `tessera snapshot create`, builds alternating.
# Env: N (runs per build per round, default 25), ROUNDS (2), TESSERAD.
set -u
N=${N:-25}; ROUNDS=${ROUNDS:-2}
TESSERAD=${TESSERAD:-/work/main/build-cli/tools/tesserad/tesserad}
W=$(mktemp -d /var/tmp/tsr-cli-perf.XXXXXX)
PID= FIO=
cleanup() { [ -n "$FIO" ] && kill "$FIO" 2>/dev/null; wait "$FIO" 2>/dev/null
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/tsr"
"$TESSERAD" --data "$W/tsr" >"$W/tesserad.log" 2>&1 & PID=$!
for (( i=0; i<300; i++ )); do [ -S "$W/tsr/admin.sock" ] && [ -f "$W/tsr/tesserad.pid" ] && break; sleep 0.1; done
first=${1#*=}
"$first" --data "$W/tsr" volume create v --size 1G >/dev/null || exit 1
fio --name=prefill --rw=write --bs=1M --iodepth=16 --ioengine=nbd --uri="nbd+unix:///v?socket=$W/tsr/nbd.sock" --size=1G >/dev/null 2>&1
declare -A ST SC SV STR CPU
snap=0
one() { # BIN what -> prints us
  local t0 t1
  if [ "$2" = true ]; then
    t0=$EPOCHREALTIME; /bin/true; t1=$EPOCHREALTIME
  elif [ "$2" = version ]; then
    t0=$EPOCHREALTIME; "$1" --version >/dev/null; t1=$EPOCHREALTIME
  elif [ "$2" = status ]; then
    t0=$EPOCHREALTIME; "$1" --data "$W/tsr" status >/dev/null || echo "status failed" >&2; t1=$EPOCHREALTIME
  else
    t0=$EPOCHREALTIME; "$1" --data "$W/tsr" snapshot create v "$3" >/dev/null || echo "create failed" >&2; t1=$EPOCHREALTIME
  fi
  echo $(( (${t1/./} - ${t0/./}) ))
}
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END{i=int((NR*p+99)/100); if(i<1)i=1; printf "%.1f", a[i]/1000}'; }
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for phase in idle load; do
  if [ $phase = load ]; then
    fio --name=load --rw=randwrite --bs=4k --iodepth=32 --ioengine=nbd --uri="nbd+unix:///v?socket=$W/tsr/nbd.sock" \
      --size=1G --time_based --runtime=3600 >/dev/null 2>&1 & FIO=$!
    sleep 3
  fi
  for (( r=1; r<=ROUNDS; r++ )); do
    for lb in "$@"; do
      l=${lb%%=*} b=${lb#*=}
      for (( k=0; k<N; k++ )); do ST[$phase.$l]+="$(one "$b" status) "; SV[$phase.$l]+="$(one "$b" version) "; STR[$phase.$l]+="$(one "$b" true) "; done
      CPU[$phase.$l]+="$(perf stat -x, -e task-clock -r 10 "$b" --data "$W/tsr" status 2>&1 >/dev/null | awk -F, '/task-clock/{printf "%.1f", $1}') "
      [ $phase = load ] && for (( k=0; k<N; k++ )); do snap=$((snap+1)); SC[$phase.$l]+="$(one "$b" create "s$snap") "; sleep 0.2; done
    done
  done
  for lb in "$@"; do
    l=${lb%%=*}
    s=$(echo ${ST[$phase.$l]} | tr ' ' '\n' | pct 50)/$(echo ${ST[$phase.$l]} | tr ' ' '\n' | pct 99)
    if [ $phase = load ]; then c=$(echo ${SC[$phase.$l]} | tr ' ' '\n' | pct 50)/$(echo ${SC[$phase.$l]} | tr ' ' '\n' | pct 99); else c=-; fi
    v=$(echo ${SV[$phase.$l]} | tr ' ' '\n' | pct 50)/$(echo ${SV[$phase.$l]} | tr ' ' '\n' | pct 99)
    tr_=$(echo ${STR[$phase.$l]} | tr ' ' '\n' | pct 50)/$(echo ${STR[$phase.$l]} | tr ' ' '\n' | pct 99)
    printf '%-5s %-10s /bin/true p50/p99 %s ms, --version %s ms, status CPU (task-clock, mean of 10 per round) %s ms\n' $phase "$l" "$tr_" "$v" "${CPU[$phase.$l]}"
    printf '%-5s %-10s status p50/p99 %s ms (n=%d)  snapshot create p50/p99 %s ms\n' $phase "$l" "$s" $(echo ${ST[$phase.$l]} | wc -w) "$c"
  done
done
grep -o "snapshot create 'v@s[0-9]*': replied after [0-9.]* ms" "$W/tesserad.log" | awk '{print $(NF-1)}' | sort -n | awk '{a[NR]=$1} END{if(NR) printf "server request->reply (all cuts, n=%d): p50 %s ms p99 %s ms\n", NR, a[int((NR*50+99)/100)], a[int((NR*99+99)/100)]}'
