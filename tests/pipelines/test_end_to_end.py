"""The whole pipeline on a real mixed corpus, through a real local Ray."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from losatok_data.index import read_shard_summary, summarise_shards
from losatok_data.layout import DatasetLayout
from losatok_data.ledger import read_failures
from losatok_data.reader import open_dataset
from losatok_data.verify import verify_dataset
from losatok_input.decoder import load_audio
from losatok_input.sources import input_key
from pipelines.config import (
    FieldsConfig,
    ModelConfig,
    TokenizeConfig,
)
from pipelines.encode import build_model
from pipelines.measures import measure
from pipelines.run import tokenize
from pipelines.segment import pause_bounds
from pipelines.testing import tiny_run


def config_for(source: str, sink: str) -> TokenizeConfig:
    fields = FieldsConfig(logvar=True, semantic_low=True, semantic=True)
    return tiny_run(
        source, sink, inputs_per_shard=3, fields=fields, max_failure_fraction=0.5, max_frames_per_batch=2000
    )


def expected_segments(files) -> dict[str, tuple[str, np.ndarray]]:
    """key -> (location, 16 kHz audio of the segment), derived independently of the pipeline."""
    out = {}
    for path in files:
        wav = load_audio(path).numpy()
        for index, (start, end) in enumerate(pause_bounds(wav, 16_000, 30.0, 0.5)):  # a new dataset's cut
            out[f"{input_key(str(path))}_{index:04d}"] = (str(path), wav[start:end])
    return out


def test_mixed_corpus_end_to_end(ray_address, mixed_corpus, tmp_path):
    root, corpus = mixed_corpus
    summary = tokenize(config_for(str(root), str(tmp_path / "ds")))
    assert summary.ok and summary.units == 4  # 12 inputs, 3 per shard
    # where the run's time went, in the order it happened (joining a running Ray marks "ray" too)
    events = ["ray", "planned", "first_decode", "first_encode", "first_commit", "last_commit"]
    assert set(summary.timeline) == set(events), summary.timeline
    assert summary.timeline["planned"] <= summary.timeline["first_decode"]
    assert (
        summary.timeline["first_decode"]
        <= summary.timeline["first_encode"]
        <= summary.timeline["first_commit"]
    )
    assert summary.timeline["last_commit"] <= summary.wall_seconds

    report = verify_dataset(str(tmp_path / "ds"))
    assert report.ok, report.summary()

    expected = expected_segments(corpus["good"])
    reader = open_dataset(str(tmp_path / "ds"))
    keys = reader.index().column("key").to_pylist()
    assert sorted(keys) == sorted(expected)  # every segment of every good input, exactly once
    assert (
        sum(k.startswith(input_key(str(root / "long_music_8k.wav"))) for k in keys) == 3
    )  # 65 s -> 3 x ~22 s

    model = build_model(ModelConfig(preset="tiny", seed=0))
    samples = {s.key: s for s in reader.iter_samples(groups=("latent", "semantic"))}
    for key, (location, audio) in expected.items():
        direct = model.encode(torch.from_numpy(audio)).item(0)
        sample = samples[key]
        assert sample.metadata.source == location
        assert sample.metadata.content_hash == measure(audio).content_hash  # and the other measures
        assert sample.metadata.rms_db == measure(audio).rms_db
        for field, name in (
            ("latent", "z"),
            ("logvar", "logvar"),
            ("semantic_low", "semantic_low"),
            ("semantic", "semantic_high"),
        ):
            stored = sample.arrays[field]
            assert stored.dtype == np.float16
            reference = direct[name].numpy()
            np.testing.assert_allclose(
                stored.astype(np.float32), reference, rtol=2e-3, atol=2e-3 * np.abs(reference).max()
            )

    ledger = read_failures(DatasetLayout(str(tmp_path / "ds"))).to_pylist()
    assert sorted(r["location"] for r in ledger) == sorted(str(p) for p in corpus["bad"])
    assert all(r["stage"] == "decode" and r["message"] for r in ledger)
    assert {r["message"] for r in ledger if r["location"].endswith("empty.wav")} == {"empty file (0 bytes)"}

    card = reader.card
    assert card.totals.samples == len(expected) and card.failed_inputs == 3
    assert card.latent_stats.count == card.totals.frames

    layout = DatasetLayout(str(tmp_path / "ds"))  # the finaliser's shards.parquet: every committed shard
    summary = read_shard_summary(layout)
    assert list(summary.values()) == summarise_shards(layout, layout.committed_shards())
    assert sum(s.samples for s in summary.values()) == card.totals.samples


def test_rerun_of_a_finished_dataset_changes_nothing(ray_address, mixed_corpus, tmp_path):
    root, _ = mixed_corpus
    first = tokenize(config_for(str(root), str(tmp_path / "ds")))
    tars = {p: p.stat().st_mtime_ns for p in (tmp_path / "ds").rglob("*.tar")}
    created = open_dataset(str(tmp_path / "ds")).card
    time.sleep(1.1)  # card times have one-second resolution
    again = tokenize(config_for(str(root), str(tmp_path / "ds")))
    assert again.units_resumed == first.units and again.samples == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ds").rglob("*.tar")} == tars
    assert verify_dataset(str(tmp_path / "ds")).ok
    card = open_dataset(str(tmp_path / "ds")).card
    assert card.created_at == created.created_at  # the rerun keeps the creation time ...
    assert card.updated_at > created.updated_at >= created.created_at  # ... and says when it ran


def test_a_dataset_without_failures_has_an_empty_ledger_to_query(ray_address, small_corpus, tmp_path):
    import pyarrow.dataset as pads

    source = tmp_path / "in"
    source.mkdir()
    (source / "a.wav").write_bytes((small_corpus / "speech_00.wav").read_bytes())
    assert tokenize(tiny_run(source, tmp_path / "ds")).ok
    ledger = pads.dataset(str(tmp_path / "ds" / "failures"), format="parquet").to_table()
    assert ledger.num_rows == 0 and "location" in ledger.column_names
    assert verify_dataset(str(tmp_path / "ds")).ok


def test_another_tokenizer_config_is_refused_naming_the_difference(ray_address, mixed_corpus, tmp_path):
    from dataclasses import replace

    from pipelines.sink import SinkMismatchError

    root, _ = mixed_corpus
    config = config_for(str(root), str(tmp_path / "ds"))
    tokenize(config)
    other = replace(config, model=ModelConfig(preset="tiny", seed=1))
    with pytest.raises(SinkMismatchError, match=r"seed: 0 \(existing\) != 1 \(this run\)"):
        tokenize(other)
    forced = replace(other, sink=replace(other.sink, force_new_version=True))
    summary = tokenize(forced)
    assert summary.root.endswith("ds-v2") and verify_dataset(summary.root).ok


def test_manifest_source_carries_spans_and_metadata(ray_address, audio_dir, tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    rows = [
        {
            "location": str(audio_dir / "speech.mp3"),
            "id": "utt-1",
            "text": "the quick brown fox",
            "speaker": "a",
        },
        {"path": str(audio_dir / "music.flac"), "start": 0.5, "end": 1.5, "caption": "a plucked chord"},
    ]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = tiny_run(manifest, tmp_path / "ds", kind="manifest")
    summary = tokenize(config)
    assert summary.ok and summary.inputs == 2 and verify_dataset(str(tmp_path / "ds")).ok
    samples = {s.metadata.source: s for s in open_dataset(str(tmp_path / "ds")).iter_samples()}
    speech = samples[str(audio_dir / "speech.mp3")]
    assert (speech.metadata.id, speech.metadata.text, speech.metadata.speaker) == (
        "utt-1",
        "the quick brown fox",
        "a",
    )
    assert speech.key.startswith("utt-1-")
    music = samples[str(audio_dir / "music.flac")]
    assert music.metadata.caption == "a plucked chord"
    assert music.metadata.offset == 0.5 and music.metadata.duration == 1.0 and music.frame_count == 25


def test_our_checkpoint_with_its_own_config_drives_the_dataset(ray_address, audio_dir, tmp_path):
    from dataclasses import replace

    from losatok import LoSATok, save_checkpoint, tiny
    from losatok_data.card import sha256_file

    torch.manual_seed(3)
    custom = LoSATok(replace(tiny(), latent_dim=8, preset="tiny-8")).eval()
    save_checkpoint(custom, tmp_path / "tok.pt")
    source = tmp_path / "in"
    source.mkdir()
    (source / "speech.mp3").write_bytes((audio_dir / "speech.mp3").read_bytes())
    config = tiny_run(source, tmp_path / "ds", checkpoint=str(tmp_path / "tok.pt"))
    assert tokenize(config).ok and verify_dataset(str(tmp_path / "ds")).ok
    reader = open_dataset(str(tmp_path / "ds"))
    (sample,) = list(reader.iter_samples())
    direct = custom.encode(load_audio(audio_dir / "speech.mp3")).item(0)["z"].numpy()
    assert sample.latent.shape == direct.shape and direct.shape[1] == 8
    np.testing.assert_allclose(sample.latent.astype(np.float32), direct, atol=2e-3 * np.abs(direct).max())
    assert reader.card.tokenizer.checkpoint_sha256 == sha256_file(str(tmp_path / "tok.pt"))
    assert reader.card.tokenizer.config_hash == custom.config.config_hash()
