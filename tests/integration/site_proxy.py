#!/usr/bin/python3
"""A TCP proxy for the geo-replication tests: the source site reaches the DR
site's listener through it, and the test changes the link under the stream.

  site_proxy.py serve --listen HOST:PORT --to HOST:PORT --ctl SOCKET
  site_proxy.py ctl SOCKET COMMAND [ARG]

serve forwards every connection accepted on --listen to --to, byte for byte
(it never looks inside: the stream is TLS).  It is one thread with one
selector.  The link's state changes through commands on the unix socket
--ctl (one command per connection, one JSON line back):

  pass          forward at full speed (clears throttle and delay)
  pause         stop forwarding in both directions, keep every connection
                (the peers see a link that went silent; TCP backpressure)
  cut           close every connection and the listener (new connects are
                refused) until pass, throttle or delay
  throttle BPS  forward at most BPS bytes/s in each direction (pass mode)
  delay MS      hold each chunk MS milliseconds before forwarding it
  stats         the counters only
  quit          exit

Every reply: {"ok": true, "mode": ..., "throttle": BPS, "delay_ms": MS,
"open": N, "accepted": N, "bytes_up": N, "bytes_down": N} (up = toward --to).
"""
import collections
import json
import os
import selectors
import socket
import sys
import time

CHUNK = 256 * 1024
HIGH = 4 * 1024 * 1024  # stop reading a side while this much waits to be written


def parse_addr(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


class Pipe:
    """One direction of a connection: bytes read from src, waiting for dst."""

    def __init__(self, src, dst):
        self.src, self.dst = src, dst
        self.queue = collections.deque()  # (due time, bytes) under delay
        self.buf = bytearray()            # due, to write to dst
        self.eof = False                  # src closed its side
        self.shut = False                 # we shut dst's write side

    def pending(self):
        return len(self.buf) + sum(len(b) for _, b in self.queue)


class Conn:
    def __init__(self, client, upstream):
        self.client, self.upstream = client, upstream
        self.up = Pipe(client, upstream)
        self.down = Pipe(upstream, client)


class Proxy:
    def __init__(self, listen, to, ctl):
        self.listen_addr, self.to, self.ctl_path = listen, to, ctl
        self.sel = selectors.DefaultSelector()
        self.mode = "pass"
        self.throttle = 0
        self.delay = 0.0
        self.conns = []
        self.accepted = 0
        self.bytes = {"up": 0, "down": 0}
        self.tokens = {"up": 0.0, "down": 0.0}
        self.last_refill = time.monotonic()
        self.masks = {}
        self.listener = None
        self.open_listener()
        if os.path.exists(ctl):
            os.unlink(ctl)
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctl.bind(ctl)
        self.ctl.listen(8)
        self.sel.register(self.ctl, selectors.EVENT_READ, "ctl")

    def open_listener(self):
        if self.listener is not None:
            return
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(self.listen_addr)
        s.listen(64)
        s.setblocking(False)
        self.listener = s
        self.sel.register(s, selectors.EVENT_READ, "listen")

    def close_listener(self):
        if self.listener is None:
            return
        self.sel.unregister(self.listener)
        self.listener.close()
        self.listener = None

    # ---- connections -------------------------------------------------------
    def accept(self):
        try:
            c, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        self.accepted += 1
        try:
            u = socket.create_connection(self.to, timeout=2)
        except OSError:
            c.close()  # the DR listener is down: the source sees a closed link
            return
        for s in (c, u):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(c, u)
        self.conns.append(conn)
        for s in (c, u):
            self.masks[s] = 0  # update_masks registers what the mode allows

    def drop(self, conn, reset=False):
        if conn not in self.conns:
            return
        self.conns.remove(conn)
        for s in (conn.client, conn.upstream):
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            self.masks.pop(s, None)
            if reset:  # a cut link: the peers see a reset, not a clean close
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                except OSError:
                    pass
            s.close()

    def cut(self):
        for conn in list(self.conns):
            self.drop(conn, reset=True)
        self.close_listener()

    # ---- data ----------------------------------------------------------------
    def refill(self):
        now = time.monotonic()
        dt = now - self.last_refill
        self.last_refill = now
        if self.throttle:
            cap = max(self.throttle / 10.0, 16384.0)
            for k in self.tokens:
                self.tokens[k] = min(cap, self.tokens[k] + self.throttle * dt)

    def promote_due(self, pipe, now):
        while pipe.queue and pipe.queue[0][0] <= now:
            pipe.buf += pipe.queue.popleft()[1]

    def read(self, conn, pipe):
        try:
            data = pipe.src.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.drop(conn)
            return
        if not data:
            pipe.eof = True
            return
        if self.delay:
            pipe.queue.append((time.monotonic() + self.delay, data))
        else:
            pipe.buf += data

    def write(self, conn, pipe, key):
        n = len(pipe.buf)
        if self.throttle:
            n = min(n, int(self.tokens[key]))
            if n <= 0:
                return
        try:
            sent = pipe.dst.send(pipe.buf[:n])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.drop(conn)
            return
        del pipe.buf[:sent]
        self.bytes[key] += sent
        if self.throttle:
            self.tokens[key] -= sent

    def update_masks(self):
        flowing = self.mode == "pass"
        for conn in self.conns:
            want = {conn.client: 0, conn.upstream: 0}
            for pipe, key in ((conn.up, "up"), (conn.down, "down")):
                if flowing and not pipe.eof and pipe.pending() < HIGH:
                    want[pipe.src] |= selectors.EVENT_READ
                if flowing and pipe.buf and (not self.throttle or self.tokens[key] >= 1):
                    want[pipe.dst] |= selectors.EVENT_WRITE
            for s, m in want.items():
                if self.masks.get(s) != m:
                    if m:
                        if self.masks.get(s):
                            self.sel.modify(s, m, conn)
                        else:
                            self.sel.register(s, m, conn)
                    elif self.masks.get(s):
                        self.sel.unregister(s)
                    self.masks[s] = m

    def finish_eofs(self):
        for conn in list(self.conns):
            for pipe in (conn.up, conn.down):
                if pipe.eof and not pipe.shut and pipe.pending() == 0:
                    try:
                        pipe.dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    pipe.shut = True
            if conn.up.shut and conn.down.shut:
                self.drop(conn)

    # ---- control ---------------------------------------------------------------
    def state(self):
        return {"ok": True, "mode": self.mode, "throttle": self.throttle,
                "delay_ms": int(self.delay * 1000), "open": len(self.conns),
                "accepted": self.accepted, "bytes_up": self.bytes["up"],
                "bytes_down": self.bytes["down"]}

    def command(self, line):
        words = line.split()
        if not words:
            return {"ok": False, "error": "empty command"}
        cmd, arg = words[0], (words[1] if len(words) > 1 else None)
        try:
            if cmd == "pass":
                self.mode, self.throttle, self.delay = "pass", 0, 0.0
                self.open_listener()
            elif cmd == "pause":
                self.mode = "pause"
            elif cmd == "cut":
                self.mode = "cut"
                self.cut()
            elif cmd == "throttle":
                self.mode, self.throttle = "pass", int(arg)
                self.tokens = {"up": 0.0, "down": 0.0}
                self.last_refill = time.monotonic()
                self.open_listener()
            elif cmd == "delay":
                self.mode, self.delay = "pass", int(arg) / 1000.0
                self.open_listener()
            elif cmd == "stats":
                pass
            elif cmd == "quit":
                self.cut()
                raise SystemExit(0)
            else:
                return {"ok": False, "error": "unknown command " + cmd}
        except (TypeError, ValueError):
            return {"ok": False, "error": "bad argument for " + cmd}
        return self.state()

    def control(self):
        c, _ = self.ctl.accept()
        c.settimeout(2)
        data = b""
        reply = {"ok": False}
        try:
            while not data.endswith(b"\n"):
                chunk = c.recv(256)
                if not chunk:
                    break
                data += chunk
            reply = self.command(data.decode(errors="replace"))
            c.sendall((json.dumps(reply) + "\n").encode())
        except OSError:
            pass
        finally:
            c.close()
        if reply.get("ok") and data.split()[:1] == [b"quit"]:
            raise SystemExit(0)

    # ---- loop --------------------------------------------------------------------
    def run(self):
        while True:
            self.refill()
            now = time.monotonic()
            timeout = 0.2
            for conn in self.conns:
                for pipe in (conn.up, conn.down):
                    self.promote_due(pipe, now)
                    if pipe.queue and self.mode == "pass":
                        timeout = min(timeout, max(0.0, pipe.queue[0][0] - now))
                    if pipe.buf and self.throttle and self.mode == "pass":
                        timeout = min(timeout, 0.01)
            self.update_masks()
            for key, events in self.sel.select(timeout):
                if key.data == "listen":
                    if self.listener is not None:
                        self.accept()
                    continue
                if key.data == "ctl":
                    self.control()
                    continue
                conn = key.data
                if conn not in self.conns or self.mode != "pass":
                    continue
                s = key.fileobj
                for pipe, k in ((conn.up, "up"), (conn.down, "down")):
                    if conn not in self.conns:
                        break
                    if events & selectors.EVENT_READ and pipe.src is s:
                        self.read(conn, pipe)
                    if conn in self.conns and events & selectors.EVENT_WRITE and pipe.dst is s:
                        self.write(conn, pipe, k)
            self.finish_eofs()


def ctl(path, words):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall((" ".join(words) + "\n").encode())
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    sys.stdout.write(data.decode())
    return 0 if json.loads(data).get("ok") else 1


def main(argv):
    if len(argv) >= 3 and argv[1] == "ctl":
        return ctl(argv[2], argv[3:])
    if len(argv) >= 2 and argv[1] == "serve":
        opts = dict(zip(argv[2::2], argv[3::2]))
        try:
            listen, to, ctl_path = parse_addr(opts["--listen"]), parse_addr(opts["--to"]), opts["--ctl"]
        except (KeyError, ValueError):
            sys.exit("usage: site_proxy.py serve --listen HOST:PORT --to HOST:PORT --ctl SOCKET")
        Proxy(listen, to, ctl_path).run()
        return 0
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
