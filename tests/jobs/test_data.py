"""The training loader over real latent datasets (written with the losatok_data writer): plans,
exactly-once epochs on any number of ranks, elastic resume, filters, mixtures, the shard cache.

Ranks are simulated in one process here (each plans every rank to agree on the batch count);
tests/jobs/test_train_dit.py runs the same loader under Ray Train with a process group.
"""

from __future__ import annotations

import collections
import json
import random

import numpy as np
import pytest

from jobs.data import DatasetMismatchError, DatasetSpec, Filters, LatentLoader, LoaderConfig
from jobs.data.config import MEASURE_FILTERS
from jobs.data.plan import StreamPlan, bucket, equalise
from losatok_data.testing import audio_measures, write_fake_dataset


def loader(path, **overrides) -> LoaderConfig:
    return LoaderConfig(
        path=str(path), **{"batch_frames": 120, "max_frames": 40, "shuffle_buffer": 4, **overrides}
    )


def simple_dataset(tmp_path, shards=4, per_shard=5, name="simple", **kwargs):
    return write_fake_dataset(
        str(tmp_path / name), n_shards=shards, samples_per_shard=per_shard, max_frames=50, **kwargs
    )


def lockstep(loaders, steps=None):
    """Batches of simulated ranks, step by step, as DDP takes them: [[batch per rank], ...]."""
    iterators = [iter(lo) for lo in loaders]
    out = []
    while steps is None or len(out) < steps:
        got = [next(it, None) for it in iterators]
        if all(g is None for g in got):
            break
        assert all(g is not None for g in got), "the ranks ran out of batches at different steps"
        out.append(got)
    return out


def keys_of(steps) -> collections.Counter:
    return collections.Counter(k for step in steps for batch in step for k in batch.keys)


def state_of(loaders) -> dict:
    return loaders[0].merge_states([lo.local_state() for lo in loaders])


def ranks(config, world, state=None, latent_dim=16):
    out = [LatentLoader(config, latent_dim, rank, world) for rank in range(world)]
    for lo in out:
        if state is not None:
            lo.load_state_dict(state)
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_visits_every_sample_once_across_ranks_with_equal_batch_counts(tmp_path, workers):
    fake = write_fake_dataset(
        str(tmp_path / "ds"), n_shards=6, samples_per_shard=4, min_frames=10, max_frames=80
    )
    for world in (1, 2, 3, 8):  # 8 streams x 2 workers > 6 shards: shards are cut into row ranges
        loaders = ranks(loader(fake.url, workers=workers), world)
        expected = len(loaders[0])
        steps = lockstep(loaders)
        assert len(steps) == expected
        counts = keys_of(steps)
        assert set(counts) == set(fake.samples) and set(counts.values()) == {1}, (world, counts)
        for step in steps:
            for batch in step:
                assert len(set(batch.keys)) == len(batch.keys)
                assert (batch.weight == 0) == (not batch.keys)  # padding, and only padding, has no keys


def test_batches_respect_budget_crop_normalisation_and_masks(tmp_path):
    fake = simple_dataset(tmp_path)
    seen = []
    for batch in LatentLoader(loader(fake.url, semantic_field="semantic"), latent_dim=16, semantic_dim=64):
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
    (batch, *_) = list(LatentLoader(loader(fake.url, normalize=False, max_frames=7), latent_dim=16))
    for row, key in enumerate(batch.keys):
        stored = fake.samples[key].latent.astype(np.float16).astype(np.float32)
        crop = batch.latents[row, :7].numpy()
        assert any(np.array_equal(crop, stored[s : s + 7]) for s in range(len(stored) - 6))


def test_a_truncated_shard_is_skipped_with_a_warning(tmp_path, caplog):
    fake = simple_dataset(tmp_path, shards=3, per_shard=4)
    tar = tmp_path / "simple" / "latent" / "shard-000001.tar"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 3])
    lo = LatentLoader(loader(fake.url), latent_dim=16)
    keys = [k for batch in lo for k in batch.keys]
    assert lo.batches.skipped_shards + lo.batches.skipped_samples >= 1
    assert "of shard 000001" in caplog.text  # named in the warning
    assert set(keys) >= {k for k in fake.samples if not k.startswith("s1-")}
    assert all(not k.startswith("s1-") or k == "s1-0" for k in keys)


def test_a_dataset_of_another_latent_width_is_refused_naming_both(tmp_path):
    fake = simple_dataset(tmp_path, shards=1)
    with pytest.raises(DatasetMismatchError, match="dimension 16.*latent_dim 128"):
        LatentLoader(loader(fake.url), latent_dim=128)


def test_a_newer_schema_major_is_refused(tmp_path):
    from losatok_data.errors import SchemaVersionError

    fake = simple_dataset(tmp_path, shards=1)
    card = tmp_path / "simple" / "card.json"
    data = json.loads(card.read_text())
    data["schema_version"] = "2.0"
    card.write_text(json.dumps(data))
    with pytest.raises(SchemaVersionError, match="2.0"):
        LatentLoader(loader(fake.url), latent_dim=16)


def test_length_bucketing_keeps_padding_small(tmp_path):
    fake = write_fake_dataset(
        str(tmp_path / "ds"), n_shards=4, samples_per_shard=16, min_frames=5, max_frames=80
    )
    config = LoaderConfig(path=fake.url, batch_frames=400, max_frames=80, shuffle_buffer=32)
    padded = np.mean([1 - float(b.mask.float().mean()) for b in LatentLoader(config, latent_dim=16)])
    # the same lengths grouped in arrival order, as a loader without bucketing would
    lengths = [min(s.frame_count, 80) for s in fake.samples.values()]
    unbucketed, group = [], []
    for n in lengths:
        if group and max(group + [n]) * (len(group) + 1) > 400:
            unbucketed.append(1 - sum(group) / (max(group) * len(group)))
            group = []
        group.append(n)
    assert padded < 0.6 * np.mean(unbucketed), (padded, np.mean(unbucketed))


def test_loader_workers_give_the_same_batches_as_reading_in_process(tmp_path):
    fake = write_fake_dataset(
        str(tmp_path / "ds"), n_shards=5, samples_per_shard=6, min_frames=10, max_frames=60
    )
    epochs = {}
    for workers in (0, 2):
        config = loader(fake.url, workers=workers)
        lo = LatentLoader(config, latent_dim=16)
        lo.batches.streams_per_rank = 2  # in-process: the same two streams, read round robin
        lo.batches.taken = [0, 0]
        epochs[workers] = [tuple(b.keys) for b in lo]
    assert epochs[0] == epochs[2]
    assert len({k.split("-")[0] for keys in epochs[2] for k in keys}) >= 2


def test_the_split_across_ranks_changes_every_epoch_and_stays_balanced(tmp_path):
    fake = write_fake_dataset(
        str(tmp_path / "ds"), n_shards=12, samples_per_shard=3, min_frames=20, max_frames=30
    )
    loaders = ranks(loader(fake.url), 3)
    shares = []
    for _ in range(3):
        steps = lockstep(loaders)
        shares.append([frozenset(k.split("-")[0] for step in steps for k in step[r].keys) for r in range(3)])
        assert all(len(share) == 4 for share in shares[-1])  # equal shards, equal seconds (within one shard)
    assert len({tuple(s) for s in shares}) == 3, shares  # a rank reads other shards in each epoch


def test_a_rank_needing_fewer_batches_splits_its_own_to_keep_the_count():
    plans = []
    for lengths in (np.full(8, 100), np.full(8, 10)):  # 8 batches of one, or one batch of 8
        members, offsets = bucket(lengths, random.Random(0), 8, 100)
        plans.append(StreamPlan([], np.zeros(8, np.int32), np.arange(8, dtype=np.int32), members, offsets))
    assert [p.batches for p in plans] == [8, 1]
    equalise([plans[1]], 8)
    assert plans[1].batches == 8 and sorted(np.concatenate([plans[1].batch(i) for i in range(8)])) == list(
        range(8)
    )
    equalise([plans[0]], 10)  # more batches than samples: the rest are empty (padding)
    assert [len(plans[0].batch(i)) for i in range(10)] == [1] * 8 + [0, 0]


@pytest.mark.parametrize("new_world,workers", [(3, 0), (1, 0), (1, 2), (2, 1)])
def test_a_run_stopped_mid_epoch_resumes_on_another_layout_exactly_once(tmp_path, new_world, workers):
    fake = write_fake_dataset(
        str(tmp_path / "ds"), n_shards=7, samples_per_shard=9, min_frames=10, max_frames=80
    )
    before = ranks(loader(fake.url), 2)
    first = lockstep(before, steps=4)
    state = state_of(before)
    after = ranks(loader(fake.url, workers=workers), new_world, state)
    rest = lockstep(after)
    counts = keys_of(first) + keys_of(rest)
    assert set(counts) == set(fake.samples) and set(counts.values()) == {1}
    assert all(lo.epoch == 1 for lo in after)  # the epoch ended; the next one starts afresh
    assert len(lockstep(after)) > 0


def test_a_resume_under_the_same_layout_continues_the_very_same_batches(tmp_path):
    fake = write_fake_dataset(
        str(tmp_path / "ds"), n_shards=5, samples_per_shard=8, min_frames=10, max_frames=80
    )
    config = loader(fake.url, workers=2)
    straight = [[tuple(b.keys) for b in step] for step in lockstep(ranks(config, 2))]
    before = ranks(config, 2)
    head = [[tuple(b.keys) for b in step] for step in lockstep(before, steps=3)]
    resumed = ranks(config, 2, state_of(before))
    tail = [[tuple(b.keys) for b in step] for step in lockstep(resumed)]
    assert head + tail == straight


def test_a_resume_reads_no_shard_it_finished(tmp_path):
    """Resume cost is O(1) in the position: the tars of shards consumed before the checkpoint are
    deleted, and the rest of the epoch still comes whole, with no shard skipped."""
    fake = write_fake_dataset(
        str(tmp_path / "ds"), n_shards=10, samples_per_shard=6, min_frames=10, max_frames=30
    )
    config = loader(fake.url, shuffle_buffer=2)
    lo = LatentLoader(config, latent_dim=16)
    total = len(lo)
    iterator = iter(lo)
    first = [next(iterator) for _ in range(int(total * 0.9))]
    state = lo.state_dict()
    done = {k.split("-")[0] for b in first for k in b.keys}
    finished = [
        s for s in done if all(k in {k for b in first for k in b.keys} for k in fake.shard_keys[int(s[1:])])
    ]
    assert len(finished) >= 6
    for s in finished:
        (tmp_path / "ds" / "latent" / f"shard-{int(s[1:]):06d}.tar").unlink()
    resumed = LatentLoader(config, latent_dim=16)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert resumed.batches.skipped_shards == 0
    seen = [k for b in first + rest for k in b.keys]
    assert sorted(seen) == sorted(fake.samples)


def test_filters_select_from_the_index_and_count_what_they_keep(tmp_path):
    fake = write_fake_dataset(
        str(tmp_path / "ds"), n_shards=4, samples_per_shard=6, min_frames=5, max_frames=60
    )
    duration = {k: s.metadata.duration for k, s in fake.samples.items()}
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("s0-1\ns2-3\n\ns3-5\n")
    cases = [
        (Filters(min_seconds=1.0, max_seconds=2.0), {k for k, d in duration.items() if 1.0 <= d <= 2.0}),
        (Filters(splits=["train"]), set(fake.samples)),
        (Filters(splits=["valid"]), set()),
        (Filters(source_contains="s2"), None),
        (Filters(has_text=True), set(fake.samples)),
        (Filters(keys=["s1-0", "s1-1"]), {"s1-0", "s1-1"}),
        (Filters(keys_file=str(keys_file)), {"s0-1", "s2-3", "s3-5"}),
        (Filters(exclude_keys_file=str(keys_file)), set(fake.samples) - {"s0-1", "s2-3", "s3-5"}),
    ]
    for filters, expected in cases:
        if expected is None:
            expected = {k for k, s in fake.samples.items() if "s2" in s.metadata.source}
        config = loader(fake.url, filters=filters)
        lo = ranks(config, 2)
        got = keys_of(lockstep(lo))
        assert set(got) == expected and set(got.values()) <= {1}, filters
        assert lo[0].kept_counts()["kept"] + lo[1].kept_counts()["kept"] == len(expected)


def test_measure_filters_keep_samples_within_bounds_and_leave_out_unmeasured_ones(tmp_path, caplog):
    measures = {  # s1-3 has none, as a row written before schema 1.3 (in a dataset appended since)
        "s0-0": audio_measures("a", rms_db=-20.0, clipped_fraction=0.0, silent_fraction=0.1),
        "s0-1": audio_measures("b", rms_db=-120.0, peak=0.0, silent_fraction=1.0, loudness_lufs=None),
        "s0-2": audio_measures("c", rms_db=-45.0, silent_fraction=0.6, loudness_lufs=-40.0),
        "s0-3": audio_measures("d", rms_db=-8.0, peak=1.0, clipped_fraction=0.01, loudness_lufs=-7.0),
        "s1-0": audio_measures("e", rms_db=-30.0, silent_fraction=0.3, loudness_lufs=-28.0),
        "s1-1": audio_measures("f", rms_db=-25.0, clipped_fraction=0.0002, loudness_lufs=-23.0),
        "s1-2": audio_measures("a", rms_db=-20.0),
    }
    fake = simple_dataset(tmp_path, shards=2, per_shard=4, metadata=measures)

    def where(column, keep):
        return {k for k, m in measures.items() if m[column] is not None and keep(m[column])}

    cases = [
        (Filters(min_rms_db=-40.0), where("rms_db", lambda v: v >= -40.0)),
        (Filters(max_clipped_fraction=0.0), where("clipped_fraction", lambda v: v <= 0.0)),
        (Filters(max_silent_fraction=0.5), where("silent_fraction", lambda v: v <= 0.5)),
        (Filters(min_loudness_lufs=-30.0, max_loudness_lufs=-20.0), {"s0-0", "s1-0", "s1-1", "s1-2"}),
        (
            Filters(min_rms_db=-50.0, max_silent_fraction=0.5, splits=["train"]),
            {"s0-0", "s0-3", "s1-0", "s1-1", "s1-2"},
        ),
    ]
    for filters, expected in cases:
        assert filters.active() and "s1-3" not in expected
        lo = ranks(loader(fake.url, filters=filters), 2)
        got = keys_of(lockstep(lo))
        assert set(got) == expected and set(got.values()) <= {1}, filters
        assert lo[0].kept_counts()["kept"] + lo[1].kept_counts()["kept"] == len(expected)
        columns = lo[0].batches.sources[0].columns()
        assert {c for _, c, _, _ in filters.measure_bounds()} <= set(columns)
    assert "have no rms_db value" in caplog.text and "filters.min_rms_db leaves them out" in caplog.text
    plain = LatentLoader(loader(fake.url), latent_dim=16).batches.sources[0]
    assert not Filters().active() and plain.columns() == ["frame_count"]  # no measure read unasked


def test_a_measure_filter_on_data_written_before_schema_1_3_is_refused_naming_it(tmp_path):
    from dataclasses import replace

    from losatok_data.card import write_card

    fake = simple_dataset(tmp_path, shards=1, per_shard=3)
    write_card(fake.layout, replace(fake.card, schema_version="1.2"))
    old = loader(fake.url, filters=Filters(max_silent_fraction=0.5, min_rms_db=-40.0))
    with pytest.raises(
        DatasetMismatchError,
        match=rf"^{fake.url} has no rms_db measures: written before schema 1.3 \(its card: 1.2\), "
        r"so filters.min_rms_db would keep no sample",
    ):
        LatentLoader(old, latent_dim=16)
    mixture = LoaderConfig(datasets=[DatasetSpec(path=fake.url, filters=Filters(max_loudness_lufs=-10.0))])
    with pytest.raises(DatasetMismatchError, match=r"has no loudness_lufs measures"):
        LatentLoader(mixture, latent_dim=16)
    # the same data trains as before without measure filters
    kept = {
        k
        for b in LatentLoader(loader(fake.url, filters=Filters(min_seconds=0.0)), latent_dim=16)
        for k in b.keys
    }
    assert kept == set(fake.samples)


def test_a_mixture_visits_each_dataset_by_its_weight(tmp_path):
    a = simple_dataset(tmp_path, shards=2, per_shard=4, name="speech")
    b = simple_dataset(tmp_path, shards=4, per_shard=3, name="music", seed=1)
    c = simple_dataset(tmp_path, shards=4, per_shard=2, name="sfx", seed=2)
    config = LoaderConfig(
        datasets=[
            DatasetSpec(path=a.url, weight=2.0),
            DatasetSpec(path=b.url, weight=1.0),
            DatasetSpec(path=c.url, weight=0.5),
        ],
        batch_frames=120,
        max_frames=40,
        shuffle_buffer=4,
    )
    loaders = ranks(config, 2)
    epochs = [lockstep(loaders) for _ in range(2)]
    for steps in epochs:
        per = collections.defaultdict(collections.Counter)
        for step in steps:
            for batch in step:
                for key, d in zip(batch.keys, batch.datasets):
                    per[d][key] += 1
        assert set(per[0].values()) == {2} and len(per[0]) == 8  # weight 2: every sample twice
        assert set(per[1].values()) == {1} and len(per[1]) == 12  # weight 1: once
        assert set(per[2].values()) == {1} and len(per[2]) == 4  # weight 0.5: half the shards
    halves = [
        {k for step in steps for b in step for k, d in zip(b.keys, b.datasets) if d == 2} for steps in epochs
    ]
    assert not halves[0] & halves[1]  # the other half in the next epoch
    seen = loaders[0].samples_seen()
    assert set(seen) == {"speech", "music", "sfx"}
    assert sum(seen.values()) == sum(len(b.keys) for step in epochs[0] + epochs[1] for b in step[:1])


def test_a_mixture_of_two_tokenizers_is_refused_naming_both(tmp_path):
    import dataclasses

    from losatok_data.card import read_card, write_card

    a = simple_dataset(tmp_path, shards=1, name="a")
    b = simple_dataset(tmp_path, shards=1, name="b")
    card = read_card(b.layout)
    write_card(
        b.layout,
        dataclasses.replace(card, tokenizer=dataclasses.replace(card.tokenizer, config_hash="f" * 64)),
    )
    config = LoaderConfig(datasets=[DatasetSpec(path=a.url), DatasetSpec(path=b.url)])
    with pytest.raises(
        DatasetMismatchError, match=r"b was made by tokenizer tiny \(config ffffffffffff.*a by"
    ):
        LatentLoader(config, latent_dim=16)


def test_pooled_statistics_normalise_a_mixture_as_one(tmp_path):
    from losatok_data.stats import ChannelStats

    a = simple_dataset(tmp_path, shards=2, name="a")
    b = simple_dataset(tmp_path, shards=2, name="b", seed=3)
    config = LoaderConfig(datasets=[DatasetSpec(path=a.url), DatasetSpec(path=b.url, weight=2.0)])
    lo = LatentLoader(config, latent_dim=16)
    merged = ChannelStats.merge_all([a.card.latent_stats, b.card.latent_stats, b.card.latent_stats])
    assert np.allclose(lo.mean, merged.mean, atol=1e-6) and np.allclose(lo.std, merged.std, atol=1e-5)
    own = LatentLoader(LoaderConfig(datasets=config.datasets, stats="per_dataset"), latent_dim=16)
    assert not np.allclose(own.stats_by_dataset()["a"]["mean"], own.stats_by_dataset()["b"]["mean"])


def test_a_resume_under_other_filters_is_refused_in_one_line_unless_told_to_restart(tmp_path):
    fake = simple_dataset(tmp_path, shards=3)
    lo = LatentLoader(loader(fake.url), latent_dim=16)
    next(iter(lo))
    state = lo.state_dict()
    changed = loader(fake.url, filters=Filters(languages=["en"]))
    with pytest.raises(DatasetMismatchError, match=r"data.datasets\[0\].filters.languages: None -> \['en'\]"):
        LatentLoader(changed, latent_dim=16).load_state_dict(state)
    changed.restart_epoch = True
    other = LatentLoader(changed, latent_dim=16)
    other.load_state_dict(state)
    assert other.epoch == 1
    # batch_frames only shapes batches: allowed, the rest of the epoch is planned again
    resized = LatentLoader(loader(fake.url, batch_frames=60), latent_dim=16)
    resized.load_state_dict(state)
    assert resized.epoch == 0 and len(resized) > 0
    # a state saved before the measure filters existed names none of them: it was unfiltered
    older = json.loads(state["fingerprint"])
    for name in MEASURE_FILTERS:
        del older["datasets"][0]["filters"][name]
    same = LatentLoader(loader(fake.url), latent_dim=16)
    same.load_state_dict({**state, "fingerprint": json.dumps(older)})
    assert same.epoch == 0


def test_the_loader_sees_the_whole_dataset_or_a_pinned_generation(tmp_path):
    from dataclasses import replace

    from losatok_data.card import GenerationInfo, write_card

    fake = simple_dataset(tmp_path)  # shards 0..3; say 0-1 came first and 2-3 were appended
    generations = (
        GenerationInfo(1, "2026-11-01T00:00:00+00:00", "run-1", "/corpus", first_shard=0, shards=2),
        GenerationInfo(2, "2026-11-08T00:00:00+00:00", "run-2", "/corpus", first_shard=2, shards=2),
    )
    write_card(fake.layout, replace(fake.card, generations=generations))
    everything = {k for b in LatentLoader(loader(fake.url), latent_dim=16) for k in b.keys}
    pinned = {k for b in LatentLoader(loader(fake.url, generation=1), latent_dim=16) for k in b.keys}
    assert everything == set(fake.samples)
    assert pinned == {k for k in fake.samples if k.startswith(("s0-", "s1-"))}


def test_remote_shards_are_fetched_once_into_the_cache_and_checked(tmp_path, s3_endpoint, s3_bucket):
    from losatok_storage.testing import FaultProxy

    direct = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint}}
    url = f"s3://{s3_bucket}/cached-{tmp_path.name}"
    fake = write_fake_dataset(url, n_shards=3, samples_per_shard=4, storage_options=direct)
    with FaultProxy("127.0.0.1", int(s3_endpoint.rsplit(":", 1)[1])) as proxy:
        options = {**direct, "client_kwargs": {"endpoint_url": proxy.url}, "skip_instance_cache": True}
        config = loader(url, storage_options=options, cache_gb=1.0, cache_dir=str(tmp_path / "cache"))
        lo = LatentLoader(config, latent_dim=16)
        tar_gets = lambda: [r for r in proxy.requests if r.startswith("GET") and ".tar" in r]  # noqa: E731
        first = [k for b in lo for k in b.keys]
        assert sorted(first) == sorted(fake.samples) and len(tar_gets()) == 3  # one GET per shard
        second = [k for b in lo for k in b.keys]
        assert sorted(second) == sorted(fake.samples) and len(tar_gets()) == 3  # none again
        # a cached copy whose bytes changed is caught by the index checksums and fetched again
        entry = max((tmp_path / "cache").glob("*.entry"), key=lambda p: p.stat().st_size)
        data = bytearray(entry.read_bytes())
        data[700] ^= 0xFF
        entry.write_bytes(bytes(data))
        third = [k for b in lo for k in b.keys]
        assert sorted(third) == sorted(fake.samples) and len(tar_gets()) == 4
        assert lo.batches.skipped_samples == lo.batches.skipped_shards == 0


def test_the_documented_own_loop_runs_and_resumes_exactly_once(tmp_path):
    import re
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "training-data.md").read_text()
    code = re.search(r"<!-- example: own-loop -->\n```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "docs/training-data.md", "exec"), namespace)
    fake = simple_dataset(tmp_path, shards=4, per_shard=6)
    epoch = len(LatentLoader(LoaderConfig(path=fake.url, batch_frames=400, max_frames=40), latent_dim=16))
    stopped = namespace["train"](fake.url, steps=epoch // 2)
    resumed = namespace["train"](fake.url, steps=epoch, checkpoint=stopped)
    assert sorted(stopped["seen"] + resumed["seen"]) == sorted(fake.samples)
