#!/usr/bin/env bash
# The tessera CLI against a running tesserad: volume create/list/show/resize/
# delete (text and --json), every error path (exit 1 with a message, 2 for
# usage), the authenticated TCP admin listener, and a 16 TiB thin volume
# written at its last block.
. "$(dirname "$0")/functions.sh"

require_tessera "$NBD_HOLD"
require_cmd qemu-io nbdinfo

make_tmpdir D
start_tesserad "$D"

# ---------------------------------------------------------------- happy path
out=$(tsr "$D" volume create alpha --size 1G) || fail "create alpha: $out"
log "create: $out"
tsr "$D" volume create beta --size 64M >/dev/null || fail "create beta"

list_names() { json_get '" ".join(sorted(v["name"] for v in (j if isinstance(j, list) else j["volumes"])))'; }
names=$(tsr "$D" --json volume list | list_names) || fail "volume list --json is not JSON"
assert_eq "$names" "alpha beta" "volume list --json names"
tsr "$D" volume list | grepq alpha || fail "text volume list lacks alpha"

show=$(tsr "$D" --json volume show alpha) || fail "volume show alpha"
assert_eq "$(json_get 'j["name"]' <<<"$show")" alpha "show name"
assert_eq "$(json_get 'j["size"]' <<<"$show")" 1073741824 "show size"
uuid=$(json_get 'j["uuid"]' <<<"$show")
[[ $uuid =~ ^[0-9a-f-]{32,36}$ ]] || fail "show uuid looks wrong: $uuid"
[ -f "$D/volumes/$uuid.data" ] || fail "no data file $D/volumes/$uuid.data"
tsr "$D" volume show alpha | grepq alpha || fail "text volume show"

# Data written before a resize is still there after it; the new size is seen
# by NBD clients that connect afterwards.
qemu-io -f raw -c 'write -P 0x5a 1069547520 4096' "$(nbd_uri "$D" alpha)" >/dev/null ||
	fail "qemu-io write alpha"
tsr "$D" volume resize alpha --size 2G >/dev/null || fail "resize alpha 2G"
assert_eq "$(tsr "$D" --json volume show alpha | json_get 'j["size"]')" 2147483648 "size after resize"
assert_eq "$(nbdinfo --size "$(nbd_uri "$D" alpha)")" 2147483648 "NBD size after resize"
qemu-io -f raw -c 'read -P 0x5a 1069547520 4096' -c 'read -P 0 2147479552 4096' \
	"$(nbd_uri "$D" alpha)" >/dev/null || fail "data after resize"
# Same size is not an error (idempotent) or is a clear one; either way the size stays.
tsr "$D" volume resize alpha --size 2G >/dev/null 2>&1
assert_eq "$(tsr "$D" --json volume show alpha | json_get 'j["size"]')" 2147483648 "size after same-size resize"

status=$(tsr "$D" --json status) || fail "status --json"
json_get 'j' <<<"$status" >/dev/null || fail "status --json is not JSON: $status"
tsr "$D" status >/dev/null || fail "status"

# ---------------------------------------------------------------- errors
expect_fail 1 'exist' tsr "$D" volume create alpha --size 1G
expect_fail 1 'not found|no such|unknown|does not exist' tsr "$D" volume show nosuch
expect_fail 1 'not found|no such|unknown|does not exist' tsr "$D" volume delete nosuch
expect_fail 1 'not found|no such|unknown|does not exist' tsr "$D" volume resize nosuch --size 2G
expect_fail 1 'size|4096|4 ?KiB|multiple' tsr "$D" volume create odd --size 4097
expect_fail 1 'size|zero|0' tsr "$D" volume create zero --size 0
expect_fail 1 'size|invalid|parse' tsr "$D" volume create garbage --size 12xyz
expect_fail 1 'name' tsr "$D" volume create 'bad/name' --size 1G
expect_fail 1 'name' tsr "$D" volume create '.hidden' --size 1G
expect_fail 1 'name' tsr "$D" volume create "$(printf 'n%.0s' {1..80})" --size 1G
expect_fail 1 'shrink|smaller|grow' tsr "$D" volume resize alpha --size 1G
expect_fail 1 'size|4096|multiple' tsr "$D" volume resize alpha --size 3000000000
# Usage errors: exit 2.
expect_fail 2 '.' tsr "$D" volume create nosize
expect_fail 2 '.' tsr "$D" volume frobnicate
expect_fail 2 '.' "$TESSERA" --data "$D" --no-such-option volume list
# --help on every verb works.
for verb in create list show resize delete; do
	"$TESSERA" volume "$verb" --help >/dev/null 2>&1 || fail "volume $verb --help"
done
# delete's says every reason a copy is left and what removes it (review s21-revP)
help=$("$TESSERA" volume delete --help 2>&1 | tr '\n' ' ')
for want in "its node down or not answering, unknown, or its delete refused" \
	"by hand when the sweep is off"; do
	[[ $help == *"$want"* ]] || fail "volume delete --help does not say '$want': $help"
done
# Nothing was created by the failed calls.
names=$(tsr "$D" --json volume list | list_names)
assert_eq "$names" "alpha beta" "volume list after errors"
# A data dir with no daemon: a clear error.
make_tmpdir E
expect_fail 1 '.' "$TESSERA" --data "$E" volume list

# Delete refused while a client holds the export, allowed afterwards.
"$NBD_HOLD" "$(nbd_uri "$D" beta)" "$D/held" &
hold=$!
track_pid "$hold"
for (( i=0; i<100; i++ )); do [ -f "$D/held" ] && break; sleep 0.1; done
[ -f "$D/held" ] || fail "nbd_hold did not connect"
expect_fail 1 'in use|busy|open|connect' tsr "$D" volume delete beta
kill -TERM "$hold"
reap "$hold" || fail "nbd_hold exited with an error"
# the server drops the client once it has seen the disconnect: until then
# the delete is refused as in use (at most 10 s)
deleted=0
for (( i=0; i<100; i++ )); do
	out=$(tsr "$D" volume delete beta 2>&1) && { deleted=1; break; }
	printf '%s' "$out" | grepq -iE 'in use|busy|open' || break
	sleep 0.1
done
[ "$deleted" = 1 ] || fail "delete beta after the client left: $out"
names=$(tsr "$D" --json volume list | list_names)
assert_eq "$names" "alpha" "volume list after delete"
nbdinfo "$(nbd_uri "$D" beta)" >/dev/null 2>&1 && fail "deleted volume still exported"
# A re-created volume of the same name starts empty.
tsr "$D" volume create beta --size 64M >/dev/null || fail "re-create beta"
qemu-io -f raw -c 'read -P 0 0 1M' "$(nbd_uri "$D" beta)" >/dev/null || fail "re-created beta not zero"

# ---------------------------------------------------------------- 16 TiB thin volume
tsr "$D" volume create big --size 16T >/dev/null || fail "create 16 TiB volume"
big_uuid=$(tsr "$D" --json volume show big | json_get 'j["uuid"]')
assert_eq "$(nbdinfo --size "$(nbd_uri "$D" big)")" 17592186044416 "16 TiB NBD size"
last=$(( 17592186044416 - 4096 ))
qemu-io -f raw -c "write -P 0xab $last 4096" -c "write -P 0xcd 0 4096" \
	"$(nbd_uri "$D" big)" >/dev/null || fail "write at the end of 16 TiB"
qemu-io -f raw -c "read -P 0xab $last 4096" -c "read -P 0xcd 0 4096" \
	-c "read -P 0 $(( last / 2 )) 65536" "$(nbd_uri "$D" big)" >/dev/null ||
	fail "read back at the end of 16 TiB"
alloc=$(du -B1 -s "$D/volumes/" | cut -f1)
log "16 TiB volume written at both ends: $alloc bytes allocated in $D/volumes"
(( alloc < 256 * 1024 * 1024 )) || fail "16 TiB thin volume allocates $alloc bytes"
stop_tesserad
start_tesserad "$D"
qemu-io -f raw -c "read -P 0xab $last 4096" "$(nbd_uri "$D" big)" >/dev/null ||
	fail "16 TiB volume: last block lost across restart"
tsr "$D" volume delete big >/dev/null || fail "delete big"
[ -e "$D/volumes/$big_uuid.data" ] && fail "data file of deleted volume still there"

# ---------------------------------------------------------------- TCP admin
stop_tesserad
port=$(free_port)
start_tesserad "$D" --admin-listen "tcp:127.0.0.1:$port"
[ -s "$D/admin.token" ] || fail "no $D/admin.token with --admin-listen tcp"
perm=$(stat -c %a "$D/admin.token")
[[ $perm == 600 || $perm == 400 ]] || fail "admin.token mode is $perm, want 600"
out=$("$TESSERA" --cluster "127.0.0.1:$port" --token-file "$D/admin.token" --json volume list) ||
	fail "volume list over TCP with the token"
assert_eq "$(list_names <<<"$out")" "alpha beta" "volume list over TCP"
"$TESSERA" --cluster "127.0.0.1:$port" --token-file "$D/admin.token" volume create tcpvol --size 8M \
	>/dev/null || fail "create over TCP"
echo "not-the-token-$RANDOM" >"$D/wrong.token"
expect_fail 1 'auth|token|denied|permission' "$TESSERA" --cluster "127.0.0.1:$port" \
	--token-file "$D/wrong.token" volume list
expect_fail 1 'auth|token|denied|permission' "$TESSERA" --cluster "127.0.0.1:$port" \
	--token-file "$D/wrong.token" volume delete tcpvol
tsr "$D" volume show tcpvol >/dev/null || fail "tcpvol vanished after an unauthenticated delete"
# No token at all.
expect_fail 1 '.' "$TESSERA" --cluster "127.0.0.1:$port" volume list
# Garbage on the TCP admin port does not hurt the daemon.
"$PY" - "$port" <<'EOF' || true
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"\xff" * 100000)
s.close()
EOF
assert_alive
"$TESSERA" --cluster "127.0.0.1:$port" --token-file "$D/admin.token" volume show tcpvol >/dev/null ||
	fail "TCP admin after garbage"
stop_tesserad
