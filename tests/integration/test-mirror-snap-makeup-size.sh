#!/usr/bin/env bash
# A snapshot made up on a new copy (replace-replica) after the volume grew
# online keeps the size it was cut with (session-13 review, finding 5): the
# make-up's cut gives the snapshot's size (tsr_store_snap_create_sized, over
# the peer SNAP op's size field), not the volume's current one.
#  4 nodes; v 8 MiB, 3 replicas, written; s1 cut; v grown online to 16 MiB and
#  written across (so the head differs from s1 below 8 MiB and past it); one
#  copy replaced onto the fourth node; synced.  Asserted: v@s1 is 8 MiB in the
#  catalogue of every copy, reads back (NBD on each copy's node) as the 8 MiB
#  written before the cut, and a scrub (heads and snapshots) is clean.
# Before the fix the new copy's v@s1 was 16 MiB (the grown size).
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
require_tessera
require_cmd nbdcopy
cl_start 4
IMG=$CL_ROOT/img
cl_pattern "$IMG" $((8 << 20)) 5
want=$(sha256sum <"$IMG" | cut -d' ' -f1)
ctsr volume create v --size 8M --replicas 3 >/dev/null || fail "create v"
ctsr volume attach v --node n1 >/dev/null || fail "attach v"
nbdcopy "$IMG" "$(cl_nbd_uri 1 v)" || fail "write v"
ctsr snapshot create v s1 >/dev/null || fail "snapshot s1"
ctsr volume resize v --size 16M >/dev/null || fail "online resize to 16M"
cl_pattern "$CL_ROOT/img2" $((16 << 20)) 6
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
	i=${n#n}
	s=$("$PY" - "$(cl_dir "$i")" <<'PYEOF'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}/store.db?mode=ro", uri=True)
r = db.execute("select s.size from snapshots s join volumes v on s.vol_uuid = v.uuid where v.name='v' and s.name='s1' and (s.flags & 15) = 0").fetchone()
print(r[0] if r else "-")
PYEOF
)
	assert_eq "$s" $((8 << 20)) "v@s1's size in $n's catalogue"
	got=$(cl_image_sha "$i" v@s1) || fail "cannot read v@s1 on $n"
	assert_eq "$got" "$want" "sha256 of v@s1 read on $n"
done
log "v@s1: 8 MiB with the bytes cut on every copy ($copies)"
assert_eq "$(cl_image_sha 1 v)" "$(sha256sum <"$CL_ROOT/img2" | cut -d' ' -f1)" "sha256 of v"
cl_scrub_clean v "after the replace"
cl_stop_all
