#!/bin/bash
# stat2.sh SRC BUILD OUTDIR: one bench run (1 repeat, 10 s); perf stat of the DR in the on QD32 and QD1 runs (4 s each)
SRC=$1 BUILD=$2 O=$3
mkdir -p "$O"
cd "$SRC" && nice -n -20 env TSR_BUILD=$BUILD BENCH_PARTS=overhead BENCH_RUNTIME=10 BENCH_REPEATS=1 BENCH_SIZE=256M bash bench/site.sh >"$O/out.txt" 2>&1 &
B=$!
for q in QD32 QD1; do
until grep -q "4k randwrite $q on 'on'" "$O/out.txt" 2>/dev/null; do sleep 0.5; kill -0 $B 2>/dev/null || exit 1; done
sleep 3
DR=$(pgrep -a tesserad | grep "$BUILD" | grep -E -- "--data [^ ]*/dr( |$)" | awk '{print $1}' | head -1)
perf stat -e 'syscalls:sys_enter_epoll_wait,syscalls:sys_enter_recvfrom,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_pwrite64,syscalls:sys_enter_read,context-switches,task-clock' -p "$DR" -o "$O/stat.$q.txt" -- sleep 4 >/dev/null 2>&1
done
wait $B
