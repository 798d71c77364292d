#!/usr/bin/python3
# Raw NBD protocol abuse for test-bad-input.sh: plain sockets, no third-party
# modules.  Each case opens its own connection to the server's unix socket,
# sends something wrong, and checks the answer the spec requires
# (github.com/NetworkBlockDevice/nbd doc/proto.md) or a clean disconnect.
#
#   nbd_abuse.py SOCKET EXPORT EXPORT_SIZE [CASE...]
#
# EXPORT is a volume the cases may target; every case that writes to it must
# not change it (the test compares checksums afterwards).  Prints one line per
# case; exit 1 if any case failed.
import socket
import struct
import sys
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC_OPT = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO, OPT_STRUCTURED_REPLY = 1, 2, 3, 6, 7, 8
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
REP_ERR_UNSUP = 2**31 + 1
REP_ERR_POLICY = 2**31 + 2
REP_ERR_INVALID = 2**31 + 3
REP_ERR_UNKNOWN = 2**31 + 6
REP_ERR_TOO_BIG = 2**31 + 9
INFO_EXPORT, INFO_BLOCK_SIZE = 0, 3

CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM = 0, 1, 2, 3, 4
CMD_FLAG_FUA = 1
EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN = 1, 5, 12, 22, 28, 75, 95, 108

REPLY_FLAG_DONE = 1
REPLY_TYPE_NONE, REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE = 0, 1, 2
REPLY_TYPE_ERROR, REPLY_TYPE_ERROR_OFFSET = 2**15 + 1, 2**15 + 2

SOCK, EXPORT, SIZE = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
failures = []


class Closed(Exception):
    pass


def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(SOCK)
    return s


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        try:
            chunk = s.recv(n - len(buf))
        except (ConnectionResetError, BrokenPipeError):
            raise Closed()
        if not chunk:
            raise Closed()
        buf += chunk
    return buf


def closed_soon(s, timeout=5.0):
    """True if the server closes the connection (EOF or reset) within timeout;
    any bytes it sends first are discarded."""
    s.settimeout(timeout)
    end = time.time() + timeout
    try:
        while time.time() < end:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


def handshake(s, cflags=FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES):
    magic, opt, hflags = struct.unpack(">QQH", recv_exact(s, 18))
    assert magic == NBDMAGIC and opt == IHAVEOPT, "bad server greeting"
    assert hflags & FLAG_FIXED_NEWSTYLE, "server lacks fixed newstyle"
    send(s, struct.pack(">I", cflags))


def send(s, data):
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        raise Closed()


def send_opt(s, opt, data=b"", magic=IHAVEOPT, length=None):
    send(s, struct.pack(">QII", magic, opt, len(data) if length is None else length) + data)


def recv_opt_reply(s):
    magic, opt, rtype, length = struct.unpack(">QIII", recv_exact(s, 20))
    assert magic == REPLY_MAGIC_OPT, "bad option reply magic %x" % magic
    return opt, rtype, recv_exact(s, length)


def go_data(name, infos=()):
    return struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos)) + \
        b"".join(struct.pack(">H", i) for i in infos)


def go(s, name=EXPORT, structured=False):
    """Negotiate and enter transmission; returns (size, transmission flags)."""
    if structured:
        send_opt(s, OPT_STRUCTURED_REPLY)
        _, rtype, _ = recv_opt_reply(s)
        assert rtype == REP_ACK, "STRUCTURED_REPLY not acked: %x" % rtype
    send_opt(s, OPT_GO, go_data(name, (INFO_BLOCK_SIZE,)))
    size = flags = None
    while True:
        opt, rtype, data = recv_opt_reply(s)
        assert opt == OPT_GO, "reply to option %d, want GO" % opt
        if rtype == REP_ACK:
            break
        assert rtype == REP_INFO, "GO reply type %x" % rtype
        itype = struct.unpack(">H", data[:2])[0]
        if itype == INFO_EXPORT:
            size, flags = struct.unpack(">QH", data[2:12])
    assert size is not None, "GO without NBD_INFO_EXPORT"
    return size, flags


def request(s, cmd, offset, length, handle=1, flags=0, payload=b""):
    send(s, struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, handle, offset, length) + payload)


def simple_reply(s, read_len=0):
    """(error, handle, data); data only when error == 0."""
    magic, err, handle = struct.unpack(">IIQ", recv_exact(s, 16))
    assert magic == SIMPLE_REPLY_MAGIC, "bad reply magic %x" % magic
    data = recv_exact(s, read_len) if err == 0 and read_len else b""
    return err, handle, data


def structured_chunks(s):
    """Every chunk of one structured reply: list of (flags, type, handle, payload)."""
    chunks = []
    while True:
        magic, flags, rtype, handle, length = struct.unpack(">IHHQI", recv_exact(s, 20))
        assert magic == STRUCTURED_REPLY_MAGIC, "bad structured reply magic %x" % magic
        chunks.append((flags, rtype, handle, recv_exact(s, length)))
        if flags & REPLY_FLAG_DONE:
            return chunks


def still_works(s, handle=99):
    request(s, CMD_READ, 0, 4096, handle)
    err, h, data = simple_reply(s, 4096)
    assert err == 0 and h == handle and len(data) == 4096, "read after the error failed (err %d)" % err


CASES = []


def case(fn):
    CASES.append(fn)
    return fn


def run_case(fn):
    name = fn.__name__
    try:
        note = fn()
        print("ok   %-28s %s" % (name, note or ""))
    except Closed:
        failures.append(name)
        print("FAIL %-28s server closed the connection unexpectedly" % name)
    except socket.timeout:
        failures.append(name)
        print("FAIL %-28s no answer within the timeout" % name)
    except AssertionError as e:
        failures.append(name)
        print("FAIL %-28s %s" % (name, e))
    except OSError as e:
        failures.append(name)
        print("FAIL %-28s %s" % (name, e))
    sys.stdout.flush()


# ------------------------------------------------------------------ handshake phase
@case
def bad_option_magic():
    s = connect()
    handshake(s)
    try:
        send_opt(s, OPT_LIST, magic=0x1122334455667788)
    except Closed:
        return "disconnected"
    assert closed_soon(s), "server did not disconnect after a bad option magic"
    return "disconnected"


@case
def unknown_client_flags():
    s = connect()
    try:
        handshake(s, cflags=0xFFFF0000 | FLAG_FIXED_NEWSTYLE)
        send_opt(s, OPT_LIST)
    except Closed:
        return "disconnected"
    assert closed_soon(s), "server kept going with unknown client flags"
    return "disconnected"


@case
def unknown_option():
    s = connect()
    handshake(s)
    send_opt(s, 0x7FFF, b"hello")
    opt, rtype, _ = recv_opt_reply(s)
    assert opt == 0x7FFF, "reply names option %d" % opt
    assert rtype == REP_ERR_UNSUP, "reply type %x, want NBD_REP_ERR_UNSUP" % rtype
    # The session goes on: LIST still answers and names our export.
    send_opt(s, OPT_LIST)
    names = []
    while True:
        opt, rtype, data = recv_opt_reply(s)
        if rtype == REP_ACK:
            break
        assert rtype == REP_SERVER, "LIST reply type %x" % rtype
        n = struct.unpack(">I", data[:4])[0]
        names.append(data[4:4 + n])
    assert EXPORT in names, "LIST does not name %r: %r" % (EXPORT, names)
    send_opt(s, OPT_ABORT)
    try:
        opt, rtype, _ = recv_opt_reply(s)
        assert rtype == REP_ACK, "ABORT reply %x" % rtype
    except Closed:
        pass
    assert closed_soon(s), "no disconnect after ABORT"
    return "NBD_REP_ERR_UNSUP, LIST and ABORT fine afterwards"


@case
def unknown_export_go():
    s = connect()
    handshake(s)
    send_opt(s, OPT_GO, go_data(b"no-such-volume"))
    opt, rtype, _ = recv_opt_reply(s)
    assert rtype == REP_ERR_UNKNOWN, "GO reply %x, want NBD_REP_ERR_UNKNOWN" % rtype
    send_opt(s, OPT_INFO, go_data(b"no-such-volume"))
    opt, rtype, _ = recv_opt_reply(s)
    assert rtype == REP_ERR_UNKNOWN, "INFO reply %x, want NBD_REP_ERR_UNKNOWN" % rtype
    # A good GO on the same connection still works.
    size, _ = go(s)
    assert size == SIZE, "size %d, want %d" % (size, SIZE)
    still_works(s)
    return "NBD_REP_ERR_UNKNOWN, then GO works"


@case
def unknown_export_name_opt():
    s = connect()
    handshake(s)
    try:
        send_opt(s, OPT_EXPORT_NAME, b"no-such-volume")
    except Closed:
        return "disconnected"
    assert closed_soon(s), "EXPORT_NAME of an unknown export must disconnect"
    return "disconnected"


@case
def go_malformed():
    s = connect()
    handshake(s)
    # Name length claims more bytes than the option carries.
    send_opt(s, OPT_GO, struct.pack(">I", 1000) + b"abc")
    try:
        opt, rtype, _ = recv_opt_reply(s)
    except Closed:
        return "disconnected"
    assert rtype == REP_ERR_INVALID, "reply %x, want NBD_REP_ERR_INVALID" % rtype
    return "NBD_REP_ERR_INVALID"


@case
def huge_option_length():
    s = connect()
    handshake(s)
    # Announce ~4 GiB of option data, send a little, vanish.
    try:
        send_opt(s, 0x7FFF, b"x" * 100, length=0xFFFFFFF0)
    except Closed:
        pass
    s.close()
    s = connect()
    handshake(s)
    # A refusal or a close comes at once: the server has read the header and
    # cannot answer anything else before the 4 GiB it waits for.  1 s, not
    # connect()'s 10: the 9 more seconds of waiting tested nothing.
    s.settimeout(1)
    try:
        send_opt(s, OPT_LIST, length=0xFFFFFFF0)
        opt, rtype, _ = recv_opt_reply(s)
        assert rtype & 2**31, "LIST with 4 GiB of data accepted: %x" % rtype
        return "error reply %x" % rtype
    except Closed:
        return "disconnected"
    except socket.timeout:
        # Waiting for the data it was promised is fine too, as long as it
        # did not allocate it (the test checks the daemon is still healthy).
        return "waits for the data"


@case
def vanish_in_handshake():
    for cut in (3, 18):
        s = connect()
        if cut > 3:
            recv_exact(s, 18)
            try:
                send(s, b"\x00\x00")
            except Closed:
                pass
        s.close()
    return "closed at two points"


# ------------------------------------------------------------------ transmission phase
@case
def unknown_command():
    s = connect()
    handshake(s)
    go(s)
    request(s, 0x55, 0, 4096, handle=7)
    try:
        err, h, _ = simple_reply(s)
    except Closed:
        return "disconnected"
    assert h == 7, "reply handle %d" % h
    assert err == EINVAL, "error %d, want NBD_EINVAL" % err
    still_works(s)
    return "NBD_EINVAL"


@case
def bad_request_magic():
    s = connect()
    handshake(s)
    go(s)
    try:
        send(s, struct.pack(">IHHQQI", 0xDEADBEEF, 0, CMD_READ, 1, 0, 4096))
    except Closed:
        return "disconnected"
    assert closed_soon(s), "server did not disconnect after a bad request magic"
    return "disconnected"


@case
def read_past_end():
    s = connect()
    handshake(s)
    go(s)
    notes = []
    for off, ln in ((SIZE, 4096), (SIZE - 4096, 8192), (2**64 - 4096, 4096), (2**63, 2**31)):
        request(s, CMD_READ, off, ln, handle=off & 0xFFFF)
        err, h, _ = simple_reply(s, 0)
        assert err != 0, "read at %d+%d past the end succeeded" % (off, ln)
        assert err in (EINVAL, ENOSPC, EOVERFLOW, EIO), "odd error %d" % err
        notes.append(str(err))
    still_works(s)
    return "errors " + ",".join(notes)


@case
def write_trim_past_end():
    s = connect()
    handshake(s)
    go(s)
    request(s, CMD_WRITE, SIZE, 4096, handle=3, payload=b"\xee" * 4096)
    err, h, _ = simple_reply(s)
    assert err in (EINVAL, ENOSPC), "write past end: error %d" % err
    request(s, CMD_TRIM, SIZE - 4096, 8192, handle=4)
    err, h, _ = simple_reply(s)
    assert err in (EINVAL, ENOSPC), "trim past end: error %d" % err
    still_works(s)
    return "write %d, then read fine" % err


@case
def unaligned():
    s = connect()
    handshake(s)
    go(s)
    request(s, CMD_READ, 1, 4096, handle=5)
    err, h, _ = simple_reply(s, 4096)
    if err == 0:
        return "unaligned read served (allowed when minimum block size is advisory)"
    assert err == EINVAL, "unaligned read error %d, want EINVAL" % err
    request(s, CMD_WRITE, 512, 512, handle=6, payload=b"\xee" * 512)
    err, h, _ = simple_reply(s)
    assert err == EINVAL, "unaligned write error %d, want EINVAL" % err
    still_works(s)
    return "EINVAL"


@case
def read_too_big():
    s = connect()
    handshake(s)
    go(s)
    request(s, CMD_READ, 0, 64 << 20, handle=8)
    try:
        err, h, _ = simple_reply(s, 0)
    except Closed:
        return "disconnected"
    assert err in (EINVAL, EOVERFLOW, ENOMEM), "64 MiB read: error %d" % err
    still_works(s)
    return "error %d" % err


@case
def write_too_big():
    s = connect()
    handshake(s)
    go(s)
    length = 48 << 20
    request(s, CMD_WRITE, 0, length, handle=9)
    # Send the payload while watching for an early reply or a disconnect.
    s.settimeout(10)
    chunk = b"\xee" * (1 << 20)
    try:
        for _ in range(length >> 20):
            s.sendall(chunk)
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        return "disconnected"
    try:
        err, h, _ = simple_reply(s)
    except Closed:
        return "disconnected"
    assert err != 0, "48 MiB write accepted"
    still_works(s)
    return "error %d, payload skipped, connection fine" % err


@case
def vanish_mid_payload():
    s = connect()
    handshake(s)
    go(s)
    try:
        request(s, CMD_WRITE, 0, 1 << 20, handle=10, payload=b"\xee" * 1000)
    except Closed:
        pass
    s.close()
    s = connect()
    handshake(s)
    go(s)
    try:
        request(s, CMD_READ, 0, 4096, handle=11)
    except Closed:
        pass
    s.close()  # and vanish with a reply pending
    return "two vanishing clients"


@case
def pipelined_then_vanish():
    s = connect()
    handshake(s)
    go(s)
    reqs = b"".join(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, i, (i % 64) * 4096, 4096)
                    for i in range(20000))
    # The server stops reading once its replies fill the socket (nobody reads
    # them), so sendall ends at its timeout: 1 s, not connect()'s 10, leaves
    # it in the same state (requests queued, replies unread) when we vanish.
    s.settimeout(1)
    try:
        s.sendall(reqs)
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass
    s.close()
    return "20000 reads, no reader"


@case
def disconnect_command():
    s = connect()
    handshake(s)
    go(s)
    try:
        request(s, CMD_DISC, 0, 0)
    except Closed:
        return "closed"
    assert closed_soon(s), "no close after NBD_CMD_DISC"
    return "closed"


# ------------------------------------------------------------------ structured replies
@case
def structured_sparse_read():
    s = connect()
    handshake(s)
    go(s, structured=True)
    # The test leaves the last MiB of the export unwritten: a hole.
    request(s, CMD_READ, SIZE - (1 << 20), 1 << 20, handle=12)
    chunks = structured_chunks(s)
    covered, holes = 0, 0
    for flags, rtype, h, payload in chunks:
        assert h == 12, "chunk handle %d" % h
        if rtype == REPLY_TYPE_OFFSET_HOLE:
            off, ln = struct.unpack(">QI", payload)
            holes += 1
            covered += ln
        elif rtype == REPLY_TYPE_OFFSET_DATA:
            assert payload[8:] == bytes(len(payload) - 8), "data chunk of a hole is not zero"
            covered += len(payload) - 8
        else:
            assert rtype == REPLY_TYPE_NONE, "unexpected chunk type %d" % rtype
    assert covered == 1 << 20, "chunks cover %d bytes" % covered
    assert holes > 0, "no OFFSET_HOLE chunk for an unwritten range"
    # An error as a structured ERROR chunk.
    request(s, CMD_READ, SIZE, 4096, handle=13)
    chunks = structured_chunks(s)
    assert any(t in (REPLY_TYPE_ERROR, REPLY_TYPE_ERROR_OFFSET) for _, t, _, _ in chunks), \
        "read past end: no error chunk"
    # Data reads back as data.
    request(s, CMD_READ, 0, 4096, handle=14)
    chunks = structured_chunks(s)
    got = sum(len(p) - 8 for _, t, _, p in chunks if t == REPLY_TYPE_OFFSET_DATA)
    assert got == 4096 or any(t == REPLY_TYPE_OFFSET_HOLE for _, t, _, _ in chunks), "no data"
    return "%d hole chunk(s), error chunk past end" % holes


for fn in CASES:
    if len(sys.argv) <= 4 or fn.__name__ in sys.argv[4:]:
        run_case(fn)
print("%d case(s) failed: %s" % (len(failures), " ".join(failures)) if failures else "all cases passed")
sys.exit(1 if failures else 0)
