"""Local temporary files that keep the driver's memory independent of the number of inputs.

Planning an append compares every listed input with every planned one, and the run's summary
counts the inputs of the whole dataset; both compare 16-byte key hashes. Held in memory those
take 16 to 33 bytes per input, which put a 2 GB driver's limit at some 60 to 100 million
inputs. Here they go to local temporary files (in `TMPDIR`: about 50 bytes per hash at the
most, and the listing LZ4-compressed) and come back a *bucket* at a time: the entries whose
hashes are equal modulo the number of buckets. Equal hashes always meet in one bucket, and a
bucket holds about `BUCKET_ENTRIES` entries at most, however many there are in all.

- `HashBuckets`: (hash, seq, kind) entries, appended in any number, read back bucket by bucket,
  each sorted by hash (`sort_bucket`);
- `ItemSpill`: listed `InputItem`s kept in listing order, read back in order or by position.

Both write into a folder the caller owns (a `tempfile.TemporaryDirectory`, which removes
whatever is left whether the caller returns or raises).
"""

from __future__ import annotations

import json
import os
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from types import TracebackType

import numpy as np
import pyarrow as pa

from losatok_input.sources import InputItem

# one entry: a 128-bit hash as two 64-bit halves, a sequence number (a listing position, a plan
# row) and a small caller-defined kind; 25 bytes packed
ENTRY = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("seq", "<i8"), ("kind", "u1")])
BUCKET_ENTRIES = 1_000_000  # per bucket: 25 MB of file, ~110 MB of memory while it is compared
MAX_BUCKETS = 500  # files open at once while scattering (limit: often 1024); past 5*10^8 entries buckets grow
SCATTER_ENTRIES = 1 << 20  # entries split into buckets per step: 25 MB


class HashBuckets:
    """Entries appended to one staging file, then scattered into buckets once their count is known.

    The bucket count is chosen from the total (`BUCKET_ENTRIES` per bucket): a small dataset has
    one bucket, read straight from the staging file, through the same code as a large one.
    """

    def __init__(self, folder: str, name: str = "entries") -> None:
        self.folder, self.name = folder, name
        self.count = 0
        self._staging = open(os.path.join(folder, f"{name}.bin"), "wb")  # noqa: SIM115 (closed by __exit__)

    def __enter__(self) -> HashBuckets:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._staging.close()

    def add(self, digests: np.ndarray, seq: np.ndarray | int, kind: np.ndarray | int) -> None:
        """Append (N,) S16 `digests` with their (N,) or scalar `seq` and `kind`."""
        entries = np.empty(len(digests), ENTRY)
        halves = np.ascontiguousarray(digests, "S16").view("<u8").reshape(-1, 2)  # (N, 2)
        entries["hi"], entries["lo"] = halves[:, 0], halves[:, 1]
        entries["seq"], entries["kind"] = seq, kind
        self._staging.write(entries.tobytes())
        self.count += len(entries)

    def buckets(self) -> Iterator[np.ndarray]:
        """Every entry, as (M,) ENTRY arrays of about `BUCKET_ENTRIES` or fewer, each sorted by
        `sort_bucket`; each file is deleted once read."""
        self._staging.close()
        staging = self._staging.name
        number = min(MAX_BUCKETS, max(1, -(-self.count // BUCKET_ENTRIES)))
        paths = [staging] if number == 1 else self._scatter(staging, number)
        for path in paths:
            bucket = np.fromfile(path, ENTRY)
            os.remove(path)
            yield sort_bucket(bucket)

    def _scatter(self, staging: str, number: int) -> list[str]:
        paths = [os.path.join(self.folder, f"{self.name}-{b:04d}.bin") for b in range(number)]
        with ExitStack() as stack, open(staging, "rb") as source:
            files = [stack.enter_context(open(path, "wb")) for path in paths]
            while chunk := source.read(SCATTER_ENTRIES * ENTRY.itemsize):
                entries = np.frombuffer(chunk, ENTRY)
                which = entries["hi"] % np.uint64(number)  # the hash is uniform: so are the buckets
                order = np.argsort(which, kind="stable")
                bounds = np.searchsorted(which[order], np.arange(number + 1, dtype=np.uint64))
                entries = entries[order]
                for b, handle in enumerate(files):
                    handle.write(entries[bounds[b] : bounds[b + 1]].tobytes())
        os.remove(staging)
        return paths


def sort_bucket(entries: np.ndarray) -> np.ndarray:
    """(M,) ENTRY sorted by hash, then kind, then seq: one hash's entries are consecutive, the
    lowest kind first."""
    return entries[np.lexsort((entries["seq"], entries["kind"], entries["lo"], entries["hi"]))]


def hash_starts(entries: np.ndarray) -> np.ndarray:
    """(M,) bool for sorted (M,) ENTRY: the entry is the first of its hash."""
    starts = np.ones(len(entries), bool)
    hi, lo = entries["hi"], entries["lo"]
    starts[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    return starts


ITEM_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("location", pa.string()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("size_bytes", pa.int64()),
        ("metadata", pa.string()),  # JSON, as in the plan
        ("container", pa.string()),
    ]
)


class ItemSpill:
    """`InputItem`s written in batches to a local Arrow file (LZ4), read back in the same order.

    Reads use plain file reads, not a memory map, whose pages would count in the process's RSS.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0
        self._starts: list[int] = []  # position of each batch's first item
        self._file = pa.OSFile(path, "wb")
        options = pa.ipc.IpcWriteOptions(compression="lz4")
        self._writer = pa.ipc.new_file(self._file, ITEM_SCHEMA, options=options)

    def __enter__(self) -> ItemSpill:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if not self._file.closed:
            self._writer.close()
            self._file.close()

    def write(self, items: Sequence[InputItem]) -> None:
        columns = {
            "key": [i.key for i in items],
            "location": [i.location for i in items],
            "start": [i.start for i in items],
            "end": [i.end for i in items],
            "size_bytes": [i.size_bytes for i in items],
            "metadata": [json.dumps(i.metadata, sort_keys=True) for i in items],
            "container": [i.container for i in items],
        }
        self._writer.write_batch(pa.record_batch(columns, schema=ITEM_SCHEMA))
        self._starts.append(self.count)
        self.count += len(items)

    def batches(self) -> Iterator[tuple[int, pa.RecordBatch]]:
        """(position of the first item, the batch of items as Arrow; see `to_items`) for every
        written batch, in order."""
        self.close()
        with pa.OSFile(self.path, "rb") as handle:
            reader = pa.ipc.open_file(handle)
            for number, start in enumerate(self._starts):
                yield start, reader.get_batch(number)

    def item(self, position: int) -> InputItem:
        """The item written at `position` (0-based, in writing order)."""
        self.close()
        number = bisect_right(self._starts, position) - 1
        with pa.OSFile(self.path, "rb") as handle:
            batch = pa.ipc.open_file(handle).get_batch(number)
        return to_items(batch.slice(position - self._starts[number], 1))[0]


def to_items(batch: pa.RecordBatch) -> list[InputItem]:
    """The `InputItem`s of a batch of ITEM_SCHEMA."""
    return [item_of_row(row) for row in batch.to_pylist()]


def item_of_row(row: dict) -> InputItem:
    """An `InputItem` from a row of the item or plan schema (`container`: absent in old plans)."""
    return InputItem(
        key=row["key"],
        location=row["location"],
        start=row["start"],
        end=row["end"],
        size_bytes=row["size_bytes"],
        metadata=json.loads(row["metadata"]),
        container=row.get("container"),
    )
