#!/usr/bin/env bash
# A promoted DR target, deleted: a new DR stream of that name applies
# (session 22, helper promo; doc-claimfix "Found, not fixed" 2).  `volume
# delete` leaves the target's state file in the DR's DIR/site/ (on purpose,
# ARCHITECTURE.md "volume delete of a target does not remove its state
# file"), still saying "promoted".  The site server must not take it for the
# volume of that name now: its target id (the deleted volume's uuid) is
# checked first (state_of_deleted, b7cc385 / 97bd854).
# The stream of pd caught up, the primary stopped, pd promoted at the DR,
# detached and deleted there; the primary back with pd detached (its source
# idle), replication disabled and enabled again (a new stream), pd attached.
# Asserted: at the DR, status of pd not "promoted" once deleted; the new
# stream streams, catches up (the DR consistent) and the DR's image equals
# the primary's (a write of 0x5e after the promote included); the primary
# never demoted.  On the code before b7cc385 (the id check made to answer
# "cannot tell"): "FAIL: site dr, pd: not not promoted after the delete".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"
require_tessera
sites_start_streaming pd
site_stop primary
out=$(stsr dr replication promote pd 2>&1) || fail "promote pd at the DR: $out"
rwait dr pd 'j["state"] == "promoted"' "promoted" 10
stsr dr volume detach pd >/dev/null || fail "volume detach pd at the DR"
out=$(stsr dr volume delete pd 2>&1) || fail "volume delete pd at the DR: $out"
[[ $out == *"is left"* ]] && fail "the delete of the promoted pd left its store copy: $out"
[ -e "$(sdir dr)/site/pd.state" ] || fail "the deleted target's state file is gone (update this test)"
# the cluster's promoted check (repl_target_promoted) reads this list too
rwait dr pd 'j["state"] != "promoted"' "not promoted after the delete" 5
site_start primary
site_qemu_io primary pd "write -P 0x5e 1M 64k" >/dev/null 2>&1 || true # pd detached: no-op
old=$(rstat primary pd 'j["stream"]')
out=$(stsr primary replication disable pd 2>&1) || fail "replication disable pd: $out"
out=$(stsr primary replication enable pd --to dr --target-layout replicas:1 2>&1) ||
	fail "replication enable pd again: $out"
stsr primary volume attach pd >/dev/null || fail "volume attach pd at the primary"
site_qemu_io primary pd "write -P 0x5e 1M 64k" >/dev/null || fail "write 0x5e at the primary"
new=$(rstat primary pd 'j["stream"]')
[ "$new" != "$old" ] || fail "replication enable again kept stream $old"
repl_caught_up pd 30
assert_eq "$(rstat primary pd 'j["demoted"]')" false "the primary demoted"
assert_eq "$(site_sha dr pd)" "$(site_sha primary pd)" "the DR's image of the new stream"
log "new stream $new (old $old) applied at the DR over its promoted state file"
site_stop primary
site_stop dr
