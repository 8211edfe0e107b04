"""The live page's bounds: no client of the page can take from training what it needs.

The page's server runs inside the training process and shares its file
handles (the soft ``RLIMIT_NOFILE``, often 1,024) with checkpoints, data,
logs and compilation caches; a failed open there ends the run. So the server
holds at most :func:`connection_cap` connections at once, gives each request
``READ_TIMEOUT_S`` to arrive whole (an idle or trickling client is dropped),
listens with a backlog of ``LISTEN_BACKLOG`` and answers a connection beyond
the cap at once with ``503 Service Unavailable`` (:class:`Refuser`).
"""

from __future__ import annotations

import io
import json
import queue
import selectors
import socket
import threading
import time

try:
    import resource
except ImportError:  # not on Windows: the cap falls back to MAX_CONNECTIONS
    resource = None

__all__ = ["DeadlineReader", "LISTEN_BACKLOG", "MAX_CONNECTIONS", "READ_TIMEOUT_S",
           "RETRY_AFTER_S", "Refuser", "connection_cap"]

# However many files the process may open: each connection is also a thread.
MAX_CONNECTIONS = 256
# Connections the kernel completes before the server accepts them; bursts of a
# page's requests (and of a flood) wait here instead of being dropped.
LISTEN_BACKLOG = 128
READ_TIMEOUT_S = 10.0
RETRY_AFTER_S = 1
# Refused connections read until their client closes, held by one thread: a
# flood of them costs a bounded number of handles and never the accept loop's time.
_LINGERING = 32
_LINGER_S = 1.0


def connection_cap(soft_limit: int | None = None) -> int:
    """The connections the page may hold open at once.

    A quarter of the process's soft limit on open files (three quarters stay
    with training), at least 4 and at most ``MAX_CONNECTIONS``: 256 of the
    usual 1,024.

    Args:
      soft_limit: the limit to divide; the process's ``RLIMIT_NOFILE`` when None.
    """
    if soft_limit is None:
        if resource is None:
            return MAX_CONNECTIONS
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if resource is not None and soft_limit == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(4, min(MAX_CONNECTIONS, soft_limit // 4))


class DeadlineReader(io.RawIOBase):
    """A socket's bytes, each read bounded by the time left to the current request.

    A per-read timeout alone lets a client trickle a byte now and then and
    hold its connection for ever; a deadline for the whole request does not.
    """

    def __init__(self, sock: socket.socket):
        super().__init__()
        self._sock = sock
        self._deadline: float | None = None

    def start(self, seconds: float | None) -> None:
        """The next request must arrive whole within ``seconds`` (None: no limit)."""
        self._deadline = None if seconds is None else time.monotonic() + seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._deadline is not None:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request did not arrive in time")
            self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


def _refusal() -> bytes:
    body = json.dumps({"error": "busy: too many connections to the page, try again"}).encode()
    head = ("HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: {RETRY_AFTER_S}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n")
    return head.encode() + body


class Refuser:
    """Answers connections beyond the cap with 503, never blocking the caller.

    The answer fits a new connection's empty send buffer. A socket closed with
    unread bytes resets its connection, and the client may then lose the
    answer: so one thread reads what refused clients send until they close
    (or ``_LINGER_S`` passes). It holds at most ``lingering`` sockets, closing
    the oldest (most likely an idle client's) to take a new one.

    Args:
      lingering: refused sockets held open at once.
    """

    def __init__(self, lingering: int = _LINGERING):
        self._limit = lingering
        self._answer = _refusal()
        self._incoming: queue.SimpleQueue = queue.SimpleQueue()
        self._lingering: dict[socket.socket, float] = {}  # oldest first
        self._selector: selectors.BaseSelector | None = None
        self._wake_r = self._wake_w = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.refused = 0

    def __call__(self, sock: socket.socket) -> None:
        """Answers ``sock`` with 503 and hands it to the lingering thread (or closes it)."""
        self.refused += 1
        try:
            sock.setblocking(False)
            sock.send(self._answer)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # already gone
            sock.close()
            return
        if self._closed or self._incoming.qsize() >= self._limit or not self._started():
            sock.close()
            return
        self._incoming.put(sock)
        self._wake()

    def close(self) -> None:
        """Closes every socket still held and ends the thread."""
        self._closed = True
        if self._thread is not None:
            self._wake()
            self._thread.join(timeout=5)

    # -- the lingering thread ------------------------------------------------
    def _started(self) -> bool:
        if self._thread is not None:
            return True
        try:
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_w.setblocking(False)
            self._selector = selectors.DefaultSelector()
            self._selector.register(self._wake_r, selectors.EVENT_READ)
            self._thread = threading.Thread(target=self._run, name="jvae-dashboard-refuse",
                                            daemon=True)
            self._thread.start()
        except (OSError, RuntimeError):  # no handle or thread to spare: refusals close at once
            self._thread = None
            return False
        return True

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # its buffer is full: the thread is awake already
            pass

    def _run(self) -> None:
        try:
            while not self._closed:
                soonest = next(iter(self._lingering.values()), None)
                timeout = None if soonest is None else max(0.0, soonest - time.monotonic())
                for key, _ in self._selector.select(timeout):
                    if key.fileobj is self._wake_r:
                        self._wake_r.recv(4096)
                    else:
                        self._read(key.fileobj)
                self._admit()
                self._expire()
        finally:
            self._release()

    def _admit(self) -> None:
        while not self._incoming.empty():
            sock = self._incoming.get()
            if len(self._lingering) >= self._limit:
                self._drop(next(iter(self._lingering)))
            self._lingering[sock] = time.monotonic() + _LINGER_S
            self._selector.register(sock, selectors.EVENT_READ)

    def _read(self, sock: socket.socket) -> None:
        try:
            more = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            more = b""
        if not more:  # the client closed: nothing left to reset
            self._drop(sock)

    def _expire(self) -> None:
        now = time.monotonic()
        for sock, deadline in list(self._lingering.items()):  # deadlines in order
            if deadline > now:
                break
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        self._selector.unregister(sock)
        del self._lingering[sock]
        sock.close()

    def _release(self) -> None:
        for sock in list(self._lingering):
            self._drop(sock)
        while not self._incoming.empty():
            self._incoming.get().close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
