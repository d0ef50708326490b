"""The dataset's card: its latent stats always cover every committed frame, even after a stats
fragment was lost (no Ray needed: the finaliser is driven directly over a real dataset)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from losatok_data.ledger import FailureRecord, write_failures
from losatok_data.stats import ChannelStats, read_stats_fragment
from losatok_data.testing import tiny_tokenizer, write_fake_dataset
from losatok_data.verify import verify_dataset
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
