"""Builders of small, real latent datasets for tests (here and in pipelines/ and jobs/).

They write through the same writer a pipeline uses, so a test's dataset is a real one:
tars that webdataset reads, index fragments, a ledger, `shards.parquet` and a card whose
totals are right.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from losatok_data.card import DatasetCard, TokenizerIdentity, hash_config, write_card
from losatok_data.fields import FieldSet, default_fields
from losatok_data.index import write_shard_summary
from losatok_data.layout import DatasetLayout
from losatok_data.ledger import FailureRecord, failure_counts, read_failures, write_failures
from losatok_data.reader import DatasetReader
from losatok_data.sample import LatentSample, SampleMetadata
from losatok_data.stats import ChannelStats
from losatok_data.writer import write_shard
from losatok_storage.filesystem import open_atomic
from losatok_storage.tario import TarSampleWriter, iter_tar_samples

TINY_LATENT_DIM = 16  # the tiny preset's widths
TINY_SEMANTIC_DIM = 64


def tiny_fields(*, logvar: bool = True, semantic: bool = True, dtype: str = "float16") -> FieldSet:
    """Every field, at the tiny preset's widths."""
    return default_fields(TINY_LATENT_DIM, TINY_SEMANTIC_DIM, logvar=logvar, semantic=semantic, dtype=dtype)


def tiny_tokenizer() -> TokenizerIdentity:
    return TokenizerIdentity(preset="tiny", config_hash=hash_config({"preset": "tiny"}))


def fake_sample(
    key: str,
    frames: int,
    fields: FieldSet,
    rng: np.random.Generator,
    frame_rate: float = 25.0,
    sample_rate: int = 16000,
    **metadata: Any,
) -> LatentSample:
    """A sample of `frames` frames of random float32 arrays (cast on writing), lasting frames / frame_rate s."""
    arrays = {s.name: rng.standard_normal((frames, *s.frame_shape)).astype(np.float32) for s in fields}
    meta = SampleMetadata(
        source=metadata.pop("source", f"/corpus/{key}.flac"),
        offset=metadata.pop("offset", 0.0),
        duration=frames / frame_rate,
        sample_rate=sample_rate,
        frame_count=frames,
        **{"text": f"text of {key}", **metadata},
    )
    return LatentSample(key, meta, arrays)


def audio_measures(
    content_hash: str,
    rms_db: float = -20.0,
    peak: float = 0.5,
    clipped_fraction: float = 0.0,
    silent_fraction: float = 0.1,
    loudness_lufs: float | None = -21.0,
) -> dict[str, Any]:
    """The schema 1.3 audio measures of a fake sample, as SampleMetadata fields (for
    `fake_sample` or `write_fake_dataset(metadata=...)`); plausible speech levels by default."""
    return {
        "rms_db": rms_db,  # dBFS
        "peak": peak,
        "clipped_fraction": clipped_fraction,
        "silent_fraction": silent_fraction,
        "content_hash": content_hash,  # equal for samples of equal audio
        "loudness_lufs": loudness_lufs,
    }


@dataclass(frozen=True)
class FakeDataset:
    layout: DatasetLayout
    card: DatasetCard
    samples: Mapping[str, LatentSample]  # as given to the writer (float32, before the cast)
    shard_keys: Mapping[int, Sequence[str]]  # keys of each shard, in written order

    @property
    def url(self) -> str:
        return self.layout.url


def write_fake_dataset(
    url: str,
    n_shards: int = 2,
    samples_per_shard: int = 3,
    fields: FieldSet | None = None,
    *,
    seed: int = 0,
    min_frames: int = 5,
    max_frames: int = 40,
    failures: int = 1,
    storage_options: Mapping[str, Any] | None = None,
    frame_rate: float = 25.0,
    sample_rate: int = 16000,
    metadata: Mapping[str, Mapping[str, Any]] | None = None,
) -> FakeDataset:
    """Write a complete dataset at `url`: shards, index, `failures` ledger rows, the shard
    summary and a true card.

    Sample keys are `s<shard>-<i>`; frame counts are random in [min_frames, max_frames].
    `metadata`: SampleMetadata fields of some samples by key (e.g. audio measures, schema 1.3:
    `{"s0-1": audio_measures("ab12", rms_db=-23.0)}`); the others keep the defaults (no measures).
    """
    metadata = metadata or {}
    fields = fields or tiny_fields()
    layout = DatasetLayout(url, dict(storage_options or {}))
    rng = np.random.default_rng(seed)
    samples: dict[str, LatentSample] = {}
    shard_keys: dict[int, list[str]] = {}
    stats = []
    infos = []
    for number in range(n_shards):
        batch = [
            fake_sample(
                f"s{number}-{i}",
                int(rng.integers(min_frames, max_frames + 1)),
                fields,
                rng,
                frame_rate,
                sample_rate,
                **{"offset": float(i), "split": "train", **metadata.get(f"s{number}-{i}", {})},
            )
            for i in range(samples_per_shard)
        ]
        written = write_shard(layout, number, batch, fields, frame_rate=frame_rate)
        if written.latent_stats is not None:
            stats.append(written.latent_stats)
        infos.append(written.info)
        samples.update((s.key, s) for s in batch)
        shard_keys[number] = [s.key for s in batch]
    if failures:
        records = [
            FailureRecord(f"/corpus/broken-{i}.mp3", "decode", "DecodeError", "invalid data", attempts=3)
            for i in range(failures)
        ]
        write_failures(layout, "writer-0", records)
    card = DatasetCard(
        tokenizer=tiny_tokenizer(),
        fields=fields,
        sample_rate=sample_rate,
        frame_rate=frame_rate,
        latent_stats=ChannelStats.merge_all(stats) if stats else None,
        failures=failure_counts(read_failures(layout)),
        source="/corpus",
    )
    write_shard_summary(layout, infos)  # as the pipeline's finaliser does, before the card
    card = replace(card, totals=DatasetReader(layout, card).measured_totals())
    write_card(layout, card)
    return FakeDataset(layout, card, samples, shard_keys)


def rewrite_tar(
    layout: DatasetLayout, group: str, number: int, change: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> None:
    """Rewrite one tar, passing each sample's members through `change` (None drops the sample).

    For injecting faults the writer would refuse to write (e.g. a field with a wrong frame count).
    """
    path = layout.tar_path(group, number)
    with layout.fs.open(path, "rb") as f:
        samples = list(iter_tar_samples(f, path))
    with open_atomic(layout.fs, path) as f:
        tar = TarSampleWriter(f)
        for members in samples:
            changed = change(dict(members))
            if changed is not None:
                key = changed.pop("__key__")
                tar.write(key, changed)
        tar.close()
