#!/usr/bin/env bash
# Snapshots, clones and rollback of a replicated volume (DESIGN.md invariants
# 1-3 and 7, for snapshots): every copy of a snapshot is the same image.
#
# 3 nodes, a 16 MiB 3-replica volume attached on n1, crash_writer writing
# through n1 (every acknowledged write logged):
#  1. snapshots cut while it writes, asked of n1 (the coordinator) and of n2
#     and n3 (forwarded to it); each is read back through the read-only NBD
#     export VOL@SNAP of every node (that node's copy): byte-identical, and a
#     consistent cut of the write history; every node lists the same ones;
#     a fourth node (no copy) lists, shows and cuts them by asking others;
#  1b. a slow cut (the coordinator's home worker held while a hold file
#     exists, TSR_TEST_SNAP_HOLD_FILE): while a create asked of n1 and one
#     forwarded by n2 wait, n1 still answers status and node list at once;
#     released, each create's reply carries its snapshot (identical on every
#     copy); a delete waits the same way;
#  2. refused: a duplicate name, rollback of an attached volume (the message
#     says where it is attached and what to do);
#  3. a clone of a snapshot: its copies on the source's nodes, parent noted,
#     content = the snapshot; attached and written, the snapshot unchanged;
#     its copies read the same through each node; the source snapshot
#     deleted: the clone unchanged;
#  4. a clone of the volume's current content while it is written: a
#     consistent cut;
#  5. a copy node killed (SIGKILL), a snapshot cut while it is down, the node
#     restarted and resynced: its copy of that snapshot equals the others';
#  6. detached: a snapshot cut on every copy; rollback (of a small volume)
#     to a snapshot on every copy: the head read through each node equals
#     the snapshot.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera "$CRASH_WRITER"
require_cmd nbdcopy qemu-io

# tesserad's test hold of snapshot cuts (engine/vol/vol.c): absent, no effect
export TSR_TEST_SNAP_HOLD_FILE=/var/tmp/tessera-snaphold.$$
HOLD=$TSR_TEST_SNAP_HOLD_FILE
rm -f "$HOLD"
on_exit "rm -f $HOLD"
cl_start 3
# 16 MiB: every snapshot is read whole through every node (about 50 reads)
ctsr volume create db --size 16M --replicas 3 >/dev/null || fail "volume create"
ctsr volume attach db --node n1 >/dev/null || fail "volume attach"
WLOG=$CL_ROOT/acked.log
: >"$WLOG"

# copies VOL: its copies' node ids, sorted, space-separated
copies() { ctsr --json volume show "$1" | json_get '" ".join(sorted(c["node"] for c in j["copies"]))'; }
# snaps VIA VOL: the snapshot names node VIA lists, space-separated
snaps() { ctsr_via "$1" --json snapshot list "$2" | json_get '" ".join(s["name"] for s in j["snapshots"])'; }

# ---- 1. snapshots under load, through every node
"$CRASH_WRITER" write "$(cl_nbd_uri 1 db)" "$WLOG" --qd 8 --conns 2 --duration 6 --seed 7 \
	>"$CL_ROOT/writer1.out" 2>&1 &
wpid=$!
track_pid "$wpid"
sleep 0.5
for i in 1 2 3 4 5 6; do
	via=$(( (i - 1) % 3 + 1 ))
	ctsr_via "$via" snapshot create db "s$i" >/dev/null || fail "snapshot create db s$i via n$via"
	sleep 0.6
done
reap "$wpid" || { cat "$CL_ROOT/writer1.out" >&2; fail "writer under snapshots"; }
log "writer: $(tail -n1 "$CL_ROOT/writer1.out")"
for n in 1 2 3; do
	assert_eq "$(snaps "$n" db)" "s1 s2 s3 s4 s5 s6" "snapshots listed by n$n"
done
declare -A SHA=()
for s in s1 s2 s3 s4 s5 s6; do
	SHA[$s]=$(cl_assert_snap_identical db "$s" 1 2 3)
	out=$("$CRASH_WRITER" snapcheck "$(cl_nbd_uri 2 "db@$s")" "$WLOG" 2>&1) ||
		{ printf '%s\n' "$out" >&2; fail "db@$s is not a consistent cut"; }
done
[ "${SHA[s1]}" != "${SHA[s6]}" ] || fail "s1 and s6 are the same image: the writer did not run?"
changed=$(ctsr --json snapshot diff db s1 s6 | json_get 'j["changed_bytes"]')
(( changed > 0 )) || fail "diff s1..s6 is empty"
log "6 snapshots cut under load: identical on the 3 copies, consistent cuts; diff s1..s6 $changed bytes"

# a node holding no copy answers by asking one that does, and forwards a cut
# to the coordinator
CL_PORT[4]=$(free_port)
cl_start_node 4
CL_N=4
cl_wait_nodes_alive 4
assert_eq "$(snaps 4 db)" "s1 s2 s3 s4 s5 s6" "snapshots listed by n4 (no copy there)"
assert_eq "$(ctsr_via 4 --json volume show db | json_get '" ".join(s["name"] for s in j["snapshots"])')" \
	"s1 s2 s3 s4 s5 s6" "volume show's snapshots through n4"
assert_eq "$(ctsr_via 4 --json snapshot show db s4 | json_get 'j["snapshots"][0]["uuid"] if "snapshots" in j else j["uuid"]')" \
	"$(ctsr --json snapshot show db s4 | json_get 'j["snapshots"][0]["uuid"] if "snapshots" in j else j["uuid"]')" \
	"snapshot show through n4 and n1"
ctsr_via 4 snapshot create db via4 >/dev/null || fail "snapshot create through n4"
cl_assert_snap_identical db via4 1 2 3 >/dev/null
ctsr_via 4 snapshot delete db via4 >/dev/null || fail "snapshot delete through n4"
assert_eq "$(snaps 2 db)" "s1 s2 s3 s4 s5 s6" "snapshots after via4 came and went"

# ---- 1b. a slow cut does not block the coordinator's loop
# held_answers WHAT: n1 answers status and node list within 3 s while the
# hold file exists and every pid in $held_pids still waits
held_answers() {
	local t0 t1 p
	t0=$(date +%s%N)
	timeout 10 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
		status >/dev/null || fail "$1: n1 did not answer status while the cut waits"
	timeout 10 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
		--json node list >"$CL_ROOT/held-nodes.json" ||
		fail "$1: n1 did not answer node list while the cut waits"
	t1=$(date +%s%N)
	(( (t1 - t0) / 1000000 < 3000 )) ||
		fail "$1: status + node list took $(( (t1 - t0) / 1000000 )) ms while the cut waits"
	assert_eq "$(json_get 'len(j["nodes"])' <"$CL_ROOT/held-nodes.json")" 4 "$1: node list"
	[ -e "$HOLD" ] || fail "$1: the hold ended early"
	for p in $held_pids; do
		kill -0 "$p" 2>/dev/null || fail "$1: a request returned while its cut was held"
	done
	log "$1: n1 answered status and node list in $(( (t1 - t0) / 1000000 )) ms while the cut waited"
}
# snapname FILE: the name in a snapshot create's JSON reply
snapname() { json_get 'j["snapshots"][0]["name"] if "snapshots" in j else j["name"]' <"$1"; }
: >"$HOLD"
ctsr --json snapshot create db held1 >"$CL_ROOT/held1.json" 2>&1 &
p1=$!
track_pid "$p1"
ctsr_via 2 --json snapshot create db held2 >"$CL_ROOT/held2.json" 2>&1 &
p2=$!
track_pid "$p2"
held_pids="$p1 $p2"
sleep 1
held_answers "create held"
rm -f "$HOLD"
reap "$p1" || { cat "$CL_ROOT/held1.json" >&2; fail "snapshot create db held1 (held)"; }
reap "$p2" || { cat "$CL_ROOT/held2.json" >&2; fail "snapshot create db held2 (held, via n2)"; }
assert_eq "$(snapname "$CL_ROOT/held1.json")" held1 "the held create's reply (n1)"
assert_eq "$(snapname "$CL_ROOT/held2.json")" held2 "the held create's reply (via n2)"
grep -q "cluster: snapshot create 'db@held1': replied after" "$(cl_dir 1)/tesserad.log" ||
	fail "n1 did not answer the create of held1 after its cut (no 'replied after' line)"
cl_assert_snap_identical db held1 1 2 3 >/dev/null
cl_assert_snap_identical db held2 1 2 3 >/dev/null
# the two creates were sent at once (one forwarded by n2): either may be cut first
got=$(snaps 3 db)
case $got in
"s1 s2 s3 s4 s5 s6 held1 held2" | "s1 s2 s3 s4 s5 s6 held2 held1") ;;
*) fail "snapshots after the held creates: got '$got', want s1..s6 then held1 and held2 in either order" ;;
esac
: >"$HOLD"
ctsr snapshot delete db held1 >"$CL_ROOT/held-del.out" 2>&1 &
p1=$!
track_pid "$p1"
held_pids=$p1
sleep 1
held_answers "delete held"
rm -f "$HOLD"
reap "$p1" || { cat "$CL_ROOT/held-del.out" >&2; fail "snapshot delete db held1 (held)"; }
ctsr_via 2 snapshot delete db held2 >/dev/null || fail "snapshot delete db held2"
assert_eq "$(snaps 3 db)" "s1 s2 s3 s4 s5 s6" "snapshots after the held deletes"

# ---- 2. refused requests change nothing
expect_fail 1 'already exists' ctsr snapshot create db s3
expect_fail 1 'not found' ctsr_via 2 snapshot create nosuchvol x
expect_fail 1 'not found' ctsr_via 3 snapshot delete db nosuchsnap
out=$(ctsr volume rollback db s1 2>&1) && fail "rollback of an attached volume accepted"
printf '%s' "$out" | grepq "attached on node n1; detach it first" ||
	fail "rollback refusal does not say where it is attached: $out"
assert_eq "$(snaps 3 db)" "s1 s2 s3 s4 s5 s6" "snapshots after refused requests"

# ---- 3. a clone of a snapshot
ctsr volume create c1 --from-snapshot db@s2 >/dev/null || fail "clone c1 of db@s2"
assert_eq "$(copies c1)" "$(copies db)" "the clone's copies sit on the source's nodes"
assert_eq "$(ctsr --json volume show c1 | json_get 'j["parent_volume"]')" db "c1's parent volume"
assert_eq "$(ctsr --json volume show c1 | json_get 'j["parent_snapshot"]')" s2 "c1's parent snapshot"
ctsr volume attach c1 --node n2 >/dev/null || fail "attach c1"
assert_eq "$(cl_image_sha 2 c1)" "${SHA[s2]}" "clone c1 = db@s2"
qemu-io -f raw -c 'write -P 0x5a 1M 2M' -c 'write -P 0xa5 10M 64k' "$(cl_nbd_uri 2 c1)" \
	>/dev/null || fail "write to the clone"
qemu-io -f raw -c 'read -P 0x5a 1M 2M' -c 'read -P 0xa5 10M 64k' "$(cl_nbd_uri 2 c1)" \
	>/dev/null || fail "the clone's writes do not read back"
c1sha=$(cl_image_sha 2 c1)
[ "$c1sha" != "${SHA[s2]}" ] || fail "writes to c1 did not change it"
assert_eq "$(cl_assert_snap_identical db s2 1 2 3)" "${SHA[s2]}" "db@s2 after writes to its clone"
ctsr snapshot delete db s2 >/dev/null || fail "delete the clone's source snapshot"
assert_eq "$(snaps 1 db)" "s1 s3 s4 s5 s6" "snapshots after deleting s2"
ctsr volume detach c1 >/dev/null || fail "detach c1"
for n in 1 2 3; do # each attach reads its node's local copy first
	ctsr volume attach c1 --node "n$n" >/dev/null || fail "attach c1 on n$n"
	assert_eq "$(cl_image_sha "$n" c1)" "$c1sha" "clone c1 read through n$n (its copy)"
	ctsr volume detach c1 >/dev/null || fail "detach c1 from n$n"
done
log "clone of db@s2: on the source's nodes, = the snapshot, written independently, the same on every copy, unharmed by deleting s2"

# ---- 4. a clone of the current content, while it is written
"$CRASH_WRITER" write "$(cl_nbd_uri 1 db)" "$WLOG" --qd 8 --conns 2 --duration 4 \
	--seq-base 1000000000 --seed 8 >"$CL_ROOT/writer2.out" 2>&1 &
wpid=$!
track_pid "$wpid"
sleep 1.5
ctsr_via 3 volume create c2 --from-volume db >/dev/null || fail "clone c2 of db under load"
reap "$wpid" || { cat "$CL_ROOT/writer2.out" >&2; fail "writer during the clone"; }
assert_eq "$(ctsr --json volume show c2 | json_get 'j["parent_volume"]')" db "c2's parent"
assert_eq "$(snaps 1 db)" "s1 s3 s4 s5 s6" "the clone's temporary snapshot is gone"
ctsr volume attach c2 --node n3 >/dev/null || fail "attach c2"
out=$("$CRASH_WRITER" snapcheck "$(cl_nbd_uri 3 c2)" "$WLOG" 2>&1) ||
	{ printf '%s\n' "$out" >&2; fail "clone c2 (cut under load) is not a consistent cut"; }
log "clone of db's current content under load: ${out##*$'\n'}"
ctsr volume detach c2 >/dev/null || fail "detach c2"

# ---- 5. a copy away while a snapshot is cut
cl_kill 3
"$CRASH_WRITER" write "$(cl_nbd_uri 1 db)" "$WLOG" --qd 8 --conns 2 --duration 2 \
	--seq-base 2000000000 --seed 9 >"$CL_ROOT/writer3.out" 2>&1 ||
	{ cat "$CL_ROOT/writer3.out" >&2; fail "writer with n3 down"; }
ctsr_via 2 snapshot create db away >/dev/null || fail "snapshot create while n3 is down"
"$CRASH_WRITER" write "$(cl_nbd_uri 1 db)" "$WLOG" --qd 8 --conns 2 --duration 2 \
	--seq-base 3000000000 --seed 10 >"$CL_ROOT/writer4.out" 2>&1 ||
	{ cat "$CL_ROOT/writer4.out" >&2; fail "writer after the cut"; }
cl_start_node 3
cl_wait_synced db 120
SHA[away]=$(cl_assert_snap_identical db away 1 2 3)
out=$("$CRASH_WRITER" snapcheck "$(cl_nbd_uri 3 "db@away")" "$WLOG" 2>&1) ||
	{ printf '%s\n' "$out" >&2; fail "db@away on n3 is not a consistent cut"; }
for s in s1 s3 s6; do
	assert_eq "$(cl_assert_snap_identical db "$s" 1 2 3)" "${SHA[$s]}" "db@$s after n3's return"
done
assert_eq "$(snaps 3 db)" "s1 s3 s4 s5 s6 away" "snapshots listed by the returned n3"
log "n3 killed, snapshot 'away' cut meanwhile; back and resynced: its copy of it equals the others'"

# ---- 6. detached: snapshot, rollback
out=$("$CRASH_WRITER" verify "$(cl_nbd_uri 1 db)" "$WLOG" 2>&1) ||
	{ printf '%s\n' "$out" >&2; fail "acknowledged writes missing from db"; }
ctsr volume detach db >/dev/null || fail "detach db"
ctsr_via 2 snapshot create db cold >/dev/null || fail "snapshot of the detached volume"
cold=$(cl_assert_snap_identical db cold 1 2 3)
assert_eq "$(cl_assert_snap_identical db cold 1 2 3)" "$cold" "db@cold, read again"
# rollback on a small volume of its own (the store's rollback time grows with the volume)
ctsr volume create rb --size 8M --replicas 3 >/dev/null || fail "volume create rb"
ctsr volume attach rb --node n2 >/dev/null || fail "attach rb"
qemu-io -f raw -c 'write -P 0x11 0 8M' "$(cl_nbd_uri 2 rb)" >/dev/null || fail "write rb"
ctsr snapshot create rb base >/dev/null || fail "snapshot rb base"
qemu-io -f raw -c 'write -P 0x22 1M 3M' -c 'write -z 6M 1M' "$(cl_nbd_uri 2 rb)" \
	>/dev/null || fail "overwrite rb"
ctsr volume detach rb >/dev/null || fail "detach rb"
ctsr_via 3 volume rollback rb base >/dev/null || fail "rollback rb to base"
rbnodes=$(copies rb | tr -d n) # placement may have used n4
for n in $rbnodes; do
	ctsr volume attach rb --node "n$n" >/dev/null || fail "attach rb on n$n"
	out=$(qemu-io -f raw -c 'read -P 0x11 0 8M' "$(cl_nbd_uri "$n" rb)" 2>&1) &&
		! printf '%s' "$out" | grepq -i 'fail' ||
		fail "rb after the rollback, read through n$n (its copy), is not the snapshot: $out"
	ctsr volume detach rb >/dev/null || fail "detach rb from n$n"
done
cl_stop_all
cl_assert_copies_identical db 1 2 3
# shellcheck disable=SC2086
cl_assert_copies_identical rb $rbnodes
log "detached: snapshot cut on every copy; rollback on every copy"
