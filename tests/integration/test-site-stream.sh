#!/usr/bin/env bash
# Async geo-replication, streaming under a bad link (issue 7): the DR copy is
# a prefix of the source's acknowledged write history at every pause, and
# equals the source once caught up.
#
# Two single-node clusters, sites "primary" and "dr" (site.sh); the primary
# reaches the DR site listener through site_proxy.py.
#  1. an 8 MiB volume gets the history writer's self-describing blocks
#     (crash_writer, 2 s), is grown to 64 MiB, and replicated to dr: the
#     initial copy ships about the allocated bytes (at most the 8 MiB the
#     data spans, in 64 KiB regions), not 64 MiB (region_bytes_shipped),
#     while the writer already runs again.
#  2. the writer goes on for 20 s at random offsets; at random moments the
#     link is paused, cut, throttled or delayed (twice each, in a random
#     order).  At each pause and cut, once
#     the DR has applied what it received, its volume is read through its NBD
#     export (`crash_writer seqs`: every block must be a whole valid write).
#  3. the writer ends; the link is restored; the source catches up (lag 0,
#     every seq ACKed, the DR consistent); every image read at a pause is
#     checked against the complete acknowledged history (site_history.py: a
#     prefix of the volume's acknowledgment order), and the final DR volume
#     equals the source byte for byte.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"

require_tessera "$CRASH_WRITER"
sites_start_linked

seed=${TSR_SEED:-$(( $(date +%s) % 100000 ))}
RANDOM=$seed
log "random seed $seed (TSR_SEED=$seed reproduces the fault schedule)"

# ---- 1. initial data, initial copy
site_vol_create primary sv 8M
LOG=$SITE_ROOT/acked.log
: >"$LOG"
"$CRASH_WRITER" write "$(site_uri primary sv)" "$LOG" --qd 8 --conns 2 --seq-base 1000000000 \
	--seed "$seed" --duration 2 >"$SITE_ROOT/writer0.out" 2>&1 ||
	{ cat "$SITE_ROOT/writer0.out" >&2; fail "initial writes"; }
stsr primary volume detach sv >/dev/null || fail "detach for resize"
stsr primary volume resize sv --size 64M >/dev/null || fail "resize to 64M"
stsr primary volume attach sv >/dev/null || fail "attach after resize"
alloc=$(stsr primary --json volume show sv | json_get 'j["allocated"]')
log "source volume: 64 MiB, $alloc bytes allocated, $(wc -l <"$LOG") initial writes"

out=$(stsr primary replication enable sv --to dr 2>&1) || fail "replication enable: $out"
log "$out"

# The initial copy runs alone: a writer started now writes across all 64 MiB,
# and every region it touches before the copy passes it is shipped as a region
# too, so on a slow (loaded) machine the region figure below would count the
# writer, not the allocated extents. The writes that follow meet the link's
# faults in part 2 (a cut turns them into dirty regions again).
rwait primary sv 'j["state"] == "streaming" and j["sync_total_bytes"] == 0' "streaming after the initial copy" 60
region=$(rstat primary sv 'j["region_bytes_shipped"]')
log "initial copy shipped $region region bytes for $alloc allocated (volume 67108864)"
[ "$region" -ge $(( alloc * 9 / 10 )) ] ||
	fail "initial copy shipped $region bytes, less than the $alloc allocated"
# the data spans the first 8 MiB (random 4 KiB blocks: about every 64 KiB
# region of it is touched); the other 56 MiB were never written
[ "$region" -le $(( 8 << 20 )) ] ||
	fail "initial copy shipped $region bytes for $alloc allocated in the first 8 MiB: not the allocated extents only"

"$CRASH_WRITER" write "$(site_uri primary sv)" "$LOG" --qd 4 --conns 2 --seq-base 2000000000 \
	--seed "$((seed + 1))" --duration 20 >"$SITE_ROOT/writer.out" 2>&1 &
WPID=$!
track_pid "$WPID"

# ---- 2. faults at random moments; the DR read at each pause
checks=()
dr_snapshot() {
	local tag=$1 a b cons try
	# The DR applies what had passed the proxy before it stopped (socket
	# buffers, the apply window), so it settles first: the same applied_seq
	# for 0.6 s. On a loaded machine one apply can stall longer than that
	# (a flush behind another process's I/O): if applied_seq moved while the
	# image was read, the read is of no known point and is taken again. A DR
	# that kept applying with nothing arriving fails after three tries.
	for try in 1 2 3; do
		a=$(dr_settled sv)
		cons=$(rstat dr sv 'j["consistent"]')
		if [ "$cons" != true ]; then
			log "$tag: the DR is not consistent (a region copy is open): not a prefix point, no check"
			return 0
		fi
		"$CRASH_WRITER" seqs "$(site_uri dr sv)" "$SITE_ROOT/seqs-$tag" >"$SITE_ROOT/seqs-$tag.out" 2>&1 ||
			{ cat "$SITE_ROOT/seqs-$tag.out" >&2; fail "$tag: the DR volume holds a block that is no whole write"; }
		b=$(rstat dr sv 'j["applied_seq"]')
		[ "$a" = "$b" ] && break
		log "$tag: the DR applied $a -> $b while its image was read (try $try): settling again"
	done
	[ "$a" = "$b" ] || fail "$tag: the DR applied frames while the link was stopped ($a -> $b, three tries)"
	checks+=("$tag")
	log "$tag: DR read at applied seq $a ($(wc -l <"$SITE_ROOT/seqs-$tag") written blocks)"
}

# two of each, in a random order, 0.1 to 2 s apart
events=(pause cut throttle delay pause cut)
for (( k=${#events[@]}-1; k>0; k-- )); do
	j=$(( RANDOM % (k + 1) ))
	e=${events[k]}; events[k]=${events[j]}; events[j]=$e
done
k=0
for e in "${events[@]}"; do
	k=$((k + 1))
	sleep "$(( RANDOM % 2 )).$(( RANDOM % 10 + 1 ))"
	case $e in
	pause) px pause; dr_snapshot "pause$k"; px pass ;;
	cut) px cut; dr_snapshot "cut$k"; sleep 1; px pass ;;
	throttle) px throttle $(( (RANDOM % 4 + 1) << 20 )); sleep 2; px pass ;;
	delay) px delay $(( RANDOM % 80 + 20 )); sleep 2; px pass ;;
	esac
done
reap "$WPID" || { cat "$SITE_ROOT/writer.out" >&2; fail "the history writer failed"; }
log "writer: $(grep -o '[0-9]* acknowledged' "$SITE_ROOT/writer.out" | tail -1)"
# one more pause point for sure, while the stream is busy catching up
px pause
dr_snapshot final-pause
px pass

# ---- 3. catch up; every pause image a prefix; the end equal
repl_caught_up sv 90
[ "${#checks[@]}" -ge 3 ] || fail "only ${#checks[@]} pause points were consistent (want >= 3)"
for tag in "${checks[@]}"; do
	out=$(site_history check "$SITE_ROOT/seqs-$tag" "$LOG") ||
		{ printf '%s\n' "$out" >&2; fail "$tag: the DR image is not a prefix of the history"; }
	log "$tag: ${out#site_history: }"
done
"$CRASH_WRITER" seqs "$(site_uri dr sv)" "$SITE_ROOT/seqs-end" >/dev/null 2>&1 || fail "final DR read"
site_history check "$SITE_ROOT/seqs-end" "$LOG" >/dev/null || fail "final DR image not a prefix"
src=$(site_sha primary sv) || fail "read the source"
dst=$(site_sha dr sv) || fail "read the DR volume"
assert_eq "$dst" "$src" "sha256 of the DR volume vs the source"
st=$(stsr primary --json replication status sv)
log "equal ($src); shipped $(printf '%s' "$st" | json_get 'j["bytes_shipped"]') bytes, $(printf '%s' "$st" | json_get 'j["reconnects"]') reconnects, ${#checks[@]} prefix checks"
assert_eq "$(rstat dr sv 'j["role"]')" target "DR role"
stsr primary replication status sv >/dev/null || fail "text status"
stsr primary replication disable sv >/dev/null || fail "replication disable"
site_stop primary
site_stop dr
