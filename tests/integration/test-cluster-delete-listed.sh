#!/usr/bin/env bash
# A node refuses to delete by name (the node-to-node local_copy VolumeDelete
# without a uuid) a store copy that vol/<name> lists on it.  The by-name
# deletes are the old copy's delete after a replace-replica and the copy
# deletes of `volume delete` (and the undo of a create or clone): a replace
# back onto the old node, between replace A's record write and A's delete,
# made and recorded a new copy there, which A's late delete removed: the
# record then listed a copy that did not exist (session-13 review 13b,
# finding 3).  The race is driven directly: the late delete is sent to the
# node's admin socket by this test.
#   4 nodes; v (3 replicas) written; L a node holding a copy, F the free one.
#   (1) by-name delete of L's listed copy: refused ("lists"), the copy kept
#       (same uuid); with another uuid: refused (ESTALE), kept.
#   (2) replace L -> F: the replace's delete of L's old copy goes through
#       (L holds no copy); replace F -> L back (a new copy on L, recorded);
#       the late by-name delete (replace A's) sent to L: refused, L's new
#       copy kept; v attached, rebuilt, reads back as written, scrub clean.
#   (3) a delete naming the listed copy's own uuid goes through; then
#       `volume delete v` removes every copy on every node.
# Before the fix (1) fails: the by-name delete removed the listed copy.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
ADMIN_LOCAL_COPY=$TSR_BUILD/tests/admin_local_copy # admin_local_copy.c

require_tessera "$ADMIN_LOCAL_COPY"
require_cmd nbdcopy

# copy_delete I NAME [UUID]: the local_copy VolumeDelete node to node, sent to
# node I's admin socket (admin_local_copy, built from admin_local_copy.c);
# prints "<error> <message>" (error 0: deleted); fails only when no answer.
copy_delete() {
	local out rc
	out=$("$ADMIN_LOCAL_COPY" "$(cl_dir "$1")" volume-delete "$2" ${3:+--uuid "$3"})
	rc=$?
	printf '%s\n' "$out"
	[ "$rc" -le 1 ]
}

# store_uuid I NAME: the uuid of node I's store copy of NAME ("" if none).
store_uuid() {
	"$PY" - "$(cl_dir "$1")" "$2" <<'EOF'
import sqlite3, sys
d, name = sys.argv[1], sys.argv[2]
db = sqlite3.connect(f"file:{d}/store.db?mode=ro", uri=True)
row = db.execute("select uuid from volumes where name = ?", (name,)).fetchone()
print(row[0] if row else "")
EOF
}

cl_start 4
SIZE=$((8 << 20))
IMG=$CL_ROOT/img
cl_pattern "$IMG" "$SIZE" 29
ctsr volume create v --size 8M --replicas 3 >/dev/null || fail "volume create v"
out=$(ctsr volume attach v --node n1 2>&1) || fail "volume attach v: $out"
nbdcopy "$IMG" "$(cl_nbd_uri 1 v)" || fail "nbdcopy into v"
ctsr volume detach v >/dev/null || fail "volume detach v"
copies=$(cl_copy_nodes v)
L= F=
# L not n1: the replaces run on n1 (the CLI's node) and send L their deletes
for n in n2 n3 n4 n1; do
	case ",$copies," in *",$n,"*) [ -z "$L" ] && L=$n ;; *) F=$n ;; esac
done
[ -n "$L" ] && [ -n "$F" ] || fail "copies of v on $copies: no L/F pair"
log "copies of v on $copies; L=$L, F=$F"

# ---- (1) by name, a listed copy: refused, kept
u=$(store_uuid "${L#n}" v)
[ -n "$u" ] || fail "$L holds no copy of v (the test's premise)"
out=$(copy_delete "${L#n}" v) || fail "copy_delete: $out"
log "by-name delete of $L's listed copy: $out"
[ "${out%% *}" != 0 ] || fail "$L deleted its copy of v by name while vol/v lists it"
case $out in *lists*) ;; *) fail "refusal does not say that vol/v lists the copy: $out" ;; esac
[ "$(store_uuid "${L#n}" v)" = "$u" ] || fail "$L's copy of v changed (was $u)"
out=$(copy_delete "${L#n}" v 00000000-0000-0000-0000-000000000000) || fail "copy_delete: $out"
[ "${out%% *}" = "-$("$PY" -c 'import errno; print(errno.ESTALE)')" ] ||
	fail "delete of $L's copy of v with another uuid: '$out', want ESTALE"
[ "$(store_uuid "${L#n}" v)" = "$u" ] || fail "$L's copy of v changed (was $u)"

# ---- (2) replace away (its by-name delete of the old copy goes through),
# back, then the late by-name delete of the first replace
out=$(ctsr volume replace-replica v --node "$L" --to "$F" 2>&1) ||
	fail "replace-replica v $L -> $F: $out"
[ -z "$(store_uuid "${L#n}" v)" ] ||
	fail "$L still holds its copy of v after the replace away (the delete was refused?)"
out=$(ctsr volume attach v --node n1 2>&1) || fail "volume attach v: $out"
cl_wait_synced v
ctsr volume detach v >/dev/null || fail "volume detach v"
out=$(ctsr volume replace-replica v --node "$F" --to "$L" 2>&1) ||
	fail "replace-replica v $F -> $L: $out"
u=$(store_uuid "${L#n}" v)
[ -n "$u" ] || fail "$L holds no copy of v after the replace back"
out=$(copy_delete "${L#n}" v) || fail "copy_delete: $out"
log "late by-name delete of $L's new, recorded copy: $out"
[ "${out%% *}" != 0 ] || fail "$L deleted the replace's new, recorded copy of v by name"
[ "$(store_uuid "${L#n}" v)" = "$u" ] || fail "$L's new copy of v changed (was $u)"
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v (to rebuild $L's copy)"
cl_wait_synced v
cl_assert_image 1 v "$IMG" "after the late delete"
cl_scrub_clean v "after the late delete"
ctsr volume detach v >/dev/null || fail "volume detach v"

# ---- (3) a delete naming the listed copy's uuid goes through; volume delete
out=$(copy_delete "${L#n}" v "$u") || fail "copy_delete: $out"
[ "${out%% *}" = 0 ] || fail "delete of $L's copy of v by its own uuid refused: $out"
[ -z "$(store_uuid "${L#n}" v)" ] || fail "$L still holds the copy of v deleted by its uuid"
out=$(ctsr volume delete v 2>&1) || fail "volume delete v: $out"
for i in 1 2 3 4; do
	[ -z "$(store_uuid "$i" v)" ] || fail "n$i still holds a copy of v after volume delete"
done
log "volume delete v removed every copy"
cl_stop_all
