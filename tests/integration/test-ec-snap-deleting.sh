#!/usr/bin/env bash
# `snapshot list` of an erasure-coded volume shows a snapshot whose delete is
# pending on the answering node's chunk copy in state "deleting" (37bf044:
# ec_snapshot_read_local lists with tsr_store_snap_list_all when asked
# with_deleting), as a local or mirror volume's list does.
#
# 3 nodes (zones z1..z3); n2's data directory on a small ext4 of its own.
# A 2+1 volume of 8 MiB, 16 KiB unit: image A, snapshots s1 and s2, image B
# over all of it (every chunk copy's s2 then holds 4 MiB that s1 lacks);
# detached; n2's file system filled; `snapshot delete v s2` is accepted, but
# on n2 the merge of s2 into s1 cannot get blocks: n2's row stays deleting.
#  - the list answered by n2 (it holds an in-sync chunk copy): s1 ready, s2
#    deleting (table STATE column; --json under "deleting", no NBD URI);
#    before 37bf044 s2 was simply absent;
#  - space freed: n2's next list finishes the delete (logged "finished on a
#    retry") and shows s1 only;
#  - v attached again: v@s1 reads A, v reads B, scrub clean.
# Needs root and a loop device (skips without them).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/fullfs.sh"

require_tessera
require_cmd nbdcopy
fullfs_require

MiB=$(( 1024 * 1024 ))
SIZE=$(( 8 * MiB ))

cl_start 3
# n2 again, its data directory moved onto a file system of its own
cl_stop 2
mv "$(cl_dir 2)" "$CL_ROOT/n2.first"
fullfs_mount MNT 64M "$(cl_dir 2)"
cp -a "$CL_ROOT/n2.first/." "$MNT/" || fail "copy n2's data directory"
cl_start_node 2
cl_wait_nodes_alive 3
log "n2's data directory on $FULLFS_LOOP ($(df -h --output=size,avail "$MNT" | tail -n1 | xargs))"

ctsr volume create v --size 8M --ec 2+1 --stripe-unit 16K --failure-domain zone >/dev/null ||
	fail "create"
ctsr volume attach v --node n1 >/dev/null || fail "attach"
cl_pattern "$CL_ROOT/A" "$SIZE" 1
cl_pattern "$CL_ROOT/B" "$SIZE" 2
nbdcopy "$CL_ROOT/A" "$(cl_nbd_uri 1 v)" || fail "write A"
ctsr snapshot create v s1 >/dev/null || fail "snapshot create s1"
ctsr snapshot create v s2 >/dev/null || fail "snapshot create s2"
nbdcopy "$CL_ROOT/B" "$(cl_nbd_uri 1 v)" || fail "write B"
ctsr volume detach v >/dev/null || fail "detach"

fill_fs "$MNT/ballast"
out=$(ctsr snapshot delete v s2 2>&1) ||
	fail "snapshot delete v s2 with n2's disk full: want accepted, got: $out"
wait_log 2 "s2 .*accepted, its merge did not finish \(No space left on device\)" 10

# the list answered by n2
ctsr_via 2 snapshot list v >"$CL_ROOT/list.out" || fail "snapshot list v through n2"
grep -qE "^s2 +deleting " "$CL_ROOT/list.out" ||
	{ cat "$CL_ROOT/list.out" >&2; fail "s2 not listed as deleting through n2"; }
grep -qE "^s1 +ready " "$CL_ROOT/list.out" ||
	{ cat "$CL_ROOT/list.out" >&2; fail "s1 not listed as ready through n2"; }
assert_eq "$(ctsr_via 2 --json snapshot list v | json_get '[[s["name"] for s in j["snapshots"]], [(s["name"], s["state"], len(s["nbd_uris"])) for s in j["deleting"]]]')" \
	'[["s1"], [["s2", "deleting", 0]]]' "snapshot list --json through n2, s2's merge pending there"
OLD_S2=$(ctsr_via 2 --json snapshot list v | json_get '[s["uuid"] for s in j["deleting"]][0]')
log "snapshot list through n2: s1 ready, s2 deleting ($OLD_S2)"

# space back: the next list finishes it
rm -f "$MNT/ballast"
sync
assert_eq "$(ctsr_via 2 --json snapshot list v | json_get '[[s["name"] for s in j["snapshots"]], j["deleting"]]')" \
	'[["s1"], []]' "snapshot list --json through n2 once space is back"
wait_log 2 "the delete of s2 \($OLD_S2\) finished on a retry" 5
for i in 1 3; do
	assert_eq "$(ctsr_via "$i" --json snapshot list v | json_get '[[s["name"] for s in j["snapshots"]], j["deleting"]]')" \
		'[["s1"], []]' "snapshot list --json through n$i"
done

cl_attach_retry v n1
cl_wait_synced v 60
cl_assert_image 1 v@s1 "$CL_ROOT/A" "s1 after s2's delete finished"
cl_assert_image 1 v "$CL_ROOT/B" "head"
cl_scrub_clean v
cl_stop_all
log "ok"
