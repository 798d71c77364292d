#!/usr/bin/env bash
# A copy's node dies (SIGKILL) or hangs (SIGSTOP) under load; the volume keeps
# serving on the two others; the node returns and is resynced with only the
# regions written while it was away; scrub finds nothing; copies identical.
#
# 3 nodes on loopback (zones z1..z3), a 512 MiB 3-replica volume attached on n1.
#  1. fio --verify=crc32c random writes over [0, 128M) through n1's NBD
#     export; n3 is killed in the middle; fio must finish without an error.
#  2. while n3 is away, a second fio writes [448M, 480M).
#  3. n3 restarts; the volume returns to all in-sync; the resync counter is
#     > 0 and <= the 160 MiB written while away (+ one region of slack),
#     far below the 512 MiB volume; n1's log shows the copy pipelined (runs
#     of regions merged, several in flight, a flush per batch).
#  4. n2 is stopped with SIGSTOP during writes: within the peer timeout it is
#     recorded out-of-sync and writes go on; SIGCONT; resynced.
#  5. fio --verify_only re-reads phase 1's data; scrub reports 0 mismatches;
#     after a clean stop the three copies' files are byte-identical.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd fio

cl_start 3
ctsr volume create db --size 512M --replicas 3 --failure-domain zone >/dev/null ||
	fail "volume create"
ctsr volume attach db --node n1 >/dev/null || fail "volume attach"
URI=$(cl_nbd_uri 1 db)
log "volume db attached on n1: $URI"

FIO_COMMON=(--name=phase1 --ioengine=nbd "--uri=$URI" --bs=4k --direct=1 --rw=randwrite
	--size=128M --iodepth=16 --verify=crc32c --verify_fatal=1 --randseed=42 --verify_state_save=0)

# ---- 1. kill n3 in the middle of a verified workload
fio "${FIO_COMMON[@]}" --do_verify=1 --output="$CL_ROOT/fio1.txt" &
fpid=$!
track_pid "$fpid"
sleep 2
log "killing n3 (SIGKILL) under load"
cl_kill 3
reap "$fpid" || { cat "$CL_ROOT/fio1.txt" >&2; fail "fio failed while n3 was killed"; }
grep -q "err= 0" "$CL_ROOT/fio1.txt" || { cat "$CL_ROOT/fio1.txt" >&2; fail "fio reported errors"; }
cl_wait_state db n3 out-of-sync 10
wait_log 1 "n3.*out-of-sync|out-of-sync.*n3" 5

# ---- 2. more writes while n3 is away, in a range of its own
fio --name=phase2 --ioengine=nbd "--uri=$URI" --bs=64k --rw=write --offset=448M --size=32M \
	--iodepth=8 --output="$CL_ROOT/fio2.txt" || fail "fio phase 2"
copied_before=$(vstatus db 'j["resync_bytes_copied"]')

# ---- 3. n3 returns: resync of the dirty regions only
cl_start_node 3
cl_wait_synced db 120
copied=$(vstatus db 'j["resync_bytes_copied"]')
moved=$(( copied - copied_before ))
limit=$(( (128 + 32 + 1) << 20 ))
log "resync of n3 copied $moved bytes (limit $limit, volume $((512 << 20)))"
[ "$moved" -gt 0 ] || fail "resync copied nothing"
[ "$moved" -le "$limit" ] || fail "resync copied $moved bytes, more than the $limit written while n3 was away"
# the copy was a pipeline (mirror_resync.c): contiguous dirty regions merged
# into fewer, larger copies, several in flight at once, a few flushes of n3
# for all of them instead of a FUA write per region
line=$(grep -Eo '\(n3\) in sync again \([0-9]+ bytes copied; [0-9]+ copies, up to [0-9]+ in flight; [0-9]+ flushes\)' \
	"$(cl_dir 1)/tesserad.log" | tail -1)
[ -n "$line" ] || fail "no resync summary for n3 in n1's log"
read -r copies depth flushes < <(printf '%s\n' "$line" | sed -E 's/.*; ([0-9]+) copies, up to ([0-9]+) in flight; ([0-9]+) flushes.*/\1 \2 \3/')
log "resync of n3: $copies copies, up to $depth in flight, $flushes flushes"
[ "$copies" -gt 0 ] && [ "$copies" -lt $(( moved >> 20 )) ] ||
	fail "resync of n3: $copies copies for $((moved >> 20)) regions (expected merged runs)"
[ "$depth" -gt 1 ] || fail "resync of n3: at most $depth copy in flight"
[ "$flushes" -ge 1 ] && [ "$flushes" -lt "$copies" ] ||
	fail "resync of n3: $flushes flushes for $copies copies (expected one per batch)"

# ---- 4. n2 hangs
fio --name=phase4 --ioengine=nbd "--uri=$URI" --bs=4k --rw=randwrite --offset=256M --size=64M \
	--iodepth=8 --time_based --runtime=8 --output="$CL_ROOT/fio4.txt" &
fpid=$!
track_pid "$fpid"
sleep 1
log "stopping n2 (SIGSTOP) under load"
freeze_pids "${CL_PID[2]}" || fail "pid ${CL_PID[2]} not stopped"
on_exit "kill -CONT ${CL_PID[2]}"
cl_wait_state db n2 out-of-sync 15
reap "$fpid" || { cat "$CL_ROOT/fio4.txt" >&2; fail "fio failed while n2 hung"; }
grep -q "err= 0" "$CL_ROOT/fio4.txt" || fail "fio reported errors while n2 hung"
writes_after=$(grep -Eo 'write: IOPS=[0-9.k]+' "$CL_ROOT/fio4.txt" | head -1)
log "writes went on while n2 hung: $writes_after"
kill -CONT "${CL_PID[2]}"
cl_wait_synced db 120

# ---- 5. data, scrub, identical copies
fio "${FIO_COMMON[@]}" --verify_only --output="$CL_ROOT/fio5.txt" ||
	{ cat "$CL_ROOT/fio5.txt" >&2; fail "phase 1 data does not verify after resync"; }
cl_scrub_clean db "after the resyncs"
ctsr volume detach db >/dev/null || fail "detach"
cl_stop_all
cl_assert_copies_identical db 1 2 3
