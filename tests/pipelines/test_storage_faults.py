"""Storage faults end to end: a TCP proxy in front of the loopback S3 server (moto) cuts, flaps and
restores the connection while real runs read their corpus from it and commit their shards to it.

Every run must end with a dataset that `verify` passes with no fault and no warning, a card
that equals the index, and every input exactly once in the dataset or in the ledger for a
permanent reason; an outage past the retry budget stops a run with exit 1 and one line, and
rerunning the command resumes it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import s3fs

from losatok_data.layout import DatasetLayout
from losatok_data.ledger import RECOVERED, read_failures
from losatok_data.reader import open_dataset
from losatok_data.verify import verify_dataset
from losatok_input.sources import input_key
from losatok_storage.testing import FaultProxy
from pipelines.config import SourceConfig
from pipelines.run import tokenize
from pipelines.testing import tiny_run

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
CREDENTIALS = {"key": "testing", "secret": "testing"}
# a short retry budget (about 3.5 s) keeps the tests quick; outages are sized against it
PLANTED = "planted-SECRET-1313"  # the loopback server takes any secret; no output may hold it
FAST_RETRIES = {
    "retries": 6,
    "retry_base_seconds": 0.2,
    "retry_max_seconds": 1.0,
    "retry_stall_seconds": 10.0,
}
# where the outage outlasts the whole run, any budget is exceeded: the briefest keeps it quick
# (a refused attempt through the proxy takes 0.3 to 1 s; six of them per input cost 20 s a run)
BRIEF_RETRIES = {**FAST_RETRIES, "retries": 3, "retry_base_seconds": 0.1, "retry_max_seconds": 0.2}


def through(proxy: FaultProxy) -> dict:
    """Storage options that reach moto through the proxy, botocore's own retries off."""
    return {
        **CREDENTIALS,
        "client_kwargs": {"endpoint_url": proxy.url},
        "config_kwargs": {"connect_timeout": 2, "read_timeout": 5, "retries": {"max_attempts": 1}},
    }


@pytest.fixture
def proxy(s3_endpoint):
    port = int(s3_endpoint.rsplit(":", 1)[1])
    with FaultProxy("127.0.0.1", port) as proxy:
        yield proxy


@pytest.fixture
def direct(s3_endpoint) -> tuple[s3fs.S3FileSystem, dict]:
    options = {**CREDENTIALS, "client_kwargs": {"endpoint_url": s3_endpoint}}
    return s3fs.S3FileSystem(**options, skip_instance_cache=True), options


def upload(fs: s3fs.S3FileSystem, files: list[Path], prefix: str) -> list[str]:
    for path in files:
        fs.put(str(path), f"{prefix}/{path.name}")
    return [f"s3://{prefix}/{path.name}" for path in files]


def committed(fs: s3fs.S3FileSystem, sink: str) -> int:
    fs.invalidate_cache()
    try:
        return sum(p.endswith(".parquet") for p in fs.ls(f"{sink}/index", detail=False))
    except FileNotFoundError:
        return 0


def assert_complete(url: str, options: dict, locations: list[str], failed: set[str] = frozenset()) -> None:
    """verify passes with no fault and no warning, the card equals the index (verify's totals and
    stats checks), and every input is in the dataset exactly once, or failed now for good."""
    report = verify_dataset(url, options)
    assert report.ok and not report.warnings, report.summary()
    dataset = open_dataset(url, options)
    keys = dataset.index().column("key").to_pylist()
    assert len(keys) == len(set(keys)), "a sample is indexed twice"
    expected = {f"{input_key(loc)}_0000" for loc in locations if loc not in failed}
    assert set(keys) == expected
    assert dataset.card.totals.samples == len(keys)
    assert sum(dataset.card.failures.values()) == len(failed)


class Flapping:
    """Cut the connection for `down` seconds every `up + down` seconds until stopped."""

    def __init__(self, proxy: FaultProxy, up: float, down: float) -> None:
        self.proxy, self.up, self.down = proxy, up, down
        self.outages = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.up):
            self.proxy.cut()
            self.outages += 1
            self._stop.wait(self.down)
            self.proxy.restore()

    def __enter__(self) -> Flapping:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.proxy.restore()


def test_a_flapping_store_is_ridden_out_reads_commits_and_listings(
    ray_address, small_corpus, proxy, direct, s3_bucket
):
    fs, options = direct
    locations = upload(fs, sorted(small_corpus.iterdir())[:6], f"{s3_bucket}/corpus")
    faulty = through(proxy)
    config = tiny_run(
        f"s3://{s3_bucket}/corpus",
        f"s3://{s3_bucket}/ds",
        inputs_per_shard=1,
        storage_options=faulty,
        **FAST_RETRIES,
    )
    with Flapping(proxy, up=0.7, down=1.2) as flapping:  # outages shorter than the retry budget
        summary = tokenize(config)
    assert flapping.outages >= 3 and proxy.connections_refused > 0, "no fault was injected"
    assert summary.ok and summary.failures == 0 and summary.transient_failures == 0
    assert_complete(f"s3://{s3_bucket}/ds", options, locations)


def run_cli(*overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pipelines.tokenize", *overrides]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def options_override(group: str, options: dict) -> str:
    endpoint = options["client_kwargs"]["endpoint_url"]
    return (
        f"+{group}.storage_options={{key:testing,secret:{PLANTED},"
        f"client_kwargs:{{endpoint_url:'{endpoint}'}},"
        "config_kwargs:{connect_timeout:2,read_timeout:5,retries:{max_attempts:1}}}"
    )


def cli_args(bucket: str, proxy: FaultProxy, ray_address: str) -> list[str]:
    faulty = through(proxy)
    return [
        f"source.path=s3://{bucket}/corpus",
        f"sink.path=s3://{bucket}/ds",
        options_override("source", faulty),
        options_override("sink", faulty),
        "sink.inputs_per_shard=1",
        "cluster.max_failure_fraction=0.0",
        f"cluster.address={ray_address}",
        "cluster.retries=4",
        "cluster.retry_base_seconds=0.2",
        "cluster.retry_max_seconds=0.5",
    ]


def test_an_outage_stops_the_run_in_one_line_and_reruns_one_sigkilled_resume_with_a_true_card(
    ray_address, small_corpus, proxy, direct, s3_bucket
):
    """Three runs of the command on one dataset (one scenario: each run starts where the last
    stopped). An outage past the budget stops the first part-way with exit 1 and one line; the
    second, run with the store back, is SIGKILLed mid-commit; the third completes the dataset
    and its card counts every input: the card after an S3 resume once counted only the shards
    of the killed run (a stale listing). No output and no stored file holds the secret."""
    fs, options = direct
    # eight inputs, one a shard: room for each interrupted run to stop short of the end
    locations = upload(fs, sorted(small_corpus.iterdir())[:8], f"{s3_bucket}/corpus")
    args = cli_args(s3_bucket, proxy, ray_address)
    cut = threading.Thread(
        target=lambda: (_wait(lambda: committed(fs, f"{s3_bucket}/ds") >= 2), proxy.cut()), daemon=True
    )
    cut.start()
    stopped = run_cli(*args)
    cut.join()
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    errors = [line for line in stopped.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "storage outage" in errors[0] and "rerun" in errors[0], stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    done = committed(fs, f"{s3_bucket}/ds")
    assert 2 <= done < len(locations), f"the outage should stop the run part-way ({done} committed)"

    proxy.restore()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen(
        [sys.executable, "-m", "pipelines.tokenize", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:  # killed as soon as it commits a shard of its own
        _wait(lambda: committed(fs, f"{s3_bucket}/ds") > done or driver.poll() is not None)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        driver.wait()
    killed_at = committed(fs, f"{s3_bucket}/ds")
    assert done < killed_at < len(locations), (done, killed_at)

    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{len(locations)} inputs" in rerun.stdout, rerun.stdout
    assert_complete(f"s3://{s3_bucket}/ds", options, locations)
    card = open_dataset(f"s3://{s3_bucket}/ds", options).card
    assert card.failures == {}
    # the secret is in no output: console, run.json, card, runs/*.json, ledger, plan, index
    fs.invalidate_cache()
    stored = [fs.cat(path) for path in fs.find(f"{s3_bucket}/ds")]
    printed = stopped.stdout + stopped.stderr + rerun.stdout + rerun.stderr
    assert len(stored) > 10 and PLANTED not in printed and not any(PLANTED.encode() in b for b in stored)


def test_reads_failing_past_the_budget_are_transient_and_retried_by_the_next_run(
    ray_address, small_corpus, proxy, direct, s3_bucket, tmp_path
):
    """The corpus is read through the proxy (down for the whole first run); the dataset is written
    directly. The first run records the reads as transient failures and stops; the next plans
    them again, and the ledger keeps the history: failed, then recovered, each input counted once."""
    fs, options = direct
    locations = upload(fs, sorted(small_corpus.iterdir())[:4], f"{s3_bucket}/corpus")
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(f'{{"location": "{loc}"}}\n' for loc in locations))
    sink = f"s3://{s3_bucket}/ds"
    config = tiny_run(
        manifest, sink, kind="manifest", inputs_per_shard=2, storage_options=options, **BRIEF_RETRIES
    )
    config = replace(config, source=replace(config.source, storage_options=through(proxy)))
    assert isinstance(config.source, SourceConfig)

    proxy.cut()
    from pipelines.run import StorageOutageError

    with pytest.raises(StorageOutageError, match="no input of shard 0 could be read"):
        tokenize(config)
    layout = DatasetLayout(sink, options)
    ledger = read_failures(layout).to_pylist()
    assert ledger and all(row["transient"] and row["stage"] == "read" for row in ledger)
    failed = len({row["key"] for row in ledger})  # shard 0's inputs, and those of any shard in flight
    _drop_lease(fs, f"{s3_bucket}/ds")  # the stopped run lives on in this process: its lease is ours

    proxy.restore()
    summary = tokenize(config)
    assert summary.ok and summary.transient_failures == 0
    assert summary.inputs_retried == failed and summary.recovered == failed
    assert_complete(sink, options, locations)
    stages = [row["stage"] for row in read_failures(layout).to_pylist()]
    assert sorted(stages) == ["read"] * failed + [RECOVERED] * failed

    again = tokenize(replace(config, dry_run=True))  # nothing failed now: nothing to plan
    assert again.inputs_new == 0 and again.generation is None


def _drop_lease(fs: s3fs.S3FileSystem, root: str) -> None:
    fs.invalidate_cache()
    if fs.exists(f"{root}/lease.json"):
        fs.rm(f"{root}/lease.json")


def test_retry_failed_plans_failed_inputs_again_and_counts_each_once(ray_address, small_corpus, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in sorted(small_corpus.iterdir())[:3]:
        shutil.copy(path, corpus / path.name)
    broken = corpus / "broken.wav"
    broken.write_bytes(b"RIFF" + bytes(200))
    config = tiny_run(corpus, tmp_path / "ds", inputs_per_shard=2, max_failure_fraction=0.5)
    first = tokenize(config)
    assert first.failures == 1 and first.transient_failures == 0

    plain = tokenize(replace(config, dry_run=True))  # a permanent failure stays failed: nothing to plan
    assert plain.inputs_new == 0 and plain.generation is None

    again = tokenize(replace(config, retry_failed=True))  # still broken: fails again, counted once
    assert again.inputs_retried == 1 and again.generation == 2 and again.failures == 1
    card = open_dataset(str(tmp_path / "ds")).card
    assert card.failures == {"decode": 1}

    shutil.copy(sorted(small_corpus.iterdir())[5], broken)  # the file is mended in place
    mended = tokenize(replace(config, retry_failed=True))
    assert mended.inputs_retried == 1 and mended.recovered == 1 and mended.failures == 0 and mended.ok
    locations = [str(p) for p in sorted(corpus.iterdir())]
    assert_complete(str(tmp_path / "ds"), {}, locations)
    stages = sorted(row["stage"] for row in read_failures(DatasetLayout(str(tmp_path / "ds"))).to_pylist())
    assert stages == ["decode", "decode", RECOVERED]
    untouched = tokenize(replace(config, retry_failed=True, dry_run=True))  # nothing failed now
    assert untouched.inputs_new == 0


def _wait(condition, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)
