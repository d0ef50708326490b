"""The jobs' entry points run as a user runs them: configs compose, training CLI, generation CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from jobs.train_dit import build_config
from losatok import LoSATok, save_checkpoint, tiny
from losatok_input.decoder import load_audio

EXPERIMENTS = sorted(
    p.stem for p in (Path(__file__).parents[2] / "jobs" / "conf" / "experiment").glob("*.yaml")
)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    with initialize_config_module("jobs.conf", version_base=None):
        cfg = compose("train_dit", overrides=[f"experiment={experiment}", "data.path=/data/latents"])
    config = build_config(cfg)
    assert config.data.path == "/data/latents" and config.max_steps > 0


def test_unknown_key_is_refused():
    with initialize_config_module("jobs.conf", version_base=None), pytest.raises(Exception, match="lrr"):
        compose("train_dit", overrides=["optim.lrr=1", "data.path=/x"])


def test_train_with_semantic_alignment_then_generate_audio(pipeline_dataset, tmp_path):
    out = tmp_path / "run"
    train = [
        sys.executable, "-m", "jobs.train_dit", "experiment=tiny", f"data.path={pipeline_dataset}", f"out_dir={out}",
        "max_steps=20", "ckpt_every=20", "data.semantic_field=semantic_low", "semantic_weight=0.5",
    ]  # fmt: skip
    done = subprocess.run(train, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"step": 20' in done.stdout
    # it says where the checkpoints are and how to generate from them
    assert f"checkpoints: {out}/checkpoints (latest: step-000000020.pt)" in done.stderr
    assert f'losatok-generate --dit {out} --text "Hello there."' in done.stderr
    semantic = [
        line
        for line in (out / "metrics.jsonl").read_text().splitlines()
        if '"semantic_loss": 0.0,' not in line
    ]
    assert semantic, "the semantic alignment loss must be active"

    torch.manual_seed(0)
    save_checkpoint(LoSATok(tiny()), tmp_path / "tokenizer.pt")
    generate = [
        sys.executable, "-m", "jobs.generate", "--dit", str(out / "checkpoints"), "--tokenizer", str(tmp_path / "tokenizer.pt"),
        "--text", "hello", "--text", "a longer sentence to say", "--steps", "4", "--out", str(tmp_path / "wav"),
    ]  # fmt: skip
    done = subprocess.run(generate, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = (load_audio(tmp_path / "wav" / f"sample-00{i}.wav") for i in (0, 1))
    assert first.numel() == 25 * 640  # "hello": 1 s minimum
    assert second.numel() > first.numel()  # duration estimated from the text


def run_cli(module: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


# Bad usage of every jobs CLI: exit 2, one line on stderr naming the culprit, no traceback, and
# nothing left behind ({tmp}: an empty folder, {file}: a regular file, {out}: a fresh out_dir).
BAD_USAGE = [
    ("jobs.train_dit", ["max_steps=abc", "data.path={tmp}"], "max_steps=abc"),
    ("jobs.train_dit", ["foo=1", "data.path={tmp}"], "Key 'foo' not in 'TrainDiTConfig'"),
    ("jobs.train_dit", ["data.path=/nonexistent/ds", "out_dir={out}"], "data.path=/nonexistent/ds: no such"),
    ("jobs.train_dit", ["data.path={tmp}", "out_dir={out}"], "no latent dataset there"),
    ("jobs.train_dit", ["data.path={tmp}", "optim.lr=0", "out_dir={out}"], "optim.lr=0.0: must be greater"),
    ("jobs.train_dit", ["data.path={tmp}", "out_dir={file}/run"], "is a file, not a folder"),
    ("jobs.train_sembo", ["data.path={tmp}", "holdout_shards=0", "out_dir={out}"], "holdout_shards=0"),
    (
        "jobs.train_sembo",
        ["data.path={tmp}", "tokenizer.checkpoint=/nope/ckpt.pth", "out_dir={out}"],
        "tokenizer.checkpoint=/nope/ckpt.pth: no such file",
    ),
    ("jobs.train_tokenizer", ["data.path={tmp}", "preset=huge", "out_dir={out}"], "preset=huge: one of"),
    ("jobs.train_tokenizer", ["data.path={tmp}", "data.crop_seconds=abc"], "data.crop_seconds=abc"),
    ("jobs.train_tokenizer", ["out_dir={out}"], "data.path"),
    ("jobs.eval_tokenizer", ["/nonexistent/audio"], "/nonexistent/audio does not exist"),
    ("jobs.eval_tokenizer", ["{tmp}"], "no audio files under"),
    ("jobs.eval_tokenizer", ["{tmp}", "--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
    ("jobs.eval_tokenizer", ["{tmp}", "--max-files", "x"], "argument --max-files"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("module", "args", "culprit"), BAD_USAGE)
def test_bad_usage_of_a_jobs_cli_is_one_line_and_exit_2(tmp_path, module, args, culprit):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    names = {"tmp": tmp_path / "empty", "file": tmp_path / "file", "out": tmp_path / "out"}
    done = run_cli(module, *(a.format(**names) for a in args), cwd=tmp_path)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert culprit in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "out").exists()  # a refused command leaves nothing behind


def test_a_published_layout_file_that_does_not_fit_is_one_line(tmp_path, audio_dir):
    torch.save({"state_dict": {"fc_mu.weight": torch.zeros(3, 3)}}, tmp_path / "wrong.pth")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "speech.mp3").write_bytes((audio_dir / "speech.mp3").read_bytes())
    done = run_cli(
        "jobs.eval_tokenizer", str(tmp_path / "data"), "--checkpoint", str(tmp_path / "wrong.pth"), "--preset", "tiny"
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "wrong.pth does not fit LoSATok" in done.stderr and len(done.stderr.strip().splitlines()) == 1
