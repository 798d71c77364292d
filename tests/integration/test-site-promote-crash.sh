#!/usr/bin/env bash
# A DR promote killed between the site server's state write and the
# cluster's target/<vol> "promoted" (review revG), of a group and of one
# volume.  The state file says promoted, target/<vol> still names the
# stream: the attach after the restart fences the volume, and before the fix
# a second promote answered "promoted already" and did nothing: the promoted
# volume stayed fenced at the DR for good, and target/<vol> never said
# promoted, so a DR node with another state file of it (the listener moved)
# let the old primary's stream take it back (the hole review revE closed for
# a promote that finished).  Now a second promote finishes it: fence lifted,
# target/<vol> "promoted".  Checked: host writes at the DR after the second
# promote (0xd7); the DR restarted without pk's state file (another DR
# node), the old primary back: demoted, and 0xd7 read back.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"
require_tessera
sites_start_streaming pk
for v in ga gb; do # group pg: enabled before the attach (one home worker)
	stsr primary volume create $v --size 1M --replicas 1 >/dev/null || fail "create $v"
	out=$(stsr primary replication enable $v --to dr --group pg --target-layout replicas:1 2>&1) ||
		fail "enable $v: $out"
	stsr primary volume attach $v >/dev/null || fail "attach $v"
done
for v in ga gb; do
	rwait dr $v 'j["consistent"] and j["group"] == "pg"' "consistent at the DR" 30
done
site_stop primary
export TSR_TEST_PROMOTE_CRASH_FILE=$SITE_ROOT/promote-crash
site_stop dr
site_start dr # the hook in its environment
dr_attached() {
	[ -n "$(stsr dr --json volume show "$1" | json_get 'j.get("attached_node") or ""')" ] ||
		stsr dr volume attach "$1" >/dev/null || fail "attach $1 at the DR"
}
# crash_promote ARGS...: `replication promote ARGS` at the DR, killed after
# the server's state writes; the DR started again
crash_promote() {
	touch "$TSR_TEST_PROMOTE_CRASH_FILE"
	out=$(stsr dr replication promote "$@" 2>&1) && fail "promote $*: answered with the crash file: $out"
	site_wait_dead dr "killed at its promote $* (it answered: $out)"
	rm -f "$TSR_TEST_PROMOTE_CRASH_FILE"
	site_start dr
}
# --force: the members' markers may differ (the primary stopped mid-way)
crash_promote --group pg --force
out=$(stsr dr replication promote --group pg --force 2>&1) ||
	fail "promote --group again after the crash: $out"
for v in ga gb; do
	dr_attached $v
	site_qemu_io dr $v "write -P 0xd7 0 64k" >/dev/null || fail "host write at $v after the promote"
done
crash_promote pk
dr_attached pk
out=$(stsr dr replication promote pk 2>&1) || fail "the promote again after the crash: $out"
site_qemu_io dr pk "write -P 0xd7 0 64k" >/dev/null || fail "host write at the DR after the promote"
# another DR node (no state file of pk): refuses the old stream by target/pk
site_stop dr
rm -f "$(sdir dr)/site/pk.state"
site_start dr
site_start primary
[ -n "$(stsr primary --json volume show pk | json_get 'j.get("attached_node") or ""')" ] ||
	stsr primary volume attach pk >/dev/null || fail "attach pk at the old primary"
rwait primary pk 'j["demoted"]' "demoted" 15
dr_attached pk
site_qemu_io dr pk "read -P 0xd7 0 64k" | grepq "read 65536" || fail "the DR's data after the demotion"
site_stop primary
site_stop dr
