#!/usr/bin/env bash
# Below --min-replicas, writes wait and then fail with EIO: never silently
# acknowledged on fewer copies (DESIGN.md invariant 1).
#
# 3 nodes, a 3-replica volume with min-replicas 2, attached on n1,
# --write-wait 6000 (ms writes wait for a copy to come back).  The nodes run
# on the libaio backend (--io libaio): the other cluster tests use io_uring,
# so the mirror, peer and bitmap paths are exercised on both.
#  1. n3 killed: writes still succeed (2 in sync), reads too.
#  2. n2 killed as well: a write fails with an I/O error after the wait.
#  3. n2 restarts within a write's wait: the waiting write succeeds.
#  4. n3 restarts: all copies in sync again; copies identical after a stop.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd qemu-io

cl_start 3 --write-wait 6000 --io libaio
ctsr volume create mr --size 64M --replicas 3 --min-replicas 2 >/dev/null || fail "volume create"
ctsr volume attach mr --node n1 >/dev/null || fail "attach"
qio() { cl_qemu_io 1 mr "$@"; }

qio "write -P 0x11 0 1M" >/dev/null || fail "first write"
cl_kill 3
qio "write -P 0x22 0 1M" >/dev/null || fail "write with 2 of 3 copies in sync"
qio "read -P 0x22 0 1M" >/dev/null || fail "read back with 2 of 3"
cl_wait_state mr n3 out-of-sync 10

cl_kill 2
t0=$(date +%s.%N)
out=$(qio "write -P 0x33 0 1M" 2>&1)
t1=$(date +%s.%N)
printf '%s' "$out" | grepq -iE "error|failed" || fail "write with 1 of 3 copies succeeded: $out"
waited=$("$PY" -c "print(round($t1 - $t0, 1))")
log "write below min-replicas failed after ${waited}s: $(printf '%s' "$out" | head -1)"
# (the failed range's content is undefined, as after any failed write; the
# volume still serves reads from its in-sync copy)
qio "read 0 1M" >/dev/null || fail "read after the refused write"

# n2 returns while a write waits: that write succeeds
qio "write -P 0x44 1M 1M" >"$CL_ROOT/w44.out" 2>&1 &
wpid=$!
track_pid "$wpid"
sleep 0.2
cl_start_node 2
reap "$wpid" || { cat "$CL_ROOT/w44.out" >&2; fail "write did not succeed once n2 came back"; }
grep -qiE "error|failed" "$CL_ROOT/w44.out" && fail "write failed although n2 came back: $(cat "$CL_ROOT/w44.out")"
qio "read -P 0x44 1M 1M" >/dev/null || fail "read back after n2 returned"

cl_start_node 3
cl_wait_synced mr 60
ctsr volume detach mr >/dev/null || fail "detach"
cl_stop_all
cl_assert_copies_identical mr 1 2 3
