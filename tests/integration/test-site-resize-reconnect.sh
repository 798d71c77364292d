#!/usr/bin/env bash
# A source grown while detached, attached again: the DR grows its target
# before it accepts the stream (before: "target volume sv is smaller ...
# refused (resize it)", ENOSPC at every reconnect, the stream broken until an
# operator resized the DR volume).  Primary and DR sites (one node each):
# sv 8 MiB streaming, caught up; detached, resized to 24M, attached: the
# stream resumes (streaming, caught up), the DR's record and a new connection
# there say 24 MiB; writes past the old end (and the last block) reach the
# DR; the images are equal and the DR consistent.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/site.sh"

require_tessera
require_cmd nbdinfo
sites_start_linked
site_vol_create primary sv 8M
site_qemu_io primary sv "write -P 0x5a 0 1M" "write -P 0x5b 7M 1M" >/dev/null || fail "write sv"
out=$(stsr primary replication enable sv --to dr 2>&1) || fail "replication enable: $out"
rwait primary sv 'j["state"] == "streaming"' "streaming" 60
repl_caught_up sv 60

M=$((1 << 20))
dsize() { stsr dr --json volume show sv | json_get 'j["size"]'; }
stsr primary volume detach sv >/dev/null || fail "detach"
stsr primary volume resize sv --size 24M >/dev/null || fail "resize of detached sv"
assert_eq "$(dsize)" $((8 * M)) "the DR's size before the source attaches"
stsr primary volume attach sv >/dev/null || fail "attach"
repl_caught_up sv 60
assert_eq "$(dsize)" $((24 * M)) "the DR's size once the stream resumed"
assert_eq "$(nbdinfo --size "$(site_uri dr sv)")" $((24 * M)) "a new connection's size (DR)"
grep -q "site: target volume sv grown from $((8 * M)) to $((24 * M)) bytes" \
	"$(sdir dr)/tesserad.log" || fail "the DR's log does not say its target grew"
grep -q "is smaller" "$(sdir dr)/tesserad.log" && fail "the DR refused the larger source"
site_qemu_io primary sv "write -P 0x6b 16M 1M" "write -P 0x6c $((24 * M - 4096)) 4k" >/dev/null ||
	fail "write past the old end at the primary"
repl_caught_up sv 60
site_qemu_io dr sv "read -P 0x6b 16M 1M" "read -P 0x6c $((24 * M - 4096)) 4k" \
	"read -P 0x5a 0 1M" "read -P 0x5b 7M 1M" >/dev/null ||
	fail "the DR does not hold what was written (past the old end included)"
src=$(site_sha primary sv) || fail "read the source"
dst=$(site_sha dr sv) || fail "read the DR volume"
assert_eq "$dst" "$src" "sha256 of the DR volume vs the source"
assert_eq "$(rstat dr sv 'j["consistent"]')" true "the DR is consistent"
stsr primary replication disable sv >/dev/null || fail "replication disable"
site_stop primary
site_stop dr
