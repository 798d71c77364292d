#!/usr/bin/env bash
# Copies grown past the volume's record (a resize that stopped after its
# grow step: a failure before the record, or the loser of two resizes that
# crossed) made every snapshot cut on them larger than the volume, before
# session 14 (the coordinator now cuts at the layout's size:
# test-snap-cut-oversize-copies; a store may still hold such snapshots).
# A copy replaced afterwards is created at the record's size; its make-up
# must cut the snapshot at most at the volume's size (before 5a567cb: the
# sized CREATE was refused, -EINVAL, and the copy never got in sync), and a
# scrub compares snapshots up to the volume's size (nothing past it was ever
# writable).  Review 13b, finding 2.
# The case is built directly (session 14; it used to come from a race of two
# resizes and checked nothing when the race missed): v 8 MiB, 3 replicas,
# resized to 16 MiB; each copy then grown to 32 MiB alone by the internal
# local_copy VolumeResize (admin_local_copy volume-resize, a helper program
# built from admin_local_copy.c); attached, written, detached;
# s1 cut on each copy by the local_copy SnapshotCreate (each store cuts at
# its copy's 32 MiB, as the cut of such copies did); the case is asserted
# built (record 16 MiB, every copy and every v@s1 32 MiB) before the replace.
set -uo pipefail
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
ADMIN_LOCAL_COPY=$TSR_BUILD/tests/admin_local_copy # admin_local_copy.c
require_tessera "$ADMIN_LOCAL_COPY"
cl_start 4
M=$((1 << 20))
snap_size() { # NODE: the size of v@s1 in node NODE's catalogue ("-": none)
	"$PY" - "$(cl_dir "$1")" <<'PYEOF'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}/store.db?mode=ro", uri=True)
r = db.execute("select s.size from snapshots s join volumes v on s.vol_uuid = v.uuid where v.name='v' and s.name='s1' and (s.flags & 15) = 0").fetchone()
print(r[0] if r else "-")
PYEOF
}
v=v
ctsr volume create $v --size 8M --replicas 3 >/dev/null || fail "create $v"
ctsr volume resize $v --size 16M >/dev/null || fail "resize $v to 16M"
rec=$(ctsr --json volume show $v | json_get 'j["size"]')
assert_eq "$rec" $((16 * M)) "$v's record"
copies=$(cl_copy_nodes $v)
big=
for n in ${copies//,/ }; do
	out=$("$ADMIN_LOCAL_COPY" "$(cl_dir "${n#n}")" volume-resize $v $((32 * M))) ||
		fail "local_copy resize of $v on $n: $out"
	assert_eq "$(cl_copy_size "${n#n}" $v)" $((32 * M)) "$n's copy of $v"
	big=$n
done
assert_eq "$(ctsr --json volume show $v | json_get 'j["size"]')" "$rec" "$v's record after the copies grew"
log "record $rec; copies ($copies) grown to $((32 * M)) alone"
ctsr volume attach $v --node "$big" >/dev/null || fail "attach $v on $big"
nbdcopy <(head -c $((rec)) /dev/urandom) "$(cl_nbd_uri "${big#n}" $v)" 2>/dev/null ||
	cl_qemu_io "${big#n}" $v "write -P 0x33 0 1M" >/dev/null || fail "write"
ctsr volume detach $v >/dev/null || fail "detach $v"
for n in ${copies//,/ }; do
	out=$("$ADMIN_LOCAL_COPY" "$(cl_dir "${n#n}")" snapshot-create $v s1) ||
		fail "local_copy snapshot create of $v@s1 on $n: $out"
	s=$(snap_size "${n#n}")
	log "$n: $v@s1 size $s"
	assert_eq "$s" $((32 * M)) "$v@s1 on $n (the case: a snapshot larger than the volume)"
done
ctsr volume attach $v --node "$big" >/dev/null || fail "attach $v on $big again"
OLD= NEW=
for n in n1 n2 n3 n4; do
	case ",$copies," in *",$n,"*) [ "$n" != "$big" ] && [ -z "$OLD" ] && OLD=$n ;; *) NEW=$n ;; esac
done
ctsr volume replace-replica $v --node "$OLD" --to "$NEW" >/dev/null || fail "replace $OLD -> $NEW"
ok=no
for i in $(seq 1 150); do
	st=$(vstatus $v '",".join(c["node"]+":"+c["state"] for c in j["volume"]["copies"])' 2>/dev/null)
	case "$st" in *out-of-sync*|*resync*|*failed*|*away*|"") sleep 0.2 ;; *) ok=yes; break ;; esac
done
log "after the wait (30 s at most): copies $st"
[ "$ok" = yes ] || fail "the copy replaced onto $NEW never got in sync (make-up of s1 refused)"
s=$(snap_size "${NEW#n}")
assert_eq "$s" "$rec" "$v@s1's size on the made-up copy ($NEW): the volume's"
out=$(ctsr volume scrub $v --no-repair 2>&1) || fail "scrub --no-repair after the make-up: $out"
log "scrub: $out"
cl_stop_all
log PASS
