"""Training batches from latent datasets: planned per rank, frame-budgeted, normalised, resumable.

`LatentBatches` is the torch IterableDataset behind `LatentLoader`: it holds the epoch's
position (epoch, segment, the segment's base progress, batches taken per stream), plans this
rank's streams from the per-shard summaries and the index rows of its own shards, and yields
the batches still to come. It never reads the whole index. Without a process group (tests that
simulate ranks in one process) ranks agree on the batch count by planning every rank.

A corrupt shard or sample is counted, warned about and skipped; its batch goes out without it.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from jobs.data.config import LoaderConfig
from jobs.data.plan import (
    Catalog,
    Progress,
    StreamPlan,
    Units,
    bucket,
    deal,
    epoch_units,
    equalise,
    stream_rows,
)
from jobs.data.sources import DatasetMismatchError, open_sources
from losatok_data.errors import SchemaError
from losatok_data.fields import SEMANTIC_GROUP
from losatok_data.sample import LatentSample, decode_sample
from losatok_storage.cache import FileCache
from losatok_storage.retry import RetryPolicy

log = logging.getLogger(__name__)


@dataclass
class Batch:
    latents: torch.Tensor  # (B, T, C) float32, normalised
    mask: torch.Tensor  # (B, T) bool, True on valid frames
    texts: list[str]  # conditioning text per item ("" when the sample has none)
    keys: list[str]  # empty for a padding batch
    semantic: torch.Tensor | None = None  # (B, T, S) float32 targets of the alignment loss
    datasets: list[int] | None = None  # index in the run's datasets, per item
    weight: float = 1.0  # 0.0: padding that keeps the ranks in step; train on it with loss x 0
    stream: int = 0  # which of this rank's streams made it, and its index there (the position)
    index: int = 0


class LatentBatches(torch.utils.data.IterableDataset):
    """One rank's batches of the current epoch, from its position on (see `LatentLoader`)."""

    def __init__(
        self,
        config: LoaderConfig,
        latent_dim: int,
        rank: int = 0,
        world_size: int = 1,
        semantic_dim: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.config = config
        # a shard read cut by an outage is reopened where it stopped; past `retry`'s budget the
        # TransientStorageError ends the run (a rerun resumes), it does not skip the shard
        self.cache = shard_cache(config)
        self.sources = open_sources(config, latent_dim, semantic_dim, retry, self.cache)
        self.rank, self.world_size = rank, world_size
        self.streams_per_rank = max(1, config.workers)
        first = self.sources[0].reader.card
        self.width = first.fields["latent"].frame_shape[0]
        self.semantic_dim = (
            first.fields[config.semantic_field].frame_shape[0] if config.semantic_field else None
        )
        joined = config.semantic_field and first.fields[config.semantic_field].group == SEMANTIC_GROUP
        self.groups = ("latent", SEMANTIC_GROUP) if joined else ("latent",)
        self.skipped_samples = 0
        self.skipped_shards = 0
        self.kept = self.dropped = (
            0  # rows of this rank's pieces the filters kept and left out (its last plan)
        )
        # the position: epoch, segment, the segment's base, this rank's batches taken per stream
        self.epoch, self.segment = 0, 0
        self.base = Progress()
        self.taken = [0] * self.streams_per_rank
        self.rotate = 0  # loader worker w serves stream (w + rotate) % streams: resumes keep the order
        self.catalogs: list[Catalog] | None = None  # the datasets' shards, pinned at the epoch's start
        self._plans: list[StreamPlan] | None = None
        self._units: Units | None = None

    # --- the position --------------------------------------------------------------------------
    def units(self) -> Units:
        if self._units is None:
            if self.catalogs is None:
                self.catalogs = [s.catalog() for s in self.sources]
                if not any(len(c.shards) for c in self.catalogs):
                    raise DatasetMismatchError(f"{', '.join(s.spec.path for s in self.sources)}: no samples")
            weights = [s.spec.weight for s in self.sources]
            self._units = epoch_units(self.catalogs, weights, self.config.seed, self.epoch)
        return self._units

    def start_epoch(self, epoch: int) -> None:
        """Move to the start of `epoch`: nothing of it taken, its shards listed when first planned."""
        self.epoch, self.segment, self.base = epoch, 0, Progress()
        self.taken, self.rotate = [0] * self.streams_per_rank, 0
        self.catalogs = self._plans = self._units = None

    def __len__(self) -> int:
        """Batches of the current epoch still to come on this rank (the same on every rank)."""
        return sum(p.batches - t for p, t in zip(self.plans(), self.taken, strict=True))

    # --- the plan --------------------------------------------------------------------------------
    def plans(self) -> list[StreamPlan]:
        """This rank's stream plans of the current segment, padded to the ranks' common count."""
        if self._plans is None:
            own = self._plan_rank(self.rank)
            count = self._agree(sum(p.batches for p in own))
            equalise(own, count)
            self._plans = own
        return self._plans

    def _agree(self, count: int) -> int:
        """The largest batch count of any rank: one all-reduce, or (no process group) by planning
        every rank here."""
        if self.world_size == 1:
            return count
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() == self.world_size:
            device = (
                torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
            )
            value = torch.tensor([count], dtype=torch.int64, device=device)
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
            return int(value.item())
        others = (self._plan_rank(r) for r in range(self.world_size) if r != self.rank)
        return max([count, *(sum(p.batches for p in plans) for plans in others)])

    def _plan_rank(self, rank: int) -> list[StreamPlan]:
        units, c, k = self.units(), self.config, self.streams_per_rank
        dealt = deal(units, self.base, self.world_size * k, c.seed, self.epoch, self.segment)
        plans, kept_rows, all_rows = [], 0, 0
        for w in range(k):
            stream = rank * k + w
            pieces = dealt[stream]
            kept, lengths = self._rows(units, pieces)
            piece_of, row = stream_rows(pieces, kept)
            length = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
            length = np.minimum(length[_flat_index(pieces, kept, piece_of, row)], c.max_frames)
            rng = random.Random(f"{c.seed}-{self.epoch}-{self.segment}-{stream}")
            members, offsets = bucket(length, rng, c.shuffle_buffer, c.batch_frames)
            plans.append(StreamPlan(pieces, piece_of, row, members, offsets))
            kept_rows += len(row)
            all_rows += sum(
                p.stop
                - p.start
                - int(self.base.partial.get(p.unit, np.zeros(0, bool))[p.start : p.stop].sum())
                for p in pieces
            )
        if rank == self.rank:
            self.kept, self.dropped = kept_rows, all_rows - kept_rows
            if self.dropped:
                log.info("epoch %d: rank %d's filters keep %d samples of its shards and leave out %d",
                         self.epoch, rank, self.kept, self.dropped)  # fmt: skip
        return plans

    def _rows(self, units: Units, pieces: list) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per piece: the rows its unit's filters keep and has not settled yet (bool over the
        unit's rows), and the unit's frame counts; one index read per dataset."""
        tables = {}
        samples = {
            (int(units.dataset[p.unit]), int(units.shard[p.unit])): int(units.samples[p.unit]) for p in pieces
        }
        for d, source in enumerate(self.sources):
            numbers = list(
                dict.fromkeys(int(units.shard[p.unit]) for p in pieces if units.dataset[p.unit] == d)
            )
            if numbers:
                table = source.reader.index_of(numbers, source.columns())
                counts = [samples[d, n] for n in numbers]
                if sum(counts) != table.num_rows:
                    raise DatasetMismatchError(
                        f"{source.spec.path}: the index of shards {numbers[:5]}... holds {table.num_rows} rows, "
                        f"its shard summary {sum(counts)}; run losatok-data verify"
                    )
                keep, frames = source.kept(table), table.column("frame_count").to_numpy()
                starts = np.cumsum([0, *counts])
                for i, n in enumerate(numbers):
                    tables[d, n] = (keep[starts[i] : starts[i + 1]], frames[starts[i] : starts[i + 1]])
        kept, lengths = [], []
        for piece in pieces:
            keep, frames = tables[int(units.dataset[piece.unit]), int(units.shard[piece.unit])]
            settled = self.base.partial.get(piece.unit)
            kept.append(keep if settled is None else keep & ~settled)
            lengths.append(frames)
        return kept, lengths

    # --- reading ---------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        plans = self.plans()
        worker = torch.utils.data.get_worker_info()
        if worker is None:  # in the training process: every stream, round robin as a DataLoader would
            iterators = [self._stream(s) for s in range(self.streams_per_rank)]
            iterators = iterators[self.rotate :] + iterators[: self.rotate]
            while iterators:
                for it in list(iterators):
                    batch = next(it, None)
                    if batch is None:
                        iterators.remove(it)
                    else:
                        yield batch
            return
        stream = (worker.id + self.rotate) % self.streams_per_rank
        if worker.id < len(plans):
            yield from self._stream(stream)

    def _stream(self, s: int) -> Iterator[Batch]:
        plan, taken, c = self.plans()[s], self.taken[s], self.config
        stream_id = self.rank * self.streams_per_rank + s
        samples = self._positioned(plan, plan.needed_from(taken))
        arrived: dict[int, LatentSample] = {}
        reached, previous, owed = -1, None, 0
        for index in range(taken, plan.batches):
            positions = plan.batch(index)
            items = None
            if len(positions):
                upto = int(positions.max())
                for position, sample in samples if reached < upto else ():
                    if sample is not None:
                        arrived[position] = sample
                    reached = max(reached, position)
                    if reached >= upto:
                        break
                items = [arrived.pop(int(p)) for p in positions if int(p) in arrived] or None
            rng = random.Random(f"{c.seed}-{self.epoch}-{self.segment}-{stream_id}-{index}-crops")
            if items is None:  # padding, or nothing of it readable: previous items at weight 0
                if previous is None:
                    owed += 1
                    continue
                yield self._collate(previous, rng, s, index, weight=0.0)
                continue
            for back in range(owed, 0, -1):  # owed padding before the first readable batch
                yield self._collate(items, rng, s, index - back, weight=0.0)
            yield self._collate(items, rng, s, index)
            previous, owed = items, 0
        filler = self._filler() if owed else None
        for back in range(owed, 0, -1):  # a stream without a readable sample of its own
            rng = random.Random(
                f"{c.seed}-{self.epoch}-{self.segment}-{stream_id}-{plan.batches - back}-crops"
            )
            yield self._collate(filler, rng, s, plan.batches - back, weight=0.0)

    def _filler(self) -> list[tuple[int, LatentSample]]:
        """One sample to make padding of, for a stream that has none (weight 0: never trained on)."""
        units = self.units()
        for unit in range(len(units)):
            d, number = int(units.dataset[unit]), int(units.shard[unit])
            for _, sample in self._shard_rows(d, number, np.zeros(1, np.int64)):
                return [(d, sample)]
        raise DatasetMismatchError(
            f"{', '.join(src.spec.path for src in self.sources)}: no readable sample in epoch {self.epoch}"
        )

    def _positioned(
        self, plan: StreamPlan, needed: np.ndarray
    ) -> Iterator[tuple[int, tuple[int, LatentSample] | None]]:
        """(position, (dataset, sample)) of the needed positions along the plan; after each piece
        (its last position, None), so a sample lost to corruption never holds its batch back.
        Pieces with nothing needed are not opened."""
        units = self.units()
        starts = np.searchsorted(plan.piece_of, np.arange(len(plan.pieces) + 1))
        for j, piece in enumerate(plan.pieces):
            a, b = int(starts[j]), int(starts[j + 1])
            if a == b:
                continue
            if needed[a:b].any():
                d, number = int(units.dataset[piece.unit]), int(units.shard[piece.unit])
                rows = plan.row[a:b]
                for row, sample in self._shard_rows(d, number, rows[needed[a:b]]):
                    yield a + int(np.searchsorted(rows, row)), (d, sample)
            yield b - 1, None

    def _shard_rows(self, d: int, number: int, rows: np.ndarray) -> Iterator[tuple[int, LatentSample]]:
        """(row, sample) for the given rows of one shard; a bad sample is skipped, an unreadable
        tar ends the shard early."""
        source = self.sources[d]
        card = source.reader.card
        keys = source.reader.index_of([number], ["key"]).column("key").to_pylist()
        wanted = {keys[int(r)]: int(r) for r in rows}
        try:
            if len(self.groups) > 1:  # joined groups are read in lockstep by the reader
                for sample in source.reader.iter_shard(number, self.groups):
                    if sample.key in wanted:
                        yield wanted.pop(sample.key), sample
                    if not wanted:
                        return
                return
            for members in source.reader.iter_raw(number):
                row = wanted.pop(members["__key__"], None)
                if row is None:
                    continue
                try:
                    yield (
                        row,
                        decode_sample(members, card.fields, frame_rate=card.frame_rate, groups=self.groups),
                    )
                except SchemaError as err:
                    self.skipped_samples += 1
                    log.warning("skipping a sample of shard %06d of %s: %s", number, source.spec.path, err)
                if not wanted:
                    return
        except (SchemaError, OSError, EOFError, ValueError) as err:
            self.skipped_shards += 1
            log.warning("skipping the rest of shard %06d of %s: %s", number, source.spec.path, err)

    def _collate(
        self,
        items: list[tuple[int, LatentSample]],
        rng: random.Random,
        stream: int,
        index: int,
        weight: float = 1.0,
    ) -> Batch:
        c = self.config
        lengths = [min(sample.frame_count, c.max_frames) for _, sample in items]
        longest, count = max(lengths), len(items)
        latents = np.zeros((count, longest, self.width), np.float32)
        mask = np.zeros((count, longest), bool)
        semantic = np.zeros((count, longest, self.semantic_dim), np.float32) if c.semantic_field else None
        texts, keys, datasets = [], [], []
        for row, ((d, sample), length) in enumerate(zip(items, lengths)):
            start = 0 if c.crop == "start" else rng.randrange(sample.frame_count - length + 1)
            crop = sample.latent[start : start + length].astype(np.float32)
            source = self.sources[d]
            if source.mean is not None:
                crop = (crop - source.mean) / source.std
            latents[row, :length] = crop
            mask[row, :length] = True
            if semantic is not None:
                semantic[row, :length] = sample.arrays[c.semantic_field][start : start + length]
            meta = sample.metadata
            texts.append(next((getattr(meta, f) for f in c.text_fields if getattr(meta, f, None)), ""))
            keys.append(sample.key)
            datasets.append(d)
        return Batch(
            latents=torch.from_numpy(latents),
            mask=torch.from_numpy(mask),
            texts=texts,
            keys=keys if weight else [],
            semantic=None if semantic is None else torch.from_numpy(semantic),
            datasets=datasets if weight else [],
            weight=weight,
            stream=stream,
            index=index,
        )


def shard_cache(config: LoaderConfig) -> FileCache | None:
    """The node's cache of remote shards that `config` asks for (None: `cache_gb` is 0)."""
    if config.cache_gb <= 0:
        return None
    directory = config.cache_dir or os.path.join(tempfile.gettempdir(), "losatok-shard-cache")
    return FileCache(directory, int(config.cache_gb * 1e9))


def _flat_index(pieces: list, kept: list[np.ndarray], piece_of: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Index into the concatenated per-piece frame arrays of each (piece, row) position."""
    sizes = np.asarray([len(k) for k in kept], np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(sizes) else np.zeros(0, np.int64)
    return starts[piece_of] + row if len(row) else np.zeros(0, np.int64)
