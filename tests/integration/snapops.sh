# shellcheck shell=bash
# What the tests of a detached volume's snapshot operations held open
# (session 15: test-snap-rollback-*, test-snap-detached-cut-*,
# test-snap-clone-tmpdel-offloop) do alike.  Sourced after functions.sh and
# cluster.sh; nodes 1..$CL_N, the admin token of node 1.
#
#   hold_cl_start VAR N [ARG...]
#                   a hold file $HOLD ($HOLD_DIR/hold, HOLD_DIR made),
#                   exported to the nodes as VAR (a test hook: the node's
#                   step waits while $HOLD exists and makes $HOLD.held when
#                   it begins to wait), then cl_start N ARG...; $HOLD removed
#                   at exit before the nodes are killed (a node waiting on it
#                   would not stop)
#   held_start H OUT WHAT CMD...
#                   the hold file H ($HOLD, or another the nodes were given)
#                   made (an old H.held removed), CMD in the
#                   background (its output in OUT, its pid in $HELD_PID,
#                   tracked), then wait up to 30 s for H.held; fails,
#                   naming WHAT (the step held), if CMD ended first or the
#                   step was not held by then.  rm -f H releases it;
#                   reap "$HELD_PID" gives CMD's exit status
#   ctsr_within S I ARG...
#                   the CLI through node I, bounded to S seconds (timeout's
#                   status 124 when it did not answer)
#   snaps_all VOL SNAP
#                   "n1:yes n2:no ...": whether each node's catalogue has
#                   VOL@SNAP
#   copies_sha VOL TAG
#                   "sha1 sha2 ...": each node's own copy of VOL, read through
#                   VOL@TAG cut on that copy alone (admin_local_copy's
#                   local_copy create, $ADMIN_LOCAL_COPY), deleted after
#   first_mib I EXPORT
#                   the distinct bytes of EXPORT's first MiB read through
#                   node I ("11" for a MiB of 0x11)
#   assert_attach_clean I VOL MSG
#                   node I's last attach of VOL logged ", clean)" (it did not
#                   converge: the record said the copies agree); else fails
#                   saying MSG and the line
#   v_at_s1 LEN
#                   v (made by the caller) written 0x11 through n1 (s1 set
#                   to its sha), detached, snapshot s1 cut, attached on n1
#                   again, 0x22 written over [0,LEN) (v now differs from
#                   s1) and detached: a rollback to s1 changes it back
#   log_mark I...   node I's log length noted: since_mark I then gives node
#                   I's log lines written after it
#   store_rollback_held OUT I...
#                   log_mark I..., $HOLD made, `volume rollback v s1` in the
#                   background (its output in OUT, its pid in $RB_PID,
#                   tracked), then until each node I's log has "rollback:
#                   volume v: test hold" (30 s each); fails if the rollback
#                   ended first or a node's store was not held by then

hold_cl_start() { # VAR N [ARG...]
	local var=$1
	shift
	make_tmpdir HOLD_DIR
	HOLD=$HOLD_DIR/hold
	export "$var=$HOLD"
	cl_start "$@"
	on_exit "rm -f '$HOLD'" # before the nodes are killed
}

held_start() { # H OUT WHAT CMD...
	local hold=$1 out=$2 what=$3 i
	shift 3
	rm -f "$hold.held"
	touch "$hold"
	"$@" >"$out" 2>&1 &
	HELD_PID=$!
	track_pid "$HELD_PID"
	for (( i=0; i<300; i++ )); do
		[ -e "$hold.held" ] && break
		kill -0 "$HELD_PID" 2>/dev/null || fail "$what: the command answered before it was held: $(cat "$out")"
		sleep 0.1
	done
	[ -e "$hold.held" ] || fail "$what: not held after 30 s ($hold.held missing)"
}

ctsr_within() { # S I ARG...
	timeout "$1" "$TESSERA" --cluster "$(cl_addr "$2")" --token-file "$(cl_dir 1)/admin.token" "${@:3}"
}

snaps_all() { # VOL SNAP
	local i out=
	for (( i=1; i<=CL_N; i++ )); do
		case " $(cl_snaps_of $i "$1") " in
		*" $2 "*) out+="n$i:yes " ;;
		*) out+="n$i:no " ;;
		esac
	done
	echo "${out% }"
}

copies_sha() { # VOL TAG
	local n out h=()
	for (( n=1; n<=CL_N; n++ )); do
		out=$("$ADMIN_LOCAL_COPY" "$(cl_dir $n)" snapshot-create "$1" "$2" 2>&1) ||
			fail "n$n: local_copy create of $1@$2: $out"
		h[n]=$(cl_image_sha $n "$1@$2") || fail "read $1@$2 on n$n"
		out=$("$ADMIN_LOCAL_COPY" "$(cl_dir $n)" snapshot-delete "$1" "$2" 2>&1) ||
			fail "n$n: local_copy delete of $1@$2: $out"
	done
	echo "${h[*]}"
}

first_mib() { # I EXPORT
	nbdcopy "$(cl_nbd_uri "$1" "$2")" - | headc 1048576 | od -v -An -tx1 |
		tr -s ' \n' '\n' | sort -u | tr -d '\n'
}

assert_attach_clean() { # I VOL MSG
	local got
	got=$(grep -E "attaching $2 epoch" "$(cl_dir "$1")/tesserad.log" | tail -1)
	case "$got" in
	*", clean)"*) ;;
	*) fail "$3: $got" ;;
	esac
}

v_at_s1() { # LEN
	ctsr volume attach v --node n1 >/dev/null || fail "attach v"
	qemu-io -f raw -c 'write -P 0x11 0 8M' "$(cl_nbd_uri 1 v)" >/dev/null || fail "write v 0x11"
	s1=$(cl_image_sha 1 v) || fail "read v"
	ctsr volume detach v >/dev/null || fail "detach v"
	ctsr snapshot create v s1 >/dev/null || fail "snapshot create v s1"
	ctsr volume attach v --node n1 >/dev/null || fail "attach v again"
	qemu-io -f raw -c "write -P 0x22 0 $1" "$(cl_nbd_uri 1 v)" >/dev/null || fail "write v 0x22"
	[ "$(cl_image_sha 1 v)" != "$s1" ] || fail "the second write did not change v"
	ctsr volume detach v >/dev/null || fail "detach v again"
}

declare -A LOG_MARK=()
log_mark() { # I...
	local n
	for n in "$@"; do LOG_MARK[$n]=$(wc -l <"$(cl_dir "$n")/tesserad.log"); done
}
since_mark() { tail -n +$(( LOG_MARK[$1] + 1 )) "$(cl_dir "$1")/tesserad.log"; }

store_rollback_held() { # OUT I...
	local out=$1 n i pid
	shift
	log_mark "$@"
	touch "$HOLD"
	ctsr volume rollback v s1 >"$out" 2>&1 &
	RB_PID=$!
	pid=$RB_PID
	track_pid "$pid"
	for n in "$@"; do
		for (( i=0; i<300; i++ )); do
			since_mark "$n" | grep -q "rollback: volume v: test hold" && break
			kill -0 "$pid" 2>/dev/null ||
				fail "the rollback answered before n$n's store held it: $(cat "$out")"
			sleep 0.1
		done
		since_mark "$n" | grep -q "rollback: volume v: test hold" ||
			fail "n$n's store rollback of v not held after 30 s"
	done
}
