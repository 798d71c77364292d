#!/usr/bin/env bash
# tesserad --read-cache on|off (engine/store/data.c read_go): host reads of a
# volume kept in files go through the kernel's page cache by default, never
# with --read-cache off, --io libaio or --io auto fallen back to libaio;
# scrub reads the disk, not the cache.
#
# How a test sees the page cache: fincore(1) counts the pages of a file that
# are resident.  tesserad writes with O_DIRECT, which drops the range's pages,
# so right after a write none of it is resident and only a buffered read
# brings it in.
#  1. default: a 1 MiB write leaves nothing cached, reading it back caches
#     it (and the log says "read cache: on"); a volume held open has two
#     descriptors of its data file (O_DIRECT and the buffered twin);
#  2. --read-cache off, then --io libaio, then --io auto with io_uring's
#     setup refused (TSR_TEST_IO_URING_UNAVAILABLE=1: the fallback to
#     libaio): the same read caches nothing (the log says why), and in the
#     last two a volume held open has one descriptor of its data file, no
#     buffered twin that no read would use (the fallback kept it, s16);
#  3. "cache good, disk bad": a 2-copy mirror whose n2 keeps its data on a
#     small ext4 on a loop device; n2's copy is in n2's page cache, and one
#     block of it is overwritten on the loop device, under the file system:
#     the file still reads good through the cache, O_DIRECT reads the damage.
#     `volume scrub` must find and repair it, first with n2 a remote copy
#     (the peer server's SUMS), then with n2 the coordinator (its local
#     copy's SUMS), after host reads through n2 cached the blocks.  A scrub
#     that read through the cache would see good blocks and repair nothing.
#     Before the damage, `volume status` counts the coordinator's reads of
#     its own copy through the page cache (cached_reads, --json and text):
#     0 after the write, at least 1 once a host read went through n1;
#     With n2 remote, n1's `volume status` counts the block of n2's copy
#     that failed its CRC on the scrub's read (peer STATS: crc_errors over
#     every copy, n2's copy's own); with n2 the coordinator, the block of its
#     own copy (crc_errors_coordinator, --json and text): 0 before the
#     damage, at least 1 after the scrub;
#  4. a one-node cluster with --read-cache off: cached_reads stays 0 while
#     host reads are counted (reads).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/fullfs.sh"

require_tessera "$NBD_HOLD"
require_cmd qemu-io fincore filefrag dd

# resident FILE: bytes of FILE in the page cache
resident() { fincore --bytes --noheadings --output RES "$1" | xargs; }
# held_fds DIR VOL FILE: descriptors tesserad ($TSRD_PID) has of FILE while an
# NBD connection holds VOL open
held_fds() {
	local pid i n
	rm -f "$1/held"
	"$NBD_HOLD" "$(nbd_uri "$1" "$2")" "$1/held" &
	pid=$!
	track_pid "$pid"
	for (( i=0; i<300; i++ )); do [ -e "$1/held" ] && break; sleep 0.1; done
	[ -e "$1/held" ] || fail "nbd_hold: no connection to $2 after 30 s"
	n=$(find "/proc/$TSRD_PID/fd" -mindepth 1 -maxdepth 1 -lname "$3" | wc -l)
	kill -TERM "$pid"
	reap "$pid" || fail "nbd_hold $2 exited non-zero on SIGTERM"
	echo "$n"
}

# ---- 1. default: on
make_tmpdir D
start_tesserad "$D"
grep -q 'read cache: on' "$D/tesserad.log" || fail "no 'read cache: on' in the log"
vol_create "$D" v 16M
uuid=$(tsr "$D" --json volume show v | json_get 'j["uuid"]')
DATA=$D/volumes/$uuid.data
qemu_io "$D" v "write -P 0x11 0 1M" >/dev/null || fail "write"
r=$(resident "$DATA")
assert_eq "$r" 0 "cached bytes of the data file after an O_DIRECT write"
qemu_io "$D" v "read -P 0x11 0 1M" >/dev/null || fail "read back"
r=$(resident "$DATA")
(( r >= 1048576 )) || fail "default: a 1 MiB host read cached $r bytes of the data file (want >= 1 MiB)"
log "default: $r bytes of the data file cached after a 1 MiB read"
assert_eq "$(held_fds "$D" v "$DATA")" 2 "default: descriptors of the data file of a volume held open"
stop_tesserad

# ---- 2. off, and libaio
# (a new volume each: the default's read left pages of v cached, readahead
# beyond the range read included)
n=0
for args in "--read-cache off" "--io libaio" "--io auto"; do
	n=$(( n + 1 ))
	TSRD_WRAP=()
	# io_uring unavailable: the fallback (TSR_IO_BACKEND would choose instead)
	# shellcheck disable=SC2034 # read by start_tesserad
	[ "$args" = "--io auto" ] && TSRD_WRAP=(env -u TSR_IO_BACKEND TSR_TEST_IO_URING_UNAVAILABLE=1)
	# shellcheck disable=SC2086
	start_tesserad "$D" $args
	vol_create "$D" "v$n" 16M
	uuid=$(tsr "$D" --json volume show "v$n" | json_get 'j["uuid"]')
	qemu_io "$D" "v$n" "write -P 0x22 0 1M" >/dev/null || fail "$args: write"
	assert_eq "$(resident "$D/volumes/$uuid.data")" 0 "$args: cached bytes after an O_DIRECT write"
	qemu_io "$D" "v$n" "read -P 0x22 0 1M" "read -P 0x22 0 1M" >/dev/null || fail "$args: read back"
	assert_eq "$(resident "$D/volumes/$uuid.data")" 0 "$args: cached bytes after two 1 MiB reads"
	if [ "$args" != "--read-cache off" ]; then
		assert_eq "$(held_fds "$D" "v$n" "$D/volumes/$uuid.data")" 1 \
			"$args: descriptors of the data file of a volume held open"
	fi
	stop_tesserad
done
TSRD_WRAP=()
grep -q 'read cache: off (--read-cache off)' "$D/tesserad.log" || fail "no 'read cache: off' line"
grep -q 'read cache: off: the libaio backend' "$D/tesserad.log" ||
	fail "no 'read cache: off: the libaio backend' warning with --io libaio"
grep -q 'io_uring unavailable (Function not implemented), falling back to libaio' "$D/tesserad.log" ||
	fail "no fallback to libaio with TSR_TEST_IO_URING_UNAVAILABLE=1"
[ "$(grep -c 'read cache: off: the libaio backend' "$D/tesserad.log")" = 2 ] ||
	fail "no 'read cache: off: the libaio backend' warning after the fallback"
log "--read-cache off, --io libaio and its fallback: nothing cached, no buffered descriptor"

# ---- 3. scrub sees on-disk damage under a cached block
fullfs_require
cl_start 2
cl_stop 2
mv "$(cl_dir 2)" "$CL_ROOT/n2.orig"
fullfs_mount N2 256M "$(cl_dir 2)"
cp -a "$CL_ROOT/n2.orig/." "$N2/" || fail "copy n2's directory onto the loop file system"
cl_start_node 2
cl_wait_nodes_alive 2
ctsr volume create mv --size 16M --replicas 2 >/dev/null || fail "create mv"
assert_eq "$(cl_copy_nodes mv)" "n1,n2" "copies of mv"
ctsr volume attach mv --node n1 >/dev/null || fail "attach on n1"
cl_qemu_io 1 mv "write -P 0x61 0 4M" >/dev/null || fail "write mv"
F2=$(cl_copy_file 2 mv)

# wait_reads VOL N: until VOL's published status counts N host reads at least
# (the coordinator's tick publishes the counters); prints cached_reads of a
# status taken 0.1 s later: reads counts a read when it arrives, cached_reads
# when it completes, and the snapshot a tick (20 ms) published may fall
# between the two (it did: 'cached_reads ... after a host read through n1: 0')
wait_reads() {
	local i got
	for (( i=0; i<100; i++ )); do
		got=$(vstatus "$1" "str(j['reads']) + ' ' + str(j['cached_reads'])") ||
			fail "volume status $1: $got"
		if (( ${got% *} >= $2 )); then
			sleep 0.1
			got=$(vstatus "$1" "str(j['cached_reads'])") || fail "volume status $1: $got"
			echo "$got"
			return 0
		fi
		sleep 0.1
	done
	fail "volume status $1: $got (reads cached_reads): fewer than $2 reads after 10 s"
}
# cached_reads: the coordinator's own copy (n1's) read through the page cache
assert_eq "$(wait_reads mv 0)" 0 "cached_reads of mv before any host read"
cl_qemu_io 1 mv "read -P 0x61 0 1M" >/dev/null || fail "host read through n1"
c=$(wait_reads mv 1)
(( c >= 1 )) || fail "cached_reads of mv after a host read through n1: $c (want >= 1)"
ctsr volume status mv | grepq "reads ([0-9]* through the coordinator's page cache)" ||
	fail "volume status (text) has no cached reads: $(ctsr volume status mv)"
log "cached_reads of mv after a 1 MiB host read through n1: $c"

# phys_off FILE OFF: byte offset on the loop device of byte OFF of FILE
phys_off() {
	filefrag -s -v -b4096 "$1" | "$PY" -c '
import re, sys
want = int(sys.argv[1]) // 4096
for line in sys.stdin:
    m = re.match(r"\s*\d+:\s*(\d+)\.\.\s*(\d+):\s*(\d+)\.\.", line)
    if m and int(m.group(1)) <= want <= int(m.group(2)):
        print((int(m.group(3)) + want - int(m.group(1))) * 4096)
        sys.exit(0)
sys.exit("no extent holds block %d" % want)' "$2"
}
# damage FILE OFF: overwrite the 4 KiB block at OFF of FILE on the loop
# device (O_DIRECT, under the file system: the file's cached pages stay);
# checks the cache still has the good block and the disk the bad one
damage() {
	local f=$1 off=$2 p
	p=$(phys_off "$f" "$off") || fail "no physical offset of $f at $off"
	"$PY" -c 'import sys; sys.stdout.buffer.write(b"\x5a" * 4096)' |
		dd of="$FULLFS_LOOP" bs=4096 seek=$(( p / 4096 )) count=1 oflag=direct conv=notrunc \
			status=none || fail "write the loop device"
	assert_eq "$(dd if="$f" bs=4096 skip=$(( off / 4096 )) count=1 status=none | od -An -tx1 -N1 | xargs)" \
		61 "block at $off read through the page cache"
	assert_eq "$(dd if="$f" bs=4096 skip=$(( off / 4096 )) count=1 iflag=direct status=none |
		od -An -tx1 -N1 | xargs)" 5a "block at $off read with O_DIRECT"
}

# 3a. n2 a remote copy; its pages cached by a buffered read of the file (what
# host reads on n2 would leave)
cat "$F2" >/dev/null
(( $(resident "$F2") >= 4194304 )) || fail "n2's copy is not in the page cache"
damage "$F2" $(( 1 * 1048576 ))
out=$(ctsr --json volume scrub mv) || fail "scrub (n2 remote) exited non-zero: $out"
rep=$(printf '%s' "$out" | json_get 'j["scrub_repaired"]')
(( rep >= 1 )) || fail "scrub (n2 remote) repaired nothing: it read the cache, not the disk: $out"
log "scrub with n2 remote: $rep block(s) repaired"
# n2's copy failed the block's CRC on the scrub's read there: n1's status
# counts it (n2's counters, asked with a peer STATS once a second)
for (( i=0; i<100; i++ )); do
	crc=$(vstatus mv "'%s %s' % (j['crc_errors'], [c['crc_errors'] for c in j['volume']['copies'] if c['node'] == 'n2'][0])") ||
		fail "volume status mv: $crc"
	[ "${crc#* }" != None ] && (( ${crc#* } >= 1 )) && break
	sleep 0.1
done
if [ "${crc#* }" = None ] || (( ${crc% *} < 1 || ${crc#* } < 1 )); then
	fail "crc_errors (total, n2's copy) of mv on n1 after the scrub met n2's bad block: $crc (want >= 1)"
fi
log "crc_errors (total, n2's copy) on n1 after the scrub of remote n2's damaged copy: $crc"
cl_scrub_clean mv "after the remote copy's repair"

# 3b. n2 the coordinator; host reads through it cache its local copy
ctsr volume detach mv >/dev/null || fail "detach"
ctsr volume attach mv --node n2 >/dev/null || fail "attach on n2"
cl_qemu_io 2 mv "write -P 0x61 2M 4k" >/dev/null || fail "rewrite 2M on n2" # drops its page
assert_eq "$(dd if="$F2" bs=4096 skip=512 count=1 iflag=direct status=none | od -An -tx1 -N1 | xargs)" \
	61 "block 2M on n2's disk before the damage"
cl_qemu_io 2 mv "read -P 0x61 0 4M" >/dev/null || fail "read through n2"
(( $(resident "$F2") >= 4194304 )) || fail "host reads on n2 did not cache its copy"
assert_eq "$(vstatus mv "j['crc_errors_coordinator']")" 0 "crc_errors of n2's own copy of mv before the damage"
damage "$F2" $(( 2 * 1048576 ))
cl_qemu_io 2 mv "read -P 0x61 2M 4k" >/dev/null || fail "host read on n2 of the cached block"
out=$(ctsr --json volume scrub mv) || fail "scrub (n2 local) exited non-zero: $out"
rep=$(printf '%s' "$out" | json_get 'j["scrub_repaired"]')
(( rep >= 1 )) || fail "scrub (n2 local) repaired nothing: it read the cache, not the disk: $out"
log "scrub with n2 the coordinator: $rep block(s) repaired"
# the scrub's read of n2's own copy failed the block's CRC: volume status
# counts it (crc_errors, published with the layout status on the tick)
for (( i=0; i<100; i++ )); do
	crc=$(vstatus mv "j['crc_errors_coordinator']") || fail "volume status mv: $crc"
	(( crc >= 1 )) && break
	sleep 0.1
done
(( crc >= 1 )) || fail "crc_errors of mv after the scrub met a bad block on n2: $crc (want >= 1)"
ctsr volume status mv | grepq "crc errors: [1-9][0-9]* on all 2 of 2 copies ([1-9][0-9]* on the coordinator's)" ||
	fail "volume status (text) shows no CRC errors: $(ctsr volume status mv)"
log "crc_errors of mv after the scrub of n2's damaged copy: $crc"
cl_scrub_clean mv "after the local copy's repair"
assert_eq "$(dd if="$F2" bs=4096 skip=512 count=1 iflag=direct status=none | od -An -tx1 -N1 | xargs)" \
	61 "block 2M on n2's disk after the repair"
cl_qemu_io 2 mv "read -P 0x61 0 4M" >/dev/null || fail "read after the repairs"
ctsr volume detach mv >/dev/null || fail "detach"
cl_stop_all

# ---- 4. cached_reads stays 0 with --read-cache off
CL_ARGS=()
CL_PID=()
cl_start 1 --read-cache off
ctsr volume create ov --size 16M --replicas 1 >/dev/null || fail "create ov"
ctsr volume attach ov --node n1 >/dev/null || fail "attach ov on n1"
cl_qemu_io 1 ov "write -P 0x71 0 1M" "read -P 0x71 0 1M" "read -P 0x71 0 1M" >/dev/null ||
	fail "write and read ov"
assert_eq "$(wait_reads ov 2)" 0 "--read-cache off: cached_reads of ov after two host reads"
ctsr volume detach ov >/dev/null || fail "detach ov"
cl_stop_all
log "--read-cache off: two host reads counted, none cached"
