"""Filesystem access through fsspec, and writes that appear all at once or not at all.

Local files are written under a hidden temporary name and renamed (atomic on POSIX). On an
object store (s3://) an object becomes visible only when its upload completes, so writing to
the final name is already all-or-nothing and a rename (a copy there) would double the cost.
Storage options (endpoint, credentials) are passed through and never logged.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping
from typing import IO, Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

TEMP_MARKER = ".tmp-"  # in the names of files not yet committed (hidden: they start with ".")


def url_to_fs(
    url: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path within it) for a local path or URL."""
    return fsspec.core.url_to_fs(url, **dict(storage_options or {}))


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def temp_name(path: str) -> str:
    """A hidden sibling name for `path`, unique per writer."""
    parent, _, name = path.rpartition("/")
    return f"{parent}/.{name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def open_atomic(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[IO[bytes]]:
    """Open `path` for writing; it appears, complete, only if the block exits cleanly.

    On an error the partial file is removed (local) or the upload is abandoned (object store).
    """
    fs.makedirs(path.rpartition("/")[0], exist_ok=True)
    target = temp_name(path) if is_local(fs) else path
    f = fs.open(target, "wb")
    try:
        yield f
    except BaseException:
        _abandon(fs, f, target)
        raise
    f.close()
    if target != path:
        fs.mv(target, path)


def _abandon(fs: fsspec.AbstractFileSystem, f: Any, target: str) -> None:
    # A local temporary file is closed and deleted. An object-store file aborts its pending
    # multipart upload and is marked closed, so that garbage collection cannot upload the
    # partial buffer. Errors here would hide the original one, so they are swallowed.
    if is_local(fs):
        with contextlib.suppress(Exception):
            f.close()
        with contextlib.suppress(Exception):
            fs.rm(target)
        return
    with contextlib.suppress(Exception):
        f.discard()
    f.closed = True


def read_parquet_file(fs: fsspec.AbstractFileSystem, path: str) -> pa.Table:
    """One parquet file, fetched whole (one request on an object store) and parsed in memory.

    Single-threaded on purpose: pyarrow's reader threads (pre-buffered reads on a Python file
    object, the decode pool) can abort the interpreter at exit, "terminate called without an
    active exception" (apache/arrow#34314); we saw it in ~1 of 40 `losatok-data verify` runs.
    Index and ledger fragments are small, so threads buy nothing here.
    """
    return pq.read_table(pa.BufferReader(fs.cat_file(path)), use_threads=False)
