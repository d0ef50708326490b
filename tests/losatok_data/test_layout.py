import pytest

from losatok_data.layout import DatasetLayout, shard_name, shard_number
from losatok_storage.filesystem import open_atomic


def test_shard_names_are_fixed_width_and_parse_back():
    assert shard_name(7) == "shard-000007" and shard_number("shard-000007") == 7
    assert sorted(shard_name(n) for n in (10, 9, 100)) == [shard_name(n) for n in (9, 10, 100)]
    with pytest.raises(ValueError):
        shard_name(10**6)
    with pytest.raises(ValueError):
        shard_number("shard-7")


def test_paths_and_listings(dataset):
    layout = dataset.layout
    assert layout.tar_path("semantic", 1).endswith("/semantic/shard-000001.tar")
    assert list(layout.committed_shards()) == [0, 1] and list(layout.tars("latent")) == [0, 1]
    assert [p.rsplit("/", 1)[-1] for p in layout.failure_fragments()] == ["writer-0.parquet"]
    assert layout.url_of(layout.card_path) == f"{layout.root}/card.json"
    with pytest.raises(ValueError):
        layout.failures_path("../escape")


def test_s3_url_keeps_its_protocol():
    layout = DatasetLayout("s3://bucket/prefix/", {"anon": True})
    assert (
        layout.root == "bucket/prefix" and layout.url_of(layout.card_path) == "s3://bucket/prefix/card.json"
    )
    assert "anon" not in repr(layout)  # storage options (credentials) stay out of logs


def test_open_atomic_local_publishes_only_on_success(tmp_path):
    layout = DatasetLayout(str(tmp_path))
    target = layout.path("x", "file.bin")
    with pytest.raises(RuntimeError), open_atomic(layout.fs, target) as f:
        f.write(b"partial")
        raise RuntimeError("crash")
    assert list(tmp_path.rglob("*.bin*")) == []
    with open_atomic(layout.fs, target) as f:
        f.write(b"whole")
        assert not (tmp_path / "x" / "file.bin").exists()  # invisible until committed
    assert (tmp_path / "x" / "file.bin").read_bytes() == b"whole"
