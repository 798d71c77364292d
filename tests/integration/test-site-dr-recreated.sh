#!/usr/bin/env bash
# A DR target deleted while its source keeps its stream (and its log), then
# created again by the stream's next VOLUME_OPEN, gets the whole volume
# (review revA, session 18).  The deleted target's state file stays in the
# DR's DIR/site/: before the fix the new, empty target resumed "after seq
# 3" and the source resent only its log tail (nothing), so the DR's copy
# differed from the source's while status said "receiving".  Now the state
# file names the target it describes (the record's uuid), the DR answers
# TSR_SITE_F_FRESH at applied 0, and the source marks every region dirty.
# Checked: the DR's image equals the source's (sha256), written before the
# delete (0x3c) and during the DR's absence (0x5d); the DR logged the
# re-created target.  Then once more with the state file removed too: the
# DR answers seq 0 without the flag, and the source's own rule (a resume
# point below the seq the target ACKed) copies it whole (0x7e meanwhile).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"
require_tessera
sites_start_streaming sf
full=${SITE_ARGS[dr]}
# recreate WHAT PATTERN OFFSET [rm]: delete the target at the DR (restarted
# without its site listener, so the delete is allowed), the state file too
# with rm; write PATTERN at OFFSET at the source meanwhile (a log tail the
# new target never saw); the DR back with its listener; the images compared.
recreate() {
	local what=$1 pattern=$2 off=$3 a b
	site_stop dr
	SITE_ARGS[dr]="--listen 127.0.0.1:${SITE_PORT[dr]} --node-id dr-n1 --zone z1 --meta --peer-timeout 2000 --site dr"
	site_start dr
	out=$(stsr dr volume delete sf 2>&1) || fail "delete at the DR: $out"
	[ -e "$(sdir dr)/site/sf.state" ] || fail "the deleted target's state file is gone"
	[ "${4:-}" = rm ] && rm -f "$(sdir dr)/site/sf.state"
	site_stop dr
	site_qemu_io primary sf "write -P $pattern $off 64k" >/dev/null || fail "write $pattern"
	SITE_ARGS[dr]=$full
	site_start dr
	rwait primary sf 'j["state"] == "streaming"' "streaming" 30
	repl_caught_up sf 30
	a=$(site_sha dr sf); b=$(site_sha primary sf)
	log "$what: dr $a primary $b"
	[ "$a" = "$b" ] || fail "DIVERGED: the recreated target ($what) differs from the source"
}
recreate "state file left" 0x5d 2M
grep -q "re-created target" "$(sdir dr)/tesserad.log" ||
	fail "the DR did not tell the source of the re-created target"
# volume show at the DR names the stream the target was created for
# (VolumeRecord.target_stream; session 19), text and --json
stream=$(rstat primary sf 'j["stream"]')
show=$(stsr dr volume show sf 2>&1) || fail "volume show sf at the DR: $show"
grep -q "^dr target: .*stream $stream " <<<"$show" ||
	fail "volume show sf at the DR does not name stream $stream: $show"
got=$(stsr dr --json volume show sf | json_get 'j["target_stream"]')
assert_eq "$got" "$stream" "volume show --json target_stream"
got=$(stsr primary --json volume show sf | json_get 'j["target_stream"]')
assert_eq "$got" "null" "the source's target_stream"
# the state file removed too (an operator, or a delete that removes it): the
# DR answers seq 0 without the flag; the source's own rule (a resume point
# below its acked seq) copies it whole
recreate "state file removed" 0x7e 3M rm
site_stop primary
site_stop dr
