#!/usr/bin/env bash
# Build and run the whole test suite (what CI runs through .ci/run).
#
#   sudo ./scripts/test.sh [--long]
#
# 1. set-up: Debian packages if missing (scripts/setup.sh)
# 2. gcc build with -Werror in build/: every unit and integration test (ctest,
#    two at a time; the timing-sensitive ones alone: RUN_SERIAL in
#    tests/CMakeLists.txt)
# 3. ASan+UBSan build in build-asan/: the unit tests and a subset of the
#    integration tests (all of them with --long)
# 4. clang-14 build with libFuzzer in build-fuzz/ (the harnesses only): each
#    tests/fuzz/fuzz_* harness for FUZZ_SECONDS (10; 300 with --long), as many
#    at a time as there are cores
# --long also runs the crash loop for more rounds.
# BUILD_PREFIX=build names the three build trees (PREFIX, PREFIX-asan, PREFIX-fuzz).
# Ends with "N passed, N failed"; exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
SRC=$PWD

LONG=0
for a in "$@"; do
	case $a in
	--long) LONG=1 ;;
	-h|--help) sed -n '2,16p' "$0"; exit 0 ;;
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
ASAN_INTEGRATION=${ASAN_INTEGRATION:-"test-cli test-bad-input test-corruption test-io-fault test-nbd-clients test-crash-loop test-cluster-coordinator test-cluster-peer-bad-input test-ec-history test-csi-bad-input test-site-stream test-site-bad-input test-site-failover"}

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

step "set-up (Debian packages)"
if ./scripts/setup.sh --no-build; then ok; else ko "set-up"; fi

step "gcc build (-Werror) in $B/"
if build "$B" gcc -DCMAKE_C_COMPILER=gcc -DTSR_WERROR=ON -DTSR_SANITIZE=OFF -DTSR_FUZZ=OFF; then
	step "unit tests (gcc)"
	run_ctest "$B" gcc -L unit -j"$JOBS"
	step "integration tests (gcc)"
	# side by side, but the timing-sensitive ones alone (RUN_SERIAL in tests/CMakeLists.txt)
	run_ctest "$B" gcc -L integration -j"$JOBS"
fi

step "ASan+UBSan build in $B-asan/"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if build "$B-asan" asan -DCMAKE_C_COMPILER=gcc -DTSR_WERROR=ON -DTSR_SANITIZE=ON -DTSR_FUZZ=OFF; then
	step "unit tests (ASan+UBSan)"
	run_ctest "$B-asan" asan -L unit -j"$JOBS"
	step "integration tests (ASan+UBSan)"
	if (( LONG )); then
		run_ctest "$B-asan" asan -L integration
	else
		regex=$(printf 'integration/%s$|' $ASAN_INTEGRATION)
		# two at a time too (RUN_SERIAL ones alone), as in the gcc run
		TSR_CRASH_ROUNDS=${TSR_CRASH_ROUNDS_ASAN:-10} run_ctest "$B-asan" asan -R "${regex%|}" -j"$JOBS"
	fi
fi

step "clang-14 + libFuzzer build in $B-fuzz/"
fuzzers=$(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//' | tr '\n' ' ')
if BUILD_TARGETS=$fuzzers build "$B-fuzz" fuzz -DCMAKE_C_COMPILER=clang-14 -DTSR_WERROR=ON -DTSR_FUZZ=ON; then
	# JOBS harnesses at a time (each libFuzzer process uses one core); the
	# verdicts are read back in name order once all have ended.
	shopt -s nullglob
	names=()
	for f in "$B"-fuzz/tests/fuzz_*; do
		[ -x "$f" ] || continue
		name=$(basename "$f")
		names+=("$name")
		while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n; done
		step "fuzz $name for ${FUZZ_SECONDS}s (started)"
		(
			corpus=$(mktemp -d /var/tmp/tessera-corpus.XXXXXX)
			[ -d "tests/fuzz/corpus/$name" ] && cp -r "tests/fuzz/corpus/$name/." "$corpus/"
			"$f" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
				-artifact_prefix="$B-fuzz/$name-" \
				-print_final_stats=1 "$corpus" >"$B-fuzz/$name.log" 2>&1
			echo $? >"$B-fuzz/$name.rc"
			rm -rf "$corpus"
		) &
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
