"""The training loader over real latent datasets (written with the losatok_data writer)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs.data import DatasetMismatchError, LatentBatches, LoaderConfig
from losatok_data.testing import write_fake_dataset


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
    from losatok_data.errors import SchemaVersionError

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


def epoch_keys(batches: LatentBatches) -> list[list[str]]:
    return [list(b.keys) for b in batches]


@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_visits_each_sample_of_a_ranks_share_once_with_equal_batch_counts(tmp_path, workers):
    # the reported case: 24 samples, batch_frames=5000 (the default 20 s crops and 64-sample buffer)
    fake = write_fake_dataset(
        str(tmp_path / "ds"), n_shards=6, samples_per_shard=4, min_frames=100, max_frames=500
    )
    from jobs.data import make_loader

    for world in (1, 2, 3):
        counts, shares = [], []
        for rank in range(world):
            batches = LatentBatches(
                LoaderConfig(path=fake.url, batch_frames=5000, workers=workers), 16, rank, world
            )
            share = {key for n in batches.rank_shards for key, _ in batches.rows[n]}
            for epoch in range(2):
                batches.epoch = epoch
                expected = len(batches)
                keys = [list(b.keys) for b in make_loader(batches)]
                flat = [k for batch in keys for k in batch]
                assert all(len(set(batch)) == len(batch) for batch in keys), (
                    keys
                )  # no sample twice in a batch
                assert sorted(flat) == sorted(share), (world, rank, epoch)  # every sample of the share, once
                assert len(keys) == expected
            counts.append(len(keys))
            shares.append(share)
        assert len(set(counts)) == 1, f"world {world}: ranks got {counts} batches"
        assert set().union(*shares) == set(fake.samples) and sum(map(len, shares)) == 24  # disjoint shares


def test_a_rank_needing_fewer_batches_splits_its_own_to_keep_the_count(tmp_path):
    fake = write_fake_dataset(
        str(tmp_path / "ds"), n_shards=2, samples_per_shard=8, min_frames=10, max_frames=100, seed=1
    )
    config = loader(fake.url, batch_frames=200, max_frames=100)
    ranks = [LatentBatches(config, 16, rank, 2) for rank in (0, 1)]
    own = [sum(len(p.batches) for p in b._plan_streams(b.rank, 0)) for b in ranks]
    assert own[0] != own[1], own  # left alone, the ranks would disagree and DDP would hang
    for batches in ranks:
        keys = epoch_keys(batches)
        flat = [k for batch in keys for k in batch]
        assert len(keys) == max(own)
        assert len(flat) == len(set(flat)) == 8  # each of the rank's 8 samples once, none repeated
        lengths = {k: min(fake.samples[k].frame_count, 100) for k in flat}
        assert all(len(b) == 1 or max(lengths[k] for k in b) * len(b) <= 200 for b in keys)


def test_batches_are_planned_within_the_frame_budget_and_split_evenly():
    import random

    from jobs.data import plan_stream, split_to

    rows = {0: [(f"a{i}", 40) for i in range(10)], 1: [(f"b{i}", 10) for i in range(10)]}
    plan = plan_stream(rows, [0, 1], random.Random(0), shuffle_buffer=20, batch_frames=100)
    keys = [k for b in plan.batches for k in b.keys]
    assert sorted(keys) == sorted(k for r in rows.values() for k, _ in r)
    length = {k: n for r in rows.values() for k, n in r}
    assert all(max(length[k] for k in b.keys) * len(b.keys) <= 100 for b in plan.batches)
    (split,) = split_to([plan], len(plan.batches) + 3)
    assert len(split) == len(plan.batches) + 3
    assert sorted(k for b in split for k in b.keys) == sorted(keys)  # splits lose and repeat nothing
    (padded,) = split_to([plan], len(keys) + 2)  # more batches than samples: single items, then repeats
    assert padded[-2:] == [None, None] and all(len(b.keys) == 1 for b in padded[:-2])


def test_the_loader_sees_the_whole_dataset_or_a_pinned_generation(tmp_path):
    from dataclasses import replace

    from losatok_data.card import GenerationInfo, write_card

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
