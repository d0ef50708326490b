"""A TCP proxy on loopback that injects storage faults: outages, delays and connection resets.

Tests put it between s3fs and the loopback S3 server (moto) to check that a run rides out
what object stores do for real. It forwards bytes both ways unchanged until told otherwise:

    with FaultProxy("127.0.0.1", moto_port) as proxy:
        options = {"client_kwargs": {"endpoint_url": proxy.url}, ...}
        proxy.cut()       # drop every open connection and refuse new ones (an outage)
        proxy.restore()   # accept again
        proxy.delay(0.5)  # hold each forwarded chunk this many seconds
        proxy.reset_after(4096)  # reset each new connection after that many bytes upstream->client
        proxy.requests    # "GET /bucket/key", one per HTTP request forwarded, in order

Requests are counted by framing each client's byte stream as HTTP/1.1 (request line and
headers, then a body of Content-Length bytes or chunked): clients keep connections alive, so
connections are no count of requests. Only loopback addresses are used; every thread stops
when the proxy is closed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.2)
        self.host, self.port = self._listener.getsockname()[:2]
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._down = False
        self._delay = 0.0
        self._reset_after: int | None = None
        self._closed = threading.Event()
        self.connections_accepted = 0
        self.connections_refused = 0
        self.requests: list[str] = []  # "METHOD target" of each request forwarded
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- faults ----------------------------------------------------------------------------
    def cut(self) -> None:
        """An outage: open connections are dropped, new ones closed at once."""
        with self._lock:
            self._down = True
            doomed, self._connections = self._connections, set()
        for sock in doomed:
            _close(sock)

    def restore(self) -> None:
        with self._lock:
            self._down = False
            self._delay = 0.0
            self._reset_after = None

    def delay(self, seconds: float) -> None:
        self._delay = seconds

    def reset_after(self, nbytes: int | None) -> None:
        """New connections are reset after `nbytes` bytes from upstream (None: never)."""
        self._reset_after = nbytes

    @contextlib.contextmanager
    def outage(self, seconds: float):
        """Cut for `seconds` in the background while the block runs (the block may outlast it)."""
        self.cut()
        timer = threading.Timer(seconds, self.restore)
        timer.start()
        try:
            yield
        finally:
            timer.join()

    # --- plumbing --------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            if self._down:
                self.connections_refused += 1
                _close(client, reset=True)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client, reset=True)
                continue
            self.connections_accepted += 1
            with self._lock:
                self._connections |= {client, upstream}
            limit = self._reset_after
            requests = RequestFramer(self._record)
            threading.Thread(target=self._pump, args=(client, upstream, None, requests), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, limit, None), daemon=True).start()

    def _record(self, request: str) -> None:
        with self._lock:
            self.requests.append(request)

    def _pump(
        self, source: socket.socket, sink: socket.socket, limit: int | None, requests: RequestFramer | None
    ) -> None:
        sent = 0
        try:
            while not self._closed.is_set():
                data = source.recv(65536)
                if not data:
                    break
                if requests is not None:  # counted before it is sent: before any response
                    requests.feed(data)
                if self._delay:
                    time.sleep(self._delay)
                if limit is not None and sent + len(data) > limit:
                    sink.sendall(data[: max(0, limit - sent)])
                    _close(sink, reset=True)
                    _close(source, reset=True)
                    return
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
            with self._lock:
                self._connections.discard(source)

    def close(self) -> None:
        self._closed.set()
        self.cut()
        _close(self._listener)
        self._thread.join(timeout=2)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RequestFramer:
    """Splits one client's byte stream into HTTP/1.1 requests and passes each request line
    ("GET /bucket/key") to `record`. A stream it cannot frame is recorded once as "?" and no
    longer read."""

    def __init__(self, record: Callable[[str], None]) -> None:
        self.record = record
        self._buffer = b""
        self._body = 0  # bytes of the current body (or chunk and its CRLF) still to skip
        self._chunked = False
        self._trailers = False
        self._broken = False

    def feed(self, data: bytes) -> None:
        if self._broken:
            return
        self._buffer += data
        try:
            while self._step():
                pass
        except (ValueError, IndexError):
            self._broken = True
            self.record("?")

    def _step(self) -> bool:
        """Consume one piece of the buffer; whether there may be more to consume."""
        if self._body:
            skipped = min(self._body, len(self._buffer))
            self._buffer, self._body = self._buffer[skipped:], self._body - skipped
            return self._body == 0
        if self._chunked:
            line, sep, rest = self._buffer.partition(b"\r\n")
            if not sep:
                return False
            self._buffer = rest
            if self._trailers:  # after the last chunk: trailer lines up to an empty one
                self._chunked = self._trailers = line != b""
            elif int(line.split(b";")[0], 16) == 0:
                self._trailers = True
            else:
                self._body = int(line.split(b";")[0], 16) + 2  # the chunk and its CRLF
            return True
        head, sep, rest = self._buffer.partition(b"\r\n\r\n")
        if not sep:
            return False
        self._buffer = rest
        lines = head.split(b"\r\n")
        method, target = lines[0].split()[:2]
        self.record(f"{method.decode()} {target.decode()}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if b"chunked" in headers.get(b"transfer-encoding", b""):
            self._chunked = True
        else:
            self._body = int(headers.get(b"content-length", b"0"))
        return True


def _close(sock: socket.socket, reset: bool = False) -> None:
    with contextlib.suppress(OSError):
        if reset:  # RST instead of FIN: what a dropped connection looks like to the client
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
