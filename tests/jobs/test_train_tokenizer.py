"""Tokenizer training (stage 2): mel reconstruction improves, loss modes compose, resume is exact,
and the export runs through the tokenization pipeline."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from jobs.train_tokenizer import (
    AudioCrops,
    AudioDataConfig,
    TrainTokenizerConfig,
    build_tokenizer,
    recordings,
    train_loop,
)
from losatok import load_published, tiny
from losatok.losses import MultiResolutionMelLoss
from losatok_data.verify import verify_dataset
from pipelines.run import tokenize
from pipelines.testing import tiny_run


def config_for(corpus, out, **changes) -> TrainTokenizerConfig:
    base = TrainTokenizerConfig(
        data=AudioDataConfig(path=str(corpus), crop_seconds=1.0, batch_size=4),
        preset="tiny",
        lr=1e-3,
        # 200 steps halve the mel loss on held-out crops (0.55 of the untrained model's),
        # 50 of them adversarial: a discriminator's first steps do not undo it
        max_steps=200,
        disc_start_step=150,
        log_every=10,
        ckpt_every=100,
        examples_every=100,
        out_dir=str(out),
    )
    return replace(base, **changes)


def rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@torch.no_grad()
def fixed_mel_loss(model, crops: torch.Tensor) -> float:
    model.eval()
    result = model.encode(crops)
    return float(MultiResolutionMelLoss()(crops, model.decode(result.z)))


def test_training_lowers_mel_loss_and_the_export_runs_through_the_pipeline(
    ray_address, small_corpus, tmp_path
):
    config = config_for(small_corpus, tmp_path / "tok")
    crops = AudioCrops(config.data, 16_000, 640).batch(step=10**9, seed=99)  # never a training batch
    before = fixed_mel_loss(build_tokenizer(config), crops)
    result = train_loop(config)
    after = fixed_mel_loss(load_published(result["export"], tiny()), crops)
    assert after < 0.6 * before, (before, after)
    logged = rows(tmp_path / "tok")
    assert "adversarial" in logged[-1] and "feature_matching" in logged[-1] and "discriminator" in logged[-1]
    assert "adversarial" not in logged[0]  # discriminators start at disc_start_step
    assert list((tmp_path / "tok" / "examples").glob("step-*.wav"))

    sink = tmp_path / "ds"
    tokenized = tokenize(tiny_run(small_corpus, sink, inputs_per_shard=6, checkpoint=result["export"]))
    assert tokenized.ok and verify_dataset(str(sink)).ok


def test_semantic_modes_decide_what_enters_the_loss(small_corpus, tmp_path):
    for mode in ("both", "low_only", "high_only"):
        out = tmp_path / mode
        train_loop(
            config_for(small_corpus, out, semantic_mode=mode, max_steps=2, log_every=1, disc_start_step=100)
        )
        row = rows(out)[-1]
        expected = {"both": row["semantic_high"] + row["semantic_low"], "low_only": row["semantic_low"]}
        expected["high_only"] = row["semantic_high"]
        assert abs(row["semantic"] - expected[mode]) < 1e-5, (mode, row)


def test_resume_continues_with_the_same_optimizer_and_discriminator_states(small_corpus, tmp_path):
    # the stop at step 8 falls after the discriminators started (step 3) and their optimizer stepped
    common = {"max_steps": 12, "disc_start_step": 3, "ckpt_every": 4, "log_every": 2}
    train_loop(config_for(small_corpus, tmp_path / "straight", **common))
    train_loop(config_for(small_corpus, tmp_path / "stopped", **{**common, "max_steps": 8}))
    train_loop(config_for(small_corpus, tmp_path / "stopped", **common))  # resumes at step 8
    from jobs import checkpointing

    a = checkpointing.load_latest(str(tmp_path / "straight" / "checkpoints"))
    b = checkpointing.load_latest(str(tmp_path / "stopped" / "checkpoints"))
    assert a["step"] == b["step"] == 12
    for part in ("model", "discriminators"):
        for key in a[part]:
            torch.testing.assert_close(a[part][key], b[part][key], rtol=1e-5, atol=1e-6, msg=f"{part}.{key}")
    steps = [r["step"] for r in rows(tmp_path / "stopped")]
    assert steps == sorted(steps) and steps[-1] == 12


def test_two_ray_train_workers_train_the_tokenizer_in_lockstep(small_corpus, tmp_path):
    from jobs.train_tokenizer import run
    from jobs.training import TrainerConfig

    config = config_for(
        small_corpus,
        tmp_path / "tok",
        max_steps=8,
        disc_start_step=4,
        ckpt_every=8,
        trainer=TrainerConfig(num_workers=2),
    )
    run(config)
    finals = [json.loads((tmp_path / "tok" / f"final-rank{r}.json").read_text()) for r in (0, 1)]
    assert finals[0]["step"] == finals[1]["step"] == 8
    assert finals[0]["param_checksum"] == finals[1]["param_checksum"]
    assert finals[0]["last"]["mel"] != finals[1]["last"]["mel"]  # each worker trained on its own crops


def test_crops_come_from_a_manifest_with_spans(small_corpus, tmp_path):
    files = sorted(small_corpus.glob("music_*.flac"))[:2]
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(
        json.dumps({"location": str(files[0]), "start": 0.5, "end": 2.0})
        + "\n"
        + json.dumps({"location": files[1].name})
        + "\n"
    )
    (tmp_path / files[1].name).write_bytes(files[1].read_bytes())  # relative to the manifest's folder
    crops = AudioCrops(AudioDataConfig(path=str(manifest), crop_seconds=1.0, batch_size=3), 16_000, 640)
    assert [w.numel() for w in crops.waves][0] == 24_000  # the 1.5 s span, not the whole file
    assert len(crops.waves) == 2 and crops.batch(0, 0).shape == (3, 16_000)


def test_crops_come_from_webdataset_audio_shards(small_corpus, tmp_path):
    import io
    import tarfile

    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "part-0.tar", "w") as archive:
        for path in sorted(small_corpus.glob("music_*.flac"))[:2]:
            data = path.read_bytes()
            info = tarfile.TarInfo(f"clips/{path.stem}.flac")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("clips/orphan.json")  # a sidecar without its audio: counted
        info.size = 2
        archive.addfile(info, io.BytesIO(b"{}"))
    crops = AudioCrops(AudioDataConfig(path=str(shards), crop_seconds=1.0, batch_size=2), 16_000, 640)
    assert len(crops.waves) == 2 and crops.batch(3, 0).shape == (2, 16_000)
    assert dict(crops.skipped.counts) == {"tar sample without audio (.json)": 1}


def test_crops_take_what_the_pipeline_takes_as_audio(small_corpus, tmp_path):
    # one rule for every reader: .oga (ignored by training before) and an unknown extension
    # FFmpeg opens are audio; sidecars and macOS litter are counted, not read
    from losatok_input.rule import SkippedFiles
    from losatok_input.testing import convert

    source = sorted(small_corpus.glob("music_*.flac"))[0]
    data = tmp_path / "data"
    data.mkdir()
    convert(source, data / "a.oga")
    (data / "b.clip").write_bytes((data / "a.oga").read_bytes())
    (data / "a.txt").write_text("transcript")
    (data / "._a.oga").write_bytes(b"\0\5\26\7" + b"\0" * 60)
    skipped = SkippedFiles()
    names = [name.rsplit("/", 1)[-1] for name, *_ in recordings(AudioDataConfig(path=str(data)), skipped)]
    assert names == ["a.oga", "b.clip"]
    assert dict(skipped.counts) == {"not audio (.txt)": 1, "hidden file": 1}
    crops = AudioCrops(AudioDataConfig(path=str(data), crop_seconds=1.0, batch_size=2), 16_000, 640)
    assert len(crops.waves) == 2 and crops.skipped.total == 2


def test_a_folder_without_audio_names_what_was_skipped(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"no readable recording .* 1 not audio \(\.txt\)"):
        AudioCrops(AudioDataConfig(path=str(tmp_path), crop_seconds=1.0, batch_size=2), 16_000, 640)


@pytest.mark.slow  # two CLIs in subprocesses
def test_the_export_carries_its_config_so_every_command_needs_no_preset(small_corpus, tmp_path):
    import subprocess
    import sys

    from jobs.tokenizer_ref import build_tokenizer
    from losatok.checkpoint import checkpoint_config

    config = config_for(small_corpus, tmp_path / "tok", max_steps=2, disc_start_step=100, examples_every=100)
    export = train_loop(config)["export"]
    assert checkpoint_config(export) == tiny()  # what the pipeline reads (model.checkpoint=)
    torch.manual_seed(1)
    published = load_published(export, tiny())  # still the published layout, loaded strictly
    generation, trained = build_tokenizer(None, export)  # losatok-generate --tokenizer, no --preset
    assert trained and generation.config == tiny()
    for name, value in published.state_dict().items():
        torch.testing.assert_close(generation.state_dict()[name], value)

    (tmp_path / "heldout").mkdir()
    (tmp_path / "heldout" / "a.wav").write_bytes((small_corpus / "speech_00.wav").read_bytes())
    commands = [  # the default --preset is official: the file's own config must win
        ["jobs.eval_tokenizer", str(tmp_path / "heldout"), "--checkpoint", export],
        ["jobs.reconstruct", str(small_corpus / "speech_01.wav"), str(tmp_path / "r.wav"), "--checkpoint", export],
    ]  # fmt: skip
    for command in commands:
        done = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "UNTRAINED" not in done.stderr and "missing key" not in done.stderr
