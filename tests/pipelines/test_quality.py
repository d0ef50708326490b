"""Corpus quality at tokenization time, through real runs: every sample measured in the index,
silent segments left out and counted, duplicates skipped with sink.dedup, and the segmentation
mode recorded in the dataset's identity (older datasets keep cutting as they did)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from losatok_data.checksums import checksum
from losatok_data.index import CHECKSUM_KEY, INDEX_SCHEMA, MEASURE_COLUMNS, VERSION_KEY
from losatok_data.layout import DatasetLayout
from losatok_data.ledger import read_failures
from losatok_data.reader import open_dataset
from losatok_data.testing import rewrite_tar
from losatok_data.verify import verify_dataset
from losatok_data.versioning import SCHEMA_VERSION
from losatok_input.decoder import load_audio
from losatok_input.items import InputItem
from losatok_input.testing import convert, synth_music, synth_speech
from pipelines.config import SegmentConfig
from pipelines.dataflow import ContentRegistry
from pipelines.decode import decode_items
from pipelines.measures import measure
from pipelines.plan import RUN_FILE
from pipelines.run import model_config, run_identity, tokenize
from pipelines.segment import pause_bounds, segment_bounds
from pipelines.sink import SinkMismatchError, resolve_url
from pipelines.testing import tiny_run


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Speech said three times over (a copy in another folder, the same audio as lossless FLAC),
    other speech, music, and a file of digital silence."""
    root = tmp_path_factory.mktemp("quality")
    synth_speech(root / "said.wav", "the same words, said once and stored three times", sample_rate=16_000)
    (root / "copies").mkdir()
    shutil.copy(root / "said.wav", root / "copies" / "said.wav")
    convert(root / "said.wav", root / "copies" / "said.flac")
    synth_speech(root / "other.wav", "other words entirely, said only once", sample_rate=16_000)
    synth_music(root / "music.flac", seconds=3.0, sample_rate=22_050, channels=2)
    sf.write(root / "silence.wav", np.zeros(3 * 16_000, np.int16), 16_000, subtype="PCM_16")
    return root


def cut_of(config) -> str:
    """The segment.cut a run of `config` would write with."""
    return resolve_url(config.sink, run_identity(config, model_config(config)))[1].segment["cut"]


def run_config(corpus, sink, **segment):
    config = tiny_run(corpus, sink, inputs_per_shard=2, max_failure_fraction=0.5)
    return replace(config, segment=replace(config.segment, **segment))


def test_measured_deduplicated_silence_left_out_and_appended_to_data_before_measures(
    ray_address, corpus, tmp_path
):
    source, sink = tmp_path / "corpus", tmp_path / "ds"
    shutil.copytree(corpus, source)  # it grows below
    (source / "broken.wav").write_bytes(b"RIFF but nothing a decoder can read" * 50)
    config = run_config(source, sink, max_silent_fraction=0.9, loudness=True)
    config = replace(config, sink=replace(config.sink, dedup=True))
    summary = tokenize(config)
    assert summary.ok and summary.failures == 1
    assert summary.dropped == {"duplicate_inputs": 2, "silent_segments": 1}
    assert "left out 2 duplicate inputs (sink.dedup), 1 silent segments" in summary.describe()
    assert verify_dataset(str(sink)).ok  # json and index agree on every measure, too
    reader = open_dataset(str(sink))
    index = {row["key"]: row for row in reader.index().to_pylist()}
    by_name = {row["source"].rsplit("/", 1)[1]: row for row in index.values()}
    assert sorted(by_name) in (["music.flac", "other.wav", name] for name in ("said.flac", "said.wav"))
    assert len(index) == 3  # one of the three copies of `said`, whichever came first; no silence
    for key, row in index.items():  # every sample measured, as measure() says of its audio
        expected = measure(load_audio(row["source"]).numpy(), 16_000, loudness=True).as_dict()
        assert {c: row[c] for c in MEASURE_COLUMNS} == expected, row["source"]
        assert reader.sample(key).metadata.content_hash == row["content_hash"]
    assert 0.0 < by_name["other.wav"]["silent_fraction"] < 1.0  # speech has pauses
    assert -40 < by_name["other.wav"]["loudness_lufs"] < -5
    assert len({row["content_hash"] for row in index.values()}) == 3

    # an append: a fourth copy of audio the dataset holds is skipped, a new recording is not;
    # the broken file, mended into yet another copy and retried, is left out and no longer failed
    shutil.copy(source / "other.wav", source / "other_again.wav")
    shutil.copy(source / "other.wav", source / "broken.wav")
    synth_speech(source / "new.wav", "words nobody said before", sample_rate=16_000)
    summary = tokenize(replace(config, retry_failed=True))
    assert summary.dropped == {"duplicate_inputs": 2} and summary.samples == 1  # new.wav
    assert summary.failures == 0 and summary.recovered == 1 and summary.inputs == 4  # those with samples
    log = json.loads(sorted((sink / "runs").iterdir())[-1].read_text())
    assert log["dropped"] == {"duplicate_inputs": 2}
    (resolved,) = [
        r for r in read_failures(DatasetLayout(str(sink))).to_pylist() if r["stage"] == "recovered"
    ]
    assert (
        "broken" in resolved["key"]
        and "left out after an earlier failure: the same audio as" in resolved["message"]
    )
    assert tokenize(replace(config, retry_failed=True)).inputs_new == 0  # nothing to try again

    # the same data as software before schema 1.3 wrote it reads, verifies and takes an append
    downgrade_to_1_2(sink)
    assert verify_dataset(str(sink)).ok
    assert open_dataset(str(sink)).index().column("content_hash").null_count == 4
    shutil.copy(source / "new.wav", source / "new_again.wav")  # unhashed now: cannot be matched
    summary = tokenize(config)
    assert summary.ok and summary.samples == 1 and summary.dropped == {}
    reader = open_dataset(str(sink))
    assert reader.card.schema_version == SCHEMA_VERSION
    rows = {row["source"].rsplit("/", 1)[1]: row for row in reader.index().to_pylist()}
    assert rows["new.wav"]["rms_db"] is None and rows["new_again.wav"]["rms_db"] is not None
    assert verify_dataset(str(sink)).ok


def test_cuts_fall_at_pauses_for_a_new_dataset_and_the_mode_is_its_identity(ray_address, tmp_path):
    corpus = tmp_path / "long"
    corpus.mkdir()
    parts = []
    for i, words in enumerate(["one sentence here", "and a second one follows", "then a third", "the end"]):
        synth_speech(tmp_path / f"s{i}.wav", words * 3, sample_rate=16_000)
        parts += [load_audio(str(tmp_path / f"s{i}.wav")).numpy(), np.zeros(12_000, np.float32)]
    audio = np.concatenate(parts * 2)
    sf.write(corpus / "talk.wav", audio, 16_000, subtype="FLOAT")
    sink = tmp_path / "ds"
    config = run_config(corpus, sink, max_seconds=6.0)
    assert cut_of(config) == "pause"  # a new dataset
    tokenize(config)
    rows = open_dataset(str(sink)).index().to_pylist()
    bounds = pause_bounds(audio, 16_000, 6.0, 0.5)
    assert [round(r["offset"] * 16_000) for r in rows] == [start for start, _ in bounds]
    assert json.loads((sink / RUN_FILE).read_text())["segment"]["cut"] == "pause"
    with pytest.raises(SinkMismatchError, match="cut"):
        tokenize(replace(config, segment=replace(config.segment, cut="equal")))

    # a dataset written before the mode was recorded cut at equal lengths, and keeps doing so
    identity = json.loads((sink / RUN_FILE).read_text())
    for name in ("cut", "max_silent_fraction"):
        del identity["segment"][name]
    (sink / RUN_FILE).write_text(json.dumps(identity))
    assert cut_of(config) == "equal"
    with pytest.raises(SinkMismatchError, match="'equal' \\(existing\\) != 'pause'"):
        tokenize(replace(config, segment=replace(config.segment, cut="pause")))
    with pytest.raises(SinkMismatchError, match=r"segment.max_silent_fraction: 1.0 \(existing\) != 0.5"):
        tokenize(replace(config, segment=replace(config.segment, max_silent_fraction=0.5)))
    # another tokenizer's new version beside it is a new dataset: it cuts at pauses
    other = replace(
        config, model=replace(config.model, seed=1), sink=replace(config.sink, force_new_version=True)
    )
    url, identity = resolve_url(other.sink, run_identity(other, model_config(other)))
    assert url.endswith("ds-v2") and identity.segment["cut"] == "pause"
    assert SegmentConfig().cut is None  # the default decides per dataset


def downgrade_to_1_2(sink) -> None:
    """Make the dataset at `sink` look written by schema 1.2 software: no measures in any
    sample's json or in the index (checksums of the rewritten json members recomputed)."""
    layout = DatasetLayout(str(sink))
    card = json.loads(layout.fs.cat_file(layout.card_path))
    card["schema_version"] = "1.2"
    layout.fs.pipe_file(layout.card_path, json.dumps(card).encode())
    digests = {}

    def without_measures(members):
        meta = {k: v for k, v in json.loads(members["json"]).items() if k not in MEASURE_COLUMNS}
        members["json"] = json.dumps(meta, sort_keys=True).encode()
        digests[members["__key__"]] = checksum(members["json"])
        return members

    for number, path in layout.committed_shards().items():
        rewrite_tar(layout, "latent", number, without_measures)
        table = pq.read_table(path)
        sums = [
            {**dict(c), "json": digests[k]}
            for k, c in zip(table["key"].to_pylist(), table["checksums"].to_pylist())
        ]
        table = table.drop_columns(list(MEASURE_COLUMNS)).drop_columns(["checksums"])
        table = table.append_column(
            INDEX_SCHEMA.field("checksums"),
            pa.array([sorted(s.items()) for s in sums], INDEX_SCHEMA.field("checksums").type),
        )
        pq.write_table(
            table.replace_schema_metadata(
                {**INDEX_SCHEMA.metadata, VERSION_KEY: b"1.2", CHECKSUM_KEY: b"crc32"}
            ),
            path,
        )


def test_the_registry_knows_seeded_audio_first_claims_and_repeats_its_answers():
    ends_in_nul = b"\x07" * 15 + b"\x00"  # numpy's bytes scalars drop trailing NULs
    seeded = np.unique(np.array([ends_in_nul, b"\x01" * 16], dtype="S16"))
    registry = ContentRegistry(seeded)
    fresh, other = b"\x02" * 15 + b"\x00", b"\x03" * 16
    assert registry.claim([("a", ends_in_nul), ("b", fresh), ("c", fresh)]) == ["", "b", "b"]
    assert registry.claim([("c", fresh), ("b", fresh), ("d", other)]) == [
        "b",
        "b",
        "d",
    ]  # a retry: same answers
    assert ContentRegistry(np.empty(0, "S16")).claim([("a", ends_in_nul)]) == ["a"]


def test_decode_leaves_out_copies_and_silent_segments_keeping_every_key(tmp_path):
    speech = load_audio(
        str(synth_speech(tmp_path / "s.wav", "one two three four", sample_rate=16_000))
    ).numpy()
    gap = np.zeros(16_000 * 6, np.float32)
    sf.write(tmp_path / "gappy.wav", np.concatenate([speech, gap, speech]), 16_000, subtype="FLOAT")
    shutil.copy(tmp_path / "gappy.wav", tmp_path / "copy.wav")
    items = [InputItem(name, str(tmp_path / f"{name}.wav")) for name in ("gappy", "copy")]
    segment = SegmentConfig(max_seconds=2.0, min_seconds=0.5, cut="equal", max_silent_fraction=0.9)
    dropped, left_out = Counter(), {}
    registry = ContentRegistry(np.empty(0, "S16"))
    segments, failures = decode_items(items, segment, 16_000, {}, 1, None, dropped, registry.claim, left_out)
    assert not failures and {s.input_key for s in segments} == {"gappy"}
    indices = [int(s.key.rsplit("_", 1)[1]) for s in segments]
    every = segment_bounds(len(speech) * 2 + len(gap), 16_000, 2.0)
    assert dropped == {"silent_segments": len(every) - len(indices), "duplicate_inputs": 1}
    assert (
        len(every) - len(indices) >= 2 and indices[0] == 0 and indices[-1] == len(every) - 1
    )  # a gap inside
    assert left_out == {"copy": "the same audio as input gappy (sink.dedup)"}
    assert all(s.measures["silent_fraction"] <= 0.9 for s in segments)
