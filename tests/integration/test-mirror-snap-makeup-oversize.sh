#!/usr/bin/env bash
# Copies grown past the volume's record (two resizes of one volume crossing:
# the loser of the record's compare-and-set has grown the copies already; a
# resize cut short does the same) make every snapshot cut on them larger than
# the volume.  A copy replaced afterwards is created at the record's size;
# its make-up must cut the snapshot at most at the volume's size (before:
# the sized CREATE was refused, -EINVAL, and the copy never got in sync), and
# a scrub compares snapshots up to the volume's size (nothing past it was
# ever writable).  Review 13b, finding 2.  The crossing is a race: up to 8
# volumes are tried until one is left with copies larger than its record
# (in the review's runs and ours, the first).
set -uo pipefail
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
require_tessera
cl_start 4
M=$((1 << 20))
found=
for t in 1 2 3 4 5 6 7 8; do
	v=v$t
	ctsr volume create $v --size 8M --replicas 3 >/dev/null || fail "create $v"
	ctsr_via 2 volume resize $v --size 32M >"$CL_ROOT/r32.$t" 2>&1 &
	p1=$!
	ctsr_via 3 volume resize $v --size 16M >"$CL_ROOT/r16.$t" 2>&1 &
	p2=$!
	wait $p1; r1=$?; wait $p2; r2=$?
	rec=$(ctsr --json volume show $v | json_get 'j["size"]')
	copies=$(cl_copy_nodes $v)
	sizes=
	big=
	for n in ${copies//,/ }; do
		s=$(cl_copy_size "${n#n}" $v)
		sizes="$sizes $n=$s"
		[ "$s" -gt "$rec" ] && big=$n
	done
	log "try $t: resize 32M rc $r1, 16M rc $r2; record $rec; copies$sizes"
	if [ -n "$big" ]; then found=$v; break; fi
done
[ -n "$found" ] || { log "no crossing left a copy larger than the record in 8 tries: the case was not built (nothing checked)"; cl_stop_all; exit 0; }
v=$found
ctsr volume attach $v --node "$big" >/dev/null || fail "attach $v on $big"
nbdcopy <(head -c $((rec)) /dev/urandom) "$(cl_nbd_uri "${big#n}" $v)" 2>/dev/null ||
	cl_qemu_io "${big#n}" $v "write -P 0x33 0 1M" >/dev/null || fail "write"
ctsr snapshot create $v s1 >/dev/null || fail "snapshot s1"
for n in ${copies//,/ }; do
	s=$("$PY" - "$(cl_dir "${n#n}")" $v <<'PYEOF'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}/store.db?mode=ro", uri=True)
r = db.execute("select s.size from snapshots s join volumes v on s.vol_uuid = v.uuid where v.name=? and s.name='s1'", (sys.argv[2],)).fetchone()
print(r[0] if r else "-")
PYEOF
)
	log "$n: $v@s1 size $s"
done
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
log "after 30 s: copies $st"
[ "$ok" = yes ] || fail "the copy replaced onto $NEW never got in sync (make-up of s1 refused)"
s=$("$PY" - "$(cl_dir "${NEW#n}")" $v <<'PYEOF'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}/store.db?mode=ro", uri=True)
r = db.execute("select s.size from snapshots s join volumes v on s.vol_uuid = v.uuid where v.name=? and s.name='s1'", (sys.argv[2],)).fetchone()
print(r[0] if r else "-")
PYEOF
)
assert_eq "$s" "$rec" "$v@s1's size on the made-up copy ($NEW): the volume's"
out=$(ctsr volume scrub $v --no-repair 2>&1) || fail "scrub --no-repair after the make-up: $out"
log "scrub: $out"
cl_stop_all
log PASS
