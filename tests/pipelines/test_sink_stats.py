"""The dataset's card: its latent stats always cover every committed frame, even after a stats
fragment was lost (no Ray needed: the finaliser is driven directly over a real dataset)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from losatok_data.index import ShardInfo, read_shard_summary, summarise_shards
from losatok_data.ledger import FailureRecord, write_failures
from losatok_data.stats import ChannelStats, read_stats_fragment
from losatok_data.testing import tiny_tokenizer, write_fake_dataset
from losatok_data.verify import verify_dataset
from losatok_data.writer import write_shard
from pipelines import spill
from pipelines.finalise import DatasetFinaliser
from pipelines.plan import RunIdentity


def test_rebuild_card_recomputes_a_missing_stats_fragment_from_the_shard(tmp_path):
    ds = write_fake_dataset(str(tmp_path / "ds"), n_shards=3, samples_per_shard=2)
    whole = ChannelStats.merge_all([read_stats_fragment(ds.layout, n) for n in range(3)])
    lost = ds.layout.fs.cat_file(ds.layout.stats_path(1))
    ds.layout.fs.rm(ds.layout.stats_path(1))
    assert [f.where for f in verify_dataset(ds.url).faults] == ["stats/shard-000001.json"]

    dataset = DatasetFinaliser(ds.layout, ds.card.fields, ds.card.sample_rate, ds.card.frame_rate)
    identity = RunIdentity(tokenizer={**tiny_tokenizer().__dict__}, seed=0, fields={}, segment={})
    card = dataset.rebuild_card(identity)

    assert card.latent_stats.count == whole.count == ds.card.totals.frames  # not 2/3 of the frames
    np.testing.assert_allclose(card.latent_stats.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(card.latent_stats.std, whole.std, rtol=1e-9)
    rebuilt = read_stats_fragment(ds.layout, 1)
    original = ChannelStats.from_dict(json.loads(lost))
    assert rebuilt.count == original.count
    np.testing.assert_allclose(rebuilt.mean, original.mean, rtol=1e-12)
    assert verify_dataset(ds.url).ok


def test_rebuild_card_writes_the_shard_summary_of_every_committed_shard(tmp_path):
    ds = write_fake_dataset(str(tmp_path / "ds"), n_shards=2, samples_per_shard=3)
    ds.layout.fs.rm(ds.layout.summary_path)
    write_shard(ds.layout, 2, [], ds.card.fields)  # an empty committed shard: a row of zeros
    dataset = DatasetFinaliser(ds.layout, ds.card.fields, ds.card.sample_rate, ds.card.frame_rate)
    identity = RunIdentity(tokenizer={**tiny_tokenizer().__dict__}, seed=0, fields={}, segment={})
    card = dataset.rebuild_card(identity)

    summary = read_shard_summary(ds.layout)
    assert list(summary.values()) == summarise_shards(ds.layout, [0, 1, 2])
    assert summary[2] == ShardInfo(2, "shard-000002", 0, 0, 0.0)
    assert sum(s.samples for s in summary.values()) == card.totals.samples == 6
    assert sum(s.frames for s in summary.values()) == card.totals.frames
    report = verify_dataset(ds.url, quick=True)
    assert report.ok and report.findings == [], report.findings


@pytest.mark.parametrize("bucket_entries", [2, 1_000_000])
def test_input_counts_count_each_input_once_whatever_the_buckets(tmp_path, monkeypatch, bucket_entries):
    monkeypatch.setattr(spill, "BUCKET_ENTRIES", bucket_entries)
    ds = write_fake_dataset(str(tmp_path / "ds"), n_shards=3, samples_per_shard=4)  # keys s<shard>-<i>
    failed = [
        FailureRecord("/a.wav", "decode", "E", "m", key="s0-1"),  # failed once, sampled after all
        FailureRecord("/b.wav", "decode", "E", "m", key="lost"),
        FailureRecord("/b.wav", "encode", "E", "m", key="lost"),  # one input, failed twice
        FailureRecord("/c.wav", "decode", "E", "m"),  # no key: counted by location
    ]
    write_failures(ds.layout, "shard-000001", failed)
    dataset = DatasetFinaliser(ds.layout, ds.card.fields, ds.card.sample_rate, ds.card.frame_rate)
    assert dataset.input_counts() == (12, 3)  # lost, /c.wav and the fake's own /corpus/broken-0.mp3
