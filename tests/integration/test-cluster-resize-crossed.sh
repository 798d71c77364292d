#!/usr/bin/env bash
# Two online resizes that cross (session-13 review, finding 4): a is attached
# on n1 and resized through n2, b is attached on n2 and resized through n1,
# both at once.  Before, each node's loop blocked in a call to the other
# (n2 asking n1, a's coordinator, for step (a) while n1 asked n2, b's) for up
# to 120 s, and no admin call of either node was answered meanwhile.  Now a
# resize's node calls are asynchronous (the reply comes later).
# To hold both resizes in their node calls for sure, n3 (holding a copy of
# each) is frozen (SIGSTOP) before they are sent: both wait for n3's answer
# to step (b).  Meanwhile a `volume list` through n1 and one through n2 must
# answer, BEFORE either resize (asserted by the order of their completions in
# a log, never by a time).  n3 resumed: both resizes complete (or, when n3
# was seen away, are refused saying why and nothing changed, and then a
# retry succeeds); both volumes are 16 MiB in their records, in every copy,
# and a write past the old end reads back through each coordinator.  Last, a
# resize through n2 waiting for frozen n3 when n2 stops: not a success,
# n2 exits 0, a keeps 16 MiB.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd qemu-io

cl_start 3
M=$((1 << 20))
ctsr volume create a --size 8M --replicas 3 >/dev/null || fail "create a"
ctsr volume create b --size 8M --replicas 3 >/dev/null || fail "create b"
ctsr volume attach a --node n1 >/dev/null || fail "attach a"
ctsr volume attach b --node n2 >/dev/null || fail "attach b"

EV=$CL_ROOT/events
: > "$EV"
freeze_pids "${CL_PID[3]}" || fail "pid ${CL_PID[3]} not stopped"
on_exit "kill -CONT ${CL_PID[3]} 2>/dev/null"
( ctsr_via 2 volume resize a --size 16M > "$CL_ROOT/ra.out" 2>&1; echo "resize-a $?" >> "$EV" ) &
pa=$!
( ctsr_via 1 volume resize b --size 16M > "$CL_ROOT/rb.out" 2>&1; echo "resize-b $?" >> "$EV" ) &
pb=$!
track_pid "$pa"
track_pid "$pb"
sleep 0.5
for n in 1 2; do
	wrap=()
	[ "$CL_NETNS" = 1 ] && wrap=(ip netns exec "$(cl_ns "$n")")
	if timeout 20 "${wrap[@]}" "$TESSERA" --cluster "$(cl_addr "$n")" --token-file \
		"$(cl_dir 1)/admin.token" volume list > "$CL_ROOT/list$n.out" 2>&1; then
		echo "list-n$n 0" >> "$EV"
	else
		echo "list-n$n $?" >> "$EV"
	fi
done
kill -CONT "${CL_PID[3]}"
reap "$pa"
reap "$pb"
log "events: $(tr '\n' ',' < "$EV")"
assert_eq "$(head -n2 "$EV" | tr '\n' ' ')" "list-n1 0 list-n2 0 " \
	"the two volume lists answered, before either resize"
for n in 1 2; do
	grep -qw b "$CL_ROOT/list$n.out" ||
		fail "the list through n$n does not show b: $(cat "$CL_ROOT/list$n.out")"
done

for v in a b; do
	st=$(grep "^resize-$v " "$EV" | cut -d' ' -f2)
	[ -n "$st" ] || fail "resize of $v did not finish"
	if [ "$st" != 0 ]; then
		out=$(cat "$CL_ROOT/r$v.out")
		log "resize of $v refused: $out"
		printf '%s' "$out" | grepq -E "nothing changed|retry" ||
			fail "resize of $v refused without saying what to do: $out"
		via=2; [ "$v" = b ] && via=1
		cl_wait_nodes_alive 3
		out=$(ctsr_via "$via" volume resize "$v" --size 16M 2>&1) ||
			fail "retried resize of $v: $out"
	fi
done
for v in a b; do
	assert_eq "$(ctsr --json volume show "$v" | json_get 'j["size"]')" $((16 * M)) \
		"$v's recorded size"
	for i in 1 2 3; do
		assert_eq "$(cl_copy_size "$i" "$v")" $((16 * M)) "$v's copy on n$i"
	done
done
cl_qemu_io 1 a "write -P 0x5a 12M 64k" "read -P 0x5a 12M 64k" >/dev/null ||
	fail "a: write and read past the old end through n1"
cl_qemu_io 2 b "write -P 0xa5 12M 64k" "read -P 0xa5 12M 64k" >/dev/null ||
	fail "b: write and read past the old end through n2"
# a node stopping with a resize waiting for a node's answer: the resize ends
# (-ECANCELED; the admin server closes its connections at stop, as for every
# reply answered later, so the CLI sees the connection close), the node
# exits 0, nothing changed
freeze_pids "${CL_PID[3]}" || fail "pid ${CL_PID[3]} not stopped"
( ctsr_via 2 volume resize a --size 24M > "$CL_ROOT/rs.out" 2>&1; echo "resize-stop $?" >> "$EV" ) &
ps=$!
track_pid "$ps"
sleep 0.5
cl_stop 2
reap "$ps"
kill -CONT "${CL_PID[3]}"
log "resize through n2 at its stop: $(grep '^resize-stop' "$EV"): $(cat "$CL_ROOT/rs.out")"
[ "$(grep '^resize-stop' "$EV" | cut -d' ' -f2)" != 0 ] || fail "a resize cut by its node's stop succeeded"
assert_eq "$(ctsr --json volume show a | json_get 'j["size"]')" $((16 * M)) \
	"a's recorded size after the resize cut by n2's stop"
cl_stop_all
log "crossed resizes: both answered, both nodes' loops served a volume list meanwhile"
