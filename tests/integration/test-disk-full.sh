#!/usr/bin/env bash
# A full file system under one tesserad (DESIGN.md invariant 6: "full disks: a
# clear error to the caller, nothing lost, other volumes and clients
# untouched").  A 96 MiB ext4 on a loop device is the data dir; thin volumes
# promise more than it holds (A 128 MiB, B 64 MiB, S 16 MiB with a snapshot
# S@s1 and a clone C).  B gets 8 MiB of known data, then crash_writer fills A
# with random 4 KiB writes (logging every acknowledged one) until a write
# fails.  Then:
#   - writes to unallocated blocks of A and of B, a write to S that needs a
#     copy into S@s1, and a write to C fail at the NBD client with ENOSPC
#     ("No space left on device"), not EIO, and not a dead server (before the
#     store's fix: SIGBUS); a new volume is refused with a clear message;
#   - tesserad still runs and answers `tessera status` and `volume show`;
#   - every acknowledged write to A reads back (crash_writer verify), B reads
#     back its checksum and zeros past it, its allocated blocks can still be
#     overwritten; S, S@s1 and C are unchanged;
#   - a clean restart on the full disk (libaio this time): everything reads
#     back; A is filled again (closing files gave ext4's preallocations
#     back), a hole write is ENOSPC through libaio too;
#   - tesserad starts with not one block free (ballast files outside DIR):
#     right after the libaio run and a kill -9, after a clean stop, and with
#     no old pid file (then it serves without one and says what to do);
#     `tessera status` warns that the data file system is FULL;
#   - with not one block free, a snapshot delete is accepted and listed as
#     "deleting" until its merge can run, and its name can be taken again;
#   - with not one block free, deleting B and trimming 16 MiB of A free
#     space: A, S and C take writes again without a restart, and after a
#     clean restart everything acknowledged is still there.
# Part 2, three replicas where only n3's data dir is a small ext4 (64 MiB; a
# 32 MiB volume fits, so placement accepts it; then a ballast file leaves 4
# MiB): crash_writer through n1 sees no error while n3's disk fills; n3's copy
# leaves the in-sync set (out-of-sync, like a failed copy), and a scrub of the
# two in-sync copies finds them equal (invariant 1: every acknowledged write
# is on every in-sync copy); the ballast removed, n3 is resynced without a
# restart, every acknowledged write reads back, and after a clean stop the
# three copies are byte-identical.  Then the same for an ec 2+1 volume (n3's
# chunk copy leaves the in-sync set, scrub clean, rebuilt, acked writes back).
# Needs root and loop devices.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/fullfs.sh"

require_tessera "$CRASH_WRITER"
fullfs_require
require_cmd qemu-io timeout sha256sum fallocate qemu-img

make_tmpdir T
fullfs_mount MNT 96M
D=$MNT/data
log "data dir on $FULLFS_LOOP ($(df -h --output=size,avail "$MNT" | tail -n1 | xargs))"

start_tesserad "$D"
vol_create "$D" A 128M
vol_create "$D" B 64M
qemu_io_out() { qemu_io "$@" 2>&1; }

# B: 8 MiB of known data.
head -c 8M /dev/urandom >"$T/b.data"
B_SUM=$(sha256 "$T/b.data")
out=$(qemu_io_out "$D" B "write -s $T/b.data 0 8M") || fail "write B: $out"
vol_sum() { # VOL MIB: sha256 of the first MIB MiB of VOL (or VOL@SNAP), through NBD
	qemu-img dd -f raw -O raw "if=$(qemu_nbd_spec "$D" "$1")" "of=$T/read" bs=1M count="$2" \
		>/dev/null 2>&1 || fail "read $1"
	sha256 "$T/read"
}
b_sum() { vol_sum B 8; }
# S: 2 MiB of known data, a snapshot S@s1 and a clone C of it (copy-on-write
# and clone bitmaps on the full disk).
head -c 2M /dev/urandom >"$T/s.data"
S_SUM=$(sha256 "$T/s.data")
vol_create "$D" S 16M
out=$(qemu_io_out "$D" S "write -s $T/s.data 0 2M") || fail "write S: $out"
tsr "$D" snapshot create S s1 >/dev/null || fail "snapshot create S s1"
tsr "$D" volume create C --from-snapshot S@s1 >/dev/null || fail "clone C of S@s1"

# M: snapshots m1 and m2 with 1 MiB of M's old data held by m2 only, so
# that deleting m2 must merge it into m1 (copy 1 MiB: blocks a full disk
# does not have).
head -c 1M /dev/urandom >"$T/m.data"
M_SUM=$(sha256 "$T/m.data")
vol_create "$D" M 16M
out=$(qemu_io_out "$D" M "write -s $T/m.data 0 1M") || fail "write M: $out"
tsr "$D" snapshot create M m1 >/dev/null || fail "snapshot create M m1"
tsr "$D" snapshot create M m2 >/dev/null || fail "snapshot create M m2"
out=$(qemu_io_out "$D" M "write -P 0x77 0 1M") || fail "overwrite M: $out"

# A: random 4 KiB writes until the file system is full (fill_a SEQ_BASE:
# crash_writer logs every acknowledged write and stops at the first failed one).
LOG=$T/a.log
fill_a() {
	local rc=0
	timeout 180 "$CRASH_WRITER" write "$(nbd_uri "$D" A)" "$LOG" --seq-base "$1" \
		>"$T/writer.out" 2>&1 || rc=$?
	cat "$T/writer.out" >&2
	[ "$rc" = 3 ] || fail "crash_writer on a filling disk exited $rc, want 3 (stopped by a failed write)"
	grep -qE '\(([1-9][0-9]*) failed\)' "$T/writer.out" || fail "crash_writer saw no failed write"
}
fill_a 0
ACKED=$(wc -l <"$LOG")
log "A: $ACKED writes acknowledged before the disk was full; df: $(df --output=avail "$MNT" | tail -n1 | xargs) KiB free"
assert_alive

# The error a client sees: ENOSPC, for A (a block it never wrote) and for B
# (past its data); the daemon is still there.
free_block() { # an offset of A that no acknowledged write touched
	"$PY" -c 'import sys
done = {int(l.split()[0]) for l in open(sys.argv[1])}
print(next(o for o in range(0, 128 << 20, 4096) if o not in done))' "$LOG"
}
# want_enospc VOL QEMU_IO_CMD WHAT: the write is refused with ENOSPC ("No
# space left on device"), not EIO, and the daemon answers.
want_enospc() {
	local out
	out=$(qemu_io_out "$D" "$1" "$2")
	log "$3 on a full disk: $(printf '%s' "$out" | head -n1)"
	printf '%s' "$out" | grepq "No space left on device" ||
		fail "$3 on a full disk: want ENOSPC (No space left on device), got: $out"
}
A_FREE=$(free_block)
want_enospc A "write -P 0x5a $A_FREE 4k" "write to A at $A_FREE"
want_enospc B "write -P 0x5a 32M 1M" "write to B at 32M"
# a write that needs a copy into S@s1 first, and a clone's write
want_enospc S "write -P 0x5a 64k 64k" "S write (copy-on-write into S@s1)"
want_enospc C "write -P 0x5a 4M 64k" "clone C write"
assert_eq "$(vol_sum S 2)" "$S_SUM" "S after a refused write on a full disk"
assert_eq "$(vol_sum S@s1 2)" "$S_SUM" "S@s1 after a refused write on a full disk"
assert_eq "$(vol_sum C 2)" "$S_SUM" "clone C after a refused write on a full disk"
# a new volume needs its bitmap's blocks: refused, and nothing left behind
# (file mode: the message names the data dir's file system, not "the device")
expect_fail 1 "no space for volume 'X' of 16.0 TiB: the file system of .*/data is full" \
	tsr "$D" volume create X --size 16T
tsr "$D" volume list | grepq '^X\b' && fail "volume X listed after a failed create"
assert_alive
tsr "$D" status >"$T/status.out" 2>&1 || { cat "$T/status.out" >&2; fail "tessera status on a full disk"; }
tsr "$D" volume show A >"$T/vshow.out" 2>&1 ||
	{ cat "$T/vshow.out" >&2; fail "tessera volume show A on a full disk"; }
grep -qE '^volumes: +[0-9]+$' "$T/status.out" || { cat "$T/status.out" >&2; fail "tessera status"; }
grep -qE '^allocated: ' "$T/vshow.out" || { cat "$T/vshow.out" >&2; fail "tessera volume show A"; }
log "tessera status and volume show answer on the full disk: $(grep '^allocated' "$T/vshow.out")"

# Nothing lost: every acknowledged write to A, and B's data.
"$CRASH_WRITER" verify "$(nbd_uri "$D" A)" "$LOG" >"$T/verify.out" 2>&1 ||
	{ head -n 25 "$T/verify.out" >&2; fail "A: acknowledged writes lost on a full disk"; }
assert_eq "$(b_sum)" "$B_SUM" "B's checksum on a full disk"
# the rest of B was never written (its crc table pages are holes): zeros
out=$(qemu_io_out "$D" B "read -P 0 8M 56M") || fail "read B's unwritten 56 MiB on a full disk: $out"
# B's allocated blocks can still be overwritten (same data, then 1 MiB new).
out=$(qemu_io_out "$D" B "write -s $T/b.data 0 8M") || fail "overwrite B on a full disk: $out"
head -c 1M /dev/urandom >"$T/b.new"
dd if="$T/b.new" of="$T/b.data" conv=notrunc status=none
B_SUM=$(sha256 "$T/b.data")
out=$(qemu_io_out "$D" B "write -s $T/b.new 0 1M") || fail "overwrite B on a full disk: $out"
assert_eq "$(b_sum)" "$B_SUM" "B's checksum after overwriting on a full disk"
log "B: allocated blocks overwritten on a full disk, checksum ok"

# A clean restart on the full disk, with the other I/O backend: the volumes
# open again (the catalogue, crc tables and bitmaps survived), nothing
# acknowledged is lost, and a data write into a hole is ENOSPC through libaio
# too.
stop_tesserad
start_tesserad "$D" --io libaio
fill_a 50000000 # closing files gave back ext4's preallocations: full again
A_FREE=$(free_block)
want_enospc A "write -P 0x5a $A_FREE 4k" "write to A at $A_FREE (libaio)"
"$CRASH_WRITER" verify "$(nbd_uri "$D" A)" "$LOG" >"$T/verify.out" 2>&1 ||
	{ head -n 25 "$T/verify.out" >&2; fail "A: acknowledged writes lost after a restart on a full disk"; }
assert_eq "$(b_sum)" "$B_SUM" "B's checksum after a restart on a full disk"
assert_eq "$(vol_sum S@s1 2)" "$S_SUM" "S@s1 after a restart on a full disk"
log "restarted on the full disk: A and B read back"

# Not one block free at start-up: a clean stop gives back ext4's
# preallocations, a ballast outside DIR takes every block left, and tesserad
# must still start (the operator needs it to delete a volume).  Before: its
# new tesserad.pid needed a block, "start-up failed: No space left on
# device".  Then the same after a crash (kill -9 leaves tesserad.pid, which
# is rewritten in place).
start_full() { # how: start tesserad on a file system with not one block free
	# (its log outside the full disk, where its messages can be read)
	"$TESSERAD" --data "$D" >"$T/full.log" 2>&1 &
	TSRD_PID=$!
	track_pid "$TSRD_PID"
	for (( i=0; i<300; i++ )); do
		[ "$(cat "$D/tesserad.pid" 2>/dev/null)" = "$TSRD_PID" ] && [ -S "$D/admin.sock" ] && break
		kill -0 "$TSRD_PID" 2>/dev/null ||
			{ cat "$T/full.log" >&2; fail "tesserad exited at a start with not one block free ($1)"; }
		sleep 0.1
	done
	assert_eq "$(cat "$D/tesserad.pid")" "$TSRD_PID" "tesserad.pid after a start on a full disk ($1)"
	assert_eq "$(fs_avail_kib)" 0 "KiB free after a start ($1)"
	assert_eq "$(b_sum)" "$B_SUM" "B's checksum after a start with not one block free ($1)"
	log "started with not one block free ($1)$(grep -q 'second try' "$T/full.log" && echo ': catalogue opened after a syncfs')"
}
# Right after the libaio run (before store.reserve, the first start with not
# one block free failed here in about 1 run of 4: SQLite could not regrow
# store.db-shm, SQLITE_IOERR_SHMSIZE; test-full-start.sh repeats it)
kill9_tesserad
fill_fs "$MNT/ballast"
start_full "after kill -9"
grep -q "rewrote the existing .*tesserad.pid in place" "$T/full.log" ||
	{ cat "$T/full.log" >&2; fail "after kill -9 on a full disk: want tesserad.pid rewritten in place"; }
stop_tesserad
fill_fs "$MNT/ballast2"
start_full "after a clean stop"
# Neither tesserad.pid nor its parked tesserad.pid.tmp: it serves without a
# pid file and says what to do (its log outside the full disk this time).
stop_tesserad
rm -f "$D/tesserad.pid.tmp" "$D/tesserad.pid"
fill_fs "$MNT/ballast3"
"$TESSERAD" --data "$D" >"$T/nopid.log" 2>&1 &
TSRD_PID=$!
track_pid "$TSRD_PID"
for (( i=0; i<300; i++ )); do
	grep -q "tesserad ready" "$T/nopid.log" && break
	kill -0 "$TSRD_PID" 2>/dev/null ||
		{ cat "$T/nopid.log" >&2; fail "tesserad exited at a start with not one block free (no pid file)"; }
	sleep 0.1
done
grep -q "serving WITHOUT .*tesserad.pid. Free space now: delete a volume" "$T/nopid.log" ||
	{ cat "$T/nopid.log" >&2; fail "no pid file on a full disk: want the error saying what to do"; }
[ -e "$D/tesserad.pid" ] && fail "tesserad.pid exists though there was no block for it"
assert_eq "$(b_sum)" "$B_SUM" "B's checksum, served without a pid file"
log "not one block free and no old pid file: served without one, told to free space"

# The operator sees the full disk: tessera status warns (and says what to
# do), --json has avail 0.
tsr "$D" status >"$T/status.out" || fail "tessera status on a full disk"
grep -q "^WARNING: data file system FULL (0 B available of " "$T/status.out" ||
	{ cat "$T/status.out" >&2; fail "tessera status on a full disk: no FULL warning"; }
assert_eq "$(tsr "$D" --json status | json_get '[j["data_fs"]["avail"], "FULL" in j["data_fs"]["warning"]]')" \
	"[0, true]" "status --json on a full disk"

# A snapshot delete whose merge cannot get blocks (M is closed, so the merge
# runs in the call): the delete is accepted (the mark is its commit point:
# the name is free), M@m1 still reads M's old data, and the merge is tried
# again by the engine at the next snapshot list of M once there is space
# (below, after B's delete), without a restart.  Before: exit 1 "No space
# left on device" with m2 already gone from the list and a second delete
# "not found".  Meanwhile `snapshot list` shows m2 in state "deleting" (its
# space is not free yet; --json: under "deleting", not "snapshots"), and a
# new snapshot may take the name m2 at once.
out=$(tsr "$D" snapshot delete M m2 2>&1) ||
	fail "snapshot delete M m2 on a full disk: want accepted (exit 0), got: $out"
tsr "$D" snapshot list M >"$T/snaps.out" || fail "snapshot list M"
grep -qE "^m2 +deleting " "$T/snaps.out" || { cat "$T/snaps.out" >&2; fail "m2 not shown as deleting"; }
grep -qE "^m1 +ready " "$T/snaps.out" || { cat "$T/snaps.out" >&2; fail "m1 not listed as ready"; }
OLD_M2=$(tsr "$D" --json snapshot list M | json_get '[s["uuid"] for s in j["deleting"]][0]')
assert_eq "$(tsr "$D" --json snapshot list M | json_get '[[s["name"] for s in j["snapshots"]], [(s["name"], s["state"], len(s["nbd_uris"])) for s in j["deleting"]]]')" \
	'[["m1"], [["m2", "deleting", 0]]]' "snapshot list --json with m2's delete pending"
grep -q "m2 .* accepted, its merge did not finish (No space left on device)" "$T/nopid.log" ||
	{ cat "$T/nopid.log" >&2; fail "no log line for the pending merge of m2"; }
assert_eq "$(vol_sum M@m1 1)" "$M_SUM" "M@m1 with m2's merge pending on a full disk"
# the name is free: a new m2 (M's current content, 0x77) beside the old one
out=$(tsr "$D" snapshot create M m2 2>&1) ||
	fail "snapshot create M m2 while the old m2's delete is pending: $out"
assert_eq "$(tsr "$D" --json snapshot list M | json_get '[[s["name"] for s in j["snapshots"]], [s["uuid"] for s in j["deleting"]]]')" \
	"[[\"m1\", \"m2\"], [\"$OLD_M2\"]]" "snapshot list --json: the new m2 ready, the old one deleting"
M2_SUM=$(head -c 1M /dev/zero | tr '\0' '\167' | sha256sum | cut -d' ' -f1)
assert_eq "$(vol_sum M@m2 1)" "$M2_SUM" "the new M@m2 (0x77) with the old m2's merge pending"
log "snapshot delete M m2 on a full disk: accepted, listed as deleting, merge pending, M@m1 intact, the name m2 taken again"

# Free space (delete B, trim A's first 16 MiB): A takes writes again, without
# a restart.
tsr "$D" volume delete B >/dev/null || fail "volume delete B on a full disk"
# the ballast files of the starts above go too (they hold what ext4's
# preallocations gave back at the stops: without them the space left is what
# it was before those restarts)
rm -f "$MNT"/ballast*
assert_eq "$(tsr "$D" --json snapshot list M | json_get '[[s["name"] for s in j["snapshots"]], len(j["deleting"])]')" \
	'[["m1", "m2"], 0]' "snapshot list --json once the old m2's merge could finish"
grep -q "the delete of m2 ($OLD_M2) finished on a retry" "$T/nopid.log" ||
	{ tail -n 20 "$T/nopid.log" >&2; fail "m2's merge not retried once space was freed"; }
assert_eq "$(vol_sum M@m1 1)" "$M_SUM" "M@m1 after m2's merge finished"
assert_eq "$(vol_sum M@m2 1)" "$M2_SUM" "the new M@m2 after the old m2's merge finished"
tsr "$D" snapshot delete M m2 >/dev/null || fail "delete the new m2"
tsr "$D" snapshot delete M m2 >/dev/null 2>&1 && fail "m2 deleted twice"
tsr "$D" snapshot create M m2 >/dev/null || fail "the name m2 is not free again"
log "m2's merge finished on a retry once space was freed, M@m1 intact"
tsr "$D" volume delete M >/dev/null || fail "volume delete M"
out=$(qemu_io_out "$D" A "discard 0 16M") || fail "trim A on a full disk: $out"
awk '$1 >= 16777216' "$LOG" >"$LOG.kept" # trimmed blocks read as zeros
mv "$LOG.kept" "$LOG"
log "B deleted, A's first 16 MiB trimmed; df: $(df --output=avail "$MNT" | tail -n1 | xargs) KiB free"
A_FREE2=$("$PY" -c 'import sys
done = {int(l.split()[0]) for l in open(sys.argv[1])}
print(next(o for o in range(16 << 20, 128 << 20, 4096) if o not in done))' "$LOG")
out=$(qemu_io_out "$D" A "write -P 0x5a 0 16M") || fail "write A 0..16M after freeing space: $out"
out=$(qemu_io_out "$D" A "write -P 0x6b $A_FREE2 4k") ||
	fail "write A at $A_FREE2 (never written before) after freeing space: $out"
out=$(qemu_io_out "$D" S "write -P 0x5a 64k 64k") || fail "write S after freeing space: $out"
out=$(qemu_io_out "$D" C "write -P 0x5a 4M 64k") || fail "write clone C after freeing space: $out"
dd if=/dev/zero bs=64k count=1 status=none | tr '\0' '\132' |
	dd of="$T/s.data" bs=64k seek=1 conv=notrunc status=none
S2_SUM=$(sha256 "$T/s.data")
assert_eq "$(vol_sum S 2)" "$S2_SUM" "S written after freeing space"
assert_eq "$(vol_sum S@s1 2)" "$S_SUM" "S@s1 after S was written"
log "A: 16 MiB + 4 KiB written after freeing space"

# A clean restart: everything acknowledged is still there.
stop_tesserad
start_tesserad "$D"
out=$(qemu_io_out "$D" A "read -P 0x5a 0 16M" "read -P 0x6b $A_FREE2 4k") &&
	! printf '%s' "$out" | grepq -i "fail\|mismatch" || fail "A's new writes after a restart: $out"
tsr "$D" volume list | grepq '^B\b' && fail "B is back after its delete and a restart"
assert_eq "$(vol_sum S 2)" "$S2_SUM" "S after a restart"
assert_eq "$(vol_sum S@s1 2)" "$S_SUM" "S@s1 after a restart"
out=$(qemu_io_out "$D" C "read -P 0x5a 4M 64k") || fail "clone C after a restart: $out"
# the qemu-io patterns are not crash_writer blocks: trim them, then check the rest
out=$(qemu_io_out "$D" A "discard 0 16M" "discard $A_FREE2 4k") || fail "trim A: $out"
"$CRASH_WRITER" verify "$(nbd_uri "$D" A)" "$LOG" >"$T/verify.out" 2>&1 ||
	{ head -n 25 "$T/verify.out" >&2; fail "A: acknowledged writes lost after a restart"; }
stop_tesserad
! grep -E "AddressSanitizer|runtime error|LeakSanitizer" "$D/tesserad.log" ||
	fail "sanitizer report in $D/tesserad.log"
log "$(wc -l <"$LOG") acknowledged writes of A (outside its first 16 MiB) read back after restarts"

# ---------------------------------------------------------------- part 2: 3 replicas
make_tmpdir CL_ROOT
CL_N=3
i=1
while read -r port; do CL_PORT[$i]=$port; i=$(( i + 1 )); done < <(free_ports 3) # distinct
fullfs_mount N3 64M "$(cl_dir 3)"
for i in 1 2 3; do cl_start_node "$i"; done
cl_wait_nodes_alive 3
ctsr volume create R --size 32M --replicas 3 --failure-domain zone >/dev/null ||
	fail "create a 3-replica volume"
ctsr volume attach R --node n1 >/dev/null || fail "attach R on n1"
avail=$(df -B1 --output=avail "$N3" | tail -n1)
fallocate -l $(( avail - (4 << 20) )) "$N3/ballast" || fail "ballast on n3"
log "3 replicas: n3's file system has $(df -h --output=avail "$N3" | tail -n1 | xargs) left"
RLOG=$CL_ROOT/r.log
"$CRASH_WRITER" write "$(cl_nbd_uri 1 R)" "$RLOG" --duration 4 >"$CL_ROOT/rw.out" 2>&1 ||
	{ cat "$CL_ROOT/rw.out" >&2; fail "3 replicas: the host saw an error while n3's disk filled"; }
log "3 replicas: $(tail -n1 "$CL_ROOT/rw.out"); n3: $(df --output=avail "$N3" | tail -n1 | xargs) KiB free"
for i in 1 2 3; do assert_alive "${CL_PID[$i]}"; done
assert_eq "$(vstatus R "[c['state'] for c in j['volume']['copies'] if c['node']=='n3'][0]")" \
	out-of-sync "n3's copy on its full disk"
grep -q "copy 2 (n3) failed (No space left on device)" "$(cl_dir 1)/tesserad.log" ||
	fail "n1's log does not say n3's copy failed with ENOSPC"
cl_scrub_clean R "n3 full, n1 and n2 in sync"
rm -f "$N3/ballast"
cl_wait_synced R 60
log "3 replicas: ballast removed, n3 in sync again without a restart"
"$CRASH_WRITER" verify "$(cl_nbd_uri 1 R)" "$RLOG" >"$CL_ROOT/rverify.out" 2>&1 ||
	{ head -n 25 "$CL_ROOT/rverify.out" >&2; fail "3 replicas: acknowledged writes lost"; }
cl_scrub_clean R "n3 back"
ctsr volume detach R >/dev/null || fail "detach R"

# The same with erasure coding (2+1, a chunk copy on each node): n3's chunk
# copy fails its stage journal and in-place writes with ENOSPC, leaves the
# in-sync set, and is rebuilt once space is freed.
ctsr volume create E --size 32M --ec 2+1 --failure-domain zone >/dev/null ||
	fail "create an ec 2+1 volume"
ctsr volume attach E --node n1 >/dev/null || fail "attach E on n1"
avail=$(df -B1 --output=avail "$N3" | tail -n1)
fallocate -l $(( avail - (4 << 20) )) "$N3/ballast" || fail "ballast on n3"
ELOG=$CL_ROOT/e.log
"$CRASH_WRITER" write "$(cl_nbd_uri 1 E)" "$ELOG" --duration 4 >"$CL_ROOT/ew.out" 2>&1 ||
	{ cat "$CL_ROOT/ew.out" >&2; fail "ec 2+1: the host saw an error while n3's disk filled"; }
log "ec 2+1: $(tail -n1 "$CL_ROOT/ew.out"); n3: $(df --output=avail "$N3" | tail -n1 | xargs) KiB free"
for i in 1 2 3; do assert_alive "${CL_PID[$i]}"; done
assert_eq "$(vstatus E "[c['state'] for c in j['volume']['copies'] if c['node']=='n3'][0]")" \
	out-of-sync "n3's chunk copy on its full disk"
cl_scrub_clean E "ec 2+1, n3 full"
rm -f "$N3/ballast"
cl_wait_synced E 60
"$CRASH_WRITER" verify "$(cl_nbd_uri 1 E)" "$ELOG" >"$CL_ROOT/everify.out" 2>&1 ||
	{ head -n 25 "$CL_ROOT/everify.out" >&2; fail "ec 2+1: acknowledged writes lost"; }
cl_scrub_clean E "ec 2+1, n3 back"
log "ec 2+1: n3 rebuilt without a restart, $(wc -l <"$ELOG") acknowledged writes read back"
ctsr volume detach E >/dev/null || fail "detach E"
cl_stop_all
for i in 1 2 3; do
	! grep -E "AddressSanitizer|runtime error|LeakSanitizer" "$(cl_dir "$i")/tesserad.log" ||
		fail "sanitizer report in n$i's log"
done
cl_assert_copies_identical R 1 2 3
log "3 replicas: $(wc -l <"$RLOG") acknowledged writes read back, copies identical"
