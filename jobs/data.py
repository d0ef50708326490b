"""Training batches from latent datasets: rank-balanced, frame-budgeted, normalised, never short.

DDP hangs when one rank runs out of batches before the others. Here every rank computes, from
the shared index alone, the same epoch length N (the smallest number of full batches any rank
can fill), then yields exactly N batches from an endless shuffled stream over its own shards.
A corrupt shard or sample is counted, warned about and skipped; the stream simply moves on.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from schemas.errors import SchemaError
from schemas.fields import SEMANTIC_GROUP
from schemas.index import ShardInfo, assign_shards
from schemas.reader import DatasetReader, open_dataset
from schemas.sample import LatentSample, decode_sample
from schemas.versioning import SCHEMA_VERSION, parse_version

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


def open_checked(config: LoaderConfig, latent_dim: int, semantic_dim: int | None = None) -> DatasetReader:
    """Open the dataset and refuse, saying both sides, one this model cannot train on."""
    reader = open_dataset(
        config.path, config.storage_options, config.generation
    )  # refuses newer majors itself
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


def epoch_batches(shards: list[ShardInfo], max_frames: int, batch_frames: int, world_size: int) -> int:
    """Batches per epoch for every rank: the fewest full batches any rank's shards can fill.

    Uses per-shard frame totals, with every sample counted as at most `max_frames` (its crop).
    Computed from the index alone, so every rank agrees without communicating.
    """
    per_rank = assign_shards(shards, world_size)
    counts = []
    for rank_shards in per_rank:
        frames = sum(min(s.frames, max_frames * s.samples) for s in rank_shards)
        counts.append(frames // batch_frames)
    return max(1, min(counts))


class LatentBatches(torch.utils.data.IterableDataset):
    """Iterable of exactly `len(self)` batches per epoch for one rank.

    Inside a torch DataLoader with k workers, worker w reads every k-th of the rank's shards and
    yields its share of the epoch's batches; the DataLoader's round-robin hands them out in a
    fixed order, so the epoch still has exactly `len(self)` batches and is reproducible.
    """

    def __init__(
        self,
        config: LoaderConfig,
        latent_dim: int,
        rank: int = 0,
        world_size: int = 1,
        semantic_dim: int | None = None,
    ) -> None:
        self.config = config
        self.reader = open_checked(config, latent_dim, semantic_dim)
        shards = [s for s in self.reader.shards() if s.samples > 0]
        if config.shards is not None:
            shards = [s for s in shards if s.number in set(config.shards)]
        if not shards:
            raise DatasetMismatchError(f"{config.path} has no samples")
        self.all_shards = [s.number for s in shards]
        self.rank_shards = [s.number for s in assign_shards(shards, world_size)[rank]]
        self.batches_per_epoch = epoch_batches(shards, config.max_frames, config.batch_frames, world_size)
        self.rank, self.world_size = rank, world_size
        stats = self.reader.card.latent_stats
        self.mean = np.asarray(stats.mean, np.float32) if config.normalize else None
        self.std = np.asarray(stats.std, np.float32).clip(min=1e-5) if config.normalize else None
        self.groups = ("latent", SEMANTIC_GROUP) if self._semantic_group() == SEMANTIC_GROUP else ("latent",)
        self.skipped_samples = 0
        self.skipped_shards = 0
        self.epoch = 0

    def _semantic_group(self) -> str | None:
        name = self.config.semantic_field
        return self.reader.card.fields[name].group if name else None

    def __len__(self) -> int:
        return self.batches_per_epoch

    # --- sample stream -----------------------------------------------------------------------
    def samples(self, rng: random.Random, shards: list[int]) -> Iterator[LatentSample]:
        """Endless stream over `shards`, reshuffled each pass, corrupt parts skipped."""
        while True:
            order = list(shards)
            rng.shuffle(order)
            for number in order:
                yield from self._shard_samples(number)

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

    # --- batches -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        shards = self.rank_shards or self.all_shards
        worker = torch.utils.data.get_worker_info()
        index, workers = (worker.id, min(worker.num_workers, len(shards))) if worker else (0, 1)
        if index >= workers:  # more loader workers than shards: the extra ones have nothing to do
            return
        share = self.batches_per_epoch // workers + (index < self.batches_per_epoch % workers)
        rng = random.Random(f"{self.config.seed}-{self.rank}-{self.epoch}-{index}")
        self.epoch += 1
        stream = self.samples(rng, shards[index::workers])
        pool: list[LatentSample] = []  # shuffle buffer, also the pool that batches bucket from
        for _ in range(share):
            yield self._next_batch(stream, rng, pool)

    def _next_batch(
        self, stream: Iterator[LatentSample], rng: random.Random, pool: list[LatentSample]
    ) -> Batch:
        """Length bucketing within the frame budget (B x T_max <= batch_frames, at least one item).

        A random sample of the pool opens the batch; the pool's samples closest to it in
        (cropped) length fill it, so padding stays small while the order stays random.
        """
        while len(pool) < max(1, self.config.shuffle_buffer):
            pool.append(next(stream))
        first = pool.pop(rng.randrange(len(pool)))
        target = self._length(first)
        chosen, longest = [first], target
        for index in sorted(range(len(pool)), key=lambda i: (abs(self._length(pool[i]) - target), i)):
            length = max(longest, self._length(pool[index]))
            if length * (len(chosen) + 1) > self.config.batch_frames:
                break
            chosen.append(pool[index])
            longest = length
            pool[index] = None  # type: ignore[call-overload]  # taken; removed below
        pool[:] = [s for s in pool if s is not None]
        items = [(s, rng.randrange(s.frame_count - self._length(s) + 1)) for s in chosen]
        return self._collate(items, longest)

    def _length(self, sample: LatentSample) -> int:
        return min(sample.frame_count, self.config.max_frames)

    def _collate(self, items: list[tuple[LatentSample, int]], longest: int) -> Batch:
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
