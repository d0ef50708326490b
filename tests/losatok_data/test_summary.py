"""`shards.parquet`: per-shard totals a loader reads in place of the whole index."""

import logging
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from losatok_data.card import GenerationInfo, write_card
from losatok_data.index import (
    INDEX_SCHEMA,
    KIND_KEY,
    VERSION_KEY,
    ShardInfo,
    read_index,
    read_shard_summary,
    shard_summaries,
    summarise_shards,
    write_shard_summary,
)
from losatok_data.reader import open_dataset
from losatok_data.testing import fake_sample
from losatok_data.verify import verify_dataset
from losatok_data.versioning import SCHEMA_VERSION
from losatok_data.writer import write_shard


def whole_index_totals(layout) -> list[ShardInfo]:
    return shard_summaries(read_index(layout))


def corrupt_fragment(layout, number: int) -> None:
    """Any read of this fragment now fails; listing it still shows the shard as committed."""
    layout.fs.pipe_file(layout.index_path(number), b"not parquet")


def append_shard(dataset, number: int, frames: int, rng) -> None:
    fields = dataset.card.fields
    write_shard(dataset.layout, number, [fake_sample(f"s{number}-0", frames, fields, rng)], fields)


def test_summary_equals_the_totals_of_the_whole_index(dataset):
    layout = dataset.layout
    expected = whole_index_totals(layout)
    summary = read_shard_summary(layout)
    assert sorted(summary) == [0, 1]
    for want in expected:
        got = summary[want.number]
        assert (got.name, got.samples, got.frames) == (want.name, want.samples, want.frames)
        assert got.seconds == pytest.approx(want.seconds, rel=1e-12)
    assert summarise_shards(layout, [1, 0]) == [summary[1], summary[0]]  # from fragments, in the order asked
    metadata = pq.read_schema(layout.summary_path).metadata
    assert metadata[VERSION_KEY] == SCHEMA_VERSION.encode() and metadata[KIND_KEY] == b"shard-summary"
    assert not layout.summary_path.startswith(f"{layout.root}/index/")  # index/*.parquet stays one table


def test_shards_without_a_summary_come_from_the_fragments(dataset, caplog):
    dataset.layout.fs.rm(dataset.layout.summary_path)  # a dataset written before the file existed
    with caplog.at_level(logging.INFO, logger="losatok_data.reader"):
        shards = open_dataset(dataset.url).shards()
    assert shards == summarise_shards(dataset.layout, [0, 1])
    assert [(s.samples, s.frames) for s in shards] == [
        (s.samples, s.frames) for s in whole_index_totals(dataset.layout)
    ]
    assert [r.getMessage().split(" committed")[0] for r in caplog.records] == ["2 of 2"]


def test_a_stale_summary_is_trusted_and_only_the_missing_shards_are_read(dataset, rng, caplog):
    layout = dataset.layout
    expected = whole_index_totals(layout)
    append_shard(dataset, 2, 7, rng)  # committed after the summary: a run killed before finalising
    write_shard(layout, 3, [], dataset.card.fields)  # an empty committed shard
    corrupt_fragment(layout, 0)  # shards() must not open the fragments the summary covers
    corrupt_fragment(layout, 1)
    with pytest.raises(pa.ArrowInvalid):
        read_index(layout)  # so a whole-index read would fail here
    with caplog.at_level(logging.INFO, logger="losatok_data.reader"):
        shards = open_dataset(dataset.url).shards()
    assert [s.number for s in shards] == [0, 1, 2, 3]
    assert [(s.samples, s.frames) for s in shards[:2]] == [(s.samples, s.frames) for s in expected]
    assert shards[2:] == [ShardInfo(2, "shard-000002", 1, 7, 7 / 25), ShardInfo(3, "shard-000003", 0, 0, 0.0)]
    assert len(caplog.records) == 1 and caplog.records[0].getMessage().startswith("2 of 4 committed shards")


def test_a_summary_row_of_an_uncommitted_shard_is_ignored_by_readers_and_a_fault_for_verify(dataset):
    layout = dataset.layout
    extra = ShardInfo(5, "shard-000005", 4, 40, 1.6)
    write_shard_summary(layout, [*read_shard_summary(layout).values(), extra])
    assert [s.number for s in open_dataset(dataset.url).shards()] == [0, 1]
    report = verify_dataset(dataset.url, quick=True)
    assert [f.where for f in report.faults] == ["shards.parquet shard-000005"]
    assert "not committed" in report.faults[0].message


def test_verify_catches_a_wrong_row_and_warns_of_a_missing_one(dataset, rng):
    layout = dataset.layout
    rows = read_shard_summary(layout)
    true = rows[1]
    write_shard_summary(layout, [rows[0], replace(true, frames=true.frames + 1)])
    report = verify_dataset(dataset.url, quick=True)
    assert [f.where for f in report.faults] == ["shards.parquet shard-000001"]
    message = report.faults[0].message
    assert (
        f"{true.frames + 1} frames" in message
        and f"has {true.samples} samples, {true.frames} frames" in message
    )

    write_shard_summary(layout, [rows[0]])  # stale: shard 1 missing, which readers handle
    report = verify_dataset(dataset.url, quick=True)
    assert report.ok and [(w.level, w.where) for w in report.warnings] == [("warning", "shards.parquet")]
    assert "shard-000001" in report.warnings[0].message

    layout.fs.rm(layout.summary_path)  # optional: its absence is no finding
    assert verify_dataset(dataset.url, quick=True).findings == []


def test_a_pinned_reader_sees_its_generations_shards_only(dataset, rng):
    layout = dataset.layout
    append_shard(dataset, 2, 9, rng)
    write_shard_summary(layout, summarise_shards(layout, [0, 1, 2]))
    generations = (
        GenerationInfo(1, "2026-11-01T00:00:00+00:00", "run-1", "/corpus", first_shard=0, shards=2),
        GenerationInfo(2, "2026-11-08T00:00:00+00:00", "run-2", "/corpus", first_shard=2, shards=1),
    )
    write_card(layout, replace(dataset.card, generations=generations))
    corrupt_fragment(layout, 2)  # the summary has it, so no reader opens its fragment
    pinned = open_dataset(dataset.url, generation=1)
    assert [s.number for s in pinned.shards()] == [0, 1]
    assert [s.samples for s in open_dataset(dataset.url).shards()] == [3, 3, 1]
    with pytest.raises(KeyError, match=r"shards \[2\]"):
        pinned.index_of([2])


def test_index_of_reads_the_given_shards_and_columns_only(dataset):
    reader = open_dataset(dataset.url)
    table = reader.index_of([1, 0], ["key", "duration"])
    assert table.column_names == ["key", "duration"]
    assert table.column("key").to_pylist() == [*dataset.shard_keys[1], *dataset.shard_keys[0]]
    whole = reader.index_of([0])
    assert whole.schema.names == INDEX_SCHEMA.names and whole.num_rows == 3
    assert reader.index_of([], ["key"]).column_names == ["key"]
    with pytest.raises(KeyError, match=r"shards \[7\]"):
        reader.index_of([0, 7])


def test_index_of_reads_columns_an_older_fragment_lacks_as_nulls(dataset):
    layout = dataset.layout
    older = read_index(layout, [1]).drop_columns(["speaker", "split"])  # as an older minor wrote it
    pq.write_table(older.replace_schema_metadata(INDEX_SCHEMA.metadata), layout.index_path(1))
    table = open_dataset(dataset.url).index_of([0, 1], ["key", "split"])
    assert table.column("split").to_pylist() == ["train"] * 3 + [None] * 3
