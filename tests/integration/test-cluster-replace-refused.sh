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
#   Then (mirror, vc; review 14c, A) the same on a coordinator that is not
#   the metadata node (n2): OLD's copy replaced onto the spare, and while that
#   rebuilds, an in-sync copy Z replaced onto OLD with the hold set, and n2
#   killed (while held, if it gets there) and started again.  The coordinator
#   refuses it before the record write now, so vol/vc still lists Z and an
#   attach on n1 succeeds; vc reads back through every listed node.  Before
#   (REPLACECHECK_OFF=1: TSR_TEST_REPLACE_NO_CHECK_FILE, the order before the
#   check) the kill left the refused replace's record: "cannot attach vc on
#   n1" (too few in-sync copies), Z's good copy unlisted.
# On the code before the fix: "the refused replace changed vol/v".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy

slots() { ctsr --json volume show "$1" | json_get '",".join(c["node"] for c in j["copies"])'; }

HOLD=/var/tmp/tsr-replace-refused-hold.$$
NOCHECK=/var/tmp/tsr-replace-refused-nocheck.$$
export TSR_TEST_REPLACE_LAYOUT_HOLD_FILE=$HOLD TSR_TEST_REPLACE_NO_CHECK_FILE=$NOCHECK
cl_start 4 --resync-rate 2M
unset TSR_TEST_REPLACE_LAYOUT_HOLD_FILE
on_exit "rm -f $HOLD $NOCHECK"
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
		# the undo's test: the coordinator is not asked first (else it
		# refuses before the record write and the hold)
		: > "$HOLD"
		: > "$NOCHECK"
		ctsr volume replace-replica "$vol" --node "$y" --to "$old" > "$CL_ROOT/out" 2>&1 &
		local bg=$!
		wait_log 1 "replace of $vol: test hold .* between the record and the coordinator" 30
		cl_kill "${y#n}"
		wait_log 1 "volume $vol: copy [0-9]+ \\($y\\) out-of-sync (held|not recorded)" 30
		rm -f "$HOLD"
		wait "$bg" || rc=$?
		rm -f "$NOCHECK"
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

# ONLY_CRASH=1: the last case alone
if [ -z "${ONLY_CRASH:-}" ]; then
	run_case mirror vm
	run_case ec ve
	run_case mirror-held vh held
fi

# review 14c, A: n2 (the coordinator, not the metadata node) killed during a
# replace of an in-sync copy that its layout refuses
crash_case() {
	local vol=vc copies old= spare= z= i rc=0 bg n h r listed
	recs() { ctsr --json volume show "$vol" | json_get '[(c["node"], c.get("state")) for c in j["copies"]]'; }
	ctsr volume create "$vol" --size 16M --replicas 3 --min-replicas 2 >/dev/null || fail "crash: create $vol"
	ctsr volume attach "$vol" --node n2 >/dev/null || fail "crash: attach $vol on n2"
	nbdcopy "$IMG" "$(cl_nbd_uri 2 "$vol")" || fail "crash: write $vol"
	copies=$(cl_copy_nodes "$vol")
	for i in 1 3 4 2; do
		case ",$copies," in
		*,n$i,*) [ -z "$old" ] && [ $i != 2 ] && old=n$i ;;
		*) spare=n$i ;;
		esac
	done
	for i in 1 3 4 2; do
		case ",$copies," in *,n$i,*) [ "n$i" != "$old" ] && [ $i != 2 ] && [ -z "$z" ] && z=n$i ;; esac
	done
	[ -n "$old" ] && [ -n "$spare" ] && [ -n "$z" ] || fail "crash: copies $copies: no OLD/spare/Z"
	log "crash: copies $copies; OLD=$old spare=$spare Z=$z (coordinator n2)"
	ctsr_via 2 volume replace-replica "$vol" --node "$old" --to "$spare" >/dev/null ||
		fail "crash: replace $old -> $spare"
	local s1
	s1=$(slots "$vol")
	[ -n "${REPLACECHECK_OFF:-}" ] && : > "$NOCHECK"
	: > "$HOLD"
	ctsr_via 2 volume replace-replica "$vol" --node "$z" --to "$old" > "$CL_ROOT/out" 2>&1 &
	bg=$!
	# held (the code before the check), or refused at once
	for i in $(seq 300); do
		grep -Eq "replace of $vol: test hold .* between the record and the coordinator" \
			"$(cl_dir 2)/tesserad.log" 2>/dev/null && break
		kill -0 "$bg" 2>/dev/null || break
		sleep 0.1
	done
	sleep 1
	cl_kill 2
	wait "$bg" || rc=$?
	log "crash: second replace ($z -> $old, n2 killed): exit $rc: $(cat "$CL_ROOT/out")"
	rm -f "$HOLD" "$NOCHECK"
	log "crash: record after the kill: $(recs)"
	cl_start_node 2
	cl_wait_nodes_alive 4
	ctsr volume detach "$vol" >/dev/null 2>&1 || ctsr volume detach "$vol" --force >/dev/null 2>&1 ||
		log "crash: detach failed: $(ctsr volume detach "$vol" 2>&1)"
	cl_attach_retry "$vol" n1 || fail "crash: cannot attach $vol on n1 (record $(recs))"
	assert_eq "$(slots "$vol")" "$s1" "crash: the refused replace changed vol/$vol (slots)"
	cl_wait_synced "$vol" 120
	r=$(recs)
	log "crash: record once in sync: $r"
	listed=$(cl_copy_nodes "$vol")
	for n in ${listed//,/ }; do
		ctsr volume detach "$vol" >/dev/null || fail "crash: detach"
		ctsr volume attach "$vol" --node "$n" >/dev/null || fail "crash: attach on $n"
		h=$(cl_image_sha "${n#n}" "$vol") || fail "crash: read through $n"
		[ "$h" = "$want" ] || fail "crash: $vol reads back wrong through $n (record $r)"
		log "crash: $vol reads back as written attached on $n"
	done
	ctsr volume detach "$vol" >/dev/null
	ctsr volume attach "$vol" --node n1 >/dev/null || fail "crash: attach again"
	cl_scrub_clean "$vol" crash
	ctsr volume detach "$vol" >/dev/null || fail "crash: final detach $vol"
}
crash_case
cl_stop_all
log ok
