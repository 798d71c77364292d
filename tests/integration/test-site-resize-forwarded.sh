#!/usr/bin/env bash
# Online resize of a replicating volume asked of a node that is not its
# coordinator: the primary site has two nodes, sv (2 replicas) is attached
# on primary-n1 and streams to the DR; `volume resize sv --size 16M` sent to
# primary-n2 asks the coordinator for step (a), which grows the DR's target
# first (the stream reopened), then n2 grows the copies and the record, and
# the coordinator its layout.  The DR and both records say 16 MiB, a write
# past the old end through n1 reaches the DR (read back there), the images
# are equal; with the link cut the same request through n2 is refused ("the
# DR site must grow first; the link is down"), nothing changed.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/site.sh"

require_tessera
require_cmd nbdinfo
sites_start_linked
P2=$SITE_ROOT/primary2
p2port=$(free_ports 1)
start_tesserad "$P2" --listen "127.0.0.1:$p2port" --node-id primary-n2 --zone z2 \
	--join "127.0.0.1:${SITE_PORT[primary]}" --token-file "$(sdir primary)/admin.token" \
	--peer-timeout 2000 --site primary
P2PID=$TSRD_PID
for (( i=0; i<300; i++ )); do
	got=$(stsr primary --json node list 2>/dev/null |
	      json_get 'sum(1 for n in j["nodes"] if n.get("alive"))' 2>/dev/null)
	[ "$got" = 2 ] && break
	sleep 0.1
done
[ "$got" = 2 ] || fail "primary-n2 did not join"
p2() { "$TESSERA" --data "$P2" "$@"; }

M=$((1 << 20))
stsr primary volume create sv --size 8M --replicas 2 >/dev/null || fail "volume create"
stsr primary volume attach sv --node primary-n1 >/dev/null || fail "volume attach"
site_qemu_io primary sv "write -P 0x5a 0 1M" >/dev/null || fail "write sv"
out=$(stsr primary replication enable sv --to dr --target-layout replicas:1 2>&1) ||
	fail "replication enable: $out"
repl_caught_up sv 60
psize() { stsr primary --json volume show sv | json_get 'j["size"]'; }
dsize() { stsr dr --json volume show sv | json_get 'j["size"]'; }

px cut
rwait primary sv 'j["state"] != "streaming"' "the source sees the link down" 30
expect_fail 1 "the DR site must grow first; the link is down.*nothing changed" \
	p2 volume resize sv --size 16M
assert_eq "$(psize) $(dsize)" "$((8 * M)) $((8 * M))" "sizes (primary, DR) after the refusal"
px pass
repl_caught_up sv 60

out=$(p2 volume resize sv --size 16M 2>&1) || fail "resize through primary-n2: $out"
assert_eq "$(psize) $(dsize)" "$((16 * M)) $((16 * M))" "sizes (primary, DR)"
assert_eq "$(nbdinfo --size "$(site_uri primary sv)")" $((16 * M)) "a new connection's size (primary)"
grep -q "the target took the new size, $((16 * M)) bytes" "$(sdir primary)/tesserad.log" ||
	fail "the coordinator's log does not say the target grew"
site_qemu_io primary sv "write -P 0x6b 12M 1M" >/dev/null || fail "write past the old end"
repl_caught_up sv 60
site_qemu_io dr sv "read -P 0x6b 12M 1M" "read -P 0x5a 0 1M" >/dev/null ||
	fail "the DR does not hold the write past the old end"
assert_eq "$(site_sha dr sv)" "$(site_sha primary sv)" "sha256 of the DR volume vs the source"
stsr primary replication disable sv >/dev/null || fail "replication disable"
stsr primary volume detach sv >/dev/null || fail "detach"
stop_tesserad "$P2PID"
site_stop primary
site_stop dr
