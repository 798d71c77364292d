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
# On the code before the fix: "the refused replace changed vol/v".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy

slots() { ctsr --json volume show "$1" | json_get '",".join(c["node"] for c in j["copies"])'; }

cl_start 4 --resync-rate 2M
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
	out=$(ctsr volume replace-replica "$vol" --node "$spare" --to "$old" 2>&1) || rc=$?
	log "$lay: second replace ($spare -> $old while $spare rebuilds): exit $rc: $out"
	s2=$(slots "$vol")
	[ "$rc" -ne 0 ] || fail "$lay: the second replace was not refused (the rebuild ended first?)"
	case "$out" in *"refused the new copy"*) ;; *) fail "$lay: unexpected refusal: $out" ;; esac
	assert_eq "$s2" "$s1" "$lay: the refused replace changed vol/$vol (slots)"
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
cl_stop_all
log ok
