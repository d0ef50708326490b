import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from losatok_data.index import (
    INDEX_SCHEMA,
    IndexRow,
    ShardInfo,
    assign_shards,
    fragment_version,
    read_index,
    shard_summaries,
    write_index_fragment,
)
from losatok_data.layout import DatasetLayout
from losatok_data.versioning import SCHEMA_VERSION


def test_index_reads_as_one_table_with_pyarrow_and_pandas(dataset):
    root = dataset.layout.root
    table = pads.dataset(f"{root}/index", format="parquet").to_table()
    assert table.num_rows == 6 and table.schema.names == INDEX_SCHEMA.names
    frame = pytest.importorskip("pandas").read_parquet(f"{root}/index")
    assert sorted(frame["key"]) == sorted(dataset.samples)
    row = frame.set_index("key").loc["s1-2"]
    sample = dataset.samples["s1-2"]
    assert row["shard"] == "shard-000001" and row["frame_count"] == sample.frame_count
    assert row["duration"] == sample.metadata.duration and row["text"] == "text of s1-2"
    assert list(row["fields"]) == ["latent", "logvar", "semantic_low", "semantic"]


def test_fragment_carries_schema_version(dataset):
    path = dataset.layout.index_path(0)
    assert fragment_version(dataset.layout, path) == SCHEMA_VERSION


def test_shard_summaries_count_samples_and_seconds(dataset):
    infos = shard_summaries(read_index(dataset.layout))
    assert [i.name for i in infos] == ["shard-000000", "shard-000001"]
    for info in infos:
        keys = dataset.shard_keys[info.number]
        assert info.samples == len(keys)
        assert info.frames == sum(dataset.samples[k].frame_count for k in keys)
        assert info.seconds == pytest.approx(sum(dataset.samples[k].metadata.duration for k in keys))


def test_older_minor_fragment_without_new_columns_reads_as_nulls(tmp_path):
    layout = DatasetLayout(str(tmp_path))
    old_schema = pa.schema(
        [f for f in INDEX_SCHEMA if f.name not in ("speaker", "split")], metadata=INDEX_SCHEMA.metadata
    )
    old = pa.Table.from_pylist(
        [
            {
                "key": "k",
                "shard": "shard-000000",
                "frame_count": 5,
                "duration": 0.2,
                "source": "a",
                "offset": 0.0,
                "fields": ["latent"],
            }
        ],
        schema=old_schema,
    )
    layout.fs.makedirs(f"{layout.root}/index", exist_ok=True)
    pq.write_table(old, f"{layout.root}/index/shard-000000.parquet")
    table = read_index(layout)
    assert table.column("speaker").to_pylist() == [None] and table.column("key").to_pylist() == ["k"]


def test_rows_must_belong_to_the_fragment_shard(tmp_path):
    row = IndexRow("k", "shard-000001", 5, 0.2, "a", 0.0, ("latent",))
    with pytest.raises(ValueError, match="do not belong to shard-000000"):
        write_index_fragment(DatasetLayout(str(tmp_path)), 0, [row])


def test_assign_shards_balances_seconds_deterministically():
    shards = [
        ShardInfo(n, f"shard-{n:06d}", 10, 250 * s, float(s))
        for n, s in enumerate([9, 1, 8, 2, 7, 3, 6, 4, 5, 5])
    ]
    ranks = assign_shards(shards, 3)
    assert sorted(s.number for r in ranks for s in r) == list(range(10))  # each shard exactly once
    loads = [sum(s.seconds for s in r) for r in ranks]
    assert max(loads) - min(loads) <= 1.0  # 50 s over 3 ranks: 17/17/16
    assert ranks == assign_shards(list(reversed(shards)), 3)
    assert [len(r) for r in assign_shards(shards[:2], 4)] == [1, 1, 0, 0]
    with pytest.raises(ValueError):
        assign_shards(shards, 0)
