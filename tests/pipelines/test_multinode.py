"""Two Ray nodes on one machine: encode actors only where the accelerator is, decode everywhere."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from losatok_data.verify import verify_dataset

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies, which wait to be reaped, do not count)."""
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(ProcessLookupError, psutil.Error):
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                return True
    return False


def stop(*processes: subprocess.Popen | None) -> None:
    """`ray start --block` runs each node's daemons in its own process group: stop every node at
    once, SIGTERM then SIGKILL (for what outlived the grace or its group's leader), each round
    over as soon as no process of the groups runs."""
    started = [p for p in processes if p is not None]
    # a throwaway cluster: 1 s of grace (its daemons take half a minute to end on SIGTERM)
    for sig, grace in ((signal.SIGTERM, 1), (signal.SIGKILL, 10)):
        for process in started:  # a group may outlive its leader: signal it all the same
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(group_alive(p.pid) for p in started):
            for process in started:
                process.poll()  # reaps a leader that ended
            time.sleep(0.1)
    for process in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


@pytest.fixture
def two_nodes(tmp_path):
    """A head node (1 CPU) and a worker node (2 CPUs and one `accelerator`), both on loopback."""
    # Two loopback addresses stand in for two hosts (multi-node Ray refuses 127.0.0.1 itself);
    # the test cluster is throwaway, so it runs without Ray's token authentication.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env["RAY_AUTH_MODE"] = "disabled"
    port = free_port()
    common = ["--block", "--disable-usage-stats"]
    head = subprocess.Popen(
        [RAY, "start", "--head", "--node-ip-address=127.0.0.2", f"--port={port}", "--num-cpus=1",
         "--include-dashboard=false", *common],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    worker = None
    try:
        waiter = f"import ray,time; ray.init(address='127.0.0.2:{port}', _node_ip_address='127.0.0.2')\n"
        waiter += "while len([n for n in ray.nodes() if n['Alive']]) < 2: time.sleep(0.2)"
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.2", port) and head.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # the worker joins once the head's GCS answers
        worker = subprocess.Popen(
            [RAY, "start", "--node-ip-address=127.0.0.3", f"--address=127.0.0.2:{port}", "--num-cpus=2",
             '--resources={"accelerator": 1}', *common],
            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        subprocess.run([sys.executable, "-c", waiter], env=env, timeout=120, check=True, capture_output=True)
        yield f"127.0.0.2:{port}", env
    finally:
        stop(worker, head)


def test_encode_runs_only_on_the_accelerator_node_and_decode_on_both(two_nodes, small_corpus, tmp_path):
    address, env = two_nodes
    sink = tmp_path / "ds"
    command = [
        sys.executable, "-m", "pipelines.tokenize", f"source.path={small_corpus}", f"sink.path={sink}",
        "sink.inputs_per_shard=1", f"cluster.address={address}", "cluster.node_ip_address=127.0.0.2",
        "+cluster.encode_resources.accelerator=1",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert verify_dataset(str(sink)).ok
    (log,) = (sink / "runs").glob("run-*.json")
    record = json.loads(log.read_text())
    nodes = record["nodes"]  # node id -> resources, as the driver saw the cluster
    accelerator_nodes = {n for n, resources in nodes.items() if resources.get("accelerator")}
    assert len(nodes) == 2 and len(accelerator_nodes) == 1
    assert set(record["encode_nodes"]) == accelerator_nodes
    assert set(record["decode_nodes"]) == set(nodes)

    # a driver with token authentication on this cluster without it: its actors would die at
    # start ("actors died during initialization"); it is told so in one line, and writes nothing
    token_env = env | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32, "HOME": str(tmp_path)}
    other = tmp_path / "other"
    command[command.index(f"sink.path={sink}")] = f"sink.path={other}"
    done = subprocess.run(command, env=token_env, capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert f"Ray at {address} uses authentication mode 'disabled', this driver 'token'" in lines[0]
    assert not other.exists()
