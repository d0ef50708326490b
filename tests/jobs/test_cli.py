"""The jobs' entry points run as a user runs them: configs compose, training CLI, generation CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from jobs.train_dit import build_config
from losatok import LoSATok, load_audio, save_checkpoint, tiny

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
