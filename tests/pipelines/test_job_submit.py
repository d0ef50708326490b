"""`ray job submit` as docs/cluster.md documents it, on a `ray start` head with token authentication.

One head node on a loopback address (127.0.0.2: Ray refuses 127.0.0.1 for a node other drivers
join), in a PID namespace of its own so that `ray stop` stops this cluster and nothing else on
the machine. A tokenization job and a two-worker DiT job are submitted with `--working-dir`,
both must end SUCCEEDED with their outputs verified, a driver without the cluster's token is
told so in one line, and `ray stop` must leave no Ray process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from losatok_data.verify import verify_dataset
from pipelines.testing import alone

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
REPO = Path(__file__).parents[2]

# Runs as PID 1 of its namespace: start the head, wait for a line on stdin, `ray stop`, then
# list what is left (everything but this script and the tools it uses to look).
# Ray gives a node 30 s to register, which a busy machine can miss: then stop what started and retry.
HEAD = r"""
for attempt in 1 2 3; do
  "$RAY" start --head --node-ip-address=127.0.0.2 --num-cpus=2 --disable-usage-stats \
      --include-dashboard=true --dashboard-host=127.0.0.2 "$@" >> "$LOG" 2>&1 && break
  [ "$attempt" = 3 ] && { tail -20 "$LOG"; exit 1; }
  "$RAY" stop --force >> "$LOG" 2>&1
done
echo READY
read -r _
"$RAY" stop >> "$LOG" 2>&1
for _ in $(seq 60); do
  left=$(ps -e -o pid=,comm=,args= | awk '$2 !~ /^(bash|sh|ps|awk|sleep|seq)$/')
  [ -z "$left" ] && break
  sleep 0.5
done
echo "LEFT: ${left:-none}"
"""


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free a moment ago (all held open while picking, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture
def token_cluster(tmp_path):
    """A head node with token authentication; yields (GCS address, dashboard URL, env with the token)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTHONPATH"))}
    env |= {"HOME": str(tmp_path / "home"), "PATH": f"{BIN}{os.pathsep}{env['PATH']}"}
    env |= {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run(
        [RAY, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=120
    )
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live under it
    names = [
        "port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port", "node-manager-port",
        "object-manager-port",
    ]  # fmt: skip
    ports = dict(zip(names, free_ports(len(names))))  # none of Ray's fixed defaults: other Rays may run here
    options = [f"--{name}={number}" for name, number in ports.items()] + [f"--temp-dir={temp}"]
    port, dashboard = ports["port"], ports["dashboard-port"]
    head = subprocess.Popen(
        alone(["bash", "-c", HEAD, "head", *options]),
        env=env | {"RAY": RAY, "LOG": str(tmp_path / "head.log")},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert head.stdout.readline().strip() == "READY", head.stdout.read()
        yield f"127.0.0.2:{port}", f"http://127.0.0.2:{dashboard}", env
        head.stdin.write("stop\n")
        head.stdin.flush()
        left = head.communicate(timeout=120)[0]
        assert head.returncode == 0 and left.strip() == "LEFT: none", left  # `ray stop` stopped it all
    finally:
        if head.poll() is None:  # a failed test: the namespace's processes die with its first one
            head.kill()
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


# waits for a job to end, with the Job SDK, in the environment that holds the cluster's token
WAIT = """
import sys, time
from ray.job_submission import JobStatus, JobSubmissionClient
client = JobSubmissionClient(sys.argv[1])
while not (status := client.get_job_status(sys.argv[2])).is_terminal():
    time.sleep(0.25)
print(status.value)
print(client.get_job_logs(sys.argv[2]), end="")
"""


def submit(dashboard: str, env: dict[str, str], entrypoint: list[str]) -> tuple[str, str]:
    """`ray job submit --working-dir` from the repository root, as docs/cluster.md says; (final status, logs)."""
    job = f"test-{uuid.uuid4().hex[:8]}"
    command = [
        RAY,
        "job",
        "submit",
        f"--address={dashboard}",
        f"--working-dir={REPO}",
        f"--submission-id={job}",
    ]
    subprocess.run(
        [*command, "--no-wait", "--", *entrypoint], env=env, check=True, capture_output=True, timeout=120
    )
    done = subprocess.run(
        [sys.executable, "-c", WAIT, dashboard, job], env=env, capture_output=True, text=True, timeout=600
    )
    status, _, logs = done.stdout.partition("\n")
    return status, logs


def test_submitted_tokenization_and_two_worker_training_succeed(token_cluster, small_corpus, tmp_path):
    address, dashboard, env = token_cluster
    sink, out = tmp_path / "ds", tmp_path / "dit"

    tokenize = [
        "losatok-tokenize", "cluster=auto", f"source.path={small_corpus}", f"sink.path={sink}",
        "sink.inputs_per_shard=6",
    ]  # fmt: skip
    status, logs = submit(dashboard, env, tokenize)
    assert status == "SUCCEEDED", status + logs[-3000:]
    assert verify_dataset(str(sink)).ok
    assert "[tokenize] shards 2/2" in logs

    train = [
        "losatok-train-dit", "experiment=tiny", f"data.path={sink}", f"out_dir={out}", "trainer.num_workers=2",
        "trainer.address=auto", "max_steps=4", "log_every=2", "ckpt_every=4", "data.batch_frames=1500",
        "data.max_frames=150",
    ]  # fmt: skip
    status, logs = submit(dashboard, env, train)
    assert status == "SUCCEEDED", status + logs[-3000:]
    assert "train 2/4 steps" in logs and "train 4/4 steps" in logs, logs[-3000:]  # progress, relayed
    lines = logs.strip().splitlines()
    final = json.loads(next(line for line in reversed(lines) if line.startswith("{")))  # as one worker prints
    assert any(line.startswith("generate:") for line in lines)  # the closing hint, after the metrics
    assert final["step"] == 4 and final["rank"] == 0
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-000000004.pt"
    assert [json.loads((out / f"final-rank{r}.json").read_text())["step"] for r in (0, 1)] == [4, 4]

    # a driver without the cluster's token: one line, exit 2, nothing written
    other = tmp_path / "other"
    command = [
        sys.executable, "-m", "pipelines.tokenize", f"cluster.address={address}", f"source.path={small_corpus}",
        f"sink.path={other}",
    ]  # fmt: skip
    driver_env = {**env, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, env=driver_env, capture_output=True, text=True, timeout=300, cwd=REPO)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert f"Ray at {address} uses authentication mode 'token', this driver 'disabled'" in lines[0]
    assert not other.exists()
