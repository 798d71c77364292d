#!/usr/bin/env bash
# Bad input on the site protocol at a real DR listener (issue 7): a source
# with a valid certificate that sends a sequence gap, a duplicate, a payload
# with a wrong CRC, a write past the volume's end, a garbage header, or opens
# the volume with another stream is refused (ERROR with the errno, then the
# connection is closed; a garbage header just closes it), the target volume
# is not changed by any refused frame, and the DR goes on serving.
#
# One single-node DR site (site.sh); the source is site_peer.py, a scripted
# site-protocol client over mutual TLS 1.3 with the "primary" certificate.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"

sites_setup
site_start dr
SZ=16777216
ST=0x5e1f00d

peer() { # SCRIPT
	local out
	out=$("$PY" "$TSR_SRC/tests/integration/site_peer.py" "127.0.0.1:${SITE_LISTEN[dr]}" \
		"$CERTS/ca.crt" "$CERTS/primary.crt" "$CERTS/primary.key" dr "$1" 2>&1) ||
		fail "site_peer '$1': $out"
	log "peer: $1 -> $(printf '%s' "$out" | tr '\n' ' ')"
	PEER_OUT=$out
}
applied() { rstat dr bad 'j["applied_seq"]'; }

# seq 1 applied and ACKed; then a gap (seq 3): EILSEQ
peer "connect; open bad $SZ $ST; write 1 0 0xa1; barrier 1; write 3 0x1000 0xc3; expect_error 84"
[[ "$PEER_OUT" == *"open applied=0"* ]] || fail "a new stream did not open at seq 0"
# the stream resumes at 1; a duplicate of seq 1 with other data: EILSEQ
peer "connect; open bad $SZ $ST; write 1 0 0xd1; expect_error 84"
[[ "$PEER_OUT" == *"open applied=1"* ]] || fail "the stream did not resume at seq 1"
# a payload that does not match its CRC: EBADMSG
peer "connect; open bad $SZ $ST; badcrc 2 0x2000 0xb2; expect_error 74"
# a zero past the end of the 16 MiB volume: ENOSPC
peer "connect; open bad $SZ $ST; zero 2 0x40000000 4096; expect_error 28"
# 64 bytes that are no frame header: the connection is closed
peer "connect; open bad $SZ $ST; garbage; expect_close"
# another stream for the same volume: refused at VOLUME_OPEN
peer "connect; open_refused bad $SZ 0x777 17; close"
assert_eq "$(applied)" 1 "applied seq after the refused frames"

# the volume holds seq 1 only
site_qemu_io dr bad "read -P 0xa1 0 4k" | grepq "read 4096" || fail "seq 1's block changed"
site_qemu_io dr bad "read -P 0 4k 8k" | grepq "read 8192" || fail "a refused write reached the volume"

# the DR still serves the stream: seq 2 goes in
peer "connect; open bad $SZ $ST; write 2 0x2000 0xb2; barrier 2; close"
assert_eq "$(applied)" 2 "applied seq after a good frame"
site_qemu_io dr bad "read -P 0xb2 8k 4k" | grepq "read 4096" || fail "seq 2 not applied"
site_qemu_io dr bad "read -P 0xa1 0 4k" | grepq "read 4096" || fail "seq 1's block after seq 2"

DRLOG=$(sdir dr)/tesserad.log
for pat in "refused with EILSEQ: volume bad: WRITE seq 3 out of order" \
	   "refused with EILSEQ: volume bad: WRITE seq 1 out of order" \
	   "refused with EBADMSG" "refused with ENOSPC"; do
	grep -qi -- "$pat" "$DRLOG" || fail "the DR's log has no '$pat'"
done
assert_alive "${SITE_PID[dr]}"
site_stop dr
