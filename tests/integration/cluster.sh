# shellcheck shell=bash
# Helpers for the multi-node tests (tests/integration/test-cluster-*.sh).
# Sourced after functions.sh:   . "$(dirname "$0")/functions.sh"; . "$(dirname "$0")/cluster.sh"
#
# A cluster here is N tesserad processes on 127.0.0.1, each with its own data
# directory ($CL_ROOT/nI), its own --listen port and zone zI; node 1 holds the
# embedded metadata store (--meta), the others --join it.  Node ids are n1..nN.

#
# With CL_NETNS=1 (root), every node runs in a network namespace of its own,
# tsrn<pid>-I, with address 10.231.0.I on a veth whose other end is on a
# bridge in a further namespace tsrb<pid>; cl_cut I / cl_heal I take node I's
# link down and up (a partition).  NBD clients still reach the nodes through
# their unix sockets (file system, not network).

CL_ROOT=
CL_N=0
CL_NETNS=${CL_NETNS:-0}
CL_BR=tsrb$$
declare -a CL_PORT=() CL_PID=() CL_ARGS=()

# cl_dir I: data directory of node I.
cl_dir() { echo "$CL_ROOT/n$1"; }
cl_addr() {
	if [ "$CL_NETNS" = 1 ]; then echo "10.231.0.$1:7000"; else echo "127.0.0.1:${CL_PORT[$1]}"; fi
}
cl_ns() { echo "tsrn$$-$1"; }

_cl_netns_setup() {
	local n=$1 i
	require_root
	command -v ip >/dev/null || skip "iproute2 (ip) not installed"
	ip netns add "$CL_BR" 2>/dev/null || skip "cannot create network namespaces"
	on_exit "ip netns del $CL_BR"
	ip netns exec "$CL_BR" ip link add br0 type bridge || fail "bridge"
	ip netns exec "$CL_BR" ip link set br0 up
	for (( i=1; i<=n; i++ )); do
		ip netns add "$(cl_ns "$i")" || fail "netns add"
		on_exit "ip netns del $(cl_ns "$i")"
		ip link add "tv$$-$i" type veth peer name "tb$$-$i" || fail "veth"
		ip link set "tv$$-$i" netns "$(cl_ns "$i")"
		ip link set "tb$$-$i" netns "$CL_BR"
		ip netns exec "$CL_BR" ip link set "tb$$-$i" master br0 up
		ip netns exec "$(cl_ns "$i")" ip link set lo up
		ip netns exec "$(cl_ns "$i")" ip addr add "10.231.0.$i/24" dev "tv$$-$i"
		ip netns exec "$(cl_ns "$i")" ip link set "tv$$-$i" up
	done
}

# cl_cut I / cl_heal I: partition node I from every other node and back.
cl_cut() { ip netns exec "$CL_BR" ip link set "tb$$-$1" down; log "partition: n$1 cut off"; }
cl_heal() { ip netns exec "$CL_BR" ip link set "tb$$-$1" up; log "partition: n$1 back"; }

# cl_start_node I [EXTRA ARGS...]: start (or restart) node I with the args it
# was first started with (plus EXTRA on first start).
cl_start_node() {
	local i=$1
	shift
	if [ -z "${CL_ARGS[$i]:-}" ]; then
		local role
		if [ "$i" = 1 ]; then
			role="--meta"
		else
			role="--join $(cl_addr 1) --token-file $(cl_dir 1)/admin.token"
		fi
		CL_ARGS[$i]="--listen $(cl_addr "$i") --node-id n$i --zone z$i $role --peer-timeout 2000 $*"
	fi
	[ "$CL_NETNS" = 1 ] && TSRD_WRAP=(ip netns exec "$(cl_ns "$i")")
	# shellcheck disable=SC2086
	start_tesserad "$(cl_dir "$i")" ${CL_ARGS[$i]}
	TSRD_WRAP=()
	CL_PID[$i]=$TSRD_PID
}

# cl_start N [EXTRA ARGS for every node...]: a fresh N-node cluster.
cl_start() {
	local n=$1 i
	shift
	make_tmpdir CL_ROOT
	CL_N=$n
	[ "$CL_NETNS" = 1 ] && _cl_netns_setup "$n"
	i=1
	while read -r port; do
		CL_PORT[$i]=$port
		i=$(( i + 1 ))
	done < <(free_ports "$n")
	(( i == n + 1 )) || fail "cannot find $n free TCP ports"
	for (( i=1; i<=n; i++ )); do
		cl_start_node "$i" "$@"
	done
	cl_wait_nodes_alive "$n"
}

# cl_start_held N I ENV FILE: a fresh N-node cluster whose node I runs with
# ENV=FILE (a test hold file: TSR_TEST_..._HOLD_FILE; FILE removed at exit).
cl_start_held() {
	local n=$1 i=$2
	cl_start "$n"
	on_exit "rm -f '$4'"
	cl_stop "$i"
	export "$3=$4" # node I's environment only
	cl_start_node "$i"
	unset "$3"
	cl_wait_nodes_alive "$n"
}

# cl_mirror_s1 VOL: VOL 8 MiB, 3 replicas, attached on n1: 0x11 over all of
# it, snapshot s1, then 0x22 over its first MiB (attached on n1 still).
cl_mirror_s1() {
	ctsr volume create "$1" --size 8M --replicas 3 >/dev/null || fail "create $1"
	ctsr volume attach "$1" --node n1 >/dev/null || fail "attach $1"
	qemu-io -f raw -c "write -P 0x11 0 8M" "$(cl_nbd_uri 1 "$1")" >/dev/null || fail "write $1"
	ctsr snapshot create "$1" s1 >/dev/null || fail "snapshot $1 s1"
	qemu-io -f raw -c "write -P 0x22 0 1M" "$(cl_nbd_uri 1 "$1")" >/dev/null ||
		fail "write $1 after s1"
}

# ctsr ARGS...: the CLI against the cluster (through node 1).
ctsr() { ctsr_via 1 "$@"; }
# ctsr_via I ARGS...: the CLI through node I (from inside its namespace).
ctsr_via() {
	local i=$1 wrap=()
	shift
	[ "$CL_NETNS" = 1 ] && wrap=(ip netns exec "$(cl_ns "$i")")
	"${wrap[@]}" "$TESSERA" --cluster "$(cl_addr "$i")" --token-file "$(cl_dir 1)/admin.token" "$@"
}

# cl_wait_nodes_alive N [TIMEOUT_S]: until `node list` shows N alive nodes.
cl_wait_nodes_alive() {
	local want=$1 t=${2:-30} i got=
	for (( i=0; i<t*10; i++ )); do
		got=$(ctsr --json node list 2>/dev/null | json_get 'sum(1 for n in j["nodes"] if n.get("alive"))' 2>/dev/null)
		[ "$got" = "$want" ] && return 0
		sleep 0.1
	done
	fail "expected $want alive nodes, have '${got}' after ${t}s: $(ctsr node list 2>&1)"
}

# cl_kill I: SIGKILL node I.
cl_kill() { kill9_tesserad "${CL_PID[$1]}"; CL_PID[$1]=; }
# cl_stop I: clean stop of node I.
cl_stop() { stop_tesserad "${CL_PID[$1]}"; CL_PID[$1]=; }
cl_stop_all() {
	local i
	for (( i=CL_N; i>=1; i-- )); do
		[ -n "${CL_PID[$i]:-}" ] && cl_stop "$i"
	done
	return 0
}

# cl_nbd_uri I VOL: the unix-socket NBD URI of VOL on node I.
cl_nbd_uri() { nbd_uri "$(cl_dir "$1")" "$2"; }

# vstatus VOL EXPR: a field of `volume status --json`.
vstatus() { ctsr --json volume status "$1" | json_get "$2"; }
# The nodes holding VOL's copies, sorted, comma-separated ("n1,n2,n3").
cl_copy_nodes() { ctsr --json volume show "$1" | json_get '",".join(sorted(c["node"] for c in j["copies"]))'; }
# The dirty (to resync) bytes of VOL's copy on NODE (n3), from volume status.
cl_copy_dirty() { vstatus "$1" "[c['dirty_bytes'] for c in j['volume']['copies'] if c['node']=='$2'][0]"; }

# cl_wait_synced VOL [TIMEOUT_S]: until every copy of VOL is in sync.
cl_wait_synced() {
	local vol=$1 t=${2:-120} i st=
	for (( i=0; i<t*5; i++ )); do
		st=$(vstatus "$vol" '",".join(c["state"] for c in j["volume"]["copies"])' 2>/dev/null)
		if [ -n "$st" ] && ! printf '%s' "$st" | grepq -v '^in-sync\(,in-sync\)*$'; then
			return 0
		fi
		sleep 0.2
	done
	fail "volume $vol not in sync after ${t}s: copies $st"
}

# cl_wait_state VOL NODE STATE [TIMEOUT_S]: until NODE's copy of VOL is STATE.
cl_wait_state() {
	local vol=$1 node=$2 want=$3 t=${4:-30} i st=
	for (( i=0; i<t*5; i++ )); do
		st=$(vstatus "$vol" "[c['state'] for c in j['volume']['copies'] if c['node']=='$node'][0]" 2>/dev/null)
		[ "$st" = "$want" ] && return 0
		sleep 0.2
	done
	fail "copy of $vol on $node is '$st', want '$want' after ${t}s"
}

# cl_copy_file I VOL: the data file of node I's copy of VOL (from its catalogue).
cl_copy_file() {
	local d
	d=$(cl_dir "$1")
	"$PY" - "$d" "$2" <<'EOF'
import sqlite3, sys
d, name = sys.argv[1], sys.argv[2]
db = sqlite3.connect(f"file:{d}/store.db?mode=ro", uri=True)
row = db.execute("select uuid from volumes where name = ?", (name,)).fetchone()
if row is None:
    sys.exit(f"{d}: no volume {name}")
print(f"{d}/volumes/{row[0]}.data")
EOF
}

# cl_assert_copies_identical VOL I J...: every listed node's copy of VOL has
# the same bytes (nodes stopped or idle).
cl_assert_copies_identical() {
	local vol=$1 first= f i
	shift
	for i in "$@"; do
		f=$(cl_copy_file "$i" "$vol") || fail "no copy of $vol on n$i"
		if [ -z "$first" ]; then
			first=$f
			continue
		fi
		cmp -s "$first" "$f" || fail "copies of $vol differ: $first vs $f ($(cmp "$first" "$f" 2>&1 | head -1))"
	done
	log "copies of $vol identical on nodes $*"
}

# wait_log I PATTERN [TIMEOUT_S]: until node I's log matches PATTERN (ERE).
wait_log() {
	local f i t=${3:-30}
	f=$(cl_dir "$1")/tesserad.log
	for (( i=0; i<t*10; i++ )); do
		grep -qE -- "$2" "$f" 2>/dev/null && return 0
		sleep 0.1
	done
	fail "n$1 log has no /$2/ after ${t}s"
}
# wait_log_from I FROM PATTERN: until node I's log, from line FROM on, has
# PATTERN (20 s; an earlier run of the same step logged it before FROM).
wait_log_from() {
	local f i
	f=$(cl_dir "$1")/tesserad.log
	for (( i=0; i<200; i++ )); do
		tail -n +"$2" "$f" | grepq -E -- "$3" && return 0
		sleep 0.1
	done
	fail "n$1 log has no /$3/ from line $2 on after 20 s"
}
# log_lines I: how many lines node I's log has (FROM for wait_log_from: +1).
log_lines() { wc -l <"$(cl_dir "$1")/tesserad.log"; }

# cl_recorded_missed VOL: the missed snapshot operations vol/VOL's record lists
# (every copy's CopyRecord.missed_snaps, field 4: tag 0x22, length, "c NAME"),
# comma-separated, read from the metadata store's file on n1 (also while n1's
# loop is held by a test hook).
cl_recorded_missed() {
	"$PY" - "$(cl_dir 1)" "$1" <<'EOF'
import re, sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}/meta.db?mode=ro", uri=True)
v = db.execute("select value from kv where key = ?", ("vol/" + sys.argv[2],)).fetchone()[0]
out = []
for m in re.finditer(rb'\x22([\x03-\x41])[cd] ', v):
    s = v[m.start() + 2:m.start() + 2 + m.group(1)[0]]
    if re.fullmatch(rb'[cd] [A-Za-z0-9._-]+', s):
        out.append(s.decode())
print(",".join(out))
EOF
}

# cl_recorded_snap_gen VOL: vol/VOL's VolumeRecord.snap_gen (field 19, a
# varint; 0 when absent), read from the metadata store's file on n1 (also
# while n1 is stopped): the record's top-level fields walked by wire type.
cl_recorded_snap_gen() {
	"$PY" - "$(cl_dir 1)" "$1" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}/meta.db?mode=ro", uri=True)
row = db.execute("select value from kv where key = ?", ("vol/" + sys.argv[2],)).fetchone()
if row is None:
    sys.exit(f"no vol/{sys.argv[2]} in {sys.argv[1]}/meta.db")
v, i, gen = row[0], 0, 0
def varint():
    global i
    n = s = 0
    while True:
        b = v[i]
        i += 1
        n |= (b & 0x7f) << s
        s += 7
        if b < 0x80:
            return n
while i < len(v):
    key = varint()
    field, wire = key >> 3, key & 7
    if wire == 0:
        val = varint()
        gen = val if field == 19 else gen
    elif wire == 2:
        n = varint()  # (not "i += varint()": i would be read before the call)
        i += n
    elif wire in (1, 5):
        i += 8 if wire == 1 else 4
    else:
        sys.exit(f"vol/{sys.argv[2]}: wire type {wire} at byte {i}: not a VolumeRecord")
print(gen)
EOF
}

# cl_image_sha I EXPORT: sha256 of export EXPORT ("VOL" or "VOL@SNAP") read
# whole through node I's NBD socket (a snapshot export reads that node's copy).
cl_image_sha() { nbdcopy "$(cl_nbd_uri "$1" "$2")" - | sha256sum | cut -d' ' -f1; }

# cl_assert_image I VOL FILE WHAT: VOL read whole through node I's NBD socket
# has FILE's bytes (sha256); WHAT names the step in a failure.
cl_assert_image() {
	local got want
	got=$(cl_image_sha "$1" "$2") || fail "$4: cannot read $2 through n$1"
	want=$(sha256 "$3")
	[ "$got" = "$want" ] || fail "$4: $2 read through n$1 differs from what was written"
	log "$4: $2 reads back as written (sha256 ${got:0:16})"
}

# cl_attach_retry VOL NODE [SECONDS]: attach VOL on NODE, retried for up to
# SECONDS (20) while it is refused (a dead coordinator's lease not lapsed yet,
# a node that has just joined or woken up and answers an OPEN late); logs the
# first refusal.
cl_attach_retry() {
	local i out tries=$(( ${3:-20} * 5 ))
	for (( i=0; i<tries; i++ )); do
		out=$(ctsr volume attach "$1" --node "$2" 2>&1) && { log "attached $1 on $2"; return 0; }
		(( i == 0 )) && log "attach $1 on $2 refused, retrying: $out"
		sleep 0.2
	done
	fail "cannot attach $1 on $2: $out"
}

# cl_snaps_of I VOL: the names of the snapshots node I's own copy of VOL holds,
# by cut order, from its catalogue (not hidden, deleting, clone-made or
# pending); read-only, so the node may be running.
cl_snaps_of() {
	"$PY" - "$(cl_dir "$1")" "$2" <<'PYEOF'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}/store.db?mode=ro", uri=True)
rows = db.execute("select s.name from snapshots s join volumes v on s.vol_uuid = v.uuid"
                  " where v.name = ? and (s.flags & 15) = 0 order by s.seq",
                  (sys.argv[2],)).fetchall()
print(" ".join(r[0] for r in rows))
PYEOF
}

# cl_assert_snap_identical VOL SNAP I J...: VOL@SNAP has the same bytes on
# every listed node's copy; prints the sha256.
cl_assert_snap_identical() {
	local vol=$1 snap=$2 first= h i
	shift 2
	for i in "$@"; do
		h=$(cl_image_sha "$i" "$vol@$snap") || fail "cannot read $vol@$snap on n$i"
		if [ -z "$first" ]; then
			first=$h
		elif [ "$h" != "$first" ]; then
			fail "snapshot $vol@$snap differs between n$1 and n$i"
		fi
	done
	echo "$first"
}

# cl_copy_size I VOL: bytes of node I's store copy of VOL (an ec volume's
# chunk volume), from its catalogue; empty with exit 1 when it has none.
cl_copy_size() {
	"$PY" - "$(cl_dir "$1")" "$2" <<'EOF'
import sqlite3, sys
d, name = sys.argv[1], sys.argv[2]
db = sqlite3.connect(f"file:{d}/store.db?mode=ro", uri=True)
row = db.execute("select size from volumes where name = ?", (name,)).fetchone()
if row is None:
    sys.exit(1)
print(row[0])
EOF
}

# cl_pattern FILE SIZE SEED: FILE gets SIZE bytes of seeded pseudo-random data.
cl_pattern() {
	"$PY" -c 'import random,sys
r = random.Random(int(sys.argv[3]))
with open(sys.argv[1], "wb") as f:
    left = int(sys.argv[2])
    while left:
        n = min(left, 1 << 20)
        f.write(r.randbytes(n))
        left -= n' "$1" "$2" "$3" || fail "cannot write the pattern $1"
}

# cl_patch FILE OFFSET LEN BYTE: overwrite LEN bytes of FILE at OFFSET with
# BYTE (the expected image after qemu-io "write -P BYTE OFFSET LEN").
cl_patch() {
	"$PY" -c 'import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2]))
    f.write(bytes([int(sys.argv[4], 0)]) * int(sys.argv[3]))' "$@" || fail "cannot patch $1"
}

# cl_qemu_io I VOL CMD...: qemu-io commands on VOL through node I's NBD socket.
cl_qemu_io() { qemu_io "$(cl_dir "$1")" "${@:2}"; }

# cl_wait_scrub_idle VOL [TIMEOUT_S]: until no scrub of VOL runs (an attach
# after an unclean detach may start one to converge the copies).
cl_wait_scrub_idle() {
	local vol=$1 t=${2:-120} i r=
	for (( i=0; i<t*5; i++ )); do
		r=$(vstatus "$vol" 'j["scrub_running"]' 2>/dev/null)
		[ "$r" = false ] && return 0
		sleep 0.2
	done
	fail "a scrub of $vol still runs after ${t}s (scrub_running '$r')"
}

# cl_scrub_clean VOL [WHAT]: the copies of VOL agree (invariant 3): once no
# scrub of VOL runs, `volume scrub VOL --no-repair` exits 0 and reports 0
# mismatching, 0 repaired and 0 unrepairable blocks (a mirror counts a block
# that fails its CRC on one copy as a mismatch; an ec volume, a stripe that
# does not decode consistently).  --no-repair: the scrub changes nothing, so
# what it checks is the state the test left.  WHAT names the step in a failure.
# The one check for every "the copies agree" step, mirror and ec, after a
# resync or a recovery alike: a --no-repair scrub never counts a block
# repaired, and counts one unrepaired only beside a mismatch (mirror_scrub.c,
# ec_scrub.c), so "0 0 0" asserts what "0 mismatches" did and no less.  A
# step that wants a scrub to find and repair something asserts its counts
# itself (test-cluster-rebuild-scrub).
cl_scrub_clean() {
	local vol=$1 what=${2:-$1} out got
	cl_wait_scrub_idle "$vol"
	out=$(ctsr --json volume scrub "$vol" --no-repair) ||
		fail "$what: scrub --no-repair of $vol exited non-zero: $out"
	got=$(printf '%s' "$out" |
		json_get '"%s %s %s" % (j["scrub_mismatches"], j["scrub_repaired"], j["scrub_unrepaired"])')
	assert_eq "$got" "0 0 0" "$what: scrub of $vol (mismatches repaired unrepaired)"
	log "$what: scrub of $vol clean ($(printf '%s' "$out" | json_get 'j["scrub_total_bytes"]') bytes checked)"
}

# cl_rec_nodes VOL: the nodes of VOL's copies in record order ("n2 n3": volume
# show lists them so).
cl_rec_nodes() { ctsr --json volume show "$1" | json_get '" ".join(c["node"] for c in j["copies"])'; }

# cl_free_node VOL [FROM]: the first of nFROM..n$CL_N (FROM 2) holding no copy
# of VOL by the record; status 1 when there is none.
cl_free_node() {
	local i
	for (( i=${2:-2}; i<=CL_N; i++ )); do
		case " $(cl_rec_nodes "$1") " in *" n$i "*) ;; *) echo "n$i"; return 0 ;; esac
	done
	return 1
}

# cl_move_off_n1 VOL [synced]: when the record lists a copy of VOL on n1, it is
# replaced onto cl_free_node (fails saying so if it cannot); with synced, VOL
# is then attached on n1, the rebuild waited for, and detached (the new copy
# starts out of sync: a replace of the other one, then VOL's last in-sync
# copy, would be refused).  The tests of a node without a copy of VOL.
cl_move_off_n1() {
	local x out
	case " $(cl_rec_nodes "$1") " in *" n1 "*) ;; *) return 0 ;; esac
	x=$(cl_free_node "$1") || fail "no free node for $1's copy on n1"
	out=$(ctsr volume replace-replica "$1" --node n1 --to "$x" 2>&1) ||
		fail "move $1's copy off n1: $out"
	[ "${2:-}" = synced ] || return 0
	ctsr volume attach "$1" --node n1 >/dev/null || fail "volume attach $1 (off n1)"
	cl_wait_synced "$1"
	ctsr volume detach "$1" >/dev/null || fail "volume detach $1 (off n1)"
}

# cl_move_onto_n1 VOL: when the record lists no copy of VOL on n1, its first
# copy is replaced onto n1 (fails saying so if it cannot).
cl_move_onto_n1() {
	local out
	case " $(cl_rec_nodes "$1") " in *" n1 "*) return 0 ;; esac
	out=$(ctsr volume replace-replica "$1" --node "$(cl_rec_nodes "$1" | cut -d' ' -f1)" \
		--to n1 2>&1) || fail "move onto n1: $out"
}

# cl_ec21_on_n1 VOL [BYTE]: VOL created, a 4 MiB ec 2+1 volume (16 KiB unit,
# zone failure domain) whose chunks must be on n1 n2 n3, attached on n1, and
# written with BYTE over its 4 MiB when BYTE is given (the EC tests of one
# stripe's chunks on three nodes).
cl_ec21_on_n1() {
	ctsr volume create "$1" --size 4M --ec 2+1 --stripe-unit 16K --failure-domain zone \
		>/dev/null || fail "create $1"
	assert_eq "$(cl_copy_nodes "$1")" "n1,n2,n3" "nodes holding $1's chunks"
	ctsr volume attach "$1" --node n1 >/dev/null || fail "attach $1 on n1"
	[ -z "${2:-}" ] || cl_qemu_io 1 "$1" "write -P $2 0 4M" >/dev/null || fail "write $1"
}

# cl_attach_fill VOL IMG: VOL attached on n1, in sync, IMG written into it
# (nbdcopy) and in sync again; VOL stays attached.
cl_attach_fill() {
	ctsr volume attach "$1" --node n1 >/dev/null || fail "volume attach $1"
	cl_wait_synced "$1"
	nbdcopy "$2" "$(cl_nbd_uri 1 "$1")" || fail "nbdcopy into $1"
	cl_wait_synced "$1"
}

# cl_replace_waiting VOL [hold|nohold] [MIN [NODE ARG...]]: the tests of a
# snapshot through the coordinator while a replace of VOL waits
# (test-cluster-replace-snap-*).  3 nodes started (each given NODE ARGs too);
# VOL (2 replicas, one on n1, min-replicas MIN, 1 if not given) is created,
# attached on n1 and in sync; P (global) is its other copy's node, X its free
# node, XPID X's pid (thawed at exit).  cl_replace_waiting_start then freezes
# X and starts `replace-replica VOL --node P --to X` through n1 in the
# background (cl_replace_bg), returning once n1 waits for X's create;
# cl_replace_waiting_end reaps it and logs its answer.
# With hold, HOLD (global) names the file TSR_TEST_REPLACE_LAYOUT_HOLD_FILE
# (n1 holds the replace between its record write and its layout while it
# exists; removed at exit).  The new copy's create is bounded by 8 s.
cl_replace_waiting() {
	export TSR_TEST_COPY_TIMEOUT_MS=8000
	if [ "${2:-}" = hold ]; then
		HOLD=$(mktemp -u /tmp/tessera-replace-hold.XXXXXX)
		on_exit "rm -f '$HOLD'"
		export TSR_TEST_REPLACE_LAYOUT_HOLD_FILE=$HOLD
	fi
	cl_start 3 "${@:4}"
	ctsr volume create "$1" --size 8M --replicas 2 --min-replicas "${3:-1}" >/dev/null ||
		fail "volume create $1"
	cl_move_onto_n1 "$1"
	ctsr volume attach "$1" --node n1 >/dev/null || fail "volume attach $1"
	cl_wait_synced "$1"
	P=$(cl_rec_nodes "$1" | tr ' ' '\n' | grep -v '^n1$')
	X=$(cl_free_node "$1") || fail "no free node"
	XPID=${CL_PID[${X#n}]}
	on_exit "kill -CONT $XPID 2>/dev/null"
}
# cl_replace_waiting_away VOL: cl_replace_waiting VOL, then P killed and s0
# cut through n1 (P's copy out of sync, "c s0" recorded for it): the old copy
# away, as the automatic replace finds it.
cl_replace_waiting_away() {
	cl_replace_waiting "$1"
	cl_kill "${P#n}"
	cl_timed "snapshot create $1 s0 through n1 with $P away" 20 1 snapshot create "$1" s0
	[ "$CL_RC" = 0 ] || fail "snapshot create $1 s0: status $CL_RC: $CL_OUT"
	cl_wait_state "$1" "$P" out-of-sync 10
	cl_wait_recorded_missed "$1" "c s0"
}
cl_replace_waiting_start() {
	local from=$(( $(log_lines 1) + 1 ))

	log "copies n1 $P; $X frozen; replace $P --to $X through n1"
	freeze_pids "$XPID" || fail "$X did not stop"
	cl_replace_bg "$1"
	wait_log_from 1 "$from" "replace of $1 on $P: creating the new copy on $X"
}
# cl_replace_bg VOL: `replace-replica VOL --node P --to X` through n1 in the
# background (RP its pid; $CL_ROOT/r.rc and r.out its status and output, 30 s
# at most); cl_replace_waiting_end reaps it.
cl_replace_bg() {
	( OUT=$(timeout 30 "$TESSERA" --cluster "$(cl_addr 1)" \
		--token-file "$(cl_dir 1)/admin.token" \
		volume replace-replica "$1" --node "$P" --to "$X" 2>&1) && RC=0 || RC=$?
	  echo "$RC" >"$CL_ROOT/r.rc"; echo "$OUT" >"$CL_ROOT/r.out" ) &
	RP=$!
	track_pid "$RP"
}
cl_replace_waiting_end() {
	reap "$RP" || true
	log "replace: status $(cat "$CL_ROOT/r.rc"): $(cat "$CL_ROOT/r.out")"
}
# cl_replace_waiting_held VOL (with hold): X thawed, n1 held after the
# replace's record write; RECORDED (global) is cl_recorded_missed VOL then;
# the hold released and cl_replace_waiting_end.
cl_replace_waiting_held() {
	touch "$HOLD"
	kill -CONT "$XPID"
	wait_log 1 "replace of $1: test hold .* between the record and the coordinator" 15
	RECORDED=$(cl_recorded_missed "$1")
	rm -f "$HOLD"
	cl_replace_waiting_end
}

# cl_replace_waiting_ok VOL SNAPS: the replace of cl_replace_waiting_start
# answered 0, VOL gets in sync, and n1's and X's copies hold SNAPS ("s0 s1").
cl_replace_waiting_ok() {
	local n
	[ "$(cat "$CL_ROOT/r.rc")" = 0 ] || fail "the replace did not succeed: $(cat "$CL_ROOT/r.out")"
	cl_wait_synced "$1" 30
	for n in n1 "$X"; do
		[ "$(cl_snaps_of "${n#n}" "$1")" = "$2" ] ||
			fail "$n's copy of $1 holds snapshots '$(cl_snaps_of "${n#n}" "$1")', want '$2'"
	done
}

# cl_wait_recorded_missed VOL WANT: until cl_recorded_missed VOL is WANT (5 s);
# else fails naming what it is.
cl_wait_recorded_missed() {
	local i
	for (( i=0; i<50; i++ )); do
		[ "$(cl_recorded_missed "$1")" = "$2" ] && return 0
		sleep 0.1
	done
	assert_eq "$(cl_recorded_missed "$1")" "$2" "vol/$1's missed snapshots"
}

# cl_autorepl_freeze VOL O: for the tests of the tick's automatic replace
# (--rebuild-after) while its target hangs: X (global) is VOL's free node
# (cl_free_node), XPID its pid (thawed at exit), LOG n1's log; node O
# (holding VOL's other copy) is killed and, once n1 sees O dead, X frozen.
cl_autorepl_freeze() {
	local vol=$1 o=$2
	X=$(cl_free_node "$vol") || fail "no free node"
	XPID=${CL_PID[${X#n}]}
	LOG=$(cl_dir 1)/tesserad.log
	on_exit "kill -CONT $XPID 2>/dev/null"
	log "copies n1 $o, free $X: $o killed, $X frozen once n1 sees $o dead"
	cl_kill "${o#n}"
	wait_log 1 "volume $vol copy $o: node $o is not alive" 15
	freeze_pids "$XPID" || fail "$X did not stop"
}

# cl_autorepl_landed VOL O IMG WHY: after cl_autorepl_freeze and X thawed,
# the automatic replace of VOL's copy on O (this attempt or a later one)
# records the copy on X within 30 s (else fails naming WHY, a guess at the
# cause), logs "done"; both copies in sync, VOL reads back as IMG through n1.
cl_autorepl_landed() {
	local vol=$1 o=$2 img=$3 why=$4 i st
	for (( i=0; i<300; i++ )); do
		[ "$(cl_copy_nodes "$vol" 2>/dev/null)" = "n1,$X" ] && break
		sleep 0.1
	done
	[ "$(cl_copy_nodes "$vol")" = "n1,$X" ] || fail "vol/$vol lists '$(cl_copy_nodes "$vol")' \
30 s after $X thawed, want 'n1,$X'$why: $(grep "automatic replace of $vol" "$LOG" | tail -3)"
	wait_log 1 "automatic replace of $vol on $o: done" 10
	cl_wait_synced "$vol" 60
	st=$(vstatus "$vol" '" ".join(sorted("%s:%s" % (c["node"], c["state"]) for c in j["volume"]["copies"]))')
	[ "$st" = "n1:in-sync $X:in-sync" ] ||
		fail "volume status of $vol: '$st', want n1 and $X in-sync"
	cl_assert_image 1 "$vol" "$img" "after the automatic replace onto $X"
}

# cl_wait_no_copy I VOL WHAT: until node I's store holds no copy of VOL
# (10 s); else fails saying WHAT.
cl_wait_no_copy() {
	local i
	for (( i=0; i<100; i++ )); do
		cl_copy_size "$1" "$2" >/dev/null || return 0
		sleep 0.1
	done
	fail "$3"
}

# cl_timed WHAT T I ARG...: the CLI (node 1's admin token) through node I under
# `timeout T`; sets CL_RC (124: no answer in T s) and CL_OUT (its stdout and
# stderr), logs "WHAT: status CL_RC in S s".  For the tests of a call that
# must answer while another node is frozen.
cl_timed() {
	local what=$1 t=$2 i=$3 t0=$SECONDS
	shift 3
	CL_OUT=$(timeout "$t" "$TESSERA" --cluster "$(cl_addr "$i")" \
		--token-file "$(cl_dir 1)/admin.token" "$@" 2>&1) && CL_RC=0 || CL_RC=$?
	log "$what: status $CL_RC in $(( SECONDS - t0 )) s"
}

# cl_wait_call WHAT I...: until some process has an established connection
# to node I's port (one of them): a call to it in flight, e.g. one waiting
# for a frozen node, whose kernel accepts (5 s; fails naming WHAT).
cl_wait_call() {
	local what=$1 i t filter=
	shift
	for i in "$@"; do
		filter+="${filter:+ or }dport = :${CL_PORT[$i]}"
	done
	for (( t=0; t<100; t++ )); do
		ss -Htn state established "( $filter )" | grep -q . && return 0
		sleep 0.05
	done
	fail "no connection to n${*// /, n} in 5 s: $what"
}

# cl_delete_waiting VOL: `volume delete VOL` through n1 in the background
# (CL_DELETE_PID; its output and status in $CL_ROOT/delete.out and .rc),
# returning once VOL's record is deleted and the delete waits for X's copy
# delete (up to 30 s).  X and Y (globals, numbers): VOL's last two copies off
# n1 in the record's order, both frozen (thawed at exit): Y first (its ask
# waits for the peer timeout), X once Y is asked (X answered its ask).
cl_delete_waiting() {
	local i copies
	read -r -a copies < <(ctsr --json volume show "$1" |
		json_get '" ".join(c["node"] for c in j["copies"] if c["node"] != "n1")')
	(( ${#copies[@]} >= 2 )) || fail "$1 has fewer than 2 copies off n1: ${copies[*]}"
	X=${copies[-2]#n} Y=${copies[-1]#n}
	on_exit "kill -CONT ${CL_PID[$X]} ${CL_PID[$Y]} 2>/dev/null"
	freeze_pids "${CL_PID[$Y]}" || fail "n$Y did not stop"
	( ctsr volume delete "$1" >"$CL_ROOT/delete.out" 2>&1; echo $? >"$CL_ROOT/delete.rc" ) &
	CL_DELETE_PID=$!
	cl_wait_call "the delete did not ask it" "$Y"
	freeze_pids "${CL_PID[$X]}" || fail "n$X did not stop"
	for (( i=0; i<100; i++ )); do # the record's delete, after Y's ask timed out
		ctsr volume show "$1" >/dev/null 2>&1 || break
		sleep 0.05
	done
	(( i < 100 )) || fail "$1 still recorded 5 s after its delete began"
	[ ! -e "$CL_ROOT/delete.rc" ] ||
		fail "the delete answered before n$X's copy delete: $(cat "$CL_ROOT/delete.out")"
}

# cl_crash_write VOL NODE WHAT [ARGS...]: crash_writer on VOL through NODE
# ("n2"), logging every acknowledged write to $CL_ROOT/VOL.acked, its output
# in $CL_ROOT/VOL.WHAT.out; in the background (BG_PID).
cl_crash_write() {
	local vol=$1 node=$2 what=$3
	shift 3
	bg "$CRASH_WRITER" write "$(cl_nbd_uri "${node#n}" "$vol")" "$CL_ROOT/$vol.acked" --qd 8 \
		--conns 2 --seed "$RANDOM" "$@" >"$CL_ROOT/$vol.$what.out" 2>&1
}

# cl_crash_verify VOL NODE WHAT: every acknowledged write of VOL (cl_crash_write)
# reads back through NODE; else fails naming WHAT.
cl_crash_verify() {
	local out
	out=$("$CRASH_WRITER" verify "$(cl_nbd_uri "${2#n}" "$1")" "$CL_ROOT/$1.acked" 2>&1) ||
		{ printf '%s\n' "$out" >&2; fail "$3: acknowledged writes lost (verify through $2)"; }
	log "$3: verify through $2: ${out##*$'\n'}"
}

# cl_create_held I HOLD VOL ARGS...: `volume create VOL ARGS` through node I
# (started with TSR_TEST_CREATE_HOLD_FILE=HOLD), in the background; returns
# once it is held between its copies and its record (HOLD.held, 10 s).
# cl_create_held_end HOLD VOL lets it go on and fails unless it succeeded.
cl_create_held() {
	local i=$1 hold=$2 vol=$3 t
	shift 3
	rm -f "$hold.held"
	touch "$hold"
	( ctsr_via "$i" volume create "$vol" "$@" >"$CL_ROOT/create-held.out" 2>&1
	  echo $? >"$CL_ROOT/create-held.rc" ) &
	CL_CREATE_HELD_PID=$!
	for (( t=0; t<100; t++ )); do
		[ -e "$hold.held" ] && return 0
		sleep 0.1
	done
	fail "the create of $vol was not held: $(cat "$CL_ROOT/create-held.out")"
}
cl_create_held_end() {
	rm -f "$1"
	wait "$CL_CREATE_HELD_PID"
	[ "$(cat "$CL_ROOT/create-held.rc")" = 0 ] ||
		fail "volume create $2: $(cat "$CL_ROOT/create-held.out")"
}

# cl_deferred_ran I VOL: until node I ran the copy delete of VOL it deferred
# (TSR_TEST_COPY_DELETE_DEFER_FILE, its file removed; 10 s); logs its result.
cl_deferred_ran() {
	wait_log "$1" "test hook .*: the deferred delete of the copy of '$2' .* ran" 10
	log "n$1: $(grep -o "the deferred delete of the copy of '$2' .* ran: .*" \
		"$(cl_dir "$1")/tesserad.log" | tail -1)"
}

# cl_write_all VOL FILE WHAT: FILE written into VOL through n1, read back,
# VOL detached, and its copies on every node of the cluster identical.
cl_write_all() {
	local i nodes=()
	ctsr volume attach "$1" --node n1 >/dev/null || fail "$3: volume attach $1"
	nbdcopy "$2" "$(cl_nbd_uri 1 "$1")" || fail "$3: nbdcopy into $1"
	cl_assert_image 1 "$1" "$2" "$3"
	ctsr volume detach "$1" >/dev/null || fail "$3: volume detach $1"
	for (( i=1; i<=CL_N; i++ )); do
		nodes+=("$i")
	done
	cl_assert_copies_identical "$1" "${nodes[@]}"
}
