#!/usr/bin/env bash
# A replace-replica that the coordinator refuses changes nothing (review 14b,
# finding 1).  While one replace's rebuild runs, the coordinator refuses
# another (-EBUSY); the refused replace had already written vol/v listing its
# new node at the slot, and the coordinator's layout kept the old copy there.
# When that copy got in sync, the copy-state hook (by index) recorded the NEW,
# never written copy in sync: v read zeros through that node.  Now the refusal
# sets vol/v back (the old copy, with any state the layout asked meanwhile)
# and deletes the new copy (volume.c replace_refused), and a copy state is
# written only into a slot that lists the layout's copy (cluster.c
# state_mutate, "replaced since").
#   4 nodes (--resync-rate 2M); per layout (mirror 3 replicas, ec 2+1):
#   v 16 MiB attached on n1 and written; a copy OLD (not n1) replaced onto the
#   spare S (rebuilding at 2 MiB/s); meanwhile replace-replica v --node S --to
#   OLD: refused, and vol/v lists the same nodes as before it; once in sync,
#   v reads back as written attached on every listed node; scrub clean.
#   Then (mirror, vh) OLD's copy replaced onto the spare, and while that
#   rebuilds, another copy Y replaced onto OLD: refused, but held on n1 between
#   its record write and the coordinator's answer
#   (TSR_TEST_REPLACE_LAYOUT_HOLD_FILE) while Y is killed, so the layout's
#   out-of-sync of Y comes while the slot lists OLD ("out-of-sync held" in n1's
#   log).  The undo writes that state: vol/vh lists Y out-of-sync (before the
#   hold it would have been set back to in-sync, a copy that misses writes).
#   Y started again, resynced; v reads back through every node; scrub clean.
# On the code before the fix: "the refused replace changed vol/v".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy

slots() { ctsr --json volume show "$1" | json_get '",".join(c["node"] for c in j["copies"])'; }

HOLD=/var/tmp/tsr-replace-refused-hold.$$
export TSR_TEST_REPLACE_LAYOUT_HOLD_FILE=$HOLD
cl_start 4 --resync-rate 2M
unset TSR_TEST_REPLACE_LAYOUT_HOLD_FILE
on_exit "rm -f $HOLD"
IMG=$CL_ROOT/img
cl_pattern "$IMG" $((16 << 20)) 5
want=$(sha256 "$IMG")

run_case() {
	local lay=$1 vol=$2 copies old= spare= i s1 s2 rc out n h
	if [ "$lay" = ec ]; then
		ctsr volume create "$vol" --size 16M --ec 2+1 --stripe-unit 16K >/dev/null
	else
		ctsr volume create "$vol" --size 16M --replicas 3 --min-replicas 2 >/dev/null
	fi || fail "$lay: create $vol"
	ctsr volume attach "$vol" --node n1 >/dev/null || fail "$lay: attach $vol"
	nbdcopy "$IMG" "$(cl_nbd_uri 1 "$vol")" || fail "$lay: write $vol"
	copies=$(cl_copy_nodes "$vol")
	for i in 2 3 4; do
		case ",$copies," in
		*,n$i,*) [ -z "$old" ] && old=n$i ;;
		*) spare=n$i ;;
		esac
	done
	[ -n "$old" ] && [ -n "$spare" ] || fail "$lay: copies $copies: no OLD/spare"
	ctsr volume replace-replica "$vol" --node "$old" --to "$spare" >/dev/null ||
		fail "$lay: replace $old -> $spare"
	s1=$(slots "$vol")
	rc=0
	if [ "${3:-}" = held ]; then
		local y=
		for i in 2 3 4; do
			case ",$copies," in *,n$i,*) [ "n$i" != "$old" ] && y=n$i ;; esac
		done
		: > "$HOLD"
		ctsr volume replace-replica "$vol" --node "$y" --to "$old" > "$CL_ROOT/out" 2>&1 &
		local bg=$!
		wait_log 1 "replace of $vol: test hold .* between the record and the coordinator" 30
		cl_kill "${y#n}"
		wait_log 1 "volume $vol: copy [0-9]+ \\($y\\) out-of-sync (held|not recorded)" 30
		rm -f "$HOLD"
		wait "$bg" || rc=$?
		out=$(cat "$CL_ROOT/out")
	else
		out=$(ctsr volume replace-replica "$vol" --node "$spare" --to "$old" 2>&1) || rc=$?
	fi
	log "$lay: second replace: exit $rc: $out"
	s2=$(slots "$vol")
	[ "$rc" -ne 0 ] || fail "$lay: the second replace was not refused (the rebuild ended first?)"
	case "$out" in *"refused the new copy"*) ;; *) fail "$lay: unexpected refusal: $out" ;; esac
	assert_eq "$s2" "$s1" "$lay: the refused replace changed vol/$vol (slots)"
	if [ "${3:-}" = held ]; then
		assert_eq "$(ctsr --json volume show "$vol" | json_get "[c.get('state') for c in j['copies'] if c['node']=='$y'][0]")" \
			out-of-sync "$lay: vol/$vol's state of $y (killed while the refused replace was held)"
		cl_start_node "${y#n}"
	fi
	cl_wait_synced "$vol" 90
	log "$lay: in sync: $(ctsr --json volume show "$vol" | json_get '[(c["node"], c.get("state")) for c in j["copies"]]')"
	assert_eq "$(slots "$vol")" "$s1" "$lay: vol/$vol slots once in sync"
	ctsr volume detach "$vol" >/dev/null || fail "$lay: detach $vol"
	for n in ${s1//,/ }; do
		ctsr volume attach "$vol" --node "$n" >/dev/null || fail "$lay: attach $vol on $n"
		h=$(cl_image_sha "${n#n}" "$vol") || fail "$lay: read $vol through $n"
		[ "$h" = "$want" ] || fail "$lay: $vol reads back wrong attached on $n (sha ${h:0:16}, want ${want:0:16})"
		log "$lay: $vol reads back as written attached on $n"
		ctsr volume detach "$vol" >/dev/null || fail "$lay: detach $vol from $n"
	done
	ctsr volume attach "$vol" --node n1 >/dev/null || fail "$lay: attach $vol again"
	cl_scrub_clean "$vol" "$lay"
	ctsr volume detach "$vol" >/dev/null || fail "$lay: final detach $vol"
}

run_case mirror vm
run_case ec ve
run_case mirror-held vh held
cl_stop_all
log ok
