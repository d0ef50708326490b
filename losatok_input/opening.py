"""Opening an input for reading: local files as they are, remote objects as seekable fsspec
files that read by range requests (never a whole-object download), and a reader that remembers
the storage's first error, so a decoder's failure can be told from a storage outage."""

from __future__ import annotations

from typing import Any

import fsspec

from losatok_storage.paths import is_remote, local_path

# Remote reads: FFmpeg asks for small pieces (tens of kB); each miss fetches this much more
# ahead. 1 MiB keeps a request's latency small against its transfer on S3, and the bytes
# fetched for a sparse span within ~1 MiB of the span itself (bench/decode_spans.py).
READ_BLOCK_BYTES = 1 << 20
# A remote object up to this size, whose size the listing gave, is read whole in one GET: no
# HEAD, no ranges. Below it a round trip (tens of ms on a real store) costs more than the bytes
# the decoder would skip; 16 MiB is about 8 min of 16-bit 16 kHz wav or 17 min of 128 kbit/s mp3.
WHOLE_OBJECT_BYTES = 16 << 20


class RecordingReader:
    """A binary file object that remembers the first I/O error it raised.

    FFmpeg turns a failed read into a generic decode error; this lets the decode stage tell
    "the storage failed" (transient: retry, else a `read` failure) from "the bytes are bad".
    """

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.error: Exception | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return self.handle.read(size)
        except Exception as err:
            self.error = self.error or err
            raise

    def seek(self, offset: int, whence: int = 0) -> int:
        try:
            return self.handle.seek(offset, whence)
        except Exception as err:
            self.error = self.error or err
            raise

    def tell(self) -> int:
        return self.handle.tell()

    def read_range(self, start: int, end: int) -> bytes:
        """Bytes [start, end) in one request for exactly them (an fsspec file's filesystem
        fetches the range; the file's read-ahead block would add up to READ_BLOCK_BYTES)."""
        try:
            fs, path = getattr(self.handle, "fs", None), getattr(self.handle, "path", None)
            if fs is not None and path is not None:
                return fs.cat_file(path, start=start, end=min(end, self.size))
            self.handle.seek(start)
            return self.handle.read(end - start)
        except Exception as err:
            self.error = self.error or err
            raise

    @property
    def size(self) -> int:
        size = getattr(self.handle, "size", None)
        return size if isinstance(size, int) else self.handle.seek(0, 2)

    def close(self) -> None:
        self.handle.close()


def open_remote(location: str, storage_options: dict[str, Any], cache_type: str = "readahead") -> Any:
    """A seekable fsspec file object over `location` that reads by range requests."""
    fs, path = fsspec.core.url_to_fs(location, **storage_options)
    return fs.open(path, "rb", block_size=READ_BLOCK_BYTES, cache_type=cache_type)


def read_whole(location: str, storage_options: dict[str, Any]) -> bytes:
    """The whole of the remote object at `location`, in one GET request."""
    fs, path = fsspec.core.url_to_fs(location, **storage_options)
    # an open range (bytes=0-): without one s3fs asks for the size first (a HEAD) to decide on
    # concurrent parts
    return fs.cat_file(path, start=0)


def open_tar(location: str, storage_options: dict[str, Any]) -> Any:
    """A tar read front to back: local files as they are, remote ones by streamed range requests."""
    if not is_remote(location):
        return open(local_path(location), "rb")
    return open_remote(location, storage_options)
