#!/usr/bin/env bash
# Geo-replication benchmark (issue 7), one go, same machine, side by side.
#
#   ./bench/site.sh
#
# Two single-node Tessera clusters on loopback, each its own site ("primary"
# and "dr"), started with the integration tests' helpers
# (tests/integration/site.sh: certificates, site listeners, the link proxy).
# Measured in the same run:
#   overhead   4k randwrite QD32 IOPS and QD1 p50 latency (fio's nbd engine)
#              on two identical volumes of the primary, "on" replicated to dr
#              and "off" not, interleaved, median of BENCH_REPEATS runs of
#              BENCH_RUNTIME s; ratio on/off.  (On this one machine the DR
#              applies the stream on the same disk and CPUs, so the ratio
#              includes the target's load too.)
#   rpo        the source's lag (replication status lag_sec, sampled every
#              0.2 s) during the QD32 runs of "on": p50, p99, max.
#   catch-up   a third volume, replicated through the link proxy (the other
#              two go direct), the link capped at BENCH_LINK_BPS (tc htb on
#              the proxy's port when tc is there, else the proxy's own
#              throttle), cut for
#              BENCH_OUTAGE s while fio writes BENCH_OUTAGE_RATE 4k IOPS;
#              after the link returns, payload bytes shipped / seconds to
#              catch up, as a ratio of the cap.
# The DR store sits on a RAM-backed loop device (BENCH_DR_RAM=1, the
# default as root), so that the two sites do not share the one disk; they
# still share the 2 CPUs.
#   initial    a BENCH_INIT_SIZE (10G) volume with BENCH_INIT_ALLOC (1G)
#              written, replication enabled: bytes shipped by the initial
#              copy (region_bytes_shipped) and its duration.
# Results: bench/results/site-<timestamp>.json and .md.
#
# Knobs for short and split runs (defaults in brackets):
#   BENCH_PARTS    which parts run ["overhead catchup initial"]; the report
#                  leaves out what did not run
#   BENCH_DR_DIR_RAM  1 [the default as root]: the DR's data directory
#                  (metadata, state files, catalogue) on a tmpfs too, not
#                  only its volumes: then the DR writes nothing to the
#                  primary's disk (with 0 its state-file FUA writes and
#                  flushes go there and raised the primary's write latency
#                  by about 40 %); the report's header says which was used
#   BENCH_PROFILE  a directory: during repeat 1 "perf record" (flat, 3 s) of
#                  each tesserad in the "on" QD32 run; during repeat 2 (with
#                  BENCH_REPEATS >= 2) "strace -c -f" (3 s) of the primary in
#                  the QD32 runs of both "on" and "off", then 1 s of its
#                  send calls with their sizes (strace slows those
#                  two runs: they are profiles, not figures)
#   BENCH_SRC_ARGS more tesserad options for the primary (the source), e.g.
#                  --site-pump-worker (docs/ARCHITECTURE.md "pump worker")
#   BENCH_DR_LIMIT where the DR's CPU comes from during the overhead part:
#                  "" [shared: both sites and fio on both cores],
#                  "quota:P" (the DR tesserad in a cgroup-v1 cpu group
#                  capped at P % of one CPU, cfs_quota_us), or
#                  "pin" (the primary tesserad on CPU 0; the DR tesserad and
#                  fio both on CPU 1, so the DR takes its CPU from the client
#                  and never from the source)
# Each overhead run also records the CPU time (utime + stime, all threads,
# /proc/PID/stat) the primary and the DR tesserad used during it, and the
# wall time: the report gives CPU microseconds per host write for each.
# And the whole machine over the same window (bench/machine_mark.py): busy
# ticks of all CPUs from /proc/stat, the kernel threads' CPU (ksoftirqd:
# loopback TCP; kworker: among others the DR's RAM loop device), what is
# left for everything else on the machine (other users' processes,
# interrupts), all per host write; and the context switches per host write
# of each tesserad's worker threads (voluntary: it slept, waiting for an
# event; involuntary: it was preempted).
set -uo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_args "$0" "$@"
HERE=$(cd "$(dirname "$0")" && pwd)
export TSR_SRC=${TSR_SRC:-$(cd "$HERE/.." && pwd)}
RUNTIME=${BENCH_RUNTIME:-10}
REPEATS=${BENCH_REPEATS:-3}
SIZE=${BENCH_SIZE:-1G}
OUTAGE=${BENCH_OUTAGE:-60}
OUTAGE_RATE=${BENCH_OUTAGE_RATE:-1000}
LINK_BPS=${BENCH_LINK_BPS:-20000000}
INIT_SIZE=${BENCH_INIT_SIZE:-10G}
INIT_ALLOC=${BENCH_INIT_ALLOC:-1G}
PARTS=" ${BENCH_PARTS:-overhead catchup initial} "
DR_LIMIT=${BENCH_DR_LIMIT:-}
part() { [[ $PARTS == *" $1 "* ]]; }

# the integration helpers: cleanup of every process on exit, sites, proxy
# shellcheck source=../tests/integration/functions.sh
. "$TSR_SRC/tests/integration/functions.sh"
# shellcheck source=../tests/integration/site.sh
. "$TSR_SRC/tests/integration/site.sh"
TEST_NAME=bench-site
require_tessera
require_cmd fio openssl nbdcopy
OUT=$(mktemp -d /var/tmp/tessera-bench-site.XXXXXX)
[ "${BENCH_KEEP:-0}" = 1 ] || on_exit "rm -rf '$OUT'"

sites_setup
# The DR site's volumes on a RAM-backed loop device (BENCH_DR_RAM=1, root):
# a DR site has its own disks, and on this one machine a DR store on the
# same disk would measure the disk's sharing, not the replication.
DR_ARGS=()
if [ "${BENCH_DR_RAM:-1}" = 1 ] && [ "$(id -u)" = 0 ] && command -v losetup >/dev/null; then
	img=/dev/shm/tessera-bench-dr.$$.img
	truncate -s "${BENCH_DR_RAM_SIZE:-12G}" "$img" || fail "truncate $img"
	on_exit "rm -f '$img'"
	LOOP=$(losetup -f --show "$img") || fail "losetup $img"
	on_exit "losetup -d '$LOOP'"
	DR_ARGS=(--device "$LOOP")
	log "DR store on $LOOP (RAM-backed)"
fi
DR_DIR_RAM=${BENCH_DR_DIR_RAM:-$([ "$(id -u)" = 0 ] && echo 1 || echo 0)}
if [ "$DR_DIR_RAM" = 1 ]; then
	mkdir -p "$(sdir dr)"
	mount -t tmpfs -o size=2G tmpfs "$(sdir dr)" || fail "tmpfs on $(sdir dr) (BENCH_DR_DIR_RAM=1 needs root)"
	on_exit "umount -l '$(sdir dr)'"
	log "DR data directory on tmpfs"
fi
site_start dr "${DR_ARGS[@]}"
# shellcheck disable=SC2086
site_start primary ${BENCH_SRC_ARGS:-}
proxy_start
# two names for the one DR listener: "dr" direct (overhead, RPO, initial
# copy: no proxy process taking CPU from the sites), "drp" through the proxy
# (the outage: the proxy cuts the link)
site_add_dr primary dr dr "127.0.0.1:${SITE_LISTEN[dr]}"
site_add_dr primary dr drp

uri() { echo "nbd+unix:///$1?socket=$(sdir primary)/nbd.sock"; }
COMMON=(--direct=1 --time_based "--runtime=$RUNTIME" --ramp_time=1 "--size=$SIZE"
	--group_reporting)
FIO_PIN=()

# cpu_ticks PID: utime + stime of every thread of PID, in clock ticks
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# cpu_mark: "wall_ns primary_ticks dr_ticks" now
cpu_mark() { echo "$(date +%s%N) $(cpu_ticks "${SITE_PID[primary]}") $(cpu_ticks "${SITE_PID[dr]}")"; }
# machine_mark: the whole machine's counters now, one JSON line
machine_mark() { "$PY" "$HERE/machine_mark.py" "src=${SITE_PID[primary]}" "dr=${SITE_PID[dr]}"; }

# the DR's CPU during the overhead part (BENCH_DR_LIMIT, above)
dr_limit() {
	local pid=${SITE_PID[dr]} cg
	case "$DR_LIMIT" in
	"") ;;
	quota:*)
		cg=/sys/fs/cgroup/cpu/tessera-bench-dr.$$
		mkdir "$cg" || fail "cgroup $cg (BENCH_DR_LIMIT=$DR_LIMIT needs root and cgroup v1 cpu)"
		on_exit "rmdir '$cg'"
		echo 100000 >"$cg/cpu.cfs_period_us" &&
		echo $(( ${DR_LIMIT#quota:} * 1000 )) >"$cg/cpu.cfs_quota_us" ||
			fail "cgroup quota $DR_LIMIT"
		local t
		for t in /proc/"$pid"/task/*; do echo "${t##*/}" >"$cg/tasks"; done
		on_exit "for t in \$(cat '$cg/tasks' 2>/dev/null); do echo \$t > /sys/fs/cgroup/cpu/tasks; done"
		log "DR tesserad in $cg: ${DR_LIMIT#quota:} % of one CPU"
		;;
	pin)
		taskset -a -p -c 0 "${SITE_PID[primary]}" >/dev/null || fail "taskset primary"
		taskset -a -p -c 1 "$pid" >/dev/null || fail "taskset dr"
		FIO_PIN=(taskset -c 1)
		log "primary tesserad on CPU 0; DR tesserad and fio on CPU 1"
		;;
	*) fail "BENCH_DR_LIMIT=$DR_LIMIT: expected '', quota:P or pin" ;;
	esac
}

# ---- overhead and RPO -------------------------------------------------------
if part overhead; then
for v in on off; do
	site_vol_create primary "$v" "$SIZE"
	fio --name=prefill --ioengine=nbd "--uri=$(uri "$v")" --rw=write --bs=1M --iodepth=8 \
		"--size=$SIZE" >/dev/null 2>&1 || fail "prefill $v"
done
stsr primary replication enable on --to dr --target-layout replicas:1 >/dev/null ||
	fail "replication enable on"
log "initial copy of 'on' ($SIZE)"
repl_caught_up on 600
dr_limit

# profile V R: BENCH_PROFILE's recordings during the QD32 run of V, repeat R
profile() {
	local v=$1 r=$2 k
	sleep 2
	if [ "$r" = 1 ] && [ "$v" = on ]; then
		for k in primary dr; do
			perf record -F 999 -p "${SITE_PID[$k]}" -o "$BENCH_PROFILE/perf.$k.data" \
				-- sleep 3 >/dev/null 2>&1 &
		done
		wait
	elif [ "$r" = 2 ]; then
		timeout -s INT 3 strace -c -f -p "${SITE_PID[primary]}" \
			-o "$BENCH_PROFILE/strace.primary.$v.txt" >/dev/null 2>&1
		# then 1 s of the sends themselves (their sizes)
		timeout -s INT 1 strace -f -e trace=sendto,sendmsg,writev -p "${SITE_PID[primary]}" \
			-o "$BENCH_PROFILE/strace.sends.$v.txt" >/dev/null 2>&1
	fi
}

# lag_sampler FILE: lag_sec of "on" every 0.2 s until killed.  One python
# process runs the CLI each time (a python start per sample cost the
# machine about 0.1 core); it runs during the QD32 runs of "off" too (into
# another file), so both sides carry the same sampling load.
lag_sampler() {
	exec "$PY" -c 'import json, subprocess, sys, time
out = open(sys.argv[1], "a")
while True:
    r = subprocess.run(sys.argv[2:], capture_output=True, text=True)
    try:
        out.write("%s\n" % json.loads(r.stdout)["lag_sec"])
        out.flush()
    except (ValueError, KeyError):
        pass
    time.sleep(0.2)' "$1" "$TESSERA" --data "$(sdir primary)" --json replication status on
}
for (( r=1; r<=REPEATS; r++ )); do
	for v in off on; do
		log "repeat $r/$REPEATS: 4k randwrite QD32 on '$v'"
		if [ "$v" = on ]; then lag_sampler "$OUT/lag.txt" & else lag_sampler "$OUT/lag.off.txt" & fi
		SAMPLER=$!
		[ -n "${BENCH_PROFILE:-}" ] && profile "$v" "$r" &
		PROF=$!
		mm0=$(machine_mark)
		m0=$(cpu_mark)
		"${FIO_PIN[@]}" fio --output-format=json --output="$OUT/$v.qd32.$r.json" --name=a \
			--ioengine=nbd "--uri=$(uri "$v")" --rw=randwrite --bs=4k --iodepth=32 \
			"${COMMON[@]}" >/dev/null 2>"$OUT/$v.qd32.$r.err" ||
			fail "fio $v.qd32.$r: $(tail -3 "$OUT/$v.qd32.$r.err")"
		echo "$m0 $(cpu_mark) $(getconf CLK_TCK)" >"$OUT/$v.qd32.$r.cpu"
		{ echo "$mm0"; machine_mark; } >"$OUT/$v.qd32.$r.mach"
		wait "$PROF" 2>/dev/null
		kill "$SAMPLER"
		wait "$SAMPLER" 2>/dev/null
		log "repeat $r/$REPEATS: 4k randwrite QD1 on '$v'"
		mm0=$(machine_mark)
		m0=$(cpu_mark)
		"${FIO_PIN[@]}" fio --output-format=json --output="$OUT/$v.qd1.$r.json" --name=a \
			--ioengine=nbd "--uri=$(uri "$v")" --rw=randwrite --bs=4k --iodepth=1 \
			"${COMMON[@]}" >/dev/null 2>"$OUT/$v.qd1.$r.err" ||
			fail "fio $v.qd1.$r: $(tail -3 "$OUT/$v.qd1.$r.err")"
		echo "$m0 $(cpu_mark) $(getconf CLK_TCK)" >"$OUT/$v.qd1.$r.cpu"
		{ echo "$mm0"; machine_mark; } >"$OUT/$v.qd1.$r.mach"
	done
	repl_caught_up on 600
done
stsr primary --json replication status on >"$OUT/status.on.json" 2>/dev/null
echo "$DR_LIMIT" >"$OUT/dr_limit.txt"
# the DR's volumes and data directory: "ram" or "disk" each
echo "$([ -n "${LOOP:-}" ] && echo ram || echo disk) $([ "$DR_DIR_RAM" = 1 ] && echo ram || echo disk)" \
	>"$OUT/dr_store.txt"
fi

# ---- catch-up after an outage, link capped -----------------------------------
if part catchup; then
site_vol_create primary cu "$SIZE"
fio --name=prefill --ioengine=nbd "--uri=$(uri cu)" --rw=write --bs=1M --iodepth=8 \
	"--size=$SIZE" >/dev/null 2>&1 || fail "prefill cu"
stsr primary replication enable cu --to drp --target-volume cu --target-layout replicas:1 >/dev/null ||
	fail "replication enable cu"
repl_caught_up cu 600
TC=0
if command -v tc >/dev/null 2>&1 && [ "$(id -u)" = 0 ] &&
   tc qdisc add dev lo root handle 1: htb default 1 2>/dev/null; then
	on_exit "tc qdisc del dev lo root"
	rate_kbit=$(( LINK_BPS * 8 / 1000 ))
	tc class add dev lo parent 1: classid 1:1 htb rate 100gbit &&
	tc class add dev lo parent 1: classid 1:2 htb rate "${rate_kbit}kbit" ceil "${rate_kbit}kbit" &&
	tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip dport "$PROXY_PORT" 0xffff flowid 1:2 &&
	tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip sport "$PROXY_PORT" 0xffff flowid 1:2 &&
	TC=1
	[ "$TC" = 1 ] || fail "tc htb set-up failed"
	log "link capped with tc htb at $LINK_BPS B/s on port $PROXY_PORT"
else
	px throttle "$LINK_BPS"
	log "link capped by the proxy at $LINK_BPS B/s (no tc)"
fi
px cut
log "outage: link cut for ${OUTAGE}s while writing ${OUTAGE_RATE} 4k IOPS"
fio --name=outage --ioengine=nbd "--uri=$(uri cu)" --rw=randwrite --bs=4k --iodepth=4 \
	"--rate_iops=$OUTAGE_RATE" --time_based "--runtime=$OUTAGE" "--size=$SIZE" >/dev/null 2>&1 ||
	fail "outage writes"
before=$(rstat primary cu 'j["bytes_shipped"]')
behind=$(rstat primary cu 'j["lag_bytes"] + j["dirty_bytes"]')
state=$(rstat primary cu 'j["state"]')
t0=$(date +%s.%N)
if [ "$TC" = 1 ]; then px pass; else px throttle "$LINK_BPS"; fi
repl_caught_up cu 1200
t1=$(date +%s.%N)
after=$(rstat primary cu 'j["bytes_shipped"]')
"$PY" -c 'import json,sys
b, a, t0, t1, cap, behind = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
print(json.dumps({"shipped": a - b, "seconds": t1 - t0, "cap_bps": cap, "behind_bytes": behind,
                  "state_before": sys.argv[7], "tc": sys.argv[8] == "1"}))' \
	"$before" "$after" "$t0" "$t1" "$LINK_BPS" "$behind" "$state" "$TC" >"$OUT/catchup.json"
if [ "$TC" = 1 ]; then tc qdisc del dev lo root; else px pass; fi
fi

# ---- initial copy: only the allocated bytes ------------------------------------
if part initial; then
site_vol_create primary big "$INIT_SIZE"
fio --name=alloc --ioengine=nbd "--uri=$(uri big)" --rw=randwrite --bs=1M --iodepth=8 \
	"--size=$INIT_SIZE" "--io_size=$INIT_ALLOC" --randrepeat=0 --norandommap=0 >/dev/null 2>&1 ||
	fail "allocating $INIT_ALLOC of big"
alloc=$(stsr primary --json volume show big | json_get 'j["allocated"] if "allocated" in j else j["volume"]["allocated"]')
t0=$(date +%s.%N)
stsr primary replication enable big --to dr --target-layout replicas:1 >/dev/null ||
	fail "replication enable big"
repl_caught_up big 1200
t1=$(date +%s.%N)
shipped=$(rstat primary big 'j["region_bytes_shipped"]')
"$PY" -c 'import json,sys
print(json.dumps({"volume_size": sys.argv[1], "allocated": int(sys.argv[2]), "shipped": int(sys.argv[3]),
                  "seconds": float(sys.argv[5]) - float(sys.argv[4])}))' \
	"$INIT_SIZE" "$alloc" "$shipped" "$t0" "$t1" >"$OUT/initial.json"
fi

mkdir -p "$TSR_SRC/bench/results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
"$PY" "$HERE/report_site.py" "$OUT" "$REPEATS" "$TSR_SRC/bench/results/site-$stamp" ||
	fail "report"
log "wrote bench/results/site-$stamp.{json,md}"
cat "$TSR_SRC/bench/results/site-$stamp.md"
