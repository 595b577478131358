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
