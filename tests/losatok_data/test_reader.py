import shutil
from dataclasses import replace

import numpy as np
import pytest

from losatok_data.errors import SchemaError
from losatok_data.reader import open_dataset
from losatok_data.testing import fake_sample, rewrite_tar
from losatok_data.writer import write_shard


def test_reader_lists_committed_shards_with_counts(dataset):
    reader = open_dataset(dataset.url)
    assert replace(reader.card, latent_stats=None) == replace(dataset.card, latent_stats=None)
    np.testing.assert_allclose(reader.card.latent_stats.std, dataset.card.latent_stats.std, rtol=1e-12)
    shards = reader.shards()
    assert [(s.name, s.samples) for s in shards] == [("shard-000000", 3), ("shard-000001", 3)]
    assert sum(s.frames for s in shards) == dataset.card.totals.frames


def test_iter_shard_joins_semantic_by_key(dataset):
    reader = open_dataset(dataset.url)
    samples = list(reader.iter_shard(1, groups=("latent", "semantic")))
    assert [s.key for s in samples] == list(dataset.shard_keys[1])
    for sample in samples:
        original = dataset.samples[sample.key]
        np.testing.assert_array_equal(sample.semantic, original.semantic.astype(np.float16))
        np.testing.assert_array_equal(sample.latent, original.latent.astype(np.float16))


def test_latent_reader_never_touches_semantic_tars(dataset):
    shutil.rmtree(f"{dataset.layout.root}/semantic")  # dropped, e.g. to save space
    reader = open_dataset(dataset.url)
    keys = [s.key for s in reader.iter_samples()]
    assert keys == [k for n in sorted(dataset.shard_keys) for k in dataset.shard_keys[n]]
    assert all(s.semantic is None for s in reader.iter_shard(0))
    with pytest.raises(FileNotFoundError):
        list(reader.iter_shard(0, groups=("semantic",)))


def test_groups_out_of_step_are_refused(dataset):
    rewrite_tar(dataset.layout, "semantic", 0, lambda m: None if m["__key__"] == "s0-1" else m)
    reader = open_dataset(dataset.url)
    with pytest.raises(SchemaError, match="disagree on the next key"):
        list(reader.iter_shard(0, groups=("semantic",)))


def test_uncommitted_shard_is_invisible(dataset, rng):
    layout = dataset.layout
    write_shard(layout, 7, [fake_sample("late", 10, dataset.card.fields, rng)], dataset.card.fields)
    layout.fs.rm(layout.index_path(7))  # a crash between the tar and its index fragment
    reader = open_dataset(dataset.url)
    assert [s.number for s in reader.shards()] == [0, 1]
    with pytest.raises(KeyError, match="late"):
        reader.sample("late")


def test_sample_by_key_and_missing_dataset(dataset, tmp_path):
    reader = open_dataset(dataset.url)
    sample = reader.sample("s1-1", groups=("latent", "semantic"))
    assert sample.metadata == dataset.samples["s1-1"].metadata and sample.semantic.shape[1] == 64
    with pytest.raises(FileNotFoundError):
        open_dataset(str(tmp_path / "nothing"))


def test_measured_totals_match_the_card(dataset):
    assert open_dataset(dataset.url).measured_totals() == dataset.card.totals


def test_a_reader_pinned_to_a_generation_sees_its_shards_only(dataset, rng):
    from losatok_data.card import GenerationInfo, write_card

    layout = dataset.layout
    write_shard(layout, 2, [fake_sample("appended", 10, dataset.card.fields, rng)], dataset.card.fields)
    generations = (
        GenerationInfo(1, "2026-11-01T00:00:00+00:00", "run-1", "/corpus", first_shard=0, shards=2),
        GenerationInfo(2, "2026-11-08T00:00:00+00:00", "run-2", "/corpus", first_shard=2, shards=1),
    )
    write_card(layout, replace(dataset.card, generations=generations))
    assert open_dataset(dataset.url).card.generations == generations  # round-trips through card.json
    assert [s.number for s in open_dataset(dataset.url).shards()] == [0, 1, 2]  # whole dataset by default
    pinned = open_dataset(dataset.url, generation=1)
    assert [s.number for s in pinned.shards()] == [0, 1]
    assert "appended" not in pinned.index().column("key").to_pylist()
    assert [s.number for s in open_dataset(dataset.url, generation=2).shards()] == [0, 1, 2]
    with pytest.raises(SchemaError, match="has no generation 3; its card lists \\[1, 2\\]"):
        open_dataset(dataset.url, generation=3)
