#!/usr/bin/env bash
# A copy whose node does not return is rebuilt onto another node, by hand
# (replace-replica) and automatically (--rebuild-after); scrub finds and
# repairs copies that differ or hold a corrupt block (invariants 3 and 5).
#
# 5 nodes (zones z1..z5), a 256 MiB 3-replica volume attached on one of its
# copy nodes, written by fio with --verify=crc32c.
#  1. a copy's node is killed for good; `replace-replica --node X` moves the
#     copy to a node without one; it is rebuilt in full (status shows it
#     resyncing, then in-sync); fio --verify_only reads the data back.
#  2. the volume is detached, its coordinator node restarted with
#     --rebuild-after 3 and the volume attached again; another copy's node is
#     killed; the copy is replaced automatically; in sync again.
#  3. divergence: a copy's node is stopped, one block of its copy is changed
#     through a standalone tesserad on the same data directory (valid CRC,
#     wrong data), the node rejoins; `volume scrub --no-repair` reports the
#     mismatch and exits 1; `volume scrub` repairs it (exit 0); a second scrub
#     finds nothing.
#  4. corruption: a byte of another copy's data file is flipped on disk;
#     scrub repairs the block (CRC error on that copy) and exits 0.
#  5. after a clean stop the three copies' files are byte-identical.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd fio qemu-io

cl_start 5
ctsr volume create rb --size 256M --replicas 3 --failure-domain zone >/dev/null || fail "create"
copies() { ctsr --json volume show rb | json_get '" ".join(c["node"] for c in j["copies"])'; }
read -r -a C <<<"$(copies)"
log "copies of rb on: ${C[*]}"
[ "${#C[@]}" = 3 ] || fail "want 3 copies, got: ${C[*]}"
coord=${C[0]#n}
ctsr volume attach rb --node "n$coord" >/dev/null || fail "attach"
URI=$(cl_nbd_uri "$coord" rb)
FIO=(--name=rb --ioengine=nbd "--uri=$URI" --bs=16k --rw=randwrite --size=64M --iodepth=8
	--verify=crc32c --verify_fatal=1 --randseed=9 --verify_state_save=0)
fio "${FIO[@]}" --do_verify=1 --output="$CL_ROOT/fio1.txt" || fail "fio write"

# ---- 1. replace-replica by hand
victim=${C[1]#n}
spare=
for (( i=1; i<=5; i++ )); do [[ " ${C[*]} " == *" n$i "* ]] || { spare=$i; break; }; done
cl_kill "$victim"
cl_wait_state rb "n$victim" out-of-sync 15
ctsr volume replace-replica rb --node "n$victim" --to "n$spare" || fail "replace-replica"
cl_wait_synced rb 120
read -r -a C2 <<<"$(copies)"
log "after replace-replica: ${C2[*]}"
[[ " ${C2[*]} " == *" n$spare "* && " ${C2[*]} " != *" n$victim "* ]] ||
	fail "copy not moved from n$victim to n$spare: ${C2[*]}"
copied=$(vstatus rb 'j["resync_bytes_copied"]')
[ "$copied" -gt 0 ] || fail "the rebuild copied nothing"
fio "${FIO[@]}" --verify_only --output="$CL_ROOT/fio2.txt" || fail "data lost after the rebuild"

# ---- 2. automatic rebuild after --rebuild-after
ctsr volume detach rb >/dev/null || fail "detach before the restart"
cl_stop "$coord"
CL_ARGS[$coord]="${CL_ARGS[$coord]} --rebuild-after 3"
cl_start_node "$coord"
ctsr volume attach rb --node "n$coord" >/dev/null || fail "attach after the restart"
victim2=
for n in "${C2[@]}"; do [ "$n" != "n$coord" ] && [ "$n" != "n$spare" ] && victim2=${n#n}; done
[ -n "$victim2" ] || victim2=$spare
cl_kill "$victim2"
for (( i=0; i<300; i++ )); do
	read -r -a C3 <<<"$(copies)"
	[[ " ${C3[*]} " != *" n$victim2 "* ]] && break
	sleep 0.2
done
[[ " ${C3[*]} " != *" n$victim2 "* ]] || fail "copy on dead n$victim2 not replaced automatically: ${C3[*]}"
log "automatic rebuild: n$victim2 replaced, copies ${C3[*]}"
cl_wait_synced rb 120
fio "${FIO[@]}" --verify_only --output="$CL_ROOT/fio3.txt" || fail "data lost after the automatic rebuild"

# ---- 3. a copy that differs (valid CRC, other data)
other=
for n in "${C3[@]}"; do [ "$n" != "n$coord" ] && other=${n#n}; done
cl_stop "$other"
d=$(cl_dir "$other")
start_tesserad "$d"   # standalone on the same directory: the copy is an ordinary volume
qemu_io "$d" rb "write -P 0x5a 1M 4k" >/dev/null || fail "standalone write"
stop_tesserad
cl_start_node "$other"
cl_wait_synced rb 60
if out=$(ctsr --json volume scrub rb --no-repair); then
	fail "scrub --no-repair exited 0 with a differing copy: $out"
fi
mism=$(printf '%s' "$out" | json_get 'j["scrub_mismatches"]')
[ "$mism" -ge 1 ] || fail "scrub found no mismatch: $out"
log "scrub --no-repair: $mism mismatching block(s), exit 1"
out=$(ctsr --json volume scrub rb) || fail "scrub could not repair: $out"
log "scrub: repaired $(printf '%s' "$out" | json_get 'j["scrub_repaired"]')"
cl_scrub_clean rb "after the repair"

# ---- 4. a corrupt block on disk
cl_stop "$other"
f=$(cl_copy_file "$other" rb)
printf '\xff' | dd of="$f" bs=1 seek=$(( 2 * 1048576 + 100 )) conv=notrunc status=none
cl_start_node "$other"
cl_wait_synced rb 60
out=$(ctsr --json volume scrub rb) || fail "scrub did not repair the corrupt block: $out"
rep=$(printf '%s' "$out" | json_get 'j["scrub_repaired"]')
[ "$rep" -ge 1 ] || fail "scrub did not see the corrupt block: $out"
log "scrub after corruption: $rep block(s) repaired"
cl_scrub_clean rb "after the corrupt block's repair"
fio "${FIO[@]}" --verify_only --output="$CL_ROOT/fio4.txt" || fail "data wrong after the repairs"

ctsr volume detach rb >/dev/null || fail "detach"
cl_stop_all
read -r -a F <<<"$(for n in "${C3[@]}"; do printf '%s ' "${n#n}"; done)"
cl_assert_copies_identical rb "${F[@]}"
