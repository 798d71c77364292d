#!/usr/bin/env bash
# A forced detach of a volume that ships to a DR site (engine/cluster/attach.c
# detach_begin / detach_finish): its replication source stops only once the
# NBD clients it closed are gone and their requests answered, so the writes
# acknowledged during the drain go to the site's log like any other.  As for
# any clean detach, the source then stops once the site has acknowledged that
# log, or after the peer timeout (detach_drain_start; test-site-detach-drain).
# fv ships to dr (sites_start_streaming); an NBD client holds fv on the
# primary; `volume detach fv --force` closes it (clients_disconnected 1) and
# is clean; in the primary's log "volume fv stopped shipping to site dr"
# comes after the worker's "closing the connection of client ... to 'fv'"
# (before: the source stopped first, at the detach's start).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"

require_tessera
sites_start_streaming fv
PLOG=$(sdir primary)/tesserad.log

"$NBD_HOLD" "$(site_uri primary fv)" "$SITE_ROOT/held" watch &
HOLD=$!
track_pid "$HOLD"
for (( i=0; i<100; i++ )); do [ -f "$SITE_ROOT/held" ] && break; sleep 0.1; done
[ -f "$SITE_ROOT/held" ] || fail "nbd_hold did not connect"

from=$(( $(wc -l <"$PLOG") + 1 ))
out=$(stsr primary --json volume detach fv --force) || fail "volume detach fv --force: $out"
assert_eq "$(printf '%s' "$out" | json_get 'j["clients_disconnected"]')" 1 "clients_disconnected"
wait_dead "$HOLD" 5 "nbd_hold after the forced detach"
file_wait_from "$PLOG" "$from" "detach fv epoch [0-9]* from .* (clean)" \
	"the forced detach of fv was not logged clean"

# line numbers (after $from) of the client's close and of the source's stop
closed=$(tail -n +"$from" "$PLOG" | grep -n -m1 "closing the connection of client .* to 'fv'" |
	cut -d: -f1)
stopped=$(tail -n +"$from" "$PLOG" | grep -n -m1 "volume fv stopped shipping to site dr" |
	cut -d: -f1)
[ -n "$closed" ] || fail "the primary did not log the client's close"
[ -n "$stopped" ] || fail "the primary did not log fv's source stop"
[ "$stopped" -gt "$closed" ] ||
	fail "fv's source stopped (log line $stopped) before its NBD client was closed (line $closed)"
log "the source stopped after the forced client's close (log lines $closed < $stopped after the detach)"
log "PASS"
