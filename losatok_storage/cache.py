"""A local disk cache of remote files (training shards), shared by the processes of one node.

One job: `FileCache.open(fs, path, size)` gives an open local file holding the whole of remote
`path`, downloading it only when the cache does not hold it, so that a second epoch reads no
shard from the store twice while the cache keeps it.

Identity. An entry is keyed by the remote path, its size and, when known, a version tag (an
S3 ETag or an mtime), so an object rewritten since it was cached is another key and is
fetched anew, never served from the old entry. The caller passes the size (and the tag, if it
has one) from its listing, and an entry for that (path, size, tag) is served without asking
the store: a listing made after the rewrite names the new version. Only without a size is the
store asked (one `info`, a HEAD on S3), and then its ETag or mtime joins the key, which also
tells apart a rewrite of the same size. A superseded version's entry is never asked for again
and ages out by LRU. A download whose length is not the size given (the object changed after
the caller listed it) raises FetchedFileError.

Atomicity. A download goes to `<key>.tmp-<pid>-<random>` in the cache directory, is checked
(its length against the size, then `verify`) and only then renamed to `<key>.entry`, so an
entry is always complete. A process killed mid-download leaves a temporary file that is never
served: the next process that takes the entry's lock, or any eviction pass, deletes it. (An
entry is not fsynced: one that a crash of the machine cut short has the wrong length, and is
fetched again.) On S3 the download is one GET (s3fs's `get_file`, made sequential: by default
it splits an object over its block size into concurrent ranged GETs), retried whole per the
filesystem's RetryPolicy; s3fs itself resumes a cut stream with a ranged GET.

Concurrency. Each key has a lock file `<key>.lock`, held with `fcntl.flock(LOCK_EX)` while its
entry is looked up, downloaded, verified, opened or deleted; a second process that wants the
same file waits on the lock and then finds the first one's entry. Eviction removes an entry
only while holding its lock (taken without waiting: an entry in use is skipped), and the
caller gets an open file, not a path: an open file on Linux survives the unlink of its name,
so an entry evicted right after `open` returns is still read whole, and its disk space comes
back when the reader closes it. Lock files are deleted with their entries; a lock taken on a
lock file that was meanwhile unlinked is noticed (its inode is no longer the path's) and
taken again. Eviction passes are serialized by `.evict.lock`, so two processes never evict
for the same shortfall. No process holds an entry lock while waiting for another, so there
is no deadlock. flock works between the threads of one process too (a lock belongs to an
open file description), so one FileCache may be used from several threads. The directory
must be on a local filesystem (flock on NFS is not to be relied on).

Eviction. Least recently used first, by the entry's mtime, set (to the nanosecond) on each
download and each hit. Before a download the pass makes room for its size; after it the
entries again total at most `max_bytes`, bar entries locked at that moment. Past that bound,
disk use grows only by downloads in flight and evicted entries still open. A file larger
than `max_bytes` is not cached: `open` returns the store's own file object (`fs.open`, read in
ranged requests), `verify` is not applied to it, and `streamed` counts it.

Counters (`hits`, `misses`, `bytes_downloaded`, `evictions`, `streamed`) count what this object
did in this process; a FileCache pickled into worker processes starts each copy at zero, so
the workers' counters add up. `stats()` gives them as a dict for a metrics logger.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import IO, Any

from losatok_storage.filesystem import RetryingFileSystem, retrying
from losatok_storage.retry import call

ENTRY, LOCK, TEMP = ".entry", ".lock", ".tmp-"  # the suffixes of the cache directory's files
EVICT_LOCK = ".evict.lock"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class FetchedFileError(ValueError):
    """The bytes fetched for a remote file are not the file the caller asked for: two fresh
    downloads failed `verify`, or the object's length differs from the size given (it changed
    after it was listed). The message names the remote path; no entry is left behind."""


class FileCache:
    """Complete local copies of remote files in `directory`, at most `max_bytes` (bytes) of them
    at rest, least recently used evicted first; shared safely by the processes of one node."""

    def __init__(self, directory: str | os.PathLike, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        self.directory = os.fspath(directory)
        self.max_bytes = max_bytes
        os.makedirs(self.directory, exist_ok=True)
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._counting = threading.Lock()
        self.hits = 0  # opens served from an entry
        self.misses = 0  # downloads (a re-download after a failed verify counts again)
        self.bytes_downloaded = 0
        self.evictions = 0  # entries this object deleted to make room
        self.streamed = 0  # opens of files larger than max_bytes, read straight from the store

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self.directory, "max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.directory, self.max_bytes = state["directory"], state["max_bytes"]
        self._reset_counters()

    def __repr__(self) -> str:
        return f"FileCache({self.directory!r}, max_bytes={self.max_bytes})"

    def stats(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "bytes_downloaded": self.bytes_downloaded,
            "evictions": self.evictions,
            "streamed": self.streamed,
        }

    def _count(self, **amounts: int) -> None:
        with self._counting:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    # --- the one public read ------------------------------------------------------------------
    def open(
        self,
        fs: Any,
        path: str,
        size: int | None = None,
        verify: Callable[[str], bool] | None = None,
        *,
        tag: str | None = None,
    ) -> IO[bytes]:
        """An open binary file (read from its start) holding the whole of `path` on `fs`.

        fs: an fsspec filesystem (a RetryingFileSystem, or one that gets wrapped in one).
        size: the file's length in bytes, as listed; None asks the store (one `info`, whose ETag
            or mtime then joins the key). tag: a version marker from the listing (ETag, mtime)
            that joins the key; optional.
        verify: called with the local path of a fresh download (before it becomes an entry) or
            of a cached entry; False deletes it and downloads once more, and a second False
            raises FetchedFileError.
        A file larger than `max_bytes` is not cached: the store's file object is returned.
        """
        fs = retrying(fs)
        if size is None:
            info = fs.info(path)
            size = int(info["size"])
            found = info.get("ETag") or info.get("mtime") or info.get("LastModified")
            tag = tag if tag is not None else (str(found) if found else None)
        if size > self.max_bytes:
            self._count(streamed=1)
            return fs.open(path, "rb", size=size)
        key = entry_key(fs, path, size, tag)
        lock = self._lock(key)
        try:
            return self._open_locked(fs, path, size, verify, key)
        finally:
            os.close(lock)  # releases the flock

    def _open_locked(
        self, fs: RetryingFileSystem, path: str, size: int, verify: Callable[[str], bool] | None, key: str
    ) -> IO[bytes]:
        entry = self._path(key + ENTRY)
        failures = 0
        try:
            held = os.stat(entry).st_size
        except FileNotFoundError:
            held = None
        if held is not None and held != size:  # lost in a crash of the machine (renamed unsynced)
            os.unlink(entry)
        elif held is not None:
            if verify is None or verify(entry):
                return self._hand_out(entry, hit=True)
            os.unlink(entry)
            failures = 1
        while True:
            self._evict(reserve=size, own=key)
            temp = self._path(f"{key}{TEMP}{os.getpid()}-{uuid.uuid4().hex[:8]}")
            try:
                self._download(fs, path, temp)
                got = os.stat(temp).st_size
                self._count(misses=1, bytes_downloaded=got)
                if got != size:
                    raise FetchedFileError(
                        f"{path}: downloaded {got} bytes, not the {size} it was listed with"
                    )
                if verify is None or verify(temp):
                    os.rename(temp, entry)
                    break
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
                raise
            os.unlink(temp)
            failures += 1
            if failures >= 2:
                raise FetchedFileError(f"{path}: fails verification, also downloaded afresh; not cached")
        self._evict(reserve=0, own=key)  # concurrent downloads may each have reserved the same room
        return self._hand_out(entry, hit=False)

    def _hand_out(self, entry: str, hit: bool) -> IO[bytes]:
        now = time.time_ns()  # the kernel's file times tick in jiffies: uses ms apart would tie
        os.utime(entry, ns=(now, now))  # its last use, for LRU
        if hit:
            self._count(hits=1)
        return open(entry, "rb")  # noqa: SIM115 (the caller's to close)

    def _download(self, fs: RetryingFileSystem, path: str, target: str) -> None:
        # each attempt rewrites `target` from its start
        options = single_stream_options(fs.raw)
        call(lambda: fs.raw.get_file(path, target, **options), f"download {path}", fs.policy)

    # --- locks and eviction ---------------------------------------------------------------------
    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _lock(self, key: str, wait: bool = True) -> int | None:
        """A file descriptor holding the exclusive flock of `key` (None: busy and not waiting)."""
        return lock_file(self._path(key + LOCK), wait)

    def _evict(self, reserve: int, own: str) -> None:
        """Delete least recently used entries until they total at most max_bytes - reserve, and
        temporary files of killed downloads. `own` is the key whose lock the caller holds."""
        guard = lock_file(self._path(EVICT_LOCK), wait=True)
        try:
            entries, temps, locks = self._scan()
            for key, names in temps.items():
                if key == own:  # its lock is ours and our download has not begun: a killed one's
                    for name in names:
                        _remove(self._path(name))
                    continue
                held = self._lock(key, wait=False)
                if held is None:  # a download in flight
                    continue
                try:
                    for name in names:
                        _remove(self._path(name))
                finally:
                    os.close(held)
            total = sum(nbytes for _, nbytes, _ in entries)
            for used, nbytes, key in sorted(entries):
                if total + reserve <= self.max_bytes:
                    break
                if key != own and self._delete_entry(key, used):
                    total -= nbytes
                    self._count(evictions=1)
            for key in locks - {key for _, _, key in entries} - set(temps) - {own}:
                self._delete_entry(key, None)  # a lock file left by a failed download
        finally:
            os.close(guard)

    def _scan(self) -> tuple[list[tuple[int, int, str]], dict[str, list[str]], set[str]]:
        """(mtime_ns, size, key) of each entry; names of temporary files by key; keys of locks."""
        entries: list[tuple[int, int, str]] = []
        temps: dict[str, list[str]] = {}
        locks: set[str] = set()
        with os.scandir(self.directory) as found:
            for item in found:
                name = item.name
                if name == EVICT_LOCK:
                    continue
                if name.endswith(ENTRY):
                    with contextlib.suppress(FileNotFoundError):
                        stat = item.stat()
                        entries.append((stat.st_mtime_ns, stat.st_size, name[: -len(ENTRY)]))
                elif name.endswith(LOCK):
                    locks.add(name[: -len(LOCK)])
                elif TEMP in name:
                    temps.setdefault(name[: name.rindex(TEMP)], []).append(name)
        return entries, temps, locks

    def _delete_entry(self, key: str, used: int | None) -> bool:
        """Delete `key`'s entry and lock file if no one holds its lock and the entry is still the
        one scanned, last used at `used` (mtime in ns; None: there was no entry); whether it did."""
        held = self._lock(key, wait=False)
        if held is None:
            return False
        try:
            try:
                now = os.stat(self._path(key + ENTRY)).st_mtime_ns
            except FileNotFoundError:
                now = None
            if now != used:  # used, or made, since the scan: keep it
                return False
            _remove(self._path(key + ENTRY))
            _remove(self._path(key + LOCK))  # while still held: see lock_file
        finally:
            os.close(held)
        return True


def entry_key(fs: Any, path: str, size: int, tag: str | None) -> str:
    """The cache key of a remote file: a digest of its identity, then its name for a reader."""
    protocol = getattr(fs, "protocol", "")
    protocol = protocol[0] if isinstance(protocol, (tuple, list)) else protocol
    identity = f"{protocol}\0{path}\0{size}\0{tag or ''}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
    name = _UNSAFE.sub("_", path.rstrip("/").rpartition("/")[2])[:64].replace(TEMP, "_tmp-")
    return f"{digest}-{name}"


def lock_file(path: str, wait: bool) -> int | None:
    """Open (creating) `path` and take its exclusive flock; the descriptor, or None if it is
    busy and not `wait`. Closing the descriptor releases the lock.

    A lock file may be unlinked by its holder (with its entry); whoever was waiting on it then
    holds the lock of a name that is gone, sees that the path's inode is not its own, and takes
    the lock again on the path as it is now."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        mine = os.fstat(fd)
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
            return fd
        os.close(fd)


def single_stream_options(fs: Any) -> dict[str, Any]:
    """`get_file` options that make one request of a whole download: s3fs splits an object
    larger than its block size (50 MiB) into concurrent ranged GETs unless told otherwise."""
    get = getattr(fs, "_get_file", None)
    if get is not None and "max_concurrency" in inspect.signature(get).parameters:
        return {"max_concurrency": 1}
    return {}


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
