#!/bin/bash
# A/B chain: base (git archive of the base commit) vs new (base + this change), alternated
cd /work/main
run() { # LABEL BUILD LIMIT
	local label=$1 build=$2 limit=$3 before after
	before=$(ls bench/results/site-*.md | sort | tail -1)
	nice -n -20 env TSR_BUILD=$build BENCH_PARTS=overhead BENCH_RUNTIME=5 BENCH_REPEATS=2 BENCH_SIZE=256M BENCH_DR_LIMIT=$limit bash bench/site.sh > /var/tmp/siteperf-ab/$label.log 2>&1
	echo "$label rc=$?" >> /var/tmp/siteperf-ab/sum
	after=$(ls bench/results/site-*.md | sort | tail -1)
	if [ "$after" != "$before" ]; then mv "$after" /var/tmp/siteperf-ab/$label.md; mv "${after%.md}.json" /var/tmp/siteperf-ab/$label.json; fi
}
B=/var/tmp/siteperf-base/build N=/var/tmp/siteperf-new/build
for i in 1 2 3; do run base$i $B ""; run new$i $N ""; done
run pin-base $B pin; run pin-new $N pin
run quota-base $B quota:25; run quota-new $N quota:25
echo ALLDONE >> /var/tmp/siteperf-ab/sum
