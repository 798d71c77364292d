#!/usr/bin/env bash
# Bad input on the NBD port: bad magic, unknown options and commands, unknown
# export, offsets and lengths past the end, a payload over 32 MiB, clients
# that vanish mid-request, random garbage (nbd_abuse.py, plain sockets).
# Afterwards: tesserad is alive, no byte of any volume changed, no file
# descriptor leaked, and a new client works.
. "$(dirname "$0")/functions.sh"

require_tessera
require_cmd nbdcopy nbdinfo qemu-io

make_tmpdir D
start_tesserad "$D"
vol_create "$D" victim 64M
vol_create "$D" other 16M
# victim: random data except its last MiB (a hole, for the sparse read case).
head -c 63M /dev/urandom >"$D/victim.img"
nbdcopy "$D/victim.img" "$(nbd_uri "$D" victim)" || fail "fill victim"
head -c 16M /dev/urandom >"$D/other.img"
nbdcopy "$D/other.img" "$(nbd_uri "$D" other)" || fail "fill other"

victim_sum() { nbdcopy "$(nbd_uri "$D" victim)" - | sha256sum | cut -d' ' -f1; }
other_sum() { nbdcopy "$(nbd_uri "$D" other)" - | sha256sum | cut -d' ' -f1; }
v0=$(victim_sum)
o0=$(other_sum)
assert_eq "$o0" "$(sha256 "$D/other.img")" "other volume after fill"
fds0=$(ls /proc/"$TSRD_PID"/fd | wc -l)

"$PY" "$TSR_SRC/tests/integration/nbd_abuse.py" "$D/nbd.sock" victim 67108864 ||
	fail "protocol abuse cases failed (see above)"
assert_alive

# Random garbage at every stage of the handshake.
"$PY" - "$D/nbd.sock" <<'PYEOF' || fail "garbage clients"
import os, random, socket, struct, sys
random.seed(int.from_bytes(os.urandom(4), "little"))
for i in range(300):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sys.argv[1])
    try:
        s.recv(18)
        n = random.choice((1, 4, 16, 100, 5000))
        head = struct.pack(">I", 3) if i % 2 else b""
        s.sendall(head + os.urandom(n))
        if i % 3 == 0:
            s.settimeout(0.2)
            s.recv(4096)
    except (OSError, socket.timeout):
        pass
    s.close()
print("300 garbage clients done")
PYEOF
assert_alive

# A new client works, nothing changed, nothing leaked.
assert_eq "$(nbdinfo --size "$(nbd_uri "$D" victim)")" 67108864 "victim size from a new client"
assert_eq "$(victim_sum)" "$v0" "victim volume checksum after the abuse"
assert_eq "$(other_sum)" "$o0" "other volume checksum after the abuse"
qemu-io -f raw -c 'write -P 0x42 0 4096' -c 'read -P 0x42 0 4096' "$(nbd_uri "$D" other)" >/dev/null ||
	fail "write + read by a new client"
# the daemon closes what the clients left behind: wait for it (up to 10 s)
for (( i=0; i<100; i++ )); do
	fds1=$(ls /proc/"$TSRD_PID"/fd | wc -l)
	(( fds1 <= fds0 + 2 )) && break
	sleep 0.1
done
log "tesserad fds: $fds0 before, $fds1 after"
(( fds1 <= fds0 + 2 )) || { ls -l /proc/"$TSRD_PID"/fd >&2; fail "fd leak: $fds0 -> $fds1"; }
grep -iE 'AddressSanitizer|runtime error|segfault' "$D/tesserad.log" && fail "sanitizer report in the log"
stop_tesserad
