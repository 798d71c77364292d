#!/usr/bin/env bash
# tessera-bench end to end: against nbdkit's memory plugin on a unix socket
# (and a file), with --verify=crc32c and fio-shaped JSON checked by python3;
# job files; a corrupted block must fail verification; bad options and an
# unreachable target must fail with a clear message and a non-zero status.
#
# Environment: TSR_BUILD (build tree; the binary is
# $TSR_BUILD/tools/tessera-bench/tessera-bench).  Exit 0 pass, 1 fail, 77 skip.
set -u
set -o pipefail

TSR_BUILD=${TSR_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/build}
BENCH=$TSR_BUILD/tools/tessera-bench/tessera-bench
PY=$(command -v python3 || echo /usr/bin/python3)

fail() { echo "FAIL: $*" >&2; exit 1; }
log() { echo "test-bench-tool: $*" >&2; }

command -v nbdkit >/dev/null || { echo "SKIP: nbdkit is not installed" >&2; exit 77; }
[ -x "$BENCH" ] || fail "no binary at $BENCH (build first)"

# short path: unix socket names are limited to 108 bytes
tmp=$(mktemp -d /tmp/tsr-bench.XXXXXX) || fail "mktemp"
nbdkit_pid=
cleanup() {
	if [ -n "$nbdkit_pid" ]; then
		kill "$nbdkit_pid" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$nbdkit_pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$nbdkit_pid" 2>/dev/null
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# nbdkit forks into the background and writes its pid file once it listens
nbdkit -U "$tmp/nbd.sock" -P "$tmp/nbdkit.pid" memory 256M || fail "nbdkit did not start"
for _ in $(seq 100); do [ -s "$tmp/nbdkit.pid" ] && break; sleep 0.1; done
[ -s "$tmp/nbdkit.pid" ] || fail "nbdkit wrote no pid file"
nbdkit_pid=$(cat "$tmp/nbdkit.pid")
URI="nbd+unix:///?socket=$tmp/nbd.sock"

# check_json FILE EXPECTED_JOBS PYTHON_EXPR...: each expression, with j = the
# parsed report, must be true
check_json() {
	local file=$1 njobs=$2
	shift 2
	"$PY" - "$file" "$njobs" "$@" <<'EOF' || fail "JSON checks on $1"
import json, sys
path, njobs, exprs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
j = json.load(open(path))
assert j["fio version"].startswith("tessera-bench"), j["fio version"]
assert len(j["jobs"]) == njobs, "expected %d jobs, got %d" % (njobs, len(j["jobs"]))
keys = ["1.000000", "50.000000", "90.000000", "99.000000", "99.900000", "99.990000"]
for job in j["jobs"]:
    assert job["error"] == 0, job["error"]
    for d in ("read", "write"):
        s = job[d]
        for k in ("io_bytes", "bw", "bw_bytes", "iops", "runtime", "total_ios"):
            assert k in s, (d, k)
        if s["total_ios"] == 0:
            continue
        c = s["clat_ns"]
        p = c["percentile"]
        vals = [p[k] for k in keys]
        assert vals == sorted(vals), ("percentiles not ordered", vals)
        assert c["min"] <= p["50.000000"] <= c["max"], c
        assert c["min"] <= c["mean"] <= c["max"], c
        assert s["lat_ns"]["min"] >= 0 and s["lat_ns"]["N"] == s["total_ios"]
        assert s["io_bytes"] == s["total_ios"] * int(job["job options"]["bs"])
for e in exprs:
    assert eval(e), "failed: " + e
EOF
}

log "randwrite with verify over NBD, JSON"
"$BENCH" --name=vw --filename="$URI" --rw=randwrite --bs=4k --iodepth=16 --size=64m \
	--verify=crc32c --output-format=json >"$tmp/vw.json" 2>"$tmp/vw.err" ||
	{ cat "$tmp/vw.err" >&2; fail "randwrite verify run failed"; }
check_json "$tmp/vw.json" 1 \
	'j["jobs"][0]["write"]["iops"] > 0' \
	'j["jobs"][0]["write"]["total_ios"] == 16384' \
	'j["jobs"][0]["verify_errors"] == 0' \
	'j["jobs"][0]["verified_blocks"] == 16384' \
	'j["jobs"][0]["read"]["total_ios"] == 16384'

log "the data survives for a later read-only verify run"
"$BENCH" --name=vr --filename="$URI" --rw=randread --bs=4k --iodepth=8 --size=64m \
	--verify=crc32c --output-format=json >"$tmp/vr.json" || fail "read verify run failed"
check_json "$tmp/vr.json" 1 'j["jobs"][0]["read"]["iops"] > 0' \
	'j["jobs"][0]["verified_blocks"] == 16384' 'j["jobs"][0]["verify_errors"] == 0'

log "time-based randrw 70/30, 2 clones, verify, group reporting"
"$BENCH" --name=mix --filename="$URI" --rw=randrw --rwmixread=70 --bs=4k --iodepth=8 \
	--numjobs=2 --size=32m --runtime=2s --time_based --ramp_time=500ms --verify=crc32c \
	--group_reporting --output-format=json >"$tmp/mix.json" || fail "randrw verify run failed"
check_json "$tmp/mix.json" 1 'j["jobs"][0]["read"]["iops"] > 0' \
	'j["jobs"][0]["write"]["iops"] > 0' 'j["jobs"][0]["verify_errors"] == 0' \
	'1500 <= j["jobs"][0]["write"]["runtime"] <= 5000' \
	'j["jobs"][0]["write"]["bw_samples"] >= 2'

log "a block overwritten behind verify's back is reported"
"$BENCH" --name=seed --filename="$URI" --rw=write --bs=4k --size=1m --offset=128m \
	--verify=crc32c --output-format=json >/dev/null || fail "seeding run failed"
"$BENCH" --name=clobber --filename="$URI" --rw=write --bs=4k --size=4k \
	--offset=$((128 * 1048576 + 40960)) --output-format=json >/dev/null || fail "clobber failed"
if "$BENCH" --name=check --filename="$URI" --rw=read --bs=4k --size=1m --offset=128m \
	--verify=crc32c >"$tmp/bad.out" 2>"$tmp/bad.err"; then
	fail "verification of a clobbered block passed"
fi
grep -q "offset $((128 * 1048576 + 40960))" "$tmp/bad.err" ||
	{ cat "$tmp/bad.err" >&2; fail "verify failure does not name the offset"; }
grep -q "1 of 256 blocks failed verification" "$tmp/bad.err" ||
	{ cat "$tmp/bad.err" >&2; fail "verify failure count is wrong"; }

log "job file with [global] and two jobs"
cat >"$tmp/jobs.fio" <<EOF
; two jobs at once, fio syntax
[global]
filename=$URI
bs=4k
size=16m
offset=64m
iodepth=4
runtime=1s
time_based
# sequential writer with larger blocks
[writer]
rw=write
bs=64k
[reader]
rw=randread
EOF
"$BENCH" "$tmp/jobs.fio" --output-format=json >"$tmp/jobs.json" || fail "job file run failed"
check_json "$tmp/jobs.json" 2 'j["jobs"][0]["jobname"] == "writer"' \
	'j["jobs"][1]["jobname"] == "reader"' 'j["jobs"][0]["write"]["bw"] > 0' \
	'j["jobs"][1]["read"]["iops"] > 0' 'j["jobs"][0]["job options"]["bs"] == "65536"'

log "normal output looks like fio's"
"$BENCH" --name=n --filename="$URI" --rw=randread --bs=4k --iodepth=4 --size=8m \
	>"$tmp/normal.out" || fail "normal output run failed"
for pat in "IOPS=" "clat percentiles" "99.99th=" "Run status group 0" "READ: bw="; do
	grep -q -- "$pat" "$tmp/normal.out" || { cat "$tmp/normal.out" >&2; fail "no '$pat'"; }
done

log "file target through io_uring"
"$BENCH" --name=f --filename="$tmp/file.img" --rw=randwrite --bs=4k --iodepth=8 --size=16m \
	--verify=crc32c --output-format=json >"$tmp/file.json" || fail "file run failed"
check_json "$tmp/file.json" 1 'j["jobs"][0]["write"]["total_ios"] == 4096' \
	'j["jobs"][0]["verify_errors"] == 0' 'j["jobs"][0]["job options"]["ioengine"] == "io_uring"'

log "errors: unknown options, bad values, unreachable target"
expect_fail() {
	local want=$1
	shift
	if "$BENCH" "$@" >"$tmp/err.out" 2>&1; then
		fail "succeeded: tessera-bench $*"
	fi
	grep -q -- "$want" "$tmp/err.out" ||
		{ cat "$tmp/err.out" >&2; fail "message of 'tessera-bench $*' lacks '$want'"; }
}
expect_fail "unknown option '--frobnicate'" --filename="$URI" --frobnicate=1
expect_fail "iodepth" --filename="$URI" --iodepth=zero
expect_fail "'sideways'" --filename="$URI" --rw=sideways
printf '[j]\nfilename=%s\nbogus_key=1\n' "$URI" >"$tmp/bad.fio"
expect_fail "bad.fio:3: unknown option 'bogus_key'" "$tmp/bad.fio"
expect_fail "cannot connect to nbd+unix:///?socket=$tmp/missing.sock" \
	--filename="nbd+unix:///?socket=$tmp/missing.sock" --size=1m
expect_fail "past the end" --filename="$URI" --size=1g

"$BENCH" --help >"$tmp/help.out" || fail "--help failed"
grep -q -- "--rwmixread" "$tmp/help.out" || fail "--help does not list --rwmixread"

log "nbdkit still serving after all runs"
kill -0 "$nbdkit_pid" || fail "nbdkit died"
echo "1 passed, 0 failed"
