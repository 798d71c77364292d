#!/usr/bin/env bash
# tesserad starts on a data file system with not one block free, every
# time, right after a run that filled it through libaio (DESIGN.md invariant
# 6; the operator needs tesserad running to delete a volume).  Before the
# fix (store.reserve, engine/store/catalog.c) 6 of 93 starts failed here:
# "catalogue: PRAGMA journal_mode=WAL; ...: disk I/O error"
# (SQLITE_IOERR_SHMSIZE, errno ENOSPC: store.db-shm, truncated by SQLite's
# first connection, did not get its 8 blocks back), then "cannot open the
# store".  Each round, on a 24 MiB ext4 (the size does not matter to the
# bug, only that not one block is free: 48 MiB until s21 took twice as long
# to fill and read back):
#   - tesserad --io libaio, a thin 128 MiB volume A filled by crash_writer
#     until a write fails (ENOSPC);
#   - kill -9 (odd rounds) or a clean stop (even rounds);
#   - a ballast file takes every block left (df: 0 KiB free, asserted);
#   - tesserad starts (its log outside the full disk) and must serve: its
#     admin socket answers and every acknowledged write of A reads back;
#   - then the ballast and A go (the next round starts from an empty store).
# TSR_FULL_START_ROUNDS (default 12) sets the number of rounds.  Then 4
# rounds of the same for a cluster's meta node (meta.db) on a full disk.
# Needs root and loop devices.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/fullfs.sh"

require_tessera "$CRASH_WRITER"
fullfs_require
require_cmd qemu-io
ROUNDS=${TSR_FULL_START_ROUNDS:-12}

make_tmpdir T
fullfs_mount MNT 24M
D=$MNT/data
log "data dir on $FULLFS_LOOP ($(df -h --output=size,avail "$MNT" | tail -n1 | xargs)), $ROUNDS rounds"

for (( r=1; r<=ROUNDS; r++ )); do
	start_tesserad "$D" --io libaio
	tsr "$D" volume create A --size 128M >/dev/null || fail "round $r: volume create A"
	LOG=$T/a.log
	rm -f "$LOG"
	rc=0
	timeout 180 "$CRASH_WRITER" write "$(nbd_uri "$D" A)" "$LOG" >"$T/writer.out" 2>&1 || rc=$?
	[ "$rc" = 3 ] || { cat "$T/writer.out" >&2; fail "round $r: crash_writer exited $rc, want 3 (stopped by a failed write)"; }
	if (( r % 2 )); then how="kill -9"; kill9_tesserad; else how="clean stop"; stop_tesserad; fi
	fill_fs "$MNT/ballast"
	"$TESSERAD" --data "$D" >"$T/full.log" 2>&1 &
	TSRD_PID=$!
	track_pid "$TSRD_PID"
	ok=
	for (( i=0; i<300; i++ )); do
		if [ -S "$D/admin.sock" ] && grep -q "tesserad ready" "$T/full.log" 2>/dev/null &&
		   tsr "$D" status >/dev/null 2>&1; then
			ok=1
			break
		fi
		kill -0 "$TSRD_PID" 2>/dev/null || break
		sleep 0.1
	done
	# (the file system stays full: nothing but tesserad can free its space,
	# so the first failed start ends the test)
	[ -n "$ok" ] || { cat "$T/full.log" >&2; fail "round $r ($how): tesserad did not start with not one block free"; }
	log "round $r ($how): started with not one block free$(grep -q 'second try' "$T/full.log" && echo ' (catalogue opened after a syncfs)')"
	"$CRASH_WRITER" verify "$(nbd_uri "$D" A)" "$LOG" >"$T/verify.out" 2>&1 ||
		{ head -n 25 "$T/verify.out" >&2; fail "round $r: A: acknowledged writes lost"; }
	# (the verify's NBD connection is released a moment after it exits)
	for (( i=0; i<100; i++ )); do
		[ "$(tsr "$D" --json volume show A | json_get 'j["in_use"]')" = false ] && break
		sleep 0.1
	done
	out=$(tsr "$D" volume delete A 2>&1) || { tail -n 5 "$T/full.log" >&2; fail "round $r: volume delete A: $out"; }
	rm -f "$MNT/ballast"
	stop_tesserad
done
log "$ROUNDS of $ROUNDS starts with not one block free served"

# ---------------------------------------------------------------- a meta node
# The same for a cluster's meta node (embedded metadata store DIR/meta.db,
# engine/meta/meta_sqlite.c): with not one block free it starts (its lease
# is the first commit) and answers, and a volume delete commits.  Before:
# "meta: grant lease: DIR/meta.db: database or disk is full", tesserad
# exited.  Each round: a 1-replica volume V of 16 MiB written whole (a
# clean stop or kill -9 by turns), ballast, start, volume list, delete V.
make_tmpdir CL_ROOT
CL_N=1
CL_PORT[1]=$(free_port)
fullfs_mount N1 48M "$(cl_dir 1)"
for (( r=1; r<=4; r++ )); do
	cl_start_node 1
	cl_wait_nodes_alive 1
	ctsr volume create V --size 16M --replicas 1 >/dev/null || fail "meta round $r: volume create V"
	ctsr volume attach V --node n1 >/dev/null || fail "meta round $r: attach V"
	head -c 16M /dev/urandom >"$T/v.data"
	out=$(qemu_io "$(cl_dir 1)" V "write -s $T/v.data 0 16M" 2>&1) || fail "meta round $r: write V: $out"
	ctsr volume detach V >/dev/null || fail "meta round $r: detach V"
	if (( r % 2 )); then how="kill -9"; cl_kill 1; else how="clean stop"; cl_stop 1; fi
	fill_fs "$N1/ballast"
	"$TESSERAD" --data "$(cl_dir 1)" ${CL_ARGS[1]} >"$T/meta.log" 2>&1 &
	CL_PID[1]=$!
	track_pid "${CL_PID[1]}"
	ok=
	for (( i=0; i<300; i++ )); do
		if grep -q "tesserad ready" "$T/meta.log" 2>/dev/null &&
		   ctsr volume list 2>/dev/null | grepq '^V '; then
			ok=1
			break
		fi
		kill -0 "${CL_PID[1]}" 2>/dev/null || break
		sleep 0.1
	done
	[ -n "$ok" ] || { cat "$T/meta.log" >&2; fail "meta round $r ($how): the meta node did not start with not one block free"; }
	out=$(ctsr volume delete V 2>&1) || { cat "$T/meta.log" >&2; fail "meta round $r ($how): volume delete V on a full disk: $out"; }
	log "meta round $r ($how): the meta node started with not one block free, V deleted"
	rm -f "$N1/ballast"
	cl_stop 1
done
