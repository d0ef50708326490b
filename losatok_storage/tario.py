"""Reading and writing WebDataset tars with Python's tarfile.

Why tarfile and not webdataset.TarWriter / webdataset's readers: tarfile streams to and from
any file object (an fsspec s3 file included), lets us fix mtime and owner so a rerun writes
byte-identical shards, and raises on a damaged archive where webdataset's pipeline hands
errors to a handler that may skip them. The format is WebDataset's all the same (members
`<key>.<ext>`, grouped by key, in order), and the tests read our tars with webdataset.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterator, Mapping
from typing import IO

import fsspec

from losatok_storage.retry import is_transient

BLOCK = 512  # tar block size; an archive ends with two zero blocks
_MTIME = 0  # fixed, so identical samples give identical bytes


class TarReadError(ValueError):
    """A tar that cannot be read to its end: truncated, corrupt, or not a WebDataset tar.

    The dataset's readers treat it as a broken contract (`losatok_data` catches it beside
    its own `SchemaError`); the storage layer knows nothing of what the tar holds."""


def split_member_name(name: str) -> tuple[str, str]:
    """`"abc-1.latent.npy"` -> `("abc-1", "latent.npy")`, as WebDataset splits it."""
    directory, _, base = name.rpartition("/")
    key, dot, ext = base.partition(".")
    if not dot or not key or not ext:
        raise TarReadError(f"member {name!r} is not named <key>.<extension>")
    return (f"{directory}/{key}" if directory else key), ext


def iter_tar_samples(
    f: IO[bytes],
    name: str = "tar",
    *,
    strict: bool = True,
    on_stray: Callable[[str], None] | None = None,
) -> Iterator[dict[str, bytes | str]]:
    """WebDataset samples `{"__key__": key, ext: bytes, ...}` of a tar stream, in order.

    The tar is streamed (`f` needs only `read`): one sample's members are in memory at a time.

    strict (our own shards): raises TarReadError (naming `name`) for a truncated or corrupt
    archive, a member shorter than its header says, a member not named `<key>.<ext>`, a key
    whose members are not adjacent, or a repeated member.
    lenient (`strict=False`, tars as public corpora ship them): the tar may be compressed; a
    member that cannot belong to a sample (a name without an extension, a hidden file such as
    macOS's `._x.wav`) is passed to `on_stray` and left out; extensions are lower-cased; a key
    whose members are split by another key's is yielded once per run of members (the caller
    decides which to keep); a repeated member replaces the earlier one; tarfile's own errors
    propagate as they are.
    A transient storage error is raised as it is in both modes: the caller may read again.
    """
    seen: set[str] = set()
    current: dict[str, bytes | str] | None = None
    try:
        with tarfile.open(fileobj=f, mode="r|" if strict else "r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                directory, _, base = member.name.rpartition("/")
                stem, dot, ext = base.partition(".")
                if not strict and (not dot or not stem):
                    if on_stray is not None:
                        on_stray(member.name)
                    continue
                key, ext = (
                    split_member_name(member.name)
                    if strict
                    else (f"{directory}/{stem}" if directory else stem, ext.lower())
                )
                data = tar.extractfile(member).read()
                if strict and len(data) != member.size:
                    raise TarReadError(f"{name}: member {member.name} has {len(data)} of {member.size} bytes")
                if current is None or current["__key__"] != key:
                    if current is not None:
                        yield current
                    if strict and key in seen:
                        raise TarReadError(f"{name}: key {key!r} appears again after other keys")
                    seen.add(key)
                    current = {"__key__": key}
                if strict and ext in current:
                    raise TarReadError(f"{name}: member {member.name} appears twice")
                current[ext] = data
    except (tarfile.TarError, EOFError, OSError) as error:
        if not strict or is_transient(error):  # the storage failed, not the tar: the caller may read it again
            raise
        raise TarReadError(f"{name}: unreadable tar ({type(error).__name__}: {error})") from None
    if current is not None:
        yield current


def check_tar_end(fs: fsspec.AbstractFileSystem, path: str) -> str | None:
    """None if the file ends like a complete tar, else what is wrong.

    tarfile's stream reader takes an archive cut exactly at a member boundary for a shorter
    complete one; the end-of-archive marker (two zero blocks, written on close) tells them apart.
    """
    size = fs.size(path)
    if size < 2 * BLOCK or size % BLOCK:
        return f"size {size} bytes is not a whole number of {BLOCK}-byte tar blocks (truncated?)"
    tail = fs.cat_file(path, start=size - 2 * BLOCK, end=size)
    if tail.count(0) != len(tail):
        return "no end-of-archive marker (truncated?)"
    return None


class TarSampleWriter:
    """Writes WebDataset samples to a tar stream on an open binary file object."""

    def __init__(self, f: IO[bytes]) -> None:
        # "w|" streams: nothing is seeked, so the file may be an upload to object storage.
        self._tar = tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115 (closed in close)
        self.bytes_written = 0

    def write(self, key: str, members: Mapping[str, bytes]) -> None:
        """Write `<key>.<ext>` for each (ext, bytes) of `members`, in their order."""
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = _MTIME
            info.mode = 0o444
            self._tar.addfile(info, io.BytesIO(data))
            self.bytes_written += len(data)

    def close(self) -> None:
        self._tar.close()  # writes the end-of-archive marker; does not close the file

    def abandon(self) -> None:
        """Drop the stream without writing its buffered tail (the file is being discarded).

        Without this the tar stream flushes on garbage collection, into a closed file.
        """
        self._tar.fileobj.closed = True  # the _Stream: its close() is then a no-op
        self._tar.closed = True
