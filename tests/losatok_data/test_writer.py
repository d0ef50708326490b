import numpy as np
import pytest
import webdataset as wds

from losatok_data.errors import SchemaError
from losatok_data.fields import LATENT_GROUP, SEMANTIC_GROUP
from losatok_data.layout import DatasetLayout
from losatok_data.sample import decode_sample, encode_sample
from losatok_data.testing import fake_sample
from losatok_data.writer import ShardWriter, write_shard


def test_webdataset_reads_our_tars_field_by_field(tmp_path, fields, rng):
    layout = DatasetLayout(str(tmp_path))
    samples = [fake_sample(f"utt-{i}", 10 + i, fields, rng, language="en") for i in range(4)]
    written = write_shard(layout, 3, samples, fields, frame_rate=25.0)

    latent_tar = str(tmp_path / "latent" / "shard-000003.tar")
    semantic_tar = str(tmp_path / "semantic" / "shard-000003.tar")
    read = list(wds.WebDataset(latent_tar, shardshuffle=False))
    joined = list(wds.WebDataset(semantic_tar, shardshuffle=False))
    assert [s["__key__"] for s in read] == [s["__key__"] for s in joined] == [s.key for s in samples]
    assert set(read[0]) - {"__url__", "__local_path__"} == {
        "__key__",
        "latent.npy",
        "logvar.npy",
        "semantic_low.npy",
        "json",
    }
    assert set(joined[0]) - {"__url__", "__local_path__"} == {"__key__", "semantic.npy"}
    for original, latent, semantic in zip(samples, read, joined):
        decoded = decode_sample(
            {**latent, **semantic}, fields, frame_rate=25.0, groups=[LATENT_GROUP, SEMANTIC_GROUP]
        )
        assert decoded.metadata == original.metadata
        for name in ("latent", "logvar", "semantic_low", "semantic"):
            np.testing.assert_array_equal(decoded.arrays[name], original.arrays[name].astype(np.float16))
    assert written.info.samples == 4 and written.info.frames == sum(10 + i for i in range(4))
    assert set(written.bytes_by_group) == {"latent", "semantic"}
    assert (tmp_path / "index" / "shard-000003.parquet").exists()


def test_stats_of_a_shard_are_over_stored_latents(tmp_path, fields, rng):
    samples = [fake_sample(f"k{i}", 20, fields, rng) for i in range(3)]
    written = write_shard(DatasetLayout(str(tmp_path)), 0, samples, fields)
    stored = np.concatenate([s.latent.astype(np.float16) for s in samples]).astype(np.float64)
    np.testing.assert_allclose(written.latent_stats.mean, stored.mean(axis=0), rtol=1e-12, atol=1e-12)
    assert written.latent_stats.count == 60


def test_identical_samples_give_identical_bytes(tmp_path, fields):
    for run in ("a", "b"):
        samples = [fake_sample(f"k{i}", 12, fields, np.random.default_rng(i)) for i in range(2)]
        write_shard(DatasetLayout(str(tmp_path / run)), 0, samples, fields)
    for group in ("latent", "semantic"):
        a = (tmp_path / "a" / group / "shard-000000.tar").read_bytes()
        assert a == (tmp_path / "b" / group / "shard-000000.tar").read_bytes()


def test_failed_write_commits_nothing(tmp_path, fields, rng):
    layout = DatasetLayout(str(tmp_path))
    good = fake_sample("good", 10, fields, rng)
    bad = fake_sample("bad", 10, fields, rng)
    bad = type(bad)(bad.key, bad.metadata, {**bad.arrays, "latent": np.full((10, 16), np.nan, np.float32)})
    with pytest.raises(SchemaError, match="'bad', field 'latent'"):
        write_shard(layout, 0, [good, bad], fields)
    assert layout.committed_shards() == {}
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []  # no tar, no temporary file, no index fragment


def test_duplicate_key_in_a_shard_refused(tmp_path, fields, rng):
    sample = fake_sample("same", 10, fields, rng)
    with pytest.raises(SchemaError, match="written twice"):
        write_shard(DatasetLayout(str(tmp_path)), 0, [sample, sample], fields)


def test_shard_writer_writes_one_group_and_needs_its_fields(tmp_path, fields, rng):
    layout = DatasetLayout(str(tmp_path))
    members = encode_sample(fake_sample("k", 10, fields, rng), fields)
    with ShardWriter(layout, SEMANTIC_GROUP, 0, fields) as writer:
        writer.write(members)
    [sample] = list(wds.WebDataset(str(tmp_path / "semantic" / "shard-000000.tar"), shardshuffle=False))
    assert sample["__key__"] == "k" and "semantic.npy" in sample and "json" not in sample
    del members["semantic.npy"]
    with (
        pytest.raises(SchemaError, match="lacks 'semantic'"),
        ShardWriter(layout, SEMANTIC_GROUP, 1, fields) as w,
    ):
        w.write(members)
    assert not (tmp_path / "semantic" / "shard-000001.tar").exists()
    with pytest.raises(SchemaError, match="group 'semantic'"):
        ShardWriter(layout, SEMANTIC_GROUP, 0, [f for f in fields if f.group == LATENT_GROUP])


def test_failed_write_to_s3_leaves_no_object(s3_endpoint, s3_bucket, fields, rng):
    layout = DatasetLayout(f"s3://{s3_bucket}/ds", {"endpoint_url": s3_endpoint})
    bad = fake_sample("bad", 10, fields, rng)
    bad = type(bad)(bad.key, bad.metadata, {**bad.arrays, "semantic": np.full((10, 64), np.inf, np.float32)})
    with pytest.raises(SchemaError, match="'bad', field 'semantic'"):
        write_shard(layout, 0, [fake_sample("good", 10, fields, rng), bad], fields)
    layout.fs.invalidate_cache()
    assert layout.fs.find(layout.root) == []
    written = write_shard(layout, 0, [fake_sample("good", 10, fields, rng)], fields)
    assert layout.committed_shards() == {0: layout.index_path(0)} and written.bytes_by_group["semantic"] > 0
