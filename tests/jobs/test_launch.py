"""Multi-worker launches: paths resolved on the driver, Ray Train state per run, progress relayed."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jobs.data import LoaderConfig
from jobs.launch import absolute_paths, train_storage
from jobs.relay import LineProgress
from jobs.train_dit import OptimConfig, TrainDiTConfig, run
from jobs.training import TrainerConfig


@dataclass
class Inner:
    path: str = ""


@dataclass
class Outer:
    data: Inner = field(default_factory=Inner)
    out_dir: str = "out"
    encoder: str | None = None


def test_paths_become_absolute_urls_stay_and_a_missing_input_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds").mkdir()
    config = absolute_paths(
        Outer(Inner("ds"), "out/run", "org/model"), ["out_dir"], ["data.path"], ["encoder"]
    )
    assert config == Outer(Inner(str(tmp_path / "ds")), str(tmp_path / "out/run"), "org/model")
    remote = absolute_paths(Outer(Inner("s3://b/ds"), "s3://b/out"), ["out_dir"], ["data.path"])
    assert remote == Outer(Inner("s3://b/ds"), "s3://b/out")
    with pytest.raises(FileNotFoundError, match=r"data.path=nope: no such file or folder"):
        absolute_paths(Outer(Inner("nope")), [], ["data.path"])


def test_ray_train_storage_lives_under_out_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert train_storage("out/dit") == (str(tmp_path / "out/dit/ray_train"), None)
    path, filesystem = train_storage("s3://bucket/runs/dit", {"anon": True})
    assert path == "bucket/runs/dit/ray_train" and filesystem is not None


def test_line_progress_logs_one_line_per_interval(caplog):
    progress = LineProgress(total=20, initial=10, desc="train", enabled=True)
    with caplog.at_level(logging.INFO, logger="jobs.progress"):
        progress.update(5)
        progress.set_postfix(loss="0.5000", refresh=False)
        LineProgress(total=20, initial=0, desc="train", enabled=False).set_postfix(loss="1")
    (record,) = caplog.records
    assert record.getMessage().startswith("train 15/20 steps | loss=0.5000 |")


@pytest.mark.slow
def test_two_multi_worker_runs_from_two_folders_keep_their_own_outputs(
    pipeline_dataset, ray_address, tmp_path, monkeypatch, caplog
):
    """The same relative command from two folders: each run writes under its own folder, and the
    second starts from step 0 instead of resuming the first (which it did when paths were left to
    Ray Train's session folder)."""
    results = {}
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        os.symlink(pipeline_dataset, folder / "ds")
        monkeypatch.chdir(folder)
        config = TrainDiTConfig(
            data=LoaderConfig(path="ds", batch_frames=1500, max_frames=150, shuffle_buffer=8),
            optim=OptimConfig(lr=2e-3, warmup_steps=2),
            trainer=TrainerConfig(num_workers=2),
            out_dir="out/dit",
            max_steps=6,
            log_every=3,
            ckpt_every=6,
        )
        caplog.clear()
        with caplog.at_level(logging.INFO):
            results[name] = run(config)
        progress = [r.getMessage() for r in caplog.records if r.name == "jobs.progress"]
        assert any(line.startswith("train 6/6 steps") for line in progress), progress  # relayed from rank 0

    for name in ("a", "b"):
        out = tmp_path / name / "out" / "dit"
        assert [r["rank"] for r in results[name]] == [0, 1]
        assert results[name][0]["step"] == 6 and results[name][0]["first_loss"] is not None
        steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert steps == [3, 6], steps  # from step 0: nothing resumed from the other folder
        assert (out / "checkpoints" / "latest").read_text().strip() == "step-000000006.pt"
        assert (out / "tensorboard").is_dir() and (out / "final-rank1.json").is_file()
        (run_dir,) = (out / "ray_train").iterdir()  # Ray Train's own state: one folder per run
        assert run_dir.name.startswith("dit-")
    assert results["a"][0]["param_checksum"] == pytest.approx(results["b"][0]["param_checksum"])
    assert not Path(pipeline_dataset, "out").exists()
