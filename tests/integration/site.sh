# shellcheck shell=bash
# Helpers for the geo-replication tests (tests/integration/test-site-*.sh).
# Sourced after functions.sh:
#   . "$(dirname "$0")/functions.sh"; . "$(dirname "$0")/site.sh"
#
# Two single-node clusters on 127.0.0.1, each its own site: "primary" (the
# source) and "dr" (the target).  Each runs tesserad --meta with its own
# --listen port and a site listener (--site-listen) with its own
# certificate (site_certs.sh) (the primary only with SITE_PRIMARY_LISTENS=1,
# for a failback); the primary reaches the DR listener through
# site_proxy.py, which the test drives (pass, pause, cut, throttle, delay).
# The CLI talks to each through its data directory.

. "$(dirname "${BASH_SOURCE[0]}")/site_certs.sh"

SITE_ROOT=
CERTS=
PROXY_PORT=
declare -A SITE_PORT=() SITE_LISTEN=() SITE_PID=() SITE_ARGS=()
SITE_PROXY=$TSR_SRC/tests/integration/site_proxy.py
SITE_HISTORY=$TSR_SRC/tests/integration/site_history.py

# site_history ARGS...: the history checker (site_history.py check ...).
site_history() { "$PY" "$SITE_HISTORY" "$@"; }

# sites_setup: the temp root, the certificates, the ports.
sites_setup() {
	require_cmd openssl nbdcopy qemu-io
	make_tmpdir SITE_ROOT
	CERTS=$SITE_ROOT/certs
	site_certs_make "$CERTS"
	local ports
	mapfile -t ports < <(free_ports 5) # distinct (free_ports)
	(( ${#ports[@]} == 5 )) || fail "cannot find 5 free TCP ports"
	SITE_PORT[primary]=${ports[0]}
	SITE_PORT[dr]=${ports[1]}
	SITE_LISTEN[primary]=${ports[2]}
	SITE_LISTEN[dr]=${ports[3]}
	PROXY_PORT=${ports[4]}
}

sdir() { echo "$SITE_ROOT/$1"; }

# site_start KEY [EXTRA ARGS...]: start (or restart, with the same args) the
# one node of site KEY (primary or dr), with a site listener on 127.0.0.1 and
# KEY's certificate (see above), and wait until the node is alive in its
# cluster.
site_start() {
	local key=$1 i got=
	shift
	if [ -z "${SITE_ARGS[$key]:-}" ]; then
		SITE_ARGS[$key]="--listen 127.0.0.1:${SITE_PORT[$key]} --node-id $key-n1 --zone z1
			--meta --peer-timeout 2000 --site $key"
		# the DR always listens; the primary when a test fails back to it
		[ "$key" = dr ] || [ "${SITE_PRIMARY_LISTENS:-0}" = 1 ] &&
			SITE_ARGS[$key]+=" --site-listen 127.0.0.1:${SITE_LISTEN[$key]}
				--site-ca $CERTS/ca.crt --site-cert $CERTS/$key.crt
				--site-key $CERTS/$key.key"
		SITE_ARGS[$key]+=" $*"
	fi
	# shellcheck disable=SC2086
	start_tesserad "$(sdir "$key")" ${SITE_ARGS[$key]}
	SITE_PID[$key]=$TSRD_PID
	for (( i=0; i<300; i++ )); do
		got=$(stsr "$key" --json node list 2>/dev/null |
		      json_get 'sum(1 for n in j["nodes"] if n.get("alive"))' 2>/dev/null)
		[ "$got" = 1 ] && return 0
		sleep 0.1
	done
	fail "site $key: its node is not alive after 30 s"
}

site_kill() { kill9_tesserad "${SITE_PID[$1]}"; SITE_PID[$1]=; log "site $1: tesserad killed (SIGKILL)"; }
site_stop() { stop_tesserad "${SITE_PID[$1]}"; SITE_PID[$1]=; }
# site_wait_dead KEY WHAT: until site KEY's tesserad is gone (killed by a test
# hook), reaped; fails after 10 s.
site_wait_dead() { wait_dead "${SITE_PID[$1]}" 10 "site $1: tesserad $2"; SITE_PID[$1]=; }

# stsr KEY ARGS...: the CLI against site KEY.
stsr() {
	local key=$1
	shift
	"$TESSERA" --data "$(sdir "$key")" "$@"
}

# site_uri KEY VOL: the NBD URI of VOL at site KEY.
site_uri() { nbd_uri "$(sdir "$1")" "$2"; }

# site_sha KEY VOL: sha256 of VOL read whole through site KEY's NBD socket.
site_sha() { nbdcopy "$(site_uri "$1" "$2")" - | sha256sum | cut -d' ' -f1; }

# site_qemu_io KEY VOL CMD...: qemu-io commands on VOL at site KEY.
site_qemu_io() { qemu_io "$(sdir "$1")" "${@:2}"; }

# site_vol_create KEY VOL SIZE: a 1-copy volume attached on the site's node.
site_vol_create() {
	stsr "$1" volume create "$2" --size "$3" --replicas 1 >/dev/null ||
		fail "site $1: volume create $2 --size $3"
	stsr "$1" volume attach "$2" >/dev/null || fail "site $1: volume attach $2"
}

# ---- the proxy ----------------------------------------------------------
# proxy_start: forward 127.0.0.1:$PROXY_PORT to the DR site listener.
proxy_start() {
	local i
	bg "$PY" "$SITE_PROXY" serve --listen "127.0.0.1:$PROXY_PORT" \
		--to "127.0.0.1:${SITE_LISTEN[dr]}" --ctl "$SITE_ROOT/proxy.sock"
	for (( i=0; i<100; i++ )); do
		[ -S "$SITE_ROOT/proxy.sock" ] && return 0
		sleep 0.05
	done
	fail "site_proxy.py did not start"
}

# px COMMAND [ARG]: drive the link (site_proxy.py's commands); prints nothing.
px() {
	local out
	out=$("$PY" "$SITE_PROXY" ctl "$SITE_ROOT/proxy.sock" "$@") || fail "proxy $*: $out"
	log "link: $*"
}

# site_add_dr [CERT_TAG [PEER_NAME [SITE_NAME [ADDRESS]]]]: at the primary,
# add the DR site (through the proxy unless ADDRESS), with CERT_TAG's
# certificate (default primary) and the name its certificate must carry
# (default dr).
site_add_dr() {
	local tag=${1:-primary} peer=${2:-dr} name=${3:-dr} addr=${4:-127.0.0.1:$PROXY_PORT} out
	out=$(stsr primary site add "$name" --address "$addr" --ca "$CERTS/ca.crt" \
		--cert "$CERTS/$tag.crt" --key "$CERTS/$tag.key" --peer-name "$peer" 2>&1) ||
		fail "site add $name: $out"
}

# sites_start_linked: the set-up most stream tests share: both sites
# started, the proxy between them, and the DR added at the primary with the
# default certificate and names.
sites_start_linked() {
	sites_setup
	site_start dr
	site_start primary
	proxy_start
	site_add_dr primary dr
}

# sites_start_streaming VOL: both sites started, the DR added at the primary
# with no proxy, VOL (4 MiB, 0x3c in its first MiB) created at the primary
# and shipped to the DR (replicas:1 there) until caught up.
sites_start_streaming() {
	local vol=$1 out
	sites_setup
	site_start dr
	site_start primary
	site_add_dr primary dr dr "127.0.0.1:${SITE_LISTEN[dr]}"
	site_vol_create primary "$vol" 4M
	site_qemu_io primary "$vol" "write -P 0x3c 0 1M" >/dev/null || fail "write $vol"
	out=$(stsr primary replication enable "$vol" --to dr --target-layout replicas:1 2>&1) ||
		fail "$out"
	rwait primary "$vol" 'j["state"] == "streaming"' "streaming" 30
	repl_caught_up "$vol" 30
}

# ---- replication status ---------------------------------------------------
# rstat KEY VOL EXPR: EXPR (python, on the Replication object j) from
# `replication status VOL --json` at site KEY.
rstat() { stsr "$1" --json replication status "$2" | json_get "$3"; }

# rwait KEY VOL PYCOND WHAT [TIMEOUT_S]: until PYCOND holds on the status
# object j; fails with the last status otherwise.
rwait() {
	local key=$1 vol=$2 cond=$3 what=$4 t=${5:-60} i last=
	for (( i=0; i<t*5; i++ )); do
		last=$(stsr "$key" --json replication status "$vol" 2>&1)
		if [ "$(printf '%s' "$last" | json_get "bool($cond)" 2>/dev/null)" = true ]; then
			return 0
		fi
		sleep 0.2
	done
	fail "site $key, $vol: not $what after ${t}s: $last"
}

# repl_caught_up VOL [TIMEOUT_S]: the source has nothing left to ship, every
# write is ACKed, and the DR applied them and is consistent.  The source's
# figures are published on a 10 ms tick, so the first status that reads
# caught up may predate the last writes: it counts once a second status,
# asked after it, reads caught up too.
repl_caught_up() {
	local vol=$1 t=${2:-60} acked cond
	cond='j["state"] == "streaming" and j["lag_bytes"] == 0 and j["dirty_bytes"] == 0 and j["acked_seq"] + 1 == j["next_seq"]'
	rwait primary "$vol" "$cond" "caught up" "$t"
	sleep 0.05
	rwait primary "$vol" "$cond" "caught up (asked again)" "$t"
	acked=$(rstat primary "$vol" 'j["acked_seq"]')
	rwait dr "$vol" "j['applied_seq'] >= $acked and j['consistent']" "applied through $acked" "$t"
}

# dr_settled VOL: wait until the DR's applied_seq stops moving (the link is
# paused or cut: what it received is applied); prints it.
dr_settled() {
	local vol=$1 i a b=-1 same=0
	for (( i=0; i<100; i++ )); do
		a=$(rstat dr "$vol" 'j["applied_seq"]' 2>/dev/null) || a=-2
		if [ "$a" = "$b" ]; then
			same=$((same + 1))
			[ "$same" -ge 3 ] && { echo "$a"; return 0; }
		else
			same=0
		fi
		b=$a
		sleep 0.2
	done
	fail "the DR's applied_seq of $vol keeps moving with the link stopped"
}

# dr_alive N: wait until N of the DR's nodes are alive (30 s).
dr_alive() {
	local i got=
	for (( i=0; i<300; i++ )); do
		got=$(stsr dr --json node list 2>/dev/null |
		      json_get 'sum(1 for n in j["nodes"] if n.get("alive"))' 2>/dev/null)
		[ "$got" = "$1" ] && return 0
		sleep 0.1
	done
	fail "the DR has $got nodes alive, not $1"
}

# dr2_start: a second DR node, dr-n2 (data $D2 = $SITE_ROOT/dr2, zone z2,
# --peer-timeout 2000), joined to the running site dr; its pid in D2PID, its
# arguments in D2ARGS (to start it again); returns once both are alive.
dr2_start() {
	D2=$SITE_ROOT/dr2
	D2ARGS=(--listen "127.0.0.1:$(free_ports 1)" --node-id dr-n2 --zone z2
		--join "127.0.0.1:${SITE_PORT[dr]}" --token-file "$(sdir dr)/admin.token"
		--peer-timeout 2000 --site dr)
	start_tesserad "$D2" "${D2ARGS[@]}"
	D2PID=$TSRD_PID
	dr_alive 2
}

# sites_start_dr2 [DR ARGS...]: the set-up of the two-node DR tests: both
# sites (the DR's node started with DR ARGS), the DR's second node dr-n2
# (dr2_start), the proxy between the sites, and the DR added at the primary.
sites_start_dr2() {
	sites_setup
	site_start dr "$@"
	dr2_start
	site_start primary
	proxy_start
	site_add_dr primary dr
}

# site_start_nowait KEY: KEY's node started again with its arguments, not
# waiting for it to be alive (site_start asks its node list through the
# node's loop, which a test may hold).
site_start_nowait() {
	# shellcheck disable=SC2086
	start_tesserad "$(sdir "$1")" ${SITE_ARGS[$1]}
	SITE_PID[$1]=$TSRD_PID
}

# file_wait_from FILE FROM PATTERN MSG: until FILE from line FROM on has
# PATTERN (grep, 30 s); else fails saying MSG.
file_wait_from() {
	local i
	for (( i=0; i<300; i++ )); do
		tail -n +"$2" "$1" | grepq -- "$3" && return 0
		sleep 0.1
	done
	fail "$4"
}

# file_wait FILE PATTERN [TENTHS]: until grep -q PATTERN FILE (default 100
# tenths: 10 s); returns 1 then (the caller says what is missing).
file_wait() {
	local i
	for (( i=0; i<${3:-100}; i++ )); do
		grep -q -- "$2" "$1" && return 0
		sleep 0.1
	done
	return 1
}
