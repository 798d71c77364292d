#!/usr/bin/python3
"""Send malformed peer-protocol frames to a tesserad --listen port.

usage: peer_abuse.py HOST PORT TOKEN VOLUME

Each case opens its own connection and checks the server's answer: an error
reply with the right status, or the connection closed; never a hang, never a
crash (the caller checks the daemon is alive and the volume intact afterwards).
Frame format: include/tessera/peer.h (56-byte little-endian header; for HELLO
and OPEN the length field is the payload length).
Prints one line per case; exit 0 when every case behaved, 1 otherwise.
"""
import errno
import socket
import struct
import sys

MAGIC = 0x50525354
HELLO, OPEN, CLOSE, READ, WRITE, FLUSH = 1, 2, 3, 4, 5, 6
F_REPLY = 1


def _crc32c_table():
    poly = 0x82F63B78
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_T = _crc32c_table()


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _T[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def header(op, handle=0, offset=0, length=0, epoch=0, seq=1, data=b"", flags=0,
           magic=MAGIC, reserved=0, bad_crc=False, data_crc=None):
    dcrc = crc32c(data) if data and data_crc is None else (data_crc or 0)
    if data and op in (HELLO, OPEN) and not length:
        length = len(data)  # HELLO/OPEN: length is the payload's
    h = struct.pack("<IBBHQQIiQQI", magic, op, flags, reserved, handle, offset, length, 0,
                    epoch, seq, dcrc)
    hc = crc32c(h)
    if bad_crc:
        hc ^= 1
    return h + struct.pack("<I", hc)


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            return None
        b += chunk
    return b


def reply(s):
    """(status, header fields) of the next reply, or None if the server closed."""
    h = recv_exact(s, 56)
    if h is None:
        return None
    f = struct.unpack("<IBBHQQIiQQII", h)
    return f[7], f


def closed(s):
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, socket.timeout):
        return True


class Case:
    def __init__(self, host, port, token, volume):
        self.addr = (host, port)
        self.token = token.encode()
        self.volume = volume.encode()
        self.failures = 0

    def conn(self, hello=True):
        s = socket.create_connection(self.addr, timeout=10)
        if hello:
            node = b"abuser"
            p = self.token + bytes([len(node)]) + node
            s.sendall(header(HELLO, data=p) + p)
            r = reply(s)
            assert r is not None and r[0] == 0, f"hello refused: {r}"
        return s

    def check(self, name, ok, detail=""):
        print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
        if not ok:
            self.failures += 1


def main():
    host, port, token, volume = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    c = Case(host, port, token, volume)

    s = c.conn(hello=False)
    s.sendall(header(HELLO, magic=0x12345678) + b"x" * 64)
    c.check("wrong magic closes the connection", closed(s))

    s = c.conn(hello=False)
    p = c.token + b"\x01a"
    s.sendall(header(HELLO, data=p, bad_crc=True) + p)
    c.check("bad header CRC closes the connection", closed(s))

    s = c.conn(hello=False)
    p = b"0" * 64 + b"\x01a"
    s.sendall(header(HELLO, data=p) + p)
    r = reply(s)
    c.check("wrong token refused", r is None or r[0] == -errno.EACCES, f"reply {r and r[0]}")

    s = c.conn(hello=False)
    s.sendall(header(OPEN, epoch=1, data=c.volume) + c.volume)
    r = reply(s)
    c.check("OPEN before HELLO refused", r is None or r[0] < 0, f"reply {r and r[0]}")

    s = c.conn()
    name = b"no-such-volume"
    s.sendall(header(OPEN, epoch=1 << 40, data=name) + name)
    r = reply(s)
    c.check("unknown volume: ENOENT", r is not None and r[0] == -errno.ENOENT, f"reply {r and r[0]}")
    s.sendall(header(OPEN, epoch=1, data=c.volume, seq=2) + c.volume)
    r = reply(s)
    c.check("stale epoch: ESTALE, connection usable", r is not None and r[0] == -errno.ESTALE,
            f"reply {r and r[0]}")

    s = c.conn()
    s.sendall(header(READ, handle=0xdead, offset=0, length=4096, epoch=1 << 40))
    r = reply(s)
    c.check("unknown handle refused", r is not None and r[0] < 0, f"reply {r and r[0]}")

    s = c.conn()
    s.sendall(header(WRITE, handle=1, offset=0, length=64 << 20, epoch=1 << 40))
    c.check("oversized length closes the connection", closed(s))

    s = c.conn()
    s.sendall(header(WRITE, handle=1, offset=4095, length=4096, epoch=1 << 40))
    c.check("misaligned offset closes the connection", closed(s))

    s = c.conn()
    s.sendall(header(READ, length=4096)[:30])
    s.close()
    c.check("truncated frame then hang-up", True)

    s = c.conn()
    s.sendall(header(99))
    c.check("unknown opcode closes the connection", closed(s))

    s = c.conn()
    s.sendall(bytes(range(256)) * 64)
    c.check("garbage closes the connection", closed(s))

    # the server still answers properly
    s = c.conn()
    s.sendall(header(OPEN, epoch=1 << 40, data=b"no-such-volume") + b"no-such-volume")
    r = reply(s)
    c.check("still serving after the abuse", r is not None and r[0] == -errno.ENOENT)
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
