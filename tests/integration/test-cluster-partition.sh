#!/usr/bin/env bash
# Network partition (network namespaces, veth, a bridge; root): the
# coordinator is cut off from every other node while a writer runs.
#
# 3 nodes, each in its own namespace; n1 holds the metadata store; volume
# attached on n2 (the writer reaches n2's NBD unix socket from the root
# namespace, so the client side stays connected).  n2's link goes down:
#  - the isolated coordinator cannot renew its lease nor reach a copy: it
#    must stop acknowledging writes (the writer sees an error and stops) and
#    log that it is fenced;
#  - the majority side (n1, n3) re-attaches the volume on n3 once the lease
#    has lapsed; every write acknowledged before (by the old side) reads back
#    through n3 (history checker), nothing acknowledged was lost or forked;
#  - the link comes back: n2 learns it was fenced, its copy is resynced, and
#    after a clean stop every copy is byte-identical.
. "$(dirname "$0")/functions.sh"
CL_NETNS=1
. "$(dirname "$0")/cluster.sh"

require_root
require_tessera "$CRASH_WRITER"

cl_start 3
# 64 MiB: both verifies read the whole volume, the end compares the copies whole
ctsr volume create part --size 64M --replicas 3 >/dev/null || fail "volume create"
ctsr volume attach part --node n2 >/dev/null || fail "attach on n2"
WLOG=$CL_ROOT/acked.log
: >"$WLOG"

"$CRASH_WRITER" write "$(cl_nbd_uri 2 part)" "$WLOG" --qd 8 --conns 2 --seq-base 1000000000 \
	--seed 11 >"$CL_ROOT/writer.out" 2>&1 &
wpid=$!
track_pid "$wpid"
wait_acked "$WLOG" 5000 "$wpid"
cl_cut 2
# The old side must stop acknowledging: the writer gets an error and exits 3.
for (( i=0; i<300; i++ )); do
	kill -0 "$wpid" 2>/dev/null || break
	sleep 0.1
done
kill -0 "$wpid" 2>/dev/null && fail "the isolated coordinator still acknowledges writes after 30 s"
reap "$wpid" && wrc=0 || wrc=$?
[ "$wrc" = 3 ] || { cat "$CL_ROOT/writer.out" >&2; fail "crash_writer exited $wrc, want 3"; }
log "old side: $(grep -o '[0-9]* acknowledged' "$CL_ROOT/writer.out") before it stopped"
wait_log 2 "fenced|lease lost" 30

# The majority side takes over.
for (( i=0; i<100; i++ )); do
	out=$(ctsr_via 3 volume attach part --node n3 2>&1) && break
	sleep 0.3
done
ctsr_via 3 volume status part >/dev/null || fail "attach on n3 never succeeded: $out"
out=$("$CRASH_WRITER" verify "$(cl_nbd_uri 3 part)" "$WLOG" 2>&1) ||
	{ printf '%s\n' "$out" >&2; fail "a write acknowledged by the old coordinator is missing"; }
log "verify through n3: ${out##*$'\n'}"
# The new side accepts writes (new acknowledgments verified too).
"$CRASH_WRITER" write "$(cl_nbd_uri 3 part)" "$WLOG" --qd 8 --conns 1 --seq-base 2000000000 \
	--seed 12 >"$CL_ROOT/writer2.out" 2>&1 &
wpid=$!
track_pid "$wpid"
wait_acked "$WLOG" 5000 "$wpid"

cl_heal 2
# The old coordinator's NBD export refuses writes from now on: the writer
# stops at its first failed write (it always exits non-zero); what counts is
# that it logged no acknowledgment.
"$CRASH_WRITER" write "$(cl_nbd_uri 2 part)" "$CL_ROOT/stale.log" --qd 1 --conns 1 \
	--seq-base 3000000000 --seed 13 >"$CL_ROOT/stale.out" 2>&1 || true
[ -s "$CL_ROOT/stale.log" ] && fail "the fenced coordinator acknowledged $(wc -l <"$CL_ROOT/stale.log") writes"
kill -TERM "$wpid" 2>/dev/null
reap "$wpid" || true
out=$("$CRASH_WRITER" verify "$(cl_nbd_uri 3 part)" "$WLOG" 2>&1) ||
	{ printf '%s\n' "$out" >&2; fail "acknowledged writes missing after the partition healed"; }
cl_wait_synced part 120
ctsr_via 3 volume detach part >/dev/null || fail "detach"
cl_stop_all
cl_assert_copies_identical part 1 2 3
