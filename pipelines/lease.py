"""One writer per dataset: a lease object (`lease.json`) at the dataset root.

The lease names its holder (host, pid, run id, since) and is renewed every `ttl / 4` seconds
while the run lives. A second run finds it and is refused at once (`LeaseHeldError`, which
the CLI turns into exit status 2), unless the holder is dead:
- same host (same host name and boot): its pid is gone, or now belongs to a younger process;
- another host: the lease was not renewed within `ttl` seconds.
A dead holder's lease is taken over, with a log line naming it.

How "at most one holder" is made exact:
- local paths (and shared file systems with POSIX locks): every read-decide-write of the
  lease happens under an exclusive `flock` of `.lease.lock`, which the kernel releases when
  its process dies, so a killed run never leaves the lock held;
- S3: the lease is created with a conditional PUT (`If-None-Match: *`, only the first of two
  racing creators succeeds), and taken over or renewed with `If-Match: <ETag>` of the version
  that was read, so of two runs taking over one stale lease only one succeeds, and a holder
  whose lease was taken over learns it at its next renewal. AWS S3 and moto's server honour
  both headers; on a store that ignores them (some S3 clones) the check-then-write is not atomic.
- other fsspec stores: check-then-write, not atomic (logged as a warning).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import psutil

from losatok_storage.filesystem import is_local, unwrap

log = logging.getLogger(__name__)

LEASE_FILE = "lease.json"
LOCK_FILE = ".lease.lock"


class LeaseHeldError(RuntimeError):
    """Another live run holds the dataset's lease."""


class LeaseLostError(RuntimeError):
    """This run's lease was taken over (it was not renewed in time); it must stop writing."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    run_id: str
    since: str  # UTC, ISO 8601
    renewed: float  # Unix time of the last renewal (seconds)
    boot_id: str = ""  # the kernel's boot id: a pid means something only within one boot
    pid_started: float | None = None  # the holder process's start time, guards against pid reuse

    def describe(self) -> str:
        age = time.time() - self.renewed
        return f"run {self.run_id} (host {self.host}, pid {self.pid}, since {self.since}, renewed {age:.0f} s ago)"

    @classmethod
    def this_process(cls, run_id: str) -> Holder:
        now = time.time()
        since = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds")
        pid = os.getpid()
        return cls(socket.gethostname(), pid, run_id, since, now, _boot_id(), _process_start(pid))


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> float | None:
    """Start time of process `pid` in clock ticks since boot (Linux), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return float(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def is_dead(holder: Holder, ttl: float, now: float | None = None) -> bool:
    """Whether `holder` can no longer be writing (see the module docstring)."""
    if holder.host == socket.gethostname() and holder.boot_id == _boot_id():
        if not psutil.pid_exists(holder.pid):
            return True
        started = _process_start(holder.pid)
        return holder.pid_started is not None and started is not None and started != holder.pid_started
    return (time.time() if now is None else now) - holder.renewed > ttl


class Lease:
    """The dataset's lease, held from `acquire` to `release` and renewed in between.

    ```
    with Lease(fs, root, run_id, ttl=120).held():
        ...  # write; call lease.check() now and then to stop if it was lost
    ```
    """

    def __init__(self, fs: Any, root: str, run_id: str, ttl: float = 120.0) -> None:
        self.fs, self.root, self.run_id, self.ttl = fs, root.rstrip("/"), run_id, ttl
        self.path = f"{self.root}/{LEASE_FILE}"
        self.holder = Holder.this_process(run_id)
        self._etag: str | None = None
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None
        self._s3 = type(unwrap(fs)).__name__ == "S3FileSystem"

    # --- holding -------------------------------------------------------------------------
    @contextlib.contextmanager
    def held(self) -> Iterator[Lease]:
        self.acquire()
        try:
            yield self
        finally:
            self.release()

    def acquire(self) -> None:
        """Take the lease, or raise LeaseHeldError naming the live holder; then renew it in the background."""
        self.fs.makedirs(self.root, exist_ok=True)
        if is_local(self.fs):
            with self._locked():
                current = self._read()
                self._check_free(current)
                self._write_local(self.holder)
        elif self._s3:
            self._acquire_s3()
        else:
            log.warning("%s: no atomic create on this store; the lease is check-then-write", self.path)
            self._check_free(self._read())
            self.fs.pipe_file(self.path, self._encode(self.holder))
        self._thread = threading.Thread(target=self._renew_loop, name="lease-renewal", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise LeaseLostError if a renewal found the lease taken over."""
        if self._lost.is_set():
            raise LeaseLostError(
                f"{self.path}: this run ({self.run_id}) lost its lease to another run; it stopped writing"
            )

    def release(self) -> None:
        """Stop renewing and remove the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._lost.is_set():
            return
        try:
            if is_local(self.fs):
                with self._locked():
                    current = self._read()
                    if current is not None and current.run_id == self.run_id:
                        self.fs.rm(self.path)
            else:
                current = self._read()
                if current is not None and current.run_id == self.run_id:
                    self.fs.rm(self.path)
        except Exception as err:  # an outage too: the run's result stands; a left lease goes stale by itself
            log.warning("could not remove the lease %s: %s", self.path, err)

    # --- internals -----------------------------------------------------------------------
    def _check_free(self, current: Holder | None) -> None:
        if current is None:
            return
        if not is_dead(current, self.ttl):
            raise LeaseHeldError(
                f"{self.root} is being written by {current.describe()}; one writer per dataset. "
                f"Wait for it to finish, or, if it is dead on another host, for its lease to expire "
                f"({self.ttl:.0f} s without renewal)."
            )
        log.warning("taking over the lease of %s, whose holder is dead", current.describe())

    def _read(self) -> Holder | None:
        try:
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        try:
            return Holder(**json.loads(data))
        except (ValueError, TypeError) as err:
            # a lease we cannot read is treated as held, not silently overwritten
            raise LeaseHeldError(
                f"{self.path} is unreadable ({err}); remove it if no run is writing"
            ) from None

    @staticmethod
    def _encode(holder: Holder) -> bytes:
        return json.dumps(asdict(holder), indent=2).encode()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive POSIX lock for one read-decide-write; released by the kernel if we die."""
        with open(f"{self.root}/{LOCK_FILE}", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write_local(self, holder: Holder) -> None:
        tmp = f"{self.root}/.{LEASE_FILE}.{os.getpid()}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(self._encode(holder))
        os.replace(tmp, self.path)

    def _acquire_s3(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self._etag = self._put_s3(self.holder, mode="create")
            return
        except (FileExistsError, ClientError, OSError) as err:
            if not _precondition_failed(err):
                raise
        info = self._info_s3()
        if info is None:  # removed between our create and now: try once more
            self._etag = self._put_s3(self.holder, mode="create")
            return
        etag, current = info
        if current is not None and current.run_id == self.run_id:
            self._etag = etag  # our create went through; its reply was lost and the retry refused
            return
        self._check_free(current)
        try:
            self._etag = self._put_s3(self.holder, IfMatch=etag)
        except (FileExistsError, ClientError, OSError) as err:
            if not _precondition_failed(err):
                raise
            info = self._info_s3()
            raise LeaseHeldError(
                f"{self.root} was taken over first by {info[1].describe() if info else 'another run'}"
            ) from None

    def _info_s3(self) -> tuple[str, Holder | None] | None:
        # the ETag is read before the body: if the body changed in between, an If-Match on this
        # ETag fails, so a decision is never made on content newer than the version it updates
        self.fs.invalidate_cache(self.path)
        try:
            etag = self.fs.info(self.path)["ETag"]
        except FileNotFoundError:
            return None
        return etag, self._read()

    def _put_s3(self, holder: Holder, **kwargs: Any) -> str:
        out = self.fs.pipe_file(self.path, self._encode(holder), **kwargs)
        self.fs.invalidate_cache(self.path)
        return out["ETag"]

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self._renew()
            except LeaseLostError as err:
                log.error("%s", err)
                self._lost.set()
                return
            except Exception as err:  # storage hiccup: try again at the next beat
                log.warning("could not renew the lease %s: %s", self.path, err)

    def _renew(self) -> None:
        renewed = Holder(**{**asdict(self.holder), "renewed": time.time()})
        if is_local(self.fs):
            with self._locked():
                current = self._read()
                if current is None or current.run_id != self.run_id:
                    raise LeaseLostError(
                        f"{self.path} now names {current.describe() if current else 'nobody'}"
                    )
                self._write_local(renewed)
        elif self._s3:
            from botocore.exceptions import ClientError

            try:
                self._etag = self._put_s3(renewed, IfMatch=self._etag)
            except (FileExistsError, ClientError, OSError) as err:
                if _precondition_failed(err):
                    raise LeaseLostError(f"{self.path} was changed by another run") from None
                raise
        else:
            self.fs.pipe_file(self.path, self._encode(renewed))
        self.holder = renewed


def _precondition_failed(err: BaseException) -> bool:
    """Whether a storage error is S3's 412 Precondition Failed (s3fs maps it to FileExistsError)."""
    if isinstance(err, FileExistsError):
        return True
    text = f"{err} {getattr(err, 'response', '')} {err.__cause__ or ''}"
    return "PreconditionFailed" in text or "pre-conditions" in text or "412" in text


def new_run_id() -> str:
    """`20261125T001500Z-1a2b3c4d`: sortable by start time, unique."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{os.urandom(4).hex()}"
