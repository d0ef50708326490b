"""Exactly-once under failure: a driver killed with SIGKILL, an encode actor killed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from losatok_data.verify import verify_dataset
from pipelines.config import (
    FieldsConfig,
    TokenizeConfig,
)
from pipelines.run import tokenize
from pipelines.testing import assert_same_dataset, tiny_run

pytestmark = pytest.mark.slow


def config_for(source: Path, sink: Path) -> TokenizeConfig:
    return tiny_run(source, sink, inputs_per_shard=1, fields=FieldsConfig(logvar=True, semantic=True))


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

    summary = tokenize(config_for(small_corpus, sink))
    assert summary.ok and summary.units_resumed >= done_before
    assert verify_dataset(str(sink)).ok
    assert_same_dataset(sink, reference, ("latent", "semantic"))


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
