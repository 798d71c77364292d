#!/usr/bin/env bash
# Opening VOL@NAME of an erasure-coded volume on its coordinator: the export
# exists exactly when the snapshot can be read from the chunk copies.
#
# 3 nodes (zones z1..z3); a 2+1 volume of 4 MiB, 16 KiB unit, attached on n1.
#  1. image A, snapshot s: v@s reads A; v@nosuch is refused at the handshake
#     (NBD_REP_ERR_UNKNOWN, "unknown export", which libnbd shows as "No such
#     file or directory", as for a mirror or local volume's unknown snapshot)
#     by nbdinfo and nbdcopy (before: nbdinfo printed the export and every
#     read failed with EIO).  A CREATE of the taken name s and a DELETE of
#     nosuch fail and leave no missed operation noted; v@s still reads A.
#  2. n3 killed; image B; snapshot t (cut on n1 and n2 only); image C; v
#     detached from n1; n3 restarted, v attached on n3 (a new coordinator: the
#     file of n3's missed operations is on n1; n1 recorded 'c t' for n3's copy
#     in vol/v before answering the create, so n3 takes it from there): t is
#     made up on n3's own chunk copy (its catalogue lists s t; before: s only,
#     t served decoded from n1 and n2); v@t through n3 reads B; v@s (every
#     copy) reads A; v reads C; v@nosuch still refused.
#  3. n2 killed: v@t reads B from n1's chunks and n3's made-up ones (each
#     stripe needs n3's); v@s reads A; v@nosuch still refused.  (The refusal
#     of a snapshot fewer than k reachable copies hold, which this part showed
#     when n3 never got t, is ec_snapread_ut test_snapshot_read's.)
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy nbdinfo

MiB=$(( 1024 * 1024 ))
NOSUCH="No such file or directory for export"
SIZE=$(( 4 * MiB ))

write_image() {  # NODE FILE
	nbdcopy "$2" "$(cl_nbd_uri "$1" v)" || fail "write $2 through n$1"
}

# refused NODE EXPORT PATTERN WHAT: nbdinfo and nbdcopy both fail on EXPORT
# through NODE, nbdinfo's message matching PATTERN (ERE).
refused() {
	local out
	if out=$(nbdinfo "$(cl_nbd_uri "$1" "$2")" 2>&1); then
		fail "$4: nbdinfo opened $2 through n$1: $(echo "$out" | tr '\n' ' ' | cut -c1-200)"
	fi
	echo "$out" | grepq -E -- "$3" ||
		fail "$4: nbdinfo $2 through n$1 refused without /$3/: $out"
	if nbdcopy "$(cl_nbd_uri "$1" "$2")" - >/dev/null 2>&1; then
		fail "$4: nbdcopy read $2 through n$1"
	fi
	log "$4: $2 refused through n$1 ($(echo "$out" | grep -oE -- "$3" | head -1))"
}

# snap_errors: the count of "has no snapshot" ERROR lines in each node's log.
snap_errors() {
	local i out=
	for i in 1 2 3; do
		out+="$(grep -c 'ERROR .*has no snapshot' "$(cl_dir "$i")/tesserad.log") "
	done
	echo "$out"
}

cl_start 3
ctsr volume create v --size 4M --ec 2+1 --stripe-unit 16K --failure-domain zone >/dev/null ||
	fail "create"
ctsr volume attach v --node n1 >/dev/null || fail "attach"

# ---- 1. a name no copy has ------------------------------------------------------
cl_pattern "$CL_ROOT/A" "$SIZE" 1
cl_pattern "$CL_ROOT/B" "$SIZE" 2
cl_pattern "$CL_ROOT/C" "$SIZE" 3
write_image 1 "$CL_ROOT/A"
ctsr snapshot create v s >/dev/null || fail "snapshot create s"
cl_assert_image 1 v@s "$CL_ROOT/A" "s"
# each copy asked about v@nosuch answers no: a normal answer, not an ERROR in
# its log (before: "snapshot open: volume v has no snapshot nosuch" at ERROR
# on n1, n2 and n3 for each open)
errs_before=$(snap_errors)
refused 1 v@nosuch "$NOSUCH" "a name no copy has"
assert_eq "$(snap_errors)" "$errs_before" "ERROR lines 'has no snapshot' after probes of v@nosuch (n1 n2 n3)"
# a CREATE of a name taken and a DELETE of a name no copy has both fail and
# change nothing: no copy noted as having missed them (before: every copy
# noted, so none was a source for snapshot reads any more and v@s failed)
if out=$(ctsr snapshot create v s 2>&1); then fail "snapshot create v s twice: accepted"; fi
if out=$(ctsr snapshot delete v nosuch 2>&1); then fail "snapshot delete v nosuch: accepted"; fi
left=$(find "$(cl_dir 1)" -name 'v.*.snaps')
[ -z "$left" ] || fail "missed snapshot operations noted for a refused create/delete: $left"
cl_assert_image 1 v@s "$CL_ROOT/A" "s after a refused create and delete"

# ---- 2. the coordinator's own chunk lacks the snapshot -------------------------
cl_kill 3
cl_wait_state v n3 out-of-sync 30
write_image 1 "$CL_ROOT/B"
ctsr snapshot create v t >/dev/null || fail "snapshot create t with n3 away"
write_image 1 "$CL_ROOT/C"
ctsr volume detach v >/dev/null || fail "detach from n1"
cl_start_node 3
cl_attach_retry v n3
cl_wait_synced v 120
# what n3 missed under n1 comes from vol/v's record: t made up on n3's copy
assert_eq "$(cl_snaps_of 3 v)" "s t" "n3's chunk copy's snapshots (t made up)"
assert_eq "$(cl_snaps_of 1 v)" "s t" "n1's chunk copy's snapshots"
assert_eq "$(cl_snaps_of 2 v)" "s t" "n2's chunk copy's snapshots"
wait_log 3 "copy [0-9] \\(n3\\): 1 snapshot operations it missed, as recorded" 5
wait_log 3 "copy [0-9] \\(n3\\): snapshot t made up there" 5
cl_assert_image 3 v@t "$CL_ROOT/B" "t through n3 (made up on its own chunk)"
cl_assert_image 3 v@s "$CL_ROOT/A" "s through n3"
cl_assert_image 3 v "$CL_ROOT/C" "head through n3"
refused 3 v@nosuch "$NOSUCH" "a name no copy has, n3 coordinator"

# ---- 3. n3's made-up chunks read -------------------------------------------------
cl_kill 2
cl_wait_state v n2 out-of-sync 30
cl_assert_image 3 v@t "$CL_ROOT/B" "t through n3, n2 down (n1's and n3's made-up chunks)"
refused 3 v@nosuch "$NOSUCH" "a name no copy has, n2 down"
cl_assert_image 3 v@s "$CL_ROOT/A" "s through n3, n2 down"
cl_stop_all
log "ok"
