"""The commit stage: each unit becomes one shard of the latent dataset (`losatok_data` layout), exactly once.

A unit commits in this order: its failure-ledger fragment, its tars and stats, its index
fragment (the commit point). Whatever a killed run left past the last commit point is removed
by `SinkDataset.remove_uncommitted` (`pipelines.sink`) before a rerun writes anything.
No torch here: a worker that only commits stays small and starts fast.

A unit of long inputs arrives as several *windows* (payloads of a few minutes of segments
each, so a worker's memory stays bounded), at different commit actors, in any order, perhaps
more than once. Each window is kept as a *part* in the pipeline's own folder,

```
<root>/parts/shard-000012/
  window-000000.<token>.latent.tar     the window's samples, one tar per field group; the
  window-000000.<token>.semantic.tar   token is new for every delivery, so a part's tars never
                                       change once written
  window-000000.json                   its manifest, written last: the tars it names, their
  window-000001.last.json              index rows, per-sample latent stats, failures
```

and whichever commit finds every manifest there (windows 0..K, K's name saying `.last`)
*assembles* the shard: the ledger fragment, each group's tar as the part tars' members copied
in window order under one end-of-archive marker, the stats, the index fragment. The result is
byte for byte the shard `commit_unit` writes from the same samples. Two commits may assemble
at once: both write the same bytes, each file atomically. Parts are never deleted here (another
assembler may be reading them); the driver removes the folder (`SinkDataset.remove_parts`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import tarfile
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import IO, Any

import numpy as np

from losatok_data.checksums import DEFAULT_CHECKSUM
from losatok_data.errors import SchemaError
from losatok_data.fields import FieldSet
from losatok_data.index import IndexRow, write_index_fragment
from losatok_data.layout import DatasetLayout, shard_name
from losatok_data.ledger import FailureRecord, write_failures
from losatok_data.sample import LatentSample, SampleMetadata, encode_sample
from losatok_data.stats import ChannelStats, write_stats_fragment
from losatok_data.writer import ShardWriter, write_shard
from losatok_storage.filesystem import open_atomic
from losatok_storage.tario import BLOCK
from pipelines.plan import Unit
from pipelines.records import EncodedSegment, EncodeFailure, Segment, StageStats, UnitSummary, unpack_payload

PARTS_DIR = "parts"  # under the dataset root: windows of units not assembled yet (module docstring)
COPY_CHUNK = 4 << 20  # bytes of a part tar read at a time while assembling: bounded memory
_MANIFEST = re.compile(r"^window-(\d{6})(\.last)?\.json$")
# tarfile ends an archive with two zero blocks, then pads it with zeros to a whole record
_RECORD = tarfile.RECORDSIZE  # 20 blocks, 10240 bytes


class ShardCommitter:
    """Writes units into the dataset at `layout`: shard tars, stats and index fragment, failures;
    a unit that comes in windows, through parts (see the module docstring)."""

    def __init__(self, layout: DatasetLayout, fields: FieldSet, frame_rate: float) -> None:
        self.layout = layout
        self.fields = fields
        self.frame_rate = frame_rate  # latent frames per second

    def commit_unit(
        self,
        unit: Unit,
        encoded: list[tuple[Segment, EncodedSegment]],
        failures: list[FailureRecord],
        stages: StageStats | None = None,
    ) -> UnitSummary:
        """Write one unit's shard; returns its summary (samples, seconds, failures, bytes), with
        `stages` (where and how long it was decoded and encoded) attached."""
        name = shard_name(unit.index)
        failures = [replace(f, writer=name) for f in failures]
        if failures:
            write_failures(self.layout, name, failures)
        samples = [self._sample(segment, result) for segment, result in encoded]
        # write_shard writes the stats fragment before the index fragment (the commit point)
        written = write_shard(self.layout, unit.index, samples, self.fields, frame_rate=self.frame_rate)
        info, tars = written.info, sum(written.bytes_by_group.values())
        return _summary(unit, info.samples, info.seconds, failures, tars, stages or StageStats())

    # --- units in windows ------------------------------------------------------------------
    def commit_window(
        self,
        unit: Unit,
        window: int,
        last: bool,
        encoded: list[tuple[Segment, EncodedSegment]],
        failures: list[FailureRecord],
        stages: StageStats | None = None,
    ) -> list[UnitSummary]:
        """Keep window `window` (0-based; `last`: the unit's final one) of `unit` as a part, and
        assemble the unit's shard if every window's part is there now.

        Returns a partial row (`complete=False`, zero counts, this window's `stages`), and, when
        this call assembled the shard, the unit's complete row after it. A window delivered
        again writes no part (the first delivery's manifest is there; this one may still
        assemble, if that one died first); one of a committed shard writes nothing. Keys must
        be unique across the unit's windows, and a window never splits a sample.
        """
        partial = UnitSummary(
            unit=unit.index,
            inputs=0,
            samples=0,
            audio_seconds=0.0,
            failures=0,
            transient=0,
            bytes=0,
            stages=stages or StageStats(),
            complete=False,
        )
        if self._committed(unit.index):  # a retried window of an assembled unit
            return [partial]
        names = self._part_names(unit.index)
        if _manifest_name(window, last) not in names:  # else an earlier delivery wrote it whole
            self._write_part(unit, window, last, encoded, failures)
            names.add(_manifest_name(window, last))
        windows = windows_ready(names)
        if windows is None or self._committed(unit.index):
            return [partial]
        return [partial, self.assemble(unit, windows)]

    def parts_path(self, number: int, *name: str) -> str:
        """The folder of shard `number`'s parts (or a file `name` in it)."""
        return self.layout.path(PARTS_DIR, shard_name(number), *name)

    def windows_ready(self, number: int) -> int | None:
        """How many windows shard `number` has when every one's manifest is there, else None."""
        return windows_ready(self._part_names(number))

    def assemble(self, unit: Unit, windows: int, chunk_bytes: int = COPY_CHUNK) -> UnitSummary:
        """Write `unit`'s shard from its parts of windows 0..`windows`-1: the ledger fragment, each
        group's tar (the parts' members in window order, copied `chunk_bytes` at a time, then one
        end-of-archive marker), the stats fragment, and last the index fragment (the commit point).

        Returns the unit's complete row (whole-unit counts, empty `stages`). Safe to run twice at
        once: parts are only read, and every file is written whole with the same bytes.
        """
        name = shard_name(unit.index)
        manifests = [self._read_manifest(unit.index, w, w == windows - 1) for w in range(windows)]
        rows = [IndexRow(**{**r, "fields": tuple(r["fields"])}) for m in manifests for r in m["rows"]]
        twice = sorted(k for k, n in Counter(r.key for r in rows).items() if n > 1)
        if twice:
            raise SchemaError(f"{name}: keys {twice[:3]} are in more than one window")
        failures = [replace(_failure(f), writer=name) for m in manifests for f in m["failures"]]
        if failures:
            write_failures(self.layout, name, failures)
        sizes = {}
        for group in self.fields.groups():
            parts = [
                (self.parts_path(unit.index, m["tars"][group]["name"]), m["tars"][group]["content_bytes"])
                for m in manifests
            ]
            sizes[group] = self._join_tars(parts, self.layout.tar_path(group, unit.index), chunk_bytes)
        # sample by sample in the order write_shard merges them: the same float64 rounding
        stats = ChannelStats.empty(self.fields["latent"].frame_shape[0])
        for item in (s for m in manifests for s in m["stats"]):
            stats = stats.merge(ChannelStats(item["count"], np.asarray(item["mean"]), np.asarray(item["m2"])))
        write_stats_fragment(self.layout, unit.index, stats)
        write_index_fragment(self.layout, unit.index, rows, DEFAULT_CHECKSUM)
        seconds = sum(r.duration for r in rows)  # as write_shard sums it
        return _summary(unit, len(rows), seconds, failures, sum(sizes.values()), StageStats())

    def _write_part(
        self,
        unit: Unit,
        window: int,
        last: bool,
        encoded: list[tuple[Segment, EncodedSegment]],
        failures: list[FailureRecord],
    ) -> None:
        """One tar per field group of the window's samples, then its manifest (which makes the
        part exist). The tars' names carry a token new to this delivery, so a part a concurrent
        assembler reads is never rewritten under it."""
        name, token = shard_name(unit.index), uuid.uuid4().hex[:12]
        latent_dtype = self.fields["latent"].dtype
        writers = [
            _PartTarWriter(
                self.layout, group, unit.index, self.fields,
                self.parts_path(unit.index, f"window-{window:06d}.{token}.{group}.tar"),
            )
            for group in self.fields.groups()
        ]  # fmt: skip
        rows, stats, seen = [], [], set()
        with contextlib.ExitStack() as stack:  # every tar appears on a clean exit, none on an error
            for w in writers:
                stack.enter_context(w)
            for segment, result in encoded:
                sample = self._sample(segment, result)
                if sample.key in seen:
                    raise SchemaError(f"{name}: key {sample.key!r} written twice")
                seen.add(sample.key)
                members = encode_sample(sample, self.fields, frame_rate=self.frame_rate)
                for w in writers:
                    w.write(members)
                rows.append(
                    IndexRow.of(
                        sample, name, {m: d for w in writers for m, d in w.checksums[sample.key].items()}
                    )
                )
                one = ChannelStats.of(np.asarray(sample.latent).astype(latent_dtype))
                stats.append({"count": one.count, "mean": one.mean.tolist(), "m2": one.m2.tolist()})
        for w in writers:
            w.check_end()
        manifest = {
            "unit": unit.index,
            "window": window,
            "last": last,
            "tars": {
                w.group: {"name": w.path.rsplit("/", 1)[1], "content_bytes": w.content_bytes} for w in writers
            },
            "rows": [asdict(r) for r in rows],
            # per sample, not merged: the assembler merges them in write_shard's order, so the
            # shard's stats are bit for bit those of a shard written in one go
            "stats": stats,
            "failures": [{**asdict(f), "time": f.time.isoformat()} for f in failures],
        }
        # json writes floats as their shortest repr: they read back exactly
        with open_atomic(self.layout.fs, self.parts_path(unit.index, _manifest_name(window, last))) as f:
            f.write(json.dumps(manifest).encode())

    def _read_manifest(self, number: int, window: int, last: bool) -> dict[str, Any]:
        manifest = json.loads(self.layout.fs.cat_file(self.parts_path(number, _manifest_name(window, last))))
        if (manifest["unit"], manifest["window"], manifest["last"]) != (number, window, last):
            raise SchemaError(f"{shard_name(number)}: part manifest of window {window} names {manifest}")
        return manifest

    def _join_tars(self, parts: list[tuple[str, int]], target: str, chunk_bytes: int) -> int:
        """Write at `target` the tar holding the members of `parts` ((path, bytes before its
        end-of-archive marker) each), in order, ended as tarfile ends one; returns its size."""
        with open_atomic(self.layout.fs, target) as out:
            content = sum(
                copy_range(self.layout.fs, path, out, length, chunk_bytes) for path, length in parts
            )
            tail = end_of_archive(content)
            out.write(tail)
        return content + len(tail)

    def _part_names(self, number: int) -> set[str]:
        try:
            return {p.rsplit("/", 1)[-1] for p in self.layout.fs.ls(self.parts_path(number), detail=False)}
        except FileNotFoundError:
            return set()

    def _committed(self, number: int) -> bool:
        return self.layout.fs.exists(self.layout.index_path(number))

    def _sample(self, segment: Segment, result: EncodedSegment) -> LatentSample:
        meta = dict(segment.metadata)
        if meta.get("tags") is not None:
            meta["tags"] = tuple(meta["tags"])
        metadata = SampleMetadata(
            source=segment.location,
            offset=segment.offset,
            duration=segment.duration,
            sample_rate=segment.sample_rate,
            frame_count=result.frames,
            segment=int(segment.key.rsplit("_", 1)[1]),
            **meta,
            **segment.measures,
        )
        return LatentSample(segment.key, metadata, result.arrays)


class _PartTarWriter(ShardWriter):
    """A `ShardWriter` whose tar goes to a part's `path`, counting the bytes its members take
    (`content_bytes`: where its end-of-archive marker begins, what assembling copies)."""

    def __init__(self, layout: DatasetLayout, group: str, number: int, fields: FieldSet, path: str) -> None:
        super().__init__(layout, group, number, fields)
        self.path = path  # before __enter__, which opens it
        self.content_bytes = 0

    def write(self, members: Mapping[str, Any]) -> None:
        super().write(members)
        key = members["__key__"]
        self.content_bytes += sum(member_bytes(f"{key}.{m}", len(members[m])) for m in self.checksums[key])

    def check_end(self) -> None:
        """Raise unless the tar written ends, right after `content_bytes`, with exactly tarfile's
        ending (one small read): else the count above no longer matches how `TarSampleWriter`
        writes members, and assembling would copy a cut member or stray zero blocks."""
        tail = self.layout.fs.cat_file(self.path, start=self.content_bytes)
        if tail != end_of_archive(self.content_bytes):
            raise RuntimeError(f"{self.path}: members do not take the {self.content_bytes} bytes counted")


def member_bytes(name: str, size: int) -> int:
    """Bytes a member named `name` of `size` bytes takes in a PAX tar: its header (a PAX extended
    header first when the name needs one) and its data, padded to whole 512-byte blocks."""
    info = tarfile.TarInfo(name)
    info.size = size
    header = info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
    return len(header) + -(-size // BLOCK) * BLOCK


def end_of_archive(content_bytes: int) -> bytes:
    """What tarfile writes after `content_bytes` of members: two zero blocks, then zeros to a
    whole record (10240 bytes)."""
    return bytes(2 * BLOCK + -(content_bytes + 2 * BLOCK) % _RECORD)


def copy_range(fs: Any, path: str, out: IO[bytes], length: int, chunk_bytes: int = COPY_CHUNK) -> int:
    """Copy bytes [0, `length`) of the file at `path` on `fs` to `out`, one range read of at most
    `chunk_bytes` at a time (each retried by a `RetryingFileSystem`), so memory holds one chunk
    whatever the file's size. Returns `length`; raises OSError if the file is shorter."""
    offset = 0
    while offset < length:
        end = min(offset + chunk_bytes, length)
        data = fs.cat_file(path, start=offset, end=end)
        if len(data) != end - offset:
            raise OSError(f"{path}: {offset + len(data)} bytes where {length} were written")
        out.write(data)
        offset = end
    return length


def windows_ready(names: set[str]) -> int | None:
    """Given the file names in a shard's parts folder: the number of windows K + 1 when the
    manifests of windows 0..K are all there and K's says it is the last, else None."""
    found, last = set(), None
    for name in names:
        match = _MANIFEST.match(name)
        if match:
            found.add(int(match.group(1)))
            if match.group(2):
                last = int(match.group(1))
    if last is None or not found.issuperset(range(last + 1)):
        return None
    return last + 1


def _summary(
    unit: Unit, samples: int, seconds: float, failures: list[FailureRecord], tars: int, stages: StageStats
) -> UnitSummary:
    """The complete row of a committed unit: `tars` bytes of shard tars, every field group."""
    return UnitSummary(
        unit=unit.index,
        inputs=len(unit.items),
        samples=samples,
        audio_seconds=seconds,
        failures=len({f.location for f in failures}),
        transient=len({f.input_id for f in failures if f.transient}),  # the storage failed
        bytes=tars,
        stages=stages,
    )


def _manifest_name(window: int, last: bool) -> str:
    return f"window-{window:06d}{'.last' if last else ''}.json"


def _failure(record: dict[str, Any]) -> FailureRecord:
    return FailureRecord(**{**record, "time": dt.datetime.fromisoformat(record["time"])})


def commit_stage(batch: dict[str, np.ndarray], committer: ShardCommitter) -> dict[str, list]:
    """The commit stage (`CommitStage` actors run it): write each unit's shard, index fragment
    and failures, atomically; one `UnitSummary` row per unit.

    A payload is `(unit, window, last, segments, results, failures, stages)`: a whole unit
    (`window == 0 and last`) commits at once, one complete row; a window of one becomes a part
    (`ShardCommitter.commit_window`): a partial row, and the unit's complete row from the call
    that assembles it (more than one call may: the driver keeps one per unit).
    """
    summaries = []
    for blob in batch["payload"]:
        unit, window, last, segments, results, failures, stages = unpack_payload(blob)
        encoded = []
        for segment, result in zip(segments, results, strict=True):
            if isinstance(result, EncodeFailure):
                failures.append(
                    FailureRecord(segment.location, "encode", "EncodeFailure", str(result), key=segment.key)
                )
            else:
                encoded.append((segment, result))
        if window == 0 and last:
            summaries.append(committer.commit_unit(unit, encoded, failures, stages))
        else:
            summaries.extend(committer.commit_window(unit, window, last, encoded, failures, stages))
    return UnitSummary.to_batch(summaries)


class CommitStage:
    """Ray actor body around `commit_stage`: commits run in processes of their own.

    Not tasks: a commit task op at a fraction of a CPU made Ray Data's resource budget hold back
    decode tasks, and its extra worker processes came and went, so that decode tasks landed on
    fresh workers and paid for importing torch (bench/pipeline_feed.py; docs/benchmarks.md).
    """

    def __init__(self, committer: ShardCommitter) -> None:
        self.committer = committer

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        return commit_stage(batch, self.committer)
