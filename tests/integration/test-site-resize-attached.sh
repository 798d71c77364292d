#!/usr/bin/env bash
# Online resize and geo-replication: a site target is as large as its source
# was at `replication enable`, so an attached source that replicates must not
# grow (its writes past the target's end would break the stream).  Primary
# and DR sites (one node each), sv 8 MiB attached and replicating, streaming:
# `volume resize sv --size 16M` is refused naming the site ("replicates to
# site 'dr'"), the size unchanged (record, store copy, a new NBD connection);
# once replication is disabled the attached volume grows (16 MiB, written and
# read back past the old end).  Without the check the resize was accepted and
# the volume grew under a running stream.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/site.sh"

require_tessera
require_cmd nbdinfo
sites_start_linked
site_vol_create primary sv 8M
site_qemu_io primary sv "write -P 0x5a 0 1M" >/dev/null || fail "write sv"
out=$(stsr primary replication enable sv --to dr 2>&1) || fail "replication enable: $out"
rwait primary sv 'j["state"] == "streaming"' "streaming" 60

M=$((1 << 20))
expect_fail 1 "replicates to site 'dr'.*nothing changed" stsr primary volume resize sv --size 16M
assert_eq "$(stsr primary --json volume show sv | json_get 'j["size"]')" $((8 * M)) "sv's size after the refusal"
assert_eq "$(nbdinfo --size "$(site_uri primary sv)")" $((8 * M)) "sv's size seen by a new connection"

stsr primary replication disable sv >/dev/null || fail "replication disable"
stsr primary volume resize sv --size 16M >/dev/null || fail "resize of attached sv once not replicating"
assert_eq "$(stsr primary --json volume show sv | json_get 'j["size"]')" $((16 * M)) "sv's size after the resize"
assert_eq "$(nbdinfo --size "$(site_uri primary sv)")" $((16 * M)) "sv's size seen by a new connection"
site_qemu_io primary sv "write -P 0x6b 12M 1M" "read -P 0x6b 12M 1M" "read -P 0x5a 0 1M" >/dev/null ||
	fail "sv past the old end"
