#!/usr/bin/env bash
# A DR target with an erasure-coded layout (ec:2+1 on a 3-node DR), created
# by the DR's target_create (replication.c, session 15): its chunk copies are
# made at the chunk volume size with the ec flag (this node's through its
# store, the others' by an async local_copy VolumeCreate with ec and the
# stripe unit), the record says ec 2+1 at the volume's size, one copy per
# node.  The stream reaches streaming, the DR's image equals the source's
# (sha256), and a scrub of the target decodes every stripe.  No other test
# creates an ec target (test-site-cli only checks --target-layout's
# validation).  A regression test: it passes on the code before too
# (cluster_volume_create made the target then).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/site.sh"
require_tessera
sites_setup
site_start dr
P=()
for n in 2 3; do
	port=$(free_ports 1)
	start_tesserad "$SITE_ROOT/dr$n" --listen "127.0.0.1:$port" --node-id dr-n$n --zone z$n \
		--join "127.0.0.1:${SITE_PORT[dr]}" --token-file "$(sdir dr)/admin.token" \
		--peer-timeout 2000 --site dr
	P+=("$TSRD_PID")
done
for (( i=0; i<300; i++ )); do
	got=$(stsr dr --json node list 2>/dev/null |
	      json_get 'sum(1 for n in j["nodes"] if n.get("alive"))' 2>/dev/null)
	[ "$got" = 3 ] && break
	sleep 0.1
done
[ "$got" = 3 ] || fail "the DR has $got nodes alive, not 3"
site_start primary
proxy_start
site_add_dr primary dr
site_vol_create primary ev 8M
site_qemu_io primary ev "write -P 0x33 0 3M" "write -P 0x34 $((8 * 1048576 - 4096)) 4k" >/dev/null || fail "write ev"
out=$(stsr primary replication enable ev --to dr --target-layout ec:2+1 2>&1) ||
	fail "replication enable ev: $out"
rwait primary ev 'j["state"] == "streaming"' "streaming" 60
repl_caught_up ev 60
got=$(stsr dr --json volume show ev |
      json_get '"%d+%d %d %s" % (j["ec_k"], j["ec_m"], j["size"], " ".join(sorted(c["node"] for c in j["copies"])))')
assert_eq "$got" "2+1 $((8 * 1048576)) dr-n1 dr-n2 dr-n3" "ev's record at the DR (ec, size, copies)"
grep -q "site: target volume ev created (ec:2+1)" "$(sdir dr)/tesserad.log" ||
	fail "the DR's log does not say it created ev"
assert_eq "$(site_sha dr ev)" "$(site_sha primary ev)" "sha256 of ev at the DR vs the source"
site_qemu_io dr ev "read -P 0x33 0 3M" "read -P 0x34 $((8 * 1048576 - 4096)) 4k" >/dev/null ||
	fail "ev's data at the DR"
out=$(stsr dr volume scrub ev 2>&1) || fail "scrub of ev at the DR: $out"
stsr primary replication disable ev >/dev/null || fail "replication disable ev"
stsr primary volume detach ev >/dev/null || fail "detach ev"
site_stop primary
for p in "${P[@]}"; do stop_tesserad "$p"; done
site_stop dr
