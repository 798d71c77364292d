#!/usr/bin/env bash
# The resync's durability rule with real processes: a region is clean on the
# coordinator (its bit cleared) only after a flush of the returning copy
# covered it, and a copy killed in the middle of its resync loses nothing.
#
# 3 nodes on loopback, a 512 MiB 3-replica volume attached on n1.
#  1. n3 is killed; fio writes 256 MiB (1M blocks, crc32c verify headers)
#     through n1 and flushes: 256 dirty regions for n3.
#  2. n3 returns with every I/O-level fdatasync failing (--io-fault
#     fdatasync:1+:fail=EIO; the full fsyncs that mark its store's dirty
#     regions before a first write succeed): each resync attempt copies
#     regions and then fails at its first batch flush.  After two failed attempts n3 is still not in
#     sync and its dirty bytes are still all 256 MiB: no region was cleared
#     for a copy that was written but never flushed.  (Clearing a region when
#     its write completes, before the flush, fails here.)
#  3. n3 restarts with slow writes (write:1+:delay=200) and is killed with
#     SIGKILL after some batches were flushed (dirty bytes below 256 MiB) and
#     before it is in sync: its copy goes out of sync with what is left
#     still dirty (> 0).
#  4. n3 restarts without faults: in sync again, the last resync copied no
#     more than what was left dirty; fio re-reads and verifies every block it
#     wrote; scrub --no-repair finds no mismatch (cl_scrub_clean); after a
#     clean stop the three copies' files are byte-identical.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd fio

WRITTEN=$((256 << 20))

cl_start 3
ctsr volume create rv --size 512M --replicas 3 --failure-domain zone >/dev/null || fail "volume create"
ctsr volume attach rv --node n1 >/dev/null || fail "volume attach"
URI=$(cl_nbd_uri 1 rv)
base_args=${CL_ARGS[3]}

n3_state() { vstatus rv "[c['state'] for c in j['volume']['copies'] if c['node']=='n3'][0]"; }
flush_failures() { grep -c 'resync of copy [0-9]* (n3): flush:' "$(cl_dir 1)/tesserad.log" || true; }

# ---- 1. n3 away while 256 MiB are written
cl_kill 3
cl_wait_state rv n3 out-of-sync 15
FIO=(--name=rs --ioengine=nbd "--uri=$URI" --bs=1M --rw=write --size=256M --iodepth=8
	--verify=crc32c --verify_state_save=0)
# end_fsync: the host's FLUSH makes the writes durable on n1 and n2, so the
# coordinator no longer counts them as unflushed (a copy failing later would
# get every unflushed region marked again, hiding what the resync cleared)
fio "${FIO[@]}" --do_verify=0 --end_fsync=1 --output="$CL_ROOT/fio1.txt" ||
	{ cat "$CL_ROOT/fio1.txt" >&2; fail "fio write"; }
assert_eq "$(cl_copy_dirty rv n3)" "$WRITTEN" "n3's dirty bytes after 256 MiB written while it was away"

# ---- 2. every flush of n3 fails: nothing may be cleared
CL_ARGS[3]="$base_args --io-fault fdatasync:1+:fail=EIO"
cl_start_node 3
for (( i=0; i<300; i++ )); do
	[ "$(flush_failures)" -ge 2 ] && break
	sleep 0.1
done
[ "$(flush_failures)" -ge 2 ] || fail "no two failed resync flushes of n3 in n1's log after 30 s"
copied_faulty=$(vstatus rv 'j["resync_bytes_copied"]')
log "n3 with failing fsyncs: $(flush_failures) resync flushes failed, $copied_faulty bytes copied in vain"
[ "$copied_faulty" -gt 0 ] || fail "the failed attempts copied nothing: the flush was not reached"
st=$(n3_state)
[ "$st" != in-sync ] || fail "n3 in sync although none of its flushes succeeded"
assert_eq "$(cl_copy_dirty rv n3)" "$WRITTEN" "n3's dirty bytes after its resync flushes failed"
cl_kill 3
cl_wait_state rv n3 out-of-sync 15
assert_eq "$(cl_copy_dirty rv n3)" "$WRITTEN" "n3's dirty bytes after it was killed"

# ---- 3. killed in the middle of a (slowed) resync
CL_ARGS[3]="$base_args --io-fault write:1+:delay=200"
cl_start_node 3
left=$WRITTEN
for (( i=0; i<600; i++ )); do
	left=$(cl_copy_dirty rv n3)
	[ "$left" -lt "$WRITTEN" ] && break
	sleep 0.05
done
[ "$left" -lt "$WRITTEN" ] || fail "no batch of n3's resync flushed after 30 s"
[ "$(n3_state)" != in-sync ] || fail "n3 in sync before it could be killed mid-resync (slow writes too fast?)"
cl_kill 3
cl_wait_state rv n3 out-of-sync 15
left=$(cl_copy_dirty rv n3)
log "n3 killed mid-resync: $left of $WRITTEN bytes still dirty"
[ "$left" -gt 0 ] && [ "$left" -lt "$WRITTEN" ] ||
	fail "n3 killed mid-resync: $left dirty bytes, want some but not all of $WRITTEN"

# ---- 4. back without faults: in sync, every block there, copies identical
CL_ARGS[3]=$base_args
copied_before=$(vstatus rv 'j["resync_bytes_copied"]')
cl_start_node 3
cl_wait_synced rv 120
moved=$(( $(vstatus rv 'j["resync_bytes_copied"]') - copied_before ))
log "last resync of n3 copied $moved bytes ($left were dirty)"
[ "$moved" -gt 0 ] && [ "$moved" -le "$left" ] ||
	fail "last resync of n3 copied $moved bytes, want 1..$left (what was left dirty)"
assert_eq "$(cl_copy_dirty rv n3)" 0 "n3's dirty bytes in sync"
fio "${FIO[@]}" --verify_only --output="$CL_ROOT/fio2.txt" ||
	{ cat "$CL_ROOT/fio2.txt" >&2; fail "the data written while n3 was away does not verify"; }
cl_scrub_clean rv "after n3's last resync"
ctsr volume detach rv >/dev/null || fail "detach"
cl_stop_all
cl_assert_copies_identical rv 1 2 3
log "PASS"
