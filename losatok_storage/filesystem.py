"""Filesystem access through fsspec: every call retried, listings never stale, writes all-or-nothing.

`url_to_fs` hands out a `RetryingFileSystem`: the fsspec filesystem of the URL, whose storage
calls (reads, listings, writes, moves, removals, existence checks) retry transient errors with
bounded exponential backoff and jitter (`losatok_storage.retry`), and whose listings and existence
checks on an object store never answer from s3fs's listing cache (`dircache`): other processes
(commit tasks, other nodes) write the same dataset, so a cached listing is a stale one.

Writes appear all at once or not at all. Local files are written under a hidden temporary name
and renamed (atomic on POSIX). On an object store an object becomes visible only when its
upload completes; a write is spooled to a local temporary file first and uploaded from there,
so an upload cut by an outage is simply made again, whole, on the next attempt.
Storage options (endpoint, credentials) are passed through and never logged.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any, TypeVar

import fsspec
import fsspec.asyn
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from losatok_storage.retry import RetryPolicy, call

T = TypeVar("T")
TEMP_MARKER = ".tmp-"  # in the names of files not yet committed (hidden: they start with ".")
SPOOL_IN_MEMORY = 8 << 20  # an upload up to this size is spooled in memory, beyond it on local disk


class RetryingFileSystem:
    """An fsspec filesystem whose storage calls are retried and whose listings are read fresh.

    Everything not listed here is the wrapped filesystem's own (`protocol`, `sep`, ...); `raw`
    is the filesystem itself, for libraries that need an fsspec class (pyarrow datasets).
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, policy: RetryPolicy | None = None) -> None:
        self.raw = fs
        self.policy = policy or RetryPolicy()

    def __getattr__(self, name: str) -> Any:
        if name == "raw" or name.startswith("__"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.raw, name)

    def __repr__(self) -> str:
        return f"RetryingFileSystem({type(self.raw).__name__})"

    def _call(self, what: str, action: Callable[[], T]) -> T:
        return call(action, what, self.policy)[0]

    def _limit(self, name: str, nbytes: int = 0) -> dict[str, float]:
        """The keyword that bounds one attempt of the wrapped filesystem's method `name`: on an
        async filesystem (s3fs) an attempt is abandoned past the policy's deadline for `nbytes`
        (a transient failure, retried); other filesystems have no such keyword."""
        method = getattr(self.raw, name)
        if inspect.iscoroutinefunction(getattr(method, "__wrapped__", None)):  # fsspec's sync wrapper
            return {"timeout": self.policy.deadline(nbytes)}
        return {}

    def _run(self, what: str, name: str, *args: Any, nbytes: int = 0, **kwargs: Any) -> Any:
        """The wrapped filesystem's method `name`, retried, each attempt bounded (`_limit`)."""
        method = getattr(self.raw, name)
        limit = self._limit(name, nbytes)
        return self._call(what, lambda: method(*args, **kwargs, **limit))

    def _fresh(self, path: str) -> None:
        """Forget what the object store's listing cache holds for `path` and its parent."""
        if not is_local(self.raw):
            self.raw.invalidate_cache(path)
            self.raw.invalidate_cache(path.rstrip("/").rpartition("/")[0])

    # --- listings and existence: always asked of the store -----------------------------------
    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        self._fresh(path)
        return self._run(f"list {path}", "ls", path, detail=detail, **kwargs)

    def find(self, path: str, **kwargs: Any) -> Any:
        self._fresh(path)
        if not is_local(self.raw):
            self.raw.invalidate_cache()  # a recursive listing reads every folder below
        return self._run(f"list {path}", "find", path, **kwargs)

    def glob(self, pattern: str, **kwargs: Any) -> Any:
        if not is_local(self.raw):
            self.raw.invalidate_cache()
        return self._run(f"list {pattern}", "glob", pattern, **kwargs)

    def exists(self, path: str, **kwargs: Any) -> bool:
        self._fresh(path)
        return self._run(f"check {path}", "exists", path, **kwargs)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        self._fresh(path)
        return self._run(f"stat {path}", "info", path, **kwargs)

    def isdir(self, path: str) -> bool:
        self._fresh(path)
        return self._run(f"stat {path}", "isdir", path)

    def isfile(self, path: str) -> bool:
        self._fresh(path)
        return self._run(f"stat {path}", "isfile", path)

    def size(self, path: str) -> int:
        self._fresh(path)
        return self._run(f"stat {path}", "size", path)

    def call_s3_page(self, request: dict[str, Any]) -> dict[str, Any]:
        """One `list_objects_v2` page of an s3fs filesystem (a listing that resumes from
        `StartAfter` when retried, unlike s3fs's own paginator)."""
        return self._call(
            f"list s3://{request['Bucket']}/{request.get('Prefix', '')}",
            lambda: fsspec.asyn.sync(
                self.raw.loop,
                self.raw._call_s3,
                "list_objects_v2",
                timeout=self.policy.deadline(),
                **request,
            ),
        )

    # --- reads -------------------------------------------------------------------------------
    def cat_file(self, path: str, *args: Any, **kwargs: Any) -> bytes:
        return self._run(f"read {path}", "cat_file", path, *args, **kwargs)

    def cat(self, path: str, *args: Any, **kwargs: Any) -> Any:
        return self._run(f"read {path}", "cat", path, *args, **kwargs)

    def open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        """Read: the open (a HEAD on an object store) is retried; reads of a stream are the
        caller's to retry (small files: use `cat_file`). Write on an object store: a spooled
        upload, retried whole when the file is closed."""
        if "r" in mode:
            return self._call(f"open {path}", lambda: self.raw.open(path, mode, **kwargs))
        if is_local(self.raw):
            return self.raw.open(path, mode, **kwargs)
        upload = SpooledUpload(self, path)
        return upload if "b" in mode else TextUpload(upload)

    # --- writes, moves, removals ---------------------------------------------------------------
    def pipe_file(self, path: str, value: bytes, **kwargs: Any) -> Any:
        try:
            return self._run(f"write {path}", "pipe_file", path, value, nbytes=len(value), **kwargs)
        finally:
            self._fresh(path)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self._run(f"create {path}", "makedirs", path, exist_ok=exist_ok)

    def mv(self, source: str, target: str, **kwargs: Any) -> None:
        """Move `source` to `target`. On an object store a move is a copy and a delete: a retry
        that finds the source gone and the target there finds the move done."""
        tries = 0

        def move() -> None:
            nonlocal tries
            tries += 1
            try:
                self.raw.mv(source, target, **kwargs)
            except FileNotFoundError:
                self._fresh(source)
                self._fresh(target)
                if tries > 1 and not self.raw.exists(source) and self.raw.exists(target):
                    return
                raise

        try:
            self._call(f"move {source}", move)
        finally:
            self._fresh(source)
            self._fresh(target)

    def rm(self, path: str, recursive: bool = False, **kwargs: Any) -> None:
        """Remove `path`; a retry that finds it already gone is done."""
        tries = 0

        def remove() -> None:
            nonlocal tries
            tries += 1
            try:
                self.raw.rm(path, recursive=recursive, **kwargs, **self._limit("rm"))
            except FileNotFoundError:
                if tries == 1:
                    raise

        try:
            self._call(f"remove {path}", remove)
        finally:
            self._fresh(path)

    def rm_file(self, path: str) -> None:
        self.rm(path)

    def upload(self, path: str, spool: IO[bytes]) -> None:
        """Write the whole of `spool` (in memory, or a named file on disk) to `path`, retried,
        each attempt bounded by the policy's deadline for its size; an interrupted upload
        leaves nothing (an object appears only when its upload completes)."""
        size = spool.seek(0, 2)
        try:
            if isinstance(spool, io.BytesIO):
                self._run(f"write {path}", "pipe_file", path, spool.getvalue(), nbytes=size)
            else:
                spool.flush()
                self._run(f"write {path}", "put_file", spool.name, path, nbytes=size)
        finally:
            self._fresh(path)


class SpooledUpload(io.RawIOBase):
    """A binary file for writing to an object store: bytes are kept locally (in memory up to
    SPOOL_IN_MEMORY, then in a temporary file deleted on close) and uploaded, with retries, on
    `close`. `discard` drops them without uploading."""

    def __init__(self, fs: RetryingFileSystem, path: str) -> None:
        super().__init__()
        self.fs, self.path = fs, path
        self.spool: IO[bytes] = io.BytesIO()
        self._discarded = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        written = self.spool.write(data)
        if isinstance(self.spool, io.BytesIO) and self.spool.tell() > SPOOL_IN_MEMORY:
            disk = tempfile.NamedTemporaryFile(prefix=".losatok-upload-")  # noqa: SIM115 (closed in close)
            disk.write(self.spool.getbuffer())
            self.spool = disk
        return written

    def tell(self) -> int:
        return self.spool.tell()

    def discard(self) -> None:
        self._discarded = True
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._discarded:
                self.fs.upload(self.path, self.spool)
        finally:
            self.spool.close()
            super().close()

    def __exit__(self, kind: Any, *rest: Any) -> None:
        if kind is not None:  # an error inside the block: nothing is uploaded
            self._discarded = True
        self.close()


class TextUpload(io.TextIOWrapper):
    """SpooledUpload in text mode (UTF-8); an error inside its `with` block uploads nothing."""

    def __init__(self, upload: SpooledUpload) -> None:
        super().__init__(upload, encoding="utf-8")
        self.upload = upload

    def __exit__(self, kind: Any, *rest: Any) -> None:
        if kind is not None:
            self.upload._discarded = True
        self.close()


def url_to_fs(
    url: str, storage_options: Mapping[str, Any] | None = None, policy: RetryPolicy | None = None
) -> tuple[RetryingFileSystem, str]:
    """(filesystem, path within it) for a local path or URL; its calls retry per `policy`."""
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    return RetryingFileSystem(fs, policy), path


def unwrap(fs: Any) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem itself, for libraries that take one (pyarrow datasets)."""
    return fs.raw if isinstance(fs, RetryingFileSystem) else fs


def retrying(fs: Any, policy: RetryPolicy | None = None) -> RetryingFileSystem:
    """`fs` with retries (itself if it has them already)."""
    return fs if isinstance(fs, RetryingFileSystem) else RetryingFileSystem(fs, policy)


def is_local(fs: Any) -> bool:
    return isinstance(unwrap(fs), LocalFileSystem)


def temp_name(path: str) -> str:
    """A hidden sibling name for `path`, unique per writer."""
    parent, _, name = path.rpartition("/")
    return f"{parent}/.{name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def open_atomic(fs: Any, path: str) -> Iterator[IO[bytes]]:
    """Open `path` for writing; it appears, complete, only if the block exits cleanly.

    Local: a hidden temporary file, renamed into place. Object store: a spooled upload (see
    SpooledUpload), retried whole; an error in the block uploads nothing.
    """
    fs = retrying(fs)
    if not is_local(fs):
        upload = SpooledUpload(fs, path)
        with upload:
            yield upload
        return
    fs.makedirs(path.rpartition("/")[0], exist_ok=True)
    target = temp_name(path)
    f = fs.raw.open(target, "wb")
    try:
        yield f
    except BaseException:
        _abandon(fs.raw, f, target)
        raise
    f.close()
    fs.mv(target, path)


def _abandon(fs: fsspec.AbstractFileSystem, f: Any, target: str) -> None:
    # A local temporary file is closed and deleted; errors here would hide the original one,
    # so they are swallowed.
    with contextlib.suppress(Exception):
        f.close()
    with contextlib.suppress(Exception):
        fs.rm(target)


def read_parquet_file(fs: Any, path: str, columns: Sequence[str] | None = None) -> pa.Table:
    """One parquet file, fetched whole (one request on an object store, retried) and parsed in
    memory; only `columns` are decoded (None: all).

    Single-threaded on purpose: pyarrow's reader threads (pre-buffered reads on a Python file
    object, the decode pool) can abort the interpreter at exit, "terminate called without an
    active exception" (apache/arrow#34314); we saw it in ~1 of 40 `losatok-data verify` runs.
    Index and ledger fragments are small, so threads buy nothing here.
    """
    data = pa.BufferReader(retrying(fs).cat_file(path))
    return pq.read_table(data, columns=None if columns is None else list(columns), use_threads=False)
