#!/usr/bin/env python3
"""Send one node's admin socket an internal, node-to-node command with
local_copy set: it acts on that node's store copy only, the cluster's record
(vol/<name>) and the other copies unchanged.  Tests build with it what a
cluster operation cut short leaves behind, directly instead of from a race:

  resize VOLUME SIZE_BYTES     VolumeResize{local_copy}: only this copy grows
                               (what a resize that stopped after its grow
                               step (c) leaves: copies larger than the record)
  snapshot VOLUME SNAPSHOT     SnapshotCreate{local_copy}: this copy's store
                               cuts SNAPSHOT at its own size (what a cut of
                               such copies made before session 14 left)

Usage: admin_local_copy.py DATA_DIR resize VOLUME SIZE_BYTES
       admin_local_copy.py DATA_DIR snapshot VOLUME SNAPSHOT
Exit 0 when the node answered error 0; else prints the answer, exits 1.

The frame is proto/admin.proto's Request, hand-encoded (no generated
module needed): a 4-byte big-endian length, then
  Request.volume_resize (field 13) { name (1), size (2), local_copy (3) }
  Request.snapshot_create (field 23) { volume (1), name (2), local_copy (3) }.
The unix socket takes no token.
"""
import socket
import struct
import sys


def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def read_varint(b, i):
    shift = n = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return n, i


def parse_response(b):
    """error (field 1, int32) and message (field 2) of a Response."""
    i, err, msg = 0, 0, ""
    while i < len(b):
        key, i = read_varint(b, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = read_varint(b, i)
            if num == 1:
                err = v - (1 << 64) if v >= 1 << 63 else v
        elif wire == 2:
            ln, i = read_varint(b, i)
            if num == 2:
                msg = b[i:i + ln].decode(errors="replace")
            i += ln
        elif wire == 5:
            i += 4
        elif wire == 1:
            i += 8
        else:
            raise ValueError("unexpected wire type %d" % wire)
    return err, msg


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        got = s.recv(n - len(buf))
        if not got:
            raise EOFError("connection closed")
        buf += got
    return buf


def main():
    if len(sys.argv) != 5 or sys.argv[2] not in ("resize", "snapshot"):
        sys.exit(__doc__)
    data_dir, what, name, arg = sys.argv[1:5]
    if what == "resize":
        body = field(1, 2, name.encode()) + field(2, 0, int(arg)) + field(3, 0, 1)
        req = field(13, 2, body)
    else:
        body = field(1, 2, name.encode()) + field(2, 2, arg.encode()) + field(3, 0, 1)
        req = field(23, 2, body)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(data_dir + "/admin.sock")
    s.sendall(struct.pack(">I", len(req)) + req)
    n = struct.unpack(">I", recv_exact(s, 4))[0]
    err, msg = parse_response(recv_exact(s, n))
    s.close()
    if err != 0:
        print("local_copy %s of %s (%s) on %s: error %d: %s" %
              (what, name, arg, data_dir, err, msg))
        sys.exit(1)


if __name__ == "__main__":
    main()
