"""A TCP proxy on loopback that injects storage faults: outages, delays and connection resets.

Tests put it between s3fs and the loopback S3 server (moto) to check that a run rides out
what object stores do for real. It forwards bytes both ways unchanged until told otherwise:

    with FaultProxy("127.0.0.1", moto_port) as proxy:
        options = {"client_kwargs": {"endpoint_url": proxy.url}, ...}
        proxy.cut()       # drop every open connection and refuse new ones (an outage)
        proxy.restore()   # accept again
        proxy.delay(0.5)  # hold each forwarded chunk this many seconds
        proxy.reset_after(4096)  # reset each new connection after that many bytes upstream->client

Only loopback addresses are used; every thread stops when the proxy is closed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


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
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, limit), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while not self._closed.is_set():
                data = source.recv(65536)
                if not data:
                    break
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


def _close(sock: socket.socket, reset: bool = False) -> None:
    with contextlib.suppress(OSError):
        if reset:  # RST instead of FIN: what a dropped connection looks like to the client
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
