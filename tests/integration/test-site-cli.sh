#!/usr/bin/env bash
# The geo-replication verbs of the tessera CLI (site add|list|remove,
# replication enable|disable|status|promote|resync) against a real tesserad:
# --help that teaches, arguments checked before any round trip (exit 2, or 1
# with a message saying what to do), the server's refusals passed on, text
# and --json renderings with the admin API's field names, status --watch.
# One single-node cluster ("primary", site.sh); the DR site it names has no
# listener (a closed port), so the source stays "connecting" with an error.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"

sites_setup
site_start primary
DEAD=127.0.0.1:$(free_port)

# ---- help
for v in "site" "site add" "site list" "site remove" "replication" "replication enable" \
	 "replication disable" "replication status" "replication promote" "replication resync"; do
	# shellcheck disable=SC2086
	out=$("$TESSERA" $v --help) || fail "tessera $v --help"
	[[ "$out" == Usage:* ]] || fail "tessera $v --help does not start with Usage: $out"
done
grep -q "replication enable VOL --to SITE" <<<"$("$TESSERA" --help)" || fail "tessera --help lacks replication"
grep -q "Example:" <<<"$("$TESSERA" replication enable --help)" || fail "enable --help has no example"
grep -q "add NAME --address" <<<"$("$TESSERA" help site)" || fail "tessera help site"

# ---- arguments checked locally
expect_fail 2 "needs --to SITE" stsr primary replication enable v
expect_fail 2 "missing the volume NAME" stsr primary replication enable --to dr
expect_fail 2 "give ec:K\+M" stsr primary replication enable v --to dr --target-layout ec:4+9
expect_fail 2 "give ec:K\+M" stsr primary replication enable v --to dr --target-layout raid5
expect_fail 2 "--max-rate 5x" stsr primary replication enable v --to dr --max-rate 5x
expect_fail 2 "--log-size 0" stsr primary replication enable v --to dr --log-size 0
expect_fail 1 "not a site name" stsr primary replication enable v --to 'bad/site'
expect_fail 1 "invalid volume name" stsr primary replication enable --to dr -- -v
expect_fail 2 "needs VOL or --group" stsr primary replication promote
expect_fail 2 "not both" stsr primary replication promote v --group g
expect_fail 2 "needs --from SITE" stsr primary replication resync v
expect_fail 2 "unknown replication verb" stsr primary replication frobnicate
expect_fail 2 "needs --address, --ca, --cert and --key" stsr primary site add dr --address "$DEAD"
expect_fail 1 "give HOST:PORT" stsr primary site add dr --address nowhere --ca "$CERTS/ca.crt" \
	--cert "$CERTS/primary.crt" --key "$CERTS/primary.key"
expect_fail 1 "--cert /nonexistent.pem: No such file" stsr primary site add dr --address "$DEAD" \
	--ca "$CERTS/ca.crt" --cert /nonexistent.pem --key "$CERTS/primary.key"
expect_fail 1 "invalid site name" stsr primary site add 'd r' --address "$DEAD" \
	--ca "$CERTS/ca.crt" --cert "$CERTS/primary.crt" --key "$CERTS/primary.key"

# ---- sites
stsr primary site list | grepq "no sites" || fail "site list with none"
expect_fail 1 "not found|no site" stsr primary site remove dr
# relative paths are sent absolute
(cd "$CERTS" && stsr primary site add dr --address "$DEAD" --ca ca.crt --cert primary.crt \
	--key primary.key) | grepq "added site 'dr'" || fail "site add dr"
j=$(stsr primary --json site list)
assert_eq "$(printf '%s' "$j" | json_get 'j["sites"][0]["ca"]')" "$CERTS/ca.crt" "site ca path"
assert_eq "$(printf '%s' "$j" | json_get 'j["sites"][0]["address"]')" "$DEAD" "site address"
assert_eq "$(printf '%s' "$j" | json_get 'sorted(j["sites"][0].keys())')" \
	'["address", "ca", "cert", "key", "name", "peer_name", "volumes"]' "site JSON keys"
expect_fail 1 "exists|already" stsr primary site add dr --address "$DEAD" --ca "$CERTS/ca.crt" \
	--cert "$CERTS/primary.crt" --key "$CERTS/primary.key"

# ---- enable, status, the server's refusals
expect_fail 1 "." stsr primary replication enable nosuchvol --to dr
site_vol_create primary v 16M
expect_fail 1 "site 'nodr'|nodr" stsr primary replication enable v --to nodr
out=$(stsr primary replication enable v --to dr --target-layout replicas:1 --group app \
	--max-rate 50M --log-size 8M) || fail "enable: $out"
log "$out"
expect_fail 1 "." stsr primary site remove dr
rwait primary v 'j["state"] == "connecting" and j["last_error"] != ""' "connecting with an error" 15
j=$(stsr primary --json replication status v)
for k in volume role site state target_volume target_layout group stream epoch acked_seq \
	 next_seq applied_seq lag_sec lag_bytes dirty_bytes sync_total_bytes sync_done_bytes \
	 bytes_shipped region_bytes_shipped overflows reconnects rate_bps eta_sec last_error \
	 consistent demoted node; do
	printf '%s' "$j" | json_get "j['$k']" >/dev/null || fail "status JSON lacks $k: $j"
done
assert_eq "$(printf '%s' "$j" | json_get 'j["role"]')" source "role"
assert_eq "$(printf '%s' "$j" | json_get 'j["group"]')" app "group"
assert_eq "$(printf '%s' "$j" | json_get 'j["target_layout"]')" replicas:1 "target layout"
log "status: state connecting, last_error: $(printf '%s' "$j" | json_get 'j["last_error"]')"
txt=$(stsr primary replication status v)
for w in "volume:" "state:       connecting" "lag (RPO):" "throughput:" "dirty:" "shipped:" \
	 "last error:"; do
	[[ "$txt" == *"$w"* ]] || fail "status text lacks '$w': $txt"
done
site_vol_create primary w 16M
stsr primary replication enable w --to dr --group app >/dev/null || fail "enable w"
tab=$(stsr primary replication status)
[[ "$tab" == *VOLUME*ROLE*SITE*STATE*LAG* ]] || fail "status table header: $tab"
assert_eq "$(printf '%s\n' "$tab" | grep -c '^[vw] ')" 2 "rows in the status table"
assert_eq "$(stsr primary --json replication status --group app | json_get 'len(j["replications"])')" 2 "group app"
assert_eq "$(stsr primary --json replication status --group other | json_get 'len(j["replications"])')" 0 "group other"
expect_fail 1 "not replicated" stsr primary replication status nosuch
# --watch --json: one object per line, until interrupted
# (SIGTERM: a background job of a script ignores SIGINT)
"$TESSERA" --data "$(sdir primary)" --json replication status v --watch >"$SITE_ROOT/watch.out" 2>&1 &
wpid=$!
track_pid "$wpid"
# until it printed two objects (at most 15 s: a loaded machine may be slow)
for (( i=0; i<150; i++ )); do
	[ "$(grep -c '"volume": *"v"' "$SITE_ROOT/watch.out")" -ge 2 ] && break
	kill -0 "$wpid" 2>/dev/null || break
	sleep 0.1
done
kill -TERM "$wpid"
reap "$wpid" || fail "status --watch exited non-zero on SIGTERM"
n=$(grep -c '"volume": *"v"' "$SITE_ROOT/watch.out")
[ "$n" -ge 2 ] || fail "status --watch --json printed $n objects in 15 s: $(cat "$SITE_ROOT/watch.out")"

# ---- promote / resync here are refused with a reason
expect_fail 1 "site listener|not a replication target" stsr primary replication promote v
expect_fail 1 "." stsr primary replication resync v --from dr

# ---- disable, remove
stsr primary replication disable v | grepq "stopped replicating 'v'" || fail "disable v"
assert_eq "$(stsr primary --json replication disable w | json_get 'j["disabled"]')" w "disable w JSON"
expect_fail 1 "." stsr primary replication disable v
assert_eq "$(stsr primary --json site remove dr | json_get 'j["removed"]')" dr "site remove JSON"
stsr primary site list | grepq "no sites" || fail "site list after remove"
site_stop primary
