#!/bin/bash
# profsrc.sh SRC BUILD OUTDIR: one bench run (1 repeat, 10 s); perf record -g of the primary (source) for 4 s in the on QD1 run
SRC=$1 BUILD=$2 O=$3
mkdir -p "$O"
cd "$SRC" && nice -n -20 env TSR_BUILD=$BUILD BENCH_PARTS=overhead BENCH_RUNTIME=10 BENCH_REPEATS=1 BENCH_SIZE=256M bash bench/site.sh >"$O/out.txt" 2>&1 &
B=$!
until grep -q "4k randwrite QD1 on 'on'" "$O/out.txt" 2>/dev/null; do sleep 0.5; kill -0 $B 2>/dev/null || exit 1; done
sleep 3
PR=$(pgrep -a tesserad | grep "$BUILD" | grep -E -- "--data [^ ]*/primary( |$)" | awk '{print $1}' | head -1)
pgrep -a tesserad | grep "$BUILD" > "$O/pids.txt"; echo "PRIMARY=$PR" >> "$O/pids.txt"
perf record -g -F 1999 -p "$PR" -o "$O/perf.src.g.data" -- sleep 4 >/dev/null 2>&1
wait $B
