import datetime as dt

from losatok_data.layout import DatasetLayout
from losatok_data.ledger import FailureRecord, failure_counts, read_failures, write_failures


def test_fragments_per_writer_read_as_one_table(tmp_path):
    layout = DatasetLayout(str(tmp_path))
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    write_failures(
        layout, "actor-0", [FailureRecord("/a.mp3", "decode", "DecodeError", "bad frame", 1, when)]
    )
    write_failures(
        layout,
        "actor-1",
        [
            FailureRecord.of("s3://b/c.flac", "read", TimeoutError("timed out"), attempts=3, key="c"),
            FailureRecord.of("/d.wav", "decode", ValueError("x" * 5000)),
        ],
    )
    table = read_failures(layout)
    assert table.num_rows == 3
    rows = {r["location"]: r for r in table.to_pylist()}
    assert rows["/a.mp3"]["time"] == when and rows["/a.mp3"]["attempts"] == 1
    assert rows["s3://b/c.flac"]["error_type"] == "TimeoutError" and rows["s3://b/c.flac"]["attempts"] == 3
    assert len(rows["/d.wav"]["message"]) == 2000
    assert failure_counts(table) == {"decode": 2, "read": 1}


def test_rewriting_a_writer_fragment_replaces_it(tmp_path):
    layout = DatasetLayout(str(tmp_path))
    write_failures(layout, "w", [FailureRecord("/a", "read", "E", "m")] * 2)
    write_failures(layout, "w", [FailureRecord("/a", "read", "E", "m")])
    assert read_failures(layout).num_rows == 1


def test_empty_ledger(tmp_path):
    assert read_failures(DatasetLayout(str(tmp_path))).num_rows == 0
