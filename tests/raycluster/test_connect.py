"""Joining a cluster that is not there: exit 2, one line saying what to do, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipelines.testing import alone
from raycluster.connect import ClusterError, connect, mismatch_message


def no_ray_env(tmp_path) -> dict[str, str]:
    """This machine's environment without any pointer to a Ray cluster (address, temp folder)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["RAY_TMPDIR"] = str(tmp_path / "raytmp")  # where `auto` looks for the last cluster started
    env["TMPDIR"] = str(tmp_path / "raytmp")
    os.makedirs(env["RAY_TMPDIR"])
    return env


def one_line_error(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    return lines[0]


@pytest.mark.slow
def test_tokenize_with_cluster_auto_and_no_cluster_exits_2_and_writes_nothing(small_corpus, tmp_path):
    sink = tmp_path / "ds"
    command = [
        sys.executable, "-m", "pipelines.tokenize", "cluster=auto", f"source.path={small_corpus}", f"sink.path={sink}",
    ]  # fmt: skip
    done = subprocess.run(
        alone(command), env=no_ray_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    line = one_line_error(done)
    assert "no Ray cluster is running for cluster=auto" in line and "ray start --head" in line
    assert "drop `cluster=auto`" in line
    assert not sink.exists()


@pytest.mark.slow
def test_train_dit_with_address_auto_and_no_cluster_exits_2(tmp_path):
    out, dataset = tmp_path / "out", tmp_path / "ds"
    dataset.mkdir()  # the driver stops at the cluster, before it reads the dataset
    command = [
        sys.executable, "-m", "jobs.train_dit", "experiment=tiny", f"data.path={dataset}", f"out_dir={out}",
        "trainer.num_workers=2", "trainer.address=auto",
    ]  # fmt: skip
    done = subprocess.run(
        alone(command), env=no_ray_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    line = one_line_error(done)
    assert "trainer.address=auto" in line and "ray start --head" in line
    assert not out.exists()


def test_an_address_where_nothing_listens_is_named_at_once(tmp_path):
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing answers there
        s.bind(("127.0.0.3", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterError, match=f"nothing answers at 127.0.0.3:{port} \\(cluster.address=x\\)"):
        connect(f"127.0.0.3:{port}", "cluster.address=x")


def test_mismatch_messages_say_which_side_to_change():
    to_token = mismatch_message("disabled", "token", "10.0.0.1:6379")
    assert "'token', this driver 'disabled'" in to_token and "RAY_AUTH_TOKEN" in to_token
    to_disabled = mismatch_message("token", "disabled", "10.0.0.1:6379")
    assert "RAY_AUTH_MODE=disabled" in to_disabled
