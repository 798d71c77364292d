#!/usr/bin/env bash
# A DR target whose stream ended without a promote, deleted: the delete
# removes its copy and a new stream of that name applies (session 22, helper
# tgtput; doc-promo "Found, not fixed" 1).  The site server held its handle
# of the target (tvol.vol) from the session's VOLUME_OPEN until it stopped,
# so after `replication disable` at the primary the DR's `volume detach` was
# not clean, its `volume delete` left the store copy ("Device or resource
# busy", for the 900 s leftover sweep) and a new stream of the name was
# refused "File exists".  Now the handle is put when the session ends.
# Asserted: at the DR, once idle, the detach is clean and the delete leaves
# no copy; a new stream of the name catches up and the DR's image equals the
# primary's (a write of 0x5e after the delete included).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"
require_tessera
sites_start_streaming te
old=$(rstat primary te 'j["stream"]')
out=$(stsr primary replication disable te 2>&1) || fail "replication disable te: $out"
rwait dr te 'j["state"] == "idle"' "idle after the disable" 10
out=$(stsr dr volume detach te 2>&1) || fail "volume detach te at the DR: $out"
[[ $out == *"not clean"* ]] && fail "the detach of the idle target te was not clean: $out"
out=$(stsr dr volume delete te 2>&1) || fail "volume delete te at the DR: $out"
[[ $out == *"is left"* ]] && fail "the delete of the idle target te left its store copy: $out"
site_qemu_io primary te "write -P 0x5e 1M 64k" >/dev/null || fail "write 0x5e at the primary"
out=$(stsr primary replication enable te --to dr --target-layout replicas:1 2>&1) ||
	fail "replication enable te again: $out"
new=$(rstat primary te 'j["stream"]')
[ "$new" != "$old" ] || fail "replication enable again kept stream $old"
repl_caught_up te 30
assert_eq "$(site_sha dr te)" "$(site_sha primary te)" "the DR's image of the new stream"
log "new stream $new (old $old) applied at the DR after the idle target's delete"
site_stop primary
site_stop dr
