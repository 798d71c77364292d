#!/usr/bin/env bash
# `tessera snapshot delete VOL SNAP` when some copies already lack SNAP (a
# delete that went through on some copies only before: refused -EBUSY on
# one, cut short): it succeeds when at least one copy had it and every copy
# that had it now lacks it; "not found" (exit 1, naming the volume and the
# snapshot) only when no copy had it.  Before (session 15), a detached
# delete failed on the first copy answering -ENOENT ("node n1: snapshot
# 'v@s1' not found", exit 1) although it removed the snapshot from the
# others, and an attached mirror's delete answered "not found" when fewer
# than min-replicas copies still had it (removing it there all the same).
#
# 3 nodes; mirror v (8 MiB, 3 replicas) and ec e (2+1, 16 KiB unit, 4 MiB).
# A copy is made to lack a snapshot with the internal local_copy delete sent
# to its node (admin_local_copy DIR snapshot-delete), as a partial delete
# leaves it.  For each volume, detached then attached on n1:
#  1. SNAP cut on every copy; n1's and n2's copies lose it (only n3 keeps
#     it); `snapshot delete` exits 0 and no catalogue holds it;
#  2. the same delete again: exit 1, "not found" naming VOL and SNAP;
#  3. attached: every copy still in sync after the delete (a copy that
#     lacked it is not put out of sync); the volume reads back as written.
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
ADMIN_LOCAL_COPY=$TSR_BUILD/tests/admin_local_copy # admin_local_copy.c
require_tessera "$ADMIN_LOCAL_COPY"
require_cmd qemu-io nbdcopy

cl_start 3

snaps_all() { # VOL SNAP: "n1:yes n2:no ..." whether each node's catalogue has VOL@SNAP
	local i out=
	for i in 1 2 3; do
		case " $(cl_snaps_of $i "$1") " in
		*" $2 "*) out+="n$i:yes " ;;
		*) out+="n$i:no " ;;
		esac
	done
	echo "${out% }"
}

# partial_delete VOL SNAP WHAT: SNAP cut through the cluster, removed from
# n1's and n2's copies alone, then deleted through the cluster: exit 0,
# gone everywhere; again: "not found"
partial_delete() {
	local vol=$1 snap=$2 what=$3 out rc
	ctsr snapshot create "$vol" "$snap" >/dev/null || fail "$what: snapshot create $vol $snap"
	assert_eq "$(snaps_all "$vol" "$snap")" "n1:yes n2:yes n3:yes" "$what: $vol@$snap cut"
	for n in 1 2; do
		out=$("$ADMIN_LOCAL_COPY" "$(cl_dir $n)" snapshot-delete "$vol" "$snap" 2>&1) ||
			fail "$what: local_copy delete of $vol@$snap on n$n: $out"
	done
	assert_eq "$(snaps_all "$vol" "$snap")" "n1:no n2:no n3:yes" "$what: $vol@$snap on n3 only"
	rc=0
	out=$(ctsr snapshot delete "$vol" "$snap" 2>&1) || rc=$?
	log "$what: snapshot delete $vol $snap with n1 and n2 lacking it: exit $rc: $out"
	[ "$rc" = 0 ] || fail "$what: snapshot delete $vol $snap (n3 had it): exit $rc: $out"
	assert_eq "$(snaps_all "$vol" "$snap")" "n1:no n2:no n3:no" "$what: $vol@$snap after the delete"
	rc=0
	out=$(ctsr snapshot delete "$vol" "$snap" 2>&1) || rc=$?
	log "$what: snapshot delete $vol $snap again: exit $rc: $out"
	[ "$rc" = 1 ] || fail "$what: delete of $vol@$snap that no copy has: exit $rc (want 1): $out"
	case "$out" in
	*"not found"*) ;;
	*) fail "$what: delete of $vol@$snap that no copy has does not say 'not found': $out" ;;
	esac
	case "$out" in
	*"$vol"*"$snap"* | *"$snap"*"$vol"*) ;;
	*) fail "$what: the 'not found' message does not name $vol and $snap: $out" ;;
	esac
}

make_tmpdir WORK
for vol in v e; do
	if [ "$vol" = v ]; then
		ctsr volume create v --size 8M --replicas 3 >/dev/null || fail "volume create v"
		size=8388608
	else
		ctsr volume create e --size 4M --ec 2+1 --stripe-unit 16K >/dev/null ||
			fail "volume create e"
		size=4194304
	fi
	cl_pattern "$WORK/$vol.img" "$size" 7
	ctsr volume attach "$vol" --node n1 >/dev/null || fail "attach $vol on n1"
	nbdcopy "$WORK/$vol.img" "$(cl_nbd_uri 1 "$vol")" || fail "write $vol"
	ctsr volume detach "$vol" >/dev/null || fail "detach $vol"

	partial_delete "$vol" s1 "$vol detached"

	ctsr volume attach "$vol" --node n1 >/dev/null || fail "attach $vol on n1 again"
	partial_delete "$vol" s2 "$vol attached on n1"
	assert_eq "$(vstatus "$vol" 'j["in_sync"]')" 3 "$vol attached: copies in sync after the delete"
	cl_assert_image 1 "$vol" "$WORK/$vol.img" "$vol attached, after the deletes"
	ctsr volume detach "$vol" >/dev/null || fail "detach $vol again"
done

cl_stop_all
log ok
