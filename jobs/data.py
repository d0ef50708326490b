"""Training batches from latent datasets: rank-balanced, frame-budgeted, normalised, never short.

An epoch visits every sample of a rank's share once, and a batch never holds a sample twice.
DDP hangs when one rank runs out of batches before the others, so the batches are planned from
the shared index alone (keys and frame counts, no communication): each rank plans every rank's
epoch (shuffled shard order, length bucketing within a shuffle buffer, the frame budget), takes
the largest count N, and splits its own biggest batches until it has exactly N. Reading then
follows the plan, streaming each shard once and holding only the samples of the buffer.
A corrupt shard or sample is counted, warned about and skipped; its batch goes out without it.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from losatok_data.errors import SchemaError
from losatok_data.fields import SEMANTIC_GROUP
from losatok_data.index import assign_shards
from losatok_data.layout import shard_number
from losatok_data.reader import DatasetReader, open_dataset
from losatok_data.sample import LatentSample, decode_sample
from losatok_data.versioning import SCHEMA_VERSION, parse_version
from losatok_storage.retry import RetryPolicy

log = logging.getLogger(__name__)


class DatasetMismatchError(ValueError):
    """The dataset cannot feed this model (latent width, semantic target, schema version)."""


@dataclass  # not frozen: it is also the schema of the Hydra configs
class LoaderConfig:
    path: str = ""  # dataset root, local or s3://
    storage_options: dict[str, Any] = field(default_factory=dict)
    batch_frames: int = 25 * 60 * 4  # frame budget per batch: B x T_max <= this (4 min of audio)
    max_frames: int = 25 * 20  # random crops of at most 20 s keep attention cost bounded
    shuffle_buffer: int = 64  # samples held for shuffling; batches bucket by length within them
    semantic_field: str | None = None  # "semantic_low" or "semantic": targets of the alignment loss
    text_fields: tuple[str, ...] = ("text", "caption")  # the first present one conditions the sample
    normalize: bool = True  # per-channel (x - mean) / std from the dataset card
    workers: int = 0  # data-loader processes reading shards in parallel (0: read in the training process)
    shards: list[int] | None = None  # only these shard numbers (e.g. a held-out split); None: all
    generation: int | None = None  # pin the dataset as of this generation (see its card); None: all of it
    seed: int = 0


@dataclass
class Batch:
    latents: torch.Tensor  # (B, T, C) float32, normalised
    mask: torch.Tensor  # (B, T) bool, True on valid frames
    texts: list[str]  # conditioning text per item ("" when the sample has none)
    keys: list[str]
    semantic: torch.Tensor | None = None  # (B, T, S) float32 targets of the alignment loss


def open_checked(
    config: LoaderConfig, latent_dim: int, semantic_dim: int | None = None, retry: RetryPolicy | None = None
) -> DatasetReader:
    """Open the dataset and refuse, saying both sides, one this model cannot train on."""
    try:
        # refuses newer majors
        reader = open_dataset(config.path, config.storage_options, config.generation, retry)
    except FileNotFoundError:
        raise DatasetMismatchError(
            f"data.path={config.path}: no latent dataset there (no card.json); losatok-tokenize makes one"
        ) from None
    card = reader.card
    found_major = parse_version(card.schema_version)[0]
    if found_major != parse_version(SCHEMA_VERSION)[0]:
        raise DatasetMismatchError(
            f"{config.path} has schema version {card.schema_version}; this trainer reads {SCHEMA_VERSION}"
        )
    width = card.fields["latent"].frame_shape[0]
    if width != latent_dim:
        raise DatasetMismatchError(
            f"{config.path} holds latents of dimension {width} (tokenizer {card.tokenizer.preset}); "
            f"the model expects latent_dim {latent_dim}"
        )
    if config.semantic_field:
        if config.semantic_field not in card.fields:
            raise DatasetMismatchError(
                f"{config.path} has no {config.semantic_field!r} field for the semantic loss; "
                f"its fields are {card.fields.names()}"
            )
        got = card.fields[config.semantic_field].frame_shape[0]
        if semantic_dim is not None and got != semantic_dim:
            raise DatasetMismatchError(
                f"{config.path} field {config.semantic_field} has dimension {got}; the model's semantic head has {semantic_dim}"
            )
    if config.normalize and card.latent_stats is None:
        raise DatasetMismatchError(f"{config.path} has no latent statistics in its card to normalise with")
    return reader


@dataclass(frozen=True)
class PlannedBatch:
    """Keys of one batch, and the stream position (in the planned order) of its last sample."""

    keys: tuple[str, ...]
    upto: int


@dataclass(frozen=True)
class StreamPlan:
    """One reader's epoch: its shards in read order and its batches in yield order."""

    shards: tuple[int, ...]
    batches: tuple[PlannedBatch, ...]


def plan_stream(
    rows: Mapping[int, list[tuple[str, int]]],
    shards: list[int],
    rng: random.Random,
    shuffle_buffer: int,
    batch_frames: int,
) -> StreamPlan:
    """Batches over `shards` read once in a shuffled order: length bucketing within the buffer.

    `rows[shard]` lists that shard's (key, cropped length in frames) in written order. A random
    sample of the buffer opens each batch; the buffer's samples closest to it in length fill it
    while B x T_max <= batch_frames (at least one item), so padding stays small and order random.
    """
    order = list(shards)
    rng.shuffle(order)
    sequence = [(key, length) for number in order for key, length in rows.get(number, [])]
    # the buffer kept sorted by (length, position): the samples closest in length to the opening
    # one are its neighbours, taken outward from it, so a batch costs O(buffer), not a sort
    pool: list[tuple[int, int, str]] = []  # (length, position, key)
    batches, next_position = [], 0
    while True:
        while len(pool) < max(1, shuffle_buffer) and next_position < len(sequence):
            key, length = sequence[next_position]
            bisect.insort(pool, (length, next_position, key))
            next_position += 1
        if not pool:
            return StreamPlan(tuple(order), tuple(batches))
        first = rng.randrange(len(pool))
        target = longest = pool[first][0]
        low, high = first, first + 1  # pool[low:high] is the batch
        while True:
            left = target - pool[low - 1][0] if low > 0 else None
            right = pool[high][0] - target if high < len(pool) else None
            if left is None and right is None:
                break
            take_left = right is None or (left is not None and left <= right)
            length = max(longest, pool[low - 1][0] if take_left else pool[high][0])
            if length * (high - low + 1) > batch_frames:
                break
            low, high = (low - 1, high) if take_left else (low, high + 1)
            longest = length
        chosen = pool[low:high]
        del pool[low:high]
        batches.append(PlannedBatch(tuple(c[2] for c in chosen), max(c[1] for c in chosen)))


def split_to(plans: list[StreamPlan], count: int) -> list[list[PlannedBatch | None]]:
    """The streams' batches, the biggest ones split into nearly equal parts until there are
    `count` in all; `None` marks a repeat of the batch before it, needed only when a rank has
    fewer samples than `count`. Deterministic: ties go to the earlier stream and batch."""
    pieces = {(s, i): 1 for s, plan in enumerate(plans) for i in range(len(plan.batches))}
    heap = [(-len(b.keys), s, i) for s, plan in enumerate(plans) for i, b in enumerate(plan.batches)]
    heapq.heapify(heap)
    missing = count - len(pieces)
    while missing > 0 and heap and -heap[0][0] > 1:
        _, s, i = heapq.heappop(heap)
        pieces[s, i] += 1
        missing -= 1
        size = len(plans[s].batches[i].keys)
        heapq.heappush(heap, ((-size) // pieces[s, i], s, i))  # minus its largest part after the split
    out: list[list[PlannedBatch | None]] = []
    for s, plan in enumerate(plans):
        batches: list[PlannedBatch | None] = []
        for i, batch in enumerate(plan.batches):
            parts = pieces[s, i]
            bounds = [round(j * len(batch.keys) / parts) for j in range(parts + 1)]
            batches += [PlannedBatch(batch.keys[a:b], batch.upto) for a, b in zip(bounds, bounds[1:])]
        out.append(batches)
    for index in range(max(0, missing)):  # fewer samples than batches: repeat, round robin
        out[index % len(out)].append(None)
    return out


class LatentBatches(torch.utils.data.IterableDataset):
    """Iterable of exactly `len(self)` batches per epoch for one rank (the same count on every rank).

    Inside a torch DataLoader with k workers, worker w reads every k-th of the rank's shards and
    yields its planned batches; the DataLoader's round-robin hands them out in a fixed order, so
    the epoch still has exactly `len(self)` batches and is reproducible. `epoch` picks the
    shuffle; each iteration advances it.
    """

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
        self.reader = open_checked(config, latent_dim, semantic_dim, retry)
        shards = [s for s in self.reader.shards() if s.samples > 0]
        if config.shards is not None:
            shards = [s for s in shards if s.number in set(config.shards)]
        if not shards:
            raise DatasetMismatchError(f"{config.path} has no samples")
        self.all_shards = [s.number for s in shards]
        self.shards_of_rank = [[s.number for s in r] for r in assign_shards(shards, world_size)]
        self.rank_shards = self.shards_of_rank[rank]
        self.rank, self.world_size = rank, world_size
        index = self.reader.index().select(["shard", "key", "frame_count"]).to_pydict()
        self.rows: dict[int, list[tuple[str, int]]] = {}  # shard -> (key, cropped length), written order
        for shard, key, frames in zip(index["shard"], index["key"], index["frame_count"], strict=True):
            self.rows.setdefault(shard_number(shard), []).append((key, min(frames, config.max_frames)))
        stats = self.reader.card.latent_stats
        self.mean = np.asarray(stats.mean, np.float32) if config.normalize else None
        self.std = np.asarray(stats.std, np.float32).clip(min=1e-5) if config.normalize else None
        self.groups = ("latent", SEMANTIC_GROUP) if self._semantic_group() == SEMANTIC_GROUP else ("latent",)
        self.skipped_samples = 0
        self.skipped_shards = 0
        self.epoch = 0
        self._plans: dict[int, list[tuple[tuple[int, ...], list[PlannedBatch | None]]]] = {}

    def _semantic_group(self) -> str | None:
        name = self.config.semantic_field
        return self.reader.card.fields[name].group if name else None

    def __len__(self) -> int:
        """Batches in the epoch `self.epoch` (the same on every rank)."""
        return sum(len(batches) for _, batches in self.plan(self.epoch))

    # --- the epoch's plan, from the index alone ------------------------------------------------
    def _streams(self, rank: int) -> list[list[int]]:
        """The rank's shards split among its loader workers (one stream without workers)."""
        shards = self.shards_of_rank[rank] or self.all_shards  # more ranks than shards: share them all
        count = max(1, min(self.config.workers, len(shards)))
        return [shards[w::count] for w in range(count)]

    def _plan_streams(self, rank: int, epoch: int) -> list[StreamPlan]:
        c = self.config
        return [
            plan_stream(
                self.rows,
                shards,
                random.Random(f"{c.seed}-{rank}-{epoch}-{w}"),
                c.shuffle_buffer,
                c.batch_frames,
            )
            for w, shards in enumerate(self._streams(rank))
        ]

    def plan(self, epoch: int) -> list[tuple[tuple[int, ...], list[PlannedBatch | None]]]:
        """(shards in read order, batches) of `epoch` per loader worker of this rank, padded by
        splits to the largest rank's count. Every rank plans every rank, so all agree unasked."""
        if epoch not in self._plans:
            own = self._plan_streams(self.rank, epoch)
            count = max(
                sum(len(p.batches) for p in (own if r == self.rank else self._plan_streams(r, epoch)))
                for r in range(self.world_size)
            )
            split = split_to(own, count)
            self._plans = {epoch: [(p.shards, b) for p, b in zip(own, split, strict=True)]}  # this epoch only
        return self._plans[epoch]

    # --- reading ---------------------------------------------------------------------------------
    def _positioned(self, shards: tuple[int, ...]) -> Iterator[tuple[int, LatentSample | None]]:
        """(planned position, sample) along `shards`; after each shard (last position, None), so a
        sample lost to corruption never holds its batch back."""
        position = 0
        for number in shards:
            keys = self.rows.get(number, [])
            where = {key: position + i for i, (key, _) in enumerate(keys)}
            for sample in self._shard_samples(number):
                if sample.key in where:
                    yield where[sample.key], sample
            position += len(keys)
            yield position - 1, None

    def _shard_samples(self, number: int) -> Iterator[LatentSample]:
        """One shard's samples; a bad sample is skipped, an unreadable tar ends the shard early."""
        card = self.reader.card
        try:
            if len(self.groups) > 1:  # joined groups are read in lockstep by the reader
                yield from self.reader.iter_shard(number, self.groups)
                return
            for members in self.reader.iter_raw(number):
                try:
                    yield decode_sample(members, card.fields, frame_rate=card.frame_rate, groups=self.groups)
                except SchemaError as err:
                    self.skipped_samples += 1
                    log.warning("skipping a sample of shard %06d of %s: %s", number, self.config.path, err)
        except (SchemaError, OSError, EOFError, ValueError) as err:
            self.skipped_shards += 1
            log.warning("skipping the rest of shard %06d of %s: %s", number, self.config.path, err)

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch
        self.epoch += 1
        worker = torch.utils.data.get_worker_info()
        index = worker.id if worker else 0
        plans = self.plan(epoch)
        if index >= len(plans):  # more loader workers than shards: the extra ones have nothing to do
            return
        shards, batches = plans[index]
        rng = random.Random(f"{self.config.seed}-{self.rank}-{epoch}-{index}-crops")
        stream = self._positioned(shards)
        arrived: dict[str, LatentSample] = {}
        reached, previous, owed = -1, None, 0
        for planned in batches:
            if planned is None:  # a repeat that keeps the ranks' batch counts equal
                items = previous
            else:
                for position, sample in stream if reached < planned.upto else ():
                    if sample is not None:
                        arrived[sample.key] = sample
                    reached = max(reached, position)
                    if reached >= planned.upto:
                        break
                items = [arrived.pop(k) for k in planned.keys if k in arrived] or previous
            if items is None:  # nothing readable yet: yield the next good batch in its place
                owed += 1
                continue
            for _ in range(1 + owed):
                yield self._collate([(s, rng.randrange(s.frame_count - self._length(s) + 1)) for s in items])
            previous, owed = items, 0
        if owed:
            raise DatasetMismatchError(f"{self.config.path}: no readable sample in shards {list(shards)}")

    def _length(self, sample: LatentSample) -> int:
        return min(sample.frame_count, self.config.max_frames)

    def _collate(self, items: list[tuple[LatentSample, int]]) -> Batch:
        longest = max(self._length(sample) for sample, _ in items)
        count, width = len(items), self.reader.card.fields["latent"].frame_shape[0]
        latents = np.zeros((count, longest, width), np.float32)
        mask = np.zeros((count, longest), bool)
        semantic = None
        if self.config.semantic_field:
            dim = self.reader.card.fields[self.config.semantic_field].frame_shape[0]
            semantic = np.zeros((count, longest, dim), np.float32)
        texts, keys = [], []
        for row, (sample, start) in enumerate(items):
            length = min(sample.frame_count - start, self.config.max_frames)
            crop = sample.latent[start : start + length].astype(np.float32)
            if self.mean is not None:
                crop = (crop - self.mean) / self.std
            latents[row, :length] = crop
            mask[row, :length] = True
            if semantic is not None:
                semantic[row, :length] = sample.arrays[self.config.semantic_field][start : start + length]
            meta = sample.metadata
            texts.append(
                next((getattr(meta, f) for f in self.config.text_fields if getattr(meta, f, None)), "")
            )
            keys.append(sample.key)
        return Batch(
            latents=torch.from_numpy(latents),
            mask=torch.from_numpy(mask),
            texts=texts,
            keys=keys,
            semantic=None if semantic is None else torch.from_numpy(semantic),
        )

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Undo the card normalisation: (B, T, C) model space -> tokenizer latent space."""
        if self.mean is None:
            return latents
        return latents * torch.from_numpy(self.std) + torch.from_numpy(self.mean)


def make_loader(batches: LatentBatches) -> torch.utils.data.DataLoader | LatentBatches:
    """`batches` itself, or a DataLoader running `config.workers` reader processes over it."""
    if batches.config.workers <= 0:
        return batches
    return torch.utils.data.DataLoader(batches, batch_size=None, num_workers=batches.config.workers)


def card_stats(stats: Mapping[str, Any] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) arrays from a card's latent_stats dict, for generation without the dataset."""
    if not stats:
        return None
    return np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)
