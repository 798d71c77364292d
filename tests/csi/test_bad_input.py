"""Bad input to tessera-csi: garbage bytes on the socket, HTTP/2 streams
carrying broken gRPC framing, truncated and garbage protobuf, a 10 MB
request, missing required fields, unknown and malformed ids, unknown
methods, connections dropped mid-request; every one answered with a gRPC
error (or the connection closed), the driver still answering Probe after
each.  Then 32 concurrent CreateVolume calls for one name: all succeed with
the same volume, and the cluster holds exactly one volume of that name.

Run by tests/integration/test-csi-bad-input.sh (environment: see csilib).
"""
import os
import socket
import struct
import threading
import time

import grpc

from csilib import MiB, C, Checks, Client, Runner, cluster_volumes, create_req, mount_cap, pb

R = Runner("test_bad_input")
cli = Client(timeout=30)
X = Checks(cli, R)
SOCK = os.environ["CSI_ENDPOINT"]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def alive(what):
    """The driver still answers Probe on a fresh connection."""
    c = Client(timeout=10)
    resp, code, det = c.call("identity.Probe", pb.ProbeRequest())
    c.close()
    R.need(code == C.OK, f"after {what}: Probe {code.name} {det!r}: the driver does not answer")


def raw_conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(SOCK)
    return s


def frame(ftype, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def hpack_literal(name, value):
    """HPACK literal header field without indexing, new name, no Huffman (lengths < 127)."""
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def grpc_headers(path):
    return b"".join(hpack_literal(k, v) for k, v in (
        (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
        ("content-type", "application/grpc"), ("te", "trailers")))


def read_frames(s, until_stream=1, limit_s=10):
    """Frames from the server until stream UNTIL_STREAM ends, a GOAWAY, or EOF.
    Returns (frames, how): frames as (type, flags, stream, payload)."""
    buf, frames = b"", []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        while len(buf) >= 9:
            ln = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + ln:
                break
            ftype, flags = buf[3], buf[4]
            sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload = buf[9:9 + ln]
            buf = buf[9 + ln:]
            frames.append((ftype, flags, sid, payload))
            if ftype == 4 and not flags & 1:      # SETTINGS: acknowledge
                try:
                    s.sendall(frame(4, 1, 0, b""))
                except OSError:
                    pass  # the server closed already: the frames read so far tell

            if ftype == 7:
                return frames, "goaway"
            if sid == until_stream and (ftype == 3 or (ftype in (0, 1) and flags & 1)):
                return frames, "rst" if ftype == 3 else "end"
        try:
            d = s.recv(65536)
        except socket.timeout:
            return frames, "timeout"
        except OSError:
            return frames, "closed"
        if not d:
            return frames, "closed"
        buf += d
    return frames, "timeout"


def h2_request(path, body, what, end_stream=True):
    """One HTTP/2 POST with BODY as the DATA; the server must not answer with a
    gRPC message (DATA on the stream) and must end the stream, reset it or
    close the connection (not hang)."""
    s = raw_conn()
    try:
        s.sendall(PREFACE + frame(4, 0, 0, b"") + frame(1, 4, 1, grpc_headers(path)) +
                  frame(0, 1 if end_stream else 0, 1, body))
        frames, how = read_frames(s)
    finally:
        s.close()
    data = [f for f in frames if f[0] == 0 and f[2] == 1 and f[3]]
    R.check(not data, f"{what}: the server answered with a message ({len(data)} DATA frames)")
    R.check(how in ("end", "rst", "goaway", "closed"), f"{what}: no answer ({how})")
    R.log(f"{what}: {how}")
    alive(what)


def raw_call(method, body, timeout=30):
    """A unary call whose request body is BODY as it is (no serializer)."""
    ch = grpc.insecure_channel("unix://" + SOCK, options=[("grpc.max_send_message_length", 64 * MiB)])
    fn = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
    try:
        fn(body, timeout=timeout)
        return C.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details() or ""
    finally:
        ch.close()


# ------------------------------------------------------------------ transport level
def test_garbage_bytes():
    for i, junk in enumerate((os.urandom(64 * 1024), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                              b"\x00" * 100, PREFACE[:10])):
        s = raw_conn()
        try:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            t = time.monotonic()
            while time.monotonic() - t < 10:
                try:
                    if not s.recv(65536):
                        break
                except (socket.timeout, OSError):
                    break
        except OSError:
            pass  # the server may close while we write: fine
        finally:
            s.close()
        alive(f"garbage bytes #{i}")


def test_broken_grpc_framing():
    path = "/csi.v1.Identity/Probe"
    h2_request(path, b"\x00\x00\x00\x03\xe8" + b"x" * 10, "length prefix 1000, 10 bytes sent")
    h2_request(path, b"\x00\x00", "3 bytes short of a gRPC header")
    h2_request(path, b"\x07\x00\x00\x00\x00", "flag byte 7")
    h2_request(path, b"\x01\x00\x00\x00\x04abcd", "compressed flag without grpc-encoding")
    h2_request(path, b"\x00\x00\x00\x00\x00" * 2, "two messages in a unary request")
    h2_request(path, b"\x00\xff\xff\xff\xff", "length prefix 4 GiB")
    h2_request("/csi.v1.Controller/CreateVolume", b"\x00\x00\x00\x00\x05\xff\xff\xff\xff\xff",
               "garbage protobuf in a valid frame")
    # a frame of an unknown type must be ignored (RFC 9113 5.5), the call still works
    s = raw_conn()
    s.sendall(PREFACE + frame(4, 0, 0, b"") + frame(0xEE, 0, 0, b"junk") + frame(1, 4, 1, grpc_headers(path)) +
              frame(0, 1, 1, b"\x00\x00\x00\x00\x00"))
    frames, how = read_frames(s)
    s.close()
    R.check(any(f[0] == 0 and f[2] == 1 and f[3] for f in frames),
            f"Probe after an unknown frame type got no reply message ({how})")
    # a HEADERS frame whose header block is not HPACK
    s = raw_conn()
    s.sendall(PREFACE + frame(4, 0, 0, b"") + frame(1, 5, 1, os.urandom(200)))
    frames, how = read_frames(s)
    s.close()
    R.check(how in ("goaway", "closed", "rst"), f"garbage HPACK: {how}")
    alive("garbage HPACK block")
    # connections dropped in the middle of a request, many times
    for i in range(50):
        s = raw_conn()
        s.sendall(PREFACE + frame(4, 0, 0, b"") + frame(1, 4, 1, grpc_headers("/csi.v1.Controller/CreateVolume")) +
                  frame(0, 0, 1, b"\x00\x00\x00\x10\x00" + b"\x0a\x05"))
        s.close()
    alive("50 connections dropped mid-request")


# ------------------------------------------------------------------ message level
def test_truncated_and_garbage_messages():
    full = create_req("bad-trunc", 64 * MiB, {"replicas": "1"}).SerializeToString()
    for cut in (1, 5, len(full) // 2, len(full) - 1):
        code, det = raw_call("/csi.v1.Controller/CreateVolume", full[:cut])
        R.check(code in (C.INVALID_ARGUMENT, C.INTERNAL), f"CreateVolume truncated to {cut}/{len(full)} bytes: "
                f"{code.name} {det!r}, want INVALID_ARGUMENT (or INTERNAL)")
    R.check("bad-trunc" not in cluster_volumes(), "a truncated CreateVolume created a volume")
    for i in range(20):
        junk = os.urandom(1 + i * 37)
        code, det = raw_call("/csi.v1.Controller/DeleteVolume", junk)
        R.check(code != C.UNKNOWN, f"random bytes #{i} to DeleteVolume: {code.name} {det!r}")
    # wrong wire types for known fields: name (1) as a varint, capacity_range (2) as a fixed64
    for body in (b"\x08\x05", b"\x11" + b"\x00" * 8, b"\x1a\x03abc"):
        code, det = raw_call("/csi.v1.Controller/CreateVolume", body)
        R.check(code == C.INVALID_ARGUMENT or code == C.INTERNAL, f"wrong wire type {body!r}: {code.name} {det!r}")
    alive("truncated and garbage messages")


def raw_big_request(path, total):
    """POST a gRPC message of TOTAL bytes over raw HTTP/2, honouring flow control.
    Returns the server's frames on stream 1 as (type, flags, payload), in order."""
    s = raw_conn()
    s.settimeout(0.05)
    body = b"\x00" + struct.pack(">I", total) + bytes(total)
    s.sendall(PREFACE + frame(4, 0, 0, b"") + frame(1, 4, 1, grpc_headers(path)))
    conn_win = stream_win = 65535
    init_win = 65535
    sent, buf, out, ended_at = 0, b"", [], None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ended_at and time.monotonic() - ended_at > 1.0:
            break
        n = min(16384, conn_win, stream_win, len(body) - sent)
        if n > 0 and not ended_at:
            last = sent + n == len(body)
            try:
                s.sendall(frame(0, 1 if last else 0, 1, body[sent:sent + n]))
            except OSError:
                break
            sent += n
            conn_win -= n
            stream_win -= n
            continue
        try:
            d = s.recv(65536)
            if not d:
                break
            buf += d
        except socket.timeout:
            pass
        except OSError:
            break
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            ln = int.from_bytes(buf[:3], "big")
            ftype, flags, sid = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload, buf = buf[9:9 + ln], buf[9 + ln:]
            if ftype == 4 and not flags & 1:
                for i in range(0, len(payload), 6):
                    if int.from_bytes(payload[i:i + 2], "big") == 4:
                        new_init = int.from_bytes(payload[i + 2:i + 6], "big")
                        stream_win += new_init - init_win
                        init_win = new_init
                s.sendall(frame(4, 1, 0, b""))
            elif ftype == 8:
                inc = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                if sid == 0:
                    conn_win += inc
                elif sid == 1:
                    stream_win += inc
            elif sid == 1 or ftype == 7:
                out.append((ftype, flags, payload))
                if ftype in (3, 7) or (ftype == 1 and flags & 1):
                    ended_at = ended_at or time.monotonic()
    s.close()
    return out, sent


def test_ten_megabyte_request():
    # On the wire: the answer must be a gRPC status (HEADERS with END_STREAM,
    # no DATA), sent before any RST_STREAM that stops the upload (RFC 9113
    # 8.1 allows that RST_STREAM, with NO_ERROR, after a complete response).
    frames, sent = raw_big_request("/csi.v1.Controller/CreateVolume", 10 * MiB)
    kinds = [(f[0], f[1]) for f in frames]
    R.log(f"10 MB raw request: {sent} bytes sent before the answer; frames on stream 1: {kinds}")
    R.check(frames and frames[0][0] == 1 and frames[0][1] & 1,
            f"10 MB request: first answer is not a status (HEADERS + END_STREAM): {kinds}")
    R.check(not any(f[0] == 0 for f in frames), f"10 MB request answered with a message: {kinds}")
    rst = [f for f in frames if f[0] == 3]
    R.check(all(int.from_bytes(f[2][:4], "big") == 0 for f in rst), f"RST_STREAM with an error code: {rst}")
    R.check(sent < 10 * MiB, "the server let the whole 10 MB in before answering")
    alive("10 MB raw request")
    # Through the gRPC library: an error.  Debian's grpc-core client reports a
    # status followed by RST_STREAM(NO_ERROR) as INTERNAL "Received RST_STREAM
    # with error code 0" instead of the status; the wire check above is what
    # judges the server.
    big = "x" * (10 * MiB)
    req = create_req("bad-big", 64 * MiB, {"replicas": "1", "stripeUnit": big})
    for what, r in (("10 MB parameter", req), ("10 MB name", create_req("b" * (10 * MiB), 64 * MiB))):
        _, code, det = cli.call("controller.CreateVolume", r)
        ok = code in (C.RESOURCE_EXHAUSTED, C.INVALID_ARGUMENT) or \
            (code == C.INTERNAL and "RST_STREAM with error code 0" in det)
        R.check(ok, f"{what}: {code.name} {det!r}, want RESOURCE_EXHAUSTED")
        R.log(f"{what} through grpcio: {code.name} {det[:80]!r}")
    R.check(not [v for v in cluster_volumes() if v.startswith("bad-big") or v.startswith("bbbb")],
            "a 10 MB request created a volume")
    alive("10 MB requests")
    # 1 MB of mount flags (under the 4 MiB message limit): a clean error, not a crash
    _, code, det = cli.call("controller.ValidateVolumeCapabilities", pb.ValidateVolumeCapabilitiesRequest(
        volume_id="v", volume_capabilities=[mount_cap(flags=["x" * 1000] * 1000)]))
    R.check(code in (C.NOT_FOUND, C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED), f"1 MB of mount flags: {code.name}")
    alive("1 MB of mount flags")


def test_missing_fields():
    """Every RPC with an empty request: INVALID_ARGUMENT where the spec requires a field."""
    need_args = {
        "controller.CreateVolume": pb.CreateVolumeRequest, "controller.DeleteVolume": pb.DeleteVolumeRequest,
        "controller.ValidateVolumeCapabilities": pb.ValidateVolumeCapabilitiesRequest,
        "controller.CreateSnapshot": pb.CreateSnapshotRequest, "controller.DeleteSnapshot": pb.DeleteSnapshotRequest,
        "controller.ControllerExpandVolume": pb.ControllerExpandVolumeRequest,
        "controller.ControllerGetVolume": pb.ControllerGetVolumeRequest,
        "node.NodeStageVolume": pb.NodeStageVolumeRequest, "node.NodeUnstageVolume": pb.NodeUnstageVolumeRequest,
        "node.NodePublishVolume": pb.NodePublishVolumeRequest,
        "node.NodeUnpublishVolume": pb.NodeUnpublishVolumeRequest,
        "node.NodeGetVolumeStats": pb.NodeGetVolumeStatsRequest, "node.NodeExpandVolume": pb.NodeExpandVolumeRequest,
    }
    for m, cls in need_args.items():
        X.twice_code(m, cls(), C.INVALID_ARGUMENT, "empty request")
    fine = {"identity.GetPluginInfo": pb.GetPluginInfoRequest, "identity.Probe": pb.ProbeRequest,
            "identity.GetPluginCapabilities": pb.GetPluginCapabilitiesRequest,
            "controller.ListVolumes": pb.ListVolumesRequest, "controller.ListSnapshots": pb.ListSnapshotsRequest,
            "controller.GetCapacity": pb.GetCapacityRequest,
            "controller.ControllerGetCapabilities": pb.ControllerGetCapabilitiesRequest,
            "node.NodeGetInfo": pb.NodeGetInfoRequest, "node.NodeGetCapabilities": pb.NodeGetCapabilitiesRequest}
    for m, cls in fine.items():
        X.twice_ok(m, cls(), "empty request", same=lambda r: 0)
    alive("missing fields")


def test_unknown_and_malformed_ids():
    ids = ["no-such-volume", "../../etc/passwd", "a/b", "x@y@z", "@", "vol@", "@snap", "v" * 5000,
           "tab\there", "nul\x00byte", "ünïcödé", " ", "-rf"]
    for vid in ids:
        for m, req in (("controller.ControllerGetVolume", pb.ControllerGetVolumeRequest(volume_id=vid)),
                       ("controller.ValidateVolumeCapabilities", pb.ValidateVolumeCapabilitiesRequest(
                           volume_id=vid, volume_capabilities=[mount_cap()])),
                       ("controller.ControllerExpandVolume", pb.ControllerExpandVolumeRequest(
                           volume_id=vid, capacity_range=pb.CapacityRange(required_bytes=MiB))),
                       ("node.NodeGetVolumeStats", pb.NodeGetVolumeStatsRequest(volume_id=vid, volume_path="/tmp"))):
            X.code(m, req, (C.NOT_FOUND, C.INVALID_ARGUMENT), f"id {vid[:20]!r}")
        _, code, det = cli.call("controller.DeleteVolume", pb.DeleteVolumeRequest(volume_id=vid))
        R.check(code in (C.OK, C.INVALID_ARGUMENT), f"DeleteVolume {vid[:20]!r}: {code.name} {det!r}")
        _, code, det = cli.call("controller.DeleteSnapshot", pb.DeleteSnapshotRequest(snapshot_id=vid))
        R.check(code in (C.OK, C.INVALID_ARGUMENT), f"DeleteSnapshot {vid[:20]!r}: {code.name} {det!r}")
        _, code, det = cli.call("controller.CreateSnapshot", pb.CreateSnapshotRequest(source_volume_id=vid, name="s"))
        R.check(code in (C.NOT_FOUND, C.INVALID_ARGUMENT), f"CreateSnapshot of {vid[:20]!r}: {code.name} {det!r}")
    # names Tessera cannot take as they are (the spec allows any Unicode name)
    for name in ("has/slash", "x" * 300, "ünïcödé-name", "with@at"):
        _, code, det = cli.call("controller.CreateVolume", create_req(name, 16 * MiB, {"replicas": "1"}))
        R.check(code in (C.OK, C.INVALID_ARGUMENT), f"CreateVolume name {name[:20]!r}: {code.name} {det!r}")
        if code == C.OK:
            X.ok("controller.DeleteVolume", pb.DeleteVolumeRequest(volume_id=_.volume.volume_id))
    code, det = raw_call("/csi.v1.Controller/NoSuchMethod", b"")
    R.check(code == C.UNIMPLEMENTED, f"unknown method: {code.name} {det!r}")
    code, det = raw_call("/csi.v1.Nothing/Probe", b"")
    R.check(code == C.UNIMPLEMENTED, f"unknown service: {code.name} {det!r}")
    alive("unknown ids")


# ------------------------------------------------------------------ concurrency
def test_concurrent_create_same_name():
    n, name = 32, "bad-race"
    results = [None] * n
    barrier = threading.Barrier(n)

    def one(i):
        c = Client(timeout=120)  # one connection per caller, like many sidecar retries
        barrier.wait()
        results[i] = c.call("controller.CreateVolume", create_req(name, 64 * MiB, {"replicas": "3"}))
        c.close()
    th = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    codes = [r[1] for r in results]
    oks = [r[0] for r in results if r[1] == C.OK]
    # ABORTED ("operation pending for this name") is the spec's answer to a
    # concurrent duplicate; everything else must be OK with the same volume
    R.check(all(c in (C.OK, C.ABORTED) for c in codes),
            f"concurrent CreateVolume: codes {sorted(set(c.name for c in codes))}: "
            f"{[r[2] for r in results if r[1] not in (C.OK, C.ABORTED)][:3]}")
    R.check(len(oks) >= 1, "no concurrent CreateVolume succeeded")
    R.check(len({(v.volume.volume_id, v.volume.capacity_bytes) for v in oks}) == 1,
            f"concurrent CreateVolume returned different volumes: {set(v.volume.volume_id for v in oks)}")
    R.log(f"{n} concurrent CreateVolume: {codes.count(C.OK)} OK, {codes.count(C.ABORTED)} ABORTED")
    vols = cluster_volumes()
    R.check(vols.count(name) == 1, f"the cluster has {vols.count(name)} volumes named {name}, want 1")
    R.check(not [v for v in vols if v != name and v.startswith(name)], f"stray volumes: {vols}")
    # and concurrent deletes of it
    res = []
    th = [threading.Thread(target=lambda: res.append(Client().call(
        "controller.DeleteVolume", pb.DeleteVolumeRequest(volume_id=name))[1])) for _ in range(16)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    R.check(all(c in (C.OK, C.ABORTED) for c in res), f"concurrent DeleteVolume: {[c.name for c in res]}")
    X.ok("controller.DeleteVolume", pb.DeleteVolumeRequest(volume_id=name))
    R.check(name not in cluster_volumes(), f"{name} still exists after DeleteVolume")
    alive("concurrent calls")


TESTS = [test_garbage_bytes, test_broken_grpc_framing, test_truncated_and_garbage_messages,
         test_ten_megabyte_request, test_missing_fields, test_unknown_and_malformed_ids,
         test_concurrent_create_same_name]

if __name__ == "__main__":
    only = os.environ.get("CSI_ONLY")
    raise SystemExit(R.run([t for t in TESTS if not only or t.__name__ in only.split(",")]))
