"""DiT training on a dataset the pipeline wrote: it learns, it resumes exactly, it refuses misfits."""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import s3fs
import torch

from jobs import checkpointing
from jobs.data import DatasetMismatchError, LatentLoader, LoaderConfig
from jobs.generate import generate, load_dit
from jobs.train_dit import OptimConfig, TrainDiTConfig, run, train_loop
from jobs.training import TrainerConfig
from losatok.dit import DiT
from losatok_storage.testing import FaultProxy


def tiny_config(dataset: str, out: Path, **changes) -> TrainDiTConfig:
    config = TrainDiTConfig(
        data=LoaderConfig(path=dataset, batch_frames=1500, max_frames=150, shuffle_buffer=8),
        model="tiny",
        optim=OptimConfig(lr=2e-3, warmup_steps=10, ema_decay=0.9),
        out_dir=str(out),
        max_steps=150,
        log_every=5,
        ckpt_every=50,
        cond_dropout=0.1,
    )
    return replace(config, **changes)


def through(proxy: FaultProxy) -> dict:
    """s3fs options that reach the loopback S3 server through `proxy`, with quick timeouts and
    botocore's own retries off (ours are under test)."""
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": proxy.url},
        "config_kwargs": {"connect_timeout": 2, "read_timeout": 5, "retries": {"max_attempts": 1}},
    }


def logged(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def channel_error(samples: np.ndarray, data: np.ndarray) -> float:
    """Distance between per-channel means and stds of generated and training latents."""
    return float(np.abs(samples.mean(0) - data.mean(0)).mean() + np.abs(samples.std(0) - data.std(0)).mean())


def test_tiny_dit_overfits_a_pipeline_dataset_and_samples_its_statistics(pipeline_dataset, tmp_path):
    # raw latents: normalised ones have per-channel mean 0 and std 1, which noise matches already
    config = tiny_config(pipeline_dataset, tmp_path / "run")
    config = replace(config, data=replace(config.data, normalize=False))
    result = train_loop(config)
    losses = [row["loss"] for row in logged(tmp_path / "run")]
    assert result["step"] == 150
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:2]), losses

    batches = LatentLoader(config.data, latent_dim=16)
    data = np.concatenate([b.latents[b.mask].numpy() for b in batches])  # normalised training frames
    trained, _, _, _ = load_dit(str(tmp_path / "run" / "checkpoints"), use_ema=False)
    torch.manual_seed(123)
    untrained = DiT(trained.config).eval()
    with torch.no_grad():  # an untrained DiT's zero-initialised output would give pure noise; perturb it
        for p in untrained.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    texts, frames = [""] * 32, [100] * 32  # the corpus has no transcripts: unconditional, as trained
    errors = {}
    for name, model in (("trained", trained), ("untrained", untrained)):
        latents, lengths = generate(model, texts, frames, steps=16, method="euler", cfg_scale=1.0, seed=0)
        errors[name] = channel_error(latents.reshape(-1, latents.shape[-1]).numpy(), data)
    assert errors["trained"] < 0.5 * errors["untrained"], errors


def test_killed_training_resumes_at_its_checkpoint_and_continues_exactly(pipeline_dataset, tmp_path):
    straight = tiny_config(pipeline_dataset, tmp_path / "straight", max_steps=40, ckpt_every=10)
    reference = train_loop(straight)

    out = tmp_path / "killed"
    command = [
        sys.executable, "-m", "jobs.train_dit", "experiment=tiny", f"data.path={pipeline_dataset}",
        f"out_dir={out}", "max_steps=40", "ckpt_every=10", "log_every=5",
        "data.batch_frames=1500", "data.max_frames=150", "data.shuffle_buffer=8",
        "optim.lr=2e-3", "optim.warmup_steps=10", "optim.ema_decay=0.9", "cond_dropout=0.1",
    ]  # fmt: skip
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = out / "checkpoints" / "latest"
    deadline = time.monotonic() + 180
    while not (latest.exists() and latest.read_text().strip() >= "step-000000020.pt"):
        assert job.poll() is None, job.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()

    saved = checkpointing.load_latest(str(out / "checkpoints"))
    assert 20 <= saved["step"] < 40, "the kill should land before the end (40 steps)"
    resumed_config = replace(straight, out_dir=str(out))
    # the resumed job starts from exactly the saved optimizer state ...
    result = train_loop(resumed_config)
    assert result["step"] == 40
    steps = [row["step"] for row in logged(out)]
    assert steps == sorted(set(steps)) and steps[-1] == 40  # one curve past the kill, no step twice
    # ... and, replaying the epoch up to where it stopped, lands on the same weights as a run never killed
    assert result["param_checksum"] == pytest.approx(reference["param_checksum"], rel=1e-6, abs=1e-6)
    final = checkpointing.load_latest(str(out / "checkpoints"))
    ref = checkpointing.load_latest(str(tmp_path / "straight" / "checkpoints"))
    for a, b in zip(final["optimizer"]["state"].values(), ref["optimizer"]["state"].values(), strict=True):
        torch.testing.assert_close(a["exp_avg"], b["exp_avg"], rtol=1e-5, atol=1e-7)


def test_validation_loss_is_logged_every_n_steps_and_is_the_same_number_on_a_resumed_run(
    pipeline_dataset, tmp_path
):
    from jobs.train_dit import ValidationConfig

    validation = ValidationConfig(path=pipeline_dataset, every=5)
    straight = tiny_config(
        pipeline_dataset, tmp_path / "straight", max_steps=20, ckpt_every=10, validation=validation
    )
    train_loop(straight)
    scores = {row["step"]: row["val_loss"] for row in logged(tmp_path / "straight") if "val_loss" in row}
    assert sorted(scores) == [5, 10, 15, 20] and all(np.isfinite(v) for v in scores.values())
    assert scores[20] < scores[5]  # it learns, measured on fixed noise
    # stopped at step 10 and resumed: the scores after the resume are the straight run's
    train_loop(replace(straight, out_dir=str(tmp_path / "resumed"), max_steps=10))
    train_loop(replace(straight, out_dir=str(tmp_path / "resumed")))
    again = {row["step"]: row["val_loss"] for row in logged(tmp_path / "resumed") if "val_loss" in row}
    assert again == pytest.approx(scores, rel=1e-5)


def test_a_resumed_run_drops_the_metrics_rows_it_replays(pipeline_dataset, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(pipeline_dataset, out, max_steps=10, ckpt_every=5, log_every=2)
    train_loop(config)
    assert [row["step"] for row in logged(out)] == [2, 4, 6, 8, 10]
    # as if killed after logging step 10 but before its checkpoint: the rerun resumes at step 5
    (out / "checkpoints" / "latest").write_text("step-000000005.pt")
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 1')  # and the kill tore the last line
    train_loop(config)
    assert [row["step"] for row in logged(out)] == [2, 4, 6, 8, 10]  # 6, 8, 10 once, from the rerun


def audited_epochs(out: Path) -> dict[int, collections.Counter]:
    """Keys trained on per epoch, over every rank's audit file."""
    epochs: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for path in (out / "audit").glob("rank-*.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            epochs[row["epoch"]].update(row["keys"])
    return epochs


def test_ray_train_workers_keep_identical_weights_and_resume_elastically_exactly_once(
    pipeline_dataset, tmp_path
):
    """Two DDP workers train to step 30, inside an epoch. The run resumes on three FSDP workers
    and, from a copy, in one process: the weights stay identical across ranks, the checkpoints
    hold full weights whatever the strategy, and the audit shows every sample exactly once in
    every epoch either run visited."""
    trainer = TrainerConfig(num_workers=2, strategy="ddp")
    config = tiny_config(pipeline_dataset, tmp_path / "ddp", max_steps=30, ckpt_every=15, trainer=trainer)
    config = replace(config, data=replace(config.data, audit=True))
    run(config)
    finals = [json.loads((tmp_path / "ddp" / f"final-rank{r}.json").read_text()) for r in (0, 1)]
    assert finals[0]["step"] == finals[1]["step"] == 30
    assert finals[0]["param_checksum"] == finals[1]["param_checksum"]
    losses = [row["loss"] for row in logged(tmp_path / "ddp")]
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    reader = LatentLoader(config.data, latent_dim=16).batches.sources[0].reader
    keys = set(reader.index().column("key").to_pylist())
    for workers, strategy in ((3, "fsdp"), (1, "ddp")):
        out = tmp_path / f"resumed-on-{workers}"
        shutil.copytree(tmp_path / "ddp", out)
        # 3 workers fit the 2-CPU test cluster at half a CPU each
        scaled = replace(trainer, num_workers=workers, strategy=strategy, cpus_per_worker=0.5)
        resumed = replace(config, out_dir=str(out), max_steps=40, trainer=scaled)
        finals = run(resumed) if workers > 1 else [train_loop(resumed)]
        assert {f["step"] for f in finals} == {40} and len({f["param_checksum"] for f in finals}) == 1
        # full weights whatever the strategy: a plain DiT loads the checkpoint for generation
        model, _, _, step = load_dit(str(out / "checkpoints"))
        assert step == 40
        latents, _ = generate(model, [""], [20], steps=2)
        assert torch.isfinite(latents).all()
        epochs = audited_epochs(out)
        complete = sorted(epochs)[:-1]  # the last one is cut by max_steps
        assert len(complete) >= 2
        for epoch in complete:
            assert set(epochs[epoch]) == keys and set(epochs[epoch].values()) == {1}, (workers, epoch)
        assert set(epochs[max(epochs)].values()) == {1}


def test_dataset_of_another_latent_dim_is_refused_at_start(pipeline_dataset, tmp_path):
    config = tiny_config(pipeline_dataset, tmp_path / "x", model_overrides={"latent_dim": 32})
    with pytest.raises(DatasetMismatchError, match="dimension 16.*latent_dim 32"):
        train_loop(config)


def test_a_pretrained_text_encoder_plugs_in_frozen_and_generation_rebuilds_it(pipeline_dataset, tmp_path):
    from losatok.text import ByteTextEncoder, TextEncoderConfig

    torch.manual_seed(5)
    pretrained = ByteTextEncoder(TextEncoderConfig(dim=32, depth=1, heads=4, max_len=64))
    torch.save(
        {"config": {"dim": 32, "depth": 1, "heads": 4, "max_len": 64}, "state_dict": pretrained.state_dict()},
        tmp_path / "enc.pt",
    )
    config = tiny_config(
        pipeline_dataset,
        tmp_path / "run",
        max_steps=10,
        ckpt_every=10,
        text_encoder="losatok.testing:load_byte_text_encoder",
        text_encoder_path=str(tmp_path / "enc.pt"),
    )
    train_loop(config)
    saved = checkpointing.load_latest(str(tmp_path / "run" / "checkpoints"))
    for name, value in pretrained.state_dict().items():
        torch.testing.assert_close(saved["model"][f"text_encoder.{name}"], value)  # frozen: unchanged
    model, _, _, step = load_dit(str(tmp_path / "run" / "checkpoints"))
    assert step == 10 and model.text_encoder.dim == 32
    latents, _ = generate(model, ["hi"], [30], steps=2)
    assert latents.shape == (1, 30, 16) and torch.isfinite(latents).all()


def test_a_bad_text_encoder_factory_is_named():
    from losatok.text import load_text_encoder

    with pytest.raises(ValueError, match="package.module:function"):
        load_text_encoder("no_colon_here")
    with pytest.raises(TypeError, match="not a TextEncoder"):
        load_text_encoder("losatok.config:tiny")


def test_checkpoints_on_s3_resume(pipeline_dataset, tmp_path, s3_endpoint, s3_bucket):
    planted = "planted-SECRET-4242"  # the loopback server accepts any credentials
    options = {"key": "testing", "secret": planted, "client_kwargs": {"endpoint_url": s3_endpoint}}
    out = f"s3://{s3_bucket}/runs/dit"
    config = tiny_config(pipeline_dataset, tmp_path, max_steps=10, ckpt_every=5)
    config = replace(config, out_dir=out, storage_options=options, log_dir=str(tmp_path / "logs"))
    assert train_loop(config)["step"] == 10
    assert checkpointing.load_latest(f"{out}/checkpoints", options)["step"] == 10
    again = train_loop(replace(config, max_steps=15))
    assert again["step"] == 15
    steps = [row["step"] for row in logged(tmp_path / "logs")]
    assert steps == sorted(steps) and steps[-1] == 15 and 10 in steps  # one curve across the restart

    # the secret is in no output: checkpoints (train_config), metrics, TensorBoard files
    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    stored = [fs.cat(path) for path in fs.find(f"{s3_bucket}/runs/dit")]
    stored += [path.read_bytes() for path in (tmp_path / "logs").rglob("*") if path.is_file()]
    assert len(stored) > 3 and not any(planted.encode() in blob for blob in stored)


def test_s3_checkpoint_writes_ride_out_outages_and_the_run_resumes_exactly(
    pipeline_dataset, tmp_path, s3_endpoint, s3_bucket
):
    """Checkpoints go to S3 through a proxy that cuts the connection for 1 s every 2.5 s: every
    write is likely to meet an outage and is retried whole; the run and its resumption land on the
    weights of the same two runs on a local disk."""
    port = int(s3_endpoint.rsplit(":", 1)[1])
    local = tiny_config(pipeline_dataset, tmp_path / "local", max_steps=10, ckpt_every=5)
    train_loop(local)
    reference = train_loop(replace(local, max_steps=20))  # the same two runs, on a local disk
    with FaultProxy("127.0.0.1", port) as proxy:
        options = through(proxy)
        out = f"s3://{s3_bucket}/runs/flaky"
        config = tiny_config(pipeline_dataset, tmp_path / "x", max_steps=10, ckpt_every=5)
        config = replace(config, out_dir=out, storage_options=options, log_dir=str(tmp_path / "logs"))
        stop = threading.Event()

        def flap() -> None:
            while not stop.is_set():  # down first: the run starts in an outage
                proxy.cut()
                stop.wait(1.0)
                proxy.restore()
                stop.wait(1.5)

        flapping = threading.Thread(target=flap, daemon=True)
        flapping.start()
        try:
            assert train_loop(config)["step"] == 10
            resumed = train_loop(replace(config, max_steps=20))
        finally:
            stop.set()
            flapping.join()
            proxy.restore()
        assert proxy.connections_refused > 0, "no fault was injected"
        assert resumed["step"] == 20
        assert resumed["param_checksum"] == pytest.approx(reference["param_checksum"], rel=1e-6, abs=1e-6)
        assert checkpointing.load_latest(f"{out}/checkpoints", options)["step"] == 20


def test_a_checkpoint_write_in_an_outage_past_the_budget_stops_the_run_and_a_rerun_resumes_exactly(
    pipeline_dataset, tmp_path, s3_endpoint, s3_bucket, monkeypatch
):
    """The store goes away just as the step-10 checkpoint is written and stays away past the
    retry budget: the run stops with TransientStorageError (the CLI's one line, exit 1), the
    step-5 checkpoint stands, and the rerun resumes from it onto the uninterrupted run's weights."""
    from jobs.train_dit import RetryConfig
    from losatok_storage.retry import TransientStorageError

    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)  # s3fs's own quick retries off: ours are tested
    reference = train_loop(tiny_config(pipeline_dataset, tmp_path / "local", max_steps=15, ckpt_every=5))
    port = int(s3_endpoint.rsplit(":", 1)[1])
    real_save = checkpointing.save
    with FaultProxy("127.0.0.1", port) as proxy:

        def save_in_an_outage(directory, step, *args, **kwargs):
            if step == 10:
                proxy.cut()  # the upload of step 10 meets the outage
            return real_save(directory, step, *args, **kwargs)

        options = through(proxy)
        out = f"s3://{s3_bucket}/runs/outage"
        config = tiny_config(pipeline_dataset, tmp_path / "x", max_steps=15, ckpt_every=5)
        config = replace(
            config,
            out_dir=out,
            storage_options=options,
            log_dir=str(tmp_path / "logs"),
            retry=RetryConfig(attempts=3, base_seconds=0.05, max_seconds=0.1),
        )
        monkeypatch.setattr(checkpointing, "save", save_in_an_outage)
        with pytest.raises(TransientStorageError, match=r"step-000000010\.pt"):
            train_loop(config)
        assert proxy.connections_refused > 0
        proxy.restore()
        monkeypatch.setattr(checkpointing, "save", real_save)
        assert checkpointing.load_latest(f"{out}/checkpoints", options)["step"] == 5  # what stands
        resumed = train_loop(config)
    assert resumed["step"] == 15
    assert resumed["param_checksum"] == pytest.approx(reference["param_checksum"], rel=1e-6, abs=1e-6)


def test_the_cli_keeps_credentials_out_of_every_output_and_an_outage_is_one_line(
    pipeline_dataset, tmp_path, s3_endpoint, s3_bucket
):
    """The case issue 13 found: `+data.storage_options.key=... +data.storage_options.secret=...`
    on the command line. The secret is in no checkpoint, metric, TensorBoard file, console line
    or error message; a run whose store is gone ends in one line and exit 1."""
    planted = "planted-SECRET-7373"
    fs = s3fs.S3FileSystem(key="testing", secret=planted, client_kwargs={"endpoint_url": s3_endpoint})
    fs.put(pipeline_dataset, f"{s3_bucket}/latents", recursive=True)
    out = tmp_path / "run"
    common = [
        sys.executable, "-m", "jobs.train_dit", "experiment=tiny", f"data.path=s3://{s3_bucket}/latents",
        "+data.storage_options.key=testing", f"+data.storage_options.secret={planted}",
        f"+data.storage_options.client_kwargs.endpoint_url={s3_endpoint}",
    ]  # fmt: skip
    done = subprocess.run(
        [*common, f"out_dir={out}", "max_steps=4", "ckpt_every=2", "log_every=1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    outputs = [done.stdout, done.stderr]
    outputs += [p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file()]
    assert len(outputs) > 5 and not any(planted in text for text in outputs)

    # a bad value next to the secret, and the secret in an override Hydra refuses: one line each,
    # no secret in it
    for extra in (["max_steps=abc"], [f"data.storage_options.token={planted}"]):
        failed = subprocess.run([*common, *extra], capture_output=True, text=True, timeout=120)
        assert failed.returncode == 2 and len(failed.stderr.strip().splitlines()) == 1, failed.stderr
        assert planted not in failed.stderr + failed.stdout

    # the store gone for good (nothing listens there): one line, exit 1, no traceback, no secret
    gone = [part.replace(s3_endpoint, "http://127.0.0.1:9") for part in common]
    failed = subprocess.run(
        [*gone, f"out_dir={tmp_path / 'gone'}", "max_steps=2", "retry.attempts=2", "retry.base_seconds=0.05"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert "error: storage outage:" in failed.stderr and "Traceback" not in failed.stderr, failed.stderr
    assert planted not in failed.stderr + failed.stdout
