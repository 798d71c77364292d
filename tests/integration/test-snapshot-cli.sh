#!/usr/bin/env bash
# Snapshots, clones, rollback and diff through the tessera CLI against a
# standalone tesserad, checked on the data (sha256 of each image read over
# NBD with nbdcopy):
#  - bad input is refused with a clear message (exit 1; 2 for usage) and
#    changes nothing: unknown volume or snapshot, duplicate snapshot or clone
#    name, invalid names ("a b", "-x", 64 characters, "x@y"), a diff in the
#    wrong order, rollback of a volume an NBD client holds (nbd_hold); after
#    each, the volume's checksum and `snapshot list --json` are unchanged and
#    no volume appeared;
#  - create/list/show/diff/delete (text and --json), the read-only VOL@SNAP
#    exports hold the content at the cut, the diff is exactly the blocks
#    written (offset/length pairs, zero for write-zeroes), also when it
#    comes in pages (TSR_DIFF_PAGE_EXTENTS=1; and 60000 extents, more than
#    one reply holds, in 3 pages of 25000);
#  - clone from a snapshot and from a volume (default and larger size), a
#    clone's writes stay its own; rollback restores the checksums (and the
#    snapshots survive it); a clone reads the same after its source snapshot
#    and source volume are deleted and across a restart; the verbs over TCP
#    admin with $TESSERA_CLUSTER;
#  - on a 3-node cluster: volume show lists the snapshots, rollback of an
#    attached volume is refused and changes nothing, detached it restores
#    the data (read through another node).
. "$(dirname "$0")/functions.sh"

require_tessera "$NBD_HOLD"
require_cmd nbdcopy qemu-io

MiB=$(( 1024 * 1024 ))
make_tmpdir D
# every diff below comes in pages of 1 extent (the CLI follows diff_next), so
# the exact lists check that the pages join up
TSR_DIFF_PAGE_EXTENTS=1 start_tesserad "$D"

# ---------------------------------------------------------------- helpers
# img_sum URI: sha256 of the whole image behind an NBD URI.
img_sum() {
	local s
	s=$(nbdcopy "$1" - | sha256sum) || fail "nbdcopy $1"
	echo "${s%% *}"
}
vol_sum() { img_sum "$(nbd_uri "$D" "$1")"; }
# snap_uri VOL SNAP: the read-only export, as snapshot show --json gives it.
snap_uri() {
	local u
	u=$(tsr "$D" --json snapshot show "$1" "$2" | json_get 'j["nbd_uris"][0]') ||
		fail "snapshot show $1 $2 --json gives no nbd_uris"
	[[ $u == *"$1@$2"* ]] || fail "snapshot $1@$2 export URI is '$u'"
	echo "$u"
}
# wait_idle VOL: until no NBD client holds VOL (a closed connection is
# released a moment after the client exits).
wait_idle() {
	local i
	for (( i=0; i<100; i++ )); do
		[ "$(tsr "$D" --json volume show "$1" | json_get 'j["in_use"]')" = false ] && return 0
		sleep 0.1
	done
	fail "volume $1 still in use 10 s after its clients left"
}
qio() { qemu-io -f raw "$@" >/dev/null || fail "qemu-io $*"; }
snap_names() { tsr "$D" --json snapshot list "$1" | json_get '" ".join(s["name"] for s in j["snapshots"])'; }
vol_names() { tsr "$D" --json volume list | json_get '" ".join(sorted(v["name"] for v in j["volumes"]))'; }
# diff_pairs ARGS...: the extents of `snapshot diff ARGS --json` as "offset:length:zero ...".
diff_pairs() {
	tsr "$D" --json snapshot diff "$@" |
		json_get '" ".join("%d:%d:%s" % (e["offset"], e["length"], "z" if e["zero"] else "d") for e in j["extents"])'
}

# ---------------------------------------------------------------- three points in time
URI=$(nbd_uri "$D" db)
vol_create "$D" db 64M
vol_create "$D" other 16M
qio -c "write -P 0x11 0 2M" -c "write -P 0x12 60M 4M" "$URI"
sumA=$(vol_sum db)
out=$(tsr "$D" snapshot create db s1) || fail "snapshot create db s1: $out"
log "create: $(head -n1 <<<"$out")"
grep -q "db@s1" <<<"$out" || fail "snapshot create does not name db@s1: $out"
# point B: data over part of A, a write-zeroes, a fresh block
qio -c "write -P 0x22 1M 64k" -c "write -z 0 4k" -c "write -P 0x23 32M 4k" "$URI"
sumB=$(vol_sum db)
js=$(tsr "$D" --json snapshot create db@s2) || fail "snapshot create db@s2 (VOL@SNAP form)"
assert_eq "$(json_get 'j["volume"] + "@" + j["name"]' <<<"$js")" db@s2 "create --json names"
# point C, the head
qio -c "write -P 0x44 48M 8k" "$URI"
sumC=$(vol_sum db)
[ "$sumA" != "$sumB" ] && [ "$sumB" != "$sumC" ] || fail "the three writes did not change the image"
wait_idle db

# ---------------------------------------------------------------- list, show
assert_eq "$(snap_names db)" "s1 s2" "snapshot list --json (oldest first)"
list=$(tsr "$D" --json snapshot list db)
assert_eq "$(json_get 'j["volume"]' <<<"$list")" db "snapshot list --json volume"
assert_eq "$(json_get 'j["snapshots"][0]["seq"] < j["snapshots"][1]["seq"]' <<<"$list")" true \
	"snapshot seq increases"
assert_eq "$(json_get 'j["snapshots"][0]["size"]' <<<"$list")" $(( 64 * MiB )) "snapshot size"
# no delete pending: every snapshot "ready", none under "deleting"
# (test-disk-full.sh holds a delete pending on a full disk)
assert_eq "$(json_get '[[s["state"] for s in j["snapshots"]], j["deleting"]]' <<<"$list")" \
	'[["ready", "ready"], []]' "snapshot list --json states"
text=$(tsr "$D" snapshot list db) || fail "snapshot list db"
for col in NAME STATE CREATED ALLOCATED EXCLUSIVE CLONES s1 s2; do
	grep -q "$col" <<<"$text" || fail "snapshot list text lacks $col: $text"
done
grep -qE "^s1 +ready +" <<<"$text" || fail "snapshot list text: s1 not 'ready': $text"
text=$(tsr "$D" volume show db) || fail "volume show db"
for want in provisioned allocated exclusive snapshots s1 s2 CLONES; do
	grep -q "$want" <<<"$text" || fail "volume show text lacks '$want': $text"
done
show=$(tsr "$D" --json volume show db)
assert_eq "$(json_get '[s["name"] for s in j["snapshots"]]' <<<"$show")" '["s1", "s2"]' \
	"volume show --json snapshots"
assert_eq "$(json_get 'j["parent_volume"]' <<<"$show")" null "parent of a plain volume"
# the head alone holds what was written since s2; s1 the blocks overwritten after it
(( $(json_get 'j["exclusive"]' <<<"$show") > 0 )) || fail "volume exclusive bytes: $show"
(( $(json_get 'j["snapshots"][0]["allocated"]' <<<"$show") > 0 )) ||
	fail "s1 holds the blocks overwritten after it: $show"
tsr "$D" snapshot show db s1 | grepq "db@s1" || fail "snapshot show text"
tsr "$D" snapshot show db@s2 >/dev/null || fail "snapshot show db@s2"

# ---------------------------------------------------------------- snapshot exports
assert_eq "$(img_sum "$(snap_uri db s1)")" "$sumA" "db@s1 export reads the image at the cut"
assert_eq "$(img_sum "$(snap_uri db s2)")" "$sumB" "db@s2 export reads the image at the cut"
qemu-io -f raw -c "write -P 0x99 0 4k" "$(snap_uri db s1)" >/dev/null 2>&1 &&
	fail "a write to the read-only db@s1 export succeeded"
assert_eq "$(img_sum "$(snap_uri db s1)")" "$sumA" "db@s1 after a refused write"

# ---------------------------------------------------------------- diff
# exactly the blocks written between the points; write-zeroes reads as zero
assert_eq "$(diff_pairs db s1 s2)" "0:4096:z $MiB:65536:d $(( 32 * MiB )):4096:d" "diff s1 s2"
assert_eq "$(diff_pairs db s2 --head)" "$(( 48 * MiB )):8192:d" "diff s2 --head"
assert_eq "$(diff_pairs db@s2)" "$(( 48 * MiB )):8192:d" "diff db@s2 (head by default)"
assert_eq "$(diff_pairs db s1)" \
	"0:4096:z $MiB:65536:d $(( 32 * MiB )):4096:d $(( 48 * MiB )):8192:d" "diff s1 head"
dj=$(tsr "$D" --json snapshot diff db s1 s2)
assert_eq "$(json_get '[j["volume"], j["from"], j["to"], j["changed_bytes"]]' <<<"$dj")" \
	'["db", "s1", "s2", 73728]' "diff --json fields"
assert_eq "$(tsr "$D" --json snapshot diff db s2 --head | json_get 'j["to"]')" null "diff to head: to"
text=$(tsr "$D" snapshot diff db s1 s2) || fail "snapshot diff text"
grep -qE "OFFSET +LENGTH" <<<"$text" || fail "diff text lacks the table: $text"
grep -q "73728 bytes" <<<"$text" || fail "diff text lacks the total: $text"

# ---------------------------------------------------------------- refused input changes nothing
list_before=$(tsr "$D" --json snapshot list db)
vols_before=$(vol_names)
# unchanged_meta: db's snapshots and the set of volumes, after every refusal;
# unchanged: also db's data, read whole once at the end of the refusals (nothing
# in between writes db, so a refusal that changed a byte is still seen there)
unchanged_meta() {
	assert_eq "$(tsr "$D" --json snapshot list db)" "$list_before" "snapshot list after: $*"
	assert_eq "$(vol_names)" "$vols_before" "volumes after: $*"
}
unchanged() {
	wait_idle db
	assert_eq "$(vol_sum db)" "$sumC" "db's data after: $*"
	unchanged_meta "$*"
}
NOTFOUND='not found|no such|unknown|does not exist'
refused() { # refused RC PATTERN ARGS...: tessera ARGS fails so, and nothing changed
	local rc=$1 pat=$2
	shift 2
	expect_fail "$rc" "$pat" tsr "$D" "$@"
	unchanged_meta "$*"
}
refused 1 "$NOTFOUND" snapshot create nosuch s9
refused 1 "$NOTFOUND" snapshot list nosuch
refused 1 "$NOTFOUND" snapshot show db nosuch
refused 1 "$NOTFOUND" snapshot show nosuch s1
refused 1 "$NOTFOUND" snapshot delete db nosuch
refused 1 "$NOTFOUND" snapshot delete nosuch s1
refused 1 "$NOTFOUND" snapshot diff db nosuch
refused 1 "$NOTFOUND" snapshot diff db s1 nosuch
refused 1 "$NOTFOUND" snapshot diff nosuch s1
refused 1 'older|before|order|invalid|later' snapshot diff db s2 s1
refused 1 'exist' snapshot create db s1
refused 1 'exist' snapshot create db@s2
refused 1 'name' snapshot create db 'a b'
refused 1 'name' snapshot create db -- -x
refused 2 'unknown option' snapshot create db -x
refused 1 'name' snapshot create db "$(printf 's%.0s' {1..64})"
refused 1 'name' snapshot create db 'x@y'
refused 1 'name' snapshot create db@x@y
refused 1 'name' snapshot create 'a b' s9
refused 2 '.' snapshot create db
refused 2 '.' snapshot create db s9 extra
refused 2 'not both' snapshot diff db s1 s2 --head
refused 1 'name' snapshot diff db s1 'a b'
refused 2 'not a snapshot of' snapshot diff db s1 other@s2
refused 1 "$NOTFOUND" volume create c9 --from-snapshot db@nosuch
refused 1 "$NOTFOUND" volume create c9 --from-snapshot nosuch@s1
refused 1 "$NOTFOUND" volume create c9 --from-volume nosuch
refused 1 'exist' volume create other --from-snapshot db@s1
refused 1 'exist' volume create other --from-volume db
refused 2 'new name' volume create db --from-snapshot db@s1
refused 1 'name' volume create c9 --from-snapshot 'db@a b'
refused 2 'VOL@SNAP' volume create c9 --from-snapshot s1
refused 1 "$NOTFOUND" volume rollback db nosuch
refused 1 "$NOTFOUND" volume rollback nosuch s1
refused 1 'name' volume rollback db 'x@y'
refused 2 '.' volume rollback db

# rollback while an NBD client holds the volume: refused, says why
"$NBD_HOLD" "$URI" "$D/held" &
hold=$!
track_pid "$hold"
for (( i=0; i<100; i++ )); do [ -f "$D/held" ] && break; sleep 0.1; done
[ -f "$D/held" ] || fail "nbd_hold did not connect"
expect_fail 1 'in use|busy|open|attached|client' tsr "$D" volume rollback db s1
expect_fail 1 'in use|busy|open|attached|client' tsr "$D" volume rollback db@s2
assert_eq "$(tsr "$D" --json volume show db | json_get 'j["in_use"]')" true "db held"
kill -TERM "$hold"
reap "$hold" || fail "nbd_hold exited with an error"
unchanged "the refusals above and the rollback of a volume in use"
log "every refused command left db's data and snapshots as they were"

# ---------------------------------------------------------------- clones
out=$(tsr "$D" volume create c1 --from-snapshot db@s1) || fail "clone c1 from db@s1: $out"
log "clone: $(head -n1 <<<"$out")"
cj=$(tsr "$D" --json volume show c1)
assert_eq "$(json_get '[j["size"], j["parent_volume"], j["parent_snapshot"]]' <<<"$cj")" \
	"[$(( 64 * MiB )), \"db\", \"s1\"]" "c1: default size and parent"
tsr "$D" volume show c1 | grepq "parent: *db@s1" || fail "volume show c1 text lacks its parent"
assert_eq "$(vol_sum c1)" "$sumA" "c1 reads db@s1"
assert_eq "$(tsr "$D" --json snapshot show db s1 | json_get 'j["clones"]')" 1 "s1 clones count"
tsr "$D" --json volume create c2 --from-volume db --size 128M >/dev/null ||
	fail "clone c2 from db, grown to 128M"
c2=$(tsr "$D" --json volume show c2)
assert_eq "$(json_get '[j["size"], j["parent_volume"]]' <<<"$c2")" "[$(( 128 * MiB )), \"db\"]" \
	"c2: size and parent"
s=$(nbdcopy "$(nbd_uri "$D" c2)" - | headc $(( 64 * MiB )) | sha256sum) || fail "read c2"
assert_eq "${s%% *}" "$sumC" "c2's first 64 MiB read db's head"
qio -c "read -P 0 64M 64M" "$(nbd_uri "$D" c2)"
tsr "$D" --json volume create c3 --from-volume db --from-snapshot s2 >/dev/null ||
	fail "clone c3 --from-volume db --from-snapshot s2"
assert_eq "$(vol_sum c3)" "$sumB" "c3 reads db@s2"
# a clone's writes are its own
qio -c "write -P 0x55 0 4k" -c "write -P 0x56 40M 1M" "$(nbd_uri "$D" c1)"
sumC1=$(vol_sum c1)
[ "$sumC1" != "$sumA" ] || fail "c1 unchanged by a write"
wait_idle db
assert_eq "$(vol_sum db)" "$sumC" "db after writes to its clone"
assert_eq "$(img_sum "$(snap_uri db s1)")" "$sumA" "db@s1 after writes to its clone"
expect_fail 1 'exist' tsr "$D" volume create c1 --from-volume db

# ---------------------------------------------------------------- rollback
wait_idle db
out=$(tsr "$D" volume rollback db s1) || fail "rollback db s1: $out"
log "rollback: $out"
assert_eq "$(vol_sum db)" "$sumA" "db after rollback to s1"
assert_eq "$(snap_names db)" "s1 s2" "snapshots kept by the rollback"
assert_eq "$(img_sum "$(snap_uri db s2)")" "$sumB" "db@s2 after rollback to s1"
wait_idle db
tsr "$D" --json volume rollback db@s2 >/dev/null || fail "rollback db@s2"
assert_eq "$(vol_sum db)" "$sumB" "db after rollback to s2"
# again: idempotent
wait_idle db
tsr "$D" volume rollback db s2 >/dev/null || fail "second rollback to s2"
assert_eq "$(vol_sum db)" "$sumB" "db after a second rollback to s2"
assert_eq "$(vol_sum c1)" "$sumC1" "c1 after its source rolled back"

# ---------------------------------------------------------------- delete, independence
out=$(tsr "$D" snapshot delete db s2) || fail "snapshot delete db s2: $out"
grep -q "db@s2" <<<"$out" || fail "snapshot delete does not name db@s2: $out"
assert_eq "$(snap_names db)" "s1" "snapshot list after deleting s2"
# db is closed (no client): the merge ran in the call, nothing is left deleting
assert_eq "$(tsr "$D" --json snapshot list db | json_get 'j["deleting"]')" "[]" \
	"snapshot list --json: deleting after the delete of a closed volume's s2"
assert_eq "$(img_sum "$(snap_uri db s1)")" "$sumA" "db@s1 after deleting s2"
assert_eq "$(vol_sum c3)" "$sumB" "c3 (from the deleted db@s2)"
# the source snapshot, then the source volume, go; clones read the same
tsr "$D" --json snapshot delete db@s1 | json_get 'j["deleted"]' | grepq -x s1 ||
	fail "snapshot delete --json"
assert_eq "$(snap_names db)" "" "snapshot list after deleting s1"
# s1 lives on hidden for c1; its name is free again
tsr "$D" snapshot create db s1 >/dev/null || fail "re-create db@s1 after its delete"
assert_eq "$(img_sum "$(snap_uri db s1)")" "$sumB" "the new db@s1 is db's current content"
assert_eq "$(vol_sum c1)" "$sumC1" "c1 after its source snapshot's name was reused"
tsr "$D" snapshot delete db s1 >/dev/null || fail "delete the new db@s1"
wait_idle db
tsr "$D" volume delete db >/dev/null || fail "delete db, the clones' source"
expect_fail 1 "$NOTFOUND" tsr "$D" snapshot list db
assert_eq "$(vol_sum c1)" "$sumC1" "c1 after its source snapshot and volume are gone"
assert_eq "$(vol_sum c3)" "$sumB" "c3 after its source snapshot and volume are gone"
s=$(nbdcopy "$(nbd_uri "$D" c2)" - | headc $(( 64 * MiB )) | sha256sum) ||
	fail "read c2 after its source volume is gone"
assert_eq "${s%% *}" "$sumC" "c2 after its source volume is gone"
assert_eq "$(tsr "$D" --json volume show c1 | json_get 'j["parent_volume"]')" db \
	"c1 still names its (deleted) parent"
# the name is free again, and the new db starts empty
vol_create "$D" db 64M
qio -c "read -P 0 0 64M" "$URI"
assert_eq "$(snap_names db)" "" "a new db has no snapshots"

# ---------------------------------------------------------------- restart, TCP admin
stop_tesserad
port=$(free_port)
start_tesserad "$D" --admin-listen "tcp:127.0.0.1:$port"
assert_eq "$(vol_sum c1)" "$sumC1" "c1 across a restart"
assert_eq "$(vol_sum c3)" "$sumB" "c3 across a restart"
export TESSERA_CLUSTER=127.0.0.1:$port TESSERA_TOKEN_FILE=$D/admin.token
"$TESSERA" snapshot create c1 t1 >/dev/null || fail "snapshot create over TCP ($TESSERA_CLUSTER)"
assert_eq "$("$TESSERA" --json snapshot list c1 | json_get '[s["name"] for s in j["snapshots"]]')" \
	'["t1"]' "snapshot list over TCP"
assert_eq "$("$TESSERA" --json snapshot diff c1 t1 | json_get 'j["changed_bytes"]')" 0 \
	"diff of an untouched snapshot over TCP"
"$TESSERA" snapshot delete c1 t1 >/dev/null || fail "snapshot delete over TCP"
unset TESSERA_CLUSTER TESSERA_TOKEN_FILE
for c in c1 c2 c3; do
	tsr "$D" volume delete "$c" >/dev/null || fail "delete $c"
done
assert_eq "$(vol_names)" "db other" "volumes at the end"

# ---------------------------------------------------------------- help
for v in "snapshot create" "snapshot list" "snapshot show" "snapshot delete" "snapshot diff" \
	 "volume rollback" "volume create"; do
	# shellcheck disable=SC2086
	h=$("$TESSERA" $v --help) || fail "$v --help"
	grep -q "Example" <<<"$h" || fail "$v --help has no example"
done
grep -q "snapshot diff" <<<"$("$TESSERA" --help)" || fail "tessera --help lacks the snapshot verbs"
stop_tesserad

# ---------------------------------------------------------------- a diff in pages
# 60000 separate 4 KiB extents: more than one reply holds (50000; the code
# before refused such a diff), in 3 pages of 25000.
N=60000
TSR_DIFF_PAGE_EXTENTS=25000 start_tesserad "$D"
vol_create "$D" many 480M
tsr "$D" snapshot create many p0 >/dev/null || fail "snapshot create many p0"
# The writes asynchronous, at most 256 in flight (aio_flush waits for them):
# one synchronous write at a time took 146 s at load 7.6, these 13 s.
{
	for (( i=0; i<N; i++ )); do
		echo "aio_write -q -P 0x5a $(( i * 8192 )) 4k"
		(( i % 256 == 255 )) && echo aio_flush
	done
	echo aio_flush
} |
	qemu-io -f raw "$(nbd_uri "$D" many)" >/dev/null || fail "qemu-io: $N writes to many"
tsr "$D" snapshot create many p1 >/dev/null || fail "snapshot create many p1"
want=$(seq 0 $(( N - 1 )) | while read -r i; do echo "$(( i * 8192 )):4096:d"; done | paste -sd' ')
assert_eq "$(diff_pairs many p0 p1)" "$want" "diff of $N extents in pages, p0 p1"
assert_eq "$(diff_pairs many p0 --head)" "$want" "diff of $N extents in pages, p0 --head"
assert_eq "$(tsr "$D" --json snapshot diff many p0 p1 | json_get 'j["changed_bytes"]')" \
	$(( N * 4096 )) "changed_bytes of the paged diff"
text=$(tsr "$D" snapshot diff many p0 p1) || fail "paged snapshot diff text"
grep -q "$N extents, .* ($(( N * 4096 )) bytes) changed" <<<"$text" ||
	fail "paged diff text lacks the total: $(tail -1 <<<"$text")"
assert_eq "$(grep -cE '^ *[0-9]+ +4096 ' <<<"$text")" $N "paged diff text rows"
log "a diff of $N extents came whole in pages of 25000 (text and --json)"
tsr "$D" volume delete many >/dev/null || fail "volume delete many"
stop_tesserad

# ---------------------------------------------------------------- a 3-node cluster
# The same verbs through $TESSERA_CLUSTER: volume show lists the snapshots
# (a cluster node answers VolumeShow from the metadata store), rollback of an
# attached volume is refused and changes nothing, detached it restores the data.
. "$(dirname "$0")/cluster.sh"
cl_start 3
export TESSERA_CLUSTER=$(cl_addr 1) TESSERA_TOKEN_FILE=$(cl_dir 1)/admin.token
"$TESSERA" volume create cv --size 32M --replicas 3 >/dev/null || fail "cluster: volume create"
"$TESSERA" volume attach cv --node n1 >/dev/null || fail "cluster: attach cv"
qio -c "write -P 0x61 0 1M" "$(cl_nbd_uri 1 cv)"
csum1=$(img_sum "$(cl_nbd_uri 1 cv)")
"$TESSERA" snapshot create cv@k1 >/dev/null || fail "cluster: snapshot create cv@k1"
qio -c "write -P 0x62 0 64k" "$(cl_nbd_uri 1 cv)"
csum2=$(img_sum "$(cl_nbd_uri 1 cv)")
assert_eq "$("$TESSERA" --json volume show cv | json_get '[s["name"] for s in j["snapshots"]]')" \
	'["k1"]' "cluster: volume show --json snapshots"
"$TESSERA" volume show cv | grepq -E "^  k1 " || fail "cluster: volume show text lacks k1"
assert_eq "$("$TESSERA" --json snapshot diff cv k1 | json_get 'j["changed_bytes"]')" \
	65536 "cluster: diff k1 --head"
clist=$("$TESSERA" --json snapshot list cv)
expect_fail 1 'attached|detach' "$TESSERA" volume rollback cv k1
assert_eq "$(img_sum "$(cl_nbd_uri 1 cv)")" "$csum2" "cluster: cv after a refused rollback"
assert_eq "$("$TESSERA" --json snapshot list cv)" "$clist" "cluster: snapshots after a refused rollback"
"$TESSERA" volume detach cv >/dev/null || fail "cluster: detach cv"
"$TESSERA" volume rollback cv k1 >/dev/null || fail "cluster: rollback of the detached cv"
"$TESSERA" volume attach cv --node n2 >/dev/null || fail "cluster: attach cv on n2"
assert_eq "$(img_sum "$(cl_nbd_uri 2 cv)")" "$csum1" "cluster: cv after rollback, read through n2"
"$TESSERA" volume detach cv >/dev/null || fail "cluster: detach cv"
unset TESSERA_CLUSTER TESSERA_TOKEN_FILE
cl_stop_all
