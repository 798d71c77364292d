#!/usr/bin/env bash
# The erasure-coded make-up (ec_snap.c) of a snapshot on a new chunk copy
# (replace-replica) after the volume grew online keeps the snapshot's chunk
# size (session-13 review, finding 5, the ec side): the cut gives the
# snapshot's size (whole stripes of its image), not the grown chunk volume's.
#  4 nodes; v 2+1, 16 KiB unit, 4 MiB, written; s1 cut; v grown online to
#  8 MiB and written across; one chunk copy replaced onto the fourth node;
#  synced.  Asserted: v@s1 has the same chunk size (2 MiB) in the catalogue of
#  every copy, v@s1 reads back the 4 MiB written before the cut (its export
#  4 MiB) and scrub is clean.
# Before the fix the new copy's v@s1 was 4 MiB (the grown chunk volume's).
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
require_tessera
require_cmd nbdcopy
cl_start 4
IMG=$CL_ROOT/img
cl_pattern "$IMG" $((4 << 20)) 7
want=$(sha256sum <"$IMG" | cut -d' ' -f1)
ctsr volume create v --size 4M --ec 2+1 --stripe-unit 16K >/dev/null || fail "create v"
ctsr volume attach v --node n1 >/dev/null || fail "attach v"
nbdcopy "$IMG" "$(cl_nbd_uri 1 v)" || fail "write v"
ctsr snapshot create v s1 >/dev/null || fail "snapshot s1"
ctsr volume resize v --size 8M >/dev/null || fail "online resize to 8M"
cl_pattern "$CL_ROOT/img2" $((8 << 20)) 8
nbdcopy "$CL_ROOT/img2" "$(cl_nbd_uri 1 v)" || fail "write v after the grow"
copies=$(cl_copy_nodes v)
OLD= NEW=
for n in n2 n3 n4; do case ",$copies," in *",$n,"*) [ -z "$OLD" ] && OLD=$n ;; *) NEW=$n ;; esac; done
[ -n "$OLD" ] && [ -n "$NEW" ] || fail "copies $copies: no old copy on n2-n4 or no free node"
ctsr volume replace-replica v --node "$OLD" --to "$NEW" >/dev/null || fail "replace $OLD -> $NEW"
cl_wait_synced v
copies=$(cl_copy_nodes v)
log "copies after the replace: $copies (replaced $OLD -> $NEW)"
for n in ${copies//,/ }; do
	s=$("$PY" - "$(cl_dir "${n#n}")" <<'PYEOF'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}/store.db?mode=ro", uri=True)
r = db.execute("select s.size from snapshots s join volumes v on s.vol_uuid = v.uuid where v.name='v' and s.name='s1' and (s.flags & 15) = 0").fetchone()
print(r[0] if r else "-")
PYEOF
)
	assert_eq "$s" $((2 << 20)) "v@s1's chunk size in $n's catalogue"
done
got=$(cl_image_sha 1 v@s1) || fail "cannot read v@s1"
assert_eq "$got" "$want" "sha256 of v@s1"
log "v@s1: 2 MiB chunks on every copy ($copies), its 4 MiB image reads back"
assert_eq "$(cl_image_sha 1 v)" "$(sha256sum <"$CL_ROOT/img2" | cut -d' ' -f1)" "sha256 of v"
cl_scrub_clean v "after the replace"
cl_stop_all
