#!/usr/bin/python3
"""A scripted source site for test-site-bad-input.sh: speaks the site
protocol (include/tessera/site.h) over mutual TLS 1.3 to a DR site listener
and sends what a broken or hostile peer would.

  site_peer.py HOST:PORT CA CERT KEY PEER_NAME SCRIPT

SCRIPT is a list of steps separated by ';', run in order:
  connect                 TLS handshake, HELLO (site "primary", cluster "peer1")
  open VOL SIZE STREAM    VOLUME_OPEN replicas:1, epoch 1; prints "open applied=N"
  write SEQ OFF BYTE      one 4 KiB WRITE of BYTE at OFF
  badcrc SEQ OFF BYTE     the same with a wrong payload CRC
  zero SEQ OFF LEN        a ZERO frame
  barrier SEQ             BARRIER; waits for the ACK, prints "ack=N"
  garbage                 64 random bytes as a frame header
  expect_error ERRNO      the next frame must be ERROR with this code, then
                          the DR closes the connection; prints "error=N msg"
  expect_close            the DR closes the connection without a frame
  open_refused VOL SIZE STREAM ERRNO   VOLUME_OPEN answered by ERROR ERRNO
  close                   TLS close_notify and close
Exit 0 when every step went as scripted, 1 (with the reason) otherwise.
"""
import errno
import os
import socket
import ssl
import struct
import sys
import time

MAGIC = 0x53525354
HELLO, VOLUME_OPEN, WRITE, ZERO, SNAPSHOT, BARRIER, ACK, ERROR = range(1, 9)
F_REPLY = 1


def _table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        t.append(c)
    return t


CRC_TABLE = _table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def header(op, stream=0, seq=0, offset=0, epoch=0, length=0, crc=0, flags=0):
    h = struct.pack("<IBBBBQQQQII12x", MAGIC, 1, op, flags, 0, stream, seq, offset, epoch,
                    length, crc)
    return h + struct.pack("<I", crc32c(h))


def frame(op, payload=b"", **kw):
    kw.setdefault("length", len(payload))
    kw.setdefault("crc", crc32c(payload) if payload else 0)
    return header(op, **kw) + payload


class Peer:
    def __init__(self, addr, ca, cert, key, peer_name):
        self.addr, self.peer_name = addr, peer_name
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.ctx.load_verify_locations(ca)
        self.ctx.load_cert_chain(cert, key)
        self.s = None
        self.stream = 0

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise EOFError(f"the DR closed the connection ({len(buf)} of {n} bytes)")
            buf += chunk
        return buf

    def recv_frame(self):
        h = self.recv_exact(64)
        magic, ver, op, flags, _, stream, seq, off, epoch, length, dcrc = \
            struct.unpack("<IBBBBQQQQII12x", h[:60])
        if magic != MAGIC or crc32c(h[:60]) != struct.unpack("<I", h[60:])[0]:
            raise ValueError("bad frame header from the DR")
        payload = self.recv_exact(length) if op not in (ZERO,) and length else b""
        return op, flags, stream, seq, payload

    def connect(self):
        raw = socket.create_connection(self.addr, timeout=10)
        self.s = self.ctx.wrap_socket(raw, server_hostname=self.peer_name)
        site, cluster = b"primary", b"peer1"
        self.s.sendall(frame(HELLO, struct.pack("<BBH", len(site), len(cluster), 0) + site + cluster))
        op, flags, *_ = self.recv_frame()
        if op != HELLO or not flags & F_REPLY:
            raise ValueError(f"want a HELLO reply, got opcode {op}")

    def open(self, vol, size, stream):
        self.stream = int(stream, 0)
        layout = b"replicas:1"
        payload = struct.pack("<BBH", len(vol), len(layout), 0) + vol.encode() + layout
        # the DR answers EINPROGRESS while it creates or attaches the target
        # ("being created / attached: retry", then it closes the connection):
        # a real source reconnects and asks again, so do we, for up to 30 s
        deadline = time.monotonic() + 30
        while True:
            self.s.sendall(frame(VOLUME_OPEN, payload, stream=self.stream, offset=int(size),
                                 epoch=1))
            op, flags, stream_, seq, reply = self.recv_frame()
            if op != ERROR:
                break
            code = struct.unpack("<I", reply[:4])[0]
            if code != errno.EINPROGRESS or time.monotonic() > deadline:
                raise ValueError(f"VOLUME_OPEN refused (error {code}): "
                                 f"{reply[8:].decode(errors='replace')}")
            self.s.close()
            time.sleep(0.2)
            self.connect()
        if op != VOLUME_OPEN or not flags & F_REPLY:
            raise ValueError(f"want a VOLUME_OPEN reply, got opcode {op}")
        print(f"open applied={seq}")

    def write(self, seq, off, byte, bad_crc=False):
        data = bytes([int(byte, 0)]) * 4096
        crc = crc32c(data) ^ (0xFFFF if bad_crc else 0)
        self.s.sendall(frame(WRITE, data, stream=self.stream, seq=int(seq), offset=int(off, 0),
                             epoch=1, crc=crc))

    def zero(self, seq, off, length):
        self.s.sendall(header(ZERO, stream=self.stream, seq=int(seq), offset=int(off, 0),
                              epoch=1, length=int(length, 0)))

    def barrier(self, seq):
        self.s.sendall(header(BARRIER, stream=self.stream, seq=int(seq), epoch=1))
        while True:
            op, _, _, aseq, payload = self.recv_frame()
            if op == ERROR:
                raise ValueError("ERROR instead of ACK: " + payload[8:].decode(errors="replace"))
            if op == ACK and aseq >= int(seq):
                print(f"ack={aseq}")
                return

    def garbage(self):
        self.s.sendall(os.urandom(64))

    def expect_error(self, code):
        while True:
            op, _, _, _, payload = self.recv_frame()
            if op == ACK:
                continue  # an unasked ACK may come first
            break
        if op != ERROR:
            raise ValueError(f"want ERROR {code}, got opcode {op}")
        got, mlen = struct.unpack("<IH", payload[:6])
        msg = payload[8:8 + mlen].decode(errors="replace")
        print(f"error={got} {msg}")
        if got != int(code):
            raise ValueError(f"want ERROR {code}, got {got}: {msg}")
        try:
            rest = self.s.recv(1)
        except (ConnectionResetError, ssl.SSLError):
            rest = b""
        if rest:
            raise ValueError("the DR kept the connection open after its ERROR")
        self.s.close()
        self.s = None

    def expect_close(self):
        try:
            got = self.s.recv(1)
        except (ConnectionResetError, ssl.SSLError):
            got = b""
        if got:
            raise ValueError("the DR sent data where it should have closed")
        print("closed")
        self.s.close()
        self.s = None

    def open_refused(self, vol, size, stream, code):
        try:
            self.open(vol, size, stream)
        except ValueError as e:
            if f"(error {int(code)})" not in str(e):
                raise
            print(f"open refused: {e}")
            return
        raise ValueError("VOLUME_OPEN was accepted")

    def close(self):
        if self.s is not None:
            try:
                self.s.unwrap()
            except (OSError, ssl.SSLError):
                pass
            self.s.close()
            self.s = None


def main(argv):
    if len(argv) != 7:
        sys.exit(__doc__)
    host, _, port = argv[1].rpartition(":")
    p = Peer((host, int(port)), argv[2], argv[3], argv[4], argv[5])
    steps = {"connect": p.connect, "open": p.open, "write": p.write,
             "badcrc": lambda s, o, b: p.write(s, o, b, bad_crc=True), "zero": p.zero,
             "barrier": p.barrier, "garbage": p.garbage, "expect_error": p.expect_error,
             "expect_close": p.expect_close, "open_refused": p.open_refused,
             "close": p.close}
    for step in argv[6].split(";"):
        words = step.split()
        if not words:
            continue
        try:
            steps[words[0]](*words[1:])
        except (KeyError, TypeError):
            sys.exit(f"site_peer: bad step '{step}'")
        except (OSError, EOFError, ValueError, ssl.SSLError) as e:
            print(f"site_peer: step '{step}': {e}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
