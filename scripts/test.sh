#!/usr/bin/env bash
# Build and run the whole test suite (what CI runs through .ci/run).
#
#   sudo ./scripts/test.sh [--long]
#
# 1. set-up: Debian packages if missing (scripts/setup.sh)
# 2. gcc build with -Werror in build/: every unit and integration test in a
#    ctest run (two at a time, longest first: COST in tests/CMakeLists.txt),
#    then the timing-sensitive ones (label serial there) one at a time
# 3. ASan+UBSan build in build-asan/: the unit tests and a subset of the
#    integration tests, in two ctest runs as in step 2 (with --long: the unit
#    tests, then every integration test, one at a time)
# 4. clang-14 build with libFuzzer in build-fuzz/ (the harnesses only): each
#    tests/fuzz/fuzz_* harness for FUZZ_SECONDS (10; 300 with --long), as many
#    at a time as there are cores
# The ASan and fuzz trees are built while the gcc tests run, at the lowest
# CPU and I/O priority (nice 19, ionice idle: they only take what the tests
# leave idle); BG_BUILDS=0 builds them in the foreground, one after the other.
# While the serial tests of steps 2 and 3 run (one test, one core mostly
# idle), the fuzz harnesses run one at a time beside them at nice 19, once
# their build is done; the harnesses not run then run in step 4
# (FUZZ_EARLY=0, and with --long: all in step 4).
# --long also runs the crash loop for more rounds, every EC crash point
# of test-ec-write-hole, twice the rounds of test-ec-scrub-crash and 60 s of
# writes in test-snapshot-history (TSR_LONG=1 in the tests' environment).
# BUILD_PREFIX=build names the three build trees (PREFIX, PREFIX-asan, PREFIX-fuzz).
# Ends with "N passed, N failed"; exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
SRC=$PWD

LONG=0
for a in "$@"; do
	case $a in
	--long) LONG=1 ;;
	-h|--help) sed -n '2,27p' "$0"; exit 0 ;;
	*) echo "test.sh: unknown option $a" >&2; exit 2 ;;
	esac
done
if (( LONG )); then
	export TSR_LONG=1
	FUZZ_SECONDS=${FUZZ_SECONDS:-300}
else
	FUZZ_SECONDS=${FUZZ_SECONDS:-10}
fi
JOBS=$(nproc)
B=${BUILD_PREFIX:-build}
# Integration tests run under the sanitizers (the rest run in the gcc build).
ASAN_INTEGRATION=${ASAN_INTEGRATION:-"test-cli test-bad-input test-corruption test-io-fault test-nbd-clients test-crash-loop test-cluster-coordinator test-cluster-peer-bad-input test-ec-history test-csi-bad-input test-site-stream test-site-bad-input test-site-failover test-disk-full test-admin-concurrency"}

passed=0 failed=0 skipped=0
failures=()
T0=$(date +%s)
step() { printf '\n==== [%s +%ss] %s\n' "$(date +%T)" "$(( $(date +%s) - T0 ))" "$*"; }
ok() { passed=$(( passed + 1 )); }
ko() { failed=$(( failed + 1 )); failures+=("$1"); echo "FAILED: $1"; }

# run_ctest BUILD_DIR LABEL ARGS...: run ctest, count each test's verdict.
run_ctest() {
	local dir=$1 label=$2 out line name
	shift 2
	out=$(mktemp)
	ctest --test-dir "$dir" --output-on-failure --no-tests=ignore "$@" 2>&1 | tee "$out"
	while IFS= read -r line; do
		[[ $line =~ Test[[:space:]]+#[0-9]+:[[:space:]]+([^ ]+)[[:space:].]+(.*)$ ]] || continue
		name="$label ${BASH_REMATCH[1]}"
		case ${BASH_REMATCH[2]} in
		Passed*) ok ;;
		*Skipped*|*Disabled*) skipped=$(( skipped + 1 )) ;;
		*) ko "$name" ;;
		esac
	done <"$out"
	rm -f "$out"
}

# build DIR LABEL CMAKE_ARGS...: configure + build; counts as one test.
# BUILD_TARGETS (optional): build only these targets.
build() {
	local dir=$1 label=$2 targets=()
	shift 2
	mkdir -p "$dir"
	[ -n "${BUILD_TARGETS:-}" ] && read -r -a targets <<<"--target $BUILD_TARGETS"
	if cmake -S "$SRC" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"$dir/configure.log" 2>&1 &&
	   cmake --build "$dir" -j"$JOBS" "${targets[@]}" >"$dir/build.log" 2>&1; then
		ok
		echo "built $dir"
		return 0
	fi
	cat "$dir/configure.log" "$dir/build.log" 2>/dev/null | grep -E -B2 -A6 'error|Error' | head -80
	ko "build $label"
	return 1
}

# bg_builds: the ASan tree, then the fuzz harnesses, built in the background
# at the lowest priority; each writes DIR/bg-build.out (what build() printed)
# and then DIR/bg-build.rc.  bg_build_wait DIR LABEL waits for DIR's verdict
# and counts it here.
BG_BUILDS=${BG_BUILDS:-1}
BG_PID=
bg_builds() {
	rm -f "$B-asan/bg-build.rc" "$B-fuzz/bg-build.rc"
	mkdir -p "$B-asan" "$B-fuzz"
	(
		renice -n 19 -p "$BASHPID" >/dev/null 2>&1
		command -v ionice >/dev/null && ionice -c 3 -p "$BASHPID" >/dev/null 2>&1
		build "$B-asan" asan "${ASAN_CMAKE[@]}" >"$B-asan/bg-build.out" 2>&1
		echo $? >"$B-asan/bg-build.rc"
		BUILD_TARGETS=$fuzzers build "$B-fuzz" fuzz "${FUZZ_CMAKE[@]}" >"$B-fuzz/bg-build.out" 2>&1
		echo $? >"$B-fuzz/bg-build.rc"
	) &
	BG_PID=$!
}
bg_build_wait() {
	local dir=$1 label=$2
	while [ ! -s "$dir/bg-build.rc" ] && kill -0 "$BG_PID" 2>/dev/null; do sleep 1; done
	[ -s "$dir/bg-build.rc" ] || sleep 1   # the rc file is written just before the exit
	grep -v "^FAILED: build" "$dir/bg-build.out" 2>/dev/null   # counted below
	if [ "$(cat "$dir/bg-build.rc" 2>/dev/null)" = 0 ]; then
		ok
		return 0
	fi
	ko "build $label"
	return 1
}
ASAN_CMAKE=(-DCMAKE_C_COMPILER=gcc -DTSR_WERROR=ON -DTSR_SANITIZE=ON -DTSR_FUZZ=OFF)
FUZZ_CMAKE=(-DCMAKE_C_COMPILER=clang-14 -DTSR_WERROR=ON -DTSR_FUZZ=ON)
fuzzers=$(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//' | tr '\n' ' ')

# fuzz_run NAME: harness NAME for FUZZ_SECONDS on a copy of its corpus; its
# output in $B-fuzz/NAME.log, its exit status in $B-fuzz/NAME.rc.
fuzz_run() {
	local name=$1 corpus
	corpus=$(mktemp -d /var/tmp/tessera-corpus.XXXXXX)
	[ -d "tests/fuzz/corpus/$name" ] && cp -r "tests/fuzz/corpus/$name/." "$corpus/"
	"$B-fuzz/tests/$name" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
		-artifact_prefix="$B-fuzz/$name-" \
		-print_final_stats=1 "$corpus" >"$B-fuzz/$name.log" 2>&1
	echo $? >"$B-fuzz/$name.rc"
	rm -rf "$corpus"
}

# fuzz_early_start: in the background at nice 19 (ionice idle), the fuzz
# harnesses one at a time; none starts while $B-fuzz/early.pause exists, and
# none once $B-fuzz/early.stop does (the one running ends at its time); what
# it started in $B-fuzz/early.log.  With the background builds only: it
# first waits for the fuzz build's verdict and does nothing if it failed.
# (not with --long: a harness runs 300 s then, into the next stage)
FUZZ_EARLY=${FUZZ_EARLY:-$(( ! LONG ))}
EARLY_PID=
fuzz_early_start() {
	(( BG_BUILDS && FUZZ_EARLY )) || return 0
	rm -f "$B-fuzz/early.stop" "$B-fuzz/early.pause" "$B-fuzz/early.log" "$B"-fuzz/fuzz_*.rc
	(
		renice -n 19 -p "$BASHPID" >/dev/null 2>&1
		command -v ionice >/dev/null && ionice -c 3 -p "$BASHPID" >/dev/null 2>&1
		while [ ! -s "$B-fuzz/bg-build.rc" ] && [ ! -e "$B-fuzz/early.stop" ] &&
		      kill -0 "$BG_PID" 2>/dev/null; do
			sleep 1
		done
		[ "$(cat "$B-fuzz/bg-build.rc" 2>/dev/null)" = 0 ] || exit 0
		for f in "$B"-fuzz/tests/fuzz_*; do
			while [ -e "$B-fuzz/early.pause" ] && [ ! -e "$B-fuzz/early.stop" ]; do sleep 1; done
			[ -e "$B-fuzz/early.stop" ] && break
			[ -x "$f" ] || continue
			step "fuzz $(basename "$f") for ${FUZZ_SECONDS}s (started beside the serial tests, nice 19)"
			fuzz_run "$(basename "$f")"
		done >"$B-fuzz/early.log" 2>&1
	) &
	EARLY_PID=$!
}

step "set-up (Debian packages)"
if ./scripts/setup.sh --no-build; then ok; else ko "set-up"; fi

step "gcc build (-Werror) in $B/"
gcc_built=0
build "$B" gcc -DCMAKE_C_COMPILER=gcc -DTSR_WERROR=ON -DTSR_SANITIZE=OFF -DTSR_FUZZ=OFF && gcc_built=1
if (( BG_BUILDS )); then
	step "ASan+UBSan build in $B-asan/, then the fuzz harnesses in $B-fuzz/ (background, nice 19)"
	bg_builds
fi
if (( gcc_built )); then
	step "unit and integration tests (gcc)"
	# side by side, longest first, the timing-sensitive ones alone (COST and
	# RUN_SERIAL in tests/CMakeLists.txt); the unit tests fill the gaps
	run_ctest "$B" gcc -L 'unit|integration' -LE serial -j"$JOBS"
	fuzz_early_start
	step "the timing-sensitive tests, one at a time (gcc)${EARLY_PID:+; fuzz harnesses beside them at nice 19}"
	run_ctest "$B" gcc -L serial
	[ -n "$EARLY_PID" ] && touch "$B-fuzz/early.pause"
fi

if (( BG_BUILDS )); then
	step "ASan+UBSan build in $B-asan/ (verdict of the background build)"
	bg_build_wait "$B-asan" asan && asan_built=1 || asan_built=0
else
	step "ASan+UBSan build in $B-asan/"
	build "$B-asan" asan "${ASAN_CMAKE[@]}" && asan_built=1 || asan_built=0
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if (( asan_built )); then
	if (( LONG )); then
		step "unit tests (ASan+UBSan)"
		run_ctest "$B-asan" asan -L unit -j"$JOBS"
		step "integration tests (ASan+UBSan)"
		run_ctest "$B-asan" asan -L integration
	else
		step "unit tests and integration subset (ASan+UBSan)"
		regex=$(printf 'integration/%s$|' $ASAN_INTEGRATION)
		# two at a time, then the serial ones one at a time (the fuzz
		# harnesses beside them), as in the gcc run
		TSR_CRASH_ROUNDS=${TSR_CRASH_ROUNDS_ASAN:-10} run_ctest "$B-asan" asan -R "^unit/|${regex%|}" -LE serial -j"$JOBS"
		[ -n "$EARLY_PID" ] && rm -f "$B-fuzz/early.pause"
		TSR_CRASH_ROUNDS=${TSR_CRASH_ROUNDS_ASAN:-10} run_ctest "$B-asan" asan -R "^unit/|${regex%|}" -L serial
	fi
fi

if (( BG_BUILDS )); then
	step "clang-14 + libFuzzer build in $B-fuzz/ (verdict of the background build)"
	bg_build_wait "$B-fuzz" fuzz && fuzz_built=1 || fuzz_built=0
	wait "$BG_PID" 2>/dev/null   # no job of ours left before the fuzzers' own
	if [ -n "$EARLY_PID" ]; then
		touch "$B-fuzz/early.stop"
		wait "$EARLY_PID" 2>/dev/null
		cat "$B-fuzz/early.log" 2>/dev/null
	fi
else
	step "clang-14 + libFuzzer build in $B-fuzz/"
	BUILD_TARGETS=$fuzzers build "$B-fuzz" fuzz "${FUZZ_CMAKE[@]}" && fuzz_built=1 || fuzz_built=0
fi
if (( fuzz_built )); then
	# JOBS harnesses at a time (each libFuzzer process uses one core), those
	# not run beside the serial tests (their .rc is there); the verdicts are
	# read back in name order once all have ended.
	shopt -s nullglob
	names=()
	[ -n "$EARLY_PID" ] || rm -f "$B"-fuzz/fuzz_*.rc
	for f in "$B"-fuzz/tests/fuzz_*; do
		[ -x "$f" ] || continue
		name=$(basename "$f")
		names+=("$name")
		[ -e "$B-fuzz/$name.rc" ] && continue
		while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n; done
		step "fuzz $name for ${FUZZ_SECONDS}s (started)"
		fuzz_run "$name" &
	done
	wait
	for name in "${names[@]}"; do
		step "fuzz $name: verdict"
		if [ "$(cat "$B-fuzz/$name.rc" 2>/dev/null)" = 0 ]; then
			ok
			grep -E 'stat::number_of_executed_units|cov:' "$B-fuzz/$name.log" | tail -n 2
		else
			tail -n 60 "$B-fuzz/$name.log"
			ko "fuzz $name"
		fi
		rm -f "$B-fuzz/$name.rc"
	done
	shopt -u nullglob
fi

step "summary ($(( $(date +%s) - T0 )) s)"
(( skipped )) && echo "$skipped skipped (see 'Skipped' lines above for the reason)"
for f in "${failures[@]}"; do echo "failed: $f"; done
echo "$passed passed, $failed failed"
(( failed == 0 ))
