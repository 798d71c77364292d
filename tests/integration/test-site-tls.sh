#!/usr/bin/env bash
# Geo-replication over mutual TLS 1.3 only (issue 7): a source with a
# certificate from another CA, with an expired certificate, one that expects
# another name of the DR, and a plaintext client sending a site HELLO in
# clear are all refused; nothing is applied at the DR; the log of the side
# that refused says why.  A source with the right certificate, to the same
# listener, replicates (the control that shows the refusals are the TLS
# checks, not a broken setup).
#
# Two single-node clusters ("primary", "dr"; site.sh); the primary reaches
# the DR site listener directly.  Certificates: site_certs.sh.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"

sites_setup
site_start dr
site_start primary
DR_ADDR=127.0.0.1:${SITE_LISTEN[dr]}
DRLOG=$(sdir dr)/tesserad.log
PLOG=$(sdir primary)/tesserad.log

# site NAME: a certificate tag and the name the DR's certificate must carry
site_add_dr primary-otherca dr dr-otherca "$DR_ADDR"
site_add_dr primary-expired dr dr-expired "$DR_ADDR"
site_add_dr primary not-dr dr-wrongname "$DR_ADDR"
site_add_dr primary dr dr "$DR_ADDR"
n=$(stsr primary --json site list | json_get 'len(j["sites"])')
assert_eq "$n" 4 "sites at the primary"

i=0
for s in dr-otherca dr-expired dr-wrongname dr; do
	i=$((i + 1))
	site_vol_create primary "t$i" 16M
	site_qemu_io primary "t$i" "write -P $((0x30 + i)) 0 1M" >/dev/null || fail "write t$i"
	out=$(stsr primary replication enable "t$i" --to "$s" --target-volume "t$i" 2>&1) ||
		fail "enable t$i to $s: $out"
done

# the control: t4 to the right site gets there
repl_caught_up t4 60
assert_eq "$(site_sha dr t4)" "$(site_sha primary t4)" "t4 at the DR vs the source"
log "control: t4 replicated through the same listener"

# a plaintext client: a well-formed site HELLO, in clear
out=$("$PY" - "${SITE_LISTEN[dr]}" <<'EOF'
import socket, struct, sys

def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

site, cluster = b"intruder", b"plain"
payload = struct.pack("<BBH", len(site), len(cluster), 0) + site + cluster
hdr = struct.pack("<IBBBBQQQQII12x", 0x53525354, 1, 1, 0, 0, 0, 0, 0, 0,
                  len(payload), crc32c(payload))
hdr += struct.pack("<I", crc32c(hdr))
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(hdr + payload)
got = b""
try:
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
except ConnectionResetError:
    pass
except socket.timeout:
    print("open: the DR kept the plaintext connection open for 10 s")
    sys.exit(1)
if got[:4] == b"TSRS":
    print("answered: the DR replied with a site frame in clear")
    sys.exit(1)
print(f"closed by the DR after {len(got)} bytes (a TLS alert at most)")
EOF
) || fail "plaintext client: $out"
log "plaintext HELLO: $out"

# ---- the refused ones: each has failed an attempt (waited for, not a fixed
# sleep: a loaded machine may take longer)
for i in 1 2 3; do
	rwait primary "t$i" 'j["last_error"] != ""' "refused with an error" 30
	st=$(stsr primary --json replication status "t$i")
	state=$(printf '%s' "$st" | json_get 'j["state"]')
	err=$(printf '%s' "$st" | json_get 'j["last_error"]')
	[ "$state" = connecting ] || fail "t$i: state '$state' with a refused certificate, want connecting"
	[ -n "$err" ] || fail "t$i: no last_error in status"
	assert_eq "$(printf '%s' "$st" | json_get 'j["acked_seq"]')" 0 "t$i acked_seq"
	log "t$i: $state, last error: $err"
done
targets=$(stsr dr --json replication status | json_get '",".join(sorted(r["volume"] for r in j["replications"]))')
assert_eq "$targets" t4 "target volumes at the DR"
vols=$(stsr dr --json volume list | json_get '",".join(sorted(v["name"] for v in j["volumes"]))')
assert_eq "$vols" t4 "volumes at the DR"
for i in 1 2 3; do
	expect_fail 1 "not replicated" stsr dr replication status "t$i"
done

# ---- why, in the logs of the side that refused
grep -E "site tls: .*refused its certificate: (unable to get local issuer certificate|unable to verify the first certificate)" "$DRLOG" >/dev/null ||
	fail "the DR's log does not say it refused a certificate of another CA"
grep -E "site tls: .*refused its certificate: certificate has expired" "$DRLOG" >/dev/null ||
	fail "the DR's log does not say it refused an expired certificate"
grep -E "site tls: .*refused its certificate: hostname mismatch" "$PLOG" >/dev/null ||
	fail "the primary's log does not say the DR's certificate does not name not-dr"
grep -E "site tls: .*refused: not TLS 1.3.*clear text" "$DRLOG" >/dev/null ||
	fail "the DR's log does not say it refused a plaintext client"
log "DR log: $(grep -E 'site tls: .*refused' "$DRLOG" | sed 's/.*site tls: //' | sort | uniq -c | tr -s ' ' | tr '\n' ';')"

# the DR still serves the good stream after all that
site_qemu_io primary t4 "write -P 0x44 2M 64k" >/dev/null || fail "write t4"
repl_caught_up t4 30
assert_eq "$(site_sha dr t4)" "$(site_sha primary t4)" "t4 after the refusals"
site_stop primary
site_stop dr
