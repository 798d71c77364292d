#!/bin/bash
cd /work/main
run() { # LABEL BUILD LIMIT [ENV...]
	local label=$1 build=$2 limit=$3 before after
	shift 3
	before=$(ls bench/results/site-*.md | sort | tail -1)
	nice -n -20 env TSR_BUILD=$build BENCH_PARTS=overhead BENCH_RUNTIME=5 BENCH_REPEATS=2 BENCH_SIZE=256M BENCH_DR_LIMIT=$limit "$@" bash bench/site.sh > /var/tmp/siteperf-ab/$label.log 2>&1
	echo "$label rc=$?" >> /var/tmp/siteperf-ab/sum4
	after=$(ls bench/results/site-*.md | sort | tail -1)
	if [ "$after" != "$before" ]; then mv "$after" /var/tmp/siteperf-ab/$label.md; mv "${after%.md}.json" /var/tmp/siteperf-ab/$label.json; fi
}
B=/var/tmp/siteperf-base/build N=/var/tmp/siteperf-new/build L=/var/tmp/siteperf-new2/build
run ramdir-base-b $B "" BENCH_DR_DIR_RAM=1
run ramdir-late-b $L "" BENCH_DR_DIR_RAM=1
echo ALLDONE >> /var/tmp/siteperf-ab/sum4
