#!/usr/bin/env bash
# `volume status` counts CRC errors over every copy, not only the
# coordinator's own (peer STATS, TSR_PEER_FEAT_STATS; session 17): the
# coordinator asks each remote copy's node for its store counters once a
# second, off the control path, and publishes them with the layout status.
# Three nodes, n3 answering HELLO as an earlier build
# (TSR_TEST_PEER_NO_FEATURES: no STATS is sent to it, it is not counted and
# the status says so).  A 3-copy mirror attached on n1:
#  1. before any damage: crc_errors 0, n1's and n2's copies counted (0),
#     n3's null and named in copies_not_counted (its build);
#  2. one block of n2's copy (a REMOTE copy) overwritten in its data file:
#     the scrub's SUMS on n2 fail its CRC; then n1's status has crc_errors
#     >= 1, n2's copy >= 1, n1's 0 (before: only the coordinator's copies
#     were counted, crc_errors stayed 0), in --json and text;
#  3. an ec 2+1 volume, n2's chunk damaged the same way: the same in its
#     status (the copy set's code, shared by both layouts);
#  4. n2 restarted as an earlier build: its former answers are dropped (its
#     copies not counted, named), mirror and ec (review 17b: they stayed
#     counted for good);
#  5. detached: copies_not_counted says "no coordinator" (review 17b: it
#     said "an earlier tesserad coordinates the volume").
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd qemu-io dd

# damage FILE OFF: overwrite the 4 KiB block at OFF of FILE with 0x5a, past
# its CRC (what a bad sector would return)
damage() {
	"$PY" -c 'import sys; sys.stdout.buffer.write(b"\x5a" * 4096)' |
		dd of="$1" bs=4096 seek=$(( $2 / 4096 )) count=1 conv=notrunc,fsync status=none ||
		fail "damage $1 at $2"
}
# counters VOL: "TOTAL n1 n2 n3 | NOT_COUNTED" from VOL's --json status, each
# count as 0, + (>= 1: a scrub may read a bad block more than once) or None
# (not counted), each copy not counted as NODE:first word of why
counters() {
	vstatus "$1" '" ".join([str(n if n in (0, None) else "+") for n in [j["crc_errors"]] + [c.get("crc_errors") for c in sorted(j["volume"]["copies"], key=lambda c: c["node"])]] + ["|"] + sorted(c["node"] + ":" + c["why"].split()[0] for c in j.get("copies_not_counted", [])))'
}
# wait_counters VOL WANT WHAT: until counters VOL prints WANT (the remote
# copies' counters arrive within a second or two); fails after 15 s
wait_counters() {
	local i got
	for (( i=0; i<150; i++ )); do
		got=$(counters "$1") || fail "volume status $1: $got"
		[ "$got" = "$2" ] && return 0
		sleep 0.1
	done
	fail "$3: volume status $1 counters (total n1 n2 n3 | not counted): '$got', want '$2'"
}

cl_start 3
cl_stop 3
TSR_TEST_PEER_NO_FEATURES=1 cl_start_node 3
cl_wait_nodes_alive 3

# ---- 1, 2. mirror
ctsr volume create mv --size 8M --replicas 3 >/dev/null || fail "create mv"
assert_eq "$(cl_copy_nodes mv)" "n1,n2,n3" "copies of mv"
ctsr volume attach mv --node n1 >/dev/null || fail "attach mv on n1"
cl_qemu_io 1 mv "write -P 0x61 0 4M" >/dev/null || fail "write mv"
wait_counters mv "0 0 0 None | n3:its" "1. mirror before the damage"
log "1. mirror: n1 and n2 counted, n3 (an earlier build) named as not counted"
damage "$(cl_copy_file 2 mv)" $(( 1 << 20 ))
out=$(ctsr --json volume scrub mv) || fail "scrub mv exited non-zero: $out"
(( $(printf '%s' "$out" | json_get 'j["scrub_repaired"]') >= 1 )) ||
	fail "2. the scrub repaired nothing of n2's damaged block: $out"
wait_counters mv "+ 0 + None | n3:its" "2. mirror after the scrub met n2's bad block"
txt=$(ctsr volume status mv)
printf '%s\n' "$txt" | grepq "crc errors: [1-9][0-9]* on 2 of 3 copies (0 on the coordinator's)" ||
	fail "2. text status has no total over the copies: $txt"
printf '%s\n' "$txt" | grepq "n2: [1-9][0-9]* CRC errors" || fail "2. text status does not name n2: $txt"
printf '%s\n' "$txt" | grepq "n3: not counted (its node's build does not serve peer STATS)" ||
	fail "2. text status does not say n3 is not counted: $txt"
log "2. mirror: n2's bad block counted on n1's status:"
printf '%s\n' "$txt" | sed -n '/^crc errors/,$p' >&2
cl_scrub_clean mv "2. after the repair"

# ---- 3. ec 2+1
ctsr volume create ev --size 4M --ec 2+1 --stripe-unit 16K --failure-domain zone >/dev/null ||
	fail "create ev"
ctsr volume attach ev --node n1 >/dev/null || fail "attach ev on n1"
cl_qemu_io 1 ev "write -P 0x62 0 4M" >/dev/null || fail "write ev"
wait_counters ev "0 0 0 None | n3:its" "3. ec before the damage"
damage "$(cl_copy_file 2 ev)" $(( 1 << 19 ))
out=$(ctsr --json volume scrub ev) || fail "scrub ev exited non-zero: $out"
wait_counters ev "+ 0 + None | n3:its" "3. ec after the scrub met n2's bad block"
log "3. ec: n2's bad chunk block counted on n1's status"

# ---- 4. n2 restarted as an earlier build: its copies' last answers (n2's
# bad block, from its former build) are no longer counted; it is named
cl_stop 2
TSR_TEST_PEER_NO_FEATURES=1 cl_start_node 2
cl_wait_nodes_alive 3
cl_wait_synced mv 30
cl_wait_synced ev 30
wait_counters mv "0 0 None None | n2:its n3:its" "4. mirror, n2 an earlier build now"
wait_counters ev "0 0 None None | n2:its n3:its" "4. ec, n2 an earlier build now"
log "4. n2 restarted as an earlier build: its former answers dropped, named not counted"
ctsr volume detach ev >/dev/null || fail "detach ev"
ctsr volume detach mv >/dev/null || fail "detach mv"

# ---- 5. detached: no coordinator, which copies_not_counted says (not
# "an earlier tesserad")
assert_eq "$(vstatus mv '" ".join(sorted(set(c["why"] for c in j["copies_not_counted"])))')" \
	"no coordinator (the volume is detached)" "5. why mv's copies are not counted, detached"
log "5. detached: copies not counted, no coordinator"
cl_stop_all
log ok
