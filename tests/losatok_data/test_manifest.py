import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from losatok_data.manifest import ManifestError, ManifestRow, read_manifest

ROWS = [
    {"location": "/corpus/a.flac", "id": "a", "text": "hello", "tags": ["speech", "en"], "split": "train"},
    {"location": "s3://bucket/b.mp3", "start": 1.5, "end": 4.0, "caption": "a dog barks", "language": "en"},
    {"location": "/corpus/c.wav", "speaker": "spk1", "corpus_name": "demo"},
]
EXPECTED = [
    ManifestRow("/corpus/a.flac", id="a", text="hello", tags=("speech", "en"), split="train"),
    ManifestRow("s3://bucket/b.mp3", start=1.5, end=4.0, caption="a dog barks", language="en"),
    ManifestRow("/corpus/c.wav", speaker="spk1", extra={"corpus_name": "demo"}),
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_csv(path, rows):
    import csv

    columns = sorted({k for r in rows for k in r})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "|".join(v) if isinstance(v, list) else v for k, v in r.items()})


def write_parquet(path, rows):
    columns = sorted({k for r in rows for k in r})
    pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows]), path)


WRITERS = {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}


@pytest.mark.parametrize("format", WRITERS)
def test_reads_every_format(tmp_path, format):
    path = tmp_path / f"manifest.{format}"
    WRITERS[format](path, ROWS)
    assert read_manifest(str(path)) == EXPECTED


def test_metadata_carries_everything_but_location_and_span():
    row = EXPECTED[0]
    assert row.metadata() == {"id": "a", "text": "hello", "tags": ["speech", "en"], "split": "train"}


def test_aliases_path_and_transcript(tmp_path):
    path = tmp_path / "m.jsonl"
    write_jsonl(path, [{"path": "/x.wav", "transcript": "hi", "id": 7}])
    assert read_manifest(str(path)) == [ManifestRow("/x.wav", id="7", text="hi")]


@pytest.mark.parametrize("format", WRITERS)
@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        ({"location": "/a.wav", "start": 3.0, "end": 2.0}, "end", "not after start"),
        ({"location": "/a.wav", "start": -1.0}, "start", "negative"),
        ({"location": "/a.wav", "start": "soon"}, "start", "seconds"),
        ({"location": "", "text": "no file"}, "location", "missing"),
        ({"location": "ftpx://host/a.wav"}, "location", "unknown protocol"),
    ],
)
def test_bad_row_names_row_and_field(tmp_path, format, bad, field, words):
    path = tmp_path / f"m.{format}"
    rows = [{"location": "/ok.wav", "start": 0.0, "end": 1.0, "text": "fine"}, bad]
    if isinstance(bad.get("start"), str):
        rows[0]["start"] = "0.0"  # a parquet column has one type; numeric strings are read as seconds
    WRITERS[format](path, rows)
    with pytest.raises(ManifestError) as info:
        read_manifest(str(path))
    assert info.value.row == 2 and info.value.field == field
    assert f"m.{format} row 2, field {field!r}" in str(info.value) and words in str(info.value)


def test_jsonl_row_is_line_number_and_bad_json_is_named(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"location": "/a.wav"}\n\n{"location": "/b.wav", "tags": "x|y"}\n{not json\n')
    with pytest.raises(ManifestError, match="row 4: is not valid JSON"):
        read_manifest(str(path))


def test_jsonl_type_errors(tmp_path):
    path = tmp_path / "m.jsonl"
    write_jsonl(path, [{"location": "/a.wav", "speaker": 3}])
    with pytest.raises(ManifestError, match="row 1, field 'speaker': must be a string"):
        read_manifest(str(path))
    write_jsonl(path, [{"location": "/a.wav", "tags": [1, 2]}])
    with pytest.raises(ManifestError, match="field 'tags'"):
        read_manifest(str(path))


def test_csv_extra_cells_refused(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("location,text\n/a.wav,hi\n/b.wav,hi,surplus\n")
    with pytest.raises(ManifestError, match="row 2"):
        read_manifest(str(path))


def test_unknown_suffix_refused(tmp_path):
    with pytest.raises(ValueError, match="manifest format"):
        read_manifest(str(tmp_path / "m.txt"))
