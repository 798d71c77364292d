#!/usr/bin/env bash
# A volume delete that leaves many copies (their nodes stopped) still says
# of each one that it is left, or counts it, and what removes them (review
# s21-revP).  7 nodes, `--ec 5+2` volume of a 62-character name, one copy on
# each node; n2..n7 stopped (their asks refused at once), the delete through
# n1: the reply (error 0) must end with the leftover sweep's sentence, and
# every one of the six copies be named in it or counted in its "N more"; its
# --json "left" lists all six.  Before: the message was cut at 1023 bytes
# (admin_fail) inside n6's entry: n7 and the sweep's sentence were lost.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
cl_start 7
V=v$(printf 'x%.0s' {1..61})
ctsr volume create "$V" --size 4M --ec 5+2 >/dev/null || fail "volume create $V --ec 5+2"
for i in 2 3 4 5 6 7; do cl_stop "$i"; done
out=$(ctsr --json volume delete "$V" 2>&1) || fail "volume delete $V: $out"
msg=$(json_get 'j["message"]' <<<"$out") || fail "volume delete --json has no message: $out"
left=$(json_get '" ".join(c["node"] for c in j.get("left", []))' <<<"$out")
log "the reply (${#msg} bytes): $msg"
[ "$left" = "n2 n3 n4 n5 n6 n7" ] || fail "--json 'left' is '$left', not n2..n7: $out"
[[ $msg == *"the leftover sweep removes it after its grace (--leftover-grace, 900 s)" ]] ||
	fail "the reply does not end with what removes the copies left: $msg"
named=0
for i in 2 3 4 5 6 7; do
	[[ $msg == *"its copy on n$i is left ("* ]] && named=$(( named + 1 ))
done
more=0
[[ $msg =~ ([0-9]+)\ more\ cop ]] && more=${BASH_REMATCH[1]}
(( named + more == 6 )) ||
	fail "the reply names $named copies left and counts $more more, not 6: $msg"
cl_stop_all
