#!/usr/bin/env bash
# The automatic replace (--rebuild-after) onto the only free node, healthy but
# with a slow disk, gets the volume its copy back (review 16a, F1: its create
# was bounded by the peer timeout since 5066a18 and never succeeded there; the
# node churned create+delete).  3 nodes started with --rebuild-after 2; v (2
# replicas, min 1) written, attached on n1 (which holds a copy); the other
# copy's node O killed; the free node X's fsync/fdatasync each delayed 0.7 s
# (strace).  Within 60 s vol/v lists X, which gets in sync; v reads back as
# written; n1 logged no "automatic replace ... retrying later" for a create
# not answered in time.
# On b8ab404: no copy onto X in 60 s (the FAIL says so).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd strace
require_cmd nbdcopy
DELAY_US=700000

cl_start 3 --rebuild-after 2
IMG=$CL_ROOT/img
cl_pattern "$IMG" $((8 << 20)) 5
ctsr volume create v --size 8M --replicas 2 --min-replicas 1 >/dev/null || fail "volume create v"
nodes() { timeout 20 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" --json volume show v | json_get '" ".join(c["node"] for c in j["copies"])'; }
free1() { cl_free_node v 1; }
cl_move_onto_n1 v
cl_attach_fill v "$IMG"
O=$(nodes | tr ' ' '\n' | grep -v '^n1$')
X=$(free1)
XPID=${CL_PID[${X#n}]}
strace -f -qq -o /dev/null -p "$XPID" -e trace=fsync,fdatasync \
	-e inject=fsync,fdatasync:delay_enter="$DELAY_US" &
SPID=$!
on_exit "kill $SPID 2>/dev/null"
sleep 1
log "copies $(nodes); $O killed; the only free node $X has a slow disk"
cl_kill "${O#n}"
t0=$SECONDS
cur=
while (( SECONDS - t0 < 60 )); do
	cur=$(nodes) || cur=
	case " $cur " in *" $X "*) break ;; esac
	sleep 1
done
kill "$SPID" 2>/dev/null
wait "$SPID" 2>/dev/null
log "after $(( SECONDS - t0 )) s: vol/v lists '$cur'"
grep -o "automatic replace of v on $O: .*" "$(cl_dir 1)/tesserad.log" | cut -c1-200 | sort |
	uniq -c | head -3 >&2
case " $cur " in *" $X "*) ;; *) fail "the automatic replace of $O never got its copy onto $X \
(a healthy node with a slow disk) in 60 s" ;; esac
grep -q "automatic replace of v on $O: node $X did not answer" "$(cl_dir 1)/tesserad.log" &&
	fail "n1 logged an automatic replace whose create $X did not answer in time"
cl_wait_synced v
cl_assert_image 1 v "$IMG" "after the automatic replace onto $X"
ctsr volume detach v >/dev/null || fail "volume detach v"
cl_stop_all
log PASS
