#!/usr/bin/env bash
# A new copy's first state asked between the coordinator taking it and the
# end of the pending replace is recorded (review 14c, finding D; contract
# s15-replace2, item 2).  In that window the cluster's slot still named the
# old node, so the new copy's in-sync was held as if it were the old copy's
# and dropped when the replace ended: vol/<name> kept the new copy
# out-of-sync (rebuild) until the next attach, though the coordinator had it
# in sync and was told "recorded" (it never asks again).
#   4 nodes; a mirror vm (4 MiB, 2 replicas, min 1), then an ec 2+1 ve,
#   attached on n1 and written; the first copy, on O, replaced --to X
#   through n1 with TSR_TEST_REPLACE_TAKEN_HOLD_FILE set (volume.c: n1 waits
#   after the layout took the new copy, before replace_pending_end).  The
#   4 MiB rebuild finishes inside the hold: n1 logs the new copy's in-sync
#   asked in the window ("mirror vm: copy N (X) -> in-sync").  Released, the
#   replace answers 0; then the record (volume show) and volume status list
#   X in-sync without a re-attach; it reads back as written, scrub clean;
#   detached and attached on X's node it reads back as written.
#   CASES="vm ve" (default) selects.
# Needs the node id in hooks.set_copy_state (the layout names each copy's
# own node); without it: "FAIL: vol/vm's copy on n4 is 'out-of-sync' 20 s
# after the replace".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy

HOLD_DIR=$(mktemp -d /var/tmp/tsr-replace-first-state.XXXXXX)
HOLD=$HOLD_DIR/hold
on_exit "rm -f '$HOLD'; rmdir '$HOLD_DIR'"
export TSR_TEST_REPLACE_TAKEN_HOLD_FILE=$HOLD
cl_start 4
unset TSR_TEST_REPLACE_TAKEN_HOLD_FILE
SIZE=$((4 << 20))
IMG=$CL_ROOT/img
cl_pattern "$IMG" "$SIZE" 89

# run_case VOL KIND CREATE-ARGS...: KIND as the layout logs it (mirror, ec)
run_case() {
	local v=$1 kind=$2 O X n i st nodes rc
	shift 2
	ctsr volume create "$v" --size 4M "$@" >/dev/null || fail "volume create $v"
	ctsr volume attach "$v" --node n1 >/dev/null || fail "volume attach $v"
	nbdcopy "$IMG" "$(cl_nbd_uri 1 "$v")" || fail "nbdcopy into $v"
	cl_wait_synced "$v"
	nodes=$(ctsr --json volume show "$v" | json_get '" ".join(c["node"] for c in j["copies"])')
	read -r O _ <<<"$nodes"
	X=
	for n in n4 n3 n2 n1; do
		case " $nodes " in *" $n "*) ;; *) X=$n; break ;; esac
	done
	[ -n "$X" ] || fail "$v: no free node (copies $nodes)"
	log "$v: replace its copy on $O --to $X through n1, held after the coordinator takes it"
	touch "$HOLD"
	( "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
		volume replace-replica "$v" --node "$O" --to "$X" >"$CL_ROOT/r.out" 2>&1
	  echo $? >"$CL_ROOT/r.rc" ) &
	RP=$!
	wait_log 1 "replace of $v: test hold .* between the coordinator taking the new copy" 30
	# the new copy's in-sync, asked in the window (the layout's hook,
	# copyset.c; before the fix the cluster named it by the old node and
	# held it: "copy N ($O) in-sync held: a replace of that slot onto $X")
	wait_log 1 "$kind $v: copy [0-9] \\($X\\) -> in-sync" 60
	log "$v: the new copy on $X got in sync inside the window; released"
	rm -f "$HOLD"
	wait "$RP" && rc=0 || rc=$?
	[ "$(cat "$CL_ROOT/r.rc")" = 0 ] ||
		fail "replace-replica $v --node $O --to $X: $(cat "$CL_ROOT/r.out")"
	st=
	for (( i=0; i<100; i++ )); do
		st=$(ctsr --json volume show "$v" |
			json_get "[c['state'] for c in j['copies'] if c['node']=='$X'][0]" 2>/dev/null)
		[ "$st" = in-sync ] && break
		sleep 0.2
	done
	[ "$st" = in-sync ] || fail "vol/$v's copy on $X is '$st' 20 s after the replace, though \
its coordinator has it in sync (its first state, asked in the window, was dropped): \
$(ctsr volume status "$v" 2>&1)"
	st=$(vstatus "$v" "[c['state'] for c in j['volume']['copies'] if c['node']=='$X'][0]")
	[ "$st" = in-sync ] || fail "volume status $v: $X's copy is '$st'"
	log "$v: vol/$v lists $X in-sync without a re-attach"
	cl_assert_image 1 "$v" "$IMG" "$v after the replace onto $X"
	cl_scrub_clean "$v" "$v after the replace onto $X"
	ctsr volume detach "$v" >/dev/null || fail "volume detach $v"
	ctsr volume attach "$v" --node "$X" >/dev/null || fail "volume attach $v --node $X"
	cl_assert_image "${X#n}" "$v" "$IMG" "$v attached on $X"
	ctsr volume detach "$v" >/dev/null || fail "volume detach $v"
}

CASES=${CASES:-vm ve}
case " $CASES " in *" vm "*) run_case vm mirror --replicas 2 --min-replicas 1 ;; esac
case " $CASES " in *" ve "*) run_case ve ec --ec 2+1 --stripe-unit 16K ;; esac
cl_stop_all
