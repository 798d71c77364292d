#!/usr/bin/env bash
# The leftover sweep's check and delete of a copy are atomic against a
# replace onto that node, which deletes the leftover and makes a new copy
# under the same name (engine/cluster/sweep.c, c->sweep_lock).  Without that,
# a sweep that checked the old copy, then was descheduled, deleted the new
# one: the replace's copy gone under its record.
#   3 nodes, --leftover-grace 2; r (2 replicas) written; OLD (a copy node other
#   than n1) stopped, its copy replaced onto NEW; OLD started with
#   TSR_TEST_SWEEP_HOLD_FILE: its sweep checks r's leftover and holds before
#   the delete; a replace NEW -> OLD is sent meanwhile (its delete of the
#   leftover on OLD waits for the sweep); the hold released: the replace
#   succeeds, OLD holds a new copy of r (another uuid) that the record lists,
#   the sweep removed the old one only; r, rebuilt, reads back as written.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy
require_cmd ss

cl_start 3 --leftover-grace 2
SIZE=$((8 << 20))
IMG=$CL_ROOT/img
cl_pattern "$IMG" "$SIZE" 31
ctsr volume create r --size 8M --replicas 2 --min-replicas 1 >/dev/null || fail "volume create r"
ctsr volume attach r --node n1 >/dev/null || fail "volume attach r"
nbdcopy "$IMG" "$(cl_nbd_uri 1 r)" || fail "nbdcopy into r"
ctsr volume detach r >/dev/null || fail "volume detach r"
copies=$(cl_copy_nodes r)
OLD= NEW=
for n in n2 n3; do
	case ",$copies," in *",$n,"*) [ -z "$OLD" ] && OLD=$n ;; *) NEW=$n ;; esac
done
case ",$copies," in *",n1,"*) ;; *) NEW=n1 ;; esac
[ -n "$OLD" ] && [ -n "$NEW" ] || fail "copies on $copies: no OLD/NEW pair"
O=${OLD#n}
uuid_of() { "$PY" -c 'import sqlite3,sys
db = sqlite3.connect(f"file:{sys.argv[1]}/store.db?mode=ro", uri=True)
r = db.execute("select uuid from volumes where name = ?", (sys.argv[2],)).fetchone()
print(r[0] if r else "")' "$(cl_dir "$1")" "$2"; }
XUUID=$(uuid_of "$O" r)
[ -n "$XUUID" ] || fail "$OLD has no copy of r"
log "copies of r on $copies: OLD $OLD (copy $XUUID), NEW $NEW"

cl_stop "$O"
ctsr volume replace-replica r --node "$OLD" --to "$NEW" >/dev/null ||
	fail "replace-replica r $OLD -> $NEW"
sleep 2 # OLD's copy older than the grace when it comes back

# ---- OLD back: its sweep holds between the check of r's leftover and the delete
HOLD=$CL_ROOT/hold
touch "$HOLD"
on_exit "rm -f '$HOLD'"
export TSR_TEST_SWEEP_HOLD_FILE=$HOLD
cl_start_node "$O"
unset TSR_TEST_SWEEP_HOLD_FILE
wait_log "$O" "leftover copy r: test hold" 20
( ctsr volume replace-replica r --node "$NEW" --to "$OLD" >"$CL_ROOT/replace.out" 2>&1
  echo $? >"$CL_ROOT/replace.rc" ) &
RP=$!
track_pid "$RP"
# until the replace is done (nothing held it) or its call to OLD stays open
# (its delete of the leftover waits for the sweep)
seen=0
for (( i=0; i<200; i++ )); do
	[ -f "$CL_ROOT/replace.rc" ] && break
	if [ "$(ss -Htn state established "( dport = :${CL_PORT[$O]} )" | wc -l)" -ge 1 ]; then
		seen=$(( seen + 1 ))
		(( seen >= 3 )) && break
	else
		seen=0
	fi
	sleep 0.1
done
log "replace onto $OLD sent while the sweep holds ($( [ -f "$CL_ROOT/replace.rc" ] && echo "it answered meanwhile" || echo "its call to $OLD waits"))"
rm -f "$HOLD"
reap "$RP" || true
[ "$(cat "$CL_ROOT/replace.rc" 2>/dev/null)" = 0 ] ||
	fail "replace-replica r $NEW -> $OLD: $(cat "$CL_ROOT/replace.out")"

# ---- OLD holds the replace's new copy; the sweep removed the old one only
wait_log "$O" "leftover copy r removed .*uuid $XUUID" 20
YUUID=$(uuid_of "$O" r)
[ -n "$YUUID" ] || fail "$OLD has no copy of r after the replace onto it (the sweep deleted the new one)"
[ "$YUUID" != "$XUUID" ] || fail "$OLD's copy of r is still the leftover $XUUID"
case ",$(cl_copy_nodes r)," in *",$OLD,"*) ;; *) fail "r's record does not list $OLD: $(cl_copy_nodes r)" ;; esac
n=$(grep -c "leftover copy r removed" "$(cl_dir "$O")/tesserad.log")
assert_eq "$n" 1 "removals of r on $OLD"
log "$OLD: leftover $XUUID removed by the sweep, new copy $YUUID kept"
ctsr volume attach r --node n1 >/dev/null || fail "volume attach r"
cl_wait_synced r
cl_assert_image 1 r "$IMG" "r after the replace onto $OLD"
ctsr volume detach r >/dev/null || fail "volume detach r"
cl_stop_all
