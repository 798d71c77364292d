#!/usr/bin/env bash
# Async geo-replication, failback (issue 7): after a failover the original
# primary receives back only the regions that differ, then takes the primary
# role back; the DR becomes a target again.
#
# Two single-node clusters ("primary", "dr"; site.sh), both with a site
# listener (SITE_PRIMARY_LISTENS=1); primary -> dr through site_proxy.py,
# dr -> primary direct.  A 64 MiB volume fb.
#  1. replication enabled, the history writer (crash_writer) runs at the
#     primary; the primary is killed (SIGKILL) mid-stream; the DR is promoted
#     (--force when not consistent); its image IMG0 is kept.
#  2. four 64 KiB host writes at the DR (0x5a).  The primary comes back:
#     demoted, a host write there fails (EROFS); its image IMG_P is kept.
#  3. failback: at the DR `site add primary` + `replication enable fb --to
#     primary`; at the primary `replication resync fb --from dr`.  The DR's
#     source gets the primary's region digests and ships only regions that
#     differ: region_bytes_shipped is at most the regions where IMG_P and the
#     DR's image differ (counted here from the images), at least the four DR
#     writes, far below the volume; the two volumes end equal.  The digests
#     read the primary's disk, not its page cache (what is stored, as scrub
#     does): its copy's cached pages are dropped before the resync (fadvise
#     DONTNEED), and none are resident once the digests are sent (fincore);
#     read through the cache, they were (s16).
#  4. `replication promote fb` at the primary: a host write there succeeds;
#     the DR's stream back is refused as stale (it is demoted, then takes the
#     primary's new stream); a host write at the DR fails; the primary's write
#     reaches the DR.  Every 4 KiB block of the primary equals IMG0 except the
#     DR's four writes (0x5a) and the primary's new write (0x77): both periods.
#  5. no common point: a volume made at the DR only and enabled to the
#     primary is copied whole: region_bytes_shipped = its 8 MiB of data.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"

require_tessera "$CRASH_WRITER"
require_cmd fincore
SITE_PRIMARY_LISTENS=1
sites_start_linked

VOL=fb
REGION=65536
site_vol_create primary $VOL 64M

# rrole KEY VOL ROLE EXPR: EXPR (python, on the status object j of ROLE
# "source" or "target") from `replication status VOL --json` at KEY.
rrole() {
	stsr "$1" --json replication status "$2" |
		json_get "(lambda L: (lambda j: $4)([r for r in L if r['role'] == '$3'][0]))(j['replications'] if 'replications' in j else [j])"
}
# rrole_wait KEY VOL ROLE PYCOND WHAT [TIMEOUT_S]
rrole_wait() {
	local t=${6:-60} got end
	end=$((SECONDS + t))
	while [ "$SECONDS" -lt "$end" ]; do
		got=$(rrole "$1" "$2" "$3" "bool($4)" 2>/dev/null) || got=
		[ "$got" = True ] || [ "$got" = true ] && return 0
		sleep 0.2
	done
	fail "site $1, $2 ($3): not $5 after ${t}s: $(stsr "$1" --json replication status "$2" 2>&1)"
}
img() { nbdcopy "$(site_uri "$1" "$2")" "$3" || fail "read $2 at $1 into $3"; }
# copy_file KEY VOL: the data file of site KEY's copy of VOL (its catalogue)
copy_file() {
	"$PY" - "$(sdir "$1")" "$2" <<'EOF'
import sqlite3, sys
d, name = sys.argv[1], sys.argv[2]
db = sqlite3.connect(f"file:{d}/store.db?mode=ro", uri=True)
row = db.execute("select uuid from volumes where name = ?", (name,)).fetchone()
if row is None:
    sys.exit(f"{d}: no volume {name}")
print(f"{d}/volumes/{row[0]}.data")
EOF
}
# resident FILE: bytes of FILE in the page cache
resident() { fincore --bytes --noheadings --output RES "$1" | xargs; }
# uncache FILE: drop FILE's clean pages from the page cache
uncache() {
	"$PY" -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$1" || fail "fadvise $1"
}

# ---- 1. history at the primary, killed mid-stream, promote at the DR
LOG=$SITE_ROOT/acked.log
: >"$LOG"
out=$(stsr primary replication enable $VOL --to dr 2>&1) || fail "enable: $out"
"$CRASH_WRITER" write "$(site_uri primary $VOL)" "$LOG" --qd 4 --conns 2 \
	--seq-base 1000000000 --seed 11 >"$SITE_ROOT/writer.out" 2>&1 &
WPID=$!
track_pid "$WPID"
rwait primary $VOL 'j["state"] == "streaming" and j["acked_seq"] > 0' "streaming" 60
rwait dr $VOL 'j["consistent"]' "consistent at the DR" 30
# killed under the writer once it has 2000 more acknowledged writes (not
# after a fixed sleep: as many writes in flight and behind at the DR
# however fast the machine)
wait_acked "$LOG" 2000 "$WPID"
kill -0 "$WPID" 2>/dev/null || { cat "$SITE_ROOT/writer.out" >&2; fail "the writer stopped early"; }
site_kill primary
reap "$WPID" || true
log "primary killed; $(wc -l <"$LOG") writes acknowledged to the host"
dr_settled $VOL >/dev/null
stsr dr replication promote $VOL >/dev/null 2>&1 ||
	stsr dr replication promote $VOL --force >/dev/null || fail "promote at the DR"
rwait dr $VOL 'j["state"] == "promoted"' "promoted" 10
img dr $VOL "$SITE_ROOT/img0"

# ---- 2. writes at the DR; the primary comes back demoted
DR_OFFS="1048576 17825792 34603008 60817408"  # 1M, 17M, 33M, 58M
for o in $DR_OFFS; do
	site_qemu_io dr $VOL "write -P 0x5a $o 64k" >/dev/null || fail "host write at the DR ($o)"
done
site_start primary
if [ -z "$(stsr primary --json volume show $VOL | json_get 'j.get("attached_node") or ""')" ]; then
	stsr primary volume attach $VOL >/dev/null || fail "attach $VOL at the old primary"
fi
rwait primary $VOL 'j["demoted"]' "demoted" 30
out=$(site_qemu_io primary $VOL "write -P 0x66 0 64k" 2>&1)
printf '%s' "$out" | grepq -i "failed\|error\|read-only" ||
	fail "the demoted primary accepted a host write: $out"
log "host write at the demoted primary refused: $(printf '%s' "$out" | head -1)"
img primary $VOL "$SITE_ROOT/imgp"
img dr $VOL "$SITE_ROOT/imgd"
# regions where the two sites differ now: the most a failback may ship
DIFF=$("$PY" - "$SITE_ROOT/imgp" "$SITE_ROOT/imgd" $REGION <<'EOF'
import sys
a = open(sys.argv[1], "rb").read(); b = open(sys.argv[2], "rb").read(); r = int(sys.argv[3])
print(sum(1 for i in range(0, len(a), r) if a[i:i + r] != b[i:i + r]))
EOF
)
log "the sites differ in $DIFF regions of 64 KiB"
[ "$DIFF" -ge 4 ] || fail "only $DIFF regions differ, the DR wrote 4"

# ---- 3. failback resync
out=$(stsr primary replication resync $VOL --from nowhere 2>&1) &&
	fail "resync from a site the volume never replicated to succeeded: $out"
out=$(stsr dr site add primary --address "127.0.0.1:${SITE_LISTEN[primary]}" \
	--ca "$CERTS/ca.crt" --cert "$CERTS/dr.crt" --key "$CERTS/dr.key" \
	--peer-name primary 2>&1) || fail "site add primary at the DR: $out"
out=$(stsr dr replication enable $VOL --to primary 2>&1) || fail "enable back at the DR: $out"
PDATA=$(copy_file primary $VOL) || fail "no copy of $VOL at the primary"
uncache "$PDATA"
assert_eq "$(resident "$PDATA")" 0 "cached bytes of the primary's copy before the resync"
ndig=$(grep -c "region digests of .* bytes sent" "$(sdir primary)/tesserad.log")
out=$(stsr primary replication resync $VOL --from dr 2>&1) || fail "resync: $out"
log "resync: $(printf '%s' "$out" | head -1)"
for (( i=0; i<600; i++ )); do
	(( $(grep -c "region digests of .* bytes sent" "$(sdir primary)/tesserad.log") > ndig )) && break
	sleep 0.1
done
(( i < 600 )) || fail "the primary sent no region digests within 60 s"
r=$(resident "$PDATA")
assert_eq "$r" 0 "cached bytes of the primary's copy after its region digests (read from the disk, not the page cache)"
log "region digests at the primary: read from the disk ($r bytes of its copy cached)"
rrole_wait dr $VOL source 'j["state"] == "streaming" and j["lag_bytes"] == 0 and j["dirty_bytes"] == 0 and j["acked_seq"] > 0 and j["acked_seq"] + 1 == j["next_seq"]' "caught up (failback)" 120
acked=$(rrole dr $VOL source 'j["acked_seq"]')
rrole_wait primary $VOL target "j['applied_seq'] >= $acked and j['consistent']" "consistent (failback)" 60
shipped=$(rrole dr $VOL source 'j["region_bytes_shipped"]')
same=$(rrole dr $VOL source 'j["region_bytes_same"]')
compared=$(rrole dr $VOL source 'j["regions_compared"]')
log "failback shipped $shipped region bytes, $same equal at the primary (compared: $compared)"
[ "$compared" = true ] || [ "$compared" = True ] || fail "the failback sync compared no digests"
[ "$shipped" -le $((DIFF * REGION)) ] ||
	fail "failback shipped $shipped bytes, more than the $DIFF differing regions"
[ "$shipped" -ge $((4 * REGION)) ] || fail "failback shipped $shipped bytes, less than the DR's 4 writes"
# not a full copy: the regions equal at both sites were compared and not shipped (how many
# differ depends on how far the DR lagged when the primary died: 602 of 1024 under load 22)
[ "$same" -gt 0 ] || fail "failback shipped every region ($shipped bytes): a full copy"
[ "$shipped" -lt $((64 * 1024 * 1024)) ] || fail "failback shipped $shipped bytes of a 64 MiB volume"
assert_eq "$(site_sha primary $VOL)" "$(site_sha dr $VOL)" "the primary after the resync"
out=$(site_qemu_io primary $VOL "write -P 0x66 0 4k" 2>&1)
printf '%s' "$out" | grepq -i "failed\|error\|read-only" ||
	fail "the primary accepted a host write while it is a failback target: $out"

# ---- 4. roles back: promote at the primary
out=$(stsr primary replication promote $VOL 2>&1) || fail "promote at the primary: $out"
site_qemu_io primary $VOL "write -P 0x77 8388608 64k" >/dev/null ||
	fail "host write at the primary after the failback"
rrole_wait dr $VOL target 'j["state"] == "receiving" and j["consistent"]' "a target again" 60
rrole_wait primary $VOL source 'j["state"] == "streaming" and j["lag_bytes"] == 0 and j["dirty_bytes"] == 0 and j["acked_seq"] + 1 == j["next_seq"]' "streaming to the DR" 60
acked=$(rrole primary $VOL source 'j["acked_seq"]')
rrole_wait dr $VOL target "j['applied_seq'] >= $acked" "applied through $acked" 60
shipped2=$(rrole primary $VOL source 'j["region_bytes_shipped"]')
log "back to the DR: $shipped2 region bytes (the volumes were equal)"
[ "$shipped2" -le $((2 * REGION)) ] || fail "the way back shipped $shipped2 region bytes"
out=$(site_qemu_io dr $VOL "write -P 0x5b 0 4k" 2>&1)
printf '%s' "$out" | grepq -i "failed\|error\|read-only" ||
	fail "the DR accepted a host write after the failback: $out"
assert_eq "$(site_sha primary $VOL)" "$(site_sha dr $VOL)" "the DR after the failback"
# volume show at the primary, a source again: its record names the stream it
# was taken back for (target_stream), which it was not created for
show=$(stsr primary volume show $VOL 2>&1) || fail "volume show at the primary: $show"
if grepq "created for DR replication stream" <<<"$show"; then
	fail "volume show at the primary (a source again) says: $(grep '^dr target' <<<"$show")"
fi
img primary $VOL "$SITE_ROOT/img1"
"$PY" - "$SITE_ROOT/img0" "$SITE_ROOT/img1" "$DR_OFFS" <<'EOF' || fail "data of both periods"
import sys
a = open(sys.argv[1], "rb").read(); b = open(sys.argv[2], "rb").read()
dr = [int(o) for o in sys.argv[3].split()]
bad = 0
for i in range(0, len(a), 4096):
    if any(o <= i < o + 65536 for o in dr):
        want = b"\x5a" * 4096
    elif 8388608 <= i < 8388608 + 65536:
        want = b"\x77" * 4096
    else:
        want = a[i:i + 4096]
    if b[i:i + 4096] != want:
        bad += 1
        if bad <= 5:
            print("block at %d differs from both periods" % i)
sys.exit(1 if bad else 0)
EOF
log "every block holds the history's prefix (DR at promote), the DR's writes or the primary's"

# ---- 5. no common point: a full copy of the allocated data
site_vol_create dr nc 64M
site_qemu_io dr nc "write -P 0x3c 4M 8M" >/dev/null || fail "write nc at the DR"
out=$(stsr dr replication enable nc --to primary 2>&1) || fail "enable nc: $out"
rwait dr nc 'j["state"] == "streaming" and j["lag_bytes"] == 0 and j["acked_seq"] + 1 == j["next_seq"]' "nc caught up" 60
assert_eq "$(rstat dr nc 'j["region_bytes_shipped"]')" $((8 * 1024 * 1024)) "nc: region bytes shipped (all its data)"
rwait primary nc 'j["consistent"]' "nc consistent at the primary" 30
assert_eq "$(site_sha primary nc)" "$(site_sha dr nc)" "nc at the primary"

site_stop primary
site_stop dr
