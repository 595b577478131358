"""Fault injection for the integration tier: a TCP proxy on 127.0.0.1 that forwards to a
real server and, on demand, cuts every connection (at once, or once the client has sent
a given number of bytes), so a test can break a database or object-store connection in
the middle of a write. Threads only; talks to 127.0.0.1 only. And a dead machine:
``kill_process_tree`` SIGKILLs a process with every descendant, whatever session each
started."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import threading


class TcpProxy:
    """``with TcpProxy(upstream_port) as proxy:`` listens on ``proxy.port``.

    ``cut_after(n)`` arms a cut: once clients have sent ``n`` more bytes upstream, every
    open connection is reset (RST, as when a network path drops) and the proxy keeps
    refusing new ones until ``heal()``. ``cuts`` counts the cuts that happened.
    """

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._budget: int | None = None
        self._down = False
        self._closed = False
        self.cuts = 0
        self.forwarded = 0
        self.upstream_ports: list[int] = []
        """Local ports of the proxy's connections to the server (a database lists them as
        its clients' ports)."""
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> TcpProxy:
        self._acceptor.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closed = True
        self._listener.close()
        self._reset_all()

    def cut_after(self, n_bytes: int) -> None:
        with self._lock:
            self._budget = n_bytes

    def cut_now(self) -> None:
        with self._lock:
            self._budget = None
            self._down = True
            self.cuts += 1
        self._reset_all()

    def heal(self) -> None:
        with self._lock:
            self._down = False
            self._budget = None

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down:
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            with self._lock:
                self.upstream_ports.append(server.getsockname()[1])
                down = self._down
                if not down:
                    self._sockets.update((client, server))
            if down:  # cut while this connection was being opened
                _reset(client)
                _reset(server)
                continue
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, upstream: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if upstream:
                    with self._lock:
                        self.forwarded += len(chunk)
                        if self._budget is not None:
                            self._budget -= len(chunk)
                            trip = self._budget <= 0
                        else:
                            trip = False
                    if trip:
                        self.cut_now()
                        return
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with self._lock:
                    self._sockets.discard(sock)
                _reset(sock)

    def _reset_all(self) -> None:
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            _reset(sock)


def _reset(sock: socket.socket) -> None:
    """Drop the connection so that its peer sees it at once (linger 0: RST on close).

    ``shutdown`` comes first: a plain ``close`` while the other pump thread is blocked in
    ``recv`` on the same socket only releases the descriptor, the kernel keeps the
    connection open until that ``recv`` returns, and a database server waiting for the
    rest of a statement would then hold its transaction (and its locks) forever."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # The command name (field 2) may hold spaces: the fields after it count
                # from its closing parenthesis.
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(entry))
    return children


def kill_process_tree(pid: int) -> list[int]:
    """SIGKILL ``pid`` and every descendant, whatever session or process group it
    started (a dead machine: nothing gets to clean up). Each is stopped first so none
    can start a new child between the listing and the kill. Returns the pids killed."""
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            os.kill(current, signal.SIGSTOP)
        except ProcessLookupError:
            continue
        found.append(current)
        pending.extend(_children().get(current, []))
    for victim in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    return found


class FlakyHttpProxy:
    """``with FlakyHttpProxy(upstream_port) as proxy:`` an HTTP proxy at ``proxy.url`` in
    front of an object store (moto's S3 server) that answers errors on command.

    Healthy, it forwards every request and relays the answer. ``refuse(...)`` makes it
    answer ``503 SlowDown`` (S3's throttling reply, which clients retry) without
    forwarding: to the next ``count`` requests, for ``seconds``, or (neither given)
    until ``heal()``; ``method`` and ``path_contains`` narrow it to some requests (e.g.
    ``PUT`` of ``_delta_log/``: the commit). With ``after_forwarding`` the request is
    forwarded first and the store's answer replaced by the 503: the store did the work
    and the client does not know (an answer lost on the way back). ``stall(seconds)``
    holds each request that long (a client with a shorter request timeout gives up) and
    then answers ``504`` without forwarding it, so nothing a stalled client sent ever
    reaches the store.
    ``heal()`` ends both and releases the held requests. ``counts()`` says how many
    requests were ``refused``, ``stalled`` and ``forwarded``; ``log()`` lists
    ``[method, path, status]`` of each.

    The proxy runs in a child process, not a thread: deltalake holds the GIL during
    some of its network calls, so a proxy thread in the test's process could not answer
    them. The test drives it over HTTP (paths under ``/__faults__/``). Every stall ends
    at ``heal()`` or exit, so shutting down is bounded.
    """

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.port: int | None = None
        self._child = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FlakyHttpProxy:
        import subprocess
        import sys

        self._child = subprocess.Popen(
            [sys.executable, __file__, "flaky-http", self.upstream[0], str(self.upstream[1])],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self._child.stdout.readline()  # the child prints its port once it listens
        if not line.strip().isdigit():
            self._child.kill()
            raise RuntimeError(f"the fault proxy did not start: {line!r}")
        self.port = int(line)
        return self

    def __exit__(self, *exc) -> None:
        self._child.terminate()
        try:
            self._child.wait(timeout=10)
        except Exception:
            self._child.kill()
            self._child.wait(timeout=10)
        self._child.stdout.close()

    def refuse(
        self,
        count: int | None = None,
        seconds: float | None = None,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        after_forwarding: bool = False,
    ) -> None:
        self._control(
            "refuse",
            {
                "count": count,
                "seconds": seconds,
                "method": method,
                "path_contains": path_contains,
                "after_forwarding": after_forwarding,
            },
        )

    def stall(self, seconds: float) -> None:
        self._control("stall", {"seconds": seconds})

    def heal(self) -> None:
        self._control("heal", {})

    def counts(self) -> dict[str, int]:
        return self._control("counts", {})

    def log(self) -> list[list]:
        return self._control("log", {})

    def _control(self, command: str, arguments: dict):
        import json
        import urllib.request

        request = urllib.request.Request(
            f"{self.url}{_CONTROL}{command}", data=json.dumps(arguments).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())


_CONTROL = "/__faults__/"
_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message>"
    b"<RequestId>fault-proxy</RequestId></Error>"
)
# Hop-by-hop headers (RFC 9110 7.6.1) and the framing: the proxy frames each message.
_NOT_RELAYED = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}


class _Faults:
    """The child's fault state: what to refuse or stall next, and what happened."""

    def __init__(self):
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.released.set()
        self.refuse_left: int | None = None
        self.refuse_until: float | None = None
        self.method: str | None = None
        self.path_contains: str | None = None
        self.after_forwarding = False
        self.stall_seconds = 0.0
        self.counts = {"refused": 0, "stalled": 0, "forwarded": 0}
        self.log: list[list] = []

    def control(self, command: str, arguments: dict):
        import time

        with self.lock:
            if command == "refuse":
                self.refuse_left = arguments["count"]
                if arguments["count"] is not None:
                    self.refuse_until = None
                elif arguments["seconds"] is not None:
                    self.refuse_until = time.monotonic() + arguments["seconds"]
                else:
                    self.refuse_until = float("inf")
                self.method = arguments["method"]
                self.path_contains = arguments["path_contains"]
                self.after_forwarding = bool(arguments.get("after_forwarding"))
            elif command == "stall":
                self.stall_seconds = float(arguments["seconds"])
                self.released.clear()
            elif command == "heal":
                self.refuse_left = self.refuse_until = self.method = self.path_contains = None
                self.after_forwarding = False
                self.stall_seconds = 0.0
                self.released.set()
            elif command == "counts":
                return dict(self.counts)
            elif command == "log":
                return list(self.log)
            else:
                raise ValueError(f"unknown fault proxy command {command!r}")
        return {}

    def take_refusal(self, method: str, path: str) -> str | None:
        """None (relay the request), "before" or "after" forwarding it: answer 503."""
        import time

        with self.lock:
            if self.method is not None and method != self.method:
                return None
            if self.path_contains is not None and self.path_contains not in path:
                return None
            if self.refuse_left is not None:
                if self.refuse_left <= 0:
                    return None
                self.refuse_left -= 1
            elif self.refuse_until is None or time.monotonic() >= self.refuse_until:
                return None
            self.counts["refused"] += 1
            return "after" if self.after_forwarding else "before"

    def take_stall(self) -> float:
        with self.lock:
            if self.stall_seconds:
                self.counts["stalled"] += 1
            return self.stall_seconds

    def record(self, method: str, path: str, status: int, forwarded: bool) -> None:
        with self.lock:
            self.log.append([method, path, status])
            if forwarded:
                self.counts["forwarded"] += 1


def _serve_flaky_http(upstream_host: str, upstream_port: int) -> None:
    """The child process of :class:`FlakyHttpProxy`: serve until terminated."""
    import http.client
    import http.server
    import json
    import signal
    import sys

    faults = _Faults()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as object-store clients speak it

        def handle_one_request(self):
            try:
                super().handle_one_request()
            except OSError:  # the client gave up (its own timeout): nothing to answer
                self.close_connection = True

        def relay(self):
            method, path = self.command, self.path
            body = _read_body(self)
            if path.startswith(_CONTROL):
                arguments = json.loads(body or b"{}")
                answer = faults.control(path[len(_CONTROL) :], arguments)
                self.answer(
                    200, [("Content-Type", "application/json")], json.dumps(answer).encode()
                )
                return
            refusal = faults.take_refusal(method, path)
            if refusal == "before":
                self.answer(503, [("Content-Type", "application/xml")], _SLOW_DOWN)
                faults.record(method, path, 503, forwarded=False)
                return
            if stall := faults.take_stall():
                # Then a gateway's answer, not the store's: a request forwarded this late
                # could still commit after its client gave up, and a test could not say
                # what the store holds.
                faults.released.wait(stall)
                self.answer(504, [("Content-Type", "text/plain")], b"stalled by the fault proxy")
                faults.record(method, path, 504, forwarded=False)
                return
            upstream = http.client.HTTPConnection(upstream_host, upstream_port, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _NOT_RELAYED}
                sends_body = bool(body) or method in ("PUT", "POST")
                upstream.request(method, path, body=body if sends_body else None, headers=headers)
                reply = upstream.getresponse()
                payload = reply.read()
                if refusal == "after":
                    self.answer(503, [("Content-Type", "application/xml")], _SLOW_DOWN)
                    faults.record(method, path, 503, forwarded=True)
                    return
                kept = [(k, v) for k, v in reply.getheaders() if k.lower() not in _NOT_RELAYED]
                if method == "HEAD":  # a HEAD reply announces the size of a body it never sends
                    kept += [(k, v) for k, v in reply.getheaders() if k.lower() == "content-length"]
                    payload = None
                self.answer(reply.status, kept, payload)
                faults.record(method, path, reply.status, forwarded=True)
            finally:
                upstream.close()

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = relay

        def answer(self, status: int, headers, payload: bytes | None) -> None:
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            if payload is not None:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if payload:
                self.wfile.write(payload)

        def log_message(self, *args):  # quiet: the test reads the proxy's log
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # daemon threads die with us
    print(server.server_address[1], flush=True)
    server.serve_forever()


def _read_body(handler) -> bytes:
    """The request's body, framed by Content-Length or chunked transfer encoding."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while size := int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16):
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()
        while handler.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(parts)
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["flaky-http"]:
        _serve_flaky_http(sys.argv[2], int(sys.argv[3]))
