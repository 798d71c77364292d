#!/usr/bin/env bash
# The leftover sweep (engine/cluster/sweep.c): a node removes the store
# copies that no vol/<name> lists for it, once its sweep has seen them so
# for --leftover-grace (counted from its first pass that sees them: a restart
# starts the clock again), and never touches a listed copy.
#   4 nodes, grace G s.  r (3 replicas) and k (4 replicas: a copy on every
#   node) written; after G s, y (4 replicas) is made; OLD (a copy node of r
#   other than n1) stopped; y deleted and r's copy on OLD replaced onto NEW
#   while OLD is down (neither delete reaches it); OLD started:
#     - its copies of r (older than G) and y (younger) are seen unlisted at
#       its first pass (logged) and both stay (the clock starts at that
#       pass, not at their creation);
#     - both go once seen so for G s: row and data file gone, logged with the
#       reason, counted (node list --json leftovers_removed, status);
#     - k's copies (listed) keep their bytes on every node (sha of the data
#       files), r's listed copies too; r, attached, reads back as written.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy

G=8 # > the few seconds from y's create to OLD's first pass (y younger than G then)
cl_start 4 --leftover-grace "$G"
SIZE=$((8 << 20))
IMG=$CL_ROOT/img
cl_pattern "$IMG" "$SIZE" 21
KIMG=$CL_ROOT/kimg
cl_pattern "$KIMG" "$SIZE" 22

ctsr volume create r --size 8M --replicas 3 >/dev/null || fail "volume create r"
ctsr volume create k --size 8M --replicas 4 >/dev/null || fail "volume create k"
t_rk=$(date +%s)
for v in r k; do
	ctsr volume attach "$v" --node n1 >/dev/null || fail "volume attach $v"
done
nbdcopy "$IMG" "$(cl_nbd_uri 1 r)" || fail "nbdcopy into r"
nbdcopy "$KIMG" "$(cl_nbd_uri 1 k)" || fail "nbdcopy into k"
for v in r k; do
	ctsr volume detach "$v" >/dev/null || fail "volume detach $v"
done
copies=$(cl_copy_nodes r)
OLD= NEW=
for n in n2 n3 n4; do
	case ",$copies," in *",$n,"*) [ -z "$OLD" ] && OLD=$n ;; esac
done
for n in n1 n2 n3 n4; do
	case ",$copies," in *",$n,"*) ;; *) NEW=$n ;; esac
done
[ -n "$OLD" ] && [ -n "$NEW" ] || fail "copies on $copies: no OLD/NEW pair"
O=${OLD#n}
log "copies of r on $copies: OLD $OLD, NEW $NEW"

# the bytes of every listed copy, to compare at the end
declare -A SHA=()
for i in 1 2 3 4; do
	SHA[k$i]=$(sha256sum < "$(cl_copy_file "$i" k)" | cut -d' ' -f1)
	case ",$copies," in *",n$i,"*)
		[ "$i" = "$O" ] || SHA[r$i]=$(sha256sum < "$(cl_copy_file "$i" r)" | cut -d' ' -f1) ;;
	esac
done
RFILE=$(cl_copy_file "$O" r)

# r's copies older than the grace before OLD comes back
while (( $(date +%s) - t_rk <= G )); do sleep 0.5; done
ctsr volume create y --size 4M --replicas 4 >/dev/null || fail "volume create y"
YFILE=$(cl_copy_file "$O" y)

# ---- OLD down: y deleted, r's copy replaced away
cl_stop "$O"
ctsr volume delete y >/dev/null || fail "volume delete y"
ctsr volume replace-replica r --node "$OLD" --to "$NEW" >/dev/null ||
	fail "replace-replica r $OLD -> $NEW"
log "with $OLD down: y deleted, r's copy replaced onto $NEW"

# ---- OLD back: r's copy and y's are seen unlisted, both stay for G s
cl_start_node "$O"
cl_wait_nodes_alive 4
wait_log "$O" "store copy r .*unlisted \(its vol/ record lists no copy on this node\)" 20
wait_log "$O" "store copy y .*unlisted \(no vol/ record\)" 20
grep -q "leftover copy .* removed" "$(cl_dir "$O")/tesserad.log" &&
	fail "$OLD removed a copy at its first sight: $(grep "leftover copy" "$(cl_dir "$O")/tesserad.log")"
cl_copy_size "$O" r >/dev/null || fail "$OLD's copy of r removed at its first sight"
cl_copy_size "$O" y >/dev/null || fail "$OLD's copy of y removed at its first sight"
[ -e "$RFILE" ] && [ -e "$YFILE" ] || fail "$OLD's data file of r or y gone at its first sight"
log "$OLD: r's copy (older than G) and y's seen unlisted, both kept"

# ---- seen so for G s: both go
wait_log "$O" "leftover copy r removed \(vol/r lists no copy on this node;" $(( G + 20 ))
wait_log "$O" "leftover copy y removed \(vol/y does not exist;" $(( G + 20 ))
cl_copy_size "$O" r >/dev/null && fail "$OLD still lists r in its store after the sweep"
[ -e "$RFILE" ] && fail "$OLD's data file of r is still there: $RFILE"
[ -e "${RFILE%.data}.crc" ] && fail "$OLD's crc file of r is still there"
cl_copy_size "$O" y >/dev/null && fail "$OLD still lists y in its store"
[ -e "$YFILE" ] && fail "$OLD's data file of y is still there: $YFILE"
n=$(grep -c "leftover copy .* removed" "$(cl_dir "$O")/tesserad.log")
assert_eq "$n" 2 "removals logged on $OLD"
for i in 1 2 3 4; do
	[ "$i" = "$O" ] && continue
	grep -q "leftover copy" "$(cl_dir "$i")/tesserad.log" &&
		fail "n$i removed a copy: $(grep "leftover copy" "$(cl_dir "$i")/tesserad.log")"
done
log "$OLD: r's and y's copies removed once seen unlisted for $G s"
# counted: node list (each node's Status) and OLD's own status
got=$(ctsr --json node list | json_get '" ".join("%s=%d" % (n["id"], n["leftovers_removed"]) for n in sorted(j["nodes"], key=lambda n: n["id"]))')
want=$(for i in 1 2 3 4; do [ "$i" = "$O" ] && printf 'n%s=2 ' "$i" || printf 'n%s=0 ' "$i"; done)
assert_eq "$got" "${want% }" "leftovers_removed in node list"
got=$(tsr "$(cl_dir "$O")" --json status | json_get 'j["leftovers_removed"]')
assert_eq "$got" 2 "leftovers_removed in $OLD's status"

# ---- listed copies untouched
for i in 1 2 3 4; do
	got=$(sha256sum < "$(cl_copy_file "$i" k)" | cut -d' ' -f1)
	assert_eq "$got" "${SHA[k$i]}" "sha of k's copy on n$i"
	if [ -n "${SHA[r$i]:-}" ]; then
		got=$(sha256sum < "$(cl_copy_file "$i" r)" | cut -d' ' -f1)
		assert_eq "$got" "${SHA[r$i]}" "sha of r's copy on n$i"
	fi
done
ctsr volume attach k --node "n$O" >/dev/null || fail "volume attach k on $OLD"
cl_assert_image "$O" k "$KIMG" "k through $OLD"
ctsr volume detach k >/dev/null || fail "volume detach k"
ctsr volume attach r --node n1 >/dev/null || fail "volume attach r"
cl_wait_synced r
cl_assert_image 1 r "$IMG" "r after the sweep"
ctsr volume detach r >/dev/null || fail "volume detach r"
cl_stop_all
