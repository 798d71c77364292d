#!/usr/bin/env bash
# Snapshots over NBD on a standalone tesserad, with clients nobody here wrote:
# known data written with qemu-io, a snapshot cut through the admin API (the
# tessera CLI) while a client holds the volume open (the cut goes through the
# volume's gate on its home worker) and once while nobody does (the store
# directly); the volume overwritten, trimmed and grown-into afterwards; then
# the read-only export "VOL@SNAP": nbdinfo (read-only flag, --map of
# base:allocation), nbdcopy/qemu-img of it equal to the data at the cut, a
# write to it refused; a clone of the snapshot reads the cut's data and is
# writable without touching the snapshot; delete and rollback refused while
# an NBD client uses what they would change.
. "$(dirname "$0")/functions.sh"

require_tessera "$NBD_HOLD"
require_cmd nbdinfo nbdcopy qemu-img qemu-io

make_tmpdir D
start_tesserad "$D" --workers 2
vol_create "$D" v 16M
U=$(nbd_uri "$D" v)
S1=$(nbd_uri "$D" v@s1)
MiB=1048576

# hold URI: keep an NBD connection to URI open; sets HOLD_PID.
hold() {
	rm -f "$D/held"
	"$NBD_HOLD" "$1" "$D/held" &
	HOLD_PID=$!
	track_pid "$HOLD_PID"
	for (( i=0; i<100; i++ )); do [ -f "$D/held" ] && break; sleep 0.1; done
	[ -f "$D/held" ] || fail "nbd_hold did not connect to $1"
}
release() {
	kill -TERM "$HOLD_PID"
	reap "$HOLD_PID" || fail "nbd_hold exited with an error"
	sleep 0.3 # the server drops the handle once it saw the disconnect
}

# ---------------------------------------------------------------- the data at the cut
# data at [0, 4M) and [8M, 9M); holes elsewhere
qemu-io -f raw -c 'write -P 0x11 0 4M' -c 'write -P 0x22 8M 1M' "$U" >/dev/null ||
	fail "qemu-io write of the known data"
nbdcopy "$U" "$D/cut.img" || fail "nbdcopy of the volume before the cut"
want=$(sha256 "$D/cut.img")

# the cut while a client holds the volume: through its gate on the home worker
hold "$U"
out=$(tsr "$D" snapshot create v s1) || fail "snapshot create v s1: $out"
log "snapshot create: $(head -n1 <<<"$out")"
release

# ---------------------------------------------------------------- after the cut
qemu-io -f raw -c 'write -P 0x33 0 2M' -c 'discard 8M 1M' -c 'write -P 0x44 12M 1M' "$U" \
	>/dev/null || fail "qemu-io overwrite after the cut"
qemu-io -f raw -c 'read -P 0x33 0 2M' -c 'read -P 0 8M 1M' "$U" >/dev/null ||
	fail "the volume does not read back what was written after the cut"

# ---------------------------------------------------------------- the read-only export
info=$(nbdinfo --json "$S1") || fail "nbdinfo $S1"
log "nbdinfo v@s1: $(tr -d '\n\t' <<<"$info")"
assert_eq "$(json_get 'j["exports"][0]["export-size"]' <<<"$info")" $((16 * MiB)) "snapshot size"
assert_eq "$(json_get 'j["exports"][0]["is_read_only"]' <<<"$info")" true "is_read_only"
assert_eq "$(json_get 'j["exports"][0]["can_trim"]' <<<"$info")" false "can_trim"
assert_eq "$(json_get '"base:allocation" in j["exports"][0]["contexts"]' <<<"$info")" true \
	"base:allocation on the snapshot"

# --map: data exactly where the cut had data, holes (reading as zeros) elsewhere
map=$(nbdinfo --map --json "$S1") || fail "nbdinfo --map $S1"
log "map v@s1: $(tr -d '\n\t ' <<<"$map")"
data=$(json_get '",".join("%d+%d" % (e["offset"], e["length"]) for e in j if e["type"] & 1 == 0)' \
	<<<"$map")
assert_eq "$data" "0+$((4 * MiB)),$((8 * MiB))+$MiB" "allocated extents of v@s1"
assert_eq "$(json_get 'all(e["type"] == 3 for e in j if e["type"] & 1)' <<<"$map")" true \
	"holes of v@s1 read as zeros"
assert_eq "$(json_get 'sum(e["length"] for e in j)' <<<"$map")" $((16 * MiB)) "map covers v@s1"

# its content is the data at the cut, for nbdcopy and qemu-img alike
nbdcopy "$S1" "$D/snap.img" || fail "nbdcopy of v@s1"
assert_eq "$(sha256 "$D/snap.img")" "$want" "v@s1 content (nbdcopy)"
qemu-img compare -f raw -F raw "$D/cut.img" "$(qemu_nbd_spec "$D" v@s1)" >/dev/null ||
	fail "qemu-img compare: v@s1 differs from the data at the cut"
qemu-img convert -f raw -O raw "$(qemu_nbd_spec "$D" v@s1)" "$D/conv.img" ||
	fail "qemu-img convert of v@s1"
assert_eq "$(sha256 "$D/conv.img")" "$want" "v@s1 content (qemu-img convert)"

# a write to the snapshot fails (clients see the read-only flag; the server
# answers EPERM to those that try anyway: nbd_proto_ut) and changes nothing
qemu-io -f raw -c 'write -P 0x66 0 4k' "$S1" >"$D/ro.out" 2>&1 &&
	fail "qemu-io write to v@s1 succeeded: $(cat "$D/ro.out")"
log "write to v@s1 refused: $(head -n1 "$D/ro.out")"
nbdcopy "$D/cut.img" "$S1" >"$D/ro.out" 2>&1 && fail "nbdcopy into v@s1 succeeded"
assert_eq "$(nbdcopy "$S1" - | sha256sum | cut -d' ' -f1)" "$want" "v@s1 after refused writes"
nbdinfo "$(nbd_uri "$D" v@nosuch)" >/dev/null 2>&1 && fail "an unknown snapshot is exported"
nbdinfo "$(nbd_uri "$D" nosuch@s1)" >/dev/null 2>&1 && fail "a snapshot of an unknown volume is exported"

# the admin API names the export
uris=$(tsr "$D" --json snapshot show v@s1 | json_get '" ".join(j["nbd_uris"])') ||
	fail "snapshot show v@s1"
[[ " $uris " == *" $S1 "* ]] || fail "snapshot show nbd_uris '$uris' lacks $S1"

# ---------------------------------------------------------------- a second cut, nobody connected
qemu-io -f raw -c 'read -P 0x44 12M 1M' "$U" >/dev/null || fail "read before the second cut"
nbdcopy "$U" "$D/cut2.img" || fail "nbdcopy before the second cut"
sleep 0.3
tsr "$D" snapshot create v@s2 >/dev/null || fail "snapshot create v@s2 (volume closed)"
qemu-io -f raw -c 'write -P 0x77 12M 1M' "$U" >/dev/null || fail "write after the second cut"
assert_eq "$(nbdcopy "$(nbd_uri "$D" v@s2)" - | sha256sum | cut -d' ' -f1)" \
	"$(sha256 "$D/cut2.img")" "v@s2 content"
assert_eq "$(nbdcopy "$S1" - | sha256sum | cut -d' ' -f1)" "$want" "v@s1 after the second cut"

# ---------------------------------------------------------------- a clone of the cut
tsr "$D" volume create c1 --from-snapshot v@s1 >/dev/null || fail "volume create c1 --from-snapshot v@s1"
C1=$(nbd_uri "$D" c1)
assert_eq "$(nbdcopy "$C1" - | sha256sum | cut -d' ' -f1)" "$want" "clone c1 content"
qemu-io -f raw -c 'write -P 0x55 0 1M' -c 'write -P 0x56 5M 1M' "$C1" >/dev/null ||
	fail "qemu-io write to the clone"
qemu-io -f raw -c 'read -P 0x55 0 1M' -c 'read -P 0x11 1M 3M' -c 'read -P 0x56 5M 1M' \
	-c 'read -P 0x22 8M 1M' "$C1" >/dev/null || fail "clone c1 does not read back its writes"
assert_eq "$(nbdcopy "$S1" - | sha256sum | cut -d' ' -f1)" "$want" "v@s1 after writes to its clone"
parent=$(tsr "$D" --json volume show c1 | json_get 'j.get("parent_volume","") + "@" + j.get("parent_snapshot","")')
assert_eq "$parent" "v@s1" "clone c1's parent"
# a clone of the volume as it is now, taken while a client holds it (its gate)
hold "$U"
tsr "$D" volume create c2 --from-volume v >/dev/null || fail "volume create c2 --from-volume v"
release
assert_eq "$(nbdcopy "$(nbd_uri "$D" c2)" - | sha256sum | cut -d' ' -f1)" \
	"$(nbdcopy "$U" - | sha256sum | cut -d' ' -f1)" "clone c2 of v now"

# ---------------------------------------------------------------- refused while in use
hold "$S1"
expect_fail 1 'exported to an NBD client|disconnect' tsr "$D" snapshot delete v s1
expect_fail 1 'disconnect' tsr "$D" volume delete v
release
hold "$U"
expect_fail 1 'in use by an NBD client; disconnect it first' tsr "$D" volume rollback v s1
release

# ---------------------------------------------------------------- rollback, diff, delete
diff=$(tsr "$D" --json snapshot diff v@s1 --head) || fail "snapshot diff v@s1 --head"
log "diff v@s1..head: $(tr -d '\n\t ' <<<"$diff" | head -c 300)"
tsr "$D" volume rollback v s1 >/dev/null || fail "volume rollback v s1"
assert_eq "$(nbdcopy "$U" - | sha256sum | cut -d' ' -f1)" "$want" "v after rollback to s1"
tsr "$D" snapshot delete v s2 >/dev/null || fail "snapshot delete v s2"
nbdinfo "$(nbd_uri "$D" v@s2)" >/dev/null 2>&1 && fail "a deleted snapshot is still exported"
assert_eq "$(nbdcopy "$S1" - | sha256sum | cut -d' ' -f1)" "$want" "v@s1 after deleting s2"
qemu-io -f raw -c 'read -P 0x55 0 1M' -c 'read -P 0x11 1M 3M' "$C1" >/dev/null ||
	fail "clone c1 after deleting s2 and rolling v back"

assert_alive
stop_tesserad
