"""The training loader over real latent datasets (written with the schemas writer)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs.data import DatasetMismatchError, LatentBatches, LoaderConfig
from schemas.testing import write_fake_dataset


def loader(path, **overrides) -> LoaderConfig:
    return LoaderConfig(
        path=str(path), **{"batch_frames": 120, "max_frames": 40, "shuffle_buffer": 4, **overrides}
    )


def simple_dataset(tmp_path, shards=4, per_shard=5):
    return write_fake_dataset(
        str(tmp_path / "simple"), n_shards=shards, samples_per_shard=per_shard, max_frames=50
    )


def test_every_rank_gets_the_same_number_of_batches(tmp_path):
    fake = write_fake_dataset(
        str(tmp_path / "ds"), n_shards=5, samples_per_shard=4, min_frames=10, max_frames=80
    )
    for world in (1, 2, 3):
        counts = []
        for rank in range(world):
            batches = LatentBatches(loader(fake.url), latent_dim=16, rank=rank, world_size=world)
            counts.append(sum(1 for _ in batches))
            assert counts[-1] == len(batches)
        assert len(set(counts)) == 1, f"world {world}: ranks got {counts} batches"


def test_batches_respect_budget_crop_normalisation_and_masks(tmp_path):
    fake = simple_dataset(tmp_path)
    batches = LatentBatches(loader(fake.url, semantic_field="semantic"), latent_dim=16, semantic_dim=64)
    seen = []
    for batch in batches:
        count, longest, width = batch.latents.shape
        assert width == 16 and longest <= 40 and (count == 1 or count * longest <= 120)
        assert batch.semantic.shape == (count, longest, 64)
        assert batch.mask[:, 0].all() and (batch.latents[~batch.mask] == 0).all()
        for row, key in enumerate(batch.keys):
            valid = int(batch.mask[row].sum())
            assert valid == min(fake.samples[key].frame_count, 40)
            assert batch.texts[row] == f"text of {key}"
            seen.append(batch.latents[row, :valid].numpy())
    frames = np.concatenate(seen)
    assert abs(frames.mean()) < 0.2 and 0.7 < frames.std() < 1.3  # normalised by the card's stats


def test_crops_come_from_the_stored_sample(tmp_path):
    fake = simple_dataset(tmp_path, shards=1, per_shard=3)
    config = loader(fake.url, normalize=False, max_frames=7)
    (batch, *_) = list(LatentBatches(config, latent_dim=16))
    for row, key in enumerate(batch.keys):
        stored = fake.samples[key].latent.astype(np.float16).astype(np.float32)
        crop = batch.latents[row, :7].numpy()
        assert any(np.array_equal(crop, stored[s : s + 7]) for s in range(len(stored) - 6))


def test_truncated_shard_is_skipped_with_a_warning(tmp_path, caplog):
    fake = simple_dataset(tmp_path, shards=3, per_shard=4)
    tar = tmp_path / "simple" / "latent" / "shard-000001.tar"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 3])
    batches = LatentBatches(loader(fake.url), latent_dim=16)
    keys = {
        k for _ in range(10) for batch in batches for k in batch.keys
    }  # enough epochs to reach every shard
    assert batches.skipped_shards + batches.skipped_samples >= 1
    assert "of shard 000001" in caplog.text  # named in the warning
    assert keys and all(not k.startswith("s1-") or k == "s1-0" for k in keys)


def test_a_dataset_of_another_latent_width_is_refused_naming_both(tmp_path):
    fake = simple_dataset(tmp_path, shards=1)
    with pytest.raises(DatasetMismatchError, match="dimension 16.*latent_dim 128"):
        LatentBatches(loader(fake.url), latent_dim=128)


def test_a_newer_schema_major_is_refused(tmp_path):
    from schemas.errors import SchemaVersionError

    fake = simple_dataset(tmp_path, shards=1)
    card = tmp_path / "simple" / "card.json"
    data = json.loads(card.read_text())
    data["schema_version"] = "2.0"
    card.write_text(json.dumps(data))
    with pytest.raises(SchemaVersionError, match="2.0"):
        LatentBatches(loader(fake.url), latent_dim=16)


def test_length_bucketing_keeps_padding_small(tmp_path):
    fake = write_fake_dataset(
        str(tmp_path / "ds"), n_shards=4, samples_per_shard=16, min_frames=5, max_frames=80
    )
    config = LoaderConfig(path=fake.url, batch_frames=400, max_frames=80, shuffle_buffer=32)
    batches = LatentBatches(config, latent_dim=16)
    padded = np.mean([1 - float(b.mask.float().mean()) for b in batches])
    # the same lengths grouped in arrival order, as a loader without bucketing would
    lengths = [min(s.frame_count, 80) for s in fake.samples.values()]
    unbucketed, group = [], []
    for n in lengths:
        if group and max(group + [n]) * (len(group) + 1) > 400:
            unbucketed.append(1 - sum(group) / (max(group) * len(group)))
            group = []
        group.append(n)
    assert padded < 0.6 * np.mean(unbucketed), (padded, np.mean(unbucketed))


def test_loader_workers_keep_the_epoch_length_and_order(tmp_path):
    from jobs.data import make_loader

    fake = write_fake_dataset(
        str(tmp_path / "ds"), n_shards=5, samples_per_shard=6, min_frames=10, max_frames=60
    )
    batches = LatentBatches(loader(fake.url, workers=2), latent_dim=16)
    epochs = []
    for _ in range(2):
        batches.epoch = 0  # the same epoch twice: the same batches, in the same order
        epochs.append([tuple(b.keys) for b in make_loader(batches)])
    assert len(epochs[0]) == len(batches) and epochs[0] == epochs[1]
    shards_seen = {k.split("-")[0] for keys in epochs[0] for k in keys}
    assert len(shards_seen) >= 2  # both workers contributed


def test_the_loader_sees_the_whole_dataset_or_a_pinned_generation(tmp_path):
    from dataclasses import replace

    from schemas.card import GenerationInfo, write_card

    fake = simple_dataset(tmp_path)  # shards 0..3; say 0-1 came first and 2-3 were appended
    generations = (
        GenerationInfo(1, "2026-11-01T00:00:00+00:00", "run-1", "/corpus", first_shard=0, shards=2),
        GenerationInfo(2, "2026-11-08T00:00:00+00:00", "run-2", "/corpus", first_shard=2, shards=2),
    )
    write_card(fake.layout, replace(fake.card, generations=generations))
    assert LatentBatches(loader(fake.url), latent_dim=16).all_shards == [0, 1, 2, 3]
    pinned = LatentBatches(loader(fake.url, generation=1), latent_dim=16)
    assert pinned.all_shards == [0, 1]
    keys = {k for batch in pinned for k in batch.keys}
    assert keys and keys <= set(pinned.reader.index().column("key").to_pylist())
    assert len(pinned.reader.index()) == 10  # 2 shards x 5 samples
