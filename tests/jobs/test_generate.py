"""Generation decodes with the tokenizer that made the DiT's data, unasked, and is reproducible."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from jobs import checkpointing
from jobs.data import LoaderConfig
from jobs.generate import load_dit, read_dit
from jobs.tokenizer_ref import build_tokenizer
from jobs.train_dit import OptimConfig, TrainDiTConfig, train_loop
from losatok import LoSATok, save_checkpoint, tiny
from losatok_input.decoder import load_audio
from pipelines.config import ModelConfig
from pipelines.encode import build_model


def tiny_config(dataset: str, out: Path, **changes) -> TrainDiTConfig:
    config = TrainDiTConfig(
        data=LoaderConfig(path=dataset, batch_frames=1500, max_frames=150, shuffle_buffer=8),
        optim=OptimConfig(lr=2e-3, warmup_steps=2),
        out_dir=str(out),
    )
    return replace(config, **changes)


@pytest.fixture(scope="module")
def dit_run(pipeline_dataset, tmp_path_factory) -> Path:
    """A DiT trained for a few steps on the pipeline's dataset (tiny tokenizer, seed 0)."""
    out = tmp_path_factory.mktemp("dit") / "run"
    train_loop(tiny_config(pipeline_dataset, out, max_steps=4, ckpt_every=2, log_every=1))
    return out


def generate_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.generate", *args], capture_output=True, text=True, timeout=300
    )


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_checkpoint_records_the_pipelines_tokenizer_and_generation_rebuilds_it(
    pipeline_dataset, dit_run, tmp_path
):
    record = checkpointing.load_latest(str(dit_run / "checkpoints"))["tokenizer"]
    assert record["preset"] == "tiny" and record["seed"] == 0 and record["checkpoint_sha256"] is None
    assert record["config"] == tiny().to_dict() and record["config_hash"] == tiny().config_hash()
    rebuilt, trained = build_tokenizer(record)
    assert not trained
    assert same_weights(rebuilt, build_model(ModelConfig(preset="tiny", seed=0)))

    # a dataset made with another seed: the record carries it, and the rebuilt model follows
    other = tmp_path / "seeded"
    shutil.copytree(pipeline_dataset, other)
    run = json.loads((other / "run.json").read_text())
    (other / "run.json").write_text(json.dumps({**run, "seed": 7}))
    config = tiny_config(str(other), tmp_path / "run7", max_steps=1, ckpt_every=1)
    train_loop(config)
    record = checkpointing.load_latest(str(tmp_path / "run7" / "checkpoints"))["tokenizer"]
    assert record["seed"] == 7
    rebuilt, _ = build_tokenizer(record)
    assert same_weights(rebuilt, build_model(ModelConfig(preset="tiny", seed=7)))
    assert not same_weights(rebuilt, build_model(ModelConfig(preset="tiny", seed=0)))


def test_a_tokenizer_file_other_than_the_datasets_is_refused_at_training(pipeline_dataset, tmp_path):
    from jobs.tokenizer_ref import TokenizerSource

    save_checkpoint(LoSATok(tiny()), tmp_path / "other.pt")
    config = tiny_config(pipeline_dataset, tmp_path / "run", max_steps=1, ckpt_every=1)
    config = replace(config, tokenizer=TokenizerSource(checkpoint=str(tmp_path / "other.pt")))
    with pytest.raises(ValueError, match=r"tokenizer.checkpoint=.*other.pt has sha256"):
        train_loop(config)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_dit_is_read_from_a_run_folder_its_checkpoints_or_one_file(dit_run):
    newest = (dit_run / "checkpoints" / "latest").read_text().strip()
    steps = {
        read_dit(str(p))["step"] for p in (dit_run, dit_run / "checkpoints", dit_run / "checkpoints" / newest)
    }
    assert steps == {4}
    assert load_dit(str(dit_run / "checkpoints" / "step-000000002.pt"))[3] == 2


@pytest.mark.slow
def test_generate_needs_no_tokenizer_flag_and_the_same_seed_gives_the_same_audio(dit_run, tmp_path):
    outputs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        done = generate_cli(
            "--dit", str(dit_run), "--text", "hello", "--steps", "2", "--seed", str(seed), "--out", str(tmp_path / name)
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert "UNTRAINED tiny model (seeded 0)" in done.stderr  # warned, as losatok-reconstruct does
        outputs[name] = load_audio(tmp_path / name / "sample-000.wav")
    assert torch.equal(outputs["a"], outputs["b"])
    assert not torch.equal(outputs["a"], outputs["c"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["--dit", "/nonexistent/run"], "--dit /nonexistent/run: no such file or folder"),
        (["--dit", "{tmp}"], "no DiT checkpoint there"),
        (["--dit", "{run}", "--steps", "0"], "argument --steps: 0 is not a positive integer"),
        (["--dit", "{run}", "--seconds", "abc"], "argument --seconds"),
        (["--dit", "{run}", "--tokenizer", "/nope.pth"], "/nope.pth does not exist"),
        (["--dit", "{run}", "--out", "{file}/x"], "is a file, not a folder"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(dit_run, tmp_path, args, culprit):
    (tmp_path / "file").write_text("x")
    args = [a.format(tmp=tmp_path, run=dit_run, file=tmp_path / "file") for a in args]
    done = generate_cli(*args, "--text", "hi")
    assert done.returncode == 2, done.stderr
    assert culprit in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
