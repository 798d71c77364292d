#!/usr/bin/env bash
# Concurrent admin commands on one tesserad (as Kubernetes retries, parallel
# PVC creation and snapshot schedules issue them), against a standalone node
# with embedded metadata.  For $TSR_RACE_SECS (default 20) s, while two
# crash_writers write (one to `hist`, one to `grow`), 6 loops of the CLI run
# side by side:
#   vols A, vols B  create/delete of the same three names v0 v1 v2, a
#                   snapshot k of each, its rollback and delete, clones d0 d1
#                   d2 of vN@k and their delete (a volume or snapshot deleted
#                   with a clone is hidden until its clone goes), a delete of
#                   the in-use `hist` (refused);
#   snaps           snapshot create/delete/list/show of hist (names s0..s3),
#                   a rollback of the in-use hist (refused);
#   resize          grow `grow` by 4 MiB a step under I/O, volume show;
#   clones          clone c0..c2 from hist@sK or from the live hist, delete it;
#   lists           volume list --json and status --json (must parse);
#   reads           nbdcopy of hist@sN while it is deleted and cloned (a
#                   backup reading a snapshot: its requests fill the worker's
#                   io queue under hist's copies on write; TSR_RACE_READERS=0
#                   leaves it out).
# Every command has a timeout and its exit status and message are recorded:
# exit 0, or exit 1 with a message that says why (exists, not found, in use,
# ...) is fine; a crash, a hang, a message-less failure or any other exit is
# not.  At the end: tesserad alive and answering; both writers' acknowledged
# writes read back (crash_writer verify); every remaining snapshot of hist and
# every remaining clone is a consistent cut of hist's write history
# (crash_writer snapcheck); grow has the size of the last acknowledged
# resize; after a clean stop the catalogue (store.db) and the files under
# volumes/ agree both ways (no file without a row, no row without its .data
# and .crc), no hidden snapshot layer outlives its last clone (the code before
# kept the layer of a clone deleted while its source had writes in flight
# until the next open: about 15 of them after 20 s here, each taking the
# source's copies on write), no delete left unfinished, and `volume list` is
# the catalogue's visible rows; a restart opens everything (no orphan
# removed, every volume and snapshot reads whole, the writers' data still
# verifies).
. "$(dirname "$0")/functions.sh"

require_tessera "$CRASH_WRITER"
require_cmd nbdcopy timeout

SECS=${TSR_RACE_SECS:-20}
TMO=20     # seconds one CLI command may take before it counts as a hang
MiB=$(( 1024 * 1024 ))

make_tmpdir D
start_tesserad "$D"
vol_create "$D" hist 64M
vol_create "$D" grow 16M
echo $(( 16 * MiB )) >"$D/grow.size"

# ---------------------------------------------------------------- writers
: >"$D/hist.log"
: >"$D/grow.log"
"$CRASH_WRITER" write "$(nbd_uri "$D" hist)" "$D/hist.log" --qd 8 --conns 2 \
	--duration "$SECS" --seed $(( RANDOM * 65536 + RANDOM )) >"$D/hist-writer.out" 2>&1 &
whist=$!
track_pid "$whist"
"$CRASH_WRITER" write "$(nbd_uri "$D" grow)" "$D/grow.log" --qd 4 --conns 1 \
	--duration "$SECS" --seed $(( RANDOM * 65536 + RANDOM )) >"$D/grow-writer.out" 2>&1 &
wgrow=$!
track_pid "$wgrow"

# ---------------------------------------------------------------- loops
# run LOOP ARGS...: one CLI command; appends "rc<TAB>args<TAB>first 400
# bytes of its output" to $D/cmd-LOOP.log; returns its exit status and leaves
# its output in $OUT.
run() {
	local loop=$1 rc
	shift
	OUT=$(timeout -k 5 "$TMO" "$TESSERA" --data "$D" "$@" 2>&1) && rc=0 || rc=$?
	printf '%s\t%s\t%s\n' "$rc" "$*" "$(printf '%s' "$OUT" | head -c 400 | tr '\n\t' '  ')" \
		>>"$D/cmd-$loop.log"
	return "$rc"
}
END=$(( $(date +%s) + SECS ))
# pick VAR WORDS...: VAR = one of WORDS at random (no subshell: $RANDOM moves on)
pick() { local -n _r=$1; shift; local a=("$@"); _r=${a[RANDOM % ${#a[@]}]}; }

loop_vols() { # vols A / vols B: the same names, overlapping
	local me=$1 v
	RANDOM=$BASHPID   # each loop its own sequence
	while (( $(date +%s) < END )); do
		pick v v0 v1 v2
		case $(( RANDOM % 10 )) in
		0|1) run "$me" volume create "$v" --size 8M ;;
		2|3) run "$me" volume delete "$v" ;;   # with a clone of k: hidden
		4) run "$me" volume delete hist ;;     # held by the writer
		5) run "$me" snapshot create "$v" k ;;
		6) run "$me" volume create "d${v#v}" --from-snapshot "$v@k" ;;
		7) run "$me" volume delete "d${v#v}" ;;
		8) run "$me" volume rollback "$v" k ;;
		9) run "$me" snapshot delete "$v" k ;;   # with a clone: hidden
		esac
	done
	return 0
}
loop_snaps() {
	local s
	RANDOM=$BASHPID   # each loop its own sequence
	while (( $(date +%s) < END )); do
		pick s s0 s1 s2 s3
		case $(( RANDOM % 9 )) in
		0|1|2) run snaps snapshot create hist "$s" ;;
		3|4) run snaps snapshot delete hist "$s" ;;
		5) run snaps --json snapshot list hist ;;
		6) run snaps snapshot show hist "$s" ;;
		7) run snaps snapshot diff hist "$s" --head ;;
		8) run snaps volume rollback hist "$s" ;;   # held by the writer
		esac
	done
	return 0
}
loop_resize() {
	local size=$(( 16 * MiB ))
	RANDOM=$BASHPID   # each loop its own sequence
	while (( $(date +%s) < END )); do
		if run resize volume resize grow --size $(( size + 4 * MiB )); then
			size=$(( size + 4 * MiB ))
			echo "$size" >"$D/grow.size"
		fi
		run resize --json volume show grow
		sleep 0.1
	done
	return 0
}
loop_clones() {
	local c s
	RANDOM=$BASHPID   # each loop its own sequence
	while (( $(date +%s) < END )); do
		pick c c0 c1 c2
		pick s s0 s1 s2 s3
		case $(( RANDOM % 4 )) in
		0) run clones volume create "$c" --from-snapshot "hist@$s" ;;
		1) run clones volume create "$c" --from-volume hist ;;
		2|3) run clones volume delete "$c" ;;
		esac
	done
	return 0
}
# readers: hist@sN read whole over NBD while snaps deletes and clones it;
# "rc<TAB>what<TAB>message" to $D/read.log
loop_reads() {
	local s rc out
	RANDOM=$BASHPID
	while (( $(date +%s) < END )); do
		pick s s0 s1 s2 s3
		out=$(timeout -k 5 "$TMO" nbdcopy "$(nbd_uri "$D" "hist@$s")" null: 2>&1) && rc=0 || rc=$?
		printf '%s\t%s\t%s\n' "$rc" "read hist@$s" "$(printf '%s' "$out" | head -c 400 | tr '\n\t' '  ')" \
			>>"$D/read.log"
	done
	return 0
}
loop_lists() {
	RANDOM=$BASHPID   # each loop its own sequence
	while (( $(date +%s) < END )); do
		run lists --json volume list && { json_get 'len(j["volumes"])' <<<"$OUT" >/dev/null ||
			printf 'json\tvolume list --json\tnot JSON: %s\n' "$(head -c 200 <<<"$OUT")" \
				>>"$D/cmd-lists.log"; }
		run lists --json status && { json_get 'j' <<<"$OUT" >/dev/null ||
			printf 'json\tstatus --json\tnot JSON: %s\n' "$(head -c 200 <<<"$OUT")" \
				>>"$D/cmd-lists.log"; }
	done
	return 0
}

sleep 0.3
pids=()
loop_vols volsA & pids+=($!)
loop_vols volsB & pids+=($!)
loop_snaps & pids+=($!)
loop_resize & pids+=($!)
loop_clones & pids+=($!)
loop_lists & pids+=($!)
# and hist@sN read whole over NBD in a loop (TSR_RACE_READERS=0: not).  The
# code before 620f90f/9f0d820 failed hist's writer with EIO within seconds: a
# copy on write met the worker's io queue full of the readers' requests.
[ "${TSR_RACE_READERS:-1}" = 1 ] && { loop_reads & pids+=($!); }
for p in "${pids[@]}"; do track_pid "$p"; done
for p in "${pids[@]}"; do reap "$p" || fail "a CLI loop exited with an error"; done
log "the loops are done"

# ---------------------------------------------------------------- every command
# A refusal must say why: exit 1 and a message naming the reason.
OKERR='already exists|exists|not found|no such|does not exist|in use|busy|held|attached|client'
bad=$(cat "$D"/cmd-*.log | awk -F'\t' -v ok="$OKERR" '
	$1 == 0 { next }
	$1 == 1 && $3 ~ /[a-z]/ && tolower($3) ~ ok { next }
	{ print }')
# a read of a snapshot that exists must read it whole
if [ -f "$D/read.log" ]; then
	rb=$(awk -F'\t' '$1 != 0 && $3 !~ /no export named/' "$D/read.log")
	[ -z "$rb" ] || bad+="${bad:+$'\n'}$rb"
fi
total=$(cat "$D"/cmd-*.log | wc -l)
for f in "$D"/cmd-*.log; do
	l=$(basename "$f" .log)
	log "${l#cmd-}: $(wc -l <"$f") commands, $(awk -F'\t' '$1 == 0' "$f" | wc -l) succeeded"
done
log "refusals seen (count, message):"
awk -F'\t' '$1 == 1 { sub(/^.*: /, "", $3); print $3 }' "$D"/cmd-*.log | sort | uniq -c |
	sort -rn | head -n 15 >&2
[ -z "$bad" ] || { printf '%s\n' "$bad" | head -n 30 >&2; fail "commands that crashed, hung (124), failed without a clear message or printed bad JSON (above)"; }
(( total >= 60 )) || fail "only $total commands ran in $SECS s"
for l in volsA snaps resize clones; do
	awk -F'\t' '$1 == 0 { n++ } END { exit !n }' "$D/cmd-$l.log" || fail "loop $l: no command succeeded"
done
if [ -f "$D/read.log" ]; then
	log "reads: $(wc -l <"$D/read.log") snapshot reads, $(awk -F'\t' '$1 == 0' "$D/read.log" | wc -l) whole"
	awk -F'\t' '$1 == 0 { n++ } END { exit !n }' "$D/read.log" || fail "no snapshot read went through"
fi

# ---------------------------------------------------------------- end state
assert_alive
tsr "$D" --json status | json_get 'j' >/dev/null || fail "status --json after the race"
for w in hist grow; do
	wp=whist; [ $w = grow ] && wp=wgrow
	reap "${!wp}" && wrc=0 || wrc=$?
	[ "$wrc" = 0 ] || { cat "$D/$w-writer.out" >&2; fail "crash_writer on $w exited $wrc"; }
	log "writer $w: $(tail -n1 "$D/$w-writer.out")"
done
assert_eq "$(tsr "$D" --json volume show grow | json_get 'j["size"]')" "$(cat "$D/grow.size")" \
	"grow's size is the last acknowledged resize"

# check_data WHEN: the writers' acknowledged writes read back; every snapshot
# of hist and every clone is a consistent cut of hist's history; every volume
# reads whole.
check_data() {
	local out s c
	for w in hist grow; do
		out=$("$CRASH_WRITER" verify "$(nbd_uri "$D" $w)" "$D/$w.log" 2>&1) ||
			{ printf '%s\n' "$out" >&2; fail "$1: acknowledged writes of $w missing"; }
	done
	for s in $(tsr "$D" --json snapshot list hist | json_get '" ".join(s["name"] for s in j["snapshots"])'); do
		out=$("$CRASH_WRITER" snapcheck "$(nbd_uri "$D" "hist@$s")" "$D/hist.log" 2>&1) ||
			{ printf '%s\n' "$out" >&2; fail "$1: hist@$s is not a consistent cut"; }
	done
	for c in $(vol_names); do
		case $c in
		c*) out=$("$CRASH_WRITER" snapcheck "$(nbd_uri "$D" "$c")" "$D/hist.log" 2>&1) ||
			{ printf '%s\n' "$out" >&2; fail "$1: clone $c is not a consistent cut of hist"; } ;;
		[vd]*) nbdcopy "$(nbd_uri "$D" "$c")" null: || fail "$1: read $c" ;;
		esac
	done
	log "$1: data verified (snapshots: $(tsr "$D" --json snapshot list hist |
		json_get '" ".join(s["name"] for s in j["snapshots"])'); volumes: $(vol_names | tr '\n' ' '))"
}
vol_names() { tsr "$D" --json volume list | json_get '"\n".join(sorted(v["name"] for v in j["volumes"]))'; }
check_data "after the race"
names=$(vol_names | tr '\n' ' ')
snaps=$(tsr "$D" --json snapshot list hist | json_get '" ".join(s["name"] for s in j["snapshots"])')
for n in $names; do
	[[ $n =~ ^(hist|grow|[vcd][012])$ ]] || fail "volume list shows '$n', which no loop made"
done

# ---------------------------------------------------------------- catalogue vs files
stop_tesserad
"$PY" - "$D" "$names" <<'EOF' || fail "the catalogue and the files under volumes/ disagree (above)"
import os, sqlite3, sys
d, listed = sys.argv[1], sorted(sys.argv[2].split())
db = sqlite3.connect("file:%s/store.db?mode=ro" % d, uri=True)
vols = {u: (n, f) for n, u, f in db.execute("SELECT name, uuid, flags FROM volumes")}
snaps = {u: (v, n, f) for u, v, n, f in db.execute("SELECT uuid, vol_uuid, name, flags FROM snapshots")}
parents = {p for (p,) in db.execute("SELECT parent FROM volumes") if p}
files = {}
for f in os.listdir(d + "/volumes"):
    files.setdefault(f[:36], set()).add(f[36:])
bad = []
for u, exts in sorted(files.items()):
    if u not in vols and u not in snaps:
        bad.append("orphan files (no row): %s %s" % (u, sorted(exts)))
for u, (n, f) in vols.items():
    for e in (".data", ".crc", ".dirty"):
        if e not in files.get(u, ()):
            bad.append("volume row %s (%s, flags %d) without its %s" % (n, u, f, e))
for u, (v, n, f) in snaps.items():
    if v not in vols:
        bad.append("snapshot row %s (%s) of a volume %s with no row" % (n, u, v))
    for e in (".data", ".crc"):
        if e not in files.get(u, ()):
            bad.append("snapshot row %s (%s, flags %d) without its %s" % (n, u, f, e))
    if f & (2 | 8):
        bad.append("snapshot row %s (%s) still deleting or pending (flags %d) after a clean stop"
                   % (n, u, f))
    # a hidden layer (a deleted snapshot, or a clone of the head's cut) goes
    # with its last clone: one that no clone reads through is a leak
    if f & (1 | 4) and u not in parents:
        bad.append("hidden snapshot layer %s of %s (flags %d) kept after its last clone went"
                   % (u, vols.get(v, ("?",))[0], f))
visible = sorted(n for n, f in vols.values() if not f & 1)
if visible != listed:
    bad.append("volume list %s != the catalogue's visible rows %s" % (listed, visible))
for b in bad:
    print(b, file=sys.stderr)
flags = {}
for v, n, f in snaps.values():
    flags[f] = flags.get(f, 0) + 1
print("catalogue: %d volume rows (%d hidden), %d snapshot rows (by flags: %s), %d uuids with files" %
      (len(vols), sum(1 for n, f in vols.values() if f & 1), len(snaps),
       " ".join("%d:%d" % kv for kv in sorted(flags.items())), len(files)), file=sys.stderr)
sys.exit(1 if bad else 0)
EOF

# ---------------------------------------------------------------- restart
lines=$(wc -l <"$D/tesserad.log")
start_tesserad "$D"
tail -n +"$(( lines + 1 ))" "$D/tesserad.log" | grep -E "belongs to no volume|EUCLEAN|corrupt" &&
	fail "the restart after a clean stop found orphans or damage (above)"
assert_eq "$(vol_names | tr '\n' ' ')" "$names" "volumes after a restart"
assert_eq "$(tsr "$D" --json snapshot list hist | json_get '" ".join(s["name"] for s in j["snapshots"])')" \
	"$snaps" "hist's snapshots after a restart"
check_data "after a restart"
stop_tesserad
