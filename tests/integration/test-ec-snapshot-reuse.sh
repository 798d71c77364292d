#!/usr/bin/env bash
# A snapshot name reused while a chunk node was away (issues 4 and 5): the
# returning copy must not serve its old snapshot of that name as the new one.
#
# 3 nodes (zones z1..z3); a 2+1 volume of 4 MiB, 16 KiB unit, attached on n1.
# A snapshot's reads take each data chunk from its own copy's chunk-volume
# snapshot first, so a copy holding a stale snapshot of the name would return
# old bytes for every stripe whose data chunk it holds (2 of 3 here).
#  1. image A, snapshot s; n3 killed; s deleted; image B; s created again
#     (cut on n1 and n2 only); image D over it; n3 restarted and resynced:
#     the coordinator replays what n3 missed (its file of missed snapshot
#     operations): n3's stale s deleted, then s made up there (its chunks of
#     s decoded from n1's and n2's into its dirty regions, cut), then the
#     resync: v@s reads B and v reads D; every node lists s; with n2 killed
#     v@s still reads B (n3's made-up chunks and n1's); n2 back; s deleted
#     (every copy stays in sync, every list empty) and cut a third time.
#  2. the journal out of reach: s2 cut on every copy; n3 killed; s2 deleted;
#     image E, s3 cut (n1, n2); v detached from n1 and attached on n2 (a new
#     coordinator, without n1's file of n3's missed operations: it takes them
#     from vol/v, where n1 recorded them before answering); n3 restarted and
#     resynced: its old s2 deleted, s3 made up (its catalogue lists s s3;
#     before: s s2, no s3); v@s3 reads E; image C; s2 created again (no stale
#     one on n3 to drop): v@s2 reads C (n3's data chunks from its own s2);
#     scrub finds nothing.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy nbdinfo

MiB=$(( 1024 * 1024 ))
SIZE=$(( 4 * MiB ))

write_image() {  # NODE FILE
	nbdcopy "$2" "$(cl_nbd_uri "$1" v)" || fail "write $2 through n$1"
}

cl_start 3
ctsr volume create v --size 4M --ec 2+1 --stripe-unit 16K --failure-domain zone >/dev/null ||
	fail "create"
ctsr volume attach v --node n1 >/dev/null || fail "attach"

# ---- 1. the name reused while n3 was away --------------------------------------
cl_pattern "$CL_ROOT/A" "$SIZE" 1
cl_pattern "$CL_ROOT/B" "$SIZE" 2
cl_pattern "$CL_ROOT/C" "$SIZE" 3
cl_pattern "$CL_ROOT/D" "$SIZE" 4
cl_pattern "$CL_ROOT/E" "$SIZE" 5
write_image 1 "$CL_ROOT/A"
ctsr snapshot create v s >/dev/null || fail "snapshot create s"
cl_assert_image 1 v@s "$CL_ROOT/A" "s before"

cl_kill 3
cl_wait_state v n3 out-of-sync 30
ctsr snapshot delete v s >/dev/null || fail "snapshot delete s with n3 away"
write_image 1 "$CL_ROOT/B"
ctsr snapshot create v s >/dev/null || fail "snapshot create s again with n3 away"
cl_assert_image 1 v@s "$CL_ROOT/B" "s again, n3 away"

write_image 1 "$CL_ROOT/D"

cl_start_node 3
cl_wait_synced v 120
wait_log 1 "copy [0-9] \(n3\): the snapshots of 2 operations it missed deleted there" 5
wait_log 1 "copy [0-9] \(n3\): snapshot s made up there" 5
left=$(find "$(cl_dir 1)" -name v.n3.snaps)
[ -z "$left" ] || fail "n3's missed snapshot operations still pending: $left"
cl_assert_image 1 v@s "$CL_ROOT/B" "s again, n3 back"
cl_assert_image 1 v "$CL_ROOT/D" "head, n3 back"
list_of() { ctsr_via "$1" --json snapshot list v | json_get '" ".join(s["name"] for s in j["snapshots"])'; }
for i in 1 2 3; do
	assert_eq "$(list_of "$i")" "s" "snapshot list v through n$i, n3 back"
done
cl_kill 2
cl_wait_state v n2 out-of-sync 30
cl_assert_image 1 v@s "$CL_ROOT/B" "s again, n2 down (n3's made-up chunks)"
cl_assert_image 1 v "$CL_ROOT/D" "head, n2 down"
cl_start_node 2
cl_wait_synced v 120
n3_failures() { grep -cE "copy [0-9] \(n3\) failed .*out of sync" "$(cl_dir 1)/tesserad.log"; }
before=$(n3_failures)
ctsr snapshot delete v s >/dev/null || fail "snapshot delete s"
assert_eq "$(n3_failures)" "$before" "n3's failures in n1's log, after deleting s"
assert_eq "$(vstatus v '",".join(c["state"] for c in j["volume"]["copies"])')" \
	"in-sync,in-sync,in-sync" "copy states after deleting s"
for i in 1 2 3; do
	assert_eq "$(list_of "$i")" "" "snapshot list v through n$i, after deleting s"
done
ctsr snapshot create v s >/dev/null || fail "snapshot create s (third time)"
cl_assert_image 1 v@s "$CL_ROOT/D" "s, third cut, all copies"

# ---- 2. the journal out of reach: a new coordinator ---------------------------
ctsr snapshot create v s2 >/dev/null || fail "snapshot create s2"
cl_kill 3
cl_wait_state v n3 out-of-sync 30
ctsr snapshot delete v s2 >/dev/null || fail "snapshot delete s2 with n3 away"
write_image 1 "$CL_ROOT/E"
ctsr snapshot create v s3 >/dev/null || fail "snapshot create s3 with n3 away"
ctsr volume detach v >/dev/null || fail "detach from n1"
cl_attach_retry v n2
cl_start_node 3
cl_wait_synced v 120
# what n3 missed under n1 comes from vol/v's record: its old s2 deleted, s3
# made up (before: n3 kept s2 and never got s3)
assert_eq "$(cl_snaps_of 3 v)" "s s3" "n3's chunk copy's snapshots under n2"
assert_eq "$(cl_snaps_of 1 v)" "s s3" "n1's chunk copy's snapshots"
wait_log 2 "copy [0-9] \(n3\): 2 snapshot operations it missed, as recorded" 5
wait_log 2 "copy [0-9] \(n3\): snapshot s3 made up there" 5
cl_assert_image 2 v@s3 "$CL_ROOT/E" "s3 through the new coordinator"
write_image 2 "$CL_ROOT/C"
ctsr snapshot create v s2 >/dev/null || fail "snapshot create s2 again"
cl_wait_synced v 120
if grep -qE "holds an old snapshot s2" "$(cl_dir 2)/tesserad.log"; then
	fail "n3 still held the old s2 when it was cut again"
fi
# n3 is a source again (IN_SYNC, nothing pending): its data chunks of v@s2
# (2 stripes in 3) are read from its own s2
cl_assert_image 2 v@s2 "$CL_ROOT/C" "s2 again"
cl_assert_image 2 v@s "$CL_ROOT/D" "s (third cut), through the new coordinator"
cl_scrub_clean v
cl_stop_all
log "ok"
