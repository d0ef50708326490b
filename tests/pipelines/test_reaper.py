"""A SIGKILLed `losatok-tokenize` leaves no Ray process behind on its local cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.slow


def test_sigkilled_driver_leaves_no_ray_process(small_corpus, tmp_path):
    log = tmp_path / "reaper.log"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    env["LOSATOK_REAPER_LOG"] = str(log)
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.tokenize",
            f"source.path={small_corpus}",
            f"sink.path={tmp_path / 'ds'}",
            "sink.inputs_per_shard=1",
            "cluster.num_cpus=2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    parent = psutil.Process(driver.pid)

    def ray_agents() -> list[psutil.Process]:
        found = []
        for child in parent.children(recursive=True):
            try:
                if "Agent" in " ".join(child.cmdline()):
                    found.append(child)
            except psutil.NoSuchProcess:
                continue
        return found

    deadline = time.monotonic() + 180
    while not ray_agents() and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.2)
    agents = ray_agents()
    assert agents, "the run should have started a local Ray with its agents"
    family = [p for p in parent.children(recursive=True)]
    time.sleep(2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        alive = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            break
        time.sleep(0.2)
    alive = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    reaped = log.read_text() if log.exists() else "no reaper log"
    assert not alive, ([f"{p.pid} {p.name()}" for p in alive], reaped)
