"""Corpora as the field keeps them: NeMo manifests, lhotse cuts, and our manifest with a column map.

Each is written with the real format (lhotse's own API for cuts), tokenized through a real
local Ray, and checked sample by sample: spans, metadata in the index, and exactly-once resume.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from jobs.data import LoaderConfig
from jobs.train_dit import OptimConfig, TrainDiTConfig, train_loop
from losatok_data.reader import open_dataset
from losatok_data.verify import verify_dataset
from losatok_input.sources import list_inputs
from losatok_input.testing import synth_music, synth_speech
from pipelines.run import tokenize
from pipelines.testing import tiny_run


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """A 12 s stereo music recording (spans of it are 'utterances') and a speech file."""
    root = tmp_path_factory.mktemp("recordings")
    music = synth_music(root / "long.flac", seconds=12.0, sample_rate=44_100, channels=2)
    speech = synth_speech(root / "speech.wav", "one two three four five six", sample_rate=22_050)
    return root, music, speech


def train_tiny_dit(dataset, out) -> None:
    """A few steps of the tiny DiT on the dataset, conditioned on its texts: the loss is finite."""
    config = TrainDiTConfig(
        data=LoaderConfig(path=str(dataset), batch_frames=400, max_frames=100, shuffle_buffer=4),
        model="tiny",
        optim=OptimConfig(lr=1e-3, warmup_steps=1),
        out_dir=str(out),
        max_steps=3,
        log_every=1,
        ckpt_every=3,
    )
    result = train_loop(config)
    assert result["step"] == 3 and np.isfinite(result["last_loss"])


SPANS = [(0.0, 2.0), (2.5, 1.5), (5.0, 3.0), (9.0, 2.5)]  # (offset, duration) in seconds


def test_nemo_manifest_spans_and_metadata_resume_exactly_once(ray_address, recordings, tmp_path):
    root, music, speech = recordings
    manifest = root / "train_manifest.json"  # NeMo's usual name; JSON lines whatever the suffix
    rows = [
        {"audio_filepath": music.name, "offset": o, "duration": d, "text": f"span {i}", "speaker_id": 7}
        for i, (o, d) in enumerate(SPANS)
    ]
    rows.append({"audio_filepath": str(speech), "duration": 2.0, "text": "counting", "lang": "en"})
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = tiny_run(manifest, tmp_path / "ds", kind="nemo", inputs_per_shard=2)

    items = list_inputs(config.source)
    assert [i.location for i in items[:4]] == [str(music)] * 4  # relative to the manifest's folder
    assert items[1].start == 2.5 and items[1].end == 4.0
    assert items[0].metadata["extra"] == {"speaker_id": 7} and items[4].metadata["language"] == "en"

    first = tokenize(config)
    assert first.ok and first.inputs == 5
    index = open_dataset(str(tmp_path / "ds")).index().to_pylist()
    by_text = {row["text"]: row for row in index}
    for i, (offset, duration) in enumerate(SPANS):
        row = by_text[f"span {i}"]
        assert row["offset"] == pytest.approx(offset) and row["duration"] == pytest.approx(duration, abs=0.05)
    assert by_text["counting"]["language"] == "en"
    again = tokenize(config)
    assert again.samples == 0 and again.units_resumed == first.units
    assert verify_dataset(str(tmp_path / "ds")).ok
    train_tiny_dit(tmp_path / "ds", tmp_path / "dit")


def test_lhotse_cuts_with_supervisions_and_a_multichannel_recording(ray_address, recordings, tmp_path):
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

    root, music, speech = recordings
    long, short = Recording.from_file(music), Recording.from_file(speech)
    assert long.num_channels == 2
    cuts = []
    for i, (offset, duration) in enumerate(SPANS):
        supervision = SupervisionSegment(
            id=f"sup-{i}",
            recording_id=long.id,
            start=offset,
            duration=duration,
            text=f"cut {i}",
            speaker=f"spk{i % 2}",
            language="de",
        )
        cuts.append(
            MonoCut(
                id=f"cut-{i}",
                start=offset,
                duration=duration,
                channel=0,
                recording=long,
                supervisions=[supervision],
            )
        )
    cuts.append(MonoCut(id="whole", start=0.0, duration=short.duration, channel=0, recording=short))
    path = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)

    config = tiny_run(path, tmp_path / "ds", kind="lhotse", inputs_per_shard=3)
    summary = tokenize(config)
    assert summary.ok and summary.inputs == 5
    rows = {row["id"]: row for row in open_dataset(str(tmp_path / "ds")).index().to_pylist()}
    assert set(rows) == {"cut-0", "cut-1", "cut-2", "cut-3", "whole"}
    for i, (offset, duration) in enumerate(SPANS):
        row = rows[f"cut-{i}"]
        assert row["text"] == f"cut {i}" and row["speaker"] == f"spk{i % 2}" and row["language"] == "de"
        assert row["offset"] == pytest.approx(offset) and row["duration"] == pytest.approx(duration, abs=0.05)
    assert rows["whole"]["text"] is None and rows["whole"]["duration"] == pytest.approx(
        short.duration, abs=0.05
    )
    assert verify_dataset(str(tmp_path / "ds")).ok
    assert tokenize(config).samples == 0  # resumes exactly once
    train_tiny_dit(tmp_path / "ds", tmp_path / "dit")


def test_manifest_column_map_renames_a_corpus_own_columns(ray_address, recordings, tmp_path):
    root, music, speech = recordings
    manifest = tmp_path / "corpus.csv"
    manifest.write_text(f"wav,sentence,begin,stop\n{speech},hello there,,\n{music},a chord,1.0,3.0\n")
    config = tiny_run(manifest, tmp_path / "ds", kind="manifest")
    config = replace(
        config,
        source=replace(
            config.source, columns={"wav": "location", "sentence": "text", "begin": "start", "stop": "end"}
        ),
    )
    assert tokenize(config).ok
    rows = {row["text"]: row for row in open_dataset(str(tmp_path / "ds")).index().to_pylist()}
    assert set(rows) == {"hello there", "a chord"}
    assert rows["a chord"]["offset"] == pytest.approx(1.0) and rows["a chord"]["duration"] == pytest.approx(
        2.0, abs=0.05
    )
    train_tiny_dit(tmp_path / "ds", tmp_path / "dit")


@pytest.mark.slow
def test_nemo_manifest_and_audio_on_s3(ray_address, recordings, s3_endpoint, s3_bucket):
    import s3fs

    root, music, speech = recordings
    # credentials travel in the storage options (Ray workers do not see this test's environment)
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint}}
    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    fs.put(str(music), f"{s3_bucket}/audio/long.flac")
    rows = [
        {"audio_filepath": "audio/long.flac", "offset": o, "duration": d, "text": f"s{i}"}
        for i, (o, d) in enumerate(SPANS)
    ]
    fs.pipe(f"{s3_bucket}/nemo.jsonl", ("\n".join(json.dumps(r) for r in rows) + "\n").encode())
    config = tiny_run(
        f"s3://{s3_bucket}/nemo.jsonl", f"s3://{s3_bucket}/ds", kind="nemo", storage_options=options
    )
    summary = tokenize(config)
    assert summary.ok and summary.inputs == len(SPANS)
    reader = open_dataset(f"s3://{s3_bucket}/ds", options)
    assert sorted(row["text"] for row in reader.index().to_pylist()) == [f"s{i}" for i in range(len(SPANS))]
    assert verify_dataset(f"s3://{s3_bucket}/ds", options).ok


def write_hf_audio_parquet(path, rows: list[dict], row_group_size: int) -> None:
    """A parquet file in the exact layout `datasets` writes for an Audio feature."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = {
        "id": {"dtype": "string", "_type": "Value"},
        "audio": {"sampling_rate": 16000, "_type": "Audio"},
        "text": {"dtype": "string", "_type": "Value"},
        "speaker_id": {"dtype": "int64", "_type": "Value"},
    }
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("audio", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            ("text", pa.string()),
            ("speaker_id", pa.int64()),
        ],
        metadata={"huggingface": json.dumps({"info": {"features": features}})},
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=row_group_size)


def test_hf_parquet_rows_by_row_group_with_bytes_paths_and_broken_rows(ray_address, recordings, tmp_path):
    from losatok_data.layout import DatasetLayout
    from losatok_data.ledger import read_failures
    from losatok_input.sources.hf_parquet import list_row_groups
    from losatok_input.testing import convert

    root, music, speech = recordings
    mp3 = convert(speech, tmp_path / "speech.mp3")
    (tmp_path / "clips").mkdir()
    beside = convert(music, tmp_path / "clips" / "chord.ogg")
    rows = [
        {
            "id": "utt-0",
            "audio": {"bytes": speech.read_bytes(), "path": "speech.wav"},
            "text": "counting",
            "speaker_id": 3,
        },
        {
            "id": "utt-1",
            "audio": {"bytes": mp3.read_bytes(), "path": "speech.mp3"},
            "text": "again",
            "speaker_id": 4,
        },
        {
            "id": "utt-2",
            "audio": {"bytes": None, "path": "clips/chord.ogg"},
            "text": "a chord",
            "speaker_id": 3,
        },
        {
            "id": "utt-3",
            "audio": {"bytes": b"not audio at all" * 50, "path": "x.flac"},
            "text": "broken",
            "speaker_id": 1,
        },
        {"id": "utt-4", "audio": None, "text": "nothing", "speaker_id": 1},
    ]
    data = tmp_path / "data"
    data.mkdir()
    write_hf_audio_parquet(data / "train-00000-of-00001.parquet", rows, row_group_size=2)
    config = tiny_run(data, tmp_path / "ds", kind="hf_parquet", max_failure_fraction=0.5)
    config = replace(config, source=replace(config.source, audio_root=str(tmp_path)))

    groups = list_row_groups(config.source)
    assert len(groups) == 3 and all(g.container == "parquet" for g in groups)  # one unit per row group
    summary = tokenize(config)
    assert summary.ok and summary.inputs == 5 and summary.failures == 2
    index = {row["id"]: row for row in open_dataset(str(tmp_path / "ds")).index().to_pylist()}
    assert set(index) == {"utt-0", "utt-1", "utt-2"}
    assert index["utt-0"]["text"] == "counting" and index["utt-0"]["speaker"] == "3"
    assert index["utt-2"]["text"] == "a chord" and index["utt-2"]["duration"] == pytest.approx(12.0, abs=0.05)
    assert index["utt-1"]["source"].endswith("train-00000-of-00001.parquet#utt-1")
    ledger = read_failures(DatasetLayout(str(tmp_path / "ds"))).to_pylist()
    assert sorted(r["location"].rsplit("#", 1)[1] for r in ledger) == ["utt-3", "utt-4"]  # by row id
    assert verify_dataset(str(tmp_path / "ds")).ok
    assert tokenize(config).samples == 0  # resumes exactly once
    train_tiny_dit(tmp_path / "ds", tmp_path / "dit")
    assert beside.exists()
