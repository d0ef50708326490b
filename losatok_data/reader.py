"""Reading a latent dataset: card (version-checked first), index, committed shards, samples.

```
ds = open_dataset("s3://bucket/corpus-v1", {"endpoint_url": ...})
ds.card.frame_rate, ds.shards()            # committed shards with sample counts and seconds
ds.index_of([3, 7], ["key", "duration"])   # index rows of two shards only, two columns
for sample in ds.iter_shard(0):            # latent group only: semantic tars never opened
    sample.latent                          # (T, latent_dim) float16
for sample in ds.iter_shard(0, groups=("latent", "semantic")):
    sample.semantic                        # (T, semantic_dim), joined by key
old = open_dataset(url, generation=1)      # pinned: the shards of generations 1..1 only
```

A dataset grows by generations (appends, listed in the card). A reader sees every committed
shard by default; pinned to generation k it sees the shards of generations 1..k, the same
set on every read however much was appended since.

`shards()` reads `shards.parquet` (one row per shard) and only the fragments of committed
shards it lacks, never the whole index: every training rank calls it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from losatok_data.card import DatasetCard, Totals, read_card
from losatok_data.checksums import checksum
from losatok_data.errors import SchemaError
from losatok_data.fields import LATENT_GROUP
from losatok_data.index import (
    ShardInfo,
    fragment_checksum,
    read_fragments,
    read_index,
    read_shard_summary,
    summarise_shards,
)
from losatok_data.layout import DatasetLayout, shard_name, shard_number
from losatok_data.ledger import read_failures
from losatok_data.sample import LatentSample, decode_sample
from losatok_data.stats import ChannelStats
from losatok_storage.cache import FileCache
from losatok_storage.filesystem import read_parquet_file
from losatok_storage.paths import is_remote
from losatok_storage.retry import RetryPolicy, iter_resuming
from losatok_storage.tario import iter_tar_samples

log = logging.getLogger(__name__)


class DatasetReader:
    """Read access to one dataset. Only committed shards (with an index fragment) are seen."""

    def __init__(
        self,
        layout: DatasetLayout,
        card: DatasetCard,
        generation: int | None = None,
        cache: FileCache | None = None,
    ) -> None:
        self.layout = layout
        self.card = card
        self.cache = cache if is_remote(layout.url) else None  # local copies of remote tars
        self.generation = generation  # None: the whole dataset
        self._end: int | None = None  # one past the last shard number seen when pinned
        if generation is not None:
            numbers = [g.number for g in card.generations]
            if generation not in numbers:
                raise SchemaError(
                    f"{layout.url} has no generation {generation}; its card lists {numbers or 'none'}"
                )
            self._end = max(g.end_shard for g in card.generations if g.number <= generation)
        self._index: pa.Table | None = None
        self._shards: list[ShardInfo] | None = None

    def committed(self) -> list[int]:
        """Numbers of the committed shards this reader sees (all, or those of the pinned generations)."""
        numbers = list(self.layout.committed_shards())
        return numbers if self._end is None else [n for n in numbers if n < self._end]

    def index(self) -> pa.Table:
        """The index (one row per sample of every shard this reader sees), cached."""
        if self._index is None:
            self._index = read_index(self.layout, None if self._end is None else self.committed())
        return self._index

    def shards(self) -> list[ShardInfo]:
        """Committed shards (of the pinned generations) with per-shard samples, frames and
        seconds, in shard order, cached. A committed shard with no samples has zero counts.

        From `shards.parquet` where it has the shard; a committed shard it lacks (a run killed
        before finalising, data older than the file) is summarised from its own fragment, and
        its rows of shards not committed are ignored. Never reads the whole index.
        """
        if self._shards is None:
            committed = self.committed()
            known = read_shard_summary(self.layout) or {}
            missing = [n for n in committed if n not in known]
            if missing:
                log.info(
                    "%d of %d committed shards of %s are not in shards.parquet; summarised them "
                    "from their index fragments",
                    len(missing),
                    len(committed),
                    self.layout.url,
                )
                known = {**known, **{s.number: s for s in summarise_shards(self.layout, missing)}}
            self._shards = [known[n] for n in committed]
        return list(self._shards)

    def index_of(self, numbers: Iterable[int], columns: Sequence[str] | None = None) -> pa.Table:
        """Index rows of the shards `numbers` only: shard by shard in the order given, rows in
        written order within a shard; only `columns` (None: all). Columns that older fragments
        lack read as nulls. KeyError for a shard this reader does not see.
        """
        numbers = list(numbers)
        seen = {s.number for s in self.shards()}
        unseen = [n for n in numbers if n not in seen]
        if unseen:
            raise KeyError(
                f"shards {unseen} are not among the committed shards this reader of {self.layout.url} sees"
            )
        return read_fragments(self.layout, [self.layout.index_path(n) for n in numbers], columns)

    def iter_raw(self, number: int, group: str = LATENT_GROUP) -> Iterator[dict[str, Any]]:
        """Undecoded members `{"__key__", ext: bytes}` of one group's tar of one shard."""
        path, name = self.layout.tar_path(group, number), f"{group}/{shard_name(number)}.tar"
        if self.cache is not None:  # a whole local copy, checked against the index once fetched
            intact = lambda local: self.tar_intact(number, group, local)  # noqa: E731
            with self.cache.open(self.layout.fs, path, verify=intact) as handle:
                yield from iter_tar_samples(handle, name=name)
            return
        # a connection cut part-way reopens the tar and skips the samples already read
        yield from iter_resuming(
            lambda: self.layout.fs.open(path, "rb"),
            lambda f: iter_tar_samples(f, name=name),
            f"read {self.layout.url_of(path)}",
            self.layout.fs.policy,
        )

    def tar_intact(self, number: int, group: str, local_path: str) -> bool:
        """Whether the tar at `local_path` holds exactly the members the index lists for shard
        `number` of `group`, each with its checksum (fragments without checksums: the keys only).
        For a local copy of a remote tar, before it is trusted."""
        table = read_parquet_file(self.layout.fs, self.layout.index_path(number))
        algorithm = fragment_checksum(table)
        sums = table.column("checksums").to_pylist() if "checksums" in table.column_names else None
        wanted = dict(zip(table.column("key").to_pylist(), sums or [None] * table.num_rows, strict=True))
        try:
            with open(local_path, "rb") as handle:
                for members in iter_tar_samples(handle, name=local_path):
                    key = members.pop("__key__")
                    if key not in wanted:
                        return False
                    digests = dict(wanted.pop(key) or {})
                    if algorithm is None or not digests:
                        continue
                    for member, data in members.items():
                        if digests.get(member) != checksum(data, algorithm):
                            return False
        except (OSError, ValueError):
            return False
        return not wanted

    def iter_shard(
        self, number: int, groups: Iterable[str] = (LATENT_GROUP,), validate: bool = True
    ) -> Iterator[LatentSample]:
        """Samples of shard `number`, in written order, with the fields of `groups`.

        Groups other than latent are joined by key, walking their tars in lockstep: they hold
        the same keys in the same order (a mismatch raises SchemaError).
        `validate=False` skips the frame-rate check of durations (shapes are always checked).
        """
        groups = list(dict.fromkeys([LATENT_GROUP, *groups]))
        missing = [g for g in groups if g not in self.card.fields.groups()]
        if missing:
            raise SchemaError(f"dataset has no field group {missing}; it has {self.card.fields.groups()}")
        streams = [self.iter_raw(number, g) for g in groups]
        frame_rate = self.card.frame_rate if validate else None
        try:
            for parts in _lockstep(streams, groups, shard_name(number)):
                members = {k: v for part in parts for k, v in part.items()}
                yield decode_sample(members, self.card.fields, frame_rate=frame_rate, groups=groups)
        finally:
            for s in streams:
                s.close()

    def iter_samples(
        self, shards: Iterable[int] | None = None, groups: Iterable[str] = (LATENT_GROUP,)
    ) -> Iterator[LatentSample]:
        """Samples of the given (default: all committed) shards, shard by shard."""
        numbers = [s.number for s in self.shards()] if shards is None else list(shards)
        for number in numbers:
            yield from self.iter_shard(number, groups)

    def latent_stats(self, number: int) -> ChannelStats:
        """Per-channel stats of shard `number`'s stored latents, in written order (as the
        writer computes them), read back from its tar: what its stats fragment should hold."""
        stats = ChannelStats.empty(self.card.fields["latent"].frame_shape[0])
        for sample in self.iter_shard(number, validate=False):
            stats = stats.update(sample.arrays["latent"])
        return stats

    def find(self, key: str) -> dict[str, Any]:
        """The index row of `key`; KeyError if no committed shard holds it."""
        rows = self.index().filter(pc.equal(self.index().column("key"), key)).to_pylist()
        if not rows:
            raise KeyError(f"no sample with key {key!r} in the index of {self.layout.url}")
        return rows[0]

    def sample(self, key: str, groups: Iterable[str] = (LATENT_GROUP,)) -> LatentSample:
        """One sample by key (reads its shard up to the sample)."""
        number = shard_number(self.find(key)["shard"])
        for sample in self.iter_shard(number, groups):
            if sample.key == key:
                return sample
        raise SchemaError(f"{key!r} is in the index of {shard_name(number)} but not in its tar")

    def failures(self) -> pa.Table:
        """The failure ledger (all fragments) as one table."""
        return read_failures(self.layout)

    def measured_totals(self) -> Totals:
        """Totals measured from the index and the committed shards' tar sizes (for the card)."""
        table = self.index()
        committed = self.committed()
        by_group: dict[str, int] = {}
        for group in self.card.fields.groups():
            tars = self.layout.tars(group)
            by_group[group] = sum(self.layout.fs.size(tars[n]) for n in committed if n in tars)
        seconds = pc.sum(table.column("duration")).as_py() or 0.0
        return Totals(
            samples=table.num_rows,
            frames=int(pc.sum(table.column("frame_count")).as_py() or 0),
            hours=seconds / 3600.0,
            shards=len(committed),
            bytes=sum(by_group.values()),
            bytes_by_group=by_group,
        )


def open_dataset(
    url: str,
    storage_options: Mapping[str, Any] | None = None,
    generation: int | None = None,
    retry: RetryPolicy | None = None,
    cache: FileCache | None = None,
) -> DatasetReader:
    """Open the dataset at `url` (local path or s3:// prefix), reading and checking its card.

    `generation`: see only the shards of generations 1..generation (None: every committed shard).
    `retry`: how long each storage call may keep failing transiently (None: the default policy).
    `cache`: keep whole copies of a remote dataset's tars on local disk (checked against the
    index's checksums when fetched) and read them from there.
    Raises FileNotFoundError without a card, SchemaVersionError for an unreadable version and
    SchemaError for a generation the card does not list.
    """
    layout = DatasetLayout(url, dict(storage_options or {}), retry)
    return DatasetReader(layout, read_card(layout), generation, cache)


def _lockstep(streams: list[Iterator[dict]], groups: list[str], shard: str) -> Iterator[list[dict]]:
    while True:
        parts = [next(s, None) for s in streams]
        if all(p is None for p in parts):
            return
        keys = [p["__key__"] if p is not None else None for p in parts]
        if len(set(keys)) != 1:
            pairs = ", ".join(f"{g}: {k}" for g, k in zip(groups, keys))
            raise SchemaError(f"{shard}: field groups disagree on the next key ({pairs})")
        yield parts
