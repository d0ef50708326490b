"""One writer per dataset: the lease, on a local path and on S3 (moto's server on loopback)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import s3fs

from pipelines.lease import LEASE_FILE, Holder, Lease, LeaseHeldError, LeaseLostError

ROOT = Path(__file__).resolve().parents[2]

# a process that takes the lease once `go` exists, reports, and holds it until told (stdin) or killed
RACER = """
import os, sys, time, fsspec
from pipelines.lease import Lease, LeaseHeldError
url, run_id, go = sys.argv[1], sys.argv[2], sys.argv[3]
options = {"client_kwargs": {"endpoint_url": sys.argv[4]}} if len(sys.argv) > 4 else {}
fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True, **options)
lease = Lease(fs, root, run_id, ttl=30.0)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
try:
    lease.acquire()
except LeaseHeldError as err:
    print("refused", err, flush=True)
    sys.exit(2)
print("holding", flush=True)
sys.stdin.readline()
lease.release()
"""


def racer(url: str, run_id: str, go: Path, endpoint: str | None = None) -> subprocess.Popen:
    args = [sys.executable, "-c", RACER, url, run_id, str(go)] + ([endpoint] if endpoint else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert process.stdout.readline().strip() == "ready"
    return process


def started_holder(url: str, run_id: str, tmp_path: Path, endpoint: str | None = None) -> subprocess.Popen:
    (tmp_path / "go").touch()
    holder = racer(url, run_id, tmp_path / "go", endpoint)
    assert holder.stdout.readline().strip() == "holding"
    return holder


def local(tmp_path: Path) -> tuple:
    import fsspec

    return fsspec.filesystem("file"), str(tmp_path / "ds")


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    fs, root = local(tmp_path)
    with Lease(fs, root, "first").held():
        holder = json.loads(Path(root, LEASE_FILE).read_text())
        assert (holder["run_id"], holder["pid"]) == ("first", os.getpid())
        with pytest.raises(LeaseHeldError, match=rf"run first \(host \S+, pid {os.getpid()}, since "):
            Lease(fs, root, "second").acquire()
    assert not Path(root, LEASE_FILE).exists()
    with Lease(fs, root, "second").held():  # free again once released
        pass


def test_the_lease_of_a_killed_run_is_taken_over_with_a_log_line(tmp_path, caplog):
    fs, root = local(tmp_path)
    holder = started_holder(root, "killed", tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert json.loads(Path(root, LEASE_FILE).read_text())["run_id"] == "killed"
    with caplog.at_level(logging.WARNING, logger="pipelines.lease"), Lease(fs, root, "next").held():
        assert json.loads(Path(root, LEASE_FILE).read_text())["run_id"] == "next"
    assert any("taking over the lease of run killed" in r.getMessage() for r in caplog.records)


def test_another_hosts_lease_holds_until_it_is_not_renewed_in_time(tmp_path):
    fs, root = local(tmp_path)
    Path(root).mkdir()
    elsewhere = replace(Holder.this_process("remote"), host="node-7", pid=1)
    Path(root, LEASE_FILE).write_text(json.dumps(asdict(elsewhere)))
    with pytest.raises(LeaseHeldError, match="host node-7"):
        Lease(fs, root, "mine", ttl=60.0).acquire()
    expired = replace(elsewhere, renewed=time.time() - 61.0)
    Path(root, LEASE_FILE).write_text(json.dumps(asdict(expired)))
    with Lease(fs, root, "mine", ttl=60.0).held():
        assert json.loads(Path(root, LEASE_FILE).read_text())["run_id"] == "mine"


def test_the_lease_is_renewed_and_a_lost_lease_stops_the_run(tmp_path):
    fs, root = local(tmp_path)
    lease = Lease(fs, root, "mine", ttl=0.2)  # renewed every 0.05 s
    lease.acquire()
    try:
        first = json.loads(Path(root, LEASE_FILE).read_text())["renewed"]
        time.sleep(0.3)
        assert json.loads(Path(root, LEASE_FILE).read_text())["renewed"] > first
        lease.check()
        thief = replace(Holder.this_process("thief"), host="node-9")
        with lease._locked():  # as a run taking over does: never between a renewal's read and write
            Path(root, LEASE_FILE).write_text(json.dumps(asdict(thief)))
        deadline = time.monotonic() + 10  # the next renewal finds it (every 0.05 s; later on a busy machine)
        with pytest.raises(LeaseLostError, match="lost its lease"):
            while time.monotonic() < deadline:
                lease.check()
                time.sleep(0.05)
    finally:
        lease.release()
    assert json.loads(Path(root, LEASE_FILE).read_text())["run_id"] == "thief"  # not removed: not ours


def s3_fs(endpoint: str) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)


def test_s3_lease_is_created_conditionally_refused_and_taken_over(s3_bucket, s3_endpoint, caplog, tmp_path):
    fs, root = s3_fs(s3_endpoint), f"{s3_bucket}/ds"
    with Lease(fs, root, "first").held(), pytest.raises(LeaseHeldError, match="run first"):
        Lease(fs, root, "second").acquire()
    assert not fs.exists(f"{root}/{LEASE_FILE}")
    holder = started_holder(f"s3://{root}", "killed", tmp_path, s3_endpoint)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with caplog.at_level(logging.WARNING, logger="pipelines.lease"), Lease(fs, root, "next").held():
        assert json.loads(fs.cat_file(f"{root}/{LEASE_FILE}"))["run_id"] == "next"
    assert any("taking over the lease of run killed" in r.getMessage() for r in caplog.records)


def test_s3_renewal_finds_a_lease_taken_over(s3_bucket, s3_endpoint):
    fs, root = s3_fs(s3_endpoint), f"{s3_bucket}/ds"
    lease = Lease(fs, root, "mine", ttl=0.4)
    lease.acquire()
    try:
        thief = replace(Holder.this_process("thief"), host="node-9")
        fs.pipe_file(f"{root}/{LEASE_FILE}", json.dumps(asdict(thief)).encode())
        time.sleep(0.5)
        with pytest.raises(LeaseLostError):
            lease.check()
    finally:
        lease.release()


@pytest.mark.parametrize("store", ["local", pytest.param("s3", marks=pytest.mark.slow)])
def test_runs_started_at_the_same_moment_get_exactly_one_lease(store, tmp_path, request):
    endpoint = None
    if store == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        url = f"s3://{request.getfixturevalue('s3_bucket')}/ds"
    else:
        url = str(tmp_path / "ds")
    go = tmp_path / "go"
    racers = [racer(url, f"racer-{i}", go, endpoint) for i in range(4)]  # each has imported and waits
    go.touch()  # all four try at once
    first = [p.stdout.readline() for p in racers]
    assert sorted(line.split()[0] for line in first) == ["holding", "refused", "refused", "refused"], first
    winner = next(i for i, line in enumerate(first) if line.startswith("holding"))
    assert all(f"run racer-{winner} " in line for line in first if line.startswith("refused")), first
    racers[winner].communicate("release\n", timeout=60)
    assert sorted(p.wait(timeout=60) for p in racers) == [0, 2, 2, 2]
