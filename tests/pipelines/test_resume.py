"""Exactly-once under failure: a driver killed with SIGKILL, an encode actor killed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import pytest

from losatok import preset
from losatok_data.verify import verify_dataset
from pipelines.config import FieldsConfig, SegmentConfig, TokenizeConfig
from pipelines.plan import Unit
from pipelines.records import EncodedSegment, Segment
from pipelines.run import run_identity, tokenize
from pipelines.sink import SinkDataset
from pipelines.testing import assert_same_dataset, tiny_run

pytestmark = pytest.mark.slow


# 1 s segments in windows of 1 s: each 2-5 s input is a unit of several windows (parts,
# assembled), so the kills land inside windowed units. The reference goes in the same windows:
# the encoder batches a window's segments together, and another batching may change a latent
# in its last float16 bit
SEGMENT = SegmentConfig(max_seconds=1.0, min_seconds=0.5)


def config_for(source: Path, sink: Path) -> TokenizeConfig:
    config = tiny_run(
        source,
        sink,
        inputs_per_shard=1,
        fields=FieldsConfig(logvar=True, semantic=True),
        window_seconds=1.0,
    )
    return replace(config, segment=SEGMENT)


def committed(sink: Path) -> int:
    return len(list((sink / "index").glob("shard-*.parquet"))) if (sink / "index").exists() else 0


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def reference(ray_address, small_corpus, tmp_path_factory) -> Path:
    sink = tmp_path_factory.mktemp("reference") / "ds"
    summary = tokenize(config_for(small_corpus, sink))
    assert summary.ok and summary.units == 12
    return sink


def test_driver_killed_with_sigkill_then_rerun_equals_one_uninterrupted_run(
    ray_address, small_corpus, reference, tmp_path
):
    sink = tmp_path / "ds"
    command = [
        sys.executable, "-m", "pipelines.tokenize", f"source.path={small_corpus}", f"sink.path={sink}",
        "sink.inputs_per_shard=1", "fields=all", "cluster.max_failure_fraction=0.0", f"cluster.address={ray_address}",
        f"segment.max_seconds={SEGMENT.max_seconds}", f"segment.min_seconds={SEGMENT.min_seconds}",
        "cluster.window_seconds=1.0",
    ]  # fmt: skip
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: committed(sink) >= 2 or driver.poll() is not None)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        driver.wait()
    done_before = committed(sink)
    assert 0 < done_before < 12, f"the kill should land part-way, {done_before} of 12 shards were committed"
    assert not (sink / "card.json").exists()
    # besides whatever windows the kill left, a part that must never be assembled: its manifest
    # says window 0 is the only one of a shard not committed, over a sample not of that shard
    config = config_for(small_corpus, sink)
    dataset = SinkDataset.open(
        config.sink, config.fields, preset("tiny"), run_identity(config, preset("tiny"))
    )
    stale = next(n for n in range(12) if n not in dataset.committed_units())
    segment = Segment(
        "stale_0000", "stale", "/nowhere.wav", 0.0, np.empty(0, np.float32), 16_000, num_samples=16_000
    )
    latents = {f.name: np.zeros((25, *f.frame_shape), f.dtype) for f in dataset.fields}
    dataset.committer()._write_part(Unit(stale, ()), 0, True, [(segment, EncodedSegment(latents, 25))], [])

    summary = tokenize(config)
    assert summary.ok and summary.units_resumed >= done_before
    assert verify_dataset(str(sink)).ok
    assert_same_dataset(sink, reference, ("latent", "semantic"))
    assert not (sink / "parts").exists()


def encode_actor_processes() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "EncodeStage" in cmdline and "MapWorker" in cmdline:
            found.append(process)
    return found


def test_encode_actor_killed_mid_run_loses_nothing(ray_address, small_corpus, reference, tmp_path):
    sink = tmp_path / "ds"
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["summary"] = tokenize(config_for(small_corpus, sink))
        except BaseException as err:  # surfaced by the assertions below
            outcome["error"] = err

    worker = threading.Thread(target=run)
    worker.start()
    wait_for(lambda: committed(sink) >= 1 and encode_actor_processes())
    victims = encode_actor_processes()
    for process in victims:
        process.send_signal(signal.SIGKILL)
    killed_at = committed(sink)
    worker.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    assert killed_at < 12, "the actor should die part-way through the run"
    summary = outcome["summary"]
    assert summary.ok and summary.units_resumed == 0
    assert verify_dataset(str(sink)).ok
    assert_same_dataset(sink, reference, ("latent", "semantic"))
