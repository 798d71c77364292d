#!/usr/bin/env bash
# Consistency groups (issue 7): three volumes of one group replicated to the
# DR site are, at every pause of the link, ONE prefix of the group's merged
# acknowledged history, and promote --group makes them writable at one
# marker.
#
# Two single-node clusters, sites "primary" and "dr" (site.sh); the primary
# reaches the DR site listener through site_proxy.py.
#  1. g0, g1, g2 (4 MiB) are enabled with --group app, then attached (so the
#     cluster pins them to the group's home worker), and reach streaming.
#  2. ONE sequential writer (group_writer) writes 4 KiB blocks to a random
#     volume of the three, each acknowledged before the next: the counter it
#     writes into every block orders the writes of all three.  At random
#     moments the link is paused or cut; once the DR applied what it got,
#     the three DR volumes are read.
#  3. the writer ends, the link is restored, each volume catches up and
#     equals its source; every image set read at a pause is checked by
#     site_group_check.py: there must be one k such that every volume holds
#     exactly the writes with counter <= k (a prefix per volume at different
#     points is a failure).  replication status --group shows the members
#     and their marker.
#  4. more writes, the link cut for good while they run, promote --group app at the DR:
#     every member promoted at the same marker, the images one prefix, every
#     member takes a write.
# TSR_TEST_SITE_NO_GROUP_RULE=1 starts the DR without the release rule
# (test only): the test then expects at least one pause with NO common
# prefix, which shows the check can fail.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"

GROUP_WRITER=$TSR_BUILD/tests/group_writer
GROUP_CHECK=$TSR_SRC/tests/integration/site_group_check.py
require_tessera "$GROUP_WRITER"
NO_RULE=${TSR_TEST_SITE_NO_GROUP_RULE:-0}
[ "$NO_RULE" = 1 ] && export TSR_TEST_SITE_NO_GROUP_RULE=1
sites_start_linked

seed=${TSR_SEED:-$(( $(date +%s) % 100000 ))}
RANDOM=$seed
log "random seed $seed (TSR_SEED=$seed reproduces the fault schedule)${NO_RULE:+, no-rule=$NO_RULE}"
VOLS=(g0 g1 g2)

# ---- 1. the group
for v in "${VOLS[@]}"; do
	stsr primary volume create "$v" --size 4M --replicas 1 >/dev/null || fail "volume create $v"
	out=$(stsr primary replication enable "$v" --to dr --group app 2>&1) ||
		fail "replication enable $v: $out"
done
for v in "${VOLS[@]}"; do
	stsr primary volume attach "$v" >/dev/null || fail "volume attach $v"
done
for v in "${VOLS[@]}"; do
	rwait primary "$v" 'j["state"] == "streaming" and j["group"] == "app"' "streaming" 60
	rwait dr "$v" 'j["consistent"] and j["group"] == "app"' "consistent at the DR" 60
done
log "g0, g1, g2 stream to dr as group app"

# ---- 2. one writer, faults, the DR read at each pause
LOG=$SITE_ROOT/acked.log
uris=()
for v in "${VOLS[@]}"; do uris+=("$(site_uri primary "$v")"); done
"$GROUP_WRITER" write "$LOG" 22 256 "$seed" 0 "${uris[@]}" >"$SITE_ROOT/writer.out" 2>&1 &
WPID=$!
track_pid "$WPID"

checks=()
# group_settled: until the DR's applied seqs of the group stop moving (the
# link is stopped: what it received is applied); prints the last status.
group_settled() {
	local i a b=-1 same=0 st
	for (( i=0; i<100; i++ )); do
		st=$(stsr dr --json replication status --group app 2>/dev/null)
		a=$(printf '%s' "$st" | json_get '[(r["volume"], r["applied_seq"], r["consistent"], r["group_marker"]) for r in sorted(j["replications"], key=lambda r: r["volume"]) if r["role"] == "target"]' 2>/dev/null) || a=-2
		if [ "$a" = "$b" ]; then
			same=$((same + 1))
			[ "$same" -ge 2 ] && { printf '%s' "$st"; return 0; }
		else
			same=0
		fi
		b=$a
		sleep 0.2
	done
	fail "the DR's applied seqs of group app keep moving with the link stopped"
}

dr_images() {
	local tag=$1 v st
	st=$(group_settled)
	if [ "$(printf '%s' "$st" | json_get 'all(r["consistent"] for r in j["replications"] if r["role"] == "target")')" != true ]; then
		log "$tag: a member is not consistent at the DR (a resync is open): no check"
		return 0
	fi
	for v in "${VOLS[@]}"; do
		"$GROUP_WRITER" read "$(site_uri dr "$v")" "$SITE_ROOT/img-$tag-$v" \
			>"$SITE_ROOT/img-$tag-$v.out" 2>&1 ||
			{ cat "$SITE_ROOT/img-$tag-$v.out" >&2; fail "$tag: DR $v holds a torn block"; }
	done
	checks+=("$tag")
	log "$tag: DR $(printf '%s' "$st" | json_get '" ".join("%s@%s marker %s" % (r["volume"], r["applied_seq"], r["group_marker"]) for r in j["replications"] if r["role"] == "target")')"
}

events=(pause cut pause cut pause cut pause)
k=0
for e in "${events[@]}"; do
	k=$((k + 1))
	sleep "0.$(( RANDOM % 9 + 1 ))"
	case $e in
	pause) px pause; dr_images "pause$k"; px pass ;;
	cut) px cut; dr_images "cut$k"; px pass ;;
	esac
done
reap "$WPID" || { cat "$SITE_ROOT/writer.out" >&2; fail "the group writer failed"; }
log "$(tail -1 "$SITE_ROOT/writer.out")"

# ---- 3. catch up, equal, every pause one prefix
for v in "${VOLS[@]}"; do repl_caught_up "$v" 60; done
for v in "${VOLS[@]}"; do
	assert_eq "$(site_sha dr "$v")" "$(site_sha primary "$v")" "sha256 of DR $v vs the source"
done
[ "${#checks[@]}" -ge 3 ] || fail "only ${#checks[@]} pause points were consistent (want >= 3)"
bad=0
for tag in "${checks[@]}"; do
	imgs=()
	for v in "${VOLS[@]}"; do imgs+=("$SITE_ROOT/img-$tag-$v"); done
	if out=$("$PY" "$GROUP_CHECK" "$LOG" "${imgs[@]}"); then
		log "$tag: $out"
	else
		log "$tag: $out"
		bad=$((bad + 1))
	fi
done
if [ "$NO_RULE" = 1 ]; then
	[ "$bad" -gt 0 ] || fail "without the release rule every one of ${#checks[@]} pauses was still one prefix: the check did not show a mismatch"
	log "without the release rule $bad of ${#checks[@]} pauses were NO common prefix (expected)"
	site_stop primary
	site_stop dr
	exit 0
fi
[ "$bad" = 0 ] || fail "$bad of ${#checks[@]} pause points were not one prefix of the group's history"
st=$(stsr dr --json replication status --group app)
assert_eq "$(printf '%s' "$st" | json_get 'sorted(r["volume"] for r in j["replications"] if r["role"] == "target")')" \
	'["g0", "g1", "g2"]' "status --group app at the DR"
stsr dr replication status --group app | grepq "^  group app: g1 (target) at marker" ||
	fail "text status --group shows no marker"
stsr primary replication status --group app | grepq "^  group app: g1 (source) last marker sent" ||
	fail "source status --group shows no marker"

# ---- 4. disaster: writes, the link cut for good, promote --group
last=$(tail -1 "$LOG" | cut -d' ' -f1)
"$GROUP_WRITER" write "$LOG.2" 3 256 "$((seed + 7))" "$last" "${uris[@]}" >"$SITE_ROOT/writer2.out" 2>&1 &
WPID=$!
track_pid "$WPID"
sleep "1.$(( RANDOM % 10 ))"
px cut # the primary site is lost while the writer runs
reap "$WPID" || { cat "$SITE_ROOT/writer2.out" >&2; fail "second writer"; }
out=$(stsr dr --json replication promote --group app 2>&1) || fail "promote --group app: $out"
markers=$(printf '%s' "$out" | json_get '",".join(str(r["group_marker"]) for r in j["replications"])')
states=$(printf '%s' "$out" | json_get '",".join(r["state"] for r in j["replications"])')
assert_eq "$states" "promoted,promoted,promoted" "member states after promote --group"
[ "$(printf '%s' "$markers" | tr ',' '\n' | sort -u | wc -l)" = 1 ] ||
	fail "members promoted at different markers: $markers"
log "promoted at marker ${markers%%,*}"
cat "$LOG" "$LOG.2" >"$SITE_ROOT/all.log"
imgs=()
for v in "${VOLS[@]}"; do
	"$GROUP_WRITER" read "$(site_uri dr "$v")" "$SITE_ROOT/img-promote-$v" >/dev/null 2>&1 ||
		fail "promoted $v holds a torn block"
	imgs+=("$SITE_ROOT/img-promote-$v")
done
out=$("$PY" "$GROUP_CHECK" "$SITE_ROOT/all.log" "${imgs[@]}") ||
	fail "after promote --group the members are not one prefix: $out"
log "after promote: $out"
for v in "${VOLS[@]}"; do
	site_qemu_io dr "$v" "write -P 0x5a 0 4k" >/dev/null 2>&1 || fail "promoted $v refuses a write"
done
out=$(stsr dr replication promote --group app 2>&1) && fail "a second promote --group succeeded: $out"
# the group's marker numbers came from its persisted counter (site_marker.c)
[ "$(stat -c %s "$(sdir primary)/group-app.markers" 2>/dev/null)" = 24 ] ||
	fail "no marker counter $(sdir primary)/group-app.markers at the primary"
site_stop primary
site_stop dr
