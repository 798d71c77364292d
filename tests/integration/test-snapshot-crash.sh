#!/usr/bin/env bash
# Crash during snapshot create and delete (standalone node).
#
# Each round writes a new pattern to part of a volume, records the volume's
# image, then runs `snapshot create` (and, every other round, `snapshot
# delete` of an older snapshot) and kills tesserad with SIGKILL at a random
# moment 0..40 ms later.  After the restart:
#  - the snapshot being created exists whole (its image equals the image
#    recorded before the cut) or not at all; the one being deleted exists
#    whole or not at all;
#  - every other snapshot still reads back its recorded image, and so does
#    the volume;
# At the end every snapshot is deleted and only the volume's own files are
# left in the data directory (no space leaked by interrupted operations).
#
# Rounds: TSR_SNAP_CRASH_ROUNDS (default 16; 60 with --long).
. "$(dirname "$0")/functions.sh"

rounds=${TSR_SNAP_CRASH_ROUNDS:-16}
[ "${1:-}" = --long ] && rounds=60

require_tessera
require_cmd nbdcopy qemu-io

make_tmpdir D
start_tesserad "$D"
vol_create "$D" cv 16M
uri=$(nbd_uri "$D" cv)

declare -A want # snapshot name -> sha256 of its image

img_hash() { nbdcopy "$(nbd_uri "$D" "$1")" - | sha256sum | cut -d' ' -f1; }
listed() {
	tsr "$D" --json snapshot list cv | "$PY" -c '
import json, sys
j = json.load(sys.stdin)
l = j["snapshots"] if isinstance(j, dict) else j
print(" ".join(s["name"] for s in l))'
}

for (( r=1; r<=rounds; r++ )); do
	# A new pattern on 1 MiB at a random place, then the image the cut must hold.
	off=$(( (RANDOM % 15) * 1048576 ))
	qemu-io -f raw "$(qemu_nbd_spec "$D" cv)" -c "write -P $(( r % 250 + 1 )) $off 1M" >/dev/null ||
		fail "round $r: write"
	head_hash=$(img_hash cv)

	victim=
	names=("${!want[@]}")
	if (( r % 2 == 0 && ${#names[@]} > 0 )); then
		victim=${names[RANDOM % ${#names[@]}]}
		tsr "$D" snapshot delete cv "$victim" >/dev/null 2>&1 &
		p1=$!
	fi
	tsr "$D" snapshot create cv "r$r" >/dev/null 2>&1 &
	p2=$!
	sleep "0.0$(( RANDOM % 40 ))"
	kill9_tesserad
	wait "$p2" 2>/dev/null || true
	[ -n "$victim" ] && { wait "$p1" 2>/dev/null || true; }

	start_tesserad "$D"
	have=" $(listed) "
	if [[ $have == *" r$r "* ]]; then
		got=$(img_hash "cv@r$r")
		[ "$got" = "$head_hash" ] || fail "round $r: snapshot r$r exists but is not whole"
		want[r$r]=$head_hash
		state="created"
	else
		state="not created"
	fi
	if [ -n "$victim" ]; then
		if [[ $have == *" $victim "* ]]; then
			state+=", $victim kept"
		else
			unset "want[$victim]"
			state+=", $victim deleted"
		fi
	fi
	nwant=0 # counted here: ${#want[@]} of an emptied array trips set -u in bash 5.2
	for s in "${!want[@]}"; do
		[[ $have == *" $s "* ]] || fail "round $r: snapshot $s vanished"
		[ "$(img_hash "cv@$s")" = "${want[$s]}" ] || fail "round $r: snapshot $s changed"
		nwant=$((nwant + 1))
	done
	[ "$(img_hash cv)" = "$head_hash" ] || fail "round $r: the volume changed"
	log "round $r/$rounds: $state; $nwant snapshots intact"
done

for s in "${!want[@]}"; do
	tsr "$D" snapshot delete cv "$s" >/dev/null || fail "snapshot delete cv $s"
done
uuid=$(tsr "$D" --json volume show cv | json_get 'j["uuid"]')
stop_tesserad
others=$(find "$D/volumes" -type f ! -name "$uuid*" | wc -l)
[ "$others" = 0 ] || { ls -l "$D/volumes" >&2; fail "$others files left behind by snapshots"; }
log "$rounds rounds; every snapshot deleted, no file left behind"
